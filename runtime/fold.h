/* Load-time optimisation: constant folding, and the passes a model load runs around it. */
#ifndef KN_FOLD_H
#define KN_FOLD_H
#include "graph/ir.h"
#include <stdbool.h>

/* Evaluate, on the CPU, the nodes whose inputs are all constants and turn their outputs into
 * constants. Which nodes and how big: kn_node_eval_ahead (random ops, control flow and outputs
 * over KN_EVAL_AHEAD_MAX_ELEMS elements stay). Returns the number of nodes folded in *folded. */
kn_status *kn_graph_fold_constants(kn_graph *g, int *folded);

/* Op resolution with params, toposort, constant folding and dead-node elimination, as a model
 * load does; with the CPU backend's fusions in between when fuse (kiln info --optimized shows the CPU's
 * graph this way). Loading itself does not fuse: sessions do, per backend (kn_model_graph_for). */
kn_status *kn_graph_optimize(kn_graph *g, bool fuse);

#endif
