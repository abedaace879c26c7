//! conv2d forward and backward through im2col + sgemm.
//!
//! - Forward, per image: y [K, P] = b + W [K, C·R·S] · col [C·R·S, P]
//!   (P = OH·OW), one col tile at a time (see plan.rs), accumulating over
//!   channel blocks into the output tile. The 1x1 stride-1 unpadded conv
//!   ([`ConvPath::Pointwise`]) multiplies W by the image directly.
//! - Backward, per image: dW += dY [K, P] · colᵀ [P, C·R·S];
//!   dX = col2im(Wᵀ [C·R·S, K] · dY [K, P]); db = Σ dY, fused into the same
//!   pass while dY is in cache.
//! - Variants (plan.rs picks): images with few output pixels are grouped so
//!   one GEMM covers several (y and dy go through a [K, images·P] buffer);
//!   column-strided convs unfold from, and col2im into, phased copies
//!   (unfold.rs); the direct forward kernels (direct.rs, direct_filters.rs)
//!   take tiny reductions and few-filter small images, and the latter's dW
//!   (direct_filters_grad.rs).
//! - Parallelism: rayon over images or groups (forward: also over blocks of
//!   filters when there are fewer images than threads); backward gives each
//!   worker a contiguous run of images and its own partial dW and db, summed
//!   at the end. sgemm itself stays single-threaded (lib.rs says why).
//! - Checked by the unit tests here and harness/tests/im2col.rs (proptest
//!   against the f64 reference, gradcheck); timed by examples/bench.rs.

use std::mem::MaybeUninit;

use kernels_core::{ConvGeometry, GradRequest, Result};
use rayon::prelude::*;

use crate::HostGrads;
use crate::direct_filters_grad;
use crate::gemm::{View, mat, mat_mut, sgemm};
use crate::plan::{ConvPath, ConvPlan, TileTargets};
use crate::unfold::{Input, Output, col2im, im2col, phase, phased_floats, unphase};

/// One worker's buffers: a col tile, for multi-image tiles the gathered
/// [k, images x pixels] output or output gradient, and phased images.
struct Scratch {
    col: Vec<f32>,
    gather: Vec<f32>,
    phased: Vec<f32>,
    /// Backward: the group's dx, phased, when the plan phases.
    phased_dx: Vec<f32>,
}

impl Scratch {
    fn new(g: &ConvGeometry, plan: &ConvPlan) -> Self {
        Self {
            col: vec![0.0; plan.col_floats(g)],
            gather: vec![0.0; plan.gather_floats(g)],
            phased: vec![0.0; plan.phased_floats(g)],
            phased_dx: Vec::new(),
        }
    }
}

/// The inputs im2col reads for a group of images: phased copies of them,
/// made once here for all their tiles, when the plan says so.
fn inputs<'a>(g: &ConvGeometry, plan: &ConvPlan, x_group: &'a [f32], phased: &'a mut [f32]) -> Vec<Input<'a>> {
    let image_in = g.c * g.h * g.w;
    if !plan.phased {
        return x_group.chunks_exact(image_in).map(Input::Plain).collect();
    }
    let per_image = phased_floats(g);
    let phased = &mut phased[..x_group.len() / image_in * per_image];
    for (x_image, out) in x_group.chunks_exact(image_in).zip(phased.chunks_exact_mut(per_image)) {
        phase(g, x_image, out);
    }
    phased.chunks_exact(per_image).map(Input::Phased).collect()
}

