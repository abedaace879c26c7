//! Element-wise activations and the softmax cross-entropy loss.
//!
//! - relu: y = 0 where x ≤ 0, else x; dx = 0 where x ≤ 0, else dy (the
//!   subgradient at 0 is 0, and NaN passes through both ways, as in
//!   PyTorch: relu(NaN) = NaN with its gradient passed on).
//! - sigmoid: y = 1 / (1 + e^−x), computed so neither branch overflows;
//!   dx = dy · y · (1 − y) from the forward's output.
//! - softmax cross-entropy over logits [n, classes]: loss = mean over the
//!   batch of logsumexp(z) − z[label], with the row maximum subtracted
//!   first; dlogits = (softmax(z) − onehot(label)) / n.
//! - Checked by tests/gradcheck.rs (relu away from 0); timed by the harness.

use kernels_core::Float;

pub(crate) fn relu_forward<T: Float>(x: &[T]) -> Vec<T> {
    x.iter().map(|&v| if v <= T::ZERO { T::ZERO } else { v }).collect()
}

pub(crate) fn relu_backward<T: Float>(x: &[T], dy: &[T]) -> Vec<T> {
    x.iter().zip(dy).map(|(&v, &grad)| if v <= T::ZERO { T::ZERO } else { grad }).collect()
}

/// 1 / (1 + e^−v) for v ≥ 0, e^v / (1 + e^v) below: e^(−|v|) never overflows.
fn sigmoid<T: Float>(v: T) -> T {
    if v >= T::ZERO {
        T::ONE / (T::ONE + (-v).exp())
    } else {
        let e = v.exp();
        e / (T::ONE + e)
    }
}

pub(crate) fn sigmoid_forward<T: Float>(x: &[T]) -> Vec<T> {
    x.iter().map(|&v| sigmoid(v)).collect()
}

pub(crate) fn sigmoid_backward<T: Float>(y: &[T], dy: &[T]) -> Vec<T> {
    y.iter().zip(dy).map(|(&s, &grad)| grad * s * (T::ONE - s)).collect()
}

/// (mean loss, dlogits [n, classes]) for logits [n, classes] and labels
/// already checked to be < classes.
pub(crate) fn softmax_cross_entropy<T: Float>(logits: &[T], classes: usize, labels: &[usize]) -> (f64, Vec<T>) {
    let n = T::from_usize(labels.len());
    let mut dlogits = vec![T::ZERO; logits.len()];
    let mut total = T::ZERO;
    for ((z, d), &label) in logits.chunks_exact(classes).zip(dlogits.chunks_exact_mut(classes)).zip(labels) {
        let max = z.iter().copied().fold(z[0], T::max);
        let log_sum_exp = max + z.iter().map(|&v| (v - max).exp()).sum::<T>().ln();
        total += log_sum_exp - z[label];
        for (di, &v) in d.iter_mut().zip(z) {
            *di = (v - log_sum_exp).exp() / n;
        }
        d[label] -= T::ONE / n;
    }
    ((total / n).to_f64(), dlogits)
}
