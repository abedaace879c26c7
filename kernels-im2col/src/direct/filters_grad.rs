//! Backward of the filter-vectorised path (direct/filters.rs): dW without
//! im2col, for the same few-filter, small-image convs.
//!
//! - dW [k, c·r·s] = Σₙ Σₚ dy[n, k, p] · x_pad[pixel_at[p] + tap_at[t]]: the
//!   register block is 16 filters (one accumulator) x 12 taps; per output
//!   pixel one load of its 16 filters' dy and 12 broadcast FMAs of the
//!   input elements the taps meet there. Workers take runs of images and
//!   sum their partial dW at the end.
//! - The same kernel over blocks of 16 filters gives the dW of
//!   direct/wide.rs's geometries (`backward_dw_blocks`, any K): work items
//!   are (filter block, run of 96 taps) over a group of padded images and
//!   their dY transposed by block, so no partial sums. The planner takes
//!   it where it beat unfold + GEMM (`blocks_beat_unfold`: resnet-s2,
//!   OPTIMISATION.md step 65).
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

use crate::simd::{Isa, Simd};

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

/// Taps per work item of `backward_dw_blocks`: 96 taps x 16 filters of dW
/// (6 KiB) per item, and enough items to balance (resnet-s2: 16 filter
/// blocks x 12 tap runs).
const RUN_TAPS: usize = 96;

/// Most floats of the images and transposed dY one group of
/// `backward_dw_blocks` holds (8 MiB: resnet-s2's 8 images in one
/// group); one image's always fits, since
/// direct/wide.rs caps its padded image at 1M floats.
const GROUP_FLOATS: usize = 1 << 21;

/// Floats one image adds to a group of `backward_dw_blocks`: its padded
/// copy (none without padding) and its dY transposed by filter block.
fn group_floats_per_image(g: &ConvGeometry) -> usize {
    let padded = if g.params.padding == [0, 0] { 0 } else { padded_floats(g) };
    padded + g.k.div_ceil(FILTERS) * FILTERS * g.oh * g.ow
}

/// Images per group of `backward_dw_blocks`.
fn group_images(g: &ConvGeometry) -> usize {
    (GROUP_FLOATS / group_floats_per_image(g)).clamp(1, g.n)
}

/// Scratch floats of `backward_dw_blocks`, once per call: one group's
/// padded images and transposed dY, and dW by block.
pub(crate) fn blocks_scratch_floats(g: &ConvGeometry) -> usize {
    let taps = g.c * g.r * g.s;
    group_images(g) * group_floats_per_image(g) + g.k.div_ceil(FILTERS) * FILTERS * taps
}

/// Whether dW by filter blocks (`backward_dw_blocks`) beats unfold + GEMM
/// on `g`, a direct_wide forward's geometry, at `isa`. Measured
/// (OPTIMISATION.md step 65, backward dX + dW + db, Zen 4): it won at
/// both ISAs, 1 and 2 threads, where the input has more than 4 channels
/// and K fills its 16-filter blocks (resnet-s2 -3..-23%, 96 -> 256
/// filters 5x5 on 27x27 -16..-26%, two stride-2 shapes 1-16%). With 3
/// channels (alexnet-c1, whose unfold GEMM reduces over 3025 pixels) it
/// lost 14% at AVX-512 and won 4-12% at AVX2; with K = 50 (mxnet-c2, 50
/// of 64 lanes) it lost 4-10% in medians at AVX-512 and was mixed at
/// AVX2. Not measured at the portable level, which keeps unfold + GEMM.
pub(crate) fn blocks_beat_unfold(isa: Isa, g: &ConvGeometry) -> bool {
    match isa {
        Isa::Avx512 => g.c > 4 && g.k.is_multiple_of(FILTERS),
        Isa::Avx2 => g.k.is_multiple_of(FILTERS),
        Isa::Portable => false,
    }
}

/// dw [k, c, r, s] for any K (the direct_wide forward's geometries):
/// the 16-filter kernel of `backward_dw` over blocks of 16 filters.
/// Unfold + GEMM computes the same sums through an im2col tile per image
/// and a GEMM whose reduction is the image's pixels (196 on resnet-s2),
/// so each col tile is written once and read once; here the padded image
/// is read in place (OPTIMISATION.md step 64).
///
/// Images go in groups of at most `GROUP_FLOATS` of scratch; within a
/// group the work items are (filter block, run of `RUN_TAPS` taps), each
/// summing every image and pixel into its own part of dW, so there are no
/// partial sums to add.
pub(crate) fn backward_dw_blocks(simd: Simd, g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    backward_dw_blocks_grouped(simd, g, x, dy, group_images(g))
}

