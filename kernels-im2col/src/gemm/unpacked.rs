//! C = A·B or C += A·B without packing: the many small GEMMs of
//! winograd/mod.rs, and with `ConvPlan::unpacked_gemms` the unfold path's
//! GEMMs both ways (conv/mod.rs, conv/backward.rs, subpixel.rs).
//!
//! - winograd/mod.rs runs 16 GEMMs per block of tiles, each [64 x 64] · [64 x
//!   112] for resnet-3x3. matrixmultiply packs both operands on every call
//!   and ran them at about 90 GFLOP/s per core in place. Here A, B and C are
//!   gemm/mod.rs's strided views (`Mat`, checked by the same `check_product` as
//!   `sgemm`), read where they lie when their columns are contiguous:
//!   a B row segment of 32 floats is two vector loads, an A element one
//!   broadcast; operands this small sit in L1/L2 anyway.
//! - AVX-512 register block: 8 rows x 32 columns (16 accumulators); columns in
//!   steps of 32 outside, rows of 8 inside, so a 32-column panel of B stays
//!   in L1 while every row block passes over it. The last column step is
//!   masked (masked loads and stores touch no memory past the mask).
//!   The last m mod 8 rows run as one zero-padded 8-row block.
//! - AVX2 + FMA (16 ymm registers, no masks): 6 rows x 16 columns (12
//!   accumulators, 15 registers in all), columns in steps of 16 outside;
//!   the last m mod 6 rows and n mod 16 columns run as narrower
//!   const-generic blocks, and only that last column step uses masked
//!   (`vmaskmovps`) loads and stores; the depth runs in passes of 256 so
//!   a 16-column B panel stays in L1. The Winograd path uses it at AVX2
//!   (gemm/packed.rs measured slower on its 64 x 64 x 112 GEMMs, step 56);
//!   the unfold path runs gemm/packed.rs there (matrixmultiply's packed
//!   kernel measured 7-19% faster than this one, step 54).
//! - A view with a column stride other than 1, or the portable level (no
//!   AVX2, any non-x86 CPU), goes to matrixmultiply through gemm/mod.rs.
//!   Each call is counted at the ISA it ran (simd.rs).
//! - [`transpose`] turns V into Vᵀ for dW's product (16 x 16 blocks in
//!   registers at AVX-512, 8 x 8 at AVX2), since this kernel reads B by
//!   rows.
//! - Checked by the unit tests below against a plain triple loop and the
//!   definition of a transpose at every ISA the CPU has, and through every
//!   Winograd and unpacked unfold test; timed by examples/im2col_bench.rs
//!   (resnet-3x3, resnet-s2, mxnet-c2; `--packed` to compare with
//!   matrixmultiply).

#[cfg(target_arch = "x86_64")]
use crate::gemm::View;
use crate::gemm::{Mat, MatMut, check_product, sgemm};
#[cfg(target_arch = "x86_64")]
use crate::simd::Avx512Token;
use crate::simd::{Isa, Simd};

/// Rows per register block.
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 8;

