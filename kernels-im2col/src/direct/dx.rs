//! dX of a stride-1 conv on narrow images without col2im: lenet-c2's dx.
//!
//! - dx [n, c, iy, ix] = Σ_k Σ_r Σ_s dy[n, k, iy + ph − r, ix + pw − s] ·
//!   w[k, c, r, s], over the (r, s) that land inside dy. col2im's route
//!   (Wᵀ·dY into a [C·R·S, pixels] buffer, then a scatter-add of it) writes
//!   and re-reads 25 floats per input pixel for a 5x5 kernel; this reads dy
//!   and writes dx once.
//! - Vectorised over input columns: an input row of at most 16 columns is
//!   one 16-lane vector. Each image's dy is copied into rows zero-padded on
//!   both sides, so the vector of dy for tap s is one unaligned load and the
//!   padding lanes add nothing. Register block: up to 8 input channels, one
//!   16-lane accumulator each; per (k, r, s) one load of dy and one
//!   multiply-add per channel with a broadcast weight (weights transposed
//!   once to [k, r, s, c] so a tap's channels sit together).
//! - Rayon over images; no scratch beyond one padded dy per worker.
//! - Variants: AVX-512F + FMA (the loop below), AVX2 + FMA in intrinsics
//!   (up to 6 channels x two 8-lane halves: 16 ymm registers), picked
//!   through simd.rs's tokens, and portable.
//! - Checked against the reference by tests/against_naive.rs and
//!   harness/tests/im2col.rs (the filter-vectorised path's backward); timed
//!   by examples/im2col_bench.rs (lenet-c2 backward).

use kernels_core::ConvGeometry;
use rayon::prelude::*;

use crate::simd::Simd;

/// Lanes of one accumulator, and the widest input row this kernel takes.
const LANES: usize = 16;
/// Most input channels per register block.
const CHANNELS: usize = 8;

/// Whether this kernel computes dX for `g`: stride 1, dilation 1, input
/// rows of at most 16 columns.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    g.params.stride == [1, 1] && g.params.dilation == [1, 1] && g.w <= LANES && g.s <= LANES
}

/// Row width of the padded dy: S − 1 zeros, then the shift by pw, then a
/// whole vector past any tap (and at least the row itself).
fn dy_width(g: &ConvGeometry) -> usize {
    (g.s - 1 + g.params.padding[1] + LANES).max(g.s - 1 + g.ow)
}

/// One image's operands.
struct Operands<'a> {
    g: &'a ConvGeometry,
    /// [k][oh][dy_width]: dy row ox sits at column S − 1 + ox.
    dy_pad: &'a [f32],
    /// Per block of channels (as `dx_image` takes them), the block's
    /// weights as [k][r][s][c in block].
    w_blocks: &'a [Vec<f32>],
}

/// dx [n, c, h, w] from dy and w; `applies(g)` must hold.
pub(crate) fn backward_dx(simd: Simd, g: &ConvGeometry, w: &[f32], dy: &[f32]) -> Vec<f32> {
    assert!(applies(g), "direct_dx: geometry not supported");
    let rs = g.r * g.s;
    let w_blocks: Vec<Vec<f32>> = (0..g.c)
        .step_by(CHANNELS)
        .map(|c0| {
            let block = (g.c - c0).min(CHANNELS);
            let mut w_t = vec![0.0f32; g.k * rs * block];
            for k in 0..g.k {
                for c in 0..block {
                    for t in 0..rs {
                        w_t[(k * rs + t) * block + c] = w[(k * g.c + c0 + c) * rs + t];
                    }
                }
            }
            w_t
        })
        .collect();
    let (image_in, image_out) = (g.c * g.h * g.w, g.k * g.oh * g.ow);
    let width = dy_width(g);
    let mut dx = vec![0.0f32; g.n * image_in];
    let (kernel, pad_rows) = select_kernel(simd);
    dx.par_chunks_mut(image_in).zip(dy.par_chunks(image_out)).for_each_init(
        || vec![0.0f32; g.k * g.oh * width],
        |dy_pad, (dx_image, dy_image)| {
            pad_rows(g, dy_image, dy_pad);
            kernel(&Operands { g, dy_pad, w_blocks: &w_blocks }, dx_image);
        },
    );
    dx
}

