/* The trainer (autograd/trainer.h). The parameters are graph inputs bound to kiln's own
 * buffers on every run, and the gradients come back into preallocated buffers through
 * kn_session_run's caller-buffer outputs, so the optimiser reads and writes the same memory the
 * next forward reads. */
#include "autograd/trainer.h"
#include "autograd/recompute.h"
#include "autograd/trainer_internal.h"
#include "autograd/trainer_device.h"
#include "autograd/trainer_overlap.h"
#include "autograd/autograd.h"
#include "graph/ops.h"
#include "graph/passes.h"
#include "runtime/fold.h"
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void kn_trainer_options_init(kn_trainer_options *o) {
    memset(o, 0, sizeof *o);
    kn_optim_options_init(&o->optim);
}

kn_status *kn_train_load(const char *path, kn_model **out) {
    *out = NULL;
    KN_CHECK(path, KN_ERR_INVALID_ARGUMENT, "kn_train_load: path is NULL");
    kn_model *m = NULL;
    KN_TRY(kn_onnx_load_file(path, &m));
    m->fuse = false;
    kn_status *st = kn_graph_resolve_ops(m->graph);
    if (st) {
        kn_model_release(m);
        return kn_error_wrap(st, "%s: ", path);
    }
    *out = m;
    return NULL;
}

void kn_trainer_free(kn_trainer *t) {
    if (!t) return;
    overlap_free(t);
    trainer_dev_free(t);
    kn_session_free(t->s);
    for (int i = 0; t->p && i < t->n_params; i++) {
        kn_param *p = &t->p[i];
        if (p->acc != p->g) free(p->acc);
        free(p->w);
        free(p->g);
        free(p->m);
        free(p->v);
    }
    free(t->p);
    free(t->in);
    free(t->out);
    free(t->no_decay);
    kn_graph_free(t->ext);
    for (int b = 0; t->bucket && b < t->n_buckets; b++) free(t->bucket[b]);
    free(t->bucket);
    free(t->bucket_n);
    free(t->bucket_first);
    if (t->m) kn_model_free(t->m);
    free(t);
}

/* Moves initializer v into a parameter: its data into p->w, the value into the graph's inputs. */
static kn_status *make_param(kn_graph *g, int v, kn_param *p, int accumulate) {
    kn_value *val = &g->values[v];
    kn_tensor *c = val->constant;
    p->value = v;
    p->name = val->name;
    p->ndim = c->ndim;
    for (int d = 0; d < c->ndim; d++) p->dims[d] = c->dims[d];
    p->n = kn_numel(c);
    size_t bytes = sizeof(float) * (size_t)(p->n ? p->n : 1);
    p->w = malloc(bytes);
    p->g = calloc(1, bytes);
    p->m = calloc(1, bytes);
    p->v = calloc(1, bytes);
    p->acc = accumulate > 1 ? calloc(1, bytes) : p->g;
    if (!p->w || !p->g || !p->m || !p->v || !p->acc) return KN_OOM(bytes);
    if (p->n) memcpy(p->w, c->data, sizeof(float) * (size_t)p->n);
    int *ins = realloc(g->inputs, sizeof(int) * (size_t)(g->n_inputs + 1));
    if (!ins) return KN_OOM(sizeof(int));
    g->inputs = ins;
    g->inputs[g->n_inputs++] = v;
    kn_tensor_free(c);
    val->constant = NULL;
    val->is_input = true;
    val->type.dtype = KN_F32;
    kn_tensor_set_shape(&val->type, p->ndim, p->dims);
    return NULL;
}

