//! Analytic FLOP and minimal-byte counts for every op.
//!
//! FLOPs count a multiply and an add as two. Bytes are the minimum traffic:
//! each input read once and each output written once, at `elem` bytes per
//! element (4 for f32). Throughput and arithmetic intensity in the reports
//! come from these, never from what a kernel happens to do.

use crate::norm::BatchNormGeometry;
use crate::params::{ConvGeometry, LinearGeometry, PoolGeometry};

/// FLOPs and bytes of one op call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    pub flops: u64,
    pub bytes: u64,
}

impl Cost {
    /// FLOPs per byte.
    pub fn intensity(&self) -> f64 {
        if self.bytes == 0 { 0.0 } else { self.flops as f64 / self.bytes as f64 }
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost { flops: self.flops + o.flops, bytes: self.bytes + o.bytes }
    }
}

fn count(dims: &[usize]) -> u64 {
    dims.iter().map(|&d| d as u64).product()
}

fn bytes(elem: usize, tensors: &[&[usize]]) -> u64 {
    tensors.iter().map(|t| count(t)).sum::<u64>() * elem as u64
}

/// The reduction of one conv output: C·R·S multiply-adds.
fn conv_macs(g: &ConvGeometry) -> u64 {
    count(&[g.n, g.k, g.oh, g.ow, g.c, g.r, g.s])
}

/// Forward: 2·N·K·OH·OW·C·R·S; reads x, w (and b), writes y.
pub fn conv2d_forward(g: &ConvGeometry, bias: bool, elem: usize) -> Cost {
    let b = if bias { g.k } else { 0 };
    Cost { flops: 2 * conv_macs(g), bytes: bytes(elem, &[&g.x_shape(), &g.w_shape(), &[b], &g.y_shape()]) }
}

/// dx: 2·N·K·OH·OW·C·R·S; reads dy, w, writes dx.
pub fn conv2d_backward_dx(g: &ConvGeometry, elem: usize) -> Cost {
    Cost { flops: 2 * conv_macs(g), bytes: bytes(elem, &[&g.y_shape(), &g.w_shape(), &g.x_shape()]) }
}

/// dw: 2·N·K·OH·OW·C·R·S; reads dy, x, writes dw.
pub fn conv2d_backward_dw(g: &ConvGeometry, elem: usize) -> Cost {
    Cost { flops: 2 * conv_macs(g), bytes: bytes(elem, &[&g.y_shape(), &g.x_shape(), &g.w_shape()]) }
}

/// db: N·K·OH·OW additions; reads dy, writes db.
pub fn conv2d_backward_db(g: &ConvGeometry, elem: usize) -> Cost {
    Cost { flops: count(&g.y_shape()), bytes: bytes(elem, &[&g.y_shape(), &g.b_shape()]) }
}

/// dx + dw + db, as one backward call computes them.
pub fn conv2d_backward(g: &ConvGeometry, elem: usize) -> Cost {
    let (dx, dw, db) = (conv2d_backward_dx(g, elem), conv2d_backward_dw(g, elem), conv2d_backward_db(g, elem));
    // dy and x are each read once by a fused backward; count them once.
    Cost {
        flops: dx.flops + dw.flops + db.flops,
        bytes: bytes(elem, &[&g.y_shape(), &g.x_shape(), &g.w_shape(), &g.x_shape(), &g.w_shape(), &g.b_shape()]),
    }
}

/// Pool forward: N·C·OH·OW·window; reads x, writes y.
pub fn pool2d_forward(g: &PoolGeometry, elem: usize) -> Cost {
    Cost { flops: count(&g.y_shape()) * g.window_len() as u64, bytes: bytes(elem, &[&g.x_shape(), &g.y_shape()]) }
}

/// Pool backward: N·C·OH·OW·window; reads x and dy, writes dx.
pub fn pool2d_backward(g: &PoolGeometry, elem: usize) -> Cost {
    Cost {
        flops: count(&g.y_shape()) * g.window_len() as u64,
        bytes: bytes(elem, &[&g.x_shape(), &g.y_shape(), &g.x_shape()]),
    }
}

/// Linear forward: 2·N·I·O; reads x, w, b, writes y.
pub fn linear_forward(g: &LinearGeometry, bias: bool, elem: usize) -> Cost {
    let b = if bias { g.o } else { 0 };
    Cost { flops: 2 * count(&[g.n, g.i, g.o]), bytes: bytes(elem, &[&g.x_shape(), &g.w_shape(), &[b], &g.y_shape()]) }
}

