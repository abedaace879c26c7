//! The vector layer of the Winograd transforms (winograd/input.rs,
//! winograd/output.rs, winograd/dm.rs, winograd/dx.rs): each transform is
//! one body written over [`Lanes`], a vector of `N` f32 lanes, and run at
//! AVX-512 (16 lanes, implemented here) or AVX2 + FMA (8 lanes,
//! winograd/avx2.rs) by [`Lanes::vectorize`].
//!
//! - Why a trait over the ISA tokens rather than two copies of each body:
//!   the AVX-512 and AVX2 bodies were the same arithmetic in the same
//!   order, differing only in width and in how lanes are masked, split and
//!   shifted (OPTIMISATION.md steps 54 and 59). The implementors are the
//!   tokens of simd.rs themselves, so holding `self` is the proof of the
//!   features each method's intrinsics need, and the arithmetic methods
//!   can be safe.
//! - Speed rests on inlining: every method is `#[inline(always)]`, and a
//!   [`Kernel`]'s `run` must be too, so that the whole body is compiled
//!   inside `vectorize`'s `#[target_feature]` function, where the
//!   intrinsics inline as single zmm / ymm instructions. A closure (or an
//!   `array::from_fn`) that calls these methods is a function of its own,
//!   compiled without the features: where LLVM does not inline it (the
//!   first version of step 59 had three such) it calls every intrinsic.
//!   So the bodies use loops over arrays and `#[inline(always)]` helper
//!   functions, never such closures; `objdump -d` of the bench shows no
//!   calls in `run_avx512` / `run_avx2` but the asserts' panics (step 59).
//! - [`lane_range`] is the AVX-512 lane mask of a row's edge.
//! - Checked through each transform's unit test, bit for bit against the
//!   portable loops at every ISA in `Isa::supported()`, and by the test
//!   below (each method of both implementations against its definition).

use std::arch::x86_64::{
    __m512, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps, _mm512_alignr_epi32, _mm512_castps_si512, _mm512_castsi512_ps,
    _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_permutex2var_ps, _mm512_set1_epi32,
    _mm512_set1_ps, _mm512_setr_epi32, _mm512_setzero_ps, _mm512_storeu_ps, _mm512_sub_ps, _mm512_xor_si512,
};

use crate::simd::Avx512Token;

/// A mask of lanes l in [lo, hi) of 16 (empty when hi ≤ lo); lo and hi may
/// lie outside 0..16 (a row that starts before the vector or ends past it).
#[inline(always)]
pub(crate) fn lane_range(lo: isize, hi: isize) -> u16 {
    let (lo, hi) = (lo.clamp(0, 16) as u32, hi.clamp(0, 16) as u32);
    if hi <= lo { 0 } else { (((1u32 << (hi - lo)) - 1) << lo) as u16 }
}

