//! Invalid input fails exactly where the reference fails. Each case starts
//! from a random valid problem and, half of the time, breaks one thing: a
//! zero stride, dilation or window, a kernel or window larger than the
//! padded input, excess pool padding, a channel / feature / batch mismatch,
//! a wrong rank, a zero dimension, a wrong dy or bias shape, labels out of
//! range or of the wrong count, optimiser state of the wrong count or
//! shape, hyper-parameters out of range. The backend and `Naive::<f64>`
//! must agree on `is_err()` for every op, and where both succeed, on the
//! output shapes.
//!
//! An `upload` the backend refuses (an empty tensor on a device that cannot
//! allocate zero bytes) counts as the op failing: every op refuses empty
//! operands, which the comparison then confirms.

use kernels_core::{Backend, GradRequest, Optimizer, OptimizerState, Shaped, Tensor};
use proptest::prelude::*;

use super::problems::{
    ConvProblem, ElementwiseProblem, LinearProblem, OptimizerProblem, PoolProblem, SoftmaxProblem, conv_problem,
    elementwise_problem, linear_problem, optimizer_problem, pool_problem, random, softmax_problem,
};
use super::{Check, Ctx, reference, run};

/// Output shapes of a call, or `None` when it failed.
type Outcome = Option<Vec<Vec<usize>>>;

fn shapes<T: Shaped>(tensors: &[Option<T>]) -> Vec<Vec<usize>> {
    tensors.iter().flatten().map(|t| t.shape().to_vec()).collect()
}

fn agree(ctx: &Ctx, what: &str, backend: Outcome, reference: Outcome) -> Check {
    if backend != reference {
        return Err(ctx.fail(format!("{what}: backend gave {backend:?}, reference {reference:?} (None = error)")));
    }
    Ok(())
}

/// Uploads every host tensor; `None` when the backend refuses one.
fn upload_all<B: Backend<Elem = f32>>(backend: &B, hosts: &[&Tensor<f32>]) -> Option<Vec<B::Tensor>> {
    hosts.iter().map(|h| backend.upload(h).ok()).collect()
}

/// One thing broken in a layer's shapes or parameters. `axis` and `dim`
/// are reduced modulo what the target has.
#[derive(Debug, Clone, Copy)]
pub enum Break {
    ZeroStride(usize),
    ZeroDilationOrWindow(usize),
    KernelTooLarge(usize),
    PaddingOverHalfWindow(usize),
    ChannelMismatch,
    InputRank(bool),
    WeightRank(bool),
    BiasShape(bool),
    ZeroDim(usize),
    WrongDy(usize),
}

fn a_break() -> impl Strategy<Value = Option<Break>> {
    let any_break = prop_oneof![
        (0..2usize).prop_map(Break::ZeroStride),
        (0..2usize).prop_map(Break::ZeroDilationOrWindow),
        (0..2usize).prop_map(Break::KernelTooLarge),
        (0..2usize).prop_map(Break::PaddingOverHalfWindow),
        Just(Break::ChannelMismatch),
        any::<bool>().prop_map(Break::InputRank),
        any::<bool>().prop_map(Break::WeightRank),
        any::<bool>().prop_map(Break::BiasShape),
        (0..4usize).prop_map(Break::ZeroDim),
        (0..4usize).prop_map(Break::WrongDy),
    ];
    prop::option::weighted(0.5, any_break)
}

/// Drops the last dimension or adds a trailing 1.
fn rerank(shape: &mut Vec<usize>, longer: bool) {
    if longer {
        shape.push(1);
    } else {
        shape.pop();
    }
}

fn bump(shape: &mut [usize], dim: usize) {
    let i = dim % shape.len();
    shape[i] += 1;
}

