/* CPU kernels for Reduce*, ArgMax/ArgMin, CumSum/CumProd and TopK, plus the element load/store
 * helpers and SIMD dispatch shared by the other kernels of this family (softmax.c, norm.c,
 * loss.c). Generic paths compute floats in double and integers in int64 so every dtype gets one
 * obviously-correct implementation; float32 reductions over contiguous trailing axes take the
 * row kernels (scalar here, AVX2/AVX-512 in reduce_avx2.c / reduce_avx512.c). */
#include "graph/ops.h"
#include "graph/op_helpers.h"
#include "kernels/cpu/op_checks.h"
#include "kernels/cpu/rows.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- shared with softmax.c, norm.c, loss.c and the unit tests ---- */

double kn_red_ld(const void *p, kn_dtype t, int64_t i) {
    switch (t) {
    case KN_F32: return ((const float *)p)[i];
    case KN_F64: return ((const double *)p)[i];
    case KN_F16: return kn_f16_to_f32(((const uint16_t *)p)[i]);
    case KN_BF16: return kn_bf16_to_f32(((const uint16_t *)p)[i]);
    case KN_I8: return ((const int8_t *)p)[i];
    case KN_U8: return ((const uint8_t *)p)[i];
    case KN_I16: return ((const int16_t *)p)[i];
    case KN_U16: return ((const uint16_t *)p)[i];
    case KN_I32: return ((const int32_t *)p)[i];
    case KN_U32: return ((const uint32_t *)p)[i];
    case KN_I64: return (double)((const int64_t *)p)[i];
    case KN_U64: return (double)((const uint64_t *)p)[i];
    case KN_BOOL: return ((const uint8_t *)p)[i] != 0;
    default: return 0;
    }
}

/* Integers are truncated toward zero, as numpy's astype does after a float computation. */
void kn_red_st(void *p, kn_dtype t, int64_t i, double v) {
    switch (t) {
    case KN_F32: ((float *)p)[i] = (float)v; break;
    case KN_F64: ((double *)p)[i] = v; break;
    case KN_F16: ((uint16_t *)p)[i] = kn_f32_to_f16((float)v); break;
    case KN_BF16: ((uint16_t *)p)[i] = kn_f32_to_bf16((float)v); break;
    case KN_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    default: {
        /* double -> int64 is undefined in C for NaN and out-of-range values: clamp first; the
         * narrower types then wrap, as numpy's astype does */
        int64_t q;
        if (isnan(v)) q = 0;
        else if (v >= 9.2e18) q = INT64_MAX;
        else if (v <= -9.2e18) q = INT64_MIN;
        else q = (int64_t)v;
        if (t == KN_U64 && v >= 9.2e18) {
            ((uint64_t *)p)[i] = v >= 1.8e19 ? UINT64_MAX : (uint64_t)v;
            break;
        }
        switch (t) {
        case KN_I8: ((int8_t *)p)[i] = (int8_t)q; break;
        case KN_U8: ((uint8_t *)p)[i] = (uint8_t)q; break;
        case KN_I16: ((int16_t *)p)[i] = (int16_t)q; break;
        case KN_U16: ((uint16_t *)p)[i] = (uint16_t)q; break;
        case KN_I32: ((int32_t *)p)[i] = (int32_t)q; break;
        case KN_U32: ((uint32_t *)p)[i] = (uint32_t)q; break;
        case KN_I64: ((int64_t *)p)[i] = q; break;
        case KN_U64: ((uint64_t *)p)[i] = (uint64_t)q; break;
        default: break;
        }
    }
    }
}

/* Integers read exactly; uint64 keeps its bit pattern (callers compare it unsigned). */
static int64_t ld_i64(const void *p, kn_dtype t, int64_t i) {
    switch (t) {
    case KN_I64: return ((const int64_t *)p)[i];
    case KN_U64: return (int64_t)((const uint64_t *)p)[i];
    case KN_I8: return ((const int8_t *)p)[i];
    case KN_U8: return ((const uint8_t *)p)[i];
    case KN_I16: return ((const int16_t *)p)[i];
    case KN_U16: return ((const uint16_t *)p)[i];
    case KN_I32: return ((const int32_t *)p)[i];
    case KN_U32: return ((const uint32_t *)p)[i];
    case KN_BOOL: return ((const uint8_t *)p)[i] != 0;
    default: return (int64_t)kn_red_ld(p, t, i);
    }
}

