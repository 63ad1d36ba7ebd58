/* CPU kernels for pooling: AveragePool, MaxPool (with Indices), LpPool, their Global forms and
 * MaxUnpool. One generic N-D window walk serves every pool; work is split over the N*C planes.
 * Values are read and accumulated in double, which covers every dtype the specs allow with one
 * code path; float32 planes are read directly to keep the common case quick, and 2-D float32
 * MaxPool runs as two 1-D passes (rows, then columns) of vector maxima. */
#include "graph/ops.h"
#include "graph/op_helpers.h"
#include "kernels/cpu/gemm.h"
#include "runtime/core/dtype.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Every kernel has the one signature the op table wants; not all use every argument. */
#pragma GCC diagnostic ignored "-Wunused-parameter"

#define DESC(t, buf) kn_tensor_desc((t), (buf), sizeof(buf))

enum pool_kind { POOL_AVG, POOL_MAX, POOL_LP };

typedef struct pool_job {
    enum pool_kind kind;
    const kn_tensor *x;
    kn_tensor *y, *ind;
    kn_conv_geom g;
    int64_t in_n, out_n, k_n;
    bool include_pad, col_major;
    double p;
} pool_job;

static inline double rd(const kn_tensor *t, int64_t i) {
    return t->dtype == KN_F32 ? (double)((const float *)t->data)[i] : kn_get_f64(t, i);
}

static inline void wr(kn_tensor *t, int64_t i, double v) {
    if (t->dtype == KN_F32) ((float *)t->data)[i] = (float)v;
    else kn_set_f64(t, i, v);
}

static bool float_dtype(kn_dtype t) { return t == KN_F32 || t == KN_F64 || t == KN_F16 || t == KN_BF16; }

/* The common CNN case (2-D float32, no Indices) without the generic walk's index arithmetic. */
static void pool_plane_2d_f32(const pool_job *j, int64_t pl) {
    const kn_conv_geom *g = &j->g;
    const float *x = (const float *)j->x->data + pl * j->in_n;
    float *y = (float *)j->y->data + pl * j->out_n;
    int64_t H = g->in[0], W = g->in[1];
    for (int64_t oh = 0; oh < g->out[0]; oh++)
        for (int64_t ow = 0; ow < g->out[1]; ow++) {
            int64_t h0 = oh * g->stride[0] - g->pad_b[0], w0 = ow * g->stride[1] - g->pad_b[1];
            float mx = -INFINITY;
            double sum = 0.0;
            int64_t cnt_valid = 0, cnt_pad = 0;
            for (int64_t a = 0; a < g->k[0]; a++) {
                int64_t h = h0 + a * g->dil[0];
                bool hpad = h >= -g->pad_b[0] && h < H + g->pad_e[0];
                for (int64_t b = 0; b < g->k[1]; b++) {
                    int64_t w = w0 + b * g->dil[1];
                    if (hpad && w >= -g->pad_b[1] && w < W + g->pad_e[1]) cnt_pad++;
                    if (h < 0 || h >= H || w < 0 || w >= W) continue;
                    float v = x[h * W + w];
                    cnt_valid++;
                    if (j->kind == POOL_MAX) mx = v > mx ? v : mx;
                    else if (j->kind == POOL_AVG) sum += v;
                    else sum += pow(fabs((double)v), j->p);
                }
            }
            float out;
            if (j->kind == POOL_MAX) out = mx;
            else if (j->kind == POOL_AVG) {
                int64_t div = j->include_pad ? cnt_pad : cnt_valid;
                out = div ? (float)(sum / (double)div) : 0.0f;
            } else out = (float)pow(sum, 1.0 / j->p);
            y[oh * g->out[1] + ow] = out;
        }
}

/* out[o] = max(out[o], row[o*s + off]) over the o whose input lies in [0, n): one tap of a 1-D max
 * window. The comparison keeps out on a NaN input, as pool_plane_2d_f32 did. */
