/* CPU kernels of the elementwise family: unary math and activations, binary arithmetic,
 * logic and comparisons with numpy broadcasting, the variadic Max/Min/Mean/Sum, Clip, Where and
 * SwiGLU. Every op has a generic reference path that reads elements through double (floats),
 * int64 (signed) or uint64 (unsigned) so any dtype works; float32 Add/Sub/Mul/Div and the hot
 * activations go through the AVX2/AVX-512 fast paths (elementwise_simd_impl.h) when the CPU
 * has them. Broadcasting collapses the output into runs whose inner strides are 0 or 1, which
 * covers same-shape, scalar and row broadcasts with one loop shape. */
#include "graph/ops.h"
#include "runtime/core/dtype.h"
#include "kernels/cpu/elementwise_simd.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ ISA dispatch */

int kn_ew_best_level(void) {
#if defined(__x86_64__) || defined(__i386__)
    if (__builtin_cpu_supports("avx512f")) return KN_EW_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return KN_EW_AVX2;
#endif
    return KN_EW_SCALAR;
}

static int ew_clamp_level(int level) {
    int best = kn_ew_best_level();
    return level > best ? best : level;
}

/* The reference: double-precision libm, rounded once to float. */
static float ew_ref_unary(int op, float xf) {
    double x = xf;
    switch (op) {
    case KN_EW_RELU: return isnan(xf) ? xf : (xf > 0.0f ? xf : 0.0f);
    case KN_EW_SIGMOID: return (float)(1.0 / (1.0 + exp(-x)));
    case KN_EW_TANH: return (float)tanh(x);
    case KN_EW_EXP: return (float)exp(x);
    case KN_EW_ERF: return (float)erf(x);
    case KN_EW_GELU_ERF: return (float)(0.5 * x * erfc(-x * 0.70710678118654752440));
    case KN_EW_GELU_TANH: return (float)(0.5 * x * (1.0 + tanh(0.79788456080286535588 * (x + 0.044715 * x * x * x))));
    default: return xf;
    }
}

void kn_ew_unary_f32_level(int level, int op, const float *x, float *y, int64_t n) {
    switch (ew_clamp_level(level)) {
    case KN_EW_AVX512: kn_ew_unary_f32_avx512(op, x, y, n); return;
    case KN_EW_AVX2: kn_ew_unary_f32_avx2(op, x, y, n); return;
    default:
        for (int64_t i = 0; i < n; i++) y[i] = ew_ref_unary(op, x[i]);
    }
}

void kn_ew_binary_f32_level(int level, int op, const float *a, int64_t sa, const float *b, int64_t sb, float *y,
                            int64_t n) {
    switch (ew_clamp_level(level)) {
    case KN_EW_AVX512: kn_ew_binary_f32_avx512(op, a, sa, b, sb, y, n); return;
    case KN_EW_AVX2: kn_ew_binary_f32_avx2(op, a, sa, b, sb, y, n); return;
    default:
        for (int64_t i = 0; i < n; i++) {
            float va = a[i * sa], vb = b[i * sb];
            y[i] = op == KN_EW_ADD ? va + vb : op == KN_EW_SUB ? va - vb : op == KN_EW_MUL ? va * vb : va / vb;
        }
    }
}

/* ------------------------------------------------------------------ element access */

typedef enum ew_class { EW_FLOAT, EW_SINT, EW_UINT, EW_BOOL, EW_STRING, EW_OTHER } ew_class;

static ew_class ew_class_of(kn_dtype t) {
    switch (t) {
    case KN_F32:
    case KN_F64:
    case KN_F16:
    case KN_BF16:
    case KN_F8E4M3FN:
    case KN_F8E4M3FNUZ:
    case KN_F8E5M2:
    case KN_F8E5M2FNUZ:
    case KN_F4E2M1:
    case KN_F8E8M0: return EW_FLOAT;
    case KN_I8:
    case KN_I16:
    case KN_I32:
    case KN_I64:
    case KN_I4:
    case KN_I2: return EW_SINT;
    case KN_U8:
    case KN_U16:
    case KN_U32:
    case KN_U64:
    case KN_U4:
    case KN_U2: return EW_UINT;
    case KN_BOOL: return EW_BOOL;
    case KN_STRING: return EW_STRING;
    default: return EW_OTHER;
    }
}

static int64_t ew_ld_i(const void *p, kn_dtype t, int64_t i) {
    switch (t) {
    case KN_I8:
    case KN_I4:
    case KN_I2: return ((const int8_t *)p)[i];
    case KN_I16: return ((const int16_t *)p)[i];
    case KN_I32: return ((const int32_t *)p)[i];
    case KN_I64: return ((const int64_t *)p)[i];
    case KN_U8:
    case KN_U4:
    case KN_U2:
    case KN_BOOL: return ((const uint8_t *)p)[i];
    case KN_U16: return ((const uint16_t *)p)[i];
    case KN_U32: return ((const uint32_t *)p)[i];
    case KN_U64: return (int64_t)((const uint64_t *)p)[i];
    default: return 0;
    }
}

static uint64_t ew_ld_u(const void *p, kn_dtype t, int64_t i) { return (uint64_t)ew_ld_i(p, t, i); }

static double ew_ld_f(const void *p, kn_dtype t, int64_t i) {
    switch (t) {
    case KN_F32: return ((const float *)p)[i];
    case KN_F64: return ((const double *)p)[i];
    case KN_F16: return kn_f16_to_f32(((const uint16_t *)p)[i]);
    case KN_BF16: return kn_bf16_to_f32(((const uint16_t *)p)[i]);
    case KN_F8E4M3FN:
    case KN_F8E4M3FNUZ:
    case KN_F8E5M2:
    case KN_F8E5M2FNUZ:
    case KN_F8E8M0: return kn_f8_to_f32(((const uint8_t *)p)[i], t);
    case KN_F4E2M1: return kn_f4e2m1_to_f32(((const uint8_t *)p)[i]);
    case KN_U64: return (double)((const uint64_t *)p)[i];
    default: return (double)ew_ld_i(p, t, i);
    }
}

