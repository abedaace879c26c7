//! Validate, then time the OpenCL backend: GEMM at n = 1024 and 2048, conv
//! forward and backward on the shape suite, pooling, and the kernel launches
//! of one LeNet training step.
//!
//! `cargo run --release -p kernels-opencl --example opencl_bench -- [gemm|conv|pool|lenet|all]
//!  [--reps N] [--tile MRxNRxVW] [--local 0|1] [--device SELECTOR] [--only NAME]`
//!
//! `--compare 6x32x16,8x32x16` times GEMM n=1024 (and the conv forwards
//! named by --only) for each tile in alternation, for ratios under one load.
//! `--only` keeps the GEMM sizes and conv shapes whose name contains NAME
//! ("n=1024", "resnet"); BENCH_BREAKDOWN=1 prints kernel time per kernel.
//!
//! Every problem is checked against an f64 host reference before it is
//! timed (GEMM on sampled entries, conv and pooling on the first image and
//! on a batch-1 backward); GEMM and conv forward are checked again after. Times are wall-clock per call including the
//! queue's completion, median [min, max] over --reps runs after two warm-up
//! runs; the kernel and transfer split comes from OpenCL event profiling.

use std::time::Instant;

use kernels_core::{
    Backend, CONV_SUITE, GradRequest, POOL_SUITE, PoolKind, Result, Shaped, SplitMix64, Tensor, Tolerance, compare,
    cost,
};
use kernels_naive::Naive;
use kernels_opencl::{Config, OpenCl, Profile};

struct Options {
    what: String,
    reps: usize,
    config: Config,
    device: Option<String>,
    /// Only problems whose name contains this.
    only: Option<String>,
    /// Tiles to A/B-compare ("6x32x16,8x32x16").
    compare: Option<String>,
}

fn parse_args() -> std::result::Result<Options, String> {
    let mut o =
        Options { what: "all".into(), reps: 10, config: Config::default(), device: None, only: None, compare: None };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--reps" => o.reps = value("--reps")?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--tile" => {
                let v = value("--tile")?;
                let parts: Vec<usize> = v
                    .split('x')
                    .map(|p| p.parse().map_err(|e| format!("--tile: {e}")))
                    .collect::<std::result::Result<_, _>>()?;
                let [mr, nr, vw] = parts[..] else { return Err("--tile wants MRxNRxVW".into()) };
                o.config.gemm_tile = Some((mr, nr, vw));
            }
            "--local" => o.config.local_gemm = Some(value("--local")? == "1"),
            "--device" => o.device = Some(value("--device")?),
            "--only" => o.only = Some(value("--only")?),
            "--compare" => o.compare = Some(value("--compare")?),
            "gemm" | "conv" | "pool" | "lenet" | "all" => o.what = a,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    o.reps = o.reps.max(1);
    Ok(o)
}

/// Median, min and max of a sample, in seconds.
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    Stats { median, min: v[0], max: v[v.len() - 1] }
}

/// Runs `f` twice to warm up, then `reps` times; per-call profile averages.
fn time<T>(cl: &OpenCl, reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<(Stats, Profile)> {
    for _ in 0..2 {
        f()?;
        cl.sync()?;
    }
    cl.reset_profile();
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        let out = f()?;
        cl.sync()?;
        samples.push(start.elapsed().as_secs_f64());
        drop(out);
    }
    let p = cl.try_profile()?;
    breakdown(cl)?;
    let per = |v: u64| v / reps as u64;
    Ok((
        stats(samples),
        Profile {
            kernel_ns: per(p.kernel_ns),
            transfer_ns: per(p.transfer_ns),
            launches: per(p.launches),
            transfers: per(p.transfers),
        },
    ))
}

fn report(name: &str, flops: u64, s: &Stats, p: &Profile) {
    report_line(name, flops, s, p);
}

fn breakdown(cl: &OpenCl) -> Result<()> {
    if std::env::var_os("BENCH_BREAKDOWN").is_some() {
        for (kernel, ns, n) in cl.profile_by_kernel()? {
            println!("    {kernel:<20} {:>9.3} ms in {n} launches", ns as f64 / 1e6);
        }
    }
    Ok(())
}

fn report_line(name: &str, flops: u64, s: &Stats, p: &Profile) {
    let gf = |t: f64| flops as f64 / t / 1e9;
    println!(
        "{name:<28} {:>9.3} ms [{:.3}, {:.3}]  {:>7.1} GFLOP/s [{:.1}, {:.1}]  kernels {:.3} ms in {} launches, transfers {:.3} ms",
        s.median * 1e3,
        s.min * 1e3,
        s.max * 1e3,
        gf(s.median),
        gf(s.max),
        gf(s.min),
        p.kernel_ns as f64 / 1e6,
        p.launches,
        p.transfer_ns as f64 / 1e6
    );
}

