//! Conformance of the ops with a reduction: conv2d, pool2d and linear,
//! forward and every backward output.

use kernels_core::{Backend, GradRequest, PoolKind, Shaped, Tensor, Tolerance};
use proptest::strategy::Strategy as _;

use super::problems::{
    ConvProblem, LinearProblem, PoolProblem, conv_edge_cases, conv_problem, linear_edge_cases, linear_problem,
    pool_edge_cases, pool_problem, random, small_integers,
};
use super::{Check, Ctx, abs, max_abs, reference, run};

struct ConvData {
    x: Tensor<f32>,
    w: Tensor<f32>,
    b: Option<Tensor<f32>>,
}

fn conv_data(p: &ConvProblem) -> ConvData {
    ConvData {
        x: random(&p.input, p.seed),
        w: random(&p.weight_shape(), p.seed.wrapping_add(1)),
        b: p.bias.then(|| random(&[p.filters[0]], p.seed.wrapping_add(2))),
    }
}

pub fn conv_forward<B: Backend<Elem = f32>>(backend: &B, p: &ConvProblem) -> Check {
    let ctx = Ctx { op: "conv2d forward", problem: p };
    let nn = reference();
    let d = conv_data(p);
    let (x, w) = (ctx.up(backend, &d.x)?, ctx.up(backend, &d.w)?);
    let b = d.b.as_ref().map(|b| ctx.up(backend, b)).transpose()?;
    let y = ctx.ok(backend.conv2d_forward(&x, &w, b.as_ref(), &p.params))?;
    let y = ctx.down(backend, &y)?;

    let b64 = d.b.as_ref().map(|b| b.cast::<f64>());
    let expected = ctx.ok(nn.conv2d_forward(&d.x.cast(), &d.w.cast(), b64.as_ref(), &p.params))?;
    let b_abs = d.b.as_ref().map(abs);
    let bound = ctx.ok(nn.conv2d_forward(&abs(&d.x), &abs(&d.w), b_abs.as_ref(), &p.params))?;
    let [_, c, _, _] = p.input;
    let [_, r, s] = p.filters;
    let terms = c * r * s + usize::from(p.bias);
    ctx.close("y", &y, &expected, &Tolerance::f32_reduction(terms, max_abs(&bound)))
}

/// Which gradients to request: all of them in the edge cases, a seed-chosen
/// non-empty subset in random cases (a backend must honour partial requests).
pub fn grad_request(seed: u64) -> GradRequest {
    let mask = (seed % 7) + 1;
    GradRequest { dx: mask & 1 != 0, dw: mask & 2 != 0, db: mask & 4 != 0 }
}

pub fn conv_backward<B: Backend<Elem = f32>>(backend: &B, p: &ConvProblem, need: GradRequest) -> Check {
    let ctx = Ctx { op: "conv2d backward", problem: p };
    let nn = reference();
    let d = conv_data(p);
    let g = ctx.ok(kernels_core::ConvGeometry::new(&p.input, &p.weight_shape(), None, &p.params))?;
    let dy = random(&g.y_shape(), p.seed.wrapping_add(3));
    let (x, w, dy_dev) = (ctx.up(backend, &d.x)?, ctx.up(backend, &d.w)?, ctx.up(backend, &dy)?);
    let all = GradRequest::ALL;
    let expected = ctx.ok(nn.conv2d_backward(&d.x.cast(), &d.w.cast(), &dy.cast(), &p.params, all))?;
    let bound = ctx.ok(nn.conv2d_backward(&abs(&d.x), &abs(&d.w), &abs(&dy), &p.params, all))?;
    let per_input = g.k * g.r * g.s;
    let per_weight = g.n * g.oh * g.ow;
    // Twice: backward returns fresh gradients, so a scratch buffer reused
    // without clearing shows up as a doubled second result.
    for call in ["first call", "second call"] {
        let grads = ctx.ok(backend.conv2d_backward(&x, &w, &dy_dev, &p.params, need))?;
        let wanted = [
            ("dx", need.dx, grads.dx, &expected.dx, &bound.dx, per_input),
            ("dw", need.dw, grads.dw, &expected.dw, &bound.dw, per_weight),
            ("db", need.db, grads.db, &expected.db, &bound.db, per_weight),
        ];
        for (what, requested, actual, expected, bound, terms) in wanted {
            if !requested {
                continue;
            }
            let actual = ctx.down(backend, &ctx.grad(what, actual)?)?;
            let (expected, bound) = (ctx.grad(what, expected.as_ref())?, ctx.grad(what, bound.as_ref())?);
            let tolerance = Tolerance::f32_reduction(terms, max_abs(bound));
            ctx.close(&format!("{what} ({call})"), &actual, expected, &tolerance)?;
        }
    }
    ctx.unchanged(backend, "x", &x, &d.x)?;
    ctx.unchanged(backend, "w", &w, &d.w)?;
    ctx.unchanged(backend, "dy", &dy_dev, &dy)
}

