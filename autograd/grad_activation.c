/* Gradient rules of the remaining unary functions and activations (trigonometric and hyperbolic
 * functions, Abs, Reciprocal, the ReLU family, Softplus, Softsign, HardSigmoid, HardSwish, Mish,
 * Swish), Clip, PRelu, Mean, and the piecewise-constant Floor, Ceil, Round and Sign (zero, as
 * PyTorch gives). Each derivative is written with ordinary ops; where a function has a kink the
 * side follows PyTorch's backward formulas (the strict or non-strict comparisons below). */
#include "autograd/grad.h"

static int where(kn_grad_ctx *c, int cond, int a, int b) {
    int in[3] = {cond, a, b};
    return ag_op(c, "Where", in, 3, NULL, 0);
}

/* dy * f'(x) for the rules whose derivative is one expression. */
static kn_status *chain(kn_grad_ctx *c, int dfdx) {
    ag_set(c, 0, ag_mul(c, c->dy[0], dfdx));
    return c->err;
}

#define X (c->in[0])
#define Y (c->out[0])
#define S(v) ag_scalar(c, (v), X)

kn_status *kn_grad_Abs(kn_grad_ctx *c) { return chain(c, ag_op1(c, "Sign", X)); }
kn_status *kn_grad_Reciprocal(kn_grad_ctx *c) { return chain(c, ag_neg(c, ag_mul(c, Y, Y))); }
kn_status *kn_grad_Sin(kn_grad_ctx *c) { return chain(c, ag_op1(c, "Cos", X)); }
kn_status *kn_grad_Cos(kn_grad_ctx *c) { return chain(c, ag_neg(c, ag_op1(c, "Sin", X))); }
kn_status *kn_grad_Tan(kn_grad_ctx *c) { return chain(c, ag_add(c, S(1), ag_mul(c, Y, Y))); }
kn_status *kn_grad_Sinh(kn_grad_ctx *c) { return chain(c, ag_op1(c, "Cosh", X)); }
kn_status *kn_grad_Cosh(kn_grad_ctx *c) { return chain(c, ag_op1(c, "Sinh", X)); }

/* 1 / sqrt(1 - x^2), and its relatives. */
static int inv_sqrt(kn_grad_ctx *c, int v) { return ag_div(c, S(1), ag_op1(c, "Sqrt", v)); }
kn_status *kn_grad_Asin(kn_grad_ctx *c) { return chain(c, inv_sqrt(c, ag_sub(c, S(1), ag_mul(c, X, X)))); }
kn_status *kn_grad_Acos(kn_grad_ctx *c) { return chain(c, ag_neg(c, inv_sqrt(c, ag_sub(c, S(1), ag_mul(c, X, X))))); }
kn_status *kn_grad_Atan(kn_grad_ctx *c) { return chain(c, ag_div(c, S(1), ag_add(c, S(1), ag_mul(c, X, X)))); }
kn_status *kn_grad_Asinh(kn_grad_ctx *c) { return chain(c, inv_sqrt(c, ag_add(c, ag_mul(c, X, X), S(1)))); }
kn_status *kn_grad_Acosh(kn_grad_ctx *c) { return chain(c, inv_sqrt(c, ag_sub(c, ag_mul(c, X, X), S(1)))); }
kn_status *kn_grad_Atanh(kn_grad_ctx *c) { return chain(c, ag_div(c, S(1), ag_sub(c, S(1), ag_mul(c, X, X)))); }

/* Piecewise constant: zero almost everywhere (PyTorch's floor / ceil / round / sign backward). */
static kn_status *zero_grad(kn_grad_ctx *c) {
    ag_set(c, 0, ag_zeros_like(c, X));
    return c->err;
}
kn_status *kn_grad_Floor(kn_grad_ctx *c) { return zero_grad(c); }
kn_status *kn_grad_Ceil(kn_grad_ctx *c) { return zero_grad(c); }
kn_status *kn_grad_Round(kn_grad_ctx *c) { return zero_grad(c); }
kn_status *kn_grad_Sign(kn_grad_ctx *c) { return zero_grad(c); }

#define ACT (KN_GRAD_PARAMS(c, act))

/* x > 0 ? dy : dy * slope(x): LeakyRelu, Elu, Selu, Celu (x = 0 takes the negative side, as
 * PyTorch's leaky_relu_backward and elu_backward). */
static kn_status *two_sided(kn_grad_ctx *c, int pos_scale, int neg_slope) {
    int dy = c->dy[0], pos = pos_scale >= 0 ? ag_mul(c, dy, pos_scale) : dy;
    ag_set(c, 0, where(c, ag_op2(c, "Greater", X, S(0)), pos, ag_mul(c, dy, neg_slope)));
    return c->err;
}
kn_status *kn_grad_LeakyRelu(kn_grad_ctx *c) { return two_sided(c, -1, S(ACT->alpha)); }
kn_status *kn_grad_Elu(kn_grad_ctx *c) { return two_sided(c, -1, ag_mul(c, S(ACT->alpha), ag_op1(c, "Exp", X))); }
kn_status *kn_grad_Selu(kn_grad_ctx *c) {
    double a = ACT->alpha, gm = ACT->gamma;
    return two_sided(c, S(gm), ag_mul(c, S(a * gm), ag_op1(c, "Exp", X)));
}
kn_status *kn_grad_Celu(kn_grad_ctx *c) { return two_sided(c, -1, ag_op1(c, "Exp", ag_div(c, X, S(ACT->alpha)))); }

kn_status *kn_grad_ThresholdedRelu(kn_grad_ctx *c) {
    ag_set(c, 0, where(c, ag_op2(c, "Greater", X, S(ACT->alpha)), c->dy[0], S(0)));
    return c->err;
}

