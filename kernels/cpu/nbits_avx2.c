/* MatMulNBits inner loops for AVX2+FMA (kernels/cpu/nbits_impl.h): 8 weights a vector. */
#include "kernels/cpu/nbits.h"
#include "kernels/cpu/simd_avx2.h"
#include <math.h>

/* 8 4-bit values (4 bytes, low nibble first) as floats */
static inline V nb_load4(const uint8_t *p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    __m128i x = _mm_cvtsi32_si128(v), m = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(x, m), hi = _mm_and_si128(_mm_srli_epi16(x, 4), m);
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi)));
}
static inline V nb_load8(const uint8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
static inline float nb_hsum(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
/* 8 bytes widened to 8 int32 lanes; their low and high nibbles as floats */
#define NB_LOADB(p) _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p)))
#define NB_LO(v) _mm256_cvtepi32_ps(_mm256_and_si256((v), _mm256_set1_epi32(15)))
#define NB_HI(v) _mm256_cvtepi32_ps(_mm256_srli_epi32((v), 4))
#define NB_LOAD4 nb_load4
#define NB_LOAD8 nb_load8
#define NB_HSUM nb_hsum
#define NB_FN(name) kn_nbits_##name##_avx2
#define NB_TM 2
#define NB_TN 4
#include "kernels/cpu/nbits_impl.h"

/* accuracy_level 4's 8-column loop (kernels/cpu/nbits_i8_impl.h): 32 products of unsigned 4-bit
 * weights and signed int8 values summed as pairs in 16 bits, then in 32 */
#define NB_I8_DOT(acc, w, a) _mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((w), (a)), ones))
#define NB_I8_FN kn_nbits_i8_dot8_avx2
#include "kernels/cpu/nbits_i8_impl.h"
