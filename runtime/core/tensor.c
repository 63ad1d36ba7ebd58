/* Tensor bookkeeping: element counts, guarded allocation, string ownership, descriptions for
 * error messages, and slow generic element access used by reference code and tests. */
#include "runtime/core/tensor.h"
#include "runtime/core/dtype.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t kn_numel(const kn_tensor *t) {
    if (t->ndim < 0) return -1;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->dims[i] < 0) return -1;
        if (t->dims[i] == 0) return 0;
        if (n > KN_MAX_NUMEL / t->dims[i]) return KN_MAX_NUMEL + 1; /* saturate: caller rejects */
        n *= t->dims[i];
    }
    return n;
}

size_t kn_nbytes(const kn_tensor *t) {
    int64_t n = kn_numel(t);
    return n <= 0 ? 0 : (size_t)n * kn_dtype_size(t->dtype);
}

bool kn_shape_known(const kn_tensor *t) { return kn_numel(t) >= 0; }

bool kn_same_shape(const kn_tensor *a, const kn_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->dims[i] != b->dims[i]) return false;
    return true;
}

void kn_tensor_set_shape(kn_tensor *t, int ndim, const int64_t *dims) {
    t->ndim = ndim;
    for (int i = 0; i < ndim && i < KN_MAX_DIMS; i++) t->dims[i] = dims[i];
}

kn_status *kn_tensor_alloc_data(kn_tensor *t) {
    char buf[KN_DESC_LEN];
    KN_CHECK(t->ndim >= 0 && t->ndim <= KN_MAX_DIMS, KN_ERR_INVALID_ARGUMENT, "tensor rank %d unsupported (max %d)",
             t->ndim, KN_MAX_DIMS);
    int64_t n = kn_numel(t);
    KN_CHECK(n >= 0 && n <= KN_MAX_NUMEL, KN_ERR_INVALID_ARGUMENT,
             "tensor %s has an invalid or too large element count", kn_tensor_desc(t, buf, sizeof buf));
    KN_CHECK(kn_dtype_size(t->dtype) > 0, KN_ERR_INVALID_ARGUMENT, "tensor %s has no storable dtype",
             kn_tensor_desc(t, buf, sizeof buf));
    size_t bytes = (size_t)n * kn_dtype_size(t->dtype);
    t->data = calloc(bytes ? bytes : 1, 1);
    if (!t->data) return KN_OOM(bytes);
    t->owns = true;
    t->device = KN_DEVICE_CPU;
    return NULL;
}

kn_status *kn_tensor_new(kn_dtype dtype, int ndim, const int64_t *dims, kn_tensor **out) {
    *out = NULL;
    KN_CHECK(ndim >= 0 && ndim <= KN_MAX_DIMS, KN_ERR_INVALID_ARGUMENT, "tensor rank %d unsupported (max %d)", ndim,
             KN_MAX_DIMS);
    kn_tensor *t = calloc(1, sizeof *t);
    if (!t) return KN_OOM(sizeof *t);
    t->dtype = dtype;
    kn_tensor_set_shape(t, ndim, dims);
    kn_status *st = kn_tensor_alloc_data(t);
    if (st) {
        free(t);
        return st;
    }
    *out = t;
    return NULL;
}

kn_status *kn_seq_init(kn_tensor *t, kn_dtype dtype) {
    memset(t, 0, sizeof *t);
    kn_seq *q = calloc(1, sizeof *q);
    if (!q) return KN_OOM(sizeof *q);
    t->kind = KN_KIND_SEQUENCE;
    t->dtype = dtype;
    t->data = q;
    t->owns = true;
    return NULL;
}

kn_status *kn_seq_insert(kn_tensor *seq, int64_t pos, kn_tensor *item) {
    kn_seq *q = seq->data;
    KN_CHECK(seq->kind == KN_KIND_SEQUENCE && q, KN_ERR_INVALID_ARGUMENT, "not a sequence");
    KN_CHECK(pos >= 0 && pos <= q->n, KN_ERR_INVALID_ARGUMENT, "sequence position %lld out of range [0, %lld]",
             (long long)pos, (long long)q->n);
    if (q->n == q->cap) {
        int64_t cap = q->cap ? q->cap * 2 : 8;
        kn_tensor **v = realloc(q->items, sizeof(kn_tensor *) * (size_t)cap);
        if (!v) return KN_OOM(0);
        q->items = v;
        q->cap = cap;
    }
    memmove(q->items + pos + 1, q->items + pos, sizeof(kn_tensor *) * (size_t)(q->n - pos));
    q->items[pos] = item;
    q->n++;
    return NULL;
}

