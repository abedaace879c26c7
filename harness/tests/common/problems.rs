//! Problems for the conformance suite: small random valid cases (proptest
//! strategies), the DESIGN.md edge cases as explicit lists, and seeded data.
//!
//! A problem holds dimensions, parameters and a seed, never the data, so a
//! failure message prints compactly and the case replays from its Debug.
//! Data are f32 values; the f64 reference sees exactly the same values.

use kernels_core::{Conv2d, Optimizer, Pool2d, PoolKind, SplitMix64, Tensor};
use proptest::prelude::*;

/// `len` f32 values uniform in [lo, hi), from `seed`.
pub fn uniform(seed: u64, len: usize, lo: f64, hi: f64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..len).map(|_| rng.uniform(lo, hi) as f32).collect()
}

/// A tensor of uniform values in [−1, 1).
pub fn random(shape: &[usize], seed: u64) -> Tensor<f32> {
    let len = shape.iter().product();
    Tensor::from_fn(shape, {
        let data = uniform(seed, len, -1.0, 1.0);
        move |i| data[i]
    })
}

/// Small integers in [lo, hi]: many exact ties, exact in f32 and f64.
pub fn small_integers(shape: &[usize], seed: u64, lo: i64, hi: i64) -> Tensor<f32> {
    let mut rng = SplitMix64::new(seed);
    let span = (hi - lo + 1) as usize;
    Tensor::from_fn(shape, |_| (lo + rng.below(span) as i64) as f32)
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConvProblem {
    /// [n, c, h, w]
    pub input: [usize; 4],
    /// [k, r, s]
    pub filters: [usize; 3],
    pub params: Conv2d,
    pub bias: bool,
    pub seed: u64,
}

impl ConvProblem {
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.filters[0], self.input[1], self.filters[1], self.filters[2]]
    }
}

