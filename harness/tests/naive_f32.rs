//! The conformance suite on `Naive::<f32>`: the reference in f32 against
//! itself in f64. It shows the suite's tolerances hold for plain loops and
//! catches any f32-only mistake in the reference.

mod common;

common::conformance_suite!(kernels_naive::Naive::<f32>::new);
