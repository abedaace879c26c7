//! Batch normalization in f32 (formulas in `kernels_core::norm`): channel
//! statistics and the backward's two sums accumulate in f64, one channel per
//! task, so a channel of 10⁵ values loses nothing to f32 summation; the
//! element-wise passes run over the contiguous runs of H·W values that make
//! up each (sample, channel) plane, in parallel.
//!
//! Outputs use the subtract-then-scale form, (x − μ)·(γ/σ) + β, rather than
//! x·a + b: with a large mean and a small spread the latter cancels
//! catastrophically. Checked against the reference in harness/tests.

use kernels_core::BatchNormGeometry;
use rayon::prelude::*;

/// (sample, channel) planes per parallel task, when planes are small.
fn min_planes(spatial: usize) -> usize {
    (1usize << 14).div_ceil(spatial.max(1))
}

/// Σ f(x) over the values of channel `c`, in f64.
fn channel_sum(g: &BatchNormGeometry, x: &[f32], c: usize, f: impl Fn(usize, f32) -> f64) -> f64 {
    let s = g.spatial;
    (0..g.n)
        .map(|n| {
            let start = (n * g.c + c) * s;
            x[start..start + s].iter().enumerate().map(|(i, &v)| f(start + i, v)).sum::<f64>()
        })
        .sum()
}

/// Per channel (μ, biased σ²) in f64, two passes.
fn moments(g: &BatchNormGeometry, x: &[f32]) -> Vec<(f64, f64)> {
    let m = g.per_channel() as f64;
    (0..g.c)
        .into_par_iter()
        .map(|c| {
            let mean = channel_sum(g, x, c, |_, v| v as f64) / m;
            let var = channel_sum(g, x, c, |_, v| (v as f64 - mean).powi(2)) / m;
            (mean, var)
        })
        .collect()
}

/// y = (x − shift[c])·scale[c] + beta[c] over every plane.
fn normalise(g: &BatchNormGeometry, x: &[f32], shift: &[f32], scale: &[f32], beta: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(g.spatial).zip(x.par_chunks(g.spatial)).enumerate().with_min_len(min_planes(g.spatial)).for_each(
        |(plane, (y, x))| {
            let c = plane % g.c;
            let (mu, a, b) = (shift[c], scale[c], beta[c]);
            for (y, &v) in y.iter_mut().zip(x) {
                *y = (v - mu) * a + b;
            }
        },
    );
    y
}

/// Training mode: (y, μ, 1/√(σ² + ε)); the running statistics move in place.
pub(crate) fn train(
    g: &BatchNormGeometry,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let stats = moments(g, x);
    let eps = g.params.eps;
    let mean: Vec<f32> = stats.iter().map(|&(m, _)| m as f32).collect();
    let inv_std: Vec<f32> = stats.iter().map(|&(_, v)| (1.0 / (v + eps).sqrt()) as f32).collect();
    let scale: Vec<f32> = stats.iter().zip(gamma).map(|(&(_, v), &gm)| (gm as f64 / (v + eps).sqrt()) as f32).collect();
    let y = normalise(g, x, &mean, &scale, beta);
    let s = g.params.scalars();
    let unbiased = g.unbiased_factor();
    for (c, &(m, v)) in stats.iter().enumerate() {
        running_mean[c] = s.one_minus_momentum * running_mean[c] + s.momentum * m as f32;
        running_var[c] = s.one_minus_momentum * running_var[c] + s.momentum * (v * unbiased) as f32;
    }
    (y, mean, inv_std)
}

/// Evaluation mode: the running statistics normalise.
pub(crate) fn eval(
    g: &BatchNormGeometry,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
) -> Vec<f32> {
    let eps = g.params.eps;
    let scale: Vec<f32> =
        gamma.iter().zip(running_var).map(|(&gm, &v)| (gm as f64 / (v as f64 + eps).sqrt()) as f32).collect();
    normalise(g, x, running_mean, &scale, beta)
}

/// Backward of training mode: (dx, dγ, dβ).
pub(crate) fn backward(
    g: &BatchNormGeometry,
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let sums: Vec<(f64, f64)> = (0..g.c)
        .into_par_iter()
        .map(|c| {
            let (mu, inv) = (mean[c] as f64, inv_std[c] as f64);
            let sum_dy = channel_sum(g, x, c, |at, _| dy[at] as f64);
            let sum_dy_xhat = channel_sum(g, x, c, |at, v| dy[at] as f64 * (v as f64 - mu) * inv);
            (sum_dy, sum_dy_xhat)
        })
        .collect();
    let m = g.per_channel() as f64;
    // dx = γ·inv·dy − γ·inv·Σdy/M − x̂·γ·inv·Σdy·x̂/M, per channel coefficients in f64.
    let coef: Vec<[f32; 3]> = sums
        .iter()
        .enumerate()
        .map(|(c, &(sd, sdx))| {
            let a = gamma[c] as f64 * inv_std[c] as f64;
            [a as f32, (a * sd / m) as f32, (a * sdx / m) as f32]
        })
        .collect();
    let mut dx = vec![0.0f32; x.len()];
    let s = g.spatial;
    dx.par_chunks_mut(s).enumerate().with_min_len(min_planes(s)).for_each(|(plane, dx)| {
        let c = plane % g.c;
        let [a, b, k] = coef[c];
        let (mu, inv) = (mean[c], inv_std[c]);
        let start = plane * s;
        for (i, d) in dx.iter_mut().enumerate() {
            let xhat = (x[start + i] - mu) * inv;
            *d = a * dy[start + i] - b - xhat * k;
        }
    });
    let dgamma = sums.iter().map(|&(_, sdx)| sdx as f32).collect();
    let dbeta = sums.iter().map(|&(sd, _)| sd as f32).collect();
    (dx, dgamma, dbeta)
}
