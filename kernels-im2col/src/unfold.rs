//! im2col and col2im for one image, one tile at a time.
//!
//! - `im2col` writes col [cb·R·S, pb]: row (c, r, s) of the tile holds, for
//!   each output pixel p in the pixel block, the input element that filter
//!   tap (r, s) of channel c meets at p (0 where it falls in the padding).
//! - `col2im` is its adjoint: it adds col [cb·R·S, pb] back onto the image,
//!   so overlapping taps accumulate.
//! - A [`Tile`] names the channel block [c0, c1) and the pixel block
//!   [p0, p1) (pixels in row-major (oh, ow) order).
//! - Each row is walked output row by output row; within one output row the
//!   valid output columns are computed once, so the inner loop is a plain
//!   (strided when sw > 1) copy without bounds tests.
//! - Checked by the conv tests against the reference (every path goes
//!   through here); timed inside the conv figures of examples/im2col_bench.rs.

use kernels_core::ConvGeometry;

/// A block of input channels and output pixels of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tile {
    pub c0: usize,
    pub c1: usize,
    pub p0: usize,
    pub p1: usize,
}

impl Tile {
    pub fn pixels(&self) -> usize {
        self.p1 - self.p0
    }
    /// Rows of the tile's col matrix: channels · R · S.
    pub fn rows(&self, g: &ConvGeometry) -> usize {
        (self.c1 - self.c0) * g.r * g.s
    }
}

/// Output columns ow in [lo, hi) whose input column ow·stride + offset lies
/// in [0, width), intersected with [from, to).
fn valid_columns(from: usize, to: usize, offset: isize, stride: usize, width: usize) -> (usize, usize) {
    // ow·stride + offset ≥ 0  <=>  ow ≥ ceil(−offset / stride)
    let lo = if offset >= 0 { 0 } else { ((-offset) as usize).div_ceil(stride) };
    // ow·stride + offset ≤ width − 1
    let last = width as isize - 1 - offset;
    let hi = if last < 0 { 0 } else { last as usize / stride + 1 };
    let lo = lo.clamp(from, to);
    (lo, hi.clamp(lo, to))
}

/// Walks one col row (filter tap (r, s) of channel c) of a tile: calls
/// `segment(j, ow_start, len, input_row)` for each run of pixels j..j + len
/// that lies in one output row, starting at output column `ow_start`, with
/// the input row that tap reads there (None when it falls in the padding).
#[inline(always)]
fn for_each_segment(
    g: &ConvGeometry,
    tile: Tile,
    r: usize,
    mut segment: impl FnMut(usize, usize, usize, Option<usize>),
) {
    let (sh, ph, dh) = (g.params.stride[0], g.params.padding[0], g.params.dilation[0]);
    let pixels = tile.pixels();
    let (mut oh, mut ow_start) = (tile.p0 / g.ow, tile.p0 % g.ow);
    let mut j = 0;
    while j < pixels {
        let len = (g.ow - ow_start).min(pixels - j);
        let ih = (oh * sh + r * dh).checked_sub(ph).filter(|&ih| ih < g.h);
        segment(j, ow_start, len, ih);
        j += len;
        oh += 1;
        ow_start = 0;
    }
}

/// When a tile is whole output rows and tap row r reads a real input row in
/// each of them: (output rows, input row of the first one); consecutive
/// output rows read input rows sh apart. The loops then skip the segment
/// machinery (OPTIMISATION.md, step 11).
fn unclipped_rows(g: &ConvGeometry, tile: Tile, r: usize) -> Option<(usize, usize)> {
    let (sh, ph, dh) = (g.params.stride[0], g.params.padding[0], g.params.dilation[0]);
    if !tile.p0.is_multiple_of(g.ow) || !tile.pixels().is_multiple_of(g.ow) {
        return None;
    }
    let rows = tile.pixels() / g.ow;
    let first = ((tile.p0 / g.ow) * sh + r * dh).checked_sub(ph)?;
    (first + (rows - 1) * sh < g.h).then_some((rows, first))
}

