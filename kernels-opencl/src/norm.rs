//! Launchers for batch normalization and dropout (kernels in cl/norm.cl).
//!
//! Training forward: `bn_stats` (per-channel work-groups: μ, 1/√(σ² + ε),
//! running statistics updated in place on the device) then `bn_apply`.
//! Backward: `bn_backward_sums` (dγ, dβ) then `bn_backward_dx`. Dropout:
//! `dropout_apply` for both directions, the mask re-derived from the key.
//! Check: `cargo test -p harness --test opencl batch_norm dropout`.

use kernels_core::{BatchNormGeometry, BatchStats, DropoutMask, Error, GradRequest, Grads, Result, Shaped};

use crate::ClTensor;
use crate::kernel_names;
use crate::ops::{i32_arg, tree_group};
use crate::runtime::{Arg, Runtime};

const OP: &str = "batch_norm";

/// The `exec_*` methods are public: tensors that do not match the geometry
/// are an error before any launch (the kernels index by the geometry).
fn check(g: &BatchNormGeometry, x: &ClTensor, per_channel: &[&ClTensor]) -> Result<()> {
    if x.shape() != g.x_shape().as_slice() {
        return Err(Error::shape(OP, format!("input x must have shape {:?}, got {:?}", g.x_shape(), x.shape())));
    }
    per_channel.iter().try_for_each(|t| g.check_channel("per-channel tensor", t.shape()))?;
    i32_arg(OP, g.len())?;
    Ok(())
}

fn dims(g: &BatchNormGeometry) -> Result<[Arg<'static>; 3]> {
    Ok([i32_arg(OP, g.n)?, i32_arg(OP, g.c)?, i32_arg(OP, g.spatial)?])
}

pub(crate) fn train(
    rt: &Runtime,
    g: &BatchNormGeometry,
    x: &ClTensor,
    gamma: &ClTensor,
    beta: &ClTensor,
    running_mean: &mut ClTensor,
    running_var: &mut ClTensor,
) -> Result<(ClTensor, BatchStats<ClTensor>)> {
    check(g, x, &[gamma, beta, running_mean, running_var])?;
    let s = g.params.scalars();
    let mean = ClTensor::new(rt.alloc(g.c)?, &[g.c]);
    let inv_std = ClTensor::new(rt.alloc(g.c)?, &[g.c]);
    let [n, c, sp] = dims(g)?;
    let args = [
        Arg::F32Buf(x.buf()),
        n,
        c,
        sp,
        Arg::F32(s.eps),
        Arg::F32(s.momentum),
        Arg::F32(s.one_minus_momentum),
        Arg::F32(g.unbiased_factor() as f32),
        Arg::F32Buf(mean.buf()),
        Arg::F32Buf(inv_std.buf()),
        Arg::F32Buf(running_mean.buf()),
        Arg::F32Buf(running_var.buf()),
    ];
    let wg = tree_group(rt, kernel_names::BN_STATS);
    rt.launch(kernel_names::BN_STATS, &args, &[g.c * wg], Some(&[wg]))?;
    let y = ClTensor::new(rt.alloc(g.len())?, x.shape());
    let [_, c, sp] = dims(g)?;
    let args = [
        Arg::F32Buf(x.buf()),
        c,
        sp,
        i32_arg(OP, g.len())?,
        Arg::F32Buf(mean.buf()),
        Arg::F32Buf(inv_std.buf()),
        Arg::F32Buf(gamma.buf()),
        Arg::F32Buf(beta.buf()),
        Arg::F32Buf(y.buf()),
    ];
    rt.launch_lines(kernel_names::BN_APPLY, &args, &[g.len()])?;
    Ok((y, BatchStats { mean, inv_std }))
}

