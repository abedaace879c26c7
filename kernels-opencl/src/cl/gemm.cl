// gemm.cl: C = A·B (NN, strided A) and C = A·Bᵀ (NT, dot form), batched.
//
// What: C[b] (+)= A[b]·B[b] (+ bias) for b in the batch, or, with `reduce`,
//   C = Σ_b A[b]·B[b]: the batch summed into one C (conv dW over images).
// Shapes: C is M x N with row stride ldc. NN: A(i, k) = A[i·sa_i + k·sa_k]
//   (so Aᵀ is free), B is K x N row-major (ldb). NT: A is M x K (lda),
//   B is N x K (ldb), both contiguous along k.
// Variants:
//   gemm_nn        register tile NN_MR x NN_NR per work-item, B read as
//                  VW-wide vectors straight from global memory; a CPU (PoCL)
//                  runs work-items as loop iterations, so the tile lives in
//                  SIMD registers. Bottom-edge tiles clamp rows; right-edge
//                  tiles shift left to stay whole (masked only if N < NN_NR).
//   gemm_nn_local  the same tile, with TILE_K-deep slices of A and B staged
//                  in local memory by the whole work-group (GPUs).
//   gemm_nt        NT_MR x NT_NR dot products per work-item, VW-wide along k;
//                  K % VW ends in one masked vector step.
// Bias: bias_mode 0 none, 1 one per row (conv filters), 2 one per column
//   (linear outputs). accumulate = 1 adds into C instead of overwriting.
// Build options: NN_MR, NN_NR, VW, NT_MR, NT_NR, TILE_K (see tiles.rs).
// Check: cargo test -p kernels-opencl gemm; time: cargo run --release -p
//   kernels-opencl --example opencl_bench -- gemm.

#if VW == 16
#define VEC float16
#define VLOAD vload16
#define VSTORE vstore16
#elif VW == 8
#define VEC float8
#define VLOAD vload8
#define VSTORE vstore8
#elif VW == 4
#define VEC float4
#define VLOAD vload4
#define VSTORE vstore4
#elif VW == 2
#define VEC float2
#define VLOAD vload2
#define VSTORE vstore2
#else
#define VEC float
#define VLOAD(o, p) (*((p) + (o)))
#define VSTORE(v, o, p) (*((p) + (o)) = (v))
#endif

#define NN_NV (NN_NR / VW)

inline float hsum(VEC v) {
#if VW == 16
    float8 a = v.lo + v.hi;
    float4 b = a.lo + a.hi;
    float2 c = b.lo + b.hi;
    return c.x + c.y;
#elif VW == 8
    float4 b = v.lo + v.hi;
    float2 c = b.lo + b.hi;
    return c.x + c.y;
#elif VW == 4
    float2 c = v.lo + v.hi;
    return c.x + c.y;
#elif VW == 2
    return v.x + v.y;
#else
    return v;
#endif
}

// Writes one NN_MR x NN_NR tile of accumulators at (i0, j0), adding the
// bias and, with `accumulate`, the old C. Columns before `store_from`
// belong to the left neighbour (shifted edge tile) and are skipped. A tile
// wholly inside C stores whole vectors; an edge tile goes lane by lane.
#define NN_STORE_TILE(acc)                                                              \
    for (int r = 0; r < NN_MR; ++r) {                                                   \
        const int i = i0 + r;                                                           \
        if (i >= M) break;                                                              \
        __global float* crow = Cb + (size_t)i * ldc;                                    \
        const float row_bias = bias_mode == 1 ? bias[i] : 0.0f;                         \
        if (store_from == j0 && j0 + NN_NR <= N) {                                      \
            for (int v = 0; v < NN_NV; ++v) {                                           \
                const int j = j0 + v * VW;                                              \
                VEC out = acc[r][v] + (VEC)(row_bias);                                  \
                if (bias_mode == 2) out += VLOAD(0, bias + j);                          \
                if (accumulate) out += VLOAD(0, crow + j);                              \
                VSTORE(out, 0, crow + j);                                               \
            }                                                                           \
            continue;                                                                   \
        }                                                                               \
        for (int v = 0; v < NN_NV; ++v) {                                               \
            float lane[VW];                                                             \
            VSTORE(acc[r][v], 0, lane);                                                 \
            for (int l = 0; l < VW; ++l) {                                              \
                const int j = j0 + v * VW + l;                                          \
                if (j >= store_from && j < N) {                                         \
                    float out = lane[l] + row_bias + (bias_mode == 2 ? bias[j] : 0.0f); \
                    crow[j] = accumulate ? crow[j] + out : out;                         \
                }                                                                       \
            }                                                                           \
        }                                                                               \
    }

