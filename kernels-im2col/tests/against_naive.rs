//! Quick checks of every op against the f64 reference on seeded random
//! problems, including the awkward geometries of DESIGN.md and shapes large
//! enough to take several tiles. The full property suite lives in
//! harness/tests/im2col.rs.

use kernels_core::{
    Backend, Conv2d, GradRequest, LinearGeometry, Optimizer, Pool2d, PoolKind, Shaped, SplitMix64, Tensor, Tolerance,
    compare,
};
use kernels_im2col::{ConvPath, DwPath, Forced, Im2col, Isa, TileTargets};
use kernels_naive::Naive;

fn random(rng: &mut SplitMix64, shape: &[usize]) -> Tensor<f64> {
    let len = shape.iter().product();
    Tensor::new(shape, rng.uniform_vec(len, -1.0, 1.0)).unwrap()
}

fn check(what: &str, actual: &Tensor<f32>, expected: &Tensor<f64>, terms: usize) {
    assert_eq!(actual.shape(), expected.shape(), "{what}");
    let scale = expected.data().iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let c = compare(actual.data(), expected.data(), &Tolerance::f32_reduction(terms, scale)).unwrap();
    assert!(c.passed(), "{what}: {c}");
}

fn conv_case(fast: &Im2col, rng: &mut SplitMix64, x: [usize; 4], f: [usize; 3], params: Conv2d) {
    let naive = Naive::<f64>::new();
    let what = format!("conv x {x:?} filters {f:?} {params:?}");
    let xt = random(rng, &x);
    let wt = random(rng, &[f[0], x[1], f[1], f[2]]);
    let bt = random(rng, &[f[0]]);
    let y = naive.conv2d_forward(&xt, &wt, Some(&bt), &params).unwrap();
    let y32 = fast.conv2d_forward(&xt.cast(), &wt.cast(), Some(&bt.cast()), &params).unwrap();
    let crs = x[1] * f[1] * f[2];
    check(&format!("{what} y"), &y32, &y, crs);
    let dy = random(rng, y.shape());
    let g = naive.conv2d_backward(&xt, &wt, &dy, &params, GradRequest::ALL).unwrap();
    let g32 = fast.conv2d_backward(&xt.cast(), &wt.cast(), &dy.cast(), &params, GradRequest::ALL).unwrap();
    let pixels = y.shape()[2] * y.shape()[3];
    check(&format!("{what} dx"), g32.dx.as_ref().unwrap(), g.dx.as_ref().unwrap(), f[0] * f[1] * f[2]);
    check(&format!("{what} dw"), g32.dw.as_ref().unwrap(), g.dw.as_ref().unwrap(), x[0] * pixels);
    check(&format!("{what} db"), g32.db.as_ref().unwrap(), g.db.as_ref().unwrap(), x[0] * pixels);
    let p = fast.conv2d_backward(&xt.cast(), &wt.cast(), &dy.cast(), &params, GradRequest::PARAMS).unwrap();
    assert!(p.dx.is_none());
    assert_eq!(p.dw.unwrap().data(), g32.dw.as_ref().unwrap().data(), "{what}: dw differs without dx");
}

