/* CPU kernels for the com.microsoft contrib ops found in optimised transformer exports: Gelu (erf),
 * FastGelu (tanh approximation), BiasGelu, GemmFastGelu, SkipLayerNormalization, EmbedLayerNormalization,
 * Attention and MultiHeadAttention, following ONNX Runtime's documented semantics. Everything is computed in
 * float32 (float64 inputs in double for the elementwise ops); float16 / bfloat16 tensors are
 * converted on the way in and out. Attention masks are additive like ORT's: a masked key gets
 * mask_filter_value (default -10000) added to its score, and the causal mask adds it again, so a
 * fully masked row gives ORT's near-uniform softmax rather than zeros. */
#include "graph/ops.h"
#include "kernels/cpu/elementwise_simd.h"
#include "kernels/cpu/f32_stage.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/op_checks.h"
#include "kernels/cpu/rows.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>


/* ---- Gelu family ---- */

enum { MS_GELU_ERF = 0, MS_GELU_TANH = 1 };

typedef struct gelu_job {
    const void *x, *bias;
    void *y;
    kn_dtype dt, bdt;
    int64_t blen;
    int form, level;
} gelu_job;

static inline double gelu_d(double x, int form) {
    if (form == MS_GELU_ERF) return 0.5 * x * (1.0 + erf(x * 0.70710678118654752440));
    return 0.5 * x * (1.0 + tanh(0.79788456080286535588 * x * (1.0 + 0.044715 * x * x)));
}

static inline float gelu_f(float x, int form) {
    if (form == MS_GELU_ERF) return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
    return 0.5f * x * (1.0f + tanhf(0.79788456080286535588f * x * (1.0f + 0.044715f * x * x)));
}

static void gelu_task(void *vctx, int64_t begin, int64_t end) {
    const gelu_job *j = vctx;
    if (j->dt == KN_F32 && (!j->bias || j->bdt == KN_F32)) {
        /* the SIMD kernels of the unfused Add and Gelu, one bias period at a time */
        const float *x = j->x, *b = j->bias;
        float *y = j->y;
        int op = j->form == MS_GELU_ERF ? KN_EW_GELU_ERF : KN_EW_GELU_TANH;
        for (int64_t i = begin; i < end;) {
            int64_t off = b ? i % j->blen : 0, len = b ? j->blen - off : end - i;
            if (len > end - i) len = end - i;
            if (b) kn_ew_binary_f32_level(j->level, KN_EW_ADD, x + i, 1, b + off, 1, y + i, len);
            kn_ew_unary_f32_level(j->level, op, b ? y + i : x + i, y + i, len);
            i += len;
        }
    } else if (j->dt == KN_F64) {
        const double *x = j->x;
        double *y = j->y;
        for (int64_t i = begin; i < end; i++) {
            double b = 0.0;
            if (j->bias)
                b = j->bdt == KN_F64 ? ((const double *)j->bias)[i % j->blen]
                                     : kn_load_f32(j->bias, j->bdt, i % j->blen);
            y[i] = gelu_d(x[i] + b, j->form);
        }
    } else {
        for (int64_t i = begin; i < end; i++) {
            float v = kn_load_f32(j->x, j->dt, i);
            if (j->bias) v += kn_load_f32(j->bias, j->bdt, i % j->blen);
            kn_store_f32(j->y, j->dt, i, gelu_f(v, j->form));
        }
    }
}

static kn_status *gelu_run(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *x, const kn_tensor *bias,
                           kn_tensor *y, int form) {
    char bx[KN_DESC_LEN], bb[KN_DESC_LEN];
    if (!kn_cpu_f32_stageable(x->dtype)) return kn_err_dtype(node, x);
    gelu_job j = {x->data, NULL, y->data, x->dtype, x->dtype, 1, form, kn_ew_best_level()};
    if (bias) {
        if (!kn_cpu_f32_stageable(bias->dtype)) return kn_err_dtype(node, bias);
        if (bias->ndim != 1 || x->ndim < 1 || bias->dims[0] != x->dims[x->ndim - 1] || bias->dims[0] <= 0)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: bias %s must be 1-D matching the last dim of %s",
                            node->op_type, kn_tensor_desc(bias, bb, sizeof bb), kn_tensor_desc(x, bx, sizeof bx));
        j.bias = bias->data;
        j.bdt = bias->dtype;
        j.blen = bias->dims[0];
    }
    int64_t n = kn_numel(x);
    if (n > 0) kn_parallel_for(ctx->pool, n, 16384, gelu_task, &j);
    return NULL;
}

kn_status *kn_cpu_MsGelu(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    (void)n_in;
    (void)n_out;
    return gelu_run(ctx, node, in[0], NULL, out[0], MS_GELU_ERF);
}

kn_status *kn_cpu_MsFastGelu(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                             kn_tensor *const *out, int n_out) {
    (void)n_out;
    return gelu_run(ctx, node, in[0], n_in > 1 ? in[1] : NULL, out[0], MS_GELU_TANH);
}

kn_status *kn_cpu_MsBiasGelu(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                             kn_tensor *const *out, int n_out) {
    (void)n_out;
    if (n_in < 2 || !in[1]) return kn_error(KN_ERR_INVALID_MODEL, "BiasGelu: missing input B");
    return gelu_run(ctx, node, in[0], in[1], out[0], MS_GELU_ERF);
}

