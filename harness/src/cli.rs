//! The command line, and its resolution into backends, ops and shapes.

use std::path::PathBuf;

use clap::Parser;

use crate::backends::BackendKind;
use crate::error::{HarnessError, Result};
use crate::ops::{Family, Op, Shape};

/// The shapes `--quick` runs unless `--shapes` says otherwise: one of each
/// family, small enough for CI.
pub const QUICK_SHAPES: [&str; 4] = ["lenet-c2", "lenet-p1", "lenet-fc1", "lenet-bn3"];

/// `--threads` above this multiple of the logical cores is refused unless
/// `--force-threads`: oversubscribed threads measure contention, and 1000
/// threads on 2 cores make a quick run take minutes.
pub const MAX_THREADS_PER_CORE: usize = 4;

/// The most `--rounds` a run accepts.
pub const MAX_ROUNDS: usize = 20;

/// The most `--lenet-steps` a run accepts (at batch 256 that is hours on the
/// slowest backend): the count sizes the run and its loss record.
pub const MAX_LENET_STEPS: usize = 100_000;

/// The most `--lenet-epochs` a run accepts: an epoch of Fashion-MNIST is
/// 10 s to a minute per model and backend on a 2-core machine.
pub const MAX_LENET_EPOCHS: usize = 50;

/// Logical cores this process may use.
pub fn logical_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Validate-then-time every op x shape x backend; write results.json,
/// README.md and SVG charts.
#[derive(Debug, Clone, Parser)]
#[command(name = "harness", version, about)]
pub struct Args {
    /// Backends: naive, im2col, opencl, comma separated, or all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub backends: Vec<String>,

    /// Ops: conv-fwd, conv-bwd, conv-dx, conv-dw, conv-db, pool-fwd,
    /// pool-bwd (max pooling), avgpool-fwd, avgpool-bwd, linear-fwd,
    /// linear-bwd, bn-train, bn-bwd, bn-eval, dropout-fwd, dropout-bwd; or
    /// conv, pool (max and average), linear, norm (batch norm and dropout), all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub ops: Vec<String>,

    /// Suite shapes by name (lenet-c1, resnet-3x3, lenet-p1, lenet-fc1, ...),
    /// or lenet (every lenet-* shape), or all. Default: all, or with --quick
    /// lenet-c2, lenet-p1, lenet-fc1, lenet-bn3.
    #[arg(long, value_delimiter = ',')]
    pub shapes: Option<Vec<String>>,

    /// CPU threads for im2col and the ceilings (at most 4x the logical
    /// cores unless --force-threads).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,

    /// Accept a --threads above 4x the logical cores.
    #[arg(long)]
    pub force_threads: bool,

    /// Cap the ISA of im2col's kernels: portable, avx2 or avx512 (default:
    /// KERNELS_ISA, else the best this CPU has). A cap above the CPU's is
    /// lowered to what it has; each conv row records the plan that ran.
    #[arg(long, value_name = "ISA")]
    pub isa: Option<kernels_im2col::Isa>,

    /// Force im2col's conv forward algorithm (Pointwise, Unfold, Direct,
    /// DirectFilters, DirectWide, Winograd); a shape it does not apply to
    /// fails with the planner's error.
    #[arg(long, value_name = "PATH")]
    pub im2col_forward: Option<kernels_im2col::ConvPath>,

    /// Force im2col's conv dx algorithm (Gemm, Col2im, Subpixel, Direct, Winograd).
    #[arg(long, value_name = "PATH")]
    pub im2col_dx: Option<kernels_im2col::DxPath>,

    /// Force im2col's conv dw algorithm (Gemm, Unfold, DirectTiny, DirectFilters, DirectWide, Winograd).
    #[arg(long, value_name = "PATH")]
    pub im2col_dw: Option<kernels_im2col::DwPath>,

    /// Rounds per shape, 1 to 20: every backend but naive and every peer is
    /// timed once per round, back to back, and each row keeps its best round
    /// (lowest median): on a noisy machine a burst of load then spoils one
    /// round of one side, not the comparison.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,

    /// Few repeats and small shapes: checks every path (CI), not for reading.
    #[arg(long)]
    pub quick: bool,

    /// Where results.json, README.md and the charts go.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,

    /// Also measure LeNet training throughput (examples/s) per backend.
    #[arg(long)]
    pub lenet: bool,

