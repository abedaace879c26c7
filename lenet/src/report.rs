//! What a run reports: the epoch lines (with a progress bar on a terminal),
//! the `--metrics` JSON, the `--plot` SVG and the `--profile` table.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use kernels_core::{Backend, Optimizer};
use serde::Serialize;
use serde_json::json;

use crate::cli::{Args, BackendChoice};
use crate::data::DataFiles;
use crate::error::LenetError;
use crate::plot;
use crate::profile::OpTime;
use crate::train::{EpochMetrics, Observer, Trainer};

/// The settings a run used, resolved (defaults and checkpoint applied).
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    pub model: &'static str,
    pub dropout: Option<f64>,
    pub activation: &'static str,
    pub pool: &'static str,
    pub optimizer: serde_json::Value,
    pub batch_size: usize,
    pub epochs: usize,
    pub start_epoch: usize,
    pub seed: u64,
    pub train_examples: usize,
    pub test_examples: usize,
    pub data_dir: PathBuf,
    pub load: Option<PathBuf>,
    pub save: Option<PathBuf>,
}

impl RunConfig {
    pub fn new<B: Backend>(args: &Args, t: &Trainer<B>, files: &DataFiles, train: usize, test: usize) -> Self {
        Self {
            model: t.model.arch.model.name(),
            dropout: t.model.arch.dropout,
            activation: t.model.arch.activation.name(),
            pool: t.model.arch.pool.name(),
            optimizer: optimizer_json(&t.optimizer),
            batch_size: args.batch_size,
            epochs: args.epochs,
            start_epoch: t.epoch,
            seed: t.seed,
            train_examples: train,
            test_examples: test,
            data_dir: files.dir.clone(),
            load: args.load.clone(),
            save: args.save.clone(),
        }
    }
}

/// The optimiser's name and hyper-parameters as JSON.
pub fn optimizer_json(opt: &Optimizer) -> serde_json::Value {
    let mut v = json!({ "name": opt.name(), "lr": opt.lr(), "weight_decay": opt.weight_decay() });
    let extra = match *opt {
        Optimizer::Sgd { .. } => json!({}),
        Optimizer::Momentum { momentum, .. } | Optimizer::Nesterov { momentum, .. } => json!({ "momentum": momentum }),
        Optimizer::AdaGrad { eps, .. } => json!({ "eps": eps }),
        Optimizer::RmsProp { alpha, eps, .. } => json!({ "alpha": alpha, "eps": eps }),
        Optimizer::Adam { beta1, beta2, eps, .. } => json!({ "beta1": beta1, "beta2": beta2, "eps": eps }),
    };
    if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        v.extend(extra.clone());
    }
    v
}

/// One row of the `--profile` table.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileRow {
    pub op: String,
    pub calls: u64,
    pub seconds: f64,
}

/// The `--metrics` file.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub config: RunConfig,
    pub backend: BackendChoice,
    /// The backend's own name (for OpenCL, the device).
    pub device: String,
    pub threads: usize,
    pub epochs: Vec<EpochMetrics>,
    pub profile: Option<Vec<ProfileRow>>,
}

impl RunReport {
    pub fn new(
        config: RunConfig,
        backend: BackendChoice,
        device: String,
        threads: usize,
        epochs: Vec<EpochMetrics>,
        profile: Option<Vec<(String, OpTime)>>,
    ) -> Self {
        let profile = profile.map(|rows| {
            rows.into_iter().map(|(op, t)| ProfileRow { op, calls: t.calls, seconds: t.seconds }).collect()
        });
        Self { config, backend, device, threads, epochs, profile }
    }
}

/// Writes `--metrics` and `--plot` when asked, each on its own, and says
/// where they went (and where the checkpoint is, when one was `saved`).
/// Returns how many failed; each failure is reported on stderr as it
/// happens.
pub fn write_outputs(report: &RunReport, args: &Args, saved: Option<&(usize, PathBuf)>) -> usize {
    let mut failed = 0;
    let mut fail = |e: LenetError| {
        crate::note!("error: {e}");
        failed += 1;
    };
    if let Some(path) = &args.metrics {
        match serde_json::to_string_pretty(report) {
            Ok(text) => match std::fs::write(path, text + "\n") {
                Ok(()) => crate::say!("metrics: {}", path.display()),
                Err(e) => fail(LenetError::io(path, e)),
            },
            Err(e) => fail(LenetError::Config(format!("metrics: {e}"))),
        }
    }
    if let Some(path) = &args.plot {
        if report.epochs.is_empty() {
            crate::note!("note: no epoch finished, so no plot was drawn");
        } else {
            let c = &report.config;
            let title = format!(
                "{} ({} + {} pool, {}) on {}",
                c.model, c.activation, c.pool, c.optimizer["name"], report.device
            );
            match plot::curves(path, &title.replace('"', ""), &report.epochs) {
                Ok(()) => crate::say!("plot: {}", path.display()),
                Err(e) => fail(e),
            }
        }
    }
    if let Some((epoch, path)) = saved {
        crate::say!("checkpoint: {} (epoch {epoch})", path.display());
    }
    failed
}

