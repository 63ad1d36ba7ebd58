/* Params decoders and shape rules of the text-generation ops that ONNX Runtime GenAI folders and
 * int4 exports use: SimplifiedLayerNormalization (ONNX Runtime registers it in the default
 * domain), com.microsoft SkipSimplifiedLayerNormalization, RotaryEmbedding, GroupQueryAttention,
 * MatMulNBits and GatherBlockQuantized, with the layouts of ONNX Runtime's schemas. Unknown dims
 * propagate as -1; inconsistencies visible at load (MatMulNBits' block count against K, its blob
 * size) are refused here, naming the node. */
#include "graph/op_helpers.h"
#include "graph/ops.h"
#include "runtime/core/dtype.h"
#include <string.h>

static const kn_tensor *gi_in(const kn_infer_ctx *c, int i) { return i < c->n_in ? c->in[i] : NULL; }
static kn_tensor *gi_out(const kn_infer_ctx *c, int i) { return i < c->n_out ? c->out[i] : NULL; }
static const char *gi_name(const kn_node *n) { return n->name ? n->name : ""; }

static void gi_set(kn_tensor *t, kn_dtype dt, int ndim, const int64_t *dims) {
    if (!t) return;
    t->dtype = dt;
    if (ndim < 0) t->ndim = -1;
    else kn_tensor_set_shape(t, ndim, dims);
}

static bool gi_float(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_BF16 || t == KN_F64; }

static kn_status *gi_need_float(const kn_node *n, const kn_tensor *t, const char *what) {
    char b[KN_DESC_LEN];
    if (!t) return kn_error(KN_ERR_INVALID_MODEL, "%s '%s': missing input %s", n->op_type, gi_name(n), what);
    if (!gi_float(t->dtype))
        return kn_error(KN_ERR_UNSUPPORTED, "%s '%s': %s must be float32/float16/bfloat16, got %s", n->op_type,
                        gi_name(n), what, kn_tensor_desc(t, b, sizeof b));
    return NULL;
}

/* ---- params decoders ---- */

kn_status *kn_params_decode_ms_rotary(const kn_node *n, void *out) {
    kn_params_ms_rotary *p = out;
    p->num_heads = kn_attr_int(n, "num_heads", 0);
    p->rotary_embedding_dim = kn_attr_int(n, "rotary_embedding_dim", 0);
    p->interleaved = kn_attr_int(n, "interleaved", 0) != 0;
    p->is_packed_batching = kn_attr_int(n, "is_packed_batching", 0) != 0;
    p->scale = kn_attr_float(n, "scale", 1.0f);
    if (p->num_heads < 0 || p->rotary_embedding_dim < 0)
        return kn_error(KN_ERR_INVALID_MODEL, "RotaryEmbedding '%s': num_heads and rotary_embedding_dim must be >= 0",
                        gi_name(n));
    return NULL;
}

kn_status *kn_params_decode_ms_gqa(const kn_node *n, void *out) {
    kn_params_ms_gqa *p = out;
    p->num_heads = kn_attr_int(n, "num_heads", 0);
    p->kv_num_heads = kn_attr_int(n, "kv_num_heads", 0);
    p->local_window_size = kn_attr_int(n, "local_window_size", -1);
    p->scale = kn_attr_float(n, "scale", 0.0f);
    p->softcap = kn_attr_float(n, "softcap", 0.0f);
    p->do_rotary = kn_attr_int(n, "do_rotary", 0) != 0;
    p->rotary_interleaved = kn_attr_int(n, "rotary_interleaved", 0) != 0;
    p->smooth_softmax = kn_attr_int(n, "smooth_softmax", -1) > 0;
    p->qk_output = kn_attr_int(n, "qk_output", 0);
    const char *kq = kn_attr_str(n, "k_quant_type", "NONE"), *vq = kn_attr_str(n, "v_quant_type", "NONE");
    p->quantized_kv = strcmp(kq, "NONE") != 0 || strcmp(vq, "NONE") != 0;
    if (p->num_heads <= 0 || p->kv_num_heads <= 0 || p->num_heads % p->kv_num_heads)
        return kn_error(KN_ERR_INVALID_MODEL,
                        "GroupQueryAttention '%s': num_heads (%lld) must be a positive multiple of kv_num_heads (%lld)",
                        gi_name(n), (long long)p->num_heads, (long long)p->kv_num_heads);
    if (!(p->softcap >= 0.0f))
        return kn_error(KN_ERR_INVALID_MODEL, "GroupQueryAttention '%s': softcap must be >= 0", gi_name(n));
    return NULL;
}

