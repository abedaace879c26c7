//! Direct conv2d forward vectorised across blocks of 32 filters (implicit
//! GEMM), for many filters over few input channels: alexnet-c1 (3 channels,
//! 64 11x11 filters at stride 4 on 224x224 images); and, since it beat
//! unfold + GEMM there too (OPTIMISATION.md step 63), over many channels
//! onto at least 96 output pixels: mxnet-c2, resnet-s2 (128 channels, a
//! 147 KiB filter block streamed from L2: two vector loads per 16 FMAs).
//!
//! - Computes y [n, k, oh, ow] = x ⋆ w + b as the GEMM y = W·col with col
//!   never built. For such convs im2col is a gather of 363 taps per output
//!   pixel at stride 4, and matrixmultiply then copies that col tile again
//!   to pack it and splits the 363-long reduction into its 256-blocks; this
//!   kernel reads each tap's input straight from a zero-padded copy of the
//!   image (a few hundred KiB, L2-resident), as direct/filters.rs does for
//!   lenet-c2's 16 filters.
//! - Register block (AVX-512): 32 filters (two 16-lane vectors) x 8 output
//!   pixels, 16 accumulators; per tap two loads of the tap's 32 weights and
//!   eight broadcast loads of the input each pixel meets there, 16
//!   multiply-adds.
//!   Work items are (image, filter block): a block's weights (taps x 32
//!   floats, 46 KiB for alexnet-c1) stay in L1/L2 while its pixel blocks
//!   sweep the image; pixel blocks run over the flattened (oh, ow) order,
//!   the last one shifted back to end at OH·OW. Each rayon thread pads an
//!   image into a buffer it keeps and reuses it for the image's next block.
//! - Variants: AVX-512F + FMA (32 filters x 8 pixels), AVX2 + FMA (16
//!   filters x 6 pixels, two halves per block, each half's weights
//!   contiguous: 16 ymm registers), picked
//!   through simd.rs's tokens, and portable.
//! - Checked against the reference in tests/against_naive.rs and
//!   harness/tests/im2col.rs; timed by examples/im2col_bench.rs (alexnet-c1).

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};

use kernels_core::ConvGeometry;
use rayon::prelude::*;

use crate::simd::Simd;

use crate::direct::filters::{offsets, pad, padded_floats};

/// Filters per block: two 16-lane accumulators per pixel.
const FILTERS: usize = 32;
/// Output pixels per register block.
const PIXELS: usize = 8;
/// Most floats of the padded image each worker copies (4 MiB).
const MAX_PADDED_FLOATS: usize = 1 << 20;

/// Past a few input channels, the fewest output pixels per image at which
/// this kernel beats unfold + GEMM. Measured (OPTIMISATION.md step 63, 1
/// thread, AVX-512): it won by 6-20% at 100-3136 pixels (mxnet-c2,
/// resnet-s2, C up to 512 at 14x14 outputs) and lost by 9-30% at 7x7
/// outputs (C = 256 and 512), where its weights stream from L2 once per
/// 8-pixel block and the last block repeats 7 of 49 pixels.
const MIN_PIXELS_MANY_CHANNELS: usize = 96;

/// Whether this kernel takes `g`: more filters than direct/filters.rs
/// takes, a reduction of at least 64 taps, and at most 4 input channels
/// (alexnet-c1) or else at least `MIN_PIXELS_MANY_CHANNELS` output pixels
/// (mxnet-c2, resnet-s2).
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    g.k > crate::direct::filters::FILTERS
        && (g.c <= 4 || g.oh * g.ow >= MIN_PIXELS_MANY_CHANNELS)
        && g.c * g.r * g.s >= 64
        && g.oh * g.ow >= PIXELS
        && padded_floats(g) <= MAX_PADDED_FLOATS
}

/// Floats of the per-worker scratch (the padded image).
pub(crate) fn scratch_floats(g: &ConvGeometry) -> usize {
    padded_floats(g)
}

/// A thread's padded image, kept between calls so that no call allocates
/// (at most `MAX_PADDED_FLOATS`, 4 MiB, per rayon thread), and the (call,
/// image) it holds: a call number, not the input's address, because a
/// later call's input may sit where an earlier one did.
struct PaddedScratch {
    padded: Vec<f32>,
    holds: Option<(u64, usize)>,
}

