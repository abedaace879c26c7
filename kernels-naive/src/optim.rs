//! Optimiser updates on host tensors: the rule itself is
//! `kernels_core::Optimizer::update_slice`, shared with every backend's
//! tests as the reference; this module only hands it the tensors' storage.
//!
//! - Updates `param` in place from `grad` at 1-based step `t`, with `slots`
//!   the rule's state (velocity, square averages, Adam's moments).
//! - Checked against hand-derived steps in kernels-core and across backends
//!   by harness/tests.

use kernels_core::{Float, Optimizer, Result, Shaped, Tensor, check_step};

pub(crate) fn step<T: Float>(
    optimizer: &Optimizer,
    param: &mut Tensor<T>,
    grad: &Tensor<T>,
    slots: &mut [Tensor<T>],
    t: u64,
) -> Result<()> {
    // `exec_optimizer_step` may be called without the trait's checks:
    // repeat them (they are cheap) so shapes, not just lengths, must agree.
    let slot_shapes: Vec<&[usize]> = slots.iter().map(|s| s.shape()).collect();
    check_step(optimizer, param.shape(), grad.shape(), &slot_shapes)?;
    let mut views: Vec<&mut [T]> = slots.iter_mut().map(|s| s.data_mut()).collect();
    optimizer.update_slice(param.data_mut(), grad.data(), &mut views, t)
}
