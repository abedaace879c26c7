//! Invalid input fails exactly where the reference fails. Problems are
//! drawn loosely (zero or mismatched dimensions, wrong ranks, zero strides,
//! windows, dilations, excess padding, bad labels, bad optimiser state or
//! hyper-parameters), so about half are invalid; for each op the backend
//! and `Naive::<f64>` must agree on `is_err()`, and where both succeed, on
//! the output shapes.
//!
//! An `upload` the backend refuses (an empty tensor on a device that cannot
//! allocate zero bytes) counts as the op failing; every op refuses empty
//! operands anyway, which the comparison then confirms.

use std::fmt::Debug;

use kernels_core::{Backend, Conv2d, GradRequest, Optimizer, OptimizerState, Pool2d, PoolKind, Shaped, Tensor};
use proptest::prelude::*;

use super::problems::random;
use super::{Check, Ctx, reference, run};

/// A shape of rank 4 most of the time, else rank 3 or 5; dims in 0..=max.
fn loose_shape(max: usize) -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![6 => prop::collection::vec(0..=max, 4), 1 => prop::collection::vec(0..=max, 3..=5)]
}

/// `shape`, or with one dimension off by one (wrapping 0 to 1).
fn maybe_perturbed(shape: Vec<usize>, perturb: Option<usize>) -> Vec<usize> {
    let mut shape = shape;
    if let Some(i) = perturb {
        if !shape.is_empty() {
            let i = i % shape.len();
            shape[i] = if shape[i] == 0 { 1 } else { shape[i] + 1 };
        }
    }
    shape
}

/// What both sides returned: the output shapes, or that it failed.
type Outcome = Option<Vec<Vec<usize>>>;

fn agree(ctx: &Ctx, what: &str, backend: &Outcome, reference: &Outcome, errors: impl Debug) -> Check {
    if backend != reference {
        return Err(ctx.fail(format!("{what}: backend {backend:?}, reference {reference:?} ({errors:?})")));
    }
    Ok(())
}

/// Uploads every host tensor; `None` when the backend refuses one.
fn upload_all<B: Backend<Elem = f32>>(backend: &B, hosts: &[&Tensor<f32>]) -> Option<Vec<B::Tensor>> {
    hosts.iter().map(|h| backend.upload(h).ok()).collect()
}

#[derive(Debug, Clone)]
pub struct LooseConv {
    x: Vec<usize>,
    w: Vec<usize>,
    bias: Option<Vec<usize>>,
    params: Conv2d,
    dy_perturb: Option<usize>,
}

fn loose_conv() -> impl Strategy<Value = LooseConv> {
    let params = ([0..=2usize, 0..=2usize], [0..=2usize, 0..=2usize], [0..=2usize, 0..=2usize]);
    let bias = prop_oneof![Just(None), Just(Some(Vec::new())), prop::collection::vec(0..=4usize, 1..=2).prop_map(Some)];
    (loose_shape(5), loose_shape(4), any::<bool>(), bias, params, prop::option::of(0..4usize)).prop_map(
        |(x, mut w, same_channels, bias, (stride, padding, dilation), dy_perturb)| {
            if same_channels && x.len() > 1 && w.len() > 1 {
                w[1] = x[1];
            }
            // Empty marks "the right bias shape [k]".
            let bias = bias.map(|b| if b.is_empty() { w.first().map_or(vec![1], |&k| vec![k]) } else { b });
            LooseConv { x, w, bias, params: Conv2d { stride, padding, dilation }, dy_perturb }
        },
    )
}

fn conv<B: Backend<Elem = f32>>(backend: &B, p: &LooseConv) -> Check {
    let ctx = Ctx { op: "conv2d (invalid)", problem: p };
    let nn = reference();
    let (x, w) = (random(&p.x, 1), random(&p.w, 2));
    let b = p.bias.as_ref().map(|s| random(s, 3));
    let y_shape = kernels_core::ConvGeometry::new(&p.x, &p.w, None, &p.params).map(|g| g.y_shape().to_vec());
    let dy = random(&maybe_perturbed(y_shape.unwrap_or_else(|_| vec![1, 1, 1, 1]), p.dy_perturb), 4);

    let mut hosts = vec![&x, &w, &dy];
    hosts.extend(b.as_ref());
    let (forward, backward): (Outcome, Outcome) = match upload_all(backend, &hosts) {
        Some(dev) => {
            let forward = backend.conv2d_forward(&dev[0], &dev[1], dev.get(3), &p.params);
            let backward = backend.conv2d_backward(&dev[0], &dev[1], &dev[2], &p.params, GradRequest::ALL);
            (
                forward.ok().map(|y| vec![y.shape().to_vec()]),
                backward.ok().map(|g| [g.dx, g.dw, g.db].iter().flatten().map(|t| t.shape().to_vec()).collect()),
            )
        }
        None => (None, None),
    };
    let b64 = b.as_ref().map(|b| b.cast::<f64>());
    let ref_forward = nn.conv2d_forward(&x.cast(), &w.cast(), b64.as_ref(), &p.params);
    let ref_backward = nn.conv2d_backward(&x.cast(), &w.cast(), &dy.cast(), &p.params, GradRequest::ALL);
    let errors = (ref_forward.as_ref().err().cloned(), ref_backward.as_ref().err().cloned());
    let ref_forward: Outcome = ref_forward.as_ref().ok().map(|y| vec![y.shape().to_vec()]);
    let ref_backward: Outcome =
        ref_backward.ok().map(|g| [g.dx, g.dw, g.db].iter().flatten().map(|t| t.shape().to_vec()).collect());
    agree(&ctx, "forward", &forward, &ref_forward, errors.0)?;
    agree(&ctx, "backward", &backward, &ref_backward, errors.1)
}

