//! 8-lane AVX2 building blocks of the Winograd transforms' AVX2 kernels
//! (winograd/input.rs, output.rs, dm.rs, dx.rs): partial loads and stores,
//! the even/odd column split and its inverse, and the one-lane shift
//! across chunks.
//!
//! - AVX2 has no mask registers and no two-source permute: a lane range is
//!   a vector mask for `vmaskmovps` (used only where a row edge cuts the 8
//!   lanes; whole vectors take plain loads and stores, since the masked
//!   store is the slow one on AMD), the split of 16 consecutive floats is
//!   two in-lane shuffles and a 64-bit cross-lane permute, and the shifts
//!   are a 128-bit lane swap and a byte align.
//! - Each helper is written out lane by lane in its comment; each is
//!   checked through the transforms' unit tests (bit for bit against the
//!   portable loops) and by the test below.

use std::arch::x86_64::{
    __m256, __m256i, _mm256_alignr_epi8, _mm256_and_si256, _mm256_castpd_ps, _mm256_castps_pd, _mm256_castps_si256,
    _mm256_castsi256_ps, _mm256_cmpgt_epi32, _mm256_loadu_ps, _mm256_maskload_ps, _mm256_maskstore_ps,
    _mm256_permute2f128_ps, _mm256_permute4x64_pd, _mm256_set1_epi32, _mm256_setr_epi32, _mm256_setzero_ps,
    _mm256_shuffle_ps, _mm256_storeu_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps,
};

/// Lanes per vector.
pub(super) const LANES: usize = 8;

/// The lanes l of 8 with lo ≤ l < hi, as a `vmaskmovps` mask (all bits
/// set); lo and hi may lie outside 0..8.
#[target_feature(enable = "avx2")]
#[inline]
fn lane_mask(lo: isize, hi: isize) -> __m256i {
    let (lo, hi) = (lo.clamp(0, 8) as i32, hi.clamp(0, 8) as i32);
    let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_and_si256(
        _mm256_cmpgt_epi32(index, _mm256_set1_epi32(lo - 1)),
        _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), index),
    )
}

/// The 8 floats at `p`, lanes outside [lo, hi) as zero (and not read).
///
/// # Safety
/// The CPU runs AVX2 (the caller holds an `Avx2Token`), and `p + l` is
/// readable for every lane l in [lo, hi) ∩ [0, 8); `p` itself may point
/// anywhere (formed with wrapping arithmetic) when those lanes are masked.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn load(p: *const f32, lo: isize, hi: isize) -> __m256 {
    // SAFETY: a whole vector only when all 8 lanes are readable; else the
    // masked load touches the readable lanes alone.
    unsafe {
        if lo <= 0 && hi >= 8 {
            _mm256_loadu_ps(p)
        } else if hi <= lo.max(0) || lo >= 8 {
            _mm256_setzero_ps()
        } else {
            _mm256_maskload_ps(p, lane_mask(lo, hi))
        }
    }
}

/// Writes lanes [lo, hi) of `value` to `p + l`, no other.
///
/// # Safety
/// The CPU runs AVX2 (the caller holds an `Avx2Token`), and `p + l` is
/// writable for every lane l in [lo, hi) ∩ [0, 8); as for [`load`], `p`
/// may point anywhere when those lanes are masked.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn store(p: *mut f32, lo: isize, hi: isize, value: __m256) {
    // SAFETY: as in `load`.
    unsafe {
        if lo <= 0 && hi >= 8 {
            _mm256_storeu_ps(p, value);
        } else if hi > lo.max(0) && lo < 8 {
            _mm256_maskstore_ps(p, lane_mask(lo, hi), value);
        }
    }
}

/// Even and odd elements of the 16 consecutive floats (lo, hi): (lo0 lo2
/// lo4 lo6 hi0 hi2 hi4 hi6, lo1 lo3 … hi7).
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn split(lo: __m256, hi: __m256) -> (__m256, __m256) {
    // In-lane: [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6]; then the 64-bit pairs
    // reordered 0, 2, 1, 3.
    let even = _mm256_shuffle_ps::<0x88>(lo, hi);
    let odd = _mm256_shuffle_ps::<0xDD>(lo, hi);
    let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(v)));
    (order(even), order(odd))
}

