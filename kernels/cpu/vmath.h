/* kiln's one vector exp, written over the vector vocabulary of kernels/cpu/simd_avx2.h or
 * simd_avx512.h (whichever the including file was compiled for), so Exp, Sigmoid, Tanh, GELU and
 * the softmax rows all round alike. Method: x = n ln2 + r with ln2 split in two for an exact
 * product, a degree-7 Taylor polynomial for e^r, and 2^n applied in two factors so results in
 * the subnormal range (down to x = -104) are still produced; above 88.72 it is +inf, NaN stays
 * NaN. Relative error about 1 ulp. */
#ifndef KN_VMATH_H
#define KN_VMATH_H

static inline V kn_vexp(V x) {
    V xc = vmin(vmax(x, vset1(-104.0f)), vset1(88.7228394f));
    V n = vround(vmul(xc, vset1(1.44269504088896341f)));
    V r = vfnmadd(n, vset1(0.693145751953125f), xc);
    r = vfnmadd(n, vset1(1.42860682030941723212e-6f), r);
    V p = vset1(1.0f / 5040.0f);
    p = vfmadd(p, r, vset1(1.0f / 720.0f));
    p = vfmadd(p, r, vset1(1.0f / 120.0f));
    p = vfmadd(p, r, vset1(1.0f / 24.0f));
    p = vfmadd(p, r, vset1(1.0f / 6.0f));
    p = vfmadd(p, r, vset1(0.5f));
    p = vfmadd(p, r, vset1(1.0f));
    p = vfmadd(p, r, vset1(1.0f));
    /* 2^n in two factors so that results in the subnormal range are still produced */
    VI ni = vcvti(n);
    VI n1 = vsrai(ni, 1);
    VI n2 = vsubi(ni, n1);
    V s1 = vcastf(vslli(vaddi(n1, vset1i(127)), 23));
    V s2 = vcastf(vslli(vaddi(n2, vset1i(127)), 23));
    V res = vmul(vmul(p, s1), s2);
    res = vsel(vcmp_gt(x, vset1(88.7228394f)), vset1(__builtin_inff()), res);
    return vsel(vcmp_unord(x, x), x, res);
}

#endif
