//! The results.json schema (version 3): [`Report`] and its parts. The same
//! description is written beside every results.json as SCHEMA.md
//! ([`SCHEMA_MD`]).

use serde::{Deserialize, Serialize};

use crate::ceilings::{Ceiling, FmaPeak};
use crate::machine::{Machine, Revision};
use crate::peers::PeerStatus;
use crate::timing::PolicySummary;

/// The same-run ceilings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ceilings {
    pub sgemm: Ceiling,
    pub copy: Ceiling,
    pub opencl_gemm: Option<Ceiling>,
    /// Per ISA this CPU runs and per thread count ([`crate::ceilings::fma_peaks`]).
    pub fma: Vec<FmaPeak>,
}

impl Ceilings {
    /// Per ceiling, the better of two measurements of it (taken before and
    /// after the kernels, so a burst of other load does not set the roof).
    pub fn best_of(self, other: Ceilings) -> Ceilings {
        let better = |a: Ceiling, b: Ceiling| if b.rate > a.rate { b } else { a };
        Ceilings {
            sgemm: better(self.sgemm, other.sgemm),
            copy: better(self.copy, other.copy),
            opencl_gemm: match (self.opencl_gemm, other.opencl_gemm) {
                (Some(a), Some(b)) => Some(better(a, b)),
                (a, b) => a.or(b),
            },
            fma: best_fma(self.fma, other.fma),
        }
    }

    /// The FMA peak at `isa` on `threads` threads, if measured.
    pub fn fma_peak(&self, isa: &str, threads: usize) -> Option<&Ceiling> {
        self.fma.iter().find(|p| p.isa == isa && p.threads == threads).map(|p| &p.ceiling)
    }

    /// The roofline bound in GFLOP/s at `intensity` under the compute
    /// ceiling `compute` ("sgemm" or "opencl_gemm"; OpenCL without its own
    /// ceiling falls back to sgemm): min(compute, intensity x copy).
    pub fn bound(&self, compute: &str, intensity: f64) -> f64 {
        let peak = match (compute, &self.opencl_gemm) {
            ("opencl_gemm", Some(cl)) => cl.rate,
            _ => self.sgemm.rate,
        };
        peak.min(intensity * self.copy.rate)
    }
}

/// Per (ISA, threads) of `a`, the better of its measurements in `a` and `b`.
fn best_fma(a: Vec<FmaPeak>, b: Vec<FmaPeak>) -> Vec<FmaPeak> {
    a.into_iter()
        .map(|p| match b.iter().find(|q| q.isa == p.isa && q.threads == p.threads) {
            Some(q) if q.ceiling.rate > p.ceiling.rate => q.clone(),
            _ => p,
        })
        .collect()
}

/// OpenCL event-profiling split of one call (averaged over the timed repeats).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DeviceSplit {
    /// Time the device spent in kernels per call.
    pub kernel_ms: f64,
    /// Time spent in host <-> device transfers per call.
    pub transfer_ms: f64,
    pub launches_per_call: f64,
    pub transfers_per_call: f64,
    /// Device time of uploading the shape's inputs (x, weights, bias, dy)
    /// once, before the ops ran: what a host-resident caller would add.
    pub upload_ms: f64,
    /// Device time of downloading this op's outputs (once, for validation).
    pub download_ms: f64,
}

