//! `--compare TILE,TILE,...`: A/B timing of GEMM register tiles under the
//! same load. One backend per tile; each round times one call of every
//! variant in turn, so background load hits all variants alike. Prints the
//! median and min per variant and the ratio of medians to the first.

use std::time::Instant;

use kernels_core::{Backend, CONV_SUITE, Result, cost};
use kernels_opencl::{Config, OpenCl};

use crate::{random, stats};

fn parse_tile(s: &str) -> Result<(usize, usize, usize)> {
    let bad = || kernels_core::Error::Device(format!("--compare: bad tile {s:?}, want MRxNRxVW"));
    let v: Vec<usize> = s.split('x').map(|p| p.parse().map_err(|_| bad())).collect::<Result<_>>()?;
    match v[..] {
        [mr, nr, vw] => Ok((mr, nr, vw)),
        _ => Err(bad()),
    }
}

/// A timed problem: a name, its FLOPs, and a call on variant `i`'s backend
/// (each variant has its own uploaded operands).
type Problem = (String, u64, Box<dyn Fn(usize, &OpenCl) -> Result<()>>);

fn problems(backends: &[OpenCl], only: Option<&str>) -> Result<Vec<Problem>> {
    let mut out: Vec<Problem> = Vec::new();
    let n = 1024;
    if only.is_none_or(|o| "gemm n=1024".contains(o)) {
        let (a, b) = (random(&[n, n], 1), random(&[n, n], 2));
        let dev: Vec<_> = backends.iter().map(|cl| Ok((cl.upload(&a)?, cl.upload(&b)?))).collect::<Result<_>>()?;
        out.push((
            "gemm n=1024".into(),
            2 * (n as u64).pow(3),
            Box::new(move |i: usize, cl: &OpenCl| {
                let (a, b) = &dev[i];
                cl.matmul(a, b).map(drop)
            }),
        ));
    }
    for case in CONV_SUITE.iter().filter(|c| only.is_some_and(|o| c.name.contains(o))) {
        let g = case.geometry()?;
        let params = case.params();
        let (x, w, b) = (random(&g.x_shape(), 1), random(&g.w_shape(), 2), random(&g.b_shape(), 3));
        let dev: Vec<_> =
            backends.iter().map(|cl| Ok((cl.upload(&x)?, cl.upload(&w)?, cl.upload(&b)?))).collect::<Result<_>>()?;
        out.push((
            format!("{} forward", case.name),
            cost::conv2d_forward(&g, true, 4).flops,
            Box::new(move |i: usize, cl: &OpenCl| {
                let (x, w, b) = &dev[i];
                cl.conv2d_forward(x, w, Some(b), &params).map(drop)
            }),
        ));
    }
    Ok(out)
}

pub fn run(tiles: &str, reps: usize, only: Option<&str>) -> Result<()> {
    let tiles: Vec<_> = tiles.split(',').map(parse_tile).collect::<Result<_>>()?;
    let backends: Vec<OpenCl> = tiles
        .iter()
        .map(|&t| OpenCl::with_config(None, &Config { gemm_tile: Some(t), ..Config::default() }))
        .collect::<Result<_>>()?;
    for (name, flops, call) in problems(&backends, only)? {
        let mut samples = vec![Vec::new(); backends.len()];
        for round in 0..reps + 2 {
            for (i, cl) in backends.iter().enumerate() {
                let start = Instant::now();
                call(i, cl)?;
                cl.sync()?;
                if round >= 2 {
                    samples[i].push(start.elapsed().as_secs_f64());
                }
            }
        }
        let medians: Vec<f64> = samples.iter().map(|s| stats(s.clone()).median).collect();
        for (i, s) in samples.into_iter().enumerate() {
            let st = stats(s);
            let (mr, nr, vw) = tiles[i];
            println!(
                "{name:<22} tile {mr}x{nr}x{vw}: median {:>8.3} ms ({:>6.1} GFLOP/s), min {:>8.3} ms ({:>6.1} GFLOP/s), median ratio to first {:.2}",
                st.median * 1e3,
                flops as f64 / st.median / 1e9,
                st.min * 1e3,
                flops as f64 / st.min / 1e9,
                medians[0] / medians[i]
            );
        }
    }
    Ok(())
}
