//! The four tile transforms of winograd/mod.rs (F(2x2, 3x3)), each over one
//! block of whole tile rows of one image, vectorised across the tiles of a
//! row: input (V = Bᵀ d B), output (y = Aᵀ M A + b), and the adjoints the
//! backward needs (dM = A dy Aᵀ, dx += B dV Bᵀ).
//!
//! - Patches of neighbouring tiles overlap by two columns at stride 2, so
//!   rows are split by column parity first (`split`): patch column 2tx + j
//!   is then even[tx + j / 2] or odd[tx + j / 2], a plain offset, and every
//!   loop runs over contiguous arrays.
//! - Each public transform runs its register kernel (winograd/input.rs,
//!   winograd/output.rs, winograd/dm.rs, winograd/dx.rs: one body each
//!   over crate::lanes's `Lanes`) at AVX-512 or AVX2, whichever the call
//!   runs at, counted per ISA, and these loops (the `_portable` functions)
//!   elsewhere; each kernel is tested bit for bit against them at every
//!   ISA.
//! - Checked through winograd/mod.rs's tests (against the f64 reference and by
//!   central differences).

use kernels_core::ConvGeometry;

use crate::simd::{Isa, Simd};

use super::blocking::{Blocking, POSITIONS, plane_floats};

/// Runs the kernel `make` builds in AVX-512 or AVX2 registers when `simd`
/// names one of them (counted per ISA), and says whether it did; the
/// caller runs its portable loops otherwise. `make` is called only then,
/// so the kernel's borrows end before those loops need the same slices.
#[cfg(target_arch = "x86_64")]
fn in_registers<K: crate::lanes::Kernel>(simd: Simd, make: impl FnOnce() -> K) -> bool {
    use crate::lanes::Lanes;
    match simd {
        Simd::Avx512(token) => {
            crate::simd::count(Isa::Avx512);
            token.vectorize(make());
        }
        Simd::Avx2(token) => {
            crate::simd::count(Isa::Avx2);
            token.vectorize(make());
        }
        Simd::Portable => return false,
    }
    true
}

/// Arrays of tiles_w + 1 floats in a worker's [`RowBuffers`].
pub(crate) const ROW_BUFFERS: usize = 4 + 4 + POSITIONS + 4 + 4;

/// A worker's row buffers, split by column parity so every transform loop
/// runs over contiguous arrays (and vectorises): `even[i][j]` is column 2j
/// of the i-th padded row of a tile row, `odd[i][j]` column 2j + 1.
pub(crate) struct RowBuffers {
    even: [Vec<f32>; 4],
    odd: [Vec<f32>; 4],
    /// The 16 per-tile values of one channel's tile row, one array each.
    values: [Vec<f32>; POSITIONS],
    /// One row of every tile's 4x4 patch gradient, by patch column.
    patch: [Vec<f32>; 4],
    /// dx rows 2 and 3 of the previous tile row, split by parity.
    pending_even: [Vec<f32>; 2],
    pending_odd: [Vec<f32>; 2],
    /// winograd/dx.rs's pending rows, by 16-lane chunk (its AVX-512 and
    /// AVX2 kernels alone read them; 8-lane chunks fit in the same floats).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pending_chunks: Vec<f32>,
}

impl RowBuffers {
    pub(crate) fn new(b: &Blocking) -> Self {
        let half = b.tiles_w + 1;
        Self {
            even: std::array::from_fn(|_| vec![0.0f32; half]),
            odd: std::array::from_fn(|_| vec![0.0f32; half]),
            values: std::array::from_fn(|_| vec![0.0f32; half]),
            patch: std::array::from_fn(|_| vec![0.0f32; half]),
            pending_even: std::array::from_fn(|_| vec![0.0f32; half]),
            pending_odd: std::array::from_fn(|_| vec![0.0f32; half]),
            pending_chunks: vec![0.0f32; super::dx::pending_floats(b.tiles_w)],
        }
    }
}

/// Splits input row `iy` of one channel plane, shifted right by the padding
/// (padded column j holds image column j − pw) and zero outside the image,
/// into its even and odd padded columns.
fn split_row(g: &ConvGeometry, plane: &[f32], iy: isize, even: &mut [f32], odd: &mut [f32]) {
    even.fill(0.0);
    odd.fill(0.0);
    if iy >= 0 && iy < g.h as isize {
        split(&plane[iy as usize * g.w..][..g.w], g.params.padding[1], even, odd);
    }
}