static void max_tap(float *out, int64_t nout, const float *row, int64_t n, int64_t s, int64_t off) {
    int64_t lo = off >= 0 ? 0 : (-off + s - 1) / s, hi = n - off <= 0 ? 0 : (n - off + s - 1) / s;
    if (hi > nout) hi = nout;
    if (s == 1)
        for (int64_t o = lo; o < hi; o++) {
            float v = row[o + off];
            out[o] = v > out[o] ? v : out[o];
        }
    else
        for (int64_t o = lo; o < hi; o++) {
            float v = row[o * s + off];
            out[o] = v > out[o] ? v : out[o];
        }
}

/* 2-D float32 MaxPool of plane pl: the maximum over a window is the maximum of its rows' maxima,
 * so tmp (H x OW) takes each input row's window maxima, then each output row the maximum of its
 * window's rows of tmp. Both passes run along contiguous outputs (vectorised); a window with no
 * input in it gives -inf, as the walk does. */
static void pool_plane_max_sep(const pool_job *j, int64_t pl, float *tmp) {
    const kn_conv_geom *g = &j->g;
    const float *x = (const float *)j->x->data + pl * j->in_n;
    float *y = (float *)j->y->data + pl * j->out_n;
    int64_t H = g->in[0], W = g->in[1], OH = g->out[0], OW = g->out[1];
    for (int64_t h = 0; h < H; h++) {
        float *t = tmp + h * OW;
        for (int64_t o = 0; o < OW; o++) t[o] = -INFINITY;
        for (int64_t b = 0; b < g->k[1]; b++) max_tap(t, OW, x + h * W, W, g->stride[1], b * g->dil[1] - g->pad_b[1]);
    }
    for (int64_t oh = 0; oh < OH; oh++) {
        float *yr = y + oh * OW;
        for (int64_t o = 0; o < OW; o++) yr[o] = -INFINITY;
        for (int64_t a = 0; a < g->k[0]; a++) {
            int64_t h = oh * g->stride[0] - g->pad_b[0] + a * g->dil[0];
            if (h >= 0 && h < H) max_tap(yr, OW, tmp + h * OW, OW, 1, 0);
        }
    }
}

static void pool_planes(void *ctx, int64_t begin, int64_t end) {
    const pool_job *j = ctx;
    const kn_conv_geom *g = &j->g;
    int nsp = g->nsp;
    if (nsp == 2 && j->x->dtype == KN_F32 && !j->ind && j->kind == POOL_MAX) {
        float *tmp = malloc(sizeof(float) * (size_t)(g->in[0] * g->out[1] + 1));
        if (tmp) {
            for (int64_t pl = begin; pl < end; pl++) pool_plane_max_sep(j, pl, tmp);
            free(tmp);
            return;
        }
    }
    if (nsp == 2 && j->x->dtype == KN_F32 && !j->ind) {
        for (int64_t pl = begin; pl < end; pl++) pool_plane_2d_f32(j, pl);
        return;
    }
    for (int64_t pl = begin; pl < end; pl++) {
        int64_t xb = pl * j->in_n, yb = pl * j->out_n;
        for (int64_t o = 0; o < j->out_n; o++) {
            int64_t opos[KN_MAX_DIMS], rem = o;
            for (int d = nsp - 1; d >= 0; d--) {
                opos[d] = rem % g->out[d];
                rem /= g->out[d];
            }
            double acc = j->kind == POOL_MAX ? -INFINITY : 0.0;
            int64_t best = -1, cnt_valid = 0, cnt_pad = 0;
            for (int64_t kk = 0; kk < j->k_n; kk++) {
                int64_t r = kk, off = 0, ipos[KN_MAX_DIMS];
                bool inside = true, in_pad = true;
                for (int d = nsp - 1; d >= 0; d--) {
                    int64_t q = r % g->k[d];
                    r /= g->k[d];
                    ipos[d] = opos[d] * g->stride[d] - g->pad_b[d] + q * g->dil[d];
                    if (ipos[d] < 0 || ipos[d] >= g->in[d]) inside = false;
                    if (ipos[d] < -g->pad_b[d] || ipos[d] >= g->in[d] + g->pad_e[d]) in_pad = false;
                }
                if (in_pad) cnt_pad++;
                if (!inside) continue;
                cnt_valid++;
                for (int d = 0; d < nsp; d++) off = off * g->in[d] + ipos[d];
                double v = rd(j->x, xb + off);
                if (j->kind == POOL_MAX) {
                    if (v > acc || best < 0) {
                        acc = v;
                        if (j->col_major) {
                            int64_t cm = 0;
                            for (int d = nsp - 1; d >= 0; d--) cm = cm * g->in[d] + ipos[d];
                            best = cm;
                        } else {
                            best = off;
                        }
                    }
                } else if (j->kind == POOL_AVG) {
                    acc += v;
                } else {
                    acc += pow(fabs(v), j->p);
                }
            }
            double out;
            if (j->kind == POOL_MAX) out = best < 0 && !float_dtype(j->x->dtype) ? 0.0 : acc;
            else if (j->kind == POOL_AVG) {
                int64_t div = j->include_pad ? cnt_pad : cnt_valid;
                out = div ? acc / (double)div : 0.0;
            } else out = pow(acc, 1.0 / j->p);
            wr(j->y, yb + o, out);
            if (j->ind) ((int64_t *)j->ind->data)[yb + o] = best < 0 ? -1 : xb + best;
        }
    }
}

