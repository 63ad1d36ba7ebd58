/* Shape rules and the params decoder of the kiln backward ops autograd emits (ReduceSumTo,
 * SoftmaxGrad, LogSoftmaxGrad, LayerNormalizationGrad, GeluGrad, GatherGrad, SliceGrad; rows at
 * the end of graph/ops.def). Outputs whose shape is an int64 input (the forward input's Shape)
 * take it from the data, which the executor has on the host before the run; without it only the
 * rank is known. */
#include "graph/op_helpers.h"
#include "graph/ops.h"
#include <string.h>

kn_status *kn_params_decode_softmax_grad(const kn_node *n, void *out) {
    kn_params_softmax_grad *p = out;
    p->axis = kn_attr_int(n, "axis", -1);
    p->coerce_2d = kn_attr_int(n, "coerce_2d", 0) != 0;
    return NULL;
}

static bool ig_float(kn_dtype t) { return t == KN_F32 || t == KN_F64 || t == KN_F16 || t == KN_BF16; }

/* out gets dtype dt and the shape held by input k (1-D int64), or only its rank when the data is
 * not known yet. */
static kn_status *ig_shape_from(kn_infer_ctx *c, int k, kn_dtype dt, kn_tensor *out) {
    const kn_tensor *s = k < c->n_in ? c->in[k] : NULL;
    KN_CHECK(s && s->ndim == 1, KN_ERR_INVALID_MODEL, "%s: input %d must be a 1-D shape", c->node->op_type, k);
    out->dtype = dt;
    if (!s->data) {
        out->ndim = s->dims[0] >= 0 && s->dims[0] <= KN_MAX_DIMS ? (int)s->dims[0] : -1;
        for (int i = 0; i < out->ndim; i++) out->dims[i] = -1;
        return NULL;
    }
    int64_t d[KN_MAX_DIMS], n = 0;
    KN_TRY(kn_shapeops_read_ints(s, d, KN_MAX_DIMS, &n, c->node->op_type));
    for (int64_t i = 0; i < n; i++)
        KN_CHECK(d[i] >= 0, KN_ERR_INVALID_ARGUMENT, "%s: negative dimension %lld in the shape", c->node->op_type,
                 (long long)d[i]);
    kn_tensor_set_shape(out, (int)n, d);
    return NULL;
}

static kn_status *ig_need_float(const kn_infer_ctx *c, int k) {
    const kn_tensor *t = k < c->n_in ? c->in[k] : NULL;
    KN_CHECK(t, KN_ERR_INVALID_MODEL, "%s: input %d is required", c->node->op_type, k);
    if (t->dtype != KN_UNDEFINED && !ig_float(t->dtype)) return kn_err_dtype(c->node, t);
    return NULL;
}

/* ReduceSumTo(x, shape): shape must be what x was broadcast from (right-aligned, each dim equal
 * to x's or 1, rank at most x's). */
kn_status *kn_infer_KnReduceSumTo(kn_infer_ctx *c) {
    KN_TRY(ig_need_float(c, 0));
    const kn_tensor *x = c->in[0];
    kn_tensor *y = c->out[0];
    KN_TRY(ig_shape_from(c, 1, x->dtype, y));
    if (y->ndim < 0 || x->ndim < 0) return NULL;
    char a[KN_DESC_LEN], b[KN_DESC_LEN];
    bool ok = y->ndim <= x->ndim;
    for (int i = 1; ok && i <= y->ndim; i++) {
        int64_t xd = x->dims[x->ndim - i], yd = y->dims[y->ndim - i];
        ok = xd < 0 || yd < 0 || yd == xd || yd == 1;
    }
    KN_CHECK(ok, KN_ERR_INVALID_ARGUMENT, "ReduceSumTo: %s does not broadcast from %s", kn_tensor_desc(x, a, sizeof a),
             kn_tensor_desc(y, b, sizeof b));
    return NULL;
}

/* dy and y of one shape. */
static kn_status *ig_softmax_grad(kn_infer_ctx *c) {
    KN_TRY(ig_need_float(c, 0));
    KN_TRY(ig_need_float(c, 1));
    const kn_tensor *dy = c->in[0], *y = c->in[1];
    char a[KN_DESC_LEN], b[KN_DESC_LEN];
    if (dy->ndim >= 0 && y->ndim >= 0 && kn_shape_known(dy) && kn_shape_known(y))
        KN_CHECK(kn_same_shape(dy, y), KN_ERR_INVALID_ARGUMENT, "%s: dy %s and y %s differ", c->node->op_type,
                 kn_tensor_desc(dy, a, sizeof a), kn_tensor_desc(y, b, sizeof b));
    return kn_infer_same_as_input0(c);
}

kn_status *kn_infer_KnSoftmaxGrad(kn_infer_ctx *c) { return ig_softmax_grad(c); }
kn_status *kn_infer_KnLogSoftmaxGrad(kn_infer_ctx *c) { return ig_softmax_grad(c); }

/* (dy, x, scale, mean, inv_std) -> dx like x, dscale and dbias like scale. */
kn_status *kn_infer_KnLayerNormalizationGrad(kn_infer_ctx *c) {
    for (int k = 0; k < 5; k++) KN_TRY(ig_need_float(c, k));
    const kn_tensor *x = c->in[1], *scale = c->in[2];
    if (c->out[0]) {
        c->out[0]->dtype = x->dtype;
        kn_tensor_set_shape(c->out[0], x->ndim, x->dims);
        if (x->ndim < 0) c->out[0]->ndim = -1;
    }
    for (int k = 1; k < 3 && k < c->n_out; k++) {
        if (!c->out[k]) continue;
        c->out[k]->dtype = scale->dtype;
        kn_tensor_set_shape(c->out[k], scale->ndim, scale->dims);
        if (scale->ndim < 0) c->out[k]->ndim = -1;
    }
    return NULL;
}

