//! conv2d backward: runs the dX, dW and db algorithms the plan names
//! (conv/plan.rs decides; nothing here re-decides), and holds the unfold
//! path's own: im2col / col2im + sgemm.
//!
//! - Per image: dW += dY [K, P] · colᵀ [P, C·R·S]; dX = col2im(Wᵀ
//!   [C·R·S, K] · dY [K, P]); db = Σ dY, fused into the same pass while dY
//!   is in cache. The GEMMs run gemm/packed.rs at the plan's ISA
//!   (matrixmultiply at the portable level; OPTIMISATION.md step 56),
//!   except on the unpacked-GEMM plan below. Tiles, image groups and phased inputs as in the forward
//!   (conv/mod.rs, conv/plan.rs); phased convs also accumulate dX phased.
//! - With AVX-512 and at least 32 filters (`ConvPlan::unpacked_gemms`)
//!   the two GEMMs run through gemm/unpacked.rs, which reads its operands
//!   where they lie instead of packing them on every call: dWᵀ [C·R·S, K]
//!   += col · dYᵀ (dY transposed once per pixel block, dWᵀ once per call)
//!   and col = Wᵀ · dY (Wᵀ transposed once per call). resnet-s2: 6.8-7.6
//!   -> 6.4-6.5 ms (OPTIMISATION.md step 35). There, stride-2 convs with
//!   H = 2·OH, W = 2·OW take dX from subpixel.rs (by input phase, no
//!   col2im; step 39).
//! - Other algorithms run where the plan names them: dW (and db) from
//!   direct/tiny_grad.rs or direct/filters_grad.rs (K ≤ 16, or by blocks of
//!   16 filters for direct_wide's geometries), dX from direct/dx.rs,
//!   all three passes from winograd/; the pointwise GEMMs (1x1 convs) here.
//! - Parallelism: each worker takes a contiguous run of images with its own
//!   partial dW and db, summed at the end.
//! - Checked by tests/against_naive.rs and harness/tests/im2col.rs (proptest
//!   against the f64 reference, gradient checks); timed by examples/im2col_bench.rs.

use kernels_core::{ConvGeometry, GradRequest, Result};
use rayon::prelude::*;

use super::plan::{ConvPlan, DbPath, DwPath, DxPath, TileTargets};
use super::workers::{HostGrads, Partial, Scratch, add_row_sums, dyt_stride, inputs, over_image_runs};
use crate::direct::{dx as direct_dx, filters_grad as direct_filters_grad, tiny_grad as direct_grad};
use crate::gemm::{View, mat, mat_mut};
use crate::gemm::{packed, unpacked};
use crate::simd::Simd;
use crate::subpixel;
use crate::unfold::{Output, col2im, im2col, phased_floats, unphase};

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
    let plan = ConvPlan::new(g, threads, targets)?;
    plan.check_scratch(g, threads.min(g.n), true)?;
    // Each pass runs the algorithm the plan names; passes that share one
    // (the unfold/GEMM driver, Winograd) run in one call of it, with db
    // fused into the first of those that reads dY whole.
    let shared = |algorithm: fn(DxPath, DwPath) -> (bool, bool)| {
        let (dx, dw) = algorithm(plan.dx, plan.dw);
        GradRequest { dx: need.dx && dx, dw: need.dw && dw, db: false }
    };
    let mut winograd = shared(|dx, dw| (dx == DxPath::Winograd, dw == DwPath::Winograd));
    let mut unfold = shared(|dx, dw| {
        (matches!(dx, DxPath::Gemm | DxPath::Col2im | DxPath::Subpixel), matches!(dw, DwPath::Gemm | DwPath::Unfold))
    });
    let tiny_dw = need.dw && plan.dw == DwPath::DirectTiny;
    let mut db_separately = false;
    if need.db {
        match plan.db {
            DbPath::Fused if winograd.dx || winograd.dw => winograd.db = true,
            // direct/tiny_grad.rs sums db beside dW.
            DbPath::Fused if tiny_dw => {}
            DbPath::Fused if unfold.dx || unfold.dw => unfold.db = true,
            // db alone, or beside a dW kernel that does not read dY whole:
            // one pass over dY (lenet-c1's db alone: 0.39 -> 0.11 ms
            // against computing dW beside it only to discard it).
            DbPath::Fused | DbPath::Separate => db_separately = true,
        }
    }
    let mut grads = HostGrads { dx: None, dw: None, db: None };
    let mut take = |part: HostGrads| {
        grads.dx = grads.dx.take().or(part.dx);
        grads.dw = grads.dw.take().or(part.dw);
        grads.db = grads.db.take().or(part.db);
    };
    if winograd.dx || winograd.dw || winograd.db {
        take(crate::winograd::backward(plan.simd(), g, plan.tile_floats, x, w, dy, winograd));
    }
    if unfold.dx || unfold.dw || unfold.db {
        take(backward_unfold(g, &plan, x, w, dy, unfold));
    }
    if tiny_dw {
        let (dw, db) = direct_grad::backward_dw_db(plan.simd(), g, x, dy);
        take(HostGrads { dx: None, dw: Some(dw), db: (need.db && !db_separately).then_some(db) });
    }
    if need.dw && plan.dw == DwPath::DirectFilters {
        take(HostGrads { dx: None, dw: Some(direct_filters_grad::backward_dw(plan.simd(), g, x, dy)), db: None });
    }
    if need.dw && plan.dw == DwPath::DirectWide {
        let dw = direct_filters_grad::backward_dw_blocks(plan.simd(), g, x, dy);
        take(HostGrads { dx: None, dw: Some(dw), db: None });
    }
    if need.dx && plan.dx == DxPath::Direct {
        take(HostGrads { dx: Some(direct_dx::backward_dx(plan.simd(), g, w, dy)), dw: None, db: None });
    }
    if db_separately {
        take(HostGrads { dx: None, dw: None, db: Some(bias_gradient(g, dy)) });
    }
    Ok(grads)
}

