//! `--lenet`: LeNet training throughput per backend, through the lenet
//! crate's own `Trainer::train_step` (forward, softmax cross-entropy,
//! backward, Adam on the device), batch 256 of Fashion-MNIST.
//!
//! A few warm-up steps are run and not counted; then a fixed number of
//! steps is timed. im2col runs them on its own threads (`Im2col::install`),
//! as the `lenet` binary does. Examples/s = steps x batch / seconds. The first and the
//! last timed loss are recorded so a run that does not train shows it.
//!
//! The PyTorch peer trains the same model with the same recipe: lenet's own
//! initial weights (Xavier from the same seed), the same batches in the
//! same order, Adam with the same hyper-parameters, batch 256, softmax
//! cross-entropy. Its loss at step 0 (before any update) is checked against
//! the f64 reference's on the same weights and batch before its time is
//! used.

use std::time::Instant;

use kernels_core::{Backend, Optimizer, Tensor};
use kernels_naive::Naive;
use lenet::data::{DataFiles, Dataset, SIDE, epoch_order};
use lenet::model::{Activation, Architecture, LeNet, Pooling};
use lenet::train::Trainer;

use crate::backends::{BackendKind, Backends};
use crate::error::{HarnessError, Result};
use crate::peers::{LenetJob, TORCH, TorchPeer};
use crate::results::LenetRecord;

/// The batch size of DESIGN.md's PyTorch figure.
pub const BATCH: usize = 256;
const WARMUP_STEPS: usize = 3;
const SEED: u64 = 7;

fn lenet_error(backend: &str, e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Setup(format!("LeNet training on {backend}: {e}"))
}

fn measure<B: Backend>(be: &B, kind: &str, data: &Dataset, source: &str, steps: usize) -> Result<LenetRecord> {
    let mut trainer = Trainer::new(be, ARCH, Optimizer::adam(1e-3), SEED).map_err(|e| lenet_error(kind, e))?;
    let order = epoch_order(data.len(), SEED, 0);
    let batches: Vec<&[usize]> = order.chunks_exact(BATCH).collect();
    if batches.is_empty() {
        return Err(lenet_error(kind, format!("{} examples are fewer than one batch of {BATCH}", data.len())));
    }
    let batch = |i: usize| batches[i % batches.len()];
    for i in 0..WARMUP_STEPS {
        trainer.train_step(be, data, batch(i)).map_err(|e| lenet_error(kind, e))?;
    }
    // Only the first and last losses are kept: nothing is sized by `steps`.
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    let start = Instant::now();
    for i in 0..steps {
        let (loss, _) = trainer.train_step(be, data, batch(WARMUP_STEPS + i)).map_err(|e| lenet_error(kind, e))?;
        if i == 0 {
            first_loss = loss;
        }
        last_loss = loss;
    }
    be.sync()?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(LenetRecord {
        backend: kind.into(),
        backend_name: be.name(),
        batch: BATCH,
        steps,
        warmup_steps: WARMUP_STEPS,
        seconds,
        examples_per_s: (steps * BATCH) as f64 / seconds,
        first_loss,
        last_loss,
        data: source.into(),
    })
}

const ARCH: Architecture = Architecture::lenet5(Activation::Relu, Pooling::Max);

/// Relative tolerance of the peer's step-0 loss against the f64 reference:
/// a mean of 256 f32 cross-entropies after a LeNet forward in f32.
const INITIAL_LOSS_TOLERANCE: f64 = 1e-4;

/// The example indices of step `i` (warm-up steps first), as [`measure`]
/// takes them.
fn batch_indices(order: &[usize], i: usize) -> &[usize] {
    let batches = order.len() / BATCH;
    let b = i % batches.max(1);
    &order[b * BATCH..(b + 1) * BATCH]
}

/// The training loss of the first batch on lenet's initial weights, in f64.
fn reference_initial_loss(params: &[Tensor<f32>], data: &Dataset, indices: &[usize]) -> Result<f64> {
    let be = Naive::<f64>::new();
    let host: Vec<Tensor<f64>> = params.iter().map(|p| p.cast::<f64>()).collect();
    let model = LeNet::from_host(&be, ARCH, &host, &[], SEED).map_err(|e| lenet_error("f64 reference", e))?;
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    data.gather::<f64>(indices, &mut xs, &mut ys);
    let x = be.upload(&Tensor::new(&[indices.len(), 1, SIDE, SIDE], xs)?)?;
    let logits = model.forward_eval(&be, x).map_err(|e| lenet_error("f64 reference", e))?;
    Ok(be.softmax_cross_entropy(&logits, &ys)?.0)
}