#[test]
fn conv_matches_the_reference_on_awkward_and_tiled_shapes() {
    let mut rng = SplitMix64::new(11);
    // One thread reuses each worker's scratch across many tiles; three
    // splits work unevenly.
    let backends = [1, 2, 3].map(|t| Im2col::with_threads(t).unwrap());
    let d = |s: [usize; 2], p: [usize; 2], dl: [usize; 2]| Conv2d { stride: s, padding: p, dilation: dl };
    let cases = [
        ([2, 3, 7, 9], [4, 1, 1], Conv2d::default()),           // pointwise path
        ([3, 2, 6, 6], [2, 1, 1], Conv2d::new(2, 0)),           // 1x1 strided: unfold path
        ([1, 1, 5, 5], [1, 5, 5], Conv2d::default()),           // kernel as large as the input
        ([2, 2, 4, 4], [3, 6, 6], Conv2d::new(1, 1)),           // kernel as large as the padded input
        ([2, 3, 9, 8], [2, 2, 3], d([3, 4], [1, 0], [1, 1])),   // stride > kernel, non-square
        ([2, 2, 11, 10], [3, 3, 2], d([1, 2], [2, 1], [2, 3])), // dilation
        ([1, 5, 13, 7], [1, 3, 3], Conv2d::new(2, 1)),          // batch 1, one filter
        ([3, 7, 40, 40], [5, 7, 7], Conv2d::new(1, 3)),         // several pixel tiles
        ([2, 300, 20, 20], [4, 7, 7], Conv2d::new(1, 3)),       // channel tiles too
        ([13, 4, 6, 6], [5, 3, 3], Conv2d::new(1, 1)),          // images grouped per tile, short last group
        ([150, 2, 4, 4], [3, 3, 3], Conv2d::new(1, 1)),         // many groups per worker
        ([9, 600, 5, 5], [3, 3, 3], Conv2d::new(1, 1)),         // grouped images and channel tiles
        ([3, 1, 28, 28], [6, 5, 5], Conv2d::new(1, 2)),         // direct path (lenet-c1 geometry)
        ([2, 2, 21, 19], [8, 3, 3], Conv2d::new(1, 1)), // direct: filter remainder, odd rows, OW not a multiple of 16
        ([2, 3, 16, 18], [7, 3, 1], Conv2d::new(1, 0)), // direct: OW exactly 16, non-square kernel
        ([3, 6, 14, 14], [16, 5, 5], Conv2d::new(1, 0)), // filter-vectorised (lenet-c2)
        ([2, 9, 9, 9], [7, 3, 3], Conv2d::new(2, 1)),   // filter-vectorised, strided
        ([7, 3, 5, 5], [4, 1, 1], Conv2d::default()),   // pointwise over several images
    ];
    for (x, f, params) in cases {
        for backend in &backends {
            conv_case(backend, &mut rng, x, f, params);
        }
    }
}

#[test]
fn winograd_matches_the_reference() {
    let mut rng = SplitMix64::new(23);
    // Default blocks, and blocks of one tile row (tiny tile target) so a
    // patch's overlap crosses blocks; 1 to 3 threads.
    let tiny = TileTargets { floats: 1, ..TileTargets::default() };
    let backends = [
        Im2col::with_threads(1).unwrap(),
        Im2col::with_threads(2).unwrap().with_tile_targets(tiny),
        Im2col::with_threads(3).unwrap(),
    ];
    let cases = [
        ([3, 32, 8, 8], [32, 3, 3], Conv2d::new(1, 1)),   // even output
        ([4, 33, 9, 7], [40, 3, 3], Conv2d::new(1, 1)),   // odd output: tiles overhang
        ([3, 32, 9, 10], [34, 3, 3], Conv2d::new(1, 0)),  // no padding
        ([3, 35, 6, 5], [32, 3, 3], Conv2d::new(1, 2)),   // padding 2: taps beyond the image
        ([5, 48, 13, 11], [32, 3, 3], Conv2d::new(1, 1)), // uneven runs of images
    ];
    for (x, f, params) in cases {
        let g = kernels_core::ConvGeometry::from_dims(x, f, &params).unwrap();
        for backend in &backends {
            assert_eq!(backend.conv_plan(&g).unwrap().path, ConvPath::Winograd, "{x:?} {f:?}");
            conv_case(backend, &mut rng, x, f, params);
        }
    }
    // Fewer images than threads, or too few channels: the unfold path.
    let three = Im2col::with_threads(3).unwrap();
    let g = kernels_core::ConvGeometry::from_dims([2, 32, 8, 8], [32, 3, 3], &Conv2d::new(1, 1)).unwrap();
    assert_eq!(three.conv_plan(&g).unwrap().path, ConvPath::Unfold);
    let g = kernels_core::ConvGeometry::from_dims([4, 16, 8, 8], [32, 3, 3], &Conv2d::new(1, 1)).unwrap();
    assert_eq!(three.conv_plan(&g).unwrap().path, ConvPath::Unfold);
}

