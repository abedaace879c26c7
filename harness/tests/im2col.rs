//! The im2col backend under the cross-backend conformance suite, plus what
//! only this backend has:
//!
//! - its tiling branches (pixel tiles, channel tiles, images grouped into
//!   one GEMM) forced on small problems by tiny tile targets, its three
//!   direct forward kernels and its Winograd path, each against the f64
//!   reference;
//! - every path above at every ISA this CPU runs (`Isa::supported`, through
//!   `Im2col::with_isa`: portable, AVX2 and, where present, AVX-512 kernels),
//!   each property's output naming the ISA it ran at;
//! - a gradient check of its own backward: central differences through its
//!   own f32 forward (loose tolerance), so a mistake it shared with the
//!   reference could not hide behind the comparison.

mod common;

use common::ops::{conv_backward, conv_forward};
use common::problems::{ConvProblem, random};
use kernels_core::{
    Backend, Conv2d, ConvGeometry, GradRequest, Pool2d, PoolKind, SplitMix64, Tensor, gradcheck, weighted_sum,
};
use kernels_im2col::{ConvPath, DwPath, DxPath, Forced, Im2col, Isa, TileTargets};
use proptest::prelude::*;

fn im2col() -> Im2col {
    Im2col::with_threads(2).expect("a 2-thread pool")
}

common::conformance_suite!(im2col);

/// The ISAs the per-path properties run at: every one this CPU has (at or
/// below KERNELS_ISA when it is set), printed so a reader of the test output
/// knows whether the AVX-512 code ran.
fn isas() -> Vec<Isa> {
    let isas = Isa::reachable();
    println!("im2col: ISAs exercised on this CPU: {isas:?}");
    isas
}

/// A 2-thread backend at `isa` with the given paths forced, so each
/// property below stays on its path whatever the planner's thresholds
/// become (a forced path that does not apply is an error, not a fallback).
fn forced(isa: Isa, forward: Option<ConvPath>, dx: Option<DxPath>, dw: Option<DwPath>) -> Im2col {
    let targets = TileTargets { force: Forced { forward, dx, dw }, isa: Some(isa), ..TileTargets::default() };
    im2col().with_tile_targets(targets)
}

/// One thread (so groups of images form even at batch 3) and tile targets
/// so small that every tiling branch runs on the suite's small problems.
fn tiny_tiles() -> Im2col {
    let targets = TileTargets { floats: 256, columns: 24, ..TileTargets::default() };
    Im2col::with_threads(1).expect("a 1-thread pool").with_tile_targets(targets)
}

/// Conv problems big enough to need several pixel tiles under `tiny_tiles`.
fn tiled_problem() -> impl Strategy<Value = ConvProblem> {
    let dims = (1..=4usize, 1..=5usize, 1..=5usize, 1..=4usize, 1..=4usize);
    let params = ([1..=2usize, 1..=2usize], [0..=2usize, 0..=2usize], [1..=2usize, 1..=2usize]);
    let extra = (0..=14usize, 0..=14usize, any::<bool>(), any::<u64>());
    (dims, params, extra).prop_map(|((n, c, k, r, s), (stride, padding, dilation), (eh, ew, bias, seed))| {
        let fit =
            |kernel: usize, axis: usize| (dilation[axis] * (kernel - 1) + 1).saturating_sub(2 * padding[axis]).max(1);
        let input = [n, c, fit(r, 0) + eh, fit(s, 1) + ew];
        ConvProblem { input, filters: [k, r, s], params: Conv2d { stride, padding, dilation }, bias, seed }
    })
}

