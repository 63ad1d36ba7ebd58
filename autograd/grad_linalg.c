/* Gradient rules of MatMul (numpy semantics: batch broadcasting, 1-D operands) and Gemm. The
 * products are ordinary MatMul / Gemm nodes, so the backward runs on the same GEMM kernels. */
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
