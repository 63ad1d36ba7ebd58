/* Test-data values that are not plain tensors: SequenceProto, OptionalProto and MapProto files
 * (ONNX test layout), read into kiln's sequence / empty-optional / map tensors and written back.
 * A map's values are a SequenceProto of scalar TensorProtos, as onnx.numpy_helper.from_dict
 * writes them; maps of sequences or maps are refused. */
#include "graph/model.h"
#include "graph/onnx_internal.h"
#include "onnx/onnx-data.pb-c.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kn_status *kn_seq_from_pb(kn_onnx_src *src, Onnx__SequenceProto *sp, kn_tensor *out);
static kn_status *kn_map_from_pb(kn_onnx_src *src, Onnx__MapProto *mp, kn_tensor *out);

static bool kn_map_key_type_ok(int kt) {
    return kt == KN_STRING || kt == KN_I8 || kt == KN_I16 || kt == KN_I32 || kt == KN_I64 || kt == KN_U8 ||
        kt == KN_U16 || kt == KN_U32 || kt == KN_U64;
}

static kn_status *kn_opt_from_pb(kn_onnx_src *src, Onnx__OptionalProto *op, kn_tensor *out) {
    memset(out, 0, sizeof *out);
    if (op->tensor_value) {
        kn_tensor *t = NULL;
        KN_TRY(kn_onnx_tensor_from_pb(src, op->tensor_value, false, &t));
        *out = *t;
        free(t);
        return NULL;
    }
    if (op->sequence_value) return kn_seq_from_pb(src, op->sequence_value, out);
    if (op->map_value) return kn_map_from_pb(src, op->map_value, out);
    KN_CHECK(!op->sparse_tensor_value && !op->optional_value, KN_ERR_UNSUPPORTED,
             "%s: optional of a sparse tensor or optional is not supported", src->file);
    out->kind = KN_KIND_NONE;
    return NULL;
}

/* Items come either as tensors or as maps, each read by read_one into a new tensor. */
static kn_status *kn_seq_from_pb(kn_onnx_src *src, Onnx__SequenceProto *sp, kn_tensor *out) {
    KN_CHECK(sp->n_sparse_tensor_values == 0 && sp->n_optional_values == 0 && sp->n_sequence_values == 0 &&
                 (sp->n_tensor_values == 0 || sp->n_map_values == 0),
             KN_ERR_UNSUPPORTED, "%s: only sequences of tensors or of maps are supported", src->file);
    KN_TRY(kn_seq_init(out, KN_UNDEFINED));
    size_t n = sp->n_map_values ? sp->n_map_values : sp->n_tensor_values;
    for (size_t i = 0; i < n; i++) {
        kn_tensor *t = NULL;
        kn_status *st = NULL;
        if (sp->n_map_values) {
            t = calloc(1, sizeof *t);
            st = t ? kn_map_from_pb(src, sp->map_values[i], t) : KN_OOM(sizeof *t);
            if (st) {
                free(t);
                t = NULL;
            }
        } else {
            st = kn_onnx_tensor_from_pb(src, sp->tensor_values[i], false, &t);
        }
        if (!st && i > 0 && t->dtype != out->dtype && t->dtype != KN_UNDEFINED)
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "%s: sequence item %zu is %s, item 0 %s", src->file, i,
                          kn_dtype_name(t->dtype), kn_dtype_name(out->dtype));
        if (!st) {
            if (t->dtype != KN_UNDEFINED) out->dtype = t->dtype;
            st = kn_seq_insert(out, (int64_t)i, t);
        }
        if (st) {
            kn_tensor_free(t);
            kn_tensor_release(out);
            return st;
        }
    }
    return NULL;
}