/// The inverse of [`split`]: 16 consecutive floats e0 o0 e1 o1 … e7 o7, as
/// (first 8, last 8).
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn interleave(even: __m256, odd: __m256) -> (__m256, __m256) {
    // [e0 o0 e1 o1 | e4 o4 e5 o5] and [e2 o2 e3 o3 | e6 o6 e7 o7].
    let (low, high) = (_mm256_unpacklo_ps(even, odd), _mm256_unpackhi_ps(even, odd));
    (_mm256_permute2f128_ps::<0x20>(low, high), _mm256_permute2f128_ps::<0x31>(low, high))
}

/// [previous lane 7, current lanes 0..7]: the value of tile tx − 1 at tx,
/// across a chunk boundary.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn shift_in(current: __m256, previous: __m256) -> __m256 {
    // [previous 4..8, current 0..4], then per 128-bit lane the last float
    // of the lower source before the first three of the upper.
    let straddle = _mm256_permute2f128_ps::<0x21>(previous, current);
    _mm256_castsi256_ps(_mm256_alignr_epi8::<12>(_mm256_castps_si256(current), _mm256_castps_si256(straddle)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{Isa, Simd};

    fn lanes(v: __m256) -> [f32; 8] {
        // SAFETY: __m256 and [f32; 8] have the same size and any bits are a valid f32.
        unsafe { std::mem::transmute(v) }
    }

    /// Every helper against its definition, lane by lane.
    #[target_feature(enable = "avx2")]
    fn check() {
        let a: [f32; 24] = std::array::from_fn(|i| i as f32 + 1.0);
        // SAFETY: every lane read lies in `a` (offsets 0, 8 and 16 of 24).
        let (lo, hi) = unsafe { (load(a.as_ptr(), 0, 8), load(a.as_ptr().add(8), 0, 8)) };
        let (even, odd) = split(lo, hi);
        assert_eq!(lanes(even), std::array::from_fn(|i| a[2 * i]));
        assert_eq!(lanes(odd), std::array::from_fn(|i| a[2 * i + 1]));
        let (first, last) = interleave(even, odd);
        assert_eq!((lanes(first), lanes(last)), (lanes(lo), lanes(hi)));
        assert_eq!(lanes(shift_in(hi, lo)), std::array::from_fn(|i| a[7 + i]));
        for (lo_lane, hi_lane) in [(-3, 2), (0, 8), (3, 5), (5, 20), (6, 6), (9, 12), (-4, -1)] {
            // SAFETY: only lanes in [lo_lane, hi_lane) ∩ [0, 8) of a[8..16] are read.
            let got = lanes(unsafe { load(a.as_ptr().add(8), lo_lane, hi_lane) });
            let inside = |l: usize| (lo_lane..hi_lane).contains(&(l as isize));
            assert_eq!(got, std::array::from_fn(|l| if inside(l) { a[8 + l] } else { 0.0 }), "{lo_lane}..{hi_lane}");
            let mut out = [-1.0f32; 8];
            // SAFETY: as above, in `out`.
            unsafe { store(out.as_mut_ptr(), lo_lane, hi_lane, hi) };
            assert_eq!(out, std::array::from_fn(|l| if inside(l) { a[8 + l] } else { -1.0 }), "{lo_lane}..{hi_lane}");
        }
    }

    #[test]
    fn helpers_match_their_definitions() {
        if let Simd::Avx2(_) | Simd::Avx512(_) = Simd::new(Isa::Avx2) {
            // SAFETY: Simd::new returned an AVX2 (or higher) level, so the CPU runs AVX2.
            unsafe { check() };
        } else {
            eprintln!("no AVX2: nothing to check");
        }
    }
}
