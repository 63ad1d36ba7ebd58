/* Shape and type inference for the linear-algebra, convolution and pooling ops, plus the window
 * geometry (pads, output sizes) and Einsum equation parsing that the CPU kernels share with it,
 * so that inference and execution can never disagree on a shape. */
#include "graph/ops.h"
#include "graph/op_helpers.h"
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DESC(t, buf) kn_tensor_desc((t), (buf), sizeof(buf))

static kn_status *need_inputs(kn_infer_ctx *c, int n) {
    for (int i = 0; i < n; i++)
        if (i >= c->n_in || !c->in[i])
            return kn_error(KN_ERR_INVALID_MODEL, "%s: missing required input %d", c->node->op_type, i);
    if (c->n_out < 1 || !c->out[0]) return kn_error(KN_ERR_INVALID_MODEL, "%s: missing output 0", c->node->op_type);
    return NULL;
}

static void set_unknown(kn_tensor *t, kn_dtype dt) {
    t->dtype = dt;
    t->ndim = -1;
}

/* ---------------------------------------------------------------- params decoders */

/* An ints attribute into fixed storage: *count is its length (-1 when absent); values past cap
 * are not kept (the length is checked against the input's rank before any value is read). */
static void decode_ints(const kn_node *n, const char *name, int *count, int64_t *vals, int cap) {
    const int64_t *v;
    int cnt = kn_attr_ints(n, name, &v);
    *count = cnt;
    for (int i = 0; i < cnt && i < cap; i++) vals[i] = v[i];
}

static kn_status *decode_window(const kn_node *n, kn_window_attrs *w) {
    decode_ints(n, "kernel_shape", &w->n_kernel_shape, w->kernel_shape, KN_PARAMS_MAX_WIN);
    decode_ints(n, "strides", &w->n_strides, w->strides, KN_PARAMS_MAX_WIN);
    decode_ints(n, "dilations", &w->n_dilations, w->dilations, KN_PARAMS_MAX_WIN);
    decode_ints(n, "pads", &w->n_pads, w->pads, 2 * KN_PARAMS_MAX_WIN);
    const char *ap = kn_attr_str(n, "auto_pad", "NOTSET");
    if (!strcmp(ap, "SAME_UPPER")) w->auto_pad = KN_AUTO_PAD_SAME_UPPER;
    else if (!strcmp(ap, "SAME_LOWER")) w->auto_pad = KN_AUTO_PAD_SAME_LOWER;
    else if (!strcmp(ap, "VALID")) w->auto_pad = KN_AUTO_PAD_VALID;
    else if (!strcmp(ap, "NOTSET") || !ap[0]) w->auto_pad = KN_AUTO_PAD_NOTSET;
    else return kn_error(KN_ERR_INVALID_MODEL, "%s: unknown auto_pad '%s'", n->op_type, ap);
    return NULL;
}

kn_status *kn_params_decode_gemm(const kn_node *n, void *out) {
    kn_params_gemm *p = out;
    p->trans_a = kn_attr_int(n, "transA", 0) != 0;
    p->trans_b = kn_attr_int(n, "transB", 0) != 0;
    p->alpha = kn_attr_float(n, "alpha", 1.0f);
    p->beta = kn_attr_float(n, "beta", 1.0f);
    /* only FusedGemm's: a stray attribute on Gemm stays ignored */
    if (!n->op_type || strcmp(n->op_type, "FusedGemm")) return NULL;
    const char *act = kn_attr_str(n, "activation", NULL);
    if (!act || !act[0]) return NULL;
    /* the activations ONNX Runtime's FusedGemm kernel takes (its ElementWiseRangedTransform set),
     * with the ONNX op's defaults; required: parameters without one (as ONNX Runtime requires) */
    static const struct {
        const char *name;
        int act;
        float a, b, g;
        bool need_ab;
    } acts[] = {{"Relu", KN_GEMM_ACT_RELU, 0, 0, 0, false},
                {"LeakyRelu", KN_GEMM_ACT_LEAKY_RELU, 0.01f, 0, 0, false},
                {"Sigmoid", KN_GEMM_ACT_SIGMOID, 0, 0, 0, false},
                {"Tanh", KN_GEMM_ACT_TANH, 0, 0, 0, false},
                {"HardSigmoid", KN_GEMM_ACT_HARD_SIGMOID, 0.2f, 0.5f, 0, false},
                {"Elu", KN_GEMM_ACT_ELU, 1.0f, 0, 0, false},
                {"Selu", KN_GEMM_ACT_SELU, 1.67326319217681884765625f, 0, 1.05070102214813232421875f, false},
                {"Celu", KN_GEMM_ACT_CELU, 1.0f, 0, 0, false},
                {"Softplus", KN_GEMM_ACT_SOFTPLUS, 0, 0, 0, false},
                {"Softsign", KN_GEMM_ACT_SOFTSIGN, 0, 0, 0, false},
                {"ThresholdedRelu", KN_GEMM_ACT_THRESHOLDED_RELU, 1.0f, 0, 0, false},
                {"ParametricSoftplus", KN_GEMM_ACT_PARAMETRIC_SOFTPLUS, 0, 0, 0, true},
                {"ScaledTanh", KN_GEMM_ACT_SCALED_TANH, 0, 0, 0, true},
                {"Clip", KN_GEMM_ACT_CLIP, -INFINITY, INFINITY, 0, false}};
    int k = 0, na = (int)(sizeof acts / sizeof acts[0]);
    while (k < na && strcmp(acts[k].name, act)) k++;
    if (k == na) return kn_error(KN_ERR_UNSUPPORTED, "FusedGemm: activation '%s' is not supported", act);
    if (acts[k].need_ab && (!kn_node_attr(n, "activation_alpha") || !kn_node_attr(n, "activation_beta")))
        return kn_error(KN_ERR_INVALID_MODEL, "FusedGemm: activation %s needs activation_alpha and activation_beta",
                        act);
    p->act = acts[k].act;
    p->act_alpha = kn_attr_float(n, "activation_alpha", acts[k].a);
    p->act_beta = kn_attr_float(n, "activation_beta", acts[k].b);
    p->act_gamma = kn_attr_float(n, "activation_gamma", acts[k].g);
    if ((p->act == KN_GEMM_ACT_CELU && p->act_alpha == 0.0f) ||
        (p->act == KN_GEMM_ACT_CLIP && (isnan(p->act_alpha) || isnan(p->act_beta))))
        return kn_error(KN_ERR_INVALID_MODEL, "FusedGemm: invalid activation parameters for %s", act);
    return NULL;
}

