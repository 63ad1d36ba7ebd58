/* Gradient rules of the reductions, Softmax / LogSoftmax and LayerNormalization. Softmax and
 * LayerNormalization go through kiln backward ops (SoftmaxGrad, LogSoftmaxGrad,
 * LayerNormalizationGrad) that read the forward's output or saved statistics, as llm.c's
 * layernorm_backward does, instead of a chain of ops with a full-size temporary per step. */
#include "autograd/grad.h"

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

/* v shaped like the reduction's output, with the reduced axes back as 1s (Unsqueeze when
 * keepdims is 0), so it broadcasts against x; *axes_out receives the axes (for the tie counts). */
static int unreduce(kn_grad_ctx *c, int v, bool *noop, int *n_axes, int64_t *axes) {
    *n_axes = reduce_axes(c, axes, noop);
    if (*n_axes < 0 || *noop) return *noop ? v : -1;
    return KN_GRAD_PARAMS(c, reduce)->keepdims ? v : ag_op2(c, "Unsqueeze", v, ag_ints(c, axes, *n_axes));
}

/* The reductions below as dx = f(x, y, dy) with y and dy broadcast back over the reduced axes;
 * noop_with_empty_axes makes each an elementwise map, handled by its own derivative. */
typedef enum { RD_MAX, RD_L1, RD_L2, RD_SUMSQ, RD_LOGSUM, RD_LOGSUMEXP, RD_PROD } rd_kind;

static kn_status *reduce_grad(kn_grad_ctx *c, rd_kind kind) {
    bool noop = false;
    int64_t axes[KN_MAX_DIMS];
    int na = 0, x = c->in[0];
    int dy = unreduce(c, c->dy[0], &noop, &na, axes), y = unreduce(c, c->out[0], &noop, &na, axes);
    if (c->err) return c->err;
    int zero = ag_scalar(c, 0.0, x), g = -1;
    switch (kind) {
    case RD_MAX: { /* to every maximum, split evenly between ties (PyTorch's amax / amin) */
        int eq = ag_op2(c, "Equal", x, y), cnt;
        if (noop) cnt = ag_scalar(c, 1.0, x);
        else {
            kn_attr kd = ag_attr_int("keepdims", 1);
            int in[2] = {ag_op2(c, "CastLike", eq, x), ag_ints(c, axes, na)};
            cnt = ag_op(c, "ReduceSum", in, 2, &kd, 1);
        }
        int in[3] = {eq, ag_div(c, dy, cnt), zero};
        g = ag_op(c, "Where", in, 3, NULL, 0);
        break;
    }
    case RD_L1: g = ag_mul(c, dy, ag_op1(c, "Sign", x)); break;
    case RD_L2: { /* dy * x / y, 0 where the norm is 0 (PyTorch's norm backward) */
        int in[3] = {ag_op2(c, "Equal", y, zero), zero, ag_div(c, dy, y)};
        g = ag_mul(c, x, ag_op(c, "Where", in, 3, NULL, 0));
        break;
    }
    case RD_SUMSQ: g = ag_mul(c, ag_mul(c, dy, ag_scalar(c, 2.0, x)), x); break;
    case RD_LOGSUM: g = ag_div(c, dy, ag_op1(c, "Exp", y)); break;
    case RD_LOGSUMEXP: g = ag_mul(c, dy, ag_op1(c, "Exp", ag_sub(c, x, y))); break;
    case RD_PROD: g = ag_div(c, ag_mul(c, dy, y), x); break; /* x without zeros */
    }
    /* every case above has x's shape but LogSum's dy / sum, shaped like y: expanded to x's */
    if (kind == RD_LOGSUM) g = ag_op2(c, "Expand", g, ag_shape(c, x));
    ag_set(c, 0, g);
    return c->err;
}

kn_status *kn_grad_ReduceMax(kn_grad_ctx *c) { return reduce_grad(c, RD_MAX); }
kn_status *kn_grad_ReduceMin(kn_grad_ctx *c) { return reduce_grad(c, RD_MAX); }
kn_status *kn_grad_ReduceL1(kn_grad_ctx *c) { return reduce_grad(c, RD_L1); }
kn_status *kn_grad_ReduceL2(kn_grad_ctx *c) { return reduce_grad(c, RD_L2); }
kn_status *kn_grad_ReduceSumSquare(kn_grad_ctx *c) { return reduce_grad(c, RD_SUMSQ); }
kn_status *kn_grad_ReduceLogSum(kn_grad_ctx *c) { return reduce_grad(c, RD_LOGSUM); }
kn_status *kn_grad_ReduceLogSumExp(kn_grad_ctx *c) { return reduce_grad(c, RD_LOGSUMEXP); }
kn_status *kn_grad_ReduceProd(kn_grad_ctx *c) { return reduce_grad(c, RD_PROD); }
