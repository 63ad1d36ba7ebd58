/* Gradient rules of the fused attentions. KnSdpa: one kiln SdpaGrad node (kernels/cpu/
 * attention_grad.c) that reads the forward's output and its per-row logsumexp, switched on here
 * as KnSdpa's output 1, so the backward neither keeps the [B,H,S,T] probabilities of the
 * decomposed graph nor recomputes the softmax statistics. com.microsoft Attention and
 * MultiHeadAttention (what ONNX Runtime's optimizer fuses BERT-style attention into): the same
 * SdpaGrad on heads and a mask bias rebuilt from the forward's inputs (see below). */
#include "autograd/grad.h"
#include <math.h>
#include <string.h>

kn_status *kn_grad_KnSdpa(kn_grad_ctx *c) {
    const kn_params_attention *p = KN_GRAD_PARAMS(c, attention);
    if (c->n_out > 1 && c->dy[1] >= 0)
        return kn_error(KN_ERR_UNSUPPORTED, "KnSdpa: gradients through the logsumexp output are not supported");
    if (c->n_in > 4) /* only decoder sessions split the past off (kn_pass_split_past_kv) */
        return kn_error(KN_ERR_UNSUPPORTED, "KnSdpa: gradients with a separate past key/value are not supported");
    bool has_bias = c->n_in > 3 && c->in[3] >= 0;
    /* the kernel writes the logsumexp for float32 only; other dtypes recompute it */
    int lse = ag_dtype(c, c->in[0]) == KN_F32 ? ag_forward_output(c, 1, "lse") : -1;
    kn_attr at[2];
    int na = 0;
    if (p->has_scale) at[na++] = ag_attr_float("scale", p->scale);
    if (p->is_causal) at[na++] = ag_attr_int("is_causal", 1);
    int in[7] = {c->dy[0], c->in[0], c->in[1], c->in[2], has_bias ? c->in[3] : -1, c->out[0], lse}, out[4];
    bool want_bias = has_bias && c->need[3];
    if (ag_node(c, "SdpaGrad", "kiln", in, lse >= 0 ? 7 : 6, out, want_bias ? 4 : 3, at, na) < 0) return c->err;
    for (int k = 0; k < 3; k++) ag_set(c, k, out[k]);
    if (want_bias) {
        int ins[2] = {out[3], ag_shape(c, c->in[3])};
        ag_set(c, 3, ag_kiln(c, "ReduceSumTo", ins, 2, NULL, 0));
    }
    return c->err;
}

/* ---- com.microsoft Attention and MultiHeadAttention ----
 * The forward stays the fused kernel (kernels/cpu/contrib.c); the backward rebuilds the heads from
 * the projections (one MatMul, or bias Adds, recomputed rather than kept) and runs the same
 * SdpaGrad as KnSdpa, with the key-padding and causal masks turned into the additive bias the
 * forward kernel adds (ms_build_mask), so a model ONNX Runtime's optimizer fused is trainable
 * without a rewrite of its forward. The logsumexp is recomputed by SdpaGrad (the fused forward
 * does not write it). Past / present key-value caches are refused: they belong to decoding, not
 * to training. */

static const int64_t ma_perm[4] = {0, 2, 1, 3};

/* [B,S,N*h] -> [B,N,S,h] */
static int ma_heads(kn_grad_ctx *c, int x, int64_t N) {
    const int64_t shp[4] = {0, 0, N, -1};
    return ag_transpose(c, ag_op2(c, "Reshape", x, ag_ints(c, shp, 4)), ma_perm, 4);
}

/* [B,N,S,h] -> [B,S,N*h] */
static int ma_merge(kn_grad_ctx *c, int x) {
    const int64_t shp[3] = {0, 0, -1};
    return ag_op2(c, "Reshape", ag_transpose(c, x, ma_perm, 4), ag_ints(c, shp, 3));
}

