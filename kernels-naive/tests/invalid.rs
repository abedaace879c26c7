//! Invalid parameters and mismatched shapes, generated for every op: each
//! call must return the right `Error` variant naming the op, never panic.
//! Each property starts from a random valid problem and breaks one thing.

use kernels_core::{
    Backend, Conv2d, ConvGeometry, Error, GradRequest, LinearGeometry, Optimizer, OptimizerState, Pool2d, PoolGeometry,
    PoolKind, Tensor,
};
use kernels_naive::Naive;
use proptest::prelude::*;
use proptest::test_runner::Config;

/// proptest's default: 256 cases per property, or PROPTEST_CASES.
fn config() -> Config {
    Config::default()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Shape,
    Param,
    Empty,
    Label,
}

/// Fails the case unless `result` is the error `kind` and names `op`.
fn expect_err<T>(result: kernels_core::Result<T>, kind: Kind, op: &str) -> Result<(), TestCaseError> {
    let err = match result {
        Ok(_) => return Err(TestCaseError::fail(format!("{op}: expected a {kind:?} error, got Ok"))),
        Err(e) => e,
    };
    let got = match &err {
        Error::Shape { .. } => Kind::Shape,
        Error::Param { .. } => Kind::Param,
        Error::EmptyOutput { .. } => Kind::Empty,
        Error::Label { .. } => Kind::Label,
        _ => return Err(TestCaseError::fail(format!("{op}: unexpected error {err}"))),
    };
    prop_assert_eq!(got, kind, "{}", err);
    prop_assert!(err.to_string().starts_with(op), "message must name {}: {}", op, err);
    Ok(())
}

fn zeros(shape: &[usize]) -> Tensor<f64> {
    Tensor::zeros(shape)
}

// ---------------------------------------------------------------- conv2d

#[derive(Debug, Clone, Copy)]
enum ConvBreak {
    ZeroStride(usize),
    ZeroDilation(usize),
    KernelTooLarge(usize),
    ChannelMismatch,
    InputRank(bool),
    WeightRank(bool),
    BiasShape(bool),
    ZeroDim(usize),
    WrongDy(usize),
}

fn conv_break() -> impl Strategy<Value = ConvBreak> {
    prop_oneof![
        (0..2usize).prop_map(ConvBreak::ZeroStride),
        (0..2usize).prop_map(ConvBreak::ZeroDilation),
        (0..2usize).prop_map(ConvBreak::KernelTooLarge),
        Just(ConvBreak::ChannelMismatch),
        any::<bool>().prop_map(ConvBreak::InputRank),
        any::<bool>().prop_map(ConvBreak::WeightRank),
        any::<bool>().prop_map(ConvBreak::BiasShape),
        (0..4usize).prop_map(ConvBreak::ZeroDim),
        (0..4usize).prop_map(ConvBreak::WrongDy),
    ]
}

