//! dx += B dV Bᵀ per tile (winograd/mod.rs's dX transform), in AVX-512
//! registers, 16 tiles of a tile row at a time, or AVX2 ones, 8 at a time.
//!
//! - `_avx2`: the same kernel at AVX2 + FMA, 8 tiles per chunk, on
//!   winograd/avx2.rs's 8-lane helpers (no mask registers or two-source
//!   permutes there); the same arithmetic in the same order, tested bit for
//!   bit against the portable loops by the same unit test (OPTIMISATION.md
//!   step 54).
//! - The same arithmetic, in the same order, as
//!   `winograd_transforms::transform_input_gradient`, which runs it as ~30
//!   short loops over tile-row arrays per channel (tiles_w = 28 floats for
//!   resnet-3x3: seven 4-wide SSE steps each) and was ~29% of resnet-3x3's
//!   backward. Here one chunk of 16 tiles loads its 16 dV values per tile
//!   once, and the whole 4x4 patch gradient stays in registers.
//! - Patch column j of tile tx lands on padded column 2tx + j, so padded
//!   column pairs (2tx, 2tx + 1) take columns 0, 1 of tile tx plus columns
//!   2, 3 of tile tx − 1: a one-lane shift across chunks (`valignd` with the
//!   previous chunk's vector), then an interleave (`vpermt2ps`) into 32 dx
//!   columns and a masked add.
//! - Rows 2 and 3 of a tile row's patches are rows 0 and 1 of the next
//!   one's: kept pending (per chunk, in a small buffer) and added before
//!   the one write of each dx row, as the scalar version does.
//! - Checked bit for bit against the portable loops by the unit test below,
//!   and through winograd/mod.rs's tests (against the f64 reference on
//!   odd, padded and one-row-block shapes, and by central differences);
//!   timed by examples/im2col_bench.rs (resnet-3x3 bwd).

#[cfg(target_arch = "x86_64")]
use kernels_core::ConvGeometry;

#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2Token, Avx512Token};

#[cfg(target_arch = "x86_64")]
use super::blocking::{Blocking, plane_floats};
#[cfg(target_arch = "x86_64")]
use crate::lanes::lane_range;

/// Floats of the pending-rows buffer for a tile row of `tiles_w` tiles:
/// rows 2 and 3, even and odd padded columns, 16 lanes per chunk.
pub(crate) fn pending_floats(tiles_w: usize) -> usize {
    4 * 16 * chunks(tiles_w)
}

/// Chunks of 16 padded column pairs covering tiles_w + 1 of them.
fn chunks(tiles_w: usize) -> usize {
    (tiles_w + 1).div_ceil(16)
}

