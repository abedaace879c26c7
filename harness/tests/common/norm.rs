//! Conformance of batch norm (training forward with its running-statistics
//! update, evaluation forward, training backward) and dropout.
//!
//! Batch norm's f32 error grows with the conditioning of each channel: x − μ
//! loses about ε·|x| when the mean is large against the spread, and that
//! error is then scaled by 1/σ. So each tolerance's scale carries
//! `cond` = max|x| / min σ (computed by the reference), and problems include
//! channels whose mean sits far from zero. Dropout compares bit for bit with
//! the f32 reference: the mask is a pure function of (seed, step, index) and
//! a kept value is one f32 multiply.

use kernels_core::{Backend, BatchNorm, Dropout, GradRequest, Shaped, Tensor, Tolerance};
use kernels_naive::Naive;
use proptest::prelude::*;

use super::problems::{random, uniform};
use super::{Check, Ctx, max_abs, reference, run};

#[derive(Debug, Clone)]
pub struct BatchNormProblem {
    /// [N, C, H, W] or [N, F].
    pub shape: Vec<usize>,
    /// Added to every value of x: large offsets make the channel ill-conditioned.
    pub offset: f64,
    pub momentum: f64,
    pub seed: u64,
}

fn batch_norm_problem() -> impl Strategy<Value = BatchNormProblem> {
    let nchw = (1..=4usize, 1..=5usize, 1..=5usize, 1..=5usize).prop_map(|(n, c, h, w)| vec![n, c, h, w]);
    let nf = (1..=8usize, 1..=12usize).prop_map(|(n, f)| vec![n, f]);
    (prop_oneof![nchw, nf], prop_oneof![Just(0.0), -50.0..50.0f64], 0.0..=1.0f64, any::<u64>())
        .prop_filter("training needs two values per channel", |(shape, ..)| {
            shape[0] * shape[2..].iter().product::<usize>() >= 2
        })
        .prop_map(|(shape, offset, momentum, seed)| BatchNormProblem { shape, offset, momentum, seed })
}

pub fn batch_norm<B: Backend<Elem = f32>>(backend: &B, p: &BatchNormProblem) -> Check {
    let ctx = Ctx { op: "batch_norm", problem: p };
    let nn = reference();
    let params = BatchNorm { eps: 1e-5, momentum: p.momentum };
    let c = p.shape[1];
    let m = p.shape[0] * p.shape[2..].iter().product::<usize>();
    let x = Tensor::from_fn(&p.shape, |i| random(&p.shape, p.seed).data()[i] + p.offset as f32);
    let gamma = Tensor::new(&[c], uniform(p.seed ^ 1, c, 0.5, 1.5)).map_err(|e| ctx.fail(e))?;
    let beta = Tensor::new(&[c], uniform(p.seed ^ 2, c, -1.0, 1.0)).map_err(|e| ctx.fail(e))?;
    let rm = Tensor::new(&[c], uniform(p.seed ^ 3, c, -1.0, 1.0)).map_err(|e| ctx.fail(e))?;
    let rv = Tensor::new(&[c], uniform(p.seed ^ 4, c, 0.5, 2.0)).map_err(|e| ctx.fail(e))?;
    let dy = random(&p.shape, p.seed ^ 5);

    // The reference, in f64 on the same f32 inputs.
    let (mut rm64, mut rv64) = (rm.cast::<f64>(), rv.cast::<f64>());
    let (y64, stats64) =
        ctx.ok(nn.batch_norm_train(&x.cast(), &gamma.cast(), &beta.cast(), &mut rm64, &mut rv64, &params))?;
    let grads64 =
        ctx.ok(nn.batch_norm_backward(&x.cast(), &gamma.cast(), &stats64, &dy.cast(), &params, GradRequest::ALL))?;
    let eval64 = ctx.ok(nn.batch_norm_eval(&x.cast(), &gamma.cast(), &beta.cast(), &rm64, &rv64, &params))?;

    let max_inv_std = max_abs(&stats64.inv_std);
    let cond = (max_abs(&x.cast()) * max_inv_std).max(1.0);
    let tol = |scale: f64| Tolerance::f32_reduction(m, scale);

    let (xd, gd, bd) = (ctx.up(backend, &x)?, ctx.up(backend, &gamma)?, ctx.up(backend, &beta)?);
    let (mut rmd, mut rvd) = (ctx.up(backend, &rm)?, ctx.up(backend, &rv)?);
    let (y, stats) = ctx.ok(backend.batch_norm_train(&xd, &gd, &bd, &mut rmd, &mut rvd, &params))?;
    ctx.unchanged(backend, "x", &xd, &x)?;
    ctx.close("y (train)", &ctx.down(backend, &y)?, &y64, &tol(1.5 * cond + 1.0))?;
    ctx.close("saved mean", &ctx.down(backend, &stats.mean)?, &stats64.mean, &tol(max_abs(&x.cast())))?;
    ctx.close("saved inv_std", &ctx.down(backend, &stats.inv_std)?, &stats64.inv_std, &tol(max_inv_std * cond))?;
    ctx.close("running_mean", &ctx.down(backend, &rmd)?, &rm64, &tol(max_abs(&x.cast()) + 1.0))?;
    ctx.close("running_var", &ctx.down(backend, &rvd)?, &rv64, &tol((max_abs(&rv64) + 2.0) * cond))?;

    let eval = ctx.ok(backend.batch_norm_eval(&xd, &gd, &bd, &rmd, &rvd, &params))?;
    let eval_scale = 1.5 * (max_abs(&x.cast()) + max_abs(&rm64)) * max_abs(&rv64.cast::<f64>()).max(1.0) + 1.0;
    ctx.close("y (eval)", &ctx.down(backend, &eval)?, &eval64, &Tolerance::f32_reduction(1, eval_scale * 8.0))?;

    let grads =
        ctx.ok(backend.batch_norm_backward(&xd, &gd, &stats, &ctx.up(backend, &dy)?, &params, GradRequest::ALL))?;
    let dx_scale = 1.5 * max_inv_std * 3.0 * cond;
    ctx.close("dx", &ctx.down(backend, &ctx.grad("dx", grads.dx)?)?, &ctx.grad("dx", grads64.dx)?, &tol(dx_scale))?;
    let sum_scale = m as f64 * cond;
    ctx.close(
        "dgamma",
        &ctx.down(backend, &ctx.grad("dgamma", grads.dw)?)?,
        &ctx.grad("dgamma", grads64.dw)?,
        &tol(sum_scale),
    )?;
    ctx.close(
        "dbeta",
        &ctx.down(backend, &ctx.grad("dbeta", grads.db)?)?,
        &ctx.grad("dbeta", grads64.db)?,
        &tol(m as f64),
    )
}

