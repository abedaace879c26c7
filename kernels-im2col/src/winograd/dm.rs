//! dM = A dy Aᵀ per tile (winograd/mod.rs's output-gradient transform, the
//! first step of its backward), in vector registers: 16 tiles of a tile row
//! at a time at AVX-512, 8 at AVX2 + FMA.
//!
//! - One body over crate::lanes's `Lanes` (16 or 8 lanes), run at either
//!   ISA by `Lanes::vectorize`; the AVX-512 and AVX2 copies it replaces
//!   (OPTIMISATION.md steps 54 and 59) were the same arithmetic in the
//!   same order.
//! - The same arithmetic, in the same order, as the portable
//!   `winograd_transforms::transform_output_gradient` (negation as a sign
//!   flip, as `-x` is): each of a tile row's two dy rows is two partial
//!   loads (columns past OW, where a tile overhangs, read as zero) split
//!   into even and odd columns (`Lanes::split`), then the 16 dM values per
//!   tile are formed in registers and stored once.
//! - As in winograd/input.rs, the next filter's dy rows are prefetched
//!   while this one computes: a block reads only 2·rows of each plane, too
//!   short a stream for the hardware prefetcher.
//! - Checked bit for bit against the portable loops at every ISA by the
//!   unit test below, and through winograd/mod.rs's tests against the f64
//!   reference and by central differences; timed by
//!   examples/im2col_bench.rs (resnet-3x3 bwd).

#[cfg(target_arch = "x86_64")]
use kernels_core::ConvGeometry;

#[cfg(target_arch = "x86_64")]
use super::blocking::{Blocking, plane_floats};
#[cfg(target_arch = "x86_64")]
use crate::lanes::{Kernel, Lanes, prefetch};

/// The transform of one block into `dm` [16, K, block tiles], as a
/// [`Kernel`] (winograd/transforms.rs runs it at the call's ISA).
#[cfg(target_arch = "x86_64")]
pub(crate) struct OutputGradient<'a> {
    pub(crate) g: &'a ConvGeometry,
    pub(crate) b: &'a Blocking,
    pub(crate) dy_image: &'a [f32],
    pub(crate) block: std::ops::Range<usize>,
    pub(crate) dm: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl Kernel for OutputGradient<'_> {
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) {
        let Self { g, b, dy_image, block, dm } = self;
        let (tiles, n) = (b.block_tiles(), b.tiles_w);
        // The invariants every access below relies on: one whole image's
        // dy in, all 16 positions of every filter's block out, and tile
        // rows that fit the block.
        assert!(dy_image.len() == g.k * g.oh * g.ow, "winograd dM: not one image");
        assert!(dm.len() >= 16 * plane_floats(g.k, tiles), "winograd dM: dM too short");
        assert!(block.len() * n <= tiles && block.end <= b.tiles_h, "winograd dM: block past the blocking");
        let plane = g.oh * g.ow;
        let position_stride = plane_floats(g.k, tiles);
        let first_row = 2 * block.start;
        let last_row = (2 * block.end).min(g.oh);
        for k in 0..g.k {
            if k + 1 < g.k && first_row < last_row {
                // The next filter's rows into cache while this one computes.
                prefetch(&dy_image[(k + 1) * plane + first_row * g.ow..(k + 1) * plane + last_row * g.ow]);
            }
            for (row_in_block, ty) in block.clone().enumerate() {
                let base = k * tiles + row_in_block * n;
                for tx0 in (0..n).step_by(S::N) {
                    let valid = n as isize - tx0 as isize;
                    // A·q along each row: (e, e + o, e − o, −o). Loops
                    // over arrays, not closures: see crate::lanes on
                    // inlining.
                    let mut r = [[s.zero(); 4]; 2];
                    for (a, r_a) in r.iter_mut().enumerate() {
                        // SAFETY: dy_image is one whole image (asserted)
                        // and k < K.
                        let (e, o) = unsafe { columns(s, g, dy_image, k, 2 * ty + a, tx0) };
                        *r_a = [e, s.add(e, o), s.sub(e, o), s.flip_sign(o)];
                    }
                    for (nu, (q0, q1)) in r[0].into_iter().zip(r[1]).enumerate() {
                        // Then along the column: (q0, q0 + q1, q0 − q1, −q1).
                        let values = [q0, s.add(q0, q1), s.sub(q0, q1), s.flip_sign(q1)];
                        for (xi, value) in values.into_iter().enumerate() {
                            // SAFETY: lanes tx0 + l < n of position ξν's
                            // tile row lie in dm (asserted); the rest are
                            // not written, so the pointer may pass the
                            // slice (wrapping arithmetic) untouched.
                            unsafe {
                                let at = dm.as_mut_ptr().wrapping_add((xi * 4 + nu) * position_stride + base + tx0);
                                s.store_lanes(at, 0, valid, value);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Row oy of dy plane k, columns 2·tx0 .. 2·tx0 + 2N, as (even, odd) for
/// the chunk's N tiles; zeros past the last row or column. `dy_image` is
/// one whole image.
///
/// # Safety
/// `dy_image` holds one whole image [K, OH, OW] of `g` and k < K.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn columns<S: Lanes>(s: S, g: &ConvGeometry, dy_image: &[f32], k: usize, oy: usize, tx0: usize) -> (S::V, S::V) {
    if oy >= g.oh {
        return (s.zero(), s.zero());
    }
    let (first, ow) = (2 * tx0 as isize, g.ow as isize);
    let row = dy_image.as_ptr().wrapping_add((k * g.oh + oy) * g.ow);
    // SAFETY: only lanes whose column first + l lies in [0, ow) are read,
    // inside row oy < oh of plane k; the others are never touched, so the
    // pointers may pass the slice (wrapping arithmetic).
    let (lo, hi) = unsafe {
        let second = first + S::N as isize;
        (
            s.load_lanes(row.wrapping_offset(first), -first, ow - first),
            s.load_lanes(row.wrapping_offset(second), -second, ow - second),
        )
    };
    s.split(lo, hi)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::simd::{Isa, Simd};
    use crate::winograd::transforms::{RowBuffers, transform_output_gradient, transform_output_gradient_portable};
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
                for isa in Isa::supported().into_iter().filter(|&isa| isa != Isa::Portable) {
                    let mut got = vec![f32::NAN; len];
                    transform_output_gradient(Simd::new(isa), &g, &b, &dy, block.clone(), &mut got, &mut bufs);
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{isa}: k {k} h {h} w {w} pad {pad} block {block:?}");
                }
            }
        }
    }
}