type DxKernel = fn(&Operands<'_>, &mut [f32]);
/// Copies one image's dy rows into the padded rows (see [`dy_width`]).
type PadRows = fn(&ConvGeometry, &[f32], &mut [f32]);

fn select_kernel(simd: Simd) -> (DxKernel, PadRows) {
    crate::simd::count(simd.isa());
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512(_token) => (
            |o, dx| {
                // SAFETY: this pointer is made only in the arm holding an
                // Avx512Token, the proof that the CPU runs AVX-512F and FMA.
                unsafe { dx_avx512(o, dx) }
            },
            |g, dy, dy_pad| {
                // SAFETY: as above.
                unsafe { pad_rows_avx512(g, dy, dy_pad) }
            },
        ),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(_token) => (
            |o, dx| {
                // SAFETY: this pointer is made only in the arm holding an
                // Avx2Token, the proof that the CPU runs AVX2 and FMA.
                unsafe { dx_avx2(o, dx) }
            },
            |g, dy, dy_pad| {
                // SAFETY: as above.
                unsafe { pad_rows_avx2(g, dy, dy_pad) }
            },
        ),
        #[cfg(not(target_arch = "x86_64"))]
        Simd::Avx512(_) | Simd::Avx2(_) => (|o, dx| dx_image(o, dx, |a, b, c| a * b + c), pad_rows),
        Simd::Portable => (|o, dx| dx_image(o, dx, |a, b, c| a * b + c), pad_rows),
    }
}

/// dy row j at columns S − 1 .. S − 1 + OW of padded row j; the columns
/// around it stay zero from the allocation (no row writes there).
fn pad_rows(g: &ConvGeometry, dy_image: &[f32], dy_pad: &mut [f32]) {
    for (row, padded) in dy_image.chunks_exact(g.ow).zip(dy_pad.chunks_exact_mut(dy_width(g))) {
        padded[g.s - 1..g.s - 1 + g.ow].copy_from_slice(row);
    }
}

/// `pad_rows` with one masked 16-lane load and one store per row: the
/// slice copy called memcpy once per row of OW ≤ 16 floats, 160 calls per
/// lenet-c2 image (OPTIMISATION.md step 58). Lanes past OW load as zero,
/// so the store rewrites the zeros after the row.
///
/// # Safety
/// The CPU must run AVX-512F (the caller holds an `Avx512Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pad_rows_avx512(g: &ConvGeometry, dy_image: &[f32], dy_pad: &mut [f32]) {
    use std::arch::x86_64::{_mm512_maskz_loadu_ps, _mm512_storeu_ps};
    let width = dy_width(g);
    let rows = g.k * g.oh;
    // `applies` bounds W, not OW: padding can make dy rows wider than a
    // vector, and those take the slice copy.
    if g.ow > LANES {
        return pad_rows(g, dy_image, dy_pad);
    }
    // One check for every access below: each row's 16-lane window S − 1 ..
    // S + 15 ends inside its padded row (width ≥ S − 1 + 16), and both
    // buffers hold every row.
    assert!(width >= g.s - 1 + LANES, "direct_dx: rows wider than a vector");
    assert!(dy_image.len() >= rows * g.ow && dy_pad.len() >= rows * width, "direct_dx: rows past the buffers");
    let mask = ((1u32 << g.ow) - 1) as u16;
    for j in 0..rows {
        // SAFETY: the masked load reads only row j's OW floats; the store
        // writes 16 floats inside padded row j (asserted above).
        unsafe {
            let v = _mm512_maskz_loadu_ps(mask, dy_image.as_ptr().add(j * g.ow));
            _mm512_storeu_ps(dy_pad.as_mut_ptr().add(j * width + g.s - 1), v);
        }
    }
}

/// `pad_rows` with two masked 8-lane loads and stores per row (as
/// `pad_rows_avx512`).
///
/// # Safety
/// The CPU must run AVX2 (the caller holds an `Avx2Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pad_rows_avx2(g: &ConvGeometry, dy_image: &[f32], dy_pad: &mut [f32]) {
    use std::arch::x86_64::{
        _mm256_cmpgt_epi32, _mm256_maskload_ps, _mm256_set1_epi32, _mm256_setr_epi32, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };
    let width = dy_width(g);
    let rows = g.k * g.oh;
    // Rows wider than a vector as in `pad_rows_avx512`.
    if g.ow > LANES {
        return pad_rows(g, dy_image, dy_pad);
    }
    // One check for every access below, as in `pad_rows_avx512`.
    assert!(width >= g.s - 1 + LANES, "direct_dx: rows wider than a vector");
    assert!(dy_image.len() >= rows * g.ow && dy_pad.len() >= rows * width, "direct_dx: rows past the buffers");
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let low = _mm256_cmpgt_epi32(_mm256_set1_epi32(g.ow as i32), lane);
    let high = _mm256_cmpgt_epi32(_mm256_set1_epi32(g.ow as i32 - 8), lane);
    for j in 0..rows {
        // SAFETY: the masked loads read only row j's OW floats (the second
        // runs only when OW > 8, so its address lies inside the row); the
        // stores write 16 floats inside padded row j (asserted above).
        unsafe {
            let (src, dst) = (dy_image.as_ptr().add(j * g.ow), dy_pad.as_mut_ptr().add(j * width + g.s - 1));
            _mm256_storeu_ps(dst, _mm256_maskload_ps(src, low));
            let upper = if g.ow > 8 { _mm256_maskload_ps(src.add(8), high) } else { _mm256_setzero_ps() };
            _mm256_storeu_ps(dst.add(8), upper);
        }
    }
}

