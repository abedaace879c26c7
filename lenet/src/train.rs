//! The training loop: mini-batch steps through the backend, per-epoch
//! shuffles from the seed, evaluation in batches, checkpoints after each
//! epoch, and a stop with an error when the loss stops being finite.
//!
//! Per step the host uploads the batch, downloads the loss (a scalar) and the
//! logits (n × 10, for the accuracy) and nothing else: parameters, gradients
//! and optimiser state stay on the device.

use std::path::Path;
use std::time::Instant;

use kernels_core::{Backend, Float, Optimizer, OptimizerState, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, SIDE, epoch_order};
use crate::error::{LenetError, Result};
use crate::model::{Architecture, LeNet, argmax_rows};

/// One epoch's figures, as printed and as written to `--metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    /// Mean training loss over the epoch's examples.
    pub loss: f64,
    /// Training accuracy accumulated during the epoch (as d2l does).
    pub train_acc: f64,
    pub test_acc: f64,
    /// Training examples per second of the epoch's training loop.
    pub examples_per_s: f64,
    /// Seconds of the training loop (evaluation excluded).
    pub seconds: f64,
    /// Seconds evaluating the test set.
    pub eval_seconds: f64,
}

/// Hears about progress; the binary draws a bar, tests ignore it.
pub trait Observer {
    fn epoch_start(&mut self, _epoch: usize, _batches: usize) {}
    fn batch_done(&mut self, _loss: f64) {}
    /// An epoch finished (and, in `fit`, was saved when a save was asked for).
    fn epoch_done(&mut self, _metrics: &EpochMetrics) {}
    /// `fit` wrote the checkpoint of `epoch` to `path`.
    fn saved(&mut self, _epoch: usize, _path: &Path) {}
    /// Asked after each epoch of `fit`: true ends training there, with the
    /// epoch saved (the binary stops when its stdout has been closed).
    fn should_stop(&self) -> bool {
        false
    }
}

/// An observer that does nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// Loss and accuracy over a data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
}

/// How long to train and where to checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct FitPlan<'a> {
    pub epochs: usize,
    pub batch_size: usize,
    /// Checkpoint written after every epoch.
    pub save: Option<&'a Path>,
}

/// A model, its optimiser state and where training stands.
pub struct Trainer<B: Backend> {
    pub model: LeNet<B>,
    pub optimizer: Optimizer,
    /// One state per parameter, in the model's `state_dict` order.
    pub states: Vec<OptimizerState<B::Tensor>>,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimiser steps taken.
    pub step: u64,
    /// Seeds the initial weights and every epoch's shuffle.
    pub seed: u64,
    x_buf: Vec<B::Elem>,
    y_buf: Vec<usize>,
}

impl<B: Backend> Trainer<B> {
    /// A fresh model from `seed` and zeroed optimiser state.
    pub fn new(be: &B, arch: Architecture, optimizer: Optimizer, seed: u64) -> Result<Self> {
        let model = LeNet::init(be, arch, seed)?;
        Self::resume(be, model, optimizer, Vec::new(), 0, 0, seed)
    }

    /// Continues from a model and, when `slots` is not empty, the optimiser
    /// buffers (per parameter) saved at `epoch` and `step`.
    pub fn resume(
        be: &B,
        model: LeNet<B>,
        optimizer: Optimizer,
        slots: Vec<Vec<B::Tensor>>,
        epoch: usize,
        step: u64,
        seed: u64,
    ) -> Result<Self> {
        let mut states = model
            .params()
            .iter()
            .map(|p| be.optimizer_state(&optimizer, kernels_core::Shaped::shape(p)))
            .collect::<kernels_core::Result<Vec<_>>>()?;
        if !slots.is_empty() {
            for (state, slots) in states.iter_mut().zip(slots) {
                state.slots = slots;
            }
        }
        for state in &mut states {
            state.step = step;
        }
        Ok(Self { model, optimizer, states, epoch, step, seed, x_buf: Vec::new(), y_buf: Vec::new() })
    }

