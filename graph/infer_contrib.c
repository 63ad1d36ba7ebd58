/* Shape and type inference for the com.microsoft contrib ops that optimised transformer exports
 * use (Gelu, FastGelu, BiasGelu, GemmFastGelu, SkipLayerNormalization, EmbedLayerNormalization, Attention,
 * MultiHeadAttention), with the
 * input and output layouts ONNX Runtime documents for them. Unknown dims propagate as -1; shape
 * conflicts that are already visible statically are reported here so the kernel sees sane input. */
#include "graph/ops.h"
#include "runtime/core/dtype.h"
#include <string.h>

static const kn_tensor *ci_in(const kn_infer_ctx *c, int i) { return i < c->n_in ? c->in[i] : NULL; }
static kn_tensor *ci_out(const kn_infer_ctx *c, int i) { return i < c->n_out ? c->out[i] : NULL; }

static void ci_set(kn_tensor *t, kn_dtype dt, int ndim, const int64_t *dims) {
    if (!t) return;
    t->dtype = dt;
    kn_tensor_set_shape(t, ndim, dims);
}

static void ci_unknown(kn_tensor *t, kn_dtype dt) {
    if (!t) return;
    t->dtype = dt;
    t->ndim = -1;
}

static int64_t ci_mul(int64_t a, int64_t b) { return (a < 0 || b < 0) ? -1 : a * b; }
static int64_t ci_add(int64_t a, int64_t b) { return (a < 0 || b < 0) ? -1 : a + b; }
static int64_t ci_div(int64_t a, int64_t b) { return (a < 0 || b <= 0) ? -1 : a / b; }

static bool ci_float(kn_dtype t) { return t == KN_F32 || t == KN_F64 || t == KN_F16 || t == KN_BF16; }

/* ---- params decoders (graph/params.h), run once per node at load ---- */

kn_status *kn_params_decode_ms_sln(const kn_node *n, void *out) {
    kn_params_ms_sln *p = out;
    p->epsilon = kn_attr_float(n, "epsilon", 1e-12f);
    return NULL;
}

kn_status *kn_params_decode_ms_embed_ln(const kn_node *n, void *out) {
    kn_params_ms_embed_ln *p = out;
    p->epsilon = kn_attr_float(n, "epsilon", 1e-12f);
    int64_t t = kn_attr_int(n, "mask_index_type", 1);
    if (t != 0 && t != 1)
        return kn_error(KN_ERR_INVALID_MODEL, "EmbedLayerNormalization: mask_index_type must be 0 or 1, got %lld",
                        (long long)t);
    p->mask_index_type = (int)t;
    if (!(p->epsilon >= 0.0f)) return kn_error(KN_ERR_INVALID_MODEL, "EmbedLayerNormalization: epsilon must be >= 0");
    return NULL;
}

kn_status *kn_params_decode_ms_attention(const kn_node *n, void *out) {
    kn_params_ms_attention *p = out;
    p->num_heads = kn_attr_int(n, "num_heads", 0);
    p->scale = kn_attr_float(n, "scale", 0.0f);
    p->mask_filter_value = kn_attr_float(n, "mask_filter_value", -10000.0f);
    p->unidirectional = kn_attr_int(n, "unidirectional", 0) != 0;
    p->do_rotary = kn_attr_int(n, "do_rotary", 0) != 0;
    p->past_present_share_buffer = kn_attr_int(n, "past_present_share_buffer", 0) != 0;
    const int64_t *v;
    p->n_qkv_hidden_sizes = kn_attr_ints(n, "qkv_hidden_sizes", &v);
    for (int i = 0; i < p->n_qkv_hidden_sizes && i < 3; i++) p->qkv_hidden_sizes[i] = v[i];
    return NULL;
}

static kn_status *ci_need(const kn_node *n, const kn_tensor *t, const char *what, int lo, int hi) {
    char buf[KN_DESC_LEN];
    if (!t) return kn_error(KN_ERR_INVALID_MODEL, "%s: missing input %s", n->op_type, what);
    if (!ci_float(t->dtype))
        return kn_error(KN_ERR_UNSUPPORTED, "%s: %s must be float32/float64/float16/bfloat16, got %s", n->op_type, what,
                        kn_tensor_desc(t, buf, sizeof buf));
    if (t->ndim >= 0 && (t->ndim < lo || t->ndim > hi))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s must have rank %d..%d, got %s", n->op_type, what, lo, hi,
                        kn_tensor_desc(t, buf, sizeof buf));
    return NULL;
}

