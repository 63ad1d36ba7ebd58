/* The MatMulNBits inner loops per ISA (kernels/cpu/nbits_impl.h, nbits_avx2.c, nbits_avx512.c)
 * and their plain reference (nbits.c), shared by the kernel and its unit test. bq, sc and off are
 * one column's quantised blocks, scales and offsets (-zero_point * scale). */
#ifndef KN_CPU_NBITS_H
#define KN_CPU_NBITS_H
#include <stdbool.h>
#include <stdint.h>

#define KN_NBITS_DECL(sfx) \
    void kn_nbits_dot_##sfx(const float *a, int64_t lda, int M, const uint8_t *bq, const float *sc, const float *off, \
                            int64_t K, int bits, int64_t bs, float *y, int64_t ldy); \
    void kn_nbits_dequant_##sfx(const uint8_t *bq, const float *sc, const float *off, int64_t K, int bits, int64_t bs, \
                                int64_t blk0, int64_t blk1, float *dst); \
    void kn_nbits_dot1x4_##sfx(const float *a, const uint8_t *bq, int64_t bstride, const float *sc, const float *off, \
                               int64_t nb, int64_t K, int bits, int64_t bs, float *y); \
    void kn_nbits_deint_##sfx(const float *a, int64_t n, float *dst); \
    void kn_nbits_dot1x4_4p_##sfx(const float *a, const float *ad, const uint8_t *bq, int64_t bstride, \
                                  const float *sc, const float *off, int64_t nb, int64_t K, int64_t bs, float *y); \
    void kn_nbits_tile_##sfx(const float *a, int64_t lda, const float *p, int64_t ldp, int64_t kl, float *c, \
                             int64_t ldc, bool accumulate); \
    void kn_nbits_edge_##sfx(const float *a, int64_t lda, int mi, const float *p, int64_t ldp, int nj, int64_t kl, \
                             float *c, int64_t ldc, bool accumulate);
/* dot1x4_4p's off may be NULL: no zero points, a block's offset -8 * its scale (not loaded) */
/* the vector widths (dot1x4_4p takes block sizes that are multiples of twice them) */
enum { KN_NBITS_W_AVX2 = 8, KN_NBITS_W_AVX512 = 16 };
/* the tile sizes of kn_nbits_tile_* (rows of A x columns of the panel) */
enum { KN_NBITS_TM_AVX2 = 2, KN_NBITS_TN_AVX2 = 4, KN_NBITS_TM_AVX512 = 4, KN_NBITS_TN_AVX512 = 4 };
/* The prefill's outer-product tile (AVX-512, nbits_avx512.c): mv <= KN_NBITS_OP_MV vectors of 16
 * rows of A transposed (at[k * ldt + m]) by nt <= KN_NBITS_OP_NT columns of a dequantised panel
 * (column j at p + j * ldp), over kl values of K, into C transposed: ct[j * ldc + m] (+)= ... */
enum { KN_NBITS_OP_MV = 4, KN_NBITS_OP_NT = 6 };
void kn_nbits_optile_avx512(const float *at, int64_t ldt, int mv, const float *p, int64_t ldp, int nt, int64_t kl,
                            float *ct, int64_t ldc, bool accumulate);
/* the plain references (nbits.c) */
void kn_nbits_dot_scalar(const float *a, int64_t lda, int M, const uint8_t *bq, const float *sc, const float *off,
                         int64_t K, int bits, int64_t bs, float *y, int64_t ldy);
void kn_nbits_dequant_scalar(const uint8_t *bq, const float *sc, const float *off, int64_t K, int bits, int64_t bs,
                             int64_t blk0, int64_t blk1, float *dst);
KN_NBITS_DECL(avx2)
KN_NBITS_DECL(avx512)
#undef KN_NBITS_DECL

/* accuracy_level 4 as ONNX Runtime's CPU computes it (MLAS "CompInt8"): each block of A quantised
 * to int8 (scale sa = max|a| / 127, values rint(a * (127 / max|a|))), integer dot products with the
 * unsigned quantised weights per block, and the zero point brought in through per-block sums:
 *   y = sum_b (float)dot_b * (sa_b * sb_b)  [+ bias]  + sum_b (sa_b * sum(qa_b)) * (-zp_b * sb_b)
 * each sum a float32 fma chain over the blocks in order, so every ISA gives the same bits.
 * kn_nbits_quant_a quantises one row of K values: qa gets blocks * bs bytes (the last block padded
 * with zeros), sa and asum (sa * sum(qa)) one float per block. */
void kn_nbits_quant_a(const float *a, int64_t K, int64_t bs, int8_t *qa, float *sa, float *asum);
/* the same with AVX-512 (nbits_avx512.c), bit for bit; block sizes multiples of 16; deint: qa in the
 * int8 GEMM's order for 4 bits (kn_nbits_i8g_deint8, nbits_i8gemm.h) */
void kn_nbits_quant_a_avx512(const float *a, int64_t K, int64_t bs, bool deint, int8_t *qa, float *sa, float *asum);
/* From KN_NBITS_I8_GEMM_M rows on (prefill) the kernel runs the int8 GEMM of nbits_i8gemm.h instead,
 * which packs panels of B once for all rows (the same bits as the few-row loops). */
enum { KN_NBITS_I8_GEMM_M = 8 };
/* y[j] for nc columns against one quantised row of A: column j's blocks at bq + j * bstride, its
 * scale and offset (-zp * scale) of block b at sc / off[j * cst + b * bst], bias[j] when bias is
 * not NULL. */