/// One op on one shape on one backend: validated, then timed, then
/// validated again on the last timed call's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// conv-fwd, conv-bwd, conv-dx, conv-dw, conv-db, pool-fwd, pool-bwd
    /// (max pooling), avgpool-fwd, avgpool-bwd, linear-fwd, linear-bwd,
    /// bn-train, bn-bwd, bn-eval, dropout-fwd, dropout-bwd.
    pub op: String,
    /// A suite shape name (kernels_core::suite).
    pub shape: String,
    /// naive, im2col or opencl; or a peer measured in the same run
    /// (pytorch), validated against the same oracle.
    pub backend: String,
    /// The backend's own description (`Backend::name`).
    pub backend_name: String,
    /// `Backend::threads`: host threads, or compute units for OpenCL.
    pub threads: usize,
    /// Analytic FLOPs of one call (kernels_core::cost; multiply + add = 2).
    pub flops: u64,
    /// Minimal bytes of one call: inputs read once, outputs written once.
    pub bytes: u64,
    /// flops / bytes.
    pub intensity: f64,
    pub repeats: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// flops / median time.
    pub gflops: f64,
    /// bytes / median time.
    pub gbps: f64,
    /// The roofline bound this record is held to: min(compute ceiling,
    /// intensity x copy bandwidth), in GFLOP/s.
    pub bound_gflops: f64,
    /// Which compute ceiling: "sgemm" (CPU backends) or "opencl_gemm".
    pub compute_ceiling: String,
    /// 100 x gflops / bound_gflops.
    pub pct_of_bound: f64,
    /// naive f32's median / this median, when naive ran on this op and shape.
    pub speedup_vs_naive: Option<f64>,
    /// A peer's library version (torch.__version__); None for our backends.
    pub peer_version: Option<String>,
    /// Largest |actual - expected| against the f64 oracle over every output
    /// and both validations.
    pub max_abs_err: f64,
    /// Largest relative error over elements with a non-zero expected value.
    pub max_rel_err: f64,
    /// The tolerances the outputs passed, by name.
    pub tolerances: Vec<String>,
    /// OpenCL only: kernel versus transfer time from event profiling.
    pub device_split: Option<DeviceSplit>,
    /// im2col conv rows: the planner's choice for the shape (each pass's
    /// algorithm and the ISA), from `Im2col::conv_plan`.
    #[serde(default)]
    pub plan: Option<String>,
}

/// The largest value [`Report::check_values`] accepts in any field: far
/// above any real rate (GFLOP/s, GB/s, examples/s) or time in ms, far below
/// where a log axis's bounds overflow.
pub const PLAUSIBLE_MAX: f64 = 1e12;

/// LeNet training throughput of one model on one backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LenetRecord {
    /// lenet5, lenet5-bn, mxnet-lenet or simplecnn (`lenet --model`).
    pub model: String,
    /// Dropout probability before every dense layer (`--lenet-dropout`);
    /// None: no dropout layers.
    pub dropout: Option<f64>,
    pub backend: String,
    pub backend_name: String,
    pub batch: usize,
    /// Timed training steps (after warm-up steps that are not counted).
    pub steps: usize,
    pub warmup_steps: usize,
    pub seconds: f64,
    pub examples_per_s: f64,
    /// Mean loss over the first and the last timed step: training moved.
    pub first_loss: f64,
    pub last_loss: f64,
    /// Where the examples came from (Fashion-MNIST files or synthetic).
    pub data: String,
    /// With `--lenet-epochs`: the test accuracy after that many epochs of
    /// full training from the same initial weights.
    pub accuracy: Option<LenetAccuracy>,
}

/// Test accuracy after `epochs` epochs of training (`--lenet-epochs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LenetAccuracy {
    pub epochs: usize,
    /// Initial weights and every epoch's shuffle (lenet's `--seed`).
    pub seed: u64,
    /// The optimiser and its hyper-parameters, in words.
    pub optimizer: String,
    pub batch: usize,
    /// Training examples per epoch (the last batch of an epoch may be smaller)
    /// and test examples evaluated.
    pub train_examples: usize,
    pub test_examples: usize,
    /// Fraction of the test examples classified right after the last epoch.
    pub test_accuracy: f64,
    /// Mean test cross-entropy after the last epoch.
    pub test_loss: f64,
    /// Wall time of the training loops (evaluation excluded) and
    /// epochs x train_examples over it.
    pub train_seconds: f64,
    pub examples_per_s: f64,
}

/// Everything one run wrote to results.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub date_utc: String,
    pub command: String,
    pub revision: Revision,
    pub machine: Machine,
    pub threads: usize,
    pub opencl_device: Option<String>,
    pub quick: bool,
    /// How each kernel was timed.
    pub timing: PolicySummary,
    pub ceilings: Ceilings,
    pub records: Vec<Record>,
    pub lenet: Vec<LenetRecord>,
    /// Every peer the run tried: measured (version, threads) or skipped (why).
    pub peers: Vec<PeerStatus>,
    pub notes: Vec<String>,
}

impl Report {
    pub const SCHEMA: u32 = 3;

    /// Fills `speedup_vs_naive` from the naive records of the same op and shape.
    pub fn fill_speedups(&mut self) {
        let naive: Vec<(String, String, f64)> = self
            .records
            .iter()
            .filter(|r| r.backend == "naive")
            .map(|r| (r.op.clone(), r.shape.clone(), r.median_ms))
            .collect();
        for r in &mut self.records {
            r.speedup_vs_naive = naive
                .iter()
                .find(|(op, shape, _)| *op == r.op && *shape == r.shape)
                .map(|(_, _, naive_ms)| naive_ms / r.median_ms);
        }
    }

