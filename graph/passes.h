/* Graph passes. Each is a separate function over a kn_graph, testable on its own. */
#ifndef KN_PASSES_H
#define KN_PASSES_H
#include "ir.h"

/* Reorder nodes so every node comes after the producers of its inputs (stable for already
 * sorted graphs). A cycle, or an input no one produces, is an error naming the nodes. */
kn_status *kn_graph_toposort(kn_graph *g);
/* Remove nodes whose outputs reach no graph output; returns how many were removed. */
int kn_graph_eliminate_dead(kn_graph *g);
/* Evaluate nodes whose inputs are all constants on the CPU and turn their outputs into
 * constants (skipping random ops, control flow and outputs larger than max_elems elements).
 * Returns the number of nodes folded in *folded. */
kn_status *kn_graph_fold_constants(kn_graph *g, int64_t max_elems, int *folded);
/* Resolve node->op and node->opset for every node, recursively into subgraphs. */
void kn_graph_resolve_ops(kn_graph *g);
/* Error listing every node whose op kiln does not implement (op, domain, opset), or NULL. */
kn_status *kn_graph_check_supported(const kn_graph *g);
/* Constant folding + dead-node elimination + toposort, as a session does at load. */
kn_status *kn_graph_optimize(kn_graph *g);

#endif
