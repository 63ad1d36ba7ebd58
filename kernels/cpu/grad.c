/* CPU reference kernels of the kiln backward ops that autograd emits (shape rules in
 * graph/infer_grad.c): ReduceSumTo, SoftmaxGrad, LogSoftmaxGrad, LayerNormalizationGrad,
 * GeluGrad, GatherGrad, SliceGrad. Plain loops in double for every float dtype (float32 and
 * float64 are what the gradient checks cover); sums go through a double buffer so a float32
 * gradient is rounded once, not at each accumulation. SIMD paths can come when training is
 * measured. */
#include "graph/op_helpers.h"
#include "kernels/cpu/elementwise_simd.h"
#include "kernels/cpu/rows.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool kg_float(kn_dtype t) { return t == KN_F32 || t == KN_F64 || t == KN_F16 || t == KN_BF16; }

static double *kg_zeros(kn_exec_ctx *ctx, int64_t n) {
    double *p = kn_scratch_alloc(ctx, sizeof(double) * (size_t)(n ? n : 1));
    if (p) memset(p, 0, sizeof(double) * (size_t)(n ? n : 1));
    return p;
}

static void kg_store(kn_tensor *t, const double *v) {
    int64_t n = kn_numel(t);
    for (int64_t i = 0; i < n; i++) kn_red_st(t->data, t->dtype, i, v[i]);
}

/* ReduceSumTo of float32 x down to its trailing axes (y, less leading 1s, is x's last axes: a bias
 * gradient, x [rows, cols] summed over rows): column chunks in parallel, each summed over every
 * row in double, the same rounding as the general path at a fraction of its per-element cost. */
typedef struct kg_rows_job {
    const float *x;
    float *y;
    int64_t rows, cols;
} kg_rows_job;

enum { KG_COLS = 256 };

static void kg_sum_rows_task(void *vctx, int64_t begin, int64_t end) {
    const kg_rows_job *j = vctx;
    double acc[KG_COLS];
    for (int64_t c = begin; c < end; c++) {
        int64_t c0 = c * KG_COLS, w = j->cols - c0 < KG_COLS ? j->cols - c0 : KG_COLS;
        for (int64_t k = 0; k < w; k++) acc[k] = 0;
        int64_t r = 0;
        for (; r + 4 <= j->rows; r += 4) { /* four rows per pass over acc: a quarter of its loads and stores */
            const float *x0 = j->x + r * j->cols + c0, *x1 = x0 + j->cols, *x2 = x1 + j->cols, *x3 = x2 + j->cols;
            for (int64_t k = 0; k < w; k++) acc[k] += ((double)x0[k] + (double)x1[k]) + ((double)x2[k] + (double)x3[k]);
        }
        for (; r < j->rows; r++) {
            const float *xr = j->x + r * j->cols + c0;
            for (int64_t k = 0; k < w; k++) acc[k] += xr[k];
        }
        for (int64_t k = 0; k < w; k++) j->y[c0 + k] = (float)acc[k];
    }
}

static bool kg_sum_leading(kn_exec_ctx *ctx, const kn_tensor *x, kn_tensor *y) {
    if (x->dtype != KN_F32 || y->dtype != KN_F32) return false;
    int ly = 0;
    while (ly < y->ndim && y->dims[ly] == 1) ly++;
    int ry = y->ndim - ly;
    if (ry > x->ndim) return false;
    for (int k = 0; k < ry; k++)
        if (x->dims[x->ndim - ry + k] != y->dims[ly + k]) return false;
    kg_rows_job j = {x->data, y->data, 0, kn_numel(y)};
    if (j.cols <= 0) return false;
    j.rows = kn_numel(x) / j.cols;
    kn_parallel_for(ctx->pool, (j.cols + KG_COLS - 1) / KG_COLS, 1, kg_sum_rows_task, &j);
    return true;
}

/* ReduceSumTo: each x element added to the output element it was broadcast from; the output
 * offset follows x's odometer with stride 0 on broadcast axes. */
