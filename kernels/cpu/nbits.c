/* CPU kernels of the block-quantised weight ops of int4/int8 exports: com.microsoft MatMulNBits
 * (Y = A x dequant(B)^T + bias, B [N, blocks, block_size * bits / 8] with 4-bit values low nibble
 * first) and GatherBlockQuantized. MatMulNBits never makes the fp32 weight matrix: products of few
 * rows (decode) dequantise one vector of weights at a time in registers and take its dot products
 * with every row at once (nbits_impl.h; one row of 4-bit weights against A deinterleaved, so a
 * mask and a shift unpack them, and with AVX-512 a block's 16 possible weights are a vector table the
 * nibbles index); larger products dequantise a panel of 64 columns by at most 1024 values of K at a
 * time (256 KiB, cache-sized) per task and multiply it in register tiles (with AVX-512 outer-product
 * ones over A transposed once, which need no horizontal sums).
 * accuracy_level 4 (what onnxruntime_genai's int4 builder writes) is computed as ONNX Runtime's CPU
 * computes it whenever ONNX Runtime 1.32 would (float32 or float16 A, 4 or 8 bits, block sizes
 * 16..256, zero points absent or uint8): A quantised to int8 per block (kn_nbits_quant_a), integer
 * block products for few rows (with VNNI and a constant B, over B packed at load per 16 columns,
 * kn_nbits_i8_dot16p_vnni; else in groups of 8 columns, kn_nbits_i8_dot8_*), an int8 GEMM
 * (nbits_i8gemm.c) for 8 rows and more. Levels 0-3 (float32, and fp16/bf16 compute
 * that ONNX Runtime's x64 CPU also runs in float32) and the other level 4 nodes keep the float32
 * product. The CUDA kernel is float for every level, as ONNX Runtime's CUDA provider ignores
 * accuracy_level. */
#include "graph/op_helpers.h"
#include "graph/ops.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/nbits.h"
#include "kernels/cpu/nbits_i8gemm.h"
#include "kernels/cpu/rows.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static const char *nb_name(const kn_node *n) { return n->name ? n->name : ""; }

/* ---- plain references of the inner loops (nbits_impl.h has the vector ones) ---- */

static inline int nb_q(const uint8_t *p, int64_t i, int bits) {
    return bits == 4 ? (p[i / 2] >> ((i & 1) * 4)) & 15 : p[i];
}

void kn_nbits_dot_scalar(const float *a, int64_t lda, int M, const uint8_t *bq, const float *sc, const float *off,
                         int64_t K, int bits, int64_t bs, float *y, int64_t ldy) {
    int64_t blob = bs * bits / 8;
    for (int m = 0; m < M; m++) {
        float r = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            int64_t blk = k / bs;
            r += a[m * lda + k] * fmaf((float)nb_q(bq + blk * blob, k % bs, bits), sc[blk], off[blk]);
        }
        y[m * ldy] = r;
    }
}

void kn_nbits_dequant_scalar(const uint8_t *bq, const float *sc, const float *off, int64_t K, int bits, int64_t bs,
                             int64_t blk0, int64_t blk1, float *dst) {
    int64_t blob = bs * bits / 8;
    for (int64_t blk = blk0; blk < blk1; blk++)
        for (int64_t i = 0; i < bs && blk * bs + i < K; i++)
            dst[(blk - blk0) * bs + i] = fmaf((float)nb_q(bq + blk * blob, i, bits), sc[blk], off[blk]);
}

/* ---- accuracy_level 4: A quantised to int8 per block (nbits.h has the formula) ---- */

/* rint (ties to even) and the truncation to 8 bits of the vector conversion; values the int32
 * conversion cannot hold (NaN) become its 0x80000000, whose low byte is 0 */
static inline int8_t nb_q8(float x) {
    float r = rintf(x);
    return r >= -2147483648.0f && r < 2147483648.0f ? (int8_t)(int32_t)r : 0;
}

void kn_nbits_quant_a(const float *a, int64_t K, int64_t bs, int8_t *qa, float *sa, float *asum) {
    int64_t nb = (K + bs - 1) / bs;
    for (int64_t b = 0; b < nb; b++) {
        int64_t k0 = b * bs, n = K - k0 < bs ? K - k0 : bs;
        float amax = 0.0f;
        for (int64_t i = 0; i < n; i++) {
            float v = fabsf(a[k0 + i]);
            amax = amax > v ? amax : v;
        }
        float scale = amax / 127.0f, inv = amax != 0.0f ? 127.0f / amax : 0.0f;
        int32_t sum = 0;
        for (int64_t i = 0; i < n; i++) {
            qa[k0 + i] = nb_q8(a[k0 + i] * inv);
            sum += qa[k0 + i];
        }
        for (int64_t i = n; i < bs; i++) qa[k0 + i] = 0;
        sa[b] = scale;
        asum[b] = scale * (float)sum;
    }
}

void kn_nbits_i8_dot_scalar(const int8_t *qa, const float *sa, const float *asum, const uint8_t *bq, int64_t bstride,
                            const float *sc, const float *off, int64_t cst, int64_t bst, int64_t nb, int bits,
                            int64_t bs, const float *bias, int nc, float *y) {
    int64_t blob = bs * bits / 8;
    for (int j = 0; j < nc; j++) {
        const uint8_t *q = bq + j * bstride;
        const float *s = sc + j * cst, *o = off + j * cst;
        float acc = 0.0f, zs = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            int32_t d = 0;
            for (int64_t i = 0; i < bs; i++) d += qa[b * bs + i] * nb_q(q + b * blob, i, bits);
            acc = fmaf((float)d, sa[b] * s[b * bst], acc);
        }
        if (bias) acc += bias[j];
        for (int64_t b = 0; b < nb; b++) zs = fmaf(asum[b], o[b * bst], zs);
        y[j] = acc + zs;
    }
}

bool kn_nbits_have_vnni(void) {
    return kn_red_simd_level() == 2 && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl");
}