    /// One optimiser step on the examples `indices` of `data`; returns the
    /// batch's mean loss and how many it classified right before the step.
    pub fn train_step(&mut self, be: &B, data: &Dataset, indices: &[usize]) -> Result<(f64, usize)> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= data.len()) {
            return Err(LenetError::Config(format!("example {bad} is out of range for {} examples", data.len())));
        }
        let next_step = self.step.checked_add(1).ok_or_else(|| count_overflow("step", self.step))?;
        data.gather(indices, &mut self.x_buf, &mut self.y_buf);
        let host = Tensor::new(&[indices.len(), 1, SIDE, SIDE], std::mem::take(&mut self.x_buf))?;
        let x = be.upload(&host)?;
        self.x_buf = host.into_data();

        let (logits, acts) = self.model.forward_train(be, x, next_step)?;
        let (loss, dlogits) = be.softmax_cross_entropy(&logits, &self.y_buf)?;
        if !loss.is_finite() {
            return Err(LenetError::NonFinite {
                what: "the loss",
                epoch: self.epoch.saturating_add(1),
                step: next_step,
                loss,
                kept: String::new(),
            });
        }
        let correct = count_correct(&be.download(&logits)?, &self.y_buf);
        let grads = self.model.backward(be, &acts, &dlogits)?;
        for ((param, grad), state) in self.model.params_mut().iter_mut().zip(&grads).zip(&mut self.states) {
            be.optimizer_step(param, grad, state)?;
        }
        self.step = next_step;
        Ok((loss, correct))
    }

    /// One pass over `train` in batches of `batch_size` (the last may be
    /// smaller), shuffled for this epoch; then the test set. Advances `epoch`.
    pub fn train_epoch(
        &mut self,
        be: &B,
        train: &Dataset,
        test: &Dataset,
        batch_size: usize,
        observer: &mut dyn Observer,
    ) -> Result<EpochMetrics> {
        let metrics = self.run_epoch(be, train, test, batch_size, observer)?;
        observer.epoch_done(&metrics);
        Ok(metrics)
    }

    /// `train_epoch` without telling the observer it is done.
    fn run_epoch(
        &mut self,
        be: &B,
        train: &Dataset,
        test: &Dataset,
        batch_size: usize,
        observer: &mut dyn Observer,
    ) -> Result<EpochMetrics> {
        if batch_size == 0 {
            return Err(LenetError::Config("--batch-size must be at least 1".into()));
        }
        if train.is_empty() {
            return Err(LenetError::Config("the training set is empty".into()));
        }
        let epoch = self.epoch.checked_add(1).ok_or_else(|| count_overflow("epoch", self.epoch as u64))?;
        let order = epoch_order(train.len(), self.seed, epoch);
        observer.epoch_start(epoch, order.len().div_ceil(batch_size));
        let start = Instant::now();
        let (mut loss_sum, mut correct) = (0.0, 0usize);
        for batch in order.chunks(batch_size) {
            let (loss, right) = self.train_step(be, train, batch)?;
            loss_sum += loss * batch.len() as f64;
            correct += right;
            observer.batch_done(loss);
        }
        be.sync()?;
        let seconds = start.elapsed().as_secs_f64();
        let eval_start = Instant::now();
        let test_eval = evaluate(be, &self.model, test, batch_size.max(500))?;
        // Each step's loss is checked before its update; this catches the
        // last step's update sending the weights off to infinity.
        if !test_eval.loss.is_finite() {
            return Err(LenetError::NonFinite {
                what: "the test loss after the epoch's last step",
                epoch,
                step: self.step,
                loss: test_eval.loss,
                kept: String::new(),
            });
        }
        self.epoch = epoch;
        let n = train.len() as f64;
        let metrics = EpochMetrics {
            epoch,
            loss: loss_sum / n,
            train_acc: correct as f64 / n,
            test_acc: test_eval.accuracy,
            examples_per_s: n / seconds.max(f64::MIN_POSITIVE),
            seconds,
            eval_seconds: eval_start.elapsed().as_secs_f64(),
        };
        Ok(metrics)
    }

    /// `plan.epochs` more epochs, numbered on from `self.epoch`; after each,
    /// a checkpoint to `plan.save` when given (so a divergence leaves the
    /// previous epoch's checkpoint in place).
    pub fn fit(
        &mut self,
        be: &B,
        train: &Dataset,
        test: &Dataset,
        plan: &FitPlan<'_>,
        observer: &mut dyn Observer,
    ) -> Result<Vec<EpochMetrics>> {
        if self.epoch.checked_add(plan.epochs).is_none_or(|last| last as u64 > crate::checkpoint::MAX_COUNT) {
            return Err(count_overflow("epoch", self.epoch as u64));
        }
        let mut all = Vec::new();
        // The epoch of the last checkpoint this run wrote.
        let mut saved: Option<usize> = None;
        for _ in 0..plan.epochs {
            let metrics = self.run_epoch(be, train, test, plan.batch_size, observer);
            let metrics = metrics.map_err(|e| with_kept(e, kept_sentence(plan.save, saved)))?;
            // Saved before it is reported: whatever happens to the report
            // (a closed stdout), the epoch is kept.
            if let Some(path) = plan.save {
                crate::checkpoint::save(be, self, path).map_err(|e| {
                    let kept = kept_sentence(plan.save, saved);
                    match e {
                        e @ (LenetError::NonFinite { .. } | LenetError::NonFiniteState { .. }) => with_kept(e, kept),
                        other => LenetError::Save { source: Box::new(other), kept },
                    }
                })?;
                saved = Some(self.epoch);
                observer.saved(self.epoch, path);
            }
            observer.epoch_done(&metrics);
            all.push(metrics);
            if observer.should_stop() {
                break;
            }
        }
        Ok(all)
    }
}