/// # Safety
/// The CPU must run AVX-512F and FMA (the caller holds an `Avx512Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn dx_avx512(o: &Operands<'_>, dx: &mut [f32]) {
    dx_image(o, dx, f32::mul_add)
}

/// Most channels per AVX2 register block: 6 channels x two 8-lane halves
/// of accumulators, the two halves of dy and a broadcast weight fill 15 of
/// the 16 ymm registers.
#[cfg(target_arch = "x86_64")]
const AVX2_CHANNELS: usize = 6;

/// The AVX2 variant in intrinsics. The portable loop built for AVX2 (what
/// ran here before, OPTIMISATION.md step 55) keeps 8 channels x 16 lanes of
/// accumulators, 16 ymm registers before dy and the weight, and spilled on
/// every tap; this one splits each block of up to 8 channels into passes
/// of at most 6 (8 -> 4 + 4, 7 -> 4 + 3), each holding its channels' two
/// halves of the 16-column row in registers.
///
/// # Safety
/// The CPU must run AVX2 and FMA (the caller holds an `Avx2Token`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dx_avx2(o: &Operands<'_>, dx: &mut [f32]) {
    for (b, w_block) in o.w_blocks.iter().enumerate() {
        let c0 = b * CHANNELS;
        let block = (o.g.c - c0).min(CHANNELS);
        let passes = block.div_ceil(AVX2_CHANNELS);
        let mut first = 0;
        for pass in 0..passes {
            // Even split: the first `block % passes` passes take one more.
            let size = block / passes + usize::from(pass < block % passes);
            // SAFETY: the caller holds the AVX2 + FMA proof; the pass's
            // channels lie inside the block (first + size ≤ block).
            unsafe {
                match size {
                    6 => dx_pass_avx2::<6>(o, c0, block, first, w_block, dx),
                    5 => dx_pass_avx2::<5>(o, c0, block, first, w_block, dx),
                    4 => dx_pass_avx2::<4>(o, c0, block, first, w_block, dx),
                    3 => dx_pass_avx2::<3>(o, c0, block, first, w_block, dx),
                    2 => dx_pass_avx2::<2>(o, c0, block, first, w_block, dx),
                    _ => dx_pass_avx2::<1>(o, c0, block, first, w_block, dx),
                }
            }
            first += size;
        }
    }
}

