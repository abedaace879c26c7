//! Direct conv2d forward vectorised across filters (implicit GEMM), for few
//! filters on small images.
//!
//! - Computes y [n, k, oh, ow] = x ⋆ w + b like conv/mod.rs when K ≤ 16, the
//!   image has fewer output pixels than a GEMM tile wants (so im2col would
//!   group images) and C·R·S ≥ 64: lenet-c2 (6x14x14, 16 5x5 filters). Any
//!   stride, padding and dilation.
//! - It is the GEMM y = W·col with col never built: the register block is
//!   16 filters (one 16-lane accumulator) x 12 output pixels (10 at
//!   AVX-512 where that repeats fewer pixels: lenet-c2's 100); per filter tap
//!   one load of the tap's 16 weights and 12 broadcast multiply-adds of the
//!   input element each pixel meets there, read straight from a zero-padded
//!   copy of the image (the image itself when unpadded) at precomputed
//!   offsets. Pixel blocks run over the flattened (oh, ow) order, so OW =
//!   10 wastes nothing; the last block is shifted back to end at OH·OW.
//!   Blocks store whole [pixel][16 filters] rows into a per-worker scratch,
//!   transposed to y's [filter][pixel] once per image (8 x 8 AVX blocks at
//!   AVX2 and AVX-512).
//! - Variants: AVX-512F + FMA (the loop below, 12 or 10 pixels), AVX2 + FMA in
//!   intrinsics (6 pixels x two 8-lane vectors: 16 ymm registers), picked
//!   through simd.rs's tokens, and portable.
//! - Checked against the reference in harness/tests/im2col.rs and
//!   tests/against_naive.rs; timed by examples/im2col_bench.rs (lenet-c2 forward).

use kernels_core::ConvGeometry;
use rayon::prelude::*;

use crate::simd::Simd;

/// Filters per block: one 16-lane accumulator.
pub(crate) const FILTERS: usize = 16;
/// Output pixels per register block.
const PIXELS: usize = 12;

/// Whether this kernel takes `g` (the caller also checks its scratch).
pub(crate) fn applies(g: &ConvGeometry, tile_columns: usize) -> bool {
    g.k <= FILTERS && g.oh * g.ow >= PIXELS && g.oh * g.ow < tile_columns && g.c * g.r * g.s >= 64
}

/// Floats of one zero-padded image, the per-worker scratch.
pub(crate) fn padded_floats(g: &ConvGeometry) -> usize {
    g.c * (g.h + 2 * g.params.padding[0]) * (g.w + 2 * g.params.padding[1])
}

/// y [n, k, oh, ow]; `applies(g)` must hold.
pub(crate) fn forward(simd: Simd, g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let taps = g.c * g.r * g.s;
    // Weights as [tap][16 filters], zero past k.
    let mut wt = vec![0.0f32; taps * FILTERS];
    for k in 0..g.k {
        for tap in 0..taps {
            wt[tap * FILTERS + k] = w[k * taps + tap];
        }
    }
    let (tap_at, pixel_at) = offsets(g);
    let mut b = [0.0f32; FILTERS];
    if let Some(bias) = bias {
        b[..g.k].copy_from_slice(bias);
    }
    let layout = Layout { wt: &wt, tap_at: &tap_at, pixel_at: &pixel_at, bias: b };
    let (image_in, image_out) = (g.c * g.h * g.w, g.k * g.oh * g.ow);
    let kernel = select_kernel(simd);
    let mut y = vec![0.0f32; g.n * image_out];
    // Without padding the padded image is the image itself: read it in
    // place (lenet-c2: a copy of 84 rows of 14 floats per image, one
    // memcpy call each, saved; OPTIMISATION.md step 58).
    let in_place = g.params.padding == [0, 0];
    y.par_chunks_mut(image_out).zip(x.par_chunks(image_in)).for_each_init(
        || (vec![0.0f32; if in_place { 0 } else { padded_floats(g) }], vec![0.0f32; g.oh * g.ow * FILTERS]),
        |(padded, by_pixel), (y_image, x_image)| {
            if in_place {
                kernel(g, &layout, x_image, by_pixel, y_image);
            } else {
                pad(g, x_image, padded);
                kernel(g, &layout, padded, by_pixel, y_image);
            }
        },
    );
    y
}

