//! Op parameters and their validated geometries.
//!
//! Every backend receives a geometry, never raw shapes: the only way to build
//! one is through its `new`, which validates the shapes and parameters once,
//! at the trait's edge, and returns an `Error` naming the op and the
//! dimensions. Sizes are checked for overflow so a kernel can index freely.

use crate::error::{Error, Result};

/// 2-D convolution (cross-correlation) parameters, per axis [h, w].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2d {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl Default for Conv2d {
    fn default() -> Self {
        Self { stride: [1, 1], padding: [0, 0], dilation: [1, 1] }
    }
}

impl Conv2d {
    /// Square stride and padding, no dilation.
    pub fn new(stride: usize, padding: usize) -> Self {
        Self { stride: [stride, stride], padding: [padding, padding], dilation: [1, 1] }
    }
}

/// Pooling kind. Max: padding never wins, ties go to the first element in
/// row-major window order, and a NaN anywhere in the window wins (the last
/// NaN in that order, as in PyTorch): see [`max_pool_takes`]. Avg: divides
/// by the full window, padding included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolKind {
    Max,
    Avg,
}

/// Whether `candidate`, met after `best` in row-major window order, becomes
/// the max pool's winner: strictly larger, or NaN (PyTorch's
/// `(val > maxval) || isnan(val)`). A NaN in the window therefore gives NaN,
/// so divergence shows instead of being masked; backward routes the
/// gradient to the winner. Every backend implements this rule.
///
/// Both comparisons are always evaluated (`|`, not `||`), so the rule stays
/// branch-free in vectorised loops.
#[inline(always)]
pub fn max_pool_takes<T: PartialOrd>(candidate: T, best: T) -> bool {
    #[allow(clippy::eq_op)] // x != x is the generic NaN test
    let is_nan = candidate != candidate;
    (candidate > best) | is_nan
}

/// 2-D pooling parameters, per axis [h, w].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool2d {
    pub kind: PoolKind,
    pub window: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl Pool2d {
    /// Square window, stride and padding.
    pub fn new(kind: PoolKind, window: usize, stride: usize, padding: usize) -> Self {
        Self { kind, window: [window, window], stride: [stride, stride], padding: [padding, padding] }
    }
}

/// Which gradients a backward call should produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GradRequest {
    pub dx: bool,
    pub dw: bool,
    pub db: bool,
}

impl GradRequest {
    pub const ALL: Self = Self { dx: true, dw: true, db: true };
    /// Parameters only: the first layer of a network needs no dx.
    pub const PARAMS: Self = Self { dx: false, dw: true, db: true };
}

/// Output size of one axis: floor((in + 2·pad − dil·(k−1) − 1) / stride) + 1,
/// or None when the (dilated) kernel does not fit the padded input.
pub fn output_size(input: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) -> Option<usize> {
    let padded = input.checked_add(padding.checked_mul(2)?)?;
    let span = dilation.checked_mul(kernel.checked_sub(1)?)?.checked_add(1)?;
    if span > padded || stride == 0 {
        return None;
    }
    Some((padded - span) / stride + 1)
}

fn product(op: &'static str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::shape(op, format!("{dims:?} overflows usize")))
}

fn rank(op: &'static str, what: &str, shape: &[usize], want: usize) -> Result<()> {
    if shape.len() != want {
        return Err(Error::shape(op, format!("{what} must have rank {want}, got shape {shape:?}")));
    }
    Ok(())
}

fn nonzero(op: &'static str, what: &str, shape: &[usize]) -> Result<()> {
    if shape.contains(&0) {
        return Err(Error::shape(op, format!("{what} has a zero dimension: {shape:?}")));
    }
    Ok(())
}

/// Validated geometry of a conv2d call: x [n, c, h, w], w [k, c, r, s],
/// y [n, k, oh, ow].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub r: usize,
    pub s: usize,
    pub oh: usize,
    pub ow: usize,
    pub params: Conv2d,
}

impl ConvGeometry {
    const OP: &'static str = "conv2d";

    /// Validates x [n, c, h, w], w [k, c, r, s] and an optional bias [k].
    pub fn new(x: &[usize], w: &[usize], bias: Option<&[usize]>, params: &Conv2d) -> Result<Self> {
        let op = Self::OP;
        rank(op, "input x", x, 4)?;
        rank(op, "weight w", w, 4)?;
        if x[1] != w[1] {
            return Err(Error::shape(
                op,
                format!("input x {x:?} has {} channels but weight w {w:?} expects {}", x[1], w[1]),
            ));
        }
        if let Some(b) = bias
            && b != [w[0]]
        {
            return Err(Error::shape(op, format!("bias must have shape [{}] (filters of w {w:?}), got {b:?}", w[0])));
        }
        Self::from_dims([x[0], x[1], x[2], x[3]], [w[0], w[2], w[3]], params)
    }

