/* The public API over the executor: model loading with graph optimisation, sessions with a plan
 * cache keyed by input shapes and a pool of arenas, and thread-safe runs. */
#include "runtime/executor.h"
#include "runtime/core/dtype.h"
#include "graph/passes.h"
#include "runtime/fold.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KN_PLAN_CACHE 16
#define KN_ARENA_POOL 64
/* A pooled arena not taken for this many runs is freed once the session is idle: a burst of
 * concurrent runs or one odd shape does not pin its memory for the session's lifetime. */
#define KN_ARENA_IDLE_RUNS 32
/* Recorded CUDA graphs a session keeps at most: each holds its arena, a stream with its cuBLASLt
 * workspace and pinned staging; a plan used while the session is at the limit runs node by node. */
#define KN_SESSION_GRAPHS 8

/* size is what the arena was allocated with, never the size of the plan it last served: a large
 * arena labelled small would be passed over by larger plans and the pool would fill with copies. */
typedef struct {
    void *p;
    size_t size;
    uint64_t last_used;
} kn_arena;

struct kn_session {
    const kn_model *model;
    const kn_graph *g;
    kn_session_options opt;
    kn_graph_info gi;
    kn_threadpool *pool;
    const kn_backend *be;
    pthread_mutex_t mu;
    kn_plan *plans[KN_PLAN_CACHE];
    int n_plans;
    uint64_t tick;
    kn_arena free_arenas[KN_ARENA_POOL];
    int n_free;
    size_t pooled_bytes;          /* sum of free_arenas[].size, under mu */
    int in_flight, max_in_flight; /* runs holding an arena now, and the most at once so far */
    uint64_t arena_tick;
    size_t peak_bytes;
    atomic_uint_fast64_t runs;
    double op_seconds[KN_OP_COUNT]; /* profiling totals, under mu */
    int64_t op_calls[KN_OP_COUNT];
    uint8_t fallback_logged[KN_OP_COUNT]; /* ops already reported as running on the CPU, under mu */
    kn_body_cache *bodies;                /* plans of control-flow bodies */
    int64_t plans_built;                  /* main-graph plans built so far, under mu */
    kn_node_hook node_done;               /* kn_session_set_node_hook */
    void *node_done_arg;
    kn_node_stream_hook node_stream; /* kn_session_set_node_stream_hook */
    void *node_stream_arg;
    bool graphs;                           /* replay plans' runs as CUDA graphs (KILN_CUDA_GRAPHS=0: off) */
    const char *seq_dim;                   /* opt.seq_bucket: the sequence dimension padded to buckets; NULL: off */
    int64_t graph_captures, graph_replays; /* under mu */
    atomic_int n_graphs;                   /* plans holding a recorded graph now */
};

/* A plan's run recorded as a device graph (kn_backend.graph_begin): the graph, the arena and the
 * device copies its kernels point at (kept for as long as the graph), and the pinned addresses
 * through which each replay reads the inputs and leaves the kept values. */
typedef struct kn_graph_rec {
    void *graph;
    void *arena;
    void **held;
    int n_held;
    void **in_pin; /* per graph input; NULL: nothing to copy (empty or unread) */
    int n_out;
    int *out_val;
    void **out_pin; /* NULL: an empty value */
    /* device-bound I/O (kn_session_run_device): the device address of each graph input (NULL:
     * host) and of each value's caller buffer (NULL: none) the kernels were recorded with. A
     * replay serves only a run binding the same addresses (the decode loop's cache buffers). */
    void **dev_in, **dev_at;
    bool busy;
} kn_graph_rec;

static void kn_graph_rec_free(const kn_backend *be, kn_graph_rec *r) {
    if (!r) return;
    if (r->graph) be->graph_free(be, r->graph);
    for (int i = 0; i < r->n_held; i++) be->free(be, r->held[i]);
    if (r->arena) be->free(be, r->arena);
    free(r->held);
    free(r->in_pin);
    free(r->out_val);
    free(r->out_pin);
    free(r->dev_in);
    free(r->dev_at);
    free(r);
}

static void kn_session_free_plan(kn_session *s, kn_plan *p) {
    if (p && p->graph) {
        kn_graph_rec_free(s->be, p->graph);
        atomic_fetch_sub(&s->n_graphs, 1); /* the caller may hold mu (eviction) */
    }
    kn_plan_free(p, s->g->n_values);
}

const char *kn_precision_name(kn_precision p) {
    switch (p) {
    case KN_PRECISION_FP32: return "fp32";
    case KN_PRECISION_TF32: return "tf32";
    case KN_PRECISION_FP16: return "fp16";
    case KN_PRECISION_BF16: return "bf16";
    }
    return "unknown";
}

void kn_session_options_init(kn_session_options *opt) {
    memset(opt, 0, sizeof *opt);
    opt->device = KN_DEVICE_CPU;
}

void kn_log_stderr(void *user, kn_log_level level, const char *msg) {
    fprintf(stderr, "kiln: %s%s\n", level == KN_LOG_WARNING ? "warning: " : "", msg);
}

void kn_model_options_init(kn_model_options *opt) {
    memset(opt, 0, sizeof *opt);
    opt->fuse = 1;
}

kn_status *kn_model_load_ex(const char *path, const kn_model_options *opt, kn_model **out) {
    *out = NULL;
    KN_CHECK(path, KN_ERR_INVALID_ARGUMENT, "kn_model_load: path is NULL");
    kn_model_options o;
    if (opt) o = *opt;
    else kn_model_options_init(&o);
    kn_model *m = NULL;
    KN_TRY(kn_onnx_load_file(path, &m));
    m->fuse = o.fuse != 0; /* applied per backend by each session (kn_model_graph_for) */
    kn_status *st = kn_graph_optimize(m->graph, false);
    if (st) {
        kn_model_release(m);
        return kn_error_wrap(st, "%s: ", path);
    }
    *out = m;
    return NULL;
}

kn_status *kn_model_load(const char *path, kn_model **out) { return kn_model_load_ex(path, NULL, out); }

kn_status *kn_model_load_buffer_ex(const void *data, size_t size, const char *base_dir, const kn_model_options *opt,
                                   kn_model **out) {
    *out = NULL;
    KN_CHECK(data || size == 0, KN_ERR_INVALID_ARGUMENT, "kn_model_load_buffer: data is NULL");
    kn_model_options o;
    if (opt) o = *opt;
    else kn_model_options_init(&o);
    kn_model *m = NULL;
    KN_TRY(kn_onnx_load_buffer(data, size, base_dir, &m));
    m->fuse = o.fuse != 0;
    kn_status *st = kn_graph_optimize(m->graph, false);
    if (st) {
        kn_model_release(m);
        return st;
    }
    *out = m;
    return NULL;
}

kn_status *kn_model_load_buffer(const void *data, size_t size, const char *base_dir, kn_model **out) {
    return kn_model_load_buffer_ex(data, size, base_dir, NULL, out);
}

void kn_model_free(kn_model *m) {
    if (m) kn_model_release(m);
}

/* The name of the sequence dimension that sequence buckets pad (kn_session_options.seq_bucket),
 * or NULL when padding is not known to be exact: input_ids and attention_mask [batch, S] with the
 * same named S, every input using S once and of a numeric type, every output dimension either
 * fixed or named (so the padded axis is known). */
static const char *kn_seq_dim(const kn_graph *g) {
    const char *seq = NULL;
    bool mask = false;
    for (int k = 0; k < g->n_inputs; k++) {
        const kn_value *v = &g->values[g->inputs[k]];
        if (v->type.ndim == 2 && v->dim_names[1] && !strcmp(v->name, "input_ids")) seq = v->dim_names[1];
    }
    for (int k = 0; seq && k < g->n_inputs; k++) {
        const kn_value *v = &g->values[g->inputs[k]];
        if (v->kind != KN_VAL_TENSOR || v->type.dtype == KN_STRING || v->type.ndim < 0) return NULL;
        int uses = 0;
        for (int d = 0; d < v->type.ndim; d++) uses += v->dim_names[d] && !strcmp(v->dim_names[d], seq);
        if (uses > 1) return NULL;
        if (!strcmp(v->name, "attention_mask"))
            mask = v->type.ndim == 2 && uses == 1 && v->dim_names[1] && !strcmp(v->dim_names[1], seq);
    }
    for (int k = 0; seq && k < g->n_outputs; k++) {
        const kn_value *v = &g->values[g->outputs[k]];
        if (v->kind != KN_VAL_TENSOR || v->type.dtype == KN_STRING || v->type.ndim < 0) return NULL;
        for (int d = 0; d < v->type.ndim; d++)
            if (v->type.dims[d] < 0 && !v->dim_names[d]) return NULL;
    }
    return mask ? seq : NULL;
}

