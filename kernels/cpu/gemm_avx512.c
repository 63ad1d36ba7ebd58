/* AVX-512 micro-kernels for kn_sgemm (gemm.c picks them at run time when the CPU has avx512f):
 * an 8 x 32 register tile (16 zmm accumulators, enough independent chains to hide FMA latency
 * while leaving registers for the B loads) and a skinny-rows kernel for M <= 4. */
#include "kernels/cpu/gemm.h"
#include <immintrin.h>

#define MR KN_SGEMM_AVX512_MR
#define NR KN_SGEMM_AVX512_NR

/* The tile is spelled out with macros rather than arrays of vectors so that every accumulator is
 * certain to live in a register whatever the optimisation level. */
#define ROW_FMA(r, c0, c1) \
    do { \
        __m512 a_ = _mm512_set1_ps(Ap[r]); \
        c0 = _mm512_fmadd_ps(a_, b0, c0); \
        c1 = _mm512_fmadd_ps(a_, b1, c1); \
    } while (0)

#define ROW_STORE(r, c0, c1) \
    do { \
        float *p_ = C + (r)*ldc; \
        if (beta == 0.0f) { \
            _mm512_storeu_ps(p_, c0); \
            _mm512_storeu_ps(p_ + 16, c1); \
        } else if (beta == 1.0f) { \
            _mm512_storeu_ps(p_, _mm512_add_ps(c0, _mm512_loadu_ps(p_))); \
            _mm512_storeu_ps(p_ + 16, _mm512_add_ps(c1, _mm512_loadu_ps(p_ + 16))); \
        } else { \
            __m512 bv_ = _mm512_set1_ps(beta); \
            _mm512_storeu_ps(p_, _mm512_fmadd_ps(bv_, _mm512_loadu_ps(p_), c0)); \
            _mm512_storeu_ps(p_ + 16, _mm512_fmadd_ps(bv_, _mm512_loadu_ps(p_ + 16), c1)); \
        } \
    } while (0)

/* The 8 x 32 tile over kc steps of A (packed MR-wide) and B, row k of B at B + k*ldb. Both micro
 * kernels below are this body with a constant ldb and in_place flag (always inlined, so each keeps
 * its own register allocation and loop). Packed B (ldb = NR) is one contiguous stream: one line
 * prefetched 8 rows ahead. B read in place has rows ldb apart, so both 64-byte halves of the row
 * 4 ahead are prefetched. */
static inline __attribute__((always_inline)) void micro_tile(int64_t kc, const float *Ap, const float *B, int64_t ldb,
                                                             const bool in_place, float *C, int64_t ldc, float beta) {
    /* C is only touched after the k loop; start pulling its rows in now. */
    for (int r = 0; r < MR; r++) {
        _mm_prefetch((const char *)(C + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(C + r * ldc + 16), _MM_HINT_T0);
    }
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps();
    __m512 c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
    __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps();
    __m512 c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
    __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps();
    __m512 c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
    __m512 c60 = _mm512_setzero_ps(), c61 = _mm512_setzero_ps();
    __m512 c70 = _mm512_setzero_ps(), c71 = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(B), b1 = _mm512_loadu_ps(B + 16);
        if (in_place) {
            _mm_prefetch((const char *)(B + 4 * ldb), _MM_HINT_T0);
            _mm_prefetch((const char *)(B + 4 * ldb + 16), _MM_HINT_T0);
        } else {
            _mm_prefetch((const char *)(B + 8 * NR), _MM_HINT_T0);
        }
        ROW_FMA(0, c00, c01);
        ROW_FMA(1, c10, c11);
        ROW_FMA(2, c20, c21);
        ROW_FMA(3, c30, c31);
        ROW_FMA(4, c40, c41);
        ROW_FMA(5, c50, c51);
        ROW_FMA(6, c60, c61);
        ROW_FMA(7, c70, c71);
        Ap += MR;
        B += ldb;
    }
    ROW_STORE(0, c00, c01);
    ROW_STORE(1, c10, c11);
    ROW_STORE(2, c20, c21);
    ROW_STORE(3, c30, c31);
    ROW_STORE(4, c40, c41);
    ROW_STORE(5, c50, c51);
    ROW_STORE(6, c60, c61);
    ROW_STORE(7, c70, c71);
}