/* Shrink passes dy where |x| > lambd (the two linear pieces). */
kn_status *kn_grad_Shrink(kn_grad_ctx *c) {
    double l = ACT->alpha;
    int out = ag_op2(c, "Or", ag_op2(c, "Less", X, S(-l)), ag_op2(c, "Greater", X, S(l)));
    ag_set(c, 0, where(c, out, c->dy[0], S(0)));
    return c->err;
}

kn_status *kn_grad_Softplus(kn_grad_ctx *c) { return chain(c, ag_op1(c, "Sigmoid", X)); }

kn_status *kn_grad_Softsign(kn_grad_ctx *c) {
    int d = ag_add(c, S(1), ag_op1(c, "Abs", X));
    return chain(c, ag_div(c, S(1), ag_mul(c, d, d)));
}

/* alpha inside the open interval where alpha x + beta lies in (0, 1) (PyTorch: -3 < x < 3). */
kn_status *kn_grad_HardSigmoid(kn_grad_ctx *c) {
    int u = ag_add(c, ag_mul(c, X, S(ACT->alpha)), S(ACT->beta));
    int in = ag_op2(c, "And", ag_op2(c, "Greater", u, S(0)), ag_op2(c, "Less", u, S(1)));
    ag_set(c, 0, where(c, in, ag_mul(c, c->dy[0], S(ACT->alpha)), S(0)));
    return c->err;
}

/* PyTorch's hardswish_backward: 0 below -3, dy * (x / 3 + 1/2) up to 3 inclusive, dy above. */
kn_status *kn_grad_HardSwish(kn_grad_ctx *c) {
    int dy = c->dy[0];
    int mid = ag_mul(c, dy, ag_add(c, ag_div(c, X, S(3)), S(0.5)));
    int upper = where(c, ag_op2(c, "LessOrEqual", X, S(3)), mid, dy);
    ag_set(c, 0, where(c, ag_op2(c, "Less", X, S(-3)), S(0), upper));
    return c->err;
}

/* mish(x) = x tanh(sp(x)): tanh(sp) + x sigmoid(x) (1 - tanh(sp)^2). */
kn_status *kn_grad_Mish(kn_grad_ctx *c) {
    int t = ag_op1(c, "Tanh", ag_op1(c, "Softplus", X));
    int d = ag_add(c, t, ag_mul(c, ag_mul(c, X, ag_op1(c, "Sigmoid", X)), ag_sub(c, S(1), ag_mul(c, t, t))));
    return chain(c, d);
}

/* swish(x) = x sigmoid(alpha x): s + alpha x s (1 - s). */
kn_status *kn_grad_Swish(kn_grad_ctx *c) {
    double a = ACT->alpha;
    int s = ag_op1(c, "Sigmoid", ag_mul(c, X, S(a)));
    return chain(c, ag_add(c, s, ag_mul(c, ag_mul(c, ag_mul(c, X, S(a)), s), ag_sub(c, S(1), s))));
}

/* dy where min <= x <= max (PyTorch's clamp_backward); a tensor bound gets dy where x lies beyond
 * it. Bounds are inputs from opset 11, attributes before. */
kn_status *kn_grad_Clip(kn_grad_ctx *c) {
    const kn_node *n = &c->g->nodes[c->node];
    int lo = -1, hi = -1;
    if (n->opset < 11) {
        lo = S(KN_GRAD_PARAMS(c, clip)->min);
        hi = S(KN_GRAD_PARAMS(c, clip)->max);
    } else {
        lo = c->n_in > 1 ? c->in[1] : -1;
        hi = c->n_in > 2 ? c->in[2] : -1;
    }
    int dy = c->dy[0], zero = S(0), inside = -1;
    if (lo >= 0) inside = ag_op2(c, "GreaterOrEqual", X, lo);
    if (hi >= 0) {
        int le = ag_op2(c, "LessOrEqual", X, hi);
        inside = inside >= 0 ? ag_op2(c, "And", inside, le) : le;
    }
    ag_set(c, 0, inside >= 0 ? where(c, inside, dy, zero) : dy);
    if (n->opset >= 11 && lo >= 0 && c->need[1])
        ag_set(c, 1, ag_sum_to(c, where(c, ag_op2(c, "Less", X, lo), dy, zero), lo, Y));
    if (n->opset >= 11 && hi >= 0 && c->n_in > 2 && c->need[2])
        ag_set(c, 2, ag_sum_to(c, where(c, ag_op2(c, "Greater", X, hi), dy, zero), hi, Y));
    return c->err;
}

/* y = x > 0 ? x : slope * x, slope broadcast to x: dslope sums dy * x over the negative side. */
kn_status *kn_grad_PRelu(kn_grad_ctx *c) {
    int slope = c->in[1], dy = c->dy[0], pos = ag_op2(c, "Greater", X, S(0)), zero = S(0);
    if (c->need[0]) ag_set(c, 0, ag_sum_to(c, where(c, pos, dy, ag_mul(c, dy, slope)), X, Y));
    if (c->need[1]) ag_set(c, 1, ag_sum_to(c, where(c, pos, zero, ag_mul(c, dy, X)), slope, Y));
    return c->err;
}

/* Mean of n broadcast inputs: dy / n summed to each input's shape. */
kn_status *kn_grad_Mean(kn_grad_ctx *c) {
    int g = ag_mul(c, c->dy[0], ag_scalar(c, 1.0 / c->n_in, Y));
    for (int i = 0; i < c->n_in; i++)
        if (c->need[i]) ag_set(c, i, ag_sum_to(c, g, c->in[i], Y));
    return c->err;
}

/* A one-hot of the argmax: piecewise constant. */
kn_status *kn_grad_Hardmax(kn_grad_ctx *c) { return zero_grad(c); }
