// Optimiser updates and mixed-precision helpers on device buffers (kernels/cuda/kn_train_cuda.h).
// The update kernels follow autograd/optim.c operation by operation, in double, with products
// and sums rounded separately (no fused multiply-add, which the CPU build does not use either),
// so a device step gives the CPU's bits.
#include "kernels/cuda/cuda_common.h"
extern "C" {
#include "kernels/cuda/kn_train_cuda.h"
}

#define KT_THREADS 256

// a * b and a + b rounded once each: nvcc would otherwise contract a * b + c into an fma
#ifdef __CUDA_ARCH__
#define KT_MUL(a, b) __dmul_rn((a), (b))
#define KT_ADD(a, b) __dadd_rn((a), (b))
#else
__device__ static inline double kt_mul(double a, double b) {
    volatile double r = a * b; // the host compiler may contract too (-ffp-contract): a store stops it
    return r;
}
#define KT_MUL(a, b) kt_mul((a), (b))
#define KT_ADD(a, b) ((a) + (b))
#endif

// SGD as autograd/optim.c: d = g + wd * w (rounded to float); momentum buffer m (d itself at
// step 1); Nesterov d + momentum * m; w -= lr * d.
__global__ void sgd_kernel(float *w, const float *g, float *m, int64_t n, double lr, double wd, double mom, double damp,
                           bool nesterov, bool first, const int *found_inf) {
    if (found_inf && *found_inf) return;
    KN_GRID_STRIDE(i, n) {
        float d = (float)KT_ADD((double)g[i], KT_MUL(wd, (double)w[i]));
        if (mom != 0) {
            float mi = first ? d : (float)KT_ADD(KT_MUL(mom, (double)m[i]), KT_MUL(1.0 - damp, (double)d));
            m[i] = mi;
            d = nesterov ? (float)KT_ADD((double)d, KT_MUL(mom, (double)mi)) : mi;
        }
        w[i] = (float)((double)w[i] - KT_MUL(lr, (double)d));
    }
}

// Adam / AdamW as autograd/optim.c (torch's _single_tensor_adam): AdamW decays w first, Adam adds
// wd * w to the gradient; m += (1 - b1) (d - m); v = b2 v + (1 - b2) d^2;
// w -= step_size * m / (sqrt(v) / bc2_sqrt + eps).
__global__ void adam_kernel(float *w, const float *g, float *m, float *v, int64_t n, double lr, double wd, double b1,
                            double b2, double eps, double step_size, double bc2_sqrt, bool adamw,
                            const int *found_inf) {
    if (found_inf && *found_inf) return;
    KN_GRID_STRIDE(i, n) {
        double wi = (double)w[i];
        if (adamw && wd != 0) wi = (double)(float)KT_MUL(wi, 1.0 - KT_MUL(lr, wd));
        double d = adamw ? (double)g[i] : (double)(float)KT_ADD((double)g[i], KT_MUL(wd, wi));
        float mi = (float)KT_ADD((double)m[i], KT_MUL(1.0 - b1, d - (double)m[i]));
        float vi = (float)KT_ADD(KT_MUL(b2, (double)v[i]), KT_MUL(KT_MUL(1.0 - b2, d), d));
        m[i] = mi;
        v[i] = vi;
        double denom = sqrt((double)vi) / bc2_sqrt + eps;
        w[i] = (float)(wi - KT_MUL(step_size, (double)mi) / denom);
    }
}

// out = g * inv_scale in float (torch multiplies in the gradient's precision, float32 there);
// a non-finite g sets the flag. Threads only ever store 1, so the writes agree.
template <class T>
__global__ void unscale_kernel(float *out, const T *g, int64_t n, const float *inv_scale, int *found_inf) {
    float s = *inv_scale;
    bool bad = false;
    KN_GRID_STRIDE(i, n) {
        float x = kn_num<T>::ld(g[i]);
        if (!isfinite(x)) bad = true;
        out[i] = x * s;
    }
    if (bad) atomicExch(found_inf, 1);
}

__global__ void update_scale_kernel(float *scale, float *inv_scale, int *tracker, const int *found_inf, double growth,
                                    double backoff, int interval) {
    float s = *scale;
    if (*found_inf) {
        s = (float)(s * backoff);
        *tracker = 0;
    } else {
        int ok = *tracker + 1;
        if (ok == interval) {
            float ns = (float)(s * growth);
            if (isfinite(ns)) s = ns;
            *tracker = 0;
        } else {
            *tracker = ok;
        }
    }
    *scale = s;
    if (inv_scale) *inv_scale = 1.0f / s;
}

template <class T> __global__ void cast_weights_kernel(T *dst, const float *src, int64_t n) {
    KN_GRID_STRIDE(i, n) dst[i] = kn_num<T>::st(src[i]);
}

