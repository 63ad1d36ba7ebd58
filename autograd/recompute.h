/* Optional recomputation (activation checkpointing) on a training graph: chosen forward nodes
 * give their activations up after the forward pass, and the backward recomputes them from the
 * values kept at segment boundaries, trading compute for the memory the planner would otherwise
 * hold from the forward into the backward. A graph-to-graph pass, as autograd is: the recomputed
 * nodes are copies placed just before the first backward node that reads them, so the planner
 * sees short lifetimes, and the results are bitwise those of the graph without the pass (the same
 * kernels on the same inputs). */
#ifndef KN_AUTOGRAD_RECOMPUTE_H
#define KN_AUTOGRAD_RECOMPUTE_H
#include "graph/ir.h"

/* g: a forward graph and its backward as kn_autograd appended it (backward nodes are named
 * "grad/..." and "grad:..."), in topological order. spec: "layers" (every forward node inside a
 * numbered layer: a name with a segment such as layer.3, layers_3, h.3, block.3 or blocks.3; in a
 * graph whose names mark no layer, every forward node, with the outputs of the normalisations
 * (LayerNormalization, SkipLayerNormalization, RMS, batch and group norms) kept as the segment
 * boundaries instead), or comma-separated fnmatch patterns over node names. A chosen node's output is recomputed when every forward node
 * that reads it is chosen and in the same layer (its layer's name prefix, or "" without one) and
 * it is no graph output: what crosses a layer boundary is kept, so a layer is recomputed from
 * its kept inputs, never the layers before it. Random ops (Dropout, Random*, Bernoulli,
 * Multinomial) are never recomputed, and a Shape or Size keeps reading the forward's value.
 * Reorders g->nodes: the forward as it was, then the backward as late as possible (each node just
 * before its first reader, which also moves the backward nodes a topological sort hoisted into the
 * forward); no later sort may run. Reports the nodes copied in *n_copies (may be NULL). A spec
 * that chooses no node is an error naming it. */
kn_status *kn_train_recompute(kn_graph *g, const char *spec, int *n_copies);

#endif
