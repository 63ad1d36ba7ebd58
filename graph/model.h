/* A loaded ONNX model: metadata, the main graph, and the file mappings its weights point into. */
#ifndef KN_MODEL_H
#define KN_MODEL_H
#include "ir.h"

struct kn_model {
    int64_t ir_version;
    char *producer_name, *producer_version, *domain, *doc_string;
    int64_t model_version;
    kn_graph *graph;          /* opsets live in graph->opsets */
    char *path;               /* NULL when loaded from a buffer */
    void **maps; size_t *map_lens; int n_maps; /* mmap'd external data, unmapped on free */
};

/* ONNX protobuf <-> IR (graph/onnx_load.c). Load resolves external data relative to base_dir,
 * inlines model-local functions, turns Constant nodes' values into initializers where possible,
 * converts subgraph attributes, and resolves every node to a kn_op (-1 when unknown, which is
 * reported by kn_graph_check_supported, not at load). */
kn_status *kn_onnx_load_file(const char *path, struct kn_model **out);
kn_status *kn_onnx_load_buffer(const void *data, size_t size, const char *base_dir, struct kn_model **out);
void kn_model_release(struct kn_model *m);

/* A single TensorProto (the ONNX test layout's input_K.pb / output_K.pb). name may be NULL. */
kn_status *kn_tensor_proto_read(const void *buf, size_t len, kn_tensor **out, char **name);
kn_status *kn_tensor_proto_read_file(const char *path, kn_tensor **out, char **name);
kn_status *kn_tensor_proto_write_file(const char *path, const kn_tensor *t, const char *name);
/* A test-data value of the given kind (kn_tensor_kind): TensorProto, SequenceProto or
 * OptionalProto (an optional that holds nothing reads as kind NONE). graph/value_proto.c */
kn_status *kn_value_proto_read_file(const char *path, int kind, kn_tensor **out, char **name);

#endif