/* GemmFastGelu: MatMul's kernel, then FastGelu with its bias over the product in place. */
kn_status *kn_cpu_MsGemmFastGelu(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                 kn_tensor *const *out, int n_out) {
    if (n_in < 2 || !in[1]) return kn_error(KN_ERR_INVALID_MODEL, "GemmFastGelu: missing input W");
    if (!kn_cpu_f32_stageable(in[0]->dtype) || in[0]->dtype == KN_F64) return kn_err_dtype(node, in[0]);
    KN_TRY(kn_cpu_MatMul(ctx, node, in, 2, out, n_out));
    return gelu_run(ctx, node, out[0], n_in > 2 ? in[2] : NULL, out[0], MS_GELU_TANH);
}

/* ---- SkipLayerNormalization ---- */

typedef struct sln_job {
    const float *x, *skip, *gamma, *beta, *bias;
    int64_t H, skip_rows; /* skip repeats every skip_rows rows (broadcast over batch) */
    float eps;
    float *y, *mean, *inv, *sum;
    int ew_level, red_level;
} sln_job;

/* The sum goes to y with the SIMD Add kernel, then the LayerNormalization row kernel normalises
 * it in place (kernels/cpu/norm.c and its ISA files). */
static void sln_task(void *vctx, int64_t begin, int64_t end) {
    const sln_job *j = vctx;
    int64_t H = j->H;
    for (int64_t r = begin; r < end; r++) {
        const float *x = j->x + r * H, *s = j->skip + (r % j->skip_rows) * H;
        float *y = j->y + r * H;
        kn_ew_binary_f32_level(j->ew_level, KN_EW_ADD, x, 1, s, 1, y, H);
        if (j->bias) kn_ew_binary_f32_level(j->ew_level, KN_EW_ADD, y, 1, j->bias, 1, y, H);
        if (j->sum) memcpy(j->sum + r * H, y, (size_t)H * sizeof(float));
        float *mean = j->mean ? j->mean + r : NULL, *inv = j->inv ? j->inv + r : NULL;
        if (j->red_level == 2) kn_layernorm_rows_f32_avx512(y, y, 1, H, j->gamma, j->beta, j->eps, mean, inv);
        else if (j->red_level == 1) kn_layernorm_rows_f32_avx2(y, y, 1, H, j->gamma, j->beta, j->eps, mean, inv);
        else kn_layernorm_rows_f32_scalar(y, y, 1, H, j->gamma, j->beta, j->eps, mean, inv);
    }
}

kn_status *kn_cpu_MsSkipLayerNormalization(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                           kn_tensor *const *out, int n_out) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_tensor *x = in[0], *skip = n_in > 1 ? in[1] : NULL, *gamma = n_in > 2 ? in[2] : NULL;
    const kn_tensor *beta = n_in > 3 ? in[3] : NULL, *bias = n_in > 4 ? in[4] : NULL;
    if (!skip || !gamma)
        return kn_error(KN_ERR_INVALID_MODEL, "SkipLayerNormalization: input, skip and gamma are required");
    if (x->ndim < 2 || x->ndim > 3)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "SkipLayerNormalization: input must be 2-D or 3-D, got %s",
                        kn_tensor_desc(x, b0, sizeof b0));
    int64_t H = x->dims[x->ndim - 1], rows = H > 0 ? kn_numel(x) / H : 0;
    /* skip is the input's shape, or its trailing dims ([S,H] / [1,S,H]) broadcast over the batch */
    bool ok = skip->ndim >= 2 && skip->ndim <= x->ndim && skip->dims[skip->ndim - 1] == H;
    int64_t skip_rows = rows;
    if (ok) {
        int64_t sn = kn_numel(skip);
        skip_rows = H > 0 ? sn / H : 0;
        for (int i = 1; i <= skip->ndim && ok; i++) {
            int64_t sd = skip->dims[skip->ndim - i], xd = x->dims[x->ndim - i];
            if (sd != xd && !(i == skip->ndim && sd == 1 && i == x->ndim)) ok = false;
        }
        if (ok && skip_rows > 0 && rows % skip_rows) ok = false;
        if (skip_rows == 0 && rows > 0) ok = false;
    }
    if (!ok)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "SkipLayerNormalization: skip %s does not match input %s",
                        kn_tensor_desc(skip, b1, sizeof b1), kn_tensor_desc(x, b0, sizeof b0));
    const kn_tensor *vecs[3] = {gamma, beta, bias};
    for (int i = 0; i < 3; i++)
        if (vecs[i] && (vecs[i]->ndim != 1 || vecs[i]->dims[0] != H))
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "SkipLayerNormalization: gamma/beta/bias %s must be [%lld] for input %s",
                            kn_tensor_desc(vecs[i], b1, sizeof b1), (long long)H, kn_tensor_desc(x, b0, sizeof b0));
    if (rows == 0 || H == 0) return NULL;
    float eps = KN_PARAMS(node, ms_sln)->epsilon;
    if (!(eps >= 0.0f)) return kn_error(KN_ERR_INVALID_MODEL, "SkipLayerNormalization: epsilon must be >= 0");

    sln_job j = {0};
    j.H = H;
    j.skip_rows = skip_rows;
    j.eps = eps;
    j.ew_level = kn_ew_best_level();
    j.red_level = kn_red_simd_level();
    KN_TRY(kn_cpu_f32_view(ctx, node, x, &j.x));
    KN_TRY(kn_cpu_f32_view(ctx, node, skip, &j.skip));
    KN_TRY(kn_cpu_f32_view(ctx, node, gamma, &j.gamma));
    if (beta) KN_TRY(kn_cpu_f32_view(ctx, node, beta, &j.beta));
    if (bias) KN_TRY(kn_cpu_f32_view(ctx, node, bias, &j.bias));
    kn_tensor *y = out[0];
    kn_tensor *mo = n_out > 1 ? out[1] : NULL, *io = n_out > 2 ? out[2] : NULL, *so = n_out > 3 ? out[3] : NULL;
    KN_TRY(kn_cpu_f32_dest(ctx, y, &j.y));
    if (mo) KN_TRY(kn_cpu_f32_dest(ctx, mo, &j.mean));
    if (io) KN_TRY(kn_cpu_f32_dest(ctx, io, &j.inv));
    if (so) KN_TRY(kn_cpu_f32_dest(ctx, so, &j.sum));
    kn_parallel_for(ctx->pool, rows, kn_red_grain(H), sln_task, &j);
    kn_cpu_f32_commit(y, j.y);
    if (mo) kn_cpu_f32_commit(mo, j.mean);
    if (io) kn_cpu_f32_commit(io, j.inv);
    if (so) kn_cpu_f32_commit(so, j.sum);
    return NULL;
}

