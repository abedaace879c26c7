// reduce.cl: the bias gradient, a sum over all but one axis.
//
// What: db[k] = Σ_n Σ_p dy[(n·K + k)·P + p] for dy [N, K, P]: conv db with
//   P = OH·OW, linear db with P = 1 (dy [N, O]).
// Launch: one work-group of WG work-items per k (global K·WG; WG a power
//   of two <= REDUCE_WG, smaller where the device allows fewer);
//   each strides over p within every image (no index division per term),
//   then a tree sum in local memory (GPUs). bias_grad_rows (CPUs): one
//   work-item per k streams its N contiguous planes with 16-wide vector
//   adds; no local memory, no barriers (PoCL splits its work-item loop at
//   each barrier of the tree).
// Check: cargo test -p kernels-opencl conv linear.

__kernel void bias_grad(__global const float* restrict dy, const int N, const int K, const int P,
                        __global float* restrict db) {
    __local float partial[REDUCE_WG];
    const int k = get_group_id(0);
    const int lid = get_local_id(0);
    const int wg = get_local_size(0);
    float acc = 0.0f;
    for (int n = 0; n < N; ++n) {
        __global const float* plane = dy + ((size_t)n * K + k) * P;
        for (int p = lid; p < P; p += wg) acc += plane[p];
    }
    partial[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = wg / 2; step > 0; step /= 2) {
        if (lid < step) partial[lid] += partial[lid + step];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) db[k] = partial[0];
}

__kernel void bias_grad_rows(__global const float* restrict dy, const int N, const int K, const int P,
                             __global float* restrict db) {
    const int k = get_global_id(0);
    if (k >= K) return;
    float16 acc16 = (float16)(0.0f);
    float acc = 0.0f;
    for (int n = 0; n < N; ++n) {
        __global const float* plane = dy + ((size_t)n * K + k) * P;
        int p = 0;
        for (; p + 16 <= P; p += 16) acc16 += vload16(0, plane + p);
        for (; p < P; ++p) acc += plane[p];
    }
    const float8 a8 = acc16.lo + acc16.hi;
    const float4 a4 = a8.lo + a8.hi;
    const float2 a2 = a4.lo + a4.hi;
    db[k] = acc + a2.x + a2.y;
}