/// Runs the transform on the AVX-512F its token proves
/// (winograd/transforms.rs dispatches). `pending` holds at least
/// [`pending_floats`]`(b.tiles_w)` floats.
#[cfg(target_arch = "x86_64")]
pub(crate) fn transform_input_gradient(
    _token: Avx512Token,
    g: &ConvGeometry,
    b: &Blocking,
    dv: &[f32],
    block: std::ops::Range<usize>,
    dx_image: &mut [f32],
    pending: &mut [f32],
) {
    let (tiles, n) = (b.block_tiles(), b.tiles_w);
    // The invariants every access below relies on: all 16 positions of
    // every channel's block in dV, one whole image in dx, the pending
    // buffer, and tile rows that fit the block.
    assert!(dv.len() >= 16 * plane_floats(g.c, tiles), "winograd dx: dV too short");
    assert!(dx_image.len() == g.c * g.h * g.w, "winograd dx: not one image");
    assert!(pending.len() >= pending_floats(n), "winograd dx: pending buffer too short");
    assert!(block.len() * n <= tiles && block.end <= b.tiles_h, "winograd dx: block past the blocking");
    // SAFETY: `_token` (an Avx512Token) proves AVX-512F; the asserts
    // above bound every access.
    unsafe { transform_avx512(g, n, tiles, dv, block, dx_image, pending) };
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
    dv: &[f32],
    block: std::ops::Range<usize>,
    dx_image: &mut [f32],
    pending: &mut [f32],
) {
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_alignr_epi32, _mm512_castps_si512, _mm512_castsi512_ps, _mm512_loadu_ps,
        _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_permutex2var_ps, _mm512_setr_epi32, _mm512_setzero_ps,
        _mm512_storeu_ps, _mm512_sub_ps,
    };
    let (h, w) = (g.h as isize, g.w as isize);
    let (ph, pw) = (g.params.padding[0] as isize, g.params.padding[1] as isize);
    let position_stride = plane_floats(g.c, tiles);
    let chunk_count = chunks(n);
    // Interleave even and odd padded columns: lanes 0..16 and 16..32.
    let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let zero = _mm512_setzero_ps();
    let neg = |v: __m512| _mm512_sub_ps(zero, v);
    // [previous lane 15, current lanes 0..15]: tile tx − 1's value at tx.
    let shift_in = |current: __m512, previous: __m512| {
        _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(_mm512_castps_si512(current), _mm512_castps_si512(previous)))
    };
    // pending[(row, parity, chunk)]: row 2 or 3 (as 0, 1), even or odd.
    let pending_at = |row: usize, parity: usize, chunk: usize| ((row * 2 + parity) * chunk_count + chunk) * 16;
    // dx row `iy` += padded columns 2·tx0 .. 2·tx0 + 32 of one chunk, given
    // as its even and odd columns.
    let add_to_row = |dx: &mut [f32], c: usize, iy: isize, tx0: usize, even: __m512, odd: __m512| {
        if iy < 0 || iy >= h {
            return; // a padding row
        }
        let row = c * g.h * g.w + iy as usize * g.w;
        let first = 2 * tx0 as isize - pw; // dx column of the chunk's lane 0
        for (half, index) in [(0isize, low), (16, high)] {
            let start = first + half;
            let mask = lane_range(-start, w - start);
            if mask == 0 {
                continue;
            }
            // SAFETY: only lanes whose column start + l lies in [0, w) are
            // read or written, inside row iy < h of channel c of dx; the
            // pointer is formed with wrapping arithmetic since lanes before
            // column 0 (the padding) are masked off, never touched.
            unsafe {
                let at = dx.as_mut_ptr().wrapping_offset(row as isize + start);
                let value = _mm512_permutex2var_ps(even, index, odd);
                _mm512_mask_storeu_ps(at, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, at), value));
            }
        }
    };
    for c in 0..g.c {
        for (row_in_block, ty) in block.clone().enumerate() {
            let base = c * tiles + row_in_block * n;
            // Columns 2 and 3 of the previous chunk's patches, per row.
            let mut previous = [[zero; 2]; 4];
            for chunk in 0..chunk_count {
                let tx0 = chunk * 16;
                let mask = lane_range(0, n as isize - tx0 as isize);
                // SAFETY: lanes tx0 + l < n of position ξν's tile row lie in
                // dv (asserted); the rest are masked off, so the pointer
                // may pass the slice (wrapping arithmetic) untouched.
                let u: [[__m512; 4]; 4] = std::array::from_fn(|xi| {
                    // SAFETY: as stated above this array.
                    std::array::from_fn(|nu| unsafe {
                        let at = dv.as_ptr().wrapping_add((xi * 4 + nu) * position_stride + base + tx0);
                        _mm512_maskz_loadu_ps(mask, at)
                    })
                });
                // B·u along ν for each ξ, then along ξ (as the scalar code).
                let t: [[__m512; 4]; 4] = std::array::from_fn(|xi| {
                    let [u0, u1, u2, u3] = u[xi];
                    [
                        u0,
                        _mm512_add_ps(_mm512_sub_ps(u1, u2), u3),
                        _mm512_add_ps(_mm512_add_ps(neg(u0), u1), u2),
                        neg(u3),
                    ]
                });
                let patch: [[__m512; 4]; 4] = std::array::from_fn(|i| {
                    std::array::from_fn(|j| match i {
                        0 => t[0][j],
                        1 => _mm512_add_ps(_mm512_sub_ps(t[1][j], t[2][j]), t[3][j]),
                        2 => _mm512_add_ps(_mm512_add_ps(neg(t[0][j]), t[1][j]), t[2][j]),
                        _ => neg(t[3][j]),
                    })
                });
                for (i, row) in patch.iter().enumerate() {
                    let mut even = _mm512_add_ps(row[0], shift_in(row[2], previous[i][0]));
                    let mut odd = _mm512_add_ps(row[1], shift_in(row[3], previous[i][1]));
                    previous[i] = [row[2], row[3]];
                    // SAFETY: pending holds 4 x chunk_count x 16 floats
                    // (asserted), and pending_at stays below that.
                    unsafe {
                        if i < 2 {
                            if row_in_block > 0 {
                                even =
                                    _mm512_add_ps(even, _mm512_loadu_ps(pending.as_ptr().add(pending_at(i, 0, chunk))));
                                odd =
                                    _mm512_add_ps(odd, _mm512_loadu_ps(pending.as_ptr().add(pending_at(i, 1, chunk))));
                            }
                            add_to_row(dx_image, c, 2 * ty as isize - ph + i as isize, tx0, even, odd);
                        } else {
                            _mm512_storeu_ps(pending.as_mut_ptr().add(pending_at(i - 2, 0, chunk)), even);
                            _mm512_storeu_ps(pending.as_mut_ptr().add(pending_at(i - 2, 1, chunk)), odd);
                        }
                    }
                }
            }
        }
        // The block's last tile row: its rows 2 and 3.
        let last = (block.end - 1) as isize;
        for i in 0..2 {
            for chunk in 0..chunk_count {
                // SAFETY: as above.
                let (even, odd) = unsafe {
                    (
                        _mm512_loadu_ps(pending.as_ptr().add(pending_at(i, 0, chunk))),
                        _mm512_loadu_ps(pending.as_ptr().add(pending_at(i, 1, chunk))),
                    )
                };
                add_to_row(dx_image, c, 2 * last - ph + 2 + i as isize, chunk * 16, even, odd);
            }
        }
    }
}

