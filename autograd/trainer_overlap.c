/* Gradient all-reduce overlapped with the backward (autograd/trainer_overlap.h). */
#include "autograd/trainer_overlap.h"
#include "autograd/trainer_device.h"
#include "runtime/executor.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct trainer_overlap {
    bool running; /* begun for the run in progress */
    bool reduced; /* the buckets hold reduced sums the update has not read */
    const kn_graph *g;
    int n_values;
    int *param_of; /* per value of g: the parameter whose gradient it is, + 1; 0: none */
    int *bucket_of, *left;
    int64_t *off; /* each parameter's place in its bucket */
    uint8_t *done;
    int started;   /* buckets started: n_buckets - 1, n_buckets - 2, ... */
    int64_t early; /* buckets started by the hook, while the backward ran, since creation */
    kn_status *st;
};

bool overlap_active(const kn_trainer *t) {
    return t->ov && !t->dev && t->o.optim.accumulate == 1 && t->n_buckets > 0 && kn_comm_size(t->comm) > 1 &&
        !t->no_overlap;
}

void overlap_free(kn_trainer *t) {
    trainer_overlap *o = t->ov;
    if (!o) return;
    kn_session_set_node_hook(t->s, NULL, NULL);
    free(o->param_of);
    free(o->bucket_of);
    free(o->left);
    free(o->off);
    free(o->done);
    kn_status_free(o->st);
    free(o);
    t->ov = NULL;
}

static void hook(void *arg, const kn_graph *g, int node, const kn_tensor *vals);

kn_status *overlap_create(kn_trainer *t) {
    overlap_free(t);
    trainer_overlap *o = t->ov = calloc(1, sizeof *o);
    if (!o) return KN_OOM(sizeof *o);
    o->bucket_of = malloc(sizeof(int) * (size_t)t->n_params);
    o->off = malloc(sizeof(int64_t) * (size_t)t->n_params);
    o->done = malloc((size_t)t->n_params);
    o->left = malloc(sizeof(int) * (size_t)(t->n_buckets ? t->n_buckets : 1));
    if (!o->bucket_of || !o->off || !o->done || !o->left) return KN_OOM(sizeof(int64_t) * (size_t)t->n_params);
    for (int b = 0; b < t->n_buckets; b++) {
        int64_t off = 0;
        for (int i = t->bucket_first[b]; i < t->bucket_first[b + 1]; i++) {
            o->bucket_of[i] = b;
            o->off[i] = off;
            off += t->p[i].n;
        }
    }
    kn_session_set_node_hook(t->s, hook, t);
    return NULL;
}

/* Which parameter each value of g is the gradient of (param_of[v] = parameter index + 1; 0: none),
 * found by the gradients' output names, which stay when a session rewrites the trainer's graph.
 * Shared by the host and the device overlap hooks. */
kn_status *trainer_grad_values(const kn_trainer *t, const kn_graph *g, int **param_of) {
    free(*param_of);
    *param_of = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof **param_of);
    if (!*param_of) return KN_OOM(sizeof(int) * (size_t)g->n_values);
    char name[1024];
    for (int i = 0; i < t->n_params; i++) {
        snprintf(name, sizeof name, "grad:%s", t->p[i].name);
        int v = kn_graph_find_value(g, name);
        if (v >= 0) (*param_of)[v] = i + 1;
    }
    return NULL;
}

static kn_status *map_graph(kn_trainer *t, const kn_graph *g) {
    trainer_overlap *o = t->ov;
    o->g = g;
    o->n_values = g->n_values;
    return trainer_grad_values(t, g, &o->param_of);
}

/* Gradient i (times the grad weight, as the non-overlapped step scales it) into its bucket. */
static void put(kn_trainer *t, int i, const float *g) {
    trainer_overlap *o = t->ov;
    float *q = t->bucket[o->bucket_of[i]] + o->off[i], w = (float)t->grad_weight;
    if (w == 1.0f) memcpy(q, g, sizeof(float) * (size_t)t->p[i].n);
    else
        for (int64_t k = 0; k < t->p[i].n; k++) q[k] = w * g[k];
    o->done[i] = 1;
    o->left[o->bucket_of[i]]--;
}

/* Starts the buckets whose turn has come. */
static kn_status *start_ready(kn_trainer *t) {
    trainer_overlap *o = t->ov;
    while (o->started < t->n_buckets) {
        int b = t->n_buckets - 1 - o->started;
        if (o->left[b] > 0) break;
        KN_TRY(kn_comm_allreduce_start(t->comm, o->started, t->bucket[b], t->bucket_n[b]));
        o->started++;
        o->early++;
    }
    return NULL;
}

static void hook(void *arg, const kn_graph *g, int node, const kn_tensor *vals) {
    kn_trainer *t = arg;
    trainer_overlap *o = t->ov;
    if (!o || !o->running || o->st) return;
    if (g != o->g || g->n_values != o->n_values) {
        if ((o->st = map_graph(t, g))) return;
    }
    const kn_node *n = &g->nodes[node];
    bool any = false;
    for (int k = 0; k < n->n_outputs; k++) {
        int v = n->outputs[k];
        if (v < 0 || v >= o->n_values || !o->param_of[v]) continue;
        int i = o->param_of[v] - 1;
        const kn_tensor *x = &vals[v];
        /* anything unexpected is left to overlap_finish, which reads the session's output */
        if (o->done[i] || x->dtype != KN_F32 || x->device != KN_DEVICE_CPU || !x->data || kn_numel(x) != t->p[i].n)
            continue;
        put(t, i, x->data);
        any = true;
    }
    if (any) o->st = start_ready(t);
    kn_comm_progress(t->comm);
}

kn_status *overlap_begin(kn_trainer *t) {
    trainer_overlap *o = t->ov;
    memset(o->done, 0, (size_t)t->n_params);
    for (int b = 0; b < t->n_buckets; b++) o->left[b] = t->bucket_first[b + 1] - t->bucket_first[b];
    o->started = 0;
    o->reduced = false;
    kn_status_free(o->st);
    o->st = NULL;
    KN_TRY(kn_error_wrap(kn_comm_allreduce_begin(t->comm, t->n_buckets), "trainer: "));
    o->running = true;
    return NULL;
}

kn_status *overlap_finish(kn_trainer *t) {
    trainer_overlap *o = t->ov;
    if (!o || !o->running) return NULL;
    o->running = false;
    kn_status *st = o->st;
    o->st = NULL;
    for (int i = 0; i < t->n_params; i++)
        if (!o->done[i]) put(t, i, t->p[i].g);
    /* every bucket is complete now: the rest start in their order, whatever failed before, so
     * that the peers' collectives match */
    while (o->started < t->n_buckets) {
        int b = t->n_buckets - 1 - o->started;
        kn_status *s2 = kn_comm_allreduce_start(t->comm, o->started, t->bucket[b], t->bucket_n[b]);
        o->started++;
        if (s2 && !st) st = s2;
        else kn_status_free(s2);
    }
    kn_status *w = kn_comm_allreduce_wait(t->comm);
    if (w && !st) st = w;
    else kn_status_free(w);
    o->reduced = !st;
    return kn_error_wrap(st, "trainer: ");
}

bool overlap_take(kn_trainer *t) {
    if (!t->ov || !t->ov->reduced) return false;
    t->ov->reduced = false;
    return true;
}

int64_t kn_trainer_overlapped_buckets(const kn_trainer *t) {
    return t ? (t->ov ? t->ov->early : 0) + trainer_dev_overlapped(t) : 0;
}

double kn_trainer_comm_wait_seconds(const kn_trainer *t) { return trainer_dev_comm_wait(t); }