kn_status *kn_map_init(kn_tensor *t, kn_dtype key_dtype, kn_dtype value_dtype, int64_t n) {
    memset(t, 0, sizeof *t);
    KN_CHECK(n >= 0 && n <= KN_MAX_NUMEL, KN_ERR_INVALID_ARGUMENT, "map of %lld entries", (long long)n);
    kn_map *m = calloc(1, sizeof *m);
    if (!m) return KN_OOM(sizeof *m);
    m->keys.dtype = key_dtype;
    m->values.dtype = value_dtype;
    kn_tensor_set_shape(&m->keys, 1, &n);
    kn_tensor_set_shape(&m->values, 1, &n);
    /* an empty map read from a file may not name its value type */
    kn_status *st = n || kn_dtype_size(key_dtype) ? kn_tensor_alloc_data(&m->keys) : NULL;
    if (!st && (n || kn_dtype_size(value_dtype))) st = kn_tensor_alloc_data(&m->values);
    if (st) {
        kn_tensor_release(&m->keys);
        free(m);
        return st;
    }
    t->kind = KN_KIND_MAP;
    t->dtype = value_dtype;
    t->data = m;
    t->owns = true;
    return NULL;
}

void kn_tensor_release(kn_tensor *t) {
    if (!t || !t->owns || !t->data) return;
    if (t->kind == KN_KIND_MAP) {
        kn_map *m = t->data;
        kn_tensor_release(&m->keys);
        kn_tensor_release(&m->values);
        free(m);
        t->data = NULL;
        t->owns = false;
        return;
    }
    if (t->kind == KN_KIND_SEQUENCE) {
        kn_seq *q = t->data;
        for (int64_t i = 0; i < q->n; i++) kn_tensor_free(q->items[i]);
        free(q->items);
        free(q);
        t->data = NULL;
        t->owns = false;
        return;
    }
    if (t->dtype == KN_STRING && t->device == KN_DEVICE_CPU) {
        int64_t n = kn_numel(t);
        char **s = t->data;
        for (int64_t i = 0; i < n; i++) free(s[i]);
    }
    free(t->data);
    t->data = NULL;
    t->owns = false;
}

void kn_tensor_free(kn_tensor *t) {
    if (!t) return;
    kn_tensor_release(t);
    free(t);
}

kn_status *kn_tensor_clone(const kn_tensor *t, kn_tensor **out) {
    if (t->kind != KN_KIND_TENSOR) {
        kn_tensor *c = calloc(1, sizeof *c);
        if (!c) return KN_OOM(sizeof *c);
        *c = *t;
        c->data = NULL;
        c->owns = false;
        if (t->kind == KN_KIND_SEQUENCE) {
            kn_status *st = kn_seq_init(c, t->dtype);
            const kn_seq *q = t->data;
            for (int64_t i = 0; !st && q && i < q->n; i++) {
                kn_tensor *item = NULL;
                st = kn_tensor_clone(q->items[i], &item);
                if (!st) st = kn_seq_insert(c, i, item);
                if (st) kn_tensor_free(item);
            }
            if (st) {
                kn_tensor_free(c);
                return st;
            }
        } else if (t->kind == KN_KIND_MAP && t->data) {
            const kn_map *m = t->data;
            kn_status *st = kn_map_init(c, m->keys.dtype, m->values.dtype, m->keys.dims[0]);
            kn_map *cm = st ? NULL : c->data;
            for (int pass = 0; !st && pass < 2; pass++) {
                const kn_tensor *a = pass ? &m->values : &m->keys;
                kn_tensor *b = pass ? &cm->values : &cm->keys;
                if (a->dtype != KN_STRING) {
                    if (a->data && b->data) memcpy(b->data, a->data, kn_nbytes(a));
                    continue;
                }
                for (int64_t i = 0; !st && i < a->dims[0]; i++) {
                    const char *x = ((char *const *)a->data)[i];
                    if (!(((char **)b->data)[i] = strdup(x ? x : ""))) st = KN_OOM(0);
                }
            }
            if (st) {
                kn_tensor_free(c);
                return st;
            }
        }
        *out = c;
        return NULL;
    }
    KN_TRY(kn_tensor_new(t->dtype, t->ndim, t->dims, out));
    int64_t n = kn_numel(t);
    if (!t->data || n == 0) return NULL;
    if (t->dtype == KN_STRING) {
        char **src = t->data, **dst = (*out)->data;
        for (int64_t i = 0; i < n; i++) {
            dst[i] = strdup(src[i] ? src[i] : "");
            if (!dst[i]) {
                kn_tensor_free(*out);
                *out = NULL;
                return KN_OOM(0);
            }
        }
    } else {
        memcpy((*out)->data, t->data, kn_nbytes(t));
    }
    return NULL;
}

