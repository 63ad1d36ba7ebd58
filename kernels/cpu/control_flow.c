/* Control-flow ops: If, Loop and Scan run their body subgraphs through the executor
 * (kn_exec_ctx.run_subgraph, set by the executor). Their output shapes are known only after the body ran, so their infer
 * functions leave shapes open and the kernels allocate their own outputs. */
#include "graph/ops.h"
#include <stdlib.h>
#include <string.h>

/* The node's subgraph `name` (NULL when absent). */
static const kn_graph *kn_body(const kn_node *n, const char *name) {
    const kn_params_subgraph *p = KN_PARAMS(n, subgraph);
    if (!strcmp(name, "then_branch")) return p->then_branch;
    if (!strcmp(name, "else_branch")) return p->else_branch;
    return p->body;
}

static int kn_explicit_inputs(const kn_node *n) { return n->n_inputs - n->n_implicit; }

/* Shapes come from the body at run time. */
static kn_status *kn_infer_open(kn_infer_ctx *c) {
    for (int i = 0; i < c->n_out; i++)
        if (c->out[i]) {
            c->out[i]->ndim = -1;
            c->out[i]->dtype = KN_UNDEFINED;
        }
    return NULL;
}

kn_status *kn_infer_If(kn_infer_ctx *c) {
    KN_CHECK(kn_body(c->node, "then_branch") && kn_body(c->node, "else_branch"), KN_ERR_INVALID_MODEL,
             "If: then_branch and else_branch graph attributes are required");
    return kn_infer_open(c);
}
kn_status *kn_infer_Loop(kn_infer_ctx *c) {
    KN_CHECK(kn_body(c->node, "body"), KN_ERR_INVALID_MODEL, "Loop: body graph attribute is required");
    return kn_infer_open(c);
}
kn_status *kn_infer_Scan(kn_infer_ctx *c) {
    KN_CHECK(kn_body(c->node, "body"), KN_ERR_INVALID_MODEL, "Scan: body graph attribute is required");
    return kn_infer_open(c);
}

/* Move a body result into a node output (which owns nothing yet). */
static void kn_move_out(kn_tensor *dst, kn_tensor *src) {
    if (!dst) {
        kn_tensor_release(src);
        return;
    }
    *dst = *src;
    memset(src, 0, sizeof *src);
}

kn_status *kn_cpu_If(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in, kn_tensor *const *out,
                     int n_out) {
    KN_CHECK(n_in >= 1 && in[0] && in[0]->data && kn_numel(in[0]) == 1, KN_ERR_INVALID_ARGUMENT,
             "If: cond must be a single element");
    bool cond = kn_get_i64(in[0], 0) != 0;
    const kn_graph *body = kn_body(node, cond ? "then_branch" : "else_branch");
    KN_CHECK(body, KN_ERR_INVALID_MODEL, "If: missing branch");
    KN_CHECK(body->n_outputs == n_out, KN_ERR_INVALID_MODEL, "If: branch '%s' has %d outputs, the node %d", body->name,
             body->n_outputs, n_out);
    kn_tensor *res = calloc((size_t)(n_out ? n_out : 1), sizeof(kn_tensor));
    if (!res) return KN_OOM(0);
    kn_status *st = kn_exec_subgraph(ctx, body, NULL, 0, res);
    for (int i = 0; !st && i < n_out; i++) kn_move_out(out[i], &res[i]);
    free(res);
    return st;
}

/* Stack per-iteration tensors along a new axis `axis` (0 for Loop). */
static kn_status *kn_stack(kn_tensor *const *parts, int64_t n, int axis, kn_tensor *dst) {
    KN_CHECK(n > 0, KN_ERR_RUNTIME, "stack of zero tensors");
    const kn_tensor *p0 = parts[0];
    KN_CHECK(p0->ndim + 1 <= KN_MAX_DIMS, KN_ERR_UNSUPPORTED, "scan output rank too large");
    for (int64_t i = 1; i < n; i++)
        KN_CHECK(kn_same_shape(parts[i], p0) && parts[i]->dtype == p0->dtype, KN_ERR_RUNTIME,
                 "scan outputs change shape or dtype between iterations");
    memset(dst, 0, sizeof *dst);
    dst->dtype = p0->dtype;
    dst->ndim = p0->ndim + 1;
    for (int d = 0, s = 0; d < dst->ndim; d++) dst->dims[d] = d == axis ? n : p0->dims[s++];
    KN_TRY(kn_tensor_alloc_data(dst));
    size_t es = kn_dtype_size(p0->dtype);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; d++) outer *= p0->dims[d];
    for (int d = axis; d < p0->ndim; d++) inner *= p0->dims[d];
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < outer; o++) {
            char *to = (char *)dst->data + ((o * n + i) * inner) * es;
            const char *from = (const char *)parts[i]->data + o * inner * es;
            if (p0->dtype == KN_STRING)
                for (int64_t k = 0; k < inner; k++)
                    ((char **)to)[k] = strdup(((char *const *)from)[k] ? ((char *const *)from)[k] : "");
            else memcpy(to, from, (size_t)inner * es);
        }
    return NULL;
}

