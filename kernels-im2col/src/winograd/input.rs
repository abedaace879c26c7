//! V = Bᵀ d B per tile (winograd/mod.rs's input transform), in vector
//! registers: 16 tiles of a tile row at a time at AVX-512, 8 at AVX2 + FMA.
//!
//! - One body over crate::lanes's `Lanes` (16 or 8 lanes), run at either
//!   ISA by `Lanes::vectorize`; the AVX-512 and AVX2 copies it replaces
//!   (OPTIMISATION.md steps 54 and 59) were the same arithmetic in the
//!   same order.
//! - The same arithmetic, in the same order, as the portable
//!   `winograd_transforms::transform_input`, which splits each of a tile
//!   row's four input rows into even and odd columns in scalar pairs, then
//!   runs ~20 short loops over tile-row arrays per channel; that split and
//!   transform were ~45% of resnet-3x3's forward.
//! - Tile tx's 4x4 patch covers padded columns 2tx .. 2tx + 3. For a chunk
//!   of N tiles, 2N (+ 2) consecutive input columns per row are loaded with
//!   the lanes in the padding or past the image read as zero, and split
//!   into the four column windows (`Lanes::windows`: three loads and
//!   two-source permutes at AVX-512, four loads and in-lane shuffles at
//!   AVX2).
//! - Checked bit for bit against the portable loops at every ISA by the
//!   unit test below (odd widths, padding 0 to 2, several chunks, one-row
//!   blocks), and through winograd/mod.rs's tests against the f64
//!   reference; timed by examples/im2col_bench.rs (resnet-3x3).

#[cfg(target_arch = "x86_64")]
use kernels_core::ConvGeometry;

#[cfg(target_arch = "x86_64")]
use super::blocking::{Blocking, plane_floats};
#[cfg(target_arch = "x86_64")]
use crate::lanes::{Kernel, Lanes, prefetch};

/// The transform of one block into `v` [16, C, block tiles], as a
/// [`Kernel`] (winograd/transforms.rs runs it at the call's ISA).
#[cfg(target_arch = "x86_64")]
pub(crate) struct Input<'a> {
    pub(crate) g: &'a ConvGeometry,
    pub(crate) b: &'a Blocking,
    pub(crate) x_image: &'a [f32],
    pub(crate) block: std::ops::Range<usize>,
    pub(crate) v: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl Kernel for Input<'_> {
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) {
        let Self { g, b, x_image, block, v } = self;
        let (tiles, n) = (b.block_tiles(), b.tiles_w);
        // The invariants every access below relies on: one whole image in,
        // all 16 positions of every channel's block out, and tile rows that
        // fit the block.
        assert!(x_image.len() == g.c * g.h * g.w, "winograd input: not one image");
        assert!(v.len() >= 16 * plane_floats(g.c, tiles), "winograd input: V too short");
        assert!(block.len() * n <= tiles && block.end <= b.tiles_h, "winograd input: block past the blocking");
        let ph = g.params.padding[0] as isize;
        let position_stride = plane_floats(g.c, tiles);
        // The input rows a block reads in each channel.
        let first_row = (2 * block.start as isize - ph).max(0) as usize;
        let last_row = ((2 * block.end as isize - ph + 2).max(0) as usize).min(g.h);
        for c in 0..g.c {
            if c + 1 < g.c && first_row < last_row {
                // The next channel's rows into cache while this one
                // computes (the loads of x were where this transform
                // waited, OPTIMISATION.md step 48).
                prefetch(&x_image[((c + 1) * g.h + first_row) * g.w..((c + 1) * g.h + last_row) * g.w]);
            }
            for (row_in_block, ty) in block.clone().enumerate() {
                let base = c * tiles + row_in_block * n;
                for tx0 in (0..n).step_by(S::N) {
                    // Loops over arrays, not closures (`array::from_fn`):
                    // see crate::lanes on inlining.
                    let mut d = [[s.zero(); 4]; 4];
                    for (i, row) in d.iter_mut().enumerate() {
                        // SAFETY: x_image is one whole image (asserted) and
                        // c < C.
                        *row = unsafe { columns(s, g, x_image, c, 2 * ty as isize - ph + i as isize, tx0) };
                    }
                    // t = Bᵀ d down the four rows, for each of the four
                    // column sets (as the portable code does per padded
                    // column); t[ξ] is row ξ of t as its column sets.
                    let mut t = [[s.zero(); 4]; 4];
                    for col in 0..4 {
                        let (a0, a1, a2, a3) = (d[0][col], d[1][col], d[2][col], d[3][col]);
                        t[0][col] = s.sub(a0, a2);
                        t[1][col] = s.add(a1, a2);
                        t[2][col] = s.sub(a2, a1);
                        t[3][col] = s.sub(a1, a3);
                    }
                    let valid = n as isize - tx0 as isize;
                    for (xi, &[e, o, e1, o1]) in t.iter().enumerate() {
                        let values = [s.sub(e, e1), s.add(o, e1), s.sub(e1, o), s.sub(o, o1)];
                        for (nu, value) in values.into_iter().enumerate() {
                            // SAFETY: lanes tx0 + l < n of position ξν's
                            // tile row lie in v (asserted); the rest are
                            // not written, so the pointer may pass the
                            // slice (wrapping arithmetic) untouched.
                            unsafe {
                                let at = v.as_mut_ptr().wrapping_add((xi * 4 + nu) * position_stride + base + tx0);
                                s.store_lanes(at, 0, valid, value);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Input row iy of channel c, padded columns 2·tx0 + 0..2N + 2 of a chunk,
/// as (even[tx], odd[tx], even[tx + 1], odd[tx + 1]) for its N tiles; zeros
/// outside the image.
///
/// # Safety
/// `x_image` holds one whole image [C, H, W] of `g` and c < C.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn columns<S: Lanes>(s: S, g: &ConvGeometry, x_image: &[f32], c: usize, iy: isize, tx0: usize) -> [S::V; 4] {
    if iy < 0 || iy >= g.h as isize {
        return [s.zero(); 4];
    }
    let row = (c * g.h + iy as usize) * g.w;
    let start = 2 * tx0 as isize - g.params.padding[1] as isize; // image column of padded column 2·tx0
    // SAFETY: only lanes whose column start + l lies in [0, w) are read,
    // inside row iy < h of channel c of the image (the contract); the
    // pointer is formed with wrapping arithmetic since the other lanes (the
    // padding) are never touched.
    unsafe { s.windows(x_image.as_ptr().wrapping_add(row).wrapping_offset(start), -start, g.w as isize - start) }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::simd::{Isa, Simd};
    use crate::winograd::transforms::{RowBuffers, transform_input, transform_input_portable};
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
                for isa in Isa::supported().into_iter().filter(|&isa| isa != Isa::Portable) {
                    let mut got = vec![f32::NAN; len];
                    transform_input(Simd::new(isa), &g, &b, &x, block.clone(), &mut got, &mut bufs);
                    // Bit for bit, NaN (never written) where the portable
                    // one left NaN too.
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits() || a == b);
                    assert!(same, "{isa}: c {c} h {h} w {w} pad {pad} block {block:?}");
                }
            }
        }
    }
}