__global__ void accumulate_kernel(float *acc, const float *g, int64_t n) { KN_GRID_STRIDE(i, n) acc[i] += g[i]; }
__global__ void grad_scale_kernel(float *g, int64_t n, double factor) {
    KN_GRID_STRIDE(i, n) g[i] = (float)((double)g[i] * factor);
}

// Stage 1: block b sums g[i]^2 for i = b * 256 + t + k * grid * 256 into part[b]; stage 2: one
// thread adds the parts in order. The grid depends on n alone, so the order is fixed.
__device__ static double kt_block_sum(double v, KN_SHARED_PTR(double) sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    double r = 0;
    if (threadIdx.x == 0)
        for (int k = 0; k < (int)((blockDim.x + 31) >> 5); k++) r += sh[k];
    return r; // thread 0's
}
__global__ void sumsq_part_kernel(double *part, const float *g, int64_t n) {
    KN_SHARED(double, sh, 32);
    double acc = 0;
    KN_GRID_STRIDE(i, n) {
        double x = (double)g[i];
        acc += x * x;
    }
    double r = kt_block_sum(acc, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = r;
}
__global__ void sumsq_total_kernel(double *out, const double *part, int n_part) {
    double acc = 0;
    for (int k = 0; k < n_part; k++) acc += part[k];
    *out = acc;
}

// ---- host side ----
// The stream to queue on: the caller's, or one of our own that end() waits for.
struct kt_stream {
    const kn_backend *b;
    kn_cuda_stream *s;
    bool own;
};
static kn_status *kt_begin(const kn_backend *b, void *stream, kt_stream *t) {
    t->b = b;
    t->own = !stream;
    t->s = (kn_cuda_stream *)stream;
    if (!b || b->device != KN_DEVICE_CUDA)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_cuda_train: not a CUDA backend");
    if (t->own) {
        void *p = NULL;
        KN_TRY(b->stream_begin(b, &p));
        t->s = (kn_cuda_stream *)p;
    }
    return NULL;
}
static kn_status *kt_end(kt_stream *t, const char *what) {
    kn_status *st = NULL;
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) st = kn_cuda_err(e, NULL, what);
    if (t->own) {
        kn_status *e2 = t->b->stream_end(t->b, t->s);
        if (st) kn_status_free(e2);
        else st = e2;
    }
    return st;
}

extern "C" kn_status *kn_cuda_optim_update(const kn_backend *b, void *stream, const kn_cuda_optim *o, float *w,
                                           const float *g, float *m, float *v, int64_t n, const int *found_inf) {
    if (!o || o->kind < 0 || o->kind > 2 || o->step < 1)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_cuda_optim_update: bad optimiser (kind %d, step %lld)",
                        o ? o->kind : -1, o ? (long long)o->step : 0LL);
    if (n <= 0) return NULL;
    kt_stream t;
    KN_TRY(kt_begin(b, stream, &t));
    unsigned gr = kn_cuda_blocks(n, KT_THREADS);
    if (o->kind == 0) {
        KN_LAUNCH(sgd_kernel, gr, KT_THREADS, 0, t.s->s, w, g, m, n, o->lr, o->weight_decay, o->momentum, o->dampening,
                  o->nesterov, o->step == 1, found_inf);
    } else {
        double bc1 = 1.0 - pow(o->beta1, (double)o->step), bc2_sqrt = sqrt(1.0 - pow(o->beta2, (double)o->step));
        KN_LAUNCH(adam_kernel, gr, KT_THREADS, 0, t.s->s, w, g, m, v, n, o->lr, o->weight_decay, o->beta1, o->beta2,
                  o->eps, o->lr / bc1, bc2_sqrt, o->kind == 2, found_inf);
    }
    return kt_end(&t, "optimiser update");
}

extern "C" kn_status *kn_cuda_amp_found_inf_clear(const kn_backend *b, void *stream, int *found_inf) {
    kt_stream t;
    KN_TRY(kt_begin(b, stream, &t));
    cudaError_t e = cudaMemsetAsync(found_inf, 0, sizeof(int), t.s->s);
    kn_status *st = kt_end(&t, "clearing found_inf");
    if (e != cudaSuccess && !st) st = kn_cuda_err(e, NULL, "clearing found_inf");
    return st;
}

