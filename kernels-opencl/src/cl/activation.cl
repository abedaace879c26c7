// activation.cl: element-wise activations and their backwards.
//
// What: relu y = 0 where x ≤ 0 else x, dx = 0 where x ≤ 0 else dy (NaN
//   passes through both ways, as in PyTorch; fmax would drop it); sigmoid
//   y = 1 / (1 + e^−x), dx = dy·y·(1 − y) from the forward's y; and
//   fill_f32, x = value (the backend's zeros: a kernel rather than
//   clEnqueueFillBuffer, which Oclgrind records as leaving all but the
//   first element uninitialised, so its checks report every later read).
// Launch: one work-item per element over a range rounded up; n guards.
// Check: cargo test -p kernels-opencl activation.

__kernel void relu_forward(__global const float* restrict x, const int n, __global float* restrict y) {
    const int i = get_global_id(0);
    if (i < n) y[i] = x[i] <= 0.0f ? 0.0f : x[i];
}

__kernel void relu_backward(__global const float* restrict x, __global const float* restrict dy, const int n,
                            __global float* restrict dx) {
    const int i = get_global_id(0);
    if (i < n) dx[i] = x[i] <= 0.0f ? 0.0f : dy[i];
}

__kernel void sigmoid_forward(__global const float* restrict x, const int n, __global float* restrict y) {
    const int i = get_global_id(0);
    if (i < n) y[i] = 1.0f / (1.0f + exp(-x[i]));
}

__kernel void sigmoid_backward(__global const float* restrict y, __global const float* restrict dy, const int n,
                               __global float* restrict dx) {
    const int i = get_global_id(0);
    if (i < n) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

__kernel void fill_f32(__global float* restrict x, const int n, const float value) {
    const int i = get_global_id(0);
    if (i < n) x[i] = value;
}
