/* The executor: runs a graph's nodes in order on a backend, with intermediates placed in one
 * arena per run by the memory planner. A plan (shapes, offsets, values known before the run) is
 * built once per input-shape signature and cached by the session. Subgraphs of control-flow ops
 * run through the same node path with per-value allocation. */
#ifndef KN_EXECUTOR_H
#define KN_EXECUTOR_H
#include "graph/ops.h"
#include "graph/model.h"

/* Most inputs/outputs a node may have (Concat/Sum of thousands are refused, not overflowed). */
#define KN_NODE_MAX_IO 4096

typedef enum kn_val_state {
    KN_VS_ABSENT = 0,
    KN_VS_CONST,
    KN_VS_INPUT,
    KN_VS_KNOWN,
    KN_VS_ARENA,
    KN_VS_DYNAMIC,
    KN_VS_OUTER,
} kn_val_state;

typedef struct kn_plan {
    int64_t *key;
    int key_len;        /* input ranks and dims this plan is for */
    kn_tensor *vals;    /* per value: dtype/shape; data set for KNOWN values (owned) */
    uint8_t *state;     /* kn_val_state per value */
    size_t *offset;     /* arena offset for ARENA values */
    uint8_t *skip;      /* per node: all outputs known before the run */
    uint8_t *place;     /* per node: 1 runs on the session's backend, 0 on the CPU (fallback) */
    size_t arena_bytes; /* the arena lives on the session's backend */
    size_t known_bytes; /* host bytes of the KNOWN values, held as long as the plan */
    uint8_t *keep;      /* per value: kept to the end of the run like an output (values the caller
                         * asked for by name); NULL when none */
    int refs;           /* runs using it (under the session lock) */
    uint64_t last_used;
    /* The session's replayable recording of this plan's run (a CUDA graph, runtime/session.c),
     * its state (0 not tried yet, 1 ready, -1 not replayable) and the runs seen so far. */
    void *graph;
    int graph_state;
    int64_t runs;
} kn_plan;

/* Per-graph facts the executor needs, computed once. */
typedef struct kn_graph_info {
    const kn_graph *g;
    int *last_use;      /* per value: last node index reading it, -1 if none */
    uint8_t *is_output; /* per value */
} kn_graph_info;

kn_status *kn_graph_info_init(kn_graph_info *gi, const kn_graph *g);
void kn_graph_info_release(kn_graph_info *gi);

/* Scratch bump allocator: kernels' temporary buffers, reset before each node. */
typedef struct kn_scratch {
    char *buf;
    size_t cap, used;
    void **extra;
    int n_extra, cap_extra;
    size_t extra_bytes;
} kn_scratch;
void kn_scratch_reset(kn_scratch *s);
void kn_scratch_release(kn_scratch *s);
void *kn_scratch_alloc_impl(kn_exec_ctx *ctx, size_t bytes);

/* Plans of control-flow bodies (If branches, Loop and Scan bodies), kept by a session: each body is
 * planned once per signature of its input and outer-value shapes, like the main graph, and each
 * plan keeps an arena that later iterations and runs reuse. Thread-safe. */
typedef struct kn_body_cache kn_body_cache;
kn_status *kn_body_cache_new(kn_body_cache **out);
void kn_body_cache_free(kn_body_cache *c);
/* How many body plans were built so far (kiln bench reports it). */
int64_t kn_body_cache_plans_built(kn_body_cache *c);
/* The session's: */
int64_t kn_session_body_plans_built(const kn_session *s);
/* How many main-graph plans the session built so far (one per new input-shape signature): the
 * decode loop's check that one plan serves every cache length. */
int64_t kn_session_plans_built(const kn_session *s);
/* Nodes of the session's graph that compute in float16/bfloat16 because the session asked for
 * that precision (graph/precision.h); 0 for fp32/tf32 sessions. */
int kn_session_lowp_nodes(const kn_session *s);
/* CUDA graphs of the session (device sessions): runs recorded into a graph, and runs served by
 * replaying one instead of running the executor. */
void kn_session_graph_counts(const kn_session *s, int64_t *captured, int64_t *replayed);

/* One execution of a graph (the main graph or a subgraph). */
/* Called after node `node` of graph g ran, its outputs in vals (per value of g). A trainer starts
 * reducing a gradient bucket as soon as the backward has produced it. On a device run the
 * kernels may still be in flight on the run's queue: the hook must not read device data. */
typedef void (*kn_node_hook)(void *arg, const kn_graph *g, int node, const kn_tensor *vals);
/* The same with the run's device queue (a kn_backend.stream_begin stream; NULL on a host run): a
 * device trainer orders its own work after the node's kernels (an event recorded on that queue),
 * so it never reads device data from the host while they may still run. */
