/* CPU kernels of the text-generation ops of ONNX Runtime GenAI exports: SimplifiedLayerNormalization
 * (RMS norm), com.microsoft SkipSimplifiedLayerNormalization, RotaryEmbedding and
 * GroupQueryAttention, following ONNX Runtime's CPU semantics. float16/bfloat16 tensors are
 * computed in float32 and rounded once on the way out, as ONNX Runtime's CPU kernels do.
 *
 * GroupQueryAttention keeps its KV cache in ONNX Runtime GenAI's layout: past and present are
 * [B, kv_heads, capacity, head_size]; batch entry b holds seqlens_k[b] + 1 valid positions after
 * this step, the new tokens landing at positions seqlens_k[b] + 1 - S onwards (0 onwards for the
 * first prompt). present is written so that it may be the very buffer past is (GenAI's
 * past_present_share_buffer): past rows are copied only when the buffers differ, and new rows
 * only go where no past row is still to be read. */
#include "graph/ops.h"
#include "kernels/cpu/f32_stage.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/rows.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool go_float(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_BF16; }
static const char *go_name(const kn_node *n) { return n->name ? n->name : ""; }

/* ---- RMS rows: y = x / sqrt(mean(x^2) + eps) * gamma ---- */

typedef struct rms_job {
    const float *x, *skip, *bias, *gamma;
    int64_t n, skip_rows;
    float eps;
    float *y, *inv, *mean, *sum; /* inv, mean, sum may be NULL */
} rms_job;

static void rms_task(void *vctx, int64_t begin, int64_t end) {
    const rms_job *j = vctx;
    int64_t n = j->n;
    for (int64_t r = begin; r < end; r++) {
        float *y = j->y + r * n;
        const float *x = j->x + r * n;
        if (j->skip) {
            /* the skip sum goes to y first and is normalised there in place */
            const float *s = j->skip + (r % j->skip_rows) * n;
            for (int64_t i = 0; i < n; i++) y[i] = x[i] + s[i];
            if (j->bias)
                for (int64_t i = 0; i < n; i++) y[i] += j->bias[i];
            if (j->sum) memcpy(j->sum + r * n, y, (size_t)n * sizeof(float));
            x = y;
        }
        double ss = 0.0;
        for (int64_t i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
        float inv = (float)(1.0 / sqrt(ss / (double)n + (double)j->eps));
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * inv * j->gamma[i];
        if (j->inv) j->inv[r] = inv;
        if (j->mean) j->mean[r] = 0.0f;
    }
}

kn_status *kn_cpu_SimplifiedLayerNormalization(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in,
                                               int n_in, kn_tensor *const *out, int n_out) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_tensor *x = in[0], *sc = n_in > 1 ? in[1] : NULL;
    if (!sc)
        return kn_error(KN_ERR_INVALID_MODEL, "SimplifiedLayerNormalization '%s': scale is required", go_name(node));
    if (!go_float(x->dtype)) return kn_err_dtype(node, x);
    if (!go_float(sc->dtype)) return kn_err_dtype(node, sc);
    const kn_params_layernorm *p = KN_PARAMS(node, layernorm);
    int axis;
    KN_TRY(kn_norm_axis(p->axis, x->ndim, node, &axis));
    int64_t rows = 1, n = 1;
    for (int i = 0; i < x->ndim; i++) {
        if (i < axis) rows *= x->dims[i];
        else n *= x->dims[i];
    }
    if (kn_numel(sc) != n)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "SimplifiedLayerNormalization '%s': scale %s must hold the %lld values normalised in X %s",
                        go_name(node), kn_tensor_desc(sc, b0, sizeof b0), (long long)n,
                        kn_tensor_desc(x, b1, sizeof b1));
    kn_tensor *inv_t = n_out > 1 ? out[1] : NULL;
    if (inv_t && inv_t->dtype != KN_F32 && inv_t->dtype != KN_F64) return kn_err_dtype(node, inv_t);
    if (rows == 0 || n == 0) return NULL;
    rms_job j = {0};
    j.n = n;
    j.eps = p->epsilon;
    KN_TRY(kn_cpu_f32_view(ctx, node, x, &j.x));
    KN_TRY(kn_cpu_f32_view(ctx, node, sc, &j.gamma));
    KN_TRY(kn_cpu_f32_dest(ctx, out[0], &j.y));
    if (inv_t) {
        if (inv_t->dtype == KN_F32) j.inv = inv_t->data;
        else if (!(j.inv = kn_scratch_alloc(ctx, (size_t)rows * sizeof(float)))) return KN_OOM(rows * sizeof(float));
    }
    kn_parallel_for(ctx->pool, rows, kn_red_grain(n), rms_task, &j);
    kn_cpu_f32_commit(out[0], j.y);
    if (inv_t && inv_t->dtype == KN_F64)
        for (int64_t r = 0; r < rows; r++) ((double *)inv_t->data)[r] = j.inv[r];
    return NULL;
}

