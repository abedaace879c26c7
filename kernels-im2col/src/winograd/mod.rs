//! conv2d forward and backward by Winograd's minimal filtering F(2x2, 3x3),
//! for 3x3, stride-1, undilated convs with enough channels (resnet-3x3).
//!
//! - Every 2x2 block of output pixels (a "tile") reads a 4x4 input patch d.
//!   Forward: y_tile = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A, with the sum over input
//!   channels taken inside the transform: for each of the 16 transform
//!   positions ξ, M_ξ [K, T] = U_ξ [K, C] · V_ξ [C, T] over a block of T
//!   tiles. Those 16 GEMMs do 16 multiply-adds per tile and channel pair
//!   where im2col's one GEMM does 36: 2.25x fewer FLOPs, the rest being
//!   cheap adds in the transforms.
//! - Backward is the exact adjoint of that computation, so it needs no
//!   other algebra: per tile dM = A dy Aᵀ; then dX: dV_ξ = U_ξᵀ · dM_ξ and
//!   dd = B dV Bᵀ, scatter-added into dx (neighbouring patches overlap by
//!   two pixels); dW: dU_ξ += dM_ξ · V_ξᵀ over all tiles, and dw = Gᵀ dU G.
//! - Blocks are whole rows of tiles of one image, sized so a block's V and
//!   M stay in L2; rayon runs one image per worker (the plan takes this path
//!   only when there are at least as many images as threads), each with its
//!   own V, M and partial dU. The GEMMs run through gemm/unpacked.rs (no
//!   packing: matrixmultiply's per-call packing was their bottleneck); the
//!   tile transforms live in winograd/transforms.rs, each dispatching to an
//!   AVX-512 or AVX2 version (winograd/input.rs, winograd/output.rs,
//!   winograd/dm.rs, winograd/dx.rs) at the call's ISA. V's and M's 16
//!   position planes are each padded by a cache line (`plane_floats`).
//! - Accuracy: the transforms only add, subtract and halve, so the error
//!   stays at f32-reduction level. tests/against_naive.rs checks every
//!   output against the f64 reference on awkward shapes and one-row blocks;
//!   harness/tests/im2col.rs runs it as a property test and checks the
//!   backward by central differences through this forward.

use kernels_core::{ConvGeometry, GradRequest};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx2;
mod blocking;
mod dm;
mod dx;
mod input;
mod output;
mod transforms;

pub(crate) use blocking::{Blocking, POSITIONS, plane_floats};

use crate::conv::workers::{HostGrads, Partial, add_row_sums, over_image_runs};
use crate::gemm::unpacked;
use crate::gemm::{View, mat, mat_mut};
use crate::simd::Simd;
use transforms::{
    ROW_BUFFERS, RowBuffers, transform_input, transform_input_gradient, transform_output, transform_output_gradient,
};

/// Fewest input channels and filters for this path: below them the 16
/// small GEMMs (k = C for forward, K for dX) run too far below sgemm's rate
/// to repay the transforms.
const MIN_CHANNELS: usize = 32;

/// Whether `g` (run by `threads` workers) takes the Winograd path.
pub(crate) fn applies(g: &ConvGeometry, threads: usize) -> bool {
    let p = &g.params;
    g.r == 3
        && g.s == 3
        && p.stride == [1, 1]
        && p.dilation == [1, 1]
        && g.c >= MIN_CHANNELS
        && g.k >= MIN_CHANNELS
        && g.oh >= 2
        && g.ow >= 2
        && g.n >= threads.max(1)
}

