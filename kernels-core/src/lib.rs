//! # kernels-core: the contract
//!
//! Every backend of the workspace (the naive reference, im2col + GEMM on the
//! CPU, OpenCL) implements [`Backend`] and is held to the same rules:
//!
//! - **Layout** follows PyTorch: activations NCHW, conv weights OIHW
//!   (K, C, R, S), linear weights [out, in] with y = x·Wᵀ + b.
//! - **Conv** is cross-correlation with per-axis stride, padding and dilation;
//!   OH = (H + 2·ph − dh·(R−1) − 1) / sh + 1, floored ([`output_size`]).
//! - **Pooling**: max never picks padding and breaks ties by the first element
//!   in row-major window order (backward routes the gradient there only); avg
//!   divides by the full window, padding included. Padding is at most half
//!   the window, as in PyTorch.
//! - **Validation** happens once, in the trait's provided methods, before a
//!   backend's `exec_*` method sees a validated geometry ([`ConvGeometry`],
//!   [`PoolGeometry`], [`LinearGeometry`]). Bad input is an [`Error`] that
//!   names the op and the dimensions, never a panic.
//! - **Backward** returns fresh gradients and accumulates into nothing.
//! - **Batch norm** ([`norm`]) and **dropout** ([`dropout`]) follow
//!   PyTorch's semantics; dropout's mask is a counter-based draw keyed by
//!   (seed, step, element), the same bit for bit on every backend.
//! - **Optimisers** ([`Optimizer`]) follow PyTorch's update rules;
//!   [`Optimizer::update_slice`] is the reference form.
//!
//! Beside the contract: [`cost`] gives analytic FLOP and byte counts,
//! [`check`] the `compare` and `gradcheck` helpers the tests and the harness
//! share, [`suite`] the shape suite, and [`SplitMix64`] a seeded generator.

pub mod backend;
pub mod check;
pub mod cost;
pub mod dropout;
pub mod error;
pub mod float;
pub mod norm;
pub mod optim;
pub mod params;
pub mod rng;
pub mod suite;
pub mod tensor;

pub use backend::{Backend, Grads};
pub use check::{Comparison, GradCheck, Mismatch, Tolerance, compare, gradcheck, weighted_sum};
pub use cost::Cost;
pub use dropout::{Dropout, DropoutMask};
pub use error::{Error, Result};
pub use float::Float;
pub use norm::{BatchNorm, BatchNormGeometry, BatchNormScalars, BatchStats};
pub use optim::{Optimizer, OptimizerState, StepScalars, check_step};
pub use params::{
    Conv2d, ConvGeometry, GradRequest, LinearGeometry, Pool2d, PoolGeometry, PoolKind, check_logits_labels,
    check_same_shape, max_pool_takes, output_size,
};
pub use rng::SplitMix64;
pub use suite::{CONV_SUITE, ConvCase, LINEAR_SUITE, LinearCase, NORM_SUITE, NormCase, POOL_SUITE, PoolCase};
pub use tensor::{Shaped, Tensor};
