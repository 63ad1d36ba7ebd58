/* Gradient rules of MatMul (numpy semantics: batch broadcasting, 1-D operands), Gemm and
 * com.microsoft FusedGemm (Gemm's rule after the activation's). The products are ordinary MatMul /
 * Gemm nodes, so the backward runs on the same GEMM kernels. */
#include "autograd/grad.h"

/* x with its last two axes swapped (rank r >= 2). */
static int swap_last(kn_grad_ctx *c, int x, int r) {
    int64_t perm[KN_MAX_DIMS];
    for (int i = 0; i < r; i++) perm[i] = i;
    perm[r - 2] = r - 1;
    perm[r - 1] = r - 2;
    return ag_transpose(c, x, perm, r);
}

static int unsqueeze(kn_grad_ctx *c, int x, int64_t axis) { return ag_op2(c, "Unsqueeze", x, ag_ints(c, &axis, 1)); }

/* g, a product with y's batch axes and operand in's matrix axes, summed over the batch axes
 * that in broadcast; skipped when in's batch axes are statically y's. */
static int batch_sum_to(kn_grad_ctx *c, int g, int in, int y) {
    const kn_tensor *a = ag_type(c, in), *t = ag_type(c, y);
    bool same = a && t && a->ndim == t->ndim && a->ndim >= 2 && kn_shape_known(a) && kn_shape_known(t);
    for (int i = 0; same && i < a->ndim - 2; i++) same = a->dims[i] == t->dims[i];
    if (same) return g;
    int ins[2] = {g, ag_shape(c, in)};
    return ag_kiln(c, "ReduceSumTo", ins, 2, NULL, 0);
}

static int gemm(kn_grad_ctx *c, int a, int b, bool ta, bool tb, float alpha) {
    kn_attr at[3] = {ag_attr_int("transA", ta), ag_attr_int("transB", tb), ag_attr_float("alpha", alpha)};
    int in[2] = {a, b};
    return ag_op(c, "Gemm", in, 2, at, 3);
}

kn_status *kn_grad_MatMul(kn_grad_ctx *c) {
    int a = c->in[0], b = c->in[1], y = c->out[0], dy = c->dy[0];
    int ra = ag_rank(c, a), rb = ag_rank(c, b);
    if (ra < 1 || rb < 1)
        return kn_error(KN_ERR_UNSUPPORTED, "MatMul: operand ranks must be known statically (got %d and %d)", ra, rb);
    if (ra == 1 && rb == 1) { /* a dot product: y is a scalar */
        if (c->need[0]) ag_set(c, 0, ag_mul(c, dy, b));
        if (c->need[1]) ag_set(c, 1, ag_mul(c, dy, a));
        return c->err;
    }
    if (ra == 1) { /* a as [1, K], y as [..., 1, N] */
        int dy2 = unsqueeze(c, dy, -2);
        if (c->need[0]) ag_set(c, 0, ag_sum_to(c, ag_op2(c, "MatMul", dy2, swap_last(c, b, rb)), a, -1));
        if (c->need[1]) ag_set(c, 1, ag_sum_to(c, ag_op2(c, "MatMul", unsqueeze(c, a, -1), dy2), b, -1));
        return c->err;
    }
    if (rb == 1) { /* b as [K, 1], y as [..., M, 1] */
        int dy2 = unsqueeze(c, dy, -1);
        if (c->need[0]) ag_set(c, 0, ag_sum_to(c, ag_op2(c, "MatMul", dy2, unsqueeze(c, b, 0)), a, -1));
        if (c->need[1]) ag_set(c, 1, ag_sum_to(c, ag_mul(c, a, dy2), b, -1));
        return c->err;
    }
    const kn_tensor *bt = ag_type(c, b);
    if (ra >= 3 && rb == 2 && bt && bt->dims[0] > 0 && bt->dims[1] > 0) {
        /* rows times a weight (every projection of a transformer): with the batch axes flattened
         * into rows, dW = a2^T dy2 and da = dy2 W^T are single Gemms whose transposes the GEMM
         * kernel reads in place, instead of a per-batch [.., K, N] product summed down by
         * ReduceSumTo and materialised transposes of a and W */
        int64_t ka[2] = {-1, bt->dims[0]}, kn[2] = {-1, bt->dims[1]};
        int a2 = ag_op2(c, "Reshape", a, ag_ints(c, ka, 2)), dy2 = ag_op2(c, "Reshape", dy, ag_ints(c, kn, 2));
        if (c->need[1]) ag_set(c, 1, gemm(c, a2, dy2, true, false, 1.0f));
        if (c->need[0]) ag_set(c, 0, ag_op2(c, "Reshape", gemm(c, dy2, b, false, true, 1.0f), ag_shape(c, a)));
        return c->err;
    }
    if (c->need[0]) ag_set(c, 0, batch_sum_to(c, ag_op2(c, "MatMul", dy, swap_last(c, b, rb)), a, y));
    if (c->need[1]) ag_set(c, 1, batch_sum_to(c, ag_op2(c, "MatMul", swap_last(c, a, ra), dy), b, y));
    return c->err;
}