/* Device sessions: the initializers the device's kernels read are uploaded now (the backend's
 * weight cache, shared by the model's sessions on that device), so that no run waits for an
 * upload; one a placement still wants later (an input CPU-bound here) is uploaded then. */
static kn_status *kn_session_upload_weights(const kn_session *s) {
    const kn_backend *be = s->be;
    const kn_graph *g = s->g;
    if (be->device == KN_DEVICE_CPU || !be->weights || !be->kernel) return NULL;
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        if (n->op < 0 || !be->kernel(be, n->op)) continue;
        uint64_t host = be->host_inputs ? be->host_inputs(be, n) : 0;
        for (int k = 0; k < n->n_inputs - n->n_implicit; k++) {
            int v = n->inputs[k];
            const kn_tensor *t = v >= 0 ? g->values[v].constant : NULL;
            if (!t || (k < 64 && (host >> k & 1)) || t->kind != KN_KIND_TENSOR || t->dtype == KN_STRING ||
                !kn_nbytes(t))
                continue;
            const void *dev = NULL;
            KN_TRY(be->weights(be, t->data, kn_nbytes(t), &dev));
        }
    }
    return NULL;
}

kn_status *kn_session_create(const kn_model *model, const kn_session_options *opt, kn_session **out) {
    *out = NULL;
    KN_CHECK(model && model->graph, KN_ERR_INVALID_ARGUMENT, "kn_session_create: model is NULL");
    kn_session_options o;
    if (opt) o = *opt;
    else kn_session_options_init(&o);
    KN_CHECK(o.precision >= KN_PRECISION_FP32 && o.precision <= KN_PRECISION_BF16, KN_ERR_INVALID_ARGUMENT,
             "kn_session_create: precision %d is not fp32, tf32, fp16 or bf16", (int)o.precision);
    const kn_backend *be = NULL;
    KN_TRY(kn_backend_get(o.device, o.device_index, &be));
    KN_CHECK(o.precision == KN_PRECISION_FP32 || be->device != KN_DEVICE_CPU, KN_ERR_UNSUPPORTED,
             "kn_session_create: precision %s needs a CUDA session; the CPU computes in the model's own types",
             kn_precision_name(o.precision));
    KN_TRY(kn_graph_check_supported(model->graph));
    /* the model's graph fused for this backend (never a fused op the backend has no kernel for),
     * and for fp16/bf16 rewritten to compute in that type (graph/precision.h); tf32 changes only
     * how the float32 GEMMs round (kn_exec_ctx.precision) */
    const kn_graph *g = NULL;
    kn_dtype lowp = o.precision == KN_PRECISION_FP16 ? KN_F16
        : o.precision == KN_PRECISION_BF16           ? KN_BF16
                                                     : KN_UNDEFINED;
    KN_TRY(kn_model_graph_for_lowp((kn_model *)model, be, lowp, &g));
    kn_session *s = calloc(1, sizeof *s);
    if (!s) return KN_OOM(sizeof *s);
    s->model = model;
    s->g = g;
    s->opt = o;
    s->be = be;
    const char *cg = getenv("KILN_CUDA_GRAPHS");
    s->graphs = be->graph_begin && !(cg && !strcmp(cg, "0"));
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->runs, 0);
    atomic_init(&s->n_graphs, 0);
    kn_status *st = kn_graph_info_init(&s->gi, s->g);
    if (!st) {
        s->pool = kn_threadpool_create(o.num_threads);
        if (!s->pool) st = kn_error(KN_ERR_RUNTIME, "could not start %d threads", o.num_threads);
    }
    if (!st) st = kn_body_cache_new(&s->bodies);
    if (!st) st = kn_session_upload_weights(s);
    if (st) {
        kn_session_free(s);
        return st;
    }
    if (o.seq_bucket > 0) s->seq_dim = kn_seq_dim(g);
    *out = s;
    return NULL;
}

void kn_session_free(kn_session *s) {
    if (!s) return;
    for (int i = 0; i < s->n_plans; i++) kn_session_free_plan(s, s->plans[i]);
    for (int i = 0; i < s->n_free; i++) s->be->free(s->be, s->free_arenas[i].p);
    kn_body_cache_free(s->bodies);
    kn_threadpool_free(s->pool);
    kn_graph_info_release(&s->gi);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int kn_session_input_count(const kn_session *s) { return s->g->n_inputs; }
int kn_session_output_count(const kn_session *s) { return s->g->n_outputs; }

static void kn_fill_info(const kn_value *v, kn_value_info *info) {
    memset(info, 0, sizeof *info);
    info->name = v->name;
    info->dtype = v->type.dtype;
    info->ndim = v->type.ndim;
    for (int d = 0; d < v->type.ndim && d < KN_MAX_DIMS; d++) {
        info->dims[d] = v->type.dims[d];
        info->dim_names[d] = v->dim_names[d];
    }
}

kn_status *kn_session_input_info(const kn_session *s, int index, kn_value_info *info) {
    KN_CHECK(index >= 0 && index < s->g->n_inputs, KN_ERR_INVALID_ARGUMENT,
             "input index %d out of range (model has %d inputs)", index, s->g->n_inputs);
    kn_fill_info(&s->g->values[s->g->inputs[index]], info);
    return NULL;
}

kn_status *kn_session_output_info(const kn_session *s, int index, kn_value_info *info) {
    KN_CHECK(index >= 0 && index < s->g->n_outputs, KN_ERR_INVALID_ARGUMENT,
             "output index %d out of range (model has %d outputs)", index, s->g->n_outputs);
    kn_fill_info(&s->g->values[s->g->outputs[index]], info);
    return NULL;
}

size_t kn_session_peak_bytes(const kn_session *s) {
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    size_t p = s->peak_bytes;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    return p;
}

int64_t kn_session_body_plans_built(const kn_session *s) { return kn_body_cache_plans_built(s->bodies); }

int64_t kn_session_plans_built(const kn_session *s) {
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    int64_t n = s->plans_built;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    return n;
}

void kn_session_graph_counts(const kn_session *s, int64_t *captured, int64_t *replayed) {
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    if (captured) *captured = s->graph_captures;
    if (replayed) *replayed = s->graph_replays;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
}

int kn_session_lowp_nodes(const kn_session *s) {
    kn_dtype lp = s->opt.precision == KN_PRECISION_FP16 ? KN_F16 : s->opt.precision == KN_PRECISION_BF16 ? KN_BF16 : 0;
    int n = 0;
    for (int i = 0; lp && i < s->g->n_nodes; i++) {
        const kn_node *nd = &s->g->nodes[i];
        if (nd->op != KN_OP_Cast && nd->n_outputs > 0 && nd->outputs[0] >= 0 &&
            s->g->values[nd->outputs[0]].type.dtype == lp)
            n++;
    }
    return n;
}

size_t kn_session_plan_bytes(const kn_session *s) {
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    size_t b = 0;
    for (int i = 0; i < s->n_plans; i++) b += s->plans[i]->known_bytes;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    return b;
}

const char *kn_session_profile(const kn_session *s, char *buf, size_t len) {
    if (!len) return buf;
    buf[0] = 0;
    double secs[KN_OP_COUNT];
    int64_t calls[KN_OP_COUNT];
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    memcpy(secs, s->op_seconds, sizeof secs);
    memcpy(calls, s->op_calls, sizeof calls);
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    double total = 0;
    for (int i = 0; i < KN_OP_COUNT; i++) total += secs[i];
    size_t off = (size_t)snprintf(buf, len, "%-28s %8s %12s %7s\n", "op", "calls", "total ms", "share");
    for (;;) {
        int best = -1;
        for (int i = 0; i < KN_OP_COUNT; i++)
            if (calls[i] && (best < 0 || secs[i] > secs[best])) best = i;
        if (best < 0 || off >= len) break;
        off += (size_t)snprintf(buf + off, len - off, "%-28s %8lld %12.3f %6.1f%%\n", kn_op_table[best].name,
                                (long long)calls[best], secs[best] * 1e3, total > 0 ? 100.0 * secs[best] / total : 0.0);
        calls[best] = 0;
    }
    return buf;
}

/* Check the caller's inputs against the graph's declared inputs; order them like the graph. */
/* Tensor inputs (graph order) against their declarations: dtype, rank and fixed dimensions, and
 * symbolic dimensions: the ONNX IR says one name is one size across all inputs, so two inputs that
 * give a named dimension two sizes are refused, naming both and the dimension. */
static kn_status *kn_check_inputs(const kn_graph *g, const kn_tensor *bound) {
    char want[KN_DESC_LEN], got[KN_DESC_LEN];
    for (int k = 0; k < g->n_inputs; k++) {
        const kn_value *decl = &g->values[g->inputs[k]];
        const kn_tensor *b = &bound[k];
        if (b->kind != KN_KIND_TENSOR || decl->kind != KN_VAL_TENSOR) continue;
        if (decl->type.dtype != KN_UNDEFINED && decl->type.dtype != b->dtype)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "input '%s': expected %s, got %s", decl->name,
                            kn_tensor_desc(&decl->type, want, sizeof want), kn_tensor_desc(b, got, sizeof got));
        if (decl->type.ndim < 0) continue;
        bool ok = decl->type.ndim == b->ndim;
        for (int d = 0; ok && d < b->ndim; d++) ok = decl->type.dims[d] < 0 || decl->type.dims[d] == b->dims[d];
        if (!ok)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "input '%s': expected shape %s, got %s", decl->name,
                            kn_tensor_desc(&decl->type, want, sizeof want), kn_tensor_desc(b, got, sizeof got));
    }
    for (int k = 0; k < g->n_inputs; k++) {
        const kn_value *dk = &g->values[g->inputs[k]];
        if (bound[k].kind != KN_KIND_TENSOR || dk->kind != KN_VAL_TENSOR || dk->type.ndim != bound[k].ndim) continue;
        for (int d = 0; d < bound[k].ndim; d++) {
            if (!dk->dim_names[d]) continue;
            /* the first earlier (input, axis) with this name holds the size it must have */
            for (int j = 0; j <= k; j++) {
                const kn_value *dj = &g->values[g->inputs[j]];
                if (bound[j].kind != KN_KIND_TENSOR || dj->kind != KN_VAL_TENSOR || dj->type.ndim != bound[j].ndim)
                    continue;
                int e_end = j == k ? d : bound[j].ndim;
                int e = 0;
                while (e < e_end && !(dj->dim_names[e] && strcmp(dj->dim_names[e], dk->dim_names[d]) == 0)) e++;
                if (e == e_end) continue;
                if (bound[j].dims[e] != bound[k].dims[d])
                    return kn_error(KN_ERR_INVALID_ARGUMENT,
                                    "inputs '%s' and '%s' disagree on dimension '%s': %lld (axis %d of %s) vs %lld "
                                    "(axis %d of %s)",
                                    dj->name, dk->name, dk->dim_names[d], (long long)bound[j].dims[e], e,
                                    kn_tensor_desc(&bound[j], want, sizeof want), (long long)bound[k].dims[d], d,
                                    kn_tensor_desc(&bound[k], got, sizeof got));
                j = k + 1; /* compared with the first holder: enough */
                break;
            }
        }
    }
    return NULL;
}

