/* MatMulNBits inner loops for AVX-512 (kernels/cpu/nbits_impl.h): 16 weights a vector. */
#include "kernels/cpu/nbits.h"
#include "kernels/cpu/simd_avx512.h"
#include <math.h>

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
#define NB_LOAD4 nb_load4
#define NB_LOAD8 nb_load8
#define NB_HSUM _mm512_reduce_add_ps
#define NB_FN(name) kn_nbits_##name##_avx512
#define NB_TM 4
#define NB_TN 4
#include "kernels/cpu/nbits_impl.h"

/* accuracy_level 4's quantisation of A (kn_nbits_quant_a, nbits.h) 16 values a vector: the same
 * bits, as the maximum, the products and the conversion (round to nearest even, 0x80000000 out of
 * range, truncated to 8 bits) are those of the plain loop; a block holding a NaN goes to the plain
 * loop, whose running maximum treats NaN by its order. */
void kn_nbits_quant_a_avx512(const float *a, int64_t K, int64_t bs, int8_t *qa, float *sa, float *asum) {
    int64_t nb = (K + bs - 1) / bs;
    for (int64_t b = 0; b < nb; b++) {
        int64_t k0 = b * bs, n = K - k0 < bs ? K - k0 : bs;
        __m512 mx = _mm512_setzero_ps();
        __mmask16 nan = 0;
        for (int64_t i = 0; i < n; i += 16) {
            __mmask16 m = (__mmask16)(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
            __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, a + k0 + i));
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            mx = _mm512_max_ps(mx, v);
        }
        if (nan) {
            kn_nbits_quant_a(a + k0, n, bs, qa + k0, sa + b, asum + b);
            continue;
        }
        float amax = _mm512_reduce_max_ps(mx);
        float scale = amax / 127.0f, inv = amax != 0.0f ? 127.0f / amax : 0.0f;
        __m512 vi = _mm512_set1_ps(inv);
        __m512i sum = _mm512_setzero_si512();
        for (int64_t i = 0; i < bs; i += 16) {
            __mmask16 m = (__mmask16)(n - i >= 16 ? 0xffff : n > i ? (1u << (n - i)) - 1 : 0);
            __m128i q =
                _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + k0 + i), vi)));
            _mm_storeu_si128((__m128i *)(qa + k0 + i), q);
            sum = _mm512_add_epi32(sum, _mm512_cvtepi8_epi32(q));
        }
        sa[b] = scale;
        asum[b] = scale * (float)_mm512_reduce_add_epi32(sum);
    }
}