/* A 1-D bias must match the last dim of x when both are known. */
static kn_status *ci_check_bias(const kn_node *n, const kn_tensor *x, const kn_tensor *b, const char *what) {
    char bx[KN_DESC_LEN], bb[KN_DESC_LEN];
    if (!b) return NULL;
    KN_TRY(ci_need(n, b, what, 1, 1));
    if (x->ndim > 0 && b->ndim == 1 && x->dims[x->ndim - 1] >= 0 && b->dims[0] >= 0 &&
        x->dims[x->ndim - 1] != b->dims[0])
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s %s does not match the last dim of input %s", n->op_type, what,
                        kn_tensor_desc(b, bb, sizeof bb), kn_tensor_desc(x, bx, sizeof bx));
    return NULL;
}

kn_status *kn_infer_MsGelu(kn_infer_ctx *c) {
    KN_TRY(ci_need(c->node, ci_in(c, 0), "X", 0, KN_MAX_DIMS));
    return kn_infer_same_as_input0(c);
}

kn_status *kn_infer_MsFastGelu(kn_infer_ctx *c) {
    const kn_tensor *x = ci_in(c, 0);
    KN_TRY(ci_need(c->node, x, "X", 1, KN_MAX_DIMS));
    KN_TRY(ci_check_bias(c->node, x, ci_in(c, 1), "bias"));
    return kn_infer_same_as_input0(c);
}

kn_status *kn_infer_MsBiasGelu(kn_infer_ctx *c) {
    const kn_tensor *x = ci_in(c, 0);
    KN_TRY(ci_need(c->node, x, "A", 1, KN_MAX_DIMS));
    if (!ci_in(c, 1)) return kn_error(KN_ERR_INVALID_MODEL, "BiasGelu: missing input B");
    KN_TRY(ci_check_bias(c->node, x, ci_in(c, 1), "B"));
    return kn_infer_same_as_input0(c);
}

/* GemmFastGelu: MatMul's shapes (numpy matmul broadcasting), the bias over the result's last dim. */
kn_status *kn_infer_MsGemmFastGelu(kn_infer_ctx *c) {
    KN_TRY(ci_need(c->node, ci_in(c, 0), "X", 1, KN_MAX_DIMS));
    KN_TRY(ci_need(c->node, ci_in(c, 1), "W", 1, KN_MAX_DIMS));
    KN_TRY(kn_infer_MatMul(c));
    const kn_tensor *y = ci_out(c, 0);
    if (y && y->ndim >= 0) KN_TRY(ci_check_bias(c->node, y, ci_in(c, 2), "bias"));
    return NULL;
}

/* Outputs: output and input_skip_bias_sum take the input's shape; mean and inv_std_var the
 * input's leading dims followed by 1, in float32 (ORT's type U). */
kn_status *kn_infer_MsSkipLayerNormalization(kn_infer_ctx *c) {
    const kn_node *n = c->node;
    const kn_tensor *x = ci_in(c, 0);
    KN_TRY(ci_need(n, x, "input", 2, 3));
    KN_TRY(ci_need(n, ci_in(c, 1), "skip", 2, 3));
    KN_TRY(ci_need(n, ci_in(c, 2), "gamma", 1, 1));
    KN_TRY(ci_check_bias(n, x, ci_in(c, 2), "gamma"));
    KN_TRY(ci_check_bias(n, x, ci_in(c, 3), "beta"));
    KN_TRY(ci_check_bias(n, x, ci_in(c, 4), "bias"));
    if (x->ndim < 0) {
        ci_unknown(ci_out(c, 0), x->dtype);
        ci_unknown(ci_out(c, 1), KN_F32);
        ci_unknown(ci_out(c, 2), KN_F32);
        ci_unknown(ci_out(c, 3), x->dtype);
        return NULL;
    }
    int64_t d[KN_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) d[i] = x->dims[i];
    ci_set(ci_out(c, 0), x->dtype, x->ndim, d);
    ci_set(ci_out(c, 3), x->dtype, x->ndim, d);
    d[x->ndim - 1] = 1;
    ci_set(ci_out(c, 1), KN_F32, x->ndim, d);
    ci_set(ci_out(c, 2), KN_F32, x->ndim, d);
    return NULL;
}

/* EmbedLayerNormalization: input_ids [B,S] int32 (segment_ids, mask the same; position_ids [B,S] or
 * [1,S]), embedding tables [*,H], gamma/beta [H]. output and embedding_sum [B,S,H] in the tables'
 * type, mask_index [B] int32. */
