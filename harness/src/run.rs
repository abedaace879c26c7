//! One harness run: ceilings first, then every shape (inputs generated and
//! the f64 oracle run once per shape), every op that runs on it, every
//! selected backend; then LeNet throughput and the files.

use std::path::Path;
use std::time::Instant;

use kernels_core::Backend;
use kernels_naive::Naive;

use crate::backends::{BackendKind, Backends, ClProfile, opencl_gemm_ceiling};
use crate::ceilings;
use crate::cli::{Args, PeerMode, Selection};
use crate::error::{HarnessError, Result};
use crate::machine::{Machine, Revision, utc_now};
use crate::markdown::{self, sig};
use crate::measure::{DeviceProfile, Job, NoProfile};
use crate::ops::{Op, Shape};
use crate::peers::{PeerStatus, TORCH, TorchPeer, Unavailable, python_or_default};
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
    /// The PyTorch peer, when it started.
    torch: Option<TorchPeer>,
    /// The candle peer (cargo feature `candle`).
    #[cfg(feature = "candle")]
    candle: Option<crate::candle_peer::CandlePeer>,
    notes: Vec<String>,
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
        let shape_start = ctx.records.len();
        for round in 0..ctx.policy.rounds {
            measure_round(ctx, backends, selection, shape, &ops, &inputs, &oracle, round)?;
        }
        keep_best_rounds(&mut ctx.records, shape_start);
        oracle.clear();
    }
    Ok(())
}

/// Keeps, among `records[start..]` (one shape, every round), the record
/// with the lowest median per (op, backend), in first-measured order.
fn keep_best_rounds(records: &mut Vec<Record>, start: usize) {
    let rounds = records.split_off(start);
    for record in rounds {
        match records[start..].iter_mut().find(|r| r.op == record.op && r.backend == record.backend) {
            Some(kept) if record.median_ms < kept.median_ms => *kept = record,
            Some(_) => {}
            None => records.push(record),
        }
    }
}

/// One round over a shape: every selected backend (naive in the first round
/// only: it is the reference, not a contender), then the peers.
#[allow(clippy::too_many_arguments)]
fn measure_round(
    ctx: &mut Context,
    backends: &Backends,
    selection: &Selection,
    shape: &Shape,
    ops: &[Op],
    inputs: &Inputs,
    oracle: &Oracle<Naive<f64>>,
    round: usize,
) -> Result<()> {
    for kind in &selection.backends {
        match kind {
            BackendKind::Naive if round > 0 => {}
            BackendKind::Naive => {
                if let Some(b) = &backends.naive {
                    measure_backend(ctx, b, *kind, &NoProfile, "sgemm", shape, ops, inputs, oracle)?;
                }
            }
            BackendKind::Im2col => {
                if let Some(b) = &backends.im2col {
                    let first = ctx.records.len();
                    measure_backend(ctx, b, *kind, &NoProfile, "sgemm", shape, ops, inputs, oracle)?;
                    if let Shape::Conv(case) = shape {
                        let plan = b.conv_plan(&case.geometry()?)?;
                        let text = describe_plan(&plan);
                        for record in &mut ctx.records[first..] {
                            record.plan = Some(text.clone());
                        }
                    }
                }
            }
            BackendKind::OpenCl => {
                if let Some(b) = &backends.opencl {
                    let profile = ClProfile(b);
                    measure_backend(ctx, b, *kind, &profile, "opencl_gemm", shape, ops, inputs, oracle)?;
                }
            }
        }
    }
    #[cfg(feature = "candle")]
    if let Some(peer) = &ctx.candle {
        ctx.progress.start(&format!("candle on {}", shape.name()));
        let (records, skipped) = peer.measure_shape(shape, ops, inputs, oracle, &ctx.policy)?;
        for record in records {
            ctx.progress.finish_one(&summary(&record));
            ctx.records.push(record);
        }
        if !skipped.is_empty() && round == 0 {
            let names: Vec<&str> = skipped.iter().map(|o| o.name()).collect();
            let mut why: Vec<&str> =
                skipped.iter().filter_map(|&o| crate::candle_peer::CandlePeer::why_not(o, shape)).collect();
            why.dedup();
            ctx.notes.push(format!(
                "candle: {} on {} not measured: {}. See harness/src/candle_peer.rs",
                names.join(", "),
                shape.name(),
                why.join("; ")
            ));
        }
    }
    if let Some(peer) = ctx.torch.as_mut() {
        ctx.progress.start(&format!("{} on {} (ops {})", TORCH, shape.name(), ops.len()));
        let records = peer.measure_shape(shape, ops, inputs, oracle, &ctx.policy)?;
        for record in records {
            ctx.progress.finish_one(&summary(&record));
            ctx.records.push(record);
        }
    }
    Ok(())
}

