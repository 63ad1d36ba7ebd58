// Block-quantised weights on the device: com.microsoft MatMulNBits (Y = A x dequant(B)^T + bias, B
// [N, blocks, block_size * bits / 8] with 4-bit values low nibble first) and GatherBlockQuantized.
// MatMulNBits never makes the float weight matrix: a product of few rows (decode, M <= 4) is one
// warp per output column streaming the column's packed bytes once for all rows; a larger one is a
// tiled GEMM whose B tile is dequantised into shared memory as it is loaded. A weight is
// fmaf(q, scale, -zero_point * scale) as on the CPU (kernels/cpu/nbits.c), so dequantised values
// agree bit for bit and only the summation order differs. accuracy_level is accepted and the
// product computed in float32 at every level, as ONNX Runtime's CUDA provider ignores it (the CPU
// kernel follows ONNX Runtime's CPU at level 4: A quantised to int8 per block, kernels/cpu/nbits.h).
#include "kernels/cuda/cuda_common.h"
extern "C" {
#include "graph/op_helpers.h"
#include "kernels/cpu/nbits.h"
#include "kernels/cpu/quant_map.h"
}

// Block blk of column n: its scale and offset (-zero_point * scale). Zero points are packed uint8
// (zs bytes per column), the scales' type, or absent (the middle of the range).
template <class T> struct nb_quant {
    const uint8_t *b;
    const T *sc;
    const uint8_t *zp8;
    const T *zpt;
    int64_t nb, blob, zs, bs;
    int bits;
};

template <class T>
__device__ static inline void nb_block(const nb_quant<T> &q, int64_t n, int64_t blk, float *s, float *off) {
    float sv = kn_num<T>::ld(q.sc[n * q.nb + blk]), z;
    if (q.zp8) {
        int zb = q.zp8[n * q.zs + (q.bits == 4 ? blk / 2 : blk)];
        z = (float)(q.bits == 4 ? (zb >> ((blk & 1) * 4)) & 15 : zb);
    } else if (q.zpt) {
        z = kn_num<T>::ld(q.zpt[n * q.nb + blk]);
    } else {
        z = (float)(1 << (q.bits - 1));
    }
    *s = sv;
    *off = -z * sv;
}

// ---- decode: M <= 4 rows, one warp per column ----
// Each lane reads 32-bit words of the column (a word never straddles a block: blob is a multiple
// of 8 bytes), unpacks 8 (4-bit) or 4 (8-bit) weights and multiplies them with every row of A.
#define NB_GEMV_WARPS 8
#define NB_MAX_M 4
template <class T>
__global__ void nb_gemv_kernel(T *y, const T *a, const T *bias, nb_quant<T> q, int64_t M, int64_t N, int64_t K) {
    int lane = threadIdx.x & 31;
    int64_t n = (int64_t)blockIdx.x * NB_GEMV_WARPS + (threadIdx.x >> 5);
    if (n >= N) return; // the whole warp leaves together
    const uint32_t *col = (const uint32_t *)(q.b + n * q.nb * q.blob);
    int64_t words = q.nb * q.blob / 4, per_word = q.bits == 4 ? 8 : 4;
    float acc[NB_MAX_M] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t w = lane; w < words; w += 32) {
        int64_t k0 = w * per_word, blk = k0 / q.bs;
        if (k0 >= K) break;
        float s, off;
        nb_block(q, n, blk, &s, &off);
        uint32_t word = col[w];
        for (int64_t i = 0; i < per_word; i++) {
            int64_t k = k0 + i;
            if (k >= K) break;
            int qv = q.bits == 4 ? (int)((word >> (4 * i)) & 15u) : (int)((word >> (8 * i)) & 255u);
            float wv = fmaf((float)qv, s, off);
            for (int64_t m = 0; m < M; m++) acc[m] += kn_num<T>::ld(a[m * K + k]) * wv;
        }
    }
    for (int64_t m = 0; m < M; m++) {
        float v = acc[m];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) {
            if (bias) v += kn_num<T>::ld(bias[n]);
            y[m * N + n] = kn_num<T>::st(v);
        }
    }
}

