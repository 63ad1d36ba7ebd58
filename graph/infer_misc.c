/* Shape and type inference for the sequence-model, attention, quantisation, signal, random and
 * string ops. Ops whose output size depends on an input's value (window size, DFT length, split
 * counts, stop-word removal) return an unknown rank until that value is available. */
#include "graph/ops.h"
#include "graph/op_helpers.h"
#include "runtime/core/dtype.h"
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const kn_tensor *infer_in(const kn_infer_ctx *c, int i) { return i < c->n_in ? c->in[i] : NULL; }
static kn_tensor *infer_out(const kn_infer_ctx *c, int i) { return i < c->n_out ? c->out[i] : NULL; }

static void set_shape(kn_tensor *t, kn_dtype dt, int ndim, const int64_t *dims) {
    if (!t) return;
    t->dtype = dt;
    kn_tensor_set_shape(t, ndim, dims);
}

static void set_unknown_rank(kn_tensor *t, kn_dtype dt) {
    if (!t) return;
    t->dtype = dt;
    t->ndim = -1;
}

static kn_status *need_rank(const kn_node *n, const kn_tensor *t, const char *what, int lo, int hi) {
    char buf[KN_DESC_LEN];
    if (!t) return kn_error(KN_ERR_INVALID_MODEL, "%s: missing input %s", n->op_type, what);
    if (t->ndim >= 0 && (t->ndim < lo || t->ndim > hi))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s must have rank %d..%d, got %s", n->op_type, what, lo, hi,
                        kn_tensor_desc(t, buf, sizeof buf));
    return NULL;
}

/* Reads element 0 of a scalar-like integer or float tensor whose data is known. */
static bool scalar_value_i64(const kn_tensor *t, int64_t *v) {
    if (!t || !t->data || kn_numel(t) < 1) return false;
    *v = kn_dtype_is_float(t->dtype) ? (int64_t)kn_get_f64(t, 0) : kn_get_i64(t, 0);
    return true;
}

static int64_t mul_dim(int64_t a, int64_t b) { return (a < 0 || b < 0) ? -1 : a * b; }
static int64_t div_dim(int64_t a, int64_t b) { return (a < 0 || b <= 0) ? -1 : a / b; }

/* ---------------- params decoders (graph/params.h), run once per node at load ---------------- */

kn_status *kn_params_decode_attention(const kn_node *n, void *out) {
    kn_params_attention *p = out;
    p->q_num_heads = kn_attr_int(n, "q_num_heads", 0);
    p->kv_num_heads = kn_attr_int(n, "kv_num_heads", 0);
    p->has_scale = kn_node_attr(n, "scale") != NULL;
    p->scale = kn_attr_float(n, "scale", 0.0f);
    p->softcap = kn_attr_float(n, "softcap", 0.0f);
    p->is_causal = kn_attr_int(n, "is_causal", 0) != 0;
    p->qk_matmul_output_mode = kn_attr_int(n, "qk_matmul_output_mode", 0);
    p->left_window_size = kn_attr_int(n, "left_window_size", -1);
    p->right_window_size = kn_attr_int(n, "right_window_size", -1);
    p->softmax_precision = kn_attr_int(n, "softmax_precision", 0);
    return NULL;
}

kn_status *kn_params_decode_rotary(const kn_node *n, void *out) {
    kn_params_rotary *p = out;
    p->num_heads = kn_attr_int(n, "num_heads", 0);
    p->rotary_embedding_dim = kn_attr_int(n, "rotary_embedding_dim", 0);
    p->interleaved = kn_attr_int(n, "interleaved", 0) != 0;
    return NULL;
}

/* The activations attribute, n_per_dir functions per direction, with the optional alpha/beta
 * lists consumed in order by the functions that take them. */
