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

/* The family with nothing to decode: "none", ops without attributes (or whose attributes kiln
 * ignores, like opset 1's consumed_inputs). */
typedef struct kn_params_none {
    char unused;
} kn_params_none;

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

/* kiln SoftmaxGrad, LogSoftmaxGrad (autograd's backward ops): the forward op's axis and 2-D
 * coercion, given as attributes `axis` and `coerce_2d` (not by opset, as a kiln op has none). */
typedef struct kn_params_softmax_grad {
    int64_t axis;
    bool coerce_2d;
} kn_params_softmax_grad;

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
    int64_t k_attr; /* opset 1's k, -1 when the input gives it */
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

/* ---- elementwise, casts, data movement and shapes, resampling, quantisation, random ops,
 * sequences and control flow (decoders in graph/infer_elementwise.c, infer_shape_ops.c,
 * kernels/cpu/sequence.c and kernels/cpu/control_flow.c) ---- */

/* LeakyRelu, Elu, Selu, Celu, Gelu, HardSigmoid, Swish, ThresholdedRelu, Shrink, IsInf: each op's
 * attributes with its defaults. Shrink keeps lambd in alpha and bias in beta; Selu's gamma. */
typedef struct kn_params_act {
    float alpha, beta, gamma;
    bool gelu_tanh;                        /* Gelu approximate = "tanh" */
    bool detect_negative, detect_positive; /* IsInf */
} kn_params_act;

/* Mod (fmod), BitShift (direction), SwiGLU (alpha). */
typedef struct kn_params_binary {
    int64_t fmod;
    bool shift_left;
    float alpha;
} kn_params_binary;

/* Clip: the min/max attributes (Clip-6, or a later model that still gives them). */
typedef struct kn_params_clip {
    bool has_min_max_attr; /* either attribute present */
    float min, max;        /* defaults -FLT_MAX, FLT_MAX */
} kn_params_clip;

/* Cast, CastLike, BitCast. */
typedef struct kn_params_cast {
    bool has_to; /* an INT attribute `to` */
    int64_t to;
    bool saturate;
    int round_mode; /* float8e8m0: 0 up, 1 down, 2 nearest */
} kn_params_cast;

/* A single axis: Flatten (default 1), Concat (1 before opset 4, then 0), Gather, GatherElements
 * (0), OneHot (-1), Compress (has_axis false: flattened). */
typedef struct kn_params_axis {
    bool has_axis;
    int64_t axis;
} kn_params_axis;

/* An axes list attribute: Squeeze and Unsqueeze before opset 13, CenterCropPad. n_axes is the
 * attribute's length (-1 when absent); at most KN_PARAMS_MAX_LIST values are kept. */
#define KN_PARAMS_MAX_RANK 8 /* KN_MAX_DIMS */
#define KN_PARAMS_MAX_LIST (2 * KN_PARAMS_MAX_RANK)
typedef struct kn_params_axes {
    int n_axes;
    int64_t axes[KN_PARAMS_MAX_LIST];
} kn_params_axes;

/* Reshape: the shape attribute before opset 5 (n_shape -1 when absent or longer than
 * KN_MAX_DIMS), allowzero. */
typedef struct kn_params_reshape {
    int n_shape;
    int64_t shape[KN_PARAMS_MAX_RANK];
    bool allowzero;
} kn_params_reshape;

/* Dropout: ratio before opset 12; is_test before 7 (training = is_test == 0); seed. */
typedef struct kn_params_dropout {
    float ratio;
    bool training_attr;
    bool has_seed;
    int64_t seed;
    /* kiln_step_seed (set by kn_graph_set_dropout for training): the mask comes from this seed
     * and the run's counter (kn_exec_ctx.seed), so each step draws a new mask that a fresh
     * session with the same seed draws again */
    bool has_step_seed;
    uint64_t step_seed;
} kn_params_dropout;

/* Shape: start, end (has_end false: the rank). */
typedef struct kn_params_shape {
    int64_t start;
    bool has_end;
    int64_t end;
} kn_params_shape;

/* Constant: each value attribute that is present (pointers into the node's attributes, which
 * live as long as the node). */
