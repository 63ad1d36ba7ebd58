/* Shape and type inference for reductions, arg-reductions, scans, softmax family, TopK,
 * normalisations and losses. Reduction axes are resolved here once (kn_reduce_axes_mask) and
 * the CPU kernels call the same function, so the two never disagree on which axes reduce. */
#include "graph/ops.h"
#include "graph/op_helpers.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- params decoders (graph/params.h), run once per node at load ---- */

/* Ops whose axes moved from an attribute to an optional second input: ReduceSum at opset 13,
 * the others at 18. */
static bool reduce_axes_from_input(const kn_node *n) {
    if (n->op == KN_OP_ReduceSum) return n->opset >= 13;
    return n->opset >= 18;
}

static kn_status *decode_axes(const kn_node *n, const char *name, int *n_axes, int64_t *axes) {
    const int64_t *v;
    int na = kn_attr_ints(n, name, &v);
    if (na > KN_PARAMS_MAX_AXES)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: %d %s, at most %d supported", n->op_type, na, name,
                        KN_PARAMS_MAX_AXES);
    *n_axes = na;
    for (int i = 0; i < na; i++) axes[i] = v[i];
    return NULL;
}

kn_status *kn_params_decode_reduce(const kn_node *n, void *out) {
    kn_params_reduce *p = out;
    p->keepdims = kn_attr_int(n, "keepdims", 1) != 0;
    p->noop_with_empty_axes = kn_attr_int(n, "noop_with_empty_axes", 0) != 0;
    if (!reduce_axes_from_input(n)) {
        KN_TRY(decode_axes(n, "axes", &p->n_axes, p->axes));
        p->has_axes_attr = p->n_axes >= 0;
        if (p->n_axes < 0) p->n_axes = 0;
    }
    return NULL;
}

kn_status *kn_params_decode_arg(const kn_node *n, void *out) {
    kn_params_arg *p = out;
    p->axis = kn_attr_int(n, "axis", 0);
    p->keepdims = kn_attr_int(n, "keepdims", 1) != 0;
    p->select_last_index = kn_attr_int(n, "select_last_index", 0) != 0;
    return NULL;
}

kn_status *kn_params_decode_cum(const kn_node *n, void *out) {
    kn_params_cum *p = out;
    p->exclusive = kn_attr_int(n, "exclusive", 0) != 0;
    p->reverse = kn_attr_int(n, "reverse", 0) != 0;
    return NULL;
}

kn_status *kn_params_decode_softmax(const kn_node *n, void *out) {
    kn_params_softmax *p = out;
    p->coerce_2d = n->opset < 13;
    p->axis = kn_attr_int(n, "axis", p->coerce_2d ? 1 : -1);
    return NULL;
}

kn_status *kn_params_decode_topk(const kn_node *n, void *out) {
    kn_params_topk *p = out;
    p->axis = kn_attr_int(n, "axis", -1);
    p->k_attr = n->opset >= 10 ? -1 : kn_attr_int(n, "k", -1);
    p->largest = kn_attr_int(n, "largest", 1) != 0;
    p->sorted = kn_attr_int(n, "sorted", 1) != 0;
    return NULL;
}

kn_status *kn_params_decode_layernorm(const kn_node *n, void *out) {
    kn_params_layernorm *p = out;
    p->axis = kn_attr_int(n, "axis", -1);
    p->epsilon = kn_attr_float(n, "epsilon", 1e-5f);
    p->stash_type = kn_attr_int(n, "stash_type", 1);
    return NULL;
}

kn_status *kn_params_decode_batchnorm(const kn_node *n, void *out) {
    kn_params_batchnorm *p = out;
    p->epsilon = kn_attr_float(n, "epsilon", 1e-5f);
    p->momentum = kn_attr_float(n, "momentum", 0.9f);
    /* kiln's BatchNormalizationGrad (opset 1) takes the attribute as well */
    bool kiln = n->domain && !strcmp(n->domain, "kiln");
    p->training_mode_attr = (n->opset >= 14 || kiln) && kn_attr_int(n, "training_mode", 0) != 0;
    return NULL;
}

kn_status *kn_params_decode_chan_norm(const kn_node *n, void *out) {
    kn_params_chan_norm *p = out;
    p->epsilon = kn_attr_float(n, "epsilon", 1e-5f);
    p->num_groups = kn_attr_int(n, "num_groups", 0);
    p->stash_type = kn_attr_int(n, "stash_type", 1);
    return NULL;
}

