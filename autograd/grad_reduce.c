/* Gradient rules of the reductions, Softmax / LogSoftmax and LayerNormalization. Softmax and
 * LayerNormalization go through kiln backward ops (SoftmaxGrad, LogSoftmaxGrad,
 * LayerNormalizationGrad) that read the forward's output or saved statistics, as llm.c's
 * layernorm_backward does, instead of a chain of ops with a full-size temporary per step. */
#include "autograd/grad.h"
#include <stdio.h>
#include <stdlib.h>

/* The sorted, normalised axes a ReduceSum / ReduceMean node reduces (attribute, or a constant
 * axes input); *all when it reduces everything, *noop when it is the identity. */
static int reduce_axes(kn_grad_ctx *c, int64_t *axes, bool *noop) {
    const kn_params_reduce *p = KN_GRAD_PARAMS(c, reduce);
    int x = c->in[0], r = ag_rank(c, x), n = 0;
    int64_t raw[KN_PARAMS_MAX_AXES];
    *noop = false;
    if (r < 0) return ag_fail(c, kn_error(KN_ERR_UNSUPPORTED, "the rank of the input is not known statically"));
    if (p->has_axes_attr) {
        n = p->n_axes;
        for (int i = 0; i < n; i++) raw[i] = p->axes[i];
    } else if (c->n_in > 1 && c->in[1] >= 0) {
        const kn_tensor *t = c->g->values[c->in[1]].constant;
        if (!t) return ag_fail(c, kn_error(KN_ERR_UNSUPPORTED, "the axes input must be a constant"));
        int64_t cnt = kn_numel(t);
        if (cnt > KN_PARAMS_MAX_AXES) return ag_fail(c, kn_error(KN_ERR_UNSUPPORTED, "too many axes"));
        for (int64_t i = 0; i < cnt; i++) raw[n++] = kn_get_i64(t, i);
    }
    if (n == 0) {
        if (p->noop_with_empty_axes) {
            *noop = true;
            return 0;
        }
        for (int i = 0; i < r; i++) axes[i] = i;
        return r;
    }
    bool mask[KN_MAX_DIMS] = {false};
    for (int i = 0; i < n; i++) {
        int a = ag_axis(c, raw[i], x);
        if (a < 0) return -1;
        mask[a] = true;
    }
    int k = 0;
    for (int i = 0; i < r; i++)
        if (mask[i]) axes[k++] = i;
    return k;
}

/* dy broadcast back over the reduced axes: Unsqueeze them back when keepdims was 0 (the axes,
 * normalised against x's rank, are exactly the positions in the unsqueezed result), then Expand
 * to x's shape. */
static int reduce_broadcast(kn_grad_ctx *c, bool *noop, int64_t *count) {
    int64_t axes[KN_MAX_DIMS];
    int n = reduce_axes(c, axes, noop);
    if (n < 0 || *noop) return *noop ? c->dy[0] : -1;
    int x = c->in[0], g = c->dy[0];
    const kn_tensor *t = ag_type(c, x);
    *count = 1;
    for (int i = 0; i < n; i++) *count = t->dims[axes[i]] < 0 || *count < 0 ? -1 : *count * t->dims[axes[i]];
    if (!KN_GRAD_PARAMS(c, reduce)->keepdims) g = ag_op2(c, "Unsqueeze", g, ag_ints(c, axes, n));
    return ag_op2(c, "Expand", g, ag_shape(c, x));
}

kn_status *kn_grad_ReduceSum(kn_grad_ctx *c) {
    bool noop;
    int64_t count;
    ag_set(c, 0, reduce_broadcast(c, &noop, &count));
    return c->err;
}

/* The sum's gradient over the count of reduced elements: a constant when the shape is static,
 * else Size(x) / Size(y) computed on the host with the other shape arithmetic. */
kn_status *kn_grad_ReduceMean(kn_grad_ctx *c) {
    bool noop = false;
    int64_t count = -1;
    int g = reduce_broadcast(c, &noop, &count), x = c->in[0];
    if (g < 0 || noop) {
        ag_set(c, 0, g);
        return c->err;
    }
    int scale;
    if (count > 0) scale = ag_scalar(c, 1.0 / (double)count, x);
    else /* cast before dividing: the int64 quotient Size(y) / Size(x) would truncate to 0 */
        scale = ag_div(c, ag_op2(c, "CastLike", ag_op1(c, "Size", c->out[0]), x),
                       ag_op2(c, "CastLike", ag_op1(c, "Size", x), x));
    ag_set(c, 0, ag_mul(c, g, scale));
    return c->err;
}

static kn_status *softmax_like(kn_grad_ctx *c, const char *op) {
    const kn_params_softmax *p = KN_GRAD_PARAMS(c, softmax);
    kn_attr at[2] = {ag_attr_int("axis", p->axis), ag_attr_int("coerce_2d", p->coerce_2d)};
    int in[2] = {c->dy[0], c->out[0]};
    ag_set(c, 0, ag_kiln(c, op, in, 2, at, 2));
    return c->err;
}

kn_status *kn_grad_Softmax(kn_grad_ctx *c) { return softmax_like(c, "SoftmaxGrad"); }
kn_status *kn_grad_LogSoftmax(kn_grad_ctx *c) { return softmax_like(c, "LogSoftmaxGrad"); }

kn_status *kn_grad_LayerNormalization(kn_grad_ctx *c) {
    const kn_params_layernorm *p = KN_GRAD_PARAMS(c, layernorm);
    if ((c->n_out > 1 && c->dy[1] >= 0) || (c->n_out > 2 && c->dy[2] >= 0))
        return kn_error(KN_ERR_UNSUPPORTED, "LayerNormalization: gradients through Mean / InvStdDev are not supported");
    int mean = ag_forward_output(c, 1, "mean");
    int inv = ag_forward_output(c, 2, "inv_std_dev");
    kn_attr at[2] = {ag_attr_int("axis", p->axis), ag_attr_float("epsilon", p->epsilon)};
    int in[5] = {c->dy[0], c->in[0], c->in[1], mean, inv}, out[3];
    if (ag_node(c, "LayerNormalizationGrad", "kiln", in, 5, out, 3, at, 2) < 0) return c->err;
    ag_set(c, 0, out[0]);
    ag_set(c, 1, out[1]);
    if (c->n_in > 2 && c->in[2] >= 0) ag_set(c, 2, out[2]);
    return c->err;
}
