/* Params decoder and shape rules of the ai.onnx.preview.training optimiser ops (Adagrad,
 * Momentum, Adam; rows in graph/ops.def): inputs R (float scalar), T (int64 scalar) and n groups
 * of n tensors each (X, G, then the optimiser's state), outputs the new X and state tensors, each
 * shaped and typed as the input it replaces. */
#include "graph/op_helpers.h"
#include "graph/ops.h"
#include <string.h>

kn_status *kn_params_decode_train_optim(const kn_node *n, void *out) {
    kn_params_train_optim *p = out;
    if (n->op == KN_OP_PtMomentum) {
        const char *req[4] = {"alpha", "beta", "mode", "norm_coefficient"};
        for (int i = 0; i < 4; i++)
            KN_CHECK(kn_node_attr(n, req[i]), KN_ERR_INVALID_MODEL, "Momentum: attribute '%s' is required", req[i]);
        const char *mode = kn_attr_str(n, "mode", "standard");
        KN_CHECK(!strcmp(mode, "standard") || !strcmp(mode, "nesterov"), KN_ERR_INVALID_MODEL,
                 "Momentum: mode '%s' is neither 'standard' nor 'nesterov'", mode);
        p->nesterov = !strcmp(mode, "nesterov");
    }
    bool adam = n->op == KN_OP_PtAdam;
    p->alpha = kn_attr_float(n, "alpha", adam ? 0.9f : 0.0f);
    p->beta = kn_attr_float(n, "beta", adam ? 0.999f : 0.0f);
    p->epsilon = kn_attr_float(n, "epsilon", 1e-6f);
    p->norm_coefficient = kn_attr_float(n, "norm_coefficient", 0.0f);
    p->norm_coefficient_post = kn_attr_float(n, "norm_coefficient_post", 0.0f);
    p->decay_factor = kn_attr_float(n, "decay_factor", 0.0f);
    return NULL;
}

/* groups: tensors per parameter (X, G and the state: 3 for Adagrad and Momentum, 4 for Adam);
 * outputs: the new X (group 0) and the new state (groups 2..). */
static kn_status *it_optim(kn_infer_ctx *c, int groups) {
    const char *op = c->node->op_type;
    int rest = c->n_in - 2, n = rest / groups;
    KN_CHECK(rest > 0 && rest % groups == 0, KN_ERR_INVALID_MODEL,
             "%s: needs R, T and %d tensors per parameter (got %d inputs)", op, groups, c->n_in);
    KN_CHECK(c->n_out <= n * (groups - 1), KN_ERR_INVALID_MODEL, "%s: %d outputs for %d parameters", op, c->n_out, n);
    for (int k = 0; k < 2; k++) {
        const kn_tensor *t = c->in[k];
        KN_CHECK(t && (t->ndim <= 0 || kn_numel(t) == 1), KN_ERR_INVALID_ARGUMENT, "%s: %s must be a scalar", op,
                 k ? "T" : "R");
    }
    for (int o = 0; o < c->n_out; o++) {
        kn_tensor *y = c->out[o];
        if (!y) continue;
        int g = o / n, i = o % n, src = 2 + (g == 0 ? 0 : g + 1) * n + i;
        const kn_tensor *x = c->in[src];
        KN_CHECK(x, KN_ERR_INVALID_MODEL, "%s: input %d is required", op, src);
        y->dtype = x->dtype;
        kn_tensor_set_shape(y, x->ndim, x->dims);
        if (x->ndim < 0) y->ndim = -1;
    }
    return NULL;
}

kn_status *kn_infer_PtAdagrad(kn_infer_ctx *c) { return it_optim(c, 3); }
kn_status *kn_infer_PtMomentum(kn_infer_ctx *c) { return it_optim(c, 3); }
kn_status *kn_infer_PtAdam(kn_infer_ctx *c) { return it_optim(c, 4); }