static kn_status *choose_params(kn_trainer *t, kn_graph *g) {
    const char *pats = t->o.trainable && t->o.trainable[0] ? t->o.trainable : NULL;
    t->p = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof *t->p);
    if (!t->p) return KN_OOM(sizeof *t->p);
    for (int v = 0; v < g->n_values; v++) {
        kn_value *val = &g->values[v];
        if (!val->constant || val->is_input || val->constant->dtype != KN_F32 || val->constant->kind != KN_KIND_TENSOR)
            continue;
        if (pats && !kn_name_matches(pats, val->name)) continue;
        kn_param *p = &t->p[t->n_params++];
        KN_TRY(make_param(g, v, p, t->o.optim.accumulate));
        p->decay = !kn_name_matches(t->no_decay, p->name);
    }
    /* a pattern that matches no float32 initializer is a typo, not an empty selection */
    for (const char *q = pats; q && *q;) {
        const char *e = strchr(q, ',');
        size_t len = e ? (size_t)(e - q) : strlen(q);
        char pat[256];
        if (len > 0 && len < sizeof pat) {
            memcpy(pat, q, len);
            pat[len] = 0;
            bool hit = false;
            for (int i = 0; i < t->n_params && !hit; i++) hit = kn_name_matches(pat, t->p[i].name);
            KN_CHECK(hit, KN_ERR_INVALID_ARGUMENT, "trainer: the pattern '%s' matches no float32 initializer", pat);
        }
        q = e ? e + 1 : q + len;
    }
    KN_CHECK(t->n_params > 0, KN_ERR_INVALID_ARGUMENT, "trainer: no trainable float32 initializer");
    return NULL;
}

static bool in_names(char **names, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], s)) return true;
    return false;
}

/* The ext value of g's value v (added with its type and, for a constant the file does not
 * define, a copy of it: export adds those as initializers). */
static int ext_value(kn_graph *ext, const kn_graph *g, int v, char **defined, int n_defined, kn_status **st) {
    const kn_value *src = &g->values[v];
    int e = kn_graph_find_value(ext, src->name);
    if (e >= 0) return e;
    if ((e = kn_graph_add_value(ext, src->name)) < 0) {
        *st = KN_OOM(sizeof(kn_value));
        return -1;
    }
    kn_value *dv = &ext->values[e];
    dv->kind = src->kind;
    dv->type.dtype = src->type.dtype;
    kn_tensor_set_shape(&dv->type, src->type.ndim, src->type.dims);
    for (int d = 0; d < src->type.ndim && d < KN_MAX_DIMS; d++)
        if (src->dim_names[d] && !(dv->dim_names[d] = strdup(src->dim_names[d]))) *st = KN_OOM(0);
    if (src->constant && !in_names(defined, n_defined, src->name)) {
        kn_status *s2 = kn_tensor_clone(src->constant, &dv->constant);
        if (s2) *st = s2;
    }
    return e;
}

/* The added node's output types by its shape rule, from the types of its inputs (the file
 * declares the encoder's outputs a head starts from), so that the export declares the new
 * outputs' dtype and rank. A rule that fails leaves them unknown. */
static void ext_infer(kn_graph *ext, const kn_node *n) {
    kn_infer_fn fn = kn_op_infer(n->op);
    const kn_tensor *in[64];
    kn_tensor in_t[64], out_t[16], *out[16];
    if (!fn || n->n_inputs > 64 || n->n_outputs > 16) return;
    for (int k = 0; k < n->n_inputs; k++) {
        in[k] = NULL;
        if (n->inputs[k] < 0) continue;
        const kn_value *v = &ext->values[n->inputs[k]];
        in_t[k] = v->constant ? *v->constant : v->type;
        if (in_t[k].ndim < 0 || in_t[k].dtype == KN_UNDEFINED) return;
        in[k] = &in_t[k];
    }
    for (int k = 0; k < n->n_outputs; k++) {
        memset(&out_t[k], 0, sizeof out_t[k]);
        out_t[k].ndim = -1;
        out[k] = n->outputs[k] >= 0 ? &out_t[k] : NULL;
    }
    kn_infer_ctx ic = {n, in, n->n_inputs, out, n->n_outputs};
    kn_status *st = fn(&ic);
    if (st) {
        kn_status_free(st);
        return;
    }
    for (int k = 0; k < n->n_outputs; k++) {
        if (n->outputs[k] < 0) continue;
        kn_value *v = &ext->values[n->outputs[k]];
        if (out_t[k].dtype != KN_UNDEFINED) v->type.dtype = out_t[k].dtype;
        if (out_t[k].ndim >= 0) kn_tensor_set_shape(&v->type, out_t[k].ndim, out_t[k].dims);
    }
}

/* What the caller added to the file's graph and the inference outputs (the graph outputs other
 * than the loss) need: every node between them and the values the file defines, copied into
 * t->ext for kn_trainer_export_onnx before the loss, autograd and folding change the graph. */