kn_status *kn_cpu_KnReduceSumTo(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    if (!kg_float(x->dtype)) return kn_err_dtype(node, x);
    if (kg_sum_leading(ctx, x, y)) return NULL;
    int r = x->ndim, lead = x->ndim - y->ndim;
    int64_t ystr[KN_MAX_DIMS], idx[KN_MAX_DIMS] = {0}, s = 1;
    for (int i = r - 1; i >= 0; i--) {
        int64_t yd = i >= lead ? y->dims[i - lead] : 1;
        ystr[i] = yd == 1 && x->dims[i] != 1 ? 0 : s;
        if (i >= lead) s *= yd;
    }
    int64_t n = kn_numel(x), ny = kn_numel(y);
    double *acc = kg_zeros(ctx, ny);
    if (!acc) return KN_OOM(sizeof(double) * (size_t)ny);
    int64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        acc[off] += kn_red_ld(x->data, x->dtype, i);
        for (int d = r - 1; d >= 0; d--) { /* odometer over x, carrying y's offset along */
            off += ystr[d];
            if (++idx[d] < x->dims[d]) break;
            off -= ystr[d] * idx[d];
            idx[d] = 0;
        }
    }
    kg_store(y, acc);
    return NULL;
}

/* outer x n x inner around the softmax axis (coerce_2d: everything from the axis on is the row). */
static kn_status *kg_softmax_layout(const kn_node *node, const kn_tensor *t, int64_t *outer, int64_t *n,
                                    int64_t *inner) {
    const kn_params_softmax_grad *p = KN_PARAMS(node, softmax_grad);
    int axis;
    KN_TRY(kn_norm_axis(p->axis, t->ndim > 0 ? t->ndim : 1, node, &axis));
    *outer = *n = *inner = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (i < axis) *outer *= t->dims[i];
        else if (i == axis || p->coerce_2d) *n *= t->dims[i];
        else *inner *= t->dims[i];
    }
    return NULL;
}

static kn_status *kg_softmax_grad(const kn_node *node, const kn_tensor *const *in, kn_tensor *const *out,
                                  bool log_form) {
    const kn_tensor *dy = in[0], *y = in[1];
    kn_tensor *dx = out[0];
    if (!kg_float(dy->dtype)) return kn_err_dtype(node, dy);
    int64_t outer, n, inner;
    KN_TRY(kg_softmax_layout(node, dy, &outer, &n, &inner));
    for (int64_t o = 0; o < outer; o++)
        for (int64_t k = 0; k < inner; k++) {
            int64_t base = o * n * inner + k;
            double s = 0;
            for (int64_t j = 0; j < n; j++) {
                double g = kn_red_ld(dy->data, dy->dtype, base + j * inner);
                s += log_form ? g : g * kn_red_ld(y->data, y->dtype, base + j * inner);
            }
            for (int64_t j = 0; j < n; j++) {
                int64_t i = base + j * inner;
                double g = kn_red_ld(dy->data, dy->dtype, i), v = kn_red_ld(y->data, y->dtype, i);
                kn_red_st(dx->data, dx->dtype, i, log_form ? g - exp(v) * s : v * (g - s));
            }
        }
    return NULL;
}

kn_status *kn_cpu_KnSoftmaxGrad(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *const *out, int n_out) {
    return kg_softmax_grad(node, in, out, false);
}

kn_status *kn_cpu_KnLogSoftmaxGrad(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                   kn_tensor *const *out, int n_out) {
    return kg_softmax_grad(node, in, out, true);
}

/* Per row of n with xhat = (x - mean) * inv and g = dy * scale:
 * dx = inv * (g - mean(g) - xhat * mean(g * xhat)), dscale = sum over rows of dy * xhat,
 * dbias = sum over rows of dy. */
/* LayerNormalizationGrad on float32: blocks of rows in parallel, each with its own double
 * partial sums of dscale and dbias (added up in block order afterwards, so the result does not
 * depend on the thread count), the same double arithmetic per element as the general path. */
typedef struct kg_ln_job {
    const float *dy, *x, *scale, *mean, *inv;
    float *dx;
    double *part; /* [blocks][2n]: dscale, dbias partial sums */
    int64_t rows, n, blocks;
    bool failed;
} kg_ln_job;