extern "C" kn_status *kn_cuda_amp_unscale(const kn_backend *b, void *stream, kn_dtype dtype, const void *g, float *out,
                                          int64_t n, const float *inv_scale, int *found_inf) {
    if (dtype != KN_F32 && dtype != KN_F16 && dtype != KN_BF16)
        return kn_error(KN_ERR_UNSUPPORTED,
                        "kn_cuda_amp_unscale: gradients of dtype %d (float32, float16 or bfloat16 only)", (int)dtype);
    if (n <= 0) return NULL;
    kt_stream t;
    KN_TRY(kt_begin(b, stream, &t));
    unsigned gr = kn_cuda_blocks(n, KT_THREADS);
    if (dtype == KN_F32)
        KN_LAUNCH(unscale_kernel<float>, gr, KT_THREADS, 0, t.s->s, out, (const float *)g, n, inv_scale, found_inf);
    else if (dtype == KN_F16)
        KN_LAUNCH(unscale_kernel<__half>, gr, KT_THREADS, 0, t.s->s, out, (const __half *)g, n, inv_scale, found_inf);
    else
        KN_LAUNCH(unscale_kernel<__nv_bfloat16>, gr, KT_THREADS, 0, t.s->s, out, (const __nv_bfloat16 *)g, n, inv_scale,
                  found_inf);
    return kt_end(&t, "gradient unscale");
}

extern "C" kn_status *kn_cuda_amp_update_scale(const kn_backend *b, void *stream, float *scale, float *inv_scale,
                                               int *growth_tracker, const int *found_inf, double growth, double backoff,
                                               int growth_interval) {
    if (growth_interval < 1)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_cuda_amp_update_scale: growth_interval %d", growth_interval);
    kt_stream t;
    KN_TRY(kt_begin(b, stream, &t));
    KN_LAUNCH(update_scale_kernel, 1, 1, 0, t.s->s, scale, inv_scale, growth_tracker, found_inf, growth, backoff,
              growth_interval);
    return kt_end(&t, "loss scale update");
}

extern "C" kn_status *kn_cuda_cast_weights(const kn_backend *b, void *stream, kn_dtype dtype, void *dst,
                                           const float *master, int64_t n) {
    if (dtype != KN_F16 && dtype != KN_BF16)
        return kn_error(KN_ERR_UNSUPPORTED, "kn_cuda_cast_weights: to dtype %d (float16 or bfloat16 only)", (int)dtype);
    if (n <= 0) return NULL;
    kt_stream t;
    KN_TRY(kt_begin(b, stream, &t));
    unsigned gr = kn_cuda_blocks(n, KT_THREADS);
    if (dtype == KN_F16) KN_LAUNCH(cast_weights_kernel<__half>, gr, KT_THREADS, 0, t.s->s, (__half *)dst, master, n);
    else KN_LAUNCH(cast_weights_kernel<__nv_bfloat16>, gr, KT_THREADS, 0, t.s->s, (__nv_bfloat16 *)dst, master, n);
    return kt_end(&t, "weight cast");
}

extern "C" kn_status *kn_cuda_sumsq(const kn_backend *b, void *stream, const float *g, int64_t n, double *out) {
    kt_stream t;
    KN_TRY(kt_begin(b, stream, &t));
    int parts = n > 0 ? (int)kn_cuda_blocks(n, KT_THREADS) : 1;
    if (parts > 1024) parts = 1024;
    // the parts live in the stream's workspace, free between the stream's kernels
    double *part = (double *)t.s->ws;
    if (n > 0) KN_LAUNCH(sumsq_part_kernel, (unsigned)parts, KT_THREADS, 0, t.s->s, part, g, n);
    else cudaMemsetAsync(part, 0, sizeof(double), t.s->s);
    KN_LAUNCH(sumsq_total_kernel, 1, 1, 0, t.s->s, out, (const double *)part, parts);
    return kt_end(&t, "sum of squares");
}

extern "C" kn_status *kn_cuda_grad_accumulate(const kn_backend *b, void *stream, float *acc, const float *g,
                                              int64_t n) {
    if (n <= 0) return NULL;
    kt_stream t;
    KN_TRY(kt_begin(b, stream, &t));
    KN_LAUNCH(accumulate_kernel, kn_cuda_blocks(n, KT_THREADS), KT_THREADS, 0, t.s->s, acc, g, n);
    return kt_end(&t, "gradient accumulation");
}

extern "C" kn_status *kn_cuda_grad_scale(const kn_backend *b, void *stream, float *g, int64_t n, double factor) {
    if (n <= 0) return NULL;
    kt_stream t;
    KN_TRY(kt_begin(b, stream, &t));
    KN_LAUNCH(grad_scale_kernel, kn_cuda_blocks(n, KT_THREADS), KT_THREADS, 0, t.s->s, g, n, factor);
    return kt_end(&t, "gradient scaling");
}

// ---- a side stream for the gradient communication (kn_train_cuda.h kn_cuda_side_*) ----
struct kn_cuda_side {
    const kn_backend *b;
    kn_cuda_stream *s; // one of the backend's pooled streams, held until kn_cuda_side_free
    cudaEvent_t dep;   // recorded on a run's stream, waited for by the side stream
    cudaEvent_t *ev;   // recorded on the side stream, polled by the host
    int n_ev;
};

