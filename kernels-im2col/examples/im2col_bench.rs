//! Validate-then-time benchmark of the im2col backend on the shape suite.
//!
//! `cargo run --release -p kernels-im2col --example im2col_bench -- [--threads N] [--secs S] [--tile F] [--columns C] [--no-winograd] [--no-direct-wide] [--packed] [--isa portable|avx2|avx512] [--forward P] [--dx P] [--dw P] [--conv N,C,H,W,K,R,S,STRIDE,PAD]... [--pool N,C,H,W,WINDOW,STRIDE,PAD]... [filters...]`
//!
//! - Threads: `--threads`, else RAYON_NUM_THREADS, else 2.
//! - `--tile F` and `--columns C` override the conv tiling targets (col tile
//!   floats, fewest GEMM columns per tile; `--columns 1` turns image
//!   grouping off) for tuning sweeps; `--no-winograd` and
//!   `--no-direct-wide` send the convs those paths take down the unfold
//!   path instead, and `--packed` runs the unfold path's GEMMs
//!   on the packed GEMM (gemm/packed.rs) where AVX-512 would take the
//!   unpacked one, to compare with.
//! - ISA: `--isa`, else the `KERNELS_ISA` environment variable, caps the
//!   crate's own kernels, every conv GEMM included (not matrixmultiply's, which
//!   picks its own and runs only linear layers and the portable level); the
//!   header line prints the ISA they run at.
//! - `--forward`, `--dx`, `--dw` force a pass's algorithm (names as in
//!   `ConvPath`, `DxPath`, `DwPath`, e.g. `--forward Unfold --dx Col2im`);
//!   a case the forced path does not apply to fails with the plan's error.
//! - `--only fwd` or `--only bwd` times that direction for `--secs`, for
//!   profiling; the other still runs its minimum of 10 samples and is
//!   printed.
//! - `--conv` (repeatable) times that shape instead of the suite, e.g.
//!   `--conv 8,256,14,14,512,3,3,2,1`, for planner decisions on shapes the
//!   suite lacks. `--pool` (repeatable) likewise for pooling, e.g.
//!   `--pool 1,2,112,112,3,2,1` for resnet-p0's geometry on a working set
//!   that stays in L2 (its compute alone). Either replaces the whole suite.
//! - Filters pick suite cases whose name contains any of them (all when
//!   none); "sgemm" always runs, first and last, as the ceiling.
//! - Each conv case is validated against the f64 reference (kernels-naive)
//!   before timing: every output on a 2-image batch of the same geometry,
//!   and, after timing, the first 2 images of the timed forward and dx.
//!   Pooling is validated whole.
//! - Timing: 2 warm-up calls, then samples until `--secs` (default 1) or 5000
//!   samples, at least 10; prints median, min and max in ms, GFLOP/s from
//!   kernels-core's analytic counts and % of the same-run sgemm rate (peers
//!   are the harness's, measured in the same run: `make report`).
//!   "cpu ms" is the process CPU time per call over all threads: on a
//!   machine others are loading, compare variants by it (and by min).

use std::process::ExitCode;
use std::time::Instant;

use kernels_core::{
    Backend, CONV_SUITE, Cost, GradRequest, POOL_SUITE, PoolKind, Shaped, SplitMix64, Tensor, Tolerance, compare, cost,
};
use kernels_im2col::{ConvPath, DwPath, DxPath, Im2col, TileTargets};
use kernels_naive::Naive;

struct Options {
    threads: usize,
    secs: f64,
    targets: TileTargets,
    /// Time only forward ("fwd") or only backward ("bwd") calls.
    only: Option<String>,
    filters: Vec<String>,
    /// Shapes outside the suite, from `--conv`.
    extra: Vec<kernels_core::ConvCase>,
    /// Pooling shapes outside the suite, from `--pool`.
    extra_pools: Vec<kernels_core::PoolCase>,
}

