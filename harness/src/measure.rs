//! Validate, time, validate again: one op on one shape on one backend.
//!
//! 1. One call, synchronised, compared with the f64 oracle (this call is
//!    also the first warm-up; a failure stops here, nothing is timed).
//! 2. More warm-up until the policy's warm-up time, then the device profile
//!    (OpenCL events) is reset.
//! 3. Timed repeats, each synchronised inside the timed region.
//! 4. The last timed call's outputs are compared with the oracle again.

use std::time::{Duration, Instant};

use kernels_core::{Backend, Tensor};

use crate::error::{HarnessError, Result};
use crate::ops::{Op, Shape};
use crate::problem::{DeviceInputs, Validation, run_op, validate};
use crate::results::{DeviceSplit, Record};
use crate::timing::{self, Policy};

/// Event-profiling counters of a device backend, summed since the last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProfileCounters {
    pub kernel_ns: u64,
    pub transfer_ns: u64,
    pub launches: u64,
    pub transfers: u64,
}

/// Splits kernel time from transfers on backends that can (OpenCL).
pub trait DeviceProfile {
    fn reset(&self);
    fn read(&self) -> Option<ProfileCounters>;
}

/// CPU backends: nothing to split.
pub struct NoProfile;

impl DeviceProfile for NoProfile {
    fn reset(&self) {}
    fn read(&self) -> Option<ProfileCounters> {
        None
    }
}

/// What to measure and where.
pub struct Job<'a, B: Backend<Elem = f32>> {
    pub backend: &'a B,
    /// naive, im2col or opencl.
    pub kind: &'a str,
    pub profile: &'a dyn DeviceProfile,
    pub op: Op,
    pub shape: &'a Shape,
    pub inputs: &'a DeviceInputs<B>,
    pub expected: &'a [&'a Tensor<f64>],
    pub policy: &'a Policy,
    /// The compute ceiling the record will be held to ("sgemm" or
    /// "opencl_gemm"); the bound itself is applied once the run's ceilings
    /// are final ([`crate::results::Report::apply_bounds`]).
    pub compute_ceiling: &'a str,
    /// Device time of uploading the shape's inputs (OpenCL profiling; 0 elsewhere).
    pub upload_ns: u64,
}

