//! The `lenet` command line: `lenet [train] [FLAGS]` and `lenet eval --load
//! FILE [FLAGS]`. The backend is chosen in one place ([`run`]); everything
//! after it is generic over `B: Backend` ([`session`]).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use kernels_core::{Backend, Optimizer};
use kernels_naive::Naive;

use crate::checkpoint;
use crate::data::DataFiles;
use crate::error::{LenetError, Result};
use crate::model::{Activation, Architecture, Model, Pooling};
use crate::plot;
use crate::profile::{OpTime, Timed};
use crate::report::{self, Observed, RunConfig, RunReport};
use crate::train::{FitPlan, Trainer, evaluate};

#[derive(Debug, Parser)]
#[command(
    name = "lenet",
    version,
    about = "Train LeNet-5 (or the seeds' other networks: --model) on Fashion-MNIST with any backend of the workspace."
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub args: Args,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train (the default): --epochs more epochs, from scratch or from --load.
    Train(Args),
    /// Evaluate the checkpoint given by --load on the test set.
    Eval(Args),
}

/// Which backend runs the ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// The reference: direct loops, one thread (slow).
    Naive,
    /// im2col + sgemm on the CPU, rayon threads.
    Im2col,
    /// OpenCL (a GPU, or PoCL on the CPU).
    Opencl,
}

/// Optimiser choice; hyper-parameters come from the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerChoice {
    Sgd,
    Momentum,
    Nesterov,
    Adagrad,
    Rmsprop,
    Adam,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Backend running every op.
    #[arg(long, value_enum, default_value_t = BackendChoice::Im2col)]
    pub backend: BackendChoice,
    /// OpenCL device: "P:D" platform/device indices or a name substring
    /// (default: KERNELS_OPENCL_DEVICE, else a GPU, else any device).
    #[arg(long)]
    pub device: Option<String>,
    /// Print the OpenCL platforms and devices found, with the limits that
    /// shape the kernels' launches and the index `--device` takes, and exit.
    #[arg(long)]
    pub list_devices: bool,
    /// Epochs to run, 1 to 100000 (numbered on from a loaded checkpoint's epoch).
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Seeds the initial weights and every epoch's shuffle.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// im2col threads (default: RAYON_NUM_THREADS or all cores); at most
    /// 4 per core unless --force-threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Allow --threads above 4 per core (up to 1024): they only contend for
    /// the cores, so this is for experiments.
    #[arg(long)]
    pub force_threads: bool,
    /// Train on the first N training images only.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long, value_name = "N")]
    pub test_limit: Option<usize>,
    /// Data directory (default: $FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Write a checkpoint (safetensors) after every epoch.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Start from (train) or evaluate (eval) this checkpoint.
    #[arg(long, value_name = "FILE")]
    pub load: Option<PathBuf>,
    /// Write per-epoch metrics as JSON.
    #[arg(long, value_name = "FILE.json")]
    pub metrics: Option<PathBuf>,
    /// Draw loss and accuracy curves as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Draw conv1's filters before and after training as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub filters: Option<PathBuf>,
    /// Network [default: lenet5, or the checkpoint's]: lenet5-bn adds batch
    /// norm after every conv and dense layer but the last; mxnet-lenet and
    /// simplecnn are the seeds' other networks.
    #[arg(long, value_enum)]
    pub model: Option<Model>,
    /// Dropout probability before every dense layer, in [0, 1) [default: no
    /// dropout layers, or the checkpoint's].
    #[arg(long, value_name = "P")]
    pub dropout: Option<f64>,
    /// Activation [default: relu, or the checkpoint's].
    #[arg(long, value_enum)]
    pub activation: Option<Activation>,
    /// Pooling [default: max, or the checkpoint's].
    #[arg(long, value_enum)]
    pub pool: Option<Pooling>,
    /// Optimiser [default: adam, or the checkpoint's].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerChoice>,
    /// Learning rate [default: sgd 0.1, momentum and nesterov 0.01, adagrad 0.01, rmsprop 0.001, adam 0.001].
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// RMSprop's smoothing constant.
    #[arg(long, default_value_t = 0.99)]
    pub alpha: f64,
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    #[arg(long, default_value_t = 0.999)]
    pub beta2: f64,
    /// Denominator epsilon [default: adagrad 1e-10, others 1e-8].
    #[arg(long)]
    pub eps: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Time every op and print where a step's time goes (syncs after each op).
    #[arg(long)]
    pub profile: bool,
}