fn random(shape: &[usize], seed: u64) -> Tensor<f32> {
    let mut rng = SplitMix64::new(seed);
    Tensor::from_fn(shape, |_| rng.uniform(-1.0, 1.0) as f32)
}

fn fail(what: &str, detail: impl std::fmt::Display) -> kernels_core::Error {
    kernels_core::Error::Device(format!("validation of {what} failed: {detail}"))
}

fn check(what: &str, actual: &[f32], expected: &[f64], terms: usize) -> Result<()> {
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let c = compare(actual, expected, &Tolerance::f32_reduction(terms, scale))?;
    if c.passed() { Ok(()) } else { Err(fail(what, c)) }
}

fn bench_gemm(cl: &OpenCl, reps: usize, only: Option<&str>) -> Result<()> {
    // Square sizes, then the GEMM shapes inside two suite convs (per image:
    // filters x C·R·S x OH·OW) to separate shape effects from conv overheads.
    let shapes = [(256, 256, 256), (1024, 1024, 1024), (2048, 2048, 2048), (64, 576, 3136), (64, 363, 3025)];
    for (m, k, n) in shapes.into_iter().filter(|&(m, k, n)| only.is_none_or(|o| gemm_name(m, k, n).contains(o))) {
        let (a, b) = (random(&[m, k], 1), random(&[k, n], 2));
        let (ad, bd) = (cl.upload(&a)?, cl.upload(&b)?);
        // 512 sampled entries against f64 dot products, before and after timing.
        let mut rng = SplitMix64::new(3);
        let picks: Vec<(usize, usize)> = (0..512).map(|_| (rng.below(m), rng.below(n))).collect();
        let want: Vec<f64> = picks
            .iter()
            .map(|&(i, j)| (0..k).map(|q| f64::from(a.data()[i * k + q]) * f64::from(b.data()[q * n + j])).sum())
            .collect();
        let name = gemm_name(m, k, n);
        let validate = |when: &str| -> Result<()> {
            let c = cl.download(&cl.matmul(&ad, &bd)?)?;
            let got: Vec<f32> = picks.iter().map(|&(i, j)| c.data()[i * n + j]).collect();
            check(&format!("{name} ({when} timing)"), &got, &want, k)
        };
        validate("before")?;
        let (s, p) = time(cl, reps, || cl.matmul(&ad, &bd))?;
        validate("after")?;
        report(&name, 2 * (m * k * n) as u64, &s, &p);
    }
    Ok(())
}

fn gemm_name(m: usize, k: usize, n: usize) -> String {
    if m == k && k == n { format!("gemm n={n}") } else { format!("gemm {m}x{k}x{n}") }
}

/// The first image of a batch, as a host tensor.
fn first_image(t: &Tensor<f32>) -> Result<Tensor<f64>> {
    let per: usize = t.shape()[1..].iter().product();
    let mut shape = t.shape().to_vec();
    shape[0] = 1;
    Tensor::new(&shape, t.data()[..per].iter().map(|&v| f64::from(v)).collect())
}

