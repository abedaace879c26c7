// pool.cl: max and average pooling, forward and backward.
//
// What: y[n][c][oh][ow] = max or mean of the window x[n][c][oh·sh − ph + i]
//   [ow·sw − pw + j], 0 ≤ i < WH, 0 ≤ j < WW. Max never picks padding and
//   keeps the first maximum in row-major window order, but a NaN anywhere
//   wins (the last NaN: PyTorch's rule, kernels_core::max_pool_takes);
//   avg divides by WH·WW, padding included.
// Variants: pool_backward_tiled (GPUs) and pool_backward_band (CPUs) when
//   stride = window and no padding; 2x2/2 windows take unrolled paths in
//   pool_forward and pool_backward_band.
// Launch: forward over (OH, N·C), one output row per work-item; backward
//   over (H, N·C), one dx row per work-item. The backward work-item visits
//   every window that covers its row and adds that window's dy where it
//   lands in the row (max: at the winner, re-derived from x; avg: spread
//   over the window), so overlapping windows accumulate without atomics.
//   Index divisions happen once per row, not per element (see conv.cl).
// Check: cargo test -p kernels-opencl pool; time: the opencl_bench example.

// The winner of window (oh, ow) in plane xp (H x W): its row and column.
// The window is clipped to the plane first (padding never wins, and the
// loop needs no bounds tests); a strict > keeps the first maximum.

// Whether v, met after the current winner bv in row-major order, replaces
// it: strictly larger, or NaN (kernels_core::max_pool_takes).
inline int max_takes(const float v, const float bv) { return v > bv || isnan(v); }

// Max of a 2x2 window a b / c d under the same rule, in row-major order.
inline float max4(const float a, const float b, const float c, const float d) {
    float m = max_takes(b, a) ? b : a;
    m = max_takes(c, m) ? c : m;
    return max_takes(d, m) ? d : m;
}
inline void window_argmax(__global const float* xp, const int H, const int W, const int oh, const int ow,
                          const int WH, const int WW, const int sh, const int sw, const int ph, const int pw,
                          int* best_h, int* best_w, float* best_v) {
    const int h0 = oh * sh - ph, w0 = ow * sw - pw;
    const int ilo = max(0, h0), ihi = min(H, h0 + WH), jlo = max(0, w0), jhi = min(W, w0 + WW);
    float bv = xp[ilo * W + jlo];
    int bh = ilo, bw = jlo;
    for (int ih = ilo; ih < ihi; ++ih) {
        for (int iw = jlo; iw < jhi; ++iw) {
            const float v = xp[ih * W + iw];
            const int better = max_takes(v, bv);
            bv = better ? v : bv;
            bh = better ? ih : bh;
            bw = better ? iw : bw;
        }
    }
    *best_h = bh;
    *best_w = bw;
    *best_v = bv;
}

__kernel void pool_forward(__global const float* restrict x, const int NC, const int H, const int W, const int OH,
                           const int OW, const int WH, const int WW, const int sh, const int sw, const int ph,
                           const int pw, const int is_max, __global float* restrict y) {
    const int oh = get_global_id(0);
    const int plane = get_global_id(1);
    if (oh >= OH || plane >= NC) return;
    __global const float* xp = x + (size_t)plane * H * W;
    __global float* yrow = y + ((size_t)plane * OH + oh) * OW;
    const float inv_area = 1.0f / (float)(WH * WW);
    if (WH == 2 && WW == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0) {
        // LeNet's 2x2/2 windows, unrolled: no clipping, no loops.
        __global const float* x0 = xp + 2 * oh * W;
        __global const float* x1 = x0 + W;
        for (int ow = 0; ow < OW; ++ow) {
            const float a = x0[2 * ow], b = x0[2 * ow + 1], c = x1[2 * ow], d = x1[2 * ow + 1];
            yrow[ow] = is_max ? max4(a, b, c, d) : ((a + b) + (c + d)) * inv_area;
        }
        return;
    }
    for (int ow = 0; ow < OW; ++ow) {
        if (is_max) {
            int bh, bw;
            float bv;
            window_argmax(xp, H, W, oh, ow, WH, WW, sh, sw, ph, pw, &bh, &bw, &bv);
            yrow[ow] = bv;
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
            yrow[ow] = sum * inv_area;
        }
    }
}

__kernel void pool_backward(__global const float* restrict x, __global const float* restrict dy, const int NC,
                            const int H, const int W, const int OH, const int OW, const int WH, const int WW,
                            const int sh, const int sw, const int ph, const int pw, const int is_max,
                            __global float* restrict dx) {
    const int h = get_global_id(0);
    const int plane = get_global_id(1);
    if (h >= H || plane >= NC) return;
    __global const float* xp = x + (size_t)plane * H * W;
    __global const float* dyp = dy + (size_t)plane * OH * OW;
    __global float* out = dx + ((size_t)plane * H + h) * W;
    for (int w = 0; w < W; ++w) out[w] = 0.0f;
    const float inv_area = 1.0f / (float)(WH * WW);
    // Windows covering row h: oh·sh − ph ≤ h < oh·sh − ph + WH.
    const int oh_lo = max(0, (h + ph - WH + sh) / sh), oh_hi = min(OH - 1, (h + ph) / sh);
    for (int oh = oh_lo; oh <= oh_hi; ++oh) {
        if (oh * sh - ph > h || oh * sh - ph + WH <= h) continue;
        for (int ow = 0; ow < OW; ++ow) {
            const float g = dyp[oh * OW + ow];
            if (is_max) {
                int bh, bw;
                float bv;
                window_argmax(xp, H, W, oh, ow, WH, WW, sh, sw, ph, pw, &bh, &bw, &bv);
                if (bh == h) out[bw] += g;
            } else {
                const int lo = max(0, ow * sw - pw), hi = min(W, ow * sw - pw + WW);
                for (int w = lo; w < hi; ++w) out[w] += g * inv_area;
            }
        }
    }
}