typedef struct kn_params_constant {
    const struct kn_tensor *value;        /* `value` with a tensor */
    const struct kn_tensor *sparse_value; /* `sparse_value` with a tensor (densified by the loader) */
    bool has_float, has_int, has_string, has_floats, has_ints, has_strings;
    float value_float;
    int64_t value_int;
    const char *value_string;
    int n_floats, n_ints, n_strings;
    const float *value_floats;
    const int64_t *value_ints;
    char *const *value_strings;
} kn_params_constant;

/* ConstantOfShape: the value tensor (NULL when absent). */
typedef struct kn_params_const_shape {
    const struct kn_tensor *value;
} kn_params_const_shape;

/* EyeLike. */
typedef struct kn_params_eyelike {
    int64_t dtype; /* 0: the input's */
    int64_t k;
} kn_params_eyelike;

/* Transpose: perm (n_perm -1 when absent: reversed axes). */
typedef struct kn_params_transpose {
    int n_perm;
    int64_t perm[KN_PARAMS_MAX_RANK];
} kn_params_transpose;

/* Split: axis, the split attribute before opset 13 (n_split -1 when absent), num_outputs. */
#define KN_PARAMS_MAX_SPLIT 256
typedef struct kn_params_split {
    int64_t axis;
    int n_split;
    int64_t split[KN_PARAMS_MAX_SPLIT];
    bool has_num_outputs;
    int64_t num_outputs;
} kn_params_split;

/* Slice before opset 10: starts, ends, axes attributes (counts -1 when absent). */
typedef struct kn_params_slice {
    int n_starts, n_ends, n_axes;
    int64_t starts[KN_PARAMS_MAX_LIST], ends[KN_PARAMS_MAX_LIST], axes[KN_PARAMS_MAX_LIST];
} kn_params_slice;

/* Pad: mode; before opset 11 the pads (or paddings) and value attributes. */
typedef enum kn_pad_mode { KN_PAD_CONSTANT = 0, KN_PAD_REFLECT = 1, KN_PAD_EDGE = 2, KN_PAD_WRAP = 3 } kn_pad_mode;
typedef struct kn_params_pad {
    kn_pad_mode mode;
    int n_pads;
    int64_t pads[4 * KN_PARAMS_MAX_RANK];
    float value;
} kn_params_pad;

/* GatherND. */
typedef struct kn_params_gathernd {
    int64_t batch_dims;
} kn_params_gathernd;

/* Scatter, ScatterElements (axis), ScatterND; the reduction of the latter two. */
typedef enum kn_scatter_red {
    KN_SCATTER_NONE = 0,
    KN_SCATTER_ADD,
    KN_SCATTER_MUL,
    KN_SCATTER_MAX,
    KN_SCATTER_MIN
} kn_scatter_red;
typedef struct kn_params_scatter {
    int64_t axis;
    kn_scatter_red reduction;
} kn_params_scatter;

/* TensorScatter. */
typedef struct kn_params_tensor_scatter {
    int64_t axis;
    bool circular;
} kn_params_tensor_scatter;

/* Trilu. */
typedef struct kn_params_trilu {
    bool upper;
} kn_params_trilu;

/* DepthToSpace, SpaceToDepth. */
typedef struct kn_params_space_depth {
    bool has_blocksize;
    int64_t blocksize;
    bool crd;
} kn_params_space_depth;

/* ReverseSequence. */
typedef struct kn_params_reverse_seq {
    int64_t batch_axis, time_axis;
} kn_params_reverse_seq;

/* Unique: axis (has_axis false: flattened), sorted. */
typedef struct kn_params_unique {
    bool has_axis;
    int64_t axis;
    bool sorted;
} kn_params_unique;