// The error as a status, consumed: CUDA's last error would otherwise fail the run's next launch
// check and name a node that has nothing to do with it.
static kn_status *side_err(cudaError_t e, const char *what) {
    kn_status *st = kn_cuda_err(e, NULL, what);
    cudaGetLastError();
    return st;
}

extern "C" kn_status *kn_cuda_side_create(const kn_backend *b, int n_events, kn_cuda_side **out) {
    *out = NULL;
    if (!b || b->device != KN_DEVICE_CUDA) return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_cuda_side: not a CUDA backend");
    kn_cuda_side *c = (kn_cuda_side *)calloc(1, sizeof *c);
    if (!c) return KN_OOM(sizeof *c);
    c->b = b;
    c->n_ev = n_events;
    c->ev = (cudaEvent_t *)calloc((size_t)(n_events > 0 ? n_events : 1), sizeof(cudaEvent_t));
    kn_status *st = c->ev ? NULL : KN_OOM(sizeof(cudaEvent_t) * (size_t)n_events);
    void *p = NULL;
    if (!st) st = b->stream_begin(b, &p);
    c->s = (kn_cuda_stream *)p;
    // timing is not needed: events without it are the cheapest to record and wait for
    cudaError_t e = cudaSuccess;
    if (!st) e = cudaEventCreateWithFlags(&c->dep, cudaEventDisableTiming);
    for (int i = 0; !st && e == cudaSuccess && i < n_events; i++)
        e = cudaEventCreateWithFlags(&c->ev[i], cudaEventDisableTiming);
    if (!st && e != cudaSuccess) st = side_err(e, "creating the communication stream's events");
    if (st) {
        kn_cuda_side_free(c);
        return st;
    }
    *out = c;
    return NULL;
}

extern "C" void kn_cuda_side_free(kn_cuda_side *c) {
    if (!c) return;
    if (c->s) {
        kn_status *st = c->b->stream_end(c->b, c->s); // waits for what is still queued
        kn_status_free(st);
    }
    if (c->dep) cudaEventDestroy(c->dep);
    for (int i = 0; c->ev && i < c->n_ev; i++)
        if (c->ev[i]) cudaEventDestroy(c->ev[i]);
    free(c->ev);
    free(c);
}

extern "C" void *kn_cuda_side_stream(const kn_cuda_side *c) { return c ? (void *)c->s->s : NULL; }

extern "C" void *kn_cuda_side_queue(const kn_cuda_side *c) { return c ? (void *)c->s : NULL; }

extern "C" kn_status *kn_cuda_side_after(kn_cuda_side *c, void *run_stream) {
    if (!run_stream) return NULL;
    cudaError_t e = cudaEventRecord(c->dep, ((kn_cuda_stream *)run_stream)->s);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(c->s->s, c->dep, 0);
    return e == cudaSuccess ? NULL : side_err(e, "ordering the communication stream after the backward");
}

extern "C" kn_status *kn_cuda_side_copy(kn_cuda_side *c, void *dst, kn_device_kind dd, const void *src,
                                        kn_device_kind sd, size_t bytes) {
    if (!bytes) return NULL;
    cudaMemcpyKind k = sd == KN_DEVICE_CPU ? cudaMemcpyHostToDevice
        : dd == KN_DEVICE_CPU              ? cudaMemcpyDeviceToHost
                                           : cudaMemcpyDeviceToDevice;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, k, c->s->s);
    return e == cudaSuccess ? NULL : side_err(e, "a gradient copy on the communication stream");
}

extern "C" kn_status *kn_cuda_side_record(kn_cuda_side *c, int i) {
    if (i < 0 || i >= c->n_ev) return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_cuda_side: event %d of %d", i, c->n_ev);
    cudaError_t e = cudaEventRecord(c->ev[i], c->s->s);
    return e == cudaSuccess ? NULL : side_err(e, "recording an event on the communication stream");
}

extern "C" kn_status *kn_cuda_side_query(kn_cuda_side *c, int i, bool *done) {
    *done = false;
    if (i < 0 || i >= c->n_ev) return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_cuda_side: event %d of %d", i, c->n_ev);
    cudaError_t e = cudaEventQuery(c->ev[i]);
    if (e == cudaErrorNotReady) return NULL;
    if (e != cudaSuccess) return side_err(e, "polling the communication stream");
    *done = true;
    return NULL;
}

extern "C" kn_status *kn_cuda_side_sync(kn_cuda_side *c) {
    cudaError_t e = cudaStreamSynchronize(c->s->s);
    return e == cudaSuccess ? NULL : side_err(e, "waiting for the communication stream");
}