/* Integers wrap to the destination width (two's complement), as ONNX's fixed-point rules say. */
static void ew_st_i(void *p, kn_dtype t, int64_t i, int64_t v) {
    switch (t) {
    case KN_I8: ((int8_t *)p)[i] = (int8_t)v; break;
    case KN_I4: ((int8_t *)p)[i] = (int8_t)((int)((v & 0xf) ^ 0x8) - 8); break;
    case KN_I2: ((int8_t *)p)[i] = (int8_t)((int)((v & 0x3) ^ 0x2) - 2); break;
    case KN_I16: ((int16_t *)p)[i] = (int16_t)v; break;
    case KN_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case KN_I64: ((int64_t *)p)[i] = v; break;
    case KN_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case KN_U4: ((uint8_t *)p)[i] = (uint8_t)(v & 0xf); break;
    case KN_U2: ((uint8_t *)p)[i] = (uint8_t)(v & 0x3); break;
    case KN_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    case KN_U16: ((uint16_t *)p)[i] = (uint16_t)v; break;
    case KN_U32: ((uint32_t *)p)[i] = (uint32_t)v; break;
    case KN_U64: ((uint64_t *)p)[i] = (uint64_t)v; break;
    default: break;
    }
}

/* float -> integer without undefined behaviour: truncation, NaN to 0, out of range clamped */
static int64_t ew_f2i(double v) {
    if (isnan(v)) return 0;
    if (v >= 9223372036854775807.0) return INT64_MAX;
    if (v <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)v;
}

static void ew_st_f(void *p, kn_dtype t, int64_t i, double v) {
    switch (t) {
    case KN_F32: ((float *)p)[i] = (float)v; break;
    case KN_F64: ((double *)p)[i] = v; break;
    case KN_F16: ((uint16_t *)p)[i] = kn_f32_to_f16((float)v); break;
    case KN_BF16: ((uint16_t *)p)[i] = kn_f32_to_bf16((float)v); break;
    case KN_F8E4M3FN:
    case KN_F8E4M3FNUZ:
    case KN_F8E5M2:
    case KN_F8E5M2FNUZ:
    case KN_F8E8M0: ((uint8_t *)p)[i] = kn_f32_to_f8((float)v, t, true); break;
    case KN_F4E2M1: ((uint8_t *)p)[i] = kn_f32_to_f4e2m1((float)v); break;
    case KN_U64:
        ((uint64_t *)p)[i] = isnan(v) || v <= 0 ? 0 : v >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)v;
        break;
    default: ew_st_i(p, t, i, ew_f2i(v)); break;
    }
}

/* ------------------------------------------------------------------ broadcasting */

#define EW_MAX_IN 3
typedef struct ew_bcast {
    int nd, nin;
    int64_t total;
    int64_t dims[KN_MAX_DIMS];
    int64_t st[EW_MAX_IN][KN_MAX_DIMS]; /* element strides per input, 0 where broadcast */
} ew_bcast;

static void ew_bcast_init(ew_bcast *b, const kn_tensor *out, const kn_tensor *const *ins, int nin) {
    int r = out->ndim;
    int64_t st[EW_MAX_IN][KN_MAX_DIMS];
    for (int k = 0; k < nin; k++) {
        const kn_tensor *t = ins[k];
        int64_t s = 1;
        for (int i = r - 1; i >= 0; i--) {
            int ti = i - (r - t->ndim);
            int64_t d = ti >= 0 ? t->dims[ti] : 1;
            st[k][i] = d == 1 ? 0 : s;
            s *= d;
        }
    }
    /* drop unit dims, then merge neighbours that every input walks contiguously */
    int nd = 0;
    for (int i = 0; i < r; i++) {
        if (out->dims[i] == 1) continue;
        if (nd > 0) {
            bool merge = true;
            for (int k = 0; k < nin; k++)
                if (b->st[k][nd - 1] != st[k][i] * out->dims[i]) merge = false;
            if (merge) {
                b->dims[nd - 1] *= out->dims[i];
                for (int k = 0; k < nin; k++) b->st[k][nd - 1] = st[k][i];
                continue;
            }
        }
        b->dims[nd] = out->dims[i];
        for (int k = 0; k < nin; k++) b->st[k][nd] = st[k][i];
        nd++;
    }
    if (nd == 0) {
        b->dims[0] = 1;
        for (int k = 0; k < nin; k++) b->st[k][0] = 0;
        nd = 1;
    }
    b->nd = nd;
    b->nin = nin;
    b->total = 1;
    for (int i = 0; i < nd; i++) b->total *= b->dims[i];
}

/* A run of n output elements starting at output index o; input k starts at off[k] and steps
 * by inc[k] (0 or 1). */
typedef void (*ew_seg_fn)(void *ctx, int64_t o, const int64_t *off, const int64_t *inc, int64_t n);

static void ew_bcast_walk(const ew_bcast *b, int64_t begin, int64_t end, ew_seg_fn fn, void *ctx) {
    int nd = b->nd, last = nd - 1;
    int64_t idx[KN_MAX_DIMS], off[EW_MAX_IN] = {0}, inc[EW_MAX_IN] = {0};
    int64_t rem = begin;
    for (int d = last; d >= 0; d--) {
        idx[d] = rem % b->dims[d];
        rem /= b->dims[d];
    }
    for (int k = 0; k < b->nin; k++) {
        for (int d = 0; d < nd; d++) off[k] += idx[d] * b->st[k][d];
        inc[k] = b->st[k][last];
    }
    int64_t pos = begin;
    while (pos < end) {
        int64_t n = b->dims[last] - idx[last];
        if (n > end - pos) n = end - pos;
        fn(ctx, pos, off, inc, n);
        pos += n;
        idx[last] += n;
        for (int k = 0; k < b->nin; k++) off[k] += n * inc[k];
        for (int d = last; d > 0 && idx[d] == b->dims[d]; d--) {
            for (int k = 0; k < b->nin; k++) off[k] += b->st[k][d - 1] - idx[d] * b->st[k][d];
            idx[d] = 0;
            idx[d - 1]++;
        }
    }
}

typedef struct ew_par {
    const ew_bcast *bc;
    ew_seg_fn fn;
    void *ctx;
} ew_par;