static kn_status *kn_bind_inputs(const kn_session *s, const kn_named_tensor *inputs, int n_inputs, kn_tensor *bound) {
    const kn_graph *g = s->g;
    char got[KN_DESC_LEN];
    for (int k = 0; k < g->n_inputs; k++) bound[k].ndim = -2; /* marks "not given" */
    for (int i = 0; i < n_inputs; i++) {
        const kn_named_tensor *t = &inputs[i];
        KN_CHECK(t->name, KN_ERR_INVALID_ARGUMENT, "input %d has no name", i);
        int k = 0;
        while (k < g->n_inputs && strcmp(g->values[g->inputs[k]].name, t->name) != 0) k++;
        if (k == g->n_inputs) {
            char names[512];
            size_t off = 0;
            names[0] = 0;
            for (int j = 0; j < g->n_inputs && off < sizeof names; j++)
                off += (size_t)snprintf(names + off, sizeof names - off, "%s'%s'", j ? ", " : "",
                                        g->values[g->inputs[j]].name);
            return kn_error(KN_ERR_INVALID_ARGUMENT, "unknown input '%s' (the model's inputs are %s)", t->name, names);
        }
        KN_CHECK(bound[k].ndim == -2, KN_ERR_INVALID_ARGUMENT, "input '%s' given twice", t->name);
        KN_CHECK(t->ndim >= 0 && t->ndim <= KN_MAX_DIMS, KN_ERR_INVALID_ARGUMENT, "input '%s': rank %d unsupported",
                 t->name, t->ndim);
        kn_tensor *b = &bound[k];
        memset(b, 0, sizeof *b);
        b->dtype = t->dtype;
        kn_tensor_set_shape(b, t->ndim, t->dims);
        b->data = t->data;
        b->device = KN_DEVICE_CPU;
        for (int d = 0; d < t->ndim; d++)
            KN_CHECK(t->dims[d] >= 0, KN_ERR_INVALID_ARGUMENT, "input '%s': negative dimension %lld", t->name,
                     (long long)t->dims[d]);
        int64_t ne = kn_numel(b);
        KN_CHECK(ne <= KN_MAX_NUMEL, KN_ERR_INVALID_ARGUMENT, "input '%s': %s is too large", t->name,
                 kn_tensor_desc(b, got, sizeof got));
        KN_CHECK(ne == 0 || t->data, KN_ERR_INVALID_ARGUMENT, "input '%s': data is NULL", t->name);
        KN_CHECK(kn_dtype_valid(t->dtype), KN_ERR_INVALID_ARGUMENT, "input '%s': invalid dtype %d", t->name,
                 (int)t->dtype);
    }
    for (int k = 0; k < g->n_inputs; k++)
        KN_CHECK(bound[k].ndim != -2, KN_ERR_INVALID_ARGUMENT, "missing input '%s'", g->values[g->inputs[k]].name);
    return kn_check_inputs(g, bound);
}

static kn_status *kn_session_get_plan(kn_session *s, const kn_tensor *bound, const int *keep, int n_keep,
                                      kn_plan **out) {
    int len = 0;
    int64_t key[1 + 64 * (KN_MAX_DIMS + 2)];
    int64_t *dyn_key = NULL, *k = key;
    int need = 1 + n_keep;
    for (int i = 0; i < s->g->n_inputs; i++) need += KN_PLAN_KEY_MAX(&bound[i]);
    if (need > (int)(sizeof key / sizeof key[0])) {
        dyn_key = malloc(sizeof(int64_t) * (size_t)need);
        if (!dyn_key) return KN_OOM(0);
        k = dyn_key;
    }
    for (int i = 0; i < s->g->n_inputs; i++) kn_plan_key_put(&bound[i], k, &len);
    /* the values kept for the caller are part of the plan: each set gets its own */
    k[len++] = n_keep;
    for (int i = 0; i < n_keep; i++) k[len++] = keep[i];
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_plans; i++)
        if (kn_plan_matches_key(s->plans[i], k, len)) {
            *out = s->plans[i];
            s->plans[i]->refs++;
            s->plans[i]->last_used = ++s->tick;
            pthread_mutex_unlock(&s->mu);
            free(dyn_key);
            return NULL;
        }
    pthread_mutex_unlock(&s->mu);
    /* build outside the lock: other shapes keep running */
    kn_plan *p = NULL;
    kn_status *st = kn_plan_build(&s->gi, bound, keep, n_keep, s->be, s->pool, &p);
    if (st) {
        free(dyn_key);
        return st;
    }
    p->key = malloc(sizeof(int64_t) * (size_t)(len ? len : 1));
    if (!p->key) {
        kn_plan_free(p, s->g->n_values);
        free(dyn_key);
        return KN_OOM(0);
    }
    memcpy(p->key, k, sizeof(int64_t) * (size_t)len);
    p->key_len = len;
    free(dyn_key);
    pthread_mutex_lock(&s->mu);
    p->refs = 1;
    p->last_used = ++s->tick;
    s->plans_built++;
    if (s->n_plans == KN_PLAN_CACHE) {
        /* evict the least recently used plan nobody is running */
        int victim = -1;
        for (int i = 0; i < s->n_plans; i++)
            if (s->plans[i]->refs == 0 && (victim < 0 || s->plans[i]->last_used < s->plans[victim]->last_used))
                victim = i;
        if (victim >= 0) {
            kn_session_free_plan(s, s->plans[victim]);
            s->plans[victim] = s->plans[--s->n_plans];
        }
    }
    if (s->n_plans < KN_PLAN_CACHE) s->plans[s->n_plans++] = p;
    else p->refs = -1000000; /* not cached: the caller frees it after the run */
    if (p->arena_bytes > s->peak_bytes) s->peak_bytes = p->arena_bytes;
    if (s->be->device != KN_DEVICE_CPU) {
        /* each op the device backend leaves to the CPU is reported once per session */
        for (int i = 0; i < s->g->n_nodes; i++) {
            const kn_node *n = &s->g->nodes[i];
            if (p->skip[i] || p->place[i] || n->op < 0 || s->fallback_logged[n->op]) continue;
            s->fallback_logged[n->op] = 1;
            char nd[256], msg[512];
            snprintf(msg, sizeof msg, "%s has no kernel for %s (first: %s); it runs on the CPU with copies",
                     s->be->name, n->op_type, kn_node_desc(n, nd, sizeof nd));
            (s->opt.log ? s->opt.log : kn_log_stderr)(s->opt.log_user, KN_LOG_WARNING, msg);
        }
    }
    pthread_mutex_unlock(&s->mu);
    *out = p;
    return NULL;
}

