//! The cross-backend conformance suite: every op of a `Backend<Elem = f32>`
//! against the f64 reference (`Naive::<f64>`), on DESIGN.md's edge cases
//! (run every time) and on random valid problems (proptest), plus invalid
//! input that must fail exactly where the reference fails.
//!
//! # Instantiating it
//!
//! In `harness/tests/<backend>.rs`:
//!
//! ```ignore
//! mod common;
//! common::conformance_suite!(|| kernels_im2col::Im2col::new());
//! ```
//!
//! The argument is anything callable with no arguments that returns the
//! backend (a closure or a function path), e.g.
//! `|| kernels_opencl::OpenCl::new().expect("an OpenCL device")`. It is
//! called once per test function, not per case. The macro defines
//! `conformance_backend()` and the test functions in the module it is
//! invoked in, so invoke it once per module; for several backends in one
//! file, wrap each in its own module:
//! `mod threads_1 { super::common::conformance_suite!(|| Im2col::with_threads(1).unwrap()); }`. The macro expands to one
//! `#[test]` per property (names say what is compared), each running its
//! explicit edge cases and then `PROPTEST_CASES` random cases (256 unless the
//! variable is set). Failures print the op, the problem (dimensions and
//! seed: data are derived from the seed) and the `Comparison` with the worst
//! elements.
//!
//! # Tolerances
//!
//! Reductions use `Tolerance::f32_reduction(len, scale)` with `len` the
//! number of terms of one output element and `scale` the largest value the
//! same reduction reaches on absolute values (Σ|terms|, computed by the
//! reference), so cancellation cannot make the tolerance vanish.
//! Element-wise ops use `Tolerance::f32_elementwise`; optimiser steps a
//! tolerance that grows with the step count (see `elementwise.rs`).

pub mod elementwise;
pub mod invalid;
pub mod nan;
pub mod norm;
pub mod ops;
pub mod problems;

use std::fmt::{Debug, Display};

use kernels_core::{Backend, Tensor, Tolerance, compare};
use kernels_naive::Naive;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Outcome of one checked case.
pub type Check = Result<(), TestCaseError>;

/// The oracle.
pub fn reference() -> Naive<f64> {
    Naive::new()
}

/// Cases per property: `PROPTEST_CASES` when set (proptest reads it into
/// its default config), else 256 (proptest's own default). Measured: one
/// backend's whole suite takes well under a minute at 256, even on PoCL.
pub fn config() -> Config {
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { Config::default().cases } else { 256 };
    // No regression files: these tests are instantiated from several files
    // owned by different crates' authors; a failure prints its problem.
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// Runs `test` on every explicit case, then on random ones from `strategy`;
/// panics with the first failure (minimised by proptest).
pub fn run<S>(property: &str, edge_cases: Vec<(&str, S::Value)>, strategy: S, test: impl Fn(&S::Value) -> Check)
where
    S: Strategy,
    S::Value: Debug,
{
    let explicit = edge_cases.len();
    for (label, case) in edge_cases {
        if let Err(e) = test(&case) {
            panic!("{property}: edge case '{label}' failed: {e}");
        }
    }
    let mut runner = TestRunner::new(config());
    if let Err(e) = runner.run(&strategy, |case| test(&case)) {
        panic!("{property}: {e}");
    }
    println!("{property}: {explicit} edge cases and {} random cases passed", config().cases);
}

/// What a check is about: the op and the problem, for every message.
pub struct Ctx<'a> {
    pub op: &'static str,
    pub problem: &'a dyn Debug,
}