static kn_status *trainer_snapshot(kn_trainer *t, kn_graph *g, int loss) {
    if (!t->m->path) return NULL;
    char **defined = NULL, **outs = NULL;
    int n_defined = 0, n_outs = 0;
    kn_status *st = kn_onnx_graph_names(t->m->path, &defined, &n_defined, &outs, &n_outs);
    uint8_t *need = st ? NULL : calloc((size_t)g->n_values + 1, 1);
    uint8_t *take = st ? NULL : calloc((size_t)g->n_nodes + 1, 1);
    int *stack = st ? NULL : malloc(sizeof(int) * ((size_t)g->n_values + 1));
    if (!st && (!need || !take || !stack)) st = KN_OOM(g->n_values);
    int sp = 0;
    bool new_outputs = false;
    for (int i = 0; !st && i < g->n_outputs; i++) {
        int v = g->outputs[i];
        if (v == loss) continue;
        new_outputs |= !in_names(outs, n_outs, g->values[v].name);
        need[v] = 1;
        stack[sp++] = v;
    }
    while (!st && sp > 0) {
        int v = stack[--sp];
        const kn_value *val = &g->values[v];
        if (in_names(defined, n_defined, val->name) || val->producer < 0) continue;
        take[val->producer] = 1;
        const kn_node *n = &g->nodes[val->producer];
        for (int k = 0; k < n->n_inputs; k++) {
            int u = n->inputs[k];
            if (u >= 0 && !need[u]) {
                need[u] = 1;
                stack[sp++] = u;
            }
        }
    }
    int n_take = 0;
    for (int i = 0; !st && i < g->n_nodes; i++) n_take += take[i];
    if (!st && (n_take || new_outputs)) {
        kn_graph *ext = t->ext = kn_graph_new("export_extension");
        if (!ext) st = KN_OOM(0);
        /* needed values the file lacks and no added node makes: new constants and inputs */
        for (int v = 0; !st && v < g->n_values; v++) {
            const kn_value *val = &g->values[v];
            if (!need[v] || in_names(defined, n_defined, val->name) || val->producer >= 0) continue;
            int e = ext_value(ext, g, v, defined, n_defined, &st);
            if (!st && !val->constant) {
                int *ins = realloc(ext->inputs, sizeof(int) * (size_t)(ext->n_inputs + 1));
                if (!ins) st = KN_OOM(0);
                else (ext->inputs = ins)[ext->n_inputs++] = e;
            }
        }
        for (int i = 0; !st && i < g->n_nodes; i++) {
            if (!take[i]) continue;
            const kn_node *n = &g->nodes[i];
            int ins[64], os[16];
            if (n->n_inputs > 64 || n->n_outputs > 16) {
                st = kn_error(KN_ERR_UNSUPPORTED, "trainer: the added node '%s' has too many inputs", n->name);
                break;
            }
            for (int k = 0; k < n->n_inputs; k++)
                ins[k] = n->inputs[k] < 0 ? -1 : ext_value(ext, g, n->inputs[k], defined, n_defined, &st);
            for (int k = 0; k < n->n_outputs; k++)
                os[k] = n->outputs[k] < 0 ? -1 : ext_value(ext, g, n->outputs[k], defined, n_defined, &st);
            kn_attr *a = n->n_attrs ? calloc((size_t)n->n_attrs, sizeof *a) : NULL;
            if (n->n_attrs && !a) st = KN_OOM(0);
            for (int k = 0; !st && k < n->n_attrs; k++) st = kn_attr_copy(&a[k], &n->attrs[k]);
            int id = st ? -1
                        : kn_graph_add_node(ext, n->name, n->op_type, n->domain, ins, n->n_inputs - n->n_implicit, os,
                                            n->n_outputs, a, n->n_attrs);
            if (id < 0) {
                for (int k = 0; a && k < n->n_attrs; k++) kn_attr_clear(&a[k]);
                free(a);
                if (!st) st = KN_OOM(sizeof(kn_node));
            } else {
                ext->nodes[id].op = n->op;
                ext->nodes[id].opset = n->opset;
                st = kn_node_decode_params(&ext->nodes[id]);
                if (!st) ext_infer(ext, &ext->nodes[id]);
            }
        }
        for (int i = 0; !st && i < g->n_outputs; i++) {
            int v = g->outputs[i];
            if (v == loss || in_names(outs, n_outs, g->values[v].name)) continue;
            int e = ext_value(ext, g, v, defined, n_defined, &st);
            int *o2 = st ? NULL : realloc(ext->outputs, sizeof(int) * (size_t)(ext->n_outputs + 1));
            if (!st && !o2) st = KN_OOM(0);
            if (!st) {
                (ext->outputs = o2)[ext->n_outputs++] = e;
                ext->values[e].is_output = true;
            }
        }
    }
    for (int i = 0; i < n_defined; i++) free(defined[i]);
    for (int i = 0; i < n_outs; i++) free(outs[i]);
    free(defined);
    free(outs);
    free(need);
    free(take);
    free(stack);
    return st ? kn_error_wrap(st, "trainer: ") : NULL;
}

