/* The graph IR shared by every backend and by autograd: values (typed, shaped, maybe constant)
 * and nodes (op + attributes + value ids). A graph owns its values, nodes and subgraphs. */
#ifndef KN_IR_H
#define KN_IR_H
#include "runtime/core/tensor.h"
#include <stdbool.h>
#include <stdint.h>

struct kn_graph;

typedef enum kn_attr_type {
    KN_ATTR_UNDEFINED = 0,
    KN_ATTR_FLOAT = 1,
    KN_ATTR_INT = 2,
    KN_ATTR_STRING = 3,
    KN_ATTR_TENSOR = 4,
    KN_ATTR_GRAPH = 5,
    KN_ATTR_FLOATS = 6,
    KN_ATTR_INTS = 7,
    KN_ATTR_STRINGS = 8,
    KN_ATTR_TENSORS = 9,
    KN_ATTR_GRAPHS = 10,
    KN_ATTR_SPARSE_TENSOR = 11,
    KN_ATTR_TYPE_PROTO = 13,
} kn_attr_type;

typedef struct kn_attr {
    char *name;
    kn_attr_type type;
    float f;
    int64_t i;
    char *s;
    size_t s_len; /* STRING (NUL-terminated as well) */
    float *floats;
    int n_floats;
    int64_t *ints;
    int n_ints;
    char **strings;
    int n_strings;
    kn_tensor *t; /* TENSOR */
    kn_tensor **tensors;
    int n_tensors;
    struct kn_graph *g; /* GRAPH */
    int tp_elem_type;   /* TYPE_PROTO: tensor element type (0: not a tensor type) */
} kn_attr;

/* Kind of value a name carries. Tensors are the common case; sequences and optionals appear in
 * control-flow models, maps in ai.onnx.ml models (scikit-learn exports). */
typedef enum kn_value_kind {
    KN_VAL_TENSOR = 0,
    KN_VAL_SEQUENCE = 1,
    KN_VAL_OPTIONAL = 2,
    KN_VAL_UNKNOWN = 3,
    KN_VAL_MAP = 4
} kn_value_kind;

typedef struct kn_value {
    char *name;
    kn_value_kind kind;
    kn_value_kind elem_kind;            /* for optional: what it wraps; for sequence: TENSOR or MAP */
    kn_tensor type;                     /* dtype + shape (dims -1 unknown); data NULL */
    char *dim_names[KN_MAX_DIMS];       /* symbolic names from the model, NULL if none */
    kn_tensor *constant;                /* initializer or folded constant (host), else NULL */
    int producer;                       /* node index, -1 for graph inputs, initializers, outer values */
    bool is_input, is_output, is_outer; /* is_outer: captured from an enclosing graph */
    kn_dtype key_dtype; /* a map, or a sequence/optional of maps: the key type (type.dtype: the values') */
} kn_value;

typedef struct kn_node {
    char *name;
    char *op_type;
    char *domain; /* "" for ai.onnx */
    int op;       /* kn_op id, or -1 when kiln has no such op */
    int opset;    /* version of the node's domain imported by the model */
    int n_inputs;
    int *inputs; /* value ids; -1 for an omitted optional input */
    int n_outputs;
    int *outputs;   /* value ids; -1 for an omitted optional output */
    int n_implicit; /* trailing inputs that are outer values used by subgraphs */
    int n_attrs;
    kn_attr *attrs;
    /* The op's attributes decoded once into its typed params struct (graph/params.h), owned by
     * the node; NULL for ops without attributes and before kn_node_decode_params. Kernels, shape
     * rules and gradients read this, never the attribute list. */
    void *params;
    /* What a backend prepared for this node once, in the graph its sessions share (the CPU packs
     * constant GEMM weights: kn_sgemm_packed), released with the node by prepared_free. */
    void *prepared;
    void (*prepared_free)(void *prepared);
} kn_node;

typedef struct kn_graph {
    char *name;
    kn_value *values;
    int n_values, cap_values;
    kn_node *nodes;
    int n_nodes, cap_nodes;
    int *inputs;
    int n_inputs; /* graph inputs (value ids), initializers excluded */
    int *outputs;
    int n_outputs;
    struct kn_graph *parent; /* enclosing graph for subgraphs */
    int opsets[8];
    char *opset_domains[8];
    int n_opsets; /* imported opsets (copied to subgraphs) */
} kn_graph;

kn_graph *kn_graph_new(const char *name);
void kn_graph_free(kn_graph *g);
/* Add a value; returns its id, or -1 on allocation failure. Names are copied. */
int kn_graph_add_value(kn_graph *g, const char *name);
int kn_graph_find_value(const kn_graph *g, const char *name); /* -1 if absent */
/* Add a node with copies of the given arrays; attrs are moved in (ownership taken). */
int kn_graph_add_node(kn_graph *g, const char *name, const char *op_type, const char *domain, const int *inputs,
                      int n_inputs, const int *outputs, int n_outputs, kn_attr *attrs, int n_attrs);
int kn_graph_opset(const kn_graph *g, const char *domain); /* 0 if not imported */
/* A copy of g to transform on its own (a session's fused graph): names, types, nodes, attributes
 * and subgraphs are copied; constants are borrowed views of g's (owns = false), so the weights
 * exist once, and g must outlive the copy. Params are decoded again for the copy. */
kn_status *kn_graph_clone(const kn_graph *g, kn_graph **out);

/* Attribute lookup by name; NULL if absent. The _or helpers return a default. */
const kn_attr *kn_node_attr(const kn_node *n, const char *name);
int64_t kn_attr_int(const kn_node *n, const char *name, int64_t def);
float kn_attr_float(const kn_node *n, const char *name, float def);
const char *kn_attr_str(const kn_node *n, const char *name, const char *def);
/* Integer list attribute: returns count (or -1 if absent) and sets *vals. */
int kn_attr_ints(const kn_node *n, const char *name, const int64_t **vals);
void kn_attr_clear(kn_attr *a);
/* Frees what a node owns (names, value ids, attributes, params); the kn_node itself is the
 * graph's. */
void kn_node_clear(kn_node *n);
kn_status *kn_attr_copy(kn_attr *dst, const kn_attr *src);

/* Debug description of a node for error messages: "node 'name' (Op, opset N)". */
const char *kn_node_desc(const kn_node *n, char *buf, size_t len);

#endif
