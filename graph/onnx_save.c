/* Writing a model back as ONNX with new initializer values (fine-tuned weights): the original
 * ModelProto is parsed and re-serialised with only the named initializers rewritten as raw
 * data, so every node, attribute, opset, metadata entry and untouched weight stays as the file
 * had it and ONNX Runtime reads the result like the original. */
#include "graph/onnx_internal.h"
#include "runtime/core/dtype.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kn_status *read_all(const char *path, uint8_t **buf, size_t *len) {
    FILE *f = fopen(path, "rb");
    KN_CHECK(f, KN_ERR_IO, "%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *buf = n > 0 ? malloc((size_t)n) : NULL;
    bool ok = n > 0 && *buf && fread(*buf, 1, (size_t)n, f) == (size_t)n;
    fclose(f);
    if (!ok) {
        free(*buf);
        *buf = NULL;
        return kn_error(KN_ERR_IO, "%s: cannot read", path);
    }
    *len = (size_t)n;
    return NULL;
}

/* tp holds t's values as raw data from now on, its other data fields and external data gone. */
static kn_status *set_tensor(Onnx__TensorProto *tp, const kn_tensor *t) {
    int64_t n = 1;
    for (size_t d = 0; d < tp->n_dims; d++) n *= tp->dims[d];
    KN_CHECK(n == kn_numel(t) && (int)tp->data_type == (int)t->dtype, KN_ERR_INVALID_ARGUMENT,
             "initializer '%s': the file has %lld elements of type %d, the new value %lld of type %d", tp->name,
             (long long)n, (int)tp->data_type, (long long)kn_numel(t), (int)t->dtype);
    size_t bytes = kn_nbytes(t);
    uint8_t *raw = malloc(bytes ? bytes : 1);
    if (!raw) return KN_OOM(bytes);
    if (bytes) memcpy(raw, t->data, bytes);
    free(tp->raw_data.data);
    tp->raw_data.data = raw;
    tp->raw_data.len = bytes;
    tp->has_raw_data = 1;
    free(tp->float_data);
    tp->float_data = NULL;
    tp->n_float_data = 0;
    free(tp->double_data);
    tp->double_data = NULL;
    tp->n_double_data = 0;
    for (size_t i = 0; i < tp->n_external_data; i++)
        onnx__string_string_entry_proto__free_unpacked(tp->external_data[i], NULL);
    free(tp->external_data);
    tp->external_data = NULL;
    tp->n_external_data = 0;
    tp->has_data_location = 0;
    tp->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT;
    return NULL;
}

kn_status *kn_onnx_write_with_initializers(const char *src_path, const char *dst_path, const char *const *names,
                                           const kn_tensor *const *values, int n) {
    uint8_t *buf = NULL;
    size_t len = 0;
    KN_TRY(read_all(src_path, &buf, &len));
    Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, buf);
    free(buf);
    KN_CHECK(mp && mp->graph, KN_ERR_INVALID_MODEL, "%s: not an ONNX ModelProto", src_path);
    kn_status *st = NULL;
    for (int k = 0; k < n && !st; k++) {
        Onnx__TensorProto *tp = NULL;
        for (size_t i = 0; i < mp->graph->n_initializer && !tp; i++)
            if (mp->graph->initializer[i]->name && !strcmp(mp->graph->initializer[i]->name, names[k]))
                tp = mp->graph->initializer[i];
        if (!tp)
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "%s: no initializer '%s' in the main graph", src_path, names[k]);
        else st = set_tensor(tp, values[k]);
    }
    uint8_t *out = NULL;
    size_t size = 0;
    if (!st) {
        size = onnx__model_proto__get_packed_size(mp);
        out = malloc(size ? size : 1);
        if (!out) st = KN_OOM(size);
        else onnx__model_proto__pack(mp, out);
    }
    onnx__model_proto__free_unpacked(mp, NULL);
    if (!st) {
        FILE *f = fopen(dst_path, "wb");
        if (!f) st = kn_error(KN_ERR_IO, "%s: cannot create", dst_path);
        else {
            bool ok = fwrite(out, 1, size, f) == size;
            ok &= fclose(f) == 0;
            if (!ok) st = kn_error(KN_ERR_IO, "%s: write failed", dst_path);
        }
    }
    free(out);
    return st;
}