/* ---- EmbedLayerNormalization ---- */

typedef struct eln_job {
    const int32_t *ids, *seg, *pos;
    const void *we, *pe, *se;
    kn_dtype dt;
    const float *gamma, *beta;
    int64_t S, H, pos_rows; /* pos_rows: S when position_ids broadcast from [1,S], else B*S */
    float eps;
    float *y, *sum;
    int ew_level, red_level;
} eln_job;

/* Table row r as float32 into dst (added when acc): the float32 tables are read in place, the
 * 16-bit ones converted a row at a time rather than whole (a vocabulary is large, a batch small). */
static void eln_row(const eln_job *j, const void *tab, int64_t r, float *dst, bool acc) {
    int64_t H = j->H;
    if (j->dt == KN_F32) {
        const float *src = (const float *)tab + r * H;
        if (acc) kn_ew_binary_f32_level(j->ew_level, KN_EW_ADD, dst, 1, src, 1, dst, H);
        else memcpy(dst, src, (size_t)H * sizeof(float));
        return;
    }
    for (int64_t k = 0; k < H; k++) {
        float v = kn_load_f32(tab, j->dt, r * H + k);
        dst[k] = acc ? dst[k] + v : v;
    }
}

static void eln_task(void *vctx, int64_t begin, int64_t end) {
    const eln_job *j = vctx;
    int64_t H = j->H;
    for (int64_t t = begin; t < end; t++) {
        float *y = j->y + t * H;
        int64_t p = j->pos ? j->pos[t % j->pos_rows] : t % j->S;
        eln_row(j, j->we, j->ids[t], y, false);
        eln_row(j, j->pe, p, y, true);
        /* a segment table without segment_ids adds its row 0, as ONNX Runtime's kernel does */
        if (j->se) eln_row(j, j->se, j->seg ? j->seg[t] : 0, y, true);
        if (j->sum) memcpy(j->sum + t * H, y, (size_t)H * sizeof(float));
        if (j->red_level == 2) kn_layernorm_rows_f32_avx512(y, y, 1, H, j->gamma, j->beta, j->eps, NULL, NULL);
        else if (j->red_level == 1) kn_layernorm_rows_f32_avx2(y, y, 1, H, j->gamma, j->beta, j->eps, NULL, NULL);
        else kn_layernorm_rows_f32_scalar(y, y, 1, H, j->gamma, j->beta, j->eps, NULL, NULL);
    }
}

/* Every id inside its table, checked before any row is read (the tables are not padded). */
static kn_status *eln_check_ids(const kn_node *node, const int32_t *ids, int64_t n, int64_t rows, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= rows)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s %s: %s[%lld] = %d is outside its embedding table of %lld rows",
                            node->op_type, node->name ? node->name : "", what, (long long)i, (int)ids[i],
                            (long long)rows);
    return NULL;
}

kn_status *kn_cpu_MsEmbedLayerNormalization(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                            kn_tensor *const *out, int n_out) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
#define ELN_IN(i) (n_in > (i) ? in[i] : NULL)
    const kn_tensor *ids = in[0], *seg = ELN_IN(1), *we = ELN_IN(2), *pe = ELN_IN(3), *se = ELN_IN(4);
    const kn_tensor *gamma = ELN_IN(5), *beta = ELN_IN(6), *mask = ELN_IN(7), *pos = ELN_IN(8);