static void kg_ln_task(void *vctx, int64_t begin, int64_t end) {
    kg_ln_job *j = vctx;
    int64_t n = j->n;
    double *gx = malloc(sizeof(double) * (size_t)(2 * n));
    if (!gx) {
        j->failed = true;
        return;
    }
    for (int64_t b = begin; b < end; b++) {
        double *ds = j->part + b * 2 * n, *db = ds + n;
        for (int64_t i = 0; i < 2 * n; i++) ds[i] = 0;
        for (int64_t r = b * j->rows / j->blocks; r < (b + 1) * j->rows / j->blocks; r++) {
            double mu = j->mean[r], is = j->inv[r], mg = 0, mgx = 0;
            const float *dy = j->dy + r * n, *x = j->x + r * n;
            for (int64_t i = 0; i < n; i++) {
                double d = dy[i], xh = ((double)x[i] - mu) * is, g = d * (double)j->scale[i];
                gx[i] = g;
                gx[n + i] = xh;
                mg += g;
                mgx += g * xh;
                ds[i] += d * xh;
                db[i] += d;
            }
            mg /= (double)n;
            mgx /= (double)n;
            if (j->dx)
                for (int64_t i = 0; i < n; i++) j->dx[r * n + i] = (float)(is * (gx[i] - mg - gx[n + i] * mgx));
        }
    }
    free(gx);
}

static bool kg_ln_f32(kn_exec_ctx *ctx, const kn_tensor *const *in, kn_tensor *const *out, int n_out, int64_t rows,
                      int64_t n, kn_status **st) {
    for (int k = 0; k < 5; k++)
        if (in[k]->dtype != KN_F32) return false;
    for (int k = 0; k < n_out && k < 3; k++)
        if (out[k] && out[k]->dtype != KN_F32) return false;
    kg_ln_job j = {in[0]->data, in[1]->data,
                   in[2]->data, in[3]->data,
                   in[4]->data, out[0] ? out[0]->data : NULL,
                   NULL,        rows,
                   n,           rows < 64 ? (rows > 0 ? rows : 1) : 64,
                   false};
    j.part = kn_scratch_alloc(ctx, sizeof(double) * (size_t)(j.blocks * 2 * n + 1));
    if (!j.part) {
        *st = KN_OOM(sizeof(double) * (size_t)(j.blocks * 2 * n));
        return true;
    }
    kn_parallel_for(ctx->pool, j.blocks, 1, kg_ln_task, &j);
    if (j.failed) {
        *st = KN_OOM(sizeof(double) * (size_t)(2 * n));
        return true;
    }
    kn_tensor *dscale = n_out > 1 ? out[1] : NULL, *dbias = n_out > 2 ? out[2] : NULL;
    for (int64_t i = 0; i < n; i++) {
        double s = 0, b = 0;
        for (int64_t blk = 0; blk < j.blocks; blk++) {
            s += j.part[blk * 2 * n + i];
            b += j.part[blk * 2 * n + n + i];
        }
        if (dscale && dscale->data) ((float *)dscale->data)[i] = (float)s;
        if (dbias && dbias->data) ((float *)dbias->data)[i] = (float)b;
    }
    *st = NULL;
    return true;
}

kn_status *kn_cpu_KnLayerNormalizationGrad(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                           kn_tensor *const *out, int n_out) {
    const kn_tensor *dy = in[0], *x = in[1], *scale = in[2], *mean = in[3], *inv = in[4];
    if (!kg_float(x->dtype)) return kn_err_dtype(node, x);
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, layernorm)->axis, x->ndim, node, &axis));
    int64_t rows = 1, n = 1;
    for (int i = 0; i < x->ndim; i++) *(i < axis ? &rows : &n) *= x->dims[i];
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN], b3[KN_DESC_LEN];
    KN_CHECK(kn_numel(scale) == n && kn_numel(mean) == rows && kn_numel(inv) == rows, KN_ERR_INVALID_ARGUMENT,
             "LayerNormalizationGrad: scale %s or statistics %s do not match x %s (rows %lld of %lld)",
             kn_tensor_desc(scale, b1, sizeof b1), kn_tensor_desc(mean, b2, sizeof b2),
             kn_tensor_desc(x, b3, sizeof b3), (long long)rows, (long long)n);
    kn_status *fst = NULL;
    if (kg_ln_f32(ctx, in, out, n_out, rows, n, &fst)) return fst;
    double *ds = kg_zeros(ctx, n), *db = kg_zeros(ctx, n), *gx = kg_zeros(ctx, 2 * n);
    if (!ds || !db || !gx) return KN_OOM(sizeof(double) * (size_t)n);
    kn_tensor *dx = out[0], *dscale = n_out > 1 ? out[1] : NULL, *dbias = n_out > 2 ? out[2] : NULL;
    for (int64_t r = 0; r < rows; r++) {
        double mu = kn_red_ld(mean->data, mean->dtype, r), is = kn_red_ld(inv->data, inv->dtype, r);
        double mg = 0, mgx = 0;
        for (int64_t i = 0; i < n; i++) {
            int64_t k = r * n + i;
            double d = kn_red_ld(dy->data, dy->dtype, k), xh = (kn_red_ld(x->data, x->dtype, k) - mu) * is;
            double g = d * kn_red_ld(scale->data, scale->dtype, i);
            gx[i] = g;
            gx[n + i] = xh;
            mg += g;
            mgx += g * xh;
            ds[i] += d * xh;
            db[i] += d;
        }
        mg /= (double)n;
        mgx /= (double)n;
        if (dx)
            for (int64_t i = 0; i < n; i++)
                kn_red_st(dx->data, dx->dtype, r * n + i, is * (gx[i] - mg - gx[n + i] * mgx));
    }
    if (dscale) kg_store(dscale, ds);
    if (dbias) kg_store(dbias, db);
    return NULL;
}

