//! C = A·B or C += A·B through packed panels (BLIS-style): this crate's own
//! packed GEMM, with one register kernel per ISA chosen by the `Simd`
//! token, so it follows the ISA cap (matrixmultiply, which it replaces on
//! the unfold path, picks its AVX-512 kernel even under `--isa avx2`).
//!
//! - Loops, outermost first: columns of C in blocks of NC; depth in blocks
//!   of KC (B's KC x NC block packed into NR-wide panels, [KC][NR] each);
//!   rows in blocks of MC (A's MC x KC block packed into MR-tall panels,
//!   [KC][MR] each); then NR-column panels; then MR-row panels, each one
//!   register block of MR x NR accumulators over the KC depth. A B panel
//!   (KC·NR floats, 16 KiB) stays in L1 while every row panel of the A
//!   block (in L2) passes over it; every load in the register kernel is
//!   contiguous, whatever the operands' strides.
//! - Packing reads any strided view (a transposed operand is a column
//!   stride other than 1): B rows with column stride 1 are slice copies.
//!   Panels are zero-padded to MR and NR, so edge blocks run the same
//!   register kernel into a small buffer that is then added into C.
//! - AVX2 + FMA: 6 x 16 (12 ymm accumulators). AVX-512: 12 x 32 (24 zmm
//!   accumulators of the 32 registers). The portable level (and non-x86
//!   CPUs) goes to matrixmultiply through gemm/mod.rs.
//! - Pack buffers are per thread and reused across calls (the Winograd
//!   path makes thousands of small calls).
//! - Checked by the unit tests below against a triple loop at every ISA
//!   the CPU has, on odd, empty and strided or transposed shapes, and
//!   through every unfold-path and Winograd conv test; timed by
//!   examples/im2col_bench.rs (`--packed`).

use std::cell::RefCell;

use crate::gemm::{Mat, MatMut, check_product, sgemm};
use crate::simd::{Isa, Simd};

/// Block sizes of one register kernel: MR x NR registers, KC depth, MC
/// rows of A per packed block, NC columns of B per packed block.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Blocks {
    mr: usize,
    nr: usize,
    kc: usize,
    mc: usize,
    nc: usize,
}

/// AVX2: a 256 x 16 B panel is 16 KiB (half of L1); the A block 144 x 256
/// is 144 KiB of the 1 MiB L2.
#[cfg(target_arch = "x86_64")]
const AVX2: Blocks = Blocks { mr: 6, nr: 16, kc: 256, mc: 144, nc: 1024 };

/// AVX-512: a 128 x 32 B panel is 16 KiB; the A block 192 x 128 is 96 KiB.
#[cfg(target_arch = "x86_64")]
const AVX512: Blocks = Blocks { mr: 12, nr: 32, kc: 128, mc: 192, nc: 1024 };

