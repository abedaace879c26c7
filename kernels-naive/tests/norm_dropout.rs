//! Batch norm and dropout of the reference on written-out examples: the
//! numbers PyTorch gives for the same calls (derived by hand below), the
//! running-statistics update, evaluation mode, the mask's agreement between
//! element types and between forward and backward, and invalid input.

use kernels_core::{Backend, BatchNorm, Dropout, DropoutMask, Error, GradRequest, Shaped, Tensor};
use kernels_naive::Naive;

fn t(shape: &[usize], data: &[f64]) -> Tensor<f64> {
    Tensor::new(shape, data.to_vec()).unwrap()
}

fn close(actual: &[f64], expected: &[f64], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= 1e-12 * e.abs().max(1.0), "{what}[{i}]: {a} vs {e}");
    }
}

/// One channel holding 1, 2, 3, 4 over N = 2, H·W = 2: μ = 2.5, biased
/// σ² = 1.25, unbiased 5/3. torch.nn.BatchNorm2d(1) in train mode gives
/// y = (x − 2.5)/√(1.25 + 1e-5), running_mean 0.25, running_var 0.9 + 0.1·5/3.
#[test]
fn training_mode_normalises_with_batch_statistics_and_moves_the_running_ones() {
    let nn = Naive::<f64>::new();
    let x = t(&[2, 1, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
    let (gamma, beta) = (t(&[1], &[2.0]), t(&[1], &[0.5]));
    let (mut rm, mut rv) = (t(&[1], &[0.0]), t(&[1], &[1.0]));
    let params = BatchNorm::default();
    let (y, stats) = nn.batch_norm_train(&x, &gamma, &beta, &mut rm, &mut rv, &params).unwrap();
    let inv_std = 1.0 / (1.25f64 + 1e-5).sqrt();
    let expected: Vec<f64> = [1.0, 2.0, 3.0, 4.0].iter().map(|v| 2.0 * (v - 2.5) * inv_std + 0.5).collect();
    close(y.data(), &expected, "y");
    close(stats.mean.data(), &[2.5], "saved mean");
    close(stats.inv_std.data(), &[inv_std], "saved inv_std");
    close(rm.data(), &[0.25], "running_mean");
    close(rv.data(), &[0.9 + 0.1 * 5.0 / 3.0], "running_var");

    let y = nn.batch_norm_eval(&x, &gamma, &beta, &rm, &rv, &params).unwrap();
    let inv = 1.0 / (rv.data()[0] + 1e-5).sqrt();
    let expected: Vec<f64> = [1.0, 2.0, 3.0, 4.0].iter().map(|v| 2.0 * (v - 0.25) * inv + 0.5).collect();
    close(y.data(), &expected, "eval y");
}

/// Channels are independent, and [N, F] normalises each feature over N.
#[test]
fn statistics_are_per_channel_in_both_layouts() {
    let nn = Naive::<f64>::new();
    let params = BatchNorm { eps: 1e-5, momentum: 0.5 };
    // [N=2, F=2]: feature 0 holds 0, 2; feature 1 holds 10, 30.
    let x = t(&[2, 2], &[0.0, 10.0, 2.0, 30.0]);
    let ones = t(&[2], &[1.0, 1.0]);
    let zeros = t(&[2], &[0.0, 0.0]);
    let (mut rm, mut rv) = (zeros.clone(), ones.clone());
    let (y, _) = nn.batch_norm_train(&x, &ones, &zeros, &mut rm, &mut rv, &params).unwrap();
    let a = 1.0 / (1.0f64 + 1e-5).sqrt();
    let b = 10.0 / (100.0f64 + 1e-5).sqrt();
    close(y.data(), &[-a, -b, a, b], "y");
    close(rm.data(), &[0.5, 10.0], "running_mean");
    close(rv.data(), &[0.5 + 0.5 * 2.0, 0.5 + 0.5 * 200.0], "running_var");
}

#[test]
fn batch_norm_refuses_bad_calls() {
    let nn = Naive::<f64>::new();
    let params = BatchNorm::default();
    let c3 = Tensor::<f64>::zeros(&[3]);
    let (mut rm, mut rv) = (c3.clone(), Tensor::full(&[3], 1.0));
    // One value per channel cannot be trained on.
    let err = nn.batch_norm_train(&Tensor::zeros(&[1, 3]), &c3, &c3, &mut rm, &mut rv, &params).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }) && err.to_string().contains("more than 1 value"), "{err}");
    // Channel mismatch names the tensor.
    let err = nn.batch_norm_train(&Tensor::zeros(&[2, 4, 2, 2]), &c3, &c3, &mut rm, &mut rv, &params).unwrap_err();
    assert!(err.to_string().contains("gamma"), "{err}");
    // Zero batch, rank 3.
    assert!(nn.batch_norm_eval(&Tensor::zeros(&[0, 3]), &c3, &c3, &rm, &rv, &params).is_err());
    assert!(nn.batch_norm_eval(&Tensor::zeros(&[2, 3, 4]), &c3, &c3, &rm, &rv, &params).is_err());
    let bad = BatchNorm { eps: 0.0, momentum: 0.1 };
    assert!(matches!(nn.batch_norm_eval(&Tensor::zeros(&[2, 3]), &c3, &c3, &rm, &rv, &bad), Err(Error::Param { .. })));
    // Backward: dy must match x.
    let x = Tensor::<f64>::arange(&[2, 3]);
    let (_, stats) = nn.batch_norm_train(&x, &c3, &c3, &mut rm, &mut rv, &params).unwrap();
    let err = nn.batch_norm_backward(&x, &c3, &stats, &Tensor::zeros(&[3, 2]), &params, GradRequest::ALL).unwrap_err();
    assert!(err.to_string().contains("dy"), "{err}");
}

#[test]
fn dropout_scales_kept_values_and_backward_uses_the_same_mask() {
    let nn = Naive::<f64>::new();
    let params = Dropout { p: 0.3, seed: 9, step: 4 };
    let x = Tensor::<f64>::from_fn(&[4, 5, 6], |i| i as f64 + 1.0);
    let y = nn.dropout_forward(&x, &params).unwrap();
    let dx = nn.dropout_backward(&Tensor::full(x.shape(), 1.0), &params).unwrap();
    let mask = DropoutMask::new(x.shape(), &params).unwrap();
    let scale = 1.0 / 0.7;
    let mut dropped = 0;
    for i in 0..x.len() {
        if mask.keeps(i) {
            assert_eq!(y.data()[i], x.data()[i] * scale, "kept {i}");
            assert_eq!(dx.data()[i], scale, "dx kept {i}");
        } else {
            dropped += 1;
            assert_eq!((y.data()[i], dx.data()[i]), (0.0, 0.0), "dropped {i}");
        }
    }
    assert!(dropped > 0 && dropped < x.len(), "{dropped} of {} dropped", x.len());

    // f32 draws the same mask bit for bit.
    let y32 = Naive::<f32>::new().dropout_forward(&x.cast::<f32>(), &params).unwrap();
    for i in 0..x.len() {
        assert_eq!(y32.data()[i] == 0.0, y.data()[i] == 0.0, "mask differs at {i}");
    }
    // p = 0 is the identity.
    let same = nn.dropout_forward(&x, &Dropout { p: 0.0, ..params }).unwrap();
    assert_eq!(same.data(), x.data());
    assert!(matches!(nn.dropout_forward(&x, &Dropout { p: 1.0, ..params }), Err(Error::Param { .. })));
}
