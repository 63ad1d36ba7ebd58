/* Gradient rules of the elementwise ops: the arithmetic (with broadcasting undone by
 * ReduceSumTo), the unary functions, the GELU family, Where, Cast, Identity and inference-mode
 * Dropout, CastLike, Max and Min. Each rule is the derivative written with ordinary ops; the output y is reused where
 * it makes the derivative cheaper (Exp, Tanh, Sigmoid, Sqrt, Div). */
#include "autograd/grad.h"

/* v in the dtype of like, when they may differ (Pow's integer exponent). */
static int cast_like(kn_grad_ctx *c, int v, int like) {
    kn_dtype a = ag_dtype(c, v), b = ag_dtype(c, like);
    return a != KN_UNDEFINED && a == b ? v : ag_op2(c, "CastLike", v, like);
}

kn_status *kn_grad_Add(kn_grad_ctx *c) {
    ag_set(c, 0, ag_sum_to(c, c->dy[0], c->in[0], c->out[0]));
    ag_set(c, 1, ag_sum_to(c, c->dy[0], c->in[1], c->out[0]));
    return c->err;
}

/* Sum(x_0, ..., x_n) broadcasts all its inputs together: each gets dy summed to its shape. */
kn_status *kn_grad_Sum(kn_grad_ctx *c) {
    for (int i = 0; i < c->n_in; i++)
        if (c->need[i]) ag_set(c, i, ag_sum_to(c, c->dy[0], c->in[i], c->out[0]));
    return c->err;
}

kn_status *kn_grad_Sub(kn_grad_ctx *c) {
    ag_set(c, 0, ag_sum_to(c, c->dy[0], c->in[0], c->out[0]));
    if (c->need[1]) ag_set(c, 1, ag_sum_to(c, ag_neg(c, c->dy[0]), c->in[1], c->out[0]));
    return c->err;
}

kn_status *kn_grad_Mul(kn_grad_ctx *c) {
    if (c->need[0]) ag_set(c, 0, ag_sum_to(c, ag_mul(c, c->dy[0], c->in[1]), c->in[0], c->out[0]));
    if (c->need[1]) ag_set(c, 1, ag_sum_to(c, ag_mul(c, c->dy[0], c->in[0]), c->in[1], c->out[0]));
    return c->err;
}

/* y = a / b: da = dy / b, db = -dy * a / b^2 = -dy * y / b. */
kn_status *kn_grad_Div(kn_grad_ctx *c) {
    if (c->need[0]) ag_set(c, 0, ag_sum_to(c, ag_div(c, c->dy[0], c->in[1]), c->in[0], c->out[0]));
    if (c->need[1]) {
        int t = ag_div(c, ag_mul(c, c->dy[0], c->out[0]), c->in[1]);
        ag_set(c, 1, ag_sum_to(c, ag_neg(c, t), c->in[1], c->out[0]));
    }
    return c->err;
}

/* y = a^b: da = dy * b * a^(b-1) (not b * y / a, which fails at a = 0), db = dy * y * log(a). */
kn_status *kn_grad_Pow(kn_grad_ctx *c) {
    int a = c->in[0], b = c->in[1];
    if (c->need[0]) {
        int bm1 = ag_sub(c, b, ag_scalar(c, 1.0, b));
        int t = ag_mul(c, ag_mul(c, c->dy[0], cast_like(c, b, a)), ag_op2(c, "Pow", a, bm1));
        ag_set(c, 0, ag_sum_to(c, t, a, c->out[0]));
    }
    if (c->need[1]) {
        int t = ag_mul(c, ag_mul(c, c->dy[0], c->out[0]), ag_op1(c, "Log", a));
        ag_set(c, 1, ag_sum_to(c, cast_like(c, t, b), b, c->out[0]));
    }
    return c->err;
}

kn_status *kn_grad_Neg(kn_grad_ctx *c) {
    ag_set(c, 0, ag_neg(c, c->dy[0]));
    return c->err;
}

kn_status *kn_grad_Sqrt(kn_grad_ctx *c) {
    ag_set(c, 0, ag_div(c, ag_mul(c, c->dy[0], ag_scalar(c, 0.5, c->in[0])), c->out[0]));
    return c->err;
}

