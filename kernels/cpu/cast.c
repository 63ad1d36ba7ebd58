/* CPU kernels for Cast, CastLike and BitCast. Every numeric pair converts through one of three
 * carriers chosen from the source type (double for floats, int64 for signed, uint64 for unsigned
 * and bool), so a pair never needs its own code; floats to the 8-bit formats honour `saturate`,
 * and float8e8m0 honours `round_mode`. Strings are parsed with strtod/strtoll and printed the way
 * numpy's astype(str) prints (shortest round-trip repr), which is what the ONNX tests expect. */
#include "graph/ops.h"
#include "runtime/core/dtype.h"
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum cast_carrier { CAST_F, CAST_S, CAST_U, CAST_STR } cast_carrier;

static cast_carrier cast_carrier_of(kn_dtype t) {
    switch (t) {
    case KN_I8:
    case KN_I16:
    case KN_I32:
    case KN_I64:
    case KN_I4:
    case KN_I2: return CAST_S;
    case KN_U8:
    case KN_U16:
    case KN_U32:
    case KN_U64:
    case KN_U4:
    case KN_U2:
    case KN_BOOL: return CAST_U;
    case KN_STRING: return CAST_STR;
    default: return CAST_F;
    }
}

static bool cast_supported(kn_dtype t) { return kn_dtype_valid((int)t) && t != KN_C64 && t != KN_C128; }

/* float8e8m0 from float32 with the rounding modes of onnx.numpy_helper.to_float8e8m0 */
static uint8_t cast_to_e8m0(float f, bool saturate, int mode /* 0 up, 1 down, 2 nearest */) {
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t e = (b >> 23) & 0xffu;
    if (e == 0xffu) return 0xff;
    if (mode == 2) {
        bool g = (b & 0x400000u) != 0, r = (b & 0x200000u) != 0, s = (b & 0x1fffffu) != 0, lsb = e > 0;
        bool up = g && (r || s || lsb);
        if (saturate && e == 0xfeu) up = false;
        if (up) e++;
    } else if (mode == 0) {
        bool up = (b & 0x7fffffu) != 0;
        if (saturate && e == 0xfeu) up = false;
        if (up) e++;
    }
    return (uint8_t)e;
}

typedef struct cast_job {
    kn_dtype ts, td;
    const void *x;
    void *y;
    bool saturate;
    int round_mode;
} cast_job;

static double cast_ld_f(const void *p, kn_dtype t, int64_t i) {
    switch (t) {
    case KN_F32: return ((const float *)p)[i];
    case KN_F64: return ((const double *)p)[i];
    case KN_F16: return kn_f16_to_f32(((const uint16_t *)p)[i]);
    case KN_BF16: return kn_bf16_to_f32(((const uint16_t *)p)[i]);
    case KN_F4E2M1: return kn_f4e2m1_to_f32(((const uint8_t *)p)[i]);
    default: return kn_f8_to_f32(((const uint8_t *)p)[i], t);
    }
}

static int64_t cast_ld_s(const void *p, kn_dtype t, int64_t i) {
    switch (t) {
    case KN_I16: return ((const int16_t *)p)[i];
    case KN_I32: return ((const int32_t *)p)[i];
    case KN_I64: return ((const int64_t *)p)[i];
    default: return ((const int8_t *)p)[i];
    }
}

static uint64_t cast_ld_u(const void *p, kn_dtype t, int64_t i) {
    switch (t) {
    case KN_U16: return ((const uint16_t *)p)[i];
    case KN_U32: return ((const uint32_t *)p)[i];
    case KN_U64: return ((const uint64_t *)p)[i];
    default: return ((const uint8_t *)p)[i];
    }
}

/* Store an integer (two's complement bits in v) into an integer or bool destination, wrapping. */
static void cast_st_bits(void *p, kn_dtype t, int64_t i, uint64_t v, bool nonzero) {
    switch (t) {
    case KN_BOOL: ((uint8_t *)p)[i] = nonzero; break;
    case KN_I8:
    case KN_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case KN_I4: ((int8_t *)p)[i] = (int8_t)((int)((v & 0xf) ^ 0x8) - 8); break;
    case KN_U4: ((uint8_t *)p)[i] = (uint8_t)(v & 0xf); break;
    case KN_I2: ((int8_t *)p)[i] = (int8_t)((int)((v & 0x3) ^ 0x2) - 2); break;
    case KN_U2: ((uint8_t *)p)[i] = (uint8_t)(v & 0x3); break;
    case KN_I16:
    case KN_U16: ((uint16_t *)p)[i] = (uint16_t)v; break;
    case KN_I32:
    case KN_U32: ((uint32_t *)p)[i] = (uint32_t)v; break;
    default: ((uint64_t *)p)[i] = v; break;
    }
}