fn conv<B: Backend<Elem = f32>>(backend: &B, (p, broken): &(ConvProblem, Option<Break>)) -> Check {
    let ctx = Ctx { op: "conv2d (invalid input)", problem: &(p, broken) };
    let nn = reference();
    let mut params = p.params;
    let (mut x, mut w, mut b) = (p.input.to_vec(), p.weight_shape().to_vec(), vec![p.filters[0]]);
    let mut dy = ctx.ok(kernels_core::ConvGeometry::new(&x, &w, None, &params))?.y_shape().to_vec();
    match *broken {
        None => {}
        Some(Break::ZeroStride(axis)) => params.stride[axis] = 0,
        Some(Break::ZeroDilationOrWindow(axis)) => params.dilation[axis] = 0,
        Some(Break::KernelTooLarge(axis) | Break::PaddingOverHalfWindow(axis)) => {
            w[2 + axis] = x[2 + axis] + 2 * params.padding[axis] + 1
        }
        Some(Break::ChannelMismatch) => w[1] += 1,
        Some(Break::InputRank(longer)) => rerank(&mut x, longer),
        Some(Break::WeightRank(longer)) => rerank(&mut w, longer),
        Some(Break::BiasShape(longer)) => b = if longer { vec![b[0] + 1] } else { vec![b[0], 1] },
        Some(Break::ZeroDim(dim)) => x[dim % 4] = 0,
        Some(Break::WrongDy(dim)) => bump(&mut dy, dim),
    }
    let (xh, wh, bh, dyh) =
        (random(&x, p.seed), random(&w, p.seed + 1), random(&b, p.seed + 2), random(&dy, p.seed + 3));
    let bias = p.bias.then_some(&bh);
    let (forward, backward): (Outcome, Outcome) = match upload_all(backend, &[&xh, &wh, &bh, &dyh]) {
        Some(d) => (
            backend.conv2d_forward(&d[0], &d[1], p.bias.then_some(&d[2]), &params).ok().map(|y| shapes(&[Some(y)])),
            backend
                .conv2d_backward(&d[0], &d[1], &d[3], &params, GradRequest::ALL)
                .ok()
                .map(|g| shapes(&[g.dx, g.dw, g.db])),
        ),
        None => (None, None),
    };
    let b64 = bias.map(|b| b.cast::<f64>());
    let ref_forward = nn.conv2d_forward(&xh.cast(), &wh.cast(), b64.as_ref(), &params).ok().map(|y| shapes(&[Some(y)]));
    let ref_backward = nn
        .conv2d_backward(&xh.cast(), &wh.cast(), &dyh.cast(), &params, GradRequest::ALL)
        .ok()
        .map(|g| shapes(&[g.dx, g.dw, g.db]));
    agree(&ctx, "forward", forward, ref_forward)?;
    agree(&ctx, "backward", backward, ref_backward)
}

fn pool<B: Backend<Elem = f32>>(backend: &B, (p, broken): &(PoolProblem, Option<Break>)) -> Check {
    let ctx = Ctx { op: "pool2d (invalid input)", problem: &(p, broken) };
    let nn = reference();
    let mut params = p.params;
    let mut x = p.input.to_vec();
    let mut dy = ctx.ok(kernels_core::PoolGeometry::new(&x, &params))?.y_shape().to_vec();
    match *broken {
        None | Some(Break::ChannelMismatch | Break::WeightRank(_) | Break::BiasShape(_)) => {}
        Some(Break::ZeroStride(axis)) => params.stride[axis] = 0,
        Some(Break::ZeroDilationOrWindow(axis)) => params.window[axis] = 0,
        Some(Break::KernelTooLarge(axis)) => params.window[axis] = x[2 + axis] + 2 * params.padding[axis] + 1,
        Some(Break::PaddingOverHalfWindow(axis)) => params.padding[axis] = params.window[axis] / 2 + 1,
        Some(Break::InputRank(longer)) => rerank(&mut x, longer),
        Some(Break::ZeroDim(dim)) => x[dim % 4] = 0,
        Some(Break::WrongDy(dim)) => bump(&mut dy, dim),
    }
    let (xh, dyh) = (random(&x, p.seed), random(&dy, p.seed + 1));
    let (forward, backward): (Outcome, Outcome) = match upload_all(backend, &[&xh, &dyh]) {
        Some(d) => (
            backend.pool2d_forward(&d[0], &params).ok().map(|y| shapes(&[Some(y)])),
            backend.pool2d_backward(&d[0], &d[1], &params).ok().map(|dx| shapes(&[Some(dx)])),
        ),
        None => (None, None),
    };
    let ref_forward = nn.pool2d_forward(&xh.cast(), &params).ok().map(|y| shapes(&[Some(y)]));
    let ref_backward = nn.pool2d_backward(&xh.cast(), &dyh.cast(), &params).ok().map(|dx| shapes(&[Some(dx)]));
    agree(&ctx, "forward", forward, ref_forward)?;
    agree(&ctx, "backward", backward, ref_backward)
}

