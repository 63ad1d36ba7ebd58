/* CPU kernel of kiln's SdpaGrad, the backward of the fused attention KnSdpa (row in graph/ops.def,
 * shape rule in graph/infer_grad.c), in the FlashAttention-2 manner: one task per (batch, head);
 * within it query blocks of SG_BR rows meet key blocks of SG_BC columns, and each tile
 *   S = scale Q K^T + bias,  P = exp(S - lse),  dP = dY V^T,  dS = P (dP - rowsum(dY Y))
 * feeds dV += P^T dY, dQ += scale dS K, dK += scale dS^T Q at once, so no score matrix larger than
 * a tile exists. lse comes from the forward (KnSdpa's output 1) or, when omitted, from a first
 * pass over the key tiles with a running max and sum. Products go through kn_sgemm, the
 * elementwise steps through the SIMD row kernels (exp, add / sub / mul with a broadcast scalar).
 * float32 only: the forward's float path is float32, and so are the models kiln trains. */
#include "graph/ops.h"
#include "kernels/cpu/elementwise_simd.h"
#include "kernels/cpu/gemm.h"
#include "runtime/core/threadpool.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { SG_BR = 64, SG_BC = 128 };

typedef struct sg_job {
    int64_t B, H, S, T, D, Dv;
    float scale;
    bool causal;
    const float *dy, *q, *k, *v, *y, *lse;
    const float *bias; /* broadcast to [B,H,S,T] through bstride (0 = broadcast), or NULL */
    int64_t bstride[4];
    float *dq, *dk, *dv, *ds; /* ds: [B,H,S,T] or NULL */
    int ew;
    bool failed;
} sg_job;

/* Row r of the score tile: scale q.k (already there) + the bias row, keys past the causal
 * frontier set to -inf. */
static void sg_bias_row(const sg_job *j, int64_t b, int64_t h, int64_t i, int64_t t0, int64_t n, float *row) {
    if (j->bias) {
        const float *br = j->bias + b * j->bstride[0] + h * j->bstride[1] + i * j->bstride[2] + t0 * j->bstride[3];
        kn_ew_binary_f32_level(j->ew, KN_EW_ADD, row, 1, br, j->bstride[3] ? 1 : 0, row, n);
    }
    if (j->causal)
        for (int64_t t = i + 1 - t0 < 0 ? 0 : i + 1 - t0; t < n; t++) row[t] = -INFINITY;
}

/* The score tile of query rows [i0, i0+m) and keys [t0, t0+n) into s (row stride n). */
static void sg_scores(const sg_job *j, int64_t b, int64_t h, int64_t i0, int64_t m, int64_t t0, int64_t n, float *s) {
    const float *q = j->q + ((b * j->H + h) * j->S + i0) * j->D, *k = j->k + ((b * j->H + h) * j->T + t0) * j->D;
    if (j->D > 0) kn_sgemm(NULL, false, true, m, n, j->D, j->scale, q, j->D, k, j->D, 0.0f, s, n);
    else memset(s, 0, sizeof(float) * (size_t)(m * n));
    for (int64_t r = 0; r < m; r++) sg_bias_row(j, b, h, i0 + r, t0, n, s + r * n);
}

/* Keys [0, lim) are the only ones query rows up to i0+m-1 see under a causal mask. */
static int64_t sg_key_limit(const sg_job *j, int64_t i0, int64_t m) {
    if (!j->causal) return j->T;
    int64_t lim = i0 + m;
    return lim < j->T ? lim : j->T;
}

/* lse of query rows [i0, i0+m) by a running max and sum over the key tiles. */
static void sg_lse(const sg_job *j, int64_t b, int64_t h, int64_t i0, int64_t m, float *s, float *lse) {
    float mx[SG_BR], sum[SG_BR];
    for (int64_t r = 0; r < m; r++) {
        mx[r] = -INFINITY;
        sum[r] = 0.0f;
    }
    int64_t lim = sg_key_limit(j, i0, m);
    for (int64_t t0 = 0; t0 < lim; t0 += SG_BC) {
        int64_t n = lim - t0 < SG_BC ? lim - t0 : SG_BC;
        sg_scores(j, b, h, i0, m, t0, n, s);
        for (int64_t r = 0; r < m; r++) {
            float *row = s + r * n, tm = -INFINITY;
            for (int64_t t = 0; t < n; t++) tm = row[t] > tm ? row[t] : tm;
            if (tm == -INFINITY) continue;
            float nm = tm > mx[r] ? tm : mx[r];
            if (nm > mx[r]) sum[r] *= expf(mx[r] - nm);
            mx[r] = nm;
            float shift = -nm;
            kn_ew_binary_f32_level(j->ew, KN_EW_ADD, row, 1, &shift, 0, row, n);
            kn_ew_unary_f32_level(j->ew, KN_EW_EXP, row, row, n);
            for (int64_t t = 0; t < n; t++) sum[r] += row[t];
        }
    }
    for (int64_t r = 0; r < m; r++) lse[r] = mx[r] == -INFINITY ? -INFINITY : mx[r] + logf(sum[r]);
}