// ---- prefill: 64 x 64 output tiles, 256 threads of 4 x 4 each, K in steps of 32 ----
#define NB_BM 64
#define NB_BN 64
#define NB_BK 32
#define NB_PAD 4
template <class T>
__global__ void nb_gemm_kernel(T *y, const T *a, const T *bias, nb_quant<T> q, int64_t M, int64_t N, int64_t K) {
    KN_SHARED(float, As, NB_BK *(NB_BM + NB_PAD)); // As[k][m]: A's tile, transposed
    KN_SHARED(float, Bs, NB_BK *(NB_BN + NB_PAD)); // Bs[k][n]: the dequantised weights
    int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    int64_t m0 = (int64_t)blockIdx.y * NB_BM, n0 = (int64_t)blockIdx.x * NB_BN;
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += NB_BK) {
        // consecutive threads take consecutive k of one row (A) or one column (B): coalesced
        for (int e = tid; e < NB_BM * NB_BK; e += blockDim.x) {
            int r = e / NB_BK, kk = e % NB_BK;
            int64_t m = m0 + r, k = k0 + kk;
            As[kk * (NB_BM + NB_PAD) + r] = m < M && k < K ? kn_num<T>::ld(a[m * K + k]) : 0.0f;
        }
        for (int e = tid; e < NB_BN * NB_BK; e += blockDim.x) {
            int c = e / NB_BK, kk = e % NB_BK;
            int64_t n = n0 + c, k = k0 + kk;
            float wv = 0.0f;
            if (n < N && k < K) {
                int64_t blk = k / q.bs, i = k % q.bs;
                const uint8_t *p = q.b + (n * q.nb + blk) * q.blob;
                int qv = q.bits == 4 ? (p[i / 2] >> ((i & 1) * 4)) & 15 : p[i];
                float s, off;
                nb_block(q, n, blk, &s, &off);
                wv = fmaf((float)qv, s, off);
            }
            Bs[kk * (NB_BN + NB_PAD) + c] = wv;
        }
        __syncthreads();
        for (int kk = 0; kk < NB_BK; kk++) {
            float av[4], bv[4];
            for (int i = 0; i < 4; i++) av[i] = As[kk * (NB_BM + NB_PAD) + ty * 4 + i];
            for (int j = 0; j < 4; j++) bv[j] = Bs[kk * (NB_BN + NB_PAD) + tx * 4 + j];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; i++) {
        int64_t m = m0 + ty * 4 + i;
        if (m >= M) continue;
        for (int j = 0; j < 4; j++) {
            int64_t n = n0 + tx * 4 + j;
            if (n >= N) continue;
            float v = acc[i][j];
            if (bias) v += kn_num<T>::ld(bias[n]);
            y[m * N + n] = kn_num<T>::st(v);
        }
    }
}

template <class T>
static void nb_launch(kn_tensor *y, const kn_tensor *a, const kn_tensor *bias, const nb_quant<T> &q, int64_t M,
                      int64_t N, int64_t K, cudaStream_t s) {
    const T *bp = bias ? (const T *)bias->data : (const T *)NULL;
    if (M <= NB_MAX_M) {
        unsigned g = (unsigned)((N + NB_GEMV_WARPS - 1) / NB_GEMV_WARPS);
        KN_LAUNCH(nb_gemv_kernel<T>, g, NB_GEMV_WARPS * 32, 0, s, (T *)y->data, (const T *)a->data, bp, q, M, N, K);
    } else {
        dim3 g((unsigned)((N + NB_BN - 1) / NB_BN), (unsigned)((M + NB_BM - 1) / NB_BM));
        KN_LAUNCH(nb_gemm_kernel<T>, g, 256, 0, s, (T *)y->data, (const T *)a->data, bp, q, M, N, K);
    }
}

template <class T>
static nb_quant<T> nb_quant_of(const kn_params_ms_nbits *p, const kn_tensor *b, const kn_tensor *sc,
                               const kn_tensor *zp) {
    nb_quant<T> q;
    q.b = (const uint8_t *)b->data;
    q.sc = (const T *)sc->data;
    q.zp8 = zp && zp->dtype == KN_U8 ? (const uint8_t *)zp->data : NULL;
    q.zpt = zp && zp->dtype != KN_U8 ? (const T *)zp->data : NULL;
    q.bs = p->block_size;
    q.nb = (p->K + p->block_size - 1) / p->block_size;
    q.blob = p->block_size * p->bits / 8;
    q.zs = (q.nb * p->bits + 7) / 8;
    q.bits = (int)p->bits;
    return q;
}

KN_CUDA_KERNEL(MsMatMulNBits) {
    (void)n_out;
    char b0[KN_DESC_LEN];
    const kn_params_ms_nbits *p = KN_PARAMS(node, ms_nbits);
#define NB_IN(i) (n_in > (i) ? in[i] : NULL)
    const kn_tensor *a = in[0], *b = NB_IN(1), *sct = NB_IN(2), *zpt = NB_IN(3), *bias = NB_IN(5);
    KN_TRY(kn_nbits_check(node, b, sct, zpt, NB_IN(4)));
#undef NB_IN
    int64_t K = p->K, N = p->N;
    if (a->ndim < 1 || a->dims[a->ndim - 1] != K)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "MatMulNBits: A %s must end in K=%lld",
                        kn_tensor_desc(a, b0, sizeof b0), (long long)K);
    if (bias && kn_numel(bias) != N)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "MatMulNBits: bias %s must be [N=%lld]",
                        kn_tensor_desc(bias, b0, sizeof b0), (long long)N);
    int64_t M = kn_numel(a) / K;
    if (M == 0) return NULL;
    if (M > 65535LL * NB_BM) return kn_error(KN_ERR_UNSUPPORTED, "MatMulNBits: %lld rows on cuda", (long long)M);
    cudaStream_t s = kn_cuda_s(ctx);
    switch (a->dtype) {
    case KN_F32: nb_launch<float>(out[0], a, bias, nb_quant_of<float>(p, b, sct, zpt), M, N, K, s); break;
    case KN_F16: nb_launch<__half>(out[0], a, bias, nb_quant_of<__half>(p, b, sct, zpt), M, N, K, s); break;
    case KN_BF16:
        nb_launch<__nv_bfloat16>(out[0], a, bias, nb_quant_of<__nv_bfloat16>(p, b, sct, zpt), M, N, K, s);
        break;
    default: return kn_err_dtype(node, a);
    }
    KN_CUDA_LAUNCHED(node, "MatMulNBits kernel");
    return NULL;
}

