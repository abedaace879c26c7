//! Every op of the OpenCL backend against the f64 reference (kernels-naive)
//! on fixed problems chosen for their edges: 1x1 kernels, a kernel as large
//! as the padded input, stride larger than the kernel, non-square kernels
//! and strides, dilation, batch 1, odd sizes, GEMM sizes off the tile grid,
//! overlapping pool windows and ties. The random cross-backend suite is
//! harness/tests/opencl.rs. A missing OpenCL device fails these tests.

use kernels_core::{
    Backend, Conv2d, GradRequest, Optimizer, Pool2d, PoolKind, Shaped, SplitMix64, Tensor, Tolerance, compare,
};
use kernels_naive::Naive;
use kernels_opencl::{Config, OpenCl};

fn backend() -> OpenCl {
    OpenCl::new().expect("an OpenCL device (install pocl-opencl-icd and ocl-icd-opencl-dev, or run `make setup`)")
}

fn random(shape: &[usize], seed: u64) -> Tensor<f64> {
    let mut rng = SplitMix64::new(seed);
    Tensor::from_fn(shape, |_| rng.uniform(-1.0, 1.0))
}

/// Uploads the f32 rounding of `t`, so both backends see the same inputs.
fn up(cl: &OpenCl, t: &Tensor<f64>) -> kernels_opencl::ClTensor {
    cl.upload(&t.cast::<f32>()).unwrap()
}

fn f32_exact(t: &Tensor<f64>) -> Tensor<f64> {
    t.cast::<f32>().cast::<f64>()
}

fn check(what: &str, cl: &OpenCl, actual: &kernels_opencl::ClTensor, expected: &Tensor<f64>, terms: usize) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shape");
    let host = cl.download(actual).unwrap();
    let scale = expected.data().iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let tol = Tolerance::f32_reduction(terms, scale);
    let c = compare(host.data(), expected.data(), &tol).unwrap();
    assert!(c.passed(), "{what}: {c}");
}

fn conv_case(cl: &OpenCl, x: [usize; 4], w: [usize; 4], params: Conv2d, seed: u64) {
    let reference = Naive::<f64>::new();
    let (xh, wh, bh) =
        (f32_exact(&random(&x, seed)), f32_exact(&random(&w, seed + 1)), f32_exact(&random(&[w[0]], seed + 2)));
    let (xd, wd, bd) = (up(cl, &xh), up(cl, &wh), up(cl, &bh));
    let what = format!("conv x {x:?} w {w:?} {params:?}");
    let y = cl.conv2d_forward(&xd, &wd, Some(&bd), &params).unwrap();
    let y_ref = reference.conv2d_forward(&xh, &wh, Some(&bh), &params).unwrap();
    let crs = w[1] * w[2] * w[3];
    check(&format!("{what} forward"), cl, &y, &y_ref, crs);
    let dyh = f32_exact(&random(y_ref.shape(), seed + 3));
    let dyd = up(cl, &dyh);
    let g = cl.conv2d_backward(&xd, &wd, &dyd, &params, GradRequest::ALL).unwrap();
    let r = reference.conv2d_backward(&xh, &wh, &dyh, &params, GradRequest::ALL).unwrap();
    let p = y_ref.shape()[2] * y_ref.shape()[3];
    check(&format!("{what} dx"), cl, g.dx.as_ref().unwrap(), r.dx.as_ref().unwrap(), w[0] * w[2] * w[3]);
    check(&format!("{what} dw"), cl, g.dw.as_ref().unwrap(), r.dw.as_ref().unwrap(), x[0] * p);
    check(&format!("{what} db"), cl, g.db.as_ref().unwrap(), r.db.as_ref().unwrap(), x[0] * p);
    // Only the parameters: dx absent.
    let g = cl.conv2d_backward(&xd, &wd, &dyd, &params, GradRequest::PARAMS).unwrap();
    assert!(g.dx.is_none() && g.dw.is_some() && g.db.is_some());
}

#[test]
fn conv_matches_the_reference_on_edge_shapes() {
    // Each stride-1 shape through both conv paths: im2col + GEMM and the
    // direct kernel (forced, whatever the size predicate would pick).
    for direct_conv in [Some(false), Some(true)] {
        let cl = OpenCl::with_config(None, &Config { direct_conv, ..Config::default() }).unwrap();
        conv_edge_shapes(&cl);
    }
}

