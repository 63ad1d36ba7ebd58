/* Loss builders (autograd/loss.h). Nodes are appended at opset 17 (the opset the gradient rules
 * emit) whatever the model imports, so ReduceSum takes its axes as an input and ReduceMean as an
 * attribute in every graph; constants are float64 and cast to the dtype of the value they meet
 * (CastLike, folded at load), so one builder serves float32 models and float64 tests. */
#include "autograd/loss.h"
#include "autograd/grad.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lb {
    kn_graph *g;
    const char *what; /* the loss, for node names and errors */
    kn_status *err;
} lb;

static int lb_fail(lb *b, kn_status *st) {
    if (!b->err) b->err = st;
    else kn_status_free(st);
    return -1;
}

static int lb_new_value(lb *b, const char *hint) {
    char name[256];
    for (int k = b->g->n_values;; k++) {
        snprintf(name, sizeof name, "%s/%s_%d", b->what, hint, k);
        if (kn_graph_find_value(b->g, name) < 0) break;
    }
    int v = kn_graph_add_value(b->g, name);
    return v < 0 ? lb_fail(b, KN_OOM(sizeof(kn_value))) : v;
}

/* One node with one output; -1 after the first error. */
static int lb_node(lb *b, const char *op, const int *ins, int n_ins, const kn_attr *attrs, int n_attrs) {
    if (b->err) return -1;
    for (int k = 0; k < n_ins; k++)
        if (ins[k] < 0)
            return lb_fail(b, kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s: an input is missing", b->what, op));
    int out = lb_new_value(b, op);
    if (out < 0) return -1;
    kn_attr *a = n_attrs ? calloc((size_t)n_attrs, sizeof *a) : NULL;
    if (n_attrs && !a) return lb_fail(b, KN_OOM(sizeof *a * (size_t)n_attrs));
    for (int i = 0; i < n_attrs; i++) {
        kn_status *st = kn_attr_copy(&a[i], &attrs[i]);
        if (st) {
            for (int j = 0; j < i; j++) kn_attr_clear(&a[j]);
            free(a);
            return lb_fail(b, st);
        }
    }
    char name[256];
    snprintf(name, sizeof name, "%s/%s_%d", b->what, op, b->g->n_nodes);
    int id = kn_graph_add_node(b->g, name, op, "", ins, n_ins, &out, 1, a, n_attrs);
    if (id < 0) {
        for (int j = 0; j < n_attrs; j++) kn_attr_clear(&a[j]);
        free(a);
        return lb_fail(b, KN_OOM(sizeof(kn_node)));
    }
    kn_node *n = &b->g->nodes[id];
    n->op = kn_op_lookup(op, "");
    n->opset = 17;
    b->g->values[out].producer = id;
    if (n->op < 0) return lb_fail(b, kn_error(KN_ERR_RUNTIME, "%s: kiln has no op %s", b->what, op));
    kn_status *st = kn_node_decode_params(n);
    return st ? lb_fail(b, st) : out;
}

static int lb1(lb *b, const char *op, int a) { return lb_node(b, op, &a, 1, NULL, 0); }
static int lb2(lb *b, const char *op, int a, int c) {
    int in[2] = {a, c};
    return lb_node(b, op, in, 2, NULL, 0);
}

static int lb_const(lb *b, kn_tensor *t) {
    if (b->err) {
        kn_tensor_free(t);
        return -1;
    }
    int v = lb_new_value(b, "const");
    if (v < 0) {
        kn_tensor_free(t);
        return -1;
    }
    b->g->values[v].constant = t;
    b->g->values[v].type.dtype = t->dtype;
    kn_tensor_set_shape(&b->g->values[v].type, t->ndim, t->dims);
    return v;
}

static int lb_ints(lb *b, const int64_t *vals, int n) {
    kn_tensor *t = NULL;
    int64_t d[1] = {n};
    kn_status *st = kn_tensor_new(KN_I64, 1, d, &t);
    if (st) return lb_fail(b, st);
    memcpy(t->data, vals, sizeof(int64_t) * (size_t)n);
    return lb_const(b, t);
}

static int lb_int_scalar(lb *b, int64_t x) {
    kn_tensor *t = NULL;
    kn_status *st = kn_tensor_new(KN_I64, 0, NULL, &t);
    if (st) return lb_fail(b, st);
    ((int64_t *)t->data)[0] = x;
    return lb_const(b, t);
}

/* x (shape [] or [1]) in the dtype of value like. */
static int lb_scalar(lb *b, double x, int like, bool one_d) {
    kn_tensor *t = NULL;
    int64_t d[1] = {1};
    kn_status *st = kn_tensor_new(KN_F64, one_d ? 1 : 0, d, &t);
    if (st) return lb_fail(b, st);
    ((double *)t->data)[0] = x;
    return lb2(b, "CastLike", lb_const(b, t), like);
}

static int lb_reduce(lb *b, const char *op, int x, const int64_t *axes, int n_axes, int keepdims) {
    kn_attr k = ag_attr_int("keepdims", keepdims);
    if (!strcmp(op, "ReduceMean")) {
        kn_attr at[2] = {k, ag_attr_ints("axes", axes, n_axes)};
        return lb_node(b, op, &x, 1, at, n_axes ? 2 : 1);
    }
    int in[2] = {x, n_axes ? lb_ints(b, axes, n_axes) : -1};
    return lb_node(b, op, in, n_axes ? 2 : 1, &k, 1);
}

static int lb_unsqueeze(lb *b, int x, int64_t axis) { return lb2(b, "Unsqueeze", x, lb_ints(b, &axis, 1)); }

/* The dimension `axis` of x as an int64 scalar (Shape, Gather), computed ahead of the run. */
static int lb_dim(lb *b, int x, int64_t axis) { return lb2(b, "Gather", lb1(b, "Shape", x), lb_int_scalar(b, axis)); }

/* 0 .. n-1 for the int64 scalar value n. */
static int lb_range(lb *b, int n) {
    int in[3] = {lb_int_scalar(b, 0), n, lb_int_scalar(b, 1)};
    return lb_node(b, "Range", in, 3, NULL, 0);
}

/* Names the result "loss" (or "loss_<k>" when the graph has one) and reports the first error. */
static kn_status *lb_finish(lb *b, int v, int *loss) {
    *loss = -1;
    if (b->err) return kn_error_wrap(b->err, "%s: ", b->what);
    int out = lb_new_value(b, "out");
    if (out < 0) return kn_error_wrap(b->err, "%s: ", b->what);
    char name[64] = "loss";
    for (int k = 1; kn_graph_find_value(b->g, name) >= 0; k++) snprintf(name, sizeof name, "loss_%d", k);
    free(b->g->values[out].name);
    b->g->values[out].name = strdup(name);
    if (!b->g->values[out].name) return KN_OOM(strlen(name));
    int in = v;
    char nn[96];
    snprintf(nn, sizeof nn, "%s/Identity", b->what);
    int id = kn_graph_add_node(b->g, nn, "Identity", "", &in, 1, &out, 1, NULL, 0);
    if (id < 0) return KN_OOM(sizeof(kn_node));
    b->g->nodes[id].op = kn_op_lookup("Identity", "");
    b->g->nodes[id].opset = 17;
    b->g->values[out].producer = id;
    KN_TRY(kn_node_decode_params(&b->g->nodes[id]));
    *loss = out;
    return NULL;
}

static kn_status *lb_check(const kn_graph *g, const char *what, const int *vals, int n) {
    KN_CHECK(g, KN_ERR_INVALID_ARGUMENT, "%s: graph is NULL", what);
    for (int k = 0; k < n; k++)
        KN_CHECK(vals[k] >= 0 && vals[k] < g->n_values, KN_ERR_INVALID_ARGUMENT, "%s: value id %d is not in the graph",
                 what, vals[k]);
    return NULL;
}

kn_status *kn_loss_add_input(kn_graph *g, const char *name, kn_dtype dtype, int ndim, const int64_t *dims, int *v) {
    *v = -1;
    KN_CHECK(g && name, KN_ERR_INVALID_ARGUMENT, "kn_loss_add_input: graph or name is NULL");
    KN_CHECK(kn_graph_find_value(g, name) < 0, KN_ERR_INVALID_ARGUMENT, "kn_loss_add_input: the graph has a value '%s'",
             name);
    int id = kn_graph_add_value(g, name);
    int *ins = realloc(g->inputs, sizeof(int) * (size_t)(g->n_inputs + 1));
    if (id < 0 || !ins) return KN_OOM(sizeof(int));
    g->inputs = ins;
    g->inputs[g->n_inputs++] = id;
    g->values[id].is_input = true;
    g->values[id].type.dtype = dtype;
    kn_tensor_set_shape(&g->values[id].type, ndim, dims);
    *v = id;
    return NULL;
}

/* Log-probabilities [N, C] picked at labels [N] by a one-hot product (Range == label), so only
 * LogSoftmax, Mul and ReduceSum are differentiated; an ignored label matches no class. */
kn_status *kn_loss_cross_entropy(kn_graph *g, int logits, int labels, int64_t ignore_index, int *loss) {
    int chk[2] = {logits, labels};
    KN_TRY(lb_check(g, "cross_entropy", chk, 2));
    lb b = {g, "cross_entropy", NULL};
    int64_t m1 = -1, last = -1;
    /* Flatten keeps the rank static, which autograd's dtype and shape sweep needs (a Reshape to a
     * computed shape would leave the rank, and so the dtype, of everything after it unknown) */
    int x = lb_node(&b, "Flatten", &logits, 1, (kn_attr[]){ag_attr_int("axis", -1)}, 1);
    int c = lb_dim(&b, x, 1);
    int y = lb2(&b, "Reshape", labels, lb_ints(&b, &m1, 1));
    int lsm = lb_node(&b, "LogSoftmax", &x, 1, (kn_attr[]){ag_attr_int("axis", -1)}, 1);
    int onehot = lb2(&b, "Equal", lb_unsqueeze(&b, y, 1), lb_range(&b, c));
    int picked = lb_reduce(&b, "ReduceSum", lb2(&b, "Mul", lsm, lb2(&b, "CastLike", onehot, lsm)), &last, 1, 0);
    int keep = lb1(&b, "Not", lb2(&b, "Equal", y, lb_int_scalar(&b, ignore_index)));
    int keepf = lb2(&b, "CastLike", keep, lsm);
    int num = lb_reduce(&b, "ReduceSum", lb2(&b, "Mul", picked, keepf), NULL, 0, 0);
    int den = lb_reduce(&b, "ReduceSum", keepf, NULL, 0, 0);
    return lb_finish(&b, lb1(&b, "Neg", lb2(&b, "Div", num, den)), loss);
}

kn_status *kn_loss_mse(kn_graph *g, int pred, int target, int *loss) {
    int chk[2] = {pred, target};
    KN_TRY(lb_check(g, "mse", chk, 2));
    lb b = {g, "mse", NULL};
    int d = lb2(&b, "Sub", pred, target);
    return lb_finish(&b, lb_reduce(&b, "ReduceMean", lb2(&b, "Mul", d, d), NULL, 0, 0), loss);
}

/* -|x| = x - 2 relu(x), so the stable form needs no Abs rule. */
kn_status *kn_loss_bce_with_logits(kn_graph *g, int logits, int target, int *loss) {
    int chk[2] = {logits, target};
    KN_TRY(lb_check(g, "bce_with_logits", chk, 2));
    lb b = {g, "bce_with_logits", NULL};
    int x = logits, r = lb1(&b, "Relu", x);
    int neg_abs = lb2(&b, "Sub", x, lb2(&b, "Add", r, r));
    int softplus = lb1(&b, "Log", lb2(&b, "Add", lb_scalar(&b, 1.0, x, false), lb1(&b, "Exp", neg_abs)));
    int t = lb2(&b, "Add", lb2(&b, "Sub", r, lb2(&b, "Mul", x, lb2(&b, "CastLike", target, x))), softplus);
    return lb_finish(&b, lb_reduce(&b, "ReduceMean", t, NULL, 0, 0), loss);
}

kn_status *kn_loss_mean_pool(kn_graph *g, int tokens, int mask, int *pooled) {
    int chk[2] = {tokens, mask};
    *pooled = -1;
    KN_TRY(lb_check(g, "mean_pool", chk, 2));
    lb b = {g, "mean_pool", NULL};
    int64_t ax1 = 1;
    int mf = lb_unsqueeze(&b, lb2(&b, "CastLike", mask, tokens), 2);
    int sum = lb_reduce(&b, "ReduceSum", lb2(&b, "Mul", tokens, mf), &ax1, 1, 0);
    int cnt = lb2(&b, "Max", lb_reduce(&b, "ReduceSum", mf, &ax1, 1, 0), lb_scalar(&b, 1e-9, tokens, false));
    int out = lb2(&b, "Div", sum, cnt);
    if (b.err) return kn_error_wrap(b.err, "mean_pool: ");
    *pooled = out;
    return NULL;
}

kn_status *kn_loss_split_halves(kn_graph *g, int x, int *a, int *b) {
    *a = *b = -1;
    KN_TRY(lb_check(g, "split_halves", &x, 1));
    lb bl = {g, "split_halves", NULL};
    int outs[2] = {lb_new_value(&bl, "a"), lb_new_value(&bl, "b")};
    if (bl.err) return bl.err;
    kn_attr *at = calloc(1, sizeof *at);
    if (!at) return KN_OOM(sizeof *at);
    KN_TRY(kn_attr_copy(at, &(kn_attr){.name = "axis", .type = KN_ATTR_INT, .i = 0}));
    char name[64];
    snprintf(name, sizeof name, "split_halves/Split_%d", g->n_nodes);
    int id = kn_graph_add_node(g, name, "Split", "", &x, 1, outs, 2, at, 1);
    if (id < 0) return KN_OOM(sizeof(kn_node));
    kn_node *n = &g->nodes[id];
    n->op = kn_op_lookup("Split", "");
    n->opset = 17; /* no split input: equal pieces, one per output */
    g->values[outs[0]].producer = g->values[outs[1]].producer = id;
    KN_TRY(kn_node_decode_params(n));
    *a = outs[0];
    *b = outs[1];
    return NULL;
}

/* Rows of x [B, D] over their L2 norms. */
static int lb_normalize(lb *b, int x) {
    int64_t last = -1;
    return lb2(b, "Div", x, lb1(b, "Sqrt", lb_reduce(b, "ReduceSum", lb2(b, "Mul", x, x), &last, 1, 1)));
}

/* cos(u_i, v_i) for rows of [B, D]: [B]. */
static int lb_cos(lb *b, int u, int v) {
    int64_t last = -1;
    return lb_reduce(b, "ReduceSum", lb2(b, "Mul", lb_normalize(b, u), lb_normalize(b, v)), &last, 1, 0);
}

kn_status *kn_loss_cosine_similarity(kn_graph *g, int u, int v, int scores, int *loss) {
    int chk[3] = {u, v, scores};
    KN_TRY(lb_check(g, "cosine_similarity", chk, 3));
    lb b = {g, "cosine_similarity", NULL};
    int64_t m1 = -1;
    int cs = lb_cos(&b, u, v);
    int d = lb2(&b, "Sub", cs, lb2(&b, "CastLike", lb2(&b, "Reshape", scores, lb_ints(&b, &m1, 1)), cs));
    return lb_finish(&b, lb_reduce(&b, "ReduceMean", lb2(&b, "Mul", d, d), NULL, 0, 0), loss);
}

kn_status *kn_loss_multiple_negatives_ranking(kn_graph *g, int anchors, int positives, double scale, int *loss) {
    int chk[2] = {anchors, positives};
    KN_TRY(lb_check(g, "multiple_negatives_ranking", chk, 2));
    lb b = {g, "multiple_negatives_ranking", NULL};
    int64_t last = -1, perm[2] = {1, 0};
    int pt = lb_node(&b, "Transpose", (int[]){lb_normalize(&b, positives)}, 1,
                     (kn_attr[]){ag_attr_ints("perm", perm, 2)}, 1);
    int s = lb2(&b, "Mul", lb2(&b, "MatMul", lb_normalize(&b, anchors), pt), lb_scalar(&b, scale, anchors, false));
    int lsm = lb_node(&b, "LogSoftmax", &s, 1, (kn_attr[]){ag_attr_int("axis", -1)}, 1);
    int r = lb_range(&b, lb_dim(&b, anchors, 0));
    int eye = lb2(&b, "CastLike", lb2(&b, "Equal", lb_unsqueeze(&b, r, 1), lb_unsqueeze(&b, r, 0)), lsm);
    int diag = lb_reduce(&b, "ReduceSum", lb2(&b, "Mul", lsm, eye), &last, 1, 0);
    return lb_finish(&b, lb1(&b, "Neg", lb_reduce(&b, "ReduceMean", diag, NULL, 0, 0)), loss);
}

/* logsumexp over [0, pairs...] is -LogSoftmax(...)[0] because the first element is 0: no
 * ReduceMax is differentiated. Pairs that do not count are pushed to -1e12, as
 * sentence-transformers subtracts 1e12 from them. */
kn_status *kn_loss_cosent(kn_graph *g, int u, int v, int labels, double scale, int *loss) {
    int chk[3] = {u, v, labels};
    KN_TRY(lb_check(g, "cosent", chk, 3));
    lb b = {g, "cosent", NULL};
    int64_t m1 = -1;
    int s = lb2(&b, "Mul", lb_cos(&b, u, v), lb_scalar(&b, scale, u, false));
    int diff = lb2(&b, "Sub", lb_unsqueeze(&b, s, 1), lb_unsqueeze(&b, s, 0));
    int l = lb2(&b, "Reshape", labels, lb_ints(&b, &m1, 1));
    int counts = lb2(&b, "Less", lb_unsqueeze(&b, l, 1), lb_unsqueeze(&b, l, 0));
    int kept = lb_node(&b, "Where", (int[]){counts, diff, lb_scalar(&b, -1e12, s, false)}, 3, NULL, 0);
    int flat = lb2(&b, "Reshape", kept, lb_ints(&b, &m1, 1));
    int cat =
        lb_node(&b, "Concat", (int[]){lb_scalar(&b, 0.0, s, true), flat}, 2, (kn_attr[]){ag_attr_int("axis", 0)}, 1);
    int lsm = lb_node(&b, "LogSoftmax", &cat, 1, (kn_attr[]){ag_attr_int("axis", 0)}, 1);
    return lb_finish(&b, lb1(&b, "Neg", lb2(&b, "Gather", lsm, lb_int_scalar(&b, 0))), loss);
}