static kn_status *kn_map_from_pb(kn_onnx_src *src, Onnx__MapProto *mp, kn_tensor *out) {
    memset(out, 0, sizeof *out);
    int kt = mp->has_key_type ? mp->key_type : 0;
    KN_CHECK(kn_map_key_type_ok(kt), KN_ERR_INVALID_ARGUMENT, "%s: map key type %d is not an integer type or string",
             src->file, kt);
    bool skeys = kt == KN_STRING;
    KN_CHECK(skeys ? mp->n_keys == 0 : mp->n_string_keys == 0, KN_ERR_INVALID_ARGUMENT,
             "%s: map of key type %s holds %s keys", src->file, kn_dtype_name((kn_dtype)kt),
             skeys ? "integer" : "string");
    size_t n = skeys ? mp->n_string_keys : mp->n_keys;
    const Onnx__SequenceProto *vs = mp->values;
    size_t nv = vs ? vs->n_tensor_values : 0;
    KN_CHECK(!vs ||
                 (vs->n_sparse_tensor_values == 0 && vs->n_map_values == 0 && vs->n_sequence_values == 0 &&
                  vs->n_optional_values == 0),
             KN_ERR_UNSUPPORTED, "%s: only maps whose values are tensors are supported", src->file);
    KN_CHECK(nv == n, KN_ERR_INVALID_ARGUMENT, "%s: map has %zu keys but %zu values", src->file, n, nv);
    kn_tensor *vals = calloc(n ? n : 1, sizeof *vals);
    if (!vals) return KN_OOM(n);
    kn_status *st = NULL;
    kn_dtype vt = KN_UNDEFINED;
    for (size_t i = 0; !st && i < n; i++) {
        kn_tensor *t = NULL;
        st = kn_onnx_tensor_from_pb(src, vs->tensor_values[i], false, &t);
        if (st) break;
        vals[i] = *t;
        free(t);
        if (i == 0) vt = vals[i].dtype;
        char d[KN_DESC_LEN];
        if (kn_numel(&vals[i]) != 1 || vals[i].dtype != vt)
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "%s: map value %zu is %s; values must be scalars of one type (%s)",
                          src->file, i, kn_tensor_desc(&vals[i], d, sizeof d), kn_dtype_name(vt));
    }
    if (!st) st = kn_map_init(out, (kn_dtype)kt, vt, (int64_t)n);
    kn_map *m = st ? NULL : out->data;
    for (size_t i = 0; !st && i < n; i++) {
        if (skeys) {
            char *k = malloc(mp->string_keys[i].len + 1);
            if (!k) {
                st = KN_OOM(mp->string_keys[i].len);
                break;
            }
            if (mp->string_keys[i].len) memcpy(k, mp->string_keys[i].data, mp->string_keys[i].len);
            k[mp->string_keys[i].len] = 0;
            ((char **)m->keys.data)[i] = k;
        } else {
            kn_set_i64(&m->keys, (int64_t)i, mp->keys[i]);
            if (kn_get_i64(&m->keys, (int64_t)i) != mp->keys[i])
                st = kn_error(KN_ERR_INVALID_ARGUMENT, "%s: map key %lld does not fit %s", src->file,
                              (long long)mp->keys[i], kn_dtype_name((kn_dtype)kt));
        }
        if (st) break;
        if (vt == KN_STRING) { /* the string moves over */
            ((char **)m->values.data)[i] = ((char **)vals[i].data)[0];
            ((char **)vals[i].data)[0] = NULL;
        } else {
            memcpy((char *)m->values.data + i * kn_dtype_size(vt), vals[i].data, kn_dtype_size(vt));
        }
    }
    for (size_t i = 0; i < n; i++) kn_tensor_release(&vals[i]);
    free(vals);
    if (st) kn_tensor_release(out);
    return st;
}

int kn_value_file_kind(const kn_value *v) {
    if (v->kind == KN_VAL_SEQUENCE) return KN_KIND_SEQUENCE;
    if (v->kind == KN_VAL_OPTIONAL) return KN_KIND_NONE;
    if (v->kind == KN_VAL_MAP) return KN_KIND_MAP;
    return KN_KIND_TENSOR;
}

