/* CPU kernels for the normalisations: LayerNormalization, RMSNormalization, BatchNormalization
 * (inference and training mode), InstanceNormalization, GroupNormalization (opset 18 per-group
 * and opset 21 per-channel affine), LpNormalization, MeanVarianceNormalization and LRN.
 * Statistics are computed in double with two passes; float32 LayerNormalization whose scale and
 * bias expand to the normalised block takes the threaded row kernels (scalar reference here,
 * AVX2/AVX-512 in reduce_avx2.c / reduce_avx512.c). */
#include "graph/ops.h"
#include "kernels/cpu/rows.h"
#include <math.h>
#include <string.h>


static bool is_float(kn_dtype t) { return t == KN_F32 || t == KN_F64 || t == KN_F16 || t == KN_BF16; }

/* Scalar reference for the row kernels: double accumulation, two-pass variance. */
void kn_layernorm_rows_f32_scalar(const float *x, float *y, int64_t rows, int64_t n, const float *scale,
                                  const float *bias, float eps, float *mean, float *invstd) {
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        float *q = y + r * n;
        double s = 0, v = 0;
        for (int64_t i = 0; i < n; i++) s += p[i];
        double mu = s / (double)n;
        for (int64_t i = 0; i < n; i++) v += (p[i] - mu) * (p[i] - mu);
        double inv = 1.0 / sqrt(v / (double)n + eps);
        if (mean) mean[r] = (float)mu;
        if (invstd) invstd[r] = (float)inv;
        for (int64_t i = 0; i < n; i++) {
            double o = (p[i] - mu) * inv * scale[i];
            q[i] = (float)(bias ? o + bias[i] : o);
        }
    }
}

typedef struct {
    const float *x;
    float *y;
    int64_t n;
    const float *scale, *bias;
    float eps;
    float *mean, *invstd;
    int level;
} ln_job;

static void ln_range(void *ctx, int64_t b, int64_t e) {
    ln_job *j = ctx;
    const float *x = j->x + b * j->n;
    float *y = j->y + b * j->n;
    float *mean = j->mean ? j->mean + b : NULL, *inv = j->invstd ? j->invstd + b : NULL;
    if (j->level == 2) kn_layernorm_rows_f32_avx512(x, y, e - b, j->n, j->scale, j->bias, j->eps, mean, inv);
    else if (j->level == 1) kn_layernorm_rows_f32_avx2(x, y, e - b, j->n, j->scale, j->bias, j->eps, mean, inv);
    else kn_layernorm_rows_f32_scalar(x, y, e - b, j->n, j->scale, j->bias, j->eps, mean, inv);
}

/* Layer norm over float32 rows, dispatched and threaded. */
void kn_layernorm_rows_f32(kn_threadpool *pool, const float *x, float *y, int64_t rows, int64_t n, const float *scale,
                           const float *bias, float eps, float *mean, float *invstd) {
    ln_job j = {x, y, n, scale, bias, eps, mean, invstd, kn_red_simd_level()};
    kn_parallel_for(pool, rows, kn_red_grain(n), ln_range, &j);
}

/* Expands parameter p (unidirectionally broadcastable to dims[0..nd)) into n = prod(dims)
 * doubles, so kernels index it by position in the normalised block. */
static kn_status *expand_param(const kn_node *node, const kn_tensor *p, const int64_t *dims, int nd, int64_t n,
                               double *out) {
    char buf[KN_DESC_LEN];
    int pn = p->ndim;
    while (pn > nd && p->dims[p->ndim - pn] == 1) pn--; /* leading ones are harmless */
    bool ok = pn <= nd;
    for (int i = 0; ok && i < pn; i++) {
        int64_t pd = p->dims[p->ndim - pn + i], xd = dims[nd - pn + i];
        if (pd != xd && pd != 1) ok = false;
    }
    if (!ok)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: parameter %s does not broadcast to the normalised shape",
                        node->op_type, kn_tensor_desc(p, buf, sizeof buf));
    int64_t pstr[KN_MAX_DIMS] = {0};
    int64_t s = 1;
    for (int i = pn - 1; i >= 0; i--) {
        int64_t pd = p->dims[p->ndim - pn + i];
        pstr[nd - pn + i] = pd == 1 ? 0 : s;
        s *= pd;
    }
    int64_t idx[KN_MAX_DIMS] = {0}, off = 0;
    for (int64_t k = 0; k < n; k++) {
        out[k] = kn_red_ld(p->data, p->dtype, off);
        for (int d = nd - 1; d >= 0; d--) {
            if (++idx[d] < dims[d]) {
                off += pstr[d];
                break;
            }
            off -= pstr[d] * (dims[d] - 1);
            idx[d] = 0;
        }
    }
    return NULL;
}