#undef ELN_IN
    if (!we || !pe || !gamma)
        return kn_error(
            KN_ERR_INVALID_MODEL,
            "EmbedLayerNormalization: input_ids, word_embedding, position_embedding and gamma are required");
    if (ids->dtype != KN_I32 || ids->ndim != 2)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "EmbedLayerNormalization: input_ids must be int32 [batch, seq], got %s",
                        kn_tensor_desc(ids, b0, sizeof b0));
    int64_t B = ids->dims[0], S = ids->dims[1], H = we->ndim == 2 ? we->dims[1] : -1;
    if (we->ndim != 2 || pe->ndim != 2 || pe->dims[1] != H || pe->dtype != we->dtype ||
        (se && (se->ndim != 2 || se->dims[1] != H || se->dtype != we->dtype)))
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "EmbedLayerNormalization: embedding tables must be [*, hidden] of one type, got word %s, "
                        "position %s",
                        kn_tensor_desc(we, b0, sizeof b0), kn_tensor_desc(pe, b1, sizeof b1));
    const kn_tensor *vecs[2] = {gamma, beta};
    for (int i = 0; i < 2; i++)
        if (vecs[i] && (vecs[i]->ndim != 1 || vecs[i]->dims[0] != H))
            return kn_error(KN_ERR_INVALID_ARGUMENT, "EmbedLayerNormalization: gamma/beta %s must be [%lld]",
                            kn_tensor_desc(vecs[i], b0, sizeof b0), (long long)H);
    const kn_tensor *same[2] = {seg, mask};
    for (int i = 0; i < 2; i++)
        if (same[i] &&
            (same[i]->dtype != KN_I32 || same[i]->ndim != 2 || same[i]->dims[0] != B || same[i]->dims[1] != S))
            return kn_error(KN_ERR_INVALID_ARGUMENT, "EmbedLayerNormalization: %s %s must be int32 like input_ids %s",
                            i ? "mask" : "segment_ids", kn_tensor_desc(same[i], b0, sizeof b0),
                            kn_tensor_desc(ids, b1, sizeof b1));
    if (seg && !se)
        return kn_error(KN_ERR_INVALID_MODEL, "EmbedLayerNormalization: segment_ids given without segment_embedding");
    if (pos &&
        (pos->dtype != KN_I32 || pos->ndim != 2 || pos->dims[1] != S || (pos->dims[0] != B && pos->dims[0] != 1)))
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "EmbedLayerNormalization: position_ids %s must be int32 [batch or 1, %lld]",
                        kn_tensor_desc(pos, b0, sizeof b0), (long long)S);
    int64_t n = B * S;
    KN_TRY(eln_check_ids(node, ids->data, n, we->dims[0], "input_ids"));
    if (seg) KN_TRY(eln_check_ids(node, seg->data, n, se->dims[0], "segment_ids"));
    if (pos) KN_TRY(eln_check_ids(node, pos->data, kn_numel(pos), pe->dims[0], "position_ids"));
    else if (n > 0 && S > pe->dims[0])
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "EmbedLayerNormalization: sequence length %lld exceeds the %lld rows of position_embedding",
                        (long long)S, (long long)pe->dims[0]);
    if (se && !seg && n > 0 && se->dims[0] < 1)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "EmbedLayerNormalization: segment_embedding has no rows");

    /* mask_index: the count of ones in each mask row (ORT's CPU kernel counts only exact 1s), zeros
     * without a mask */
    kn_tensor *mi = n_out > 1 ? out[1] : NULL;
    if (mi) {
        int32_t *m = mi->data;
        for (int64_t b = 0; b < B; b++) {
            int32_t c = 0;
            if (mask)
                for (int64_t s = 0; s < S; s++) c += ((const int32_t *)mask->data)[b * S + s] == 1;
            m[b] = c;
        }
    }
    if (n == 0 || H == 0) return NULL;

    eln_job j = {0};
    j.ids = ids->data;
    j.seg = seg ? seg->data : NULL;
    j.pos = pos ? pos->data : NULL;
    j.pos_rows = pos && pos->dims[0] == 1 ? S : n;
    j.we = we->data;
    j.pe = pe->data;
    j.se = se ? se->data : NULL;
    j.dt = we->dtype;
    if (!kn_cpu_f32_stageable(j.dt) || j.dt == KN_F64) return kn_err_dtype(node, we);
    j.S = S;
    j.H = H;
    j.eps = KN_PARAMS(node, ms_embed_ln)->epsilon;
    j.ew_level = kn_ew_best_level();
    j.red_level = kn_red_simd_level();
    KN_TRY(kn_cpu_f32_view(ctx, node, gamma, &j.gamma));
    if (beta) KN_TRY(kn_cpu_f32_view(ctx, node, beta, &j.beta));
    kn_tensor *y = out[0], *so = n_out > 2 ? out[2] : NULL;
    KN_TRY(kn_cpu_f32_dest(ctx, y, &j.y));
    if (so) KN_TRY(kn_cpu_f32_dest(ctx, so, &j.sum));
    kn_parallel_for(ctx->pool, n, kn_red_grain(H), eln_task, &j);
    kn_cpu_f32_commit(y, j.y);
    if (so) kn_cpu_f32_commit(so, j.sum);
    return NULL;
}

/* ---- scaled dot-product attention shared by Attention and MultiHeadAttention ---- */

typedef struct ms_attn {
    int64_t B, N, S, T, H, Hv;
    const float *q;       /* [B,N,S,H] */
    const float *k;       /* [B,N,T,H] */
    const float *v;       /* [B,N,T,Hv] */
    const float *mask;    /* additive [B,S,T] or NULL */
    const float *abias;   /* additive [ab_B, ab_N, S, T] or NULL, broadcast over size-1 dims */
    int64_t ab_sb, ab_sn; /* its strides for b and n (0 when broadcast) */
    float scale;
    float *scores;    /* scratch: one [S,T] block per worker slot */
    int64_t per_slot; /* (batch, head) pairs each slot handles */
    float *qk;        /* [B,N,S,T] scores as softmax sees them (MHA's qk output), or NULL */
    float *y;         /* [B,S,N*Hv] */
} ms_attn;

/* Work is split into slots, each owning one score block, so scratch stays at threads * S * T
 * rather than B * N * S * T. */