kn_status *kn_params_decode_ms_nbits(const kn_node *n, void *out) {
    kn_params_ms_nbits *p = out;
    p->K = kn_attr_int(n, "K", -1);
    p->N = kn_attr_int(n, "N", -1);
    p->bits = kn_attr_int(n, "bits", 4);
    p->block_size = kn_attr_int(n, "block_size", -1);
    p->accuracy_level = kn_attr_int(n, "accuracy_level", 0);
    p->weight_prepacked = kn_attr_int(n, "weight_prepacked", 0) != 0;
    if (p->K <= 0 || p->N <= 0)
        return kn_error(KN_ERR_INVALID_MODEL, "MatMulNBits '%s': attributes K and N must be given and > 0", gi_name(n));
    if (p->bits != 4 && p->bits != 8)
        return kn_error(KN_ERR_UNSUPPORTED, "MatMulNBits '%s': bits=%lld (kiln supports 4 and 8)", gi_name(n),
                        (long long)p->bits);
    int64_t bs = p->block_size;
    if (bs < 16 || bs > 256 || (bs & (bs - 1)))
        return kn_error(KN_ERR_INVALID_MODEL, "MatMulNBits '%s': block_size=%lld must be a power of 2 in 16..256",
                        gi_name(n), (long long)bs);
    if (p->accuracy_level < 0 || p->accuracy_level > 4)
        return kn_error(KN_ERR_INVALID_MODEL, "MatMulNBits '%s': accuracy_level=%lld must be 0..4", gi_name(n),
                        (long long)p->accuracy_level);
    if (p->weight_prepacked)
        return kn_error(KN_ERR_UNSUPPORTED, "MatMulNBits '%s': weight_prepacked=1 (an ORT-specific layout)",
                        gi_name(n));
    return NULL;
}

kn_status *kn_params_decode_ms_gbq(const kn_node *n, void *out) {
    kn_params_ms_gbq *p = out;
    p->bits = kn_attr_int(n, "bits", 4);
    p->block_size = kn_attr_int(n, "block_size", 128);
    p->quantize_axis = kn_attr_int(n, "quantize_axis", 1);
    p->gather_axis = kn_attr_int(n, "gather_axis", 0);
    if (p->bits != 4 && p->bits != 8)
        return kn_error(KN_ERR_UNSUPPORTED, "GatherBlockQuantized '%s': bits=%lld (kiln supports 4 and 8)", gi_name(n),
                        (long long)p->bits);
    int64_t bs = p->block_size;
    if (bs < 16 || (bs & (bs - 1)))
        return kn_error(KN_ERR_INVALID_MODEL, "GatherBlockQuantized '%s': block_size=%lld must be a power of 2 >= 16",
                        gi_name(n), (long long)bs);
    return NULL;
}

/* ---- SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization ---- */

/* Y takes X's shape in the scale's type (ONNX Runtime's V); inv_std_var X's leading dims then
 * ones, in float32 (stash_type 1) or float64. */
kn_status *kn_infer_SimplifiedLayerNormalization(kn_infer_ctx *c) {
    const kn_node *n = c->node;
    const kn_tensor *x = gi_in(c, 0), *sc = gi_in(c, 1);
    KN_TRY(gi_need_float(n, x, "X"));
    KN_TRY(gi_need_float(n, sc, "scale"));
    const kn_params_layernorm *p = KN_PARAMS(n, layernorm);
    kn_dtype st = p->stash_type == KN_F64 ? KN_F64 : KN_F32;
    if (x->ndim < 0) {
        gi_set(gi_out(c, 0), sc->dtype, -1, NULL);
        gi_set(gi_out(c, 1), st, -1, NULL);
        return NULL;
    }
    if (x->ndim < 1)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "SimplifiedLayerNormalization '%s': X must have rank >= 1",
                        gi_name(n));
    int axis;
    KN_TRY(kn_norm_axis(p->axis, x->ndim, n, &axis));
    int64_t d[KN_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) d[i] = x->dims[i];
    gi_set(gi_out(c, 0), sc->dtype, x->ndim, d);
    for (int i = axis; i < x->ndim; i++) d[i] = 1;
    gi_set(gi_out(c, 1), st, x->ndim, d);
    return NULL;
}

