//! dM = A dy Aᵀ per tile (winograd/mod.rs's output-gradient transform, the
//! first step of its backward), in AVX-512 registers, 16 tiles of a tile
//! row at a time, or AVX2 ones, 8 at a time.
//!
//! - `_avx2`: the same kernel at AVX2 + FMA, 8 tiles per chunk, on
//!   winograd/avx2.rs's 8-lane helpers (no mask registers or two-source
//!   permutes there); the same arithmetic in the same order, tested bit for
//!   bit against the portable loops by the same unit test (OPTIMISATION.md
//!   step 54).
//! - The same arithmetic, in the same order, as the portable
//!   `winograd_transforms::transform_output_gradient` (negation as a sign
//!   flip, as `-x` is): each of a tile row's two dy rows is two masked loads
//!   (columns past OW, where a tile overhangs, read as zero) split into
//!   even and odd columns by two-source permutes, then the 16 dM values per
//!   tile are formed in registers and stored once.
//! - As in winograd/input.rs, the next filter's dy rows are prefetched
//!   while this one computes: a block reads only 2·rows of each plane, too
//!   short a stream for the hardware prefetcher.
//! - Checked bit for bit against the portable loops by the unit test below,
//!   and through winograd/mod.rs's tests against the f64 reference and by
//!   central differences; timed by examples/im2col_bench.rs (resnet-3x3
//!   bwd).

#[cfg(target_arch = "x86_64")]
use kernels_core::ConvGeometry;

#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2Token, Avx512Token};

#[cfg(target_arch = "x86_64")]
use super::blocking::{Blocking, plane_floats};
#[cfg(target_arch = "x86_64")]
use crate::lanes::lane_range;

/// Runs the transform into `dm` [16, K, block tiles] on the AVX-512F its
/// token proves (winograd/transforms.rs dispatches).
#[cfg(target_arch = "x86_64")]
pub(crate) fn transform_output_gradient(
    _token: Avx512Token,
    g: &ConvGeometry,
    b: &Blocking,
    dy_image: &[f32],
    block: std::ops::Range<usize>,
    dm: &mut [f32],
) {
    let (tiles, n) = (b.block_tiles(), b.tiles_w);
    // The invariants every access below relies on: one whole image's
    // dy in, all 16 positions of every filter's block out, and tile
    // rows that fit the block.
    assert!(dy_image.len() == g.k * g.oh * g.ow, "winograd dM: not one image");
    assert!(dm.len() >= 16 * plane_floats(g.k, tiles), "winograd dM: dM too short");
    assert!(block.len() * n <= tiles && block.end <= b.tiles_h, "winograd dM: block past the blocking");
    // SAFETY: `_token` (an Avx512Token) proves AVX-512F; the asserts
    // above bound every access.
    unsafe { transform_avx512(g, n, tiles, dy_image, block, dm) };
}

