// The CUDA backend's function table (graph/ops.h kn_backend): device selection, a caching pool
// for device memory (arenas, copies), the per-device weight cache (initializers uploaded once and
// shared by every session on the device), per-run streams each with a cuBLASLt handle,
// workspace and pinned staging, copies, CUDA graphs (a run recorded by stream capture and
// replayed: sessions replay a plan's run instead of launching its kernels one by one), the
// kernel table and supports().
// Device indices are CUDA runtime ordinals, so CUDA_VISIBLE_DEVICES applies as usual.
#include "kernels/cuda/cuda_common.h"
#include <map>
#include <mutex>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utility>
#include <vector>

#define KN_CUDA_MAX_DEVICES 16

struct kn_cuda_dev {
    int index;
    char name[64];
    kn_backend table;
    std::mutex mu;
    std::multimap<size_t, void *> free_blocks;                 // pool: rounded size -> block
    std::map<void *, size_t> live;                             // pool blocks handed out
    std::map<std::pair<const void *, size_t>, void *> weights; // (host address, bytes) -> device copy
    kn_cuda_stream *streams;                                   // idle streams
};

static std::mutex kn_cuda_open_mu;
static kn_cuda_dev *kn_cuda_devs[KN_CUDA_MAX_DEVICES];

kn_status *kn_cuda_err(cudaError_t e, const kn_node *n, const char *what) {
    if (n) {
        char nd[256];
        return kn_error(KN_ERR_RUNTIME, "cuda: %s (%s): %s", what, kn_node_desc(n, nd, sizeof nd),
                        cudaGetErrorString(e));
    }
    return kn_error(KN_ERR_RUNTIME, "cuda: %s: %s", what, cudaGetErrorString(e));
}

static kn_cuda_dev *dev_of(const kn_backend *b) { return (kn_cuda_dev *)b->impl; }

// ---- memory: a caching pool, so the steady state (same shapes run after run) never calls
// cudaMalloc/cudaFree. Sizes are rounded so near sizes reuse blocks.
static size_t pool_round(size_t n) {
    if (n < 256) return 256;
    if (n < ((size_t)1 << 20)) return (n + 255) & ~(size_t)255;
    return (n + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
}

static void pool_trim(kn_cuda_dev *d) { // under d->mu
    for (auto &fb : d->free_blocks) cudaFree(fb.second);
    d->free_blocks.clear();
}

static void *cuda_alloc(const kn_backend *b, size_t bytes) {
    kn_cuda_dev *d = dev_of(b);
    size_t n = pool_round(bytes);
    std::lock_guard<std::mutex> g(d->mu);
    auto it = d->free_blocks.lower_bound(n);
    // reuse a block of the same size, or up to twice as big
    if (it != d->free_blocks.end() && it->first <= 2 * n) {
        void *p = it->second;
        d->live[p] = it->first;
        d->free_blocks.erase(it);
        return p;
    }
    cudaSetDevice(d->index);
    void *p = NULL;
    if (cudaMalloc(&p, n) != cudaSuccess) {
        cudaGetLastError(); // clear the (non-sticky) allocation error
        pool_trim(d);
        if (cudaMalloc(&p, n) != cudaSuccess) {
            cudaGetLastError();
            return NULL;
        }
    }
    d->live[p] = n;
    return p;
}

static void cuda_free(const kn_backend *b, void *p) {
    if (!p) return;
    kn_cuda_dev *d = dev_of(b);
    std::lock_guard<std::mutex> g(d->mu);
    auto it = d->live.find(p);
    if (it == d->live.end()) return; // not ours (never happens: the executor frees what it allocated)
    d->free_blocks.insert(std::make_pair(it->second, p));
    d->live.erase(it);
}

static size_t cuda_free_bytes(const kn_backend *b) {
    size_t fr = 0, total = 0;
    cudaSetDevice(dev_of(b)->index);
    if (cudaMemGetInfo(&fr, &total) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return fr;
}

// ---- weights: uploaded once per (host address, size) and device, kept until the model goes ----
static kn_status *cuda_weights(const kn_backend *b, const void *host, size_t bytes, const void **dev) {
    kn_cuda_dev *d = dev_of(b);
    *dev = NULL;
    if (!bytes) return NULL;
    std::lock_guard<std::mutex> g(d->mu);
    auto key = std::make_pair(host, bytes);
    auto it = d->weights.find(key);
    if (it != d->weights.end()) {
        *dev = it->second;
        return NULL;
    }
    cudaSetDevice(d->index);
    void *p = NULL;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        cudaGetLastError();
        pool_trim(d);
        if (cudaMalloc(&p, bytes) != cudaSuccess) {
            cudaGetLastError();
            size_t fr = 0, total = 0;
            cudaMemGetInfo(&fr, &total);
            return kn_error(KN_ERR_OUT_OF_MEMORY, "cuda:%d out of memory uploading a weight: %zu bytes asked, %zu free",
                            d->index, bytes, fr);
        }
    }
    // cudaMemcpy from pageable memory may return before the DMA lands, and the runs' streams are
    // non-blocking (they do not wait for the legacy stream): wait for the upload explicitly.
    cudaError_t e = cudaMemcpyAsync(p, host, bytes, cudaMemcpyHostToDevice, cudaStreamLegacy);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cudaStreamLegacy);
    if (e != cudaSuccess) {
        cudaFree(p);
        return kn_cuda_err(e, NULL, "uploading a weight");
    }
    d->weights[key] = p;
    *dev = p;
    return NULL;
}