static void sg_task(void *vctx, int64_t begin, int64_t end) {
    sg_job *j = vctx;
    int64_t D = j->D, Dv = j->Dv, S = j->S, T = j->T;
    float *s = malloc(sizeof(float) * (size_t)(2 * SG_BR * SG_BC + 2 * SG_BR));
    if (!s) {
        j->failed = true;
        return;
    }
    float *dp = s + SG_BR * SG_BC, *di = dp + SG_BR * SG_BC, *lse_buf = di + SG_BR;
    for (int64_t bh = begin; bh < end; bh++) {
        int64_t b = bh / j->H, h = bh % j->H;
        float *dq = j->dq + bh * S * D, *dk = j->dk + bh * T * D, *dv = j->dv + bh * T * Dv;
        memset(dq, 0, sizeof(float) * (size_t)(S * D));
        memset(dk, 0, sizeof(float) * (size_t)(T * D));
        memset(dv, 0, sizeof(float) * (size_t)(T * Dv));
        if (j->ds) memset(j->ds + bh * S * T, 0, sizeof(float) * (size_t)(S * T));
        for (int64_t i0 = 0; i0 < S; i0 += SG_BR) {
            int64_t m = S - i0 < SG_BR ? S - i0 : SG_BR;
            const float *q = j->q + (bh * S + i0) * D, *dy = j->dy + (bh * S + i0) * Dv, *y = j->y + (bh * S + i0) * Dv;
            const float *lse = j->lse ? j->lse + bh * S + i0 : lse_buf;
            if (!j->lse) sg_lse(j, b, h, i0, m, s, lse_buf);
            /* D_i = dY_i . Y_i, the softmax backward's row term */
            for (int64_t r = 0; r < m; r++) {
                float acc = 0.0f;
                for (int64_t e = 0; e < Dv; e++) acc += dy[r * Dv + e] * y[r * Dv + e];
                di[r] = acc;
            }
            int64_t lim = sg_key_limit(j, i0, m);
            for (int64_t t0 = 0; t0 < lim; t0 += SG_BC) {
                int64_t n = lim - t0 < SG_BC ? lim - t0 : SG_BC;
                const float *k = j->k + (bh * T + t0) * D, *v = j->v + (bh * T + t0) * Dv;
                sg_scores(j, b, h, i0, m, t0, n, s);
                for (int64_t r = 0; r < m; r++) { /* P = exp(S - lse); a fully masked row is zeros */
                    float *row = s + r * n;
                    if (lse[r] == -INFINITY) {
                        memset(row, 0, sizeof(float) * (size_t)n);
                        continue;
                    }
                    float shift = -lse[r];
                    kn_ew_binary_f32_level(j->ew, KN_EW_ADD, row, 1, &shift, 0, row, n);
                    kn_ew_unary_f32_level(j->ew, KN_EW_EXP, row, row, n);
                }
                if (Dv > 0) {
                    kn_sgemm(NULL, true, false, n, Dv, m, 1.0f, s, n, dy, Dv, 1.0f, dv + t0 * Dv, Dv);
                    kn_sgemm(NULL, false, true, m, n, Dv, 1.0f, dy, Dv, v, Dv, 0.0f, dp, n);
                } else memset(dp, 0, sizeof(float) * (size_t)(m * n));
                for (int64_t r = 0; r < m; r++) { /* dS = P (dP - D_i) */
                    float *pr = s + r * n, *dr = dp + r * n, neg = -di[r];
                    kn_ew_binary_f32_level(j->ew, KN_EW_ADD, dr, 1, &neg, 0, dr, n);
                    kn_ew_binary_f32_level(j->ew, KN_EW_MUL, dr, 1, pr, 1, dr, n);
                    if (j->ds) memcpy(j->ds + (bh * S + i0 + r) * T + t0, dr, sizeof(float) * (size_t)n);
                }
                if (D > 0) {
                    kn_sgemm(NULL, false, false, m, D, n, j->scale, dp, n, k, D, 1.0f, dq + i0 * D, D);
                    kn_sgemm(NULL, true, false, n, D, m, j->scale, dp, n, q, D, 1.0f, dk + t0 * D, D);
                }
            }
        }
    }
    free(s);
}

static bool sg_is4(const kn_tensor *t, int64_t a, int64_t b, int64_t c, int64_t d) {
    return t && t->ndim == 4 && t->dims[0] == a && t->dims[1] == b && t->dims[2] == c && (d < 0 || t->dims[3] == d);
}