kn_status *kn_params_decode_conv(const kn_node *n, void *out) {
    kn_params_conv *p = out;
    KN_TRY(decode_window(n, &p->win));
    p->group = kn_attr_int(n, "group", 1);
    p->offset_group = kn_attr_int(n, "offset_group", 1);
    decode_ints(n, "output_padding", &p->n_output_padding, p->output_padding, KN_PARAMS_MAX_WIN);
    decode_ints(n, "output_shape", &p->n_output_shape, p->output_shape, KN_PARAMS_MAX_WIN);
    /* only FusedConv's: a stray attribute on another conv-family op stays ignored */
    const char *act = n->op_type && !strcmp(n->op_type, "FusedConv") ? kn_attr_str(n, "activation", NULL) : NULL;
    const kn_attr *apa = kn_node_attr(n, "activation_params");
    const float *ap = apa && apa->type == KN_ATTR_FLOATS ? apa->floats : NULL;
    int nap = ap ? apa->n_floats : 0;
    static const struct {
        const char *name;
        int act, nparams;
        float a, b; /* defaults */
    } acts[] = {{"Relu", KN_CONV_ACT_RELU, 0, 0, 0},
                {"Clip", KN_CONV_ACT_CLIP, 2, -INFINITY, INFINITY},
                {"LeakyRelu", KN_CONV_ACT_LEAKY_RELU, 1, 0.01f, 0},
                {"Sigmoid", KN_CONV_ACT_SIGMOID, 0, 0, 0},
                {"Tanh", KN_CONV_ACT_TANH, 0, 0, 0},
                {"HardSigmoid", KN_CONV_ACT_HARD_SIGMOID, 2, 0.2f, 0.5f},
                {"Silu", KN_CONV_ACT_SILU, 0, 0, 0}};
    if (act) {
        int k = 0, na = (int)(sizeof acts / sizeof acts[0]);
        while (k < na && strcmp(acts[k].name, act)) k++;
        if (k == na) return kn_error(KN_ERR_UNSUPPORTED, "FusedConv: activation '%s' is not supported", act);
        if (nap > acts[k].nparams)
            return kn_error(KN_ERR_INVALID_MODEL, "FusedConv: %s takes %d activation_params, got %d", act,
                            acts[k].nparams, nap);
        p->act = acts[k].act;
        p->act_a = nap > 0 ? ap[0] : acts[k].a;
        p->act_b = nap > 1 ? ap[1] : acts[k].b;
    }
    return NULL;
}

kn_status *kn_params_decode_pool(const kn_node *n, void *out) {
    kn_params_pool *p = out;
    KN_TRY(decode_window(n, &p->win));
    p->ceil_mode = kn_attr_int(n, "ceil_mode", 0) != 0;
    p->count_include_pad = kn_attr_int(n, "count_include_pad", 0) != 0;
    p->storage_order_col = kn_attr_int(n, "storage_order", 0) != 0;
    p->p = kn_attr_int(n, "p", 2);
    return NULL;
}

kn_status *kn_params_decode_einsum(const kn_node *n, void *out) {
    kn_params_einsum *p = out;
    const char *eq = kn_attr_str(n, "equation", NULL);
    if (!eq) return kn_error(KN_ERR_INVALID_MODEL, "Einsum: missing equation");
    size_t len = strlen(eq);
    if (len < sizeof p->equation) {
        memcpy(p->equation, eq, len + 1);
        return NULL;
    }
    /* too long to keep as written: keep it without whitespace, as kn_einsum_parse reads it */
    size_t L = 0;
    for (const char *q = eq; *q; q++) {
        if (isspace((unsigned char)*q)) continue;
        if (L + 1 >= sizeof p->equation) return kn_error(KN_ERR_UNSUPPORTED, "Einsum: equation too long");
        p->equation[L++] = *q;
    }
    p->equation[L] = 0;
    return NULL;
}

/* The window attributes of a node of the conv or pool families. */
static const kn_window_attrs *window_attrs(const struct kn_node *n) {
    switch (n->op) {
    case KN_OP_AveragePool:
    case KN_OP_MaxPool:
    case KN_OP_LpPool:
    case KN_OP_GlobalLpPool:
    case KN_OP_MaxUnpool:
    case KN_OP_KnMaxPoolGrad:
    case KN_OP_KnAveragePoolGrad: return &KN_PARAMS(n, pool)->win;
    default: return &KN_PARAMS(n, conv)->win;
    }
}

/* ---------------------------------------------------------------- window geometry */

/* Strides, dilations and pads beyond this are refused: no real model comes near, and the bound
 * keeps every window computation (kernel dims are at most KN_MAX_NUMEL) far from int64 overflow. */
#define KN_MAX_WINDOW_ATTR ((int64_t)1 << 24)

/* The window attributes come from n's params (conv or pool family), decoded at load; their
 * lengths and values are checked here, against the spatial rank of this shape. */
