/* CPU kernels of the ai.onnx.ml map ops, as ONNX Runtime computes them: ZipMap (rows of class
 * scores -> a sequence of label -> score maps), CastMap (int64-keyed map -> [1, n] tensor in key
 * order, or SPARSE at each key's index) and DictVectorizer (map -> [1, vocabulary] tensor, 0 or ""
 * where a word is absent). Maps are looked up through their entries sorted by key, once per call. */
#include "graph/ops.h"
#include "runtime/core/dtype.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kn_status *ml_need_map(const kn_node *n, const kn_tensor *t) {
    char buf[KN_DESC_LEN];
    KN_CHECK(t && t->kind == KN_KIND_MAP && t->data, KN_ERR_INVALID_ARGUMENT, "%s: input 0 must be a map, got %s",
             n->op_type, kn_tensor_desc(t, buf, sizeof buf));
    return NULL;
}

static int ml_cmp_key(const void *a, const void *b, void *ctx) {
    const kn_tensor *k = ctx;
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    if (k->dtype == KN_STRING) return strcmp(((char *const *)k->data)[i], ((char *const *)k->data)[j]);
    int64_t x = kn_get_i64(k, i), y = kn_get_i64(k, j);
    return (x > y) - (x < y);
}

/* The entry indices of map m in key order (scratch memory); a repeated key is an error. */
static kn_status *ml_sorted(kn_exec_ctx *ctx, const kn_node *n, const kn_map *m, int64_t **out) {
    int64_t len = m->keys.dims[0];
    int64_t *ix = kn_scratch_alloc(ctx, sizeof(int64_t) * (size_t)(len ? len : 1));
    if (!ix) return KN_OOM(len);
    for (int64_t i = 0; i < len; i++) ix[i] = i;
    if (m->keys.dtype == KN_STRING)
        for (int64_t i = 0; i < len; i++)
            KN_CHECK(((char *const *)m->keys.data)[i], KN_ERR_INVALID_ARGUMENT, "%s: map key %lld is missing",
                     n->op_type, (long long)i);
    qsort_r(ix, (size_t)len, sizeof *ix, ml_cmp_key, (void *)&m->keys);
    for (int64_t i = 1; i < len; i++)
        KN_CHECK(ml_cmp_key(&ix[i - 1], &ix[i], (void *)&m->keys) != 0, KN_ERR_INVALID_ARGUMENT,
                 "%s: the map repeats a key", n->op_type);
    *out = ix;
    return NULL;
}

