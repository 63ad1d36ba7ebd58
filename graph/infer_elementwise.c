/* Shape and type inference for the elementwise family: unary ops keep the input's shape and
 * dtype (predicates give bool), binary and variadic ops broadcast numpy-style, comparisons give
 * bool, and the casts take their dtype from an attribute or from a second input. */
#include "graph/ops.h"
#include "runtime/core/dtype.h"
#include <string.h>

/* ---- params decoders (graph/params.h), run once per node at load ---- */

kn_status *kn_params_decode_act(const kn_node *n, void *out) {
    kn_params_act *p = out;
    switch (n->op) {
    case KN_OP_LeakyRelu: p->alpha = kn_attr_float(n, "alpha", 0.01f); break;
    case KN_OP_Elu:
    case KN_OP_Celu:
    case KN_OP_ThresholdedRelu:
    case KN_OP_Swish: p->alpha = kn_attr_float(n, "alpha", 1.0f); break;
    case KN_OP_Selu:
        p->alpha = kn_attr_float(n, "alpha", 1.67326319217681884765625f);
        p->gamma = kn_attr_float(n, "gamma", 1.05070102214813232421875f);
        break;
    case KN_OP_HardSigmoid:
        p->alpha = kn_attr_float(n, "alpha", 0.2f);
        p->beta = kn_attr_float(n, "beta", 0.5f);
        break;
    case KN_OP_Shrink:
        p->alpha = kn_attr_float(n, "lambd", 0.5f);
        p->beta = kn_attr_float(n, "bias", 0.0f);
        break;
    case KN_OP_Gelu:
    case KN_OP_KnGeluGrad: {
        const char *ap = kn_attr_str(n, "approximate", "none");
        if (strcmp(ap, "tanh") == 0) p->gelu_tanh = true;
        else if (strcmp(ap, "none") != 0) return kn_error(KN_ERR_INVALID_MODEL, "Gelu: unknown approximate '%s'", ap);
        break;
    }
    case KN_OP_IsInf:
        p->detect_negative = kn_attr_int(n, "detect_negative", 1) != 0;
        p->detect_positive = kn_attr_int(n, "detect_positive", 1) != 0;
        break;
    default: break;
    }
    return NULL;
}

kn_status *kn_params_decode_binary(const kn_node *n, void *out) {
    kn_params_binary *p = out;
    if (n->op == KN_OP_Mod) p->fmod = kn_attr_int(n, "fmod", 0);
    if (n->op == KN_OP_BitShift) {
        const char *d = kn_attr_str(n, "direction", "");
        if (strcmp(d, "LEFT") == 0) p->shift_left = true;
        else if (strcmp(d, "RIGHT") != 0)
            return kn_error(KN_ERR_INVALID_MODEL, "BitShift: direction must be LEFT or RIGHT, got '%s'", d);
    }
    if (n->op == KN_OP_SwiGLU) p->alpha = kn_attr_float(n, "alpha", 1.0f);
    return NULL;
}

kn_status *kn_params_decode_clip(const kn_node *n, void *out) {
    kn_params_clip *p = out;
    p->has_min_max_attr = kn_node_attr(n, "min") || kn_node_attr(n, "max");
    p->min = kn_attr_float(n, "min", -3.402823466e+38f);
    p->max = kn_attr_float(n, "max", 3.402823466e+38f);
    return NULL;
}

kn_status *kn_params_decode_cast(const kn_node *n, void *out) {
    kn_params_cast *p = out;
    const kn_attr *a = kn_node_attr(n, "to");
    p->has_to = a && a->type == KN_ATTR_INT;
    p->to = a ? a->i : 0;
    p->saturate = kn_attr_int(n, "saturate", 1) != 0;
    const char *rm = kn_attr_str(n, "round_mode", "up");
    if (strcmp(rm, "up") == 0) p->round_mode = 0;
    else if (strcmp(rm, "down") == 0) p->round_mode = 1;
    else if (strcmp(rm, "nearest") == 0) p->round_mode = 2;
    else return kn_error(KN_ERR_INVALID_MODEL, "%s: unknown round_mode '%s'", n->op_type, rm);
    return NULL;
}

/* QuantizeLinear, DequantizeLinear and the random ops have their shape rules in
 * graph/infer_misc.c; their decoders sit here, with the other elementwise-shaped ops. */
kn_status *kn_params_decode_quant(const kn_node *n, void *out) {
    kn_params_quant *p = out;
    p->axis = kn_attr_int(n, "axis", 1);
    p->block_size = kn_attr_int(n, "block_size", 0);
    p->saturate = kn_attr_int(n, "saturate", 1) != 0;
    p->output_dtype = kn_attr_int(n, "output_dtype", 0);
    return NULL;
}