thread_local! {
    static PADDED: RefCell<PaddedScratch> = const { RefCell::new(PaddedScratch { padded: Vec::new(), holds: None }) };
}

/// Numbers the calls of `forward`, for `PaddedScratch::holds`.
static CALLS: AtomicU64 = AtomicU64::new(0);

/// What every image shares: the blocked weights, offsets and bias.
struct Layout<'a> {
    /// [block][tap][32 filters], zero past K; for the AVX2 kernel
    /// [block][half][tap][16 filters] (`halved_weights`).
    wt: &'a [f32],
    tap_at: &'a [usize],
    pixel_at: &'a [usize],
    /// [block][32], zero past K.
    bias: &'a [f32],
}

/// y [n, k, oh, ow]; `applies(g)` must hold.
pub(crate) fn forward(simd: Simd, g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let taps = g.c * g.r * g.s;
    let blocks = g.k.div_ceil(FILTERS);
    // The transpose below reads w by whole filters; a short w must fail
    // here rather than leave zero weights.
    assert_eq!(w.len(), g.k * taps, "direct_wide: weights are not K x C x R x S");
    let mut wt = vec![0.0f32; blocks * taps * FILTERS];
    let halved = halved_weights(simd);
    // Block by block in parallel: done serially, this transpose (1.2 MiB
    // for resnet-s2, one scattered store per weight) was about 0.2 ms of
    // each call during which the other thread idled (OPTIMISATION.md
    // step 72).
    wt.par_chunks_mut(taps * FILTERS).enumerate().for_each(|(block, wt_block)| {
        for (lane, w_filter) in w.chunks_exact(taps).skip(block * FILTERS).take(FILTERS).enumerate() {
            // Where this filter's tap 0 goes and how far apart its taps lie:
            // [half][tap][16] for the AVX2 kernel, [tap][32] otherwise.
            let (first, step) =
                if halved { ((lane / HALF) * taps * HALF + lane % HALF, HALF) } else { (lane, FILTERS) };
            for (tap, &weight) in w_filter.iter().enumerate() {
                wt_block[first + tap * step] = weight;
            }
        }
    });
    let mut b = vec![0.0f32; blocks * FILTERS];
    if let Some(bias) = bias {
        b[..g.k].copy_from_slice(bias);
    }
    let (tap_at, pixel_at) = offsets(g);
    let layout = Layout { wt: &wt, tap_at: &tap_at, pixel_at: &pixel_at, bias: &b };
    let (image_in, image_out) = (g.c * g.h * g.w, g.k * g.oh * g.ow);
    let kernel = select_kernel(simd);
    // Every output element is written (see the SAFETY note below), so y is
    // not zeroed first (OPTIMISATION.md step 41).
    assert!(g.oh * g.ow >= PIXELS, "direct_wide: fewer pixels than a block");
    let total = g.n * image_out;
    let mut y: Vec<f32> = Vec::with_capacity(total);
    // Work items are (image, filter block), not images: alexnet-c1's batch
    // of 8 made 4 items a thread, and a thread slowed by its neighbours left
    // the other idle for up to one image. Each thread pads an image into its
    // own buffer once and keeps it for that image's next block
    // (OPTIMISATION.md step 62).
    let block_out = FILTERS * g.oh * g.ow;
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    y.spare_capacity_mut()[..total]
        .par_chunks_mut(image_out)
        .zip(x.par_chunks(image_in))
        .enumerate()
        .flat_map(|(image, (y_image, x_image))| {
            y_image.par_chunks_mut(block_out).enumerate().map(move |(block, y_block)| (image, x_image, block, y_block))
        })
        .for_each(|(image, x_image, block, y_block)| {
            PADDED.with_borrow_mut(|scratch| {
                let floats = padded_floats(g);
                if scratch.padded.len() != floats {
                    scratch.padded.clear();
                    scratch.padded.resize(floats, 0.0);
                    scratch.holds = None;
                }
                if scratch.holds != Some((call, image)) {
                    pad(g, x_image, &mut scratch.padded);
                    scratch.holds = Some((call, image));
                }
                kernel(g, &layout, &scratch.padded, block, y_block);
            });
        });
    // SAFETY: the chunks cover elements 0..total, and every block kernel
    // writes each element of its chunk: the blocks of an image cover 0..K
    // (check_block: the last is K mod 32 filters long), and pixel
    // blocks from 0 in steps of PIXELS, the last shifted back to end at
    // OH·OW, cover every pixel when OH·OW ≥ PIXELS (asserted above).
    unsafe { y.set_len(total) };
    y
}

