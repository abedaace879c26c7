//! Hand-computed examples (DESIGN.md and the workspace issue), each run in
//! f32 and f64: the reference must reproduce them exactly.

use kernels_core::{Backend, Conv2d, Float, GradRequest, Pool2d, PoolKind, Shaped, Tensor};
use kernels_naive::Naive;

fn tensor<T: Float>(shape: &[usize], values: &[f64]) -> Tensor<T> {
    Tensor::new(shape, values.iter().map(|&v| T::from_f64(v)).collect()).unwrap()
}

fn values<T: Float>(t: &Tensor<T>) -> Vec<f64> {
    t.data().iter().map(|v| v.to_f64()).collect()
}

/// The 4x4 input and 3x3 filter of DESIGN.md, as [1, 1, 4, 4] and [1, 1, 3, 3].
fn design_input_and_filter<T: Float>() -> (Tensor<T>, Tensor<T>) {
    let x = tensor(&[1, 1, 4, 4], &[1., 2., 3., 0., 0., 1., 2., 3., 3., 0., 1., 2., 2., 3., 0., 1.]);
    let w = tensor(&[1, 1, 3, 3], &[2., 0., 1., 0., 1., 2., 1., 0., 2.]);
    (x, w)
}

fn conv_4x4_3x3<T: Float>() {
    let nn = Naive::<T>::new();
    let (x, w) = design_input_and_filter::<T>();
    let y = nn.conv2d_forward(&x, &w, None, &Conv2d::default()).unwrap();
    assert_eq!(y.shape(), [1, 1, 2, 2]);
    assert_eq!(values(&y), [15., 16., 6., 15.], "{}", T::NAME);

    let y = nn.conv2d_forward(&x, &w, None, &Conv2d::new(1, 1)).unwrap();
    assert_eq!(y.shape(), [1, 1, 4, 4]);
    let expected = [7., 12., 10., 2., 4., 15., 16., 10., 10., 6., 15., 6., 8., 10., 4., 3.];
    assert_eq!(values(&y), expected, "{}", T::NAME);

    let y = nn.conv2d_forward(&x, &w, None, &Conv2d::new(3, 1)).unwrap();
    assert_eq!(y.shape(), [1, 1, 2, 2]);
    assert_eq!(values(&y), [7., 2., 8., 3.], "{}", T::NAME);
}

#[test]
fn conv_4x4_input_3x3_filter_no_pad_pad_1_and_stride_3_f32() {
    conv_4x4_3x3::<f32>();
}

#[test]
fn conv_4x4_input_3x3_filter_no_pad_pad_1_and_stride_3_f64() {
    conv_4x4_3x3::<f64>();
}

fn conv_two_channels<T: Float>() {
    let nn = Naive::<T>::new();
    let x = Tensor::<T>::arange(&[1, 2, 3, 3]);
    let w = Tensor::<T>::arange(&[1, 2, 2, 2]);
    let b = tensor::<T>(&[1], &[1.]);
    let y = nn.conv2d_forward(&x, &w, Some(&b), &Conv2d::default()).unwrap();
    assert_eq!(y.shape(), [1, 1, 2, 2]);
    assert_eq!(values(&y), [269., 297., 353., 381.], "{}", T::NAME);

    let w = Tensor::<T>::arange(&[2, 2, 2, 2]);
    let b = tensor::<T>(&[2], &[1., 2.]);
    let y = nn.conv2d_forward(&x, &w, Some(&b), &Conv2d::default()).unwrap();
    assert_eq!(y.shape(), [1, 2, 2, 2]);
    assert_eq!(values(&y), [269., 297., 353., 381., 686., 778., 962., 1054.], "{}", T::NAME);
}

#[test]
fn conv_two_channels_one_and_two_filters_with_bias_f32() {
    conv_two_channels::<f32>();
}

#[test]
fn conv_two_channels_one_and_two_filters_with_bias_f64() {
    conv_two_channels::<f64>();
}

fn pool_two_channels<T: Float>() {
    let nn = Naive::<T>::new();
    let x = Tensor::<T>::arange(&[1, 2, 3, 3]);
    let y = nn.pool2d_forward(&x, &Pool2d::new(PoolKind::Max, 2, 1, 0)).unwrap();
    assert_eq!(y.shape(), [1, 2, 2, 2]);
    assert_eq!(values(&y), [4., 5., 7., 8., 13., 14., 16., 17.], "{}", T::NAME);
    let y = nn.pool2d_forward(&x, &Pool2d::new(PoolKind::Avg, 2, 1, 0)).unwrap();
    assert_eq!(values(&y), [2., 3., 5., 6., 11., 12., 14., 15.], "{}", T::NAME);

    // Backward with dy = 1: max sends each window's 1 to its bottom-right
    // element; avg spreads 1/4 per window, overlapping windows adding up.
    let dy = Tensor::<T>::full(&[1, 2, 2, 2], T::ONE);
    let dx = nn.pool2d_backward(&x, &dy, &Pool2d::new(PoolKind::Max, 2, 1, 0)).unwrap();
    let plane = [0., 0., 0., 0., 1., 1., 0., 1., 1.];
    assert_eq!(values(&dx), [plane, plane].concat(), "{}", T::NAME);
    let dx = nn.pool2d_backward(&x, &dy, &Pool2d::new(PoolKind::Avg, 2, 1, 0)).unwrap();
    let plane = [0.25, 0.5, 0.25, 0.5, 1.0, 0.5, 0.25, 0.5, 0.25];
    assert_eq!(values(&dx), [plane, plane].concat(), "{}", T::NAME);
}

