//! Gradient checks of every backward of the reference, in f64: for
//! L = Σ y ⊙ r with a random r (so dL/dy = r), each analytic gradient
//! must match central differences of L with relative error < 1e-6
//! (`kernels_core::gradcheck`). DESIGN.md's edge cases run as explicit
//! cases every time; proptest adds random valid problems (256 per property,
//! or PROPTEST_CASES).

use kernels_core::{
    Backend, BatchNorm, Conv2d, ConvGeometry, Dropout, GradRequest, Pool2d, PoolGeometry, PoolKind, Shaped, SplitMix64,
    Tensor, gradcheck, weighted_sum,
};
use kernels_naive::Naive;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

const MAX_REL_ERR: f64 = 1e-6;
/// Step for ops linear in the checked operand (conv, linear, avg pool, and
/// max pool between its switching points): the central difference is exact
/// up to rounding, so a large step keeps rounding small.
const LINEAR_STEP: f64 = 1e-3;
/// Step for curved ops (sigmoid, softmax): truncation error ~ h²·|f'''|/6
/// against rounding ~ ulp(L)/h; 1e-4 keeps both near 1e-10 for the sizes
/// below (L sums at most a few hundred terms).
const CURVED_STEP: f64 = 1e-4;

/// proptest's default: 256 cases per property, or PROPTEST_CASES.
fn config() -> Config {
    Config::default()
}

fn random(shape: &[usize], seed: u64, lo: f64, hi: f64) -> Tensor<f64> {
    let mut rng = SplitMix64::new(seed);
    Tensor::from_fn(shape, |_| rng.uniform(lo, hi))
}

fn tensor(shape: &[usize], data: &[f64]) -> Tensor<f64> {
    Tensor::new(shape, data.to_vec()).unwrap()
}

/// Checks one gradient; the error names the op, the operand and the case.
fn expect_gradient(
    what: &str,
    case: &dyn std::fmt::Debug,
    at: &Tensor<f64>,
    analytic: &Tensor<f64>,
    step: f64,
    loss: impl FnMut(&[f64]) -> f64,
) -> Result<(), TestCaseError> {
    assert_eq!(at.shape(), analytic.shape(), "{what}: gradient shape");
    let report = gradcheck(at.data(), analytic.data(), step, loss).map_err(|e| TestCaseError::fail(e.to_string()))?;
    if report.max_rel_err.is_nan() || report.max_rel_err >= MAX_REL_ERR {
        return Err(TestCaseError::fail(format!("{what}: {report}\ncase: {case:?}")));
    }
    Ok(())
}

// ---------------------------------------------------------------- conv2d

#[derive(Debug, Clone)]
struct ConvCase {
    input: [usize; 4],
    filters: [usize; 3],
    params: Conv2d,
    seed: u64,
}

fn check_conv(p: &ConvCase) -> Result<(), TestCaseError> {
    let nn = Naive::<f64>::new();
    let [_, c, _, _] = p.input;
    let [k, r, s] = p.filters;
    let g = ConvGeometry::new(&p.input, &[k, c, r, s], Some(&[k]), &p.params).unwrap();
    let x = random(&p.input, p.seed, -1.0, 1.0);
    let w = random(&g.w_shape(), p.seed + 1, -1.0, 1.0);
    let b = random(&[k], p.seed + 2, -1.0, 1.0);
    let weights = random(&g.y_shape(), p.seed + 3, -1.0, 1.0);
    let grads = nn.conv2d_backward(&x, &w, &weights, &p.params, GradRequest::ALL).unwrap();
    let loss = |x: &Tensor<f64>, w: &Tensor<f64>, b: &Tensor<f64>| {
        weighted_sum(nn.conv2d_forward(x, w, Some(b), &p.params).unwrap().data(), weights.data())
    };
    let with = |shape: &[usize], v: &[f64]| tensor(shape, v);
    expect_gradient("conv2d dx", p, &x, &grads.dx.unwrap(), LINEAR_STEP, |v| loss(&with(&p.input, v), &w, &b))?;
    expect_gradient("conv2d dw", p, &w, &grads.dw.unwrap(), LINEAR_STEP, |v| loss(&x, &with(&g.w_shape(), v), &b))?;
    expect_gradient("conv2d db", p, &b, &grads.db.unwrap(), LINEAR_STEP, |v| loss(&x, &w, &with(&[k], v)))
}