/// Scratch floats per worker: V and M blocks, row buffers, and in backward
/// a partial dU and a transposed V (U and Uᵀ are per call, like the
/// weights).
pub(crate) fn scratch_floats(g: &ConvGeometry, tile_floats: usize, backward: bool) -> usize {
    let b = Blocking::new(g, tile_floats);
    let blocks = POSITIONS * (plane_floats(g.c, b.block_tiles()) + plane_floats(g.k, b.block_tiles()))
        + ROW_BUFFERS * (b.tiles_w + 1)
        + dx::pending_floats(b.tiles_w);
    // Backward: the partial dU, and one position's Vᵀ for dW's GEMM.
    let grads = if backward { POSITIONS * g.k * g.c + b.block_tiles() * g.c } else { 0 };
    blocks + grads
}

/// U [16, K, C] = G g Gᵀ for every filter and channel.
fn transform_filters(g: &ConvGeometry, w: &[f32]) -> Vec<f32> {
    let kc = g.k * g.c;
    let mut u = vec![0.0f32; POSITIONS * kc];
    for (kc_index, f) in w.chunks_exact(9).enumerate() {
        // Columns first (f G ᵀ per row), then rows.
        let mut half = [[0.0f32; 4]; 3];
        for (row, out) in f.chunks_exact(3).zip(&mut half) {
            *out = filter_transform([row[0], row[1], row[2]]);
        }
        for nu in 0..4 {
            let col = filter_transform([half[0][nu], half[1][nu], half[2][nu]]);
            for (xi, v) in col.into_iter().enumerate() {
                u[(xi * 4 + nu) * kc + kc_index] = v;
            }
        }
    }
    u
}

/// G·g for one 3-vector: (g0, (g0+g1+g2)/2, (g0−g1+g2)/2, g2).
fn filter_transform(g: [f32; 3]) -> [f32; 4] {
    [g[0], 0.5 * (g[0] + g[1] + g[2]), 0.5 * (g[0] - g[1] + g[2]), g[2]]
}

/// Gᵀ·u, the adjoint of [`filter_transform`].
fn filter_adjoint(u: [f32; 4]) -> [f32; 3] {
    [u[0] + 0.5 * (u[1] + u[2]), 0.5 * (u[1] - u[2]), 0.5 * (u[1] + u[2]) + u[3]]
}

/// y [n, k, oh, ow] = x ⋆ w + b.
pub(crate) fn forward(
    simd: Simd,
    g: &ConvGeometry,
    tile_floats: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let b = Blocking::new(g, tile_floats);
    let u = transform_filters(g, w);
    let (image_in, image_out) = (g.c * g.h * g.w, g.k * g.oh * g.ow);
    let mut y = vec![0.0f32; g.n * image_out];
    let tiles = b.block_tiles();
    let (pc, pk) = (plane_floats(g.c, tiles), plane_floats(g.k, tiles));
    let scratch = || (vec![0.0f32; POSITIONS * pc], vec![0.0f32; POSITIONS * pk], RowBuffers::new(&b));
    y.par_chunks_mut(image_out).zip(x.par_chunks(image_in)).for_each_init(
        scratch,
        |(v, m, rows), (y_image, x_image)| {
            for block in b.blocks() {
                let t = block.len() * b.tiles_w;
                transform_input(simd, g, &b, x_image, block.clone(), v, rows);
                for xi in 0..POSITIONS {
                    let u_xi = mat(&u[xi * g.k * g.c..][..g.k * g.c], View::row_major(g.k, g.c));
                    let v_xi = mat(&v[xi * pc..][..g.c * tiles], View::strided(g.c, t, tiles));
                    let m_xi = mat_mut(&mut m[xi * pk..][..g.k * tiles], View::strided(g.k, t, tiles));
                    unpacked::gemm(simd, u_xi, v_xi, m_xi, false);
                }
                transform_output(simd, g, &b, m, block, bias, y_image, rows);
            }
        },
    );
    y
}

