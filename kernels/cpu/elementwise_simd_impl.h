/* The vectorised float32 elementwise kernels, written once over the vector vocabulary (V vector,
 * VI integer vector, W lanes, compare masks, the v* macros) of simd_avx2.h or simd_avx512.h,
 * which elementwise_avx2.c / elementwise_avx512.c include before this file.
 * exp is kn_vexp (vmath.h), shared with the softmax rows; erf uses x*P(x^2) for |x| < 1 and
 * 1 - exp(-x^2)*Q(1/|x|) above, with P and Q least-squares fits made for kiln (relative
 * error well under 1e-6 in float arithmetic). Tails go through a W-lane stack buffer. */
#include "kernels/cpu/elementwise_simd.h"
#include "kernels/cpu/vmath.h"
#include <string.h>

#define KN_EW_CAT2(a, b) a##_##b
#define KN_EW_CAT(a, b) KN_EW_CAT2(a, b)
#define KN_EW_FN(name) KN_EW_CAT(name, KN_EW_SUFFIX)

/* erfc(t) * exp(t^2) for t in [1, 6], as a polynomial in u = 1/t */
static inline V ew_erfc_scaled(V u) {
    V q = vset1(-5.239374191e-02f);
    q = vfmadd(q, u, vset1(3.506112993e-01f));
    q = vfmadd(q, u, vset1(-1.039854527e+00f));
    q = vfmadd(q, u, vset1(1.777756810e+00f));
    q = vfmadd(q, u, vset1(-1.873282552e+00f));
    q = vfmadd(q, u, vset1(1.129651070e+00f));
    q = vfmadd(q, u, vset1(-1.717078090e-01f));
    q = vfmadd(q, u, vset1(-2.548139393e-01f));
    q = vfmadd(q, u, vset1(-2.722004661e-03f));
    q = vfmadd(q, u, vset1(5.643426180e-01f));
    return vfmadd(q, u, vset1(-3.628523700e-06f));
}

/* erf(x)/x for |x| < 1, as a polynomial in s = x^2 */
static inline V ew_erf_small(V s) {
    V p = vset1(7.932484004e-05f);
    p = vfmadd(p, s, vset1(-8.034514030e-04f));
    p = vfmadd(p, s, vset1(5.191176198e-03f));
    p = vfmadd(p, s, vset1(-2.685537376e-02f));
    p = vfmadd(p, s, vset1(1.128362492e-01f));
    p = vfmadd(p, s, vset1(-3.761262894e-01f));
    return vfmadd(p, s, vset1(1.128379226e+00f));
}

/* erfc(t) for t = |x| >= 1 (t clamped to 6, beyond which erfc is below float resolution of 1) */
static inline V ew_erfc_large(V t) {
    t = vmin(vmax(t, vset1(1.0f)), vset1(6.0f));
    V t2 = vmul(t, t);
    V t2e = vfmsub(t, t, t2); /* rounding error of t*t, so exp(-t^2) keeps full accuracy */
    V e = vmul(kn_vexp(vsub(vset1(0.0f), t2)), vsub(vset1(1.0f), t2e));
    return vmul(e, ew_erfc_scaled(vdiv(vset1(1.0f), t)));
}

static inline V ew_erf(V x) {
    V ax = vabs(x);
    V small = vmul(x, ew_erf_small(vmul(x, x)));
    V large = vsub(vset1(1.0f), ew_erfc_large(ax));
    large = vcopysign(large, x);
    V r = vsel(vcmp_lt(ax, vset1(1.0f)), small, large);
    return vsel(vcmp_unord(x, x), x, r);
}

static inline V ew_tanh(V x) {
    V ax = vabs(x);
    V z = vmul(x, x);
    V p = vset1(-5.70498872745e-3f);
    p = vfmadd(p, z, vset1(2.06390887954e-2f));
    p = vfmadd(p, z, vset1(-5.37397155531e-2f));
    p = vfmadd(p, z, vset1(1.33314422036e-1f));
    p = vfmadd(p, z, vset1(-3.33332819422e-1f));
    V small = vfmadd(vmul(p, z), x, x);
    V e = kn_vexp(vmul(vset1(2.0f), vmin(ax, vset1(9.0f))));
    V large = vsub(vset1(1.0f), vdiv(vset1(2.0f), vadd(e, vset1(1.0f))));
    large = vcopysign(large, x);
    V r = vsel(vcmp_lt(ax, vset1(0.625f)), small, large);
    return vsel(vcmp_unord(x, x), x, r);
}

static inline V ew_sigmoid(V x) { return vdiv(vset1(1.0f), vadd(vset1(1.0f), kn_vexp(vsub(vset1(0.0f), x)))); }

/* x * Phi(x) with Phi computed from erfc on the far side so negative inputs keep relative accuracy */
static inline V ew_gelu_erf(V x) {
    V z = vmul(x, vset1(0.70710678118654752f));
    V az = vabs(z);
    V small = vfmadd(vmul(vset1(0.5f), z), ew_erf_small(vmul(z, z)), vset1(0.5f));
    V half_erfc = vmul(vset1(0.5f), ew_erfc_large(az));
    half_erfc = vsel(vcmp_gt(az, vset1(6.0f)), vset1(0.0f), half_erfc);
    V large = vsel(vcmp_lt(z, vset1(0.0f)), half_erfc, vsub(vset1(1.0f), half_erfc));
    V phi = vsel(vcmp_lt(az, vset1(1.0f)), small, large);
    V r = vmul(x, phi);
    return vsel(vcmp_unord(x, x), x, r);
}

