/* Graph execution: plan building (shape inference with values known before the run, memory
 * planning), planned runs over one arena, and unplanned runs for control-flow subgraphs. */
#include "runtime/executor.h"
#include "graph/planner.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>

#define KN_ARENA_ALIGN 64

bool kn_op_is_volatile(int op) {
    switch (op) {
    case KN_OP_RandomUniform:
    case KN_OP_RandomUniformLike:
    case KN_OP_RandomNormal:
    case KN_OP_RandomNormalLike:
    case KN_OP_Bernoulli:
    case KN_OP_If:
    case KN_OP_Loop:
    case KN_OP_Scan:
    case KN_OP_SequenceMap: return true;
    default: return false;
    }
}

/* ---- per-graph facts ---- */

kn_status *kn_graph_info_init(kn_graph_info *gi, const kn_graph *g) {
    memset(gi, 0, sizeof *gi);
    gi->g = g;
    size_t nv = (size_t)(g->n_values ? g->n_values : 1);
    gi->last_use = malloc(sizeof(int) * nv);
    gi->is_output = calloc(nv, 1);
    if (!gi->last_use || !gi->is_output) {
        kn_graph_info_release(gi);
        return KN_OOM(nv);
    }
    for (int v = 0; v < g->n_values; v++) gi->last_use[v] = -1;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_inputs; k++) {
            int v = g->nodes[i].inputs[k];
            if (v >= 0) gi->last_use[v] = i;
        }
    for (int k = 0; k < g->n_outputs; k++)
        if (g->outputs[k] >= 0) gi->is_output[g->outputs[k]] = 1;
    return NULL;
}

void kn_graph_info_release(kn_graph_info *gi) {
    free(gi->last_use);
    free(gi->is_output);
    memset(gi, 0, sizeof *gi);
}

/* ---- scratch ---- */

void kn_scratch_reset(kn_scratch *s) {
    if (s->n_extra) {
        /* grow the main buffer to what the last node needed, so the steady state never mallocs */
        size_t want = s->cap + s->extra_bytes;
        for (int i = 0; i < s->n_extra; i++) free(s->extra[i]);
        s->n_extra = 0;
        s->extra_bytes = 0;
        void *nb = NULL;
        if (posix_memalign(&nb, KN_ARENA_ALIGN, want) == 0) {
            free(s->buf);
            s->buf = nb;
            s->cap = want;
        }
    }
    s->used = 0;
}

void kn_scratch_release(kn_scratch *s) {
    for (int i = 0; i < s->n_extra; i++) free(s->extra[i]);
    free(s->extra);
    free(s->buf);
    memset(s, 0, sizeof *s);
}

void *kn_scratch_alloc_impl(kn_exec_ctx *ctx, size_t bytes) {
    kn_scratch *s = ctx->scratch_state;
    size_t need = (bytes + KN_ARENA_ALIGN - 1) & ~(size_t)(KN_ARENA_ALIGN - 1);
    if (need == 0) need = KN_ARENA_ALIGN;
    if (s->used + need <= s->cap) {
        void *p = s->buf + s->used;
        s->used += need;
        return p;
    }
    if (s->n_extra == s->cap_extra) {
        int cap = s->cap_extra ? s->cap_extra * 2 : 8;
        void **e = realloc(s->extra, sizeof(void *) * (size_t)cap);
        if (!e) return NULL;
        s->extra = e;
        s->cap_extra = cap;
    }
    void *p = NULL;
    if (posix_memalign(&p, KN_ARENA_ALIGN, need)) return NULL;
    s->extra[s->n_extra++] = p;
    s->extra_bytes += need;
    return p;
}

/* ---- running one node ---- */

static kn_status *kn_node_error(kn_status *st, const kn_node *n, const kn_tensor *const *in, int n_in) {
    char nd[256], shapes[512], buf[KN_DESC_LEN];
    size_t off = 0;
    shapes[0] = 0;
    for (int i = 0; i < n_in && off < sizeof shapes; i++)
        off += (size_t)snprintf(shapes + off, sizeof shapes - off, "%s%s", i ? ", " : "",
                                in[i] ? kn_tensor_desc(in[i], buf, sizeof buf) : "-");
    return kn_error_wrap(st, "%s with inputs (%s): ", kn_node_desc(n, nd, sizeof nd), shapes);
}

kn_status *kn_infer_node(const kn_node *n, const kn_tensor *const *in, int n_in, kn_tensor *const *out, int n_out) {
    kn_infer_fn fn = kn_op_infer(n->op);
    if (!fn)
        return kn_error(KN_ERR_UNSUPPORTED, "op %s (domain '%s', opset %d) has no shape inference in kiln", n->op_type,
                        n->domain, n->opset);
    KN_TRY(kn_node_check_params(n)); /* shape rules read the params unchecked */
    kn_infer_ctx c = {.node = n, .in = in, .n_in = n_in, .out = out, .n_out = n_out};
    return fn(&c);
}

static kn_status *kn_call_kernel(kn_exec_ctx *ctx, const kn_node *n, const kn_tensor *const *in, int n_in,
                                 kn_tensor *const *out, int n_out) {
    kn_kernel_fn k = ctx->backend->kernel(ctx->backend, n->op);
    if (!k)
        return kn_error(KN_ERR_UNSUPPORTED, "op %s (domain '%s', opset %d) has no %s kernel in kiln", n->op_type,
                        n->domain, n->opset, ctx->backend->name);
    if (ctx->scratch_state) kn_scratch_reset(ctx->scratch_state);
    return k(ctx, n, in, n_in, out, n_out);
}

static bool kn_on_host(const kn_backend *b) { return !b || b->device == KN_DEVICE_CPU; }

