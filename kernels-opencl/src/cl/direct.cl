// direct.cl: stride-1 convolution without a col matrix, for small reductions.
//
// What: pad_planes copies planes [planes, H, W] into zero-padded planes
//   [planes, Hp, Wp] (ph rows and pw columns of zeros before, the rest
//   after). conv_direct then computes, for a padded input xp [nb, C, Hp, Wp],
//   y[b][k][oh][ow] = bias[k] + Σ_{c,r,s} xp[b][c][oh + r·dh][ow + s·dw] ·
//   wt[w_off + k·wk + c·wc + r·wr + s·ws]
//   with OH = Hp − (R−1)·dh. The weight strides make one kernel serve the
//   forward pass (wk = C·R·S, wc = R·S, wr = S, ws = 1) and dX (the filters
//   transposed and flipped: negative wr, ws).
// Mapping: the output pixel (oh, ow) sits at the padded-width position
//   q = oh·Wp + ow, so the input of tap (r, s) is at q + r·dh·Wp + s·dw,
//   contiguous in q: a work-item over (q chunk, filter block, image) owns
//   NV·DW consecutive q as NV floatDW vectors for KB filters, and per tap
//   does NV unaligned vector loads, KB weight broadcasts and KB·NV FMAs (no
//   index arithmetic in the loop). Lanes with ow >= OW are computed and dropped.
//   Loads run past the image by at most (S−1)·dw + NV·DW floats: the caller
//   allocates that slack after the last image.
// conv_dw: dw[k][c][r][s] = Σ_b Σ_q dyp[b][k][q] · xp[b][c][q + r·dh·Wp + s·dw]
//   over the padded-width positions q < OH·Wp, where dyp is dy padded on
//   the right to width Wp with zeros (so lanes at ow ≥ OW add nothing). One
//   work-item per (DW_KF filters, c·R + r) keeps DW_KF x S (S ≤ DW_MAX_S)
//   vector accumulators and streams the whole batch: per DW positions,
//   DW_KF dy vector loads, S input vector loads, DW_KF·S FMAs; no col
//   matrix and no batch-summing GEMM.
// Build options: DW (vector width: 2, 4, 8 or 16), KB (filters per conv_direct
//   work-item), DW_MAX_S and DW_KF (filter columns and filters per conv_dw work-item).
// Check: cargo test -p kernels-opencl conv; time: opencl_bench conv --only lenet.

#define CAT(a, b) a##b
#define XCAT(a, b) CAT(a, b)
#define floatD XCAT(float, DW)
#define vloadD XCAT(vload, DW)
#define vstoreD XCAT(vstore, DW)
#define intD XCAT(int, DW)

// This file is built twice: once as is (conv_direct with KB filters per
// work-item, plus pad_planes and conv_dw), once with DIRECT_ALT defined
// (only conv_direct_alt, with KB_ALT filters), so filter counts that KB
// does not divide (LeNet's 6) waste fewer lanes.
#ifdef DIRECT_ALT
#undef KB
#define KB KB_ALT
#define CONV_DIRECT_NAME conv_direct_alt
#else
#define CONV_DIRECT_NAME conv_direct

__kernel void pad_planes(__global const float* restrict x, const int H, const int W, const int ph, const int pw,
                         const int Hp, const int Wp, const int planes, __global float* restrict xp, const int out_off,
                         const int slack) {
    const int hp = get_global_id(0);
    const int plane = get_global_id(1);
    if (hp >= Hp || plane >= planes) return;
    xp += out_off;
    if (hp == 0 && plane == 0) {
        // Zero the slack after the last plane: conv_dw multiplies what its
        // last vectors read there by zeros, and 0 · NaN would not be 0.
        for (int i = 0; i < slack; ++i) xp[(size_t)planes * Hp * Wp + i] = 0.0f;
    }
    __global float* out = xp + ((size_t)plane * Hp + hp) * Wp;
    const int h = hp - ph;
    if (h < 0 || h >= H) {
        for (int i = 0; i < Wp; ++i) out[i] = 0.0f;
        return;
    }
    __global const float* in = x + ((size_t)plane * H + h) * W;
    for (int i = 0; i < pw; ++i) out[i] = 0.0f;
    for (int i = 0; i < W; ++i) out[pw + i] = in[i];
    for (int i = pw + W; i < Wp; ++i) out[i] = 0.0f;
}

#endif

