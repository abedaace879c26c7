//! Convolution (cross-correlation) and its backward, as direct loops.
//!
//! - Computes y [n, k, oh, ow] = b[k] + Σ_{c, r, s} x[n, c, ih, iw] · w[k, c, r, s]
//!   with ih = oh·sh + r·dh − ph and iw = ow·sw + s·dw − pw; taps that land
//!   in the padding contribute nothing.
//! - Backward from dy [n, k, oh, ow]: dx [n, c, h, w] scatters every forward
//!   product back to its input (the transpose of the forward), dw [k, c, r, s]
//!   and db [k] sum over the batch and the output positions.
//! - One variant: the general loop. Padding is handled by restricting the
//!   output range per tap ([`valid_outputs`]), never by branches in the
//!   innermost loop.
//! - Checked by tests/worked_examples.rs (hand-computed results) and
//!   tests/gradcheck.rs (central differences in f64); timed by the harness.

use std::ops::Range;

use kernels_core::{ConvGeometry, Float};

/// Output positions `o` in `0..out_len` whose input coordinate
/// `o·stride + tap_offset − pad` lies in `0..in_len`, where `tap_offset` is
/// the tap's dilated offset (r·dh or s·dw). Hoisting this out of the inner
/// loops keeps them free of padding checks.
pub(crate) fn valid_outputs(
    out_len: usize,
    in_len: usize,
    tap_offset: usize,
    stride: usize,
    pad: usize,
) -> Range<usize> {
    // o·stride ≥ pad − tap_offset
    let first = pad.saturating_sub(tap_offset).div_ceil(stride);
    // o·stride ≤ in_len − 1 + pad − tap_offset
    let Some(last_reach) = (in_len - 1 + pad).checked_sub(tap_offset) else {
        return 0..0;
    };
    let end = (last_reach / stride + 1).min(out_len);
    first..end.max(first)
}

