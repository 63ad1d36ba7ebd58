/* CPU kernels for the recurrent ops RNN, GRU, LSTM and com.microsoft DynamicQuantizeLSTM. All
 * share one driver: the input projections of every time step are one kn_sgemm, the recurrent
 * projection is one kn_sgemm per step, and a per-op cell function combines the gates. Computation
 * is in float32 whatever the tensor dtype (float16 / double tensors are converted on the way in
 * and out). DynamicQuantizeLSTM swaps the two products for integer ones on 8-bit weights, each
 * operand quantised on the fly as ONNX Runtime does, so that its rounding is reproduced. */
#include "graph/ops.h"
#include "kernels/cpu/elementwise_simd.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/rnn.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool rnn_dtype_ok(kn_dtype t) { return t == KN_F32 || t == KN_F64 || t == KN_F16 || t == KN_BF16; }

void kn_rnn_prepared_free(void *v) {
    kn_rnn_packed *p = v;
    if (!p) return;
    for (int d = 0; d < 2; d++) {
        kn_sgemm_packed_release(&p->w[d]);
        kn_sgemm_packed_release(&p->r[d]);
    }
    free(p);
}

kn_status *kn_rnn_prepare(const kn_tensor *W, const kn_tensor *R, kn_rnn_packed **out) {
    *out = NULL;
    if (!W || !R || W->dtype != KN_F32 || R->dtype != KN_F32 || W->ndim != 3 || R->ndim != 3 || !W->data || !R->data)
        return NULL;
    int64_t dirs = W->dims[0], GH = W->dims[1], I = W->dims[2], H = R->dims[2];
    if (dirs < 1 || dirs > 2 || R->dims[0] != dirs || R->dims[1] != GH || GH <= 0 || I <= 0 || H <= 0) return NULL;
    kn_rnn_packed *p = calloc(1, sizeof *p);
    if (!p) return KN_OOM(sizeof *p);
    p->dirs = (int)dirs;
    p->w_src = W->data;
    p->r_src = R->data;
    for (int64_t d = 0; d < dirs; d++)
        if (!kn_sgemm_pack_b(true, I, GH, (const float *)W->data + d * GH * I, I, &p->w[d]) ||
            !kn_sgemm_pack_b(true, H, GH, (const float *)R->data + d * GH * H, H, &p->r[d])) {
            kn_rnn_prepared_free(p);
            return KN_OOM((size_t)(GH * (I + H)) * sizeof(float));
        }
    *out = p;
    return NULL;
}


/* ---- activation functions named by the activations attribute ---- */

typedef kn_rnn_act rnn_act; /* kinds and parameters decoded at load (kn_params_rnn) */

static float rnn_apply(const rnn_act *a, float x) {
    switch (a->kind) {
    case KN_RNN_ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case KN_RNN_ACT_TANH: return tanhf(x);
    case KN_RNN_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case KN_RNN_ACT_AFFINE: return a->alpha * x + a->beta;
    case KN_RNN_ACT_LEAKYRELU: return x >= 0.0f ? x : a->alpha * x;
    case KN_RNN_ACT_THRESHOLDEDRELU: return x > a->alpha ? x : 0.0f;
    case KN_RNN_ACT_SCALEDTANH: return a->alpha * tanhf(a->beta * x);
    case KN_RNN_ACT_HARDSIGMOID: {
        float v = a->alpha * x + a->beta;
        return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
    case KN_RNN_ACT_ELU: return x >= 0.0f ? x : a->alpha * (expf(x) - 1.0f);
    case KN_RNN_ACT_SOFTSIGN: return x / (1.0f + fabsf(x));
    case KN_RNN_ACT_SOFTPLUS: return log1pf(expf(x));
    }
    return x;
}

/* ---- the shared driver ---- */

typedef enum { CELL_RNN = 1, CELL_GRU = 3, CELL_LSTM = 4 } rnn_cell;

/* DynamicQuantizeLSTM's weights: W [dirs, input, 4H] and R [dirs, H, 4H] (K x N, unlike LSTM's
 * N x K) in int8 or uint8, with scales and zero points per direction ([dirs]) or per column
 * ([dirs, 4H]). */
typedef struct rnn_quant {
    const kn_tensor *W, *R, *ws, *wz, *rs, *rz;
} rnn_quant;

/* Operand buffers of the quantised products. */
typedef struct rnn_qbuf {
    int16_t *bw, *br, *bpw, *bpr, *a16; /* weights less zero points, and their packed forms */
    uint8_t *qa;
    int32_t *acc;
    float *wsc, *rsc;
} rnn_qbuf;

/* C (M x N) = A (M x K, float) * B16 (K x N, weights less their zero points) * scales: A is
 * quantised to uint8 over all its M x K values (one scale, one zero point per call, as ONNX
 * Runtime's quantised GEMM does), the product taken in int32, and each column rescaled by
 * a_scale * bscale[n]. */
static void rnn_qproj(kn_threadpool *pool, const rnn_qbuf *q, const float *A, int64_t M, int64_t K, const int16_t *b16,
                      int16_t *bp, bool bp_ready, const float *bscale, int64_t N, float *C) {
    float as;
    uint8_t az;
    kn_dynamic_quantize_u8(A, M * K, q->qa, &as, &az);
    for (int64_t i = 0; i < M * K; i++) q->a16[i] = (int16_t)((int)q->qa[i] - (int)az);
    kn_igemm_i16(pool, M, N, K, q->a16, b16, bp, bp_ready, q->acc);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) C[m * N + n] = (float)q->acc[m * N + n] * (as * bscale[n]);
}

