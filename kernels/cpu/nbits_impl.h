/* The MatMulNBits inner loops written once over the vector vocabulary of simd_avx2.h or
 * simd_avx512.h (whichever the including file was compiled for) and the including file's
 * NB_LOAD4 / NB_LOAD8 (W quantised values as floats) and NB_HSUM; NB_FN names the functions per
 * ISA. A weight is q * scale + offset (offset = -zero_point * scale, per block), made in a
 * register and used at once, so no more than one vector of dequantised weights exists at a time. */

/* Column n of the product for up to 4 rows of A: y[m * ldy] = sum_k a[m * lda + k] * w[k], where
 * bq, sc and off are column n's blocks. */
void NB_FN(dot)(const float *a, int64_t lda, int M, const uint8_t *bq, const float *sc, const float *off, int64_t K,
                int bits, int64_t bs, float *y, int64_t ldy) {
    int64_t blob = bs * bits / 8, nfull = K / bs;
    V acc0 = vset1(0.0f), acc1 = vset1(0.0f), acc2 = vset1(0.0f), acc3 = vset1(0.0f);
    for (int64_t blk = 0; blk < nfull; blk++) {
        V s = vset1(sc[blk]), o = vset1(off[blk]);
        const uint8_t *p = bq + blk * blob;
        const float *ak = a + blk * bs;
        for (int64_t i = 0; i < bs; i += W) {
            V w = vfmadd(bits == 4 ? NB_LOAD4(p + i / 2) : NB_LOAD8(p + i), s, o);
            acc0 = vfmadd(vload(ak + i), w, acc0);
            if (M > 1) acc1 = vfmadd(vload(ak + lda + i), w, acc1);
            if (M > 2) acc2 = vfmadd(vload(ak + 2 * lda + i), w, acc2);
            if (M > 3) acc3 = vfmadd(vload(ak + 3 * lda + i), w, acc3);
        }
    }
    float r[4] = {NB_HSUM(acc0), NB_HSUM(acc1), NB_HSUM(acc2), NB_HSUM(acc3)};
    if (nfull * bs < K) {
        const uint8_t *p = bq + nfull * blob;
        float s = sc[nfull], o = off[nfull];
        for (int64_t k = 0; k < K - nfull * bs; k++) {
            int q = bits == 4 ? (p[k / 2] >> ((k & 1) * 4)) & 15 : p[k];
            float w = fmaf((float)q, s, o);
            for (int m = 0; m < M; m++) r[m] += a[m * lda + nfull * bs + k] * w;
        }
    }
    for (int m = 0; m < M; m++) y[m * ldy] = r[m];
}

/* Blocks [blk0, blk1) of one column as floats into dst (the last block of K only up to K). */
void NB_FN(dequant)(const uint8_t *bq, const float *sc, const float *off, int64_t K, int bits, int64_t bs, int64_t blk0,
                    int64_t blk1, float *dst) {
    int64_t blob = bs * bits / 8;
    for (int64_t blk = blk0; blk < blk1; blk++) {
        const uint8_t *p = bq + blk * blob;
        float *d = dst + (blk - blk0) * bs;
        int64_t n = K - blk * bs < bs ? K - blk * bs : bs;
        V s = vset1(sc[blk]), o = vset1(off[blk]);
        int64_t i = 0;
        for (; i + W <= n; i += W) vstore(d + i, vfmadd(bits == 4 ? NB_LOAD4(p + i / 2) : NB_LOAD8(p + i), s, o));
        for (; i < n; i++) {
            int q = bits == 4 ? (p[i / 2] >> ((i & 1) * 4)) & 15 : p[i];
            d[i] = fmaf((float)q, sc[blk], off[blk]);
        }
    }
}

/* One row of A against 4 columns (decode): each vector of A loaded once for 4 columns, whose
 * weights are dequantised in registers; 4 independent accumulators. Column j's blocks start at
 * bq + j * bstride, its scales and offsets at sc / off + j * nb. */
