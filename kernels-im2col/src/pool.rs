//! Max and average pooling, forward and backward, as direct loops.
//!
//! - y [n, c, oh, ow] from x [n, c, h, w]; dx [n, c, h, w] from dy.
//! - Max: padding never wins, ties go to the first element in row-major
//!   window order (only a strictly larger value replaces the winner);
//!   backward re-derives the winner from x and routes dy there. Avg: divides
//!   by the full window, padding included; backward spreads dy / window over
//!   the real elements. Overlapping windows accumulate.
//! - Why not im2col: a pooling window is a handful of loads per output, so
//!   unfolding it would only add a full write and read of a window-times
//!   larger buffer. Each (n, c) plane is independent: rayon splits planes.
//! - Separable: per output row, the window's input rows are combined first
//!   (max or sum of whole rows, which vectorises), then each output reduces
//!   its few columns of the combined row; backward mirrors it. That turns
//!   wh·ww scalar steps per output into wh vector steps per input column
//!   plus ww per output. Windows are clipped to the real input once per row
//!   and column, so no loop tests for padding.
//! - Fast paths (OPTIMISATION.md steps 18, 21, 23) for 2x2 stride 2
//!   unpadded pooling: forward goes window by window; backward writes each
//!   dx element once instead of zeroing and scattering, max in two passes
//!   per row (x read, then dx written) to avoid 4 KiB aliasing between x
//!   and dx. Backward at stride 2 with windows 2-3 columns wide (resnet-p0,
//!   step 55): separable with the winner's row tracked, dx rows through a
//!   small ring, each dx element written once. Every other geometry takes
//!   the separable path into a zeroed dx.
//! - Max backward at AVX-512 and AVX2 for 2x2 stride 2 unpadded (lenet-p1)
//!   and 3x3 stride 2 padding 1 (resnet-p0): register kernels (step 57)
//!   that load each window row's x once per vector of windows, split it
//!   into even and odd columns by permutes, pick each window's winner by a
//!   select chain over its candidates as whole vectors (keeping a position
//!   code), and write every dx row once from registers (dy masked by code,
//!   interleaved back): no scratch passes, ring or memmove. The NaN rule is
//!   in the chain, so these need no NaN redo.
//! - NaN (a NaN in a max window wins, the last one in row-major order):
//!   the fast backward paths test for it in the pass that reads x and redo
//!   only the rows that hold one with the exact rule; the forward scans
//!   each plane first (step 51).
//! - The backward's plane kernels are built for AVX-512, AVX2 and baseline
//!   and picked by the backend's `Simd` token (simd.rs).
//! - Checked against the reference in harness/tests/im2col.rs and the unit
//!   tests below (every backward path at every ISA, with ties and NaNs);
//!   timed by examples/im2col_bench.rs (POOL_SUITE); tiling cases in
//!   tests/against_naive.rs.

use std::mem::MaybeUninit;
use std::ops::Range;

use kernels_core::{PoolGeometry, PoolKind, max_pool_takes};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::lanes::lane_range;
use crate::simd::Simd;

/// Input indices [lo, hi) that window `o` of one axis covers, clipped to the
/// real input (padding excluded).
fn window_range(o: usize, window: usize, stride: usize, pad: usize, len: usize) -> Range<usize> {
    let start = o * stride;
    let lo = start.saturating_sub(pad);
    let hi = (start + window).saturating_sub(pad).min(len);
    lo..hi
}

/// Clipped column ranges of every output column of a plane.
fn column_ranges(g: &PoolGeometry) -> Vec<Range<usize>> {
    let p = g.params;
    (0..g.ow).map(|o| window_range(o, p.window[1], p.stride[1], p.padding[1], g.w)).collect()
}

/// The plain max-pool rule, what [`max_pool_takes`] reduces to on a plane
/// without NaN. Each max loop below is generic over its rule and runs with
/// this one unless [`has_nan`] finds a NaN in the plane: the NaN-aware rule
/// everywhere measured 2-4x slower on max pooling (its two compares do not
/// fold into one max instruction), while the NaN scan is one vectorised
/// read of the plane.
#[inline(always)]
fn strictly_larger(candidate: f32, best: f32) -> bool {
    candidate > best
}

/// Whether a plane holds a NaN (no early exit, so it vectorises).
fn has_nan(plane: &[f32]) -> bool {
    plane.iter().fold(false, |any, v| any | v.is_nan())
}

/// y [n, c, oh, ow]: per output row, the window's input rows are first
/// combined column by column (a vectorised max or sum over whole rows), then
/// each output reduces its few columns of that combined row.
pub(crate) fn forward(g: &PoolGeometry, x: &[f32]) -> Vec<f32> {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    let p = g.params;
    let mut y = vec![0.0f32; g.n * g.c * plane_out];
    let planes = y.par_chunks_mut(plane_out).zip(x.par_chunks(plane_in));
    if p.window == [2, 2] && p.stride == [2, 2] && p.padding == [0, 0] {
        planes.for_each(|(y_plane, x_plane)| {
            if p.kind == PoolKind::Max && has_nan(x_plane) {
                forward_2x2_plane(g, x_plane, y_plane, max_pool_takes)
            } else {
                forward_2x2_plane(g, x_plane, y_plane, strictly_larger)
            }
        });
        return y;
    }
    // Fallback: any other window, stride or padding.
    let cols = column_ranges(g);
    planes.for_each_init(
        || vec![0.0f32; g.w],
        |combined, (y_plane, x_plane)| {
            if p.kind == PoolKind::Max && has_nan(x_plane) {
                forward_plane(g, &cols, combined, x_plane, y_plane, max_pool_takes)
            } else {
                forward_plane(g, &cols, combined, x_plane, y_plane, strictly_larger)
            }
        },
    );
    y
}

/// One plane of the general forward; `takes` is the max rule (see
/// [`strictly_larger`]).
fn forward_plane(
    g: &PoolGeometry,
    cols: &[Range<usize>],
    combined: &mut [f32],
    x_plane: &[f32],
    y_plane: &mut [f32],
    takes: impl Fn(f32, f32) -> bool + Copy,
) {
    let p = g.params;
    let inv_window = 1.0 / g.window_len() as f32;
    for (oh, y_row) in y_plane.chunks_exact_mut(g.ow).enumerate() {
        let rows = window_range(oh, p.window[0], p.stride[0], p.padding[0], g.h);
        combined.copy_from_slice(&x_plane[rows.start * g.w..][..g.w]);
        for ih in rows.start + 1..rows.end {
            let row = &x_plane[ih * g.w..][..g.w];
            match p.kind {
                PoolKind::Max => {
                    combined.iter_mut().zip(row).for_each(|(m, &v)| *m = if takes(v, *m) { v } else { *m })
                }
                PoolKind::Avg => combined.iter_mut().zip(row).for_each(|(m, &v)| *m += v),
            }
        }
        for (out, cols) in y_row.iter_mut().zip(cols) {
            let window = &combined[cols.clone()];
            *out = match p.kind {
                PoolKind::Max => window[1..].iter().fold(window[0], |m, &v| if takes(v, m) { v } else { m }),
                PoolKind::Avg => window.iter().sum::<f32>() * inv_window,
            };
        }
    }
}

/// Forward of 2x2 stride 2 unpadded pooling (LeNet's), window by window
/// without the separable pass's clipped ranges. Max uses the same
/// first-wins comparisons as the general path (as branch-free selects);
/// avg sums in the general path's order, (a + c) + (b + d).
fn forward_2x2_plane(g: &PoolGeometry, x: &[f32], y: &mut [f32], takes: impl Fn(f32, f32) -> bool + Copy) {
    let width = 2 * g.ow;
    for (oh, y_row) in y.chunks_exact_mut(g.ow).enumerate() {
        let x_top = &x[2 * oh * g.w..][..width];
        let x_bottom = &x[(2 * oh + 1) * g.w..][..width];
        let windows = x_top.chunks_exact(2).zip(x_bottom.chunks_exact(2));
        match g.params.kind {
            PoolKind::Max => {
                for (out, (top, bottom)) in y_row.iter_mut().zip(windows) {
                    let m = select(mask(takes(top[1], top[0])), top[1], top[0]);
                    let m = select(mask(takes(bottom[0], m)), bottom[0], m);
                    *out = select(mask(takes(bottom[1], m)), bottom[1], m);
                }
            }
            PoolKind::Avg => {
                for (out, (top, bottom)) in y_row.iter_mut().zip(windows) {
                    *out = ((top[0] + bottom[0]) + (top[1] + bottom[1])) * 0.25;
                }
            }
        }
    }
}

/// Flat index (within the plane) of a window's winner in row-major order
/// under `takes` (see [`strictly_larger`]): the first largest element, or
/// the last NaN.
#[inline]
fn argmax(
    plane: &[f32],
    width: usize,
    rows: Range<usize>,
    cols: &Range<usize>,
    takes: impl Fn(f32, f32) -> bool,
) -> usize {
    let mut best = rows.start * width + cols.start;
    let mut best_value = plane[best];
    for ih in rows {
        let row = &plane[ih * width..][..cols.end];
        for iw in cols.clone() {
            if takes(row[iw], best_value) {
                best_value = row[iw];
                best = ih * width + iw;
            }
        }
    }
    best
}

