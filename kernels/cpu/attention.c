/* CPU kernels for ai.onnx Attention (opset 23+) and RotaryEmbedding. Attention works on float
 * copies of Q, K and V laid out [batch, heads, seq, head_size]; each task takes a block of query
 * rows of one head, forms the scores with kn_sgemm, adds the combined additive bias (mask, causal,
 * sliding window, padding), takes a guarded softmax and multiplies by V with kn_sgemm again.
 * Semantics follow the ONNX reference: fully-masked rows (bias all -inf) give zeros. */
#include "graph/ops.h"
#include "kernels/cpu/elementwise_simd.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/rows.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>


/* ---- float views of the float-like dtypes the ops accept ---- */

static bool attn_float_dtype(kn_dtype t) { return t == KN_F32 || t == KN_F64 || t == KN_F16 || t == KN_BF16; }


/* ---- Attention ---- */

/* Rounds to the input's precision after each step, as the reference does for float16 and
 * bfloat16 inputs; results then agree to the last bit far more often than float32 math does. */
static inline float attn_round(int rnd, float v) {
    if (rnd == 1) return kn_f16_to_f32(kn_f32_to_f16(v));
    if (rnd == 2) return kn_bf16_to_f32(kn_f32_to_bf16(v));
    return v;
}

typedef struct attn_job {
    int64_t B, Hq, Hkv, Sq, T, Dk, Dv, past, qblk, nblk;
    const float *q;     /* [B,Hq,Sq,Dk] */
    const float *k, *v; /* [B,Hkv,T,Dk], [B,Hkv,T,Dv]; with k2: the first T1 keys, [B,Hkv,T1,D] */
    /* KnSdpa with a past (inputs 4, 5): the new keys/values [B,Hkv,T-T1,D] read where they are,
     * so a decode step never copies the past to put one new row after it */
    const float *k2, *v2;
    int64_t T1;
    float *y;  /* [B,Hq,Sq,Dv] */
    float *qk; /* [B,Hq,Sq,T] or NULL */
    int qk_mode;
    int rnd;      /* 0: float32 math; 1 / 2: round every step to float16 / bfloat16 */
    int rnd_soft; /* the same for the softmax steps (softmax_precision) */
    float scale, softcap;
    /* additive mask as float, broadcast over [B,Hq,Sq,mT] through strides (0 = broadcast) */
    const float *mask;
    int64_t mstride[4], mT;
    bool causal;
    int64_t left, right;     /* sliding window, -1 = unbounded */
    const int64_t *nonpad;   /* [B] or NULL */
    bool plain;              /* float32 math, no window, padding, softcap or scores output */
    int ew_level, red_level; /* SIMD levels of the elementwise and row-reduction kernels */
    bool failed;             /* allocation failure inside a task */
    float *lse;              /* [B,Hq,Sq] logsumexp of each score row (KnSdpa's output 1), or NULL */
} attn_job;

static int64_t attn_offset(const attn_job *j, int64_t b) {
    if (j->past > 0) return j->past;
    if (j->nonpad) return j->nonpad[b] - j->Sq;
    return 0;
}

/* Additive bias for query row i of (b, h) into bias[T]; returns whether every key is masked. */
static bool attn_bias_row(const attn_job *j, int64_t b, int64_t h, int64_t i, int64_t Tc, float *bias) {
    int64_t off = attn_offset(j, b);
    bool all_masked = true;
    for (int64_t t = 0; t < Tc; t++) {
        float v = 0.0f;
        if (j->mask) {
            if (t < j->mT) v = j->mask[b * j->mstride[0] + h * j->mstride[1] + i * j->mstride[2] + t * j->mstride[3]];
            else v = -INFINITY;
        }
        if (j->causal && t > i + off) v = -INFINITY;
        if (j->left >= 0 || j->right >= 0) {
            int64_t diff = i + off - t;
            if (j->left >= 0 && diff > j->left) v = -INFINITY;
            if (j->right >= 0 && -diff > j->right) v = -INFINITY;
        }
        if (j->nonpad && t >= j->nonpad[b]) v = -INFINITY;
        bias[t] = v;
        if (!(isinf(v) && v < 0)) all_masked = false;
    }
    return all_masked;
}

static float attn_row_max(const attn_job *j, const float *row, int64_t n) {
    float mx = -INFINITY;
    if (n <= 0) return mx;
    if (j->red_level == 2) kn_reduce_rows_f32_avx512(row, &mx, 1, n, KN_ROWRED_MAX);
    else if (j->red_level == 1) kn_reduce_rows_f32_avx2(row, &mx, 1, n, KN_ROWRED_MAX);
    else kn_reduce_rows_f32_scalar(row, &mx, 1, n, KN_ROWRED_MAX);
    return mx;
}