static void st_i64(void *p, kn_dtype t, int64_t i, int64_t v) {
    switch (t) {
    case KN_I64: ((int64_t *)p)[i] = v; break;
    case KN_U64: ((uint64_t *)p)[i] = (uint64_t)v; break;
    case KN_I8: ((int8_t *)p)[i] = (int8_t)v; break;
    case KN_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case KN_I16: ((int16_t *)p)[i] = (int16_t)v; break;
    case KN_U16: ((uint16_t *)p)[i] = (uint16_t)v; break;
    case KN_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case KN_U32: ((uint32_t *)p)[i] = (uint32_t)v; break;
    case KN_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    default: kn_red_st(p, t, i, (double)v); break;
    }
}

static bool is_float_dtype(kn_dtype t) { return t == KN_F32 || t == KN_F64 || t == KN_F16 || t == KN_BF16; }
static bool is_int_dtype(kn_dtype t) {
    return t == KN_I8 || t == KN_U8 || t == KN_I16 || t == KN_U16 || t == KN_I32 || t == KN_U32 || t == KN_I64 ||
        t == KN_U64;
}
static bool is_unsigned_dtype(kn_dtype t) {
    return t == KN_U8 || t == KN_U16 || t == KN_U32 || t == KN_U64 || t == KN_BOOL;
}

/* 0: scalar, 1: AVX2+FMA, 2: AVX-512. Asked each time (cheap) rather than cached in a global.
 * reduce_avx512.c is compiled with F/BW/VL/DQ, so the compiler may use any of them there. */
int kn_red_simd_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
    return 0;
}

/* Row granularity for kn_parallel_for: enough elements per chunk to amortise the hand-off. */
int64_t kn_red_grain(int64_t row_len) {
    int64_t g = 32768 / (row_len > 0 ? row_len : 1);
    return g < 1 ? 1 : g;
}

/* ---- float32 row reductions (kind: KN_ROWRED_*) ---- */

/* Scalar reference: sums accumulate in double; max/min propagate NaN like numpy. */
void kn_reduce_rows_f32_scalar(const float *x, float *y, int64_t rows, int64_t n, int kind) {
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        if (kind == KN_ROWRED_SUM || kind == KN_ROWRED_MEAN) {
            double s = 0;
            for (int64_t i = 0; i < n; i++) s += p[i];
            y[r] = kind == KN_ROWRED_MEAN ? (float)(s / (double)n) : (float)s;
        } else {
            float m = kind == KN_ROWRED_MAX ? -INFINITY : INFINITY;
            bool nan = false;
            for (int64_t i = 0; i < n; i++) {
                float v = p[i];
                if (v != v) nan = true;
                else if (kind == KN_ROWRED_MAX ? v > m : v < m) m = v;
            }
            y[r] = nan ? NAN : m;
        }
    }
}

typedef struct {
    const float *x;
    float *y;
    int64_t n;
    int kind;
    int level;
} rowred_job;

static void rowred_range(void *ctx, int64_t b, int64_t e) {
    rowred_job *j = ctx;
    const float *x = j->x + b * j->n;
    float *y = j->y + b;
    if (j->level == 2) kn_reduce_rows_f32_avx512(x, y, e - b, j->n, j->kind);
    else if (j->level == 1) kn_reduce_rows_f32_avx2(x, y, e - b, j->n, j->kind);
    else kn_reduce_rows_f32_scalar(x, y, e - b, j->n, j->kind);
}

/* ---- generic reductions ---- */
typedef enum {
    RED_SUM,
    RED_MEAN,
    RED_MAX,
    RED_MIN,
    RED_PROD,
    RED_L1,
    RED_L2,
    RED_LOGSUM,
    RED_LOGSUMEXP,
    RED_SUMSQ
} red_kind;