/// y [n, k, oh, ow] = x ⋆ w + b.
pub(crate) fn forward(
    g: &ConvGeometry,
    targets: TileTargets,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let threads = rayon::current_num_threads();
    let plan = ConvPlan::new(g, threads, targets);
    plan.check_scratch(g, threads, false)?;
    let (image_in, pixels) = (g.c * g.h * g.w, g.oh * g.ow);
    let image_out = g.k * pixels;
    let crs = g.c * g.r * g.s;
    let scratch = || Scratch::new(g, &plan);
    let images = plan.images_per_tile;
    match plan.path {
        ConvPath::Direct => return Ok(crate::direct::forward(g, x, w, bias)),
        ConvPath::DirectFilters => return Ok(crate::direct_filters::forward(g, x, w, bias)),
        ConvPath::Pointwise | ConvPath::Unfold => {}
    }
    let total = g.n * image_out;
    if images > 1 || g.n >= threads {
        // Each image's output is written whole by its worker (bias rows, or
        // the scatter of a group) before anything reads it, so y is never
        // zeroed first: a zeroing pass over a cold 6 MiB output cost ~5% of
        // resnet-3x3 (OPTIMISATION.md, step 15).
        let mut y: Vec<f32> = Vec::with_capacity(total);
        let uninit = &mut y.spare_capacity_mut()[..total];
        if images > 1 {
            let groups = uninit.par_chunks_mut(images * image_out).zip(x.par_chunks(images * image_in));
            groups.for_each_init(scratch, |s, (y_group, x_group)| {
                forward_group(g, &plan, x_group, w, bias, y_group, s);
            });
        } else {
            uninit.par_chunks_mut(image_out).zip(x.par_chunks(image_in)).for_each_init(
                scratch,
                |s, (y_image, x_image)| {
                    let y_image = init_rows(y_image, pixels, bias);
                    forward_rows(g, &plan, x_image, w, None, y_image, s);
                },
            );
        }
        // SAFETY: the chunks above cover elements 0..total, and every
        // element of each was written (init_rows, or forward_group's
        // scatter) before the workers returned.
        unsafe { y.set_len(total) };
        return Ok(y);
    }
    // Too few images to keep every thread busy: split the filters too.
    let mut y = vec![0.0f32; total];
    let filters_per_block = g.k.div_ceil(threads.min(g.k));
    y.par_chunks_mut(image_out).zip(x.par_chunks(image_in)).for_each(|(y_image, x_image)| {
        let blocks = y_image.par_chunks_mut(filters_per_block * pixels).enumerate();
        blocks.for_each_init(scratch, |s, (i, y_rows)| {
            let (k0, k1) = (i * filters_per_block, i * filters_per_block + y_rows.len() / pixels);
            let b = bias.map(|b| &b[k0..k1]);
            forward_rows(g, &plan, x_image, &w[k0 * crs..k1 * crs], b, y_rows, s);
        });
    });
    Ok(y)
}

/// A group of whole images in one GEMM: gather = W · [col of each image],
/// then scattered into y image by image with the bias added.
fn forward_group(
    g: &ConvGeometry,
    plan: &ConvPlan,
    x_group: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y_group: &mut [MaybeUninit<f32>],
    s: &mut Scratch,
) {
    let (image_in, pixels) = (g.c * g.h * g.w, g.oh * g.ow);
    let (crs, taps) = (g.c * g.r * g.s, g.r * g.s);
    let images = x_group.len() / image_in;
    let columns = images * pixels;
    let gather = &mut s.gather[..g.k * columns];
    let sources = inputs(g, plan, x_group, &mut s.phased);
    for tile in plan.tiles(g) {
        let rows = tile.rows(g);
        let col = &mut s.col[..rows * columns];
        for (i, &input) in sources.iter().enumerate() {
            im2col(g, input, tile, &mut col[i * pixels..], columns);
        }
        let w_tile = mat(&w[tile.c0 * taps..], View::strided(g.k, rows, crs));
        let beta = if tile.c0 == 0 { 0.0 } else { 1.0 };
        sgemm(
            1.0,
            w_tile,
            mat(col, View::row_major(rows, columns)),
            beta,
            mat_mut(gather, View::row_major(g.k, columns)),
        );
    }
    for (i, y_image) in y_group.chunks_exact_mut(g.k * pixels).enumerate() {
        for (k, y_row) in y_image.chunks_exact_mut(pixels).enumerate() {
            let src = &gather[k * columns + i * pixels..][..pixels];
            let b = bias.map_or(0.0, |b| b[k]);
            for (out, v) in y_row.iter_mut().zip(src) {
                out.write(v + b);
            }
        }
    }
}