void NB_FN(dot1x4)(const float *a, const uint8_t *bq, int64_t bstride, const float *sc, const float *off, int64_t nb,
                   int64_t K, int bits, int64_t bs, float *y) {
    int64_t blob = bs * bits / 8, nfull = K / bs;
    V r0 = vset1(0.0f), r1 = r0, r2 = r0, r3 = r0;
    const uint8_t *q0 = bq, *q1 = bq + bstride, *q2 = bq + 2 * bstride, *q3 = bq + 3 * bstride;
    for (int64_t blk = 0; blk < nfull; blk++) {
        V s0 = vset1(sc[blk]), s1 = vset1(sc[nb + blk]), s2 = vset1(sc[2 * nb + blk]), s3 = vset1(sc[3 * nb + blk]);
        V o0 = vset1(off[blk]), o1 = vset1(off[nb + blk]), o2 = vset1(off[2 * nb + blk]), o3 = vset1(off[3 * nb + blk]);
        const float *ak = a + blk * bs;
        int64_t bo = blk * blob;
        if (bits == 4) {
            for (int64_t i = 0; i < bs; i += W) {
                V av = vload(ak + i);
                r0 = vfmadd(av, vfmadd(NB_LOAD4(q0 + bo + i / 2), s0, o0), r0);
                r1 = vfmadd(av, vfmadd(NB_LOAD4(q1 + bo + i / 2), s1, o1), r1);
                r2 = vfmadd(av, vfmadd(NB_LOAD4(q2 + bo + i / 2), s2, o2), r2);
                r3 = vfmadd(av, vfmadd(NB_LOAD4(q3 + bo + i / 2), s3, o3), r3);
            }
        } else {
            for (int64_t i = 0; i < bs; i += W) {
                V av = vload(ak + i);
                r0 = vfmadd(av, vfmadd(NB_LOAD8(q0 + bo + i), s0, o0), r0);
                r1 = vfmadd(av, vfmadd(NB_LOAD8(q1 + bo + i), s1, o1), r1);
                r2 = vfmadd(av, vfmadd(NB_LOAD8(q2 + bo + i), s2, o2), r2);
                r3 = vfmadd(av, vfmadd(NB_LOAD8(q3 + bo + i), s3, o3), r3);
            }
        }
    }
    V acc[4] = {r0, r1, r2, r3};
    for (int j = 0; j < 4; j++) {
        float r = NB_HSUM(acc[j]);
        if (nfull * bs < K) {
            const uint8_t *p = bq + j * bstride + nfull * blob;
            float s = sc[j * nb + nfull], o = off[j * nb + nfull];
            for (int64_t k = 0; k < K - nfull * bs; k++) {
                int q = bits == 4 ? (p[k / 2] >> ((k & 1) * 4)) & 15 : p[k];
                r += a[nfull * bs + k] * fmaf((float)q, s, o);
            }
        }
        y[j] = r;
    }
}

/* A full NB_TM x NB_TN tile of C (+)= A . P^T over kl values of K, P a dequantised panel (column
 * c's kl values at p + c * ldp): dot products along K, reduced once at the end. */
