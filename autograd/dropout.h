/* Switching a model's Dropout nodes to training mode for fine-tuning (`kiln train --dropout`). */
#ifndef KN_AUTOGRAD_DROPOUT_H
#define KN_AUTOGRAD_DROPOUT_H
#include "graph/ir.h"
#include <stdint.h>

/* Sets every Dropout node of g (not of subgraphs) to ratio in [0, 1): inputs ratio and
 * training_mode become new constants (training true when ratio > 0; ratio 0 leaves the node an
 * identity, deterministic), the node is raised to opset 13 where it was older, and it gets the
 * attribute kiln_step_seed = seed + its ordinal among the Dropout nodes. The CPU kernel draws the
 * mask from that seed and the run's counter, so each run (training step) of a session draws a new
 * mask and a fresh session with the same seed draws the same sequence; there is no global
 * generator. The gradient rule reads the mask the forward drew (its output 1). Call before
 * kn_autograd; *n_changed (may be NULL) receives the number of nodes set. */
kn_status *kn_graph_set_dropout(kn_graph *g, double ratio, uint64_t seed, int *n_changed);

#endif
