//! Batch normalization over NCHW (per channel) and [N, F] (per feature), as
//! in PyTorch; the formulas are in `kernels_core::norm`. Element (n, c, s)
//! of x sits at (n·C + c)·S + s, with S = H·W (1 for [N, F]). Each channel's
//! statistics come from two passes (mean, then the squared deviations), the
//! textbook form and the one least prone to cancellation.
//!
//! Checked by tests/gradcheck.rs (dx, dγ, dβ of training mode by central
//! differences) and tests/worked_examples.rs (running statistics).

use kernels_core::{BatchNormGeometry, Float};

/// Visits the values of channel `c`, in (n, s) order.
fn channel<'a, T: Copy>(g: &BatchNormGeometry, x: &'a [T], c: usize) -> impl Iterator<Item = (usize, T)> + 'a {
    let (n, cs, s) = (g.n, g.c * g.spatial, g.spatial);
    (0..n).flat_map(move |n| (0..s).map(move |i| n * cs + c * s + i)).map(move |at| (at, x[at]))
}

/// Training mode: y, the batch mean and 1/√(σ² + ε) per channel; the
/// running statistics are updated in place.
pub(crate) fn train<T: Float>(
    g: &BatchNormGeometry,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    running_mean: &mut [T],
    running_var: &mut [T],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let m = T::from_usize(g.per_channel());
    let eps = T::from_f64(g.params.eps);
    let momentum = T::from_f64(g.params.momentum);
    let keep = T::from_f64(1.0 - g.params.momentum);
    let mut y = vec![T::ZERO; x.len()];
    let mut means = vec![T::ZERO; g.c];
    let mut inv_stds = vec![T::ZERO; g.c];
    for c in 0..g.c {
        let mean = channel(g, x, c).fold(T::ZERO, |acc, (_, v)| acc + v) / m;
        let squares = channel(g, x, c).fold(T::ZERO, |acc, (_, v)| acc + (v - mean) * (v - mean));
        let inv_std = T::ONE / (squares / m + eps).sqrt();
        for (at, v) in channel(g, x, c) {
            y[at] = gamma[c] * ((v - mean) * inv_std) + beta[c];
        }
        running_mean[c] = keep * running_mean[c] + momentum * mean;
        running_var[c] = keep * running_var[c] + momentum * (squares / (m - T::ONE));
        means[c] = mean;
        inv_stds[c] = inv_std;
    }
    (y, means, inv_stds)
}

/// Evaluation mode: the running statistics normalise.
pub(crate) fn eval<T: Float>(
    g: &BatchNormGeometry,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    running_mean: &[T],
    running_var: &[T],
) -> Vec<T> {
    let eps = T::from_f64(g.params.eps);
    let mut y = vec![T::ZERO; x.len()];
    for c in 0..g.c {
        let inv_std = T::ONE / (running_var[c] + eps).sqrt();
        for (at, v) in channel(g, x, c) {
            y[at] = gamma[c] * ((v - running_mean[c]) * inv_std) + beta[c];
        }
    }
    y
}

/// Backward of training mode: (dx, dγ, dβ).
pub(crate) fn backward<T: Float>(
    g: &BatchNormGeometry,
    x: &[T],
    gamma: &[T],
    mean: &[T],
    inv_std: &[T],
    dy: &[T],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let m = T::from_usize(g.per_channel());
    let mut dx = vec![T::ZERO; x.len()];
    let mut dgamma = vec![T::ZERO; g.c];
    let mut dbeta = vec![T::ZERO; g.c];
    for c in 0..g.c {
        let xhat = |v: T| (v - mean[c]) * inv_std[c];
        let (sum_dy, sum_dy_xhat) =
            channel(g, x, c).fold((T::ZERO, T::ZERO), |(a, b), (at, v)| (a + dy[at], b + dy[at] * xhat(v)));
        let scale = gamma[c] * inv_std[c];
        for (at, v) in channel(g, x, c) {
            dx[at] = scale * (dy[at] - sum_dy / m - xhat(v) * (sum_dy_xhat / m));
        }
        dgamma[c] = sum_dy_xhat;
        dbeta[c] = sum_dy;
    }
    (dx, dgamma, dbeta)
}