/* A 0-d int64 constant. */
static int ma_i64(kn_grad_ctx *c, int64_t x) {
    kn_tensor *t = NULL;
    kn_status *st = kn_tensor_new(KN_I64, 0, NULL, &t);
    if (st) return ag_fail(c, st);
    memcpy(t->data, &x, sizeof x);
    return ag_const(c, t);
}

/* Dimension `axis` of value v at run time, as an int64 scalar. */
static int ma_dim(kn_grad_ctx *c, int v, int64_t axis) { return ag_op2(c, "Gather", ag_shape(c, v), ma_i64(c, axis)); }

/* 0, 1, ..., n-1 (int64) for the int64 scalar n. */
static int ma_range(kn_grad_ctx *c, int n) {
    int in[3] = {ma_i64(c, 0), n, ma_i64(c, 1)};
    return ag_op(c, "Range", in, 3, NULL, 0);
}

static int ma_unsqueeze(kn_grad_ctx *c, int x, const int64_t *axes, int n) {
    return ag_op2(c, "Unsqueeze", x, ag_ints(c, axes, n));
}

/* Where(keep, 0, filter) in the dtype of like. */
static int ma_filter(kn_grad_ctx *c, bool keep_is_zero, int cond, float filter, int like) {
    int z = ag_scalar(c, 0.0, like), f = ag_scalar(c, filter, like);
    int in[3] = {cond, keep_is_zero ? z : f, keep_is_zero ? f : z};
    return ag_op(c, "Where", in, 3, NULL, 0);
}

/* The additive bias the forward kernel builds from mask_index and unidirectional (contrib.c,
 * ms_build_mask), as nodes broadcasting to [B,N,S,T]: filter where a key is masked, plus filter
 * above the diagonal when causal; -1 when neither applies. q is a [B,S,*] value (batch and query
 * length), key a value whose dimension t_axis is the key length T; no past, so query i sits at
 * key position i. Mask forms: [B] key ends, [2B] ends then starts (told apart at run time, so
 * symbolic batch sizes work), [B,T] and [B,S,T] with 1 = keep. */
static int ma_mask_bias(kn_grad_ctx *c, int mask, bool causal, float filter, int q, int key, int64_t t_axis) {
    int bias = -1, T = -1, pos = -1;
    if (mask >= 0 || causal) {
        T = ma_dim(c, key, t_axis);
        pos = ma_range(c, T); /* [T] */
    }
    if (mask >= 0) {
        int r = ag_rank(c, mask);
        kn_attr to64 = ag_attr_int("to", KN_I64);
        int m = ag_op(c, "Cast", &mask, 1, &to64, 1);
        int keep = -1;
        int64_t ax[2] = {1, 2};
        if (r == 1) {
            /* end = m[0:B]; start = (m[B:] ++ zeros)[0:B] */
            int b = ag_op2(c, "Unsqueeze", ma_dim(c, q, 0), ag_ints(c, (const int64_t[]){0}, 1)); /* [1] */
            int zero1 = ag_ints(c, (const int64_t[]){0}, 1), big = ag_ints(c, (const int64_t[]){INT64_MAX}, 1);
            int s1[3] = {m, zero1, b}, s2[3] = {m, b, big};
            int end = ag_op(c, "Slice", s1, 3, NULL, 0);
            int rest = ag_op(c, "Slice", s2, 3, NULL, 0);
            int zeros = ag_mul(c, end, ma_i64(c, 0));
            kn_attr cat0 = ag_attr_int("axis", 0);
            int cc[2] = {rest, zeros};
            int padded = ag_op(c, "Concat", cc, 2, &cat0, 1);
            int s3[3] = {padded, zero1, b};
            int start = ag_op(c, "Slice", s3, 3, NULL, 0);
            int e1 = ma_unsqueeze(c, end, ax, 1), st1 = ma_unsqueeze(c, start, ax, 1); /* [B,1] */
            int ok_end = ag_op2(c, "Less", pos, e1);
            int before = ag_op2(c, "Less", pos, st1);
            keep = ag_op2(c, "And", ok_end, ag_op1(c, "Not", before)); /* [B,T] */
            keep = ma_unsqueeze(c, keep, ax, 2);                       /* [B,1,1,T] */
        } else if (r == 2 || r == 3) {
            keep = ag_op2(c, "Greater", m, ma_i64(c, 0));
            keep = ma_unsqueeze(c, keep, ax, r == 2 ? 2 : 1);
        } else {
            return ag_fail(c,
                           kn_error(KN_ERR_UNSUPPORTED,
                                    "%s: gradient with a mask_index of rank %d (need [B], [2B], [B,T] or "
                                    "[B,S,T], rank known statically)",
                                    c->g->nodes[c->node].op_type, r));
        }
        bias = ma_filter(c, true, keep, filter, q);
    }
    if (causal) {
        int64_t ax1[1] = {1};
        int rows = ma_unsqueeze(c, ma_range(c, ma_dim(c, q, 1)), ax1, 1); /* [S,1] */
        int above = ag_op2(c, "Greater", pos, rows);                      /* [S,T] */
        int cb = ma_filter(c, false, above, filter, q);
        bias = bias >= 0 ? ag_add(c, bias, cb) : cb;
    }
    return bias;
}