kn_status *kn_value_proto_read_file(const char *path, int kind, kn_tensor **out, char **name) {
    *out = NULL;
    if (name) *name = NULL;
    if (kind == KN_KIND_TENSOR) return kn_tensor_proto_read_file(path, out, name);
    void *map;
    size_t len;
    char *dir;
    KN_TRY(kn_onnx_map_file(path, &map, &len, &dir));
    const uint8_t *buf = map ? map : (const uint8_t *)"";
    kn_onnx_src src = {.file = path, .base_dir = dir};
    kn_tensor *t = calloc(1, sizeof *t);
    kn_status *st = t ? NULL : KN_OOM(sizeof *t);
    if (!st && kind == KN_KIND_SEQUENCE) {
        Onnx__SequenceProto *sp = onnx__sequence_proto__unpack(NULL, (size_t)len, buf);
        if (!sp) st = kn_error(KN_ERR_INVALID_ARGUMENT, "%s: not a SequenceProto", path);
        else {
            st = kn_seq_from_pb(&src, sp, t);
            if (!st && name && sp->name) *name = strdup(sp->name);
            onnx__sequence_proto__free_unpacked(sp, NULL);
        }
    } else if (!st && kind == KN_KIND_MAP) {
        Onnx__MapProto *mp = onnx__map_proto__unpack(NULL, (size_t)len, buf);
        if (!mp) st = kn_error(KN_ERR_INVALID_ARGUMENT, "%s: not a MapProto", path);
        else {
            st = kn_map_from_pb(&src, mp, t);
            if (!st && name && mp->name) *name = strdup(mp->name);
            onnx__map_proto__free_unpacked(mp, NULL);
        }
    } else if (!st) {
        Onnx__OptionalProto *op = onnx__optional_proto__unpack(NULL, (size_t)len, buf);
        if (!op) st = kn_error(KN_ERR_INVALID_ARGUMENT, "%s: not an OptionalProto", path);
        else {
            st = kn_opt_from_pb(&src, op, t);
            if (!st && name && op->name) *name = strdup(op->name);
            onnx__optional_proto__free_unpacked(op, NULL);
        }
    }
    kn_onnx_unmap_file(map, len, dir);
    kn_onnx_src_release(&src);
    if (st) {
        free(t);
        return st;
    }
    *out = t;
    return NULL;
}

/* ---- writing: the messages of one file are built in an arena of blocks and freed together ---- */

typedef struct kn_pb_arena {
    void **blocks;
    size_t n, cap;
    void **tps; /* kn_tp_out, whose buffers kn_tp_out_release frees */
    size_t n_tps, cap_tps;
} kn_pb_arena;

static void *kn_arena_keep(void ***v, size_t *n, size_t *cap, void *p) {
    if (!p) return NULL;
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        void **nv = realloc(*v, c * sizeof *nv);
        if (!nv) {
            free(p);
            return NULL;
        }
        *v = nv;
        *cap = c;
    }
    (*v)[(*n)++] = p;
    return p;
}

static void *kn_arena_alloc(kn_pb_arena *a, size_t count, size_t size) {
    return kn_arena_keep(&a->blocks, &a->n, &a->cap, calloc(count ? count : 1, size));
}

static void kn_arena_free(kn_pb_arena *a) {
    for (size_t i = 0; i < a->n_tps; i++) {
        kn_tp_out_release((kn_tp_out *)a->tps[i]);
        free(a->tps[i]);
    }
    for (size_t i = 0; i < a->n; i++) free(a->blocks[i]);
    free(a->tps);
    free(a->blocks);
}

static kn_status *kn_tensor_to_pb(kn_pb_arena *a, const kn_tensor *t, const char *path, Onnx__TensorProto **out) {
    kn_tp_out *o = kn_arena_keep(&a->tps, &a->n_tps, &a->cap_tps, calloc(1, sizeof *o));
    if (!o) return KN_OOM(sizeof *o);
    KN_TRY(kn_tp_out_fill(o, t, NULL, path));
    *out = &o->tp;
    return NULL;
}

