/* Private to the ONNX loader (graph/onnx_load.c) and the TensorProto code (graph/tensor_proto.c):
 * where a tensor's external data may be found and where the file mappings it lives in are kept. */
#ifndef KN_ONNX_INTERNAL_H
#define KN_ONNX_INTERNAL_H
#include "graph/model.h"
#include "onnx/onnx.pb-c.h"
#include <stdbool.h>

typedef struct kn_onnx_src {
    const char *file;     /* for messages: the model or .pb path, or "<buffer>" */
    const char *base_dir; /* external data paths are relative to it; NULL refuses external data */
    struct kn_model *m;   /* mappings are recorded in m->maps; NULL: external data is copied */
    char **map_paths;     /* parallel to m->maps, so each external file is mapped once */
} kn_onnx_src;

/* TensorProto -> host tensor (typed fields, raw_data, packed sub-byte types, external data).
 * steal: raw_data's buffer may be taken over from tp instead of copied (tp is then changed). */
kn_status *kn_onnx_tensor_from_pb(kn_onnx_src *src, Onnx__TensorProto *tp, bool steal, kn_tensor **out);
/* SparseTensorProto -> dense host tensor. */
kn_status *kn_onnx_sparse_from_pb(kn_onnx_src *src, Onnx__SparseTensorProto *sp, kn_tensor **out);
void kn_onnx_src_release(kn_onnx_src *src); /* frees map_paths (the maps stay with m) */
/* Map a whole regular file read-only (*p NULL for an empty one) and return its folder ("." for a
 * bare name) for resolving external data; undo with kn_onnx_unmap_file. */
kn_status *kn_onnx_map_file(const char *path, void **p, size_t *len, char **dir);
void kn_onnx_unmap_file(void *p, size_t len, char *dir);

/* A TensorProto that points into a host tensor's data (sub-byte types packed into `packed`,
 * strings listed in `strs`), for writing test-layout files; path names errors. */
typedef struct kn_tp_out {
    Onnx__TensorProto tp;
    int64_t dims[KN_MAX_DIMS];
    uint8_t *packed;
    ProtobufCBinaryData *strs;
} kn_tp_out;
kn_status *kn_tp_out_fill(kn_tp_out *o, const kn_tensor *t, const char *name, const char *path);
void kn_tp_out_release(kn_tp_out *o);
/* Writes buf to path (created or truncated); errors name the file. */
kn_status *kn_pb_write_bytes(const char *path, const uint8_t *buf, size_t sz);

#endif
