/* Heads appended to a loaded graph (autograd/head.h). */
#include "autograd/head.h"
#include "autograd/grad.h"
#include "autograd/loss.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kn_status *check(const kn_graph *g, const char *what, int v) {
    KN_CHECK(g, KN_ERR_INVALID_ARGUMENT, "%s: graph is NULL", what);
    KN_CHECK(v >= 0 && v < g->n_values, KN_ERR_INVALID_ARGUMENT, "%s: value id %d is not in the graph", what, v);
    return NULL;
}

/* A value named name, or name_K when taken. */
static int new_value(kn_graph *g, const char *name) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", name);
    for (int k = 1; kn_graph_find_value(g, buf) >= 0; k++) snprintf(buf, sizeof buf, "%s_%d", name, k);
    return kn_graph_add_value(g, buf);
}

/* One node with one output named out_name; attrs are copied. */
static kn_status *add_node(kn_graph *g, const char *op, const int *ins, int n_ins, const kn_attr *attrs, int n_attrs,
                           const char *out_name, int *out) {
    *out = new_value(g, out_name);
    if (*out < 0) return KN_OOM(sizeof(kn_value));
    kn_attr *a = n_attrs ? calloc((size_t)n_attrs, sizeof *a) : NULL;
    if (n_attrs && !a) return KN_OOM(sizeof *a);
    for (int i = 0; i < n_attrs; i++) {
        kn_status *st = kn_attr_copy(&a[i], &attrs[i]);
        if (st) {
            for (int j = 0; j < i; j++) kn_attr_clear(&a[j]);
            free(a);
            return st;
        }
    }
    char name[600];
    snprintf(name, sizeof name, "%s/%s", g->values[*out].name, op);
    int id = kn_graph_add_node(g, name, op, "", ins, n_ins, out, 1, a, n_attrs);
    if (id < 0) {
        for (int j = 0; j < n_attrs; j++) kn_attr_clear(&a[j]);
        free(a);
        return KN_OOM(sizeof(kn_node));
    }
    kn_node *n = &g->nodes[id];
    n->op = kn_op_lookup(op, "");
    n->opset = kn_graph_opset(g, "");
    g->values[*out].producer = id;
    KN_CHECK(n->op >= 0, KN_ERR_RUNTIME, "head: kiln has no op %s", op);
    return kn_node_decode_params(n);
}

/* A new initializer holding t (taken). */
static kn_status *add_const(kn_graph *g, const char *name, kn_tensor *t, int *v) {
    KN_CHECK(kn_graph_find_value(g, name) < 0, KN_ERR_INVALID_ARGUMENT, "head: the graph already has a value '%s'",
             name);
    *v = kn_graph_add_value(g, name);
    if (*v < 0) {
        kn_tensor_free(t);
        return KN_OOM(sizeof(kn_value));
    }
    kn_value *val = &g->values[*v];
    val->constant = t;
    val->type.dtype = t->dtype;
    kn_tensor_set_shape(&val->type, t->ndim, t->dims);
    return NULL;
}

kn_status *kn_head_mean_pool(kn_graph *g, int tokens, int mask, int *pooled) {
    *pooled = -1;
    KN_TRY(check(g, "kn_head_mean_pool", tokens));
    KN_CHECK(kn_graph_opset(g, "") >= 15, KN_ERR_UNSUPPORTED,
             "kn_head_mean_pool: the model imports opset %d; mean pooling's CastLike needs 15 or later",
             kn_graph_opset(g, ""));
    return kn_loss_mean_pool(g, tokens, mask, pooled);
}

