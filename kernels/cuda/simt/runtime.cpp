// The CUDA runtime API for kiln's SIMT interpreter: one fake device ("kiln SIMT interpreter",
// sm_90), device memory as host memory (so AddressSanitizer sees kernels' out-of-bounds
// accesses), copies and memsets done at once, streams and events as handles whose work is always
// complete (kernels run synchronously at launch), and CUDA's error model: the last error per
// thread, with the interpreter's detailed message as the error string of a failed launch.
// Stream capture records instead: a capturing stream's launches, async copies and memsets become
// a list replayed in order by cudaGraphLaunch, and the calls CUDA forbids during a capture (a
// synchronisation, work on the legacy stream) fail with CUDA's capture errors and invalidate it.
//
// State, as the CUDA runtime has it: the table of live allocations (device and pinned host) for
// cudaMemGetInfo and the device-pointer checks, per-kernel dynamic shared memory limits, the
// captures in progress per stream, and per OS thread the last error and current device.
// Per OS thread too: the count of host synchronisations (kn_sim_host_syncs), for tests asserting
// that a run waits for the device once: every call that makes the host wait for the device on a
// GPU counts, though here the work is already done (stream, event and device synchronisations,
// cudaFree and cudaFreeHost, which synchronise the device, cudaMemcpy, and an async copy between
// the device and pageable host memory, which CUDA completes or stages before returning).
// Also the bytes copied device to host (KILN_SIM_COPYSTATS=1 prints them at exit).
#include <atomic>
#include <cuda_runtime.h>
#include <map>
#include <memory>
#include <mutex>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <thread>
#include <time.h>
#include <vector>