fn linear<B: Backend<Elem = f32>>(backend: &B, (p, broken): &(LinearProblem, Option<Break>)) -> Check {
    let ctx = Ctx { op: "linear (invalid input)", problem: &(p, broken) };
    let nn = reference();
    let (mut x, mut w, mut b) = (vec![p.batch, p.inputs], vec![p.outputs, p.inputs], vec![p.outputs]);
    let mut dy = vec![p.batch, p.outputs];
    match *broken {
        None | Some(Break::ZeroStride(_) | Break::ZeroDilationOrWindow(_) | Break::PaddingOverHalfWindow(_)) => {}
        Some(Break::ChannelMismatch | Break::KernelTooLarge(_)) => w[1] += 1,
        Some(Break::InputRank(longer)) => rerank(&mut x, longer),
        Some(Break::WeightRank(longer)) => rerank(&mut w, longer),
        Some(Break::BiasShape(longer)) => b = if longer { vec![b[0] + 1] } else { vec![b[0], 1] },
        Some(Break::ZeroDim(dim)) => x[dim % 2] = 0,
        Some(Break::WrongDy(dim)) => bump(&mut dy, dim),
    }
    let (xh, wh, bh, dyh) =
        (random(&x, p.seed), random(&w, p.seed + 1), random(&b, p.seed + 2), random(&dy, p.seed + 3));
    let (forward, backward): (Outcome, Outcome) = match upload_all(backend, &[&xh, &wh, &bh, &dyh]) {
        Some(d) => (
            backend.linear_forward(&d[0], &d[1], p.bias.then_some(&d[2])).ok().map(|y| shapes(&[Some(y)])),
            backend.linear_backward(&d[0], &d[1], &d[3], GradRequest::ALL).ok().map(|g| shapes(&[g.dx, g.dw, g.db])),
        ),
        None => (None, None),
    };
    let b64 = p.bias.then(|| bh.cast::<f64>());
    let ref_forward = nn.linear_forward(&xh.cast(), &wh.cast(), b64.as_ref()).ok().map(|y| shapes(&[Some(y)]));
    let ref_backward = nn
        .linear_backward(&xh.cast(), &wh.cast(), &dyh.cast(), GradRequest::ALL)
        .ok()
        .map(|g| shapes(&[g.dx, g.dw, g.db]));
    agree(&ctx, "forward", forward, ref_forward)?;
    agree(&ctx, "backward", backward, ref_backward)
}