/* gelu'(x): Phi(x) + x phi(x) exactly, or the derivative of the tanh form. */
static double kg_gelu_grad(double x, bool tanh_form) {
    if (!tanh_form) return 0.5 * (1.0 + erf(x * 0.70710678118654752)) + x * exp(-0.5 * x * x) * 0.39894228040143268;
    const double k = 0.79788456080286536, a = 0.044715;
    double t = tanh(k * (x + a * x * x * x));
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * a * x * x);
}

/* GeluGrad on float32: chunks in parallel, erf / exp of a chunk by the SIMD elementwise kernels
 * (about 1 ulp), the rest in float. */
typedef struct kg_gelu_job {
    const float *dy, *x;
    float *y;
    int64_t n;
    bool tanh_form;
    int level;
} kg_gelu_job;

enum { KG_GELU_CHUNK = 1024 };

static void kg_gelu_task(void *vctx, int64_t begin, int64_t end) {
    const kg_gelu_job *j = vctx;
    float a[KG_GELU_CHUNK], b[KG_GELU_CHUNK];
    const float k = 0.797884560802865f, c = 0.044715f;
    for (int64_t ch = begin; ch < end; ch++) {
        int64_t i0 = ch * KG_GELU_CHUNK, w = j->n - i0 < KG_GELU_CHUNK ? j->n - i0 : KG_GELU_CHUNK;
        const float *x = j->x + i0;
        if (!j->tanh_form) {
            for (int64_t i = 0; i < w; i++) {
                a[i] = x[i] * 0.707106781186548f;
                b[i] = -0.5f * x[i] * x[i];
            }
            kn_ew_unary_f32_level(j->level, KN_EW_ERF, a, a, w);
            kn_ew_unary_f32_level(j->level, KN_EW_EXP, b, b, w);
            for (int64_t i = 0; i < w; i++)
                j->y[i0 + i] = j->dy[i0 + i] * (0.5f * (1.0f + a[i]) + x[i] * b[i] * 0.398942280401433f);
        } else {
            /* tanh u and 1 - tanh^2 u from e = exp(-2|u|): (1 - e) / (1 + e) and 4e / (1 + e)^2, so
             * the derivative of a saturated tanh is its tiny value, not a difference of two 1s */
            for (int64_t i = 0; i < w; i++) {
                b[i] = k * (x[i] + c * x[i] * x[i] * x[i]);
                a[i] = -2.0f * fabsf(b[i]);
            }
            kn_ew_unary_f32_level(j->level, KN_EW_EXP, a, a, w);
            for (int64_t i = 0; i < w; i++) {
                float e = a[i], t = copysignf((1.0f - e) / (1.0f + e), b[i]), s2 = 4.0f * e / ((1.0f + e) * (1.0f + e));
                j->y[i0 + i] =
                    j->dy[i0 + i] * (0.5f * (1.0f + t) + 0.5f * x[i] * s2 * k * (1.0f + 3.0f * c * x[i] * x[i]));
            }
        }
    }
}