kn_status *kn_params_decode_random(const kn_node *n, void *out) {
    kn_params_random *p = out;
    const kn_attr *a = kn_node_attr(n, "seed");
    p->has_seed = a != NULL;
    if (a) p->seed = a->type == KN_ATTR_INT ? (float)a->i : a->f;
    bool normal = n->op == KN_OP_RandomNormal || n->op == KN_OP_RandomNormalLike;
    p->low = normal ? kn_attr_float(n, "mean", 0.0f) : kn_attr_float(n, "low", 0.0f);
    p->high = normal ? kn_attr_float(n, "scale", 1.0f) : kn_attr_float(n, "high", 1.0f);
    p->has_dtype = kn_node_attr(n, "dtype") != NULL;
    p->dtype = kn_attr_int(n, "dtype", 0);
    const int64_t *shape;
    int ns = kn_attr_ints(n, "shape", &shape);
    p->n_shape = ns >= 0 && ns <= KN_PARAMS_MAX_RANK ? ns : -1;
    for (int i = 0; i < p->n_shape; i++) p->shape[i] = shape[i];
    return NULL;
}

/* ---- shape rules ---- */

static kn_status *ie_input(kn_infer_ctx *c, int k) {
    if (k >= c->n_in || !c->in[k]) return kn_error(KN_ERR_INVALID_MODEL, "%s: missing input %d", c->node->op_type, k);
    return NULL;
}

static void ie_set(kn_infer_ctx *c, kn_dtype dt, const kn_tensor *shape) {
    for (int i = 0; i < c->n_out; i++) {
        kn_tensor *o = c->out[i];
        if (!o) continue;
        o->dtype = dt;
        if (shape->ndim < 0) o->ndim = -1;
        else kn_tensor_set_shape(o, shape->ndim, shape->dims);
    }
}

static kn_status *ie_unary(kn_infer_ctx *c, kn_dtype out_dtype) {
    KN_TRY(ie_input(c, 0));
    ie_set(c, out_dtype == KN_UNDEFINED ? c->in[0]->dtype : out_dtype, c->in[0]);
    return NULL;
}

/* Input dtypes must agree once both are known. */
static kn_status *ie_same_dtype(kn_infer_ctx *c, const kn_tensor *a, const kn_tensor *b) {
    if (a->dtype != KN_UNDEFINED && b->dtype != KN_UNDEFINED && a->dtype != b->dtype) {
        char ba[KN_DESC_LEN], bb[KN_DESC_LEN];
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input dtypes differ: %s vs %s", c->node->op_type,
                        kn_tensor_desc(a, ba, sizeof ba), kn_tensor_desc(b, bb, sizeof bb));
    }
    return NULL;
}

static kn_status *ie_binary(kn_infer_ctx *c, kn_dtype out_dtype, bool same_dtype) {
    KN_TRY(ie_input(c, 0));
    KN_TRY(ie_input(c, 1));
    if (same_dtype) KN_TRY(ie_same_dtype(c, c->in[0], c->in[1]));
    kn_tensor shape = {0};
    kn_status *st = kn_broadcast_shape(c->in[0], c->in[1], &shape);
    if (st) return kn_error_wrap(st, "%s: ", c->node->op_type);
    ie_set(c, out_dtype == KN_UNDEFINED ? c->in[0]->dtype : out_dtype, &shape);
    return NULL;
}

#define IE_UNARY(ID, DT) \
    kn_status *kn_infer_##ID(kn_infer_ctx *c) { return ie_unary(c, DT); }
