// Softmax and LogSoftmax on the device: one block per row of the reduced axis (opset >= 13: the
// one axis, possibly strided; earlier opsets: the flattened trailing dims), max-subtracted,
// accumulated in float; float16/bfloat16 Softmax rounds step by step as the CPU reference does.
#include "kernels/cuda/cuda_common.h"
#include <type_traits>

#define SM_THREADS 256

__device__ static float block_reduce(float v, bool is_max, KN_SHARED_PTR(float) sh) {
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, w) : v + w;
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads(); // sh may still be read from the previous reduction
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = threadIdx.x < nw ? sh[threadIdx.x] : (is_max ? -INFINITY : 0.0f);
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) {
            float w = __shfl_xor_sync(0xffffffffu, v, o);
            v = is_max ? fmaxf(v, w) : v + w;
        }
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}

// v rounded to T's precision (identity for float)
template <class T> __device__ static inline float sm_round(float v) { return kn_num<T>::ld(kn_num<T>::st(v)); }

// rows = outer * inner, each of len elements at stride inner: y = softmax(x) (log: x - max - log sum)
template <class T> __global__ void softmax_kernel(T *y, const T *x, int64_t inner, int64_t len, bool log_out) {
    KN_SHARED(float, sh, 32);
    int64_t row = blockIdx.x, o = row / inner, p = row % inner;
    const T *xr = x + o * len * inner + p;
    T *yr = y + o * len * inner + p;
    float m = -INFINITY;
    for (int64_t k = threadIdx.x; k < len; k += blockDim.x) m = fmaxf(m, kn_num<T>::ld(xr[k * inner]));
    m = block_reduce(m, true, sh);
    if (sizeof(T) == 2 && !log_out) {
        // float16/bfloat16 Softmax rounds step by step like the ONNX reference and the CPU kernel
        // (half_softmax_line): x - max, exp and the quotient each round to T; float16 sums in
        // float, bfloat16 rounds after every addition, in order, so one thread adds the row up.
        // Rounding once from float instead is an ulp off, beyond the bfloat16 tolerance.
        float sum = 0;
        if (std::is_same<T, __nv_bfloat16>::value) {
            if (threadIdx.x == 0)
                for (int64_t k = 0; k < len; k++)
                    sum = sm_round<T>(sum + sm_round<T>(expf(sm_round<T>(kn_num<T>::ld(xr[k * inner]) - m))));
            __syncthreads(); // sh[0] (the max) has been read by every thread
            if (threadIdx.x == 0) sh[0] = sum;
            __syncthreads();
            sum = sh[0];
        } else {
            for (int64_t k = threadIdx.x; k < len; k += blockDim.x)
                sum += sm_round<T>(expf(sm_round<T>(kn_num<T>::ld(xr[k * inner]) - m)));
            sum = block_reduce(sum, false, sh);
        }
        sum = sm_round<T>(sum);
        for (int64_t k = threadIdx.x; k < len; k += blockDim.x)
            yr[k * inner] = kn_num<T>::st(sm_round<T>(expf(sm_round<T>(kn_num<T>::ld(xr[k * inner]) - m))) / sum);
        return;
    }
    float sum = 0;
    for (int64_t k = threadIdx.x; k < len; k += blockDim.x) sum += expf(kn_num<T>::ld(xr[k * inner]) - m);
    sum = block_reduce(sum, false, sh);
    float ls = logf(sum), inv = 1.0f / sum;
    for (int64_t k = threadIdx.x; k < len; k += blockDim.x) {
        float v = kn_num<T>::ld(xr[k * inner]) - m;
        yr[k * inner] = kn_num<T>::st(log_out ? v - ls : expf(v) * inv);
    }
}

static kn_status *softmax_cuda(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *x, kn_tensor *y, bool log_out) {
    int64_t n = kn_numel(x);
    if (n <= 0) return NULL;
    int r = x->ndim;
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, softmax)->axis, r ? r : 1, node, &axis));
    int64_t outer = 1, len = 1, inner = 1;
    for (int d = 0; d < axis && d < r; d++) outer *= x->dims[d];
    if (node->opset >= 13) {
        len = r ? x->dims[axis] : 1;
        for (int d = axis + 1; d < r; d++) inner *= x->dims[d];
    } else {
        for (int d = axis; d < r; d++) len *= x->dims[d]; // coerced to 2-D
    }
    int64_t rows = outer * inner;
    if (rows > 0x7fffffffLL) return kn_error(KN_ERR_UNSUPPORTED, "Softmax: %lld rows", (long long)rows);
    cudaStream_t s = kn_cuda_s(ctx);
    switch (x->dtype) {
    case KN_F32:
        KN_LAUNCH(softmax_kernel<float>, (unsigned)rows, SM_THREADS, 0, s, (float *)y->data, (const float *)x->data,
                  inner, len, log_out);
        break;
    case KN_F16:
        KN_LAUNCH(softmax_kernel<__half>, (unsigned)rows, SM_THREADS, 0, s, (__half *)y->data, (const __half *)x->data,
                  inner, len, log_out);
        break;
    case KN_BF16:
        KN_LAUNCH(softmax_kernel<__nv_bfloat16>, (unsigned)rows, SM_THREADS, 0, s, (__nv_bfloat16 *)y->data,
                  (const __nv_bfloat16 *)x->data, inner, len, log_out);
        break;
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "Softmax kernel");
    return NULL;
}

KN_CUDA_KERNEL(Softmax) { return softmax_cuda(ctx, node, in[0], out[0], false); }
KN_CUDA_KERNEL(LogSoftmax) { return softmax_cuda(ctx, node, in[0], out[0], true); }

bool kn_cuda_softmax_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    return n_in >= 1 && in[0] && kn_cuda_float(in[0]->dtype);
}