static void kn_session_put_plan(kn_session *s, kn_plan *p) {
    pthread_mutex_lock(&s->mu);
    p->refs--;
    bool orphan = p->refs < -100000;
    pthread_mutex_unlock(&s->mu);
    if (orphan) kn_session_free_plan(s, p);
}

/* Takes the smallest pooled arena that holds bytes, or allocates one; *size is its real size. */
static void *kn_session_get_arena(kn_session *s, size_t bytes, size_t *size) {
    pthread_mutex_lock(&s->mu);
    if (++s->in_flight > s->max_in_flight) s->max_in_flight = s->in_flight;
    int best = -1;
    for (int i = 0; i < s->n_free; i++)
        if (s->free_arenas[i].size >= bytes && (best < 0 || s->free_arenas[i].size < s->free_arenas[best].size))
            best = i;
    if (best >= 0) {
        void *p = s->free_arenas[best].p;
        *size = s->free_arenas[best].size;
        s->pooled_bytes -= *size;
        s->free_arenas[best] = s->free_arenas[--s->n_free];
        pthread_mutex_unlock(&s->mu);
        return p;
    }
    pthread_mutex_unlock(&s->mu);
    *size = bytes;
    return s->be->alloc(s->be, bytes);
}

static void kn_session_drop_arena(kn_session *s, int i, void **victims, int *n_victims) {
    victims[(*n_victims)++] = s->free_arenas[i].p;
    s->pooled_bytes -= s->free_arenas[i].size;
    s->free_arenas[i] = s->free_arenas[--s->n_free];
}

/* Returns an arena (NULL: the run got none) and keeps the pool bounded in bytes: never more than
 * the most runs seen at once times the largest plan, i.e. what those runs held together. When the
 * session goes idle, arenas unused for KN_ARENA_IDLE_RUNS runs are freed, except the largest,
 * which serves every plan seen so far. */
static void kn_session_put_arena(kn_session *s, void *p, size_t size) {
    void *victims[KN_ARENA_POOL + 1];
    int n_victims = 0;
    pthread_mutex_lock(&s->mu);
    s->in_flight--;
    uint64_t now = ++s->arena_tick;
    if (p) {
        if (s->n_free < KN_ARENA_POOL) {
            s->free_arenas[s->n_free++] = (kn_arena){p, size, now};
            s->pooled_bytes += size;
        } else {
            victims[n_victims++] = p;
        }
    }
    size_t peak = s->peak_bytes > size ? s->peak_bytes : size;
    size_t cap = peak * (size_t)(s->max_in_flight > 0 ? s->max_in_flight : 1);
    while (s->pooled_bytes > cap && s->n_free > 0) {
        /* the smallest arena is the one fewest plans can use */
        int small = 0;
        for (int i = 1; i < s->n_free; i++)
            if (s->free_arenas[i].size < s->free_arenas[small].size) small = i;
        kn_session_drop_arena(s, small, victims, &n_victims);
    }
    if (s->in_flight == 0 && s->n_free > 1) {
        int largest = 0;
        for (int i = 1; i < s->n_free; i++)
            if (s->free_arenas[i].size > s->free_arenas[largest].size) largest = i;
        void *keep = s->free_arenas[largest].p;
        for (int i = s->n_free - 1; i >= 0; i--)
            if (s->free_arenas[i].p != keep && now - s->free_arenas[i].last_used > KN_ARENA_IDLE_RUNS)
                kn_session_drop_arena(s, i, victims, &n_victims);
    }
    pthread_mutex_unlock(&s->mu);
    /* freed outside the lock: other runs need not wait on the allocator */
    for (int i = 0; i < n_victims; i++) s->be->free(s->be, victims[i]);
}

static kn_status *kn_copy_output(const kn_tensor *src, kn_named_tensor *dst) {
    char buf[KN_DESC_LEN];
    dst->dtype = src->dtype;
    dst->ndim = src->ndim;
    for (int d = 0; d < src->ndim; d++) dst->dims[d] = src->dims[d];
    size_t bytes = kn_nbytes(src);
    int64_t n = kn_numel(src);
    if (!dst->data) {
        /* zeroed: a string output whose copy fails part-way can still be freed element by element */
        dst->data = calloc(1, bytes ? bytes : 1);
        if (!dst->data) return KN_OOM(bytes);
        dst->capacity = bytes;
    } else if (dst->capacity < bytes) {
        return kn_error(KN_ERR_INVALID_ARGUMENT, "output '%s' needs %zu bytes for %s, the buffer holds %zu", dst->name,
                        bytes, kn_tensor_desc(src, buf, sizeof buf), dst->capacity);
    }
    if (src->dtype == KN_STRING) {
        char **from = src->data, **to = dst->data;
        for (int64_t i = 0; i < n; i++)
            if (!(to[i] = strdup(from[i] ? from[i] : ""))) return KN_OOM(strlen(from[i] ? from[i] : ""));
    } else if (bytes && dst->data != src->data) { /* equal: computed in the caller's buffer (kn_run.host_out) */
        memcpy(dst->data, src->data, bytes);
    }
    return NULL;
}

/* Plan, arena and run for bound inputs (graph order); take() reads outputs while the run lives. */
typedef kn_status *(*kn_take_fn)(void *ctx, const kn_graph *g, kn_run *run);

/* Whether plan's run can be recorded once and replayed: every node it runs is on the device with
 * shapes known at plan time (no CPU fallback, which would read device results mid-run; no
 * data-dependent shapes), nothing random (a replay would repeat the draws) and no subgraph. */
static bool kn_plan_replayable(const kn_session *s, const kn_plan *p) {
    const kn_graph *g = s->g;
    for (int i = 0; i < g->n_nodes; i++) {
        if (p->skip[i]) continue;
        const kn_node *n = &g->nodes[i];
        if (!p->place[i] || n->op < 0 || kn_op_is_volatile(n->op)) return false;
        for (int a = 0; a < n->n_attrs; a++)
            if (n->attrs[a].g) return false;
        for (int k = 0; k < n->n_outputs; k++)
            if (n->outputs[k] >= 0 && p->state[n->outputs[k]] == KN_VS_DYNAMIC) return false;
        /* an input read on the host must be known before the run: one the device computes would
         * need a wait mid-run, and a graph input read there would be stale in a replay */
        uint64_t host = s->be->host_inputs ? s->be->host_inputs(s->be, n) : 0;
        for (int k = 0; k < n->n_inputs && k < 64; k++) {
            int v = n->inputs[k];
            if (v >= 0 && (host >> k & 1) && p->state[v] != KN_VS_CONST && p->state[v] != KN_VS_KNOWN) return false;
        }
    }
    return true;
}

/* Pinned staging a recorded run needs: the inputs, the values planned ahead that the device
 * reads, and the kept values, each rounded as the backend stages them. */
static size_t kn_capture_staging(const kn_session *s, const kn_plan *p, const kn_tensor *bound) {
    const kn_graph *g = s->g;
    size_t n = 4096;
    for (int k = 0; k < g->n_inputs; k++) n += kn_nbytes(&bound[k]) + 256;
    for (int v = 0; v < g->n_values; v++)
        if (p->state[v] == KN_VS_KNOWN || s->gi.is_output[v] || (p->keep && p->keep[v]))
            n += kn_nbytes(&p->vals[v]) + 256;
    return n;
}

/* After a recorded run: where each replay finds inputs and kept values, and the device memory
 * the graph keeps. false: the recording cannot serve replays (an input read on the host, a kept
 * value that never left the device). */