static void cuda_forget(const kn_backend *b, const void *host) {
    kn_cuda_dev *d = dev_of(b);
    std::lock_guard<std::mutex> g(d->mu);
    auto it = d->weights.lower_bound(std::make_pair(host, (size_t)0));
    while (it != d->weights.end() && it->first.first == host) {
        cudaSetDevice(d->index);
        cudaFree(it->second);
        it = d->weights.erase(it);
    }
}

extern "C" void kn_cuda_forget_all(const void *host) {
    for (int i = 0; i < KN_CUDA_MAX_DEVICES; i++) {
        kn_cuda_dev *d;
        {
            std::lock_guard<std::mutex> g(kn_cuda_open_mu);
            d = kn_cuda_devs[i];
        }
        if (d) cuda_forget(&d->table, host);
    }
}

// ---- streams ----
static kn_status *cuda_stream_begin(const kn_backend *b, void **out) {
    kn_cuda_dev *d = dev_of(b);
    *out = NULL;
    cudaSetDevice(d->index);
    {
        std::lock_guard<std::mutex> g(d->mu);
        if (d->streams) {
            kn_cuda_stream *s = d->streams;
            d->streams = s->next;
            s->next = NULL;
            *out = s;
            return NULL;
        }
    }
    kn_cuda_stream *s = new kn_cuda_stream();
    memset(s, 0, sizeof *s);
    s->dev = d;
    cudaError_t e = cudaStreamCreateWithFlags(&s->s, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        delete s;
        return kn_cuda_err(e, NULL, "creating a stream");
    }
    if (cublasLtCreate(&s->lt) != CUBLAS_STATUS_SUCCESS) {
        cudaStreamDestroy(s->s);
        delete s;
        return kn_error(KN_ERR_RUNTIME, "cuda: cublasLtCreate failed");
    }
    s->ws_bytes = KN_CUDA_WS_BYTES;
    if (cudaMalloc(&s->ws, s->ws_bytes) != cudaSuccess ||
        cudaMalloc((void **)&s->dev_err, sizeof(int)) != cudaSuccess ||
        cudaHostAlloc((void **)&s->err_pin, sizeof(int), cudaHostAllocDefault) != cudaSuccess ||
        cudaMemsetAsync(s->dev_err, 0, sizeof(int), s->s) != cudaSuccess) {
        cudaGetLastError();
        if (s->ws) cudaFree(s->ws);
        if (s->dev_err) cudaFree(s->dev_err);
        if (s->err_pin) cudaFreeHost(s->err_pin);
        cublasLtDestroy(s->lt);
        cudaStreamDestroy(s->s);
        delete s;
        return kn_error(KN_ERR_OUT_OF_MEMORY,
                        "cuda:%d out of memory for the cuBLASLt workspace: %zu bytes asked, %zu free", d->index,
                        (size_t)KN_CUDA_WS_BYTES, cuda_free_bytes(b));
    }
    *out = s;
    return NULL;
}

static void graph_abort(kn_cuda_stream *s);