/// The output columns [lo, hi) of a full output row whose tap s reads a real
/// input column, and the input column the tap reads at output column 0
/// (possibly negative): computed once per col row, not per segment.
fn tap_columns(g: &ConvGeometry, s: usize) -> (usize, usize, isize) {
    let (sw, pw, dw) = (g.params.stride[1], g.params.padding[1], g.params.dilation[1]);
    let offset = (s * dw) as isize - pw as isize;
    let (lo, hi) = valid_columns(0, g.ow, offset, sw, g.w);
    (lo, hi, offset)
}

/// Where im2col reads an image from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Input<'a> {
    /// The image as it is, x [c, h, w].
    Plain(&'a [f32]),
    /// The image split by input column phase (see [`phase`]), so that a
    /// strided tap reads consecutive elements.
    Phased(&'a [f32]),
}

/// Floats of one phased image: [c, h, sw, ⌈w / sw⌉].
pub(crate) fn phased_floats(g: &ConvGeometry) -> usize {
    let sw = g.params.stride[1];
    g.c * g.h * sw * g.w.div_ceil(sw)
}

/// Splits each input row by column phase: out[c][ih][iw mod sw][iw / sw] =
/// x[c][ih][iw]. With column stride sw > 1, tap s of output column ow reads
/// iw = ow·sw + offset, which is element ow + ⌊offset / sw⌋ of phase
/// offset mod sw: consecutive output columns read consecutive elements, so
/// im2col copies instead of gathering (once per image, not once per tap).
pub(crate) fn phase(g: &ConvGeometry, x_image: &[f32], out: &mut [f32]) {
    let sw = g.params.stride[1];
    let quotient = g.w.div_ceil(sw);
    for (row_in, row_out) in x_image.chunks_exact(g.w).zip(out.chunks_exact_mut(sw * quotient)) {
        for (p, dst) in row_out.chunks_exact_mut(quotient).enumerate() {
            // Slots past the row's end in the last phases are never read.
            for (d, v) in dst.iter_mut().zip(row_in[p.min(g.w)..].iter().step_by(sw)) {
                *d = *v;
            }
        }
    }
}

/// col [tile.rows, tile.pixels] from one image; col rows lie `ld` apart
/// (ld > tile.pixels when several images share one col tile).
pub(crate) fn im2col(g: &ConvGeometry, input: Input<'_>, tile: Tile, col: &mut [f32], ld: usize) {
    let sw = g.params.stride[1];
    let pixels = tile.pixels();
    // An input row's length in the source, and how far one output column
    // moves the read: sw elements in the plain image, 1 in the phased one.
    let (data, row_len, step) = match input {
        Input::Plain(x) => (x, g.w, sw),
        Input::Phased(x) => (x, sw * g.w.div_ceil(sw), 1),
    };
    let mut row = 0;
    for c in tile.c0..tile.c1 {
        let plane = &data[c * g.h * row_len..][..g.h * row_len];
        for r in 0..g.r {
            for s in 0..g.s {
                let (lo, hi, offset) = tap_columns(g, s);
                // Source index of output column 0 within an input row
                // (it may be negative: column 0 may read the padding).
                let tap_at = match input {
                    Input::Plain(_) => offset,
                    Input::Phased(_) => {
                        let sw = sw as isize;
                        offset.rem_euclid(sw) * g.w.div_ceil(sw as usize) as isize + offset.div_euclid(sw)
                    }
                };
                let out = &mut col[row * ld..][..pixels];
                if let Some((rows, first)) = unclipped_rows(g, tile, r).filter(|_| lo == 0 && hi == g.ow) {
                    // Every pixel reads a real element: plain row copies.
                    let at = tap_at as usize; // lo == 0: column 0 is real, so tap_at ≥ 0
                    for (q, seg) in out.chunks_exact_mut(g.ow).take(rows).enumerate() {
                        let src = &plane[(first + q * g.params.stride[0]) * row_len + at..];
                        if step == 1 {
                            seg.copy_from_slice(&src[..g.ow]);
                        } else {
                            seg.iter_mut().zip(src.iter().step_by(step)).for_each(|(o, v)| *o = *v);
                        }
                    }
                    row += 1;
                    continue;
                }
                for_each_segment(g, tile, r, |j, ow_start, len, ih| {
                    let seg = &mut out[j..j + len];
                    let Some(ih) = ih else {
                        seg.fill(0.0);
                        return;
                    };
                    // Valid output columns of this segment, relative to it.
                    let a = lo.clamp(ow_start, ow_start + len);
                    let b = hi.clamp(a, ow_start + len);
                    let (before, rest) = seg.split_at_mut(a - ow_start);
                    let (inside, after) = rest.split_at_mut(b - a);
                    before.fill(0.0);
                    after.fill(0.0);
                    if !inside.is_empty() {
                        let at = (a as isize * step as isize + tap_at) as usize;
                        let src = &plane[ih * row_len + at..];
                        if step == 1 {
                            inside.copy_from_slice(&src[..inside.len()]);
                        } else {
                            for (o, v) in inside.iter_mut().zip(src.iter().step_by(step)) {
                                *o = *v;
                            }
                        }
                    }
                });
                row += 1;
            }
        }
    }
}

/// Where col2im adds into: an image gradient as it is, or split by column
/// phase like [`Input::Phased`] (then [`unphase`] writes it back).
#[derive(Debug)]
pub(crate) enum Output<'a> {
    Plain(&'a mut [f32]),
    Phased(&'a mut [f32]),
}

/// dx_image [c, h, w] = the phased gradient put back in place (the inverse
/// of [`phase`]; every real element is written).
pub(crate) fn unphase(g: &ConvGeometry, phased: &[f32], dx_image: &mut [f32]) {
    let sw = g.params.stride[1];
    let quotient = g.w.div_ceil(sw);
    for (row_out, row_in) in dx_image.chunks_exact_mut(g.w).zip(phased.chunks_exact(sw * quotient)) {
        for (p, src) in row_in.chunks_exact(quotient).enumerate() {
            for (d, v) in row_out[p.min(g.w)..].iter_mut().step_by(sw).zip(src) {
                *d = *v;
            }
        }
    }
}

/// out += col2im(col [tile.rows, tile.pixels]), col rows `ld` apart.
pub(crate) fn col2im(g: &ConvGeometry, col: &[f32], tile: Tile, out: Output<'_>, ld: usize) {
    let sw = g.params.stride[1];
    let pixels = tile.pixels();
    // As in im2col: the row length and per-column step of the target.
    let phased = matches!(out, Output::Phased(_));
    let (data, row_len, step) = match out {
        Output::Plain(d) => (d, g.w, sw),
        Output::Phased(d) => (d, sw * g.w.div_ceil(sw), 1),
    };
    let mut row = 0;
    for c in tile.c0..tile.c1 {
        let plane = &mut data[c * g.h * row_len..][..g.h * row_len];
        for r in 0..g.r {
            for s in 0..g.s {
                let (lo, hi, offset) = tap_columns(g, s);
                let tap_at = if phased {
                    let sw = sw as isize;
                    offset.rem_euclid(sw) * g.w.div_ceil(sw as usize) as isize + offset.div_euclid(sw)
                } else {
                    offset
                };
                let src_row = &col[row * ld..][..pixels];
                if let Some((rows, first)) = unclipped_rows(g, tile, r).filter(|_| lo == 0 && hi == g.ow) {
                    let at = tap_at as usize; // lo == 0: column 0 is real, so tap_at ≥ 0
                    for (q, src) in src_row.chunks_exact(g.ow).take(rows).enumerate() {
                        let dst = &mut plane[(first + q * g.params.stride[0]) * row_len + at..];
                        if step == 1 {
                            dst[..g.ow].iter_mut().zip(src).for_each(|(d, v)| *d += *v);
                        } else {
                            dst.iter_mut().step_by(step).zip(src).for_each(|(d, v)| *d += *v);
                        }
                    }
                    row += 1;
                    continue;
                }
                for_each_segment(g, tile, r, |j, ow_start, len, ih| {
                    let Some(ih) = ih else { return };
                    let a = lo.clamp(ow_start, ow_start + len);
                    let b = hi.clamp(a, ow_start + len);
                    if b == a {
                        return;
                    }
                    let inside = &src_row[j + (a - ow_start)..j + (b - ow_start)];
                    let at = (a as isize * step as isize + tap_at) as usize;
                    let dst = &mut plane[ih * row_len + at..];
                    if step == 1 {
                        dst.iter_mut().zip(inside).for_each(|(d, v)| *d += *v);
                    } else {
                        dst.iter_mut().step_by(step).zip(inside).for_each(|(d, v)| *d += *v);
                    }
                });
                row += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels_core::Conv2d;

    #[test]
    fn valid_columns_clip_the_padding() {
        // width 5, pad 2, tap s = 0: iw = ow − 2 valid for ow in [2, 7).
        assert_eq!(valid_columns(0, 5, -2, 1, 5), (2, 5));
        // stride 2, offset −1: iw = 2·ow − 1 ≥ 0 from ow = 1; ≤ 4 until ow = 2.
        assert_eq!(valid_columns(0, 4, -1, 2, 5), (1, 3));
        // nothing valid: hi clamps to lo.
        assert_eq!(valid_columns(0, 3, 9, 1, 5), (0, 0));
    }

    #[test]
    fn phased_input_unfolds_like_the_plain_image() {
        // Column strides 2 and 3 with padding and dilation, several tiles.
        for (stride, dilation) in [([1, 2], [1, 1]), ([2, 3], [1, 2]), ([1, 4], [2, 1])] {
            let params = Conv2d { stride, padding: [1, 2], dilation };
            let g = ConvGeometry::from_dims([1, 2, 7, 11], [1, 3, 4], &params).unwrap();
            let x: Vec<f32> = (0..2 * 7 * 11).map(|v| v as f32).collect();
            let mut phased = vec![f32::NAN; phased_floats(&g)];
            phase(&g, &x, &mut phased);
            let pixels = g.oh * g.ow;
            for (p0, p1) in [(0, pixels), (1, pixels / 2), (pixels / 2, pixels)] {
                let tile = Tile { c0: 0, c1: 2, p0, p1 };
                let rows = tile.rows(&g);
                let (mut plain, mut split) = (vec![1.0; rows * (p1 - p0)], vec![2.0; rows * (p1 - p0)]);
                im2col(&g, Input::Plain(&x), tile, &mut plain, p1 - p0);
                im2col(&g, Input::Phased(&phased), tile, &mut split, p1 - p0);
                assert_eq!(plain, split, "{params:?} pixels {p0}..{p1}");
            }
        }
    }

    #[test]
    fn phased_col2im_adds_like_the_plain_one() {
        for (stride, dilation) in [([1, 2], [1, 1]), ([2, 3], [1, 2]), ([1, 4], [2, 1])] {
            let params = Conv2d { stride, padding: [1, 2], dilation };
            let g = ConvGeometry::from_dims([1, 2, 7, 11], [1, 3, 4], &params).unwrap();
            let pixels = g.oh * g.ow;
            let tile = Tile { c0: 0, c1: 2, p0: 0, p1: pixels };
            let col: Vec<f32> = (0..tile.rows(&g) * pixels).map(|v| (v % 13) as f32).collect();
            let mut plain = vec![0.0f32; 2 * 7 * 11];
            col2im(&g, &col, tile, Output::Plain(&mut plain), pixels);
            let mut phased = vec![0.0f32; phased_floats(&g)];
            col2im(&g, &col, tile, Output::Phased(&mut phased), pixels);
            let mut back = vec![f32::NAN; 2 * 7 * 11];
            unphase(&g, &phased, &mut back);
            assert_eq!(plain, back, "{params:?}");
        }
    }

    #[test]
    fn im2col_of_the_worked_example() {
        // x = arange(16) as 4x4, 2x2 kernel, padding 1: first tap row.
        let g = ConvGeometry::from_dims([1, 1, 4, 4], [1, 2, 2], &Conv2d::new(1, 1)).unwrap();
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let tile = Tile { c0: 0, c1: 1, p0: 0, p1: 25 };
        let mut col = vec![f32::NAN; 4 * 25];
        im2col(&g, Input::Plain(&x), tile, &mut col, 25);
        // Tap (0, 0) at output (oh, ow) reads x[oh − 1][ow − 1].
        let expect: Vec<f32> = (0..25)
            .map(|p| if p / 5 == 0 || p % 5 == 0 { 0.0 } else { ((p / 5 - 1) * 4 + p % 5 - 1) as f32 })
            .collect();
        assert_eq!(&col[..25], &expect[..]);
    }
}