kn_status *kn_conv_geometry(const struct kn_node *n, const char *op, int nsp, const int64_t *in, const int64_t *kernel,
                            bool ceil_mode, kn_conv_geom *g) {
    memset(g, 0, sizeof *g);
    if (nsp < 1 || nsp > KN_MAX_DIMS - 2)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %d spatial dims not supported", op, nsp);
    g->nsp = nsp;
    const kn_window_attrs *wa = window_attrs(n);
    const int64_t *v;
    int cnt;
    for (int i = 0; i < nsp; i++) {
        g->in[i] = in[i];
        g->k[i] = kernel[i];
        g->stride[i] = 1;
        g->dil[i] = 1;
        if (kernel[i] == 0 || kernel[i] < -1 || kernel[i] > KN_MAX_NUMEL)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: kernel dim %d is %lld", op, i, (long long)kernel[i]);
    }
    if ((cnt = wa->n_strides) >= 0) {
        v = wa->strides;
        if (cnt != nsp)
            return kn_error(KN_ERR_INVALID_MODEL, "%s: strides has %d values for %d spatial dims", op, cnt, nsp);
        for (int i = 0; i < nsp; i++) {
            if (v[i] < 1 || v[i] > KN_MAX_WINDOW_ATTR)
                return kn_error(KN_ERR_INVALID_MODEL, "%s: stride %lld out of range", op, (long long)v[i]);
            g->stride[i] = v[i];
        }
    }
    if ((cnt = wa->n_dilations) >= 0) {
        v = wa->dilations;
        if (cnt != nsp)
            return kn_error(KN_ERR_INVALID_MODEL, "%s: dilations has %d values for %d spatial dims", op, cnt, nsp);
        for (int i = 0; i < nsp; i++) {
            if (v[i] < 1 || v[i] > KN_MAX_WINDOW_ATTR)
                return kn_error(KN_ERR_INVALID_MODEL, "%s: dilation %lld out of range", op, (long long)v[i]);
            g->dil[i] = v[i];
        }
    }
    bool same_u = wa->auto_pad == KN_AUTO_PAD_SAME_UPPER, same_l = wa->auto_pad == KN_AUTO_PAD_SAME_LOWER;
    bool valid = wa->auto_pad == KN_AUTO_PAD_VALID;
    if (!same_u && !same_l && !valid && (cnt = wa->n_pads) >= 0) {
        v = wa->pads;
        if (cnt != 2 * nsp)
            return kn_error(KN_ERR_INVALID_MODEL, "%s: pads has %d values for %d spatial dims", op, cnt, nsp);
        for (int i = 0; i < nsp; i++) {
            if (v[i] < 0 || v[i + nsp] < 0 || v[i] > KN_MAX_WINDOW_ATTR || v[i + nsp] > KN_MAX_WINDOW_ATTR)
                return kn_error(KN_ERR_INVALID_MODEL, "%s: pads out of range", op);
            g->pad_b[i] = v[i];
            g->pad_e[i] = v[i + nsp];
        }
    }
    for (int i = 0; i < nsp; i++) {
        if (in[i] < 0 || kernel[i] < 0) {
            g->out[i] = -1;
            continue;
        }
        int64_t ek = (g->k[i] - 1) * g->dil[i] + 1, s = g->stride[i];
        if (same_u || same_l) {
            int64_t o = (in[i] + s - 1) / s;
            int64_t total = (o - 1) * s + ek - in[i];
            if (total < 0) total = 0;
            g->pad_b[i] = same_u ? total / 2 : total - total / 2;
            g->pad_e[i] = total - g->pad_b[i];
            g->out[i] = o;
        } else {
            int64_t span = in[i] + g->pad_b[i] + g->pad_e[i] - ek;
            if (span < 0)
                return kn_error(KN_ERR_INVALID_ARGUMENT,
                                "%s: window %lld (dilated) larger than padded input %lld in dim %d", op, (long long)ek,
                                (long long)(in[i] + g->pad_b[i] + g->pad_e[i]), i);
            int64_t o = ceil_mode ? (span + s - 1) / s + 1 : span / s + 1;
            /* The last window must start inside the input or the leading pad. */
            if (ceil_mode && (o - 1) * s >= in[i] + g->pad_b[i]) o--;
            g->out[i] = o;
        }
    }
    return NULL;
}

kn_status *kn_convt_geometry(const struct kn_node *n, int nsp, const int64_t *in, const int64_t *kernel,
                             kn_conv_geom *g, int64_t *outpad) {
    /* Start from the Conv reading of strides/dilations/pads but without auto_pad, which means
     * something different here. */
    const kn_params_conv *cp = KN_PARAMS(n, conv);
    bool same_u = cp->win.auto_pad == KN_AUTO_PAD_SAME_UPPER, same_l = cp->win.auto_pad == KN_AUTO_PAD_SAME_LOWER;
    int64_t fake_in[KN_MAX_DIMS];
    for (int i = 0; i < nsp && i < KN_MAX_DIMS; i++) fake_in[i] = -1;
    KN_TRY(kn_conv_geometry(n, "ConvTranspose", nsp, fake_in, kernel, false, g));
    if (same_u || same_l || cp->win.auto_pad == KN_AUTO_PAD_VALID)
        for (int i = 0; i < nsp; i++) g->pad_b[i] = g->pad_e[i] = 0;
    const int64_t *v;
    int cnt;
    for (int i = 0; i < nsp; i++) {
        outpad[i] = 0;
        g->in[i] = in[i];
    }
    if ((cnt = cp->n_output_padding) >= 0) {
        v = cp->output_padding;
        if (cnt != nsp)
            return kn_error(KN_ERR_INVALID_MODEL, "ConvTranspose: output_padding has %d values for %d spatial dims",
                            cnt, nsp);
        for (int i = 0; i < nsp; i++) {
            if (v[i] < 0 || v[i] > KN_MAX_WINDOW_ATTR)
                return kn_error(KN_ERR_INVALID_MODEL, "ConvTranspose: output_padding out of range");
            outpad[i] = v[i];
        }
    }
    const int64_t *os = NULL;
    if ((cnt = cp->n_output_shape) >= 0) {
        v = cp->output_shape;
        if (cnt == nsp) os = v;
        else if (cnt == nsp + 2) os = v + 2;
        else
            return kn_error(KN_ERR_INVALID_MODEL, "ConvTranspose: output_shape has %d values for %d spatial dims", cnt,
                            nsp);
        for (int i = 0; i < nsp; i++)
            if (os[i] < 0 || os[i] > KN_MAX_NUMEL)
                return kn_error(KN_ERR_INVALID_MODEL, "ConvTranspose: output_shape value %lld out of range",
                                (long long)os[i]);
    }
    for (int i = 0; i < nsp; i++) {
        if (in[i] < 0 || kernel[i] < 0) {
            g->out[i] = -1;
            continue;
        }
        int64_t ek = (g->k[i] - 1) * g->dil[i] + 1, s = g->stride[i];
        int64_t full = s * (in[i] - 1) + outpad[i] + ek;
        if (os || same_u || same_l) {
            int64_t o = os ? os[i] : in[i] * s;
            /* A larger output than the transposed conv covers is padded at the end, as ORT does. */
            int64_t total = full - o;
            if (total < 0) total = 0;
            if (same_u) {
                g->pad_b[i] = total / 2;
                g->pad_e[i] = total - total / 2;
            } else {
                g->pad_b[i] = total - total / 2;
                g->pad_e[i] = total / 2;
            }
            g->out[i] = o;
        } else {
            g->out[i] = full - g->pad_b[i] - g->pad_e[i];
        }
        if (g->out[i] < 0)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "ConvTranspose: output dim %d would be %lld", i,
                            (long long)g->out[i]);
    }
    return NULL;
}

