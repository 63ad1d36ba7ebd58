/* Gradient rules of RMSNormalization, InstanceNormalization and GroupNormalization, written with
 * ordinary ops: the statistics are recomputed from x (the forward saves none), then, per
 * normalised block of n values with xhat = (x - mean) * r and g = dy * scale,
 * dx = r * (g - mean(g) - xhat * mean(g * xhat)) (RMS: no mean term, xhat = x * r),
 * dscale = sum of dy * xhat and dbias = sum of dy over everything but the parameter's axes. */
#include "autograd/grad.h"

static int mean_keep(kn_grad_ctx *c, int v, const int64_t *axes, int n) {
    kn_attr at[2] = {ag_attr_ints("axes", axes, n), ag_attr_int("keepdims", 1)};
    return ag_op(c, "ReduceMean", &v, 1, at, 2);
}

static int sum_axes(kn_grad_ctx *c, int v, const int64_t *axes, int n) {
    kn_attr kd = ag_attr_int("keepdims", 0);
    int in[2] = {v, ag_ints(c, axes, n)};
    return ag_op(c, "ReduceSum", in, 2, &kd, 1);
}

/* r = 1 / sqrt(mean(d * d) + eps) over axes, d = x - mean(x) (or x itself for RMS). */
static int inv_std(kn_grad_ctx *c, int d, const int64_t *axes, int n, double eps, int like) {
    int var = mean_keep(c, ag_mul(c, d, d), axes, n);
    return ag_div(c, ag_scalar(c, 1.0, like), ag_op1(c, "Sqrt", ag_add(c, var, ag_scalar(c, eps, like))));
}

/* r * (g - mean(g) - xhat * mean(g * xhat)); centred false drops mean(g) (RMS). */
static int norm_dx(kn_grad_ctx *c, int g, int xhat, int r, const int64_t *axes, int n, bool centred) {
    int t = ag_mul(c, xhat, mean_keep(c, ag_mul(c, g, xhat), axes, n));
    if (centred) t = ag_add(c, t, mean_keep(c, g, axes, n));
    return ag_mul(c, r, ag_sub(c, g, t));
}

/* y = x * r * scale over the axes from `axis` on; scale broadcasts against those axes. */
kn_status *kn_grad_RMSNormalization(kn_grad_ctx *c) {
    const kn_params_layernorm *p = KN_GRAD_PARAMS(c, layernorm);
    int x = c->in[0], scale = c->in[1], y = c->out[0], dy = c->dy[0], rk = ag_rank(c, x);
    int axis = ag_axis(c, p->axis, x);
    if (axis < 0) return c->err;
    int64_t axes[KN_MAX_DIMS];
    for (int i = axis; i < rk; i++) axes[i - axis] = i;
    int n = rk - axis, r = inv_std(c, x, axes, n, p->epsilon, x), xhat = ag_mul(c, x, r);
    if (c->need[0]) ag_set(c, 0, norm_dx(c, ag_mul(c, dy, scale), xhat, r, axes, n, false));
    if (c->need[1]) ag_set(c, 1, ag_sum_to(c, ag_mul(c, dy, xhat), scale, y));
    return c->err;
}

/* [N, C, spatial...]: per (n, c) over the spatial axes; scale and bias per channel. */
kn_status *kn_grad_InstanceNormalization(kn_grad_ctx *c) {
    const kn_params_chan_norm *p = KN_GRAD_PARAMS(c, chan_norm);
    int x = c->in[0], dy = c->dy[0], rk = ag_rank(c, x);
    if (rk < 3) return kn_error(KN_ERR_UNSUPPORTED, "InstanceNormalization: the rank of X must be known and >= 3");
    int64_t sp[KN_MAX_DIMS], red[KN_MAX_DIMS], un[KN_MAX_DIMS];
    red[0] = 0;
    for (int i = 2; i < rk; i++) {
        sp[i - 2] = i;
        red[i - 1] = i;
        un[i - 2] = i - 1;
    }
    int ns = rk - 2, d = ag_sub(c, x, mean_keep(c, x, sp, ns));
    int r = inv_std(c, d, sp, ns, p->epsilon, x), xhat = ag_mul(c, d, r);
    if (c->need[0]) {
        int sb = ag_op2(c, "Unsqueeze", c->in[1], ag_ints(c, un, ns)); /* [C, 1, ...] */
        ag_set(c, 0, norm_dx(c, ag_mul(c, dy, sb), xhat, r, sp, ns, true));
    }
    if (c->need[1]) ag_set(c, 1, sum_axes(c, ag_mul(c, dy, xhat), red, rk - 1));
    if (c->n_in > 2 && c->in[2] >= 0 && c->need[2]) ag_set(c, 2, sum_axes(c, dy, red, rk - 1));
    return c->err;
}