thread_local! {
    /// This thread's packed A block and B block, grown on demand.
    static PACKS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// C [m, n] = A [m, k] · B [k, n] (+ C when `accumulate`), on gemm/mod.rs's
/// views (any strides). Panics (an internal bug) when the views disagree
/// or run past their slices (`check_product`).
pub(crate) fn gemm(simd: Simd, a: Mat<'_>, b: Mat<'_>, c: MatMut<'_>, accumulate: bool) {
    check_product(&a, &b, &c);
    #[cfg(target_arch = "x86_64")]
    match simd {
        Simd::Avx512(_token) => {
            crate::simd::count(Isa::Avx512);
            // SAFETY: `_token` proves AVX-512F (and AVX2, FMA);
            // `check_product` above keeps every index the driver forms inside
            // the slices.
            unsafe { drive(AVX512, simd, a, b, c, accumulate, kernel_avx512_entry) };
            return;
        }
        Simd::Avx2(_token) => {
            crate::simd::count(Isa::Avx2);
            // SAFETY: `_token` proves AVX2 and FMA; as above.
            unsafe { drive(AVX2, simd, a, b, c, accumulate, kernel_avx2_entry) };
            return;
        }
        Simd::Portable => {}
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    crate::simd::count(Isa::Portable);
    sgemm(1.0, a, b, if accumulate { 1.0 } else { 0.0 }, c);
}

/// A register kernel: `out` [MR, NR] (row stride `ldo`) = (out when `add`)
/// + Σ over `kc` steps of packed A column ⊗ packed B row.
#[cfg(target_arch = "x86_64")]
type Kernel = unsafe fn(kc: usize, a: *const f32, b: *const f32, out: *mut f32, ldo: usize, add: bool);

/// The blocked loops around `kernel`.
///
/// # Safety
/// The CPU must run the features `kernel` is compiled for (the caller
/// holds its token), and the views must have passed `check_product`.
#[cfg(target_arch = "x86_64")]
unsafe fn drive(bl: Blocks, simd: Simd, a: Mat<'_>, b: Mat<'_>, c: MatMut<'_>, accumulate: bool, kernel: Kernel) {
    let (m, k, n) = (a.view.rows, a.view.cols, b.view.cols);
    if m == 0 || n == 0 {
        return;
    }
    let (ldc, csc) = (c.view.row_stride, c.view.col_stride);
    let c = c.data;
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c[i * ldc + j * csc] = 0.0;
                }
            }
        }
        return;
    }
    PACKS.with_borrow_mut(|(apack, bpack)| {
        // Depth blocks of equal size, at most 1.25·KC: resnet-s2's k = 288
        // at AVX2 is one block of 288 (an 18 KiB B panel), not 256 and a
        // 32-deep pass that reloads and stores all of C for 11% of the work.
        let kc_max = k.div_ceil(k.div_ceil(bl.kc + bl.kc / 4));
        let a_len = bl.mc.min(m).next_multiple_of(bl.mr) * kc_max;
        let b_len = bl.nc.min(n).next_multiple_of(bl.nr) * kc_max;
        // Panels start on a 64-byte line (the vectors' loads of B then
        // never straddle two lines): 16 floats of slack for the offset.
        let aligned = |buf: &mut Vec<f32>, len: usize| -> std::ops::Range<usize> {
            if buf.len() < len + 16 {
                buf.resize(len + 16, 0.0);
            }
            let skip = buf.as_ptr().align_offset(64).min(16);
            skip..skip + len
        };
        let (a_range, b_range) = (aligned(apack, a_len), aligned(bpack, b_len));
        let (apack, bpack) = (&mut apack[a_range], &mut bpack[b_range]);
        // An edge block's product before it is added into C.
        let mut edge = [0.0f32; 12 * 32];
        for jc in (0..n).step_by(bl.nc) {
            let nc = bl.nc.min(n - jc);
            for pc in (0..k).step_by(kc_max) {
                let kc = kc_max.min(k - pc);
                let add = accumulate || pc > 0;
                pack_b(simd, &b, pc, kc, jc, nc, bl.nr, bpack);
                for ic in (0..m).step_by(bl.mc) {
                    let mc = bl.mc.min(m - ic);
                    pack_a(simd, &a, ic, mc, pc, kc, bl.mr, apack);
                    for jr in (0..nc).step_by(bl.nr) {
                        let nr = bl.nr.min(nc - jr);
                        let bp = bpack[jr * kc..][..bl.nr * kc].as_ptr();
                        for ir in (0..mc).step_by(bl.mr) {
                            let mr = bl.mr.min(mc - ir);
                            let ap = apack[ir * kc..][..bl.mr * kc].as_ptr();
                            let (i, j) = (ic + ir, jc + jr);
                            if mr == bl.mr && nr == bl.nr && csc == 1 {
                                // The whole block lies in C: rows i..i + mr
                                // < m, columns j..j + nr ≤ n with unit stride.
                                let last = (i + mr - 1) * ldc + j + nr;
                                let out = c[i * ldc + j..last].as_mut_ptr();
                                // SAFETY: ap and bp each hold kc steps of
                                // MR and NR floats (the slices just taken);
                                // out's MR rows of NR floats at stride ldc
                                // end at `last` ≤ c.len() (slice above).
                                unsafe { kernel(kc, ap, bp, out, ldc, add) };
                            } else {
                                // SAFETY: as above; `edge` holds MR x NR ≤
                                // 12 x 32 floats at row stride NR.
                                unsafe { kernel(kc, ap, bp, edge.as_mut_ptr(), bl.nr, false) };
                                for ii in 0..mr {
                                    for jj in 0..nr {
                                        let at = &mut c[(i + ii) * ldc + (j + jj) * csc];
                                        let sum = edge[ii * bl.nr + jj];
                                        *at = if add { *at + sum } else { sum };
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}

/// Rows ic..ic + mc, depth pc..pc + kc of A into MR-row panels [kc][MR],
/// zero-padded to a whole panel.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)] // the block's corner and size, and its buffer
fn pack_a(simd: Simd, a: &Mat<'_>, ic: usize, mc: usize, pc: usize, kc: usize, mr: usize, out: &mut [f32]) {
    // A constant panel height lets the compiler unroll the whole-panel loop.
    match mr {
        6 => pack_a_rows::<6>(simd, a, ic, mc, pc, kc, out),
        12 => pack_a_rows::<12>(simd, a, ic, mc, pc, kc, out),
        _ => unreachable!("no register kernel is {mr} rows tall"),
    }
}

/// [`pack_a`] for panels of MR rows.
#[cfg(target_arch = "x86_64")]
fn pack_a_rows<const MR: usize>(simd: Simd, a: &Mat<'_>, ic: usize, mc: usize, pc: usize, kc: usize, out: &mut [f32]) {
    let mr = MR;
    let (rs, cs) = (a.view.row_stride, a.view.col_stride);
    for (panel, ir) in (0..mc).step_by(mr).enumerate() {
        let rows = mr.min(mc - ir);
        let dst = &mut out[panel * mr * kc..][..mr * kc];
        let base = |i: usize| (ic + ir + i) * rs + pc * cs;
        if rs == 1 && rows == mr {
            // A transposed A (Wᵀ): each packed column is MR floats of one
            // stored row.
            for (p, column) in dst.chunks_exact_mut(MR).enumerate() {
                column.copy_from_slice(&a.data[base(0) + p * cs..][..MR]);
            }
            continue;
        }
        if cs == 1 && MR > 8 && rs >= kc {
            // A 12-row panel is one masked 16 x 16 block per 16 steps of
            // depth in AVX-512 registers.
            crate::gemm::unpacked::transpose_strided(simd, &a.data[base(0)..], rows, kc, rs, dst, MR);
        } else if cs == 1 && rows == mr {
            // Whole 6-row panels of row-major A: walk the depth once,
            // writing each packed column contiguously (row by row, the
            // stores stride by MR and cost about twice as much).
            let rows: [&[f32]; MR] = std::array::from_fn(|i| &a.data[base(i)..][..kc]);
            for (p, column) in dst.chunks_exact_mut(MR).enumerate() {
                for (v, row) in column.iter_mut().zip(&rows) {
                    *v = row[p];
                }
            }
        } else {
            for i in 0..rows {
                let base = base(i);
                for p in 0..kc {
                    dst[p * mr + i] = a.data[base + p * cs];
                }
            }
        }
        if rows < mr {
            for p in 0..kc {
                dst[p * mr + rows..][..mr - rows].fill(0.0);
            }
        }
    }
}

/// Depth pc..pc + kc, columns jc..jc + nc of B into NR-column panels
/// [kc][NR], zero-padded to a whole panel.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)] // the block's corner and size, and its buffer
fn pack_b(simd: Simd, b: &Mat<'_>, pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, out: &mut [f32]) {
    let (rs, cs) = (b.view.row_stride, b.view.col_stride);
    for (panel, jr) in (0..nc).step_by(nr).enumerate() {
        let cols = nr.min(nc - jr);
        let dst = &mut out[panel * nr * kc..][..nr * kc];
        if cs == 1 {
            for (p, row) in dst.chunks_exact_mut(nr).enumerate() {
                row[..cols].copy_from_slice(&b.data[(pc + p) * rs + jc + jr..][..cols]);
                row[cols..].fill(0.0);
            }
        } else {
            if rs == 1 && cs >= kc {
                // A transposed B (colᵀ, dYᵀ): its stored rows are B's
                // columns, so the panel is a transpose, in registers.
                let from = &b.data[(jc + jr) * cs + pc..];
                crate::gemm::unpacked::transpose_strided(simd, from, cols, kc, cs, dst, nr);
            } else {
                for j in 0..cols {
                    let base = pc * rs + (jc + jr + j) * cs;
                    for p in 0..kc {
                        dst[p * nr + j] = b.data[base + p * rs];
                    }
                }
            }
            if cols < nr {
                for row in dst.chunks_exact_mut(nr) {
                    row[cols..].fill(0.0);
                }
            }
        }
    }
}

/// [`kernel_avx2`] as a [`Kernel`].
///
/// # Safety
/// As [`kernel_avx2`]'s.
#[cfg(target_arch = "x86_64")]
unsafe fn kernel_avx2_entry(kc: usize, a: *const f32, b: *const f32, out: *mut f32, ldo: usize, add: bool) {
    // SAFETY: this function's contract is kernel_avx2's.
    unsafe { kernel_avx2::<{ AVX2.mr }, { AVX2.nr / 8 }>(kc, a, b, out, ldo, add) }
}

/// The AVX2 register block: out [MR, 8·NV] (+)= Σ_p a[p][0..MR] ⊗
/// b[p][0..8·NV] (MR·NV accumulators, NV + 1 more registers of the 16).
///
/// # Safety
/// The CPU must run AVX2 and FMA; `a` holds MR·kc floats, `b` 8·NV·kc,
/// and `out` MR rows of 8·NV floats at stride `ldo`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2<const MR: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    out: *mut f32,
    ldo: usize,
    add: bool,
) {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };
    // SAFETY: (whole body) step p reads a[MR·p..MR·(p + 1)] and
    // b[8·NV·p..8·NV·(p + 1)], p < kc, inside the panels; out's rows as
    // the contract says.
    unsafe {
        let mut acc: [[__m256; NV]; MR] = [[_mm256_setzero_ps(); NV]; MR];
        let (mut ap, mut bp) = (a, b);
        for _ in 0..kc {
            let bv: [__m256; NV] = std::array::from_fn(|v| _mm256_loadu_ps(bp.add(8 * v)));
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*ap.add(i));
                for (lane, &bvv) in row.iter_mut().zip(&bv) {
                    *lane = _mm256_fmadd_ps(av, bvv, *lane);
                }
            }
            ap = ap.add(MR);
            bp = bp.add(8 * NV);
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &value) in row.iter().enumerate() {
                let at = out.add(i * ldo + 8 * v);
                let value = if add { _mm256_add_ps(value, _mm256_loadu_ps(at)) } else { value };
                _mm256_storeu_ps(at, value);
            }
        }
    }
}

/// [`kernel_avx512`] as a [`Kernel`].
///
/// # Safety
/// As [`kernel_avx512`]'s.
#[cfg(target_arch = "x86_64")]
unsafe fn kernel_avx512_entry(kc: usize, a: *const f32, b: *const f32, out: *mut f32, ldo: usize, add: bool) {
    // SAFETY: this function's contract is kernel_avx512's.
    unsafe { kernel_avx512(kc, a, b, out, ldo, add) }
}

/// The AVX-512 register block: out [12, 32] (+)= Σ_p a[p][0..12] ⊗
/// b[p][0..32].
///
/// # Safety
/// The CPU must run AVX-512F; `a` holds 12·kc floats, `b` 32·kc, and
/// `out` 12 rows of 32 floats at stride `ldo`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_avx512(kc: usize, a: *const f32, b: *const f32, out: *mut f32, ldo: usize, add: bool) {
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };
    const MR: usize = 12;
    // SAFETY: (whole body) step p reads a[12p..12p + 12] and
    // b[32p..32p + 32], p < kc, inside the panels; out's rows as the
    // contract says.
    unsafe {
        let mut acc: [[__m512; 2]; MR] = [[_mm512_setzero_ps(); 2]; MR];
        let (mut ap, mut bp) = (a, b);
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(i));
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
            }
            ap = ap.add(MR);
            bp = bp.add(32);
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &value) in row.iter().enumerate() {
                let at = out.add(i * ldo + 16 * v);
                let value = if add { _mm512_add_ps(value, _mm512_loadu_ps(at)) } else { value };
                _mm512_storeu_ps(at, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{View, mat, mat_mut};
    use kernels_core::SplitMix64;

    /// C = A·B (+ C) against f64 sums, with A and B through the given
    /// views (row-major or transposed storage, padded strides).
    #[allow(clippy::too_many_arguments)] // one case's shape and layout
    fn check(isa: Isa, m: usize, k: usize, n: usize, a_t: bool, b_t: bool, pad: usize, rng: &mut SplitMix64) {
        let mut data = |len: usize| (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect::<Vec<f32>>();
        // Stored [m, k] (or [k, m] when transposed) with rows padded.
        let (a_rows, a_cols) = if a_t { (k, m) } else { (m, k) };
        let (b_rows, b_cols) = if b_t { (n, k) } else { (k, n) };
        let (lda, ldb, ldc) = (a_cols + pad, b_cols + pad, n + 2 * pad);
        let (a, b, c0) = (data(a_rows * lda), data(b_rows * ldb), data(m * ldc));
        let va = View::strided(a_rows, a_cols, lda);
        let vb = View::strided(b_rows, b_cols, ldb);
        let (va, vb) = (if a_t { va.t() } else { va }, if b_t { vb.t() } else { vb });
        let at = |i: usize, p: usize| a[i * va.row_stride + p * va.col_stride] as f64;
        let bt = |p: usize, j: usize| b[p * vb.row_stride + j * vb.col_stride] as f64;
        for accumulate in [false, true] {
            let mut c = c0.clone();
            gemm(Simd::new(isa), mat(&a, va), mat(&b, vb), mat_mut(&mut c, View::strided(m, n, ldc)), accumulate);
            for i in 0..m {
                for j in 0..ldc {
                    let mut want = if accumulate || j >= n { c0[i * ldc + j] as f64 } else { 0.0 };
                    let mut size = 0.0;
                    if j < n {
                        want += (0..k).map(|p| at(i, p) * bt(p, j)).sum::<f64>();
                        size = (0..k).map(|p| (at(i, p) * bt(p, j)).abs()).sum::<f64>();
                    }
                    let got = c[i * ldc + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-5 + 1e-6 * size,
                        "{isa} {m}x{k}x{n} a_t {a_t} b_t {b_t} acc {accumulate} [{i},{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn matches_a_triple_loop_on_every_edge() {
        let mut rng = SplitMix64::new(56);
        // Every m, n and k edge: 0, 1, below, at and past the register
        // blocks (6 / 12 rows, 16 / 32 columns) and the cache blocks (depth
        // blocks of at most 160 / 320, MC 144 / 192).
        let sizes = [
            (0, 5, 7),
            (5, 0, 7),
            (5, 7, 0),
            (0, 0, 0),
            (1, 1, 1),
            (6, 16, 16),
            (12, 3, 32),
            (13, 17, 33),
            (7, 300, 50),
            (145, 9, 17),
            (200, 130, 70),
            (25, 257, 1),
            (9, 700, 40), // 3 depth blocks at AVX2, 5 at AVX-512
            (1, 64, 1030),
            (64, 64, 112),
        ];
        for isa in Isa::supported() {
            for &(m, k, n) in &sizes {
                for (a_t, b_t, pad) in [(false, false, 0), (false, false, 3), (true, false, 1), (false, true, 2)] {
                    check(isa, m, k, n, a_t, b_t, pad, &mut rng);
                }
            }
        }
    }
}