    /// Validates a geometry given as input dims [n, c, h, w] and filter dims
    /// [k, r, s] (used by the shape suite and the benchmarks).
    pub fn from_dims(input: [usize; 4], filters: [usize; 3], params: &Conv2d) -> Result<Self> {
        let op = Self::OP;
        let [n, c, h, w] = input;
        let [k, r, s] = filters;
        nonzero(op, "input x", &input)?;
        nonzero(op, "weight w", &[k, c, r, s])?;
        if params.stride.contains(&0) {
            return Err(Error::param(op, format!("stride must be positive, got {:?}", params.stride)));
        }
        if params.dilation.contains(&0) {
            return Err(Error::param(op, format!("dilation must be positive, got {:?}", params.dilation)));
        }
        let axis = |size, kernel, i: usize| {
            output_size(size, kernel, params.stride[i], params.padding[i], params.dilation[i]).ok_or_else(|| {
                Error::empty(
                    op,
                    format!(
                        "kernel {r}x{s} with dilation {:?} does not fit input {h}x{w} padded by {:?}",
                        params.dilation, params.padding
                    ),
                )
            })
        };
        let oh = axis(h, r, 0)?;
        let ow = axis(w, s, 1)?;
        let geometry = Self { n, c, h, w, k, r, s, oh, ow, params: *params };
        // Every size a kernel may form must fit in usize (and in i64 for
        // signed index arithmetic on devices).
        for dims in [geometry.x_shape(), geometry.w_shape(), geometry.y_shape()] {
            let len = product(op, &dims)?;
            if len > i64::MAX as usize / 16 {
                return Err(Error::shape(op, format!("tensor {dims:?} is too large")));
            }
        }
        product(op, &[n, oh, ow, c, r, s, k])?;
        Ok(geometry)
    }

    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    pub fn w_shape(&self) -> [usize; 4] {
        [self.k, self.c, self.r, self.s]
    }
    pub fn b_shape(&self) -> [usize; 1] {
        [self.k]
    }
    pub fn y_shape(&self) -> [usize; 4] {
        [self.n, self.k, self.oh, self.ow]
    }

    /// Checks an output gradient dy against [n, k, oh, ow].
    pub fn check_dy(&self, dy: &[usize]) -> Result<()> {
        if dy != self.y_shape() {
            return Err(Error::shape(
                Self::OP,
                format!("output gradient dy must have shape {:?}, got {dy:?}", self.y_shape()),
            ));
        }
        Ok(())
    }
}

/// Validated geometry of a pool2d call: x [n, c, h, w] -> y [n, c, oh, ow].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolGeometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub params: Pool2d,
}

impl PoolGeometry {
    const OP: &'static str = "pool2d";

    pub fn new(x: &[usize], params: &Pool2d) -> Result<Self> {
        let op = Self::OP;
        rank(op, "input x", x, 4)?;
        nonzero(op, "input x", x)?;
        let p = params;
        if p.window.contains(&0) {
            return Err(Error::param(op, format!("window must be positive, got {:?}", p.window)));
        }
        if p.stride.contains(&0) {
            return Err(Error::param(op, format!("stride must be positive, got {:?}", p.stride)));
        }
        // As PyTorch: padding at most half the window, so every window holds
        // at least one real element and max pooling is always defined.
        for i in 0..2 {
            if p.padding[i].checked_mul(2).is_none_or(|twice| twice > p.window[i]) {
                return Err(Error::param(
                    op,
                    format!("padding {:?} must be at most half the window {:?}", p.padding, p.window),
                ));
            }
        }
        let axis = |size, i: usize| {
            output_size(size, p.window[i], p.stride[i], p.padding[i], 1).ok_or_else(|| {
                Error::empty(
                    op,
                    format!("window {:?} does not fit input {}x{} padded by {:?}", p.window, x[2], x[3], p.padding),
                )
            })
        };
        let oh = axis(x[2], 0)?;
        let ow = axis(x[3], 1)?;
        let len = product(op, x)?;
        product(op, &[len, p.window[0], p.window[1]])?;
        Ok(Self { n: x[0], c: x[1], h: x[2], w: x[3], oh, ow, params: *p })
    }

    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    pub fn y_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.oh, self.ow]
    }
    pub fn window_len(&self) -> usize {
        self.params.window[0] * self.params.window[1]
    }

    pub fn check_dy(&self, dy: &[usize]) -> Result<()> {
        if dy != self.y_shape() {
            return Err(Error::shape(
                Self::OP,
                format!("output gradient dy must have shape {:?}, got {dy:?}", self.y_shape()),
            ));
        }
        Ok(())
    }
}

/// Validated geometry of a linear call: x [n, i], w [o, i], b [o] -> y [n, o].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinearGeometry {
    pub n: usize,
    pub i: usize,
    pub o: usize,
}

impl LinearGeometry {
    const OP: &'static str = "linear";

