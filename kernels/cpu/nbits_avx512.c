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