kn_status *kn_params_decode_lpnorm(const kn_node *n, void *out) {
    kn_params_lpnorm *p = out;
    p->axis = kn_attr_int(n, "axis", -1);
    p->p = kn_attr_int(n, "p", 2);
    return NULL;
}

kn_status *kn_params_decode_mvn(const kn_node *n, void *out) {
    kn_params_mvn *p = out;
    KN_TRY(decode_axes(n, "axes", &p->n_axes, p->axes));
    if (p->n_axes < 0) {
        p->n_axes = 3;
        p->axes[0] = 0;
        p->axes[1] = 2;
        p->axes[2] = 3;
    }
    return NULL;
}

kn_status *kn_params_decode_lrn(const kn_node *n, void *out) {
    kn_params_lrn *p = out;
    p->size = kn_attr_int(n, "size", 0);
    p->alpha = kn_attr_float(n, "alpha", 1e-4f);
    p->beta = kn_attr_float(n, "beta", 0.75f);
    p->bias = kn_attr_float(n, "bias", 1.0f);
    return NULL;
}

kn_status *kn_params_decode_loss(const kn_node *n, void *out) {
    kn_params_loss *p = out;
    const char *red = kn_attr_str(n, "reduction", "mean");
    if (!strcmp(red, "none")) p->reduction = KN_REDUCTION_NONE;
    else if (!strcmp(red, "sum")) p->reduction = KN_REDUCTION_SUM;
    else if (!strcmp(red, "mean")) p->reduction = KN_REDUCTION_MEAN;
    else return kn_error(KN_ERR_INVALID_MODEL, "%s: unknown reduction '%s'", n->op_type, red);
    p->has_ignore_index = kn_node_attr(n, "ignore_index") != NULL;
    p->ignore_index = kn_attr_int(n, "ignore_index", 0);
    return NULL;
}

/* ---- shape rules ---- */

/* Resolves which axes of x a Reduce* node reduces. axes_in is the optional axes input (NULL when
 * omitted). *unknown is set when the axes input exists but its value is not known yet (static
 * inference); *noop when the node is the identity (empty axes with noop_with_empty_axes). */
kn_status *kn_reduce_axes_mask(const kn_node *n, const kn_tensor *x, const kn_tensor *axes_in, bool *mask, bool *noop,
                               bool *unknown) {
    char buf[KN_DESC_LEN];
    int rank = x->ndim;
    *noop = false;
    *unknown = false;
    for (int i = 0; i < KN_MAX_DIMS; i++) mask[i] = false;
    const int64_t *axes = NULL;
    int64_t n_axes = 0;
    int64_t *owned = NULL;
    if (reduce_axes_from_input(n)) {
        /* an empty axes tensor may carry no data pointer at all: its value is still known */
        if (axes_in && !(kn_shape_known(axes_in) && kn_numel(axes_in) == 0)) {
            if (!axes_in->data) {
                *unknown = true;
                return NULL;
            }
            if (axes_in->dtype != KN_I64 && axes_in->dtype != KN_I32)
                return kn_error(KN_ERR_INVALID_MODEL, "%s: axes must be int64, got %s", n->op_type,
                                kn_tensor_desc(axes_in, buf, sizeof buf));
            if (axes_in->ndim > 1)
                return kn_error(KN_ERR_INVALID_MODEL, "%s: axes must be 1-D, got %s", n->op_type,
                                kn_tensor_desc(axes_in, buf, sizeof buf));
            KN_TRY(kn_tensor_to_i64(axes_in, &owned, &n_axes));
            axes = owned;
        }
    } else {
        axes = KN_PARAMS(n, reduce)->axes;
        n_axes = KN_PARAMS(n, reduce)->n_axes;
    }
    if (n_axes == 0) {
        free(owned);
        if (KN_PARAMS(n, reduce)->noop_with_empty_axes) {
            *noop = true;
            return NULL;
        }
        for (int i = 0; i < rank; i++) mask[i] = true;
        return NULL;
    }
    for (int64_t i = 0; i < n_axes; i++) {
        int a;
        kn_status *st = kn_norm_axis(axes[i], rank, n, &a);
        if (st) {
            free(owned);
            return st;
        }
        mask[a] = true; /* repeated axes reduce once, as the reference does */
    }
    free(owned);
    return NULL;
}