fn conv_edge_shapes(cl: &OpenCl) {
    let dil = |stride: [usize; 2], padding: [usize; 2], dilation: [usize; 2]| Conv2d { stride, padding, dilation };
    conv_case(cl, [2, 3, 7, 9], [4, 3, 3, 3], Conv2d::new(1, 1), 1);
    conv_case(cl, [1, 1, 4, 4], [1, 1, 3, 3], Conv2d::new(1, 0), 2);
    conv_case(cl, [3, 5, 6, 6], [7, 5, 1, 1], Conv2d::new(1, 0), 3); // pointwise fast path
    conv_case(cl, [2, 4, 5, 5], [3, 4, 1, 1], Conv2d::new(2, 1), 4); // 1x1, strided: general path
    conv_case(cl, [2, 2, 5, 5], [3, 2, 7, 7], Conv2d::new(1, 1), 5); // kernel = padded input
    conv_case(cl, [2, 3, 11, 10], [5, 3, 2, 3], dil([3, 4], [1, 0], [1, 1]), 6); // stride > kernel, non-square
    conv_case(cl, [1, 2, 9, 11], [3, 2, 3, 2], dil([1, 2], [2, 1], [2, 3]), 7); // dilation
    conv_case(cl, [3, 1, 28, 28], [6, 1, 5, 5], Conv2d::new(1, 2), 8); // lenet-c1 shape, small batch
    conv_case(cl, [2, 6, 14, 14], [16, 6, 5, 5], Conv2d::new(1, 0), 9); // lenet-c2
    conv_case(cl, [1, 17, 9, 9], [33, 17, 3, 3], Conv2d::new(1, 1), 10); // M, N, K off the tile grid
    conv_case(cl, [2, 2, 5, 6], [3, 2, 3, 3], Conv2d::new(1, 3), 11); // padding > R−1: dX falls back
    conv_case(cl, [2, 20, 6, 7], [9, 20, 2, 2], dil([1, 1], [0, 1], [2, 1]), 12); // 9 filters: a partial block
}

#[test]
fn linear_matches_the_reference_off_the_tile_grid() {
    let cl = backend();
    let reference = Naive::<f64>::new();
    for (seed, (n, i, o)) in
        [(1, 1, 1), (3, 5, 7), (37, 41, 19), (64, 128, 96), (256, 400, 120), (5, 84, 10)].into_iter().enumerate()
    {
        let seed = seed as u64 * 10;
        let (xh, wh, bh) = (
            f32_exact(&random(&[n, i], seed)),
            f32_exact(&random(&[o, i], seed + 1)),
            f32_exact(&random(&[o], seed + 2)),
        );
        let (xd, wd, bd) = (up(&cl, &xh), up(&cl, &wh), up(&cl, &bh));
        let y = cl.linear_forward(&xd, &wd, Some(&bd)).unwrap();
        let y_ref = reference.linear_forward(&xh, &wh, Some(&bh)).unwrap();
        check(&format!("linear {n}x{i}->{o} forward"), &cl, &y, &y_ref, i);
        let y = cl.linear_forward(&xd, &wd, None).unwrap();
        let y_ref = reference.linear_forward(&xh, &wh, None).unwrap();
        check(&format!("linear {n}x{i}->{o} forward, no bias"), &cl, &y, &y_ref, i);
        let dyh = f32_exact(&random(&[n, o], seed + 3));
        let g = cl.linear_backward(&xd, &wd, &up(&cl, &dyh), GradRequest::ALL).unwrap();
        let r = reference.linear_backward(&xh, &wh, &dyh, GradRequest::ALL).unwrap();
        check("linear dx", &cl, g.dx.as_ref().unwrap(), r.dx.as_ref().unwrap(), o);
        check("linear dw", &cl, g.dw.as_ref().unwrap(), r.dw.as_ref().unwrap(), n);
        check("linear db", &cl, g.db.as_ref().unwrap(), r.db.as_ref().unwrap(), n);
    }
}

#[test]
fn pooling_matches_the_reference_with_overlaps_padding_and_ties() {
    // The default (tiled backward by window bands on a CPU) and the GPU
    // variants (tiled backward by dx rows).
    pooling_cases(&backend());
    pooling_cases(&OpenCl::with_config(None, &Config { local_gemm: Some(true), ..Config::default() }).unwrap());
}

