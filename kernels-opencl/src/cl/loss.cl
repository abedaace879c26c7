// loss.cl: softmax cross-entropy, mean over the batch, with dlogits.
//
// What: for logits [N, K] and labels [N]: loss = (1/N) Σ_n (log Σ_k e^{x_nk}
//   − x_n,label), dlogits = (softmax − onehot) / N. Rows are stabilised by
//   their maximum.
// Launch: one work-group of WG work-items, a power of two <= REDUCE_WG
//   (smaller where the device allows fewer for this kernel); each
//   takes rows lid, lid + WG, ...; the row losses are summed in local
//   memory and work-item 0 writes the mean to loss[0].
// Check: cargo test -p kernels-opencl loss.

__kernel void softmax_xent(__global const float* restrict logits, __global const int* restrict labels,
                           const int N, const int K, __global float* restrict dlogits,
                           __global float* restrict loss) {
    __local float partial[REDUCE_WG];
    const int lid = get_local_id(0);
    const int wg = get_local_size(0);
    const float inv_n = 1.0f / (float)N;
    float acc = 0.0f;
    for (int n = lid; n < N; n += wg) {
        __global const float* row = logits + (size_t)n * K;
        float m = row[0];
        for (int k = 1; k < K; ++k) m = fmax(m, row[k]);
        float sum = 0.0f;
        for (int k = 0; k < K; ++k) sum += exp(row[k] - m);
        const int label = labels[n];
        acc += log(sum) + m - row[label];
        __global float* drow = dlogits + (size_t)n * K;
        const float inv_sum = 1.0f / sum;
        for (int k = 0; k < K; ++k) drow[k] = (exp(row[k] - m) * inv_sum - (k == label ? 1.0f : 0.0f)) * inv_n;
    }
    partial[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = wg / 2; step > 0; step /= 2) {
        if (lid < step) partial[lid] += partial[lid + step];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) loss[0] = partial[0] * inv_n;
}