kn_status *kn_head_cls_pool(kn_graph *g, int tokens, int *pooled) {
    *pooled = -1;
    KN_TRY(check(g, "kn_head_cls_pool", tokens));
    kn_tensor *zero = NULL;
    KN_TRY(kn_tensor_new(KN_I64, 0, NULL, &zero));
    ((int64_t *)zero->data)[0] = 0;
    int idx;
    char name[300];
    snprintf(name, sizeof name, "%s/cls_index", g->values[tokens].name);
    for (int k = 1; kn_graph_find_value(g, name) >= 0; k++)
        snprintf(name, sizeof name, "%s/cls_index_%d", g->values[tokens].name, k);
    KN_TRY(add_const(g, name, zero, &idx));
    int ins[2] = {tokens, idx};
    kn_attr axis = ag_attr_int("axis", 1);
    return add_node(g, "Gather", ins, 2, &axis, 1, "cls_pooled", pooled);
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* U(-bound, bound) from the top 53 bits */
static float uniform(uint64_t *s, double bound) {
    double u = (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0);
    return (float)((2.0 * u - 1.0) * bound);
}

kn_status *kn_head_linear(kn_graph *g, int x, int64_t in_features, int64_t out_features, uint64_t seed,
                          const char *prefix, const char *out_name, int *y) {
    *y = -1;
    KN_TRY(check(g, "kn_head_linear", x));
    KN_CHECK(prefix && out_name && in_features > 0 && out_features > 0, KN_ERR_INVALID_ARGUMENT,
             "kn_head_linear: needs a prefix, an output name and positive sizes (in %lld, out %lld)",
             (long long)in_features, (long long)out_features);
    const kn_tensor *xt = &g->values[x].type;
    KN_CHECK(xt->ndim <= 0 || xt->dims[xt->ndim - 1] < 0 || xt->dims[xt->ndim - 1] == in_features,
             KN_ERR_INVALID_ARGUMENT, "kn_head_linear: '%s' has %lld features, not %lld", g->values[x].name,
             (long long)xt->dims[xt->ndim - 1], (long long)in_features);
    int64_t wd[2] = {out_features, in_features}, bd[1] = {out_features};
    kn_tensor *w = NULL, *b = NULL;
    KN_TRY(kn_tensor_new(KN_F32, 2, wd, &w));
    kn_status *st = kn_tensor_new(KN_F32, 1, bd, &b);
    if (st) {
        kn_tensor_free(w);
        return st;
    }
    /* kaiming_uniform_(a=sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in) =
     * 1/sqrt(fan_in); the bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as torch.nn.Linear */
    double bound = 1.0 / sqrt((double)in_features);
    uint64_t s = seed;
    float *wp = w->data, *bp = b->data;
    for (int64_t i = 0; i < out_features * in_features; i++) wp[i] = uniform(&s, bound);
    for (int64_t i = 0; i < out_features; i++) bp[i] = uniform(&s, bound);
    char wn[300], bn[300];
    snprintf(wn, sizeof wn, "%s.weight", prefix);
    snprintf(bn, sizeof bn, "%s.bias", prefix);
    int wv, bv;
    st = add_const(g, wn, w, &wv);
    if (st) {
        kn_tensor_free(b);
        return st;
    }
    KN_TRY(add_const(g, bn, b, &bv));
    KN_CHECK(kn_graph_find_value(g, out_name) < 0, KN_ERR_INVALID_ARGUMENT,
             "kn_head_linear: the graph already has a value '%s'", out_name);
    if (xt->ndim == 2) {
        int ins[3] = {x, wv, bv};
        kn_attr tb = ag_attr_int("transB", 1);
        return add_node(g, "Gemm", ins, 3, &tb, 1, out_name, y);
    }
    int64_t perm[2] = {1, 0};
    kn_attr pa = ag_attr_ints("perm", perm, 2);
    int wt, mm;
    char nm[600];
    snprintf(nm, sizeof nm, "%s.weight_t", prefix);
    KN_TRY(add_node(g, "Transpose", &wv, 1, &pa, 1, nm, &wt));
    snprintf(nm, sizeof nm, "%s/matmul", prefix);
    int ins[2] = {x, wt};
    KN_TRY(add_node(g, "MatMul", ins, 2, NULL, 0, nm, &mm));
    int ins2[2] = {mm, bv};
    return add_node(g, "Add", ins2, 2, NULL, 0, out_name, y);
}

kn_status *kn_head_output(kn_graph *g, int v) {
    KN_TRY(check(g, "kn_head_output", v));
    if (g->values[v].is_output) return NULL;
    int *outs = realloc(g->outputs, sizeof(int) * (size_t)(g->n_outputs + 1));
    if (!outs) return KN_OOM(sizeof(int));
    g->outputs = outs;
    g->outputs[g->n_outputs++] = v;
    g->values[v].is_output = true;
    return NULL;
}