fn pooling_cases(cl: &OpenCl) {
    let reference = Naive::<f64>::new();
    let cases = [
        ([2, 3, 8, 8], Pool2d::new(PoolKind::Max, 2, 2, 0)),
        ([1, 2, 9, 7], Pool2d::new(PoolKind::Max, 2, 2, 0)), // tiled, with a trailing row and column
        ([1, 2, 7, 9], Pool2d { kind: PoolKind::Avg, window: [3, 2], stride: [3, 2], padding: [0, 0] }),
        ([2, 2, 10, 7], Pool2d { kind: PoolKind::Max, window: [3, 2], stride: [3, 2], padding: [0, 0] }), // not 2x2
        ([1, 2, 9, 7], Pool2d::new(PoolKind::Max, 3, 2, 1)),
        ([2, 1, 7, 9], Pool2d { kind: PoolKind::Max, window: [3, 2], stride: [1, 3], padding: [1, 1] }),
        ([2, 3, 8, 8], Pool2d::new(PoolKind::Avg, 2, 2, 0)),
        ([1, 2, 9, 7], Pool2d::new(PoolKind::Avg, 3, 2, 1)),
        ([1, 1, 5, 5], Pool2d::new(PoolKind::Avg, 5, 1, 2)),
    ];
    for (seed, (shape, params)) in cases.into_iter().enumerate() {
        // Values on a coarse grid so windows hold ties.
        let mut rng = SplitMix64::new(seed as u64);
        let xh = Tensor::from_fn(&shape, |_| (rng.below(4) as f64) - 1.5);
        let xd = up(cl, &xh);
        let y = cl.pool2d_forward(&xd, &params).unwrap();
        let y_ref = reference.pool2d_forward(&xh, &params).unwrap();
        check(&format!("pool {shape:?} {params:?} forward"), cl, &y, &y_ref, params.window[0] * params.window[1]);
        let dyh = f32_exact(&random(y_ref.shape(), seed as u64 + 100));
        let dx = cl.pool2d_backward(&xd, &up(cl, &dyh), &params).unwrap();
        let dx_ref = reference.pool2d_backward(&xh, &dyh, &params).unwrap();
        check(&format!("pool {shape:?} {params:?} backward"), cl, &dx, &dx_ref, params.window[0] * params.window[1]);
    }
}

#[test]
fn activations_loss_and_optimisers_match_the_reference() {
    let cl = backend();
    let reference = Naive::<f64>::new();
    let xh = f32_exact(&random(&[3, 4, 5, 7], 1).cast::<f64>());
    let dyh = f32_exact(&random(&[3, 4, 5, 7], 2));
    let (xd, dyd) = (up(&cl, &xh), up(&cl, &dyh));
    check("relu", &cl, &cl.relu_forward(&xd).unwrap(), &reference.relu_forward(&xh).unwrap(), 1);
    check("relu dx", &cl, &cl.relu_backward(&xd, &dyd).unwrap(), &reference.relu_backward(&xh, &dyh).unwrap(), 1);
    let sd = cl.sigmoid_forward(&xd).unwrap();
    let sh = reference.sigmoid_forward(&xh).unwrap();
    check("sigmoid", &cl, &sd, &sh, 4);
    let sh32 = f32_exact(&cl.download(&sd).unwrap().cast::<f64>());
    check(
        "sigmoid dx",
        &cl,
        &cl.sigmoid_backward(&sd, &dyd).unwrap(),
        &reference.sigmoid_backward(&sh32, &dyh).unwrap(),
        4,
    );

    let logits = f32_exact(&random(&[37, 10], 3).cast::<f64>());
    let labels: Vec<usize> = (0..37).map(|i| (i * 7) % 10).collect();
    let (loss, dl) = cl.softmax_cross_entropy(&up(&cl, &logits), &labels).unwrap();
    let (loss_ref, dl_ref) = reference.softmax_cross_entropy(&logits, &labels).unwrap();
    assert!((loss - loss_ref).abs() < 1e-5 * loss_ref.abs().max(1.0), "loss {loss} vs {loss_ref}");
    check("dlogits", &cl, &dl, &dl_ref, 10);
    assert!(cl.softmax_cross_entropy(&up(&cl, &logits), &[0; 36]).is_err());
    let mut bad = labels.clone();
    bad[3] = 10;
    assert!(cl.softmax_cross_entropy(&up(&cl, &logits), &bad).is_err());

    for opt in [
        Optimizer::sgd(0.1),
        Optimizer::Sgd { lr: 0.1, weight_decay: 0.01 },
        Optimizer::momentum(0.05, 0.9),
        Optimizer::nesterov(0.05, 0.9),
        Optimizer::adagrad(0.1),
        Optimizer::rmsprop(0.01),
        Optimizer::adam(0.01),
        Optimizer::Adam { lr: 0.01, beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay: 0.1 },
    ] {
        let shape = [13, 7];
        let ph = f32_exact(&random(&shape, 5));
        let mut pd = up(&cl, &ph);
        let mut pr = ph.clone();
        let mut sd = cl.optimizer_state(&opt, &shape).unwrap();
        let mut sr = reference.optimizer_state(&opt, &shape).unwrap();
        for step in 0..4 {
            let gh = f32_exact(&random(&shape, 50 + step));
            cl.optimizer_step(&mut pd, &up(&cl, &gh), &mut sd).unwrap();
            reference.optimizer_step(&mut pr, &gh, &mut sr).unwrap();
        }
        check(&format!("{} after 4 steps", opt.name()), &cl, &pd, &pr, 16);
    }
}

