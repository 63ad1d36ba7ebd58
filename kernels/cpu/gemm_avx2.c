/* AVX2+FMA micro-kernels for kn_sgemm (gemm.c picks them at run time): a 6 x 16 register tile
 * (12 ymm accumulators plus two B vectors and a broadcast fit the 16 registers) and a
 * skinny-rows kernel for M <= 4. */
#include "kernels/cpu/gemm.h"
#include <immintrin.h>

#define MR KN_SGEMM_AVX2_MR
#define NR KN_SGEMM_AVX2_NR

#define ROW_FMA(r, c0, c1) \
    do { \
        __m256 a_ = _mm256_broadcast_ss(Ap + (r)); \
        c0 = _mm256_fmadd_ps(a_, b0, c0); \
        c1 = _mm256_fmadd_ps(a_, b1, c1); \
    } while (0)

#define ROW_STORE(r, c0, c1) \
    do { \
        float *p_ = C + (r)*ldc; \
        if (beta == 0.0f) { \
            _mm256_storeu_ps(p_, c0); \
            _mm256_storeu_ps(p_ + 8, c1); \
        } else if (beta == 1.0f) { \
            _mm256_storeu_ps(p_, _mm256_add_ps(c0, _mm256_loadu_ps(p_))); \
            _mm256_storeu_ps(p_ + 8, _mm256_add_ps(c1, _mm256_loadu_ps(p_ + 8))); \
        } else { \
            __m256 bv_ = _mm256_set1_ps(beta); \
            _mm256_storeu_ps(p_, _mm256_fmadd_ps(bv_, _mm256_loadu_ps(p_), c0)); \
            _mm256_storeu_ps(p_ + 8, _mm256_fmadd_ps(bv_, _mm256_loadu_ps(p_ + 8), c1)); \
        } \
    } while (0)

void kn_sgemm_micro_avx2(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc, float beta) {
    /* C is only touched after the k loop; start pulling its rows in now. */
    for (int r = 0; r < MR; r++) _mm_prefetch((const char *)(C + r * ldc), _MM_HINT_T0);
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(Bp), b1 = _mm256_loadu_ps(Bp + 8);
        ROW_FMA(0, c00, c01);
        ROW_FMA(1, c10, c11);
        ROW_FMA(2, c20, c21);
        ROW_FMA(3, c30, c31);
        ROW_FMA(4, c40, c41);
        ROW_FMA(5, c50, c51);
        Ap += MR;
        Bp += NR;
    }
    ROW_STORE(0, c00, c01);
    ROW_STORE(1, c10, c11);
    ROW_STORE(2, c20, c21);
    ROW_STORE(3, c30, c31);
    ROW_STORE(4, c40, c41);
    ROW_STORE(5, c50, c51);
}

/* Skinny products (m <= 4 rows): B is read once, row by row in address order (four rows of K at a
 * time), and each C row is updated in place, so the memory traffic - the whole cost here - is one
 * pass over B with the hardware prefetchers on full streams. */