static kn_status *run_pool(kn_exec_ctx *ctx, const kn_node *node, const char *op, enum pool_kind kind, bool global,
                           const kn_tensor *x, kn_tensor *y, kn_tensor *ind) {
    char bx[KN_DESC_LEN], by[KN_DESC_LEN];
    bool ok = float_dtype(x->dtype) || (kind == POOL_MAX && (x->dtype == KN_I8 || x->dtype == KN_U8));
    if (!ok) return kn_err_dtype(node, x);
    if (x->ndim < (global ? 2 : 3) || x->ndim > KN_MAX_DIMS)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input %s has too small a rank", op, DESC(x, bx));
    /* GlobalAveragePool and GlobalMaxPool have no attributes (no params): the defaults */
    static const kn_params_pool defaults = {.p = 2};
    const kn_params_pool *pp = node->params ? KN_PARAMS(node, pool) : &defaults;
    pool_job j;
    memset(&j, 0, sizeof j);
    j.kind = kind;
    j.x = x;
    j.y = y;
    j.ind = ind;
    int nsp = x->ndim - 2;
    if (global) {
        j.g.nsp = nsp;
        for (int i = 0; i < nsp; i++) {
            j.g.in[i] = x->dims[2 + i];
            j.g.k[i] = x->dims[2 + i];
            j.g.out[i] = 1;
            j.g.stride[i] = 1;
            j.g.dil[i] = 1;
        }
        if (nsp == 0) j.g.nsp = 0;
    } else {
        const int64_t *ks = pp->win.kernel_shape;
        if (pp->win.n_kernel_shape != nsp)
            return kn_error(KN_ERR_INVALID_MODEL, "%s: kernel_shape does not match input %s", op, DESC(x, bx));
        bool ceil_mode = pp->ceil_mode;
        KN_TRY(kn_conv_geometry(node, op, nsp, x->dims + 2, ks, ceil_mode, &j.g));
    }
    if (y->ndim != x->ndim || y->dims[0] != x->dims[0] || y->dims[1] != x->dims[1])
        return kn_error(KN_ERR_RUNTIME, "%s: output %s does not fit input %s", op, DESC(y, by), DESC(x, bx));
    for (int i = 0; i < nsp; i++)
        if (y->dims[2 + i] != j.g.out[i])
            return kn_error(KN_ERR_RUNTIME, "%s: output %s does not fit input %s", op, DESC(y, by), DESC(x, bx));
    j.in_n = j.out_n = j.k_n = 1;
    for (int i = 0; i < nsp; i++) {
        j.in_n *= j.g.in[i];
        j.out_n *= j.g.out[i];
        j.k_n *= j.g.k[i];
    }
    j.include_pad = pp->count_include_pad;
    j.col_major = pp->storage_order_col;
    j.p = (double)pp->p;
    if (kind == POOL_LP && j.p <= 0) return kn_error(KN_ERR_INVALID_MODEL, "%s: p must be positive", op);
    int64_t planes = x->dims[0] * x->dims[1];
    if (planes == 0 || j.out_n == 0) return NULL;
    int64_t grain = 1 + 16384 / (j.out_n * j.k_n + 1);
    kn_parallel_for(ctx->pool, planes, grain, pool_planes, &j);
    return NULL;
}