/// Drops the last dimension or adds a trailing 1.
fn rerank(shape: &[usize], longer: bool) -> Vec<usize> {
    let mut s = shape.to_vec();
    if longer {
        s.push(1)
    } else {
        s.pop();
    }
    s
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn invalid_conv2d_params_and_shapes_give_errors(
        n in 1..=2usize, c in 1..=3usize, k in 1..=3usize, r in 1..=3usize, s in 1..=3usize,
        extra in [0..=3usize, 0..=3usize], stride in [1..=2usize, 1..=2usize], padding in [0..=1usize, 0..=1usize],
        broken in conv_break(),
    ) {
        let nn = Naive::<f64>::new();
        let mut params = Conv2d { stride, padding, dilation: [1, 1] };
        let (mut x, mut w, mut b) = (vec![n, c, r + extra[0], s + extra[1]], vec![k, c, r, s], vec![k]);
        let y = ConvGeometry::new(&x, &w, Some(&b), &params).unwrap().y_shape().to_vec();
        let mut dy = y.clone();
        let kind = match broken {
            ConvBreak::ZeroStride(axis) => { params.stride[axis] = 0; Kind::Param }
            ConvBreak::ZeroDilation(axis) => { params.dilation[axis] = 0; Kind::Param }
            ConvBreak::KernelTooLarge(axis) => { w[2 + axis] = x[2 + axis] + 2 * padding[axis] + 1; Kind::Empty }
            ConvBreak::ChannelMismatch => { w[1] = c + 1; Kind::Shape }
            ConvBreak::InputRank(longer) => { x = rerank(&x, longer); Kind::Shape }
            ConvBreak::WeightRank(longer) => { w = rerank(&w, longer); Kind::Shape }
            ConvBreak::BiasShape(longer) => { b = if longer { vec![k + 1] } else { vec![k, 1] }; Kind::Shape }
            ConvBreak::ZeroDim(i) => { x[i] = 0; Kind::Shape }
            ConvBreak::WrongDy(i) => { dy[i] += 1; Kind::Shape }
        };
        let (xt, wt, bt, dyt) = (zeros(&x), zeros(&w), zeros(&b), zeros(&dy));
        let forward = nn.conv2d_forward(&xt, &wt, Some(&bt), &params);
        let backward = nn.conv2d_backward(&xt, &wt, &dyt, &params, GradRequest::ALL);
        match broken {
            // Only the forward takes a bias; only the backward takes dy.
            ConvBreak::BiasShape(_) => { expect_err(forward, kind, "conv2d")?; prop_assert!(backward.is_ok()); }
            ConvBreak::WrongDy(_) => { prop_assert!(forward.is_ok()); expect_err(backward, kind, "conv2d")?; }
            _ => { expect_err(forward, kind, "conv2d")?; expect_err(backward, kind, "conv2d")?; }
        }
    }
}

// ---------------------------------------------------------------- pool2d

#[derive(Debug, Clone, Copy)]
enum PoolBreak {
    ZeroWindow(usize),
    ZeroStride(usize),
    PaddingOverHalfWindow(usize),
    WindowTooLarge(usize),
    InputRank(bool),
    ZeroDim(usize),
    WrongDy(usize),
}

