//! `--lenet`: training throughput of each LeNet model (`--lenet-models`:
//! lenet5, lenet5-bn, mxnet-lenet, simplecnn, as `lenet --model` builds
//! them) per backend, through the lenet crate's own `Trainer::train_step`
//! (forward, softmax cross-entropy, backward, Adam on the device), batch 256
//! of Fashion-MNIST, ReLU and max pooling, dropout with `--lenet-dropout`.
//!
//! A few warm-up steps are run and not counted; then a fixed number of
//! steps is timed. The naive backend runs at most [`NAIVE_MAX_STEPS`] timed
//! steps after one warm-up (a step of its loops takes seconds). im2col
//! runs on its own threads (`Im2col::install`), as the `lenet` binary does.
//! Examples/s = steps x batch / seconds. The first and the last timed loss
//! are recorded so a run that does not train shows it.
//!
//! The PyTorch peer trains the same model with the same recipe: lenet's own
//! initial weights and running statistics (Xavier from the same seed), the
//! same batches in the same order, Adam with the same hyper-parameters,
//! batch 256, softmax cross-entropy, batch norm in training mode (batch
//! statistics; the running ones move with PyTorch's momentum 0.1, as ours).
//! Before its time is used, its loss on the first batch before any update
//! is checked against the f64 reference's on the same weights, in training
//! mode with dropout off: the two draw different dropout masks, so the
//! losses of dropout steps cannot be compared, and nothing else differs.
//!
//! `--lenet-epochs N` also trains each model from the same initial weights
//! for N epochs of the whole training set (lenet's epoch orders from the
//! same seed, the last batch of an epoch smaller) on im2col, OpenCL and the
//! peer, and records the test accuracy after the last epoch; naive is not
//! trained (an epoch of its loops takes tens of minutes). With `--quick`
//! the epochs run on the first [`QUICK_TRAIN_EXAMPLES`] training and
//! [`QUICK_TEST_EXAMPLES`] test examples, to check the path.

use std::time::Instant;

use kernels_core::{Backend, Optimizer, Tensor};
use kernels_naive::Naive;
use lenet::data::{DataFiles, Dataset, SIDE, epoch_order};
use lenet::model::{Activation, Architecture, LeNet, Model, Pooling};
use lenet::train::{EpochMetrics, Observer, Trainer, evaluate};

use crate::backends::{BackendKind, Backends};
use crate::error::{HarnessError, Result};
use crate::peers::{LenetJob, LenetTrainJob, TORCH, TorchPeer};
use crate::results::{LenetAccuracy, LenetRecord};

/// The batch size of DESIGN.md's PyTorch figure.
pub const BATCH: usize = 256;
const WARMUP_STEPS: usize = 3;
/// Timed steps of the naive backend at most, after [`NAIVE_WARMUP_STEPS`].
pub const NAIVE_MAX_STEPS: usize = 3;
const NAIVE_WARMUP_STEPS: usize = 1;
const SEED: u64 = 7;
/// Training and test examples of a `--quick` `--lenet-epochs` run.
pub const QUICK_TRAIN_EXAMPLES: usize = 1024;
pub const QUICK_TEST_EXAMPLES: usize = 500;
/// Evaluation batch, as `lenet`'s `train_epoch` uses for batch 256.
const EVAL_BATCH: usize = 500;

/// What the LeNet section measures.
#[derive(Debug, Clone)]
pub struct LenetPlan {
    pub models: Vec<Model>,
    /// Timed steps per model and backend (naive: at most [`NAIVE_MAX_STEPS`]).
    pub steps: usize,
    pub dropout: Option<f64>,
    /// `--lenet-epochs`.
    pub epochs: Option<usize>,
    pub quick: bool,
}

fn lenet_error(backend: &str, e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Setup(format!("LeNet training on {backend}: {e}"))
}

fn architecture(model: Model, dropout: Option<f64>) -> Architecture {
    Architecture { model, dropout, ..Architecture::lenet5(Activation::Relu, Pooling::Max) }
}

fn optimizer() -> Optimizer {
    Optimizer::adam(1e-3)
}

