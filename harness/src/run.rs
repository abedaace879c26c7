//! One harness run: ceilings first, then every shape (inputs generated and
//! the f64 oracle run once per shape), every op that runs on it, every
//! selected backend; then LeNet throughput and the files.

use std::path::Path;
use std::time::Instant;

use kernels_core::Backend;
use kernels_naive::Naive;

use crate::backends::{BackendKind, Backends, ClProfile, opencl_gemm_ceiling};
use crate::ceilings;
use crate::cli::{Args, Selection};
use crate::error::{HarnessError, Result};
use crate::machine::{Machine, Revision, utc_now};
use crate::markdown::{self, sig};
use crate::measure::{DeviceProfile, Job, NoProfile};
use crate::ops::{Op, Shape};
use crate::problem::{Inputs, Oracle, upload};
use crate::progress::Progress;
use crate::results::{Ceilings, Record, Report, SCHEMA_MD};
use crate::timing::{Policy, PolicySummary};
use crate::{charts, lenet_throughput};

/// sgemm ceiling size (DESIGN.md: n = 2048) and copy buffer size.
const SGEMM_N: usize = 2048;
const COPY_BYTES: usize = 256 << 20;

/// Everything the measuring loop shares.
struct Context<'a> {
    policy: Policy,
    progress: &'a mut Progress,
    records: Vec<Record>,
}

fn summary(r: &Record) -> String {
    format!(
        "{} {} {}: {} ms [{}, {}] x{}, {} GFLOP/s, {} GB/s, max rel err {:.1e}",
        r.op,
        r.shape,
        r.backend,
        sig(r.median_ms),
        sig(r.min_ms),
        sig(r.max_ms),
        r.repeats,
        sig(r.gflops),
        sig(r.gbps),
        r.max_rel_err
    )
}

/// Measures every op of `ops` on `shape` with one backend.
#[allow(clippy::too_many_arguments)]
fn measure_backend<B: Backend<Elem = f32>>(
    ctx: &mut Context,
    backend: &B,
    kind: BackendKind,
    profile: &dyn DeviceProfile,
    compute_ceiling: &str,
    shape: &Shape,
    ops: &[Op],
    inputs: &Inputs,
    oracle: &Oracle<Naive<f64>>,
) -> Result<()> {
    profile.reset();
    let device = upload(backend, inputs)?;
    backend.sync()?;
    let upload_ns = profile.read().map_or(0, |p| p.transfer_ns);
    for &op in ops {
        ctx.progress.start(&format!("{} {} {}", op.name(), shape.name(), kind.name()));
        let expected = oracle.expected(op, shape)?;
        let job = Job {
            backend,
            kind: kind.name(),
            profile,
            op,
            shape,
            inputs: &device,
            expected: &expected,
            policy: &ctx.policy,
            compute_ceiling,
            upload_ns,
        };
        let record = job.run()?;
        ctx.progress.finish_one(&summary(&record));
        ctx.records.push(record);
    }
    Ok(())
}

fn measure_all(ctx: &mut Context, backends: &Backends, selection: &Selection) -> Result<()> {
    let mut oracle = Oracle::new(Naive::<f64>::new());
    for shape in &selection.shapes {
        let ops: Vec<Op> = selection.ops.iter().copied().filter(|o| o.family() == shape.family()).collect();
        if ops.is_empty() {
            continue;
        }
        let inputs = Inputs::generate(shape)?;
        for &op in &ops {
            let start = Instant::now();
            oracle.prepare(op, shape, &inputs)?;
            let took = start.elapsed().as_secs_f64();
            if took > 0.5 {
                ctx.progress.note(&format!("oracle (naive f64) for {} on {}: {took:.1} s", op.name(), shape.name()));
            }
        }
        for kind in &selection.backends {
            match kind {
                BackendKind::Naive => {
                    if let Some(b) = &backends.naive {
                        measure_backend(ctx, b, *kind, &NoProfile, "sgemm", shape, &ops, &inputs, &oracle)?;
                    }
                }
                BackendKind::Im2col => {
                    if let Some(b) = &backends.im2col {
                        measure_backend(ctx, b, *kind, &NoProfile, "sgemm", shape, &ops, &inputs, &oracle)?;
                    }
                }
                BackendKind::OpenCl => {
                    if let Some(b) = &backends.opencl {
                        let profile = ClProfile(b);
                        measure_backend(ctx, b, *kind, &profile, "opencl_gemm", shape, &ops, &inputs, &oracle)?;
                    }
                }
            }
        }
        oracle.clear();
    }
    Ok(())
}

