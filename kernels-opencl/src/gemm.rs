//! GEMM launchers over `cl/gemm.cl`: the one matrix engine behind conv
//! forward, dW and dX and linear.
//!
//! `Gemm` describes C = A·B (NN, with A's strides free so Aᵀ costs nothing)
//! or C = A·Bᵀ (NT, both operands contiguous along k), batched with strides,
//! optionally summing the batch into one C, with a bias epilogue.
//! Check: `cargo test -p kernels-opencl gemm`; time: the `opencl_bench` example.

use kernels_core::{Error, Result};
use ocl::Buffer;

use crate::kernel_names;
use crate::runtime::{Arg, Runtime};
use crate::tiles::round_up;

/// Where the bias goes: none, one per row of C, one per column of C.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bias<'a> {
    None,
    PerRow(&'a Buffer<f32>),
    PerCol(&'a Buffer<f32>),
}

/// A matrix operand: buffer, element offset, strides, batch stride.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub buf: &'a Buffer<f32>,
    pub offset: usize,
    /// NN A: stride between rows (i); NT A and B: leading dimension.
    pub stride_major: usize,
    /// NN A: stride along k. Unused by NN B (1) and NT operands (1).
    pub stride_minor: usize,
    pub batch_stride: usize,
}

impl<'a> Operand<'a> {
    /// A row-major matrix with leading dimension `ld`.
    pub fn rows(buf: &'a Buffer<f32>, ld: usize, batch_stride: usize) -> Self {
        Self { buf, offset: 0, stride_major: ld, stride_minor: 1, batch_stride }
    }
    /// The transpose of a row-major matrix with leading dimension `ld`
    /// (only for NN's A operand).
    pub fn transposed(buf: &'a Buffer<f32>, ld: usize, batch_stride: usize) -> Self {
        Self { buf, offset: 0, stride_major: 1, stride_minor: ld, batch_stride }
    }
    pub fn at(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// C = A·B, B row-major K x N.
    Nn,
    /// C = A·Bᵀ, A M x K and B N x K row-major.
    Nt,
}

/// One (batched) GEMM call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gemm<'a> {
    pub form: Form,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Operand<'a>,
    pub b: Operand<'a>,
    pub c: Operand<'a>,
    pub bias: Bias<'a>,
    pub batches: usize,
    /// Sum the batch into one C instead of writing one C per batch entry.
    pub reduce: bool,
    /// Add into C instead of overwriting it.
    pub accumulate: bool,
}

fn int(what: &str, v: usize) -> Result<Arg<'static>> {
    i32::try_from(v)
        .map(Arg::I32)
        .map_err(|_| Error::Device(format!("gemm: {what} = {v} exceeds the kernels' 32-bit index range")))
}

pub(crate) fn run(rt: &Runtime, g: &Gemm) -> Result<()> {
    if g.m == 0 || g.n == 0 || g.batches == 0 {
        return Ok(());
    }
    let tiles = &rt.tiles;
    let (bias_mode, bias_buf) = match g.bias {
        Bias::None => (0, g.c.buf),
        Bias::PerRow(b) => (1, b),
        Bias::PerCol(b) => (2, b),
    };
    let mut args =
        vec![int("m", g.m)?, int("n", g.n)?, int("k", g.k)?, Arg::F32Buf(g.a.buf), int("a offset", g.a.offset)?];
    match g.form {
        Form::Nn => {
            args.extend([int("a stride", g.a.stride_major)?, int("a stride", g.a.stride_minor)?]);
        }
        Form::Nt => args.push(int("lda", g.a.stride_major)?),
    }
    args.extend([
        int("a batch stride", g.a.batch_stride)?,
        Arg::F32Buf(g.b.buf),
        int("b offset", g.b.offset)?,
        int("ldb", g.b.stride_major)?,
        int("b batch stride", g.b.batch_stride)?,
        Arg::F32Buf(g.c.buf),
        int("c offset", g.c.offset)?,
        int("ldc", g.c.stride_major)?,
        int("c batch stride", g.c.batch_stride)?,
        Arg::F32Buf(bias_buf),
        Arg::I32(bias_mode),
        int("batches", g.batches)?,
        Arg::I32(i32::from(g.reduce)),
        Arg::I32(i32::from(g.accumulate)),
    ]);
    let depth = if g.reduce { 1 } else { g.batches };
    match g.form {
        Form::Nn => {
            let (gx, gy) = (g.n.div_ceil(tiles.nn_nr), g.m.div_ceil(tiles.nn_mr));
            if tiles.use_local {
                let (max_wg, items) = rt.max_group(kernel_names::GEMM_NN_LOCAL);
                let [lx, ly] = tiles.group_2d(gx, gy, true, max_wg, [items[0], items[1]]);
                let (a_tile, b_tile) = (tiles.tile_k * ly * tiles.nn_mr, tiles.tile_k * lx * tiles.nn_nr);
                // The staged tiles must fit the device's local memory with
                // the group the kernel allows; otherwise the plain kernel
                // computes the same product from global memory.
                if rt.fits(kernel_names::GEMM_NN_LOCAL, &[lx, ly, 1], 4 * (a_tile + b_tile) as u64) {
                    let global = [round_up(gx, lx), round_up(gy, ly), depth];
                    args.push(Arg::LocalF32(a_tile));
                    args.push(Arg::LocalF32(b_tile));
                    return rt.launch(kernel_names::GEMM_NN_LOCAL, &args, &global, Some(&[lx, ly, 1]));
                }
            }
            let (max_wg, items) = rt.max_group(kernel_names::GEMM_NN);
            let [lx, ly] = tiles.group_2d(gx, gy, false, max_wg, [items[0], items[1]]);
            let global = [round_up(gx, lx), round_up(gy, ly), depth];
            rt.launch(kernel_names::GEMM_NN, &args, &global, Some(&[lx, ly, 1]))
        }
        Form::Nt => {
            let (gx, gy) = (g.n.div_ceil(tiles.nt_nr), g.m.div_ceil(tiles.nt_mr));
            let (max_wg, items) = rt.max_group(kernel_names::GEMM_NT);
            let [lx, ly] = tiles.group_2d(gx, gy, tiles.use_local, max_wg, [items[0], items[1]]);
            let global = [round_up(gx, lx), round_up(gy, ly), depth];
            rt.launch(kernel_names::GEMM_NT, &args, &global, Some(&[lx, ly, 1]))
        }
    }
}