__kernel void CONV_DIRECT_NAME(__global const float* restrict xp, const int C, const int Hp, const int Wp, const int R,
                          const int S, const int dh, const int dw, __global const float* restrict wt, const int w_off,
                          const int wk, const int wc, const int wr, const int ws, __global const float* restrict bias,
                          const int has_bias, __global float* restrict y, const int K, const int OH, const int OW) {
    const int q00 = get_global_id(0) * (DW * NV);
    const int k0 = get_global_id(1) * KB;
    const int b = get_global_id(2);
    const int Q = OH * Wp;
    if (q00 >= Q || k0 >= K) return;
    // Filters past K read filter K−1 (a valid address) and are not stored.
    int wrow[KB];
    floatD acc[KB][NV];
    for (int j = 0; j < KB; ++j) {
        const int k = min(k0 + j, K - 1);
        wrow[j] = w_off + k * wk;
        for (int v = 0; v < NV; ++v) acc[j][v] = (floatD)(has_bias ? bias[k] : 0.0f);
    }
    __global const float* xb = xp + (size_t)b * C * Hp * Wp + q00;
    for (int c = 0; c < C; ++c) {
        for (int r = 0; r < R; ++r) {
            __global const float* xr = xb + ((size_t)c * Hp + r * dh) * Wp;
            const int wcr = c * wc + r * wr;
            for (int s = 0; s < S; ++s) {
                floatD xv[NV];
#pragma unroll
                for (int v = 0; v < NV; ++v) xv[v] = vloadD(v, xr + s * dw);
                const int tap = wcr + s * ws;
#pragma unroll
                for (int j = 0; j < KB; ++j) {
                    const floatD wv = (floatD)(wt[wrow[j] + tap]);
#pragma unroll
                    for (int v = 0; v < NV; ++v) acc[j][v] = fma(xv[v], wv, acc[j][v]);
                }
            }
        }
    }
    // Write back the lanes that are real pixels: q → (oh, ow), ow < OW.
    // A vector inside one row (always, when DW divides Wp) stores its first
    // min(DW, OW − ow) lanes, with one vector store when all are valid; a
    // vector across rows goes lane by lane.
    float lanes[DW];
    for (int v = 0; v < NV; ++v) {
        const int q0 = q00 + v * DW;
        if (q0 >= Q) break;
        const int oh = q0 / Wp, ow = q0 - oh * Wp;
        const bool one_row = ow + DW <= Wp;
        const int valid = min(DW, OW - ow);
        for (int j = 0; j < KB && k0 + j < K; ++j) {
            __global float* yk = y + ((size_t)b * K + k0 + j) * OH * OW;
            if (one_row && valid == DW) {
                vstoreD(acc[j][v], 0, yk + oh * OW + ow);
                continue;
            }
            vstoreD(acc[j][v], 0, lanes);
            if (one_row) {
                for (int l = 0; l < valid; ++l) yk[oh * OW + ow + l] = lanes[l];
                continue;
            }
            int h = oh, w = ow;
            for (int l = 0; l < DW && h < OH; ++l) {
                if (w < OW) yk[h * OW + w] = lanes[l];
                if (++w == Wp) {
                    w = 0;
                    ++h;
                }
            }
        }
    }
}

#ifndef DIRECT_ALT
__kernel void conv_dw(__global const float* restrict buf, const int x_off, const int dy_off, const int N,
                      const int C, const int Hp, const int Wp, const int R, const int S, const int dh, const int dw,
                      const int K, const int OH, __global float* restrict dwt) {
    const int k0 = get_global_id(0) * DW_KF;
    const int cr = get_global_id(1);
    if (k0 >= K || cr >= C * R) return;
    const int c = cr / R, r = cr - c * R;
    const int Q = OH * Wp;
    const int full = Q / DW * DW;
    // Filters past K re-read filter K−1 (a valid address) and are not stored.
    int krow[DW_KF];
    for (int j = 0; j < DW_KF; ++j) krow[j] = min(k0 + j, K - 1);
    floatD acc[DW_KF][DW_MAX_S];
#pragma unroll
    for (int j = 0; j < DW_KF; ++j)
#pragma unroll
        for (int s = 0; s < DW_MAX_S; ++s) acc[j][s] = (floatD)(0.0f);
    // Lanes of the last, partial vector that lie past Q (they would read
    // the next plane of dy).
    intD lane;
    for (int l = 0; l < DW; ++l) ((int*)&lane)[l] = l;
    const intD tail_mask = lane < (intD)(Q - full);
    for (int b = 0; b < N; ++b) {
        __global const float* dyb = buf + dy_off + (size_t)b * K * Q;
        __global const float* xr = buf + x_off + (((size_t)b * C + c) * Hp + r * dh) * Wp;
        for (int q = 0; q < Q; q += DW) {
            floatD g[DW_KF];
#pragma unroll
            for (int j = 0; j < DW_KF; ++j) {
                g[j] = vloadD(0, dyb + (size_t)krow[j] * Q + q);
                if (q == full) g[j] = select((floatD)(0.0f), g[j], tail_mask);
            }
#pragma unroll
            for (int s = 0; s < DW_MAX_S; ++s) {
                if (s < S) {
                    const floatD xv = vloadD(0, xr + q + s * dw);
#pragma unroll
                    for (int j = 0; j < DW_KF; ++j) acc[j][s] = fma(g[j], xv, acc[j][s]);
                }
            }
        }
    }
    float lanes[DW];
    for (int j = 0; j < DW_KF && k0 + j < K; ++j) {
        for (int s = 0; s < S; ++s) {
            vstoreD(acc[j][s], 0, lanes);
            float sum = 0.0f;
            for (int l = 0; l < DW; ++l) sum += lanes[l];
            dwt[((size_t)(k0 + j) * C + c) * R * S + r * S + s] = sum;
        }
    }
}
#endif