/* SdpaGrad on heads Q [B,N,S,H], K, V [B,N,T,*] with the forward output y [B,S,N*Hv] and its
 * gradient dy; bias (or -1) is the additive score bias. Writes dQ, dK, dV (heads layout) and,
 * when want_ds, the score gradient [B,N,S,T]. */
static int ma_sdpa_grad(kn_grad_ctx *c, int dy, int Q, int K, int V, int bias, int y, int64_t N, float scale,
                        bool want_ds, int out[4]) {
    kn_attr at = ag_attr_float("scale", scale);
    int in[6] = {ma_heads(c, dy, N), Q, K, V, bias, ma_heads(c, y, N)};
    return ag_node(c, "SdpaGrad", "kiln", in, 6, out, want_ds ? 4 : 3, &at, 1);
}

static kn_status *ma_refuse(kn_grad_ctx *c, const char *op, const char *what) {
    (void)c;
    return kn_error(KN_ERR_UNSUPPORTED, "%s: no gradient with %s", op, what);
}

/* Attention(input [B,S,Din], weights [Din, q+k+v], bias?, mask_index?, past?, attention_bias?,
 * past_sequence_length?) -> output [B,S,N*Hv], present?. */
kn_status *kn_grad_MsAttention(kn_grad_ctx *c) {
    const kn_params_ms_attention *p = KN_GRAD_PARAMS(c, ms_attention);
#define MA_IN(i) (c->n_in > (i) ? c->in[i] : -1)
    int x = c->in[0], w = MA_IN(1), bias = MA_IN(2), mask = MA_IN(3), ab = MA_IN(5);
    if (MA_IN(4) >= 0 || MA_IN(6) >= 0) return ma_refuse(c, "Attention", "past state");
#undef MA_IN
    if (c->n_out > 1 && c->dy[1] >= 0) return ma_refuse(c, "Attention", "a gradient flowing into present");
    if (p->do_rotary || p->past_present_share_buffer)
        return ma_refuse(c, "Attention", "do_rotary or past_present_share_buffer");
    if (w < 0) return kn_error(KN_ERR_INVALID_MODEL, "Attention: weights input is required");
    if (c->dy[0] < 0) return NULL;
    const kn_tensor *wt = ag_type(c, w);
    int64_t N = p->num_heads, hq, hv;
    if (p->n_qkv_hidden_sizes == 3) {
        hq = p->qkv_hidden_sizes[0];
        hv = p->qkv_hidden_sizes[2];
    } else if (wt && wt->ndim == 2 && wt->dims[1] > 0 && wt->dims[1] % 3 == 0) {
        hq = hv = wt->dims[1] / 3;
    } else {
        return kn_error(KN_ERR_UNSUPPORTED,
                        "Attention: the gradient needs the weights' shape [Din, 3*hidden] statically");
    }
    if (N <= 0 || hq % N || hv % N)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: hidden sizes %lld/%lld not divisible by num_heads %lld",
                        (long long)hq, (long long)hv, (long long)N);
    float scale = p->scale != 0.0f ? p->scale : (float)(1.0 / sqrt((double)(hq / N)));

    /* the projection again, split into q, k, v */
    int proj = ag_op2(c, "MatMul", x, w);
    if (bias >= 0) proj = ag_add(c, proj, bias);
    const int64_t sizes[3] = {hq, hq, hv};
    kn_attr ax = ag_attr_int("axis", -1);
    int sp_in[2] = {proj, ag_ints(c, sizes, 3)}, qkv[3];
    if (ag_node(c, "Split", "", sp_in, 2, qkv, 3, &ax, 1) < 0) return c->err;
    int Q = ma_heads(c, qkv[0], N), K = ma_heads(c, qkv[1], N), V = ma_heads(c, qkv[2], N);
    int sb = ma_mask_bias(c, mask, p->unidirectional, p->mask_filter_value, x, x, 1);
    if (ab >= 0) sb = sb >= 0 ? ag_add(c, sb, ab) : ab;
    bool want_ds = ab >= 0 && c->need[5];
    int d[4];
    if (ma_sdpa_grad(c, c->dy[0], Q, K, V, sb, c->out[0], N, scale, want_ds, d) < 0) return c->err;

    int cat[3] = {ma_merge(c, d[0]), ma_merge(c, d[1]), ma_merge(c, d[2])};
    int dproj = ag_op(c, "Concat", cat, 3, &ax, 1); /* [B,S,q+k+v] */
    if (c->need[0]) {
        const int64_t perm[2] = {1, 0};
        ag_set(c, 0, ag_op2(c, "MatMul", dproj, ag_transpose(c, w, perm, 2)));
    }
    if (c->need[1]) {
        kn_attr fl = ag_attr_int("axis", 2), ta = ag_attr_int("transA", 1);
        int x2 = ag_op(c, "Flatten", &x, 1, &fl, 1), d2 = ag_op(c, "Flatten", &dproj, 1, &fl, 1);
        int gi[2] = {x2, d2};
        ag_set(c, 1, ag_op(c, "Gemm", gi, 2, &ta, 1));
    }
    if (bias >= 0 && c->need[2]) {
        int in[2] = {dproj, ag_shape(c, bias)};
        ag_set(c, 2, ag_kiln(c, "ReduceSumTo", in, 2, NULL, 0));
    }
    if (want_ds) {
        int in[2] = {d[3], ag_shape(c, ab)};
        ag_set(c, 5, ag_kiln(c, "ReduceSumTo", in, 2, NULL, 0));
    }
    return c->err;
}

