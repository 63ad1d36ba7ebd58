/* CPU kernels for QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear: per-tensor,
 * per-axis and blocked scales; integer targets from 2 to 32 bits (sub-byte ones stored one per
 * byte), the float8 formats and float4e2m1. Integer quantisation rounds half to even in float32,
 * as the ONNX reference does, then saturates to the target range. */
#include "graph/ops.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/quant_map.h"
#include "runtime/core/dtype.h"
#include <fenv.h>
#include <math.h>
#include <string.h>

static bool q_is_f8(kn_dtype t) {
    return t == KN_F8E4M3FN || t == KN_F8E4M3FNUZ || t == KN_F8E5M2 || t == KN_F8E5M2FNUZ;
}

/* Range of an integer quantisation target; false for non-integer dtypes. */
static bool q_int_range(kn_dtype t, double *lo, double *hi) {
    switch (t) {
    case KN_U8:
        *lo = 0;
        *hi = 255;
        return true;
    case KN_I8:
        *lo = -128;
        *hi = 127;
        return true;
    case KN_U16:
        *lo = 0;
        *hi = 65535;
        return true;
    case KN_I16:
        *lo = -32768;
        *hi = 32767;
        return true;
    case KN_I32:
        *lo = -2147483648.0;
        *hi = 2147483647.0;
        return true;
    case KN_U4:
        *lo = 0;
        *hi = 15;
        return true;
    case KN_I4:
        *lo = -8;
        *hi = 7;
        return true;
    case KN_U2:
        *lo = 0;
        *hi = 3;
        return true;
    case KN_I2:
        *lo = -2;
        *hi = 1;
        return true;
    default: return false;
    }
}

/* Any quantised element as float: integer, float8, float4 or a wider float. */
static float q_load(const kn_tensor *t, int64_t i) {
    const void *p = t->data;
    switch (t->dtype) {
    case KN_U8:
    case KN_U4:
    case KN_U2: return ((const uint8_t *)p)[i];
    case KN_I8:
    case KN_I4:
    case KN_I2: return ((const int8_t *)p)[i];
    case KN_U16: return ((const uint16_t *)p)[i];
    case KN_I16: return ((const int16_t *)p)[i];
    case KN_I32: return (float)((const int32_t *)p)[i];
    case KN_F32: return ((const float *)p)[i];
    case KN_F64: return (float)((const double *)p)[i];
    case KN_F16: return kn_f16_to_f32(((const uint16_t *)p)[i]);
    case KN_BF16: return kn_bf16_to_f32(((const uint16_t *)p)[i]);
    case KN_F4E2M1: return kn_f4e2m1_to_f32(((const uint8_t *)p)[i]);
    default:
        if (q_is_f8(t->dtype)) return kn_f8_to_f32(((const uint8_t *)p)[i], t->dtype);
        return 0.0f;
    }
}

/* int32 quantisation needs more than float's 24-bit mantissa when zero points are large, so the
 * integer path reads zero points exactly. */
static int64_t q_load_int(const kn_tensor *t, int64_t i) {
    if (t->dtype == KN_I32) return ((const int32_t *)t->data)[i];
    return (int64_t)q_load(t, i);
}

kn_status *kn_qmap_make(const kn_node *node, const kn_tensor *x, const kn_tensor *scale, const kn_tensor *zp,
                        kn_qmap *m) {
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    memset(m, 0, sizeof *m);
    int64_t axis = KN_PARAMS(node, quant)->axis, block = KN_PARAMS(node, quant)->block_size;
    bool both_scalar = zp && kn_numel(zp) == 1 && kn_numel(scale) == 1 && zp->ndim <= 1 && scale->ndim <= 1;
    if (zp && !both_scalar && !kn_same_shape(zp, scale))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: zero point %s and scale %s differ in shape", node->op_type,
                        kn_tensor_desc(zp, b1, sizeof b1), kn_tensor_desc(scale, b2, sizeof b2));
    if (scale->ndim == 0 || (scale->ndim == 1 && kn_numel(scale) == 1 && block <= 0)) {
        if (kn_numel(scale) != 1) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: empty scale", node->op_type);
        m->kind = 0;
        return NULL;
    }
    int ax;
    KN_TRY(kn_norm_axis(axis, x->ndim, node, &ax));
    m->inner = 1;
    for (int d = ax + 1; d < x->ndim; d++) m->inner *= x->dims[d];
    m->axdim = x->dims[ax];
    if (block <= 0) {
        if (scale->ndim != 1 || scale->dims[0] != m->axdim)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: per-axis scale %s does not match axis %d of %s",
                            node->op_type, kn_tensor_desc(scale, b1, sizeof b1), ax, kn_tensor_desc(x, b2, sizeof b2));
        m->kind = 1;
        return NULL;
    }
    if (scale->ndim != x->ndim)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: blocked scale %s must have the rank of %s", node->op_type,
                        kn_tensor_desc(scale, b1, sizeof b1), kn_tensor_desc(x, b2, sizeof b2));
    for (int d = 0; d < x->ndim; d++) {
        bool ok = d == ax ? scale->dims[d] == (x->dims[d] + block - 1) / block : scale->dims[d] == x->dims[d];
        if (!ok)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "%s: blocked scale %s does not fit %s with block_size %lld on axis %d", node->op_type,
                            kn_tensor_desc(scale, b1, sizeof b1), kn_tensor_desc(x, b2, sizeof b2), (long long)block,
                            ax);
    }
    m->kind = 2;
    m->block = block;
    m->sdim = scale->dims[ax];
    return NULL;
}