/* The logsumexp of a score row whose max was mx, from its softmax p: the largest probability is
 * e^0 / sum, so lse = mx - log(max p) costs one max over the row instead of a second exp pass. */
static float attn_lse(const attn_job *j, float mx, const float *p, int64_t n) {
    return mx - logf(attn_row_max(j, p, n));
}

/* Softmax of query row i with the float mask, for float32 math without window, padding, softcap
 * or scores output (the common case, and every KnSdpa of a float32 model). The mask row is added
 * in place with the SIMD elementwise kernel (contiguous or one broadcast value); keys past the
 * causal frontier or a short ONNX mask are left out instead of being added as -inf, so their
 * probabilities are exact zeros, as in the general path. A finite row max proves the row is not
 * fully masked (a -inf bias makes its score -inf or NaN), so only rows whose max is -inf or NaN
 * look at the mask again: fully masked rows give zeros, a NaN score a NaN row, as attn_bias_row's
 * path does. */
static void attn_masked_row(const attn_job *j, int64_t b, int64_t h, int64_t i, int64_t Tc, float *row, float *lse) {
    int64_t n = Tc < j->mT ? Tc : j->mT;
    if (j->causal) {
        int64_t a = i + attn_offset(j, b) + 1;
        if (a < n) n = a < 0 ? 0 : a;
    }
    const float *mk = j->mask + b * j->mstride[0] + h * j->mstride[1] + i * j->mstride[2];
    int64_t ms = j->mstride[3] ? 1 : 0;
    if (j->ew_level == KN_EW_AVX512) kn_ew_binary_f32_avx512(KN_EW_ADD, row, 1, mk, ms, row, n);
    else if (j->ew_level == KN_EW_AVX2) kn_ew_binary_f32_avx2(KN_EW_ADD, row, 1, mk, ms, row, n);
    else kn_ew_binary_f32_level(KN_EW_SCALAR, KN_EW_ADD, row, 1, mk, ms, row, n);
    float mx = attn_row_max(j, row, n);
    if (lse) *lse = isnan(mx) ? NAN : -INFINITY;
    if (isnan(mx)) {
        bool all_masked = true;
        for (int64_t t = 0; t < n && all_masked; t++) all_masked = mk[t * ms] == -INFINITY;
        if (all_masked) memset(row, 0, sizeof(float) * (size_t)Tc);
        else
            for (int64_t t = 0; t < Tc; t++) row[t] = NAN;
    } else if (mx == -INFINITY) {
        memset(row, 0, sizeof(float) * (size_t)Tc);
    } else {
        if (j->red_level == 2) kn_softmax_rows_f32_avx512(row, row, 1, n, 0);
        else if (j->red_level == 1) kn_softmax_rows_f32_avx2(row, row, 1, n, 0);
        else kn_softmax_rows_f32_scalar(row, row, 1, n, 0);
        if (lse) *lse = attn_lse(j, mx, row, n);
        memset(row + n, 0, sizeof(float) * (size_t)(Tc - n));
    }
}