#[derive(Debug, Clone)]
pub struct LoosePool {
    x: Vec<usize>,
    params: Pool2d,
    dy_perturb: Option<usize>,
}

fn loose_pool() -> impl Strategy<Value = LoosePool> {
    let params = (any::<bool>(), [0..=4usize, 0..=4usize], [0..=3usize, 0..=3usize], [0..=3usize, 0..=3usize]);
    (loose_shape(6), params, prop::option::of(0..4usize)).prop_map(|(x, (max, window, stride, padding), dy_perturb)| {
        let kind = if max { PoolKind::Max } else { PoolKind::Avg };
        LoosePool { x, params: Pool2d { kind, window, stride, padding }, dy_perturb }
    })
}

fn pool<B: Backend<Elem = f32>>(backend: &B, p: &LoosePool) -> Check {
    let ctx = Ctx { op: "pool2d (invalid)", problem: p };
    let nn = reference();
    let x = random(&p.x, 1);
    let y_shape = kernels_core::PoolGeometry::new(&p.x, &p.params).map(|g| g.y_shape().to_vec());
    let dy = random(&maybe_perturbed(y_shape.unwrap_or_else(|_| vec![1, 1, 1, 1]), p.dy_perturb), 2);
    let (forward, backward): (Outcome, Outcome) = match upload_all(backend, &[&x, &dy]) {
        Some(dev) => (
            backend.pool2d_forward(&dev[0], &p.params).ok().map(|y| vec![y.shape().to_vec()]),
            backend.pool2d_backward(&dev[0], &dev[1], &p.params).ok().map(|d| vec![d.shape().to_vec()]),
        ),
        None => (None, None),
    };
    let ref_forward = nn.pool2d_forward(&x.cast(), &p.params);
    let ref_backward = nn.pool2d_backward(&x.cast(), &dy.cast(), &p.params);
    let errors = (ref_forward.as_ref().err().cloned(), ref_backward.as_ref().err().cloned());
    agree(&ctx, "forward", &forward, &ref_forward.ok().map(|y| vec![y.shape().to_vec()]), errors.0)?;
    agree(&ctx, "backward", &backward, &ref_backward.ok().map(|d| vec![d.shape().to_vec()]), errors.1)
}

#[derive(Debug, Clone)]
pub struct LooseLinear {
    x: Vec<usize>,
    w: Vec<usize>,
    bias: Option<Vec<usize>>,
    dy: Vec<usize>,
}

fn loose_linear() -> impl Strategy<Value = LooseLinear> {
    let rank2 =
        || prop_oneof![6 => prop::collection::vec(0..=5usize, 2), 1 => prop::collection::vec(0..=5usize, 1..=3)];
    let bias = prop_oneof![Just(None), Just(Some(Vec::new())), prop::collection::vec(0..=5usize, 1..=2).prop_map(Some)];
    (rank2(), rank2(), any::<bool>(), bias, prop::option::of(0..2usize)).prop_map(|(x, mut w, same, bias, perturb)| {
        if same && x.len() > 1 && w.len() > 1 {
            w[1] = x[1];
        }
        let bias = bias.map(|b| if b.is_empty() { w.first().map_or(vec![1], |&o| vec![o]) } else { b });
        let dy = maybe_perturbed(vec![x.first().copied().unwrap_or(1), w.first().copied().unwrap_or(1)], perturb);
        LooseLinear { x, w, bias, dy }
    })
}

