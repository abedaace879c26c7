//! # kernels-naive: the reference backend
//!
//! Every op of the [`kernels_core::Backend`] contract as direct loops that
//! read like the math, generic over f32 and f64, with no `unsafe`. It is the
//! oracle the other backends are checked against (in f64), so clarity wins
//! over speed; the loops are still ordered so that the shape suite
//! ([`kernels_core::CONV_SUITE`]) runs in seconds, not hours.
//!
//! ## Layout
//!
//! | module | ops (forward beside backward) |
//! |---|---|
//! | `conv` | conv2d: y, dx, dw, db (stride, padding, dilation per axis) |
//! | `pool` | max / avg pool2d and its backward |
//! | `linear` | y = x·wᵀ + b; dx, dw, db |
//! | `activation` | relu, sigmoid, softmax cross-entropy |
//! | `norm` | batch norm: training (batch statistics, running update), evaluation, backward |
//! | `dropout` | inverted dropout with the counter-based mask, and its backward |
//! | `optim` | the six optimiser updates, via `Optimizer::update_slice` |
//!
//! Tensors are [`kernels_core::Tensor`]: upload and download are copies,
//! `sync` does nothing, `threads()` is 1.
//!
//! ## Conventions
//!
//! Cross-correlation; max pooling never picks padding and sends ties (and
//! their gradient) to the first element in row-major window order; average
//! pooling divides by the full window, padding counted; softmax
//! cross-entropy subtracts the row maximum, returns the mean loss over the
//! batch and dlogits = (softmax − onehot) / n.
//!
//! ## Checking
//!
//! `cargo test -p kernels-naive` runs the worked examples
//! (tests/worked_examples.rs), gradient checks of every backward in f64
//! (tests/gradcheck.rs) and invalid-input properties (tests/invalid.rs).
//! The other backends are compared with this one in harness/tests.
//!
//! No features and no environment variables; proptest honours
//! `PROPTEST_CASES` in the tests.

mod activation;
mod conv;
mod dropout;
mod linear;
mod norm;
mod optim;
mod pool;

use std::marker::PhantomData;

use kernels_core::{
    Backend, BatchNormGeometry, BatchStats, ConvGeometry, DropoutMask, Error, Float, GradRequest, Grads,
    LinearGeometry, Optimizer, PoolGeometry, Result, Shaped, Tensor, check_logits_labels,
};

/// The reference backend in element type `T` (f32, or f64 as the oracle).
#[derive(Debug, Clone, Copy)]
pub struct Naive<T> {
    // fn() -> T keeps Naive Send + Sync + Copy whatever T is.
    elem: PhantomData<fn() -> T>,
}

impl<T: Float> Naive<T> {
    pub fn new() -> Self {
        Self { elem: PhantomData }
    }
}

impl<T: Float> Default for Naive<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The `exec_*` methods are public, so a caller may skip the trait's
/// validation; checking that each tensor matches its geometry keeps even
/// that path free of panics.
fn expect_shape<T>(op: &'static str, what: &str, tensor: &Tensor<T>, shape: &[usize]) -> Result<()> {
    if tensor.shape() != shape {
        return Err(Error::shape(op, format!("{what} must have shape {shape:?}, got {:?}", tensor.shape())));
    }
    Ok(())
}

/// Like [`expect_shape`] for ops that only care about the element count.
fn expect_len<T: Float>(op: &'static str, what: &str, tensor: &Tensor<T>, len: usize) -> Result<()> {
    if tensor.len() != len {
        return Err(Error::shape(op, format!("{what} must have {len} elements, got shape {:?}", tensor.shape())));
    }
    Ok(())
}

impl<T: Float> Backend for Naive<T> {
    type Elem = T;
    type Tensor = Tensor<T>;

    fn name(&self) -> String {
        format!("naive {}", T::NAME)
    }

    fn threads(&self) -> usize {
        1
    }

    fn upload(&self, host: &Tensor<T>) -> Result<Tensor<T>> {
        Ok(host.clone())
    }

    fn download(&self, tensor: &Tensor<T>) -> Result<Tensor<T>> {
        Ok(tensor.clone())
    }

    fn zeros(&self, shape: &[usize]) -> Result<Tensor<T>> {
        Ok(Tensor::zeros(shape))
    }

