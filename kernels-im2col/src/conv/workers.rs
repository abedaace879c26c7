//! What every conv algorithm's workers share: scratch buffers, the split
//! of a batch into per-worker runs with partial dW / db summed at the end,
//! row sums, and the tile size the scratch is planned around.
//!
//! - Everything here is a leaf: it imports only unfold.rs (phased inputs)
//!   and subpixel.rs (its buffers), never the planner or an algorithm, so
//!   conv/ (entry and plan) and the algorithms can all depend on it without
//!   a cycle.
//! - Checked through every conv test (tests/against_naive.rs,
//!   harness/tests/im2col.rs).

use kernels_core::ConvGeometry;
use rayon::prelude::*;

use crate::unfold::{Input, phase, phased_floats};

/// Default target col tile size in floats: 512 KiB, half of this machine's
/// 1 MiB L2, so the tile survives until sgemm packs it.
pub const TILE_FLOATS: usize = 1 << 17;

/// Gradients computed on the host, each present when requested.
pub(crate) struct HostGrads {
    pub dx: Option<Vec<f32>>,
    pub dw: Option<Vec<f32>>,
    pub db: Option<Vec<f32>>,
}

/// One worker's buffers: a col tile, for multi-image tiles the gathered
/// [k, images x pixels] output or output gradient, and phased images.
pub(crate) struct Scratch {
    pub col: Vec<f32>,
    pub gather: Vec<f32>,
    pub phased: Vec<f32>,
    /// Backward: the group's dx, phased, when the plan phases.
    pub phased_dx: Vec<f32>,
    /// Backward through the unpacked GEMM: one pixel block's dYᵀ [columns, K].
    pub dy_transposed: Vec<f32>,
    /// Backward: subpixel.rs's shifted dY and phase planes.
    pub subpixel: crate::subpixel::Buffers,
}

impl Scratch {
    /// Buffers of the given sizes in floats (`ConvPlan::scratch` sizes
    /// them for a plan); the backward-only ones start empty.
    pub fn new(col: usize, gather: usize, phased: usize) -> Self {
        Self {
            col: vec![0.0; col],
            gather: vec![0.0; gather],
            phased: vec![0.0; phased],
            phased_dx: Vec::new(),
            dy_transposed: Vec::new(),
            subpixel: Default::default(),
        }
    }
}

/// The inputs im2col reads for a group of images: phased copies of them,
/// made once here for all their tiles, when `phased` (the plan's choice).
pub(crate) fn inputs<'a>(
    g: &ConvGeometry,
    phased_plan: bool,
    x_group: &'a [f32],
    phased: &'a mut [f32],
) -> Vec<Input<'a>> {
    let image_in = g.c * g.h * g.w;
    if !phased_plan {
        return x_group.chunks_exact(image_in).map(Input::Plain).collect();
    }
    let per_image = phased_floats(g);
    let phased = &mut phased[..x_group.len() / image_in * per_image];
    for (x_image, out) in x_group.chunks_exact(image_in).zip(phased.chunks_exact_mut(per_image)) {
        phase(g, x_image, out);
    }
    phased.chunks_exact(per_image).map(Input::Phased).collect()
}

/// One worker's share of dW (empty when not requested; winograd/mod.rs puts
/// its dU here) and db.
pub(crate) struct Partial {
    pub dw: Vec<f32>,
    pub db: Vec<f64>,
}

/// Splits the batch into one contiguous run of images per worker, runs
/// `work(images, dx_run)` on each in parallel (`dx_run`: the run's part of
/// a zeroed dx, when `need_dx`), and sums the partials: returns dx, the sum
/// of the partial dW (`dw_len` floats) and the sum of the partial db.
pub(crate) fn over_image_runs(
    g: &ConvGeometry,
    need_dx: bool,
    dw_len: usize,
    work: impl Fn(std::ops::Range<usize>, Option<&mut [f32]>) -> Partial + Sync,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f64>) {
    let workers = rayon::current_num_threads().min(g.n);
    let images_per_worker = g.n.div_ceil(workers);
    let workers = g.n.div_ceil(images_per_worker);
    let image_in = g.c * g.h * g.w;
    let mut dx = need_dx.then(|| vec![0.0f32; g.n * image_in]);
    let dx_runs: Vec<Option<&mut [f32]>> = match dx.as_mut() {
        Some(dx) => dx.chunks_mut(images_per_worker * image_in).map(Some).collect(),
        None => (0..workers).map(|_| None).collect(),
    };
    let partials: Vec<Partial> = dx_runs
        .into_par_iter()
        .enumerate()
        .map(|(worker, dx_run)| {
            let first = worker * images_per_worker;
            work(first..(first + images_per_worker).min(g.n), dx_run)
        })
        .collect();
    let mut dw = vec![0.0f32; dw_len];
    let mut db = vec![0.0f64; g.k];
    for partial in &partials {
        dw.iter_mut().zip(&partial.dw).for_each(|(total, part)| *total += part);
        db.iter_mut().zip(&partial.db).for_each(|(total, part)| *total += part);
    }
    (dx, dw, db)
}

/// db [k] += the sum of each of one image's K planes of dy.
pub(crate) fn add_row_sums(db: &mut [f64], dy_image: &[f32], pixels: usize) {
    for (total, row) in db.iter_mut().zip(dy_image.chunks_exact(pixels)) {
        *total += sum(row) as f64;
    }
}

/// Row stride of dYᵀ [columns, K], the dW GEMM's B: K rounded up to an
/// odd number of cache lines, so consecutive rows fall in different L1
/// sets (K = 256 as 1 KiB rows put a 32-column panel of B into 8 of the 64
/// sets; OPTIMISATION.md step 46).
pub(crate) fn dyt_stride(k: usize) -> usize {
    let lines = k.div_ceil(16);
    16 * if lines.is_multiple_of(2) { lines + 1 } else { lines }
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
