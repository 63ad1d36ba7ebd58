// Pooling and batch normalisation on the device: MaxPool (with Indices), AveragePool, LpPool, their
// Global forms, BatchNormalization (inference and training mode, its optional statistics outputs)
// and the kiln backward ops MaxPoolGrad, AveragePoolGrad and BatchNormalizationGrad.
// Windowed pools give each output to one thread (consecutive threads on consecutive positions, so
// the window's rows are read coalesced); the global pools and the per-channel statistics give each
// plane or channel to a block, reduced by a fixed tree of shuffles. The backward pools gather
// instead of scatter: each input element visits the windows that contain it (found by inverting
// the stride), so every dx element is written by one thread in a fixed order, with no atomics.
// Sums are in double, as on the CPU, so the results match it to the last rounding.
#include "kernels/cuda/cuda_common.h"
#include "graph/op_helpers.h"

#define POOL_MAX_SP 3
#define POOL_THREADS 256

struct pool_geo {
    int nsp;
    int in[POOL_MAX_SP], out[POOL_MAX_SP], k[POOL_MAX_SP], s[POOL_MAX_SP], d[POOL_MAX_SP], pb[POOL_MAX_SP],
        pe[POOL_MAX_SP];
    int64_t in_n, out_n, k_n;
};

__device__ static inline void pool_coords(const int *n, int nsp, int64_t i, int *c) {
    for (int d = nsp - 1; d >= 0; d--) {
        c[d] = (int)(i % n[d]);
        i /= n[d];
    }
}

// The window of output position oc: its first maximum (PyTorch's and the CPU's choice on ties)
// or its sum, the counts of in-image and in-padded-image taps, and the maximum's offsets.
template <class T>
__device__ static void pool_window(const pool_geo &g, const T *x, const int *oc, bool max, double p, bool nan_first,
                                   double *acc_out, int64_t *best_out, int64_t *best_cm, int64_t *cnt_valid,
                                   int64_t *cnt_pad) {
    double acc = max ? -INFINITY : 0.0;
    int64_t best = -1, bcm = -1, cv = 0, cp = 0;
    for (int64_t kk = 0; kk < g.k_n; kk++) {
        int kc[POOL_MAX_SP], ip[POOL_MAX_SP];
        pool_coords(g.k, g.nsp, kk, kc);
        bool inside = true, in_pad = true;
        for (int d = 0; d < g.nsp; d++) {
            ip[d] = oc[d] * g.s[d] - g.pb[d] + kc[d] * g.d[d];
            if (ip[d] < 0 || ip[d] >= g.in[d]) inside = false;
            if (ip[d] < -g.pb[d] || ip[d] >= g.in[d] + g.pe[d]) in_pad = false;
        }
        if (in_pad) cp++;
        if (!inside) continue;
        cv++;
        if (!x) continue; // the average's backward wants the counts alone
        int64_t off = 0;
        for (int d = 0; d < g.nsp; d++) off = off * g.in[d] + ip[d];
        double v = (double)kn_num<T>::ld(x[off]);
        if (max) {
            if (v > acc || (nan_first && best < 0)) {
                acc = v;
                best = off;
                int64_t cm = 0;
                for (int d = g.nsp - 1; d >= 0; d--) cm = cm * g.in[d] + ip[d];
                bcm = cm;
            }
        } else {
            acc += p > 0 ? pow(fabs(v), p) : v; // LpPool: the sum of |x|^p
        }
    }
    *acc_out = acc;
    *best_out = best;
    if (best_cm) *best_cm = bcm;
    *cnt_valid = cv;
    *cnt_pad = cp;
}

template <class T>
__global__ void pool_kernel(T *y, int64_t *ind, const T *x, pool_geo g, int64_t total, bool max, double p,
                            bool include_pad, bool col_major, bool nan_first) {
    KN_GRID_STRIDE(i, total) {
        int64_t pl = i / g.out_n, o = i % g.out_n;
        int oc[POOL_MAX_SP];
        pool_coords(g.out, g.nsp, o, oc);
        double acc;
        int64_t best, bcm, cv, cp;
        pool_window(g, x + pl * g.in_n, oc, max, p, nan_first, &acc, &best, &bcm, &cv, &cp);
        double r;
        if (max) r = acc;
        else if (p > 0) r = pow(acc, 1.0 / p);
        else {
            int64_t div = include_pad ? cp : cv;
            r = div ? acc / (double)div : 0.0;
        }
        y[i] = kn_num<T>::st((float)r);
        if (ind) ind[i] = best < 0 ? -1 : pl * g.in_n + (col_major ? bcm : best);
    }
}

