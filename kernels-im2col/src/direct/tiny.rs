//! Direct conv2d forward for tiny reductions (the im2col path's exception).
//!
//! - Computes y [n, k, oh, ow] = x ⋆ w + b like conv/mod.rs, for stride 1,
//!   dilation 1, OW ≥ 16 and C·R·S ≤ [`DIRECT_MAX_TAPS`]: lenet-c1
//!   (1x28x28, 6 5x5 filters) and simplecnn-c1. There the GEMM's reduction
//!   (k = C·R·S = 25) is too short to amortise sgemm's packing and C
//!   traffic, and lenet-c1's 6 filters fill only 6 of the 16 rows of its
//!   register tile; unfolding would also write 25 floats per input float.
//! - Register block: 6 filters x 2 output rows x 16 output columns, twelve
//!   16-lane accumulators updated by one fused multiply-add per tap and
//!   filter; the input is copied once per image into a zero-padded plane so
//!   the inner loop has no bounds logic. A row's last 16-column chunk is
//!   shifted left to end at OW (recomputing a few columns) rather than
//!   masked.
//! - Variants: the loop below compiled for AVX-512F + FMA and plain
//!   (portable, no fused multiply-add), and an AVX2 + FMA one in intrinsics
//!   with one output row per block (16 ymm registers), picked through
//!   simd.rs's tokens.
//! - Checked against the reference by tests/against_naive.rs and the
//!   harness suite (any geometry meeting `applies`); timed by
//!   examples/im2col_bench.rs (lenet-c1, simplecnn-c1 forward).

use std::mem::MaybeUninit;

use kernels_core::ConvGeometry;
use rayon::prelude::*;

use crate::simd::Simd;

/// Largest C·R·S the direct path takes.
pub const DIRECT_MAX_TAPS: usize = 64;
/// Output columns per accumulator (one AVX-512 register of f32).
const LANES: usize = 16;
/// Filters per register block.
const FILTERS: usize = 6;

/// Whether the direct kernel handles `g`.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    g.params.stride == [1, 1] && g.params.dilation == [1, 1] && g.ow >= LANES && g.c * g.r * g.s <= DIRECT_MAX_TAPS
}

/// Weights regrouped as [filter block][tap][FILTERS][LANES], each weight
/// repeated across the 16 lanes (zero past k): the kernel then loads a
/// ready vector instead of loading a scalar and broadcasting it.
fn block_weights(g: &ConvGeometry, w: &[f32]) -> Vec<f32> {
    let taps = g.c * g.r * g.s;
    let blocks = g.k.div_ceil(FILTERS);
    let mut out = vec![0.0f32; blocks * taps * FILTERS * LANES];
    for k in 0..g.k {
        let (block, f) = (k / FILTERS, k % FILTERS);
        for tap in 0..taps {
            out[((block * taps + tap) * FILTERS + f) * LANES..][..LANES].fill(w[k * taps + tap]);
        }
    }
    out
}

/// y [n, k, oh, ow]; `applies(g)` must hold (checked by the caller).
pub(crate) fn forward(simd: Simd, g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let wb = block_weights(g, w);
    let (image_in, image_out) = (g.c * g.h * g.w, g.k * g.oh * g.ow);
    let padded_len = g.c * (g.h + 2 * g.params.padding[0]) * (g.w + 2 * g.params.padding[1]);
    // `image` writes every output element (see its docs), so y is not
    // zeroed first: on these small, fast convs the zeroing pass over the
    // 4.8-6.9 MB output cost 25-35% (OPTIMISATION.md step 40).
    assert!(applies(g), "direct: geometry outside the kernel's cover");
    let total = g.n * image_out;
    let mut y: Vec<f32> = Vec::with_capacity(total);
    let kernel = select_kernel(simd);
    y.spare_capacity_mut()[..total].par_chunks_mut(image_out).zip(x.par_chunks(image_in)).for_each_init(
        || vec![0.0f32; padded_len],
        |padded, (y_image, x_image)| kernel(g, x_image, &wb, bias, y_image, padded),
    );
    // SAFETY: the chunks cover elements 0..total, and `image` wrote every
    // element of each: filter blocks cover 0..K, row pairs 0..OH, and
    // column chunks from 0 in steps of 16, the last shifted back to end at
    // OW, cover 0..OW, which takes OW ≥ 16 (`applies`, asserted above).
    unsafe { y.set_len(total) };
    y
}