    /// Fills `bound_gflops` and `pct_of_bound` from the final ceilings.
    pub fn apply_bounds(&mut self) {
        for r in &mut self.records {
            r.bound_gflops = self.ceilings.bound(&r.compute_ceiling, r.intensity);
            r.pct_of_bound = 100.0 * r.gflops / r.bound_gflops;
        }
    }

    /// Every number a chart or table is drawn from must be one a run can
    /// produce: finite, not negative, at most [`PLAUSIBLE_MAX`]. Returns the
    /// first offending field, named.
    pub fn check_values(&self) -> std::result::Result<(), String> {
        let check = |what: String, v: f64| {
            if v.is_finite() && (0.0..=PLAUSIBLE_MAX).contains(&v) {
                Ok(())
            } else {
                Err(format!("{what} is {v:e}, not a value a run can produce (finite, 0 to {PLAUSIBLE_MAX:e})"))
            }
        };
        let c = &self.ceilings;
        for (name, ceiling) in
            [("sgemm", Some(&c.sgemm)), ("copy", Some(&c.copy)), ("opencl_gemm", c.opencl_gemm.as_ref())]
        {
            if let Some(ceiling) = ceiling {
                check(format!("ceilings.{name}.rate"), ceiling.rate)?;
                check(format!("ceilings.{name}.rate_median"), ceiling.rate_median)?;
            }
        }
        for p in &c.fma {
            check(format!("ceilings.fma {} {} threads: rate", p.isa, p.threads), p.ceiling.rate)?;
            check(format!("ceilings.fma {} {} threads: rate_median", p.isa, p.threads), p.ceiling.rate_median)?;
        }
        for r in &self.records {
            let at = |field: &str| format!("record {} {} {}: {field}", r.op, r.shape, r.backend);
            for (field, v) in [
                ("intensity", r.intensity),
                ("median_ms", r.median_ms),
                ("min_ms", r.min_ms),
                ("max_ms", r.max_ms),
                ("gflops", r.gflops),
                ("gbps", r.gbps),
                ("bound_gflops", r.bound_gflops),
                ("pct_of_bound", r.pct_of_bound),
                ("max_abs_err", r.max_abs_err),
                ("max_rel_err", r.max_rel_err),
            ] {
                check(at(field), v)?;
            }
            if let Some(s) = r.speedup_vs_naive {
                check(at("speedup_vs_naive"), s)?;
            }
        }
        for l in &self.lenet {
            check(format!("lenet {} {}: examples_per_s", l.model, l.backend), l.examples_per_s)?;
            check(format!("lenet {} {}: seconds", l.model, l.backend), l.seconds)?;
            if let Some(a) = &l.accuracy {
                check(format!("lenet {} {}: test_accuracy", l.model, l.backend), a.test_accuracy)?;
                if a.test_accuracy > 1.0 {
                    return Err(format!(
                        "lenet {} {}: test_accuracy {} is above 1",
                        l.model, l.backend, a.test_accuracy
                    ));
                }
                check(format!("lenet {} {}: accuracy examples_per_s", l.model, l.backend), a.examples_per_s)?;
            }
        }
        Ok(())
    }

    /// The record of `op` on `shape` by `backend`, if measured.
    pub fn find(&self, op: &str, shape: &str, backend: &str) -> Option<&Record> {
        self.records.iter().find(|r| r.op == op && r.shape == shape && r.backend == backend)
    }
}