// Global pools: one block per plane, a strided pass and a fixed tree.
template <class T> __global__ void global_pool_kernel(T *y, const T *x, int64_t n, bool max, double p) {
    KN_SHARED(double, sh, 32);
    const T *xp = x + (int64_t)blockIdx.x * n;
    double acc = max ? -INFINITY : 0.0;
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
        double v = (double)kn_num<T>::ld(xp[k]);
        if (max) acc = v > acc ? v : acc;
        else acc += p > 0 ? pow(fabs(v), p) : v;
    }
    for (int o = 16; o > 0; o >>= 1) {
        double v = __shfl_xor_sync(0xffffffffu, acc, o);
        acc = max ? (v > acc ? v : acc) : acc + v;
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sh[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        int nw = (blockDim.x + 31) >> 5;
        acc = lane < nw ? sh[lane] : (max ? -INFINITY : 0.0);
        for (int o = 16; o > 0; o >>= 1) {
            double v = __shfl_xor_sync(0xffffffffu, acc, o);
            acc = max ? (v > acc ? v : acc) : acc + v;
        }
        if (lane == 0)
            y[blockIdx.x] = kn_num<T>::st((float)(max ? acc : p > 0 ? pow(acc, 1.0 / p) : n ? acc / (double)n : 0.0));
    }
}

// The backward pools: dx[pl][ip] = the sum over the windows containing ip of dy (MaxPoolGrad: where
// ip is the window's first maximum; AveragePoolGrad: divided by the window's divisor).
template <class T>
__global__ void pool_grad_kernel(T *dx, const T *dy, const T *x, pool_geo g, int64_t total, bool max,
                                 bool include_pad) {
    KN_GRID_STRIDE(i, total) {
        int64_t pl = i / g.in_n, ip = i % g.in_n;
        int ic[POOL_MAX_SP];
        pool_coords(g.in, g.nsp, ip, ic);
        double acc = 0.0;
        for (int64_t kk = 0; kk < g.k_n; kk++) {
            int kc[POOL_MAX_SP], oc[POOL_MAX_SP];
            pool_coords(g.k, g.nsp, kk, kc);
            bool ok = true;
            int64_t o = 0;
            for (int d = 0; d < g.nsp && ok; d++) {
                int t = ic[d] + g.pb[d] - kc[d] * g.d[d];
                ok = t >= 0 && t % g.s[d] == 0 && t / g.s[d] < g.out[d];
                oc[d] = ok ? t / g.s[d] : 0;
                o = o * g.out[d] + oc[d];
            }
            if (!ok) continue;
            double wacc;
            int64_t best, cv, cp;
            pool_window(g, max ? x + pl * g.in_n : (const T *)NULL, oc, max, 0.0, true, &wacc, &best, (int64_t *)NULL,
                        &cv, &cp);
            double gv = (double)kn_num<T>::ld(dy[pl * g.out_n + o]);
            if (max) {
                if (best == ip) acc += gv;
            } else {
                int64_t div = include_pad ? cp : cv;
                if (div) acc += gv / (double)div;
            }
        }
        dx[i] = kn_num<T>::st((float)acc);
    }
}

// ---- BatchNormalization ----

// A parameter element of any float type, in double.
__device__ static inline double bn_ld(const void *p, kn_dtype t, int64_t i) {
    if (t == KN_F32) return (double)((const float *)p)[i];
    if (t == KN_F16) return (double)__half2float(((const __half *)p)[i]);
    return (double)__bfloat162float(((const __nv_bfloat16 *)p)[i]);
}
__device__ static inline void bn_st(void *p, kn_dtype t, int64_t i, double v) {
    if (t == KN_F32) ((float *)p)[i] = (float)v;
    else if (t == KN_F16) ((__half *)p)[i] = __float2half_rn((float)v);
    else ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn((float)v);
}

