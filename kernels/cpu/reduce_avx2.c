/* AVX2+FMA row kernels for float32: sum/mean/max/min over contiguous rows, stable softmax and
 * log-softmax, and layer normalisation over the last axis. Compiled with -mavx2 -mfma and only
 * called after a runtime CPU check (kn_red_simd_level in reduce.c). The scalar versions in
 * reduce.c / softmax.c / norm.c are the reference the unit tests compare against. */
#include "kernels/cpu/rows.h"
#include "kernels/cpu/simd_avx2.h"
#include "kernels/cpu/vmath.h"
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float hmax8(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float hmin8(__m256 v) {
    __m128 s = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_min_ps(s, _mm_movehl_ps(s, s));
    s = _mm_min_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Masked load helpers for the last partial vector of a row (0 < rem < 8). */
static inline __m256i tail_mask(int64_t rem) {
    const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(m + 8 - rem));
}

void kn_reduce_rows_f32_avx2(const float *x, float *y, int64_t rows, int64_t n, int kind) {
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        int64_t i = 0;
        if (kind <= 1) { /* sum, mean */
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            for (; i + 16 <= n; i += 16) {
                a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
                a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
            }
            for (; i + 8 <= n; i += 8) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
            if (i < n) a1 = _mm256_add_ps(a1, _mm256_maskload_ps(p + i, tail_mask(n - i)));
            float s = hsum8(_mm256_add_ps(a0, a1));
            y[r] = kind == 1 ? s / (float)n : s;
        } else {
            const bool is_max = kind == 2;
            __m256 id = _mm256_set1_ps(is_max ? -INFINITY : INFINITY);
            __m256 a = id, nan = _mm256_setzero_ps();
            for (; i + 8 <= n; i += 8) {
                __m256 v = _mm256_loadu_ps(p + i);
                nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
                a = is_max ? _mm256_max_ps(a, v) : _mm256_min_ps(a, v);
            }
            if (i < n) {
                __m256i m = tail_mask(n - i);
                __m256 v = _mm256_blendv_ps(id, _mm256_maskload_ps(p + i, m), _mm256_castsi256_ps(m));
                nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
                a = is_max ? _mm256_max_ps(a, v) : _mm256_min_ps(a, v);
            }
            y[r] = _mm256_movemask_ps(nan) ? NAN : (is_max ? hmax8(a) : hmin8(a));
        }
    }
}

void kn_softmax_rows_f32_avx2(const float *x, float *y, int64_t rows, int64_t n, int log_out) {
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        float *q = y + r * n;
        int64_t i;
        /* max ignoring NaN: a NaN poisons the sum below anyway, as in the reference */
        __m256 mv = _mm256_set1_ps(-INFINITY);
        for (i = 0; i + 8 <= n; i += 8) mv = _mm256_max_ps(_mm256_loadu_ps(p + i), mv);
        float m = hmax8(mv);
        for (; i < n; i++)
            if (p[i] > m) m = p[i];
        __m256 vm = _mm256_set1_ps(m), sv = _mm256_setzero_ps();
        float s = 0;
        if (log_out) {
            for (i = 0; i + 8 <= n; i += 8) sv = _mm256_add_ps(sv, kn_vexp(_mm256_sub_ps(_mm256_loadu_ps(p + i), vm)));
            if (i < n) {
                __m256i mk = tail_mask(n - i);
                __m256 e = kn_vexp(_mm256_sub_ps(_mm256_maskload_ps(p + i, mk), vm));
                sv = _mm256_add_ps(sv, _mm256_and_ps(e, _mm256_castsi256_ps(mk)));
            }
            s = hsum8(sv);
            /* (x - max) - log(sum): folding max + log(sum) first loses bits for large x */
            __m256 sh = _mm256_set1_ps(logf(s));
            for (i = 0; i + 8 <= n; i += 8)
                _mm256_storeu_ps(q + i, _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(p + i), vm), sh));
            if (i < n) {
                __m256i mk = tail_mask(n - i);
                _mm256_maskstore_ps(q + i, mk, _mm256_sub_ps(_mm256_sub_ps(_mm256_maskload_ps(p + i, mk), vm), sh));
            }
        } else {
            for (i = 0; i + 8 <= n; i += 8) {
                __m256 e = kn_vexp(_mm256_sub_ps(_mm256_loadu_ps(p + i), vm));
                _mm256_storeu_ps(q + i, e);
                sv = _mm256_add_ps(sv, e);
            }
            if (i < n) {
                __m256i mk = tail_mask(n - i);
                __m256 e =
                    _mm256_and_ps(kn_vexp(_mm256_sub_ps(_mm256_maskload_ps(p + i, mk), vm)), _mm256_castsi256_ps(mk));
                _mm256_maskstore_ps(q + i, mk, e);
                sv = _mm256_add_ps(sv, e);
            }
            s = hsum8(sv);
            __m256 inv = _mm256_set1_ps(1.0f / s);
            for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(q + i, _mm256_mul_ps(_mm256_loadu_ps(q + i), inv));
            if (i < n) {
                __m256i mk = tail_mask(n - i);
                _mm256_maskstore_ps(q + i, mk, _mm256_mul_ps(_mm256_maskload_ps(q + i, mk), inv));
            }
        }
    }
}

/* y = (x - mean) * invstd * scale + bias per row; scale/bias hold n values (bias may be NULL);
 * mean/invstd receive one value per row when non-NULL. Two passes for the variance (no
 * cancellation), fp32 accumulation in 8 lanes. */
void kn_layernorm_rows_f32_avx2(const float *x, float *y, int64_t rows, int64_t n, const float *scale,
                                const float *bias, float eps, float *mean, float *invstd) {
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        float *q = y + r * n;
        int64_t i;
        __m256 sv = _mm256_setzero_ps();
        for (i = 0; i + 8 <= n; i += 8) sv = _mm256_add_ps(sv, _mm256_loadu_ps(p + i));
        if (i < n) sv = _mm256_add_ps(sv, _mm256_maskload_ps(p + i, tail_mask(n - i)));
        float mu = hsum8(sv) / (float)n;
        __m256 vmu = _mm256_set1_ps(mu), vv = _mm256_setzero_ps();
        for (i = 0; i + 8 <= n; i += 8) {
            __m256 d = _mm256_sub_ps(_mm256_loadu_ps(p + i), vmu);
            vv = _mm256_fmadd_ps(d, d, vv);
        }
        if (i < n) {
            __m256i mk = tail_mask(n - i);
            __m256 d = _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(p + i, mk), vmu), _mm256_castsi256_ps(mk));
            vv = _mm256_fmadd_ps(d, d, vv);
        }
        float inv = 1.0f / sqrtf(hsum8(vv) / (float)n + eps);
        if (mean) mean[r] = mu;
        if (invstd) invstd[r] = inv;
        __m256 vinv = _mm256_set1_ps(inv);
        for (i = 0; i + 8 <= n; i += 8) {
            __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(p + i), vmu), vinv),
                                     _mm256_loadu_ps(scale + i));
            if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + i));
            _mm256_storeu_ps(q + i, v);
        }
        for (; i < n; i++) {
            float v = (p[i] - mu) * inv * scale[i];
            q[i] = bias ? v + bias[i] : v;
        }
    }
}