void kn_nbits_group(const float *src, int64_t N, int64_t nb, int64_t w, float *dst) {
    for (int64_t g = 0; g < (N + w - 1) / w; g++)
        for (int64_t b = 0; b < nb; b++)
            for (int64_t j = 0; j < w; j++) {
                int64_t n = g * w + j;
                dst[(g * nb + b) * w + j] = n < N ? src[n * nb + b] : 0.0f;
            }
}


/* 4 bits: the 4 source bytes of 8 values (k0..k7, nibble i = value i) become byte i = value i |
 * value i+4 << 4 (nbits.h) */
static inline uint32_t nb_spread4(uint32_t x) { /* nibble i of 16 bits to the low half of byte i */
    x = (x | (x << 8)) & 0x00ff00ffu;
    return (x | (x << 4)) & 0x0f0f0f0fu;
}
static inline uint32_t nb_pack4(uint32_t w) { return nb_spread4(w & 0xffffu) | nb_spread4(w >> 16) << 4; }

void kn_nbits_i8_pack16(const uint8_t *b, int64_t N, int64_t nb, int bits, int64_t bs, uint8_t *dst) {
    int64_t blob = bs * bits / 8, cs = nb * blob, tiles = (N + KN_NBITS_I8_PC - 1) / KN_NBITS_I8_PC;
    /* 4 source bytes per lane and load: 8 values of 4 bits or 4 of 8 */
    int64_t loads = cs / 4;
    for (int64_t t = 0; t < tiles; t++) {
        uint8_t *d = dst + t * KN_NBITS_I8_PC * cs;
        for (int64_t l = 0; l < loads; l++)
            for (int64_t j = 0; j < KN_NBITS_I8_PC; j++) {
                int64_t n = t * KN_NBITS_I8_PC + j;
                uint32_t w = 0;
                if (n < N) memcpy(&w, b + n * cs + l * 4, 4);
                if (bits == 4) w = nb_pack4(w);
                memcpy(d + (l * KN_NBITS_I8_PC + j) * 4, &w, 4);
            }
    }
}

void kn_nbits_i8_deint(const int8_t *qa, int64_t n, int64_t bs, int8_t *dst) {
    int64_t w = bs < 32 ? bs : 32, h = w / 2;
    for (int64_t g = 0; g + w <= n; g += w)
        for (int64_t i = 0; i < h; i++) {
            dst[g + i] = qa[g + 2 * i];
            dst[g + h + i] = qa[g + 2 * i + 1];
        }
}

/* ---- MatMulNBits ---- */

typedef void (*nb_dot_fn)(const float *, int64_t, int, const uint8_t *, const float *, const float *, int64_t, int,
                          int64_t, float *, int64_t);
typedef void (*nb_deq_fn)(const uint8_t *, const float *, const float *, int64_t, int, int64_t, int64_t, int64_t,
                          float *);
typedef void (*nb_dot4_fn)(const float *, const uint8_t *, int64_t, const float *, const float *, int64_t, int64_t, int,
                           int64_t, float *);
typedef void (*nb_dot4p_fn)(const float *, const float *, const uint8_t *, int64_t, const float *, const float *,
                            int64_t, int64_t, int64_t, float *);
typedef void (*nb_tile_fn)(const float *, int64_t, const float *, int64_t, int64_t, float *, int64_t, bool);
typedef void (*nb_edge_fn)(const float *, int64_t, int, const float *, int64_t, int, int64_t, float *, int64_t, bool);
typedef void (*nb_op_fn)(const float *, int64_t, int, const float *, int64_t, int, int64_t, float *, int64_t, bool);

enum { NB_NC = 64, NB_KC = 1024 };

typedef struct nb_job {
    const float *a, *sc, *off;
    const uint8_t *b;
    int64_t M, N, K, nb, blob, bs;
    int bits;
    float *y;
    nb_dot_fn dot;
    nb_deq_fn deq;
    nb_dot4_fn dot4; /* NULL without SIMD */
    nb_dot4p_fn dot4p;
    const float *ad; /* A's row deinterleaved for dot4p, or NULL */
    nb_tile_fn tile;
    nb_edge_fn edge;
    int tm, tn;
    nb_op_fn op;     /* the outer-product tile (kn_nbits_optile_*), or NULL */
    const float *at; /* with op: A transposed, at[k * mp + m], rows zero up to mp */
    int64_t mp;      /* M rounded up to a vector of rows */
    char *wbuf;      /* the stripe tasks' panels, wsize bytes a slot (nb_stripe_slots) */
    size_t wsize;
    int64_t wgrain;
    /* accuracy_level 4: A's rows quantised (kn_nbits_quant_a), the bias as float32 or NULL */
    int8_t *qa, *qd; /* qd: qa reordered for the vector loop (4 bits), or NULL */
    float *sa, *asum, *biasf;
    bool vec8, vnni;
    const uint8_t *bp; /* B packed (kn_nbits_i8_pack16), or NULL */
    const float *offp; /* the packed path's offsets, NULL without zero points */
    float zdef;
    /* the scale / zero-point decoding (nb_prep_task) */
    const kn_tensor *sct, *zpt;
    float *sc_w, *off_w;
} nb_job;

/* Per-block scales and offsets (-zero_point * scale) of columns [begin, end) as float32. */
static void nb_prep_task(void *vctx, int64_t begin, int64_t end) {
    nb_job *j = vctx;
    int64_t nb = j->nb, zs = (nb * j->bits + 7) / 8;
    float zdef = (float)(1 << (j->bits - 1));
    const kn_tensor *sct = j->sct, *zpt = j->zpt;
    for (int64_t n = begin; n < end; n++) {
        float *sc = j->sc_w + n * nb, *off = j->off_w + n * nb;
        if (sct->dtype == KN_F32) memcpy(sc, (const float *)sct->data + n * nb, (size_t)nb * sizeof(float));
        else
            for (int64_t b = 0; b < nb; b++) sc[b] = kn_load_f32(sct->data, sct->dtype, n * nb + b);
        if (!zpt) {
            for (int64_t b = 0; b < nb; b++) off[b] = -zdef * sc[b];
        } else if (zpt->dtype == KN_U8) {
            const uint8_t *zb = (const uint8_t *)zpt->data + n * zs;
            if (j->bits == 4)
                for (int64_t b = 0; b < nb; b++) off[b] = -(float)((zb[b / 2] >> ((b & 1) * 4)) & 15) * sc[b];
            else
                for (int64_t b = 0; b < nb; b++) off[b] = -(float)zb[b] * sc[b];
        } else {
            for (int64_t b = 0; b < nb; b++) off[b] = -kn_load_f32(zpt->data, zpt->dtype, n * nb + b) * sc[b];
        }
    }
}