kn_status *kn_cpu_AveragePool(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                              kn_tensor *const *out, int n_out) {
    return run_pool(ctx, node, "AveragePool", POOL_AVG, false, in[0], out[0], NULL);
}

kn_status *kn_cpu_MaxPool(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                          kn_tensor *const *out, int n_out) {
    kn_tensor *ind = n_out > 1 ? out[1] : NULL;
    if (ind && ind->dtype != KN_I64) return kn_err_dtype(node, ind);
    return run_pool(ctx, node, "MaxPool", POOL_MAX, false, in[0], out[0], ind);
}

kn_status *kn_cpu_LpPool(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    return run_pool(ctx, node, "LpPool", POOL_LP, false, in[0], out[0], NULL);
}

kn_status *kn_cpu_GlobalAveragePool(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                    kn_tensor *const *out, int n_out) {
    return run_pool(ctx, node, "GlobalAveragePool", POOL_AVG, true, in[0], out[0], NULL);
}

kn_status *kn_cpu_GlobalMaxPool(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *const *out, int n_out) {
    return run_pool(ctx, node, "GlobalMaxPool", POOL_MAX, true, in[0], out[0], NULL);
}

kn_status *kn_cpu_GlobalLpPool(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                               kn_tensor *const *out, int n_out) {
    return run_pool(ctx, node, "GlobalLpPool", POOL_LP, true, in[0], out[0], NULL);
}