kn_status *kn_node_eval_host(kn_exec_ctx *ctx, const kn_node *n, const kn_tensor *const *in, int n_in,
                             kn_tensor *const *out, int n_out) {
    kn_status *st = kn_infer_node(n, in, n_in, out, n_out);
    for (int i = 0; !st && i < n_out; i++) {
        if (!out[i]) continue;
        /* rank -1 after inference with data: the kernel sizes and allocates it (control flow) */
        if (out[i]->ndim < 0) {
            out[i]->data = NULL;
            continue;
        }
        if (!kn_shape_known(out[i])) st = kn_error(KN_ERR_RUNTIME, "output %d shape could not be inferred", i);
        else st = kn_tensor_alloc_data(out[i]);
    }
    if (!st) st = kn_call_kernel(ctx, n, in, n_in, out, n_out);
    for (int i = 0; !st && i < n_out; i++)
        if (out[i] && out[i]->kind == KN_KIND_TENSOR && (out[i]->ndim < 0 || (!out[i]->data && kn_numel(out[i]) != 0)))
            st = kn_error(KN_ERR_RUNTIME, "output %d was not produced", i);
    if (st) {
        for (int i = 0; i < n_out; i++)
            if (out[i]) kn_tensor_release(out[i]);
        return kn_node_error(st, n, in, n_in);
    }
    return NULL;
}

kn_status *kn_node_eval_ahead(kn_exec_ctx *ctx, const kn_node *n, const kn_tensor *const *in, kn_tensor *const *out,
                              bool *done) {
    *done = false;
    if (n->op < 0 || kn_op_is_volatile(n->op) || !kn_cpu_backend()->kernel(kn_cpu_backend(), n->op)) return NULL;
    for (int a = 0; a < n->n_attrs; a++)
        if (n->attrs[a].g) return NULL; /* a body may read outer values or be expensive */
    for (int k = 0; k < n->n_outputs; k++) {
        if (!out[k]) continue;
        int64_t ne = kn_numel(out[k]);
        if (out[k]->ndim < 0 || ne < 0 || ne > KN_EVAL_AHEAD_MAX_ELEMS) return NULL;
    }
    for (int k = 0; k < n->n_outputs; k++)
        if (out[k]) {
            kn_tensor_release(out[k]);
            out[k]->data = NULL;
        }
    KN_TRY(kn_node_eval_host(ctx, n, in, n->n_inputs, out, n->n_outputs));
    *done = true;
    return NULL;
}

/* ---- plans ---- */

bool kn_plan_matches_key(const kn_plan *p, const int64_t *key, int len) {
    return p->key_len == len && memcmp(p->key, key, sizeof(int64_t) * (size_t)len) == 0;
}

static bool kn_value_kept(const kn_graph_info *gi, const uint8_t *keep, int v) {
    return gi->is_output[v] || (keep && keep[v]);
}

void kn_plan_free(kn_plan *p, int n_values) {
    if (!p) return;
    if (p->vals)
        for (int v = 0; v < n_values; v++)
            if (p->state[v] == KN_VS_KNOWN) kn_tensor_release(&p->vals[v]);
    free(p->keep);
    free(p->key);
    free(p->vals);
    free(p->state);
    free(p->offset);
    free(p->skip);
    free(p->place);
    free(p);
}

typedef struct {
    const kn_tensor **in;
    kn_tensor **out;
} kn_io_bufs;

static kn_tensor *kn_find_outer(kn_run *run, const char *name);

static kn_status *kn_plan_build_in(const kn_graph_info *gi, const kn_tensor *inputs, const int *keep, int n_keep,
                                   const kn_backend *be, kn_threadpool *pool, kn_run *parent, kn_plan **out);

/* Skips the nodes whose results no run reads: read only by nodes computed ahead (Shape and Size
 * of them), or by other such nodes, and neither an output nor kept. A decoder whose presents the
 * caller does not want (kn_pass_split_past_kv) so never runs the Concat that copies its past. Nodes
 * with subgraphs, random ops and unknown ops always run. */
static kn_status *kn_plan_skip_unread(const kn_graph_info *gi, kn_plan *p) {
    const kn_graph *g = gi->g;
    uint8_t *read = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
    if (!read) return KN_OOM((size_t)g->n_values);
    for (int v = 0; v < g->n_values; v++) read[v] = gi->is_output[v] || kn_value_kept(gi, p->keep, v);
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        if (p->skip[i]) continue;
        const kn_node *n = &g->nodes[i];
        bool live = n->op < 0 || kn_op_is_volatile(n->op) || n->n_implicit > 0 || n->n_outputs == 0;
        for (int a = 0; a < n->n_attrs && !live; a++)
            live = n->attrs[a].type == KN_ATTR_GRAPH || n->attrs[a].type == KN_ATTR_GRAPHS;
        for (int k = 0; k < n->n_outputs && !live; k++) live = n->outputs[k] >= 0 && read[n->outputs[k]];
        if (!live) {
            p->skip[i] = 1;
            continue;
        }
        for (int k = 0; k < n->n_inputs; k++)
            if (n->inputs[k] >= 0) read[n->inputs[k]] = 1;
    }
    free(read);
    return NULL;
}

kn_status *kn_plan_build(const kn_graph_info *gi, const kn_tensor *inputs, const int *keep, int n_keep,
                         const kn_backend *be, kn_threadpool *pool, kn_plan **out) {
    return kn_plan_build_in(gi, inputs, keep, n_keep, be, pool, NULL, out);
}

kn_status *kn_plan_build_body(const kn_graph_info *gi, const kn_tensor *inputs, struct kn_run *parent,
                              kn_threadpool *pool, kn_plan **out) {
    return kn_plan_build_in(gi, inputs, NULL, 0, kn_cpu_backend(), pool, parent, out);
}