/// Half a filter block: the AVX2 kernel's 16 filters (two 8-lane vectors).
const HALF: usize = FILTERS / 2;

/// Whether the selected kernel reads each block's weights as two halves of
/// 16 filters, [half][tap][16], rather than [tap][32]: the AVX2 kernel
/// sweeps a block half by half, and a half's taps x 16 floats (23 KiB for
/// alexnet-c1) then stay in the 32 KiB L1 while its pixel blocks run,
/// where reading every other 64 bytes of the 46 KiB block streamed it from
/// L2 (OPTIMISATION.md step 61).
fn halved_weights(simd: Simd) -> bool {
    cfg!(target_arch = "x86_64") && matches!(simd, Simd::Avx2(_))
}

/// The one-time checks every block kernel makes before its unchecked
/// reads, returning (OH·OW, taps): every input read is padded[pixel_at +
/// tap_at], so the furthest pixel plus the furthest tap must lie inside the
/// padded image; the weight and bias blocks must be whole; and `y_block`
/// must be filter block `block` of an image's output, its filters (32, or
/// K mod 32 for the last) times OH·OW floats. Checked once per block, so
/// the tap loops carry no bounds checks (they made LLVM spill the
/// accumulators on every tap).
fn check_block(g: &ConvGeometry, l: &Layout<'_>, padded: &[f32], block: usize, y_block_len: usize) -> (usize, usize) {
    let (pixels, taps) = (g.oh * g.ow, l.tap_at.len());
    let last_tap = l.tap_at.iter().copied().max().unwrap_or(0);
    let last_pixel = l.pixel_at.iter().copied().max().unwrap_or(0);
    assert!(last_pixel + last_tap < padded.len(), "direct_wide: offsets past the padded image");
    assert!(l.wt.len() >= g.k.div_ceil(FILTERS) * taps * FILTERS, "direct_wide: weight blocks too short");
    assert!(l.bias.len() >= g.k.div_ceil(FILTERS) * FILTERS, "direct_wide: bias blocks too short");
    assert!(block < g.k.div_ceil(FILTERS), "direct_wide: block {block} past K = {}", g.k);
    let filters = (g.k - block * FILTERS).min(FILTERS);
    assert_eq!(y_block_len, filters * pixels, "direct_wide: output block of the wrong length");
    (pixels, taps)
}

/// Writes a register block's outputs, staged as [pixel][filter] in `out`,
/// to the first `filters` rows of y's [filter][OH·OW] layout at pixel
/// `start`: one bounds-checked row of P pixels per filter, where
/// pixel-major order checked every store (OPTIMISATION.md step 61).
#[inline(always)]
fn write_rows<const F: usize, const P: usize>(
    out: &[[f32; F]; P],
    filters: usize,
    pixels: usize,
    start: usize,
    y_rows: &mut [MaybeUninit<f32>],
) {
    for f in 0..filters {
        let row = &mut y_rows[f * pixels + start..][..P];
        for (slot, o) in row.iter_mut().zip(out) {
            slot.write(o[f]);
        }
    }
}

/// One filter block of one image: (geometry, layout, padded image, block,
/// its output rows [filters][OH·OW]).
type BlockKernel = fn(&ConvGeometry, &Layout<'_>, &[f32], usize, &mut [MaybeUninit<f32>]);

fn select_kernel(simd: Simd) -> BlockKernel {
    crate::simd::count(simd.isa());
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512(_token) => |g, l, p, b, y| {
            // SAFETY: this pointer is made only in the arm holding an
            // Avx512Token, the proof that the CPU runs AVX-512F and FMA.
            unsafe { image_avx512(g, l, p, b, y) }
        },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(_token) => |g, l, p, b, y| {
            // SAFETY: this pointer is made only in the arm holding an
            // Avx2Token, the proof that the CPU runs AVX2 and FMA.
            unsafe { image_avx2(g, l, p, b, y) }
        },
        #[cfg(not(target_arch = "x86_64"))]
        Simd::Avx512(_) | Simd::Avx2(_) => |g, l, p, b, y| image(g, l, p, b, y, |a, v, acc| a * v + acc),
        Simd::Portable => |g, l, p, b, y| image(g, l, p, b, y, |a, v, acc| a * v + acc),
    }
}

