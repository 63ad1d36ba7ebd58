/* A loaded ONNX model: metadata, the main graph, and the file mappings its weights point into. */
#ifndef KN_MODEL_H
#define KN_MODEL_H
#include "graph/ir.h"
#include <pthread.h>

struct kn_backend;

/* A model's graph as one backend runs it: the loaded graph with the fusions that backend has
 * kernels for, made by the first session on that backend and shared by the later ones. */
typedef struct kn_model_variant {
    const struct kn_backend *backend;
    kn_graph *graph;
    kn_dtype lowp; /* KN_UNDEFINED, or the float16/bfloat16 the graph computes in (graph/precision.h) */
} kn_model_variant;
#define KN_MODEL_MAX_VARIANTS 8

struct kn_model {
    int64_t ir_version;
    char *producer_name, *producer_version, *domain, *doc_string;
    int64_t model_version;
    kn_graph *graph; /* opsets live in graph->opsets */
    char *path;      /* NULL when loaded from a buffer */
    void **maps;
    size_t *map_lens;
    int n_maps; /* mmap'd external data, unmapped on free */
    /* Fusion is chosen per backend (kn_model_options.fuse asks for it): `graph` stays as loaded
     * (folded, dead code removed), and each backend's sessions run a variant fused with the
     * passes whose fused ops that backend has (kn_model_graph_for, graph/passes.c). */
    bool fuse;
    pthread_mutex_t variants_mu; /* zero-filled is a valid unlocked mutex with glibc */
    kn_model_variant variants[KN_MODEL_MAX_VARIANTS];
    int n_variants;
};

/* ONNX protobuf <-> IR (graph/onnx_load.c). Load resolves external data relative to base_dir,
 * inlines model-local functions, turns Constant nodes' values into initializers where possible,
 * converts subgraph attributes, and resolves every node to a kn_op (-1 when unknown, which is
 * reported by kn_graph_check_supported, not at load). */
kn_status *kn_onnx_load_file(const char *path, struct kn_model **out);
kn_status *kn_onnx_load_buffer(const void *data, size_t size, const char *base_dir, struct kn_model **out);
void kn_model_release(struct kn_model *m);

/* Writes the ONNX file src_path to dst_path with the main graph's initializers names[0..n)
 * replaced by values[k] (same element count and type), the rest of the ModelProto unchanged
 * (graph/onnx_save.c): kn_onnx_write with only those values. Fails naming an initializer the
 * file lacks. */
kn_status *kn_onnx_write_with_initializers(const char *src_path, const char *dst_path, const char *const *names,
                                           const kn_tensor *const *values, int n);

/* Total initializer bytes above which kn_onnx_write moves the weights to an external data file:
 * a little under protobuf's 2 GiB limit on one message. */
#define KN_ONNX_EXTERNAL_THRESHOLD (((int64_t)1 << 31) - ((int64_t)64 << 20))
typedef struct kn_onnx_write_options {
    /* Initializer values: each replaces the main graph's initializer of that name, or, when the
     * file has none, the constant of that name in `ext` (a trained head weight). */
    const char *const *names;
    const kn_tensor *const *values;
    int n;
    /* What to add to the main graph: ext's nodes (appended in ext's order), its constants as new
     * initializers, its graph inputs and outputs as new inputs and outputs (those the file lacks);
     * value names are ext's. NULL: nothing added. */
    const struct kn_graph *ext;
    /* 0: KN_ONNX_EXTERNAL_THRESHOLD. When the file kept any initializer in external data, or the
     * initializers total more than this, every initializer of at least 1 KiB is written to
     * dst_path + ".data" (64-byte aligned, external_data location/offset/length relative to
     * dst_path's folder) and the rest stays inline. */
    int64_t external_threshold;
} kn_onnx_write_options;
/* Writes src_path's ModelProto to dst_path with o's changes. Both files are written atomically
 * (graph/atomic_file.h): on failure dst_path and its data file are as they were and no temporary
 * is left. External data of src_path is read relative to src_path's folder. */
kn_status *kn_onnx_write(const char *src_path, const char *dst_path, const kn_onnx_write_options *o);
/* The names the main graph of an ONNX file defines (its inputs, initializers and node outputs)
 * and its output names, each a malloc'd array of malloc'd strings. */
kn_status *kn_onnx_graph_names(const char *path, char ***defined, int *n_defined, char ***outputs, int *n_outputs);

/* A single TensorProto (the ONNX test layout's input_K.pb / output_K.pb). name may be NULL. */
kn_status *kn_tensor_proto_read(const void *buf, size_t len, kn_tensor **out, char **name);
kn_status *kn_tensor_proto_read_file(const char *path, kn_tensor **out, char **name);
kn_status *kn_tensor_proto_write_file(const char *path, const kn_tensor *t, const char *name);
/* A test-data value of the given kind (kn_tensor_kind): TensorProto, SequenceProto (of tensors or
 * of maps), MapProto or OptionalProto (an optional that holds nothing reads as kind NONE).
 * graph/value_proto.c */
kn_status *kn_value_proto_read_file(const char *path, int kind, kn_tensor **out, char **name);
/* The kind argument of kn_value_proto_read_file for a value as the graph declares it: a sequence is
 * a SequenceProto, a map a MapProto, an optional an OptionalProto (KN_KIND_NONE; it may hold a
 * tensor, a sequence, a map or nothing), anything else a TensorProto. */
struct kn_value;
int kn_value_file_kind(const struct kn_value *v);
/* Writes a value in the ONNX test layout: a tensor as TensorProto, a sequence as SequenceProto, a
 * map as MapProto, and with optional (the graph declares an optional) an OptionalProto holding any
 * of them, or empty for an empty optional (kind NONE). */
kn_status *kn_value_proto_write_file(const char *path, const kn_tensor *t, bool optional, const char *name);

#endif