    fn reshape(&self, tensor: Tensor<T>, shape: &[usize]) -> Result<Tensor<T>> {
        tensor.reshape(shape)
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn exec_conv2d_forward(
        &self,
        g: &ConvGeometry,
        x: &Tensor<T>,
        w: &Tensor<T>,
        b: Option<&Tensor<T>>,
    ) -> Result<Tensor<T>> {
        expect_shape("conv2d", "input x", x, &g.x_shape())?;
        expect_shape("conv2d", "weight w", w, &g.w_shape())?;
        if let Some(b) = b {
            expect_shape("conv2d", "bias b", b, &g.b_shape())?;
        }
        let y = conv::forward(g, x.data(), w.data(), b.map(|b| b.data()));
        Tensor::new(&g.y_shape(), y)
    }

    fn exec_conv2d_backward(
        &self,
        g: &ConvGeometry,
        x: &Tensor<T>,
        w: &Tensor<T>,
        dy: &Tensor<T>,
        need: GradRequest,
    ) -> Result<Grads<Tensor<T>>> {
        expect_shape("conv2d", "input x", x, &g.x_shape())?;
        expect_shape("conv2d", "weight w", w, &g.w_shape())?;
        expect_shape("conv2d", "output gradient dy", dy, &g.y_shape())?;
        Ok(Grads {
            dx: need.dx.then(|| Tensor::new(&g.x_shape(), conv::backward_dx(g, w.data(), dy.data()))).transpose()?,
            dw: need.dw.then(|| Tensor::new(&g.w_shape(), conv::backward_dw(g, x.data(), dy.data()))).transpose()?,
            db: need.db.then(|| Tensor::new(&g.b_shape(), conv::backward_db(g, dy.data()))).transpose()?,
        })
    }

    fn exec_pool2d_forward(&self, g: &PoolGeometry, x: &Tensor<T>) -> Result<Tensor<T>> {
        expect_shape("pool2d", "input x", x, &g.x_shape())?;
        Tensor::new(&g.y_shape(), pool::forward(g, x.data()))
    }

    fn exec_pool2d_backward(&self, g: &PoolGeometry, x: &Tensor<T>, dy: &Tensor<T>) -> Result<Tensor<T>> {
        expect_shape("pool2d", "input x", x, &g.x_shape())?;
        expect_shape("pool2d", "output gradient dy", dy, &g.y_shape())?;
        Tensor::new(&g.x_shape(), pool::backward(g, x.data(), dy.data()))
    }

    fn exec_linear_forward(
        &self,
        g: &LinearGeometry,
        x: &Tensor<T>,
        w: &Tensor<T>,
        b: Option<&Tensor<T>>,
    ) -> Result<Tensor<T>> {
        expect_shape("linear", "input x", x, &g.x_shape())?;
        expect_shape("linear", "weight w", w, &g.w_shape())?;
        if let Some(b) = b {
            expect_shape("linear", "bias b", b, &[g.o])?;
        }
        Tensor::new(&g.y_shape(), linear::forward(g, x.data(), w.data(), b.map(|b| b.data())))
    }

    fn exec_linear_backward(
        &self,
        g: &LinearGeometry,
        x: &Tensor<T>,
        w: &Tensor<T>,
        dy: &Tensor<T>,
        need: GradRequest,
    ) -> Result<Grads<Tensor<T>>> {
        expect_shape("linear", "input x", x, &g.x_shape())?;
        expect_shape("linear", "weight w", w, &g.w_shape())?;
        expect_shape("linear", "output gradient dy", dy, &g.y_shape())?;
        Ok(Grads {
            dx: need.dx.then(|| Tensor::new(&g.x_shape(), linear::backward_dx(g, w.data(), dy.data()))).transpose()?,
            dw: need.dw.then(|| Tensor::new(&g.w_shape(), linear::backward_dw(g, x.data(), dy.data()))).transpose()?,
            db: need.db.then(|| Tensor::new(&[g.o], linear::backward_db(g, dy.data()))).transpose()?,
        })
    }

    fn exec_relu_forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        Tensor::new(x.shape(), activation::relu_forward(x.data()))
    }

    fn exec_relu_backward(&self, x: &Tensor<T>, dy: &Tensor<T>) -> Result<Tensor<T>> {
        expect_shape("relu_backward", "dy", dy, x.shape())?;
        Tensor::new(x.shape(), activation::relu_backward(x.data(), dy.data()))
    }