/// # Safety
/// The CPU must run AVX-512F (the caller holds an `Avx512Token`). Every access stays inside the
/// slices only under the bounds its caller asserts (see the call site).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_avx512(
    g: &ConvGeometry,
    n: usize,
    tiles: usize,
    dy_image: &[f32],
    block: std::ops::Range<usize>,
    dm: &mut [f32],
) {
    use std::arch::x86_64::{
        __m512, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps, _mm512_castps_si512, _mm512_castsi512_ps,
        _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_permutex2var_ps, _mm512_set1_epi32, _mm512_setr_epi32,
        _mm512_setzero_ps, _mm512_sub_ps, _mm512_xor_si512,
    };
    let ow = g.ow as isize;
    let plane = g.oh * g.ow;
    let position_stride = plane_floats(g.k, tiles);
    let even_lanes = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd_lanes = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let sign = _mm512_set1_epi32(i32::MIN);
    // −v exactly (a sign flip, as the portable code's unary minus).
    let neg = |v: __m512| _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), sign));
    // Output row oy's columns 2·tx0 .. 2·tx0 + 32 as (even, odd) for the
    // chunk's 16 tiles; zeros past the last row or column.
    let columns = |k: usize, oy: usize, tx0: usize| -> [__m512; 2] {
        if oy >= g.oh {
            return [_mm512_setzero_ps(); 2];
        }
        let row = k * plane + oy * g.ow;
        let start = 2 * tx0 as isize;
        let load = |offset: isize| {
            let first = start + offset;
            // SAFETY: only lanes whose column first + l lies in [0, ow)
            // are read, inside row oy < oh of plane k; masked lanes are
            // never touched, so the pointer may pass the slice (wrapping).
            unsafe {
                let at = dy_image.as_ptr().wrapping_add(row).wrapping_offset(first);
                _mm512_maskz_loadu_ps(lane_range(-first, ow - first), at)
            }
        };
        let (lo, hi) = (load(0), load(16));
        [_mm512_permutex2var_ps(lo, even_lanes, hi), _mm512_permutex2var_ps(lo, odd_lanes, hi)]
    };
    let first_row = 2 * block.start;
    let last_row = (2 * block.end).min(g.oh);
    for k in 0..g.k {
        if k + 1 < g.k && first_row < last_row {
            // The next filter's rows into cache while this one computes.
            let rows = &dy_image[(k + 1) * plane + first_row * g.ow..(k + 1) * plane + last_row * g.ow];
            for line in rows.chunks(16) {
                _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
            }
        }
        for (row_in_block, ty) in block.clone().enumerate() {
            let base = k * tiles + row_in_block * n;
            let mask = |tx0: usize| lane_range(0, n as isize - tx0 as isize);
            for tx0 in (0..n).step_by(16) {
                // A·q along each row: (e, e + o, e − o, −o).
                let r: [[__m512; 4]; 2] = std::array::from_fn(|a| {
                    let [e, o] = columns(k, 2 * ty + a, tx0);
                    [e, _mm512_add_ps(e, o), _mm512_sub_ps(e, o), neg(o)]
                });
                for (nu, (q0, q1)) in r[0].into_iter().zip(r[1]).enumerate() {
                    // Then along the column: (q0, q0 + q1, q0 − q1, −q1).
                    let values = [q0, _mm512_add_ps(q0, q1), _mm512_sub_ps(q0, q1), neg(q1)];
                    for (xi, value) in values.into_iter().enumerate() {
                        // SAFETY: lanes tx0 + l < n of position ξν's tile
                        // row lie in dm (asserted); the rest are masked
                        // off, so the pointer may pass the slice untouched.
                        unsafe {
                            let at = dm.as_mut_ptr().wrapping_add((xi * 4 + nu) * position_stride + base + tx0);
                            _mm512_mask_storeu_ps(at, mask(tx0), value);
                        }
                    }
                }
            }
        }
    }
}

/// [`transform_output_gradient`] on the AVX2 + FMA its token proves
/// (winograd/transforms.rs dispatches): 8 tiles per chunk, each dy row's
/// 16 columns as two loads split by winograd/avx2.rs.
#[cfg(target_arch = "x86_64")]
pub(crate) fn transform_output_gradient_avx2(
    _token: Avx2Token,
    g: &ConvGeometry,
    b: &Blocking,
    dy_image: &[f32],
    block: std::ops::Range<usize>,
    dm: &mut [f32],
) {
    let (tiles, n) = (b.block_tiles(), b.tiles_w);
    // The same invariants as the AVX-512 kernel's.
    assert!(dy_image.len() == g.k * g.oh * g.ow, "winograd dM: not one image");
    assert!(dm.len() >= 16 * plane_floats(g.k, tiles), "winograd dM: dM too short");
    assert!(block.len() * n <= tiles && block.end <= b.tiles_h, "winograd dM: block past the blocking");
    // SAFETY: `_token` (an Avx2Token) proves AVX2 and FMA; the asserts
    // above bound every access.
    unsafe { transform_avx2(g, n, tiles, dy_image, block, dm) };
}