static kn_status *kn_plan_build_in(const kn_graph_info *gi, const kn_tensor *inputs, const int *keep, int n_keep,
                                   const kn_backend *be, kn_threadpool *pool, kn_run *parent, kn_plan **out) {
    const kn_graph *g = gi->g;
    *out = NULL;
    kn_plan *p = calloc(1, sizeof *p);
    size_t nv = (size_t)(g->n_values ? g->n_values : 1);
    if (!p) return KN_OOM(sizeof *p);
    p->vals = calloc(nv, sizeof(kn_tensor));
    p->state = calloc(nv, 1);
    p->offset = calloc(nv, sizeof(size_t));
    p->skip = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), 1);
    if (n_keep > 0 && (p->keep = calloc(nv, 1)))
        for (int k = 0; k < n_keep; k++)
            if (keep[k] >= 0 && keep[k] < g->n_values) p->keep[keep[k]] = 1;
    bool keep_oom = n_keep > 0 && !p->keep;
    p->place = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), 1);
    kn_mem_req *reqs = malloc(sizeof(kn_mem_req) * nv);
    int *req_of = malloc(sizeof(int) * nv);
    int *req_val = malloc(sizeof(int) * nv);
    size_t *offs = malloc(sizeof(size_t) * nv);
    const kn_tensor **inb = malloc(sizeof(void *) * KN_NODE_MAX_IO);
    kn_tensor **outb = malloc(sizeof(void *) * KN_NODE_MAX_IO);
    kn_scratch scratch = {0};
    kn_status *st = NULL;
    if (keep_oom || !p->vals || !p->state || !p->offset || !p->skip || !p->place || !reqs || !req_of || !req_val ||
        !offs || !inb || !outb) {
        st = KN_OOM(nv);
        goto done;
    }

    for (int v = 0; v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        req_of[v] = -1;
        if (val->constant) {
            p->vals[v] = *val->constant;
            p->vals[v].owns = false;
            p->state[v] = KN_VS_CONST;
        } else if (val->is_outer) {
            /* a body planned for its caller's actual outer values; else their declared types */
            const kn_tensor *t = parent ? kn_find_outer(parent, val->name) : NULL;
            p->vals[v] = t ? *t : val->type;
            p->vals[v].data = NULL;
            p->vals[v].owns = false;
            p->state[v] = KN_VS_OUTER;
        } else {
            p->vals[v].ndim = -1;
        }
    }
    for (int k = 0; k < g->n_inputs; k++) {
        int v = g->inputs[k];
        if (v < 0) continue;
        p->vals[v] = inputs[k];
        p->vals[v].data = NULL;
        p->vals[v].owns = false;
        p->state[v] = KN_VS_INPUT;
    }

    kn_exec_ctx ctx = {
        .pool = pool, .backend = kn_cpu_backend(), .scratch_alloc = kn_scratch_alloc_impl, .scratch_state = &scratch};
    int n_req = 0;
    for (int i = 0; i < g->n_nodes && !st; i++) {
        const kn_node *n = &g->nodes[i];
        if (n->n_inputs > KN_NODE_MAX_IO || n->n_outputs > KN_NODE_MAX_IO) {
            st = kn_error(KN_ERR_UNSUPPORTED, "node '%s' has too many inputs/outputs", n->name);
            break;
        }
        bool all_known = !kn_op_is_volatile(n->op);
        for (int k = 0; k < n->n_inputs; k++) {
            int v = n->inputs[k];
            inb[k] = v >= 0 ? &p->vals[v] : NULL;
            if (v < 0) continue;
            bool has_data = p->state[v] == KN_VS_CONST || p->state[v] == KN_VS_KNOWN;
            /* Shape and Size read only the shape of their input */
            bool shape_only = (n->op == KN_OP_Shape || n->op == KN_OP_Size) && k == 0 && kn_shape_known(&p->vals[v]);
            if (!has_data && !shape_only) all_known = false;
        }
        for (int k = 0; k < n->n_outputs; k++) {
            int v = n->outputs[k];
            outb[k] = v >= 0 ? &p->vals[v] : NULL;
            if (v >= 0) {
                memset(&p->vals[v], 0, sizeof(kn_tensor));
                p->vals[v].ndim = -1;
            }
        }
        st = kn_infer_node(n, inb, n->n_inputs, outb, n->n_outputs);
        if (st) {
            st = kn_node_error(st, n, inb, n->n_inputs);
            break;
        }
        if (all_known) {
            /* shape arithmetic and the like: computed now on the host, once per plan */
            bool done_now = false;
            st = kn_node_eval_ahead(&ctx, n, inb, outb, &done_now);
            if (st) break;
            if (done_now) {
                for (int k = 0; k < n->n_outputs; k++)
                    if (n->outputs[k] >= 0) {
                        p->state[n->outputs[k]] = KN_VS_KNOWN;
                        p->known_bytes += kn_nbytes(&p->vals[n->outputs[k]]);
                    }
                p->skip[i] = 1;
                continue;
            }
        }
        /* a node with any data-dependent output allocates all its outputs at run time */
        bool node_dyn = false;
        for (int k = 0; k < n->n_outputs; k++) {
            int v = n->outputs[k];
            if (v < 0) continue;
            kn_tensor *t = &p->vals[v];
            if (t->ndim < 0 || !kn_shape_known(t) || t->dtype == KN_STRING || kn_numel(t) > KN_MAX_NUMEL)
                node_dyn = true;
        }
        /* Placement: on the session's backend when it has a kernel for this node's dtypes and
         * shapes. A node left to the CPU by a device backend gets host outputs allocated at run
         * time (the dynamic path), so the arena stays wholly on the device. */
        p->place[i] = !node_dyn && be->supports(be, n, inb, n->n_inputs);
        if (!p->place[i] && !kn_on_host(be)) node_dyn = true;
        for (int k = 0; k < n->n_outputs; k++) {
            int v = n->outputs[k];
            if (v < 0) continue;
            kn_tensor *t = &p->vals[v];
            if (node_dyn) {
                p->state[v] = KN_VS_DYNAMIC;
                continue;
            }
            p->state[v] = KN_VS_ARENA;
            int end = kn_value_kept(gi, p->keep, v) ? g->n_nodes : (gi->last_use[v] >= i ? gi->last_use[v] : i);
            int share = -1;
            kn_inplace ip = n->op >= 0 ? kn_op_table[n->op].inplace : KN_INPLACE_NONE;
            if (k == 0 && ip != KN_INPLACE_NONE && n->n_inputs > 0 && n->inputs[0] >= 0) {
                int iv = n->inputs[0];
                if (p->state[iv] == KN_VS_ARENA && req_of[iv] >= 0 && gi->last_use[iv] == i &&
                    !kn_value_kept(gi, p->keep, iv) && kn_nbytes(&p->vals[iv]) == kn_nbytes(t) &&
                    p->vals[iv].dtype != KN_STRING) {
                    /* no other input of this node may be the same value read later: elementwise reads are in order */
                    share = req_of[iv];
                }
            }
            reqs[n_req] = (kn_mem_req){.bytes = kn_nbytes(t), .start = i, .end = end, .share_with = share};
            req_of[v] = n_req;
            req_val[n_req] = v;
            n_req++;
        }
    }
    if (!st) st = kn_plan_skip_unread(gi, p);
    if (!st) st = kn_plan_memory(reqs, n_req, KN_ARENA_ALIGN, offs, &p->arena_bytes);
    if (!st) {
        for (int r = 0; r < n_req; r++) p->offset[req_val[r]] = offs[r];
        p->key_len = 0;
        *out = p;
        p = NULL;
    }
