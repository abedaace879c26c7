//! Direct stride-1 convolution (`cl/direct.cl`): no col matrix, for convs
//! whose reduction C·R·S and filter count are too small for the GEMM tile
//! (LeNet's: 25 or 150 taps, 6 or 16 filters), where im2col / col2im cost
//! more than the product.
//!
//! - forward: pad x into scratch, then `conv_direct` with the filters as given.
//! - dX: pad dy by (R−1)·d − p into scratch, then `conv_direct` with the
//!   filters transposed (k ↔ c) and flipped (negative tap strides).
//!
//! Which convs take this path is [`choose`]'s documented predicate; the rest
//! go through im2col + GEMM (conv.rs). Check: `cargo test -p kernels-opencl
//! conv` (the tests force each path); time: `opencl_bench conv --only lenet`.

use kernels_core::{ConvGeometry, Result};
use ocl::Buffer;

use crate::kernel_names;
use crate::ops::i32_arg;
use crate::runtime::{Arg, Runtime, ScratchGuard};

/// Largest reduction (taps summed per output: C·R·S forward, K·R·S for dX)
/// the automatic choice sends to the direct kernel. Past it the GEMM's
/// register tile is full enough to win (resnet-3x3: 576 taps, 64 filters).
pub(crate) const DIRECT_MAX_REDUCTION: usize = 512;
/// Largest output-channel count (K forward, C for dX) sent there
/// automatically: each work-item re-reads its input vector per filter block.
pub(crate) const DIRECT_MAX_FILTERS: usize = 32;
/// Smallest reduction the automatic choice sends to `conv_direct` when the
/// padded width is not a multiple of the pixel vector: such vectors cross
/// rows and store lane by lane, which costs about as much as tens of taps
/// (simplecnn-c1, 25 taps, Wp = 28: 2-7x slower than im2col + GEMM).
pub(crate) const DIRECT_MIN_REDUCTION_ROW_CROSSING: usize = 64;

/// How a conv pass is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConvPath {
    /// 1x1, stride 1, unpadded: x already is the col matrix; one GEMM.
    Pointwise,
    /// `conv_direct`: stride 1, no col matrix.
    Direct,
    /// im2col (or col2im) around a GEMM: any geometry.
    Im2col,
}

/// The pass being chosen for: forward (y from x) or dX (dx from dy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    Forward,
    InputGrad,
}

/// The path for one pass of `g`:
/// - Pointwise for 1x1 stride-1 unpadded convs (both passes are one GEMM);
/// - Direct when [`direct_allowed`], unless (automatic choice only) the
///   padded width is not a multiple of the pixel vector and the reduction
///   is < [`DIRECT_MIN_REDUCTION_ROW_CROSSING`];
/// - Im2col otherwise, or always with `Config::direct_conv = Some(false)`.
pub(crate) fn choose(rt: &Runtime, g: &ConvGeometry, pass: Pass) -> ConvPath {
    let p = &g.params;
    if g.r == 1 && g.s == 1 && p.stride == [1, 1] && p.padding == [0, 0] {
        return ConvPath::Pointwise;
    }
    let reduction = match pass {
        Pass::Forward => g.c * g.r * g.s,
        Pass::InputGrad => g.k * g.r * g.s,
    };
    let crosses_rows = !padded_dims(g, pass)[1].is_multiple_of(rt.tiles.conv_dw);
    let store_bound = rt.tiles.direct_conv.is_none() && crosses_rows && reduction < DIRECT_MIN_REDUCTION_ROW_CROSSING;
    if direct_allowed(rt, g, pass) && !store_bound { ConvPath::Direct } else { ConvPath::Im2col }
}