kn_status *kn_infer_KnGeluGrad(kn_infer_ctx *c) {
    KN_TRY(ig_need_float(c, 0));
    KN_TRY(ig_need_float(c, 1));
    return kn_infer_same_as_input0(c);
}

/* GatherGrad(dy, indices, shape) -> the data's shape, in dy's dtype. */
kn_status *kn_infer_KnGatherGrad(kn_infer_ctx *c) {
    KN_TRY(ig_need_float(c, 0));
    KN_CHECK(c->n_in > 2 && c->in[1], KN_ERR_INVALID_MODEL, "GatherGrad: indices input is required");
    return ig_shape_from(c, 2, c->in[0]->dtype, c->out[0]);
}

/* SliceGrad(dy, shape, starts, ends[, axes, steps]) -> the sliced input's shape, in dy's dtype. */
kn_status *kn_infer_KnSliceGrad(kn_infer_ctx *c) {
    KN_TRY(ig_need_float(c, 0));
    KN_CHECK(c->n_in > 3 && c->in[2] && c->in[3], KN_ERR_INVALID_MODEL, "SliceGrad: starts and ends are required");
    return ig_shape_from(c, 1, c->in[0]->dtype, c->out[0]);
}

/* ConvGradX(dy, W, x_shape) -> X's shape; ConvGradW(dy, X, w_shape) -> W's shape. */
kn_status *kn_infer_KnConvGradX(kn_infer_ctx *c) {
    KN_TRY(ig_need_float(c, 0));
    KN_TRY(ig_need_float(c, 1));
    return ig_shape_from(c, 2, c->in[0]->dtype, c->out[0]);
}

kn_status *kn_infer_KnConvGradW(kn_infer_ctx *c) {
    KN_TRY(ig_need_float(c, 0));
    KN_TRY(ig_need_float(c, 1));
    return ig_shape_from(c, 2, c->in[0]->dtype, c->out[0]);
}

/* MaxPoolGrad(dy, X) -> X's shape; AveragePoolGrad(dy, x_shape) -> that shape. */
kn_status *kn_infer_KnMaxPoolGrad(kn_infer_ctx *c) {
    KN_TRY(ig_need_float(c, 0));
    KN_TRY(ig_need_float(c, 1));
    kn_tensor *o = c->out[0];
    o->dtype = c->in[0]->dtype;
    kn_tensor_set_shape(o, c->in[1]->ndim, c->in[1]->dims);
    if (c->in[1]->ndim < 0) o->ndim = -1;
    return NULL;
}

kn_status *kn_infer_KnAveragePoolGrad(kn_infer_ctx *c) {
    KN_TRY(ig_need_float(c, 0));
    return ig_shape_from(c, 1, c->in[0]->dtype, c->out[0]);
}

/* (dy, X, scale, mean, var) -> dX like X, dscale and dbias like scale. */
kn_status *kn_infer_KnBatchNormalizationGrad(kn_infer_ctx *c) {
    for (int k = 0; k < 5; k++) KN_TRY(ig_need_float(c, k));
    const kn_tensor *x = c->in[1], *scale = c->in[2];
    for (int k = 0; k < 3 && k < c->n_out; k++) {
        if (!c->out[k]) continue;
        const kn_tensor *src = k == 0 ? x : scale;
        c->out[k]->dtype = src->dtype;
        kn_tensor_set_shape(c->out[k], src->ndim, src->dims);
        if (src->ndim < 0) c->out[k]->ndim = -1;
    }
    return NULL;
}

/* SdpaGrad(dY, Q, K, V, bias?, Y, lse?) -> dQ like Q, dK like K, dV like V, dS [B,H,S,T]. */
kn_status *kn_infer_KnSdpaGrad(kn_infer_ctx *c) {
    KN_CHECK(c->n_in >= 6 && c->n_in <= 7 && c->n_out >= 3 && c->n_out <= 4, KN_ERR_INVALID_MODEL,
             "SdpaGrad: needs 6 or 7 inputs and 3 or 4 outputs (got %d, %d)", c->n_in, c->n_out);
    for (int k = 0; k < 4; k++) KN_TRY(ig_need_float(c, k));
    KN_TRY(ig_need_float(c, 5));
    for (int k = 0; k < 3; k++) {
        const kn_tensor *x = c->in[1 + k];
        kn_tensor *o = c->out[k];
        if (!o) continue;
        o->dtype = x->dtype;
        kn_tensor_set_shape(o, x->ndim, x->dims);
        if (x->ndim < 0) o->ndim = -1;
    }
    kn_tensor *ds = c->n_out > 3 ? c->out[3] : NULL;
    if (ds) {
        const kn_tensor *q = c->in[1], *k = c->in[2];
        ds->dtype = q->dtype;
        if (q->ndim == 4 && k->ndim == 4) {
            int64_t d[4] = {q->dims[0], q->dims[1], q->dims[2], k->dims[2]};
            kn_tensor_set_shape(ds, 4, d);
        } else ds->ndim = -1;
    }
    return NULL;
}
