/* Gradient rule of kiln's fused attention KnSdpa: one kiln SdpaGrad node (kernels/cpu/
 * attention_grad.c) that reads the forward's output and its per-row logsumexp, switched on here
 * as KnSdpa's output 1, so the backward neither keeps the [B,H,S,T] probabilities of the
 * decomposed graph nor recomputes the softmax statistics. */
#include "autograd/grad.h"

kn_status *kn_grad_KnSdpa(kn_grad_ctx *c) {
    const kn_params_attention *p = KN_GRAD_PARAMS(c, attention);
    if (c->n_out > 1 && c->dy[1] >= 0)
        return kn_error(KN_ERR_UNSUPPORTED, "KnSdpa: gradients through the logsumexp output are not supported");
    bool has_bias = c->n_in > 3 && c->in[3] >= 0;
    /* the kernel writes the logsumexp for float32 only; other dtypes recompute it */
    int lse = ag_dtype(c, c->in[0]) == KN_F32 ? ag_forward_output(c, 1, "lse") : -1;
    kn_attr at[2];
    int na = 0;
    if (p->has_scale) at[na++] = ag_attr_float("scale", p->scale);
    if (p->is_causal) at[na++] = ag_attr_int("is_causal", 1);
    int in[7] = {c->dy[0], c->in[0], c->in[1], c->in[2], has_bias ? c->in[3] : -1, c->out[0], lse}, out[4];
    bool want_bias = has_bias && c->need[3];
    if (ag_node(c, "SdpaGrad", "kiln", in, lse >= 0 ? 7 : 6, out, want_bias ? 4 : 3, at, na) < 0) return c->err;
    for (int k = 0; k < 3; k++) ag_set(c, k, out[k]);
    if (want_bias) {
        int ins[2] = {out[3], ag_shape(c, c->in[3])};
        ag_set(c, 3, ag_kiln(c, "ReduceSumTo", ins, 2, NULL, 0));
    }
    return c->err;
}