done:
    if (p) kn_plan_free(p, g->n_values);
    kn_scratch_release(&scratch);
    free(reqs);
    free(req_of);
    free(req_val);
    free(offs);
    free(inb);
    free(outb);
    return st;
}

/* ---- runs ---- */

static kn_tensor *kn_find_outer(kn_run *run, const char *name) {
    for (kn_run *r = run; r; r = r->parent) {
        int v = kn_graph_find_value(r->g, name);
        if (v >= 0 && r->state[v] != KN_VS_ABSENT && r->state[v] != KN_VS_OUTER) {
            /* subgraphs run on the host: the control-flow node's inputs were copied there first */
            if (r->vals[v].device != KN_DEVICE_CPU && r->xfer && r->xfer_state[v] && r->xfer[v].device == KN_DEVICE_CPU)
                return &r->xfer[v];
            return &r->vals[v];
        }
    }
    return NULL;
}

/* Value v on device `want`: itself, or its copy there (made once per run). Model initializers
 * come from the backend's weight cache; everything else is copied on the run's queue. at_end: a
 * copy to the host that only the run's end reads (its results), completed by the backend's
 * stream_end (copy_to_host_later), so the run waits once for all of them. */
static kn_status *kn_value_on_ex(kn_run *run, int v, kn_device_kind want, bool at_end, const kn_tensor **out) {
    kn_tensor *t = &run->vals[v];
    *out = t;
    if (t->device == want) return NULL;
    if (run->xfer_state[v]) {
        if (run->xfer[v].device == want) {
            *out = &run->xfer[v];
            return NULL;
        }
        return kn_error(KN_ERR_RUNTIME, "value '%s' is wanted on a third device", run->g->values[v].name);
    }
    const kn_backend *be = run->be;
    char buf[KN_DESC_LEN];
    if (t->kind != KN_KIND_TENSOR || t->dtype == KN_STRING)
        return kn_error(KN_ERR_UNSUPPORTED, "value '%s' (%s) cannot move between the host and %s",
                        run->g->values[v].name, kn_tensor_desc(t, buf, sizeof buf), be->name);
    kn_tensor *x = &run->xfer[v];
    *x = *t;
    x->owns = false;
    x->device = want;
    size_t bytes = kn_nbytes(t);
    if (want != KN_DEVICE_CPU && run->state[v] == KN_VS_CONST && be->weights) {
        const void *d = NULL;
        KN_TRY(be->weights(be, t->data, bytes, &d));
        x->data = (void *)d;
        run->xfer_state[v] = 2;
    } else {
        x->data = want == KN_DEVICE_CPU ? malloc(bytes ? bytes : 1) : be->alloc(be, bytes);
        if (!x->data) {
            size_t avail = want != KN_DEVICE_CPU && be->free_bytes ? be->free_bytes(be) : 0;
            return kn_error(KN_ERR_OUT_OF_MEMORY, "out of %s memory copying '%s' (%s): %zu bytes asked, %zu free",
                            want == KN_DEVICE_CPU ? "host" : be->name, run->g->values[v].name,
                            kn_tensor_desc(t, buf, sizeof buf), bytes, avail);
        }
        run->xfer_state[v] = 1;
        if (bytes) {
            kn_status *st = at_end && want == KN_DEVICE_CPU && be->copy_to_host_later && run->ctx.stream
                ? be->copy_to_host_later(be, x->data, t->data, bytes, run->ctx.stream)
                : be->copy_async ? be->copy_async(be, x->data, want, t->data, t->device, bytes, run->ctx.stream)
                                 : be->copy(be, x->data, want, t->data, t->device, bytes);
            if (st)
                return kn_error_wrap(st, "copying '%s' (%s): ", run->g->values[v].name,
                                     kn_tensor_desc(t, buf, sizeof buf));
        }
    }
    *out = x;
    return NULL;
}
static kn_status *kn_value_on(kn_run *run, int v, kn_device_kind want, const kn_tensor **out) {
    return kn_value_on_ex(run, v, want, false, out);
}