static void cast_st_float(const cast_job *j, int64_t i, double v) {
    void *p = j->y;
    switch (j->td) {
    case KN_F32: ((float *)p)[i] = (float)v; break;
    case KN_F64: ((double *)p)[i] = v; break;
    case KN_F16: ((uint16_t *)p)[i] = kn_f32_to_f16((float)v); break;
    case KN_BF16: ((uint16_t *)p)[i] = kn_f32_to_bf16((float)v); break;
    case KN_F4E2M1: ((uint8_t *)p)[i] = kn_f32_to_f4e2m1((float)v); break;
    case KN_F8E8M0: ((uint8_t *)p)[i] = cast_to_e8m0((float)v, j->saturate, j->round_mode); break;
    default: ((uint8_t *)p)[i] = kn_f32_to_f8((float)v, j->td, j->saturate); break;
    }
}

/* float -> integer: truncation toward zero; NaN and out-of-range values (undefined in ONNX) are
 * pinned so the conversion itself is defined behaviour */
static void cast_st_from_double(const cast_job *j, int64_t i, double v) {
    if (cast_carrier_of(j->td) == CAST_F) {
        cast_st_float(j, i, v);
        return;
    }
    uint64_t bits;
    if (isnan(v)) bits = j->td == KN_I64 || j->td == KN_I32 ? (uint64_t)INT64_MIN : 0;
    else if (v >= 18446744073709551615.0) bits = UINT64_MAX;
    else if (v >= 9223372036854775807.0) bits = (uint64_t)v;
    else if (v <= -9223372036854775808.0) bits = (uint64_t)INT64_MIN;
    else bits = (uint64_t)(int64_t)v;
    cast_st_bits(j->y, j->td, i, bits, v != 0);
}

/* Shortest decimal that reads back as the same float, formatted like Python's repr. */
/* Whether the decimal text reads back as v in the source's own precision. */
static bool cast_round_trips(const char *text, double v, kn_dtype t) {
    switch (t) {
    case KN_F64: return strtod(text, NULL) == v;
    case KN_F32: return strtof(text, NULL) == (float)v;
    case KN_F16: return kn_f32_to_f16(strtof(text, NULL)) == kn_f32_to_f16((float)v);
    case KN_BF16: return kn_f32_to_bf16(strtof(text, NULL)) == kn_f32_to_bf16((float)v);
    default: return strtof(text, NULL) == (float)v; /* 8/4-bit floats: exact in float32 */
    }
}