static bool kn_graph_rec_fill(kn_session *s, const kn_plan *p, const kn_tensor *bound, kn_run *run, kn_graph_rec *r) {
    const kn_graph *g = s->g;
    const kn_backend *be = s->be;
    r->in_pin = calloc((size_t)(g->n_inputs ? g->n_inputs : 1), sizeof(void *));
    r->out_val = malloc(sizeof(int) * (size_t)(g->n_values ? g->n_values : 1));
    r->out_pin = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof(void *));
    r->held = malloc(sizeof(void *) * (size_t)(g->n_values ? g->n_values : 1));
    r->dev_in = calloc((size_t)(g->n_inputs ? g->n_inputs : 1), sizeof(void *));
    r->dev_at = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof(void *));
    if (!r->in_pin || !r->out_val || !r->out_pin || !r->held || !r->dev_in || !r->dev_at) return false;
    for (int v = 0; run->dev_out && v < g->n_values; v++) r->dev_at[v] = run->dev_out[v];
    for (int k = 0; k < g->n_inputs; k++) {
        size_t bytes = kn_nbytes(&bound[k]);
        int v = g->inputs[k];
        if (bound[k].device != KN_DEVICE_CPU) { /* the kernels read it where it lies */
            r->dev_in[k] = bound[k].data;
            continue;
        }
        if (!bytes || v < 0 || s->gi.last_use[v] < 0) continue;
        if (!(r->in_pin[k] = be->graph_pin(be, r->graph, bound[k].data, bytes, false))) return false;
    }
    for (int v = 0; v < g->n_values; v++) {
        if (!(s->gi.is_output[v] || (p->keep && p->keep[v])) || run->state[v] == KN_VS_ABSENT) continue;
        size_t bytes = kn_nbytes(&run->vals[v]);
        r->out_val[r->n_out] = v;
        if (r->dev_at[v]) { /* the recorded kernels (or copy) write the caller's device buffer */
            r->out_pin[r->n_out++] = r->dev_at[v];
            continue;
        }
        if (p->state[v] == KN_VS_KNOWN || p->state[v] == KN_VS_CONST) {
            r->out_pin[r->n_out++] = run->vals[v].data; /* computed ahead: the plan's (or model's) own bytes */
            continue;
        }
        if (bytes && !(r->out_pin[r->n_out] = be->graph_pin(be, r->graph, run->vals[v].data, bytes, true)))
            return false;
        r->n_out++;
    }
    /* device copies the recorded kernels read (uploaded inputs, values planned ahead) */
    for (int v = 0; v < g->n_values; v++)
        if (run->xfer_state[v] == 1 && run->xfer[v].device != KN_DEVICE_CPU) {
            r->held[r->n_held++] = run->xfer[v].data;
            run->xfer_state[v] = 0;
        }
    return true;
}

/* Whether a run binds the device addresses rec was recorded with: a run binding other device
 * buffers (or host I/O where the recording had device I/O) runs plainly. */
static bool kn_graph_rec_matches(const kn_session *s, const kn_graph_rec *r, const kn_tensor *bound,
                                 void *const *dev_out) {
    const kn_graph *g = s->g;
    for (int k = 0; k < g->n_inputs; k++)
        if ((bound[k].device != KN_DEVICE_CPU ? bound[k].data : NULL) != r->dev_in[k]) return false;
    for (int v = 0; v < g->n_values; v++)
        if ((dev_out ? dev_out[v] : NULL) != r->dev_at[v]) return false;
    return true;
}

/* A plan's recorded run again: inputs into the pinned staging, one launch, one wait; take() reads
 * the kept values from the staging. */
static kn_status *kn_session_replay(kn_session *s, const kn_plan *plan, kn_graph_rec *r, const kn_tensor *bound,
                                    kn_take_fn take, void *take_ctx) {
    const kn_graph *g = s->g;
    for (int k = 0; k < g->n_inputs; k++)
        if (r->in_pin[k]) memcpy(r->in_pin[k], bound[k].data, kn_nbytes(&bound[k]));
    KN_TRY(s->be->graph_replay(s->be, r->graph));
    kn_run run = {.g = g, .gi = &s->gi};
    run.vals = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof(kn_tensor));
    run.state = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
    kn_status *st = run.vals && run.state ? NULL : KN_OOM(0);
    for (int j = 0; !st && j < r->n_out; j++) {
        int v = r->out_val[j];
        run.vals[v] = plan->vals[v];
        run.vals[v].data = r->out_pin[j];
        run.vals[v].owns = false;
        run.vals[v].device = r->dev_at[v] ? s->be->device : KN_DEVICE_CPU;
        run.state[v] = KN_VS_DYNAMIC;
    }
    if (!st) st = take(take_ctx, g, &run);
    free(run.vals);
    free(run.state);
    return st;
}

static kn_status *kn_session_exec(kn_session *s, const kn_tensor *bound, const int *keep, int n_keep, kn_take_fn take,
                                  void *take_ctx, void *const *dev_out, const size_t *dev_cap, void *const *host_out,
                                  const size_t *host_cap) {
    const kn_graph *g = s->g;
    kn_plan *plan = NULL;
    KN_TRY(kn_session_get_plan(s, bound, keep, n_keep, &plan));
    kn_status *st = NULL;
    /* device sessions: the second run of a plan is recorded as a graph, later runs replay it */
    enum { RUN_PLAIN, RUN_CAPTURE, RUN_REPLAY } mode = RUN_PLAIN;
    kn_graph_rec *rec = NULL;
    if (s->graphs && !s->opt.profile && !s->node_done && !s->node_stream) {
        pthread_mutex_lock(&s->mu);
        plan->runs++;
        if (plan->graph_state == 1 && !((kn_graph_rec *)plan->graph)->busy &&
            kn_graph_rec_matches(s, plan->graph, bound, dev_out)) {
            rec = plan->graph;
            rec->busy = true;
            mode = RUN_REPLAY;
        } else if (plan->graph_state == 0 && plan->runs >= 2 && atomic_load(&s->n_graphs) < KN_SESSION_GRAPHS) {
            plan->graph_state = kn_plan_replayable(s, plan) ? 2 : -1; /* 2: being recorded */
            if (plan->graph_state == 2) mode = RUN_CAPTURE;
        }
        pthread_mutex_unlock(&s->mu);
    }
    if (mode == RUN_REPLAY) {
        st = kn_session_replay(s, plan, rec, bound, take, take_ctx);
        pthread_mutex_lock(&s->mu);
        rec->busy = false;
        s->graph_replays++;
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_add(&s->runs, 1);
        kn_session_put_plan(s, plan);
        return st;
    }
    void *graph = NULL;
    size_t arena_size = 0;
    void *arena = NULL;
    if (mode == RUN_CAPTURE) {
        /* the graph's own arena: its kernels keep pointing into it */
        if (!(rec = calloc(1, sizeof *rec)) ||
            !(arena = s->be->alloc(s->be, plan->arena_bytes ? plan->arena_bytes : 64))) {
            free(rec);
            rec = NULL;
            pthread_mutex_lock(&s->mu);
            plan->graph_state = -1;
            pthread_mutex_unlock(&s->mu);
            mode = RUN_PLAIN;
        }
    }
    if (mode == RUN_PLAIN) arena = kn_session_get_arena(s, plan->arena_bytes, &arena_size);
    if (!arena) {
        st = kn_error(KN_ERR_OUT_OF_MEMORY, "could not allocate the activation arena on %s: %zu bytes asked, %zu free",
                      s->be->name, plan->arena_bytes, s->be->free_bytes ? s->be->free_bytes(s->be) : (size_t)0);
    }
    kn_scratch scratch = {0};
    kn_run run = {.g = g,
                  .gi = &s->gi,
                  .be = s->be,
                  .bodies = s->bodies,
                  .inputs_placed = true,
                  .dev_out = dev_out,
                  .dev_out_cap = dev_cap,
                  .node_done = s->node_done,
                  .node_done_arg = s->node_done_arg,
                  .node_stream = s->node_stream,
                  .node_stream_arg = s->node_stream_arg,
                  .host_out = host_out,
                  .host_out_cap = host_cap};
    if (mode == RUN_CAPTURE) {
        run.capture = &graph;
        run.capture_staging = kn_capture_staging(s, plan, bound);
    }
    double op_seconds[KN_OP_COUNT];
    int64_t op_calls[KN_OP_COUNT];
    if (s->opt.profile) {
        memset(op_seconds, 0, sizeof op_seconds);
        memset(op_calls, 0, sizeof op_calls);
        run.op_seconds = op_seconds;
        run.op_calls = op_calls;
    }
    if (!st) {
        run.ctx = (kn_exec_ctx){.pool = s->pool,
                                .backend = kn_cpu_backend(),
                                .run = &run,
                                .run_subgraph = kn_run_subgraph,
                                .scratch_alloc = kn_scratch_alloc_impl,
                                .scratch_state = &scratch,
                                .precision = (int)s->opt.precision,
                                .seed = 0x9e3779b97f4a7c15ull * (atomic_fetch_add(&s->runs, 1) + 1)};
        run.vals = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof(kn_tensor));
        run.state = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
        if (!run.vals || !run.state) st = KN_OOM(0);
    }
    if (!st) st = kn_run_planned(&run, plan, bound, arena);
    if (!st) st = kn_run_finish(&run);
    bool recorded = false;
    if (mode == RUN_CAPTURE && graph) {
        /* made even when the run's end then failed (its one wait reports a kernel's error after
         * graph_end): freed with rec below */
        rec->graph = graph;
        rec->arena = arena;
        if (!st) recorded = kn_graph_rec_fill(s, plan, bound, &run, rec);
    }
    if (!st) st = take(take_ctx, g, &run);
    if (s->opt.profile) {
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < KN_OP_COUNT; i++) {
            s->op_seconds[i] += op_seconds[i];
            s->op_calls[i] += op_calls[i];
        }
        pthread_mutex_unlock(&s->mu);
    }
    if (run.vals) kn_run_release(&run);
    else free(run.state);
    kn_scratch_release(&scratch);
    if (mode == RUN_CAPTURE) {
        pthread_mutex_lock(&s->mu);
        if (recorded) {
            plan->graph = rec;
            plan->graph_state = 1;
            s->graph_captures++;
            atomic_fetch_add(&s->n_graphs, 1);
        } else {
            plan->graph_state = -1;
        }
        pthread_mutex_unlock(&s->mu);
        if (!recorded) {
            if (rec && rec->graph) kn_graph_rec_free(s->be, rec); /* frees the arena too */
            else {
                free(rec);
                s->be->free(s->be, arena);
            }
            if (st && kn_status_get_code(st) != KN_ERR_INVALID_ARGUMENT) {
                /* the recording failed (a call a capture forbids, staging too small): run it plainly */
                kn_status_free(st);
                st = kn_session_exec(s, bound, keep, n_keep, take, take_ctx, dev_out, dev_cap, host_out, host_cap);
            }
        }
    } else {
        /* the arena may be larger than this plan needs; it is pooled under the size it was allocated with */
        kn_session_put_arena(s, arena, arena_size);
    }
    kn_session_put_plan(s, plan);
    return st;
}