/// dx [n, c, h, w] from x and dy [n, c, oh, ow]. Max: each dy goes to its
/// window's first largest element (the last NaN where there is one). Avg:
/// dy / window spread over the window's real elements.
///
/// - 2x2 stride 2 unpadded ([`windows_tile`]) and stride 2 with windows 2
///   or 3 columns wide ([`stride2_applies`]: resnet-p0's 3x3/2 pad 1) write
///   every dx element exactly once into an uninitialised vector; each
///   other geometry accumulates into a zeroed one. Max at 2x2/2 and
///   3x3/2 pad 1 runs the register kernels at AVX-512 and AVX2
///   ([`select_max_2x2`], [`select_max_stride2`]).
/// - `simd` picks the AVX-512, AVX2 or portable build of the same loops
///   (they are written to vectorise; the tokens let them use the wide
///   registers on a binary built for baseline x86-64).
pub(crate) fn backward(simd: Simd, g: &PoolGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    let kernel = if windows_tile(g) {
        Some(match g.params.kind {
            PoolKind::Max => select_max_2x2(simd),
            PoolKind::Avg => select_avg_2x2(simd),
        })
    } else if stride2_applies(g) {
        Some(match g.params.kind {
            PoolKind::Max => select_max_stride2(simd, g),
            PoolKind::Avg => select_avg_stride2(simd),
        })
    } else {
        None
    };
    if let Some(kernel) = kernel {
        crate::simd::count(simd.isa());
        let len = x.len();
        let mut dx: Vec<f32> = Vec::with_capacity(len);
        let planes = dx.spare_capacity_mut()[..len]
            .par_chunks_mut(plane_in)
            .zip(x.par_chunks(plane_in))
            .zip(dy.par_chunks(plane_out));
        planes.for_each_init(
            || Scratch::new(g),
            |scratch, ((dx_plane, x_plane), dy_plane)| kernel(g, scratch, x_plane, dy_plane, dx_plane),
        );
        // SAFETY: the first `len` elements were written: the planes cover
        // them (x.len() = n·c·h·w, checked by the caller's shapes), and
        // each plane kernel writes every element of its plane (2x2: every
        // covered pair of rows and columns, then the uncovered row and
        // column as zeros; stride 2: `RowRing::flush` writes rows 0..h
        // in order, each once; 3x3 register kernels: rows 2k − 1 and 2k
        // for every output row k, then row 2·oh − 1 when below h, which is
        // every row, all columns < w).
        unsafe { dx.set_len(len) };
        return dx;
    }
    // Fallback: every other geometry accumulates into a zeroed dx.
    let p = g.params;
    let inv_window = 1.0 / g.window_len() as f32;
    let cols = column_ranges(g);
    let mut dx = vec![0.0f32; x.len()];
    let planes = dx.par_chunks_mut(plane_in).zip(x.par_chunks(plane_in)).zip(dy.par_chunks(plane_out));
    planes.for_each_init(
        || vec![0.0f32; g.w],
        |combined, ((dx_plane, x_plane), dy_plane)| {
            let nan = p.kind == PoolKind::Max && has_nan(x_plane);
            for (oh, dy_row) in dy_plane.chunks_exact(g.ow).enumerate() {
                let rows = window_range(oh, p.window[0], p.stride[0], p.padding[0], g.h);
                match p.kind {
                    PoolKind::Max => {
                        for (&grad, cols) in dy_row.iter().zip(&cols) {
                            let winner = if nan {
                                argmax(x_plane, g.w, rows.clone(), cols, max_pool_takes)
                            } else {
                                argmax(x_plane, g.w, rows.clone(), cols, strictly_larger)
                            };
                            dx_plane[winner] += grad;
                        }
                    }
                    PoolKind::Avg => {
                        combined.fill(0.0);
                        for (&grad, cols) in dy_row.iter().zip(&cols) {
                            let share = grad * inv_window;
                            combined[cols.clone()].iter_mut().for_each(|c| *c += share);
                        }
                        for ih in rows {
                            let row = &mut dx_plane[ih * g.w..][..g.w];
                            row.iter_mut().zip(combined.iter()).for_each(|(d, &c)| *d += c);
                        }
                    }
                }
            }
        },
    );
    dx
}

/// Whether [`backward_tiled`] takes `g`: 2x2 windows, stride 2, no padding
/// (LeNet's pools). Then windows neither overlap nor meet padding, so every
/// dx element belongs to at most one window and is written once instead of
/// accumulated. (A general tiling version, any window with stride ≥ window,
/// lost its avg speed-up to a memset call per window row and was dropped.)
pub(crate) fn windows_tile(g: &PoolGeometry) -> bool {
    let p = g.params;
    p.padding == [0, 0] && p.window == [2, 2] && p.stride == [2, 2]
}

/// Whether the stride-2 backward ([`max_stride2_plane`],
/// [`avg_stride2_plane`]) takes `g`: stride 2 both ways, windows 2 or 3
/// columns wide (any height; padding is at most half the window, so 0 or
/// 1), and not a [`windows_tile`] geometry (which has its own loop).
pub(crate) fn stride2_applies(g: &PoolGeometry) -> bool {
    let p = g.params;
    p.stride == [2, 2] && (p.window[1] == 2 || p.window[1] == 3) && !windows_tile(g)
}

/// One worker's scratch for the stride-2 backward, sized for one geometry.
///
/// Columns are held in a padded layout: padded column `pw + iw` is input
/// column iw, and window `o`'s columns are padded columns 2o .. 2o + ww, so
/// split into even and odd padded columns, window o reads even[o], odd[o]
/// and (3 wide) even[o + 1]: contiguous vectors, no gathers.
struct Scratch {
    /// Per padded column: the window rows' max (or, for avg, the summed
    /// share), and the window-relative row it came from; [2 · pairs].
    col: Vec<f32>,
    row: Vec<f32>,
    /// `col` and `row` split into even and odd padded columns; [pairs].
    even: Vec<f32>,
    odd: Vec<f32>,
    even_row: Vec<f32>,
    odd_row: Vec<f32>,
    /// Per output column: the winner's offset in the ring, as a float and
    /// as an index.
    win_col: Vec<f32>,
    win_row: Vec<f32>,
    /// One padded row of dy spread over its columns (the max and avg
    /// backwards' interleaved row; apart from `col`, whose -inf padding
    /// lanes the max pass keeps); [2 · pairs].
    spread: Vec<f32>,
    /// dx rows still receiving contributions, [window rows][w] (`RowRing`).
    ring: Vec<f32>,
    /// Clipped column range of each output column (the NaN fallback).
    cols: Vec<Range<usize>>,
    /// Two rows of window position codes for the 3x3 register kernels
    /// ([`code_row_len`] each; those kernels are x86 only).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    codes: Vec<f32>,
}

impl Scratch {
    fn new(g: &PoolGeometry) -> Self {
        if !stride2_applies(g) {
            return Self {
                col: Vec::new(),
                row: Vec::new(),
                even: Vec::new(),
                odd: Vec::new(),
                even_row: Vec::new(),
                odd_row: Vec::new(),
                win_col: Vec::new(),
                win_row: Vec::new(),
                spread: Vec::new(),
                ring: Vec::new(),
                cols: Vec::new(),
                codes: Vec::new(),
            };
        }
        let pairs = g.ow + 1;
        // Padding lanes: -inf from row +inf loses every comparison against
        // a real element (larger value, or equal value from an earlier
        // row), so padding never wins, as the contract says; avg never
        // reads them.
        Self {
            col: vec![f32::NEG_INFINITY; 2 * pairs],
            row: vec![f32::INFINITY; 2 * pairs],
            even: vec![0.0; pairs],
            odd: vec![0.0; pairs],
            even_row: vec![0.0; pairs],
            odd_row: vec![0.0; pairs],
            win_col: vec![0.0; g.ow],
            win_row: vec![0.0; g.ow],
            spread: vec![0.0; 2 * pairs],
            ring: vec![0.0; g.params.window[0] * g.w],
            cols: column_ranges(g),
            codes: vec![0.0; 2 * code_row_len(g.ow)],
        }
    }
}

/// A plane kernel of the backward: dx_plane from x_plane and dy_plane,
/// writing every element of dx_plane.
type PlaneKernel = fn(&PoolGeometry, &mut Scratch, &[f32], &[f32], &mut [MaybeUninit<f32>]);

/// `select_NAME(simd)`: the plane kernel `$body` built for the ISA `simd`
/// holds (the same loops; the wider builds let LLVM use ymm / zmm
/// registers).
macro_rules! plane_kernel {
    ($select:ident, $body:ident) => {
        fn $select(simd: Simd) -> PlaneKernel {
            /// # Safety
            /// The CPU must run AVX-512F, AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn avx512(g: &PoolGeometry, s: &mut Scratch, x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
                $body(g, s, x, dy, dx)
            }
            /// # Safety
            /// The CPU must run AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2(g: &PoolGeometry, s: &mut Scratch, x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
                $body(g, s, x, dy, dx)
            }
            match simd {
                #[cfg(target_arch = "x86_64")]
                Simd::Avx512(_token) => |g, s, x, dy, dx| {
                    // SAFETY: this pointer is made only in the arm holding
                    // an Avx512Token, the proof that the CPU runs AVX-512F,
                    // AVX2 and FMA.
                    unsafe { avx512(g, s, x, dy, dx) }
                },
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2(_token) => |g, s, x, dy, dx| {
                    // SAFETY: this pointer is made only in the arm holding
                    // an Avx2Token, the proof that the CPU runs AVX2 and FMA.
                    unsafe { avx2(g, s, x, dy, dx) }
                },
                #[cfg(not(target_arch = "x86_64"))]
                Simd::Avx512(_) | Simd::Avx2(_) => $body,
                Simd::Portable => $body,
            }
        }
    };
}

plane_kernel!(select_avg_2x2, avg_2x2_plane);
plane_kernel!(select_max_stride2_loops, max_stride2_plane);
plane_kernel!(select_avg_stride2, avg_stride2_plane);

/// The 2x2 max backward's plane kernel at `simd`: the register kernels at
/// AVX-512 and AVX2 (step 57), the portable loops otherwise.
fn select_max_2x2(simd: Simd) -> PlaneKernel {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512(_token) => |g, _s, x, dy, dx| {
            // SAFETY: this pointer is made only in the arm holding an
            // Avx512Token, the proof that the CPU runs AVX-512F.
            unsafe { max_2x2_avx512(g, x, dy, dx) }
        },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(_token) => |g, _s, x, dy, dx| {
            // SAFETY: this pointer is made only in the arm holding an
            // Avx2Token, the proof that the CPU runs AVX2.
            unsafe { max_2x2_avx2(g, x, dy, dx) }
        },
        #[cfg(not(target_arch = "x86_64"))]
        Simd::Avx512(_) | Simd::Avx2(_) => max_2x2_plane,
        Simd::Portable => max_2x2_plane,
    }
}