impl Args {
    /// The optimiser the flags describe, or None when --optimizer is absent.
    pub fn optimizer(&self) -> Option<Optimizer> {
        self.optimizer.map(|choice| self.build_optimizer(choice))
    }

    /// --optimizer with its flags, else Adam with them (lr 1e-3 by default).
    pub fn optimizer_or_default(&self) -> Optimizer {
        self.build_optimizer(self.optimizer.unwrap_or(OptimizerChoice::Adam))
    }

    fn build_optimizer(&self, choice: OptimizerChoice) -> Optimizer {
        let wd = self.weight_decay;
        let eps = self.eps.unwrap_or(if choice == OptimizerChoice::Adagrad { 1e-10 } else { 1e-8 });
        match choice {
            OptimizerChoice::Sgd => Optimizer::Sgd { lr: self.lr.unwrap_or(0.1), weight_decay: wd },
            OptimizerChoice::Momentum => {
                Optimizer::Momentum { lr: self.lr.unwrap_or(0.01), momentum: self.momentum, weight_decay: wd }
            }
            OptimizerChoice::Nesterov => {
                Optimizer::Nesterov { lr: self.lr.unwrap_or(0.01), momentum: self.momentum, weight_decay: wd }
            }
            OptimizerChoice::Adagrad => Optimizer::AdaGrad { lr: self.lr.unwrap_or(0.01), eps, weight_decay: wd },
            OptimizerChoice::Rmsprop => {
                Optimizer::RmsProp { lr: self.lr.unwrap_or(1e-3), alpha: self.alpha, eps, weight_decay: wd }
            }
            OptimizerChoice::Adam => Optimizer::Adam {
                lr: self.lr.unwrap_or(1e-3),
                beta1: self.beta1,
                beta2: self.beta2,
                eps,
                weight_decay: wd,
            },
        }
    }
}

/// `--list-devices`: every OpenCL device, or why there is none.
fn list_devices() -> Result<()> {
    let devices = kernels_opencl::list_devices().map_err(|e| LenetError::Config(format!("--list-devices: {e}")))?;
    for d in devices {
        crate::say!("{d}");
    }
    Ok(())
}

/// Train or eval, as parsed.
pub fn run(cli: Cli) -> Result<()> {
    let (eval, args) = match cli.command {
        None => (false, cli.args),
        Some(Command::Train(args)) => (false, args),
        Some(Command::Eval(args)) => (true, args),
    };
    if args.list_devices {
        return list_devices();
    }
    check_counts(&args, eval)?;
    if args.threads.is_some() && args.backend != BackendChoice::Im2col {
        crate::note!("note: --threads applies to the im2col backend only; ignored");
    }
    if args.device.is_some() && args.backend != BackendChoice::Opencl {
        crate::note!("note: --device applies to the opencl backend only; ignored");
    }
    match args.backend {
        BackendChoice::Naive => dispatch(Naive::<f32>::new(), eval, &args),
        BackendChoice::Im2col => {
            let be = match args.threads {
                Some(n) => kernels_im2col::Im2col::with_threads(n)?,
                None => kernels_im2col::Im2col::new(),
            };
            // The whole session on one of the backend's threads: each op
            // then starts without a hand-off between threads.
            let runner = be.clone();
            runner.install(|| dispatch(be, eval, &args))
        }
        BackendChoice::Opencl => {
            let be = match &args.device {
                Some(selector) => kernels_opencl::OpenCl::with_device(selector)?,
                None => kernels_opencl::OpenCl::new()?,
            };
            dispatch(be, eval, &args)
        }
    }
}

/// Most epochs one run may ask for: far beyond any useful run, and small
/// enough that nothing sized from it can exhaust memory.
pub const MAX_EPOCHS: usize = 100_000;
/// --threads above this many per core is refused without --force-threads.
pub const THREADS_PER_CORE: usize = 4;
/// --threads above this is refused even with --force-threads.
pub const MAX_FORCED_THREADS: usize = 1024;

