/* CPU kernels for the indexed data movement ops: Gather, GatherElements, GatherND, the
 * Scatter family (with reductions), TensorScatter and OneHot. Indices may be int32 or int64;
 * negative ones wrap once; anything still out of range is an error naming the op and shapes,
 * checked before any element moves. Elements move by byte size (strings are strdup'd). */
#include "graph/ops.h"
#include "graph/op_helpers.h"
#include "kernels/cpu/op_checks.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAXR KN_MAX_DIMS


static int64_t idx_at(const kn_tensor *t, int64_t i) {
    switch (t->dtype) {
    case KN_I64: return ((const int64_t *)t->data)[i];
    case KN_I32: return ((const int32_t *)t->data)[i];
    default: return kn_get_i64(t, i);
    }
}

static kn_status *check_index_dtype(const kn_node *node, const kn_tensor *t) {
    if (t->dtype != KN_I64 && t->dtype != KN_I32) return kn_err_dtype(node, t);
    return NULL;
}

/* Wrap a negative index once and range-check it against dim. */
static kn_status *norm_index(const kn_node *node, const kn_tensor *data, int64_t v, int64_t dim, int axis,
                             int64_t *out) {
    int64_t w = v < 0 ? v + dim : v;
    if (w < 0 || w >= dim) {
        char b[KN_DESC_LEN];
        return kn_error(KN_ERR_RUNTIME, "%s: index %lld out of range [-%lld, %lld) on axis %d of %s", node->op_type,
                        (long long)v, (long long)dim, (long long)dim, axis, kn_tensor_desc(data, b, sizeof b));
    }
    *out = w;
    return NULL;
}

static void row_strides(int nd, const int64_t *dims, int64_t *str) {
    int64_t s = 1;
    for (int k = nd - 1; k >= 0; k--) {
        str[k] = s;
        s *= dims[k];
    }
}

/* ---------------- Gather ---------------- */

typedef struct gather_job {
    const char *src;
    char *dst;
    const int64_t *idx;
    int64_t n_idx, axis_dim, inner;
    size_t es;
} gather_job;

static void gather_rows(void *arg, int64_t begin, int64_t end) {
    const gather_job *j = arg;
    size_t row = (size_t)j->inner * j->es;
    for (int64_t t = begin; t < end; t++) {
        int64_t o = t / j->n_idx, i = t % j->n_idx;
        memcpy(j->dst + t * (int64_t)row, j->src + (o * j->axis_dim + j->idx[i]) * (int64_t)row, row);
    }
}

kn_status *kn_cpu_Gather(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *ind = in[1];
    kn_tensor *y = out[0];
    KN_TRY(check_index_dtype(node, ind));
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, axis)->axis, x->ndim, node, &axis));
    int64_t outer = 1, inner = 1, dim = x->dims[axis], ni = kn_numel(ind);
    for (int k = 0; k < axis; k++) outer *= x->dims[k];
    for (int k = axis + 1; k < x->ndim; k++) inner *= x->dims[k];
    if (outer * ni * inner == 0) return NULL;
    int64_t *idx = kn_scratch_alloc(ctx, (size_t)ni * sizeof(int64_t));
    if (!idx) return KN_OOM(ni * 8);
    for (int64_t i = 0; i < ni; i++) KN_TRY(norm_index(node, x, idx_at(ind, i), dim, axis, &idx[i]));
    size_t es = kn_dtype_size(x->dtype);
    if (x->dtype == KN_STRING) {
        for (int64_t o = 0; o < outer; o++)
            for (int64_t i = 0; i < ni; i++)
                KN_TRY(kn_shapeops_copy_elems(KN_STRING, (char **)y->data + (o * ni + i) * inner,
                                              (char *const *)x->data + (o * dim + idx[i]) * inner, inner));
        return NULL;
    }
    gather_job j = {x->data, y->data, idx, ni, dim, inner, es};
    int64_t grain = inner >= 1024 ? 1 : 1024 / inner;
    kn_parallel_for(ctx->pool, outer * ni, grain, gather_rows, &j);
    return NULL;
}