/* kn_red_offsets (rows.h): also used by MeanVarianceNormalization. */
kn_status *kn_red_offsets(kn_exec_ctx *ctx, const kn_tensor *x, const bool *mask, int64_t **koff, int64_t *nk,
                          int64_t **roff, int64_t *nr) {
    int64_t strides[KN_MAX_DIMS];
    int64_t s = 1;
    for (int i = x->ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= x->dims[i];
    }
    for (int pass = 0; pass < 2; pass++) {
        bool want = pass == 1; /* pass 0: kept dims, pass 1: reduced dims */
        int ax[KN_MAX_DIMS], na = 0;
        int64_t cnt = 1;
        for (int i = 0; i < x->ndim; i++)
            if (mask[i] == want) {
                ax[na++] = i;
                cnt *= x->dims[i];
            }
        int64_t *off = kn_scratch_alloc(ctx, sizeof(int64_t) * (size_t)(cnt > 0 ? cnt : 1));
        if (!off) return KN_OOM(sizeof(int64_t) * (size_t)cnt);
        int64_t idx[KN_MAX_DIMS] = {0}, cur = 0;
        for (int64_t k = 0; k < cnt; k++) {
            off[k] = cur;
            for (int d = na - 1; d >= 0; d--) {
                int a = ax[d];
                if (++idx[d] < x->dims[a]) {
                    cur += strides[a];
                    break;
                }
                cur -= strides[a] * (x->dims[a] - 1);
                idx[d] = 0;
            }
        }
        if (pass == 0) {
            *koff = off;
            *nk = cnt;
        } else {
            *roff = off;
            *nr = cnt;
        }
    }
    return NULL;
}

typedef struct {
    const kn_tensor *x;
    kn_tensor *y;
    red_kind kind;
    const int64_t *koff, *roff;
    int64_t nr;
} red_job;

static double reduce_float(const void *xd, kn_dtype t, const int64_t *roff, int64_t nr, int64_t base, red_kind k) {
    double acc;
    switch (k) {
    case RED_MAX:
    case RED_MIN: {
        acc = k == RED_MAX ? -INFINITY : INFINITY;
        for (int64_t r = 0; r < nr; r++) {
            double v = kn_red_ld(xd, t, base + roff[r]);
            if (v != v) return NAN;
            if (k == RED_MAX ? v > acc : v < acc) acc = v;
        }
        return acc;
    }
    case RED_PROD:
        acc = 1;
        for (int64_t r = 0; r < nr; r++) acc *= kn_red_ld(xd, t, base + roff[r]);
        return acc;
    case RED_LOGSUMEXP: {
        double m = -INFINITY;
        for (int64_t r = 0; r < nr; r++) {
            double v = kn_red_ld(xd, t, base + roff[r]);
            if (v > m) m = v;
        }
        if (isinf(m)) m = 0; /* all -inf (or +inf present): no shift keeps log(sum(exp)) exact */
        acc = 0;
        for (int64_t r = 0; r < nr; r++) acc += exp(kn_red_ld(xd, t, base + roff[r]) - m);
        return log(acc) + m;
    }
    default: break;
    }
    acc = 0;
    for (int64_t r = 0; r < nr; r++) {
        double v = kn_red_ld(xd, t, base + roff[r]);
        if (k == RED_L1) v = fabs(v);
        else if (k == RED_L2 || k == RED_SUMSQ) v = v * v;
        acc += v;
    }
    if (k == RED_MEAN) acc /= (double)nr;
    else if (k == RED_L2) acc = sqrt(acc);
    else if (k == RED_LOGSUM) acc = log(acc);
    return acc;
}