#[test]
fn conv_tiling_branches_match_naive_f64() {
    for isa in isas() {
        let backend = tiny_tiles().with_isa(isa);
        // Explicit: one of each branch under the tiny targets.
        let plain = |input, filters, stride, padding| ConvProblem {
            input,
            filters,
            params: Conv2d::new(stride, padding),
            bias: true,
            seed: 3,
        };
        let edges = vec![
            ("pixel tiles", plain([1, 2, 14, 13], [3, 3, 3], 1, 1)),
            ("pixel and channel tiles", plain([2, 5, 12, 12], [2, 2, 2], 1, 0)),
            ("images grouped, channel tiles", plain([4, 5, 3, 3], [3, 2, 2], 1, 0)),
            ("strided pixel tiles", plain([2, 3, 17, 15], [4, 3, 3], 2, 1)),
        ];
        for (label, p) in &edges {
            let g = ConvGeometry::from_dims(p.input, p.filters, &p.params).unwrap();
            let plan = backend.conv_plan(&g).unwrap();
            let tiled = plan.pixels_per_tile < g.oh * g.ow || plan.channels_per_tile < g.c || plan.images_per_tile > 1;
            assert!(tiled, "{label}: {plan:?} does not tile");
        }
        common::run(&format!("conv2d forward, tiny tiles, {isa}"), edges.clone(), tiled_problem(), |p| {
            conv_forward(&backend, p)
        });
        common::run(&format!("conv2d backward, tiny tiles, {isa}"), edges, tiled_problem(), |p| {
            conv_backward(&backend, p, GradRequest::ALL)
        });
    }
}

/// Geometries the direct forward kernel takes: stride 1, no dilation,
/// C·R·S ≤ 64, OW ≥ 16.
fn direct_problem() -> impl Strategy<Value = ConvProblem> {
    // s ≥ 2: a 1x1 unpadded kernel is the pointwise path.
    let dims = (1..=3usize, 1..=3usize, 1..=13usize, 1..=4usize, 2..=4usize);
    (dims, 0..=2usize, 0..=2usize, 0..=20usize, 0..=3usize, any::<bool>(), any::<u64>()).prop_map(
        |((n, c, k, r, s), ph, pw, extra_w, extra_h, bias, seed)| {
            // OW = W + 2·pw − s + 1 ≥ 16.
            let w = (16 + s - 1).saturating_sub(2 * pw).max(1) + extra_w;
            let h = r.saturating_sub(2 * ph).max(1) + extra_h;
            let params = Conv2d { stride: [1, 1], padding: [ph, pw], dilation: [1, 1] };
            ConvProblem { input: [n, c, h, w], filters: [k, r, s], params, bias, seed }
        },
    )
}

#[test]
fn conv_direct_forward_and_backward_match_naive_f64() {
    for isa in isas() {
        let backend = forced(isa, Some(ConvPath::Direct), None, Some(DwPath::DirectTiny));
        let lenet_c1 =
            ConvProblem { input: [3, 1, 28, 28], filters: [6, 5, 5], params: Conv2d::new(1, 2), bias: true, seed: 5 };
        let wide =
            ConvProblem { input: [1, 2, 5, 40], filters: [13, 3, 3], params: Conv2d::new(1, 1), bias: false, seed: 6 };
        let edges = vec![("lenet-c1 geometry", lenet_c1), ("13 filters, one output row pair", wide)];
        let direct = |p: &ConvProblem| {
            let g = ConvGeometry::from_dims(p.input, p.filters, &p.params).unwrap();
            backend.conv_plan(&g).is_ok_and(|plan| plan.path == ConvPath::Direct && plan.isa == isa)
        };
        assert!(edges.iter().all(|(_, p)| direct(p)));
        common::run(&format!("conv2d forward, direct kernel, {isa}"), edges.clone(), direct_problem(), |p| {
            prop_assert!(direct(p), "not on the direct path: {p:?}");
            conv_forward(&backend, p)
        });
        // dW and db by direct/tiny_grad.rs, dX as planned.
        common::run(&format!("conv2d backward, direct dW kernel, {isa}"), edges, direct_problem(), |p| {
            conv_backward(&backend, p, GradRequest::ALL)
        });
    }
}