static kn_status *decode_rnn_acts(const kn_node *n, int dirs, int n_per_dir, const char *const *defaults,
                                  kn_rnn_act *acts) {
    static const struct {
        const char *name;
        kn_rnn_act_kind kind;
        int n_params;
        float da, db;
    } table[] = {
        {"Sigmoid", KN_RNN_ACT_SIGMOID, 0, 0, 0},
        {"Tanh", KN_RNN_ACT_TANH, 0, 0, 0},
        {"Relu", KN_RNN_ACT_RELU, 0, 0, 0},
        {"Affine", KN_RNN_ACT_AFFINE, 2, 1.0f, 0.0f},
        {"LeakyRelu", KN_RNN_ACT_LEAKYRELU, 1, 0.01f, 0},
        {"ThresholdedRelu", KN_RNN_ACT_THRESHOLDEDRELU, 1, 1.0f, 0},
        {"ScaledTanh", KN_RNN_ACT_SCALEDTANH, 2, 1.0f, 1.0f},
        {"HardSigmoid", KN_RNN_ACT_HARDSIGMOID, 2, 0.2f, 0.5f},
        {"Elu", KN_RNN_ACT_ELU, 1, 1.0f, 0},
        {"Softsign", KN_RNN_ACT_SOFTSIGN, 0, 0, 0},
        {"Softplus", KN_RNN_ACT_SOFTPLUS, 0, 0, 0},
    };
    const kn_attr *names = kn_node_attr(n, "activations");
    const kn_attr *al = kn_node_attr(n, "activation_alpha"), *be = kn_node_attr(n, "activation_beta");
    int cnt = dirs * n_per_dir, ia = 0, ib = 0;
    if (names && names->n_strings != cnt && !(names->n_strings == n_per_dir))
        return kn_error(KN_ERR_INVALID_MODEL, "%s: expected %d activations, got %d", n->op_type, cnt, names->n_strings);
    for (int i = 0; i < cnt; i++) {
        const char *nm = names ? names->strings[i % names->n_strings] : defaults[i % n_per_dir];
        int k = -1;
        for (size_t t = 0; t < sizeof table / sizeof table[0]; t++)
            if (strcasecmp(table[t].name, nm) == 0) k = (int)t;
        if (k < 0) return kn_error(KN_ERR_UNSUPPORTED, "%s: unknown activation '%s'", n->op_type, nm);
        acts[i].kind = table[k].kind;
        acts[i].alpha = table[k].da;
        acts[i].beta = table[k].db;
        if (table[k].n_params >= 1 && al && ia < al->n_floats) acts[i].alpha = al->floats[ia++];
        if (table[k].n_params >= 2 && be && ib < be->n_floats) acts[i].beta = be->floats[ib++];
    }
    return NULL;
}

kn_status *kn_params_decode_rnn(const kn_node *n, void *out) {
    kn_params_rnn *p = out;
    p->layout = kn_attr_int(n, "layout", 0);
    const char *dir = kn_attr_str(n, "direction", "forward");
    if (!strcmp(dir, "forward")) p->direction = KN_RNN_FORWARD;
    else if (!strcmp(dir, "reverse")) p->direction = KN_RNN_REVERSE;
    else if (!strcmp(dir, "bidirectional")) p->direction = KN_RNN_BIDIRECTIONAL;
    else return kn_error(KN_ERR_INVALID_MODEL, "%s: unknown direction '%s'", n->op_type, dir);
    p->has_hidden_size = kn_node_attr(n, "hidden_size") != NULL;
    p->hidden_size = kn_attr_int(n, "hidden_size", -1);
    p->clip = kn_node_attr(n, "clip") ? kn_attr_float(n, "clip", 0.0f) : 0.0f;
    p->linear_before_reset = kn_attr_int(n, "linear_before_reset", 0) != 0;
    p->input_forget = kn_attr_int(n, "input_forget", 0) != 0;
    static const char *const d_rnn[] = {"Tanh"}, *const d_gru[] = {"Sigmoid", "Tanh"},
                             *const d_lstm[] = {"Sigmoid", "Tanh", "Tanh"};
    int n_act = n->op == KN_OP_RNN ? 1 : n->op == KN_OP_GRU ? 2 : 3;
    int dirs = p->direction == KN_RNN_BIDIRECTIONAL ? 2 : 1;
    p->n_acts = dirs * n_act;
    return decode_rnn_acts(n, dirs, n_act, n->op == KN_OP_RNN ? d_rnn : n->op == KN_OP_GRU ? d_gru : d_lstm, p->acts);
}

kn_status *kn_params_decode_dft(const kn_node *n, void *out) {
    kn_params_dft *p = out;
    p->axis = kn_attr_int(n, "axis", 1); /* DFT before opset 20; an input after */
    p->inverse = kn_attr_int(n, "inverse", 0) != 0;
    p->onesided = kn_attr_int(n, "onesided", n->op == KN_OP_STFT ? 1 : 0) != 0;
    return NULL;
}

kn_status *kn_params_decode_sigwin(const kn_node *n, void *out) {
    kn_params_sigwin *p = out;
    kn_dtype dt = (kn_dtype)kn_attr_int(n, "output_datatype", KN_F32);
    if (!kn_dtype_valid(dt) || dt == KN_STRING)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: bad output_datatype %d", n->op_type, (int)dt);
    p->output_datatype = (int)dt;
    p->periodic = kn_attr_int(n, "periodic", 1) != 0;
    return NULL;
}

kn_status *kn_params_decode_strnorm(const kn_node *n, void *out) {
    kn_params_strnorm *p = out;
    const char *action = kn_attr_str(n, "case_change_action", "NONE");
    if (!strcmp(action, "LOWER")) p->case_change_action = KN_CASE_LOWER;
    else if (!strcmp(action, "UPPER")) p->case_change_action = KN_CASE_UPPER;
    else if (!strcmp(action, "NONE")) p->case_change_action = KN_CASE_NONE;
    else return kn_error(KN_ERR_INVALID_MODEL, "StringNormalizer: unknown case_change_action '%s'", action);
    p->is_case_sensitive = kn_attr_int(n, "is_case_sensitive", 0) != 0;
    const kn_attr *sw = kn_node_attr(n, "stopwords");
    if (sw) {
        p->n_stopwords = sw->n_strings;
        p->stopwords = (const char *const *)sw->strings;
    }
    return NULL;
}