/* Make node n's inputs readable by backend tb: on its device, except those it reads on the host. */
static kn_status *kn_place_inputs(kn_run *run, const kn_node *n, const kn_backend *tb, const kn_tensor **inb) {
    if (!run->xfer) return NULL; /* host-only run */
    uint64_t host_mask = kn_on_host(tb) ? ~(uint64_t)0 : tb->host_inputs ? tb->host_inputs(tb, n) : 0;
    for (int k = 0; k < n->n_inputs; k++) {
        int v = n->inputs[k];
        if (v < 0 || !inb[k]) continue;
        kn_device_kind want = k < 64 && (host_mask >> k & 1) ? KN_DEVICE_CPU : tb->device;
        if (inb[k]->device != want) KN_TRY(kn_value_on(run, v, want, &inb[k]));
    }
    return NULL;
}

/* Execute nodes [0, n_nodes) of run->g; values not yet materialised are allocated per value. */
static kn_status *kn_run_nodes(kn_run *run, const uint8_t *skip) {
    const kn_graph *g = run->g;
    const kn_tensor **inb = malloc(sizeof(void *) * KN_NODE_MAX_IO);
    kn_tensor **outb = malloc(sizeof(void *) * KN_NODE_MAX_IO);
    kn_status *st = NULL;
    if (!inb || !outb) {
        free(inb);
        free(outb);
        return KN_OOM(0);
    }
    for (int i = 0; i < g->n_nodes && !st; i++) {
        if (skip && skip[i]) continue;
        const kn_node *n = &g->nodes[i];
        if (n->n_inputs > KN_NODE_MAX_IO || n->n_outputs > KN_NODE_MAX_IO) {
            st = kn_error(KN_ERR_UNSUPPORTED, "node '%s' has too many inputs/outputs", n->name);
            break;
        }
        for (int k = 0; k < n->n_inputs; k++) {
            int v = n->inputs[k];
            inb[k] = NULL;
            if (v < 0) continue;
            if (run->state[v] == KN_VS_ABSENT) {
                char nd[256];
                st = kn_error(KN_ERR_INVALID_MODEL, "%s: input %d ('%s') is not produced by any earlier node",
                              kn_node_desc(n, nd, sizeof nd), k, g->values[v].name);
                break;
            }
            inb[k] = &run->vals[v];
        }
        if (st) break;
        bool dyn = false;
        for (int k = 0; k < n->n_outputs; k++) {
            int v = n->outputs[k];
            outb[k] = v >= 0 ? &run->vals[v] : NULL;
            if (v >= 0 && run->state[v] != KN_VS_ARENA) dyn = true;
        }
        struct timespec t0;
        if (run->op_seconds) clock_gettime(CLOCK_MONOTONIC, &t0);
        const kn_backend *tb = !dyn && run->place && run->place[i] && run->be ? run->be : kn_cpu_backend();
        st = kn_place_inputs(run, n, tb, inb);
        if (st) {
            st = kn_node_error(st, n, inb, n->n_inputs);
            break;
        }
        if (dyn) {
            /* shapes depend on data (or no plan): infer now, allocate each output */
            for (int k = 0; k < n->n_outputs; k++) {
                int v = n->outputs[k];
                if (v < 0) continue;
                memset(&run->vals[v], 0, sizeof(kn_tensor));
                run->vals[v].ndim = -1;
                run->state[v] = KN_VS_DYNAMIC;
            }
            st = kn_node_eval_host(&run->ctx, n, inb, n->n_inputs, outb, n->n_outputs);
        } else {
            kn_exec_ctx ctx = run->ctx;
            ctx.backend = tb;
            st = kn_call_kernel(&ctx, n, inb, n->n_inputs, outb, n->n_outputs);
            if (st) st = kn_node_error(st, n, inb, n->n_inputs);
        }
        if (st) break;
        if (run->node_done) run->node_done(run->node_done_arg, g, i, run->vals);
        if (run->node_stream) run->node_stream(run->node_stream_arg, g, i, run->vals, run->ctx.stream);
        if (run->op_seconds && n->op >= 0) {
            struct timespec t1;
            clock_gettime(CLOCK_MONOTONIC, &t1);
            run->op_seconds[n->op] += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
            run->op_calls[n->op]++;
        }
        /* free per-value allocations at their last use */
        for (int k = 0; k < n->n_inputs; k++) {
            int v = n->inputs[k];
            if (v >= 0 && run->state[v] == KN_VS_DYNAMIC && run->gi->last_use[v] == i &&
                !kn_value_kept(run->gi, run->keep, v)) {
                kn_tensor_release(&run->vals[v]);
                run->state[v] = KN_VS_ABSENT;
            }
        }
    }
    free(inb);
    free(outb);
    return st;
}