/// Geometries the filter-vectorised kernel takes: K ≤ 16, C·R·S ≥ 64,
/// 12 ≤ OH·OW < 512, any stride, padding and dilation.
fn direct_filters_problem() -> impl Strategy<Value = ConvProblem> {
    let dims = (1..=3usize, 8..=12usize, 1..=16usize, 3..=4usize, 3..=4usize);
    let params = ([1..=2usize, 1..=2usize], [0..=2usize, 0..=2usize], [1..=2usize, 1..=2usize]);
    (dims, params, 0..=6usize, 0..=6usize, any::<bool>(), any::<u64>()).prop_map(
        |((n, c, k, r, s), (stride, padding, dilation), eh, ew, bias, seed)| {
            let fit = |kernel: usize, axis: usize| {
                (dilation[axis] * (kernel - 1) + 1).saturating_sub(2 * padding[axis]).max(1)
            };
            // At least 4 output rows and columns: 16 ≥ 12 output pixels.
            let input = [n, c, fit(r, 0) + 3 * stride[0] + eh, fit(s, 1) + 3 * stride[1] + ew];
            ConvProblem { input, filters: [k, r, s], params: Conv2d { stride, padding, dilation }, bias, seed }
        },
    )
}

#[test]
fn conv_direct_filters_forward_and_backward_match_naive_f64() {
    for isa in isas() {
        let backend = forced(isa, Some(ConvPath::DirectFilters), None, Some(DwPath::DirectFilters));
        let lenet_c2 =
            ConvProblem { input: [3, 6, 14, 14], filters: [16, 5, 5], params: Conv2d::new(1, 0), bias: true, seed: 8 };
        let edges = vec![("lenet-c2 geometry", lenet_c2)];
        let on_path = |p: &ConvProblem| {
            let g = ConvGeometry::from_dims(p.input, p.filters, &p.params).unwrap();
            backend.conv_plan(&g).is_ok_and(|plan| plan.path == ConvPath::DirectFilters && plan.isa == isa)
        };
        assert!(edges.iter().all(|(_, p)| on_path(p)));
        common::run(
            &format!("conv2d forward, filter-vectorised kernel, {isa}"),
            edges.clone(),
            direct_filters_problem(),
            |p| {
                prop_assert!(on_path(p), "not on the filter-vectorised path: {p:?}");
                conv_forward(&backend, p)
            },
        );
        // Backward on the same path: dW by the implicit kernel, dX by col2im.
        common::run(
            &format!("conv2d backward, filter-vectorised kernel, {isa}"),
            edges,
            direct_filters_problem(),
            |p| conv_backward(&backend, p, GradRequest::ALL),
        );
    }
}

/// The filter-vectorised kernel's geometries that the direct dX also
/// takes: stride 1, undilated, inputs at most 16 columns wide.
fn narrow_direct_filters_problem() -> impl Strategy<Value = ConvProblem> {
    let dims = (1..=3usize, 1..=8usize, 1..=16usize, 3..=5usize, 3..=5usize);
    (dims, 0..=2usize, 0..=2usize, 0..=6usize, 0..=6usize, any::<bool>(), any::<u64>()).prop_map(
        |((n, c, k, r, s), ph, pw, eh, ew, bias, seed)| {
            // C·R·S ≥ 64; at least 4x4 outputs; W ≤ 5 + 3 + 6 = 14.
            let c = c.max(64usize.div_ceil(r * s));
            let params = Conv2d { stride: [1, 1], padding: [ph, pw], dilation: [1, 1] };
            ConvProblem { input: [n, c, r + 3 + eh, s + 3 + ew], filters: [k, r, s], params, bias, seed }
        },
    )
}

#[test]
fn conv_backward_every_dx_and_dw_algorithm_matches_naive_f64() {
    // Each dX and dW algorithm that applies to the filter-vectorised
    // geometries (stride 1 and W ≤ 16 for the direct dX), forced in every
    // pairing, at every ISA: a pass must not depend on which algorithm ran
    // the other.
    let lenet_c2 =
        ConvProblem { input: [3, 6, 14, 14], filters: [16, 5, 5], params: Conv2d::new(1, 0), bias: true, seed: 13 };
    for isa in isas() {
        for dx in [DxPath::Col2im, DxPath::Direct] {
            for dw in [DwPath::Unfold, DwPath::DirectFilters] {
                let backend = forced(isa, Some(ConvPath::DirectFilters), Some(dx), Some(dw));
                let applies = |p: &ConvProblem| {
                    let g = ConvGeometry::from_dims(p.input, p.filters, &p.params).unwrap();
                    backend.conv_plan(&g).is_ok_and(|plan| (plan.dx, plan.dw) == (dx, dw))
                };
                assert!(applies(&lenet_c2), "{dx:?} {dw:?}");
                let edges = vec![("lenet-c2 geometry", lenet_c2.clone())];
                let property = format!("conv2d backward, dX {dx:?}, dW {dw:?}, {isa}");
                common::run(&property, edges, narrow_direct_filters_problem(), |p| {
                    prop_assert!(applies(p), "{dx:?} {dw:?} do not apply to {p:?}");
                    conv_backward(&backend, p, GradRequest::ALL)
                });
            }
        }
    }
}

