// optim.cl: optimiser updates in place on the device, PyTorch's rules (see
// kernels_core::optim, whose update_slice is the reference).
//
// What, with g = grad + wd·p when wd ≠ 0:
//   sgd       p −= lr·g
//   momentum  v = μ·v + g; p −= lr·v            (nesterov: p −= lr·(g + μ·v))
//   adagrad   s += g²; p −= lr·g / (√s + ε)
//   rmsprop   s = α·s + (1 − α)·g²; p −= lr·g / (√s + ε)
//   adam      m = β1·m + (1 − β1)·g; v = β2·v + (1 − β2)·g²;
//             p −= lr·(m / c1) / (√(v / c2) + ε), c1, c2 the bias corrections
// 1 − α and 1 − β arrive as their own arguments, formed in double on the host
// and rounded once (as PyTorch does): 1.0f − β from the f32 β would be off by
// up to ε·β/(1 − β) relative (1.4e-3 at β = 0.99999).
// Launch: one work-item per element, range rounded up, n guards.
// Check: cargo test -p kernels-opencl optim.

inline float decayed(const float g, const float p, const float wd) { return wd != 0.0f ? g + wd * p : g; }

__kernel void sgd_step(__global float* restrict p, __global const float* restrict grad, const int n,
                       const float lr, const float wd) {
    const int i = get_global_id(0);
    if (i >= n) return;
    p[i] -= lr * decayed(grad[i], p[i], wd);
}

__kernel void momentum_step(__global float* restrict p, __global const float* restrict grad,
                            __global float* restrict v, const int n, const float lr, const float mu,
                            const float wd, const int nesterov) {
    const int i = get_global_id(0);
    if (i >= n) return;
    const float g = decayed(grad[i], p[i], wd);
    const float vi = mu * v[i] + g;
    v[i] = vi;
    p[i] -= lr * (nesterov ? g + mu * vi : vi);
}

__kernel void adagrad_step(__global float* restrict p, __global const float* restrict grad,
                           __global float* restrict s, const int n, const float lr, const float eps,
                           const float wd) {
    const int i = get_global_id(0);
    if (i >= n) return;
    const float g = decayed(grad[i], p[i], wd);
    const float si = s[i] + g * g;
    s[i] = si;
    p[i] -= lr * g / (sqrt(si) + eps);
}

__kernel void rmsprop_step(__global float* restrict p, __global const float* restrict grad,
                           __global float* restrict s, const int n, const float lr, const float alpha,
                           const float one_minus_alpha, const float eps, const float wd) {
    const int i = get_global_id(0);
    if (i >= n) return;
    const float g = decayed(grad[i], p[i], wd);
    const float si = alpha * s[i] + one_minus_alpha * g * g;
    s[i] = si;
    p[i] -= lr * g / (sqrt(si) + eps);
}

__kernel void adam_step(__global float* restrict p, __global const float* restrict grad, __global float* restrict m,
                        __global float* restrict v, const int n, const float lr, const float b1, const float b2,
                        const float one_minus_b1, const float one_minus_b2, const float eps, const float wd, const float c1, const float c2) {
    const int i = get_global_id(0);
    if (i >= n) return;
    const float g = decayed(grad[i], p[i], wd);
    const float mi = b1 * m[i] + one_minus_b1 * g;
    const float vi = b2 * v[i] + one_minus_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    p[i] -= lr * (mi / c1) / (sqrt(vi / c2) + eps);
}