kn_status *kn_run_planned(kn_run *run, const kn_plan *plan, const kn_tensor *inputs, void *arena) {
    const kn_graph *g = run->g;
    kn_device_kind arena_dev = run->be ? run->be->device : KN_DEVICE_CPU;
    if (!kn_on_host(run->be)) {
        run->place = plan->place;
        size_t nv = (size_t)(g->n_values ? g->n_values : 1);
        run->xfer = calloc(nv, sizeof(kn_tensor));
        run->xfer_state = calloc(nv, 1);
        if (!run->xfer || !run->xfer_state) return KN_OOM(nv * sizeof(kn_tensor));
        if (run->be->stream_begin) KN_TRY(run->be->stream_begin(run->be, &run->ctx.stream));
        if (run->capture && run->be->graph_begin)
            KN_TRY(run->be->graph_begin(run->be, run->ctx.stream, run->capture_staging));
    }
    for (int v = 0; v < g->n_values; v++) {
        run->vals[v] = plan->vals[v];
        run->vals[v].owns = false;
        run->vals[v].device = KN_DEVICE_CPU;
        run->state[v] = plan->state[v];
        if (plan->state[v] == KN_VS_ARENA) {
            run->vals[v].data = (char *)arena + plan->offset[v];
            run->vals[v].device = arena_dev;
            if (run->host_out && run->host_out[v] && arena_dev == KN_DEVICE_CPU &&
                kn_nbytes(&run->vals[v]) <= run->host_out_cap[v])
                run->vals[v].data = run->host_out[v];
            /* a device output bound to a caller's device buffer is computed there: no copy at
             * the end, and an op given that buffer as an input too (GroupQueryAttention's past
             * and present, the decode loop's cache) updates it in place */
            if (run->dev_out && run->dev_out[v] && arena_dev != KN_DEVICE_CPU && run->dev_out_cap &&
                kn_nbytes(&run->vals[v]) <= run->dev_out_cap[v])
                run->vals[v].data = run->dev_out[v];
        } else if (plan->state[v] == KN_VS_DYNAMIC) run->vals[v].data = NULL;
        else if (plan->state[v] == KN_VS_OUTER) {
            kn_tensor *t = run->parent ? kn_find_outer(run->parent, g->values[v].name) : NULL;
            if (!t)
                return kn_error(KN_ERR_INVALID_MODEL, "graph '%s': outer value '%s' not found", g->name,
                                g->values[v].name);
            run->vals[v] = *t;
            run->vals[v].owns = false;
        }
    }
    for (int k = 0; k < g->n_inputs; k++) {
        int v = g->inputs[k];
        if (v < 0) continue;
        run->vals[v] = inputs[k];
        run->vals[v].owns = false;
        run->state[v] = KN_VS_INPUT;
    }
    for (int k = 0; k < g->n_inputs; k++)
        if (g->inputs[k] >= 0 && !(run->inputs_placed && inputs[k].device == arena_dev))
            run->vals[g->inputs[k]].device = KN_DEVICE_CPU;
    run->keep = plan->keep;
    return kn_run_nodes(run, plan->skip);
}

kn_status *kn_run_finish(kn_run *run) {
    kn_status *st = NULL;
    if (run->xfer && run->dev_out) {
        /* values the caller wants on the device: copied there on the run's queue, never to the host */
        for (int v = 0; v < run->g->n_values && !st; v++) {
            if (!run->dev_out[v] || run->state[v] == KN_VS_ABSENT) continue;
            size_t bytes = kn_nbytes(&run->vals[v]);
            if (!bytes || run->vals[v].data == run->dev_out[v]) continue; /* computed in place */
            if (run->dev_out_cap && bytes > run->dev_out_cap[v]) {
                st = kn_error(KN_ERR_INVALID_ARGUMENT, "output '%s' needs %zu bytes, the device buffer holds %zu",
                              run->g->values[v].name, bytes, run->dev_out_cap[v]);
                break;
            }
            st = run->be->copy_async ? run->be->copy_async(run->be, run->dev_out[v], run->be->device, run->vals[v].data,
                                                           run->vals[v].device, bytes, run->ctx.stream)
                                     : run->be->copy(run->be, run->dev_out[v], run->be->device, run->vals[v].data,
                                                     run->vals[v].device, bytes);
            if (st) st = kn_error_wrap(st, "copying '%s' to the caller's device buffer: ", run->g->values[v].name);
        }
    }
    if (run->xfer) {
        const kn_graph *g = run->g;
        for (int v = 0; v < g->n_values && !st; v++) {
            if (!kn_value_kept(run->gi, run->keep, v) || (run->dev_out && run->dev_out[v])) continue;
            if (run->state[v] == KN_VS_ABSENT || run->vals[v].device == KN_DEVICE_CPU) continue;
            const kn_tensor *h = NULL;
            st = kn_value_on_ex(run, v, KN_DEVICE_CPU, true, &h);
            if (st) break;
            /* the host copy becomes the value; the device bytes stay in the arena */
            kn_tensor t = *h;
            t.owns = run->xfer_state[v] == 1;
            run->xfer_state[v] = 0;
            memset(&run->xfer[v], 0, sizeof(kn_tensor));
            if (run->state[v] == KN_VS_DYNAMIC) kn_tensor_release(&run->vals[v]);
            run->vals[v] = t;
            run->state[v] = KN_VS_DYNAMIC;
        }
    }
    /* a recorded run: its work runs now, as the graph's first launch */
    if (!st && run->capture && run->ctx.stream && run->be->graph_end)
        st = run->be->graph_end(run->be, run->ctx.stream, run->capture);
    if (run->ctx.stream && run->be && run->be->stream_end) {
        kn_status *e = run->be->stream_end(run->be, run->ctx.stream);
        run->ctx.stream = NULL;
        if (!st) st = e;
        else kn_status_free(e);
    }
    return st;
}