/// The recipe's optimiser in words, for the accuracy records.
fn optimizer_words() -> String {
    match optimizer() {
        Optimizer::Adam { lr, beta1, beta2, eps, weight_decay } => {
            format!("Adam lr {lr}, betas ({beta1}, {beta2}), eps {eps:e}, weight decay {weight_decay}")
        }
        other => other.name().to_string(),
    }
}

/// The example indices of step `i` (warm-up steps first): epoch 0's order
/// in whole batches, wrapping around.
fn batch_indices(order: &[usize], i: usize) -> &[usize] {
    let batches = order.len() / BATCH;
    let b = i % batches.max(1);
    &order[b * BATCH..(b + 1) * BATCH]
}

/// Timed training steps of `arch` on one backend.
#[allow(clippy::too_many_arguments)]
fn measure<B: Backend>(
    be: &B,
    kind: &str,
    arch: Architecture,
    data: &Dataset,
    source: &str,
    steps: usize,
    warmup: usize,
) -> Result<LenetRecord> {
    let mut trainer = Trainer::new(be, arch, optimizer(), SEED).map_err(|e| lenet_error(kind, e))?;
    let order = epoch_order(data.len(), SEED, 0);
    for i in 0..warmup {
        trainer.train_step(be, data, batch_indices(&order, i)).map_err(|e| lenet_error(kind, e))?;
    }
    // Only the first and last losses are kept: nothing is sized by `steps`.
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    be.sync()?;
    let start = Instant::now();
    for i in 0..steps {
        let (loss, _) =
            trainer.train_step(be, data, batch_indices(&order, warmup + i)).map_err(|e| lenet_error(kind, e))?;
        if i == 0 {
            first_loss = loss;
        }
        last_loss = loss;
    }
    be.sync()?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(LenetRecord {
        model: arch.model.name().into(),
        dropout: arch.dropout,
        backend: kind.into(),
        backend_name: be.name(),
        batch: BATCH,
        steps,
        warmup_steps: warmup,
        seconds,
        examples_per_s: (steps * BATCH) as f64 / seconds,
        first_loss,
        last_loss,
        data: source.into(),
        accuracy: None,
    })
}

/// Progress of a training run on stderr: each epoch's result, and every
/// 20 s within an epoch where the batch is.
struct EpochProgress {
    label: String,
    epochs: usize,
    epoch: usize,
    batches: usize,
    done: usize,
    last: Instant,
}

impl Observer for EpochProgress {
    fn epoch_start(&mut self, epoch: usize, batches: usize) {
        (self.epoch, self.batches, self.done) = (epoch, batches, 0);
    }

    fn batch_done(&mut self, _loss: f64) {
        self.done += 1;
        if self.last.elapsed().as_secs() >= 20 {
            self.last = Instant::now();
            eprintln!("    {}: epoch {}/{}, batch {}/{}", self.label, self.epoch, self.epochs, self.done, self.batches);
        }
    }

    fn epoch_done(&mut self, m: &EpochMetrics) {
        self.last = Instant::now();
        eprintln!(
            "    {}: epoch {}/{}: loss {:.3}, test acc {:.4}, {:.0} examples/s, {:.1} s",
            self.label, m.epoch, self.epochs, m.loss, m.test_acc, m.examples_per_s, m.seconds
        );
    }
}

/// `epochs` epochs of training from the recipe's initial weights, then the
/// test set.
fn train_epochs<B: Backend>(
    be: &B,
    kind: &str,
    arch: Architecture,
    train: &Dataset,
    test: &Dataset,
    epochs: usize,
) -> Result<LenetAccuracy> {
    let mut trainer = Trainer::new(be, arch, optimizer(), SEED).map_err(|e| lenet_error(kind, e))?;
    let mut progress = EpochProgress {
        label: format!("{} {kind}", arch.model.name()),
        epochs,
        epoch: 0,
        batches: 0,
        done: 0,
        last: Instant::now(),
    };
    let mut train_seconds = 0.0;
    for _ in 0..epochs {
        let m = trainer.train_epoch(be, train, test, BATCH, &mut progress).map_err(|e| lenet_error(kind, e))?;
        train_seconds += m.seconds;
    }
    let eval = evaluate(be, &trainer.model, test, EVAL_BATCH).map_err(|e| lenet_error(kind, e))?;
    Ok(LenetAccuracy {
        epochs,
        seed: SEED,
        optimizer: optimizer_words(),
        batch: BATCH,
        train_examples: train.len(),
        test_examples: test.len(),
        test_accuracy: eval.accuracy,
        test_loss: eval.loss,
        train_seconds,
        examples_per_s: (epochs * train.len()) as f64 / train_seconds.max(f64::MIN_POSITIVE),
    })
}

