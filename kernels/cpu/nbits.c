/* CPU kernels of the block-quantised weight ops of int4/int8 exports: com.microsoft MatMulNBits
 * (Y = A x dequant(B)^T + bias, B [N, blocks, block_size * bits / 8] with 4-bit values low nibble
 * first) and GatherBlockQuantized. MatMulNBits never makes the fp32 weight matrix: products of few
 * rows (decode) dequantise one vector of weights at a time in registers and take its dot products
 * with every row at once (nbits_impl.h); larger products dequantise a panel of 64 columns by at
 * most 1024 values of K at a time (256 KiB, cache-sized) per task and hand it to kn_sgemm.
 * accuracy_level is accepted and the product computed in float32 (ONNX Runtime's level 4 quantises
 * A to int8 instead; kiln keeps the more accurate product). */
#include "graph/op_helpers.h"
#include "graph/ops.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/nbits.h"
#include "kernels/cpu/rows.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *nb_name(const kn_node *n) { return n->name ? n->name : ""; }

/* ---- plain references of the inner loops (nbits_impl.h has the vector ones) ---- */

static inline int nb_q(const uint8_t *p, int64_t i, int bits) { return bits == 4 ? (p[i / 2] >> ((i & 1) * 4)) & 15 : p[i]; }

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

/* ---- MatMulNBits ---- */

typedef void (*nb_dot_fn)(const float *, int64_t, int, const uint8_t *, const float *, const float *, int64_t, int,
                          int64_t, float *, int64_t);
typedef void (*nb_deq_fn)(const uint8_t *, const float *, const float *, int64_t, int, int64_t, int64_t, int64_t,
                          float *);

enum { NB_NC = 64, NB_KC = 1024 };

typedef struct nb_job {
    const float *a, *sc, *off;
    const uint8_t *b;
    int64_t M, N, K, nb, blob, bs;
    int bits;
    float *y;
    nb_dot_fn dot;
    nb_deq_fn deq;
    bool failed;
} nb_job;

static void nb_gemv_task(void *vctx, int64_t begin, int64_t end) {
    const nb_job *j = vctx;
    for (int64_t n = begin; n < end; n++)
        for (int64_t m0 = 0; m0 < j->M; m0 += 4) {
            int rows = j->M - m0 < 4 ? (int)(j->M - m0) : 4;
            j->dot(j->a + m0 * j->K, j->K, rows, j->b + n * j->nb * j->blob, j->sc + n * j->nb, j->off + n * j->nb, j->K,
                   j->bits, j->bs, j->y + m0 * j->N + n, j->N);
        }
}

/* One stripe of NB_NC columns: panels of NB_KC values of K, each dequantised, then multiplied. */
static void nb_gemm_task(void *vctx, int64_t begin, int64_t end) {
    nb_job *j = vctx;
    int64_t kc = NB_KC < j->K ? NB_KC : j->K;
    kc = (kc + j->bs - 1) / j->bs * j->bs;
    float *panel = malloc(sizeof(float) * (size_t)(NB_NC * kc));
    if (!panel) {
        j->failed = true;
        return;
    }
    for (int64_t st = begin; st < end; st++) {
        int64_t n0 = st * NB_NC, nc = j->N - n0 < NB_NC ? j->N - n0 : NB_NC;
        for (int64_t k0 = 0; k0 < j->K; k0 += kc) {
            int64_t kl = j->K - k0 < kc ? j->K - k0 : kc, blk0 = k0 / j->bs, blk1 = (k0 + kl + j->bs - 1) / j->bs;
            for (int64_t c = 0; c < nc; c++) {
                int64_t n = n0 + c;
                j->deq(j->b + n * j->nb * j->blob, j->sc + n * j->nb, j->off + n * j->nb, j->K, j->bits, j->bs, blk0, blk1,
                       panel + c * kl);
            }
            kn_sgemm(NULL, false, true, j->M, nc, kl, 1.0f, j->a + k0, j->K, panel, kl, k0 ? 1.0f : 0.0f, j->y + n0, j->N);
        }
    }
    free(panel);
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

    /* per-block scales and offsets as float32 (N * blocks, small next to B) */
    size_t nsc = (size_t)(N * nb);
    float *sc = kn_scratch_alloc(ctx, sizeof(float) * 2 * nsc), *off = sc + nsc;
    if (!sc) return KN_OOM(sizeof(float) * 2 * nsc);
    int64_t zs = (nb * bits + 7) / 8; /* packed zero-point bytes per column */
    float zdef = (float)(1 << (bits - 1));
    for (int64_t n = 0; n < N; n++)
        for (int64_t blk = 0; blk < nb; blk++) {
            int64_t i = n * nb + blk;
            float s = kn_load_f32(sct->data, sct->dtype, i), z = zdef;
            if (zpt && zpt->dtype == KN_U8) {
                const uint8_t *zb = (const uint8_t *)zpt->data + n * zs;
                z = (float)(bits == 4 ? (zb[blk / 2] >> ((blk & 1) * 4)) & 15 : zb[blk]);
            } else if (zpt) {
                z = kn_load_f32(zpt->data, zpt->dtype, i);
            }
            sc[i] = s;
            off[i] = -z * s;
        }

    nb_job j = {.sc = sc, .off = off, .b = b->data, .M = M, .N = N, .K = K, .nb = nb, .blob = bs * bits / 8, .bs = bs,
                .bits = bits};
    if (a->dtype == KN_F32) j.a = a->data;
    else {
        float *af = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(M * K));
        if (!af) return KN_OOM(sizeof(float) * M * K);
        for (int64_t i = 0; i < M * K; i++) af[i] = kn_load_f32(a->data, a->dtype, i);
        j.a = af;
    }
    if (yt->dtype == KN_F32) j.y = yt->data;
    else if (!(j.y = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(M * N)))) return KN_OOM(sizeof(float) * M * N);
    int lvl = kn_red_simd_level();
    j.dot = lvl == 2 ? kn_nbits_dot_avx512 : lvl == 1 ? kn_nbits_dot_avx2 : kn_nbits_dot_scalar;
    j.deq = lvl == 2 ? kn_nbits_dequant_avx512 : lvl == 1 ? kn_nbits_dequant_avx2 : kn_nbits_dequant_scalar;
    if (M < 8) {
        int64_t th = ctx->pool ? kn_threadpool_size(ctx->pool) : 1, grain = N / (4 * th);
        kn_parallel_for(ctx->pool, N, grain < 8 ? 8 : grain, nb_gemv_task, &j);
    } else {
        kn_parallel_for(ctx->pool, (N + NB_NC - 1) / NB_NC, 1, nb_gemm_task, &j);
        if (j.failed) return KN_OOM(sizeof(float) * NB_NC * NB_KC);
    }
    if (bias)
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) j.y[m * N + n] += kn_load_f32(bias->data, bias->dtype, n);
    if (yt->dtype != KN_F32)
        for (int64_t i = 0; i < M * N; i++) kn_store_f32(yt->data, yt->dtype, i, j.y[i]);
    return NULL;
}
