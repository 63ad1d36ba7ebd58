/* Graph passes: op resolution, topological order, dead-node elimination, and the graph each
 * backend runs (kn_model_graph_for). Constant folding evaluates nodes, so it lives with the
 * executor (runtime/fold.c). */
#include "graph/op_helpers.h"
#include "graph/passes.h"
#include "graph/precision.h"
#include "graph/model.h"
#include "graph/ops.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void kn_graph_reindex_producers(kn_graph *g) {
    for (int v = 0; v < g->n_values; v++) g->values[v].producer = -1;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_outputs; k++)
            if (g->nodes[i].outputs[k] >= 0) g->values[g->nodes[i].outputs[k]].producer = i;
}

void kn_graph_compact(kn_graph *g, const uint8_t *keep) {
    int w = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        kn_node *n = &g->nodes[i];
        if (keep[i]) {
            g->nodes[w++] = *n;
            continue;
        }
        kn_node_clear(n);
    }
    g->n_nodes = w;
    kn_graph_reindex_producers(g);
}

kn_status *kn_graph_resolve_ops(kn_graph *g) {
    for (int i = 0; i < g->n_nodes; i++) {
        kn_node *n = &g->nodes[i];
        n->op = kn_op_lookup(n->op_type, n->domain);
        if (n->opset == 0) n->opset = kn_graph_opset(g, n->domain);
        for (int a = 0; a < n->n_attrs; a++)
            if (n->attrs[a].g) KN_TRY(kn_graph_resolve_ops(n->attrs[a].g));
        KN_TRY(kn_node_decode_params(n));
    }
    return NULL;
}

kn_status *kn_graph_check_supported(const kn_graph *g) {
    char list[1024];
    size_t off = 0;
    int missing = 0;
    list[0] = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        /* before anything here, the fusion passes or a shape rule reads them */
        KN_TRY(kn_node_check_params(n));
        bool ok = n->op >= 0 && kn_op_infer(n->op) && kn_cpu_backend()->kernel(kn_cpu_backend(), n->op);
        if (!ok) {
            /* list each (domain, op) once */
            bool seen = false;
            for (int j = 0; j < i && !seen; j++)
                seen = strcmp(g->nodes[j].op_type, n->op_type) == 0 && strcmp(g->nodes[j].domain, n->domain) == 0;
            if (!seen && off < sizeof list)
                off +=
                    (size_t)snprintf(list + off, sizeof list - off, "%s%s (domain '%s', opset %d)", missing ? ", " : "",
                                     n->op_type, n->domain[0] ? n->domain : "ai.onnx", n->opset);
            if (!seen) missing++;
        }
        /* block-quantised weights are initializers: their shapes are checked against the node's
         * K, N, bits and block_size now rather than at the first run */
        if (n->op == KN_OP_MsMatMulNBits) {
            const kn_tensor *w[4] = {NULL, NULL, NULL, NULL};
            bool typed = true;
            for (int k = 1; k < 5 && k < n->n_inputs; k++)
                if (n->inputs[k] >= 0) {
                    w[k - 1] = &g->values[n->inputs[k]].type;
                    typed = typed && w[k - 1]->dtype != KN_UNDEFINED;
                }
            if (typed) KN_TRY(kn_nbits_check(n, w[0], w[1], w[2], w[3]));
        }
        for (int a = 0; a < n->n_attrs; a++)
            if (n->attrs[a].g) KN_TRY(kn_graph_check_supported(n->attrs[a].g));
    }
    if (missing)
        return kn_error(KN_ERR_UNSUPPORTED, "graph '%s': %d unsupported op%s: %s", g->name, missing,
                        missing > 1 ? "s" : "", list);
    return NULL;
}

