// reduce.cl: the bias gradient, a sum over all but one axis.
//
// What: db[k] = Σ_n Σ_p dy[(n·K + k)·P + p] for dy [N, K, P]: conv db with
//   P = OH·OW, linear db with P = 1 (dy [N, O]).
// Launch: one work-group of WG work-items per k (global K·WG; WG a power
//   of two <= REDUCE_WG, smaller where the device allows fewer);
//   each strides over p within every image (no index division per term),
//   then a tree sum in local memory (GPUs). bias_grad_rows (CPUs): one
//   work-item per k streams its N contiguous planes with VW-wide vector
//   adds (VW: the device's SIMD width in floats, as the GEMM tile uses;
//   16-wide vectors on an AVX2 CPU cost PoCL an ABI warning and a split);
//   no local memory, no barriers (PoCL splits its work-item loop at each
//   barrier of the tree).
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

#if VW > 1
#define RED_CAT_(a, b) a##b
#define RED_CAT(a, b) RED_CAT_(a, b)
#define floatVW RED_CAT(float, VW)
#define vloadVW RED_CAT(vload, VW)
#define vstoreVW RED_CAT(vstore, VW)
#endif

__kernel void bias_grad_rows(__global const float* restrict dy, const int N, const int K, const int P,
                             __global float* restrict db) {
    const int k = get_global_id(0);
    if (k >= K) return;
    float acc = 0.0f;
#if VW > 1
    floatVW accv = (floatVW)(0.0f);
#endif
    for (int n = 0; n < N; ++n) {
        __global const float* plane = dy + ((size_t)n * K + k) * P;
        int p = 0;
#if VW > 1
        for (; p + VW <= P; p += VW) accv += vloadVW(0, plane + p);
#endif
        for (; p < P; ++p) acc += plane[p];
    }
#if VW > 1
    float lanes[VW];
    vstoreVW(accv, 0, lanes);
    for (int i = 0; i < VW; ++i) acc += lanes[i];
#endif
    db[k] = acc;
}