typedef struct {
    kn_tensor **v;
    int64_t n, cap;
} kn_tlist;
static kn_status *kn_tlist_push(kn_tlist *l, kn_tensor *t) {
    if (l->n == l->cap) {
        int64_t cap = l->cap ? l->cap * 2 : 16;
        kn_tensor **v = realloc(l->v, sizeof(kn_tensor *) * (size_t)cap);
        if (!v) return KN_OOM(0);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = t;
    return NULL;
}
static void kn_tlist_free(kn_tlist *l) {
    for (int64_t i = 0; i < l->n; i++) kn_tensor_free(l->v[i]);
    free(l->v);
}

kn_status *kn_cpu_Loop(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                       kn_tensor *const *out, int n_out) {
    const kn_graph *body = kn_body(node, "body");
    int n_exp = kn_explicit_inputs(node);
    KN_CHECK(n_exp >= 2, KN_ERR_INVALID_MODEL, "Loop needs M and cond inputs (either may be empty)");
    int n_state = n_exp - 2;
    int n_scan = body->n_outputs - 1 - n_state;
    KN_CHECK(body->n_inputs == n_state + 2 && n_scan >= 0 && n_out == n_state + n_scan, KN_ERR_INVALID_MODEL,
             "Loop: body has %d inputs and %d outputs for %d loop-carried values and %d outputs", body->n_inputs,
             body->n_outputs, n_state, n_out);
    int64_t max_trip = in[0] && in[0]->data ? kn_get_i64(in[0], 0) : INT64_MAX;
    bool cond = in[1] && in[1]->data ? kn_get_i64(in[1], 0) != 0 : true;
    kn_tensor *state = calloc((size_t)n_state + 1, sizeof(kn_tensor));
    kn_tensor *res = calloc((size_t)body->n_outputs + 1, sizeof(kn_tensor));
    const kn_tensor **bin = calloc((size_t)body->n_inputs + 1, sizeof(kn_tensor *));
    kn_tlist *scans = calloc((size_t)n_scan + 1, sizeof(kn_tlist));
    kn_status *st = (!state || !res || !bin || !scans) ? KN_OOM(0) : NULL;
    for (int i = 0; !st && i < n_state; i++) {
        kn_tensor *c = NULL;
        KN_CHECK(in[2 + i], KN_ERR_INVALID_ARGUMENT, "Loop: loop-carried input %d is missing", i);
        st = kn_tensor_clone(in[2 + i], &c);
        if (!st) {
            state[i] = *c;
            free(c);
        }
    }
    int64_t iter = 0;
    kn_tensor iter_t = {.dtype = KN_I64, .ndim = 0}, cond_t = {.dtype = KN_BOOL, .ndim = 0};
    int64_t iter_v = 0;
    uint8_t cond_v = 1;
    iter_t.data = &iter_v;
    cond_t.data = &cond_v;
    while (!st && iter < max_trip && cond) {
        iter_v = iter;
        cond_v = cond;
        bin[0] = &iter_t;
        bin[1] = &cond_t;
        for (int i = 0; i < n_state; i++) bin[2 + i] = &state[i];
        st = kn_exec_subgraph(ctx, body, bin, body->n_inputs, res);
        if (st) break;
        cond = res[0].data && kn_numel(&res[0]) >= 1 ? kn_get_i64(&res[0], 0) != 0 : false;
        kn_tensor_release(&res[0]);
        for (int i = 0; i < n_state; i++) {
            kn_tensor_release(&state[i]);
            state[i] = res[1 + i];
            memset(&res[1 + i], 0, sizeof(kn_tensor));
        }
        for (int j = 0; j < n_scan && !st; j++) {
            kn_tensor *t = malloc(sizeof *t);
            if (!t) {
                st = KN_OOM(0);
                break;
            }
            *t = res[1 + n_state + j];
            memset(&res[1 + n_state + j], 0, sizeof(kn_tensor));
            st = kn_tlist_push(&scans[j], t);
            if (st) kn_tensor_free(t);
        }
        iter++;
    }
    for (int i = 0; !st && i < n_state; i++) kn_move_out(out[i], &state[i]);
    for (int j = 0; !st && j < n_scan; j++) {
        if (!out[n_state + j]) continue;
        if (scans[j].n == 0) {
            /* no iteration ran: an empty tensor of the body's declared element type */
            kn_tensor *o = out[n_state + j];
            memset(o, 0, sizeof *o);
            const kn_value *bv = &body->values[body->outputs[1 + n_state + j]];
            o->dtype = bv->type.dtype ? bv->type.dtype : KN_F32;
            o->ndim = 1 + (bv->type.ndim > 0 ? bv->type.ndim : 0);
            for (int d = 1; d < o->ndim; d++) o->dims[d] = bv->type.dims[d - 1] > 0 ? bv->type.dims[d - 1] : 0;
            st = kn_tensor_alloc_data(o);
        } else {
            st = kn_stack(scans[j].v, scans[j].n, 0, out[n_state + j]);
        }
    }
    for (int i = 0; state && i < n_state; i++) kn_tensor_release(&state[i]);
    for (int i = 0; res && i < body->n_outputs; i++) kn_tensor_release(&res[i]);
    for (int j = 0; scans && j < n_scan; j++) kn_tlist_free(&scans[j]);
    free(state);
    free(res);
    free(bin);
    free(scans);
    return st;
}

/* Slice index t of `src` along `axis` into a new owned tensor. */
static kn_status *kn_take(const kn_tensor *src, int axis, int64_t t, kn_tensor *dst) {
    memset(dst, 0, sizeof *dst);
    dst->dtype = src->dtype;
    dst->ndim = src->ndim - 1;
    for (int d = 0, k = 0; d < src->ndim; d++)
        if (d != axis) dst->dims[k++] = src->dims[d];
    KN_TRY(kn_tensor_alloc_data(dst));
    size_t es = kn_dtype_size(src->dtype);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; d++) outer *= src->dims[d];
    for (int d = axis + 1; d < src->ndim; d++) inner *= src->dims[d];
    for (int64_t o = 0; o < outer; o++) {
        const char *from = (const char *)src->data + ((o * src->dims[axis] + t) * inner) * es;
        char *to = (char *)dst->data + o * inner * es;
        if (src->dtype == KN_STRING)
            for (int64_t k = 0; k < inner; k++)
                ((char **)to)[k] = strdup(((char *const *)from)[k] ? ((char *const *)from)[k] : "");
        else memcpy(to, from, (size_t)inner * es);
    }
    return NULL;
}