/// Writes every element of `rows` [k, pixels]: the bias of its row, or 0.
fn init_rows<'a>(rows: &'a mut [MaybeUninit<f32>], pixels: usize, bias: Option<&[f32]>) -> &'a mut [f32] {
    for (k, row) in rows.chunks_exact_mut(pixels).enumerate() {
        let value = bias.map_or(0.0, |b| b[k]);
        row.iter_mut().for_each(|e| {
            e.write(value);
        });
    }
    // SAFETY: every element of `rows` was written just above (rows.len()
    // is a multiple of pixels: k rows of one image), and MaybeUninit<f32>
    // has the layout of f32.
    unsafe { &mut *(rows as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Rows y_rows [kr, P] of one image from the matching filters w_rows
/// [kr, C·R·S].
fn forward_rows(
    g: &ConvGeometry,
    plan: &ConvPlan,
    x_image: &[f32],
    w_rows: &[f32],
    bias: Option<&[f32]>,
    y_rows: &mut [f32],
    s: &mut Scratch,
) {
    let pixels = g.oh * g.ow;
    let filters = y_rows.len() / pixels;
    let crs = g.c * g.r * g.s;
    if let Some(b) = bias {
        for (row, &bk) in y_rows.chunks_exact_mut(pixels).zip(b) {
            row.fill(bk);
        }
    }
    match plan.path {
        ConvPath::Pointwise => {
            let vw = View::row_major(filters, g.c);
            let vx = View::row_major(g.c, pixels);
            sgemm(1.0, mat(w_rows, vw), mat(x_image, vx), 1.0, mat_mut(y_rows, View::row_major(filters, pixels)));
        }
        ConvPath::Unfold | ConvPath::Direct | ConvPath::DirectFilters => {
            let taps = g.r * g.s;
            let sources = inputs(g, plan, x_image, &mut s.phased);
            for tile in plan.tiles(g) {
                let (rows, pb) = (tile.rows(g), tile.pixels());
                let col = &mut s.col[..rows * pb];
                im2col(g, sources[0], tile, col, pb);
                let vw = View::strided(filters, rows, crs);
                let vy = View::strided(filters, pb, pixels);
                let (w_tile, y_tile) = (&w_rows[tile.c0 * taps..], &mut y_rows[tile.p0..]);
                sgemm(1.0, mat(w_tile, vw), mat(col, View::row_major(rows, pb)), 1.0, mat_mut(y_tile, vy));
            }
        }
    }
}

/// dx [n, c, h, w], dw [k, c, r, s], db [k] from dy [n, k, oh, ow].
pub(crate) fn backward(
    g: &ConvGeometry,
    targets: TileTargets,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    need: GradRequest,
) -> Result<HostGrads> {
    let threads = rayon::current_num_threads();
    let plan = ConvPlan::new(g, threads, targets);
    plan.check_scratch(g, threads.min(g.n), true)?;
    if plan.path != ConvPath::DirectFilters {
        return Ok(backward_unfold(g, &plan, x, w, dy, need));
    }
    // Few filters on small images: dW and db without im2col; dX by col2im
    // (as the transposed conv's forward it measured 1.3x slower: its 6
    // "filters" fill 6 of 16 lanes and half its taps meet padding).
    let dw = need.dw.then(|| direct_filters_grad::backward_dw(g, x, dy));
    let db = need.db.then(|| bias_gradient(g, dy));
    let dx_only = GradRequest { dx: true, dw: false, db: false };
    let dx = if need.dx { backward_unfold(g, &plan, x, w, dy, dx_only).dx } else { None };
    Ok(HostGrads { dx, dw, db })
}

/// db [k] = Σ dy over images and pixels (f32 row sums, f64 across rows).
fn bias_gradient(g: &ConvGeometry, dy: &[f32]) -> Vec<f32> {
    let pixels = g.oh * g.ow;
    let mut db = vec![0.0f64; g.k];
    for dy_image in dy.chunks_exact(g.k * pixels) {
        for (total, row) in db.iter_mut().zip(dy_image.chunks_exact(pixels)) {
            *total += sum(row) as f64;
        }
    }
    db.iter().map(|&v| v as f32).collect()
}

/// Backward through im2col / col2im and sgemm, every worker over a run of
/// images with its own partial dW and db.
fn backward_unfold(
    g: &ConvGeometry,
    plan: &ConvPlan,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    need: GradRequest,
) -> HostGrads {
    let workers = rayon::current_num_threads().min(g.n);
    let images_per_worker = g.n.div_ceil(workers);
    let workers = g.n.div_ceil(images_per_worker);
    let image_in = g.c * g.h * g.w;
    let mut dx = need.dx.then(|| vec![0.0f32; g.n * image_in]);
    let dx_runs: Vec<Option<&mut [f32]>> = match dx.as_mut() {
        Some(dx) => dx.chunks_mut(images_per_worker * image_in).map(Some).collect(),
        None => (0..workers).map(|_| None).collect(),
    };
    let partials: Vec<Partial> = dx_runs
        .into_par_iter()
        .enumerate()
        .map(|(worker, dx_run)| {
            let first = worker * images_per_worker;
            let images = first..(first + images_per_worker).min(g.n);
            backward_images(g, plan, images, x, w, dy, dx_run, need)
        })
        .collect();
    let mut dw = need.dw.then(|| vec![0.0f32; g.k * g.c * g.r * g.s]);
    let mut db = vec![0.0f64; g.k];
    for partial in &partials {
        if let Some(dw) = dw.as_mut() {
            for (total, part) in dw.iter_mut().zip(&partial.dw) {
                *total += part;
            }
        }
        for (total, part) in db.iter_mut().zip(&partial.db) {
            *total += part;
        }
    }
    let db = need.db.then(|| db.iter().map(|&v| v as f32).collect());
    HostGrads { dx, dw, db }
}

/// One worker's share of dW (empty when not requested) and db.
struct Partial {
    dw: Vec<f32>,
    db: Vec<f64>,
}

/// Backward over a run of images, a group of `plan.images_per_tile` at a
/// time: writes their dx (when given) and returns their partial dW and db.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename these
fn backward_images(
    g: &ConvGeometry,
    plan: &ConvPlan,
    images: std::ops::Range<usize>,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    mut dx_run: Option<&mut [f32]>,
    need: GradRequest,
) -> Partial {
    let (image_in, pixels) = (g.c * g.h * g.w, g.oh * g.ow);
    let image_out = g.k * pixels;
    let mut dw = if need.dw { vec![0.0f32; g.k * g.c * g.r * g.s] } else { Vec::new() };
    let mut db = vec![0.0f64; g.k];
    let mut s = Scratch::new(g, plan);
    let group = plan.images_per_tile;
    let mut first = images.start;
    while first < images.end {
        let last = (first + group).min(images.end);
        let x_group = &x[first * image_in..last * image_in];
        let dy_group = &dy[first * image_out..last * image_out];
        let local = (first - images.start) * image_in..(last - images.start) * image_in;
        let dx_group = dx_run.as_deref_mut().map(|run| &mut run[local]);
        if need.db {
            for dy_image in dy_group.chunks_exact(image_out) {
                for (total, row) in db.iter_mut().zip(dy_image.chunks_exact(pixels)) {
                    *total += sum(row) as f64;
                }
            }
        }
        match plan.path {
            ConvPath::Pointwise => backward_pointwise(g, x_group, w, dy_group, dx_group, need, &mut dw),
            ConvPath::Unfold | ConvPath::Direct | ConvPath::DirectFilters => {
                backward_group(g, plan, x_group, w, dy_group, dx_group, need, &mut dw, &mut s)
            }
        }
        first = last;
    }
    Partial { dw, db }
}

/// 1x1 stride-1 unpadded: dW += dY·Xᵀ and dX = Wᵀ·dY per image, no col.
fn backward_pointwise(
    g: &ConvGeometry,
    x_group: &[f32],
    w: &[f32],
    dy_group: &[f32],
    mut dx_group: Option<&mut [f32]>,
    need: GradRequest,
    dw: &mut [f32],
) {
    let pixels = g.oh * g.ow;
    let (vx, vdy, vw) = (View::row_major(g.c, pixels), View::row_major(g.k, pixels), View::row_major(g.k, g.c));
    for (i, (x_image, dy_image)) in
        x_group.chunks_exact(g.c * pixels).zip(dy_group.chunks_exact(g.k * pixels)).enumerate()
    {
        if need.dw {
            sgemm(1.0, mat(dy_image, vdy), mat(x_image, vx.t()), 1.0, mat_mut(dw, vw));
        }
        if let Some(dx_group) = dx_group.as_deref_mut() {
            let dx_image = &mut dx_group[i * g.c * pixels..][..g.c * pixels];
            sgemm(1.0, mat(w, vw.t()), mat(dy_image, vdy), 0.0, mat_mut(dx_image, vx));
        }
    }
}

/// One group of images (or one image), tile by tile: dW += dY·colᵀ and
/// dX += col2im(Wᵀ·dY). A single image reads dY in place; a group gathers
/// its dY into [k, images x pixels] first so one GEMM covers it.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename these
fn backward_group(
    g: &ConvGeometry,
    plan: &ConvPlan,
    x_group: &[f32],
    w: &[f32],
    dy_group: &[f32],
    mut dx_group: Option<&mut [f32]>,
    need: GradRequest,
    dw: &mut [f32],
    s: &mut Scratch,
) {
    let (image_in, pixels) = (g.c * g.h * g.w, g.oh * g.ow);
    let (crs, taps) = (g.c * g.r * g.s, g.r * g.s);
    let images = x_group.len() / image_in;
    let (dy_source, dy_stride): (&[f32], usize) = if images == 1 {
        (dy_group, pixels)
    } else {
        let columns = images * pixels;
        let gather = &mut s.gather[..g.k * columns];
        for (i, dy_image) in dy_group.chunks_exact(g.k * pixels).enumerate() {
            for (k, row) in dy_image.chunks_exact(pixels).enumerate() {
                gather[k * columns + i * pixels..][..pixels].copy_from_slice(row);
            }
        }
        (gather, columns)
    };
    let sources = if need.dw { inputs(g, plan, x_group, &mut s.phased) } else { Vec::new() };
    let per_phased = phased_floats(g);
    if plan.phased && dx_group.is_some() {
        s.phased_dx.clear();
        s.phased_dx.resize(images * per_phased, 0.0);
    }
    for tile in plan.tiles(g) {
        let (rows, pb) = (tile.rows(g), tile.pixels());
        let columns = images * pb;
        let col = &mut s.col[..rows * columns];
        let vcol = View::row_major(rows, columns);
        let dy_tile = mat(&dy_source[tile.p0..], View::strided(g.k, columns, dy_stride));
        let vw_tile = View::strided(g.k, rows, crs);
        if need.dw {
            for (i, &input) in sources.iter().enumerate() {
                im2col(g, input, tile, &mut col[i * pb..], columns);
            }
            sgemm(1.0, dy_tile, mat(col, vcol.t()), 1.0, mat_mut(&mut dw[tile.c0 * taps..], vw_tile));
        }
        if let Some(dx_group) = dx_group.as_deref_mut() {
            sgemm(1.0, mat(&w[tile.c0 * taps..], vw_tile.t()), dy_tile, 0.0, mat_mut(col, vcol));
            if plan.phased {
                // Accumulate phased (contiguous adds), put back once below.
                for (i, out) in s.phased_dx.chunks_exact_mut(per_phased).enumerate().take(images) {
                    col2im(g, &col[i * pb..], tile, Output::Phased(out), columns);
                }
            } else {
                for (i, dx_image) in dx_group.chunks_exact_mut(image_in).enumerate() {
                    col2im(g, &col[i * pb..], tile, Output::Plain(dx_image), columns);
                }
            }
        }
    }
    if let (Some(dx_group), true) = (dx_group, plan.phased) {
        for (dx_image, phased) in dx_group.chunks_exact_mut(image_in).zip(s.phased_dx.chunks_exact(per_phased)) {
            unphase(g, phased, dx_image);
        }
    }
}

/// Sum of a row with 16 independent accumulators, so it vectorises (a single
/// f32 chain would be both slow and less accurate).
pub(crate) fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let chunks = values.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}