/// relu and sigmoid with dy shaped like x or not, x sometimes empty.
fn elementwise<B: Backend<Elem = f32>>(backend: &B, (p, broken): &(ElementwiseProblem, Option<Break>)) -> Check {
    let ctx = Ctx { op: "relu/sigmoid (invalid input)", problem: &(p, broken) };
    let nn = reference();
    let mut x = p.shape.clone();
    let mut dy = p.shape.clone();
    match *broken {
        Some(Break::ZeroDim(dim)) => {
            let i = dim % x.len();
            (x[i], dy[i]) = (0, 0);
        }
        // Rank 0: no elements at all.
        Some(Break::InputRank(_)) => (x, dy) = (Vec::new(), Vec::new()),
        Some(Break::WrongDy(dim)) => bump(&mut dy, dim),
        _ => {}
    }
    let (xh, dyh) = (random(&x, p.seed), random(&dy, p.seed + 1));
    let (x64, dy64) = (xh.cast::<f64>(), dyh.cast::<f64>());
    let one = |r: kernels_core::Result<B::Tensor>| r.ok().map(|t| shapes(&[Some(t)]));
    let ref_one = |r: kernels_core::Result<Tensor<f64>>| r.ok().map(|t| shapes(&[Some(t)]));
    let d = upload_all(backend, &[&xh, &dyh]);
    let d = d.as_ref();
    agree(&ctx, "relu", d.and_then(|d| one(backend.relu_forward(&d[0]))), ref_one(nn.relu_forward(&x64)))?;
    let relu_backward = d.and_then(|d| one(backend.relu_backward(&d[0], &d[1])));
    agree(&ctx, "relu backward", relu_backward, ref_one(nn.relu_backward(&x64, &dy64)))?;
    agree(&ctx, "sigmoid", d.and_then(|d| one(backend.sigmoid_forward(&d[0]))), ref_one(nn.sigmoid_forward(&x64)))?;
    let sigmoid_backward = d.and_then(|d| one(backend.sigmoid_backward(&d[0], &d[1])));
    agree(&ctx, "sigmoid backward", sigmoid_backward, ref_one(nn.sigmoid_backward(&x64, &dy64)))
}

/// Labels out of range, one too many or too few, logits of the wrong rank.
fn softmax<B: Backend<Elem = f32>>(backend: &B, (p, broken): &(SoftmaxProblem, Option<Break>)) -> Check {
    let ctx = Ctx { op: "softmax cross-entropy (invalid input)", problem: &(p, broken) };
    let nn = reference();
    let mut logits = vec![p.batch, p.classes];
    let mut labels = p.labels();
    match *broken {
        Some(Break::KernelTooLarge(i)) => labels[i % p.batch] = p.classes + i,
        Some(Break::BiasShape(true)) => labels.push(0),
        Some(Break::BiasShape(false)) => {
            labels.pop();
        }
        Some(Break::InputRank(longer)) => rerank(&mut logits, longer),
        Some(Break::ZeroDim(dim)) => logits[dim % 2] = 0,
        _ => {}
    }
    let host = random(&logits, p.seed);
    let got = upload_all(backend, &[&host])
        .and_then(|d| backend.softmax_cross_entropy(&d[0], &labels).ok().map(|(_, d)| shapes(&[Some(d)])));
    let expected = nn.softmax_cross_entropy(&host.cast(), &labels).ok().map(|(_, d)| shapes(&[Some(d)]));
    agree(&ctx, "loss and dlogits", got, expected)
}

/// Optimiser state of the wrong count or shape, a gradient of the wrong
/// shape, or hyper-parameters out of range.
fn optimizer_step<B: Backend<Elem = f32>>(backend: &B, (p, broken): &(OptimizerProblem, Option<Break>)) -> Check {
    let ctx = Ctx { op: "optimizer (invalid input)", problem: &(p, broken) };
    let nn = reference();
    let shape = p.shape.to_vec();
    let mut grad = shape.clone();
    let mut slots = vec![shape.clone(); p.optimizer.state_slots()];
    let mut optimizer = p.optimizer;
    match *broken {
        Some(Break::WrongDy(dim)) => bump(&mut grad, dim),
        Some(Break::BiasShape(true)) => slots.push(shape.clone()),
        // One slot fewer; SGD, which keeps none, gets a stray one.
        Some(Break::BiasShape(false)) if slots.is_empty() => slots.push(shape.clone()),
        Some(Break::BiasShape(false)) => {
            slots.pop();
        }
        Some(Break::WeightRank(_)) => slots.iter_mut().take(1).for_each(|s| bump(s, 0)),
        Some(Break::ZeroStride(_)) => optimizer = with_lr(optimizer, 0.0),
        Some(Break::ZeroDilationOrWindow(_)) => optimizer = with_lr(optimizer, f64::NAN),
        Some(Break::KernelTooLarge(_)) => optimizer = with_coefficient_one(optimizer),
        _ => {}
    }
    let state_ok = backend.optimizer_state(&optimizer, &shape).is_ok();
    let ref_state_ok = nn.optimizer_state(&optimizer, &shape).is_ok();
    agree(&ctx, "optimizer_state", state_ok.then(Vec::new), ref_state_ok.then(Vec::new))?;
    let (param, gradient) = (random(&shape, p.seed), random(&grad, p.seed + 1));
    let mut dev_param = ctx.up(backend, &param)?;
    let dev_grad = ctx.up(backend, &gradient)?;
    let dev_slots = slots.iter().map(|s| ctx.up(backend, &Tensor::zeros(s))).collect::<Result<Vec<_>, _>>()?;
    let mut state = OptimizerState { optimizer, step: 0, slots: dev_slots };
    let step_ok = backend.optimizer_step(&mut dev_param, &dev_grad, &mut state).is_ok();
    let ref_slots = slots.iter().map(|s| Tensor::<f64>::zeros(s)).collect();
    let mut ref_state = OptimizerState { optimizer, step: 0, slots: ref_slots };
    let ref_step_ok = nn.optimizer_step(&mut param.cast(), &gradient.cast(), &mut ref_state).is_ok();
    agree(&ctx, "optimizer_step", step_ok.then(Vec::new), ref_step_ok.then(Vec::new))
}

