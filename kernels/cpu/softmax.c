/* CPU kernels for Softmax, LogSoftmax and Hardmax. Opset < 13 coerces the input to 2-D at
 * `axis` (default 1); opset >= 13 works along `axis` (default -1). float32 rows that are
 * contiguous (the normalised block is trailing) take the row kernels: scalar reference here,
 * AVX2/AVX-512 versions in reduce_avx2.c / reduce_avx512.c, threaded over rows. Other lines are
 * computed in double, except float16/bfloat16 Softmax, which rounds step by step like the ONNX
 * reference (half_softmax_line). */
#include "graph/ops.h"
#include "kernels/cpu/rows.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <string.h>


/* Scalar reference, numerically stable: shift by the row max, accumulate exp in fp32.
 * A NaN anywhere in a row makes the whole row NaN (its exp poisons the sum), as in numpy. */
void kn_softmax_rows_f32_scalar(const float *x, float *y, int64_t rows, int64_t n, int log_out) {
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        float *q = y + r * n;
        float m = -INFINITY;
        for (int64_t i = 0; i < n; i++)
            if (p[i] > m) m = p[i];
        float s = 0;
        if (log_out) {
            for (int64_t i = 0; i < n; i++) s += expf(p[i] - m);
            float ls = logf(s);
            for (int64_t i = 0; i < n; i++) q[i] = p[i] - m - ls;
        } else {
            for (int64_t i = 0; i < n; i++) {
                q[i] = expf(p[i] - m);
                s += q[i];
            }
            float inv = 1.0f / s;
            for (int64_t i = 0; i < n; i++) q[i] *= inv;
        }
    }
}

typedef struct {
    const float *x;
    float *y;
    int64_t n;
    int log_out, level;
} sm_job;

static void sm_range(void *ctx, int64_t b, int64_t e) {
    sm_job *j = ctx;
    const float *x = j->x + b * j->n;
    float *y = j->y + b * j->n;
    if (j->level == 2) kn_softmax_rows_f32_avx512(x, y, e - b, j->n, j->log_out);
    else if (j->level == 1) kn_softmax_rows_f32_avx2(x, y, e - b, j->n, j->log_out);
    else kn_softmax_rows_f32_scalar(x, y, e - b, j->n, j->log_out);
}

/* Softmax over float32 rows of length n, dispatched and threaded (also used by the losses). */
void kn_softmax_rows_f32(kn_threadpool *pool, const float *x, float *y, int64_t rows, int64_t n, int log_out) {
    sm_job j = {x, y, n, log_out, kn_red_simd_level()};
    kn_parallel_for(pool, rows, kn_red_grain(n), sm_range, &j);
}

typedef enum { SM_SOFTMAX, SM_LOG, SM_HARD } sm_kind;

typedef struct {
    const kn_tensor *x;
    kn_tensor *y;
    int64_t n, inner;
    sm_kind kind;
} sm_gen_job;

/* Rounds v to the storage precision of t (float16 or bfloat16). */
static float round_half(kn_dtype t, float v) {
    return t == KN_F16 ? kn_f16_to_f32(kn_f32_to_f16(v)) : kn_bf16_to_f32(kn_f32_to_bf16(v));
}

/* float16/bfloat16 softmax rounded step by step the way the ONNX reference computes it in numpy:
 * x - max, exp and the quotient each round to the storage type; float16 sums in float32 (numpy's
 * pairwise half sum), bfloat16 rounds after every addition (ml_dtypes). Computing in higher
 * precision and rounding once differs from the reference by an ulp, which at bfloat16's 8 bits
 * exceeds the conformance tolerance. */
static void half_softmax_line(const void *x, void *y, kn_dtype t, int64_t base, int64_t n, int64_t inner, float m) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) {
        float e = round_half(t, expf(round_half(t, (float)kn_red_ld(x, t, base + i * inner) - m)));
        s = t == KN_BF16 ? round_half(t, s + e) : s + e;
    }
    s = round_half(t, s);
    for (int64_t i = 0; i < n; i++) {
        float e = round_half(t, expf(round_half(t, (float)kn_red_ld(x, t, base + i * inner) - m)));
        kn_red_st(y, t, base + i * inner, e / s);
    }
}

