/* The AVX2+FMA float32 vector vocabulary (V vector, VI integer vector, W lanes, compare masks
 * and the v* operations) in which kiln's vector math is written once (kernels/cpu/vmath.h,
 * elementwise_simd_impl.h); included only by files compiled for AVX2+FMA. */
#ifndef KN_SIMD_AVX2_H
#define KN_SIMD_AVX2_H
#include <immintrin.h>

typedef __m256 V;
typedef __m256i VI;
#define W 8
#define vset1(c) _mm256_set1_ps(c)
#define vset1i(c) _mm256_set1_epi32(c)
#define vload(p) _mm256_loadu_ps(p)
#define vstore(p, v) _mm256_storeu_ps((p), (v))
#define vadd(a, b) _mm256_add_ps(a, b)
#define vsub(a, b) _mm256_sub_ps(a, b)
#define vmul(a, b) _mm256_mul_ps(a, b)
#define vdiv(a, b) _mm256_div_ps(a, b)
#define vmin(a, b) _mm256_min_ps(a, b)
#define vmax(a, b) _mm256_max_ps(a, b)
#define vfmadd(a, b, c) _mm256_fmadd_ps(a, b, c)
#define vfmsub(a, b, c) _mm256_fmsub_ps(a, b, c)
#define vfnmadd(a, b, c) _mm256_fnmadd_ps(a, b, c)
#define vround(a) _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vcvti(a) _mm256_cvtps_epi32(a)
#define vcastf(a) _mm256_castsi256_ps(a)
#define vaddi(a, b) _mm256_add_epi32(a, b)
#define vsubi(a, b) _mm256_sub_epi32(a, b)
#define vslli(a, k) _mm256_slli_epi32(a, k)
#define vsrai(a, k) _mm256_srai_epi32(a, k)
#define vabs(a) _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a)
#define vcopysign(mag, s) _mm256_or_ps(vabs(mag), _mm256_and_ps(_mm256_set1_ps(-0.0f), s))
#define vcmp_lt(a, b) _mm256_cmp_ps(a, b, _CMP_LT_OQ)
#define vcmp_gt(a, b) _mm256_cmp_ps(a, b, _CMP_GT_OQ)
#define vcmp_unord(a, b) _mm256_cmp_ps(a, b, _CMP_UNORD_Q)
#define vsel(m, t, f) _mm256_blendv_ps(f, t, m)
/* the first k lanes (0 <= k <= W) of p, the rest 0; lanes past k are neither read nor written */
#define vmask_n(k) _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(k)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define vload_n(p, k) _mm256_maskload_ps((p), vmask_n(k))
#define vstore_n(p, v, k) _mm256_maskstore_ps((p), vmask_n(k), (v))
/* the lanes a <= l < b (any a, b; clamped to [0, W)) as a load mask */
typedef __m256i VM;
static inline VM vmask_range(int64_t a, int64_t b) {
    a = a < -1 ? -1 : a > W ? W : a;
    b = b < 0 ? 0 : b > W ? W : b;
    __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_and_si256(_mm256_cmpgt_epi32(iota, _mm256_set1_epi32((int)a - 1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32((int)b), iota));
}
#define vload_mask(p, m) _mm256_maskload_ps((p), (m))
/* the even lanes of a then b: a0 a2 a4 a6 b0 b2 b4 b6 */
#define veven(a, b) _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xd8))

#endif
