/* CPU kernels of the ai.onnx.preview.training optimiser ops Adagrad, Momentum and Adam (rows in
 * graph/ops.def, shape rules in graph/infer_training.c), as the ONNX reference defines them: each
 * parameter X_i with its gradient G_i and state (V_i, H_i) updated elementwise in double, R the
 * learning rate and T the update count (both scalars). Written for the conformance cases and
 * small models; kiln's own trainer updates its parameters in autograd/optim.c. */
#include "graph/ops.h"
#include <math.h>

static bool to_float(kn_dtype t) { return t == KN_F32 || t == KN_F64 || t == KN_F16 || t == KN_BF16; }

/* Checks the layout: R, T scalars, then `groups` groups of n same-sized float tensors. */
static kn_status *to_check(const kn_node *node, const kn_tensor *const *in, int n_in, int groups, int *n_out_n) {
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    int rest = n_in - 2, n = rest / groups;
    if (rest <= 0 || rest % groups)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: needs R, T and %d tensors per parameter (got %d inputs)",
                        node->op_type, groups, n_in);
    for (int k = 0; k < 2; k++)
        if (!in[k] || kn_numel(in[k]) != 1)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s must be a scalar", node->op_type, k ? "T" : "R");
    if (!to_float(in[0]->dtype)) return kn_err_dtype(node, in[0]);
    for (int i = 0; i < n; i++)
        for (int g = 0; g < groups; g++) {
            const kn_tensor *x = in[2 + i], *t = in[2 + g * n + i];
            if (!t) return kn_error(KN_ERR_INVALID_MODEL, "%s: input %d is required", node->op_type, 2 + g * n + i);
            if (!to_float(t->dtype)) return kn_err_dtype(node, t);
            if (kn_numel(t) != kn_numel(x))
                return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s and %s of parameter %d differ in size", node->op_type,
                                kn_tensor_desc(x, b1, sizeof b1), kn_tensor_desc(t, b2, sizeof b2), i);
        }
    *n_out_n = n;
    return NULL;
}

/* Output o (group g of the outputs, parameter i), or NULL when the graph does not read it. */
static kn_tensor *to_out(kn_tensor *const *out, int n_out, int n, int g, int i) {
    int o = g * n + i;
    return o < n_out && out[o] && out[o]->data ? out[o] : NULL;
}

kn_status *kn_cpu_PtAdagrad(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                            kn_tensor *const *out, int n_out) {
    (void)ctx;
    const kn_params_train_optim *p = KN_PARAMS(node, train_optim);
    int n;
    KN_TRY(to_check(node, in, n_in, 3, &n));
    double t = (double)kn_get_i64(in[1], 0), r = kn_get_f64(in[0], 0) / (1.0 + t * p->decay_factor);
    for (int i = 0; i < n; i++) {
        const kn_tensor *X = in[2 + i], *G = in[2 + n + i], *H = in[2 + 2 * n + i];
        kn_tensor *Xo = to_out(out, n_out, n, 0, i), *Ho = to_out(out, n_out, n, 1, i);
        for (int64_t e = 0; e < kn_numel(X); e++) {
            double x = kn_get_f64(X, e), gr = p->norm_coefficient * x + kn_get_f64(G, e);
            double h = kn_get_f64(H, e) + gr * gr;
            if (Xo) kn_set_f64(Xo, e, x - r * gr / (sqrt(h) + p->epsilon));
            if (Ho) kn_set_f64(Ho, e, h);
        }
    }
    return NULL;
}

kn_status *kn_cpu_PtMomentum(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                             kn_tensor *const *out, int n_out) {
    (void)ctx;
    const kn_params_train_optim *p = KN_PARAMS(node, train_optim);
    int n;
    KN_TRY(to_check(node, in, n_in, 3, &n));
    double r = kn_get_f64(in[0], 0), beta = kn_get_i64(in[1], 0) > 0 ? p->beta : 1.0;
    for (int i = 0; i < n; i++) {
        const kn_tensor *X = in[2 + i], *G = in[2 + n + i], *V = in[2 + 2 * n + i];
        kn_tensor *Xo = to_out(out, n_out, n, 0, i), *Vo = to_out(out, n_out, n, 1, i);
        for (int64_t e = 0; e < kn_numel(X); e++) {
            double x = kn_get_f64(X, e), gr = p->norm_coefficient * x + kn_get_f64(G, e);
            double v = p->alpha * kn_get_f64(V, e) + beta * gr;
            if (Xo) kn_set_f64(Xo, e, x - r * (p->nesterov ? gr + p->alpha * v : v));
            if (Vo) kn_set_f64(Vo, e, v);
        }
    }
    return NULL;
}

kn_status *kn_cpu_PtAdam(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    (void)ctx;
    const kn_params_train_optim *p = KN_PARAMS(node, train_optim);
    int n;
    KN_TRY(to_check(node, in, n_in, 4, &n));
    double r = kn_get_f64(in[0], 0), t = (double)kn_get_i64(in[1], 0), a = p->alpha, b = p->beta;
    if (t > 0) r = r * sqrt(1.0 - pow(b, t)) / (1.0 - pow(a, t));
    for (int i = 0; i < n; i++) {
        const kn_tensor *X = in[2 + i], *G = in[2 + n + i], *V = in[2 + 2 * n + i], *H = in[2 + 3 * n + i];
        kn_tensor *Xo = to_out(out, n_out, n, 0, i), *Vo = to_out(out, n_out, n, 1, i),
                  *Ho = to_out(out, n_out, n, 2, i);
        for (int64_t e = 0; e < kn_numel(X); e++) {
            double x = kn_get_f64(X, e), gr = p->norm_coefficient * x + kn_get_f64(G, e);
            double v = a * kn_get_f64(V, e) + (1.0 - a) * gr, h = b * kn_get_f64(H, e) + (1.0 - b) * gr * gr;
            if (Xo) kn_set_f64(Xo, e, (1.0 - p->norm_coefficient_post) * (x - r * v / (sqrt(h) + p->epsilon)));
            if (Vo) kn_set_f64(Vo, e, v);
            if (Ho) kn_set_f64(Ho, e, h);
        }
    }
    return NULL;
}