__kernel void gemm_nn(const int M, const int N, const int K,
                      __global const float* restrict A, const int a_off, const int sa_i, const int sa_k,
                      const int a_bs,
                      __global const float* restrict B, const int b_off, const int ldb, const int b_bs,
                      __global float* restrict C, const int c_off, const int ldc, const int c_bs,
                      __global const float* restrict bias, const int bias_mode,
                      const int batches, const int reduce, const int accumulate) {
    const int i0 = get_global_id(1) * NN_MR;
    const int tile_j = get_global_id(0) * NN_NR;
    if (i0 >= M || tile_j >= N) return;
    // A right-edge tile is computed in full at N − NN_NR, overlapping its
    // left neighbour, and stores only its own columns (from tile_j): all its
    // loads stay vector loads. Only N < NN_NR needs the masked path.
    const int j0 = tile_j + NN_NR <= N || N < NN_NR ? tile_j : N - NN_NR;
    const int z = get_global_id(2);
    // Rows past M read row M-1 again (valid memory) and are never stored.
    size_t arow[NN_MR];
#pragma unroll
    for (int r = 0; r < NN_MR; ++r) arow[r] = (size_t)min(i0 + r, M - 1) * sa_i;
    VEC acc[NN_MR][NN_NV];
#pragma unroll
    for (int r = 0; r < NN_MR; ++r)
#pragma unroll
        for (int v = 0; v < NN_NV; ++v) acc[r][v] = (VEC)(0.0f);
    const int full_cols = j0 + NN_NR <= N;
    const int nb = reduce ? batches : 1;
    for (int bi = 0; bi < nb; ++bi) {
        const size_t b = reduce ? bi : z;
        __global const float* Ab = A + a_off + b * a_bs;
        __global const float* Bb = B + b_off + b * b_bs + j0;
        if (full_cols) {
            for (int k = 0; k < K; ++k) {
                __global const float* brow = Bb + (size_t)k * ldb;
                __global const float* acol = Ab + (size_t)k * sa_k;
                VEC bv[NN_NV];
#pragma unroll
                for (int v = 0; v < NN_NV; ++v) bv[v] = VLOAD(0, brow + v * VW);
#pragma unroll
                for (int r = 0; r < NN_MR; ++r) {
                    const VEC a = (VEC)(acol[arow[r]]);
#pragma unroll
                    for (int v = 0; v < NN_NV; ++v) acc[r][v] = fma(a, bv[v], acc[r][v]);
                }
            }
        } else {
            // Right edge: lanes past N load zero.
            for (int k = 0; k < K; ++k) {
                __global const float* brow = Bb + (size_t)k * ldb;
                __global const float* acol = Ab + (size_t)k * sa_k;
                VEC bv[NN_NV];
                for (int v = 0; v < NN_NV; ++v) {
                    float lane[VW];
                    for (int l = 0; l < VW; ++l) lane[l] = j0 + v * VW + l < N ? brow[v * VW + l] : 0.0f;
                    bv[v] = VLOAD(0, lane);
                }
                for (int r = 0; r < NN_MR; ++r) {
                    const VEC a = (VEC)(acol[arow[r]]);
                    for (int v = 0; v < NN_NV; ++v) acc[r][v] = fma(a, bv[v], acc[r][v]);
                }
            }
        }
    }
    __global float* Cb = C + c_off + (reduce ? 0 : (size_t)z * c_bs);
    const int store_from = tile_j;
    NN_STORE_TILE(acc)
}