pub fn batch_norm_suite<B: Backend<Elem = f32>>(backend: &B) {
    let case = |shape: &[usize], offset: f64, seed: u64| BatchNormProblem {
        shape: shape.to_vec(),
        offset,
        momentum: 0.1,
        seed,
    };
    run(
        "batch_norm",
        vec![
            ("two values per channel", case(&[2, 3], 0.0, 1)),
            ("one sample, 2x1 planes", case(&[1, 4, 2, 1], 0.0, 2)),
            ("LeNet conv1 output, batch 8", case(&[8, 6, 28, 28], 0.0, 3)),
            ("LeNet fc1 output, batch 64", case(&[64, 120], 0.0, 4)),
            ("mean 1000 against spread 1", case(&[4, 3, 5, 5], 1000.0, 5)),
            ("single channel, large plane", case(&[2, 1, 40, 40], -3.0, 6)),
        ],
        batch_norm_problem(),
        |p| batch_norm(backend, p),
    );
}

#[derive(Debug, Clone)]
pub struct DropoutProblem {
    pub shape: Vec<usize>,
    pub p: f64,
    pub seed: u64,
    pub step: u64,
}

pub fn dropout<B: Backend<Elem = f32>>(backend: &B, p: &DropoutProblem) -> Check {
    let ctx = Ctx { op: "dropout", problem: p };
    let params = Dropout { p: p.p, seed: p.seed, step: p.step };
    let x = random(&p.shape, p.seed ^ 7);
    let dy = random(&p.shape, p.seed ^ 8);
    let same_bits = |what: &str, actual: &Tensor<f32>, expected: &Tensor<f32>| -> Check {
        match actual.data().iter().zip(expected.data()).position(|(a, e)| a.to_bits() != e.to_bits()) {
            Some(i) => Err(ctx.fail(format!(
                "{what}: element {i} is {}, the f32 reference gives {} (masks must agree bit for bit)",
                actual.data()[i],
                expected.data()[i]
            ))),
            None if actual.shape() != expected.shape() => Err(ctx.fail(format!("{what}: shape {:?}", actual.shape()))),
            None => Ok(()),
        }
    };
    let naive = Naive::<f32>::new();
    let xd = ctx.up(backend, &x)?;
    let y = ctx.down(backend, &ctx.ok(backend.dropout_forward(&xd, &params))?)?;
    ctx.unchanged(backend, "x", &xd, &x)?;
    same_bits("y", &y, &ctx.ok(naive.dropout_forward(&x, &params))?)?;
    ctx.close("y", &y, &ctx.ok(reference().dropout_forward(&x.cast(), &params))?, &Tolerance::f32_elementwise())?;
    let dx = ctx.down(backend, &ctx.ok(backend.dropout_backward(&ctx.up(backend, &dy)?, &params))?)?;
    same_bits("dx", &dx, &ctx.ok(naive.dropout_backward(&dy, &params))?)
}

pub fn dropout_suite<B: Backend<Elem = f32>>(backend: &B) {
    let case = |shape: &[usize], p: f64, seed: u64, step: u64| DropoutProblem { shape: shape.to_vec(), p, seed, step };
    let strategy =
        (prop::collection::vec(1..=9usize, 1..=4), prop_oneof![Just(0.0), 0.0..0.99f64], any::<u64>(), any::<u64>())
            .prop_map(|(shape, p, seed, step)| DropoutProblem { shape, p, seed, step });
    run(
        "dropout",
        vec![
            ("p = 0 is the identity", case(&[3, 7], 0.0, 1, 0)),
            ("p = 0.5, LeNet fc1 batch 256", case(&[256, 120], 0.5, 2, 3)),
            ("p = 0.9, odd length over blocks", case(&[3, 16411], 0.9, 3, u64::MAX)),
        ],
        strategy,
        |p| dropout(backend, p),
    );
}