static void *scratch(kn_exec_ctx *ctx, size_t bytes) { return kn_scratch_alloc(ctx, bytes ? bytes : 1); }

/* ---- LayerNormalization / RMSNormalization ---- */
typedef struct {
    const kn_tensor *x;
    kn_tensor *y, *mean_t, *inv_t;
    const double *sc, *bi;
    int64_t n;
    double eps;
    bool rms;
} ln_gen_job;

/* Generic rows (any float dtype, RMS too), in double. RMS skips the mean: x / sqrt(mean(x^2) + eps). */
static void ln_gen_range(void *ctx, int64_t b, int64_t e) {
    ln_gen_job *j = ctx;
    kn_dtype t = j->x->dtype;
    const void *xd = j->x->data;
    int64_t n = j->n;
    for (int64_t r = b; r < e; r++) {
        int64_t base = r * n;
        double mu = 0, v = 0;
        if (!j->rms) {
            for (int64_t i = 0; i < n; i++) mu += kn_red_ld(xd, t, base + i);
            mu /= (double)n;
        }
        for (int64_t i = 0; i < n; i++) {
            double d = kn_red_ld(xd, t, base + i) - mu;
            v += d * d;
        }
        double inv = 1.0 / sqrt(v / (double)n + j->eps);
        if (j->mean_t) kn_red_st(j->mean_t->data, j->mean_t->dtype, r, mu);
        if (j->inv_t) kn_red_st(j->inv_t->data, j->inv_t->dtype, r, inv);
        for (int64_t i = 0; i < n; i++) {
            double o = (kn_red_ld(xd, t, base + i) - mu) * inv * j->sc[i];
            if (j->bi) o += j->bi[i];
            kn_red_st(j->y->data, t, base + i, o);
        }
    }
}

static kn_status *ln_common(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                            kn_tensor *const *out, int n_out, bool rms) {
    const kn_tensor *x = in[0];
    if (!is_float(x->dtype)) return kn_err_dtype(node, x);
    if (n_in < 2 || !in[1]) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: scale input is required", node->op_type);
    if (x->ndim < 1) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input must have rank >= 1", node->op_type);
    int axis;
    const kn_params_layernorm *p = KN_PARAMS(node, layernorm);
    KN_TRY(kn_norm_axis(p->axis, x->ndim, node, &axis));
    double eps = p->epsilon;
    const kn_tensor *scale_t = in[1], *bias_t = (!rms && n_in > 2) ? in[2] : NULL;
    kn_tensor *y = out[0];
    kn_tensor *mean_t = (!rms && n_out > 1) ? out[1] : NULL, *inv_t = (!rms && n_out > 2) ? out[2] : NULL;
    int64_t rows = 1, n = 1;
    for (int i = 0; i < x->ndim; i++) {
        if (i < axis) rows *= x->dims[i];
        else n *= x->dims[i];
    }
    if (rows == 0) return NULL;
    double *sc = scratch(ctx, sizeof(double) * (size_t)n), *bi = NULL;
    if (!sc) return KN_OOM(sizeof(double) * (size_t)n);
    KN_TRY(expand_param(node, scale_t, x->dims + axis, x->ndim - axis, n, sc));
    if (bias_t) {
        bi = scratch(ctx, sizeof(double) * (size_t)n);
        if (!bi) return KN_OOM(sizeof(double) * (size_t)n);
        KN_TRY(expand_param(node, bias_t, x->dims + axis, x->ndim - axis, n, bi));
    }
    bool stats_f32 = (!mean_t || mean_t->dtype == KN_F32) && (!inv_t || inv_t->dtype == KN_F32);
    if (!rms && x->dtype == KN_F32 && stats_f32 && n > 0) {
        float *fs = scratch(ctx, sizeof(float) * (size_t)n), *fb = NULL;
        if (!fs) return KN_OOM(sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++) fs[i] = (float)sc[i];
        if (bi) {
            fb = scratch(ctx, sizeof(float) * (size_t)n);
            if (!fb) return KN_OOM(sizeof(float) * (size_t)n);
            for (int64_t i = 0; i < n; i++) fb[i] = (float)bi[i];
        }
        kn_layernorm_rows_f32(ctx->pool, x->data, y->data, rows, n, fs, fb, (float)eps, mean_t ? mean_t->data : NULL,
                              inv_t ? inv_t->data : NULL);
        return NULL;
    }
    ln_gen_job j = {x, y, mean_t, inv_t, sc, bi, n, eps, rms};
    kn_parallel_for(ctx->pool, rows, kn_red_grain(n * 4), ln_gen_range, &j);
    return NULL;
}

