//! y = Aᵀ M A + b per tile (winograd/mod.rs's output transform, the last
//! step of its forward), in vector registers: 16 tiles of a tile row at a
//! time at AVX-512, 8 at AVX2 + FMA.
//!
//! - One body over crate::lanes's `Lanes` (16 or 8 lanes), run at either
//!   ISA by `Lanes::vectorize`; the AVX-512 and AVX2 copies it replaces
//!   (OPTIMISATION.md steps 54 and 59) were the same arithmetic in the
//!   same order.
//! - The same arithmetic, in the same order, as the portable
//!   `winograd_transforms::transform_output`: per chunk the 16 M values of
//!   each tile are loaded once (from planes laid out by `plane_floats`, so
//!   the 16 loads fall into different L1 sets), both output rows formed in
//!   registers, and each row's even and odd columns interleaved
//!   (`Lanes::interleave`) into 2N output columns, stored with a mask
//!   that drops the columns past OW where a tile overhangs.
//! - Checked bit for bit against the portable loops at every ISA by the
//!   unit test below, and through winograd/mod.rs's tests against the f64
//!   reference; timed by examples/im2col_bench.rs (resnet-3x3 fwd).

#[cfg(target_arch = "x86_64")]
use kernels_core::ConvGeometry;

#[cfg(target_arch = "x86_64")]
use super::blocking::{Blocking, plane_floats};
#[cfg(target_arch = "x86_64")]
use crate::lanes::{Kernel, Lanes};

/// The transform of one block into `y_image` [K, OH, OW] (the block's
/// output rows), as a [`Kernel`] (winograd/transforms.rs runs it at the
/// call's ISA).
#[cfg(target_arch = "x86_64")]
pub(crate) struct Output<'a> {
    pub(crate) g: &'a ConvGeometry,
    pub(crate) b: &'a Blocking,
    pub(crate) m: &'a [f32],
    pub(crate) block: std::ops::Range<usize>,
    pub(crate) bias: Option<&'a [f32]>,
    pub(crate) y_image: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl Kernel for Output<'_> {
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) {
        let Self { g, b, m, block, bias, y_image } = self;
        let (tiles, n) = (b.block_tiles(), b.tiles_w);
        // The invariants every access below relies on: all 16 positions of
        // every filter's block in, one whole image's output, a bias per
        // filter, and tile rows that fit the block.
        assert!(m.len() >= 16 * plane_floats(g.k, tiles), "winograd output: M too short");
        assert!(y_image.len() == g.k * g.oh * g.ow, "winograd output: not one image");
        assert!(bias.is_none_or(|b| b.len() >= g.k), "winograd output: bias too short");
        assert!(block.len() * n <= tiles && block.end <= b.tiles_h, "winograd output: block past the blocking");
        let ow = g.ow as isize;
        let position_stride = plane_floats(g.k, tiles);
        for k in 0..g.k {
            let bias_k = s.splat(bias.map_or(0.0, |b| b[k]));
            for (row_in_block, ty) in block.clone().enumerate() {
                let base = k * tiles + row_in_block * n;
                for tx0 in (0..n).step_by(S::N) {
                    let valid = n as isize - tx0 as isize;
                    // Loops over arrays, not closures (`array::from_fn`):
                    // see crate::lanes on inlining.
                    let mut at = [[s.zero(); 4]; 4];
                    for (xi, row) in at.iter_mut().enumerate() {
                        for (nu, value) in row.iter_mut().enumerate() {
                            // SAFETY: lanes tx0 + l < n of position ξν's
                            // tile row lie in m (asserted); the rest are not
                            // read, so the pointer may pass the slice
                            // (wrapping arithmetic).
                            *value = unsafe {
                                let p = m.as_ptr().wrapping_add((xi * 4 + nu) * position_stride + base + tx0);
                                s.load_lanes(p, 0, valid)
                            };
                        }
                    }
                    // Aᵀ M over ξ: output rows 0 and 1, per ν.
                    let mut r = [[s.zero(); 4]; 2];
                    for nu in 0..4 {
                        r[0][nu] = s.add(s.add(at[0][nu], at[1][nu]), at[2][nu]);
                        r[1][nu] = s.sub(s.sub(at[1][nu], at[2][nu]), at[3][nu]);
                    }
                    for (a, [q0, q1, q2, q3]) in r.into_iter().enumerate() {
                        let oy = 2 * ty + a;
                        if oy >= g.oh {
                            continue; // the overhang of an odd OH
                        }
                        // · A over ν, plus the bias.
                        let even = s.add(s.add(s.add(q0, q1), q2), bias_k);
                        let odd = s.add(s.sub(s.sub(q1, q2), q3), bias_k);
                        let (low, high) = s.interleave(even, odd);
                        for (half, value) in [(0, low), (S::N as isize, high)] {
                            let first = 2 * tx0 as isize + half;
                            // SAFETY: only lanes whose column first + l lies
                            // in [0, OW) are written, inside row oy < OH of
                            // plane k (asserted sizes); the rest are not
                            // touched (wrapping arithmetic).
                            unsafe {
                                let row = y_image.as_mut_ptr().wrapping_add((k * g.oh + oy) * g.ow);
                                s.store_lanes(row.wrapping_offset(first), -first, ow - first, value);
                            }
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
    use crate::winograd::transforms::{RowBuffers, transform_output, transform_output_portable};
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
                for isa in Isa::supported().into_iter().filter(|&isa| isa != Isa::Portable) {
                    let mut got = vec![f32::NAN; k * g.oh * g.ow];
                    transform_output(Simd::new(isa), &g, &b, &m, block.clone(), bias, &mut got, &mut bufs);
                    // Bit for bit; NaN (not written) outside the block's rows in both.
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{isa}: k {k} h {h} w {w} pad {pad} block {block:?}");
                }
            }
        }
    }
}