    pub fn new(x: &[usize], w: &[usize], bias: Option<&[usize]>) -> Result<Self> {
        let op = Self::OP;
        rank(op, "input x", x, 2)?;
        rank(op, "weight w", w, 2)?;
        nonzero(op, "input x", x)?;
        nonzero(op, "weight w", w)?;
        if x[1] != w[1] {
            return Err(Error::shape(
                op,
                format!("input x {x:?} has {} features but weight w {w:?} expects {}", x[1], w[1]),
            ));
        }
        if let Some(b) = bias
            && b != [w[0]]
        {
            return Err(Error::shape(op, format!("bias must have shape [{}] (outputs of w {w:?}), got {b:?}", w[0])));
        }
        product(op, &[x[0], x[1], w[0]])?;
        Ok(Self { n: x[0], i: x[1], o: w[0] })
    }

    pub fn x_shape(&self) -> [usize; 2] {
        [self.n, self.i]
    }
    pub fn w_shape(&self) -> [usize; 2] {
        [self.o, self.i]
    }
    pub fn y_shape(&self) -> [usize; 2] {
        [self.n, self.o]
    }

    pub fn check_dy(&self, dy: &[usize]) -> Result<()> {
        if dy != self.y_shape() {
            return Err(Error::shape(
                Self::OP,
                format!("output gradient dy must have shape {:?}, got {dy:?}", self.y_shape()),
            ));
        }
        Ok(())
    }
}

/// Checks that two element-wise operands have the same non-empty shape.
pub fn check_same_shape(op: &'static str, a_name: &str, a: &[usize], b_name: &str, b: &[usize]) -> Result<()> {
    if a != b {
        return Err(Error::shape(op, format!("{a_name} {a:?} and {b_name} {b:?} must have the same shape")));
    }
    if a.is_empty() || a.contains(&0) {
        return Err(Error::shape(op, format!("{a_name} {a:?} is empty")));
    }
    Ok(())
}

/// Validates logits [n, classes] and n labels in [0, classes).
pub fn check_logits_labels(logits: &[usize], labels: &[usize]) -> Result<(usize, usize)> {
    let op = "softmax_cross_entropy";
    rank(op, "logits", logits, 2)?;
    nonzero(op, "logits", logits)?;
    let (n, classes) = (logits[0], logits[1]);
    if labels.len() != n {
        return Err(Error::shape(
            op,
            format!("logits {logits:?} has batch {n} but {} labels were given", labels.len()),
        ));
    }
    if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(Error::Label { op, index, label, classes });
    }
    Ok((n, classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_matches_the_formula() {
        assert_eq!(output_size(4, 3, 1, 0, 1), Some(2));
        assert_eq!(output_size(4, 3, 1, 1, 1), Some(4));
        assert_eq!(output_size(4, 3, 3, 1, 1), Some(2));
        assert_eq!(output_size(28, 5, 1, 2, 1), Some(28));
        assert_eq!(output_size(224, 11, 4, 2, 1), Some(55));
        assert_eq!(output_size(7, 3, 1, 0, 2), Some(3));
        assert_eq!(output_size(2, 3, 1, 0, 1), None);
        assert_eq!(output_size(5, 3, 0, 0, 1), None);
    }

    #[test]
    fn conv_geometry_names_the_mismatch() {
        let err = ConvGeometry::new(&[1, 2, 5, 5], &[3, 4, 3, 3], None, &Conv2d::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("conv2d") && msg.contains("2 channels") && msg.contains("expects 4"), "{msg}");
        let err = ConvGeometry::new(&[1, 1, 5, 5], &[1, 1, 3, 3], None, &Conv2d::new(0, 0)).unwrap_err();
        assert!(matches!(err, Error::Param { .. }), "{err}");
        let err = ConvGeometry::new(&[1, 1, 2, 2], &[1, 1, 3, 3], None, &Conv2d::default()).unwrap_err();
        assert!(matches!(err, Error::EmptyOutput { .. }), "{err}");
        let err = ConvGeometry::new(&[1, 1, 5, 5], &[2, 1, 3, 3], Some(&[3]), &Conv2d::default()).unwrap_err();
        assert!(err.to_string().contains("bias"), "{err}");
        assert!(ConvGeometry::new(&[usize::MAX, 1, 5, 5], &[1, 1, 3, 3], None, &Conv2d::default()).is_err());
    }

    #[test]
    fn pool_geometry_rejects_excess_padding() {
        let err = PoolGeometry::new(&[1, 1, 4, 4], &Pool2d::new(PoolKind::Max, 2, 2, 2)).unwrap_err();
        assert!(err.to_string().contains("half the window"), "{err}");
        let g = PoolGeometry::new(&[8, 64, 112, 112], &Pool2d::new(PoolKind::Max, 3, 2, 1)).unwrap();
        assert_eq!((g.oh, g.ow), (56, 56));
    }

    #[test]
    fn labels_are_checked() {
        assert!(check_logits_labels(&[2, 3], &[0, 2]).is_ok());
        assert!(matches!(check_logits_labels(&[2, 3], &[0, 3]), Err(Error::Label { index: 1, label: 3, .. })));
        assert!(check_logits_labels(&[2, 3], &[0]).is_err());
    }
}