impl<B: Backend<Elem = f32>> Job<'_, B> {
    fn kernel_error(&self, source: kernels_core::Error) -> HarnessError {
        HarnessError::Kernel {
            op: self.op.name().into(),
            shape: self.shape.name().into(),
            backend: self.kind.into(),
            source,
        }
    }

    /// One synchronised call.
    fn call(&self) -> Result<Vec<B::Tensor>> {
        let outputs = run_op(self.backend, self.op, self.shape, self.inputs).map_err(|e| self.kernel_error(e))?;
        self.backend.sync().map_err(|e| self.kernel_error(e))?;
        Ok(outputs)
    }

    fn check(&self, outputs: &[B::Tensor], stage: &'static str) -> Result<Validation> {
        let v =
            validate(self.backend, self.op, self.shape, outputs, self.expected).map_err(|e| self.kernel_error(e))?;
        if !v.passed() {
            return Err(HarnessError::Validation {
                stage,
                op: self.op.name().into(),
                shape: self.shape.name().into(),
                backend: self.kind.into(),
                detail: v.failures(),
            });
        }
        Ok(v)
    }

    /// Validates, times and validates again; returns the record.
    pub fn run(&self) -> Result<Record> {
        let start = Instant::now();
        let first = self.call()?;
        let mut warmed = start.elapsed();
        let before = self.check(&first, "before timing")?;
        drop(first);
        while warmed < self.policy.warmup {
            let start = Instant::now();
            self.call()?;
            warmed += start.elapsed();
        }
        self.profile.reset();
        let (stats, last) = timing::time(self.policy, Duration::MAX, || self.call())?;
        let counters = self.profile.read();
        // The check downloads the outputs: profile that transfer on its own.
        self.profile.reset();
        let after = self.check(&last, "after timing")?;
        let download = self.profile.read();

        let cost = self.shape.cost(self.op)?.ok_or_else(|| {
            HarnessError::Usage(format!("op {} does not run on {}", self.op.name(), self.shape.name()))
        })?;
        let per_call = |v: u64| v as f64 / stats.repeats as f64;
        let device_split = counters.map(|c| DeviceSplit {
            kernel_ms: per_call(c.kernel_ns) / 1e6,
            transfer_ms: per_call(c.transfer_ns) / 1e6,
            launches_per_call: per_call(c.launches),
            transfers_per_call: per_call(c.transfers),
            download_ms: download.map_or(0.0, |d| d.transfer_ns as f64 / 1e6),
            upload_ms: self.upload_ns as f64 / 1e6,
        });
        let gflops = cost.flops as f64 / stats.median_s / 1e9;
        Ok(Record {
            op: self.op.name().into(),
            shape: self.shape.name().into(),
            backend: self.kind.into(),
            backend_name: self.backend.name(),
            threads: self.backend.threads(),
            flops: cost.flops,
            bytes: cost.bytes,
            intensity: cost.intensity(),
            repeats: stats.repeats,
            median_ms: stats.median_s * 1e3,
            min_ms: stats.min_s * 1e3,
            max_ms: stats.max_s * 1e3,
            gflops,
            gbps: cost.bytes as f64 / stats.median_s / 1e9,
            bound_gflops: f64::NAN,
            compute_ceiling: self.compute_ceiling.into(),
            pct_of_bound: f64::NAN,
            speedup_vs_naive: None,
            peer_version: None,
            max_abs_err: before.max_abs_err().max(after.max_abs_err()),
            max_rel_err: before.max_rel_err().max(after.max_rel_err()),
            tolerances: after.outputs.iter().map(|(name, c)| format!("{name}: {}", c.tolerance.name)).collect(),
            device_split,
            plan: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faulty::Faulty;
    use crate::problem::{Inputs, Oracle, upload};
    use kernels_naive::Naive;

    /// The quick policy without its time cap: on a loaded machine one naive
    /// call can take longer than the cap, which would stop the repeats these
    /// tests count on.
    fn unhurried() -> Policy {
        Policy { time_cap: Duration::from_secs(600), ..Policy::quick() }
    }

    fn run_on(backend: &Faulty) -> Result<Record> {
        let shape = Shape::parse("lenet-c2").unwrap();
        let op = Op::ConvForward;
        let inputs = Inputs::generate(&shape).unwrap();
        let mut oracle = Oracle::new(Naive::<f64>::new());
        oracle.prepare(op, &shape, &inputs).unwrap();
        let expected = oracle.expected(op, &shape).unwrap();
        let device = upload(backend, &inputs).unwrap();
        let job = Job {
            backend,
            kind: "faulty",
            profile: &NoProfile,
            op,
            shape: &shape,
            inputs: &device,
            expected: &expected,
            policy: &unhurried(),
            compute_ceiling: "sgemm",
            upload_ns: 0,
        };
        job.run()
    }

    #[test]
    fn a_right_kernel_is_timed_and_costed() {
        let record = run_on(&Faulty::new(usize::MAX)).unwrap();
        assert_eq!(
            (record.op.as_str(), record.shape.as_str(), record.backend.as_str()),
            ("conv-fwd", "lenet-c2", "faulty")
        );
        assert!(record.repeats >= Policy::quick().min_repeats);
        assert!(record.min_ms <= record.median_ms && record.median_ms <= record.max_ms);
        assert_eq!(record.flops, 2 * 256 * 16 * 10 * 10 * 6 * 25);
        assert!(record.gflops > 0.0 && record.max_abs_err < 1e-4, "{record:?}");
    }

    #[test]
    fn a_wrong_kernel_is_never_timed() {
        let backend = Faulty::new(1);
        match run_on(&backend) {
            Err(HarnessError::Validation { stage, op, shape, backend: kind, detail }) => {
                assert_eq!(
                    (stage, op.as_str(), shape.as_str(), kind.as_str()),
                    ("before timing", "conv-fwd", "lenet-c2", "faulty")
                );
                assert!(detail.contains("y: 1 of") && detail.contains("[0]"), "{detail}");
            }
            other => panic!("expected a validation failure, got {other:?}"),
        }
        // Only the validating call ran.
        assert_eq!(backend.conv_forward_calls(), 1);
    }

    #[test]
    fn a_kernel_that_goes_wrong_while_timed_is_caught_after_timing() {
        match run_on(&Faulty::new(3)) {
            Err(HarnessError::Validation { stage, .. }) => assert_eq!(stage, "after timing"),
            other => panic!("expected a validation failure after timing, got {other:?}"),
        }
    }
}