/* Position in the map of key (string s or integer v) through the sorted indices, or -1. */
static int64_t ml_find(const kn_map *m, const int64_t *ix, const char *s, int64_t v) {
    int64_t lo = 0, hi = m->keys.dims[0];
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c;
        if (s) c = strcmp(((char *const *)m->keys.data)[ix[mid]], s);
        else {
            int64_t k = kn_get_i64(&m->keys, ix[mid]);
            c = (k > v) - (k < v);
        }
        if (c == 0) return ix[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

kn_status *kn_cpu_MlZipMap(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                           kn_tensor *const *out, int n_out) {
    const kn_params_ml_zipmap *p = KN_PARAMS(node, ml_zipmap);
    const kn_tensor *x = n_in > 0 ? in[0] : NULL;
    char buf[KN_DESC_LEN];
    KN_CHECK(x && x->kind == KN_KIND_TENSOR && x->dtype == KN_F32 && (x->ndim == 1 || x->ndim == 2),
             KN_ERR_INVALID_ARGUMENT, "ZipMap: X must be a 1-D or 2-D float tensor, got %s",
             kn_tensor_desc(x, buf, sizeof buf));
    int64_t rows = x->ndim == 1 ? 1 : x->dims[0], cols = x->dims[x->ndim - 1];
    KN_CHECK(cols == p->n_labels, KN_ERR_INVALID_ARGUMENT, "ZipMap: X %s has %lld columns for %lld class labels",
             kn_tensor_desc(x, buf, sizeof buf), (long long)cols, (long long)p->n_labels);
    KN_TRY(kn_seq_init(out[0], KN_F32));
    const float *xs = x->data;
    kn_status *st = NULL;
    for (int64_t r = 0; !st && r < rows; r++) {
        kn_tensor *m = calloc(1, sizeof *m);
        if (!m) {
            st = KN_OOM(sizeof *m);
            break;
        }
        st = kn_map_init(m, p->labels_s ? KN_STRING : KN_I64, KN_F32, cols);
        kn_map *mm = st ? NULL : m->data;
        for (int64_t j = 0; !st && j < cols; j++) {
            if (p->labels_s) {
                if (!(((char **)mm->keys.data)[j] = strdup(p->labels_s[j]))) st = KN_OOM(0);
            } else {
                ((int64_t *)mm->keys.data)[j] = p->labels_i[j];
            }
            ((float *)mm->values.data)[j] = xs[r * cols + j];
        }
        if (!st) st = kn_seq_insert(out[0], r, m);
        if (st) kn_tensor_free(m);
    }
    if (st) kn_tensor_release(out[0]);
    return st;
}

/* One map value (float or string) cast to the output dtype, into element i of y. */
static kn_status *ml_cast_one(const kn_tensor *v, int64_t j, kn_tensor *y, int64_t i) {
    if (v->dtype == KN_F32) {
        float f = ((const float *)v->data)[j];
        if (y->dtype == KN_F32) ((float *)y->data)[i] = f;
        else if (y->dtype == KN_I64) ((int64_t *)y->data)[i] = (int64_t)f;
        else {
            char s[64]; /* std::to_string(float), as ONNX Runtime writes it */
            snprintf(s, sizeof s, "%f", (double)f);
            if (!(((char **)y->data)[i] = strdup(s))) return KN_OOM(0);
        }
        return NULL;
    }
    const char *s = ((char *const *)v->data)[j];
    s = s ? s : "";
    if (y->dtype == KN_STRING) {
        if (!(((char **)y->data)[i] = strdup(s))) return KN_OOM(0);
        return NULL;
    }
    char *end = NULL;
    errno = 0;
    if (y->dtype == KN_F32) ((float *)y->data)[i] = strtof(s, &end);
    else ((int64_t *)y->data)[i] = strtoll(s, &end, 10);
    KN_CHECK(end != s && errno == 0, KN_ERR_INVALID_ARGUMENT, "CastMap: map value '%s' is not a %s", s,
             y->dtype == KN_F32 ? "float" : "int64");
    return NULL;
}

kn_status *kn_cpu_MlCastMap(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                            kn_tensor *const *out, int n_out) {
    const kn_params_ml_castmap *p = KN_PARAMS(node, ml_castmap);
    KN_TRY(ml_need_map(node, n_in > 0 ? in[0] : NULL));
    const kn_map *m = in[0]->data;
    KN_CHECK(m->keys.dtype == KN_I64 && (in[0]->dtype == KN_F32 || in[0]->dtype == KN_STRING), KN_ERR_INVALID_ARGUMENT,
             "CastMap: the map must be map<int64, float|string>, got map<%s, %s>", kn_dtype_name(m->keys.dtype),
             kn_dtype_name(in[0]->dtype));
    int64_t len = m->keys.dims[0], *ix = NULL;
    KN_TRY(ml_sorted(ctx, node, m, &ix));
    kn_tensor *y = out[0];
    if (!p->sparse) {
        int64_t dims[2] = {1, len};
        y->dtype = p->to;
        kn_tensor_set_shape(y, 2, dims);
        KN_TRY(kn_tensor_alloc_data(y));
        for (int64_t i = 0; i < len; i++) KN_TRY(ml_cast_one(&m->values, ix[i], y, i));
        return NULL;
    }
    KN_CHECK(len == 0 || ((const int64_t *)m->keys.data)[ix[0]] >= 0, KN_ERR_INVALID_ARGUMENT,
             "CastMap: negative key %lld in a SPARSE map", (long long)((const int64_t *)m->keys.data)[ix[0]]);
    int64_t k = 0;
    for (int64_t i = 0; i < p->max_map; i++) {
        if (k < len && ((const int64_t *)m->keys.data)[ix[k]] == i) KN_TRY(ml_cast_one(&m->values, ix[k++], y, i));
        else if (y->dtype == KN_STRING) { /* ORT pads strings with "0.f", numbers with 0 */
            if (!(((char **)y->data)[i] = strdup("0.f"))) return KN_OOM(0);
        } else {
            memset((char *)y->data + (size_t)i * kn_dtype_size(y->dtype), 0, kn_dtype_size(y->dtype));
        }
    }
    return NULL;
}

kn_status *kn_cpu_MlDictVectorizer(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                   kn_tensor *const *out, int n_out) {
    const kn_params_ml_dictvec *p = KN_PARAMS(node, ml_dictvec);
    KN_TRY(ml_need_map(node, n_in > 0 ? in[0] : NULL));
    const kn_map *m = in[0]->data;
    KN_CHECK((m->keys.dtype == KN_STRING) == (p->vocab_s != NULL), KN_ERR_INVALID_ARGUMENT,
             "DictVectorizer: map keys are %s, the vocabulary is %s", kn_dtype_name(m->keys.dtype),
             p->vocab_s ? "string" : "int64");
    kn_tensor *y = out[0];
    KN_CHECK(y->dtype == in[0]->dtype || m->keys.dims[0] == 0, KN_ERR_INVALID_ARGUMENT,
             "DictVectorizer: output %s for map values of %s", kn_dtype_name(y->dtype), kn_dtype_name(in[0]->dtype));
    int64_t *ix = NULL;
    KN_TRY(ml_sorted(ctx, node, m, &ix));
    size_t es = kn_dtype_size(y->dtype);
    for (int64_t i = 0; i < p->n_vocab; i++) {
        int64_t j = ml_find(m, ix, p->vocab_s ? p->vocab_s[i] : NULL, p->vocab_s ? 0 : p->vocab_i[i]);
        if (y->dtype == KN_STRING) {
            const char *s = j >= 0 ? ((char *const *)m->values.data)[j] : "";
            if (!(((char **)y->data)[i] = strdup(s ? s : ""))) return KN_OOM(0);
        } else if (j >= 0) {
            memcpy((char *)y->data + (size_t)i * es, (const char *)m->values.data + (size_t)j * es, es);
        } else { /* the output may live in the run's arena: absent words are written, not assumed */
            memset((char *)y->data + (size_t)i * es, 0, es);
        }
    }
    return NULL;
}
