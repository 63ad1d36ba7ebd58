/* The trainer's device path (autograd/trainer_device.h). One optimiser step: the session runs
 * forward and backward reading the device parameters (or their float16/bfloat16 copies) and
 * writing the gradients into device buffers; the gradient norm comes back as one double per
 * parameter (kn_cuda_sumsq), the rest of the step (accumulation, averaging, clipping, the update)
 * stays on the device, in the order and rounding of autograd/trainer.c's host path. */
#include "autograd/trainer_device.h"
#include "graph/passes.h"
#include "runtime/core/dtype.h"
#include "runtime/executor.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef KILN_HAVE_CUDA
#include "kernels/cuda/kn_train_cuda.h"
#endif

typedef struct dev_param {
    float *w, *g, *acc, *m, *v; /* device; acc == g without accumulation */
    void *g_lp, *w_lp;          /* mixed precision: the gradient the graph gives, the weight copy */
} dev_param;

typedef struct kn_trainer_dev kn_trainer_dev;
struct kn_trainer_dev {
    const kn_backend *be;
    dev_param *p;
    double *sumsq; /* device, one per parameter */
    double *sumsq_host;
    uint8_t *in_dev, *out_dev;
    int in_dev_cap;
    bool host_current; /* the host copies equal the device state */
    bool host_dirty;   /* the caller had writable host weights (kn_trainer_param): upload them first */
    kn_dtype lp;       /* KN_F32, or the low precision of the forward/backward */
    bool lp_params;    /* the graph reads low-precision weight copies and gives lp gradients (not autocast) */
    float *scale, *inv_scale;
    int *tracker, *found_inf;
    int64_t skipped;
    struct dev_overlap *ov; /* the all-reduce overlapped with the backward (NULL: not set up yet) */
};

/* Data parallelism overlapped with the backward: the session's stream hook sees each gradient as
 * its producing kernel is queued on the run's stream; once a bucket's gradients are all queued, an
 * event recorded on that stream orders the bucket's work on a communication stream after them.
 * With NCCL that is a copy of each gradient into red (the arena value is the session's until the
 * run ends) and the bucket's all-reduce, both on the communication stream. With a host
 * communicator (MPI, TCP) it is an asynchronous copy into the host bucket and an event; the hook
 * polls the events and starts a bucket's host all-reduce once its copy completed, never waiting
 * for the run's stream. Buckets go in the CPU trainer's order (the last bucket first, a bucket
 * complete out of turn waiting for those before it), the same on every rank. After the run the
 * host waits for the rest, and the update reads the reduced sums; the summation and the division
 * are the non-overlapped path's, so the bits are the same. */
typedef struct dev_overlap {
    struct kn_cuda_side *side;
    bool running, reduced;
    const kn_graph *g;
    int n_values;
    int *param_of; /* per value of g: the parameter whose gradient it is, + 1; 0: none */
    int *bucket_of, *left, n_left;
    int64_t *off;
    const void **src; /* per parameter: where the run holds its gradient (device) */
    uint8_t *done;
    float **red; /* NCCL: per parameter, the device buffer reduced in place */
    int queued;  /* buckets queued on the communication stream: n_buckets - 1, n_buckets - 2, ... */
    int started; /* host communicator: buckets whose host all-reduce started */
    int64_t early;
    double wait_s; /* seconds the host waited for the communication after the backward */
    kn_status *st;
} dev_overlap;

static const char *dev_scale_name = "kiln.loss_scale";

#ifdef KILN_HAVE_CUDA

static kn_status *dev_alloc(const kn_backend *be, size_t bytes, void **out) {
    *out = be->alloc(be, bytes ? bytes : 4);
    if (!*out)
        return kn_error(KN_ERR_OUT_OF_MEMORY, "trainer: out of %s memory: %zu bytes asked, %zu free", be->name, bytes,
                        be->free_bytes ? be->free_bytes(be) : (size_t)0);
    return NULL;
}

static kn_status *dev_put(const kn_backend *be, void *dst, const void *src, size_t bytes) {
    return bytes ? be->copy(be, dst, be->device, src, KN_DEVICE_CPU, bytes) : NULL;
}
static kn_status *dev_get(const kn_backend *be, void *dst, const void *src, size_t bytes) {
    return bytes ? be->copy(be, dst, KN_DEVICE_CPU, src, be->device, bytes) : NULL;
}

static void dev_ov_free(kn_trainer *t);

kn_status *trainer_dev_create(kn_trainer *t) {
    kn_trainer_dev *d = t->dev = calloc(1, sizeof *d);
    if (!d) return KN_OOM(sizeof *d);
    d->be = kn_session_backend(t->s);
    d->lp = t->o.precision == KN_PRECISION_FP16 ? KN_F16 : t->o.precision == KN_PRECISION_BF16 ? KN_BF16 : KN_F32;
    d->lp_params = d->lp != KN_F32 && !t->o.autocast;
    KN_CHECK(d->be->device != KN_DEVICE_CPU, KN_ERR_INVALID_ARGUMENT, "trainer: the session runs on the CPU");
    d->p = calloc((size_t)t->n_params, sizeof *d->p);
    d->sumsq_host = calloc((size_t)t->n_params, sizeof(double));
    d->out_dev = calloc((size_t)t->n_params + 1, 1);
    if (!d->p || !d->sumsq_host || !d->out_dev) return KN_OOM(0);
    KN_TRY(dev_alloc(d->be, sizeof(double) * (size_t)t->n_params, (void **)&d->sumsq));
    for (int i = 0; i < t->n_params; i++) {
        kn_param *p = &t->p[i];
        dev_param *q = &d->p[i];
        size_t bytes = sizeof(float) * (size_t)p->n;
        KN_TRY(dev_alloc(d->be, bytes, (void **)&q->w));
        KN_TRY(dev_alloc(d->be, bytes, (void **)&q->g));
        KN_TRY(dev_alloc(d->be, bytes, (void **)&q->m));
        KN_TRY(dev_alloc(d->be, bytes, (void **)&q->v));
        if (p->acc != p->g) KN_TRY(dev_alloc(d->be, bytes, (void **)&q->acc));
        else q->acc = q->g;
        if (d->lp_params) {
            KN_TRY(dev_alloc(d->be, 2 * (size_t)p->n, &q->g_lp));
            KN_TRY(dev_alloc(d->be, 2 * (size_t)p->n, &q->w_lp));
        }
        /* the gradients come back into the device buffers */
        t->out[1 + i].data = d->lp_params ? q->g_lp : (void *)q->g;
        t->out[1 + i].capacity = (d->lp_params ? 2 : 4) * (size_t)p->n;
        d->out_dev[1 + i] = 1;
    }
    if (d->lp != KN_F32) {
        KN_TRY(dev_alloc(d->be, sizeof(float), (void **)&d->scale));
        KN_TRY(dev_alloc(d->be, sizeof(float), (void **)&d->inv_scale));
        KN_TRY(dev_alloc(d->be, sizeof(int), (void **)&d->tracker));
        KN_TRY(dev_alloc(d->be, sizeof(int), (void **)&d->found_inf));
        float s = t->o.init_scale > 0 ? t->o.init_scale : 65536.0f, inv = 1.0f / s;
        int zero = 0;
        KN_TRY(dev_put(d->be, d->scale, &s, sizeof s));
        KN_TRY(dev_put(d->be, d->inv_scale, &inv, sizeof inv));
        KN_TRY(dev_put(d->be, d->tracker, &zero, sizeof zero));
    }
    return trainer_dev_upload(t);
}