fn linear<B: Backend<Elem = f32>>(backend: &B, p: &LooseLinear) -> Check {
    let ctx = Ctx { op: "linear (invalid)", problem: p };
    let nn = reference();
    let (x, w, dy) = (random(&p.x, 1), random(&p.w, 2), random(&p.dy, 3));
    let b = p.bias.as_ref().map(|s| random(s, 4));
    let mut hosts = vec![&x, &w, &dy];
    hosts.extend(b.as_ref());
    let shapes = |g: kernels_core::Grads<_>| -> Vec<Vec<usize>> {
        [g.dx, g.dw, g.db].iter().flatten().map(|t: &B::Tensor| t.shape().to_vec()).collect()
    };
    let (forward, backward): (Outcome, Outcome) = match upload_all(backend, &hosts) {
        Some(dev) => (
            backend.linear_forward(&dev[0], &dev[1], dev.get(3)).ok().map(|y| vec![y.shape().to_vec()]),
            backend.linear_backward(&dev[0], &dev[1], &dev[2], GradRequest::ALL).ok().map(shapes),
        ),
        None => (None, None),
    };
    let b64 = b.as_ref().map(|b| b.cast::<f64>());
    let ref_forward = nn.linear_forward(&x.cast(), &w.cast(), b64.as_ref());
    let ref_backward = nn.linear_backward(&x.cast(), &w.cast(), &dy.cast(), GradRequest::ALL);
    let errors = (ref_forward.as_ref().err().cloned(), ref_backward.as_ref().err().cloned());
    let ref_backward: Outcome =
        ref_backward.ok().map(|g| [g.dx, g.dw, g.db].iter().flatten().map(|t| t.shape().to_vec()).collect());
    agree(&ctx, "forward", &forward, &ref_forward.ok().map(|y| vec![y.shape().to_vec()]), errors.0)?;
    agree(&ctx, "backward", &backward, &ref_backward, errors.1)
}

#[derive(Debug, Clone)]
pub struct LooseElementwise {
    x: Vec<usize>,
    dy: Vec<usize>,
    labels: Vec<usize>,
}

fn loose_elementwise() -> impl Strategy<Value = LooseElementwise> {
    let shape = || prop::collection::vec(0..=3usize, 0..=3);
    (shape(), prop::option::of(shape()), prop::collection::vec(0..=4usize, 0..=4)).prop_map(|(x, dy, labels)| {
        let dy = dy.unwrap_or_else(|| x.clone());
        LooseElementwise { x, dy, labels }
    })
}