/// Brings `rows` into L1, a cache line per 16 floats: the transforms call
/// it on the next plane's rows while they compute this one's, since a
/// block reads only a few rows per plane, too short a stream for the
/// hardware prefetcher (OPTIMISATION.md step 48).
#[inline(always)]
pub(crate) fn prefetch(rows: &[f32]) {
    for line in rows.chunks(16) {
        // SAFETY: SSE is part of the x86_64 baseline, and a prefetch never
        // faults (the address is inside `rows` anyway).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
}

/// A transform body written once over [`Lanes`]; [`Lanes::vectorize`] runs
/// it at that ISA.
pub(crate) trait Kernel {
    /// The body. Implementations must be `#[inline(always)]`: only then is
    /// it compiled inside `vectorize`'s `#[target_feature]` function, with
    /// the intrinsics inlined, rather than as a function of its own with
    /// a call per intrinsic.
    fn run<S: Lanes>(self, s: S);
}

/// A vector of [`Lanes::N`] f32 lanes at one ISA, implemented by the token
/// that proves the ISA (so `self` is the proof each method relies on).
///
/// The methods are the operations the Winograd transforms use, nothing
/// more; each does exactly what its AVX-512 and AVX2 versions did before
/// they were folded (the transforms' tests check bit for bit).
pub(crate) trait Lanes: Copy {
    /// The register type.
    type V: Copy;
    /// Lanes per vector.
    const N: usize;

    /// Runs `kernel` in a function compiled for this ISA.
    fn vectorize<K: Kernel>(self, kernel: K);

    /// All lanes zero.
    fn zero(self) -> Self::V;
    /// All lanes `x`.
    fn splat(self, x: f32) -> Self::V;
    /// a + b, lane by lane.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// a − b, lane by lane.
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// −v exactly: a sign flip, as the portable code's unary minus.
    fn flip_sign(self, v: Self::V) -> Self::V;

    /// The `N` floats at `p`.
    ///
    /// # Safety
    /// `p .. p + N` is readable.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// Writes `value` to `p .. p + N`.
    ///
    /// # Safety
    /// `p .. p + N` is writable.
    unsafe fn store(self, p: *mut f32, value: Self::V);
    /// The `N` floats at `p`, lanes outside [lo, hi) as zero and not read;
    /// lo and hi may lie outside 0..N.
    ///
    /// # Safety
    /// `p + l` is readable for every lane l in [lo, hi) ∩ [0, N); `p`
    /// itself may point anywhere (formed with wrapping arithmetic) when
    /// the other lanes are not read.
    unsafe fn load_lanes(self, p: *const f32, lo: isize, hi: isize) -> Self::V;
    /// Writes lanes [lo, hi) of `value` to `p + l`, no other.
    ///
    /// # Safety
    /// `p + l` is writable for every lane l in [lo, hi) ∩ [0, N); as for
    /// [`Lanes::load_lanes`], `p` may point anywhere.
    unsafe fn store_lanes(self, p: *mut f32, lo: isize, hi: isize, value: Self::V);

    /// Even and odd elements of the 2N consecutive floats (lo, hi).
    fn split(self, lo: Self::V, hi: Self::V) -> (Self::V, Self::V);
    /// The inverse of [`Lanes::split`]: 2N consecutive floats e0 o0 e1 o1
    /// …, as (first N, last N).
    fn interleave(self, even: Self::V, odd: Self::V) -> (Self::V, Self::V);
    /// [previous lane N − 1, current lanes 0..N − 1]: the value of tile
    /// tx − 1 at tx, across a chunk boundary.
    fn shift_in(self, current: Self::V, previous: Self::V) -> Self::V;
    /// A chunk's stride-2 windows of the 2N + 2 floats x at `p`, those at
    /// offsets outside [lo, hi) read as zero (and not read): [even, odd,
    /// even shifted by one, odd shifted by one], lane t being x[2t],
    /// x[2t + 1], x[2t + 2], x[2t + 3]. Each ISA takes its own cheapest
    /// route (below and in winograd/avx2.rs).
    ///
    /// # Safety
    /// `p + o` is readable for every offset o in [lo, hi) ∩ [0, 3N) (the
    /// loads may cover up to 3N floats); `p` may point anywhere when the
    /// other offsets are not read.
    unsafe fn windows(self, p: *const f32, lo: isize, hi: isize) -> [Self::V; 4];
}

/// The body under AVX-512F (the token's proof).
///
/// # Safety
/// The CPU runs AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<K: Kernel>(token: Avx512Token, kernel: K) {
    kernel.run(token);
}

// Every `unsafe` block below calls AVX-512F intrinsics; `self`, an
// `Avx512Token`, proves the CPU runs AVX-512F. Memory accesses are the
// caller's, under each method's documented precondition.
impl Lanes for Avx512Token {
    type V = __m512;
    const N: usize = 16;

    fn vectorize<K: Kernel>(self, kernel: K) {
        // SAFETY: `self` proves AVX-512F.
        unsafe { run_avx512(self, kernel) }
    }