static int64_t rnn_q_int(const kn_tensor *t, int64_t i) {
    return t->dtype == KN_I8 ? (int64_t)((const int8_t *)t->data)[i] : (int64_t)((const uint8_t *)t->data)[i];
}

/* Direction d's weights (K x N) less their zero points, and its column scales. */
static void rnn_q_load(const kn_tensor *w, const kn_tensor *sc, const kn_tensor *zp, int d, int dirs, int64_t K,
                       int64_t N, int16_t *b16, float *scale) {
    bool per_col = kn_numel(sc) == dirs * N;
    for (int64_t n = 0; n < N; n++) scale[n] = kn_load_f32(sc->data, sc->dtype, per_col ? d * N + n : d);
    for (int64_t k = 0; k < K; k++)
        for (int64_t n = 0; n < N; n++)
            b16[k * N + n] = (int16_t)(rnn_q_int(w, (d * K + k) * N + n) - rnn_q_int(zp, per_col ? d * N + n : d));
}

static kn_status *rnn_q_check(const kn_node *node, const rnn_quant *q, int dirs, int64_t I, int64_t H) {
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    int64_t GH = 4 * H;
    const kn_tensor *ws[2] = {q->W, q->R}, *sc[2] = {q->ws, q->rs}, *zp[2] = {q->wz, q->rz};
    for (int i = 0; i < 2; i++) {
        const kn_tensor *w = ws[i];
        if (w->dtype != KN_I8 && w->dtype != KN_U8) return kn_err_dtype(node, w);
        if (w->ndim != 3 || w->dims[0] != dirs || w->dims[1] != (i ? H : I) || w->dims[2] != GH)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s %s must be [%d, %lld, %lld]", node->op_type, i ? "R" : "W",
                            kn_tensor_desc(w, b1, sizeof b1), dirs, (long long)(i ? H : I), (long long)GH);
        if (!sc[i] || !zp[i])
            return kn_error(KN_ERR_INVALID_MODEL, "%s: %s_scale and %s_zero_point are required", node->op_type,
                            i ? "R" : "W", i ? "R" : "W");
        int64_t ns = kn_numel(sc[i]);
        if ((ns != dirs && ns != dirs * GH) || kn_numel(zp[i]) != ns || zp[i]->dtype != w->dtype ||
            (sc[i]->dtype != KN_F32 && sc[i]->dtype != KN_F16 && sc[i]->dtype != KN_F64))
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "%s: %s scale %s and zero point %s must be [%d] or [%d, %lld], the zero point of %s's type",
                            node->op_type, i ? "R" : "W", kn_tensor_desc(sc[i], b1, sizeof b1),
                            kn_tensor_desc(zp[i], b2, sizeof b2), dirs, dirs, (long long)GH, i ? "R" : "W");
    }
    return NULL;
}

/* One row of the LSTM cell with the default activations (sigmoid, tanh, tanh), no clip and no
 * coupled input-forget gate: the gate sums as the scalar cell forms them, then each nonlinearity
 * over a whole gate at once with the elementwise kernels' vector Sigmoid / Tanh. ONNX gate order
 * i, o, f, c; g is 5H of scratch. */