/* ---------------------------------------------------------------- matrix products */

/* numpy matmul: 1-D operands are promoted and the added dim removed; batch dims broadcast. */
static kn_status *matmul_shape(const char *op, const kn_tensor *a, const kn_tensor *b, kn_tensor *out) {
    char ba[KN_DESC_LEN], bb[KN_DESC_LEN];
    if (a->ndim < 0 || b->ndim < 0) {
        out->ndim = -1;
        return NULL;
    }
    if (a->ndim == 0 || b->ndim == 0)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: scalar operand (%s, %s)", op, DESC(a, ba), DESC(b, bb));
    int64_t ka = a->dims[a->ndim - 1];
    int64_t kb = b->ndim == 1 ? b->dims[0] : b->dims[b->ndim - 2];
    if (ka >= 0 && kb >= 0 && ka != kb)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: inner dims differ: %s x %s", op, DESC(a, ba), DESC(b, bb));
    kn_tensor ta = {0}, tb = {0}, tc = {0};
    ta.ndim = a->ndim >= 2 ? a->ndim - 2 : 0;
    tb.ndim = b->ndim >= 2 ? b->ndim - 2 : 0;
    for (int i = 0; i < ta.ndim; i++) ta.dims[i] = a->dims[i];
    for (int i = 0; i < tb.ndim; i++) tb.dims[i] = b->dims[i];
    kn_status *st = kn_broadcast_shape(&ta, &tb, &tc);
    if (st) return kn_error_wrap(st, "%s (%s x %s): ", op, DESC(a, ba), DESC(b, bb));
    int r = tc.ndim;
    int64_t dims[KN_MAX_DIMS + 2];
    for (int i = 0; i < r; i++) dims[i] = tc.dims[i];
    if (a->ndim >= 2) dims[r++] = a->dims[a->ndim - 2];
    if (b->ndim >= 2) dims[r++] = b->dims[b->ndim - 1];
    if (r > KN_MAX_DIMS) return kn_error(KN_ERR_UNSUPPORTED, "%s: result rank %d too large", op, r);
    kn_tensor_set_shape(out, r, dims);
    return NULL;
}

kn_status *kn_infer_MatMul(kn_infer_ctx *c) {
    KN_TRY(need_inputs(c, 2));
    c->out[0]->dtype = c->in[0]->dtype;
    if (c->in[0]->dtype != c->in[1]->dtype)
        return kn_error(KN_ERR_INVALID_MODEL, "MatMul: operand dtypes differ (%s, %s)", kn_dtype_name(c->in[0]->dtype),
                        kn_dtype_name(c->in[1]->dtype));
    return matmul_shape("MatMul", c->in[0], c->in[1], c->out[0]);
}

kn_status *kn_infer_MatMulInteger(kn_infer_ctx *c) {
    KN_TRY(need_inputs(c, 2));
    c->out[0]->dtype = KN_I32;
    return matmul_shape("MatMulInteger", c->in[0], c->in[1], c->out[0]);
}

kn_status *kn_infer_QLinearMatMul(kn_infer_ctx *c) {
    KN_TRY(need_inputs(c, 8));
    c->out[0]->dtype = c->in[7]->dtype;
    return matmul_shape("QLinearMatMul", c->in[0], c->in[3], c->out[0]);
}

kn_status *kn_infer_Gemm(kn_infer_ctx *c) {
    KN_TRY(need_inputs(c, 2));
    const kn_tensor *a = c->in[0], *b = c->in[1];
    char ba[KN_DESC_LEN], bb[KN_DESC_LEN];
    c->out[0]->dtype = a->dtype;
    if (a->ndim < 0 || b->ndim < 0) {
        c->out[0]->ndim = -1;
        return NULL;
    }
    if (a->ndim != 2 || b->ndim != 2)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "Gemm: operands must be 2-D, got %s and %s", DESC(a, ba), DESC(b, bb));
    bool ta = KN_PARAMS(c->node, gemm)->trans_a, tb = KN_PARAMS(c->node, gemm)->trans_b;
    int64_t M = ta ? a->dims[1] : a->dims[0], K = ta ? a->dims[0] : a->dims[1];
    int64_t K2 = tb ? b->dims[1] : b->dims[0], N = tb ? b->dims[0] : b->dims[1];
    if (K >= 0 && K2 >= 0 && K != K2)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "Gemm: inner dims differ: %s x %s (transA=%d transB=%d)", DESC(a, ba),
                        DESC(b, bb), ta, tb);
    if (c->n_in > 2 && c->in[2] && c->in[2]->ndim >= 0) {
        const kn_tensor *C = c->in[2];
        if (C->ndim > 2) return kn_error(KN_ERR_INVALID_ARGUMENT, "Gemm: C %s has rank > 2", DESC(C, ba));
        int64_t want[2] = {M, N};
        for (int i = 0; i < C->ndim; i++) {
            int64_t d = C->dims[i], w = want[2 - C->ndim + i];
            if (d >= 0 && w >= 0 && d != 1 && d != w)
                return kn_error(KN_ERR_INVALID_ARGUMENT, "Gemm: C %s does not broadcast to [%lld,%lld]", DESC(C, ba),
                                (long long)M, (long long)N);
        }
    }
    int64_t dims[2] = {M, N};
    kn_tensor_set_shape(c->out[0], 2, dims);
    return NULL;
}