fn with_lr(optimizer: Optimizer, value: f64) -> Optimizer {
    match optimizer {
        Optimizer::Sgd { weight_decay, .. } => Optimizer::Sgd { lr: value, weight_decay },
        Optimizer::Momentum { lr: _, momentum, weight_decay } => {
            Optimizer::Momentum { lr: value, momentum, weight_decay }
        }
        Optimizer::Nesterov { lr: _, momentum, weight_decay } => {
            Optimizer::Nesterov { lr: value, momentum, weight_decay }
        }
        Optimizer::AdaGrad { lr: _, eps, weight_decay } => Optimizer::AdaGrad { lr: value, eps, weight_decay },
        Optimizer::RmsProp { lr: _, alpha, eps, weight_decay } => {
            Optimizer::RmsProp { lr: value, alpha, eps, weight_decay }
        }
        Optimizer::Adam { lr: _, beta1, beta2, eps, weight_decay } => {
            Optimizer::Adam { lr: value, beta1, beta2, eps, weight_decay }
        }
    }
}

/// A momentum, alpha or beta of exactly 1 (out of [0, 1)); a negative eps
/// for AdaGrad and a negative weight decay for SGD, which have none.
fn with_coefficient_one(optimizer: Optimizer) -> Optimizer {
    match optimizer {
        Optimizer::Sgd { lr, .. } => Optimizer::Sgd { lr, weight_decay: -0.1 },
        Optimizer::Momentum { lr, weight_decay, .. } => Optimizer::Momentum { lr, momentum: 1.0, weight_decay },
        Optimizer::Nesterov { lr, weight_decay, .. } => Optimizer::Nesterov { lr, momentum: 1.0, weight_decay },
        Optimizer::AdaGrad { lr, weight_decay, .. } => Optimizer::AdaGrad { lr, eps: -1e-8, weight_decay },
        Optimizer::RmsProp { lr, eps, weight_decay, .. } => Optimizer::RmsProp { lr, alpha: 1.0, eps, weight_decay },
        Optimizer::Adam { lr, beta1, eps, weight_decay, .. } => {
            Optimizer::Adam { lr, beta1, beta2: 1.0, eps, weight_decay }
        }
    }
}

pub fn invalid_suite<B: Backend<Elem = f32>>(backend: &B) {
    run("conv2d invalid input", Vec::new(), (conv_problem(), a_break()), |c| conv(backend, c));
    run("pool2d invalid input", Vec::new(), (pool_problem(), a_break()), |c| pool(backend, c));
    run("linear invalid input", Vec::new(), (linear_problem(), a_break()), |c| linear(backend, c));
    run("relu/sigmoid invalid input", Vec::new(), (elementwise_problem(), a_break()), |c| elementwise(backend, c));
    run("softmax invalid input", Vec::new(), (softmax_problem(), a_break()), |c| softmax(backend, c));
    run("optimizer invalid input", Vec::new(), (optimizer_problem(), a_break()), |c| optimizer_step(backend, c));
}