/* y = alpha * A' B' + beta * C with A' = A or A^T, B' = B or B^T: dA' = alpha dy B'^T and
 * dB' = alpha A'^T dy, each written as one Gemm whose transposes land on the stored operands. */
kn_status *kn_grad_Gemm(kn_grad_ctx *c) {
    const kn_params_gemm *p = KN_GRAD_PARAMS(c, gemm);
    int a = c->in[0], b = c->in[1], dy = c->dy[0];
    bool ta = p->trans_a, tb = p->trans_b;
    if (c->need[0]) ag_set(c, 0, ta ? gemm(c, b, dy, tb, true, p->alpha) : gemm(c, dy, b, false, !tb, p->alpha));
    if (c->need[1]) ag_set(c, 1, tb ? gemm(c, dy, a, true, ta, p->alpha) : gemm(c, a, dy, !ta, false, p->alpha));
    if (c->n_in > 2 && c->in[2] >= 0 && c->need[2]) {
        int g = p->beta == 1.0f ? dy : ag_mul(c, dy, ag_scalar(c, p->beta, c->in[2]));
        ag_set(c, 2, ag_sum_to(c, g, c->in[2], c->out[0]));
    }
    return c->err;
}

/* dx of a one-input activation rule (kn_grad_<Act>, autograd/grad_activation.c and
 * grad_elementwise.c) run on x -> y with params, the gradient dy flowing into y: the rule an
 * activation node gets, so FusedGemm's derivatives are those and not a second copy. x or y may be
 * -1 for the rules that do not read it. */
static int act_grad(kn_grad_ctx *c, kn_grad_fn rule, int op, const void *params, int x, int y, int dy) {
    if (c->err) return -1;
    int in[1] = {x}, out[1] = {y}, dys[1] = {dy}, dx[1] = {-1};
    bool need[1] = {true};
    kn_grad_ctx a = *c;
    a.op = op;
    a.params = params;
    a.n_in = a.n_out = 1;
    a.in = in;
    a.out = out;
    a.dy = dys;
    a.need = need;
    a.dx = dx;
    kn_status *st = rule(&a);
    if (!st) st = a.err;
    return st ? ag_fail(c, st) : dx[0];
}

/* FusedGemm's pre-activation z = alpha A' B' + beta C, recomputed by a plain Gemm. */
static int fused_gemm_z(kn_grad_ctx *c, const kn_params_gemm *p) {
    kn_attr at[4] = {ag_attr_int("transA", p->trans_a), ag_attr_int("transB", p->trans_b),
                     ag_attr_float("alpha", p->alpha), ag_attr_float("beta", p->beta)};
    bool has_c = c->n_in > 2 && c->in[2] >= 0;
    int in[3] = {c->in[0], c->in[1], has_c ? c->in[2] : -1};
    return ag_op(c, "Gemm", in, has_c ? 3 : 2, at, 4);
}

/* y = act(z), z = Gemm(A, B, C): dz = dy act'(z) by the activation's own rule, then the Gemm rule
 * on dz. Sigmoid and Tanh differentiate through their output, which is y, so z is recomputed only
 * for the others. ParametricSoftplus and ScaledTanh, alpha f(beta z) with f Softplus and Tanh (no
 * ops of their own), run f's rule on u = beta z with alpha dy flowing in and scale du by beta.
 * Clip's bounds are activation_alpha / _beta: the Clip rule reads them from clip params, as it
 * does for an opset < 11 Clip (FusedGemm's com.microsoft opset is 1). */
