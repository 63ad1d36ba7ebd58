// Gather along any axis on the device, int32 or int64 indices, negative indices counted from
// the end. An index out of range cannot stop the run from inside a kernel: its output row is
// zeroed and the stream's error word set, so the run fails at its end as on the CPU.
#include "kernels/cuda/cuda_common.h"

// y[outer, n_idx, inner] = x[outer, idx[j] (of dim), inner]
template <class E, class I>
__global__ void gather_kernel(E *y, const E *x, const I *idx, int64_t outer, int64_t n_idx, int64_t inner, int64_t dim,
                              int *err, int code) {
    int64_t n = outer * n_idx * inner;
    KN_GRID_STRIDE(i, n) {
        int64_t p = i % inner, r = i / inner;
        int64_t j = r % n_idx, o = r / n_idx;
        int64_t k = (int64_t)idx[j];
        if (k < 0) k += dim;
        if (k >= 0 && k < dim) {
            y[i] = x[(o * dim + k) * inner + p];
        } else {
            y[i] = E(0);
            atomicCAS(err, 0, code);
        }
    }
}

template <class E>
static void gather_launch(void *y, const void *x, const void *idx, bool i64, int64_t outer, int64_t n_idx,
                          int64_t inner, int64_t dim, cudaStream_t s, int *err, int code) {
    unsigned g = kn_cuda_blocks(outer * n_idx * inner, 256);
    if (i64)
        KN_LAUNCH((gather_kernel<E, int64_t>), g, 256, 0, s, (E *)y, (const E *)x, (const int64_t *)idx, outer, n_idx,
                  inner, dim, err, code);
    else
        KN_LAUNCH((gather_kernel<E, int32_t>), g, 256, 0, s, (E *)y, (const E *)x, (const int32_t *)idx, outer, n_idx,
                  inner, dim, err, code);
}

KN_CUDA_KERNEL(Gather) {
    const kn_tensor *x = in[0], *ix = in[1];
    kn_tensor *y = out[0];
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, axis)->axis, x->ndim, node, &axis));
    int64_t outer = 1, inner = 1, n_idx = kn_numel(ix), dim = x->dims[axis];
    for (int d = 0; d < axis; d++) outer *= x->dims[d];
    for (int d = axis + 1; d < x->ndim; d++) inner *= x->dims[d];
    if (outer * n_idx * inner <= 0) return NULL;
    bool i64 = ix->dtype == KN_I64;
    cudaStream_t s = kn_cuda_s(ctx);
    int *err = kn_cuda_st(ctx)->dev_err, code = kn_cuda_err_code(ctx, node);
    switch (kn_dtype_size(x->dtype)) {
    case 1: gather_launch<uint8_t>(y->data, x->data, ix->data, i64, outer, n_idx, inner, dim, s, err, code); break;
    case 2: gather_launch<uint16_t>(y->data, x->data, ix->data, i64, outer, n_idx, inner, dim, s, err, code); break;
    case 4: gather_launch<uint32_t>(y->data, x->data, ix->data, i64, outer, n_idx, inner, dim, s, err, code); break;
    case 8: gather_launch<uint64_t>(y->data, x->data, ix->data, i64, outer, n_idx, inner, dim, s, err, code); break;
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "Gather kernel");
    return NULL;
}