/// Linear backward (dx, dw, db): 2·N·I·O each for dx and dw, N·O for db.
pub fn linear_backward(g: &LinearGeometry, elem: usize) -> Cost {
    Cost {
        flops: 4 * count(&[g.n, g.i, g.o]) + count(&[g.n, g.o]),
        bytes: bytes(elem, &[&g.y_shape(), &g.x_shape(), &g.w_shape(), &g.x_shape(), &g.w_shape(), &[g.o]]),
    }
}

/// Element-wise op over `len` elements with `inputs` operands read.
pub fn elementwise(len: usize, inputs: usize, elem: usize) -> Cost {
    Cost { flops: len as u64, bytes: (len * (inputs + 1) * elem) as u64 }
}

/// Batch norm, training forward: 7 FLOPs per element — the mean's add, the
/// variance's subtract, multiply and add, and y's subtract, multiply and
/// add (per-channel scalars are not counted); reads x, γ, β and the running
/// statistics, writes y, the running statistics and the saved μ, 1/σ.
pub fn batch_norm_train(g: &BatchNormGeometry, elem: usize) -> Cost {
    let len = g.len() as u64;
    Cost { flops: 7 * len, bytes: (2 * len + 8 * g.c as u64) * elem as u64 }
}

/// Batch norm, evaluation forward: 3 FLOPs per element (subtract, multiply,
/// add); reads x, γ, β and the running statistics, writes y.
pub fn batch_norm_eval(g: &BatchNormGeometry, elem: usize) -> Cost {
    let len = g.len() as u64;
    Cost { flops: 3 * len, bytes: (2 * len + 4 * g.c as u64) * elem as u64 }
}

/// Batch norm backward (dx, dγ, dβ): 11 FLOPs per element — Σdy (add),
/// Σdy·x̂ (subtract, two multiplies, add), dx (x̂'s subtract and multiply,
/// then a multiply, two subtracts and the scale's multiply); reads x, dy, γ
/// and the saved statistics, writes dx, dγ, dβ.
pub fn batch_norm_backward(g: &BatchNormGeometry, elem: usize) -> Cost {
    let len = g.len() as u64;
    Cost { flops: 11 * len, bytes: (3 * len + 5 * g.c as u64) * elem as u64 }
}

/// Dropout, forward or backward: one multiply per element (the mask's
/// integer hashing is not floating point and is not counted); reads one
/// operand, writes one.
pub fn dropout(len: usize, elem: usize) -> Cost {
    Cost { flops: len as u64, bytes: (2 * len * elem) as u64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Conv2d;

    #[test]
    fn lenet_c1_forward_flops() {
        let g = ConvGeometry::from_dims([256, 1, 28, 28], [6, 5, 5], &Conv2d::new(1, 2)).unwrap();
        // 2 · 256 · 6 · 28 · 28 · 1 · 5 · 5
        assert_eq!(conv2d_forward(&g, true, 4).flops, 2 * 256 * 6 * 28 * 28 * 25);
        assert_eq!(conv2d_backward_db(&g, 4).flops, 256 * 6 * 28 * 28);
        assert_eq!(conv2d_forward(&g, false, 4).bytes, 4 * (256 * 784 + 150 + 256 * 6 * 784));
    }

    #[test]
    fn pool_and_linear_counts() {
        use crate::params::{Pool2d, PoolKind};
        let g = PoolGeometry::new(&[256, 6, 28, 28], &Pool2d::new(PoolKind::Max, 2, 2, 0)).unwrap();
        assert_eq!(pool2d_forward(&g, 4).flops, 256 * 6 * 14 * 14 * 4);
        let l = LinearGeometry::new(&[256, 400], &[120, 400], None).unwrap();
        assert_eq!(linear_forward(&l, false, 4).flops, 2 * 256 * 400 * 120);
    }

    #[test]
    fn batch_norm_and_dropout_counts() {
        let g = BatchNormGeometry::new(&[256, 6, 28, 28], &crate::norm::BatchNorm::default()).unwrap();
        let len = 256 * 6 * 28 * 28;
        assert_eq!(batch_norm_train(&g, 4), Cost { flops: 7 * len, bytes: 4 * (2 * len + 48) });
        assert_eq!(batch_norm_eval(&g, 4).flops, 3 * len);
        assert_eq!(batch_norm_backward(&g, 4), Cost { flops: 11 * len, bytes: 4 * (3 * len + 30) });
        assert_eq!(dropout(1000, 4), Cost { flops: 1000, bytes: 8000 });
    }
}