IE_UNARY(Abs, KN_UNDEFINED)
IE_UNARY(Acos, KN_UNDEFINED)
IE_UNARY(Acosh, KN_UNDEFINED)
IE_UNARY(Asin, KN_UNDEFINED)
IE_UNARY(Asinh, KN_UNDEFINED)
IE_UNARY(Atan, KN_UNDEFINED)
IE_UNARY(Atanh, KN_UNDEFINED)
IE_UNARY(Ceil, KN_UNDEFINED)
IE_UNARY(Cos, KN_UNDEFINED)
IE_UNARY(Cosh, KN_UNDEFINED)
IE_UNARY(Erf, KN_UNDEFINED)
IE_UNARY(Exp, KN_UNDEFINED)
IE_UNARY(Floor, KN_UNDEFINED)
IE_UNARY(Log, KN_UNDEFINED)
IE_UNARY(Neg, KN_UNDEFINED)
IE_UNARY(Reciprocal, KN_UNDEFINED)
IE_UNARY(Round, KN_UNDEFINED)
IE_UNARY(Sign, KN_UNDEFINED)
IE_UNARY(Sin, KN_UNDEFINED)
IE_UNARY(Sinh, KN_UNDEFINED)
IE_UNARY(Sqrt, KN_UNDEFINED)
IE_UNARY(Tan, KN_UNDEFINED)
IE_UNARY(Tanh, KN_UNDEFINED)
IE_UNARY(Sigmoid, KN_UNDEFINED)
IE_UNARY(Relu, KN_UNDEFINED)
IE_UNARY(LeakyRelu, KN_UNDEFINED)
IE_UNARY(Elu, KN_UNDEFINED)
IE_UNARY(Selu, KN_UNDEFINED)
IE_UNARY(Celu, KN_UNDEFINED)
IE_UNARY(Gelu, KN_UNDEFINED)
IE_UNARY(HardSigmoid, KN_UNDEFINED)
IE_UNARY(HardSwish, KN_UNDEFINED)
IE_UNARY(Softplus, KN_UNDEFINED)
IE_UNARY(Softsign, KN_UNDEFINED)
IE_UNARY(Mish, KN_UNDEFINED)
IE_UNARY(Swish, KN_UNDEFINED)
IE_UNARY(ThresholdedRelu, KN_UNDEFINED)
IE_UNARY(Shrink, KN_UNDEFINED)
IE_UNARY(Not, KN_UNDEFINED)
IE_UNARY(BitwiseNot, KN_UNDEFINED)
IE_UNARY(Clip, KN_UNDEFINED)
IE_UNARY(IsNaN, KN_BOOL)
IE_UNARY(IsInf, KN_BOOL)

#define IE_BINARY(ID, DT, SAME) \
    kn_status *kn_infer_##ID(kn_infer_ctx *c) { return ie_binary(c, DT, SAME); }
IE_BINARY(Add, KN_UNDEFINED, true)
IE_BINARY(Sub, KN_UNDEFINED, true)
IE_BINARY(Mul, KN_UNDEFINED, true)
IE_BINARY(Div, KN_UNDEFINED, true)
IE_BINARY(Mod, KN_UNDEFINED, true)
IE_BINARY(Pow, KN_UNDEFINED, false)
IE_BINARY(BitShift, KN_UNDEFINED, true)
IE_BINARY(BitwiseAnd, KN_UNDEFINED, true)
IE_BINARY(BitwiseOr, KN_UNDEFINED, true)
IE_BINARY(BitwiseXor, KN_UNDEFINED, true)
IE_BINARY(And, KN_BOOL, true)
IE_BINARY(Or, KN_BOOL, true)
IE_BINARY(Xor, KN_BOOL, true)
IE_BINARY(Equal, KN_BOOL, true)
IE_BINARY(Greater, KN_BOOL, true)
IE_BINARY(GreaterOrEqual, KN_BOOL, true)
IE_BINARY(Less, KN_BOOL, true)
IE_BINARY(LessOrEqual, KN_BOOL, true)

/* PRelu broadcasts the slope to X only (unidirectional): the output is X's shape. */
kn_status *kn_infer_PRelu(kn_infer_ctx *c) {
    KN_TRY(ie_input(c, 0));
    KN_TRY(ie_input(c, 1));
    KN_TRY(ie_same_dtype(c, c->in[0], c->in[1]));
    const kn_tensor *x = c->in[0], *slope = c->in[1];
    /* PRelu-6 takes a 1-D slope along the channel axis (see kn_cpu_PRelu) */
    if (c->node->opset > 0 && c->node->opset < 7 && slope->ndim == 1 && x->ndim >= 2 && slope->dims[0] == x->dims[1]) {
        ie_set(c, x->dtype, x);
        return NULL;
    }
    kn_tensor shape = {0};
    kn_status *st = kn_broadcast_shape(x, slope, &shape);
    if (st) return kn_error_wrap(st, "PRelu: ");
    if (x->ndim >= 0 && shape.ndim >= 0) {
        bool ok = shape.ndim == x->ndim;
        for (int i = 0; ok && i < x->ndim; i++)
            if (x->dims[i] >= 0 && shape.dims[i] >= 0 && x->dims[i] != shape.dims[i]) ok = false;
        if (!ok) {
            char ba[KN_DESC_LEN], bb[KN_DESC_LEN];
            return kn_error(KN_ERR_INVALID_ARGUMENT, "PRelu: slope %s does not broadcast to X %s",
                            kn_tensor_desc(slope, bb, sizeof bb), kn_tensor_desc(x, ba, sizeof ba));
        }
    }
    ie_set(c, x->dtype, x);
    return NULL;
}

