/* Typed op parameters: each op's attributes decoded once, at load, into the struct of its params
 * family (the params column of graph/ops.def), with the defaults of the node's opset applied and
 * the values checked. Shape rules, CPU and CUDA kernels and gradients all read these structs
 * through KN_PARAMS(node, family); none of them looks an attribute up by name. Each family's
 * decoder sits beside its shape rule (graph/infer_*.c). Axes are kept as written (possibly
 * negative): they are normalised against the input rank, which is known only per run. */
#ifndef KN_PARAMS_H
#define KN_PARAMS_H
#include <stdbool.h>
#include <stdint.h>

/* Families with nothing to decode: "none" (no attributes in any opset) and "legacy" (kernels
 * not yet converted, still reading attributes by name). */
typedef struct kn_params_none { char unused; } kn_params_none;
typedef struct kn_params_legacy { char unused; } kn_params_legacy;

/* Softmax, LogSoftmax, Hardmax. Before opset 13 the input is coerced to 2-D at `axis` (default
 * 1); from 13 the op works along `axis` (default -1). */
typedef struct kn_params_softmax {
    int64_t axis;
    bool coerce_2d;
} kn_params_softmax;

/* ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare. `axes` is an attribute before
 * opset 18 (13 for ReduceSum) and an input after; has_axes_attr says the attribute was given. */
#define KN_PARAMS_MAX_AXES 16
typedef struct kn_params_reduce {
    bool keepdims;
    bool noop_with_empty_axes;
    bool has_axes_attr;
    int n_axes;
    int64_t axes[KN_PARAMS_MAX_AXES];
} kn_params_reduce;

/* ArgMax, ArgMin. */
typedef struct kn_params_arg {
    int64_t axis;
    bool keepdims;
    bool select_last_index;
} kn_params_arg;

/* CumSum, CumProd. */
typedef struct kn_params_cum {
    bool exclusive;
    bool reverse;
} kn_params_cum;

/* TopK: k is an attribute in opset 1, an input after; `largest` and `sorted` from opset 11. */
typedef struct kn_params_topk {
    int64_t axis;
    int64_t k_attr;   /* opset 1's k, -1 when the input gives it */
    bool largest;
    bool sorted;
} kn_params_topk;

/* LayerNormalization, RMSNormalization (and com.microsoft SkipLayerNormalization's epsilon). */
typedef struct kn_params_layernorm {
    int64_t axis;
    float epsilon;
    int64_t stash_type;
} kn_params_layernorm;

/* BatchNormalization: training_mode is an attribute from opset 14; before, training is
 * signalled by the optional outputs. */
typedef struct kn_params_batchnorm {
    float epsilon;
    float momentum;
    bool training_mode_attr;
} kn_params_batchnorm;

/* InstanceNormalization, GroupNormalization (num_groups, stash_type). */
typedef struct kn_params_chan_norm {
    float epsilon;
    int64_t num_groups;
    int64_t stash_type;
} kn_params_chan_norm;

/* LpNormalization. */
typedef struct kn_params_lpnorm {
    int64_t axis;
    int64_t p;
} kn_params_lpnorm;

/* MeanVarianceNormalization: axes default [0, 2, 3]. */
typedef struct kn_params_mvn {
    int n_axes;
    int64_t axes[KN_PARAMS_MAX_AXES];
} kn_params_mvn;

/* LRN. */
typedef struct kn_params_lrn {
    int64_t size;
    float alpha, beta, bias;
} kn_params_lrn;

/* SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss. */
typedef enum kn_reduction { KN_REDUCTION_NONE = 0, KN_REDUCTION_SUM = 1, KN_REDUCTION_MEAN = 2 } kn_reduction;
typedef struct kn_params_loss {
    kn_reduction reduction;
    bool has_ignore_index;
    int64_t ignore_index;
} kn_params_loss;

#endif