void kn_sgemm_rows_avx2(int64_t m, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                        int64_t ldb, float beta, float *C, int64_t ldc) {
    for (int64_t i = 0; i < m; i++) {
        float *c = C + i * ldc;
        if (beta == 0.0f)
            for (int64_t j = 0; j < N; j++) c[j] = 0.0f;
        else if (beta != 1.0f)
            for (int64_t j = 0; j < N; j++) c[j] *= beta;
    }
    /* Full vectors use plain loads and stores: masked stores are microcoded and slow on AMD. */
    int64_t nfull = N / 8 * 8;
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
        const float *b = B + k * ldb;
        float x[4][4];
        for (int64_t i = 0; i < 4; i++)
            for (int q = 0; q < 4; q++) x[i][q] = i < m ? alpha * A[i * lda + k + q] : 0.0f;
        for (int64_t j = 0; j < nfull; j += 8) {
            __m256 b0 = _mm256_loadu_ps(b + j), b1 = _mm256_loadu_ps(b + ldb + j);
            __m256 b2 = _mm256_loadu_ps(b + 2 * ldb + j), b3 = _mm256_loadu_ps(b + 3 * ldb + j);
            for (int64_t i = 0; i < m; i++) {
                float *c = C + i * ldc + j;
                __m256 v = _mm256_loadu_ps(c);
                v = _mm256_fmadd_ps(_mm256_set1_ps(x[i][0]), b0, v);
                v = _mm256_fmadd_ps(_mm256_set1_ps(x[i][1]), b1, v);
                v = _mm256_fmadd_ps(_mm256_set1_ps(x[i][2]), b2, v);
                v = _mm256_fmadd_ps(_mm256_set1_ps(x[i][3]), b3, v);
                _mm256_storeu_ps(c, v);
            }
        }
        for (int64_t j = nfull; j < N; j++)
            for (int64_t i = 0; i < m; i++)
                C[i * ldc + j] +=
                    x[i][0] * b[j] + x[i][1] * b[ldb + j] + x[i][2] * b[2 * ldb + j] + x[i][3] * b[3 * ldb + j];
    }
    for (; k < K; k++) {
        const float *b = B + k * ldb;
        for (int64_t i = 0; i < m; i++) {
            __m256 x = _mm256_set1_ps(alpha * A[i * lda + k]);
            float *c = C + i * ldc;
            int64_t j = 0;
            for (; j < nfull; j += 8)
                _mm256_storeu_ps(c + j, _mm256_fmadd_ps(x, _mm256_loadu_ps(b + j), _mm256_loadu_ps(c + j)));
            for (; j < N; j++) c[j] += alpha * A[i * lda + k] * b[j];
        }
    }
}

/* Packs a full 8-row panel of a non-transposed A (8 x kc, row stride lda) into the MR = 8
 * interleaved layout dst[k*8 + r], scaled by alpha, with 8x8 in-register transposes: the scalar
 * loop's strided stores cost a noticeable share of a product with few columns. */
void kn_sgemm_pack_a8_avx2(const float *A, int64_t lda, int64_t kc, float alpha, float *dst) {
    __m256 al = _mm256_set1_ps(alpha);
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 r0 = _mm256_loadu_ps(A + 0 * lda + k), r1 = _mm256_loadu_ps(A + 1 * lda + k);
        __m256 r2 = _mm256_loadu_ps(A + 2 * lda + k), r3 = _mm256_loadu_ps(A + 3 * lda + k);
        __m256 r4 = _mm256_loadu_ps(A + 4 * lda + k), r5 = _mm256_loadu_ps(A + 5 * lda + k);
        __m256 r6 = _mm256_loadu_ps(A + 6 * lda + k), r7 = _mm256_loadu_ps(A + 7 * lda + k);
        __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
        __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
        __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
        __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
        __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)),
               s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
        __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)),
               s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
        __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)),
               s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
        __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)),
               s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
        float *d = dst + k * 8;
        _mm256_storeu_ps(d + 0, _mm256_mul_ps(al, _mm256_permute2f128_ps(s0, s4, 0x20)));
        _mm256_storeu_ps(d + 8, _mm256_mul_ps(al, _mm256_permute2f128_ps(s1, s5, 0x20)));
        _mm256_storeu_ps(d + 16, _mm256_mul_ps(al, _mm256_permute2f128_ps(s2, s6, 0x20)));
        _mm256_storeu_ps(d + 24, _mm256_mul_ps(al, _mm256_permute2f128_ps(s3, s7, 0x20)));
        _mm256_storeu_ps(d + 32, _mm256_mul_ps(al, _mm256_permute2f128_ps(s0, s4, 0x31)));
        _mm256_storeu_ps(d + 40, _mm256_mul_ps(al, _mm256_permute2f128_ps(s1, s5, 0x31)));
        _mm256_storeu_ps(d + 48, _mm256_mul_ps(al, _mm256_permute2f128_ps(s2, s6, 0x31)));
        _mm256_storeu_ps(d + 56, _mm256_mul_ps(al, _mm256_permute2f128_ps(s3, s7, 0x31)));
    }
    for (; k < kc; k++)
        for (int r = 0; r < 8; r++) dst[k * 8 + r] = alpha * A[r * lda + k];
}