/// A small report with one conv-fwd lenet-c2 record per (backend, median ms),
/// for the writers' tests.
#[cfg(test)]
pub(crate) fn sample_report(records: &[(&str, f64)]) -> Report {
    use crate::timing::Stats;
    let record = |backend: &str, median_ms: f64| Record {
        op: "conv-fwd".into(),
        shape: "lenet-c2".into(),
        backend: backend.into(),
        backend_name: backend.into(),
        threads: 2,
        flops: 122_880_000,
        bytes: 1_000_000,
        intensity: 122.88,
        repeats: 5,
        median_ms,
        min_ms: median_ms * 0.9,
        max_ms: median_ms * 1.2,
        gflops: 122.88 / median_ms,
        gbps: 1.0 / median_ms,
        bound_gflops: 100.0,
        compute_ceiling: "sgemm".into(),
        pct_of_bound: 122.88 / median_ms,
        speedup_vs_naive: None,
        peer_version: (backend == "pytorch").then(|| "2.15.0".to_string()),
        max_abs_err: 1e-6,
        max_rel_err: 1e-5,
        tolerances: vec!["y: test".into()],
        device_split: None,
        plan: None,
    };
    let stats = Stats { repeats: 3, median_s: 0.1, min_s: 0.09, max_s: 0.12 };
    let ceiling =
        |unit: &str| Ceiling { what: "test".into(), rate: 100.0, rate_median: 90.0, unit: unit.into(), timing: stats };
    Report {
        schema: Report::SCHEMA,
        date_utc: "2026-01-01T00:00:00Z".into(),
        command: "harness".into(),
        revision: Revision { commit: "abc1234".into(), dirty: false },
        machine: Machine {
            cpu_model: "cpu".into(),
            cores: 2,
            simd: vec![],
            memory_gib: 1.0,
            os: "os".into(),
            backend_isa: vec![],
        },
        threads: 2,
        opencl_device: None,
        quick: false,
        timing: PolicySummary::from(&crate::timing::Policy::full()),
        ceilings: Ceilings { sgemm: ceiling("GFLOP/s"), copy: ceiling("GB/s"), opencl_gemm: None, fma: vec![] },
        records: records.iter().map(|&(b, ms)| record(b, ms)).collect(),
        lenet: vec![],
        peers: vec![],
        notes: vec![],
    }
}

/// SCHEMA.md, written beside results.json.
pub const SCHEMA_MD: &str = r#"# results.json, schema version 3

Written by the harness (`make report`, or `cargo run --release -p harness -- --out DIR`).
Every number was measured in the run that wrote the file, peers included: nothing
comes from another run or machine. Units are in the field names.

Version 3 (from 2): `machine.backend_isa` (the instruction set each backend ran at),
`ceilings.fma` (an FMA peak per ISA and thread count), and per-model LeNet records
(`lenet[].model`, `dropout`, and `accuracy` with `--lenet-epochs`).