type ImageKernel = fn(&ConvGeometry, &[f32], &[f32], Option<&[f32]>, &mut [MaybeUninit<f32>], &mut [f32]);

/// The best variant this CPU runs.
fn select_kernel(simd: Simd) -> ImageKernel {
    crate::simd::count(simd.isa());
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512(_token) => |g, x, w, b, y, p| {
            // SAFETY: this pointer is made only in the arm holding an
            // Avx512Token, the proof that the CPU runs AVX-512F and FMA.
            unsafe { image_avx512(g, x, w, b, y, p) }
        },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(_token) => |g, x, w, b, y, p| {
            // SAFETY: this pointer is made only in the arm holding an
            // Avx2Token, the proof that the CPU runs AVX2 and FMA.
            unsafe { image_avx2(g, x, w, b, y, p) }
        },
        #[cfg(not(target_arch = "x86_64"))]
        Simd::Avx512(_) | Simd::Avx2(_) => |g, x, w, b, y, p| image(g, x, w, b, y, p, |a, v, acc| a * v + acc),
        Simd::Portable => |g, x, w, b, y, p| image(g, x, w, b, y, p, |a, v, acc| a * v + acc),
    }
}

/// # Safety
/// The CPU must run AVX-512F and FMA (the caller holds an `Avx512Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn image_avx512(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [MaybeUninit<f32>],
    p: &mut [f32],
) {
    image(g, x, w, b, y, p, f32::mul_add)
}

/// The AVX2 variant in intrinsics. The shared loop built for AVX2 (what ran
/// here before, OPTIMISATION.md step 53) keeps 2 rows x 6 filters x 16
/// lanes of accumulators, 24 ymm registers of the 16 there are, and
/// spilled them on every tap (3x slower than AVX-512 under the cap). This
/// one takes one output row at a time: 6 filters x two 8-lane vectors = 12
/// accumulators, two input loads per tap, and the pre-broadcast weights
/// read as memory operands of the multiply-adds.
///
/// # Safety
/// The CPU must run AVX2 and FMA (the caller holds an `Avx2Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn image_avx2(
    g: &ConvGeometry,
    x_image: &[f32],
    wb: &[f32],
    bias: Option<&[f32]>,
    y_image: &mut [MaybeUninit<f32>],
    padded: &mut [f32],
) {
    use std::arch::x86_64::{__m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_storeu_ps};
    pad_planes(g, x_image, padded);
    let [ph, pw] = g.params.padding;
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    let taps = g.c * g.r * g.s;
    let plane_out = g.oh * g.ow;
    // The furthest element any row reads: last channel, row OH − 1 + R − 1,
    // column OW − 16 + S − 1 + 15; checked once, so the unchecked loads
    // below are sound. OW ≥ 16 (`applies`) keeps the last chunk in the row.
    assert!(g.ow >= LANES, "direct: fewer columns than a chunk");
    let last = ((g.c - 1) * hp + g.oh - 1 + g.r - 1) * wp + g.ow - LANES + g.s - 1 + LANES - 1;
    assert!(last < padded.len(), "direct: tile reads past the padded image");
    assert!(wb.len() >= g.k.div_ceil(FILTERS) * taps * FILTERS * LANES, "direct: weight blocks too short");
    assert!(y_image.len() >= g.k * plane_out, "direct: output image too short");
    let x_ptr = padded.as_ptr();
    for block in 0..g.k.div_ceil(FILTERS) {
        let w_ptr = wb[block * taps * FILTERS * LANES..].as_ptr();
        let k0 = block * FILTERS;
        let filters = FILTERS.min(g.k - k0);
        let mut b = [0.0f32; FILTERS];
        if let Some(bias) = bias {
            b[..filters].copy_from_slice(&bias[k0..k0 + filters]);
        }
        for oh in 0..g.oh {
            let mut ow = 0;
            while ow < g.ow {
                let start = ow.min(g.ow - LANES);
                let mut acc: [[__m256; 2]; FILTERS] = std::array::from_fn(|f| [_mm256_set1_ps(b[f]); 2]);
                let mut tap = 0;
                for c in 0..g.c {
                    for r in 0..g.r {
                        let row_at = (c * hp + oh + r) * wp + start;
                        for s in 0..g.s {
                            // SAFETY: row_at + s + 15 ≤ last < padded.len(),
                            // and tap < C·R·S, so the tap's FILTERS x LANES
                            // weights lie in the block (both asserted above).
                            unsafe {
                                let xp = x_ptr.add(row_at + s);
                                let (x0, x1) = (_mm256_loadu_ps(xp), _mm256_loadu_ps(xp.add(8)));
                                let wt = w_ptr.add(tap * FILTERS * LANES);
                                for (f, lanes) in acc.iter_mut().enumerate() {
                                    let wv = _mm256_loadu_ps(wt.add(f * LANES));
                                    lanes[0] = _mm256_fmadd_ps(wv, x0, lanes[0]);
                                    lanes[1] = _mm256_fmadd_ps(wv, x1, lanes[1]);
                                }
                            }
                            tap += 1;
                        }
                    }
                }
                for (f, lanes) in acc.iter().enumerate().take(filters) {
                    let at = (k0 + f) * plane_out + oh * g.ow + start;
                    let out = &mut y_image[at..at + LANES];
                    // SAFETY: `out` holds 16 elements, and MaybeUninit<f32>
                    // has f32's layout.
                    unsafe {
                        let op = out.as_mut_ptr().cast::<f32>();
                        _mm256_storeu_ps(op, lanes[0]);
                        _mm256_storeu_ps(op.add(8), lanes[1]);
                    }
                }
                ow += LANES;
            }
        }
    }
}