/* 0.5x(1+tanh(u)) == x*sigmoid(2u), which has no cancellation for negative x */
static inline V ew_gelu_tanh(V x) {
    V x3 = vmul(vmul(x, x), x);
    V u = vmul(vset1(0.79788456080286536f), vfmadd(vset1(0.044715f), x3, x));
    V e = kn_vexp(vmul(vset1(-2.0f), u));
    return vdiv(x, vadd(vset1(1.0f), e));
}

static inline V ew_relu_v(V x) { return vmax(vset1(0.0f), x); /* max(0, NaN) returns the NaN */ }

static inline V ew_unary_v(int op, V x) {
    switch (op) {
    case KN_EW_RELU: return ew_relu_v(x);
    case KN_EW_SIGMOID: return ew_sigmoid(x);
    case KN_EW_TANH: return ew_tanh(x);
    case KN_EW_EXP: return kn_vexp(x);
    case KN_EW_ERF: return ew_erf(x);
    case KN_EW_GELU_ERF: return ew_gelu_erf(x);
    case KN_EW_GELU_TANH: return ew_gelu_tanh(x);
    default: return x;
    }
}

void KN_EW_FN(kn_ew_unary_f32)(int op, const float *x, float *y, int64_t n) {
    int64_t i = 0;
    switch (op) {
#define KN_EW_UNARY_LOOP(OPC, FN) \
    case OPC: \
        for (; i + W <= n; i += W) vstore(y + i, FN(vload(x + i))); \
        break;
        KN_EW_UNARY_LOOP(KN_EW_RELU, ew_relu_v)
        KN_EW_UNARY_LOOP(KN_EW_SIGMOID, ew_sigmoid)
        KN_EW_UNARY_LOOP(KN_EW_TANH, ew_tanh)
        KN_EW_UNARY_LOOP(KN_EW_EXP, kn_vexp)
        KN_EW_UNARY_LOOP(KN_EW_ERF, ew_erf)
        KN_EW_UNARY_LOOP(KN_EW_GELU_ERF, ew_gelu_erf)
        KN_EW_UNARY_LOOP(KN_EW_GELU_TANH, ew_gelu_tanh)
#undef KN_EW_UNARY_LOOP
    default: break;
    }
    if (i < n) {
        float buf[W];
        memset(buf, 0, sizeof buf);
        memcpy(buf, x + i, (size_t)(n - i) * sizeof(float));
        vstore(buf, ew_unary_v(op, vload(buf)));
        memcpy(y + i, buf, (size_t)(n - i) * sizeof(float));
    }
}

static inline V ew_binary_v(int op, V a, V b) {
    switch (op) {
    case KN_EW_ADD: return vadd(a, b);
    case KN_EW_SUB: return vsub(a, b);
    case KN_EW_MUL: return vmul(a, b);
    default: return vdiv(a, b);
    }
}

void KN_EW_FN(kn_ew_binary_f32)(int op, const float *a, int64_t sa, const float *b, int64_t sb, float *y, int64_t n) {
    int64_t i = 0;
    if (!sa && !sb) {
        float buf[W];
        vstore(buf, ew_binary_v(op, vset1(a[0]), vset1(b[0])));
        for (int64_t k = 0; k < n; k++) y[k] = buf[0];
        return;
    }
    /* the op switch sits outside the loops so each loop body is a single instruction stream */
#define KN_EW_BIN_LOOPS(EXPR) \
    if (sa && sb) \
        for (; i + W <= n; i += W) { \
            V va = vload(a + i), vb = vload(b + i); \
            vstore(y + i, EXPR); \
        } \
    else if (sa) { \
        V vb = vset1(b[0]); \
        for (; i + W <= n; i += W) { \
            V va = vload(a + i); \
            vstore(y + i, EXPR); \
        } \
    } else if (sb) { \
        V va = vset1(a[0]); \
        for (; i + W <= n; i += W) { \
            V vb = vload(b + i); \
            vstore(y + i, EXPR); \
        } \
    }
    switch (op) {
    case KN_EW_ADD: KN_EW_BIN_LOOPS(vadd(va, vb)) break;
    case KN_EW_SUB: KN_EW_BIN_LOOPS(vsub(va, vb)) break;
    case KN_EW_MUL: KN_EW_BIN_LOOPS(vmul(va, vb)) break;
    case KN_EW_DIV: KN_EW_BIN_LOOPS(vdiv(va, vb)) break;
    default: break;
    }
#undef KN_EW_BIN_LOOPS
    if (i < n) {
        float ba[W], bb[W];
        memset(ba, 0, sizeof ba);
        memset(bb, 0, sizeof bb);
        for (int64_t k = i; k < n; k++) {
            ba[k - i] = a[k * sa];
            bb[k - i] = b[k * sb];
        }
        vstore(ba, ew_binary_v(op, vload(ba), vload(bb)));
        memcpy(y + i, ba, (size_t)(n - i) * sizeof(float));
    }
}