/// `backward_dw_blocks` with `group` images per group (≥ 1).
fn backward_dw_blocks_grouped(simd: Simd, g: &ConvGeometry, x: &[f32], dy: &[f32], group: usize) -> Vec<f32> {
    let group = group.max(1);
    let (tap_at, pixel_at) = offsets(g);
    let taps = tap_at.len();
    let (image_in, image_out, pixels) = (g.c * g.h * g.w, g.k * g.oh * g.ow, g.oh * g.ow);
    let blocks = g.k.div_ceil(FILTERS);
    let (kernel, transpose) = select_kernel(simd);
    let in_place = g.params.padding == [0, 0];
    let per_padded = if in_place { image_in } else { padded_floats(g) };
    let per_dy_t = pixels * FILTERS;
    let mut padded = vec![0.0f32; if in_place { 0 } else { group * per_padded }];
    let mut dy_t = vec![0.0f32; blocks * group * per_dy_t];
    // dW by block, [block][tap][16], zero past K.
    let mut total = vec![0.0f32; blocks * taps * FILTERS];
    for (x_group, dy_group) in x.chunks(group * image_in).zip(dy.chunks(group * image_out)) {
        let images_here = x_group.len() / image_in;
        let images: &[f32] = if in_place {
            x_group
        } else {
            padded[..images_here * per_padded]
                .par_chunks_mut(per_padded)
                .zip(x_group.par_chunks(image_in))
                .for_each(|(out, x_image)| pad(g, x_image, out));
            &padded[..images_here * per_padded]
        };
        // dy_t [block][image of the group][pixel][16]. Lanes past K are
        // never written (zero), and their sums are dropped below anyway. A
        // shorter last group leaves its slots past `images_here` unread.
        dy_t.par_chunks_mut(per_dy_t).enumerate().filter(|(i, _)| i % group < images_here).for_each(|(i, out)| {
            let (block, image) = (i / group, i % group);
            let rows = (g.k - block * FILTERS).min(FILTERS);
            transpose(rows, &dy_group[image * image_out + block * FILTERS * pixels..][..rows * pixels], out);
        });
        let dy_t: &[f32] = &dy_t;
        total
            .par_chunks_mut(taps * FILTERS)
            .enumerate()
            .flat_map(|(block, by_tap)| {
                by_tap.par_chunks_mut(RUN_TAPS * FILTERS).enumerate().map(move |(run, part)| (block, run, part))
            })
            .for_each(|(block, run, part)| {
                let t0 = run * RUN_TAPS;
                let run_taps = &tap_at[t0..(t0 + RUN_TAPS).min(taps)];
                for (image, padded) in images.chunks_exact(per_padded).enumerate() {
                    let dy_t = &dy_t[(block * group + image) * per_dy_t..][..per_dy_t];
                    kernel(&Operands { padded, dy_t, tap_at: run_taps, pixel_at: &pixel_at }, part);
                }
            });
    }
    let mut dw = vec![0.0f32; g.k * taps];
    for (k, row) in dw.chunks_exact_mut(taps).enumerate() {
        let (block, lane) = (k / FILTERS, k % FILTERS);
        for (t, out) in row.iter_mut().enumerate() {
            *out = total[(block * taps + t) * FILTERS + lane];
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
mod blocks_tests {
    use super::*;
    use kernels_core::{Conv2d, SplitMix64};

    /// dW by filter blocks at every ISA against the f64 definition: 5
    /// images in groups of 2, 2 and 1 (the last group shorter), 40
    /// filters (the third block partial), 12 channels x
    /// 3x3 = 108 taps (a run of 96 and one of 12), padded and unpadded, stride 1 and 2.
    #[test]
    fn grouped_blocks_match_the_definition() {
        for (stride, padding) in [(2, 1), (1, 0)] {
            let g = ConvGeometry::from_dims([5, 12, 11, 10], [40, 3, 3], &Conv2d::new(stride, padding)).unwrap();
            let mut rng = SplitMix64::new(41);
            let mut data = |len: usize| (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect::<Vec<f32>>();
            let pixels = g.oh * g.ow;
            let (x, dy) = (data(5 * 12 * 11 * 10), data(5 * 40 * pixels));
            let taps = 108;
            let mut expect = vec![0.0f64; 40 * taps];
            for n in 0..5 {
                for k in 0..40 {
                    for p in 0..pixels {
                        let d = f64::from(dy[(n * 40 + k) * pixels + p]);
                        let (oy, ox) = (p / g.ow, p % g.ow);
                        for t in 0..taps {
                            let (c, r, s) = (t / 9, t / 3 % 3, t % 3);
                            let iy = (stride * oy + r) as isize - padding as isize;
                            let ix = (stride * ox + s) as isize - padding as isize;
                            if (0..11).contains(&iy) && (0..10).contains(&ix) {
                                expect[k * taps + t] +=
                                    d * f64::from(x[((n * 12 + c) * 11 + iy as usize) * 10 + ix as usize]);
                            }
                        }
                    }
                }
            }
            for isa in crate::simd::Isa::supported() {
                for group in [2, 5] {
                    let dw = backward_dw_blocks_grouped(Simd::new(isa), &g, &x, &dy, group);
                    for (i, (&got, &e)) in dw.iter().zip(&expect).enumerate() {
                        assert!(
                            (f64::from(got) - e).abs() < 1e-4,
                            "{isa} stride {stride} group {group}: dw[{i}] {got} vs {e}"
                        );
                    }
                }
            }
            // The public entry point's group (all 5 here).
            assert_eq!(group_images(&g), 5);
        }
    }

    #[test]
    fn the_group_bound_holds_and_keeps_one_image() {
        // resnet-s2: 8 images of 115200 padded + 16 blocks x 196 x 16 floats.
        let s2 = ConvGeometry::from_dims([8, 128, 28, 28], [256, 3, 3], &Conv2d::new(2, 1)).unwrap();
        assert_eq!(group_images(&s2), 8);
        assert!(group_images(&s2) * group_floats_per_image(&s2) <= GROUP_FLOATS);
        // One image past the bound still forms a group of one.
        let big = ConvGeometry::from_dims([4, 8, 200, 200], [64, 3, 3], &Conv2d::new(1, 1)).unwrap();
        assert!(group_floats_per_image(&big) > GROUP_FLOATS);
        assert_eq!(group_images(&big), 1);
        assert_eq!(blocks_scratch_floats(&big), group_floats_per_image(&big) + 64 * 72);
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
