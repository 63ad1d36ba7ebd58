/* Body of the direct convolution row and plane kernels (see conv_dw.h), written once in the V
 * vocabulary of simd_avx2.h / simd_avx512.h and instantiated per ISA by the file that includes
 * it after defining KN_DW_NAME, KN_BA_NAME and KN_PLANE_NAME. Four vectors of outputs stay in
 * registers while the taps stream past, so each weight broadcast serves 4*W products. */
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

/* Stride 1 or 2 read of W values at p: p[0], p[s], ..., p[(W-1)s]. The stride-2 form loads
 * 2W - 1 values (the last odd one is never read: it may lie past the row). */
static inline V kn_dw_ld(const float *p, int s) {
    if (s == 1) return vload(p);
    return veven(vload(p), vload_n(p + W, W - 1));
}

/* The same with only the values p[e] whose lanes m0 (first W values) and m1 (next W) select
 * read, the others taken as 0: the edge blocks of a row, whose taps reach into the padding. */
static inline V kn_dw_ld_mask(const float *p, int s, VM m0, VM m1) {
    if (s == 1) return vload_mask(p, m0);
    return veven(vload_mask(p, m0), vload_mask(p + W, m1));
}

/* Whether input row oh*sh - ph + kh*dh of output row oh lies in the image. */
static inline int kn_dw_row_in(const kn_conv_dw_plane *p, int64_t oh, int64_t kh) {
    int64_t ih = oh * p->sh - p->ph + kh * p->dh;
    return ih >= 0 && ih < p->H;
}

/* The k <= W outputs from column i of every output row as one masked block: the masks depend
 * only on the column and kw, so they are made once for all rows. Only for planes with more edge
 * blocks than the row-order path keeps masks for (huge pads or kernels): walking the plane
 * column-wise takes its cache misses out of order. */
static void kn_dw_edge_blocks(float *out, const kn_conv_dw_plane *p, const float *wt, int64_t i, V vb, int act, V vlo,
                              V vhi) {
    int s = (int)p->sw;
    int64_t k = p->OW - i < W ? p->OW - i : W, last = (k - 1) * s + 1;
    VM m0[KN_DW_MAX_PLANE_TAPS], m1[KN_DW_MAX_PLANE_TAPS];
    int64_t off[KN_DW_MAX_PLANE_TAPS];
    for (int64_t kw = 0; kw < p->KW; kw++) {
        int64_t base = i * s + kw * p->dw - p->pw, a = base < 0 ? -base : 0, b = p->Wd - base;
        if (b > last) b = last;
        if (b < a) b = a;
        off[kw] = base;
        m0[kw] = vmask_range(a, b);
        m1[kw] = vmask_range(a - W, b - W);
    }
    for (int64_t oh = 0; oh < p->OH; oh++) {
        V acc = vb;
        for (int64_t c = 0; c < p->Cg; c++)
            for (int64_t kh = 0; kh < p->KH; kh++) {
                if (!kn_dw_row_in(p, oh, kh)) continue;
                const float *r = p->x + (c * p->H + oh * p->sh - p->ph + kh * p->dh) * p->Wd;
                const float *w = wt + (c * p->KH + kh) * p->KW;
                for (int64_t kw = 0; kw < p->KW; kw++)
                    acc = vfmadd(vset1(w[kw]), kn_dw_ld_mask(r + off[kw], s, m0[kw], m1[kw]), acc);
            }
        if (act) acc = kn_dw_act(acc, act, vlo, vhi);
        vstore_n(out + oh * p->OW + i, acc, k);
    }
}