kn_status *kn_cpu_MsSkipSimplifiedLayerNormalization(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in,
                                                     int n_in, kn_tensor *const *out, int n_out) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_tensor *x = in[0], *skip = n_in > 1 ? in[1] : NULL, *gamma = n_in > 2 ? in[2] : NULL;
    const kn_tensor *bias = n_in > 3 ? in[3] : NULL;
    if (!skip || !gamma)
        return kn_error(KN_ERR_INVALID_MODEL,
                        "SkipSimplifiedLayerNormalization '%s': input, skip and gamma are required", go_name(node));
    if (x->ndim < 2 || x->ndim > 3)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "SkipSimplifiedLayerNormalization '%s': input %s must be 2-D or 3-D",
                        go_name(node), kn_tensor_desc(x, b0, sizeof b0));
    int64_t H = x->dims[x->ndim - 1], rows = H > 0 ? kn_numel(x) / H : 0;
    /* skip is the input's shape, or its trailing dims ([S,H] / [1,S,H]) broadcast over the batch */
    bool ok = skip->ndim >= 2 && skip->ndim <= x->ndim && skip->dims[skip->ndim - 1] == H;
    int64_t skip_rows = rows;
    if (ok) {
        skip_rows = H > 0 ? kn_numel(skip) / H : 0;
        for (int i = 1; i <= skip->ndim && ok; i++) {
            int64_t sd = skip->dims[skip->ndim - i], xd = x->dims[x->ndim - i];
            if (sd != xd && !(i == skip->ndim && sd == 1 && i == x->ndim)) ok = false;
        }
        if (ok && ((skip_rows > 0 && rows % skip_rows) || (skip_rows == 0 && rows > 0))) ok = false;
    }
    if (!ok)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "SkipSimplifiedLayerNormalization '%s': skip %s does not match input %s", go_name(node),
                        kn_tensor_desc(skip, b1, sizeof b1), kn_tensor_desc(x, b0, sizeof b0));
    const kn_tensor *vecs[2] = {gamma, bias};
    for (int i = 0; i < 2; i++)
        if (vecs[i] && (vecs[i]->ndim != 1 || vecs[i]->dims[0] != H))
            return kn_error(KN_ERR_INVALID_ARGUMENT, "SkipSimplifiedLayerNormalization '%s': %s %s must be [%lld]",
                            go_name(node), i ? "bias" : "gamma", kn_tensor_desc(vecs[i], b1, sizeof b1), (long long)H);
    if (rows == 0 || H == 0) return NULL;
    rms_job j = {0};
    j.n = H;
    j.skip_rows = skip_rows;
    j.eps = KN_PARAMS(node, ms_sln)->epsilon;
    KN_TRY(kn_cpu_f32_view(ctx, node, x, &j.x));
    KN_TRY(kn_cpu_f32_view(ctx, node, skip, &j.skip));
    KN_TRY(kn_cpu_f32_view(ctx, node, gamma, &j.gamma));
    if (bias) KN_TRY(kn_cpu_f32_view(ctx, node, bias, &j.bias));
    kn_tensor *mo = n_out > 1 ? out[1] : NULL, *io = n_out > 2 ? out[2] : NULL, *so = n_out > 3 ? out[3] : NULL;
    KN_TRY(kn_cpu_f32_dest(ctx, out[0], &j.y));
    if (mo) KN_TRY(kn_cpu_f32_dest(ctx, mo, &j.mean));
    if (io) KN_TRY(kn_cpu_f32_dest(ctx, io, &j.inv));
    if (so) KN_TRY(kn_cpu_f32_dest(ctx, so, &j.sum));
    kn_parallel_for(ctx->pool, rows, kn_red_grain(H), rms_task, &j);
    kn_cpu_f32_commit(out[0], j.y);
    if (mo) kn_cpu_f32_commit(mo, j.mean);
    if (io) kn_cpu_f32_commit(io, j.inv);
    if (so) kn_cpu_f32_commit(so, j.sum);
    return NULL;
}

/* ---- rotary embedding of one head row (ONNX Runtime's order of products) ---- */