/// Relative tolerance of the peer's step-0 loss against the f64 reference:
/// a mean of 256 f32 cross-entropies after a forward in f32 (batch norm's
/// batch statistics included).
const INITIAL_LOSS_TOLERANCE: f64 = 1e-4;

/// The training loss of the first batch on lenet's initial weights, in f64:
/// training mode (batch statistics), dropout off.
fn reference_initial_loss(
    arch: Architecture,
    params: &[Tensor<f32>],
    running: &[Tensor<f32>],
    data: &Dataset,
    indices: &[usize],
) -> Result<f64> {
    let be = Naive::<f64>::new();
    let host: Vec<Tensor<f64>> = params.iter().map(|p| p.cast::<f64>()).collect();
    let running: Vec<Tensor<f64>> = running.iter().map(|p| p.cast::<f64>()).collect();
    let arch = Architecture { dropout: None, ..arch };
    let mut model = LeNet::from_host(&be, arch, &host, &running, SEED).map_err(|e| lenet_error("f64 reference", e))?;
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    data.gather::<f64>(indices, &mut xs, &mut ys);
    let x = be.upload(&Tensor::new(&[indices.len(), 1, SIDE, SIDE], xs)?)?;
    let (logits, _) = model.forward_train(&be, x, 1).map_err(|e| lenet_error("f64 reference", e))?;
    Ok(be.softmax_cross_entropy(&logits, &ys)?.0)
}

/// Every example of `data` as one f32 tensor and its labels.
fn whole(data: &Dataset) -> Result<(Tensor<f32>, Vec<usize>)> {
    let all: Vec<usize> = (0..data.len()).collect();
    let (mut xs, mut labels) = (Vec::new(), Vec::new());
    data.gather::<f32>(&all, &mut xs, &mut labels);
    Ok((Tensor::new(&[data.len(), 1, SIDE, SIDE], xs)?, labels))
}

