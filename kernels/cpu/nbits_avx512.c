/* MatMulNBits inner loops for AVX-512 (kernels/cpu/nbits_impl.h): 16 weights a vector. */
#include "kernels/cpu/nbits.h"
#include "kernels/cpu/nbits_i8gemm.h"
#include "kernels/cpu/simd_avx512.h"
#include <math.h>
#include <string.h>

/* 16 4-bit values (8 bytes, low nibble first) as floats */
static inline V nb_load4(const uint8_t *p) {
    __m128i x = _mm_loadl_epi64((const __m128i *)p), m = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(x, m), hi = _mm_and_si128(_mm_srli_epi16(x, 4), m);
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi)));
}
static inline V nb_load8(const uint8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
/* 16 bytes widened to 16 int32 lanes; their low and high nibbles as floats */
#define NB_LOADB(p) _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p)))
#define NB_LO(v) _mm512_cvtepi32_ps(_mm512_and_si512((v), _mm512_set1_epi32(15)))
#define NB_HI(v) _mm512_cvtepi32_ps(_mm512_srli_epi32((v), 4))
/* the decode's table of a block's 16 weights, indexed by the low 4 bits of each lane */
#define NB_LUT 1
#define NB_LUT_IOTA _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define NB_LUT_LO(v, t) _mm512_permutexvar_ps((v), (t))
#define NB_LUT_HI(v, t) _mm512_permutexvar_ps(_mm512_srli_epi32((v), 4), (t))
#define NB_LOAD4 nb_load4
#define NB_LOAD8 nb_load8
#define NB_HSUM _mm512_reduce_add_ps
#define NB_FN(name) kn_nbits_##name##_avx512
#define NB_TM 4
#define NB_TN 4
#include "kernels/cpu/nbits_impl.h"

/* accuracy_level 4's quantisation of A (kn_nbits_quant_a, nbits.h), one row 16 values a vector, for
 * the few-row loops and the int8 GEMM (nbits_i8gemm.c) alike: the block's largest |a| by vector max (the
 * scalar fold's result where the block holds no NaN; blocks with a NaN, whose result depends on
 * where it sits, go through kn_nbits_quant_a itself), rint by the conversion's rounding, the
 * truncation to 8 bits of vpmovdb, the sum exact in int32. deint: the tiles' order for 4 bits. */
void kn_nbits_quant_a_avx512(const float *a, int64_t K, int64_t bs, bool deint, int8_t *q, float *sa, float *asum) {
    const __m128i perm = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
    int64_t nb = (K + bs - 1) / bs;
    for (int64_t b = 0; b < nb; b++) {
        int64_t k0 = b * bs, n = K - k0 < bs ? K - k0 : bs;
        __m512 mx = _mm512_setzero_ps();
        __mmask16 nan = 0;
        for (int64_t i = 0; i < n; i += 16) {
            __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
            __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, a + k0 + i));
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            mx = _mm512_max_ps(mx, v);
        }
        if (nan) {
            int8_t t[256];
            kn_nbits_quant_a(a + k0, n, bs, t, sa + b, asum + b);
            if (deint) kn_nbits_i8g_deint8(t, bs, q + k0);
            else memcpy(q + k0, t, (size_t)bs);
            continue;
        }
        float amax = _mm512_reduce_max_ps(mx), scale = amax / 127.0f, inv = amax != 0.0f ? 127.0f / amax : 0.0f;
        __m512 vi = _mm512_set1_ps(inv);
        __m512i sum = _mm512_setzero_si512();
        for (int64_t i = 0; i < bs; i += 16) {
            __mmask16 m = n - i >= 16 ? 0xffff : n <= i ? 0 : (__mmask16)((1u << (n - i)) - 1);
            __m512i x = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + k0 + i), vi));
            __m128i x8 = _mm512_cvtepi32_epi8(x);
            sum = _mm512_add_epi32(sum, _mm512_cvtepi8_epi32(x8));
            if (deint) x8 = _mm_shuffle_epi8(x8, perm);
            _mm_storeu_si128((__m128i *)(q + k0 + i), x8);
        }
        sa[b] = scale;
        asum[b] = scale * (float)_mm512_reduce_add_epi32(sum);
    }
}

/* The prefill's register tile in outer-product form: A transposed (at[k * ldt + m], 16 rows a
 * vector) against a dequantised panel (column j's kl values at p + j * ldp), each weight broadcast
 * once for mv vectors of rows, so the mv x nt accumulators need no horizontal sums and every
 * k costs mv + nt loads for mv * nt fmas. The result is transposed too: ct[j * ldc + m]. Written
 * once and instantiated per (mv, nt) so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void nb_op(const float *at, int64_t ldt, const float *p, int64_t ldp,
                                                        int64_t kl, float *ct, int64_t ldc, bool accumulate,
                                                        const int mv, const int nt) {
    V c[KN_NBITS_OP_MV][KN_NBITS_OP_NT];
#pragma GCC unroll 4
    for (int i = 0; i < mv; i++)
#pragma GCC unroll 6
        for (int j = 0; j < nt; j++) c[i][j] = accumulate ? vload(ct + j * ldc + i * W) : vset1(0.0f);
    for (int64_t k = 0; k < kl; k++) {
        V a[KN_NBITS_OP_MV];
#pragma GCC unroll 4
        for (int i = 0; i < mv; i++) a[i] = vload(at + k * ldt + i * W);
#pragma GCC unroll 6
        for (int j = 0; j < nt; j++) {
            V b = vset1(p[j * ldp + k]);
#pragma GCC unroll 4
            for (int i = 0; i < mv; i++) c[i][j] = vfmadd(a[i], b, c[i][j]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < mv; i++)
#pragma GCC unroll 6
        for (int j = 0; j < nt; j++) vstore(ct + j * ldc + i * W, c[i][j]);
}

#define NB_OP_CASE(mv, nt) \
    case (mv)*8 + (nt): \
        nb_op(at, ldt, p, ldp, kl, ct, ldc, accumulate, mv, nt); \
        break;
#define NB_OP_ROW(mv) \
    NB_OP_CASE(mv, 1) NB_OP_CASE(mv, 2) NB_OP_CASE(mv, 3) NB_OP_CASE(mv, 4) NB_OP_CASE(mv, 5) NB_OP_CASE(mv, 6)

void kn_nbits_optile_avx512(const float *at, int64_t ldt, int mv, const float *p, int64_t ldp, int nt, int64_t kl,
                            float *ct, int64_t ldc, bool accumulate) {
    switch (mv * 8 + nt) {
        NB_OP_ROW(1)
        NB_OP_ROW(2)
        NB_OP_ROW(3)
        NB_OP_ROW(4)
    default: break;
    }
}
