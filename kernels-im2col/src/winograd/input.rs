//! V = Bᵀ d B per tile (winograd/mod.rs's input transform), in AVX-512
//! registers, 16 tiles of a tile row at a time, or AVX2 ones, 8 at a time.
//!
//! - `_avx2`: the same kernel at AVX2 + FMA, 8 tiles per chunk, on
//!   winograd/avx2.rs's 8-lane helpers (no mask registers or two-source
//!   permutes there); the same arithmetic in the same order, tested bit for
//!   bit against the portable loops by the same unit test (OPTIMISATION.md
//!   step 54).
//! - The same arithmetic, in the same order, as the portable
//!   `winograd_transforms::transform_input`, which splits each of a tile
//!   row's four input rows into even and odd columns in scalar pairs, then
//!   runs ~20 short loops over tile-row arrays per channel; that split and
//!   transform were ~45% of resnet-3x3's forward.
//! - Tile tx's 4x4 patch covers padded columns 2tx .. 2tx + 3. For a chunk
//!   of 16 tiles, 32 (+ 2) consecutive input columns per row are three
//!   masked loads (lanes in the padding or past the image read as zero),
//!   split into even and odd columns by two-source permutes; columns
//!   2tx + 2 and 2tx + 3 are the same vectors shifted by one lane.
//! - Checked bit for bit against the portable loops by the unit test below
//!   (odd widths, padding 0 to 2, several chunks, one-row blocks), and
//!   through winograd/mod.rs's tests against the f64 reference; timed by
//!   examples/im2col_bench.rs (resnet-3x3).

#[cfg(target_arch = "x86_64")]
use kernels_core::ConvGeometry;

#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2Token, Avx512Token};

#[cfg(target_arch = "x86_64")]
use super::blocking::{Blocking, plane_floats};
#[cfg(target_arch = "x86_64")]
use crate::lanes::lane_range;

/// Runs the transform into `v` [16, C, block tiles]; the token is the
/// proof of AVX-512F (the caller, winograd/transforms.rs, dispatches).
#[cfg(target_arch = "x86_64")]
pub(crate) fn transform_input(
    _token: Avx512Token,
    g: &ConvGeometry,
    b: &Blocking,
    x_image: &[f32],
    block: std::ops::Range<usize>,
    v: &mut [f32],
) {
    let (tiles, n) = (b.block_tiles(), b.tiles_w);
    // The invariants every access below relies on: one whole image in,
    // all 16 positions of every channel's block out, and tile rows that
    // fit the block.
    assert!(x_image.len() == g.c * g.h * g.w, "winograd input: not one image");
    assert!(v.len() >= 16 * plane_floats(g.c, tiles), "winograd input: V too short");
    assert!(block.len() * n <= tiles && block.end <= b.tiles_h, "winograd input: block past the blocking");
    // SAFETY: `_token` (an Avx512Token) proves AVX-512F; the asserts
    // above bound every access.
    unsafe { transform_avx512(g, n, tiles, x_image, block, v) };
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
    x_image: &[f32],
    block: std::ops::Range<usize>,
    v: &mut [f32],
) {
    use std::arch::x86_64::{
        __m512, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps, _mm512_alignr_epi32, _mm512_castps_si512,
        _mm512_castsi512_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_permutex2var_ps, _mm512_setr_epi32,
        _mm512_setzero_ps, _mm512_sub_ps,
    };
    let (h, w) = (g.h as isize, g.w as isize);
    let (ph, pw) = (g.params.padding[0] as isize, g.params.padding[1] as isize);
    let position_stride = plane_floats(g.c, tiles);
    let even_lanes = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd_lanes = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    // [current lanes 1..16, next lane 0]: the value of tile tx + 1 at tx.
    let next = |current: __m512, following: __m512| {
        _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(_mm512_castps_si512(following), _mm512_castps_si512(current)))
    };
    // Input row iy's padded columns 2·tx0 + 0..34 of a chunk as (even[tx],
    // odd[tx], even[tx + 1], odd[tx + 1]) for its 16 tiles; zeros outside
    // the image.
    let columns = |c: usize, iy: isize, tx0: usize| -> [__m512; 4] {
        let zero = _mm512_setzero_ps();
        if iy < 0 || iy >= h {
            return [zero; 4];
        }
        let row = (c * g.h + iy as usize) * g.w;
        let first = 2 * tx0 as isize - pw; // image column of padded column 2·tx0
        let load = |offset: isize| {
            let start = first + offset;
            // SAFETY: only lanes whose column start + l lies in [0, w) are
            // read, inside row iy < h of channel c of the image; the
            // pointer is formed with wrapping arithmetic since masked lanes
            // (the padding) are never touched.
            unsafe {
                let at = x_image.as_ptr().wrapping_offset(row as isize + start);
                _mm512_maskz_loadu_ps(lane_range(-start, w - start), at)
            }
        };
        let (lo, hi, after) = (load(0), load(16), load(32));
        let (even, odd) = (_mm512_permutex2var_ps(lo, even_lanes, hi), _mm512_permutex2var_ps(lo, odd_lanes, hi));
        let (even_after, odd_after) =
            (_mm512_permutex2var_ps(after, even_lanes, zero), _mm512_permutex2var_ps(after, odd_lanes, zero));
        [even, odd, next(even, even_after), next(odd, odd_after)]
    };
    // The input rows a block reads in each channel.
    let first_row = (2 * block.start as isize - ph).max(0) as usize;
    let last_row = ((2 * block.end as isize - ph + 2).max(0) as usize).min(g.h);
    for c in 0..g.c {
        if c + 1 < g.c && first_row < last_row {
            // The next channel's rows into cache while this one computes:
            // a block reads only a few rows per channel, too short a stream
            // for the hardware prefetcher (the loads of x were where this
            // transform waited).
            let rows = &x_image[((c + 1) * g.h + first_row) * g.w..((c + 1) * g.h + last_row) * g.w];
            for line in rows.chunks(16) {
                _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
            }
        }
        for (row_in_block, ty) in block.clone().enumerate() {
            let base = c * tiles + row_in_block * n;
            for tx0 in (0..n).step_by(16) {
                let d: [[__m512; 4]; 4] = std::array::from_fn(|i| columns(c, 2 * ty as isize - ph + i as isize, tx0));
                // t = Bᵀ d down the four rows, for each of the four column
                // sets (as the portable code does per padded column).
                let t: [[__m512; 4]; 4] = std::array::from_fn(|col| {
                    let (a0, a1, a2, a3) = (d[0][col], d[1][col], d[2][col], d[3][col]);
                    [_mm512_sub_ps(a0, a2), _mm512_add_ps(a1, a2), _mm512_sub_ps(a2, a1), _mm512_sub_ps(a1, a3)]
                });
                let mask = lane_range(0, n as isize - tx0 as isize);
                // Row ξ of t as its four column sets.
                let t_rows: [[__m512; 4]; 4] = std::array::from_fn(|xi| [t[0][xi], t[1][xi], t[2][xi], t[3][xi]]);
                for (xi, [e, o, e1, o1]) in t_rows.into_iter().enumerate() {
                    let values =
                        [_mm512_sub_ps(e, e1), _mm512_add_ps(o, e1), _mm512_sub_ps(e1, o), _mm512_sub_ps(o, o1)];
                    for (nu, value) in values.into_iter().enumerate() {
                        // SAFETY: lanes tx0 + l < n of position ξν's tile
                        // row lie in v (asserted); the rest are masked off,
                        // so the pointer may pass the slice untouched.
                        unsafe {
                            let at = v.as_mut_ptr().wrapping_add((xi * 4 + nu) * position_stride + base + tx0);
                            _mm512_mask_storeu_ps(at, mask, value);
                        }
                    }
                }
            }
        }
    }
}