// The run's one wait: the error word of its checking kernels (if any ran) is queued to pinned
// memory first, so one stream synchronisation brings it with the outputs queued by
// copy_to_host_later, which are then copied on to the caller's memory.
static kn_status *cuda_stream_end(const kn_backend *b, void *p) {
    kn_cuda_stream *s = (kn_cuda_stream *)p;
    if (!s) return NULL;
    kn_cuda_dev *d = dev_of(b);
    cudaSetDevice(d->index);
    if (s->capture) graph_abort(s); // a recorded run that failed before graph_end
    cudaError_t e = cudaSuccess;
    if (s->n_err_nodes) {
        // read the verdict, and clear it for the stream's next run
        *s->err_pin = 0;
        e = cudaMemcpyAsync(s->err_pin, s->dev_err, sizeof(int), cudaMemcpyDeviceToHost, s->s);
        if (e == cudaSuccess) e = cudaMemsetAsync(s->dev_err, 0, sizeof(int), s->s);
        if (e != cudaSuccess) cudaGetLastError();
    }
    kn_status *st = e == cudaSuccess ? NULL : kn_cuda_err(e, NULL, "reading the kernels' error word");
    e = cudaStreamSynchronize(s->s);
    if (!st && e != cudaSuccess) st = kn_cuda_err(e, NULL, "a kernel of this run failed");
    if (!st)
        for (int i = 0; i < s->n_later; i++) memcpy(s->later[i].dst, s->later[i].pin, s->later[i].n);
    s->n_later = 0;
    s->pinned_used = 0;
    if (!st && s->n_err_nodes) {
        int code = *s->err_pin;
        if (code > 0) {
            char nd[256];
            if (code <= s->n_err_nodes)
                st = kn_error(KN_ERR_RUNTIME,
                              "%s: an index or a length is out of range (found on cuda:%d; the run's results are void)",
                              kn_node_desc(s->err_nodes[code - 1], nd, sizeof nd), d->index);
            else
                st = kn_error(KN_ERR_RUNTIME,
                              "an index is out of range in a Gather (found on cuda:%d; the run's results are void)",
                              d->index);
        }
    }
    s->n_err_nodes = 0;
    if (s->held) return st; // a graph's: it stays with the graph
    std::lock_guard<std::mutex> g(d->mu);
    s->next = d->streams;
    d->streams = s;
    return st;
}

// Remember a copy from pinned staging to dst for stream_end to make after its wait.
static kn_status *later_push(kn_cuda_stream *s, void *dst, const char *pin, size_t n) {
    if (s->n_later == s->cap_later) {
        int cap = s->cap_later ? 2 * s->cap_later : 16;
        kn_cuda_later *l = (kn_cuda_later *)realloc(s->later, sizeof(kn_cuda_later) * (size_t)cap);
        if (!l) return KN_OOM(sizeof(kn_cuda_later) * (size_t)cap);
        s->later = l;
        s->cap_later = cap;
    }
    s->later[s->n_later++] = kn_cuda_later{dst, pin, n};
    return NULL;
}

// Room for n bytes in the stream's pinned staging, reused from the start by each run (stream_end
// waited for the last one's copies). Staging handed out may still be read or written by queued
// copies, so when full a larger buffer replaces it without a wait, and the old one is retired.
static kn_status *staging(kn_cuda_stream *s, size_t n, char **out) {
    if (s->pinned_used + n > s->pinned_cap) {
        size_t need = s->pinned_used + n, cap = s->pinned_cap * 2 > need ? s->pinned_cap * 2 : need;
        if (cap < ((size_t)1 << 20)) cap = (size_t)1 << 20;
        char **r = s->pinned ? (char **)realloc(s->retired, sizeof(char *) * (size_t)(s->n_retired + 1)) : NULL;
        if (s->pinned && !r) return KN_OOM(sizeof(char *) * (size_t)(s->n_retired + 1));
        char *fresh = NULL;
        cudaError_t e = cudaHostAlloc((void **)&fresh, cap, cudaHostAllocDefault);
        if (e != cudaSuccess) {
            cudaGetLastError();
            if (r) s->retired = r;
            return kn_cuda_err(e, NULL, "allocating pinned staging");
        }
        if (s->pinned) {
            s->retired = r;
            s->retired[s->n_retired++] = s->pinned;
        }
        s->pinned = fresh;
        s->pinned_cap = cap;
        s->pinned_used = 0;
    }
    *out = s->pinned + s->pinned_used;
    s->pinned_used += (n + 255) & ~(size_t)255;
    return NULL;
}

