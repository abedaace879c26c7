//! Checking helpers shared by the tests and the harness: `compare` an
//! output against the f64 reference under a named tolerance, and
//! `gradcheck` an analytic gradient against central differences.

use std::fmt;

use crate::error::{Error, Result};
use crate::float::Float;

/// A named tolerance: element i passes when
/// |actual − expected| ≤ abs + rel·|expected|.
#[derive(Debug, Clone, PartialEq)]
pub struct Tolerance {
    pub name: String,
    pub abs: f64,
    pub rel: f64,
}

impl Tolerance {
    pub fn new(name: impl Into<String>, abs: f64, rel: f64) -> Self {
        Self { name: name.into(), abs, rel }
    }

    /// f32 result of a reduction of `len` terms whose outputs have magnitude
    /// about `scale` (for instance the largest |expected|). Rounding error of
    /// a blocked f32 sum grows like √len·ε in practice (len·ε at worst); 32·ε·√len
    /// leaves room for reordering and fused multiply-adds without hiding an
    /// indexing mistake, which produces errors of order `scale`.
    pub fn f32_reduction(len: usize, scale: f64) -> Self {
        let rel = 32.0 * f32::EPSILON as f64 * (len.max(1) as f64).sqrt();
        Self {
            name: format!("f32 reduction over {len} terms (32·ε·√len, scale {scale:.3e})"),
            abs: rel * scale.max(1e-30),
            rel,
        }
    }

    /// An f32 element-wise result (activations, pooling, optimiser steps).
    pub fn f32_elementwise() -> Self {
        Self::new("f32 element-wise (8·ε)", 8.0 * f32::EPSILON as f64, 8.0 * f32::EPSILON as f64)
    }
}

/// One mismatching element.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub index: usize,
    pub actual: f64,
    pub expected: f64,
    pub abs_err: f64,
}

/// Result of comparing two equally long slices.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub tolerance: Tolerance,
    pub len: usize,
    pub max_abs_err: f64,
    /// Largest |a − e| / |e| over elements with e ≠ 0.
    pub max_rel_err: f64,
    /// Elements outside the tolerance (NaN counts as outside).
    pub failures: usize,
    /// Up to 8 elements with the largest error, worst first.
    pub worst: Vec<Mismatch>,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.failures == 0
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} elements outside tolerance '{}' (abs {:.3e} + rel {:.3e}); max abs err {:.3e}, max rel err {:.3e}",
            self.failures,
            self.len,
            self.tolerance.name,
            self.tolerance.abs,
            self.tolerance.rel,
            self.max_abs_err,
            self.max_rel_err
        )?;
        for m in &self.worst {
            write!(
                f,
                "\n  [{}] actual {:.9e} expected {:.9e} (abs err {:.3e})",
                m.index, m.actual, m.expected, m.abs_err
            )?;
        }
        Ok(())
    }
}

/// Compares `actual` with `expected` element by element.
pub fn compare<A: Float, E: Float>(actual: &[A], expected: &[E], tolerance: &Tolerance) -> Result<Comparison> {
    if actual.len() != expected.len() {
        return Err(Error::shape(
            "compare",
            format!("actual has {} elements, expected {}", actual.len(), expected.len()),
        ));
    }
    let mut max_abs_err = 0.0f64;
    let mut max_rel_err = 0.0f64;
    let mut failures = 0;
    let mut worst: Vec<Mismatch> = Vec::new();
    for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
        let (a, e) = (a.to_f64(), e.to_f64());
        // NaN or infinity where the reference is finite is the worst error.
        let abs_err = if a.is_finite() || a == e { (a - e).abs() } else { f64::INFINITY };
        let abs_err = if abs_err.is_nan() { f64::INFINITY } else { abs_err };
        max_abs_err = max_abs_err.max(abs_err);
        if e != 0.0 {
            max_rel_err = max_rel_err.max(abs_err / e.abs());
        }
        if abs_err > tolerance.abs + tolerance.rel * e.abs() {
            failures += 1;
        }
        if worst.len() < 8 || abs_err > worst[worst.len() - 1].abs_err {
            let at = worst.partition_point(|m| m.abs_err >= abs_err);
            worst.insert(at, Mismatch { index, actual: a, expected: e, abs_err });
            worst.truncate(8);
        }
    }
    Ok(Comparison { tolerance: tolerance.clone(), len: actual.len(), max_abs_err, max_rel_err, failures, worst })
}

/// L = Σ y ⊙ r: turns an op's output into a scalar loss for gradient checks.
pub fn weighted_sum(y: &[f64], r: &[f64]) -> f64 {
    y.iter().zip(r).map(|(a, b)| a * b).sum()
}

/// Result of a gradient check.
#[derive(Debug, Clone)]
pub struct GradCheck {
    pub len: usize,
    /// max over elements of max(|analytic − numeric| − resolution, 0) /
    /// max(|analytic|, |numeric|, floor), with floor = 1e-3 · max|analytic|
    /// (so near-zero entries of a large gradient are judged on the
    /// gradient's scale) and at least 1e-8, and resolution what the
    /// central difference can resolve at that element ([`gradcheck`]).
    pub max_rel_err: f64,
    pub worst_index: usize,
    pub worst_analytic: f64,
    pub worst_numeric: f64,
}

impl fmt::Display for GradCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gradcheck over {} elements: max rel err {:.3e} at [{}] (analytic {:.9e}, numeric {:.9e})",
            self.len, self.max_rel_err, self.worst_index, self.worst_analytic, self.worst_numeric
        )
    }
}