/* Resize, Upsample. */
typedef enum kn_resize_mode { KN_RESIZE_NEAREST = 0, KN_RESIZE_LINEAR, KN_RESIZE_CUBIC } kn_resize_mode;
typedef enum kn_resize_coord {
    KN_COORD_HALF_PIXEL = 0,
    KN_COORD_HALF_PIXEL_SYM,
    KN_COORD_PYTORCH_HALF_PIXEL,
    KN_COORD_ALIGN_CORNERS,
    KN_COORD_ASYMMETRIC,
    KN_COORD_TF_CROP
} kn_resize_coord;
typedef enum kn_resize_nearest {
    KN_NEAREST_ROUND_FLOOR = 0,
    KN_NEAREST_ROUND_CEIL,
    KN_NEAREST_FLOOR,
    KN_NEAREST_CEIL,
    KN_NEAREST_SIMPLE
} kn_resize_nearest;
typedef enum kn_keep_aspect { KN_KEEP_STRETCH = 0, KN_KEEP_NOT_LARGER, KN_KEEP_NOT_SMALLER } kn_keep_aspect;
typedef struct kn_params_resize {
    kn_resize_mode mode;
    kn_resize_coord coord;
    kn_resize_nearest nearest;
    float cubic_coeff_a;
    bool exclude_outside, antialias;
    float extrapolation_value;
    kn_keep_aspect keep_aspect;
    int n_axes; /* opset 18's axes, -1 when absent */
    int64_t axes[KN_PARAMS_MAX_RANK];
    int n_scales; /* Upsample before opset 9: the scales attribute, -1 when absent */
    float scales[KN_PARAMS_MAX_RANK];
} kn_params_resize;

/* GridSample (mode 0 nearest, 1 linear, 2 cubic; padding 0 zeros, 1 border, 2 reflection),
 * AffineGrid (align_corners only). */
typedef struct kn_params_grid {
    int mode, padding;
    bool align_corners;
} kn_params_grid;

/* RoiAlign. */
typedef struct kn_params_roi_align {
    bool avg;        /* mode avg (else max) */
    bool half_pixel; /* coordinate_transformation_mode half_pixel (else output_half_pixel) */
    float spatial_scale;
    int64_t sampling_ratio;
    int64_t output_height, output_width;
} kn_params_roi_align;

/* NonMaxSuppression. */
typedef struct kn_params_nms {
    bool center_point_box;
} kn_params_nms;

/* QuantizeLinear, DequantizeLinear. */
typedef struct kn_params_quant {
    int64_t axis;
    int64_t block_size;
    bool saturate;
    int64_t output_dtype; /* 0 when absent */
} kn_params_quant;

/* Bernoulli, RandomUniform(Like), RandomNormal(Like): seed (a float attribute; an int one is
 * read as a float), low/high or mean/scale, dtype, shape. */
typedef struct kn_params_random {
    bool has_seed;
    float seed;
    float low, high; /* RandomNormal*: mean, scale */
    bool has_dtype;
    int64_t dtype;
    int n_shape; /* RandomUniform/RandomNormal shape, -1 when absent or too long */
    int64_t shape[KN_PARAMS_MAX_RANK];
} kn_params_random;

/* SequenceEmpty. */
typedef struct kn_params_seq_empty {
    int64_t dtype;
} kn_params_seq_empty;

/* ConcatFromSequence, SplitToSequence. */
typedef struct kn_params_seq_axis {
    int64_t axis;
    bool new_axis; /* ConcatFromSequence */
    bool keepdims; /* SplitToSequence */
} kn_params_seq_axis;

/* Optional: the element type of its `type` attribute (0 when absent or not a tensor type). */
typedef struct kn_params_optional {
    int elem_type;
} kn_params_optional;

/* Subgraphs of If (then/else), Loop, Scan and SequenceMap (body): the graphs owned by the
 * node's attributes; NULL when absent. Scan's attributes beside. */
#define KN_PARAMS_MAX_SCAN 64
typedef struct kn_params_subgraph {
    const struct kn_graph *then_branch, *else_branch, *body;
    int64_t num_scan_inputs;
    int n_in_axes, n_in_dirs, n_out_axes, n_out_dirs; /* -1 when absent; at most 64 kept */
    int64_t in_axes[KN_PARAMS_MAX_SCAN], in_dirs[KN_PARAMS_MAX_SCAN];
    int64_t out_axes[KN_PARAMS_MAX_SCAN], out_dirs[KN_PARAMS_MAX_SCAN];
} kn_params_subgraph;

/* ---- linear algebra, convolution, pooling, sequence models, attention, signal, strings, images,
 * com.microsoft (decoders in graph/infer_linalg.c, infer_misc.c and infer_contrib.c) ---- */

/* Gemm, and com.microsoft FusedGemm: Gemm's attributes plus its activation (KN_GEMM_ACT_*) and
 * activation_alpha/beta/gamma, defaulted as the ONNX op of that name defaults them. */