void kn_nbits_i8_dot_scalar(const int8_t *qa, const float *sa, const float *asum, const uint8_t *bq, int64_t bstride,
                            const float *sc, const float *off, int64_t cst, int64_t bst, int64_t nb, int bits,
                            int64_t bs, const float *bias, int nc, float *y);
/* The vector loops take 8 columns at a time, their scales and offsets grouped ([block][8 columns],
 * kn_nbits_group of width 8), and for 4-bit weights A's quantised row reordered per 32 values (per 16 for
 * block size 16): the even positions first, then the odd ones, the order of the low and high
 * nibbles (kn_nbits_i8_deint). Integer sums do not depend on the order, so the result is bit for
 * bit the plain loop's. */
enum { KN_NBITS_I8_NC = 8, KN_NBITS_I8_NR = 4 };
void kn_nbits_i8_deint(const int8_t *qa, int64_t n, int64_t bs, int8_t *dst);
/* nr <= KN_NBITS_I8_NR rows (row r: qa + r * ldq, sa / asum + r * lds, y + r * ldy) against 8
 * columns (AVX2; block sizes 16..256) */
void kn_nbits_i8_dot8_avx2(const int8_t *qa, int64_t ldq, const float *sa, const float *asum, int64_t lds, int nr,
                           const uint8_t *bq, int64_t bstride, const float *sc8, const float *off8, int64_t nb,
                           int bits, int64_t bs, const float *bias, float *y, int64_t ldy);
/* the same with AVX-512 VNNI (nbits_vnni_avx512.c), where kn_nbits_have_vnni() */
void kn_nbits_i8_dot8_vnni(const int8_t *qa, int64_t ldq, const float *sa, const float *asum, int64_t lds, int nr,
                           const uint8_t *bq, int64_t bstride, const float *sc8, const float *off8, int64_t nb,
                           int bits, int64_t bs, const float *bias, float *y, int64_t ldy);
bool kn_nbits_have_vnni(void);
/* Decode with AVX-512 VNNI on constant weights: B repacked at load (kn_nbits_i8_pack16) so that
 * one 64-byte load holds 16 columns' weights for 8 values of K (4 bits: byte 4j+i of column j has
 * k0+i in its low nibble and k0+4+i in its high one; 8 bits: 4 values of K a load, byte 4j+i is
 * k0+i), each column in its own int32 lane: vpdpbusd against A's 4 bytes broadcast sums them
 * without any horizontal add, and each block's sum is scaled in its column's float lane. A tile of
 * 16 columns (the last padded with zero columns) takes 16 * K_blocks * blob bytes, streamed in
 * order. Scales and offsets grouped per 16 columns (kn_nbits_group, w 16); off16 NULL: offsets
 * -zdef * scale (no zero points), computed in the loop as the plain layout's decoding does. */
enum { KN_NBITS_I8_PC = 16 };
void kn_nbits_group(const float *src, int64_t N, int64_t nb, int64_t w, float *dst);
void kn_nbits_i8_pack16(const uint8_t *b, int64_t N, int64_t nb, int bits, int64_t bs, uint8_t *dst);
/* nr <= KN_NBITS_I8_NR rows in natural order (not kn_nbits_i8_deint's) against one packed tile of
 * 16 columns, nc <= 16 of them written (y + r * ldy); bias NULL or nc values. Bit for bit
 * kn_nbits_i8_dot_scalar's results. */
void kn_nbits_i8_dot16p_vnni(const int8_t *qa, int64_t ldq, const float *sa, const float *asum, int64_t lds, int nr,
                             const uint8_t *bp, const float *sc16, const float *off16, float zdef, int64_t nb, int bits,
                             int64_t bs, const float *bias, int nc, float *y, int64_t ldy);

/* MatMulNBits' per-block scales and offsets (-zero_point * scale) as float32, decoded once per
 * model when scales and zero points are constants (the CPU backend's graph_optimize hook keeps
 * them in the node's prepared slot) instead of on every run. */
struct kn_node;
struct kn_tensor;
typedef struct kn_nbits_prepared {
    int64_t count; /* N * blocks */
    float *sc, *off;
    /* accuracy_level 4's int8 path: kn_nbits_group's layout over N rounded up to 8 (the 8-column
     * loops), or to 16 where B was packed (bp) */
    int group;
    uint8_t *bp;       /* constant B packed by kn_nbits_i8_pack16 (with VNNI), or NULL */
    const void *b_src; /* the data bp was packed from: bp serves only runs on that B */
    bool zp;           /* zero points given (else offsets follow from the scales) */
} kn_nbits_prepared;
/* NULL *out (and no error) when the node's attributes do not describe these tensors: the kernel
 * then reports the mismatch on its run. b (NULL when B is not a constant) is packed for the VNNI
 * decode loop where that loop would take the node. */
struct kn_status *kn_nbits_prepare(const struct kn_node *n, const struct kn_tensor *b, const struct kn_tensor *sc,
                                   const struct kn_tensor *zp, kn_nbits_prepared **out);
void kn_nbits_prepared_free(void *p);
/* GatherBlockQuantized's operands checked against each other and the node's attributes, and the
 * geometry both backends index with (kernels/cpu/nbits.c, kernels/cuda/quant.cu): dims as
 * logical values (a packed 4-bit last dim counts twice its bytes). */
typedef struct kn_gbq_geom {
    int64_t n_idx, outer, gdim, inner, bs, qstride, qdim, sqdim, slast;
    int ga, qa; /* the gather and quantize axes, normalised */
    bool packed;
} kn_gbq_geom;
struct kn_status *kn_gbq_geometry(const struct kn_node *node, const struct kn_tensor *const *in, int n_in,
                                  kn_gbq_geom *g);
#endif