static void attn_task(void *vctx, int64_t begin, int64_t end) {
    attn_job *j = vctx;
    int64_t T = j->T;
    float *s = malloc(sizeof(float) * (size_t)(j->qblk * T + T));
    if (!s) {
        j->failed = true;
        return;
    }
    float *bias = s + j->qblk * T;
    for (int64_t task = begin; task < end; task++) {
        int64_t blk = task % j->nblk, bh = task / j->nblk;
        int64_t b = bh / j->Hq, h = bh % j->Hq, kvh = h / (j->Hq / j->Hkv);
        int64_t i0 = blk * j->qblk, m = j->Sq - i0 < j->qblk ? j->Sq - i0 : j->qblk;
        const float *q = j->q + ((b * j->Hq + h) * j->Sq + i0) * j->Dk;
        int64_t T1 = j->k2 ? j->T1 : T; /* keys in the first part */
        const float *k = j->k + (b * j->Hkv + kvh) * T1 * j->Dk;
        const float *v = j->v + (b * j->Hkv + kvh) * T1 * j->Dv;
        const float *k2 = j->k2 ? j->k2 + (b * j->Hkv + kvh) * (T - T1) * j->Dk : NULL;
        const float *v2 = j->v2 ? j->v2 + (b * j->Hkv + kvh) * (T - T1) * j->Dv : NULL;
        float *y = j->y + ((b * j->Hq + h) * j->Sq + i0) * j->Dv;
        /* Under a causal mask no row of this block sees keys at or past `lim`: those columns are
         * skipped (their probabilities are exactly 0). Kept whole when the scores are an output.
         * Unlike the reference, a NaN score in a skipped column then no longer poisons the row. */
        int64_t Tc = T;
        if (j->causal && !j->qk) {
            int64_t lim = i0 + m + attn_offset(j, b);
            Tc = lim < 0 ? 0 : lim < T ? lim : T;
        }
        int64_t Ta = Tc < T1 ? Tc : T1, Tb = Tc - Ta; /* score columns from each part */
        if (Tc > 0 && j->Dk > 0) {
            float alpha = j->rnd ? 1.0f : j->scale;
            if (Ta > 0) kn_sgemm(NULL, false, true, m, Ta, j->Dk, alpha, q, j->Dk, k, j->Dk, 0.0f, s, T);
            if (Tb > 0) kn_sgemm(NULL, false, true, m, Tb, j->Dk, alpha, q, j->Dk, k2, j->Dk, 0.0f, s + Ta, T);
        } else memset(s, 0, sizeof(float) * (size_t)(m * T));
        bool fast = !j->mask && j->left < 0 && j->right < 0 && !j->nonpad && !j->rnd && !j->rnd_soft && !j->qk;
        if (j->mask && j->plain) {
            for (int64_t r = 0; r < m; r++)
                attn_masked_row(j, b, h, i0 + r, Tc, s + r * T,
                                j->lse ? j->lse + (b * j->Hq + h) * j->Sq + i0 + r : NULL);
            goto pv;
        }
        for (int64_t r = 0; r < m; r++) {
            int64_t i = i0 + r;
            float *row = s + r * T;
            float *qk = j->qk ? j->qk + ((b * j->Hq + h) * j->Sq + i) * T : NULL;
            int rd = j->rnd, rs = j->rnd_soft;
            if (rd)
                for (int64_t t = 0; t < Tc; t++) row[t] = attn_round(rd, row[t]);
            if (j->softcap > 0.0f)
                for (int64_t t = 0; t < Tc; t++)
                    row[t] = attn_round(rd, j->softcap * attn_round(rd, tanhf(attn_round(rd, row[t] / j->softcap))));
            if (fast) {
                /* only a causal frontier (or nothing) masks this row: softmax over the keys it
                 * sees, zeros after them */
                int64_t seen = Tc;
                if (j->causal) {
                    int64_t a = i + attn_offset(j, b) + 1;
                    seen = a < 0 ? 0 : a < Tc ? a : Tc;
                }
                float mx = j->lse ? attn_row_max(j, row, seen) : 0.0f;
                if (seen > 0) kn_softmax_rows_f32(NULL, row, row, 1, seen, 0);
                if (j->lse) j->lse[(b * j->Hq + h) * j->Sq + i] = seen > 0 ? attn_lse(j, mx, row, seen) : -INFINITY;
                memset(row + seen, 0, sizeof(float) * (size_t)(Tc - seen));
                continue;
            }
            if (qk && j->qk_mode <= 1) memcpy(qk, row, sizeof(float) * (size_t)T);
            bool all_masked = attn_bias_row(j, b, h, i, Tc, bias);
            for (int64_t t = 0; t < Tc; t++) row[t] = attn_round(rd, row[t] + bias[t]);
            if (qk && j->qk_mode == 2) memcpy(qk, row, sizeof(float) * (size_t)T);
            /* numpy's max propagates NaN, which then spreads over the row */
            float mx = -INFINITY;
            bool has_nan = false;
            for (int64_t t = 0; t < Tc; t++) {
                if (isnan(row[t])) has_nan = true;
                else if (row[t] > mx) mx = row[t];
            }
            if (has_nan) mx = NAN;
            if (all_masked || (isinf(mx) && mx < 0)) {
                memset(row, 0, sizeof(float) * (size_t)Tc);
            } else if (!rd && !rs && !has_nan) {
                kn_softmax_rows_f32(NULL, row, row, 1, Tc, 0);
            } else {
                float sum = 0.0f;
                for (int64_t t = 0; t < Tc; t++) {
                    row[t] = attn_round(rs, expf(attn_round(rs, row[t] - mx)));
                    sum = rs == 2 ? attn_round(rs, sum + row[t]) : sum + row[t]; /* bfloat16 sums round per add */
                }
                sum = attn_round(rs, sum);
                if (sum == 0.0f) sum = 1.0f;
                /* probabilities are cast back to the input type before the product with V */
                if (rd || rs)
                    for (int64_t t = 0; t < Tc; t++) row[t] = attn_round(rd, attn_round(rs, row[t] / sum));
                else {
                    float inv = 1.0f / sum;
                    for (int64_t t = 0; t < Tc; t++) row[t] *= inv;
                }
            }
            if (qk && j->qk_mode == 3) memcpy(qk, row, sizeof(float) * (size_t)T);
        }
    pv:
        if (Tc > 0 && j->Dv > 0) {
            if (Ta > 0) kn_sgemm(NULL, false, false, m, j->Dv, Ta, 1.0f, s, T, v, j->Dv, 0.0f, y, j->Dv);
            if (Tb > 0)
                kn_sgemm(NULL, false, false, m, j->Dv, Tb, 1.0f, s + Ta, T, v2, j->Dv, Ta > 0 ? 1.0f : 0.0f, y, j->Dv);
        } else memset(y, 0, sizeof(float) * (size_t)(m * j->Dv));
    }
    free(s);
}

