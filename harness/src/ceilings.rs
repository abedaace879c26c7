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
//! - **FMA peak** ([`fma_peaks`]): per ISA level this CPU runs (im2col's
//!   [`Isa::supported`]: portable, AVX2 + FMA, AVX-512) and per thread
//!   count, the rate of a loop of independent multiply-adds held in
//!   registers: no memory traffic, enough independent chains to cover the
//!   FMA latency. It is the arithmetic roof of kernels written at that ISA;
//!   sgemm's rate over it is how close a real GEMM gets.

use std::time::Duration;

use kernels_im2col::Isa;
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

/// The FMA peak of one ISA level at one thread count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FmaPeak {
    /// portable, avx2 or avx512 (im2col's [`Isa`] names).
    pub isa: String,
    pub threads: usize,
    pub ceiling: Ceiling,
}

/// Multiply-add steps per chain per call (and per thread): with 16 x 16
/// AVX-512 lanes that is 2^29 FLOPs, about 5 ms on one Zen 4 core (30 ms
/// portable), long enough for the timer and short enough to repeat.
const FMA_ITERS: usize = 1 << 20;
const FMA_ITERS_QUICK: usize = 1 << 13;

/// Independent chains per ISA: at least the latency of one step (FMA: 4
/// cycles on Zen 4; portable's mul then add: 6) times the pipes (2 FMA, or
/// 2 mul + 2 add) so the pipes never wait, within the registers (AVX-512
/// 32, AVX2 and SSE2 16, two of them holding M and C).
const AVX512_CHAINS: usize = 16;
const AVX2_CHAINS: usize = 12;
const PORTABLE_CHAINS: usize = 12;

/// The recurrence every variant runs: acc = acc * M + C converges to
/// C / (1 - M) without overflow or denormals, and the compiler cannot fold
/// it (floating-point multiply-adds do not reassociate).
const M: f32 = 0.999_9;
const C: f32 = 1e-3;

/// Portable on x86_64: baseline SSE2, 4 lanes, a mulps then an addps per
/// step (x86_64's baseline has no FMA). Written in intrinsics because LLVM
/// vectorised the plain-Rust loop into shuffles that ran at 2 GFLOP/s (a
/// standalone check on this machine); FLOPs: 2 per lane per step.
///
/// # Safety
/// The CPU must have SSE2 (every x86_64 CPU does).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn fma_portable(iters: usize) -> (f32, f64) {
    use std::arch::x86_64::*;
    let (m, c) = (_mm_set1_ps(M), _mm_set1_ps(C));
    let mut acc = [_mm_setzero_ps(); PORTABLE_CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm_set1_ps(i as f32 * 1e-3);
    }
    for _ in 0..iters {
        for a in &mut acc {
            *a = _mm_add_ps(_mm_mul_ps(*a, m), c);
        }
    }
    let mut sum = _mm_setzero_ps();
    for a in acc {
        sum = _mm_add_ps(sum, a);
    }
    let mut lanes = [0.0f32; 4];
    // SAFETY: lanes holds 4 f32, the 16 bytes an unaligned 128-bit store writes.
    unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), sum) };
    (lanes.iter().sum(), 2.0 * (4 * PORTABLE_CHAINS * iters) as f64)
}

/// Portable elsewhere: plain Rust, whatever the compiler makes of it.
#[cfg(not(target_arch = "x86_64"))]
fn fma_portable(iters: usize) -> (f32, f64) {
    let mut acc = [[0.0f32; 4]; PORTABLE_CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = [i as f32 * 1e-3; 4];
    }
    for _ in 0..iters {
        for v in &mut acc {
            for a in v.iter_mut() {
                *a = *a * M + C;
            }
        }
    }
    (acc.iter().flatten().sum(), 2.0 * (4 * PORTABLE_CHAINS * iters) as f64)
}