kn_status *kn_params_decode_strsplit(const kn_node *n, void *out) {
    kn_params_strsplit *p = out;
    p->delimiter = kn_attr_str(n, "delimiter", NULL);
    p->maxsplit = kn_attr_int(n, "maxsplit", -1);
    return NULL;
}

kn_status *kn_params_decode_regex(const kn_node *n, void *out) {
    kn_params_regex *p = out;
    p->pattern = kn_attr_str(n, "pattern", NULL);
    if (!p->pattern) return kn_error(KN_ERR_INVALID_MODEL, "RegexFullMatch: missing pattern attribute");
    return NULL;
}

kn_status *kn_params_decode_tfidf(const kn_node *n, void *out) {
    kn_params_tfidf *p = out;
    const char *mode = kn_attr_str(n, "mode", "TF");
    if (!strcmp(mode, "TF")) p->mode = KN_TFIDF_TF;
    else if (!strcmp(mode, "IDF")) p->mode = KN_TFIDF_IDF;
    else if (!strcmp(mode, "TFIDF")) p->mode = KN_TFIDF_TFIDF;
    else return kn_error(KN_ERR_INVALID_MODEL, "TfIdfVectorizer: unknown mode '%s'", mode);
    p->min_gram_length = kn_attr_int(n, "min_gram_length", 1);
    p->max_gram_length = kn_attr_int(n, "max_gram_length", 1);
    p->max_skip_count = kn_attr_int(n, "max_skip_count", 0);
    p->n_ngram_counts = kn_attr_ints(n, "ngram_counts", &p->ngram_counts);
    p->n_ngram_indexes = kn_attr_ints(n, "ngram_indexes", &p->ngram_indexes);
    p->n_pool_int64s = kn_attr_ints(n, "pool_int64s", &p->pool_int64s);
    const kn_attr *ps = kn_node_attr(n, "pool_strings"), *w = kn_node_attr(n, "weights");
    p->n_pool_strings = ps ? ps->n_strings : -1;
    p->pool_strings = ps ? (const char *const *)ps->strings : NULL;
    p->n_weights = w ? w->n_floats : -1;
    p->weights = w ? w->floats : NULL;
    return NULL;
}

/* ---------------- Attention ---------------- */

kn_status *kn_infer_Attention(kn_infer_ctx *c) {
    const kn_node *n = c->node;
    const kn_tensor *q = infer_in(c, 0), *k = infer_in(c, 1), *v = infer_in(c, 2);
    const kn_tensor *pk = infer_in(c, 4);
    KN_TRY(need_rank(n, q, "Q", 3, 4));
    KN_TRY(need_rank(n, k, "K", 3, 4));
    KN_TRY(need_rank(n, v, "V", 3, 4));
    kn_dtype dt = q->dtype;
    if (q->ndim < 0 || k->ndim < 0 || v->ndim < 0) {
        for (int i = 0; i < c->n_out; i++) set_unknown_rank(infer_out(c, i), dt);
        return NULL;
    }
    if (q->ndim != k->ndim || q->ndim != v->ndim)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: Q, K, V must have the same rank (%d, %d, %d)", q->ndim,
                        k->ndim, v->ndim);
    int64_t B = q->dims[0], Hq, Hkv, Sq, Skv, Dv, Dk;
    if (q->ndim == 3) {
        int64_t qh = KN_PARAMS(n, attention)->q_num_heads, kvh = KN_PARAMS(n, attention)->kv_num_heads;
        if (qh <= 0 || kvh <= 0)
            return kn_error(KN_ERR_INVALID_MODEL, "Attention: 3-D inputs need q_num_heads and kv_num_heads > 0");
        Hq = qh;
        Hkv = kvh;
        Sq = q->dims[1];
        Skv = k->dims[1];
        Dk = div_dim(k->dims[2], kvh);
        Dv = div_dim(v->dims[2], kvh);
    } else {
        Hq = q->dims[1];
        Hkv = k->dims[1];
        Sq = q->dims[2];
        Skv = k->dims[2];
        Dk = k->dims[3];
        Dv = v->dims[3];
    }
    int64_t total = Skv;
    if (pk) {
        if (pk->ndim >= 0 && pk->ndim != 4) return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: past_key must be 4-D");
        total = (pk->ndim == 4 && Skv >= 0 && pk->dims[2] >= 0) ? pk->dims[2] + Skv : -1;
    }
    kn_tensor *y = infer_out(c, 0);
    if (q->ndim == 3) {
        int64_t d[3] = {B, Sq, mul_dim(Hq, Dv)};
        set_shape(y, dt, 3, d);
    } else {
        int64_t d[4] = {B, Hq, Sq, Dv};
        set_shape(y, dt, 4, d);
    }
    int64_t dk[4] = {B, Hkv, total, Dk}, dv[4] = {B, Hkv, total, Dv}, dq[4] = {B, Hq, Sq, total};
    set_shape(infer_out(c, 1), k->dtype, 4, dk);
    set_shape(infer_out(c, 2), v->dtype, 4, dv);
    set_shape(infer_out(c, 3), dt, 4, dq);
    return NULL;
}

