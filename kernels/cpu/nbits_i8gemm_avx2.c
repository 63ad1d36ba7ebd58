/* The level 4 int8 GEMM's register tile with AVX2 (kernels/cpu/nbits_i8gemm.h): up to 4 rows of A
 * against 8 columns of the panel. 4-bit weights (0..15) times int8 go through maddubs, whose int16
 * pair sums cannot saturate (4 * 15 * 128 < 32768 even with the odd nibbles' pairs added); 8-bit
 * weights would, so they are split into 16-bit even and odd bytes and multiplied by A's bytes
 * sign-extended with madd, exact in int32. */
#include "kernels/cpu/nbits_i8gemm.h"
#include <immintrin.h>
#include <string.h>

enum { MR = KN_NBITS_I8G_MR_AVX2, PW = KN_NBITS_I8G_PW };

static inline __m256i i8g_bcast(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* the plain loop's float32 operations per column in its order (see nbits_i8gemm_avx512.c) */
static inline __attribute__((always_inline)) void i8g_tile(const int8_t *qa, int64_t ldq, const float *sa,
                                                           const float *asum, int64_t lds, int nr,
                                                           const uint32_t *panel, const float *sbp, const float *offp,
                                                           int64_t nb, int bits, int64_t bs, const float *biasp,
                                                           float *y, int64_t ldy, int nc) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1), m8 = _mm256_set1_epi16(0xff);
    __m256 acc[MR];
    for (int r = 0; r < MR; r++) acc[r] = _mm256_setzero_ps();
    int64_t wpb = bs * bits / 32;
    const uint32_t *p = panel;
    for (int64_t b = 0; b < nb; b++) {
        __m256i d[MR];
        for (int r = 0; r < MR; r++) d[r] = _mm256_setzero_si256();
        const int8_t *q = qa + b * bs;
        if (bits == 4) {
            for (int64_t w = 0; w < wpb; w++, p += PW, q += 8) {
                __m256i v = _mm256_loadu_si256((const __m256i *)p);
                __m256i l = _mm256_and_si256(v, m4), h = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                for (int r = 0; r < nr; r++) {
                    __m256i s = _mm256_add_epi16(_mm256_maddubs_epi16(l, i8g_bcast(q + r * ldq)),
                                                 _mm256_maddubs_epi16(h, i8g_bcast(q + r * ldq + 4)));
                    d[r] = _mm256_add_epi32(d[r], _mm256_madd_epi16(s, ones));
                }
            }
        } else {
            for (int64_t w = 0; w < wpb; w++, p += PW, q += 4) {
                __m256i v = _mm256_loadu_si256((const __m256i *)p);
                __m256i we = _mm256_and_si256(v, m8), wo = _mm256_srli_epi16(v, 8);
                for (int r = 0; r < nr; r++) {
                    __m256i a = i8g_bcast(q + r * ldq);
                    __m256i ae = _mm256_srai_epi16(_mm256_slli_epi16(a, 8), 8), ao = _mm256_srai_epi16(a, 8);
                    d[r] =
                        _mm256_add_epi32(d[r], _mm256_add_epi32(_mm256_madd_epi16(we, ae), _mm256_madd_epi16(wo, ao)));
                }
            }
        }
        __m256 s = _mm256_loadu_ps(sbp + b * PW);
        for (int r = 0; r < nr; r++)
            acc[r] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[r]), _mm256_mul_ps(_mm256_set1_ps(sa[r * lds + b]), s), acc[r]);
    }
    __m256 zs[MR];
    for (int r = 0; r < MR; r++) zs[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256 o = _mm256_loadu_ps(offp + b * PW);
        for (int r = 0; r < nr; r++) zs[r] = _mm256_fmadd_ps(_mm256_set1_ps(asum[r * lds + b]), o, zs[r]);
    }
    for (int r = 0; r < nr; r++) {
        if (biasp) acc[r] = _mm256_add_ps(acc[r], _mm256_loadu_ps(biasp));
        __m256 v = _mm256_add_ps(acc[r], zs[r]);
        if (nc >= 8) {
            _mm256_storeu_ps(y + r * ldy, v);
        } else {
            float t[8];
            _mm256_storeu_ps(t, v);
            memcpy(y + r * ldy, t, sizeof(float) * (size_t)nc);
        }
    }
}

void kn_nbits_i8g_tile_avx2(const int8_t *qa, int64_t ldq, const float *sa, const float *asum, int64_t lds, int nr,
                            const uint32_t *panel, const float *sbp, const float *offp, int c0, int64_t nb, int bits,
                            int64_t bs, const float *biasp, float *y, int64_t ldy, int nc) {
    panel += c0;
    sbp += c0;
    offp += c0;
    if (biasp) biasp += c0;
#define I8G_ROWS(n) i8g_tile(qa, ldq, sa, asum, lds, n, panel, sbp, offp, nb, bits, bs, biasp, y, ldy, nc)
    if (nr == 1) I8G_ROWS(1);
    else if (nr == 2) I8G_ROWS(2);
    else if (nr == 3) I8G_ROWS(3);
    else I8G_ROWS(4);
#undef I8G_ROWS
}