static kn_status *kn_map_to_pb(kn_pb_arena *a, const kn_tensor *t, const char *path, Onnx__MapProto **out);

/* A sequence of tensors or of maps as a SequenceProto (elem_type TENSOR or MAP). */
static kn_status *kn_seq_to_pb(kn_pb_arena *a, const kn_tensor *t, const char *path, Onnx__SequenceProto **out) {
    static const Onnx__SequenceProto init = ONNX__SEQUENCE_PROTO__INIT;
    Onnx__SequenceProto *sp = kn_arena_alloc(a, 1, sizeof *sp);
    if (!sp) return KN_OOM(sizeof *sp);
    *sp = init;
    const kn_seq *q = t->data;
    int64_t n = q ? q->n : 0;
    bool maps = n > 0 && q->items[0]->kind == KN_KIND_MAP;
    sp->has_elem_type = 1;
    if (maps) {
        sp->elem_type = ONNX__SEQUENCE_PROTO__DATA_TYPE__MAP;
        sp->map_values = kn_arena_alloc(a, (size_t)n, sizeof *sp->map_values);
        if (!sp->map_values) return KN_OOM(n);
        sp->n_map_values = (size_t)n;
    } else {
        sp->elem_type = ONNX__SEQUENCE_PROTO__DATA_TYPE__TENSOR;
        sp->tensor_values = kn_arena_alloc(a, (size_t)n, sizeof *sp->tensor_values);
        if (!sp->tensor_values) return KN_OOM(n);
        sp->n_tensor_values = (size_t)n;
    }
    for (int64_t i = 0; i < n; i++) {
        KN_CHECK((q->items[i]->kind == KN_KIND_MAP) == maps, KN_ERR_INVALID_ARGUMENT,
                 "%s: a sequence mixing maps and tensors cannot be written", path);
        if (maps) KN_TRY(kn_map_to_pb(a, q->items[i], path, &sp->map_values[i]));
        else KN_TRY(kn_tensor_to_pb(a, q->items[i], path, &sp->tensor_values[i]));
    }
    *out = sp;
    return NULL;
}

/* Keys as int64 keys or string_keys, values as a SequenceProto of scalar tensors. */
static kn_status *kn_map_to_pb(kn_pb_arena *a, const kn_tensor *t, const char *path, Onnx__MapProto **out) {
    static const Onnx__MapProto init = ONNX__MAP_PROTO__INIT;
    static const Onnx__SequenceProto sinit = ONNX__SEQUENCE_PROTO__INIT;
    const kn_map *m = t->data;
    KN_CHECK(m, KN_ERR_INVALID_ARGUMENT, "%s: map has no data", path);
    Onnx__MapProto *mp = kn_arena_alloc(a, 1, sizeof *mp);
    Onnx__SequenceProto *vs = kn_arena_alloc(a, 1, sizeof *vs);
    if (!mp || !vs) return KN_OOM(sizeof *mp);
    *mp = init;
    *vs = sinit;
    int64_t n = m->keys.dims[0];
    mp->has_key_type = 1;
    mp->key_type = (int32_t)m->keys.dtype;
    if (m->keys.dtype == KN_STRING) {
        mp->string_keys = kn_arena_alloc(a, (size_t)n, sizeof *mp->string_keys);
        if (!mp->string_keys) return KN_OOM(n);
        for (int64_t i = 0; i < n; i++) {
            const char *k = ((char *const *)m->keys.data)[i];
            mp->string_keys[i].data = (uint8_t *)(k ? k : "");
            mp->string_keys[i].len = strlen((const char *)mp->string_keys[i].data);
        }
        mp->n_string_keys = (size_t)n;
    } else {
        mp->keys = kn_arena_alloc(a, (size_t)n, sizeof *mp->keys);
        if (!mp->keys) return KN_OOM(n);
        for (int64_t i = 0; i < n; i++) mp->keys[i] = kn_get_i64(&m->keys, i);
        mp->n_keys = (size_t)n;
    }
    vs->has_elem_type = 1;
    vs->elem_type = ONNX__SEQUENCE_PROTO__DATA_TYPE__TENSOR;
    vs->tensor_values = kn_arena_alloc(a, (size_t)n, sizeof *vs->tensor_values);
    if (!vs->tensor_values) return KN_OOM(n);
    vs->n_tensor_values = (size_t)n;
    size_t es = kn_dtype_size(m->values.dtype);
    for (int64_t i = 0; i < n; i++) { /* a 0-d view of value i */
        kn_tensor one = {.dtype = m->values.dtype, .ndim = 0, .data = (char *)m->values.data + (size_t)i * es};
        KN_TRY(kn_tensor_to_pb(a, &one, path, &vs->tensor_values[i]));
    }
    mp->values = vs;
    *out = mp;
    return NULL;
}

