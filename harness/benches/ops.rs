//! Criterion benches of every op on the suite shapes, per backend.
//!
//! - One group per op (`conv-fwd`, `conv-bwd`, `conv-dx`, `conv-dw`,
//!   `conv-db`, `pool-fwd`, `pool-bwd` (max pooling), `avgpool-fwd`,
//!   `avgpool-bwd`, `linear-fwd`, `linear-bwd`, `bn-train`, `bn-bwd`,
//!   `bn-eval`, `dropout-fwd`, `dropout-bwd` on NORM_SUITE's shapes), ids
//!   `backend/shape`, `Throughput::Elements(flops)` printed as GFLOP/s by
//!   [`FlopTime`] (criterion's own formatter would say "Gelem/s"; FLOPs from
//!   kernels_core::cost, multiply + add = 2).
//! - Each benchmark validates once against the f64 naive oracle before it
//!   is timed (only when criterion's filter selects it), and exits non-zero
//!   on a mismatch. Each timed call is synchronised (OpenCL) inside the
//!   timed region; outputs are dropped outside it, as in the harness binary.
//! - Budget: 10 samples, 0.5 s warm-up and 2 s measurement per benchmark,
//!   flat sampling: the whole run (117 benchmarks) took 6 min 13 s on 2 cores
//!   before average pooling, batch norm and dropout added 57 more (12 pool,
//!   45 norm; 2 more for candle) at the same budget each; the whole run has
//!   not been timed since.
//!   The naive backend is benchmarked only where one call is at most
//!   150 MFLOP (the lenet-* and simplecnn-c1 convs, every pool, linear and
//!   norm shape): it is the baseline, not the subject.
//! - Dropout benches every backend with the same mask (p = 0.5, one fixed
//!   seed and step: [`harness::ops::DROPOUT`]); each bn-train call
//!   re-uploads the two [C] running statistics it updates, so every call
//!   starts from the same state and its outputs validate.
//! - With `--features candle`, candle-core's CPU op runs in the same group
//!   (id `candle/shape`) where candle can run it alone (see candle_peer).
//!   PyTorch is not a criterion function: it runs in the harness binary.
//! - Filter: `cargo bench -p harness --bench ops -- 'conv-fwd/im2col'`
//!   (`make bench BENCH=...`); `HARNESS_BENCH_BACKENDS=im2col,opencl`
//!   restricts the backends; `--threads` is fixed at 2 (im2col's pool).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use harness::backends::{BackendKind, Backends};
use harness::cli::{PeerMode, Selection};
use harness::ops::{Op, Shape};
use harness::problem::{DeviceInputs, Inputs, Oracle, run_op, upload, validate};
use harness::timing::scale_flop_rate;
use kernels_core::Backend;
use kernels_naive::Naive;

const THREADS: usize = 2;

/// Wall time, as criterion's `WallTime`, with throughput in FLOP/s: every
/// group's `Throughput::Elements` is a FLOP count.
struct FlopTime;

struct FlopFormatter;

impl ValueFormatter for FlopFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        WallTime.formatter().scale_values(typical_ns, values)
    }

    fn scale_throughputs(&self, typical_ns: f64, throughput: &Throughput, values: &mut [f64]) -> &'static str {
        match *throughput {
            Throughput::Elements(flops) | Throughput::ElementsAndBytes { elements: flops, .. } => {
                scale_flop_rate(flops as f64, typical_ns, values)
            }
            _ => WallTime.formatter().scale_throughputs(typical_ns, throughput, values),
        }
    }

    fn scale_for_machines(&self, values: &mut [f64]) -> &'static str {
        WallTime.formatter().scale_for_machines(values)
    }
}

impl Measurement for FlopTime {
    type Intermediate = Instant;
    type Value = Duration;

    fn start(&self) -> Instant {
        WallTime.start()
    }
    fn end(&self, started: Instant) -> Duration {
        WallTime.end(started)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        WallTime.to_f64(value)
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &FlopFormatter
    }
}
const NAIVE_MAX_FLOPS: u64 = 150_000_000;

/// A benchmark cannot return an error: print it and stop with status 1.
fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("bench {what}: {e}");
    std::process::exit(1)
}

/// Inputs and oracle outputs, built on first use and shared by every bench.
struct Shared {
    oracle: Oracle<Naive<f64>>,
    inputs: HashMap<&'static str, Inputs>,
}

impl Shared {
    fn inputs(&mut self, shape: &Shape) -> &Inputs {
        self.inputs
            .entry(shape.name())
            .or_insert_with(|| Inputs::generate(shape).unwrap_or_else(|e| fail(shape.name(), e)))
    }
}

/// Uploads the inputs and validates one call against the oracle.
fn prepare<B: Backend<Elem = f32>>(shared: &mut Shared, be: &B, id: &str, op: Op, shape: &Shape) -> DeviceInputs<B> {
    let inputs = shared.inputs(shape).clone();
    shared.oracle.prepare(op, shape, &inputs).unwrap_or_else(|e| fail(id, e));
    let device = upload(be, &inputs).unwrap_or_else(|e| fail(id, e));
    let outputs = run_op(be, op, shape, &device).unwrap_or_else(|e| fail(id, e));
    let expected = shared.oracle.expected(op, shape).unwrap_or_else(|e| fail(id, e));
    let check = validate(be, op, shape, &outputs, &expected).unwrap_or_else(|e| fail(id, e));
    if !check.passed() {
        fail(id, format!("validation failed before timing\n{}", check.failures()));
    }
    device
}