static kn_status *infer_reduce(kn_infer_ctx *c) {
    const kn_tensor *x = c->in[0];
    kn_tensor *y = c->out[0];
    y->dtype = x->dtype;
    if (x->ndim < 0) {
        y->ndim = -1;
        return NULL;
    }
    bool mask[KN_MAX_DIMS], noop, unknown;
    const kn_tensor *axes_in = c->n_in > 1 ? c->in[1] : NULL;
    KN_TRY(kn_reduce_axes_mask(c->node, x, axes_in, mask, &noop, &unknown));
    if (unknown) {
        y->ndim = -1;
        return NULL;
    }
    if (noop) {
        kn_tensor_set_shape(y, x->ndim, x->dims);
        return NULL;
    }
    bool keep = KN_PARAMS(c->node, reduce)->keepdims;
    int64_t dims[KN_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (!mask[i]) dims[nd++] = x->dims[i];
        else if (keep) dims[nd++] = 1;
    }
    kn_tensor_set_shape(y, nd, dims);
    return NULL;
}

kn_status *kn_infer_ReduceSum(kn_infer_ctx *c) { return infer_reduce(c); }
kn_status *kn_infer_ReduceMean(kn_infer_ctx *c) { return infer_reduce(c); }
kn_status *kn_infer_ReduceMax(kn_infer_ctx *c) { return infer_reduce(c); }
kn_status *kn_infer_ReduceMin(kn_infer_ctx *c) { return infer_reduce(c); }
kn_status *kn_infer_ReduceProd(kn_infer_ctx *c) { return infer_reduce(c); }
kn_status *kn_infer_ReduceL1(kn_infer_ctx *c) { return infer_reduce(c); }
kn_status *kn_infer_ReduceL2(kn_infer_ctx *c) { return infer_reduce(c); }
kn_status *kn_infer_ReduceLogSum(kn_infer_ctx *c) { return infer_reduce(c); }
kn_status *kn_infer_ReduceLogSumExp(kn_infer_ctx *c) { return infer_reduce(c); }
kn_status *kn_infer_ReduceSumSquare(kn_infer_ctx *c) { return infer_reduce(c); }

static kn_status *infer_arg(kn_infer_ctx *c) {
    const kn_tensor *x = c->in[0];
    kn_tensor *y = c->out[0];
    y->dtype = KN_I64;
    if (x->ndim < 0) {
        y->ndim = -1;
        return NULL;
    }
    if (x->ndim == 0) return kn_error(KN_ERR_INVALID_MODEL, "%s: input must have rank >= 1", c->node->op_type);
    int axis;
    const kn_params_arg *p = KN_PARAMS(c->node, arg);
    KN_TRY(kn_norm_axis(p->axis, x->ndim, c->node, &axis));
    bool keep = p->keepdims;
    int64_t dims[KN_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (i != axis) dims[nd++] = x->dims[i];
        else if (keep) dims[nd++] = 1;
    }
    kn_tensor_set_shape(y, nd, dims);
    return NULL;
}
kn_status *kn_infer_ArgMax(kn_infer_ctx *c) { return infer_arg(c); }
kn_status *kn_infer_ArgMin(kn_infer_ctx *c) { return infer_arg(c); }

kn_status *kn_infer_CumSum(kn_infer_ctx *c) {
    if (c->n_in < 2 || !c->in[1])
        return kn_error(KN_ERR_INVALID_MODEL, "%s: the axis input is required", c->node->op_type);
    if (c->in[0]->ndim == 0) return kn_error(KN_ERR_INVALID_MODEL, "%s: input must have rank >= 1", c->node->op_type);
    return kn_infer_same_as_input0(c);
}
kn_status *kn_infer_CumProd(kn_infer_ctx *c) { return kn_infer_CumSum(c); }

static kn_status *infer_softmax(kn_infer_ctx *c) {
    const kn_tensor *x = c->in[0];
    if (x->ndim >= 0) {
        int axis;
        if (x->ndim == 0) return kn_error(KN_ERR_INVALID_MODEL, "%s: input must have rank >= 1", c->node->op_type);
        KN_TRY(kn_norm_axis(KN_PARAMS(c->node, softmax)->axis, x->ndim, c->node, &axis));
    }
    return kn_infer_same_as_input0(c);
}
kn_status *kn_infer_Softmax(kn_infer_ctx *c) { return infer_softmax(c); }
kn_status *kn_infer_LogSoftmax(kn_infer_ctx *c) { return infer_softmax(c); }
kn_status *kn_infer_Hardmax(kn_infer_ctx *c) { return infer_softmax(c); }