typedef struct kn_params_gemm {
    bool trans_a, trans_b;
    float alpha, beta;
    int act;
    float act_alpha, act_beta, act_gamma;
} kn_params_gemm;
enum {
    KN_GEMM_ACT_NONE = 0,
    KN_GEMM_ACT_RELU,
    KN_GEMM_ACT_LEAKY_RELU, /* alpha */
    KN_GEMM_ACT_SIGMOID,
    KN_GEMM_ACT_TANH,
    KN_GEMM_ACT_HARD_SIGMOID, /* max(0, min(1, alpha x + beta)) */
    KN_GEMM_ACT_ELU,          /* alpha */
    KN_GEMM_ACT_SELU,         /* alpha, gamma */
    KN_GEMM_ACT_CELU,         /* alpha */
    KN_GEMM_ACT_SOFTPLUS,
    KN_GEMM_ACT_SOFTSIGN,
    KN_GEMM_ACT_THRESHOLDED_RELU,    /* alpha */
    KN_GEMM_ACT_PARAMETRIC_SOFTPLUS, /* alpha log(1 + exp(beta x)) */
    KN_GEMM_ACT_SCALED_TANH,         /* alpha tanh(beta x) */
    KN_GEMM_ACT_CLIP                 /* kiln's: min alpha, max beta (ONNX Runtime's kernel lacks it) */
};

/* The window attributes of the convolutions and pools, as written: each n_ is the attribute's
 * length (-1 when absent), checked against the input's spatial rank per shape by
 * kn_conv_geometry; values past the storage are not kept (such a length matches no rank). */
#define KN_PARAMS_MAX_WIN 8
typedef enum kn_auto_pad {
    KN_AUTO_PAD_NOTSET = 0,
    KN_AUTO_PAD_SAME_UPPER,
    KN_AUTO_PAD_SAME_LOWER,
    KN_AUTO_PAD_VALID
} kn_auto_pad;
typedef struct kn_window_attrs {
    kn_auto_pad auto_pad;
    int n_kernel_shape, n_strides, n_dilations, n_pads;
    int64_t kernel_shape[KN_PARAMS_MAX_WIN], strides[KN_PARAMS_MAX_WIN], dilations[KN_PARAMS_MAX_WIN];
    int64_t pads[2 * KN_PARAMS_MAX_WIN];
} kn_window_attrs;

/* Conv, ConvInteger, QLinearConv, DeformConv (offset_group), ConvTranspose (output_padding,
 * output_shape) and Col2Im (the window only). */
typedef struct kn_params_conv {
    kn_window_attrs win;
    int64_t group;
    int64_t offset_group;
    int n_output_padding, n_output_shape;
    int64_t output_padding[KN_PARAMS_MAX_WIN], output_shape[KN_PARAMS_MAX_WIN];
    /* com.microsoft FusedConv: activation (KN_CONV_ACT_*) and its activation_params */
    int act;
    float act_a, act_b;
} kn_params_conv;
enum {
    KN_CONV_ACT_NONE = 0,
    KN_CONV_ACT_RELU,
    KN_CONV_ACT_CLIP, /* act_a = min, act_b = max */
    KN_CONV_ACT_LEAKY_RELU,
    KN_CONV_ACT_SIGMOID,
    KN_CONV_ACT_TANH,
    KN_CONV_ACT_HARD_SIGMOID,
    KN_CONV_ACT_SILU /* x * sigmoid(x): kiln's own, made by the fusion of Conv + Sigmoid + Mul */
};

/* AveragePool, MaxPool, LpPool, MaxUnpool, GlobalLpPool (p only). */
typedef struct kn_params_pool {
    kn_window_attrs win;
    bool ceil_mode;
    bool count_include_pad;
    bool storage_order_col; /* storage_order = 1: MaxPool indices column-major */
    int64_t p;
} kn_params_pool;

/* Einsum: the equation as written (whitespace dropped only when it is too long to keep). */
#define KN_PARAMS_MAX_EQUATION 512
typedef struct kn_params_einsum {
    char equation[KN_PARAMS_MAX_EQUATION];
} kn_params_einsum;

/* RNN, GRU, LSTM: activations resolved per direction (n_acts = directions x the op's count),
 * with the alpha/beta lists consumed in order. */