/// Writes src[i] to padded column i + shift: column j is even[j / 2] or
/// odd[j / 2] by its parity. Pairs of columns, so no branch per element.
fn split(src: &[f32], shift: usize, even: &mut [f32], odd: &mut [f32]) {
    let (mut src, mut j) = (src, shift);
    if j % 2 == 1 {
        if let Some((&first, rest)) = src.split_first() {
            odd[j / 2] = first;
            src = rest;
        }
        j += 1;
    }
    let base = j / 2;
    let pairs = src.chunks_exact(2);
    if let [last] = pairs.remainder() {
        even[base + src.len() / 2] = *last;
    }
    for ((e, o), pair) in even[base..].iter_mut().zip(&mut odd[base..]).zip(pairs) {
        *e = pair[0];
        *o = pair[1];
    }
}

/// dst[i] += padded column i + shift of (even, odd): the inverse of
/// [`split`], accumulating.
fn add_split(dst: &mut [f32], shift: usize, even: &[f32], odd: &[f32]) {
    let mut j = shift;
    let dst = if j % 2 == 1 {
        j += 1;
        match dst.split_first_mut() {
            Some((first, rest)) => {
                *first += odd[shift / 2];
                rest
            }
            None => return,
        }
    } else {
        dst
    };
    let base = j / 2;
    let half = dst.len() / 2;
    let mut pairs = dst.chunks_exact_mut(2);
    for ((pair, e), o) in (&mut pairs).zip(&even[base..]).zip(&odd[base..]) {
        pair[0] += e;
        pair[1] += o;
    }
    if let [last] = pairs.into_remainder() {
        *last += even[base + half];
    }
}

/// V [16, C, T] = Bᵀ d B for every channel and tile of a block: in
/// AVX-512 or AVX2 registers at those ISAs (winograd/input.rs).
pub(crate) fn transform_input(
    simd: Simd,
    g: &ConvGeometry,
    b: &Blocking,
    x_image: &[f32],
    block: std::ops::Range<usize>,
    v: &mut [f32],
    bufs: &mut RowBuffers,
) {
    #[cfg(target_arch = "x86_64")]
    if in_registers(simd, || super::input::Input { g, b, x_image, block: block.clone(), v: &mut *v }) {
        return;
    }
    // Only the x86 kernels read the ISA.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    crate::simd::count(Isa::Portable);
    transform_input_portable(g, b, x_image, block, v, bufs);
}

/// [`transform_input`] in plain loops over tile-row arrays: any CPU
/// without AVX2 (and the definition winograd/input.rs is tested
/// against).
pub(crate) fn transform_input_portable(
    g: &ConvGeometry,
    b: &Blocking,
    x_image: &[f32],
    block: std::ops::Range<usize>,
    v: &mut [f32],
    bufs: &mut RowBuffers,
) {
    let (tiles, n) = (b.block_tiles(), b.tiles_w);
    let ph = g.params.padding[0] as isize;
    for (c, plane) in x_image.chunks_exact(g.h * g.w).enumerate() {
        for (row_in_block, ty) in block.clone().enumerate() {
            for i in 0..4 {
                split_row(g, plane, 2 * ty as isize - ph + i as isize, &mut bufs.even[i], &mut bufs.odd[i]);
            }
            // t = Bᵀ d down the four rows, for both parities in place.
            for half in [&mut bufs.even, &mut bufs.odd] {
                let [d0, d1, d2, d3] = half;
                for j in 0..d0.len() {
                    let (a0, a1, a2, a3) = (d0[j], d1[j], d2[j], d3[j]);
                    d0[j] = a0 - a2;
                    d1[j] = a1 + a2;
                    d2[j] = a2 - a1;
                    d3[j] = a1 - a3;
                }
            }
            // V[ξ][·] = t[ξ] B: patch columns 2tx..2tx+3 are even[tx],
            // odd[tx], even[tx + 1], odd[tx + 1].
            let base = c * tiles + row_in_block * n;
            for xi in 0..4 {
                let (e, o) = (&bufs.even[xi][..n + 1], &bufs.odd[xi][..n + 1]);
                let out = |nu: usize| (xi * 4 + nu) * plane_floats(g.c, tiles) + base;
                let v0 = &mut v[out(0)..][..n];
                for tx in 0..n {
                    v0[tx] = e[tx] - e[tx + 1];
                }
                let v1 = &mut v[out(1)..][..n];
                for tx in 0..n {
                    v1[tx] = o[tx] + e[tx + 1];
                }
                let v2 = &mut v[out(2)..][..n];
                for tx in 0..n {
                    v2[tx] = e[tx + 1] - o[tx];
                }
                let v3 = &mut v[out(3)..][..n];
                for tx in 0..n {
                    v3[tx] = o[tx] - o[tx + 1];
                }
            }
        }
    }
}