static kn_status *trainer_build(kn_trainer *t, int loss) {
    kn_graph *g = t->m->graph;
    KN_CHECK(loss >= 0 && loss < g->n_values, KN_ERR_INVALID_ARGUMENT, "trainer: loss value id %d is not in the graph",
             loss);
    KN_CHECK(t->o.optim.accumulate >= 1, KN_ERR_INVALID_ARGUMENT, "trainer: accumulate must be at least 1, not %d",
             t->o.optim.accumulate);
    KN_TRY(kn_graph_resolve_ops(g));
    KN_TRY(trainer_snapshot(t, g, loss));
    KN_TRY(choose_params(t, g));
    int dloss = loss; /* what autograd differentiates: the scaled loss in mixed precision */
    KN_TRY(trainer_lowp_graph(t, g, &loss, &dloss));
    /* the loss is an output so that pruning keeps its forward nodes; it is read every step */
    if (!g->values[loss].is_output) {
        int *outs = realloc(g->outputs, sizeof(int) * (size_t)(g->n_outputs + 1));
        if (!outs) return KN_OOM(sizeof(int));
        g->outputs = outs;
        g->outputs[g->n_outputs++] = loss;
        g->values[loss].is_output = true;
    }
    t->loss = loss;
    /* a loss that no parameter reaches would train nothing while every step looked fine */
    KN_TRY(kn_graph_toposort(g));
    uint8_t *reach = calloc((size_t)g->n_values, 1);
    if (!reach) return KN_OOM((size_t)g->n_values);
    for (int i = 0; i < t->n_params; i++) reach[t->p[i].value] = 1;
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        bool any = false;
        for (int k = 0; k < n->n_inputs; k++) any |= n->inputs[k] >= 0 && reach[n->inputs[k]];
        for (int k = 0; any && k < n->n_outputs; k++)
            if (n->outputs[k] >= 0) reach[n->outputs[k]] = 1;
    }
    bool reached = reach[dloss];
    free(reach);
    KN_CHECK(reached, KN_ERR_INVALID_ARGUMENT, "trainer: the loss '%s' depends on none of the %d trainable parameters",
             g->values[loss].name, t->n_params);
    int *wrt = malloc(sizeof(int) * (size_t)t->n_params);
    if (!wrt) return KN_OOM(sizeof(int) * (size_t)t->n_params);
    for (int i = 0; i < t->n_params; i++) wrt[i] = t->p[i].value;
    kn_status *st = kn_autograd(g, dloss, wrt, t->n_params, NULL);
    free(wrt);
    KN_TRY(kn_error_wrap(st, "trainer: "));
    /* names and ids stay valid: the parameters are inputs, which folding and pruning keep */
    KN_TRY(kn_graph_optimize(g, false));
    if (t->o.recompute && *t->o.recompute) /* after the sort: the pass orders the copies itself */
        KN_TRY(kn_error_wrap(kn_train_recompute(g, t->o.recompute, NULL), "trainer: "));
    for (int i = 0; i < t->n_params; i++) t->p[i].name = g->values[kn_graph_find_value(g, t->p[i].name)].name;
    kn_session_options so;
    kn_session_options_init(&so);
    so.num_threads = t->o.num_threads;
    so.device = t->o.device;
    so.device_index = t->o.device_index;
    KN_TRY(kn_session_create(t->m, &so, &t->s));
    t->out = calloc((size_t)(t->n_params + 1), sizeof *t->out);
    if (!t->out) return KN_OOM(sizeof *t->out);
    t->out[0].name = g->values[loss].name;
    t->out[0].data = &t->loss_buf;
    t->out[0].capacity = sizeof t->loss_buf;
    char name[1024];
    for (int i = 0; i < t->n_params; i++) {
        kn_param *p = &t->p[i];
        snprintf(name, sizeof name, "grad:%s", p->name);
        int gv = kn_graph_find_value(g, name);
        KN_CHECK(gv >= 0, KN_ERR_RUNTIME, "trainer: the gradient '%s' is not in the graph", name);
        t->out[1 + i].name = g->values[gv].name;
        t->out[1 + i].data = p->g;
        t->out[1 + i].capacity = sizeof(float) * (size_t)p->n;
    }
    if (t->o.device != KN_DEVICE_CPU) KN_TRY(trainer_dev_create(t));
    return NULL;
}

