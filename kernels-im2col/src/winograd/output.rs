//! y = Aᵀ M A + b per tile (winograd/mod.rs's output transform, the last step
//! of its forward), in AVX-512 registers, 16 tiles of a tile row at a time,
//! or AVX2 ones, 8 at a time.
//!
//! - `_avx2`: the same kernel at AVX2 + FMA, 8 tiles per chunk, on
//!   winograd/avx2.rs's 8-lane helpers (no mask registers or two-source
//!   permutes there); the same arithmetic in the same order, tested bit for
//!   bit against the portable loops by the same unit test (OPTIMISATION.md
//!   step 54).
//! - The same arithmetic, in the same order, as the portable
//!   `winograd_transforms::transform_output`: per chunk the 16 M values of
//!   each tile are loaded once (from planes laid out by `plane_floats`, so
//!   the 16 loads fall into different L1 sets), both output rows formed in
//!   registers, and each row's even and odd columns interleaved by
//!   two-source permutes into 32 output columns, stored with a mask that
//!   drops the columns past OW where a tile overhangs.
//! - Checked bit for bit against the portable loops by the unit test below,
//!   and through winograd/mod.rs's tests against the f64 reference; timed by
//!   examples/im2col_bench.rs (resnet-3x3 fwd).

#[cfg(target_arch = "x86_64")]
use kernels_core::ConvGeometry;

#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2Token, Avx512Token};

#[cfg(target_arch = "x86_64")]
use super::blocking::{Blocking, plane_floats};
#[cfg(target_arch = "x86_64")]
use crate::lanes::lane_range;

/// Runs the transform into `y_image` [K, OH, OW] (the block's output rows)
/// on the AVX-512F its token proves (winograd/transforms.rs dispatches).
#[cfg(target_arch = "x86_64")]
pub(crate) fn transform_output(
    _token: Avx512Token,
    g: &ConvGeometry,
    b: &Blocking,
    m: &[f32],
    block: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    y_image: &mut [f32],
) {
    let (tiles, n) = (b.block_tiles(), b.tiles_w);
    // The invariants every access below relies on: all 16 positions of
    // every filter's block in, one whole image's output, a bias per
    // filter, and tile rows that fit the block.
    assert!(m.len() >= 16 * plane_floats(g.k, tiles), "winograd output: M too short");
    assert!(y_image.len() == g.k * g.oh * g.ow, "winograd output: not one image");
    assert!(bias.is_none_or(|b| b.len() >= g.k), "winograd output: bias too short");
    assert!(block.len() * n <= tiles && block.end <= b.tiles_h, "winograd output: block past the blocking");
    // SAFETY: `_token` (an Avx512Token) proves AVX-512F; the asserts
    // above bound every access.
    unsafe { transform_avx512(g, n, tiles, m, block, bias, y_image) };
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
    m: &[f32],
    block: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    y_image: &mut [f32],
) {
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_permutex2var_ps, _mm512_set1_ps,
        _mm512_setr_epi32, _mm512_sub_ps,
    };
    let ow = g.ow as isize;
    let position_stride = plane_floats(g.k, tiles);
    // Interleave even and odd output columns: lanes 0..16 and 16..32.
    let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for k in 0..g.k {
        let bias_k = _mm512_set1_ps(bias.map_or(0.0, |b| b[k]));
        for (row_in_block, ty) in block.clone().enumerate() {
            let base = k * tiles + row_in_block * n;
            for tx0 in (0..n).step_by(16) {
                let mask = lane_range(0, n as isize - tx0 as isize);
                // SAFETY: lanes tx0 + l < n of position ξν's tile row lie in
                // m (asserted); the rest are masked off, never read, so the
                // pointer may pass the slice (wrapping arithmetic).
                let at: [[__m512; 4]; 4] = std::array::from_fn(|xi| {
                    // SAFETY: as stated above this array.
                    std::array::from_fn(|nu| unsafe {
                        let p = m.as_ptr().wrapping_add((xi * 4 + nu) * position_stride + base + tx0);
                        _mm512_maskz_loadu_ps(mask, p)
                    })
                });
                // Aᵀ M over ξ: output rows 0 and 1, per ν.
                let r: [[__m512; 4]; 2] = [
                    std::array::from_fn(|nu| _mm512_add_ps(_mm512_add_ps(at[0][nu], at[1][nu]), at[2][nu])),
                    std::array::from_fn(|nu| _mm512_sub_ps(_mm512_sub_ps(at[1][nu], at[2][nu]), at[3][nu])),
                ];
                for (a, [q0, q1, q2, q3]) in r.into_iter().enumerate() {
                    let oy = 2 * ty + a;
                    if oy >= g.oh {
                        continue; // the overhang of an odd OH
                    }
                    // · A over ν, plus the bias.
                    let even = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(q0, q1), q2), bias_k);
                    let odd = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(q1, q2), q3), bias_k);
                    let start = 2 * tx0 as isize;
                    for (half, index) in [(0isize, low), (16, high)] {
                        let first = start + half;
                        let lanes = lane_range(-first, ow - first);
                        if lanes == 0 {
                            continue;
                        }
                        // SAFETY: only lanes whose column first + l lies in
                        // [0, OW) are written, inside row oy < OH of plane
                        // k; the rest are masked off.
                        unsafe {
                            let p = y_image.as_mut_ptr().wrapping_add((k * g.oh + oy) * g.ow).wrapping_offset(first);
                            _mm512_mask_storeu_ps(p, lanes, _mm512_permutex2var_ps(even, index, odd));
                        }
                    }
                }
            }
        }
    }
}