/// y tiles = Aᵀ M A (+ bias) for every filter and tile of a block: in
/// AVX-512 or AVX2 registers at those ISAs (winograd/output.rs).
#[allow(clippy::too_many_arguments)] // the ISA, the block and its operands; a struct would only rename them
pub(crate) fn transform_output(
    simd: Simd,
    g: &ConvGeometry,
    b: &Blocking,
    m: &[f32],
    block: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    y_image: &mut [f32],
    bufs: &mut RowBuffers,
) {
    #[cfg(target_arch = "x86_64")]
    if in_registers(simd, || super::output::Output { g, b, m, block: block.clone(), bias, y_image: &mut *y_image }) {
        return;
    }
    // Only the x86 kernels read the ISA.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    crate::simd::count(Isa::Portable);
    transform_output_portable(g, b, m, block, bias, y_image, bufs);
}

/// [`transform_output`] in plain loops over tile-row arrays: any CPU
/// without AVX2 (and the definition winograd/output.rs is tested
/// against).
pub(crate) fn transform_output_portable(
    g: &ConvGeometry,
    b: &Blocking,
    m: &[f32],
    block: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    y_image: &mut [f32],
    bufs: &mut RowBuffers,
) {
    let (tiles, n) = (b.block_tiles(), b.tiles_w);
    for (k, plane) in y_image.chunks_exact_mut(g.oh * g.ow).enumerate() {
        let bias_k = bias.map_or(0.0, |b| b[k]);
        for (row_in_block, ty) in block.clone().enumerate() {
            let base = k * tiles + row_in_block * n;
            let at = |xi: usize, nu: usize| &m[(xi * 4 + nu) * plane_floats(g.k, tiles) + base..][..n];
            // Aᵀ M over ξ into values[a * 4 + ν] (a = output row), then · A
            // over ν into even / odd output columns of rows 0 and 1.
            for nu in 0..4 {
                let (m0, m1, m2, m3) = (at(0, nu), at(1, nu), at(2, nu), at(3, nu));
                let (low, high) = bufs.values.split_at_mut(4);
                let (r0, r1) = (&mut low[nu], &mut high[nu]);
                for tx in 0..n {
                    r0[tx] = m0[tx] + m1[tx] + m2[tx];
                    r1[tx] = m1[tx] - m2[tx] - m3[tx];
                }
            }
            for a in 0..2 {
                let r = &bufs.values[4 * a..4 * a + 4];
                let (q0, q1, q2, q3) = (&r[0][..n], &r[1][..n], &r[2][..n], &r[3][..n]);
                let (even, odd) = (&mut bufs.even[a][..n], &mut bufs.odd[a][..n]);
                for tx in 0..n {
                    even[tx] = q0[tx] + q1[tx] + q2[tx] + bias_k;
                    odd[tx] = q1[tx] - q2[tx] - q3[tx] + bias_k;
                }
                let oy = 2 * ty + a;
                if oy < g.oh {
                    interleave(&bufs.even[a], &bufs.odd[a], &mut plane[oy * g.ow..][..g.ow]);
                }
            }
        }
    }
}

/// out[2j] = even[j], out[2j + 1] = odd[j], as far as out reaches.
fn interleave(even: &[f32], odd: &[f32], out: &mut [f32]) {
    let last = out.len() / 2;
    let mut pairs = out.chunks_exact_mut(2);
    for ((pair, &e), &o) in (&mut pairs).zip(even).zip(odd) {
        pair[0] = e;
        pair[1] = o;
    }
    if let ([tail], Some(&e)) = (pairs.into_remainder(), even.get(last)) {
        *tail = e;
    }
}