/// [`transform_input_gradient`] on the AVX2 + FMA its token proves
/// (winograd/transforms.rs dispatches): 8 tiles per chunk, the pending
/// rows kept per 8-lane chunk in the same buffer (8-lane chunks of tiles_w
/// + 1 pairs need no more floats than 16-lane ones).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)] // the token, the block and its operands, as the AVX-512 kernel
pub(crate) fn transform_input_gradient_avx2(
    _token: Avx2Token,
    g: &ConvGeometry,
    b: &Blocking,
    dv: &[f32],
    block: std::ops::Range<usize>,
    dx_image: &mut [f32],
    pending: &mut [f32],
) {
    let (tiles, n) = (b.block_tiles(), b.tiles_w);
    // The same invariants as the AVX-512 kernel's, with 8-lane chunks.
    assert!(dv.len() >= 16 * plane_floats(g.c, tiles), "winograd dx: dV too short");
    assert!(dx_image.len() == g.c * g.h * g.w, "winograd dx: not one image");
    assert!(pending.len() >= 4 * 8 * (n + 1).div_ceil(8), "winograd dx: pending buffer too short");
    assert!(block.len() * n <= tiles && block.end <= b.tiles_h, "winograd dx: block past the blocking");
    // SAFETY: `_token` (an Avx2Token) proves AVX2 and FMA; the asserts
    // above bound every access.
    unsafe { transform_avx2(g, n, tiles, dv, block, dx_image, pending) };
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
    dv: &[f32],
    block: std::ops::Range<usize>,
    dx_image: &mut [f32],
    pending: &mut [f32],
) {
    use super::avx2::{LANES, interleave, load, shift_in, store};
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps, _mm256_sub_ps,
    };
    let (h, w) = (g.h as isize, g.w as isize);
    let (ph, pw) = (g.params.padding[0] as isize, g.params.padding[1] as isize);
    let position_stride = plane_floats(g.c, tiles);
    let chunk_count = (n + 1).div_ceil(LANES);
    let zero = _mm256_setzero_ps();
    let neg = |v: __m256| _mm256_sub_ps(zero, v);
    // pending[(row, parity, chunk)]: row 2 or 3 (as 0, 1), even or odd.
    let pending_at = |row: usize, parity: usize, chunk: usize| ((row * 2 + parity) * chunk_count + chunk) * LANES;
    // dx row `iy` += padded columns 2·tx0 .. 2·tx0 + 16 of one chunk, given
    // as its even and odd columns.
    let add_to_row = |dx: &mut [f32], c: usize, iy: isize, tx0: usize, even: __m256, odd: __m256| {
        if iy < 0 || iy >= h {
            return; // a padding row
        }
        let row = c * g.h * g.w + iy as usize * g.w;
        let first = 2 * tx0 as isize - pw; // dx column of the chunk's lane 0
        let (low, high) = interleave(even, odd);
        for (half, value) in [(0isize, low), (LANES as isize, high)] {
            let start = first + half;
            // SAFETY: only lanes whose column start + l lies in [0, w) are
            // read or written, inside row iy < h of channel c of dx; the
            // pointer is formed with wrapping arithmetic since the other
            // lanes (the padding) are never touched.
            unsafe {
                let at = dx.as_mut_ptr().wrapping_offset(row as isize + start);
                store(at, -start, w - start, _mm256_add_ps(load(at, -start, w - start), value));
            }
        }
    };
    for c in 0..g.c {
        for (row_in_block, ty) in block.clone().enumerate() {
            let base = c * tiles + row_in_block * n;
            // Columns 2 and 3 of the previous chunk's patches, per row.
            let mut previous = [[zero; 2]; 4];
            for chunk in 0..chunk_count {
                let tx0 = chunk * LANES;
                let valid = n as isize - tx0 as isize;
                let u: [[__m256; 4]; 4] = std::array::from_fn(|xi| {
                    std::array::from_fn(|nu| {
                        // SAFETY: lanes tx0 + l < n of position ξν's tile
                        // row lie in dv (asserted); the rest are not read,
                        // so the pointer may pass the slice (wrapping).
                        unsafe {
                            load(dv.as_ptr().wrapping_add((xi * 4 + nu) * position_stride + base + tx0), 0, valid)
                        }
                    })
                });
                // B·u along ν for each ξ, then along ξ (as the scalar code).
                let t: [[__m256; 4]; 4] = std::array::from_fn(|xi| {
                    let [u0, u1, u2, u3] = u[xi];
                    [
                        u0,
                        _mm256_add_ps(_mm256_sub_ps(u1, u2), u3),
                        _mm256_add_ps(_mm256_add_ps(neg(u0), u1), u2),
                        neg(u3),
                    ]
                });
                let patch: [[__m256; 4]; 4] = std::array::from_fn(|i| {
                    std::array::from_fn(|j| match i {
                        0 => t[0][j],
                        1 => _mm256_add_ps(_mm256_sub_ps(t[1][j], t[2][j]), t[3][j]),
                        2 => _mm256_add_ps(_mm256_add_ps(neg(t[0][j]), t[1][j]), t[2][j]),
                        _ => neg(t[3][j]),
                    })
                });
                for (i, row) in patch.iter().enumerate() {
                    let mut even = _mm256_add_ps(row[0], shift_in(row[2], previous[i][0]));
                    let mut odd = _mm256_add_ps(row[1], shift_in(row[3], previous[i][1]));
                    previous[i] = [row[2], row[3]];
                    // SAFETY: pending holds 4 x chunk_count x 8 floats
                    // (asserted), and pending_at stays below that.
                    unsafe {
                        if i < 2 {
                            if row_in_block > 0 {
                                even =
                                    _mm256_add_ps(even, _mm256_loadu_ps(pending.as_ptr().add(pending_at(i, 0, chunk))));
                                odd =
                                    _mm256_add_ps(odd, _mm256_loadu_ps(pending.as_ptr().add(pending_at(i, 1, chunk))));
                            }
                            add_to_row(dx_image, c, 2 * ty as isize - ph + i as isize, tx0, even, odd);
                        } else {
                            _mm256_storeu_ps(pending.as_mut_ptr().add(pending_at(i - 2, 0, chunk)), even);
                            _mm256_storeu_ps(pending.as_mut_ptr().add(pending_at(i - 2, 1, chunk)), odd);
                        }
                    }
                }
            }
        }
        // The block's last tile row: its rows 2 and 3.
        let last = (block.end - 1) as isize;
        for i in 0..2 {
            for chunk in 0..chunk_count {
                // SAFETY: as above.
                let (even, odd) = unsafe {
                    (
                        _mm256_loadu_ps(pending.as_ptr().add(pending_at(i, 0, chunk))),
                        _mm256_loadu_ps(pending.as_ptr().add(pending_at(i, 1, chunk))),
                    )
                };
                add_to_row(dx_image, c, 2 * last - ph + 2 + i as isize, chunk * LANES, even, odd);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::simd::{Isa, Simd};
    use crate::winograd::transforms::{RowBuffers, transform_input_gradient_portable};
    use kernels_core::{Conv2d, SplitMix64};

    #[test]
    fn matches_the_portable_transform() {
        let mut rng = SplitMix64::new(9);
        // (input, padding, tile rows per block): odd and even widths, more
        // than one chunk of 16 tiles, padding 0 to 2, one-row blocks.
        for (c, h, w, pad, rows_per_block) in
            [(3, 9, 7, 1, 2), (2, 12, 40, 1, 3), (2, 8, 30, 0, 1), (1, 7, 33, 2, 4), (2, 6, 64, 1, 1)]
        {
            let g = ConvGeometry::from_dims([1, c, h, w], [1, 3, 3], &Conv2d::new(1, pad)).unwrap();
            let (tiles_h, tiles_w) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
            let b = Blocking { tiles_h, tiles_w, rows_per_block: rows_per_block.min(tiles_h) };
            let tiles = b.block_tiles();
            let dv: Vec<f32> = (0..16 * plane_floats(c, tiles)).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
            let dx0: Vec<f32> = (0..c * h * w).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
            let mut bufs = RowBuffers::new(&b);
            for r0 in (0..tiles_h).step_by(b.rows_per_block) {
                let block = r0..(r0 + b.rows_per_block).min(tiles_h);
                let mut want = dx0.clone();
                transform_input_gradient_portable(&g, &b, &dv, block.clone(), &mut want, &mut bufs);
                // Each register kernel this CPU runs.
                for isa in Isa::supported() {
                    let mut got = dx0.clone();
                    let mut pending = vec![0.0f32; pending_floats(tiles_w)];
                    let (bl, p) = (block.clone(), &mut pending);
                    match Simd::new(isa) {
                        Simd::Avx512(token) => transform_input_gradient(token, &g, &b, &dv, bl, &mut got, p),
                        Simd::Avx2(token) => transform_input_gradient_avx2(token, &g, &b, &dv, bl, &mut got, p),
                        Simd::Portable => continue,
                    }
                    assert_eq!(got, want, "{isa}: c {c} h {h} w {w} pad {pad} block {block:?}");
                }
            }
        }
    }
}