/// dx, dw, db (as requested) from dy [n, k, oh, ow].
pub(crate) fn backward(
    simd: Simd,
    g: &ConvGeometry,
    tile_floats: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    need: GradRequest,
) -> HostGrads {
    let b = Blocking::new(g, tile_floats);
    let u = transform_filters(g, w);
    // Uᵀ per position, [16, C, K]: the A operand of dX's GEMMs.
    let ut = if need.dx { transpose_positions(simd, &u, g.k, g.c) } else { Vec::new() };
    let (image_in, image_out, pixels) = (g.c * g.h * g.w, g.k * g.oh * g.ow, g.oh * g.ow);
    let tiles = b.block_tiles();
    let (pc, pk) = (plane_floats(g.c, tiles), plane_floats(g.k, tiles));
    let kc = g.k * g.c;
    // Strided views of one position's [rows, t] block in V or dM.
    let block_view = |rows: usize, t: usize| View::strided(rows, t, tiles);
    let du_len = if need.dw { POSITIONS * kc } else { 0 };
    // Each worker's partial "dw" is its dU [16, K, C].
    let (dx, du, db) = over_image_runs(g, need.dx, du_len, |images, mut dx_run| {
        let mut v = vec![0.0f32; POSITIONS * pc];
        let mut dm = vec![0.0f32; POSITIONS * pk];
        let mut rows = RowBuffers::new(&b);
        let mut du = vec![0.0f32; du_len];
        let mut vt = vec![0.0f32; if need.dw { tiles * g.c } else { 0 }];
        let mut db = vec![0.0f64; g.k];
        for (i, image) in images.enumerate() {
            let x_image = &x[image * image_in..][..image_in];
            let dy_image = &dy[image * image_out..][..image_out];
            if need.db {
                add_row_sums(&mut db, dy_image, pixels);
            }
            if !need.dx && !need.dw {
                continue;
            }
            for block in b.blocks() {
                let t = block.len() * b.tiles_w;
                transform_output_gradient(simd, g, &b, dy_image, block.clone(), &mut dm, &mut rows);
                if need.dw {
                    transform_input(simd, g, &b, x_image, block.clone(), &mut v, &mut rows);
                    for xi in 0..POSITIONS {
                        // V_ξᵀ [t, C] first, so the GEMM reads both operands
                        // by rows.
                        unpacked::transpose(simd, &v[xi * pc..][..g.c * tiles], g.c, t, tiles, &mut vt);
                        let dm_xi = mat(&dm[xi * pk..][..g.k * tiles], block_view(g.k, t));
                        let vt_xi = mat(&vt[..t * g.c], View::row_major(t, g.c));
                        let du_xi = mat_mut(&mut du[xi * kc..][..kc], View::row_major(g.k, g.c));
                        unpacked::gemm(simd, dm_xi, vt_xi, du_xi, true);
                    }
                }
                if let Some(dx_run) = dx_run.as_deref_mut() {
                    // dV overwrites V, which dW has finished with.
                    for xi in 0..POSITIONS {
                        let ut_xi = mat(&ut[xi * kc..][..kc], View::row_major(g.c, g.k));
                        let dm_xi = mat(&dm[xi * pk..][..g.k * tiles], block_view(g.k, t));
                        let dv_xi = mat_mut(&mut v[xi * pc..][..g.c * tiles], block_view(g.c, t));
                        unpacked::gemm(simd, ut_xi, dm_xi, dv_xi, false);
                    }
                    let dx_image = &mut dx_run[i * image_in..][..image_in];
                    transform_input_gradient(simd, g, &b, &v, block, dx_image, &mut rows);
                }
            }
        }
        Partial { dw: du, db }
    });
    let dw = need.dw.then(|| filter_gradient(g, &du));
    let db = need.db.then(|| db.iter().map(|&v| v as f32).collect());
    HostGrads { dx, dw, db }
}

/// Each position's [rows, cols] matrix of `m` [16, rows, cols], transposed.
fn transpose_positions(simd: Simd, m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; m.len()];
    for (from, to) in m.chunks_exact(rows * cols).zip(t.chunks_exact_mut(rows * cols)) {
        unpacked::transpose(simd, from, rows, cols, cols, to);
    }
    t
}