static kn_status *cuda_copy(const kn_backend *b, void *dst, kn_device_kind dd, const void *src, kn_device_kind sd,
                            size_t n);

// ---- CUDA graphs: one run recorded by stream capture, replayed on the stream it was recorded on
// (whose cuBLASLt workspace and error word the recorded kernels point at) ----
struct kn_cuda_staged {
    const void *host; // the run's host address
    char *pin;        // its place in the graph's pinned buffer
    size_t n;
    bool to_host;
};
struct kn_cuda_graph {
    kn_cuda_stream *s;
    cudaGraphExec_t exec;
    char *pin; // pinned staging, bump-allocated while recording, then fixed
    size_t pin_cap, pin_used;
    std::vector<kn_cuda_staged> staged;
    const kn_node *err_nodes[KN_CUDA_ERR_NODES];
    int n_err_nodes;
};

static void graph_destroy(kn_cuda_graph *g) {
    if (!g) return;
    if (g->exec) cudaGraphExecDestroy(g->exec);
    if (g->pin) cudaFreeHost(g->pin);
    delete g;
}

// Copies while recording: through the recording's pinned buffer, with no wait (a wait would end
// the capture); copies to the host are completed by graph_end once the graph has run.
static kn_status *graph_copy(kn_cuda_stream *s, void *dst, kn_device_kind dd, const void *src, kn_device_kind sd,
                             size_t n) {
    kn_cuda_graph *g = s->capture;
    cudaError_t e;
    if (sd != KN_DEVICE_CPU && dd != KN_DEVICE_CPU) {
        e = cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, s->s);
    } else {
        size_t room = (n + 255) & ~(size_t)255;
        if (g->pin_used + room > g->pin_cap)
            return kn_error(KN_ERR_UNSUPPORTED, "cuda graph: %zu bytes of pinned staging reserved, %zu more needed",
                            g->pin_cap, g->pin_used + room - g->pin_cap);
        char *pin = g->pin + g->pin_used;
        g->pin_used += room;
        bool to_host = dd == KN_DEVICE_CPU;
        g->staged.push_back(kn_cuda_staged{to_host ? dst : src, pin, n, to_host});
        if (to_host) {
            e = cudaMemcpyAsync(pin, src, n, cudaMemcpyDeviceToHost, s->s);
        } else {
            memcpy(pin, src, n);
            e = cudaMemcpyAsync(dst, pin, n, cudaMemcpyHostToDevice, s->s);
        }
    }
    return e == cudaSuccess ? NULL : kn_cuda_err(e, NULL, "recording a copy into a CUDA graph");
}

static void graph_abort(kn_cuda_stream *s) {
    cudaGraph_t cg = NULL;
    cudaStreamEndCapture(s->s, &cg);
    cudaGetLastError();
    if (cg) cudaGraphDestroy(cg);
    graph_destroy(s->capture);
    s->capture = NULL;
}

static kn_status *cuda_graph_begin(const kn_backend *b, void *stream, size_t staging_bytes) {
    kn_cuda_stream *s = (kn_cuda_stream *)stream;
    cudaSetDevice(dev_of(b)->index);
    kn_cuda_graph *g = new kn_cuda_graph();
    g->pin_cap = staging_bytes < 256 ? 256 : staging_bytes;
    // No wait first: work queued before the capture begins is not recorded (and a fresh run's
    // stream has none but its creation's memset). Thread-local capture: other threads' sessions
    // may keep allocating while this one records.
    cudaError_t e = cudaHostAlloc((void **)&g->pin, g->pin_cap, cudaHostAllocDefault);
    if (e == cudaSuccess) e = cudaStreamBeginCapture(s->s, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        cudaGetLastError();
        graph_destroy(g);
        return kn_cuda_err(e, NULL, "beginning a CUDA graph capture");
    }
    s->capture = g;
    return NULL;
}