/// Geometries the wide direct kernel takes: K > 16, C·R·S ≥ 64, and C ≤ 4
/// (alexnet-c1's kind, 1 to 9 taps a side) or, in half the cases, 5 to 24
/// channels with at least 96 output pixels (resnet-s2's and mxnet-c2's
/// kind, 1 to 3 taps a side); any stride, padding and dilation.
fn direct_wide_problem() -> impl Strategy<Value = ConvProblem> {
    let dims = (1..=2usize, 1..=4usize, 17..=40usize, 5..=9usize, 5..=9usize);
    let params = ([1..=4usize, 1..=4usize], [0..=3usize, 0..=3usize], [1..=2usize, 1..=2usize]);
    let many = (any::<bool>(), 5..=24usize, 1..=3usize, 1..=3usize);
    (dims, params, many, 0..=8usize, 0..=8usize, any::<bool>(), any::<u64>()).prop_map(
        |((n, c, k, r, s), (stride, padding, dilation), many, eh, ew, bias, seed)| {
            let (many_channels, many_c, many_r, many_s) = many;
            let (c, r, s) = if many_channels { (many_c, many_r, many_s) } else { (c, r, s) };
            let c = c.max((64usize).div_ceil(r * s));
            let fit = |kernel: usize, axis: usize| {
                (dilation[axis] * (kernel - 1) + 1).saturating_sub(2 * padding[axis]).max(1)
            };
            // At least 4 output rows and columns (16 ≥ 8 output pixels),
            // or 10 (100 ≥ 96) past 4 channels.
            let side = if c > 4 { 9 } else { 3 };
            let input = [n, c, fit(r, 0) + side * stride[0] + eh, fit(s, 1) + side * stride[1] + ew];
            ConvProblem { input, filters: [k, r, s], params: Conv2d { stride, padding, dilation }, bias, seed }
        },
    )
}

#[test]
fn conv_direct_wide_forward_matches_naive_f64() {
    for isa in isas() {
        let backend = forced(isa, Some(ConvPath::DirectWide), None, None);
        let alexnet_like = ConvProblem {
            input: [2, 3, 40, 40],
            filters: [40, 11, 11],
            params: Conv2d::new(4, 2),
            bias: true,
            seed: 11,
        };
        let edges = vec![("alexnet-c1-like, a partial filter block", alexnet_like)];
        let on_path = |p: &ConvProblem| {
            let g = ConvGeometry::from_dims(p.input, p.filters, &p.params).unwrap();
            backend.conv_plan(&g).is_ok_and(|plan| plan.path == ConvPath::DirectWide && plan.isa == isa)
        };
        assert!(edges.iter().all(|(_, p)| on_path(p)));
        common::run(&format!("conv2d forward, wide direct kernel, {isa}"), edges.clone(), direct_wide_problem(), |p| {
            prop_assert!(on_path(p), "not on the wide direct path: {p:?}");
            conv_forward(&backend, p)
        });
        // Its backward: dX unfolds (through small_gemm at AVX-512); dW
        // both by unfold + GEMM and by filter blocks (direct/filters_grad.rs).
        for dw in [DwPath::Unfold, DwPath::DirectWide] {
            let backend = forced(isa, Some(ConvPath::DirectWide), None, Some(dw));
            let property = format!("conv2d backward, wide direct geometry, dW {dw:?}, {isa}");
            common::run(&property, edges.clone(), direct_wide_problem(), |p| {
                conv_backward(&backend, p, GradRequest::ALL)
            });
        }
    }
}