// Fast path for windows that tile the input (stride = window, no padding,
// LeNet's 2x2/2): every dx element lies in at most one window, so a row is
// written once, left to right, with no accumulation; columns and rows past
// the last window get zero.
__kernel void pool_backward_tiled(__global const float* restrict x, __global const float* restrict dy,
                                  const int NC, const int H, const int W, const int OH, const int OW, const int WH,
                                  const int WW, const int is_max, __global float* restrict dx) {
    const int h = get_global_id(0);
    const int plane = get_global_id(1);
    if (h >= H || plane >= NC) return;
    __global const float* xp = x + (size_t)plane * H * W;
    __global float* out = dx + ((size_t)plane * H + h) * W;
    const int oh = h / WH;
    if (oh >= OH) {
        for (int w = 0; w < W; ++w) out[w] = 0.0f;
        return;
    }
    __global const float* dyrow = dy + ((size_t)plane * OH + oh) * OW;
    const float inv_area = 1.0f / (float)(WH * WW);
    for (int ow = 0; ow < OW; ++ow) {
        const float g = dyrow[ow];
        const int w0 = ow * WW;
        if (is_max) {
            int bh, bw;
            float bv;
            window_argmax(xp, H, W, oh, ow, WH, WW, WH, WW, 0, 0, &bh, &bw, &bv);
            for (int j = 0; j < WW; ++j) out[w0 + j] = bh == h && bw == w0 + j ? g : 0.0f;
        } else {
            for (int j = 0; j < WW; ++j) out[w0 + j] = g * inv_area;
        }
    }
    for (int w = OW * WW; w < W; ++w) out[w] = 0.0f;
}

// The same fast path with one work-item per band of WH dx rows (one window
// row): each window's winner is found once, not once per dx row, and 2x2
// windows (LeNet's) take an unrolled branch-free path. The last band also
// zeroes the rows past the last window.
__kernel void pool_backward_band(__global const float* restrict x, __global const float* restrict dy,
                                 const int NC, const int H, const int W, const int OH, const int OW, const int WH,
                                 const int WW, const int is_max, __global float* restrict dx) {
    const int oh = get_global_id(0);
    const int plane = get_global_id(1);
    if (oh >= OH || plane >= NC) return;
    const int h0 = oh * WH;
    __global const float* xb = x + ((size_t)plane * H + h0) * W;
    __global float* out = dx + ((size_t)plane * H + h0) * W;
    __global const float* dyrow = dy + ((size_t)plane * OH + oh) * OW;
    const float inv_area = 1.0f / (float)(WH * WW);
    if (WH == 2 && WW == 2) {
        __global const float* x1 = xb + W;
        __global float* o1 = out + W;
        for (int ow = 0; ow < OW; ++ow) {
            const int w0 = 2 * ow;
            const float g = dyrow[ow];
            if (is_max) {
                const float a = xb[w0], b = xb[w0 + 1], c = x1[w0], d = x1[w0 + 1];
                // The winner in row-major order a, b, c, d (max_takes).
                const int b_wins = max_takes(b, a);
                const float m_ab = b_wins ? b : a;
                const int c_wins = max_takes(c, m_ab);
                const float m_abc = c_wins ? c : m_ab;
                const int d_wins = max_takes(d, m_abc);
                const int pick_d = d_wins, pick_c = c_wins && !d_wins, pick_b = b_wins && !c_wins && !d_wins;
                const int pick_a = !(b_wins || c_wins || d_wins);
                out[w0] = pick_a ? g : 0.0f;
                out[w0 + 1] = pick_b ? g : 0.0f;
                o1[w0] = pick_c ? g : 0.0f;
                o1[w0 + 1] = pick_d ? g : 0.0f;
            } else {
                const float v = g * inv_area;
                out[w0] = v;
                out[w0 + 1] = v;
                o1[w0] = v;
                o1[w0 + 1] = v;
            }
        }
    } else {
        for (int ow = 0; ow < OW; ++ow) {
            const float g = dyrow[ow];
            const int w0 = ow * WW;
            int bh = 0, bw = 0;
            if (is_max) {
                float bv;
                window_argmax(x + (size_t)plane * H * W, H, W, oh, ow, WH, WW, WH, WW, 0, 0, &bh, &bw, &bv);
                bh -= h0;
            }
            for (int i = 0; i < WH; ++i)
                for (int j = 0; j < WW; ++j)
                    out[i * W + w0 + j] = is_max ? (bh == i && bw == w0 + j ? g : 0.0f) : g * inv_area;
        }
    }
    for (int i = 0; i < WH; ++i)
        for (int w = OW * WW; w < W; ++w) out[i * W + w] = 0.0f;
    if (oh == OH - 1) {
        __global float* rest = dx + ((size_t)plane * H + OH * WH) * W;
        for (int i = 0; i < (H - OH * WH) * W; ++i) rest[i] = 0.0f;
    }
}
