/* AVX-512F row kernels for float32: the same operations as reduce_avx2.c (sum/mean/max/min
 * rows, stable softmax / log-softmax, layer normalisation over the last axis), with masked
 * loads for row tails. Only called after a runtime check for AVX-512 F/BW/VL/DQ
 * (kn_red_simd_level in reduce.c). */
#include "kernels/cpu/rows.h"
#include "kernels/cpu/simd_avx512.h"
#include "kernels/cpu/vmath.h"
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

static inline __mmask16 tail16(int64_t rem) { return (__mmask16)((1u << rem) - 1u); }

void kn_reduce_rows_f32_avx512(const float *x, float *y, int64_t rows, int64_t n, int kind) {
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        int64_t i = 0;
        if (kind <= 1) { /* sum, mean */
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
            for (; i + 32 <= n; i += 32) {
                a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
                a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
            }
            for (; i + 16 <= n; i += 16) a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
            if (i < n) a1 = _mm512_add_ps(a1, _mm512_maskz_loadu_ps(tail16(n - i), p + i));
            float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
            y[r] = kind == 1 ? s / (float)n : s;
        } else {
            const bool is_max = kind == 2;
            __m512 id = _mm512_set1_ps(is_max ? -INFINITY : INFINITY);
            __m512 a = id;
            __mmask16 nan = 0;
            for (; i + 16 <= n; i += 16) {
                __m512 v = _mm512_loadu_ps(p + i);
                nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
                a = is_max ? _mm512_max_ps(a, v) : _mm512_min_ps(a, v);
            }
            if (i < n) {
                __m512 v = _mm512_mask_loadu_ps(id, tail16(n - i), p + i);
                nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
                a = is_max ? _mm512_max_ps(a, v) : _mm512_min_ps(a, v);
            }
            y[r] = nan ? NAN : (is_max ? _mm512_reduce_max_ps(a) : _mm512_reduce_min_ps(a));
        }
    }
}

void kn_softmax_rows_f32_avx512(const float *x, float *y, int64_t rows, int64_t n, int log_out) {
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        float *q = y + r * n;
        int64_t i;
        const __m512 ninf = _mm512_set1_ps(-INFINITY);
        __m512 mv = ninf;
        /* max ignoring NaN: a NaN poisons the sum below anyway, as in the reference */
        for (i = 0; i + 16 <= n; i += 16) mv = _mm512_max_ps(_mm512_loadu_ps(p + i), mv);
        if (i < n) mv = _mm512_max_ps(_mm512_mask_loadu_ps(ninf, tail16(n - i), p + i), mv);
        float m = _mm512_reduce_max_ps(mv);
        __m512 vm = _mm512_set1_ps(m), sv = _mm512_setzero_ps();
        if (log_out) {
            for (i = 0; i + 16 <= n; i += 16)
                sv = _mm512_add_ps(sv, kn_vexp(_mm512_sub_ps(_mm512_loadu_ps(p + i), vm)));
            if (i < n) {
                __mmask16 mk = tail16(n - i);
                sv = _mm512_mask_add_ps(sv, mk, sv, kn_vexp(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, p + i), vm)));
            }
            /* (x - max) - log(sum): folding max + log(sum) first loses bits for large x */
            __m512 sh = _mm512_set1_ps(logf(_mm512_reduce_add_ps(sv)));
            for (i = 0; i + 16 <= n; i += 16)
                _mm512_storeu_ps(q + i, _mm512_sub_ps(_mm512_sub_ps(_mm512_loadu_ps(p + i), vm), sh));
            if (i < n) {
                __mmask16 mk = tail16(n - i);
                _mm512_mask_storeu_ps(q + i, mk,
                                      _mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, p + i), vm), sh));
            }
        } else {
            for (i = 0; i + 16 <= n; i += 16) {
                __m512 e = kn_vexp(_mm512_sub_ps(_mm512_loadu_ps(p + i), vm));
                _mm512_storeu_ps(q + i, e);
                sv = _mm512_add_ps(sv, e);
            }
            if (i < n) {
                __mmask16 mk = tail16(n - i);
                __m512 e = kn_vexp(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, p + i), vm));
                _mm512_mask_storeu_ps(q + i, mk, e);
                sv = _mm512_mask_add_ps(sv, mk, sv, e);
            }
            __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sv));
            for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(q + i, _mm512_mul_ps(_mm512_loadu_ps(q + i), inv));
            if (i < n) {
                __mmask16 mk = tail16(n - i);
                _mm512_mask_storeu_ps(q + i, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, q + i), inv));
            }
        }
    }
}

/* Same contract as kn_layernorm_rows_f32_avx2. */
void kn_layernorm_rows_f32_avx512(const float *x, float *y, int64_t rows, int64_t n, const float *scale,
                                  const float *bias, float eps, float *mean, float *invstd) {
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        float *q = y + r * n;
        int64_t i;
        __m512 sv = _mm512_setzero_ps();
        for (i = 0; i + 16 <= n; i += 16) sv = _mm512_add_ps(sv, _mm512_loadu_ps(p + i));
        if (i < n) sv = _mm512_add_ps(sv, _mm512_maskz_loadu_ps(tail16(n - i), p + i));
        float mu = _mm512_reduce_add_ps(sv) / (float)n;
        __m512 vmu = _mm512_set1_ps(mu), vv = _mm512_setzero_ps();
        for (i = 0; i + 16 <= n; i += 16) {
            __m512 d = _mm512_sub_ps(_mm512_loadu_ps(p + i), vmu);
            vv = _mm512_fmadd_ps(d, d, vv);
        }
        if (i < n) {
            __mmask16 mk = tail16(n - i);
            __m512 d = _mm512_maskz_sub_ps(mk, _mm512_maskz_loadu_ps(mk, p + i), vmu);
            vv = _mm512_fmadd_ps(d, d, vv);
        }
        float inv = 1.0f / sqrtf(_mm512_reduce_add_ps(vv) / (float)n + eps);
        if (mean) mean[r] = mu;
        if (invstd) invstd[r] = inv;
        __m512 vinv = _mm512_set1_ps(inv);
        for (i = 0; i < n; i += 16) {
            __mmask16 mk = n - i >= 16 ? (__mmask16)0xFFFF : tail16(n - i);
            __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, p + i), vmu), vinv),
                                     _mm512_maskz_loadu_ps(mk, scale + i));
            if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, bias + i));
            _mm512_mask_storeu_ps(q + i, mk, v);
        }
    }
}