void KN_PLANE_NAME(float *out, const kn_conv_dw_plane *p, const float *wt, float bias, int act, float lo, float hi) {
    V vb = vset1(bias), vlo = vset1(lo), vhi = vset1(hi);
    int s = (int)p->sw;
    int64_t OW = p->OW, kmin = -p->pw, kmax = (p->KW - 1) * p->dw - p->pw;
    if (OW <= 0 || p->OH <= 0) return;
    /* output columns [ilo, ihi) read inside the row for every kw; the blocks of W columns from
     * i_mid to i_end lie inside it, those before and after are edge blocks */
    int64_t ilo = kmin >= 0 ? 0 : (-kmin + s - 1) / s, ihi = p->Wd - 1 - kmax < 0 ? 0 : (p->Wd - 1 - kmax) / s + 1;
    if (ihi > OW) ihi = OW;
    int64_t i_mid = (ilo + W - 1) / W * W;
    if (i_mid > OW) i_mid = OW;
    int64_t i_end = ihi > i_mid ? i_mid + (ihi - i_mid) / W * W : i_mid;
    int64_t nl = (i_mid + W - 1) / W, ne = nl + (OW - i_end + W - 1) / W; /* edge blocks: left, all */
    if (ne * p->KW > KN_DW_EDGE_MASKS) {
        for (int64_t i = 0; i < i_mid; i += W) kn_dw_edge_blocks(out, p, wt, i, vb, act, vlo, vhi);
        for (int64_t i = i_end; i < OW; i += W) kn_dw_edge_blocks(out, p, wt, i, vb, act, vlo, vhi);
        ne = nl = 0;
    }
    /* the edge blocks' per-kw offsets and masks, the same for every row */
    VM m0[KN_DW_EDGE_MASKS], m1[KN_DW_EDGE_MASKS];
    int64_t off[KN_DW_EDGE_MASKS], est[KN_DW_EDGE_MASKS];
    for (int64_t e = 0; e < ne; e++) {
        int64_t i = e < nl ? e * W : i_end + (e - nl) * W, k = OW - i < W ? OW - i : W, last = (k - 1) * s + 1;
        est[e] = i;
        for (int64_t kw = 0; kw < p->KW; kw++) {
            int64_t base = i * s + kw * p->dw - p->pw, a = base < 0 ? -base : 0, b = p->Wd - base;
            if (b > last) b = last;
            if (b < a) b = a;
            off[e * p->KW + kw] = base;
            m0[e * p->KW + kw] = vmask_range(a, b);
            m1[e * p->KW + kw] = vmask_range(a - W, b - W);
        }
    }
    /* every tap's input offset from its output row's first input row (kh*dh rows down, plane c),
     * its kw and weight; a row whose kernel rows all lie in the image (most) uses them as they
     * are, a border row a compacted copy */
    int64_t tro[KN_DW_MAX_PLANE_TAPS], ctro[KN_DW_MAX_PLANE_TAPS];
    float wts[KN_DW_MAX_PLANE_TAPS], cwts[KN_DW_MAX_PLANE_TAPS];
    int kwi[KN_DW_MAX_PLANE_TAPS], ckwi[KN_DW_MAX_PLANE_TAPS], khi[KN_DW_MAX_PLANE_TAPS];
    int ntf = 0;
    for (int64_t c = 0; c < p->Cg; c++)
        for (int64_t kh = 0; kh < p->KH; kh++)
            for (int64_t kw = 0; kw < p->KW; kw++, ntf++) {
                tro[ntf] = (c * p->H + kh * p->dh) * p->Wd;
                kwi[ntf] = (int)kw;
                khi[ntf] = (int)kh;
                wts[ntf] = wt[(c * p->KH + kh) * p->KW + kw];
            }
    for (int64_t oh = 0; oh < p->OH; oh++) {
        int64_t ih0 = oh * p->sh - p->ph, rbase = ih0 * p->Wd;
        const int64_t *to = tro;
        const float *ws = wts;
        const int *kx = kwi;
        int nt = ntf;
        if (ih0 < 0 || ih0 + (p->KH - 1) * p->dh >= p->H) {
            nt = 0;
            for (int t = 0; t < ntf; t++) {
                int64_t ih = ih0 + khi[t] * p->dh;
                if (ih < 0 || ih >= p->H) continue;
                ctro[nt] = tro[t];
                ckwi[nt] = kwi[t];
                cwts[nt++] = wts[t];
            }
            to = ctro;
            ws = cwts;
            kx = ckwi;
        }
        float *o = out + oh * OW;
        for (int64_t e = 0; e < ne; e++) {
            const VM *e0 = m0 + e * p->KW, *e1 = m1 + e * p->KW;
            const int64_t *eo = off + e * p->KW;
            int64_t i = est[e], k = OW - i < W ? OW - i : W;
            V acc = vb;
            for (int t = 0; t < nt; t++)
                acc = vfmadd(vset1(ws[t]), kn_dw_ld_mask(p->x + (rbase + to[t]) + eo[kx[t]], s, e0[kx[t]], e1[kx[t]]),
                             acc);
            if (act) acc = kn_dw_act(acc, act, vlo, vhi);
            vstore_n(o + i, acc, k);
        }
        if (i_end == i_mid) continue;
        int64_t i = i_mid;
        for (; i + 4 * W <= i_end; i += 4 * W) {
            V a0 = vb, a1 = vb, a2 = vb, a3 = vb;
            for (int t = 0; t < nt; t++) {
                V wv = vset1(ws[t]);
                const float *q = p->x + (rbase + to[t]) + (kx[t] * p->dw - p->pw + i * s);
                a0 = vfmadd(wv, kn_dw_ld(q, s), a0);
                a1 = vfmadd(wv, kn_dw_ld(q + W * s, s), a1);
                a2 = vfmadd(wv, kn_dw_ld(q + 2 * W * s, s), a2);
                a3 = vfmadd(wv, kn_dw_ld(q + 3 * W * s, s), a3);
            }
            if (act) {
                a0 = kn_dw_act(a0, act, vlo, vhi);
                a1 = kn_dw_act(a1, act, vlo, vhi);
                a2 = kn_dw_act(a2, act, vlo, vhi);
                a3 = kn_dw_act(a3, act, vlo, vhi);
            }
            vstore(o + i, a0);
            vstore(o + i + W, a1);
            vstore(o + i + 2 * W, a2);
            vstore(o + i + 3 * W, a3);
        }
        for (; i < i_end; i += W) {
            V a0 = vb;
            for (int t = 0; t < nt; t++)
                a0 = vfmadd(vset1(ws[t]), kn_dw_ld(p->x + (rbase + to[t]) + (kx[t] * p->dw - p->pw + i * s), s), a0);
            if (act) a0 = kn_dw_act(a0, act, vlo, vhi);
            vstore(o + i, a0);
        }
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