/* SwiGLU: A and B have identical shapes (no broadcasting). */
kn_status *kn_infer_SwiGLU(kn_infer_ctx *c) {
    KN_TRY(ie_input(c, 0));
    KN_TRY(ie_input(c, 1));
    const kn_tensor *a = c->in[0], *b = c->in[1];
    KN_TRY(ie_same_dtype(c, a, b));
    if (a->ndim >= 0 && b->ndim >= 0) {
        bool ok = a->ndim == b->ndim;
        for (int i = 0; ok && i < a->ndim; i++)
            if (a->dims[i] >= 0 && b->dims[i] >= 0 && a->dims[i] != b->dims[i]) ok = false;
        if (!ok) {
            char ba[KN_DESC_LEN], bb[KN_DESC_LEN];
            return kn_error(KN_ERR_INVALID_ARGUMENT, "SwiGLU: A %s and B %s must have the same shape",
                            kn_tensor_desc(a, ba, sizeof ba), kn_tensor_desc(b, bb, sizeof bb));
        }
    }
    kn_tensor shape = {0};
    kn_status *st = kn_broadcast_shape(a, b, &shape);
    if (st) return kn_error_wrap(st, "SwiGLU: ");
    ie_set(c, a->dtype, &shape);
    return NULL;
}

static kn_status *ie_variadic(kn_infer_ctx *c) {
    if (c->n_in < 1) return kn_error(KN_ERR_INVALID_MODEL, "%s: needs at least one input", c->node->op_type);
    KN_TRY(ie_input(c, 0));
    kn_tensor shape = *c->in[0];
    shape.data = NULL;
    for (int k = 1; k < c->n_in; k++) {
        KN_TRY(ie_input(c, k));
        KN_TRY(ie_same_dtype(c, c->in[0], c->in[k]));
        kn_tensor next = {0};
        kn_status *st = kn_broadcast_shape(&shape, c->in[k], &next);
        if (st) return kn_error_wrap(st, "%s: ", c->node->op_type);
        shape = next;
    }
    ie_set(c, c->in[0]->dtype, &shape);
    return NULL;
}

kn_status *kn_infer_Max(kn_infer_ctx *c) { return ie_variadic(c); }
kn_status *kn_infer_Min(kn_infer_ctx *c) { return ie_variadic(c); }
kn_status *kn_infer_Mean(kn_infer_ctx *c) { return ie_variadic(c); }
kn_status *kn_infer_Sum(kn_infer_ctx *c) { return ie_variadic(c); }

kn_status *kn_infer_Where(kn_infer_ctx *c) {
    for (int k = 0; k < 3; k++) KN_TRY(ie_input(c, k));
    KN_TRY(ie_same_dtype(c, c->in[1], c->in[2]));
    kn_tensor s1 = {0}, s2 = {0};
    kn_status *st = kn_broadcast_shape(c->in[0], c->in[1], &s1);
    if (!st) st = kn_broadcast_shape(&s1, c->in[2], &s2);
    if (st) return kn_error_wrap(st, "Where: ");
    ie_set(c, c->in[1]->dtype, &s2);
    return NULL;
}

static kn_status *ie_to_attr(kn_infer_ctx *c) {
    KN_TRY(ie_input(c, 0));
    const kn_params_cast *p = KN_PARAMS(c->node, cast);
    if (!p->has_to) return kn_error(KN_ERR_INVALID_MODEL, "%s: missing 'to' attribute", c->node->op_type);
    if (!kn_dtype_valid((int)p->to) || p->to == KN_C64 || p->to == KN_C128)
        return kn_error(KN_ERR_UNSUPPORTED, "%s: unsupported target dtype %lld", c->node->op_type, (long long)p->to);
    ie_set(c, (kn_dtype)p->to, c->in[0]);
    return NULL;
}

kn_status *kn_infer_Cast(kn_infer_ctx *c) { return ie_to_attr(c); }

/* Bits per element as ONNX defines them (sub-byte types are one element per byte in memory). */
static int ie_bits(kn_dtype t) {
    switch (t) {
    case KN_U4:
    case KN_I4:
    case KN_F4E2M1: return 4;
    case KN_U2:
    case KN_I2: return 2;
    default: return (int)kn_dtype_size(t) * 8;
    }
}

kn_status *kn_infer_BitCast(kn_infer_ctx *c) {
    KN_TRY(ie_to_attr(c));
    kn_dtype from = c->in[0]->dtype, to = c->out[0] ? c->out[0]->dtype : KN_UNDEFINED;
    if (from != KN_UNDEFINED && to != KN_UNDEFINED &&
        (from == KN_STRING || to == KN_STRING || ie_bits(from) != ie_bits(to)))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "BitCast: %s and %s differ in bit width", kn_dtype_name(from),
                        kn_dtype_name(to));
    return NULL;
}

kn_status *kn_infer_CastLike(kn_infer_ctx *c) {
    KN_TRY(ie_input(c, 0));
    KN_TRY(ie_input(c, 1));
    ie_set(c, c->in[1]->dtype, c->in[0]);
    return NULL;
}