kn_status *kn_cpu_GatherElements(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                 kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *ind = in[1];
    kn_tensor *y = out[0];
    KN_TRY(check_index_dtype(node, ind));
    int axis, r = x->ndim;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, axis)->axis, r, node, &axis));
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    KN_CHECK(ind->ndim == r, KN_ERR_INVALID_ARGUMENT, "GatherElements: indices %s rank differs from data %s",
             kn_tensor_desc(ind, b2, sizeof b2), kn_tensor_desc(x, b1, sizeof b1));
    for (int k = 0; k < r; k++)
        KN_CHECK(k == axis || ind->dims[k] <= x->dims[k], KN_ERR_INVALID_ARGUMENT,
                 "GatherElements: indices %s exceed data %s", kn_tensor_desc(ind, b2, sizeof b2),
                 kn_tensor_desc(x, b1, sizeof b1));
    int64_t xs[MAXR], n = kn_numel(ind), c[MAXR] = {0};
    row_strides(r, x->dims, xs);
    size_t es = kn_dtype_size(x->dtype);
    for (int64_t t = 0; t < n; t++) {
        int64_t v;
        KN_TRY(norm_index(node, x, idx_at(ind, t), x->dims[axis], axis, &v));
        int64_t off = 0;
        for (int k = 0; k < r; k++) off += (k == axis ? v : c[k]) * xs[k];
        if (x->dtype == KN_STRING)
            KN_TRY(kn_shapeops_copy_elems(KN_STRING, (char **)y->data + t, (char *const *)x->data + off, 1));
        else memcpy((char *)y->data + t * (int64_t)es, (const char *)x->data + off * (int64_t)es, es);
        for (int k = r - 1; k >= 0; k--) {
            if (++c[k] < ind->dims[k]) break;
            c[k] = 0;
        }
    }
    return NULL;
}

kn_status *kn_cpu_GatherND(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                           kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *ind = in[1];
    kn_tensor *y = out[0];
    KN_TRY(check_index_dtype(node, ind));
    int b = (int)KN_PARAMS(node, gathernd)->batch_dims;
    int64_t k = ind->dims[ind->ndim - 1];
    int64_t nb = 1, slice = 1;
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    for (int i = 0; i < b; i++) {
        KN_CHECK(ind->dims[i] == x->dims[i], KN_ERR_INVALID_ARGUMENT,
                 "GatherND: batch dims of indices %s and data %s differ", kn_tensor_desc(ind, b2, sizeof b2),
                 kn_tensor_desc(x, b1, sizeof b1));
        nb *= x->dims[i];
    }
    for (int i = b + (int)k; i < x->ndim; i++) slice *= x->dims[i];
    int64_t xs[MAXR];
    row_strides(x->ndim, x->dims, xs);
    int64_t per_batch_data = nb ? kn_numel(x) / nb : 0;
    int64_t tuples = k ? kn_numel(ind) / k : 0, per_batch = nb ? tuples / nb : 0;
    size_t es = kn_dtype_size(x->dtype);
    for (int64_t t = 0; t < tuples; t++) {
        int64_t bi = per_batch ? t / per_batch : 0, off = bi * per_batch_data;
        for (int64_t d = 0; d < k; d++) {
            int64_t v;
            KN_TRY(norm_index(node, x, idx_at(ind, t * k + d), x->dims[b + d], b + (int)d, &v));
            off += v * xs[b + d];
        }
        KN_TRY(kn_shapeops_copy_elems(x->dtype, (char *)y->data + t * slice * (int64_t)es,
                                      (const char *)x->data + off * (int64_t)es, slice));
    }
    return NULL;
}

/* ---------------- scatter ---------------- */

