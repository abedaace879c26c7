//! Launches stay within the device's limits: with the limits lowered to
//! those of a small GPU (simulated: PoCL itself would accept more), every
//! launch configuration must fit them, with the local-memory GEMM falling
//! back to the plain one when its tiles do not fit and the tree reductions
//! shrinking their groups, and every op still matches the f64 reference.
//! `Runtime::launch` refuses a launch past the limits it was given, as a
//! real device would (CL_INVALID_WORK_GROUP_SIZE, CL_OUT_OF_RESOURCES).

use kernels_core::{
    Backend, BatchNorm, Conv2d, Dropout, GradRequest, Pool2d, PoolKind, Shaped, SplitMix64, Tensor, Tolerance, compare,
};
use kernels_naive::Naive;

use crate::device::Limits;
use crate::{Config, OpenCl};

fn random(shape: &[usize], seed: u64) -> Tensor<f64> {
    let mut rng = SplitMix64::new(seed);
    Tensor::from_fn(shape, |_| rng.uniform(-1.0, 1.0)).cast::<f32>().cast::<f64>()
}

fn check(what: &str, cl: &OpenCl, actual: &crate::ClTensor, expected: &Tensor<f64>, terms: usize) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shape");
    let host = cl.download(actual).unwrap();
    let scale = expected.data().iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let c = compare(host.data(), expected.data(), &Tolerance::f32_reduction(terms, scale)).unwrap();
    assert!(c.passed(), "{what}: {c}");
}

/// Conv forward/backward (im2col and direct), linear, pooling, the loss,
/// batch norm (training forward, running statistics, backward) and dropout
/// on `cl`, against the reference.
fn every_op_matches(cl: &OpenCl) {
    let reference = Naive::<f64>::new();
    let up = |t: &Tensor<f64>| cl.upload(&t.cast::<f32>()).unwrap();
    let (x, w, b) = (random(&[3, 4, 13, 11], 1), random(&[20, 4, 3, 3], 2), random(&[20], 3));
    let params = Conv2d { stride: [1, 1], padding: [1, 0], dilation: [1, 1] };
    let y = cl.conv2d_forward(&up(&x), &up(&w), Some(&up(&b)), &params).unwrap();
    let y_ref = reference.conv2d_forward(&x, &w, Some(&b), &params).unwrap();
    check("conv forward", cl, &y, &y_ref, 36);
    let dy = random(y_ref.shape(), 4);
    let g = cl.conv2d_backward(&up(&x), &up(&w), &up(&dy), &params, GradRequest::ALL).unwrap();
    let r = reference.conv2d_backward(&x, &w, &dy, &params, GradRequest::ALL).unwrap();
    check("conv dx", cl, g.dx.as_ref().unwrap(), r.dx.as_ref().unwrap(), 180);
    check("conv dw", cl, g.dw.as_ref().unwrap(), r.dw.as_ref().unwrap(), 3 * 13 * 9);
    check("conv db", cl, g.db.as_ref().unwrap(), r.db.as_ref().unwrap(), 3 * 13 * 9);
    let (xl, wl) = (random(&[37, 70], 5), random(&[45, 70], 6));
    let yl = cl.linear_forward(&up(&xl), &up(&wl), None).unwrap();
    check("linear", cl, &yl, &reference.linear_forward(&xl, &wl, None).unwrap(), 70);
    let pool = Pool2d { kind: PoolKind::Max, window: [2, 2], stride: [2, 2], padding: [0, 0] };
    let xp = random(&[2, 3, 8, 8], 7);
    let yp = cl.pool2d_forward(&up(&xp), &pool).unwrap();
    check("pool", cl, &yp, &reference.pool2d_forward(&xp, &pool).unwrap(), 1);
    let logits = random(&[33, 10], 8);
    let labels: Vec<usize> = (0..33).map(|i| i % 10).collect();
    let (loss, dl) = cl.softmax_cross_entropy(&up(&logits), &labels).unwrap();
    let (loss_ref, dl_ref) = reference.softmax_cross_entropy(&logits, &labels).unwrap();
    assert!((loss - loss_ref).abs() < 1e-5 * loss_ref.abs().max(1.0), "loss {loss} vs {loss_ref}");
    check("softmax dlogits", cl, &dl, &dl_ref, 10);

    let bn = BatchNorm::default();
    let (xb, gamma, beta) = (random(&[4, 3, 5, 5], 9), random(&[3], 10), random(&[3], 11));
    let (mut rm, mut rv) = (up(&Tensor::zeros(&[3])), up(&Tensor::full(&[3], 1.0)));
    let (yb, stats) = cl.batch_norm_train(&up(&xb), &up(&gamma), &up(&beta), &mut rm, &mut rv, &bn).unwrap();
    let (mut rm_ref, mut rv_ref) = (Tensor::zeros(&[3]), Tensor::full(&[3], 1.0));
    let (yb_ref, stats_ref) = reference.batch_norm_train(&xb, &gamma, &beta, &mut rm_ref, &mut rv_ref, &bn).unwrap();
    check("batch norm y", cl, &yb, &yb_ref, 100);
    check("batch norm running_var", cl, &rv, &rv_ref, 100);
    let dyb = random(&[4, 3, 5, 5], 12);
    let gb = cl.batch_norm_backward(&up(&xb), &up(&gamma), &stats, &up(&dyb), &bn, GradRequest::ALL).unwrap();
    let rb = reference.batch_norm_backward(&xb, &gamma, &stats_ref, &dyb, &bn, GradRequest::ALL).unwrap();
    check("batch norm dx", cl, gb.dx.as_ref().unwrap(), rb.dx.as_ref().unwrap(), 100);
    check("batch norm dgamma", cl, gb.dw.as_ref().unwrap(), rb.dw.as_ref().unwrap(), 100);
    check("batch norm dbeta", cl, gb.db.as_ref().unwrap(), rb.db.as_ref().unwrap(), 100);
    let drop = Dropout { p: 0.4, seed: 3, step: 8 };
    let yd = cl.dropout_forward(&up(&xb), &drop).unwrap();
    check("dropout", cl, &yd, &reference.dropout_forward(&xb, &drop).unwrap(), 1);
}