/// Every count from the command line, checked before anything runs.
fn check_counts(args: &Args, eval: bool) -> Result<()> {
    let refuse = |msg: String| Err(LenetError::Config(msg));
    if !eval && args.epochs == 0 {
        return refuse(
            "--epochs 0 would train nothing and write nothing; give at least 1 \
             (to evaluate a checkpoint, run `lenet eval --load FILE`)"
                .into(),
        );
    }
    if !eval && args.epochs > MAX_EPOCHS {
        return refuse(format!("--epochs {} is more than {MAX_EPOCHS}, the most one run may ask for", args.epochs));
    }
    if args.batch_size == 0 {
        return refuse("--batch-size must be at least 1".into());
    }
    if args.limit == Some(0) {
        return refuse("--limit 0 leaves no training images; give at least 1".into());
    }
    if args.test_limit == Some(0) {
        return refuse("--test-limit 0 leaves no test images to evaluate on; give at least 1".into());
    }
    match args.threads {
        Some(0) => return refuse("--threads must be at least 1".into()),
        // Other backends ignore --threads (with a note).
        _ if args.backend != BackendChoice::Im2col => {}
        Some(n) if n > MAX_FORCED_THREADS => {
            return refuse(format!("--threads {n} is more than {MAX_FORCED_THREADS}, the most lenet runs"));
        }
        Some(n) if !args.force_threads => {
            let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
            let most = THREADS_PER_CORE * cores;
            if n > most {
                return refuse(format!(
                    "--threads {n} is more than {THREADS_PER_CORE} per core ({most} on {cores} cores): the threads \
                     would only contend for the cores and slow training down; pass --force-threads to run it anyway"
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Where an output will land: its directory's canonical path joined with
/// its name (the file may not exist yet), or, for an existing symlink, what
/// it points to (`--metrics` and the SVGs are written through it). Checks
/// that the path is not a directory and that its directory exists, is a
/// directory and takes new files.
fn output_target(flag: &str, path: &Path) -> Result<PathBuf> {
    let bad = |detail: String| Err(LenetError::bad_path(path, detail));
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_dir() {
            return bad(format!("is a directory; {flag} takes a file name"));
        }
        if !meta.is_file() {
            // A device such as /dev/null takes --metrics or a plot, but a
            // checkpoint is saved by renaming a new file over the path,
            // which would replace the device itself.
            if flag == "--save" {
                return bad("is not a regular file; --save replaces its file, so it must be one (or new)".into());
            }
            // Opened without truncating: checks it takes writes, changes nothing.
            if let Err(e) = std::fs::OpenOptions::new().write(true).open(path) {
                return bad(format!("cannot be written: {e}"));
            }
            return Ok(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()));
        }
    }
    let Some(name) = path.file_name() else {
        return bad(format!("{flag} needs a file name"));
    };
    let parent = checkpoint::parent_dir(path);
    let dir = match std::fs::canonicalize(parent) {
        Ok(dir) => dir,
        Err(e) => return bad(format!("cannot write into {}: {e}", parent.display())),
    };
    if !dir.is_dir() {
        return bad(format!("{} is not a directory", parent.display()));
    }
    // Creates (and drops) an unnamed file: the one reliable test that the
    // directory takes new files.
    if let Err(e) = tempfile::tempfile_in(&dir) {
        return bad(format!("cannot write into {}: {e}", parent.display()));
    }
    let target = dir.join(name);
    let is_link = std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink());
    Ok(if is_link { std::fs::canonicalize(&target).unwrap_or(target) } else { target })
}

/// Every output is writable, no two name the same file, and none is an
/// input: a data file or the loaded checkpoint (which only --save may
/// replace: that is resuming in place).
fn check_outputs(args: &Args, files: &DataFiles) -> Result<()> {
    let outputs =
        [("--save", &args.save), ("--metrics", &args.metrics), ("--plot", &args.plot), ("--filters", &args.filters)];
    let mut targets: Vec<(&str, &Path, PathBuf)> = Vec::new();
    for (flag, path) in outputs {
        let Some(path) = path else { continue };
        let target = output_target(flag, path)?;
        if let Some((other, other_path, _)) = targets.iter().find(|(_, _, t)| *t == target) {
            return Err(LenetError::Config(format!(
                "{other} {} and {flag} {} name the same file: one would overwrite the other",
                other_path.display(),
                path.display()
            )));
        }
        targets.push((flag, path, target));
    }
    let data = [&files.train_images, &files.train_labels, &files.test_images, &files.test_labels];
    let mut inputs: Vec<(&str, &Path)> = data.iter().map(|p| ("the data file", p.as_path())).collect();
    if let Some(load) = &args.load {
        inputs.push(("the checkpoint given to --load", load));
    }
    for (i, (what, input)) in inputs.into_iter().enumerate() {
        let is_load = i == data.len();
        let Ok(input_target) = std::fs::canonicalize(input) else { continue };
        for (flag, path, target) in &targets {
            let resume_in_place = *flag == "--save" && is_load;
            if *target == input_target && !resume_in_place {
                return Err(LenetError::Config(format!(
                    "{flag} {} is {what} {}: writing it would destroy an input",
                    path.display(),
                    input.display()
                )));
            }
        }
    }
    Ok(())
}

fn dispatch<B: Backend>(be: B, eval: bool, args: &Args) -> Result<()> {
    if args.profile {
        let timed = Timed::new(be);
        session(&timed, eval, args, Some(&|| timed.report()), &|| timed.reset())
    } else {
        session(&be, eval, args, None, &|| ())
    }
}

/// Per-op totals, when profiling.
type ProfileFn<'a> = &'a dyn Fn() -> Vec<(String, OpTime)>;

/// Everything after the backend is chosen: data, model, training or
/// evaluation, outputs.
pub fn session<B: Backend>(
    be: &B,
    eval: bool,
    args: &Args,
    profile: Option<ProfileFn<'_>>,
    reset_profile: &dyn Fn(),
) -> Result<()> {
    let files = DataFiles::locate(args.data.as_deref())?;
    if !eval {
        check_outputs(args, &files)?;
    }
    let (mut train, mut test) = files.load()?;
    if let Some(n) = args.limit {
        train.truncate(n);
    }
    if let Some(n) = args.test_limit {
        test.truncate(n);
    }
    if test.is_empty() {
        return Err(LenetError::data(&files.test_images, "the test set is empty: there is nothing to evaluate on"));
    }
    if train.is_empty() && !eval {
        return Err(LenetError::data(&files.train_images, "the training set is empty"));
    }

    let mut trainer = match &args.load {
        Some(path) => {
            let mut ckpt = checkpoint::load::<B::Elem>(path)?;
            let conflict = |what: &str, theirs: &str, ours: &str| {
                LenetError::Config(format!(
                    "{} was trained with {what} {theirs}; --{what} {ours} does not match (leave the flag out to resume)",
                    path.display()
                ))
            };
            if let Some(m) = args.model.filter(|&m| m != ckpt.arch.model) {
                return Err(conflict("model", ckpt.arch.model.name(), m.name()));
            }
            if args.dropout.is_some() && args.dropout != ckpt.arch.dropout {
                let had = ckpt.arch.dropout.map_or("none".to_string(), |p| p.to_string());
                let asked = args.dropout.map_or("none".to_string(), |p| p.to_string());
                return Err(conflict("dropout", &had, &asked));
            }
            if let Some(a) = args.activation.filter(|&a| a != ckpt.arch.activation) {
                return Err(conflict("activation", ckpt.arch.activation.name(), a.name()));
            }
            if let Some(p) = args.pool.filter(|&p| p != ckpt.arch.pool) {
                return Err(conflict("pool", ckpt.arch.pool.name(), p.name()));
            }
            if let Some(opt) = args.optimizer() {
                if opt.name() != ckpt.optimizer.name() {
                    return Err(conflict("optimizer", ckpt.optimizer.name(), opt.name()));
                }
                // Same rule: new hyper-parameters, same state buffers.
                ckpt.optimizer = opt;
            } else if let Some(lr) = args.lr {
                ckpt.optimizer = with_lr(ckpt.optimizer, lr);
            }
            ckpt.into_trainer(be)?
        }
        None if eval => {
            return Err(LenetError::Config("eval needs --load FILE (a checkpoint written by --save)".into()));
        }
        None => {
            let arch = Architecture {
                model: args.model.unwrap_or_default(),
                activation: args.activation.unwrap_or(Activation::Relu),
                pool: args.pool.unwrap_or(Pooling::Max),
                dropout: args.dropout,
            };
            Trainer::new(be, arch, args.optimizer_or_default(), args.seed)?
        }
    };
    let config = RunConfig::new(args, &trainer, &files, train.len(), test.len());
    let threads = be.threads();
    let label = format!("{}, {} thread{}", be.name(), threads, if threads == 1 { "" } else { "s" });

    if eval {
        let result = evaluate(be, &trainer.model, &test, args.batch_size.max(500))?;
        if !result.loss.is_finite() {
            // Finite weights can still overflow on the way to the logits.
            let path = args.load.clone().unwrap_or_default();
            return Err(LenetError::checkpoint(
                path,
                format!("its test loss is {} (the weights overflow): a diverged model", result.loss),
            ));
        }
        crate::say!(
            "eval {}  epoch {}  test loss {:.4}  test acc {:.4}  ({} test images, {label})",
            args.load.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
            trainer.epoch,
            result.loss,
            result.accuracy,
            test.len()
        );
        return Ok(());
    }

    let before = conv1_weights(be, &trainer)?;
    crate::say!(
        "training {} ({} + {} pooling{}, {} lr {}) on {} images from {}, testing on {}; {label}",
        trainer.model.arch.model.name(),
        trainer.model.arch.activation.name(),
        trainer.model.arch.pool.name(),
        trainer.model.arch.dropout.map_or(String::new(), |p| format!(", dropout {p}")),
        trainer.optimizer.name(),
        short_float(trainer.optimizer.lr()),
        train.len(),
        files.dir.display(),
        test.len()
    );
    reset_profile();
    let plan = FitPlan { epochs: args.epochs, batch_size: args.batch_size, save: args.save.as_deref() };
    let mut observed = Observed::new(std::io::stderr().is_terminal(), label);
    let outcome = trainer.fit(be, &train, &test, &plan, &mut observed);
    let saved = observed.saved.clone();
    let report = RunReport::new(config, args.backend, be.name(), threads, observed.epochs, profile.map(|p| p()));
    // Outputs of the epochs that finished are written even when training
    // stopped, each on its own: one failing does not lose the others.
    let mut failed = report::write_outputs(&report, args, saved.as_ref());
    if let (Some(path), Ok(_)) = (&args.filters, &outcome) {
        match conv1_weights(be, &trainer).and_then(|after| plot::filters(path, &before, &after)) {
            Ok(()) => crate::say!("filters: {}", path.display()),
            Err(e) => {
                crate::note!("error: {e}");
                failed += 1;
            }
        }
    }
    if let Some(rows) = &report.profile {
        report::print_profile(rows, &report.epochs);
    }
    let kept = match (&saved, &args.save) {
        (Some((epoch, path)), _) => format!("the checkpoint of epoch {epoch} is in {}", path.display()),
        (None, Some(path)) => format!("no checkpoint was written to {}", path.display()),
        (None, None) => "no checkpoint was asked for (--save)".to_string(),
    };
    if crate::output::stdout_closed() && outcome.is_ok() {
        crate::note!(
            "note: stdout was closed; stopped after epoch {} of {}; {kept}",
            report.epochs.last().map_or(0, |m| m.epoch),
            trainer.epoch.saturating_sub(report.epochs.len()).saturating_add(args.epochs)
        );
    }
    outcome?;
    if failed > 0 {
        return Err(LenetError::Outputs { failed, kept });
    }
    Ok(())
}

/// 0.9, 0.001, 1e-5, 1e30: plain when short, scientific otherwise.
fn short_float(v: f64) -> String {
    if v != 0.0 && !(1e-3..1e4).contains(&v.abs()) { format!("{v:e}") } else { format!("{v}") }
}

fn with_lr(opt: Optimizer, lr: f64) -> Optimizer {
    match opt {
        Optimizer::Sgd { weight_decay, .. } => Optimizer::Sgd { lr, weight_decay },
        Optimizer::Momentum { momentum, weight_decay, .. } => Optimizer::Momentum { lr, momentum, weight_decay },
        Optimizer::Nesterov { momentum, weight_decay, .. } => Optimizer::Nesterov { lr, momentum, weight_decay },
        Optimizer::AdaGrad { eps, weight_decay, .. } => Optimizer::AdaGrad { lr, eps, weight_decay },
        Optimizer::RmsProp { alpha, eps, weight_decay, .. } => Optimizer::RmsProp { lr, alpha, eps, weight_decay },
        Optimizer::Adam { beta1, beta2, eps, weight_decay, .. } => {
            Optimizer::Adam { lr, beta1, beta2, eps, weight_decay }
        }
    }
}

fn conv1_weights<B: Backend>(be: &B, trainer: &Trainer<B>) -> Result<Vec<f32>> {
    let w = be.download(&trainer.model.params()[0])?;
    Ok(w.data().iter().map(|v| kernels_core::Float::to_f64(*v) as f32).collect())
}