pub fn conv_forward_suite<B: Backend<Elem = f32>>(backend: &B) {
    run("conv2d forward", conv_edge_cases(), conv_problem(), |p| conv_forward(backend, p));
}

pub fn conv_backward_suite<B: Backend<Elem = f32>>(backend: &B) {
    run("conv2d backward (all grads)", conv_edge_cases(), conv_problem(), |p| {
        conv_backward(backend, p, GradRequest::ALL)
    });
    run("conv2d backward (requested grads)", Vec::new(), conv_problem(), |p| {
        conv_backward(backend, p, grad_request(p.seed))
    });
}

/// Pool forward and backward on `x` (random, or small integers with ties).
pub fn pool(backend: &impl Backend<Elem = f32>, p: &PoolProblem, x: &Tensor<f32>) -> Check {
    let ctx = Ctx { op: if p.params.kind == PoolKind::Max { "max pool2d" } else { "avg pool2d" }, problem: p };
    let nn = reference();
    let x_dev = ctx.up(backend, x)?;
    let y = ctx.ok(backend.pool2d_forward(&x_dev, &p.params))?;
    let y = ctx.down(backend, &y)?;
    let expected = ctx.ok(nn.pool2d_forward(&x.cast(), &p.params))?;
    let window = p.params.window[0] * p.params.window[1];
    let forward_tolerance = match p.params.kind {
        // A selection: exact but for the element-wise slack.
        PoolKind::Max => Tolerance::f32_elementwise(),
        PoolKind::Avg => Tolerance::f32_reduction(window, max_abs(&abs(x))),
    };
    ctx.close("y", &y, &expected, &forward_tolerance)?;

    let dy = random(expected.shape(), p.seed.wrapping_add(1));
    let dy_dev = ctx.up(backend, &dy)?;
    let expected = ctx.ok(nn.pool2d_backward(&x.cast(), &dy.cast(), &p.params))?;
    let bound = ctx.ok(nn.pool2d_backward(&x.cast(), &abs(&dy), &p.params))?;
    // An input sits in at most ⌈window / stride⌉ windows per axis.
    let [wh, ww] = p.params.window;
    let [sh, sw] = p.params.stride;
    let overlap = wh.div_ceil(sh) * ww.div_ceil(sw);
    let tolerance = Tolerance::f32_reduction(overlap, max_abs(&bound));
    // Twice, as for conv: overlapping windows accumulate, but never into
    // what a previous call left behind.
    for call in ["first call", "second call"] {
        let dx = ctx.down(backend, &ctx.ok(backend.pool2d_backward(&x_dev, &dy_dev, &p.params))?)?;
        ctx.close(&format!("dx ({call})"), &dx, &expected, &tolerance)?;
    }
    ctx.unchanged(backend, "x", &x_dev, x)?;
    ctx.unchanged(backend, "dy", &dy_dev, &dy)
}