namespace {
const size_t kTotalMem = (size_t)80 << 30; // what cudaMemGetInfo reports as the device's size

struct alloc_info {
    size_t bytes;
    bool pinned;
};
std::mutex mu;
std::map<uintptr_t, alloc_info> allocs; // base -> size
size_t device_bytes;
std::map<const void *, int> dyn_smem_max;

// ---- stream capture: recorded work, owned by the capture, then by its graph and executables ----
struct cap_op {
    cudaError_t (*run)(void *);
    void *ctx;
    void (*del)(void *);
};
struct op_list {
    std::vector<cap_op> v;
    // stream-ordered allocations made while capturing: a graph's memory nodes, whose addresses
    // the recorded kernels keep for the graph's lifetime (freed with it, never under mu)
    std::vector<void *> mem;
    ~op_list();
};
struct capture {
    std::shared_ptr<op_list> ops = std::make_shared<op_list>();
    bool invalid = false;
    cudaStreamCaptureMode mode;
    std::thread::id owner;
};
std::map<cudaStream_t, capture *> captures; // under mu
thread_local int strict_captures;           // global/thread-local mode captures begun on this thread

thread_local cudaError_t last_error = cudaSuccess;
thread_local std::string last_msg;
thread_local cudaError_t last_msg_code = cudaSuccess;
thread_local int cur_device;
thread_local long long host_syncs;

cudaError_t set_err(cudaError_t e, const char *msg = NULL) {
    if (e != cudaSuccess) {
        last_error = e;
        if (msg) {
            last_msg = msg;
            last_msg_code = e;
        } else last_msg_code = cudaSuccess;
    }
    return e;
}

// A call that would synchronise with (or implicitly depend on) a capturing stream: CUDA fails it
// and invalidates the capture. s: the stream the call names (NULL: the whole device).
cudaError_t capture_violation(cudaStream_t s, const char *what) {
    std::lock_guard<std::mutex> g(mu);
    char msg[256];
    auto it = s ? captures.find(s) : captures.end();
    if (it != captures.end()) {
        it->second->invalid = true;
        snprintf(msg, sizeof msg, "%s on a stream that is being captured (a CUDA graph records work, it cannot wait)",
                 what);
        return set_err(cudaErrorStreamCaptureUnsupported, msg);
    }
    if (strict_captures > 0 && (!s || s == cudaStreamLegacy)) {
        for (auto &c : captures)
            if (c.second->owner == std::this_thread::get_id() && c.second->mode != cudaStreamCaptureModeRelaxed)
                c.second->invalid = true;
        snprintf(msg, sizeof msg, "%s while this thread captures a stream (an implicit synchronisation)", what);
        return set_err(s ? cudaErrorStreamCaptureImplicit : cudaErrorStreamCaptureUnsupported, msg);
    }
    return cudaSuccess;
}
bool is_capturing(cudaStream_t s) {
    std::lock_guard<std::mutex> g(mu);
    return captures.count(s) != 0;
}
cudaError_t record(cudaStream_t s, cudaError_t (*run)(void *), void *ctx, void (*del)(void *)) {
    std::lock_guard<std::mutex> g(mu);
    auto it = captures.find(s);
    if (it == captures.end()) {
        del(ctx);
        return set_err(cudaErrorStreamCaptureUnmatched, "recording work on a stream that is not capturing");
    }
    it->second->ops->v.push_back(cap_op{run, ctx, del});
    return cudaSuccess;
}
struct copy_rec {
    void *dst;
    const void *src;
    size_t n;
    cudaMemcpyKind kind;
    int value; // memset
};

// An event: a live handle (a destroyed or foreign one fails as CUDA's invalid handle does), its
// flags, and whether it was recorded (work is done at once, so a recorded event has completed:
// cudaEventQuery and cudaStreamWaitEvent never wait, and an event never recorded counts as
// complete, as in CUDA).
struct kn_event_impl {
    unsigned magic;
    unsigned flags;
    bool recorded;
    double t;
    std::map<cudaStream_t, uint64_t> clock; // the work it follows, per stream (stream order)
};
const unsigned kn_event_magic = 0x6b6e6576u;
kn_event_impl *event_of(cudaEvent_t e) {
    kn_event_impl *x = (kn_event_impl *)e;
    return x && x->magic == kn_event_magic ? x : NULL;
}

// ---- stream order (KILN_SIM_STREAMCHECK=1): work runs at once, so a missing wait between two
// streams cannot corrupt data here; this checks instead that every launch, async copy and memset
// is ordered after the last write, on another stream, to the bytes it touches, as a GPU running
// streams concurrently needs. Each stream counts its work (seq) and knows how far it has waited
// for the others (seen: cudaStreamWaitEvent merges the event's clock, taken by cudaEventRecord);
// the host knows how far each stream completed (done: cudaStreamSynchronize, cudaEventSynchronize,
// a successful query, cudaDeviceSynchronize, cudaFree, the legacy stream's synchronous work). A
// write is remembered by its start address and extent: a copy's or memset's bytes, or a kernel's
// pointer argument (1 byte: a kernel may write through any pointer it gets, at an extent the
// runtime does not know, so the check is exact for the values a kernel writes at the pointers it
// is passed). Launches, copies and memsets that break the order fail with cudaErrorIllegalState
// and a message naming both streams. Captured work is not checked. ----
typedef std::map<cudaStream_t, uint64_t> stream_clock;
struct stream_state {
    uint64_t seq = 0;
    stream_clock seen;
};
struct write_rec {
    cudaStream_t s;
    uint64_t seq;
    size_t n;
    std::string what;
};
std::map<cudaStream_t, stream_state> streams_ord; // under mu
stream_clock done_ord;                            // under mu
std::map<uintptr_t, write_rec> writes_ord;        // under mu

bool streamcheck_on() {
    const char *v = getenv("KILN_SIM_STREAMCHECK");
    return v && *v && strcmp(v, "0") != 0;
}
cudaStream_t stream_key(cudaStream_t s) { return s ? s : cudaStreamLegacy; }
// mu held
bool ordered_after(cudaStream_t s, const write_rec &w) {
    if (w.s == s) return true;
    auto d = done_ord.find(w.s);
    if (d != done_ord.end() && d->second >= w.seq) return true;
    stream_state &st = streams_ord[s];
    auto it = st.seen.find(w.s);
    return it != st.seen.end() && it->second >= w.seq;
}
void mark_done(cudaStream_t s) { // mu held: the host saw s's work so far complete
    if (!streamcheck_on()) return;
    s = stream_key(s);
    uint64_t &d = done_ord[s];
    if (streams_ord[s].seq > d) d = streams_ord[s].seq;
}
void mark_all_done() {
    for (auto &x : streams_ord) mark_done(x.first);
}
struct access {
    const void *p;
    size_t n;
    bool write;
};
cudaError_t stream_access(cudaStream_t s, const access *a, int na, const char *what) {
    if (!streamcheck_on() || is_capturing(s)) return cudaSuccess;
    std::lock_guard<std::mutex> g(mu);
    s = stream_key(s);
    for (int i = 0; i < na; i++) {
        if (!a[i].p) continue;
        uintptr_t lo = (uintptr_t)a[i].p, hi = lo + (a[i].n ? a[i].n : 1);
        auto it = writes_ord.upper_bound(lo);
        if (it != writes_ord.begin()) --it;
        for (; it != writes_ord.end() && it->first < hi; ++it) {
            if (it->first + (it->second.n ? it->second.n : 1) <= lo) continue;
            if (ordered_after(s, it->second)) continue;
            char msg[768];
            snprintf(msg, sizeof msg,
                     "%s on stream %p %s %p, written by %s on stream %p with no wait between them "
                     "(cudaEventRecord + cudaStreamWaitEvent, or a synchronisation): a race on a GPU",
                     what, (void *)s, a[i].write ? "touches" : "reads", a[i].p, it->second.what.c_str(),
                     (void *)it->second.s);
            return set_err(cudaErrorIllegalState, msg);
        }
    }
    uint64_t seq = ++streams_ord[s].seq;
    for (int i = 0; i < na; i++)
        if (a[i].p && a[i].write) writes_ord[(uintptr_t)a[i].p] = write_rec{s, seq, a[i].n, what};
    if (s == cudaStreamLegacy) mark_done(s); // synchronous with the host
    return cudaSuccess;
}
double now_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// the allocation holding p, if any (under mu)
const std::pair<const uintptr_t, alloc_info> *find(const void *p) {
    uintptr_t a = (uintptr_t)p;
    auto it = allocs.upper_bound(a);
    if (it == allocs.begin()) return NULL;
    --it;
    // one past the end counts: kernels get end pointers for empty ranges
    return a <= it->first + it->second.bytes ? &*it : NULL;
}
bool accessible(const void *p) {
    std::lock_guard<std::mutex> g(mu);
    return find(p) != NULL;
}
// host memory CUDA did not allocate (malloc'd, a model's mapping): a copy to or from it blocks
bool pageable(const void *p) { return !accessible(p); }

cudaError_t check_copy(void *dst, const void *src, size_t n, cudaMemcpyKind kind, const char *what) {
    if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) return set_err(cudaErrorInvalidMemcpyDirection);
    bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    char msg[256];
    if (dst_dev && !accessible(dst)) {
        snprintf(msg, sizeof msg, "%s: destination %p of a copy to the device is not device memory", what, dst);
        return set_err(cudaErrorInvalidValue, msg);
    }
    if (src_dev && !accessible(src)) {
        snprintf(msg, sizeof msg, "%s: source %p of a copy from the device is not device memory", what, src);
        return set_err(cudaErrorInvalidValue, msg);
    }
    (void)n;
    return cudaSuccess;
}