/* com.microsoft FusedGemm: Gemm's shapes (the activation keeps them). */
kn_status *kn_infer_MsFusedGemm(kn_infer_ctx *c) { return kn_infer_Gemm(c); }

/* ---------------------------------------------------------------- convolutions */

static kn_status *conv_like(kn_infer_ctx *c, const char *op, const kn_tensor *x, const kn_tensor *w, kn_dtype dt) {
    char bx[KN_DESC_LEN], bw[KN_DESC_LEN];
    kn_tensor *o = c->out[0];
    o->dtype = dt;
    if (x->ndim < 0 && w->ndim < 0) {
        o->ndim = -1;
        return NULL;
    }
    int rank = x->ndim >= 0 ? x->ndim : w->ndim;
    if (rank < 3 || rank > KN_MAX_DIMS || (w->ndim >= 0 && w->ndim != rank))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: X %s and W %s must have equal rank >= 3", op, DESC(x, bx),
                        DESC(w, bw));
    int nsp = rank - 2;
    const kn_params_conv *cp = KN_PARAMS(c->node, conv);
    int64_t group = cp->group;
    if (group < 1) return kn_error(KN_ERR_INVALID_MODEL, "%s: group %lld must be >= 1", op, (long long)group);
    int64_t kernel[KN_MAX_DIMS], in[KN_MAX_DIMS];
    const int64_t *ks = cp->win.kernel_shape;
    int nk = cp->win.n_kernel_shape;
    if (nk >= 0 && nk != nsp)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: kernel_shape has %d values for %d spatial dims", op, nk, nsp);
    for (int i = 0; i < nsp; i++) {
        kernel[i] = nk >= 0 ? ks[i] : (w->ndim >= 0 ? w->dims[2 + i] : -1);
        in[i] = x->ndim >= 0 ? x->dims[2 + i] : -1;
    }
    if (x->ndim >= 0 && w->ndim >= 0 && x->dims[1] >= 0 && w->dims[1] >= 0 && x->dims[1] != w->dims[1] * group)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: X %s has %lld channels but W %s with group %lld wants %lld", op,
                        DESC(x, bx), (long long)x->dims[1], DESC(w, bw), (long long)group,
                        (long long)(w->dims[1] * group));
    if (w->ndim >= 0 && w->dims[0] >= 0 && w->dims[0] % group)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: W %s output channels not divisible by group %lld", op,
                        DESC(w, bw), (long long)group);
    kn_conv_geom g;
    KN_TRY(kn_conv_geometry(c->node, op, nsp, in, kernel, false, &g));
    int64_t dims[KN_MAX_DIMS];
    dims[0] = x->ndim >= 0 ? x->dims[0] : -1;
    dims[1] = w->ndim >= 0 ? w->dims[0] : -1;
    for (int i = 0; i < nsp; i++) dims[2 + i] = g.out[i];
    kn_tensor_set_shape(o, rank, dims);
    return NULL;
}

kn_status *kn_infer_Conv(kn_infer_ctx *c) {
    KN_TRY(need_inputs(c, 2));
    return conv_like(c, "Conv", c->in[0], c->in[1], c->in[0]->dtype);
}

kn_status *kn_infer_MsFusedConv(kn_infer_ctx *c) {
    KN_TRY(need_inputs(c, 2));
    return conv_like(c, "FusedConv", c->in[0], c->in[1], c->in[0]->dtype);
}

kn_status *kn_infer_ConvInteger(kn_infer_ctx *c) {
    KN_TRY(need_inputs(c, 2));
    return conv_like(c, "ConvInteger", c->in[0], c->in[1], KN_I32);
}

kn_status *kn_infer_QLinearConv(kn_infer_ctx *c) {
    KN_TRY(need_inputs(c, 8));
    return conv_like(c, "QLinearConv", c->in[0], c->in[3], c->in[7]->dtype);
}

kn_status *kn_infer_DeformConv(kn_infer_ctx *c) {
    KN_TRY(need_inputs(c, 3));
    return conv_like(c, "DeformConv", c->in[0], c->in[1], c->in[0]->dtype);
}

kn_status *kn_infer_ConvTranspose(kn_infer_ctx *c) {
    KN_TRY(need_inputs(c, 2));
    const kn_tensor *x = c->in[0], *w = c->in[1];
    char bx[KN_DESC_LEN], bw[KN_DESC_LEN];
    kn_tensor *o = c->out[0];
    o->dtype = x->dtype;
    if (x->ndim < 0 && w->ndim < 0) {
        o->ndim = -1;
        return NULL;
    }
    int rank = x->ndim >= 0 ? x->ndim : w->ndim;
    if (rank < 3 || rank > KN_MAX_DIMS || (w->ndim >= 0 && w->ndim != rank))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ConvTranspose: X %s and W %s must have equal rank >= 3", DESC(x, bx),
                        DESC(w, bw));
    int nsp = rank - 2;
    const kn_params_conv *cp = KN_PARAMS(c->node, conv);
    int64_t group = cp->group;
    if (group < 1) return kn_error(KN_ERR_INVALID_MODEL, "ConvTranspose: group %lld must be >= 1", (long long)group);
    if (x->ndim >= 0 && w->ndim >= 0 && x->dims[1] >= 0 && w->dims[0] >= 0 && x->dims[1] != w->dims[0])
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ConvTranspose: X %s channels differ from W %s dim 0", DESC(x, bx),
                        DESC(w, bw));
    if (w->ndim >= 0 && w->dims[0] >= 0 && w->dims[0] % group)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ConvTranspose: W %s channels not divisible by group %lld",
                        DESC(w, bw), (long long)group);
    int64_t kernel[KN_MAX_DIMS], in[KN_MAX_DIMS], outpad[KN_MAX_DIMS];
    const int64_t *ks = cp->win.kernel_shape;
    int nk = cp->win.n_kernel_shape;
    if (nk >= 0 && nk != nsp)
        return kn_error(KN_ERR_INVALID_MODEL, "ConvTranspose: kernel_shape has %d values for %d spatial dims", nk, nsp);
    for (int i = 0; i < nsp; i++) {
        kernel[i] = nk >= 0 ? ks[i] : (w->ndim >= 0 ? w->dims[2 + i] : -1);
        in[i] = x->ndim >= 0 ? x->dims[2 + i] : -1;
    }
    kn_conv_geom g;
    KN_TRY(kn_convt_geometry(c->node, nsp, in, kernel, &g, outpad));
    int64_t dims[KN_MAX_DIMS];
    dims[0] = x->ndim >= 0 ? x->dims[0] : -1;
    dims[1] = w->ndim >= 0 && w->dims[1] >= 0 ? w->dims[1] * group : -1;
    for (int i = 0; i < nsp; i++) dims[2 + i] = g.out[i];
    kn_tensor_set_shape(o, rank, dims);
    return NULL;
}