/// [`transform_output`] on the AVX2 + FMA its token proves
/// (winograd/transforms.rs dispatches): 8 tiles per chunk, each output
/// row's even and odd columns interleaved by winograd/avx2.rs into 16
/// output columns.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)] // the token, the block and its operands, as the AVX-512 kernel
pub(crate) fn transform_output_avx2(
    _token: Avx2Token,
    g: &ConvGeometry,
    b: &Blocking,
    m: &[f32],
    block: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    y_image: &mut [f32],
) {
    let (tiles, n) = (b.block_tiles(), b.tiles_w);
    // The same invariants as the AVX-512 kernel's.
    assert!(m.len() >= 16 * plane_floats(g.k, tiles), "winograd output: M too short");
    assert!(y_image.len() == g.k * g.oh * g.ow, "winograd output: not one image");
    assert!(bias.is_none_or(|b| b.len() >= g.k), "winograd output: bias too short");
    assert!(block.len() * n <= tiles && block.end <= b.tiles_h, "winograd output: block past the blocking");
    // SAFETY: `_token` (an Avx2Token) proves AVX2 and FMA; the asserts
    // above bound every access.
    unsafe { transform_avx2(g, n, tiles, m, block, bias, y_image) };
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
    m: &[f32],
    block: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    y_image: &mut [f32],
) {
    use super::avx2::{LANES, interleave, load, store};
    use std::arch::x86_64::{__m256, _mm256_add_ps, _mm256_set1_ps, _mm256_sub_ps};
    let ow = g.ow as isize;
    let position_stride = plane_floats(g.k, tiles);
    for k in 0..g.k {
        let bias_k = _mm256_set1_ps(bias.map_or(0.0, |b| b[k]));
        for (row_in_block, ty) in block.clone().enumerate() {
            let base = k * tiles + row_in_block * n;
            for tx0 in (0..n).step_by(LANES) {
                let valid = n as isize - tx0 as isize;
                let at: [[__m256; 4]; 4] = std::array::from_fn(|xi| {
                    std::array::from_fn(|nu| {
                        // SAFETY: lanes tx0 + l < n of position ξν's tile
                        // row lie in m (asserted); the rest are not read,
                        // so the pointer may pass the slice (wrapping).
                        unsafe { load(m.as_ptr().wrapping_add((xi * 4 + nu) * position_stride + base + tx0), 0, valid) }
                    })
                });
                // Aᵀ M over ξ: output rows 0 and 1, per ν.
                let r: [[__m256; 4]; 2] = [
                    std::array::from_fn(|nu| _mm256_add_ps(_mm256_add_ps(at[0][nu], at[1][nu]), at[2][nu])),
                    std::array::from_fn(|nu| _mm256_sub_ps(_mm256_sub_ps(at[1][nu], at[2][nu]), at[3][nu])),
                ];
                for (a, [q0, q1, q2, q3]) in r.into_iter().enumerate() {
                    let oy = 2 * ty + a;
                    if oy >= g.oh {
                        continue; // the overhang of an odd OH
                    }
                    // · A over ν, plus the bias.
                    let even = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(q0, q1), q2), bias_k);
                    let odd = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(q1, q2), q3), bias_k);
                    let (low, high) = interleave(even, odd);
                    for (half, value) in [(0isize, low), (LANES as isize, high)] {
                        let first = 2 * tx0 as isize + half;
                        // SAFETY: only lanes whose column first + l lies in
                        // [0, OW) are written, inside row oy < OH of plane
                        // k; the rest are not touched.
                        unsafe {
                            let p = y_image.as_mut_ptr().wrapping_add((k * g.oh + oy) * g.ow).wrapping_offset(first);
                            store(p, -first, ow - first, value);
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
    use crate::winograd::transforms::{RowBuffers, transform_output_portable};
    use kernels_core::{Conv2d, SplitMix64};

    #[test]
    fn matches_the_portable_transform() {
        let mut rng = SplitMix64::new(13);
        // (filters, h, w, padding, tile rows per block, bias): odd and even
        // output sizes, more than one chunk of 16 tiles, one-row blocks.
        for (k, h, w, pad, rows_per_block, with_bias) in [
            (3, 9, 7, 1, 2, true),
            (2, 12, 40, 1, 3, false),
            (2, 8, 30, 0, 1, true),
            (1, 7, 33, 2, 4, true),
            (2, 6, 64, 1, 1, false),
        ] {
            let g = ConvGeometry::from_dims([1, 1, h, w], [k, 3, 3], &Conv2d::new(1, pad)).unwrap();
            let (tiles_h, tiles_w) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
            let b = Blocking { tiles_h, tiles_w, rows_per_block: rows_per_block.min(tiles_h) };
            let m: Vec<f32> =
                (0..16 * plane_floats(k, b.block_tiles())).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
            let bias: Vec<f32> = (0..k).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
            let bias = with_bias.then_some(bias.as_slice());
            let mut bufs = RowBuffers::new(&b);
            for r0 in (0..tiles_h).step_by(b.rows_per_block) {
                let block = r0..(r0 + b.rows_per_block).min(tiles_h);
                let mut want = vec![f32::NAN; k * g.oh * g.ow];
                transform_output_portable(&g, &b, &m, block.clone(), bias, &mut want, &mut bufs);
                // Each register kernel this CPU runs.
                for isa in Isa::supported() {
                    let mut got = vec![f32::NAN; k * g.oh * g.ow];
                    match Simd::new(isa) {
                        Simd::Avx512(token) => transform_output(token, &g, &b, &m, block.clone(), bias, &mut got),
                        Simd::Avx2(token) => transform_output_avx2(token, &g, &b, &m, block.clone(), bias, &mut got),
                        Simd::Portable => continue,
                    }
                    // Bit for bit; NaN (not written) outside the block's rows in both.
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{isa}: k {k} h {h} w {w} pad {pad} block {block:?}");
                }
            }
        }
    }
}
