//! Conformance of the element-wise ops (relu, sigmoid), softmax
//! cross-entropy, the optimiser steps and the tensor round trip.

use kernels_core::{Backend, Optimizer, OptimizerState, Shaped, SplitMix64, Tensor, Tolerance, compare};

use super::problems::{
    ElementwiseProblem, OptimizerProblem, SoftmaxProblem, default_optimizers, elementwise_problem, optimizer_problem,
    random, softmax_problem, uniform,
};
use super::{Check, Ctx, max_abs, reference, run};

/// Uniform values in [−1, 1) with about one in six replaced by +0 or −0,
/// where relu's derivative switches (the contract: dy only where x > 0).
fn with_zeros(shape: &[usize], seed: u64) -> Tensor<f32> {
    let mut rng = SplitMix64::new(seed ^ 0x2e40);
    let mut t = random(shape, seed);
    for v in t.data_mut() {
        match rng.below(12) {
            0 => *v = 0.0,
            1 => *v = -0.0,
            _ => {}
        }
    }
    t
}

pub fn relu<B: Backend<Elem = f32>>(backend: &B, p: &ElementwiseProblem) -> Check {
    let ctx = Ctx { op: "relu", problem: p };
    let nn = reference();
    let x = with_zeros(&p.shape, p.seed);
    let dy = random(&p.shape, p.seed.wrapping_add(1));
    let (x_dev, dy_dev) = (ctx.up(backend, &x)?, ctx.up(backend, &dy)?);
    let tolerance = Tolerance::f32_elementwise();
    let y = ctx.down(backend, &ctx.ok(backend.relu_forward(&x_dev))?)?;
    ctx.close("y", &y, &ctx.ok(nn.relu_forward(&x.cast()))?, &tolerance)?;
    let dx = ctx.down(backend, &ctx.ok(backend.relu_backward(&x_dev, &dy_dev))?)?;
    ctx.close("dx", &dx, &ctx.ok(nn.relu_backward(&x.cast(), &dy.cast()))?, &tolerance)
}

pub fn sigmoid<B: Backend<Elem = f32>>(backend: &B, p: &ElementwiseProblem) -> Check {
    let ctx = Ctx { op: "sigmoid", problem: p };
    let nn = reference();
    let len = p.shape.iter().product();
    let x = Tensor::new(&p.shape, uniform(p.seed, len, -12.0, 12.0)).map_err(|e| ctx.fail(e))?;
    let tolerance = Tolerance::f32_elementwise();
    let y = ctx.down(backend, &ctx.ok(backend.sigmoid_forward(&ctx.up(backend, &x)?))?)?;
    ctx.close("y", &y, &ctx.ok(nn.sigmoid_forward(&x.cast()))?, &tolerance)?;
    // Backward takes the forward's output: any y in (0, 1) will do.
    let y = Tensor::new(&p.shape, uniform(p.seed.wrapping_add(1), len, 0.0, 1.0)).map_err(|e| ctx.fail(e))?;
    let dy = random(&p.shape, p.seed.wrapping_add(2));
    let dx = ctx.ok(backend.sigmoid_backward(&ctx.up(backend, &y)?, &ctx.up(backend, &dy)?))?;
    let dx = ctx.down(backend, &dx)?;
    ctx.close("dx", &dx, &ctx.ok(nn.sigmoid_backward(&y.cast(), &dy.cast()))?, &tolerance)
}

fn elementwise_edge_cases() -> Vec<(&'static str, ElementwiseProblem)> {
    vec![
        ("one element", ElementwiseProblem { shape: vec![1], seed: 1 }),
        ("NCHW activation", ElementwiseProblem { shape: vec![2, 3, 5, 7], seed: 2 }),
        ("LeNet fc1 output", ElementwiseProblem { shape: vec![3, 120], seed: 3 }),
    ]
}

pub fn relu_suite<B: Backend<Elem = f32>>(backend: &B) {
    run("relu", elementwise_edge_cases(), elementwise_problem(), |p| relu(backend, p));
}

pub fn sigmoid_suite<B: Backend<Elem = f32>>(backend: &B) {
    run("sigmoid", elementwise_edge_cases(), elementwise_problem(), |p| sigmoid(backend, p));
}

