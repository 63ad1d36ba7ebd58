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
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/rows.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool go_float(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_BF16; }
static const char *go_name(const kn_node *n) { return n->name ? n->name : ""; }

/* The tensor as float32: its own data when float32, else a converted scratch copy. */
static kn_status *go_f32_view(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *t, const float **out) {
    if (t->dtype == KN_F32) {
        *out = (const float *)t->data;
        return NULL;
    }
    if (!go_float(t->dtype)) return kn_err_dtype(node, t);
    int64_t n = kn_numel(t);
    float *f = kn_scratch_alloc(ctx, (size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!f) return KN_OOM((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) f[i] = kn_load_f32(t->data, t->dtype, i);
    *out = f;
    return NULL;
}

/* Where float32 results go before go_commit: the output itself when float32. */
static kn_status *go_f32_dest(kn_exec_ctx *ctx, const kn_tensor *t, float **out) {
    if (t->dtype == KN_F32) {
        *out = (float *)t->data;
        return NULL;
    }
    int64_t n = kn_numel(t);
    float *f = kn_scratch_alloc(ctx, (size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!f) return KN_OOM((size_t)n * sizeof(float));
    *out = f;
    return NULL;
}

static void go_commit(kn_tensor *t, const float *f) {
    if (t->dtype == KN_F32) return;
    int64_t n = kn_numel(t);
    for (int64_t i = 0; i < n; i++) kn_store_f32(t->data, t->dtype, i, f[i]);
}

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
    if (!sc) return kn_error(KN_ERR_INVALID_MODEL, "SimplifiedLayerNormalization '%s': scale is required", go_name(node));
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
                        go_name(node), kn_tensor_desc(sc, b0, sizeof b0), (long long)n, kn_tensor_desc(x, b1, sizeof b1));
    kn_tensor *inv_t = n_out > 1 ? out[1] : NULL;
    if (inv_t && inv_t->dtype != KN_F32 && inv_t->dtype != KN_F64) return kn_err_dtype(node, inv_t);
    if (rows == 0 || n == 0) return NULL;
    rms_job j = {0};
    j.n = n;
    j.eps = p->epsilon;
    KN_TRY(go_f32_view(ctx, node, x, &j.x));
    KN_TRY(go_f32_view(ctx, node, sc, &j.gamma));
    KN_TRY(go_f32_dest(ctx, out[0], &j.y));
    if (inv_t) {
        if (inv_t->dtype == KN_F32) j.inv = inv_t->data;
        else if (!(j.inv = kn_scratch_alloc(ctx, (size_t)rows * sizeof(float)))) return KN_OOM(rows * sizeof(float));
    }
    kn_parallel_for(ctx->pool, rows, kn_red_grain(n), rms_task, &j);
    go_commit(out[0], j.y);
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
        return kn_error(KN_ERR_INVALID_MODEL, "SkipSimplifiedLayerNormalization '%s': input, skip and gamma are required",
                        go_name(node));
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
        return kn_error(KN_ERR_INVALID_ARGUMENT, "SkipSimplifiedLayerNormalization '%s': skip %s does not match input %s",
                        go_name(node), kn_tensor_desc(skip, b1, sizeof b1), kn_tensor_desc(x, b0, sizeof b0));
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
    KN_TRY(go_f32_view(ctx, node, x, &j.x));
    KN_TRY(go_f32_view(ctx, node, skip, &j.skip));
    KN_TRY(go_f32_view(ctx, node, gamma, &j.gamma));
    if (bias) KN_TRY(go_f32_view(ctx, node, bias, &j.bias));
    kn_tensor *mo = n_out > 1 ? out[1] : NULL, *io = n_out > 2 ? out[2] : NULL, *so = n_out > 3 ? out[3] : NULL;
    KN_TRY(go_f32_dest(ctx, out[0], &j.y));
    if (mo) KN_TRY(go_f32_dest(ctx, mo, &j.mean));
    if (io) KN_TRY(go_f32_dest(ctx, io, &j.inv));
    if (so) KN_TRY(go_f32_dest(ctx, so, &j.sum));
    kn_parallel_for(ctx->pool, rows, kn_red_grain(H), rms_task, &j);
    go_commit(out[0], j.y);
    if (mo) go_commit(mo, j.mean);
    if (io) go_commit(io, j.inv);
    if (so) go_commit(so, j.sum);
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
        return kn_error(KN_ERR_INVALID_MODEL, "RotaryEmbedding '%s': input, position_ids, cos_cache and sin_cache are required",
                        go_name(node));
    const kn_tensor *x = in[0], *pos = in[1], *cs = in[2], *sn = in[3];
    if (p->is_packed_batching)
        return kn_error(KN_ERR_UNSUPPORTED, "RotaryEmbedding '%s': is_packed_batching is not supported", go_name(node));
    if (p->scale != 1.0f)
        return kn_error(KN_ERR_UNSUPPORTED, "RotaryEmbedding '%s': scale=%g is not supported (1 only)", go_name(node),
                        (double)p->scale);
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
                return kn_error(KN_ERR_INVALID_ARGUMENT, "RotaryEmbedding '%s': hidden size of %s not divisible by num_heads %lld",
                                go_name(node), kn_tensor_desc(x, b0, sizeof b0), (long long)p->num_heads);
            H = D / p->num_heads;
        } else if (p->rotary_embedding_dim == 0) {
            H = 2 * cs->dims[1];
            if (H <= 0 || D % H)
                return kn_error(KN_ERR_INVALID_ARGUMENT, "RotaryEmbedding '%s': hidden size of %s not divisible by head size %lld",
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
        return kn_error(KN_ERR_INVALID_ARGUMENT, "RotaryEmbedding '%s': rotary_embedding_dim %lld invalid for head size %lld",
                        go_name(node), (long long)rd, (long long)H);
    int64_t npos = B * S;
    int64_t *pv = kn_scratch_alloc(ctx, (size_t)(npos > 0 ? npos : 1) * sizeof(int64_t));
    if (!pv) return KN_OOM(npos * sizeof(int64_t));
    if (kn_numel(pos) == 1 && pos->ndim <= 1) {
        int64_t o = kn_get_i64(pos, 0);
        for (int64_t i = 0; i < npos; i++) pv[i] = o + i % S;
    } else if (pos->ndim == 2 && pos->dims[0] == B && pos->dims[1] == S) {
        for (int64_t i = 0; i < npos; i++) pv[i] = kn_get_i64(pos, i);
    } else {
        return kn_error(KN_ERR_INVALID_ARGUMENT, "RotaryEmbedding '%s': position_ids %s must be [1] or [%lld, %lld] for %s",
                        go_name(node), kn_tensor_desc(pos, b0, sizeof b0), (long long)B, (long long)S,
                        kn_tensor_desc(x, b1, sizeof b1));
    }
    KN_TRY(rope_check(node, cs, sn, rd / 2, pv, npos));
    if (kn_numel(x) == 0) return NULL;
    rope_job j = {.pos = pv, .S = S, .N = N, .H = H, .rd = rd, .half = rd / 2, .sb = sb, .ss = ss, .sn = sn_,
                  .inter = p->interleaved};
    KN_TRY(go_f32_view(ctx, node, x, &j.x));
    KN_TRY(go_f32_view(ctx, node, cs, &j.cos));
    KN_TRY(go_f32_view(ctx, node, sn, &j.sin));
    KN_TRY(go_f32_dest(ctx, out[0], &j.y));
    kn_parallel_for(ctx->pool, B * S * N, 64, rope_task, &j);
    go_commit(out[0], j.y);
    return NULL;
}