static int64_t reduce_int(const void *xd, kn_dtype t, const int64_t *roff, int64_t nr, int64_t base, red_kind k) {
    bool uns = is_unsigned_dtype(t);
    switch (k) {
    case RED_MAX:
    case RED_MIN: {
        int64_t acc;
        if (uns)
            acc = k == RED_MAX ? 0
                               : (t == KN_U64 ? -1
                                              : (t == KN_U32        ? (int64_t)UINT32_MAX
                                                     : t == KN_U16  ? 65535
                                                     : t == KN_BOOL ? 1
                                                                    : 255));
        else
            acc = k == RED_MAX ? (t == KN_I8        ? INT8_MIN
                                      : t == KN_I16 ? INT16_MIN
                                      : t == KN_I32 ? INT32_MIN
                                                    : INT64_MIN)
                               : (t == KN_I8        ? INT8_MAX
                                      : t == KN_I16 ? INT16_MAX
                                      : t == KN_I32 ? INT32_MAX
                                                    : INT64_MAX);
        for (int64_t r = 0; r < nr; r++) {
            int64_t v = ld_i64(xd, t, base + roff[r]);
            bool gt = uns ? (uint64_t)v > (uint64_t)acc : v > acc;
            bool lt = uns ? (uint64_t)v < (uint64_t)acc : v < acc;
            if (k == RED_MAX ? gt : lt) acc = v;
        }
        return acc;
    }
    case RED_PROD: {
        uint64_t acc = 1; /* unsigned arithmetic wraps like the fixed-width reference */
        for (int64_t r = 0; r < nr; r++) acc *= (uint64_t)ld_i64(xd, t, base + roff[r]);
        return (int64_t)acc;
    }
    case RED_SUM:
    case RED_MEAN:
    case RED_L1:
    case RED_SUMSQ: {
        uint64_t acc = 0;
        for (int64_t r = 0; r < nr; r++) {
            int64_t v = ld_i64(xd, t, base + roff[r]);
            if (k == RED_L1 && !uns && v < 0) v = -(uint64_t)v;
            if (k == RED_SUMSQ) v = (int64_t)((uint64_t)v * (uint64_t)v);
            acc += (uint64_t)v;
        }
        if (k == RED_MEAN) {
            if (nr == 0) return 0;
            return uns ? (int64_t)(acc / (uint64_t)nr) : (int64_t)acc / nr;
        }
        return (int64_t)acc;
    }
    default: return 0; /* L2 / LogSum / LogSumExp go through reduce_float */
    }
}

static void red_range(void *ctx, int64_t b, int64_t e) {
    red_job *j = ctx;
    kn_dtype t = j->x->dtype;
    bool exact_int =
        (is_int_dtype(t) || t == KN_BOOL) && j->kind != RED_L2 && j->kind != RED_LOGSUM && j->kind != RED_LOGSUMEXP;
    for (int64_t o = b; o < e; o++) {
        if (exact_int) st_i64(j->y->data, t, o, reduce_int(j->x->data, t, j->roff, j->nr, j->koff[o], j->kind));
        else kn_red_st(j->y->data, t, o, reduce_float(j->x->data, t, j->roff, j->nr, j->koff[o], j->kind));
    }
}

static kn_status *reduce_common(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *const *out, red_kind kind) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    kn_dtype t = x->dtype;
    bool ok = is_float_dtype(t) || is_int_dtype(t);
    if (t == KN_BOOL && (kind == RED_MAX || kind == RED_MIN)) ok = true;
    if (!ok) return kn_err_dtype(node, x);
    bool mask[KN_MAX_DIMS], noop, unknown;
    KN_TRY(kn_reduce_axes_mask(node, x, n_in > 1 ? in[1] : NULL, mask, &noop, &unknown));
    if (unknown) return kn_error(KN_ERR_RUNTIME, "%s: axes value is not known at run time", node->op_type);
    if (noop) {
        if (x->data != y->data) memcpy(y->data, x->data, kn_nbytes(x));
        return NULL;
    }
    int64_t ny = kn_numel(y);
    if (ny == 0) return NULL;

    /* float32 over a contiguous trailing block of axes: row kernels */
    if (t == KN_F32 && (kind == RED_SUM || kind == RED_MEAN || kind == RED_MAX || kind == RED_MIN)) {
        int first = x->ndim;
        while (first > 0 && mask[first - 1]) first--;
        bool trailing = true;
        for (int i = 0; i < first; i++)
            if (mask[i]) trailing = false;
        if (trailing) {
            int64_t rows = 1, n = 1;
            for (int i = 0; i < x->ndim; i++) {
                if (i < first) rows *= x->dims[i];
                else n *= x->dims[i];
            }
            rowred_job j = {x->data, y->data, n,
                            kind == RED_SUM        ? KN_ROWRED_SUM
                                : kind == RED_MEAN ? KN_ROWRED_MEAN
                                : kind == RED_MAX  ? KN_ROWRED_MAX
                                                   : KN_ROWRED_MIN,
                            kn_red_simd_level()};
            kn_parallel_for(ctx->pool, rows, kn_red_grain(n), rowred_range, &j);
            return NULL;
        }
    }
    red_job j = {x, y, kind, NULL, NULL, 0};
    int64_t nk;
    int64_t *koff, *roff;
    KN_TRY(kn_red_offsets(ctx, x, mask, &koff, &nk, &roff, &j.nr));
    if (nk != ny)
        return kn_error(KN_ERR_RUNTIME, "%s: output has %lld elements, expected %lld", node->op_type, (long long)ny,
                        (long long)nk);
    j.koff = koff;
    j.roff = roff;
    kn_parallel_for(ctx->pool, ny, kn_red_grain(j.nr), red_range, &j);
    return NULL;
}

