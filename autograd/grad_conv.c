/* Gradient rules of the convolution family: Conv (kiln ConvGradX / ConvGradW, the bias by a
 * ReduceSum), MaxPool and AveragePool (kiln MaxPoolGrad / AveragePoolGrad), GlobalAveragePool and
 * GlobalMaxPool (ordinary ops), and BatchNormalization in inference and training mode (kiln
 * BatchNormalizationGrad). The backward ops take the forward node's attributes as they are, so
 * strides, pads, auto_pad, dilations, groups and ceil_mode are resolved by the same geometry code
 * (kn_conv_geometry) that the forward kernel used. */
#include "autograd/grad.h"
#include <string.h>

/* A kiln backward op with the forward node's own attributes. */
static int with_fwd_attrs(kn_grad_ctx *c, const char *op, const int *ins, int n_ins, int *outs, int n_outs) {
    const kn_node *n = &c->g->nodes[c->node]; /* its attrs live apart from g->nodes; ag_node copies them */
    return ag_node(c, op, "kiln", ins, n_ins, outs, n_outs, n->attrs, n->n_attrs);
}

kn_status *kn_grad_Conv(kn_grad_ctx *c) {
    int x = c->in[0], w = c->in[1], dy = c->dy[0], out = -1;
    if (c->need[0]) {
        int in[3] = {dy, w, ag_shape(c, x)};
        if (with_fwd_attrs(c, "ConvGradX", in, 3, &out, 1) == 0) ag_set(c, 0, out);
    }
    if (c->need[1]) {
        int in[3] = {dy, x, ag_shape(c, w)};
        if (with_fwd_attrs(c, "ConvGradW", in, 3, &out, 1) == 0) ag_set(c, 1, out);
    }
    if (c->n_in > 2 && c->in[2] >= 0 && c->need[2]) { /* dy summed over the batch and every position */
        int r = ag_rank(c, x);
        if (r < 3) return kn_error(KN_ERR_UNSUPPORTED, "Conv: the rank of X must be known statically");
        int64_t axes[KN_MAX_DIMS];
        axes[0] = 0;
        for (int i = 2; i < r; i++) axes[i - 1] = i;
        kn_attr kd = ag_attr_int("keepdims", 0);
        int in[2] = {dy, ag_ints(c, axes, r - 1)};
        ag_set(c, 2, ag_op(c, "ReduceSum", in, 2, &kd, 1));
    }
    return c->err;
}

/* Indices (output 1) are integers: only Y's gradient flows. */
kn_status *kn_grad_MaxPool(kn_grad_ctx *c) {
    int in[2] = {c->dy[0], c->in[0]}, out = -1;
    if (c->dy[0] >= 0 && with_fwd_attrs(c, "MaxPoolGrad", in, 2, &out, 1) == 0) ag_set(c, 0, out);
    return c->err;
}

kn_status *kn_grad_AveragePool(kn_grad_ctx *c) {
    int in[2] = {c->dy[0], ag_shape(c, c->in[0])}, out = -1;
    if (with_fwd_attrs(c, "AveragePoolGrad", in, 2, &out, 1) == 0) ag_set(c, 0, out);
    return c->err;
}

/* dy [N, C, 1, ...] expanded over the positions and divided by their count (a constant when the
 * spatial dims are static, else Size(y) / Size(x)). */
kn_status *kn_grad_GlobalAveragePool(kn_grad_ctx *c) {
    int x = c->in[0], y = c->out[0];
    const kn_tensor *t = ag_type(c, x);
    int64_t count = t && t->ndim >= 2 ? 1 : -1;
    for (int i = 2; count > 0 && i < t->ndim; i++) count = t->dims[i] < 0 ? -1 : count * t->dims[i];
    int scale = count > 0
        ? ag_scalar(c, 1.0 / (double)count, x)
        : ag_div(c, ag_op2(c, "CastLike", ag_op1(c, "Size", y), x), ag_op2(c, "CastLike", ag_op1(c, "Size", x), x));
    ag_set(c, 0, ag_mul(c, ag_op2(c, "Expand", c->dy[0], ag_shape(c, x)), scale));
    return c->err;
}