static kn_status *ci_need_ids(const kn_node *n, const kn_tensor *t, const char *what, const kn_tensor *ids) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    if (t->dtype != KN_I32)
        return kn_error(KN_ERR_UNSUPPORTED, "%s: %s must be int32, got %s", n->op_type, what,
                        kn_tensor_desc(t, b0, sizeof b0));
    if (t->ndim >= 0 && t->ndim != 2)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s must be 2-D, got %s", n->op_type, what,
                        kn_tensor_desc(t, b0, sizeof b0));
    if (t == ids || t->ndim < 0 || ids->ndim != 2) return NULL;
    bool pos = strcmp(what, "position_ids") == 0;
    for (int d = 0; d < 2; d++)
        if (t->dims[d] >= 0 && ids->dims[d] >= 0 && t->dims[d] != ids->dims[d] && !(pos && d == 0 && t->dims[0] == 1))
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s %s does not match input_ids %s", n->op_type, what,
                            kn_tensor_desc(t, b0, sizeof b0), kn_tensor_desc(ids, b1, sizeof b1));
    return NULL;
}

kn_status *kn_infer_MsEmbedLayerNormalization(kn_infer_ctx *c) {
    const kn_node *n = c->node;
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_tensor *ids = ci_in(c, 0), *seg = ci_in(c, 1), *we = ci_in(c, 2), *pe = ci_in(c, 3), *se = ci_in(c, 4);
    const kn_tensor *mask = ci_in(c, 7), *pos = ci_in(c, 8);
    if (!ids) return kn_error(KN_ERR_INVALID_MODEL, "EmbedLayerNormalization: missing input input_ids");
    KN_TRY(ci_need_ids(n, ids, "input_ids", ids));
    if (seg) KN_TRY(ci_need_ids(n, seg, "segment_ids", ids));
    if (mask) KN_TRY(ci_need_ids(n, mask, "mask", ids));
    if (pos) KN_TRY(ci_need_ids(n, pos, "position_ids", ids));
    if (seg && !se)
        return kn_error(KN_ERR_INVALID_MODEL, "EmbedLayerNormalization: segment_ids given without segment_embedding");
    KN_TRY(ci_need(n, we, "word_embedding", 2, 2));
    KN_TRY(ci_need(n, pe, "position_embedding", 2, 2));
    if (se) KN_TRY(ci_need(n, se, "segment_embedding", 2, 2));
    KN_TRY(ci_need(n, ci_in(c, 5), "gamma", 1, 1));
    int64_t H = we->ndim == 2 ? we->dims[1] : -1;
    const kn_tensor *tabs[2] = {pe, se};
    for (int i = 0; i < 2; i++) {
        const kn_tensor *t = tabs[i];
        if (!t) continue;
        if (t->dtype != we->dtype || (t->ndim == 2 && H >= 0 && t->dims[1] >= 0 && t->dims[1] != H))
            return kn_error(KN_ERR_INVALID_ARGUMENT, "EmbedLayerNormalization: %s %s does not match word_embedding %s",
                            i ? "segment_embedding" : "position_embedding", kn_tensor_desc(t, b0, sizeof b0),
                            kn_tensor_desc(we, b1, sizeof b1));
    }
    int64_t hd[1] = {H};
    kn_tensor hx = {0};
    hx.dtype = we->dtype;
    kn_tensor_set_shape(&hx, 1, hd);
    if (H < 0) hx.ndim = -1;
    KN_TRY(ci_check_bias(n, &hx, ci_in(c, 5), "gamma"));
    KN_TRY(ci_check_bias(n, &hx, ci_in(c, 6), "beta"));
    if (ids->ndim < 0) {
        ci_unknown(ci_out(c, 0), we->dtype);
        ci_unknown(ci_out(c, 1), KN_I32);
        ci_unknown(ci_out(c, 2), we->dtype);
        return NULL;
    }
    int64_t d[3] = {ids->dims[0], ids->dims[1], H};
    ci_set(ci_out(c, 0), we->dtype, 3, d);
    ci_set(ci_out(c, 1), KN_I32, 1, d);
    ci_set(ci_out(c, 2), we->dtype, 3, d);
    return NULL;
}

/* Attention: input [B,S,D_in], weights [D_in, q+k+v hidden]; output [B,S,v_hidden];
 * present [2,B,N,past+S,head_size] (past is [2,B,N,past,head_size]). */