void trainer_dev_free(kn_trainer *t) {
    kn_trainer_dev *d = t->dev;
    if (!d) return;
    dev_ov_free(t);
    const kn_backend *be = d->be;
    for (int i = 0; d->p && i < t->n_params; i++) {
        dev_param *q = &d->p[i];
        if (q->acc != q->g) be->free(be, q->acc);
        be->free(be, q->w);
        be->free(be, q->g);
        be->free(be, q->m);
        be->free(be, q->v);
        be->free(be, q->g_lp);
        be->free(be, q->w_lp);
    }
    be->free(be, d->sumsq);
    be->free(be, d->scale);
    be->free(be, d->inv_scale);
    be->free(be, d->tracker);
    be->free(be, d->found_inf);
    free(d->p);
    free(d->sumsq_host);
    free(d->in_dev);
    free(d->out_dev);
    free(d);
    t->dev = NULL;
}

kn_status *trainer_dev_upload(kn_trainer *t) {
    kn_trainer_dev *d = t->dev;
    if (!d) return NULL;
    for (int i = 0; i < t->n_params; i++) {
        kn_param *p = &t->p[i];
        dev_param *q = &d->p[i];
        size_t bytes = sizeof(float) * (size_t)p->n;
        KN_TRY(dev_put(d->be, q->w, p->w, bytes));
        KN_TRY(dev_put(d->be, q->m, p->m, bytes));
        KN_TRY(dev_put(d->be, q->v, p->v, bytes));
        if (p->acc != p->g) KN_TRY(dev_put(d->be, q->acc, p->acc, bytes));
        if (d->lp_params) KN_TRY(kn_cuda_cast_weights(d->be, NULL, d->lp, q->w_lp, q->w, p->n));
    }
    d->host_current = true;
    return NULL;
}

kn_status *trainer_dev_download(const kn_trainer *t) {
    kn_trainer_dev *d = t->dev;
    if (!d || d->host_current) return NULL;
    for (int i = 0; i < t->n_params; i++) {
        kn_param *p = &t->p[i];
        dev_param *q = &d->p[i];
        size_t bytes = sizeof(float) * (size_t)p->n;
        KN_TRY(dev_get(d->be, p->w, q->w, bytes));
        KN_TRY(dev_get(d->be, p->m, q->m, bytes));
        KN_TRY(dev_get(d->be, p->v, q->v, bytes));
        if (p->acc != p->g) KN_TRY(dev_get(d->be, p->acc, q->acc, bytes));
    }
    d->host_current = true;
    return NULL;
}

kn_status *trainer_dev_expose(const kn_trainer *t) {
    if (!t->dev) return NULL;
    KN_TRY(trainer_dev_download(t));
    t->dev->host_dirty = true;
    return NULL;
}

/* t->in's parameters (after the batch) point at the device copies; the loss scale is appended. */
static kn_status *dev_bind(kn_trainer *t, int n_batch, int *n_in) {
    kn_trainer_dev *d = t->dev;
    int n = n_batch + t->n_params + (d->lp != KN_F32);
    if (n > d->in_dev_cap) {
        uint8_t *f = realloc(d->in_dev, (size_t)n);
        if (!f) return KN_OOM((size_t)n);
        d->in_dev = f;
        d->in_dev_cap = n;
    }
    if (n > t->in_cap) {
        kn_named_tensor *in = realloc(t->in, sizeof *in * (size_t)n);
        if (!in) return KN_OOM(sizeof *in);
        t->in = in;
        t->in_cap = n;
    }
    memset(d->in_dev, 0, (size_t)n);
    for (int k = 0; k < t->n_params; k++) {
        kn_named_tensor *x = &t->in[n_batch + k];
        kn_dtype dt = d->lp_params ? d->lp : KN_F32;
        x->data = d->lp_params ? d->p[k].w_lp : (void *)d->p[k].w;
        x->dtype = dt;
        x->capacity = kn_dtype_size(dt) * (size_t)t->p[k].n;
        d->in_dev[n_batch + k] = 1;
    }
    if (d->lp != KN_F32) {
        kn_named_tensor *x = &t->in[n - 1];
        memset(x, 0, sizeof *x);
        x->name = dev_scale_name;
        x->dtype = KN_F32;
        x->data = d->scale;
        x->capacity = sizeof(float);
        d->in_dev[n - 1] = 1;
    }
    /* the caller may have written the host weights (kn_trainer_param): they win */
    if (d->host_dirty) {
        KN_TRY(trainer_dev_upload(t));
        d->host_dirty = false;
    }
    *n_in = n;
    return NULL;
}