#[test]
fn invalid_calls_are_errors_not_panics() {
    let cl = backend();
    let x = cl.zeros(&[1, 2, 5, 5]).unwrap();
    let w = cl.zeros(&[3, 4, 3, 3]).unwrap();
    assert!(cl.conv2d_forward(&x, &w, None, &Conv2d::default()).is_err());
    let w = cl.zeros(&[3, 2, 3, 3]).unwrap();
    assert!(cl.conv2d_forward(&x, &w, None, &Conv2d::new(0, 0)).is_err());
    assert!(cl.pool2d_forward(&x, &Pool2d::new(PoolKind::Max, 2, 2, 2)).is_err());
    assert!(cl.reshape(x, &[7]).is_err());
    assert!(OpenCl::with_device("no such device anywhere").is_err());
}

#[test]
fn device_selection_and_profile() {
    let cl = backend();
    assert!(cl.name().starts_with("opencl ("), "{}", cl.name());
    let by_index = OpenCl::with_device("0:0").unwrap();
    let needle: String = cl.device_name().chars().take(8).collect();
    OpenCl::with_device(&needle.to_uppercase()).unwrap();
    by_index.reset_profile();
    let x = by_index.upload(&Tensor::full(&[512, 512], 1.5f32)).unwrap();
    let y = by_index.relu_forward(&x).unwrap();
    let host = by_index.download(&y).unwrap();
    assert!(host.data().iter().all(|&v| v == 1.5));
    let p = by_index.profile();
    assert_eq!((p.launches, p.transfers), (1, 2), "{p:?}");
    assert!(p.kernel_ns > 0 && p.transfer_ns > 0, "{p:?}");
}

fn matmul_case(cl: &OpenCl, m: usize, k: usize, n: usize, seed: u64) {
    let (a, b) = (f32_exact(&random(&[m, k], seed)), f32_exact(&random(&[k, n], seed + 1)));
    let c = cl.matmul(&up(cl, &a), &up(cl, &b)).unwrap();
    let want = Tensor::from_fn(&[m, n], |e| (0..k).map(|q| a.data()[(e / n) * k + q] * b.data()[q * n + e % n]).sum());
    check(&format!("matmul {m}x{k}x{n} with {}", cl.build_options()), cl, &c, &want, k);
}

#[test]
fn gemm_variants_match_the_reference() {
    // The default tile, the GPU variants (local memory, 4x4 float4 tiles,
    // row-wise im2col) run here on whatever device there is, and odd tiles
    // down to scalar lanes; the direct conv with 8-, 2- and 16-wide pixel
    // vectors (its width follows the GEMM's, at least 2).
    let configs = [
        Config::default(),
        Config {
            local_gemm: Some(true),
            gemm_tile: Some((4, 4, 4)),
            im2col_rows: Some(true),
            direct_conv: Some(false),
        },
        Config {
            local_gemm: Some(true),
            gemm_tile: Some((3, 8, 8)),
            im2col_rows: Some(false),
            direct_conv: Some(true),
        },
        Config {
            local_gemm: Some(false),
            gemm_tile: Some((5, 16, 8)),
            im2col_rows: Some(true),
            direct_conv: Some(false),
        },
        Config {
            local_gemm: Some(false),
            gemm_tile: Some((3, 3, 1)),
            im2col_rows: Some(false),
            direct_conv: Some(true),
        },
    ];
    for config in configs {
        let cl = OpenCl::with_config(None, &config).unwrap();
        for (seed, (m, k, n)) in
            [(1, 1, 1), (7, 5, 3), (33, 17, 65), (64, 64, 64), (65, 130, 97), (6, 25, 784)].into_iter().enumerate()
        {
            matmul_case(&cl, m, k, n, seed as u64);
        }
        conv_case(&cl, [2, 3, 9, 8], [5, 3, 3, 3], Conv2d::new(1, 1), 20);
        conv_case(&cl, [5, 1, 12, 12], [3, 1, 5, 5], Conv2d::new(1, 0), 22); // 5 images: rounded group dims
        conv_case(&cl, [2, 4, 6, 6], [7, 4, 1, 1], Conv2d::new(1, 0), 21);
    }
    let cl = backend();
    let a = cl.zeros(&[2, 3]).unwrap();
    assert!(cl.matmul(&a, &a).is_err(), "a 2x3 by 2x3 product must be refused");
}
