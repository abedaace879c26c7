//! Backward of the filter-vectorised path (direct/filters.rs): dW without
//! im2col, for the same few-filter, small-image convs.
//!
//! - dW [k, c·r·s] = Σₙ Σₚ dy[n, k, p] · x_pad[pixel_at[p] + tap_at[t]]: the
//!   register block is 16 filters (one accumulator) x 12 taps; per output
//!   pixel one load of its 16 filters' dy and 12 broadcast FMAs of the
//!   input elements the taps meet there. Workers take runs of images and
//!   sum their partial dW at the end.
//! - dX stays with conv/backward.rs (col2im): computing it as the forward of the
//!   transposed conv through direct_filters measured 1.3x slower on
//!   lenet-c2 (OPTIMISATION.md, step 9).
//! - Variants: AVX-512F + FMA (the loop below), AVX2 + FMA in intrinsics
//!   (6 taps x two 8-lane halves: 16 ymm registers), picked through
//!   simd.rs's tokens, and portable.
//! - Checked against the reference by harness/tests/im2col.rs (property on
//!   these geometries and a gradient check); timed by examples/im2col_bench.rs
//!   (lenet-c2 backward).

use kernels_core::ConvGeometry;
use rayon::prelude::*;

use crate::simd::Simd;

use crate::direct::filters::{FILTERS, offsets, pad, padded_floats};

/// Taps per register block.
const TAPS: usize = 12;

/// dw [k, c, r, s]; `applies(g)` must hold (K ≤ 16).
pub(crate) fn backward_dw(simd: Simd, g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (tap_at, pixel_at) = offsets(g);
    let taps = tap_at.len();
    let (image_in, image_out, pixels) = (g.c * g.h * g.w, g.k * g.oh * g.ow, g.oh * g.ow);
    let per_worker = g.n.div_ceil(rayon::current_num_threads()).max(1);
    let (kernel, transpose) = select_kernel(simd);
    let total = x
        .par_chunks(per_worker * image_in)
        .zip(dy.par_chunks(per_worker * image_out))
        .map(|(x_run, dy_run)| {
            let mut partial = vec![0.0f32; taps * FILTERS];
            // Without padding the image is read in place (as in filters.rs).
            let in_place = g.params.padding == [0, 0];
            let mut padded = vec![0.0f32; if in_place { 0 } else { padded_floats(g) }];
            let mut dy_t = vec![0.0f32; pixels * FILTERS];
            for (x_image, dy_image) in x_run.chunks_exact(image_in).zip(dy_run.chunks_exact(image_out)) {
                if !in_place {
                    pad(g, x_image, &mut padded);
                }
                let padded: &[f32] = if in_place { x_image } else { &padded };
                // dy_t[p][k] = dy[k][p], zero past k (never written).
                transpose(g.k, dy_image, &mut dy_t);
                kernel(&Operands { padded, dy_t: &dy_t, tap_at: &tap_at, pixel_at: &pixel_at }, &mut partial);
            }
            partial
        })
        .reduce(
            || vec![0.0f32; taps * FILTERS],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let mut dw = vec![0.0f32; g.k * taps];
    for (t, lanes) in total.chunks_exact(FILTERS).enumerate() {
        for (k, &v) in lanes.iter().enumerate().take(g.k) {
            dw[k * taps + t] = v;
        }
    }
    dw
}

/// One image's operands for the dW kernel.
struct Operands<'a> {
    padded: &'a [f32],
    dy_t: &'a [f32],
    tap_at: &'a [usize],
    pixel_at: &'a [usize],
}

type DwKernel = fn(&Operands<'_>, &mut [f32]);
/// dy_t [p][k] = dy [k][p] for k < K (K, dy_image, dy_t).
type Transpose = fn(usize, &[f32], &mut [f32]);

fn select_kernel(simd: Simd) -> (DwKernel, Transpose) {
    crate::simd::count(simd.isa());
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512(_token) => (
            |o, acc| {
                // SAFETY: this pointer is made only in the arm holding an
                // Avx512Token, the proof that the CPU runs AVX-512F and FMA.
                unsafe { dw_avx512(o, acc) }
            },
            |k, dy, dy_t| {
                // SAFETY: as above; AVX-512F implies AVX2.
                unsafe { by_pixel_avx2(k, dy, dy_t) }
            },
        ),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(_token) => (
            |o, acc| {
                // SAFETY: this pointer is made only in the arm holding an
                // Avx2Token, the proof that the CPU runs AVX2 and FMA.
                unsafe { dw_avx2(o, acc) }
            },
            |k, dy, dy_t| {
                // SAFETY: as above.
                unsafe { by_pixel_avx2(k, dy, dy_t) }
            },
        ),
        #[cfg(not(target_arch = "x86_64"))]
        Simd::Avx512(_) | Simd::Avx2(_) => (|o, acc| dw_image(o, acc, |a, v, s| a * v + s), by_pixel),
        Simd::Portable => (|o, acc| dw_image(o, acc, |a, v, s| a * v + s), by_pixel),
    }
}

