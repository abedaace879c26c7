//! Training: determinism per backend, agreement of every backend with the
//! naive reference over 20 steps, and a short run on real images.

mod common;

use common::{real_data, synthetic};
use kernels_core::{Backend, Optimizer};
use kernels_im2col::Im2col;
use kernels_naive::Naive;
use kernels_opencl::OpenCl;
use lenet::data::Dataset;
use lenet::model::{Activation, Architecture, Pooling};
use lenet::train::{EpochMetrics, FitPlan, Quiet, Trainer, evaluate};

const RELU_MAX: Architecture = Architecture::lenet5(Activation::Relu, Pooling::Max);
const SIGMOID_AVG: Architecture = Architecture::lenet5(Activation::Sigmoid, Pooling::Avg);

/// Two epochs; the metrics without the timings.
fn two_epochs<B: Backend>(be: &B, train: &Dataset, test: &Dataset) -> Vec<(usize, f64, f64, f64)> {
    let mut trainer = Trainer::new(be, RELU_MAX, Optimizer::adam(2e-3), 11).unwrap();
    let plan = FitPlan { epochs: 2, batch_size: 16, save: None };
    let metrics: Vec<EpochMetrics> = trainer.fit(be, train, test, &plan, &mut Quiet).unwrap();
    metrics.iter().map(|m| (m.epoch, m.loss, m.train_acc, m.test_acc)).collect()
}

#[test]
fn same_seed_same_backend_same_threads_gives_identical_metrics() {
    let (train, test) = (synthetic(96, 1), synthetic(40, 2));
    let naive = Naive::<f32>::new();
    let first = two_epochs(&naive, &train, &test);
    assert_eq!(first, two_epochs(&naive, &train, &test), "naive");

    let im2col = Im2col::with_threads(2).unwrap();
    let first = two_epochs(&im2col, &train, &test);
    let again = two_epochs(&Im2col::with_threads(2).unwrap(), &train, &test);
    assert_eq!(first, again, "im2col, 2 threads");
    // A different seed really changes the run (the comparison above is not vacuous).
    let mut other = Trainer::new(&im2col, RELU_MAX, Optimizer::adam(2e-3), 12).unwrap();
    let plan = FitPlan { epochs: 1, batch_size: 16, save: None };
    let m = other.fit(&im2col, &train, &test, &plan, &mut Quiet).unwrap();
    assert_ne!(m[0].loss, first[0].1);
}

/// Losses of the first `steps` steps on a fixed batch sequence.
fn losses<B: Backend>(be: &B, arch: Architecture, optimizer: Optimizer, data: &Dataset, steps: usize) -> Vec<f64> {
    let mut trainer = Trainer::new(be, arch, optimizer, 5).unwrap();
    let batch = 24;
    (0..steps)
        .map(|s| {
            let indices: Vec<usize> = (0..batch).map(|i| (s * batch + i * 7) % data.len()).collect();
            trainer.train_step(be, data, &indices).unwrap().0
        })
        .collect()
}

fn assert_agree(name: &str, reference: &[f64], other: &[f64]) {
    for (step, (r, o)) in reference.iter().zip(other).enumerate() {
        let rel = (r - o).abs() / r.abs().max(1e-12);
        assert!(rel <= 1e-3, "{name}: step {} loss {o} vs naive {r}: relative difference {rel:.2e}", step + 1);
    }
}

#[test]
fn every_backend_follows_naive_for_twenty_steps() {
    let data = synthetic(200, 7);
    let opencl = OpenCl::new().unwrap_or_else(|e| panic!("OpenCL (PoCL) must be available for this test: {e}"));
    let im2col = Im2col::with_threads(2).unwrap();
    for (arch, optimizer) in [(RELU_MAX, Optimizer::adam(1e-3)), (SIGMOID_AVG, Optimizer::sgd(0.9))] {
        let reference = losses(&Naive::<f32>::new(), arch, optimizer, &data, 20);
        assert!(reference.iter().all(|l| l.is_finite()));
        assert_agree("im2col", &reference, &losses(&im2col, arch, optimizer, &data, 20));
        assert_agree(&opencl.name(), &reference, &losses(&opencl, arch, optimizer, &data, 20));
    }
}

#[test]
fn a_short_run_on_real_images_learns() {
    let (mut train, mut test) = real_data();
    train.truncate(600);
    test.truncate(1000);
    let be = Im2col::with_threads(2).unwrap();
    let mut trainer = Trainer::new(&be, RELU_MAX, Optimizer::adam(2e-3), 0).unwrap();
    let before = evaluate(&be, &trainer.model, &test, 500).unwrap();
    let plan = FitPlan { epochs: 4, batch_size: 32, save: None };
    let metrics = trainer.fit(&be, &train, &test, &plan, &mut Quiet).unwrap();
    let last = metrics.last().unwrap();
    assert!(last.loss < 0.8 * metrics[0].loss, "loss {} -> {}", metrics[0].loss, last.loss);
    assert!(last.loss < 0.8 * before.loss, "loss before training {} -> {}", before.loss, last.loss);
    // Chance is 0.10.
    assert!(last.test_acc > 0.55, "test accuracy {} after {} epochs", last.test_acc, metrics.len());
}

#[test]
fn every_optimizer_from_the_command_line_lowers_the_loss() {
    use clap::Parser;
    let data = synthetic(64, 8);
    let be = Im2col::with_threads(2).unwrap();
    let batch: Vec<usize> = (0..32).collect();
    for name in ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"] {
        let cli = lenet::cli::Cli::try_parse_from(["lenet", "--optimizer", name]).unwrap();
        let optimizer = cli.args.optimizer_or_default();
        assert_eq!(optimizer.name(), name);
        let mut trainer = Trainer::new(&be, RELU_MAX, optimizer, 4).unwrap();
        let first = trainer.train_step(&be, &data, &batch).unwrap().0;
        let mut last = first;
        for _ in 0..30 {
            last = trainer.train_step(&be, &data, &batch).unwrap().0;
        }
        assert!(last < 0.7 * first, "{name} with default hyper-parameters: loss {first} -> {last}");
    }
}