kn_status *kn_infer_TopK(kn_infer_ctx *c) {
    const kn_tensor *x = c->in[0];
    char buf[KN_DESC_LEN];
    kn_tensor *vals = c->out[0], *idx = c->n_out > 1 ? c->out[1] : NULL;
    if (vals) vals->dtype = x->dtype;
    if (idx) idx->dtype = KN_I64;
    int64_t k = -1;
    bool k_known = true;
    if (c->node->opset >= 10) {
        const kn_tensor *kt = c->n_in > 1 ? c->in[1] : NULL;
        if (!kt) return kn_error(KN_ERR_INVALID_MODEL, "TopK: the K input is required");
        if (!kt->data) k_known = false;
        else {
            int64_t *kv, nk;
            KN_TRY(kn_tensor_to_i64(kt, &kv, &nk));
            if (nk != 1) {
                free(kv);
                return kn_error(KN_ERR_INVALID_MODEL, "TopK: K must hold one value, got %s",
                                kn_tensor_desc(kt, buf, sizeof buf));
            }
            k = kv[0];
            free(kv);
        }
    } else {
        k = KN_PARAMS(c->node, topk)->k_attr;
    }
    if (x->ndim < 0 || !k_known) {
        if (vals) vals->ndim = -1;
        if (idx) idx->ndim = -1;
        return NULL;
    }
    if (x->ndim == 0) return kn_error(KN_ERR_INVALID_MODEL, "TopK: input must have rank >= 1");
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(c->node, topk)->axis, x->ndim, c->node, &axis));
    if (k < 0 || (x->dims[axis] >= 0 && k > x->dims[axis]))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "TopK: k=%lld out of range for %s along axis %d", (long long)k,
                        kn_tensor_desc(x, buf, sizeof buf), axis);
    int64_t dims[KN_MAX_DIMS];
    memcpy(dims, x->dims, sizeof(int64_t) * x->ndim);
    dims[axis] = k;
    if (vals) kn_tensor_set_shape(vals, x->ndim, dims);
    if (idx) kn_tensor_set_shape(idx, x->ndim, dims);
    return NULL;
}

/* Mean and InvStdDev of LayerNormalization: X.shape[:axis] followed by ones, in stash_type. */
kn_status *kn_infer_LayerNormalization(kn_infer_ctx *c) {
    const kn_tensor *x = c->in[0];
    KN_TRY(kn_infer_same_as_input0(c));
    if (c->n_in < 2 || !c->in[1]) return kn_error(KN_ERR_INVALID_MODEL, "LayerNormalization: Scale input is required");
    const kn_params_layernorm *p = KN_PARAMS(c->node, layernorm);
    int64_t stash = p->stash_type;
    kn_dtype st =
        (stash == KN_F32 || stash == KN_F64 || stash == KN_F16 || stash == KN_BF16) ? (kn_dtype)stash : KN_F32;
    int axis = 0;
    if (x->ndim >= 0) KN_TRY(kn_norm_axis(p->axis, x->ndim, c->node, &axis));
    for (int o = 1; o < c->n_out && o < 3; o++) {
        kn_tensor *t = c->out[o];
        if (!t) continue;
        t->dtype = st;
        if (x->ndim < 0) {
            t->ndim = -1;
            continue;
        }
        int64_t dims[KN_MAX_DIMS];
        for (int i = 0; i < x->ndim; i++) dims[i] = i < axis ? x->dims[i] : 1;
        kn_tensor_set_shape(t, x->ndim, dims);
    }
    return NULL;
}

kn_status *kn_infer_RMSNormalization(kn_infer_ctx *c) {
    if (c->n_in < 2 || !c->in[1]) return kn_error(KN_ERR_INVALID_MODEL, "RMSNormalization: scale input is required");
    if (c->in[0]->ndim >= 0) {
        int axis;
        KN_TRY(kn_norm_axis(KN_PARAMS(c->node, layernorm)->axis, c->in[0]->ndim, c->node, &axis));
    }
    return kn_infer_same_as_input0(c);
}

