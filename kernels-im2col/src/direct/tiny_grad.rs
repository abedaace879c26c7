//! dW and db of the direct path (direct/tiny.rs) without im2col: lenet-c1's
//! backward with GradRequest::PARAMS.
//!
//! - dW [k, c·r·s] = Σₙ Σ_{oh, ow} dy[n, k, oh, ow] · x_pad[n, c, oh + r,
//!   ow + s]; db [k] = Σ dy, summed while dy is copied. For the direct
//!   path's geometries (stride 1, dilation 1, C·R·S ≤ 64) the GEMM behind
//!   the unfold path has a reduction of only C·R·S, so sgemm's packing and
//!   im2col's 25-fold copy of the input dominate.
//! - Vectorised over output columns: each image is copied once into a
//!   zero-padded plane whose rows are OW rounded up to 16 (+ S − 1) wide,
//!   and dy into rows of that rounded width, zero past OW, so 16-column
//!   chunks never need a mask and the zero lanes add nothing. Register
//!   block: 3 filters x 6 taps, eighteen 16-lane accumulators, per chunk 3
//!   loads of dy, 6 of x and 18 fused multiply-adds; the lanes are added
//!   lane-wise to the worker's partial and summed once per worker.
//! - Workers take runs of images with their own partial dW and db, summed
//!   at the end. dX (when requested) stays with conv/backward.rs.
//! - Variants: AVX-512F + FMA (the loop below), AVX2 + FMA in intrinsics
//!   (2 filters x a run of up to 6 taps of one input row, 8-lane chunks:
//!   at most 15 of the 16 ymm registers), picked through simd.rs's tokens,
//!   and portable.
//! - Checked against the reference by tests/against_naive.rs and
//!   harness/tests/im2col.rs (any geometry meeting `applies`); timed by
//!   examples/im2col_bench.rs (lenet-c1 backward).

use kernels_core::ConvGeometry;
use rayon::prelude::*;

use crate::simd::Simd;

use crate::conv::workers::TILE_FLOATS;

/// Lanes of one accumulator (an AVX-512 register of f32).
const LANES: usize = 16;
/// Filters per register block.
const FILTERS: usize = 3;
/// Taps per register block.
const TAPS: usize = 6;

/// The padded buffers' row widths: dy rows of OW rounded up to whole chunks,
/// x rows wide enough for the last chunk of the last tap.
fn widths(g: &ConvGeometry) -> (usize, usize) {
    let dy_width = g.ow.next_multiple_of(LANES);
    (dy_width, dy_width + g.s - 1)
}

/// Floats of one worker's scratch: the padded image and the padded dy.
fn scratch_floats(g: &ConvGeometry) -> usize {
    let (dy_width, x_width) = widths(g);
    g.c * (g.oh + g.r - 1) * x_width + g.k * g.oh * dy_width
}

/// Whether this kernel computes dW for `g`: the direct forward's geometries
/// (`crate::direct::tiny::applies`) whose per-worker scratch stays within a tile.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    crate::direct::tiny::applies(g) && scratch_floats(g) <= TILE_FLOATS
}

/// One image's operands, laid out by [`widths`].
struct Operands<'a> {
    g: &'a ConvGeometry,
    x_pad: &'a [f32],
    /// dy rows padded to `widths(g).0` (empty for the AVX2 kernel, which
    /// reads `dy`).
    dy_pad: &'a [f32],
    /// The image's dy as given, [k][oh][ow] (read by the AVX2 kernel only).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    dy: &'a [f32],
    /// Offset of each tap (c, r, s) in `x_pad`.
    tap_at: &'a [usize],
}