#[test]
fn unpacked_gemms_matches_the_reference() {
    let mut rng = SplitMix64::new(31);
    // Tiles of about 8 channels x 81 pixels: channel splits rounded to
    // 8-row blocks (with a ragged last tile: the unpacked GEMM's padded remainder
    // block), pixel tiles, grouped images, stride-2 dX by phase
    // (subpixel.rs); 1 to 3 threads.
    // direct_wide would take the forwards with 96+ pixels (step 63); its
    // own test below covers it, this one the unfold path.
    let small =
        TileTargets { floats: 8 * 9 * 81, columns: 40, winograd: false, direct_wide: false, ..TileTargets::default() };
    // Every ISA this CPU has: below AVX-512 the same plans keep
    // matrixmultiply (and col2im for dX).
    let backends: Vec<Im2col> = Isa::supported()
        .into_iter()
        .flat_map(|isa| [1, 2, 3].map(|t| Im2col::with_threads(t).unwrap().with_tile_targets(small).with_isa(isa)))
        .collect();
    let cases = [
        ([3, 16, 12, 12], [40, 3, 3], Conv2d::new(2, 1)), // strided (phased), 40 filters: a masked column block
        ([5, 20, 9, 9], [32, 3, 3], Conv2d::new(1, 1)),   // 20 channels split 8 + 8 + 4
        ([2, 8, 23, 21], [33, 3, 3], Conv2d::new(1, 0)),  // pixel tiles
        ([4, 24, 14, 14], [64, 3, 3], Conv2d::new(2, 1)), // resnet-s2 in small
        ([2, 8, 10, 12], [32, 4, 4], Conv2d::new(2, 1)),  // stride 2, even kernel: shifts of −1, 0 and +1
        ([3, 8, 8, 8], [32, 1, 1], Conv2d::new(2, 0)),    // 1x1 stride 2: three of four phases get no tap
        ([2, 8, 9, 9], [32, 3, 3], Conv2d::new(2, 1)),    // stride 2, odd size: col2im, not by phase
        ([2, 3, 30, 30], [40, 5, 5], Conv2d::new(2, 1)),  // direct_wide forward, unfolded backward, 75 rows
    ];
    for (x, f, params) in cases {
        let g = kernels_core::ConvGeometry::from_dims(x, f, &params).unwrap();
        for backend in &backends {
            let plan = backend.conv_plan(&g).unwrap();
            let avx512 = plan.isa == Isa::Avx512;
            assert_eq!(plan.unpacked_gemms, avx512, "{x:?} {f:?}: {plan:?}");
            let by_phase = params.stride == [2, 2] && x[2] == 2 * g.oh && x[3] == 2 * g.ow;
            assert_eq!(plan.subpixel_dx, avx512 && by_phase, "{x:?} {f:?}: {plan:?}");
            conv_case(backend, &mut rng, x, f, params);
        }
    }
}

