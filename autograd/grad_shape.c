/* Gradient rules of the data-movement ops: the reshape family, Transpose, Concat, Split, Slice,
 * Expand and Gather. Sizes come from Shape nodes rather than from static shapes, so the backward
 * works for any input shape the forward accepts; the executor evaluates that shape arithmetic on
 * the host once per input-shape signature. */
#include "autograd/grad.h"
#include <stdlib.h>

static kn_status *reshape_back(kn_grad_ctx *c) {
    ag_set(c, 0, ag_reshape_to(c, c->dy[0], c->in[0], c->out[0]));
    return c->err;
}

kn_status *kn_grad_Reshape(kn_grad_ctx *c) { return reshape_back(c); }
kn_status *kn_grad_Flatten(kn_grad_ctx *c) { return reshape_back(c); }
kn_status *kn_grad_Squeeze(kn_grad_ctx *c) { return reshape_back(c); }
kn_status *kn_grad_Unsqueeze(kn_grad_ctx *c) { return reshape_back(c); }

kn_status *kn_grad_Transpose(kn_grad_ctx *c) {
    const kn_params_transpose *p = KN_GRAD_PARAMS(c, transpose);
    if (p->n_perm < 0) { /* reversed axes: their own inverse */
        ag_set(c, 0, ag_op1(c, "Transpose", c->dy[0]));
        return c->err;
    }
    int64_t inv[KN_PARAMS_MAX_RANK];
    for (int i = 0; i < p->n_perm; i++) {
        if (p->perm[i] < 0 || p->perm[i] >= p->n_perm)
            return kn_error(KN_ERR_INVALID_MODEL, "Transpose: perm[%d] = %lld out of range", i, (long long)p->perm[i]);
        inv[p->perm[i]] = i;
    }
    ag_set(c, 0, ag_transpose(c, c->dy[0], inv, p->n_perm));
    return c->err;
}

/* dy split back into the inputs' extents along the axis: constants when every extent is static,
 * else Shape(x_i)[axis] gathered by Shape's start / end. */
kn_status *kn_grad_Concat(kn_grad_ctx *c) {
    int axis = ag_axis(c, KN_GRAD_PARAMS(c, axis)->axis, c->out[0]);
    if (axis < 0) return c->err;
    int64_t sizes[256];
    bool known = c->n_in <= 256;
    for (int i = 0; known && i < c->n_in; i++) {
        const kn_tensor *t = ag_type(c, c->in[i]);
        known = t && t->ndim > axis && t->dims[axis] >= 0;
        if (known) sizes[i] = t->dims[axis];
    }
    int split;
    if (known) split = ag_ints(c, sizes, c->n_in);
    else {
        int *parts = malloc(sizeof(int) * (size_t)c->n_in);
        if (!parts) return KN_OOM(sizeof(int) * (size_t)c->n_in);
        kn_attr at[2] = {ag_attr_int("start", axis), ag_attr_int("end", axis + 1)};
        for (int i = 0; i < c->n_in; i++) parts[i] = ag_op(c, "Shape", &c->in[i], 1, at, 2);
        kn_attr ax = ag_attr_int("axis", 0);
        split = ag_op(c, "Concat", parts, c->n_in, &ax, 1);
        free(parts);
    }
    int *outs = malloc(sizeof(int) * (size_t)c->n_in);
    if (!outs) return KN_OOM(sizeof(int) * (size_t)c->n_in);
    kn_attr ax = ag_attr_int("axis", axis);
    int in[2] = {c->dy[0], split};
    if (ag_node(c, "Split", "", in, 2, outs, c->n_in, &ax, 1) == 0)
        for (int i = 0; i < c->n_in; i++) ag_set(c, i, outs[i]);
    free(outs);
    return c->err;
}

/* The pieces' gradients concatenated back, zeros for pieces no gradient reached. */
kn_status *kn_grad_Split(kn_grad_ctx *c) {
    int axis = ag_axis(c, KN_GRAD_PARAMS(c, split)->axis, c->in[0]);
    if (axis < 0) return c->err;
    int *parts = malloc(sizeof(int) * (size_t)c->n_out);
    if (!parts) return KN_OOM(sizeof(int) * (size_t)c->n_out);
    for (int k = 0; k < c->n_out; k++) parts[k] = c->dy[k] >= 0 ? c->dy[k] : ag_zeros_like(c, c->out[k]);
    kn_attr ax = ag_attr_int("axis", axis);
    ag_set(c, 0, ag_op(c, "Concat", parts, c->n_out, &ax, 1));
    free(parts);
    return c->err;
}

kn_status *kn_grad_Slice(kn_grad_ctx *c) {
    kn_node *n = &c->g->nodes[c->node];
    if (n->opset < 10)
        return kn_error(KN_ERR_UNSUPPORTED, "Slice before opset 10 (attributes) has no gradient rule yet");
    int in[6] = {c->dy[0], ag_shape(c, c->in[0]),       c->in[1],
                 c->in[2], c->n_in > 3 ? c->in[3] : -1, c->n_in > 4 ? c->in[4] : -1};
    ag_set(c, 0, ag_kiln(c, "SliceGrad", in, 6, NULL, 0));
    return c->err;
}

kn_status *kn_grad_Expand(kn_grad_ctx *c) {
    ag_set(c, 0, ag_sum_to(c, c->dy[0], c->in[0], c->out[0]));
    return c->err;
}

/* The rows dy holds scatter-added back into zeros of data's shape (embeddings: repeated tokens
 * accumulate). */
kn_status *kn_grad_Gather(kn_grad_ctx *c) {
    kn_attr ax = ag_attr_int("axis", KN_GRAD_PARAMS(c, axis)->axis);
    int in[3] = {c->dy[0], c->in[1], ag_shape(c, c->in[0])};
    ag_set(c, 0, ag_kiln(c, "GatherGrad", in, 3, &ax, 1));
    return c->err;
}
