/* Reduced-precision inference graphs: a float32 graph rewritten so that the ops a device backend
 * computes well in float16/bfloat16 run in that type (kn_session_options.precision). Casts enter
 * the low precision where float32 values meet such an op and leave it where a float32 consumer or
 * a graph output reads the result; float32 initializers are converted once, into constants the
 * rewritten graph owns (so a device backend's weight cache keeps one copy per precision). */
#ifndef KN_GRAPH_PRECISION_H
#define KN_GRAPH_PRECISION_H
#include "graph/ir.h"

struct kn_backend;

/* Rewrites g in place so that float32 compute runs in lp (KN_F16 or KN_BF16) wherever the op is
 * one whose kernels accumulate in float32 (MatMul/Gemm, LayerNormalization, Softmax, reductions)
 * or is exact in any float type (elementwise arithmetic, data movement), and b has a kernel for
 * it. Integer and shape paths are untouched; outputs keep their declared types. *n_lowp (may be
 * NULL) receives the number of nodes moved to lp. */
kn_status *kn_graph_lower_precision(kn_graph *g, kn_dtype lp, const struct kn_backend *b, int *n_lowp);

/* float32 -> lp with saturation: finite values beyond lp's range become its largest finite value
 * (a -FLT_MAX attention-mask fill stays a large negative number, not -inf, so 0 * fill stays 0). */
uint16_t kn_f32_to_lowp_sat(float f, kn_dtype lp);

#endif