typedef void (*kn_node_stream_hook)(void *arg, const kn_graph *g, int node, const kn_tensor *vals, void *stream);

typedef struct kn_run {
    const kn_graph *g;
    const kn_graph_info *gi;
    kn_tensor *vals; /* per value, for this run */
    uint8_t *state;
    struct kn_run *parent; /* enclosing run, for outer values of subgraphs */
    kn_exec_ctx ctx;
    double *op_seconds; /* per kn_op, when profiling (else NULL) */
    int64_t *op_calls;
    /* Placement: nodes with place[i] run on be, the others on the CPU. A value lives where its
     * producer ran (vals[v].device); xfer[v] is its copy on the other side, made on first need and
     * freed when the run ends (after the device queue drained, so no in-flight read is cut). */
    const kn_backend *be; /* the session's backend; NULL or the CPU backend: host only */
    const uint8_t *place;
    kn_tensor *xfer;
    uint8_t *xfer_state;   /* 0 none, 1 made (owned), 2 borrowed (cached weights) */
    const uint8_t *keep;   /* the plan's keep set (NULL: graph outputs only) */
    kn_body_cache *bodies; /* where control-flow bodies find their plans (NULL: run them unplanned) */
    /* kn_session_run_device: inputs whose tensor says they live on be's device stay there
     * (otherwise every graph input is host memory), and dev_out[v] (per value; NULL: none) is a
     * device buffer that receives value v at the end of the run instead of a host copy. */
    bool inputs_placed;
    void *const *dev_out;
    const size_t *dev_out_cap; /* the bytes each dev_out buffer holds */
    kn_node_hook node_done;    /* kn_session_set_node_hook: the top-level run only */
    void *node_done_arg;
    kn_node_stream_hook node_stream; /* kn_session_set_node_stream_hook: the top-level run only */
    void *node_stream_arg;
    /* Host sessions: host_out[v] (per value; NULL: none) is the caller's buffer for output v, of
     * host_out_cap[v] bytes; an arena value that fits is computed there directly instead of being
     * copied at the end (the decode loop binds GroupQueryAttention's present to its past buffer). */
    void *const *host_out;
    const size_t *host_out_cap;
    /* Recording the run into a replayable graph (kn_backend.graph_begin) with that much pinned
     * staging; kn_run_finish stores the graph in *capture (NULL: a normal run). */
    void **capture;
    size_t capture_staging;
} kn_run;

/* Shape inference for one node (with data where inputs have it); an error names the op. */
kn_status *kn_infer_node(const kn_node *n, const kn_tensor *const *in, int n_in, kn_tensor *const *out, int n_out);
/* Infer shapes with data, allocate outputs on the host (owned) and run the CPU kernel. */
kn_status *kn_node_eval_host(kn_exec_ctx *ctx, const kn_node *n, const kn_tensor *const *in, int n_in,
                             kn_tensor *const *out, int n_out);
/* The one size limit for computing a node ahead of its run, at load (constant folding) and at
 * plan time (values that depend only on input shapes): outputs of at most this many elements.
 * Bigger results are computed in every run instead, on the session's device: folding them would
 * hold a second copy of weight-sized tensors on the host (per plan, for plan-time values). */
#define KN_EVAL_AHEAD_MAX_ELEMS ((int64_t)1 << 24)
/* Compute node n now, on the host, when that is allowed: the caller knows every input's data
 * (constants, or values computed ahead; Shape and Size need only their input's shape) and has
 * inferred out[]'s shapes. Not for random ops, control flow, nodes with subgraphs, ops without a
 * CPU kernel, or outputs of unknown size or over KN_EVAL_AHEAD_MAX_ELEMS: then *done stays false
 * and out[] is untouched. Otherwise out[] receive owned host tensors and *done is true. */
kn_status *kn_node_eval_ahead(kn_exec_ctx *ctx, const kn_node *n, const kn_tensor *const *in, kn_tensor *const *out,
                              bool *done);
/* Plan for the given input tensors (graph input order). keep (n_keep value ids, may be NULL) are
 * intermediate values the caller will read after the run: the planner keeps them alive to the end
 * like graph outputs (no reuse of their bytes, no in-place overwrite). */
kn_status *kn_plan_build(const kn_graph_info *gi, const kn_tensor *inputs, const int *keep, int n_keep,
                         const kn_backend *be, kn_threadpool *pool, kn_plan **out);
/* The same for a subgraph whose outer values are found in parent (their actual shapes are
 * planned with, so the caller's plan key must include them). */
kn_status *kn_plan_build_body(const kn_graph_info *gi, const kn_tensor *inputs, struct kn_run *parent,
                              kn_threadpool *pool, kn_plan **out);