kn_status *kn_cpu_LayerNormalization(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                     kn_tensor *const *out, int n_out) {
    return ln_common(ctx, node, in, n_in, out, n_out, false);
}
kn_status *kn_cpu_RMSNormalization(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                   kn_tensor *const *out, int n_out) {
    return ln_common(ctx, node, in, n_in, out, n_out, true);
}

/* Checks that a per-channel parameter holds exactly c values. */
static kn_status *check_param(const kn_node *node, const kn_tensor *p, int64_t c, const char *what) {
    char buf[KN_DESC_LEN];
    if (!p) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s input is required", node->op_type, what);
    if (kn_numel(p) != c || !is_float(p->dtype))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s must hold %lld float values, got %s", node->op_type, what,
                        (long long)c, kn_tensor_desc(p, buf, sizeof buf));
    return NULL;
}

/* [N, C, spatial...] split. */
static kn_status *nchw(const kn_node *node, const kn_tensor *x, int64_t *N, int64_t *C, int64_t *S) {
    if (!is_float(x->dtype)) return kn_err_dtype(node, x);
    if (x->ndim < 2) {
        char buf[KN_DESC_LEN];
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input must be [N, C, ...], got %s", node->op_type,
                        kn_tensor_desc(x, buf, sizeof buf));
    }
    *N = x->dims[0];
    *C = x->dims[1];
    *S = 1;
    for (int i = 2; i < x->ndim; i++) *S *= x->dims[i];
    return NULL;
}

/* ---- per-channel blocks: BatchNormalization, InstanceNormalization, GroupNormalization ---- */

/* y[off + i] = x[off + i] * a + b for i in [0, cnt); float32 directly, other dtypes via double. */
static void affine_block(const kn_tensor *x, kn_tensor *y, int64_t off, int64_t cnt, double a, double b) {
    if (x->dtype == KN_F32) {
        const float *p = (const float *)x->data + off;
        float *q = (float *)y->data + off, fa = (float)a, fb = (float)b;
        for (int64_t i = 0; i < cnt; i++) q[i] = p[i] * fa + fb;
        return;
    }
    for (int64_t i = 0; i < cnt; i++)
        kn_red_st(y->data, x->dtype, off + i, kn_red_ld(x->data, x->dtype, off + i) * a + b);
}

