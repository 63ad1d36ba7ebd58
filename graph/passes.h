/* Graph passes. Each is a separate function over a kn_graph, testable on its own. */
#ifndef KN_PASSES_H
#define KN_PASSES_H
#include "graph/ir.h"

/* Reorder nodes so every node comes after the producers of its inputs (stable for already
 * sorted graphs). A cycle, or an input no one produces, is an error naming the nodes. */
kn_status *kn_graph_toposort(kn_graph *g);
/* Keep the nodes with keep[i] != 0 (in order), freeing the others. */
void kn_graph_compact(kn_graph *g, const uint8_t *keep);
/* Remove nodes whose outputs reach no graph output; returns how many were removed. */
int kn_graph_eliminate_dead(kn_graph *g);
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
kn_status *kn_pass_fuse_attention_lowp(kn_graph *g, int *n_fused); /* also float16/bfloat16 scale constants */
/* GELU, Erf form (0.5 * x * (1 + Erf(x / sqrt2))) or Tanh form: com.microsoft BiasGelu(MatMul, b)
 * when x = MatMul(.., W) + b with constant W and 1-D b, else com.microsoft Gelu(x); the Tanh form
 * gives com.microsoft FastGelu(x[, b]). */
kn_status *kn_pass_fuse_bias_gelu(kn_graph *g, int *n_fused);
/* Add(a, b) -> LayerNormalization(axis -1) with constant 1-D scale/bias and a, b of one proven rank
 * (2 or 3) -> com.microsoft SkipLayerNormalization, whose output 3 carries the sum when it is read
 * elsewhere (the residual stream of pre-LN models). */
kn_status *kn_pass_fuse_skip_layernorm(kn_graph *g, int *n_fused);
/* FastGelu(MatMul(X, W), b?) with constant 2-D W -> com.microsoft GemmFastGelu(X, W, b?): the bias
 * and GELU in the GEMM's epilogue. Runs after the GELU pass, which makes the FastGelu. */
kn_status *kn_pass_fuse_gemm_gelu(kn_graph *g, int *n_fused);
/* Conv (float32 constant W) + Relu / Clip with constant bounds / SiLU (Mul(c, Sigmoid(c))) ->
 * com.microsoft FusedConv. */
kn_status *kn_pass_fuse_conv_act(kn_graph *g, int *n_fused);
/* act(Gemm(A, B const[, C])) or act(Add(MatMul(X rank 2, W const 2-D), b const [N])) with act one of
 * Relu, LeakyRelu, Sigmoid, Tanh, HardSigmoid, Elu, Selu, Celu, Softplus, Softsign,
 * ThresholdedRelu, Clip (constant bounds) -> com.microsoft FusedGemm. */
kn_status *kn_pass_fuse_gemm_act(kn_graph *g, int *n_fused);
/* KnSdpa(Q, Concat(past_k, k), Concat(past_v, v), bias?) with sequence-axis Concats (maybe behind
 * repeat_kv: Unsqueeze(2), Expand, Reshape) read by nothing else but Shape/Size and no graph
 * output -> KnSdpa(Q, k, v, bias, past_k, past_v): a decoder whose presents the caller does not
 * want back (the text generator keeps its own cache) then copies no past per step. CPU only. */
kn_status *kn_pass_split_past_kv(kn_graph *g, int *n_split);
typedef struct kn_fuse_counts {
    int attention, gelu, skip_layernorm;
    int gemm_gelu, conv_act;
    int gemm_act;
    int split_past_kv;
} kn_fuse_counts;
struct kn_backend;
/* The passes, as bits: each is run only for a backend that has kernels for what it makes. */
enum { KN_FUSE_ATTENTION = 1, KN_FUSE_GELU = 2, KN_FUSE_SKIP_LAYERNORM = 4, KN_FUSE_ALL = 63 };
enum { KN_FUSE_GEMM_GELU = 8, KN_FUSE_CONV_ACT = 16 }; /* in KN_FUSE_ALL */
enum { KN_FUSE_GEMM_ACT = 32 };                        /* in KN_FUSE_ALL; device backends only */
enum { KN_FUSE_SPLIT_PAST_KV = 1 << 10 }; /* not in KN_FUSE_ALL: CPU and CUDA sessions (kn_fusions_for_backend) */
/* not in KN_FUSE_ALL, with KN_FUSE_ATTENTION: attention whose scale / NaN-guard constants are
 * float16 or bfloat16 (a model converted to fp16) fuses too; CPU sessions */
enum { KN_FUSE_ATTENTION_LOWP = 1 << 11 };
/* The passes whose fused ops backend b has kernels for (every pass for b == NULL). */
unsigned kn_fusions_for_backend(const struct kn_backend *b);
/* The fusions selected by passes, in the order above; every fusion: kn_graph_fuse. counts may
 * be NULL. */
kn_status *kn_graph_fuse_some(kn_graph *g, unsigned passes, kn_fuse_counts *counts);
kn_status *kn_graph_fuse(kn_graph *g, kn_fuse_counts *counts);

struct kn_model;
/* The graph the sessions of backend b run: m->graph itself when m was loaded without fusion or
 * b has no fused op and no whole-graph hook; else a copy fused for b (kn_fusions_for_backend)
 * and handed to b's graph_optimize hook, made once and kept in m (thread-safe). */
kn_status *kn_model_graph_for(struct kn_model *m, const struct kn_backend *b, const kn_graph **out);
/* The same for a session computing in lowp (KN_F16/KN_BF16; KN_UNDEFINED: the model's types):
 * the fused graph rewritten by kn_graph_lower_precision, one variant per (backend, lowp). */
kn_status *kn_model_graph_for_lowp(struct kn_model *m, const struct kn_backend *b, kn_dtype lowp, const kn_graph **out);

#endif
