//! conv2d forward and backward: im2col / col2im around the GEMMs.
//!
//! Shapes: x [n, c, h, w], w [k, c, r, s], y and dy [n, k, oh, ow]; per image
//! b, with P = oh·ow and CRS = c·r·s:
//! - forward  y_b [k, P] = w [k, CRS] · col_b [CRS, P] + b (bias in the GEMM epilogue)
//! - dw       dw [k, CRS] = Σ_b dy_b [k, P] · col_bᵀ (NT GEMM summing the batch)
//! - dx       col_b = wᵀ · dy_b, then col2im into dx_b
//! - db       db [k] = Σ_b Σ_p dy_b (reduce.cl)
//!
//! Stride-1 convs with a small reduction skip the col matrix for forward
//! and dX: `conv_direct::choose` picks the path (conv_direct.rs).
//! Images go in chunks as large as the scratch limit allows, so each chunk
//! is one im2col launch and one GEMM launch. A 1x1 kernel with stride 1 and
//! no padding skips im2col: x_b already is col_b.
//! Check: `cargo test -p kernels-opencl conv`; time: the `opencl_bench` example.

use kernels_core::{ConvGeometry, Error, GradRequest, Grads, Result};
use ocl::Buffer;

use crate::ClTensor;
use crate::conv_direct::{self, ConvPath, Pass};
use crate::gemm::{self, Bias, Form, Gemm, Operand};
use crate::kernel_names;
use crate::ops::{bias_grad, i32_arg};
use crate::runtime::{Arg, Runtime};

/// Images per chunk so that a chunk's columns fit the scratch limit.
fn chunk_images(rt: &Runtime, op: &'static str, g: &ConvGeometry) -> Result<usize> {
    let per_image = (g.c * g.r * g.s).saturating_mul(g.oh * g.ow).saturating_mul(4);
    let limit = rt.scratch_limit();
    if per_image > limit {
        return Err(Error::Scratch { op, bytes: per_image, limit });
    }
    Ok((limit / per_image).clamp(1, g.n))
}

/// The geometry's scalar arguments shared by im2col and col2im.
fn geometry_args(g: &ConvGeometry) -> Result<Vec<Arg<'static>>> {
    let p = &g.params;
    [
        g.c,
        g.h,
        g.w,
        g.r,
        g.s,
        g.oh,
        g.ow,
        p.stride[0],
        p.stride[1],
        p.padding[0],
        p.padding[1],
        p.dilation[0],
        p.dilation[1],
    ]
    .into_iter()
    .map(|v| i32_arg("conv2d", v))
    .collect()
}

fn im2col(
    rt: &Runtime,
    g: &ConvGeometry,
    x: &Buffer<f32>,
    first: usize,
    images: usize,
    col: &Buffer<f32>,
) -> Result<()> {
    let mut args = vec![Arg::F32Buf(x), i32_arg("conv2d", first * g.c * g.h * g.w)?];
    args.extend(geometry_args(g)?);
    args.push(Arg::F32Buf(col));
    if !rt.tiles.im2col_rows {
        args.push(i32_arg("conv2d", images)?);
        return rt.launch_lines(kernel_names::IM2COL_PLANE, &args, &[g.c * g.r * g.s, images]);
    }
    rt.launch_lines(kernel_names::IM2COL, &args, &[g.oh, g.c * g.r * g.s, images])
}

fn col2im(
    rt: &Runtime,
    g: &ConvGeometry,
    col: &Buffer<f32>,
    dx: &Buffer<f32>,
    first: usize,
    images: usize,
) -> Result<()> {
    let mut args = vec![Arg::F32Buf(col)];
    args.extend(geometry_args(g)?);
    args.extend([Arg::F32Buf(dx), i32_arg("conv2d", first * g.c * g.h * g.w)?]);
    rt.launch_lines(kernel_names::COL2IM, &args, &[g.h, g.c, images])
}

pub(crate) fn forward(
    rt: &Runtime,
    g: &ConvGeometry,
    x: &ClTensor,
    w: &ClTensor,
    b: Option<&ClTensor>,
) -> Result<ClTensor> {
    let (crs, p) = (g.c * g.r * g.s, g.oh * g.ow);
    let y = ClTensor::new(rt.alloc(g.n * g.k * p)?, &g.y_shape());
    let bias = b.map_or(Bias::None, |b| Bias::PerRow(b.buf()));
    let gemm_for = |bsrc: &Buffer<f32>, first: usize, images: usize, b_offset: usize| {
        gemm::run(
            rt,
            &Gemm {
                form: Form::Nn,
                m: g.k,
                n: p,
                k: crs,
                a: Operand::rows(w.buf(), crs, 0),
                b: Operand::rows(bsrc, p, crs * p).at(b_offset),
                c: Operand::rows(y.buf(), p, g.k * p).at(first * g.k * p),
                bias,
                batches: images,
                reduce: false,
                accumulate: false,
            },
        )
    };
    match conv_direct::choose(rt, g, Pass::Forward) {
        ConvPath::Pointwise => {
            gemm_for(x.buf(), 0, g.n, 0)?;
            return Ok(y);
        }
        ConvPath::Direct => {
            conv_direct::forward(rt, g, x.buf(), w.buf(), b.map(ClTensor::buf), y.buf())?;
            return Ok(y);
        }
        ConvPath::Im2col => {}
    }
    let chunk = chunk_images(rt, "conv2d", g)?;
    let col = rt.scratch("conv2d", chunk * crs * p)?;
    for first in (0..g.n).step_by(chunk) {
        let images = chunk.min(g.n - first);
        im2col(rt, g, x.buf(), first, images, &col)?;
        gemm_for(&col, first, images, 0)?;
    }
    Ok(y)
}