/* output and input_skip_bias_sum take the input's shape and type; mean (written as zeros, as
 * ONNX Runtime does) and inv_std_var the leading dims then 1, in float32. */
kn_status *kn_infer_MsSkipSimplifiedLayerNormalization(kn_infer_ctx *c) {
    const kn_node *n = c->node;
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_tensor *x = gi_in(c, 0);
    KN_TRY(gi_need_float(n, x, "input"));
    KN_TRY(gi_need_float(n, gi_in(c, 1), "skip"));
    KN_TRY(gi_need_float(n, gi_in(c, 2), "gamma"));
    for (int i = 2; i < 4; i++) {
        const kn_tensor *v = gi_in(c, i);
        if (!v) continue;
        KN_TRY(gi_need_float(n, v, i == 2 ? "gamma" : "bias"));
        if (v->ndim >= 0 && x->ndim > 0 &&
            (v->ndim != 1 || (v->dims[0] >= 0 && x->dims[x->ndim - 1] >= 0 && v->dims[0] != x->dims[x->ndim - 1])))
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "SkipSimplifiedLayerNormalization '%s': %s %s must be [%lld] for %s", gi_name(n),
                            i == 2 ? "gamma" : "bias", kn_tensor_desc(v, b0, sizeof b0),
                            (long long)x->dims[x->ndim - 1], kn_tensor_desc(x, b1, sizeof b1));
    }
    if (x->ndim < 0) {
        gi_set(gi_out(c, 0), x->dtype, -1, NULL);
        gi_set(gi_out(c, 1), KN_F32, -1, NULL);
        gi_set(gi_out(c, 2), KN_F32, -1, NULL);
        gi_set(gi_out(c, 3), x->dtype, -1, NULL);
        return NULL;
    }
    if (x->ndim < 2 || x->ndim > 3)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "SkipSimplifiedLayerNormalization '%s': input %s must be 2-D or 3-D",
                        gi_name(n), kn_tensor_desc(x, b0, sizeof b0));
    int64_t d[KN_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) d[i] = x->dims[i];
    gi_set(gi_out(c, 0), x->dtype, x->ndim, d);
    gi_set(gi_out(c, 3), x->dtype, x->ndim, d);
    d[x->ndim - 1] = 1;
    gi_set(gi_out(c, 1), KN_F32, x->ndim, d);
    gi_set(gi_out(c, 2), KN_F32, x->ndim, d);
    return NULL;
}

/* ---- RotaryEmbedding (com.microsoft): input, position_ids, cos_cache, sin_cache ---- */

kn_status *kn_infer_MsRotaryEmbedding(kn_infer_ctx *c) {
    const kn_node *n = c->node;
    char b0[KN_DESC_LEN];
    const kn_tensor *x = gi_in(c, 0), *pos = gi_in(c, 1);
    KN_TRY(gi_need_float(n, x, "input"));
    if (!pos) return kn_error(KN_ERR_INVALID_MODEL, "RotaryEmbedding '%s': position_ids is required", gi_name(n));
    if (pos->dtype != KN_I64)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "RotaryEmbedding '%s': position_ids %s must be int64", gi_name(n),
                        kn_tensor_desc(pos, b0, sizeof b0));
    KN_TRY(gi_need_float(n, gi_in(c, 2), "cos_cache"));
    KN_TRY(gi_need_float(n, gi_in(c, 3), "sin_cache"));
    if (x->ndim >= 0 && x->ndim != 3 && x->ndim != 4)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "RotaryEmbedding '%s': input %s must be 3-D or 4-D", gi_name(n),
                        kn_tensor_desc(x, b0, sizeof b0));
    return kn_infer_same_as_input0(c);
}

/* ---- GroupQueryAttention ---- */

/* output [B, S, num_heads * H]; present_key/value [B, kv_num_heads, max(total_sequence_length,
 * past capacity), H], so the present length follows total_sequence_length's value (known at run
 * time, or earlier when constant). */
