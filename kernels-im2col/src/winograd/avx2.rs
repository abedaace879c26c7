//! The 8-lane AVX2 + FMA implementation of the Winograd transforms' vector
//! layer (crate::lanes's [`Lanes`], on the `Avx2Token` that proves the
//! ISA): partial loads and stores, the even/odd column split and its
//! inverse, the one-lane shift across chunks, and the stride-2 windows of
//! winograd/input.rs.
//!
//! - AVX2 has no mask registers and no two-source permute: a lane range is
//!   a vector mask for `vmaskmovps` (used only where a row edge cuts the 8
//!   lanes; whole vectors take plain loads and stores, since the masked
//!   store is the slow one on AMD), the split of 16 consecutive floats is
//!   two in-lane shuffles and a 64-bit cross-lane permute, and the shifts
//!   are a 128-bit lane swap and a byte align.
//! - Each method is written out lane by lane in its comment; each is
//!   checked by crate::lanes's tests (against its definition) and through
//!   the transforms' unit tests (bit for bit against the portable loops).

use std::arch::x86_64::{
    __m256, __m256i, _mm256_add_ps, _mm256_alignr_epi8, _mm256_and_si256, _mm256_castpd_ps, _mm256_castps_pd,
    _mm256_castps_si256, _mm256_castsi256_ps, _mm256_cmpgt_epi32, _mm256_loadu_ps, _mm256_maskload_ps,
    _mm256_maskstore_ps, _mm256_permute2f128_ps, _mm256_permute4x64_pd, _mm256_set1_epi32, _mm256_set1_ps,
    _mm256_setr_epi32, _mm256_setzero_ps, _mm256_shuffle_ps, _mm256_storeu_ps, _mm256_sub_ps, _mm256_unpackhi_ps,
    _mm256_unpacklo_ps, _mm256_xor_ps,
};

use crate::lanes::{Kernel, Lanes};
use crate::simd::Avx2Token;

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

/// The body under AVX2 and FMA (the token's proof).
///
/// # Safety
/// The CPU runs AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(token: Avx2Token, kernel: K) {
    kernel.run(token);
}

// Every `unsafe` block below calls AVX2 intrinsics; `self`, an
// `Avx2Token`, proves the CPU runs AVX2 and FMA. Memory accesses are the
// caller's, under each method's documented precondition (crate::lanes).
impl Lanes for Avx2Token {
    type V = __m256;
    const N: usize = 8;

    fn vectorize<K: Kernel>(self, kernel: K) {
        // SAFETY: `self` proves AVX2 and FMA.
        unsafe { run_avx2(self, kernel) }
    }

    #[inline(always)]
    fn zero(self) -> __m256 {
        // SAFETY: `self` proves AVX2.
        unsafe { _mm256_setzero_ps() }
    }

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        // SAFETY: `self` proves AVX2.
        unsafe { _mm256_set1_ps(x) }
    }

    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` proves AVX2.
        unsafe { _mm256_add_ps(a, b) }
    }

    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` proves AVX2.
        unsafe { _mm256_sub_ps(a, b) }
    }

    #[inline(always)]
    fn flip_sign(self, v: __m256) -> __m256 {
        // SAFETY: `self` proves AVX2.
        unsafe { _mm256_xor_ps(v, _mm256_set1_ps(-0.0)) }
    }

    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        // SAFETY: `self` proves AVX2; the caller guarantees 8 readable floats.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32, value: __m256) {
        // SAFETY: `self` proves AVX2; the caller guarantees 8 writable floats.
        unsafe { _mm256_storeu_ps(p, value) }
    }

    #[inline(always)]
    unsafe fn load_lanes(self, p: *const f32, lo: isize, hi: isize) -> __m256 {
        // SAFETY: `self` proves AVX2; a whole vector only when all 8 lanes
        // are readable (the caller's guarantee), else the masked load
        // touches the readable lanes alone.
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

    #[inline(always)]
    unsafe fn store_lanes(self, p: *mut f32, lo: isize, hi: isize, value: __m256) {
        // SAFETY: as in `load_lanes`.
        unsafe {
            if lo <= 0 && hi >= 8 {
                _mm256_storeu_ps(p, value);
            } else if hi > lo.max(0) && lo < 8 {
                _mm256_maskstore_ps(p, lane_mask(lo, hi), value);
            }
        }
    }

    /// (lo0 lo2 lo4 lo6 hi0 hi2 hi4 hi6, lo1 lo3 … hi7).
    #[inline(always)]
    fn split(self, lo: __m256, hi: __m256) -> (__m256, __m256) {
        // In-lane: [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6]; then the 64-bit
        // pairs reordered 0, 2, 1, 3.
        // SAFETY: `self` proves AVX2.
        unsafe {
            let even = _mm256_shuffle_ps::<0x88>(lo, hi);
            let odd = _mm256_shuffle_ps::<0xDD>(lo, hi);
            let (even, odd) = (_mm256_castps_pd(even), _mm256_castps_pd(odd));
            (
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(even)),
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(odd)),
            )
        }
    }

    #[inline(always)]
    fn interleave(self, even: __m256, odd: __m256) -> (__m256, __m256) {
        // [e0 o0 e1 o1 | e4 o4 e5 o5] and [e2 o2 e3 o3 | e6 o6 e7 o7].
        // SAFETY: `self` proves AVX2.
        unsafe {
            let (low, high) = (_mm256_unpacklo_ps(even, odd), _mm256_unpackhi_ps(even, odd));
            (_mm256_permute2f128_ps::<0x20>(low, high), _mm256_permute2f128_ps::<0x31>(low, high))
        }
    }

    #[inline(always)]
    fn shift_in(self, current: __m256, previous: __m256) -> __m256 {
        // [previous 4..8, current 0..4], then per 128-bit lane the last
        // float of the lower source before the first three of the upper.
        // SAFETY: `self` proves AVX2.
        unsafe {
            let straddle = _mm256_permute2f128_ps::<0x21>(previous, current);
            _mm256_castsi256_ps(_mm256_alignr_epi8::<12>(_mm256_castps_si256(current), _mm256_castps_si256(straddle)))
        }
    }

    #[inline(always)]
    unsafe fn windows(self, p: *const f32, lo: isize, hi: isize) -> [__m256; 4] {
        // The shifted windows are loaded again two floats on rather than
        // shifted: as many shuffles either way, and no third load.
        // SAFETY: each load reads offsets in [lo, hi) alone (the caller's
        // guarantee), at most 18 floats on.
        let [a, b, c, d] = unsafe {
            [
                self.load_lanes(p, lo, hi),
                self.load_lanes(p.wrapping_add(8), lo - 8, hi - 8),
                self.load_lanes(p.wrapping_add(2), lo - 2, hi - 2),
                self.load_lanes(p.wrapping_add(10), lo - 10, hi - 10),
            ]
        };
        let (even, odd) = self.split(a, b);
        let (even_next, odd_next) = self.split(c, d);
        [even, odd, even_next, odd_next]
    }
}