__device__ static double bn_block_sum(double v, KN_SHARED_PTR(double) sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = threadIdx.x < nw ? sh[threadIdx.x] : 0.0;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}

// The sum of x (or of (x - mu)^2) over channel c's N x S values, by the whole block.
template <class T>
__device__ static double bn_chan_sum(const T *x, int64_t c, int64_t N, int64_t C, int64_t S, bool centred, double mu,
                                     KN_SHARED_PTR(double) sh) {
    double s = 0;
    for (int64_t e = threadIdx.x; e < N * S; e += blockDim.x) {
        double v = (double)kn_num<T>::ld(x[(e / S * C + c) * S + e % S]);
        s += centred ? (v - mu) * (v - mu) : v;
    }
    return bn_block_sum(s, sh);
}

struct bn_params {
    const void *scale, *bias, *mean, *var;
    kn_dtype pt; // their dtype
    void *o[5];  // outputs 1..4 (index 1..4), NULL when absent
    kn_dtype ot[5];
    double eps, mom;
};

// y = x * a + b over one (image, channel) plane; float32 as the CPU (float a and b, multiply and
// add rounded apart), 16-bit types through double.
template <class T>
__device__ static void bn_plane(T *yp, const T *xp, int64_t S, double a, double b, int64_t k0, int64_t step) {
    if (sizeof(T) == 4) {
        float fa = (float)a, fb = (float)b;
        for (int64_t k = k0; k < S; k += step)
            yp[k] = kn_num<T>::st(__fadd_rn(__fmul_rn(kn_num<T>::ld(xp[k]), fa), fb));
    } else {
        for (int64_t k = k0; k < S; k += step) yp[k] = kn_num<T>::st((float)((double)kn_num<T>::ld(xp[k]) * a + b));
    }
}

// Inference: blocks stride over the (image, channel) planes; each thread derives the channel's
// a = scale / sqrt(var + eps), b = B - mean * a itself (two loads and a square root per plane).
template <class T> __global__ void bn_apply_kernel(T *y, const T *x, bn_params p, int64_t N, int64_t C, int64_t S) {
    for (int64_t pl = blockIdx.x; pl < N * C; pl += gridDim.x) {
        int64_t c = pl % C;
        double a = bn_ld(p.scale, p.pt, c) / sqrt(bn_ld(p.var, p.pt, c) + p.eps);
        double b = bn_ld(p.bias, p.pt, c) - bn_ld(p.mean, p.pt, c) * a;
        bn_plane(y + pl * S, x + pl * S, S, a, b, threadIdx.x, blockDim.x);
    }
}

// Training mode: one block per channel computes the batch statistics (two passes in double), writes
// the optional statistics outputs, then normalises the channel's N planes.
template <class T> __global__ void bn_train_kernel(T *y, const T *x, bn_params p, int64_t N, int64_t C, int64_t S) {
    KN_SHARED(double, sh, 32);
    int64_t c = blockIdx.x;
    double mean = bn_ld(p.mean, p.pt, c), var = bn_ld(p.var, p.pt, c), cnt = (double)(N * S);
    double bm = bn_chan_sum(x, c, N, C, S, false, 0, sh) / cnt;
    double bv = bn_chan_sum(x, c, N, C, S, true, bm, sh) / cnt;
    if (threadIdx.x == 0) {
        if (p.o[1]) bn_st(p.o[1], p.ot[1], c, mean * p.mom + bm * (1 - p.mom));
        if (p.o[2]) bn_st(p.o[2], p.ot[2], c, var * p.mom + bv * (1 - p.mom));
        if (p.o[3]) bn_st(p.o[3], p.ot[3], c, bm);
        if (p.o[4]) bn_st(p.o[4], p.ot[4], c, bv);
    }
    double a = bn_ld(p.scale, p.pt, c) / sqrt(bv + p.eps), b = bn_ld(p.bias, p.pt, c) - bm * a;
    for (int64_t n = 0; n < N; n++)
        bn_plane(y + (n * C + c) * S, x + (n * C + c) * S, S, a, b, threadIdx.x, blockDim.x);
}

