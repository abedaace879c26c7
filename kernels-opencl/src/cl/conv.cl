// conv.cl: im2col and col2im, the layout moves around the GEMMs of conv2d.
//
// What: im2col unfolds images [nb, C, H, W] of x (from element x_off) into
//   col [nb, C·R·S, OH·OW]: col[b][(c·R + r)·S + s][oh·OW + ow] =
//   x[b][c][oh·sh − ph + r·dh][ow·sw − pw + s·dw], zero in the padding.
//   col2im is its adjoint: dx[b][c][h][w] = Σ of the col entries that read
//   x[b][c][h][w]; each work-item owns one dx row, so no atomics.
// Variants: im2col (GPUs) over (OH, C·R·S, nb), one output row of col per
//   work-item; im2col_plane (CPUs) over (C·R·S, nb), one plane of col per
//   work-item, 2x faster on PoCL (fewer, longer work-items). col2im over
//   (H, C, nb), one dx row per work-item. Index divisions happen once per
//   row or plane: per element they cost more than the copy (PoCL runs a
//   work-item as a loop iteration, and vector integer division is slow).
// Check: cargo test -p kernels-opencl conv; time: the opencl_bench example.

__kernel void im2col(__global const float* restrict x, const int x_off, const int C, const int H, const int W,
                     const int R, const int S, const int OH, const int OW, const int sh, const int sw,
                     const int ph, const int pw, const int dh, const int dw, __global float* restrict col) {
    const int oh = get_global_id(0);
    const int crs = get_global_id(1);
    const int b = get_global_id(2);
    if (oh >= OH || crs >= C * R * S) return;
    const int c = crs / (R * S), rs = crs % (R * S);
    const int r = rs / S, s = rs % S;
    const int ih = oh * sh - ph + r * dh;
    __global float* out = col + ((size_t)b * C * R * S + crs) * OH * OW + (size_t)oh * OW;
    if (ih < 0 || ih >= H) {
        for (int ow = 0; ow < OW; ++ow) out[ow] = 0.0f;
        return;
    }
    __global const float* in = x + x_off + (((size_t)b * C + c) * H + ih) * W;
    // iw = ow·sw + off lies in [0, W) for ow in [lo, hi).
    const int off = s * dw - pw;
    const int lo = off >= 0 ? 0 : min(OW, (-off + sw - 1) / sw);
    const int hi = W - off <= 0 ? 0 : min(OW, (W - off + sw - 1) / sw);
    for (int ow = 0; ow < lo; ++ow) out[ow] = 0.0f;
    for (int ow = lo; ow < hi; ++ow) out[ow] = in[ow * sw + off];
    for (int ow = max(lo, hi); ow < OW; ++ow) out[ow] = 0.0f;
}

__kernel void col2im(__global const float* restrict col, const int C, const int H, const int W, const int R,
                     const int S, const int OH, const int OW, const int sh, const int sw, const int ph,
                     const int pw, const int dh, const int dw, __global float* restrict dx, const int dx_off) {
    const int h = get_global_id(0);
    const int c = get_global_id(1);
    const int b = get_global_id(2);
    if (h >= H || c >= C) return;
    const int P = OH * OW;
    __global const float* cb = col + ((size_t)b * C + c) * R * S * P;
    __global float* out = dx + dx_off + (((size_t)b * C + c) * H + h) * W;
    for (int w = 0; w < W; ++w) out[w] = 0.0f;
    for (int r = 0; r < R; ++r) {
        const int th = h + ph - r * dh;  // = oh·sh when filter row r reads row h
        if (th < 0 || th % sh != 0) continue;
        const int oh = th / sh;
        if (oh >= OH) continue;
        for (int s = 0; s < S; ++s) {
            __global const float* in = cb + (size_t)(r * S + s) * P + oh * OW;
            const int off = s * dw - pw;  // w = ow·sw + off
            const int lo = off >= 0 ? 0 : min(OW, (-off + sw - 1) / sw);
            const int hi = W - off <= 0 ? 0 : min(OW, (W - off + sw - 1) / sw);
            for (int ow = lo; ow < hi; ++ow) out[ow * sw + off] += in[ow];
        }
    }
}

// CPU variant of im2col: one work-item per (c·R·S index, image) plane of
// col, looping over its rows; index arithmetic once per plane.
__kernel void im2col_plane(__global const float* restrict x, const int x_off, const int C, const int H, const int W,
                           const int R, const int S, const int OH, const int OW, const int sh, const int sw,
                           const int ph, const int pw, const int dh, const int dw, __global float* restrict col,
                           const int nb) {
    const int crs = get_global_id(0);
    const int b = get_global_id(1);
    if (crs >= C * R * S || b >= nb) return;
    const int c = crs / (R * S), rs = crs % (R * S);
    const int r = rs / S, s = rs % S;
    const int off = s * dw - pw;
    const int lo = off >= 0 ? 0 : min(OW, (-off + sw - 1) / sw);
    const int hi = W - off <= 0 ? 0 : min(OW, (W - off + sw - 1) / sw);
    __global const float* xp = x + x_off + ((size_t)b * C + c) * H * W;
    __global float* out = col + ((size_t)b * C * R * S + crs) * OH * OW;
    for (int oh = 0; oh < OH; ++oh, out += OW) {
        const int ih = oh * sh - ph + r * dh;
        if (ih < 0 || ih >= H) {
            for (int ow = 0; ow < OW; ++ow) out[ow] = 0.0f;
            continue;
        }
        __global const float* in = xp + ih * W;
        for (int ow = 0; ow < lo; ++ow) out[ow] = 0.0f;
        for (int ow = lo; ow < hi; ++ow) out[ow] = in[ow * sw + off];
        for (int ow = max(lo, hi); ow < OW; ++ow) out[ow] = 0.0f;
    }
}