/// The stride-2 max backward's plane kernel for `g` at `simd`: the
/// register kernels for 3x3 padding 1 at AVX-512 and AVX2 (step 57), step
/// 55's loops for every other stride-2 geometry and the portable ISA.
fn select_max_stride2(simd: Simd, g: &PoolGeometry) -> PlaneKernel {
    if !max_3x3_applies(g) {
        return select_max_stride2_loops(simd);
    }
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512(_token) => |g, s, x, dy, dx| {
            // SAFETY: this pointer is made only in the arm holding an
            // Avx512Token, the proof that the CPU runs AVX-512F.
            unsafe { max_3x3_avx512(g, &mut s.codes, x, dy, dx) }
        },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(_token) => |g, s, x, dy, dx| {
            // SAFETY: this pointer is made only in the arm holding an
            // Avx2Token, the proof that the CPU runs AVX2.
            unsafe { max_3x3_avx2(g, &mut s.codes, x, dy, dx) }
        },
        _ => select_max_stride2_loops(simd),
    }
}

/// Writes `src` into `dst` (element by element, which compiles to vector
/// stores or a memcpy).
#[inline(always)]
fn write_row(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| {
        d.write(s);
    });
}

#[inline(always)]
fn write_zeros(dst: &mut [MaybeUninit<f32>]) {
    dst.iter_mut().for_each(|d| {
        d.write(0.0);
    });
}

/// All ones when `b`, else zero: a lane mask for [`select`].
#[inline(always)]
fn mask(b: bool) -> u32 {
    (b as u32).wrapping_neg()
}

/// `if` by bit masks (`then` where `m` is all ones), which the compiler
/// keeps branch-free where it turns `if` on floats into jumps.
#[inline(always)]
fn select(m: u32, then: f32, otherwise: f32) -> f32 {
    f32::from_bits((then.to_bits() & m) | (otherwise.to_bits() & !m))
}

/// Max 2x2 stride 2 without padding, branch-free: per window (a b / c d)
/// the winner is chosen by the same comparisons as [`argmax`] in the same
/// order, but as bit-mask selects, since on real data each comparison is a
/// coin flip that a branch predictor loses (written with `if`, the
/// compiler emitted jumps and it measured 2.5x slower than the generic
/// loop). The strict rule runs first; the NaN test is folded into the same
/// pass over the row pair (an or of `v != v`), and a row pair holding a NaN
/// is redone with the NaN-aware rule (OPTIMISATION.md steps 51, 55).
#[inline(always)]
fn max_2x2_plane(g: &PoolGeometry, s: &mut Scratch, x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    let width = 2 * g.ow;
    // Per window, the masks of its four elements (a, b, c, d).
    let wins = &mut s.win_col;
    wins.resize(4 * g.ow, 0.0);
    for (oh, dy_row) in dy.chunks_exact(g.ow).enumerate() {
        let x_top = &x[2 * oh * g.w..][..width];
        let x_bottom = &x[(2 * oh + 1) * g.w..][..width];
        // Pass 1 reads x only, pass 2 writes dx only: x and dx sit at the
        // same offsets within their pages, so interleaved loads and stores
        // alias in the store buffer's 4 KiB check (measured 4x slower).
        if winners_2x2(x_top, x_bottom, wins, strictly_larger) {
            winners_2x2(x_top, x_bottom, wins, max_pool_takes);
        }
        let (dx_top, rest) = dx[2 * oh * g.w..][..2 * g.w].split_at_mut(g.w);
        let (dx_top, top_tail) = dx_top.split_at_mut(width);
        let (dx_bottom, bottom_tail) = rest.split_at_mut(width);
        let outs = dx_top.chunks_exact_mut(2).zip(dx_bottom.chunks_exact_mut(2));
        for ((&grad, win), (out_top, out_bottom)) in dy_row.iter().zip(wins.chunks_exact(4)).zip(outs) {
            let grad = grad.to_bits();
            out_top[0].write(f32::from_bits(grad & win[0].to_bits()));
            out_top[1].write(f32::from_bits(grad & win[1].to_bits()));
            out_bottom[0].write(f32::from_bits(grad & win[2].to_bits()));
            out_bottom[1].write(f32::from_bits(grad & win[3].to_bits()));
        }
        // An odd W leaves the last column of both rows uncovered.
        write_zeros(top_tail);
        write_zeros(bottom_tail);
    }
    // An odd H leaves the last row uncovered.
    write_zeros(&mut dx[2 * g.oh * g.w..]);
}

/// Pass 1 of [`max_2x2_plane`] for one row pair under `takes`: each
/// window's four element masks into `wins` (as f32 bit patterns, so the
/// scratch is shared with the stride-2 path). Returns whether the rows
/// hold a NaN.
#[inline(always)]
fn winners_2x2(x_top: &[f32], x_bottom: &[f32], wins: &mut [f32], takes: impl Fn(f32, f32) -> bool) -> bool {
    let windows = x_top.chunks_exact(2).zip(x_bottom.chunks_exact(2));
    let mut nan = 0u32;
    for (win, (top, bottom)) in wins.chunks_exact_mut(4).zip(windows) {
        let (a, b, c, d) = (top[0], top[1], bottom[0], bottom[1]);
        #[allow(clippy::eq_op)] // v != v is the NaN test
        let any_nan = (a != a) | (b != b) | (c != c) | (d != d);
        nan |= any_nan as u32;
        let b_wins = mask(takes(b, a));
        let m = select(b_wins, b, a);
        let c_wins = mask(takes(c, m));
        let m = select(c_wins, c, m);
        let d_wins = mask(takes(d, m));
        let masks = [!(b_wins | c_wins | d_wins), b_wins & !c_wins & !d_wins, c_wins & !d_wins, d_wins];
        for (w, m) in win.iter_mut().zip(masks) {
            *w = f32::from_bits(m);
        }
    }
    nan != 0
}

/// Avg 2x2 stride 2 without padding: dy / 4 to each pair of both rows (the
/// general loop's per-window `fill` of a run-time length became a memset
/// call per window, 4-5x slower).
#[inline(always)]
fn avg_2x2_plane(g: &PoolGeometry, _s: &mut Scratch, _x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    let width = 2 * g.ow;
    for (oh, dy_row) in dy.chunks_exact(g.ow).enumerate() {
        let (dx_top, rest) = dx[2 * oh * g.w..][..2 * g.w].split_at_mut(g.w);
        let (dx_top, top_tail) = dx_top.split_at_mut(width);
        let (dx_bottom, bottom_tail) = rest.split_at_mut(width);
        let outs = dx_top.chunks_exact_mut(2).zip(dx_bottom.chunks_exact_mut(2));
        for (&grad, (top, bottom)) in dy_row.iter().zip(outs) {
            let share = grad * 0.25;
            top[0].write(share);
            top[1].write(share);
            bottom[0].write(share);
            bottom[1].write(share);
        }
        write_zeros(top_tail);
        write_zeros(bottom_tail);
    }
    write_zeros(&mut dx[2 * g.oh * g.w..]);
}

/// The dx rows of one plane that windows still add to: ring row k holds
/// dx row `first + k`. Rows are zeroed in the ring when a window first
/// reaches them and written to dx (once, in order) when no later window
/// can; rows no window reaches are written as zeros. Windows move down
/// monotonically, so the live rows are always the current window's (at
/// most `window[0]`), and moving to the next window shifts the ring up by
/// the rows it left (row copies in L1; a modular ring made every dy's
/// index a float-to-integer conversion plus a table lookup).
struct RowRing {
    /// Rows [0, flushed) are written to dx.
    flushed: usize,
    /// The dx row of ring row 0, and how many ring rows hold contributions.
    first: usize,
    live: usize,
}

impl RowRing {
    fn new() -> Self {
        Self { flushed: 0, first: 0, live: 0 }
    }

    /// Writes every dx row below `rows.start` and makes ring row k dx row
    /// `rows.start + k` for the window's rows (new ones zeroed).
    #[inline(always)]
    fn advance(&mut self, g: &PoolGeometry, ring: &mut [f32], dx: &mut [MaybeUninit<f32>], rows: &Range<usize>) {
        self.flush(g, ring, dx, rows.start);
        let w = g.w;
        let shift = rows.start - self.first;
        let kept = self.live.saturating_sub(shift);
        if kept > 0 && shift > 0 {
            ring.copy_within(shift * w..(shift + kept) * w, 0);
        }
        ring[kept * w..rows.len() * w].fill(0.0);
        (self.first, self.live) = (rows.start, rows.len());
    }

    /// Writes dx rows [flushed, to): from the ring where live, else zeros.
    #[inline(always)]
    fn flush(&mut self, g: &PoolGeometry, ring: &[f32], dx: &mut [MaybeUninit<f32>], to: usize) {
        while self.flushed < to {
            let dst = &mut dx[self.flushed * g.w..][..g.w];
            match self.flushed.checked_sub(self.first) {
                Some(k) if k < self.live => write_row(dst, &ring[k * g.w..][..g.w]),
                _ => write_zeros(dst),
            }
            self.flushed += 1;
        }
    }
}

/// Max backward at stride 2 for windows 2 or 3 columns wide (resnet-p0's
/// 3x3/2 pad 1), one pass per output row that writes each dx element once:
///
/// 1. Vertical: per input column, the largest of the window's rows and the
///    first row holding it (strict `>`, rows in order), over whole rows, so
///    it vectorises; the NaN test is folded in (an or of `v != v`).
/// 2. Horizontal: per output column, over its padded columns in order, a
///    column takes over when its value is larger, or equal from an earlier
///    row. That is the first largest element in row-major window order,
///    the contract's winner (ties are common after a ReLU): among the
///    columns holding the maximum, the earliest row, then the earliest
///    column. Even and odd padded columns are split first, so this pass
///    loads contiguous vectors too.
/// 3. Per window row k, dy masked to the outputs whose winner sits in row
///    k and window column j (three masked vectors), summed per padded
///    column (column 2m gets j = 0 of output m and j = 2 of output m − 1,
///    column 2m + 1 j = 1 of output m), interleaved and added to ring row
///    k: all contiguous vector passes, as for avg (a scalar add per output
///    at its winner measured 15% of this kernel's samples, in a chain of
///    store-to-load forwards). Rows leave the ring for dx once no window
///    reaches them.
///
/// An output row whose window rows hold a NaN takes its winners from
/// [`argmax`] under the NaN-aware rule instead (the last NaN wins).
#[inline(always)]
fn max_stride2_plane(g: &PoolGeometry, s: &mut Scratch, x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    if g.params.window[1] == 3 {
        max_stride2_plane_ww::<3>(g, s, x, dy, dx)
    } else {
        max_stride2_plane_ww::<2>(g, s, x, dy, dx)
    }
}