pub fn softmax<B: Backend<Elem = f32>>(backend: &B, p: &SoftmaxProblem) -> Check {
    let ctx = Ctx { op: "softmax cross-entropy", problem: p };
    let nn = reference();
    let shape = [p.batch, p.classes];
    let logits = Tensor::new(&shape, uniform(p.seed, p.batch * p.classes, -p.spread, p.spread + 1e-9))
        .map_err(|e| ctx.fail(e))?;
    let labels = p.labels();
    let (loss, dlogits) = ctx.ok(backend.softmax_cross_entropy(&ctx.up(backend, &logits)?, &labels))?;
    let dlogits = ctx.down(backend, &dlogits)?;
    let (expected_loss, expected_dlogits) = ctx.ok(nn.softmax_cross_entropy(&logits.cast(), &labels))?;
    // The log-sum-exp carries rounding of order ε·max|logit|; probabilities
    // are relative to 1/n.
    let magnitude = p.spread.max(1.0) + (p.classes as f64).ln();
    let loss_tolerance = Tolerance::f32_reduction(p.batch * p.classes, magnitude);
    let comparison = ctx.ok(compare(&[loss], &[expected_loss], &loss_tolerance))?;
    if !comparison.passed() {
        return Err(ctx.fail(format!("loss: {comparison}")));
    }
    let d_tolerance = Tolerance::f32_reduction(p.classes, magnitude / p.batch as f64);
    ctx.close("dlogits", &dlogits, &expected_dlogits, &d_tolerance)
}

pub fn softmax_suite<B: Backend<Elem = f32>>(backend: &B) {
    let p = |batch, classes, spread, seed| SoftmaxProblem { batch, classes, spread, seed };
    let edges = vec![
        ("one class (loss 0)", p(2, 1, 3.0, 1)),
        ("equal logits", p(3, 10, 0.0, 2)),
        ("huge logits (overflow without the max shift)", p(4, 10, 200.0, 3)),
        ("LeNet: 10 classes", p(4, 10, 4.0, 4)),
    ];
    run("softmax cross-entropy", edges, softmax_problem(), |p| softmax(backend, p));
}

/// The hyper-parameters rounded to f32, as an f32 backend sees them. Each
/// problem runs both with these and with the exact f64 values: the second
/// is what a user comparing with PyTorch does, and it holds only because
/// backends form 1 − β in f64 and round once (from the f32 β the error
/// would be up to ε·β/(1 − β) relative, 1.4e-3 at β = 0.99999).
fn f32_exact(optimizer: Optimizer) -> Optimizer {
    let f = |v: f64| v as f32 as f64;
    match optimizer {
        Optimizer::Sgd { lr, weight_decay } => Optimizer::Sgd { lr: f(lr), weight_decay: f(weight_decay) },
        Optimizer::Momentum { lr, momentum, weight_decay } => {
            Optimizer::Momentum { lr: f(lr), momentum: f(momentum), weight_decay: f(weight_decay) }
        }
        Optimizer::Nesterov { lr, momentum, weight_decay } => {
            Optimizer::Nesterov { lr: f(lr), momentum: f(momentum), weight_decay: f(weight_decay) }
        }
        Optimizer::AdaGrad { lr, eps, weight_decay } => {
            Optimizer::AdaGrad { lr: f(lr), eps: f(eps), weight_decay: f(weight_decay) }
        }
        Optimizer::RmsProp { lr, alpha, eps, weight_decay } => {
            Optimizer::RmsProp { lr: f(lr), alpha: f(alpha), eps: f(eps), weight_decay: f(weight_decay) }
        }
        Optimizer::Adam { lr, beta1, beta2, eps, weight_decay } => {
            Optimizer::Adam { lr: f(lr), beta1: f(beta1), beta2: f(beta2), eps: f(eps), weight_decay: f(weight_decay) }
        }
    }
}

/// Whether each state slot holds a running value of g (velocity, first
/// moment) or of g² (square averages, second moment).
fn slot_is_square(optimizer: &Optimizer, slot: usize) -> bool {
    matches!(
        (optimizer, slot),
        (Optimizer::AdaGrad { .. } | Optimizer::RmsProp { .. }, 0) | (Optimizer::Adam { .. }, 1)
    )
}

/// Three steps with fresh gradients, compared after step 1 and step 3:
/// the parameter and every state slot; once with the hyper-parameters
/// rounded to f32 and once with the exact f64 values.
pub fn optimizer_steps<B: Backend<Elem = f32>>(backend: &B, p: &OptimizerProblem) -> Check {
    optimizer_steps_with(backend, p, f32_exact(p.optimizer))?;
    optimizer_steps_with(backend, p, p.optimizer)
}