// A, scales, float zero points and bias of one float type; packed uint8 zero points; no g_idx.
bool kn_cuda_nbits_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    (void)n;
    if (n_in < 3 || !in[0] || !in[1] || !in[2] || !kn_cuda_float(in[0]->dtype) || in[1]->dtype != KN_U8) return false;
    kn_dtype t = in[0]->dtype;
    if (in[2]->dtype != t) return false;
    if (n_in > 3 && in[3] && in[3]->dtype != KN_U8 && in[3]->dtype != t) return false;
    if (n_in > 4 && in[4]) return false;
    return n_in <= 5 || !in[5] || in[5]->dtype == t;
}

// ---- GatherBlockQuantized ----

struct gbq_geom {
    int64_t n_idx, gdim, inner, bs, qstride, qdim, sqdim, slast;
    bool packed, data_i4, zp_i4;
    float zdef;
};

// Element f (logical, row-major) of a block-quantised tensor: packed uint8 holds two 4-bit values
// (low nibble first); uint8, uint4 and int4 (one value a byte, as kiln holds them) otherwise.
__device__ static inline int gbq_q(const uint8_t *d, int64_t f, bool packed, bool i4) {
    if (packed) return (d[f / 2] >> ((f & 1) * 4)) & 15;
    return i4 ? (int)(int8_t)d[f] : (int)d[f];
}

// y[outer, n_idx, inner] = (q - zero_point) * scale of data[outer, idx[j], inner]. An index out of
// range zeroes its element and sets the stream's error word (the run fails, as on the CPU).
template <class T, class I>
__global__ void gbq_kernel(T *y, const uint8_t *data, const I *idx, const T *sc, const uint8_t *zp, gbq_geom g,
                           int64_t total, int *err, int code) {
    KN_GRID_STRIDE(t, total) {
        int64_t e = t % g.inner, r = t / g.inner;
        int64_t o = r / g.n_idx, i = (int64_t)idx[r % g.n_idx];
        if (i < 0) i += g.gdim;
        if (i < 0 || i >= g.gdim) {
            y[t] = kn_num<T>::st(0.0f);
            atomicCAS(err, 0, code);
            continue;
        }
        int64_t f = (o * g.gdim + i) * g.inner + e, coord = (f / g.qstride) % g.qdim;
        int64_t sf = (f / (g.qstride * g.qdim)) * (g.sqdim * g.qstride) + (coord / g.bs) * g.qstride + f % g.qstride;
        float s = kn_num<T>::ld(sc[sf]), z = g.zdef;
        if (zp) {
            if (g.packed) {
                int64_t zr = sf / g.slast, zc = sf % g.slast;
                z = (float)((zp[zr * ((g.slast + 1) / 2) + zc / 2] >> ((zc & 1) * 4)) & 15);
            } else {
                z = (float)gbq_q(zp, sf, false, g.zp_i4);
            }
        }
        y[t] = kn_num<T>::st(((float)gbq_q(data, f, g.packed, g.data_i4) - z) * s);
    }
}

template <class T>
static void gbq_launch(kn_tensor *y, const kn_tensor *data, const kn_tensor *idx, const kn_tensor *sc,
                       const kn_tensor *zp, const gbq_geom &g, int64_t total, int *err, int code, cudaStream_t s) {
    unsigned grid = kn_cuda_blocks(total, 256);
    const uint8_t *zd = zp ? (const uint8_t *)zp->data : (const uint8_t *)NULL;
    if (idx->dtype == KN_I64)
        KN_LAUNCH((gbq_kernel<T, int64_t>), grid, 256, 0, s, (T *)y->data, (const uint8_t *)data->data,
                  (const int64_t *)idx->data, (const T *)sc->data, zd, g, total, err, code);
    else
        KN_LAUNCH((gbq_kernel<T, int32_t>), grid, 256, 0, s, (T *)y->data, (const uint8_t *)data->data,
                  (const int32_t *)idx->data, (const T *)sc->data, zd, g, total, err, code);
}

KN_CUDA_KERNEL(MsGatherBlockQuantized) {
    (void)n_out;
    kn_gbq_geom gg;
    KN_TRY(kn_gbq_geometry(node, in, n_in, &gg));
    const kn_params_ms_gbq *p = KN_PARAMS(node, ms_gbq);
    const kn_tensor *data = in[0], *idx = in[1], *sc = in[2], *zp = n_in > 3 ? in[3] : NULL;
    gbq_geom g;
    g.n_idx = gg.n_idx;
    g.gdim = gg.gdim;
    g.inner = gg.inner;
    g.bs = gg.bs;
    g.qstride = gg.qstride;
    g.qdim = gg.qdim;
    g.sqdim = gg.sqdim;
    g.slast = gg.slast;
    g.packed = gg.packed;
    g.data_i4 = data->dtype == KN_I4;
    g.zp_i4 = zp && zp->dtype == KN_I4;
    // without zero points: the middle of uint8's range, 0 for int4 and uint4 (as ONNX Runtime)
    g.zdef = data->dtype == KN_U8 ? (float)(1 << (p->bits - 1)) : 0.0f;
    int64_t outer = gg.outer;
    int64_t total = outer * g.n_idx * g.inner;
    if (total <= 0) return NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    int *err = kn_cuda_st(ctx)->dev_err, code = kn_cuda_err_code(ctx, node);
    switch (sc->dtype) {
    case KN_F32: gbq_launch<float>(out[0], data, idx, sc, zp, g, total, err, code, s); break;
    case KN_F16: gbq_launch<__half>(out[0], data, idx, sc, zp, g, total, err, code, s); break;
    case KN_BF16: gbq_launch<__nv_bfloat16>(out[0], data, idx, sc, zp, g, total, err, code, s); break;
    default: return kn_err_dtype(node, sc);
    }
    KN_CUDA_LAUNCHED(node, "GatherBlockQuantized kernel");
    return NULL;
}