pub fn pool_suite<B: Backend<Elem = f32>>(backend: &B) {
    run("pool2d", pool_edge_cases(), pool_problem(), |p| pool(backend, p, &random(&p.input, p.seed)));
}

/// Small integers in [−2, 2]: most windows hold ties, and all-negative
/// windows next to padding check that padding never wins.
pub fn pool_ties_suite<B: Backend<Elem = f32>>(backend: &B) {
    let max_only = |cases: Vec<(&'static str, PoolProblem)>| {
        cases.into_iter().filter(|(_, p)| p.params.kind == PoolKind::Max).collect::<Vec<_>>()
    };
    let max_problem = pool_problem()
        .prop_map(|p| PoolProblem { params: kernels_core::Pool2d { kind: PoolKind::Max, ..p.params }, ..p });
    run("max pool2d ties", max_only(pool_edge_cases()), max_problem, |p| {
        pool(backend, p, &small_integers(&p.input, p.seed, -2, 2))
    });
}

struct LinearData {
    x: Tensor<f32>,
    w: Tensor<f32>,
    b: Option<Tensor<f32>>,
    dy: Tensor<f32>,
}

pub fn linear<B: Backend<Elem = f32>>(backend: &B, p: &LinearProblem) -> Check {
    let ctx = Ctx { op: "linear", problem: p };
    let nn = reference();
    let d = LinearData {
        x: random(&[p.batch, p.inputs], p.seed),
        w: random(&[p.outputs, p.inputs], p.seed.wrapping_add(1)),
        b: p.bias.then(|| random(&[p.outputs], p.seed.wrapping_add(2))),
        dy: random(&[p.batch, p.outputs], p.seed.wrapping_add(3)),
    };
    let (x, w, dy) = (ctx.up(backend, &d.x)?, ctx.up(backend, &d.w)?, ctx.up(backend, &d.dy)?);
    let b = d.b.as_ref().map(|b| ctx.up(backend, b)).transpose()?;
    let y = ctx.down(backend, &ctx.ok(backend.linear_forward(&x, &w, b.as_ref()))?)?;
    let b64 = d.b.as_ref().map(|b| b.cast::<f64>());
    let expected = ctx.ok(nn.linear_forward(&d.x.cast(), &d.w.cast(), b64.as_ref()))?;
    let b_abs = d.b.as_ref().map(abs);
    let bound = ctx.ok(nn.linear_forward(&abs(&d.x), &abs(&d.w), b_abs.as_ref()))?;
    let terms = p.inputs + usize::from(p.bias);
    ctx.close("y", &y, &expected, &Tolerance::f32_reduction(terms, max_abs(&bound)))?;

    let grads = ctx.ok(backend.linear_backward(&x, &w, &dy, GradRequest::ALL))?;
    let all = GradRequest::ALL;
    let expected = ctx.ok(nn.linear_backward(&d.x.cast(), &d.w.cast(), &d.dy.cast(), all))?;
    let bound = ctx.ok(nn.linear_backward(&abs(&d.x), &abs(&d.w), &abs(&d.dy), all))?;
    let outputs = [
        ("dx", grads.dx, expected.dx, bound.dx, p.outputs),
        ("dw", grads.dw, expected.dw, bound.dw, p.batch),
        ("db", grads.db, expected.db, bound.db, p.batch),
    ];
    for (what, actual, expected, bound, terms) in outputs {
        let actual = ctx.down(backend, &ctx.grad(what, actual)?)?;
        let (expected, bound) = (ctx.grad(what, expected)?, ctx.grad(what, bound)?);
        ctx.close(what, &actual, &expected, &Tolerance::f32_reduction(terms, max_abs(&bound)))?;
    }
    ctx.unchanged(backend, "x", &x, &d.x)?;
    ctx.unchanged(backend, "w", &w, &d.w)?;
    ctx.unchanged(backend, "dy", &dy, &d.dy)
}

pub fn linear_suite<B: Backend<Elem = f32>>(backend: &B) {
    run("linear", linear_edge_cases(), linear_problem(), |p| linear(backend, p));
}