// BatchNormalizationGrad: one block per channel (statistics, the two sums, then dx).
template <class T>
__global__ void bn_grad_kernel(T *dx, void *dscale, void *dbias, kn_dtype st, const T *dy, const T *x,
                               const void *scale, const void *mean, const void *var, kn_dtype pt, int64_t N, int64_t C,
                               int64_t S, double eps, bool training) {
    KN_SHARED(double, sh, 32);
    int64_t c = blockIdx.x;
    double cnt = (double)(N * S), mu = bn_ld(mean, pt, c), v = bn_ld(var, pt, c);
    if (training) {
        mu = cnt > 0 ? bn_chan_sum(x, c, N, C, S, false, 0, sh) / cnt : 0;
        v = cnt > 0 ? bn_chan_sum(x, c, N, C, S, true, mu, sh) / cnt : 0;
    }
    double inv = 1.0 / sqrt(v + eps), sc = bn_ld(scale, pt, c), sdy = 0, sdyx = 0;
    for (int64_t e = threadIdx.x; e < N * S; e += blockDim.x) {
        int64_t k = (e / S * C + c) * S + e % S;
        double d = (double)kn_num<T>::ld(dy[k]);
        sdy += d;
        sdyx += d * ((double)kn_num<T>::ld(x[k]) - mu) * inv;
    }
    sdy = bn_block_sum(sdy, sh);
    sdyx = bn_block_sum(sdyx, sh);
    if (threadIdx.x == 0) {
        if (dscale) bn_st(dscale, st, c, sdyx);
        if (dbias) bn_st(dbias, st, c, sdy);
    }
    if (!dx) return;
    for (int64_t e = threadIdx.x; e < N * S; e += blockDim.x) {
        int64_t k = (e / S * C + c) * S + e % S;
        double d = (double)kn_num<T>::ld(dy[k]), r = d;
        if (training) r = d - (sdy + ((double)kn_num<T>::ld(x[k]) - mu) * inv * sdyx) / cnt;
        dx[k] = kn_num<T>::st((float)(sc * inv * r));
    }
}

// ---- host side ----

static kn_status *pool_geo_make(const char *op, const kn_conv_geom *cg, pool_geo *g) {
    memset(g, 0, sizeof *g);
    if (cg->nsp < 0 || cg->nsp > POOL_MAX_SP)
        return kn_error(KN_ERR_UNSUPPORTED, "%s: %d spatial dims on cuda (at most %d)", op, cg->nsp, POOL_MAX_SP);
    g->nsp = cg->nsp;
    g->in_n = g->out_n = g->k_n = 1;
    for (int i = 0; i < cg->nsp; i++) {
        if (cg->in[i] > INT32_MAX / 2 || cg->out[i] > INT32_MAX || cg->k[i] > INT32_MAX || cg->stride[i] < 1 ||
            cg->stride[i] > INT32_MAX || cg->dil[i] > INT32_MAX || cg->pad_b[i] > INT32_MAX / 4 ||
            cg->pad_e[i] > INT32_MAX / 4)
            return kn_error(KN_ERR_UNSUPPORTED, "%s: window dims beyond 32 bits on cuda", op);
        g->in[i] = (int)cg->in[i];
        g->out[i] = (int)cg->out[i];
        g->k[i] = (int)cg->k[i];
        g->s[i] = (int)cg->stride[i];
        g->d[i] = (int)cg->dil[i];
        g->pb[i] = (int)cg->pad_b[i];
        g->pe[i] = (int)cg->pad_e[i];
        g->in_n *= cg->in[i];
        g->out_n *= cg->out[i];
        g->k_n *= cg->k[i];
    }
    return NULL;
}