/* Copies a Q/K/V input (3-D [B,S,H*D] or 4-D [B,H,S,D]) into a float [B,H,S,D] buffer at
 * sequence offset s0 of a buffer holding Stot positions. */
static void attn_load_heads(const kn_tensor *x, int64_t B, int64_t H, int64_t S, int64_t D, float *dst, int64_t Stot,
                            int64_t s0, int rnd, float mul) {
    bool is3 = x->ndim == 3;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t s = 0; s < S; s++) {
                int64_t src = is3 ? ((b * S + s) * H + h) * D : ((b * H + h) * S + s) * D;
                float *d = dst + ((b * H + h) * Stot + s0 + s) * D;
                if (x->dtype == KN_F32 && mul == 1.0f)
                    memcpy(d, (const float *)x->data + src, sizeof(float) * (size_t)D);
                else
                    for (int64_t e = 0; e < D; e++)
                        d[e] = attn_round(rnd, kn_load_f32(x->data, x->dtype, src + e) * mul);
            }
}

/* numpy_bias: the mask broadcasts like an Add onto the [B,Hq,Sq,T] scores (a last dim of 1 repeats)
 * as kiln's fused KnSdpa needs; otherwise ONNX Attention's rule pads a short last dim with -inf. */
static kn_status *attn_run(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                           kn_tensor *const *out, int n_out, bool numpy_bias, kn_tensor *lse_out) {
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN], b3[KN_DESC_LEN];
    const kn_params_attention *ap = KN_PARAMS(node, attention);
    const kn_tensor *Q = in[0], *K = in[1], *V = in[2];
    const kn_tensor *mask = n_in > 3 ? in[3] : NULL, *pk = n_in > 4 ? in[4] : NULL, *pv = n_in > 5 ? in[5] : NULL;
    const kn_tensor *np_t = n_in > 6 ? in[6] : NULL;
    if (!Q || !K || !V) return kn_error(KN_ERR_INVALID_MODEL, "Attention: Q, K and V are required");
    if (!attn_float_dtype(Q->dtype)) return kn_err_dtype(node, Q);
    if (!attn_float_dtype(K->dtype)) return kn_err_dtype(node, K);
    if (!attn_float_dtype(V->dtype)) return kn_err_dtype(node, V);
    if (Q->ndim != K->ndim || Q->ndim != V->ndim || (Q->ndim != 3 && Q->ndim != 4))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: Q %s, K %s, V %s must all be 3-D or 4-D",
                        kn_tensor_desc(Q, b1, sizeof b1), kn_tensor_desc(K, b2, sizeof b2),
                        kn_tensor_desc(V, b3, sizeof b3));
    if ((pk == NULL) != (pv == NULL))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: past_key and past_value must be given together");
    attn_job j;
    memset(&j, 0, sizeof j);
    int64_t B = Q->dims[0], Hq, Hkv, Sq, Skv, Dk, Dv;
    if (Q->ndim == 3) {
        Hq = ap->q_num_heads;
        Hkv = ap->kv_num_heads;
        if (Hq <= 0 || Hkv <= 0 || Q->dims[2] % Hq || K->dims[2] % Hkv || V->dims[2] % Hkv)
            return kn_error(
                KN_ERR_INVALID_ARGUMENT,
                "Attention: hidden sizes of Q %s, K %s, V %s do not split into q_num_heads %lld / kv_num_heads %lld",
                kn_tensor_desc(Q, b1, sizeof b1), kn_tensor_desc(K, b2, sizeof b2), kn_tensor_desc(V, b3, sizeof b3),
                (long long)Hq, (long long)Hkv);
        Sq = Q->dims[1];
        Skv = K->dims[1];
        Dk = K->dims[2] / Hkv;
        Dv = V->dims[2] / Hkv;
        if (Q->dims[2] / Hq != Dk || V->dims[1] != Skv)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: head sizes of Q %s, K %s, V %s disagree",
                            kn_tensor_desc(Q, b1, sizeof b1), kn_tensor_desc(K, b2, sizeof b2),
                            kn_tensor_desc(V, b3, sizeof b3));
    } else {
        Hq = Q->dims[1];
        Hkv = K->dims[1];
        Sq = Q->dims[2];
        Skv = K->dims[2];
        Dk = K->dims[3];
        Dv = V->dims[3];
        if (Q->dims[3] != Dk || V->dims[1] != Hkv || V->dims[2] != Skv)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: shapes of Q %s, K %s, V %s disagree",
                            kn_tensor_desc(Q, b1, sizeof b1), kn_tensor_desc(K, b2, sizeof b2),
                            kn_tensor_desc(V, b3, sizeof b3));
    }
    if (K->dims[0] != B || V->dims[0] != B || Hkv <= 0 || Hq % Hkv)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "Attention: batch or head counts of Q %s, K %s, V %s are incompatible (q heads must be a "
                        "multiple of kv heads)",
                        kn_tensor_desc(Q, b1, sizeof b1), kn_tensor_desc(K, b2, sizeof b2),
                        kn_tensor_desc(V, b3, sizeof b3));
    int64_t past = 0;
    if (pk) {
        if (pk->ndim != 4 || pv->ndim != 4 || pk->dims[0] != B || pk->dims[1] != Hkv || pk->dims[3] != Dk ||
            pv->dims[0] != B || pv->dims[1] != Hkv || pv->dims[3] != Dv || pv->dims[2] != pk->dims[2])
            return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: past_key %s / past_value %s do not match K %s",
                            kn_tensor_desc(pk, b1, sizeof b1), kn_tensor_desc(pv, b2, sizeof b2),
                            kn_tensor_desc(K, b3, sizeof b3));
        if (!attn_float_dtype(pk->dtype)) return kn_err_dtype(node, pk);
        if (!attn_float_dtype(pv->dtype)) return kn_err_dtype(node, pv);
        past = pk->dims[2];
    }
    int64_t T = past + Skv;
    j.B = B;
    j.Hq = Hq;
    j.Hkv = Hkv;
    j.Sq = Sq;
    j.T = T;
    j.Dk = Dk;
    j.Dv = Dv;
    j.past = past;
    float scale = ap->scale;
    if (!ap->has_scale) scale = Dk > 0 ? 1.0f / sqrtf((float)Dk) : 1.0f;
    j.scale = scale;
    j.softcap = ap->softcap;
    j.causal = ap->is_causal;
    j.qk_mode = (int)ap->qk_matmul_output_mode;
    if (j.qk_mode < 0 || j.qk_mode > 3)
        return kn_error(KN_ERR_INVALID_MODEL, "Attention: qk_matmul_output_mode %d not in 0..3", j.qk_mode);
    j.left = ap->left_window_size;
    j.right = ap->right_window_size;
    if (j.left < -1 || j.right < -1)
        return kn_error(KN_ERR_INVALID_MODEL, "Attention: window sizes must be -1 or nonnegative");

    if (np_t) {
        if (pk)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: nonpad_kv_seqlen cannot be combined with past_key");
        if (np_t->ndim != 1 || np_t->dims[0] != B || (np_t->dtype != KN_I64 && np_t->dtype != KN_I32))
            return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: nonpad_kv_seqlen %s must be int64 [batch=%lld]",
                            kn_tensor_desc(np_t, b1, sizeof b1), (long long)B);
        int64_t *npv = kn_scratch_alloc(ctx, sizeof(int64_t) * (size_t)(B ? B : 1));
        if (!npv) return KN_OOM(sizeof(int64_t) * B);
        for (int64_t b = 0; b < B; b++) npv[b] = kn_get_i64(np_t, b);
        j.nonpad = npv;
    }
    if (mask) {
        if (mask->ndim < 1 || mask->ndim > 4)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: attn_mask %s must have rank 1..4",
                            kn_tensor_desc(mask, b1, sizeof b1));
        if (mask->dtype != KN_BOOL && !attn_float_dtype(mask->dtype)) return kn_err_dtype(node, mask);
        int64_t full[4] = {B, Hq, Sq, T}, md[4] = {1, 1, 1, 1};
        for (int d = 0; d < mask->ndim; d++) md[4 - mask->ndim + d] = mask->dims[d];
        for (int d = 0; d < 3; d++)
            if (md[d] != 1 && md[d] != full[d])
                return kn_error(
                    KN_ERR_INVALID_ARGUMENT, "Attention: attn_mask %s does not broadcast to [%lld,%lld,%lld,%lld]",
                    kn_tensor_desc(mask, b1, sizeof b1), (long long)B, (long long)Hq, (long long)Sq, (long long)T);
        if (numpy_bias && md[3] != 1 && md[3] != T)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: bias %s does not broadcast to [%lld,%lld,%lld,%lld]",
                            node->op_type, kn_tensor_desc(mask, b1, sizeof b1), (long long)B, (long long)Hq,
                            (long long)Sq, (long long)T);
        if (md[3] > T)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: attn_mask %s is longer than the %lld keys",
                            kn_tensor_desc(mask, b1, sizeof b1), (long long)T);
        int64_t n = kn_numel(mask);
        const float *mf = mask->data;
        if (mask->dtype != KN_F32) {
            float *mc = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(n ? n : 1));
            if (!mc) return KN_OOM(sizeof(float) * n);
            for (int64_t i = 0; i < n; i++) {
                if (mask->dtype == KN_BOOL) mc[i] = ((const uint8_t *)mask->data)[i] ? 0.0f : -INFINITY;
                else mc[i] = kn_load_f32(mask->data, mask->dtype, i);
            }
            mf = mc;
        }
        int64_t st = 1;
        for (int d = 3; d >= 0; d--) {
            j.mstride[d] = md[d] == 1 && (d < 3 || numpy_bias) ? 0 : st;
            st *= md[d];
        }
        j.mask = mf;
        j.mT = numpy_bias ? T : md[3];
    }

    /* float copies of Q and the full key/value sequences, unless float32 [B,H,S,D] inputs without
     * a past already are exactly that */
    size_t nq = (size_t)(B * Hq * Sq * Dk), nk = (size_t)(B * Hkv * T * Dk), nv = (size_t)(B * Hkv * T * Dv);
    size_t ny = (size_t)(B * Hq * Sq * Dv), nqk = (size_t)(B * Hq * Sq * T);
    kn_tensor *Y = out[0];
    kn_tensor *PK = n_out > 1 ? out[1] : NULL, *PV = n_out > 2 ? out[2] : NULL, *QK = n_out > 3 ? out[3] : NULL;
    bool in_direct = Q->ndim == 4 && Q->dtype == KN_F32 && K->dtype == KN_F32 && V->dtype == KN_F32;
    /* a float32 past not wanted back as present is read in place, beside the new keys */
    bool split = in_direct && pk && past > 0 && pk->dtype == KN_F32 && pv->dtype == KN_F32 && !(PK && PK->data) &&
        !(PV && PV->data);
    if (pk && !split) in_direct = false;
    float *qf = in_direct ? (float *)Q->data : kn_scratch_alloc(ctx, sizeof(float) * (nq + 1));
    float *kf = in_direct ? (float *)(split ? pk->data : K->data) : kn_scratch_alloc(ctx, sizeof(float) * (nk + 1));
    float *vf = in_direct ? (float *)(split ? pv->data : V->data) : kn_scratch_alloc(ctx, sizeof(float) * (nv + 1));
    if (split) {
        j.k2 = K->data;
        j.v2 = V->data;
        j.T1 = past;
    }
    bool y_direct = Y && Y->data && Y->dtype == KN_F32 && Q->ndim == 4;
    float *yf = y_direct ? (float *)Y->data : kn_scratch_alloc(ctx, sizeof(float) * (ny + 1));
    float *qkf = NULL;
    if (QK && QK->data)
        qkf = QK->dtype == KN_F32 ? (float *)QK->data : kn_scratch_alloc(ctx, sizeof(float) * (nqk + 1));
    if (!qf || !kf || !vf || !yf || (QK && QK->data && !qkf)) return KN_OOM(sizeof(float) * (nq + nk + nv + ny));
    /* Reduced-precision inputs follow the reference: Q and K are each scaled by sqrt(scale),
     * rounded to the input type; float32 applies the scale once inside the product. */
    j.rnd = Q->dtype == KN_F16 ? 1 : Q->dtype == KN_BF16 ? 2 : 0;
    float half_scale = j.rnd ? attn_round(j.rnd, sqrtf(scale)) : 1.0f;
    int64_t sp = ap->softmax_precision;
    j.rnd_soft = sp == KN_F32 || sp == KN_F64 ? 0 : sp == KN_F16 ? 1 : sp == KN_BF16 ? 2 : j.rnd;
    j.plain = !j.rnd && !j.rnd_soft && !qkf && j.softcap <= 0.0f && j.left < 0 && j.right < 0 && !j.nonpad;
    if (lse_out) {
        if (!j.plain || Q->dtype != KN_F32 || lse_out->dtype != KN_F32)
            return kn_error(KN_ERR_UNSUPPORTED, "%s: the logsumexp output needs float32 Q, K, V and output",
                            node->op_type);
        j.lse = lse_out->data;
    }
    j.ew_level = kn_ew_best_level();
    j.red_level = kn_red_simd_level();
    if (!in_direct) {
        attn_load_heads(Q, B, Hq, Sq, Dk, qf, Sq, 0, j.rnd, half_scale);
        if (pk) {
            attn_load_heads(pk, B, Hkv, past, Dk, kf, T, 0, 0, 1.0f);
            attn_load_heads(pv, B, Hkv, past, Dv, vf, T, 0, 0, 1.0f);
        }
        attn_load_heads(K, B, Hkv, Skv, Dk, kf, T, past, 0, 1.0f);
        attn_load_heads(V, B, Hkv, Skv, Dv, vf, T, past, 0, 1.0f);
    }
    const float *kuse = kf;
    if (j.rnd) {
        float *ks = kn_scratch_alloc(ctx, sizeof(float) * (nk + 1));
        if (!ks) return KN_OOM(sizeof(float) * nk);
        for (size_t i = 0; i < nk; i++) ks[i] = attn_round(j.rnd, kf[i] * half_scale);
        kuse = ks;
    }
    j.q = qf;
    j.k = kuse;
    j.v = vf;
    j.y = yf;
    j.qk = qkf;

    /* Whole heads per task pack each K and V once; smaller query blocks when there are too few
     * heads to share among the threads, or when a block's scores would pass 1 MiB. */
    int nth = kn_threadpool_size(ctx->pool);
    int64_t cap = T > 0 ? ((int64_t)1 << 18) / T : Sq;
    j.qblk = B * Hq >= 4 * (int64_t)(nth > 0 ? nth : 1) ? Sq : 64;
    if (j.qblk > cap) j.qblk = cap;
    if (j.qblk < 16) j.qblk = 16;
    j.nblk = Sq > 0 ? (Sq + j.qblk - 1) / j.qblk : 0;
    int64_t tasks = B * Hq * j.nblk;
    if (tasks > 0) kn_parallel_for(ctx->pool, tasks, 1, attn_task, &j);
    if (j.failed) return KN_OOM(sizeof(float) * (size_t)(j.qblk * T + T));

    /* results back into the outputs' dtypes and layouts */
    if (!y_direct && Y && Y->data) {
        bool is3 = Q->ndim == 3;
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < Hq; h++)
                for (int64_t s = 0; s < Sq; s++) {
                    const float *src = yf + ((b * Hq + h) * Sq + s) * Dv;
                    int64_t dst = is3 ? ((b * Sq + s) * Hq + h) * Dv : ((b * Hq + h) * Sq + s) * Dv;
                    for (int64_t e = 0; e < Dv; e++) kn_store_f32(Y->data, Y->dtype, dst + e, src[e]);
                }
    }
    if (PK && PK->data)
        for (size_t i = 0; i < nk; i++) kn_store_f32(PK->data, PK->dtype, (int64_t)i, kf[i]);
    if (PV && PV->data)
        for (size_t i = 0; i < nv; i++) kn_store_f32(PV->data, PV->dtype, (int64_t)i, vf[i]);
    if (qkf && QK->dtype != KN_F32)
        for (size_t i = 0; i < nqk; i++) kn_store_f32(QK->data, QK->dtype, (int64_t)i, qkf[i]);
    return NULL;
}

