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
//! - Checked against the reference in harness/tests/im2col.rs and the unit
//!   test below; timed by examples/bench.rs (POOL_SUITE).

use std::ops::Range;

use kernels_core::{PoolGeometry, PoolKind};
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

/// y [n, c, oh, ow]: per output row, the window's input rows are first
/// combined column by column (a vectorised max or sum over whole rows), then
/// each output reduces its few columns of that combined row.
pub(crate) fn forward(g: &PoolGeometry, x: &[f32]) -> Vec<f32> {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    let p = g.params;
    let inv_window = 1.0 / g.window_len() as f32;
    let cols = column_ranges(g);
    let mut y = vec![0.0f32; g.n * g.c * plane_out];
    let planes = y.par_chunks_mut(plane_out).zip(x.par_chunks(plane_in));
    planes.for_each_init(
        || vec![0.0f32; g.w],
        |combined, (y_plane, x_plane)| {
            for (oh, y_row) in y_plane.chunks_exact_mut(g.ow).enumerate() {
                let rows = window_range(oh, p.window[0], p.stride[0], p.padding[0], g.h);
                combined.copy_from_slice(&x_plane[rows.start * g.w..][..g.w]);
                for ih in rows.start + 1..rows.end {
                    let row = &x_plane[ih * g.w..][..g.w];
                    match p.kind {
                        PoolKind::Max => {
                            combined.iter_mut().zip(row).for_each(|(m, &v)| *m = if v > *m { v } else { *m })
                        }
                        PoolKind::Avg => combined.iter_mut().zip(row).for_each(|(m, &v)| *m += v),
                    }
                }
                for (out, cols) in y_row.iter_mut().zip(&cols) {
                    let window = &combined[cols.clone()];
                    *out = match p.kind {
                        PoolKind::Max => window[1..].iter().fold(window[0], |m, &v| if v > m { v } else { m }),
                        PoolKind::Avg => window.iter().sum::<f32>() * inv_window,
                    };
                }
            }
        },
    );
    y
}

/// Flat index (within the plane) of the first largest element of a window
/// in row-major order (only a strictly larger value replaces the winner).
#[inline]
fn argmax(plane: &[f32], width: usize, rows: Range<usize>, cols: &Range<usize>) -> usize {
    let mut best = rows.start * width + cols.start;
    let mut best_value = plane[best];
    for ih in rows {
        let row = &plane[ih * width..][..cols.end];
        for iw in cols.clone() {
            if row[iw] > best_value {
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
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    let p = g.params;
    let inv_window = 1.0 / g.window_len() as f32;
    let cols = column_ranges(g);
    let mut dx = vec![0.0f32; x.len()];
    let planes = dx.par_chunks_mut(plane_in).zip(x.par_chunks(plane_in)).zip(dy.par_chunks(plane_out));
    planes.for_each_init(
        || vec![0.0f32; g.w],
        |combined, ((dx_plane, x_plane), dy_plane)| {
            for (oh, dy_row) in dy_plane.chunks_exact(g.ow).enumerate() {
                let rows = window_range(oh, p.window[0], p.stride[0], p.padding[0], g.h);
                match p.kind {
                    PoolKind::Max => {
                        for (&grad, cols) in dy_row.iter().zip(&cols) {
                            dx_plane[argmax(x_plane, g.w, rows.clone(), cols)] += grad;
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
