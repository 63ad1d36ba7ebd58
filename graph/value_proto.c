/* Test-data values that are not plain tensors: SequenceProto and OptionalProto files (ONNX
 * test layout), read into kiln's sequence / empty-optional tensors. */
#include "graph/model.h"
#include "graph/onnx_internal.h"
#include "onnx/onnx-data.pb-c.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kn_status *kn_seq_from_pb(kn_onnx_src *src, Onnx__SequenceProto *sp, kn_tensor *out);

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
    KN_CHECK(!op->sparse_tensor_value && !op->map_value && !op->optional_value, KN_ERR_UNSUPPORTED,
             "%s: optional of a sparse tensor, map or optional is not supported", src->file);
    out->kind = KN_KIND_NONE;
    return NULL;
}

static kn_status *kn_seq_from_pb(kn_onnx_src *src, Onnx__SequenceProto *sp, kn_tensor *out) {
    KN_CHECK(sp->n_sparse_tensor_values == 0 && sp->n_map_values == 0 && sp->n_optional_values == 0 &&
                 sp->n_sequence_values == 0,
             KN_ERR_UNSUPPORTED, "%s: only sequences of tensors are supported", src->file);
    KN_TRY(kn_seq_init(out, KN_UNDEFINED));
    for (size_t i = 0; i < sp->n_tensor_values; i++) {
        kn_tensor *t = NULL;
        kn_status *st = kn_onnx_tensor_from_pb(src, sp->tensor_values[i], false, &t);
        if (!st) {
            out->dtype = t->dtype;
            st = kn_seq_insert(out, (int64_t)i, t);
            if (st) kn_tensor_free(t);
        }
        if (st) {
            kn_tensor_release(out);
            return st;
        }
    }
    return NULL;
}

int kn_value_file_kind(const kn_value *v) {
    if (v->kind == KN_VAL_SEQUENCE) return KN_KIND_SEQUENCE;
    if (v->kind == KN_VAL_OPTIONAL) return KN_KIND_NONE;
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

/* A sequence of tensors as a SequenceProto (elem_type TENSOR), elements written as TensorProtos. */
static kn_status *kn_seq_to_pb(const kn_tensor *t, const char *path, Onnx__SequenceProto *sp, kn_tp_out **outs,
                               Onnx__TensorProto ***tps) {
    const kn_seq *q = t->data;
    int64_t n = q ? q->n : 0;
    *outs = calloc(n ? (size_t)n : 1, sizeof **outs);
    *tps = calloc(n ? (size_t)n : 1, sizeof **tps);
    if (!*outs || !*tps) return KN_OOM(n);
    for (int64_t i = 0; i < n; i++) {
        KN_TRY(kn_tp_out_fill(&(*outs)[i], q->items[i], NULL, path));
        (*tps)[i] = &(*outs)[i].tp;
    }
    sp->has_elem_type = 1;
    sp->elem_type = ONNX__SEQUENCE_PROTO__DATA_TYPE__TENSOR;
    sp->n_tensor_values = (size_t)n;
    sp->tensor_values = *tps;
    return NULL;
}

kn_status *kn_value_proto_write_file(const char *path, const kn_tensor *t, bool optional, const char *name) {
    if (t->kind == KN_KIND_TENSOR && !optional) return kn_tensor_proto_write_file(path, t, name);
    Onnx__SequenceProto sp = ONNX__SEQUENCE_PROTO__INIT;
    Onnx__OptionalProto op = ONNX__OPTIONAL_PROTO__INIT;
    kn_tp_out one = {0}, *outs = NULL;
    Onnx__TensorProto **tps = NULL;
    int64_t n_outs = 0;
    kn_status *st = NULL;
    if (t->kind == KN_KIND_SEQUENCE) {
        n_outs = t->data ? ((const kn_seq *)t->data)->n : 0;
        st = kn_seq_to_pb(t, path, &sp, &outs, &tps);
    } else if (t->kind == KN_KIND_TENSOR) {
        st = kn_tp_out_fill(&one, t, NULL, path);
    }
    uint8_t *buf = NULL;
    size_t sz = 0;
    if (!st && !optional) {
        sp.name = (char *)(name ? name : "");
        sz = onnx__sequence_proto__get_packed_size(&sp);
        if (!(buf = malloc(sz ? sz : 1))) st = KN_OOM(sz);
        else onnx__sequence_proto__pack(&sp, buf);
    } else if (!st) {
        op.name = (char *)(name ? name : "");
        op.has_elem_type = 1;
        if (t->kind == KN_KIND_SEQUENCE) {
            op.elem_type = ONNX__OPTIONAL_PROTO__DATA_TYPE__SEQUENCE;
            op.sequence_value = &sp;
        } else if (t->kind == KN_KIND_TENSOR) {
            op.elem_type = ONNX__OPTIONAL_PROTO__DATA_TYPE__TENSOR;
            op.tensor_value = &one.tp;
        } else {
            op.elem_type = ONNX__OPTIONAL_PROTO__DATA_TYPE__UNDEFINED; /* an empty optional */
        }
        sz = onnx__optional_proto__get_packed_size(&op);
        if (!(buf = malloc(sz ? sz : 1))) st = KN_OOM(sz);
        else onnx__optional_proto__pack(&op, buf);
    }
    if (!st) st = kn_pb_write_bytes(path, buf, sz);
    free(buf);
    for (int64_t i = 0; outs && i < n_outs; i++) kn_tp_out_release(&outs[i]);
    free(outs);
    free(tps);
    kn_tp_out_release(&one);
    return st;
}
