/* kn_graph_set_dropout (autograd/dropout.h): Dropout nodes rewritten to training mode with
 * kiln-owned seeds, for fine-tuning with dropout. */
#include "autograd/dropout.h"
#include "graph/ops.h"
#include "graph/passes.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A new constant scalar value named after the node. */
static kn_status *dropout_const(kn_graph *g, const char *node, const char *what, kn_dtype dt, double v, int *out) {
    char name[512];
    int k = 0;
    do snprintf(name, sizeof name, "%s/%s%s%d", node, what, k ? "_" : "", k);
    while (kn_graph_find_value(g, name) >= 0 && ++k < 1000000);
    kn_tensor *t = NULL;
    KN_TRY(kn_tensor_new(dt, 0, NULL, &t));
    kn_set_f64(t, 0, v);
    int id = kn_graph_add_value(g, name);
    if (id < 0) {
        kn_tensor_free(t);
        return KN_OOM(sizeof(kn_value));
    }
    g->values[id].constant = t;
    g->values[id].type.dtype = dt;
    kn_tensor_set_shape(&g->values[id].type, 0, NULL);
    *out = id;
    return NULL;
}

/* Sets (or adds) the int attribute name of n. */
static kn_status *dropout_set_attr(kn_node *n, const char *name, int64_t v) {
    for (int a = 0; a < n->n_attrs; a++)
        if (!strcmp(n->attrs[a].name, name)) {
            n->attrs[a].type = KN_ATTR_INT;
            n->attrs[a].i = v;
            return NULL;
        }
    kn_attr *na = realloc(n->attrs, sizeof *na * (size_t)(n->n_attrs + 1));
    if (!na) return KN_OOM(sizeof *na * (size_t)(n->n_attrs + 1));
    n->attrs = na;
    kn_attr a = {0};
    a.name = (char *)name;
    a.type = KN_ATTR_INT;
    a.i = v;
    memset(&n->attrs[n->n_attrs], 0, sizeof *na);
    KN_TRY(kn_attr_copy(&n->attrs[n->n_attrs], &a));
    n->n_attrs++;
    return NULL;
}

kn_status *kn_graph_set_dropout(kn_graph *g, double ratio, uint64_t seed, int *n_changed) {
    if (n_changed) *n_changed = 0;
    KN_CHECK(g, KN_ERR_INVALID_ARGUMENT, "set_dropout: no graph");
    KN_CHECK(ratio >= 0 && ratio < 1, KN_ERR_INVALID_ARGUMENT, "set_dropout: ratio %g not in [0, 1)", ratio);
    KN_TRY(kn_graph_resolve_ops(g));
    int count = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        if (g->nodes[i].op != KN_OP_Dropout) continue;
        char *nname = g->nodes[i].name;
        int r = -1, t = -1;
        KN_TRY(dropout_const(g, nname, "dropout_ratio", KN_F32, ratio, &r));
        KN_TRY(dropout_const(g, nname, "dropout_training", KN_BOOL, ratio > 0, &t));
        kn_node *n = &g->nodes[i]; /* values were added; nodes did not move, but read it again */
        if (n->n_inputs < 3) {
            int *ni = realloc(n->inputs, sizeof(int) * 3);
            if (!ni) return KN_OOM(sizeof(int) * 3);
            n->inputs = ni;
            n->n_inputs = 3;
        }
        n->inputs[1] = r;
        n->inputs[2] = t;
        if (n->opset < 13) {
            n->opset = 13;
            if (n->n_outputs > 1 && n->outputs[1] >= 0) g->values[n->outputs[1]].type.dtype = KN_BOOL;
        }
        KN_TRY(dropout_set_attr(n, "kiln_step_seed", (int64_t)(seed + (uint64_t)count)));
        free(n->params);
        n->params = NULL;
        KN_TRY(kn_node_decode_params(n));
        count++;
    }
    if (n_changed) *n_changed = count;
    return NULL;
}
