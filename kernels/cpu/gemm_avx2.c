/* AVX2+FMA micro-kernels for kn_sgemm (gemm.c picks them at run time): a 6 x 16 register tile
 * (12 ymm accumulators plus two B vectors and a broadcast fit the 16 registers) and a
 * skinny-rows kernel for M <= 4. */
#include "kernels/cpu/gemm.h"
#include <immintrin.h>

#define MR KN_SGEMM_AVX2_MR
#define NR KN_SGEMM_AVX2_NR

#define ROW_FMA(r, c0, c1)                                   \
    do {                                                     \
        __m256 a_ = _mm256_broadcast_ss(Ap + (r));           \
        c0 = _mm256_fmadd_ps(a_, b0, c0);                    \
        c1 = _mm256_fmadd_ps(a_, b1, c1);                    \
    } while (0)

#define ROW_STORE(r, c0, c1)                                                              \
    do {                                                                                  \
        float *p_ = C + (r) * ldc;                                                        \
        if (beta == 0.0f) {                                                               \
            _mm256_storeu_ps(p_, c0); _mm256_storeu_ps(p_ + 8, c1);                        \
        } else if (beta == 1.0f) {                                                        \
            _mm256_storeu_ps(p_, _mm256_add_ps(c0, _mm256_loadu_ps(p_)));                 \
            _mm256_storeu_ps(p_ + 8, _mm256_add_ps(c1, _mm256_loadu_ps(p_ + 8)));         \
        } else {                                                                          \
            __m256 bv_ = _mm256_set1_ps(beta);                                            \
            _mm256_storeu_ps(p_, _mm256_fmadd_ps(bv_, _mm256_loadu_ps(p_), c0));          \
            _mm256_storeu_ps(p_ + 8, _mm256_fmadd_ps(bv_, _mm256_loadu_ps(p_ + 8), c1));  \
        }                                                                                 \
    } while (0)

void kn_sgemm_micro_avx2(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc, float beta)
{
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
        ROW_FMA(0, c00, c01); ROW_FMA(1, c10, c11); ROW_FMA(2, c20, c21);
        ROW_FMA(3, c30, c31); ROW_FMA(4, c40, c41); ROW_FMA(5, c50, c51);
        Ap += MR;
        Bp += NR;
    }
    ROW_STORE(0, c00, c01); ROW_STORE(1, c10, c11); ROW_STORE(2, c20, c21);
    ROW_STORE(3, c30, c31); ROW_STORE(4, c40, c41); ROW_STORE(5, c50, c51);
}

static inline __m256i tail_mask(int64_t n)
{
    static const int32_t lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(lanes + 8 - (n > 8 ? 8 : n)));
}

void kn_sgemm_rows_avx2(int64_t m, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    for (int64_t i = 0; i < m; i++) {
        const float *a = A + i * lda;
        float *c = C + i * ldc;
        int64_t j = 0;
        for (; j + 32 <= N; j += 32) {
            __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
            __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
            const float *b = B + j;
            for (int64_t k = 0; k < K; k++, b += ldb) {
                __m256 av = _mm256_set1_ps(a[k]);
                s0 = _mm256_fmadd_ps(av, _mm256_loadu_ps(b), s0);
                s1 = _mm256_fmadd_ps(av, _mm256_loadu_ps(b + 8), s1);
                s2 = _mm256_fmadd_ps(av, _mm256_loadu_ps(b + 16), s2);
                s3 = _mm256_fmadd_ps(av, _mm256_loadu_ps(b + 24), s3);
            }
            __m256 al = _mm256_set1_ps(alpha);
            __m256 r[4] = {_mm256_mul_ps(al, s0), _mm256_mul_ps(al, s1), _mm256_mul_ps(al, s2), _mm256_mul_ps(al, s3)};
            for (int q = 0; q < 4; q++) {
                float *p = c + j + 8 * q;
                if (beta != 0.0f) r[q] = _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(p), r[q]);
                _mm256_storeu_ps(p, r[q]);
            }
        }
        for (; j < N; j += 8) {
            __m256i mk = tail_mask(N - j);
            __m256 s0 = _mm256_setzero_ps();
            const float *b = B + j;
            for (int64_t k = 0; k < K; k++, b += ldb)
                s0 = _mm256_fmadd_ps(_mm256_set1_ps(a[k]), _mm256_maskload_ps(b, mk), s0);
            s0 = _mm256_mul_ps(_mm256_set1_ps(alpha), s0);
            if (beta != 0.0f)
                s0 = _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_maskload_ps(c + j, mk), s0);
            _mm256_maskstore_ps(c + j, mk, s0);
        }
    }
}
