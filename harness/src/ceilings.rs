//! The same-run ceilings every kernel is compared with:
//!
//! - **sgemm**: C = A·B with n = 2048 through matrixmultiply, the rows of C
//!   split across a rayon pool of the chosen thread count (matrixmultiply is
//!   built without its own threading, so this is how the im2col backend
//!   parallelises its GEMMs too). 2·n³ FLOPs over the median time.
//! - **copy**: a 256 MiB f32 buffer copied into another, split across the
//!   same threads; bytes read plus bytes written over the median time (the
//!   STREAM convention, matching `kernels_core::cost`'s byte counts).
//! - **OpenCL GEMM** (in `backends`): the best rate of the OpenCL backend's
//!   own GEMM, via `linear_forward` on square problems.

use std::time::Duration;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::timing::{self, Policy, Stats};

/// A measured ceiling.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ceiling {
    /// What was measured, in words.
    pub what: String,
    /// GFLOP/s for compute ceilings, GB/s for bandwidths, at the fastest
    /// repeat: a ceiling is what the machine can do, and the best repeat is
    /// the one least disturbed by anything else running.
    pub rate: f64,
    /// The same at the median repeat.
    pub rate_median: f64,
    pub unit: String,
    pub timing: Stats,
}

impl Ceiling {
    /// A ceiling of `work` units (FLOPs or bytes) per call, timed by `timing`.
    pub fn new(what: String, work: f64, unit: &str, timing: Stats) -> Ceiling {
        Ceiling {
            what,
            rate: work / timing.min_s / 1e9,
            rate_median: work / timing.median_s / 1e9,
            unit: unit.into(),
            timing,
        }
    }
}

/// Timing policy of the ceilings: a few repeats of a large problem.
fn ceiling_policy(quick: bool) -> Policy {
    Policy {
        warmup: Duration::from_millis(if quick { 50 } else { 300 }),
        min_repeats: if quick { 2 } else { 7 },
        min_time: Duration::from_millis(if quick { 100 } else { 1000 }),
        time_cap: Duration::from_secs(if quick { 1 } else { 5 }),
        max_repeats: 50,
        rounds: 1,
    }
}

fn pool(threads: usize) -> Result<rayon::ThreadPool, String> {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| format!("rayon pool: {e}"))
}

/// C[m x n] = A[m x k] · B[k x n], row-major, the rows of C split into
/// `parts` bands computed in parallel.
pub fn sgemm_parallel(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32], parts: usize) {
    assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n, "sgemm_parallel: slice lengths");
    let rows = m.div_ceil(parts.max(1)).max(1);
    c.par_chunks_mut(rows * n).enumerate().for_each(|(band, c_band)| {
        let first = band * rows;
        let band_rows = c_band.len() / n.max(1);
        let a_band = &a[first * k..(first + band_rows) * k];
        // SAFETY: a_band is band_rows x k, b is k x n and c_band is
        // band_rows x n, all row-major and contiguous (lengths asserted
        // above and sliced here), so every offset sgemm forms with these
        // strides is inside its slice; c_band is exclusively borrowed.
        unsafe {
            matrixmultiply::sgemm(
                band_rows,
                k,
                n,
                1.0,
                a_band.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                0.0,
                c_band.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    });
}

/// matrixmultiply sgemm with n x n matrices on `threads` threads.
pub fn sgemm(n: usize, threads: usize, quick: bool) -> Result<Ceiling, String> {
    let a: Vec<f32> = (0..n * n).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
    let mut c = vec![0.0f32; n * n];
    let pool = pool(threads)?;
    let (stats, ()) = pool.install(|| {
        timing::time(&ceiling_policy(quick), Duration::ZERO, || {
            sgemm_parallel(n, n, n, &a, &b, &mut c, threads);
            Ok::<_, String>(())
        })
    })?;
    // Check one element so a broken GEMM cannot pass as a fast one.
    let expected: f64 = (0..n).map(|p| a[p] as f64 * b[p * n] as f64).sum();
    if (c[0] as f64 - expected).abs() > 1e-3 * (1.0 + expected.abs()) {
        return Err(format!("sgemm ceiling: C[0][0] = {} but expected {expected}", c[0]));
    }
    let what = format!("matrixmultiply sgemm n={n}, {threads} threads (rows split by rayon)");
    Ok(Ceiling::new(what, 2.0 * (n as f64).powi(3), "GFLOP/s", stats))
}

/// Copy bandwidth over `bytes` (per buffer) on `threads` threads.
pub fn copy_bandwidth(bytes: usize, threads: usize, quick: bool) -> Result<Ceiling, String> {
    let len = bytes / 4;
    let src: Vec<f32> = (0..len).map(|i| i as f32).collect();
    let mut dst = vec![0.0f32; len];
    let chunk = len.div_ceil(threads.max(1) * 8).max(1);
    let pool = pool(threads)?;
    let (stats, ()) = pool.install(|| {
        timing::time(&ceiling_policy(quick), Duration::ZERO, || {
            dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s));
            Ok::<_, String>(())
        })
    })?;
    if dst.last() != src.last() {
        return Err("copy ceiling: the copy did not arrive".into());
    }
    let what = format!("copy of {} MiB (read + write counted), {threads} threads", bytes >> 20);
    Ok(Ceiling::new(what, 2.0 * (len * 4) as f64, "GB/s", stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgemm_parallel_matches_a_direct_product() {
        let (m, k, n) = (7, 5, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| 1.0 - i as f32 * 0.25).collect();
        for parts in [1, 2, 3, 8] {
            let mut c = vec![f32::NAN; m * n];
            sgemm_parallel(m, k, n, &a, &b, &mut c, parts);
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                    assert!((c[i * n + j] - want).abs() < 1e-4, "parts {parts} [{i}][{j}]");
                }
            }
        }
    }

    #[test]
    fn small_ceilings_measure_positive_rates() {
        let s = sgemm(64, 2, true).unwrap();
        assert!(s.rate > 0.0 && s.timing.repeats >= 2 && s.rate >= s.rate_median);
        let c = copy_bandwidth(1 << 20, 2, true).unwrap();
        assert!(c.rate > 0.0);
    }
}
