/* The AVX-512F float32 vector vocabulary (V vector, VI integer vector, W lanes, compare masks
 * and the v* operations) in which kiln's vector math is written once (kernels/cpu/vmath.h,
 * elementwise_simd_impl.h); included only by files compiled for AVX-512F. */
#ifndef KN_SIMD_AVX512_H
#define KN_SIMD_AVX512_H
#include <immintrin.h>

typedef __m512 V;
typedef __m512i VI;
#define W 16
#define vset1(c) _mm512_set1_ps(c)
#define vset1i(c) _mm512_set1_epi32(c)
#define vload(p) _mm512_loadu_ps(p)
#define vstore(p, v) _mm512_storeu_ps((p), (v))
#define vadd(a, b) _mm512_add_ps(a, b)
#define vsub(a, b) _mm512_sub_ps(a, b)
#define vmul(a, b) _mm512_mul_ps(a, b)
#define vdiv(a, b) _mm512_div_ps(a, b)
#define vmin(a, b) _mm512_min_ps(a, b)
#define vmax(a, b) _mm512_max_ps(a, b)
#define vfmadd(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vfmsub(a, b, c) _mm512_fmsub_ps(a, b, c)
#define vfnmadd(a, b, c) _mm512_fnmadd_ps(a, b, c)
#define vround(a) _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vcvti(a) _mm512_cvtps_epi32(a)
#define vcastf(a) _mm512_castsi512_ps(a)
#define vaddi(a, b) _mm512_add_epi32(a, b)
#define vsubi(a, b) _mm512_sub_epi32(a, b)
#define vslli(a, k) _mm512_slli_epi32(a, k)
#define vsrai(a, k) _mm512_srai_epi32(a, k)
#define vabs(a) _mm512_abs_ps(a)
#define vcopysign(mag, s) \
    _mm512_castsi512_ps( \
        _mm512_or_si512(_mm512_castps_si512(_mm512_abs_ps(mag)), \
                        _mm512_and_si512(_mm512_castps_si512(s), _mm512_set1_epi32((int)0x80000000u))))
#define vcmp_lt(a, b) _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ)
#define vcmp_gt(a, b) _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ)
#define vcmp_unord(a, b) _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q)
#define vsel(m, t, f) _mm512_mask_blend_ps(m, f, t)
/* the first k lanes (0 <= k <= W) of p, the rest 0; lanes past k are neither read nor written */
#define vload_n(p, k) _mm512_maskz_loadu_ps((__mmask16)((1u << (k)) - 1u), p)
#define vstore_n(p, v, k) _mm512_mask_storeu_ps((p), (__mmask16)((1u << (k)) - 1u), (v))
/* the lanes a <= l < b (any a, b; clamped to [0, W)) as a load mask */
typedef __mmask16 VM;
static inline VM vmask_range(int64_t a, int64_t b) {
    a = a < 0 ? 0 : a;
    b = b > W ? W : b;
    return b <= a ? (VM)0 : (VM)(((1u << b) - 1u) & ~((1u << a) - 1u));
}
#define vload_mask(p, m) _mm512_maskz_loadu_ps((m), (p))
/* the even lanes of a then b: a0 a2 ... a14 b0 b2 ... b14 */
#define veven(a, b) \
    _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), b)

#endif