static void rope_row(const float *x, float *y, const float *cs, const float *sn, int64_t rd, bool inter) {
    int64_t half = rd / 2;
    if (inter) {
        for (int64_t i = 0; i < half; i++) {
            float x1 = x[2 * i], x2 = x[2 * i + 1];
            y[2 * i] = x1 * cs[i] - x2 * sn[i];
            y[2 * i + 1] = x1 * sn[i] + x2 * cs[i];
        }
    } else {
        for (int64_t i = 0; i < half; i++) {
            float x1 = x[i], x2 = x[i + half];
            y[i] = x1 * cs[i] - x2 * sn[i];
            y[i + half] = x1 * sn[i] + x2 * cs[i];
        }
    }
}

typedef struct rope_job {
    const float *x, *cos, *sin;
    float *y;
    const int64_t *pos; /* [B*S] positions */
    int64_t S, N, H, rd, half;
    int64_t sb, ss, sn; /* strides of batch, sequence and head in elements */
    bool inter;
} rope_job;

static void rope_task(void *vctx, int64_t begin, int64_t end) {
    const rope_job *j = vctx;
    for (int64_t r = begin; r < end; r++) {
        int64_t n = r % j->N, bs = r / j->N, b = bs / j->S, s = bs % j->S;
        int64_t off = b * j->sb + s * j->ss + n * j->sn, p = j->pos[bs];
        rope_row(j->x + off, j->y + off, j->cos + p * j->half, j->sin + p * j->half, j->rd, j->inter);
        if (j->y != j->x && j->rd < j->H)
            memcpy(j->y + off + j->rd, j->x + off + j->rd, (size_t)(j->H - j->rd) * sizeof(float));
    }
}

/* Checks a [max_pos, rd/2] cache pair and every position against it. */
static kn_status *rope_check(const kn_node *node, const kn_tensor *cs, const kn_tensor *sn, int64_t half,
                             const int64_t *pos, int64_t npos) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    if (cs->ndim != 2 || !kn_same_shape(cs, sn) || cs->dims[1] != half)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s '%s': cos_cache %s / sin_cache %s must be [max_position, %lld]",
                        node->op_type, go_name(node), kn_tensor_desc(cs, b0, sizeof b0),
                        kn_tensor_desc(sn, b1, sizeof b1), (long long)half);
    for (int64_t i = 0; i < npos; i++)
        if (pos[i] < 0 || pos[i] >= cs->dims[0])
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s '%s': position %lld is outside the %lld rows of cos_cache",
                            node->op_type, go_name(node), (long long)pos[i], (long long)cs->dims[0]);
    return NULL;
}