/* MultiHeadAttention(query [B,S,D], key, value ([B,L,D] / [B,L,Dv], or [B,N,L,H] / [B,N,L,Hv]),
 * bias [2D+Dv]?, key_padding_mask?, attention_bias?, past_key?, past_value?, ...) -> output,
 * present_key?, present_value?, qk?. */
kn_status *kn_grad_MsMultiHeadAttention(kn_grad_ctx *c) {
    const kn_params_ms_attention *p = KN_GRAD_PARAMS(c, ms_attention);
#define MA_IN(i) (c->n_in > (i) ? c->in[i] : -1)
    int q = c->in[0], k = MA_IN(1), v = MA_IN(2), bias = MA_IN(3), mask = MA_IN(4), ab = MA_IN(5);
    if (MA_IN(6) >= 0 || MA_IN(7) >= 0 || MA_IN(8) >= 0 || MA_IN(9) >= 0)
        return ma_refuse(c, "MultiHeadAttention", "past state or cache_indirection");
#undef MA_IN
    for (int o = 1; o < c->n_out; o++)
        if (c->dy[o] >= 0)
            return ma_refuse(c, "MultiHeadAttention", "a gradient flowing into present_key/present_value/qk");
    if (k < 0 || v < 0) return ma_refuse(c, "MultiHeadAttention", "packed QKV or packed KV");
    if (c->dy[0] < 0) return NULL;
    int64_t N = p->num_heads;
    const kn_tensor *qt = ag_type(c, q), *vt = ag_type(c, v);
    bool bnsh = ag_rank(c, k) == 4;
    if (N <= 0 || !qt || qt->ndim != 3 || qt->dims[2] <= 0 || qt->dims[2] % N)
        return kn_error(KN_ERR_UNSUPPORTED,
                        "MultiHeadAttention: the gradient needs query [B,S,D] with D known and divisible by "
                        "num_heads %lld",
                        (long long)N);
    int64_t D = qt->dims[2];
    float scale = p->scale != 0.0f ? p->scale : (float)(1.0 / sqrt((double)(D / N)));
    int bq = -1, bk = -1, bv = -1;
    if (bias >= 0) {
        if (bnsh || !vt || vt->ndim != 3 || vt->dims[2] <= 0)
            return kn_error(KN_ERR_UNSUPPORTED,
                            "MultiHeadAttention: the gradient with a bias needs value [B,L,Dv] with Dv known");
        const int64_t sizes[3] = {D, D, vt->dims[2]};
        kn_attr ax0 = ag_attr_int("axis", 0);
        int sp_in[2] = {bias, ag_ints(c, sizes, 3)}, b3[3];
        if (ag_node(c, "Split", "", sp_in, 2, b3, 3, &ax0, 1) < 0) return c->err;
        bq = b3[0];
        bk = b3[1];
        bv = b3[2];
    }
    int Q = ma_heads(c, bq >= 0 ? ag_add(c, q, bq) : q, N);
    int K = bnsh ? k : ma_heads(c, bk >= 0 ? ag_add(c, k, bk) : k, N);
    int V = bnsh ? v : ma_heads(c, bv >= 0 ? ag_add(c, v, bv) : v, N);
    int sb = ma_mask_bias(c, mask, p->unidirectional, p->mask_filter_value, q, k, bnsh ? 2 : 1);
    if (ab >= 0) sb = sb >= 0 ? ag_add(c, sb, ab) : ab;
    bool want_ds = ab >= 0 && c->need[5];
    int d[4];
    if (ma_sdpa_grad(c, c->dy[0], Q, K, V, sb, c->out[0], N, scale, want_ds, d) < 0) return c->err;
    int dq = ma_merge(c, d[0]);
    int dk = bnsh ? d[1] : ma_merge(c, d[1]), dv = bnsh ? d[2] : ma_merge(c, d[2]);
    ag_set(c, 0, dq);
    ag_set(c, 1, dk);
    ag_set(c, 2, dv);
    if (bias >= 0 && c->need[3]) {
        const int64_t axes[2] = {0, 1};
        kn_attr kd = ag_attr_int("keepdims", 0), ax = ag_attr_int("axis", 0);
        int parts[3];
        int src[3] = {dq, dk, dv};
        for (int i = 0; i < 3; i++) {
            int in[2] = {src[i], ag_ints(c, axes, 2)};
            parts[i] = ag_op(c, "ReduceSum", in, 2, &kd, 1);
        }
        ag_set(c, 3, ag_op(c, "Concat", parts, 3, &ax, 1));
    }
    if (want_ds) {
        int in[2] = {d[3], ag_shape(c, ab)};
        ag_set(c, 5, ag_kiln(c, "ReduceSumTo", in, 2, NULL, 0));
    }
    return c->err;
}