pub(crate) fn backward(
    rt: &Runtime,
    g: &ConvGeometry,
    x: &ClTensor,
    w: &ClTensor,
    dy: &ClTensor,
    need: GradRequest,
) -> Result<Grads<ClTensor>> {
    let (crs, p) = (g.c * g.r * g.s, g.oh * g.ow);
    let db = if need.db { Some(bias_grad(rt, dy.buf(), g.n, g.k, p)?) } else { None };
    let dw = if need.dw { Some(ClTensor::new(rt.alloc(g.k * crs)?, &g.w_shape())) } else { None };
    let dx = if need.dx { Some(ClTensor::new(rt.alloc(g.n * g.c * g.h * g.w)?, &g.x_shape())) } else { None };
    if dw.is_none() && dx.is_none() {
        return Ok(Grads { dx, dw, db });
    }
    // dw_chunk += Σ_b dy_b · col_bᵀ (first chunk overwrites).
    let dw_gemm = |dwt: &ClTensor, cols: &Buffer<f32>, b_offset: usize, first: usize, images: usize| {
        gemm::run(
            rt,
            &Gemm {
                form: Form::Nt,
                m: g.k,
                n: crs,
                k: p,
                a: Operand::rows(dy.buf(), p, g.k * p).at(first * g.k * p),
                b: Operand::rows(cols, p, crs * p).at(b_offset),
                c: Operand::rows(dwt.buf(), crs, 0),
                bias: Bias::None,
                batches: images,
                reduce: true,
                accumulate: first > 0,
            },
        )
    };
    // col_b = wᵀ · dy_b.
    let dx_gemm = |cols: &Buffer<f32>, c_offset: usize, first: usize, images: usize| {
        gemm::run(
            rt,
            &Gemm {
                form: Form::Nn,
                m: crs,
                n: p,
                k: g.k,
                a: Operand::transposed(w.buf(), crs, 0),
                b: Operand::rows(dy.buf(), p, g.k * p).at(first * g.k * p),
                c: Operand::rows(cols, p, crs * p).at(c_offset),
                bias: Bias::None,
                batches: images,
                reduce: false,
                accumulate: false,
            },
        )
    };
    let dx_path = conv_direct::choose(rt, g, Pass::InputGrad);
    if dx_path == ConvPath::Pointwise {
        // x_b [c, h·w] already is col_b.
        if let Some(dwt) = &dw {
            dw_gemm(dwt, x.buf(), 0, 0, g.n)?;
        }
        if let Some(dxt) = &dx {
            dx_gemm(dxt.buf(), 0, 0, g.n)?;
        }
        return Ok(Grads { dx, dw, db });
    }
    let dx_direct = dx_path == ConvPath::Direct;
    let dw_direct = dw.is_some() && conv_direct::weight_grad_direct(rt, g);
    if let (Some(dwt), true) = (&dw, dw_direct) {
        conv_direct::weight_grad(rt, g, x.buf(), dy.buf(), dwt.buf())?;
    }
    if (dw.is_some() && !dw_direct) || (dx.is_some() && !dx_direct) {
        let chunk = chunk_images(rt, "conv2d_backward", g)?;
        let col = rt.scratch("conv2d_backward", chunk * crs * p)?;
        for first in (0..g.n).step_by(chunk) {
            let images = chunk.min(g.n - first);
            if let (Some(dwt), false) = (&dw, dw_direct) {
                im2col(rt, g, x.buf(), first, images, &col)?;
                dw_gemm(dwt, &col, 0, first, images)?;
            }
            if let (Some(dxt), false) = (&dx, dx_direct) {
                dx_gemm(&col, 0, first, images)?;
                col2im(rt, g, &col, dxt.buf(), first, images)?;
            }
        }
    }
    // After the dW loop: the direct dX reuses the scratch buffer (the queue
    // is in order).
    if let (Some(dxt), true) = (&dx, dx_direct) {
        conv_direct::input_grad(rt, g, w.buf(), dy.buf(), dxt.buf())?;
    }
    Ok(Grads { dx, dw, db })
}