kn_status *kn_trainer_create(kn_model *m, int loss, const kn_trainer_options *o, kn_trainer **out) {
    *out = NULL;
    KN_CHECK(m && m->graph, KN_ERR_INVALID_ARGUMENT, "kn_trainer_create: model is NULL");
    kn_trainer *t = calloc(1, sizeof *t);
    if (!t) {
        kn_model_free(m);
        return KN_OOM(sizeof *t);
    }
    t->m = m;
    if (o) t->o = *o;
    else kn_trainer_options_init(&t->o);
    t->rng = t->o.seed;
    t->grad_weight = 1.0;
    kn_status *st = NULL;
    if (t->o.optim.no_decay && !(t->no_decay = strdup(t->o.optim.no_decay))) st = KN_OOM(0);
    t->o.optim.no_decay = t->no_decay;
    if (!st) st = trainer_build(t, loss);
    t->o.trainable = NULL; /* the caller's string: only read while choosing */
    if (st) {
        kn_trainer_free(t);
        return st;
    }
    *out = t;
    return NULL;
}

/* Sums the accumulated gradients over the ranks, bucket by bucket, and divides by the count. */
static kn_status *reduce_grads(kn_trainer *t) {
    int size = kn_comm_size(t->comm);
    if (!t->comm || size == 1) return NULL;
    if (overlap_active(t) && !overlap_take(t)) {
        /* an update without a backward on this rank (an empty share): the peers' bucket order */
        KN_TRY(overlap_begin(t));
        KN_TRY(overlap_finish(t));
        overlap_take(t);
    } else if (!overlap_active(t)) {
        for (int b = 0; b < t->n_buckets; b++) {
            float *q = t->bucket[b];
            for (int i = t->bucket_first[b]; i < t->bucket_first[b + 1]; i++) {
                memcpy(q, t->p[i].acc, sizeof(float) * (size_t)t->p[i].n);
                q += t->p[i].n;
            }
        }
        KN_TRY(kn_error_wrap(kn_comm_allreduce_sum_f32(t->comm, t->bucket, t->bucket_n, t->n_buckets), "trainer: "));
    }
    float inv = 1.0f / (float)size;
    for (int b = 0; b < t->n_buckets; b++) {
        const float *q = t->bucket[b];
        for (int i = t->bucket_first[b]; i < t->bucket_first[b + 1]; i++) {
            for (int64_t k = 0; k < t->p[i].n; k++) t->p[i].acc[k] = q[k] * inv;
            q += t->p[i].n;
        }
    }
    return NULL;
}

static kn_status *apply_update(kn_trainer *t) {
    KN_TRY(reduce_grads(t));
    double scale = 1.0 / (double)t->o.optim.accumulate, sq = 0;
    for (int i = 0; i < t->n_params; i++) {
        kn_param *p = &t->p[i];
        for (int64_t k = 0; k < p->n; k++) {
            if (scale != 1.0) p->acc[k] = (float)((double)p->acc[k] * scale);
            sq += (double)p->acc[k] * (double)p->acc[k];
        }
    }
    t->grad_norm = sqrt(sq);
    double clip = 1.0;
    if (t->o.optim.max_grad_norm > 0) {
        /* torch.nn.utils.clip_grad_norm_: the coefficient clamped to 1 and applied always */
        clip = t->o.optim.max_grad_norm / (t->grad_norm + 1e-6);
        if (clip > 1.0) clip = 1.0;
        float c = (float)clip;
        for (int i = 0; i < t->n_params; i++)
            for (int64_t k = 0; k < t->p[i].n; k++) t->p[i].acc[k] *= c;
    }
    double lr = kn_optim_lr(&t->o.optim, t->steps);
    t->steps++;
    for (int i = 0; i < t->n_params; i++) {
        kn_param *p = &t->p[i];
        kn_optim_update(&t->o.optim, t->steps, lr, p->decay, p->w, p->acc, p->m, p->v, p->n);
        if (p->acc != p->g) memset(p->acc, 0, sizeof(float) * (size_t)p->n);
    }
    return NULL;
}

