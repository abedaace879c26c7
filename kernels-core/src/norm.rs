//! Batch normalization: parameters, validated geometry and the scalars every
//! backend derives from them, with PyTorch's semantics.
//!
//! x is [N, C, H, W] (per-channel statistics over N·H·W, `BatchNorm2d`) or
//! [N, F] (per-feature statistics over N, `BatchNorm1d`); γ, β, the running
//! mean and the running variance are [C]. With M = N·H·W values per channel:
//!
//! - **training**: μ = Σx / M, σ² = Σ(x − μ)² / M (biased), x̂ = (x − μ) /
//!   √(σ² + ε), y = γ·x̂ + β; the running statistics move by `momentum`
//!   towards μ and the *unbiased* variance σ²·M / (M − 1). M must be at least
//!   2, as in PyTorch ("expected more than 1 value per channel").
//! - **evaluation**: y = γ·(x − running_mean) / √(running_var + ε) + β.
//! - **backward** (of training mode, the one a network trains with), from the
//!   saved μ and 1/√(σ² + ε): dβ = Σ dy, dγ = Σ dy·x̂,
//!   dx = γ/√(σ² + ε) · (dy − dβ/M − x̂·dγ/M).

use crate::error::{Error, Result};

/// Batch-norm hyper-parameters; the defaults are PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNorm {
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Weight of the new batch statistic in the running average.
    pub momentum: f64,
}

impl Default for BatchNorm {
    fn default() -> Self {
        Self { eps: 1e-5, momentum: 0.1 }
    }
}

impl BatchNorm {
    /// The hyper-parameters as the f32 backends use them, each rounded once:
    /// (1 − momentum) is formed in f64 first, as the optimisers do.
    pub fn scalars(&self) -> BatchNormScalars {
        BatchNormScalars {
            eps: self.eps as f32,
            momentum: self.momentum as f32,
            one_minus_momentum: (1.0 - self.momentum) as f32,
        }
    }
}

/// f32 forms of [`BatchNorm`]'s hyper-parameters (see [`BatchNorm::scalars`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormScalars {
    pub eps: f32,
    pub momentum: f32,
    pub one_minus_momentum: f32,
}

/// Validated geometry of a batch-norm call: `n` samples, `c` channels of
/// `spatial` values each (H·W, or 1 for [N, F]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormGeometry {
    pub n: usize,
    pub c: usize,
    pub spatial: usize,
    /// The input's shape, rank 2 or 4, for outputs shaped like it.
    rank4: Option<[usize; 2]>,
    pub params: BatchNorm,
}

impl BatchNormGeometry {
    const OP: &'static str = "batch_norm";

    /// Validates x ([N, C, H, W] or [N, F]) and the hyper-parameters; the
    /// per-channel tensors are checked by [`Self::check_channel`].
    pub fn new(x: &[usize], params: &BatchNorm) -> Result<Self> {
        let op = Self::OP;
        let (n, c, spatial, rank4) = match *x {
            [n, c, h, w] => (n, c, h.checked_mul(w), Some([h, w])),
            [n, f] => (n, f, Some(1), None),
            _ => return Err(Error::shape(op, format!("input x must have rank 4 [N, C, H, W] or 2 [N, F], got {x:?}"))),
        };
        if x.contains(&0) {
            return Err(Error::shape(op, format!("input x has a zero dimension: {x:?}")));
        }
        let spatial = spatial.ok_or_else(|| Error::shape(op, format!("{x:?} overflows usize")))?;
        n.checked_mul(c)
            .and_then(|v| v.checked_mul(spatial))
            .ok_or_else(|| Error::shape(op, format!("{x:?} overflows usize")))?;
        let eps = params.eps;
        if !(eps.is_finite() && (eps as f32).is_finite() && eps as f32 > 0.0) {
            return Err(Error::param(
                op,
                format!("eps = {eps} must be positive and finite, and nonzero as an f32 (the backends compute in f32)"),
            ));
        }
        if !(0.0..=1.0).contains(&params.momentum) {
            return Err(Error::param(op, format!("momentum = {} must be in [0, 1]", params.momentum)));
        }
        Ok(Self { n, c, spatial, rank4, params: *params })
    }

