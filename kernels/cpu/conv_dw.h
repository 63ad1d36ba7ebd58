/* The row kernel of the direct grouped / depthwise convolution in conv.c: one output row is a
 * weighted sum of a few input rows already padded and split by stride phase, so every tap is a
 * contiguous, unconditional vector load. Built once per ISA (conv_dw_avx2.c, conv_dw_avx512.c,
 * from conv_dw_impl.h); kn_conv_dw_row_scalar is the plain loop used without AVX2. */
#ifndef KN_CONV_DW_H
#define KN_CONV_DW_H
#include <stdint.h>

/* The activation a row kernel applies: none (NaNs pass through), clamp to [lo, hi] (Relu,
 * Clip), or SiLU x * sigmoid(x). */
enum { KN_CONV_DW_NONE = 0, KN_CONV_DW_CLAMP = 1, KN_CONV_DW_SILU = 2 };

/* out[i] = act(bias + sum_t wt[t] * src[t][i]) for i < n; n is a multiple of 16 and every
 * src[t] readable for n values. */
typedef void (*kn_conv_dw_row_fn)(float *out, const float *const *src, const float *wt, int ntaps, int64_t n,
                                  float bias, int act, float lo, float hi);
void kn_conv_dw_row_scalar(float *out, const float *const *src, const float *wt, int ntaps, int64_t n, float bias,
                           int act, float lo, float hi);
void kn_conv_dw_row_avx2(float *out, const float *const *src, const float *wt, int ntaps, int64_t n, float bias,
                         int act, float lo, float hi);
void kn_conv_dw_row_avx512(float *out, const float *const *src, const float *wt, int ntaps, int64_t n, float bias,
                           int act, float lo, float hi);

/* r[i] = act(r[i] + bias) for i < n (any n): the bias (and FusedConv's Relu / Clip / SiLU) pass
 * after a convolution's GEMM. */
typedef void (*kn_conv_bias_act_fn)(float *r, int64_t n, float bias, int act, float lo, float hi);
void kn_conv_bias_act_scalar(float *r, int64_t n, float bias, int act, float lo, float hi);
void kn_conv_bias_act_avx2(float *r, int64_t n, float bias, int act, float lo, float hi);
void kn_conv_bias_act_avx512(float *r, int64_t n, float bias, int act, float lo, float hi);

#endif
