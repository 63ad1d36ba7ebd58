/* MatMulNBits accuracy_level 4 for many rows (kernels/cpu/nbits_i8gemm.h): A's rows quantised to
 * int8 per block once, then panels of 32 columns of B in parallel, each copied into the tiles'
 * layout by the thread that multiplies it (78 KiB for K = 4864 at 4 bits, so a panel stays in L2
 * while every row of A passes over it) and multiplied in register tiles; the plain loop
 * (kn_nbits_i8_dot_scalar) without AVX2. */
#include "kernels/cpu/nbits_i8gemm.h"
#include "graph/ops.h"
#include "kernels/cpu/nbits.h"
#include "kernels/cpu/rows.h"
#include <string.h>

enum { PW = KN_NBITS_I8G_PW };

/* scales or offsets of the panel's columns from kn_nbits_group's layout of width w (a divisor of PW,
 * n0 a multiple of PW): each group's row of w floats per block is already the panel's order */
static void i8g_scales_grouped(const float *g, int64_t n0, int nc, int64_t nb, int64_t w, float *dst) {
    for (int64_t c = 0; c < PW; c += w)
        for (int64_t k = 0; k < nb; k++) {
            if (c < nc) memcpy(dst + k * PW + c, g + ((n0 + c) / w * nb + k) * w, sizeof(float) * (size_t)w);
            else memset(dst + k * PW + c, 0, sizeof(float) * (size_t)w);
        }
}

void kn_nbits_i8g_pack(const uint8_t *b, int64_t cs, int64_t n0, int nc, const float *sc, const float *off, int64_t nb,
                       int64_t group, const float *bias, uint32_t *panel, float *sbp, float *offp, float *biasp,
                       int isa) {
    int64_t nw = cs / 4;
    if (group > 0) {
        /* the grouped layout pads columns past N with zeros, as the panel wants */
        i8g_scales_grouped(sc, n0, nc, nb, group, sbp);
        i8g_scales_grouped(off, n0, nc, nb, group, offp);
        if (isa == 2) kn_nbits_i8g_words_avx512(b, cs, n0, nc, panel);
        for (int c = 0; c < PW; c++) {
            biasp[c] = bias && c < nc ? bias[n0 + c] : 0.0f;
            if (isa == 2) continue;
            for (int64_t w = 0; w < nw; w++)
                if (c < nc) memcpy(&panel[w * PW + c], b + (n0 + c) * cs + 4 * w, 4);
                else panel[w * PW + c] = 0;
        }
        return;
    }
    if (isa == 2) {
        /* the scales' [N][blocks] floats are words too */
        kn_nbits_i8g_words_avx512(b, cs, n0, nc, panel);
        kn_nbits_i8g_words_avx512((const uint8_t *)sc, nb * 4, n0, nc, (uint32_t *)sbp);
        kn_nbits_i8g_words_avx512((const uint8_t *)off, nb * 4, n0, nc, (uint32_t *)offp);
        for (int c = 0; c < PW; c++) biasp[c] = bias && c < nc ? bias[n0 + c] : 0.0f;
        return;
    }
    for (int c = 0; c < PW; c++) {
        if (c >= nc) {
            for (int64_t w = 0; w < nw; w++) panel[w * PW + c] = 0;
            for (int64_t k = 0; k < nb; k++) sbp[k * PW + c] = offp[k * PW + c] = 0.0f;
            biasp[c] = 0.0f;
            continue;
        }
        const uint8_t *src = b + (n0 + c) * cs;
        for (int64_t w = 0; w < nw; w++) memcpy(&panel[w * PW + c], src + 4 * w, 4);
        for (int64_t k = 0; k < nb; k++) {
            sbp[k * PW + c] = sc[(n0 + c) * nb + k];
            offp[k * PW + c] = off[(n0 + c) * nb + k];
        }
        biasp[c] = bias ? bias[n0 + c] : 0.0f;
    }
}

void kn_nbits_i8g_deint8(const int8_t *qa, int64_t n, int8_t *dst) {
    for (int64_t g = 0; g + 8 <= n; g += 8)
        for (int i = 0; i < 4; i++) {
            dst[g + i] = qa[g + 2 * i];
            dst[g + 4 + i] = qa[g + 2 * i + 1];
        }
}

typedef struct i8g_job {
    const float *a, *sc, *off, *bias;
    const uint8_t *b;
    int64_t M, N, K, bs, nb, cs, lq;
    int64_t group; /* sc / off in kn_nbits_group's layout of this width, or 0: plain [N][blocks] */
    int bits, isa;
    int8_t *qa, *qd; /* qd: the tiles' order (4 bits), else qa */
    float *sa, *asum, *y;
    char *wbuf; /* per slot: B's words, scales, offsets, bias */
    size_t wsize;
    int64_t grain; /* panels a task call at least: call [begin, end) takes slot begin / grain */
} i8g_job;

static void i8g_quant_task(void *vctx, int64_t begin, int64_t end) {
    const i8g_job *j = vctx;
    for (int64_t m = begin; m < end; m++) {
        if (j->isa == 2) {
            kn_nbits_quant_a_avx512(j->a + m * j->K, j->K, j->bs, j->bits == 4, j->qd + m * j->lq, j->sa + m * j->nb,
                                    j->asum + m * j->nb);
            continue;
        }
        kn_nbits_quant_a(j->a + m * j->K, j->K, j->bs, j->qa + m * j->lq, j->sa + m * j->nb, j->asum + m * j->nb);
        if (j->qd != j->qa) kn_nbits_i8g_deint8(j->qa + m * j->lq, j->lq, j->qd + m * j->lq);
    }
}