/* kiln's fused attention: ai.onnx Attention's 4-D shapes, inputs 4 and 5 its past key and value
 * (made by the decoder key/value split, kn_pass_split_past_kv); output 1 (optional) is the float32
 * logsumexp [B,H,S] of each score row. */
kn_status *kn_infer_KnSdpa(kn_infer_ctx *c) {
    if (c->n_in < 3 || c->n_in > 6 || c->n_in == 5 || c->n_out < 1 || c->n_out > 2)
        return kn_error(KN_ERR_INVALID_MODEL, "KnSdpa: needs 3, 4 or 6 inputs and 1 or 2 outputs (got %d, %d)", c->n_in,
                        c->n_out);
    for (int i = 0; i < 3; i++) KN_TRY(need_rank(c->node, infer_in(c, i), i == 0 ? "Q" : i == 1 ? "K" : "V", 4, 4));
    kn_infer_ctx one = *c;
    one.n_out = 1;
    KN_TRY(kn_infer_Attention(&one));
    kn_tensor *lse = infer_out(c, 1);
    const kn_tensor *q = infer_in(c, 0);
    if (lse && q->ndim == 4) set_shape(lse, KN_F32, 3, q->dims);
    else if (lse) set_unknown_rank(lse, KN_F32);
    return NULL;
}

kn_status *kn_infer_RotaryEmbedding(kn_infer_ctx *c) {
    KN_TRY(need_rank(c->node, infer_in(c, 0), "X", 3, 4));
    KN_TRY(need_rank(c->node, infer_in(c, 1), "cos_cache", 2, 3));
    KN_TRY(need_rank(c->node, infer_in(c, 2), "sin_cache", 2, 3));
    return kn_infer_same_as_input0(c);
}

/* ---------------- RNN family ---------------- */

/* quant_layout: DynamicQuantizeLSTM's W [dirs, input, gates*H] and R [dirs, H, gates*H] */
static kn_status *infer_rnn(kn_infer_ctx *c, int gates, int n_state_outs, bool quant_layout) {
    const kn_node *n = c->node;
    const kn_tensor *x = infer_in(c, 0), *w = infer_in(c, 1), *r = infer_in(c, 2);
    KN_TRY(need_rank(n, x, "X", 3, 3));
    KN_TRY(need_rank(n, w, "W", 3, 3));
    KN_TRY(need_rank(n, r, "R", 3, 3));
    const kn_params_rnn *p = KN_PARAMS(n, rnn);
    int64_t layout = p->layout;
    int64_t dirs = p->direction == KN_RNN_BIDIRECTIONAL ? 2 : 1;
    int64_t H = p->hidden_size;
    if (H <= 0 && w->ndim == 3) H = div_dim(w->dims[quant_layout ? 2 : 1], gates);
    if (H <= 0 && r->ndim == 3) H = r->dims[quant_layout ? 1 : 2];
    int64_t S = -1, B = -1;
    if (x->ndim == 3) {
        S = layout ? x->dims[1] : x->dims[0];
        B = layout ? x->dims[0] : x->dims[1];
    }
    kn_dtype dt = x->dtype;
    if (layout) {
        int64_t dy[4] = {B, S, dirs, H}, dh[3] = {B, dirs, H};
        set_shape(infer_out(c, 0), dt, 4, dy);
        for (int i = 1; i <= n_state_outs; i++) set_shape(infer_out(c, i), dt, 3, dh);
    } else {
        int64_t dy[4] = {S, dirs, B, H}, dh[3] = {dirs, B, H};
        set_shape(infer_out(c, 0), dt, 4, dy);
        for (int i = 1; i <= n_state_outs; i++) set_shape(infer_out(c, i), dt, 3, dh);
    }
    return NULL;
}

kn_status *kn_infer_RNN(kn_infer_ctx *c) { return infer_rnn(c, 1, 1, false); }
kn_status *kn_infer_GRU(kn_infer_ctx *c) { return infer_rnn(c, 3, 1, false); }
kn_status *kn_infer_LSTM(kn_infer_ctx *c) { return infer_rnn(c, 4, 2, false); }
kn_status *kn_infer_MsDynamicQuantizeLSTM(kn_infer_ctx *c) { return infer_rnn(c, 4, 2, true); }

/* ---------------- quantisation ---------------- */