/// dw [k, c, 3, 3] = Gᵀ dU G from dU [16, K, C].
fn filter_gradient(g: &ConvGeometry, du: &[f32]) -> Vec<f32> {
    let kc = g.k * g.c;
    let mut dw = vec![0.0f32; kc * 9];
    for (kc_index, out) in dw.chunks_exact_mut(9).enumerate() {
        let at = |xi: usize, nu: usize| du[(xi * 4 + nu) * kc + kc_index];
        // Rows of dU (over ν) first, then columns (over ξ).
        let half: [[f32; 3]; 4] =
            std::array::from_fn(|xi| filter_adjoint([at(xi, 0), at(xi, 1), at(xi, 2), at(xi, 3)]));
        for col in 0..3 {
            let v = filter_adjoint([half[0][col], half[1][col], half[2][col], half[3][col]]);
            for row in 0..3 {
                out[row * 3 + col] = v[row];
            }
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{Isa, dispatch_counts};
    use kernels_core::{Conv2d, SplitMix64};

    /// Each ISA's forward and backward run that ISA's transforms and GEMMs
    /// (the dispatch counters grow at it) and agree with the portable
    /// level's; tests/against_naive.rs checks every level against the f64
    /// reference.
    #[test]
    fn each_isa_runs_its_own_kernels_and_agrees_with_the_portable_level() {
        // 5 x 6 tiles, 2 tile rows per block: 3 blocks per image, the last
        // one short, and a tile row wider than one 8-lane chunk.
        let g = ConvGeometry::from_dims([2, 32, 9, 11], [32, 3, 3], &Conv2d::new(1, 1)).unwrap();
        let tile_floats = POSITIONS * 32 * 12;
        let blocks = Blocking::new(&g, tile_floats).blocks().count();
        assert_eq!(blocks, 3);
        let mut rng = SplitMix64::new(54);
        let mut data = |len: usize| (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect::<Vec<f32>>();
        let (x, w, bias, dy) =
            (data(g.n * g.c * g.h * g.w), data(g.k * g.c * 9), data(g.k), data(g.n * g.k * g.oh * g.ow));
        let run = |isa: Isa| {
            let simd = Simd::new(isa);
            let y = forward(simd, &g, tile_floats, &x, &w, Some(&bias));
            (y, backward(simd, &g, tile_floats, &x, &w, &dy, GradRequest::ALL))
        };
        let (y_want, grads_want) = run(Isa::Portable);
        for isa in Isa::supported() {
            let before = dispatch_counts().unwrap()[isa as usize];
            let (y, grads) = run(isa);
            // Per image and block: forward 2 transforms + 16 GEMMs,
            // backward 3 transforms + 32 GEMMs, and at AVX2 and AVX-512 16
            // transposes of V (and 16 of U per call), so one transform left
            // at the portable level falls short. The counters only grow,
            // whatever runs beside this test.
            let after = dispatch_counts().unwrap()[isa as usize];
            let per_block = if isa == Isa::Portable { 18 + 35 } else { 18 + 35 + 16 };
            let calls = (g.n * blocks * per_block + if isa == Isa::Portable { 0 } else { 16 }) as u64;
            assert!(after >= before + calls, "{isa}: {before} -> {after}, expected {calls} more");
            let close = |got: &[f32], want: &[f32], what: &str| {
                assert_eq!(got.len(), want.len(), "{isa} {what}");
                for (i, (a, b)) in got.iter().zip(want).enumerate() {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{isa} {what}[{i}]: {a} vs {b}");
                }
            };
            close(&y, &y_want, "y");
            for (got, want, what) in [
                (&grads.dx, &grads_want.dx, "dx"),
                (&grads.dw, &grads_want.dw, "dw"),
                (&grads.db, &grads_want.db, "db"),
            ] {
                close(got.as_deref().unwrap(), want.as_deref().unwrap(), what);
            }
        }
    }
}