/// What im2col's planner chose for a conv shape, for its rows: the
/// algorithm of each pass and the ISA its kernels ran at.
fn describe_plan(plan: &kernels_im2col::ConvPlan) -> String {
    format!("forward {:?}, dx {:?}, dw {:?}, db {:?}, isa {}", plan.path, plan.dx, plan.dw, plan.db, plan.isa)
}

/// sgemm, copy and (with OpenCL) the OpenCL GEMM ceiling.
fn measure_ceilings(args: &Args, backends: &Backends, progress: &Progress) -> Result<Ceilings> {
    progress.note("ceilings: sgemm, copy bandwidth, OpenCL GEMM, FMA peak per ISA");
    let sgemm = ceilings::sgemm(SGEMM_N, args.threads, args.quick).map_err(setup("sgemm ceiling"))?;
    let copy = ceilings::copy_bandwidth(COPY_BYTES, args.threads, args.quick).map_err(setup("copy ceiling"))?;
    let opencl_gemm = backends.opencl.as_ref().map(|cl| opencl_gemm_ceiling(cl, args.quick)).transpose()?;
    let fma = ceilings::fma_peaks(args.threads, args.quick).map_err(setup("FMA peak"))?;
    let all = [Some(&sgemm), Some(&copy), opencl_gemm.as_ref()].into_iter().flatten();
    for c in all.chain(fma.iter().map(|p| &p.ceiling)) {
        progress.note(&format!("  {}: {} {}", c.what, sig(c.rate), c.unit));
    }
    Ok(Ceilings { sgemm, copy, opencl_gemm, fma })
}

fn setup(what: &str) -> impl Fn(String) -> HarnessError + '_ {
    move |e| HarnessError::Setup(format!("{what}: {e}"))
}

/// Starts the PyTorch peer as `selection.peers` asks; its status for the
/// report either way.
fn start_torch(args: &Args, selection: &Selection) -> Result<(Option<TorchPeer>, PeerStatus)> {
    let python = python_or_default(args.python.as_deref());
    let skipped = |why: String| PeerStatus {
        peer: TORCH.into(),
        command: python.display().to_string(),
        info: None,
        skipped: Some(why),
    };
    if selection.peers == PeerMode::Off {
        return Ok((None, skipped("--peers none".into())));
    }
    match TorchPeer::start(&python, args.peer_script.as_deref(), args.threads)? {
        Ok(peer) => {
            eprintln!("peer: {} ({})", peer.info.detail, peer.command);
            let status = peer.status();
            Ok((Some(peer), status))
        }
        Err(Unavailable(why)) if selection.peers == PeerMode::Auto => {
            eprintln!("peer: PyTorch not measured: {why}");
            Ok((None, skipped(why)))
        }
        Err(Unavailable(why)) => Err(HarnessError::Setup(format!("--peers pytorch: the peer cannot start: {why}"))),
    }
}