/// Offsets in the padded image of each tap (c, r, s) and of each output
/// pixel (oh, ow): the input element tap t meets at pixel p is
/// padded[pixel_at[p] + tap_at[t]].
pub(crate) fn offsets(g: &ConvGeometry) -> (Vec<usize>, Vec<usize>) {
    let [ph, pw] = g.params.padding;
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    let [sh, sw] = g.params.stride;
    let [dh, dw] = g.params.dilation;
    let mut tap_at = Vec::with_capacity(g.c * g.r * g.s);
    for c in 0..g.c {
        for r in 0..g.r {
            for s in 0..g.s {
                tap_at.push(c * hp * wp + r * dh * wp + s * dw);
            }
        }
    }
    let pixel_at = (0..g.oh * g.ow).map(|p| (p / g.ow) * sh * wp + (p % g.ow) * sw).collect();
    (tap_at, pixel_at)
}

/// What every image shares: blocked weights, offsets, bias.
struct Layout<'a> {
    wt: &'a [f32],
    tap_at: &'a [usize],
    pixel_at: &'a [usize],
    bias: [f32; FILTERS],
}

/// The image with its zero border, [c, h + 2·ph, w + 2·pw].
pub(crate) fn pad(g: &ConvGeometry, x_image: &[f32], padded: &mut [f32]) {
    let [ph, pw] = g.params.padding;
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    assert_eq!(padded.len(), padded_floats(g), "pad: scratch is not one padded image");
    assert_eq!(x_image.len(), g.c * g.h * g.w, "pad: input is not one image");
    // Only the border is zeroed: filling the whole image first wrote the
    // interior twice (OPTIMISATION.md step 61).
    for (plane, x_plane) in padded.chunks_exact_mut(hp * wp).zip(x_image.chunks_exact(g.h * g.w)) {
        let (top, rest) = plane.split_at_mut(ph * wp);
        let (rows, bottom) = rest.split_at_mut(g.h * wp);
        top.fill(0.0);
        bottom.fill(0.0);
        for (row, x_row) in rows.chunks_exact_mut(wp).zip(x_plane.chunks_exact(g.w)) {
            let (left, rest) = row.split_at_mut(pw);
            let (inside, right) = rest.split_at_mut(g.w);
            left.fill(0.0);
            inside.copy_from_slice(x_row);
            right.fill(0.0);
        }
    }
}

/// One image: (geometry, layout, padded image, by-pixel scratch of OH·OW x
/// 16 floats, y_image).
type ImageKernel = fn(&ConvGeometry, &Layout<'_>, &[f32], &mut [f32], &mut [f32]);

fn select_kernel(simd: Simd) -> ImageKernel {
    crate::simd::count(simd.isa());
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512(_token) => |g, l, p, t, y| {
            // SAFETY: this pointer is made only in the arm holding an
            // Avx512Token, the proof that the CPU runs AVX-512F and FMA.
            unsafe { image_avx512(g, l, p, t, y) }
        },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(_token) => |g, l, p, t, y| {
            // SAFETY: this pointer is made only in the arm holding an
            // Avx2Token, the proof that the CPU runs AVX2 and FMA.
            unsafe { image_avx2(g, l, p, t, y) }
        },
        #[cfg(not(target_arch = "x86_64"))]
        Simd::Avx512(_) | Simd::Avx2(_) => |g, l, p, t, y| {
            image::<PIXELS>(g, l, p, t, |a, v, acc| a * v + acc);
            by_filter(g.k, t, y);
        },
        Simd::Portable => |g, l, p, t, y| {
            image::<PIXELS>(g, l, p, t, |a, v, acc| a * v + acc);
            by_filter(g.k, t, y);
        },
    }
}

/// # Safety
/// The CPU must run AVX-512F and FMA (the caller holds an `Avx512Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn image_avx512(g: &ConvGeometry, l: &Layout<'_>, padded: &[f32], by_pixel: &mut [f32], y: &mut [f32]) {
    if tens_waste_less(g.oh * g.ow) {
        image::<10>(g, l, padded, by_pixel, f32::mul_add);
    } else {
        image::<PIXELS>(g, l, padded, by_pixel, f32::mul_add);
    }
    // SAFETY: AVX-512F implies AVX2 (the caller holds an Avx512Token).
    unsafe { by_filter_avx2(g.k, by_pixel, y) }
}