/* The decoding's inputs checked as the kernel checks them: shapes matching N and the block count. */
static bool nb_prep_fits(const kn_params_ms_nbits *p, const kn_tensor *sct, const kn_tensor *zpt) {
    int64_t nb = (p->K + p->block_size - 1) / p->block_size;
    if (!sct || kn_numel(sct) != p->N * nb || (sct->dtype != KN_F32 && sct->dtype != KN_F16 && sct->dtype != KN_BF16))
        return false;
    if (!zpt) return true;
    if (zpt->dtype == KN_U8) return kn_numel(zpt) == p->N * ((nb * p->bits + 7) / 8);
    return zpt->dtype == sct->dtype && kn_numel(zpt) == p->N * nb;
}

/* Whether ONNX Runtime 1.32's CPU kernel takes its int8 path (CompInt8) for this node, but for A's
 * dtype (float32 or float16, which is widened first): level 4, 4- or 8-bit weights, a power-of-two
 * block size 16..256, no zero points or uint8 ones (float zero points make it fall back to
 * float32). */
static bool nb_int8_params(const kn_params_ms_nbits *p, const kn_tensor *zpt) {
    int64_t bs = p->block_size;
    return p->accuracy_level == 4 && (p->bits == 4 || p->bits == 8) && bs >= 16 && bs <= 256 && (bs & (bs - 1)) == 0 &&
        (!zpt || zpt->dtype == KN_U8);
}

/* The packed weights are streamed once per decode step: on 2 MiB pages (where the kernel offers
 * them on request) a step walks a few hundred TLB entries instead of ~60,000 4 KiB ones. */
static uint8_t *nb_big_alloc(size_t n) {
    size_t huge = (size_t)2 << 20;
    if (n < huge) return malloc(n);
    uint8_t *p = aligned_alloc(huge, (n + huge - 1) / huge * huge);
#ifdef MADV_HUGEPAGE
    if (p) madvise(p, (n + huge - 1) / huge * huge, MADV_HUGEPAGE);
#endif
    return p;
}

kn_status *kn_nbits_prepare(const kn_node *n, const kn_tensor *b, const kn_tensor *sc, const kn_tensor *zp,
                            kn_nbits_prepared **out) {
    const kn_params_ms_nbits *p = KN_PARAMS(n, ms_nbits);
    *out = NULL;
    if (!nb_prep_fits(p, sc, zp) || !sc->data || (zp && !zp->data)) return NULL;
    int64_t nb = (p->K + p->block_size - 1) / p->block_size, cnt = p->N * nb, blob = p->block_size * p->bits / 8;
    /* level 4 nodes keep only the int8 path's grouped layout (a bfloat16 A, which takes the float32
     * product, decodes the plain one on its run); a constant B is packed for the VNNI loop, which
     * then takes every run of few rows */
    bool grouped = nb_int8_params(p, zp);
    bool pack = grouped && b && b->data && b->dtype == KN_U8 && kn_numel(b) == p->N * nb * blob && kn_nbits_have_vnni();
    int64_t w = pack ? KN_NBITS_I8_PC : 8, keep = grouped ? (p->N + w - 1) / w * w * nb : cnt;
    kn_nbits_prepared *pr = calloc(1, sizeof *pr);
    float *buf = malloc(sizeof(float) * (size_t)(2 * keep)), *tmp = grouped ? malloc(sizeof(float) * 2 * cnt) : NULL;
    size_t npack = pack ? (size_t)((p->N + w - 1) / w * w * nb * blob) : 0;
    uint8_t *bp = pack ? nb_big_alloc(npack) : NULL;
    if (!pr || !buf || (grouped && !tmp) || (pack && !bp)) {
        free(pr);
        free(buf);
        free(tmp);
        free(bp);
        return KN_OOM(sizeof(float) * (size_t)(2 * (keep + cnt)) + npack);
    }
    pr->count = cnt;
    pr->group = grouped ? (int)w : 0;
    pr->sc = buf;
    pr->off = buf + keep;
    pr->zp = zp != NULL;
    if (pack) {
        kn_nbits_i8_pack16(b->data, p->N, nb, (int)p->bits, p->block_size, bp);
        pr->bp = bp;
        pr->b_src = b->data;
    }
    nb_job j = {.nb = nb,
                .bits = (int)p->bits,
                .sct = sc,
                .zpt = zp,
                .sc_w = grouped ? tmp : pr->sc,
                .off_w = grouped ? tmp + cnt : pr->off};
    nb_prep_task(&j, 0, p->N);
    if (grouped) {
        kn_nbits_group(tmp, p->N, nb, w, pr->sc);
        kn_nbits_group(tmp + cnt, p->N, nb, w, pr->off);
        free(tmp);
    }
    *out = pr;
    return NULL;
}

void kn_nbits_prepared_free(void *v) {
    kn_nbits_prepared *p = v;
    if (p) {
        free(p->sc);
        free(p->bp);
    }
    free(p);
}