    #[inline(always)]
    fn zero(self) -> __m512 {
        // SAFETY: `self` proves AVX-512F.
        unsafe { _mm512_setzero_ps() }
    }

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        // SAFETY: `self` proves AVX-512F.
        unsafe { _mm512_set1_ps(x) }
    }

    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: `self` proves AVX-512F.
        unsafe { _mm512_add_ps(a, b) }
    }

    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: `self` proves AVX-512F.
        unsafe { _mm512_sub_ps(a, b) }
    }

    #[inline(always)]
    fn flip_sign(self, v: __m512) -> __m512 {
        // An integer xor: `_mm512_xor_ps` needs AVX-512DQ.
        // SAFETY: `self` proves AVX-512F.
        unsafe { _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), _mm512_set1_epi32(i32::MIN))) }
    }

    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        // SAFETY: `self` proves AVX-512F; the caller guarantees 16 readable floats.
        unsafe { _mm512_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32, value: __m512) {
        // SAFETY: `self` proves AVX-512F; the caller guarantees 16 writable floats.
        unsafe { _mm512_storeu_ps(p, value) }
    }

    #[inline(always)]
    unsafe fn load_lanes(self, p: *const f32, lo: isize, hi: isize) -> __m512 {
        // SAFETY: `self` proves AVX-512F; the mask reads lanes [lo, hi) alone,
        // readable by the caller's guarantee (masked lanes never fault).
        unsafe { _mm512_maskz_loadu_ps(lane_range(lo, hi), p) }
    }

    #[inline(always)]
    unsafe fn store_lanes(self, p: *mut f32, lo: isize, hi: isize, value: __m512) {
        // SAFETY: `self` proves AVX-512F; the mask writes lanes [lo, hi)
        // alone, writable by the caller's guarantee.
        unsafe { _mm512_mask_storeu_ps(p, lane_range(lo, hi), value) }
    }

    #[inline(always)]
    fn split(self, lo: __m512, hi: __m512) -> (__m512, __m512) {
        // SAFETY: `self` proves AVX-512F.
        unsafe {
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            (_mm512_permutex2var_ps(lo, even, hi), _mm512_permutex2var_ps(lo, odd, hi))
        }
    }

    #[inline(always)]
    fn interleave(self, even: __m512, odd: __m512) -> (__m512, __m512) {
        // SAFETY: `self` proves AVX-512F.
        unsafe {
            let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
            (_mm512_permutex2var_ps(even, low, odd), _mm512_permutex2var_ps(even, high, odd))
        }
    }

    #[inline(always)]
    fn shift_in(self, current: __m512, previous: __m512) -> __m512 {
        // SAFETY: `self` proves AVX-512F.
        unsafe {
            _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(_mm512_castps_si512(current), _mm512_castps_si512(previous)))
        }
    }

    #[inline(always)]
    unsafe fn windows(self, p: *const f32, lo: isize, hi: isize) -> [__m512; 4] {
        // Three loads (the third's first two floats are the last columns
        // the chunk needs), split; the shifted windows are the splits
        // moved one lane on with the next vector's lane 0 (`valignd`).
        // (No closures here or in the bodies: one outlined would be
        // compiled without AVX-512 and call every intrinsic, step 59.)
        // SAFETY: each load reads offsets in [lo, hi) alone (the caller's
        // guarantee), at most 48 = 3N floats on.
        let (lo_half, hi_half, after) = unsafe {
            (
                self.load_lanes(p, lo, hi),
                self.load_lanes(p.wrapping_add(16), lo - 16, hi - 16),
                self.load_lanes(p.wrapping_add(32), lo - 32, hi - 32),
            )
        };
        let (even, odd) = self.split(lo_half, hi_half);
        let (even_after, odd_after) = self.split(after, self.zero());
        [even, odd, next_avx512(self, even, even_after), next_avx512(self, odd, odd_after)]
    }
}

