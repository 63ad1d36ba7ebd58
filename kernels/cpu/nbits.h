/* The MatMulNBits inner loops per ISA (kernels/cpu/nbits_impl.h, nbits_avx2.c, nbits_avx512.c)
 * and their plain reference (nbits.c), shared by the kernel and its unit test. bq, sc and off are
 * one column's quantised blocks, scales and offsets (-zero_point * scale). */
#ifndef KN_CPU_NBITS_H
#define KN_CPU_NBITS_H
#include <stdint.h>

#define KN_NBITS_DECL(sfx) \
    void kn_nbits_dot_##sfx(const float *a, int64_t lda, int M, const uint8_t *bq, const float *sc, const float *off, \
                            int64_t K, int bits, int64_t bs, float *y, int64_t ldy); \
    void kn_nbits_dequant_##sfx(const uint8_t *bq, const float *sc, const float *off, int64_t K, int bits, int64_t bs, \
                                int64_t blk0, int64_t blk1, float *dst);
KN_NBITS_DECL(scalar)
KN_NBITS_DECL(avx2)
KN_NBITS_DECL(avx512)
#undef KN_NBITS_DECL
#endif