/// The AVX-512 variant in intrinsics: written with arrays as the portable
/// one is, LLVM vectorised the 8-pixel loop with gathers instead of
/// keeping 16 accumulators in registers (60x slower), and spilled them at
/// 12 pixels.
///
/// # Safety
/// The CPU must run AVX-512F and FMA (the caller holds an `Avx512Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn image_avx512(
    g: &ConvGeometry,
    l: &Layout<'_>,
    padded: &[f32],
    block: usize,
    y_block: &mut [MaybeUninit<f32>],
) {
    use std::arch::x86_64::{__m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_storeu_ps};
    // The checks that make the unchecked reads below sound.
    let (pixels, taps) = check_block(g, l, padded, block, y_block.len());
    let mut out = [[0.0f32; FILTERS]; PIXELS];
    let w_block = &l.wt[block * taps * FILTERS..][..taps * FILTERS];
    let filters = (g.k - block * FILTERS).min(FILTERS);
    // SAFETY: the bias block holds FILTERS floats (check_block).
    let (b0, b1) = unsafe {
        let b = l.bias.as_ptr().add(block * FILTERS);
        (_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(16)))
    };
    let mut p = 0;
    while p < pixels {
        let start = p.min(pixels - PIXELS);
        // One pointer per pixel, so each broadcast is a single load from
        // pointer + tap offset (an index sum cost an extra add per load
        // and spilled a register: OPTIMISATION.md step 61).
        let at: [*const f32; PIXELS] = std::array::from_fn(|j| padded.as_ptr().wrapping_add(l.pixel_at[start + j]));
        let mut acc: [[__m512; 2]; PIXELS] = [[b0, b1]; PIXELS];
        for (tap, &tap_at) in l.tap_at.iter().enumerate() {
            // SAFETY: tap < taps, so floats tap·32 .. tap·32 + 32 lie in
            // w_block; a is padded + a pixel offset ≤ last_pixel, so a +
            // tap_at ≤ padded + last_pixel + last_tap, inside padded
            // (check_block).
            unsafe {
                let wp = w_block.as_ptr().add(tap * FILTERS);
                let (w0, w1) = (_mm512_loadu_ps(wp), _mm512_loadu_ps(wp.add(16)));
                for (lanes, &a) in acc.iter_mut().zip(&at) {
                    let v = _mm512_set1_ps(*a.add(tap_at));
                    lanes[0] = _mm512_fmadd_ps(v, w0, lanes[0]);
                    lanes[1] = _mm512_fmadd_ps(v, w1, lanes[1]);
                }
            }
        }
        for (lanes, o) in acc.iter().zip(out.iter_mut()) {
            // SAFETY: each row of `out` holds 32 floats.
            unsafe {
                _mm512_storeu_ps(o.as_mut_ptr(), lanes[0]);
                _mm512_storeu_ps(o.as_mut_ptr().add(16), lanes[1]);
            }
        }
        write_rows(&out, filters, pixels, start, y_block);
        p += PIXELS;
    }
}

/// Filters per AVX2 register block: two 8-lane vectors.
#[cfg(target_arch = "x86_64")]
const AVX2_FILTERS: usize = HALF;
/// Output pixels per AVX2 register block: 6 x 2 accumulators, two weight
/// vectors and a broadcast fill 15 of the 16 ymm registers.
#[cfg(target_arch = "x86_64")]
const AVX2_PIXELS: usize = 6;