/// The PyTorch peer on the same recipe, weights and batches (and, with
/// `epochs`, the same full training run).
#[allow(clippy::too_many_arguments)]
fn measure_peer(
    peer: &mut TorchPeer,
    arch: Architecture,
    train: &Dataset,
    test: &Dataset,
    source: &str,
    steps: usize,
    epochs: Option<usize>,
) -> Result<LenetRecord> {
    let model_name = arch.model.name();
    let order = epoch_order(train.len(), SEED, 0);
    if order.len() < BATCH {
        return Err(lenet_error(TORCH, format!("{} examples are fewer than one batch of {BATCH}", train.len())));
    }
    let naive = Naive::<f32>::new();
    let init = LeNet::init(&naive, arch, SEED).map_err(|e| lenet_error(TORCH, e))?;
    let params = init.to_host(&naive).map_err(|e| lenet_error(TORCH, e))?;
    let running = init.running_to_host(&naive).map_err(|e| lenet_error(TORCH, e))?;
    let spec = init.spec();
    let named_params: Vec<(String, Tensor<f32>)> =
        spec.params.iter().map(|p| p.name.clone()).zip(params.iter().cloned()).collect();
    let named_running: Vec<(String, Tensor<f32>)> =
        spec.running.iter().map(|(n, _)| n.clone()).zip(running.iter().cloned()).collect();
    let (mut xs, mut labels) = (Vec::new(), Vec::new());
    let indices: Vec<usize> =
        (0..WARMUP_STEPS + steps).flat_map(|i| batch_indices(&order, i).iter().copied()).collect();
    train.gather::<f32>(&indices, &mut xs, &mut labels);
    let x = Tensor::new(&[indices.len(), 1, SIDE, SIDE], xs)?;
    let Optimizer::Adam { lr, beta1, beta2, eps, .. } = optimizer() else {
        return Err(lenet_error(TORCH, "the recipe's optimiser is not Adam"));
    };
    // The whole sets and every epoch's order, only for --lenet-epochs.
    let full = match epochs {
        Some(n) => {
            let orders: Vec<usize> = (1..=n).flat_map(|e| epoch_order(train.len(), SEED, e)).collect();
            Some((n, whole(train)?, whole(test)?, orders))
        }
        None => None,
    };
    let job = LenetJob {
        model: model_name,
        dropout: arch.dropout,
        params: &named_params,
        running: &named_running,
        x: &x,
        labels: &labels,
        batch: BATCH,
        warmup_steps: WARMUP_STEPS,
        steps,
        lr,
        betas: (beta1, beta2),
        eps,
        train: full.as_ref().map(|(n, (tx, tl), (vx, vl), orders)| LenetTrainJob {
            epochs: *n,
            x: tx,
            labels: tl,
            orders,
            test_x: vx,
            test_labels: vl,
        }),
    };
    let reply = peer.lenet(&job)?;
    let expected = reference_initial_loss(arch, &params, &running, train, batch_indices(&order, 0))?;
    // A NaN loss fails too: it is not within any tolerance.
    let within = (reply.initial_loss - expected).abs() <= INITIAL_LOSS_TOLERANCE * expected.abs().max(1.0);
    if !within {
        return Err(HarnessError::Validation {
            stage: "before timing",
            op: format!("lenet {model_name} training step 0 loss (training mode, dropout off)"),
            shape: format!("batch {BATCH}"),
            backend: TORCH.into(),
            detail: format!(
                "loss {} on lenet's initial weights, the f64 reference gives {expected} (tolerance {INITIAL_LOSS_TOLERANCE:e} relative)",
                reply.initial_loss
            ),
        });
    }
    let accuracy = match (epochs, reply.trained) {
        (Some(n), Some(t)) => {
            if !(0.0..=1.0).contains(&t.test_accuracy) || !t.train_seconds.is_finite() || t.train_seconds <= 0.0 {
                return Err(lenet_error(TORCH, format!("implausible training result {t:?}")));
            }
            Some(LenetAccuracy {
                epochs: n,
                seed: SEED,
                optimizer: optimizer_words(),
                batch: BATCH,
                train_examples: train.len(),
                test_examples: test.len(),
                test_accuracy: t.test_accuracy,
                test_loss: t.test_loss,
                train_seconds: t.train_seconds,
                examples_per_s: (n * train.len()) as f64 / t.train_seconds,
            })
        }
        (Some(_), None) => return Err(lenet_error(TORCH, "asked to train epochs, the peer sent no test accuracy")),
        (None, _) => None,
    };
    Ok(LenetRecord {
        model: model_name.into(),
        dropout: arch.dropout,
        backend: TORCH.into(),
        backend_name: peer.info.detail.clone(),
        batch: BATCH,
        steps,
        warmup_steps: WARMUP_STEPS,
        seconds: reply.seconds,
        examples_per_s: reply.examples_per_s,
        first_loss: reply.first_loss,
        last_loss: reply.last_loss,
        data: source.into(),
        accuracy,
    })
}

fn report_line(record: &LenetRecord) {
    eprintln!(
        "  lenet {} {}: {:.0} examples/s ({} steps of {BATCH}, loss {:.3} -> {:.3}){}",
        record.model,
        record.backend,
        record.examples_per_s,
        record.steps,
        record.first_loss,
        record.last_loss,
        record
            .accuracy
            .as_ref()
            .map_or(String::new(), |a| format!("; test acc {:.4} after {} epochs", a.test_accuracy, a.epochs))
    );
}

/// One model on one of our backends: throughput, then (with `epochs`, not
/// on naive) the training run.
fn measure_backend<B: Backend>(
    be: &B,
    kind: BackendKind,
    arch: Architecture,
    sets: (&Dataset, &Dataset),
    source: &str,
    steps: usize,
    epochs: Option<usize>,
) -> Result<LenetRecord> {
    let (train, test) = sets;
    let (steps, warmup) = match kind {
        BackendKind::Naive => (steps.min(NAIVE_MAX_STEPS), NAIVE_WARMUP_STEPS),
        _ => (steps, WARMUP_STEPS),
    };
    let mut record = measure(be, kind.name(), arch, train, source, steps, warmup)?;
    if let Some(n) = epochs
        && kind != BackendKind::Naive
    {
        record.accuracy = Some(train_epochs(be, kind.name(), arch, train, test, n)?);
    }
    Ok(record)
}

