//! The `Backend` trait: one contract for the reference, the CPU and the
//! OpenCL implementations.
//!
//! Callers use the plain methods (`conv2d_forward`, `pool2d_backward`, ...):
//! they validate shapes and parameters once, here at the edge, and hand a
//! validated geometry to the `exec_*` method the backend implements. So every
//! backend rejects exactly the same calls, with the same `Error`, and an
//! `exec_*` method may index freely within its geometry.
//!
//! Backward methods return fresh gradients; they never accumulate into their
//! arguments. Activations are NCHW, conv weights OIHW, linear weights [out, in].

use crate::dropout::{Dropout, DropoutMask};
use crate::error::Result;
use crate::float::Float;
use crate::norm::{BatchNorm, BatchNormGeometry, BatchStats};
use crate::optim::{Optimizer, OptimizerState, check_step};
use crate::params::{
    Conv2d, ConvGeometry, GradRequest, LinearGeometry, Pool2d, PoolGeometry, check_logits_labels, check_same_shape,
};
use crate::tensor::{Shaped, Tensor};

/// Gradients of a layer with weights: each present when requested.
#[derive(Debug)]
pub struct Grads<T> {
    /// Gradient with respect to the input, shaped like x.
    pub dx: Option<T>,
    /// Gradient with respect to the weight, shaped like w.
    pub dw: Option<T>,
    /// Gradient with respect to the bias, [k] or [out].
    pub db: Option<T>,
}

/// A compute backend. `Tensor` is device-resident: a host `Vec` on the CPU
/// backends, a device buffer on OpenCL; data crosses only in `upload`,
/// `download` and the scalar loss.
pub trait Backend {
    /// The element type the backend computes in (f32, or f64 for the oracle).
    type Elem: Float;
    /// The backend's tensor: owns its storage and knows its shape.
    type Tensor: Shaped;

    /// What runs the ops, for reports: "naive f64", "im2col", "opencl (device)".
    fn name(&self) -> String;
    /// Host threads (CPU backends) or compute units (OpenCL) in use.
    fn threads(&self) -> usize;