#[inline(always)]
fn max_stride2_plane_ww<const WW: usize>(
    g: &PoolGeometry,
    s: &mut Scratch,
    x: &[f32],
    dy: &[f32],
    dx: &mut [MaybeUninit<f32>],
) {
    let p = g.params;
    let pw = p.padding[1];
    let pairs = g.ow + 1;
    // Input columns with a padded slot (the rest lie past every window).
    let real = g.w.min(2 * pairs - pw);
    let mut ring = RowRing::new();
    for (oh, dy_row) in dy.chunks_exact(g.ow).enumerate() {
        let rows = window_range(oh, p.window[0], p.stride[0], p.padding[0], g.h);
        ring.advance(g, &mut s.ring, dx, &rows);
        // 1. Vertical max and its relative row, with the NaN test.
        let (col, row) = (&mut s.col[pw..pw + real], &mut s.row[pw..pw + real]);
        col.copy_from_slice(&x[rows.start * g.w..][..real]);
        row.fill(0.0);
        let mut nan = nan_mask(col);
        for (k, ih) in rows.clone().enumerate().skip(1) {
            let kf = k as f32;
            let x_row = &x[ih * g.w..][..real];
            // Whole 16-column chunks, then the rest: one loop over all
            // columns left a 4-lane epilogue for W = 112's last 16 (11% of
            // this kernel's samples).
            let chunks = col.chunks_exact_mut(16).zip(row.chunks_exact_mut(16)).zip(x_row.chunks_exact(16));
            for ((c16, r16), x16) in chunks {
                nan |= vertical_step(c16, r16, x16, kf);
            }
            let done = real / 16 * 16;
            nan |= vertical_step(&mut col[done..], &mut row[done..], &x_row[done..], kf);
        }
        if nan != 0 {
            // A NaN in the window rows: the exact rule, window by window.
            for (&grad, cols) in dy_row.iter().zip(&s.cols) {
                let winner = argmax(x, g.w, rows.clone(), cols, max_pool_takes);
                // Ring row k is dx row rows.start + k.
                s.ring[winner - rows.start * g.w] += grad;
            }
            continue;
        }
        // 2. Split into even and odd padded columns, then the horizontal
        // pass over contiguous vectors.
        deinterleave(&s.col, &mut s.even, &mut s.odd);
        deinterleave(&s.row, &mut s.even_row, &mut s.odd_row);
        horizontal_winners::<WW>(s);
        // 3. Per window row, the masked dy spread over the padded columns.
        for k in 0..rows.len() {
            let kf = k as f32;
            let (even, odd, third) = (&mut s.even[..pairs], &mut s.odd[..pairs], &mut s.even_row[..pairs]);
            let wins = s.win_row.iter().zip(&s.win_col);
            for ((((e, o), t), &grad), (&win_k, &win_j)) in
                even.iter_mut().zip(odd.iter_mut()).zip(third.iter_mut()).zip(dy_row).zip(wins)
            {
                let here = grad.to_bits() & mask(win_k == kf);
                *e = f32::from_bits(here & mask(win_j == 0.0));
                *o = f32::from_bits(here & mask(win_j == 1.0));
                *t = f32::from_bits(here & mask(win_j == 2.0));
            }
            (even[g.ow], odd[g.ow]) = (0.0, 0.0);
            if WW == 3 {
                // Padded column 2m: output m's j = 0, then output m − 1's
                // j = 2 (as `avg_stride2_plane`; the order of a sum of two).
                // Zipped (distinct arrays, no carried dependency): the
                // indexed loop stayed scalar, 20% of this kernel's samples.
                for (e, &t) in even[1..].iter_mut().zip(&third[..pairs - 1]) {
                    *e += t;
                }
            }
            add_interleaved(&mut s.spread, even, odd, pw, &mut s.ring[k * g.w..][..real]);
        }
    }
    ring.flush(g, &s.ring, dx, g.h);
}

/// ring_row[iw] += the padded column pw + iw of (even, odd) interleaved;
/// `col` is the scratch for the interleaved row.
#[inline(always)]
fn add_interleaved(col: &mut [f32], even: &[f32], odd: &[f32], pw: usize, ring_row: &mut [f32]) {
    for ((pair, &e), &o) in col.chunks_exact_mut(2).zip(even).zip(odd) {
        pair[0] = e;
        pair[1] = o;
    }
    let combined = &col[pw..pw + ring_row.len()];
    ring_row.iter_mut().zip(combined).for_each(|(d, &c)| *d += c);
}

/// One window row into the running column max: where `x` is strictly
/// larger it replaces the max and `k` the row. Returns the NaN lanes of
/// `x`, or-reduced.
#[inline(always)]
fn vertical_step(col: &mut [f32], row: &mut [f32], x: &[f32], k: f32) -> u32 {
    let mut nan = 0;
    for ((c, r), &v) in col.iter_mut().zip(row.iter_mut()).zip(x) {
        let take = mask(v > *c);
        *c = select(take, v, *c);
        *r = select(take, k, *r);
        #[allow(clippy::eq_op)] // v != v is the NaN test
        let is_nan = mask(v != v);
        nan |= is_nan;
    }
    nan
}

/// Lanes all ones where `v` is NaN, or-reduced (vectorises, no early exit).
#[inline(always)]
fn nan_mask(values: &[f32]) -> u32 {
    #[allow(clippy::eq_op)] // v != v is the NaN test
    values.iter().fold(0u32, |any, &v| any | mask(v != v))
}

/// even[m] = src[2m], odd[m] = src[2m + 1].
#[inline(always)]
fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    for ((pair, e), o) in src.chunks_exact(2).zip(even.iter_mut()).zip(odd.iter_mut()) {
        *e = pair[0];
        *o = pair[1];
    }
}

/// Per output column o, the winner among padded columns 2o .. 2o + WW
/// (even[o], odd[o], even[o + 1]): its relative row into `win_row` and its
/// window column j (0, 1, 2) into `win_col`, as floats.
#[inline(always)]
fn horizontal_winners<const WW: usize>(s: &mut Scratch) {
    let ow = s.win_col.len();
    // Zipped slices of exact lengths, so the loop has no bounds checks and
    // vectorises: window o's third column is even[o + 1].
    let firsts = s.even[..ow].iter().zip(&s.even_row[..ow]);
    let seconds = s.odd[..ow].iter().zip(&s.odd_row[..ow]);
    let thirds = s.even[1..=ow].iter().zip(&s.even_row[1..=ow]);
    let outs = s.win_row.iter_mut().zip(s.win_col.iter_mut());
    for ((((&v0, &r0), (&v1, &r1)), (&v2, &r2)), (win_row, win_col)) in firsts.zip(seconds).zip(thirds).zip(outs) {
        let (mut best, mut best_row, mut best_col) = (v0, r0, 0.0);
        let take = mask(v1 > best) | (mask(v1 == best) & mask(r1 < best_row));
        best = select(take, v1, best);
        best_row = select(take, r1, best_row);
        best_col = select(take, 1.0, best_col);
        if WW == 3 {
            let take = mask(v2 > best) | (mask(v2 == best) & mask(r2 < best_row));
            best_row = select(take, r2, best_row);
            best_col = select(take, 2.0, best_col);
        }
        *win_row = best_row;
        *win_col = best_col;
    }
}

/// Avg backward at stride 2 for windows 2 or 3 columns wide: per output
/// row, dy / window spread over the padded columns as two contiguous
/// passes (3 wide: even column m gets the shares of outputs m − 1 and m,
/// odd column m the share of output m; 2 wide: both get output m's), then
/// added to each of the window's dx rows in the ring, which writes each dx
/// element once (as [`max_stride2_plane`]).
#[inline(always)]
fn avg_stride2_plane(g: &PoolGeometry, s: &mut Scratch, _x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    let p = g.params;
    let pw = p.padding[1];
    let pairs = g.ow + 1;
    let real = g.w.min(2 * pairs - pw);
    let inv_window = 1.0 / g.window_len() as f32;
    let mut ring = RowRing::new();
    for (oh, dy_row) in dy.chunks_exact(g.ow).enumerate() {
        let rows = window_range(oh, p.window[0], p.stride[0], p.padding[0], g.h);
        ring.advance(g, &mut s.ring, dx, &rows);
        let (even, odd) = (&mut s.even[..pairs], &mut s.odd[..pairs]);
        for ((e, o), &grad) in even.iter_mut().zip(odd.iter_mut()).zip(dy_row) {
            let share = grad * inv_window;
            *e = share;
            *o = share;
        }
        (even[g.ow], odd[g.ow]) = (0.0, 0.0);
        if p.window[1] == 3 {
            // even[m] += share of output m − 1 (odd[m − 1] holds it).
            for (e, &o) in even[1..].iter_mut().zip(&odd[..pairs - 1]) {
                *e += o;
            }
        }
        for k in 0..rows.len() {
            add_interleaved(&mut s.spread, even, odd, pw, &mut s.ring[k * g.w..][..real]);
        }
    }
    ring.flush(g, &s.ring, dx, g.h);
}

/// Whether the register kernels for 3x3 windows at stride 2 with padding 1
/// ([`max_3x3_avx512`], [`max_3x3_avx2`]) take `g` (resnet-p0's pool).
pub(crate) fn max_3x3_applies(g: &PoolGeometry) -> bool {
    let p = g.params;
    p.kind == PoolKind::Max && p.window == [3, 3] && p.stride == [2, 2] && p.padding == [1, 1]
}