kn_status *kn_infer_BatchNormalization(kn_infer_ctx *c) {
    if (c->n_in < 5) return kn_error(KN_ERR_INVALID_MODEL, "BatchNormalization: needs 5 inputs, got %d", c->n_in);
    for (int i = 1; i < 5; i++)
        if (!c->in[i]) return kn_error(KN_ERR_INVALID_MODEL, "BatchNormalization: input %d is required", i);
    KN_TRY(kn_infer_same_as_input0(c));
    /* running mean/var (training mode) have the shape and type of input_mean / input_var */
    for (int o = 1; o < c->n_out && o < 5; o++) {
        kn_tensor *t = c->out[o];
        if (!t) continue;
        const kn_tensor *src = c->in[o == 1 || o == 3 ? 3 : 4];
        t->dtype = src->dtype;
        kn_tensor_set_shape(t, src->ndim, src->dims);
    }
    return NULL;
}

static kn_status *infer_nchw(kn_infer_ctx *c, int min_in) {
    if (c->n_in < min_in)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: needs %d inputs, got %d", c->node->op_type, min_in, c->n_in);
    for (int i = 0; i < min_in; i++)
        if (!c->in[i]) return kn_error(KN_ERR_INVALID_MODEL, "%s: input %d is required", c->node->op_type, i);
    if (c->in[0]->ndim >= 0 && c->in[0]->ndim < 2)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: input must have rank >= 2", c->node->op_type);
    return kn_infer_same_as_input0(c);
}
kn_status *kn_infer_InstanceNormalization(kn_infer_ctx *c) { return infer_nchw(c, 3); }
kn_status *kn_infer_GroupNormalization(kn_infer_ctx *c) { return infer_nchw(c, 3); }
kn_status *kn_infer_LRN(kn_infer_ctx *c) { return infer_nchw(c, 1); }

kn_status *kn_infer_LpNormalization(kn_infer_ctx *c) {
    if (c->in[0]->ndim >= 0) {
        int axis;
        if (c->in[0]->ndim == 0) return kn_error(KN_ERR_INVALID_MODEL, "LpNormalization: input must have rank >= 1");
        KN_TRY(kn_norm_axis(KN_PARAMS(c->node, lpnorm)->axis, c->in[0]->ndim, c->node, &axis));
    }
    return kn_infer_same_as_input0(c);
}
kn_status *kn_infer_MeanVarianceNormalization(kn_infer_ctx *c) { return kn_infer_same_as_input0(c); }

/* Loss output: the target's shape for reduction "none", a scalar otherwise. */
static kn_status *infer_loss(kn_infer_ctx *c) {
    const kn_tensor *x = c->in[0];
    char buf[KN_DESC_LEN];
    if (c->n_in < 2 || !c->in[1])
        return kn_error(KN_ERR_INVALID_MODEL, "%s: the labels/target input is required", c->node->op_type);
    const kn_tensor *tg = c->in[1];
    bool red_none = KN_PARAMS(c->node, loss)->reduction == KN_REDUCTION_NONE;
    if (x->ndim >= 0 && x->ndim < 2)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: input must be [N, C, ...], got %s", c->node->op_type,
                        kn_tensor_desc(x, buf, sizeof buf));
    if (x->ndim >= 0 && tg->ndim >= 0 && tg->ndim != x->ndim - 1)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: target rank must be input rank - 1 (%s)", c->node->op_type,
                        kn_tensor_desc(tg, buf, sizeof buf));
    kn_tensor *loss = c->out[0];
    loss->dtype = x->dtype;
    int64_t none[1] = {0};
    if (!red_none) kn_tensor_set_shape(loss, 0, none);
    else if (tg->ndim < 0) loss->ndim = -1;
    else kn_tensor_set_shape(loss, tg->ndim, tg->dims);
    if (c->n_out > 1 && c->out[1]) {
        c->out[1]->dtype = x->dtype;
        if (x->ndim < 0) c->out[1]->ndim = -1;
        else kn_tensor_set_shape(c->out[1], x->ndim, x->dims);
    }
    return NULL;
}
kn_status *kn_infer_SoftmaxCrossEntropyLoss(kn_infer_ctx *c) { return infer_loss(c); }
kn_status *kn_infer_NegativeLogLikelihoodLoss(kn_infer_ctx *c) { return infer_loss(c); }