/// relu, sigmoid (dy shaped like x or not) and softmax cross-entropy
/// (logits x of any rank, labels of any count and range).
fn elementwise<B: Backend<Elem = f32>>(backend: &B, p: &LooseElementwise) -> Check {
    let ctx = Ctx { op: "relu/sigmoid/softmax (invalid)", problem: p };
    let nn = reference();
    let (x, dy) = (random(&p.x, 1), random(&p.dy, 2));
    let one = |r: kernels_core::Result<B::Tensor>| r.ok().map(|t| vec![t.shape().to_vec()]);
    let ref_one = |r: kernels_core::Result<Tensor<f64>>| r.ok().map(|t| vec![t.shape().to_vec()]);
    let (x64, dy64) = (x.cast::<f64>(), dy.cast::<f64>());
    let outcomes: [(&str, Outcome, Outcome); 5] = match upload_all(backend, &[&x, &dy]) {
        Some(dev) => [
            ("relu", one(backend.relu_forward(&dev[0])), ref_one(nn.relu_forward(&x64))),
            ("relu backward", one(backend.relu_backward(&dev[0], &dev[1])), ref_one(nn.relu_backward(&x64, &dy64))),
            ("sigmoid", one(backend.sigmoid_forward(&dev[0])), ref_one(nn.sigmoid_forward(&x64))),
            (
                "sigmoid backward",
                one(backend.sigmoid_backward(&dev[0], &dev[1])),
                ref_one(nn.sigmoid_backward(&x64, &dy64)),
            ),
            (
                "softmax cross-entropy",
                one(backend.softmax_cross_entropy(&dev[0], &p.labels).map(|(_, d)| d)),
                ref_one(nn.softmax_cross_entropy(&x64, &p.labels).map(|(_, d)| d)),
            ),
        ],
        None => [
            ("relu", None, ref_one(nn.relu_forward(&x64))),
            ("relu backward", None, ref_one(nn.relu_backward(&x64, &dy64))),
            ("sigmoid", None, ref_one(nn.sigmoid_forward(&x64))),
            ("sigmoid backward", None, ref_one(nn.sigmoid_backward(&x64, &dy64))),
            ("softmax cross-entropy", None, ref_one(nn.softmax_cross_entropy(&x64, &p.labels).map(|(_, d)| d))),
        ],
    };
    for (what, backend_outcome, reference_outcome) in outcomes {
        agree(&ctx, what, &backend_outcome, &reference_outcome, ())?;
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct LooseStep {
    optimizer: Optimizer,
    param: Vec<usize>,
    grad: Vec<usize>,
    /// Shapes of the state slots handed to the step.
    slots: Vec<Vec<usize>>,
}

/// Hyper-parameters that are sometimes out of range (lr ≤ 0, NaN, a
/// momentum or beta of 1, a negative eps or weight decay).
fn loose_optimizer() -> impl Strategy<Value = Optimizer> {
    let lr =
        prop_oneof![4 => 1e-3..0.5f64, 1 => Just(0.0), 1 => Just(-0.1), 1 => Just(f64::NAN), 1 => Just(f64::INFINITY)];
    let unit = prop_oneof![4 => 0.0..0.99f64, 1 => Just(1.0), 1 => Just(-0.1), 1 => Just(f64::NAN)];
    let eps = prop_oneof![4 => Just(1e-8), 1 => Just(0.0), 1 => Just(-1e-8)];
    let wd = prop_oneof![4 => Just(0.0), 1 => Just(0.01), 1 => Just(-0.01)];
    (0..6usize, lr, unit.clone(), unit, eps, wd).prop_map(|(kind, lr, a, b, eps, weight_decay)| match kind {
        0 => Optimizer::Sgd { lr, weight_decay },
        1 => Optimizer::Momentum { lr, momentum: a, weight_decay },
        2 => Optimizer::Nesterov { lr, momentum: a, weight_decay },
        3 => Optimizer::AdaGrad { lr, eps, weight_decay },
        4 => Optimizer::RmsProp { lr, alpha: a, eps, weight_decay },
        _ => Optimizer::Adam { lr, beta1: a, beta2: b, eps, weight_decay },
    })
}

fn loose_step() -> impl Strategy<Value = LooseStep> {
    let shape = || prop::collection::vec(1..=3usize, 1..=2);
    let extra = (prop::option::of(shape()), 0..3usize, prop::option::of(shape()));
    (loose_optimizer(), shape(), extra).prop_map(|(optimizer, param, (grad, slot_delta, odd_slot))| {
        let grad = grad.unwrap_or_else(|| param.clone());
        // Mostly the right slot count (0, 1 or 2 by rule), sometimes one
        // more or one less; sometimes one slot of the wrong shape.
        let count = match slot_delta {
            0 => optimizer.state_slots() + 1,
            1 => optimizer.state_slots().saturating_sub(1),
            _ => optimizer.state_slots(),
        };
        let mut slots = vec![param.clone(); count];
        if let (Some(odd), Some(first)) = (odd_slot, slots.first_mut()) {
            *first = odd;
        }
        LooseStep { optimizer, param, grad, slots }
    })
}

fn optimizer_step<B: Backend<Elem = f32>>(backend: &B, p: &LooseStep) -> Check {
    let ctx = Ctx { op: "optimizer (invalid)", problem: p };
    let nn = reference();
    let state_ok = backend.optimizer_state(&p.optimizer, &p.param).is_ok();
    let ref_state_ok = nn.optimizer_state(&p.optimizer, &p.param).is_ok();
    if state_ok != ref_state_ok {
        return Err(ctx.fail(format!("optimizer_state: backend ok {state_ok}, reference ok {ref_state_ok}")));
    }
    let (param, grad) = (random(&p.param, 1), random(&p.grad, 2));
    let mut dev_param = ctx.up(backend, &param)?;
    let dev_grad = ctx.up(backend, &grad)?;
    let slots = p.slots.iter().map(|s| ctx.up(backend, &Tensor::zeros(s))).collect::<Result<Vec<_>, _>>()?;
    let mut state = OptimizerState { optimizer: p.optimizer, step: 0, slots };
    let step_ok = backend.optimizer_step(&mut dev_param, &dev_grad, &mut state).is_ok();
    let ref_slots = p.slots.iter().map(|s| Tensor::<f64>::zeros(s)).collect();
    let mut ref_state = OptimizerState { optimizer: p.optimizer, step: 0, slots: ref_slots };
    let ref_step = nn.optimizer_step(&mut param.cast(), &grad.cast(), &mut ref_state);
    if step_ok != ref_step.is_ok() {
        return Err(ctx.fail(format!("optimizer_step: backend ok {step_ok}, reference {ref_step:?}")));
    }
    Ok(())
}

pub fn invalid_suite<B: Backend<Elem = f32>>(backend: &B) {
    run("conv2d invalid input", Vec::new(), loose_conv(), |p| conv(backend, p));
    run("pool2d invalid input", Vec::new(), loose_pool(), |p| pool(backend, p));
    run("linear invalid input", Vec::new(), loose_linear(), |p| linear(backend, p));
    run("element-wise and softmax invalid input", Vec::new(), loose_elementwise(), |p| elementwise(backend, p));
    run("optimizer invalid input", Vec::new(), loose_step(), |p| optimizer_step(backend, p));
}