/// Whether the direct kernels may take `pass`: the stride is 1, the padded
/// input fits the scratch limit, dX's equivalent padding (R−1)·d − p is not
/// negative, and either the config forces it (`Config::direct_conv =
/// Some(true)`) or the reduction is ≤ [`DIRECT_MAX_REDUCTION`] with ≤
/// [`DIRECT_MAX_FILTERS`] outputs.
fn direct_allowed(rt: &Runtime, g: &ConvGeometry, pass: Pass) -> bool {
    let p = &g.params;
    let (reduction, outputs, planes, pad) = match pass {
        Pass::Forward => (g.c * g.r * g.s, g.k, g.n * g.c, [p.padding[0] as isize, p.padding[1] as isize]),
        Pass::InputGrad => (g.k * g.r * g.s, g.c, g.n * g.k, dx_padding(g)),
    };
    let feasible = p.stride == [1, 1]
        && pad.iter().all(|&v| v >= 0)
        && padded_len(rt, g, pass, planes).is_some_and(|len| len.saturating_mul(4) <= rt.scratch_limit());
    let wanted = rt.tiles.direct_conv.unwrap_or(reduction <= DIRECT_MAX_REDUCTION && outputs <= DIRECT_MAX_FILTERS);
    feasible && wanted
}

/// dX as a forward conv of dy needs padding (R−1)·d − p on each side.
fn dx_padding(g: &ConvGeometry) -> [isize; 2] {
    let p = &g.params;
    [
        (g.r as isize - 1) * p.dilation[0] as isize - p.padding[0] as isize,
        (g.s as isize - 1) * p.dilation[1] as isize - p.padding[1] as isize,
    ]
}

/// (Hp, Wp, rows, cols) of the padded input of `pass`: its padded plane
/// and the plane it pads.
fn padded_dims(g: &ConvGeometry, pass: Pass) -> [usize; 4] {
    match pass {
        Pass::Forward => {
            let [ph, pw] = g.params.padding;
            [g.h + 2 * ph, g.w + 2 * pw, g.h, g.w]
        }
        Pass::InputGrad => {
            let [ph, pw] = dx_padding(g).map(|v| v.max(0) as usize);
            [g.oh + 2 * ph, g.ow + 2 * pw, g.oh, g.ow]
        }
    }
}

/// Floats of the padded buffer: the planes plus the slack the kernel's
/// last vector loads run into, (S−1)·dw + DW.
fn padded_len(rt: &Runtime, g: &ConvGeometry, pass: Pass, planes: usize) -> Option<usize> {
    let [hp, wp, _, _] = padded_dims(g, pass);
    let slack = (g.s - 1) * g.params.dilation[1] + rt.tiles.conv_dw * CONV_NV;
    planes.checked_mul(hp)?.checked_mul(wp)?.checked_add(slack)
}

/// A padding copy: planes of [rows, cols] placed at (top, left) in planes
/// of [hp, wp], zeros around, at `offset` floats into the scratch buffer,
/// with `slack` zeroed floats after the last plane.
struct Pad {
    planes: usize,
    rows: usize,
    cols: usize,
    top: usize,
    left: usize,
    hp: usize,
    wp: usize,
    offset: usize,
    slack: usize,
}

impl Pad {
    /// The padded input of `pass` at the start of scratch.
    fn of(rt: &Runtime, g: &ConvGeometry, pass: Pass) -> Self {
        let [hp, wp, rows, cols] = padded_dims(g, pass);
        let planes = match pass {
            Pass::Forward => g.n * g.c,
            Pass::InputGrad => g.n * g.k,
        };
        let slack = (g.s - 1) * g.params.dilation[1] + rt.tiles.conv_dw * CONV_NV;
        Self { planes, rows, cols, top: (hp - rows) / 2, left: (wp - cols) / 2, hp, wp, offset: 0, slack }
    }

    fn end(&self) -> usize {
        self.offset + self.planes * self.hp * self.wp + self.slack
    }

    fn run(&self, rt: &Runtime, src: &Buffer<f32>, dst: &Buffer<f32>) -> Result<()> {
        let op = "conv2d_direct";
        let mut args = vec![Arg::F32Buf(src)];
        for v in [self.rows, self.cols, self.top, self.left, self.hp, self.wp, self.planes] {
            args.push(i32_arg(op, v)?);
        }
        args.extend([Arg::F32Buf(dst), i32_arg(op, self.offset)?, i32_arg(op, self.slack)?]);
        rt.launch_lines(kernel_names::PAD_PLANES, &args, &[self.hp, self.planes])
    }
}