/// db [k] = Σ dy over images and pixels (f32 row sums, f64 across rows).
///
/// Images are summed in parallel, each into its own row of K partial
/// sums, then the rows are added in image order: the same result at any
/// thread count (a single thread took 0.08 ms of resnet-s2's dY and 0.10
/// of lenet-c2's, 2-4x PyTorch's db; OPTIMISATION.md step 70).
fn bias_gradient(g: &ConvGeometry, dy: &[f32]) -> Vec<f32> {
    let pixels = g.oh * g.ow;
    // ConvGeometry has K, OH and OW ≥ 1, so no chunk size below is 0.
    let mut per_image = vec![0.0f64; g.n * g.k];
    per_image
        .par_chunks_mut(g.k)
        .zip(dy.par_chunks(g.k * pixels))
        .for_each(|(db, dy_image)| add_row_sums(db, dy_image, pixels));
    let mut db = vec![0.0f64; g.k];
    for row in per_image.chunks_exact(g.k) {
        db.iter_mut().zip(row).for_each(|(total, v)| *total += v);
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
    let crs = g.c * g.r * g.s;
    let dw_len = if need.dw { g.k * crs } else { 0 };
    let unpacked = plan.unpacked_gemms;
    // Wᵀ [C·R·S, K] row-major, once per call, for the unpacked GEMM's dX.
    let wt = if unpacked && need.dx { transposed(plan.simd(), w, g.k, crs) } else { Vec::new() };
    let operands = Operands { w, wt: &wt };
    let (dx, dw, db) = over_image_runs(g, need.dx, dw_len, |images, dx_run| {
        backward_images(g, plan, images, x, &operands, dy, dx_run, need)
    });
    let db = need.db.then(|| db.iter().map(|&v| v as f32).collect());
    let dw = need.dw.then(|| {
        if !unpacked {
            return dw;
        }
        // The workers summed dWᵀ [C·R·S, K]; back to dW [K, C·R·S].
        transposed(plan.simd(), &dw, crs, g.k)
    });
    HostGrads { dx, dw, db }
}

/// m [rows, cols] transposed, split by output rows over the pool's
/// threads: resnet-s2's W (1.2 MB) took 150 µs on one thread while the
/// other waited (OPTIMISATION.md step 47).
fn transposed(simd: Simd, m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * cols];
    let per_chunk = cols.div_ceil(rayon::current_num_threads()).next_multiple_of(16).max(16);
    out.par_chunks_mut(per_chunk * rows).enumerate().for_each(|(i, chunk)| {
        let c0 = i * per_chunk;
        unpacked::transpose(simd, &m[c0..], rows, chunk.len() / rows, cols, chunk);
    });
    out
}

/// The weights as the backward GEMMs read them: W [K, C·R·S] for
/// gemm/packed.rs (or matrixmultiply), Wᵀ [C·R·S, K] (empty unless dX is wanted) for the unpacked GEMM.
struct Operands<'a> {
    w: &'a [f32],
    wt: &'a [f32],
}