/* Mean and 1/sqrt(var + eps) of x[off + k], k in [0, cnt): two passes, double accumulation. */
static void block_stats(const kn_tensor *x, int64_t off, int64_t cnt, double eps, double *mean_out, double *inv_out) {
    double s = 0, v = 0;
    if (x->dtype == KN_F32) {
        const float *p = (const float *)x->data + off;
        for (int64_t k = 0; k < cnt; k++) s += p[k];
        double mu = s / (double)cnt;
        for (int64_t k = 0; k < cnt; k++) v += (p[k] - mu) * (p[k] - mu);
        *mean_out = mu;
    } else {
        for (int64_t k = 0; k < cnt; k++) s += kn_red_ld(x->data, x->dtype, off + k);
        double mu = s / (double)cnt;
        for (int64_t k = 0; k < cnt; k++) {
            double d = kn_red_ld(x->data, x->dtype, off + k) - mu;
            v += d * d;
        }
        *mean_out = mu;
    }
    *inv_out = 1.0 / sqrt(v / (double)cnt + eps);
}

/* One job per (n, group) block of cpg channels x S positions. With stats == false the affine
 * (a, b) per channel is precomputed (BatchNormalization); otherwise each block normalises by its
 * own statistics, then applies scale/bias per channel (or per group: opset-18 GroupNorm). */
typedef struct {
    const kn_tensor *x;
    kn_tensor *y;
    int64_t C, S, G;
    bool stats, per_channel;
    double eps;
    const double *a, *b;
} chan_job;

static void chan_range(void *ctx, int64_t beg, int64_t end) {
    chan_job *j = ctx;
    int64_t cpg = j->C / j->G;
    for (int64_t blk = beg; blk < end; blk++) {
        int64_t n = blk / j->G, g = blk % j->G, off = (n * j->C + g * cpg) * j->S;
        double mu = 0, inv = 1;
        if (j->stats) block_stats(j->x, off, cpg * j->S, j->eps, &mu, &inv);
        for (int64_t cc = 0; cc < cpg; cc++) {
            int64_t c = g * cpg + cc, pi = j->per_channel ? c : g;
            double a = j->a[pi] * inv, b = j->b[pi] - mu * a;
            affine_block(j->x, j->y, off + cc * j->S, j->S, a, b);
        }
    }
}

/* Reads a float parameter tensor into doubles (scratch). */
static double *param_doubles(kn_exec_ctx *ctx, const kn_tensor *p, int64_t n) {
    double *d = scratch(ctx, sizeof(double) * (size_t)n);
    if (d)
        for (int64_t i = 0; i < n; i++) d[i] = kn_red_ld(p->data, p->dtype, i);
    return d;
}

/* ---- BatchNormalization ---- */
kn_status *kn_cpu_BatchNormalization(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                     kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    int64_t N, C, S;
    KN_TRY(nchw(node, x, &N, &C, &S));
    if (n_in < 5) return kn_error(KN_ERR_INVALID_ARGUMENT, "BatchNormalization: needs 5 inputs, got %d", n_in);
    static const char *names[5] = {"X", "scale", "B", "input_mean", "input_var"};
    for (int i = 1; i < 5; i++) KN_TRY(check_param(node, in[i], C, names[i]));
    const kn_params_batchnorm *p = KN_PARAMS(node, batchnorm);
    double eps = p->epsilon, mom = p->momentum;
    bool training = node->opset >= 14 ? p->training_mode_attr : (n_out > 1 && out[1] != NULL);
    double *a = scratch(ctx, sizeof(double) * (size_t)C), *b = scratch(ctx, sizeof(double) * (size_t)C);
    if (!a || !b) return KN_OOM(sizeof(double) * (size_t)C);
    kn_dtype t = x->dtype;
    for (int64_t c = 0; c < C; c++) {
        double mean = kn_red_ld(in[3]->data, in[3]->dtype, c), var = kn_red_ld(in[4]->data, in[4]->dtype, c);
        if (training) {
            double s = 0, v = 0, cnt = (double)(N * S);
            for (int64_t n = 0; n < N; n++)
                for (int64_t i = 0; i < S; i++) s += kn_red_ld(x->data, t, (n * C + c) * S + i);
            double bm = s / cnt;
            for (int64_t n = 0; n < N; n++)
                for (int64_t i = 0; i < S; i++) {
                    double d = kn_red_ld(x->data, t, (n * C + c) * S + i) - bm;
                    v += d * d;
                }
            double bv = v / cnt;
            /* outputs 1, 2: running statistics; 3, 4 (opset < 14): the batch statistics */
            if (n_out > 1 && out[1]) kn_red_st(out[1]->data, out[1]->dtype, c, mean * mom + bm * (1 - mom));
            if (n_out > 2 && out[2]) kn_red_st(out[2]->data, out[2]->dtype, c, var * mom + bv * (1 - mom));
            if (n_out > 3 && out[3]) kn_red_st(out[3]->data, out[3]->dtype, c, bm);
            if (n_out > 4 && out[4]) kn_red_st(out[4]->data, out[4]->dtype, c, bv);
            mean = bm;
            var = bv;
        }
        a[c] = kn_red_ld(in[1]->data, in[1]->dtype, c) / sqrt(var + eps);
        b[c] = kn_red_ld(in[2]->data, in[2]->dtype, c) - mean * a[c];
    }
    chan_job j = {x, out[0], C, S, C, false, true, eps, a, b};
    kn_parallel_for(ctx->pool, N * C, kn_red_grain(S), chan_range, &j);
    return NULL;
}