/// How many x rows ahead of the window the register kernels prefetch:
/// without it the kernel waited on the loads of each new x row (perf: 19%
/// of its samples on the first use of one load).
#[cfg(target_arch = "x86_64")]
const PREFETCH_ROWS: usize = 8;

/// Prefetches `count` x rows from row `first` (into L1; lines past the
/// plane are the next plane's, or unmapped, which a prefetch ignores).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_rows(x: *const f32, w: usize, first: usize, count: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = x.wrapping_add(first * w);
        for line in (0..count * w).step_by(16) {
            // SAFETY: a prefetch never faults and reads nothing into the
            // program; the address is formed with wrapping arithmetic.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(line).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, w, first, count);
}

/// Floats per row of window codes in the scratch of [`max_3x3_avx512`] /
/// [`max_3x3_avx2`]: every output column rounded up to whole vectors, plus
/// one vector, since the odd dx columns read the codes one element on.
fn code_row_len(ow: usize) -> usize {
    ow.next_multiple_of(16) + 16
}

/// The real row and position-code base (3i, i the window row) of each of
/// the three window rows of output row `k` (3x3, stride 2, padding 1). A
/// row in the padding (−1, or h for an odd h) is replaced by the middle
/// row with the middle row's codes: the window's winner over the sequence
/// with that row twice is the same element (the first largest lies in the
/// first copy and the last NaN in the second, with the same code), so
/// padding never wins and no candidate needs a validity test.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rows_3x3(k: usize, h: usize) -> [(usize, f32); 3] {
    let mid = (2 * k, 3.0);
    let top = if k == 0 { mid } else { (2 * k - 1, 0.0) };
    let bottom = if 2 * k + 1 < h { (2 * k + 1, 6.0) } else { mid };
    [top, mid, bottom]
}

/// Max backward of 3x3 stride 2 padding 1 pooling for one plane, AVX-512
/// (OPTIMISATION.md step 57). Per output row k, 16 windows at a time:
/// each window row's x columns 2m0 .. 2m0 + 32 are split by two permutes
/// into E[m] = x[2m] and O[m] = x[2m + 1], and L[m] = x[2m − 1] is O moved
/// one lane on; the nine candidates (L, E, O per row, in row-major order)
/// go through a select chain under the exact rule (`v > best` or `v` NaN,
/// [`max_pool_takes`]) that keeps the winner's code 3i + j. A padded
/// column (−1, or w for an odd w) is replaced by E with E's code, the
/// element next to it in window order (as [`rows_3x3`] argues for rows).
/// Then the dx rows that no later window reaches are written once from
/// registers: even columns 2m get dy[m] where window m's code is 3i + 1,
/// odd columns 2m + 1 where window m's code is 3i + 2 plus dy[m + 1] where
/// window m + 1's is 3i; rows 2k − 1 (windows k − 1 and k) and 2k (window
/// k only).
///
/// # Safety
/// The CPU must run AVX-512F. Slice lengths are asserted on entry.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_3x3_avx512(g: &PoolGeometry, codes: &mut [f32], x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::{
        __m512, _CMP_EQ_OQ, _CMP_NLE_UQ, _mm512_alignr_epi32, _mm512_castps_si512, _mm512_castsi512_ps,
        _mm512_cmp_ps_mask, _mm512_mask_add_ps, _mm512_mask_blend_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps,
        _mm512_min_ps, _mm512_permutex2var_ps, _mm512_set1_ps, _mm512_setr_epi32, _mm512_setzero_ps, _mm512_storeu_ps,
    };
    let (h, w, oh, ow) = (g.h, g.w, g.oh, g.ow);
    let row_len = code_row_len(ow);
    assert!(x.len() >= h * w && dx.len() >= h * w && dy.len() >= oh * ow && codes.len() >= 2 * row_len);
    let even_lanes = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd_lanes = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let low_pairs = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let high_pairs = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let lanes = |n: isize| lane_range(0, n);
    // The running best holds a NaN as +inf (MINPS returns its second
    // operand for a NaN): then `!(v <= best)`, one compare, is the exact
    // rule (`v > best` or `v` NaN; after a NaN only a NaN takes over).
    let clean = |v: __m512| _mm512_min_ps(v, _mm512_set1_ps(f32::INFINITY));
    // The lanes of `at[..16]` below `n`, zeros elsewhere.
    let load = |at: *const f32, n: isize| {
        // SAFETY: only lanes l < n are read, and every caller passes the
        // number of elements of its slice left at `at` (masked lanes are
        // never touched, so `at` may point at a slice's end).
        unsafe { _mm512_maskz_loadu_ps(lanes(n), at) }
    };
    let (x_ptr, dy_ptr) = (x.as_ptr(), dy.as_ptr());
    let dx_ptr = dx.as_mut_ptr().cast::<f32>();
    let codes_ptr = codes.as_mut_ptr();
    // Writes dx row r from windows rows (code row, dy row, code base): up
    // to two windows reach a row.
    let emit = |r: usize, parts: &[(usize, usize, f32)]| {
        for m0 in (0..ow).step_by(16) {
            let (mut even, mut odd) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            for &(code_row, k, base) in parts {
                // SAFETY: codes rows hold row_len ≥ m0 + 17 floats; dy
                // row k has ow elements, ow − m0 left at m0.
                let (c, c_next, grad, grad_next) = unsafe {
                    let c_at = codes_ptr.add(code_row * row_len + m0);
                    let g_at = dy_ptr.add(k * ow + m0);
                    let left = (ow - m0) as isize;
                    (
                        _mm512_maskz_loadu_ps(0xFFFF, c_at),
                        _mm512_maskz_loadu_ps(0xFFFF, c_at.add(1)),
                        load(g_at, left),
                        load(g_at.wrapping_add(1), left - 1),
                    )
                };
                let is = |c: __m512, code: f32| _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(c, _mm512_set1_ps(code));
                even = _mm512_mask_add_ps(even, is(c, base + 1.0), even, grad);
                odd = _mm512_mask_add_ps(odd, is(c, base + 2.0), odd, grad);
                odd = _mm512_mask_add_ps(odd, is(c_next, base), odd, grad_next);
            }
            let left = w as isize - 2 * m0 as isize;
            // SAFETY: lanes below `left` are columns 2m0 + l < w of row
            // r < h, inside dx.
            unsafe {
                let at = dx_ptr.add(r * w + 2 * m0);
                _mm512_mask_storeu_ps(at, lanes(left), _mm512_permutex2var_ps(even, low_pairs, odd));
                _mm512_mask_storeu_ps(
                    at.wrapping_add(16),
                    lanes(left - 16),
                    _mm512_permutex2var_ps(even, high_pairs, odd),
                );
            }
        }
    };
    for k in 0..oh {
        let (cur, prev) = (k % 2, (k + 1) % 2);
        let rows = rows_3x3(k, h);
        prefetch_rows(x_ptr, w, 2 * k + PREFETCH_ROWS, 2);
        let mut carried = [_mm512_setzero_ps(); 3];
        for m0 in (0..ow).step_by(16) {
            let left = w as isize - 2 * m0 as isize;
            // Lanes whose odd column 2m + 1 is real (not the padding after
            // an odd w's last column).
            let odd_real = lanes(left / 2);
            let mut best = _mm512_setzero_ps();
            let mut code = _mm512_setzero_ps();
            for (slot, &(r, base)) in rows.iter().enumerate() {
                let at = x_ptr.wrapping_add(r * w + 2 * m0);
                let (lo, hi) = (load(at, left), load(at.wrapping_add(16), left - 16));
                let e = _mm512_permutex2var_ps(lo, even_lanes, hi);
                let o = _mm512_mask_blend_ps(odd_real, e, _mm512_permutex2var_ps(lo, odd_lanes, hi));
                // [previous chunk's O[15], O[0..15]]: x[2m − 1].
                let l = _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(
                    _mm512_castps_si512(o),
                    _mm512_castps_si512(carried[slot]),
                ));
                carried[slot] = o;
                // Column −1 is padding: window 0 takes E there.
                let first = if m0 == 0 { 1 } else { 0 };
                let l = _mm512_mask_blend_ps(first, l, e);
                let l_code = _mm512_mask_blend_ps(first, _mm512_set1_ps(base), _mm512_set1_ps(base + 1.0));
                let o_code = _mm512_mask_blend_ps(odd_real, _mm512_set1_ps(base + 1.0), _mm512_set1_ps(base + 2.0));
                let candidates = [(l, l_code), (e, _mm512_set1_ps(base + 1.0)), (o, o_code)];
                for (j, (v, v_code)) in candidates.into_iter().enumerate() {
                    if slot == 0 && j == 0 {
                        (best, code) = (clean(v), v_code);
                        continue;
                    }
                    let take = _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(v, best);
                    best = _mm512_mask_blend_ps(take, best, clean(v));
                    code = _mm512_mask_blend_ps(take, code, v_code);
                }
            }
            // SAFETY: code row `cur` holds row_len ≥ m0 + 16 floats.
            unsafe { _mm512_storeu_ps(codes_ptr.add(cur * row_len + m0), code) };
        }
        if k > 0 {
            emit(2 * k - 1, &[(prev, k - 1, 6.0), (cur, k, 0.0)]);
        }
        emit(2 * k, &[(cur, k, 3.0)]);
    }
    if oh > 0 && 2 * oh - 1 < h {
        emit(2 * oh - 1, &[((oh - 1) % 2, oh - 1, 6.0)]);
    }
}