static void ms_attn_task(void *vctx, int64_t slot_begin, int64_t slot_end) {
    const ms_attn *a = vctx;
    int64_t S = a->S, T = a->T, H = a->H, Hv = a->Hv;
    int64_t begin = slot_begin * a->per_slot, end = slot_end * a->per_slot;
    if (end > a->B * a->N) end = a->B * a->N;
    for (int64_t bn = begin; bn < end; bn++) {
        int64_t b = bn / a->N, h = bn % a->N;
        float *sc = a->scores + ((bn / a->per_slot) * S * T);
        kn_sgemm(NULL, false, true, S, T, H, a->scale, a->q + bn * S * H, H, a->k + bn * T * H, H, 0.0f, sc, T);
        for (int64_t i = 0; i < S; i++) {
            float *row = sc + i * T;
            if (a->mask) {
                const float *m = a->mask + (b * S + i) * T;
                for (int64_t t = 0; t < T; t++) row[t] += m[t];
            }
            if (a->abias) {
                const float *m = a->abias + b * a->ab_sb + h * a->ab_sn + i * T;
                for (int64_t t = 0; t < T; t++) row[t] += m[t];
            }
            if (a->qk) memcpy(a->qk + (bn * S + i) * T, row, (size_t)T * sizeof(float));
            float mx = row[0];
            for (int64_t t = 1; t < T; t++) mx = row[t] > mx ? row[t] : mx;
            float sum = 0.0f;
            for (int64_t t = 0; t < T; t++) {
                row[t] = expf(row[t] - mx);
                sum += row[t];
            }
            float r = 1.0f / sum;
            for (int64_t t = 0; t < T; t++) row[t] *= r;
        }
        kn_sgemm(NULL, false, false, S, Hv, T, 1.0f, sc, T, a->v + bn * T * Hv, Hv, 0.0f,
                 a->y + b * S * a->N * Hv + h * Hv, a->N * Hv);
    }
}

/* Builds the additive [B,S,T] mask from an int32/int64 mask tensor and the causal flag. Shapes:
 * [B] key end positions, [2B] end then start positions, [B,T] and [B,S,T] 0/1 masks. *out is
 * NULL when neither applies. P is the past length (query i sits at key position P+i). */
static kn_status *ms_build_mask(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *m, bool causal, int64_t B,
                                int64_t S, int64_t T, int64_t P, float filter, float **out) {
    char b0[KN_DESC_LEN];
    *out = NULL;
    if (!m && !causal) return NULL;
    if (B * S * T <= 0) return NULL;
    float *mk = kn_scratch_alloc(ctx, (size_t)(B * S * T) * sizeof(float));
    if (!mk) return KN_OOM((size_t)(B * S * T) * sizeof(float));
    for (int64_t i = 0; i < B * S * T; i++) mk[i] = 0.0f;
    if (m) {
        if (m->dtype != KN_I32 && m->dtype != KN_I64 && m->dtype != KN_BOOL) return kn_err_dtype(node, m);
        if (m->ndim == 1 && (m->dims[0] == B || m->dims[0] == 2 * B)) {
            bool has_start = m->dims[0] == 2 * B && B > 0;
            for (int64_t b = 0; b < B; b++) {
                int64_t e = kn_get_i64(m, b), s0 = has_start ? kn_get_i64(m, B + b) : 0;
                for (int64_t t = 0; t < T; t++) {
                    if (t < e && t >= s0) continue;
                    for (int64_t i = 0; i < S; i++) mk[(b * S + i) * T + t] = filter;
                }
            }
        } else if (m->ndim == 2 && m->dims[0] == B && m->dims[1] == T) {
            for (int64_t b = 0; b < B; b++)
                for (int64_t t = 0; t < T; t++)
                    if (kn_get_i64(m, b * T + t) <= 0)
                        for (int64_t i = 0; i < S; i++) mk[(b * S + i) * T + t] = filter;
        } else if (m->ndim == 3 && m->dims[0] == B && m->dims[1] == S && m->dims[2] == T) {
            for (int64_t i = 0; i < B * S * T; i++)
                if (kn_get_i64(m, i) <= 0) mk[i] = filter;
        } else {
            return kn_error(
                KN_ERR_UNSUPPORTED,
                "%s: mask %s not supported (expected [B], [2B], [B,T] or [B,S,T] with B=%lld S=%lld T=%lld)",
                node->op_type, kn_tensor_desc(m, b0, sizeof b0), (long long)B, (long long)S, (long long)T);
        }
    }
    if (causal)
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < S; i++)
                for (int64_t t = P + i + 1; t < T; t++) mk[(b * S + i) * T + t] += filter;
    *out = mk;
    return NULL;
}

/* Validates attention_bias [B|1, N|1, S, T] and fills its float view and broadcast strides. */
static kn_status *ms_attn_bias(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *ab, ms_attn *a) {
    char b0[KN_DESC_LEN];
    if (!ab) return NULL;
    if (ab->ndim != 4 || (ab->dims[0] != a->B && ab->dims[0] != 1) || (ab->dims[1] != a->N && ab->dims[1] != 1) ||
        ab->dims[2] != a->S || ab->dims[3] != a->T)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "%s: attention_bias %s must be [B|1, N|1, S, T] with B=%lld N=%lld S=%lld T=%lld",
                        node->op_type, kn_tensor_desc(ab, b0, sizeof b0), (long long)a->B, (long long)a->N,
                        (long long)a->S, (long long)a->T);
    KN_TRY(kn_cpu_f32_view(ctx, node, ab, &a->abias));
    a->ab_sn = ab->dims[1] == 1 ? 0 : a->S * a->T;
    a->ab_sb = ab->dims[0] == 1 ? 0 : ab->dims[1] * a->S * a->T;
    return NULL;
}