// uint8 (packed or 8-bit), uint4 or int4 data; int32/int64 indices; float scales.
bool kn_cuda_gbq_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    (void)n;
    if (n_in < 3 || !in[0] || !in[1] || !in[2] || !kn_cuda_float(in[2]->dtype)) return false;
    kn_dtype d = in[0]->dtype;
    if (d != KN_U8 && d != KN_U4 && d != KN_I4) return false;
    return in[1]->dtype == KN_I32 || in[1]->dtype == KN_I64;
}

// ---- int8 quantisation: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger ----
// Exact integer results as the CPU kernels (kernels/cpu/quant.c, linalg_misc.c): division and
// multiplication by the scale in float32, rounding half to even (rintf), saturation to the target.

// The integer targets (sub-byte ones one value a byte, as kiln stores them) and their ranges.
static bool q_int_target(kn_dtype t, double *lo, double *hi) {
    switch (t) {
    case KN_U8: *lo = 0, *hi = 255; return true;
    case KN_I8: *lo = -128, *hi = 127; return true;
    case KN_U16: *lo = 0, *hi = 65535; return true;
    case KN_I16: *lo = -32768, *hi = 32767; return true;
    case KN_U4: *lo = 0, *hi = 15; return true;
    case KN_I4: *lo = -8, *hi = 7; return true;
    default: return false;
    }
}

// Element i's scale and zero point (0 without one): the per-tensor, per-axis or blocked lookup both
// directions share. Every zero point here fits a float exactly (at most 16 bits).
template <class S, class Q>
__device__ static inline float q_scale_zp(const kn_qmap &m, int64_t i, const S *scale, const Q *zp, float *z) {
    int64_t si = kn_qmap_index(&m, i);
    *z = zp ? (float)zp[si] : 0.0f;
    return kn_num<S>::ld(scale[si]);
}

// y = saturate(rint(x / scale) + zero_point), NaN quantised to the zero point
template <class T, class S, class Q>
__global__ void quantize_kernel(Q *y, const T *x, const S *scale, const Q *zp, kn_qmap m, int64_t n, double lo,
                                double hi) {
    KN_GRID_STRIDE(i, n) {
        float z, s = q_scale_zp(m, i, scale, zp, &z);
        float v = kn_num<T>::ld(x[i]) / s;
        double r = (isnan(v) ? 0.0 : (double)rintf(v)) + (double)z;
        r = r < lo ? lo : r > hi ? hi : r;
        y[i] = (Q)(int64_t)r;
    }
}

// y = (x - zero_point) * scale: the difference in float (exactly, for these widths), one rounding
template <class Q, class S, class T>
__global__ void dequantize_kernel(T *y, const Q *x, const S *scale, const Q *zp, kn_qmap m, int64_t n) {
    KN_GRID_STRIDE(i, n) {
        float z, s = q_scale_zp(m, i, scale, zp, &z);
        y[i] = kn_num<T>::st(((float)x[i] - z) * s);
    }
}

// The integer element type of a quantised tensor (sub-byte types held one per byte).
#define Q_DISPATCH(dt, Q, ...) \
    switch (dt) { \
    case KN_U8: \
    case KN_U4: { \
        typedef uint8_t Q; \
        __VA_ARGS__; \
        break; \
    } \
    case KN_I8: \
    case KN_I4: { \
        typedef int8_t Q; \
        __VA_ARGS__; \
        break; \
    } \
    case KN_U16: { \
        typedef uint16_t Q; \
        __VA_ARGS__; \
        break; \
    } \
    case KN_I16: { \
        typedef int16_t Q; \
        __VA_ARGS__; \
        break; \
    } \
    default: break; \
    }
#define F_DISPATCH(dt, T, ...) \
    switch (dt) { \
    case KN_F32: { \
        typedef float T; \
        __VA_ARGS__; \
        break; \
    } \
    case KN_F16: { \
        typedef __half T; \
        __VA_ARGS__; \
        break; \
    } \
    default: { \
        typedef __nv_bfloat16 T; \
        __VA_ARGS__; \
        break; \
    } \
    }