#define KN_REDUCE_KERNEL(ID, KIND) \
    kn_status *kn_cpu_##ID(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in, \
                           kn_tensor *const *out, int n_out) { \
        return reduce_common(ctx, node, in, n_in, out, KIND); \
    }
KN_REDUCE_KERNEL(ReduceSum, RED_SUM)
KN_REDUCE_KERNEL(ReduceMean, RED_MEAN)
KN_REDUCE_KERNEL(ReduceMax, RED_MAX)
KN_REDUCE_KERNEL(ReduceMin, RED_MIN)
KN_REDUCE_KERNEL(ReduceProd, RED_PROD)
KN_REDUCE_KERNEL(ReduceL1, RED_L1)
KN_REDUCE_KERNEL(ReduceL2, RED_L2)
KN_REDUCE_KERNEL(ReduceLogSum, RED_LOGSUM)
KN_REDUCE_KERNEL(ReduceLogSumExp, RED_LOGSUMEXP)
KN_REDUCE_KERNEL(ReduceSumSquare, RED_SUMSQ)

/* Splits x around axis into [outer, n, inner]. */
void kn_red_split(const kn_tensor *x, int axis, int64_t *outer, int64_t *n, int64_t *inner) {
    *outer = 1;
    *inner = 1;
    *n = x->dims[axis];
    for (int i = 0; i < axis; i++) *outer *= x->dims[i];
    for (int i = axis + 1; i < x->ndim; i++) *inner *= x->dims[i];
}

/* ---- ArgMax / ArgMin ---- */
static kn_status *arg_common(const kn_node *node, const kn_tensor *x, kn_tensor *y, bool is_max) {
    kn_dtype t = x->dtype;
    if (!is_float_dtype(t) && !is_int_dtype(t) && t != KN_BOOL) return kn_err_dtype(node, x);
    if (x->ndim < 1) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input must have rank >= 1", node->op_type);
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, arg)->axis, x->ndim, node, &axis));
    bool last = KN_PARAMS(node, arg)->select_last_index;
    int64_t outer, n, inner;
    kn_red_split(x, axis, &outer, &n, &inner);
    if (n == 0 && outer * inner > 0) {
        char buf[KN_DESC_LEN];
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: cannot reduce an empty axis %d of %s", node->op_type, axis,
                        kn_tensor_desc(x, buf, sizeof buf));
    }
    bool fl = is_float_dtype(t), uns = is_unsigned_dtype(t);
    int64_t *yo = y->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
            int64_t base = o * n * inner + in, best = 0;
            if (fl) {
                double bv = kn_red_ld(x->data, t, base);
                for (int64_t i = 1; i < n && bv == bv; i++) {
                    double v = kn_red_ld(x->data, t, base + i * inner);
                    /* NaN wins (numpy returns the first NaN) */
                    bool better = v != v || (is_max ? (last ? v >= bv : v > bv) : (last ? v <= bv : v < bv));
                    if (better) {
                        bv = v;
                        best = i;
                    }
                }
            } else {
                int64_t bv = ld_i64(x->data, t, base);
                for (int64_t i = 1; i < n; i++) {
                    int64_t v = ld_i64(x->data, t, base + i * inner);
                    int c = uns ? ((uint64_t)v > (uint64_t)bv) - ((uint64_t)v < (uint64_t)bv) : (v > bv) - (v < bv);
                    if (!is_max) c = -c;
                    if (c > 0 || (last && c == 0)) {
                        bv = v;
                        best = i;
                    }
                }
            }
            yo[o * inner + in] = best;
        }
    return NULL;
}