kn_status *kn_infer_Col2Im(kn_infer_ctx *c) {
    KN_TRY(need_inputs(c, 3));
    const kn_tensor *x = c->in[0], *is = c->in[1], *bs = c->in[2];
    char bx[KN_DESC_LEN];
    kn_tensor *o = c->out[0];
    o->dtype = x->dtype;
    if (!is->data || !bs->data || x->ndim < 0) {
        o->ndim = -1;
        return NULL;
    }
    if (x->ndim != 3) return kn_error(KN_ERR_INVALID_ARGUMENT, "Col2Im: input %s must be 3-D", DESC(x, bx));
    int64_t *img = NULL, *blk = NULL, ni = 0, nb = 0;
    kn_status *st = kn_tensor_to_i64(is, &img, &ni);
    if (!st) st = kn_tensor_to_i64(bs, &blk, &nb);
    if (!st && (ni != nb || ni < 1 || ni + 2 > KN_MAX_DIMS))
        st = kn_error(KN_ERR_INVALID_ARGUMENT, "Col2Im: image_shape has %lld values, block_shape %lld", (long long)ni,
                      (long long)nb);
    int64_t prod = 1, dims[KN_MAX_DIMS];
    for (int64_t i = 0; !st && i < nb; i++) {
        if (blk[i] < 1 || img[i] < 1 || blk[i] > KN_MAX_NUMEL || img[i] > KN_MAX_NUMEL)
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "Col2Im: image/block dim out of range");
        else prod *= blk[i];
    }
    if (!st && x->dims[1] >= 0 && x->dims[1] % prod)
        st = kn_error(KN_ERR_INVALID_ARGUMENT, "Col2Im: input %s dim 1 not divisible by block size %lld", DESC(x, bx),
                      (long long)prod);
    if (!st) {
        dims[0] = x->dims[0];
        dims[1] = x->dims[1] >= 0 ? x->dims[1] / prod : -1;
        for (int64_t i = 0; i < ni; i++) dims[2 + i] = img[i];
        kn_tensor_set_shape(o, (int)ni + 2, dims);
    }
    free(img);
    free(blk);
    return st;
}

/* ---------------------------------------------------------------- pooling */

static kn_status *pool_like(kn_infer_ctx *c, const char *op, bool has_ceil) {
    KN_TRY(need_inputs(c, 1));
    const kn_tensor *x = c->in[0];
    char bx[KN_DESC_LEN];
    for (int i = 0; i < c->n_out; i++)
        if (c->out[i]) set_unknown(c->out[i], i == 0 ? x->dtype : KN_I64);
    if (x->ndim < 0) return NULL;
    if (x->ndim < 3 || x->ndim > KN_MAX_DIMS)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input %s must have rank >= 3", op, DESC(x, bx));
    int nsp = x->ndim - 2;
    const kn_params_pool *pp = KN_PARAMS(c->node, pool);
    const int64_t *ks = pp->win.kernel_shape;
    int nk = pp->win.n_kernel_shape;
    if (nk != nsp)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: kernel_shape has %d values for input %s", op, nk, DESC(x, bx));
    bool ceil_mode = has_ceil && pp->ceil_mode;
    kn_conv_geom g;
    KN_TRY(kn_conv_geometry(c->node, op, nsp, x->dims + 2, ks, ceil_mode, &g));
    int64_t dims[KN_MAX_DIMS] = {x->dims[0], x->dims[1]};
    for (int i = 0; i < nsp; i++) dims[2 + i] = g.out[i];
    for (int i = 0; i < c->n_out && i < 2; i++)
        if (c->out[i]) kn_tensor_set_shape(c->out[i], x->ndim, dims);
    return NULL;
}

kn_status *kn_infer_AveragePool(kn_infer_ctx *c) { return pool_like(c, "AveragePool", true); }
kn_status *kn_infer_MaxPool(kn_infer_ctx *c) { return pool_like(c, "MaxPool", true); }
kn_status *kn_infer_LpPool(kn_infer_ctx *c) { return pool_like(c, "LpPool", true); }

static kn_status *global_pool(kn_infer_ctx *c, const char *op) {
    KN_TRY(need_inputs(c, 1));
    const kn_tensor *x = c->in[0];
    char bx[KN_DESC_LEN];
    c->out[0]->dtype = x->dtype;
    if (x->ndim < 0) {
        c->out[0]->ndim = -1;
        return NULL;
    }
    if (x->ndim < 2) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input %s must have rank >= 2", op, DESC(x, bx));
    int64_t dims[KN_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) dims[i] = i < 2 ? x->dims[i] : 1;
    kn_tensor_set_shape(c->out[0], x->ndim, dims);
    return NULL;
}

kn_status *kn_infer_GlobalAveragePool(kn_infer_ctx *c) { return global_pool(c, "GlobalAveragePool"); }
kn_status *kn_infer_GlobalMaxPool(kn_infer_ctx *c) { return global_pool(c, "GlobalMaxPool"); }
kn_status *kn_infer_GlobalLpPool(kn_infer_ctx *c) { return global_pool(c, "GlobalLpPool"); }