/// dy_t [p][k] = dy [k][p] for k < K, scalar.
fn by_pixel(k: usize, dy_image: &[f32], dy_t: &mut [f32]) {
    let pixels = dy_image.len() / k;
    for (f, row) in dy_image.chunks_exact(pixels).enumerate() {
        for (p, &v) in row.iter().enumerate() {
            dy_t[p * FILTERS + f] = v;
        }
    }
}

/// `by_pixel` in 8 x 8 blocks transposed in AVX registers (rows past K
/// as zeros); the last OH·OW mod 8 pixels scalar. The scalar loop it
/// replaces made 16 checked stores per pixel per image (OPTIMISATION.md
/// step 58).
///
/// # Safety
/// The CPU must run AVX2 (the caller holds an `Avx2Token` or an
/// `Avx512Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn by_pixel_avx2(k: usize, dy_image: &[f32], dy_t: &mut [f32]) {
    use std::arch::x86_64::{__m256, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps};
    let pixels = dy_image.len() / k;
    // One check for every access below: K ≤ 16 rows of `pixels` in dy,
    // `pixels` rows of 16 in dy_t.
    assert!(k <= FILTERS && dy_t.len() >= pixels * FILTERS, "direct_filters_grad: dy block too short");
    let whole = pixels - pixels % 8;
    for p0 in (0..whole).step_by(8) {
        for k0 in (0..k).step_by(8) {
            // SAFETY: loads read rows k0 + i < K of dy, columns p0 .. p0 + 8
            // ≤ pixels; stores write rows p0 + j < pixels of dy_t, lanes k0
            // .. k0 + 8 ≤ 16 (asserted above).
            unsafe {
                let r: [__m256; 8] = std::array::from_fn(|i| {
                    if k0 + i < k {
                        _mm256_loadu_ps(dy_image.as_ptr().add((k0 + i) * pixels + p0))
                    } else {
                        _mm256_setzero_ps()
                    }
                });
                let columns = crate::direct::filters::transpose8(r);
                for (j, &column) in columns.iter().enumerate() {
                    _mm256_storeu_ps(dy_t.as_mut_ptr().add((p0 + j) * FILTERS + k0), column);
                }
            }
        }
    }
    for p in whole..pixels {
        for f in 0..k {
            dy_t[p * FILTERS + f] = dy_image[f * pixels + p];
        }
    }
}

/// # Safety
/// The CPU must run AVX-512F and FMA (the caller holds an `Avx512Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn dw_avx512(o: &Operands<'_>, acc: &mut [f32]) {
    dw_image(o, acc, f32::mul_add)
}

/// Taps per AVX2 register block: 6 taps x two 8-lane halves of the 16
/// filters, the pixel's two dy halves and a broadcast fill 15 of the 16 ymm
/// registers.
#[cfg(target_arch = "x86_64")]
const AVX2_TAPS: usize = 6;

/// The AVX2 variant in intrinsics. The portable loop built for AVX2 (what
/// ran here before, OPTIMISATION.md step 55) keeps 12 taps x 16 filters of
/// accumulators, 24 ymm registers of the 16 there are, and spilled them on
/// every pixel; this one blocks 6 taps (then the 1-5 left over in one
/// block) by 16 filters.
///
/// # Safety
/// The CPU must run AVX2 and FMA (the caller holds an `Avx2Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dw_avx2(o: &Operands<'_>, total: &mut [f32]) {
    let taps = o.tap_at.len();
    let mut t0 = 0;
    while t0 < taps {
        let block = (taps - t0).min(AVX2_TAPS);
        // SAFETY: the caller holds the AVX2 + FMA proof; t0 + block ≤ taps.
        unsafe {
            match block {
                6 => dw_block_avx2::<6>(o, t0, total),
                5 => dw_block_avx2::<5>(o, t0, total),
                4 => dw_block_avx2::<4>(o, t0, total),
                3 => dw_block_avx2::<3>(o, t0, total),
                2 => dw_block_avx2::<2>(o, t0, total),
                _ => dw_block_avx2::<1>(o, t0, total),
            }
        }
        t0 += block;
    }
}