kn_status *kn_cpu_KnGeluGrad(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                             kn_tensor *const *out, int n_out) {
    const kn_tensor *dy = in[0], *x = in[1];
    if (!kg_float(x->dtype)) return kn_err_dtype(node, x);
    bool tanh_form = KN_PARAMS(node, act)->gelu_tanh;
    int64_t n = kn_numel(dy);
    KN_CHECK(kn_numel(x) == n, KN_ERR_INVALID_ARGUMENT, "GeluGrad: dy and x differ in size");
    if (x->dtype == KN_F32 && dy->dtype == KN_F32 && out[0]->dtype == KN_F32) {
        kg_gelu_job j = {dy->data, x->data, out[0]->data, n, tanh_form, kn_ew_best_level()};
        kn_parallel_for(ctx->pool, (n + KG_GELU_CHUNK - 1) / KG_GELU_CHUNK, 1, kg_gelu_task, &j);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++)
        kn_red_st(out[0]->data, out[0]->dtype, i,
                  kn_red_ld(dy->data, dy->dtype, i) * kg_gelu_grad(kn_red_ld(x->data, x->dtype, i), tanh_form));
    return NULL;
}

/* out[o, idx[j], k] += dy[o, j, k] over data's axes split at `axis` (negative indices count
 * from the end, as Gather's). */
kn_status *kn_cpu_KnGatherGrad(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                               kn_tensor *const *out, int n_out) {
    const kn_tensor *dy = in[0], *ind = in[1];
    kn_tensor *y = out[0];
    if (!kg_float(dy->dtype)) return kn_err_dtype(node, dy);
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, axis)->axis, y->ndim, node, &axis));
    int64_t outer = 1, inner = 1, dim = y->dims[axis], ni = kn_numel(ind);
    for (int i = 0; i < y->ndim; i++) {
        if (i < axis) outer *= y->dims[i];
        else if (i > axis) inner *= y->dims[i];
    }
    KN_CHECK(kn_numel(dy) == outer * ni * inner, KN_ERR_INVALID_ARGUMENT,
             "GatherGrad: dy has %lld elements, expected %lld", (long long)kn_numel(dy),
             (long long)(outer * ni * inner));
    double *acc = kg_zeros(ctx, kn_numel(y));
    if (!acc) return KN_OOM(sizeof(double) * (size_t)kn_numel(y));
    for (int64_t j = 0; j < ni; j++) {
        int64_t t = kn_get_i64(ind, j);
        if (t < 0) t += dim;
        KN_CHECK(t >= 0 && t < dim, KN_ERR_INVALID_ARGUMENT, "GatherGrad: index %lld out of range for axis of %lld",
                 (long long)kn_get_i64(ind, j), (long long)dim);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t k = 0; k < inner; k++)
                acc[(o * dim + t) * inner + k] += kn_red_ld(dy->data, dy->dtype, (o * ni + j) * inner + k);
    }
    kg_store(y, acc);
    return NULL;
}

/* Zeros of x's shape, then dy written where Slice read: x index = start + j * step per axis,
 * with the starts and steps Slice's own shape rule computes. */
kn_status *kn_cpu_KnSliceGrad(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                              kn_tensor *const *out, int n_out) {
    const kn_tensor *dy = in[0];
    kn_tensor *y = out[0];
    if (!kg_float(dy->dtype)) return kn_err_dtype(node, dy);
    /* Slice's parameter code reads its inputs from opset 10 on; this node is kiln's, opset 1 */
    kn_node sl = *node;
    sl.opset = 10;
    kn_tensor xs = *y;
    const kn_tensor *sin[5] = {&xs, in[2], in[3], n_in > 4 ? in[4] : NULL, n_in > 5 ? in[5] : NULL};
    int64_t st[KN_MAX_DIMS], sp[KN_MAX_DIMS], od[KN_MAX_DIMS];
    KN_TRY(kn_shapeops_slice_params(&sl, sin, 5, st, sp, od));
    int r = y->ndim;
    int64_t n = 1;
    for (int i = 0; i < r; i++) n *= od[i];
    KN_CHECK(n == kn_numel(dy), KN_ERR_INVALID_ARGUMENT, "SliceGrad: dy has %lld elements, the slice %lld",
             (long long)kn_numel(dy), (long long)n);
    int64_t str[KN_MAX_DIMS], idx[KN_MAX_DIMS] = {0}, s = 1, off = 0;
    for (int i = r - 1; i >= 0; i--) {
        str[i] = s;
        s *= y->dims[i];
        off += st[i] * str[i];
    }
    memset(y->data, 0, kn_nbytes(y));
    for (int64_t i = 0; i < n; i++) {
        kn_red_st(y->data, y->dtype, off, kn_red_ld(dy->data, dy->dtype, i));
        for (int d = r - 1; d >= 0; d--) {
            off += sp[d] * str[d];
            if (++idx[d] < od[d]) break;
            off -= sp[d] * str[d] * idx[d];
            idx[d] = 0;
        }
    }
    return NULL;
}

