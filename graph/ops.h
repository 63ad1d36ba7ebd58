/* Op registry contracts: the kn_op enum from ops.def, shape-inference functions, kernels and
 * the backend function table. An op's infer function is device-agnostic; kernels are per
 * backend. Ops are pure: outputs depend only on inputs and attributes. */
#ifndef KN_OPS_H
#define KN_OPS_H
#include "graph/ir.h"
#include "graph/params.h"
#include "runtime/core/threadpool.h"

typedef enum kn_inplace { KN_INPLACE_NONE = 0, KN_INPLACE_ELEMENTWISE = 1, KN_INPLACE_ALIAS = 2 } kn_inplace;

typedef enum kn_op {
#define KN_OP(id, name, domain, inplace, params, grad) KN_OP_##id,
#include "graph/ops.def"
#undef KN_OP
    KN_OP_COUNT
} kn_op;

/* Whether an op has a gradient (the grad column of ops.def). */
typedef enum kn_grad_kind {
    KN_GRAD_TODO = 0, /* differentiable; no rule yet (autograd stops at it with an error) */
    KN_GRAD_NONE = 1, /* not differentiable (integer/boolean/random outputs, constants) */
    KN_GRAD_RULE = 2, /* differentiable, by kn_grad_<ID> (autograd/grad_*.c) */
} kn_grad_kind;

/* A gradient rule: appends the backward nodes of one forward node to the graph (autograd/grad.h
 * describes the context). */
struct kn_grad_ctx;
typedef kn_status *(*kn_grad_fn)(struct kn_grad_ctx *c);

/* Decodes a node's attributes into its params struct (zeroed, params_size bytes) once at load,
 * with the opset's defaults; an error names the node and the attribute. */
typedef kn_status *(*kn_params_fn)(const struct kn_node *n, void *params);

typedef struct kn_op_info {
    const char *name;
    const char *domain;
    kn_inplace inplace;
    const char *params_name; /* the params column: a family or "none" */
    kn_params_fn params;     /* kn_params_decode_none decodes nothing (params stay NULL) */
    size_t params_size;
    kn_grad_kind grad;
    kn_grad_fn grad_rule; /* kn_grad_<ID> for RULE rows, else NULL */
} kn_op_info;
extern const kn_op_info kn_op_table[KN_OP_COUNT];
/* Resolve (op_type, domain) to a kn_op id; -1 if unknown. "ai.onnx" is treated as "". */
int kn_op_lookup(const char *op_type, const char *domain);

/* Shape and type inference. in[i] is NULL for an omitted optional input; otherwise it carries the
 * dtype and shape, and data != NULL when the value is known on the host (a constant, or computed
 * at plan time, or at run time on the CPU). The function fills dtype/ndim/dims of every non-NULL
 * out[i]. Unknown dims are -1 (static inference). When the output shape depends on a value that is
 * not known, set out ndim = -1 and return NULL: the executor calls again at run time with data.
 * Errors name the op and shapes (the executor prefixes the node). */
typedef struct kn_infer_ctx {
    const kn_node *node;
    const kn_tensor *const *in;
    int n_in;
    kn_tensor *const *out;
    int n_out;
} kn_infer_ctx;
typedef kn_status *(*kn_infer_fn)(kn_infer_ctx *c);

struct kn_backend;
struct kn_run;
/* What a kernel may use beyond its tensors. scratch: a per-run bump allocator reset before each
 * node (kn_scratch_alloc); never free what it returns. */
typedef struct kn_exec_ctx {
    kn_threadpool *pool;
    const struct kn_backend *backend;
    struct kn_run *run; /* the executor's run this node belongs to (outer values) */
    /* Runs a control-flow body: set by the executor, so kernels need not link against it (the
     * layers go floor -> graph -> kernels -> executor, never back). outs receive owned tensors. */
    kn_status *(*run_subgraph)(struct kn_exec_ctx *ctx, const kn_graph *sub, const kn_tensor *const *inputs,
                               int n_inputs, kn_tensor *outs);
    void *(*scratch_alloc)(struct kn_exec_ctx *ctx, size_t bytes);
    void *scratch_state;
    uint64_t seed; /* for random ops: seeded per run unless the node gives a seed */
    void *stream;  /* the device backend's queue for this run (NULL on the CPU) */
    int precision; /* the session's kn_precision: KN_PRECISION_TF32 lets float32 GEMMs round to TF32 */
} kn_exec_ctx;
static inline void *kn_scratch_alloc(kn_exec_ctx *ctx, size_t bytes) { return ctx->scratch_alloc(ctx, bytes); }
static inline kn_status *kn_exec_subgraph(kn_exec_ctx *ctx, const kn_graph *sub, const kn_tensor *const *inputs,
                                          int n_inputs, kn_tensor *outs) {
    if (!ctx->run_subgraph) return kn_error(KN_ERR_UNSUPPORTED, "subgraph '%s' needs an executor to run it", sub->name);
    return ctx->run_subgraph(ctx, sub, inputs, n_inputs, outs);
}