typedef struct {
    kn_named_tensor *outputs;
    int n_outputs;
    const int *vals;
    const uint8_t *out_dev; /* NULL: all host */
} kn_take_named;

/* The value a run is asked for by name: a graph output, or any value of the session's graph (an
 * input, a constant or an intermediate, which the plan then keeps alive). *extra says it is not a
 * graph output. An intermediate that fusion replaced has no producer here: that is said plainly. */
static kn_status *kn_session_value_id(const kn_session *s, const char *name, int *out, bool *extra) {
    const kn_graph *g = s->g;
    *extra = false;
    KN_CHECK(name, KN_ERR_INVALID_ARGUMENT, "an output has no name");
    for (int k = 0; k < g->n_outputs; k++)
        if (g->outputs[k] >= 0 && strcmp(g->values[g->outputs[k]].name, name) == 0) {
            *out = g->outputs[k];
            return NULL;
        }
    for (int v = 0; v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        if (!val->name || strcmp(val->name, name) != 0) continue;
        bool is_input = false;
        for (int k = 0; k < g->n_inputs && !is_input; k++) is_input = g->inputs[k] == v;
        if (val->producer < 0 && !val->constant && !is_input)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "value '%s' is not computed by this session's graph: a fusion for the %s backend "
                            "replaced the nodes around it (load with kn_model_options.fuse = 0 to read it)",
                            name, s->be->name);
        *out = v;
        *extra = true;
        return NULL;
    }
    return kn_error(KN_ERR_INVALID_ARGUMENT, "unknown output '%s': neither a graph output nor a value of the graph",
                    name);
}

/* Resolves names to value ids; keep (sorted, so the same set finds the same plan) gets the ones
 * that are not graph outputs. */
static kn_status *kn_session_resolve_outputs(const kn_session *s, const char *const *names, int n, int *vals, int *keep,
                                             int *n_keep) {
    *n_keep = 0;
    for (int i = 0; i < n; i++) {
        bool extra = false;
        KN_TRY(kn_session_value_id(s, names[i], &vals[i], &extra));
        if (!extra) continue;
        int j = *n_keep;
        while (j > 0 && keep[j - 1] > vals[i]) {
            keep[j] = keep[j - 1];
            j--;
        }
        if (j > 0 && keep[j - 1] == vals[i]) { /* asked twice */
            for (int m = j; m < *n_keep; m++) keep[m] = keep[m + 1];
            continue;
        }
        keep[j] = vals[i];
        (*n_keep)++;
    }
    return NULL;
}

static kn_status *kn_take_named_outputs(void *ctx, const kn_graph *g, kn_run *run) {
    kn_take_named *t = ctx;
    for (int i = 0; i < t->n_outputs; i++) {
        int v = t->vals[i];
        if (run->state[v] == KN_VS_ABSENT)
            return kn_error(KN_ERR_RUNTIME, "output '%s' was not computed", g->values[v].name);
        if (run->vals[v].kind != KN_KIND_TENSOR)
            return kn_error(KN_ERR_UNSUPPORTED,
                            "output '%s' is a sequence or optional, which kn_session_run cannot return",
                            g->values[v].name);
        if (t->out_dev && t->out_dev[i]) { /* already copied into the caller's device buffer */
            kn_named_tensor *o = &t->outputs[i];
            o->dtype = run->vals[v].dtype;
            o->ndim = run->vals[v].ndim;
            for (int d = 0; d < o->ndim; d++) o->dims[d] = run->vals[v].dims[d];
            continue;
        }
        KN_TRY(kn_copy_output(&run->vals[v], &t->outputs[i]));
    }
    return NULL;
}

/* Undoes what a failed run allocated: outputs that came in with data == NULL go back to NULL, so
 * the caller owns nothing after a failure (kiln.h). */
static void kn_release_owned_outputs(kn_named_tensor *outputs, int n_outputs, const unsigned char *owned) {
    for (int i = 0; i < n_outputs; i++) {
        if (!owned[i] || !outputs[i].data) continue;
        if (outputs[i].dtype == KN_STRING) {
            /* string elements are strdup'ed one by one; calloc'ed arrays hold NULL past the copied ones */
            char **strs = outputs[i].data;
            size_t n = outputs[i].capacity / sizeof(char *);
            for (size_t k = 0; k < n; k++) free(strs[k]);
        }
        free(outputs[i].data);
        outputs[i].data = NULL;
        outputs[i].capacity = 0;
    }
}

kn_status *kn_session_run(kn_session *s, const kn_named_tensor *inputs, int n_inputs, kn_named_tensor *outputs,
                          int n_outputs) {
    return kn_session_run_device(s, inputs, n_inputs, NULL, outputs, n_outputs, NULL);
}

const kn_backend *kn_session_backend(const kn_session *s) { return s->be; }

/* Axis of value v's declared shape named s->seq_dim, or -1. */
static int kn_seq_axis(const kn_session *s, const kn_value *v) {
    for (int d = 0; d < v->type.ndim; d++)
        if (v->dim_names[d] && !strcmp(v->dim_names[d], s->seq_dim)) return d;
    return -1;
}

/* Rows of `rows` blocks: dst holds len_d of the axis, src len_s, each block `inner` bytes wide. */
static void kn_copy_axis(char *dst, int64_t len_d, const char *src, int64_t len_s, int64_t outer, int64_t len,
                         size_t inner) {
    for (int64_t o = 0; o < outer; o++)
        memcpy(dst + (size_t)(o * len_d) * inner, src + (size_t)(o * len_s) * inner, (size_t)len * inner);
}

/* kn_session_run with the sequence padded to its bucket; *done false when this run is not one to
 * pad (no bucket, already a bucket length, a name that is not a graph output, ...). */
