//! Max and average pooling, forward and backward, as direct loops.
//!
//! - y [n, c, oh, ow] from x [n, c, h, w]; dx [n, c, h, w] from dy.
//! - Max: padding never wins, ties go to the first element in row-major
//!   window order (only a strictly larger value replaces the winner);
//!   backward re-derives the winner from x and routes dy there. Avg: divides
//!   by the full window, padding included; backward spreads dy / window over
//!   the real elements. Overlapping windows accumulate.
//! - Why not im2col: a pooling window is a handful of loads per output, so
//!   unfolding it would only add a full write and read of a window-times
//!   larger buffer. Each (n, c) plane is independent: rayon splits planes.
//! - Separable: per output row, the window's input rows are combined first
//!   (max or sum of whole rows, which vectorises), then each output reduces
//!   its few columns of the combined row; backward mirrors it. That turns
//!   wh·ww scalar steps per output into wh vector steps per input column
//!   plus ww per output. Windows are clipped to the real input once per row
//!   and column, so no loop tests for padding.
//! - Fast paths (OPTIMISATION.md steps 18, 21, 23) for 2x2 stride 2
//!   unpadded pooling: forward goes window by window; backward writes each
//!   dx element once instead of zeroing and scattering, max in two passes
//!   per row (x read, then dx written) to avoid 4 KiB aliasing between x
//!   and dx. Every other geometry takes the separable path.
//! - Checked against the reference in harness/tests/im2col.rs and the unit
//!   test below; timed by examples/im2col_bench.rs (POOL_SUITE); tiling
//!   cases in tests/against_naive.rs.

use std::ops::Range;

use kernels_core::{PoolGeometry, PoolKind, max_pool_takes};
use rayon::prelude::*;

/// Input indices [lo, hi) that window `o` of one axis covers, clipped to the
/// real input (padding excluded).
fn window_range(o: usize, window: usize, stride: usize, pad: usize, len: usize) -> Range<usize> {
    let start = o * stride;
    let lo = start.saturating_sub(pad);
    let hi = (start + window).saturating_sub(pad).min(len);
    lo..hi
}

/// Clipped column ranges of every output column of a plane.
fn column_ranges(g: &PoolGeometry) -> Vec<Range<usize>> {
    let p = g.params;
    (0..g.ow).map(|o| window_range(o, p.window[1], p.stride[1], p.padding[1], g.w)).collect()
}

/// The plain max-pool rule, what [`max_pool_takes`] reduces to on a plane
/// without NaN. Each max loop below is generic over its rule and runs with
/// this one unless [`has_nan`] finds a NaN in the plane: the NaN-aware rule
/// everywhere measured 2-4x slower on max pooling (its two compares do not
/// fold into one max instruction), while the NaN scan is one vectorised
/// read of the plane.
#[inline(always)]
fn strictly_larger(candidate: f32, best: f32) -> bool {
    candidate > best
}

/// Whether a plane holds a NaN (no early exit, so it vectorises).
fn has_nan(plane: &[f32]) -> bool {
    plane.iter().fold(false, |any, v| any | v.is_nan())
}

/// y [n, c, oh, ow]: per output row, the window's input rows are first
/// combined column by column (a vectorised max or sum over whole rows), then
/// each output reduces its few columns of that combined row.
pub(crate) fn forward(g: &PoolGeometry, x: &[f32]) -> Vec<f32> {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    let p = g.params;
    let mut y = vec![0.0f32; g.n * g.c * plane_out];
    let planes = y.par_chunks_mut(plane_out).zip(x.par_chunks(plane_in));
    if p.window == [2, 2] && p.stride == [2, 2] && p.padding == [0, 0] {
        planes.for_each(|(y_plane, x_plane)| {
            if p.kind == PoolKind::Max && has_nan(x_plane) {
                forward_2x2_plane(g, x_plane, y_plane, max_pool_takes)
            } else {
                forward_2x2_plane(g, x_plane, y_plane, strictly_larger)
            }
        });
        return y;
    }
    // Fallback: any other window, stride or padding.
    let cols = column_ranges(g);
    planes.for_each_init(
        || vec![0.0f32; g.w],
        |combined, (y_plane, x_plane)| {
            if p.kind == PoolKind::Max && has_nan(x_plane) {
                forward_plane(g, &cols, combined, x_plane, y_plane, max_pool_takes)
            } else {
                forward_plane(g, &cols, combined, x_plane, y_plane, strictly_larger)
            }
        },
    );
    y
}