kn_status *kn_value_proto_write_file(const char *path, const kn_tensor *t, bool optional, const char *name) {
    if (t->kind == KN_KIND_TENSOR && !optional) return kn_tensor_proto_write_file(path, t, name);
    kn_pb_arena a = {0};
    Onnx__SequenceProto *sp = NULL;
    Onnx__MapProto *mp = NULL;
    Onnx__TensorProto *tp = NULL;
    kn_status *st = NULL;
    if (t->kind == KN_KIND_SEQUENCE) st = kn_seq_to_pb(&a, t, path, &sp);
    else if (t->kind == KN_KIND_MAP) st = kn_map_to_pb(&a, t, path, &mp);
    else if (t->kind == KN_KIND_TENSOR) st = kn_tensor_to_pb(&a, t, path, &tp);
    uint8_t *buf = NULL;
    size_t sz = 0;
    const char *nm = name ? name : "";
    if (!st && !optional && sp) {
        sp->name = (char *)nm;
        sz = onnx__sequence_proto__get_packed_size(sp);
        if (!(buf = malloc(sz ? sz : 1))) st = KN_OOM(sz);
        else onnx__sequence_proto__pack(sp, buf);
    } else if (!st && !optional && mp) {
        mp->name = (char *)nm;
        sz = onnx__map_proto__get_packed_size(mp);
        if (!(buf = malloc(sz ? sz : 1))) st = KN_OOM(sz);
        else onnx__map_proto__pack(mp, buf);
    } else if (!st && !optional) { /* an empty optional where none is declared: an empty sequence */
        Onnx__SequenceProto empty = ONNX__SEQUENCE_PROTO__INIT;
        empty.name = (char *)nm;
        sz = onnx__sequence_proto__get_packed_size(&empty);
        if (!(buf = malloc(sz ? sz : 1))) st = KN_OOM(sz);
        else onnx__sequence_proto__pack(&empty, buf);
    } else if (!st) {
        Onnx__OptionalProto op = ONNX__OPTIONAL_PROTO__INIT;
        op.name = (char *)nm;
        op.has_elem_type = 1;
        if (sp) {
            op.elem_type = ONNX__OPTIONAL_PROTO__DATA_TYPE__SEQUENCE;
            op.sequence_value = sp;
        } else if (mp) {
            op.elem_type = ONNX__OPTIONAL_PROTO__DATA_TYPE__MAP;
            op.map_value = mp;
        } else if (tp) {
            op.elem_type = ONNX__OPTIONAL_PROTO__DATA_TYPE__TENSOR;
            op.tensor_value = tp;
        } else {
            op.elem_type = ONNX__OPTIONAL_PROTO__DATA_TYPE__UNDEFINED; /* an empty optional */
        }
        sz = onnx__optional_proto__get_packed_size(&op);
        if (!(buf = malloc(sz ? sz : 1))) st = KN_OOM(sz);
        else onnx__optional_proto__pack(&op, buf);
    }
    if (!st) st = kn_pb_write_bytes(path, buf, sz);
    free(buf);
    kn_arena_free(&a);
    return st;
}