static void nb_quant_task(void *vctx, int64_t begin, int64_t end) {
    const nb_job *j = vctx;
    int64_t nb = j->nb, lq = nb * j->bs;
    bool v512 = kn_red_simd_level() == 2;
    for (int64_t m = begin; m < end; m++) {
        if (v512)
            kn_nbits_quant_a_avx512(j->a + m * j->K, j->K, j->bs, false, j->qa + m * lq, j->sa + m * nb,
                                    j->asum + m * nb);
        else kn_nbits_quant_a(j->a + m * j->K, j->K, j->bs, j->qa + m * lq, j->sa + m * nb, j->asum + m * nb);
        if (j->qd) kn_nbits_i8_deint(j->qa + m * lq, lq, j->bs, j->qd + m * lq);
    }
}

/* groups of 8 columns [begin, end) for every row, up to 4 rows at a time: AVX2 for full groups, the
 * plain loop for the last, partial one (or without AVX2) */
static void nb_int8_task(void *vctx, int64_t begin, int64_t end) {
    const nb_job *j = vctx;
    int64_t nb = j->nb, cs = nb * j->blob, lq = nb * j->bs;
    for (int64_t g = begin; g < end; g++) {
        int64_t n = g * 8, nc = j->N - n < 8 ? j->N - n : 8;
        const float *sc8 = j->sc + g * nb * 8, *off8 = j->off + g * nb * 8, *bias = j->biasf ? j->biasf + n : NULL;
        for (int64_t m = 0; m < j->M; m += KN_NBITS_I8_NR) {
            int nr = j->M - m < KN_NBITS_I8_NR ? (int)(j->M - m) : KN_NBITS_I8_NR;
            if (j->vec8 && nc == 8) {
                (j->vnni ? kn_nbits_i8_dot8_vnni : kn_nbits_i8_dot8_avx2)(
                    j->qd ? j->qd + m * lq : j->qa + m * lq, lq, j->sa + m * nb, j->asum + m * nb, nb, nr,
                    j->b + n * cs, cs, sc8, off8, nb, j->bits, j->bs, bias, j->y + m * j->N + n, j->N);
                continue;
            }
            for (int r = 0; r < nr; r++)
                kn_nbits_i8_dot_scalar(j->qa + (m + r) * lq, j->sa + (m + r) * nb, j->asum + (m + r) * nb,
                                       j->b + n * cs, cs, sc8, off8, 1, 8, nb, j->bits, j->bs, bias, (int)nc,
                                       j->y + (m + r) * j->N + n);
        }
    }
}

/* tiles of 16 packed columns [begin, end) for every row, up to 4 rows at a time */
static void nb_i8p_task(void *vctx, int64_t begin, int64_t end) {
    const nb_job *j = vctx;
    int64_t nb = j->nb, ts = KN_NBITS_I8_PC * nb * j->blob, lq = nb * j->bs;
    for (int64_t t = begin; t < end; t++) {
        int64_t n = t * KN_NBITS_I8_PC, nc = j->N - n < KN_NBITS_I8_PC ? j->N - n : KN_NBITS_I8_PC;
        const float *sc = j->sc + t * nb * KN_NBITS_I8_PC, *off = j->offp ? j->offp + t * nb * KN_NBITS_I8_PC : NULL;
        for (int64_t m = 0; m < j->M; m += KN_NBITS_I8_NR) {
            int nr = j->M - m < KN_NBITS_I8_NR ? (int)(j->M - m) : KN_NBITS_I8_NR;
            kn_nbits_i8_dot16p_vnni(j->qa + m * lq, lq, j->sa + m * nb, j->asum + m * nb, nb, nr, j->bp + t * ts, sc,
                                    off, j->zdef, nb, j->bits, j->bs, j->biasf ? j->biasf + n : NULL, (int)nc,
                                    j->y + m * j->N + n, j->N);
        }
    }
}

/* accuracy_level 4: A quantised row by row, then groups of columns in parallel (the bias added
 * inside, in ONNX Runtime's order); j->sc and j->off in kn_nbits_group's layout (16 columns with
 * packed B, else 8) */
static kn_status *nb_run_int8(kn_exec_ctx *ctx, nb_job *j, const kn_tensor *bias) {
    size_t nq = (size_t)(j->M * j->nb * j->bs), nf = (size_t)(j->M * j->nb);
    j->vec8 = kn_red_simd_level() >= 1;
    j->vnni = kn_nbits_have_vnni();
    bool deint = j->vec8 && j->bits == 4 && !j->bp;
    j->qa = kn_scratch_alloc(ctx, nq);
    j->qd = deint ? kn_scratch_alloc(ctx, nq) : NULL;
    j->sa = kn_scratch_alloc(ctx, sizeof(float) * 2 * nf);
    if (!j->qa || !j->sa || (deint && !j->qd)) return KN_OOM(2 * nq + sizeof(float) * 2 * nf);
    j->asum = j->sa + nf;
    if (bias) {
        if (!(j->biasf = kn_scratch_alloc(ctx, sizeof(float) * (size_t)j->N))) return KN_OOM(sizeof(float) * j->N);
        for (int64_t n = 0; n < j->N; n++) j->biasf[n] = kn_load_f32(bias->data, bias->dtype, n);
    }
    kn_parallel_for(ctx->pool, j->M, 1, nb_quant_task, j);
    if (j->bp) {
        /* chunks of at least 64 KiB of weights: a smaller product (a key or value projection at
         * decode) costs less on one thread than waking another */
        int64_t ts = KN_NBITS_I8_PC * j->nb * j->blob;
        kn_parallel_for(ctx->pool, (j->N + KN_NBITS_I8_PC - 1) / KN_NBITS_I8_PC, (65536 + ts - 1) / ts, nb_i8p_task, j);
        return NULL;
    }
    int64_t groups = (j->N + 7) / 8, th = ctx->pool ? kn_threadpool_size(ctx->pool) : 1, grain = groups / (4 * th);
    kn_parallel_for(ctx->pool, groups, grain < 1 ? 1 : grain, nb_int8_task, j);
    return NULL;
}

