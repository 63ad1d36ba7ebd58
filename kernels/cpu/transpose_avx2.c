/* AVX2 transpose of 4-byte elements: 8x8 blocks transposed in registers (unpack, shuffle,
 * permute), so each block reads 8 rows and writes 8 rows with full-width moves instead of 64
 * strided scalar stores. Picked at run time by kernels/cpu/shape_ops.c; the scalar blocked
 * path there is the reference the unit tests compare against. */
#include <immintrin.h>
#include <stdint.h>

static inline void tr8x8(const float *s, int64_t ls, float *d, int64_t ld) {
    __m256 r0 = _mm256_loadu_ps(s + 0 * ls), r1 = _mm256_loadu_ps(s + 1 * ls);
    __m256 r2 = _mm256_loadu_ps(s + 2 * ls), r3 = _mm256_loadu_ps(s + 3 * ls);
    __m256 r4 = _mm256_loadu_ps(s + 4 * ls), r5 = _mm256_loadu_ps(s + 5 * ls);
    __m256 r6 = _mm256_loadu_ps(s + 6 * ls), r7 = _mm256_loadu_ps(s + 7 * ls);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)),
           u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)),
           u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)),
           u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)),
           u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(d + 0 * ld, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(d + 1 * ld, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(d + 2 * ld, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(d + 3 * ld, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(d + 4 * ld, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(d + 5 * ld, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(d + 6 * ld, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(d + 7 * ld, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* dst[c * rows + r] = src[r * cols + c] for r in [r0, r1), c in [c0, c1). Elements are moved as
 * float bit patterns (no arithmetic), so any 4-byte type is exact. */
void kn_transpose_tile32_avx2(const void *src, void *dst, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                              int64_t c0, int64_t c1) {
    const float *s = src;
    float *d = dst;
    int64_t rv = r0 + ((r1 - r0) & ~(int64_t)7), cv = c0 + ((c1 - c0) & ~(int64_t)7);
    for (int64_t r = r0; r < rv; r += 8)
        for (int64_t c = c0; c < cv; c += 8) tr8x8(s + r * cols + c, cols, d + c * rows + r, rows);
    /* ragged edges */
    for (int64_t r = r0; r < r1; r++)
        for (int64_t c = (r < rv ? cv : c0); c < c1; c++) d[c * rows + r] = s[r * cols + c];
}
