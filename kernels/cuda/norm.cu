// LayerNormalization on the device: one block per normalized row (the dims from `axis` on),
// two passes in float (mean, then the centred variance, as the CPU reference), scale and bias
// of the row's shape, optional Mean and InvStdDev outputs. com.microsoft EmbedLayerNormalization
// shares the block reduction: one block per token, its embedding rows summed in float.
#include "kernels/cuda/cuda_common.h"

#define LN_THREADS 256

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
    float mean = kn_cuda_block_sum(s, sh) / (float)cols;
    float v = 0;
    for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) {
        float d = kn_num<T>::ld(xr[k]) - mean;
        v += d * d;
    }
    float var = kn_cuda_block_sum(v, sh) / (float)cols;
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

// The token's embedding sum at column k, in float: recomputed on each pass rather than staged in
// the output, so a 16-bit output is rounded once, as on the CPU.
template <class T> __device__ static float eln_val(const T *w, const T *p, const T *g, int64_t k) {
    float v = kn_num<T>::ld(w[k]) + kn_num<T>::ld(p[k]);
    if (g) v += kn_num<T>::ld(g[k]);
    return v;
}

// One block per token t of [B*S]: LayerNorm(word[ids[t]] + pos[p(t)] + seg[segs[t]]). An id
// outside its table zeroes the token's rows and sets the stream's error word (the run then
// fails, as the CPU kernel does); every thread reads the same ids, so the block branches as one.
template <class T>
__global__ void embed_ln_kernel(T *y, T *sum_out, const int32_t *ids, const int32_t *segs, const int32_t *pos,
                                const T *we, const T *pe, const T *se, const T *gamma, const T *beta, int64_t S,
                                int64_t H, int64_t pos_rows, int64_t nw, int64_t np, int64_t ns, float eps, int *err,
                                int code) {
    KN_SHARED(float, sh, 32);
    int64_t t = blockIdx.x;
    int64_t wi = ids[t], pi = pos ? pos[t % pos_rows] : t % S, si = segs ? segs[t] : 0;
    T *yr = y + t * H;
    T *sr = sum_out ? sum_out + t * H : NULL;
    if (wi < 0 || wi >= nw || pi < 0 || pi >= np || (se && (si < 0 || si >= ns))) {
        for (int64_t k = threadIdx.x; k < H; k += blockDim.x) {
            yr[k] = kn_num<T>::st(0.0f);
            if (sr) sr[k] = kn_num<T>::st(0.0f);
        }
        if (threadIdx.x == 0) atomicCAS(err, 0, code);
        return;
    }
    const T *w = we + wi * H, *p = pe + pi * H, *g = se ? se + si * H : NULL;
    float s = 0;
    for (int64_t k = threadIdx.x; k < H; k += blockDim.x) s += eln_val(w, p, g, k);
    float mean = kn_cuda_block_sum(s, sh) / (float)H;
    float v = 0;
    for (int64_t k = threadIdx.x; k < H; k += blockDim.x) {
        float d = eln_val(w, p, g, k) - mean;
        v += d * d;
    }
    float inv = 1.0f / sqrtf(kn_cuda_block_sum(v, sh) / (float)H + eps);
    for (int64_t k = threadIdx.x; k < H; k += blockDim.x) {
        float e = eln_val(w, p, g, k);
        float o = (e - mean) * inv * kn_num<T>::ld(gamma[k]);
        if (beta) o += kn_num<T>::ld(beta[k]);
        yr[k] = kn_num<T>::st(o);
        if (sr) sr[k] = kn_num<T>::st(e);
    }
}

// mask_index[b]: the count of exact ones in mask row b (ORT's CPU kernel), 0 without a mask.
__global__ void embed_ln_mask_kernel(int32_t *mi, const int32_t *mask, int64_t B, int64_t S) {
    KN_GRID_STRIDE(b, B) {
        int32_t c = 0;
        if (mask)
            for (int64_t s = 0; s < S; s++) c += mask[b * S + s] == 1;
        mi[b] = c;
    }
}