/// The 8 x 8 transposition: lane j of row i to lane i of row j (8
/// unpacks, 8 shuffles, 8 lane permutes).
///
/// # Safety
/// The CPU must run AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn transpose8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::{_mm256_permute2f128_ps, _mm256_shuffle_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps};
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let s = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    [
        _mm256_permute2f128_ps::<0x20>(s[0], s[4]),
        _mm256_permute2f128_ps::<0x20>(s[1], s[5]),
        _mm256_permute2f128_ps::<0x20>(s[2], s[6]),
        _mm256_permute2f128_ps::<0x20>(s[3], s[7]),
        _mm256_permute2f128_ps::<0x31>(s[0], s[4]),
        _mm256_permute2f128_ps::<0x31>(s[1], s[5]),
        _mm256_permute2f128_ps::<0x31>(s[2], s[6]),
        _mm256_permute2f128_ps::<0x31>(s[3], s[7]),
    ]
}

/// y [k][p] = by_pixel [p][k] for k < K: the scalar transposition.
fn by_filter(k: usize, by_pixel: &[f32], y_image: &mut [f32]) {
    let pixels = y_image.len() / k;
    for (p, lanes) in by_pixel.chunks_exact(FILTERS).take(pixels).enumerate() {
        for (f, &v) in lanes.iter().enumerate().take(k) {
            y_image[f * pixels + p] = v;
        }
    }
}

/// `by_filter` in 8 x 8 blocks transposed in AVX registers (8 loads, 24
/// shuffles, 8 stores per 64 floats); the last OH·OW mod 8 pixels as
/// scalars. The per-block scalar scatter it replaces was 16 checked
/// scalar stores per pixel, ~13% of the AVX2 kernel's instructions on
/// lenet-c2 (OPTIMISATION.md step 58).
///
/// # Safety
/// The CPU must run AVX2 (the caller holds an `Avx2Token` or an
/// `Avx512Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn by_filter_avx2(k: usize, by_pixel: &[f32], y_image: &mut [f32]) {
    use std::arch::x86_64::{__m256, _mm256_loadu_ps, _mm256_storeu_ps};
    let pixels = y_image.len() / k;
    // One check for every access below: K ≤ 16 rows of `pixels` in
    // y_image, `pixels` rows of 16 in by_pixel.
    assert!(k <= FILTERS && by_pixel.len() >= pixels * FILTERS, "direct_filters: by-pixel block too short");
    let whole = pixels - pixels % 8;
    for p0 in (0..whole).step_by(8) {
        for k0 in (0..k).step_by(8) {
            // SAFETY: rows p0 .. p0 + 8 < pixels of by_pixel, lanes k0 ..
            // k0 + 8 ≤ 16; stores go to rows k0 + j < K of y_image, columns
            // p0 .. p0 + 8 ≤ pixels (asserted above).
            unsafe {
                let r: [__m256; 8] =
                    std::array::from_fn(|i| _mm256_loadu_ps(by_pixel.as_ptr().add((p0 + i) * FILTERS + k0)));
                // Column j of the 8 x 8 block: lane k0 + j of the 8 pixels.
                let columns = transpose8(r);
                for (j, &column) in columns.iter().enumerate().take(k - k0) {
                    _mm256_storeu_ps(y_image.as_mut_ptr().add((k0 + j) * pixels + p0), column);
                }
            }
        }
    }
    for p in whole..pixels {
        for f in 0..k {
            y_image[f * pixels + p] = by_pixel[p * FILTERS + f];
        }
    }
}

/// Output pixels per AVX2 register block: 6 x 2 accumulators, two weight
/// vectors and a broadcast fill 15 of the 16 ymm registers.
#[cfg(target_arch = "x86_64")]
const AVX2_PIXELS: usize = 6;