/// The AVX2 variant in intrinsics. The portable loop built for AVX2 (what
/// ran here before, OPTIMISATION.md step 53) keeps 8 x 32 floats of accumulators,
/// 32 ymm registers of the 16 there are, and spilled them on every tap (7x
/// slower than AVX-512 under the cap). Each 32-filter block is swept as two
/// halves of 16 filters by 6 pixels: per tap two weight loads and six
/// broadcasts feed 12 multiply-adds.
///
/// # Safety
/// The CPU must run AVX2 and FMA (the caller holds an `Avx2Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn image_avx2(g: &ConvGeometry, l: &Layout<'_>, padded: &[f32], block: usize, y_block: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::{__m256, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_storeu_ps};
    // The checks that make the unchecked reads below sound; `applies`
    // guarantees OH·OW ≥ PIXELS > AVX2_PIXELS.
    let (pixels, taps) = check_block(g, l, padded, block, y_block.len());
    assert!(pixels >= AVX2_PIXELS, "direct_wide: fewer pixels than a block");
    let mut out = [[0.0f32; AVX2_FILTERS]; AVX2_PIXELS];
    let w_block = &l.wt[block * taps * FILTERS..][..taps * FILTERS];
    for half in 0..FILTERS / AVX2_FILTERS {
        let first = block * FILTERS + half * AVX2_FILTERS;
        if first >= g.k {
            break;
        }
        let filters = (g.k - first).min(AVX2_FILTERS);
        // SAFETY: the bias block holds FILTERS floats (check_block),
        // and half·16 + 16 ≤ FILTERS.
        let (b0, b1) = unsafe {
            let b = l.bias.as_ptr().add(first);
            (_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8)))
        };
        let mut p = 0;
        while p < pixels {
            let start = p.min(pixels - AVX2_PIXELS);
            let at: [*const f32; AVX2_PIXELS] =
                std::array::from_fn(|j| padded.as_ptr().wrapping_add(l.pixel_at[start + j]));
            let mut acc: [[__m256; 2]; AVX2_PIXELS] = [[b0, b1]; AVX2_PIXELS];
            for (tap, &tap_at) in l.tap_at.iter().enumerate() {
                // SAFETY: the block is [half][tap][16] (halved_weights)
                // and half < 2, tap < taps, so floats (half·taps + tap)·16
                // .. + 16 lie in its taps·32; a is padded + a pixel offset
                // ≤ last_pixel, so a + tap_at ≤ padded + last_pixel +
                // last_tap, inside padded (check_block).
                unsafe {
                    let wp = w_block.as_ptr().add((half * taps + tap) * AVX2_FILTERS);
                    let (w0, w1) = (_mm256_loadu_ps(wp), _mm256_loadu_ps(wp.add(8)));
                    for (lanes, &a) in acc.iter_mut().zip(&at) {
                        let v = _mm256_broadcast_ss(&*a.add(tap_at));
                        lanes[0] = _mm256_fmadd_ps(v, w0, lanes[0]);
                        lanes[1] = _mm256_fmadd_ps(v, w1, lanes[1]);
                    }
                }
            }
            for (lanes, o) in acc.iter().zip(out.iter_mut()) {
                // SAFETY: each row of `out` holds 16 floats.
                unsafe {
                    _mm256_storeu_ps(o.as_mut_ptr(), lanes[0]);
                    _mm256_storeu_ps(o.as_mut_ptr().add(8), lanes[1]);
                }
            }
            write_rows(&out, filters, pixels, start, &mut y_block[half * AVX2_FILTERS * pixels..]);
            p += AVX2_PIXELS;
        }
    }
}