// KILN_SIM_COPYSTATS=1: the bytes copied device to host over the process (direct copies and those a
// graph replays), printed at exit, so a test can tell how much a loop brings back per step.
std::atomic<unsigned long long> d2h_bytes{0}, d2h_copies{0};
void count_copy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    if (kind == cudaMemcpyDeviceToHost || (kind == cudaMemcpyDefault && accessible(src) && !accessible(dst))) {
        d2h_bytes += n;
        d2h_copies++;
    }
}
struct copy_stats_report {
    ~copy_stats_report() {
        if (getenv("KILN_SIM_COPYSTATS"))
            fprintf(stderr, "kiln SIMT: %llu bytes in %llu copies device to host\n", d2h_bytes.load(),
                    d2h_copies.load());
    }
} copy_stats_at_exit;
} // namespace

extern "C" void kn_sim_set_launch_error(cudaError_t e, const char *msg) { set_err(e, msg); }
// Test-only: the host synchronisations this thread made so far (see the header comment).
extern "C" long long kn_sim_host_syncs(void) { return host_syncs; }
extern "C" int kn_sim_max_dynamic_smem(const void *fn) {
    std::lock_guard<std::mutex> g(mu);
    auto it = dyn_smem_max.find(fn);
    return it == dyn_smem_max.end() ? 48 << 10 : it->second;
}

