/* Private interface of the elementwise float32 fast paths: the op codes shared by the scalar
 * reference (elementwise.c) and the AVX2 / AVX-512 builds (elementwise_avx2.c, _avx512.c),
 * and the entry points the unit tests use to compare each ISA with the reference. */
#ifndef KN_ELEMENTWISE_SIMD_H
#define KN_ELEMENTWISE_SIMD_H
#include <stdint.h>

enum kn_ew_unop {
    KN_EW_RELU = 0,
    KN_EW_SIGMOID,
    KN_EW_TANH,
    KN_EW_EXP,
    KN_EW_ERF,
    KN_EW_GELU_ERF,
    KN_EW_GELU_TANH,
    KN_EW_UNOP_COUNT
};
enum kn_ew_binop { KN_EW_ADD = 0, KN_EW_SUB, KN_EW_MUL, KN_EW_DIV, KN_EW_BINOP_COUNT };

/* ISA levels for the explicit-level entry points. */
enum kn_ew_level { KN_EW_SCALAR = 0, KN_EW_AVX2 = 1, KN_EW_AVX512 = 2 };

/* y[i] = op(x[i]); y may equal x. */
void kn_ew_unary_f32_avx2(int op, const float *x, float *y, int64_t n);
void kn_ew_unary_f32_avx512(int op, const float *x, float *y, int64_t n);
/* y[i] = a[i*sa] op b[i*sb] with sa, sb in {0, 1}: same-shape runs and scalar broadcast. */
void kn_ew_binary_f32_avx2(int op, const float *a, int64_t sa, const float *b, int64_t sb, float *y, int64_t n);
void kn_ew_binary_f32_avx512(int op, const float *a, int64_t sa, const float *b, int64_t sb, float *y, int64_t n);

/* Defined in elementwise.c. level is clamped to what this CPU supports; the _best variants pick
 * the widest ISA available. */
int kn_ew_best_level(void);
void kn_ew_unary_f32_level(int level, int op, const float *x, float *y, int64_t n);
void kn_ew_binary_f32_level(int level, int op, const float *a, int64_t sa, const float *b, int64_t sb, float *y,
                            int64_t n);

#endif