static kn_status *cuda_graph_end(const kn_backend *b, void *stream, void **out) {
    kn_cuda_stream *s = (kn_cuda_stream *)stream;
    kn_cuda_graph *g = s->capture;
    *out = NULL;
    if (!g) return kn_error(KN_ERR_RUNTIME, "cuda graph: the stream is not recording");
    cudaSetDevice(dev_of(b)->index);
    cudaGraph_t cg = NULL;
    cudaError_t e = cudaStreamEndCapture(s->s, &cg);
    s->capture = NULL;
    if (e == cudaSuccess) e = cudaGraphInstantiate(&g->exec, cg, 0);
    if (cg) cudaGraphDestroy(cg);
    if (e != cudaSuccess) {
        cudaGetLastError();
        graph_destroy(g);
        return kn_cuda_err(e, NULL, "ending a CUDA graph capture");
    }
    // the recording ran nothing: its first launch is the recorded run's work, whose copies to the
    // host stream_end completes after the run's one wait (the graph outlives it: the caller keeps it)
    e = cudaGraphLaunch(g->exec, s->s);
    if (e != cudaSuccess) {
        cudaGetLastError();
        graph_destroy(g);
        return kn_cuda_err(e, NULL, "running a CUDA graph");
    }
    for (auto &c : g->staged) {
        kn_status *st = c.to_host ? later_push(s, (void *)c.host, c.pin, c.n) : NULL;
        if (st) {
            cudaStreamSynchronize(s->s); // the launch reads the graph's staging: let it finish
            s->n_later = 0;
            graph_destroy(g);
            return st;
        }
    }
    g->s = s;
    s->held = true;
    g->n_err_nodes = s->n_err_nodes;
    memcpy(g->err_nodes, s->err_nodes, sizeof g->err_nodes);
    *out = g;
    return NULL;
}

static void *cuda_graph_pin(const kn_backend *b, void *graph, const void *host, size_t n, bool to_host) {
    kn_cuda_graph *g = (kn_cuda_graph *)graph;
    for (auto &c : g->staged)
        if (c.host == host && c.n == n && c.to_host == to_host) return c.pin;
    return NULL;
}

static kn_status *cuda_graph_replay(const kn_backend *b, void *graph) {
    kn_cuda_graph *g = (kn_cuda_graph *)graph;
    kn_cuda_stream *s = g->s;
    cudaSetDevice(dev_of(b)->index);
    cudaError_t e = cudaGraphLaunch(g->exec, s->s);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return kn_cuda_err(e, NULL, "launching a CUDA graph");
    }
    // the recorded kernels' error word: checked by stream_end (which keeps a held stream)
    s->n_err_nodes = g->n_err_nodes;
    memcpy(s->err_nodes, g->err_nodes, sizeof g->err_nodes);
    return cuda_stream_end(b, s);
}

static void cuda_graph_free(const kn_backend *b, void *graph) {
    kn_cuda_graph *g = (kn_cuda_graph *)graph;
    if (!g) return;
    kn_cuda_dev *d = dev_of(b);
    kn_cuda_stream *s = g->s;
    cudaSetDevice(d->index);
    if (s) cudaStreamSynchronize(s->s);
    graph_destroy(g);
    if (s) {
        s->held = false;
        std::lock_guard<std::mutex> lk(d->mu);
        s->next = d->streams;
        d->streams = s;
    }
}

static kn_status *cuda_copy_async(const kn_backend *b, void *dst, kn_device_kind dd, const void *src, kn_device_kind sd,
                                  size_t n, void *stream) {
    if (!n) return NULL;
    kn_cuda_stream *s = (kn_cuda_stream *)stream;
    if (!s) return cuda_copy(b, dst, dd, src, sd, n);
    cudaSetDevice(dev_of(b)->index);
    cudaError_t e;
    if (sd == KN_DEVICE_CPU && dd == KN_DEVICE_CPU) {
        memmove(dst, src, n);
        return NULL;
    } else if (s->capture) {
        return graph_copy(s, dst, dd, src, sd, n);
    } else if (sd == KN_DEVICE_CPU) {
        // the source is copied out now: the caller may free or change it as soon as we return
        char *pin;
        KN_TRY(staging(s, n, &pin));
        memcpy(pin, src, n);
        e = cudaMemcpyAsync(dst, pin, n, cudaMemcpyHostToDevice, s->s);
    } else if (dd == KN_DEVICE_CPU) {
        char *pin;
        KN_TRY(staging(s, n, &pin));
        // a wait mid-run: the host reads a device result now (a node on the CPU, a shape that
        // depends on data); a run's outputs come back by copy_to_host_later instead
        e = cudaMemcpyAsync(pin, src, n, cudaMemcpyDeviceToHost, s->s);
        if (e == cudaSuccess) e = cudaStreamSynchronize(s->s);
        if (e == cudaSuccess) memcpy(dst, pin, n);
    } else {
        e = cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, s->s);
    }
    return e == cudaSuccess ? NULL : kn_cuda_err(e, NULL, "copying between the host and the device");
}