// Local-memory variant: the work-group (LX x LY work-items) covers
// (LY·NN_MR) x (LX·NN_NR) of C; each TILE_K step stages A's and B's slices
// in local memory (zero-filled past the edges), then every work-item runs
// its register tile over them.
__kernel void gemm_nn_local(const int M, const int N, const int K,
                            __global const float* restrict A, const int a_off, const int sa_i, const int sa_k,
                            const int a_bs,
                            __global const float* restrict B, const int b_off, const int ldb, const int b_bs,
                            __global float* restrict C, const int c_off, const int ldc, const int c_bs,
                            __global const float* restrict bias, const int bias_mode,
                            const int batches, const int reduce, const int accumulate,
                            __local float* As, __local float* Bs) {
    const int lx = get_local_id(0), ly = get_local_id(1);
    const int LX = get_local_size(0), LY = get_local_size(1);
    const int tile_rows = LY * NN_MR, tile_cols = LX * NN_NR;
    const int gi0 = get_group_id(1) * tile_rows, gj0 = get_group_id(0) * tile_cols;
    const int i0 = gi0 + ly * NN_MR, j0 = gj0 + lx * NN_NR;
    const int z = get_global_id(2);
    const int lid = ly * LX + lx, lsize = LX * LY;
    VEC acc[NN_MR][NN_NV];
    for (int r = 0; r < NN_MR; ++r)
        for (int v = 0; v < NN_NV; ++v) acc[r][v] = (VEC)(0.0f);
    const int nb = reduce ? batches : 1;
    for (int bi = 0; bi < nb; ++bi) {
        const size_t b = reduce ? bi : z;
        __global const float* Ab = A + a_off + b * a_bs;
        __global const float* Bb = B + b_off + b * b_bs;
        for (int k0 = 0; k0 < K; k0 += TILE_K) {
            // As[k][i] = A(gi0 + i, k0 + k); Bs[k][j] = B(k0 + k, gj0 + j).
            for (int e = lid; e < TILE_K * tile_rows; e += lsize) {
                const int k = e / tile_rows, i = e % tile_rows;
                const int gi = gi0 + i, gk = k0 + k;
                As[e] = gi < M && gk < K ? Ab[(size_t)gi * sa_i + (size_t)gk * sa_k] : 0.0f;
            }
            for (int e = lid; e < TILE_K * tile_cols; e += lsize) {
                const int k = e / tile_cols, j = e % tile_cols;
                const int gj = gj0 + j, gk = k0 + k;
                Bs[e] = gj < N && gk < K ? Bb[(size_t)gk * ldb + gj] : 0.0f;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            for (int k = 0; k < TILE_K; ++k) {
                VEC bv[NN_NV];
                for (int v = 0; v < NN_NV; ++v) bv[v] = VLOAD(0, Bs + k * tile_cols + lx * NN_NR + v * VW);
                for (int r = 0; r < NN_MR; ++r) {
                    const VEC a = (VEC)(As[k * tile_rows + ly * NN_MR + r]);
                    for (int v = 0; v < NN_NV; ++v) acc[r][v] = fma(a, bv[v], acc[r][v]);
                }
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }
    if (i0 >= M || j0 >= N) return;
    __global float* Cb = C + c_off + (reduce ? 0 : (size_t)z * c_bs);
    const int store_from = j0;
    NN_STORE_TILE(acc)
}

// NT: C[i][j] (+)= Σ_b Σ_k A[b][i·lda + k] · B[b][j·ldb + k]. Rows and
// columns past the edge are clamped on load and skipped on store.
__kernel void gemm_nt(const int M, const int N, const int K,
                      __global const float* restrict A, const int a_off, const int lda, const int a_bs,
                      __global const float* restrict B, const int b_off, const int ldb, const int b_bs,
                      __global float* restrict C, const int c_off, const int ldc, const int c_bs,
                      __global const float* restrict bias, const int bias_mode,
                      const int batches, const int reduce, const int accumulate) {
    const int j0 = get_global_id(0) * NT_NR;
    const int i0 = get_global_id(1) * NT_MR;
    if (i0 >= M || j0 >= N) return;
    const int z = get_global_id(2);
    size_t arow[NT_MR], brow[NT_NR];
#pragma unroll
    for (int r = 0; r < NT_MR; ++r) arow[r] = (size_t)min(i0 + r, M - 1) * lda;
#pragma unroll
    for (int c = 0; c < NT_NR; ++c) brow[c] = (size_t)min(j0 + c, N - 1) * ldb;
    VEC acc[NT_MR][NT_NR];
    float tail[NT_MR][NT_NR];
#pragma unroll
    for (int r = 0; r < NT_MR; ++r)
#pragma unroll
        for (int c = 0; c < NT_NR; ++c) {
            acc[r][c] = (VEC)(0.0f);
            tail[r][c] = 0.0f;
        }
    const int kv = K - K % VW;
    float mask_lanes[VW];
    for (int l = 0; l < VW; ++l) mask_lanes[l] = l >= VW - K % VW ? 1.0f : 0.0f;
    const VEC tail_mask = VLOAD(0, mask_lanes);
    const int nb = reduce ? batches : 1;
    for (int bi = 0; bi < nb; ++bi) {
        const size_t b = reduce ? bi : z;
        __global const float* Ab = A + a_off + b * a_bs;
        __global const float* Bb = B + b_off + b * b_bs;
        for (int k = 0; k < kv; k += VW) {
            VEC av[NT_MR], bv[NT_NR];
#pragma unroll
            for (int r = 0; r < NT_MR; ++r) av[r] = VLOAD(0, Ab + arow[r] + k);
#pragma unroll
            for (int c = 0; c < NT_NR; ++c) bv[c] = VLOAD(0, Bb + brow[c] + k);
#pragma unroll
            for (int r = 0; r < NT_MR; ++r)
#pragma unroll
                for (int c = 0; c < NT_NR; ++c) acc[r][c] = fma(av[r], bv[c], acc[r][c]);
        }
        if (kv < K && K >= VW) {
            // The last K % VW terms: one vector step at K − VW, its lanes
            // that overlap the main loop zeroed by the mask.
            VEC av[NT_MR], bv[NT_NR];
#pragma unroll
            for (int r = 0; r < NT_MR; ++r) av[r] = VLOAD(0, Ab + arow[r] + K - VW) * tail_mask;
#pragma unroll
            for (int c = 0; c < NT_NR; ++c) bv[c] = VLOAD(0, Bb + brow[c] + K - VW);
#pragma unroll
            for (int r = 0; r < NT_MR; ++r)
#pragma unroll
                for (int c = 0; c < NT_NR; ++c) acc[r][c] = fma(av[r], bv[c], acc[r][c]);
        } else {
            for (int k = kv; k < K; ++k)
#pragma unroll
                for (int r = 0; r < NT_MR; ++r)
#pragma unroll
                    for (int c = 0; c < NT_NR; ++c) tail[r][c] = fma(Ab[arow[r] + k], Bb[brow[c] + k], tail[r][c]);
        }
    }
    __global float* Cb = C + c_off + (reduce ? 0 : (size_t)z * c_bs);
    // Fully unrolled with constant indices (no break), so the accumulators
    // stay in registers rather than in an addressable stack array.
#pragma unroll
    for (int r = 0; r < NT_MR; ++r) {
#pragma unroll
        for (int c = 0; c < NT_NR; ++c) {
            const int i = i0 + r, j = j0 + c;
            if (i < M && j < N) {
                float out = hsum(acc[r][c]) + tail[r][c];
                out += bias_mode == 1 ? bias[i] : (bias_mode == 2 ? bias[j] : 0.0f);
                __global float* dst = Cb + (size_t)i * ldc + j;
                *dst = accumulate ? *dst + out : out;
            }
        }
    }
}