kn_status *kn_cpu_MaxUnpool(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                            kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *idx = in[1];
    kn_tensor *y = out[0];
    char bx[KN_DESC_LEN], bi[KN_DESC_LEN];
    if (!float_dtype(x->dtype)) return kn_err_dtype(node, x);
    if (idx->dtype != KN_I64) return kn_err_dtype(node, idx);
    if (!kn_same_shape(x, idx))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "MaxUnpool: X %s and I %s differ in shape", DESC(x, bx),
                        DESC(idx, bi));
    if (x->ndim < 3 || x->ndim > KN_MAX_DIMS || y->ndim != x->ndim)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "MaxUnpool: X %s and output %s ranks do not fit", DESC(x, bx),
                        DESC(y, bi));
    /* Indices address the default unpooled shape (what MaxPool saw); an explicit output_shape
     * only pads it, so coordinates are re-linearised into the actual output. */
    int nsp = x->ndim - 2;
    const int64_t *ks = KN_PARAMS(node, pool)->win.kernel_shape;
    if (KN_PARAMS(node, pool)->win.n_kernel_shape != nsp)
        return kn_error(KN_ERR_INVALID_MODEL, "MaxUnpool: kernel_shape does not match input %s", DESC(x, bx));
    int64_t unknown[KN_MAX_DIMS], def[KN_MAX_DIMS] = {x->dims[0], x->dims[1]};
    for (int i = 0; i < nsp; i++) unknown[i] = -1;
    kn_conv_geom g;
    KN_TRY(kn_conv_geometry(node, "MaxUnpool", nsp, unknown, ks, false, &g));
    int64_t ndef = def[0] * def[1];
    bool same = y->dims[0] == def[0] && y->dims[1] == def[1];
    for (int i = 0; i < nsp; i++) {
        def[2 + i] = (x->dims[2 + i] - 1) * g.stride[i] - g.pad_b[i] - g.pad_e[i] + ks[i];
        if (def[2 + i] > y->dims[2 + i] || def[2 + i] < 0)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "MaxUnpool: output %s smaller than the unpooled shape",
                            DESC(y, bi));
        if (def[2 + i] != y->dims[2 + i]) same = false;
        ndef *= def[2 + i];
    }
    if (y->dims[0] != def[0] || y->dims[1] != def[1])
        return kn_error(KN_ERR_INVALID_ARGUMENT, "MaxUnpool: output %s does not keep the batch and channels of X %s",
                        DESC(y, bi), DESC(x, bx));
    int64_t n = kn_numel(x), ny = kn_numel(y);
    if (ny > 0) memset(y->data, 0, kn_nbytes(y));
    const int64_t *iv = idx->data;
    for (int64_t i = 0; i < n; i++) {
        if (iv[i] < 0 || iv[i] >= ndef)
            return kn_error(KN_ERR_RUNTIME, "MaxUnpool: index %lld out of range for unpooled shape of %lld elements",
                            (long long)iv[i], (long long)ndef);
        int64_t dst = iv[i];
        if (!same) {
            int64_t rem = iv[i], coord[KN_MAX_DIMS];
            for (int d = x->ndim - 1; d >= 0; d--) {
                coord[d] = rem % def[d];
                rem /= def[d];
            }
            dst = 0;
            for (int d = 0; d < x->ndim; d++) dst = dst * y->dims[d] + coord[d];
        }
        wr(y, dst, rd(x, i));
    }
    return NULL;
}

/* ---------------------------------------------------------------- pool backward (kiln ops) */

/* MaxPoolGrad(dy, X) and AveragePoolGrad(dy, x_shape): the forward's window walk again (same
 * geometry, ceil_mode, pads and dilations), each dy element sent back to the first maximum of its
 * window (the forward's and PyTorch's choice on ties) or spread over the window's in-image
 * positions with the forward's divisor. Planes run in parallel; each sums in double. */
typedef struct pool_grad_job {
    bool max;
    const kn_tensor *dy, *x; /* x: MaxPoolGrad only */
    kn_tensor *dx;
    kn_conv_geom g;
    int64_t in_n, out_n, k_n;
    bool include_pad;
    double *acc; /* in_n per plane */
} pool_grad_job;

static void pool_grad_planes(void *ctx, int64_t begin, int64_t end) {
    const pool_grad_job *j = ctx;
    const kn_conv_geom *g = &j->g;
    int nsp = g->nsp;
    for (int64_t pl = begin; pl < end; pl++) {
        double *acc = j->acc + pl * j->in_n;
        memset(acc, 0, sizeof(double) * (size_t)j->in_n);
        int64_t xb = pl * j->in_n, yb = pl * j->out_n;
        for (int64_t o = 0; o < j->out_n; o++) {
            int64_t opos[KN_MAX_DIMS], rem = o;
            for (int d = nsp - 1; d >= 0; d--) {
                opos[d] = rem % g->out[d];
                rem /= g->out[d];
            }
            double gv = rd(j->dy, yb + o), best_v = -INFINITY;
            int64_t best = -1, cnt_valid = 0, cnt_pad = 0;
            /* two passes for the average: the divisor first, then the spread */
            for (int pass = 0; pass < (j->max ? 1 : 2); pass++) {
                double share = 0;
                if (pass == 1) {
                    int64_t div = j->include_pad ? cnt_pad : cnt_valid;
                    if (!div) break;
                    share = gv / (double)div;
                }
                for (int64_t kk = 0; kk < j->k_n; kk++) {
                    int64_t r = kk, off = 0, ipos[KN_MAX_DIMS];
                    bool inside = true, in_pad = true;
                    for (int d = nsp - 1; d >= 0; d--) {
                        int64_t q = r % g->k[d];
                        r /= g->k[d];
                        ipos[d] = opos[d] * g->stride[d] - g->pad_b[d] + q * g->dil[d];
                        if (ipos[d] < 0 || ipos[d] >= g->in[d]) inside = false;
                        if (ipos[d] < -g->pad_b[d] || ipos[d] >= g->in[d] + g->pad_e[d]) in_pad = false;
                    }
                    if (pass == 0 && in_pad) cnt_pad++;
                    if (!inside) continue;
                    for (int d = 0; d < nsp; d++) off = off * g->in[d] + ipos[d];
                    if (pass == 1) acc[off] += share;
                    else if (j->max) {
                        double v = rd(j->x, xb + off);
                        if (v > best_v || best < 0) {
                            best_v = v;
                            best = off;
                        }
                    } else cnt_valid++;
                }
            }
            if (j->max && best >= 0) acc[best] += gv;
        }
        for (int64_t i = 0; i < j->in_n; i++) wr(j->dx, xb + i, acc[i]);
    }
}