fn bench_conv(cl: &OpenCl, reps: usize, only: Option<&str>) -> Result<()> {
    let reference = Naive::<f64>::new();
    for case in CONV_SUITE.iter().filter(|c| only.is_none_or(|o| c.name.contains(o))) {
        let g = case.geometry()?;
        let params = case.params();
        let (x, w, b) = (random(&g.x_shape(), 1), random(&g.w_shape(), 2), random(&g.b_shape(), 3));
        let (xd, wd, bd) = (cl.upload(&x)?, cl.upload(&w)?, cl.upload(&b)?);
        let crs = g.c * g.r * g.s;
        // Forward: the first image of the full batch against the reference,
        // before and after timing.
        let (x1, w64, b64) = (first_image(&x)?, w.cast::<f64>(), b.cast::<f64>());
        let y1 = reference.conv2d_forward(&x1, &w64, Some(&b64), &params)?;
        let validate = |when: &str| -> Result<()> {
            let y = cl.download(&cl.conv2d_forward(&xd, &wd, Some(&bd), &params)?)?;
            check(&format!("{} forward ({when} timing)", case.name), &y.data()[..y1.len()], y1.data(), crs)
        };
        validate("before")?;
        // Backward on a batch of one: dx, dw and db against the reference.
        let dy1 = random(y1.shape(), 4);
        let got = cl.conv2d_backward(&cl.upload(&x1.cast())?, &wd, &cl.upload(&dy1)?, &params, GradRequest::ALL)?;
        let want = reference.conv2d_backward(&x1, &w64, &dy1.cast(), &params, GradRequest::ALL)?;
        for (name, got, want, terms) in [
            ("dx", &got.dx, &want.dx, g.k * g.r * g.s),
            ("dw", &got.dw, &want.dw, g.oh * g.ow),
            ("db", &got.db, &want.db, g.oh * g.ow),
        ] {
            let (Some(got), Some(want)) = (got, want) else { return Err(fail(case.name, format!("{name} missing"))) };
            check(&format!("{} {name}", case.name), cl.download(got)?.data(), want.data(), terms)?;
        }
        let dy = cl.upload(&random(&g.y_shape(), 5))?;
        let (s, p) = time(cl, reps, || cl.conv2d_forward(&xd, &wd, Some(&bd), &params))?;
        report(&format!("{} forward", case.name), cost::conv2d_forward(&g, true, 4).flops, &s, &p);
        let (s, p) = time(cl, reps, || cl.conv2d_backward(&xd, &wd, &dy, &params, GradRequest::ALL))?;
        report(&format!("{} backward", case.name), cost::conv2d_backward(&g, 4).flops, &s, &p);
        validate("after")?;
    }
    Ok(())
}

fn bench_pool(cl: &OpenCl, reps: usize) -> Result<()> {
    let reference = Naive::<f64>::new();
    for case in &POOL_SUITE {
        for kind in [PoolKind::Max, PoolKind::Avg] {
            let g = case.geometry(kind)?;
            let params = case.params(kind);
            let x = random(&g.x_shape(), 7);
            let xd = cl.upload(&x)?;
            let y = cl.download(&cl.pool2d_forward(&xd, &params)?)?;
            let y1 = reference.pool2d_forward(&first_image(&x)?, &params)?;
            let name = format!("{} {kind:?}", case.name);
            check(&format!("{name} forward"), &y.data()[..y1.len()], y1.data(), g.window_len())?;
            let dy = cl.upload(&random(&g.y_shape(), 8))?;
            let (s, p) = time(cl, reps, || cl.pool2d_forward(&xd, &params))?;
            report(&format!("{name} forward"), cost::pool2d_forward(&g, 4).flops, &s, &p);
            let (s, p) = time(cl, reps, || cl.pool2d_backward(&xd, &dy, &params))?;
            report(&format!("{name} backward"), cost::pool2d_backward(&g, 4).flops, &s, &p);
        }
    }
    // Transfers: a 64 MiB upload and download.
    let big = random(&[16 << 20], 9);
    let (s, p) = time(cl, reps, || cl.upload(&big))?;
    println!(
        "upload 64 MiB               {:>9.3} ms  {:.1} GB/s (transfer events {:.3} ms)",
        s.median * 1e3,
        67.1e-3 / s.median,
        p.transfer_ns as f64 / 1e6
    );
    let bd = cl.upload(&big)?;
    let (s, p) = time(cl, reps, || cl.download(&bd))?;
    println!(
        "download 64 MiB             {:>9.3} ms  {:.1} GB/s (transfer events {:.3} ms)",
        s.median * 1e3,
        67.1e-3 / s.median,
        p.transfer_ns as f64 / 1e6
    );
    Ok(())
}

mod compare;
mod lenet_step;

fn run() -> Result<()> {
    let o = parse_args().map_err(|e| kernels_core::Error::Device(format!("bad arguments: {e}")))?;
    if let Some(tiles) = &o.compare {
        return compare::run(tiles, o.reps, o.only.as_deref());
    }
    let cl = OpenCl::with_config(o.device.as_deref(), &o.config)?;
    println!("device: {} ({} compute units)", cl.name(), cl.threads());
    println!("build options: {}", cl.build_options());
    println!("reps: {} after 2 warm-up runs; median [min, max]", o.reps);
    let all = o.what == "all";
    if all || o.what == "gemm" {
        bench_gemm(&cl, o.reps, o.only.as_deref())?;
    }
    if all || o.what == "conv" {
        bench_conv(&cl, o.reps, o.only.as_deref())?;
    }
    if all || o.what == "pool" {
        bench_pool(&cl, o.reps)?;
    }
    if all || o.what == "lenet" {
        lenet_step::bench(&cl, o.reps)?;
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}