/// The image with its zero border, [c, h + 2·ph, w + 2·pw].
#[inline(always)]
fn pad_planes(g: &ConvGeometry, x_image: &[f32], padded: &mut [f32]) {
    let [ph, pw] = g.params.padding;
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    for c in 0..g.c {
        let plane = &mut padded[c * hp * wp..][..hp * wp];
        plane.fill(0.0);
        for ih in 0..g.h {
            plane[(ih + ph) * wp + pw..][..g.w].copy_from_slice(&x_image[(c * g.h + ih) * g.w..][..g.w]);
        }
    }
}

/// One image: pad it, then walk filter blocks, row pairs and column
/// chunks. Writes every element of y_image when OW ≥ 16.
#[inline(always)]
fn image(
    g: &ConvGeometry,
    x_image: &[f32],
    wb: &[f32],
    bias: Option<&[f32]>,
    y_image: &mut [MaybeUninit<f32>],
    padded: &mut [f32],
    fma: impl Fn(f32, f32, f32) -> f32 + Copy,
) {
    pad_planes(g, x_image, padded);
    let taps = g.c * g.r * g.s;
    let plane_out = g.oh * g.ow;
    for block in 0..g.k.div_ceil(FILTERS) {
        let weights = &wb[block * taps * FILTERS * LANES..][..taps * FILTERS * LANES];
        let k0 = block * FILTERS;
        let filters = FILTERS.min(g.k - k0);
        let mut b = [0.0f32; FILTERS];
        if let Some(bias) = bias {
            b[..filters].copy_from_slice(&bias[k0..k0 + filters]);
        }
        let mut oh = 0;
        while oh < g.oh {
            let rows = if oh + 1 < g.oh { 2 } else { 1 };
            let mut ow = 0;
            while ow < g.ow {
                let start = ow.min(g.ow - LANES);
                let store = |acc: &[[f32; LANES]], q: usize, y_image: &mut [MaybeUninit<f32>]| {
                    for (f, lanes) in acc.iter().enumerate().take(filters) {
                        let at = (k0 + f) * plane_out + (oh + q) * g.ow + start;
                        for (out, &v) in y_image[at..at + LANES].iter_mut().zip(lanes) {
                            out.write(v);
                        }
                    }
                };
                if rows == 2 {
                    let acc = tile::<2>(g, padded, weights, oh, start, b, fma);
                    store(&acc[0], 0, y_image);
                    store(&acc[1], 1, y_image);
                } else {
                    let acc = tile::<1>(g, padded, weights, oh, start, b, fma);
                    store(&acc[0], 0, y_image);
                }
                ow += LANES;
            }
            oh += rows;
        }
    }
}