/// C [m, n] = A [m, k] · B [k, n] (+ C when `accumulate`), on gemm/mod.rs's
/// views. Panics (an internal bug) when the views disagree or run past
/// their slices (`check_product`).
pub(crate) fn gemm(simd: Simd, a: Mat<'_>, b: Mat<'_>, c: MatMut<'_>, accumulate: bool) {
    check_product(&a, &b, &c);
    let (m, n) = (c.view.rows, c.view.cols);
    if m == 0 || n == 0 {
        return;
    }
    // Only the x86 kernels below read the ISA.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    #[cfg(target_arch = "x86_64")]
    if let (Simd::Avx2(_token), [1, 1, 1]) = (simd, [a.view.col_stride, b.view.col_stride, c.view.col_stride]) {
        crate::simd::count(Isa::Avx2);
        // SAFETY: `_token` (an Avx2Token) proves AVX2 and FMA;
        // `check_product` keeps every element read from A and B and read
        // or written in C inside its slice.
        unsafe { gemm_avx2(a, b, c, accumulate) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let (Some(token), [1, 1, 1]) = (simd.avx512(), [a.view.col_stride, b.view.col_stride, c.view.col_stride]) {
        crate::simd::count(Isa::Avx512);
        let full = m / ROWS * ROWS;
        let (a_full, c_full) = (
            Mat { view: View { rows: full, ..a.view }, ..a },
            MatMut { view: View { rows: full, ..c.view }, data: &mut *c.data },
        );
        // SAFETY: `token` (an Avx512Token) proves AVX-512F; `check_product`
        // keeps every element read from A and B and read or written in C
        // inside its slice, and the first `full` rows are a part of those
        // views.
        unsafe { gemm_avx512(a_full, b, c_full, accumulate) };
        if full < m {
            remainder_rows(token, a, b, c, full, accumulate);
        }
        return;
    }
    crate::simd::count(Isa::Portable);
    sgemm(1.0, a, b, if accumulate { 1.0 } else { 0.0 }, c);
}

/// Rows full..m (fewer than 8) of C = A·B (+ C): copied into one
/// zero-padded 8-row block, multiplied there, and copied back.
#[cfg(target_arch = "x86_64")]
fn remainder_rows(_token: Avx512Token, a: Mat<'_>, b: Mat<'_>, c: MatMut<'_>, full: usize, accumulate: bool) {
    let (m, k, n) = (c.view.rows, a.view.cols, c.view.cols);
    let rest = m - full;
    let mut a_block = vec![0.0f32; ROWS * k];
    let mut c_block = vec![0.0f32; ROWS * n];
    for i in 0..rest {
        a_block[i * k..][..k].copy_from_slice(&a.data[(full + i) * a.view.row_stride..][..k]);
        if accumulate {
            c_block[i * n..][..n].copy_from_slice(&c.data[(full + i) * c.view.row_stride..][..n]);
        }
    }
    let (a_view, c_view) = (View::row_major(ROWS, k), View::row_major(ROWS, n));
    let (a_block_mat, c_block_mat) =
        (Mat { data: &a_block, view: a_view }, MatMut { data: &mut c_block, view: c_view });
    check_product(&a_block_mat, &b, &c_block_mat);
    // SAFETY: `_token` (an Avx512Token) proves AVX-512F; the block views
    // were just checked against their buffers and B.
    unsafe { gemm_avx512(a_block_mat, b, c_block_mat, accumulate) };
    for i in 0..rest {
        c.data[(full + i) * c.view.row_stride..][..n].copy_from_slice(&c_block[i * n..][..n]);
    }
}

/// # Safety
/// The CPU must run AVX-512F (the caller holds an `Avx512Token`). Every access stays inside the
/// slices only under the bounds its caller asserts (see the call site).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gemm_avx512(a: Mat<'_>, b: Mat<'_>, c: MatMut<'_>, accumulate: bool) {
    let (m, n) = (c.view.rows, c.view.cols);
    let mut j0 = 0;
    while j0 < n {
        let width = (n - j0).min(32);
        // Lanes of the two column vectors that lie inside the matrix.
        let lanes = |from: usize| if width <= from { 0 } else { ((1u32 << (width - from).min(16)) - 1) as u16 };
        let masks = [lanes(0), lanes(16)];
        for i0 in (0..m).step_by(ROWS) {
            // SAFETY: rows i0..i0 + 8 ≤ m and columns j0..j0 + width ≤ n lie
            // inside the views checked by `gemm`; masked lanes are neither
            // read nor written.
            unsafe {
                if width > 16 {
                    tile::<2>(&a, &b, c.data, c.view.row_stride, i0, j0, masks, accumulate);
                } else {
                    tile::<1>(&a, &b, c.data, c.view.row_stride, i0, j0, masks, accumulate);
                }
            }
        }
        j0 += 32;
    }
}

/// One 8 x (16·V) block of C at (i0, j0).
///
/// # Safety
/// The CPU must run AVX-512F (the caller holds an `Avx512Token`). Every access stays inside the
/// slices only under the bounds its caller asserts (see the call site).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)] // the block's coordinates and its operands
unsafe fn tile<const V: usize>(
    a: &Mat<'_>,
    b: &Mat<'_>,
    c: &mut [f32],
    ldc: usize,
    i0: usize,
    j0: usize,
    masks: [u16; 2],
    accumulate: bool,
) {
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_set1_ps,
        _mm512_setzero_ps,
    };
    let (k, lda, ldb) = (a.view.cols, a.view.row_stride, b.view.row_stride);
    let (ap, bp, cp) = (a.data.as_ptr(), b.data.as_ptr(), c.as_mut_ptr());
    let mut acc: [[__m512; V]; ROWS] = [[_mm512_setzero_ps(); V]; ROWS];
    for kk in 0..k {
        // SAFETY: (whole block) element (i, kk) of A for i < m, (kk, j) of B
        // and (i, j) of C for j < n lie inside their slices
        // (`check_product`); lanes past n are masked off.
        unsafe {
            let brow = bp.add(kk * ldb + j0);
            let bv: [__m512; V] = std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], brow.add(16 * v)));
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add((i0 + i) * lda + kk));
                for (lane, &bvv) in row.iter_mut().zip(&bv) {
                    *lane = _mm512_fmadd_ps(av, bvv, *lane);
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (v, &value) in row.iter().enumerate() {
            // SAFETY: as above.
            unsafe {
                let at = cp.add((i0 + i) * ldc + j0 + 16 * v);
                let out = if accumulate { _mm512_add_ps(value, _mm512_maskz_loadu_ps(masks[v], at)) } else { value };
                _mm512_mask_storeu_ps(at, masks[v], out);
            }
        }
    }
}

