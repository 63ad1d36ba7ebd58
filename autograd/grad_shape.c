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

/* Pad (constant mode): the adjoint of padding by p is padding by -p with zeros, which crops what
 * was added and restores zeros where the forward cropped (negative pads). The constant value
 * gets the sum of dy over the padding: sum(dy) - sum(dx). */
kn_status *kn_grad_Pad(kn_grad_ctx *c) {
    const kn_params_pad *p = KN_GRAD_PARAMS(c, pad);
    kn_node *n = &c->g->nodes[c->node];
    if (p->mode != KN_PAD_CONSTANT) return kn_error(KN_ERR_UNSUPPORTED, "Pad: only constant mode has a gradient rule");
    int x = c->in[0], r = ag_rank(c, x);
    if (r < 0) return kn_error(KN_ERR_UNSUPPORTED, "Pad: the rank of the input must be known statically");
    int64_t raw[4 * KN_PARAMS_MAX_RANK], pads[2 * KN_MAX_DIMS] = {0}, axes[KN_MAX_DIMS];
    int np = 0, na = r;
    for (int i = 0; i < r; i++) axes[i] = i;
    if (n->opset < 11) {
        np = p->n_pads;
        for (int i = 0; i < np && i < 4 * KN_PARAMS_MAX_RANK; i++) raw[i] = p->pads[i];
    } else {
        const kn_tensor *t = c->n_in > 1 && c->in[1] >= 0 ? c->g->values[c->in[1]].constant : NULL;
        if (!t) return kn_error(KN_ERR_UNSUPPORTED, "Pad: the pads input must be a constant");
        np = (int)kn_numel(t);
        if (np > 4 * KN_PARAMS_MAX_RANK) return kn_error(KN_ERR_INVALID_MODEL, "Pad: too many pads");
        for (int i = 0; i < np; i++) raw[i] = kn_get_i64(t, i);
        if (c->n_in > 3 && c->in[3] >= 0) {
            const kn_tensor *a = c->g->values[c->in[3]].constant;
            if (!a) return kn_error(KN_ERR_UNSUPPORTED, "Pad: the axes input must be a constant");
            na = (int)kn_numel(a);
            if (na > KN_MAX_DIMS) return kn_error(KN_ERR_INVALID_MODEL, "Pad: too many axes");
            for (int i = 0; i < na; i++) {
                int ax = ag_axis(c, kn_get_i64(a, i), x);
                if (ax < 0) return c->err;
                axes[i] = ax;
            }
        }
    }
    if (np != 2 * na) return kn_error(KN_ERR_INVALID_MODEL, "Pad: %d pads for %d axes", np, na);
    for (int i = 0; i < na; i++) {
        pads[axes[i]] = -raw[i];
        pads[r + axes[i]] = -raw[na + i];
    }
    int in[3] = {c->dy[0], ag_ints(c, pads, 2 * r), ag_scalar(c, 0.0, x)};
    int dx = ag_op(c, "Pad", in, 3, NULL, 0);
    ag_set(c, 0, dx);
    if (n->opset >= 11 && c->n_in > 2 && c->in[2] >= 0 && c->need[2]) {
        kn_attr kd = ag_attr_int("keepdims", 0);
        int sy = ag_op(c, "ReduceSum", &c->dy[0], 1, &kd, 1), sx = ag_op(c, "ReduceSum", &dx, 1, &kd, 1);
        ag_set(c, 2, ag_reshape_to(c, ag_sub(c, sy, sx), c->in[2], -1));
    }
    return c->err;
}

/* Tile: dy seen as [r0, d0, r1, d1, ...] summed over the repeat axes (static shapes). */
kn_status *kn_grad_Tile(kn_grad_ctx *c) {
    const kn_tensor *t = ag_type(c, c->in[0]);
    const kn_tensor *rep = c->g->values[c->in[1]].constant;
    if (!t || t->ndim < 0 || !kn_shape_known(t) || !rep || kn_numel(rep) != t->ndim)
        return kn_error(KN_ERR_UNSUPPORTED, "Tile: the gradient needs a static input shape and constant repeats");
    int r = t->ndim;
    int64_t shape[2 * KN_MAX_DIMS], axes[KN_MAX_DIMS];
    for (int i = 0; i < r; i++) {
        shape[2 * i] = kn_get_i64(rep, i);
        shape[2 * i + 1] = t->dims[i];
        axes[i] = 2 * i;
    }
    if (r == 0) {
        ag_set(c, 0, c->dy[0]);
        return c->err;
    }
    kn_attr kd = ag_attr_int("keepdims", 0);
    int in[2] = {ag_op2(c, "Reshape", c->dy[0], ag_ints(c, shape, 2 * r)), ag_ints(c, axes, r)};
    ag_set(c, 0, ag_op(c, "ReduceSum", in, 2, &kd, 1));
    return c->err;
}