/// Measures every model of `plan` on every selected backend, and on the
/// PyTorch peer when it runs; when the data set is missing, notes why in
/// `notes` and measures nothing.
pub fn measure_all(
    backends: &Backends,
    kinds: &[BackendKind],
    mut torch: Option<&mut TorchPeer>,
    plan: &LenetPlan,
    notes: &mut Vec<String>,
) -> Result<Vec<LenetRecord>> {
    let steps = if plan.quick { plan.steps.min(3) } else { plan.steps }.max(1);
    let files = match DataFiles::locate(None) {
        Ok(files) => files,
        Err(e) => {
            notes.push(format!("LeNet throughput not measured: {e}"));
            return Ok(Vec::new());
        }
    };
    let (mut train, mut test) = files.load().map_err(|e| lenet_error("data", e))?;
    let mut source = format!("Fashion-MNIST train ({} examples) from {}", train.len(), files.dir.display());
    if plan.quick && plan.epochs.is_some() {
        train.truncate(QUICK_TRAIN_EXAMPLES);
        test.truncate(QUICK_TEST_EXAMPLES);
        source =
            format!("the first {} Fashion-MNIST training examples (--quick) from {}", train.len(), files.dir.display());
    }
    let mut records = Vec::new();
    for &model in &plan.models {
        let arch = architecture(model, plan.dropout);
        let sets = (&train, &test);
        for &kind in kinds {
            let record = match kind {
                BackendKind::Naive => {
                    backends.naive.as_ref().map(|b| measure_backend(b, kind, arch, sets, &source, steps, plan.epochs))
                }
                // On the backend's own threads, as the lenet binary runs: each
                // op then starts without a hand-off from this thread.
                BackendKind::Im2col => backends
                    .im2col
                    .as_ref()
                    .map(|b| b.install(|| measure_backend(b, kind, arch, sets, &source, steps, plan.epochs))),
                BackendKind::OpenCl => {
                    backends.opencl.as_ref().map(|b| measure_backend(b, kind, arch, sets, &source, steps, plan.epochs))
                }
            };
            if let Some(record) = record {
                let record = record?;
                report_line(&record);
                records.push(record);
            }
        }
        if let Some(peer) = torch.as_deref_mut() {
            let record = measure_peer(peer, arch, &train, &test, &source, steps, plan.epochs)?;
            report_line(&record);
            records.push(record);
        }
    }
    if kinds.contains(&BackendKind::Naive) && backends.naive.is_some() {
        notes.push(format!(
            "LeNet: the naive backend ran at most {NAIVE_MAX_STEPS} timed steps after {NAIVE_WARMUP_STEPS} warm-up \
             (a step of its loops takes seconds){}",
            if plan.epochs.is_some() { "; it was not trained for --lenet-epochs" } else { "" }
        ));
    }
    if plan.dropout.is_some() {
        notes.push(
            "LeNet with dropout: PyTorch draws other dropout masks than ours, so its step-0 loss was checked in \
             training mode with dropout off; the timed steps drop as each implementation draws"
                .into(),
        );
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_wrap_around_whole_batches_of_the_order() {
        let order: Vec<usize> = (0..600).rev().collect();
        assert_eq!(batch_indices(&order, 0), &order[..BATCH]);
        assert_eq!(batch_indices(&order, 1), &order[BATCH..2 * BATCH]);
        // 600 examples hold two whole batches: step 2 is batch 0 again.
        assert_eq!(batch_indices(&order, 2), batch_indices(&order, 0));
    }

    #[test]
    fn the_optimiser_is_described_with_its_hyper_parameters() {
        let words = optimizer_words();
        assert!(words.starts_with("Adam lr 0.001") && words.contains("0.999"), "{words}");
    }
}