static void nb_gemv_task(void *vctx, int64_t begin, int64_t end) {
    const nb_job *j = vctx;
    int64_t cs = j->nb * j->blob;
    int64_t n = begin;
    if (j->M == 1 && j->ad)
        for (; n + 4 <= end; n += 4)
            j->dot4p(j->a, j->ad, j->b + n * cs, cs, j->sc + n * j->nb, j->zpt ? j->off + n * j->nb : NULL, j->nb, j->K,
                     j->bs, j->y + n);
    if (j->M == 1 && j->dot4)
        for (; n + 4 <= end; n += 4)
            j->dot4(j->a, j->b + n * cs, cs, j->sc + n * j->nb, j->off + n * j->nb, j->nb, j->K, j->bits, j->bs,
                    j->y + n);
    for (; n < end; n++)
        for (int64_t m0 = 0; m0 < j->M; m0 += 4) {
            int rows = j->M - m0 < 4 ? (int)(j->M - m0) : 4;
            j->dot(j->a + m0 * j->K, j->K, rows, j->b + n * cs, j->sc + n * j->nb, j->off + n * j->nb, j->K, j->bits,
                   j->bs, j->y + m0 * j->N + n, j->N);
        }
}

/* the values of K a dequantised panel holds: NB_KC at most, whole blocks */
static int64_t nb_kc(const nb_job *j) {
    int64_t kc = NB_KC < j->K ? NB_KC : j->K;
    return (kc + j->bs - 1) / j->bs * j->bs;
}

/* the stripe tasks' panels from the run's scratch, one per task call (no allocation in the tasks):
 * about 4 calls a thread, each over at least wgrain stripes, so begin / wgrain names a call's slot */
static kn_status *nb_stripe_slots(kn_exec_ctx *ctx, nb_job *j, size_t bytes) {
    int64_t ns = (j->N + NB_NC - 1) / NB_NC, th = ctx->pool ? kn_threadpool_size(ctx->pool) : 1;
    j->wgrain = (ns + 4 * th - 1) / (4 * th);
    j->wsize = (bytes + 63) / 64 * 64;
    size_t total = j->wsize * (size_t)((ns + j->wgrain - 1) / j->wgrain);
    if (!(j->wbuf = kn_scratch_alloc(ctx, total))) return KN_OOM(total);
    return NULL;
}

/* columns [n0, n0 + nc) dequantised over K values [k0, k0 + kl) (whole blocks): column c at
 * panel + c * kl */
static void nb_deq_panel(const nb_job *j, int64_t n0, int64_t nc, int64_t k0, int64_t kl, float *panel) {
    int64_t blk0 = k0 / j->bs, blk1 = (k0 + kl + j->bs - 1) / j->bs;
    for (int64_t c = 0; c < nc; c++) {
        int64_t n = n0 + c;
        j->deq(j->b + n * j->nb * j->blob, j->sc + n * j->nb, j->off + n * j->nb, j->K, j->bits, j->bs, blk0, blk1,
               panel + c * kl);
    }
}

/* One stripe of NB_NC columns: panels of NB_KC values of K, each dequantised once, then
 * multiplied by every row of A in tiles (or by kn_sgemm without SIMD tiles). */
static void nb_gemm_task(void *vctx, int64_t begin, int64_t end) {
    nb_job *j = vctx;
    int64_t kc = nb_kc(j);
    float *panel = (float *)(j->wbuf + (size_t)(begin / j->wgrain) * j->wsize);
    for (int64_t st = begin; st < end; st++) {
        int64_t n0 = st * NB_NC, nc = j->N - n0 < NB_NC ? j->N - n0 : NB_NC;
        for (int64_t k0 = 0; k0 < j->K; k0 += kc) {
            int64_t kl = j->K - k0 < kc ? j->K - k0 : kc;
            nb_deq_panel(j, n0, nc, k0, kl, panel);
            bool acc = k0 > 0;
            if (!j->tile) {
                kn_sgemm(NULL, false, true, j->M, nc, kl, 1.0f, j->a + k0, j->K, panel, kl, acc ? 1.0f : 0.0f,
                         j->y + n0, j->N);
                continue;
            }
            int64_t tm = j->tm, tn = j->tn, mf = j->M / tm * tm, nf = nc / tn * tn;
            for (int64_t m0 = 0; m0 < mf; m0 += tm)
                for (int64_t c0 = 0; c0 < nf; c0 += tn)
                    j->tile(j->a + m0 * j->K + k0, j->K, panel + c0 * kl, kl, kl, j->y + m0 * j->N + n0 + c0, j->N,
                            acc);
            if (nf < nc)
                j->edge(j->a + k0, j->K, (int)mf, panel + nf * kl, kl, (int)(nc - nf), kl, j->y + n0 + nf, j->N, acc);
            if (mf < j->M)
                j->edge(j->a + mf * j->K + k0, j->K, (int)(j->M - mf), panel, kl, (int)nc, kl, j->y + mf * j->N + n0,
                        j->N, acc);
        }
    }
}

/* A transposed for the outer-product tiles: values [begin, end) of K, 16 at a time so that each
 * row of A is read a cache line at a time */
static void nb_at_task(void *vctx, int64_t begin, int64_t end) {
    const nb_job *j = vctx;
    float *at = (float *)j->at;
    for (int64_t k0 = begin * 16; k0 < end * 16 && k0 < j->K; k0 += 16) {
        int64_t kn = j->K - k0 < 16 ? j->K - k0 : 16;
        for (int64_t m = 0; m < j->M; m++)
            for (int64_t k = 0; k < kn; k++) at[(k0 + k) * j->mp + m] = j->a[m * j->K + k0 + k];
        for (int64_t k = 0; k < kn; k++)
            for (int64_t m = j->M; m < j->mp; m++) at[(k0 + k) * j->mp + m] = 0.0f;
    }
}

/* nb_gemm_task with the outer-product tiles: each stripe's product is made transposed in a
 * stripe-sized buffer (C^T, [NB_NC][mp]) over the panels of K, then written to y once. */