/* dy scatter-added back where GatherElements read (repeated indices accumulate). */
kn_status *kn_grad_GatherElements(kn_grad_ctx *c) {
    kn_attr at[2] = {ag_attr_int("axis", KN_GRAD_PARAMS(c, axis)->axis), ag_attr_str("reduction", "add")};
    int in[3] = {ag_zeros_like(c, c->in[0]), c->in[1], c->dy[0]};
    ag_set(c, 0, ag_op(c, "ScatterElements", in, 3, at, 2));
    return c->err;
}

/* The adjoint of a running sum is the running sum the other way (exclusive stays exclusive). */
kn_status *kn_grad_CumSum(kn_grad_ctx *c) {
    const kn_params_cum *p = KN_GRAD_PARAMS(c, cum);
    kn_attr at[2] = {ag_attr_int("exclusive", p->exclusive), ag_attr_int("reverse", !p->reverse)};
    int in[2] = {c->dy[0], c->in[1]};
    ag_set(c, 0, ag_op(c, "CumSum", in, 2, at, 2));
    return c->err;
}

/* The same triangle of dy (the rest was zeroed by the forward). */
kn_status *kn_grad_Trilu(kn_grad_ctx *c) {
    kn_attr up = ag_attr_int("upper", KN_GRAD_PARAMS(c, trilu)->upper);
    int in[2] = {c->dy[0], c->n_in > 1 ? c->in[1] : -1};
    ag_set(c, 0, ag_op(c, "Trilu", in, c->n_in > 1 && c->in[1] >= 0 ? 2 : 1, &up, 1));
    return c->err;
}

/* The values' gradient scattered back to where they were taken (Indices get none). */
kn_status *kn_grad_TopK(kn_grad_ctx *c) {
    if (c->dy[0] < 0) return c->err;
    kn_attr at[2] = {ag_attr_int("axis", KN_GRAD_PARAMS(c, topk)->axis), ag_attr_str("reduction", "add")};
    int in[3] = {ag_zeros_like(c, c->in[0]), c->out[1], c->dy[0]};
    if (in[1] < 0) return kn_error(KN_ERR_UNSUPPORTED, "TopK: the gradient needs the Indices output");
    ag_set(c, 0, ag_op(c, "ScatterElements", in, 3, at, 2));
    return c->err;
}

/* dy scatter-added back where GatherND read (batch_dims 0: ScatterND has no batch axes). */
kn_status *kn_grad_GatherND(kn_grad_ctx *c) {
    if (KN_GRAD_PARAMS(c, gathernd)->batch_dims != 0)
        return kn_error(KN_ERR_UNSUPPORTED, "GatherND: batch_dims > 0 has no gradient rule");
    kn_attr red = ag_attr_str("reduction", "add");
    int in[3] = {ag_zeros_like(c, c->in[0]), c->in[1], c->dy[0]};
    ag_set(c, 0, ag_op(c, "ScatterND", in, 3, &red, 1));
    return c->err;
}

/* Scatter with no reduction: data's gradient is dy with the overwritten positions zeroed, the
 * updates' is dy read back at the indices; with reduction add, data keeps all of dy. Other
 * reductions (mul, max, min) are refused. */
static kn_status *scatter_grad(kn_grad_ctx *c, bool nd) {
    const kn_params_scatter *p = KN_GRAD_PARAMS(c, scatter);
    if (p->reduction != KN_SCATTER_NONE && p->reduction != KN_SCATTER_ADD)
        return kn_error(KN_ERR_UNSUPPORTED, "%s: only reductions none and add have a gradient rule",
                        nd ? "ScatterND" : "ScatterElements");
    kn_attr ax = ag_attr_int("axis", p->axis);
    int dy = c->dy[0], idx = c->in[1];
    if (c->need[0]) {
        if (p->reduction == KN_SCATTER_ADD) ag_set(c, 0, dy);
        else {
            int in[3] = {dy, idx, ag_zeros_like(c, c->in[2])};
            ag_set(c, 0, ag_op(c, nd ? "ScatterND" : "ScatterElements", in, 3, nd ? NULL : &ax, nd ? 0 : 1));
        }
    }
    if (c->n_in > 2 && c->need[2]) {
        int in[2] = {dy, idx};
        ag_set(c, 2, ag_op(c, nd ? "GatherND" : "GatherElements", in, 2, nd ? NULL : &ax, nd ? 0 : 1));
    }
    return c->err;
}

kn_status *kn_grad_ScatterElements(kn_grad_ctx *c) { return scatter_grad(c, false); }
kn_status *kn_grad_ScatterND(kn_grad_ctx *c) { return scatter_grad(c, true); }
