/* The ONNX training-preview Gradient op (domain ai.onnx.preview.training) expanded at load time
 * by kiln's autograd: each Gradient node is replaced by the backward graph of its `y` with
 * respect to its `xs`, which kn_autograd appends as ordinary nodes, so no Gradient kernel exists.
 * Loaders above the autograd layer (the CLI) call it after loading a model. */
#ifndef KN_AUTOGRAD_GRADIENT_OP_H
#define KN_AUTOGRAD_GRADIENT_OP_H
#include "graph/ir.h"

/* Replaces every Gradient node of g (top level) by its expansion: output k becomes an Identity
 * of d sum(y) / d xs[k]. xs must name graph inputs or initializers (as kn_autograd requires) and
 * y a value of g; the graph's outputs are unchanged. Returns how many nodes it expanded through
 * *n (may be NULL). A graph without Gradient nodes is left untouched. */
kn_status *kn_expand_gradient_ops(kn_graph *g, int *n);

#endif