kn_status *kn_cpu_Scan(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                       kn_tensor *const *out, int n_out) {
    KN_CHECK(node->opset >= 9, KN_ERR_UNSUPPORTED,
             "Scan: opset %d (batched Scan-8) is not supported; opset 9 and later are", node->opset);
    const kn_graph *body = kn_body(node, "body");
    int n_exp = kn_explicit_inputs(node);
    const kn_params_subgraph *sp = KN_PARAMS(node, subgraph);
    int m = (int)sp->num_scan_inputs;
    KN_CHECK(m >= 1 && m <= n_exp, KN_ERR_INVALID_MODEL, "Scan: num_scan_inputs %d invalid for %d inputs", m, n_exp);
    int n_state = n_exp - m, k_out = body->n_outputs - n_state;
    KN_CHECK(body->n_inputs == n_exp && k_out >= 0 && n_out == n_state + k_out, KN_ERR_INVALID_MODEL,
             "Scan: body has %d inputs and %d outputs for %d states, %d scan inputs and %d node outputs",
             body->n_inputs, body->n_outputs, n_state, m, n_out);
    /* j < m <= 64 and j < k_out <= 64 wherever these are indexed */
    const int64_t *in_axes = sp->in_axes, *in_dirs = sp->in_dirs, *out_axes = sp->out_axes, *out_dirs = sp->out_dirs;
    int n_ia = sp->n_in_axes, n_id = sp->n_in_dirs, n_oa = sp->n_out_axes, n_od = sp->n_out_dirs;
    int64_t T = -1;
    int axes[64];
    KN_CHECK(m <= 64 && k_out <= 64, KN_ERR_UNSUPPORTED, "Scan: too many scan inputs or outputs");
    for (int j = 0; j < m; j++) {
        const kn_tensor *x = in[n_state + j];
        KN_CHECK(x && x->data, KN_ERR_INVALID_ARGUMENT, "Scan: scan input %d missing", j);
        KN_TRY(kn_norm_axis(n_ia > j ? in_axes[j] : 0, x->ndim, node, &axes[j]));
        int64_t len = x->dims[axes[j]];
        KN_CHECK(T < 0 || T == len, KN_ERR_INVALID_ARGUMENT, "Scan: scan inputs have different lengths (%lld vs %lld)",
                 (long long)T, (long long)len);
        T = len;
    }
    kn_tensor *state = calloc((size_t)n_state + 1, sizeof(kn_tensor));
    kn_tensor *slices = calloc((size_t)m + 1, sizeof(kn_tensor));
    kn_tensor *res = calloc((size_t)body->n_outputs + 1, sizeof(kn_tensor));
    const kn_tensor **bin = calloc((size_t)body->n_inputs + 1, sizeof(kn_tensor *));
    kn_tlist *scans = calloc((size_t)k_out + 1, sizeof(kn_tlist));
    kn_status *st = (!state || !slices || !res || !bin || !scans) ? KN_OOM(0) : NULL;
    for (int i = 0; !st && i < n_state; i++) {
        kn_tensor *c = NULL;
        st = kn_tensor_clone(in[i], &c);
        if (!st) {
            state[i] = *c;
            free(c);
        }
    }
    for (int64_t t = 0; !st && t < T; t++) {
        for (int j = 0; j < m && !st; j++) {
            int64_t idx = (n_id > j && in_dirs[j]) ? T - 1 - t : t;
            st = kn_take(in[n_state + j], axes[j], idx, &slices[j]);
        }
        if (st) break;
        for (int i = 0; i < n_state; i++) bin[i] = &state[i];
        for (int j = 0; j < m; j++) bin[n_state + j] = &slices[j];
        st = kn_exec_subgraph(ctx, body, bin, body->n_inputs, res);
        for (int j = 0; j < m; j++) kn_tensor_release(&slices[j]);
        if (st) break;
        for (int i = 0; i < n_state; i++) {
            kn_tensor_release(&state[i]);
            state[i] = res[i];
            memset(&res[i], 0, sizeof(kn_tensor));
        }
        for (int j = 0; j < k_out && !st; j++) {
            kn_tensor *x = malloc(sizeof *x);
            if (!x) {
                st = KN_OOM(0);
                break;
            }
            *x = res[n_state + j];
            memset(&res[n_state + j], 0, sizeof(kn_tensor));
            st = kn_tlist_push(&scans[j], x);
            if (st) kn_tensor_free(x);
        }
    }
    for (int i = 0; !st && i < n_state; i++) kn_move_out(out[i], &state[i]);
    for (int j = 0; !st && j < k_out; j++) {
        if (!out[n_state + j]) continue;
        KN_CHECK(scans[j].n > 0, KN_ERR_UNSUPPORTED, "Scan: zero iterations");
        if (n_od > j && out_dirs[j])
            for (int64_t a = 0, b = scans[j].n - 1; a < b; a++, b--) {
                kn_tensor *x = scans[j].v[a];
                scans[j].v[a] = scans[j].v[b];
                scans[j].v[b] = x;
            }
        int ax = 0;
        if (n_oa > j) st = kn_norm_axis(out_axes[j], scans[j].v[0]->ndim + 1, node, &ax);
        if (!st) st = kn_stack(scans[j].v, scans[j].n, ax, out[n_state + j]);
    }
    for (int i = 0; state && i < n_state; i++) kn_tensor_release(&state[i]);
    for (int i = 0; res && i < body->n_outputs; i++) kn_tensor_release(&res[i]);
    for (int j = 0; scans && j < k_out; j++) kn_tlist_free(&scans[j]);
    free(state);
    free(slices);
    free(res);
    free(bin);
    free(scans);
    return st;
}