/* Skinny products with B transposed (B stored N x K): each output is a dot product of an A row
 * with a B row; B is read once while the m <= 4 rows of A stay in L1. */
void kn_sgemm_rows_bt_avx2(int64_t m, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                           int64_t ldb, float beta, float *C, int64_t ldc) {
    int64_t kfull = K / 8 * 8;
    for (int64_t j = 0; j < N; j++) {
        const float *b = B + j * ldb;
        __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int64_t k = 0; k < kfull; k += 8) {
            __m256 bv = _mm256_loadu_ps(b + k);
            for (int64_t i = 0; i < m; i++) s[i] = _mm256_fmadd_ps(_mm256_loadu_ps(A + i * lda + k), bv, s[i]);
        }
        for (int64_t i = 0; i < m; i++) {
            float t[8];
            _mm256_storeu_ps(t, s[i]);
            float v = ((t[0] + t[4]) + (t[1] + t[5])) + ((t[2] + t[6]) + (t[3] + t[7]));
            for (int64_t k = kfull; k < K; k++) v += A[i * lda + k] * b[k];
            v *= alpha;
            float *c = C + i * ldc + j;
            *c = beta == 0.0f ? v : v + beta * *c;
        }
    }
}

/* Integer product C[M x N] (int32, wrapping like ONNX's int32 result) = A[M x K] * B, both int16
 * (8-bit data less zero points fits), with B packed in k pairs by kn_igemm_pack_b16: one
 * vpmaddwd does 16 multiply-adds, each pair sum exact in int32. */
void kn_igemm_s16_avx2(int64_t M, int64_t N, int64_t K, const int16_t *A, int64_t lda, const int16_t *Bp, int32_t *C,
                       int64_t ldc) {
    int64_t KP = (K + 1) / 2;
    for (int64_t i = 0; i < M; i++) {
        const int16_t *a = A + i * lda;
        int32_t *c = C + i * ldc;
        int64_t j = 0;
        for (; j + 32 <= N; j += 32) {
            __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
            __m256i s2 = _mm256_setzero_si256(), s3 = _mm256_setzero_si256();
            const int16_t *b = Bp + 2 * j;
            for (int64_t kp = 0; kp < KP; kp++, b += 2 * N) {
                int32_t hi = 2 * kp + 1 < K ? a[2 * kp + 1] : 0;
                __m256i av = _mm256_set1_epi32((int32_t)(uint16_t)a[2 * kp] | (int32_t)((uint32_t)(uint16_t)hi << 16));
                s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(av, _mm256_loadu_si256((const __m256i *)b)));
                s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(av, _mm256_loadu_si256((const __m256i *)(b + 16))));
                s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(av, _mm256_loadu_si256((const __m256i *)(b + 32))));
                s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(av, _mm256_loadu_si256((const __m256i *)(b + 48))));
            }
            _mm256_storeu_si256((__m256i *)(c + j), s0);
            _mm256_storeu_si256((__m256i *)(c + j + 8), s1);
            _mm256_storeu_si256((__m256i *)(c + j + 16), s2);
            _mm256_storeu_si256((__m256i *)(c + j + 24), s3);
        }
        for (; j + 8 <= N; j += 8) {
            __m256i s0 = _mm256_setzero_si256();
            const int16_t *b = Bp + 2 * j;
            for (int64_t kp = 0; kp < KP; kp++, b += 2 * N) {
                int32_t hi = 2 * kp + 1 < K ? a[2 * kp + 1] : 0;
                __m256i av = _mm256_set1_epi32((int32_t)(uint16_t)a[2 * kp] | (int32_t)((uint32_t)(uint16_t)hi << 16));
                s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(av, _mm256_loadu_si256((const __m256i *)b)));
            }
            _mm256_storeu_si256((__m256i *)(c + j), s0);
        }
        for (; j < N; j++) {
            uint32_t s = 0;
            for (int64_t k = 0; k < K; k++) s += (uint32_t)((int32_t)a[k] * Bp[(k / 2) * 2 * N + 2 * j + (k & 1)]);
            c[j] = (int32_t)s;
        }
    }
}