#[test]
fn direct_wide_matches_the_reference() {
    let mut rng = SplitMix64::new(31);
    // Forced, at every ISA this CPU has: the planner unfolds these at the
    // portable level (OPTIMISATION.md step 53), and the AVX2 and AVX-512
    // kernels differ.
    // dW both ways: unfold + GEMM and by filter blocks (direct/filters_grad.rs).
    let wide = |dw| TileTargets {
        force: Forced { forward: Some(ConvPath::DirectWide), dx: None, dw: Some(dw) },
        ..TileTargets::default()
    };
    let backends: Vec<Im2col> = Isa::supported()
        .into_iter()
        .flat_map(|isa| {
            [(1, DwPath::Unfold), (2, DwPath::DirectWide), (3, DwPath::Unfold), (1, DwPath::DirectWide)]
                .map(|(t, dw)| Im2col::with_threads(t).unwrap().with_tile_targets(wide(dw)).with_isa(isa))
        })
        .collect();
    let cases = [
        ([2, 3, 36, 36], [40, 11, 11], Conv2d::new(4, 2)), // alexnet-c1's kind: two blocks, the second partial
        ([3, 1, 13, 12], [17, 9, 8], Conv2d::new(1, 3)),   // one channel, 17 filters, padded
        ([1, 4, 9, 10], [32, 4, 4], Conv2d { stride: [2, 1], padding: [0, 1], dilation: [1, 2] }),
        ([2, 24, 20, 20], [40, 3, 3], Conv2d::new(2, 1)), // resnet-s2's kind: many channels, 10x10 outputs
        ([3, 20, 12, 12], [50, 3, 3], Conv2d::new(1, 0)), // mxnet-c2's kind: 100 pixels, K = 32 + 18
    ];
    for (x, f, params) in cases {
        let g = kernels_core::ConvGeometry::from_dims(x, f, &params).unwrap();
        for backend in &backends {
            assert_eq!(backend.conv_plan(&g).unwrap().path, ConvPath::DirectWide, "{x:?} {f:?}");
            conv_case(backend, &mut rng, x, f, params);
        }
    }
}

#[test]
fn pointwise_conv_skips_im2col() {
    let g = kernels_core::ConvGeometry::from_dims([2, 3, 7, 9], [4, 1, 1], &Conv2d::default()).unwrap();
    assert_eq!(Im2col::new().conv_plan(&g).unwrap().path, ConvPath::Pointwise);
}

#[test]
fn pooling_matches_the_reference() {
    let mut rng = SplitMix64::new(5);
    let naive = Naive::<f64>::new();
    let fast = Im2col::with_threads(2).unwrap();
    for (x, window, stride, padding) in [
        ([2, 3, 8, 8], [2, 2], [2, 2], [0, 0]),
        ([1, 2, 9, 7], [3, 3], [2, 2], [1, 1]),
        ([2, 1, 6, 9], [3, 2], [1, 3], [1, 1]), // overlapping rows, non-square
        // 2x2 stride 2 (pool.rs's fast paths) with odd sizes, leaving the
        // last row and column uncovered; non-overlapping windows that take
        // the general path: gaps between windows, 3x2.
        ([1, 2, 7, 9], [2, 2], [2, 2], [0, 0]),
        ([2, 2, 9, 10], [2, 2], [3, 3], [0, 0]),
        ([1, 3, 9, 8], [3, 2], [3, 2], [0, 0]),
    ] {
        for kind in [PoolKind::Max, PoolKind::Avg] {
            let params = Pool2d { kind, window, stride, padding };
            // Quantised values so max pooling sees ties.
            let mut xt = random(&mut rng, &x);
            xt.data_mut().iter_mut().for_each(|v| *v = (*v * 3.0).round());
            let y = naive.pool2d_forward(&xt, &params).unwrap();
            check(&format!("{params:?} y"), &fast.pool2d_forward(&xt.cast(), &params).unwrap(), &y, 16);
            let dy = random(&mut rng, y.shape());
            let dx = naive.pool2d_backward(&xt, &dy, &params).unwrap();
            let dx32 = fast.pool2d_backward(&xt.cast(), &dy.cast(), &params).unwrap();
            check(&format!("{params:?} dx"), &dx32, &dx, 16);
        }
    }
}