/// Measures what `args` selects and returns the report (nothing written yet).
pub fn run(args: &Args, command: String) -> Result<Report> {
    let selection = args.selection()?;
    let date_utc = utc_now();
    let mut notes = Vec::new();
    let force = kernels_im2col::Forced { forward: args.im2col_forward, dx: args.im2col_dx, dw: args.im2col_dw };
    let backends =
        Backends::build(&selection, args.threads, args.isa, force, args.opencl_device.as_deref(), &mut notes)?;
    if let Some(im2col) = &backends.im2col {
        notes.push(format!(
            "im2col's kernels ran at ISA {} (the CPU's best {}, capped by --isa or KERNELS_ISA when given; \
             every conv GEMM included; matrixmultiply, which picks its own kernel, runs only the linear ops' GEMMs); each conv row of results.json records the plan",
            im2col.isa(),
            kernels_im2col::Isa::detected()
        ));
    }
    // main() already applied it; asking again only reads whether glibc took it.
    if lenet::allocator::keep_freed_memory() {
        notes.push(
            "this process kept freed memory mapped (glibc malloc: mmap threshold 32 MiB, trim threshold 512 MiB), \
             as the lenet binary does, so repeated calls reuse their output buffers instead of faulting fresh pages \
             in (lenet::allocator says why); the PyTorch peer's process keeps its own allocator's defaults"
                .into(),
        );
    }
    let selection = Selection { backends: backends.kinds(), ..selection };
    let (torch, peer_status) = start_torch(args, &selection)?;
    if let Some(why) = &peer_status.skipped {
        notes.push(format!("PyTorch peer not measured (its columns are empty): {why}"));
    }
    #[cfg(feature = "candle")]
    let candle = if selection.peers == PeerMode::Off {
        None
    } else {
        let peer = crate::candle_peer::CandlePeer::new(args.threads)?;
        eprintln!("peer: {}", peer.info.detail);
        Some(peer)
    };
    #[cfg(feature = "candle")]
    let candle_status = candle.as_ref().map(|c| c.status());
    #[cfg(not(feature = "candle"))]
    let candle_status: Option<PeerStatus> = (selection.peers != PeerMode::Off).then(|| PeerStatus {
        peer: "candle".into(),
        command: "in process".into(),
        info: None,
        skipped: Some("this harness was built without the cargo feature `candle` (make report turns it on)".into()),
    });
    // Naive is timed in the first round only; everything else once per round.
    let naive = usize::from(selection.backends.contains(&BackendKind::Naive));
    #[cfg(feature = "candle")]
    let contenders = selection.backends.len() - naive + usize::from(torch.is_some()) + usize::from(candle.is_some());
    #[cfg(not(feature = "candle"))]
    let contenders = selection.backends.len() - naive + usize::from(torch.is_some());
    let timed_kinds = naive + contenders * args.rounds;
    let total: usize = selection
        .shapes
        .iter()
        .map(|s| selection.ops.iter().filter(|o| o.family() == s.family()).count() * timed_kinds)
        .sum();
    let mut progress = Progress::new(total as u64);

    let before = measure_ceilings(args, &backends, &progress)?;
    let ctx_policy = Policy { rounds: args.rounds, ..if args.quick { Policy::quick() } else { Policy::full() } };
    let mut ctx = Context {
        policy: ctx_policy,
        progress: &mut progress,
        records: Vec::new(),
        torch,
        #[cfg(feature = "candle")]
        candle,
        notes: Vec::new(),
    };
    measure_all(&mut ctx, &backends, &selection)?;
    let records = std::mem::take(&mut ctx.records);
    notes.append(&mut ctx.notes);
    let mut torch = ctx.torch.take();
    let ceilings = before.best_of(measure_ceilings(args, &backends, &progress)?);

    progress.finish();
    let lenet = if args.lenet_section() {
        eprintln!("LeNet training throughput");
        let plan = lenet_throughput::LenetPlan {
            models: args.lenet_models()?,
            steps: args.lenet_steps,
            dropout: args.lenet_dropout,
            epochs: args.lenet_epochs,
            quick: args.quick,
        };
        lenet_throughput::measure_all(&backends, &selection.backends, torch.as_mut(), &plan, &mut notes)?
    } else {
        Vec::new()
    };

    let mut report = Report {
        schema: Report::SCHEMA,
        date_utc,
        command,
        revision: Revision::detect(),
        machine: Machine { backend_isa: crate::machine::backend_isas(&backends), ..Machine::detect() },
        threads: args.threads,
        opencl_device: backends.opencl.as_ref().map(|cl| cl.device_name().to_string()),
        quick: args.quick,
        timing: PolicySummary::from(&ctx_policy),
        ceilings,
        records,
        lenet,
        peers: std::iter::once(peer_status).chain(candle_status).collect(),
        notes,
    };
    report.fill_speedups();
    report.apply_bounds();
    Ok(report)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| HarnessError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}

/// Makes sure `dir` exists and a file can be created in it, before anything
/// is measured: a run that finds out only at the end loses its results.
pub fn check_out_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| HarnessError::Io {
        action: "creating the output directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let probe = dir.join(format!(".harness-write-probe-{}", std::process::id()));
    let created = std::fs::OpenOptions::new().write(true).create_new(true).open(&probe);
    match created {
        Ok(_) => std::fs::remove_file(&probe).map_err(|source| HarnessError::Io {
            action: "removing the write probe",
            path: probe.clone(),
            source,
        }),
        Err(source) => Err(HarnessError::Io { action: "writing into the output directory", path: probe, source }),
    }
}

/// Reads a results.json written by an earlier run (for `--replot`); every
/// error names `path`. Values no run can produce (1e308 GFLOP/s, a negative
/// time) are refused here, before a chart tries to draw them.
pub fn read_report(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path).map_err(|source| HarnessError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    let report: Report =
        serde_json::from_str(&text).map_err(|source| HarnessError::Parse { path: path.to_path_buf(), source })?;
    if report.schema != Report::SCHEMA {
        return Err(HarnessError::Usage(format!(
            "{} has schema {}, this harness writes schema {}",
            path.display(),
            report.schema,
            Report::SCHEMA
        )));
    }
    report.check_values().map_err(|detail| HarnessError::BadValue { path: path.to_path_buf(), detail })?;
    Ok(report)
}