    /// Timed LeNet training steps per backend (batch 256), 1 to 100000
    /// (naive: at most 3).
    #[arg(long, default_value_t = 20)]
    pub lenet_steps: usize,

    /// LeNet models to measure: lenet5, lenet5-bn, mxnet-lenet, simplecnn,
    /// comma separated, or all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub lenet_models: Vec<String>,

    /// Dropout probability in [0, 1) before every dense layer of the LeNet
    /// models (default: none).
    #[arg(long, value_name = "P")]
    pub lenet_dropout: Option<f64>,

    /// Also train each LeNet model N epochs (1 to 50) on im2col, OpenCL and
    /// the PyTorch peer and report the test accuracy; implies --lenet.
    #[arg(long, value_name = "N")]
    pub lenet_epochs: Option<usize>,

    /// Measure nothing: re-render README.md, SCHEMA.md and the charts into
    /// --out from an existing results.json.
    #[arg(long, value_name = "RESULTS_JSON")]
    pub replot: Option<PathBuf>,

    /// OpenCL device selector ("P:D" or a name substring); default: the
    /// backend's own choice (KERNELS_OPENCL_DEVICE, else a GPU, else any).
    #[arg(long)]
    pub opencl_device: Option<String>,

    /// Same-run peers: auto (PyTorch when its Python can import torch, else
    /// a note), pytorch (required: an error when it cannot start), none.
    #[arg(long, default_value = "auto")]
    pub peers: String,

    /// The Python that runs the PyTorch peer (default: python3; `make peers`
    /// builds target/peers-venv, which `make report` passes here).
    #[arg(long, env = "KERNELS_PYTHON")]
    pub python: Option<PathBuf>,

    /// A replacement for the embedded harness/peers/torch_ops.py speaking the
    /// same protocol (the tests' fake peer).
    #[arg(long, hide = true)]
    pub peer_script: Option<PathBuf>,
}

/// Whether and how the PyTorch peer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerMode {
    /// Not started.
    Off,
    /// Started; when it cannot start, the report notes why.
    Auto,
    /// Started; when it cannot start, the run fails.
    Required,
}

/// What a run measures, resolved and checked.
#[derive(Debug, Clone)]
pub struct Selection {
    pub backends: Vec<BackendKind>,
    /// Backends named on the command line (not through `all`): one that
    /// cannot start is an error; others are skipped with a note.
    pub required: Vec<BackendKind>,
    pub ops: Vec<Op>,
    pub shapes: Vec<Shape>,
    pub peers: PeerMode,
}