/* The sum of squares of every parameter's buffer (g, or acc), in double. */
static kn_status *dev_sumsq(kn_trainer *t, bool acc, double *out) {
    kn_trainer_dev *d = t->dev;
    for (int i = 0; i < t->n_params; i++)
        KN_TRY(kn_cuda_sumsq(d->be, NULL, acc ? d->p[i].acc : d->p[i].g, t->p[i].n, &d->sumsq[i]));
    KN_TRY(dev_get(d->be, d->sumsq_host, d->sumsq, sizeof(double) * (size_t)t->n_params));
    double s = 0;
    for (int i = 0; i < t->n_params; i++) s += d->sumsq_host[i];
    *out = s;
    return NULL;
}

/* Data parallelism: the accumulated gradients summed over the ranks and divided by their count,
 * as autograd/trainer.c's reduce_grads does. With NCCL the device buffers are reduced in place
 * (one group of all-reduces, the buckets' parameters each), and divided on the device; with a
 * host communicator (MPI, TCP) they go through the host buckets and the host division, so the
 * result is the CPU trainer's bit for bit. */
/* Whether the update all-reduces: more than one rank, or NCCL asked for with one (a GPU check of
 * the NCCL path: the all-reduce of one rank is the identity). */
static bool dev_reduces(const kn_trainer *t) {
    return t->comm && (kn_comm_size(t->comm) > 1 || kn_comm_on_device(t->comm));
}

static double dev_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Whether the update's all-reduce overlaps the backward (the same answer on every rank). */
static bool dev_ov_active(const kn_trainer *t) {
    return dev_reduces(t) && !t->no_overlap && t->dev->lp == KN_F32 && t->o.optim.accumulate == 1 && t->n_buckets > 0;
}

static void dev_ov_free(kn_trainer *t) {
    dev_overlap *o = t->dev->ov;
    if (!o) return;
    kn_session_set_node_stream_hook(t->s, NULL, NULL);
    kn_cuda_side_free(o->side);
    for (int i = 0; o->red && i < t->n_params; i++) t->dev->be->free(t->dev->be, o->red[i]);
    free(o->red);
    free(o->param_of);
    free(o->bucket_of);
    free(o->left);
    free(o->off);
    free(o->src);
    free(o->done);
    kn_status_free(o->st);
    free(o);
    t->dev->ov = NULL;
}

static void dev_hook(void *arg, const kn_graph *g, int node, const kn_tensor *vals, void *stream);

static kn_status *dev_ov_create(kn_trainer *t) {
    kn_trainer_dev *d = t->dev;
    dev_overlap *o = d->ov = calloc(1, sizeof *o);
    if (!o) return KN_OOM(sizeof *o);
    size_t np = (size_t)t->n_params;
    o->bucket_of = malloc(sizeof(int) * np);
    o->off = malloc(sizeof(int64_t) * np);
    o->src = malloc(sizeof(void *) * np);
    o->done = malloc(np);
    if (!o->bucket_of || !o->off || !o->src || !o->done) return KN_OOM(sizeof(int64_t) * np);
    KN_TRY(kn_cuda_side_create(d->be, t->n_params, &o->side));
    if (kn_comm_on_device(t->comm)) {
        if (!(o->red = calloc(np, sizeof *o->red))) return KN_OOM(sizeof *o->red * np);
        for (int i = 0; i < t->n_params; i++)
            KN_TRY(dev_alloc(d->be, sizeof(float) * (size_t)t->p[i].n, (void **)&o->red[i]));
    }
    kn_session_set_node_stream_hook(t->s, dev_hook, t);
    return NULL;
}

/* The gradient values of the graph the session runs (trainer_grad_values). */
static kn_status *dev_ov_map(kn_trainer *t, const kn_graph *g) {
    dev_overlap *o = t->dev->ov;
    o->g = g;
    o->n_values = g->n_values;
    return trainer_grad_values(t, g, &o->param_of);
}

/* Host communicator: starts the host all-reduces of the queued buckets whose copies completed
 * (polled: never waits for the device unless wait). */
static kn_status *dev_ov_poll(kn_trainer *t, bool wait) {
    dev_overlap *o = t->dev->ov;
    if (kn_comm_on_device(t->comm)) return NULL;
    while (o->started < o->queued) {
        bool done = false;
        KN_TRY(kn_cuda_side_query(o->side, o->started, &done));
        if (!done && wait) {
            KN_TRY(kn_cuda_side_sync(o->side));
            done = true;
        }
        if (!done) break;
        int b = t->n_buckets - 1 - o->started;
        float w = (float)t->grad_weight, *q = t->bucket[b];
        /* the rank's share of an uneven global batch: the float product w * g, as the device scales */
        if (w != 1.0f)
            for (int64_t k = 0; k < t->bucket_n[b]; k++) q[k] = w * q[k];
        KN_TRY(kn_comm_allreduce_start(t->comm, o->started, q, t->bucket_n[b]));
        o->started++;
        if (o->running) o->early++;
    }
    return NULL;
}

/* Queues the buckets whose turn has come on the communication stream, after the work queued on
 * the run's stream so far (NULL: the run is over). */