/// out [cols, rows] (row stride `rows`) = the [rows, cols] matrix in `m`
/// (row stride `stride`), transposed: the B operand of winograd/mod.rs's dW
/// GEMMs. 16 x 16 blocks in registers with AVX-512 (a scalar loop took as
/// long as the GEMM it feeds), 8 x 8 with AVX2, else a scalar loop.
pub(crate) fn transpose(simd: Simd, m: &[f32], rows: usize, cols: usize, stride: usize, out: &mut [f32]) {
    transpose_strided(simd, m, rows, cols, stride, out, rows);
}

/// [`transpose`] with the output's rows `out_stride` floats apart (a
/// stride off powers of two keeps a GEMM's B panel out of a few L1 sets).
pub(crate) fn transpose_strided(
    simd: Simd,
    m: &[f32],
    rows: usize,
    cols: usize,
    stride: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!((rows - 1) * stride + cols <= m.len(), "transpose: past the input");
    assert!((cols - 1) * out_stride + rows <= out.len(), "transpose: past the output");
    assert!((rows == 1 || stride >= cols) && (cols == 1 || out_stride >= rows), "transpose: rows overlap");
    // Only the x86 kernels below read the ISA.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    #[cfg(target_arch = "x86_64")]
    if let Some(_token) = simd.avx512() {
        crate::simd::count(Isa::Avx512);
        // SAFETY: `_token` (an Avx512Token) proves AVX-512F; the asserts
        // above bound every access.
        unsafe { transpose_avx512(m, rows, cols, stride, out, out_stride) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Simd::Avx2(_token) = simd {
        crate::simd::count(Isa::Avx2);
        // SAFETY: `_token` (an Avx2Token) proves AVX2; the asserts above
        // bound every access.
        unsafe { transpose_avx2(m, rows, cols, stride, out, out_stride) };
        return;
    }
    for i in 0..rows {
        for (j, &v) in m[i * stride..][..cols].iter().enumerate() {
            out[j * out_stride + i] = v;
        }
    }
}

/// # Safety
/// The CPU must run AVX-512F (the caller holds an `Avx512Token`). Every access stays inside the
/// slices only under the bounds its caller asserts (see the call site).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_avx512(m: &[f32], rows: usize, cols: usize, stride: usize, out: &mut [f32], out_stride: usize) {
    use std::arch::x86_64::{
        __m512, _mm512_castpd_ps, _mm512_castps_pd, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_setzero_ps,
        _mm512_shuffle_f32x4, _mm512_unpackhi_pd, _mm512_unpackhi_ps, _mm512_unpacklo_pd, _mm512_unpacklo_ps,
    };
    let mask = |n: usize| if n >= 16 { u16::MAX } else { ((1u32 << n) - 1) as u16 };
    for i0 in (0..rows).step_by(16) {
        let (row_count, row_mask) = ((rows - i0).min(16), mask(rows - i0));
        for j0 in (0..cols).step_by(16) {
            let (col_count, col_mask) = ((cols - j0).min(16), mask(cols - j0));
            // SAFETY: rows i0..i0 + row_count and columns j0..j0 + col_count
            // lie inside m (asserted by `transpose`); masked lanes are not
            // read; output rows j0.. and their first row_count lanes lie
            // inside out.
            unsafe {
                let r: [__m512; 16] = std::array::from_fn(|i| {
                    if i < row_count {
                        _mm512_maskz_loadu_ps(col_mask, m.as_ptr().add((i0 + i) * stride + j0))
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                // Interleave 32-bit pairs, then 64-bit pairs: u[4i + q]'s
                // 128-bit lane L then holds column 4L + q of rows 4i..4i + 3.
                let t: [__m512; 16] = std::array::from_fn(|i| {
                    let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
                    if i % 2 == 0 { _mm512_unpacklo_ps(a, b) } else { _mm512_unpackhi_ps(a, b) }
                });
                let u: [__m512; 16] = std::array::from_fn(|i| {
                    let (base, q) = (i / 4 * 4, i % 4);
                    let (a, b) = (_mm512_castps_pd(t[base + q / 2]), _mm512_castps_pd(t[base + q / 2 + 2]));
                    _mm512_castpd_ps(if q % 2 == 0 { _mm512_unpacklo_pd(a, b) } else { _mm512_unpackhi_pd(a, b) })
                });
                // Gather lane L of u[q], u[4 + q], u[8 + q], u[12 + q].
                for q in 0..4 {
                    let v1 = _mm512_shuffle_f32x4::<0x88>(u[q], u[4 + q]);
                    let v2 = _mm512_shuffle_f32x4::<0xDD>(u[q], u[4 + q]);
                    let w1 = _mm512_shuffle_f32x4::<0x88>(u[8 + q], u[12 + q]);
                    let w2 = _mm512_shuffle_f32x4::<0xDD>(u[8 + q], u[12 + q]);
                    let columns = [
                        (q, _mm512_shuffle_f32x4::<0x88>(v1, w1)),
                        (4 + q, _mm512_shuffle_f32x4::<0x88>(v2, w2)),
                        (8 + q, _mm512_shuffle_f32x4::<0xDD>(v1, w1)),
                        (12 + q, _mm512_shuffle_f32x4::<0xDD>(v2, w2)),
                    ];
                    for (c, value) in columns {
                        if c < col_count {
                            _mm512_mask_storeu_ps(out.as_mut_ptr().add((j0 + c) * out_stride + i0), row_mask, value);
                        }
                    }
                }
            }
        }
    }
}

/// Rows of the AVX2 register block: 6 rows x 16 columns is 12 ymm
/// accumulators, plus B's two vectors and A's broadcast, 15 of the 16 ymm
/// registers (8 rows, the AVX-512 block's, would need 16 accumulators).
#[cfg(target_arch = "x86_64")]
const ROWS_AVX2: usize = 6;

/// Depth of one pass of the AVX2 kernel: a 16-column panel of B is then
/// 16 KiB, half of L1, and stays there while every row block passes over
/// it (unblocked, the unfold path's k = C·R·S = 576 made a 36 KiB panel,
/// streamed from L2 by each row block).
#[cfg(target_arch = "x86_64")]
const DEPTH_AVX2: usize = 256;

/// [`gemm`] at AVX2 + FMA: columns in steps of 16 outside, then depth in
/// steps of [`DEPTH_AVX2`] (each step after the first adds into C), rows of
/// 6 inside; the last row block (m mod 6 rows) and the last column step
/// (n mod 16) run as narrower register blocks rather than padded copies,
/// and only that column step uses masked loads and stores.
///
/// # Safety
/// The CPU must run AVX2 and FMA (the caller holds an `Avx2Token`). Every access stays inside the
/// slices only under the bounds its caller asserts (see the call site).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_avx2(a: Mat<'_>, b: Mat<'_>, c: MatMut<'_>, accumulate: bool) {
    let (m, n, k) = (c.view.rows, c.view.cols, a.view.cols);
    let ldc = c.view.row_stride;
    let cp = c.data.as_mut_ptr();
    for j0 in (0..n).step_by(16) {
        let width = (n - j0).min(16);
        // At least one pass, so k = 0 still writes (or keeps) C.
        for pass in 0..k.div_ceil(DEPTH_AVX2).max(1) {
            let depth = pass * DEPTH_AVX2..((pass + 1) * DEPTH_AVX2).min(k);
            let add = accumulate || pass > 0;
            for i0 in (0..m).step_by(ROWS_AVX2) {
                let at = Block { i0, j0, width, depth: depth.clone(), accumulate: add };
                // SAFETY: rows i0..i0 + rows ≤ m, columns j0..j0 + width ≤ n
                // and depth ⊆ 0..k lie inside the views `gemm` checked;
                // lanes past width are neither read nor written.
                unsafe {
                    match (m - i0).min(ROWS_AVX2) {
                        6 => tile_avx2_width::<6>(&a, &b, cp, ldc, at),
                        5 => tile_avx2_width::<5>(&a, &b, cp, ldc, at),
                        4 => tile_avx2_width::<4>(&a, &b, cp, ldc, at),
                        3 => tile_avx2_width::<3>(&a, &b, cp, ldc, at),
                        2 => tile_avx2_width::<2>(&a, &b, cp, ldc, at),
                        _ => tile_avx2_width::<1>(&a, &b, cp, ldc, at),
                    }
                }
            }
        }
    }
}

/// Where one AVX2 register block sits: its first row and column, its
/// width (≤ 16), the depth range it sums over, and whether it adds into C.
#[cfg(target_arch = "x86_64")]
#[derive(Clone)]
struct Block {
    i0: usize,
    j0: usize,
    width: usize,
    depth: std::ops::Range<usize>,
    accumulate: bool,
}

/// An R x `width` block (width ≤ 16) at (i0, j0): two vectors of columns
/// when width > 8, masked when width is not a whole number of vectors.
///
/// # Safety
/// As [`gemm_avx2`]'s; rows i0..i0 + R, columns j0..j0 + width and the
/// depth range lie inside the checked views.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2_width<const R: usize>(a: &Mat<'_>, b: &Mat<'_>, cp: *mut f32, ldc: usize, at: Block) {
    use std::arch::x86_64::{_mm256_cmpgt_epi32, _mm256_set1_epi32, _mm256_setr_epi32};
    let width = at.width;
    let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // Lanes of each column vector inside the matrix (sign bit set).
    let masks = [0, 8].map(|from| _mm256_cmpgt_epi32(_mm256_set1_epi32(width as i32 - from), index));
    // SAFETY: as this function's contract.
    unsafe {
        match width {
            16 => tile_avx2::<R, 2, false>(a, b, cp, ldc, at, masks),
            8 => tile_avx2::<R, 1, false>(a, b, cp, ldc, at, masks),
            9.. => tile_avx2::<R, 2, true>(a, b, cp, ldc, at, masks),
            _ => tile_avx2::<R, 1, true>(a, b, cp, ldc, at, masks),
        }
    }
}

/// One R x (8·V) block of C at (i0, j0); with MASKED, lanes off `masks`
/// are neither read nor written.
///
/// # Safety
/// As [`tile_avx2_width`]'s, with `masks` covering exactly the columns
/// below n.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const R: usize, const V: usize, const MASKED: bool>(
    a: &Mat<'_>,
    b: &Mat<'_>,
    cp: *mut f32,
    ldc: usize,
    at: Block,
    masks: [std::arch::x86_64::__m256i; 2],
) {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_maskload_ps,
        _mm256_maskstore_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };
    let (lda, ldb) = (a.view.row_stride, b.view.row_stride);
    let (ap, bp) = (a.data.as_ptr(), b.data.as_ptr());
    let Block { i0, j0, depth, accumulate, .. } = at;
    // SAFETY: (whole body) element (i, kk) of A for i < m, (kk, j) of B and
    // (i, j) of C for j < n lie inside their slices (`check_product`); with
    // MASKED the lanes past n are masked off.
    unsafe {
        let load = |p: *const f32, v: usize| if MASKED { _mm256_maskload_ps(p, masks[v]) } else { _mm256_loadu_ps(p) };
        let mut acc: [[__m256; V]; R] = [[_mm256_setzero_ps(); V]; R];
        for kk in depth {
            let brow = bp.add(kk * ldb + j0);
            let bv: [__m256; V] = std::array::from_fn(|v| load(brow.add(8 * v), v));
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*ap.add((i0 + i) * lda + kk));
                for (lane, &bvv) in row.iter_mut().zip(&bv) {
                    *lane = _mm256_fmadd_ps(av, bvv, *lane);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &value) in row.iter().enumerate() {
                let at = cp.add((i0 + i) * ldc + j0 + 8 * v);
                let out = if accumulate { _mm256_add_ps(value, load(at, v)) } else { value };
                if MASKED {
                    _mm256_maskstore_ps(at, masks[v], out);
                } else {
                    _mm256_storeu_ps(at, out);
                }
            }
        }
    }
}

