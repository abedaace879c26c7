//! Launchers for everything but conv: pooling, linear, activations, softmax
//! cross-entropy, the bias-gradient reduction and the optimiser updates.
//!
//! Shapes follow kernels-core: pool x [n, c, h, w] -> y [n, c, oh, ow];
//! linear x [n, i], w [o, i], y [n, o]; logits [n, classes].
//! Check: `cargo test -p kernels-opencl`; time: the `opencl_bench` example.

use kernels_core::{Error, GradRequest, Grads, LinearGeometry, Optimizer, PoolGeometry, PoolKind, Result, Shaped};
use ocl::Buffer;

use crate::ClTensor;
use crate::gemm::{self, Bias, Form, Gemm, Operand};
use crate::kernel_names::{self, Kernel};
use crate::runtime::{Arg, Runtime};

pub(crate) fn i32_arg(op: &'static str, v: usize) -> Result<Arg<'static>> {
    i32::try_from(v)
        .map(Arg::I32)
        .map_err(|_| Error::Device(format!("{op}: size {v} exceeds the kernels' 32-bit index range")))
}

/// The work-group of a tree reduction (`bias_grad`, `softmax_xent`): the
/// compiled REDUCE_WG (the size of their `__local` array), lowered to a
/// power of two the kernel may launch with on this device.
pub(crate) fn tree_group(rt: &Runtime, kernel: Kernel) -> usize {
    let (max_wg, items) = rt.max_group(kernel);
    let cap = rt.tiles.reduce_wg.min(max_wg).min(items[0]).max(1);
    1 << (usize::BITS - 1 - cap.leading_zeros())
}

/// db [k] = Σ_n Σ_p dy[n, k, p].
pub(crate) fn bias_grad(rt: &Runtime, dy: &Buffer<f32>, n: usize, k: usize, p: usize) -> Result<ClTensor> {
    let db = ClTensor::new(rt.alloc(k)?, &[k]);
    let wg = tree_group(rt, kernel_names::BIAS_GRAD);
    let args = [
        Arg::F32Buf(dy),
        i32_arg("bias_grad", n)?,
        i32_arg("bias_grad", k)?,
        i32_arg("bias_grad", p)?,
        Arg::F32Buf(db.buf()),
    ];
    i32_arg("bias_grad", n * k * p)?;
    // The tree needs a group of at least a few work-items to pay; where
    // the device allows fewer for it, the streaming kernel needs none.
    if rt.tiles.reduce_rows || wg < 16 {
        rt.launch(kernel_names::BIAS_GRAD_ROWS, &args, &[k], Some(&[1]))?;
    } else {
        rt.launch(kernel_names::BIAS_GRAD, &args, &[k * wg], Some(&[wg]))?;
    }
    Ok(db)
}

fn pool_args<'a>(g: &PoolGeometry) -> Result<Vec<Arg<'a>>> {
    let p = &g.params;
    i32_arg("pool2d", g.n * g.c * g.h * g.w)?;
    [g.n * g.c, g.h, g.w, g.oh, g.ow, p.window[0], p.window[1], p.stride[0], p.stride[1], p.padding[0], p.padding[1]]
        .into_iter()
        .map(|v| i32_arg("pool2d", v))
        .chain(std::iter::once(Ok(Arg::I32(i32::from(p.kind == PoolKind::Max)))))
        .collect()
}

pub(crate) fn pool_forward(rt: &Runtime, g: &PoolGeometry, x: &ClTensor) -> Result<ClTensor> {
    let len = g.n * g.c * g.oh * g.ow;
    let y = ClTensor::new(rt.alloc(len)?, &g.y_shape());
    let mut args = vec![Arg::F32Buf(x.buf())];
    args.extend(pool_args(g)?);
    args.push(Arg::F32Buf(y.buf()));
    rt.launch_lines(kernel_names::POOL_FORWARD, &args, &[g.oh, g.n * g.c])?;
    Ok(y)
}

pub(crate) fn pool_backward(rt: &Runtime, g: &PoolGeometry, x: &ClTensor, dy: &ClTensor) -> Result<ClTensor> {
    let len = g.n * g.c * g.h * g.w;
    let dx = ClTensor::new(rt.alloc(len)?, &g.x_shape());
    let p = &g.params;
    let tiled = p.stride == p.window && p.padding == [0, 0];
    let mut args = vec![Arg::F32Buf(x.buf()), Arg::F32Buf(dy.buf())];
    if tiled {
        // Windows tile the input: each dx element has at most one window.
        for v in [g.n * g.c, g.h, g.w, g.oh, g.ow, p.window[0], p.window[1]] {
            args.push(i32_arg("pool2d", v)?);
        }
        args.extend([Arg::I32(i32::from(p.kind == PoolKind::Max)), Arg::F32Buf(dx.buf())]);
        if rt.tiles.pool_bands {
            rt.launch_lines(kernel_names::POOL_BACKWARD_BAND, &args, &[g.oh, g.n * g.c])?;
        } else {
            rt.launch_lines(kernel_names::POOL_BACKWARD_TILED, &args, &[g.h, g.n * g.c])?;
        }
    } else {
        args.extend(pool_args(g)?);
        args.push(Arg::F32Buf(dx.buf()));
        rt.launch_lines(kernel_names::POOL_BACKWARD, &args, &[g.h, g.n * g.c])?;
    }
    Ok(dx)
}

/// y [n, o] = x [n, i] · wᵀ + b: the NT GEMM with the bias per column.
pub(crate) fn linear_forward(
    rt: &Runtime,
    g: &LinearGeometry,
    x: &ClTensor,
    w: &ClTensor,
    b: Option<&ClTensor>,
) -> Result<ClTensor> {
    let y = ClTensor::new(rt.alloc(g.n * g.o)?, &g.y_shape());
    gemm::run(
        rt,
        &Gemm {
            form: Form::Nt,
            m: g.n,
            n: g.o,
            k: g.i,
            a: Operand::rows(x.buf(), g.i, 0),
            b: Operand::rows(w.buf(), g.i, 0),
            c: Operand::rows(y.buf(), g.o, 0),
            bias: b.map_or(Bias::None, |b| Bias::PerCol(b.buf())),
            batches: 1,
            reduce: false,
            accumulate: false,
        },
    )?;
    Ok(y)
}

/// dx = dy · w, dw = dyᵀ · x, db = Σₙ dy.
pub(crate) fn linear_backward(
    rt: &Runtime,
    g: &LinearGeometry,
    x: &ClTensor,
    w: &ClTensor,
    dy: &ClTensor,
    need: GradRequest,
) -> Result<Grads<ClTensor>> {
    let nn = |m, n, k, a, b: &ClTensor, c: &ClTensor| {
        gemm::run(
            rt,
            &Gemm {
                form: Form::Nn,
                m,
                n,
                k,
                a,
                b: Operand::rows(b.buf(), n, 0),
                c: Operand::rows(c.buf(), n, 0),
                bias: Bias::None,
                batches: 1,
                reduce: false,
                accumulate: false,
            },
        )
    };
    let dx = if need.dx {
        let dx = ClTensor::new(rt.alloc(g.n * g.i)?, &g.x_shape());
        nn(g.n, g.i, g.o, Operand::rows(dy.buf(), g.o, 0), w, &dx)?;
        Some(dx)
    } else {
        None
    };
    let dw = if need.dw {
        let dw = ClTensor::new(rt.alloc(g.o * g.i)?, &g.w_shape());
        nn(g.o, g.i, g.n, Operand::transposed(dy.buf(), g.o, 0), x, &dw)?;
        Some(dw)
    } else {
        None
    };
    let db = if need.db { Some(bias_grad(rt, dy.buf(), g.n, g.o, 1)?) } else { None };
    Ok(Grads { dx, dw, db })
}

/// y = f(x) for relu_forward / sigmoid_forward.
pub(crate) fn unary(rt: &Runtime, kernel: Kernel, x: &ClTensor) -> Result<ClTensor> {
    let n = x.len();
    let y = ClTensor::new(rt.alloc(n)?, x.shape());
    let args = [Arg::F32Buf(x.buf()), i32_arg(kernel.name(), n)?, Arg::F32Buf(y.buf())];
    rt.launch_lines(kernel, &args, &[n])?;
    Ok(y)
}

/// dx = f'(a, dy) for relu_backward (a = x) / sigmoid_backward (a = y).
pub(crate) fn binary(rt: &Runtime, kernel: Kernel, a: &ClTensor, dy: &ClTensor) -> Result<ClTensor> {
    let n = a.len();
    let dx = ClTensor::new(rt.alloc(n)?, a.shape());
    let args = [Arg::F32Buf(a.buf()), Arg::F32Buf(dy.buf()), i32_arg(kernel.name(), n)?, Arg::F32Buf(dx.buf())];
    rt.launch_lines(kernel, &args, &[n])?;
    Ok(dx)
}

/// (mean loss, dlogits); the loss is the one scalar read back.
pub(crate) fn softmax_cross_entropy(rt: &Runtime, logits: &ClTensor, labels: &[usize]) -> Result<(f64, ClTensor)> {
    let (n, classes) = (logits.shape()[0], logits.shape()[1]);
    let labels: Vec<i32> = labels.iter().map(|&l| i32::try_from(l).unwrap_or(i32::MAX)).collect();
    let labels = rt.upload(&labels)?;
    let dlogits = ClTensor::new(rt.alloc(n * classes)?, logits.shape());
    let loss = rt.alloc::<f32>(1)?;
    let wg = tree_group(rt, kernel_names::SOFTMAX_XENT);
    let args = [
        Arg::F32Buf(logits.buf()),
        Arg::I32Buf(&labels.buffer),
        i32_arg("softmax_cross_entropy", n)?,
        i32_arg("softmax_cross_entropy", classes)?,
        Arg::F32Buf(dlogits.buf()),
        Arg::F32Buf(&loss.buffer),
    ];
    i32_arg("softmax_cross_entropy", n * classes)?;
    rt.launch(kernel_names::SOFTMAX_XENT, &args, &[wg], Some(&[wg]))?;
    let value = rt.download(&loss.buffer, 1)?;
    Ok((f64::from(value[0]), dlogits))
}

/// One optimiser update of `param` in place.
pub(crate) fn optimizer_step(
    rt: &Runtime,
    optimizer: &Optimizer,
    param: &mut ClTensor,
    grad: &ClTensor,
    slots: &mut [ClTensor],
    t: u64,
) -> Result<()> {
    let n = param.len();
    let s = optimizer.step_scalars(t);
    let count = i32_arg("optimizer_step", n)?;
    let (p, g) = (Arg::F32Buf(param.buf()), Arg::F32Buf(grad.buf()));
    let missing = || Error::param("optimizer_step", format!("{} state buffers missing", optimizer.name()));
    match optimizer {
        Optimizer::Sgd { .. } => {
            rt.launch_lines(kernel_names::SGD_STEP, &[p, g, count, Arg::F32(s.lr), Arg::F32(s.weight_decay)], &[n])
        }
        Optimizer::Momentum { .. } | Optimizer::Nesterov { .. } => {
            let v = slots.first().ok_or_else(missing)?;
            let nesterov = i32::from(matches!(optimizer, Optimizer::Nesterov { .. }));
            let args = [
                p,
                g,
                Arg::F32Buf(v.buf()),
                count,
                Arg::F32(s.lr),
                Arg::F32(s.a),
                Arg::F32(s.weight_decay),
                Arg::I32(nesterov),
            ];
            rt.launch_lines(kernel_names::MOMENTUM_STEP, &args, &[n])
        }
        Optimizer::AdaGrad { .. } => {
            let acc = slots.first().ok_or_else(missing)?;
            let args = [p, g, Arg::F32Buf(acc.buf()), count, Arg::F32(s.lr), Arg::F32(s.eps), Arg::F32(s.weight_decay)];
            rt.launch_lines(kernel_names::ADAGRAD_STEP, &args, &[n])
        }
        Optimizer::RmsProp { .. } => {
            let acc = slots.first().ok_or_else(missing)?;
            let args = [
                p,
                g,
                Arg::F32Buf(acc.buf()),
                count,
                Arg::F32(s.lr),
                Arg::F32(s.a),
                Arg::F32(s.one_minus_a),
                Arg::F32(s.eps),
                Arg::F32(s.weight_decay),
            ];
            rt.launch_lines(kernel_names::RMSPROP_STEP, &args, &[n])
        }
        Optimizer::Adam { .. } => {
            let [m, v] = slots else { return Err(missing()) };
            let args = [
                p,
                g,
                Arg::F32Buf(m.buf()),
                Arg::F32Buf(v.buf()),
                count,
                Arg::F32(s.lr),
                Arg::F32(s.a),
                Arg::F32(s.b),
                Arg::F32(s.one_minus_a),
                Arg::F32(s.one_minus_b),
                Arg::F32(s.eps),
                Arg::F32(s.weight_decay),
                Arg::F32(s.correction1),
                Arg::F32(s.correction2),
            ];
            rt.launch_lines(kernel_names::ADAM_STEP, &args, &[n])
        }
    }
}