// The window geometry of a MaxPool/AveragePool node (or its backward) over x's dims.
static kn_status *pool_geometry(const kn_node *node, const char *op, const kn_tensor *x, const kn_tensor *y,
                                pool_geo *g) {
    char bx[KN_DESC_LEN], by[KN_DESC_LEN];
    int nsp = x->ndim - 2;
    const kn_params_pool *pp = KN_PARAMS(node, pool);
    if (x->ndim < 3 || x->ndim > KN_MAX_DIMS || pp->win.n_kernel_shape != nsp)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: kernel_shape does not match input %s", op,
                        kn_tensor_desc(x, bx, sizeof bx));
    kn_conv_geom cg;
    KN_TRY(kn_conv_geometry(node, op, nsp, x->dims + 2, pp->win.kernel_shape, pp->ceil_mode, &cg));
    bool ok = y->ndim == x->ndim && y->dims[0] == x->dims[0] && y->dims[1] == x->dims[1];
    for (int i = 0; ok && i < nsp; i++) ok = y->dims[2 + i] == cg.out[i];
    if (!ok)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s does not fit the pooling of %s", op,
                        kn_tensor_desc(y, by, sizeof by), kn_tensor_desc(x, bx, sizeof bx));
    return pool_geo_make(op, &cg, g);
}

template <class T>
static void pool_launch(kn_tensor *y, int64_t *ind, const kn_tensor *x, const pool_geo &g, int64_t total, bool max,
                        double p, bool include_pad, bool col_major, bool nan_first, cudaStream_t s) {
    KN_LAUNCH(pool_kernel<T>, kn_cuda_blocks(total, POOL_THREADS), POOL_THREADS, 0, s, (T *)y->data, ind,
              (const T *)x->data, g, total, max, p, include_pad, col_major, nan_first);
}

static kn_status *pool_forward(kn_exec_ctx *ctx, const kn_node *node, const char *op, bool max, bool lp,
                               const kn_tensor *x, kn_tensor *y, kn_tensor *ind) {
    if (!kn_cuda_float(x->dtype)) return kn_err_dtype(node, x);
    if (ind && ind->dtype != KN_I64) return kn_err_dtype(node, ind);
    pool_geo g;
    KN_TRY(pool_geometry(node, op, x, y, &g));
    const kn_params_pool *pp = KN_PARAMS(node, pool);
    if (lp && pp->p <= 0) return kn_error(KN_ERR_INVALID_MODEL, "%s: p must be positive", op);
    int64_t total = kn_numel(y);
    if (total <= 0) return NULL;
    // the CPU's float32 2-D path skips a leading NaN; its generic walk keeps it
    bool nan_first = !(g.nsp == 2 && x->dtype == KN_F32 && !ind);
    int64_t *ip = ind ? (int64_t *)ind->data : NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    switch (x->dtype) {
    case KN_F32:
        pool_launch<float>(y, ip, x, g, total, max, lp ? (double)pp->p : 0.0, pp->count_include_pad,
                           pp->storage_order_col, nan_first, s);
        break;
    case KN_F16:
        pool_launch<__half>(y, ip, x, g, total, max, lp ? (double)pp->p : 0.0, pp->count_include_pad,
                            pp->storage_order_col, nan_first, s);
        break;
    default:
        pool_launch<__nv_bfloat16>(y, ip, x, g, total, max, lp ? (double)pp->p : 0.0, pp->count_include_pad,
                                   pp->storage_order_col, nan_first, s);
    }
    KN_CUDA_LAUNCHED(node, "pool kernel");
    return NULL;
}

KN_CUDA_KERNEL(MaxPool) {
    return pool_forward(ctx, node, "MaxPool", true, false, in[0], out[0], n_out > 1 ? out[1] : NULL);
}

KN_CUDA_KERNEL(AveragePool) { return pool_forward(ctx, node, "AveragePool", false, false, in[0], out[0], NULL); }
KN_CUDA_KERNEL(LpPool) { return pool_forward(ctx, node, "LpPool", false, true, in[0], out[0], NULL); }