extern "C" {

int kn_sim_device_accessible(const void *p, const void **base, size_t *bytes) {
    std::lock_guard<std::mutex> g(mu);
    auto a = find(p);
    if (!a) return 0;
    if (base) *base = (const void *)a->first;
    if (bytes) *bytes = a->second.bytes;
    return 1;
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return last_error; }

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
#define KN_SIM_ERR_NAME(x) \
    case x: return #x;
        KN_SIM_ERR_NAME(cudaSuccess)
        KN_SIM_ERR_NAME(cudaErrorInvalidValue)
        KN_SIM_ERR_NAME(cudaErrorMemoryAllocation)
        KN_SIM_ERR_NAME(cudaErrorInitializationError)
        KN_SIM_ERR_NAME(cudaErrorInvalidConfiguration)
        KN_SIM_ERR_NAME(cudaErrorInvalidPitchValue)
        KN_SIM_ERR_NAME(cudaErrorInvalidDevicePointer)
        KN_SIM_ERR_NAME(cudaErrorInvalidMemcpyDirection)
        KN_SIM_ERR_NAME(cudaErrorNoDevice)
        KN_SIM_ERR_NAME(cudaErrorInvalidDevice)
        KN_SIM_ERR_NAME(cudaErrorInvalidResourceHandle)
        KN_SIM_ERR_NAME(cudaErrorIllegalState)
        KN_SIM_ERR_NAME(cudaErrorNotReady)
        KN_SIM_ERR_NAME(cudaErrorIllegalAddress)
        KN_SIM_ERR_NAME(cudaErrorLaunchOutOfResources)
        KN_SIM_ERR_NAME(cudaErrorLaunchFailure)
        KN_SIM_ERR_NAME(cudaErrorStreamCaptureUnsupported)
        KN_SIM_ERR_NAME(cudaErrorStreamCaptureInvalidated)
        KN_SIM_ERR_NAME(cudaErrorStreamCaptureUnmatched)
        KN_SIM_ERR_NAME(cudaErrorStreamCaptureImplicit)
        KN_SIM_ERR_NAME(cudaErrorStreamCaptureWrongThread)
#undef KN_SIM_ERR_NAME
    default: return "cudaErrorUnknown";
    }
}

const char *cudaGetErrorString(cudaError_t e) {
    // the interpreter's message for the error it last raised on this thread (names the kernel)
    if (e != cudaSuccess && e == last_msg_code && !last_msg.empty()) return last_msg.c_str();
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorIllegalState: return "the resource is not in a valid state to perform the operation";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureUnmatched: return "capture was not initiated in this stream";
    case cudaErrorStreamCaptureImplicit:
        return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorStreamCaptureWrongThread:
        return "attempt to terminate a thread-local capture sequence from another thread";
    default: return "unknown error";
    }
}

cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
    if (d != 0) return set_err(cudaErrorInvalidDevice);
    cur_device = d;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d) {
    *d = cur_device;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) {
    if (d != 0) return set_err(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "kiln SIMT interpreter");
    p->totalGlobalMem = kTotalMem;
    p->sharedMemPerBlock = 48 << 10;
    p->sharedMemPerBlockOptin = 227 << 10;
    p->sharedMemPerMultiprocessor = 228 << 10;
    p->memPitch = (size_t)1 << 31;
    p->totalConstMem = 64 << 10;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = 1024;
    p->maxThreadsDim[1] = 1024;
    p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff;
    p->maxGridSize[1] = 65535;
    p->maxGridSize[2] = 65535;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 132;
    p->maxThreadsPerMultiProcessor = 2048;
    p->l2CacheSize = 50 << 20;
    p->unifiedAddressing = 1;
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
    cudaError_t e = capture_violation(NULL, "cudaDeviceSynchronize");
    if (!e) {
        host_syncs++;
        std::lock_guard<std::mutex> g(mu);
        mark_all_done();
    }
    return e;
}
cudaError_t cudaDeviceReset(void) { return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t *fr, size_t *total) {
    std::lock_guard<std::mutex> g(mu);
    *total = kTotalMem;
    *fr = device_bytes < kTotalMem ? kTotalMem - device_bytes : 0;
    return cudaSuccess;
}

