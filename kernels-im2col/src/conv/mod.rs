//! conv2d forward through im2col + sgemm (backward: conv/backward.rs).
//!
//! - Forward, per image: y [K, P] = b + W [K, C·R·S] · col [C·R·S, P]
//!   (P = OH·OW), one col tile at a time (see conv/plan.rs), accumulating over
//!   channel blocks into the output tile. The 1x1 stride-1 unpadded conv
//!   ([`ConvPath::Pointwise`]) multiplies W by the image directly.
//! - Variants (conv/plan.rs picks): images with few output pixels are grouped so
//!   one GEMM covers several (y and dy go through a [K, images·P] buffer);
//!   column-strided convs unfold from, and col2im into, phased copies
//!   (unfold.rs); the direct forward kernels (direct/tiny.rs, direct/filters.rs)
//!   take tiny reductions and few-filter small images, and the latter's dW
//!   (direct/filters_grad.rs, which also takes resnet-s2's dW by blocks of
//!   16 filters).
//! - The GEMM is gemm/packed.rs at the plan's ISA (matrixmultiply at the
//!   portable level; OPTIMISATION.md step 56), or with AVX-512 and a plan
//!   that allows it (`ConvPlan::unpacked_gemms`: resnet-s2's and mxnet-c2's
//!   backward; their forwards are direct/wide.rs's since step 63)
//!   gemm/unpacked.rs, which reads W and the col tile where they lie
//!   instead of packing both on every call (resnet-s2 forward 3.05-3.85 ->
//!   2.62-2.71 ms against matrixmultiply, step 38).
//! - Parallelism: rayon over images or groups, also over blocks of filters
//!   when there are fewer images than threads. sgemm itself stays
//!   single-threaded (lib.rs says why).
//! - The worker scratch (`Scratch`) and phased inputs (`inputs`) are shared
//!   with conv/backward.rs.
//! - Checked by tests/against_naive.rs and harness/tests/im2col.rs (proptest
//!   against the f64 reference, gradcheck); timed by examples/im2col_bench.rs.

use std::mem::MaybeUninit;

use kernels_core::{ConvGeometry, Result};
use rayon::prelude::*;

pub(crate) mod backward;
pub(crate) mod plan;
pub(crate) mod workers;

use plan::{ConvPath, ConvPlan, TileTargets};
use workers::{Scratch, inputs};

use crate::gemm::{View, mat, mat_mut};
use crate::gemm::{packed, unpacked};
use crate::unfold::im2col;

/// y [n, k, oh, ow] = x ⋆ w + b.
pub(crate) fn forward(
    g: &ConvGeometry,
    targets: TileTargets,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let threads = rayon::current_num_threads();
    let plan = ConvPlan::new(g, threads, targets)?;
    plan.check_scratch(g, threads, false)?;
    let (image_in, pixels) = (g.c * g.h * g.w, g.oh * g.ow);
    let image_out = g.k * pixels;
    let crs = g.c * g.r * g.s;
    let scratch = || plan.scratch(g);
    let images = plan.images_per_tile;
    match plan.path {
        ConvPath::Direct => return Ok(crate::direct::tiny::forward(plan.simd(), g, x, w, bias)),
        ConvPath::DirectFilters => return Ok(crate::direct::filters::forward(plan.simd(), g, x, w, bias)),
        ConvPath::Winograd => return Ok(crate::winograd::forward(plan.simd(), g, plan.tile_floats, x, w, bias)),
        ConvPath::DirectWide => return Ok(crate::direct::wide::forward(plan.simd(), g, x, w, bias)),
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
    let sources = inputs(g, plan.phased, x_group, &mut s.phased);
    for tile in plan.tiles(g) {
        let rows = tile.rows(g);
        let col = &mut s.col[..rows * columns];
        for (i, &input) in sources.iter().enumerate() {
            im2col(g, input, tile, &mut col[i * pixels..], columns);
        }
        let w_tile = mat(&w[tile.c0 * taps..], View::strided(g.k, rows, crs));
        let (col, gather) = (mat(col, View::row_major(rows, columns)), mat_mut(gather, View::row_major(g.k, columns)));
        if plan.unpacked_gemms {
            unpacked::gemm(plan.simd(), w_tile, col, gather, tile.c0 > 0);
        } else {
            packed::gemm(plan.simd(), w_tile, col, gather, tile.c0 > 0);
        }
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
            let y_rows = mat_mut(y_rows, View::row_major(filters, pixels));
            packed::gemm(plan.simd(), mat(w_rows, vw), mat(x_image, vx), y_rows, true);
        }
        ConvPath::Unfold | ConvPath::Direct | ConvPath::DirectFilters | ConvPath::DirectWide | ConvPath::Winograd => {
            let taps = g.r * g.s;
            let sources = inputs(g, plan.phased, x_image, &mut s.phased);
            for tile in plan.tiles(g) {
                let (rows, pb) = (tile.rows(g), tile.pixels());
                let col = &mut s.col[..rows * pb];
                im2col(g, sources[0], tile, col, pb);
                let vw = View::strided(filters, rows, crs);
                let vy = View::strided(filters, pb, pixels);
                let (w_tile, y_tile) = (&w_rows[tile.c0 * taps..], &mut y_rows[tile.p0..]);
                let (w_tile, col, y_tile) = (mat(w_tile, vw), mat(col, View::row_major(rows, pb)), mat_mut(y_tile, vy));
                if plan.unpacked_gemms {
                    unpacked::gemm(plan.simd(), w_tile, col, y_tile, true);
                } else {
                    packed::gemm(plan.simd(), w_tile, col, y_tile, true);
                }
            }
        }
    }
}