fn bench_one<B: Backend<Elem = f32>>(
    group: &mut BenchmarkGroup<FlopTime>,
    shared: &mut Shared,
    kind: BackendKind,
    be: &B,
    op: Op,
    shape: &Shape,
) {
    let id = format!("{}/{}/{}", op.name(), kind.name(), shape.name());
    let mut device: Option<DeviceInputs<B>> = None;
    group.bench_function(BenchmarkId::new(kind.name(), shape.name()), |b| {
        let inputs = device.get_or_insert_with(|| prepare(shared, be, &id, op, shape));
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let out = run_op(be, op, shape, inputs).unwrap_or_else(|e| fail(&id, e));
                be.sync().unwrap_or_else(|e| fail(&id, e));
                total += start.elapsed();
                drop(std::hint::black_box(out));
            }
            total
        });
    });
}

/// candle's CPU op beside ours in the same group (cargo feature `candle`),
/// validated once before it is timed; ops candle cannot run alone are left out.
#[cfg(feature = "candle")]
fn bench_candle(
    group: &mut BenchmarkGroup<FlopTime>,
    shared: &mut Shared,
    peer: &harness::candle_peer::CandlePeer,
    op: Op,
    shape: &Shape,
) {
    if !harness::candle_peer::CandlePeer::supports(op, shape) {
        return;
    }
    let id = format!("{}/candle/{}", op.name(), shape.name());
    let inputs = shared.inputs(shape).clone();
    shared.oracle.prepare(op, shape, &inputs).unwrap_or_else(|e| fail(&id, e));
    let expected: Vec<kernels_core::Tensor<f64>> =
        shared.oracle.expected(op, shape).unwrap_or_else(|e| fail(&id, e)).into_iter().cloned().collect();
    let mut call = None;
    group.bench_function(BenchmarkId::new("candle", shape.name()), |b| {
        let call = call.get_or_insert_with(|| {
            let expected: Vec<&kernels_core::Tensor<f64>> = expected.iter().collect();
            peer.bench_call(op, shape, &inputs, &expected)
                .unwrap_or_else(|e| fail(&id, e))
                .unwrap_or_else(|| fail(&id, "candle cannot run it"))
        });
        b.iter(|| call().unwrap_or_else(|e| fail(&id, e)));
    });
}

/// The backends to bench, and those named explicitly (which must start;
/// without HARNESS_BENCH_BACKENDS, OpenCL is skipped with a message when it
/// cannot start).
fn selected_backends() -> (Vec<BackendKind>, Vec<BackendKind>) {
    match std::env::var("HARNESS_BENCH_BACKENDS") {
        Ok(list) if !list.trim().is_empty() => {
            let kinds: Vec<BackendKind> = list
                .split(',')
                .map(|name| BackendKind::parse(name.trim()).unwrap_or_else(|| fail("HARNESS_BENCH_BACKENDS", name)))
                .collect();
            (kinds.clone(), kinds)
        }
        _ => (BackendKind::ALL.to_vec(), Vec::new()),
    }
}

fn ops(c: &mut Criterion<FlopTime>) {
    let (backends, required) = selected_backends();
    let selection = Selection { backends, required, ops: Op::ALL.to_vec(), shapes: Shape::all(), peers: PeerMode::Off };
    let mut notes = Vec::new();
    let backends = Backends::build(&selection, THREADS, None, Default::default(), None, &mut notes)
        .unwrap_or_else(|e| fail("setup", e));
    notes.iter().for_each(|n| eprintln!("bench: {n}"));
    let mut shared = Shared { oracle: Oracle::new(Naive::<f64>::new()), inputs: HashMap::new() };
    #[cfg(feature = "candle")]
    let candle = harness::candle_peer::CandlePeer::new(THREADS).unwrap_or_else(|e| fail("candle", e));
    for op in Op::ALL {
        let mut group = c.benchmark_group(op.name());
        group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
        group.sampling_mode(SamplingMode::Flat);
        for shape in Shape::all().iter().filter(|s| s.family() == op.family()) {
            let flops = match shape.cost(op) {
                Ok(Some(cost)) => cost.flops,
                Ok(None) => continue,
                Err(e) => fail(shape.name(), e),
            };
            group.throughput(Throughput::Elements(flops));
            if let Some(be) = &backends.naive
                && flops <= NAIVE_MAX_FLOPS
            {
                bench_one(&mut group, &mut shared, BackendKind::Naive, be, op, shape);
            }
            if let Some(be) = &backends.im2col {
                bench_one(&mut group, &mut shared, BackendKind::Im2col, be, op, shape);
            }
            if let Some(be) = &backends.opencl {
                bench_one(&mut group, &mut shared, BackendKind::OpenCl, be, op, shape);
            }
            #[cfg(feature = "candle")]
            bench_candle(&mut group, &mut shared, &candle, op, shape);
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(FlopTime);
    targets = ops
}
criterion_main!(benches);