static kn_status *global_pool(kn_exec_ctx *ctx, const kn_node *node, bool max, double p, const kn_tensor *x,
                              kn_tensor *y) {
    char bx[KN_DESC_LEN];
    if (!kn_cuda_float(x->dtype)) return kn_err_dtype(node, x);
    if (x->ndim < 2 || y->ndim != x->ndim || y->dims[0] != x->dims[0] || y->dims[1] != x->dims[1])
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input %s does not fit its output", node->op_type,
                        kn_tensor_desc(x, bx, sizeof bx));
    int64_t planes = x->dims[0] * x->dims[1], n = 1;
    for (int i = 2; i < x->ndim; i++) n *= x->dims[i];
    if (planes <= 0) return NULL;
    if (planes > 0x7fffffffLL) return kn_error(KN_ERR_UNSUPPORTED, "%s: %lld planes", node->op_type, (long long)planes);
    cudaStream_t s = kn_cuda_s(ctx);
    switch (x->dtype) {
    case KN_F32:
        KN_LAUNCH(global_pool_kernel<float>, (unsigned)planes, POOL_THREADS, 0, s, (float *)y->data,
                  (const float *)x->data, n, max, p);
        break;
    case KN_F16:
        KN_LAUNCH(global_pool_kernel<__half>, (unsigned)planes, POOL_THREADS, 0, s, (__half *)y->data,
                  (const __half *)x->data, n, max, p);
        break;
    default:
        KN_LAUNCH(global_pool_kernel<__nv_bfloat16>, (unsigned)planes, POOL_THREADS, 0, s, (__nv_bfloat16 *)y->data,
                  (const __nv_bfloat16 *)x->data, n, max, p);
    }
    KN_CUDA_LAUNCHED(node, "global pool kernel");
    return NULL;
}

KN_CUDA_KERNEL(GlobalAveragePool) { return global_pool(ctx, node, false, 0.0, in[0], out[0]); }
KN_CUDA_KERNEL(GlobalMaxPool) { return global_pool(ctx, node, true, 0.0, in[0], out[0]); }
KN_CUDA_KERNEL(GlobalLpPool) {
    double p = node->params ? (double)KN_PARAMS(node, pool)->p : 2.0;
    if (p <= 0) return kn_error(KN_ERR_INVALID_MODEL, "GlobalLpPool: p must be positive");
    return global_pool(ctx, node, false, p, in[0], out[0]);
}

static kn_status *pool_backward(kn_exec_ctx *ctx, const kn_node *node, const char *op, bool max, const kn_tensor *dy,
                                const kn_tensor *x, kn_tensor *dx) {
    if (!kn_cuda_float(dy->dtype)) return kn_err_dtype(node, dy);
    if (x && x->dtype != dy->dtype) return kn_err_dtype(node, x);
    if (x && !kn_same_shape(x, dx)) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: X and dX differ in shape", op);
    pool_geo g;
    KN_TRY(pool_geometry(node, op, dx, dy, &g));
    int64_t total = kn_numel(dx);
    if (total <= 0) return NULL;
    bool inc = KN_PARAMS(node, pool)->count_include_pad;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned nb = kn_cuda_blocks(total, POOL_THREADS);
    switch (dy->dtype) {
    case KN_F32:
        KN_LAUNCH(pool_grad_kernel<float>, nb, POOL_THREADS, 0, s, (float *)dx->data, (const float *)dy->data,
                  x ? (const float *)x->data : (const float *)NULL, g, total, max, inc);
        break;
    case KN_F16:
        KN_LAUNCH(pool_grad_kernel<__half>, nb, POOL_THREADS, 0, s, (__half *)dx->data, (const __half *)dy->data,
                  x ? (const __half *)x->data : (const __half *)NULL, g, total, max, inc);
        break;
    default:
        KN_LAUNCH(pool_grad_kernel<__nv_bfloat16>, nb, POOL_THREADS, 0, s, (__nv_bfloat16 *)dx->data,
                  (const __nv_bfloat16 *)dy->data, x ? (const __nv_bfloat16 *)x->data : (const __nv_bfloat16 *)NULL, g,
                  total, max, inc);
    }
    KN_CUDA_LAUNCHED(node, "pool backward kernel");
    return NULL;
}

KN_CUDA_KERNEL(KnMaxPoolGrad) { return pool_backward(ctx, node, "MaxPoolGrad", true, in[0], in[1], out[0]); }
KN_CUDA_KERNEL(KnAveragePoolGrad) { return pool_backward(ctx, node, "AveragePoolGrad", false, in[0], NULL, out[0]); }

