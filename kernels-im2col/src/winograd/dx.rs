//! dx += B dV Bᵀ per tile (winograd/mod.rs's dX transform), in vector
//! registers: 16 tiles of a tile row at a time at AVX-512, 8 at AVX2 + FMA.
//!
//! - One body over crate::lanes's `Lanes` (16 or 8 lanes), run at either
//!   ISA by `Lanes::vectorize`; the AVX-512 and AVX2 copies it replaces
//!   (OPTIMISATION.md steps 54 and 59) were the same arithmetic in the
//!   same order.
//! - The same arithmetic, in the same order, as
//!   `winograd_transforms::transform_input_gradient`, which runs it as ~30
//!   short loops over tile-row arrays per channel (tiles_w = 28 floats for
//!   resnet-3x3: seven 4-wide SSE steps each) and was ~29% of resnet-3x3's
//!   backward. Here one chunk of N tiles loads its 16 dV values per tile
//!   once, and the whole 4x4 patch gradient stays in registers.
//! - Patch column j of tile tx lands on padded column 2tx + j, so padded
//!   column pairs (2tx, 2tx + 1) take columns 0, 1 of tile tx plus columns
//!   2, 3 of tile tx − 1: a one-lane shift across chunks
//!   (`Lanes::shift_in`, with the previous chunk's vector), then an
//!   interleave into 2N dx columns and a partial add.
//! - Rows 2 and 3 of a tile row's patches are rows 0 and 1 of the next
//!   one's: kept pending (per chunk, in a small buffer) and added before
//!   the one write of each dx row, as the scalar version does.
//! - Checked bit for bit against the portable loops at every ISA by the
//!   unit test below, and through winograd/mod.rs's tests (against the f64
//!   reference on odd, padded and one-row-block shapes, and by central
//!   differences); timed by examples/im2col_bench.rs (resnet-3x3 bwd).

#[cfg(target_arch = "x86_64")]
use kernels_core::ConvGeometry;

#[cfg(target_arch = "x86_64")]
use super::blocking::{Blocking, plane_floats};
#[cfg(target_arch = "x86_64")]
use crate::lanes::{Kernel, Lanes};

/// Floats of the pending-rows buffer for a tile row of `tiles_w` tiles:
/// rows 2 and 3, even and odd padded columns, 16 lanes per chunk (8-lane
/// chunks of the same tiles_w + 1 pairs fit in as many).
pub(crate) fn pending_floats(tiles_w: usize) -> usize {
    4 * 16 * (tiles_w + 1).div_ceil(16)
}