    /// Values per channel in one batch: N·H·W.
    pub fn per_channel(&self) -> usize {
        self.n * self.spatial
    }

    /// Elements of x (and y, dx).
    pub fn len(&self) -> usize {
        self.n * self.c * self.spatial
    }

    /// Never true: a geometry has no zero dimension.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape of x, y, dy and dx.
    pub fn x_shape(&self) -> Vec<usize> {
        match self.rank4 {
            Some([h, w]) => vec![self.n, self.c, h, w],
            None => vec![self.n, self.c],
        }
    }

    /// Checks that a per-channel tensor (γ, β, running or saved statistics)
    /// is [C].
    pub fn check_channel(&self, what: &str, shape: &[usize]) -> Result<()> {
        if shape != [self.c] {
            return Err(Error::shape(
                Self::OP,
                format!("{what} must have shape [{}] (the channels of x {:?}), got {shape:?}", self.c, self.x_shape()),
            ));
        }
        Ok(())
    }

    /// Training mode needs two values per channel at least: the unbiased
    /// variance divides by M − 1.
    pub fn check_trainable(&self) -> Result<()> {
        if self.per_channel() < 2 {
            return Err(Error::shape(
                Self::OP,
                format!(
                    "training mode needs more than 1 value per channel to estimate the variance, x {:?} has {}",
                    self.x_shape(),
                    self.per_channel()
                ),
            ));
        }
        Ok(())
    }

    /// Checks dy against x's shape.
    pub fn check_dy(&self, dy: &[usize]) -> Result<()> {
        if dy != self.x_shape().as_slice() {
            return Err(Error::shape(
                Self::OP,
                format!("output gradient dy must have shape {:?}, got {dy:?}", self.x_shape()),
            ));
        }
        Ok(())
    }

    /// M / (M − 1): turns the biased batch variance into the unbiased one the
    /// running variance tracks (in f64; only valid after `check_trainable`).
    pub fn unbiased_factor(&self) -> f64 {
        let m = self.per_channel() as f64;
        m / (m - 1.0)
    }
}

/// The batch statistics a training-mode forward saves for its backward:
/// per channel, μ and 1/√(σ² + ε).
#[derive(Debug)]
pub struct BatchStats<T> {
    pub mean: T,
    pub inv_std: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_parameters_are_checked() {
        let p = BatchNorm::default();
        let g = BatchNormGeometry::new(&[2, 3, 4, 5], &p).unwrap();
        assert_eq!((g.n, g.c, g.spatial, g.per_channel()), (2, 3, 20, 40));
        assert_eq!(g.x_shape(), vec![2, 3, 4, 5]);
        let g = BatchNormGeometry::new(&[7, 10], &p).unwrap();
        assert_eq!((g.n, g.c, g.spatial), (7, 10, 1));
        assert!(g.check_channel("gamma", &[10]).is_ok());
        let err = g.check_channel("gamma", &[3]).unwrap_err();
        assert!(err.to_string().contains("gamma") && err.to_string().contains("[10]"), "{err}");
        assert!(BatchNormGeometry::new(&[2, 3, 4], &p).is_err());
        assert!(BatchNormGeometry::new(&[0, 3], &p).is_err());
        let one = BatchNormGeometry::new(&[1, 3], &p).unwrap();
        assert!(one.check_trainable().unwrap_err().to_string().contains("more than 1 value"));
        for eps in [0.0, -1.0, 1e-50, f64::NAN, 1e39] {
            let err = BatchNormGeometry::new(&[2, 3], &BatchNorm { eps, momentum: 0.1 }).unwrap_err();
            assert!(matches!(err, Error::Param { .. }), "eps {eps}: {err}");
        }
        for momentum in [-0.1, 1.5, f64::NAN] {
            assert!(BatchNormGeometry::new(&[2, 3], &BatchNorm { eps: 1e-5, momentum }).is_err());
        }
    }
}