/// Geometries the unfold path takes with small_gemm's unpacked GEMMs (K ≥
/// 32 and no special path): any stride, padding and dilation, and in half
/// the cases stride 2 on even sizes H = 2·OH, W = 2·OW, where dX goes by
/// input phase (subpixel_dx.rs). Run with small tiles so channel splits,
/// pixel tiles and groups occur.
fn unpacked_problem() -> impl Strategy<Value = ConvProblem> {
    // S ≥ 2: a 1x1 stride-1 unpadded conv would take the pointwise path.
    let dims = (1..=3usize, 5..=12usize, 32..=40usize, 1..=4usize, 2..=4usize);
    let params = ([1..=2usize, 1..=2usize], [0..=2usize, 0..=2usize], [1..=2usize, 1..=2usize]);
    (dims, params, (0..=8usize, 0..=8usize, any::<bool>(), any::<bool>(), any::<u64>())).prop_map(
        |((n, c, k, r, s), (stride, padding, dilation), (eh, ew, by_phase, bias, seed))| {
            if by_phase {
                // Stride 2, dilation 1, and a padding that makes H = 2·OH:
                // (H + 2p − R) / 2 + 1 = H / 2 holds for 2p = R − 2 + (0 or 1).
                let (r, s) = (r.max(2), s.max(2));
                let (ph, pw) = ((r - 1) / 2, (s - 1) / 2);
                let (oh, ow) = (2 + eh, 2 + ew);
                let input = [n, c, 2 * oh, 2 * ow];
                let params = Conv2d { stride: [2, 2], padding: [ph, pw], dilation: [1, 1] };
                return ConvProblem { input, filters: [k, r, s], params, bias, seed };
            }
            let fit = |kernel: usize, axis: usize| {
                (dilation[axis] * (kernel - 1) + 1).saturating_sub(2 * padding[axis]).max(1)
            };
            let input = [n, c, fit(r, 0) + eh, fit(s, 1) + ew];
            ConvProblem { input, filters: [k, r, s], params: Conv2d { stride, padding, dilation }, bias, seed }
        },
    )
}

#[test]
fn conv_unpacked_gemms_match_naive_f64() {
    for isa in isas() {
        let force = Forced { forward: Some(ConvPath::Unfold), ..Forced::default() };
        let targets = TileTargets { floats: 2048, columns: 40, force, isa: Some(isa), ..TileTargets::default() };
        let backend = Im2col::with_threads(2).expect("a 2-thread pool").with_tile_targets(targets);
        let resnet_s2_like = ConvProblem {
            input: [2, 12, 10, 10],
            filters: [32, 3, 3],
            params: Conv2d::new(2, 1),
            bias: true,
            seed: 12,
        };
        let edges = vec![("resnet-s2-like, dX by phase", resnet_s2_like)];
        let plan = |p: &ConvProblem| {
            backend.conv_plan(&ConvGeometry::from_dims(p.input, p.filters, &p.params).unwrap()).unwrap()
        };
        // Only AVX-512 takes this path; below it these are plain unfold
        // problems, still checked.
        let avx512 = isa == Isa::Avx512;
        assert_eq!(plan(&edges[0].1).unpacked_gemms, avx512, "{:?}", plan(&edges[0].1));
        assert!(!avx512 || plan(&edges[0].1).subpixel_dx, "{:?}", plan(&edges[0].1));
        common::run(&format!("conv2d forward, unpacked GEMMs, {isa}"), edges.clone(), unpacked_problem(), |p| {
            let g = ConvGeometry::from_dims(p.input, p.filters, &p.params).unwrap();
            let by_phase =
                p.params.stride == [2, 2] && p.params.dilation == [1, 1] && g.h == 2 * g.oh && g.w == 2 * g.ow;
            prop_assert!(plan(p).unpacked_gemms == avx512, "{p:?}: {:?}", plan(p));
            prop_assert!(plan(p).subpixel_dx == (avx512 && by_phase), "{p:?}: {:?}", plan(p));
            conv_forward(&backend, p)
        });
        common::run(&format!("conv2d backward, unpacked GEMMs, {isa}"), edges, unpacked_problem(), |p| {
            conv_backward(&backend, p, GradRequest::ALL)
        });
    }
}