static kn_status *dev_ov_queue(kn_trainer *t, void *run_stream) {
    kn_trainer_dev *d = t->dev;
    dev_overlap *o = d->ov;
    bool ordered = false;
    while (o->queued < t->n_buckets) {
        int b = t->n_buckets - 1 - o->queued;
        if (o->left[b] > 0) break;
        if (!ordered) KN_TRY(kn_cuda_side_after(o->side, run_stream));
        ordered = true;
        int first = t->bucket_first[b], n = t->bucket_first[b + 1] - first;
        for (int i = first; i < first + n; i++) {
            size_t bytes = sizeof(float) * (size_t)t->p[i].n;
            if (o->red) KN_TRY(kn_cuda_side_copy(o->side, o->red[i], d->be->device, o->src[i], d->be->device, bytes));
            else
                KN_TRY(kn_cuda_side_copy(o->side, t->bucket[b] + o->off[i], KN_DEVICE_CPU, o->src[i], d->be->device,
                                         bytes));
        }
        if (o->red) {
            if (t->grad_weight != 1.0)
                for (int i = first; i < first + n; i++)
                    KN_TRY(kn_cuda_grad_scale(d->be, kn_cuda_side_queue(o->side), o->red[i], t->p[i].n,
                                              (double)(float)t->grad_weight));
            int64_t *cnt = malloc(sizeof *cnt * (size_t)n);
            if (!cnt) return KN_OOM(sizeof *cnt * (size_t)n);
            for (int k = 0; k < n; k++) cnt[k] = t->p[first + k].n;
            kn_status *st =
                kn_comm_device_allreduce_sum_f32(t->comm, o->red + first, cnt, n, kn_cuda_side_stream(o->side));
            free(cnt);
            KN_TRY(st);
            if (o->running) o->early++;
        } else KN_TRY(kn_cuda_side_record(o->side, o->queued));
        o->queued++;
    }
    return NULL;
}

static void dev_hook(void *arg, const kn_graph *g, int node, const kn_tensor *vals, void *stream) {
    kn_trainer *t = arg;
    kn_trainer_dev *d = t->dev;
    dev_overlap *o = d ? d->ov : NULL;
    if (!o || !o->running || o->st) return;
    if (g != o->g || g->n_values != o->n_values) {
        if ((o->st = dev_ov_map(t, g))) return;
    }
    const kn_node *n = &g->nodes[node];
    bool any = false;
    for (int k = 0; k < n->n_outputs; k++) {
        int v = n->outputs[k];
        if (v < 0 || v >= o->n_values || !o->param_of[v]) continue;
        int i = o->param_of[v] - 1;
        const kn_tensor *x = &vals[v];
        /* anything else (a gradient left on the host) is taken after the run from the device buffer */
        if (o->done[i] || x->dtype != KN_F32 || x->device != d->be->device || !x->data || kn_numel(x) != t->p[i].n)
            continue;
        o->src[i] = x->data;
        o->done[i] = 1;
        o->left[o->bucket_of[i]]--;
        any = true;
    }
    if (any) o->st = dev_ov_queue(t, stream);
    if (!o->st) o->st = dev_ov_poll(t, false);
    kn_comm_progress(t->comm);
}

static kn_status *dev_ov_begin(kn_trainer *t) {
    kn_trainer_dev *d = t->dev;
    /* a new communicator (kn_trainer_set_comm) may reduce elsewhere: device or host buffers */
    int64_t early = d->ov ? d->ov->early : 0;
    double wait_s = d->ov ? d->ov->wait_s : 0;
    if (d->ov && kn_comm_on_device(t->comm) != (d->ov->red != NULL)) dev_ov_free(t);
    if (!d->ov) {
        KN_TRY(dev_ov_create(t));
        d->ov->early = early;
        d->ov->wait_s = wait_s;
    }
    dev_overlap *o = d->ov;
    int *left = realloc(o->left, sizeof(int) * (size_t)t->n_buckets);
    if (!left) return KN_OOM(sizeof(int) * (size_t)t->n_buckets);
    o->left = left;
    for (int b = 0; b < t->n_buckets; b++) {
        int64_t off = 0;
        o->left[b] = t->bucket_first[b + 1] - t->bucket_first[b];
        for (int i = t->bucket_first[b]; i < t->bucket_first[b + 1]; i++) {
            o->bucket_of[i] = b;
            o->off[i] = off;
            off += t->p[i].n;
        }
    }
    memset(o->done, 0, (size_t)t->n_params);
    o->queued = o->started = 0;
    o->reduced = false;
    kn_status_free(o->st);
    o->st = NULL;
    if (!kn_comm_on_device(t->comm)) KN_TRY(kn_error_wrap(kn_comm_allreduce_begin(t->comm, t->n_buckets), "trainer: "));
    o->running = true;
    return NULL;
}

/* After the run (also a failed one: the peers wait for the collectives): the gradients no hook saw
 * (from the device buffers the run filled), the buckets not queued yet, and the wait for all. */
static kn_status *dev_ov_finish(kn_trainer *t) {
    kn_trainer_dev *d = t->dev;
    dev_overlap *o = d->ov;
    if (!o || !o->running) return NULL;
    o->running = false;
    kn_status *st = o->st;
    o->st = NULL;
    for (int i = 0; i < t->n_params; i++)
        if (!o->done[i]) {
            o->src[i] = d->p[i].g;
            o->done[i] = 1;
            o->left[o->bucket_of[i]]--;
        }
    double t0 = dev_now();
    kn_status *s2 = dev_ov_queue(t, NULL);
    if (!s2) s2 = dev_ov_poll(t, true);
    if (kn_comm_on_device(t->comm)) {
        kn_status *w = kn_comm_device_wait(t->comm, kn_cuda_side_stream(o->side));
        if (w && !s2) s2 = w;
        else kn_status_free(w);
    } else {
        /* whatever failed, every bucket is started so that the peers' collectives match */
        while (o->started < t->n_buckets) {
            int b = t->n_buckets - 1 - o->started;
            kn_status *s3 = kn_comm_allreduce_start(t->comm, o->started, t->bucket[b], t->bucket_n[b]);
            o->started++;
            if (s3 && !s2) s2 = s3;
            else kn_status_free(s3);
        }
        kn_status *w = kn_comm_allreduce_wait(t->comm);
        if (w && !s2) s2 = w;
        else kn_status_free(w);
    }
    o->wait_s += dev_now() - t0;
    if (s2 && !st) st = s2;
    else kn_status_free(s2);
    o->reduced = !st;
    return kn_error_wrap(st, "trainer: ");
}