template <class T>
static void eln_launch(kn_tensor *y, kn_tensor *so, const kn_tensor *const *in, const kn_tensor *seg,
                       const kn_tensor *se, const kn_tensor *beta, const kn_tensor *pos, int64_t n, int64_t S,
                       int64_t H, float eps, int *err, int code, cudaStream_t s) {
    const kn_tensor *we = in[2], *pe = in[3];
    int64_t pos_rows = pos && pos->dims[0] == 1 ? S : n;
    KN_LAUNCH((embed_ln_kernel<T>), (unsigned)n, LN_THREADS, 0, s, (T *)y->data, so ? (T *)so->data : (T *)NULL,
              (const int32_t *)in[0]->data, seg ? (const int32_t *)seg->data : (const int32_t *)NULL,
              pos ? (const int32_t *)pos->data : (const int32_t *)NULL, (const T *)we->data, (const T *)pe->data,
              se ? (const T *)se->data : (const T *)NULL, (const T *)in[5]->data,
              beta ? (const T *)beta->data : (const T *)NULL, S, H, pos_rows, we->dims[0], pe->dims[0],
              se ? se->dims[0] : (int64_t)0, eps, err, code);
}

KN_CUDA_KERNEL(MsEmbedLayerNormalization) {
#define ELN_IN(i) (n_in > (i) ? in[i] : NULL)
    const kn_tensor *ids = in[0], *seg = ELN_IN(1), *we = ELN_IN(2), *pe = ELN_IN(3), *se = ELN_IN(4);
    const kn_tensor *gamma = ELN_IN(5), *beta = ELN_IN(6), *mask = ELN_IN(7), *pos = ELN_IN(8);
#undef ELN_IN
    if (!we || !pe || !gamma || ids->ndim != 2 || we->ndim != 2)
        return kn_error(KN_ERR_INVALID_MODEL, "EmbedLayerNormalization: bad inputs on cuda");
    if (seg && !se)
        return kn_error(KN_ERR_INVALID_MODEL, "EmbedLayerNormalization: segment_ids given without segment_embedding");
    int64_t B = ids->dims[0], S = ids->dims[1], H = we->dims[1], n = B * S;
    if (pe->ndim != 2 || pe->dims[1] != H || kn_numel(gamma) != H || (beta && kn_numel(beta) != H) ||
        (se && (se->ndim != 2 || se->dims[1] != H)))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "EmbedLayerNormalization: tables, gamma and beta must share hidden");
    if (pos && (pos->ndim != 2 || pos->dims[1] != S || (pos->dims[0] != B && pos->dims[0] != 1)))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "EmbedLayerNormalization: position_ids must be [batch or 1, seq]");
    if (n > 0x7fffffffLL) return kn_error(KN_ERR_UNSUPPORTED, "EmbedLayerNormalization: %lld tokens", (long long)n);
    cudaStream_t s = kn_cuda_s(ctx);
    kn_tensor *y = out[0], *mi = n_out > 1 ? out[1] : NULL, *so = n_out > 2 ? out[2] : NULL;
    if (mi && B > 0) {
        KN_LAUNCH(embed_ln_mask_kernel, kn_cuda_blocks(B, 128), 128, 0, s, (int32_t *)mi->data,
                  mask ? (const int32_t *)mask->data : (const int32_t *)NULL, B, S);
        KN_CUDA_LAUNCHED(node, "EmbedLayerNormalization mask kernel");
    }
    if (n <= 0 || H <= 0) return NULL;
    float eps = KN_PARAMS(node, ms_embed_ln)->epsilon;
    int *err = kn_cuda_st(ctx)->dev_err, code = kn_cuda_err_code(ctx, node);
    switch (we->dtype) {
    case KN_F32: eln_launch<float>(y, so, in, seg, se, beta, pos, n, S, H, eps, err, code, s); break;
    case KN_F16: eln_launch<__half>(y, so, in, seg, se, beta, pos, n, S, H, eps, err, code, s); break;
    case KN_BF16: eln_launch<__nv_bfloat16>(y, so, in, seg, se, beta, pos, n, S, H, eps, err, code, s); break;
    default: return kn_err_dtype(node, we);
    }
    KN_CUDA_LAUNCHED(node, "EmbedLayerNormalization kernel");
    return NULL;
}

// int32 ids, segments, mask and positions; tables, gamma and beta of one float type.
bool kn_cuda_embed_ln_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    (void)n;
    if (n_in < 6 || !in[0] || !in[2] || !in[3] || !in[5] || in[0]->dtype != KN_I32) return false;
    kn_dtype t = in[2]->dtype;
    if (!kn_cuda_float(t)) return false;
    static const int floats[] = {3, 4, 5, 6}, ints[] = {1, 7, 8};
    for (int k : floats)
        if (k < n_in && in[k] && in[k]->dtype != t) return false;
    for (int k : ints)
        if (k < n_in && in[k] && in[k]->dtype != KN_I32) return false;
    return true;
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