/// dw [k, c, r, s] and db [k]; `applies(g)` must hold.
pub(crate) fn backward_dw_db(simd: Simd, g: &ConvGeometry, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let taps = g.c * g.r * g.s;
    let (dy_width, x_width) = widths(g);
    let rows = g.oh + g.r - 1;
    let tap_at: Vec<usize> = (0..taps).map(|t| (t / (g.r * g.s) * rows + t / g.s % g.r) * x_width + t % g.s).collect();
    let (image_in, image_out) = (g.c * g.h * g.w, g.k * g.oh * g.ow);
    let per_worker = g.n.div_ceil(rayon::current_num_threads()).max(1);
    let (kernel, pads_dy) = select_kernel(simd);
    let (dw, db) = x
        .par_chunks(per_worker * image_in)
        .zip(dy.par_chunks(per_worker * image_out))
        .map(|(x_run, dy_run)| {
            // [k][tap][lane]: lanes summed once per worker, below.
            let mut dw_lanes = vec![0.0f32; g.k * taps * LANES];
            let mut db = vec![0.0f64; g.k];
            let mut x_pad = vec![0.0f32; g.c * rows * x_width];
            let mut dy_pad = if pads_dy { vec![0.0f32; g.k * g.oh * dy_width] } else { Vec::new() };
            for (x_image, dy_image) in x_run.chunks_exact(image_in).zip(dy_run.chunks_exact(image_out)) {
                pad_image(g, x_image, x_width, &mut x_pad);
                if pads_dy {
                    for (row, padded) in dy_image.chunks_exact(g.ow).zip(dy_pad.chunks_exact_mut(dy_width)) {
                        padded[..g.ow].copy_from_slice(row);
                    }
                }
                // One sum per filter's plane: per row (as before step 58)
                // it was 28 calls per plane on lenet-c1.
                for (k, plane) in dy_image.chunks_exact(g.oh * g.ow).enumerate() {
                    db[k] += crate::conv::workers::sum(plane) as f64;
                }
                let o = Operands { g, x_pad: &x_pad, dy_pad: &dy_pad, dy: dy_image, tap_at: &tap_at };
                kernel(&o, &mut dw_lanes);
            }
            let dw = dw_lanes.chunks_exact(LANES).map(|lanes| lanes.iter().sum::<f32>()).collect::<Vec<f32>>();
            (dw, db)
        })
        .reduce(
            || (vec![0.0f32; g.k * taps], vec![0.0f64; g.k]),
            |(mut dw, mut db), (dw_part, db_part)| {
                dw.iter_mut().zip(&dw_part).for_each(|(a, b)| *a += b);
                db.iter_mut().zip(&db_part).for_each(|(a, b)| *a += b);
                (dw, db)
            },
        );
    (dw, db.iter().map(|&v| v as f32).collect())
}

/// x_pad [c][oh + r − 1][x_width]: the image at (ph, pw), zeros elsewhere
/// (the zeros outside the image never change, but a fill is cheap next to
/// the kernel and keeps this independent of the previous image).
fn pad_image(g: &ConvGeometry, x_image: &[f32], x_width: usize, x_pad: &mut [f32]) {
    let [ph, pw] = g.params.padding;
    let rows = g.oh + g.r - 1;
    x_pad.fill(0.0);
    for c in 0..g.c {
        // Input rows past the last one any tap reaches are not copied.
        for ih in 0..g.h.min(rows - ph) {
            let at = (c * rows + ih + ph) * x_width + pw;
            let width = g.w.min(x_width - pw);
            x_pad[at..at + width].copy_from_slice(&x_image[(c * g.h + ih) * g.w..][..width]);
        }
    }
}

type DwKernel = fn(&Operands<'_>, &mut [f32]);

/// The variant for `simd`, and whether it reads the padded dy rows (the
/// AVX2 kernel reads dy as given, masking each row's last chunk).
fn select_kernel(simd: Simd) -> (DwKernel, bool) {
    crate::simd::count(simd.isa());
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512(_token) => (
            |o, dw| {
                // SAFETY: this pointer is made only in the arm holding an
                // Avx512Token, the proof that the CPU runs AVX-512F and FMA.
                unsafe { dw_avx512(o, dw) }
            },
            true,
        ),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(_token) => (
            |o, dw| {
                // SAFETY: this pointer is made only in the arm holding an
                // Avx2Token, the proof that the CPU runs AVX2 and FMA.
                unsafe { dw_avx2(o, dw) }
            },
            false,
        ),
        #[cfg(not(target_arch = "x86_64"))]
        Simd::Avx512(_) | Simd::Avx2(_) => (|o, dw| dw_image(o, dw, |a, b, c| a * b + c), true),
        Simd::Portable => (|o, dw| dw_image(o, dw, |a, b, c| a * b + c), true),
    }
}

/// # Safety
/// The CPU must run AVX-512F and FMA (the caller holds an `Avx512Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn dw_avx512(o: &Operands<'_>, dw: &mut [f32]) {
    dw_image(o, dw, f32::mul_add)
}