/* The reduced sums of an overlapped step, divided by the rank count, into the accumulators. */
static kn_status *dev_ov_take(kn_trainer *t, bool *taken) {
    kn_trainer_dev *d = t->dev;
    dev_overlap *o = d->ov;
    *taken = o && o->reduced;
    if (!*taken) return NULL;
    o->reduced = false;
    float inv = 1.0f / (float)kn_comm_size(t->comm);
    if (o->red) {
        for (int i = 0; i < t->n_params; i++) {
            KN_TRY(kn_cuda_grad_scale(d->be, NULL, o->red[i], t->p[i].n, inv));
            KN_TRY(d->be->copy(d->be, d->p[i].acc, d->be->device, o->red[i], d->be->device,
                               sizeof(float) * (size_t)t->p[i].n));
        }
        return NULL;
    }
    for (int b = 0; b < t->n_buckets; b++) {
        float *q = t->bucket[b];
        for (int i = t->bucket_first[b]; i < t->bucket_first[b + 1]; i++) {
            for (int64_t k = 0; k < t->p[i].n; k++) q[k] *= inv;
            KN_TRY(dev_put(d->be, d->p[i].acc, q, sizeof(float) * (size_t)t->p[i].n));
            q += t->p[i].n;
        }
    }
    return NULL;
}

static kn_status *dev_reduce(kn_trainer *t) {
    kn_trainer_dev *d = t->dev;
    int size = kn_comm_size(t->comm);
    if (!dev_reduces(t)) return NULL;
    bool taken = false;
    KN_TRY(dev_ov_take(t, &taken));
    if (taken) return NULL;
    if (dev_ov_active(t)) {
        /* an update without a backward on this rank (an empty share): the peers' bucket order */
        KN_TRY(dev_ov_begin(t));
        KN_TRY(dev_ov_finish(t));
        KN_TRY(dev_ov_take(t, &taken));
        if (taken) return NULL;
    }
    float inv = 1.0f / (float)size;
    if (kn_comm_on_device(t->comm)) {
        float **bufs = malloc(sizeof *bufs * (size_t)t->n_params);
        if (!bufs) return KN_OOM(sizeof *bufs * (size_t)t->n_params);
        int64_t *n = malloc(sizeof *n * (size_t)t->n_params);
        kn_status *st = n ? NULL : KN_OOM(sizeof *n * (size_t)t->n_params);
        for (int i = 0; !st && i < t->n_params; i++) {
            bufs[i] = d->p[i].acc;
            n[i] = t->p[i].n;
        }
        /* the update kernels ran to completion on their own streams: NCCL goes on the default one */
        if (!st) st = kn_comm_device_allreduce_sum_f32(t->comm, bufs, n, t->n_params, NULL);
        if (!st) st = kn_comm_device_wait(t->comm, NULL);
        free(bufs);
        free(n);
        KN_TRY(kn_error_wrap(st, "trainer: "));
        for (int i = 0; i < t->n_params; i++) KN_TRY(kn_cuda_grad_scale(d->be, NULL, d->p[i].acc, t->p[i].n, inv));
        return NULL;
    }
    for (int b = 0; b < t->n_buckets; b++) {
        float *q = t->bucket[b];
        for (int i = t->bucket_first[b]; i < t->bucket_first[b + 1]; i++) {
            KN_TRY(dev_get(d->be, q, d->p[i].acc, sizeof(float) * (size_t)t->p[i].n));
            q += t->p[i].n;
        }
    }
    KN_TRY(kn_error_wrap(kn_comm_allreduce_sum_f32(t->comm, t->bucket, t->bucket_n, t->n_buckets), "trainer: "));
    for (int b = 0; b < t->n_buckets; b++) {
        float *q = t->bucket[b];
        for (int i = t->bucket_first[b]; i < t->bucket_first[b + 1]; i++) {
            for (int64_t k = 0; k < t->p[i].n; k++) q[k] *= inv;
            KN_TRY(dev_put(d->be, d->p[i].acc, q, sizeof(float) * (size_t)t->p[i].n));
            q += t->p[i].n;
        }
    }
    return NULL;
}

static kn_status *dev_update(kn_trainer *t, double sq) {
    kn_trainer_dev *d = t->dev;
    double scale = 1.0 / (double)t->o.optim.accumulate;
    KN_TRY(dev_reduce(t));
    if (scale != 1.0) {
        for (int i = 0; i < t->n_params; i++) KN_TRY(kn_cuda_grad_scale(d->be, NULL, d->p[i].acc, t->p[i].n, scale));
        KN_TRY(dev_sumsq(t, true, &sq));
    } else if (dev_reduces(t)) KN_TRY(dev_sumsq(t, true, &sq));
    t->grad_norm = sqrt(sq);
    if (t->o.optim.max_grad_norm > 0) {
        double clip = t->o.optim.max_grad_norm / (t->grad_norm + 1e-6);
        if (clip > 1.0) clip = 1.0;
        float c = (float)clip;
        for (int i = 0; i < t->n_params; i++) KN_TRY(kn_cuda_grad_scale(d->be, NULL, d->p[i].acc, t->p[i].n, c));
    }
    const kn_optim_options *o = &t->o.optim;
    double lr = kn_optim_lr(o, t->steps);
    t->steps++;
    for (int i = 0; i < t->n_params; i++) {
        kn_param *p = &t->p[i];
        dev_param *q = &d->p[i];
        kn_cuda_optim co = {.kind = (int)o->kind,
                            .lr = lr,
                            .momentum = o->momentum,
                            .dampening = o->dampening,
                            .nesterov = o->nesterov,
                            .beta1 = o->beta1,
                            .beta2 = o->beta2,
                            .eps = o->eps,
                            .weight_decay = p->decay ? o->weight_decay : 0,
                            .step = t->steps};
        KN_TRY(kn_cuda_optim_update(d->be, NULL, &co, q->w, q->acc, q->m, q->v, p->n, NULL));
        if (q->acc != q->g) KN_TRY(kn_cuda_grad_scale(d->be, NULL, q->acc, p->n, 0.0));
        if (d->lp_params) KN_TRY(kn_cuda_cast_weights(d->be, NULL, d->lp, q->w_lp, q->w, p->n));
    }
    return NULL;
}