// A run's result to the host, completed by stream_end: into the pinned staging now, on to dst
// after the run's one wait (a recording stages it in the graph's own buffer, as graph_copy does).
static kn_status *cuda_copy_to_host_later(const kn_backend *b, void *dst, const void *src, size_t n, void *stream) {
    if (!n) return NULL;
    kn_cuda_stream *s = (kn_cuda_stream *)stream;
    if (!s) return cuda_copy(b, dst, KN_DEVICE_CPU, src, b->device, n);
    cudaSetDevice(dev_of(b)->index);
    if (s->capture) return graph_copy(s, dst, KN_DEVICE_CPU, src, b->device, n);
    char *pin;
    KN_TRY(staging(s, n, &pin));
    cudaError_t e = cudaMemcpyAsync(pin, src, n, cudaMemcpyDeviceToHost, s->s);
    if (e != cudaSuccess) return kn_cuda_err(e, NULL, "copying a result to the host");
    return later_push(s, dst, pin, n);
}

// Synchronous: the bytes are in place on return, whichever direction (a pageable host-to-device
// cudaMemcpy alone may return before its DMA completes).
static kn_status *cuda_copy(const kn_backend *b, void *dst, kn_device_kind dd, const void *src, kn_device_kind sd,
                            size_t n) {
    if (!n) return NULL;
    cudaSetDevice(dev_of(b)->index);
    cudaError_t e = cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, cudaStreamLegacy);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cudaStreamLegacy);
    return e == cudaSuccess ? NULL : kn_cuda_err(e, NULL, "copying");
}

// ---- kernels, supports() and host inputs: all from the op list, cuda_ops.def ----
struct kn_cuda_op_row {
    kn_kernel_fn kernel;
    bool (*supports)(const kn_node *n, const kn_tensor *const *in, int n_in);
    uint64_t host_inputs;
};
static kn_cuda_op_row kn_cuda_ops[KN_OP_COUNT];
static std::once_flag kn_cuda_ops_once;

static void fill_ops() {
#define KN_CUDA_OP(op, sup, host) kn_cuda_ops[KN_OP_##op] = {kn_cuda_##op, kn_cuda_##sup##_supports, (uint64_t)(host)};
#include "kernels/cuda/cuda_ops.def"
#undef KN_CUDA_OP
}

static const kn_cuda_op_row *cuda_op(int op) {
    std::call_once(kn_cuda_ops_once, fill_ops);
    return op >= 0 && op < KN_OP_COUNT && kn_cuda_ops[op].kernel ? &kn_cuda_ops[op] : NULL;
}

static kn_kernel_fn cuda_kernel(const kn_backend *b, int op) {
    const kn_cuda_op_row *r = cuda_op(op);
    return r ? r->kernel : NULL;
}

// KILN_CUDA_DISABLE=Op,Op,...: those ops stay on the CPU, to bisect a wrong result to one kernel
static bool cuda_disabled(int op) {
    static std::once_flag once;
    static bool off[KN_OP_COUNT];
    std::call_once(once, [] {
        const char *e = getenv("KILN_CUDA_DISABLE");
        for (int k = 0; e && k < KN_OP_COUNT; k++) {
            size_t l = strlen(kn_op_table[k].name);
            for (const char *p = strstr(e, kn_op_table[k].name); p; p = strstr(p + 1, kn_op_table[k].name))
                if ((p == e || p[-1] == ',') && (p[l] == 0 || p[l] == ',')) off[k] = true;
        }
    });
    return op >= 0 && op < KN_OP_COUNT && off[op];
}

