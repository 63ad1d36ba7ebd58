/* accuracy_level 4's loop over 8 columns against up to 4 int8 rows of A (kernels/cpu/nbits.h),
 * written once for nbits_avx2.c and nbits_vnni_avx512.c: the including file defines NB_I8_DOT(acc,
 * w, a), acc plus the 32 products of the unsigned bytes w and the signed ones a summed in 8 int32
 * lanes (a vector `ones` of int16 1s is in scope), and NB_I8_FN, the exported function's name. */

/* lane j of the result: the sum of v[j]'s 8 lanes */
static inline __m256i nb_hsum8x8(const __m256i v[8]) {
    __m256i h01 = _mm256_hadd_epi32(v[0], v[1]), h23 = _mm256_hadd_epi32(v[2], v[3]);
    __m256i h45 = _mm256_hadd_epi32(v[4], v[5]), h67 = _mm256_hadd_epi32(v[6], v[7]);
    __m256i h0123 = _mm256_hadd_epi32(h01, h23), h4567 = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(h0123, h4567, 0x20),
                            _mm256_permute2x128_si256(h0123, h4567, 0x31));
}

/* Block b of 8 columns against nr rows: d[r] gets lane j = the integer dot product of row r's
 * block with column j's. 4-bit weights unpack without shuffles: 16 bytes broadcast to both halves,
 * the high half shifted by 4, masked, against A's row reordered (kn_nbits_i8_deint). */
static inline __attribute__((always_inline)) void nb_i8_block8(const int8_t *qa, int64_t ldq, int nr, const uint8_t *bq,
                                                               int64_t bstride, int bits, int64_t bs,
                                                               __m256i d[KN_NBITS_I8_NR]) {
    const __m256i ones = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(0x0f);
    __m256i v[KN_NBITS_I8_NR][8];
    for (int j = 0; j < 8; j++) {
        const uint8_t *p = bq + j * bstride;
        for (int r = 0; r < KN_NBITS_I8_NR; r++) v[r][j] = _mm256_setzero_si256();
        if (bits == 8) {
            /* 16-bit products: weights up to 255 would saturate maddubs' pairs */
            for (int64_t i = 0; i < bs; i += 16) {
                __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + i)));
                for (int r = 0; r < nr; r++) {
                    __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(qa + r * ldq + i)));
                    v[r][j] = _mm256_add_epi32(v[r][j], _mm256_madd_epi16(w, x));
                }
            }
        } else if (bs == 16) {
            __m128i x = _mm_loadl_epi64((const __m128i *)p);
            __m128i w = _mm_and_si128(_mm_unpacklo_epi64(x, _mm_srli_epi16(x, 4)), _mm_set1_epi8(0x0f));
            for (int r = 0; r < nr; r++) {
                __m128i a = _mm_loadu_si128((const __m128i *)(qa + r * ldq));
                v[r][j] = _mm256_zextsi128_si256(_mm_madd_epi16(_mm_maddubs_epi16(w, a), _mm_set1_epi16(1)));
            }
        } else {
            for (int64_t i = 0; i < bs; i += 32) {
                __m256i x = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p + i / 2)));
                __m256i w = _mm256_and_si256(_mm256_blend_epi32(x, _mm256_srli_epi16(x, 4), 0xf0), m4);
                for (int r = 0; r < nr; r++) {
                    __m256i a = _mm256_loadu_si256((const __m256i *)(qa + r * ldq + i));
                    v[r][j] = NB_I8_DOT(v[r][j], w, a);
                }
            }
        }
    }
    for (int r = 0; r < nr; r++) d[r] = nb_hsum8x8(v[r]);
}

/* Lane j holds column j's chain, so each column's float operations are those of the plain loop in
 * the same order (fma per block, the bias, then the zero-point sums): the same bits. Inlined for
 * each row count, so that one row keeps its 8 accumulators in registers. */
static inline __attribute__((always_inline)) void nb_i8_dot8(const int8_t *qa, int64_t ldq, const float *sa,
                                                             const float *asum, int64_t lds, int nr, const uint8_t *bq,
                                                             int64_t bstride, const float *sc8, const float *off8,
                                                             int64_t nb, int bits, int64_t bs, const float *bias,
                                                             float *y, int64_t ldy) {
    int64_t blob = bs * bits / 8;
    __m256 acc[KN_NBITS_I8_NR], zs[KN_NBITS_I8_NR];
    for (int r = 0; r < KN_NBITS_I8_NR; r++) acc[r] = zs[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256i d[KN_NBITS_I8_NR];
        nb_i8_block8(qa + b * bs, ldq, nr, bq + b * blob, bstride, bits, bs, d);
        __m256 s = _mm256_loadu_ps(sc8 + b * 8);
        for (int r = 0; r < nr; r++)
            acc[r] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[r]), _mm256_mul_ps(_mm256_set1_ps(sa[r * lds + b]), s), acc[r]);
    }
    for (int64_t b = 0; b < nb; b++) {
        __m256 o = _mm256_loadu_ps(off8 + b * 8);
        for (int r = 0; r < nr; r++) zs[r] = _mm256_fmadd_ps(_mm256_set1_ps(asum[r * lds + b]), o, zs[r]);
    }
    for (int r = 0; r < nr; r++) {
        if (bias) acc[r] = _mm256_add_ps(acc[r], _mm256_loadu_ps(bias));
        _mm256_storeu_ps(y + r * ldy, _mm256_add_ps(acc[r], zs[r]));
    }
}

void NB_I8_FN(const int8_t *qa, int64_t ldq, const float *sa, const float *asum, int64_t lds, int nr, const uint8_t *bq,
              int64_t bstride, const float *sc8, const float *off8, int64_t nb, int bits, int64_t bs, const float *bias,
              float *y, int64_t ldy) {
#define NB_I8_ROWS(n) nb_i8_dot8(qa, ldq, sa, asum, lds, n, bq, bstride, sc8, off8, nb, bits, bs, bias, y, ldy)
    if (nr == 1) NB_I8_ROWS(1);
    else if (nr == 2) NB_I8_ROWS(2);
    else if (nr == 3) NB_I8_ROWS(3);
    else NB_I8_ROWS(4);
#undef NB_I8_ROWS
}