kn_status *kn_cpu_ArgMax(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    return arg_common(node, in[0], out[0], true);
}
kn_status *kn_cpu_ArgMin(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    return arg_common(node, in[0], out[0], false);
}

/* ---- CumSum / CumProd ---- */
kn_status *kn_check_cum_axis(const kn_node *node, const kn_tensor *const *in, int n_in, int *axis) {
    const kn_tensor *x = in[0];
    char buf[KN_DESC_LEN];
    if (n_in < 2 || !in[1] || !in[1]->data)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: the axis input is required", node->op_type);
    if (kn_numel(in[1]) != 1 || (in[1]->dtype != KN_I32 && in[1]->dtype != KN_I64))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: axis must be an int32/int64 scalar, got %s", node->op_type,
                        kn_tensor_desc(in[1], buf, sizeof buf));
    if (x->ndim < 1) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input must have rank >= 1", node->op_type);
    return kn_norm_axis(kn_get_i64(in[1], 0), x->ndim, node, axis);
}

static kn_status *cum_common(const kn_node *node, const kn_tensor *const *in, int n_in, kn_tensor *y, bool prod) {
    const kn_tensor *x = in[0];
    kn_dtype t = x->dtype;
    if (!is_float_dtype(t) && !is_int_dtype(t)) return kn_err_dtype(node, x);
    int axis;
    KN_TRY(kn_check_cum_axis(node, in, n_in, &axis));
    bool excl = KN_PARAMS(node, cum)->exclusive, rev = KN_PARAMS(node, cum)->reverse;
    int64_t outer, n, inner;
    kn_red_split(x, axis, &outer, &n, &inner);
    bool fl = is_float_dtype(t);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in_ = 0; in_ < inner; in_++) {
            int64_t base = o * n * inner + in_;
            double fa = prod ? 1 : 0;
            uint64_t ia = prod ? 1 : 0;
            for (int64_t s = 0; s < n; s++) {
                int64_t i = base + (rev ? n - 1 - s : s) * inner;
                if (fl) {
                    double v = kn_red_ld(x->data, t, i);
                    if (excl) {
                        kn_red_st(y->data, t, i, fa);
                        fa = prod ? fa * v : fa + v;
                    } else {
                        fa = prod ? fa * v : fa + v;
                        kn_red_st(y->data, t, i, fa);
                    }
                } else {
                    uint64_t v = (uint64_t)ld_i64(x->data, t, i);
                    if (excl) {
                        st_i64(y->data, t, i, (int64_t)ia);
                        ia = prod ? ia * v : ia + v;
                    } else {
                        ia = prod ? ia * v : ia + v;
                        st_i64(y->data, t, i, (int64_t)ia);
                    }
                }
            }
        }
    return NULL;
}

kn_status *kn_cpu_CumSum(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    return cum_common(node, in, n_in, out[0], false);
}
kn_status *kn_cpu_CumProd(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                          kn_tensor *const *out, int n_out) {
    return cum_common(node, in, n_in, out[0], true);
}

/* ---- TopK ---- */
typedef struct {
    double f;
    int64_t k;
    int64_t idx;
} topk_item;
typedef struct {
    bool largest, fl, uns;
} topk_order;

/* Order of the result: best first; ties keep the lower index first. NaN counts as the largest
 * value, as in numpy's sort. */