void kn_run_release(kn_run *run) {
    if (run->ctx.stream && run->be && run->be->stream_end) {
        kn_status *e = run->be->stream_end(run->be, run->ctx.stream);
        run->ctx.stream = NULL;
        if (e) kn_status_free(e);
    }
    if (run->xfer) {
        for (int v = 0; v < run->g->n_values; v++) {
            if (run->xfer_state[v] != 1) continue;
            if (run->xfer[v].device == KN_DEVICE_CPU) free(run->xfer[v].data);
            else run->be->free(run->be, run->xfer[v].data);
        }
        free(run->xfer);
        free(run->xfer_state);
        run->xfer = NULL;
        run->xfer_state = NULL;
    }
    if (!run->vals) return;
    for (int v = 0; v < run->g->n_values; v++)
        if (run->state[v] == KN_VS_DYNAMIC) kn_tensor_release(&run->vals[v]);
    free(run->vals);
    free(run->state);
    run->vals = NULL;
    run->state = NULL;
}

/* ---- control-flow bodies ---- */

/* Plans per body: more signatures than this (a loop-carried value growing each iteration) are
 * planned for the one call and freed, as are calls while every slot is busy. */
#define KN_BODY_PLANS 8
#define KN_BODY_ENTRIES 64

typedef struct kn_body_slot {
    kn_plan *plan;
    void *arena;
    /* the kernels' scratch, kept from call to call (grown to what the body needs, then reused):
     * a fresh one per call made every call of a small body pay its kernels' allocations again */
    kn_scratch scratch;
    bool busy;
} kn_body_slot;

typedef struct kn_body_entry {
    const kn_graph *sub;
    kn_graph_info gi;
    kn_body_slot slots[KN_BODY_PLANS];
    int n_slots;
} kn_body_entry;

struct kn_body_cache {
    pthread_mutex_t mu;
    kn_body_entry *entries[KN_BODY_ENTRIES];
    int n_entries;
    int64_t built; /* plans built, cached or not: the figure that must not grow with iterations */
};

int64_t kn_body_cache_plans_built(kn_body_cache *c) {
    if (!c) return 0;
    pthread_mutex_lock(&c->mu);
    int64_t n = c->built;
    pthread_mutex_unlock(&c->mu);
    return n;
}

