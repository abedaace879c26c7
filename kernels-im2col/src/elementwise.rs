//! Element-wise ops: relu and sigmoid with their backwards, softmax
//! cross-entropy, and the optimiser updates.
//!
//! - relu: y = 0 where x ≤ 0, else x; dx = 0 where x ≤ 0, else dy (NaN
//!   passes through both ways, as in PyTorch). sigmoid: y = 1 / (1 + e^−x)
//!   (evaluated so e^x never overflows); dx = dy · y · (1 − y).
//! - softmax cross-entropy over logits [n, classes]: loss = mean of
//!   logsumexp(z) − z[label] (row max subtracted first, loss summed in f64);
//!   dlogits = (softmax − onehot) / n.
//! - Optimiser steps run `Optimizer::update_slice`, the reference rule
//!   itself, on blocks of the parameter in parallel, so the two cannot drift;
//!   a parameter of at most one block is updated on the calling thread.
//! - Each is a tight loop over blocks of `BLOCK` elements split by rayon.
//! - Checked against the reference in harness/tests/im2col.rs.

use kernels_core::{Optimizer, Result};
use rayon::prelude::*;

/// Elements per parallel block: large enough that rayon's overhead is noise.
const BLOCK: usize = 1 << 14;

pub(crate) fn relu_forward(x: &[f32]) -> Vec<f32> {
    x.par_iter().with_min_len(BLOCK).map(|&v| if v <= 0.0 { 0.0 } else { v }).collect()
}

pub(crate) fn relu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    x.par_iter().zip(dy).with_min_len(BLOCK).map(|(&v, &d)| if v <= 0.0 { 0.0 } else { d }).collect()
}

fn sigmoid(v: f32) -> f32 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

pub(crate) fn sigmoid_forward(x: &[f32]) -> Vec<f32> {
    x.par_iter().with_min_len(BLOCK).map(|&v| sigmoid(v)).collect()
}

pub(crate) fn sigmoid_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    y.par_iter().zip(dy).with_min_len(BLOCK).map(|(&s, &d)| d * s * (1.0 - s)).collect()
}

/// (mean loss, dlogits) for logits [n, classes]; labels already checked.
pub(crate) fn softmax_cross_entropy(logits: &[f32], classes: usize, labels: &[usize]) -> (f64, Vec<f32>) {
    let n = labels.len();
    let inv_n = 1.0 / n as f32;
    let mut dlogits = vec![0.0f32; logits.len()];
    let total: f64 = dlogits
        .par_chunks_mut(classes)
        .zip(logits.par_chunks(classes))
        .zip(labels.par_iter())
        .map(|((d, z), &label)| {
            let max = z.iter().copied().fold(z[0], f32::max);
            let mut sum_exp = 0.0f32;
            for (di, &v) in d.iter_mut().zip(z) {
                *di = (v - max).exp();
                sum_exp += *di;
            }
            let scale = inv_n / sum_exp;
            for di in d.iter_mut() {
                *di *= scale;
            }
            d[label] -= inv_n;
            (max as f64 + (sum_exp as f64).ln()) - z[label] as f64
        })
        .sum();
    (total / n as f64, dlogits)
}

/// Whether an optimiser step over `len` elements runs on the calling thread
/// (at most one block: a pool hand-off costs more than the update).
pub(crate) fn runs_inline(len: usize) -> bool {
    len <= BLOCK
}

/// One update of `param` in place with `slots` the rule's state buffers.
pub(crate) fn optimizer_step(
    optimizer: &Optimizer,
    param: &mut [f32],
    grad: &[f32],
    slots: &mut [&mut [f32]],
    t: u64,
) -> Result<()> {
    // Check the whole tensor once, so a block-level error cannot leave the
    // parameter half updated.
    let slot_lens: Vec<usize> = slots.iter().map(|s| s.len()).collect();
    optimizer.check_slices(param.len(), grad.len(), &slot_lens, t)?;
    let blocks = param.par_chunks_mut(BLOCK).zip(grad.par_chunks(BLOCK));
    match slots {
        [] => blocks.try_for_each(|(p, g)| optimizer.update_slice(p, g, &mut [], t)),
        [s] => {
            blocks.zip(s.par_chunks_mut(BLOCK)).try_for_each(|((p, g), s)| optimizer.update_slice(p, g, &mut [s], t))
        }
        [m, v] => blocks
            .zip(m.par_chunks_mut(BLOCK))
            .zip(v.par_chunks_mut(BLOCK))
            .try_for_each(|(((p, g), m), v)| optimizer.update_slice(p, g, &mut [m, v], t)),
        _ => optimizer.update_slice(param, grad, slots, t),
    }
}