/* ---- InstanceNormalization ---- */
kn_status *kn_cpu_InstanceNormalization(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                        kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    int64_t N, C, S;
    KN_TRY(nchw(node, x, &N, &C, &S));
    if (n_in < 3) return kn_error(KN_ERR_INVALID_ARGUMENT, "InstanceNormalization: needs 3 inputs, got %d", n_in);
    KN_TRY(check_param(node, in[1], C, "scale"));
    KN_TRY(check_param(node, in[2], C, "B"));
    double *sc = param_doubles(ctx, in[1], C), *bi = param_doubles(ctx, in[2], C);
    if (!sc || !bi) return KN_OOM(sizeof(double) * (size_t)C);
    chan_job j = {x, out[0], C, S, C, true, true, KN_PARAMS(node, chan_norm)->epsilon, sc, bi};
    kn_parallel_for(ctx->pool, N * C, kn_red_grain(S * 2), chan_range, &j);
    return NULL;
}

/* ---- GroupNormalization ---- */
kn_status *kn_cpu_GroupNormalization(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                     kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    char buf[KN_DESC_LEN];
    int64_t N, C, S;
    KN_TRY(nchw(node, x, &N, &C, &S));
    int64_t G = KN_PARAMS(node, chan_norm)->num_groups;
    if (G <= 0 || C % G != 0)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "GroupNormalization: num_groups=%lld must divide the channels of %s",
                        (long long)G, kn_tensor_desc(x, buf, sizeof buf));
    if (n_in < 3 || !in[1] || !in[2])
        return kn_error(KN_ERR_INVALID_ARGUMENT, "GroupNormalization: scale and bias are required");
    /* opset 21 takes one scale/bias per channel; opset 18 took one per group */
    int64_t ns = kn_numel(in[1]);
    bool per_channel = ns == C && (node->opset >= 21 || ns != G);
    int64_t np = per_channel ? C : G;
    KN_TRY(check_param(node, in[1], np, "scale"));
    KN_TRY(check_param(node, in[2], np, "bias"));
    double *sc = param_doubles(ctx, in[1], np), *bi = param_doubles(ctx, in[2], np);
    if (!sc || !bi) return KN_OOM(sizeof(double) * (size_t)np);
    chan_job j = {x, out[0], C, S, G, true, per_channel, KN_PARAMS(node, chan_norm)->epsilon, sc, bi};
    kn_parallel_for(ctx->pool, N * G, kn_red_grain(S * (C / G) * 2), chan_range, &j);
    return NULL;
}