void kn_plan_free(kn_plan *p, int n_values);
/* Appends t's part of a plan key (kind and dtype, rank, dims) at key[*len]; KN_PLAN_KEY_MAX(t) is
 * the most it writes. Sessions and control-flow bodies key their plans with it. */
#define KN_PLAN_KEY_MAX(t) (2 + ((t)->ndim > 0 ? (t)->ndim : 0))
static inline void kn_plan_key_put(const kn_tensor *t, int64_t *key, int *len) {
    key[(*len)++] = t->dtype + 1000 * (int64_t)t->kind;
    key[(*len)++] = t->ndim;
    for (int d = 0; d < t->ndim && t->kind == KN_KIND_TENSOR; d++) key[(*len)++] = t->dims[d];
}
/* Whether p was built for this key (its input-shape signature). */
bool kn_plan_matches_key(const kn_plan *p, const int64_t *key, int len);
/* Run a planned graph: inputs in graph input order, arena of plan->arena_bytes. Output tensors are
 * left in run->vals (arena or owned memory) for the caller to copy before kn_run_release. */
kn_status *kn_run_planned(kn_run *run, const kn_plan *plan, const kn_tensor *inputs, void *arena);
/* After kn_run_planned: bring graph outputs (and the plan's kept values) to the host and wait for the device queue; returns
 * the first error the device reported. */
kn_status *kn_run_finish(kn_run *run);
/* Run a subgraph: inputs bound to sub->inputs in order, outer values found through parent.
 * outs (sub->n_outputs) receive owned host tensors. */
kn_status *kn_run_subgraph(kn_exec_ctx *ctx, const kn_graph *sub, const kn_tensor *const *inputs, int n_inputs,
                           kn_tensor *outs);
void kn_run_release(kn_run *run);
/* Run a session with inputs already as tensors in graph input order (sequences and empty
 * optionals allowed, for the conformance runner); outs[k] receives an owned copy of graph output k. */
kn_status *kn_session_run_values(kn_session *s, const kn_tensor *inputs, kn_tensor *outs);
/* The same for the values named (graph outputs or any value of the session's graph, as
 * kn_session_run accepts); names NULL: the first n_names graph outputs. */
kn_status *kn_session_run_values_named(kn_session *s, const kn_tensor *inputs, const char *const *names, int n_names,
                                       kn_tensor *outs);
/* kn_session_run for a caller that keeps tensors on the session's device (the trainer's parameters
 * and gradients): inputs[i] with in_dev[i] set hold a device pointer of the session's backend,
 * outputs[i] with out_dev[i] set a device buffer of capacity bytes that receives the value (dtype
 * and shape are set as for a host output; data == NULL is refused). in_dev/out_dev may be NULL
 * (all host). On a CPU session both flags mean host memory. */
kn_status *kn_session_run_device(kn_session *s, const kn_named_tensor *inputs, int n_inputs, const uint8_t *in_dev,
                                 kn_named_tensor *outputs, int n_outputs, const uint8_t *out_dev);
/* hook (NULL: none) is called after each node of every later run of s, in the running thread. */
void kn_session_set_node_hook(kn_session *s, kn_node_hook hook, void *arg);
/* hook (NULL: none) is called after each node of every later run of s with the run's device queue
 * (kn_node_stream_hook), after the kn_node_hook if both are set. */
void kn_session_set_node_stream_hook(kn_session *s, kn_node_stream_hook hook, void *arg);
/* The backend a session runs on (the trainer allocates its device buffers there). */
const kn_backend *kn_session_backend(const kn_session *s);
/* Ops that must never run before the actual run (random numbers, control flow). */
bool kn_op_is_volatile(int op);

/* A node a session on a device backend leaves to the CPU for given input shapes, and why:
 * "no kernel" (the backend has none for the op), "dtype" (it has one, but not for these input
 * types: a float32 copy of the node would be placed), "attribute or shape" (the kernel's
 * predicate refuses these attributes or shapes) or "data-dependent shape" (an output's shape is
 * known only from data at run time, which the device plan cannot hold). kiln info --device. */
typedef struct kn_fallback {
    int node;           /* index into kn_session_graph(s)->nodes */
    const char *reason; /* one of the four strings above */
    char types[160];    /* the node's input types and shapes as planned */
} kn_fallback;
/* Plans the session's graph for these input tensors (their dtype and shape only: data is not
 * read) as a run would, and lists the nodes not placed on the session's backend, in graph order
 * (*out owned by the caller, free()). Nodes computed on the host before the run (shape
 * arithmetic) are not fallbacks and are not listed. A CPU session lists nothing. */
kn_status *kn_session_fallbacks(kn_session *s, const kn_tensor *inputs, kn_fallback **out, int *n_out);
/* The graph a session runs (the model's, fused for its backend). */
const kn_graph *kn_session_graph(const kn_session *s);

#endif
