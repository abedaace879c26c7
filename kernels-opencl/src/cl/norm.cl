// norm.cl: batch normalization and dropout (formulas in kernels_core::norm
// and kernels_core::dropout).
//
// What: x [N, C, S] with S = H·W (1 for [N, F]); element (n, c, s) at
//   (n·C + c)·S + s.
//   bn_stats: per channel μ, 1/√(σ² + ε) (biased σ², two passes), and the
//     running statistics moved towards μ and the unbiased σ²·M/(M − 1).
//   bn_apply: y = (x − μ[c])·(γ[c]·inv[c]) + β[c] (train: the batch's μ and
//     inv; eval: bn_apply_eval takes the running statistics).
//   bn_backward_sums: per channel dβ = Σ dy, dγ = Σ dy·x̂.
//   bn_backward_dx: dx = γ·inv·(dy − dβ/M − x̂·dγ/M).
//   dropout_apply: out = keep(i) ? v·scale : 0 with keep(i) = the high 32
//     bits of SplitMix64 output i of `key` ≥ threshold, bit for bit the
//     host's DropoutMask::keeps.
// Launch: the per-channel kernels run one work-group of WG work-items per
//   channel (global C·WG; WG a power of two <= REDUCE_WG, smaller where the
//   device allows fewer), each striding over the channel's
//   planes, then a tree sum in local memory; the element-wise kernels one
//   work-item per element over a range rounded up (n guards).
// Check: cargo test -p harness --test opencl batch_norm dropout.

#define BN_LOOP(BODY)                                                        \
    for (int n = 0; n < N; ++n) {                                            \
        __global const float* xp = x + ((size_t)n * C + c) * S;              \
        const size_t base = ((size_t)n * C + c) * S;                         \
        for (int s = lid; s < S; s += wg) { BODY; }                   \
    }

// Tree sum of `partial` (one float per work-item of a power-of-two group
// of wg <= REDUCE_WG); the total ends in partial[0].
static void tree_sum(__local float* partial, const int lid, const int wg) {
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = wg / 2; step > 0; step /= 2) {
        if (lid < step) partial[lid] += partial[lid + step];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

__kernel void bn_stats(__global const float* restrict x, const int N, const int C, const int S, const float eps,
                       const float momentum, const float one_minus_momentum, const float unbiased,
                       __global float* restrict mean, __global float* restrict inv_std,
                       __global float* restrict running_mean, __global float* restrict running_var) {
    __local float partial[REDUCE_WG];
    const int c = get_group_id(0);
    const int lid = get_local_id(0);
    const int wg = get_local_size(0);
    const float m = (float)N * (float)S;
    float acc = 0.0f;
    BN_LOOP(acc += xp[s]);
    partial[lid] = acc;
    tree_sum(partial, lid, wg);
    const float mu = partial[0] / m;
    barrier(CLK_LOCAL_MEM_FENCE);
    acc = 0.0f;
    BN_LOOP(const float d = xp[s] - mu; acc += d * d);
    partial[lid] = acc;
    tree_sum(partial, lid, wg);
    if (lid == 0) {
        const float var = partial[0] / m;
        mean[c] = mu;
        inv_std[c] = 1.0f / sqrt(var + eps);
        running_mean[c] = one_minus_momentum * running_mean[c] + momentum * mu;
        running_var[c] = one_minus_momentum * running_var[c] + momentum * (var * unbiased);
    }
}

__kernel void bn_apply(__global const float* restrict x, const int C, const int S, const int len,
                       __global const float* restrict mean, __global const float* restrict inv_std,
                       __global const float* restrict gamma, __global const float* restrict beta,
                       __global float* restrict y) {
    const int i = get_global_id(0);
    if (i >= len) return;
    const int c = (i / S) % C;
    y[i] = (x[i] - mean[c]) * (gamma[c] * inv_std[c]) + beta[c];
}

__kernel void bn_apply_eval(__global const float* restrict x, const int C, const int S, const int len,
                            __global const float* restrict running_mean, __global const float* restrict running_var,
                            const float eps, __global const float* restrict gamma,
                            __global const float* restrict beta, __global float* restrict y) {
    const int i = get_global_id(0);
    if (i >= len) return;
    const int c = (i / S) % C;
    y[i] = (x[i] - running_mean[c]) * (gamma[c] / sqrt(running_var[c] + eps)) + beta[c];
}

__kernel void bn_backward_sums(__global const float* restrict x, __global const float* restrict dy, const int N,
                               const int C, const int S, __global const float* restrict mean,
                               __global const float* restrict inv_std, __global float* restrict dgamma,
                               __global float* restrict dbeta) {
    __local float partial[REDUCE_WG];
    const int c = get_group_id(0);
    const int lid = get_local_id(0);
    const int wg = get_local_size(0);
    const float mu = mean[c], inv = inv_std[c];
    float acc = 0.0f;
    BN_LOOP(acc += dy[base + s]);
    partial[lid] = acc;
    tree_sum(partial, lid, wg);
    const float sum_dy = partial[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    acc = 0.0f;
    BN_LOOP(acc += dy[base + s] * ((xp[s] - mu) * inv));
    partial[lid] = acc;
    tree_sum(partial, lid, wg);
    if (lid == 0) {
        dbeta[c] = sum_dy;
        dgamma[c] = partial[0];
    }
}

__kernel void bn_backward_dx(__global const float* restrict x, __global const float* restrict dy, const int C,
                             const int S, const int len, const float inv_m, __global const float* restrict mean,
                             __global const float* restrict inv_std, __global const float* restrict gamma,
                             __global const float* restrict dgamma, __global const float* restrict dbeta,
                             __global float* restrict dx) {
    const int i = get_global_id(0);
    if (i >= len) return;
    const int c = (i / S) % C;
    const float inv = inv_std[c];
    const float xhat = (x[i] - mean[c]) * inv;
    dx[i] = gamma[c] * inv * (dy[i] - dbeta[c] * inv_m - xhat * (dgamma[c] * inv_m));
}

// SplitMix64's output function.
static ulong splitmix64_mix(ulong z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
    return z ^ (z >> 31);
}

// The 64-bit key and the 32-bit threshold arrive as bit patterns in ints
// (the launcher's argument types are 32-bit).
__kernel void dropout_apply(__global const float* restrict v, const int len, const int key_lo, const int key_hi,
                            const int threshold_bits, const float scale, __global float* restrict out) {
    const int i = get_global_id(0);
    if (i >= len) return;
    const ulong key = ((ulong)(uint)key_hi << 32) | (ulong)(uint)key_lo;
    const uint bits = (uint)(splitmix64_mix(key + (ulong)(i + 1) * 0x9E3779B97F4A7C15UL) >> 32);
    out[i] = bits >= (uint)threshold_bits ? v[i] * scale : 0.0f;
}