fn count_overflow(what: &str, at: u64) -> LenetError {
    LenetError::Config(format!(
        "the {what} count {at} cannot advance further (at most {})",
        crate::checkpoint::MAX_COUNT
    ))
}

/// What the checkpoint file holds, for an error that stops training: the
/// last epoch this run saved, or nothing this run wrote.
fn kept_sentence(save: Option<&Path>, saved: Option<usize>) -> String {
    match (save, saved) {
        (None, _) => "; no checkpoint was being written".to_string(),
        (Some(path), Some(epoch)) => format!("; {} holds epoch {epoch}", path.display()),
        (Some(path), None) => format!("; {} was not written by this run", path.display()),
    }
}

/// Puts `kept` into a divergence error; other errors pass unchanged.
fn with_kept(err: LenetError, kept: String) -> LenetError {
    match err {
        LenetError::NonFinite { what, epoch, step, loss, .. } => {
            LenetError::NonFinite { what, epoch, step, loss, kept }
        }
        LenetError::NonFiniteState { path, tensor, .. } => LenetError::NonFiniteState { path, tensor, kept },
        other => other,
    }
}

/// How many rows of `logits` have their largest value at the label.
fn count_correct<T: Float>(logits: &Tensor<T>, labels: &[usize]) -> usize {
    argmax_rows(logits).iter().zip(labels).filter(|(p, l)| p == l).count()
}

/// Mean loss and accuracy of `model` on `data`, in batches of `batch_size`.
pub fn evaluate<B: Backend>(be: &B, model: &LeNet<B>, data: &Dataset, batch_size: usize) -> Result<Evaluation> {
    if data.is_empty() {
        return Err(LenetError::Config("cannot evaluate on an empty data set".into()));
    }
    let (mut x_buf, mut y_buf) = (Vec::new(), Vec::new());
    let (mut loss_sum, mut correct) = (0.0, 0usize);
    let indices: Vec<usize> = (0..data.len()).collect();
    for batch in indices.chunks(batch_size.max(1)) {
        data.gather(batch, &mut x_buf, &mut y_buf);
        let host = Tensor::new(&[batch.len(), 1, SIDE, SIDE], std::mem::take(&mut x_buf))?;
        let x = be.upload(&host)?;
        x_buf = host.into_data();
        let logits = model.forward_eval(be, x)?;
        let (loss, _) = be.softmax_cross_entropy(&logits, &y_buf)?;
        loss_sum += loss * batch.len() as f64;
        correct += count_correct(&be.download(&logits)?, &y_buf);
    }
    let n = data.len() as f64;
    Ok(Evaluation { loss: loss_sum / n, accuracy: correct as f64 / n })
}
