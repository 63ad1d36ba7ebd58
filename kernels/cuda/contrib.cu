// The com.microsoft contrib and text-generation ops on the device: the Gelu family (Gelu, FastGelu,
// BiasGelu), the normalisations with a residual (SkipLayerNormalization, SkipSimplifiedLayerNormalization)
// and RMS norm (SimplifiedLayerNormalization), MatMulNBits (int4/int8 block-quantised weights) and
// GatherBlockQuantized. Everything computes in float32 whatever the tensors' float type, as the CPU
// kernels do (kernels/cpu/contrib.c, genops.c, nbits.c), so a 16-bit output is rounded once.
#include "kernels/cuda/cuda_common.h"

#define CT_THREADS 256

// ---- Gelu family: y = gelu(x + bias[i % blen]), in double as the opset-20 Gelu kernel ----

template <class T> __global__ void ms_gelu_kernel(T *y, const T *x, const T *bias, int64_t blen, int64_t n, bool tf) {
    KN_GRID_STRIDE(i, n) {
        // the sum rounded to float first, as the CPU adds the bias in float before the Gelu
        float xf = kn_num<T>::ld(x[i]);
        if (bias) xf += kn_num<T>::ld(bias[i % blen]);
        double v = xf;
        double r = tf ? 0.5 * v * (1.0 + tanh(0.79788456080286535588 * v * (1.0 + 0.044715 * v * v)))
                      : 0.5 * v * erfc(-v * 0.70710678118654752440);
        y[i] = kn_num<T>::st((float)r);
    }
}

kn_status *kn_cuda_gelu_bias(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *x, const kn_tensor *bias,
                             kn_tensor *y, bool tf) {
    char bx[KN_DESC_LEN], bb[KN_DESC_LEN];
    if (bias && (bias->ndim != 1 || x->ndim < 1 || bias->dims[0] != x->dims[x->ndim - 1] || bias->dims[0] <= 0))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: bias %s must be 1-D matching the last dim of %s", node->op_type,
                        kn_tensor_desc(bias, bb, sizeof bb), kn_tensor_desc(x, bx, sizeof bx));
    int64_t n = kn_numel(x), blen = bias ? bias->dims[0] : 1;
    if (n <= 0) return NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, CT_THREADS);
#define GELU_LAUNCH(T) \
    KN_LAUNCH(ms_gelu_kernel<T>, g, CT_THREADS, 0, s, (T *)y->data, (const T *)x->data, \
              bias ? (const T *)bias->data : (const T *)NULL, blen, n, tf)
    switch (x->dtype) {
    case KN_F32: GELU_LAUNCH(float); break;
    case KN_F16: GELU_LAUNCH(__half); break;
    case KN_BF16: GELU_LAUNCH(__nv_bfloat16); break;
    default: return kn_err_dtype(node, x);
    }
#undef GELU_LAUNCH
    KN_CUDA_LAUNCHED(node, "Gelu family kernel");
    return NULL;
}

KN_CUDA_KERNEL(MsGelu) {
    (void)n_in;
    (void)n_out;
    return kn_cuda_gelu_bias(ctx, node, in[0], NULL, out[0], false);
}

KN_CUDA_KERNEL(MsFastGelu) {
    (void)n_out;
    return kn_cuda_gelu_bias(ctx, node, in[0], n_in > 1 ? in[1] : NULL, out[0], true);
}

KN_CUDA_KERNEL(MsBiasGelu) {
    (void)n_out;
    if (n_in < 2 || !in[1]) return kn_error(KN_ERR_INVALID_MODEL, "BiasGelu: missing input B");
    return kn_cuda_gelu_bias(ctx, node, in[0], in[1], out[0], false);
}

// x (and bias when given) of one float type; the CPU's float64 path stays there.
bool kn_cuda_ms_gelu_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    (void)n;
    if (n_in < 1 || !in[0] || !kn_cuda_float(in[0]->dtype)) return false;
    return n_in < 2 || !in[1] || in[1]->dtype == in[0]->dtype;
}

// ---- (Skip)(Simplified)LayerNormalization: one block per row ----

// The row's value at k: input + skip + bias, summed in float in the CPU's order.
template <class TX, class TG>
__device__ static inline float sn_val(const TX *xr, const TX *sr, const TG *bias, int64_t k) {
    float v = kn_num<TX>::ld(xr[k]);
    if (sr) v += kn_num<TX>::ld(sr[k]);
    if (bias) v += kn_num<TG>::ld(bias[k]);
    return v;
}

