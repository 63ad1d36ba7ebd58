/* Shared helpers for infer functions and kernels: broadcasting, axes, integer tensors. */
#include "graph/ops.h"
#include <stdlib.h>

kn_status *kn_broadcast_shape(const kn_tensor *a, const kn_tensor *b, kn_tensor *out) {
    char ba[KN_DESC_LEN], bb[KN_DESC_LEN];
    if (a->ndim < 0 || b->ndim < 0) {
        out->ndim = -1;
        return NULL;
    }
    int r = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t dims[KN_MAX_DIMS];
    for (int i = 0; i < r; i++) {
        int ia = i - (r - a->ndim), ib = i - (r - b->ndim);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da == db) dims[i] = da;
        else if (da == 1) dims[i] = db;
        else if (db == 1) dims[i] = da;
        else if (da < 0 || db < 0) dims[i] = da < 0 ? db : da; /* unknown: the known one must win if valid */
        else
            return kn_error(KN_ERR_INVALID_ARGUMENT, "shapes %s and %s cannot be broadcast (dim %d: %lld vs %lld)",
                            kn_tensor_desc(a, ba, sizeof ba), kn_tensor_desc(b, bb, sizeof bb), i, (long long)da,
                            (long long)db);
    }
    kn_tensor_set_shape(out, r, dims);
    return NULL;
}

kn_status *kn_norm_axis(int64_t axis, int rank, const kn_node *n, int *out) {
    int64_t a = axis < 0 ? axis + rank : axis;
    if (a < 0 || a >= (rank ? rank : 1))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: axis %lld out of range for rank %d", n ? n->op_type : "op",
                        (long long)axis, rank);
    *out = (int)a;
    return NULL;
}

kn_status *kn_infer_same_as_input0(kn_infer_ctx *c) {
    if (c->n_in < 1 || !c->in[0]) return kn_error(KN_ERR_INVALID_MODEL, "%s: missing input 0", c->node->op_type);
    for (int i = 0; i < c->n_out; i++) {
        if (!c->out[i]) continue;
        c->out[i]->dtype = c->in[0]->dtype;
        c->out[i]->ndim = c->in[0]->ndim;
        for (int d = 0; d < c->in[0]->ndim; d++) c->out[i]->dims[d] = c->in[0]->dims[d];
    }
    return NULL;
}

kn_status *kn_tensor_to_i64(const kn_tensor *t, int64_t **vals, int64_t *n) {
    char buf[KN_DESC_LEN];
    *vals = NULL;
    *n = 0;
    KN_CHECK(t && t->data, KN_ERR_INVALID_ARGUMENT, "integer tensor value is not available");
    KN_CHECK(t->dtype == KN_I64 || t->dtype == KN_I32 || t->dtype == KN_I16 || t->dtype == KN_I8 || t->dtype == KN_U8 ||
                 t->dtype == KN_U16 || t->dtype == KN_U32 || t->dtype == KN_U64,
             KN_ERR_INVALID_ARGUMENT, "expected an integer tensor, got %s", kn_tensor_desc(t, buf, sizeof buf));
    int64_t cnt = kn_numel(t);
    KN_CHECK(cnt >= 0 && cnt <= KN_MAX_NUMEL, KN_ERR_INVALID_ARGUMENT, "bad integer tensor %s",
             kn_tensor_desc(t, buf, sizeof buf));
    int64_t *v = malloc(sizeof(int64_t) * (size_t)(cnt ? cnt : 1));
    if (!v) return KN_OOM(sizeof(int64_t) * (size_t)cnt);
    for (int64_t i = 0; i < cnt; i++) v[i] = kn_get_i64(t, i);
    *vals = v;
    *n = cnt;
    return NULL;
}

void kn_strides(const kn_tensor *t, int64_t *strides) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= t->dims[i];
    }
}

kn_status *kn_err_dtype(const kn_node *n, const kn_tensor *t) {
    char buf[KN_DESC_LEN];
    return kn_error(KN_ERR_UNSUPPORTED, "%s: dtype of %s is not supported by the CPU kernel", n ? n->op_type : "op",
                    kn_tensor_desc(t, buf, sizeof buf));
}