/* Skinny rows on packed B, as kn_sgemm_rows_packed_avx512 with 16-wide panels. */
/* The body for a constant m (1..4, each call site below passes a literal), so that the m x 2 sums
 * stay in registers (with a run-time m they lived in a stack array, every FMA a load-add-store
 * round trip); one row splits K into even and odd steps for four FMA chains rather than two. */
static inline __attribute__((always_inline)) void rows_packed_m(const int m, int64_t j0, int64_t n, int64_t K,
                                                                int64_t kc_max, float alpha, const float *A,
                                                                int64_t lda, const float *Bp, int64_t slice_stride,
                                                                float beta, float *C, int64_t ldc) {
    const int nr = KN_SGEMM_AVX2_NR;
    for (int64_t j = 0; j < n; j += nr) {
        __m256 acc[4][2], odd[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int i = 0; i < 4; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        for (int64_t pc = 0; pc < K; pc += kc_max) {
            int64_t kc = K - pc < kc_max ? K - pc : kc_max;
            const float *b = Bp + (pc / kc_max) * slice_stride + (j0 + j) * kc;
            int64_t k = 0;
            if (m == 1)
                for (; k + 2 <= kc; k += 2, b += 2 * nr) {
                    __m256 a0 = _mm256_set1_ps(A[pc + k]), a1 = _mm256_set1_ps(A[pc + k + 1]);
                    acc[0][0] = _mm256_fmadd_ps(a0, _mm256_loadu_ps(b), acc[0][0]);
                    acc[0][1] = _mm256_fmadd_ps(a0, _mm256_loadu_ps(b + 8), acc[0][1]);
                    odd[0] = _mm256_fmadd_ps(a1, _mm256_loadu_ps(b + nr), odd[0]);
                    odd[1] = _mm256_fmadd_ps(a1, _mm256_loadu_ps(b + nr + 8), odd[1]);
                }
            for (; k < kc; k++, b += nr) {
                __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
                for (int i = 0; i < m; i++) {
                    __m256 a = _mm256_set1_ps(A[i * lda + pc + k]);
                    acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
                }
            }
        }
        if (m == 1) {
            acc[0][0] = _mm256_add_ps(acc[0][0], odd[0]);
            acc[0][1] = _mm256_add_ps(acc[0][1], odd[1]);
        }
        int64_t w = n - j < nr ? n - j : nr;
        for (int i = 0; i < m; i++) {
            float out[16];
            _mm256_storeu_ps(out, acc[i][0]);
            _mm256_storeu_ps(out + 8, acc[i][1]);
            float *c = C + i * ldc + j;
            for (int64_t q = 0; q < w; q++) c[q] = beta == 0.0f ? alpha * out[q] : alpha * out[q] + beta * c[q];
        }
    }
}

void kn_sgemm_rows_packed_avx2(int64_t m, int64_t j0, int64_t n, int64_t K, int64_t kc_max, float alpha, const float *A,
                               int64_t lda, const float *Bp, int64_t slice_stride, float beta, float *C, int64_t ldc) {
    switch (m) {
    case 1: rows_packed_m(1, j0, n, K, kc_max, alpha, A, lda, Bp, slice_stride, beta, C, ldc); break;
    case 2: rows_packed_m(2, j0, n, K, kc_max, alpha, A, lda, Bp, slice_stride, beta, C, ldc); break;
    case 3: rows_packed_m(3, j0, n, K, kc_max, alpha, A, lda, Bp, slice_stride, beta, C, ldc); break;
    default: rows_packed_m(4, j0, n, K, kc_max, alpha, A, lda, Bp, slice_stride, beta, C, ldc); break;
    }
}
