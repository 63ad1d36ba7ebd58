// Block-quantised weights on the device: com.microsoft MatMulNBits (Y = A x dequant(B)^T + bias, B
// [N, blocks, block_size * bits / 8] with 4-bit values low nibble first) and GatherBlockQuantized.
// MatMulNBits never makes the float weight matrix: a product of few rows (decode, M <= 4) is one
// warp per output column streaming the column's packed bytes once for all rows; a larger one is a
// tiled GEMM whose B tile is dequantised into shared memory as it is loaded. A weight is
// fmaf(q, scale, -zero_point * scale) as on the CPU (kernels/cpu/nbits.c), so dequantised values
// agree bit for bit and only the summation order differs. accuracy_level is accepted and the
// product computed in float32, as the CPU does.
#include "kernels/cuda/cuda_common.h"
extern "C" {
#include "graph/op_helpers.h"
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
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_params_ms_gbq *p = KN_PARAMS(node, ms_gbq);
    const kn_tensor *data = in[0], *idx = n_in > 1 ? in[1] : NULL, *sc = n_in > 2 ? in[2] : NULL;
    const kn_tensor *zp = n_in > 3 ? in[3] : NULL;
    if (!idx || !sc)
        return kn_error(KN_ERR_INVALID_MODEL, "GatherBlockQuantized: data, indices and scales are required");
    bool packed = data->dtype == KN_U8 && p->bits == 4;
    int nd = data->ndim;
    if (nd < 1) return kn_error(KN_ERR_INVALID_ARGUMENT, "GatherBlockQuantized: data must have rank >= 1");
    int64_t ld[KN_MAX_DIMS];
    for (int i = 0; i < nd; i++) ld[i] = data->dims[i];
    if (packed) ld[nd - 1] *= 2;
    int ga, qa;
    KN_TRY(kn_norm_axis(p->gather_axis, nd, node, &ga));
    KN_TRY(kn_norm_axis(p->quantize_axis, nd, node, &qa));
    bool ok = sc->ndim == nd;
    for (int i = 0; ok && i < nd; i++)
        ok = sc->dims[i] == (i == qa ? (ld[i] + p->block_size - 1) / p->block_size : ld[i]);
    if (!ok)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "GatherBlockQuantized: scales %s do not fit data %s with block_size %lld along axis %d",
                        kn_tensor_desc(sc, b0, sizeof b0), kn_tensor_desc(data, b1, sizeof b1),
                        (long long)p->block_size, qa);
    if (zp) {
        bool zok = zp->ndim == nd && zp->dtype == data->dtype;
        for (int i = 0; zok && i < nd; i++)
            zok = zp->dims[i] == (packed && i == nd - 1 ? (sc->dims[i] + 1) / 2 : sc->dims[i]);
        if (!zok)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "GatherBlockQuantized: zero_points %s do not fit scales %s",
                            kn_tensor_desc(zp, b0, sizeof b0), kn_tensor_desc(sc, b1, sizeof b1));
    }
    gbq_geom g;
    g.n_idx = kn_numel(idx);
    int64_t outer = 1;
    g.inner = 1;
    g.qstride = 1;
    for (int i = 0; i < ga; i++) outer *= ld[i];
    for (int i = ga + 1; i < nd; i++) g.inner *= ld[i];
    for (int i = qa + 1; i < nd; i++) g.qstride *= ld[i];
    g.gdim = ld[ga];
    g.bs = p->block_size;
    g.qdim = ld[qa];
    g.sqdim = sc->dims[qa];
    g.slast = sc->dims[nd - 1];
    g.packed = packed;
    g.data_i4 = data->dtype == KN_I4;
    g.zp_i4 = zp && zp->dtype == KN_I4;
    // without zero points: the middle of uint8's range, 0 for int4 and uint4 (as ONNX Runtime)
    g.zdef = data->dtype == KN_U8 ? (float)(1 << (p->bits - 1)) : 0.0f;
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