fn conv(
    input: [usize; 4],
    filters: [usize; 3],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> ConvProblem {
    ConvProblem { input, filters, params: Conv2d { stride, padding, dilation }, bias: true, seed: 7 }
}

/// The edge cases DESIGN.md requires in every run.
pub fn conv_edge_cases() -> Vec<(&'static str, ConvProblem)> {
    let no_bias = |p: ConvProblem| ConvProblem { bias: false, seed: 11, ..p };
    vec![
        ("1x1 kernel", conv([2, 3, 5, 5], [4, 1, 1], [1, 1], [0, 0], [1, 1])),
        ("1x1 kernel, stride 2, no bias", no_bias(conv([1, 2, 6, 5], [2, 1, 1], [2, 2], [0, 0], [1, 1]))),
        ("kernel as large as the padded input", conv([2, 2, 3, 3], [3, 5, 5], [1, 1], [1, 1], [1, 1])),
        ("kernel as large as the input", no_bias(conv([1, 1, 4, 4], [1, 4, 4], [1, 1], [0, 0], [1, 1]))),
        ("stride larger than the kernel", conv([2, 2, 9, 9], [2, 2, 2], [3, 3], [0, 0], [1, 1])),
        ("non-square kernel and strides", conv([1, 3, 7, 10], [2, 2, 4], [1, 3], [1, 0], [1, 1])),
        ("dilation > 1", conv([2, 2, 9, 8], [3, 3, 3], [1, 1], [2, 1], [2, 3])),
        ("dilation and stride", no_bias(conv([1, 2, 11, 11], [2, 3, 2], [2, 3], [1, 2], [2, 2]))),
        ("batch 1, one channel, one filter", conv([1, 1, 5, 5], [1, 3, 3], [1, 1], [0, 0], [1, 1])),
        ("odd sizes", conv([3, 3, 11, 7], [3, 3, 5], [2, 2], [1, 1], [1, 1])),
        ("padding wider than the kernel", conv([1, 1, 3, 3], [2, 2, 2], [1, 1], [2, 2], [1, 1])),
        ("one output row, many columns", conv([2, 1, 3, 12], [2, 3, 1], [1, 1], [0, 0], [1, 1])),
    ]
}

/// Random valid conv problems: N ≤ 3, C, K ≤ 4, kernels ≤ 4, H, W ≤ 12.
pub fn conv_problem() -> impl Strategy<Value = ConvProblem> {
    let dims = (1..=3usize, 1..=4usize, 1..=4usize, 1..=4usize, 1..=4usize);
    let params = ([1..=3usize, 1..=3usize], [0..=2usize, 0..=2usize], [1..=2usize, 1..=2usize]);
    let extra = (0..=5usize, 0..=5usize, any::<bool>(), any::<u64>());
    (dims, params, extra).prop_map(|((n, c, k, r, s), (stride, padding, dilation), (eh, ew, bias, seed))| {
        // The smallest input the dilated kernel fits, plus a little more.
        let fit = |kernel: usize, axis: usize| {
            let span = dilation[axis] * (kernel - 1) + 1;
            span.saturating_sub(2 * padding[axis]).max(1)
        };
        let (h, w) = (fit(r, 0) + eh, fit(s, 1) + ew);
        ConvProblem {
            input: [n, c, h, w],
            filters: [k, r, s],
            params: Conv2d { stride, padding, dilation },
            bias,
            seed,
        }
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolProblem {
    pub input: [usize; 4],
    pub params: Pool2d,
    pub seed: u64,
}

fn pool(input: [usize; 4], kind: PoolKind, window: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> PoolProblem {
    PoolProblem { input, params: Pool2d { kind, window, stride, padding }, seed: 5 }
}

/// Pooling edge cases, each run with max and with avg.
pub fn pool_edge_cases() -> Vec<(&'static str, PoolProblem)> {
    let mut cases = Vec::new();
    for kind in [PoolKind::Max, PoolKind::Avg] {
        cases.extend([
            ("2x2 stride 2 (LeNet)", pool([2, 3, 8, 8], kind, [2, 2], [2, 2], [0, 0])),
            ("overlapping 3x3 stride 1", pool([1, 2, 6, 7], kind, [3, 3], [1, 1], [0, 0])),
            ("overlapping 3x3 stride 2 pad 1 (ResNet)", pool([2, 2, 9, 9], kind, [3, 3], [2, 2], [1, 1])),
            ("window as large as the input", pool([1, 1, 4, 4], kind, [4, 4], [1, 1], [0, 0])),
            ("1x1 window", pool([1, 2, 3, 5], kind, [1, 1], [1, 1], [0, 0])),
            ("stride larger than the window", pool([2, 1, 9, 10], kind, [2, 2], [3, 3], [0, 0])),
            ("non-square window and stride", pool([1, 3, 7, 9], kind, [1, 3], [2, 1], [0, 1])),
            ("odd sizes, padding both axes", pool([3, 1, 11, 7], kind, [4, 2], [3, 1], [2, 1])),
        ]);
    }
    cases
}

/// Random valid pooling problems: window and stride ≤ 4, padding ≤ window / 2.
pub fn pool_problem() -> impl Strategy<Value = PoolProblem> {
    let dims = (1..=3usize, 1..=4usize, [1..=4usize, 1..=4usize], [1..=4usize, 1..=4usize]);
    let extra = (any::<bool>(), [0..=2usize, 0..=2usize], 0..=6usize, 0..=6usize, any::<u64>());
    (dims, extra).prop_map(|((n, c, window, stride), (max, pad_choice, eh, ew, seed))| {
        let padding = [pad_choice[0].min(window[0] / 2), pad_choice[1].min(window[1] / 2)];
        let fit = |axis: usize| window[axis].saturating_sub(2 * padding[axis]).max(1);
        let kind = if max { PoolKind::Max } else { PoolKind::Avg };
        PoolProblem { input: [n, c, fit(0) + eh, fit(1) + ew], params: Pool2d { kind, window, stride, padding }, seed }
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct LinearProblem {
    pub batch: usize,
    pub inputs: usize,
    pub outputs: usize,
    pub bias: bool,
    pub seed: u64,
}

pub fn linear_edge_cases() -> Vec<(&'static str, LinearProblem)> {
    let p = |batch, inputs, outputs, bias| LinearProblem { batch, inputs, outputs, bias, seed: 3 };
    vec![
        ("1 -> 1, batch 1", p(1, 1, 1, true)),
        ("one output, no bias", p(3, 17, 1, false)),
        ("LeNet fc3 shape, small batch", p(2, 84, 10, true)),
    ]
}

pub fn linear_problem() -> impl Strategy<Value = LinearProblem> {
    (1..=3usize, 1..=24usize, 1..=12usize, any::<bool>(), any::<u64>())
        .prop_map(|(batch, inputs, outputs, bias, seed)| LinearProblem { batch, inputs, outputs, bias, seed })
}

/// An element-wise problem: a shape of rank 1 to 4 and a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementwiseProblem {
    pub shape: Vec<usize>,
    pub seed: u64,
}

pub fn elementwise_problem() -> impl Strategy<Value = ElementwiseProblem> {
    (prop::collection::vec(1..=5usize, 1..=4), any::<u64>())
        .prop_map(|(shape, seed)| ElementwiseProblem { shape, seed })
}

#[derive(Debug, Clone, PartialEq)]
pub struct SoftmaxProblem {
    pub batch: usize,
    pub classes: usize,
    /// Logits are uniform in [−spread, spread).
    pub spread: f64,
    pub seed: u64,
}

impl SoftmaxProblem {
    pub fn labels(&self) -> Vec<usize> {
        let mut rng = SplitMix64::new(self.seed ^ 0x5eed);
        (0..self.batch).map(|_| rng.below(self.classes)).collect()
    }
}

pub fn softmax_problem() -> impl Strategy<Value = SoftmaxProblem> {
    (1..=4usize, 1..=12usize, prop_oneof![Just(0.0), 0.1..8.0f64, 20.0..60.0f64], any::<u64>())
        .prop_map(|(batch, classes, spread, seed)| SoftmaxProblem { batch, classes, spread, seed })
}

#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerProblem {
    pub optimizer: Optimizer,
    pub shape: [usize; 2],
    pub seed: u64,
}

/// Every rule with random hyper-parameters in their valid ranges, weight
/// decay zero or not.
pub fn optimizer() -> impl Strategy<Value = Optimizer> {
    let lr = 1e-3..0.5f64;
    let unit = 0.0..0.999f64;
    let wd = prop_oneof![Just(0.0), 1e-4..0.1f64];
    let eps = prop_oneof![Just(1e-8), 1e-6..1e-2f64];
    (0..6usize, lr, unit.clone(), unit, wd, eps).prop_map(|(kind, lr, a, b, weight_decay, eps)| match kind {
        0 => Optimizer::Sgd { lr, weight_decay },
        1 => Optimizer::Momentum { lr, momentum: a, weight_decay },
        2 => Optimizer::Nesterov { lr, momentum: a, weight_decay },
        3 => Optimizer::AdaGrad { lr, eps, weight_decay },
        4 => Optimizer::RmsProp { lr, alpha: a, eps, weight_decay },
        _ => Optimizer::Adam { lr, beta1: a, beta2: b, eps, weight_decay },
    })
}

pub fn optimizer_problem() -> impl Strategy<Value = OptimizerProblem> {
    (optimizer(), [1..=4usize, 1..=9usize], any::<u64>()).prop_map(|(optimizer, shape, seed)| OptimizerProblem {
        optimizer,
        shape,
        seed,
    })
}

/// PyTorch's defaults for each of the six rules: always run.
pub fn default_optimizers() -> [Optimizer; 6] {
    [
        Optimizer::sgd(0.1),
        Optimizer::momentum(0.05, 0.9),
        Optimizer::nesterov(0.05, 0.9),
        Optimizer::adagrad(0.1),
        Optimizer::rmsprop(0.01),
        Optimizer::adam(0.01),
    ]
}