// Windowed pools: float, 1 to 3 spatial dims; MaxPoolGrad's X of dy's type.
bool kn_cuda_pool_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 1 || !in[0] || !kn_cuda_float(in[0]->dtype)) return false;
    if (n->op == KN_OP_KnMaxPoolGrad && (n_in < 2 || !in[1] || in[1]->dtype != in[0]->dtype)) return false;
    if (n->op == KN_OP_GlobalAveragePool || n->op == KN_OP_GlobalMaxPool || n->op == KN_OP_GlobalLpPool)
        return in[0]->ndim >= 2;
    if (n->op == KN_OP_KnAveragePoolGrad) return in[0]->ndim >= 3 && in[0]->ndim <= 2 + POOL_MAX_SP;
    return in[0]->ndim >= 3 && in[0]->ndim <= 2 + POOL_MAX_SP;
}

template <class T>
static void bn_launch(kn_tensor *y, const kn_tensor *x, const bn_params &p, int64_t N, int64_t C, int64_t S,
                      bool training, cudaStream_t s) {
    if (training)
        KN_LAUNCH(bn_train_kernel<T>, (unsigned)C, POOL_THREADS, 0, s, (T *)y->data, (const T *)x->data, p, N, C, S);
    else if (N * C > 0)
        KN_LAUNCH(bn_apply_kernel<T>, kn_cuda_blocks(N * C, 1), POOL_THREADS, 0, s, (T *)y->data, (const T *)x->data, p,
                  N, C, S);
}

KN_CUDA_KERNEL(BatchNormalization) {
    const kn_tensor *x = in[0];
    char bx[KN_DESC_LEN];
    if (!kn_cuda_float(x->dtype)) return kn_err_dtype(node, x);
    if (n_in < 5 || x->ndim < 2)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "BatchNormalization: %d inputs, X %s", n_in,
                        kn_tensor_desc(x, bx, sizeof bx));
    int64_t N = x->dims[0], C = x->dims[1], S = 1;
    for (int i = 2; i < x->ndim; i++) S *= x->dims[i];
    for (int k = 1; k < 5; k++) {
        if (!in[k] || kn_numel(in[k]) != C)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "BatchNormalization: input %d must have %lld values", k,
                            (long long)C);
        if (in[k]->dtype != in[1]->dtype || !kn_cuda_float(in[k]->dtype)) return kn_err_dtype(node, in[k]);
    }
    const kn_params_batchnorm *pp = KN_PARAMS(node, batchnorm);
    bool training = node->opset >= 14 ? pp->training_mode_attr : (n_out > 1 && out[1] != NULL);
    bn_params p;
    memset(&p, 0, sizeof p);
    p.scale = in[1]->data;
    p.bias = in[2]->data;
    p.mean = in[3]->data;
    p.var = in[4]->data;
    p.pt = in[1]->dtype;
    for (int k = 1; k < 5 && k < n_out; k++)
        if (out[k]) {
            if (!kn_cuda_float(out[k]->dtype)) return kn_err_dtype(node, out[k]);
            if (training) {
                p.o[k] = out[k]->data;
                p.ot[k] = out[k]->dtype;
            }
        }
    p.eps = pp->epsilon;
    p.mom = pp->momentum;
    if (C <= 0) return NULL;
    if (C > 0x7fffffffLL) return kn_error(KN_ERR_UNSUPPORTED, "BatchNormalization: %lld channels", (long long)C);
    cudaStream_t s = kn_cuda_s(ctx);
    switch (x->dtype) {
    case KN_F32: bn_launch<float>(out[0], x, p, N, C, S, training, s); break;
    case KN_F16: bn_launch<__half>(out[0], x, p, N, C, S, training, s); break;
    default: bn_launch<__nv_bfloat16>(out[0], x, p, N, C, S, training, s);
    }
    KN_CUDA_LAUNCHED(node, "BatchNormalization kernel");
    return NULL;
}