static int topk_cmp(const void *pa, const void *pb, void *arg) {
    const topk_item *a = pa, *b = pb;
    const topk_order *ord = arg;
    int c;
    if (ord->fl) {
        bool an = a->f != a->f, bn = b->f != b->f;
        if (an || bn) c = an - bn;
        else c = (a->f > b->f) - (a->f < b->f);
    } else if (ord->uns) {
        c = ((uint64_t)a->k > (uint64_t)b->k) - ((uint64_t)a->k < (uint64_t)b->k);
    } else {
        c = (a->k > b->k) - (a->k < b->k);
    }
    if (ord->largest) c = -c;
    if (c) return c;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

static void topk_load(const kn_tensor *x, int64_t at, int64_t i, const topk_order *ord, topk_item *it) {
    it->idx = i;
    if (ord->fl) it->f = kn_red_ld(x->data, x->dtype, at);
    else it->k = ld_i64(x->data, x->dtype, at);
}

/* Top k of one line for k much smaller than n: a heap of the k best so far with the worst at the
 * root (O(n log k)), then sorted. topk_cmp is a total order (index breaks ties), so the result
 * equals that of sorting the whole line. */
static void topk_select(const kn_tensor *x, int64_t base, int64_t n, int64_t inner, int64_t k, topk_order *ord,
                        topk_item *heap) {
    int64_t size = 0;
    for (int64_t i = 0; i < n; i++) {
        topk_item it;
        topk_load(x, base + i * inner, i, ord, &it);
        int64_t pos;
        if (size < k) {
            pos = size++;
            while (pos > 0) { /* sift up: parents are worse than children */
                int64_t parent = (pos - 1) / 2;
                if (topk_cmp(&heap[parent], &it, ord) >= 0) break;
                heap[pos] = heap[parent];
                pos = parent;
            }
            heap[pos] = it;
            continue;
        }
        if (topk_cmp(&it, &heap[0], ord) >= 0) continue; /* not better than the worst kept */
        pos = 0;
        for (;;) { /* sift down from the root */
            int64_t c = 2 * pos + 1;
            if (c >= size) break;
            if (c + 1 < size && topk_cmp(&heap[c + 1], &heap[c], ord) > 0) c++;
            if (topk_cmp(&heap[c], &it, ord) <= 0) break;
            heap[pos] = heap[c];
            pos = c;
        }
        heap[pos] = it;
    }
    qsort_r(heap, (size_t)size, sizeof(topk_item), topk_cmp, ord);
}

kn_status *kn_cpu_TopK(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                       kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    kn_dtype t = x->dtype;
    if (!is_float_dtype(t) && !is_int_dtype(t)) return kn_err_dtype(node, x);
    if (x->ndim < 1) return kn_error(KN_ERR_INVALID_ARGUMENT, "TopK: input must have rank >= 1");
    int axis;
    const kn_params_topk *p = KN_PARAMS(node, topk);
    KN_TRY(kn_norm_axis(p->axis, x->ndim, node, &axis));
    kn_tensor *vals = out[0], *idx = n_out > 1 ? out[1] : NULL;
    const kn_tensor *shp = vals ? vals : idx;
    if (!shp) return NULL;
    int64_t k = shp->dims[axis];
    int64_t outer, n, inner;
    kn_red_split(x, axis, &outer, &n, &inner);
    if (k > n || k < 0)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "TopK: k=%lld exceeds axis size %lld", (long long)k, (long long)n);
    if (k == 0 || outer * inner == 0) return NULL;
    topk_order ord = {p->largest, is_float_dtype(t), is_unsigned_dtype(t)};
    topk_item *items = kn_scratch_alloc(ctx, sizeof(topk_item) * (size_t)n);
    if (!items) return KN_OOM(sizeof(topk_item) * (size_t)n);
    /* Results are always sorted: sorted=0 leaves the order unspecified, and sorted is one valid order. */
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in_ = 0; in_ < inner; in_++) {
            int64_t base = o * n * inner + in_;
            if (k * 8 < n) {
                topk_select(x, base, n, inner, k, &ord, items);
            } else {
                for (int64_t i = 0; i < n; i++) topk_load(x, base + i * inner, i, &ord, &items[i]);
                qsort_r(items, (size_t)n, sizeof(topk_item), topk_cmp, &ord);
            }
            int64_t obase = o * k * inner + in_;
            for (int64_t i = 0; i < k; i++) {
                if (vals) {
                    if (ord.fl) kn_red_st(vals->data, t, obase + i * inner, items[i].f);
                    else st_i64(vals->data, t, obase + i * inner, items[i].k);
                }
                if (idx) ((int64_t *)idx->data)[obase + i * inner] = items[i].idx;
            }
        }
    return NULL;
}