/// Filters and taps per AVX2 register block: 2 filters x a run of at most
/// 6 taps of one input row (c, r), eight-lane accumulators, with the two dy
/// vectors and one x vector: at most 15 of the 16 ymm registers.
#[cfg(target_arch = "x86_64")]
const AVX2_FILTERS: usize = 2;
#[cfg(target_arch = "x86_64")]
const AVX2_TAPS: usize = 6;

/// The AVX2 variant in intrinsics, walking the rows in 8-column chunks.
/// Its blocks are 2 filters x a run of consecutive taps s0 .. s0 + T of one
/// input row (c, r) (T ≤ 6; a 5x5 kernel's row is one run of 5), so the
/// run's x vectors sit at constant offsets 0 .. T − 1 from one pointer.
/// Step 55's version took any 6 taps, each at its own offset: LLVM kept
/// the six offsets in registers and on the stack and spilled accumulators
/// on every chunk, and a 25-tap kernel left a block of 1 tap (2 FMAs per 3
/// loads) (OPTIMISATION.md step 58). Lanes go into the first 8 of each
/// tap's 16 partial lanes (summed with the other 8 at the end, as for
/// AVX-512).
///
/// # Safety
/// The CPU must run AVX2 and FMA (the caller holds an `Avx2Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dw_avx2(o: &Operands<'_>, dw: &mut [f32]) {
    let g = o.g;
    let mut k0 = 0;
    while k0 < g.k {
        let filters = (g.k - k0).min(AVX2_FILTERS);
        for row in 0..g.c * g.r {
            let mut s0 = 0;
            while s0 < g.s {
                let run = (g.s - s0).min(AVX2_TAPS);
                let t0 = row * g.s + s0;
                // SAFETY: the caller holds the AVX2 + FMA proof; k0 +
                // filters ≤ K and the run's taps t0 .. t0 + run lie in one
                // row (c, r), at consecutive offsets (stride and dilation 1,
                // `tiny::applies`).
                unsafe {
                    match (filters, run) {
                        (2, 6) => dw_run_avx2::<2, 6>(o, k0, t0, dw),
                        (2, 5) => dw_run_avx2::<2, 5>(o, k0, t0, dw),
                        (2, 4) => dw_run_avx2::<2, 4>(o, k0, t0, dw),
                        (2, 3) => dw_run_avx2::<2, 3>(o, k0, t0, dw),
                        (2, 2) => dw_run_avx2::<2, 2>(o, k0, t0, dw),
                        (2, _) => dw_run_avx2::<2, 1>(o, k0, t0, dw),
                        (_, 6) => dw_run_avx2::<1, 6>(o, k0, t0, dw),
                        (_, 5) => dw_run_avx2::<1, 5>(o, k0, t0, dw),
                        (_, 4) => dw_run_avx2::<1, 4>(o, k0, t0, dw),
                        (_, 3) => dw_run_avx2::<1, 3>(o, k0, t0, dw),
                        (_, 2) => dw_run_avx2::<1, 2>(o, k0, t0, dw),
                        (_, _) => dw_run_avx2::<1, 1>(o, k0, t0, dw),
                    }
                }
                s0 += run;
            }
        }
        k0 += filters;
    }
}