/// [current lanes 1..16, following lane 0]: tile tx + 1's value at tx.
#[inline(always)]
fn next_avx512(_proof: Avx512Token, current: __m512, following: __m512) -> __m512 {
    // SAFETY: `_proof` proves AVX-512F.
    unsafe {
        _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(_mm512_castps_si512(following), _mm512_castps_si512(current)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{Isa, Simd};

    #[test]
    fn masks_cover_the_range_clipped_to_16_lanes() {
        assert_eq!(lane_range(0, 16), 0xFFFF);
        assert_eq!(lane_range(-3, 2), 0b11);
        assert_eq!(lane_range(14, 40), 0xC000);
        assert_eq!(lane_range(5, 5), 0);
        assert_eq!(lane_range(9, 3), 0);
        assert_eq!(lane_range(-20, -1), 0);
    }

    /// The lanes of one vector, as an array.
    fn lanes<S: Lanes>(s: S, v: S::V) -> Vec<f32> {
        let mut out = vec![0.0f32; S::N];
        // SAFETY: `out` holds N floats.
        unsafe { s.store(out.as_mut_ptr(), v) };
        out
    }

    /// Every shuffle and masked access against its definition, lane by
    /// lane, at one ISA.
    fn check<S: Lanes>(s: S) {
        let (n, ni, fi) = (S::N, S::N as isize, S::N as f32);
        let a: Vec<f32> = (0..4 * n).map(|i| i as f32 + 1.0).collect();
        // SAFETY: every lane read lies in `a` (offsets up to 3N of 4N).
        let at = |offset: usize| unsafe { s.load(a.as_ptr().add(offset)) };
        let (even, odd) = s.split(at(0), at(n));
        assert_eq!(lanes(s, even), (0..n).map(|i| a[2 * i]).collect::<Vec<_>>());
        assert_eq!(lanes(s, odd), (0..n).map(|i| a[2 * i + 1]).collect::<Vec<_>>());
        let (first, last) = s.interleave(even, odd);
        assert_eq!((lanes(s, first), lanes(s, last)), (a[..n].to_vec(), a[n..2 * n].to_vec()));
        assert_eq!(lanes(s, s.shift_in(at(n), at(0))), a[n - 1..2 * n - 1].to_vec());
        // SAFETY: offsets [0, 2N + 2) of `a` (4N floats) alone are read.
        let windows = unsafe { s.windows(a.as_ptr(), 0, 2 * ni + 2) };
        for (j, window) in windows.into_iter().enumerate() {
            assert_eq!(lanes(s, window), (0..n).map(|t| a[2 * t + j]).collect::<Vec<_>>(), "window {j}");
        }
        assert_eq!(lanes(s, s.flip_sign(s.zero())), vec![-0.0f32; n]);
        for (lo, hi) in [(-3, 2), (0, ni), (3, 5), (5, 2 * ni), (6, 6), (ni + 1, ni + 4), (-4, -1)] {
            let inside = |l: usize| (lo..hi).contains(&(l as isize));
            // SAFETY: only lanes in [lo, hi) ∩ [0, N) of a[N..2N] are read.
            let got = lanes(s, unsafe { s.load_lanes(a.as_ptr().add(n), lo, hi) });
            assert_eq!(got, (0..n).map(|l| if inside(l) { a[n + l] } else { 0.0 }).collect::<Vec<_>>(), "{lo}..{hi}");
            let mut out = vec![-1.0f32; n];
            // SAFETY: as above, in `out`.
            unsafe { s.store_lanes(out.as_mut_ptr(), lo, hi, s.splat(fi)) };
            assert_eq!(out, (0..n).map(|l| if inside(l) { fi } else { -1.0 }).collect::<Vec<_>>(), "{lo}..{hi}");
        }
    }

    #[test]
    fn methods_match_their_definitions_at_every_isa() {
        for isa in Isa::supported() {
            match Simd::new(isa) {
                Simd::Avx512(token) => check(token),
                Simd::Avx2(token) => check(token),
                Simd::Portable => {}
            }
        }
    }
}