/// Max backward of 2x2 stride 2 unpadded pooling for one plane, AVX-512
/// (OPTIMISATION.md step 57): per row pair, 16 windows at a time, the top
/// and bottom rows split by permutes into a, b (top even, odd columns) and
/// c, d (bottom), a select chain under the exact rule keeps the winner's
/// code (0-3), and both dx rows are written once: dy masked by code,
/// interleaved back. An odd w's last column and an odd h's last row, which
/// no window covers, are written as zeros.
///
/// # Safety
/// The CPU must run AVX-512F. Slice lengths are asserted on entry.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_2x2_avx512(g: &PoolGeometry, x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::{
        __m512, _CMP_EQ_OQ, _CMP_NLE_UQ, _mm512_cmp_ps_mask, _mm512_mask_blend_ps, _mm512_mask_storeu_ps,
        _mm512_maskz_loadu_ps, _mm512_maskz_mov_ps, _mm512_min_ps, _mm512_permutex2var_ps, _mm512_set1_ps,
        _mm512_setr_epi32,
    };
    let (h, w, oh, ow) = (g.h, g.w, g.oh, g.ow);
    assert!(x.len() >= h * w && dx.len() >= h * w && dy.len() >= oh * ow && 2 * ow <= w && 2 * oh <= h);
    let even_lanes = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd_lanes = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let low_pairs = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let high_pairs = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let lanes = |n: isize| lane_range(0, n);
    // The running best holds a NaN as +inf (MINPS returns its second
    // operand for a NaN): then `!(v <= best)`, one compare, is the exact
    // rule (`v > best` or `v` NaN; after a NaN only a NaN takes over).
    let clean = |v: __m512| _mm512_min_ps(v, _mm512_set1_ps(f32::INFINITY));
    let (x_ptr, dy_ptr) = (x.as_ptr(), dy.as_ptr());
    for k in 0..oh {
        // Taken per row pair: `uncovered_2x2` below borrows dx again.
        let dx_ptr = dx.as_mut_ptr().cast::<f32>();
        for m0 in (0..ow).step_by(16) {
            // Covered columns left in the row from 2m0.
            let left = 2 * (ow - m0) as isize;
            // SAFETY: lanes below `left` (and `left` − 16) are columns
            // 2m0 + l < 2ow ≤ w of rows 2k, 2k + 1 < h, and dy lanes below
            // ow − m0 lie in dy row k; masked lanes are never touched.
            let ([a, b], [c, d], grad) = unsafe {
                let split = |at: *const f32| {
                    let lo = _mm512_maskz_loadu_ps(lanes(left), at);
                    let hi = _mm512_maskz_loadu_ps(lanes(left - 16), at.wrapping_add(16));
                    [_mm512_permutex2var_ps(lo, even_lanes, hi), _mm512_permutex2var_ps(lo, odd_lanes, hi)]
                };
                (
                    split(x_ptr.add(2 * k * w + 2 * m0)),
                    split(x_ptr.add((2 * k + 1) * w + 2 * m0)),
                    _mm512_maskz_loadu_ps(lanes((ow - m0) as isize), dy_ptr.add(k * ow + m0)),
                )
            };
            let (mut best, mut code) = (clean(a), _mm512_set1_ps(0.0));
            for (v, v_code) in [(b, 1.0), (c, 2.0), (d, 3.0)] {
                let take = _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(v, best);
                best = _mm512_mask_blend_ps(take, best, clean(v));
                code = _mm512_mask_blend_ps(take, code, _mm512_set1_ps(v_code));
            }
            let part = |v: f32| _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(code, _mm512_set1_ps(v)), grad);
            for (row, even, odd) in [(2 * k, part(0.0), part(1.0)), (2 * k + 1, part(2.0), part(3.0))] {
                // SAFETY: as above, lanes below `left` are columns < w of
                // row < h.
                unsafe {
                    let at = dx_ptr.add(row * w + 2 * m0);
                    _mm512_mask_storeu_ps(at, lanes(left), _mm512_permutex2var_ps(even, low_pairs, odd));
                    _mm512_mask_storeu_ps(
                        at.wrapping_add(16),
                        lanes(left - 16),
                        _mm512_permutex2var_ps(even, high_pairs, odd),
                    );
                }
            }
        }
        uncovered_2x2(g, k, dx);
    }
    write_zeros(&mut dx[2 * oh * w..h * w]);
}

/// The columns of rows 2k and 2k + 1 that no 2x2 window covers (an odd
/// w's last), as zeros.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn uncovered_2x2(g: &PoolGeometry, k: usize, dx: &mut [MaybeUninit<f32>]) {
    for row in [2 * k, 2 * k + 1] {
        write_zeros(&mut dx[row * g.w + 2 * g.ow..(row + 1) * g.w]);
    }
}

/// AVX2 lane helpers for the register kernels: 8 lanes, masks as vectors.
#[cfg(target_arch = "x86_64")]
mod avx2_lanes {
    use std::arch::x86_64::{
        __m256, __m256i, _mm_castps_pd, _mm_movehl_ps, _mm_store_ss, _mm_storel_pd, _mm_storeu_ps, _mm256_castpd_ps,
        _mm256_castps_pd, _mm256_castps256_ps128, _mm256_cmpgt_epi32, _mm256_extractf128_ps, _mm256_loadu_ps,
        _mm256_maskload_ps, _mm256_permute4x64_pd, _mm256_set1_epi32, _mm256_setr_epi32, _mm256_setzero_ps,
        _mm256_shuffle_ps, _mm256_storeu_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps,
    };

    /// Lanes l < n all ones.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn first(n: isize) -> __m256i {
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n.clamp(0, 8) as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    }

    /// Lanes l < n of `at[..8]`, zeros elsewhere.
    ///
    /// # Safety
    /// `at[..n.min(8)]` must be readable (nothing is read when n ≤ 0).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn load(at: *const f32, n: isize) -> __m256 {
        // SAFETY: by the caller's contract; a masked load touches only the
        // lanes its mask selects.
        unsafe {
            if n >= 8 {
                _mm256_loadu_ps(at)
            } else if n <= 0 {
                _mm256_setzero_ps()
            } else {
                _mm256_maskload_ps(at, first(n))
            }
        }
    }

    /// Stores lanes l < n of `v` at `at`. A part vector goes out as 4-, 2-
    /// and 1-lane stores: `vmaskmovps` to memory is slow on Zen 4 (perf:
    /// 17% of lenet-p1's AVX2 kernel on the two instructions after it).
    ///
    /// # Safety
    /// `at[..n.min(8)]` must be writable.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn store(at: *mut f32, n: isize, v: __m256) {
        // SAFETY: by the caller's contract: each store below writes lanes
        // below n only.
        unsafe {
            if n >= 8 {
                _mm256_storeu_ps(at, v);
                return;
            }
            let (mut at, mut n, mut part) = (at, n, _mm256_castps256_ps128(v));
            if n >= 4 {
                _mm_storeu_ps(at, part);
                (at, n, part) = (at.add(4), n - 4, _mm256_extractf128_ps::<1>(v));
            }
            if n >= 2 {
                _mm_storel_pd(at.cast(), _mm_castps_pd(part));
                (at, n, part) = (at.add(2), n - 2, _mm_movehl_ps(part, part));
            }
            if n >= 1 {
                _mm_store_ss(at, part);
            }
        }
    }

    /// (even, odd) lanes of the 16 floats lo ++ hi.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn split(lo: __m256, hi: __m256) -> [__m256; 2] {
        // shuffle gives [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6]; the 64-bit
        // permute puts the pairs in order.
        let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
        [order(_mm256_shuffle_ps::<0b10_00_10_00>(lo, hi)), order(_mm256_shuffle_ps::<0b11_01_11_01>(lo, hi))]
    }

    /// The inverse of [`split`]: (lo, hi) of even and odd interleaved.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn join(even: __m256, odd: __m256) -> [__m256; 2] {
        let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
        let (even, odd) = (order(even), order(odd));
        [_mm256_unpacklo_ps(even, odd), _mm256_unpackhi_ps(even, odd)]
    }
}

/// [`max_3x3_avx512`] at AVX2: 8 windows at a time, masks as vectors.
///
/// # Safety
/// The CPU must run AVX2. Slice lengths are asserted on entry.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_3x3_avx2(g: &PoolGeometry, codes: &mut [f32], x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::{_mm256_setzero_ps, _mm256_storeu_ps};
    let (h, w, oh, ow) = (g.h, g.w, g.oh, g.ow);
    let row_len = code_row_len(ow);
    // 2·ow ≤ w + 1 (ow = ⌊(w − 1)/2⌋ + 1) bounds `emit_3x3_avx2`'s whole
    // vectors.
    assert!(x.len() >= h * w && dx.len() >= h * w && dy.len() >= oh * ow && codes.len() >= 2 * row_len);
    assert!(2 * ow <= w + 1);
    let (x_ptr, dy_ptr) = (x.as_ptr(), dy.as_ptr());
    let dx_ptr = dx.as_mut_ptr().cast::<f32>();
    let codes_ptr = codes.as_mut_ptr();
    // The share of window row k (code row `code_row`) in a dx row that is
    // its window row `base` / 3 (OPTIMISATION.md step 77). Formed with
    // wrapping arithmetic; every use below has code_row < 2 and k < oh,
    // inside codes and dy (asserted above).
    let part = |code_row: usize, k: usize, base: f32| EmitPart {
        codes: codes_ptr.wrapping_add(code_row * row_len).cast_const(),
        dy: dy_ptr.wrapping_add(k * ow),
        base,
    };
    let dx_row = |r: usize| dx_ptr.wrapping_add(r * w);
    for k in 0..oh {
        let (cur, prev) = (k % 2, (k + 1) % 2);
        let rows = rows_3x3(k, h);
        prefetch_rows(x_ptr, w, 2 * k + PREFETCH_ROWS, 2);
        let mut carried = [_mm256_setzero_ps(); 3];
        for m0 in (0..ow).step_by(8) {
            // SAFETY: rows r < h (rows_3x3); the helper reads x only where
            // its bounds say.
            let code = unsafe {
                if m0 > 0 && 2 * m0 + 16 <= w {
                    select_3x3_avx2::<true>(x_ptr, w, m0, &rows, &mut carried)
                } else {
                    select_3x3_avx2::<false>(x_ptr, w, m0, &rows, &mut carried)
                }
            };
            // SAFETY: code row `cur` holds row_len ≥ m0 + 8 floats.
            unsafe { _mm256_storeu_ps(codes_ptr.add(cur * row_len + m0), code) };
        }
        if k > 0 {
            // SAFETY: rows 2k − 1 < h of dx, k − 1 and k < oh of dy, code
            // rows < 2; 2·ow ≤ w + 1 (asserted above).
            unsafe { emit_3x3_avx2(dx_row(2 * k - 1), w, ow, [part(prev, k - 1, 6.0), part(cur, k, 0.0)]) };
        }
        // SAFETY: as above, row 2k < h.
        unsafe { emit_3x3_avx2(dx_row(2 * k), w, ow, [part(cur, k, 3.0)]) };
    }
    if oh > 0 && 2 * oh - 1 < h {
        // SAFETY: as above, row 2·oh − 1 < h.
        unsafe { emit_3x3_avx2(dx_row(2 * oh - 1), w, ow, [part((oh - 1) % 2, oh - 1, 6.0)]) };
    }
}

