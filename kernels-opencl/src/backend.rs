//! `impl Backend for OpenCl`: validated geometries in, launches out.

use kernels_core::{
    Backend, BatchNormGeometry, BatchStats, ConvGeometry, DropoutMask, Error, GradRequest, Grads, LinearGeometry,
    Optimizer, PoolGeometry, Result, Shaped, Tensor,
};

use crate::{ClTensor, OpenCl, conv, kernel_names, norm, ops};

impl Backend for OpenCl {
    type Elem = f32;
    type Tensor = ClTensor;

    fn name(&self) -> String {
        format!("opencl ({})", self.rt.chosen.label)
    }

    fn threads(&self) -> usize {
        self.rt.limits().compute_units as usize
    }

    fn upload(&self, host: &Tensor<f32>) -> Result<ClTensor> {
        Ok(ClTensor::new(self.rt.upload(host.data())?, host.shape()))
    }

    fn download(&self, tensor: &ClTensor) -> Result<Tensor<f32>> {
        let data = self.rt.download(tensor.buf(), tensor.len())?;
        Tensor::new(tensor.shape(), data)
    }

    fn zeros(&self, shape: &[usize]) -> Result<ClTensor> {
        let len: usize = shape.iter().product();
        let storage = self.rt.alloc(len)?;
        self.rt.fill(&storage.buffer, len, 0.0)?;
        Ok(ClTensor::new(storage, shape))
    }

    fn reshape(&self, tensor: ClTensor, shape: &[usize]) -> Result<ClTensor> {
        let len: usize = shape.iter().product();
        if len != tensor.len() {
            return Err(Error::shape(
                "reshape",
                format!(
                    "cannot reshape {:?} ({} elements) to {shape:?} ({len} elements)",
                    tensor.shape(),
                    tensor.len()
                ),
            ));
        }
        Ok(ClTensor { storage: tensor.storage, shape: shape.to_vec() })
    }

    fn sync(&self) -> Result<()> {
        self.rt.sync()
    }

    fn exec_conv2d_forward(
        &self,
        g: &ConvGeometry,
        x: &ClTensor,
        w: &ClTensor,
        b: Option<&ClTensor>,
    ) -> Result<ClTensor> {
        conv::forward(&self.rt, g, x, w, b)
    }

    fn exec_conv2d_backward(
        &self,
        g: &ConvGeometry,
        x: &ClTensor,
        w: &ClTensor,
        dy: &ClTensor,
        need: GradRequest,
    ) -> Result<Grads<ClTensor>> {
        conv::backward(&self.rt, g, x, w, dy, need)
    }

    fn exec_pool2d_forward(&self, g: &PoolGeometry, x: &ClTensor) -> Result<ClTensor> {
        ops::pool_forward(&self.rt, g, x)
    }

    fn exec_pool2d_backward(&self, g: &PoolGeometry, x: &ClTensor, dy: &ClTensor) -> Result<ClTensor> {
        ops::pool_backward(&self.rt, g, x, dy)
    }

    fn exec_linear_forward(
        &self,
        g: &LinearGeometry,
        x: &ClTensor,
        w: &ClTensor,
        b: Option<&ClTensor>,
    ) -> Result<ClTensor> {
        ops::linear_forward(&self.rt, g, x, w, b)
    }

    fn exec_linear_backward(
        &self,
        g: &LinearGeometry,
        x: &ClTensor,
        w: &ClTensor,
        dy: &ClTensor,
        need: GradRequest,
    ) -> Result<Grads<ClTensor>> {
        ops::linear_backward(&self.rt, g, x, w, dy, need)
    }

    fn exec_relu_forward(&self, x: &ClTensor) -> Result<ClTensor> {
        ops::unary(&self.rt, kernel_names::RELU_FORWARD, x)
    }

    fn exec_relu_backward(&self, x: &ClTensor, dy: &ClTensor) -> Result<ClTensor> {
        ops::binary(&self.rt, kernel_names::RELU_BACKWARD, x, dy)
    }

    fn exec_sigmoid_forward(&self, x: &ClTensor) -> Result<ClTensor> {
        ops::unary(&self.rt, kernel_names::SIGMOID_FORWARD, x)
    }

    fn exec_sigmoid_backward(&self, y: &ClTensor, dy: &ClTensor) -> Result<ClTensor> {
        ops::binary(&self.rt, kernel_names::SIGMOID_BACKWARD, y, dy)
    }

    fn exec_softmax_cross_entropy(&self, logits: &ClTensor, labels: &[usize]) -> Result<(f64, ClTensor)> {
        ops::softmax_cross_entropy(&self.rt, logits, labels)
    }

    fn exec_batch_norm_train(
        &self,
        g: &BatchNormGeometry,
        x: &ClTensor,
        gamma: &ClTensor,
        beta: &ClTensor,
        running_mean: &mut ClTensor,
        running_var: &mut ClTensor,
    ) -> Result<(ClTensor, BatchStats<ClTensor>)> {
        norm::train(&self.rt, g, x, gamma, beta, running_mean, running_var)
    }

    fn exec_batch_norm_eval(
        &self,
        g: &BatchNormGeometry,
        x: &ClTensor,
        gamma: &ClTensor,
        beta: &ClTensor,
        running_mean: &ClTensor,
        running_var: &ClTensor,
    ) -> Result<ClTensor> {
        norm::eval(&self.rt, g, x, gamma, beta, running_mean, running_var)
    }

    fn exec_batch_norm_backward(
        &self,
        g: &BatchNormGeometry,
        x: &ClTensor,
        gamma: &ClTensor,
        stats: &BatchStats<ClTensor>,
        dy: &ClTensor,
        need: GradRequest,
    ) -> Result<Grads<ClTensor>> {
        norm::backward(&self.rt, g, x, gamma, stats, dy, need)
    }

    fn exec_dropout_forward(&self, mask: &DropoutMask, x: &ClTensor) -> Result<ClTensor> {
        norm::dropout(&self.rt, mask, x)
    }

    fn exec_dropout_backward(&self, mask: &DropoutMask, dy: &ClTensor) -> Result<ClTensor> {
        norm::dropout(&self.rt, mask, dy)
    }

    fn exec_optimizer_step(
        &self,
        optimizer: &Optimizer,
        param: &mut ClTensor,
        grad: &ClTensor,
        slots: &mut [ClTensor],
        t: u64,
    ) -> Result<()> {
        ops::optimizer_step(&self.rt, optimizer, param, grad, slots, t)
    }
}