static cudaError_t alloc(void **p, size_t n, bool pinned) {
    if (!p) return set_err(cudaErrorInvalidValue);
    *p = NULL;
    if (n == 0) return cudaSuccess;
    {
        std::lock_guard<std::mutex> g(mu);
        if (!pinned && device_bytes + n > kTotalMem) return set_err(cudaErrorMemoryAllocation);
    }
    // exact size (rounded up only as aligned_alloc needs): AddressSanitizer's redzones sit right
    // after the bytes asked for
    void *q = aligned_alloc(256, (n + 255) & ~(size_t)255);
    if (!q) return set_err(cudaErrorMemoryAllocation);
    std::lock_guard<std::mutex> g(mu);
    allocs[(uintptr_t)q] = alloc_info{n, pinned};
    if (!pinned) device_bytes += n;
    *p = q;
    return cudaSuccess;
}
static cudaError_t release(void *p, bool pinned) {
    if (!p) return cudaSuccess;
    std::lock_guard<std::mutex> g(mu);
    auto it = allocs.find((uintptr_t)p);
    if (it == allocs.end() || it->second.pinned != pinned) return set_err(cudaErrorInvalidValue);
    if (!pinned) device_bytes -= it->second.bytes;
    allocs.erase(it);
    free(p);
    return cudaSuccess;
}
op_list::~op_list() {
    for (auto &o : v)
        if (o.del) o.del(o.ctx);
    for (void *p : mem) release(p, false);
}
cudaError_t cudaMalloc(void **p, size_t n) { return alloc(p, n, false); }
cudaError_t cudaFree(void *p) {
    { // cudaFree synchronises the device (the freed addresses come back in later allocations)
        std::lock_guard<std::mutex> g(mu);
        if (p) host_syncs++;
        mark_all_done();
    }
    return release(p, false);
}
cudaError_t cudaMallocHost(void **p, size_t n) { return alloc(p, n, true); }
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags) {
    (void)flags;
    return alloc(p, n, true);
}
cudaError_t cudaFreeHost(void *p) {
    if (p) host_syncs++; // as cudaFree: the device is synchronised first
    return release(p, true);
}
// While s is captured, the allocation belongs to the graph being recorded (a memory node): it
// stays at its address for every launch and a cudaFreeAsync of it in the same capture is the
// graph's free node, so the memory goes with the graph.
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s) {
    cudaError_t e = alloc(p, n, false);
    if (e) return e;
    std::lock_guard<std::mutex> g(mu);
    auto it = captures.find(s);
    if (it != captures.end()) it->second->ops->mem.push_back(*p);
    return cudaSuccess;
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t s) {
    {
        std::lock_guard<std::mutex> g(mu);
        auto it = captures.find(s);
        if (it != captures.end()) {
            auto &m = it->second->ops->mem;
            for (void *q : m)
                if (q == p) return cudaSuccess;
        }
    }
    return release(p, false);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    long long before = host_syncs;
    cudaError_t e = cudaMemcpyAsync(dst, src, n, kind, cudaStreamLegacy);
    if (!e && n) host_syncs = before + 1; // blocking, whatever memory it touches: counted once
    return e;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
    if (!n) return cudaSuccess;
    cudaError_t e = check_copy(dst, src, n, kind, "cudaMemcpyAsync");
    if (e) return e;
    if (is_capturing(s)) // the bytes are read when the graph runs, as a memcpy node does
        return record(
            s,
            [](void *p) -> cudaError_t {
                copy_rec *c = (copy_rec *)p;
                cudaError_t e2 = check_copy(c->dst, c->src, c->n, c->kind, "cudaMemcpyAsync (graph)");
                if (!e2) count_copy(c->dst, c->src, c->n, c->kind);
                if (!e2) memmove(c->dst, c->src, c->n);
                return e2;
            },
            new copy_rec{dst, src, n, kind, 0}, [](void *p) { delete (copy_rec *)p; });
    if ((e = capture_violation(s, "cudaMemcpy on the legacy stream"))) return e;
    const access acc[2] = {{src, n, false}, {dst, n, true}};
    if ((e = stream_access(s, acc, 2, "cudaMemcpyAsync"))) return e;
    if (kind != cudaMemcpyDeviceToDevice && (pageable(dst) || pageable(src))) host_syncs++;
    count_copy(dst, src, n, kind);
    memmove(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpy2D(void *dst, size_t dp, const void *src, size_t sp, size_t w, size_t h, cudaMemcpyKind kind) {
    cudaError_t e = cudaMemcpy2DAsync(dst, dp, src, sp, w, h, kind, cudaStreamLegacy);
    if (!e && w && h) host_syncs++;
    return e;
}
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dp, const void *src, size_t sp, size_t w, size_t h, cudaMemcpyKind kind,
                              cudaStream_t s) {
    (void)s;
    if (!w || !h) return cudaSuccess;
    // as the hardware: pitches at least the width, and no larger than the device's maximum pitch
    if (dp < w || sp < w || (h > 1 && (dp > ((size_t)1 << 31) || sp > ((size_t)1 << 31))))
        return set_err(cudaErrorInvalidPitchValue);
    cudaError_t e = check_copy(dst, src, w, kind, "cudaMemcpy2DAsync");
    if (!e) e = check_copy((char *)dst + dp * (h - 1), (const char *)src + sp * (h - 1), w, kind, "cudaMemcpy2DAsync");
    if (e) return e;
    if (is_capturing(s)) {
        struct rec2d {
            void *dst;
            size_t dp;
            const void *src;
            size_t sp, w, h;
            cudaMemcpyKind kind;
        };
        return record(
            s,
            [](void *p) -> cudaError_t {
                rec2d *c = (rec2d *)p;
                count_copy(c->dst, c->src, c->w * c->h, c->kind);
                for (size_t r = 0; r < c->h; r++)
                    memmove((char *)c->dst + r * c->dp, (const char *)c->src + r * c->sp, c->w);
                return cudaSuccess;
            },
            new rec2d{dst, dp, src, sp, w, h, kind}, [](void *p) { delete (rec2d *)p; });
    }
    if ((e = capture_violation(s, "cudaMemcpy2D on the legacy stream"))) return e;
    count_copy(dst, src, w * h, kind);
    for (size_t r = 0; r < h; r++) memmove((char *)dst + r * dp, (const char *)src + r * sp, w);
    return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int v, size_t n) { return cudaMemsetAsync(p, v, n, cudaStreamLegacy); }
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
    if (!n) return cudaSuccess;
    if (!accessible(p)) {
        char msg[160];
        snprintf(msg, sizeof msg, "cudaMemsetAsync: %p is not device memory", p);
        return set_err(cudaErrorInvalidValue, msg);
    }
    if (is_capturing(s))
        return record(
            s,
            [](void *q) -> cudaError_t {
                copy_rec *c = (copy_rec *)q;
                if (!accessible(c->dst)) return set_err(cudaErrorInvalidValue, "cudaMemsetAsync (graph): freed memory");
                memset(c->dst, c->value, c->n);
                return cudaSuccess;
            },
            new copy_rec{p, NULL, n, cudaMemcpyHostToDevice, v}, [](void *q) { delete (copy_rec *)q; });
    cudaError_t e = capture_violation(s, "cudaMemset on the legacy stream");
    if (e) return e;
    const access acc = {p, n, true};
    if ((e = stream_access(s, &acc, 1, "cudaMemsetAsync"))) return e;
    memset(p, v, n);
    return cudaSuccess;
}

