//! Max and average pooling and their backward, as direct loops.
//!
//! - Computes y [n, c, oh, ow] over windows of x [n, c, h, w] that start at
//!   (oh·sh − ph, ow·sw − pw). Padding elements are never read: max pooling
//!   picks among real elements only (padding never wins) and ties go to the
//!   first in row-major window order; average pooling divides by the full
//!   window, padding counted (PyTorch's count_include_pad = true).
//! - Backward from dy [n, c, oh, ow] gives dx [n, c, h, w]: max routes each
//!   dy to its window's winner, re-derived from x by the same
//!   [`window_argmax`] the forward uses; avg spreads dy / window over the real
//!   elements. Overlapping windows accumulate.
//! - Checked by tests/worked_examples.rs, tests/gradcheck.rs (distinct
//!   inputs) and the tie test there; timed by the harness (POOL_SUITE).

use kernels_core::{Float, PoolGeometry, PoolKind, max_pool_takes};

/// Flat indices (within one h x w plane) of the real elements of window
/// (oy, ox), in row-major window order.
fn window_taps(g: &PoolGeometry, oy: usize, ox: usize) -> impl Iterator<Item = usize> {
    let ([wh, ww], [sh, sw], [ph, pw]) = (g.params.window, g.params.stride, g.params.padding);
    let (in_h, in_w) = (g.h, g.w);
    // Padded coordinates oy·sh + i; the real ones are ph ≤ . < ph + h.
    let rows = (oy * sh..oy * sh + wh).filter(move |&py| py >= ph && py - ph < in_h).map(move |py| py - ph);
    rows.flat_map(move |iy| {
        (ox * sw..ox * sw + ww).filter(move |&px| px >= pw && px - pw < in_w).map(move |px| iy * in_w + px - pw)
    })
}

/// Index of the window's winning real element under [`max_pool_takes`]:
/// the first largest, or the last NaN.
fn window_argmax<T: Float>(g: &PoolGeometry, x_plane: &[T], oy: usize, ox: usize) -> usize {
    let mut taps = window_taps(g, oy, ox);
    // Validation guarantees padding ≤ window / 2, so every window holds at
    // least one real element; 0 is never used as a fallback in practice.
    let mut best = taps.next().unwrap_or(0);
    for tap in taps {
        if max_pool_takes(x_plane[tap], x_plane[best]) {
            best = tap;
        }
    }
    best
}

/// y [n, c, oh, ow] from x [n, c, h, w].
pub(crate) fn forward<T: Float>(g: &PoolGeometry, x: &[T]) -> Vec<T> {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    let window_len = T::from_usize(g.window_len());
    let mut y = vec![T::ZERO; g.n * g.c * plane_out];
    for (x_plane, y_plane) in x.chunks_exact(plane_in).zip(y.chunks_exact_mut(plane_out)) {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                y_plane[oy * g.ow + ox] = match g.params.kind {
                    PoolKind::Max => x_plane[window_argmax(g, x_plane, oy, ox)],
                    PoolKind::Avg => window_taps(g, oy, ox).map(|tap| x_plane[tap]).sum::<T>() / window_len,
                };
            }
        }
    }
    y
}

/// dx [n, c, h, w] from x [n, c, h, w] and dy [n, c, oh, ow].
pub(crate) fn backward<T: Float>(g: &PoolGeometry, x: &[T], dy: &[T]) -> Vec<T> {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    let window_len = T::from_usize(g.window_len());
    let mut dx = vec![T::ZERO; x.len()];
    let planes = x.chunks_exact(plane_in).zip(dy.chunks_exact(plane_out)).zip(dx.chunks_exact_mut(plane_in));
    for ((x_plane, dy_plane), dx_plane) in planes {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let grad = dy_plane[oy * g.ow + ox];
                match g.params.kind {
                    PoolKind::Max => dx_plane[window_argmax(g, x_plane, oy, ox)] += grad,
                    PoolKind::Avg => {
                        let share = grad / window_len;
                        for tap in window_taps(g, oy, ox) {
                            dx_plane[tap] += share;
                        }
                    }
                }
            }
        }
    }
    dx
}