kn_status *kn_cpu_MsRotaryEmbedding(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                    kn_tensor *const *out, int n_out) {
    (void)n_out;
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_params_ms_rotary *p = KN_PARAMS(node, ms_rotary);
    if (n_in < 4 || !in[1] || !in[2] || !in[3])
        return kn_error(KN_ERR_INVALID_MODEL,
                        "RotaryEmbedding '%s': input, position_ids, cos_cache and sin_cache are required",
                        go_name(node));
    const kn_tensor *x = in[0], *pos = in[1], *cs = in[2], *sn = in[3];
    if (p->is_packed_batching)
        return kn_error(KN_ERR_UNSUPPORTED, "RotaryEmbedding '%s': is_packed_batching is not supported", go_name(node));
    /* scale is accepted and not applied: ONNX Runtime's CPU kernel gives the same result for any scale */
    if (cs->ndim != 2)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "RotaryEmbedding '%s': cos_cache %s must be 2-D", go_name(node),
                        kn_tensor_desc(cs, b0, sizeof b0));
    int64_t B = x->dims[0], S, N, H, sb, ss, sn_;
    if (x->ndim == 4) { /* [B, N, S, H] */
        N = x->dims[1];
        S = x->dims[2];
        H = x->dims[3];
        sb = N * S * H;
        sn_ = S * H;
        ss = H;
    } else if (x->ndim == 3) { /* [B, S, N*H] */
        S = x->dims[1];
        int64_t D = x->dims[2];
        if (p->num_heads > 0) {
            if (D % p->num_heads)
                return kn_error(KN_ERR_INVALID_ARGUMENT,
                                "RotaryEmbedding '%s': hidden size of %s not divisible by num_heads %lld",
                                go_name(node), kn_tensor_desc(x, b0, sizeof b0), (long long)p->num_heads);
            H = D / p->num_heads;
        } else if (p->rotary_embedding_dim == 0) {
            H = 2 * cs->dims[1];
            if (H <= 0 || D % H)
                return kn_error(KN_ERR_INVALID_ARGUMENT,
                                "RotaryEmbedding '%s': hidden size of %s not divisible by head size %lld",
                                go_name(node), kn_tensor_desc(x, b0, sizeof b0), (long long)H);
        } else {
            return kn_error(KN_ERR_INVALID_MODEL,
                            "RotaryEmbedding '%s': num_heads is required with rotary_embedding_dim and a 3-D input",
                            go_name(node));
        }
        N = D / H;
        sb = S * D;
        ss = D;
        sn_ = H;
    } else {
        return kn_error(KN_ERR_INVALID_ARGUMENT, "RotaryEmbedding '%s': input %s must be 3-D or 4-D", go_name(node),
                        kn_tensor_desc(x, b0, sizeof b0));
    }
    int64_t rd = p->rotary_embedding_dim ? p->rotary_embedding_dim : H;
    if (rd <= 0 || rd > H || rd % 2)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "RotaryEmbedding '%s': rotary_embedding_dim %lld invalid for head size %lld", go_name(node),
                        (long long)rd, (long long)H);
    int64_t npos = B * S;
    int64_t *pv = kn_scratch_alloc(ctx, (size_t)(npos > 0 ? npos : 1) * sizeof(int64_t));
    if (!pv) return KN_OOM(npos * sizeof(int64_t));
    if (kn_numel(pos) == 1 && pos->ndim <= 1) {
        int64_t o = kn_get_i64(pos, 0);
        for (int64_t i = 0; i < npos; i++) pv[i] = o + i % S;
    } else if (pos->ndim == 2 && pos->dims[0] == B && pos->dims[1] == S) {
        for (int64_t i = 0; i < npos; i++) pv[i] = kn_get_i64(pos, i);
    } else {
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "RotaryEmbedding '%s': position_ids %s must be [1] or [%lld, %lld] for %s", go_name(node),
                        kn_tensor_desc(pos, b0, sizeof b0), (long long)B, (long long)S,
                        kn_tensor_desc(x, b1, sizeof b1));
    }
    KN_TRY(rope_check(node, cs, sn, rd / 2, pv, npos));
    if (kn_numel(x) == 0) return NULL;
    rope_job j = {.pos = pv,
                  .S = S,
                  .N = N,
                  .H = H,
                  .rd = rd,
                  .half = rd / 2,
                  .sb = sb,
                  .ss = ss,
                  .sn = sn_,
                  .inter = p->interleaved};
    KN_TRY(kn_cpu_f32_view(ctx, node, x, &j.x));
    KN_TRY(kn_cpu_f32_view(ctx, node, cs, &j.cos));
    KN_TRY(kn_cpu_f32_view(ctx, node, sn, &j.sin));
    KN_TRY(kn_cpu_f32_dest(ctx, out[0], &j.y));
    kn_parallel_for(ctx->pool, B * S * N, 64, rope_task, &j);
    kn_cpu_f32_commit(out[0], j.y);
    return NULL;
}

/* ---- GroupQueryAttention ---- */

typedef struct gqa_job {
    int64_t B, S, N, KV, G, H, T; /* G = N / KV query heads per kv head; T = cache capacity */
    int64_t sblk, nblk;           /* query rows per task, tasks per (b, kv head) */
    const float *q;               /* [B*S, N*H], rotated */
    const float *k, *v;           /* [B, KV, T, H] after this step's update */
    const int64_t *past, *total;  /* per batch entry: positions before the new tokens, valid after */
    float scale, softcap;
    int64_t window; /* local_window_size: keys within it of the query, itself included; <= 0 unbounded */
    bool smooth;
    const float *sink;                /* head_sink [N] or NULL */
    const float *ab;                  /* attention_bias [B|1, N|1, S, abT] or NULL */
    int64_t ab_sb, ab_sn, ab_ss, abT; /* its strides */
    float *y;                         /* [B*S, N*H] */
    bool failed;
} gqa_job;

/* One row of scores over keys [0, Tc): keys in [start, causal) get softcap, bias and softmax
 * (smooth: one more logit, the sink, in the denominator), the rest exact zeros. */