kn_status *kn_infer_MsGroupQueryAttention(kn_infer_ctx *c) {
    const kn_node *n = c->node;
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_params_ms_gqa *p = KN_PARAMS(n, ms_gqa);
    const kn_tensor *q = gi_in(c, 0), *k = gi_in(c, 1), *v = gi_in(c, 2), *pk = gi_in(c, 3), *pv = gi_in(c, 4);
    const kn_tensor *sl = gi_in(c, 5), *tl = gi_in(c, 6);
    KN_TRY(gi_need_float(n, q, "query"));
    if ((k == NULL) != (v == NULL))
        return kn_error(KN_ERR_INVALID_MODEL, "GroupQueryAttention '%s': key and value go together", gi_name(n));
    if ((pk == NULL) != (pv == NULL))
        return kn_error(KN_ERR_INVALID_MODEL, "GroupQueryAttention '%s': past_key and past_value go together",
                        gi_name(n));
    if (!sl || !tl)
        return kn_error(KN_ERR_INVALID_MODEL,
                        "GroupQueryAttention '%s': seqlens_k and total_sequence_length are required", gi_name(n));
    if (sl->dtype != KN_I32 || tl->dtype != KN_I32)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "GroupQueryAttention '%s': seqlens_k %s and total_sequence_length %s must be int32", gi_name(n),
                        kn_tensor_desc(sl, b0, sizeof b0), kn_tensor_desc(tl, b1, sizeof b1));
    if (pk) {
        KN_TRY(gi_need_float(n, pk, "past_key"));
        KN_TRY(gi_need_float(n, pv, "past_value"));
    }
    int64_t N = p->num_heads, KV = p->kv_num_heads;
    if (q->ndim >= 0 && q->ndim != 3)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "GroupQueryAttention '%s': query %s must be [B, S, hidden]",
                        gi_name(n), kn_tensor_desc(q, b0, sizeof b0));
    if (q->ndim < 0) {
        for (int i = 0; i < c->n_out; i++) gi_set(gi_out(c, i), q->dtype, -1, NULL);
        return NULL;
    }
    int64_t B = q->dims[0], S = q->dims[1], D = q->dims[2], H = -1;
    if (D >= 0) {
        int64_t parts = k ? N : N + 2 * KV;
        if (D % parts)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "GroupQueryAttention '%s': query %s hidden size is not divisible by %lld heads%s",
                            gi_name(n), kn_tensor_desc(q, b0, sizeof b0), (long long)parts,
                            k ? "" : " (packed Q, K, V)");
        H = D / parts;
    }
    int64_t od[3] = {B, S, H >= 0 ? N * H : -1};
    gi_set(gi_out(c, 0), q->dtype, 3, od);
    int64_t total = -1;
    if (tl->data && kn_numel(tl) == 1) total = kn_get_i64(tl, 0);
    int64_t cap = pk ? (pk->ndim == 4 ? pk->dims[2] : -1) : 0;
    int64_t T = (total < 0 || cap < 0) ? -1 : (total > cap ? total : cap);
    if (T < 0 && tl->data == NULL) {
        /* the present length needs total_sequence_length's value: known at run time */
        gi_set(gi_out(c, 1), pk ? pk->dtype : q->dtype, -1, NULL);
        gi_set(gi_out(c, 2), pk ? pv->dtype : q->dtype, -1, NULL);
        gi_set(gi_out(c, 3), q->dtype, -1, NULL);
        return NULL;
    }
    int64_t pd[4] = {B, KV, T, H};
    gi_set(gi_out(c, 1), pk ? pk->dtype : q->dtype, 4, pd);
    gi_set(gi_out(c, 2), pk ? pv->dtype : q->dtype, 4, pd);
    int64_t qd[4] = {B, N, S, T};
    gi_set(gi_out(c, 3), q->dtype, 4, qd);
    return NULL;
}

/* ---- MatMulNBits ---- */