impl Ctx<'_> {
    pub fn fail(&self, what: impl Display) -> TestCaseError {
        TestCaseError::fail(format!("{}: {what}\nproblem: {:?}", self.op, self.problem))
    }

    /// Unwraps a backend result, failing the case on an unexpected error.
    pub fn ok<T>(&self, result: kernels_core::Result<T>) -> Result<T, TestCaseError> {
        result.map_err(|e| self.fail(format!("unexpected error: {e}")))
    }

    pub fn up<B: Backend<Elem = f32>>(&self, backend: &B, host: &Tensor<f32>) -> Result<B::Tensor, TestCaseError> {
        self.ok(backend.upload(host))
    }

    pub fn down<B: Backend<Elem = f32>>(&self, backend: &B, t: &B::Tensor) -> Result<Tensor<f32>, TestCaseError> {
        self.ok(backend.download(t))
    }

    /// Shapes equal and every element within `tolerance` of the reference.
    pub fn close(&self, what: &str, actual: &Tensor<f32>, expected: &Tensor<f64>, tolerance: &Tolerance) -> Check {
        use kernels_core::Shaped;
        if actual.shape() != expected.shape() {
            return Err(self.fail(format!("{what}: shape {:?}, expected {:?}", actual.shape(), expected.shape())));
        }
        let comparison = self.ok(compare(actual.data(), expected.data(), tolerance))?;
        if !comparison.passed() {
            return Err(self.fail(format!("{what}: {comparison}")));
        }
        Ok(())
    }

    /// An op's input is bit for bit what was uploaded: ops never write
    /// into their arguments.
    pub fn unchanged<B: Backend<Elem = f32>>(
        &self,
        backend: &B,
        what: &str,
        t: &B::Tensor,
        host: &Tensor<f32>,
    ) -> Check {
        let now = self.down(backend, t)?;
        let same = now.data().iter().zip(host.data()).all(|(a, b)| a.to_bits() == b.to_bits());
        if !same || now.data().len() != host.data().len() {
            return Err(self.fail(format!("input {what} was modified by the op")));
        }
        Ok(())
    }

    /// Unwraps a gradient the caller requested.
    pub fn grad<T>(&self, what: &str, grad: Option<T>) -> Result<T, TestCaseError> {
        grad.ok_or_else(|| self.fail(format!("{what} was requested but not returned")))
    }
}

/// |t| in f64: the reference run on it bounds every partial sum.
pub fn abs(t: &Tensor<f32>) -> Tensor<f64> {
    Tensor::from_fn(kernels_core::Shaped::shape(t), |i| t.data()[i].abs() as f64)
}

pub fn max_abs(t: &Tensor<f64>) -> f64 {
    t.data().iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// Expands to the conformance tests for the backend `make()` returns; see
/// the module documentation.
macro_rules! conformance_suite {
    ($make:expr) => {
        fn conformance_backend() -> impl kernels_core::Backend<Elem = f32> {
            ($make)()
        }

        #[test]
        fn conv2d_forward_with_and_without_bias_matches_naive_f64() {
            $crate::common::ops::conv_forward_suite(&conformance_backend());
        }

        #[test]
        fn conv2d_backward_dx_dw_db_match_naive_f64() {
            $crate::common::ops::conv_backward_suite(&conformance_backend());
        }

        #[test]
        fn pool2d_max_and_avg_forward_and_backward_match_naive_f64() {
            $crate::common::ops::pool_suite(&conformance_backend());
        }

        #[test]
        fn pool2d_max_ties_route_to_the_same_first_element() {
            $crate::common::ops::pool_ties_suite(&conformance_backend());
        }

        #[test]
        fn linear_forward_and_backward_match_naive_f64() {
            $crate::common::ops::linear_suite(&conformance_backend());
        }

        #[test]
        fn relu_forward_and_backward_match_naive_f64() {
            $crate::common::elementwise::relu_suite(&conformance_backend());
        }

        #[test]
        fn sigmoid_forward_and_backward_match_naive_f64() {
            $crate::common::elementwise::sigmoid_suite(&conformance_backend());
        }

        #[test]
        fn softmax_cross_entropy_loss_and_dlogits_match_naive_f64() {
            $crate::common::elementwise::softmax_suite(&conformance_backend());
        }

        #[test]
        fn optimizer_steps_of_all_six_rules_match_naive_f64_after_1_and_3_steps() {
            $crate::common::elementwise::optimizer_suite(&conformance_backend());
        }

        #[test]
        fn nan_propagates_through_relu_and_max_pool_as_in_pytorch() {
            $crate::common::nan::relu_nan(&conformance_backend());
            $crate::common::nan::max_pool_nan(&conformance_backend());
        }

        #[test]
        fn batch_norm_train_eval_and_backward_match_naive_f64() {
            $crate::common::norm::batch_norm_suite(&conformance_backend());
        }

        #[test]
        fn dropout_masks_match_the_f32_reference_bit_for_bit() {
            $crate::common::norm::dropout_suite(&conformance_backend());
        }

        #[test]
        fn upload_download_reshape_zeros_round_trip() {
            $crate::common::elementwise::round_trip_suite(&conformance_backend());
        }

        #[test]
        fn invalid_input_fails_exactly_where_naive_fails() {
            $crate::common::invalid::invalid_suite(&conformance_backend());
        }
    };
}

pub(crate) use conformance_suite;
