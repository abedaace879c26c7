//! The shape suite of DESIGN.md as data, so tests, the harness and the
//! benches measure the same problems. The first four conv shapes are the
//! seeds' own layers. No peer's time rides along: comparisons are measured
//! in the same run (the harness's peers), never copied from another machine.

use crate::error::Result;
use crate::norm::{BatchNorm, BatchNormGeometry};
use crate::params::{Conv2d, ConvGeometry, LinearGeometry, Pool2d, PoolGeometry, PoolKind};

/// One convolution problem of the suite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvCase {
    pub name: &'static str,
    /// [n, c, h, w]
    pub input: [usize; 4],
    /// [k, r, s]
    pub filters: [usize; 3],
    pub stride: usize,
    pub padding: usize,
}

impl ConvCase {
    pub fn params(&self) -> Conv2d {
        Conv2d::new(self.stride, self.padding)
    }
    pub fn geometry(&self) -> Result<ConvGeometry> {
        ConvGeometry::from_dims(self.input, self.filters, &self.params())
    }
}

/// One pooling problem of the suite (square window, stride and padding).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolCase {
    pub name: &'static str,
    pub input: [usize; 4],
    pub window: usize,
    pub stride: usize,
    pub padding: usize,
}

impl PoolCase {
    pub fn params(&self, kind: PoolKind) -> Pool2d {
        Pool2d::new(kind, self.window, self.stride, self.padding)
    }
    pub fn geometry(&self, kind: PoolKind) -> Result<PoolGeometry> {
        PoolGeometry::new(&self.input, &self.params(kind))
    }
}

/// One linear problem: LeNet's fully connected layers at batch 256.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearCase {
    pub name: &'static str,
    pub batch: usize,
    pub inputs: usize,
    pub outputs: usize,
}

impl LinearCase {
    pub fn geometry(&self) -> Result<LinearGeometry> {
        LinearGeometry::new(&[self.batch, self.inputs], &[self.outputs, self.inputs], Some(&[self.outputs]))
    }
}

const fn conv(name: &'static str, input: [usize; 4], filters: [usize; 3], stride: usize, padding: usize) -> ConvCase {
    ConvCase { name, input, filters, stride, padding }
}

pub const CONV_SUITE: [ConvCase; 7] = [
    conv("lenet-c1", [256, 1, 28, 28], [6, 5, 5], 1, 2),
    conv("lenet-c2", [256, 6, 14, 14], [16, 5, 5], 1, 0),
    conv("simplecnn-c1", [100, 1, 28, 28], [30, 5, 5], 1, 0),
    conv("mxnet-c2", [256, 20, 12, 12], [50, 3, 3], 1, 0),
    conv("resnet-3x3", [8, 64, 56, 56], [64, 3, 3], 1, 1),
    conv("resnet-s2", [8, 128, 28, 28], [256, 3, 3], 2, 1),
    conv("alexnet-c1", [8, 3, 224, 224], [64, 11, 11], 4, 2),
];

pub const POOL_SUITE: [PoolCase; 2] = [
    PoolCase { name: "lenet-p1", input: [256, 6, 28, 28], window: 2, stride: 2, padding: 0 },
    PoolCase { name: "resnet-p0", input: [8, 64, 112, 112], window: 3, stride: 2, padding: 1 },
];

pub const LINEAR_SUITE: [LinearCase; 3] = [
    LinearCase { name: "lenet-fc1", batch: 256, inputs: 400, outputs: 120 },
    LinearCase { name: "lenet-fc2", batch: 256, inputs: 120, outputs: 84 },
    LinearCase { name: "lenet-fc3", batch: 256, inputs: 84, outputs: 10 },
];

/// One normalisation or dropout problem: the activation it applies to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormCase {
    pub name: &'static str,
    /// [N, C, H, W] or [N, F] (the trailing dimensions are 1 for [N, F]:
    /// see [`NormCase::shape`]).
    pub input: [usize; 4],
    /// Rank 2 ([N, F], a dense layer's output) or 4 (NCHW).
    pub rank: usize,
}

impl NormCase {
    /// The activation's shape: [N, C, H, W], or [N, F] when `rank` is 2.
    pub fn shape(&self) -> Vec<usize> {
        if self.rank == 2 { self.input[..2].to_vec() } else { self.input.to_vec() }
    }

    pub fn geometry(&self) -> Result<BatchNormGeometry> {
        BatchNormGeometry::new(&self.shape(), &BatchNorm::default())
    }
}

/// Batch norm of the networks `lenet --model` trains (lenet5-bn's bn1 after
/// conv1 and bn3 after fc1, at batch 256) and of a ResNet block; dropout
/// runs on the same activations.
pub const NORM_SUITE: [NormCase; 3] = [
    NormCase { name: "lenet-bn1", input: [256, 6, 28, 28], rank: 4 },
    NormCase { name: "lenet-bn3", input: [256, 120, 1, 1], rank: 2 },
    NormCase { name: "resnet-bn", input: [8, 64, 56, 56], rank: 4 },
];

pub fn conv_case(name: &str) -> Option<&'static ConvCase> {
    CONV_SUITE.iter().find(|c| c.name == name)
}

pub fn pool_case(name: &str) -> Option<&'static PoolCase> {
    POOL_SUITE.iter().find(|c| c.name == name)
}

pub fn linear_case(name: &str) -> Option<&'static LinearCase> {
    LINEAR_SUITE.iter().find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_shape_is_valid() {
        for c in &CONV_SUITE {
            let g = c.geometry().unwrap();
            assert!(g.oh > 0 && g.ow > 0, "{}", c.name);
        }
        assert_eq!(conv_case("alexnet-c1").unwrap().geometry().unwrap().oh, 55);
        assert_eq!(conv_case("resnet-s2").unwrap().geometry().unwrap().oh, 14);
        for p in &POOL_SUITE {
            p.geometry(PoolKind::Max).unwrap();
        }
        for l in &LINEAR_SUITE {
            l.geometry().unwrap();
        }
        for b in &NORM_SUITE {
            let g = b.geometry().unwrap();
            g.check_trainable().unwrap();
        }
        assert_eq!(NORM_SUITE[1].shape(), [256, 120]);
    }
}