static kn_status *ms_attn_run(kn_exec_ctx *ctx, ms_attn *a) {
    int64_t n = a->B * a->N * a->S * a->T;
    if (a->B * a->N * a->S == 0 || a->Hv == 0) return NULL;
    if (a->T == 0) {
        /* no keys at all: an empty weighted sum, defined here as zeros */
        for (int64_t i = 0; i < a->B * a->S * a->N * a->Hv; i++) a->y[i] = 0.0f;
        return NULL;
    }
    if (n > KN_MAX_NUMEL)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "attention: score matrix of %lld elements is too large", (long long)n);
    int64_t bn = a->B * a->N, threads = ctx->pool ? kn_threadpool_size(ctx->pool) : 1;
    int64_t slots = bn < threads ? bn : threads;
    if (slots < 1) slots = 1;
    a->per_slot = (bn + slots - 1) / slots;
    slots = (bn + a->per_slot - 1) / a->per_slot;
    size_t sz = (size_t)(slots * a->S * a->T) * sizeof(float);
    a->scores = kn_scratch_alloc(ctx, sz);
    if (!a->scores) return KN_OOM(sz);
    kn_parallel_for(ctx->pool, slots, 1, ms_attn_task, a);
    return NULL;
}

/* Splits rows [B, L, N*D] (row stride ld, column offset col) into [B, N, P+L, D] after P past rows
 * taken from past ([B,N,P,D], may be NULL when P == 0). */
static void ms_to_heads(const float *src, int64_t ld, int64_t col, const float *past, int64_t B, int64_t N, int64_t L,
                        int64_t P, int64_t D, float *dst) {
    int64_t T = P + L;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < N; h++) {
            float *d = dst + (b * N + h) * T * D;
            if (P > 0) memcpy(d, past + (b * N + h) * P * D, (size_t)(P * D) * sizeof(float));
            for (int64_t l = 0; l < L; l++)
                memcpy(d + (P + l) * D, src + (b * L + l) * ld + col + h * D, (size_t)D * sizeof(float));
        }
}

static float ms_scale(const kn_node *node, int64_t H) {
    float s = KN_PARAMS(node, ms_attention)->scale;
    return s != 0.0f ? s : (float)(1.0 / sqrt((double)H));
}

/* What Attention and MultiHeadAttention set up alike once the heads are in place: the scale, the
 * additive key-padding/causal mask (mask_filter_value, unidirectional) and the attention bias. */
static kn_status *ms_attn_setup(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *mask, const kn_tensor *ab,
                                int64_t P, ms_attn *a) {
    a->scale = ms_scale(node, a->H);
    float filter = KN_PARAMS(node, ms_attention)->mask_filter_value;
    bool causal = KN_PARAMS(node, ms_attention)->unidirectional;
    float *mk = NULL;
    KN_TRY(ms_build_mask(ctx, node, mask, causal, a->B, a->S, a->T, P, filter, &mk));
    a->mask = mk;
    return ms_attn_bias(ctx, node, ab, a);
}

/* ---- Attention (fused QKV projection) ---- */

kn_status *kn_check_ms_attention(const kn_node *node, const kn_tensor *x, const kn_tensor *w, const kn_tensor *bias,
                                 kn_msatt_dims *d) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_params_ms_attention *p = KN_PARAMS(node, ms_attention);
    int64_t N = p->num_heads;
    if (!w || x->ndim != 3 || w->ndim != 2 || w->dims[0] != x->dims[2] || N <= 0)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "Attention: need input [B,S,D], weights [D, 3*hidden] and num_heads > 0, got %s and %s",
                        kn_tensor_desc(x, b0, sizeof b0), w ? kn_tensor_desc(w, b1, sizeof b1) : "none");
    int64_t Dtot = w->dims[1];
    const int64_t *qkv = p->qkv_hidden_sizes;
    int nq = p->n_qkv_hidden_sizes;
    int64_t hq, hv;
    if (nq > 0) {
        if (nq != 3 || qkv[0] != qkv[1] || qkv[0] <= 0 || qkv[2] <= 0 || qkv[0] + qkv[1] + qkv[2] != Dtot)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "Attention: qkv_hidden_sizes must be [q, q, v] summing to weights dim 1 of %s",
                            kn_tensor_desc(w, b1, sizeof b1));
        hq = qkv[0];
        hv = qkv[2];
    } else {
        if (Dtot % 3)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: weights %s dim 1 must be 3 * hidden",
                            kn_tensor_desc(w, b1, sizeof b1));
        hq = hv = Dtot / 3;
    }
    if (hq % N || hv % N)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: hidden sizes %lld/%lld not divisible by num_heads %lld",
                        (long long)hq, (long long)hv, (long long)N);
    if (bias && (bias->ndim != 1 || bias->dims[0] != Dtot))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: bias %s must be [%lld]",
                        kn_tensor_desc(bias, b1, sizeof b1), (long long)Dtot);
    *d = (kn_msatt_dims){
        .B = x->dims[0], .S = x->dims[1], .Din = x->dims[2], .Dtot = Dtot, .N = N, .H = hq / N, .Hv = hv / N};
    return NULL;
}