    fn upload(&self, host: &Tensor<Self::Elem>) -> Result<Self::Tensor>;
    fn download(&self, tensor: &Self::Tensor) -> Result<Tensor<Self::Elem>>;
    fn zeros(&self, shape: &[usize]) -> Result<Self::Tensor>;
    /// Same storage, new shape with the same element count (flattening
    /// conv features for a linear layer).
    fn reshape(&self, tensor: Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;
    /// Waits until all queued work is finished (a no-op on the CPU).
    fn sync(&self) -> Result<()>;

    // ---- what a backend implements: validated geometries only ----

    /// y [n, k, oh, ow] = x ⋆ w + b.
    fn exec_conv2d_forward(
        &self,
        g: &ConvGeometry,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor>;
    /// dx [n, c, h, w], dw [k, c, r, s], db [k] from dy [n, k, oh, ow].
    fn exec_conv2d_backward(
        &self,
        g: &ConvGeometry,
        x: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
        need: GradRequest,
    ) -> Result<Grads<Self::Tensor>>;
    /// y [n, c, oh, ow].
    fn exec_pool2d_forward(&self, g: &PoolGeometry, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// dx [n, c, h, w] from dy [n, c, oh, ow]; max pooling re-derives the
    /// winners from x.
    fn exec_pool2d_backward(&self, g: &PoolGeometry, x: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor>;
    /// y [n, o] = x [n, i] · wᵀ [i, o] + b [o].
    fn exec_linear_forward(
        &self,
        g: &LinearGeometry,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor>;
    /// dx = dy · w, dw = dyᵀ · x, db = Σₙ dy.
    fn exec_linear_backward(
        &self,
        g: &LinearGeometry,
        x: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
        need: GradRequest,
    ) -> Result<Grads<Self::Tensor>>;
    /// max(x, 0), element-wise.
    fn exec_relu_forward(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// dy where x > 0, else 0.
    fn exec_relu_backward(&self, x: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor>;
    /// 1 / (1 + e^−x), element-wise.
    fn exec_sigmoid_forward(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// dy · y · (1 − y), from the forward's output y.
    fn exec_sigmoid_backward(&self, y: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor>;
    /// Mean over the batch of −log softmax(logits)[label], and dlogits =
    /// (softmax − onehot) / n. Labels are checked to be < classes.
    fn exec_softmax_cross_entropy(&self, logits: &Self::Tensor, labels: &[usize]) -> Result<(f64, Self::Tensor)>;
    /// One update of `param` in place, at 1-based step `t`, with `slots` the
    /// rule's state buffers (see `Optimizer::update_slice`, the reference).
    fn exec_optimizer_step(
        &self,
        optimizer: &Optimizer,
        param: &mut Self::Tensor,
        grad: &Self::Tensor,
        slots: &mut [Self::Tensor],
        t: u64,
    ) -> Result<()>;

    /// Training-mode batch norm (see [`crate::norm`]): y shaped like x and
    /// the batch statistics for the backward; the running mean and variance
    /// move towards the batch's, in place.
    fn exec_batch_norm_train(
        &self,
        g: &BatchNormGeometry,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        running_mean: &mut Self::Tensor,
        running_var: &mut Self::Tensor,
    ) -> Result<(Self::Tensor, BatchStats<Self::Tensor>)>;
    /// Evaluation-mode batch norm: normalises with the running statistics.
    fn exec_batch_norm_eval(
        &self,
        g: &BatchNormGeometry,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        running_mean: &Self::Tensor,
        running_var: &Self::Tensor,
    ) -> Result<Self::Tensor>;
    /// Backward of training-mode batch norm: dx, dγ (as `dw`), dβ (as `db`).
    fn exec_batch_norm_backward(
        &self,
        g: &BatchNormGeometry,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        stats: &BatchStats<Self::Tensor>,
        dy: &Self::Tensor,
        need: GradRequest,
    ) -> Result<Grads<Self::Tensor>>;
    /// y = kept ? x·scale : 0 with the mask of [`crate::dropout`].
    fn exec_dropout_forward(&self, mask: &DropoutMask, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// dx = kept ? dy·scale : 0, the forward's mask re-derived.
    fn exec_dropout_backward(&self, mask: &DropoutMask, dy: &Self::Tensor) -> Result<Self::Tensor>;

    // ---- what callers use: validate, then execute ----

    fn conv2d_forward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        params: &Conv2d,
    ) -> Result<Self::Tensor> {
        let g = ConvGeometry::new(x.shape(), w.shape(), b.map(|b| b.shape()), params)?;
        self.exec_conv2d_forward(&g, x, w, b)
    }

    fn conv2d_backward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
        params: &Conv2d,
        need: GradRequest,
    ) -> Result<Grads<Self::Tensor>> {
        let g = ConvGeometry::new(x.shape(), w.shape(), None, params)?;
        g.check_dy(dy.shape())?;
        self.exec_conv2d_backward(&g, x, w, dy, need)
    }

    fn pool2d_forward(&self, x: &Self::Tensor, params: &Pool2d) -> Result<Self::Tensor> {
        let g = PoolGeometry::new(x.shape(), params)?;
        self.exec_pool2d_forward(&g, x)
    }

    fn pool2d_backward(&self, x: &Self::Tensor, dy: &Self::Tensor, params: &Pool2d) -> Result<Self::Tensor> {
        let g = PoolGeometry::new(x.shape(), params)?;
        g.check_dy(dy.shape())?;
        self.exec_pool2d_backward(&g, x, dy)
    }

    fn linear_forward(&self, x: &Self::Tensor, w: &Self::Tensor, b: Option<&Self::Tensor>) -> Result<Self::Tensor> {
        let g = LinearGeometry::new(x.shape(), w.shape(), b.map(|b| b.shape()))?;
        self.exec_linear_forward(&g, x, w, b)
    }

    fn linear_backward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
        need: GradRequest,
    ) -> Result<Grads<Self::Tensor>> {
        let g = LinearGeometry::new(x.shape(), w.shape(), None)?;
        g.check_dy(dy.shape())?;
        self.exec_linear_backward(&g, x, w, dy, need)
    }

    fn relu_forward(&self, x: &Self::Tensor) -> Result<Self::Tensor> {
        check_same_shape("relu", "x", x.shape(), "x", x.shape())?;
        self.exec_relu_forward(x)
    }

    fn relu_backward(&self, x: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor> {
        check_same_shape("relu_backward", "x", x.shape(), "dy", dy.shape())?;
        self.exec_relu_backward(x, dy)
    }

    fn sigmoid_forward(&self, x: &Self::Tensor) -> Result<Self::Tensor> {
        check_same_shape("sigmoid", "x", x.shape(), "x", x.shape())?;
        self.exec_sigmoid_forward(x)
    }

    fn sigmoid_backward(&self, y: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor> {
        check_same_shape("sigmoid_backward", "y", y.shape(), "dy", dy.shape())?;
        self.exec_sigmoid_backward(y, dy)
    }

    /// (mean loss, dlogits) for logits [n, classes] and n labels.
    fn softmax_cross_entropy(&self, logits: &Self::Tensor, labels: &[usize]) -> Result<(f64, Self::Tensor)> {
        check_logits_labels(logits.shape(), labels)?;
        self.exec_softmax_cross_entropy(logits, labels)
    }

    /// Training-mode batch norm over x [N, C, H, W] or [N, F] with γ, β and
    /// running statistics [C]; returns y and the statistics the backward needs.
    fn batch_norm_train(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        running_mean: &mut Self::Tensor,
        running_var: &mut Self::Tensor,
        params: &BatchNorm,
    ) -> Result<(Self::Tensor, BatchStats<Self::Tensor>)> {
        let g = BatchNormGeometry::new(x.shape(), params)?;
        g.check_trainable()?;
        g.check_channel("gamma", gamma.shape())?;
        g.check_channel("beta", beta.shape())?;
        g.check_channel("running_mean", running_mean.shape())?;
        g.check_channel("running_var", running_var.shape())?;
        self.exec_batch_norm_train(&g, x, gamma, beta, running_mean, running_var)
    }

    /// Evaluation-mode batch norm with the running statistics.
    fn batch_norm_eval(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        running_mean: &Self::Tensor,
        running_var: &Self::Tensor,
        params: &BatchNorm,
    ) -> Result<Self::Tensor> {
        let g = BatchNormGeometry::new(x.shape(), params)?;
        g.check_channel("gamma", gamma.shape())?;
        g.check_channel("beta", beta.shape())?;
        g.check_channel("running_mean", running_mean.shape())?;
        g.check_channel("running_var", running_var.shape())?;
        self.exec_batch_norm_eval(&g, x, gamma, beta, running_mean, running_var)
    }

    /// dx, dγ (`dw`) and dβ (`db`) of training-mode batch norm, from the
    /// forward's input and saved statistics.
    fn batch_norm_backward(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        stats: &BatchStats<Self::Tensor>,
        dy: &Self::Tensor,
        params: &BatchNorm,
        need: GradRequest,
    ) -> Result<Grads<Self::Tensor>> {
        let g = BatchNormGeometry::new(x.shape(), params)?;
        g.check_trainable()?;
        g.check_channel("gamma", gamma.shape())?;
        g.check_channel("saved mean", stats.mean.shape())?;
        g.check_channel("saved inv_std", stats.inv_std.shape())?;
        g.check_dy(dy.shape())?;
        self.exec_batch_norm_backward(&g, x, gamma, stats, dy, need)
    }

    /// Inverted dropout of x with the mask keyed by (seed, step).
    fn dropout_forward(&self, x: &Self::Tensor, params: &Dropout) -> Result<Self::Tensor> {
        let mask = DropoutMask::new(x.shape(), params)?;
        self.exec_dropout_forward(&mask, x)
    }

    /// Backward of [`Self::dropout_forward`] with the same parameters.
    fn dropout_backward(&self, dy: &Self::Tensor, params: &Dropout) -> Result<Self::Tensor> {
        let mask = DropoutMask::new(dy.shape(), params)?;
        self.exec_dropout_backward(&mask, dy)
    }

    /// Fresh, zeroed state for one parameter of `shape`.
    fn optimizer_state(&self, optimizer: &Optimizer, shape: &[usize]) -> Result<OptimizerState<Self::Tensor>> {
        optimizer.validate()?;
        let slots = (0..optimizer.state_slots()).map(|_| self.zeros(shape)).collect::<Result<Vec<_>>>()?;
        Ok(OptimizerState { optimizer: *optimizer, step: 0, slots })
    }

    /// Applies one update to `param` with `grad`, advancing `state.step`.
    fn optimizer_step(
        &self,
        param: &mut Self::Tensor,
        grad: &Self::Tensor,
        state: &mut OptimizerState<Self::Tensor>,
    ) -> Result<()> {
        let slot_shapes: Vec<&[usize]> = state.slots.iter().map(|s| s.shape()).collect();
        check_step(&state.optimizer, param.shape(), grad.shape(), &slot_shapes)?;
        let t = state.step + 1;
        self.exec_optimizer_step(&state.optimizer, param, grad, &mut state.slots, t)?;
        state.step = t;
        Ok(())
    }
}