fn unknown(what: &str, name: &str, known: &[&str]) -> HarnessError {
    HarnessError::Usage(format!("unknown {what} '{name}'; known: {}", known.join(", ")))
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

impl Args {
    /// The `--lenet-models`, resolved, in lenet's order.
    pub fn lenet_models(&self) -> Result<Vec<lenet::model::Model>> {
        use lenet::model::Model;
        let mut models = Vec::new();
        for name in &self.lenet_models {
            if name == "all" {
                Model::ALL.into_iter().for_each(|m| push_unique(&mut models, m));
            } else {
                let names: Vec<&str> = Model::ALL.iter().map(|m| m.name()).collect();
                push_unique(&mut models, Model::parse(name).ok_or_else(|| unknown("LeNet model", name, &names))?);
            }
        }
        models.sort_by_key(|m| Model::ALL.iter().position(|n| n == m));
        Ok(models)
    }

    /// Whether the LeNet section runs (--lenet, or --lenet-epochs).
    pub fn lenet_section(&self) -> bool {
        self.lenet || self.lenet_epochs.is_some()
    }

    pub fn selection(&self) -> Result<Selection> {
        if self.threads == 0 {
            return Err(HarnessError::Usage("--threads must be at least 1".into()));
        }
        let cores = logical_cores();
        if self.threads > MAX_THREADS_PER_CORE * cores && !self.force_threads {
            return Err(HarnessError::Usage(format!(
                "--threads {} is more than {MAX_THREADS_PER_CORE}x the {cores} logical cores this process may use: \
                 oversubscribed threads time contention, not the kernels (pass --force-threads to run anyway)",
                self.threads
            )));
        }
        if !(1..=MAX_ROUNDS).contains(&self.rounds) {
            return Err(HarnessError::Usage(format!("--rounds {} is out of range: 1 to {MAX_ROUNDS}", self.rounds)));
        }
        if !(1..=MAX_LENET_STEPS).contains(&self.lenet_steps) {
            return Err(HarnessError::Usage(format!(
                "--lenet-steps {} is out of range: 1 to {MAX_LENET_STEPS}",
                self.lenet_steps
            )));
        }
        if let Some(epochs) = self.lenet_epochs
            && !(1..=MAX_LENET_EPOCHS).contains(&epochs)
        {
            return Err(HarnessError::Usage(format!(
                "--lenet-epochs {epochs} is out of range: 1 to {MAX_LENET_EPOCHS}"
            )));
        }
        if let Some(p) = self.lenet_dropout
            && !(0.0..1.0).contains(&p)
        {
            return Err(HarnessError::Usage(format!("--lenet-dropout {p} must be in [0, 1)")));
        }
        self.lenet_models()?;
        let mut backends = Vec::new();
        let mut required = Vec::new();
        for name in &self.backends {
            if name == "all" {
                BackendKind::ALL.into_iter().for_each(|k| push_unique(&mut backends, k));
            } else {
                let kind =
                    BackendKind::parse(name).ok_or_else(|| unknown("backend", name, &["naive", "im2col", "opencl"]))?;
                push_unique(&mut backends, kind);
                push_unique(&mut required, kind);
            }
        }
        backends.sort();

        let mut ops = Vec::new();
        for name in &self.ops {
            let family = match name.as_str() {
                "all" => None,
                "conv" => Some(Family::Conv),
                "pool" => Some(Family::Pool),
                "linear" => Some(Family::Linear),
                "norm" => Some(Family::Norm),
                _ => {
                    let names: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
                    push_unique(&mut ops, Op::parse(name).ok_or_else(|| unknown("op", name, &names))?);
                    continue;
                }
            };
            Op::ALL
                .into_iter()
                .filter(|o| family.is_none_or(|f| o.family() == f))
                .for_each(|o| push_unique(&mut ops, o));
        }
        ops.sort();

        let default_shapes: Vec<String> =
            if self.quick { QUICK_SHAPES.iter().map(|s| s.to_string()).collect() } else { vec!["all".into()] };
        let mut shapes: Vec<Shape> = Vec::new();
        for name in self.shapes.as_ref().unwrap_or(&default_shapes) {
            let all = Shape::all();
            let matched: Vec<Shape> = match name.as_str() {
                "all" => all,
                "lenet" => all.into_iter().filter(|s| s.name().starts_with("lenet-")).collect(),
                _ => {
                    let names: Vec<&str> = all.iter().map(|s| s.name()).collect();
                    vec![Shape::parse(name).ok_or_else(|| unknown("shape", name, &names))?]
                }
            };
            for s in matched {
                if !shapes.iter().any(|t| t.name() == s.name()) {
                    shapes.push(s);
                }
            }
        }
        // Suite order, whatever the order on the command line.
        let order = |s: &Shape| Shape::all().iter().position(|t| t.name() == s.name());
        shapes.sort_by_key(order);
        if !shapes.iter().any(|s| ops.iter().any(|o| o.family() == s.family())) {
            return Err(HarnessError::Usage("no selected op runs on any selected shape".into()));
        }
        let peers = match self.peers.as_str() {
            "auto" => PeerMode::Auto,
            "pytorch" => PeerMode::Required,
            "none" => PeerMode::Off,
            other => return Err(unknown("peers", other, &["auto", "pytorch", "none"])),
        };
        Ok(Selection { backends, required, ops, shapes, peers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Args {
        Args::parse_from(std::iter::once("harness").chain(line.split_whitespace()))
    }

    #[test]
    fn defaults_select_everything() {
        let s = args("").selection().unwrap();
        assert_eq!(s.backends, BackendKind::ALL);
        assert!(s.required.is_empty());
        assert_eq!(s.ops, Op::ALL);
        assert_eq!(s.shapes.len(), Shape::all().len());
    }

    #[test]
    fn quick_groups_and_names_resolve() {
        let s = args("--quick --backends opencl,naive --ops conv,pool-bwd").selection().unwrap();
        assert_eq!(s.backends, [BackendKind::Naive, BackendKind::OpenCl]);
        assert_eq!(s.required.len(), 2);
        assert_eq!(s.ops.len(), 6);
        let names: Vec<_> = s.shapes.iter().map(|s| s.name()).collect();
        assert_eq!(names, QUICK_SHAPES);
        let s = args("--shapes lenet,lenet-c1").selection().unwrap();
        assert!(s.shapes.iter().all(|s| s.name().starts_with("lenet-")));
        assert_eq!(s.shapes.len(), 8, "conv, pool, linear and norm lenet-* shapes");
        let s = args("--ops norm,avgpool-fwd,pool").selection().unwrap();
        let names: Vec<_> = s.ops.iter().map(|o| o.name()).collect();
        assert_eq!(
            names,
            [
                "pool-fwd",
                "pool-bwd",
                "avgpool-fwd",
                "avgpool-bwd",
                "bn-train",
                "bn-bwd",
                "bn-eval",
                "dropout-fwd",
                "dropout-bwd"
            ]
        );
    }

    #[test]
    fn thread_counts_far_above_the_cores_need_force() {
        let too_many = MAX_THREADS_PER_CORE * logical_cores() + 1;
        let err = args(&format!("--threads {too_many}")).selection().unwrap_err();
        assert!(matches!(&err, HarnessError::Usage(m) if m.contains("--force-threads")), "{err}");
        assert!(args(&format!("--threads {too_many} --force-threads")).selection().is_ok());
        assert!(args(&format!("--threads {}", logical_cores())).selection().is_ok());
    }

    #[test]
    fn lenet_steps_are_bounded() {
        for steps in ["0", "1000000000000", &usize::MAX.to_string()] {
            let err = args(&format!("--lenet --lenet-steps {steps}")).selection().unwrap_err();
            assert!(matches!(&err, HarnessError::Usage(m) if m.contains("--lenet-steps")), "{steps}: {err}");
        }
        assert!(args(&format!("--lenet --lenet-steps {MAX_LENET_STEPS}")).selection().is_ok());
    }

    #[test]
    fn rounds_are_bounded() {
        for rounds in ["0", &(MAX_ROUNDS + 1).to_string()] {
            let err = args(&format!("--rounds {rounds}")).selection().unwrap_err();
            assert!(matches!(&err, HarnessError::Usage(m) if m.contains("--rounds")), "{rounds}: {err}");
        }
        assert!(args(&format!("--rounds {MAX_ROUNDS}")).selection().is_ok());
    }

    #[test]
    fn lenet_epochs_dropout_and_models_are_checked() {
        for line in
            ["--lenet-epochs 0", &format!("--lenet-epochs {}", MAX_LENET_EPOCHS + 1), "--lenet-epochs 99999999999"]
        {
            let err = args(line).selection().unwrap_err();
            assert!(matches!(&err, HarnessError::Usage(m) if m.contains("--lenet-epochs")), "{line}: {err}");
        }
        for p in ["1", "1.5", "-0.1", "NaN"] {
            let err = args(&format!("--lenet-dropout={p}")).selection().unwrap_err();
            assert!(matches!(&err, HarnessError::Usage(m) if m.contains("--lenet-dropout")), "{p}: {err}");
        }
        let err = args("--lenet-models lenet5,resnet").selection().unwrap_err();
        assert!(matches!(&err, HarnessError::Usage(m) if m.contains("resnet") && m.contains("mxnet-lenet")), "{err}");
        let a = args(&format!("--lenet-epochs {MAX_LENET_EPOCHS} --lenet-dropout 0.5 --lenet-models simplecnn,lenet5"));
        assert!(a.selection().is_ok() && a.lenet_section());
        let names: Vec<&str> = a.lenet_models().unwrap().iter().map(|m| m.name()).collect();
        assert_eq!(names, ["lenet5", "simplecnn"]);
        assert_eq!(args("").lenet_models().unwrap().len(), 4);
        assert!(!args("").lenet_section());
    }

    #[test]
    fn bad_names_are_usage_errors() {
        for line in [
            "--backends cuda",
            "--ops conv-fwd2",
            "--shapes vgg",
            "--threads 0",
            "--ops pool --shapes lenet-c1",
            "--peers tf",
        ] {
            assert!(matches!(args(line).selection(), Err(HarnessError::Usage(_))), "{line}");
        }
    }
}