/// Geometries the Winograd path takes: 3x3, stride 1, no dilation, C and K
/// ≥ 32, at least as many images as threads; odd and even output sizes,
/// padding 0 to 2.
fn winograd_problem() -> impl Strategy<Value = ConvProblem> {
    let dims = (2..=3usize, 32..=36usize, 32..=36usize, 0..=2usize, 0..=2usize);
    (dims, 0..=9usize, 0..=9usize, any::<bool>(), any::<u64>()).prop_map(|((n, c, k, ph, pw), eh, ew, bias, seed)| {
        // At least 2 output rows and columns: 3 − 2p + 1 + e ≥ 2.
        let input = [n, c, (4usize).saturating_sub(2 * ph).max(1) + eh, (4usize).saturating_sub(2 * pw).max(1) + ew];
        let params = Conv2d { stride: [1, 1], padding: [ph, pw], dilation: [1, 1] };
        ConvProblem { input, filters: [k, 3, 3], params, bias, seed }
    })
}

#[test]
fn conv_winograd_forward_and_backward_match_naive_f64() {
    for isa in isas() {
        let backend = forced(isa, Some(ConvPath::Winograd), None, None);
        let resnet_like =
            ConvProblem { input: [2, 32, 14, 14], filters: [32, 3, 3], params: Conv2d::new(1, 1), bias: true, seed: 9 };
        let odd =
            ConvProblem { input: [3, 33, 7, 6], filters: [35, 3, 3], params: Conv2d::new(1, 0), bias: false, seed: 10 };
        let edges = vec![("resnet-3x3-like", resnet_like), ("odd output, unpadded", odd)];
        let on_path = |p: &ConvProblem| {
            let g = ConvGeometry::from_dims(p.input, p.filters, &p.params).unwrap();
            backend.conv_plan(&g).is_ok_and(|plan| plan.path == ConvPath::Winograd && plan.isa == isa)
        };
        assert!(edges.iter().all(|(_, p)| on_path(p)));
        common::run(&format!("conv2d forward, Winograd, {isa}"), edges.clone(), winograd_problem(), |p| {
            prop_assert!(on_path(p), "not on the Winograd path: {p:?}");
            conv_forward(&backend, p)
        });
        common::run(&format!("conv2d backward, Winograd, {isa}"), edges, winograd_problem(), |p| {
            conv_backward(&backend, p, GradRequest::ALL)
        });
    }
}

/// Central differences of L = Σ f(v) ⊙ r through the backend's own f32
/// forward, against `analytic`. The ops checked are linear (or piecewise
/// linear away from ties) in v, so a large step has no truncation error and
/// swamps f32 rounding; 1e-2 relative is loose for f32 yet far below the
/// O(1) error an indexing mistake makes.
fn check_gradient(
    what: &str,
    v: &Tensor<f32>,
    analytic: &Tensor<f32>,
    dy: &Tensor<f32>,
    h: f64,
    f: impl Fn(&Tensor<f32>) -> Vec<f32>,
) {
    let r: Vec<f64> = dy.data().iter().map(|&e| e as f64).collect();
    let v64: Vec<f64> = v.data().iter().map(|&e| e as f64).collect();
    let grad: Vec<f64> = analytic.data().iter().map(|&e| e as f64).collect();
    let shape = kernels_core::Shaped::shape(v).to_vec();
    let report = gradcheck(&v64, &grad, h, |probe| {
        let t = Tensor::from_fn(&shape, |i| probe[i] as f32);
        let y: Vec<f64> = f(&t).iter().map(|&e| e as f64).collect();
        weighted_sum(&y, &r)
    })
    .unwrap();
    assert!(report.max_rel_err < 1e-2, "{what}: {report}");
}

/// The weights r of L = Σ y ⊙ r for an output y: also the dy whose
/// backward gives L's analytic gradients.
fn dy_of(y: &Tensor<f32>) -> Tensor<f32> {
    random(kernels_core::Shaped::shape(y), 17)
}