kn_status *kn_infer_QuantizeLinear(kn_infer_ctx *c) {
    const kn_tensor *x = infer_in(c, 0), *zp = infer_in(c, 2);
    KN_TRY(need_rank(c->node, x, "x", 0, KN_MAX_DIMS));
    KN_TRY(need_rank(c->node, infer_in(c, 1), "y_scale", 0, KN_MAX_DIMS));
    kn_dtype dt = KN_U8;
    int64_t od = KN_PARAMS(c->node, quant)->output_dtype;
    if (zp) dt = zp->dtype;
    else if (od) dt = (kn_dtype)od;
    if (zp && od && od != zp->dtype)
        return kn_error(KN_ERR_INVALID_MODEL, "QuantizeLinear: output_dtype %d differs from zero point dtype %s",
                        (int)od, kn_dtype_name(zp->dtype));
    if (!kn_dtype_valid(dt)) return kn_error(KN_ERR_INVALID_MODEL, "QuantizeLinear: bad output_dtype %d", (int)dt);
    set_shape(infer_out(c, 0), dt, x->ndim, x->dims);
    return NULL;
}

kn_status *kn_infer_DequantizeLinear(kn_infer_ctx *c) {
    const kn_tensor *x = infer_in(c, 0), *sc = infer_in(c, 1);
    KN_TRY(need_rank(c->node, x, "x", 0, KN_MAX_DIMS));
    KN_TRY(need_rank(c->node, sc, "x_scale", 0, KN_MAX_DIMS));
    int64_t od = KN_PARAMS(c->node, quant)->output_dtype;
    kn_dtype dt = od ? (kn_dtype)od : sc->dtype;
    if (!kn_dtype_valid(dt)) return kn_error(KN_ERR_INVALID_MODEL, "DequantizeLinear: bad output_dtype %d", (int)dt);
    set_shape(infer_out(c, 0), dt, x->ndim, x->dims);
    return NULL;
}

kn_status *kn_infer_DynamicQuantizeLinear(kn_infer_ctx *c) {
    const kn_tensor *x = infer_in(c, 0);
    KN_TRY(need_rank(c->node, x, "x", 0, KN_MAX_DIMS));
    set_shape(infer_out(c, 0), KN_U8, x->ndim, x->dims);
    set_shape(infer_out(c, 1), KN_F32, 0, NULL);
    set_shape(infer_out(c, 2), KN_U8, 0, NULL);
    return NULL;
}

/* ---------------- signal ---------------- */

/* The output keeps the input's rank: the transformed axis becomes dft_length (or dft_length/2+1
 * one-sided) and the last dimension 2 (complex), or 1 for the one-sided inverse (real output). */
kn_status *kn_infer_DFT(kn_infer_ctx *c) {
    const kn_node *n = c->node;
    const kn_tensor *x = infer_in(c, 0), *len_t = infer_in(c, 1), *axis_t = infer_in(c, 2);
    KN_TRY(need_rank(n, x, "input", 2, KN_MAX_DIMS));
    kn_tensor *y = infer_out(c, 0);
    if (x->ndim < 0) {
        set_unknown_rank(y, x->dtype);
        return NULL;
    }
    int64_t axis;
    if (n->opset >= 20) {
        axis = -2;
        if (axis_t && !scalar_value_i64(axis_t, &axis)) {
            set_unknown_rank(y, x->dtype);
            return NULL;
        }
    } else {
        axis = KN_PARAMS(n, dft)->axis;
    }
    int r = x->ndim;
    if (axis < -r || axis >= r)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "DFT: axis %lld out of range for rank %d", (long long)axis, r);
    if (axis < 0) axis += r;
    if (axis == r - 1) return kn_error(KN_ERR_INVALID_ARGUMENT, "DFT: axis must not be the last (complex) dimension");
    if (x->dims[r - 1] >= 0 && x->dims[r - 1] != 1 && x->dims[r - 1] != 2)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "DFT: last dimension must be 1 or 2, got %lld",
                        (long long)x->dims[r - 1]);
    int64_t inverse = KN_PARAMS(n, dft)->inverse, onesided = KN_PARAMS(n, dft)->onesided;
    int64_t len = -1;
    if (len_t) {
        if (!scalar_value_i64(len_t, &len)) {
            set_unknown_rank(y, x->dtype);
            return NULL;
        }
        if (len <= 0)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "DFT: dft_length must be positive, got %lld", (long long)len);
    } else if (x->dims[axis] >= 0) {
        len = (inverse && onesided) ? 2 * (x->dims[axis] - 1) : x->dims[axis];
    }
    int64_t d[KN_MAX_DIMS];
    memcpy(d, x->dims, sizeof(int64_t) * r);
    if (inverse && onesided) {
        d[axis] = len;
        d[r - 1] = 1;
    } else {
        d[axis] = (onesided && len >= 0) ? len / 2 + 1 : len;
        d[r - 1] = 2;
    }
    set_shape(y, x->dtype, r, d);
    return NULL;
}