/// One plane of the general forward; `takes` is the max rule (see
/// [`strictly_larger`]).
fn forward_plane(
    g: &PoolGeometry,
    cols: &[Range<usize>],
    combined: &mut [f32],
    x_plane: &[f32],
    y_plane: &mut [f32],
    takes: impl Fn(f32, f32) -> bool + Copy,
) {
    let p = g.params;
    let inv_window = 1.0 / g.window_len() as f32;
    for (oh, y_row) in y_plane.chunks_exact_mut(g.ow).enumerate() {
        let rows = window_range(oh, p.window[0], p.stride[0], p.padding[0], g.h);
        combined.copy_from_slice(&x_plane[rows.start * g.w..][..g.w]);
        for ih in rows.start + 1..rows.end {
            let row = &x_plane[ih * g.w..][..g.w];
            match p.kind {
                PoolKind::Max => {
                    combined.iter_mut().zip(row).for_each(|(m, &v)| *m = if takes(v, *m) { v } else { *m })
                }
                PoolKind::Avg => combined.iter_mut().zip(row).for_each(|(m, &v)| *m += v),
            }
        }
        for (out, cols) in y_row.iter_mut().zip(cols) {
            let window = &combined[cols.clone()];
            *out = match p.kind {
                PoolKind::Max => window[1..].iter().fold(window[0], |m, &v| if takes(v, m) { v } else { m }),
                PoolKind::Avg => window.iter().sum::<f32>() * inv_window,
            };
        }
    }
}

/// Forward of 2x2 stride 2 unpadded pooling (LeNet's), window by window
/// without the separable pass's clipped ranges. Max uses the same
/// first-wins comparisons as the general path (as branch-free selects);
/// avg sums in the general path's order, (a + c) + (b + d).
fn forward_2x2_plane(g: &PoolGeometry, x: &[f32], y: &mut [f32], takes: impl Fn(f32, f32) -> bool + Copy) {
    let width = 2 * g.ow;
    for (oh, y_row) in y.chunks_exact_mut(g.ow).enumerate() {
        let x_top = &x[2 * oh * g.w..][..width];
        let x_bottom = &x[(2 * oh + 1) * g.w..][..width];
        let windows = x_top.chunks_exact(2).zip(x_bottom.chunks_exact(2));
        match g.params.kind {
            PoolKind::Max => {
                for (out, (top, bottom)) in y_row.iter_mut().zip(windows) {
                    let m = select(mask(takes(top[1], top[0])), top[1], top[0]);
                    let m = select(mask(takes(bottom[0], m)), bottom[0], m);
                    *out = select(mask(takes(bottom[1], m)), bottom[1], m);
                }
            }
            PoolKind::Avg => {
                for (out, (top, bottom)) in y_row.iter_mut().zip(windows) {
                    *out = ((top[0] + bottom[0]) + (top[1] + bottom[1])) * 0.25;
                }
            }
        }
    }
}

/// Flat index (within the plane) of a window's winner in row-major order
/// under `takes` (see [`strictly_larger`]): the first largest element, or
/// the last NaN.
#[inline]
fn argmax(
    plane: &[f32],
    width: usize,
    rows: Range<usize>,
    cols: &Range<usize>,
    takes: impl Fn(f32, f32) -> bool,
) -> usize {
    let mut best = rows.start * width + cols.start;
    let mut best_value = plane[best];
    for ih in rows {
        let row = &plane[ih * width..][..cols.end];
        for iw in cols.clone() {
            if takes(row[iw], best_value) {
                best_value = row[iw];
                best = ih * width + iw;
            }
        }
    }
    best
}

