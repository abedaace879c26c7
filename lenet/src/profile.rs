//! `--profile`: where a training step's time goes.
//!
//! [`Timed`] wraps any backend and times every op it runs, synchronising
//! after each so the time lands on the op that caused it (on OpenCL this
//! serialises the queue, so a profiled run is somewhat slower than a plain
//! one). Ops are keyed by name and layer shape, e.g. `conv2d_backward
//! 6x14x14→16 5x5`. The training loop's wall time minus the ops' sum is the
//! host's share (gathering batches, argmax, bookkeeping).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kernels_core::{
    Backend, BatchNormGeometry, BatchStats, ConvGeometry, DropoutMask, GradRequest, Grads, LinearGeometry, Optimizer,
    PoolGeometry, Result, Shaped, Tensor,
};

/// Calls and total time of one op.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct OpTime {
    pub calls: u64,
    pub seconds: f64,
}

/// A backend that times every op of the backend it wraps.
pub struct Timed<B> {
    inner: B,
    times: RefCell<BTreeMap<String, (u64, Duration)>>,
}

impl<B: Backend> Timed<B> {
    pub fn new(inner: B) -> Self {
        Self { inner, times: RefCell::new(BTreeMap::new()) }
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Per-op totals since the last reset, largest first.
    pub fn report(&self) -> Vec<(String, OpTime)> {
        let mut rows: Vec<(String, OpTime)> = self
            .times
            .borrow()
            .iter()
            .map(|(k, &(calls, d))| (k.clone(), OpTime { calls, seconds: d.as_secs_f64() }))
            .collect();
        rows.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
        rows
    }

    pub fn reset(&self) {
        self.times.borrow_mut().clear();
    }

    fn time<R>(&self, key: impl FnOnce() -> String, run: impl FnOnce() -> Result<R>) -> Result<R> {
        let start = Instant::now();
        let out = run()?;
        self.inner.sync()?;
        let elapsed = start.elapsed();
        let mut times = self.times.borrow_mut();
        let entry = times.entry(key()).or_default();
        entry.0 += 1;
        entry.1 += elapsed;
        Ok(out)
    }
}

fn conv_key(op: &str, g: &ConvGeometry) -> String {
    format!("{op} {}x{}x{}→{} {}x{}", g.c, g.h, g.w, g.k, g.r, g.s)
}

fn pool_key(op: &str, g: &PoolGeometry) -> String {
    format!("{op} {}x{}x{}", g.c, g.h, g.w)
}

fn linear_key(op: &str, g: &LinearGeometry) -> String {
    format!("{op} {}→{}", g.i, g.o)
}

fn elementwise_key(op: &str, x: &impl Shaped) -> String {
    format!("{op} {:?}", &x.shape()[1..])
}

impl<B: Backend> Backend for Timed<B> {
    type Elem = B::Elem;
    type Tensor = B::Tensor;