/// The PyTorch peer on the same recipe, weights and batches.
fn measure_peer(peer: &mut TorchPeer, data: &Dataset, source: &str, steps: usize) -> Result<LenetRecord> {
    let order = epoch_order(data.len(), SEED, 0);
    if order.len() < BATCH {
        return Err(lenet_error(TORCH, format!("{} examples are fewer than one batch of {BATCH}", data.len())));
    }
    let params = LeNet::init(&Naive::<f32>::new(), ARCH, SEED)
        .and_then(|m| m.to_host(&Naive::<f32>::new()))
        .map_err(|e| lenet_error(TORCH, e))?;
    let (mut xs, mut labels) = (Vec::new(), Vec::new());
    let indices: Vec<usize> =
        (0..WARMUP_STEPS + steps).flat_map(|i| batch_indices(&order, i).iter().copied()).collect();
    data.gather::<f32>(&indices, &mut xs, &mut labels);
    let x = Tensor::new(&[indices.len(), 1, SIDE, SIDE], xs)?;
    let Optimizer::Adam { lr, beta1, beta2, eps, .. } = Optimizer::adam(1e-3) else {
        return Err(lenet_error(TORCH, "the recipe's optimiser is not Adam"));
    };
    let job = LenetJob {
        params: &params,
        x: &x,
        labels: &labels,
        batch: BATCH,
        warmup_steps: WARMUP_STEPS,
        steps,
        lr,
        betas: (beta1, beta2),
        eps,
    };
    let reply = peer.lenet(&job)?;
    let expected = reference_initial_loss(&params, data, batch_indices(&order, 0))?;
    // A NaN loss fails too: it is not within any tolerance.
    let within = (reply.initial_loss - expected).abs() <= INITIAL_LOSS_TOLERANCE * expected.abs().max(1.0);
    if !within {
        return Err(HarnessError::Validation {
            stage: "before timing",
            op: "lenet training step 0 loss".into(),
            shape: format!("batch {BATCH}"),
            backend: TORCH.into(),
            detail: format!(
                "loss {} on lenet's initial weights, the f64 reference gives {expected} (tolerance {INITIAL_LOSS_TOLERANCE:e} relative)",
                reply.initial_loss
            ),
        });
    }
    Ok(LenetRecord {
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
    })
}

/// Measures every selected backend, and the PyTorch peer when it runs;
/// when the data set is missing, notes why in `notes` and measures nothing.
pub fn measure_all(
    backends: &Backends,
    kinds: &[BackendKind],
    torch: Option<&mut TorchPeer>,
    steps: usize,
    quick: bool,
    notes: &mut Vec<String>,
) -> Result<Vec<LenetRecord>> {
    let steps = if quick { steps.min(3) } else { steps }.max(1);
    let files = match DataFiles::locate(None) {
        Ok(files) => files,
        Err(e) => {
            notes.push(format!("LeNet throughput not measured: {e}"));
            return Ok(Vec::new());
        }
    };
    let (train, _) = files.load().map_err(|e| lenet_error("data", e))?;
    let source = format!("Fashion-MNIST train ({} examples) from {}", train.len(), files.dir.display());
    let mut records = Vec::new();
    for kind in kinds {
        let record = match kind {
            BackendKind::Naive => backends.naive.as_ref().map(|b| measure(b, kind.name(), &train, &source, steps)),
            // On the backend's own threads, as the lenet binary runs: each
            // op then starts without a hand-off from this thread.
            BackendKind::Im2col => {
                backends.im2col.as_ref().map(|b| b.install(|| measure(b, kind.name(), &train, &source, steps)))
            }
            BackendKind::OpenCl => backends.opencl.as_ref().map(|b| measure(b, kind.name(), &train, &source, steps)),
        };
        if let Some(record) = record {
            let record = record?;
            eprintln!(
                "  lenet {}: {:.0} examples/s ({} steps of {BATCH}, loss {:.3} -> {:.3})",
                record.backend, record.examples_per_s, record.steps, record.first_loss, record.last_loss
            );
            records.push(record);
        }
    }
    if let Some(peer) = torch {
        let record = measure_peer(peer, &train, &source, steps)?;
        eprintln!(
            "  lenet {}: {:.0} examples/s ({} steps of {BATCH}, loss {:.3} -> {:.3})",
            record.backend, record.examples_per_s, record.steps, record.first_loss, record.last_loss
        );
        records.push(record);
    }
    Ok(records)
}