kn_status *kn_nbits_check(const kn_node *n, const kn_tensor *b, const kn_tensor *sc, const kn_tensor *zp,
                          const kn_tensor *gidx) {
    char b0[KN_DESC_LEN];
    const kn_params_ms_nbits *p = KN_PARAMS(n, ms_nbits);
    int64_t nb = (p->K + p->block_size - 1) / p->block_size, blob = p->block_size * p->bits / 8;
    if (!b || b->dtype != KN_U8)
        return kn_error(KN_ERR_INVALID_MODEL, "MatMulNBits '%s': B must be uint8, got %s", gi_name(n),
                        b ? kn_tensor_desc(b, b0, sizeof b0) : "nothing");
    if (b->ndim >= 0) {
        bool ok = false;
        if (b->ndim == 3)
            ok = (b->dims[0] < 0 || b->dims[0] == p->N) && (b->dims[1] < 0 || b->dims[1] == nb) &&
                (b->dims[2] < 0 || b->dims[2] == blob);
        else if (b->ndim == 2) /* [N, blocks * blob] as some exporters flatten it */
            ok = (b->dims[0] < 0 || b->dims[0] == p->N) && (b->dims[1] < 0 || b->dims[1] == nb * blob);
        if (!ok)
            return kn_error(
                KN_ERR_INVALID_MODEL,
                "MatMulNBits '%s': B %s does not match K=%lld N=%lld bits=%lld block_size=%lld (want [%lld, "
                "%lld, %lld]: %lld blocks of %lld bytes)",
                gi_name(n), kn_tensor_desc(b, b0, sizeof b0), (long long)p->K, (long long)p->N, (long long)p->bits,
                (long long)p->block_size, (long long)p->N, (long long)nb, (long long)blob, (long long)nb,
                (long long)blob);
    }
    if (!sc) return kn_error(KN_ERR_INVALID_MODEL, "MatMulNBits '%s': scales is required", gi_name(n));
    if (!gi_float(sc->dtype) || sc->dtype == KN_F64)
        return kn_error(KN_ERR_UNSUPPORTED, "MatMulNBits '%s': scales %s must be float32/float16/bfloat16", gi_name(n),
                        kn_tensor_desc(sc, b0, sizeof b0));
    if (sc->ndim >= 0) {
        int64_t cnt = 1;
        bool known = true;
        for (int i = 0; i < sc->ndim; i++) {
            if (sc->dims[i] < 0) known = false;
            cnt *= sc->dims[i];
        }
        if (known && cnt != p->N * nb)
            return kn_error(KN_ERR_INVALID_MODEL,
                            "MatMulNBits '%s': scales %s must hold N * blocks = %lld * %lld values", gi_name(n),
                            kn_tensor_desc(sc, b0, sizeof b0), (long long)p->N, (long long)nb);
    }
    if (zp && zp->ndim >= 0) {
        int64_t cnt = 1;
        bool known = true;
        for (int i = 0; i < zp->ndim; i++) {
            if (zp->dims[i] < 0) known = false;
            cnt *= zp->dims[i];
        }
        int64_t want = zp->dtype == KN_U8 ? p->N * ((nb * p->bits + 7) / 8) : p->N * nb;
        if (zp->dtype != KN_U8 && zp->dtype != sc->dtype)
            return kn_error(KN_ERR_INVALID_MODEL,
                            "MatMulNBits '%s': zero_points %s must be uint8 (packed) or the scales' type", gi_name(n),
                            kn_tensor_desc(zp, b0, sizeof b0));
        if (known && cnt != want)
            return kn_error(KN_ERR_INVALID_MODEL, "MatMulNBits '%s': zero_points %s must hold %lld values", gi_name(n),
                            kn_tensor_desc(zp, b0, sizeof b0), (long long)want);
    }
    if (gidx) return kn_error(KN_ERR_UNSUPPORTED, "MatMulNBits '%s': g_idx is not supported", gi_name(n));
    return NULL;
}