    fn name(&self) -> String {
        self.inner.name()
    }
    fn threads(&self) -> usize {
        self.inner.threads()
    }
    fn upload(&self, host: &Tensor<Self::Elem>) -> Result<Self::Tensor> {
        self.time(|| "upload".into(), || self.inner.upload(host))
    }
    fn download(&self, tensor: &Self::Tensor) -> Result<Tensor<Self::Elem>> {
        self.time(|| "download".into(), || self.inner.download(tensor))
    }
    fn zeros(&self, shape: &[usize]) -> Result<Self::Tensor> {
        self.inner.zeros(shape)
    }
    fn reshape(&self, tensor: Self::Tensor, shape: &[usize]) -> Result<Self::Tensor> {
        self.inner.reshape(tensor, shape)
    }
    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
    fn exec_conv2d_forward(
        &self,
        g: &ConvGeometry,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor> {
        self.time(|| conv_key("conv2d_forward", g), || self.inner.exec_conv2d_forward(g, x, w, b))
    }
    fn exec_conv2d_backward(
        &self,
        g: &ConvGeometry,
        x: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
        need: GradRequest,
    ) -> Result<Grads<Self::Tensor>> {
        self.time(|| conv_key("conv2d_backward", g), || self.inner.exec_conv2d_backward(g, x, w, dy, need))
    }
    fn exec_pool2d_forward(&self, g: &PoolGeometry, x: &Self::Tensor) -> Result<Self::Tensor> {
        self.time(|| pool_key("pool2d_forward", g), || self.inner.exec_pool2d_forward(g, x))
    }
    fn exec_pool2d_backward(&self, g: &PoolGeometry, x: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor> {
        self.time(|| pool_key("pool2d_backward", g), || self.inner.exec_pool2d_backward(g, x, dy))
    }
    fn exec_linear_forward(
        &self,
        g: &LinearGeometry,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor> {
        self.time(|| linear_key("linear_forward", g), || self.inner.exec_linear_forward(g, x, w, b))
    }
    fn exec_linear_backward(
        &self,
        g: &LinearGeometry,
        x: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
        need: GradRequest,
    ) -> Result<Grads<Self::Tensor>> {
        self.time(|| linear_key("linear_backward", g), || self.inner.exec_linear_backward(g, x, w, dy, need))
    }
    fn exec_relu_forward(&self, x: &Self::Tensor) -> Result<Self::Tensor> {
        self.time(|| elementwise_key("relu_forward", x), || self.inner.exec_relu_forward(x))
    }
    fn exec_relu_backward(&self, x: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor> {
        self.time(|| elementwise_key("relu_backward", x), || self.inner.exec_relu_backward(x, dy))
    }
    fn exec_sigmoid_forward(&self, x: &Self::Tensor) -> Result<Self::Tensor> {
        self.time(|| elementwise_key("sigmoid_forward", x), || self.inner.exec_sigmoid_forward(x))
    }
    fn exec_sigmoid_backward(&self, y: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor> {
        self.time(|| elementwise_key("sigmoid_backward", y), || self.inner.exec_sigmoid_backward(y, dy))
    }
    fn exec_softmax_cross_entropy(&self, logits: &Self::Tensor, labels: &[usize]) -> Result<(f64, Self::Tensor)> {
        self.time(|| "softmax_cross_entropy".into(), || self.inner.exec_softmax_cross_entropy(logits, labels))
    }
    fn exec_batch_norm_train(
        &self,
        g: &BatchNormGeometry,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        running_mean: &mut Self::Tensor,
        running_var: &mut Self::Tensor,
    ) -> Result<(Self::Tensor, BatchStats<Self::Tensor>)> {
        self.time(
            || elementwise_key("batch_norm_train", x),
            || self.inner.exec_batch_norm_train(g, x, gamma, beta, running_mean, running_var),
        )
    }
    fn exec_batch_norm_eval(
        &self,
        g: &BatchNormGeometry,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        running_mean: &Self::Tensor,
        running_var: &Self::Tensor,
    ) -> Result<Self::Tensor> {
        self.time(
            || elementwise_key("batch_norm_eval", x),
            || self.inner.exec_batch_norm_eval(g, x, gamma, beta, running_mean, running_var),
        )
    }
    fn exec_batch_norm_backward(
        &self,
        g: &BatchNormGeometry,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        stats: &BatchStats<Self::Tensor>,
        dy: &Self::Tensor,
        need: GradRequest,
    ) -> Result<Grads<Self::Tensor>> {
        self.time(
            || elementwise_key("batch_norm_backward", x),
            || self.inner.exec_batch_norm_backward(g, x, gamma, stats, dy, need),
        )
    }
    fn exec_dropout_forward(&self, mask: &DropoutMask, x: &Self::Tensor) -> Result<Self::Tensor> {
        self.time(|| elementwise_key("dropout_forward", x), || self.inner.exec_dropout_forward(mask, x))
    }
    fn exec_dropout_backward(&self, mask: &DropoutMask, dy: &Self::Tensor) -> Result<Self::Tensor> {
        self.time(|| elementwise_key("dropout_backward", dy), || self.inner.exec_dropout_backward(mask, dy))
    }
    fn exec_optimizer_step(
        &self,
        optimizer: &Optimizer,
        param: &mut Self::Tensor,
        grad: &Self::Tensor,
        slots: &mut [Self::Tensor],
        t: u64,
    ) -> Result<()> {
        self.time(
            || format!("optimizer_step ({})", optimizer.name()),
            || self.inner.exec_optimizer_step(optimizer, param, grad, slots, t),
        )
    }
}