/// Prints where the time went: each op's share of the profiled time
/// (training loop and evaluation), and what the ops do not account for.
pub fn print_profile(rows: &[ProfileRow], epochs: &[EpochMetrics]) {
    let wall: f64 = epochs.iter().map(|m| m.seconds + m.eval_seconds).sum();
    let ops: f64 = rows.iter().map(|r| r.seconds).sum();
    crate::say!("profile: {wall:.2} s of training and evaluation, ops synchronised one by one");
    crate::say!("  {:<44} {:>8} {:>9} {:>9} {:>6}", "op", "calls", "total s", "ms/call", "share");
    for r in rows {
        crate::say!(
            "  {:<44} {:>8} {:>9.3} {:>9.3} {:>5.1}%",
            r.op,
            r.calls,
            r.seconds,
            1e3 * r.seconds / r.calls.max(1) as f64,
            100.0 * r.seconds / wall.max(f64::MIN_POSITIVE)
        );
    }
    let host = wall - ops;
    crate::say!(
        "  {:<44} {:>8} {:>9.3} {:>9} {:>5.1}%",
        "host (batching, argmax, bookkeeping)",
        "",
        host,
        "",
        100.0 * host / wall.max(f64::MIN_POSITIVE)
    );
}

/// The binary's observer: a bar per epoch on a terminal, and one line per
/// epoch always; it stops training when stdout has been closed.
pub struct Observed {
    terminal: bool,
    label: String,
    bar: Option<ProgressBar>,
    pub epochs: Vec<EpochMetrics>,
    /// The last checkpoint written: its epoch and path.
    pub saved: Option<(usize, PathBuf)>,
}

impl Observed {
    pub fn new(terminal: bool, label: String) -> Self {
        Self { terminal, label, bar: None, epochs: Vec::new(), saved: None }
    }
}

/// The seed's epoch line.
pub fn epoch_line(m: &EpochMetrics, label: &str) -> String {
    format!(
        "epoch {}  loss {:.3}  train acc {:.3}  test acc {:.3}  {:.1} examples/s  ({label})",
        m.epoch, m.loss, m.train_acc, m.test_acc, m.examples_per_s
    )
}

impl Observer for Observed {
    fn epoch_start(&mut self, epoch: usize, batches: usize) {
        if self.terminal {
            let bar = ProgressBar::new(batches as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} batches  loss {msg}  {per_sec}  eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(format!("epoch {epoch}"));
            self.bar = Some(bar);
        }
    }

    fn batch_done(&mut self, loss: f64) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{loss:.3}"));
            bar.inc(1);
        }
    }

    fn epoch_done(&mut self, metrics: &EpochMetrics) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        crate::say!("{}", epoch_line(metrics, &self.label));
        self.epochs.push(metrics.clone());
    }

    fn saved(&mut self, epoch: usize, path: &Path) {
        self.saved = Some((epoch, path.to_path_buf()));
    }

    fn should_stop(&self) -> bool {
        crate::output::stdout_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_line_reads_like_the_seed() {
        let m = EpochMetrics {
            epoch: 3,
            loss: 0.3471,
            train_acc: 0.8724,
            test_acc: 0.8516,
            examples_per_s: 37512.44,
            seconds: 1.6,
            eval_seconds: 0.1,
        };
        assert_eq!(
            epoch_line(&m, "im2col, 2 threads"),
            "epoch 3  loss 0.347  train acc 0.872  test acc 0.852  37512.4 examples/s  (im2col, 2 threads)"
        );
    }

    #[test]
    fn optimizer_json_carries_every_hyper_parameter() {
        let v = optimizer_json(&Optimizer::rmsprop(0.01));
        assert_eq!(v["name"], "rmsprop");
        assert_eq!(v["lr"], 0.01);
        assert_eq!(v["alpha"], 0.99);
        assert_eq!(v["eps"], 1e-8);
        assert_eq!(v["weight_decay"], 0.0);
    }
}