/// The transform of one block, added into `dx_image` [C, H, W], as a
/// [`Kernel`] (winograd/transforms.rs runs it at the call's ISA);
/// `pending` holds at least [`pending_floats`]`(b.tiles_w)` floats.
#[cfg(target_arch = "x86_64")]
pub(crate) struct InputGradient<'a> {
    pub(crate) g: &'a ConvGeometry,
    pub(crate) b: &'a Blocking,
    pub(crate) dv: &'a [f32],
    pub(crate) block: std::ops::Range<usize>,
    pub(crate) dx_image: &'a mut [f32],
    pub(crate) pending: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl Kernel for InputGradient<'_> {
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) {
        let Self { g, b, dv, block, dx_image, pending } = self;
        let (tiles, n) = (b.block_tiles(), b.tiles_w);
        // Chunks of N padded column pairs covering tiles_w + 1 of them.
        let chunk_count = (n + 1).div_ceil(S::N);
        // The invariants every access below relies on: all 16 positions of
        // every channel's block in dV, one whole image in dx, the pending
        // buffer, and tile rows that fit the block.
        assert!(dv.len() >= 16 * plane_floats(g.c, tiles), "winograd dx: dV too short");
        assert!(dx_image.len() == g.c * g.h * g.w, "winograd dx: not one image");
        assert!(pending.len() >= 4 * S::N * chunk_count, "winograd dx: pending buffer too short");
        assert!(block.len() * n <= tiles && block.end <= b.tiles_h, "winograd dx: block past the blocking");
        let ph = g.params.padding[0] as isize;
        let position_stride = plane_floats(g.c, tiles);
        let zero = s.zero();
        // pending[(row, parity, chunk)]: row 2 or 3 (as 0, 1), even or odd.
        let pending_at = |row: usize, parity: usize, chunk: usize| ((row * 2 + parity) * chunk_count + chunk) * S::N;
        for c in 0..g.c {
            for (row_in_block, ty) in block.clone().enumerate() {
                let base = c * tiles + row_in_block * n;
                // Columns 2 and 3 of the previous chunk's patches, per row.
                let mut previous = [[zero; 2]; 4];
                for chunk in 0..chunk_count {
                    let tx0 = chunk * S::N;
                    let valid = n as isize - tx0 as isize;
                    // Loops over arrays, not closures (`array::from_fn`):
                    // see crate::lanes on inlining.
                    let mut u = [[zero; 4]; 4];
                    for (xi, row) in u.iter_mut().enumerate() {
                        for (nu, value) in row.iter_mut().enumerate() {
                            // SAFETY: lanes tx0 + l < n of position ξν's
                            // tile row lie in dv (asserted); the rest are
                            // not read, so the pointer may pass the slice
                            // (wrapping arithmetic).
                            *value = unsafe {
                                let at = dv.as_ptr().wrapping_add((xi * 4 + nu) * position_stride + base + tx0);
                                s.load_lanes(at, 0, valid)
                            };
                        }
                    }
                    // B·u along ν for each ξ, then along ξ (as the scalar
                    // code; −x as 0 − x).
                    let mut t = [[zero; 4]; 4];
                    for (t_xi, &[u0, u1, u2, u3]) in t.iter_mut().zip(&u) {
                        *t_xi = [u0, s.add(s.sub(u1, u2), u3), s.add(s.add(s.sub(zero, u0), u1), u2), s.sub(zero, u3)];
                    }
                    let mut patch = [[zero; 4]; 4];
                    for j in 0..4 {
                        patch[0][j] = t[0][j];
                        patch[1][j] = s.add(s.sub(t[1][j], t[2][j]), t[3][j]);
                        patch[2][j] = s.add(s.add(s.sub(zero, t[0][j]), t[1][j]), t[2][j]);
                        patch[3][j] = s.sub(zero, t[3][j]);
                    }
                    for (i, row) in patch.iter().enumerate() {
                        let mut even = s.add(row[0], s.shift_in(row[2], previous[i][0]));
                        let mut odd = s.add(row[1], s.shift_in(row[3], previous[i][1]));
                        previous[i] = [row[2], row[3]];
                        // SAFETY: pending holds 4 x chunk_count x N floats
                        // (asserted), and pending_at stays below that;
                        // dx_image is one whole image (asserted) and c < C,
                        // add_to_row's contract.
                        unsafe {
                            if i < 2 {
                                if row_in_block > 0 {
                                    even = s.add(even, s.load(pending.as_ptr().add(pending_at(i, 0, chunk))));
                                    odd = s.add(odd, s.load(pending.as_ptr().add(pending_at(i, 1, chunk))));
                                }
                                add_to_row(s, g, dx_image, c, 2 * ty as isize - ph + i as isize, tx0, even, odd);
                            } else {
                                s.store(pending.as_mut_ptr().add(pending_at(i - 2, 0, chunk)), even);
                                s.store(pending.as_mut_ptr().add(pending_at(i - 2, 1, chunk)), odd);
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
                            s.load(pending.as_ptr().add(pending_at(i, 0, chunk))),
                            s.load(pending.as_ptr().add(pending_at(i, 1, chunk))),
                        )
                    };
                    // SAFETY: dx_image is one whole image (asserted) and
                    // c < C.
                    unsafe { add_to_row(s, g, dx_image, c, 2 * last - ph + 2 + i as isize, chunk * S::N, even, odd) };
                }
            }
        }
    }
}

/// dx row `iy` of channel c += padded columns 2·tx0 .. 2·tx0 + 2N of one
/// chunk, given as its even and odd columns (nothing for a padding row).
///
/// # Safety
/// `dx` holds one whole image [C, H, W] of `g` and c < C.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the row's place and its two halves; a struct would only rename them
unsafe fn add_to_row<S: Lanes>(
    s: S,
    g: &ConvGeometry,
    dx: &mut [f32],
    c: usize,
    iy: isize,
    tx0: usize,
    even: S::V,
    odd: S::V,
) {
    let (h, w) = (g.h as isize, g.w as isize);
    if iy < 0 || iy >= h {
        return;
    }
    let row = dx.as_mut_ptr().wrapping_add(c * g.h * g.w + iy as usize * g.w);
    let first = 2 * tx0 as isize - g.params.padding[1] as isize; // dx column of the chunk's lane 0
    let (low, high) = s.interleave(even, odd);
    for (half, value) in [(0, low), (S::N as isize, high)] {
        let start = first + half;
        // SAFETY: only lanes whose column start + l lies in [0, w) are read
        // or written, inside row iy < h of channel c of dx; the pointer is
        // formed with wrapping arithmetic since the other lanes (the
        // padding) are never touched.
        unsafe {
            let at = row.wrapping_offset(start);
            s.store_lanes(at, -start, w - start, s.add(s.load_lanes(at, -start, w - start), value));
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::simd::{Isa, Simd};
    use crate::winograd::transforms::{RowBuffers, transform_input_gradient, transform_input_gradient_portable};
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
                for isa in Isa::supported().into_iter().filter(|&isa| isa != Isa::Portable) {
                    let mut got = dx0.clone();
                    transform_input_gradient(Simd::new(isa), &g, &b, &dv, block.clone(), &mut got, &mut bufs);
                    assert_eq!(got, want, "{isa}: c {c} h {h} w {w} pad {pad} block {block:?}");
                }
            }
        }
    }
}
