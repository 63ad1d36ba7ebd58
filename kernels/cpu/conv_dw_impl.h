/* Body of the direct convolution row kernel (see conv_dw.h), written once in the V vocabulary
 * of simd_avx2.h / simd_avx512.h and instantiated per ISA by the file that includes it after
 * defining KN_DW_NAME. Four vectors of outputs stay in registers while the taps stream past, so
 * each weight broadcast serves 4*W products. */
#include "kernels/cpu/conv_dw.h"
#include "kernels/cpu/vmath.h"

static inline V kn_dw_act(V a, int act, V vlo, V vhi) {
    if (act == KN_CONV_DW_CLAMP) return vmin(vmax(a, vlo), vhi);
    return vdiv(a, vadd(vset1(1.0f), kn_vexp(vsub(vset1(0.0f), a)))); /* SiLU */
}

void KN_DW_NAME(float *out, const float *const *src, const float *wt, int ntaps, int64_t n, float bias, int act,
                float lo, float hi) {
    V vb = vset1(bias), vlo = vset1(lo), vhi = vset1(hi);
    int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
        V a0 = vb, a1 = vb, a2 = vb, a3 = vb;
        for (int t = 0; t < ntaps; t++) {
            V wv = vset1(wt[t]);
            const float *s = src[t] + i;
            a0 = vfmadd(wv, vload(s), a0);
            a1 = vfmadd(wv, vload(s + W), a1);
            a2 = vfmadd(wv, vload(s + 2 * W), a2);
            a3 = vfmadd(wv, vload(s + 3 * W), a3);
        }
        if (act) {
            a0 = kn_dw_act(a0, act, vlo, vhi);
            a1 = kn_dw_act(a1, act, vlo, vhi);
            a2 = kn_dw_act(a2, act, vlo, vhi);
            a3 = kn_dw_act(a3, act, vlo, vhi);
        }
        vstore(out + i, a0);
        vstore(out + i + W, a1);
        vstore(out + i + 2 * W, a2);
        vstore(out + i + 3 * W, a3);
    }
    for (; i < n; i += W) {
        V a0 = vb;
        for (int t = 0; t < ntaps; t++) a0 = vfmadd(vset1(wt[t]), vload(src[t] + i), a0);
        if (act) a0 = kn_dw_act(a0, act, vlo, vhi);
        vstore(out + i, a0);
    }
}

void KN_BA_NAME(float *r, int64_t n, float bias, int act, float lo, float hi) {
    V vb = vset1(bias), vlo = vset1(lo), vhi = vset1(hi);
    int64_t i = 0;
    if (act)
        for (; i + W <= n; i += W) vstore(r + i, kn_dw_act(vadd(vload(r + i), vb), act, vlo, vhi));
    else
        for (; i + W <= n; i += W) vstore(r + i, vadd(vload(r + i), vb));
    kn_conv_bias_act_scalar(r + i, n - i, bias, act, lo, hi);
}