/// AVX2 + FMA: `AVX2_CHAINS` ymm accumulators, one vfmadd231ps each per step.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(iters: usize) -> (f32, f64) {
    use std::arch::x86_64::*;
    let (m, c) = (_mm256_set1_ps(M), _mm256_set1_ps(C));
    let mut acc = [_mm256_setzero_ps(); AVX2_CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm256_set1_ps(i as f32 * 1e-3);
    }
    for _ in 0..iters {
        for a in &mut acc {
            *a = _mm256_fmadd_ps(*a, m, c);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for a in acc {
        sum = _mm256_add_ps(sum, a);
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: lanes holds 8 f32, the 32 bytes an unaligned 256-bit store writes.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    (lanes.iter().sum(), 2.0 * (8 * AVX2_CHAINS * iters) as f64)
}

/// AVX-512F: `AVX512_CHAINS` zmm accumulators, one vfmadd231ps each per step.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_avx512(iters: usize) -> (f32, f64) {
    use std::arch::x86_64::*;
    let (m, c) = (_mm512_set1_ps(M), _mm512_set1_ps(C));
    let mut acc = [_mm512_setzero_ps(); AVX512_CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm512_set1_ps(i as f32 * 1e-3);
    }
    for _ in 0..iters {
        for a in &mut acc {
            *a = _mm512_fmadd_ps(*a, m, c);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for a in acc {
        sum = _mm512_add_ps(sum, a);
    }
    (_mm512_reduce_add_ps(sum), 2.0 * (16 * AVX512_CHAINS * iters) as f64)
}

/// One thread's share of the FMA loop at `isa`; None when this CPU lacks it.
fn fma_kernel(isa: Isa, iters: usize) -> Option<(f32, f64)> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Portable if std::arch::is_x86_feature_detected!("sse2") => {
            // SAFETY: fma_portable needs SSE2; the guard of this arm just
            // detected it on this CPU.
            Some(unsafe { fma_portable(iters) })
        }
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Portable => Some(fma_portable(iters)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") => {
            // SAFETY: fma_avx2 needs AVX2 and FMA; the guard of this arm
            // just detected both on this CPU.
            Some(unsafe { fma_avx2(iters) })
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => {
            // SAFETY: fma_avx512 needs AVX-512F; the guard of this arm just
            // detected it on this CPU.
            Some(unsafe { fma_avx512(iters) })
        }
        _ => None,
    }
}

/// The FMA peak at `isa` on `threads` threads: each thread of a rayon pool
/// runs the loop once per call (`rayon::broadcast`); the FLOPs of all
/// threads over the call's time.
pub fn fma_peak(isa: Isa, threads: usize, quick: bool) -> Result<FmaPeak, String> {
    let iters = if quick { FMA_ITERS_QUICK } else { FMA_ITERS };
    let pool = pool(threads)?;
    let policy = Policy {
        warmup: Duration::from_millis(if quick { 10 } else { 100 }),
        min_repeats: if quick { 2 } else { 7 },
        min_time: Duration::from_millis(if quick { 20 } else { 300 }),
        time_cap: Duration::from_secs(if quick { 1 } else { 3 }),
        max_repeats: 50,
        rounds: 1,
    };
    let (stats, (sum, flops)) = pool.install(|| {
        timing::time(&policy, Duration::ZERO, || {
            // Exactly once on every thread of the pool, whatever stealing does.
            let parts: Vec<Option<(f32, f64)>> = rayon::broadcast(|_| fma_kernel(isa, iters));
            parts
                .into_iter()
                .try_fold((0.0f32, 0.0f64), |(s, f), part| part.map(|(ps, pf)| (s + ps, f + pf)))
                .ok_or_else(|| format!("FMA peak: this CPU does not run {isa}"))
        })
    })?;
    // Every chain converges towards C / (1 - M) = 10: a sum that is not
    // finite and positive means the loop computed something else.
    if !(sum.is_finite() && sum > 0.0) {
        return Err(format!("FMA peak at {isa}: the accumulators ended at {sum}"));
    }
    let what = match isa {
        Isa::Portable => {
            format!("FMA peak, portable (baseline SSE2: {PORTABLE_CHAINS} xmm chains of mul + add), {threads} threads")
        }
        Isa::Avx2 => format!("FMA peak, AVX2 + FMA ({AVX2_CHAINS} ymm chains), {threads} threads"),
        Isa::Avx512 => format!("FMA peak, AVX-512F ({AVX512_CHAINS} zmm chains), {threads} threads"),
    };
    Ok(FmaPeak { isa: isa.to_string(), threads, ceiling: Ceiling::new(what, flops, "GFLOP/s", stats) })
}

/// [`fma_peak`] for every ISA this CPU runs ([`Isa::supported`]), at one
/// thread and at `threads` (when more than one).
pub fn fma_peaks(threads: usize, quick: bool) -> Result<Vec<FmaPeak>, String> {
    let mut counts = vec![1];
    if threads > 1 {
        counts.push(threads);
    }
    let mut peaks = Vec::new();
    for isa in Isa::supported() {
        for &t in &counts {
            peaks.push(fma_peak(isa, t, quick)?);
        }
    }
    Ok(peaks)
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

    #[test]
    fn fma_peaks_cover_every_supported_isa_and_thread_count() {
        let peaks = fma_peaks(2, true).unwrap();
        assert_eq!(peaks.len(), 2 * Isa::supported().len());
        for (peak, isa) in peaks.iter().zip(Isa::supported().into_iter().flat_map(|i| [i, i])) {
            assert_eq!(peak.isa, isa.to_string());
            assert!(peak.ceiling.rate > 0.0 && peak.ceiling.rate >= peak.ceiling.rate_median, "{peak:?}");
        }
        assert_eq!((peaks[0].threads, peaks[1].threads), (1, 2));
    }

    #[test]
    fn every_fma_variant_computes_the_same_recurrence() {
        // One chain element after n steps of acc = acc * M + C from a0.
        let step = |a0: f32, n: usize| (0..n).fold(a0, |a, _| a * M + C) as f64;
        for isa in Isa::supported() {
            let (sum, flops) = fma_kernel(isa, 100).unwrap();
            let (lanes, starts): (usize, Box<dyn Fn(usize) -> f32>) = match isa {
                Isa::Portable => (4 * PORTABLE_CHAINS, Box::new(|i| (i / 4) as f32 * 1e-3)),
                Isa::Avx2 => (8 * AVX2_CHAINS, Box::new(|i| (i / 8) as f32 * 1e-3)),
                Isa::Avx512 => (16 * AVX512_CHAINS, Box::new(|i| (i / 16) as f32 * 1e-3)),
            };
            let want: f64 = (0..lanes).map(|i| step(starts(i), 100)).sum();
            assert!((sum as f64 - want).abs() < 1e-4 * want, "{isa}: {sum} vs {want}");
            assert_eq!(flops, 2.0 * (lanes * 100) as f64, "{isa}");
        }
    }
}