/// total [t0 .. t0 + T][16] += one image's dW for those taps.
///
/// # Safety
/// The CPU must run AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dw_block_avx2<const T: usize>(o: &Operands<'_>, t0: usize, total: &mut [f32]) {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };
    let at: [usize; T] = std::array::from_fn(|t| o.tap_at[t0 + t]);
    let last_pixel = o.pixel_at.iter().copied().max().unwrap_or(0);
    let last_tap = at.iter().copied().max().unwrap_or(0);
    // One check for every read below, as in `dw_block`.
    assert!(last_pixel + last_tap < o.padded.len(), "direct_filters_grad: offsets past the padded image");
    assert!(o.dy_t.len() >= o.pixel_at.len() * FILTERS, "direct_filters_grad: dy block too short");
    assert!(total.len() >= (t0 + T) * FILTERS, "direct_filters_grad: taps past the partial");
    let mut acc: [[__m256; 2]; T] = [[_mm256_setzero_ps(); 2]; T];
    for (p, &base) in o.pixel_at.iter().enumerate() {
        // SAFETY: p < pixel_at.len(), so its 16 dy values lie inside dy_t;
        // base + a ≤ last_pixel + last_tap < padded.len() (both asserted
        // above).
        unsafe {
            let d = o.dy_t.as_ptr().add(p * FILTERS);
            let (d0, d1) = (_mm256_loadu_ps(d), _mm256_loadu_ps(d.add(8)));
            for (lanes, &a) in acc.iter_mut().zip(&at) {
                let v = _mm256_broadcast_ss(&*o.padded.as_ptr().add(base + a));
                lanes[0] = _mm256_fmadd_ps(v, d0, lanes[0]);
                lanes[1] = _mm256_fmadd_ps(v, d1, lanes[1]);
            }
        }
    }
    for (t, lanes) in acc.iter().enumerate() {
        // SAFETY: (t0 + t + 1) · 16 ≤ total.len() (asserted above).
        unsafe {
            let out = total.as_mut_ptr().add((t0 + t) * FILTERS);
            _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), lanes[0]));
            _mm256_storeu_ps(out.add(8), _mm256_add_ps(_mm256_loadu_ps(out.add(8)), lanes[1]));
        }
    }
}

/// total [tap][16] += one image's dW, 12 taps at a time (then 4, then 1:
/// blocks cannot overlap, since they accumulate).
#[inline(always)]
fn dw_image(o: &Operands<'_>, total: &mut [f32], fma: impl Fn(f32, f32, f32) -> f32 + Copy) {
    let taps = o.tap_at.len();
    let mut t0 = 0;
    while t0 + TAPS <= taps {
        dw_block::<TAPS>(o, t0, total, fma);
        t0 += TAPS;
    }
    while t0 + 4 <= taps {
        dw_block::<4>(o, t0, total, fma);
        t0 += 4;
    }
    while t0 < taps {
        dw_block::<1>(o, t0, total, fma);
        t0 += 1;
    }
}

