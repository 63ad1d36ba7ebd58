/* Extending a loaded graph for fine-tuning: pooling and a linear classification head appended
 * to a model loaded with kn_train_load (a featureExtraction encoder becomes a sequence or token
 * classifier). The head's weights are new float32 initializers, trainable like the model's,
 * and its result becomes a graph output; kn_trainer_export_onnx then writes the whole graph the
 * trainer trained (the new nodes, initializers and outputs beside the file's), so the exported
 * model is the classifier. Nodes are standard ONNX (Gemm, MatMul, Transpose, Add, Gather and
 * the ops of kn_loss_mean_pool, which needs opset 15 or later for CastLike). */
#ifndef KN_AUTOGRAD_HEAD_H
#define KN_AUTOGRAD_HEAD_H
#include "graph/ir.h"

/* sentence-transformers' mean pooling: tokens [B, T, D] over mask [B, T] (kn_loss_mean_pool). */
kn_status *kn_head_mean_pool(kn_graph *g, int tokens, int mask, int *pooled);
/* The first token's vector (BERT's [CLS]): tokens [B, T, D] -> [B, D]. */
kn_status *kn_head_cls_pool(kn_graph *g, int tokens, int *pooled);

/* torch.nn.Linear(in_features, out_features) on x [..., in_features]: y = x W^T + b with new
 * initializers "<prefix>.weight" [out, in] and "<prefix>.bias" [out], initialised as torch does
 * (kaiming_uniform_(a=sqrt(5)) on the weight and the bias, both U(-1/sqrt(in), 1/sqrt(in))) from
 * kiln's own generator (splitmix64 seeded with seed; the same seed gives the same weights on
 * every machine). The result is the value out_name (Gemm for rank-2 x, else MatMul + Add). */
kn_status *kn_head_linear(kn_graph *g, int x, int64_t in_features, int64_t out_features, uint64_t seed,
                          const char *prefix, const char *out_name, int *y);

/* Makes v a graph output (what inference on the exported model returns). */
kn_status *kn_head_output(kn_graph *g, int v);

#endif