static void cast_format_float(char *buf, size_t n, double v, kn_dtype t) {
    if (isnan(v)) {
        snprintf(buf, n, "nan");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, n, v > 0 ? "inf" : "-inf");
        return;
    }
    char digits[64];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(digits, sizeof digits, "%.*e", prec - 1, v);
        if (cast_round_trips(digits, v, t)) break;
    }
    /* digits is "[-]d.ddde[+-]XX": split mantissa digits and exponent */
    char *e = strchr(digits, 'e');
    int exp10 = atoi(e + 1);
    *e = '\0';
    char mant[40];
    size_t m = 0;
    bool neg = digits[0] == '-';
    for (char *c = digits + neg; *c; c++)
        if (isdigit((unsigned char)*c)) mant[m++] = *c;
    while (m > 1 && mant[m - 1] == '0') m--;
    mant[m] = '\0';
    size_t o = 0;
    char out[96];
    if (neg) out[o++] = '-';
    /* numpy's str(): positional for 1e-4 <= |v| < 10^p, where p is the type's decimal precision
     * class (16 for float64, 6 for float32, 3 for float16) */
    double av = fabs(v), hi = t == KN_F64 ? 1e16 : (t == KN_F16 || t == KN_BF16) ? 1e3 : 1e6;
    if (av != 0 && (av < 1e-4 || av >= hi)) {
        out[o++] = mant[0];
        if (m > 1) {
            out[o++] = '.';
            for (size_t k = 1; k < m; k++) out[o++] = mant[k];
        }
        o += (size_t)snprintf(out + o, sizeof out - o, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (exp10 < 0) {
        out[o++] = '0';
        out[o++] = '.';
        for (int k = 0; k < -exp10 - 1; k++) out[o++] = '0';
        for (size_t k = 0; k < m; k++) out[o++] = mant[k];
    } else {
        for (int k = 0; k <= exp10; k++) out[o++] = (size_t)k < m ? mant[k] : '0';
        out[o++] = '.';
        if ((size_t)exp10 + 1 < m)
            for (size_t k = (size_t)exp10 + 1; k < m; k++) out[o++] = mant[k];
        else out[o++] = '0';
    }
    out[o] = '\0';
    snprintf(buf, n, "%s", out);
}

static kn_status *cast_to_string(const cast_job *j, int64_t n) {
    char **y = j->y;
    char buf[96];
    for (int64_t i = 0; i < n; i++) {
        switch (cast_carrier_of(j->ts)) {
        case CAST_F: cast_format_float(buf, sizeof buf, cast_ld_f(j->x, j->ts, i), j->ts); break;
        case CAST_S: snprintf(buf, sizeof buf, "%lld", (long long)cast_ld_s(j->x, j->ts, i)); break;
        case CAST_U:
            if (j->ts == KN_BOOL) snprintf(buf, sizeof buf, "%s", ((const uint8_t *)j->x)[i] ? "True" : "False");
            else snprintf(buf, sizeof buf, "%llu", (unsigned long long)cast_ld_u(j->x, j->ts, i));
            break;
        case CAST_STR: {
            const char *s = ((char *const *)j->x)[i];
            y[i] = strdup(s ? s : "");
            if (!y[i]) return KN_OOM(strlen(s ? s : "") + 1);
            continue;
        }
        }
        y[i] = strdup(buf);
        if (!y[i]) return KN_OOM(strlen(buf) + 1);
    }
    return NULL;
}

static void cast_from_string(const cast_job *j, int64_t i) {
    const char *s = ((char *const *)j->x)[i];
    if (!s) s = "";
    while (isspace((unsigned char)*s)) s++;
    cast_carrier cd = cast_carrier_of(j->td);
    if (cd == CAST_S || cd == CAST_U) {
        /* integers parse exactly when the text is an integer; otherwise through double */
        char *end;
        if (cd == CAST_S || *s == '-') {
            long long v = strtoll(s, &end, 10);
            if (end != s && *end == '\0') {
                cast_st_bits(j->y, j->td, i, (uint64_t)v, v != 0);
                return;
            }
        } else {
            unsigned long long v = strtoull(s, &end, 10);
            if (end != s && *end == '\0') {
                cast_st_bits(j->y, j->td, i, (uint64_t)v, v != 0);
                return;
            }
        }
    }
    if (j->td == KN_BOOL && (strcasecmp(s, "true") == 0 || strcasecmp(s, "false") == 0)) {
        ((uint8_t *)j->y)[i] = strcasecmp(s, "true") == 0;
        return;
    }
    /* strtod accepts "inf", "+INF", "-inf", "NaN" case-insensitively, as the spec asks */
    double v = strtod(s, NULL);
    cast_st_from_double(j, i, v);
}

static void cast_range(void *ctx, int64_t b, int64_t e) {
    const cast_job *j = ctx;
    cast_carrier cs = cast_carrier_of(j->ts), cd = cast_carrier_of(j->td);
    for (int64_t i = b; i < e; i++) {
        switch (cs) {
        case CAST_F: {
            double v = cast_ld_f(j->x, j->ts, i);
            cast_st_from_double(j, i, v);
            break;
        }
        case CAST_S: {
            int64_t v = cast_ld_s(j->x, j->ts, i);
            if (cd == CAST_F) {
                /* one rounding straight to float32 where that is the target */
                if (j->td == KN_F64) ((double *)j->y)[i] = (double)v;
                else cast_st_float(j, i, (double)(float)v);
            } else {
                cast_st_bits(j->y, j->td, i, (uint64_t)v, v != 0);
            }
            break;
        }
        case CAST_U: {
            uint64_t v = cast_ld_u(j->x, j->ts, i);
            if (cd == CAST_F) {
                if (j->td == KN_F64) ((double *)j->y)[i] = (double)v;
                else cast_st_float(j, i, (double)(float)v);
            } else {
                cast_st_bits(j->y, j->td, i, v, v != 0);
            }
            break;
        }
        case CAST_STR: cast_from_string(j, i); break;
        }
    }
}

static kn_status *cast_run(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *x, kn_tensor *y) {
    if (!cast_supported(x->dtype)) return kn_err_dtype(node, x);
    if (!cast_supported(y->dtype)) return kn_err_dtype(node, y);
    if (!kn_same_shape(x, y)) {
        char a[KN_DESC_LEN], b[KN_DESC_LEN];
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: output %s does not match input %s", node->op_type,
                        kn_tensor_desc(y, a, sizeof a), kn_tensor_desc(x, b, sizeof b));
    }
    int64_t n = kn_numel(x);
    if (n <= 0) return NULL;
    if (!x->data || !y->data)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input or output not materialised", node->op_type);
    const kn_params_cast *p = KN_PARAMS(node, cast);
    cast_job j = {x->dtype, y->dtype, x->data, y->data, p->saturate, p->round_mode};
    if (y->dtype == KN_STRING) return cast_to_string(&j, n);
    if (x->dtype == y->dtype && x->dtype != KN_STRING) {
        if (x->data != y->data) memcpy(y->data, x->data, kn_nbytes(x));
        return NULL;
    }
    kn_parallel_for(ctx ? ctx->pool : NULL, n, x->dtype == KN_STRING ? INT64_MAX : 16384, cast_range, &j);
    return NULL;
}