fn conv_case(
    input: [usize; 4],
    filters: [usize; 3],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> ConvCase {
    ConvCase { input, filters, params: Conv2d { stride, padding, dilation }, seed: 17 }
}

#[test]
fn gradcheck_conv2d_dx_dw_db_on_the_design_edge_cases() {
    let cases = [
        ("1x1 kernel", conv_case([2, 3, 5, 5], [4, 1, 1], [1, 1], [0, 0], [1, 1])),
        ("1x1 kernel, stride 2", conv_case([1, 2, 6, 5], [2, 1, 1], [2, 2], [0, 0], [1, 1])),
        ("kernel as large as the padded input", conv_case([2, 2, 3, 3], [3, 5, 5], [1, 1], [1, 1], [1, 1])),
        ("kernel as large as the input", conv_case([1, 1, 4, 4], [1, 4, 4], [1, 1], [0, 0], [1, 1])),
        ("stride larger than the kernel", conv_case([2, 2, 9, 9], [2, 2, 2], [3, 3], [0, 0], [1, 1])),
        ("non-square kernel and strides", conv_case([1, 3, 7, 10], [2, 2, 4], [1, 3], [1, 0], [1, 1])),
        ("dilation > 1", conv_case([2, 2, 9, 8], [3, 3, 3], [1, 1], [2, 1], [2, 3])),
        ("dilation and stride", conv_case([1, 2, 11, 11], [2, 3, 2], [2, 3], [1, 2], [2, 2])),
        ("batch 1, one channel, one filter", conv_case([1, 1, 5, 5], [1, 3, 3], [1, 1], [0, 0], [1, 1])),
        ("odd sizes", conv_case([3, 3, 11, 7], [3, 3, 5], [2, 2], [1, 1], [1, 1])),
        ("padding wider than the kernel", conv_case([1, 1, 3, 3], [2, 2, 2], [1, 1], [2, 2], [1, 1])),
    ];
    for (label, case) in cases {
        check_conv(&case).unwrap_or_else(|e| panic!("{label}: {e}"));
    }
}

fn conv_cases() -> impl Strategy<Value = ConvCase> {
    let dims = (1..=3usize, 1..=3usize, 1..=3usize, 1..=4usize, 1..=4usize);
    let params = ([1..=3usize, 1..=3usize], [0..=2usize, 0..=2usize], [1..=2usize, 1..=2usize]);
    (dims, params, (0..=4usize, 0..=4usize, any::<u64>())).prop_map(
        |((n, c, k, r, s), (stride, padding, dilation), (eh, ew, seed))| {
            let fit = |kernel: usize, axis: usize| {
                (dilation[axis] * (kernel - 1) + 1).saturating_sub(2 * padding[axis]).max(1)
            };
            let input = [n, c, fit(r, 0) + eh, fit(s, 1) + ew];
            ConvCase { input, filters: [k, r, s], params: Conv2d { stride, padding, dilation }, seed: seed >> 8 }
        },
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gradcheck_conv2d_dx_dw_db_random_stride_padding_dilation(case in conv_cases()) {
        check_conv(&case)?;
    }
}

// ---------------------------------------------------------------- pool2d

#[derive(Debug, Clone)]
struct PoolCase {
    input: [usize; 4],
    params: Pool2d,
    seed: u64,
}

/// Distinct values 0.05 apart in shuffled order: a step of 1e-3 never
/// changes a window's winner, so max pooling is smooth where it is probed.
fn distinct(shape: &[usize], seed: u64) -> Tensor<f64> {
    let len = shape.iter().product();
    let mut order: Vec<usize> = (0..len).collect();
    SplitMix64::new(seed).shuffle(&mut order);
    Tensor::from_fn(shape, |i| order[i] as f64 * 0.05 - len as f64 * 0.025)
}

fn check_pool(p: &PoolCase) -> Result<(), TestCaseError> {
    let nn = Naive::<f64>::new();
    let g = PoolGeometry::new(&p.input, &p.params).unwrap();
    let x = distinct(&p.input, p.seed);
    let weights = random(&g.y_shape(), p.seed + 1, -1.0, 1.0);
    let dx = nn.pool2d_backward(&x, &weights, &p.params).unwrap();
    let loss =
        |v: &[f64]| weighted_sum(nn.pool2d_forward(&tensor(&p.input, v), &p.params).unwrap().data(), weights.data());
    let what = if p.params.kind == PoolKind::Max { "max pool2d dx" } else { "avg pool2d dx" };
    expect_gradient(what, p, &x, &dx, LINEAR_STEP, loss)
}

fn pool_case(
    input: [usize; 4],
    kind: PoolKind,
    window: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> PoolCase {
    PoolCase { input, params: Pool2d { kind, window, stride, padding }, seed: 23 }
}

#[test]
fn gradcheck_pool2d_max_and_avg_on_the_design_edge_cases() {
    for kind in [PoolKind::Max, PoolKind::Avg] {
        let cases = [
            ("2x2 stride 2", pool_case([2, 3, 8, 8], kind, [2, 2], [2, 2], [0, 0])),
            ("overlapping 3x3 stride 1", pool_case([1, 2, 6, 7], kind, [3, 3], [1, 1], [0, 0])),
            ("overlapping 3x3 stride 2 pad 1", pool_case([2, 2, 9, 9], kind, [3, 3], [2, 2], [1, 1])),
            ("window as large as the input", pool_case([1, 1, 4, 4], kind, [4, 4], [1, 1], [0, 0])),
            ("1x1 window", pool_case([1, 2, 3, 5], kind, [1, 1], [1, 1], [0, 0])),
            ("stride larger than the window", pool_case([2, 1, 9, 10], kind, [2, 2], [3, 3], [0, 0])),
            ("non-square window and stride", pool_case([1, 3, 7, 9], kind, [1, 3], [2, 1], [0, 1])),
            ("odd sizes, padding both axes", pool_case([3, 1, 11, 7], kind, [4, 2], [3, 1], [2, 1])),
        ];
        for (label, case) in cases {
            check_pool(&case).unwrap_or_else(|e| panic!("{kind:?} {label}: {e}"));
        }
    }
}

fn pool_cases() -> impl Strategy<Value = PoolCase> {
    let shape = (1..=3usize, 1..=3usize, [1..=4usize, 1..=4usize], [1..=4usize, 1..=4usize]);
    (shape, any::<bool>(), [0..=2usize, 0..=2usize], (0..=5usize, 0..=5usize, any::<u64>())).prop_map(
        |((n, c, window, stride), max, pad, (eh, ew, seed))| {
            let padding = [pad[0].min(window[0] / 2), pad[1].min(window[1] / 2)];
            let fit = |axis: usize| window[axis].saturating_sub(2 * padding[axis]).max(1);
            let kind = if max { PoolKind::Max } else { PoolKind::Avg };
            PoolCase { input: [n, c, fit(0) + eh, fit(1) + ew], params: Pool2d { kind, window, stride, padding }, seed }
        },
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gradcheck_pool2d_max_distinct_inputs_and_avg_random_windows(case in pool_cases()) {
        check_pool(&case)?;
    }
}

/// Ties are not differentiable, so they are checked by hand: the gradient
/// goes to the first element in row-major window order, and padding never
/// wins even when every real element is negative.
#[test]
fn max_pool_ties_route_the_gradient_to_the_first_element_and_padding_never_wins() {
    let nn = Naive::<f64>::new();
    let all_equal = Tensor::full(&[1, 1, 2, 2], 1.0);
    let ones = Tensor::full(&[1, 1, 1, 1], 1.0);
    let dx = nn.pool2d_backward(&all_equal, &ones, &Pool2d::new(PoolKind::Max, 2, 1, 0)).unwrap();
    assert_eq!(dx.data(), [1.0, 0.0, 0.0, 0.0]);

    // 3x3 windows, stride 1, padding 1 over a constant −1 plane: every
    // window's first real element is (max(oy − 1, 0), max(ox − 1, 0)).
    let negative = Tensor::full(&[1, 1, 3, 3], -1.0);
    let params = Pool2d::new(PoolKind::Max, 3, 1, 1);
    let y = nn.pool2d_forward(&negative, &params).unwrap();
    assert_eq!(y.data(), [-1.0; 9], "padding must never win");
    let dx = nn.pool2d_backward(&negative, &Tensor::full(&[1, 1, 3, 3], 1.0), &params).unwrap();
    assert_eq!(dx.data(), [4.0, 2.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0]);

    // Two equal maxima in one window: the earlier one in row-major order.
    let x = tensor(&[1, 1, 2, 3], &[0.0, 5.0, 1.0, 5.0, 2.0, 5.0]);
    let dx = nn.pool2d_backward(&x, &Tensor::full(&[1, 1, 1, 2], 1.0), &Pool2d::new(PoolKind::Max, 2, 1, 0)).unwrap();
    assert_eq!(dx.data(), [0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
}

// ---------------------------------------------------------------- linear

fn check_linear(batch: usize, inputs: usize, outputs: usize, seed: u64) -> Result<(), TestCaseError> {
    let case = (batch, inputs, outputs, seed);
    let nn = Naive::<f64>::new();
    let x = random(&[batch, inputs], seed, -1.0, 1.0);
    let w = random(&[outputs, inputs], seed + 1, -1.0, 1.0);
    let b = random(&[outputs], seed + 2, -1.0, 1.0);
    let weights = random(&[batch, outputs], seed + 3, -1.0, 1.0);
    let grads = nn.linear_backward(&x, &w, &weights, GradRequest::ALL).unwrap();
    let loss = |x: &Tensor<f64>, w: &Tensor<f64>, b: &Tensor<f64>| {
        weighted_sum(nn.linear_forward(x, w, Some(b)).unwrap().data(), weights.data())
    };
    let step = LINEAR_STEP;
    expect_gradient("linear dx", &case, &x, &grads.dx.unwrap(), step, |v| loss(&tensor(x.shape(), v), &w, &b))?;
    expect_gradient("linear dw", &case, &w, &grads.dw.unwrap(), step, |v| loss(&x, &tensor(w.shape(), v), &b))?;
    expect_gradient("linear db", &case, &b, &grads.db.unwrap(), step, |v| loss(&x, &w, &tensor(b.shape(), v)))
}

#[test]
fn gradcheck_linear_dx_dw_db_edge_cases() {
    for (batch, inputs, outputs) in [(1, 1, 1), (1, 7, 3), (3, 1, 5), (2, 84, 10)] {
        check_linear(batch, inputs, outputs, 5).unwrap();
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gradcheck_linear_dx_dw_db_random(batch in 1..=4usize, inputs in 1..=20usize, outputs in 1..=12usize, seed in any::<u32>()) {
        check_linear(batch, inputs, outputs, seed as u64)?;
    }
}

// ---------------------------------------------------------------- batch norm and dropout

/// Training-mode batch norm, the classic place to get a backward wrong: dx
/// must carry the paths through the batch mean and variance. Each channel's
/// values are spread out (σ of a few units) so the curvature, ~1/σ³, stays
/// small against the step. ε is 1e-2 rather than 1e-5: with two values per
/// channel x̂ = ±d/√(d² + ε) and dx is ε's trace alone, which at 1e-5 is
/// ~1e-7 and drowns in the central difference's rounding.
fn check_batch_norm(shape: &[usize], seed: u64) -> Result<(), TestCaseError> {
    let nn = Naive::<f64>::new();
    let params = BatchNorm { eps: 1e-2, momentum: 0.1 };
    let c = shape[1];
    let spatial: usize = shape[2..].iter().product();
    let mut x = random(shape, seed, -1.0, 1.0);
    // A ramp 0, 3, 6, 9 repeating along each channel: neighbours differ by
    // at least 1, so no channel collapses towards ε, and σ stays a few units.
    for (i, v) in x.data_mut().iter_mut().enumerate() {
        let ordinal = i / (c * spatial) * spatial + i % spatial;
        *v += 3.0 * (ordinal % 4) as f64;
    }
    let gamma = random(&[c], seed + 1, 0.5, 1.5);
    let beta = random(&[c], seed + 2, -1.0, 1.0);
    let weights = random(shape, seed + 3, -1.0, 1.0);
    let forward = |x: &Tensor<f64>, gamma: &Tensor<f64>, beta: &Tensor<f64>| {
        let (mut rm, mut rv) = (Tensor::zeros(&[c]), Tensor::full(&[c], 1.0));
        nn.batch_norm_train(x, gamma, beta, &mut rm, &mut rv, &params).unwrap()
    };
    let (_, stats) = forward(&x, &gamma, &beta);
    let grads = nn.batch_norm_backward(&x, &gamma, &stats, &weights, &params, GradRequest::ALL).unwrap();
    let loss =
        |x: &Tensor<f64>, g: &Tensor<f64>, b: &Tensor<f64>| weighted_sum(forward(x, g, b).0.data(), weights.data());
    let case = (shape, seed);
    expect_gradient("batch norm dx", &case, &x, &grads.dx.unwrap(), CURVED_STEP, |v| {
        loss(&tensor(shape, v), &gamma, &beta)
    })?;
    expect_gradient("batch norm dgamma", &case, &gamma, &grads.dw.unwrap(), LINEAR_STEP, |v| {
        loss(&x, &tensor(&[c], v), &beta)
    })?;
    expect_gradient("batch norm dbeta", &case, &beta, &grads.db.unwrap(), LINEAR_STEP, |v| {
        loss(&x, &gamma, &tensor(&[c], v))
    })
}

#[test]
fn gradcheck_batch_norm_dx_dgamma_dbeta_edge_cases() {
    // Two values per channel (the fewest training allows), one channel, [N, F], and LeNet-like planes.
    for shape in [&[2, 1][..], &[1, 3, 1, 2], &[2, 1, 3, 3], &[5, 4], &[3, 6, 5, 5], &[8, 2, 1, 1]] {
        check_batch_norm(shape, 11).unwrap();
    }
}

/// Dropout is linear in x with a fixed mask: dx must be that map's transpose.
fn check_dropout(shape: &[usize], p: f64, seed: u64) -> Result<(), TestCaseError> {
    let nn = Naive::<f64>::new();
    let params = Dropout { p, seed, step: seed / 3 };
    let x = random(shape, seed, -1.0, 1.0);
    let weights = random(shape, seed + 1, -1.0, 1.0);
    let dx = nn.dropout_backward(&weights, &params).unwrap();
    let loss = |v: &[f64]| weighted_sum(nn.dropout_forward(&tensor(shape, v), &params).unwrap().data(), weights.data());
    expect_gradient("dropout dx", &(shape, p, seed), &x, &dx, LINEAR_STEP, loss)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gradcheck_batch_norm_random(nchw in any::<bool>(), n in 1..=4usize, c in 1..=4usize, hw in 1..=4usize, seed in any::<u32>()) {
        let shape = if nchw { vec![n, c, hw, hw + 1] } else { vec![n + 1, c] };
        check_batch_norm(&shape, seed as u64)?;
    }

    #[test]
    fn gradcheck_dropout_random(shape in prop::collection::vec(1..=5usize, 1..=4), p in 0.0..0.95f64, seed in any::<u32>()) {
        check_dropout(&shape, p, seed as u64)?;
    }
}

// ---------------------------------------------------------------- activations and loss

/// relu away from its kink: |x| ≥ 0.01, far beyond the step.
fn check_relu(shape: &[usize], seed: u64) -> Result<(), TestCaseError> {
    let nn = Naive::<f64>::new();
    let mut x = random(shape, seed, -1.0, 1.0);
    for v in x.data_mut() {
        *v = v.signum() * (v.abs() + 0.01);
    }
    let weights = random(shape, seed + 1, -1.0, 1.0);
    let dx = nn.relu_backward(&x, &weights).unwrap();
    let loss = |v: &[f64]| weighted_sum(nn.relu_forward(&tensor(shape, v)).unwrap().data(), weights.data());
    expect_gradient("relu dx", &(shape, seed), &x, &dx, LINEAR_STEP, loss)
}

fn check_sigmoid(shape: &[usize], seed: u64) -> Result<(), TestCaseError> {
    let nn = Naive::<f64>::new();
    let x = random(shape, seed, -4.0, 4.0);
    let weights = random(shape, seed + 1, -1.0, 1.0);
    let y = nn.sigmoid_forward(&x).unwrap();
    let dx = nn.sigmoid_backward(&y, &weights).unwrap();
    let loss = |v: &[f64]| weighted_sum(nn.sigmoid_forward(&tensor(shape, v)).unwrap().data(), weights.data());
    expect_gradient("sigmoid dx", &(shape, seed), &x, &dx, CURVED_STEP, loss)
}

/// The loss is already a scalar: the check is on dlogits = ∂loss/∂logits.
/// Random logits stay within ±5: the loss carries an absolute rounding of
/// ε·max|z|, and with a confidently right label every dlogit is of order
/// e^(−2·spread), so wider spreads measure f64 rounding, not the gradient.
fn check_softmax(batch: usize, classes: usize, spread: f64, seed: u64) -> Result<(), TestCaseError> {
    let nn = Naive::<f64>::new();
    let logits = random(&[batch, classes], seed, -spread, spread);
    let mut rng = SplitMix64::new(seed + 1);
    let labels: Vec<usize> = (0..batch).map(|_| rng.below(classes)).collect();
    let (_, dlogits) = nn.softmax_cross_entropy(&logits, &labels).unwrap();
    let loss = |v: &[f64]| nn.softmax_cross_entropy(&tensor(&[batch, classes], v), &labels).unwrap().0;
    expect_gradient(
        "softmax cross-entropy dlogits",
        &(batch, classes, spread, seed),
        &logits,
        &dlogits,
        CURVED_STEP,
        loss,
    )
}

#[test]
fn gradcheck_relu_sigmoid_softmax_edge_cases() {
    check_relu(&[1], 1).unwrap();
    check_relu(&[2, 3, 4, 5], 2).unwrap();
    check_sigmoid(&[1], 3).unwrap();
    check_sigmoid(&[2, 3, 4, 5], 4).unwrap();
    // One class: the loss is 0 whatever the logit, and so is its gradient.
    check_softmax(3, 1, 2.0, 5).unwrap();
    check_softmax(1, 10, 4.0, 6).unwrap();
    // Large logits: the max shift keeps the loss finite and smooth.
    check_softmax(4, 10, 40.0, 7).unwrap();
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gradcheck_relu_dx_away_from_zero(shape in prop::collection::vec(1..=4usize, 1..=3), seed in any::<u32>()) {
        check_relu(&shape, seed as u64)?;
    }

    #[test]
    fn gradcheck_sigmoid_dx(shape in prop::collection::vec(1..=4usize, 1..=3), seed in any::<u32>()) {
        check_sigmoid(&shape, seed as u64)?;
    }

    #[test]
    fn gradcheck_softmax_cross_entropy_dlogits(batch in 1..=5usize, classes in 1..=12usize, spread in 0.1..5.0f64, seed in any::<u32>()) {
        check_softmax(batch, classes, spread, seed as u64)?;
    }
}
