/* MatMulNBits accuracy_level 4 with AVX-512 VNNI, picked at run time where the CPU has it
 * (kernels/cpu/nbits.c): the 8-column loop (kernels/cpu/nbits_i8_impl.h) on 256-bit vectors, where
 * vpdpbusd adds the 4 products of each int32 lane in one instruction where AVX2 takes three, and
 * the decode loop over B packed at load per 16 columns on 512-bit ones. Bit for bit the plain
 * loop's results, the integer sums being exact. */
#pragma GCC target("avx512vnni")
#include "kernels/cpu/nbits.h"
#include <immintrin.h>

#define NB_I8_DOT(acc, w, a) ((void)ones, _mm256_dpbusd_epi32((acc), (w), (a)))
#define NB_I8_FN kn_nbits_i8_dot8_vnni
#include "kernels/cpu/nbits_i8_impl.h"

/* ---- the decode loop over B packed per 16 columns (kn_nbits_i8_pack16, nbits.h) ---- */

/* software prefetch distance (bytes) in the packed stream: the loop does too little per line for
 * the hardware prefetcher alone to keep it fed (the load stalled in ~70% of its samples; Qwen2.5-0.5B
 * shape, batch 1: 31.6 -> 24.6 ms a decode step) */
#define NB_P16_AHEAD 1024

static inline __m512i nb_bcast4(const int8_t *p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* Lane j is column j: per block two int32 chains per row (the low and the high nibbles, or two
 * loads of 8-bit weights) added exactly, then the float chains of the plain loop in its order (fma
 * per block, the bias, the zero-point sums). Inlined per row count so the accumulators stay in
 * registers; the weights of a load are unpacked once for every row. */
static inline __attribute__((always_inline)) void nb_dot16p(const int8_t *qa, int64_t ldq, const float *sa,
                                                            const float *asum, int64_t lds, int nr, const uint8_t *bp,
                                                            const float *sc16, const float *off16, float zdef,
                                                            int64_t nb, int bits, int64_t bs, const float *bias, int nc,
                                                            float *y, int64_t ldy) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512 nz = _mm512_set1_ps(-zdef);
    __m512 acc[KN_NBITS_I8_NR], zs[KN_NBITS_I8_NR];
    /* every row loop unrolled: GCC then keeps the arrays in registers, not on the stack */
#pragma GCC unroll 4
    for (int r = 0; r < KN_NBITS_I8_NR; r++) acc[r] = zs[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m512i s0[KN_NBITS_I8_NR], s1[KN_NBITS_I8_NR];
#pragma GCC unroll 4
        for (int r = 0; r < KN_NBITS_I8_NR; r++) s0[r] = s1[r] = _mm512_setzero_si512();
        const int8_t *ab = qa + b * bs;
        if (bits == 4) {
            for (int64_t i = 0; i < bs; i += 8, bp += 64) {
                _mm_prefetch((const char *)bp + NB_P16_AHEAD, _MM_HINT_T0);
                __m512i x = _mm512_loadu_si512((const void *)bp);
                __m512i lo = _mm512_and_si512(x, m4), hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), m4);
#pragma GCC unroll 4
                for (int r = 0; r < nr; r++) {
                    s0[r] = _mm512_dpbusd_epi32(s0[r], lo, nb_bcast4(ab + r * ldq + i));
                    s1[r] = _mm512_dpbusd_epi32(s1[r], hi, nb_bcast4(ab + r * ldq + i + 4));
                }
            }
        } else {
            for (int64_t i = 0; i < bs; i += 8, bp += 128) {
                _mm_prefetch((const char *)bp + NB_P16_AHEAD, _MM_HINT_T0);
                _mm_prefetch((const char *)bp + NB_P16_AHEAD + 64, _MM_HINT_T0);
                __m512i x0 = _mm512_loadu_si512((const void *)bp), x1 = _mm512_loadu_si512((const void *)(bp + 64));
#pragma GCC unroll 4
                for (int r = 0; r < nr; r++) {
                    s0[r] = _mm512_dpbusd_epi32(s0[r], x0, nb_bcast4(ab + r * ldq + i));
                    s1[r] = _mm512_dpbusd_epi32(s1[r], x1, nb_bcast4(ab + r * ldq + i + 4));
                }
            }
        }
        __m512 s = _mm512_loadu_ps(sc16 + b * 16);
        __m512 o = off16 ? _mm512_loadu_ps(off16 + b * 16) : _mm512_mul_ps(nz, s);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            __m512 d = _mm512_cvtepi32_ps(_mm512_add_epi32(s0[r], s1[r]));
            acc[r] = _mm512_fmadd_ps(d, _mm512_mul_ps(_mm512_set1_ps(sa[r * lds + b]), s), acc[r]);
            zs[r] = _mm512_fmadd_ps(_mm512_set1_ps(asum[r * lds + b]), o, zs[r]);
        }
    }
    __mmask16 mk = (__mmask16)(nc >= 16 ? 0xffff : (1u << nc) - 1);
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        if (bias) acc[r] = _mm512_add_ps(acc[r], _mm512_maskz_loadu_ps(mk, bias));
        _mm512_mask_storeu_ps(y + r * ldy, mk, _mm512_add_ps(acc[r], zs[r]));
    }
}

void kn_nbits_i8_dot16p_vnni(const int8_t *qa, int64_t ldq, const float *sa, const float *asum, int64_t lds, int nr,
                             const uint8_t *bp, const float *sc16, const float *off16, float zdef, int64_t nb, int bits,
                             int64_t bs, const float *bias, int nc, float *y, int64_t ldy) {
#define NB_P16_ROWS(n) nb_dot16p(qa, ldq, sa, asum, lds, n, bp, sc16, off16, zdef, nb, bits, bs, bias, nc, y, ldy)
    if (nr == 1) NB_P16_ROWS(1);
    else if (nr == 2) NB_P16_ROWS(2);
    else if (nr == 3) NB_P16_ROWS(3);
    else NB_P16_ROWS(4);
#undef NB_P16_ROWS
}