kn_status *kn_cpu_MsAttention(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                              kn_tensor *const *out, int n_out) {
    char b1[KN_DESC_LEN];
    const kn_tensor *x = in[0], *w = n_in > 1 ? in[1] : NULL, *bias = n_in > 2 ? in[2] : NULL;
    const kn_tensor *mask = n_in > 3 ? in[3] : NULL, *past = n_in > 4 ? in[4] : NULL;
    const kn_tensor *ab = n_in > 5 ? in[5] : NULL;
    kn_tensor *present = n_out > 1 ? out[1] : NULL;
    if (!w) return kn_error(KN_ERR_INVALID_MODEL, "Attention: weights input is required");
    if (n_in > 6 && in[6])
        return kn_error(KN_ERR_UNSUPPORTED, "Attention: past_sequence_length input is not supported");
    const kn_params_ms_attention *p = KN_PARAMS(node, ms_attention);
    if (p->do_rotary) return kn_error(KN_ERR_UNSUPPORTED, "Attention: do_rotary is not supported");
    if (p->past_present_share_buffer)
        return kn_error(KN_ERR_UNSUPPORTED, "Attention: past_present_share_buffer is not supported");
    kn_msatt_dims d;
    KN_TRY(kn_check_ms_attention(node, x, w, bias, &d));
    int64_t B = d.B, S = d.S, Din = d.Din, Dtot = d.Dtot, N = d.N, H = d.H, Hv = d.Hv, hq = N * H;
    int64_t P = 0;
    if (past) {
        if (past->ndim != 5 || past->dims[0] != 2 || past->dims[1] != B || past->dims[2] != N || past->dims[4] != H ||
            H != Hv)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "Attention: past %s must be [2, %lld, %lld, past, %lld] (equal q/v head sizes)",
                            kn_tensor_desc(past, b1, sizeof b1), (long long)B, (long long)N, (long long)H);
        P = past->dims[3];
    }
    if (present && H != Hv)
        return kn_error(KN_ERR_UNSUPPORTED, "Attention: present output needs equal q and v head sizes");
    int64_t T = P + S;

    const float *xf, *wf, *bf = NULL, *pf = NULL;
    KN_TRY(kn_cpu_f32_view(ctx, node, x, &xf));
    KN_TRY(kn_cpu_f32_view(ctx, node, w, &wf));
    if (bias) KN_TRY(kn_cpu_f32_view(ctx, node, bias, &bf));
    if (past) KN_TRY(kn_cpu_f32_view(ctx, node, past, &pf));

    int64_t rows = B * S;
    size_t need = (size_t)(rows * Dtot + B * N * (S * H + T * H + T * Hv)) + 4;
    float *buf = kn_scratch_alloc(ctx, need * sizeof(float));
    if (!buf) return KN_OOM(need * sizeof(float));
    float *proj = buf, *q = proj + rows * Dtot, *k = q + B * N * S * H, *v = k + B * N * T * H;
    /* the bias rides in as the initial C of the projection (beta = 1) */
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < Dtot; c++) proj[r * Dtot + c] = bf ? bf[c] : 0.0f;
    if (rows > 0 && Dtot > 0)
        kn_sgemm(ctx->pool, false, false, rows, Dtot, Din, 1.0f, xf, Din, wf, Dtot, 1.0f, proj, Dtot);
    ms_to_heads(proj, Dtot, 0, NULL, B, N, S, 0, H, q);
    ms_to_heads(proj, Dtot, hq, pf, B, N, S, P, H, k);
    ms_to_heads(proj, Dtot, 2 * hq, pf ? pf + B * N * P * H : NULL, B, N, S, P, Hv, v);

    ms_attn a = {.B = B, .N = N, .S = S, .T = T, .H = H, .Hv = Hv, .q = q, .k = k, .v = v};
    KN_TRY(ms_attn_setup(ctx, node, mask, ab, P, &a));
    KN_TRY(kn_cpu_f32_dest(ctx, out[0], &a.y));
    KN_TRY(ms_attn_run(ctx, &a));
    kn_cpu_f32_commit(out[0], a.y);
    if (present) {
        int64_t half = B * N * T * H;
        for (int64_t i = 0; i < half; i++) {
            kn_store_f32(present->data, present->dtype, i, k[i]);
            kn_store_f32(present->data, present->dtype, half + i, v[i]);
        }
    }
    return NULL;
}

/* ---- MultiHeadAttention (separate Q, K, V) ---- */

kn_status *kn_cpu_MsMultiHeadAttention(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                       kn_tensor *const *out, int n_out) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN], b2[KN_DESC_LEN];
#define MS_IN(i) (n_in > (i) ? in[i] : NULL)
    const kn_tensor *qt = in[0], *kt = MS_IN(1), *vt = MS_IN(2), *bias = MS_IN(3), *mask = MS_IN(4);
    const kn_tensor *ab = MS_IN(5), *pk = MS_IN(6), *pv = MS_IN(7);
    if (MS_IN(8) || MS_IN(9))
        return kn_error(KN_ERR_UNSUPPORTED,
                        "MultiHeadAttention: past_sequence_length / cache_indirection inputs are not supported");