kn_status *kn_infer_MaxUnpool(kn_infer_ctx *c) {
    KN_TRY(need_inputs(c, 2));
    const kn_tensor *x = c->in[0];
    char bx[KN_DESC_LEN];
    kn_tensor *o = c->out[0];
    o->dtype = x->dtype;
    o->ndim = -1;
    if (c->n_in > 2 && c->in[2]) {
        const kn_tensor *os = c->in[2];
        if (!os->data) return NULL;
        int64_t *v = NULL, n = 0;
        KN_TRY(kn_tensor_to_i64(os, &v, &n));
        kn_status *st = NULL;
        if (n < 3 || n > KN_MAX_DIMS || (x->ndim >= 0 && n != x->ndim))
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "MaxUnpool: output_shape has %lld values for input %s", (long long)n,
                          DESC(x, bx));
        for (int64_t i = 0; !st && i < n; i++)
            if (v[i] < 0 || v[i] > KN_MAX_NUMEL)
                st = kn_error(KN_ERR_INVALID_ARGUMENT, "MaxUnpool: output_shape value out of range");
        if (!st) kn_tensor_set_shape(o, (int)n, v);
        free(v);
        return st;
    }
    if (x->ndim < 0) return NULL;
    if (x->ndim < 3 || x->ndim > KN_MAX_DIMS)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "MaxUnpool: input %s must have rank >= 3", DESC(x, bx));
    int nsp = x->ndim - 2;
    const int64_t *ks = KN_PARAMS(c->node, pool)->win.kernel_shape;
    if (KN_PARAMS(c->node, pool)->win.n_kernel_shape != nsp)
        return kn_error(KN_ERR_INVALID_MODEL, "MaxUnpool: kernel_shape does not match input %s", DESC(x, bx));
    int64_t fake[KN_MAX_DIMS];
    for (int i = 0; i < nsp; i++) fake[i] = -1;
    kn_conv_geom g;
    KN_TRY(kn_conv_geometry(c->node, "MaxUnpool", nsp, fake, ks, false, &g));
    int64_t dims[KN_MAX_DIMS] = {x->dims[0], x->dims[1]};
    for (int i = 0; i < nsp; i++) {
        int64_t d = x->dims[2 + i];
        dims[2 + i] = d < 0 ? -1 : (d - 1) * g.stride[i] - g.pad_b[i] - g.pad_e[i] + ks[i];
        if (d >= 0 && dims[2 + i] < 0) return kn_error(KN_ERR_INVALID_ARGUMENT, "MaxUnpool: negative output dim");
    }
    kn_tensor_set_shape(o, x->ndim, dims);
    return NULL;
}

/* ---------------------------------------------------------------- Einsum, Det */

static int label_id(char ch) {
    if (ch >= 'a' && ch <= 'z') return ch - 'a';
    if (ch >= 'A' && ch <= 'Z') return 26 + ch - 'A';
    return -1;
}