static void nb_gemm_op_task(void *vctx, int64_t begin, int64_t end) {
    nb_job *j = vctx;
    int64_t kc = nb_kc(j), mp = j->mp;
    float *panel = (float *)(j->wbuf + (size_t)(begin / j->wgrain) * j->wsize);
    float *ct = panel + NB_NC * kc;
    for (int64_t st = begin; st < end; st++) {
        int64_t n0 = st * NB_NC, nc = j->N - n0 < NB_NC ? j->N - n0 : NB_NC;
        for (int64_t k0 = 0; k0 < j->K; k0 += kc) {
            int64_t kl = j->K - k0 < kc ? j->K - k0 : kc;
            nb_deq_panel(j, n0, nc, k0, kl, panel);
            /* rows outer: a block of A's panel stays in cache for every column of the stripe */
            for (int64_t m0 = 0; m0 < mp; m0 += 16 * KN_NBITS_OP_MV) {
                int mv = (int)((mp - m0) / 16 < KN_NBITS_OP_MV ? (mp - m0) / 16 : KN_NBITS_OP_MV);
                for (int64_t c0 = 0; c0 < nc; c0 += KN_NBITS_OP_NT) {
                    int nt = (int)(nc - c0 < KN_NBITS_OP_NT ? nc - c0 : KN_NBITS_OP_NT);
                    j->op(j->at + k0 * mp + m0, mp, mv, panel + c0 * kl, kl, nt, kl, ct + c0 * mp + m0, mp, k0 > 0);
                }
            }
        }
        for (int64_t m = 0; m < j->M; m++)
            for (int64_t c = 0; c < nc; c++) j->y[m * j->N + n0 + c] = ct[c * mp + m];
    }
}

/* the float32 product: per-row dot products for few rows, dequantised panels in tiles for more */
static kn_status *nb_run_float(kn_exec_ctx *ctx, nb_job *jp, int64_t M) {
    nb_job j = *jp; /* (the tasks read it; the caller's copy keeps y) */
    int64_t K = j.K, N = j.N, bs = j.bs;
    int bits = j.bits;
    int lvl = kn_red_simd_level();
    if (lvl == 2) {
        j.dot = kn_nbits_dot_avx512;
        j.deq = kn_nbits_dequant_avx512;
        j.dot4 = kn_nbits_dot1x4_avx512;
        j.dot4p = kn_nbits_dot1x4_4p_avx512;
        j.tile = kn_nbits_tile_avx512;
        j.edge = kn_nbits_edge_avx512;
        j.tm = KN_NBITS_TM_AVX512;
        j.tn = KN_NBITS_TN_AVX512;
    } else if (lvl == 1) {
        j.dot = kn_nbits_dot_avx2;
        j.deq = kn_nbits_dequant_avx2;
        j.dot4 = kn_nbits_dot1x4_avx2;
        j.dot4p = kn_nbits_dot1x4_4p_avx2;
        j.tile = kn_nbits_tile_avx2;
        j.edge = kn_nbits_edge_avx2;
        j.tm = KN_NBITS_TM_AVX2;
        j.tn = KN_NBITS_TN_AVX2;
    } else {
        j.dot = kn_nbits_dot_scalar;
        j.deq = kn_nbits_dequant_scalar;
    }
    /* decode of 4-bit weights: A's row deinterleaved once, so W bytes of weights give two vectors
     * by a mask and a shift (kn_nbits_dot1x4_4p) */
    int64_t w2 = 2 * (lvl == 2 ? KN_NBITS_W_AVX512 : KN_NBITS_W_AVX2);
    if (M == 1 && bits == 4 && j.dot4p && bs % w2 == 0) {
        float *ad = kn_scratch_alloc(ctx, sizeof(float) * (size_t)K);
        if (!ad) return KN_OOM(sizeof(float) * K);
        (lvl == 2 ? kn_nbits_deint_avx512 : kn_nbits_deint_avx2)(j.a, K / bs * bs, ad);
        j.ad = ad;
    }
    if (M < 8) {
        int64_t th = ctx->pool ? kn_threadpool_size(ctx->pool) : 1, grain = N / (4 * th);
        grain = grain < 8 ? 8 : grain / 4 * 4;
        kn_parallel_for(ctx->pool, N, grain, nb_gemv_task, &j);
    } else if (lvl == 2) { /* A transposed once, then outer-product tiles */
        j.op = kn_nbits_optile_avx512;
        j.mp = (M + 15) / 16 * 16;
        float *at = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(j.mp * K));
        if (!at) return KN_OOM(sizeof(float) * j.mp * K);
        j.at = at;
        kn_parallel_for(ctx->pool, (K + 15) / 16, 8, nb_at_task, &j);
        KN_TRY(nb_stripe_slots(ctx, &j, sizeof(float) * (size_t)(NB_NC * (nb_kc(&j) + j.mp))));
        kn_parallel_for(ctx->pool, (N + NB_NC - 1) / NB_NC, j.wgrain, nb_gemm_op_task, &j);
    } else {
        KN_TRY(nb_stripe_slots(ctx, &j, sizeof(float) * (size_t)(NB_NC * nb_kc(&j))));
        kn_parallel_for(ctx->pool, (N + NB_NC - 1) / NB_NC, j.wgrain, nb_gemm_task, &j);
    }
    return NULL;
}