static void ew_par_range(void *ctx, int64_t begin, int64_t end) {
    ew_par *p = ctx;
    ew_bcast_walk(p->bc, begin, end, p->fn, p->ctx);
}

static void ew_run_bcast(kn_exec_ctx *ctx, const ew_bcast *bc, int64_t grain, ew_seg_fn fn, void *job) {
    ew_par p = {bc, fn, job};
    kn_parallel_for(ctx ? ctx->pool : NULL, bc->total, grain, ew_par_range, &p);
}

static kn_status *ew_need_input(const kn_node *node, const kn_tensor *const *in, int n_in, int k) {
    if (k >= n_in || !in[k] || (!in[k]->data && kn_numel(in[k]) > 0))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input %d is missing", node->op_type, k);
    return NULL;
}

/* ------------------------------------------------------------------ unary ops */

typedef struct ew_unary_job {
    int op;
    kn_dtype tx, ty;
    const void *x;
    void *y;
    double alpha, beta, gamma;
    int64_t iattr;
} ew_unary_job;

static double ew_softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

static double ew_unary_f(const ew_unary_job *j, double x) {
    double a = j->alpha, g = j->gamma;
    switch (j->op) {
    case KN_OP_Abs: return fabs(x);
    case KN_OP_Acos: return acos(x);
    case KN_OP_Acosh: return acosh(x);
    case KN_OP_Asin: return asin(x);
    case KN_OP_Asinh: return asinh(x);
    case KN_OP_Atan: return atan(x);
    case KN_OP_Atanh: return atanh(x);
    case KN_OP_Ceil: return ceil(x);
    case KN_OP_Cos: return cos(x);
    case KN_OP_Cosh: return cosh(x);
    case KN_OP_Erf: return erf(x);
    case KN_OP_Exp: return exp(x);
    case KN_OP_Floor: return floor(x);
    case KN_OP_Log: return log(x);
    case KN_OP_Neg: return -x;
    case KN_OP_Reciprocal: return 1.0 / x;
    case KN_OP_Round: return nearbyint(x); /* ties to even under the default rounding mode */
    case KN_OP_Sign: return x > 0 ? 1.0 : x < 0 ? -1.0 : x;
    case KN_OP_Sin: return sin(x);
    case KN_OP_Sinh: return sinh(x);
    case KN_OP_Sqrt: return sqrt(x);
    case KN_OP_Tan: return tan(x);
    case KN_OP_Tanh: return tanh(x);
    case KN_OP_Sigmoid: return 1.0 / (1.0 + exp(-x));
    case KN_OP_Relu: return isnan(x) ? x : x > 0 ? x : 0.0;
    case KN_OP_LeakyRelu: return x < 0 ? a * x : x;
    case KN_OP_Elu: return x < 0 ? a * expm1(x) : x;
    case KN_OP_Selu: return x <= 0 ? g * (a * exp(x) - a) : g * x;
    case KN_OP_Celu: return fmax(0.0, x) + fmin(0.0, a * expm1(x / a));
    case KN_OP_Gelu:
        if (j->iattr) return 0.5 * x * (1.0 + tanh(0.79788456080286535588 * (x + 0.044715 * x * x * x)));
        return 0.5 * x * erfc(-x * 0.70710678118654752440);
    case KN_OP_HardSigmoid: return fmax(0.0, fmin(1.0, a * x + j->beta));
    case KN_OP_HardSwish: return x * fmax(0.0, fmin(1.0, x / 6.0 + 0.5));
    case KN_OP_Softplus: return ew_softplus(x);
    case KN_OP_Softsign: return x / (1.0 + fabs(x));
    case KN_OP_Mish: return x * tanh(ew_softplus(x));
    case KN_OP_Swish: return x / (1.0 + exp(-a * x));
    case KN_OP_ThresholdedRelu: return x > a ? x : 0.0;
    case KN_OP_Shrink: return x < -a ? x + j->beta : x > a ? x - j->beta : 0.0;
    default: return x;
    }
}

/* Integer unary ops; values arrive sign- or zero-extended to 64 bits. */
static int64_t ew_unary_i(const ew_unary_job *j, int64_t x, bool is_unsigned) {
    switch (j->op) {
    case KN_OP_Abs: return is_unsigned || x >= 0 ? x : (int64_t)(0 - (uint64_t)x);
    case KN_OP_Neg: return (int64_t)(0 - (uint64_t)x);
    case KN_OP_Sign: return is_unsigned ? x != 0 : (x > 0) - (x < 0);
    case KN_OP_Relu: return !is_unsigned && x < 0 ? 0 : x;
    case KN_OP_BitwiseNot: return ~x;
    case KN_OP_Not: return !x;
    default: return x;
    }
}

static void ew_unary_range(void *ctx, int64_t b, int64_t e) {
    const ew_unary_job *j = ctx;
    ew_class cx = ew_class_of(j->tx);
    if (j->op == KN_OP_IsNaN || j->op == KN_OP_IsInf) {
        uint8_t *y = j->y;
        for (int64_t i = b; i < e; i++) {
            double v = ew_ld_f(j->x, j->tx, i);
            if (j->op == KN_OP_IsNaN) y[i] = isnan(v) != 0;
            else y[i] = isinf(v) && ((v > 0 && j->iattr & 2) || (v < 0 && j->iattr & 1));
        }
        return;
    }
    if (cx == EW_FLOAT) {
        if (j->tx == KN_F32) {
            const float *x = j->x;
            float *y = j->y;
            for (int64_t i = b; i < e; i++) y[i] = (float)ew_unary_f(j, x[i]);
        } else if (j->tx == KN_F64) {
            const double *x = j->x;
            double *y = j->y;
            for (int64_t i = b; i < e; i++) y[i] = ew_unary_f(j, x[i]);
        } else {
            for (int64_t i = b; i < e; i++) ew_st_f(j->y, j->ty, i, ew_unary_f(j, ew_ld_f(j->x, j->tx, i)));
        }
        return;
    }
    if (j->op == KN_OP_Shrink) { /* integer Shrink: the thresholds are floats */
        for (int64_t i = b; i < e; i++) ew_st_f(j->y, j->ty, i, ew_unary_f(j, ew_ld_f(j->x, j->tx, i)));
        return;
    }
    bool u = cx == EW_UINT;
    for (int64_t i = b; i < e; i++) ew_st_i(j->y, j->ty, i, ew_unary_i(j, ew_ld_i(j->x, j->tx, i), u));
}