// Row r of [rows, H]: v = x + skip[r % skip_rows] + bias; sum_out = v; y = LayerNorm(v) (mean, then
// the centred variance) or, RMS, v / sqrt(mean(v^2) + eps) * gamma. mean_out gets the mean (0 for
// RMS, as ONNX Runtime writes), inv_out 1/sqrt(var + eps). When `staged`, v is kept in dynamic
// shared memory (H floats) after the first pass instead of read again from global memory.
template <class TX, class TG, class TY, bool RMS>
__global__ void skipnorm_kernel(TY *y, float *mean_out, float *inv_out, TY *sum_out, const TX *x, const TX *skip,
                                const TG *gamma, const TG *beta, const TG *bias, int64_t H, int64_t skip_rows,
                                float eps, bool staged) {
    KN_SHARED(float, red, 32);
    KN_SHARED_DYN(float, row);
    int64_t r = blockIdx.x;
    const TX *xr = x + r * H, *sr = skip ? skip + (r % skip_rows) * H : NULL;
    float s = 0.0f;
    for (int64_t k = threadIdx.x; k < H; k += blockDim.x) {
        float v = sn_val(xr, sr, bias, k);
        if (staged) row[k] = v;
        if (RMS) s += v * v;
        else s += v;
    }
    float mean = 0.0f, inv;
    if (RMS) {
        inv = 1.0f / sqrtf(kn_cuda_block_sum(s, red) / (float)H + eps);
    } else {
        mean = kn_cuda_block_sum(s, red) / (float)H;
        float q = 0.0f;
        for (int64_t k = threadIdx.x; k < H; k += blockDim.x) {
            float d = (staged ? (float)row[k] : sn_val(xr, sr, bias, k)) - mean;
            q += d * d;
        }
        inv = 1.0f / sqrtf(kn_cuda_block_sum(q, red) / (float)H + eps);
    }
    TY *yr = y + r * H;
    for (int64_t k = threadIdx.x; k < H; k += blockDim.x) {
        float v = staged ? (float)row[k] : sn_val(xr, sr, bias, k);
        float o;
        if (RMS) {
            o = v * inv * kn_num<TG>::ld(gamma[k]);
        } else {
            o = (v - mean) * inv * kn_num<TG>::ld(gamma[k]);
            if (beta) o += kn_num<TG>::ld(beta[k]);
        }
        yr[k] = kn_num<TY>::st(o);
        if (sum_out) sum_out[r * H + k] = kn_num<TY>::st(v);
    }
    if (threadIdx.x == 0) {
        if (mean_out) mean_out[r] = mean;
        if (inv_out) inv_out[r] = inv;
    }
}

// Threads per row: a warp per 128 values up to 256 threads (a short row leaves no thread idle).
static int sn_threads(int64_t H) {
    int64_t t = (H / 4 + 31) / 32 * 32;
    return t < 32 ? 32 : t > CT_THREADS ? CT_THREADS : (int)t;
}

struct sn_args {
    void *y, *sum;
    float *mean, *inv;
    const void *x, *skip, *gamma, *beta, *bias;
    int64_t rows, H, skip_rows;
    float eps;
};

template <class TX, class TG, class TY, bool RMS> static void sn_launch(const sn_args &a, cudaStream_t s) {
    // the row in shared memory when it fits the default 48 KiB with room to spare
    bool staged = a.H * (int64_t)sizeof(float) <= 32768;
    size_t smem = staged ? (size_t)a.H * sizeof(float) : 0;
    KN_LAUNCH((skipnorm_kernel<TX, TG, TY, RMS>), (unsigned)a.rows, sn_threads(a.H), smem, s, (TY *)a.y, a.mean, a.inv,
              (TY *)a.sum, (const TX *)a.x, (const TX *)a.skip, (const TG *)a.gamma, (const TG *)a.beta,
              (const TG *)a.bias, a.H, a.skip_rows, a.eps, staged);
}

template <bool RMS>
static kn_status *sn_dispatch1(const kn_node *node, const kn_tensor *x, const sn_args &a, cudaStream_t s) {
    switch (x->dtype) {
    case KN_F32: sn_launch<float, float, float, RMS>(a, s); break;
    case KN_F16: sn_launch<__half, __half, __half, RMS>(a, s); break;
    case KN_BF16: sn_launch<__nv_bfloat16, __nv_bfloat16, __nv_bfloat16, RMS>(a, s); break;
    default: return kn_err_dtype(node, x);
    }
    return NULL;
}