static kn_status *kn_session_run_bucketed(kn_session *s, const kn_named_tensor *inputs, int n_inputs,
                                          kn_named_tensor *outputs, int n_outputs, bool *done) {
    const kn_graph *g = s->g;
    *done = false;
    int64_t len = -1;
    for (int i = 0; i < n_inputs; i++)
        if (inputs[i].name && !strcmp(inputs[i].name, "attention_mask") && inputs[i].ndim == 2) len = inputs[i].dims[1];
    int64_t bucket = s->opt.seq_bucket, padded = len > 0 ? (len + bucket - 1) / bucket * bucket : len;
    if (len <= 0 || padded == len) return NULL;
    int *axis_out = malloc(sizeof(int) * (size_t)(n_outputs ? n_outputs : 1));
    if (!axis_out) return KN_OOM(0);
    for (int i = 0; i < n_outputs; i++) {
        int k = 0;
        while (k < g->n_outputs && (!outputs[i].name || strcmp(g->values[g->outputs[k]].name, outputs[i].name))) k++;
        if (k == g->n_outputs) {
            free(axis_out);
            return NULL; /* an intermediate value: its axes are not declared */
        }
        axis_out[i] = kn_seq_axis(s, &g->values[g->outputs[k]]);
    }
    kn_named_tensor *pin = calloc((size_t)(n_inputs ? n_inputs : 1), sizeof *pin);
    kn_named_tensor *pout = calloc((size_t)(n_outputs ? n_outputs : 1), sizeof *pout);
    kn_status *st = pin && pout ? NULL : KN_OOM(0);
    for (int i = 0; !st && i < n_inputs; i++) {
        pin[i] = inputs[i];
        int k = 0;
        while (k < g->n_inputs && (!inputs[i].name || strcmp(g->values[g->inputs[k]].name, inputs[i].name))) k++;
        int a = k < g->n_inputs ? kn_seq_axis(s, &g->values[g->inputs[k]]) : -1;
        if (a < 0 || a >= inputs[i].ndim || inputs[i].dims[a] != len || inputs[i].dtype == KN_STRING) continue;
        /* zeros past the real length: pad ids, a mask that hides them, type 0 */
        int64_t outer = 1;
        size_t inner = kn_dtype_size(inputs[i].dtype);
        for (int d = 0; d < a; d++) outer *= inputs[i].dims[d];
        for (int d = a + 1; d < inputs[i].ndim; d++) inner *= (size_t)inputs[i].dims[d];
        pin[i].dims[a] = padded;
        pin[i].data = calloc((size_t)(outer * padded) * inner + 1, 1);
        if (!pin[i].data) {
            st = KN_OOM((size_t)(outer * padded) * inner);
            break;
        }
        kn_copy_axis(pin[i].data, padded, inputs[i].data, len, outer, len, inner);
    }
    unsigned char *owned = calloc((size_t)(n_outputs ? n_outputs : 1), 1);
    if (!owned && !st) st = KN_OOM(0);
    for (int i = 0; !st && i < n_outputs; i++) {
        pout[i].name = outputs[i].name;
        owned[i] = outputs[i].data == NULL;
    }
    if (!st) st = kn_session_run_device(s, pin, n_inputs, NULL, pout, n_outputs, NULL);
    for (int i = 0; !st && i < n_outputs; i++) {
        kn_named_tensor *o = &outputs[i], *p = &pout[i];
        int a = axis_out[i];
        int64_t outer = 1;
        size_t inner = kn_dtype_size(p->dtype);
        if (a >= 0 && (a >= p->ndim || p->dims[a] != padded)) {
            st = kn_error(KN_ERR_RUNTIME, "output '%s': axis %d is %lld long after padding the sequence to %lld",
                          p->name, a, a < p->ndim ? (long long)p->dims[a] : -1LL, (long long)padded);
            break;
        }
        for (int d = 0; a >= 0 && d < a; d++) outer *= p->dims[d];
        for (int d = a + 1; a >= 0 && d < p->ndim; d++) inner *= (size_t)p->dims[d];
        if (a < 0) {
            outer = 1;
            inner = p->capacity;
        }
        size_t bytes = a >= 0 ? (size_t)(outer * len) * inner : p->capacity;
        if (!o->data) {
            if (!(o->data = malloc(bytes ? bytes : 1))) {
                st = KN_OOM(bytes);
                break;
            }
            o->capacity = bytes;
        } else if (o->capacity < bytes) {
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "output '%s' needs %zu bytes, the buffer holds %zu", o->name, bytes,
                          o->capacity);
            break;
        }
        o->dtype = p->dtype;
        o->ndim = p->ndim;
        memcpy(o->dims, p->dims, sizeof o->dims);
        if (a >= 0) {
            o->dims[a] = len;
            kn_copy_axis(o->data, len, p->data, padded, outer, len, inner);
        } else if (bytes) {
            memcpy(o->data, p->data, bytes);
        }
    }
    if (st && owned) kn_release_owned_outputs(outputs, n_outputs, owned);
    for (int i = 0; pin && i < n_inputs; i++)
        if (pin[i].data != inputs[i].data) free(pin[i].data);
    for (int i = 0; pout && i < n_outputs; i++) kn_free(pout[i].data);
    free(owned);
    free(pin);
    free(pout);
    free(axis_out);
    *done = true;
    return st;
}

kn_status *kn_session_run_device(kn_session *s, const kn_named_tensor *inputs, int n_inputs, const uint8_t *in_dev,
                                 kn_named_tensor *outputs, int n_outputs, const uint8_t *out_dev) {
    KN_CHECK(s, KN_ERR_INVALID_ARGUMENT, "kn_session_run: session is NULL");
    if (s->seq_dim && !in_dev && !out_dev && inputs && n_inputs >= 0 && (outputs || n_outputs == 0)) {
        bool done = false;
        kn_status *st = kn_session_run_bucketed(s, inputs, n_inputs, outputs, n_outputs, &done);
        if (done || st) return st;
    }
    KN_CHECK(n_inputs >= 0 && (inputs || n_inputs == 0), KN_ERR_INVALID_ARGUMENT, "kn_session_run: bad inputs array");
    KN_CHECK(n_outputs >= 0 && (outputs || n_outputs == 0), KN_ERR_INVALID_ARGUMENT,
             "kn_session_run: bad outputs array");
    const kn_graph *g = s->g;
    int *out_vals = NULL;
    kn_tensor *bound = calloc((size_t)(g->n_inputs ? g->n_inputs : 1), sizeof(kn_tensor));
    if (!bound) return KN_OOM(0);
    kn_status *st = kn_bind_inputs(s, inputs, n_inputs, bound);
    for (int i = 0; !st && in_dev && i < n_inputs; i++) {
        if (!in_dev[i]) continue;
        for (int k = 0; k < g->n_inputs; k++)
            if (!strcmp(g->values[g->inputs[k]].name, inputs[i].name)) bound[k].device = s->be->device;
    }
    void **dev_out = NULL;
    size_t *dev_cap = NULL;
    bool any_dev_out = false;
    for (int i = 0; out_dev && i < n_outputs; i++) any_dev_out |= out_dev[i] != 0;
    if (!st && any_dev_out && s->be->device != KN_DEVICE_CPU) {
        dev_out = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof *dev_out);
        dev_cap = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof *dev_cap);
        if (!dev_out || !dev_cap) st = KN_OOM(0);
    }
    int *keep = NULL, n_keep = 0;
    const char **names = NULL;
    if (!st && n_outputs) {
        out_vals = malloc(sizeof(int) * (size_t)n_outputs);
        keep = malloc(sizeof(int) * (size_t)n_outputs);
        names = malloc(sizeof(char *) * (size_t)n_outputs);
        if (!out_vals || !keep || !names) st = KN_OOM(0);
        for (int i = 0; !st && i < n_outputs; i++) names[i] = outputs[i].name;
        if (!st) st = kn_session_resolve_outputs(s, names, n_outputs, out_vals, keep, &n_keep);
    }
    unsigned char *owned = NULL;
    if (!st && n_outputs) {
        owned = calloc((size_t)n_outputs, 1);
        if (!owned) st = KN_OOM(0);
        for (int i = 0; !st && i < n_outputs; i++) owned[i] = outputs[i].data == NULL;
    }
    for (int i = 0; !st && any_dev_out && i < n_outputs; i++) {
        if (!out_dev[i]) continue;
        if (!outputs[i].data) {
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "output '%s': a device output needs a buffer", outputs[i].name);
            break;
        }
        owned[i] = 0;
        if (dev_out) {
            dev_out[out_vals[i]] = outputs[i].data;
            dev_cap[out_vals[i]] = outputs[i].capacity;
        }
    }
    /* a host session computes caller-buffer outputs in place (kiln.h: such a buffer is written
     * during the run) */
    void **host_out = NULL;
    size_t *host_cap = NULL;
    for (int i = 0; !st && s->be->device == KN_DEVICE_CPU && i < n_outputs; i++) {
        if (!outputs[i].data || owned[i]) continue;
        if (!host_out) {
            host_out = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof *host_out);
            host_cap = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof *host_cap);
            if (!host_out || !host_cap) st = KN_OOM(0);
        }
        if (!st) host_out[out_vals[i]] = outputs[i].data, host_cap[out_vals[i]] = outputs[i].capacity;
    }
    kn_take_named take = {outputs, n_outputs, out_vals, dev_out ? out_dev : NULL};
    if (!st)
        st =
            kn_session_exec(s, bound, keep, n_keep, kn_take_named_outputs, &take, dev_out, dev_cap, host_out, host_cap);
    free(dev_out);
    free(dev_cap);
    free(host_out);
    free(host_cap);
    if (st && owned) kn_release_owned_outputs(outputs, n_outputs, owned);
    free(owned);
    free(bound);
    free(out_vals);
    free(keep);
    free(names);
    return st;
}