Version 2 (from 1): peers. Records of a peer measured in the same run (backend
"pytorch", or "candle" with the cargo feature `candle`) sit beside ours, validated against the same f64 oracle; `peer_version`
replaces `pytorch_ms` (DESIGN.md's static figures, gone); `peers` says which peers
ran (version, threads) or why they were skipped.

```text
{
  "schema": 3,
  "date_utc": "2026-11-22T02:40:00Z",        system clock when the run started
  "command": "harness --out reports --lenet", the run's arguments
  "revision": { "commit": "ff222e3", "dirty": false },   git rev-parse --short HEAD; tracked files changed?
  "machine": { "cpu_model": "AMD EPYC", "cores": 2, "simd": ["avx2", "fma", "avx512f"],
               "memory_gib": 23.4, "os": "linux x86_64",   from /proc/cpuinfo and /proc/meminfo
               "backend_isa": [ { "backend": "im2col", "isa": "avx512", "detail": "..." }, ... ] },
                                              per backend run: naive "portable" (plain Rust); im2col its
                                              kernels' ISA (Im2col::isa: the CPU's best, capped by --isa or
                                              KERNELS_ISA); opencl "device" (detail names the device)
  "threads": 2,                               CPU threads of im2col and the CPU ceilings
  "opencl_device": "Portable Computing Language / pthread-...", or null when OpenCL was not run
  "quick": false,                             --quick: few repeats, for CI, not for reading
  "timing": { "warmup_s", "min_repeats", "min_time_s", "time_cap_s", "max_repeats", "rounds" }
                                              repeat at least min_repeats times and min_time_s, stop
                                              early at time_cap_s (slow kernels), never past max_repeats;
                                              rounds (--rounds, 1 when absent): each shape's backends
                                              (but naive) and peers timed that many times back to back,
                                              each record the round with the lowest median
  "ceilings": {                                each measured before and after the kernels; the better run
    "sgemm":       Ceiling,                   matrixmultiply sgemm n=2048, rows split over the threads
    "copy":        Ceiling,                   256 MiB copy, read + write bytes counted
    "opencl_gemm": Ceiling or null,           best OpenCL GEMM (linear_forward) over square sizes
    "fma": [ { "isa": "avx512", "threads": 2, "ceiling": Ceiling }, ... ]
                                              FMA peak: independent multiply-add chains in registers, per
                                              ISA this CPU runs (portable, avx2, avx512) at 1 thread and at
                                              "threads"; FLOPs = 2 per lane per step
  },
  "records": [ Record, ... ],                 one per op x shape x backend
  "lenet":   [ LenetRecord, ... ],            with --lenet, else empty
  "peers":   [ PeerStatus, ... ],             each peer the run tried
  "notes":   [ "..." ]                        what was skipped, and why
}

Ceiling = { "what": "...", "rate": 270.1, "rate_median": 262.0, "unit": "GFLOP/s" | "GB/s", "timing": Stats }
          rate: at the fastest repeat (the ceiling); rate_median: at the median repeat
Stats   = { "repeats": 7, "median_s": 0.063, "min_s": 0.061, "max_s": 0.070 }

Record = {
  "op": "conv-fwd",            conv-fwd, conv-bwd (dx+dw+db in one call), conv-dx, conv-dw, conv-db,
                               pool-fwd, pool-bwd (max pooling), avgpool-fwd, avgpool-bwd (average
                               pooling, padding counted in the divisor), linear-fwd, linear-bwd (dx+dw+db),
                               bn-train (batch norm training forward: y, saved mean and inv_std, running
                               statistics), bn-bwd (dx+dgamma+dbeta), bn-eval, dropout-fwd, dropout-bwd
                               (p = 0.5; a peer's own mask is checked by pattern: 0 or 2x, kept fraction)
  "shape": "lenet-c1",         a kernels_core::suite name
  "backend": "im2col",         naive (f32), im2col, opencl; or a peer: pytorch, candle (same inputs, same
                               threads, same repeat policy, outputs validated before and after timing)
  "backend_name": "...",       Backend::name()
  "threads": 2,                Backend::threads(): host threads, or OpenCL compute units; a peer's own
                               thread count (torch.get_num_threads())
  "flops": 60211200,           analytic FLOPs of one call (kernels_core::cost, multiply + add = 2)
  "bytes": 1234,               minimal bytes of one call: inputs read once, outputs written once
  "intensity": 12.3,           flops / bytes
  "repeats": 21, "median_ms": 1.2, "min_ms": 1.1, "max_ms": 1.5,
  "gflops": 50.1,              flops / median
  "gbps": 4.1,                 bytes / median
  "bound_gflops": 270.1,       roofline bound: min(compute ceiling, intensity x copy rate)
  "compute_ceiling": "sgemm",  sgemm for CPU backends, opencl_gemm for OpenCL
  "pct_of_bound": 18.5,        100 x gflops / bound_gflops
  "speedup_vs_naive": 40.2,    naive f32 median / this median; null without a naive record
  "peer_version": "2.15.0",    a peer's library version (torch.__version__, candle-core's pin); null for ours
  "max_abs_err": 1e-6,         worst |actual - expected| against the f64 oracle, both validations
  "max_rel_err": 1e-5,         worst relative error over elements with expected != 0
  "tolerances": ["y: f32 reduction over 26 terms ..."],  the named tolerance of each output
  "device_split": null or { "kernel_ms", "transfer_ms", "launches_per_call", "transfers_per_call",
                             "upload_ms", "download_ms" }
                               OpenCL event profiling: kernel and transfer time per timed call (inputs and
                               outputs stay on the device, so transfer_ms is what an op moves by itself);
                               upload_ms: the shape's inputs uploaded once; download_ms: this op's outputs
  "plan": null or "forward Unfold, dx Col2im, dw Unfold, db Sum, isa avx512"
                               im2col conv rows: the planner's algorithm per pass and the ISA (Im2col::conv_plan;
                               --isa or KERNELS_ISA cap it); null for other rows
}

LenetRecord = {                               one per model x backend (--lenet-models)
  "model": "lenet5",                         lenet5, lenet5-bn, mxnet-lenet, simplecnn (lenet --model)
  "dropout": null or 0.5,                    --lenet-dropout: before every dense layer
  "backend", "backend_name",                 naive, im2col, opencl, or pytorch (the peer: same model,
                                              initial weights, batches and Adam; its step-0 loss, in
                                              training mode with dropout off, checked against the f64
                                              reference first)
  "batch": 256, "steps": 20, "warmup_steps": 3,   naive runs at most 3 timed steps after 1 warm-up
  "seconds": 1.9, "examples_per_s": 2700.0,   timed steps x batch / seconds
  "first_loss": 2.30, "last_loss": 1.90,      training loss at the first and last timed step
  "data": "Fashion-MNIST train ..."          where the batches came from
  "accuracy": null or {                      --lenet-epochs N (im2col, opencl, and the peer; not naive)
    "epochs": 2, "seed": 7, "optimizer": "Adam lr 0.001 ...", "batch": 256,
    "train_examples": 60000, "test_examples": 10000,
    "test_accuracy": 0.87, "test_loss": 0.35,   after the last epoch, evaluation mode
    "train_seconds": 30.1, "examples_per_s": 4000.0   training loops only, evaluation excluded
  }
}

PeerStatus = {
  "peer": "pytorch" | "candle",
  "command": "python3 -c <harness/peers/torch_ops.py>",   how it was started (--python / KERNELS_PYTHON);
                                              "in process" for candle
  "info": null or { "peer", "version": "2.15.0", "threads": 2, "python": "3.11.7",
                    "detail": "PyTorch 2.15.0 CPU, 2 threads, ISA AVX512" },
  "skipped": null or "torch is not importable by ...: No module named 'torch'"
             (candle: "this harness was built without the cargo feature `candle` ...")
}
```
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::Stats;

    fn ceiling(rate: f64) -> Ceiling {
        let timing = Stats { repeats: 1, median_s: 1.0, min_s: 1.0, max_s: 1.0 };
        Ceiling { what: format!("{rate}"), rate, rate_median: rate, unit: "GFLOP/s".into(), timing }
    }

    #[test]
    fn best_of_keeps_the_better_measurement_and_bounds_follow_the_roofline() {
        let fma = |isa: &str, threads, rate| FmaPeak { isa: isa.into(), threads, ceiling: ceiling(rate) };
        let first = Ceilings {
            sgemm: ceiling(200.0),
            copy: ceiling(30.0),
            opencl_gemm: None,
            fma: vec![fma("avx2", 1, 50.0), fma("avx2", 2, 90.0)],
        };
        let second = Ceilings {
            sgemm: ceiling(250.0),
            copy: ceiling(20.0),
            opencl_gemm: Some(ceiling(90.0)),
            fma: vec![fma("avx2", 2, 95.0), fma("avx2", 1, 40.0)],
        };
        let best = first.best_of(second);
        assert_eq!(best.fma_peak("avx2", 1).map(|c| c.rate), Some(50.0));
        assert_eq!(best.fma_peak("avx2", 2).map(|c| c.rate), Some(95.0));
        assert!(best.fma_peak("avx512", 1).is_none());
        assert_eq!((best.sgemm.rate, best.copy.rate), (250.0, 30.0));
        assert_eq!(best.opencl_gemm.as_ref().map(|c| c.rate), Some(90.0));
        assert_eq!(best.bound("sgemm", 1.0), 30.0);
        assert_eq!(best.bound("sgemm", 100.0), 250.0);
        assert_eq!(best.bound("opencl_gemm", 100.0), 90.0);

        let mut report = sample_report(&[("naive", 40.0), ("im2col", 2.0)]);
        report.fill_speedups();
        report.apply_bounds();
        let im2col = report.find("conv-fwd", "lenet-c2", "im2col").unwrap();
        assert_eq!(im2col.speedup_vs_naive, Some(20.0));
        // Sample ceilings are 100 GFLOP/s and 100 GB/s; intensity 122.88.
        assert_eq!(im2col.bound_gflops, 100.0);
        assert!((im2col.pct_of_bound - 61.44).abs() < 1e-9);
    }

    #[test]
    fn results_json_round_trips_for_replot() {
        let mut report = sample_report(&[("naive", 40.0), ("opencl", 4.0)]);
        report.records[1].device_split = Some(DeviceSplit {
            kernel_ms: 3.5,
            transfer_ms: 0.0,
            launches_per_call: 2.0,
            transfers_per_call: 0.0,
            upload_ms: 0.1,
            download_ms: 0.05,
        });
        let json = serde_json::to_string_pretty(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string_pretty(&back).unwrap(), json);
        assert_eq!(crate::markdown::render(&back), crate::markdown::render(&report));
    }
}