static void gqa_row(const gqa_job *j, float *row, int64_t Tc, int64_t start, int64_t causal, const float *bias,
                    float sink, bool has_sink) {
    for (int64_t t = 0; t < start; t++) row[t] = 0.0f;
    for (int64_t t = causal; t < Tc; t++) row[t] = 0.0f;
    float *w = row + start;
    int64_t n = causal - start;
    if (n <= 0) return;
    if (j->softcap > 0.0f)
        for (int64_t t = 0; t < n; t++) w[t] = j->softcap * tanhf(w[t] / j->softcap);
    if (bias)
        for (int64_t t = 0; t < n; t++) w[t] += bias[start + t];
    if (!has_sink) {
        kn_softmax_rows_f32(NULL, w, w, 1, n, 0);
        return;
    }
    float mx = sink;
    for (int64_t t = 0; t < n; t++) mx = w[t] > mx ? w[t] : mx;
    float sum = expf(sink - mx);
    for (int64_t t = 0; t < n; t++) {
        w[t] = expf(w[t] - mx);
        sum += w[t];
    }
    float inv = 1.0f / sum;
    for (int64_t t = 0; t < n; t++) w[t] *= inv;
}

/* A task is one block of query rows of one batch entry for all query heads of one kv head, so
 * the heads sharing K and V form one product with it (decode: G rows instead of G products of 1). */
static void gqa_task(void *vctx, int64_t begin, int64_t end) {
    gqa_job *j = vctx;
    int64_t H = j->H, R = j->G * j->sblk, ld = j->N * H;
    float *buf = malloc(sizeof(float) * (size_t)(2 * R * H + R * j->T + 1));
    if (!buf) {
        j->failed = true;
        return;
    }
    float *qg = buf, *og = qg + R * H, *sc = og + R * H;
    for (int64_t task = begin; task < end; task++) {
        int64_t blk = task % j->nblk, bk = task / j->nblk, b = bk / j->KV, kvh = bk % j->KV;
        int64_t s0 = blk * j->sblk, m = j->S - s0 < j->sblk ? j->S - s0 : j->sblk, rows = j->G * m;
        int64_t past = j->past[b], total = j->total[b];
        int64_t Tc = past + s0 + m < total ? past + s0 + m : total;
        for (int64_t g = 0; g < j->G; g++)
            for (int64_t i = 0; i < m; i++)
                memcpy(qg + (g * m + i) * H, j->q + (b * j->S + s0 + i) * ld + (kvh * j->G + g) * H,
                       (size_t)H * sizeof(float));
        const float *k = j->k + (b * j->KV + kvh) * j->T * H, *v = j->v + (b * j->KV + kvh) * j->T * H;
        if (Tc > 0) {
            kn_sgemm(NULL, false, true, rows, Tc, H, j->scale, qg, H, k, H, 0.0f, sc, Tc);
            for (int64_t g = 0; g < j->G; g++) {
                int64_t n = kvh * j->G + g;
                for (int64_t i = 0; i < m; i++) {
                    int64_t s = s0 + i, causal = past + s + 1 < total ? past + s + 1 : total;
                    int64_t start = j->window > 0 && causal > j->window ? causal - j->window : 0;
                    const float *bias = j->ab ? j->ab + b * j->ab_sb + n * j->ab_sn + s * j->ab_ss : NULL;
                    gqa_row(j, sc + (g * m + i) * Tc, Tc, start, causal, bias, j->sink ? j->sink[n] : 0.0f,
                            j->smooth || j->sink);
                }
            }
            kn_sgemm(NULL, false, false, rows, H, Tc, 1.0f, sc, Tc, v, H, 0.0f, og, H);
        } else {
            memset(og, 0, sizeof(float) * (size_t)(rows * H));
        }
        for (int64_t g = 0; g < j->G; g++)
            for (int64_t i = 0; i < m; i++)
                memcpy(j->y + (b * j->S + s0 + i) * ld + (kvh * j->G + g) * H, og + (g * m + i) * H,
                       (size_t)H * sizeof(float));
    }
    free(buf);
}

/* Rows [rows of B*S] x [cols] at column offset col of a [B*S, ld] input, as float32, rotated when
 * cos/sin are given (heads of H, positions pos[B*S]). */
static void gqa_take(const kn_tensor *t, int64_t ld, int64_t col, int64_t rows, int64_t cols, int64_t H,
                     const float *cs, const float *sn, int64_t rd, bool inter, const int64_t *pos, float *dst) {
    for (int64_t r = 0; r < rows; r++) {
        float *d = dst + r * cols;
        if (t->dtype == KN_F32) memcpy(d, (const float *)t->data + r * ld + col, (size_t)cols * sizeof(float));
        else
            for (int64_t c = 0; c < cols; c++) d[c] = kn_load_f32(t->data, t->dtype, r * ld + col + c);
        if (!cs) continue;
        for (int64_t h = 0; h < cols / H; h++)
            rope_row(d + h * H, d + h * H, cs + pos[r] * (rd / 2), sn + pos[r] * (rd / 2), rd, inter);
    }
}