void NB_FN(tile)(const float *a, int64_t lda, const float *p, int64_t ldp, int64_t kl, float *c, int64_t ldc,
                 bool accumulate) {
    /* written out so that the 4 x NB_TN accumulators stay in registers */
    V c00 = vset1(0.0f), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
#if NB_TM == 4
    V c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
#endif
    const float *p0 = p, *p1 = p + ldp, *p2 = p + 2 * ldp, *p3 = p + 3 * ldp;
    int64_t k = 0;
    for (; k + W <= kl; k += W) {
        V b0 = vload(p0 + k), b1 = vload(p1 + k), b2 = vload(p2 + k), b3 = vload(p3 + k);
        V a0 = vload(a + k), a1 = vload(a + lda + k);
        c00 = vfmadd(a0, b0, c00);
        c01 = vfmadd(a0, b1, c01);
        c02 = vfmadd(a0, b2, c02);
        c03 = vfmadd(a0, b3, c03);
        c10 = vfmadd(a1, b0, c10);
        c11 = vfmadd(a1, b1, c11);
        c12 = vfmadd(a1, b2, c12);
        c13 = vfmadd(a1, b3, c13);
#if NB_TM == 4
        V a2 = vload(a + 2 * lda + k), a3 = vload(a + 3 * lda + k);
        c20 = vfmadd(a2, b0, c20);
        c21 = vfmadd(a2, b1, c21);
        c22 = vfmadd(a2, b2, c22);
        c23 = vfmadd(a2, b3, c23);
        c30 = vfmadd(a3, b0, c30);
        c31 = vfmadd(a3, b1, c31);
        c32 = vfmadd(a3, b2, c32);
        c33 = vfmadd(a3, b3, c33);
#endif
    }
#if NB_TM == 4
    V acc[4][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23}, {c30, c31, c32, c33}};
#else
    V acc[2][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}};
#endif
    for (int i = 0; i < NB_TM; i++)
        for (int j = 0; j < 4; j++) {
            float s = NB_HSUM(acc[i][j]);
            for (int64_t kk = k; kk < kl; kk++) s += a[i * lda + kk] * p[j * ldp + kk];
            c[i * ldc + j] = accumulate ? c[i * ldc + j] + s : s;
        }
}

/* The edges of the tiling: one element at a time, a vector dot product each. */
void NB_FN(edge)(const float *a, int64_t lda, int mi, const float *p, int64_t ldp, int nj, int64_t kl, float *c,
                 int64_t ldc, bool accumulate) {
    for (int i = 0; i < mi; i++)
        for (int j = 0; j < nj; j++) {
            V acc = vset1(0.0f);
            int64_t k = 0;
            for (; k + W <= kl; k += W) acc = vfmadd(vload(a + i * lda + k), vload(p + j * ldp + k), acc);
            float s = NB_HSUM(acc);
            for (; k < kl; k++) s += a[i * lda + k] * p[j * ldp + k];
            c[i * ldc + j] = accumulate ? c[i * ldc + j] + s : s;
        }
}

/* A row of A with each group of 2W values reordered, even positions first and odd ones after: the
 * order in which W bytes of 4-bit weights give their low and high nibbles without interleaving. */
void NB_FN(deint)(const float *a, int64_t n, float *dst) {
    for (int64_t g = 0; g + 2 * W <= n; g += 2 * W)
        for (int j = 0; j < W; j++) {
            dst[g + j] = a[g + 2 * j];
            dst[g + W + j] = a[g + 2 * j + 1];
        }
}

/* dot1x4 for 4-bit weights and block sizes a multiple of 2W, with A's full blocks given
 * deinterleaved in ad (a keeps the original row for the last, partial block): W bytes are widened
 * once and split into two vectors of weights. off NULL: no zero points, so a block's offset is
 * -8 * scale. With NB_LUT (AVX-512: a 16-entry table fills a vector) a block's 16 possible weights
 * are made once, q * scale + offset rounded once as the fma makes it ((q - 8) * scale when off is
 * NULL: the same exact value), and the nibbles index them (NB_LUT_LO / NB_LUT_HI), so each weight
 * costs a permute instead of a conversion and an fma; the weights, and so the sums, are the same.
 * The decode reads every weight once, so not loading the offsets cuts its memory traffic too. */