/* BatchNormalizationGrad(dy, x, scale, mean, var) per channel c over its N x S values, with
 * xhat = (x - mean) * inv, inv = 1 / sqrt(var + eps): dbias = sum dy, dscale = sum dy * xhat;
 * inference mode: dx = dy * scale * inv (mean and var are the inputs); training mode (mean and
 * var the batch's, var biased, recomputed here): dx = scale * inv * (dy - (dbias + xhat * dscale)
 * / count), as PyTorch's batch_norm_backward. */
kn_status *kn_cpu_KnBatchNormalizationGrad(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                           kn_tensor *const *out, int n_out) {
    const kn_tensor *dy = in[0], *x = in[1], *scale = in[2], *mean = in[3], *var = in[4];
    if (!kg_float(x->dtype)) return kn_err_dtype(node, x);
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    KN_CHECK(x->ndim >= 2 && kn_same_shape(dy, x), KN_ERR_INVALID_ARGUMENT,
             "BatchNormalizationGrad: dy %s and X %s differ (or rank < 2)", kn_tensor_desc(dy, b1, sizeof b1),
             kn_tensor_desc(x, b2, sizeof b2));
    int64_t N = x->dims[0], C = x->dims[1], S = 1;
    for (int i = 2; i < x->ndim; i++) S *= x->dims[i];
    KN_CHECK(kn_numel(scale) == C && kn_numel(mean) == C && kn_numel(var) == C, KN_ERR_INVALID_ARGUMENT,
             "BatchNormalizationGrad: scale, mean and var must have %lld values", (long long)C);
    const kn_params_batchnorm *p = KN_PARAMS(node, batchnorm);
    bool training = p->training_mode_attr;
    double eps = p->epsilon, cnt = (double)(N * S);
    kn_tensor *dx = out[0], *dscale = n_out > 1 ? out[1] : NULL, *dbias = n_out > 2 ? out[2] : NULL;
    for (int64_t c = 0; c < C; c++) {
        double mu = kn_red_ld(mean->data, mean->dtype, c), v = kn_red_ld(var->data, var->dtype, c);
        if (training) {
            double s = 0, q = 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t i = 0; i < S; i++) s += kn_red_ld(x->data, x->dtype, (n * C + c) * S + i);
            mu = cnt > 0 ? s / cnt : 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t i = 0; i < S; i++) {
                    double d = kn_red_ld(x->data, x->dtype, (n * C + c) * S + i) - mu;
                    q += d * d;
                }
            v = cnt > 0 ? q / cnt : 0;
        }
        double inv = 1.0 / sqrt(v + eps), sc = kn_red_ld(scale->data, scale->dtype, c), sdy = 0, sdyx = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < S; i++) {
                int64_t k = (n * C + c) * S + i;
                double d = kn_red_ld(dy->data, dy->dtype, k);
                sdy += d;
                sdyx += d * (kn_red_ld(x->data, x->dtype, k) - mu) * inv;
            }
        if (dscale) kn_red_st(dscale->data, dscale->dtype, c, sdyx);
        if (dbias) kn_red_st(dbias->data, dbias->dtype, c, sdy);
        if (!dx) continue;
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < S; i++) {
                int64_t k = (n * C + c) * S + i;
                double d = kn_red_ld(dy->data, dy->dtype, k), r = d;
                if (training) r = d - (sdy + (kn_red_ld(x->data, x->dtype, k) - mu) * inv * sdyx) / cnt;
                kn_red_st(dx->data, dx->dtype, k, sc * inv * r);
            }
    }
    return NULL;
}
