/* What a gradient rule (kn_grad_<ID>, autograd/grad_*.c) sees and the helpers it builds the
 * backward with. A rule reads its forward node's value ids and params and the gradients of its
 * outputs, emits ordinary nodes, and sets the gradient of each input it differentiates. The
 * helpers keep the first error in the context and then return -1 for every value, so a rule is
 * a straight list of expressions, as in tinygrad's derivative table, and returns c->err. */
#ifndef KN_AUTOGRAD_GRAD_H
#define KN_AUTOGRAD_GRAD_H
#include "graph/ops.h"

typedef struct kn_grad_ctx {
    kn_graph *g;
    int node; /* the forward node (its index; g->nodes moves as nodes are added) */
    int op;
    const void *params; /* the forward node's params (stable: the node owns them) */
    int n_in, n_out;
    const int *in, *out;    /* the forward node's value ids (-1: omitted) */
    const int *dy;          /* per output: the gradient flowing back, -1 if none */
    const bool *need;       /* per input: its gradient is wanted (it leads to a wrt value) */
    int *dx;                /* per input: what the rule computed, -1 if nothing */
    const kn_tensor *types; /* per forward value: statically inferred dtype and shape */
    int n_types;
    int *serial; /* names of new values and nodes, unique over the pass */
    kn_status *err;
} kn_grad_ctx;

#define KN_GRAD_PARAMS(c, family) ((const kn_params_##family *)(c)->params)

/* ---- static facts about forward values (NULL / -1 / KN_UNDEFINED when unknown) ---- */
const kn_tensor *ag_type(const kn_grad_ctx *c, int v);
int ag_rank(const kn_grad_ctx *c, int v);
kn_dtype ag_dtype(const kn_grad_ctx *c, int v);
/* Both shapes fully known and equal. */
bool ag_same_shape(const kn_grad_ctx *c, int a, int b);
/* The rule's error (the first one wins); returns -1 so it can end an expression. */
int ag_fail(kn_grad_ctx *c, kn_status *st);
/* Normalises axis against the rank of forward value v, failing when the rank is unknown. */
int ag_axis(kn_grad_ctx *c, int64_t axis, int v);

/* ---- attributes (copied into the node; names and strings are copied too) ---- */
kn_attr ag_attr_int(const char *name, int64_t v);
kn_attr ag_attr_float(const char *name, float v);
kn_attr ag_attr_str(const char *name, const char *v);
kn_attr ag_attr_ints(const char *name, const int64_t *v, int n);

/* ---- emitting nodes: each returns the new output value, or -1 after an error (then nothing more
 * is emitted). An input of -1 without an error is an omitted optional input. ---- */
/* op in domain ("" ai.onnx at opset 17, "kiln" / "com.microsoft" at 1) with n_outs fresh outputs
 * written to outs; attrs are copied. Returns 0 or -1. */
int ag_node(kn_grad_ctx *c, const char *op, const char *domain, const int *ins, int n_ins, int *outs, int n_outs,
            const kn_attr *attrs, int n_attrs);
int ag_op(kn_grad_ctx *c, const char *op, const int *ins, int n_ins, const kn_attr *attrs, int n_attrs);
int ag_kiln(kn_grad_ctx *c, const char *op, const int *ins, int n_ins, const kn_attr *attrs, int n_attrs);
int ag_op1(kn_grad_ctx *c, const char *op, int a);
int ag_op2(kn_grad_ctx *c, const char *op, int a, int b);
int ag_add(kn_grad_ctx *c, int a, int b);
int ag_sub(kn_grad_ctx *c, int a, int b);
int ag_mul(kn_grad_ctx *c, int a, int b);
int ag_div(kn_grad_ctx *c, int a, int b);
int ag_neg(kn_grad_ctx *c, int a);
int ag_shape(kn_grad_ctx *c, int a);
/* g, shaped like forward value out, reshaped to forward value in's shape (g itself when both
 * are statically known and equal). */
int ag_reshape_to(kn_grad_ctx *c, int g, int in, int out);
/* Transpose(a, perm). */
int ag_transpose(kn_grad_ctx *c, int a, const int64_t *perm, int n);

/* Output k of the forward node, switched on (a fresh value named "<output 0>/<suffix>") when the
 * model left it off, so a backward reads statistics the forward computes anyway (LayerNormalization's
 * Mean and InvStdDev, KnSdpa's logsumexp, Dropout's mask) instead of recomputing them. */
int ag_forward_output(kn_grad_ctx *c, int k, const char *suffix);

/* ---- constants ---- */
/* A new constant value holding t (taken over). */
int ag_const(kn_grad_ctx *c, kn_tensor *t);
/* The scalar x in the dtype of forward value like (CastLike of a float64 when it is unknown). */
int ag_scalar(kn_grad_ctx *c, double x, int like);
/* A 1-D int64 constant. */
int ag_ints(kn_grad_ctx *c, const int64_t *v, int n);
/* Zeros in the shape and dtype of forward value like. */
int ag_zeros_like(kn_grad_ctx *c, int like);

/* ---- broadcasting ---- */
/* g, shaped like forward value out, summed down to forward value in's shape (kiln ReduceSumTo),
 * or g itself when both shapes are statically known and equal. */
int ag_sum_to(kn_grad_ctx *c, int g, int in, int out);

/* Sets the gradient of input i when it is wanted. */
static inline void ag_set(kn_grad_ctx *c, int i, int v) {
    if (i < c->n_in && c->need[i]) c->dx[i] = v;
}

#endif