void kn_sgemm_micro_avx512(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc, float beta) {
    micro_tile(kc, Ap, Bp, NR, false, C, ldc, beta);
}

/* Skinny products (m <= 4 rows): B is read once, row by row in address order (four rows of K at a
 * time), and each C row is updated in place, so the memory traffic - the whole cost here - is one
 * pass over B with the hardware prefetchers on full streams. */
void kn_sgemm_rows_avx512(int64_t m, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                          int64_t ldb, float beta, float *C, int64_t ldc) {
    for (int64_t i = 0; i < m; i++) {
        float *c = C + i * ldc;
        if (beta == 0.0f)
            for (int64_t j = 0; j < N; j++) c[j] = 0.0f;
        else if (beta != 1.0f)
            for (int64_t j = 0; j < N; j++) c[j] *= beta;
    }
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
        const float *b = B + k * ldb;
        __m512 x[4][4];
        for (int64_t i = 0; i < 4; i++)
            for (int q = 0; q < 4; q++) x[i][q] = _mm512_set1_ps(i < m ? alpha * A[i * lda + k + q] : 0.0f);
        for (int64_t j = 0; j < N; j += 16) {
            __mmask16 mk = N - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (N - j)) - 1u);
            __m512 b0 = _mm512_maskz_loadu_ps(mk, b + j), b1 = _mm512_maskz_loadu_ps(mk, b + ldb + j);
            __m512 b2 = _mm512_maskz_loadu_ps(mk, b + 2 * ldb + j), b3 = _mm512_maskz_loadu_ps(mk, b + 3 * ldb + j);
            for (int64_t i = 0; i < m; i++) {
                float *c = C + i * ldc + j;
                __m512 v = _mm512_maskz_loadu_ps(mk, c);
                v = _mm512_fmadd_ps(x[i][0], b0, v);
                v = _mm512_fmadd_ps(x[i][1], b1, v);
                v = _mm512_fmadd_ps(x[i][2], b2, v);
                v = _mm512_fmadd_ps(x[i][3], b3, v);
                _mm512_mask_storeu_ps(c, mk, v);
            }
        }
    }
    for (; k < K; k++) {
        const float *b = B + k * ldb;
        for (int64_t i = 0; i < m; i++) {
            __m512 x = _mm512_set1_ps(alpha * A[i * lda + k]);
            float *c = C + i * ldc;
            for (int64_t j = 0; j < N; j += 16) {
                __mmask16 mk = N - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (N - j)) - 1u);
                _mm512_mask_storeu_ps(
                    c + j, mk, _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(mk, b + j), _mm512_maskz_loadu_ps(mk, c + j)));
            }
        }
    }
}

/* Skinny products with B transposed (B stored N x K, as Gemm transB weights are): every output is
 * a dot product of an A row with a B row, so B is read once, row by row, while the m <= 4 rows
 * of A stay in L1. */
void kn_sgemm_rows_bt_avx512(int64_t m, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                             int64_t ldb, float beta, float *C, int64_t ldc) {
    for (int64_t j = 0; j < N; j++) {
        const float *b = B + j * ldb;
        __m512 s[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int64_t k = 0; k < K; k += 16) {
            __mmask16 mk = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1u);
            __m512 bv = _mm512_maskz_loadu_ps(mk, b + k);
            for (int64_t i = 0; i < m; i++)
                s[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, A + i * lda + k), bv, s[i]);
        }
        for (int64_t i = 0; i < m; i++) {
            float v = alpha * _mm512_reduce_add_ps(s[i]);
            float *c = C + i * ldc + j;
            *c = beta == 0.0f ? v : v + beta * *c;
        }
    }
}

/* Skinny rows on packed B (kn_sgemm_pack_b): C[m x n] = beta*C + alpha * A[m x K] * B for m <= 4,
 * one NR-wide panel at a time with its m x 32 sums kept in registers across all of K, so B streams
 * once from contiguous panels and C is touched once. Columns [j0, j0 + n) of the product (j0 a
 * multiple of the panel width), C pointing at column j0; Bp the packed data, slice_stride the
 * floats between its KC slices. */