static kn_status *pool_grad(kn_exec_ctx *ctx, const kn_node *node, const char *op, bool max, const kn_tensor *dy,
                            const kn_tensor *x, kn_tensor *dx) {
    char bd[KN_DESC_LEN], bx[KN_DESC_LEN];
    if (!float_dtype(dy->dtype)) return kn_err_dtype(node, dy);
    if (x && x->dtype != dy->dtype) return kn_err_dtype(node, x);
    int nd = dx->ndim, nsp = nd - 2;
    const kn_params_pool *pp = KN_PARAMS(node, pool);
    if (nd < 3 || nd > KN_MAX_DIMS || dy->ndim != nd || pp->win.n_kernel_shape != nsp)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: dy %s and X %s do not fit kernel_shape", op, DESC(dy, bd),
                        DESC(dx, bx));
    pool_grad_job j;
    memset(&j, 0, sizeof j);
    j.max = max;
    j.dy = dy;
    j.x = x;
    j.dx = dx;
    j.include_pad = pp->count_include_pad;
    KN_TRY(kn_conv_geometry(node, op, nsp, dx->dims + 2, pp->win.kernel_shape, pp->ceil_mode, &j.g));
    bool ok = dy->dims[0] == dx->dims[0] && dy->dims[1] == dx->dims[1];
    j.in_n = j.out_n = j.k_n = 1;
    for (int i = 0; i < nsp; i++) {
        ok = ok && dy->dims[2 + i] == j.g.out[i];
        j.in_n *= j.g.in[i];
        j.out_n *= j.g.out[i];
        j.k_n *= j.g.k[i];
    }
    if (!ok)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: dy %s does not fit the pooling of %s", op, DESC(dy, bd),
                        DESC(dx, bx));
    int64_t planes = dx->dims[0] * dx->dims[1];
    if (planes == 0 || j.in_n == 0) return NULL;
    j.acc = kn_scratch_alloc(ctx, sizeof(double) * (size_t)(planes * j.in_n));
    if (!j.acc) return KN_OOM(sizeof(double) * (size_t)(planes * j.in_n));
    kn_parallel_for(ctx->pool, planes, 1 + 16384 / (j.out_n * j.k_n + 1), pool_grad_planes, &j);
    return NULL;
}

kn_status *kn_cpu_KnMaxPoolGrad(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *const *out, int n_out) {
    return pool_grad(ctx, node, "MaxPoolGrad", true, in[0], in[1], out[0]);
}

kn_status *kn_cpu_KnAveragePoolGrad(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                    kn_tensor *const *out, int n_out) {
    return pool_grad(ctx, node, "AveragePoolGrad", false, in[0], NULL, out[0]);
}