/* t->in: the batch, then the parameters bound to the trainer's buffers. */
static kn_status *bind_inputs(kn_trainer *t, const kn_named_tensor *batch, int n_batch) {
    KN_CHECK(n_batch >= 0 && (batch || !n_batch), KN_ERR_INVALID_ARGUMENT, "kn_trainer_step: bad batch array");
    if (n_batch + t->n_params > t->in_cap) { /* the first step, or a batch with more inputs */
        kn_named_tensor *in = realloc(t->in, sizeof *in * (size_t)(n_batch + t->n_params));
        if (!in) return KN_OOM(sizeof *in);
        t->in = in;
        t->in_cap = n_batch + t->n_params;
    }
    for (int i = 0; i < n_batch; i++) {
        for (int k = 0; k < t->n_params; k++)
            KN_CHECK(strcmp(batch[i].name, t->p[k].name), KN_ERR_INVALID_ARGUMENT,
                     "kn_trainer_step: '%s' is a trainable parameter, not a batch input", batch[i].name);
        t->in[i] = batch[i];
    }
    for (int k = 0; k < t->n_params; k++) {
        kn_named_tensor *x = &t->in[n_batch + k];
        memset(x, 0, sizeof *x);
        x->name = t->p[k].name;
        x->dtype = KN_F32;
        x->ndim = t->p[k].ndim;
        for (int d = 0; d < x->ndim; d++) x->dims[d] = t->p[k].dims[d];
        x->data = t->p[k].w;
        x->capacity = sizeof(float) * (size_t)t->p[k].n;
    }
    return NULL;
}

kn_status *kn_trainer_step(kn_trainer *t, const kn_named_tensor *batch, int n_batch, double *loss, bool *updated) {
    if (updated) *updated = false;
    KN_CHECK(t, KN_ERR_INVALID_ARGUMENT, "kn_trainer_step: trainer is NULL");
    KN_TRY(bind_inputs(t, batch, n_batch));
    if (t->dev) return trainer_dev_step(t, n_batch, loss, updated);
    for (int k = 0; k <= t->n_params; k++) t->out[k].ndim = 0;
    bool ov = overlap_active(t);
    if (ov) KN_TRY(overlap_begin(t));
    kn_status *run = kn_session_run(t->s, t->in, n_batch + t->n_params, t->out, t->n_params + 1);
    kn_status *fin = ov ? overlap_finish(t) : NULL; /* also after a failed run: the peers wait for it */
    if (run) kn_status_free(fin);
    else run = fin;
    KN_TRY(kn_error_wrap(run, "kn_trainer_step: "));
    double l = NAN, sq = 0;
    if (t->out[0].dtype == KN_F64) l = t->loss_buf;
    else if (t->out[0].dtype == KN_F32) {
        float f;
        memcpy(&f, &t->loss_buf, sizeof f);
        l = f;
    }
    for (int i = 0; i < t->n_params; i++)
        for (int64_t k = 0; k < t->p[i].n; k++) sq += (double)t->p[i].g[k] * (double)t->p[i].g[k];
    if (loss) *loss = l;
    /* refused before anything is accumulated or updated: the last good state stays */
    KN_CHECK(isfinite(l) && isfinite(sq), KN_ERR_NON_FINITE,
             "kn_trainer_step: non-finite %s at update step %lld (micro-batch %d of %d): loss %g, gradient norm %g; "
             "the parameters and optimiser state are unchanged",
             !isfinite(l) ? "loss" : "gradient", (long long)t->steps, t->micro + 1, t->o.optim.accumulate, l, sqrt(sq));
    float w = (float)t->grad_weight;
    for (int i = 0; i < t->n_params; i++) {
        kn_param *p = &t->p[i];
        if (p->acc != p->g)
            for (int64_t k = 0; k < p->n; k++) p->acc[k] += w * p->g[k];
        else if (w != 1.0f)
            for (int64_t k = 0; k < p->n; k++) p->g[k] *= w;
    }
    if (++t->micro < t->o.optim.accumulate) return NULL;
    t->micro = 0;
    KN_TRY(apply_update(t));
    if (updated) *updated = true;
    return NULL;
}