// QuantizeLinear (quantize) and DequantizeLinear: one body, the directions differing only in which
// of x and y is the integer tensor and in the kernel launched. The float tensors' dtype errors
// come in input order (x then scale; scale then y), as each op reported them.
static kn_status *q_linear(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                           kn_tensor *const *out, bool quantize) {
    const kn_tensor *x = in[0], *scale = in[1], *zp = n_in > 2 ? in[2] : NULL;
    kn_tensor *y = out[0];
    const kn_tensor *q = quantize ? y : x, *f0 = quantize ? x : scale, *f1 = quantize ? scale : y;
    double lo, hi;
    if (!q_int_target(q->dtype, &lo, &hi)) return kn_err_dtype(node, q);
    if (!kn_cuda_float(f0->dtype)) return kn_err_dtype(node, f0);
    if (!kn_cuda_float(f1->dtype)) return kn_err_dtype(node, f1);
    if (zp && zp->dtype != q->dtype) return kn_err_dtype(node, zp);
    kn_qmap m;
    KN_TRY(kn_qmap_make(node, x, scale, zp, &m));
    int64_t n = kn_numel(x);
    if (n <= 0) return NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
    if (quantize) {
        F_DISPATCH(x->dtype, T,
                   F_DISPATCH(scale->dtype, S,
                              Q_DISPATCH(y->dtype, Q,
                                         KN_LAUNCH((quantize_kernel<T, S, Q>), g, 256, 0, s, (Q *)y->data,
                                                   (const T *)x->data, (const S *)scale->data,
                                                   zp ? (const Q *)zp->data : (const Q *)NULL, m, n, lo, hi))));
        KN_CUDA_LAUNCHED(node, "QuantizeLinear kernel");
    } else {
        F_DISPATCH(y->dtype, T,
                   F_DISPATCH(scale->dtype, S,
                              Q_DISPATCH(x->dtype, Q,
                                         KN_LAUNCH((dequantize_kernel<Q, S, T>), g, 256, 0, s, (T *)y->data,
                                                   (const Q *)x->data, (const S *)scale->data,
                                                   zp ? (const Q *)zp->data : (const Q *)NULL, m, n))));
        KN_CUDA_LAUNCHED(node, "DequantizeLinear kernel");
    }
    return NULL;
}

KN_CUDA_KERNEL(QuantizeLinear) {
    (void)n_out;
    return q_linear(ctx, node, in, n_in, out, true);
}

KN_CUDA_KERNEL(DequantizeLinear) {
    (void)n_out;
    return q_linear(ctx, node, in, n_in, out, false);
}

// Integer targets and sources up to 16 bits; float inputs, scales and outputs (float64, int32 and
// the float8/float4 formats stay on the CPU).
bool kn_cuda_quant_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    (void)n;
    double lo, hi;
    if (n_in < 2 || !in[0] || !in[1] || !kn_cuda_float(in[1]->dtype)) return false;
    const kn_tensor *zp = n_in > 2 ? in[2] : NULL;
    if (n->op == KN_OP_QuantizeLinear) {
        if (!kn_cuda_float(in[0]->dtype)) return false;
        // the target, as the shape rule picks it: the zero point's type, else output_dtype, else uint8
        int64_t od = KN_PARAMS(n, quant)->output_dtype;
        kn_dtype t = zp ? zp->dtype : od ? (kn_dtype)od : KN_U8;
        return q_int_target(t, &lo, &hi);
    }
    return q_int_target(in[0]->dtype, &lo, &hi) && (!zp || zp->dtype == in[0]->dtype);
}

// DynamicQuantizeLinear in one block: the range (widened to include 0) by a block reduction, then
// scale = range / 255, the zero point and every element quantised by the same threads. The input
// is an activation the block streams twice; a real GPU would want a grid reduction for large ones.
#define DQL_THREADS 1024
__global__ void dql_kernel(uint8_t *y, float *scale_out, uint8_t *zp_out, const float *x, int64_t n) {
    KN_SHARED(float, smin, 32);
    KN_SHARED(float, smax, 32);
    float mn = 0.0f, mx = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        float v = x[i];
        if (v < mn) mn = v;
        if (v > mx) mx = v;
    }
    for (int o = 16; o > 0; o >>= 1) {
        float a = __shfl_xor_sync(0xffffffffu, mn, o), b = __shfl_xor_sync(0xffffffffu, mx, o);
        mn = a < mn ? a : mn;
        mx = b > mx ? b : mx;
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    if (lane == 0) {
        smin[warp] = mn;
        smax[warp] = mx;
    }
    __syncthreads();
    mn = 0.0f;
    mx = 0.0f;
    for (int w = 0; w < nw; w++) {
        float a = smin[w], b = smax[w];
        mn = a < mn ? a : mn;
        mx = b > mx ? b : mx;
    }
    float scale = (mx == mn ? 1.0f : mx - mn) / 255.0f;
    float zpf = 0.0f - mn / scale;
    zpf = zpf < 0.0f ? 0.0f : zpf > 255.0f ? 255.0f : zpf;
    float zp = rintf(zpf);
    if (threadIdx.x == 0) {
        if (scale_out) *scale_out = scale;
        if (zp_out) *zp_out = (uint8_t)zp;
    }
    for (int64_t i = threadIdx.x; y && i < n; i += blockDim.x) {
        float v = rintf(x[i] / scale) + zp;
        if (isnan(v)) v = 0.0f;
        y[i] = (uint8_t)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
    }
}

