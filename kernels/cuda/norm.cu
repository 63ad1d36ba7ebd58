// LayerNormalization on the device: one block per normalized row (the dims from `axis` on),
// two passes in float (mean, then the centred variance, as the CPU reference), scale and bias
// of the row's shape, optional Mean and InvStdDev outputs.
#include "kernels/cuda/cuda_common.h"

#define LN_THREADS 256

__device__ static float ln_block_sum(float v, KN_SHARED_PTR(float) sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = threadIdx.x < nw ? sh[threadIdx.x] : 0.0f;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}

// y[rows, cols] = (x - mean) * invstd * scale[cols] + bias[cols]; mean/invstd[rows] when wanted
template <class T, class U>
__global__ void layernorm_kernel(T *y, U *mean_out, U *inv_out, const T *x, const T *scale, const T *bias, int64_t cols,
                                 float eps) {
    KN_SHARED(float, sh, 32);
    int64_t row = blockIdx.x;
    const T *xr = x + row * cols;
    T *yr = y + row * cols;
    float s = 0;
    for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) s += kn_num<T>::ld(xr[k]);
    float mean = ln_block_sum(s, sh) / (float)cols;
    float v = 0;
    for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) {
        float d = kn_num<T>::ld(xr[k]) - mean;
        v += d * d;
    }
    float var = ln_block_sum(v, sh) / (float)cols;
    float inv = 1.0f / sqrtf(var + eps);
    for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) {
        float o = (kn_num<T>::ld(xr[k]) - mean) * inv * kn_num<T>::ld(scale[k]);
        if (bias) o += kn_num<T>::ld(bias[k]);
        yr[k] = kn_num<T>::st(o);
    }
    if (threadIdx.x == 0) {
        if (mean_out) mean_out[row] = kn_num<U>::st(mean);
        if (inv_out) inv_out[row] = kn_num<U>::st(inv);
    }
}

template <class T>
static void ln_launch(kn_tensor *const *out, int n_out, const kn_tensor *x, const kn_tensor *sc, const kn_tensor *b,
                      int64_t rows, int64_t cols, float eps, bool stats_bf16, cudaStream_t s) {
    void *m = n_out > 1 && out[1] ? out[1]->data : NULL, *iv = n_out > 2 && out[2] ? out[2]->data : NULL;
    const T *bias = b ? (const T *)b->data : NULL;
    if (stats_bf16)
        KN_LAUNCH((layernorm_kernel<T, __nv_bfloat16>), (unsigned)rows, LN_THREADS, 0, s, (T *)out[0]->data,
                  (__nv_bfloat16 *)m, (__nv_bfloat16 *)iv, (const T *)x->data, (const T *)sc->data, bias, cols, eps);
    else
        KN_LAUNCH((layernorm_kernel<T, float>), (unsigned)rows, LN_THREADS, 0, s, (T *)out[0]->data, (float *)m,
                  (float *)iv, (const T *)x->data, (const T *)sc->data, bias, cols, eps);
}

KN_CUDA_KERNEL(LayerNormalization) {
    const kn_tensor *x = in[0], *sc = in[1], *b = n_in > 2 ? in[2] : NULL;
    int axis;
    const kn_params_layernorm *p = KN_PARAMS(node, layernorm);
    KN_TRY(kn_norm_axis(p->axis, x->ndim, node, &axis));
    float eps = p->epsilon;
    int64_t rows = 1, cols = 1;
    for (int d = 0; d < axis; d++) rows *= x->dims[d];
    for (int d = axis; d < x->ndim; d++) cols *= x->dims[d];
    // an empty row still has its Mean and InvStdDev written (NaN: 0 / 0, as on the CPU)
    if (rows <= 0) return NULL;
    if (kn_numel(sc) != cols || (b && kn_numel(b) != cols))
        return kn_error(KN_ERR_UNSUPPORTED, "LayerNormalization: scale/bias must have the normalized shape on cuda");
    if (rows > 0x7fffffffLL) return kn_error(KN_ERR_UNSUPPORTED, "LayerNormalization: %lld rows", (long long)rows);
    bool stats_bf16 = false;
    for (int k = 1; k < 3 && k < n_out; k++)
        if (out[k]) {
            if (out[k]->dtype == KN_BF16) stats_bf16 = true;
            else if (out[k]->dtype != KN_F32) return kn_err_dtype(node, out[k]);
        }
    cudaStream_t s = kn_cuda_s(ctx);
    switch (x->dtype) {
    case KN_F32: ln_launch<float>(out, n_out, x, sc, b, rows, cols, eps, stats_bf16, s); break;
    case KN_F16: ln_launch<__half>(out, n_out, x, sc, b, rows, cols, eps, stats_bf16, s); break;
    case KN_BF16: ln_launch<__nv_bfloat16>(out, n_out, x, sc, b, rows, cols, eps, stats_bf16, s); break;
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "LayerNormalization kernel");
    return NULL;
}

bool kn_cuda_norm_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 2 || !in[0] || !in[1] || !kn_cuda_float(in[0]->dtype) || in[1]->dtype != in[0]->dtype) return false;
    if (n_in > 2 && in[2] && in[2]->dtype != in[0]->dtype) return false;
    const kn_params_layernorm *p = KN_PARAMS(n, layernorm);
    int64_t axis = p->axis;
    int r = in[0]->ndim;
    if (axis < -r || axis >= r) return false;
    if (axis < 0) axis += r;
    int64_t cols = 1;
    for (int d = (int)axis; d < r; d++) cols *= in[0]->dims[d];
    // scale/bias broadcast over part of the row stays on the CPU
    if (kn_numel(in[1]) != cols || (n_in > 2 && in[2] && kn_numel(in[2]) != cols)) return false;
    int64_t st = p->stash_type;
    return st == 1 || st == 16;
}
