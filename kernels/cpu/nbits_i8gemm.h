/* MatMulNBits accuracy_level 4 for many rows of A (prefill) as an int8 GEMM: the integer block
 * products of A's int8 rows (kn_nbits_quant_a) with the unsigned weights, in register tiles
 * (nbits_i8gemm_avx512.c with VNNI, nbits_i8gemm_avx2.c), combined in float32 in the order of
 * kn_nbits_i8_dot_scalar, so every row gives the bits the few-row path gives. Used by
 * kn_cpu_MsMatMulNBits from KN_NBITS_I8_GEMM_M rows on; the unit tests call the pieces.
 *
 * Per task a panel of KN_NBITS_I8G_PW columns of B is copied once into the tiles' layout: column
 * c's bytes (its blocks one after the other, B's [N, blocks, blob] row) cut into 4-byte words,
 * word d of column c at panel[d * PW + c], so one vector load gives the same word of 16 (8)
 * adjacent columns, one int32 lane each. A 4-bit word holds 8 values, the low nibbles (even
 * positions) and the high ones (odd positions); A's rows are reordered to match
 * (kn_nbits_i8g_deint8): per 8 values the 4 even ones, then the 4 odd ones. The integer sums do not
 * depend on the order of their terms. */
#ifndef KN_CPU_NBITS_I8GEMM_H
#define KN_CPU_NBITS_I8GEMM_H
#include <stdbool.h>
#include <stdint.h>

/* panel width (columns) and the tiles' row counts */
enum { KN_NBITS_I8G_PW = 32, KN_NBITS_I8G_MR_VNNI = 4, KN_NBITS_I8G_MR_AVX2 = 4, KN_NBITS_I8G_NW_AVX2 = 8 };

/* the panel of columns [n0, n0 + nc) (nc <= PW; the rest zero): cs = blocks * blob bytes a column
 * (a multiple of 4), words (cs / 4) x PW; scales and offsets (plain [N][blocks] layout) as
 * [blocks][PW] (group > 0: sc and off in kn_nbits_group's layout of that width, a divisor of PW,
 * as a prepared node keeps them); the bias (float32 or NULL) as PW floats, zero where absent. isa 2: the words
 * transposed 16 x 16 in AVX-512 registers (kn_nbits_i8g_words_avx512), else one by one. */
void kn_nbits_i8g_pack(const uint8_t *b, int64_t cs, int64_t n0, int nc, const float *sc, const float *off, int64_t nb,
                       int64_t group, const float *bias, uint32_t *panel, float *sbp, float *offp, float *biasp,
                       int isa);
void kn_nbits_i8g_words_avx512(const uint8_t *b, int64_t cs, int64_t n0, int nc, uint32_t *panel);
/* n values (a multiple of 8) reordered: per 8, positions 0 2 4 6 then 1 3 5 7 */
void kn_nbits_i8g_deint8(const int8_t *qa, int64_t n, int8_t *dst);

/* nr <= MR rows (row r: qa + r * ldq, reordered for 4 bits; sa / asum + r * lds) against the
 * panel's columns [c0, c0 + width) (width 32 for VNNI, 8 for AVX2); y + r * ldy gets nc <= width
 * values. bias: the panel's (biasp) or NULL. */
#define KN_NBITS_I8G_DECL(sfx) \
    void kn_nbits_i8g_tile_##sfx(const int8_t *qa, int64_t ldq, const float *sa, const float *asum, int64_t lds, \
                                 int nr, const uint32_t *panel, const float *sbp, const float *offp, int c0, \
                                 int64_t nb, int bits, int64_t bs, const float *biasp, float *y, int64_t ldy, int nc);
KN_NBITS_I8G_DECL(vnni)
KN_NBITS_I8G_DECL(avx2)
#undef KN_NBITS_I8G_DECL

/* y [M, N] = the level 4 product of A [M, K] (float32) with B [N, blocks, blob], sc / off the plain
 * per-column scales and offsets (-zero_point * scale), or grouped as kn_nbits_group lays them out
 * (group: the width, else 0), bias float32 [N] or NULL. isa: 2 VNNI, 1
 * AVX2, 0 the plain loop (kn_nbits_i8_dot_scalar), -1 the best this CPU has. */
struct kn_exec_ctx;
struct kn_status;
struct kn_status *kn_nbits_i8gemm(struct kn_exec_ctx *ctx, const float *a, int64_t M, int64_t N, int64_t K, int64_t bs,
                                  int bits, const uint8_t *b, const float *sc, const float *off, int64_t group,
                                  const float *bias, float *y, int isa);
#endif