void NB_FN(dot1x4_4p)(const float *a, const float *ad, const uint8_t *bq, int64_t bstride, const float *sc,
                      const float *off, int64_t nb, int64_t K, int64_t bs, float *y) {
    int64_t blob = bs / 2, nfull = K / bs;
    V r0 = vset1(0.0f), r1 = r0, r2 = r0, r3 = r0;
    const uint8_t *q0 = bq, *q1 = bq + bstride, *q2 = bq + 2 * bstride, *q3 = bq + 3 * bstride;
#ifdef NB_LUT
    const V iota = NB_LUT_IOTA, iota8 = vsub(iota, vset1(8.0f));
#else
    const V m8 = vset1(-8.0f);
#endif
    for (int64_t blk = 0; blk < nfull; blk++) {
        V s0 = vset1(sc[blk]), s1 = vset1(sc[nb + blk]), s2 = vset1(sc[2 * nb + blk]), s3 = vset1(sc[3 * nb + blk]);
#ifdef NB_LUT
        V t0, t1, t2, t3;
        if (off) {
            t0 = vfmadd(iota, s0, vset1(off[blk]));
            t1 = vfmadd(iota, s1, vset1(off[nb + blk]));
            t2 = vfmadd(iota, s2, vset1(off[2 * nb + blk]));
            t3 = vfmadd(iota, s3, vset1(off[3 * nb + blk]));
        } else {
            t0 = vmul(iota8, s0);
            t1 = vmul(iota8, s1);
            t2 = vmul(iota8, s2);
            t3 = vmul(iota8, s3);
        }
#else
        V o0, o1, o2, o3;
        if (off) {
            o0 = vset1(off[blk]), o1 = vset1(off[nb + blk]), o2 = vset1(off[2 * nb + blk]);
            o3 = vset1(off[3 * nb + blk]);
        } else {
            o0 = vmul(s0, m8), o1 = vmul(s1, m8), o2 = vmul(s2, m8), o3 = vmul(s3, m8);
        }
#endif
        const float *ak = ad + blk * bs;
        int64_t bo = blk * blob;
        /* the four column streams prefetched a few lines ahead: the loop does too little per byte
         * for the hardware prefetcher alone (past a column's end this reaches the next columns) */
        if ((bo & 63) < blob) {
            _mm_prefetch((const char *)(q0 + bo + 256), _MM_HINT_T0);
            _mm_prefetch((const char *)(q1 + bo + 256), _MM_HINT_T0);
            _mm_prefetch((const char *)(q2 + bo + 256), _MM_HINT_T0);
            _mm_prefetch((const char *)(q3 + bo + 256), _MM_HINT_T0);
        }
        for (int64_t i = 0; i < bs; i += 2 * W) {
            V ae = vload(ak + i), ao = vload(ak + i + W);
            VI v;
#ifdef NB_LUT
#define NB_STEP(q, t, r) \
    v = NB_LOADB(q + bo + i / 2); \
    r = vfmadd(ae, NB_LUT_LO(v, t), r); \
    r = vfmadd(ao, NB_LUT_HI(v, t), r);
            NB_STEP(q0, t0, r0)
            NB_STEP(q1, t1, r1)
            NB_STEP(q2, t2, r2)
            NB_STEP(q3, t3, r3)
#else
#define NB_STEP(q, s, o, r) \
    v = NB_LOADB(q + bo + i / 2); \
    r = vfmadd(ae, vfmadd(NB_LO(v), s, o), r); \
    r = vfmadd(ao, vfmadd(NB_HI(v), s, o), r);
            NB_STEP(q0, s0, o0, r0)
            NB_STEP(q1, s1, o1, r1)
            NB_STEP(q2, s2, o2, r2)
            NB_STEP(q3, s3, o3, r3)
#endif
#undef NB_STEP
        }
    }
    V acc[4] = {r0, r1, r2, r3};
    for (int j = 0; j < 4; j++) {
        float r = NB_HSUM(acc[j]);
        if (nfull * bs < K) {
            const uint8_t *p = bq + j * bstride + nfull * blob;
            float s = sc[j * nb + nfull], o = off ? off[j * nb + nfull] : -8.0f * s;
            for (int64_t k = 0; k < K - nfull * bs; k++)
                r += a[nfull * bs + k] * fmaf((float)((p[k / 2] >> ((k & 1) * 4)) & 15), s, o);
        }
        y[j] = r;
    }
}