/// y [n, k, oh, ow] from x [n, c, h, w], w [k, c, r, s] and an optional b [k].
pub(crate) fn forward<T: Float>(g: &ConvGeometry, x: &[T], weight: &[T], bias: Option<&[T]>) -> Vec<T> {
    let ConvGeometry { n, c, h: in_h, w: in_w, k, r, s, oh, ow, params } = *g;
    let ([sh, sw], [ph, pw], [dh, dw]) = (params.stride, params.padding, params.dilation);
    let mut y = vec![T::ZERO; n * k * oh * ow];
    for (img, y_img) in y.chunks_exact_mut(k * oh * ow).enumerate() {
        let x_img = &x[img * c * in_h * in_w..][..c * in_h * in_w];
        for (filter, y_plane) in y_img.chunks_exact_mut(oh * ow).enumerate() {
            y_plane.fill(bias.map_or(T::ZERO, |b| b[filter]));
            for ch in 0..c {
                let x_plane = &x_img[ch * in_h * in_w..][..in_h * in_w];
                for ri in 0..r {
                    let rows = valid_outputs(oh, in_h, ri * dh, sh, ph);
                    for si in 0..s {
                        let cols = valid_outputs(ow, in_w, si * dw, sw, pw);
                        let tap = weight[((filter * c + ch) * r + ri) * s + si];
                        for oy in rows.clone() {
                            let iy = oy * sh + ri * dh - ph;
                            let x_row = &x_plane[iy * in_w..][..in_w];
                            let y_row = &mut y_plane[oy * ow..][..ow];
                            for ox in cols.clone() {
                                y_row[ox] += tap * x_row[ox * sw + si * dw - pw];
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

/// dx [n, c, h, w] = Σ_{k, r, s} dy[n, k, oh, ow] · w[k, c, r, s] over every
/// (oh, ow) whose window reads (h, w): each forward product, sent back.
pub(crate) fn backward_dx<T: Float>(g: &ConvGeometry, weight: &[T], dy: &[T]) -> Vec<T> {
    let ConvGeometry { n, c, h: in_h, w: in_w, k, r, s, oh, ow, params } = *g;
    let ([sh, sw], [ph, pw], [dh, dw]) = (params.stride, params.padding, params.dilation);
    let mut dx = vec![T::ZERO; n * c * in_h * in_w];
    for (img, dx_img) in dx.chunks_exact_mut(c * in_h * in_w).enumerate() {
        let dy_img = &dy[img * k * oh * ow..][..k * oh * ow];
        for (ch, dx_plane) in dx_img.chunks_exact_mut(in_h * in_w).enumerate() {
            for filter in 0..k {
                let dy_plane = &dy_img[filter * oh * ow..][..oh * ow];
                for ri in 0..r {
                    let rows = valid_outputs(oh, in_h, ri * dh, sh, ph);
                    for si in 0..s {
                        let cols = valid_outputs(ow, in_w, si * dw, sw, pw);
                        let tap = weight[((filter * c + ch) * r + ri) * s + si];
                        for oy in rows.clone() {
                            let iy = oy * sh + ri * dh - ph;
                            let dy_row = &dy_plane[oy * ow..][..ow];
                            let dx_row = &mut dx_plane[iy * in_w..][..in_w];
                            for ox in cols.clone() {
                                dx_row[ox * sw + si * dw - pw] += tap * dy_row[ox];
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

/// dw [k, c, r, s] = Σ_{n, oh, ow} dy[n, k, oh, ow] · x[n, c, ih, iw].
pub(crate) fn backward_dw<T: Float>(g: &ConvGeometry, x: &[T], dy: &[T]) -> Vec<T> {
    let ConvGeometry { n, c, h: in_h, w: in_w, k, r, s, oh, ow, params } = *g;
    let ([sh, sw], [ph, pw], [dh, dw]) = (params.stride, params.padding, params.dilation);
    let mut dweight = vec![T::ZERO; k * c * r * s];
    for img in 0..n {
        for filter in 0..k {
            let dy_plane = &dy[(img * k + filter) * oh * ow..][..oh * ow];
            for ch in 0..c {
                let x_plane = &x[(img * c + ch) * in_h * in_w..][..in_h * in_w];
                for ri in 0..r {
                    let rows = valid_outputs(oh, in_h, ri * dh, sh, ph);
                    for si in 0..s {
                        let cols = valid_outputs(ow, in_w, si * dw, sw, pw);
                        let mut sum = T::ZERO;
                        for oy in rows.clone() {
                            let iy = oy * sh + ri * dh - ph;
                            let x_row = &x_plane[iy * in_w..][..in_w];
                            let dy_row = &dy_plane[oy * ow..][..ow];
                            for ox in cols.clone() {
                                sum += dy_row[ox] * x_row[ox * sw + si * dw - pw];
                            }
                        }
                        dweight[((filter * c + ch) * r + ri) * s + si] += sum;
                    }
                }
            }
        }
    }
    dweight
}

/// db [k] = Σ_{n, oh, ow} dy[n, k, oh, ow].
pub(crate) fn backward_db<T: Float>(g: &ConvGeometry, dy: &[T]) -> Vec<T> {
    let mut db = vec![T::ZERO; g.k];
    for (plane, dy_plane) in dy.chunks_exact(g.oh * g.ow).enumerate() {
        db[plane % g.k] += dy_plane.iter().copied().sum::<T>();
    }
    db
}

#[cfg(test)]
mod tests {
    use super::valid_outputs;

    /// The hoisted range must equal the brute-force filter of in-range taps.
    #[test]
    fn valid_outputs_matches_brute_force() {
        for in_len in 1..7 {
            for stride in 1..4 {
                for pad in 0..3 {
                    for offset in 0..8 {
                        let out_len = 9;
                        let expected: Vec<usize> = (0..out_len)
                            .filter(|&o| {
                                let i = (o * stride + offset) as isize - pad as isize;
                                (0..in_len as isize).contains(&i)
                            })
                            .collect();
                        let got: Vec<usize> = valid_outputs(out_len, in_len, offset, stride, pad).collect();
                        assert_eq!(got, expected, "in {in_len} stride {stride} pad {pad} offset {offset}");
                    }
                }
            }
        }
    }
}