typedef struct {
    kn_tensor *outs;
    const int *vals;
    int n;
} kn_take_values;

static kn_status *kn_take_all_values(void *ctx, const kn_graph *g, kn_run *run) {
    kn_take_values *t = ctx;
    kn_tensor *outs = t->outs;
    for (int k = 0; k < t->n; k++) {
        int v = t->vals[k];
        if (run->state[v] == KN_VS_ABSENT)
            return kn_error(KN_ERR_RUNTIME, "output '%s' was not computed", g->values[v].name);
        kn_tensor *c = NULL;
        KN_TRY(kn_tensor_clone(&run->vals[v], &c));
        outs[k] = *c;
        free(c);
    }
    return NULL;
}

kn_status *kn_session_run_values(kn_session *s, const kn_tensor *inputs, kn_tensor *outs) {
    return kn_session_run_values_named(s, inputs, NULL, s->g->n_outputs, outs);
}

/* A map input against its declaration: map for map, and the declared key and value types. */
static kn_status *kn_check_map_input(const kn_value *decl, const kn_tensor *t) {
    bool want_map = decl->kind == KN_VAL_MAP || (decl->kind == KN_VAL_OPTIONAL && decl->elem_kind == KN_VAL_MAP);
    if ((t->kind == KN_KIND_MAP) != want_map && t->kind != KN_KIND_NONE && t->kind != KN_KIND_SEQUENCE)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "input '%s' is %s, the model expects %s", decl->name,
                        t->kind == KN_KIND_MAP ? "a map" : "a tensor", want_map ? "a map" : "a tensor");
    if (t->kind != KN_KIND_MAP) return NULL;
    const kn_map *m = t->data;
    if (m && decl->key_dtype != KN_UNDEFINED && m->keys.dtype != decl->key_dtype)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "input '%s': map keys are %s, the model expects %s", decl->name,
                        kn_dtype_name(m->keys.dtype), kn_dtype_name(decl->key_dtype));
    if (m && m->keys.dims[0] > 0 && decl->type.dtype != KN_UNDEFINED && t->dtype != decl->type.dtype)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "input '%s': map values are %s, the model expects %s", decl->name,
                        kn_dtype_name(t->dtype), kn_dtype_name(decl->type.dtype));
    return NULL;
}

kn_status *kn_session_run_values_named(kn_session *s, const kn_tensor *inputs, const char *const *names, int n_names,
                                       kn_tensor *outs) {
    const kn_graph *g = s->g;
    for (int k = 0; k < n_names; k++) memset(&outs[k], 0, sizeof outs[k]);
    for (int k = 0; k < g->n_inputs; k++) {
        const kn_value *decl = &g->values[g->inputs[k]];
        const kn_tensor *t = &inputs[k];
        bool want_seq =
            decl->kind == KN_VAL_SEQUENCE || (decl->kind == KN_VAL_OPTIONAL && decl->elem_kind == KN_VAL_SEQUENCE);
        if (t->kind == KN_KIND_SEQUENCE && !want_seq)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "input '%s' is a sequence, the model expects a tensor",
                            decl->name);
        if (t->kind == KN_KIND_NONE && decl->kind != KN_VAL_OPTIONAL)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "input '%s' is an empty optional, the model expects a value",
                            decl->name);
        KN_TRY(kn_check_map_input(decl, t));
    }
    KN_TRY(kn_check_inputs(g, inputs));
    int *vals = malloc(sizeof(int) * (size_t)(n_names ? n_names : 1));
    int *keep = malloc(sizeof(int) * (size_t)(n_names ? n_names : 1));
    int n_keep = 0;
    kn_status *st = vals && keep ? NULL : KN_OOM(0);
    if (!st && names) st = kn_session_resolve_outputs(s, names, n_names, vals, keep, &n_keep);
    else if (!st)
        for (int k = 0; k < n_names; k++) vals[k] = g->outputs[k];
    kn_take_values take = {outs, vals, n_names};
    if (!st) st = kn_session_exec(s, inputs, keep, n_keep, kn_take_all_values, &take, NULL, NULL, NULL, NULL);
    if (st)
        for (int k = 0; k < n_names; k++) kn_tensor_release(&outs[k]);
    free(vals);
    free(keep);
    return st;
}

const char *kn_version(void) { return KN_VERSION_STRING; }

uint64_t kn_session_run_count(const kn_session *s) { return s ? (uint64_t)atomic_load(&s->runs) : 0; }

void kn_session_set_run_count(kn_session *s, uint64_t runs) {
    if (s) atomic_store(&s->runs, runs);
}

void kn_session_set_node_hook(kn_session *s, kn_node_hook hook, void *arg) {
    if (!s) return;
    s->node_done = hook;
    s->node_done_arg = arg;
}

void kn_session_set_node_stream_hook(kn_session *s, kn_node_stream_hook hook, void *arg) {
    if (!s) return;
    s->node_stream = hook;
    s->node_stream_arg = arg;
}

const kn_graph *kn_session_graph(const kn_session *s) { return s->g; }

/* Why plan p left node i to the CPU (see kn_fallback). */
static const char *kn_fallback_reason(const kn_backend *be, const kn_node *n, const kn_plan *p) {
    if (n->op < 0 || !be->kernel(be, n->op)) return "no kernel";
    for (int k = 0; k < n->n_outputs; k++) {
        const kn_tensor *t = n->outputs[k] >= 0 ? &p->vals[n->outputs[k]] : NULL;
        if (t && (t->ndim < 0 || !kn_shape_known(t) || t->dtype == KN_STRING)) return "data-dependent shape";
    }
    if (n->n_inputs > KN_NODE_MAX_IO) return "attribute or shape";
    /* the same node with its data as float32 (inputs of input 0's type, and other floats):
     * placed means the dtype decided it */
    kn_tensor tv[16];
    const kn_tensor *in[16];
    if (n->n_inputs > 16) return "attribute or shape";
    bool changed = false;
    kn_dtype t0 = n->n_inputs > 0 && n->inputs[0] >= 0 ? p->vals[n->inputs[0]].dtype : KN_F32;
    for (int k = 0; k < n->n_inputs; k++) {
        in[k] = NULL;
        if (n->inputs[k] < 0) continue;
        tv[k] = p->vals[n->inputs[k]];
        kn_dtype t = tv[k].dtype;
        if (t != KN_F32 && (t == t0 || t == KN_F64 || t == KN_F16 || t == KN_BF16)) {
            tv[k].dtype = KN_F32;
            changed = true;
        }
        in[k] = &tv[k];
    }
    if (changed && be->supports(be, n, in, n->n_inputs)) return "dtype";
    for (int k = 0; k < n->n_inputs; k++) {
        kn_dtype t = in[k] ? in[k]->dtype : KN_F32;
        if (t != KN_F32 && t != KN_F16 && t != KN_BF16 && t != KN_I32 && t != KN_I64 && t != KN_BOOL) return "dtype";
    }
    return "attribute or shape";
}

kn_status *kn_session_fallbacks(kn_session *s, const kn_tensor *inputs, kn_fallback **out, int *n_out) {
    *out = NULL;
    *n_out = 0;
    if (s->be->device == KN_DEVICE_CPU) return NULL;
    KN_TRY(kn_check_inputs(s->g, inputs));
    kn_plan *p = NULL;
    KN_TRY(kn_plan_build(&s->gi, inputs, NULL, 0, s->be, s->pool, &p));
    const kn_graph *g = s->g;
    kn_fallback *f = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), sizeof *f);
    if (!f) {
        kn_plan_free(p, g->n_values);
        return KN_OOM(0);
    }
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *nd = &g->nodes[i];
        if (p->skip[i] || p->place[i]) continue;
        f[n].node = i;
        f[n].reason = kn_fallback_reason(s->be, nd, p);
        size_t off = 0;
        f[n].types[0] = 0;
        for (int k = 0; k < nd->n_inputs && off < sizeof f[n].types; k++) {
            char b[KN_DESC_LEN];
            off += (size_t)snprintf(f[n].types + off, sizeof f[n].types - off, "%s%s", k ? ", " : "",
                                    nd->inputs[k] >= 0 ? kn_tensor_desc(&p->vals[nd->inputs[k]], b, sizeof b) : "-");
        }
        n++;
    }
    kn_plan_free(p, g->n_values);
    *out = f;
    *n_out = n;
    return NULL;
}
