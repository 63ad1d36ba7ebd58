/* Constant folding and the load-time optimisation it is part of. Folding evaluates nodes, so it
 * sits above the graph layer, beside the executor, and computes each node through the executor's
 * kn_node_eval_ahead: the same rule and size limit as the values a plan computes before a run. */
#include "runtime/fold.h"
#include "runtime/executor.h"
#include "graph/passes.h"
#include <stdlib.h>
#include <string.h>

kn_status *kn_graph_fold_constants(kn_graph *g, int *folded) {
    *folded = 0;
    if (g->n_nodes == 0) return NULL;
    uint8_t *keep = malloc((size_t)g->n_nodes);
    const kn_tensor **inb = malloc(sizeof(void *) * (size_t)KN_NODE_MAX_IO);
    kn_tensor **outb = malloc(sizeof(void *) * (size_t)KN_NODE_MAX_IO);
    kn_tensor *outs = calloc((size_t)KN_NODE_MAX_IO, sizeof(kn_tensor));
    kn_scratch scratch = {0};
    kn_status *st = NULL;
    if (!keep || !inb || !outb || !outs) {
        st = KN_OOM(0);
        goto done;
    }
    memset(keep, 1, (size_t)g->n_nodes);
    kn_exec_ctx ctx = {.backend = kn_cpu_backend(), .scratch_alloc = kn_scratch_alloc_impl, .scratch_state = &scratch};
    for (int i = 0; i < g->n_nodes; i++) {
        kn_node *n = &g->nodes[i];
        if (n->op < 0 || n->n_outputs > KN_NODE_MAX_IO || n->n_inputs > KN_NODE_MAX_IO || !kn_op_infer(n->op)) continue;
        bool all_const = true;
        for (int k = 0; k < n->n_inputs && all_const; k++) {
            int v = n->inputs[k];
            inb[k] = v >= 0 ? g->values[v].constant : NULL;
            if (v >= 0 && !g->values[v].constant) all_const = false;
        }
        if (!all_const) continue;
        for (int k = 0; k < n->n_outputs; k++) {
            int v = n->outputs[k];
            memset(&outs[k], 0, sizeof(kn_tensor));
            outs[k].ndim = -1;
            outb[k] = v >= 0 ? &outs[k] : NULL;
        }
        /* shapes first, so an oversized result is never computed; a node that fails here or in
         * its kernel is left for the run, which reports it with the real context */
        kn_status *ist = kn_infer_node(n, inb, n->n_inputs, outb, n->n_outputs);
        if (ist) {
            kn_status_free(ist);
            continue;
        }
        bool done_now = false;
        kn_status *est = kn_node_eval_ahead(&ctx, n, inb, outb, &done_now);
        if (est) kn_status_free(est);
        for (int k = 0; k < n->n_outputs; k++)
            if (outb[k] && !done_now) outb[k]->data = NULL;
        if (est || !done_now) continue;
        for (int k = 0; k < n->n_outputs; k++) {
            int v = n->outputs[k];
            if (v < 0) continue;
            kn_tensor *c = malloc(sizeof *c);
            if (!c) {
                st = KN_OOM(sizeof *c);
                goto done;
            }
            *c = outs[k];
            memset(&outs[k], 0, sizeof(kn_tensor));
            g->values[v].constant = c;
            g->values[v].type.dtype = c->dtype;
            kn_tensor_set_shape(&g->values[v].type, c->ndim, c->dims);
        }
        keep[i] = 0;
        (*folded)++;
    }
    if (*folded) kn_graph_compact(g, keep);
done:
    if (outs)
        for (int k = 0; k < KN_NODE_MAX_IO; k++) kn_tensor_release(&outs[k]);
    kn_scratch_release(&scratch);
    free(keep);
    free(inb);
    free(outb);
    free(outs);
    return st;
}

kn_status *kn_graph_optimize(kn_graph *g, bool fuse) {
    KN_TRY(kn_graph_resolve_ops(g));
    KN_TRY(kn_graph_toposort(g));
    int folded = 0;
    KN_TRY(kn_graph_fold_constants(g, &folded));
    /* the CPU's fusions (a CPU session's graph); the passes decode the params of what they make */
    if (fuse) KN_TRY(kn_graph_fuse_some(g, kn_fusions_for_backend(kn_cpu_backend()), NULL));
    kn_graph_eliminate_dead(g);
    return NULL;
}
