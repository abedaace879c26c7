//! The device tensor: an OpenCL buffer and its shape.

use kernels_core::Shaped;
use ocl::Buffer;

use crate::runtime::DeviceBuffer;

/// A tensor resident in an OpenCL buffer. Created by the backend's
/// `upload`, `zeros` and ops; read back with `download`.
#[derive(Debug)]
pub struct ClTensor {
    pub(crate) storage: DeviceBuffer<f32>,
    pub(crate) shape: Vec<usize>,
}

impl ClTensor {
    pub(crate) fn new(storage: DeviceBuffer<f32>, shape: &[usize]) -> Self {
        Self { storage, shape: shape.to_vec() }
    }

    pub(crate) fn buf(&self) -> &Buffer<f32> {
        &self.storage.buffer
    }
}

impl Shaped for ClTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}