typedef struct ew_simd_unary_job {
    int op, level;
    const float *x;
    float *y;
} ew_simd_unary_job;

static void ew_simd_unary_range(void *ctx, int64_t b, int64_t e) {
    const ew_simd_unary_job *j = ctx;
    kn_ew_unary_f32_level(j->level, j->op, j->x + b, j->y + b, e - b);
}

/* Which dtype classes each unary op accepts. */
static bool ew_unary_accepts(int op, ew_class c) {
    switch (op) {
    case KN_OP_Abs:
    case KN_OP_Neg:
    case KN_OP_Sign:
    case KN_OP_Relu:
    case KN_OP_Shrink: return c == EW_FLOAT || c == EW_SINT || c == EW_UINT;
    case KN_OP_BitwiseNot: return c == EW_SINT || c == EW_UINT;
    case KN_OP_Not: return c == EW_BOOL;
    default: return c == EW_FLOAT;
    }
}

static kn_status *ew_unary(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                           kn_tensor *const *out, int n_out, int op) {
    KN_TRY(ew_need_input(node, in, n_in, 0));
    if (n_out < 1 || !out[0]) return NULL;
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    if (!ew_unary_accepts(op, ew_class_of(x->dtype))) return kn_err_dtype(node, x);
    int64_t n = kn_numel(x);
    if (n <= 0) return NULL;
    ew_unary_job j = {op, x->dtype, y->dtype, x->data, y->data, 0, 0, 0, 0};
    switch (op) {
    case KN_OP_LeakyRelu:
    case KN_OP_Elu:
    case KN_OP_Celu:
    case KN_OP_ThresholdedRelu:
    case KN_OP_Swish: j.alpha = KN_PARAMS(node, act)->alpha; break;
    case KN_OP_Selu:
        j.alpha = KN_PARAMS(node, act)->alpha;
        j.gamma = KN_PARAMS(node, act)->gamma;
        break;
    case KN_OP_HardSigmoid:
    case KN_OP_Shrink: /* Shrink: lambd, bias */
        j.alpha = KN_PARAMS(node, act)->alpha;
        j.beta = KN_PARAMS(node, act)->beta;
        break;
    case KN_OP_Gelu: j.iattr = KN_PARAMS(node, act)->gelu_tanh ? 1 : 0; break;
    case KN_OP_IsInf:
        j.iattr = (KN_PARAMS(node, act)->detect_negative ? 1 : 0) | (KN_PARAMS(node, act)->detect_positive ? 2 : 0);
        break;
    default: break;
    }
    if (op == KN_OP_Celu && j.alpha == 0.0) return kn_error(KN_ERR_INVALID_MODEL, "Celu: alpha must be nonzero");
    kn_threadpool *pool = ctx ? ctx->pool : NULL;
    if (x->dtype == KN_F32 && y->dtype == KN_F32) {
        int sop = -1;
        switch (op) {
        case KN_OP_Relu: sop = KN_EW_RELU; break;
        case KN_OP_Sigmoid: sop = KN_EW_SIGMOID; break;
        case KN_OP_Tanh: sop = KN_EW_TANH; break;
        case KN_OP_Exp: sop = KN_EW_EXP; break;
        case KN_OP_Erf: sop = KN_EW_ERF; break;
        case KN_OP_Gelu: sop = j.iattr ? KN_EW_GELU_TANH : KN_EW_GELU_ERF; break;
        default: break;
        }
        int level = kn_ew_best_level();
        if (sop >= 0 && level > KN_EW_SCALAR) {
            ew_simd_unary_job sj = {sop, level, x->data, y->data};
            kn_parallel_for(pool, n, 16384, ew_simd_unary_range, &sj);
            return NULL;
        }
    }
    kn_parallel_for(pool, n, 4096, ew_unary_range, &j);
    return NULL;
}

