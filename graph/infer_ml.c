/* Params decoders and shape rules of the ai.onnx.ml map ops (ZipMap, CastMap, DictVectorizer).
 * ZipMap's sequence of maps and a DENSE CastMap's width are known only from the input map at run
 * time, so their rules leave the rank open and the kernels allocate. */
#include "graph/ops.h"
#include <string.h>

kn_status *kn_params_decode_ml_zipmap(const kn_node *n, void *out) {
    kn_params_ml_zipmap *p = out;
    const kn_attr *s = kn_node_attr(n, "classlabels_strings");
    const int64_t *iv = NULL;
    int ni = kn_attr_ints(n, "classlabels_int64s", &iv);
    KN_CHECK((s != NULL) != (ni >= 0), KN_ERR_INVALID_MODEL,
             "ZipMap: exactly one of classlabels_strings and classlabels_int64s is required");
    if (s) {
        KN_CHECK(s->type == KN_ATTR_STRINGS, KN_ERR_INVALID_MODEL, "ZipMap: classlabels_strings is not a string list");
        p->n_labels = s->n_strings;
        p->labels_s = (const char *const *)s->strings;
    } else {
        p->n_labels = ni;
        p->labels_i = iv;
    }
    return NULL;
}

kn_status *kn_params_decode_ml_castmap(const kn_node *n, void *out) {
    kn_params_ml_castmap *p = out;
    const char *to = kn_attr_str(n, "cast_to", "TO_FLOAT");
    if (!strcmp(to, "TO_FLOAT")) p->to = KN_F32;
    else if (!strcmp(to, "TO_STRING")) p->to = KN_STRING;
    else if (!strcmp(to, "TO_INT64")) p->to = KN_I64;
    else return kn_error(KN_ERR_INVALID_MODEL, "CastMap: unknown cast_to '%s'", to);
    const char *form = kn_attr_str(n, "map_form", "DENSE");
    if (!strcmp(form, "SPARSE")) p->sparse = true;
    else if (strcmp(form, "DENSE")) return kn_error(KN_ERR_INVALID_MODEL, "CastMap: unknown map_form '%s'", form);
    p->max_map = kn_attr_int(n, "max_map", 1);
    KN_CHECK(!p->sparse || (p->max_map > 0 && p->max_map <= KN_MAX_NUMEL), KN_ERR_INVALID_MODEL,
             "CastMap: max_map %lld must be positive", (long long)p->max_map);
    return NULL;
}

kn_status *kn_params_decode_ml_dictvec(const kn_node *n, void *out) {
    kn_params_ml_dictvec *p = out;
    const kn_attr *s = kn_node_attr(n, "string_vocabulary");
    const int64_t *iv = NULL;
    int ni = kn_attr_ints(n, "int64_vocabulary", &iv);
    KN_CHECK((s != NULL) != (ni >= 0), KN_ERR_INVALID_MODEL,
             "DictVectorizer: exactly one of string_vocabulary and int64_vocabulary is required");
    if (s) {
        KN_CHECK(s->type == KN_ATTR_STRINGS, KN_ERR_INVALID_MODEL,
                 "DictVectorizer: string_vocabulary is not a string list");
        p->n_vocab = s->n_strings;
        p->vocab_s = (const char *const *)s->strings;
    } else {
        p->n_vocab = ni;
        p->vocab_i = iv;
    }
    return NULL;
}

/* seq(map(label, float)): one map per row of X. */
kn_status *kn_infer_MlZipMap(kn_infer_ctx *c) {
    if (c->n_out > 0 && c->out[0]) {
        c->out[0]->ndim = -1;
        c->out[0]->dtype = KN_F32;
    }
    return NULL;
}

kn_status *kn_infer_MlCastMap(kn_infer_ctx *c) {
    const kn_params_ml_castmap *p = KN_PARAMS(c->node, ml_castmap);
    kn_tensor *y = c->n_out > 0 ? c->out[0] : NULL;
    if (!y) return NULL;
    y->dtype = p->to;
    if (p->sparse) {
        int64_t dims[2] = {1, p->max_map};
        kn_tensor_set_shape(y, 2, dims);
    } else {
        y->ndim = -1;
    }
    return NULL;
}

kn_status *kn_infer_MlDictVectorizer(kn_infer_ctx *c) {
    const kn_params_ml_dictvec *p = KN_PARAMS(c->node, ml_dictvec);
    kn_tensor *y = c->n_out > 0 ? c->out[0] : NULL;
    if (!y) return NULL;
    /* the map's value type, declared or (at run time) the map's own */
    y->dtype = c->n_in > 0 && c->in[0] ? c->in[0]->dtype : KN_UNDEFINED;
    int64_t dims[2] = {1, p->n_vocab};
    kn_tensor_set_shape(y, 2, dims);
    return NULL;
}