/// The AVX2 variant in intrinsics. The portable loop built for AVX2 (what
/// ran here before, OPTIMISATION.md step 53) keeps 12 x 16 accumulators,
/// 24 ymm registers of the 16 there are, and spilled them on every tap; this
/// one blocks 16 filters (two 8-lane vectors) by 6 pixels: per tap two
/// weight loads and six broadcasts feed 12 multiply-adds.
///
/// # Safety
/// The CPU must run AVX2 and FMA (the caller holds an `Avx2Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn image_avx2(g: &ConvGeometry, l: &Layout<'_>, padded: &[f32], by_pixel: &mut [f32], y_image: &mut [f32]) {
    use std::arch::x86_64::{__m256, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_storeu_ps};
    let pixels = g.oh * g.ow;
    let last_tap = l.tap_at.iter().copied().max().unwrap_or(0);
    let last_pixel = l.pixel_at.iter().copied().max().unwrap_or(0);
    // Checked once, so the unchecked reads below are sound; `applies`
    // guarantees OH·OW ≥ PIXELS > AVX2_PIXELS.
    assert!(last_pixel + last_tap < padded.len(), "direct_filters: offsets past the padded image");
    assert!(l.wt.len() >= l.tap_at.len() * FILTERS, "direct_filters: weight block too short");
    assert!(pixels >= AVX2_PIXELS, "direct_filters: fewer pixels than a block");
    assert!(by_pixel.len() >= pixels * FILTERS, "direct_filters: by-pixel block too short");
    // SAFETY: the bias array holds FILTERS = 16 floats.
    let (b0, b1) = unsafe { (_mm256_loadu_ps(l.bias.as_ptr()), _mm256_loadu_ps(l.bias.as_ptr().add(8))) };
    let mut p = 0;
    while p < pixels {
        let start = p.min(pixels - AVX2_PIXELS);
        let at: [usize; AVX2_PIXELS] = std::array::from_fn(|j| l.pixel_at[start + j]);
        let mut acc: [[__m256; 2]; AVX2_PIXELS] = [[b0, b1]; AVX2_PIXELS];
        for (tap, &tap_at) in l.tap_at.iter().enumerate() {
            // SAFETY: tap < tap_at.len(), so its 16 weights lie inside wt;
            // a + tap_at ≤ last_pixel + last_tap < padded.len() (both
            // asserted above).
            unsafe {
                let wp = l.wt.as_ptr().add(tap * FILTERS);
                let (w0, w1) = (_mm256_loadu_ps(wp), _mm256_loadu_ps(wp.add(8)));
                for (lanes, &a) in acc.iter_mut().zip(&at) {
                    let v = _mm256_broadcast_ss(&*padded.as_ptr().add(a + tap_at));
                    lanes[0] = _mm256_fmadd_ps(v, w0, lanes[0]);
                    lanes[1] = _mm256_fmadd_ps(v, w1, lanes[1]);
                }
            }
        }
        for (j, lanes) in acc.iter().enumerate() {
            // SAFETY: start + j < pixels, a row of 16 inside by_pixel
            // (asserted above).
            unsafe {
                let o = by_pixel.as_mut_ptr().add((start + j) * FILTERS);
                _mm256_storeu_ps(o, lanes[0]);
                _mm256_storeu_ps(o.add(8), lanes[1]);
            }
        }
        p += AVX2_PIXELS;
    }
    // SAFETY: the caller holds the AVX2 proof.
    unsafe { by_filter_avx2(g.k, by_pixel, y_image) }
}

/// Whether blocks of 10 pixels cover `pixels` with fewer repeated pixels
/// than blocks of 12 (whose last block is shifted back over the one before
/// it): lenet-c2's 100 pixels take 10 blocks of 10, where 9 blocks of 12
/// computed 108 (OPTIMISATION.md step 69). Only the AVX-512 kernel asks.
#[cfg(any(target_arch = "x86_64", test))]
fn tens_waste_less(pixels: usize) -> bool {
    pixels.div_ceil(10) * 10 < pixels.div_ceil(PIXELS) * PIXELS
}