/// The comma-separated sizes of a shape option's value.
fn numbers(option: &str, spec: &str) -> Result<Vec<usize>, String> {
    spec.split(',').map(|v| v.trim().parse::<usize>().map_err(|e| format!("{option} {spec}: {v:?}: {e}"))).collect()
}

/// A `--conv N,C,H,W,K,R,S,STRIDE,PAD` shape, named after its numbers.
fn parse_conv(spec: &str) -> Result<kernels_core::ConvCase, String> {
    let [n, c, h, w, k, r, s, stride, padding] = numbers("--conv", spec)?[..] else {
        return Err(format!("--conv takes N,C,H,W,K,R,S,STRIDE,PAD (9 numbers), not {spec}"));
    };
    // The suite's cases carry &'static names; an ad-hoc one lives as long
    // as the run, so leaking its name is the lifetime it needs.
    let name: &'static str = Box::leak(format!("conv-{}", spec.replace(',', "-")).into_boxed_str());
    let case = kernels_core::ConvCase { name, input: [n, c, h, w], filters: [k, r, s], stride, padding };
    case.geometry().map_err(|e| format!("--conv {spec}: {e}"))?;
    Ok(case)
}

/// A `--pool N,C,H,W,WINDOW,STRIDE,PAD` shape, named after its numbers.
fn parse_pool(spec: &str) -> Result<kernels_core::PoolCase, String> {
    let [n, c, h, w, window, stride, padding] = numbers("--pool", spec)?[..] else {
        return Err(format!("--pool takes N,C,H,W,WINDOW,STRIDE,PAD (7 numbers), not {spec}"));
    };
    // As in `parse_conv`: the name lives as long as the run.
    let name: &'static str = Box::leak(format!("pool-{}", spec.replace(',', "-")).into_boxed_str());
    let case = kernels_core::PoolCase { name, input: [n, c, h, w], window, stride, padding };
    case.geometry(PoolKind::Max).map_err(|e| format!("--pool {spec}: {e}"))?;
    Ok(case)
}

fn parse_options() -> Result<Options, String> {
    let env_threads = std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse().ok());
    let mut options = Options {
        threads: env_threads.unwrap_or(2),
        secs: 1.0,
        targets: TileTargets::default(),
        only: None,
        filters: Vec::new(),
        extra: Vec::new(),
        extra_pools: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--threads" => options.threads = value("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--secs" => options.secs = value("--secs")?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--only" => options.only = Some(value("--only")?),
            "--tile" => options.targets.floats = value("--tile")?.parse().map_err(|e| format!("--tile: {e}"))?,
            "--columns" => {
                options.targets.columns = value("--columns")?.parse().map_err(|e| format!("--columns: {e}"))?
            }
            "--no-winograd" => options.targets.winograd = false,
            "--no-direct-wide" => options.targets.direct_wide = false,
            "--packed" => options.targets.unpacked_gemms = false,
            "--forward" => options.targets.force.forward = Some(value("--forward")?.parse::<ConvPath>()?),
            "--dx" => options.targets.force.dx = Some(value("--dx")?.parse::<DxPath>()?),
            "--dw" => options.targets.force.dw = Some(value("--dw")?.parse::<DwPath>()?),
            "--conv" => options.extra.push(parse_conv(&value("--conv")?)?),
            "--pool" => options.extra_pools.push(parse_pool(&value("--pool")?)?),
            "--isa" => options.targets.isa = Some(value("--isa")?.parse().map_err(|e| format!("--isa: {e}"))?),
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            _ => options.filters.push(arg),
        }
    }
    Ok(options)
}

/// Median, min and max of the samples, in ms, and the process CPU time per
/// call (all threads), which a loaded machine disturbs far less than wall
/// time: the figure to compare variants by when others share the cores.
struct Stats {
    median: f64,
    min: f64,
    max: f64,
    cpu_per_call: f64,
}

/// User + system CPU time of this process in ms, from /proc/self/stat
/// (fields 14 and 15, in clock ticks of 10 ms on Linux); None elsewhere.
fn process_cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which sits in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0)
}