kn_status *kn_cpu_MsMatMulNBits(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *const *out, int n_out) {
    (void)n_out;
    char b0[KN_DESC_LEN];
    const kn_params_ms_nbits *p = KN_PARAMS(node, ms_nbits);
#define NB_IN(i) (n_in > (i) ? in[i] : NULL)
    const kn_tensor *a = in[0], *b = NB_IN(1), *sct = NB_IN(2), *zpt = NB_IN(3), *bias = NB_IN(5);
    KN_TRY(kn_nbits_check(node, b, sct, zpt, NB_IN(4)));
#undef NB_IN
    int64_t K = p->K, N = p->N, bs = p->block_size, nb = (K + bs - 1) / bs;
    int bits = (int)p->bits;
    if (a->ndim < 1 || a->dims[a->ndim - 1] != K)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "MatMulNBits '%s': A %s must end in K=%lld", nb_name(node),
                        kn_tensor_desc(a, b0, sizeof b0), (long long)K);
    if (a->dtype != KN_F32 && a->dtype != KN_F16 && a->dtype != KN_BF16) return kn_err_dtype(node, a);
    if (bias && (kn_numel(bias) != N || (bias->dtype != KN_F32 && bias->dtype != KN_F16 && bias->dtype != KN_BF16)))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "MatMulNBits '%s': bias %s must be [N=%lld]", nb_name(node),
                        kn_tensor_desc(bias, b0, sizeof b0), (long long)N);
    int64_t M = kn_numel(a) / K;
    kn_tensor *yt = out[0];
    if (M == 0) return NULL;

    /* per-block scales and offsets as float32 (N * blocks, small next to B): decoded at load for
     * constant ones, else here */
    nb_job j = {.b = b->data,
                .M = M,
                .N = N,
                .K = K,
                .nb = nb,
                .blob = bs * bits / 8,
                .bs = bs,
                .bits = bits,
                .sct = sct,
                .zpt = zpt};
    const kn_nbits_prepared *pr = node->prepared;
    bool int8 = nb_int8_params(p, zpt) && (a->dtype == KN_F32 || a->dtype == KN_F16);
    /* prefill at level 4: the int8 GEMM (nbits_i8gemm.c) */
    bool gemm8 = int8 && M >= KN_NBITS_I8_GEMM_M;
    if (gemm8) int8 = false;
    /* the packed B only where it was packed from this very B */
    bool packed = int8 && pr && pr->count == N * nb && pr->bp && pr->b_src == b->data;
    /* the int8 GEMM also reads the prepared grouped scales, as they are (no decoding per run) */
    int64_t ggroup = gemm8 && pr && pr->count == N * nb ? pr->group : 0;
    if (pr && pr->count == N * nb && (packed || ggroup > 0 || pr->group == (int8 ? 8 : 0))) {
        j.sc = pr->sc;
        j.off = pr->off;
        if (packed) {
            j.bp = pr->bp;
            j.offp = pr->zp ? pr->off : NULL;
            j.zdef = (float)(1 << (bits - 1));
        }
    } else {
        size_t nsc = (size_t)(N * nb);
        float *sc = kn_scratch_alloc(ctx, sizeof(float) * 2 * nsc);
        if (!sc) return KN_OOM(sizeof(float) * 2 * nsc);
        j.sc = j.sc_w = sc;
        j.off = j.off_w = sc + nsc;
        kn_parallel_for(ctx->pool, N, 64, nb_prep_task, &j);
        if (int8) {
            size_t ng = (size_t)((N + 7) / 8 * 8 * nb);
            float *g = kn_scratch_alloc(ctx, sizeof(float) * 2 * ng);
            if (!g) return KN_OOM(sizeof(float) * 2 * ng);
            kn_nbits_group(j.sc, N, nb, 8, g);
            kn_nbits_group(j.off, N, nb, 8, g + ng);
            j.sc = g;
            j.off = g + ng;
        }
    }
    if (a->dtype == KN_F32) j.a = a->data;
    else {
        float *af = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(M * K));
        if (!af) return KN_OOM(sizeof(float) * M * K);
        for (int64_t i = 0; i < M * K; i++) af[i] = kn_load_f32(a->data, a->dtype, i);
        j.a = af;
    }
    if (yt->dtype == KN_F32) j.y = yt->data;
    else if (!(j.y = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(M * N)))) return KN_OOM(sizeof(float) * M * N);
    if (gemm8) {
        float *bf = bias ? kn_scratch_alloc(ctx, sizeof(float) * (size_t)N) : NULL;
        if (bias && !bf) return KN_OOM(sizeof(float) * N);
        for (int64_t n = 0; bias && n < N; n++) bf[n] = kn_load_f32(bias->data, bias->dtype, n);
        KN_TRY(kn_nbits_i8gemm(ctx, j.a, M, N, K, bs, bits, j.b, j.sc, j.off, ggroup, bf, j.y, -1));
        bias = NULL; /* added inside */
    } else if (int8) {
        KN_TRY(nb_run_int8(ctx, &j, bias));
        bias = NULL; /* added inside */
    } else {
        KN_TRY(nb_run_float(ctx, &j, M));
    }
    if (bias)
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) j.y[m * N + n] += kn_load_f32(bias->data, bias->dtype, n);
    if (yt->dtype != KN_F32)
        for (int64_t i = 0; i < M * N; i++) kn_store_f32(yt->data, yt->dtype, i, j.y[i]);
    return NULL;
}

/* ---- GatherBlockQuantized ---- */

typedef struct gbq_job {
    const kn_tensor *data, *scales, *zp;
    const int64_t *idx;
    int64_t n_idx, gdim, inner, bs; /* gather dim of data, elements after it */
    int64_t qstride, qdim, sqdim;   /* quantize axis: stride, data dim, scales dim */
    int64_t slast;                  /* last dim of scales (zero points pack along it) */
    bool packed;                    /* uint8 holding two 4-bit values */
    int bits;
    float *y;
} gbq_job;

/* Element f (logical, row-major) of a block-quantised tensor. */
static inline int gbq_q(const kn_tensor *t, int64_t f, bool packed) {
    const uint8_t *d = t->data;
    if (packed) return (d[f / 2] >> ((f & 1) * 4)) & 15;
    if (t->dtype == KN_I4) return ((const int8_t *)t->data)[f];
    return d[f];
}

