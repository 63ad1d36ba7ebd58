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

#endif