kn_status *kn_infer_MsAttention(kn_infer_ctx *c) {
    const kn_node *n = c->node;
    const kn_tensor *x = ci_in(c, 0), *w = ci_in(c, 1), *past = ci_in(c, 4);
    KN_TRY(ci_need(n, x, "input", 3, 3));
    KN_TRY(ci_need(n, w, "weights", 2, 2));
    const kn_params_ms_attention *p = KN_PARAMS(n, ms_attention);
    int64_t N = p->num_heads;
    if (N <= 0) return kn_error(KN_ERR_INVALID_MODEL, "Attention: num_heads must be > 0, got %lld", (long long)N);
    const int64_t *qkv = p->qkv_hidden_sizes;
    int nq = p->n_qkv_hidden_sizes;
    int64_t hq = -1, hv = -1;
    if (nq > 0) {
        if (nq != 3 || qkv[0] <= 0 || qkv[1] != qkv[0] || qkv[2] <= 0 || qkv[0] % N || qkv[2] % N)
            return kn_error(
                KN_ERR_INVALID_MODEL,
                "Attention: qkv_hidden_sizes must be 3 positive sizes, q == k, each divisible by num_heads");
        hq = qkv[0];
        hv = qkv[2];
    } else if (w->ndim == 2 && w->dims[1] >= 0) {
        if (w->dims[1] % 3 || (w->dims[1] / 3) % N)
            return kn_error(
                KN_ERR_INVALID_ARGUMENT,
                "Attention: weights dim 1 (%lld) must be 3 * hidden with hidden divisible by num_heads %lld",
                (long long)w->dims[1], (long long)N);
        hq = hv = w->dims[1] / 3;
    }
    if (x->ndim < 0) {
        ci_unknown(ci_out(c, 0), x->dtype);
        ci_unknown(ci_out(c, 1), x->dtype);
        return NULL;
    }
    int64_t B = x->dims[0], S = x->dims[1];
    int64_t d[3] = {B, S, hv};
    ci_set(ci_out(c, 0), x->dtype, 3, d);
    int64_t P = 0;
    if (past) {
        KN_TRY(ci_need(n, past, "past", 5, 5));
        P = past->ndim == 5 ? past->dims[3] : -1;
    }
    int64_t pd[5] = {2, B, N, ci_add(P, S), ci_div(hq, N)};
    ci_set(ci_out(c, 1), x->dtype, 5, pd);
    return NULL;
}

/* MultiHeadAttention: query [B,S,D]; key/value [B,L,D] / [B,L,Dv] or [B,N,L,H] / [B,N,L,Hv];
 * output [B,S,N*Hv]; present_key/value [B,N,past+L,H|Hv]; qk [B,N,S,past+L]. */
kn_status *kn_infer_MsMultiHeadAttention(kn_infer_ctx *c) {
    const kn_node *n = c->node;
    const kn_tensor *q = ci_in(c, 0), *k = ci_in(c, 1), *v = ci_in(c, 2), *pk = ci_in(c, 6);
    KN_TRY(ci_need(n, q, "query", 3, 3));
    if (!k || !v)
        return kn_error(
            KN_ERR_UNSUPPORTED,
            "MultiHeadAttention: packed QKV / packed KV layouts are not supported (key and value are required)");
    KN_TRY(ci_need(n, k, "key", 3, 4));
    KN_TRY(ci_need(n, v, "value", 3, 4));
    int64_t N = KN_PARAMS(n, ms_attention)->num_heads;
    if (N <= 0)
        return kn_error(KN_ERR_INVALID_MODEL, "MultiHeadAttention: num_heads must be > 0, got %lld", (long long)N);
    kn_dtype dt = q->dtype;
    if (q->ndim < 0 || k->ndim < 0 || v->ndim < 0) {
        for (int i = 0; i < c->n_out; i++) ci_unknown(ci_out(c, i), dt);
        return NULL;
    }
    if (k->ndim != v->ndim)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "MultiHeadAttention: key and value must have the same rank (%d, %d)",
                        k->ndim, v->ndim);
    int64_t B = q->dims[0], S = q->dims[1], H = ci_div(q->dims[2], N), L, Hv;
    if (k->ndim == 3) {
        L = k->dims[1];
        Hv = ci_div(v->dims[2], N);
    } else {
        L = k->dims[2];
        Hv = v->dims[3];
    }
    int64_t P = 0;
    if (pk) P = pk->ndim == 4 ? pk->dims[2] : -1;
    int64_t T = ci_add(P, L);
    int64_t d0[3] = {B, S, ci_mul(N, Hv)}, dk[4] = {B, N, T, H}, dv[4] = {B, N, T, Hv}, dq[4] = {B, N, S, T};
    ci_set(ci_out(c, 0), dt, 3, d0);
    ci_set(ci_out(c, 1), dt, 4, dk);
    ci_set(ci_out(c, 2), dt, 4, dv);
    ci_set(ci_out(c, 3), dt, 4, dq);
    return NULL;
}