typedef enum {
    RED_NONE = KN_SCATTER_NONE,
    RED_ADD = KN_SCATTER_ADD,
    RED_MUL = KN_SCATTER_MUL,
    RED_MAX = KN_SCATTER_MAX,
    RED_MIN = KN_SCATTER_MIN
} reduction;

/* An unknown reduction fails at load. */
static kn_status *get_reduction(const kn_node *node, reduction *r) {
    *r = (reduction)KN_PARAMS(node, scatter)->reduction;
    return NULL;
}

/* y[dst] (op)= u[src] for one element. */
static kn_status *apply(kn_tensor *y, int64_t dst, const kn_tensor *u, int64_t src, reduction red) {
    size_t es = kn_dtype_size(y->dtype);
    if (red == RED_NONE) {
        if (y->dtype == KN_STRING) {
            char **d = (char **)y->data + dst;
            free(*d);
            *d = NULL;
            return kn_shapeops_copy_elems(KN_STRING, d, (char *const *)u->data + src, 1);
        }
        memcpy((char *)y->data + dst * (int64_t)es, (const char *)u->data + src * (int64_t)es, es);
        return NULL;
    }
    if (kn_dtype_is_float(y->dtype)) {
        double a = kn_get_f64(y, dst), b = kn_get_f64(u, src);
        double r = red == RED_ADD ? a + b : red == RED_MUL ? a * b : red == RED_MAX ? (a > b ? a : b) : (a < b ? a : b);
        kn_set_f64(y, dst, r);
    } else if (kn_dtype_is_int(y->dtype) || y->dtype == KN_BOOL) {
        int64_t a = kn_get_i64(y, dst), b = kn_get_i64(u, src);
        int64_t r = red == RED_ADD ? (int64_t)((uint64_t)a + (uint64_t)b)
            : red == RED_MUL       ? (int64_t)((uint64_t)a * (uint64_t)b)
            : red == RED_MAX       ? (a > b ? a : b)
                                   : (a < b ? a : b);
        kn_set_i64(y, dst, r);
    } else {
        return kn_error(KN_ERR_UNSUPPORTED, "scatter reduction on %s", kn_dtype_name(y->dtype));
    }
    return NULL;
}

static kn_status *copy_data(const kn_tensor *x, kn_tensor *y) {
    if (y->data == x->data) return NULL;
    return kn_shapeops_copy_elems(x->dtype, y->data, x->data, kn_numel(x));
}

static kn_status *scatter_elements(const kn_node *node, const kn_tensor *const *in, kn_tensor *y,
                                   bool allow_reduction) {
    const kn_tensor *x = in[0], *ind = in[1], *u = in[2];
    KN_TRY(check_index_dtype(node, ind));
    reduction red = RED_NONE;
    if (allow_reduction) KN_TRY(get_reduction(node, &red));
    int axis, r = x->ndim;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, scatter)->axis, r, node, &axis));
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    KN_CHECK(ind->ndim == r && kn_same_shape(ind, u), KN_ERR_INVALID_ARGUMENT,
             "%s: indices %s and updates %s must match (data rank %d)", node->op_type,
             kn_tensor_desc(ind, b1, sizeof b1), kn_tensor_desc(u, b2, sizeof b2), r);
    for (int k = 0; k < r; k++)
        KN_CHECK(ind->dims[k] <= x->dims[k] || k == axis, KN_ERR_INVALID_ARGUMENT, "%s: indices %s exceed data %s",
                 node->op_type, kn_tensor_desc(ind, b1, sizeof b1), kn_tensor_desc(x, b2, sizeof b2));
    int64_t n = kn_numel(ind);
    for (int64_t t = 0; t < n; t++) {
        int64_t v;
        KN_TRY(norm_index(node, x, idx_at(ind, t), x->dims[axis], axis, &v));
    }
    KN_TRY(copy_data(x, y));
    int64_t xs[MAXR], c[MAXR] = {0};
    row_strides(r, x->dims, xs);
    for (int64_t t = 0; t < n; t++) {
        int64_t v = idx_at(ind, t), off = 0;
        if (v < 0) v += x->dims[axis];
        for (int k = 0; k < r; k++) off += (k == axis ? v : c[k]) * xs[k];
        KN_TRY(apply(y, off, u, t, red));
        for (int k = r - 1; k >= 0; k--) {
            if (++c[k] < ind->dims[k]) break;
            c[k] = 0;
        }
    }
    return NULL;
}