#[test]
fn pool_max_and_avg_2x2_stride_1_two_channels_forward_and_backward_f32() {
    pool_two_channels::<f32>();
}

#[test]
fn pool_max_and_avg_2x2_stride_1_two_channels_forward_and_backward_f64() {
    pool_two_channels::<f64>();
}

fn conv_backward_by_hand<T: Float>() {
    // x = arange(9) as 3x3, w = ones 2x2, dy = ones 2x2:
    // dw[r, s] = Σ of the 2x2 block of x at (r, s); dx counts the windows
    // covering each input; db = 4.
    let nn = Naive::<T>::new();
    let x = Tensor::<T>::arange(&[1, 1, 3, 3]);
    let w = Tensor::<T>::full(&[1, 1, 2, 2], T::ONE);
    let dy = Tensor::<T>::full(&[1, 1, 2, 2], T::ONE);
    let g = nn.conv2d_backward(&x, &w, &dy, &Conv2d::default(), GradRequest::ALL).unwrap();
    assert_eq!(values(&g.dx.unwrap()), [1., 2., 1., 2., 4., 2., 1., 2., 1.], "{}", T::NAME);
    assert_eq!(values(&g.dw.unwrap()), [8., 12., 20., 24.], "{}", T::NAME);
    assert_eq!(values(&g.db.unwrap()), [4.], "{}", T::NAME);
}

#[test]
fn conv_backward_3x3_input_2x2_ones_dx_dw_db_f32() {
    conv_backward_by_hand::<f32>();
}

#[test]
fn conv_backward_3x3_input_2x2_ones_dx_dw_db_f64() {
    conv_backward_by_hand::<f64>();
}

fn small_ops_by_hand<T: Float>() {
    let nn = Naive::<T>::new();
    // linear: x [1, 2] = [1, 2], w [2, 2] = [[1, 0], [3, 4]], b = [10, 20].
    let x = tensor::<T>(&[1, 2], &[1., 2.]);
    let w = tensor::<T>(&[2, 2], &[1., 0., 3., 4.]);
    let b = tensor::<T>(&[2], &[10., 20.]);
    assert_eq!(values(&nn.linear_forward(&x, &w, Some(&b)).unwrap()), [11., 31.]);
    let dy = tensor::<T>(&[1, 2], &[1., 2.]);
    let g = nn.linear_backward(&x, &w, &dy, GradRequest::ALL).unwrap();
    assert_eq!(values(&g.dx.unwrap()), [7., 8.]);
    assert_eq!(values(&g.dw.unwrap()), [1., 2., 2., 4.]);
    assert_eq!(values(&g.db.unwrap()), [1., 2.]);

    let v = tensor::<T>(&[4], &[-2., -0., 0.5, 3.]);
    assert_eq!(values(&nn.relu_forward(&v).unwrap()), [0., 0., 0.5, 3.]);
    let ones = Tensor::<T>::full(&[4], T::ONE);
    assert_eq!(values(&nn.relu_backward(&v, &ones).unwrap()), [0., 0., 1., 1.]);
    let s = nn.sigmoid_forward(&tensor::<T>(&[1], &[0.])).unwrap();
    assert_eq!(values(&s), [0.5]);
    assert_eq!(values(&nn.sigmoid_backward(&s, &tensor::<T>(&[1], &[1.])).unwrap()), [0.25]);

    // Two equal logits: loss ln 2, dlogits ±1/2 divided by the batch of 2.
    let logits = tensor::<T>(&[2, 2], &[0., 0., 5., 5.]);
    let (loss, d) = nn.softmax_cross_entropy(&logits, &[0, 1]).unwrap();
    assert!((loss - 2f64.ln()).abs() < 1e-6, "{loss}");
    // exp(z − logsumexp) rounds in the last place.
    let expected = [-0.25, 0.25, 0.25, -0.25];
    assert!(values(&d).iter().zip(expected).all(|(a, e)| (a - e).abs() < 1e-6), "{:?}", d.data());
}

#[test]
fn linear_relu_sigmoid_softmax_by_hand_f32() {
    small_ops_by_hand::<f32>();
}

#[test]
fn linear_relu_sigmoid_softmax_by_hand_f64() {
    small_ops_by_hand::<f64>();
}

#[test]
fn softmax_cross_entropy_is_stable_for_huge_logits() {
    let nn = Naive::<f32>::new();
    let logits = tensor::<f32>(&[1, 3], &[1000., 0., -1000.]);
    let (loss, d) = nn.softmax_cross_entropy(&logits, &[1]).unwrap();
    assert!((loss - 1000.0).abs() < 1e-3, "{loss}");
    assert!(d.data().iter().all(|v| v.is_finite()), "{:?}", d.data());
    assert_eq!(values(&d), [1., -1., 0.]);
    let s = nn.sigmoid_forward(&tensor::<f32>(&[2], &[-1000., 1000.])).unwrap();
    assert_eq!(values(&s), [0., 1.]);
}

#[test]
fn name_and_threads() {
    assert_eq!(Naive::<f64>::new().name(), "naive f64");
    assert_eq!(Naive::<f32>::default().name(), "naive f32");
    assert_eq!(Naive::<f32>::new().threads(), 1);
}