pub(crate) fn eval(
    rt: &Runtime,
    g: &BatchNormGeometry,
    x: &ClTensor,
    gamma: &ClTensor,
    beta: &ClTensor,
    running_mean: &ClTensor,
    running_var: &ClTensor,
) -> Result<ClTensor> {
    check(g, x, &[gamma, beta, running_mean, running_var])?;
    let y = ClTensor::new(rt.alloc(g.len())?, x.shape());
    let [_, c, sp] = dims(g)?;
    let args = [
        Arg::F32Buf(x.buf()),
        c,
        sp,
        i32_arg(OP, g.len())?,
        Arg::F32Buf(running_mean.buf()),
        Arg::F32Buf(running_var.buf()),
        Arg::F32(g.params.scalars().eps),
        Arg::F32Buf(gamma.buf()),
        Arg::F32Buf(beta.buf()),
        Arg::F32Buf(y.buf()),
    ];
    rt.launch_lines(kernel_names::BN_APPLY_EVAL, &args, &[g.len()])?;
    Ok(y)
}

pub(crate) fn backward(
    rt: &Runtime,
    g: &BatchNormGeometry,
    x: &ClTensor,
    gamma: &ClTensor,
    stats: &BatchStats<ClTensor>,
    dy: &ClTensor,
    need: GradRequest,
) -> Result<Grads<ClTensor>> {
    check(g, x, &[gamma, &stats.mean, &stats.inv_std])?;
    g.check_dy(dy.shape())?;
    let dgamma = ClTensor::new(rt.alloc(g.c)?, &[g.c]);
    let dbeta = ClTensor::new(rt.alloc(g.c)?, &[g.c]);
    let [n, c, sp] = dims(g)?;
    let args = [
        Arg::F32Buf(x.buf()),
        Arg::F32Buf(dy.buf()),
        n,
        c,
        sp,
        Arg::F32Buf(stats.mean.buf()),
        Arg::F32Buf(stats.inv_std.buf()),
        Arg::F32Buf(dgamma.buf()),
        Arg::F32Buf(dbeta.buf()),
    ];
    let wg = tree_group(rt, kernel_names::BN_BACKWARD_SUMS);
    rt.launch(kernel_names::BN_BACKWARD_SUMS, &args, &[g.c * wg], Some(&[wg]))?;
    let dx = if need.dx {
        let dx = ClTensor::new(rt.alloc(g.len())?, x.shape());
        let [_, c, sp] = dims(g)?;
        let args = [
            Arg::F32Buf(x.buf()),
            Arg::F32Buf(dy.buf()),
            c,
            sp,
            i32_arg(OP, g.len())?,
            Arg::F32((1.0 / g.per_channel() as f64) as f32),
            Arg::F32Buf(stats.mean.buf()),
            Arg::F32Buf(stats.inv_std.buf()),
            Arg::F32Buf(gamma.buf()),
            Arg::F32Buf(dgamma.buf()),
            Arg::F32Buf(dbeta.buf()),
            Arg::F32Buf(dx.buf()),
        ];
        rt.launch_lines(kernel_names::BN_BACKWARD_DX, &args, &[g.len()])?;
        Some(dx)
    } else {
        None
    };
    Ok(Grads { dx, dw: need.dw.then_some(dgamma), db: need.db.then_some(dbeta) })
}

/// out = kept ? v·scale : 0, for the forward (v = x) and backward (v = dy).
pub(crate) fn dropout(rt: &Runtime, mask: &DropoutMask, v: &ClTensor) -> Result<ClTensor> {
    if v.len() != mask.len {
        return Err(Error::shape("dropout", format!("expected {} elements, got shape {:?}", mask.len, v.shape())));
    }
    let out = ClTensor::new(rt.alloc(mask.len)?, v.shape());
    // Bit patterns: the kernel reassembles the u64 key and reads the
    // threshold as unsigned.
    let bits = |u: u32| Arg::I32(i32::from_ne_bytes(u.to_ne_bytes()));
    let args = [
        Arg::F32Buf(v.buf()),
        i32_arg("dropout", mask.len)?,
        bits(mask.key as u32),
        bits((mask.key >> 32) as u32),
        bits(mask.threshold),
        Arg::F32(mask.scale as f32),
        Arg::F32Buf(out.buf()),
    ];
    rt.launch_lines(kernel_names::DROPOUT_APPLY, &args, &[mask.len])?;
    Ok(out)
}