/// Copies the input of `pass` into zero-padded planes in scratch; the
/// caller enqueues the launches reading them before dropping the guard.
fn pad<'r>(rt: &'r Runtime, g: &ConvGeometry, pass: Pass, src: &Buffer<f32>) -> Result<ScratchGuard<'r>> {
    let spec = Pad::of(rt, g, pass);
    let xp = rt.scratch("conv2d_direct", spec.end())?;
    spec.run(rt, src, &xp)?;
    Ok(xp)
}

/// One `conv_direct` launch: `outputs` channels of `out` from `inputs`
/// channels of the padded `xp`, filter tap (o, i, r, s) at
/// w_off + o·strides[0] + i·strides[1] + r·strides[2] + s·strides[3].
struct Launch<'a> {
    xp: &'a Buffer<f32>,
    inputs: usize,
    padded: [usize; 2],
    w: &'a Buffer<f32>,
    w_off: isize,
    strides: [isize; 4],
    bias: Option<&'a Buffer<f32>>,
    out: &'a Buffer<f32>,
    outputs: usize,
    out_dims: [usize; 2],
}

fn launch(rt: &Runtime, g: &ConvGeometry, l: &Launch) -> Result<()> {
    let op = "conv2d_direct";
    let int = |v: isize| {
        i32::try_from(v).map(Arg::I32).map_err(|_| kernels_core::Error::Device(format!("{op}: {v} exceeds i32")))
    };
    let d = g.params.dilation;
    let [hp, wp] = l.padded;
    let [oh, ow] = l.out_dims;
    let mut args = vec![Arg::F32Buf(l.xp), i32_arg(op, l.inputs)?, i32_arg(op, hp)?, i32_arg(op, wp)?];
    args.extend([i32_arg(op, g.r)?, i32_arg(op, g.s)?, i32_arg(op, d[0])?, i32_arg(op, d[1])?]);
    args.extend([Arg::F32Buf(l.w), int(l.w_off)?]);
    for s in l.strides {
        args.push(int(s)?);
    }
    args.extend([
        Arg::F32Buf(l.bias.unwrap_or(l.w)),
        Arg::I32(i32::from(l.bias.is_some())),
        Arg::F32Buf(l.out),
        i32_arg(op, l.outputs)?,
        i32_arg(op, oh)?,
        i32_arg(op, ow)?,
    ]);
    let chunks = (oh * wp).div_ceil(rt.tiles.conv_dw * CONV_NV);
    // The filter block that computes the fewest padded filters (ties: the
    // larger block): 16 filters take 2 x 8, 6 take 1 x 6 rather than 1 x 8.
    let (kb, alt) = (rt.tiles.conv_kb, rt.tiles.conv_kb_alt);
    let (name, block) = if l.outputs.div_ceil(alt) * alt < l.outputs.div_ceil(kb) * kb {
        (kernel_names::CONV_DIRECT_ALT, alt)
    } else {
        (kernel_names::CONV_DIRECT, kb)
    };
    rt.launch_lines(name, &args, &[chunks, l.outputs.div_ceil(block), g.n])
}

/// y = conv(x, w) + b into `y` (allocated by the caller).
pub(crate) fn forward(
    rt: &Runtime,
    g: &ConvGeometry,
    x: &Buffer<f32>,
    w: &Buffer<f32>,
    b: Option<&Buffer<f32>>,
    y: &Buffer<f32>,
) -> Result<()> {
    let xp = pad(rt, g, Pass::Forward, x)?;
    let [hp, wp, _, _] = padded_dims(g, Pass::Forward);
    let (rs, s) = ((g.r * g.s) as isize, g.s as isize);
    launch(
        rt,
        g,
        &Launch {
            xp: &xp,
            inputs: g.c,
            padded: [hp, wp],
            w,
            w_off: 0,
            strides: [g.c as isize * rs, rs, s, 1],
            bias: b,
            out: y,
            outputs: g.k,
            out_dims: [g.oh, g.ow],
        },
    )
}