kn_status *kn_graph_toposort(kn_graph *g) {
    int nn = g->n_nodes;
    if (nn == 0) return NULL;
    int *pending = calloc((size_t)nn, sizeof(int)); /* inputs still to be produced */
    int *order = malloc(sizeof(int) * (size_t)nn);
    int *first = malloc(sizeof(int) * (size_t)(g->n_values ? g->n_values : 1)); /* consumer lists per value */
    int *next = NULL, *who = NULL;
    int n_edges = 0;
    for (int i = 0; i < nn; i++) n_edges += g->nodes[i].n_inputs;
    next = malloc(sizeof(int) * (size_t)(n_edges ? n_edges : 1));
    who = malloc(sizeof(int) * (size_t)(n_edges ? n_edges : 1));
    kn_node *sorted = malloc(sizeof(kn_node) * (size_t)nn);
    kn_status *st = NULL;
    if (!pending || !order || !first || !next || !who || !sorted) {
        st = KN_OOM(0);
        goto done;
    }
    for (int v = 0; v < g->n_values; v++) first[v] = -1;
    /* producers by scanning nodes: a value produced twice is an error */
    for (int v = 0; v < g->n_values; v++) g->values[v].producer = -1;
    for (int i = 0; i < nn; i++)
        for (int k = 0; k < g->nodes[i].n_outputs; k++) {
            int v = g->nodes[i].outputs[k];
            if (v < 0) continue;
            if (g->values[v].producer >= 0 || g->values[v].constant || g->values[v].is_input) {
                st = kn_error(KN_ERR_INVALID_MODEL, "graph '%s': value '%s' is produced more than once (node '%s')",
                              g->name, g->values[v].name, g->nodes[i].name);
                goto done;
            }
            g->values[v].producer = i;
        }
    int e = 0;
    for (int i = 0; i < nn; i++)
        for (int k = 0; k < g->nodes[i].n_inputs; k++) {
            int v = g->nodes[i].inputs[k];
            if (v < 0 || g->values[v].producer < 0) continue;
            pending[i]++;
            who[e] = i;
            next[e] = first[v];
            first[v] = e++;
        }
    int head = 0, tail = 0;
    for (int i = 0; i < nn; i++)
        if (pending[i] == 0) order[tail++] = i;
    while (head < tail) {
        int i = order[head++];
        for (int k = 0; k < g->nodes[i].n_outputs; k++) {
            int v = g->nodes[i].outputs[k];
            if (v < 0) continue;
            for (int ed = first[v]; ed >= 0; ed = next[ed])
                if (--pending[who[ed]] == 0) order[tail++] = who[ed];
            first[v] = -1; /* an output listed twice must not release consumers twice */
        }
    }
    if (tail < nn) {
        int bad = -1;
        for (int i = 0; i < nn && bad < 0; i++)
            if (pending[i] > 0) bad = i;
        st = kn_error(KN_ERR_INVALID_MODEL, "graph '%s' has a cycle: %d nodes never become ready (first: '%s', %s)",
                      g->name, nn - tail, g->nodes[bad].name, g->nodes[bad].op_type);
        goto done;
    }
    for (int i = 0; i < nn; i++) sorted[i] = g->nodes[order[i]];
    memcpy(g->nodes, sorted, sizeof(kn_node) * (size_t)nn);
    kn_graph_reindex_producers(g);
    for (int i = 0; i < nn && !st; i++)
        for (int a = 0; a < g->nodes[i].n_attrs && !st; a++)
            if (g->nodes[i].attrs[a].g) st = kn_graph_toposort(g->nodes[i].attrs[a].g);
done:
    free(pending);
    free(order);
    free(first);
    free(next);
    free(who);
    free(sorted);
    return st;
}

int kn_graph_eliminate_dead(kn_graph *g) {
    if (g->n_nodes == 0) return 0;
    uint8_t *live_v = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
    uint8_t *keep = calloc((size_t)g->n_nodes, 1);
    if (!live_v || !keep) {
        free(live_v);
        free(keep);
        return 0;
    }
    for (int k = 0; k < g->n_outputs; k++)
        if (g->outputs[k] >= 0) live_v[g->outputs[k]] = 1;
    /* nodes are in topological order: one backward sweep marks everything that feeds an output */
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        kn_node *n = &g->nodes[i];
        bool needed = false;
        for (int k = 0; k < n->n_outputs && !needed; k++) needed = n->outputs[k] >= 0 && live_v[n->outputs[k]];
        if (!needed) continue;
        keep[i] = 1;
        for (int k = 0; k < n->n_inputs; k++)
            if (n->inputs[k] >= 0) live_v[n->inputs[k]] = 1;
    }
    int removed = 0;
    for (int i = 0; i < g->n_nodes; i++) removed += !keep[i];
    if (removed) kn_graph_compact(g, keep);
    free(live_v);
    free(keep);
    return removed;
}

kn_status *kn_model_graph_for(kn_model *m, const kn_backend *b, const kn_graph **out) {
    return kn_model_graph_for_lowp(m, b, KN_UNDEFINED, out);
}

kn_status *kn_model_graph_for_lowp(kn_model *m, const kn_backend *b, kn_dtype lowp, const kn_graph **out) {
    *out = m->graph;
    unsigned passes = m->fuse ? kn_fusions_for_backend(b) : 0;
    if (!passes && !(b && b->graph_optimize) && lowp == KN_UNDEFINED) return NULL;
    pthread_mutex_lock(&m->variants_mu);
    kn_status *st = NULL;
    for (int k = 0; k < m->n_variants; k++)
        if (m->variants[k].backend == b && m->variants[k].lowp == lowp) {
            *out = m->variants[k].graph;
            goto done;
        }
    if (m->n_variants == KN_MODEL_MAX_VARIANTS) {
        st = kn_error(KN_ERR_UNSUPPORTED, "model used on more than %d backends and precisions", KN_MODEL_MAX_VARIANTS);
        goto done;
    }
    kn_graph *g = NULL;
    if ((st = kn_graph_clone(m->graph, &g))) goto done;
    /* the copy's params are decoded anew: some point into its own attributes */
    if (!(st = kn_graph_resolve_ops(g)) && !(st = kn_graph_fuse_some(g, passes, NULL))) {
        kn_graph_eliminate_dead(g);
        if (lowp != KN_UNDEFINED) st = kn_graph_lower_precision(g, lowp, b, NULL);
        if (!st && b && b->graph_optimize) st = b->graph_optimize(b, g);
    }
    if (st) {
        kn_graph_free(g);
        goto done;
    }
    m->variants[m->n_variants++] = (kn_model_variant){b, g, lowp};
    *out = g;
done:
    pthread_mutex_unlock(&m->variants_mu);
    return st;
}
