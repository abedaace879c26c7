//! The contract's NaN rules, checked on every backend against expectations
//! written out here (not against another backend), so a rule that every
//! backend breaks the same way still fails:
//! - relu(NaN) = NaN and its backward passes dy through (PyTorch's
//!   `x <= 0 ? 0 : x` and threshold_backward);
//! - a NaN anywhere in a max-pool window makes the output NaN, and backward
//!   routes dy to the window's last NaN in row-major order (PyTorch's
//!   `(val > maxval) || isnan(val)`, `kernels_core::max_pool_takes`).
//!
//! Before these rules, relu(NaN) was 0 on every backend and max pooling
//! dropped a NaN unless it came first in its window, masking divergence.

use kernels_core::{Backend, Pool2d, PoolKind, Shaped, Tensor};

fn up<B: Backend<Elem = f32>>(backend: &B, t: &Tensor<f32>) -> B::Tensor {
    backend.upload(t).unwrap_or_else(|e| panic!("upload: {e}"))
}

fn down<B: Backend<Elem = f32>>(backend: &B, t: &B::Tensor) -> Vec<f32> {
    backend.download(t).unwrap_or_else(|e| panic!("download: {e}")).data().to_vec()
}

/// Equal element by element, NaN matching NaN.
fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-6 * w.abs().max(1.0);
        assert!(same, "{what}: element {i} is {g}, expected {w}\n got  {got:?}\n want {want:?}");
    }
}

pub fn relu_nan<B: Backend<Elem = f32>>(backend: &B) {
    let nan = f32::NAN;
    let x = Tensor::new(&[2, 3], vec![nan, -1.0, 0.0, 2.0, -0.0, nan]).expect("shape");
    let dy = Tensor::new(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).expect("shape");
    let (xd, dyd) = (up(backend, &x), up(backend, &dy));
    let y = backend.relu_forward(&xd).unwrap_or_else(|e| panic!("relu: {e}"));
    assert_same("relu(x)", &down(backend, &y), &[nan, 0.0, 0.0, 2.0, 0.0, nan]);
    let dx = backend.relu_backward(&xd, &dyd).unwrap_or_else(|e| panic!("relu_backward: {e}"));
    assert_same("relu_backward", &down(backend, &dx), &[1.0, 0.0, 0.0, 4.0, 0.0, 6.0]);
}

/// The expected max pool forward and backward of one plane set, from the
/// rule as stated (a straight scan of each window's real elements).
fn expected_max_pool(x: &Tensor<f32>, dy: &Tensor<f32>, p: &Pool2d) -> (Vec<f32>, Vec<f32>) {
    let [n, c, h, w] = <[usize; 4]>::try_from(x.shape()).expect("NCHW");
    let [_, _, oh, ow] = <[usize; 4]>::try_from(dy.shape()).expect("NCHW");
    let (xs, dys) = (x.data(), dy.data());
    let mut y = Vec::with_capacity(n * c * oh * ow);
    let mut dx = vec![0.0f32; xs.len()];
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<usize> = None;
                for i in 0..p.window[0] {
                    for j in 0..p.window[1] {
                        let (iy, ix) = ((oy * p.stride[0] + i) as isize, (ox * p.stride[1] + j) as isize);
                        let (iy, ix) = (iy - p.padding[0] as isize, ix - p.padding[1] as isize);
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let at = plane * h * w + iy as usize * w + ix as usize;
                        best = match best {
                            None => Some(at),
                            Some(b) if xs[at].is_nan() || (!xs[b].is_nan() && xs[at] > xs[b]) => Some(at),
                            keep => keep,
                        };
                    }
                }
                let best = best.expect("every window holds a real element");
                y.push(xs[best]);
                dx[best] += dys[(plane * oh + oy) * ow + ox];
            }
        }
    }
    (y, dx)
}

pub fn max_pool_nan<B: Backend<Elem = f32>>(backend: &B) {
    let (h, w) = (6, 6);
    // NaN as the first, a middle and the last element of 2x2 windows, two
    // NaNs in one window (the last must take the gradient), and NaNs inside
    // overlapping 3x3 windows.
    let nans = [0usize, 9, 15, 20, 21, 26, 27, 35, 36 + 14];
    let x = Tensor::from_fn(&[1, 2, h, w], |i| if nans.contains(&i) { f32::NAN } else { ((i * 7) % 11) as f32 - 5.0 });
    for params in [
        Pool2d::new(PoolKind::Max, 2, 2, 0),
        Pool2d::new(PoolKind::Max, 3, 2, 1),
        Pool2d::new(PoolKind::Max, 3, 3, 0),
        Pool2d::new(PoolKind::Max, 2, 1, 0),
    ] {
        let what = format!("max pool {params:?}");
        let xd = up(backend, &x);
        let y = backend.pool2d_forward(&xd, &params).unwrap_or_else(|e| panic!("{what}: {e}"));
        let y_shape = y.shape().to_vec();
        let dy = Tensor::from_fn(&y_shape, |i| 1.0 + i as f32);
        let (want_y, want_dx) = expected_max_pool(&x, &dy, &params);
        assert!(want_y.iter().any(|v| v.is_nan()) && want_y.iter().any(|v| !v.is_nan()), "{what}: case covers both");
        assert_same(&format!("{what} forward"), &down(backend, &y), &want_y);
        let dx = backend.pool2d_backward(&xd, &up(backend, &dy), &params).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_same(&format!("{what} backward"), &down(backend, &dx), &want_dx);
    }
}