/// dw [k0 .. k0 + F][t0 .. t0 + T][0 .. 8] += one image's dW for those
/// filters and a run of T consecutive taps of one input row.
///
/// # Safety
/// The CPU must run AVX2 and FMA; taps t0 .. t0 + T must sit at
/// consecutive offsets (`tap_at[t0 + j] = tap_at[t0] + j`, checked below).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dw_run_avx2<const F: usize, const T: usize>(o: &Operands<'_>, k0: usize, t0: usize, dw: &mut [f32]) {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_cmpgt_epi32, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_maskload_ps,
        _mm256_set1_epi32, _mm256_setr_epi32, _mm256_setzero_ps, _mm256_storeu_ps,
    };
    const HALF: usize = 8;
    let g = o.g;
    let (dy_width, x_width) = widths(g);
    let plane = g.oh * g.ow;
    let taps = o.tap_at.len();
    let first = o.tap_at[t0];
    // One check for every read below: the run's taps are consecutive; the
    // last chunk of the last row at the run's last tap ends inside x_pad
    // (chunks end at OW rounded up to 8 ≤ dy_width); the last filter's
    // plane lies inside dy.
    assert!((0..T).all(|j| o.tap_at[t0 + j] == first + j), "direct_grad: run of taps not consecutive");
    assert!(
        first + T - 1 + (g.oh - 1) * x_width + dy_width <= o.x_pad.len(),
        "direct_grad: taps past the padded image"
    );
    assert!((k0 + F) * plane <= o.dy.len(), "direct_grad: filters past dy");
    assert!(((k0 + F - 1) * taps + t0 + T) * LANES <= dw.len(), "direct_grad: filters past the partial");
    // The last chunk of a row holds OW mod 8 columns of dy (8 when OW is a
    // multiple of 8): its lanes past them are masked off (read as zero).
    let tail = g.ow - (g.ow.div_ceil(HALF) - 1) * HALF;
    let last_column = g.ow - tail;
    let tail_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    let mut acc: [[__m256; T]; F] = [[_mm256_setzero_ps(); T]; F];
    for oh in 0..g.oh {
        // SAFETY: both row starts lie inside their buffers (asserted above).
        let (x_row, dy_row) = unsafe { (o.x_pad.as_ptr().add(first + oh * x_width), o.dy.as_ptr().add(oh * g.ow)) };
        for column in (0..g.ow).step_by(HALF) {
            // SAFETY: a full chunk (column < last_column) ends at column + 8
            // ≤ OW inside its row of dy, (k0 + f)·plane + oh·OW + OW ≤ (k0 +
            // F)·plane ≤ dy.len(); the last chunk's masked lanes read only
            // its `tail` columns, inside the row. x: first + j + oh·x_width
            // + column + 8 ≤ first + T − 1 + (oh − 1)·x_width + dy_width ≤
            // x_pad.len() (asserted above), as column + 8 ≤ OW rounded up
            // to 8 ≤ dy_width.
            unsafe {
                let dv: [__m256; F] = std::array::from_fn(|f| {
                    let at = dy_row.add((k0 + f) * plane + column);
                    if column < last_column { _mm256_loadu_ps(at) } else { _mm256_maskload_ps(at, tail_mask) }
                });
                for t in 0..T {
                    let xv = _mm256_loadu_ps(x_row.add(column + t));
                    for (acc_f, &d) in acc.iter_mut().zip(&dv) {
                        acc_f[t] = _mm256_fmadd_ps(xv, d, acc_f[t]);
                    }
                }
            }
        }
    }
    for (f, acc_f) in acc.iter().enumerate() {
        for (t, &lanes) in acc_f.iter().enumerate() {
            // SAFETY: ((k0 + f)·taps + t0 + t + 1)·16 ≤ dw.len() (asserted
            // above).
            unsafe {
                let out = dw.as_mut_ptr().add(((k0 + f) * taps + t0 + t) * LANES);
                _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), lanes));
            }
        }
    }
}

/// dw [k][tap][lane] += one image's dW, blocks of 3 filters (then 1) by 6 taps
/// (then 1): blocks never overlap, since they accumulate.
#[inline(always)]
fn dw_image(o: &Operands<'_>, dw: &mut [f32], fma: impl Fn(f32, f32, f32) -> f32 + Copy) {
    let (k, taps) = (o.g.k, o.tap_at.len());
    let mut k0 = 0;
    while k0 < k {
        let filters = if k0 + FILTERS <= k { FILTERS } else { 1 };
        let mut t0 = 0;
        while t0 < taps {
            match (filters, t0 + TAPS <= taps) {
                (FILTERS, true) => dw_block::<FILTERS, TAPS>(o, k0, t0, dw, fma),
                (FILTERS, false) => dw_block::<FILTERS, 1>(o, k0, t0, dw, fma),
                (_, true) => dw_block::<1, TAPS>(o, k0, t0, dw, fma),
                (_, false) => dw_block::<1, 1>(o, k0, t0, dw, fma),
            }
            t0 += if t0 + TAPS <= taps { TAPS } else { 1 };
        }
        k0 += filters;
    }
}