/* The body for a constant m (1..4, each call site below passes a literal): the compiler then
 * keeps the m x 2 sums in registers, where with a run-time m they lived in a stack array and
 * every FMA was a load-add-store round trip. One row (a GEMV) splits K into even and odd steps,
 * two sums per column half, so that four FMA chains rather than two hide the FMA latency. */
static inline __attribute__((always_inline)) void rows_packed_m(const int m, int64_t j0, int64_t n, int64_t K,
                                                                int64_t kc_max, float alpha, const float *A,
                                                                int64_t lda, const float *Bp, int64_t slice_stride,
                                                                float beta, float *C, int64_t ldc) {
    for (int64_t j = 0; j < n; j += NR) {
        __m512 acc[4][2], odd[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int i = 0; i < 4; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
        for (int64_t pc = 0; pc < K; pc += kc_max) {
            int64_t kc = K - pc < kc_max ? K - pc : kc_max;
            const float *b = Bp + (pc / kc_max) * slice_stride + (j0 + j) * kc;
            int64_t k = 0;
            if (m == 1)
                for (; k + 2 <= kc; k += 2, b += 2 * NR) {
                    __m512 a0 = _mm512_set1_ps(A[pc + k]), a1 = _mm512_set1_ps(A[pc + k + 1]);
                    acc[0][0] = _mm512_fmadd_ps(a0, _mm512_loadu_ps(b), acc[0][0]);
                    acc[0][1] = _mm512_fmadd_ps(a0, _mm512_loadu_ps(b + 16), acc[0][1]);
                    odd[0] = _mm512_fmadd_ps(a1, _mm512_loadu_ps(b + NR), odd[0]);
                    odd[1] = _mm512_fmadd_ps(a1, _mm512_loadu_ps(b + NR + 16), odd[1]);
                }
            for (; k < kc; k++, b += NR) {
                __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
                for (int i = 0; i < m; i++) {
                    __m512 a = _mm512_set1_ps(A[i * lda + pc + k]);
                    acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
                    acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
                }
            }
        }
        if (m == 1) {
            acc[0][0] = _mm512_add_ps(acc[0][0], odd[0]);
            acc[0][1] = _mm512_add_ps(acc[0][1], odd[1]);
        }
        int64_t w = n - j < NR ? n - j : NR;
        __mmask16 k0 = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1u);
        __mmask16 k1 = w >= 32 ? (__mmask16)0xFFFF : w > 16 ? (__mmask16)((1u << (w - 16)) - 1u) : (__mmask16)0;
        __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
        for (int i = 0; i < m; i++) {
            float *c = C + i * ldc + j;
            __m512 r0 = _mm512_mul_ps(va, acc[i][0]), r1 = _mm512_mul_ps(va, acc[i][1]);
            if (beta != 0.0f) {
                r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k0, c), r0);
                r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k1, c + 16), r1);
            }
            _mm512_mask_storeu_ps(c, k0, r0);
            _mm512_mask_storeu_ps(c + 16, k1, r1);
        }
    }
}

void kn_sgemm_rows_packed_avx512(int64_t m, int64_t j0, int64_t n, int64_t K, int64_t kc_max, float alpha,
                                 const float *A, int64_t lda, const float *Bp, int64_t slice_stride, float beta,
                                 float *C, int64_t ldc) {
    switch (m) {
    case 1: rows_packed_m(1, j0, n, K, kc_max, alpha, A, lda, Bp, slice_stride, beta, C, ldc); break;
    case 2: rows_packed_m(2, j0, n, K, kc_max, alpha, A, lda, Bp, slice_stride, beta, C, ldc); break;
    case 3: rows_packed_m(3, j0, n, K, kc_max, alpha, A, lda, Bp, slice_stride, beta, C, ldc); break;
    default: rows_packed_m(4, j0, n, K, kc_max, alpha, A, lda, Bp, slice_stride, beta, C, ldc); break;
    }
}

/* kn_sgemm_micro_avx512 reading B in place (row k at B + k*ldb, 32 columns) instead of packed: for
 * products of few rows (a convolution of 16..64 channels), where packing B costs as much as
 * half the multiply. */
void kn_sgemm_micro_ldb_avx512(int64_t kc, const float *Ap, const float *B, int64_t ldb, float *C, int64_t ldc,
                               float beta) {
    micro_tile(kc, Ap, B, ldb, true, C, ldc, beta);
}