#define EW_UNARY(ID) \
    kn_status *kn_cpu_##ID(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in, \
                           kn_tensor *const *out, int n_out) { \
        return ew_unary(ctx, node, in, n_in, out, n_out, KN_OP_##ID); \
    }
EW_UNARY(Abs)
EW_UNARY(Acos)
EW_UNARY(Acosh)
EW_UNARY(Asin)
EW_UNARY(Asinh)
EW_UNARY(Atan)
EW_UNARY(Atanh)
EW_UNARY(Ceil)
EW_UNARY(Cos)
EW_UNARY(Cosh)
EW_UNARY(Erf)
EW_UNARY(Exp)
EW_UNARY(Floor)
EW_UNARY(Log)
EW_UNARY(Neg)
EW_UNARY(Reciprocal)
EW_UNARY(Round)
EW_UNARY(Sign)
EW_UNARY(Sin)
EW_UNARY(Sinh)
EW_UNARY(Sqrt)
EW_UNARY(Tan)
EW_UNARY(Tanh)
EW_UNARY(Sigmoid)
EW_UNARY(Relu)
EW_UNARY(LeakyRelu)
EW_UNARY(Elu)
EW_UNARY(Selu)
EW_UNARY(Celu)
EW_UNARY(Gelu)
EW_UNARY(HardSigmoid)
EW_UNARY(HardSwish)
EW_UNARY(Softplus)
EW_UNARY(Softsign)
EW_UNARY(Mish)
EW_UNARY(Swish)
EW_UNARY(ThresholdedRelu)
EW_UNARY(Shrink)
EW_UNARY(IsNaN)
EW_UNARY(IsInf)
EW_UNARY(Not)
EW_UNARY(BitwiseNot)

/* ------------------------------------------------------------------ binary ops */

typedef struct ew_binary_job {
    int op;
    kn_dtype ta, tb, ty;
    const void *a, *b;
    void *y;
    int64_t iattr; /* Mod: fmod; BitShift: 1 = left */
    double alpha;  /* SwiGLU */
    int level;     /* SIMD level for the float32 arithmetic fast path, 0 = none */
} ew_binary_job;

static bool ew_is_compare(int op) {
    return op == KN_OP_Equal || op == KN_OP_Greater || op == KN_OP_GreaterOrEqual || op == KN_OP_Less ||
        op == KN_OP_LessOrEqual;
}

static double ew_binary_f(const ew_binary_job *j, double a, double b) {
    switch (j->op) {
    case KN_OP_Add: return a + b;
    case KN_OP_Sub: return a - b;
    case KN_OP_Mul: return a * b;
    case KN_OP_Div: return a / b;
    case KN_OP_Pow: return pow(a, b);
    case KN_OP_Mod: {
        double r = fmod(a, b);
        if (!j->iattr && r != 0 && ((r < 0) != (b < 0))) r += b; /* Python's sign rule */
        return r;
    }
    case KN_OP_PRelu: return a < 0 ? a * b : a;
    case KN_OP_Max: return isnan(a) || isnan(b) ? NAN : a > b ? a : b;
    case KN_OP_Min: return isnan(a) || isnan(b) ? NAN : a < b ? a : b;
    case KN_OP_Equal: return a == b;
    case KN_OP_Greater: return a > b;
    case KN_OP_GreaterOrEqual: return a >= b;
    case KN_OP_Less: return a < b;
    case KN_OP_LessOrEqual: return a <= b;
    case KN_OP_SwiGLU: return a / (1.0 + exp(-j->alpha * a)) * b;
    default: return 0;
    }
}

static int64_t ew_ipow(int64_t base, int64_t e) {
    if (e < 0) return base == 1 ? 1 : base == -1 ? ((e & 1) ? -1 : 1) : 0;
    uint64_t r = 1, b = (uint64_t)base;
    while (e) {
        if (e & 1) r *= b;
        b *= b;
        e >>= 1;
    }
    return (int64_t)r;
}

/* Signed integer binary ops; wrapping arithmetic is done in uint64 to stay defined. */
static int64_t ew_binary_s(const ew_binary_job *j, int64_t a, int64_t b) {
    switch (j->op) {
    case KN_OP_Add: return (int64_t)((uint64_t)a + (uint64_t)b);
    case KN_OP_Sub: return (int64_t)((uint64_t)a - (uint64_t)b);
    case KN_OP_Mul: return (int64_t)((uint64_t)a * (uint64_t)b);
    case KN_OP_Div:
        if (b == 0) return 0;
        if (b == -1) return (int64_t)(0 - (uint64_t)a);
        return a / b; /* C truncates toward zero, as ONNX integer Div does */
    case KN_OP_Mod: {
        if (b == 0 || b == -1) return 0;
        int64_t r = a % b;
        if (!j->iattr && r != 0 && ((r < 0) != (b < 0))) r += b;
        return r;
    }
    case KN_OP_Pow: return ew_ipow(a, b);
    case KN_OP_PRelu: return a < 0 ? (int64_t)((uint64_t)a * (uint64_t)b) : a;
    case KN_OP_BitShift: {
        int bits = 64;
        switch (j->ta) {
        case KN_I8: bits = 8; break;
        case KN_I16: bits = 16; break;
        case KN_I32: bits = 32; break;
        default: break;
        }
        if (b < 0 || b >= bits) return j->iattr ? 0 : (a < 0 ? -1 : 0);
        return j->iattr ? (int64_t)((uint64_t)a << b) : a >> b;
    }
    case KN_OP_BitwiseAnd:
    case KN_OP_And: return a & b;
    case KN_OP_BitwiseOr:
    case KN_OP_Or: return a | b;
    case KN_OP_BitwiseXor:
    case KN_OP_Xor: return a ^ b;
    case KN_OP_Max: return a > b ? a : b;
    case KN_OP_Min: return a < b ? a : b;
    case KN_OP_Equal: return a == b;
    case KN_OP_Greater: return a > b;
    case KN_OP_GreaterOrEqual: return a >= b;
    case KN_OP_Less: return a < b;
    case KN_OP_LessOrEqual: return a <= b;
    default: return 0;
    }
}

static uint64_t ew_binary_u(const ew_binary_job *j, uint64_t a, uint64_t b) {
    switch (j->op) {
    case KN_OP_Add: return a + b;
    case KN_OP_Sub: return a - b;
    case KN_OP_Mul: return a * b;
    case KN_OP_Div: return b ? a / b : 0;
    case KN_OP_Mod: return b ? a % b : 0;
    case KN_OP_Pow: return (uint64_t)ew_ipow((int64_t)a, (int64_t)b);
    case KN_OP_PRelu: return a;
    case KN_OP_BitShift: {
        int bits = 64;
        switch (j->ta) {
        case KN_U8: bits = 8; break;
        case KN_U16: bits = 16; break;
        case KN_U32: bits = 32; break;
        case KN_U4: bits = 4; break;
        case KN_U2: bits = 2; break;
        default: break;
        }
        if (b >= (uint64_t)bits) return 0;
        return j->iattr ? a << b : a >> b;
    }
    case KN_OP_BitwiseAnd: return a & b;
    case KN_OP_BitwiseOr: return a | b;
    case KN_OP_BitwiseXor: return a ^ b;
    case KN_OP_Max: return a > b ? a : b;
    case KN_OP_Min: return a < b ? a : b;
    case KN_OP_Equal: return a == b;
    case KN_OP_Greater: return a > b;
    case KN_OP_GreaterOrEqual: return a >= b;
    case KN_OP_Less: return a < b;
    case KN_OP_LessOrEqual: return a <= b;
    default: return 0;
    }
}

static void ew_binary_seg(void *ctx, int64_t o, const int64_t *off, const int64_t *inc, int64_t n) {
    const ew_binary_job *j = ctx;
    int64_t ia = off[0], ib = off[1], sa = inc[0], sb = inc[1];
    if (j->level) {
        int sop = j->op == KN_OP_Add ? KN_EW_ADD
            : j->op == KN_OP_Sub     ? KN_EW_SUB
            : j->op == KN_OP_Mul     ? KN_EW_MUL
                                     : KN_EW_DIV;
        kn_ew_binary_f32_level(j->level, sop, (const float *)j->a + ia, sa, (const float *)j->b + ib, sb,
                               (float *)j->y + o, n);
        return;
    }
    ew_class ca = ew_class_of(j->ta), cb = ew_class_of(j->tb);
    bool cmp = ew_is_compare(j->op);
    if (j->ta == KN_STRING) { /* Equal on strings */
        char *const *a = j->a, *const *b = j->b;
        uint8_t *y = j->y;
        for (int64_t k = 0; k < n; k++)
            y[o + k] = strcmp(a[ia + k * sa] ? a[ia + k * sa] : "", b[ib + k * sb] ? b[ib + k * sb] : "") == 0;
        return;
    }
    if (ca == EW_FLOAT) {
        if (j->ta == KN_F32 && j->tb == KN_F32 && j->ty == KN_F32) {
            const float *a = j->a, *b = j->b;
            float *y = j->y;
            for (int64_t k = 0; k < n; k++) y[o + k] = (float)ew_binary_f(j, a[ia + k * sa], b[ib + k * sb]);
            return;
        }
        for (int64_t k = 0; k < n; k++) {
            double r = ew_binary_f(j, ew_ld_f(j->a, j->ta, ia + k * sa), ew_ld_f(j->b, j->tb, ib + k * sb));
            if (cmp) ((uint8_t *)j->y)[o + k] = r != 0;
            else ew_st_f(j->y, j->ty, o + k, r);
        }
        return;
    }
    if (j->op == KN_OP_Pow && cb == EW_FLOAT) { /* integer base, float exponent: numpy's power then cast */
        for (int64_t k = 0; k < n; k++) {
            double r = pow(ew_ld_f(j->a, j->ta, ia + k * sa), ew_ld_f(j->b, j->tb, ib + k * sb));
            ew_st_f(j->y, j->ty, o + k, r);
        }
        return;
    }
    if (ca == EW_UINT) {
        for (int64_t k = 0; k < n; k++) {
            uint64_t r = ew_binary_u(j, ew_ld_u(j->a, j->ta, ia + k * sa), ew_ld_u(j->b, j->tb, ib + k * sb));
            ew_st_i(j->y, j->ty, o + k, (int64_t)r);
        }
        return;
    }
    /* signed and bool */
    for (int64_t k = 0; k < n; k++) {
        int64_t r = ew_binary_s(j, ew_ld_i(j->a, j->ta, ia + k * sa), ew_ld_i(j->b, j->tb, ib + k * sb));
        ew_st_i(j->y, j->ty, o + k, r);
    }
}

static bool ew_binary_accepts(int op, kn_dtype ta, kn_dtype tb) {
    ew_class ca = ew_class_of(ta), cb = ew_class_of(tb);
    bool num = ca == EW_FLOAT || ca == EW_SINT || ca == EW_UINT;
    if (op == KN_OP_Pow) return num && (cb == EW_FLOAT || cb == EW_SINT || cb == EW_UINT);
    if (ta != tb) return false;
    switch (op) {
    case KN_OP_And:
    case KN_OP_Or:
    case KN_OP_Xor: return ca == EW_BOOL;
    case KN_OP_BitwiseAnd:
    case KN_OP_BitwiseOr:
    case KN_OP_BitwiseXor:
    case KN_OP_BitShift: return ca == EW_SINT || ca == EW_UINT;
    case KN_OP_Equal: return num || ca == EW_BOOL || ca == EW_STRING;
    case KN_OP_Greater:
    case KN_OP_GreaterOrEqual:
    case KN_OP_Less:
    case KN_OP_LessOrEqual: return num || ca == EW_BOOL;
    case KN_OP_SwiGLU: return ca == EW_FLOAT;
    default: return num;
    }
}

/* y = a op b with broadcasting; y's shape was set by inference. y may alias a when a has y's
 * shape (each element is read before it is written at the same index). */
static kn_status *ew_binary_apply(kn_exec_ctx *ctx, const kn_node *node, int op, const kn_tensor *a, const kn_tensor *b,
                                  kn_tensor *y, int64_t iattr, double alpha) {
    if (!ew_binary_accepts(op, a->dtype, b->dtype)) {
        if (op == KN_OP_Pow || a->dtype == b->dtype) return kn_err_dtype(node, a);
        char ba[KN_DESC_LEN], bb[KN_DESC_LEN];
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input dtypes differ: %s vs %s", node->op_type,
                        kn_tensor_desc(a, ba, sizeof ba), kn_tensor_desc(b, bb, sizeof bb));
    }
    /* the output must be the broadcast of the inputs */
    for (int k = 0; k < 2; k++) {
        const kn_tensor *t = k ? b : a;
        bool ok = t->ndim <= y->ndim;
        for (int i = 0; ok && i < t->ndim; i++) {
            int64_t d = t->dims[i], od = y->dims[i + y->ndim - t->ndim];
            if (d != od && d != 1) ok = false;
        }
        if (!ok) {
            char ba[KN_DESC_LEN], bb[KN_DESC_LEN];
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input %s does not broadcast to output %s", node->op_type,
                            kn_tensor_desc(t, ba, sizeof ba), kn_tensor_desc(y, bb, sizeof bb));
        }
    }
    if (kn_numel(y) <= 0) return NULL;
    const kn_tensor *ins[2] = {a, b};
    ew_bcast bc;
    ew_bcast_init(&bc, y, ins, 2);
    ew_binary_job j = {op, a->dtype, b->dtype, y->dtype, a->data, b->data, y->data, iattr, alpha, 0};
    if (a->dtype == KN_F32 && b->dtype == KN_F32 && y->dtype == KN_F32 &&
        (op == KN_OP_Add || op == KN_OP_Sub || op == KN_OP_Mul || op == KN_OP_Div))
        j.level = kn_ew_best_level();
    int64_t grain = j.level ? 32768 : 4096;
    ew_run_bcast(ctx, &bc, grain, ew_binary_seg, &j);
    return NULL;
}

