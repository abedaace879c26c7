//! `--lenet`: LeNet training throughput per backend, through the lenet
//! crate's own `Trainer::train_step` (forward, softmax cross-entropy,
//! backward, Adam on the device), batch 256 of Fashion-MNIST.
//!
//! A few warm-up steps are run and not counted; then a fixed number of
//! steps is timed. im2col runs them on its own threads (`Im2col::install`),
//! as the `lenet` binary does. Examples/s = steps x batch / seconds. The first and the
//! last timed loss are recorded so a run that does not train shows it.

use std::time::Instant;

use kernels_core::{Backend, Optimizer};
use lenet::data::{DataFiles, Dataset, epoch_order};
use lenet::model::{Activation, Architecture, Pooling};
use lenet::train::Trainer;

use crate::backends::{BackendKind, Backends};
use crate::error::{HarnessError, Result};
use crate::results::LenetRecord;

/// The batch size of DESIGN.md's PyTorch figure.
pub const BATCH: usize = 256;
const WARMUP_STEPS: usize = 3;
const SEED: u64 = 7;

fn lenet_error(backend: &str, e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Setup(format!("LeNet training on {backend}: {e}"))
}

fn measure<B: Backend>(be: &B, kind: &str, data: &Dataset, source: &str, steps: usize) -> Result<LenetRecord> {
    let arch = Architecture { activation: Activation::Relu, pool: Pooling::Max };
    let mut trainer = Trainer::new(be, arch, Optimizer::adam(1e-3), SEED).map_err(|e| lenet_error(kind, e))?;
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

/// Measures every selected backend; when the data set is missing, notes
/// why in `notes` and measures nothing.
pub fn measure_all(
    backends: &Backends,
    kinds: &[BackendKind],
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
    Ok(records)
}