/* The cache after this step, [B, KV, T, H] as float32 in dst: past's P rows (unless dst is past's
 * own float32 buffer), zeros after them, then the new rows at each entry's past length. */
static void gqa_cache(const kn_tensor *past, float *dst, const float *fresh, int64_t B, int64_t KV, int64_t S,
                      int64_t T, int64_t H, const int64_t *plen) {
    int64_t P = past ? past->dims[2] : 0;
    bool same = past && past->dtype == KN_F32 && past->data == dst;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < KV; h++) {
            float *d = dst + (b * KV + h) * T * H;
            if (!same) {
                if (past && past->dtype == KN_F32)
                    memcpy(d, (const float *)past->data + (b * KV + h) * P * H, (size_t)(P * H) * sizeof(float));
                else
                    for (int64_t i = 0; i < P * H; i++)
                        d[i] = kn_load_f32(past->data, past->dtype, (b * KV + h) * P * H + i);
                memset(d + P * H, 0, (size_t)((T - P) * H) * sizeof(float));
            }
            for (int64_t s = 0; s < S; s++)
                memcpy(d + (plen[b] + s) * H, fresh + ((b * S + s) * KV + h) * H, (size_t)H * sizeof(float));
        }
}

kn_status *kn_cpu_MsGroupQueryAttention(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                        kn_tensor *const *out, int n_out) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_params_ms_gqa *p = KN_PARAMS(node, ms_gqa);
#define GQ_IN(i) (n_in > (i) ? in[i] : NULL)
    const kn_tensor *qt = in[0], *kt = GQ_IN(1), *vt = GQ_IN(2), *pk = GQ_IN(3), *pv = GQ_IN(4);
    const kn_tensor *slt = GQ_IN(5), *tlt = GQ_IN(6), *cst = GQ_IN(7), *snt = GQ_IN(8), *pit = GQ_IN(9);
    const kn_tensor *abt = GQ_IN(10), *hst = GQ_IN(11);
    for (int i = 12; i < n_in; i++)
        if (in[i])
            return kn_error(KN_ERR_UNSUPPORTED,
                            "GroupQueryAttention '%s': input %d (kv scales, qk norms, query_seqlens) "
                            "is not supported",
                            go_name(node), i);