kn_status *kn_einsum_parse(const char *eq_in, int n_ops, const kn_tensor *const *ops, kn_einsum *e) {
    memset(e, 0, sizeof *e);
    char eq[512];
    size_t L = 0;
    for (const char *p = eq_in; *p; p++) {
        if (isspace((unsigned char)*p)) continue;
        if (L + 1 >= sizeof eq) return kn_error(KN_ERR_UNSUPPORTED, "Einsum: equation too long");
        eq[L++] = *p;
    }
    eq[L] = 0;
    if (n_ops < 1 || n_ops > KN_EINSUM_MAX_OPS) return kn_error(KN_ERR_UNSUPPORTED, "Einsum: %d operands", n_ops);
    e->n_ops = n_ops;
    for (int i = 0; i < KN_EINSUM_MAX_LABELS; i++) e->lab_dim[i] = -2; /* -2: not seen */
    const char *arrow = strstr(eq, "->");
    const char *p = eq;
    int ell_rank = 0; /* dims the ellipsis stands for: the most any operand needs */
    int op_ell_rank[KN_EINSUM_MAX_OPS] = {0};
    /* first pass: ellipsis ranks */
    for (int o = 0; o < n_ops; o++) {
        const char *end = p;
        while (*end && *end != ',' && (arrow ? end < arrow : 1)) end++;
        int letters = 0;
        bool ell = false;
        for (const char *q = p; q < end; q++) {
            if (*q == '.') {
                if (ell || q + 2 >= end || q[1] != '.' || q[2] != '.')
                    return kn_error(KN_ERR_INVALID_MODEL, "Einsum: bad ellipsis in '%s'", eq_in);
                ell = true;
                q += 2;
            } else if (label_id(*q) < 0) {
                return kn_error(KN_ERR_INVALID_MODEL, "Einsum: bad character '%c' in '%s'", *q, eq_in);
            } else {
                letters++;
            }
        }
        if (ops[o]->ndim < 0) return kn_error(KN_ERR_INVALID_ARGUMENT, "Einsum: operand %d rank unknown", o);
        if (ell) {
            op_ell_rank[o] = ops[o]->ndim - letters;
            if (op_ell_rank[o] < 0)
                return kn_error(KN_ERR_INVALID_ARGUMENT, "Einsum: operand %d rank %d too small for '%s'", o,
                                ops[o]->ndim, eq_in);
            if (op_ell_rank[o] > ell_rank) ell_rank = op_ell_rank[o];
        } else if (letters != ops[o]->ndim) {
            return kn_error(KN_ERR_INVALID_ARGUMENT, "Einsum: operand %d has rank %d but '%s' gives it %d labels", o,
                            ops[o]->ndim, eq_in, letters);
        }
        if (o + 1 < n_ops) {
            if (*end != ',')
                return kn_error(KN_ERR_INVALID_MODEL, "Einsum: '%s' names fewer than %d operands", eq_in, n_ops);
            p = end + 1;
        } else if (*end == ',') {
            return kn_error(KN_ERR_INVALID_MODEL, "Einsum: '%s' names more than %d operands", eq_in, n_ops);
        }
    }
    if (ell_rank > KN_MAX_DIMS) return kn_error(KN_ERR_UNSUPPORTED, "Einsum: ellipsis too long");
    e->ell_rank = ell_rank;
    int counts[KN_EINSUM_MAX_LABELS] = {0};
    p = eq;
    for (int o = 0; o < n_ops; o++) {
        int d = 0;
        const kn_tensor *t = ops[o];
        while (*p && *p != ',' && (arrow ? p < arrow : 1)) {
            if (*p == '.') {
                for (int k = 0; k < op_ell_rank[o]; k++) {
                    int id = 52 + ell_rank - op_ell_rank[o] + k;
                    e->op_lab[o][d] = id;
                    int64_t sz = t->dims[d];
                    /* ellipsis dims broadcast: 1 yields to the other size */
                    if (e->lab_dim[id] == -2 || e->lab_dim[id] == 1 || e->lab_dim[id] == -1) {
                        if (!(sz == 1 && e->lab_dim[id] != -2)) e->lab_dim[id] = sz;
                    } else if (sz != 1 && sz >= 0 && sz != e->lab_dim[id]) {
                        return kn_error(KN_ERR_INVALID_ARGUMENT,
                                        "Einsum: ellipsis dims do not broadcast (%lld vs %lld)", (long long)sz,
                                        (long long)e->lab_dim[id]);
                    }
                    counts[id]++;
                    d++;
                }
                p += 3;
                continue;
            }
            int id = label_id(*p);
            int64_t sz = t->dims[d];
            if (e->lab_dim[id] == -2 || e->lab_dim[id] == -1) e->lab_dim[id] = sz;
            else if (sz >= 0 && sz != e->lab_dim[id])
                return kn_error(KN_ERR_INVALID_ARGUMENT, "Einsum: label '%c' has sizes %lld and %lld", *p,
                                (long long)e->lab_dim[id], (long long)sz);
            e->op_lab[o][d] = id;
            counts[id]++;
            d++;
            p++;
        }
        e->op_ndim[o] = d;
        if (*p == ',') p++;
    }
    for (int k = 0; k < ell_rank; k++)
        if (e->lab_dim[52 + k] == -2) e->lab_dim[52 + k] = 1;
    if (arrow) {
        const char *q = arrow + 2;
        bool ell = false;
        while (*q) {
            if (*q == '.') {
                if (ell || q[1] != '.' || q[2] != '.')
                    return kn_error(KN_ERR_INVALID_MODEL, "Einsum: bad output ellipsis in '%s'", eq_in);
                ell = true;
                if (e->out_ndim + ell_rank > KN_MAX_DIMS)
                    return kn_error(KN_ERR_UNSUPPORTED, "Einsum: output rank too large");
                for (int k = 0; k < ell_rank; k++) e->out_lab[e->out_ndim++] = 52 + k;
                q += 3;
                continue;
            }
            int id = label_id(*q);
            if (id < 0 || counts[id] == 0)
                return kn_error(KN_ERR_INVALID_MODEL, "Einsum: output label '%c' not in the inputs of '%s'", *q, eq_in);
            for (int k = 0; k < e->out_ndim; k++)
                if (e->out_lab[k] == id)
                    return kn_error(KN_ERR_INVALID_MODEL, "Einsum: output label '%c' repeated", *q);
            if (e->out_ndim >= KN_MAX_DIMS) return kn_error(KN_ERR_UNSUPPORTED, "Einsum: output rank too large");
            e->out_lab[e->out_ndim++] = id;
            q++;
        }
        /* Without an output ellipsis, broadcast dims are summed over like any absent label. */
    } else {
        for (int k = 0; k < ell_rank; k++) e->out_lab[e->out_ndim++] = 52 + k;
        for (int id = 26; id < 52; id++) /* uppercase sorts before lowercase */
            if (counts[id] == 1) {
                if (e->out_ndim >= KN_MAX_DIMS) return kn_error(KN_ERR_UNSUPPORTED, "Einsum: output rank too large");
                e->out_lab[e->out_ndim++] = id;
            }
        for (int id = 0; id < 26; id++)
            if (counts[id] == 1) {
                if (e->out_ndim >= KN_MAX_DIMS) return kn_error(KN_ERR_UNSUPPORTED, "Einsum: output rank too large");
                e->out_lab[e->out_ndim++] = id;
            }
    }
    for (int id = 0; id < KN_EINSUM_MAX_LABELS; id++) e->used[id] = counts[id] > 0;
    return NULL;
}

kn_status *kn_infer_Einsum(kn_infer_ctx *c) {
    if (c->n_in < 1 || !c->in[0] || c->n_out < 1 || !c->out[0])
        return kn_error(KN_ERR_INVALID_MODEL, "Einsum: needs inputs and an output");
    kn_tensor *o = c->out[0];
    o->dtype = c->in[0]->dtype;
    for (int i = 0; i < c->n_in; i++) {
        if (!c->in[i]) return kn_error(KN_ERR_INVALID_MODEL, "Einsum: missing input %d", i);
        if (c->in[i]->ndim < 0) {
            o->ndim = -1;
            return NULL;
        }
    }
    const char *eq = KN_PARAMS(c->node, einsum)->equation;
    kn_einsum e;
    KN_TRY(kn_einsum_parse(eq, c->n_in, c->in, &e));
    int64_t dims[KN_MAX_DIMS];
    for (int i = 0; i < e.out_ndim; i++) dims[i] = e.lab_dim[e.out_lab[i]];
    kn_tensor_set_shape(o, e.out_ndim, dims);
    return NULL;
}

kn_status *kn_infer_Det(kn_infer_ctx *c) {
    KN_TRY(need_inputs(c, 1));
    const kn_tensor *x = c->in[0];
    char bx[KN_DESC_LEN];
    c->out[0]->dtype = x->dtype;
    if (x->ndim < 0) {
        c->out[0]->ndim = -1;
        return NULL;
    }
    if (x->ndim < 2) return kn_error(KN_ERR_INVALID_ARGUMENT, "Det: input %s must have rank >= 2", DESC(x, bx));
    int64_t a = x->dims[x->ndim - 2], b = x->dims[x->ndim - 1];
    if (a >= 0 && b >= 0 && a != b)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "Det: input %s is not square", DESC(x, bx));
    kn_tensor_set_shape(c->out[0], x->ndim - 2, x->dims);
    return NULL;
}
