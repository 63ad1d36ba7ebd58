/* Reverse-mode automatic differentiation as a graph-to-graph pass: the backward of a loss is
 * appended to the same graph as ordinary nodes (the gradient rules of autograd/grad_*.c emit
 * ops with shape rules and kernels, and the kiln backward ops of graph/ops.def), so one
 * executor, one memory planner and one set of kernels run forward and backward together. */
#ifndef KN_AUTOGRAD_H
#define KN_AUTOGRAD_H
#include "graph/ir.h"

/* Differentiates the value `loss` of g (any shape; seeded with ones, so a non-scalar loss is
 * differentiated as its sum) with respect to the values wrt[0..n_wrt) (graph inputs or
 * initializers of a float dtype). Appends the backward nodes to g and makes each gradient a graph
 * output named "grad:<value name>" with the value's shape and dtype; grads (may be NULL) receives
 * their value ids. Only nodes on a path from a wrt value to the loss are differentiated; a wrt
 * value with no such path gets zeros. A node on such a path whose op has no gradient rule (grad
 * column TODO or NONE in graph/ops.def) fails the pass with an error naming the op, the node and
 * the path of value names from the wrt value to it, and leaves g unusable. The pass resolves ops
 * and decodes params where that was not done (kn_graph_resolve_ops), sorts the nodes
 * topologically, may switch on optional
 * outputs of forward nodes (LayerNormalization's Mean and InvStdDev) and removes nodes that reach
 * no graph output. */
kn_status *kn_autograd(kn_graph *g, int loss, const int *wrt, int n_wrt, int *grads);

#endif