/// dx [n, c, h, w] from x and dy [n, c, oh, ow]. Max: each dy goes to its
/// window's first largest element, found directly (a separable search with
/// row-index tracking measured 3x slower: see OPTIMISATION.md). Avg:
/// separable like forward, dy / window spread over a row's columns once,
/// then added to each of the window's rows.
pub(crate) fn backward(g: &PoolGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    if windows_tile(g) {
        return backward_tiled(g, x, dy);
    }
    // Fallback: every other geometry accumulates into a zeroed dx.
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    let p = g.params;
    let inv_window = 1.0 / g.window_len() as f32;
    let cols = column_ranges(g);
    let mut dx = vec![0.0f32; x.len()];
    let planes = dx.par_chunks_mut(plane_in).zip(x.par_chunks(plane_in)).zip(dy.par_chunks(plane_out));
    planes.for_each_init(
        || vec![0.0f32; g.w],
        |combined, ((dx_plane, x_plane), dy_plane)| {
            let nan = p.kind == PoolKind::Max && has_nan(x_plane);
            for (oh, dy_row) in dy_plane.chunks_exact(g.ow).enumerate() {
                let rows = window_range(oh, p.window[0], p.stride[0], p.padding[0], g.h);
                match p.kind {
                    PoolKind::Max => {
                        for (&grad, cols) in dy_row.iter().zip(&cols) {
                            let winner = if nan {
                                argmax(x_plane, g.w, rows.clone(), cols, max_pool_takes)
                            } else {
                                argmax(x_plane, g.w, rows.clone(), cols, strictly_larger)
                            };
                            dx_plane[winner] += grad;
                        }
                    }
                    PoolKind::Avg => {
                        combined.fill(0.0);
                        for (&grad, cols) in dy_row.iter().zip(&cols) {
                            let share = grad * inv_window;
                            combined[cols.clone()].iter_mut().for_each(|c| *c += share);
                        }
                        for ih in rows {
                            let row = &mut dx_plane[ih * g.w..][..g.w];
                            row.iter_mut().zip(combined.iter()).for_each(|(d, &c)| *d += c);
                        }
                    }
                }
            }
        },
    );
    dx
}

/// Whether [`backward_tiled`] takes `g`: 2x2 windows, stride 2, no padding
/// (LeNet's pools). Then windows neither overlap nor meet padding, so every
/// dx element belongs to at most one window and is written once instead of
/// accumulated. (A general tiling version, any window with stride ≥ window,
/// lost its avg speed-up to a memset call per window row and was dropped.)
pub(crate) fn windows_tile(g: &PoolGeometry) -> bool {
    let p = g.params;
    p.padding == [0, 0] && p.window == [2, 2] && p.stride == [2, 2]
}

/// Backward for [`windows_tile`] geometries: per window, the dx elements it
/// covers are assigned (dy at the winner and 0 elsewhere for max, dy / 4
/// for avg); elements no window covers (odd H or W) keep the allocation's
/// zeros.
fn backward_tiled(g: &PoolGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    let mut dx = vec![0.0f32; x.len()];
    let planes = dx.par_chunks_mut(plane_in).zip(x.par_chunks(plane_in)).zip(dy.par_chunks(plane_out));
    if g.params.kind == PoolKind::Max {
        planes.for_each_init(
            || vec![[0u32; 4]; g.ow],
            |wins, ((dx_plane, x_plane), dy_plane)| {
                if has_nan(x_plane) {
                    max_2x2_plane(g, x_plane, dy_plane, dx_plane, wins, max_pool_takes)
                } else {
                    max_2x2_plane(g, x_plane, dy_plane, dx_plane, wins, strictly_larger)
                }
            },
        );
    } else {
        planes.for_each(|((dx_plane, _), dy_plane)| avg_2x2_plane(g, dy_plane, dx_plane));
    }
    dx
}

/// All ones when `b`, else zero: a lane mask for [`select`].
#[inline(always)]
fn mask(b: bool) -> u32 {
    (b as u32).wrapping_neg()
}

/// `if` by bit masks (`then` where `m` is all ones), which the compiler
/// keeps branch-free where it turns `if` on floats into jumps.
#[inline(always)]
fn select(m: u32, then: f32, otherwise: f32) -> f32 {
    f32::from_bits((then.to_bits() & m) | (otherwise.to_bits() & !m))
}