kn_status *kn_infer_MsMatMulNBits(kn_infer_ctx *c) {
    const kn_node *n = c->node;
    char b0[KN_DESC_LEN];
    const kn_params_ms_nbits *p = KN_PARAMS(n, ms_nbits);
    const kn_tensor *a = gi_in(c, 0), *bias = gi_in(c, 5);
    if (!a || !gi_float(a->dtype) || a->dtype == KN_F64)
        return kn_error(KN_ERR_UNSUPPORTED, "MatMulNBits '%s': A must be float32/float16/bfloat16, got %s", gi_name(n),
                        a ? kn_tensor_desc(a, b0, sizeof b0) : "nothing");
    KN_TRY(kn_nbits_check(n, gi_in(c, 1), gi_in(c, 2), gi_in(c, 3), gi_in(c, 4)));
    if (bias && (bias->ndim >= 0 && (bias->ndim != 1 || (bias->dims[0] >= 0 && bias->dims[0] != p->N))))
        return kn_error(KN_ERR_INVALID_MODEL, "MatMulNBits '%s': bias %s must be [N=%lld]", gi_name(n),
                        kn_tensor_desc(bias, b0, sizeof b0), (long long)p->N);
    if (a->ndim < 0) {
        gi_set(gi_out(c, 0), a->dtype, -1, NULL);
        return NULL;
    }
    if (a->ndim < 1 || (a->dims[a->ndim - 1] >= 0 && a->dims[a->ndim - 1] != p->K))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "MatMulNBits '%s': A %s must end in K=%lld", gi_name(n),
                        kn_tensor_desc(a, b0, sizeof b0), (long long)p->K);
    int64_t d[KN_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) d[i] = a->dims[i];
    d[a->ndim - 1] = p->N;
    gi_set(gi_out(c, 0), a->dtype, a->ndim, d);
    return NULL;
}

/* ---- GatherBlockQuantized ---- */

/* The logical shape of data: uint8 data holds two 4-bit values per byte along its last dim. */
static int64_t gbq_last(const kn_node *n, const kn_tensor *data) {
    int64_t l = data->dims[data->ndim - 1];
    if (data->dtype == KN_U8 && KN_PARAMS(n, ms_gbq)->bits == 4 && l >= 0) l *= 2;
    return l;
}

kn_status *kn_infer_MsGatherBlockQuantized(kn_infer_ctx *c) {
    const kn_node *n = c->node;
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_params_ms_gbq *p = KN_PARAMS(n, ms_gbq);
    const kn_tensor *data = gi_in(c, 0), *idx = gi_in(c, 1), *sc = gi_in(c, 2);
    if (!data || !idx || !sc)
        return kn_error(KN_ERR_INVALID_MODEL, "GatherBlockQuantized '%s': data, indices and scales are required",
                        gi_name(n));
    if (data->dtype != KN_U8 && data->dtype != KN_U4 && data->dtype != KN_I4)
        return kn_error(KN_ERR_UNSUPPORTED, "GatherBlockQuantized '%s': data %s must be uint8, uint4 or int4",
                        gi_name(n), kn_tensor_desc(data, b0, sizeof b0));
    if ((data->dtype != KN_U8 || p->bits == 4) != (p->bits == 4))
        return kn_error(KN_ERR_INVALID_MODEL, "GatherBlockQuantized '%s': bits=%lld does not fit data %s", gi_name(n),
                        (long long)p->bits, kn_tensor_desc(data, b0, sizeof b0));
    if (idx->dtype != KN_I32 && idx->dtype != KN_I64)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "GatherBlockQuantized '%s': indices %s must be int32 or int64",
                        gi_name(n), kn_tensor_desc(idx, b0, sizeof b0));
    KN_TRY(gi_need_float(n, sc, "scales"));
    if (data->ndim < 0 || idx->ndim < 0) {
        gi_set(gi_out(c, 0), sc->dtype, -1, NULL);
        return NULL;
    }
    int ga, qa;
    KN_TRY(kn_norm_axis(p->gather_axis, data->ndim, n, &ga));
    KN_TRY(kn_norm_axis(p->quantize_axis, data->ndim, n, &qa));
    if (sc->ndim >= 0 && sc->ndim != data->ndim)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "GatherBlockQuantized '%s': scales %s must have data %s's rank",
                        gi_name(n), kn_tensor_desc(sc, b0, sizeof b0), kn_tensor_desc(data, b1, sizeof b1));
    if (data->ndim + idx->ndim - 1 > KN_MAX_DIMS)
        return kn_error(KN_ERR_UNSUPPORTED, "GatherBlockQuantized '%s': output rank too large", gi_name(n));
    int64_t d[KN_MAX_DIMS];
    int r = 0;
    for (int i = 0; i < ga; i++) d[r++] = data->dims[i];
    for (int i = 0; i < idx->ndim; i++) d[r++] = idx->dims[i];
    for (int i = ga + 1; i < data->ndim; i++) d[r++] = i == data->ndim - 1 ? gbq_last(n, data) : data->dims[i];
    gi_set(gi_out(c, 0), sc->dtype, r, d);
    return NULL;
}