#[inline(always)]
fn dw_block<const F: usize, const T: usize>(
    o: &Operands<'_>,
    k0: usize,
    t0: usize,
    dw: &mut [f32],
    fma: impl Fn(f32, f32, f32) -> f32,
) {
    let g = o.g;
    let (dy_width, x_width) = widths(g);
    let plane = g.oh * dy_width;
    let at: [usize; T] = std::array::from_fn(|t| o.tap_at[t0 + t]);
    // One check for every read below: the last chunk of the last row at the
    // farthest tap, and the last filter's last chunk.
    let last_tap = at.iter().copied().max().unwrap_or(0);
    assert!(last_tap + (g.oh - 1) * x_width + dy_width <= o.x_pad.len(), "direct_grad: taps past the padded image");
    assert!((k0 + F) * plane <= o.dy_pad.len(), "direct_grad: filters past the padded dy");
    let mut acc = [[[0.0f32; LANES]; T]; F];
    // One flat loop over the chunks of all rows (dy rows are contiguous, x
    // rows jump by the extra S − 1 columns): with nested row and column
    // loops the compiler stored every accumulator back to the stack on
    // each chunk.
    let (mut x_at, mut column) = (0, 0);
    for chunk in (0..g.oh * dy_width).step_by(LANES) {
        let dv: [[f32; LANES]; F] = std::array::from_fn(|f| {
            // SAFETY: (k0 + f) * plane + chunk + LANES ≤ (k0 + F) * plane ≤
            // dy_pad.len() (asserted above).
            unsafe { o.dy_pad.as_ptr().add((k0 + f) * plane + chunk).cast::<[f32; LANES]>().read_unaligned() }
        });
        for (t, &a) in at.iter().enumerate() {
            // SAFETY: x_at = oh * x_width + j for the chunk's row oh and
            // column j, so a + x_at + LANES ≤ last_tap + (oh − 1) * x_width
            // + dy_width ≤ x_pad.len() (asserted above).
            let xv = unsafe { o.x_pad.as_ptr().add(a + x_at).cast::<[f32; LANES]>().read_unaligned() };
            for (acc_f, d) in acc.iter_mut().zip(&dv) {
                for ((lane, &x), &d) in acc_f[t].iter_mut().zip(&xv).zip(d) {
                    *lane = fma(x, d, *lane);
                }
            }
        }
        column += LANES;
        x_at += LANES;
        if column == dy_width {
            column = 0;
            x_at += x_width - dy_width;
        }
    }
    // Lane-wise into the worker's partial: summing the lanes here instead
    // made the compiler vectorise across accumulators (2-lane shuffles and
    // spills) rather than along the 16 lanes.
    let taps = o.tap_at.len();
    for (f, acc_f) in acc.iter().enumerate() {
        for (t, lanes) in acc_f.iter().enumerate() {
            let out = &mut dw[((k0 + f) * taps + t0 + t) * LANES..][..LANES];
            out.iter_mut().zip(lanes).for_each(|(o, &v)| *o += v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels_core::{Conv2d, SplitMix64};

    #[test]
    fn portable_and_selected_kernels_match_the_definition() {
        // 7 filters (blocks 3, 3, 1), 2x3x2 = 12 taps (two blocks of 6),
        // padding 1, OW = 16 (one chunk, no zero lanes) and OH = 9 rows.
        let g = ConvGeometry::from_dims([3, 2, 9, 15], [7, 3, 2], &Conv2d::new(1, 1)).unwrap();
        assert!(applies(&g));
        let mut rng = SplitMix64::new(11);
        let x: Vec<f32> = (0..3 * 2 * 9 * 15).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let dy: Vec<f32> = (0..3 * 7 * g.oh * g.ow).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let taps = 2 * 3 * 2;
        for isa in crate::simd::Isa::supported() {
            let (dw, db) = backward_dw_db(Simd::new(isa), &g, &x, &dy);
            for k in 0..7 {
                let expect_db: f32 = dy.chunks_exact(g.oh * g.ow).skip(k).step_by(7).flatten().sum();
                assert!((db[k] - expect_db).abs() < 1e-4, "db[{k}] {} vs {expect_db}", db[k]);
                for t in 0..taps {
                    let (c, r, s) = (t / 6, t / 2 % 3, t % 2);
                    let mut expect = 0.0f32;
                    for n in 0..3 {
                        for oh in 0..g.oh {
                            for ow in 0..g.ow {
                                let (ih, iw) = ((oh + r) as isize - 1, (ow + s) as isize - 1);
                                if (0..9).contains(&ih) && (0..15).contains(&iw) {
                                    let xv = x[((n * 2 + c) * 9 + ih as usize) * 15 + iw as usize];
                                    expect += dy[((n * 7 + k) * g.oh + oh) * g.ow + ow] * xv;
                                }
                            }
                        }
                    }
                    assert!(
                        (dw[k * taps + t] - expect).abs() < 1e-4,
                        "{isa}: dw[{k}][{t}] {} vs {expect}",
                        dw[k * taps + t]
                    );
                }
            }
        }
        // The portable variant on the same padded operands as the selected one.
        let (dy_width, x_width) = widths(&g);
        let rows = g.oh + g.r - 1;
        let tap_at: Vec<usize> = (0..taps).map(|t| (t / 6 * rows + t / 2 % 3) * x_width + t % 2).collect();
        let mut x_pad = vec![0.0f32; 2 * rows * x_width];
        pad_image(&g, &x[..2 * 9 * 15], x_width, &mut x_pad);
        let mut dy_pad = vec![0.0f32; 7 * g.oh * dy_width];
        for (row, padded) in dy[..7 * g.oh * g.ow].chunks_exact(g.ow).zip(dy_pad.chunks_exact_mut(dy_width)) {
            padded[..g.ow].copy_from_slice(row);
        }
        let o = Operands { g: &g, x_pad: &x_pad, dy_pad: &dy_pad, dy: &dy[..7 * g.oh * g.ow], tap_at: &tap_at };
        let mut portable = vec![0.0f32; 7 * taps * LANES];
        dw_image(&o, &mut portable, |a, b, c| a * b + c);
        for isa in crate::simd::Isa::supported() {
            let mut selected = vec![0.0f32; 7 * taps * LANES];
            select_kernel(Simd::new(isa)).0(&o, &mut selected);
            // Per (filter, tap), the sum of its lanes: the AVX2 kernel
            // fills 8 of the 16, the others all 16.
            let sums = |lanes: &[f32]| lanes.chunks_exact(LANES).map(|l| l.iter().sum::<f32>()).collect::<Vec<f32>>();
            for (i, (p, s)) in sums(&portable).iter().zip(&sums(&selected)).enumerate() {
                assert!((p - s).abs() <= 1e-4 * (1.0 + p.abs()), "{isa}: [{i}] portable {p} selected {s}");
            }
        }
    }
}

#[cfg(test)]
mod run_tests {
    use super::*;
    use kernels_core::{Conv2d, SplitMix64};

    /// dW and db at every ISA against the f64 definition on geometries the
    /// AVX2 kernel's runs and row tails cover: OW = 19 and 17 (last chunks
    /// of 3 and 1 columns), S = 5 (one run per row) and 7 (runs of 6 and
    /// 1), an odd K (a block of one filter), two channels.
    #[test]
    fn runs_and_row_tails_match_the_definition() {
        for (dims, filter, pad) in [([3, 2, 7, 19], [5, 2, 5], 2), ([2, 1, 9, 17], [3, 7, 7], 3)] {
            let g = ConvGeometry::from_dims(dims, filter, &Conv2d::new(1, pad)).unwrap();
            assert!(applies(&g), "{g:?}");
            let [n, c, h, w] = dims;
            let [k, r, s] = filter;
            let mut rng = SplitMix64::new(5);
            let x: Vec<f32> = (0..n * c * h * w).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
            let dy: Vec<f32> = (0..n * k * g.oh * g.ow).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
            for isa in crate::simd::Isa::supported() {
                let (dw, db) = backward_dw_db(Simd::new(isa), &g, &x, &dy);
                for kk in 0..k {
                    let mut expect_db = 0.0f64;
                    for nn in 0..n {
                        for p in 0..g.oh * g.ow {
                            expect_db += f64::from(dy[(nn * k + kk) * g.oh * g.ow + p]);
                        }
                    }
                    assert!((f64::from(db[kk]) - expect_db).abs() < 1e-4, "{isa}: db[{kk}]");
                    for t in 0..c * r * s {
                        let (cc, rr, ss) = (t / (r * s), t / s % r, t % s);
                        let mut expect = 0.0f64;
                        for nn in 0..n {
                            for oh in 0..g.oh {
                                for ow in 0..g.ow {
                                    let (ih, iw) =
                                        ((oh + rr) as isize - pad as isize, (ow + ss) as isize - pad as isize);
                                    if (0..h as isize).contains(&ih) && (0..w as isize).contains(&iw) {
                                        let xv = x[((nn * c + cc) * h + ih as usize) * w + iw as usize];
                                        let d = dy[((nn * k + kk) * g.oh + oh) * g.ow + ow];
                                        expect += f64::from(xv) * f64::from(d);
                                    }
                                }
                            }
                        }
                        let got = f64::from(dw[kk * c * r * s + t]);
                        assert!((got - expect).abs() < 1e-4, "{isa} {dims:?}: dw[{kk}][{t}] {got} vs {expect}");
                    }
                }
            }
        }
    }
}