/// Max 2x2 stride 2 without padding, branch-free: per window (a b / c d)
/// the winner is chosen by the same strict comparisons as [`argmax`] in the
/// same order, but as bit-mask selects, since on real data each comparison
/// is a coin flip that a branch predictor loses (written with `if`, the
/// compiler emitted jumps and it measured 2.5x slower than the generic
/// loop).
fn max_2x2_plane(
    g: &PoolGeometry,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    wins: &mut [[u32; 4]],
    takes: impl Fn(f32, f32) -> bool + Copy,
) {
    let width = 2 * g.ow;
    for (oh, (dy_row, dx_rows)) in dy.chunks_exact(g.ow).zip(dx.chunks_exact_mut(2 * g.w)).enumerate() {
        let x_top = &x[2 * oh * g.w..][..width];
        let x_bottom = &x[(2 * oh + 1) * g.w..][..width];
        // Pass 1 reads x only, pass 2 writes dx only: x and dx sit at the
        // same offsets within their pages, so interleaved loads and stores
        // alias in the store buffer's 4 KiB check (measured 4x slower).
        let windows = x_top.chunks_exact(2).zip(x_bottom.chunks_exact(2));
        for (win, (top, bottom)) in wins.iter_mut().zip(windows) {
            let (a, b, c, d) = (top[0], top[1], bottom[0], bottom[1]);
            let b_wins = mask(takes(b, a));
            let m = select(b_wins, b, a);
            let c_wins = mask(takes(c, m));
            let m = select(c_wins, c, m);
            let d_wins = mask(takes(d, m));
            *win = [!(b_wins | c_wins | d_wins), b_wins & !c_wins & !d_wins, c_wins & !d_wins, d_wins];
        }
        let (dx_top, dx_bottom) = dx_rows.split_at_mut(g.w);
        let outs = dx_top[..width].chunks_exact_mut(2).zip(dx_bottom[..width].chunks_exact_mut(2));
        for ((&grad, win), (out_top, out_bottom)) in dy_row.iter().zip(wins.iter()).zip(outs) {
            let grad = grad.to_bits();
            out_top[0] = f32::from_bits(grad & win[0]);
            out_top[1] = f32::from_bits(grad & win[1]);
            out_bottom[0] = f32::from_bits(grad & win[2]);
            out_bottom[1] = f32::from_bits(grad & win[3]);
        }
    }
}

/// Avg 2x2 stride 2 without padding: dy / 4 to each pair of both rows (the
/// general loop's per-window `fill` of a run-time length became a memset
/// call per window, 4-5x slower).
fn avg_2x2_plane(g: &PoolGeometry, dy: &[f32], dx: &mut [f32]) {
    let width = 2 * g.ow;
    for (dy_row, dx_rows) in dy.chunks_exact(g.ow).zip(dx.chunks_exact_mut(2 * g.w)) {
        let (dx_top, dx_bottom) = dx_rows.split_at_mut(g.w);
        let outs = dx_top[..width].chunks_exact_mut(2).zip(dx_bottom[..width].chunks_exact_mut(2));
        for (&grad, (top, bottom)) in dy_row.iter().zip(outs) {
            let share = grad * 0.25;
            top.copy_from_slice(&[share; 2]);
            bottom.copy_from_slice(&[share; 2]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels_core::Pool2d;

    #[test]
    fn max_pool_prefers_the_first_tie_and_ignores_padding() {
        // 1x1x2x3 of equal negatives: padding (0) must never win.
        let g = PoolGeometry::new(&[1, 1, 2, 3], &Pool2d::new(PoolKind::Max, 2, 1, 1)).unwrap();
        let x = [-1.0f32; 6];
        assert!(forward(&g, &x).iter().all(|&v| v == -1.0));
        // dx gets each dy at the window's first element.
        let dy = vec![1.0f32; g.oh * g.ow];
        let dx = backward(&g, &x, &dy);
        // Windows (oh, ow) start at real (oh−1, ow−1) clipped: first real
        // element is (max(oh−1,0), max(ow−1,0)).
        let mut expect = [0.0f32; 6];
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                expect[oh.saturating_sub(1) * 3 + ow.saturating_sub(1)] += 1.0;
            }
        }
        assert_eq!(dx, expect);
    }
}
