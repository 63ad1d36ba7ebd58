/* Single-precision GEMM shared by every CPU kernel that multiplies matrices (MatMul, Gemm, Conv,
 * attention, RNNs): C = alpha * op(A) * op(B) + beta * C with row-major storage, where op(X) is X
 * or its transpose. A packed, cache-blocked implementation with SIMD micro-kernels picked at run
 * time (AVX-512, AVX2+FMA, scalar), threaded over blocks of C; kn_sgemm_ref is the plain loop it
 * is tested against. Also the plain double / integer products used by MatMul on other dtypes. */
#ifndef KN_GEMM_H
#define KN_GEMM_H
#include "runtime/core/threadpool.h"
#include "runtime/core/status.h"
#include "runtime/core/tensor.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* op(A) is M x K, op(B) is K x N, C is M x N. lda/ldb/ldc are row strides in elements of the
 * matrices as stored (A is K x M when trans_a). beta == 0 means C is write-only (NaNs in it are
 * not propagated). pool may be NULL; called from inside a parallel region it runs serially. */
void kn_sgemm(kn_threadpool *pool, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* batch independent products; matrix b uses A + b*stride_a, B + b*stride_b, C + b*stride_c.
 * A stride of 0 shares one matrix across the batch (broadcast). */
void kn_sgemm_batched(kn_threadpool *pool, bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                      float alpha, const float *A, int64_t lda, int64_t stride_a, const float *B, int64_t ldb,
                      int64_t stride_b, float beta, float *C, int64_t ldc, int64_t stride_c);

/* The obviously-correct triple loop (double accumulation) the fast path is checked against. */
void kn_sgemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* kn_sgemm with an explicit micro-kernel family, for tests and benchmarks: KN_SGEMM_ISA_AUTO,
 * _SCALAR, _AVX2 or _AVX512. A family this CPU lacks falls back to the best one it has. */
enum { KN_SGEMM_ISA_AUTO = 0, KN_SGEMM_ISA_SCALAR = 1, KN_SGEMM_ISA_AVX2 = 2, KN_SGEMM_ISA_AVX512 = 3 };
void kn_sgemm_isa(kn_threadpool *pool, int isa, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                  float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc);
const char *kn_sgemm_isa_name(int isa); /* name of the family isa resolves to on this CPU */

/* op(B) packed once for many products with different A (constant weights): the panels kn_sgemm
 * packs on every call, for the micro-kernel this CPU uses. B itself must stay valid (products of
 * at most 4 rows read it directly). Returns false when out of memory. */
typedef struct kn_sgemm_packed {
    int isa;
    bool trans_b;
    int64_t K, N, ldb;
    const float *B;
    float *data;
    size_t bytes;
} kn_sgemm_packed;
bool kn_sgemm_pack_b(bool trans_b, int64_t K, int64_t N, const float *B, int64_t ldb, kn_sgemm_packed *out);
void kn_sgemm_packed_release(kn_sgemm_packed *p);
/* C (M x N) = alpha * A (M x K, row stride lda) * op(B) + beta * C, as kn_sgemm. */
void kn_sgemm_packed_run(kn_threadpool *pool, int64_t M, float alpha, const float *A, int64_t lda,
                         const kn_sgemm_packed *B, float beta, float *C, int64_t ldc);

/* com.microsoft FusedGemm's activation (p->act, graph/params.h) over n float32 values in place;
 * kernels/cpu/linalg_misc.c. */
struct kn_params_gemm;
void kn_gemm_activation_f32(const struct kn_params_gemm *p, float *y, int64_t n);

/* Plain row-major products C = A(MxK) * B(KxN) for the other MatMul dtypes (no alpha/beta). */
void kn_dgemm_plain(int64_t M, int64_t N, int64_t K, const double *A, const double *B, double *C);
/* Integer product of operands widened to int64 by the caller; wraps on overflow (no UB). */
void kn_igemm_plain(int64_t M, int64_t N, int64_t K, const int64_t *A, const int64_t *B, int64_t *C);

/* Integer products for MatMulInteger / QLinearMatMul: B (K x N int16) is packed in k pairs,
 * Bp[(k/2)*2N + 2j + (k&1)] (zero for the odd tail), then C (int32, wrapping) = A * B. Returns
 * false when the CPU lacks AVX2 (the caller then uses its plain loop). */
void kn_igemm_pack_b16(int64_t K, int64_t N, const int16_t *B, int16_t *Bp);
bool kn_igemm_s16(int64_t M, int64_t N, int64_t K, const int16_t *A, int64_t lda, const int16_t *Bp, int32_t *C,
                  int64_t ldc);
/* C (int32, wrapping) = A16 * B16 (M x K by K x N), B16 packed into bp ((K + 1) * N) on the way
 * unless bp_ready says bp already holds it, on the pool where the CPU has AVX2
 * (kernels/cpu/linalg_misc.c). */
void kn_igemm_i16(kn_threadpool *pool, int64_t M, int64_t N, int64_t K, const int16_t *a16, const int16_t *b16,
                  int16_t *bp, bool bp_ready, int32_t *c);
/* DynamicQuantizeLinear of n floats to uint8 (kernels/cpu/quant.c): the operand quantisation of
 * dynamically quantised products. y may be NULL (parameters only). */
void kn_dynamic_quantize_u8(const float *x, int64_t n, uint8_t *y, float *scale, uint8_t *zp);
void kn_igemm_s16_avx2(int64_t M, int64_t N, int64_t K, const int16_t *A, int64_t lda, const int16_t *Bp, int32_t *C,
                       int64_t ldc);

/* ---- internal: the per-ISA micro-kernels (gemm_avx2.c, gemm_avx512.c) ---- */
/* C[MR x NR] (row stride ldc) = beta * C + Ap * Bp over kc steps, with Ap packed MR-interleaved
 * (Ap[k*MR + r]) and Bp packed NR-interleaved (Bp[k*NR + j]). beta == 0: C is not read. */
typedef void (*kn_sgemm_micro_fn)(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc, float beta);
/* Rows of a skinny product (M small): C[m x N] = beta*C + alpha * A[m x K] * op(B), unpacked,
 * m <= 4; the _bt variants take B transposed (stored N x K). */
typedef void (*kn_sgemm_rows_fn)(int64_t m, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
#define KN_SGEMM_AVX2_MR 6
#define KN_SGEMM_AVX2_NR 16
#define KN_SGEMM_AVX512_MR 8
#define KN_SGEMM_AVX512_NR 32
void kn_sgemm_micro_avx2(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc, float beta);
void kn_sgemm_micro_avx512(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc, float beta);
void kn_sgemm_pack_a8_avx2(const float *A, int64_t lda, int64_t kc, float alpha, float *dst);
void kn_sgemm_rows_avx2(int64_t m, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                        int64_t ldb, float beta, float *C, int64_t ldc);
void kn_sgemm_rows_bt_avx2(int64_t m, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                           int64_t ldb, float beta, float *C, int64_t ldc);
void kn_sgemm_rows_bt_avx512(int64_t m, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                             int64_t ldb, float beta, float *C, int64_t ldc);
void kn_sgemm_rows_avx512(int64_t m, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                          int64_t ldb, float beta, float *C, int64_t ldc);

/* Skinny rows (m <= 4) on packed B: columns [j0, j0 + n), j0 a multiple of the panel width, C at
 * column j0; Bp the packed data, slice_stride the floats between its KC slices. */
typedef void (*kn_sgemm_rows_packed_fn)(int64_t m, int64_t j0, int64_t n, int64_t K, int64_t kc_max, float alpha,
                                        const float *A, int64_t lda, const float *Bp, int64_t slice_stride, float beta,
                                        float *C, int64_t ldc);
void kn_sgemm_rows_packed_avx512(int64_t m, int64_t j0, int64_t n, int64_t K, int64_t kc_max, float alpha,
                                 const float *A, int64_t lda, const float *Bp, int64_t slice_stride, float beta,
                                 float *C, int64_t ldc);
void kn_sgemm_rows_packed_avx2(int64_t m, int64_t j0, int64_t n, int64_t K, int64_t kc_max, float alpha, const float *A,
                               int64_t lda, const float *Bp, int64_t slice_stride, float beta, float *C, int64_t ldc);

/* op(A) packed once for many products with different B (a convolution's constant weights, one
 * matrix per group): the MR-row panels kn_sgemm packs on every call, slice-major by KC, zero-padded,
 * for the micro-kernel this CPU uses. A itself must stay valid (the fallback when out of memory
 * reads it). Returns false when out of memory. */
typedef struct kn_sgemm_packed_a {
    int isa;
    int64_t M, K, lda;
    const float *A;
    float *data;
    size_t bytes;
} kn_sgemm_packed_a;
bool kn_sgemm_pack_a(int64_t M, int64_t K, const float *A, int64_t lda, kn_sgemm_packed_a *out);
void kn_sgemm_packed_a_release(kn_sgemm_packed_a *p);
/* C (M x N) = A * B (K x N, row stride ldb) + beta * C, as kn_sgemm with alpha 1. Threads split the
 * columns (each packs only its own B panels, A is shared read-only), or the rows when N is small. */
/* ws: NULL (each task allocates its B panels) or kn_sgemm_packed_a_ws(A, N, pool) floats, 64-byte
 * aligned, so that products run often (a convolution per image) do not map fresh pages each time. */
void kn_sgemm_packed_a_run(kn_threadpool *pool, const kn_sgemm_packed_a *A, int64_t N, const float *B, int64_t ldb,
                           float beta, float *C, int64_t ldc, float *ws);
int64_t kn_sgemm_packed_a_ws(const kn_sgemm_packed_a *A, int64_t N, kn_threadpool *pool);
/* The AVX-512 micro-kernel on B in place (row stride ldb) rather than packed panels. */
void kn_sgemm_micro_ldb_avx512(int64_t kc, const float *Ap, const float *B, int64_t ldb, float *C, int64_t ldc,
                               float beta);
/* The same over images columns side by side: B and C of image i start bstride and cstride floats
 * after those of image i - 1 (each ncol columns, row strides ldb and ldc), so that images of few
 * columns fill whole panels together; ws for N = images * ncol. */
void kn_sgemm_packed_a_run_images(kn_threadpool *pool, const kn_sgemm_packed_a *A, int64_t images, int64_t ncol,
                                  const float *B, int64_t ldb, int64_t bstride, float beta, float *C, int64_t ldc,
                                  int64_t cstride, float *ws);

#endif