fn time(secs: f64, mut call: impl FnMut() -> Result<(), String>) -> Result<Stats, String> {
    for _ in 0..2 {
        call()?;
    }
    let mut samples = Vec::new();
    let cpu_start = process_cpu_ms();
    let start = Instant::now();
    while samples.len() < 10 || (samples.len() < 5000 && start.elapsed().as_secs_f64() < secs) {
        let t = Instant::now();
        call()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let cpu_per_call = match (cpu_start, process_cpu_ms()) {
        (Some(a), Some(b)) => (b - a) / samples.len() as f64,
        _ => f64::NAN,
    };
    samples.sort_by(f64::total_cmp);
    let (median, min, max) = (samples[samples.len() / 2], samples[0], samples[samples.len() - 1]);
    Ok(Stats { median, min, max, cpu_per_call })
}

/// The 2-thread (or N-thread) sgemm ceiling: C [n, n] = A·B with each
/// worker running a single-threaded sgemm on its block of columns, as the
/// backend's own GEMMs run. Returns GFLOP/s at the median.
fn sgemm_rate(backend: &Im2col, secs: f64) -> Result<f64, String> {
    let n = 2048;
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let threads = backend.threads();
    let cols = n.div_ceil(threads);
    let mut c = vec![0.0f32; n * n];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| e.to_string())?;
    let stats = time(secs, || {
        // Each worker owns a band of rows of C^T: compute C^T = B^T A^T so
        // bands are contiguous and safe to hand out.
        pool.install(|| {
            use rayon::prelude::*;
            c.par_chunks_mut(cols * n).enumerate().for_each(|(i, band)| {
                let rows = band.len() / n;
                // band = rows of C^T = (B[:, i·cols..])^T · A^T.
                // SAFETY: A and B are n x n, band is rows x n; the strides
                // below stay inside them (column block i·cols + rows ≤ n).
                unsafe {
                    matrixmultiply::sgemm(
                        rows,
                        n,
                        n,
                        1.0,
                        b.as_ptr().add(i * cols),
                        1,
                        n as isize,
                        a.as_ptr(),
                        1,
                        n as isize,
                        0.0,
                        band.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
            });
        });
        Ok(())
    })?;
    println!(
        "sgemm n=2048: median {:.3} ms, min {:.3}, max {:.3}, cpu {:.3} ms per call",
        stats.median, stats.min, stats.max, stats.cpu_per_call
    );
    let expect = n as f32 * 0.5;
    if c.iter().any(|&v| v != expect) {
        return Err("sgemm ceiling produced a wrong result".into());
    }
    Ok(2.0 * (n as f64).powi(3) / (stats.median * 1e-3) / 1e9)
}

fn random(rng: &mut SplitMix64, shape: &[usize]) -> Tensor<f64> {
    Tensor::from_fn(shape, |_| rng.uniform(-1.0, 1.0))
}

fn validate(what: &str, actual: &[f32], expected: &[f64], terms: usize) -> Result<(), String> {
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let c = compare(actual, expected, &Tolerance::f32_reduction(terms, scale)).map_err(|e| e.to_string())?;
    if c.passed() { Ok(()) } else { Err(format!("{what}: {c}")) }
}

fn first_images(t: &Tensor<f32>, images: usize) -> &[f32] {
    let per = t.len() / t.shape()[0];
    &t.data()[..images * per]
}

struct Row {
    name: String,
    stats: Stats,
    cost: Cost,
}

fn print_row(row: &Row, sgemm: f64) {
    let gflops = row.cost.flops as f64 / (row.stats.median * 1e-3) / 1e9;
    println!(
        "| {:<22} | {:>8.3} | {:>8.3} | {:>8.3} | {:>8.3} | {:>7.1} | {:>5.1}% |",
        row.name,
        row.stats.median,
        row.stats.min,
        row.stats.max,
        row.stats.cpu_per_call,
        gflops,
        100.0 * gflops / sgemm,
    );
}

fn bench_conv(backend: &Im2col, case: &kernels_core::ConvCase, secs: [f64; 2]) -> Result<Vec<Row>, String> {
    let err = |e: kernels_core::Error| e.to_string();
    let g = case.geometry().map_err(err)?;
    let params = case.params();
    let mut rng = SplitMix64::new(42);
    let x = random(&mut rng, &g.x_shape());
    let w = random(&mut rng, &g.w_shape());
    let b = random(&mut rng, &g.b_shape());
    let dy = random(&mut rng, &g.y_shape());
    let (x32, w32, b32, dy32) = (x.cast::<f32>(), w.cast::<f32>(), b.cast::<f32>(), dy.cast::<f32>());

    // Validate every output on a 2-image batch of the same geometry.
    let images = g.n.min(2);
    let slice = |t: &Tensor<f64>| {
        let per = t.len() / t.shape()[0];
        let mut shape = t.shape().to_vec();
        shape[0] = images;
        Tensor::new(&shape, t.data()[..images * per].to_vec()).map_err(err)
    };
    let (xs, dys) = (slice(&x)?, slice(&dy)?);
    let naive = Naive::<f64>::new();
    let y_ref = naive.conv2d_forward(&xs, &w, Some(&b), &params).map_err(err)?;
    let g_ref = naive.conv2d_backward(&xs, &w, &dys, &params, GradRequest::ALL).map_err(err)?;
    let y_small = backend.conv2d_forward(&xs.cast(), &w32, Some(&b32), &params).map_err(err)?;
    let g_small = backend.conv2d_backward(&xs.cast(), &w32, &dys.cast(), &params, GradRequest::ALL).map_err(err)?;
    let (crs, kp) = (g.c * g.r * g.s, g.k * g.r * g.s);
    let np = images * g.oh * g.ow;
    let pick = |t: &Option<Tensor<f64>>| t.as_ref().map(|t| t.data().to_vec()).unwrap_or_default();
    let pick32 = |t: &Option<Tensor<f32>>| t.as_ref().map(|t| t.data().to_vec()).unwrap_or_default();
    validate(&format!("{} y", case.name), y_small.data(), y_ref.data(), crs)?;
    validate(&format!("{} dx", case.name), &pick32(&g_small.dx), &pick(&g_ref.dx), kp)?;
    validate(&format!("{} dw", case.name), &pick32(&g_small.dw), &pick(&g_ref.dw), np)?;
    validate(&format!("{} db", case.name), &pick32(&g_small.db), &pick(&g_ref.db), np)?;

    let mut y = None;
    let forward = time(secs[0], || {
        y = Some(backend.conv2d_forward(&x32, &w32, Some(&b32), &params).map_err(err)?);
        Ok(())
    })?;
    let mut grads = None;
    let backward = time(secs[1], || {
        grads = Some(backend.conv2d_backward(&x32, &w32, &dy32, &params, GradRequest::ALL).map_err(err)?);
        Ok(())
    })?;
    // Validate the timed outputs again (first images against the reference).
    let y = y.ok_or("no forward output")?;
    validate(&format!("{} timed y", case.name), first_images(&y, images), y_ref.data(), crs)?;
    let dx = grads.and_then(|g| g.dx).ok_or("no timed dx")?;
    validate(&format!("{} timed dx", case.name), first_images(&dx, images), &pick(&g_ref.dx), kp)?;

    Ok(vec![
        Row { name: format!("{} fwd", case.name), stats: forward, cost: cost::conv2d_forward(&g, true, 4) },
        Row { name: format!("{} bwd", case.name), stats: backward, cost: cost::conv2d_backward(&g, 4) },
    ])
}

fn bench_pool(backend: &Im2col, case: &kernels_core::PoolCase, secs: [f64; 2]) -> Result<Vec<Row>, String> {
    let err = |e: kernels_core::Error| e.to_string();
    let mut rows = Vec::new();
    let mut rng = SplitMix64::new(7);
    let x = random(&mut rng, &case.input);
    let x32 = x.cast::<f32>();
    let naive = Naive::<f64>::new();
    for kind in [PoolKind::Max, PoolKind::Avg] {
        let params = case.params(kind);
        let g = case.geometry(kind).map_err(err)?;
        let dy = random(&mut rng, &g.y_shape());
        let dy32 = dy.cast::<f32>();
        let y_ref = naive.pool2d_forward(&x, &params).map_err(err)?;
        let dx_ref = naive.pool2d_backward(&x, &dy, &params).map_err(err)?;
        let label = if kind == PoolKind::Max { "max" } else { "avg" };
        let mut y = None;
        let forward = time(secs[0], || {
            y = Some(backend.pool2d_forward(&x32, &params).map_err(err)?);
            Ok(())
        })?;
        let mut dx = None;
        let backward = time(secs[1], || {
            dx = Some(backend.pool2d_backward(&x32, &dy32, &params).map_err(err)?);
            Ok(())
        })?;
        let window = g.window_len();
        validate(&format!("{} {label} y", case.name), y.ok_or("no y")?.data(), y_ref.data(), window)?;
        validate(&format!("{} {label} dx", case.name), dx.ok_or("no dx")?.data(), dx_ref.data(), window)?;
        rows.push(Row {
            name: format!("{} {label} fwd", case.name),
            stats: forward,
            cost: cost::pool2d_forward(&g, 4),
        });
        rows.push(Row {
            name: format!("{} {label} bwd", case.name),
            stats: backward,
            cost: cost::pool2d_backward(&g, 4),
        });
    }
    Ok(rows)
}

fn run(options: &Options) -> Result<(), String> {
    let backend = Im2col::with_threads(options.threads).map_err(|e| e.to_string())?.with_tile_targets(options.targets);
    let wanted = |name: &str| options.filters.is_empty() || options.filters.iter().any(|f| name.contains(f.as_str()));
    println!(
        "im2col bench: {} threads, ISA {}, {:.1} s per op (validated against naive f64 first)",
        backend.threads(),
        backend.isa(),
        options.secs
    );
    let sgemm_before = sgemm_rate(&backend, options.secs.min(1.0))?;
    println!("sgemm n=2048 (matrixmultiply, {} threads): {sgemm_before:.1} GFLOP/s", backend.threads());
    // With --only, the other direction gets the minimum (10 samples).
    let secs = match options.only.as_deref() {
        Some("fwd") => [options.secs, 0.0],
        Some("bwd") => [0.0, options.secs],
        None => [options.secs; 2],
        Some(other) => return Err(format!("--only takes fwd or bwd, not {other}")),
    };
    let mut rows = Vec::new();
    // Shapes given by --conv or --pool replace the whole suite.
    let suite_wanted = options.extra.is_empty() && options.extra_pools.is_empty();
    let extra = options.extra.iter();
    let suite = CONV_SUITE.iter().filter(|c| suite_wanted && wanted(c.name));
    for case in suite.chain(extra) {
        let g = case.geometry().map_err(|e| e.to_string())?;
        println!("{}: {:?}", case.name, backend.conv_plan(&g).map_err(|e| e.to_string())?);
        rows.extend(bench_conv(&backend, case, secs)?);
    }
    let pools = POOL_SUITE.iter().filter(|c| suite_wanted && wanted(c.name));
    for case in pools.chain(&options.extra_pools) {
        rows.extend(bench_pool(&backend, case, secs)?);
    }
    let sgemm_after = sgemm_rate(&backend, options.secs.min(1.0))?;
    let sgemm = sgemm_before.max(sgemm_after);
    println!("sgemm n=2048 again: {sgemm_after:.1} GFLOP/s; % below are of the better, {sgemm:.1} GFLOP/s\n");
    println!("| op                     | median ms |  min ms  |  max ms  |  cpu ms  | GFLOP/s | %sgemm |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        print_row(row, sgemm);
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = parse_options().and_then(|options| run(&options));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench: {message}");
            ExitCode::FAILURE
        }
    }
}