static void gbq_task(void *vctx, int64_t begin, int64_t end) {
    const gbq_job *j = vctx;
    /* without zero points: the middle of uint8's range, 0 for int4 and uint4 (as ONNX Runtime) */
    float zdef = j->data->dtype == KN_U8 ? (float)(1 << (j->bits - 1)) : 0.0f;
    for (int64_t r = begin; r < end; r++) {
        int64_t o = r / j->n_idx, i = j->idx[r % j->n_idx];
        int64_t base = (o * j->gdim + i) * j->inner;
        float *y = j->y + r * j->inner;
        for (int64_t e = 0; e < j->inner; e++) {
            int64_t f = base + e, coord = (f / j->qstride) % j->qdim;
            int64_t sf =
                (f / (j->qstride * j->qdim)) * (j->sqdim * j->qstride) + (coord / j->bs) * j->qstride + f % j->qstride;
            float s = kn_load_f32(j->scales->data, j->scales->dtype, sf), z = zdef;
            if (j->zp) {
                if (j->packed) {
                    int64_t zr = sf / j->slast, zc = sf % j->slast;
                    z = (float)((((const uint8_t *)j->zp->data)[zr * ((j->slast + 1) / 2) + zc / 2] >> ((zc & 1) * 4)) &
                                15);
                } else {
                    z = (float)gbq_q(j->zp, sf, false);
                }
            }
            y[e] = ((float)gbq_q(j->data, f, j->packed) - z) * s;
        }
    }
}

kn_status *kn_gbq_geometry(const kn_node *node, const kn_tensor *const *in, int n_in, kn_gbq_geom *g) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_params_ms_gbq *p = KN_PARAMS(node, ms_gbq);
    const kn_tensor *data = in[0], *idx = n_in > 1 ? in[1] : NULL, *sc = n_in > 2 ? in[2] : NULL;
    const kn_tensor *zp = n_in > 3 ? in[3] : NULL;
    if (!idx || !sc)
        return kn_error(KN_ERR_INVALID_MODEL, "GatherBlockQuantized '%s': data, indices and scales are required",
                        nb_name(node));
    bool packed = data->dtype == KN_U8 && p->bits == 4;
    int nd = data->ndim;
    if (nd < 1)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "GatherBlockQuantized '%s': data must have rank >= 1", nb_name(node));
    int64_t ld[KN_MAX_DIMS];
    for (int i = 0; i < nd; i++) ld[i] = data->dims[i];
    if (packed) ld[nd - 1] *= 2;
    int ga, qa;
    KN_TRY(kn_norm_axis(p->gather_axis, nd, node, &ga));
    KN_TRY(kn_norm_axis(p->quantize_axis, nd, node, &qa));
    bool ok = sc->ndim == nd;
    for (int i = 0; ok && i < nd; i++)
        ok = sc->dims[i] == (i == qa ? (ld[i] + p->block_size - 1) / p->block_size : ld[i]);
    if (!ok)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "GatherBlockQuantized '%s': scales %s do not fit data %s with block_size %lld along axis %d",
                        nb_name(node), kn_tensor_desc(sc, b0, sizeof b0), kn_tensor_desc(data, b1, sizeof b1),
                        (long long)p->block_size, qa);
    if (zp) {
        bool zok = zp->ndim == nd && zp->dtype == data->dtype;
        for (int i = 0; zok && i < nd; i++)
            zok = zp->dims[i] == (packed && i == nd - 1 ? (sc->dims[i] + 1) / 2 : sc->dims[i]);
        if (!zok)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "GatherBlockQuantized '%s': zero_points %s do not fit scales %s",
                            nb_name(node), kn_tensor_desc(zp, b0, sizeof b0), kn_tensor_desc(sc, b1, sizeof b1));
    }
    g->n_idx = kn_numel(idx);
    g->outer = g->inner = g->qstride = 1;
    for (int i = 0; i < ga; i++) g->outer *= ld[i];
    for (int i = ga + 1; i < nd; i++) g->inner *= ld[i];
    for (int i = qa + 1; i < nd; i++) g->qstride *= ld[i];
    g->gdim = ld[ga];
    g->bs = p->block_size;
    g->qdim = ld[qa];
    g->sqdim = sc->dims[qa];
    g->slast = sc->dims[nd - 1];
    g->ga = ga;
    g->qa = qa;
    g->packed = packed;
    return NULL;
}

kn_status *kn_cpu_MsGatherBlockQuantized(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                         kn_tensor *const *out, int n_out) {
    (void)n_out;
    kn_gbq_geom g;
    KN_TRY(kn_gbq_geometry(node, in, n_in, &g));
    const kn_params_ms_gbq *p = KN_PARAMS(node, ms_gbq);
    const kn_tensor *data = in[0], *idx = in[1], *sc = in[2], *zp = n_in > 3 ? in[3] : NULL;
    int64_t n_idx = g.n_idx;
    int64_t *iv = kn_scratch_alloc(ctx, sizeof(int64_t) * (size_t)(n_idx > 0 ? n_idx : 1));
    if (!iv) return KN_OOM(sizeof(int64_t) * n_idx);
    for (int64_t i = 0; i < n_idx; i++) {
        int64_t v = kn_get_i64(idx, i);
        if (v < -g.gdim || v >= g.gdim)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "GatherBlockQuantized '%s': index %lld is outside data dim %d of %lld", nb_name(node),
                            (long long)v, g.ga, (long long)g.gdim);
        iv[i] = v < 0 ? v + g.gdim : v;
    }
    gbq_job j = {.data = data,
                 .scales = sc,
                 .zp = zp,
                 .idx = iv,
                 .n_idx = n_idx,
                 .gdim = g.gdim,
                 .inner = g.inner,
                 .bs = g.bs,
                 .qstride = g.qstride,
                 .qdim = g.qdim,
                 .sqdim = g.sqdim,
                 .slast = g.slast,
                 .packed = g.packed,
                 .bits = (int)p->bits};
    kn_tensor *yt = out[0];
    int64_t n = g.outer * n_idx * g.inner;
    if (n == 0) return NULL;
    if (yt->dtype == KN_F32) j.y = yt->data;
    else if (!(j.y = kn_scratch_alloc(ctx, sizeof(float) * (size_t)n))) return KN_OOM(sizeof(float) * n);
    kn_parallel_for(ctx->pool, g.outer * n_idx, 16, gbq_task, &j);
    if (yt->dtype != KN_F32)
        for (int64_t i = 0; i < n; i++) kn_store_f32(yt->data, yt->dtype, i, j.y[i]);
    return NULL;
}