/* A kernel computes every non-NULL out[i], whose shape and dtype the infer function set and
 * whose data the executor allocated (out[0]->data may equal in[0]->data when the op's in-place
 * rule allows). in[i] is NULL for omitted optional inputs. Ops whose output shapes depend on
 * data (NonZero, Unique, ...) may be called with out[i]->data == NULL and ndim set by infer
 * from the data: infer always sees data at run time on the CPU. */
typedef kn_status *(*kn_kernel_fn)(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                   kn_tensor *const *out, int n_out);

/* Backend function table. The executor never special-cases a backend: it asks supports() and
 * kernel(), allocates through alloc/free, and moves data with copy(). */
typedef struct kn_backend {
    const char *name;
    kn_device_kind device;
    kn_kernel_fn (*kernel)(const struct kn_backend *b, int op);
    bool (*supports)(const struct kn_backend *b, const kn_node *n, const kn_tensor *const *in, int n_in);
    void *(*alloc)(const struct kn_backend *b, size_t bytes);
    void (*free)(const struct kn_backend *b, void *p);
    /* copy bytes between host (KN_DEVICE_CPU) and this backend's memory */
    kn_status *(*copy)(const struct kn_backend *b, void *dst, kn_device_kind dst_dev, const void *src,
                       kn_device_kind src_dev, size_t bytes);
    void *impl;
    /* ---- device backends only (NULL on the CPU, whose memory is the host's) ---- */
    /* Bit k set: the kernel reads input k on the host (shape arguments such as Reshape's shape or
     * Slice's starts), so the executor leaves it there instead of uploading it. */
    uint64_t (*host_inputs)(const struct kn_backend *b, const kn_node *n);
    /* A queue for one run (a CUDA stream with its own BLAS handle and workspace), and its end:
     * waits for the queued work, reports the first asynchronous error, recycles the queue. */
    kn_status *(*stream_begin)(const struct kn_backend *b, void **stream);
    kn_status *(*stream_end)(const struct kn_backend *b, void *stream);
    /* copy() ordered on a run's queue; a copy to the host returns once the bytes are there. */
    kn_status *(*copy_async)(const struct kn_backend *b, void *dst, kn_device_kind dst_dev, const void *src,
                             kn_device_kind src_dev, size_t bytes, void *stream);
    /* Device copy of immutable model data (initializers), uploaded once and shared by every
     * session on this device; forget() drops it when the model is freed. */
    kn_status *(*weights)(const struct kn_backend *b, const void *host, size_t bytes, const void **dev);
    void (*forget)(const struct kn_backend *b, const void *host);
    size_t (*free_bytes)(const struct kn_backend *b); /* device memory free now, for error messages */
    /* ---- optional, any backend ---- */
    /* The whole graph a session on this backend will run, after the fusions it has kernels for,
     * to rewrite as it likes (its own fusions, CUDA graph capture plans); NULL: nothing. */
    kn_status *(*graph_optimize)(const struct kn_backend *b, kn_graph *g);
    /* ---- optional, device backends: replayable runs (CUDA graphs) ----
     * graph_begin: the work queued on `stream` from now on is recorded, not run; copies from and
     * to the host go through staging_bytes of pinned memory the recording owns, so a replay reads
     * and writes the same host addresses. graph_end: stops recording, makes the replayable graph
     * (which keeps the stream), runs it once (the recorded run's own work) and completes that run's
     * copies to the host. graph_pin: the pinned address standing for host address `host` (n bytes)
     * in the recorded run's copies, to the device (to_host false) or to the host, or NULL.
     * graph_replay: runs the graph again and waits for it, reporting the first error. */
    kn_status *(*graph_begin)(const struct kn_backend *b, void *stream, size_t staging_bytes);
    kn_status *(*graph_end)(const struct kn_backend *b, void *stream, void **graph);
    void *(*graph_pin)(const struct kn_backend *b, void *graph, const void *host, size_t n, bool to_host);
    kn_status *(*graph_replay)(const struct kn_backend *b, void *graph);
    void (*graph_free)(const struct kn_backend *b, void *graph);
    /* ---- optional, device backends: a run's results to the host with one wait per run ----
     * copy_async to the host (dst on the host, src in this backend's memory) that completes when
     * stream_end returns without error: dst must stay valid until then, and nothing may read it
     * before. NULL: copy_async. */
    kn_status *(*copy_to_host_later)(const struct kn_backend *b, void *dst, const void *src, size_t bytes,
                                     void *stream);
    /* ---- optional, device backends: text generation's token choice (devgreedy) ----
     * greedy: for each of `rows` rows of `vocab` float32 logits in device memory (row r starts at
     * logits + row_off[r], row_off on the host), the id the CPU generator's scan picks (best = 0,
     * then i wherever x[i] > x[best]: the lowest id of the largest logit, NaNs never chosen unless
     * at id 0), written to ids on the host, so only rows * 4 bytes come back. pen_off (host, NULL:
     * no penalty) holds rows + 1 offsets into pen_ids (host): row r's distinct earlier ids, whose
     * logits get the repetition penalty (x < 0 ? x * penalty : x / penalty) in place first. */
    kn_status *(*greedy)(const struct kn_backend *b, float *logits, int rows, const int64_t *row_off, int64_t vocab,
                         const int32_t *pen_ids, const int32_t *pen_off, float penalty, int32_t *ids);
    /* topk: as greedy, but each row's k best (value, id) (1 <= k <= KN_TOPK_MAX, k <= vocab) in the CPU
     * sampler's sort order, value descending then id ascending, into vals/ids[r * k + j] (host);
     * nan[r] set where the row holds a NaN, which that order cannot place (the caller then reads
     * the row itself). The penalty, when asked, is applied in place first. */
    kn_status *(*topk)(const struct kn_backend *b, float *logits, int rows, const int64_t *row_off, int64_t vocab,
                       const int32_t *pen_ids, const int32_t *pen_off, float penalty, int k, float *vals, int32_t *ids,
                       uint8_t *nan);
} kn_backend;