#undef GQ_IN
    kn_tensor *yo = out[0], *pko = n_out > 1 ? out[1] : NULL, *pvo = n_out > 2 ? out[2] : NULL;
    if (n_out > 3 && out[3])
        return kn_error(KN_ERR_UNSUPPORTED, "GroupQueryAttention '%s': the output_qk output is not supported",
                        go_name(node));
    if (p->quantized_kv)
        return kn_error(KN_ERR_UNSUPPORTED, "GroupQueryAttention '%s': quantised KV caches are not supported",
                        go_name(node));
    if (!slt || !tlt || slt->dtype != KN_I32 || tlt->dtype != KN_I32 || kn_numel(tlt) != 1)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "GroupQueryAttention '%s': seqlens_k [B] and total_sequence_length [1] must be int32",
                        go_name(node));
    if (!go_float(qt->dtype)) return kn_err_dtype(node, qt);
    int64_t N = p->num_heads, KV = p->kv_num_heads;
    if (qt->ndim != 3)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "GroupQueryAttention '%s': query %s must be [B, S, hidden]",
                        go_name(node), kn_tensor_desc(qt, b0, sizeof b0));
    int64_t B = qt->dims[0], S = qt->dims[1], D = qt->dims[2], parts = kt ? N : N + 2 * KV;
    if (D % parts || D == 0)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "GroupQueryAttention '%s': query %s does not split into %lld heads",
                        go_name(node), kn_tensor_desc(qt, b0, sizeof b0), (long long)parts);
    int64_t H = D / parts;
    if ((kt == NULL) != (vt == NULL) || (pk == NULL) != (pv == NULL))
        return kn_error(KN_ERR_INVALID_MODEL, "GroupQueryAttention '%s': key/value and past_key/past_value go in pairs",
                        go_name(node));
    if (kt) {
        const kn_tensor *kv[2] = {kt, vt};
        for (int i = 0; i < 2; i++)
            if (kv[i]->ndim != 3 || kv[i]->dims[0] != B || kv[i]->dims[1] != S || kv[i]->dims[2] != KV * H ||
                kv[i]->dtype != qt->dtype)
                return kn_error(KN_ERR_INVALID_ARGUMENT,
                                "GroupQueryAttention '%s': %s %s must be [%lld, %lld, %lld] like query %s",
                                go_name(node), i ? "value" : "key", kn_tensor_desc(kv[i], b0, sizeof b0), (long long)B,
                                (long long)S, (long long)(KV * H), kn_tensor_desc(qt, b1, sizeof b1));
    }
    int64_t P = 0;
    if (pk) {
        if (pk->ndim != 4 || !kn_same_shape(pk, pv) || pk->dims[0] != B || pk->dims[1] != KV || pk->dims[3] != H ||
            !go_float(pk->dtype) || !go_float(pv->dtype))
            return kn_error(
                KN_ERR_INVALID_ARGUMENT,
                "GroupQueryAttention '%s': past_key %s / past_value %s must be float [%lld, %lld, capacity, %lld]",
                go_name(node), kn_tensor_desc(pk, b0, sizeof b0), kn_tensor_desc(pv, b1, sizeof b1), (long long)B,
                (long long)KV, (long long)H);
        P = pk->dims[2];
    }
    if (slt->ndim != 1 || slt->dims[0] != B)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "GroupQueryAttention '%s': seqlens_k %s must be [%lld]", go_name(node),
                        kn_tensor_desc(slt, b0, sizeof b0), (long long)B);
    int64_t total_len = kn_get_i64(tlt, 0), T = total_len > P ? total_len : P;
    const kn_tensor *po[2] = {pko, pvo};
    for (int i = 0; i < 2; i++)
        if (po[i] &&
            (po[i]->ndim != 4 || po[i]->dims[0] != B || po[i]->dims[1] != KV || po[i]->dims[2] != T ||
             po[i]->dims[3] != H || !go_float(po[i]->dtype)))
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "GroupQueryAttention '%s': present %s must be [%lld, %lld, %lld, %lld]", go_name(node),
                            kn_tensor_desc(po[i], b0, sizeof b0), (long long)B, (long long)KV, (long long)T,
                            (long long)H);
    /* first prompt (ONNX Runtime's rule: several tokens and as many as the total): no past rows */
    bool first = S > 1 && S == total_len;
    int64_t *plen = kn_scratch_alloc(ctx, sizeof(int64_t) * (size_t)(2 * B + 1)), *tot = plen + B;
    if (!plen) return KN_OOM(sizeof(int64_t) * 2 * B);
    for (int64_t b = 0; b < B; b++) {
        tot[b] = kn_get_i64(slt, b) + 1;
        plen[b] = first ? 0 : tot[b] - S;
        if (tot[b] < 1 || tot[b] > T || plen[b] < 0 || plen[b] + S > T || plen[b] > P)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "GroupQueryAttention '%s': seqlens_k[%lld] = %lld does not fit %lld new tokens, a past of "
                            "%lld positions and total_sequence_length %lld",
                            go_name(node), (long long)b, (long long)(tot[b] - 1), (long long)S, (long long)P,
                            (long long)total_len);
    }

    /* rotary positions: position_ids when given, else each entry's past length onwards */
    int64_t rd = 0;
    const float *cs = NULL, *sn = NULL;
    int64_t *pos = NULL;
    if (p->do_rotary) {
        if (!cst || !snt)
            return kn_error(KN_ERR_INVALID_MODEL, "GroupQueryAttention '%s': do_rotary needs cos_cache and sin_cache",
                            go_name(node));
        rd = cst->ndim == 2 ? 2 * cst->dims[1] : -1;
        if (rd <= 0 || rd > H)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "GroupQueryAttention '%s': cos_cache %s gives a rotary dim beyond head size %lld",
                            go_name(node), kn_tensor_desc(cst, b0, sizeof b0), (long long)H);
        pos = kn_scratch_alloc(ctx, sizeof(int64_t) * (size_t)(B * S + 1));
        if (!pos) return KN_OOM(sizeof(int64_t) * B * S);
        if (pit && (pit->ndim != 2 || pit->dims[0] != B || pit->dims[1] != S))
            return kn_error(KN_ERR_INVALID_ARGUMENT, "GroupQueryAttention '%s': position_ids %s must be [%lld, %lld]",
                            go_name(node), kn_tensor_desc(pit, b0, sizeof b0), (long long)B, (long long)S);
        for (int64_t b = 0; b < B; b++)
            for (int64_t s = 0; s < S; s++) pos[b * S + s] = pit ? kn_get_i64(pit, b * S + s) : plen[b] + s;
        KN_TRY(rope_check(node, cst, snt, rd / 2, pos, B * S));
        KN_TRY(kn_cpu_f32_view(ctx, node, cst, &cs));
        KN_TRY(kn_cpu_f32_view(ctx, node, snt, &sn));
    }

    gqa_job j = {.B = B,
                 .S = S,
                 .N = N,
                 .KV = KV,
                 .G = N / KV,
                 .H = H,
                 .T = T,
                 .past = plen,
                 .total = tot,
                 .softcap = p->softcap,
                 .window = p->local_window_size,
                 .smooth = p->smooth_softmax};
    j.scale = p->scale != 0.0f ? p->scale : (float)(1.0 / sqrt((double)H));
    if (abt) {
        if (abt->ndim != 4 || (abt->dims[0] != B && abt->dims[0] != 1) || (abt->dims[1] != N && abt->dims[1] != 1) ||
            abt->dims[2] != S || abt->dims[3] < total_len)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "GroupQueryAttention '%s': attention_bias %s must be [%lld|1, %lld|1, %lld, %lld]",
                            go_name(node), kn_tensor_desc(abt, b0, sizeof b0), (long long)B, (long long)N, (long long)S,
                            (long long)total_len);
        KN_TRY(kn_cpu_f32_view(ctx, node, abt, &j.ab));
        j.abT = abt->dims[3];
        j.ab_ss = j.abT;
        j.ab_sn = abt->dims[1] == 1 ? 0 : S * j.abT;
        j.ab_sb = abt->dims[0] == 1 ? 0 : abt->dims[1] * S * j.abT;
    }
    if (hst) {
        if (kn_numel(hst) != N)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "GroupQueryAttention '%s': head_sink must hold %lld values",
                            go_name(node), (long long)N);
        KN_TRY(kn_cpu_f32_view(ctx, node, hst, &j.sink));
    }

    /* Q and the new K, V rows as float32, Q and K rotated */
    int64_t BS = B * S;
    size_t nq = (size_t)(BS * N * H), nkv = (size_t)(BS * KV * H), ncache = (size_t)(B * KV * T * H);
    float *qf = kn_scratch_alloc(ctx, sizeof(float) * (nq + 2 * nkv + 1));
    if (!qf) return KN_OOM(sizeof(float) * (nq + 2 * nkv));
    float *knew = qf + nq, *vnew = knew + nkv;
    gqa_take(qt, D, 0, BS, N * H, H, cs, sn, rd, p->rotary_interleaved, pos, qf);
    gqa_take(kt ? kt : qt, kt ? KV * H : D, kt ? 0 : N * H, BS, KV * H, H, cs, sn, rd, p->rotary_interleaved, pos,
             knew);
    gqa_take(vt ? vt : qt, vt ? KV * H : D, vt ? 0 : (N + KV) * H, BS, KV * H, H, NULL, NULL, 0, false, NULL, vnew);

    /* the updated caches: present itself when float32 (so a present that is past's buffer is
     * updated in place), else float32 scratch converted into present after */
    float *kc = pko && pko->dtype == KN_F32 ? pko->data : kn_scratch_alloc(ctx, sizeof(float) * (ncache + 1));
    float *vc = pvo && pvo->dtype == KN_F32 ? pvo->data : kn_scratch_alloc(ctx, sizeof(float) * (ncache + 1));
    if (!kc || !vc) return KN_OOM(sizeof(float) * 2 * ncache);
    gqa_cache(pk, kc, knew, B, KV, S, T, H, plen);
    gqa_cache(pv, vc, vnew, B, KV, S, T, H, plen);
    j.q = qf;
    j.k = kc;
    j.v = vc;
    KN_TRY(kn_cpu_f32_dest(ctx, yo, &j.y));

    int nth = kn_threadpool_size(ctx->pool);
    j.sblk = B * KV >= 2 * (int64_t)(nth > 0 ? nth : 1) ? S : 32;
    int64_t cap = ((int64_t)1 << 18) / (j.G * (T > 0 ? T : 1));
    if (j.sblk > cap) j.sblk = cap;
    if (j.sblk < 1) j.sblk = 1;
    if (j.sblk > S) j.sblk = S;
    j.nblk = S > 0 ? (S + j.sblk - 1) / j.sblk : 0;
    if (B * KV * j.nblk > 0) kn_parallel_for(ctx->pool, B * KV * j.nblk, 1, gqa_task, &j);
    if (j.failed) return KN_OOM(sizeof(float) * (size_t)(j.G * j.sblk * (2 * H + T)));
    kn_cpu_f32_commit(yo, j.y);
    if (pko) kn_cpu_f32_commit(pko, kc);
    if (pvo) kn_cpu_f32_commit(pvo, vc);
    return NULL;
}