kn_status *kn_cpu_Scatter(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                          kn_tensor *const *out, int n_out) {
    return scatter_elements(node, in, out[0], false);
}

kn_status *kn_cpu_ScatterElements(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                  kn_tensor *const *out, int n_out) {
    return scatter_elements(node, in, out[0], true);
}

kn_status *kn_check_scatternd(const kn_node *node, const kn_tensor *x, const kn_tensor *ind, const kn_tensor *u,
                              int64_t *k_out, int64_t *slice, int64_t *tuples) {
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN], b3[KN_DESC_LEN];
    (void)node;
    KN_CHECK(ind->ndim >= 1, KN_ERR_INVALID_ARGUMENT, "ScatterND: indices must have rank >= 1");
    int64_t k = ind->dims[ind->ndim - 1];
    KN_CHECK(k >= 1 && k <= x->ndim, KN_ERR_INVALID_ARGUMENT, "ScatterND: indices %s index too many dims of %s",
             kn_tensor_desc(ind, b1, sizeof b1), kn_tensor_desc(x, b2, sizeof b2));
    /* updates = indices.shape[:-1] + data.shape[k:] */
    bool ok = u->ndim == ind->ndim - 1 + x->ndim - (int)k;
    for (int i = 0; ok && i < ind->ndim - 1; i++) ok = u->dims[i] == ind->dims[i];
    for (int i = (int)k; ok && i < x->ndim; i++) ok = u->dims[ind->ndim - 1 + i - (int)k] == x->dims[i];
    KN_CHECK(ok, KN_ERR_INVALID_ARGUMENT, "ScatterND: updates %s do not match indices %s and data %s",
             kn_tensor_desc(u, b3, sizeof b3), kn_tensor_desc(ind, b1, sizeof b1), kn_tensor_desc(x, b2, sizeof b2));
    *k_out = k;
    *slice = 1;
    for (int i = (int)k; i < x->ndim; i++) *slice *= x->dims[i];
    *tuples = kn_numel(ind) / k;
    return NULL;
}

kn_status *kn_cpu_ScatterND(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                            kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *ind = in[1], *u = in[2];
    kn_tensor *y = out[0];
    KN_TRY(check_index_dtype(node, ind));
    reduction red;
    KN_TRY(get_reduction(node, &red));
    int64_t k, slice, tuples, xs[MAXR];
    KN_TRY(kn_check_scatternd(node, x, ind, u, &k, &slice, &tuples));
    row_strides(x->ndim, x->dims, xs);
    for (int64_t t = 0; t < tuples * k; t++) {
        int64_t v;
        KN_TRY(norm_index(node, x, idx_at(ind, t), x->dims[t % k], (int)(t % k), &v));
    }
    KN_TRY(copy_data(x, y));
    for (int64_t t = 0; t < tuples; t++) {
        int64_t off = 0;
        for (int64_t d = 0; d < k; d++) {
            int64_t v = idx_at(ind, t * k + d);
            if (v < 0) v += x->dims[d];
            off += v * xs[d];
        }
        for (int64_t e = 0; e < slice; e++) KN_TRY(apply(y, off + e, u, t * slice + e, red));
    }
    return NULL;
}