kn_status *kn_cpu_KnSdpaGrad(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                             kn_tensor *const *out, int n_out) {
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN], b3[KN_DESC_LEN];
    const kn_params_attention *ap = KN_PARAMS(node, attention);
    const kn_tensor *dY = in[0], *Q = in[1], *K = in[2], *V = in[3], *bias = n_in > 4 ? in[4] : NULL;
    const kn_tensor *Y = n_in > 5 ? in[5] : NULL, *lse = n_in > 6 ? in[6] : NULL;
    if (!dY || !Q || !K || !V || !Y) return kn_error(KN_ERR_INVALID_MODEL, "SdpaGrad: dY, Q, K, V and Y are required");
    const kn_tensor *all[7] = {dY, Q, K, V, bias, Y, lse};
    for (int i = 0; i < 7; i++)
        if (all[i] && all[i]->dtype != KN_F32) return kn_err_dtype(node, all[i]);
    if (Q->ndim != 4 || K->ndim != 4 || V->ndim != 4)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "SdpaGrad: Q %s, K %s, V %s must be 4-D",
                        kn_tensor_desc(Q, b1, sizeof b1), kn_tensor_desc(K, b2, sizeof b2),
                        kn_tensor_desc(V, b3, sizeof b3));
    int64_t B = Q->dims[0], H = Q->dims[1], S = Q->dims[2], D = Q->dims[3], T = K->dims[2], Dv = V->dims[3];
    if (!sg_is4(K, B, H, T, D) || !sg_is4(V, B, H, T, -1) || !sg_is4(dY, B, H, S, Dv) || !sg_is4(Y, B, H, S, Dv))
        return kn_error(
            KN_ERR_INVALID_ARGUMENT,
            "SdpaGrad: Q %s, K %s, V %s disagree with each other or with dY / Y (the backward needs as many "
            "key/value heads as query heads)",
            kn_tensor_desc(Q, b1, sizeof b1), kn_tensor_desc(K, b2, sizeof b2), kn_tensor_desc(V, b3, sizeof b3));
    if (lse && (lse->ndim != 3 || lse->dims[0] != B || lse->dims[1] != H || lse->dims[2] != S))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "SdpaGrad: lse %s is not [%lld,%lld,%lld]",
                        kn_tensor_desc(lse, b1, sizeof b1), (long long)B, (long long)H, (long long)S);
    sg_job j;
    memset(&j, 0, sizeof j);
    j.B = B;
    j.H = H;
    j.S = S;
    j.T = T;
    j.D = D;
    j.Dv = Dv;
    j.scale = ap->has_scale ? ap->scale : D > 0 ? 1.0f / sqrtf((float)D) : 1.0f;
    j.causal = ap->is_causal;
    if (bias) {
        int64_t full[4] = {B, H, S, T}, md[4] = {1, 1, 1, 1};
        if (bias->ndim > 4)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "SdpaGrad: bias %s has rank above 4",
                            kn_tensor_desc(bias, b1, sizeof b1));
        for (int d = 0; d < bias->ndim; d++) md[4 - bias->ndim + d] = bias->dims[d];
        int64_t st = 1;
        for (int d = 3; d >= 0; d--) {
            if (md[d] != 1 && md[d] != full[d])
                return kn_error(
                    KN_ERR_INVALID_ARGUMENT, "SdpaGrad: bias %s does not broadcast to [%lld,%lld,%lld,%lld]",
                    kn_tensor_desc(bias, b1, sizeof b1), (long long)B, (long long)H, (long long)S, (long long)T);
            j.bstride[d] = md[d] == 1 ? 0 : st;
            st *= md[d];
        }
        j.bias = bias->data;
    }
    j.dy = dY->data;
    j.q = Q->data;
    j.k = K->data;
    j.v = V->data;
    j.y = Y->data;
    j.lse = lse ? lse->data : NULL;
    kn_tensor *dQ = out[0], *dK = n_out > 1 ? out[1] : NULL, *dV = n_out > 2 ? out[2] : NULL;
    kn_tensor *dS = n_out > 3 ? out[3] : NULL;
    /* every product writes its tile of all three, so outputs the graph does not read still need
     * room: scratch stands in for them */
    j.dq = dQ && dQ->data ? dQ->data : kn_scratch_alloc(ctx, sizeof(float) * (size_t)(B * H * S * D + 1));
    j.dk = dK && dK->data ? dK->data : kn_scratch_alloc(ctx, sizeof(float) * (size_t)(B * H * T * D + 1));
    j.dv = dV && dV->data ? dV->data : kn_scratch_alloc(ctx, sizeof(float) * (size_t)(B * H * T * Dv + 1));
    j.ds = dS && dS->data ? dS->data : NULL;
    if (!j.dq || !j.dk || !j.dv) return KN_OOM(sizeof(float) * (size_t)(B * H * (S + 2 * T) * D));
    j.ew = kn_ew_best_level();
    if (B * H > 0) kn_parallel_for(ctx->pool, B * H, 1, sg_task, &j);
    if (j.failed) return KN_OOM(sizeof(float) * (size_t)(2 * SG_BR * SG_BC));
    return NULL;
}