KN_CUDA_KERNEL(DynamicQuantizeLinear) {
    const kn_tensor *x = in[0];
    (void)n_in;
    if (x->dtype != KN_F32) return kn_err_dtype(node, x);
    kn_tensor *y = n_out > 0 ? out[0] : NULL, *so = n_out > 1 ? out[1] : NULL, *zo = n_out > 2 ? out[2] : NULL;
    KN_LAUNCH(dql_kernel, 1, DQL_THREADS, 0, kn_cuda_s(ctx), y ? (uint8_t *)y->data : (uint8_t *)NULL,
              so ? (float *)so->data : (float *)NULL, zo ? (uint8_t *)zo->data : (uint8_t *)NULL,
              (const float *)x->data, kn_numel(x));
    KN_CUDA_LAUNCHED(node, "DynamicQuantizeLinear kernel");
    return NULL;
}

bool kn_cuda_dql_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    (void)n;
    return n_in >= 1 && in[0] && in[0]->dtype == KN_F32;
}

// MatMulInteger: C[b] = (A[b] - a_zp) (B[b] - b_zp) in int32 with wrap-around, numpy batch
// broadcasting; 64 x 64 tiles, K in steps of 32, the operands less their zero points staged in
// shared memory as int32 (exact: 8-bit values less 8-bit zero points fit 9 bits).
struct mmi_geom {
    int64_t M, N, K;
    int nbd;
    int64_t bdims[KN_MAX_DIMS], sa[KN_MAX_DIMS], sb[KN_MAX_DIMS];
};

// The epilogues: MatMulInteger's int32 product as it is; QLinearMatMul's requantised to 8 bits.
struct mmi_store_i32 {
    int32_t *c;
    __device__ void operator()(int64_t o, int64_t m, int64_t n, uint32_t acc) const {
        (void)m;
        (void)n;
        c[o] = (int32_t)acc;
    }
};
// y = saturate(rint(acc * (a_scale[m] * b_scale[n] / y_scale)) + y_zero_point), the multiplier in
// float32 and the product in double, as the CPU (and the ONNX reference) compute it.
template <class Y> struct mmi_store_q {
    Y *y;
    const float *as, *bs;
    bool as_rows, bs_cols;
    float ys;
    double yzp, lo, hi;
    __device__ void operator()(int64_t o, int64_t m, int64_t n, uint32_t acc) const {
        float mul = as[as_rows ? m : 0] * bs[bs_cols ? n : 0] / ys;
        double v = rint((double)(int32_t)acc * (double)mul) + yzp;
        v = v < lo ? lo : v > hi ? hi : v;
        y[o] = (Y)(int64_t)v;
    }
};

template <class A, class B, class E>
__global__ void mmi_kernel(E store, const A *a, const B *b, const A *azp, bool azp_rows, const B *bzp, bool bzp_cols,
                           mmi_geom g) {
    KN_SHARED(int32_t, As, NB_BK * (NB_BM + NB_PAD));
    KN_SHARED(int32_t, Bs, NB_BK * (NB_BN + NB_PAD));
    int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    int64_t m0 = (int64_t)blockIdx.y * NB_BM, n0 = (int64_t)blockIdx.x * NB_BN, bi = blockIdx.z, r = bi, ia = 0, ib = 0;
    for (int d = g.nbd - 1; d >= 0; d--) {
        int64_t x = r % g.bdims[d];
        r /= g.bdims[d];
        ia += x * g.sa[d];
        ib += x * g.sb[d];
    }
    const A *am = a + ia * g.M * g.K;
    const B *bm = b + ib * g.K * g.N;
    uint32_t acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0;
    for (int64_t k0 = 0; k0 < g.K; k0 += NB_BK) {
        for (int e = tid; e < NB_BM * NB_BK; e += blockDim.x) {
            int rr = e / NB_BK, kk = e % NB_BK;
            int64_t m = m0 + rr, k = k0 + kk;
            int32_t v = 0;
            if (m < g.M && k < g.K) v = (int32_t)am[m * g.K + k] - (azp ? (int32_t)azp[azp_rows ? m : 0] : 0);
            As[kk * (NB_BM + NB_PAD) + rr] = v;
        }
        for (int e = tid; e < NB_BN * NB_BK; e += blockDim.x) {
            int kk = e / NB_BN, cc = e % NB_BN; // consecutive threads along a row of B: coalesced
            int64_t nn = n0 + cc, k = k0 + kk;
            int32_t v = 0;
            if (nn < g.N && k < g.K) v = (int32_t)bm[k * g.N + nn] - (bzp ? (int32_t)bzp[bzp_cols ? nn : 0] : 0);
            Bs[kk * (NB_BN + NB_PAD) + cc] = v;
        }
        __syncthreads();
        for (int kk = 0; kk < NB_BK; kk++) {
            int32_t av[4], bv[4];
            for (int i = 0; i < 4; i++) av[i] = As[kk * (NB_BM + NB_PAD) + ty * 4 + i];
            for (int j = 0; j < 4; j++) bv[j] = Bs[kk * (NB_BN + NB_PAD) + tx * 4 + j];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] += (uint32_t)av[i] * (uint32_t)bv[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; i++) {
        int64_t m = m0 + ty * 4 + i;
        if (m >= g.M) continue;
        for (int j = 0; j < 4; j++) {
            int64_t nn = n0 + tx * 4 + j;
            if (nn < g.N) store((bi * g.M + m) * g.N + nn, m, nn, acc[i][j]);
        }
    }
}

// The batch geometry (numpy rules over the dims before the last two; 1-D operands promoted).
static kn_status *mmi_geom_init(const kn_node *node, const kn_tensor *a, const kn_tensor *b, mmi_geom *g,
                                int64_t *nbatch) {
    char ba[KN_DESC_LEN], bb[KN_DESC_LEN];
    memset(g, 0, sizeof *g);
    if (a->ndim < 1 || b->ndim < 1) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: scalar operand", node->op_type);
    g->M = a->ndim == 1 ? 1 : a->dims[a->ndim - 2];
    g->K = a->dims[a->ndim - 1];
    int64_t kb = b->ndim == 1 ? b->dims[0] : b->dims[b->ndim - 2];
    g->N = b->ndim == 1 ? 1 : b->dims[b->ndim - 1];
    if (kb != g->K)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: inner dims differ: %s x %s", node->op_type,
                        kn_tensor_desc(a, ba, sizeof ba), kn_tensor_desc(b, bb, sizeof bb));
    int nba = a->ndim >= 2 ? a->ndim - 2 : 0, nbb = b->ndim >= 2 ? b->ndim - 2 : 0;
    g->nbd = nba > nbb ? nba : nbb;
    *nbatch = 1;
    int64_t st_a = 1, st_b = 1;
    for (int i = g->nbd - 1; i >= 0; i--) {
        int ia = i - (g->nbd - nba), ib = i - (g->nbd - nbb);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: batch dims do not broadcast: %s x %s", node->op_type,
                            kn_tensor_desc(a, ba, sizeof ba), kn_tensor_desc(b, bb, sizeof bb));
        g->bdims[i] = da > db ? da : db;
        if (da == 0 || db == 0) g->bdims[i] = 0;
        g->sa[i] = da == 1 ? 0 : st_a;
        g->sb[i] = db == 1 ? 0 : st_b;
        st_a *= da;
        st_b *= db;
        *nbatch *= g->bdims[i];
    }
    return NULL;
}