/// Codes of windows m0 .. m0 + 8 of one output row for [`max_3x3_avx2`]
/// (the select chain of [`max_3x3_avx512`] over 8 lanes): each window row's
/// x columns 2m0 .. 2m0 + 16 split into E and O, L being O one lane on
/// with the previous vector's last O carried in `carried`. `INTERIOR`
/// vectors (m0 > 0 and 2m0 + 16 ≤ w: no padded column, every lane real)
/// skip the masked loads and the padding blends, which the first and last
/// vectors of a row need (OPTIMISATION.md step 78).
///
/// # Safety
/// The CPU must run AVX2; `rows` are rows < h of the h x w plane at `x`;
/// with `INTERIOR`, 2m0 + 16 ≤ w.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn select_3x3_avx2<const INTERIOR: bool>(
    x: *const f32,
    w: usize,
    m0: usize,
    rows: &[(usize, f32); 3],
    carried: &mut [std::arch::x86_64::__m256; 3],
) -> std::arch::x86_64::__m256 {
    use avx2_lanes::{load, split};
    use std::arch::x86_64::{
        __m256, _CMP_NLE_UQ, _mm256_blend_ps, _mm256_blendv_ps, _mm256_castsi256_ps, _mm256_cmp_ps, _mm256_loadu_ps,
        _mm256_min_ps, _mm256_permutevar8x32_ps, _mm256_set1_ps, _mm256_setr_epi32, _mm256_setzero_ps,
    };
    let rotate = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
    // A NaN held as +inf in the running best, as in `max_3x3_avx512`.
    let clean = |v: __m256| _mm256_min_ps(v, _mm256_set1_ps(f32::INFINITY));
    let left = w as isize - 2 * m0 as isize;
    let odd_real = _mm256_castsi256_ps(avx2_lanes::first(left / 2));
    let (mut best, mut code) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (slot, &(r, base)) in rows.iter().enumerate() {
        let at = x.wrapping_add(r * w + 2 * m0);
        // SAFETY: lanes below `left` are columns 2m0 + l < w of row r < h;
        // the rest are not read (an interior vector has left ≥ 16).
        let [e, o] = unsafe {
            if INTERIOR {
                split(_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8)))
            } else {
                split(load(at, left), load(at.wrapping_add(8), left - 8))
            }
        };
        let o = if INTERIOR { o } else { _mm256_blendv_ps(e, o, odd_real) };
        // [previous vector's O[7], O[0..7]]: x[2m − 1].
        let rotated = _mm256_permutevar8x32_ps(o, rotate);
        let l = _mm256_blend_ps::<1>(rotated, carried[slot]);
        carried[slot] = rotated;
        let (l, l_code) = if !INTERIOR && m0 == 0 {
            // Column −1 is padding: window 0 takes E there.
            (_mm256_blend_ps::<1>(l, e), _mm256_blend_ps::<1>(_mm256_set1_ps(base), _mm256_set1_ps(base + 1.0)))
        } else {
            (l, _mm256_set1_ps(base))
        };
        let o_code = if INTERIOR {
            _mm256_set1_ps(base + 2.0)
        } else {
            _mm256_blendv_ps(_mm256_set1_ps(base + 1.0), _mm256_set1_ps(base + 2.0), odd_real)
        };
        let candidates = [(l, l_code), (e, _mm256_set1_ps(base + 1.0)), (o, o_code)];
        for (j, (v, v_code)) in candidates.into_iter().enumerate() {
            if slot == 0 && j == 0 {
                (best, code) = (clean(v), v_code);
                continue;
            }
            let take = _mm256_cmp_ps::<_CMP_NLE_UQ>(v, best);
            best = _mm256_blendv_ps(best, clean(v), take);
            code = _mm256_blendv_ps(code, v_code, take);
        }
    }
    code
}

/// One window row's share of a dx row in [`emit_3x3_avx2`]: its code row
/// (`row_len` floats, [`code_row_len`]), its dy row (ow floats) and the
/// code base 3i of the window row i that the dx row is.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct EmitPart {
    codes: *const f32,
    dy: *const f32,
    base: f32,
}

/// Writes one dx row (w floats at `dx_row`) of [`max_3x3_avx2`]: even
/// columns 2m get dy[m] where window m's code is base + 1, odd columns
/// 2m + 1 get dy[m] where it is base + 2 plus dy[m + 1] where window
/// m + 1's is base, summed over the P window rows that reach the row.
/// Generic over P so that each count gets its own unrolled body with the
/// code vectors built once: as a closure over a slice of parts it looped
/// over them per vector and rebuilt each code with a scalar add and a
/// broadcast (perf: its half of the kernel's time). Vectors whose dy
/// reads (m0 + 9 ≤ ow) and dx writes are whole skip the masking.
///
/// # Safety
/// The CPU must run AVX2; each part's codes hold `code_row_len(ow)`
/// floats and its dy `ow`; `dx_row[..w]` is writable; 2·ow ≤ w + 1.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn emit_3x3_avx2<const P: usize>(dx_row: *mut f32, w: usize, ow: usize, parts: [EmitPart; P]) {
    use avx2_lanes::{join, load, store};
    use std::arch::x86_64::{
        __m256, _CMP_EQ_OQ, _mm256_add_ps, _mm256_and_ps, _mm256_cmp_ps, _mm256_loadu_ps, _mm256_set1_ps,
        _mm256_setzero_ps, _mm256_storeu_ps,
    };
    // [even, odd, next]: the codes that route dy[m] to column 2m, dy[m] to
    // 2m + 1, and dy[m + 1] to 2m + 1.
    let codes = parts.map(|p| [_mm256_set1_ps(p.base + 1.0), _mm256_set1_ps(p.base + 2.0), _mm256_set1_ps(p.base)]);
    let masked = |c: __m256, code: __m256, grad: __m256| _mm256_and_ps(grad, _mm256_cmp_ps::<_CMP_EQ_OQ>(c, code));
    // Windows m0 .. m0 + 8, dx columns 2m0 .. 2m0 + 16; `whole` when every
    // dy read (m0 + 9 ≤ ow) and dx write lies inside its row (called with
    // a constant, so each call is its own loop body).
    let vector = |m0: usize, whole: bool| {
        let (mut even, mut odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let left = (ow - m0) as isize;
        for (p, [e_code, o_code, n_code]) in parts.iter().zip(&codes) {
            // SAFETY: code rows hold row_len ≥ m0 + 9 floats; the dy row
            // has ow − m0 elements left at m0, all of both vectors when
            // `whole`, else bounding the masks.
            let (c, c_next, grad, grad_next) = unsafe {
                let (grad, grad_next) = if whole {
                    (_mm256_loadu_ps(p.dy.add(m0)), _mm256_loadu_ps(p.dy.add(m0 + 1)))
                } else {
                    (load(p.dy.add(m0), left), load(p.dy.wrapping_add(m0 + 1), left - 1))
                };
                (_mm256_loadu_ps(p.codes.add(m0)), _mm256_loadu_ps(p.codes.add(m0 + 1)), grad, grad_next)
            };
            even = _mm256_add_ps(even, masked(c, *e_code, grad));
            odd = _mm256_add_ps(odd, masked(c, *o_code, grad));
            odd = _mm256_add_ps(odd, masked(c_next, *n_code, grad_next));
        }
        let [lo, hi] = join(even, odd);
        // SAFETY: when `whole`, 2m0 + 16 ≤ 2·ow − 2 ≤ w − 1; else lanes
        // below `columns` are columns 2m0 + l < w. Inside the dx row.
        unsafe {
            let at = dx_row.add(2 * m0);
            if whole {
                _mm256_storeu_ps(at, lo);
                _mm256_storeu_ps(at.add(8), hi);
            } else {
                let columns = w as isize - 2 * m0 as isize;
                store(at, columns, lo);
                store(at.wrapping_add(8), columns - 8, hi);
            }
        }
    };
    let whole = if ow >= 9 { (ow - 9) / 8 + 1 } else { 0 };
    for m0 in (0..whole).map(|i| 8 * i) {
        vector(m0, true);
    }
    for m0 in (8 * whole..ow).step_by(8) {
        vector(m0, false);
    }
}

