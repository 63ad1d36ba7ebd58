/* Functions shared by shape rules (graph/infer_*.c) and kernels (kernels/cpu, kernels/cuda), so
 * that an output's inferred shape and the values the kernel computes come from the same code.
 * Declared once here instead of in each file that uses them. */
#ifndef KN_OP_HELPERS_H
#define KN_OP_HELPERS_H
#include "graph/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- defined in graph/infer_shape_ops.c ---- */
/* An integer tensor (int32/int64) into vals (at most max), its count into *n; op names errors. */
kn_status *kn_shapeops_read_ints(const kn_tensor *t, int64_t *vals, int64_t max, int64_t *n, const char *op);
/* Slice: per-axis start, step and output extent for the node's inputs. */
kn_status *kn_shapeops_slice_params(const kn_node *node, const kn_tensor *const *in, int n_in, int64_t *starts,
                                    int64_t *steps, int64_t *out_dims);
/* Pad: begin/end pads per axis (2 * rank values). */
kn_status *kn_shapeops_pad_params(const kn_node *node, const kn_tensor *const *in, int n_in, int64_t *pads);
/* Resize/Upsample: scales, output dims and (tf_crop_and_resize) roi per axis. */
kn_status *kn_shapeops_resize_params(const kn_node *node, const kn_tensor *const *in, int n_in, double *scales,
                                     int64_t *out_dims, double *roi);
/* Split: the size of each of n_out pieces along axis. */
kn_status *kn_shapeops_split_sizes(const kn_node *node, const kn_tensor *const *in, int n_in, int n_out, int axis,
                                   int64_t *sizes);

/* ---- defined in graph/infer_reduce.c ---- */
/* Which axes of x a Reduce* node reduces (mask), whether it is the identity (*noop), or whether
 * the axes input is not known yet (*unknown, static inference). */
kn_status *kn_reduce_axes_mask(const kn_node *n, const kn_tensor *x, const kn_tensor *axes_in, bool *mask, bool *noop,
                               bool *unknown);

/* ---- defined in graph/infer_misc.c ---- */
/* How many entries StringNormalizer keeps, and how many pieces StringSplit makes of one string
 * (Python str.split semantics: NULL or empty delim splits on whitespace runs). */
int64_t kn_string_normalizer_kept(const kn_node *n, const kn_tensor *x);
int64_t kn_string_split_count(const char *s, const char *delim, int64_t maxsplit);

/* ---- defined in kernels/cpu: counts that depend on data (shape rules call them at run time) ---- */
kn_status *kn_shapeops_unique_count(const kn_node *node, const kn_tensor *x, int64_t *n_unique); /* shape_ops.c */
kn_status *kn_shapeops_nms_count(const kn_node *node, const kn_tensor *const *in, int n_in,
                                 int64_t *count); /* resize.c */
/* element copies and the reference transpose (shape_ops.c), used by gather.c, resize.c and tests */
kn_status *kn_shapeops_copy_elems(kn_dtype dt, void *dst, const void *src, int64_t n);
kn_status *kn_shapeops_strided_copy(kn_exec_ctx *ctx, kn_dtype dt, void *dst, const void *src, int nd,
                                    const int64_t *dims, const int64_t *sstr, const int64_t *dstr);
kn_status *kn_shapeops_transpose_ref(kn_dtype dt, void *dst, const void *src, int nd, const int64_t *dims,
                                     const int *perm);

/* ---- convolution / pooling window geometry (defined in graph/infer_linalg.c), shared by the
 * shape rules and the Conv / pool kernels, so both agree on output sizes and pads ---- */
struct kn_node;
typedef struct kn_conv_geom {
    int nsp; /* spatial rank */
    int64_t in[KN_MAX_DIMS], out[KN_MAX_DIMS], k[KN_MAX_DIMS];
    int64_t stride[KN_MAX_DIMS], dil[KN_MAX_DIMS], pad_b[KN_MAX_DIMS], pad_e[KN_MAX_DIMS];
} kn_conv_geom;
/* Read strides/dilations/pads/auto_pad of node n for a window of size kernel over the input
 * spatial dims in (either may be -1 = unknown: the output dim is then -1). ceil_mode applies to
 * the pools. Validates the attribute lengths and values; errors name op. */
kn_status *kn_conv_geometry(const struct kn_node *n, const char *op, int nsp, const int64_t *in, const int64_t *kernel,
                            bool ceil_mode, kn_conv_geom *g);
/* ConvTranspose: output spatial size and pads from output_shape / output_padding / auto_pad;
 * outpad receives output_padding. */
kn_status *kn_convt_geometry(const struct kn_node *n, int nsp, const int64_t *in, const int64_t *kernel,
                             kn_conv_geom *g, int64_t *outpad);

/* Einsum equations, parsed once for inference and the kernel. Labels a-z are ids 0-25, A-Z
 * 26-51, and the dims an ellipsis stands for 52.. (right-aligned across operands). */
#define KN_EINSUM_MAX_OPS 16
#define KN_EINSUM_MAX_LABELS (52 + KN_MAX_DIMS)
typedef struct kn_einsum {
    int n_ops, ell_rank;
    int op_ndim[KN_EINSUM_MAX_OPS];
    int op_lab[KN_EINSUM_MAX_OPS][KN_MAX_DIMS]; /* label id of each operand dim */
    int out_ndim;
    int out_lab[KN_MAX_DIMS];
    int64_t lab_dim[KN_EINSUM_MAX_LABELS]; /* size of each label, -1 unknown */
    bool used[KN_EINSUM_MAX_LABELS];
} kn_einsum;
struct kn_tensor;
kn_status *kn_einsum_parse(const char *eq, int n_ops, const struct kn_tensor *const *ops, kn_einsum *e);

/* ---- defined in graph/infer_genops.c ---- */
/* MatMulNBits: B, scales and zero_points against the node's K, N, bits and block_size (shapes,
 * block count, blob size), and g_idx refused; the shape rule and the kernel both run it. */
kn_status *kn_nbits_check(const struct kn_node *n, const struct kn_tensor *b, const struct kn_tensor *sc,
                          const struct kn_tensor *zp, const struct kn_tensor *gidx);

#ifdef __cplusplus
}
#endif
#endif
