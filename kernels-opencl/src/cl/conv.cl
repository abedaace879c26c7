// conv.cl: im2col and col2im, the layout moves around the GEMMs of conv2d.
//
// What: im2col unfolds images [nb, C, H, W] of x (from element x_off) into
//   col [nb, C·R·S, OH·OW]: col[b][(c·R + r)·S + s][oh·OW + ow] =
//   x[b][c][oh·sh − ph + r·dh][ow·sw − pw + s·dw], zero in the padding.
//   col2im is its adjoint: dx[b][c][h][w] = Σ of the col entries that read
//   x[b][c][h][w], gathered (one work-item per dx element, no atomics).
// Launch: im2col over (OH·OW, C·R·S, nb); col2im over (H·W, C, nb).
// Check: cargo test -p kernels-opencl conv; time: the bench example.

__kernel void im2col(__global const float* restrict x, const int x_off, const int C, const int H, const int W,
                     const int R, const int S, const int OH, const int OW, const int sh, const int sw,
                     const int ph, const int pw, const int dh, const int dw, __global float* restrict col) {
    const int p = get_global_id(0);
    const int crs = get_global_id(1);
    const int b = get_global_id(2);
    const int P = OH * OW;
    if (p >= P || crs >= C * R * S) return;
    const int c = crs / (R * S), rs = crs % (R * S);
    const int r = rs / S, s = rs % S;
    const int oh = p / OW, ow = p % OW;
    const int ih = oh * sh - ph + r * dh, iw = ow * sw - pw + s * dw;
    float v = 0.0f;
    if (ih >= 0 && ih < H && iw >= 0 && iw < W) v = x[x_off + (((size_t)b * C + c) * H + ih) * W + iw];
    col[((size_t)b * C * R * S + crs) * P + p] = v;
}

__kernel void col2im(__global const float* restrict col, const int C, const int H, const int W, const int R,
                     const int S, const int OH, const int OW, const int sh, const int sw, const int ph,
                     const int pw, const int dh, const int dw, __global float* restrict dx, const int dx_off) {
    const int hw = get_global_id(0);
    const int c = get_global_id(1);
    const int b = get_global_id(2);
    if (hw >= H * W || c >= C) return;
    const int h = hw / W, w = hw % W;
    const int P = OH * OW;
    __global const float* cb = col + ((size_t)b * C + c) * R * S * P;
    float sum = 0.0f;
    for (int r = 0; r < R; ++r) {
        const int th = h + ph - r * dh;  // = oh·sh when this r reads row h
        if (th < 0 || th % sh != 0) continue;
        const int oh = th / sh;
        if (oh >= OH) continue;
        for (int s = 0; s < S; ++s) {
            const int tw = w + pw - s * dw;
            if (tw < 0 || tw % sw != 0) continue;
            const int ow = tw / sw;
            if (ow >= OW) continue;
            sum += cb[(size_t)(r * S + s) * P + oh * OW + ow];
        }
    }
    dx[dx_off + (((size_t)b * C + c) * H + h) * W + w] = sum;
}