/// Ulps of the loss allowed for the rounding of a central difference. The
/// failure this absorbs was 1.4 ulps (below); 16 leaves room for losses
/// summed over more terms while a 0.1% error in a gradient a million times
/// smaller than its loss (7e-10 against 7e-7) still stands well above it
/// (4e-11 at h = 1e-4, loss 1).
const LOSS_ROUNDING_ULPS: f64 = 16.0;

/// Checks `analytic` = ∂loss/∂x at `x` by central differences with step `h`:
/// (loss(x + h·eᵢ) − loss(x − h·eᵢ)) / 2h for every i.
///
/// A difference within the central difference's resolution at i,
/// `LOSS_ROUNDING_ULPS` · ε · (|loss(x + h·eᵢ)| + |loss(x − h·eᵢ)|) / 2h,
/// counts as none: below it the numeric value is rounding, not the
/// derivative. Without it a gradient far smaller than its loss failed on
/// rounding alone: batch norm with two values per channel far apart, dx
/// 7.439e-7 against a loss of 1.59, analytic and numeric 2.5e-12 (1.4
/// ulps of the loss over 2h) apart, 3.4e-6 relative, in a property test's
/// random case (kernels-naive/tests/gradcheck.rs).
pub fn gradcheck(x: &[f64], analytic: &[f64], h: f64, mut loss: impl FnMut(&[f64]) -> f64) -> Result<GradCheck> {
    if x.len() != analytic.len() {
        return Err(Error::shape("gradcheck", format!("x has {} elements, gradient {}", x.len(), analytic.len())));
    }
    let floor = (1e-3 * analytic.iter().fold(0.0f64, |m, v| m.max(v.abs()))).max(1e-8);
    let mut probe = x.to_vec();
    let mut report =
        GradCheck { len: x.len(), max_rel_err: 0.0, worst_index: 0, worst_analytic: 0.0, worst_numeric: 0.0 };
    for i in 0..x.len() {
        probe[i] = x[i] + h;
        let up = loss(&probe);
        probe[i] = x[i] - h;
        let down = loss(&probe);
        probe[i] = x[i];
        let numeric = (up - down) / (2.0 * h);
        let resolution = LOSS_ROUNDING_ULPS * f64::EPSILON * (up.abs() + down.abs()) / (2.0 * h);
        // A NaN anywhere (analytic, loss or resolution) leaves `excess`
        // NaN, which the test below turns into an infinite error.
        let excess = (analytic[i] - numeric).abs() - resolution;
        let err = if excess <= 0.0 { 0.0 } else { excess / analytic[i].abs().max(numeric.abs()).max(floor) };
        let err = if err.is_nan() { f64::INFINITY } else { err };
        if i == 0 || err > report.max_rel_err {
            report.max_rel_err = err;
            report.worst_index = i;
            report.worst_analytic = analytic[i];
            report.worst_numeric = numeric;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_finds_the_worst_elements() {
        let expected = [1.0f64, 2.0, 3.0, 4.0];
        let actual = [1.0f32, 2.5, 3.0, f32::NAN];
        let c = compare(&actual, &expected, &Tolerance::new("t", 1e-6, 0.0)).unwrap();
        assert_eq!(c.failures, 2);
        assert_eq!(c.worst[0].index, 3);
        assert_eq!(c.worst[1].index, 1);
        assert!(!c.passed());
        assert!(c.to_string().contains("'t'"));
        let ok = compare(&[1.0f32, 2.0], &[1.0f64, 2.0 + 1e-7], &Tolerance::f32_elementwise()).unwrap();
        assert!(ok.passed(), "{ok}");
        assert!(compare(&[1.0f32], &[1.0f64, 2.0], &Tolerance::f32_elementwise()).is_err());
    }

    #[test]
    fn gradcheck_accepts_a_right_gradient_and_rejects_a_wrong_one() {
        let x = [0.3, -1.2, 2.0];
        let loss = |v: &[f64]| v[0] * v[0] * v[1] + v[2].sin();
        let right = [2.0 * 0.3 * -1.2, 0.3 * 0.3, 2.0f64.cos()];
        let report = gradcheck(&x, &right, 1e-5, loss).unwrap();
        assert!(report.max_rel_err < 1e-8, "{report}");
        let wrong = [right[0], right[1] * 1.01, right[2]];
        let report = gradcheck(&x, &wrong, 1e-5, loss).unwrap();
        assert!(report.max_rel_err > 1e-3, "{report}");
        assert_eq!(report.worst_index, 1);
    }

    #[test]
    fn gradcheck_judges_a_gradient_far_below_its_loss_by_what_differences_resolve() {
        // loss ≈ 1 with a gradient of 7e-7: the central difference at
        // h = 1e-4 carries rounding of about 1e-12, a relative 1e-6 that a
        // right gradient must not fail on.
        let x = [0.25, -0.5];
        let loss = |v: &[f64]| 1.0 + 7e-7 * v[0] - 3e-7 * v[1] + 0.5 * v[0] * v[0] * 1e-9;
        let right = [7e-7 + 0.25e-9, -3e-7];
        let report = gradcheck(&x, &right, 1e-4, loss).unwrap();
        assert!(report.max_rel_err < 1e-6, "{report}");
        // Errors far above that resolution are still caught, and a NaN
        // gradient still fails.
        let report = gradcheck(&x, &[7e-7 * 1.001, -3e-7], 1e-4, loss).unwrap();
        assert!(report.max_rel_err > 5e-4, "{report}");
        let report = gradcheck(&x, &[f64::NAN, -3e-7], 1e-4, loss).unwrap();
        assert!(report.max_rel_err.is_infinite(), "{report}");
    }
}