/// dM [16, K, T] = A dy Aᵀ for every filter and tile of a block (dy taken
/// as zero past the last row and column, where a tile overhangs): in
/// AVX-512 or AVX2 registers at those ISAs (winograd/dm.rs).
pub(crate) fn transform_output_gradient(
    simd: Simd,
    g: &ConvGeometry,
    b: &Blocking,
    dy_image: &[f32],
    block: std::ops::Range<usize>,
    dm: &mut [f32],
    bufs: &mut RowBuffers,
) {
    #[cfg(target_arch = "x86_64")]
    if in_registers(simd, || super::dm::OutputGradient { g, b, dy_image, block: block.clone(), dm: &mut *dm }) {
        return;
    }
    // Only the x86 kernels read the ISA.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    crate::simd::count(Isa::Portable);
    transform_output_gradient_portable(g, b, dy_image, block, dm, bufs);
}

/// [`transform_output_gradient`] in plain loops over tile-row arrays: any
/// CPU without AVX2 (and the definition winograd/dm.rs is tested
/// against).
pub(crate) fn transform_output_gradient_portable(
    g: &ConvGeometry,
    b: &Blocking,
    dy_image: &[f32],
    block: std::ops::Range<usize>,
    dm: &mut [f32],
    bufs: &mut RowBuffers,
) {
    let (tiles, n) = (b.block_tiles(), b.tiles_w);
    for (k, plane) in dy_image.chunks_exact(g.oh * g.ow).enumerate() {
        for (row_in_block, ty) in block.clone().enumerate() {
            for a in 0..2 {
                let (even, odd) = (&mut bufs.even[a], &mut bufs.odd[a]);
                even.fill(0.0);
                odd.fill(0.0);
                let oy = 2 * ty + a;
                if oy < g.oh {
                    split(&plane[oy * g.ow..][..g.ow], 0, even, odd);
                }
            }
            // A·q for a 2-vector q is (q0, q0 + q1, q0 − q1, −q1): along each
            // row (ν) into values[a * 4 + ν], then along each column (ξ).
            for a in 0..2 {
                let (e, o) = (&bufs.even[a][..n], &bufs.odd[a][..n]);
                let [v0, v1, v2, v3] = &mut bufs.values[4 * a..4 * a + 4] else { unreachable!("four arrays") };
                for tx in 0..n {
                    v0[tx] = e[tx];
                    v1[tx] = e[tx] + o[tx];
                    v2[tx] = e[tx] - o[tx];
                    v3[tx] = -o[tx];
                }
            }
            let base = k * tiles + row_in_block * n;
            for nu in 0..4 {
                let (q0, q1) = (&bufs.values[nu][..n], &bufs.values[4 + nu][..n]);
                let out = |xi: usize| (xi * 4 + nu) * plane_floats(g.k, tiles) + base;
                let d0 = &mut dm[out(0)..][..n];
                d0.copy_from_slice(q0);
                let d1 = &mut dm[out(1)..][..n];
                for tx in 0..n {
                    d1[tx] = q0[tx] + q1[tx];
                }
                let d2 = &mut dm[out(2)..][..n];
                for tx in 0..n {
                    d2[tx] = q0[tx] - q1[tx];
                }
                let d3 = &mut dm[out(3)..][..n];
                for tx in 0..n {
                    d3[tx] = -q1[tx];
                }
            }
        }
    }
}

/// dx += B dV Bᵀ per tile, scatter-added (patches overlap by two pixels):
/// in AVX-512 or AVX2 registers at those ISAs (winograd/dx.rs).
pub(crate) fn transform_input_gradient(
    simd: Simd,
    g: &ConvGeometry,
    b: &Blocking,
    dv: &[f32],
    block: std::ops::Range<usize>,
    dx_image: &mut [f32],
    bufs: &mut RowBuffers,
) {
    #[cfg(target_arch = "x86_64")]
    if in_registers(simd, || super::dx::InputGradient {
        g,
        b,
        dv,
        block: block.clone(),
        dx_image: &mut *dx_image,
        pending: &mut bufs.pending_chunks,
    }) {
        return;
    }
    // Only the x86 kernels read the ISA.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    crate::simd::count(Isa::Portable);
    transform_input_gradient_portable(g, b, dv, block, dx_image, bufs);
}