/// Channels c0 + first .. c0 + first + C of one image's dx; `block` is the
/// channel count of the weight block they sit in (its stride per tap).
///
/// # Safety
/// The CPU must run AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dx_pass_avx2<const C: usize>(
    o: &Operands<'_>,
    c0: usize,
    block: usize,
    first: usize,
    w_block: &[f32],
    dx: &mut [f32],
) {
    use std::arch::x86_64::{
        __m256, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };
    let g = o.g;
    let width = dy_width(g);
    let (ph, pw) = (g.params.padding[0], g.params.padding[1]);
    let rs = g.r * g.s;
    // One check for every read below, as in `dx_block`.
    assert!(g.k * g.oh * width <= o.dy_pad.len(), "direct_dx: dy rows past the padded dy");
    assert!(first + C <= block && g.k * rs * block <= w_block.len(), "direct_dx: weights past the block");
    assert!(c0 + first + C <= g.c && g.c * g.h * g.w <= dx.len(), "direct_dx: channels past dx");
    let mut out = [0.0f32; LANES];
    for iy in 0..g.h {
        let top = iy + ph;
        let (r_first, r_last) = (top.saturating_sub(g.oh - 1), top.min(g.r - 1));
        let mut acc: [[__m256; 2]; C] = [[_mm256_setzero_ps(); 2]; C];
        for k in 0..g.k {
            for r in r_first..=r_last {
                let row = (k * g.oh + top - r) * width;
                for s in 0..g.s {
                    let at = row + g.s - 1 + pw - s;
                    let tap = (k * rs + r * g.s + s) * block + first;
                    // SAFETY: at + 16 ≤ row + width ≤ dy_pad.len() (as in
                    // `dx_block`); the tap's C weights end at (k·rs + r·S +
                    // s)·block + first + C ≤ (k + 1)·rs·block ≤ K·rs·block ≤
                    // w_block.len() (asserted above).
                    unsafe {
                        let d = o.dy_pad.as_ptr().add(at);
                        let (d0, d1) = (_mm256_loadu_ps(d), _mm256_loadu_ps(d.add(8)));
                        let wp = w_block.as_ptr().add(tap);
                        for (c, lanes) in acc.iter_mut().enumerate() {
                            let wv = _mm256_broadcast_ss(&*wp.add(c));
                            lanes[0] = _mm256_fmadd_ps(d0, wv, lanes[0]);
                            lanes[1] = _mm256_fmadd_ps(d1, wv, lanes[1]);
                        }
                    }
                }
            }
        }
        for (c, lanes) in acc.iter().enumerate() {
            // SAFETY: `out` holds 16 floats.
            unsafe {
                _mm256_storeu_ps(out.as_mut_ptr(), lanes[0]);
                _mm256_storeu_ps(out.as_mut_ptr().add(8), lanes[1]);
            }
            dx[((c0 + first + c) * g.h + iy) * g.w..][..g.w].copy_from_slice(&out[..g.w]);
        }
    }
}

/// One image's dx, blocks of up to 8 channels.
#[inline(always)]
fn dx_image(o: &Operands<'_>, dx: &mut [f32], fma: impl Fn(f32, f32, f32) -> f32 + Copy) {
    for (b, w_block) in o.w_blocks.iter().enumerate() {
        let c0 = b * CHANNELS;
        match (o.g.c - c0).min(CHANNELS) {
            8 => dx_block::<8>(o, c0, w_block, dx, fma),
            7 => dx_block::<7>(o, c0, w_block, dx, fma),
            6 => dx_block::<6>(o, c0, w_block, dx, fma),
            5 => dx_block::<5>(o, c0, w_block, dx, fma),
            4 => dx_block::<4>(o, c0, w_block, dx, fma),
            3 => dx_block::<3>(o, c0, w_block, dx, fma),
            2 => dx_block::<2>(o, c0, w_block, dx, fma),
            _ => dx_block::<1>(o, c0, w_block, dx, fma),
        }
    }
}