kn_status *kn_infer_STFT(kn_infer_ctx *c) {
    const kn_node *n = c->node;
    const kn_tensor *x = infer_in(c, 0), *step_t = infer_in(c, 1), *win = infer_in(c, 2), *fl_t = infer_in(c, 3);
    KN_TRY(need_rank(n, x, "signal", 3, 3));
    KN_TRY(need_rank(n, step_t, "frame_step", 0, 1));
    kn_tensor *y = infer_out(c, 0);
    int64_t step, fl = -1;
    if (!scalar_value_i64(step_t, &step)) {
        set_unknown_rank(y, x->dtype);
        return NULL;
    }
    if (fl_t) {
        if (!scalar_value_i64(fl_t, &fl)) {
            set_unknown_rank(y, x->dtype);
            return NULL;
        }
    } else if (win) {
        KN_TRY(need_rank(n, win, "window", 1, 1));
        fl = win->ndim == 1 ? win->dims[0] : -1;
    } else if (x->ndim == 3) fl = x->dims[1];
    if (step <= 0)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "STFT: frame_step must be positive, got %lld", (long long)step);
    if (x->ndim < 0) {
        set_unknown_rank(y, x->dtype);
        return NULL;
    }
    int64_t len = x->dims[1], frames = -1;
    if (fl == 0 || (fl > 0 && len >= 0 && fl > len))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "STFT: frame_length %lld does not fit signal length %lld",
                        (long long)fl, (long long)len);
    if (fl > 0 && len >= 0) frames = 1 + (len - fl) / step;
    int64_t onesided = KN_PARAMS(n, dft)->onesided;
    int64_t bins = fl < 0 ? -1 : (onesided ? fl / 2 + 1 : fl);
    int64_t d[4] = {x->dims[0], frames, bins, 2};
    set_shape(y, x->dtype, 4, d);
    return NULL;
}

static kn_status *infer_window(kn_infer_ctx *c) {
    const kn_tensor *size_t_ = infer_in(c, 0);
    KN_TRY(need_rank(c->node, size_t_, "size", 0, 1));
    kn_dtype dt = (kn_dtype)KN_PARAMS(c->node, sigwin)->output_datatype; /* checked by the decoder */
    int64_t size;
    if (!scalar_value_i64(size_t_, &size)) {
        set_unknown_rank(infer_out(c, 0), dt);
        return NULL;
    }
    if (size < 0 || size > KN_MAX_NUMEL)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: bad window size %lld", c->node->op_type, (long long)size);
    set_shape(infer_out(c, 0), dt, 1, &size);
    return NULL;
}

kn_status *kn_infer_HannWindow(kn_infer_ctx *c) { return infer_window(c); }
kn_status *kn_infer_HammingWindow(kn_infer_ctx *c) { return infer_window(c); }
kn_status *kn_infer_BlackmanWindow(kn_infer_ctx *c) { return infer_window(c); }

kn_status *kn_infer_MelWeightMatrix(kn_infer_ctx *c) {
    kn_dtype dt = (kn_dtype)KN_PARAMS(c->node, sigwin)->output_datatype; /* checked by the decoder */
    for (int i = 0; i < 5; i++) KN_TRY(need_rank(c->node, infer_in(c, i), "scalar", 0, 1));
    int64_t mel, dft;
    if (!scalar_value_i64(infer_in(c, 0), &mel) || !scalar_value_i64(infer_in(c, 1), &dft)) {
        set_unknown_rank(infer_out(c, 0), dt);
        return NULL;
    }
    if (mel <= 0 || dft <= 0 || mel > (1 << 20) || dft > ((int64_t)1 << 24))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "MelWeightMatrix: bad num_mel_bins %lld or dft_length %lld",
                        (long long)mel, (long long)dft);
    int64_t d[2] = {dft / 2 + 1, mel};
    set_shape(infer_out(c, 0), dt, 2, d);
    return NULL;
}

/* ---------------- random ---------------- */

kn_status *kn_infer_Bernoulli(kn_infer_ctx *c) {
    const kn_tensor *x = infer_in(c, 0);
    KN_TRY(need_rank(c->node, x, "input", 0, KN_MAX_DIMS));
    const kn_params_random *p = KN_PARAMS(c->node, random);
    kn_dtype dt = p->has_dtype ? (kn_dtype)p->dtype : x->dtype;
    if (!kn_dtype_valid(dt)) return kn_error(KN_ERR_INVALID_MODEL, "Bernoulli: bad dtype %d", (int)dt);
    set_shape(infer_out(c, 0), dt, x->ndim, x->dims);
    return NULL;
}