/// [`max_2x2_avx512`] at AVX2: 8 windows at a time.
///
/// # Safety
/// The CPU must run AVX2. Slice lengths are asserted on entry.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_2x2_avx2(g: &PoolGeometry, x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    use avx2_lanes::{join, load, split, store};
    use std::arch::x86_64::{
        __m256, _CMP_EQ_OQ, _CMP_NLE_UQ, _mm256_and_ps, _mm256_blendv_ps, _mm256_cmp_ps, _mm256_min_ps, _mm256_set1_ps,
    };
    let (h, w, oh, ow) = (g.h, g.w, g.oh, g.ow);
    assert!(x.len() >= h * w && dx.len() >= h * w && dy.len() >= oh * ow && 2 * ow <= w && 2 * oh <= h);
    // A NaN held as +inf in the running best, as in `max_3x3_avx512`.
    let clean = |v: __m256| _mm256_min_ps(v, _mm256_set1_ps(f32::INFINITY));
    let (x_ptr, dy_ptr) = (x.as_ptr(), dy.as_ptr());
    for k in 0..oh {
        // Taken per row pair: `uncovered_2x2` below borrows dx again.
        let dx_ptr = dx.as_mut_ptr().cast::<f32>();
        for m0 in (0..ow).step_by(8) {
            // With 8 windows or more in a row, the last block is shifted
            // back to end at ow and rewrites the windows it shares with the
            // block before it (same inputs, same values) with whole-vector
            // loads and stores, where the masked part cost lenet-p1 (ow =
            // 14) a masked load and split stores per row (OPTIMISATION.md
            // step 67).
            let m0 = if ow >= 8 { m0.min(ow - 8) } else { m0 };
            let left = 2 * (ow - m0) as isize;
            // SAFETY: lanes below `left` (and `left` − 8) are columns
            // 2m0 + l < 2ow ≤ w of rows 2k, 2k + 1 < h; dy lanes below
            // ow − m0 lie in dy row k.
            let ([a, b], [c, d], grad) = unsafe {
                let top = x_ptr.add(2 * k * w + 2 * m0);
                let bottom = x_ptr.add((2 * k + 1) * w + 2 * m0);
                (
                    split(load(top, left), load(top.wrapping_add(8), left - 8)),
                    split(load(bottom, left), load(bottom.wrapping_add(8), left - 8)),
                    load(dy_ptr.add(k * ow + m0), (ow - m0) as isize),
                )
            };
            let (mut best, mut code) = (clean(a), _mm256_set1_ps(0.0));
            for (v, v_code) in [(b, 1.0), (c, 2.0), (d, 3.0)] {
                let take = _mm256_cmp_ps::<_CMP_NLE_UQ>(v, best);
                best = _mm256_blendv_ps(best, clean(v), take);
                code = _mm256_blendv_ps(code, _mm256_set1_ps(v_code), take);
            }
            let part = |v: f32| _mm256_and_ps(grad, _mm256_cmp_ps::<_CMP_EQ_OQ>(code, _mm256_set1_ps(v)));
            for (row, even, odd) in [(2 * k, part(0.0), part(1.0)), (2 * k + 1, part(2.0), part(3.0))] {
                let [lo, hi] = join(even, odd);
                // SAFETY: as above, lanes below `left` are columns < w of
                // row < h.
                unsafe {
                    let at = dx_ptr.add(row * w + 2 * m0);
                    store(at, left, lo);
                    store(at.wrapping_add(8), left - 8, hi);
                }
            }
        }
        uncovered_2x2(g, k, dx);
    }
    write_zeros(&mut dx[2 * oh * w..h * w]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels_core::Pool2d;

    #[test]
    fn max_pool_prefers_the_first_tie_and_ignores_padding() {
        // 1x1x2x3 of equal negatives: padding (0) must never win.
        let g = PoolGeometry::new(&[1, 1, 2, 3], &Pool2d::new(PoolKind::Max, 2, 1, 1)).unwrap();
        let x = [-1.0f32; 6];
        assert!(forward(&g, &x).iter().all(|&v| v == -1.0));
        // dx gets each dy at the window's first element.
        let dy = vec![1.0f32; g.oh * g.ow];
        let dx = backward(Simd::Portable, &g, &x, &dy);
        // Windows (oh, ow) start at real (oh−1, ow−1) clipped: first real
        // element is (max(oh−1,0), max(ow−1,0)).
        let mut expect = [0.0f32; 6];
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                expect[oh.saturating_sub(1) * 3 + ow.saturating_sub(1)] += 1.0;
            }
        }
        assert_eq!(dx, expect);
    }

    /// dx by the definition, in f64: each window's winner under the
    /// NaN-aware rule (row-major, padding skipped) gets its dy; avg spreads
    /// dy / window over the real elements.
    fn reference_dx(g: &PoolGeometry, x: &[f32], dy: &[f32]) -> Vec<f64> {
        let p = g.params;
        let mut dx = vec![0.0f64; x.len()];
        for plane in 0..g.n * g.c {
            for oh in 0..g.oh {
                let rows = window_range(oh, p.window[0], p.stride[0], p.padding[0], g.h);
                for ow in 0..g.ow {
                    let cols = window_range(ow, p.window[1], p.stride[1], p.padding[1], g.w);
                    let grad = f64::from(dy[(plane * g.oh + oh) * g.ow + ow]);
                    let at = |ih: usize, iw: usize| (plane * g.h + ih) * g.w + iw;
                    match p.kind {
                        PoolKind::Max => {
                            let mut best = at(rows.start, cols.start);
                            for ih in rows.clone() {
                                for iw in cols.clone() {
                                    if max_pool_takes(x[at(ih, iw)], x[best]) {
                                        best = at(ih, iw);
                                    }
                                }
                            }
                            dx[best] += grad;
                        }
                        PoolKind::Avg => {
                            for ih in rows.clone() {
                                for iw in cols.clone() {
                                    dx[at(ih, iw)] += grad / g.window_len() as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        dx
    }

    #[test]
    fn every_backward_path_matches_the_definition_at_every_isa() {
        let mut rng = kernels_core::SplitMix64::new(55);
        // (input, window, stride, padding): 3x3/2 pad 1 (resnet-p0) with
        // even and odd sizes, 3 and 2 columns wide at stride 2 with and
        // without padding, 5 rows with padding 2, 2x2/2 unpadded (the
        // tiled path) with odd sizes, and one general-path geometry.
        let cases = [
            ([2, 3, 12, 10], [3, 3], [2, 2], [1, 1]),
            ([1, 2, 11, 13], [3, 3], [2, 2], [1, 1]),
            ([1, 2, 9, 8], [3, 3], [2, 2], [0, 0]),
            ([2, 1, 10, 9], [2, 3], [2, 2], [1, 1]),
            ([1, 2, 9, 11], [3, 2], [2, 2], [1, 0]),
            ([1, 2, 13, 12], [5, 3], [2, 2], [2, 1]),
            ([2, 2, 8, 10], [2, 2], [2, 2], [0, 0]),
            ([1, 3, 7, 9], [2, 2], [2, 2], [0, 0]),
            ([1, 2, 9, 7], [3, 2], [1, 3], [1, 1]),
        ];
        for (shape, window, stride, padding) in cases {
            for kind in [PoolKind::Max, PoolKind::Avg] {
                let params = kernels_core::Pool2d { kind, window, stride, padding };
                let g = PoolGeometry::new(&shape, &params).unwrap();
                // Quantised values, so max pooling sees ties; then a copy
                // with NaNs in the first plane's rows 1 and 3 (two in one
                // window where they meet) and one in the last plane.
                let x: Vec<f32> = (0..shape.iter().product::<usize>())
                    .map(|_| (rng.uniform(-1.0, 1.0) * 2.0).round() as f32)
                    .collect();
                let mut x_nan = x.clone();
                for at in [g.w + 1, g.w + 2, 3 * g.w, x.len() - 2] {
                    x_nan[at] = f32::NAN;
                }
                let dy: Vec<f32> = (0..g.n * g.c * g.oh * g.ow).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
                for x in [&x, &x_nan] {
                    let expect = reference_dx(&g, x, &dy);
                    for isa in crate::simd::Isa::supported() {
                        let dx = backward(Simd::new(isa), &g, x, &dy);
                        for (i, (&got, &e)) in dx.iter().zip(&expect).enumerate() {
                            assert!(
                                (f64::from(got) - e).abs() <= 1e-5 * (1.0 + e.abs()),
                                "{isa} {params:?} {shape:?}: dx[{i}] {got} vs {e}"
                            );
                        }
                    }
                }
            }
        }
    }
    /// The register kernels (step 57) on planes of every size class: widths
    /// and heights from 1 to past two vectors of outputs (odd and even, so
    /// an odd w's padded last column, an odd h's padded last row, partial
    /// vectors and the lane carried between vectors all occur), with ties,
    /// ±inf (an all −inf plane: padding must still never win), and NaNs
    /// scattered, including at vector boundaries, at every ISA.
    #[test]
    fn register_kernels_match_the_definition_on_every_size_at_every_isa() {
        let mut rng = kernels_core::SplitMix64::new(57);
        // 28: lenet-p1's width (14 windows: the AVX2 kernel's shifted last block).
        let sides = [1usize, 2, 3, 4, 5, 16, 17, 28, 31, 32, 33, 34, 35, 63, 64, 65, 66];
        let pools = [(PoolKind::Max, 3, 2, 1), (PoolKind::Max, 2, 2, 0)];
        for (kind, window, stride, padding) in pools {
            let params = Pool2d::new(kind, window, stride, padding);
            for (i, &h) in sides.iter().enumerate() {
                // Every width with a few heights (all pairs would be slow
                // in debug builds), including both odd-even mixes.
                for &w in sides.iter().filter(|&&w| (w + i) % 3 == 0 || h <= 3 || w <= 3) {
                    let shape = [1, 3, h, w];
                    let Ok(g) = PoolGeometry::new(&shape, &params) else { continue };
                    let len = 3 * h * w;
                    // Plane 0: ties, ±inf and NaNs; plane 1: all −inf;
                    // plane 2: ties only.
                    let x: Vec<f32> = (0..len)
                        .map(|at| match (at / (h * w), rng.next_u64() % 16) {
                            (1, _) => f32::NEG_INFINITY,
                            (0, 0) => f32::NAN,
                            (0, 1) => f32::NEG_INFINITY,
                            (0, 2) => f32::INFINITY,
                            _ => (rng.uniform(-1.0, 1.0) * 2.0).round() as f32,
                        })
                        .collect();
                    let dy: Vec<f32> = (0..3 * g.oh * g.ow).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
                    let expect = reference_dx(&g, &x, &dy);
                    for isa in crate::simd::Isa::supported() {
                        let dx = backward(Simd::new(isa), &g, &x, &dy);
                        for (i, (&got, &e)) in dx.iter().zip(&expect).enumerate() {
                            assert!(
                                (f64::from(got) - e).abs() <= 1e-5 * (1.0 + e.abs()),
                                "{isa} {params:?} {shape:?}: dx[{i}] {got} vs {e}"
                            );
                        }
                    }
                }
            }
        }
    }
}