static void lstm_row_vec(int level, int64_t H, const float *x, const float *hrb, const float *wb, const float *rb,
                         const float *peep, float *cb, float *hb, float *g) {
    for (int64_t k = 0; k < 4 * H; k++) g[k] = x[k] + hrb[k] + wb[k] + rb[k];
    for (int64_t k = 0; k < H; k++) {
        g[k] += peep[k] * cb[k];
        g[2 * H + k] += peep[2 * H + k] * cb[k];
    }
    kn_ew_unary_f32_level(level, KN_EW_SIGMOID, g, g, H);
    kn_ew_unary_f32_level(level, KN_EW_SIGMOID, g + 2 * H, g + 2 * H, H);
    kn_ew_unary_f32_level(level, KN_EW_TANH, g + 3 * H, g + 3 * H, H);
    for (int64_t k = 0; k < H; k++) {
        float cn = g[2 * H + k] * cb[k] + g[k] * g[3 * H + k];
        cb[k] = cn;
        g[H + k] += peep[H + k] * cn;
    }
    kn_ew_unary_f32_level(level, KN_EW_SIGMOID, g + H, g + H, H);
    kn_ew_unary_f32_level(level, KN_EW_TANH, cb, g + 4 * H, H);
    for (int64_t k = 0; k < H; k++) hb[k] = g[H + k] * g[4 * H + k];
}

/* lstm_row_vec for a row whose gate pre-activations g (4H, overwritten) already hold x + h R + the
 * biases (the recurrent product accumulated onto the input projection): no sums to form, the
 * three sigmoid gates in one call when there are no peepholes. tc is H of scratch. */
static void lstm_row_fused(int level, int64_t H, float *restrict g, const float *restrict peep, bool has_peep,
                           float *restrict cb, float *restrict hb, float *restrict tc) {
    if (has_peep) {
        for (int64_t k = 0; k < H; k++) {
            g[k] += peep[k] * cb[k];
            g[2 * H + k] += peep[2 * H + k] * cb[k];
        }
        kn_ew_unary_f32_level(level, KN_EW_SIGMOID, g, g, H);
        kn_ew_unary_f32_level(level, KN_EW_SIGMOID, g + 2 * H, g + 2 * H, H);
    } else {
        kn_ew_unary_f32_level(level, KN_EW_SIGMOID, g, g, 3 * H);
    }
    kn_ew_unary_f32_level(level, KN_EW_TANH, g + 3 * H, g + 3 * H, H);
    for (int64_t k = 0; k < H; k++) cb[k] = g[2 * H + k] * cb[k] + g[k] * g[3 * H + k];
    if (has_peep) {
        for (int64_t k = 0; k < H; k++) g[H + k] += peep[H + k] * cb[k];
        kn_ew_unary_f32_level(level, KN_EW_SIGMOID, g + H, g + H, H);
    }
    kn_ew_unary_f32_level(level, KN_EW_TANH, cb, tc, H);
    for (int64_t k = 0; k < H; k++) hb[k] = g[H + k] * tc[k];
}

/* The fused LSTM with its batch rows split among threads: rows are independent, so each task
 * runs the whole sequence for its rows (bias, input and recurrent products on those rows, cells)
 * with no synchronisation per step, and the cells run in parallel too. */
typedef struct lstm_rows_job {
    int64_t S, Bn, I, H, GH, rows;
    bool rev, has_peep;
    int level, d, dirs, layout;
    const float *xs, *bsum, *peep, *wd, *rd;
    const kn_sgemm_packed *pw, *pr; /* NULL: wd / rd unpacked */
    float *xw, *h, *c, *tcs;
    kn_tensor *Y;
} lstm_rows_job;

static void lstm_rows_task(void *ctx, int64_t begin, int64_t end) {
    const lstm_rows_job *j = ctx;
    int64_t H = j->H, GH = j->GH, Bn = j->Bn;
    for (int64_t ch = begin; ch < end; ch++) {
        int64_t b0 = ch * j->rows, nb = Bn - b0 < j->rows ? Bn - b0 : j->rows;
        float *tc = j->tcs + ch * H, *h = j->h + b0 * H, *c = j->c + b0 * H;
        for (int64_t step = 0; step < j->S && nb > 0; step++) {
            int64_t t = j->rev ? j->S - 1 - step : step;
            float *xt = j->xw + (t * Bn + b0) * GH;
            for (int64_t r = 0; r < nb; r++) memcpy(xt + r * GH, j->bsum, sizeof(float) * (size_t)GH);
            const float *xr = j->xs + (t * Bn + b0) * j->I;
            if (j->I > 0 && j->pw) kn_sgemm_packed_run(NULL, nb, 1.0f, xr, j->I, j->pw, 1.0f, xt, GH);
            else if (j->I > 0) kn_sgemm(NULL, false, true, nb, GH, j->I, 1.0f, xr, j->I, j->wd, j->I, 1.0f, xt, GH);
            if (j->pr) kn_sgemm_packed_run(NULL, nb, 1.0f, h, H, j->pr, 1.0f, xt, GH);
            else kn_sgemm(NULL, false, true, nb, GH, H, 1.0f, h, H, j->rd, H, 1.0f, xt, GH);
            for (int64_t r = 0; r < nb; r++)
                lstm_row_fused(j->level, H, xt + r * GH, j->peep, j->has_peep, c + r * H, h + r * H, tc);
            if (j->Y)
                for (int64_t r = 0; r < nb; r++)
                    for (int64_t k = 0; k < H; k++) {
                        int64_t b = b0 + r;
                        int64_t yi = j->layout ? ((b * j->S + t) * j->dirs + j->d) * H + k
                                               : ((t * j->dirs + j->d) * Bn + b) * H + k;
                        kn_store_f32(j->Y->data, j->Y->dtype, yi, h[r * H + k]);
                    }
        }
    }
}

