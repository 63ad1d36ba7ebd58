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