kn_status *kn_grad_Exp(kn_grad_ctx *c) {
    ag_set(c, 0, ag_mul(c, c->dy[0], c->out[0]));
    return c->err;
}

kn_status *kn_grad_Log(kn_grad_ctx *c) {
    ag_set(c, 0, ag_div(c, c->dy[0], c->in[0]));
    return c->err;
}

kn_status *kn_grad_Tanh(kn_grad_ctx *c) {
    int y = c->out[0];
    ag_set(c, 0, ag_mul(c, c->dy[0], ag_sub(c, ag_scalar(c, 1.0, y), ag_mul(c, y, y))));
    return c->err;
}

kn_status *kn_grad_Sigmoid(kn_grad_ctx *c) {
    int y = c->out[0];
    ag_set(c, 0, ag_mul(c, ag_mul(c, c->dy[0], y), ag_sub(c, ag_scalar(c, 1.0, y), y)));
    return c->err;
}

/* The subgradient 0 at x = 0, as PyTorch and ONNX Runtime take it. */
kn_status *kn_grad_Relu(kn_grad_ctx *c) {
    int x = c->in[0], zero = ag_scalar(c, 0.0, x);
    int in[3] = {ag_op2(c, "Greater", x, zero), c->dy[0], zero};
    ag_set(c, 0, ag_op(c, "Where", in, 3, NULL, 0));
    return c->err;
}

/* d erf(x) = 2 / sqrt(pi) * exp(-x^2). */
kn_status *kn_grad_Erf(kn_grad_ctx *c) {
    int x = c->in[0];
    int e = ag_op1(c, "Exp", ag_neg(c, ag_mul(c, x, x)));
    ag_set(c, 0, ag_mul(c, c->dy[0], ag_mul(c, e, ag_scalar(c, 1.1283791670955126, x))));
    return c->err;
}

/* kiln GeluGrad(dy, x): one pass over x instead of the erf (or tanh) chain's five. */
static int gelu_grad(kn_grad_ctx *c, int dy, int x, bool tanh_form) {
    kn_attr a = ag_attr_str("approximate", tanh_form ? "tanh" : "none");
    int in[2] = {dy, x};
    return ag_kiln(c, "GeluGrad", in, 2, &a, 1);
}

kn_status *kn_grad_Gelu(kn_grad_ctx *c) {
    ag_set(c, 0, gelu_grad(c, c->dy[0], c->in[0], KN_GRAD_PARAMS(c, act)->gelu_tanh));
    return c->err;
}

kn_status *kn_grad_MsGelu(kn_grad_ctx *c) {
    ag_set(c, 0, gelu_grad(c, c->dy[0], c->in[0], false));
    return c->err;
}

/* gelu(a + b) for BiasGelu (erf) and FastGelu (tanh, b optional): the sum is recomputed rather
 * than kept from the forward, which never materialised it. */
static kn_status *biased_gelu(kn_grad_ctx *c, bool tanh_form) {
    bool has_b = c->n_in > 1 && c->in[1] >= 0;
    int u = has_b ? ag_add(c, c->in[0], c->in[1]) : c->in[0];
    int g = gelu_grad(c, c->dy[0], u, tanh_form);
    ag_set(c, 0, ag_sum_to(c, g, c->in[0], c->out[0]));
    if (has_b && c->need[1]) ag_set(c, 1, ag_sum_to(c, g, c->in[1], c->out[0]));
    return c->err;
}

kn_status *kn_grad_MsBiasGelu(kn_grad_ctx *c) { return biased_gelu(c, false); }
kn_status *kn_grad_MsFastGelu(kn_grad_ctx *c) { return biased_gelu(c, true); }

kn_status *kn_grad_Where(kn_grad_ctx *c) {
    int cond = c->in[0], y = c->out[0];
    if (c->need[1]) {
        int in[3] = {cond, c->dy[0], ag_scalar(c, 0.0, c->in[1])};
        ag_set(c, 1, ag_sum_to(c, ag_op(c, "Where", in, 3, NULL, 0), c->in[1], y));
    }
    if (c->need[2]) {
        int in[3] = {cond, ag_scalar(c, 0.0, c->in[2]), c->dy[0]};
        ag_set(c, 2, ag_sum_to(c, ag_op(c, "Where", in, 3, NULL, 0), c->in[2], y));
    }
    return c->err;
}

