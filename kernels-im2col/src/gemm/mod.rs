//! The one door to `matrixmultiply::sgemm`: a bounds-checked, safe wrapper.
//!
//! - Computes C [m, n] = α·A [m, k]·B [k, n] + β·C over strided views of
//!   slices. A [`View`] names rows, columns and the two element strides, so a
//!   transposed operand is just swapped strides (no copy).
//! - Every call checks that each view's furthest element lies inside its
//!   slice and that the shapes agree, which is the invariant `sgemm` needs.
//! - Checked through every conv and linear test; timed by examples/im2col_bench.rs
//!   (its sgemm n=2048 line is the ceiling every figure is compared with).
//! - `unpacked.rs`: this crate's own AVX-512 and AVX2 GEMM, which reads its
//!   operands where they lie (no packing), on the same views.
//! - `packed.rs`: this crate's own packed (BLIS-style) GEMM, AVX2 6 x 16 and
//!   AVX-512 12 x 32 register kernels chosen by the `Simd` token, so it
//!   follows the ISA cap; portable falls back to `sgemm` here.
//! - What runs where (OPTIMISATION.md step 56): the unfold path's GEMMs
//!   (forward, dX, dW, pointwise) run `packed` at AVX2, and at AVX-512
//!   where the plan does not take `unpacked` (fewer than 32 filters, or
//!   `TileTargets::unpacked_gemms` off); `unpacked` runs the unfold path at
//!   AVX-512 with 32 or more filters, subpixel.rs's dX, and Winograd's
//!   GEMMs at both ISAs; `sgemm` (matrixmultiply, which ignores the cap)
//!   runs linear.rs and everything at the portable level.

pub(crate) mod packed;
pub(crate) mod unpacked;

/// A strided matrix view: element (i, j) sits at `i·row_stride + j·col_stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct View {
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl View {
    /// Dense row-major [rows, cols].
    pub fn row_major(rows: usize, cols: usize) -> Self {
        Self { rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// Row-major [rows, cols] whose rows lie `row_stride` apart (a column
    /// block of a wider matrix).
    pub fn strided(rows: usize, cols: usize, row_stride: usize) -> Self {
        Self { rows, cols, row_stride, col_stride: 1 }
    }

    /// The transpose, as a view of the same storage.
    pub fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride }
    }

    /// Elements from the first to the last one the view touches, inclusive.
    fn span(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1
        }
    }
}

/// A read-only operand: a slice and the view of it the product uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub view: View,
}

/// The output operand.
#[derive(Debug)]
pub(crate) struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub view: View,
}

/// Shorthand for a read-only operand.
pub(crate) fn mat(data: &[f32], view: View) -> Mat<'_> {
    Mat { data, view }
}

/// Shorthand for the output operand.
pub(crate) fn mat_mut(data: &mut [f32], view: View) -> MatMut<'_> {
    MatMut { data, view }
}

fn stride(s: usize) -> isize {
    // Tensor sizes are validated to be below i64::MAX / 16 by kernels-core,
    // and every stride here is at most a tensor's length.
    isize::try_from(s).unwrap_or_else(|_| panic!("stride {s} does not fit isize"))
}

/// Panics (an internal bug) unless A·B fits C and every view lies inside
/// its slice: the invariant every GEMM here (this one and gemm/unpacked.rs)
/// reads and writes by.
pub(crate) fn check_product(a: &Mat<'_>, b: &Mat<'_>, c: &MatMut<'_>) {
    let (va, vb, vc) = (a.view, b.view, c.view);
    assert!(
        va.rows == vc.rows && va.cols == vb.rows && vb.cols == vc.cols,
        "sgemm shapes disagree: A {va:?}, B {vb:?}, C {vc:?}"
    );
    assert!(
        va.span() <= a.data.len() && vb.span() <= b.data.len() && vc.span() <= c.data.len(),
        "sgemm view past its slice: A {va:?} in {}, B {vb:?} in {}, C {vc:?} in {}",
        a.data.len(),
        b.data.len(),
        c.data.len()
    );
}

/// C = α·A·B + β·C on strided views. Panics (an internal bug, never a user
/// error: the ops validate shapes first) when the views disagree or run past
/// their slices.
pub(crate) fn sgemm(alpha: f32, a: Mat<'_>, b: Mat<'_>, beta: f32, c: MatMut<'_>) {
    check_product(&a, &b, &c);
    let (Mat { data: a, view: va }, Mat { data: b, view: vb }, MatMut { data: c, view: vc }) = (a, b, c);
    if vc.rows == 0 || vc.cols == 0 {
        return;
    }
    // SAFETY: the asserts above keep every element sgemm reads of A and B
    // and reads or writes of C inside the borrowed slices; C is borrowed
    // mutably, so it cannot alias A or B. With k = 0 sgemm only scales C.
    unsafe {
        matrixmultiply::sgemm(
            va.rows,
            va.cols,
            vb.cols,
            alpha,
            a.as_ptr(),
            stride(va.row_stride),
            stride(va.col_stride),
            b.as_ptr(),
            stride(vb.row_stride),
            stride(vb.col_stride),
            beta,
            c.as_mut_ptr(),
            stride(vc.row_stride),
            stride(vc.col_stride),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_views_multiply() {
        // A = [[1, 2, 3], [4, 5, 6]]; Aᵀ·A through a transposed view.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let va = View::row_major(2, 3);
        let mut c = [0.0f32; 9];
        sgemm(1.0, mat(&a, va.t()), mat(&a, va), 0.0, mat_mut(&mut c, View::row_major(3, 3)));
        assert_eq!(c, [17.0, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0]);
    }

    #[test]
    #[should_panic(expected = "past its slice")]
    fn a_view_past_its_slice_is_refused() {
        let a = [1.0f32; 5];
        let mut c = [0.0f32; 4];
        sgemm(
            1.0,
            mat(&a, View::row_major(2, 3)),
            mat(&a, View::row_major(3, 2)),
            0.0,
            mat_mut(&mut c, View::row_major(2, 2)),
        );
    }
}
