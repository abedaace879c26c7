//! Linear (fully connected) forward and backward through sgemm.
//!
//! - Forward: y [n, o] = x [n, i] · wᵀ [i, o] + b [o] (wᵀ is a transposed
//!   view of w [o, i], never a copy).
//! - Backward: dx [n, i] = dy [n, o] · w [o, i]; dw [o, i] = dyᵀ [o, n] ·
//!   x [n, i]; db [o] = Σₙ dy.
//! - Parallelism: rayon over row blocks of the output (batch rows for y and
//!   dx, weight rows for dw), one single-threaded sgemm per block.
//! - Checked against the reference in harness/tests/im2col.rs; LeNet's
//!   layers (LINEAR_SUITE) are timed by the harness.

use kernels_core::{GradRequest, LinearGeometry};
use rayon::prelude::*;

use crate::conv::workers::HostGrads;
use crate::gemm::{View, mat, mat_mut, sgemm};

/// Rows per parallel block: one block per thread, at least one row.
fn rows_per_block(rows: usize) -> usize {
    rows.div_ceil(rayon::current_num_threads()).max(1)
}

/// y [n, o].
pub(crate) fn forward(g: &LinearGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let mut y = vec![0.0f32; g.n * g.o];
    let block = rows_per_block(g.n);
    y.par_chunks_mut(block * g.o).zip(x.par_chunks(block * g.i)).for_each(|(y_rows, x_rows)| {
        let rows = y_rows.len() / g.o;
        if let Some(b) = bias {
            for row in y_rows.chunks_exact_mut(g.o) {
                row.copy_from_slice(b);
            }
        }
        let vw = View::row_major(g.o, g.i).t();
        sgemm(
            1.0,
            mat(x_rows, View::row_major(rows, g.i)),
            mat(w, vw),
            1.0,
            mat_mut(y_rows, View::row_major(rows, g.o)),
        );
    });
    y
}

/// (dx, dw, db), each when requested.
pub(crate) fn backward(g: &LinearGeometry, x: &[f32], w: &[f32], dy: &[f32], need: GradRequest) -> HostGrads {
    let dx = need.dx.then(|| {
        let mut dx = vec![0.0f32; g.n * g.i];
        let block = rows_per_block(g.n);
        dx.par_chunks_mut(block * g.i).zip(dy.par_chunks(block * g.o)).for_each(|(dx_rows, dy_rows)| {
            let rows = dx_rows.len() / g.i;
            let vw = View::row_major(g.o, g.i);
            let vdy = View::row_major(rows, g.o);
            sgemm(1.0, mat(dy_rows, vdy), mat(w, vw), 0.0, mat_mut(dx_rows, View::row_major(rows, g.i)));
        });
        dx
    });
    let dw = need.dw.then(|| {
        let mut dw = vec![0.0f32; g.o * g.i];
        let block = rows_per_block(g.o);
        dw.par_chunks_mut(block * g.i).enumerate().for_each(|(b, dw_rows)| {
            let rows = dw_rows.len() / g.i;
            // dyᵀ rows o0.. : column block of dy [n, o], transposed.
            let vdy_t = View { rows, cols: g.n, row_stride: 1, col_stride: g.o };
            let vx = View::row_major(g.n, g.i);
            sgemm(1.0, mat(&dy[b * block..], vdy_t), mat(x, vx), 0.0, mat_mut(dw_rows, View::row_major(rows, g.i)));
        });
        dw
    });
    let db = need.db.then(|| {
        let mut db = vec![0.0f32; g.o];
        for row in dy.chunks_exact(g.o) {
            for (total, v) in db.iter_mut().zip(row) {
                *total += v;
            }
        }
        db
    });
    HostGrads { dx, dw, db }
}