/// Writes results.json, SCHEMA.md, README.md and the charts into `dir`.
pub fn write_report(report: &Report, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| HarnessError::Io {
        action: "creating the output directory",
        path: dir.to_path_buf(),
        source,
    })?;
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

/// Where [`keep_results`] puts a report that could not be written to --out.
pub fn fallback_path(in_dir: &Path) -> std::path::PathBuf {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    in_dir.join(format!("harness-results-{}-{stamp}.json", std::process::id()))
}

/// After a failed [`write_report`] of a measured run: saves results.json to
/// a fresh file in `in_dir` (the system's temporary directory in the binary)
/// so the measurements are not lost; `--replot` renders it later.
pub fn keep_results(report: &Report, in_dir: &Path) -> Result<std::path::PathBuf> {
    let path = fallback_path(in_dir);
    let json = serde_json::to_string_pretty(report)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|source| HarnessError::Io { action: "writing", path: path.clone(), source })?;
    std::io::Write::write_all(&mut file, json.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| HarnessError::Io { action: "writing", path: path.clone(), source })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::sample_report;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("harness-run-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn each_op_and_backend_keeps_its_best_round_in_first_measured_order() {
        let report = sample_report(&[("im2col", 2.0), ("pytorch", 3.0), ("im2col", 1.5), ("pytorch", 4.0)]);
        let earlier = report.records[0].clone();
        let mut records = vec![earlier.clone()];
        records.extend(report.records.iter().cloned().map(|mut r| {
            r.shape = "other".into();
            r
        }));
        keep_best_rounds(&mut records, 1);
        // The record before `start` (another shape) is untouched.
        assert_eq!(records[0].median_ms, earlier.median_ms);
        let kept: Vec<(&str, f64)> = records[1..].iter().map(|r| (r.backend.as_str(), r.median_ms)).collect();
        assert_eq!(kept, [("im2col", 1.5), ("pytorch", 3.0)]);
    }

    #[test]
    fn an_output_directory_under_a_file_is_refused_up_front() {
        let dir = scratch("out-under-file");
        let file = dir.join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let err = check_out_dir(&file.join("reports")).unwrap_err().to_string();
        assert!(err.contains("creating the output directory") && err.contains("plain-file"), "{err}");
        check_out_dir(&dir.join("fresh")).unwrap();
        assert_eq!(std::fs::read_dir(dir.join("fresh")).unwrap().count(), 0, "the probe is removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_late_write_failure_keeps_the_results_elsewhere() {
        let dir = scratch("late-failure");
        // results.json is a directory: the output directory passes the
        // probe, the write of results.json itself fails.
        std::fs::create_dir_all(dir.join("out/results.json")).unwrap();
        let report = sample_report(&[("naive", 40.0)]);
        check_out_dir(&dir.join("out")).unwrap();
        let err = write_report(&report, &dir.join("out")).unwrap_err().to_string();
        assert!(err.starts_with("writing ") && err.contains("results.json"), "{err}");
        let kept = keep_results(&report, &dir).unwrap();
        let back = read_report(&kept).unwrap();
        assert_eq!(back.records.len(), 1);
        assert_eq!(back.records[0].median_ms, 40.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replot_errors_say_reading_and_name_the_given_file() {
        let dir = scratch("replot-messages");
        let missing = dir.join("no-such-run.json");
        let err = read_report(&missing).unwrap_err().to_string();
        assert!(err.starts_with("reading ") && err.contains("no-such-run.json"), "{err}");
        let garbled = dir.join("garbled-run.json");
        std::fs::write(&garbled, "{ not json").unwrap();
        let err = read_report(&garbled).unwrap_err().to_string();
        assert!(err.contains("garbled-run.json") && !err.contains("results.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replot_refuses_values_no_run_produces_naming_the_file() {
        let dir = scratch("replot-absurd");
        let mut report = sample_report(&[("naive", 40.0), ("im2col", 2.0)]);
        report.records[1].gflops = 1e308;
        let path = dir.join("edited.json");
        std::fs::write(&path, serde_json::to_string(&report).unwrap()).unwrap();
        let err = read_report(&path).unwrap_err().to_string();
        assert!(err.contains("edited.json") && err.contains("gflops") && err.contains("1e308"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