#[inline(always)]
fn dw_block<const T: usize>(o: &Operands<'_>, t0: usize, total: &mut [f32], fma: impl Fn(f32, f32, f32) -> f32) {
    let at: [usize; T] = std::array::from_fn(|t| o.tap_at[t0 + t]);
    let last_pixel = o.pixel_at.iter().copied().max().unwrap_or(0);
    let last_tap = at.iter().copied().max().unwrap_or(0);
    // One check for every read below (see direct/filters.rs for why).
    assert!(last_pixel + last_tap < o.padded.len(), "direct_filters_grad: offsets past the padded image");
    assert!(o.dy_t.len() >= o.pixel_at.len() * FILTERS, "direct_filters_grad: dy block too short");
    let mut acc = [[0.0f32; FILTERS]; T];
    for (p, &base) in o.pixel_at.iter().enumerate() {
        // SAFETY: p < pixel_at.len(), so its 16 values lie inside dy_t
        // (asserted above).
        let dv = unsafe { o.dy_t.as_ptr().add(p * FILTERS).cast::<[f32; FILTERS]>().read_unaligned() };
        for (lanes, &a) in acc.iter_mut().zip(&at) {
            // SAFETY: base + a ≤ last_pixel + last_tap < padded.len(),
            // asserted above.
            let v = unsafe { *o.padded.get_unchecked(base + a) };
            for (acc_f, &d) in lanes.iter_mut().zip(&dv) {
                *acc_f = fma(v, d, *acc_f);
            }
        }
    }
    for (t, lanes) in acc.iter().enumerate() {
        for (out, v) in total[(t0 + t) * FILTERS..][..FILTERS].iter_mut().zip(lanes) {
            *out += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels_core::{Conv2d, SplitMix64};

    #[test]
    fn portable_and_selected_kernels_match_the_definition() {
        // 11 filters (lanes past them zero), 3 channels x 3x3 = 27 taps
        // (AVX2 blocks 6 x 4 and 3; AVX-512 blocks 12 x 2 and 3 single),
        // stride 2 and padding 1.
        let params = Conv2d { stride: [2, 2], padding: [1, 1], dilation: [1, 1] };
        let g = ConvGeometry::from_dims([3, 3, 9, 8], [11, 3, 3], &params).unwrap();
        let mut rng = SplitMix64::new(31);
        let mut data = |len: usize| (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect::<Vec<f32>>();
        let (x, dy) = (data(3 * 3 * 9 * 8), data(3 * 11 * g.oh * g.ow));
        let taps = 27;
        let mut expect = vec![0.0f64; 11 * taps];
        for n in 0..3 {
            for k in 0..11 {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let d = f64::from(dy[((n * 11 + k) * g.oh + oy) * g.ow + ox]);
                        for t in 0..taps {
                            let (c, r, s) = (t / 9, t / 3 % 3, t % 3);
                            let (iy, ix) = ((2 * oy + r) as isize - 1, (2 * ox + s) as isize - 1);
                            if (0..9).contains(&iy) && (0..8).contains(&ix) {
                                let xv = f64::from(x[((n * 3 + c) * 9 + iy as usize) * 8 + ix as usize]);
                                expect[k * taps + t] += d * xv;
                            }
                        }
                    }
                }
            }
        }
        let portable = backward_dw(Simd::Portable, &g, &x, &dy);
        for isa in crate::simd::Isa::supported() {
            let selected = backward_dw(Simd::new(isa), &g, &x, &dy);
            for (i, ((&e, &s), &p)) in expect.iter().zip(&selected).zip(&portable).enumerate() {
                assert!((s as f64 - e).abs() < 1e-4, "{isa}: dw[{i}] {s} vs {e}");
                assert!((p - s).abs() <= 1e-5 * (1.0 + p.abs()), "{isa}: dw[{i}] portable {p} selected {s}");
            }
        }
    }
}

#[cfg(test)]
mod in_place_tests {
    use super::*;
    use kernels_core::{Conv2d, SplitMix64};

    /// Without padding the image is read in place: dW at every ISA against
    /// the f64 definition (7x8 outputs, 13 filters, 6 channels x 3x4 taps).
    #[test]
    fn unpadded_dw_matches_the_definition() {
        let g = ConvGeometry::from_dims([3, 6, 9, 11], [13, 3, 4], &Conv2d::new(1, 0)).unwrap();
        let mut rng = SplitMix64::new(19);
        let mut data = |len: usize| (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect::<Vec<f32>>();
        let (x, dy) = (data(3 * 6 * 9 * 11), data(3 * 13 * 56));
        for isa in crate::simd::Isa::supported() {
            let dw = backward_dw(Simd::new(isa), &g, &x, &dy);
            for (i, &got) in dw.iter().enumerate() {
                let (k, t) = (i / 72, i % 72);
                let (c, r, s) = (t / 12, t / 4 % 3, t % 4);
                let mut expect = 0.0f64;
                for n in 0..3 {
                    for p in 0..56 {
                        let (oh, ow) = (p / 8, p % 8);
                        let xi = ((n * 6 + c) * 9 + oh + r) * 11 + ow + s;
                        expect += f64::from(dy[(n * 13 + k) * 56 + p]) * f64::from(x[xi]);
                    }
                }
                assert!((f64::from(got) - expect).abs() < 1e-4, "{isa}: dw[{k}][{t}] {got} vs {expect}");
            }
        }
    }
}