kn_status *kn_trainer_forward(kn_trainer *t, const kn_named_tensor *batch, int n_batch, kn_named_tensor *outputs,
                              int n_outputs) {
    KN_CHECK(t, KN_ERR_INVALID_ARGUMENT, "kn_trainer_forward: trainer is NULL");
    KN_TRY(bind_inputs(t, batch, n_batch));
    if (t->dev) return trainer_dev_forward(t, n_batch, outputs, n_outputs);
    return kn_error_wrap(kn_session_run(t->s, t->in, n_batch + t->n_params, outputs, n_outputs),
                         "kn_trainer_forward: ");
}

kn_status *kn_trainer_step_empty(kn_trainer *t, bool *updated) {
    if (updated) *updated = false;
    KN_CHECK(t, KN_ERR_INVALID_ARGUMENT, "kn_trainer_step_empty: trainer is NULL");
    if (t->dev) return trainer_dev_step_empty(t, updated);
    for (int i = 0; i < t->n_params; i++)
        if (t->p[i].acc == t->p[i].g) memset(t->p[i].g, 0, sizeof(float) * (size_t)t->p[i].n);
    if (++t->micro < t->o.optim.accumulate) return NULL;
    t->micro = 0;
    KN_TRY(apply_update(t));
    if (updated) *updated = true;
    return NULL;
}

int kn_trainer_buckets(const kn_trainer *t) { return t ? t->n_buckets : 0; }

void kn_trainer_set_overlap(kn_trainer *t, bool on) {
    if (t) t->no_overlap = !on;
}

void kn_trainer_set_grad_weight(kn_trainer *t, double w) {
    if (t) t->grad_weight = w;
}

kn_status *kn_trainer_set_comm(kn_trainer *t, kn_comm *c, size_t bucket_bytes) {
    KN_CHECK(t, KN_ERR_INVALID_ARGUMENT, "kn_trainer_set_comm: trainer is NULL");
    for (int b = 0; t->bucket && b < t->n_buckets; b++) free(t->bucket[b]);
    free(t->bucket);
    free(t->bucket_n);
    free(t->bucket_first);
    t->bucket = NULL;
    t->bucket_n = NULL;
    t->bucket_first = NULL;
    t->n_buckets = 0;
    overlap_free(t);
    t->comm = c;
    if (!c || kn_comm_size(c) == 1) return NULL;
    /* rank 0's weights everywhere: the ranks loaded the same file, but a checkpoint may differ
     * (a device trainer's through its host copies, once) */
    KN_TRY(trainer_dev_download(t));
    for (int i = 0; i < t->n_params; i++)
        KN_TRY(kn_error_wrap(kn_comm_broadcast(c, t->p[i].w, sizeof(float) * (size_t)t->p[i].n, 0),
                             "trainer: broadcasting '%s': ", t->p[i].name));
    KN_TRY(trainer_dev_upload(t));
    int64_t cap = (int64_t)((bucket_bytes ? bucket_bytes : (size_t)25 << 20) / sizeof(float));
    if (cap < 1) cap = 1;
    t->bucket_first = calloc((size_t)t->n_params + 1, sizeof *t->bucket_first);
    t->bucket = calloc((size_t)t->n_params, sizeof *t->bucket);
    t->bucket_n = calloc((size_t)t->n_params, sizeof *t->bucket_n);
    if (!t->bucket_first || !t->bucket || !t->bucket_n) return KN_OOM(sizeof(float *) * (size_t)t->n_params);
    /* consecutive parameters up to cap elements a bucket (a larger parameter is a bucket alone) */
    int64_t fill = 0;
    for (int i = 0; i < t->n_params; i++) {
        if (t->n_buckets == 0 || fill + t->p[i].n > cap) {
            if (t->n_buckets) t->bucket_n[t->n_buckets - 1] = fill;
            t->bucket_first[t->n_buckets++] = i;
            fill = 0;
        }
        fill += t->p[i].n;
    }
    t->bucket_n[t->n_buckets - 1] = fill;
    t->bucket_first[t->n_buckets] = t->n_params;
    for (int b = 0; b < t->n_buckets; b++)
        if (!(t->bucket[b] = malloc(sizeof(float) * (size_t)(t->bucket_n[b] ? t->bucket_n[b] : 1))))
            return KN_OOM(sizeof(float) * (size_t)t->bucket_n[b]);
    return t->dev ? NULL : overlap_create(t);
}