/// One image, block of P pixels by block (the last shifted back); P ≤
/// OH·OW (`applies` asks for at least 12).
#[inline(always)]
fn image<const P: usize>(
    g: &ConvGeometry,
    l: &Layout<'_>,
    padded: &[f32],
    by_pixel: &mut [f32],
    fma: impl Fn(f32, f32, f32) -> f32,
) {
    let pixels = g.oh * g.ow;
    assert!(pixels >= P, "direct_filters: fewer pixels than a block");
    let last_tap = l.tap_at.iter().copied().max().unwrap_or(0);
    let mut p = 0;
    while p < pixels {
        let start = p.min(pixels - P);
        let at: [usize; P] = std::array::from_fn(|j| l.pixel_at[start + j]);
        // Every read below is padded[at[j] + tap_at] with at[j] ≤ the last
        // pixel's offset and tap_at ≤ the last tap's: check that sum once
        // per block, so the inner loop needs no bounds checks (they made
        // LLVM spill the accumulators to the stack on every tap).
        let last_pixel = at.iter().copied().max().unwrap_or(0);
        assert!(last_pixel + last_tap < padded.len(), "direct_filters: offsets past the padded image");
        assert!(l.wt.len() >= l.tap_at.len() * FILTERS, "direct_filters: weight block too short");
        let mut acc = [l.bias; P];
        for (tap, &tap_at) in l.tap_at.iter().enumerate() {
            // SAFETY: tap < tap_at.len(), so its 16 weights lie inside wt
            // (asserted above).
            let wv = unsafe { l.wt.as_ptr().add(tap * FILTERS).cast::<[f32; FILTERS]>().read_unaligned() };
            for (lanes, &a) in acc.iter_mut().zip(&at) {
                // SAFETY: a + tap_at ≤ last_pixel + last_tap < padded.len(),
                // asserted above.
                let v = unsafe { *padded.get_unchecked(a + tap_at) };
                for (acc_f, &w_f) in lanes.iter_mut().zip(&wv) {
                    *acc_f = fma(v, w_f, *acc_f);
                }
            }
        }
        // Whole 16-lane rows, [pixel][filter]; the caller transposes.
        for (row, lanes) in by_pixel[start * FILTERS..][..P * FILTERS].chunks_exact_mut(FILTERS).zip(&acc) {
            row.copy_from_slice(lanes);
        }
        p += P;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels_core::{Conv2d, SplitMix64};

    #[test]
    fn portable_and_selected_variants_agree_with_the_definition() {
        let params = Conv2d { stride: [2, 1], padding: [1, 2], dilation: [1, 2] };
        let g = ConvGeometry::from_dims([2, 8, 9, 7], [11, 3, 3], &params).unwrap();
        assert!(applies(&g, 512), "{g:?}");
        let mut rng = SplitMix64::new(8);
        let mut data = |len: usize| (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect::<Vec<f32>>();
        let (x, w, b) = (data(2 * 8 * 9 * 7), data(11 * 8 * 9), data(11));
        for isa in crate::simd::Isa::supported() {
            let selected = forward(Simd::new(isa), &g, &x, &w, Some(&b));
            for (n, k, oh, ow) in [(0, 0, 0, 0), (1, 10, g.oh - 1, g.ow - 1), (1, 3, 2, 4)] {
                let mut expect = b[k];
                for c in 0..8 {
                    for r in 0..3 {
                        for s in 0..3 {
                            let ih = (oh * 2 + r) as isize - 1;
                            let iw = (ow + 2 * s) as isize - 2;
                            if (0..9).contains(&ih) && (0..7).contains(&iw) {
                                let xi = ((n * 8 + c) * 9 + ih as usize) * 7 + iw as usize;
                                expect += w[((k * 8 + c) * 3 + r) * 3 + s] * x[xi];
                            }
                        }
                    }
                }
                let got = selected[((n * 11 + k) * g.oh + oh) * g.ow + ow];
                assert!((got - expect).abs() < 1e-4, "[{n},{k},{oh},{ow}] {got} vs {expect}");
            }
            // The portable loop gives the same outputs up to fused rounding.
            let taps = 72;
            let mut wt = vec![0.0f32; taps * FILTERS];
            for k in 0..11 {
                for tap in 0..taps {
                    wt[tap * FILTERS + k] = w[k * taps + tap];
                }
            }
            let selected_first = &selected[..11 * g.oh * g.ow];
            let hp_wp = (9 + 2) * (7 + 4);
            let tap_at: Vec<usize> =
                (0..taps).map(|t| (t / 9) * hp_wp + ((t / 3) % 3) * (7 + 4) + (t % 3) * 2).collect();
            let pixel_at: Vec<usize> = (0..g.oh * g.ow).map(|p| (p / g.ow) * 2 * (7 + 4) + p % g.ow).collect();
            let mut bias = [0.0f32; FILTERS];
            bias[..11].copy_from_slice(&b);
            let layout = Layout { wt: &wt, tap_at: &tap_at, pixel_at: &pixel_at, bias };
            let mut padded = vec![0.0f32; padded_floats(&g)];
            pad(&g, &x[..8 * 9 * 7], &mut padded);
            let mut portable = vec![0.0f32; 11 * g.oh * g.ow];
            let mut by_pixel = vec![0.0f32; g.oh * g.ow * FILTERS];
            image::<PIXELS>(&g, &layout, &padded, &mut by_pixel, |a, v, acc| a * v + acc);
            by_filter(11, &by_pixel, &mut portable);
            for (p, s) in portable.iter().zip(selected_first) {
                assert!((p - s).abs() <= 1e-5 * (1.0 + p.abs()), "portable {p} selected {s}");
            }
        }
    }
}

#[cfg(test)]
mod in_place_tests {
    use super::*;
    use kernels_core::{Conv2d, SplitMix64};

    /// Without padding the kernels read the image in place: every output
    /// at every ISA against the f64 definition, odd sizes (7x8 outputs,
    /// 13 filters, 6 channels x 3x4 taps).
    #[test]
    fn unpadded_forward_matches_the_definition() {
        let g = ConvGeometry::from_dims([3, 6, 9, 11], [13, 3, 4], &Conv2d::new(1, 0)).unwrap();
        assert!(applies(&g, 512), "{g:?}");
        let mut rng = SplitMix64::new(9);
        let mut data = |len: usize| (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect::<Vec<f32>>();
        let (x, w, b) = (data(3 * 6 * 9 * 11), data(13 * 72), data(13));
        for isa in crate::simd::Isa::supported() {
            let y = forward(Simd::new(isa), &g, &x, &w, Some(&b));
            for (i, &got) in y.iter().enumerate() {
                let (n, k, oh, ow) = (i / (13 * 56), i / 56 % 13, i / 8 % 7, i % 8);
                let mut expect = f64::from(b[k]);
                for t in 0..72 {
                    let (c, r, s) = (t / 12, t / 4 % 3, t % 4);
                    let xi = ((n * 6 + c) * 9 + oh + r) * 11 + ow + s;
                    expect += f64::from(w[k * 72 + t]) * f64::from(x[xi]);
                }
                assert!((f64::from(got) - expect).abs() < 1e-4, "{isa}: y[{n},{k},{oh},{ow}] {got} vs {expect}");
            }
        }
    }

    /// lenet-c2's kind (10x10 outputs: blocks of 10 at AVX-512) and a
    /// 7x8 one (56 pixels: blocks of 12 and 10 both waste 4, so 12), every
    /// output at every ISA against the f64 definition.
    #[test]
    fn ten_and_twelve_pixel_blocks_match_the_definition() {
        assert!(tens_waste_less(100) && !tens_waste_less(56) && !tens_waste_less(144) && tens_waste_less(20));
        for (input, filters) in [([3, 6, 14, 14], [13, 5, 5]), ([2, 8, 9, 10], [16, 3, 3])] {
            let g = ConvGeometry::from_dims(input, filters, &Conv2d::new(1, 0)).unwrap();
            assert!(applies(&g, 512), "{g:?}");
            let mut rng = SplitMix64::new(10);
            let mut data = |len: usize| (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect::<Vec<f32>>();
            let [n, c, h, w] = input;
            let [k, r, s] = filters;
            let (x, wt, b) = (data(n * c * h * w), data(k * c * r * s), data(k));
            for isa in crate::simd::Isa::supported() {
                let y = forward(Simd::new(isa), &g, &x, &wt, Some(&b));
                for (i, &got) in y.iter().enumerate() {
                    let (image, f, oy, ox) = (i / (k * g.oh * g.ow), i / (g.oh * g.ow) % k, i / g.ow % g.oh, i % g.ow);
                    let mut expect = f64::from(b[f]);
                    for ch in 0..c {
                        for dy in 0..r {
                            for dx in 0..s {
                                let xv = x[((image * c + ch) * h + oy + dy) * w + ox + dx];
                                expect += f64::from(wt[((f * c + ch) * r + dy) * s + dx]) * f64::from(xv);
                            }
                        }
                    }
                    assert!((f64::from(got) - expect).abs() < 1e-4, "{isa} {input:?}: y[{i}] {got} vs {expect}");
                }
            }
        }
    }
}