kn_status *kn_cpu_TensorScatter(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *u = in[1], *wi = n_in > 2 ? in[2] : NULL;
    kn_tensor *y = out[0];
    int axis, r = x->ndim;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, tensor_scatter)->axis, r, node, &axis));
    bool circ = KN_PARAMS(node, tensor_scatter)->circular; /* an unknown mode fails at load */
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    bool ok = u->ndim == r && axis >= 1;
    for (int k = 0; ok && k < r; k++) ok = k == axis ? u->dims[k] <= x->dims[k] : u->dims[k] == x->dims[k];
    KN_CHECK(ok, KN_ERR_INVALID_ARGUMENT, "TensorScatter: update %s does not fit cache %s (axis %d)",
             kn_tensor_desc(u, b2, sizeof b2), kn_tensor_desc(x, b1, sizeof b1), axis);
    int64_t B = x->dims[0];
    if (wi)
        KN_CHECK(kn_numel(wi) == B, KN_ERR_INVALID_ARGUMENT, "TensorScatter: write_indices must have %lld values",
                 (long long)B);
    KN_TRY(copy_data(x, y));
    int64_t outer = 1, inner = 1, L = x->dims[axis], S = u->dims[axis];
    for (int k = 0; k < axis; k++) outer *= x->dims[k];
    for (int k = axis + 1; k < r; k++) inner *= x->dims[k];
    int64_t per_b = B ? outer / B : 0;
    size_t es = kn_dtype_size(x->dtype);
    for (int64_t o = 0; o < outer; o++) {
        int64_t b = per_b ? o / per_b : 0, w = wi ? kn_get_i64(wi, b) : 0;
        for (int64_t s = 0; s < S; s++) {
            int64_t pos = w + s;
            if (circ) pos = ((pos % L) + L) % L;
            KN_CHECK(pos >= 0 && pos < L, KN_ERR_RUNTIME, "TensorScatter: write position %lld outside cache of %lld",
                     (long long)pos, (long long)L);
            char *d = (char *)y->data + ((o * L + pos) * inner) * (int64_t)es;
            if (x->dtype == KN_STRING)
                for (int64_t e = 0; e < inner; e++) {
                    free(((char **)d)[e]);
                    ((char **)d)[e] = NULL;
                }
            KN_TRY(kn_shapeops_copy_elems(x->dtype, d, (const char *)u->data + ((o * S + s) * inner) * (int64_t)es,
                                          inner));
        }
    }
    return NULL;
}

/* ---------------- OneHot ---------------- */

kn_status *kn_cpu_OneHot(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    const kn_tensor *ind = in[0], *vals = in[2];
    kn_tensor *y = out[0];
    KN_CHECK(kn_numel(vals) == 2, KN_ERR_INVALID_ARGUMENT, "OneHot: values must hold [off, on]");
    if (y->dtype == KN_STRING) return kn_err_dtype(node, y);
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, axis)->axis, y->ndim, node, &axis));
    int64_t depth = y->dims[axis], outer = 1, inner = 1;
    for (int k = 0; k < axis; k++) outer *= y->dims[k];
    for (int k = axis + 1; k < y->ndim; k++) inner *= y->dims[k];
    size_t es = kn_dtype_size(y->dtype);
    const char *off = vals->data, *on = (const char *)vals->data + es;
    int64_t n = kn_numel(y);
    for (int64_t i = 0; i < n; i++) memcpy((char *)y->data + i * (int64_t)es, off, es); /* es <= 16: cheap */
    for (int64_t o = 0; o < outer; o++)
        for (int64_t e = 0; e < inner; e++) {
            /* indices may be any numeric type; fractional ones truncate */
            double dv = kn_get_f64(ind, o * inner + e);
            if (!(fabs(dv) < (double)depth + 1)) continue; /* NaN and far out of range */
            int64_t v = (int64_t)dv;
            if (v < 0) v += depth;
            if (v < 0 || v >= depth) continue;
            memcpy((char *)y->data + ((o * depth + v) * inner + e) * (int64_t)es, on, es);
        }
    return NULL;
}