typedef enum kn_rnn_direction { KN_RNN_FORWARD = 0, KN_RNN_REVERSE, KN_RNN_BIDIRECTIONAL } kn_rnn_direction;
typedef enum kn_rnn_act_kind {
    KN_RNN_ACT_SIGMOID,
    KN_RNN_ACT_TANH,
    KN_RNN_ACT_RELU,
    KN_RNN_ACT_AFFINE,
    KN_RNN_ACT_LEAKYRELU,
    KN_RNN_ACT_THRESHOLDEDRELU,
    KN_RNN_ACT_SCALEDTANH,
    KN_RNN_ACT_HARDSIGMOID,
    KN_RNN_ACT_ELU,
    KN_RNN_ACT_SOFTSIGN,
    KN_RNN_ACT_SOFTPLUS
} kn_rnn_act_kind;
typedef struct kn_rnn_act {
    kn_rnn_act_kind kind;
    float alpha, beta;
} kn_rnn_act;
#define KN_PARAMS_MAX_RNN_ACTS 6
typedef struct kn_params_rnn {
    int64_t layout;
    kn_rnn_direction direction;
    bool has_hidden_size;
    int64_t hidden_size;
    float clip;               /* 0 when absent (no clipping) */
    bool linear_before_reset; /* GRU */
    bool input_forget;        /* LSTM */
    int n_acts;
    kn_rnn_act acts[KN_PARAMS_MAX_RNN_ACTS];
} kn_params_rnn;

/* ai.onnx Attention and kiln's KnSdpa. */
typedef struct kn_params_attention {
    int64_t q_num_heads, kv_num_heads;
    bool has_scale;
    float scale;
    float softcap;
    bool is_causal;
    int64_t qk_matmul_output_mode;
    int64_t left_window_size, right_window_size;
    int64_t softmax_precision;
} kn_params_attention;

/* RotaryEmbedding. */
typedef struct kn_params_rotary {
    int64_t num_heads;
    int64_t rotary_embedding_dim;
    bool interleaved;
} kn_params_rotary;

/* DFT (axis is an attribute before opset 20, an input after), STFT (onesided, default 1). */
typedef struct kn_params_dft {
    int64_t axis;
    bool inverse;
    bool onesided;
} kn_params_dft;

/* HannWindow, HammingWindow, BlackmanWindow, MelWeightMatrix (output_datatype only). */
typedef struct kn_params_sigwin {
    int output_datatype; /* a kn_dtype, checked */
    bool periodic;
} kn_params_sigwin;

/* StringNormalizer; stopwords point into the node's own attribute (large and variable). */
typedef enum kn_case_change { KN_CASE_NONE = 0, KN_CASE_LOWER = 1, KN_CASE_UPPER = 2 } kn_case_change;
typedef struct kn_params_strnorm {
    kn_case_change case_change_action;
    bool is_case_sensitive;
    int n_stopwords; /* 0 when absent */
    const char *const *stopwords;
} kn_params_strnorm;

/* StringSplit; delimiter points into the node's attribute (NULL when absent). */
typedef struct kn_params_strsplit {
    const char *delimiter;
    int64_t maxsplit;
} kn_params_strsplit;

/* RegexFullMatch; the pattern points into the node's attribute. */
typedef struct kn_params_regex {
    const char *pattern;
} kn_params_regex;

/* TfIdfVectorizer; the pools, counts, indexes and weights point into the node's attributes
 * (n_ is -1 when the attribute is absent). */
typedef enum kn_tfidf_mode { KN_TFIDF_TF = 1, KN_TFIDF_IDF = 2, KN_TFIDF_TFIDF = 3 } kn_tfidf_mode;
typedef struct kn_params_tfidf {
    kn_tfidf_mode mode;
    int64_t min_gram_length, max_gram_length, max_skip_count;
    int n_ngram_counts, n_ngram_indexes, n_pool_int64s, n_pool_strings, n_weights;
    const int64_t *ngram_counts, *ngram_indexes, *pool_int64s;
    const char *const *pool_strings;
    const float *weights;
} kn_params_tfidf;

/* ImageDecoder. */
typedef enum kn_pixel_format { KN_PIXEL_RGB = 0, KN_PIXEL_BGR, KN_PIXEL_GRAY } kn_pixel_format;
typedef struct kn_params_image {
    kn_pixel_format pixel_format;
} kn_params_image;