#define KN_TOPK_MAX 256 /* kn_backend.topk's largest k */
const kn_backend *kn_cpu_backend(void);
/* The backend for a session's device (runtime/backends.c): the CPU, or the CUDA backend for
 * device index `index` (KN_ERR_NO_DEVICE when there is no such device or no CUDA in this build). */
kn_status *kn_backend_get(kn_device_kind dev, int index, const kn_backend **out);
/* Drop device copies of model data at host address `host` from every backend opened so far. */
void kn_backends_forget(const void *host);
#ifdef KILN_HAVE_CUDA
/* The CUDA backend of runtime device `device_index` (CUDA_VISIBLE_DEVICES applies), or NULL when
 * there is no such device; kn_backend_get gives the reason as a KN_ERR_NO_DEVICE status. */
const kn_backend *kn_cuda_backend(int device_index);
#endif

/* Declarations of every shape rule, CPU kernel, params decoder and gradient rule. Strong
 * references: an op whose row names a missing function fails to link, naming it. The grad
 * column picks, by token pasting, a declaration (and in graph/ops.c a table entry) for RULE rows
 * and nothing for TODO and NONE, so no weak symbol is needed. */
#define KN_GRAD_DECL_TODO(id)
#define KN_GRAD_DECL_NONE(id)
#define KN_GRAD_DECL_RULE(id) kn_status *kn_grad_##id(struct kn_grad_ctx *c);
#define KN_OP(id, name, domain, inplace, params, grad) \
    kn_status *kn_infer_##id(kn_infer_ctx *c); \
    kn_status *kn_cpu_##id(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in, \
                           kn_tensor *const *out, int n_out); \
    kn_status *kn_params_decode_##params(const kn_node *n, void *p); \
    KN_GRAD_DECL_##grad(id)
#include "graph/ops.def"
#undef KN_OP
kn_infer_fn kn_op_infer(int op);

/* Decodes a node's attributes into its params, once (n->op resolved, n->opset set): done by
 * kn_graph_resolve_ops at load and by the fusion passes for the nodes they make; a node built
 * by hand (tests) calls it before its kernel runs, and frees n->params after (kn_node_clear
 * does). Errors name the node. */
kn_status *kn_node_decode_params(kn_node *n);
/* An error naming the node when its op has params but they were never decoded: a graph from the
 * loader alone (kn_onnx_load_file / _buffer) before kn_graph_resolve_ops, whose shape rules and
 * kernels would otherwise read NULL params. NULL when the node is ready. */
kn_status *kn_node_check_params(const kn_node *n);
/* A node's params as the family's struct type: KN_PARAMS(node, softmax) ->
 * const kn_params_softmax *. */
#define KN_PARAMS(node, family) ((const kn_params_##family *)(node)->params)

/* ---- helpers for infer functions and kernels (graph/infer_common.c) ---- */
/* Numpy-style broadcast of shapes a and b into out (ndim/dims); error if incompatible. */
kn_status *kn_broadcast_shape(const kn_tensor *a, const kn_tensor *b, kn_tensor *out);
/* Normalise a possibly negative axis into [0, rank); error naming the op if out of range. */
kn_status *kn_norm_axis(int64_t axis, int rank, const kn_node *n, int *out);
/* Same shape and dtype as in[0] (unary elementwise). */
kn_status *kn_infer_same_as_input0(kn_infer_ctx *c);
/* Read an integer tensor (int32/int64) into a freshly malloc'd int64 array; *n = numel. */
kn_status *kn_tensor_to_i64(const kn_tensor *t, int64_t **vals, int64_t *n);
/* Row-major strides (in elements) for a shape. */
void kn_strides(const kn_tensor *t, int64_t *strides);
/* Error for a dtype the kernel does not handle: names op and tensor. */
kn_status *kn_err_dtype(const kn_node *n, const kn_tensor *t);

#endif