const char *kn_tensor_desc(const kn_tensor *t, char *buf, size_t n) {
    if (!t) {
        snprintf(buf, n, "(none)");
        return buf;
    }
    if (t->kind == KN_KIND_NONE) {
        snprintf(buf, n, "optional<%s>(empty)", kn_dtype_name(t->dtype));
        return buf;
    }
    if (t->kind == KN_KIND_MAP) {
        const kn_map *m = t->data;
        snprintf(buf, n, "map<%s,%s>(%lld)", m ? kn_dtype_name(m->keys.dtype) : "?", kn_dtype_name(t->dtype),
                 m ? (long long)m->keys.dims[0] : 0LL);
        return buf;
    }
    if (t->kind == KN_KIND_SEQUENCE) {
        snprintf(buf, n, "sequence<%s>(%lld)", kn_dtype_name(t->dtype),
                 t->data ? (long long)((const kn_seq *)t->data)->n : 0LL);
        return buf;
    }
    size_t off = (size_t)snprintf(buf, n, "%s", kn_dtype_name(t->dtype));
    if (t->ndim < 0) {
        snprintf(buf + (off < n ? off : n), off < n ? n - off : 0, "[?rank]");
        return buf;
    }
    if (off < n) off += (size_t)snprintf(buf + off, n - off, "[");
    for (int i = 0; i < t->ndim && off < n; i++) {
        if (t->dims[i] < 0) off += (size_t)snprintf(buf + off, n - off, "%s?", i ? "," : "");
        else off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? "," : "", (long long)t->dims[i]);
    }
    if (off < n) snprintf(buf + off, n - off, "]");
    return buf;
}

double kn_get_f64(const kn_tensor *t, int64_t i) {
    const void *p = t->data;
    switch (t->dtype) {
    case KN_F32: return ((const float *)p)[i];
    case KN_F64: return ((const double *)p)[i];
    case KN_F16: return kn_f16_to_f32(((const uint16_t *)p)[i]);
    case KN_BF16: return kn_bf16_to_f32(((const uint16_t *)p)[i]);
    case KN_F8E4M3FN:
    case KN_F8E4M3FNUZ:
    case KN_F8E5M2:
    case KN_F8E5M2FNUZ:
    case KN_F8E8M0: return kn_f8_to_f32(((const uint8_t *)p)[i], t->dtype);
    case KN_F4E2M1: return kn_f4e2m1_to_f32(((const uint8_t *)p)[i]);
    case KN_U64: return (double)((const uint64_t *)p)[i];
    default: return (double)kn_get_i64(t, i);
    }
}

int64_t kn_get_i64(const kn_tensor *t, int64_t i) {
    const void *p = t->data;
    switch (t->dtype) {
    case KN_I64: return ((const int64_t *)p)[i];
    case KN_I32: return ((const int32_t *)p)[i];
    case KN_I16: return ((const int16_t *)p)[i];
    case KN_I8:
    case KN_I4:
    case KN_I2: return ((const int8_t *)p)[i];
    case KN_U8:
    case KN_U4:
    case KN_U2:
    case KN_BOOL: return ((const uint8_t *)p)[i];
    case KN_U16: return ((const uint16_t *)p)[i];
    case KN_U32: return ((const uint32_t *)p)[i];
    case KN_U64: return (int64_t)((const uint64_t *)p)[i];
    default: return (int64_t)kn_get_f64(t, i);
    }
}

void kn_set_f64(kn_tensor *t, int64_t i, double v) {
    void *p = t->data;
    switch (t->dtype) {
    case KN_F32: ((float *)p)[i] = (float)v; break;
    case KN_F64: ((double *)p)[i] = v; break;
    case KN_F16: ((uint16_t *)p)[i] = kn_f32_to_f16((float)v); break;
    case KN_BF16: ((uint16_t *)p)[i] = kn_f32_to_bf16((float)v); break;
    case KN_F8E4M3FN:
    case KN_F8E4M3FNUZ:
    case KN_F8E5M2:
    case KN_F8E5M2FNUZ:
    case KN_F8E8M0: ((uint8_t *)p)[i] = kn_f32_to_f8((float)v, t->dtype, true); break;
    case KN_F4E2M1: ((uint8_t *)p)[i] = kn_f32_to_f4e2m1((float)v); break;
    case KN_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    case KN_U64: ((uint64_t *)p)[i] = (uint64_t)v; break;
    default: kn_set_i64(t, i, (int64_t)v); break;
    }
}

void kn_set_i64(kn_tensor *t, int64_t i, int64_t v) {
    void *p = t->data;
    switch (t->dtype) {
    case KN_I64: ((int64_t *)p)[i] = v; break;
    case KN_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case KN_I16: ((int16_t *)p)[i] = (int16_t)v; break;
    case KN_I8:
    case KN_I4:
    case KN_I2: ((int8_t *)p)[i] = (int8_t)v; break;
    case KN_U8:
    case KN_U4:
    case KN_U2: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case KN_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    case KN_U16: ((uint16_t *)p)[i] = (uint16_t)v; break;
    case KN_U32: ((uint32_t *)p)[i] = (uint32_t)v; break;
    case KN_U64: ((uint64_t *)p)[i] = (uint64_t)v; break;
    default: kn_set_f64(t, i, (double)v); break;
    }
}