#[inline(always)]
fn dx_block<const C: usize>(
    o: &Operands<'_>,
    c0: usize,
    w_block: &[f32],
    dx: &mut [f32],
    fma: impl Fn(f32, f32, f32) -> f32,
) {
    let g = o.g;
    let width = dy_width(g);
    let (ph, pw) = (g.params.padding[0], g.params.padding[1]);
    let rs = g.r * g.s;
    // One check for every dy read below: the farthest tap (s = 0) of the
    // last row of the last filter.
    assert!(g.k * g.oh * width <= o.dy_pad.len(), "direct_dx: dy rows past the padded dy");
    assert!(g.k * rs * C <= w_block.len() && c0 + C <= g.c, "direct_dx: weights past the block");
    for iy in 0..g.h {
        // Rows r with 0 ≤ iy + ph − r < oh.
        let top = iy + ph;
        let (r_first, r_last) = (top.saturating_sub(g.oh - 1), top.min(g.r - 1));
        let mut acc = [[0.0f32; LANES]; C];
        for k in 0..g.k {
            for r in r_first..=r_last {
                let row = (k * g.oh + top - r) * width;
                // Whole C-chunks, so the loop below indexes nothing.
                let taps = w_block[(k * rs + r * g.s) * C..][..g.s * C].chunks_exact(C);
                for (s, weights) in taps.enumerate() {
                    // Lane ix reads dy column ix + pw − s, at padded column
                    // S − 1 + ix + pw − s ≥ 0.
                    let at = row + g.s - 1 + pw - s;
                    // SAFETY: at + LANES ≤ row + S − 1 + pw + LANES = row +
                    // width ≤ k·oh·width ≤ dy_pad.len() (asserted above).
                    let v = unsafe { o.dy_pad.as_ptr().add(at).cast::<[f32; LANES]>().read_unaligned() };
                    for (acc_c, &wv) in acc.iter_mut().zip(weights) {
                        for (lane, &d) in acc_c.iter_mut().zip(&v) {
                            *lane = fma(d, wv, *lane);
                        }
                    }
                }
            }
        }
        for (c, acc_c) in acc.iter().enumerate() {
            dx[((c0 + c) * g.h + iy) * g.w..][..g.w].copy_from_slice(&acc_c[..g.w]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels_core::{Conv2d, SplitMix64};

    #[test]
    fn portable_and_selected_kernels_match_the_definition() {
        // 11 channels: blocks of 8 and 3 (the AVX2 kernel's passes 4 + 4
        // and 3); 13 columns (lanes past them unused), 3x4 taps, padding
        // (1, 2).
        let params = Conv2d { stride: [1, 1], padding: [1, 2], dilation: [1, 1] };
        let g = ConvGeometry::from_dims([2, 11, 9, 13], [5, 3, 4], &params).unwrap();
        assert!(applies(&g));
        let mut rng = SplitMix64::new(21);
        let mut data = |len: usize| (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect::<Vec<f32>>();
        let (w, dy) = (data(5 * 11 * 12), data(2 * 5 * g.oh * g.ow));
        let mut expect = vec![0.0f64; 2 * 11 * 9 * 13];
        for n in 0..2 {
            for k in 0..5 {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let d = f64::from(dy[((n * 5 + k) * g.oh + oy) * g.ow + ox]);
                        for c in 0..11 {
                            for r in 0..3 {
                                for s in 0..4 {
                                    let (iy, ix) = ((oy + r) as isize - 1, (ox + s) as isize - 2);
                                    if (0..9).contains(&iy) && (0..13).contains(&ix) {
                                        let wv = f64::from(w[((k * 11 + c) * 3 + r) * 4 + s]);
                                        expect[((n * 11 + c) * 9 + iy as usize) * 13 + ix as usize] += d * wv;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let portable = backward_dx(Simd::Portable, &g, &w, &dy);
        for isa in crate::simd::Isa::supported() {
            let selected = backward_dx(Simd::new(isa), &g, &w, &dy);
            for (i, ((&e, &s), &p)) in expect.iter().zip(&selected).zip(&portable).enumerate() {
                assert!((s as f64 - e).abs() < 1e-4, "{isa}: dx[{i}] {s} vs {e}");
                assert!((p - s).abs() <= 1e-5 * (1.0 + p.abs()), "{isa}: dx[{i}] portable {p} selected {s}");
            }
        }
    }
}

#[cfg(test)]
mod narrow_tests {
    use super::*;
    use kernels_core::{Conv2d, SplitMix64};

    /// Rows of at most 8 columns (OW = 5: the AVX2 row copy's second half
    /// is all zeros), and dy rows wider than a vector (W = 16, padding 2:
    /// OW = 18, the slice copy); every dx at every ISA against the f64
    /// definition.
    #[test]
    fn narrow_and_wide_rows_match_the_definition() {
        for (dims, filter, pad) in [([2, 3, 6, 7], [4, 3, 3], 0), ([2, 2, 5, 16], [3, 3, 3], 2)] {
            let g = ConvGeometry::from_dims(dims, filter, &Conv2d::new(1, pad)).unwrap();
            assert!(applies(&g));
            let [n, c, h, w] = dims;
            let [k, r, s] = filter;
            let mut rng = SplitMix64::new(23);
            let mut data = |len: usize| (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect::<Vec<f32>>();
            let (wt, dy) = (data(k * c * r * s), data(n * k * g.oh * g.ow));
            for isa in crate::simd::Isa::supported() {
                let dx = backward_dx(Simd::new(isa), &g, &wt, &dy);
                for (i, &got) in dx.iter().enumerate() {
                    let (nn, cc, iy, ix) = (i / (c * h * w), i / (h * w) % c, i / w % h, i % w);
                    let mut expect = 0.0f64;
                    for kk in 0..k {
                        for rr in 0..r {
                            for ss in 0..s {
                                let oy = (iy + pad) as isize - rr as isize;
                                let ox = (ix + pad) as isize - ss as isize;
                                if (0..g.oh as isize).contains(&oy) && (0..g.ow as isize).contains(&ox) {
                                    let d = dy[((nn * k + kk) * g.oh + oy as usize) * g.ow + ox as usize];
                                    expect += f64::from(d) * f64::from(wt[((kk * c + cc) * r + rr) * s + ss]);
                                }
                            }
                        }
                    }
                    assert!((f64::from(got) - expect).abs() < 1e-4, "{isa} {dims:?}: dx[{i}] {got} vs {expect}");
                }
            }
        }
    }
}
