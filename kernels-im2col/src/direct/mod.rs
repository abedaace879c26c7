//! The direct conv kernels: implicit GEMMs that read the input where
//! im2col would have copied it, for the shapes where unfolding costs more
//! than it saves. Each file opens with what it computes and where it
//! applies; the planner (conv/plan.rs) picks among them.
//!
//! - `tiny.rs`: forward of tiny reductions (C·R·S ≤ 64, stride 1: lenet-c1,
//!   simplecnn-c1); `tiny_grad.rs` their dW and db.
//! - `filters.rs`: forward vectorised across at most 16 filters (lenet-c2);
//!   `filters_grad.rs` its dW.
//! - `wide.rs`: forward for many filters over at most 4 channels
//!   (alexnet-c1), AVX-512 intrinsics with an AVX2 and a portable variant.
//! - `dx.rs`: dX of the direct paths on images at most 16 columns wide.
//! - Every kernel has a portable, an AVX2 + FMA and an AVX-512 + FMA
//!   variant, chosen by the call's `Simd` token (simd.rs).

pub(crate) mod dx;
pub(crate) mod filters;
pub(crate) mod filters_grad;
pub(crate) mod tiny;
pub(crate) mod tiny_grad;
pub(crate) mod wide;