#[test]
fn linear_activations_loss_and_optimisers_match_the_reference() {
    let mut rng = SplitMix64::new(9);
    let naive = Naive::<f64>::new();
    let fast = Im2col::with_threads(2).unwrap();
    let g = LinearGeometry { n: 37, i: 50, o: 9 };
    let (x, w, b) = (random(&mut rng, &[g.n, g.i]), random(&mut rng, &[g.o, g.i]), random(&mut rng, &[g.o]));
    let y = naive.linear_forward(&x, &w, Some(&b)).unwrap();
    check("linear y", &fast.linear_forward(&x.cast(), &w.cast(), Some(&b.cast())).unwrap(), &y, g.i);
    let dy = random(&mut rng, y.shape());
    let r = naive.linear_backward(&x, &w, &dy, GradRequest::ALL).unwrap();
    let f = fast.linear_backward(&x.cast(), &w.cast(), &dy.cast(), GradRequest::ALL).unwrap();
    check("linear dx", f.dx.as_ref().unwrap(), r.dx.as_ref().unwrap(), g.o);
    check("linear dw", f.dw.as_ref().unwrap(), r.dw.as_ref().unwrap(), g.n);
    check("linear db", f.db.as_ref().unwrap(), r.db.as_ref().unwrap(), g.n);

    let big = random(&mut rng, &[3, 40000]);
    check("relu", &fast.relu_forward(&big.cast()).unwrap(), &naive.relu_forward(&big).unwrap(), 1);
    let dbig = random(&mut rng, &[3, 40000]);
    let relu_dx = fast.relu_backward(&big.cast(), &dbig.cast()).unwrap();
    check("relu dx", &relu_dx, &naive.relu_backward(&big, &dbig).unwrap(), 1);
    let s = naive.sigmoid_forward(&big).unwrap();
    check("sigmoid", &fast.sigmoid_forward(&big.cast()).unwrap(), &s, 1);
    let sig_dx = fast.sigmoid_backward(&s.cast(), &dbig.cast()).unwrap();
    check("sigmoid dx", &sig_dx, &naive.sigmoid_backward(&s, &dbig).unwrap(), 1);

    let labels: Vec<usize> = (0..g.n).map(|i| i % g.o).collect();
    let (loss, dl) = naive.softmax_cross_entropy(&y, &labels).unwrap();
    let (loss32, dl32) = fast.softmax_cross_entropy(&y.cast(), &labels).unwrap();
    assert!((loss - loss32).abs() < 1e-5 * loss.abs().max(1.0), "loss {loss32} vs {loss}");
    check("dlogits", &dl32, &dl, g.o);
    assert!(fast.softmax_cross_entropy(&y.cast(), &[0; 3]).is_err());

    for opt in [
        Optimizer::sgd(0.1),
        Optimizer::momentum(0.1, 0.9),
        Optimizer::nesterov(0.1, 0.9),
        Optimizer::adagrad(0.1),
        Optimizer::rmsprop(0.01),
        Optimizer::Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 },
    ] {
        // Several blocks (parallel) and one small parameter (updated inline).
        for len in [40000, 150] {
            let p0 = random(&mut rng, &[len]);
            let grad = random(&mut rng, &[len]);
            let (mut p, mut p32) = (p0.clone(), p0.cast::<f32>());
            let mut state = naive.optimizer_state(&opt, p.shape()).unwrap();
            let mut state32 = fast.optimizer_state(&opt, p.shape()).unwrap();
            for _ in 0..3 {
                naive.optimizer_step(&mut p, &grad, &mut state).unwrap();
                fast.optimizer_step(&mut p32, &grad.cast(), &mut state32).unwrap();
            }
            check(&format!("{} len {len}", opt.name()), &p32, &p, 4);
        }
    }
}

#[test]
fn install_runs_ops_on_the_backends_own_threads() {
    let be = Im2col::with_threads(2).unwrap();
    assert_eq!(rayon::current_thread_index(), None);
    let x = Tensor::new(&[1, 4], vec![-1.0f32, 2.0, -3.0, 4.0]).unwrap();
    let (inside, y) = be.clone().install(|| (rayon::current_thread_index(), be.relu_forward(&x).unwrap()));
    assert!(inside.is_some(), "install ran on the calling thread");
    assert_eq!(y.data(), &[0.0, 2.0, 0.0, 4.0]);
    // The global-pool backend too.
    let global = Im2col::new();
    assert!(global.install(rayon::current_thread_index).is_some());
}
