//! dX of stride-2 convs by input phase ("sub-pixel"), without col2im.
//!
//! - At stride 2, input pixel (2i + p, 2j + q) only meets the taps (r, s)
//!   with r − pad_h ≡ p and s − pad_w ≡ q (mod 2), always at output pixel
//!   (i − dr, j − ds) for a fixed shift (dr, ds) per tap. So each of the
//!   four phase planes dx_pq [C, OH, OW] (when H = 2·OH and W = 2·OW) is a
//!   sum of plain GEMMs, one per tap: dx_pq += W_tapᵀ [C, K] · dY shifted
//!   by (dr, ds) [K, OH·OW]. The GEMMs accumulate straight into the phase
//!   planes; the phases are interleaved into dx once at the end.
//! - Against the unfold path (col = Wᵀ · dY, then col2im's scatter-add of
//!   C·R·S short rows per output row) this writes each shifted copy of dY
//!   once per group (three for a 3x3 pad-1 conv) instead of the whole col
//!   tile, and adds nothing element by element. Same FLOPs.
//! - Taken for stride 2 in both directions, dilation 1, H = 2·OH and W =
//!   2·OW (resnet-s2: 3x3, pad 1, 28 -> 14) on the unpacked-GEMM plan
//!   (conv/backward.rs decides).
//! - Checked against the f64 reference in tests/against_naive.rs; timed by
//!   examples/im2col_bench.rs (resnet-s2 bwd).

use kernels_core::ConvGeometry;

use crate::gemm::unpacked;
use crate::gemm::{View, mat, mat_mut};
use crate::simd::Simd;

/// Whether `g` has the geometry this path handles.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    g.params.stride == [2, 2] && g.params.dilation == [1, 1] && g.h == 2 * g.oh && g.w == 2 * g.ow
}

/// Tap (r, s)'s phase plane (2p + q) and the shift (dr, ds): it adds
/// dY[i − dr, j − ds] into dx_pq[i, j].
fn tap_phase(g: &ConvGeometry, r: usize, s: usize) -> (usize, isize, isize) {
    let a = r as isize - g.params.padding[0] as isize;
    let b = s as isize - g.params.padding[1] as isize;
    let (p, q) = (a.rem_euclid(2), b.rem_euclid(2));
    ((2 * p + q) as usize, (a - p) / 2, (b - q) / 2)
}

/// The distinct nonzero shifts of `g`'s taps, in tap order.
fn shifts(g: &ConvGeometry) -> Vec<(isize, isize)> {
    let mut out = Vec::new();
    for r in 0..g.r {
        for s in 0..g.s {
            let (_, dr, ds) = tap_phase(g, r, s);
            if (dr, ds) != (0, 0) && !out.contains(&(dr, ds)) {
                out.push((dr, ds));
            }
        }
    }
    out
}

/// Scratch floats per worker for a group of `images`: one shifted copy of
/// dY and the four phase planes.
pub(crate) fn scratch_floats(g: &ConvGeometry, images: usize) -> usize {
    let columns = images * g.oh * g.ow;
    let shifted = if shifts(g).is_empty() { 0 } else { g.k * columns };
    shifted + 4 * g.c * columns
}

/// A worker's buffers, kept across its groups.
#[derive(Default)]
pub(crate) struct Buffers {
    shifted: Vec<f32>,
    phases: Vec<f32>,
}

/// dx_group [images, C, H, W] = the input gradient of a group of images
/// from dY [K, images·OH·OW] (rows `dy_stride` apart) and Wᵀ [C·R·S, K].
/// Every element of dx_group is written. `applies(g)` must hold.
pub(crate) fn backward_dx(
    simd: Simd,
    g: &ConvGeometry,
    wt: &[f32],
    dy: &[f32],
    dy_stride: usize,
    dx_group: &mut [f32],
    bufs: &mut Buffers,
) {
    let image_in = g.c * g.h * g.w;
    let images = dx_group.len() / image_in;
    let (pixels, taps) = (g.oh * g.ow, g.r * g.s);
    let columns = images * pixels;
    bufs.phases.resize(4 * g.c * columns, 0.0);
    let plane = g.c * columns;
    let mut written = [false; 4];
    // The unshifted taps on dY itself, then each shift's taps on one
    // shifted copy (one buffer, rewritten per shift).
    for shift_by in std::iter::once((0, 0)).chain(shifts(g)) {
        if shift_by != (0, 0) {
            bufs.shifted.resize(g.k * columns, 0.0);
            shift(g, dy, dy_stride, images, shift_by, &mut bufs.shifted);
        }
        for r in 0..g.r {
            for s in 0..g.s {
                let (phase, dr, ds) = tap_phase(g, r, s);
                if (dr, ds) != shift_by {
                    continue;
                }
                let b = if shift_by == (0, 0) {
                    mat(dy, View::strided(g.k, columns, dy_stride))
                } else {
                    mat(&bufs.shifted, View::row_major(g.k, columns))
                };
                // W_tapᵀ [C, K]: rows c·R·S + tap of Wᵀ.
                let a = mat(&wt[(r * g.s + s) * g.k..], View::strided(g.c, g.k, taps * g.k));
                let c = mat_mut(&mut bufs.phases[phase * plane..][..plane], View::row_major(g.c, columns));
                unpacked::gemm(simd, a, b, c, written[phase]);
                written[phase] = true;
            }
        }
    }
    for (phase, done) in written.iter().enumerate() {
        if !done {
            bufs.phases[phase * plane..][..plane].fill(0.0);
        }
    }
    interleave(g, &bufs.phases, images, dx_group);
}