kn_status *kn_body_cache_new(kn_body_cache **out) {
    kn_body_cache *c = calloc(1, sizeof *c);
    if (!c) return KN_OOM(sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return NULL;
}

void kn_body_cache_free(kn_body_cache *c) {
    if (!c) return;
    for (int i = 0; i < c->n_entries; i++) {
        kn_body_entry *e = c->entries[i];
        for (int k = 0; k < e->n_slots; k++) {
            kn_plan_free(e->slots[k].plan, e->sub->n_values);
            kn_cpu_backend()->free(kn_cpu_backend(), e->slots[k].arena);
            kn_scratch_release(&e->slots[k].scratch);
        }
        kn_graph_info_release(&e->gi);
        free(e);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* The plan key of a body call: each input's and each outer value's kind, dtype and shape. */
static int kn_body_key(kn_run *parent, const kn_graph *sub, const kn_tensor *const *inputs, int64_t *key, int cap) {
    int len = 0;
    for (int pass = 0; pass < 2; pass++) {
        int n = pass ? sub->n_values : sub->n_inputs;
        for (int i = 0; i < n; i++) {
            const kn_tensor *t;
            if (pass) {
                if (!sub->values[i].is_outer) continue;
                t = kn_find_outer(parent, sub->values[i].name);
            } else {
                t = inputs[i];
            }
            if (!t || len + KN_PLAN_KEY_MAX(t) > cap) return -1;
            kn_plan_key_put(t, key, &len);
        }
    }
    return len;
}

/* Runs a body through its cached plan; *done false when it cannot be planned (the caller then runs
 * it unplanned): a missing input, an outer value not found, a key too long. */
static kn_status *kn_run_body_planned(kn_exec_ctx *ctx, const kn_graph *sub, const kn_tensor *const *inputs,
                                      kn_tensor *outs, bool *done) {
    *done = false;
    kn_body_cache *c = ctx->run->bodies;
    int64_t key[256];
    int len = kn_body_key(ctx->run, sub, inputs, key, (int)(sizeof key / sizeof key[0]));
    if (len < 0) return NULL;
    kn_body_entry *e = NULL;
    kn_body_slot *slot = NULL;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->n_entries && !e; i++)
        if (c->entries[i]->sub == sub) e = c->entries[i];
    if (!e && c->n_entries < KN_BODY_ENTRIES) {
        e = calloc(1, sizeof *e);
        if (e && kn_graph_info_init(&e->gi, sub) == NULL) {
            e->sub = sub;
            c->entries[c->n_entries++] = e;
        } else {
            free(e);
            e = NULL;
        }
    }
    for (int k = 0; e && k < e->n_slots && !slot; k++)
        if (!e->slots[k].busy && kn_plan_matches_key(e->slots[k].plan, key, len)) slot = &e->slots[k];
    if (slot) slot->busy = true;
    pthread_mutex_unlock(&c->mu);
    if (!e) return NULL;

    kn_body_slot own = {0};
    kn_status *st = NULL;
    kn_tensor *bound = calloc((size_t)(sub->n_inputs ? sub->n_inputs : 1), sizeof(kn_tensor));
    if (!bound) return KN_OOM(0);
    for (int k = 0; k < sub->n_inputs; k++) bound[k] = *inputs[k];
    if (!slot) {
        /* plan outside the lock; keep it when a slot is free */
        st = kn_plan_build_body(&e->gi, bound, ctx->run, ctx->pool, &own.plan);
        if (!st && !(own.plan->key = malloc(sizeof(int64_t) * (size_t)(len ? len : 1)))) st = KN_OOM(0);
        if (!st) {
            memcpy(own.plan->key, key, sizeof(int64_t) * (size_t)len);
            own.plan->key_len = len;
            if (!(own.arena = kn_cpu_backend()->alloc(kn_cpu_backend(), own.plan->arena_bytes)))
                st = KN_OOM(own.plan->arena_bytes);
        }
        if (st) {
            kn_plan_free(own.plan, sub->n_values);
            free(bound);
            return st;
        }
        own.busy = true;
        pthread_mutex_lock(&c->mu);
        c->built++;
        if (e->n_slots < KN_BODY_PLANS) {
            e->slots[e->n_slots] = own;
            slot = &e->slots[e->n_slots++];
        }
        pthread_mutex_unlock(&c->mu);
        if (!slot) slot = &own;
    }
    kn_scratch_reset(&slot->scratch);
    kn_run run = {.g = sub, .gi = &e->gi, .parent = ctx->run, .bodies = c};
    run.ctx = *ctx;
    run.ctx.run = &run;
    run.ctx.scratch_state = &slot->scratch;
    run.ctx.scratch_alloc = kn_scratch_alloc_impl;
    size_t nv = (size_t)(sub->n_values ? sub->n_values : 1);
    run.vals = calloc(nv, sizeof(kn_tensor));
    run.state = calloc(nv, 1);
    for (int k = 0; k < sub->n_outputs; k++) memset(&outs[k], 0, sizeof(kn_tensor));
    if (!run.vals || !run.state) st = KN_OOM(nv);
    if (!st) st = kn_run_planned(&run, slot->plan, bound, slot->arena);
    for (int k = 0; k < sub->n_outputs && !st; k++) {
        int v = sub->outputs[k];
        if (v < 0 || run.state[v] == KN_VS_ABSENT) {
            st = kn_error(KN_ERR_INVALID_MODEL, "subgraph '%s': output %d was not computed", sub->name, k);
            break;
        }
        kn_tensor *cl = NULL;
        if ((st = kn_tensor_clone(&run.vals[v], &cl))) break;
        outs[k] = *cl;
        free(cl);
    }
    if (st)
        for (int k = 0; k < sub->n_outputs; k++) kn_tensor_release(&outs[k]);
    kn_run_release(&run);
    free(bound);
    if (slot == &own) {
        kn_plan_free(own.plan, sub->n_values);
        kn_cpu_backend()->free(kn_cpu_backend(), own.arena);
        kn_scratch_release(&own.scratch);
    } else {
        pthread_mutex_lock(&c->mu);
        slot->busy = false;
        pthread_mutex_unlock(&c->mu);
    }
    *done = true;
    return st;
}

kn_status *kn_run_subgraph(kn_exec_ctx *ctx, const kn_graph *sub, const kn_tensor *const *inputs, int n_inputs,
                           kn_tensor *outs) {
    KN_CHECK(n_inputs == sub->n_inputs, KN_ERR_INVALID_MODEL, "subgraph '%s' expects %d inputs, got %d", sub->name,
             sub->n_inputs, n_inputs);
    bool all_given = ctx->run && ctx->run->bodies;
    for (int k = 0; k < n_inputs && all_given; k++) all_given = inputs[k] != NULL;
    if (all_given) {
        bool done = false;
        kn_status *st = kn_run_body_planned(ctx, sub, inputs, outs, &done);
        if (st || done) return st;
    }
    kn_graph_info gi;
    KN_TRY(kn_graph_info_init(&gi, sub));
    kn_scratch scratch = {0};
    kn_run run = {.g = sub, .gi = &gi, .parent = ctx->run, .bodies = ctx->run ? ctx->run->bodies : NULL};
    run.ctx = *ctx;
    run.ctx.run = &run;
    run.ctx.scratch_state = &scratch;
    run.ctx.scratch_alloc = kn_scratch_alloc_impl;
    size_t nv = (size_t)(sub->n_values ? sub->n_values : 1);
    run.vals = calloc(nv, sizeof(kn_tensor));
    run.state = calloc(nv, 1);
    kn_status *st = NULL;
    for (int k = 0; k < sub->n_outputs; k++) memset(&outs[k], 0, sizeof(kn_tensor));
    if (!run.vals || !run.state) {
        st = KN_OOM(nv);
        goto done;
    }
    for (int v = 0; v < sub->n_values && !st; v++) {
        const kn_value *val = &sub->values[v];
        if (val->constant) {
            run.vals[v] = *val->constant;
            run.vals[v].owns = false;
            run.state[v] = KN_VS_CONST;
        } else if (val->is_outer) {
            kn_tensor *t = kn_find_outer(ctx->run, val->name);
            if (!t)
                st = kn_error(KN_ERR_INVALID_MODEL, "subgraph '%s': outer value '%s' not found", sub->name, val->name);
            else {
                run.vals[v] = *t;
                run.vals[v].owns = false;
                run.state[v] = KN_VS_OUTER;
            }
        }
    }
    for (int k = 0; k < n_inputs && !st; k++) {
        int v = sub->inputs[k];
        if (v < 0 || !inputs[k]) continue;
        run.vals[v] = *inputs[k];
        run.vals[v].owns = false;
        run.state[v] = KN_VS_INPUT;
    }
    if (!st) st = kn_run_nodes(&run, NULL);
    for (int k = 0; k < sub->n_outputs && !st; k++) {
        int v = sub->outputs[k];
        if (v < 0 || run.state[v] == KN_VS_ABSENT) {
            st = kn_error(KN_ERR_INVALID_MODEL, "subgraph '%s': output %d was not computed", sub->name, k);
            break;
        }
        kn_tensor *c = NULL;
        st = kn_tensor_clone(&run.vals[v], &c);
        if (st) break;
        outs[k] = *c;
        free(c);
    }
    if (st)
        for (int k = 0; k < sub->n_outputs; k++) kn_tensor_release(&outs[k]);
done:
    kn_run_release(&run);
    kn_scratch_release(&scratch);
    kn_graph_info_release(&gi);
    return st;
}