/* rows per task of the row-parallel LSTM at least (a full register tile of the GEMM) */
#define LSTM_MIN_ROWS 8

static inline float rnn_clip(float x, float clip) {
    return clip > 0.0f ? (x < -clip ? -clip : x > clip ? clip : x) : x;
}

static kn_status *rnn_run(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                          kn_tensor *const *out, int n_out, rnn_cell cell, const rnn_quant *q) {
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    int G = (int)cell;
    const kn_tensor *X = in[0], *W = in[1], *R = in[2];
    const kn_tensor *Bt = n_in > 3 ? in[3] : NULL, *SL = n_in > 4 ? in[4] : NULL, *H0 = n_in > 5 ? in[5] : NULL;
    const kn_tensor *C0 = cell == CELL_LSTM && n_in > 6 ? in[6] : NULL,
                    *P = cell == CELL_LSTM && n_in > 7 ? in[7] : NULL;
    for (int i = 0; i < (q ? 1 : 3); i++)
        if (!rnn_dtype_ok(in[i]->dtype)) return kn_err_dtype(node, in[i]);
    if (X->ndim != 3 || W->ndim != 3 || R->ndim != 3)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: X %s and W %s must be 3-D", node->op_type,
                        kn_tensor_desc(X, b1, sizeof b1), kn_tensor_desc(W, b2, sizeof b2));
    const kn_params_rnn *rp = KN_PARAMS(node, rnn);
    int layout = (int)rp->layout;
    int dirs = rp->direction == KN_RNN_BIDIRECTIONAL ? 2 : 1;
    bool reverse_only = rp->direction == KN_RNN_REVERSE;
    int64_t S = layout ? X->dims[1] : X->dims[0], Bn = layout ? X->dims[0] : X->dims[1], I = X->dims[2];
    int64_t H = rp->has_hidden_size ? rp->hidden_size : R->dims[q ? 1 : 2];
    int64_t GH = G * H;
    if (q) {
        if (H <= 0) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: hidden_size must be > 0", node->op_type);
        KN_TRY(rnn_q_check(node, q, dirs, I, H));
    } else if (H <= 0 || W->dims[0] != dirs || W->dims[1] != GH || W->dims[2] != I || R->dims[0] != dirs ||
               R->dims[1] != GH || R->dims[2] != H)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "%s: W %s / R %s do not match %d direction(s), hidden_size %lld, input %s", node->op_type,
                        kn_tensor_desc(W, b1, sizeof b1), kn_tensor_desc(R, b2, sizeof b2), dirs, (long long)H,
                        kn_tensor_desc(X, b1, sizeof b1));
    if (Bt && (Bt->ndim != 2 || Bt->dims[0] != dirs || Bt->dims[1] != 2 * GH))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: B %s must be [%d, %lld]", node->op_type,
                        kn_tensor_desc(Bt, b1, sizeof b1), dirs, (long long)(2 * GH));
    if (SL && (SL->ndim != 1 || SL->dims[0] != Bn))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: sequence_lens %s must be [%lld]", node->op_type,
                        kn_tensor_desc(SL, b1, sizeof b1), (long long)Bn);
    const kn_tensor *states[2] = {H0, C0};
    for (int k = 0; k < 2; k++) {
        const kn_tensor *s = states[k];
        if (!s) continue;
        bool ok = s->ndim == 3 &&
            (layout ? (s->dims[0] == Bn && s->dims[1] == dirs) : (s->dims[0] == dirs && s->dims[1] == Bn)) &&
            s->dims[2] == H;
        if (!ok)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: initial state %s has the wrong shape", node->op_type,
                            kn_tensor_desc(s, b1, sizeof b1));
    }
    if (P && (P->ndim != 2 || P->dims[0] != dirs || P->dims[1] != 3 * H))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "LSTM: P %s must be [%d, %lld]", kn_tensor_desc(P, b1, sizeof b1),
                        dirs, (long long)(3 * H));
    float clip = rp->clip;
    bool lbr = rp->linear_before_reset;
    bool input_forget = rp->input_forget;
    int n_act = cell == CELL_RNN ? 1 : cell == CELL_GRU ? 2 : 3;
    const rnn_act *acts = rp->acts; /* n_act per direction */

    int64_t *lens = kn_scratch_alloc(ctx, sizeof(int64_t) * (size_t)(Bn + 1));
    float *xf = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(S * Bn * I + 1));
    float *w = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(GH * I + 1));
    float *r = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(GH * H + 1));
    float *xw = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(S * Bn * GH + 1));
    float *hr = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(Bn * GH + 1));
    float *h = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(Bn * H + 1));
    float *c = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(Bn * H + 1));
    float *tmp = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(2 * Bn * H + 1));
    int64_t n_threads = ctx->pool ? kn_threadpool_size(ctx->pool) : 1;
    float *gbuf = cell == CELL_LSTM ? kn_scratch_alloc(ctx, sizeof(float) * (size_t)((5 + n_threads) * H + 1)) : NULL;
    int ew_level = kn_ew_best_level();
    float *bias = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(2 * GH + 3 * H + 1));
    if (!lens || !xf || !w || !r || !xw || !hr || !h || !c || !tmp || !bias)
        return KN_OOM(sizeof(float) * (size_t)(S * Bn * (I + GH)));
    rnn_qbuf qb = {0};
    if (q) {
        int64_t amax = S * Bn * I > Bn * H ? S * Bn * I : Bn * H;
        qb.bw = kn_scratch_alloc(ctx, sizeof(int16_t) * (size_t)(I * GH + 1));
        qb.br = kn_scratch_alloc(ctx, sizeof(int16_t) * (size_t)(H * GH + 1));
        qb.bpw = kn_scratch_alloc(ctx, sizeof(int16_t) * (size_t)((I + 1) * GH + 1));
        qb.bpr = kn_scratch_alloc(ctx, sizeof(int16_t) * (size_t)((H + 1) * GH + 1));
        qb.a16 = kn_scratch_alloc(ctx, sizeof(int16_t) * (size_t)(amax + 1));
        qb.qa = kn_scratch_alloc(ctx, (size_t)(amax + 1));
        qb.acc = kn_scratch_alloc(ctx, sizeof(int32_t) * (size_t)((S * Bn > Bn ? S * Bn : Bn) * GH + 1));
        qb.wsc = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(2 * GH + 1));
        if (!qb.bw || !qb.br || !qb.bpw || !qb.bpr || !qb.a16 || !qb.qa || !qb.acc || !qb.wsc)
            return KN_OOM(sizeof(int32_t) * (size_t)(S * Bn * GH));
        qb.rsc = qb.wsc + GH;
    }
    float *peep = bias + 2 * GH;
    /* W and R packed at load (the CPU backend's hook), when they are the ones given here */
    const kn_rnn_packed *pk = q ? NULL : node->prepared;
    if (pk &&
        (pk->w_src != W->data || pk->r_src != R->data || pk->dirs != dirs || pk->w[0].K != I || pk->w[0].N != GH ||
         pk->r[0].K != H || pk->r[0].N != GH))
        pk = NULL;
    int64_t maxlen = 0;
    for (int64_t b = 0; b < Bn; b++) {
        lens[b] = SL ? kn_get_i64(SL, b) : S;
        if (lens[b] > maxlen) maxlen = lens[b];
        if (lens[b] < 0 || lens[b] > S)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: sequence length %lld outside [0, %lld]", node->op_type,
                            (long long)lens[b], (long long)S);
    }
    /* float32 operands in the default layout are read where they are; the rest converted once */
    const float *xs = xf;
    if (X->dtype == KN_F32 && !layout) xs = X->data;
    else
        for (int64_t t = 0; t < S; t++)
            for (int64_t b = 0; b < Bn; b++)
                for (int64_t i = 0; i < I; i++)
                    xf[(t * Bn + b) * I + i] =
                        kn_load_f32(X->data, X->dtype, layout ? (b * S + t) * I + i : (t * Bn + b) * I + i);
    kn_tensor *Y = n_out > 0 ? out[0] : NULL, *Yh = n_out > 1 ? out[1] : NULL,
              *Yc = cell == CELL_LSTM && n_out > 2 ? out[2] : NULL;
    if (Y && !Y->data) Y = NULL;
    if (Yh && !Yh->data) Yh = NULL;
    if (Yc && !Yc->data) Yc = NULL;

    for (int d = 0; d < dirs; d++) {
        bool rev = reverse_only || d == 1;
        const rnn_act *fa = &acts[d * n_act], *ga = &acts[d * n_act + (n_act > 1 ? 1 : 0)],
                      *ha = &acts[d * n_act + (n_act > 2 ? 2 : 0)];
        bool vec_lstm = cell == CELL_LSTM && !q && !input_forget && !(clip > 0.0f) && gbuf &&
            fa->kind == KN_RNN_ACT_SIGMOID && ga->kind == KN_RNN_ACT_TANH && ha->kind == KN_RNN_ACT_TANH;
        const float *wd = w, *rd = r;
        if (q) {
            rnn_q_load(q->W, q->ws, q->wz, d, dirs, I, GH, qb.bw, qb.wsc);
            rnn_q_load(q->R, q->rs, q->rz, d, dirs, H, GH, qb.br, qb.rsc);
            kn_igemm_pack_b16(H, GH, qb.br, qb.bpr); /* once per direction: every step reuses it */
        } else {
            if (W->dtype == KN_F32) wd = (const float *)W->data + d * GH * I;
            else
                for (int64_t i = 0; i < GH * I; i++) w[i] = kn_load_f32(W->data, W->dtype, d * GH * I + i);
            if (R->dtype == KN_F32) rd = (const float *)R->data + d * GH * H;
            else
                for (int64_t i = 0; i < GH * H; i++) r[i] = kn_load_f32(R->data, R->dtype, d * GH * H + i);
        }
        for (int64_t i = 0; i < 2 * GH; i++) bias[i] = Bt ? kn_load_f32(Bt->data, Bt->dtype, d * 2 * GH + i) : 0.0f;
        for (int64_t i = 0; i < 3 * H; i++) peep[i] = P ? kn_load_f32(P->data, P->dtype, d * 3 * H + i) : 0.0f;
        const float *wb = bias, *rb = bias + GH;
        /* Every sequence full length: the rows of a step are one time step's, contiguous in xw,
         * so the LSTM's recurrent product accumulates onto them (beta 1) and the cell reads
         * finished pre-activations (the biases added to xw once) instead of summing four terms */
        bool fused = vec_lstm && maxlen == S;
        for (int64_t b = 0; fused && b < Bn; b++) fused = lens[b] == S;
        bool has_peep = false;
        for (int64_t i = 0; i < 3 * H; i++) has_peep |= peep[i] != 0.0f;
        for (int k = 0; k < 2; k++) { /* the initial states; float32 ones in the default layout are one block */
            const kn_tensor *s0 = states[k];
            float *dst = k ? c : h;
            if (s0 && s0->dtype == KN_F32 && !layout)
                memcpy(dst, (const float *)s0->data + d * Bn * H, sizeof(float) * (size_t)(Bn * H));
            else
                for (int64_t b = 0; b < Bn; b++)
                    for (int64_t j = 0; j < H; j++) {
                        int64_t si = layout ? (b * dirs + d) * H + j : (d * Bn + b) * H + j;
                        dst[b * H + j] = s0 ? kn_load_f32(s0->data, s0->dtype, si) : 0.0f;
                    }
        }
        if (fused)
            for (int64_t k = 0; k < GH; k++) hr[k] = wb[k] + rb[k];
        /* with enough full-length rows, each thread runs the whole sequence for its share of them */
        int64_t chunks = fused ? (Bn / LSTM_MIN_ROWS < n_threads ? Bn / LSTM_MIN_ROWS : n_threads) : 0;
        bool rows_parallel = chunks >= 2;
        if (rows_parallel) {
            lstm_rows_job job = {.S = S, .Bn = Bn, .I = I, .H = H, .GH = GH, .rows = (Bn + chunks - 1) / chunks};
            job.rev = rev;
            job.has_peep = has_peep;
            job.level = ew_level;
            job.d = d;
            job.dirs = dirs;
            job.layout = layout;
            job.xs = xs;
            job.bsum = hr;
            job.peep = peep;
            job.wd = wd;
            job.rd = rd;
            job.pw = pk ? &pk->w[d] : NULL;
            job.pr = pk ? &pk->r[d] : NULL;
            job.xw = xw;
            job.h = h;
            job.c = c;
            job.tcs = gbuf + 5 * H;
            job.Y = Y;
            kn_parallel_for(ctx->pool, chunks, 1, lstm_rows_task, &job);
        } else {
            if (fused) /* the rows start as the summed biases; the input product accumulates onto them */
                for (int64_t row = 0; row < S * Bn; row++) memcpy(xw + row * GH, hr, sizeof(float) * (size_t)GH);
            else if (q || I <= 0) memset(xw, 0, sizeof(float) * (size_t)(S * Bn * GH));
            float xbeta = fused ? 1.0f : 0.0f;
            /* the quantised input product covers only the steps some sequence reaches, as its
             * quantisation range does in ONNX Runtime */
            if (q && maxlen * Bn > 0 && I > 0)
                rnn_qproj(ctx->pool, &qb, xs, maxlen * Bn, I, qb.bw, qb.bpw, false, qb.wsc, GH, xw);
            else if (!q && pk && S * Bn > 0 && I > 0)
                kn_sgemm_packed_run(ctx->pool, S * Bn, 1.0f, xs, I, &pk->w[d], xbeta, xw, GH);
            else if (!q && S * Bn > 0 && I > 0)
                kn_sgemm(ctx->pool, false, true, S * Bn, GH, I, 1.0f, xs, I, wd, I, xbeta, xw, GH);
        }
        if (Y) /* steps past a sequence's end are zero */
            for (int64_t b = 0; b < Bn; b++)
                for (int64_t t = lens[b]; t < S; t++)
                    for (int64_t k = 0; k < H; k++)
                        kn_store_f32(Y->data, Y->dtype,
                                     layout ? ((b * S + t) * dirs + d) * H + k : ((t * dirs + d) * Bn + b) * H + k,
                                     0.0f);
        /* Step `step` of sequence b is time step `step` forwards and lens[b] - 1 - step in reverse:
         * each sequence is reversed within its own length. */
        for (int64_t step = 0; step < (rows_parallel ? 0 : maxlen); step++) {
            if (q) {
                /* ONNX Runtime's recurrent operand is the previous step's output rows, zero for
                 * sequences that have ended when the Y output is written (their frozen state
                 * otherwise); the rows' values set the quantisation range, so they are the same here */
                const float *ha = h;
                if (Y && step > 0) {
                    float *hz = tmp;
                    for (int64_t b = 0; b < Bn; b++)
                        for (int64_t k = 0; k < H; k++) hz[b * H + k] = step - 1 < lens[b] ? h[b * H + k] : 0.0f;
                    ha = hz;
                }
                rnn_qproj(ctx->pool, &qb, ha, Bn, H, qb.br, qb.bpr, true, qb.rsc, GH, hr);
            } else if (fused) {
                float *xt = xw + (rev ? S - 1 - step : step) * Bn * GH;
                if (pk) kn_sgemm_packed_run(ctx->pool, Bn, 1.0f, h, H, &pk->r[d], 1.0f, xt, GH);
                else kn_sgemm(ctx->pool, false, true, Bn, GH, H, 1.0f, h, H, rd, H, 1.0f, xt, GH);
                for (int64_t b = 0; b < Bn; b++)
                    lstm_row_fused(ew_level, H, xt + b * GH, peep, has_peep, c + b * H, h + b * H, gbuf);
            } else if (pk) {
                kn_sgemm_packed_run(ctx->pool, Bn, 1.0f, h, H, &pk->r[d], 0.0f, hr, GH);
            } else {
                kn_sgemm(ctx->pool, false, true, Bn, GH, H, 1.0f, h, H, rd, H, 0.0f, hr, GH);
            }
            if (cell == CELL_GRU && !lbr) {
                /* the candidate gate needs (r ⊙ h)·Rh, so r is computed first for all rows */
                for (int64_t b = 0; b < Bn; b++) {
                    if (step >= lens[b]) continue;
                    int64_t t = rev ? lens[b] - 1 - step : step;
                    for (int64_t k = 0; k < H; k++) {
                        const float *x = xw + (t * Bn + b) * GH;
                        float rg = rnn_apply(fa, rnn_clip(x[H + k] + hr[b * GH + H + k] + wb[H + k] + rb[H + k], clip));
                        tmp[b * H + k] = rg * h[b * H + k];
                    }
                }
                kn_sgemm(ctx->pool, false, true, Bn, H, H, 1.0f, tmp, H, rd + 2 * H * H, H, 0.0f, tmp + Bn * H, H);
            }
            for (int64_t b = 0; b < Bn && !fused; b++) {
                if (step >= lens[b]) continue;
                int64_t t = rev ? lens[b] - 1 - step : step;
                const float *x = xw + (t * Bn + b) * GH, *hrb = hr + b * GH;
                float *hb = h + b * H, *cb = c + b * H;
                if (vec_lstm) {
                    lstm_row_vec(ew_level, H, x, hrb, wb, rb, peep, cb, hb, gbuf);
                    continue;
                }
                for (int64_t k = 0; k < H; k++) {
                    if (cell == CELL_RNN) {
                        hb[k] = rnn_apply(fa, rnn_clip(x[k] + hrb[k] + wb[k] + rb[k], clip));
                    } else if (cell == CELL_GRU) {
                        float z = rnn_apply(fa, rnn_clip(x[k] + hrb[k] + wb[k] + rb[k], clip));
                        float hh;
                        if (lbr) {
                            float rg = rnn_apply(fa, rnn_clip(x[H + k] + hrb[H + k] + wb[H + k] + rb[H + k], clip));
                            hh = rnn_apply(
                                ga,
                                rnn_clip(x[2 * H + k] + rg * (hrb[2 * H + k] + rb[2 * H + k]) + wb[2 * H + k], clip));
                        } else {
                            hh = rnn_apply(
                                ga,
                                rnn_clip(x[2 * H + k] + tmp[Bn * H + b * H + k] + rb[2 * H + k] + wb[2 * H + k], clip));
                        }
                        tmp[b * H + k] = (1.0f - z) * hh + z * hb[k]; /* written back after the row */
                    } else {
                        float cp = cb[k];
                        float ig = rnn_apply(fa, rnn_clip(x[k] + hrb[k] + wb[k] + rb[k] + peep[k] * cp, clip));
                        float fg = input_forget ? 1.0f - ig
                                                : rnn_apply(fa,
                                                            rnn_clip(x[2 * H + k] + hrb[2 * H + k] + wb[2 * H + k] +
                                                                         rb[2 * H + k] + peep[2 * H + k] * cp,
                                                                     clip));
                        float cg = rnn_apply(
                            ga, rnn_clip(x[3 * H + k] + hrb[3 * H + k] + wb[3 * H + k] + rb[3 * H + k], clip));
                        float cn = fg * cp + ig * cg;
                        float og = rnn_apply(
                            fa, rnn_clip(x[H + k] + hrb[H + k] + wb[H + k] + rb[H + k] + peep[H + k] * cn, clip));
                        cb[k] = cn;
                        hb[k] = og * rnn_apply(ha, cn);
                    }
                }
                if (cell == CELL_GRU) memcpy(hb, tmp + b * H, sizeof(float) * (size_t)H);
            }
            if (Y)
                for (int64_t b = 0; b < Bn; b++) {
                    if (step >= lens[b]) continue;
                    int64_t t = rev ? lens[b] - 1 - step : step;
                    for (int64_t k = 0; k < H; k++) {
                        int64_t yi = layout ? ((b * S + t) * dirs + d) * H + k : ((t * dirs + d) * Bn + b) * H + k;
                        kn_store_f32(Y->data, Y->dtype, yi, h[b * H + k]);
                    }
                }
        }
        kn_tensor *finals[2] = {Yh, Yc};
        for (int k = 0; k < 2; k++) { /* the final states, float32 ones in the default layout as one block */
            kn_tensor *yt = finals[k];
            const float *src = k ? c : h;
            if (!yt) continue;
            if (yt->dtype == KN_F32 && !layout)
                memcpy((float *)yt->data + d * Bn * H, src, sizeof(float) * (size_t)(Bn * H));
            else
                for (int64_t b = 0; b < Bn; b++)
                    for (int64_t j = 0; j < H; j++) {
                        int64_t si = layout ? (b * dirs + d) * H + j : (d * Bn + b) * H + j;
                        kn_store_f32(yt->data, yt->dtype, si, src[b * H + j]);
                    }
        }
    }
    return NULL;
}