/* GradScaler.update after a micro-batch (found_inf as the unscale pass left it). */
static kn_status *dev_update_scale(kn_trainer *t) {
    kn_trainer_dev *d = t->dev;
    return kn_cuda_amp_update_scale(d->be, NULL, d->scale, d->inv_scale, d->tracker, d->found_inf, 2.0, 0.5,
                                    t->o.growth_interval > 0 ? t->o.growth_interval : 2000);
}

kn_status *trainer_dev_step(kn_trainer *t, int n_batch, double *loss, bool *updated) {
    kn_trainer_dev *d = t->dev;
    int n_in = 0;
    KN_TRY(dev_bind(t, n_batch, &n_in));
    for (int k = 0; k <= t->n_params; k++) t->out[k].ndim = 0;
    bool ov = dev_ov_active(t);
    if (ov) KN_TRY(dev_ov_begin(t));
    kn_status *run = kn_session_run_device(t->s, t->in, n_in, d->in_dev, t->out, t->n_params + 1, d->out_dev);
    kn_status *fin = ov ? dev_ov_finish(t) : NULL; /* also after a failed run: the peers wait for it */
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
    if (loss) *loss = l;
    if (d->lp != KN_F32) {
        int found = 0;
        KN_TRY(kn_cuda_amp_found_inf_clear(d->be, NULL, d->found_inf));
        for (int i = 0; i < t->n_params; i++)
            KN_TRY(kn_cuda_amp_unscale(d->be, NULL, d->lp_params ? d->lp : KN_F32,
                                       d->lp_params ? d->p[i].g_lp : (const void *)d->p[i].g, d->p[i].g, t->p[i].n,
                                       d->inv_scale, d->found_inf));
        KN_TRY(dev_get(d->be, &found, d->found_inf, sizeof found));
        if (found && isfinite(l)) {
            /* an overflow of the scaled gradients: the micro-batch is skipped and the scale backs off,
             * as GradScaler.step / update do; weights, moments and step count stay */
            d->skipped++;
            return dev_update_scale(t);
        }
    }
    KN_TRY(dev_sumsq(t, false, &sq));
    KN_CHECK(isfinite(l) && isfinite(sq), KN_ERR_NON_FINITE,
             "kn_trainer_step: non-finite %s at update step %lld (micro-batch %d of %d): loss %g, gradient norm %g; "
             "the parameters and optimiser state are unchanged",
             !isfinite(l) ? "loss" : "gradient", (long long)t->steps, t->micro + 1, t->o.optim.accumulate, l, sqrt(sq));
    /* a rank's share of an uneven global batch (kn_trainer_set_grad_weight), as on the CPU: the float
     * product w * g, exact in double and rounded once */
    if (t->grad_weight != 1.0)
        for (int i = 0; i < t->n_params; i++)
            KN_TRY(kn_cuda_grad_scale(d->be, NULL, d->p[i].g, t->p[i].n, (double)(float)t->grad_weight));
    for (int i = 0; i < t->n_params; i++)
        if (d->p[i].acc != d->p[i].g) KN_TRY(kn_cuda_grad_accumulate(d->be, NULL, d->p[i].acc, d->p[i].g, t->p[i].n));
    d->host_current = false;
    if (d->lp != KN_F32) KN_TRY(dev_update_scale(t));
    if (++t->micro < t->o.optim.accumulate) return NULL;
    t->micro = 0;
    KN_TRY(dev_update(t, sq));
    if (updated) *updated = true;
    return NULL;
}

kn_status *trainer_dev_step_empty(kn_trainer *t, bool *updated) {
    kn_trainer_dev *d = t->dev;
    double sq = 0;
    for (int i = 0; i < t->n_params; i++)
        if (d->p[i].acc == d->p[i].g) KN_TRY(kn_cuda_grad_scale(d->be, NULL, d->p[i].g, t->p[i].n, 0.0));
    d->host_current = false;
    if (++t->micro < t->o.optim.accumulate) return NULL;
    t->micro = 0;
    if (t->o.optim.accumulate == 1) KN_TRY(dev_sumsq(t, false, &sq));
    KN_TRY(dev_update(t, sq));
    if (updated) *updated = true;
    return NULL;
}

kn_status *trainer_dev_forward(kn_trainer *t, int n_batch, kn_named_tensor *outputs, int n_outputs) {
    kn_trainer_dev *d = t->dev;
    int n_in = 0;
    KN_TRY(dev_bind(t, n_batch, &n_in));
    return kn_error_wrap(kn_session_run_device(t->s, t->in, n_in, d->in_dev, outputs, n_outputs, NULL),
                         "kn_trainer_forward: ");
}

kn_status *trainer_dev_amp_state(const kn_trainer *t, bool *on, float *scale, int *tracker, int64_t *skipped) {
    kn_trainer_dev *d = t->dev;
    *on = d && d->lp != KN_F32;
    if (!*on) return NULL;
    *skipped = d->skipped;
    KN_TRY(dev_get(d->be, scale, d->scale, sizeof *scale));
    return dev_get(d->be, tracker, d->tracker, sizeof *tracker);
}

kn_status *trainer_dev_set_amp_state(kn_trainer *t, float scale, int tracker, int64_t skipped) {
    kn_trainer_dev *d = t->dev;
    if (!d || d->lp == KN_F32) return NULL;
    KN_CHECK(isfinite(scale) && scale > 0 && tracker >= 0, KN_ERR_INVALID_ARGUMENT,
             "trainer: loss scale %g / growth tracker %d out of range", (double)scale, tracker);
    float inv = 1.0f / scale;
    d->skipped = skipped;
    KN_TRY(dev_put(d->be, d->scale, &scale, sizeof scale));
    KN_TRY(dev_put(d->be, d->inv_scale, &inv, sizeof inv));
    return dev_put(d->be, d->tracker, &tracker, sizeof tracker);
}

#else /* no CUDA in this build */

kn_status *trainer_dev_amp_state(const kn_trainer *t, bool *on, float *scale, int *tracker, int64_t *skipped) {
    (void)t, (void)scale, (void)tracker, (void)skipped;
    *on = false;
    return NULL;
}
kn_status *trainer_dev_set_amp_state(kn_trainer *t, float scale, int tracker, int64_t skipped) {
    (void)t, (void)scale, (void)tracker, (void)skipped;
    return NULL;
}