static kn_status *ew_binary(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                            kn_tensor *const *out, int n_out, int op) {
    KN_TRY(ew_need_input(node, in, n_in, 0));
    KN_TRY(ew_need_input(node, in, n_in, 1));
    if (n_out < 1 || !out[0]) return NULL;
    int64_t iattr = 0;
    double alpha = 0;
    if (op == KN_OP_Mod) iattr = KN_PARAMS(node, binary)->fmod;
    if (op == KN_OP_BitShift) iattr = KN_PARAMS(node, binary)->shift_left ? 1 : 0;
    if (op == KN_OP_SwiGLU) alpha = KN_PARAMS(node, binary)->alpha;
    return ew_binary_apply(ctx, node, op, in[0], in[1], out[0], iattr, alpha);
}

#define EW_BINARY(ID) \
    kn_status *kn_cpu_##ID(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in, \
                           kn_tensor *const *out, int n_out) { \
        return ew_binary(ctx, node, in, n_in, out, n_out, KN_OP_##ID); \
    }
EW_BINARY(Add)
EW_BINARY(Sub)
EW_BINARY(Mul)
EW_BINARY(Div)
EW_BINARY(Pow)
EW_BINARY(Mod)
EW_BINARY(BitShift)
EW_BINARY(BitwiseAnd)
EW_BINARY(BitwiseOr)
EW_BINARY(BitwiseXor)
EW_BINARY(And)
EW_BINARY(Or)
EW_BINARY(Xor)
EW_BINARY(Equal)
EW_BINARY(Greater)
EW_BINARY(GreaterOrEqual)
EW_BINARY(Less)
EW_BINARY(LessOrEqual)
EW_BINARY(SwiGLU)

/* PRelu before opset 7 applies a 1-D slope along the channel axis (1), which PyTorch exports rely
 * on; the slope is viewed as [C, 1, ..., 1] so ordinary broadcasting does the rest. */
kn_status *kn_cpu_PRelu(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                        kn_tensor *const *out, int n_out) {
    KN_TRY(ew_need_input(node, in, n_in, 0));
    KN_TRY(ew_need_input(node, in, n_in, 1));
    if (n_out < 1 || !out[0]) return NULL;
    const kn_tensor *x = in[0], *slope = in[1];
    kn_tensor view;
    if (node->opset > 0 && node->opset < 7 && slope->ndim == 1 && x->ndim >= 2 && slope->dims[0] == x->dims[1] &&
        x->ndim - 1 <= KN_MAX_DIMS) {
        view = *slope;
        view.owns = false;
        view.ndim = x->ndim - 1;
        view.dims[0] = slope->dims[0];
        for (int i = 1; i < view.ndim; i++) view.dims[i] = 1;
        slope = &view;
    }
    return ew_binary_apply(ctx, node, KN_OP_PRelu, x, slope, out[0], 0, 0);
}

/* ------------------------------------------------------------------ variadic Max Min Sum Mean */

typedef struct ew_copy_job {
    size_t es;
    const char *x;
    char *y;
} ew_copy_job;

static void ew_copy_seg(void *ctx, int64_t o, const int64_t *off, const int64_t *inc, int64_t n) {
    const ew_copy_job *j = ctx;
    if (inc[0]) memcpy(j->y + (size_t)o * j->es, j->x + (size_t)off[0] * j->es, (size_t)n * j->es);
    else
        for (int64_t k = 0; k < n; k++) memcpy(j->y + (size_t)(o + k) * j->es, j->x + (size_t)off[0] * j->es, j->es);
}

static kn_status *ew_variadic(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                              kn_tensor *const *out, int n_out, int op) {
    if (n_in < 1) return kn_error(KN_ERR_INVALID_MODEL, "%s: needs at least one input", node->op_type);
    for (int k = 0; k < n_in; k++) KN_TRY(ew_need_input(node, in, n_in, k));
    if (n_out < 1 || !out[0]) return NULL;
    kn_tensor *y = out[0];
    ew_class c = ew_class_of(in[0]->dtype);
    if (!(c == EW_FLOAT || ((c == EW_SINT || c == EW_UINT) && op != KN_OP_Mean))) return kn_err_dtype(node, in[0]);
    if (in[0]->dtype != y->dtype) return kn_err_dtype(node, y);
    if (kn_numel(y) <= 0) return NULL;
    /* y = broadcast(in[0]) then y = y op in[k]; y has the full shape, so updating it in place
     * is an elementwise read-then-write */
    ew_bcast bc;
    ew_bcast_init(&bc, y, in, 1);
    ew_copy_job cj = {kn_dtype_size(y->dtype), in[0]->data, y->data};
    ew_run_bcast(ctx, &bc, 65536, ew_copy_seg, &cj);
    int bop = op == KN_OP_Sum || op == KN_OP_Mean ? KN_OP_Add : op;
    for (int k = 1; k < n_in; k++) KN_TRY(ew_binary_apply(ctx, node, bop, y, in[k], y, 0, 0));
    if (op == KN_OP_Mean && n_in > 1) {
        int64_t n = kn_numel(y);
        for (int64_t i = 0; i < n; i++) ew_st_f(y->data, y->dtype, i, ew_ld_f(y->data, y->dtype, i) / n_in);
    }
    return NULL;
}

kn_status *kn_cpu_Max(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                      kn_tensor *const *out, int n_out) {
    return ew_variadic(ctx, node, in, n_in, out, n_out, KN_OP_Max);
}
kn_status *kn_cpu_Min(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                      kn_tensor *const *out, int n_out) {
    return ew_variadic(ctx, node, in, n_in, out, n_out, KN_OP_Min);
}
kn_status *kn_cpu_Sum(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                      kn_tensor *const *out, int n_out) {
    return ew_variadic(ctx, node, in, n_in, out, n_out, KN_OP_Sum);
}
kn_status *kn_cpu_Mean(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                       kn_tensor *const *out, int n_out) {
    return ew_variadic(ctx, node, in, n_in, out, n_out, KN_OP_Mean);
}

/* ------------------------------------------------------------------ Clip */

typedef struct ew_clip_job {
    const kn_tensor *x;
    kn_tensor *y;
    double lo, hi;
    int64_t ilo, ihi;
    uint64_t ulo, uhi;
} ew_clip_job;

static void ew_clip_range(void *ctx, int64_t b, int64_t e) {
    const ew_clip_job *j = ctx;
    kn_dtype t = j->x->dtype;
    switch (ew_class_of(t)) {
    case EW_FLOAT:
        if (t == KN_F32) { /* the common case (ReLU6 after every conv of a mobile net): a loop that vectorises */
            const float *x = (const float *)j->x->data;
            float *y = (float *)j->y->data, lo = (float)j->lo, hi = (float)j->hi;
            for (int64_t i = b; i < e; i++) {
                float v = x[i];
                v = v < lo ? lo : v;
                y[i] = v > hi ? hi : v;
            }
            break;
        }
        for (int64_t i = b; i < e; i++) {
            double v = ew_ld_f(j->x->data, t, i);
            if (v < j->lo) v = j->lo;
            if (v > j->hi) v = j->hi;
            ew_st_f(j->y->data, t, i, v);
        }
        break;
    case EW_UINT:
        for (int64_t i = b; i < e; i++) {
            uint64_t v = ew_ld_u(j->x->data, t, i);
            if (v < j->ulo) v = j->ulo;
            if (v > j->uhi) v = j->uhi;
            ew_st_i(j->y->data, t, i, (int64_t)v);
        }
        break;
    default:
        for (int64_t i = b; i < e; i++) {
            int64_t v = ew_ld_i(j->x->data, t, i);
            if (v < j->ilo) v = j->ilo;
            if (v > j->ihi) v = j->ihi;
            ew_st_i(j->y->data, t, i, v);
        }
        break;
    }
}

kn_status *kn_cpu_Clip(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                       kn_tensor *const *out, int n_out) {
    KN_TRY(ew_need_input(node, in, n_in, 0));
    if (n_out < 1 || !out[0]) return NULL;
    const kn_tensor *x = in[0];
    ew_class c = ew_class_of(x->dtype);
    if (c != EW_FLOAT && c != EW_SINT && c != EW_UINT) return kn_err_dtype(node, x);
    ew_clip_job j = {x, out[0], -INFINITY, INFINITY, INT64_MIN, INT64_MAX, 0, UINT64_MAX};
    /* Clip-6 carries the bounds as attributes, Clip-11+ as optional scalar inputs */
    const kn_params_clip *p = KN_PARAMS(node, clip);
    bool attr_bounds = (node->opset > 0 && node->opset < 11) || (n_in < 2 && p->has_min_max_attr);
    if (attr_bounds) {
        j.lo = p->min;
        j.hi = p->max;
    } else {
        for (int k = 1; k <= 2 && k < n_in; k++) {
            const kn_tensor *t = in[k];
            if (!t) continue;
            if (t->dtype != x->dtype) return kn_err_dtype(node, t);
            if (kn_numel(t) != 1 || !t->data) {
                char b[KN_DESC_LEN];
                return kn_error(KN_ERR_INVALID_ARGUMENT, "Clip: %s must be a scalar, got %s", k == 1 ? "min" : "max",
                                kn_tensor_desc(t, b, sizeof b));
            }
            if (k == 1) {
                j.lo = ew_ld_f(t->data, t->dtype, 0);
                j.ilo = ew_ld_i(t->data, t->dtype, 0);
                j.ulo = ew_ld_u(t->data, t->dtype, 0);
            } else {
                j.hi = ew_ld_f(t->data, t->dtype, 0);
                j.ihi = ew_ld_i(t->data, t->dtype, 0);
                j.uhi = ew_ld_u(t->data, t->dtype, 0);
            }
        }
    }
    int64_t n = kn_numel(x);
    if (n > 0) kn_parallel_for(ctx ? ctx->pool : NULL, n, 16384, ew_clip_range, &j);
    return NULL;
}

/* ------------------------------------------------------------------ Where */

typedef struct ew_where_job {
    size_t es;
    bool strings;
    const uint8_t *c;
    const char *x, *yv;
    char *o;
} ew_where_job;

static void ew_where_seg(void *ctx, int64_t o, const int64_t *off, const int64_t *inc, int64_t n) {
    const ew_where_job *j = ctx;
    for (int64_t k = 0; k < n; k++) {
        bool c = j->c[off[0] + k * inc[0]] != 0;
        const char *src =
            c ? j->x + (size_t)(off[1] + k * inc[1]) * j->es : j->yv + (size_t)(off[2] + k * inc[2]) * j->es;
        if (j->strings) {
            const char *s = *(char *const *)src;
            ((char **)j->o)[o + k] = strdup(s ? s : "");
        } else {
            memcpy(j->o + (size_t)(o + k) * j->es, src, j->es);
        }
    }
}

kn_status *kn_cpu_Where(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                        kn_tensor *const *out, int n_out) {
    for (int k = 0; k < 3; k++) KN_TRY(ew_need_input(node, in, n_in, k));
    if (n_out < 1 || !out[0]) return NULL;
    if (in[0]->dtype != KN_BOOL) return kn_err_dtype(node, in[0]);
    if (in[1]->dtype != in[2]->dtype || out[0]->dtype != in[1]->dtype) return kn_err_dtype(node, in[2]);
    kn_tensor *y = out[0];
    for (int k = 0; k < 3; k++) {
        const kn_tensor *t = in[k];
        bool ok = t->ndim <= y->ndim;
        for (int i = 0; ok && i < t->ndim; i++) {
            int64_t d = t->dims[i], od = y->dims[i + y->ndim - t->ndim];
            if (d != od && d != 1) ok = false;
        }
        if (!ok) {
            char ba[KN_DESC_LEN], bb[KN_DESC_LEN];
            return kn_error(KN_ERR_INVALID_ARGUMENT, "Where: input %s does not broadcast to output %s",
                            kn_tensor_desc(t, ba, sizeof ba), kn_tensor_desc(y, bb, sizeof bb));
        }
    }
    if (kn_numel(y) <= 0) return NULL;
    ew_bcast bc;
    ew_bcast_init(&bc, y, in, 3);
    ew_where_job j = {kn_dtype_size(y->dtype), y->dtype == KN_STRING, in[0]->data, in[1]->data, in[2]->data, y->data};
    ew_run_bcast(ctx, &bc, j.strings ? INT64_MAX : 16384, ew_where_seg, &j);
    return NULL;
}