template <class A, class B, class E>
static void mmi_launch(const E &store, const kn_tensor *a, const kn_tensor *b, const kn_tensor *azp,
                       const kn_tensor *bzp, const mmi_geom &g, int64_t nbatch, cudaStream_t s) {
    dim3 grid((unsigned)((g.N + NB_BN - 1) / NB_BN), (unsigned)((g.M + NB_BM - 1) / NB_BM), (unsigned)nbatch);
    KN_LAUNCH((mmi_kernel<A, B, E>), grid, 256, 0, s, store, (const A *)a->data, (const B *)b->data,
              azp ? (const A *)azp->data : (const A *)NULL, azp && kn_numel(azp) > 1,
              bzp ? (const B *)bzp->data : (const B *)NULL, bzp && kn_numel(bzp) > 1, g);
}

// Both operands' signedness; E the epilogue.
template <class E>
static void mmi_dispatch(const E &store, const kn_tensor *a, const kn_tensor *b, const kn_tensor *azp,
                         const kn_tensor *bzp, const mmi_geom &g, int64_t nbatch, cudaStream_t s) {
    bool as = a->dtype == KN_I8, bs = b->dtype == KN_I8;
    if (as && bs) mmi_launch<int8_t, int8_t>(store, a, b, azp, bzp, g, nbatch, s);
    else if (as) mmi_launch<int8_t, uint8_t>(store, a, b, azp, bzp, g, nbatch, s);
    else if (bs) mmi_launch<uint8_t, int8_t>(store, a, b, azp, bzp, g, nbatch, s);
    else mmi_launch<uint8_t, uint8_t>(store, a, b, azp, bzp, g, nbatch, s);
}

// The zero points the tiled kernel takes (none, a scalar, one per row of A / column of B) and its grid.
static kn_status *mmi_check(const kn_node *node, const kn_tensor *azp, const kn_tensor *bzp, const mmi_geom &g,
                            int64_t nbatch) {
    char bz[KN_DESC_LEN];
    if (azp && kn_numel(azp) != 1 && kn_numel(azp) != g.M)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: A zero point %s must be a scalar or [M] on cuda", node->op_type,
                        kn_tensor_desc(azp, bz, sizeof bz));
    if (bzp && kn_numel(bzp) != 1 && kn_numel(bzp) != g.N)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: B zero point %s must be a scalar or [N] on cuda", node->op_type,
                        kn_tensor_desc(bzp, bz, sizeof bz));
    if (nbatch > 65535 || (g.M + NB_BM - 1) / NB_BM > 65535)
        return kn_error(KN_ERR_UNSUPPORTED, "%s: %lld batches of %lld rows on cuda", node->op_type, (long long)nbatch,
                        (long long)g.M);
    return NULL;
}

KN_CUDA_KERNEL(MatMulInteger) {
    (void)n_out;
    const kn_tensor *a = in[0], *b = in[1], *azp = n_in > 2 ? in[2] : NULL, *bzp = n_in > 3 ? in[3] : NULL;
    mmi_geom g;
    int64_t nbatch = 0;
    KN_TRY(mmi_geom_init(node, a, b, &g, &nbatch));
    KN_TRY(mmi_check(node, azp, bzp, g, nbatch));
    if (nbatch * g.M * g.N == 0) return NULL;
    mmi_store_i32 st = {(int32_t *)out[0]->data};
    mmi_dispatch(st, a, b, azp, bzp, g, nbatch, kn_cuda_s(ctx));
    KN_CUDA_LAUNCHED(node, "MatMulInteger kernel");
    return NULL;
}