#undef MS_IN
    if (!kt || !vt)
        return kn_error(KN_ERR_UNSUPPORTED, "MultiHeadAttention: packed QKV / packed KV layouts are not supported");
    int64_t N = KN_PARAMS(node, ms_attention)->num_heads;
    if (qt->ndim != 3 || N <= 0 || qt->dims[2] % N)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "MultiHeadAttention: query %s must be [B,S,D] with D divisible by num_heads %lld",
                        kn_tensor_desc(qt, b0, sizeof b0), (long long)N);
    int64_t B = qt->dims[0], S = qt->dims[1], D = qt->dims[2], H = D / N, L, Hv;
    bool bnsh = kt->ndim == 4;
    if (kt->ndim == 3 && vt->ndim == 3 && kt->dims[0] == B && vt->dims[0] == B && kt->dims[1] == vt->dims[1] &&
        kt->dims[2] == D && vt->dims[2] % N == 0) {
        L = kt->dims[1];
        Hv = vt->dims[2] / N;
    } else if (bnsh && vt->ndim == 4 && kt->dims[0] == B && vt->dims[0] == B && kt->dims[1] == N && vt->dims[1] == N &&
               kt->dims[2] == vt->dims[2] && kt->dims[3] == H) {
        L = kt->dims[2];
        Hv = vt->dims[3];
    } else {
        return kn_error(
            KN_ERR_INVALID_ARGUMENT,
            "MultiHeadAttention: key %s / value %s do not fit query %s (need [B,L,D]/[B,L,Dv] or [B,N,L,H]/[B,N,L,Hv])",
            kn_tensor_desc(kt, b1, sizeof b1), kn_tensor_desc(vt, b2, sizeof b2), kn_tensor_desc(qt, b0, sizeof b0));
    }
    int64_t Dv = N * Hv;
    if (bias && (bias->ndim != 1 || bias->dims[0] != 2 * D + Dv))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "MultiHeadAttention: bias %s must be [%lld]",
                        kn_tensor_desc(bias, b1, sizeof b1), (long long)(2 * D + Dv));
    if (bias && bnsh)
        return kn_error(KN_ERR_UNSUPPORTED,
                        "MultiHeadAttention: bias with key/value in [B,N,L,H] layout is not supported");
    if ((pk != NULL) != (pv != NULL))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "MultiHeadAttention: past_key and past_value go together");
    int64_t P = 0;
    if (pk) {
        if (bnsh)
            return kn_error(KN_ERR_UNSUPPORTED,
                            "MultiHeadAttention: past with key/value in [B,N,L,H] layout is not supported");
        if (pk->ndim != 4 || pv->ndim != 4 || pk->dims[0] != B || pk->dims[1] != N || pk->dims[3] != H ||
            pv->dims[0] != B || pv->dims[1] != N || pv->dims[2] != pk->dims[2] || pv->dims[3] != Hv)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "MultiHeadAttention: past_key %s / past_value %s must be [B,N,P,H] / [B,N,P,Hv]",
                            kn_tensor_desc(pk, b1, sizeof b1), kn_tensor_desc(pv, b2, sizeof b2));
        P = pk->dims[2];
    }
    int64_t T = P + L;

    const float *qf, *kf, *vf, *bf = NULL, *pkf = NULL, *pvf = NULL;
    KN_TRY(kn_cpu_f32_view(ctx, node, qt, &qf));
    KN_TRY(kn_cpu_f32_view(ctx, node, kt, &kf));
    KN_TRY(kn_cpu_f32_view(ctx, node, vt, &vf));
    if (bias) KN_TRY(kn_cpu_f32_view(ctx, node, bias, &bf));
    if (pk) {
        KN_TRY(kn_cpu_f32_view(ctx, node, pk, &pkf));
        KN_TRY(kn_cpu_f32_view(ctx, node, pv, &pvf));
    }
    size_t need = (size_t)(B * N * (S * H + T * H + T * Hv) + B * S * D + B * L * (D + Dv)) + 4;
    float *buf = kn_scratch_alloc(ctx, need * sizeof(float));
    if (!buf) return KN_OOM(need * sizeof(float));
    float *q = buf, *k = q + B * N * S * H, *v = k + B * N * T * H, *tmp = v + B * N * T * Hv;
    const float *qsrc = qf, *ksrc = kf, *vsrc = vf;
    if (bf) {
        float *qb = tmp, *kb = qb + B * S * D, *vb = kb + B * L * D;
        for (int64_t r = 0; r < B * S; r++)
            for (int64_t c = 0; c < D; c++) qb[r * D + c] = qf[r * D + c] + bf[c];
        for (int64_t r = 0; r < B * L; r++) {
            for (int64_t c = 0; c < D; c++) kb[r * D + c] = kf[r * D + c] + bf[D + c];
            for (int64_t c = 0; c < Dv; c++) vb[r * Dv + c] = vf[r * Dv + c] + bf[2 * D + c];
        }
        qsrc = qb;
        ksrc = kb;
        vsrc = vb;
    }
    ms_to_heads(qsrc, D, 0, NULL, B, N, S, 0, H, q);
    if (bnsh) {
        memcpy(k, kf, (size_t)(B * N * L * H) * sizeof(float));
        memcpy(v, vf, (size_t)(B * N * L * Hv) * sizeof(float));
    } else {
        ms_to_heads(ksrc, D, 0, pkf, B, N, L, P, H, k);
        ms_to_heads(vsrc, Dv, 0, pvf, B, N, L, P, Hv, v);
    }

    ms_attn a = {.B = B, .N = N, .S = S, .T = T, .H = H, .Hv = Hv, .q = q, .k = k, .v = v};
    KN_TRY(ms_attn_setup(ctx, node, mask, ab, P, &a));
    kn_tensor *oqk = n_out > 3 ? out[3] : NULL;
    if (oqk) KN_TRY(kn_cpu_f32_dest(ctx, oqk, &a.qk));
    KN_TRY(kn_cpu_f32_dest(ctx, out[0], &a.y));
    KN_TRY(ms_attn_run(ctx, &a));
    kn_cpu_f32_commit(out[0], a.y);
    if (oqk) kn_cpu_f32_commit(oqk, a.qk);
    kn_tensor *ok = n_out > 1 ? out[1] : NULL, *ov = n_out > 2 ? out[2] : NULL;
    if (ok)
        for (int64_t i = 0; i < B * N * T * H; i++) kn_store_f32(ok->data, ok->dtype, i, k[i]);
    if (ov)
        for (int64_t i = 0; i < B * N * T * Hv; i++) kn_store_f32(ov->data, ov->dtype, i, v[i]);
    return NULL;
}
