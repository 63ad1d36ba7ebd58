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
void NB_FN(dequant)(const uint8_t *bq, const float *sc, const float *off, int64_t K, int bits, int64_t bs,
                    int64_t blk0, int64_t blk1, float *dst) {
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