/// # Safety
/// The CPU must run AVX2 and FMA (the caller holds an `Avx2Token`). Every access stays inside the
/// slices only under the bounds its caller asserts (see the call site).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_avx2(
    g: &ConvGeometry,
    n: usize,
    tiles: usize,
    dy_image: &[f32],
    block: std::ops::Range<usize>,
    dm: &mut [f32],
) {
    use super::avx2::{LANES, load, split, store};
    use std::arch::x86_64::{
        __m256, _MM_HINT_T0, _mm_prefetch, _mm256_add_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_sub_ps,
        _mm256_xor_ps,
    };
    let ow = g.ow as isize;
    let plane = g.oh * g.ow;
    let position_stride = plane_floats(g.k, tiles);
    let sign = _mm256_set1_ps(-0.0);
    // −v exactly (a sign flip, as the portable code's unary minus).
    let neg = |v: __m256| _mm256_xor_ps(v, sign);
    // Output row oy's columns 2·tx0 .. 2·tx0 + 16 as (even, odd) for the
    // chunk's 8 tiles; zeros past the last row or column.
    let columns = |k: usize, oy: usize, tx0: usize| -> [__m256; 2] {
        if oy >= g.oh {
            return [_mm256_setzero_ps(); 2];
        }
        let row = k * plane + oy * g.ow;
        let load_at = |offset: isize| {
            let first = 2 * tx0 as isize + offset;
            // SAFETY: only lanes whose column first + l lies in [0, ow)
            // are read, inside row oy < oh of plane k; the others are
            // never touched, so the pointer may pass the slice (wrapping).
            unsafe { load(dy_image.as_ptr().wrapping_add(row).wrapping_offset(first), -first, ow - first) }
        };
        let (even, odd) = split(load_at(0), load_at(LANES as isize));
        [even, odd]
    };
    let first_row = 2 * block.start;
    let last_row = (2 * block.end).min(g.oh);
    for k in 0..g.k {
        if k + 1 < g.k && first_row < last_row {
            // The next filter's rows into cache while this one computes.
            let rows = &dy_image[(k + 1) * plane + first_row * g.ow..(k + 1) * plane + last_row * g.ow];
            for line in rows.chunks(16) {
                _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
            }
        }
        for (row_in_block, ty) in block.clone().enumerate() {
            let base = k * tiles + row_in_block * n;
            for tx0 in (0..n).step_by(LANES) {
                let valid = n as isize - tx0 as isize;
                // A·q along each row: (e, e + o, e − o, −o).
                let r: [[__m256; 4]; 2] = std::array::from_fn(|a| {
                    let [e, o] = columns(k, 2 * ty + a, tx0);
                    [e, _mm256_add_ps(e, o), _mm256_sub_ps(e, o), neg(o)]
                });
                for (nu, (q0, q1)) in r[0].into_iter().zip(r[1]).enumerate() {
                    // Then along the column: (q0, q0 + q1, q0 − q1, −q1).
                    let values = [q0, _mm256_add_ps(q0, q1), _mm256_sub_ps(q0, q1), neg(q1)];
                    for (xi, value) in values.into_iter().enumerate() {
                        // SAFETY: lanes tx0 + l < n of position ξν's tile
                        // row lie in dm (asserted); the rest are not
                        // written, so the pointer may pass the slice.
                        unsafe {
                            let at = dm.as_mut_ptr().wrapping_add((xi * 4 + nu) * position_stride + base + tx0);
                            store(at, 0, valid, value);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::simd::{Isa, Simd};
    use crate::winograd::transforms::{RowBuffers, transform_output_gradient_portable};
    use kernels_core::{Conv2d, SplitMix64};

    #[test]
    fn matches_the_portable_transform() {
        let mut rng = SplitMix64::new(11);
        // (filters, h, w, padding, tile rows per block): odd and even output
        // sizes, more than one chunk of 16 tiles, one-row blocks.
        for (k, h, w, pad, rows_per_block) in
            [(3, 9, 7, 1, 2), (2, 12, 40, 1, 3), (2, 8, 30, 0, 1), (1, 7, 33, 2, 4), (2, 6, 64, 1, 1)]
        {
            let g = ConvGeometry::from_dims([1, 1, h, w], [k, 3, 3], &Conv2d::new(1, pad)).unwrap();
            let (tiles_h, tiles_w) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
            let b = Blocking { tiles_h, tiles_w, rows_per_block: rows_per_block.min(tiles_h) };
            let dy: Vec<f32> = (0..k * g.oh * g.ow).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
            let len = 16 * plane_floats(k, b.block_tiles());
            let mut bufs = RowBuffers::new(&b);
            for r0 in (0..tiles_h).step_by(b.rows_per_block) {
                let block = r0..(r0 + b.rows_per_block).min(tiles_h);
                let mut want = vec![f32::NAN; len];
                transform_output_gradient_portable(&g, &b, &dy, block.clone(), &mut want, &mut bufs);
                // Each register kernel this CPU runs.
                for isa in Isa::supported() {
                    let mut got = vec![f32::NAN; len];
                    match Simd::new(isa) {
                        Simd::Avx512(token) => transform_output_gradient(token, &g, &b, &dy, block.clone(), &mut got),
                        Simd::Avx2(token) => {
                            transform_output_gradient_avx2(token, &g, &b, &dy, block.clone(), &mut got)
                        }
                        Simd::Portable => continue,
                    }
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{isa}: k {k} h {h} w {w} pad {pad} block {block:?}");
                }
            }
        }
    }
}