/* ---- LpNormalization ---- */
kn_status *kn_cpu_LpNormalization(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                  kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    if (!is_float(x->dtype)) return kn_err_dtype(node, x);
    if (x->ndim < 1) return kn_error(KN_ERR_INVALID_ARGUMENT, "LpNormalization: input must have rank >= 1");
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, lpnorm)->axis, x->ndim, node, &axis));
    int64_t p = KN_PARAMS(node, lpnorm)->p;
    if (p != 1 && p != 2)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "LpNormalization: p must be 1 or 2, got %lld", (long long)p);
    int64_t outer = 1, n = x->dims[axis], inner = 1;
    for (int i = 0; i < axis; i++) outer *= x->dims[i];
    for (int i = axis + 1; i < x->ndim; i++) inner *= x->dims[i];
    kn_dtype t = x->dtype;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            int64_t base = o * n * inner + j;
            double s = 0;
            for (int64_t i = 0; i < n; i++) {
                double v = kn_red_ld(x->data, t, base + i * inner);
                s += p == 1 ? fabs(v) : v * v;
            }
            double norm = p == 1 ? s : sqrt(s);
            for (int64_t i = 0; i < n; i++) {
                double v = kn_red_ld(x->data, t, base + i * inner);
                /* a zero norm gives 0, not 0/0, as the reference does */
                kn_red_st(out[0]->data, t, base + i * inner, norm == 0 ? 0.0 : v / norm);
            }
        }
    return NULL;
}

/* ---- MeanVarianceNormalization: (x - mean) / (sqrt(E[x^2] - E[x]^2) + 1e-9) over axes ---- */
kn_status *kn_cpu_MeanVarianceNormalization(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                            kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    if (!is_float(x->dtype)) return kn_err_dtype(node, x);
    const int64_t *axes = KN_PARAMS(node, mvn)->axes;
    int na = KN_PARAMS(node, mvn)->n_axes;
    bool mask[KN_MAX_DIMS] = {false};
    for (int i = 0; i < na; i++) {
        int a;
        KN_TRY(kn_norm_axis(axes[i], x->ndim, node, &a));
        mask[a] = true;
    }
    if (kn_numel(x) == 0) return NULL;
    int64_t *koff, *roff, nk, nr;
    KN_TRY(kn_red_offsets(ctx, x, mask, &koff, &nk, &roff, &nr));
    kn_dtype t = x->dtype;
    for (int64_t o = 0; o < nk; o++) {
        double s = 0, s2 = 0;
        for (int64_t r = 0; r < nr; r++) {
            double v = kn_red_ld(x->data, t, koff[o] + roff[r]);
            s += v;
            s2 += v * v;
        }
        double mu = s / (double)nr, var = s2 / (double)nr - mu * mu;
        double sd = sqrt(var > 0 ? var : 0) + 1e-9;
        for (int64_t r = 0; r < nr; r++) {
            int64_t k = koff[o] + roff[r];
            kn_red_st(out[0]->data, t, k, (kn_red_ld(x->data, t, k) - mu) / sd);
        }
    }
    return NULL;
}

/* ---- LRN: x / (bias + alpha/size * sum of squares over nearby channels)^beta ---- */
kn_status *kn_cpu_LRN(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                      kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    int64_t N, C, S;
    KN_TRY(nchw(node, x, &N, &C, &S));
    const kn_params_lrn *p = KN_PARAMS(node, lrn);
    int64_t size = p->size;
    if (size <= 0) return kn_error(KN_ERR_INVALID_ARGUMENT, "LRN: size must be positive, got %lld", (long long)size);
    double alpha = p->alpha, beta = p->beta;
    double bias = p->bias;
    int64_t lo = (size - 1) / 2, hi = size - 1 - lo; /* floor and ceil of (size-1)/2 */
    kn_dtype t = x->dtype;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t i = 0; i < S; i++) {
                double sq = 0;
                int64_t c0 = c - lo < 0 ? 0 : c - lo, c1 = c + hi > C - 1 ? C - 1 : c + hi;
                for (int64_t cc = c0; cc <= c1; cc++) {
                    double v = kn_red_ld(x->data, t, (n * C + cc) * S + i);
                    sq += v * v;
                }
                int64_t k = (n * C + c) * S + i;
                kn_red_st(out[0]->data, t, k, kn_red_ld(x->data, t, k) / pow(bias + alpha / (double)size * sq, beta));
            }
    return NULL;
}