kn_status *trainer_dev_create(kn_trainer *t) {
    (void)t;
    return kn_error(KN_ERR_NO_DEVICE, "trainer: this build has no CUDA backend");
}
void trainer_dev_free(kn_trainer *t) { (void)t; }
kn_status *trainer_dev_step(kn_trainer *t, int n_batch, double *loss, bool *updated) {
    (void)t, (void)n_batch, (void)loss, (void)updated;
    return kn_error(KN_ERR_NO_DEVICE, "trainer: this build has no CUDA backend");
}
kn_status *trainer_dev_forward(kn_trainer *t, int n_batch, kn_named_tensor *outputs, int n_outputs) {
    (void)t, (void)n_batch, (void)outputs, (void)n_outputs;
    return kn_error(KN_ERR_NO_DEVICE, "trainer: this build has no CUDA backend");
}
kn_status *trainer_dev_step_empty(kn_trainer *t, bool *updated) {
    (void)t, (void)updated;
    return kn_error(KN_ERR_NO_DEVICE, "trainer: this build has no CUDA backend");
}
kn_status *trainer_dev_download(const kn_trainer *t) {
    (void)t;
    return NULL;
}
kn_status *trainer_dev_upload(kn_trainer *t) {
    (void)t;
    return NULL;
}
kn_status *trainer_dev_expose(const kn_trainer *t) {
    (void)t;
    return NULL;
}

#endif

double kn_trainer_loss_scale(const kn_trainer *t) {
    if (!t || !t->dev || t->dev->lp == KN_F32) return 1.0;
#ifdef KILN_HAVE_CUDA
    float s = 0;
    kn_status *st = dev_get(t->dev->be, &s, t->dev->scale, sizeof s);
    if (st) {
        kn_status_free(st);
        return NAN;
    }
    return s;
#else
    return 1.0;
#endif
}

int64_t trainer_dev_overlapped(const kn_trainer *t) { return t && t->dev && t->dev->ov ? t->dev->ov->early : 0; }
double trainer_dev_comm_wait(const kn_trainer *t) { return t && t->dev && t->dev->ov ? t->dev->ov->wait_s : 0; }

int64_t kn_trainer_skipped_steps(const kn_trainer *t) { return t && t->dev ? t->dev->skipped : 0; }

/* Value v's uses (node inputs) become w. */
static void lowp_replace_uses(kn_graph *g, int v, int w, int skip_node) {
    for (int i = 0; i < g->n_nodes; i++) {
        if (i == skip_node) continue;
        kn_node *n = &g->nodes[i];
        for (int k = 0; k < n->n_inputs; k++)
            if (n->inputs[k] == v) n->inputs[k] = w;
    }
}

static int lowp_cast(kn_graph *g, int from, const char *name, kn_dtype to, kn_status **st) {
    int out = kn_graph_add_value(g, name);
    kn_attr *a = calloc(1, sizeof *a);
    if (out < 0 || !a || !(a->name = strdup("to"))) {
        free(a);
        *st = KN_OOM(0);
        return -1;
    }
    a->type = KN_ATTR_INT;
    a->i = to;
    int id = kn_graph_add_node(g, name, "Cast", "", &from, 1, &out, 1, a, 1);
    if (id < 0) {
        *st = KN_OOM(0);
        return -1;
    }
    g->values[out].type.dtype = to;
    return out;
}

/* torch.autocast's CUDA lower-precision list (matmul, mm, bmm, addmm, linear, conv*,
 * conv_transpose*, prelu, scaled_dot_product_attention) as kiln ops, with the positions of their
 * float inputs (masks and indices stay as they are): everything else is on the float32 side, as
 * torch's float32 list (softmax, log_softmax, layer_norm, group_norm, exp, log, pow, sum, the
 * losses) and beyond it (elementwise ops that torch runs in their inputs' type run in float32
 * here, as every autocast op's output is cast back). */
static unsigned lowp_autocast_inputs(int op) {
    switch (op) {
    case KN_OP_MatMul:
    case KN_OP_PRelu: return 0x3;
    case KN_OP_Gemm:
    case KN_OP_Conv:
    case KN_OP_ConvTranspose: return 0x7;
    case KN_OP_KnSdpa: return 0xf;                          /* Q, K, V, additive bias */
    case KN_OP_MsAttention: return 0x7 | 1u << 4 | 1u << 5; /* x, weights, bias, past, attention_bias */
    case KN_OP_MsMultiHeadAttention: return 0xf | 1u << 5 | 1u << 6 | 1u << 7;
    default: return 0;
    }
}

static kn_status *lowp_autocast(kn_graph *g, kn_dtype lp) {
    kn_status *st = NULL;
    int *cast_of = malloc(sizeof(int) * (size_t)(g->n_values ? g->n_values : 1)); /* value -> its lp cast */
    if (!cast_of) return KN_OOM(0);
    for (int v = 0; v < g->n_values; v++) cast_of[v] = -1;
    int n_values = g->n_values, n_nodes = g->n_nodes;
    for (int i = 0; i < n_nodes && !st; i++) {
        unsigned mask = g->nodes[i].op >= 0 ? lowp_autocast_inputs(g->nodes[i].op) : 0;
        if (!mask) continue;
        char name[512];
        for (int k = 0; k < g->nodes[i].n_inputs && k < 32 && !st; k++) {
            int v = g->nodes[i].inputs[k];
            if (!(mask >> k & 1) || v < 0) continue;
            if (v < n_values && cast_of[v] >= 0) {
                g->nodes[i].inputs[k] = cast_of[v];
                continue;
            }
            snprintf(name, sizeof name, "%s:autocast", g->values[v].name);
            int c = lowp_cast(g, v, name, lp, &st);
            if (c < 0) break;
            g->values[c].producer = g->n_nodes - 1;
            if (v < n_values) cast_of[v] = c;
            g->nodes[i].inputs[k] = c;
        }
        for (int k = 0; k < g->nodes[i].n_outputs && !st; k++) {
            int o = g->nodes[i].outputs[k];
            if (o < 0) continue;
            snprintf(name, sizeof name, "%s:lowp", g->values[o].name);
            int lo = kn_graph_add_value(g, name);
            if (lo < 0) {
                st = KN_OOM(0);
                break;
            }
            g->values[lo].type.dtype = lp;
            g->values[lo].producer = i;
            g->nodes[i].outputs[k] = lo;
            /* the float32 value the consumers and graph outputs already name */
            kn_attr *a = calloc(1, sizeof *a);
            if (!a || !(a->name = strdup("to"))) {
                free(a);
                st = KN_OOM(0);
                break;
            }
            a->type = KN_ATTR_INT;
            a->i = KN_F32;
            snprintf(name, sizeof name, "%s:autocast_out", g->values[o].name);
            int id = kn_graph_add_node(g, name, "Cast", "", &lo, 1, &o, 1, a, 1);
            if (id < 0) {
                st = KN_OOM(0);
                break;
            }
            g->values[o].producer = id;
        }
    }
    free(cast_of);
    KN_TRY(st);
    KN_TRY(kn_graph_resolve_ops(g));
    return kn_graph_toposort(g);
}

