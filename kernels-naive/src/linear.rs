//! Fully connected layer and its backward, as direct loops.
//!
//! - Computes y [n, o] = x [n, i] · wᵀ + b, with w [o, i] as PyTorch stores it.
//! - Backward from dy [n, o]: dx [n, i] = dy · w, dw [o, i] = dyᵀ · x,
//!   db [o] = Σₙ dy.
//! - One variant: dot products over contiguous rows.
//! - Checked by tests/gradcheck.rs; timed by the harness (LINEAR_SUITE).

use kernels_core::{Float, LinearGeometry};

fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).map(|(&p, &q)| p * q).sum()
}

/// y [n, o] = x [n, i] · wᵀ [i, o] + b [o].
pub(crate) fn forward<T: Float>(g: &LinearGeometry, x: &[T], weight: &[T], bias: Option<&[T]>) -> Vec<T> {
    let mut y = vec![T::ZERO; g.n * g.o];
    for (x_row, y_row) in x.chunks_exact(g.i).zip(y.chunks_exact_mut(g.o)) {
        for (out, (y_out, w_row)) in y_row.iter_mut().zip(weight.chunks_exact(g.i)).enumerate() {
            *y_out = bias.map_or(T::ZERO, |b| b[out]) + dot(x_row, w_row);
        }
    }
    y
}

/// dx [n, i] = Σₒ dy[n, o] · w[o, i].
pub(crate) fn backward_dx<T: Float>(g: &LinearGeometry, weight: &[T], dy: &[T]) -> Vec<T> {
    let mut dx = vec![T::ZERO; g.n * g.i];
    for (dy_row, dx_row) in dy.chunks_exact(g.o).zip(dx.chunks_exact_mut(g.i)) {
        for (&grad, w_row) in dy_row.iter().zip(weight.chunks_exact(g.i)) {
            for (d, &wv) in dx_row.iter_mut().zip(w_row) {
                *d += grad * wv;
            }
        }
    }
    dx
}

/// dw [o, i] = Σₙ dy[n, o] · x[n, i].
pub(crate) fn backward_dw<T: Float>(g: &LinearGeometry, x: &[T], dy: &[T]) -> Vec<T> {
    let mut dweight = vec![T::ZERO; g.o * g.i];
    for (x_row, dy_row) in x.chunks_exact(g.i).zip(dy.chunks_exact(g.o)) {
        for (&grad, dw_row) in dy_row.iter().zip(dweight.chunks_exact_mut(g.i)) {
            for (d, &xv) in dw_row.iter_mut().zip(x_row) {
                *d += grad * xv;
            }
        }
    }
    dweight
}

/// db [o] = Σₙ dy[n, o].
pub(crate) fn backward_db<T: Float>(g: &LinearGeometry, dy: &[T]) -> Vec<T> {
    let mut db = vec![T::ZERO; g.o];
    for dy_row in dy.chunks_exact(g.o) {
        for (d, &grad) in db.iter_mut().zip(dy_row) {
            *d += grad;
        }
    }
    db
}