/* Generic path: one (outer, inner) line at a time, computed in double. */
static void sm_gen_range(void *ctx, int64_t b, int64_t e) {
    sm_gen_job *j = ctx;
    kn_dtype t = j->x->dtype;
    int64_t n = j->n, inner = j->inner;
    for (int64_t line = b; line < e; line++) {
        int64_t o = line / inner, in = line % inner, base = o * n * inner + in;
        if (j->kind == SM_HARD) {
            int64_t best = 0;
            double bv = n > 0 ? kn_red_ld(j->x->data, t, base) : 0;
            for (int64_t i = 1; i < n && bv == bv; i++) {
                double v = kn_red_ld(j->x->data, t, base + i * inner);
                if (v > bv || v != v) {
                    bv = v;
                    best = i;
                }
            }
            for (int64_t i = 0; i < n; i++) kn_red_st(j->y->data, t, base + i * inner, i == best ? 1.0 : 0.0);
            continue;
        }
        double m = -INFINITY, s = 0;
        for (int64_t i = 0; i < n; i++) {
            double v = kn_red_ld(j->x->data, t, base + i * inner);
            if (v > m) m = v;
        }
        if (j->kind == SM_SOFTMAX && (t == KN_F16 || t == KN_BF16)) {
            half_softmax_line(j->x->data, j->y->data, t, base, n, inner, (float)m);
            continue;
        }
        for (int64_t i = 0; i < n; i++) s += exp(kn_red_ld(j->x->data, t, base + i * inner) - m);
        double ls = log(s);
        for (int64_t i = 0; i < n; i++) {
            double v = kn_red_ld(j->x->data, t, base + i * inner) - m;
            kn_red_st(j->y->data, t, base + i * inner, j->kind == SM_LOG ? v - ls : exp(v) / s);
        }
    }
}

static kn_status *softmax_common(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *x, kn_tensor *y,
                                 sm_kind kind) {
    kn_dtype t = x->dtype;
    if (t != KN_F32 && t != KN_F64 && t != KN_F16 && t != KN_BF16) return kn_err_dtype(node, x);
    if (x->ndim < 1) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input must have rank >= 1", node->op_type);
    int axis;
    const kn_params_softmax *p = KN_PARAMS(node, softmax);
    KN_TRY(kn_norm_axis(p->axis, x->ndim, node, &axis));
    int64_t outer = 1, n = 1, inner = 1;
    for (int i = 0; i < x->ndim; i++) {
        if (i < axis) outer *= x->dims[i];
        else if (i == axis || p->coerce_2d) n *= x->dims[i];
        else inner *= x->dims[i];
    }
    if (outer * n * inner == 0) return NULL;
    if (t == KN_F32 && inner == 1 && kind != SM_HARD) {
        kn_softmax_rows_f32(ctx->pool, x->data, y->data, outer, n, kind == SM_LOG);
        return NULL;
    }
    sm_gen_job j = {x, y, n, inner, kind};
    kn_parallel_for(ctx->pool, outer * inner, kn_red_grain(n * 4), sm_gen_range, &j);
    return NULL;
}

kn_status *kn_cpu_Softmax(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                          kn_tensor *const *out, int n_out) {
    return softmax_common(ctx, node, in[0], out[0], SM_SOFTMAX);
}
kn_status *kn_cpu_LogSoftmax(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                             kn_tensor *const *out, int n_out) {
    return softmax_common(ctx, node, in[0], out[0], SM_LOG);
}
kn_status *kn_cpu_Hardmax(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                          kn_tensor *const *out, int n_out) {
    return softmax_common(ctx, node, in[0], out[0], SM_HARD);
}