#[test]
fn conv_backward_agrees_with_central_differences_of_its_own_forward() {
    let b = im2col();
    let cases = [
        (
            "unfold, padded, strided, dilated",
            [2, 3, 9, 8],
            [4, 3, 2],
            Conv2d { stride: [2, 1], padding: [1, 2], dilation: [1, 2] },
        ),
        ("direct forward geometry", [2, 1, 6, 18], [3, 3, 3], Conv2d::new(1, 1)),
        ("pointwise", [3, 4, 3, 5], [2, 1, 1], Conv2d::default()),
        ("images grouped", [9, 2, 4, 4], [3, 2, 2], Conv2d::default()),
        ("filter-vectorised geometry", [2, 8, 6, 6], [8, 3, 3], Conv2d::new(1, 1)),
        ("filter-vectorised geometry, strided", [2, 8, 7, 8], [5, 3, 3], Conv2d::new(2, 1)),
        ("Winograd geometry, odd output", [2, 32, 5, 4], [32, 3, 3], Conv2d::new(1, 1)),
        ("unpacked GEMMs, stride-2 dX by phase", [2, 4, 6, 6], [32, 3, 3], Conv2d::new(2, 1)),
        (
            "unpacked GEMMs, strided and dilated",
            [2, 3, 9, 8],
            [33, 3, 2],
            Conv2d { stride: [1, 2], padding: [1, 0], dilation: [2, 1] },
        ),
    ];
    for (label, input, [k, r, s], params) in cases {
        let x = random(&input, 1);
        let w = random(&[k, input[1], r, s], 2);
        let bias = random(&[k], 3);
        let y = b.conv2d_forward(&x, &w, Some(&bias), &params).unwrap();
        let dy = dy_of(&y);
        let grads = b.conv2d_backward(&x, &w, &dy, &params, GradRequest::ALL).unwrap();
        let fwd = |x: &Tensor<f32>, w: &Tensor<f32>, bias: &Tensor<f32>| {
            b.conv2d_forward(x, w, Some(bias), &params).unwrap().into_data()
        };
        check_gradient(&format!("{label} dx"), &x, grads.dx.as_ref().unwrap(), &dy, 0.25, |v| fwd(v, &w, &bias));
        check_gradient(&format!("{label} dw"), &w, grads.dw.as_ref().unwrap(), &dy, 0.25, |v| fwd(&x, v, &bias));
        check_gradient(&format!("{label} db"), &bias, grads.db.as_ref().unwrap(), &dy, 0.25, |v| fwd(&x, &w, v));
    }
}

#[test]
fn pool_and_linear_backward_agree_with_central_differences_of_their_own_forward() {
    let b = im2col();
    // Distinct values 0.1 apart: a step of 0.01 never changes a max window's
    // winner, so max pooling is linear around x.
    let mut order: Vec<usize> = (0..2 * 3 * 7 * 6).collect();
    SplitMix64::new(4).shuffle(&mut order);
    let x = Tensor::from_fn(&[2, 3, 7, 6], |i| order[i] as f32 * 0.1);
    for params in [Pool2d::new(PoolKind::Max, 3, 2, 1), Pool2d::new(PoolKind::Avg, 2, 1, 1)] {
        let y = b.pool2d_forward(&x, &params).unwrap();
        let dy = dy_of(&y);
        let dx = b.pool2d_backward(&x, &dy, &params).unwrap();
        check_gradient(&format!("{params:?} dx"), &x, &dx, &dy, 0.01, |v| {
            b.pool2d_forward(v, &params).unwrap().into_data()
        });
    }
    let (x, w, bias) = (random(&[5, 7], 1), random(&[3, 7], 2), random(&[3], 3));
    let y = b.linear_forward(&x, &w, Some(&bias)).unwrap();
    let dy = dy_of(&y);
    let grads = b.linear_backward(&x, &w, &dy, GradRequest::ALL).unwrap();
    let fwd =
        |x: &Tensor<f32>, w: &Tensor<f32>, bias: &Tensor<f32>| b.linear_forward(x, w, Some(bias)).unwrap().into_data();
    check_gradient("linear dx", &x, grads.dx.as_ref().unwrap(), &dy, 0.25, |v| fwd(v, &w, &bias));
    check_gradient("linear dw", &w, grads.dw.as_ref().unwrap(), &dy, 0.25, |v| fwd(&x, v, &bias));
    check_gradient("linear db", &bias, grads.db.as_ref().unwrap(), &dy, 0.25, |v| fwd(&x, &w, v));
}