// 8-bit operands, zero points of their operand's type that are scalars or one per row of A / column
// of B (per-matrix zero points stay on the CPU).
bool kn_cuda_mmi_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    (void)n;
    if (n_in < 2 || !in[0] || !in[1]) return false;
    const kn_tensor *a = in[0], *b = in[1];
    if ((a->dtype != KN_U8 && a->dtype != KN_I8) || (b->dtype != KN_U8 && b->dtype != KN_I8)) return false;
    if (a->ndim < 1 || b->ndim < 1) return false;
    int64_t M = a->ndim == 1 ? 1 : a->dims[a->ndim - 2], N = b->ndim == 1 ? 1 : b->dims[b->ndim - 1];
    const kn_tensor *azp = n_in > 2 ? in[2] : NULL, *bzp = n_in > 3 ? in[3] : NULL;
    if (azp && (azp->dtype != a->dtype || (kn_numel(azp) != 1 && kn_numel(azp) != M))) return false;
    if (bzp && (bzp->dtype != b->dtype || (kn_numel(bzp) != 1 && kn_numel(bzp) != N))) return false;
    return true;
}

// QLinearMatMul (a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp): MatMulInteger's tiles with the
// requantisation in the epilogue. Scales are float32 on the device (a_scale scalar or [M], b_scale
// scalar or [N]); y_scale and y_zero_point are scalars read on the host.
KN_CUDA_KERNEL(QLinearMatMul) {
    (void)n_out;
    char b0[KN_DESC_LEN];
    const kn_tensor *a = in[0], *asc = in[1], *azp = in[2], *b = in[3], *bsc = in[4], *bzp = in[5], *ysc = in[6];
    const kn_tensor *yzp = n_in > 7 ? in[7] : NULL;
    kn_tensor *y = out[0];
    if (y->dtype != KN_U8 && y->dtype != KN_I8) return kn_err_dtype(node, y);
    mmi_geom g;
    int64_t nbatch = 0;
    KN_TRY(mmi_geom_init(node, a, b, &g, &nbatch));
    KN_TRY(mmi_check(node, azp, bzp, g, nbatch));
    if ((kn_numel(asc) != 1 && kn_numel(asc) != g.M) || (kn_numel(bsc) != 1 && kn_numel(bsc) != g.N) ||
        kn_numel(ysc) != 1 || (yzp && kn_numel(yzp) != 1))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "QLinearMatMul: scales or zero points do not fit %s on cuda",
                        kn_tensor_desc(a, b0, sizeof b0));
    if (nbatch * g.M * g.N == 0) return NULL;
    double lo = y->dtype == KN_U8 ? 0 : -128, hi = y->dtype == KN_U8 ? 255 : 127, zp = 0;
    if (yzp) zp = y->dtype == KN_U8 ? (double)*(const uint8_t *)yzp->data : (double)*(const int8_t *)yzp->data;
    float ys = *(const float *)ysc->data;
    cudaStream_t s = kn_cuda_s(ctx);
    if (y->dtype == KN_U8) {
        mmi_store_q<uint8_t> st = {(uint8_t *)y->data,
                                   (const float *)asc->data,
                                   (const float *)bsc->data,
                                   kn_numel(asc) > 1,
                                   kn_numel(bsc) > 1,
                                   ys,
                                   zp,
                                   lo,
                                   hi};
        mmi_dispatch(st, a, b, azp, bzp, g, nbatch, s);
    } else {
        mmi_store_q<int8_t> st = {(int8_t *)y->data,
                                  (const float *)asc->data,
                                  (const float *)bsc->data,
                                  kn_numel(asc) > 1,
                                  kn_numel(bsc) > 1,
                                  ys,
                                  zp,
                                  lo,
                                  hi};
        mmi_dispatch(st, a, b, azp, bzp, g, nbatch, s);
    }
    KN_CUDA_LAUNCHED(node, "QLinearMatMul kernel");
    return NULL;
}

// MatMulInteger's operands and zero points; float32 scales; y_scale and y_zero_point scalars.
bool kn_cuda_qlmm_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 7) return false;
    for (int k = 0; k < 7; k++)
        if (!in[k]) return false;
    const kn_tensor *mi[4] = {in[0], in[3], in[2], in[5]};
    if (!kn_cuda_mmi_supports(n, mi, 4)) return false;
    if (in[1]->dtype != KN_F32 || in[4]->dtype != KN_F32 || in[6]->dtype != KN_F32 || kn_numel(in[6]) != 1)
        return false;
    int64_t M = in[0]->ndim == 1 ? 1 : in[0]->dims[in[0]->ndim - 2];
    int64_t N = in[3]->ndim == 1 ? 1 : in[3]->dims[in[3]->ndim - 1];
    if ((kn_numel(in[1]) != 1 && kn_numel(in[1]) != M) || (kn_numel(in[4]) != 1 && kn_numel(in[4]) != N)) return false;
    return n_in < 8 || !in[7] || ((in[7]->dtype == KN_U8 || in[7]->dtype == KN_I8) && kn_numel(in[7]) == 1);
}