/// [`transform_input`] on the AVX2 + FMA its token proves
/// (winograd/transforms.rs dispatches): 8 tiles per chunk, each input
/// row's 16 (+ 2) columns as two pairs of loads split by winograd/avx2.rs.
#[cfg(target_arch = "x86_64")]
pub(crate) fn transform_input_avx2(
    _token: Avx2Token,
    g: &ConvGeometry,
    b: &Blocking,
    x_image: &[f32],
    block: std::ops::Range<usize>,
    v: &mut [f32],
) {
    let (tiles, n) = (b.block_tiles(), b.tiles_w);
    // The same invariants as the AVX-512 kernel's.
    assert!(x_image.len() == g.c * g.h * g.w, "winograd input: not one image");
    assert!(v.len() >= 16 * plane_floats(g.c, tiles), "winograd input: V too short");
    assert!(block.len() * n <= tiles && block.end <= b.tiles_h, "winograd input: block past the blocking");
    // SAFETY: `_token` (an Avx2Token) proves AVX2 and FMA; the asserts
    // above bound every access.
    unsafe { transform_avx2(g, n, tiles, x_image, block, v) };
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
    x_image: &[f32],
    block: std::ops::Range<usize>,
    v: &mut [f32],
) {
    use super::avx2::{LANES, load, split, store};
    use std::arch::x86_64::{__m256, _MM_HINT_T0, _mm_prefetch, _mm256_add_ps, _mm256_setzero_ps, _mm256_sub_ps};
    let (h, w) = (g.h as isize, g.w as isize);
    let (ph, pw) = (g.params.padding[0] as isize, g.params.padding[1] as isize);
    let position_stride = plane_floats(g.c, tiles);
    // Input row iy's padded columns 2·tx0 + 0..18 of a chunk as (even[tx],
    // odd[tx], even[tx + 1], odd[tx + 1]) for its 8 tiles; zeros outside
    // the image. Columns 2tx + 2, 2tx + 3 are loaded again two floats on
    // rather than shifted: as many shuffles either way, and no third load.
    let columns = |c: usize, iy: isize, tx0: usize| -> [__m256; 4] {
        if iy < 0 || iy >= h {
            return [_mm256_setzero_ps(); 4];
        }
        let row = (c * g.h + iy as usize) * g.w;
        let first = 2 * tx0 as isize - pw; // image column of padded column 2·tx0
        let load_at = |offset: isize| {
            let start = first + offset;
            // SAFETY: only lanes whose column start + l lies in [0, w) are
            // read, inside row iy < h of channel c of the image; the
            // pointer is formed with wrapping arithmetic since the other
            // lanes (the padding) are never touched.
            unsafe { load(x_image.as_ptr().wrapping_offset(row as isize + start), -start, w - start) }
        };
        let (even, odd) = split(load_at(0), load_at(8));
        let (even_next, odd_next) = split(load_at(2), load_at(10));
        [even, odd, even_next, odd_next]
    };
    // The input rows a block reads in each channel.
    let first_row = (2 * block.start as isize - ph).max(0) as usize;
    let last_row = ((2 * block.end as isize - ph + 2).max(0) as usize).min(g.h);
    for c in 0..g.c {
        if c + 1 < g.c && first_row < last_row {
            // The next channel's rows into cache while this one computes
            // (why: winograd/input.rs's AVX-512 kernel, OPTIMISATION.md
            // step 48).
            let rows = &x_image[((c + 1) * g.h + first_row) * g.w..((c + 1) * g.h + last_row) * g.w];
            for line in rows.chunks(16) {
                _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
            }
        }
        for (row_in_block, ty) in block.clone().enumerate() {
            let base = c * tiles + row_in_block * n;
            for tx0 in (0..n).step_by(LANES) {
                let d: [[__m256; 4]; 4] = std::array::from_fn(|i| columns(c, 2 * ty as isize - ph + i as isize, tx0));
                // t = Bᵀ d down the four rows, for each of the four column
                // sets (as the portable code does per padded column).
                let t: [[__m256; 4]; 4] = std::array::from_fn(|col| {
                    let (a0, a1, a2, a3) = (d[0][col], d[1][col], d[2][col], d[3][col]);
                    [_mm256_sub_ps(a0, a2), _mm256_add_ps(a1, a2), _mm256_sub_ps(a2, a1), _mm256_sub_ps(a1, a3)]
                });
                let valid = n as isize - tx0 as isize;
                // Row ξ of t as its four column sets.
                let t_rows: [[__m256; 4]; 4] = std::array::from_fn(|xi| [t[0][xi], t[1][xi], t[2][xi], t[3][xi]]);
                for (xi, [e, o, e1, o1]) in t_rows.into_iter().enumerate() {
                    let values =
                        [_mm256_sub_ps(e, e1), _mm256_add_ps(o, e1), _mm256_sub_ps(e1, o), _mm256_sub_ps(o, o1)];
                    for (nu, value) in values.into_iter().enumerate() {
                        // SAFETY: lanes tx0 + l < n of position ξν's tile
                        // row lie in v (asserted); the rest are not
                        // written, so the pointer may pass the slice.
                        unsafe {
                            let at = v.as_mut_ptr().wrapping_add((xi * 4 + nu) * position_stride + base + tx0);
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
    use crate::winograd::transforms::{RowBuffers, transform_input_portable};
    use kernels_core::{Conv2d, SplitMix64};

    #[test]
    fn matches_the_portable_transform() {
        let mut rng = SplitMix64::new(10);
        // (channels, h, w, padding, tile rows per block): odd and even
        // widths, more than one chunk of 16 tiles, padding 0 to 2, one-row
        // blocks, a tile row past the image's last row.
        for (c, h, w, pad, rows_per_block) in
            [(3, 9, 7, 1, 2), (2, 12, 40, 1, 3), (2, 8, 30, 0, 1), (1, 7, 33, 2, 4), (2, 6, 64, 1, 1), (1, 5, 35, 0, 3)]
        {
            let g = ConvGeometry::from_dims([1, c, h, w], [1, 3, 3], &Conv2d::new(1, pad)).unwrap();
            let (tiles_h, tiles_w) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
            let b = Blocking { tiles_h, tiles_w, rows_per_block: rows_per_block.min(tiles_h) };
            let x: Vec<f32> = (0..c * h * w).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
            let len = 16 * plane_floats(c, b.block_tiles());
            let mut bufs = RowBuffers::new(&b);
            for r0 in (0..tiles_h).step_by(b.rows_per_block) {
                let block = r0..(r0 + b.rows_per_block).min(tiles_h);
                let mut want = vec![f32::NAN; len];
                transform_input_portable(&g, &b, &x, block.clone(), &mut want, &mut bufs);
                // Each register kernel this CPU runs.
                for isa in Isa::supported() {
                    let mut got = vec![f32::NAN; len];
                    match Simd::new(isa) {
                        Simd::Avx512(token) => transform_input(token, &g, &b, &x, block.clone(), &mut got),
                        Simd::Avx2(token) => transform_input_avx2(token, &g, &b, &x, block.clone(), &mut got),
                        Simd::Portable => continue,
                    }
                    // Bit for bit, NaN (never written) where the portable
                    // one left NaN too.
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits() || a == b);
                    assert!(same, "{isa}: c {c} h {h} w {w} pad {pad} block {block:?}");
                }
            }
        }
    }
}