// streams: a handle per stream (work is done at once, so there is nothing to queue)
cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    (void)flags;
    *s = (cudaStream_t)malloc(16);
    return *s ? cudaSuccess : set_err(cudaErrorMemoryAllocation);
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (s == cudaStreamLegacy || s == cudaStreamPerThread || !s) return set_err(cudaErrorInvalidResourceHandle);
    free(s);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    cudaError_t e = capture_violation(s, "cudaStreamSynchronize");
    if (!e) {
        host_syncs++;
        std::lock_guard<std::mutex> g(mu);
        mark_done(s);
    }
    return e;
}
cudaError_t cudaStreamQuery(cudaStream_t s) {
    cudaError_t e = capture_violation(s, "cudaStreamQuery");
    if (!e) {
        std::lock_guard<std::mutex> g(mu);
        mark_done(s);
    }
    return e;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned f) {
    if (!event_of(e)) return set_err(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: not a live event");
    if (f != 0 && f != 0x1 /* cudaEventWaitExternal */)
        return set_err(cudaErrorInvalidValue, "cudaStreamWaitEvent: unknown flags");
    std::lock_guard<std::mutex> g(mu);
    stream_state &st = streams_ord[stream_key(s)];
    for (auto &c : event_of(e)->clock)
        if (st.seen[c.first] < c.second) st.seen[c.first] = c.second;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned f) {
    if (!e) return set_err(cudaErrorInvalidValue);
    if (f & ~(unsigned)(0x1 | cudaEventDisableTiming | 0x4)) // blocking sync, disable timing, interprocess
        return set_err(cudaErrorInvalidValue, "cudaEventCreateWithFlags: unknown flags");
    kn_event_impl *x = new kn_event_impl{kn_event_magic, f, false, now_ms()};
    *e = (cudaEvent_t)x;
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    kn_event_impl *x = event_of(e);
    if (!x) return set_err(cudaErrorInvalidResourceHandle, "cudaEventDestroy: not a live event");
    x->magic = 0;
    delete x;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    kn_event_impl *x = event_of(e);
    if (!x) return set_err(cudaErrorInvalidResourceHandle, "cudaEventRecord: not a live event");
    {
        std::lock_guard<std::mutex> g(mu);
        stream_state &st = streams_ord[stream_key(s)];
        x->clock = st.seen;
        x->clock[stream_key(s)] = st.seq;
    }
    x->recorded = true;
    x->t = now_ms();
    return cudaSuccess;
}
// the host has seen the event complete: so is the work it follows
static cudaError_t event_done(cudaEvent_t e, const char *what) {
    kn_event_impl *x = event_of(e);
    if (!x) return set_err(cudaErrorInvalidResourceHandle, what);
    std::lock_guard<std::mutex> g(mu);
    for (auto &c : x->clock)
        if (done_ord[c.first] < c.second) done_ord[c.first] = c.second;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    cudaError_t r = event_done(e, "cudaEventSynchronize: not a live event");
    if (!r) host_syncs++;
    return r;
}
cudaError_t cudaEventQuery(cudaEvent_t e) { return event_done(e, "cudaEventQuery: not a live event"); }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    kn_event_impl *x = event_of(a), *y = event_of(b);
    if (!x || !y) return set_err(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: not a live event");
    if ((x->flags | y->flags) & cudaEventDisableTiming)
        return set_err(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event created without timing");
    if (!x->recorded || !y->recorded)
        return set_err(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: not recorded");
    *ms = (float)(y->t - x->t);
    return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void *fn, cudaFuncAttribute attr, int value) {
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || value > (227 << 10)) return set_err(cudaErrorInvalidValue);
        std::lock_guard<std::mutex> g(mu);
        dyn_smem_max[fn] = value;
    }
    return cudaSuccess;
}

// ---- stream capture and graphs ----
struct kn_sim_graph {
    std::shared_ptr<op_list> ops;
};
struct kn_sim_graph_exec {
    std::shared_ptr<op_list> ops;
};

int kn_sim_stream_capturing(cudaStream_t s) { return is_capturing(s) ? 1 : 0; }
cudaError_t kn_sim_stream_launch(cudaStream_t s, const void *const *ptrs, int n, const char *name) {
    std::vector<access> a((size_t)n);
    for (int i = 0; i < n; i++) a[(size_t)i] = access{ptrs[i], 0, true};
    std::string what = std::string("kernel ") + (name ? name : "?");
    return stream_access(s, a.data(), n, what.c_str());
}
cudaError_t kn_sim_capture_record(cudaStream_t s, cudaError_t (*run)(void *), void *ctx, void (*del)(void *)) {
    return record(s, run, ctx, del);
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
    if (!s || s == cudaStreamLegacy || s == cudaStreamPerThread)
        return set_err(cudaErrorStreamCaptureUnsupported,
                       "cudaStreamBeginCapture: the legacy stream cannot be captured");
    std::lock_guard<std::mutex> g(mu);
    if (captures.count(s))
        return set_err(cudaErrorInvalidValue, "cudaStreamBeginCapture: the stream is already capturing");
    capture *c = new capture();
    c->mode = mode;
    c->owner = std::this_thread::get_id();
    captures[s] = c;
    if (mode != cudaStreamCaptureModeRelaxed) strict_captures++;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
    *graph = NULL;
    std::shared_ptr<op_list> ops; // an invalid capture's list (and memory) goes after mu is released
    std::lock_guard<std::mutex> g(mu);
    auto it = captures.find(s);
    if (it == captures.end()) return set_err(cudaErrorStreamCaptureUnmatched, "cudaStreamEndCapture: not capturing");
    capture *c = it->second;
    ops = c->ops;
    if (c->mode != cudaStreamCaptureModeRelaxed && c->owner != std::this_thread::get_id())
        return set_err(cudaErrorStreamCaptureWrongThread, "cudaStreamEndCapture: the capture began on another thread");
    captures.erase(it);
    if (c->mode != cudaStreamCaptureModeRelaxed) strict_captures--;
    bool invalid = c->invalid;
    if (!invalid) *graph = new kn_sim_graph{c->ops};
    delete c;
    if (invalid)
        return set_err(cudaErrorStreamCaptureInvalidated,
                       "cudaStreamEndCapture: the capture was invalidated by a forbidden call while capturing");
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus *status) {
    std::lock_guard<std::mutex> g(mu);
    auto it = captures.find(s);
    *status = it == captures.end() ? cudaStreamCaptureStatusNone
        : it->second->invalid      ? cudaStreamCaptureStatusInvalidated
                                   : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags) {
    (void)flags;
    *exec = NULL;
    if (!graph) return set_err(cudaErrorInvalidValue, "cudaGraphInstantiate: no graph");
    *exec = new kn_sim_graph_exec{graph->ops};
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    if (!exec) return set_err(cudaErrorInvalidValue, "cudaGraphLaunch: no executable graph");
    if (is_capturing(s))
        return set_err(cudaErrorStreamCaptureUnsupported, "cudaGraphLaunch into a capturing stream (not emulated)");
    cudaError_t e = capture_violation(s, "cudaGraphLaunch on the legacy stream");
    if (e) return e;
    for (auto &o : exec->ops->v)
        if ((e = o.run(o.ctx)) != cudaSuccess) return set_err(e);
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    delete exec;
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    delete graph;
    return cudaSuccess;
}

} // extern "C"
