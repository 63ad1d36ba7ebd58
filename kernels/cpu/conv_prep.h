/* Constant float32 Conv / FusedConv weights packed once per model into the GEMM's A panels (one
 * matrix per group), by the CPU backend's whole-graph hook (backend.c) as it does MatMul's: the
 * convolution otherwise repacks every weight on every run, for every image and column chunk. */
#ifndef KN_CONV_PREP_H
#define KN_CONV_PREP_H
#include "graph/ops.h"

/* Sets n->prepared when n is a Conv / MsFusedConv whose weight is a float32 constant the GEMM
 * path takes (not the direct grouped one); leaves n alone otherwise. */
kn_status *kn_conv_prepare(const kn_graph *g, kn_node *n);
/* The same for a given weight w (NULL: nothing to do); tests call it on their own nodes. */
kn_status *kn_conv_prepare_weights(kn_node *n, const kn_tensor *w);

#endif
