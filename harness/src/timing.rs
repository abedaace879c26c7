//! Wall-clock timing: warm up, repeat until a minimum time, report the
//! median and the spread (min, max). The caller's closure must finish its
//! work before returning (OpenCL: it synchronises the queue).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long and how often to repeat a call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Warm-up time before timing (the validation call counts towards it).
    pub warmup: Duration,
    /// Repeat at least this often...
    pub min_repeats: usize,
    /// ...and until this much time was spent timing...
    pub min_time: Duration,
    /// ...unless the timed calls already took this long (slow kernels, such
    /// as the naive reference on large shapes, get at least one repeat).
    pub time_cap: Duration,
    /// Never more repeats than this.
    pub max_repeats: usize,
    /// Rounds over a shape: every backend but naive and every peer is
    /// timed once per round, back to back, and each keeps its best round
    /// (the lowest median), so a burst of load on a shared machine hits one
    /// round of one side, not the comparison (`--rounds`).
    pub rounds: usize,
}

impl Policy {
    /// The full report: 5 repeats and 1 s at least, 6 s at most per kernel.
    pub fn full() -> Self {
        Policy {
            warmup: Duration::from_millis(200),
            min_repeats: 5,
            min_time: Duration::from_secs(1),
            time_cap: Duration::from_secs(6),
            max_repeats: 1000,
            rounds: 1,
        }
    }

    /// `--quick` (CI): a few repeats, enough to exercise every path.
    pub fn quick() -> Self {
        Policy {
            warmup: Duration::from_millis(20),
            min_repeats: 2,
            min_time: Duration::from_millis(50),
            time_cap: Duration::from_millis(500),
            max_repeats: 20,
            rounds: 1,
        }
    }
}

/// A [`Policy`] in seconds, as results.json records it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PolicySummary {
    pub warmup_s: f64,
    pub min_repeats: usize,
    pub min_time_s: f64,
    pub time_cap_s: f64,
    pub max_repeats: usize,
    /// Rounds per shape, best kept (schema 2 files written before this
    /// field read as 1).
    #[serde(default = "one_round")]
    pub rounds: usize,
}

fn one_round() -> usize {
    1
}

impl From<&Policy> for PolicySummary {
    fn from(p: &Policy) -> Self {
        PolicySummary {
            warmup_s: p.warmup.as_secs_f64(),
            min_repeats: p.min_repeats,
            min_time_s: p.min_time.as_secs_f64(),
            time_cap_s: p.time_cap.as_secs_f64(),
            max_repeats: p.max_repeats,
            rounds: p.rounds,
        }
    }
}

/// Timing statistics of the repeats, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub repeats: usize,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
}

impl Stats {
    /// Median, min and max of `samples` (seconds); None when empty.
    pub fn from_samples(samples: &[f64]) -> Option<Stats> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
        };
        Some(Stats { repeats: n, median_s: median, min_s: sorted[0], max_s: sorted[n - 1] })
    }
}

/// Times `call` under `policy`, after warming up for what `warmed` has not
/// already covered. Returns the statistics and the last call's result (so
/// the caller can validate what was actually timed).
pub fn time<T, E>(policy: &Policy, warmed: Duration, mut call: impl FnMut() -> Result<T, E>) -> Result<(Stats, T), E> {
    let mut warm = warmed;
    while warm < policy.warmup {
        let start = Instant::now();
        call()?;
        warm += start.elapsed();
    }
    let mut samples = Vec::new();
    let mut last = timed_call(&mut call, &mut samples)?;
    loop {
        let total = Duration::from_secs_f64(samples.iter().sum());
        let enough = samples.len() >= policy.min_repeats && total >= policy.min_time;
        if enough || total >= policy.time_cap || samples.len() >= policy.max_repeats {
            break;
        }
        // The previous output is dropped before the next call, outside the
        // timed region, so each call can reuse its memory (as criterion's
        // loop in benches/ops.rs does): only one output is ever alive.
        drop(last);
        last = timed_call(&mut call, &mut samples)?;
    }
    let first = samples[0];
    let single = Stats { repeats: 1, median_s: first, min_s: first, max_s: first };
    Ok((Stats::from_samples(&samples).unwrap_or(single), last))
}

/// One call, its duration appended to `samples`.
fn timed_call<T, E>(call: &mut impl FnMut() -> Result<T, E>, samples: &mut Vec<f64>) -> Result<T, E> {
    let start = Instant::now();
    let out = call()?;
    samples.push(start.elapsed().as_secs_f64());
    Ok(out)
}

/// Criterion's throughput scaling for a FLOP count (benches/ops.rs): the
/// unit for `flops` per call at a typical `typical_ns` per call, with
/// `values` (ns per call) rewritten in that unit. Criterion's own formatter
/// would print "Gelem/s", which a reader takes for elements.
pub fn scale_flop_rate(flops: f64, typical_ns: f64, values: &mut [f64]) -> &'static str {
    let rate = flops * 1e9 / typical_ns;
    let (denominator, unit) = if rate < 1e3 {
        (1.0, "FLOP/s")
    } else if rate < 1e6 {
        (1e3, "KFLOP/s")
    } else if rate < 1e9 {
        (1e6, "MFLOP/s")
    } else if rate < 1e12 {
        (1e9, "GFLOP/s")
    } else {
        (1e12, "TFLOP/s")
    };
    for v in values {
        *v = flops * 1e9 / *v / denominator;
    }
    unit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flop_rates_are_named_flop_rates() {
        // 2 GFLOP in 10 ms: 200 GFLOP/s.
        let mut values = [1e7, 2e7];
        assert_eq!(scale_flop_rate(2e9, 1e7, &mut values), "GFLOP/s");
        assert_eq!(values, [200.0, 100.0]);
        let mut values = [1e9];
        assert_eq!(scale_flop_rate(5e5, 1e9, &mut values), "KFLOP/s");
        assert_eq!(values, [500.0]);
    }

    #[test]
    fn stats_take_median_min_max() {
        let s = Stats::from_samples(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.repeats, s.median_s, s.min_s, s.max_s), (3, 2.0, 1.0, 3.0));
        let s = Stats::from_samples(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median_s, 2.5);
        assert!(Stats::from_samples(&[]).is_none());
    }

    #[test]
    fn time_repeats_at_least_min_repeats_and_returns_the_last_output() {
        let policy = Policy {
            warmup: Duration::ZERO,
            min_repeats: 4,
            min_time: Duration::ZERO,
            time_cap: Duration::from_secs(60),
            max_repeats: 10,
            rounds: 1,
        };
        let mut calls = 0;
        let (stats, last) = time(&policy, Duration::ZERO, || {
            calls += 1;
            Ok::<_, ()>(calls)
        })
        .unwrap();
        assert_eq!(stats.repeats, 4);
        assert_eq!(last, 4);
        let failing = time(&policy, Duration::ZERO, || Err::<(), _>("device lost"));
        assert_eq!(failing.unwrap_err(), "device lost");
    }
}