static bool cuda_supports(const kn_backend *b, const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (!cuda_kernel(b, n->op) || n->n_implicit || cuda_disabled(n->op)) return false;
    for (int k = 0; k < n_in; k++)
        if (in[k] && (in[k]->kind != KN_KIND_TENSOR || in[k]->dtype == KN_STRING || in[k]->ndim < 0)) return false;
    return cuda_op(n->op)->supports(n, in, n_in);
}

// Inputs read on the host: shape-like arguments, known before the run in practice (the planner
// computes them), so leaving them there costs no copy and no device sync.
static uint64_t cuda_host_inputs(const kn_backend *b, const kn_node *n) {
    const kn_cuda_op_row *r = cuda_op(n->op);
    return r ? r->host_inputs : 0;
}

extern "C" kn_status *kn_cuda_backend_open(int index, const kn_backend **out) {
    *out = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        cudaGetLastError();
        return kn_error(KN_ERR_NO_DEVICE, "no CUDA device: cuda:%d requested (%s)", index,
                        e != cudaSuccess ? cudaGetErrorString(e) : "the CUDA runtime sees no device");
    }
    if (index < 0 || index >= count || index >= KN_CUDA_MAX_DEVICES)
        return kn_error(KN_ERR_NO_DEVICE, "no CUDA device cuda:%d (%d visible)", index, count);
    std::lock_guard<std::mutex> g(kn_cuda_open_mu);
    if (!kn_cuda_devs[index]) {
        cudaDeviceProp p;
        e = cudaGetDeviceProperties(&p, index);
        if (e != cudaSuccess) return kn_cuda_err(e, NULL, "reading device properties");
        // sm_90a code (and its arch-specific PTX) loads on compute capability 9.0 alone: refuse
        // other GPUs here instead of failing every launch with "no kernel image"
        if (p.major != 9 || p.minor != 0)
            return kn_error(KN_ERR_NO_DEVICE, "cuda:%d is %s (sm_%d%d); this build has kernels for sm_90a only", index,
                            p.name, p.major, p.minor);
        kn_cuda_dev *d = new kn_cuda_dev();
        d->index = index;
        snprintf(d->name, sizeof d->name, "cuda:%d", index);
        d->streams = NULL;
        kn_backend t;
        memset(&t, 0, sizeof t);
        t.name = d->name;
        t.device = KN_DEVICE_CUDA;
        t.kernel = cuda_kernel;
        t.supports = cuda_supports;
        t.alloc = cuda_alloc;
        t.free = cuda_free;
        t.copy = cuda_copy;
        t.impl = d;
        t.host_inputs = cuda_host_inputs;
        t.stream_begin = cuda_stream_begin;
        t.stream_end = cuda_stream_end;
        t.copy_async = cuda_copy_async;
        t.copy_to_host_later = cuda_copy_to_host_later;
        t.weights = cuda_weights;
        t.forget = cuda_forget;
        t.free_bytes = cuda_free_bytes;
        t.graph_begin = cuda_graph_begin;
        t.graph_end = cuda_graph_end;
        t.graph_pin = cuda_graph_pin;
        t.graph_replay = cuda_graph_replay;
        t.graph_free = cuda_graph_free;
        t.greedy = kn_cuda_greedy;
        t.topk = kn_cuda_topk;
        d->table = t;
        kn_cuda_devs[index] = d;
    }
    *out = &kn_cuda_devs[index]->table;
    return NULL;
}

extern "C" const kn_backend *kn_cuda_backend(int device_index) {
    const kn_backend *b = NULL;
    kn_status *st = kn_cuda_backend_open(device_index, &b);
    if (st) kn_status_free(st);
    return b;
}

// ---- helpers shared by the kernel files ----
void kn_cuda_bcast_init(kn_bcast *b, const kn_tensor *out, const kn_tensor *const *ops, int n_ops) {
    memset(b, 0, sizeof *b);
    b->nd = out->ndim;
    for (int d = 0; d < out->ndim; d++) b->dims[d] = out->dims[d];
    for (int k = 0; k < n_ops; k++) {
        const kn_tensor *t = ops[k];
        int64_t stride = 1;
        for (int d = t->ndim - 1; d >= 0; d--) {
            int od = out->ndim - t->ndim + d;
            b->st[k][od] = t->dims[d] == 1 ? 0 : stride;
            stride *= t->dims[d];
        }
    }
}