/* com.microsoft SkipLayerNormalization (epsilon defaults to 1e-12, unlike LayerNormalization). */
typedef struct kn_params_ms_sln {
    float epsilon;
} kn_params_ms_sln;

/* com.microsoft EmbedLayerNormalization. epsilon defaults to 1e-12 as in ORT's schema;
 * mask_index_type (0: none, 1: 1-D, the default) only says whether the mask_index output is typed
 * by shape inference: ORT's kernels write int32 [batch] for a wired output 1 either way. */
typedef struct kn_params_ms_embed_ln {
    float epsilon;
    int mask_index_type;
} kn_params_ms_embed_ln;

/* com.microsoft Attention and MultiHeadAttention. scale 0: 1/sqrt(head size). */
typedef struct kn_params_ms_attention {
    int64_t num_heads;
    float scale;
    float mask_filter_value;
    bool unidirectional;
    bool do_rotary;
    bool past_present_share_buffer;
    int n_qkv_hidden_sizes; /* -1 when absent; only the first 3 values are kept */
    int64_t qkv_hidden_sizes[3];
} kn_params_ms_attention;

/* ---- text-generation ops: ONNX Runtime GenAI folders and int4 exports (decoders in
 * graph/infer_genops.c). SimplifiedLayerNormalization decodes into the layernorm family and
 * SkipSimplifiedLayerNormalization into ms_sln. ---- */

/* com.microsoft RotaryEmbedding (not ai.onnx's: position_ids comes second and is required, a [1]
 * offset or [B,S] ids). is_packed_batching is kept so the kernel can refuse it; scale is decoded
 * and, as by ONNX Runtime's CPU kernel, not applied. */
typedef struct kn_params_ms_rotary {
    int64_t num_heads;
    int64_t rotary_embedding_dim; /* 0: the head size */
    bool interleaved;
    bool is_packed_batching;
    float scale;
} kn_params_ms_rotary;

/* com.microsoft GroupQueryAttention. scale 0: 1/sqrt(head size); softcap 0: none; local_window_size
 * -1: unbounded. quantized_kv: k_quant_type or v_quant_type other than NONE (refused). */
typedef struct kn_params_ms_gqa {
    int64_t num_heads, kv_num_heads;
    int64_t local_window_size;
    float scale, softcap;
    bool do_rotary, rotary_interleaved, smooth_softmax;
    int64_t qk_output;
    bool quantized_kv;
} kn_params_ms_gqa;

/* com.microsoft MatMulNBits: B [N, ceil(K / block_size), block_size * bits / 8] uint8. */
typedef struct kn_params_ms_nbits {
    int64_t K, N, bits, block_size, accuracy_level;
    bool weight_prepacked;
} kn_params_ms_nbits;

/* com.microsoft GatherBlockQuantized. */
typedef struct kn_params_ms_gbq {
    int64_t bits, block_size, quantize_axis, gather_axis;
} kn_params_ms_gbq;

/* ai.onnx.preview.training Adagrad, Momentum and Adam (each reads the attributes it has; the
 * others keep their zero). Momentum's four attributes are required. */
typedef struct kn_params_train_optim {
    float alpha, beta, epsilon, norm_coefficient, norm_coefficient_post, decay_factor;
    bool nesterov;
} kn_params_train_optim;

/* ai.onnx.ml ZipMap: the class labels, strings or int64s (exactly one; pointing into the node's
 * attribute). */
typedef struct kn_params_ml_zipmap {
    int64_t n_labels;
    const char *const *labels_s; /* NULL: int64 labels */
    const int64_t *labels_i;
} kn_params_ml_zipmap;

/* ai.onnx.ml CastMap: cast_to as the output dtype (float, string or int64); SPARSE packs values at
 * their key's index in [0, max_map), DENSE in key order. */
typedef struct kn_params_ml_castmap {
    kn_dtype to;
    bool sparse;
    int64_t max_map;
} kn_params_ml_castmap;

/* ai.onnx.ml DictVectorizer: the vocabulary, strings or int64s (exactly one). */
typedef struct kn_params_ml_dictvec {
    int64_t n_vocab;
    const char *const *vocab_s; /* NULL: int64 vocabulary */
    const int64_t *vocab_i;
} kn_params_ml_dictvec;

#endif
