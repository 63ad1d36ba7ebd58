/* Fusion for training (autograd/train_fuse.h): the graph's fusion passes with the trainable
 * initializers hidden from them, restricted to passes whose fused ops autograd can differentiate. */
#include "autograd/train_fuse.h"
#include "autograd/optim.h"
#include "graph/ops.h"
#include <stdlib.h>

static bool tf_has_rule(int op) { return kn_op_table[op].grad == KN_GRAD_RULE; }

unsigned kn_train_fusions(void) {
    unsigned m = 0;
    if (tf_has_rule(KN_OP_KnSdpa)) m |= KN_FUSE_ATTENTION;
    if (tf_has_rule(KN_OP_MsGelu) && tf_has_rule(KN_OP_MsBiasGelu) && tf_has_rule(KN_OP_MsFastGelu)) m |= KN_FUSE_GELU;
    if (tf_has_rule(KN_OP_MsSkipLayerNormalization)) m |= KN_FUSE_SKIP_LAYERNORM;
    return m;
}

kn_status *kn_train_fuse(kn_graph *g, const char *trainable, kn_fuse_counts *counts) {
    KN_CHECK(g, KN_ERR_INVALID_ARGUMENT, "kn_train_fuse: graph is NULL");
    const char *pats = trainable && trainable[0] ? trainable : NULL;
    int n = g->n_values;
    kn_tensor **hidden = calloc((size_t)(n ? n : 1), sizeof *hidden);
    if (!hidden) return KN_OOM(sizeof *hidden * (size_t)n);
    /* the trainer's choice of parameters (trainer.c choose_params): float32 tensor initializers
     * matching the patterns */
    for (int v = 0; v < n; v++) {
        kn_value *val = &g->values[v];
        if (!val->constant || val->is_input || val->constant->dtype != KN_F32 || val->constant->kind != KN_KIND_TENSOR)
            continue;
        if (pats && !kn_name_matches(pats, val->name)) continue;
        hidden[v] = val->constant;
        val->constant = NULL;
    }
    kn_status *st = kn_graph_resolve_ops(g);
    if (!st) st = kn_graph_toposort(g);
    if (!st) st = kn_graph_fuse_some(g, kn_train_fusions(), counts);
    /* value ids are stable under the passes (they add values, never renumber them) */
    for (int v = 0; v < n; v++)
        if (hidden[v]) g->values[v].constant = hidden[v];
    free(hidden);
    return st;
}