KN_CUDA_KERNEL(KnBatchNormalizationGrad) {
    const kn_tensor *dy = in[0], *x = in[1];
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    if (!kn_cuda_float(x->dtype)) return kn_err_dtype(node, x);
    if (dy->dtype != x->dtype) return kn_err_dtype(node, dy);
    if (n_in < 5 || x->ndim < 2 || !kn_same_shape(dy, x))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "BatchNormalizationGrad: dy %s and X %s differ (or rank < 2)",
                        kn_tensor_desc(dy, b1, sizeof b1), kn_tensor_desc(x, b2, sizeof b2));
    int64_t N = x->dims[0], C = x->dims[1], S = 1;
    for (int i = 2; i < x->ndim; i++) S *= x->dims[i];
    for (int k = 2; k < 5; k++) {
        if (!in[k] || kn_numel(in[k]) != C)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "BatchNormalizationGrad: scale, mean and var must have %lld values", (long long)C);
        if (in[k]->dtype != in[2]->dtype || !kn_cuda_float(in[k]->dtype)) return kn_err_dtype(node, in[k]);
    }
    kn_tensor *dx = out[0], *ds = n_out > 1 ? out[1] : NULL, *db = n_out > 2 ? out[2] : NULL;
    if (ds && db && ds->dtype != db->dtype) return kn_err_dtype(node, db);
    if ((ds && !kn_cuda_float(ds->dtype)) || (db && !kn_cuda_float(db->dtype))) return kn_err_dtype(node, ds ? ds : db);
    if (dx && dx->dtype != x->dtype) return kn_err_dtype(node, dx);
    kn_dtype st = ds ? ds->dtype : db ? db->dtype : KN_F32;
    if (C <= 0) return NULL;
    if (C > 0x7fffffffLL) return kn_error(KN_ERR_UNSUPPORTED, "BatchNormalizationGrad: %lld channels", (long long)C);
    const kn_params_batchnorm *pp = KN_PARAMS(node, batchnorm);
    cudaStream_t s = kn_cuda_s(ctx);
    void *dsp = ds ? ds->data : NULL, *dbp = db ? db->data : NULL;
    switch (x->dtype) {
    case KN_F32:
        KN_LAUNCH(bn_grad_kernel<float>, (unsigned)C, POOL_THREADS, 0, s, dx ? (float *)dx->data : (float *)NULL, dsp,
                  dbp, st, (const float *)dy->data, (const float *)x->data, (const void *)in[2]->data,
                  (const void *)in[3]->data, (const void *)in[4]->data, in[2]->dtype, N, C, S, (double)pp->epsilon,
                  pp->training_mode_attr);
        break;
    case KN_F16:
        KN_LAUNCH(bn_grad_kernel<__half>, (unsigned)C, POOL_THREADS, 0, s, dx ? (__half *)dx->data : (__half *)NULL,
                  dsp, dbp, st, (const __half *)dy->data, (const __half *)x->data, (const void *)in[2]->data,
                  (const void *)in[3]->data, (const void *)in[4]->data, in[2]->dtype, N, C, S, (double)pp->epsilon,
                  pp->training_mode_attr);
        break;
    default:
        KN_LAUNCH(bn_grad_kernel<__nv_bfloat16>, (unsigned)C, POOL_THREADS, 0, s,
                  dx ? (__nv_bfloat16 *)dx->data : (__nv_bfloat16 *)NULL, dsp, dbp, st, (const __nv_bfloat16 *)dy->data,
                  (const __nv_bfloat16 *)x->data, (const void *)in[2]->data, (const void *)in[3]->data,
                  (const void *)in[4]->data, in[2]->dtype, N, C, S, (double)pp->epsilon, pp->training_mode_attr);
    }
    KN_CUDA_LAUNCHED(node, "BatchNormalizationGrad kernel");
    return NULL;
}

// Float X (and dy) of one type; scale, B, mean and var of one float type.
bool kn_cuda_batchnorm_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 5 || !in[0] || !kn_cuda_float(in[0]->dtype) || in[0]->ndim < 2) return false;
    bool grad = n->op == KN_OP_KnBatchNormalizationGrad;
    if (grad && (!in[1] || in[1]->dtype != in[0]->dtype)) return false;
    int first = grad ? 2 : 1;
    for (int k = first; k < 5; k++)
        if (!in[k] || !kn_cuda_float(in[k]->dtype) || in[k]->dtype != in[first]->dtype) return false;
    return true;
}