static void q_store_int(kn_tensor *y, int64_t i, int64_t v) {
    void *p = y->data;
    switch (y->dtype) {
    case KN_U8:
    case KN_U4:
    case KN_U2: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case KN_I8:
    case KN_I4:
    case KN_I2: ((int8_t *)p)[i] = (int8_t)v; break;
    case KN_U16: ((uint16_t *)p)[i] = (uint16_t)v; break;
    case KN_I16: ((int16_t *)p)[i] = (int16_t)v; break;
    case KN_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    default: break;
    }
}

static bool q_scale_dtype_ok(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_BF16 || t == KN_F64; }

kn_status *kn_cpu_QuantizeLinear(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                 kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *scale = in[1], *zp = n_in > 2 ? in[2] : NULL;
    kn_tensor *y = out[0];
    if (!q_scale_dtype_ok(x->dtype) && x->dtype != KN_I32) return kn_err_dtype(node, x);
    if (!q_scale_dtype_ok(scale->dtype)) return kn_err_dtype(node, scale);
    kn_qmap m;
    KN_TRY(kn_qmap_make(node, x, scale, zp, &m));
    bool saturate = KN_PARAMS(node, quant)->saturate;
    int64_t n = kn_numel(x);
    double lo, hi;
    if (q_int_range(y->dtype, &lo, &hi)) {
        int old = fegetround();
        fesetround(FE_TONEAREST);
        for (int64_t i = 0; i < n; i++) {
            int64_t si = kn_qmap_index(&m, i);
            float s = q_load(scale, si);
            float v = q_load(x, i) / s;
            double r = (isnan(v) ? 0.0 : nearbyint((double)v)) + (zp ? (double)q_load_int(zp, si) : 0.0);
            if (r < lo) r = lo;
            if (r > hi) r = hi;
            q_store_int(y, i, (int64_t)r);
        }
        fesetround(old);
        return NULL;
    }
    if (q_is_f8(y->dtype) || y->dtype == KN_F4E2M1) {
        for (int64_t i = 0; i < n; i++) {
            int64_t si = kn_qmap_index(&m, i);
            float v = q_load(x, i) / q_load(scale, si) + (zp ? q_load(zp, si) : 0.0f);
            ((uint8_t *)y->data)[i] = y->dtype == KN_F4E2M1 ? kn_f32_to_f4e2m1(v) : kn_f32_to_f8(v, y->dtype, saturate);
        }
        return NULL;
    }
    return kn_err_dtype(node, y);
}

kn_status *kn_cpu_DequantizeLinear(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                   kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *scale = in[1], *zp = n_in > 2 ? in[2] : NULL;
    kn_tensor *y = out[0];
    double lo, hi;
    if (!q_int_range(x->dtype, &lo, &hi) && !q_is_f8(x->dtype) && x->dtype != KN_F4E2M1) return kn_err_dtype(node, x);
    if (!q_scale_dtype_ok(scale->dtype)) return kn_err_dtype(node, scale);
    if (!q_scale_dtype_ok(y->dtype)) return kn_err_dtype(node, y);
    if (zp && zp->dtype != x->dtype) return kn_err_dtype(node, zp);
    kn_qmap m;
    KN_TRY(kn_qmap_make(node, x, scale, zp, &m));
    int64_t n = kn_numel(x);
    bool is_int = x->dtype == KN_I32;
    for (int64_t i = 0; i < n; i++) {
        int64_t si = kn_qmap_index(&m, i);
        float d = is_int ? (float)(q_load_int(x, i) - (zp ? q_load_int(zp, si) : 0))
                         : q_load(x, i) - (zp ? q_load(zp, si) : 0.0f);
        float v = d * q_load(scale, si);
        switch (y->dtype) {
        case KN_F32: ((float *)y->data)[i] = v; break;
        case KN_F64: ((double *)y->data)[i] = v; break;
        case KN_F16: ((uint16_t *)y->data)[i] = kn_f32_to_f16(v); break;
        default: ((uint16_t *)y->data)[i] = kn_f32_to_bf16(v); break;
        }
    }
    return NULL;
}

/* DynamicQuantizeLinear's arithmetic, shared with the quantised recurrent projections (rnn.c), which
 * quantise each GEMM operand the same way ONNX Runtime does: the range widened to include zero,
 * scale (max - min) / 255, zero point and values rounded half to even. y may be NULL. */
void kn_dynamic_quantize_u8(const float *xv, int64_t n, uint8_t *y, float *scale_out, uint8_t *zp_out) {
    float mn = 0.0f, mx = 0.0f; /* the range always includes zero */
    for (int64_t i = 0; i < n; i++) {
        if (xv[i] < mn) mn = xv[i];
        if (xv[i] > mx) mx = xv[i];
    }
    float scale = (mx == mn ? 1.0f : mx - mn) / 255.0f;
    int old = fegetround();
    fesetround(FE_TONEAREST);
    float zpf = 0.0f - mn / scale;
    zpf = zpf < 0.0f ? 0.0f : zpf > 255.0f ? 255.0f : zpf;
    float zp = nearbyintf(zpf);
    for (int64_t i = 0; y && i < n; i++) {
        float v = nearbyintf(xv[i] / scale) + zp;
        if (isnan(v)) v = 0.0f;
        y[i] = (uint8_t)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
    }
    fesetround(old);
    *scale_out = scale;
    *zp_out = (uint8_t)zp;
}

kn_status *kn_cpu_DynamicQuantizeLinear(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                        kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    if (x->dtype != KN_F32) return kn_err_dtype(node, x);
    float scale;
    uint8_t zp;
    kn_dynamic_quantize_u8(x->data, kn_numel(x), n_out > 0 && out[0] ? out[0]->data : NULL, &scale, &zp);
    if (n_out > 1 && out[1] && out[1]->data) *(float *)out[1]->data = scale;
    if (n_out > 2 && out[2] && out[2]->data) *(uint8_t *)out[2]->data = zp;
    return NULL;
}