kn_status *kn_cpu_Cast(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                       kn_tensor *const *out, int n_out) {
    if (n_in < 1 || !in[0]) return kn_error(KN_ERR_INVALID_ARGUMENT, "Cast: missing input");
    if (n_out < 1 || !out[0]) return NULL;
    return cast_run(ctx, node, in[0], out[0]);
}

kn_status *kn_cpu_CastLike(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                           kn_tensor *const *out, int n_out) {
    if (n_in < 2 || !in[0] || !in[1]) return kn_error(KN_ERR_INVALID_ARGUMENT, "CastLike: needs two inputs");
    if (n_out < 1 || !out[0]) return NULL;
    if (out[0]->dtype != in[1]->dtype) return kn_err_dtype(node, out[0]);
    return cast_run(ctx, node, in[0], out[0]);
}

/* Bits per element as stored in ONNX (sub-byte types keep one element per byte in memory). */
static int bitcast_bits(kn_dtype t) {
    switch (t) {
    case KN_U4:
    case KN_I4:
    case KN_F4E2M1: return 4;
    case KN_U2:
    case KN_I2: return 2;
    default: return (int)kn_dtype_size(t) * 8;
    }
}

kn_status *kn_cpu_BitCast(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                          kn_tensor *const *out, int n_out) {
    (void)ctx; /* a byte copy: too cheap to split over threads */
    if (n_in < 1 || !in[0]) return kn_error(KN_ERR_INVALID_ARGUMENT, "BitCast: missing input");
    if (n_out < 1 || !out[0]) return NULL;
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    if (!cast_supported(x->dtype) || x->dtype == KN_STRING) return kn_err_dtype(node, x);
    if (!cast_supported(y->dtype) || y->dtype == KN_STRING || bitcast_bits(x->dtype) != bitcast_bits(y->dtype)) {
        char a[KN_DESC_LEN], b[KN_DESC_LEN];
        return kn_error(KN_ERR_INVALID_ARGUMENT, "BitCast: %s and %s differ in bit width",
                        kn_tensor_desc(x, a, sizeof a), kn_tensor_desc(y, b, sizeof b));
    }
    int64_t n = kn_numel(x);
    if (n <= 0) return NULL;
    int bits = bitcast_bits(x->dtype);
    if (bits >= 8) {
        if (x->data != y->data) memcpy(y->data, x->data, kn_nbytes(x));
        /* bool holds only 0/1: any nonzero byte reads as true */
        if (y->dtype == KN_BOOL)
            for (int64_t i = 0; i < n; i++) ((uint8_t *)y->data)[i] = ((uint8_t *)y->data)[i] != 0;
        return NULL;
    }
    /* sub-byte: the in-memory byte is sign-extended for the signed types; keep only the bits */
    uint8_t mask = (uint8_t)((1u << bits) - 1u);
    for (int64_t i = 0; i < n; i++) {
        uint8_t v = (uint8_t)(((const uint8_t *)x->data)[i] & mask);
        if (y->dtype == KN_I4 || y->dtype == KN_I2) {
            int sign = 1 << (bits - 1);
            ((int8_t *)y->data)[i] = (int8_t)((int)(v ^ sign) - sign);
        } else {
            ((uint8_t *)y->data)[i] = v;
        }
    }
    return NULL;
}
