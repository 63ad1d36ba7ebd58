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

/* ---- accuracy_level 4 (kernels/cpu/nbits.h): 8 columns against one int8 row of A ---- */

/* the int32 dot products of one block of one column with the block of A at qa: 8 partial sums */
static inline __m256i nb_i8_block(const int8_t *qa, const uint8_t *p, int bits, int64_t bs) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    if (bits == 8) {
        /* 16-bit products: weights up to 255 would saturate maddubs' pairs */
        for (int64_t i = 0; i < bs; i += 16) {
            __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + i)));
            __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(qa + i)));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(w, x));
        }
    } else if (bs == 16) {
        __m128i x = _mm_loadl_epi64((const __m128i *)p), m = _mm_set1_epi8(0x0f);
        __m128i w = _mm_unpacklo_epi8(_mm_and_si128(x, m), _mm_and_si128(_mm_srli_epi16(x, 4), m));
        __m128i d = _mm_madd_epi16(_mm_maddubs_epi16(w, _mm_loadu_si128((const __m128i *)qa)), _mm_set1_epi16(1));
        acc = _mm256_zextsi128_si256(d);
    } else {
        const __m128i m = _mm_set1_epi8(0x0f);
        for (int64_t i = 0; i < bs; i += 32) {
            __m128i x = _mm_loadu_si128((const __m128i *)(p + i / 2));
            __m128i lo = _mm_and_si128(x, m), hi = _mm_and_si128(_mm_srli_epi16(x, 4), m);
            __m256i w = _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi));
            __m256i x8 = _mm256_loadu_si256((const __m256i *)(qa + i));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x8), ones));
        }
    }
    return acc;
}

/* lane j of the result: the sum of v[j]'s 8 lanes */
static inline __m256i nb_hsum8x8(const __m256i v[8]) {
    __m256i h01 = _mm256_hadd_epi32(v[0], v[1]), h23 = _mm256_hadd_epi32(v[2], v[3]);
    __m256i h45 = _mm256_hadd_epi32(v[4], v[5]), h67 = _mm256_hadd_epi32(v[6], v[7]);
    __m256i h0123 = _mm256_hadd_epi32(h01, h23), h4567 = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(h0123, h4567, 0x20),
                            _mm256_permute2x128_si256(h0123, h4567, 0x31));
}

/* Lane j holds column j's chain, so each column's float operations are those of the plain loop in
 * the same order (fma per block, the bias, then the zero-point sums): the same bits. */
void kn_nbits_i8_dot8_avx2(const int8_t *qa, const float *sa, const float *asum, const uint8_t *bq, int64_t bstride,
                           const float *sc, const float *off, int64_t nb, int bits, int64_t bs, const float *bias,
                           float *y) {
    int64_t blob = bs * bits / 8;
    __m256 acc = _mm256_setzero_ps(), zs = _mm256_setzero_ps();
    __m256i vnb = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)nb));
    for (int64_t b = 0; b < nb; b++) {
        __m256i v[8];
        for (int j = 0; j < 8; j++) v[j] = nb_i8_block(qa + b * bs, bq + j * bstride + b * blob, bits, bs);
        __m256 d = _mm256_cvtepi32_ps(nb_hsum8x8(v));
        __m256 s = _mm256_i32gather_ps(sc + b, vnb, 4);
        acc = _mm256_fmadd_ps(d, _mm256_mul_ps(_mm256_set1_ps(sa[b]), s), acc);
    }
    if (bias) acc = _mm256_add_ps(acc, _mm256_loadu_ps(bias));
    for (int64_t b = 0; b < nb; b++)
        zs = _mm256_fmadd_ps(_mm256_set1_ps(asum[b]), _mm256_i32gather_ps(off + b, vnb, 4), zs);
    _mm256_storeu_ps(y, _mm256_add_ps(acc, zs));
}