/// dx = the stride-1 conv of dy (padded by (R−1)·d − p) with the filters
/// transposed and flipped, into `dx` (allocated by the caller).
pub(crate) fn input_grad(
    rt: &Runtime,
    g: &ConvGeometry,
    w: &Buffer<f32>,
    dy: &Buffer<f32>,
    dx: &Buffer<f32>,
) -> Result<()> {
    let dyp = pad(rt, g, Pass::InputGrad, dy)?;
    let [hp, wp, _, _] = padded_dims(g, Pass::InputGrad);
    let (rs, s) = ((g.r * g.s) as isize, g.s as isize);
    launch(
        rt,
        g,
        &Launch {
            xp: &dyp,
            inputs: g.k,
            padded: [hp, wp],
            w,
            // Tap (c, k, r', s') reads w[k][c][R−1−r'][S−1−s'].
            w_off: rs - 1,
            strides: [rs, g.c as isize * rs, -s, -1],
            bias: None,
            out: dx,
            outputs: g.c,
            out_dims: [g.h, g.w],
        },
    )
}

/// Whether dW goes direct too (`conv_dw`): on a CPU device, when the
/// forward pass does and S ≤ [`DW_MAX_S`] (simplecnn-c1, whose forward
/// stays on im2col by the store rule, measured ~10 % slower with a direct
/// dW and the im2col dX than with im2col for both). One work-item per (DW_KF filters, c, r)
/// streams the whole batch, which suits a few cores, not a GPU (there dW
/// stays a batch-summing GEMM).
pub(crate) fn weight_grad_direct(rt: &Runtime, g: &ConvGeometry) -> bool {
    !rt.limits().is_gpu && g.s <= DW_MAX_S && choose(rt, g, Pass::Forward) == ConvPath::Direct && {
        let len = Pad::of(rt, g, Pass::Forward).end() + g.n * g.k * g.oh * padded_dims(g, Pass::Forward)[1];
        (len + rt.tiles.conv_dw).saturating_mul(4) <= rt.scratch_limit()
    }
}

/// Pixel vectors per `conv_direct` work-item (a build option): each
/// weight broadcast feeds this many FMAs.
pub(crate) const CONV_NV: usize = 2;

/// Filter columns `conv_dw` keeps accumulators for (a build option).
pub(crate) const DW_MAX_S: usize = 8;
/// Filters per `conv_dw` work-item (a build option): each x vector loaded
/// feeds this many FMAs; 2 x 8 accumulators fit the 32 AVX-512 registers.
pub(crate) const DW_KF: usize = 2;

/// dw = Σ_b Σ_q dy_b ⊗ x_b windows, into `dw` (allocated by the caller):
/// x padded as for the forward pass, then dy padded on the right to the
/// same width, both in scratch.
pub(crate) fn weight_grad(
    rt: &Runtime,
    g: &ConvGeometry,
    x: &Buffer<f32>,
    dy: &Buffer<f32>,
    dw: &Buffer<f32>,
) -> Result<()> {
    let op = "conv2d_direct";
    let xs = Pad::of(rt, g, Pass::Forward);
    let dys = Pad {
        planes: g.n * g.k,
        rows: g.oh,
        cols: g.ow,
        top: 0,
        left: 0,
        hp: g.oh,
        wp: xs.wp,
        offset: xs.end(),
        slack: rt.tiles.conv_dw,
    };
    let buf = rt.scratch(op, dys.end())?;
    xs.run(rt, x, &buf)?;
    dys.run(rt, dy, &buf)?;
    let d = g.params.dilation;
    let mut args = vec![Arg::F32Buf(&buf)];
    for v in [0, dys.offset, g.n, g.c, xs.hp, xs.wp, g.r, g.s, d[0], d[1], g.k, g.oh] {
        args.push(i32_arg(op, v)?);
    }
    args.push(Arg::F32Buf(dw));
    // Few, long work-items (K·C·R: 30 for lenet-c1): one per work-group,
    // so the device spreads them over every compute unit (launch_lines
    // would pack them into one or two groups, i.e. one or two cores).
    rt.launch(kernel_names::CONV_DW, &args, &[g.k.div_ceil(DW_KF), g.c * g.r], Some(&[1, 1]))
}