/* Channels split in num_groups groups, each normalised over its channels and positions: the
 * statistics in the [N, G, rest] view. Scale and bias are per channel (opset 21, or a scale of C
 * values) or per group (opset 18). */
kn_status *kn_grad_GroupNormalization(kn_grad_ctx *c) {
    const kn_params_chan_norm *p = KN_GRAD_PARAMS(c, chan_norm);
    const kn_node *node = &c->g->nodes[c->node];
    int x = c->in[0], scale = c->in[1], dy = c->dy[0], rk = ag_rank(c, x);
    if (rk < 2) return kn_error(KN_ERR_UNSUPPORTED, "GroupNormalization: the rank of X must be known and >= 2");
    int64_t G = p->num_groups;
    const kn_tensor *xt = ag_type(c, x), *st = ag_type(c, scale);
    int64_t C = xt ? xt->dims[1] : -1, ns = st && st->ndim == 1 ? st->dims[0] : -1;
    bool per_channel = ns >= 0 && C >= 0 ? ns == C && (node->opset >= 21 || ns != G) : node->opset >= 21;
    int64_t view[3] = {0, G, -1}, a2[1] = {2}, red[KN_MAX_DIMS], un[KN_MAX_DIMS], g02[2] = {0, 2}, one[1] = {1};
    red[0] = 0;
    for (int i = 2; i < rk; i++) {
        red[i - 1] = i;
        un[i - 2] = i - 1;
    }
    int shape_v = ag_ints(c, view, 3), xs = ag_shape(c, x);
    int xg = ag_op2(c, "Reshape", x, shape_v), dyg = ag_op2(c, "Reshape", dy, shape_v);
    int d = ag_sub(c, xg, mean_keep(c, xg, a2, 1));
    int r = inv_std(c, d, a2, 1, p->epsilon, x), xhat = ag_mul(c, d, r);
    int g;
    if (per_channel) {
        int sb = rk > 2 ? ag_op2(c, "Unsqueeze", scale, ag_ints(c, un, rk - 2)) : scale;
        g = ag_op2(c, "Reshape", ag_mul(c, dy, sb), shape_v);
    } else g = ag_mul(c, dyg, ag_op2(c, "Unsqueeze", scale, ag_ints(c, one, 1))); /* scale [G, 1] */
    if (c->need[0]) ag_set(c, 0, ag_op2(c, "Reshape", norm_dx(c, g, xhat, r, a2, 1, true), xs));
    if (per_channel) {
        if (c->need[1]) ag_set(c, 1, sum_axes(c, ag_mul(c, dy, ag_op2(c, "Reshape", xhat, xs)), red, rk - 1));
        if (c->n_in > 2 && c->need[2]) ag_set(c, 2, sum_axes(c, dy, red, rk - 1));
    } else {
        if (c->need[1]) ag_set(c, 1, sum_axes(c, ag_mul(c, dyg, xhat), g02, 2));
        if (c->n_in > 2 && c->need[2]) ag_set(c, 2, sum_axes(c, dyg, g02, 2));
    }
    return c->err;
}

/* y = x / |x|_p along axis (p 1 or 2): dx = (dy - d|x|/dx * sum(dy * y)) / |x|_p with d|x|/dx =
 * y for p = 2 and sign(x) for p = 1. */
kn_status *kn_grad_LpNormalization(kn_grad_ctx *c) {
    const kn_params_lpnorm *p = KN_GRAD_PARAMS(c, lpnorm);
    if (p->p != 1 && p->p != 2) return kn_error(KN_ERR_UNSUPPORTED, "LpNormalization: p must be 1 or 2");
    int x = c->in[0], y = c->out[0], dy = c->dy[0];
    int64_t axis = ag_axis(c, p->axis, x);
    if (axis < 0) return c->err;
    kn_attr at[2] = {ag_attr_ints("axes", &axis, 1), ag_attr_int("keepdims", 1)};
    int norm = ag_op(c, p->p == 2 ? "ReduceL2" : "ReduceL1", &x, 1, at, 2);
    int s = ag_op(c, "ReduceSum", (int[]){ag_mul(c, dy, y), ag_ints(c, &axis, 1)}, 2, &at[1], 1);
    int dn = p->p == 2 ? y : ag_op1(c, "Sign", x);
    ag_set(c, 0, ag_div(c, ag_sub(c, dy, ag_mul(c, dn, s)), norm));
    return c->err;
}