/// One filter block of one image, in blocks of 8 pixels.
#[inline(always)]
fn image(
    g: &ConvGeometry,
    l: &Layout<'_>,
    padded: &[f32],
    block: usize,
    y_block: &mut [MaybeUninit<f32>],
    fma: impl Fn(f32, f32, f32) -> f32,
) {
    // The checks that make the unchecked reads below sound.
    let (pixels, taps) = check_block(g, l, padded, block, y_block.len());
    let w_block = &l.wt[block * taps * FILTERS..][..taps * FILTERS];
    let bias: [f32; FILTERS] = std::array::from_fn(|f| l.bias[block * FILTERS + f]);
    let filters = (g.k - block * FILTERS).min(FILTERS);
    let mut p = 0;
    while p < pixels {
        let start = p.min(pixels - PIXELS);
        let at: [usize; PIXELS] = std::array::from_fn(|j| l.pixel_at[start + j]);
        let mut acc = [bias; PIXELS];
        for (tap, &tap_at) in l.tap_at.iter().enumerate() {
            // SAFETY: tap < taps, so its 32 weights lie inside the block
            // (check_block).
            let wv = unsafe { w_block.as_ptr().add(tap * FILTERS).cast::<[f32; FILTERS]>().read_unaligned() };
            for (lanes, &a) in acc.iter_mut().zip(&at) {
                // SAFETY: a + tap_at ≤ last_pixel + last_tap <
                // padded.len(), checked by check_block.
                let v = unsafe { *padded.get_unchecked(a + tap_at) };
                for (acc_f, &w_f) in lanes.iter_mut().zip(&wv) {
                    *acc_f = fma(v, w_f, *acc_f);
                }
            }
        }
        write_rows(&acc, filters, pixels, start, y_block);
        p += PIXELS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels_core::{Conv2d, SplitMix64};

    #[test]
    fn portable_and_selected_variants_agree_with_the_definition() {
        // 40 filters (a full block and a partial one), stride 3, padding 2,
        // 26 output pixels (not a multiple of the pixel block).
        let g = ConvGeometry::from_dims([1, 2, 14, 20], [40, 6, 6], &Conv2d::new(3, 2)).unwrap();
        assert!(applies(&g), "{g:?}");
        let mut rng = SplitMix64::new(12);
        let mut data = |len: usize| (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect::<Vec<f32>>();
        let (x, w, b) = (data(2 * 14 * 20), data(40 * 2 * 36), data(40));
        for isa in crate::simd::Isa::supported() {
            let selected = forward(Simd::new(isa), &g, &x, &w, Some(&b));
            for k in 0..40 {
                for oh in 0..g.oh {
                    for ow in 0..g.ow {
                        let mut expect = b[k] as f64;
                        for c in 0..2 {
                            for r in 0..6 {
                                for s in 0..6 {
                                    let (ih, iw) = ((oh * 3 + r) as isize - 2, (ow * 3 + s) as isize - 2);
                                    if (0..14).contains(&ih) && (0..20).contains(&iw) {
                                        let xv = x[(c * 14 + ih as usize) * 20 + iw as usize] as f64;
                                        expect += w[((k * 2 + c) * 6 + r) * 6 + s] as f64 * xv;
                                    }
                                }
                            }
                        }
                        let got = selected[(k * g.oh + oh) * g.ow + ow] as f64;
                        assert!((got - expect).abs() < 1e-4, "[{k},{oh},{ow}] {got} vs {expect}");
                    }
                }
            }
            // The portable loop on the same layout gives the same outputs up to
            // fused rounding.
            let taps = 72;
            let mut wt = vec![0.0f32; 2 * taps * FILTERS];
            for k in 0..40 {
                for tap in 0..taps {
                    wt[((k / FILTERS) * taps + tap) * FILTERS + k % FILTERS] = w[k * taps + tap];
                }
            }
            let mut bias = vec![0.0f32; 2 * FILTERS];
            bias[..40].copy_from_slice(&b);
            let (tap_at, pixel_at) = offsets(&g);
            let layout = Layout { wt: &wt, tap_at: &tap_at, pixel_at: &pixel_at, bias: &bias };
            let mut padded = vec![0.0f32; padded_floats(&g)];
            pad(&g, &x, &mut padded);
            let mut portable = vec![MaybeUninit::new(f32::NAN); 40 * g.oh * g.ow];
            for (block, y_block) in portable.chunks_mut(FILTERS * g.oh * g.ow).enumerate() {
                image(&g, &layout, &padded, block, y_block, |a, v, acc| a * v + acc);
            }
            // SAFETY: every element was initialised (to NaN) above.
            let portable: Vec<f32> = portable.iter().map(|v| unsafe { v.assume_init() }).collect();
            assert!(portable.iter().all(|v| !v.is_nan()), "an output element was not written");
            for (p, s) in portable.iter().zip(&selected) {
                assert!((p - s).abs() <= 1e-5 * (1.0 + p.abs()), "portable {p} selected {s}");
            }
        }
    }
}