kn_status *kn_grad_Cast(kn_grad_ctx *c) {
    ag_set(c, 0, cast_like(c, c->dy[0], c->in[0]));
    return c->err;
}

/* Only the data input carries a gradient; the second input gives the type alone. */
kn_status *kn_grad_CastLike(kn_grad_ctx *c) {
    ag_set(c, 0, cast_like(c, c->dy[0], c->in[0]));
    return c->err;
}

/* Max / Min of n broadcast inputs: dy flows to every input equal to the result, so a tie passes
 * the whole gradient to each tied input (ONNX Runtime's convention; PyTorch's maximum splits it
 * in halves). Ties are rare in training (a clamp against a constant). */
static kn_status *select_grad(kn_grad_ctx *c) {
    int y = c->out[0];
    for (int i = 0; i < c->n_in; i++) {
        if (!c->need[i]) continue;
        int in[3] = {ag_op2(c, "Equal", c->in[i], y), c->dy[0], ag_scalar(c, 0.0, c->in[i])};
        ag_set(c, i, ag_sum_to(c, ag_op(c, "Where", in, 3, NULL, 0), c->in[i], y));
    }
    return c->err;
}

kn_status *kn_grad_Max(kn_grad_ctx *c) { return select_grad(c); }
kn_status *kn_grad_Min(kn_grad_ctx *c) { return select_grad(c); }

kn_status *kn_grad_Identity(kn_grad_ctx *c) {
    ag_set(c, 0, c->dy[0]);
    return c->err;
}

/* Inference mode: the output is the input. Training mode (a constant true training_mode input,
 * or is_test = 0 before opset 7): dx = dy * mask / (1 - ratio) with the mask the forward drew (its
 * output 1, switched on when the model left it off), so the backward never redraws it. A
 * training_mode that is not a constant is refused: which of the two applies is not known. */
kn_status *kn_grad_Dropout(kn_grad_ctx *c) {
    const kn_params_dropout *p = KN_GRAD_PARAMS(c, dropout);
    const kn_node *n = &c->g->nodes[c->node];
    bool training = p->training_attr;
    if (n->opset >= 12 && c->n_in > 2 && c->in[2] >= 0) {
        const kn_tensor *t = c->g->values[c->in[2]].constant;
        if (!t)
            return kn_error(KN_ERR_UNSUPPORTED,
                            "Dropout: a training_mode input that is not a constant has no gradient rule");
        training = kn_get_f64(t, 0) != 0;
    }
    if (c->n_out > 1 && c->dy[1] >= 0)
        return kn_error(KN_ERR_UNSUPPORTED, "Dropout: the mask output is not differentiable");
    if (!training) {
        ag_set(c, 0, c->dy[0]);
        return c->err;
    }
    int x = c->in[0], scale;
    const kn_tensor *rt = n->opset >= 12 && c->n_in > 1 && c->in[1] >= 0 ? c->g->values[c->in[1]].constant : NULL;
    if (n->opset >= 12 && c->n_in > 1 && c->in[1] >= 0 && !rt) { /* a ratio computed at run time */
        int one = ag_scalar(c, 1.0, x);
        scale = ag_div(c, one, ag_sub(c, one, ag_op2(c, "CastLike", c->in[1], x)));
    } else {
        double ratio = n->opset >= 12 ? (rt ? kn_get_f64(rt, 0) : 0.5) : p->ratio;
        scale = ag_scalar(c, 1.0 / (1.0 - ratio), x);
    }
    int mask = ag_forward_output(c, 1, "mask"), g = ag_mul(c, c->dy[0], scale);
    if (n->opset < 10) { /* the mask is typed like the data */
        ag_set(c, 0, ag_mul(c, g, mask));
        return c->err;
    }
    int in[3] = {mask, g, ag_scalar(c, 0.0, x)};
    ag_set(c, 0, ag_op(c, "Where", in, 3, NULL, 0));
    return c->err;
}