uint64_t kn_trainer_random(kn_trainer *t) {
    uint64_t z = (t->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int64_t kn_trainer_steps(const kn_trainer *t) { return t->steps; }
uint64_t kn_trainer_run_count(const kn_trainer *t) { return kn_session_run_count(t->s); }
void kn_trainer_set_run_count(kn_trainer *t, uint64_t runs) { kn_session_set_run_count(t->s, runs); }
double kn_trainer_grad_norm(const kn_trainer *t) { return t->grad_norm; }
size_t kn_trainer_peak_bytes(const kn_trainer *t) { return t && t->s ? kn_session_peak_bytes(t->s) : 0; }

int kn_trainer_param_count(const kn_trainer *t) { return t->n_params; }

const char *kn_trainer_param(const kn_trainer *t, int i, int *ndim, const int64_t **dims, float **data) {
    if (!t || i < 0 || i >= t->n_params) return NULL;
    if (t->dev) { /* the host copy, current; written or not, it is uploaded before the next step */
        kn_status *st = trainer_dev_expose(t);
        if (st) {
            kn_status_free(st);
            return NULL;
        }
    }
    if (ndim) *ndim = t->p[i].ndim;
    if (dims) *dims = t->p[i].dims;
    if (data) *data = t->p[i].w;
    return t->p[i].name;
}

kn_status *kn_trainer_export_onnx(const kn_trainer *t, const char *src_path, const char *dst_path) {
    return kn_trainer_export_onnx_ex(t, src_path, dst_path, NULL);
}

kn_status *kn_trainer_export_onnx_ex(const kn_trainer *t, const char *src_path, const char *dst_path,
                                     const kn_trainer_export_options *eo) {
    KN_CHECK(t && src_path && dst_path, KN_ERR_INVALID_ARGUMENT, "kn_trainer_export_onnx: NULL argument");
    KN_TRY(kn_error_wrap(trainer_dev_download(t), "kn_trainer_export_onnx: "));
    const char **names = calloc((size_t)t->n_params, sizeof *names);
    kn_tensor *vals = calloc((size_t)t->n_params, sizeof *vals);
    const kn_tensor **ptrs = calloc((size_t)t->n_params, sizeof *ptrs);
    kn_status *st = names && vals && ptrs ? NULL : KN_OOM(0);
    for (int i = 0; !st && i < t->n_params; i++) {
        const kn_param *p = &t->p[i];
        names[i] = p->name;
        vals[i].dtype = KN_F32;
        kn_tensor_set_shape(&vals[i], p->ndim, p->dims);
        vals[i].data = p->w; /* borrowed: not owned, never freed here */
        ptrs[i] = &vals[i];
    }
    /* the outputs' types as shape inference found them once the graph was built (the snapshot was
     * taken before), so the file declares their rank */
    for (int i = 0; t->ext && i < t->ext->n_outputs; i++) {
        kn_value *ev = &t->ext->values[t->ext->outputs[i]];
        int v = kn_graph_find_value(t->m->graph, ev->name);
        if (ev->type.ndim >= 0 || v < 0 || t->m->graph->values[v].type.ndim < 0) continue;
        ev->type.dtype = t->m->graph->values[v].type.dtype;
        kn_tensor_set_shape(&ev->type, t->m->graph->values[v].type.ndim, t->m->graph->values[v].type.dims);
    }
    kn_onnx_write_options wo = {.names = names, .values = ptrs, .n = t->n_params, .ext = t->ext};
    if (eo) wo.external_threshold = eo->external_threshold;
    if (!st) st = kn_onnx_write(src_path, dst_path, &wo);
    free(names);
    free(vals);
    free(ptrs);
    return kn_error_wrap(st, "kn_trainer_export_onnx: ");
}
