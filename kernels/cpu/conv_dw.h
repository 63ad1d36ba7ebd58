/* The kernels of the direct grouped / depthwise convolution in conv.c. The row kernel sums a few
 * input rows already padded and split by stride phase, so every tap is a contiguous,
 * unconditional vector load (any stride); the plane kernel does a whole output plane straight
 * from the input for horizontal strides 1 and 2, masking the padding instead of copying. Built
 * once per ISA (conv_dw_avx2.c, conv_dw_avx512.c, from conv_dw_impl.h); the *_scalar forms are
 * the plain loops used without AVX2 and as the tests' reference. */
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

/* Most taps (Cg * KH * KW) a plane kernel takes. */
#define KN_DW_MAX_PLANE_TAPS 64
/* Most (edge block, kw) masks a plane kernel keeps for its row-order walk. */
#define KN_DW_EDGE_MASKS 64

/* One output plane of a direct grouped convolution read straight from the input (no padded
 * copy): the group's Cg input planes of H x Wd at x (plane c at x + c*H*Wd), a KH x KW kernel,
 * horizontal stride sw 1 or 2, any vertical stride, dilations and pads; OH x OW outputs. */
typedef struct kn_conv_dw_plane {
    const float *x;
    int64_t Cg, H, Wd, KH, KW, sh, sw, dh, dw, ph, pw, OH, OW;
} kn_conv_dw_plane;

/* out[oh*OW + ow] = act(bias + sum_{c,kh,kw} wt[(c*KH + kh)*KW + kw] * x_c(ih, iw)), the input 0
 * in the padding (a tap whose row lies in the padding is skipped). The columns whose taps all
 * fall inside the row take plain vector loads; the blocks at either end read with lane masks
 * made once per plane, so nothing outside the input planes is read and nothing outside out's
 * OH*OW values written. */
typedef void (*kn_conv_dw_plane_fn)(float *out, const kn_conv_dw_plane *p, const float *wt, float bias, int act,
                                    float lo, float hi);
void kn_conv_dw_plane_scalar(float *out, const kn_conv_dw_plane *p, const float *wt, float bias, int act, float lo,
                             float hi);
void kn_conv_dw_plane_avx2(float *out, const kn_conv_dw_plane *p, const float *wt, float bias, int act, float lo,
                           float hi);
void kn_conv_dw_plane_avx512(float *out, const kn_conv_dw_plane *p, const float *wt, float bias, int act, float lo,
                             float hi);

/* r[i] = act(r[i] + bias) for i < n (any n): the bias (and FusedConv's Relu / Clip / SiLU) pass
 * after a convolution's GEMM. */
typedef void (*kn_conv_bias_act_fn)(float *r, int64_t n, float bias, int act, float lo, float hi);
void kn_conv_bias_act_scalar(float *r, int64_t n, float bias, int act, float lo, float hi);
void kn_conv_bias_act_avx2(float *r, int64_t n, float bias, int act, float lo, float hi);
void kn_conv_bias_act_avx512(float *r, int64_t n, float bias, int act, float lo, float hi);

#endif