fn optimizer_steps_with<B: Backend<Elem = f32>>(backend: &B, p: &OptimizerProblem, optimizer: Optimizer) -> Check {
    let ctx = Ctx { op: p.optimizer.name(), problem: p };
    let nn = reference();
    let param0 = random(&p.shape, p.seed);
    let mut param = ctx.up(backend, &param0)?;
    let mut state = ctx.ok(backend.optimizer_state(&optimizer, &p.shape))?;
    let mut expected = param0.cast::<f64>();
    let mut expected_state: OptimizerState<Tensor<f64>> = ctx.ok(nn.optimizer_state(&optimizer, &p.shape))?;
    // Σ over steps of max|Δp|: how far rounding can have travelled.
    let mut travelled = 0.0;
    let mut max_grad = 0.0f64;
    for t in 1..=3u64 {
        let grad = random(&p.shape, p.seed.wrapping_add(t));
        max_grad = max_grad.max(max_abs(&grad.cast()) + optimizer.weight_decay() * 2.0);
        ctx.ok(backend.optimizer_step(&mut param, &ctx.up(backend, &grad)?, &mut state))?;
        let before = expected.clone();
        ctx.ok(nn.optimizer_step(&mut expected, &grad.cast(), &mut expected_state))?;
        travelled += before.data().iter().zip(expected.data()).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        if state.step != t {
            return Err(ctx.fail(format!("state.step is {} after step {t}", state.step)));
        }
        if t == 2 {
            continue;
        }
        let slack = 16.0 * f32::EPSILON as f64 * t as f64;
        let scale = max_abs(&param0.cast()) + travelled;
        let tolerance =
            Tolerance::new(format!("f32 optimiser, {t} steps (16·ε·t, scale {scale:.3e})"), slack * scale, slack);
        ctx.close(&format!("param after step {t}"), &ctx.down(backend, &param)?, &expected, &tolerance)?;
        for (i, (slot, expected_slot)) in state.slots.iter().zip(&expected_state.slots).enumerate() {
            let g = if slot_is_square(&optimizer, i) { max_grad * max_grad } else { max_grad };
            let scale = max_abs(expected_slot) + t as f64 * g;
            let tolerance = Tolerance::new(format!("f32 optimiser state, {t} steps (16·ε·t)"), slack * scale, slack);
            ctx.close(&format!("state slot {i} after step {t}"), &ctx.down(backend, slot)?, expected_slot, &tolerance)?;
        }
    }
    Ok(())
}

pub fn optimizer_suite<B: Backend<Elem = f32>>(backend: &B) {
    let mut edges: Vec<_> = default_optimizers()
        .into_iter()
        .enumerate()
        .map(|(i, optimizer)| ("PyTorch defaults", OptimizerProblem { optimizer, shape: [3, 5], seed: i as u64 }))
        .collect();
    // β close to 1, where 1 − β formed in f32 from the f32 β is far off.
    let near_one = [
        Optimizer::RmsProp { lr: 0.01, alpha: 0.99999, eps: 1e-8, weight_decay: 0.0 },
        Optimizer::Adam { lr: 0.01, beta1: 0.9999, beta2: 0.99999, eps: 1e-8, weight_decay: 0.0 },
    ];
    edges.extend(
        near_one.into_iter().map(|optimizer| ("β close to 1", OptimizerProblem { optimizer, shape: [3, 5], seed: 7 })),
    );
    run("optimizer steps", edges, optimizer_problem(), |p| optimizer_steps(backend, p));
}

/// upload → download is exact; reshape keeps the data and refuses a wrong
/// element count exactly as the reference does; zeros are zeros.
pub fn round_trip<B: Backend<Elem = f32>>(backend: &B, p: &ElementwiseProblem) -> Check {
    let ctx = Ctx { op: "upload/download/reshape/zeros", problem: p };
    let nn = reference();
    let host = random(&p.shape, p.seed);
    let same_bits = |a: &Tensor<f32>, b: &Tensor<f32>| {
        a.shape() == b.shape() && a.data().iter().zip(b.data()).all(|(x, y)| x.to_bits() == y.to_bits())
    };
    let device = ctx.up(backend, &host)?;
    if device.shape() != host.shape() || !same_bits(&ctx.down(backend, &device)?, &host) {
        return Err(ctx.fail("download(upload(x)) differs from x"));
    }
    let len = host.len();
    let flat = ctx.ok(backend.reshape(device, &[len]))?;
    let matrix = ctx.ok(backend.reshape(flat, &[1, len]))?;
    let back = ctx.down(backend, &matrix)?;
    if !same_bits(&back, &ctx.ok(host.clone().reshape(&[1, len]))?) {
        return Err(ctx.fail("reshape changed the data"));
    }
    let wrong = [len + 1];
    let refused = backend.reshape(matrix, &wrong).is_err();
    let reference_refused = nn.reshape(host.cast(), &wrong).is_err();
    if refused != reference_refused {
        return Err(
            ctx.fail(format!("reshape to {wrong:?}: backend error {refused}, reference error {reference_refused}"))
        );
    }
    let zeros = ctx.down(backend, &ctx.ok(backend.zeros(&p.shape))?)?;
    if zeros.shape() != p.shape.as_slice() || zeros.data().iter().any(|v| v.to_bits() != 0) {
        return Err(ctx.fail(format!("zeros({:?}) gave {zeros:?}", p.shape)));
    }
    Ok(())
}

pub fn round_trip_suite<B: Backend<Elem = f32>>(backend: &B) {
    run("round trip", elementwise_edge_cases(), elementwise_problem(), |p| round_trip(backend, p));
}
