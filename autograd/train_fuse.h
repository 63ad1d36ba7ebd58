/* Fusion for training: the fusion passes of graph/fuse.c whose fused ops have gradient rules, run
 * on a model loaded for training (kn_train_load leaves it unfused) before kn_trainer_create, so
 * the training graph runs kiln's fused attention (KnSdpa and its SdpaGrad backward) and fused GELU
 * instead of their decompositions, while every trainable initializer stays a separate value that
 * no pass folds into a fused node's attributes or a derived constant. */
#ifndef KN_AUTOGRAD_TRAIN_FUSE_H
#define KN_AUTOGRAD_TRAIN_FUSE_H
#include "graph/passes.h"

/* The passes (KN_FUSE_* bits) whose every fused op has a gradient rule (grad column RULE). */
unsigned kn_train_fusions(void);

/* Runs kn_train_fusions() on g. trainable: the trainable initializers as kn_trainer_options'
 * patterns (NULL or "": every float32 initializer); while the passes run they see those as
 * opaque values (as the trainer's graph inputs will be), so a scale or a GELU constant that is
 * to be trained is never absorbed into a fused node. counts may be NULL. */
kn_status *kn_train_fuse(kn_graph *g, const char *trainable, kn_fuse_counts *counts);

#endif
