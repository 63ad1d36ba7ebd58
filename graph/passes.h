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
/* Resolve node->op and node->opset for every node, recursively into subgraphs, and decode each
 * node's attributes into its params (kn_node_decode_params); an error names the node. */
kn_status *kn_graph_resolve_ops(kn_graph *g);
/* Error listing every node whose op kiln does not implement (op, domain, opset), or NULL. */
kn_status *kn_graph_check_supported(const kn_graph *g);
/* ---- fusions (graph/fuse.c): each replaces matched subgraphs by one node with a CPU kernel and
 * reports how many it made. A pattern is left alone when an intermediate is a graph output or read
 * outside it, or when the shapes it relies on are not proven. Nodes stay topologically sorted. */
/* Scaled dot-product attention on 4-D Q, K, V (MatMul(Q, K^T) with scalar scales on Q, K or the
 * scores, optional additive mask, Softmax(-1), optional Where(IsNaN) guard, MatMul with V) ->
 * kiln:KnSdpa(Q, K, V[, bias]) with `scale`. */
kn_status *kn_pass_fuse_attention(kn_graph *g, int *n_fused);
/* GELU, Erf form (0.5 * x * (1 + Erf(x / sqrt2))) or Tanh form: com.microsoft BiasGelu(MatMul, b)
 * when x = MatMul(.., W) + b with constant W and 1-D b, else com.microsoft Gelu(x); the Tanh form
 * gives com.microsoft FastGelu(x[, b]). */
kn_status *kn_pass_fuse_bias_gelu(kn_graph *g, int *n_fused);
/* Add(a, b) -> LayerNormalization(axis -1) with constant 1-D scale/bias and a, b of one proven rank
 * (2 or 3) -> com.microsoft SkipLayerNormalization, whose output 3 carries the sum when it is read
 * elsewhere (the residual stream of pre-LN models). */
kn_status *kn_pass_fuse_skip_layernorm(kn_graph *g, int *n_fused);
typedef struct kn_fuse_counts { int attention, gelu, skip_layernorm; } kn_fuse_counts;
/* Every fusion above, in that order. counts may be NULL. */
kn_status *kn_graph_fuse(kn_graph *g, kn_fuse_counts *counts);

/* Constant folding + dead-node elimination + toposort, as a model load does, with the fusions
 * in between when fuse (kn_model_options.fuse, on by default). The fused ops have CPU kernels
 * only; on CUDA they run through the executor's CPU fallback. */
kn_status *kn_graph_optimize(kn_graph *g, bool fuse);

#endif
