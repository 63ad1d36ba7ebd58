/* Losses as graph builders: each appends the nodes of a loss to a kn_graph (a model loaded for
 * training, kn_train_load) on top of values it already has, so the loss runs and is
 * differentiated with the model by one executor. Every loss is the mean over the batch as
 * PyTorch's default reduction='mean' and sentence-transformers' losses compute it, and is
 * written only with ops that have gradient rules (logsumexp as a LogSoftmax element, |x| from
 * Relu), so kn_autograd takes it as it is. Each returns its scalar loss value id in *loss. */
#ifndef KN_AUTOGRAD_LOSS_H
#define KN_AUTOGRAD_LOSS_H
#include "graph/ir.h"

/* A new graph input (labels, scores, masks) with a declared dtype and shape (dims < 0:
 * symbolic). Returns its value id in *v. */
kn_status *kn_loss_add_input(kn_graph *g, const char *name, kn_dtype dtype, int ndim, const int64_t *dims, int *v);

/* torch.nn.functional.cross_entropy(logits, labels, ignore_index=ignore_index): logits [..., C]
 * (flattened to [N, C]), labels int64 [...] (N elements); the mean over labels that are not
 * ignore_index (NaN when every label is ignored, as in PyTorch). */
kn_status *kn_loss_cross_entropy(kn_graph *g, int logits, int labels, int64_t ignore_index, int *loss);
/* mean((pred - target)^2), same shapes. */
kn_status *kn_loss_mse(kn_graph *g, int pred, int target, int *loss);
/* torch binary_cross_entropy_with_logits: mean(max(x, 0) - x * y + log(1 + exp(-|x|))). */
kn_status *kn_loss_bce_with_logits(kn_graph *g, int logits, int target, int *loss);

/* sentence-transformers Pooling(mean): tokens [B, T, D] averaged over the positions where mask
 * [B, T] (int64 or float) is non-zero, the count clamped to 1e-9. Returns [B, D] in *pooled. */
kn_status *kn_loss_mean_pool(kn_graph *g, int tokens, int mask, int *pooled);
/* The two halves of x along axis 0 (the first and second texts of B pairs run as one batch of
 * 2B): *a = x[:B], *b = x[B:]. */
kn_status *kn_loss_split_halves(kn_graph *g, int x, int *a, int *b);
/* CosineSimilarityLoss: MSE of cos(u, v) (rows of [B, D]) against scores [B]. */
kn_status *kn_loss_cosine_similarity(kn_graph *g, int u, int v, int scores, int *loss);
/* MultipleNegativesRankingLoss: cross-entropy over scale * cos_sim(anchors, positives) [B, B]
 * with the diagonal as the labels (the other positives of the batch are the negatives). */
kn_status *kn_loss_multiple_negatives_ranking(kn_graph *g, int anchors, int positives, double scale, int *loss);
/* CoSENTLoss: log(1 + sum over pairs (i, j) with label_i > label_j of
 * exp(scale * (cos_j - cos_i))), cos over the rows of u, v [B, D], labels float [B]. */
kn_status *kn_loss_cosent(kn_graph *g, int u, int v, int labels, double scale, int *loss);

#endif