// The skip's row period: skip is the input's shape or its trailing dims ([S,H] / [1,S,H]) broadcast
// over the batch, as the CPU kernels accept it.
static kn_status *sn_skip_rows(const kn_node *node, const kn_tensor *x, const kn_tensor *skip, int64_t H, int64_t rows,
                               int64_t *skip_rows) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    bool ok = skip->ndim >= 2 && skip->ndim <= x->ndim && skip->dims[skip->ndim - 1] == H;
    *skip_rows = rows;
    if (ok) {
        *skip_rows = H > 0 ? kn_numel(skip) / H : 0;
        for (int i = 1; i <= skip->ndim && ok; i++) {
            int64_t sd = skip->dims[skip->ndim - i], xd = x->dims[x->ndim - i];
            if (sd != xd && !(i == skip->ndim && sd == 1 && i == x->ndim)) ok = false;
        }
        if (ok && ((*skip_rows > 0 && rows % *skip_rows) || (*skip_rows == 0 && rows > 0))) ok = false;
    }
    if (!ok)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: skip %s does not match input %s", node->op_type,
                        kn_tensor_desc(skip, b1, sizeof b1), kn_tensor_desc(x, b0, sizeof b0));
    return NULL;
}

// SkipLayerNormalization (x, skip, gamma, beta?, bias?) and SkipSimplifiedLayerNormalization (x,
// skip, gamma, bias?): outputs y, mean, inv_std_var, input_skip_bias_sum, each but y optional.
template <bool RMS>
static kn_status *skip_norm(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                            kn_tensor *const *out, int n_out) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
#define SN_IN(i) (n_in > (i) ? in[i] : NULL)
    const kn_tensor *x = in[0], *skip = SN_IN(1), *gamma = SN_IN(2);
    const kn_tensor *beta = RMS ? NULL : SN_IN(3), *bias = RMS ? SN_IN(3) : SN_IN(4);
#undef SN_IN
    if (!skip || !gamma) return kn_error(KN_ERR_INVALID_MODEL, "%s: input, skip and gamma are required", node->op_type);
    if (x->ndim < 2 || x->ndim > 3)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input must be 2-D or 3-D, got %s", node->op_type,
                        kn_tensor_desc(x, b0, sizeof b0));
    int64_t H = x->dims[x->ndim - 1], rows = H > 0 ? kn_numel(x) / H : 0, skip_rows;
    KN_TRY(sn_skip_rows(node, x, skip, H, rows, &skip_rows));
    const kn_tensor *vecs[3] = {gamma, beta, bias};
    for (int i = 0; i < 3; i++)
        if (vecs[i] && (vecs[i]->ndim != 1 || vecs[i]->dims[0] != H))
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: gamma/beta/bias %s must be [%lld] for input %s",
                            node->op_type, kn_tensor_desc(vecs[i], b1, sizeof b1), (long long)H,
                            kn_tensor_desc(x, b0, sizeof b0));
    if (rows == 0 || H == 0) return NULL;
    float eps = KN_PARAMS(node, ms_sln)->epsilon;
    if (!(eps >= 0.0f)) return kn_error(KN_ERR_INVALID_MODEL, "%s: epsilon must be >= 0", node->op_type);
    if (rows > 0x7fffffffLL) return kn_error(KN_ERR_UNSUPPORTED, "%s: %lld rows", node->op_type, (long long)rows);
    kn_tensor *mo = n_out > 1 ? out[1] : NULL, *io = n_out > 2 ? out[2] : NULL, *so = n_out > 3 ? out[3] : NULL;
    if (mo && mo->dtype != KN_F32) return kn_err_dtype(node, mo);
    if (io && io->dtype != KN_F32) return kn_err_dtype(node, io);
    sn_args a = {out[0]->data,
                 so ? so->data : NULL,
                 mo ? (float *)mo->data : NULL,
                 io ? (float *)io->data : NULL,
                 x->data,
                 skip->data,
                 gamma->data,
                 beta ? beta->data : NULL,
                 bias ? bias->data : NULL,
                 rows,
                 H,
                 skip_rows,
                 eps};
    KN_TRY(sn_dispatch1<RMS>(node, x, a, kn_cuda_s(ctx)));
    KN_CUDA_LAUNCHED(node, "skip normalization kernel");
    return NULL;
}

KN_CUDA_KERNEL(MsSkipLayerNormalization) { return skip_norm<false>(ctx, node, in, n_in, out, n_out); }
KN_CUDA_KERNEL(MsSkipSimplifiedLayerNormalization) { return skip_norm<true>(ctx, node, in, n_in, out, n_out); }