kn_status *kn_cpu_RNN(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                      kn_tensor *const *out, int n_out) {
    return rnn_run(ctx, node, in, n_in, out, n_out, CELL_RNN, NULL);
}

kn_status *kn_cpu_GRU(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                      kn_tensor *const *out, int n_out) {
    return rnn_run(ctx, node, in, n_in, out, n_out, CELL_GRU, NULL);
}

kn_status *kn_cpu_LSTM(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                       kn_tensor *const *out, int n_out) {
    return rnn_run(ctx, node, in, n_in, out, n_out, CELL_LSTM, NULL);
}

/* com.microsoft DynamicQuantizeLSTM: X, W, R, B, sequence_lens, initial_h, initial_c, P as LSTM's
 * (W and R quantised and laid out K x N), then W_scale, W_zero_point, R_scale, R_zero_point. */
kn_status *kn_cpu_MsDynamicQuantizeLSTM(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                        kn_tensor *const *out, int n_out) {
    if (n_in < 12)
        return kn_error(KN_ERR_INVALID_MODEL,
                        "DynamicQuantizeLSTM: 12 inputs expected (scales and zero points), got %d", n_in);
    rnn_quant q = {in[1], in[2], in[8], in[9], in[10], in[11]};
    if (!q.W || !q.R) return kn_error(KN_ERR_INVALID_MODEL, "DynamicQuantizeLSTM: W and R are required");
    return rnn_run(ctx, node, in, n_in, out, n_out, CELL_LSTM, &q);
}
