/* Gradient rules of com.microsoft ops the fusion passes make: SkipLayerNormalization (the
 * residual sum s = input + skip + bias normalised) through kiln LayerNormalizationGrad on s with
 * the statistics the forward writes anyway (its outputs 1 to 3, switched on here), so the
 * backward recomputes neither the sum nor the mean and variance. */
#include "autograd/grad.h"

/* SkipLayerNormalization(input, skip, gamma, beta?, bias?) -> output, mean, inv_std_var,
 * input_skip_bias_sum. ds = LayerNormGrad(d output) + d sum; input gets ds, skip and bias get ds
 * summed to their shapes ([S,H] / [1,S,H] skips broadcast over the batch; bias [H]). */
kn_status *kn_grad_MsSkipLayerNormalization(kn_grad_ctx *c) {
    const kn_params_ms_sln *p = KN_GRAD_PARAMS(c, ms_sln);
    if ((c->n_out > 1 && c->dy[1] >= 0) || (c->n_out > 2 && c->dy[2] >= 0))
        return kn_error(KN_ERR_UNSUPPORTED,
                        "SkipLayerNormalization: gradients through mean / inv_std_var are not supported");
    int x = c->in[0], gamma = c->in[2];
    int beta = c->n_in > 3 ? c->in[3] : -1, bias = c->n_in > 4 ? c->in[4] : -1;
    int ds = c->n_out > 3 ? c->dy[3] : -1;
    if (c->dy[0] >= 0) {
        int sum = ag_forward_output(c, 3, "input_skip_bias_sum");
        int mean = ag_forward_output(c, 1, "mean");
        int inv = ag_forward_output(c, 2, "inv_std_var");
        kn_attr at[2] = {ag_attr_int("axis", -1), ag_attr_float("epsilon", p->epsilon)};
        int in[5] = {c->dy[0], sum, gamma, mean, inv}, out[3];
        if (ag_node(c, "LayerNormalizationGrad", "kiln", in, 5, out, 3, at, 2) < 0) return c->err;
        ds = ds >= 0 ? ag_add(c, ds, out[0]) : out[0];
        ag_set(c, 2, out[1]);
        if (beta >= 0) ag_set(c, 3, out[2]);
    }
    if (ds < 0) return c->err;
    ag_set(c, 0, ds);
    if (c->need[1]) ag_set(c, 1, ag_sum_to(c, ds, c->in[1], x));
    if (bias >= 0 && c->need[4]) ag_set(c, 4, ag_sum_to(c, ds, bias, x));
    return c->err;
}