kn_status *kn_grad_MsFusedGemm(kn_grad_ctx *c) {
    const kn_params_gemm *p = KN_GRAD_PARAMS(c, gemm);
    kn_params_act ap = {.alpha = p->act_alpha, .beta = p->act_beta, .gamma = p->act_gamma};
    kn_params_clip cp = {.has_min_max_attr = true, .min = p->act_alpha, .max = p->act_beta};
    int y = c->out[0], dy = c->dy[0], dz = -1;
    switch (p->act) {
    case KN_GEMM_ACT_NONE: dz = dy; break;
    case KN_GEMM_ACT_SIGMOID: dz = act_grad(c, kn_grad_Sigmoid, KN_OP_Sigmoid, NULL, -1, y, dy); break;
    case KN_GEMM_ACT_TANH: dz = act_grad(c, kn_grad_Tanh, KN_OP_Tanh, NULL, -1, y, dy); break;
    case KN_GEMM_ACT_RELU: dz = act_grad(c, kn_grad_Relu, KN_OP_Relu, NULL, fused_gemm_z(c, p), y, dy); break;
    case KN_GEMM_ACT_LEAKY_RELU:
        dz = act_grad(c, kn_grad_LeakyRelu, KN_OP_LeakyRelu, &ap, fused_gemm_z(c, p), y, dy);
        break;
    case KN_GEMM_ACT_HARD_SIGMOID:
        dz = act_grad(c, kn_grad_HardSigmoid, KN_OP_HardSigmoid, &ap, fused_gemm_z(c, p), y, dy);
        break;
    case KN_GEMM_ACT_ELU: dz = act_grad(c, kn_grad_Elu, KN_OP_Elu, &ap, fused_gemm_z(c, p), y, dy); break;
    case KN_GEMM_ACT_SELU: dz = act_grad(c, kn_grad_Selu, KN_OP_Selu, &ap, fused_gemm_z(c, p), y, dy); break;
    case KN_GEMM_ACT_CELU: dz = act_grad(c, kn_grad_Celu, KN_OP_Celu, &ap, fused_gemm_z(c, p), y, dy); break;
    case KN_GEMM_ACT_SOFTPLUS:
        dz = act_grad(c, kn_grad_Softplus, KN_OP_Softplus, NULL, fused_gemm_z(c, p), y, dy);
        break;
    case KN_GEMM_ACT_SOFTSIGN:
        dz = act_grad(c, kn_grad_Softsign, KN_OP_Softsign, NULL, fused_gemm_z(c, p), y, dy);
        break;
    case KN_GEMM_ACT_THRESHOLDED_RELU:
        dz = act_grad(c, kn_grad_ThresholdedRelu, KN_OP_ThresholdedRelu, &ap, fused_gemm_z(c, p), y, dy);
        break;
    case KN_GEMM_ACT_CLIP: dz = act_grad(c, kn_grad_Clip, KN_OP_Clip, &cp, fused_gemm_z(c, p), y, dy); break;
    case KN_GEMM_ACT_PARAMETRIC_SOFTPLUS:
    case KN_GEMM_ACT_SCALED_TANH: {
        int beta = ag_scalar(c, p->act_beta, y), u = ag_mul(c, fused_gemm_z(c, p), beta);
        int du_in = ag_mul(c, dy, ag_scalar(c, p->act_alpha, y)), du;
        if (p->act == KN_GEMM_ACT_SCALED_TANH)
            du = act_grad(c, kn_grad_Tanh, KN_OP_Tanh, NULL, u, ag_op1(c, "Tanh", u), du_in);
        else du = act_grad(c, kn_grad_Softplus, KN_OP_Softplus, NULL, u, -1, du_in);
        dz = ag_mul(c, du, beta);
        break;
    }
    default:
        /* an activation the decoder accepts without a derivative here: refuse by name rather
         * than differentiate it as the identity */
        return kn_error(KN_ERR_UNSUPPORTED, "FusedGemm: no gradient for activation '%s'",
                        kn_attr_str(&c->g->nodes[c->node], "activation", "?"));
    }
    if (dz < 0) return c->err;
    int dys[1] = {dz};
    kn_grad_ctx gc = *c;
    gc.dy = dys;
    kn_status *st = kn_grad_Gemm(&gc);
    return st ? st : gc.err;
}