/* The whole graph in lp: parameters, float32 constants, casts to float32 and float32 batch
 * inputs. */
static kn_status *lowp_whole_graph(kn_trainer *t, kn_graph *g, kn_dtype lp) {
    kn_status *st = NULL;
    /* parameters: low-precision inputs (the float32 masters live in the trainer) */
    for (int i = 0; i < t->n_params; i++) g->values[t->p[i].value].type.dtype = lp;
    /* float32 constants: rounded once */
    for (int v = 0; v < g->n_values; v++) {
        kn_value *val = &g->values[v];
        kn_tensor *c = val->constant;
        if (!c || c->dtype != KN_F32 || c->kind != KN_KIND_TENSOR) continue;
        kn_tensor *h = NULL;
        KN_TRY(kn_tensor_new(lp, c->ndim, c->dims, &h));
        int64_t n = kn_numel(c);
        for (int64_t k = 0; k < n; k++)
            ((uint16_t *)h->data)[k] =
                lp == KN_F16 ? kn_f32_to_f16(((const float *)c->data)[k]) : kn_f32_to_bf16(((const float *)c->data)[k]);
        kn_tensor_free(c);
        val->constant = h;
        val->type.dtype = lp;
    }
    /* casts to float32 inside the graph (masks, labels turned to float) cast to lp instead */
    for (int i = 0; i < g->n_nodes; i++) {
        kn_node *n = &g->nodes[i];
        if (strcmp(n->op_type, "Cast") || n->domain[0]) continue;
        for (int k = 0; k < n->n_attrs; k++)
            if (!strcmp(n->attrs[k].name, "to") && n->attrs[k].i == KN_F32) n->attrs[k].i = lp;
        KN_TRY(kn_node_decode_params(n));
    }
    /* float32 inputs of the batch: cast on entry */
    int n_inputs = g->n_inputs;
    for (int k = 0; k < n_inputs && !st; k++) {
        int v = g->inputs[k];
        if (g->values[v].type.dtype != KN_F32) continue;
        bool param = false;
        for (int i = 0; i < t->n_params && !param; i++) param = t->p[i].value == v;
        if (param) continue;
        char name[512];
        snprintf(name, sizeof name, "%s:lowp", g->values[v].name);
        int c = lowp_cast(g, v, name, lp, &st);
        if (c >= 0) lowp_replace_uses(g, v, c, g->n_nodes - 1);
    }
    KN_TRY(st);
    return NULL;
}

kn_status *trainer_lowp_graph(kn_trainer *t, kn_graph *g, int *loss, int *dloss) {
    *dloss = *loss;
    if (t->o.precision == KN_PRECISION_FP32) return NULL;
    KN_CHECK(t->o.precision == KN_PRECISION_FP16 || t->o.precision == KN_PRECISION_BF16, KN_ERR_UNSUPPORTED,
             "trainer: precision %d is not fp32, fp16 or bf16", (int)t->o.precision);
    KN_CHECK(t->o.device != KN_DEVICE_CPU, KN_ERR_UNSUPPORTED,
             "trainer: mixed precision (fp16/bf16) needs a GPU device; the CPU trains in fp32");
    kn_dtype lp = t->o.precision == KN_PRECISION_FP16 ? KN_F16 : KN_BF16;
    kn_status *st = NULL;
    KN_TRY(t->o.autocast ? lowp_autocast(g, lp) : lowp_whole_graph(t, g, lp));
    /* the loss in float32 (reported) and scaled by the dynamic loss scale (differentiated) */
    char name[512];
    snprintf(name, sizeof name, "%s:f32", g->values[*loss].name);
    int l32 = lowp_cast(g, *loss, name, KN_F32, &st);
    KN_TRY(st);
    int sv = kn_graph_add_value(g, dev_scale_name);
    int scaled = kn_graph_add_value(g, "kiln.scaled_loss");
    if (sv < 0 || scaled < 0) return KN_OOM(0);
    g->values[sv].is_input = true;
    g->values[sv].type.dtype = KN_F32;
    kn_tensor_set_shape(&g->values[sv].type, 0, NULL);
    int *ins = realloc(g->inputs, sizeof(int) * (size_t)(g->n_inputs + 1));
    if (!ins) return KN_OOM(0);
    (g->inputs = ins)[g->n_inputs++] = sv;
    int mi[2] = {l32, sv};
    if (kn_graph_add_node(g, "kiln.scale_loss", "Mul", "", mi, 2, &scaled, 1, NULL, 0) < 0) return KN_OOM(0);
    g->values[scaled].type.dtype = KN_F32;
    /* the old loss stops being an output: the float32 copy is the one read */
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == *loss) g->outputs[i] = l32;
    g->values[*loss].is_output = false;
    *loss = l32;
    *dloss = scaled;
    return kn_graph_resolve_ops(g);
}
