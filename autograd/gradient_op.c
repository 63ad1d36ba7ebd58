/* Load-time expansion of ai.onnx.preview.training Gradient nodes through kn_autograd
 * (autograd/gradient_op.h). */
#include "autograd/gradient_op.h"
#include "autograd/autograd.h"
#include "graph/ops.h"
#include "graph/passes.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int go_find(const kn_graph *g) {
    for (int i = 0; i < g->n_nodes; i++)
        if (!strcmp(g->nodes[i].op_type, "Gradient") && !strcmp(g->nodes[i].domain, "ai.onnx.preview.training"))
            return i;
    return -1;
}

static kn_status *go_expand_one(kn_graph *g, int ni) {
    const kn_node *n = &g->nodes[ni];
    const kn_attr *xs = kn_node_attr(n, "xs");
    const char *yname = kn_attr_str(n, "y", NULL);
    KN_CHECK(xs && xs->type == KN_ATTR_STRINGS && xs->n_strings > 0 && yname, KN_ERR_INVALID_MODEL,
             "Gradient node '%s': needs the attributes xs (strings) and y (string)", n->name);
    int nx = xs->n_strings, y = kn_graph_find_value(g, yname);
    KN_CHECK(y >= 0, KN_ERR_INVALID_MODEL, "Gradient node '%s': y '%s' is not a value of the graph", n->name, yname);
    KN_CHECK(n->n_outputs <= nx, KN_ERR_INVALID_MODEL, "Gradient node '%s': %d outputs for %d xs", n->name,
             n->n_outputs, nx);
    int *wrt = malloc(sizeof(int) * (size_t)nx * 2 + sizeof(int) * (size_t)n->n_outputs);
    if (!wrt) return KN_OOM(sizeof(int) * (size_t)nx * 3);
    int *grads = wrt + nx, *outs = grads + nx, n_outs = n->n_outputs;
    memcpy(outs, n->outputs, sizeof(int) * (size_t)n_outs);
    char name[512];
    snprintf(name, sizeof name, "%s", n->name);
    kn_status *st = NULL;
    for (int k = 0; k < nx && !st; k++) {
        wrt[k] = kn_graph_find_value(g, xs->strings[k]);
        if (wrt[k] < 0)
            st = kn_error(KN_ERR_INVALID_MODEL, "Gradient node '%s': xs '%s' is not a value of the graph", name,
                          xs->strings[k]);
    }
    /* the Gradient node goes first: autograd differentiates the rest, and its outputs stay graph
     * outputs without a producer until the Identity nodes below write them */
    if (!st) {
        uint8_t *keep = malloc((size_t)g->n_nodes);
        if (!keep) st = KN_OOM((size_t)g->n_nodes);
        else {
            memset(keep, 1, (size_t)g->n_nodes);
            keep[ni] = 0;
            kn_graph_compact(g, keep);
            free(keep);
            for (int k = 0; k < n_outs; k++)
                if (outs[k] >= 0) g->values[outs[k]].producer = -1;
        }
    }
    int n_out0 = g->n_outputs;
    if (!st) st = kn_autograd(g, y, wrt, nx, grads);
    if (!st) {
        /* the "grad:<x>" outputs autograd added are this node's results, not the model's */
        for (int k = n_out0; k < g->n_outputs; k++) g->values[g->outputs[k]].is_output = false;
        g->n_outputs = n_out0;
        for (int k = 0; k < n_outs && !st; k++) {
            if (outs[k] < 0) continue;
            char nn[600];
            snprintf(nn, sizeof nn, "%s/grad_%d", name, k);
            int id = kn_graph_add_node(g, nn, "Identity", "", &grads[k], 1, &outs[k], 1, NULL, 0);
            if (id < 0) st = KN_OOM(sizeof(kn_node));
            else {
                g->nodes[id].op = KN_OP_Identity;
                g->nodes[id].opset = 13;
            }
        }
    }
    free(wrt);
    if (st) return kn_error_wrap(st, "Gradient node '%s': ", name);
    return kn_graph_toposort(g);
}

kn_status *kn_expand_gradient_ops(kn_graph *g, int *n) {
    KN_CHECK(g, KN_ERR_INVALID_ARGUMENT, "kn_expand_gradient_ops: graph is NULL");
    int done = 0, ni;
    while ((ni = go_find(g)) >= 0) {
        KN_TRY(go_expand_one(g, ni));
        done++;
    }
    if (n) *n = done;
    return NULL;
}