/// out [K, images·OH·OW] = dY shifted by (dr, ds): dY[k, i − dr, j − ds],
/// zero where that falls outside the image.
fn shift(g: &ConvGeometry, dy: &[f32], dy_stride: usize, images: usize, (dr, ds): (isize, isize), out: &mut [f32]) {
    let (oh, ow) = (g.oh as isize, g.ow as isize);
    let pixels = g.oh * g.ow;
    let columns = images * pixels;
    // Output columns j whose source column j − ds lies in [0, ow).
    let (j0, j1) = (ds.clamp(0, ow) as usize, (ow + ds).clamp(0, ow) as usize);
    for k in 0..g.k {
        for image in 0..images {
            let src = &dy[k * dy_stride + image * pixels..][..pixels];
            let dst = &mut out[k * columns + image * pixels..][..pixels];
            for (i, row) in dst.chunks_exact_mut(g.ow).enumerate() {
                let from = i as isize - dr;
                if from < 0 || from >= oh || j0 >= j1 {
                    row.fill(0.0);
                    continue;
                }
                let source = &src[from as usize * g.ow..][..g.ow];
                row[..j0].fill(0.0);
                row[j1..].fill(0.0);
                let start = (j0 as isize - ds) as usize;
                row[j0..j1].copy_from_slice(&source[start..start + (j1 - j0)]);
            }
        }
    }
}

/// dx [images, C, H, W] from the phase planes [4, C, images·OH·OW]:
/// dx[c, 2i + p, 2j + q] = plane (2p + q) at (c, i, j).
fn interleave(g: &ConvGeometry, phases: &[f32], images: usize, dx_group: &mut [f32]) {
    let pixels = g.oh * g.ow;
    let columns = images * pixels;
    let plane = g.c * columns;
    for (image, dx_image) in dx_group.chunks_exact_mut(g.c * g.h * g.w).enumerate() {
        for (c, dx_plane) in dx_image.chunks_exact_mut(g.h * g.w).enumerate() {
            for (row, dx_row) in dx_plane.chunks_exact_mut(g.w).enumerate() {
                let (i, p) = (row / 2, row % 2);
                let at = c * columns + image * pixels + i * g.ow;
                let even = &phases[2 * p * plane + at..][..g.ow];
                let odd = &phases[(2 * p + 1) * plane + at..][..g.ow];
                for ((pair, &e), &o) in dx_row.chunks_exact_mut(2).zip(even).zip(odd) {
                    pair[0] = e;
                    pair[1] = o;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels_core::Conv2d;

    #[test]
    fn taps_map_to_phases_and_shifts() {
        // resnet-s2: 3x3, pad 1. Tap r = 0 reads input row 2·oh − 1 = 2(oh − 1) + 1:
        // phase 1, and dx row i takes dY row i + 1 (dr = −1).
        let g = ConvGeometry::from_dims([1, 4, 28, 28], [8, 3, 3], &Conv2d::new(2, 1)).unwrap();
        assert!(applies(&g));
        assert_eq!(tap_phase(&g, 0, 0), (3, -1, -1));
        assert_eq!(tap_phase(&g, 1, 1), (0, 0, 0));
        assert_eq!(tap_phase(&g, 2, 2), (3, 0, 0));
        assert_eq!(tap_phase(&g, 1, 0), (1, 0, -1));
        assert_eq!(shifts(&g), vec![(-1, -1), (-1, 0), (0, -1)]);
        // Odd sizes or stride 1 do not apply.
        let odd = ConvGeometry::from_dims([1, 4, 27, 28], [8, 3, 3], &Conv2d::new(2, 1)).unwrap();
        assert!(!applies(&odd));
    }
}