static kn_status *infer_random(kn_infer_ctx *c) {
    const kn_node *n = c->node;
    const kn_params_random *p = KN_PARAMS(n, random);
    kn_dtype dt = p->has_dtype ? (kn_dtype)p->dtype : KN_F32;
    if (dt != KN_F32 && dt != KN_F64 && dt != KN_F16 && dt != KN_BF16)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: dtype %d is not a float type", n->op_type, (int)dt);
    const int64_t *shape = p->shape;
    int ns = p->n_shape; /* -1 when absent or longer than KN_MAX_DIMS */
    if (ns < 0 || ns > KN_MAX_DIMS)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: missing or bad shape attribute", n->op_type);
    for (int i = 0; i < ns; i++)
        if (shape[i] < 0) return kn_error(KN_ERR_INVALID_MODEL, "%s: negative dimension in shape", n->op_type);
    set_shape(infer_out(c, 0), dt, ns, shape);
    return NULL;
}

static kn_status *infer_random_like(kn_infer_ctx *c) {
    const kn_tensor *x = infer_in(c, 0);
    KN_TRY(need_rank(c->node, x, "input", 0, KN_MAX_DIMS));
    const kn_params_random *p = KN_PARAMS(c->node, random);
    kn_dtype dt = p->has_dtype ? (kn_dtype)p->dtype : x->dtype;
    if (dt != KN_F32 && dt != KN_F64 && dt != KN_F16 && dt != KN_BF16)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: dtype %s is not a float type", c->node->op_type, kn_dtype_name(dt));
    set_shape(infer_out(c, 0), dt, x->ndim, x->dims);
    return NULL;
}

kn_status *kn_infer_RandomUniform(kn_infer_ctx *c) { return infer_random(c); }
kn_status *kn_infer_RandomNormal(kn_infer_ctx *c) { return infer_random(c); }
kn_status *kn_infer_RandomUniformLike(kn_infer_ctx *c) { return infer_random_like(c); }
kn_status *kn_infer_RandomNormalLike(kn_infer_ctx *c) { return infer_random_like(c); }

/* ---------------- strings ---------------- */

static kn_status *need_string(const kn_node *n, const kn_tensor *t) {
    if (t->dtype != KN_STRING) return kn_err_dtype(n, t);
    return NULL;
}

/* Whether a string equals one of the stop words; case-insensitive comparison is ASCII only. */
static bool is_stopword(const kn_params_strnorm *p, const char *s) {
    for (int i = 0; i < p->n_stopwords; i++)
        if (p->is_case_sensitive ? strcmp(p->stopwords[i], s) == 0 : strcasecmp(p->stopwords[i], s) == 0) return true;
    return false;
}

/* Number of entries StringNormalizer keeps: shared with the kernel via the same predicate. */
int64_t kn_string_normalizer_kept(const kn_node *n, const kn_tensor *x) {
    const kn_params_strnorm *p = KN_PARAMS(n, strnorm);
    int64_t kept = 0, total = kn_numel(x);
    const char *const *s = (const char *const *)x->data;
    for (int64_t i = 0; i < total; i++)
        if (!is_stopword(p, s[i] ? s[i] : "")) kept++;
    return kept;
}

kn_status *kn_infer_StringNormalizer(kn_infer_ctx *c) {
    const kn_tensor *x = infer_in(c, 0);
    KN_TRY(need_rank(c->node, x, "X", 1, 2));
    KN_TRY(need_string(c->node, x));
    kn_tensor *y = infer_out(c, 0);
    if (x->ndim == 2 && x->dims[0] != 1 && x->dims[0] >= 0)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "StringNormalizer: 2-D input must be [1, C]");
    int64_t kept;
    if (KN_PARAMS(c->node, strnorm)->n_stopwords == 0) kept = x->ndim == 2 ? x->dims[1] : x->dims[0];
    else if (x->data) kept = kn_string_normalizer_kept(c->node, x);
    else {
        set_unknown_rank(y, KN_STRING);
        return NULL;
    }
    if (kept == 0) kept = 1; /* an all-removed input yields one empty string */
    int64_t d[2] = {1, kept};
    if (x->ndim == 2) set_shape(y, KN_STRING, 2, d);
    else set_shape(y, KN_STRING, 1, &kept);
    return NULL;
}

kn_status *kn_infer_StringConcat(kn_infer_ctx *c) {
    const kn_tensor *a = infer_in(c, 0), *b = infer_in(c, 1);
    KN_TRY(need_rank(c->node, a, "X", 0, KN_MAX_DIMS));
    KN_TRY(need_rank(c->node, b, "Y", 0, KN_MAX_DIMS));
    KN_TRY(need_string(c->node, a));
    KN_TRY(need_string(c->node, b));
    kn_tensor *y = infer_out(c, 0);
    if (!y) return NULL;
    y->dtype = KN_STRING;
    if (a->ndim < 0 || b->ndim < 0) {
        y->ndim = -1;
        return NULL;
    }
    return kn_broadcast_shape(a, b, y);
}

/* Number of pieces one string splits into, with Python str.split semantics: a NULL or empty
 * delimiter splits on runs of whitespace and drops empty pieces. */