/* without AVX2: the plain loop, row by row */
static void i8g_plain_task(void *vctx, int64_t begin, int64_t end) {
    const i8g_job *j = vctx;
    int64_t w = j->group;
    for (int64_t m = begin; m < end; m++) {
        if (!w) {
            kn_nbits_i8_dot_scalar(j->qa + m * j->lq, j->sa + m * j->nb, j->asum + m * j->nb, j->b, j->cs, j->sc,
                                   j->off, j->nb, 1, j->nb, j->bits, j->bs, j->bias, (int)j->N, j->y + m * j->N);
            continue;
        }
        for (int64_t n = 0; n < j->N; n += w)
            kn_nbits_i8_dot_scalar(j->qa + m * j->lq, j->sa + m * j->nb, j->asum + m * j->nb, j->b + n * j->cs, j->cs,
                                   j->sc + n * j->nb, j->off + n * j->nb, 1, w, j->nb, j->bits, j->bs,
                                   j->bias ? j->bias + n : NULL, (int)(j->N - n < w ? j->N - n : w),
                                   j->y + m * j->N + n);
    }
}

static void i8g_panel_task(void *vctx, int64_t begin, int64_t end) {
    const i8g_job *j = vctx;
    int64_t nb = j->nb, nw = j->cs / 4;
    int mr = j->isa == 2 ? KN_NBITS_I8G_MR_VNNI : KN_NBITS_I8G_MR_AVX2;
    int width = j->isa == 2 ? PW : KN_NBITS_I8G_NW_AVX2;
    uint32_t *panel = (uint32_t *)(j->wbuf + (size_t)(begin / j->grain) * j->wsize);
    for (int64_t pi = begin; pi < end; pi++) {
        float *sbp = (float *)(panel + nw * PW), *offp = sbp + nb * PW, *biasp = offp + nb * PW;
        int64_t n0 = pi * PW;
        int nc = j->N - n0 < PW ? (int)(j->N - n0) : PW;
        kn_nbits_i8g_pack(j->b, j->cs, n0, nc, j->sc, j->off, nb, j->group, j->bias, panel, sbp, offp, biasp, j->isa);
        for (int64_t m = 0; m < j->M; m += mr) {
            int nr = j->M - m < mr ? (int)(j->M - m) : mr;
            for (int c0 = 0; c0 < nc; c0 += width) {
                int ncw = nc - c0 < width ? nc - c0 : width;
                (j->isa == 2 ? kn_nbits_i8g_tile_vnni : kn_nbits_i8g_tile_avx2)(
                    j->qd + m * j->lq, j->lq, j->sa + m * nb, j->asum + m * nb, nb, nr, panel, sbp, offp, c0, nb,
                    j->bits, j->bs, j->bias ? biasp : NULL, j->y + m * j->N + n0 + c0, j->N, ncw);
            }
        }
    }
}

kn_status *kn_nbits_i8gemm(kn_exec_ctx *ctx, const float *a, int64_t M, int64_t N, int64_t K, int64_t bs, int bits,
                           const uint8_t *b, const float *sc, const float *off, int64_t group, const float *bias,
                           float *y, int isa) {
    if (isa < 0) isa = kn_nbits_have_vnni() ? 2 : kn_red_simd_level() >= 1 ? 1 : 0;
    int64_t nb = (K + bs - 1) / bs;
    i8g_job j = {.a = a,
                 .sc = sc,
                 .off = off,
                 .group = group,
                 .bias = bias,
                 .b = b,
                 .M = M,
                 .N = N,
                 .K = K,
                 .bs = bs,
                 .nb = nb,
                 .cs = nb * bs * bits / 8,
                 .lq = nb * bs,
                 .bits = bits,
                 .isa = isa,
                 .y = y};
    size_t nq = (size_t)(M * j.lq), nf = (size_t)(M * nb);
    j.qa = kn_scratch_alloc(ctx, nq);
    j.qd = isa == 1 && bits == 4 ? kn_scratch_alloc(ctx, nq) : j.qa; /* VNNI quantises in order */
    j.sa = kn_scratch_alloc(ctx, sizeof(float) * 2 * nf);
    if (!j.qa || !j.qd || !j.sa) return KN_OOM(2 * nq + sizeof(float) * 2 * nf);
    j.asum = j.sa + nf;
    kn_parallel_for(ctx->pool, M, 1, i8g_quant_task, &j);
    if (!isa) {
        kn_parallel_for(ctx->pool, M, 1, i8g_plain_task, &j);
        return NULL;
    }
    int64_t np = (N + PW - 1) / PW;
    j.wsize = (sizeof(uint32_t) * (size_t)(j.cs / 4) + sizeof(float) * (size_t)(2 * nb + 1)) * PW;
    j.wsize = (j.wsize + 63) / 64 * 64;
    /* about 4 task calls a thread, each with its own panel (kept in cache from one to the next):
     * calls cover disjoint ranges of at least grain panels, so begin / grain tells them apart */
    int64_t th = ctx->pool ? kn_threadpool_size(ctx->pool) : 1, slots;
    j.grain = (np + 4 * th - 1) / (4 * th);
    slots = (np + j.grain - 1) / j.grain;
    if (!(j.wbuf = kn_scratch_alloc(ctx, j.wsize * (size_t)slots))) return KN_OOM(j.wsize * slots);
    kn_parallel_for(ctx->pool, np, j.grain, i8g_panel_task, &j);
    return NULL;
}