/// [`transpose_strided`] at AVX2: whole 8 x 8 blocks in registers, the
/// ragged edges (rows or columns mod 8) by the scalar loop.
///
/// # Safety
/// The CPU must run AVX2 (the caller holds an `Avx2Token`). Every access stays inside the
/// slices only under the bounds its caller asserts (see the call site).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_avx2(m: &[f32], rows: usize, cols: usize, stride: usize, out: &mut [f32], out_stride: usize) {
    use std::arch::x86_64::{
        __m256, _mm256_loadu_ps, _mm256_permute2f128_ps, _mm256_shuffle_ps, _mm256_storeu_ps, _mm256_unpackhi_ps,
        _mm256_unpacklo_ps,
    };
    let (full_rows, full_cols) = (rows / 8 * 8, cols / 8 * 8);
    for i0 in (0..full_rows).step_by(8) {
        for j0 in (0..full_cols).step_by(8) {
            // SAFETY: rows i0..i0 + 8 ≤ rows and columns j0..j0 + 8 ≤ cols
            // of m, and output rows j0..j0 + 8 with their lanes i0..i0 + 8,
            // lie inside the slices (asserted by `transpose_strided`).
            unsafe {
                let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(m.as_ptr().add((i0 + i) * stride + j0)));
                // [a0 b0 a1 b1 | a4 b4 a5 b5], [a2 b2 a3 b3 | a6 b6 a7 b7]
                // for row pairs (a, b) = (0, 1), (2, 3), (4, 5), (6, 7).
                let t: [__m256; 8] = std::array::from_fn(|i| {
                    let (x, y) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
                    if i % 2 == 0 { _mm256_unpacklo_ps(x, y) } else { _mm256_unpackhi_ps(x, y) }
                });
                // s[4h + q]: column q (and q + 4 in the upper lane) of rows
                // 4h..4h + 4.
                let s: [__m256; 8] = std::array::from_fn(|i| {
                    let (h, q) = (i / 4, i % 4);
                    let (x, y) = (t[4 * h + q / 2], t[4 * h + 2 + q / 2]);
                    if q % 2 == 0 { _mm256_shuffle_ps::<0x44>(x, y) } else { _mm256_shuffle_ps::<0xEE>(x, y) }
                });
                for q in 0..4 {
                    let low = _mm256_permute2f128_ps::<0x20>(s[q], s[4 + q]);
                    let high = _mm256_permute2f128_ps::<0x31>(s[q], s[4 + q]);
                    _mm256_storeu_ps(out.as_mut_ptr().add((j0 + q) * out_stride + i0), low);
                    _mm256_storeu_ps(out.as_mut_ptr().add((j0 + 4 + q) * out_stride + i0), high);
                }
            }
        }
    }
    // The ragged edges: rows past full_rows (all columns), columns past
    // full_cols (the whole blocks' rows).
    for i in 0..rows {
        let from = if i < full_rows { full_cols } else { 0 };
        for (j, &v) in m[i * stride..][..cols].iter().enumerate().skip(from) {
            out[j * out_stride + i] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{View, mat, mat_mut};
    use kernels_core::SplitMix64;

    #[test]
    fn transpose_matches_the_definition() {
        for (isa, (rows, cols, stride)) in Isa::supported().into_iter().flat_map(|isa| {
            [(16, 16, 16), (64, 112, 120), (33, 7, 9), (5, 40, 41), (1, 3, 3), (17, 1, 1), (19, 21, 23)]
                .map(|shape| (isa, shape))
        }) {
            let simd = Simd::new(isa);
            let m: Vec<f32> = (0..rows * stride).map(|v| v as f32).collect();
            let mut out = vec![-1.0f32; rows * cols + 3];
            transpose(simd, &m, rows, cols, stride, &mut out);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(out[j * rows + i], m[i * stride + j], "{isa} {rows}x{cols} [{i},{j}]");
                }
            }
            assert_eq!(&out[rows * cols..], &[-1.0; 3], "{rows}x{cols}: wrote past the matrix");
            // With padded output rows: the padding is left alone.
            let out_stride = rows + 5;
            let mut padded = vec![-1.0f32; cols * out_stride];
            transpose_strided(simd, &m, rows, cols, stride, &mut padded, out_stride);
            for j in 0..cols {
                for i in 0..out_stride {
                    let want = if i < rows { m[i * stride + j] } else { -1.0 };
                    assert_eq!(padded[j * out_stride + i], want, "{rows}x{cols} padded [{j},{i}]");
                }
            }
        }
    }

    #[test]
    fn matches_a_triple_loop_on_awkward_shapes() {
        let mut rng = SplitMix64::new(4);
        for (m, k, n, pad) in [
            (8, 5, 40, 3),
            (16, 64, 112, 0),
            (24, 7, 9, 1),
            (8, 1, 16, 0),
            (8, 3, 33, 2),
            (5, 4, 20, 1),
            (13, 6, 50, 2),
            (7, 600, 20, 1), // three AVX2 depth passes, the last one short
        ] {
            let (lda, ldb, ldc) = (k + pad, n + pad, n + 2 * pad);
            let mut data = |len: usize| (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect::<Vec<f32>>();
            let (a, b, c0) = (data(m * lda), data(k * ldb), data(m * ldc));
            for (isa, accumulate) in Isa::supported().into_iter().flat_map(|isa| [(isa, false), (isa, true)]) {
                let mut c = c0.clone();
                let (av, bv) = (mat(&a, View::strided(m, k, lda)), mat(&b, View::strided(k, n, ldb)));
                gemm(Simd::new(isa), av, bv, mat_mut(&mut c, View::strided(m, n, ldc)), accumulate);
                for i in 0..m {
                    for j in 0..ldc {
                        let mut want = if accumulate || j >= n { c0[i * ldc + j] as f64 } else { 0.0 };
                        // f32 sums drift with their length: the bound grows
                        // with Σ|a·b| (1e-5 for the short ones).
                        let mut size = 0.0;
                        if j < n {
                            want += (0..k).map(|p| a[i * lda + p] as f64 * b[p * ldb + j] as f64).sum::<f64>();
                            size = (0..k).map(|p| (a[i * lda + p] as f64 * b[p * ldb + j] as f64).abs()).sum::<f64>();
                        }
                        let got = c[i * ldc + j] as f64;
                        assert!(
                            (got - want).abs() < 1e-5 + 1e-6 * size,
                            "{isa} {m}x{k}x{n} acc {accumulate} [{i},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