int64_t kn_string_split_count(const char *s, const char *delim, int64_t maxsplit) {
    int64_t count = 0;
    if (!delim || !*delim) {
        const char *p = s;
        while (*p) {
            while (*p && strchr(" \t\n\r\f\v", *p)) p++;
            if (!*p) break;
            if (maxsplit >= 0 && count == maxsplit) {
                count++;
                break;
            }
            count++;
            while (*p && !strchr(" \t\n\r\f\v", *p)) p++;
        }
        return count;
    }
    size_t dl = strlen(delim);
    const char *p = s;
    count = 1;
    while ((maxsplit < 0 || count <= maxsplit) && (p = strstr(p, delim))) {
        count++;
        p += dl;
    }
    return count;
}

kn_status *kn_infer_StringSplit(kn_infer_ctx *c) {
    const kn_tensor *x = infer_in(c, 0);
    KN_TRY(need_rank(c->node, x, "X", 0, KN_MAX_DIMS - 1));
    KN_TRY(need_string(c->node, x));
    kn_tensor *y = infer_out(c, 0), *len = infer_out(c, 1);
    if (x->ndim < 0) {
        set_unknown_rank(y, KN_STRING);
        set_unknown_rank(len, KN_I64);
        return NULL;
    }
    set_shape(len, KN_I64, x->ndim, x->dims);
    if (!x->data) {
        set_unknown_rank(y, KN_STRING);
        return NULL;
    }
    const char *delim = KN_PARAMS(c->node, strsplit)->delimiter;
    int64_t maxsplit = KN_PARAMS(c->node, strsplit)->maxsplit;
    int64_t mx = 0, total = kn_numel(x);
    const char *const *s = (const char *const *)x->data;
    for (int64_t i = 0; i < total; i++) {
        int64_t k = kn_string_split_count(s[i] ? s[i] : "", delim, maxsplit);
        if (k > mx) mx = k;
    }
    int64_t d[KN_MAX_DIMS];
    memcpy(d, x->dims, sizeof(int64_t) * x->ndim);
    d[x->ndim] = mx;
    set_shape(y, KN_STRING, x->ndim + 1, d);
    return NULL;
}

kn_status *kn_infer_RegexFullMatch(kn_infer_ctx *c) {
    const kn_tensor *x = infer_in(c, 0);
    KN_TRY(need_rank(c->node, x, "X", 0, KN_MAX_DIMS));
    KN_TRY(need_string(c->node, x));
    set_shape(infer_out(c, 0), KN_BOOL, x->ndim, x->dims);
    return NULL;
}

kn_status *kn_infer_TfIdfVectorizer(kn_infer_ctx *c) {
    const kn_node *n = c->node;
    const kn_tensor *x = infer_in(c, 0);
    KN_TRY(need_rank(n, x, "X", 1, 2));
    if (x->dtype != KN_STRING && x->dtype != KN_I32 && x->dtype != KN_I64) return kn_err_dtype(n, x);
    const int64_t *idx = KN_PARAMS(n, tfidf)->ngram_indexes;
    int ni = KN_PARAMS(n, tfidf)->n_ngram_indexes;
    int64_t width = 0;
    for (int i = 0; i < ni; i++) {
        if (idx[i] < 0 || idx[i] >= ((int64_t)1 << 28))
            return kn_error(KN_ERR_INVALID_MODEL, "TfIdfVectorizer: bad ngram index %lld", (long long)idx[i]);
        if (idx[i] + 1 > width) width = idx[i] + 1;
    }
    kn_tensor *y = infer_out(c, 0);
    if (x->ndim == 2) {
        int64_t d[2] = {x->dims[0], width};
        set_shape(y, KN_F32, 2, d);
    } else set_shape(y, KN_F32, 1, &width);
    return NULL;
}

/* ---------------- ImageDecoder ---------------- */

kn_status *kn_params_decode_image(const kn_node *n, void *out) {
    kn_params_image *p = out;
    const char *fmt = kn_attr_str(n, "pixel_format", "RGB");
    if (!strcmp(fmt, "RGB")) p->pixel_format = KN_PIXEL_RGB;
    else if (!strcmp(fmt, "BGR")) p->pixel_format = KN_PIXEL_BGR;
    else if (!strcmp(fmt, "Grayscale")) p->pixel_format = KN_PIXEL_GRAY;
    else return kn_error(KN_ERR_INVALID_MODEL, "ImageDecoder: unknown pixel_format '%s'", fmt);
    return NULL;
}

/* The image's size is in its header (decoded by kernels/cpu/image_decode.c), so the shape is known
 * only once the bytes are. */
kn_status *kn_infer_ImageDecoder(kn_infer_ctx *c) {
    KN_CHECK(c->in[0] && (c->in[0]->dtype == KN_U8 || c->in[0]->dtype == KN_UNDEFINED), KN_ERR_INVALID_ARGUMENT,
             "ImageDecoder: input must be uint8");
    c->out[0]->dtype = KN_U8;
    c->out[0]->ndim = -1;
    return NULL;
}