    fn exec_sigmoid_forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        Tensor::new(x.shape(), activation::sigmoid_forward(x.data()))
    }

    fn exec_sigmoid_backward(&self, y: &Tensor<T>, dy: &Tensor<T>) -> Result<Tensor<T>> {
        expect_shape("sigmoid_backward", "dy", dy, y.shape())?;
        Tensor::new(y.shape(), activation::sigmoid_backward(y.data(), dy.data()))
    }

    fn exec_softmax_cross_entropy(&self, logits: &Tensor<T>, labels: &[usize]) -> Result<(f64, Tensor<T>)> {
        let (_, classes) = check_logits_labels(logits.shape(), labels)?;
        let (loss, dlogits) = activation::softmax_cross_entropy(logits.data(), classes, labels);
        Ok((loss, Tensor::new(logits.shape(), dlogits)?))
    }

    fn exec_batch_norm_train(
        &self,
        g: &BatchNormGeometry,
        x: &Tensor<T>,
        gamma: &Tensor<T>,
        beta: &Tensor<T>,
        running_mean: &mut Tensor<T>,
        running_var: &mut Tensor<T>,
    ) -> Result<(Tensor<T>, BatchStats<Tensor<T>>)> {
        let op = "batch_norm";
        expect_shape(op, "input x", x, &g.x_shape())?;
        for (what, t) in
            [("gamma", gamma), ("beta", beta), ("running_mean", &*running_mean), ("running_var", &*running_var)]
        {
            expect_shape(op, what, t, &[g.c])?;
        }
        let (y, mean, inv_std) =
            norm::train(g, x.data(), gamma.data(), beta.data(), running_mean.data_mut(), running_var.data_mut());
        Ok((
            Tensor::new(x.shape(), y)?,
            BatchStats { mean: Tensor::new(&[g.c], mean)?, inv_std: Tensor::new(&[g.c], inv_std)? },
        ))
    }

    fn exec_batch_norm_eval(
        &self,
        g: &BatchNormGeometry,
        x: &Tensor<T>,
        gamma: &Tensor<T>,
        beta: &Tensor<T>,
        running_mean: &Tensor<T>,
        running_var: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        let op = "batch_norm";
        expect_shape(op, "input x", x, &g.x_shape())?;
        for (what, t) in
            [("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)]
        {
            expect_shape(op, what, t, &[g.c])?;
        }
        let y = norm::eval(g, x.data(), gamma.data(), beta.data(), running_mean.data(), running_var.data());
        Tensor::new(x.shape(), y)
    }

    fn exec_batch_norm_backward(
        &self,
        g: &BatchNormGeometry,
        x: &Tensor<T>,
        gamma: &Tensor<T>,
        stats: &BatchStats<Tensor<T>>,
        dy: &Tensor<T>,
        need: GradRequest,
    ) -> Result<Grads<Tensor<T>>> {
        let op = "batch_norm";
        expect_shape(op, "input x", x, &g.x_shape())?;
        expect_shape(op, "output gradient dy", dy, &g.x_shape())?;
        for (what, t) in [("gamma", gamma), ("saved mean", &stats.mean), ("saved inv_std", &stats.inv_std)] {
            expect_shape(op, what, t, &[g.c])?;
        }
        let (dx, dgamma, dbeta) =
            norm::backward(g, x.data(), gamma.data(), stats.mean.data(), stats.inv_std.data(), dy.data());
        Ok(Grads {
            dx: need.dx.then(|| Tensor::new(x.shape(), dx)).transpose()?,
            dw: need.dw.then(|| Tensor::new(&[g.c], dgamma)).transpose()?,
            db: need.db.then(|| Tensor::new(&[g.c], dbeta)).transpose()?,
        })
    }

    fn exec_dropout_forward(&self, mask: &DropoutMask, x: &Tensor<T>) -> Result<Tensor<T>> {
        expect_len("dropout", "input x", x, mask.len)?;
        Tensor::new(x.shape(), dropout::apply(mask, x.data()))
    }

    fn exec_dropout_backward(&self, mask: &DropoutMask, dy: &Tensor<T>) -> Result<Tensor<T>> {
        expect_len("dropout", "output gradient dy", dy, mask.len)?;
        Tensor::new(dy.shape(), dropout::apply(mask, dy.data()))
    }

    fn exec_optimizer_step(
        &self,
        optimizer: &Optimizer,
        param: &mut Tensor<T>,
        grad: &Tensor<T>,
        slots: &mut [Tensor<T>],
        t: u64,
    ) -> Result<()> {
        optim::step(optimizer, param, grad, slots, t)
    }
}