kn_status *kn_cpu_Attention(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                            kn_tensor *const *out, int n_out) {
    return attn_run(ctx, node, in, n_in, out, n_out, false, NULL);
}

/* kiln's fused scaled dot-product attention: 4-D Q, K, V, an optional additive bias and `scale`;
 * inputs 4 and 5, when given, are a past key and value [B,Hkv,P,D] whose positions come before
 * K's and V's (as ai.onnx Attention's past_key / past_value), read without concatenating them. */
kn_status *kn_cpu_KnSdpa(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    char b1[KN_DESC_LEN];
    if (n_in < 3 || n_in > 6 || n_in == 5 || !in[0] || !in[1] || !in[2])
        return kn_error(KN_ERR_INVALID_MODEL,
                        "KnSdpa: needs Q, K, V, an optional bias and an optional past key and value, got %d inputs",
                        n_in);
    if (in[0]->ndim != 4)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "KnSdpa: Q %s must be 4-D", kn_tensor_desc(in[0], b1, sizeof b1));
    if (n_in == 4 && in[3] && in[3]->dtype == KN_BOOL) return kn_err_dtype(node, in[3]);
    kn_tensor *lse = n_out > 1 && out[1] && out[1]->data ? out[1] : NULL;
    return attn_run(ctx, node, in, n_in, out, 1, true, lse);
}