fn pool_break() -> impl Strategy<Value = PoolBreak> {
    prop_oneof![
        (0..2usize).prop_map(PoolBreak::ZeroWindow),
        (0..2usize).prop_map(PoolBreak::ZeroStride),
        (0..2usize).prop_map(PoolBreak::PaddingOverHalfWindow),
        (0..2usize).prop_map(PoolBreak::WindowTooLarge),
        any::<bool>().prop_map(PoolBreak::InputRank),
        (0..4usize).prop_map(PoolBreak::ZeroDim),
        (0..4usize).prop_map(PoolBreak::WrongDy),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn invalid_pool2d_params_and_shapes_give_errors(
        n in 1..=2usize, c in 1..=3usize, window in [1..=3usize, 1..=3usize], stride in [1..=3usize, 1..=3usize],
        extra in [0..=3usize, 0..=3usize], max in any::<bool>(), broken in pool_break(),
    ) {
        let nn = Naive::<f64>::new();
        let kind = if max { PoolKind::Max } else { PoolKind::Avg };
        let mut params = Pool2d { kind, window, stride, padding: [0, 0] };
        let mut x = vec![n, c, window[0] + extra[0], window[1] + extra[1]];
        let mut dy = PoolGeometry::new(&x, &params).unwrap().y_shape().to_vec();
        let expected = match broken {
            PoolBreak::ZeroWindow(axis) => { params.window[axis] = 0; Kind::Param }
            PoolBreak::ZeroStride(axis) => { params.stride[axis] = 0; Kind::Param }
            PoolBreak::PaddingOverHalfWindow(axis) => { params.padding[axis] = window[axis] / 2 + 1; Kind::Param }
            PoolBreak::WindowTooLarge(axis) => { params.window[axis] = x[2 + axis] + 1; Kind::Empty }
            PoolBreak::InputRank(longer) => { x = rerank(&x, longer); Kind::Shape }
            PoolBreak::ZeroDim(i) => { x[i] = 0; Kind::Shape }
            PoolBreak::WrongDy(i) => { dy[i] += 1; Kind::Shape }
        };
        let (xt, dyt) = (zeros(&x), zeros(&dy));
        let forward = nn.pool2d_forward(&xt, &params);
        let backward = nn.pool2d_backward(&xt, &dyt, &params);
        if let PoolBreak::WrongDy(_) = broken {
            prop_assert!(forward.is_ok());
        } else {
            expect_err(forward, expected, "pool2d")?;
        }
        expect_err(backward, expected, "pool2d")?;
    }
}

// ---------------------------------------------------------------- linear

#[derive(Debug, Clone, Copy)]
enum LinearBreak {
    FeatureMismatch,
    InputRank(bool),
    WeightRank(bool),
    BiasShape(bool),
    ZeroDim(usize),
    WrongDy(usize),
}

fn linear_break() -> impl Strategy<Value = LinearBreak> {
    prop_oneof![
        Just(LinearBreak::FeatureMismatch),
        any::<bool>().prop_map(LinearBreak::InputRank),
        any::<bool>().prop_map(LinearBreak::WeightRank),
        any::<bool>().prop_map(LinearBreak::BiasShape),
        (0..2usize).prop_map(LinearBreak::ZeroDim),
        (0..2usize).prop_map(LinearBreak::WrongDy),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn invalid_linear_shapes_give_errors(batch in 1..=4usize, inputs in 1..=6usize, outputs in 1..=6usize, broken in linear_break()) {
        let nn = Naive::<f64>::new();
        let (mut x, mut w, mut b, mut dy) = (vec![batch, inputs], vec![outputs, inputs], vec![outputs], vec![batch, outputs]);
        LinearGeometry::new(&x, &w, Some(&b)).unwrap();
        match broken {
            LinearBreak::FeatureMismatch => w[1] = inputs + 1,
            LinearBreak::InputRank(longer) => x = rerank(&x, longer),
            LinearBreak::WeightRank(longer) => w = rerank(&w, longer),
            LinearBreak::BiasShape(longer) => b = if longer { vec![outputs + 1] } else { vec![outputs, 1] },
            LinearBreak::ZeroDim(i) => x[i] = 0,
            LinearBreak::WrongDy(i) => dy[i] += 1,
        }
        let (xt, wt, bt, dyt) = (zeros(&x), zeros(&w), zeros(&b), zeros(&dy));
        let forward = nn.linear_forward(&xt, &wt, Some(&bt));
        let backward = nn.linear_backward(&xt, &wt, &dyt, GradRequest::ALL);
        match broken {
            LinearBreak::BiasShape(_) => { expect_err(forward, Kind::Shape, "linear")?; prop_assert!(backward.is_ok()); }
            LinearBreak::WrongDy(_) => { prop_assert!(forward.is_ok()); expect_err(backward, Kind::Shape, "linear")?; }
            _ => { expect_err(forward, Kind::Shape, "linear")?; expect_err(backward, Kind::Shape, "linear")?; }
        }
    }

    #[test]
    fn invalid_relu_and_sigmoid_shapes_give_errors(shape in prop::collection::vec(1..=4usize, 1..=4), axis in 0..4usize, empty in any::<bool>()) {
        let nn = Naive::<f64>::new();
        let mut other = shape.clone();
        let i = axis % other.len();
        other[i] += 1;
        let (x, dy) = (zeros(&shape), zeros(&other));
        expect_err(nn.relu_backward(&x, &dy), Kind::Shape, "relu_backward")?;
        expect_err(nn.sigmoid_backward(&x, &dy), Kind::Shape, "sigmoid_backward")?;
        // An empty tensor (a zero dimension, or rank 0) is refused too.
        let mut hollow = shape.clone();
        if empty { hollow[i] = 0 } else { hollow.clear() }
        let h = zeros(&hollow);
        expect_err(nn.relu_forward(&h), Kind::Shape, "relu")?;
        expect_err(nn.sigmoid_forward(&h), Kind::Shape, "sigmoid")?;
        expect_err(nn.relu_backward(&h, &h), Kind::Shape, "relu_backward")?;
        expect_err(nn.sigmoid_backward(&h, &h), Kind::Shape, "sigmoid_backward")?;
    }

    #[test]
    fn invalid_softmax_labels_and_shapes_give_errors(batch in 1..=4usize, classes in 1..=6usize, which in 0..4usize, at in 0..4usize) {
        let nn = Naive::<f64>::new();
        let logits = zeros(&[batch, classes]);
        let mut labels = vec![0usize; batch];
        let op = "softmax_cross_entropy";
        match which {
            0 => {
                labels[at % batch] = classes + at;
                expect_err(nn.softmax_cross_entropy(&logits, &labels), Kind::Label, op)?;
            }
            1 => {
                labels.push(0);
                expect_err(nn.softmax_cross_entropy(&logits, &labels), Kind::Shape, op)?;
                labels.truncate(batch - 1);
                expect_err(nn.softmax_cross_entropy(&logits, &labels), Kind::Shape, op)?;
            }
            2 => expect_err(nn.softmax_cross_entropy(&zeros(&[batch, classes, 1]), &labels), Kind::Shape, op)?,
            _ => expect_err(nn.softmax_cross_entropy(&zeros(&[batch, 0]), &labels), Kind::Shape, op)?,
        }
    }
}

// ---------------------------------------------------------------- optimisers

fn rule(kind: usize, lr: f64, a: f64, eps: f64, weight_decay: f64) -> Optimizer {
    match kind % 6 {
        0 => Optimizer::Sgd { lr, weight_decay },
        1 => Optimizer::Momentum { lr, momentum: a, weight_decay },
        2 => Optimizer::Nesterov { lr, momentum: a, weight_decay },
        3 => Optimizer::AdaGrad { lr, eps, weight_decay },
        4 => Optimizer::RmsProp { lr, alpha: a, eps, weight_decay },
        _ => Optimizer::Adam { lr, beta1: a, beta2: a, eps, weight_decay },
    }
}

/// Optimisers with one hyper-parameter out of range: lr ≤ 0 or not finite,
/// negative or non-finite weight decay, a momentum / alpha / beta outside
/// [0, 1), eps ≤ 0.
fn bad_optimizer() -> impl Strategy<Value = Optimizer> {
    let bad_lr = prop_oneof![Just(0.0), Just(-0.5), Just(f64::NAN), Just(f64::INFINITY)];
    let bad_decay = prop_oneof![Just(-1e-3), Just(f64::NAN), Just(f64::INFINITY)];
    let bad_unit = prop_oneof![Just(1.0), Just(1.5), Just(-0.1), Just(f64::NAN)];
    let bad_eps = prop_oneof![Just(0.0), Just(-1e-8), Just(f64::NAN)];
    // Rules 1, 2, 4, 5 have a coefficient in [0, 1); 3, 4, 5 have an eps.
    prop_oneof![
        (0..6usize, bad_lr).prop_map(|(kind, lr)| rule(kind, lr, 0.9, 1e-8, 0.0)),
        (0..6usize, bad_decay).prop_map(|(kind, wd)| rule(kind, 0.1, 0.9, 1e-8, wd)),
        (prop::sample::select(vec![1usize, 2, 4, 5]), bad_unit).prop_map(|(kind, a)| rule(kind, 0.1, a, 1e-8, 0.0)),
        (3..6usize, bad_eps).prop_map(|(kind, eps)| rule(kind, 0.1, 0.9, eps, 0.0)),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn invalid_optimizer_state_slots_and_grad_shapes_give_errors(
        kind in 0..6usize, shape in prop::collection::vec(1..=4usize, 1..=2), broken in 0..3usize,
    ) {
        let nn = Naive::<f64>::new();
        let good = rule(kind, 0.1, 0.9, 1e-8, 0.0);
        let mut param = zeros(&shape);
        let mut other = shape.clone();
        other[0] += 1;
        let op = "optimizer_step";
        let mut state = nn.optimizer_state(&good, &shape).unwrap();
        match broken {
            // One slot too many or too few.
            0 => {
                if state.slots.is_empty() { state.slots.push(zeros(&shape)) } else { state.slots.pop(); }
                expect_err(nn.optimizer_step(&mut param, &zeros(&shape), &mut state), Kind::Param, op)?;
            }
            // A gradient shaped unlike the parameter.
            1 => expect_err(nn.optimizer_step(&mut param, &zeros(&other), &mut state), Kind::Shape, op)?,
            // A state slot shaped unlike the parameter.
            _ => {
                let expected = if state.slots.is_empty() { Kind::Param } else { Kind::Shape };
                if state.slots.is_empty() { state.slots.push(zeros(&other)) } else { state.slots[0] = zeros(&other) }
                expect_err(nn.optimizer_step(&mut param, &zeros(&shape), &mut state), expected, op)?;
            }
        }
        prop_assert_eq!(state.step, 0, "a refused step must not advance the state");
    }

    #[test]
    fn invalid_optimizer_hyperparameters_give_errors(bad in bad_optimizer(), shape in prop::collection::vec(1..=4usize, 1..=2)) {
        let nn = Naive::<f64>::new();
        expect_err(nn.optimizer_state(&bad, &shape), Kind::Param, "optimizer")?;
        let mut state = OptimizerState { optimizer: bad, step: 0, slots: vec![zeros(&shape); bad.state_slots()] };
        expect_err(nn.optimizer_step(&mut zeros(&shape), &zeros(&shape), &mut state), Kind::Param, "optimizer")?;
    }
}

// ---------------------------------------------------------------- exec_* without the trait's checks

/// The `exec_*` methods are public: handed tensors that do not match the
/// geometry, the reference returns an error rather than indexing out of
/// bounds.
#[test]
fn exec_methods_refuse_tensors_that_do_not_match_the_geometry() {
    let nn = Naive::<f64>::new();
    let conv = ConvGeometry::new(&[1, 2, 5, 5], &[3, 2, 3, 3], None, &Conv2d::default()).unwrap();
    let (x, w, small) = (zeros(&[1, 2, 5, 5]), zeros(&[3, 2, 3, 3]), zeros(&[1, 1, 2, 2]));
    assert!(nn.exec_conv2d_forward(&conv, &small, &w, None).is_err());
    assert!(nn.exec_conv2d_forward(&conv, &x, &small, None).is_err());
    assert!(nn.exec_conv2d_forward(&conv, &x, &w, Some(&zeros(&[2]))).is_err());
    assert!(nn.exec_conv2d_backward(&conv, &x, &w, &small, GradRequest::ALL).is_err());
    let pool = PoolGeometry::new(&[1, 2, 5, 5], &Pool2d::new(PoolKind::Max, 2, 2, 0)).unwrap();
    assert!(nn.exec_pool2d_forward(&pool, &small).is_err());
    assert!(nn.exec_pool2d_backward(&pool, &x, &small).is_err());
    let linear = LinearGeometry::new(&[2, 3], &[4, 3], None).unwrap();
    assert!(nn.exec_linear_forward(&linear, &zeros(&[2, 4]), &zeros(&[4, 3]), None).is_err());
    assert!(
        nn.exec_linear_backward(&linear, &zeros(&[2, 3]), &zeros(&[4, 3]), &zeros(&[2, 3]), GradRequest::ALL).is_err()
    );
    assert!(nn.exec_relu_backward(&zeros(&[3]), &zeros(&[4])).is_err());
    assert!(nn.exec_sigmoid_backward(&zeros(&[3]), &zeros(&[4])).is_err());
    assert!(nn.exec_softmax_cross_entropy(&zeros(&[2, 3]), &[0, 3]).is_err());
    let sgd = Optimizer::sgd(0.1);
    let mut p = zeros(&[3]);
    assert!(nn.exec_optimizer_step(&sgd, &mut p, &zeros(&[4]), &mut [], 1).is_err());
    assert!(nn.exec_optimizer_step(&Optimizer::adam(0.1), &mut p, &zeros(&[3]), &mut [zeros(&[3])], 1).is_err());
    assert!(nn.exec_optimizer_step(&sgd, &mut p, &zeros(&[3]), &mut [], 0).is_err(), "steps are 1-based");
}
