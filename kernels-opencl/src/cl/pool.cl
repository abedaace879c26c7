// pool.cl: max and average pooling, forward and backward.
//
// What: y[n][c][oh][ow] = max or mean of the window x[n][c][oh·sh − ph + i]
//   [ow·sw − pw + j], 0 ≤ i < WH, 0 ≤ j < WW. Max never picks padding and
//   keeps the first maximum in row-major window order; avg divides by
//   WH·WW, padding included.
// Backward gathers: one work-item per dx element visits the windows that
//   cover it; max re-derives each window's winner from x and takes dy only
//   where it won, so overlapping windows accumulate without atomics.
// Launch: one work-item per output (forward) or input (backward) element,
//   flat index over N·C·OH·OW or N·C·H·W. is_max: 1 max, 0 avg.
// Check: cargo test -p kernels-opencl pool; time: the opencl_bench example.

// Flat index of the winner of window (oh, ow) in plane xp (H x W).
inline int window_argmax(__global const float* xp, const int H, const int W, const int oh, const int ow,
                         const int WH, const int WW, const int sh, const int sw, const int ph, const int pw) {
    int best = -1;
    float best_v = 0.0f;
    for (int i = 0; i < WH; ++i) {
        const int ih = oh * sh - ph + i;
        if (ih < 0 || ih >= H) continue;
        for (int j = 0; j < WW; ++j) {
            const int iw = ow * sw - pw + j;
            if (iw < 0 || iw >= W) continue;
            const float v = xp[ih * W + iw];
            if (best < 0 || v > best_v) {
                best = ih * W + iw;
                best_v = v;
            }
        }
    }
    return best;
}

__kernel void pool_forward(__global const float* restrict x, const int NC, const int H, const int W, const int OH,
                           const int OW, const int WH, const int WW, const int sh, const int sw, const int ph,
                           const int pw, const int is_max, __global float* restrict y) {
    const int idx = get_global_id(0);
    if (idx >= NC * OH * OW) return;
    const int plane = idx / (OH * OW), o = idx % (OH * OW);
    const int oh = o / OW, ow = o % OW;
    __global const float* xp = x + (size_t)plane * H * W;
    if (is_max) {
        y[idx] = xp[window_argmax(xp, H, W, oh, ow, WH, WW, sh, sw, ph, pw)];
    } else {
        float sum = 0.0f;
        for (int i = 0; i < WH; ++i) {
            const int ih = oh * sh - ph + i;
            if (ih < 0 || ih >= H) continue;
            for (int j = 0; j < WW; ++j) {
                const int iw = ow * sw - pw + j;
                if (iw >= 0 && iw < W) sum += xp[ih * W + iw];
            }
        }
        y[idx] = sum / (float)(WH * WW);
    }
}

__kernel void pool_backward(__global const float* restrict x, __global const float* restrict dy, const int NC,
                            const int H, const int W, const int OH, const int OW, const int WH, const int WW,
                            const int sh, const int sw, const int ph, const int pw, const int is_max,
                            __global float* restrict dx) {
    const int idx = get_global_id(0);
    if (idx >= NC * H * W) return;
    const int plane = idx / (H * W), hw = idx % (H * W);
    const int h = hw / W, w = hw % W;
    __global const float* xp = x + (size_t)plane * H * W;
    __global const float* dyp = dy + (size_t)plane * OH * OW;
    // Windows covering h: oh·sh − ph ≤ h < oh·sh − ph + WH.
    const int oh_lo = max(0, (h + ph - WH + sh) / sh), oh_hi = min(OH - 1, (h + ph) / sh);
    const int ow_lo = max(0, (w + pw - WW + sw) / sw), ow_hi = min(OW - 1, (w + pw) / sw);
    float sum = 0.0f;
    for (int oh = oh_lo; oh <= oh_hi; ++oh) {
        if (oh * sh - ph > h || oh * sh - ph + WH <= h) continue;
        for (int ow = ow_lo; ow <= ow_hi; ++ow) {
            if (ow * sw - pw > w || ow * sw - pw + WW <= w) continue;
            if (is_max) {
                if (window_argmax(xp, H, W, oh, ow, WH, WW, sh, sw, ph, pw) == hw) sum += dyp[oh * OW + ow];
            } else {
                sum += dyp[oh * OW + ow];
            }
        }
    }
    dx[idx] = is_max ? sum : sum / (float)(WH * WW);
}
