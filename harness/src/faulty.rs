//! Test-only: a backend that is the naive f32 reference except that its conv
//! forward goes wrong on a chosen call, to prove that the harness refuses to
//! time or report a wrong kernel.

use std::cell::Cell;

use kernels_core::{
    Backend, BatchNormGeometry, BatchStats, ConvGeometry, DropoutMask, GradRequest, Grads, LinearGeometry, Optimizer,
    PoolGeometry, Result, Tensor,
};
use kernels_naive::Naive;

/// Naive f32, with conv forward's first output element off by 1 from call
/// `wrong_from` (1-based) on.
pub struct Faulty {
    inner: Naive<f32>,
    calls: Cell<usize>,
    wrong_from: usize,
}

impl Faulty {
    pub fn new(wrong_from: usize) -> Self {
        Self { inner: Naive::new(), calls: Cell::new(0), wrong_from }
    }

    /// Conv forward calls so far.
    pub fn conv_forward_calls(&self) -> usize {
        self.calls.get()
    }
}

impl Backend for Faulty {
    type Elem = f32;
    type Tensor = Tensor<f32>;

    fn name(&self) -> String {
        "faulty".into()
    }
    fn threads(&self) -> usize {
        1
    }
    fn upload(&self, host: &Tensor<f32>) -> Result<Tensor<f32>> {
        self.inner.upload(host)
    }
    fn download(&self, tensor: &Tensor<f32>) -> Result<Tensor<f32>> {
        self.inner.download(tensor)
    }
    fn zeros(&self, shape: &[usize]) -> Result<Tensor<f32>> {
        self.inner.zeros(shape)
    }
    fn reshape(&self, tensor: Tensor<f32>, shape: &[usize]) -> Result<Tensor<f32>> {
        self.inner.reshape(tensor, shape)
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn exec_conv2d_forward(
        &self,
        g: &ConvGeometry,
        x: &Tensor<f32>,
        w: &Tensor<f32>,
        b: Option<&Tensor<f32>>,
    ) -> Result<Tensor<f32>> {
        let mut y = self.inner.exec_conv2d_forward(g, x, w, b)?;
        self.calls.set(self.calls.get() + 1);
        if self.calls.get() >= self.wrong_from {
            y.data_mut()[0] += 1.0;
        }
        Ok(y)
    }
    fn exec_conv2d_backward(
        &self,
        g: &ConvGeometry,
        x: &Tensor<f32>,
        w: &Tensor<f32>,
        dy: &Tensor<f32>,
        need: GradRequest,
    ) -> Result<Grads<Tensor<f32>>> {
        self.inner.exec_conv2d_backward(g, x, w, dy, need)
    }
    fn exec_pool2d_forward(&self, g: &PoolGeometry, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        self.inner.exec_pool2d_forward(g, x)
    }
    fn exec_pool2d_backward(&self, g: &PoolGeometry, x: &Tensor<f32>, dy: &Tensor<f32>) -> Result<Tensor<f32>> {
        self.inner.exec_pool2d_backward(g, x, dy)
    }
    fn exec_linear_forward(
        &self,
        g: &LinearGeometry,
        x: &Tensor<f32>,
        w: &Tensor<f32>,
        b: Option<&Tensor<f32>>,
    ) -> Result<Tensor<f32>> {
        self.inner.exec_linear_forward(g, x, w, b)
    }
    fn exec_linear_backward(
        &self,
        g: &LinearGeometry,
        x: &Tensor<f32>,
        w: &Tensor<f32>,
        dy: &Tensor<f32>,
        need: GradRequest,
    ) -> Result<Grads<Tensor<f32>>> {
        self.inner.exec_linear_backward(g, x, w, dy, need)
    }
    fn exec_relu_forward(&self, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        self.inner.exec_relu_forward(x)
    }
    fn exec_relu_backward(&self, x: &Tensor<f32>, dy: &Tensor<f32>) -> Result<Tensor<f32>> {
        self.inner.exec_relu_backward(x, dy)
    }
    fn exec_sigmoid_forward(&self, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        self.inner.exec_sigmoid_forward(x)
    }
    fn exec_sigmoid_backward(&self, y: &Tensor<f32>, dy: &Tensor<f32>) -> Result<Tensor<f32>> {
        self.inner.exec_sigmoid_backward(y, dy)
    }
    fn exec_softmax_cross_entropy(&self, logits: &Tensor<f32>, labels: &[usize]) -> Result<(f64, Tensor<f32>)> {
        self.inner.exec_softmax_cross_entropy(logits, labels)
    }
    fn exec_batch_norm_train(
        &self,
        g: &BatchNormGeometry,
        x: &Tensor<f32>,
        gamma: &Tensor<f32>,
        beta: &Tensor<f32>,
        running_mean: &mut Tensor<f32>,
        running_var: &mut Tensor<f32>,
    ) -> Result<(Tensor<f32>, BatchStats<Tensor<f32>>)> {
        self.inner.exec_batch_norm_train(g, x, gamma, beta, running_mean, running_var)
    }
    fn exec_batch_norm_eval(
        &self,
        g: &BatchNormGeometry,
        x: &Tensor<f32>,
        gamma: &Tensor<f32>,
        beta: &Tensor<f32>,
        running_mean: &Tensor<f32>,
        running_var: &Tensor<f32>,
    ) -> Result<Tensor<f32>> {
        self.inner.exec_batch_norm_eval(g, x, gamma, beta, running_mean, running_var)
    }
    fn exec_batch_norm_backward(
        &self,
        g: &BatchNormGeometry,
        x: &Tensor<f32>,
        gamma: &Tensor<f32>,
        stats: &BatchStats<Tensor<f32>>,
        dy: &Tensor<f32>,
        need: GradRequest,
    ) -> Result<Grads<Tensor<f32>>> {
        self.inner.exec_batch_norm_backward(g, x, gamma, stats, dy, need)
    }
    fn exec_dropout_forward(&self, mask: &DropoutMask, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        self.inner.exec_dropout_forward(mask, x)
    }
    fn exec_dropout_backward(&self, mask: &DropoutMask, dy: &Tensor<f32>) -> Result<Tensor<f32>> {
        self.inner.exec_dropout_backward(mask, dy)
    }
    fn exec_optimizer_step(
        &self,
        optimizer: &Optimizer,
        param: &mut Tensor<f32>,
        grad: &Tensor<f32>,
        slots: &mut [Tensor<f32>],
        t: u64,
    ) -> Result<()> {
        self.inner.exec_optimizer_step(optimizer, param, grad, slots, t)
    }
}