/// sgemm, copy and (with OpenCL) the OpenCL GEMM ceiling.
fn measure_ceilings(args: &Args, backends: &Backends, progress: &Progress) -> Result<Ceilings> {
    progress.note("ceilings: sgemm, copy bandwidth, OpenCL GEMM");
    let sgemm = ceilings::sgemm(SGEMM_N, args.threads, args.quick).map_err(setup("sgemm ceiling"))?;
    let copy = ceilings::copy_bandwidth(COPY_BYTES, args.threads, args.quick).map_err(setup("copy ceiling"))?;
    let opencl_gemm = backends.opencl.as_ref().map(|cl| opencl_gemm_ceiling(cl, args.quick)).transpose()?;
    for c in [Some(&sgemm), Some(&copy), opencl_gemm.as_ref()].into_iter().flatten() {
        progress.note(&format!("  {}: {} {}", c.what, sig(c.rate), c.unit));
    }
    Ok(Ceilings { sgemm, copy, opencl_gemm })
}

fn setup(what: &str) -> impl Fn(String) -> HarnessError + '_ {
    move |e| HarnessError::Setup(format!("{what}: {e}"))
}

/// Measures what `args` selects and returns the report (nothing written yet).
pub fn run(args: &Args, command: String) -> Result<Report> {
    let selection = args.selection()?;
    let date_utc = utc_now();
    let mut notes = Vec::new();
    let backends = Backends::build(&selection, args.threads, args.opencl_device.as_deref(), &mut notes)?;
    let selection = Selection { backends: backends.kinds(), ..selection };
    let total: usize = selection
        .shapes
        .iter()
        .map(|s| selection.ops.iter().filter(|o| o.family() == s.family()).count() * selection.backends.len())
        .sum();
    let mut progress = Progress::new(total as u64);

    let before = measure_ceilings(args, &backends, &progress)?;
    let ctx_policy = if args.quick { Policy::quick() } else { Policy::full() };
    let mut ctx = Context { policy: ctx_policy, progress: &mut progress, records: Vec::new() };
    measure_all(&mut ctx, &backends, &selection)?;
    let records = std::mem::take(&mut ctx.records);
    let ceilings = before.best_of(measure_ceilings(args, &backends, &progress)?);

    progress.finish();
    let lenet = if args.lenet {
        eprintln!("LeNet training throughput");
        lenet_throughput::measure_all(&backends, &selection.backends, args.lenet_steps, args.quick, &mut notes)?
    } else {
        Vec::new()
    };

    let mut report = Report {
        schema: Report::SCHEMA,
        date_utc,
        command,
        revision: Revision::detect(),
        machine: Machine::detect(),
        threads: args.threads,
        opencl_device: backends.opencl.as_ref().map(|cl| cl.device_name().to_string()),
        quick: args.quick,
        timing: PolicySummary::from(&ctx_policy),
        ceilings,
        records,
        lenet,
        notes,
    };
    report.fill_speedups();
    report.apply_bounds();
    Ok(report)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| HarnessError::Io { path: path.to_path_buf(), source })
}

/// Reads a results.json written by an earlier run (for `--replot`).
pub fn read_report(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path).map_err(|source| HarnessError::Io { path: path.to_path_buf(), source })?;
    let report: Report = serde_json::from_str(&text)?;
    if report.schema != Report::SCHEMA {
        return Err(HarnessError::Usage(format!(
            "{} has schema {}, this harness writes schema {}",
            path.display(),
            report.schema,
            Report::SCHEMA
        )));
    }
    Ok(report)
}

/// Writes results.json, SCHEMA.md, README.md and the charts into `dir`.
pub fn write_report(report: &Report, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| HarnessError::Io { path: dir.to_path_buf(), source })?;
    let json = serde_json::to_string_pretty(report)?;
    let mut written = Vec::new();
    for (name, text) in [("results.json", json.as_str()), ("SCHEMA.md", SCHEMA_MD)] {
        write(&dir.join(name), text)?;
        written.push(dir.join(name));
    }
    written.extend(charts::write_all(report, dir)?);
    write(&dir.join("README.md"), &markdown::render(report))?;
    written.push(dir.join("README.md"));
    Ok(written)
}