fn kernels_run(cl: &OpenCl) -> Vec<&'static str> {
    cl.profile_by_kernel().unwrap().into_iter().map(|(name, _, _)| name).collect()
}

/// A [m, k] · [k, n] product large enough for full 16 x 16 GEMM groups,
/// checked against the host; returns the kernels it ran.
fn large_matmul(cl: &OpenCl) -> Vec<&'static str> {
    let (m, k, n) = (200, 70, 600);
    let (a, b) = (random(&[m, k], 11), random(&[k, n], 12));
    let up = |t: &Tensor<f64>| cl.upload(&t.cast::<f32>()).unwrap();
    cl.reset_profile();
    let c = cl.matmul(&up(&a), &up(&b)).unwrap();
    let expected = Tensor::from_fn(&[m, n], |i| {
        let (r, col) = (i / n, i % n);
        (0..k).map(|t| a.data()[r * k + t] * b.data()[t * n + col]).sum()
    });
    check("matmul", cl, &c, &expected, k);
    kernels_run(cl)
}

#[test]
fn a_local_gemm_tile_past_local_memory_falls_back_to_the_plain_gemm() {
    // 8 x 32 tiles, forced local: even a k-depth of 1 stages
    // (16·8 + 16·32)·4 = 2560 bytes per 16 x 16 group, over 2 KiB.
    let config = Config { local_gemm: Some(true), gemm_tile: Some((8, 32, 16)), ..Config::default() };
    let cl = OpenCl::with_limits(&config, |l: &mut Limits| l.local_mem_bytes = 2048).unwrap();
    assert_eq!(large_matmul(&cl), ["gemm_nn"]);
    every_op_matches(&cl);
    // With room, the same configuration stages its tiles.
    let roomy = OpenCl::with_limits(&config, |l: &mut Limits| l.local_mem_bytes = 64 * 1024).unwrap();
    assert_eq!(large_matmul(&roomy), ["gemm_nn_local"]);
}

#[test]
fn kernels_limited_to_narrow_work_groups_still_run() {
    // A device allowing 64 work-items per group but only 16 along x: every
    // launcher's group must shrink (the line kernels' 64-wide rows, the
    // 16 x 16 GEMM groups, the 64-wide reduction trees). Not fewer than 16:
    // Intel's CPU runtime (2026.2) miscompiles softmax_xent's tree for
    // groups narrower than its 16-wide SIMD (only work-item 0's partial
    // survives; right with -cl-opt-disable), and no real device limits a
    // dimension below 16.
    for local_gemm in [true, false] {
        let config = Config { local_gemm: Some(local_gemm), ..Config::default() };
        let cl = OpenCl::with_limits(&config, |l: &mut Limits| {
            l.max_work_group = 64;
            l.max_work_items = [16, 64, 64];
        })
        .unwrap();
        every_op_matches(&cl);
    }
}

/// The vector width follows the device's SIMD width (16 on AVX-512, 8 on
/// AVX2, 4 on SSE): every op, bias_grad_rows' VW-wide sums included, at the
/// narrower widths an AVX2 or SSE CPU gets.
#[test]
fn every_op_matches_at_every_vector_width() {
    for tile in [(6, 16, 8), (4, 8, 4)] {
        let config = Config { gemm_tile: Some(tile), ..Config::default() };
        let cl = OpenCl::with_limits(&config, |_| {}).unwrap();
        every_op_matches(&cl);
    }
}