/* ---- RotaryEmbedding ---- */

kn_status *kn_cpu_RotaryEmbedding(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                  kn_tensor *const *out, int n_out) {
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    const kn_tensor *X = in[0], *cosc = in[1], *sinc = in[2], *pos = n_in > 3 ? in[3] : NULL;
    kn_tensor *Y = out[0];
    if (!attn_float_dtype(X->dtype)) return kn_err_dtype(node, X);
    if (!attn_float_dtype(cosc->dtype)) return kn_err_dtype(node, cosc);
    if (!attn_float_dtype(sinc->dtype)) return kn_err_dtype(node, sinc);
    int64_t B, S, H, D;
    bool is4 = X->ndim == 4;
    if (is4) {
        B = X->dims[0];
        H = X->dims[1];
        S = X->dims[2];
        D = X->dims[3];
    } else if (X->ndim == 3) {
        B = X->dims[0];
        S = X->dims[1];
        H = KN_PARAMS(node, rotary)->num_heads;
        if (H <= 0 || X->dims[2] % H)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "RotaryEmbedding: 3-D input %s needs num_heads dividing its hidden size",
                            kn_tensor_desc(X, b1, sizeof b1));
        D = X->dims[2] / H;
    } else
        return kn_error(KN_ERR_INVALID_ARGUMENT, "RotaryEmbedding: input %s must be 3-D or 4-D",
                        kn_tensor_desc(X, b1, sizeof b1));
    int64_t rd = KN_PARAMS(node, rotary)->rotary_embedding_dim;
    if (rd == 0) rd = D;
    int64_t half = rd / 2;
    bool inter = KN_PARAMS(node, rotary)->interleaved;
    if (rd < 0 || rd > D || rd % 2)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "RotaryEmbedding: rotary_embedding_dim %lld invalid for head size %lld", (long long)rd,
                        (long long)D);
    if (!kn_same_shape(cosc, sinc) || cosc->ndim < 2 || cosc->dims[cosc->ndim - 1] != half)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "RotaryEmbedding: caches %s / %s must end in rotary_dim/2 = %lld",
                        kn_tensor_desc(cosc, b1, sizeof b1), kn_tensor_desc(sinc, b2, sizeof b2), (long long)half);
    if (pos) {
        if (cosc->ndim != 2 || pos->ndim != 2 || pos->dims[0] != B || pos->dims[1] != S)
            return kn_error(
                KN_ERR_INVALID_ARGUMENT, "RotaryEmbedding: position_ids %s must be [%lld,%lld] with a 2-D cache %s",
                kn_tensor_desc(pos, b1, sizeof b1), (long long)B, (long long)S, kn_tensor_desc(cosc, b2, sizeof b2));
    } else if (cosc->ndim != 3 || cosc->dims[0] != B || cosc->dims[1] != S) {
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "RotaryEmbedding: without position_ids the cache %s must be [%lld,%lld,%lld]",
                        kn_tensor_desc(cosc, b1, sizeof b1), (long long)B, (long long)S, (long long)half);
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0; s < S; s++) {
            int64_t crow;
            if (pos) {
                int64_t p = kn_get_i64(pos, b * S + s);
                if (p < 0 || p >= cosc->dims[0])
                    return kn_error(KN_ERR_RUNTIME, "RotaryEmbedding: position id %lld outside the cache of %lld rows",
                                    (long long)p, (long long)cosc->dims[0]);
                crow = p * half;
            } else crow = (b * S + s) * half;
            for (int64_t h = 0; h < H; h++) {
                int64_t base = is4 ? ((b * H + h) * S + s) * D : ((b * S + s) * H + h) * D;
                for (int64_t k = 0; k < half; k++) {
                    float c = kn_load_f32(cosc->data, cosc->dtype, crow + k),
                          sn = kn_load_f32(sinc->data, sinc->dtype, crow + k);
                    int64_t i1 = inter ? base + 2 * k : base + k, i2 = inter ? base + 2 * k + 1 : base + k + half;
                    float x1 = kn_load_f32(X->data, X->dtype, i1), x2 = kn_load_f32(X->data, X->dtype, i2);
                    kn_store_f32(Y->data, Y->dtype, i1, c * x1 - sn * x2);
                    kn_store_f32(Y->data, Y->dtype, i2, sn * x1 + c * x2);
                }
                if (Y->data != X->data)
                    for (int64_t e = rd; e < D; e++)
                        kn_store_f32(Y->data, Y->dtype, base + e, kn_load_f32(X->data, X->dtype, base + e));
            }
        }
    return NULL;
}