// SimplifiedLayerNormalization (X, scale): rows from `axis` on; Y in the scale's type, X in its own.
template <class TX> static void rms_dispatch(kn_dtype tg, const sn_args &a, cudaStream_t s) {
    switch (tg) {
    case KN_F32: sn_launch<TX, float, float, true>(a, s); break;
    case KN_F16: sn_launch<TX, __half, __half, true>(a, s); break;
    default: sn_launch<TX, __nv_bfloat16, __nv_bfloat16, true>(a, s); break;
    }
}

KN_CUDA_KERNEL(SimplifiedLayerNormalization) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_tensor *x = in[0], *sc = n_in > 1 ? in[1] : NULL;
    if (!sc) return kn_error(KN_ERR_INVALID_MODEL, "SimplifiedLayerNormalization: scale is required");
    if (!kn_cuda_float(x->dtype)) return kn_err_dtype(node, x);
    if (!kn_cuda_float(sc->dtype)) return kn_err_dtype(node, sc);
    const kn_params_layernorm *p = KN_PARAMS(node, layernorm);
    int axis;
    KN_TRY(kn_norm_axis(p->axis, x->ndim, node, &axis));
    int64_t rows = 1, H = 1;
    for (int i = 0; i < x->ndim; i++) {
        if (i < axis) rows *= x->dims[i];
        else H *= x->dims[i];
    }
    if (kn_numel(sc) != H)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "SimplifiedLayerNormalization: scale %s must hold the %lld values normalised in X %s",
                        kn_tensor_desc(sc, b0, sizeof b0), (long long)H, kn_tensor_desc(x, b1, sizeof b1));
    kn_tensor *io = n_out > 1 ? out[1] : NULL;
    if (io && io->dtype != KN_F32) return kn_err_dtype(node, io);
    if (rows == 0 || H == 0) return NULL;
    if (rows > 0x7fffffffLL)
        return kn_error(KN_ERR_UNSUPPORTED, "SimplifiedLayerNormalization: %lld rows", (long long)rows);
    sn_args a = {
        out[0]->data, NULL,      NULL, io ? (float *)io->data : NULL, x->data, NULL, sc->data, NULL, NULL, rows, H,
        rows,         p->epsilon};
    cudaStream_t s = kn_cuda_s(ctx);
    switch (x->dtype) {
    case KN_F32: rms_dispatch<float>(sc->dtype, a, s); break;
    case KN_F16: rms_dispatch<__half>(sc->dtype, a, s); break;
    default: rms_dispatch<__nv_bfloat16>(sc->dtype, a, s); break;
    }
    KN_CUDA_LAUNCHED(node, "SimplifiedLayerNormalization kernel");
    return NULL;
}

// Skip forms: input, skip, gamma, beta, bias of one float type. SimplifiedLayerNormalization: any
// float X and scale, float32 inv_std_var (a float64 stash stays on the CPU).
bool kn_cuda_skipnorm_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 2 || !in[0] || !in[1] || !kn_cuda_float(in[0]->dtype)) return false;
    if (n->op == KN_OP_SimplifiedLayerNormalization)
        return kn_cuda_float(in[1]->dtype) && KN_PARAMS(n, layernorm)->stash_type != KN_F64;
    if (n_in < 3 || !in[2]) return false;
    for (int k = 1; k < n_in; k++)
        if (in[k] && in[k]->dtype != in[0]->dtype) return false;
    return true;
}

// cucover: ONNX RMSNormalization (opset 23: X, scale; axis, epsilon, stash_type; Y only), which the
// torch exporter writes for RMSNorm at opset 23, is SimplifiedLayerNormalization's math with the
// same decoded params (layernorm family); taken on the device where its output type is X's, i.e.
// X and scale of one float type, and scale holds the normalised values (no broadcast scale).
KN_CUDA_KERNEL(RMSNormalization) { return kn_cuda_SimplifiedLayerNormalization(ctx, node, in, n_in, out, n_out); }

bool kn_cuda_rmsnorm_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 2 || !in[0] || !in[1] || !kn_cuda_float(in[0]->dtype) || in[1]->dtype != in[0]->dtype) return false;
    const kn_params_layernorm *p = KN_PARAMS(n, layernorm);
    int axis = p->axis < 0 ? p->axis + in[0]->ndim : p->axis;
    if (axis < 0 || axis >= in[0]->ndim || p->stash_type == KN_F64) return false;
    int64_t H = 1;
    for (int i = axis; i < in[0]->ndim; i++) H *= in[0]->dims[i];
    return kn_numel(in[1]) == H;
}