/// [`transform_input_gradient`] in plain loops over tile-row arrays: any
/// CPU without AVX2 (and the definition winograd/dx.rs is tested
/// against).
pub(crate) fn transform_input_gradient_portable(
    g: &ConvGeometry,
    b: &Blocking,
    dv: &[f32],
    block: std::ops::Range<usize>,
    dx_image: &mut [f32],
    bufs: &mut RowBuffers,
) {
    let (tiles, n) = (b.block_tiles(), b.tiles_w);
    let (ph, pw) = (g.params.padding[0] as isize, g.params.padding[1]);
    for (c, plane) in dx_image.chunks_exact_mut(g.h * g.w).enumerate() {
        for (row_in_block, ty) in block.clone().enumerate() {
            let base = c * tiles + row_in_block * n;
            let at = |xi: usize, nu: usize| &dv[(xi * 4 + nu) * plane_floats(g.c, tiles) + base..][..n];
            // B·u for a 4-vector u is (u0, u1 − u2 + u3, −u0 + u1 + u2, −u3):
            // along ν for each ξ into values[ξ * 4 + j], then along ξ.
            for xi in 0..4 {
                let (u0, u1, u2, u3) = (at(xi, 0), at(xi, 1), at(xi, 2), at(xi, 3));
                let [w0, w1, w2, w3] = &mut bufs.values[4 * xi..4 * xi + 4] else { unreachable!("four arrays") };
                for tx in 0..n {
                    w0[tx] = u0[tx];
                    w1[tx] = u1[tx] - u2[tx] + u3[tx];
                    w2[tx] = -u0[tx] + u1[tx] + u2[tx];
                    w3[tx] = -u3[tx];
                }
            }
            for i in 0..4 {
                // Row i of each patch (B·u along ξ), columns j = 0..4 into
                // patch[j]; they land on padded columns 2tx + j, so even[tx]
                // sums j = 0 of tile tx and j = 2 of tile tx − 1, odd[tx]
                // j = 1 and j = 3 likewise.
                for j in 0..4 {
                    let w = |xi: usize| &bufs.values[4 * xi + j][..n];
                    let (w0, w1, w2, w3) = (w(0), w(1), w(2), w(3));
                    let out = &mut bufs.patch[j][..n];
                    match i {
                        0 => out.copy_from_slice(w0),
                        1 => out.iter_mut().enumerate().for_each(|(t, o)| *o = w1[t] - w2[t] + w3[t]),
                        2 => out.iter_mut().enumerate().for_each(|(t, o)| *o = -w0[t] + w1[t] + w2[t]),
                        _ => out.iter_mut().zip(w3).for_each(|(o, v)| *o = -v),
                    }
                }
                let [p0, p1, p2, p3] = &bufs.patch;
                let (even, odd) = (&mut bufs.even[i], &mut bufs.odd[i]);
                even[0] = p0[0];
                odd[0] = p1[0];
                for tx in 1..n {
                    even[tx] = p0[tx] + p2[tx - 1];
                    odd[tx] = p1[tx] + p3[tx - 1];
                }
                even[n] = p2[n - 1];
                odd[n] = p3[n - 1];
            }
            // Rows 2 and 3 of this tile row are rows 0 and 1 of the next:
            // add the previous tile row's pending ones in, write rows 0 and
            // 1 to dx, and keep 2 and 3 pending (one read-modify-write of
            // each dx row instead of two).
            if row_in_block > 0 {
                for i in 0..2 {
                    let (even, pending) = (&mut bufs.even[i], &bufs.pending_even[i]);
                    even.iter_mut().zip(pending).for_each(|(e, p)| *e += p);
                    let (odd, pending) = (&mut bufs.odd[i], &bufs.pending_odd[i]);
                    odd.iter_mut().zip(pending).for_each(|(o, p)| *o += p);
                }
            }
            for i in 0..2 {
                add_row(g, plane, 2 * ty as isize - ph + i as isize, pw, &bufs.even[i], &bufs.odd[i]);
                std::mem::swap(&mut bufs.even[i + 2], &mut bufs.pending_even[i]);
                std::mem::swap(&mut bufs.odd[i + 2], &mut bufs.pending_odd[i]);
            }
        }
        // The last tile row's rows 2 and 3.
        let last = (block.end - 1) as isize;
        for i in 0..2 {
            add_row(g, plane, 2 * last - ph + 2 + i as isize, pw, &bufs.pending_even[i], &bufs.pending_odd[i]);
        }
    }
}

/// dx row `iy` (if inside the image) += a padded row split by parity
/// (padded column j holds input column j − pw).
fn add_row(g: &ConvGeometry, plane: &mut [f32], iy: isize, pw: usize, even: &[f32], odd: &[f32]) {
    if iy >= 0 && iy < g.h as isize {
        add_split(&mut plane[iy as usize * g.w..][..g.w], pw, even, odd);
    }
}