/// Backward over a run of images, a group of `plan.images_per_tile` at a
/// time: writes their dx (when given) and returns their partial dW and db.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename these
fn backward_images(
    g: &ConvGeometry,
    plan: &ConvPlan,
    images: std::ops::Range<usize>,
    x: &[f32],
    operands: &Operands<'_>,
    dy: &[f32],
    mut dx_run: Option<&mut [f32]>,
    need: GradRequest,
) -> Partial {
    let w = operands.w;
    let (image_in, pixels) = (g.c * g.h * g.w, g.oh * g.ow);
    let image_out = g.k * pixels;
    let mut dw = if need.dw { vec![0.0f32; g.k * g.c * g.r * g.s] } else { Vec::new() };
    let mut db = vec![0.0f64; g.k];
    let mut s = plan.scratch(g);
    if plan.unpacked_gemms && need.dw {
        s.dy_transposed = vec![0.0; dyt_stride(g.k) * plan.columns()];
    }
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
                add_row_sums(&mut db, dy_image, pixels);
            }
        }
        // Each pass by its own algorithm: the pointwise GEMMs, or the tiles.
        let gemm =
            GradRequest { dx: need.dx && plan.dx == DxPath::Gemm, dw: need.dw && plan.dw == DwPath::Gemm, db: false };
        let tiles = GradRequest { dx: need.dx && !gemm.dx, dw: need.dw && !gemm.dw, db: false };
        let (dx_gemm, dx_tiles) = if gemm.dx { (dx_group, None) } else { (None, dx_group) };
        if gemm.dx || gemm.dw {
            backward_pointwise(plan.simd(), g, x_group, w, dy_group, dx_gemm, gemm, &mut dw);
        }
        if tiles.dx || tiles.dw {
            backward_group(g, plan, x_group, operands, dy_group, dx_tiles, tiles, &mut dw, &mut s);
        }
        first = last;
    }
    Partial { dw, db }
}

/// 1x1 stride-1 unpadded: dW += dY·Xᵀ and dX = Wᵀ·dY per image, no col.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename these
fn backward_pointwise(
    simd: Simd,
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
            packed::gemm(simd, mat(dy_image, vdy), mat(x_image, vx.t()), mat_mut(dw, vw), true);
        }
        if let Some(dx_group) = dx_group.as_deref_mut() {
            let dx_image = &mut dx_group[i * g.c * pixels..][..g.c * pixels];
            packed::gemm(simd, mat(w, vw.t()), mat(dy_image, vdy), mat_mut(dx_image, vx), false);
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
    operands: &Operands<'_>,
    dy_group: &[f32],
    mut dx_group: Option<&mut [f32]>,
    need: GradRequest,
    dw: &mut [f32],
    s: &mut Scratch,
) {
    let w = operands.w;
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
    let sources = if need.dw { inputs(g, plan.phased, x_group, &mut s.phased) } else { Vec::new() };
    let per_phased = phased_floats(g);
    if plan.subpixel_dx {
        // dX by input phase (subpixel.rs, on Wᵀ), for the whole group at
        // once; the tiles below then only compute dW.
        if let Some(dx_group) = dx_group.take() {
            subpixel::backward_dx(plan.simd(), g, operands.wt, dy_source, dy_stride, dx_group, &mut s.subpixel);
        }
    }
    if plan.phased && dx_group.is_some() {
        s.phased_dx.clear();
        s.phased_dx.resize(images * per_phased, 0.0);
    }
    let mut transposed_at = None;
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
            if plan.unpacked_gemms {
                // dWᵀ [rows, K] += col [rows, columns] · dYᵀ [columns, K],
                // dYᵀ transposed once per pixel block.
                let ld = dyt_stride(g.k);
                let dyt = &mut s.dy_transposed[..columns * ld];
                if transposed_at != Some(tile.p0) {
                    unpacked::transpose_strided(plan.simd(), &dy_source[tile.p0..], g.k, columns, dy_stride, dyt, ld);
                    transposed_at = Some(tile.p0);
                }
                let dwt = &mut dw[tile.c0 * taps * g.k..];
                let product = mat_mut(dwt, View::row_major(rows, g.k));
                unpacked::gemm(plan.simd(), mat(col, vcol), mat(dyt, View::strided(columns, g.k, ld)), product, true);
            } else {
                packed::gemm(
                    plan.simd(),
                    dy_tile,
                    mat(col, vcol.t()),
                    mat_mut(&mut dw[tile.c0 * taps..], vw_tile),
                    true,
                );
            }
        }
        if let Some(dx_group) = dx_group.as_deref_mut() {
            if plan.unpacked_gemms {
                let wt = mat(&operands.wt[tile.c0 * taps * g.k..], View::row_major(rows, g.k));
                unpacked::gemm(plan.simd(), wt, dy_tile, mat_mut(col, vcol), false);
            } else {
                packed::gemm(plan.simd(), mat(&w[tile.c0 * taps..], vw_tile.t()), dy_tile, mat_mut(col, vcol), false);
            }
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