/* dy to the positions equal to the maximum, split evenly between ties (as PyTorch's amax). */
kn_status *kn_grad_GlobalMaxPool(kn_grad_ctx *c) {
    int x = c->in[0], y = c->out[0], r = ag_rank(c, x);
    if (r < 2) return kn_error(KN_ERR_UNSUPPORTED, "GlobalMaxPool: the rank of X must be known statically");
    int64_t axes[KN_MAX_DIMS];
    for (int i = 2; i < r; i++) axes[i - 2] = i;
    int eq = ag_op2(c, "Equal", x, y);
    kn_attr kd = ag_attr_int("keepdims", 1);
    int in_cnt[2] = {ag_op2(c, "CastLike", eq, x), ag_ints(c, axes, r - 2)};
    int cnt = r > 2 ? ag_op(c, "ReduceSum", in_cnt, 2, &kd, 1) : in_cnt[0];
    int in[3] = {eq, ag_div(c, c->dy[0], cnt), ag_scalar(c, 0.0, x)};
    ag_set(c, 0, ag_op(c, "Where", in, 3, NULL, 0));
    return c->err;
}

/* Y's gradient only: the running statistics (outputs 1, 2) and, before opset 14, the saved batch
 * statistics are not differentiated (PyTorch treats them as buffers). Training mode normalises
 * by the batch statistics, so input_mean and input_var get no gradient there; in inference mode
 * their gradient is refused rather than dropped. */
kn_status *kn_grad_BatchNormalization(kn_grad_ctx *c) {
    const kn_params_batchnorm *p = KN_GRAD_PARAMS(c, batchnorm);
    const kn_node *n = &c->g->nodes[c->node];
    bool training = n->opset >= 14 ? p->training_mode_attr : (c->n_out > 1 && c->out[1] >= 0);
    for (int k = 1; k < c->n_out; k++)
        if (c->dy[k] >= 0)
            return kn_error(KN_ERR_UNSUPPORTED, "BatchNormalization: gradients through output %d are not supported", k);
    if (!training && ((c->n_in > 3 && c->need[3]) || (c->n_in > 4 && c->need[4])))
        return kn_error(
            KN_ERR_UNSUPPORTED,
            "BatchNormalization: the gradient of input_mean / input_var in inference mode is not supported");
    kn_attr at[2] = {ag_attr_float("epsilon", p->epsilon), ag_attr_int("training_mode", training)};
    int in[5] = {c->dy[0], c->in[0], c->in[1], c->in[3], c->in[4]}, out[3];
    if (ag_node(c, "BatchNormalizationGrad", "kiln", in, 5, out, 3, at, 2) < 0) return c->err;
    for (int k = 0; k < 3; k++) ag_set(c, k, out[k]);
    return c->err;
}

/* ConvTranspose is the adjoint of Conv in its input: dX = Conv(dy, W) with the same strides, pads,
 * dilations and groups (W [C, M/group, k...] is exactly that Conv's weight), and dW is
 * ConvGradW of that Conv with x as its output gradient. Exact when the pads are explicit (or
 * VALID) and no output_shape is given (output_padding < stride only adds rows that Conv's floor
 * drops); auto_pad SAME and output_shape choose pads from the output size and are refused. */
kn_status *kn_grad_ConvTranspose(kn_grad_ctx *c) {
    const kn_params_conv *p = KN_GRAD_PARAMS(c, conv);
    if (p->win.auto_pad == KN_AUTO_PAD_SAME_UPPER || p->win.auto_pad == KN_AUTO_PAD_SAME_LOWER ||
        p->n_output_shape >= 0)
        return kn_error(KN_ERR_UNSUPPORTED, "ConvTranspose: auto_pad SAME_* or output_shape has no gradient rule");
    const kn_node *n = &c->g->nodes[c->node];
    kn_attr at[16];
    int na = 0;
    for (int i = 0; i < n->n_attrs && na < 16; i++)
        if (strcmp(n->attrs[i].name, "output_padding") && strcmp(n->attrs[i].name, "output_shape"))
            at[na++] = n->attrs[i];
    int x = c->in[0], w = c->in[1], dy = c->dy[0], out = -1;
    if (c->need[0]) {
        int in[2] = {dy, w};
        ag_set(c, 0, ag_op(c, "Conv", in, 2, at, na));
    }
    if (c->need[1]) {
        int in[3] = {x, dy, ag_shape(c, w)};
        if (ag_node(c, "ConvGradW", "kiln", in, 3, &out, 1, at, na) == 0) ag_set(c, 1, out);
    }
    if (c->n_in > 2 && c->in[2] >= 0 && c->need[2]) {
        int r = ag_rank(c, x);
        if (r < 3) return kn_error(KN_ERR_UNSUPPORTED, "ConvTranspose: the rank of X must be known statically");
        int64_t axes[KN_MAX_DIMS];
        axes[0] = 0;
        for (int i = 2; i < r; i++) axes[i - 1] = i;
        kn_attr kd = ag_attr_int("keepdims", 0);
        int in[2] = {dy, ag_ints(c, axes, r - 1)};
        ag_set(c, 2, ag_op(c, "ReduceSum", in, 2, &kd, 1));
    }
    return c->err;
}