/// Accumulators [row][filter][lane] of ROWS output rows from `oh`, 16
/// columns from `ow`, 6 filters.
#[inline(always)]
fn tile<const ROWS: usize>(
    g: &ConvGeometry,
    padded: &[f32],
    weights: &[f32],
    oh: usize,
    ow: usize,
    bias: [f32; FILTERS],
    fma: impl Fn(f32, f32, f32) -> f32 + Copy,
) -> [[[f32; LANES]; FILTERS]; ROWS] {
    let [ph, pw] = g.params.padding;
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    let mut acc = [[[0.0f32; LANES]; FILTERS]; ROWS];
    for row in acc.iter_mut() {
        for (f, lanes) in row.iter_mut().enumerate() {
            *lanes = [bias[f]; LANES];
        }
    }
    // The furthest element read below: last channel, row oh + ROWS − 1 +
    // R − 1, column ow + S − 1 + 15. One check here replaces a bounds check
    // per load (which kept LLVM from keeping the loop tight).
    let last = ((g.c - 1) * hp + oh + ROWS - 1 + g.r - 1) * wp + ow + g.s - 1 + LANES - 1;
    assert!(last < padded.len(), "direct: tile reads past the padded image");
    assert!(weights.len() >= g.c * g.r * g.s * FILTERS * LANES, "direct: weight block too short");
    let (x_ptr, w_ptr) = (padded.as_ptr(), weights.as_ptr());
    let mut tap = 0;
    for c in 0..g.c {
        for r in 0..g.r {
            for s in 0..g.s {
                // SAFETY: tap < C·R·S, so the tap's FILTERS x LANES weights
                // lie inside `weights` (asserted above).
                let wt = unsafe { w_ptr.add(tap * FILTERS * LANES).cast::<[[f32; LANES]; FILTERS]>().read_unaligned() };
                for (q, row) in acc.iter_mut().enumerate() {
                    let at = (c * hp + oh + q + r) * wp + ow + s;
                    // SAFETY: at + 15 ≤ last < padded.len() (asserted above).
                    let xv = unsafe { x_ptr.add(at).cast::<[f32; LANES]>().read_unaligned() };
                    for (lanes, wf) in row.iter_mut().zip(&wt) {
                        for ((a, &v), &wl) in lanes.iter_mut().zip(&xv).zip(wf) {
                            *a = fma(wl, v, *a);
                        }
                    }
                }
                tap += 1;
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels_core::{Conv2d, SplitMix64};

    #[test]
    fn every_variant_computes_the_same_outputs() {
        let g = ConvGeometry::from_dims([1, 2, 19, 21], [7, 3, 3], &Conv2d::new(1, 1)).unwrap();
        assert!(applies(&g));
        let mut rng = SplitMix64::new(3);
        let x: Vec<f32> = (0..2 * 19 * 21).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let w: Vec<f32> = (0..7 * 2 * 9).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let b: Vec<f32> = (0..7).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let wb = block_weights(&g, &w);
        let mut padded = vec![0.0f32; 2 * 21 * 23];
        let out = || vec![MaybeUninit::new(f32::NAN); 7 * 19 * 21];
        let mut portable = out();
        image(&g, &x, &wb, Some(&b), &mut portable, &mut padded, |a, v, acc| a * v + acc);
        // SAFETY: every element was initialised (to NaN) by `out`.
        let portable: Vec<f32> = portable.iter().map(|v| unsafe { v.assume_init() }).collect();
        assert!(portable.iter().all(|v| !v.is_nan()), "an output element was not written");
        for isa in crate::simd::Isa::supported() {
            let mut selected = out();
            select_kernel(Simd::new(isa))(&g, &x, &wb, Some(&b), &mut selected, &mut padded);
            // Every element written (none left NaN), then read as f32.
            // SAFETY: every element was initialised (to NaN) by `out`.
            let selected: Vec<f32> = selected.iter().map(|v| unsafe { v.assume_init() }).collect();
            assert!(selected.iter().all(|v| !v.is_nan()), "{isa}: an output element was not written");
            // Direct sums of 18 products: fused and unfused agree to rounding.
            for (i, (p, s)) in portable.iter().zip(&selected).enumerate() {
                assert!((p - s).abs() <= 1e-5 * (1.0 + p.abs()), "{isa}: [{i}] portable {p} selected {s}");
            }
        }
        // Spot-check one output against the definition.
        let (k, oh, ow) = (5, 0, 20);
        let mut expect = b[k];
        for c in 0..2 {
            for r in 0..3 {
                for s in 0..3 {
                    let (ih, iw) = ((oh + r) as isize - 1, (ow + s) as isize - 1);
                    if (0..19).contains(&ih) && (0..21).contains(&iw) {
                        expect += w[((k * 2 + c) * 3 + r) * 3 + s] * x[(c * 19 + ih as usize) * 21 + iw as usize];
                    }
                }
            }
        }
        let got = portable[(k * 19 + oh) * 21 + ow];
        assert!((got - expect).abs() < 1e-5, "{got} vs {expect}");
    }
}
