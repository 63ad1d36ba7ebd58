/* The NCCL calls of the communicator (runtime/comm_nccl.h). */
#include "runtime/comm_nccl.h"
#include "runtime/core/status.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef KILN_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

struct comm_nccl {
    ncclComm_t comm;
    int rank, size, device;
    double timeout_s;
    bool failed;
    long long seq;
};

_Static_assert(sizeof(ncclUniqueId) == COMM_NCCL_ID_BYTES, "ncclUniqueId is 128 bytes");

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool comm_nccl_built(void) { return true; }
bool comm_nccl_failed(const comm_nccl *n) { return n && n->failed; }

static kn_status *select_device(int device) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    KN_CHECK(e == cudaSuccess && count > 0, KN_ERR_NO_DEVICE, "communicator (nccl): no CUDA device (%s)",
             e == cudaSuccess ? "none visible" : cudaGetErrorString(e));
    KN_CHECK(device >= 0 && device < count, KN_ERR_NO_DEVICE,
             "communicator (nccl): LOCAL_RANK %d asks for GPU %d, but this node shows %d (one process per GPU)", device,
             device, count);
    e = cudaSetDevice(device);
    KN_CHECK(e == cudaSuccess, KN_ERR_RUNTIME, "communicator (nccl): cudaSetDevice(%d): %s", device,
             cudaGetErrorString(e));
    return NULL;
}

kn_status *comm_nccl_unique_id(int device, unsigned char id[COMM_NCCL_ID_BYTES]) {
    KN_TRY(select_device(device));
    ncclUniqueId u;
    ncclResult_t r = ncclGetUniqueId(&u);
    KN_CHECK(r == ncclSuccess, KN_ERR_RUNTIME, "communicator (nccl): ncclGetUniqueId: %s (NCCL_SOCKET_IFNAME?)",
             ncclGetErrorString(r));
    memcpy(id, &u, sizeof u);
    return NULL;
}

/* Polls the communicator's state until it leaves ncclInProgress or the deadline passes (then the
 * communicator is aborted: a peer is dead or hung, or the network does not connect). */
static kn_status *poll_state(comm_nccl *n, const char *what, cudaStream_t stream, bool with_stream) {
    double dl = now_s() + n->timeout_s;
    long ns = 1000;
    for (;;) {
        ncclResult_t a = ncclInProgress;
        ncclResult_t r = ncclCommGetAsyncError(n->comm, &a);
        if (r != ncclSuccess || (a != ncclSuccess && a != ncclInProgress)) {
            n->failed = true;
            return kn_error(KN_ERR_RUNTIME, "communicator (nccl): rank %d: %s #%lld failed: %s (%s)", n->rank, what,
                            n->seq, ncclGetErrorString(r != ncclSuccess ? r : a), ncclGetLastError(n->comm));
        }
        bool done = a == ncclSuccess;
        if (done && with_stream) {
            cudaError_t e = cudaStreamQuery(stream);
            if (e != cudaSuccess && e != cudaErrorNotReady) {
                n->failed = true;
                return kn_error(KN_ERR_RUNTIME, "communicator (nccl): rank %d: %s #%lld: %s", n->rank, what, n->seq,
                                cudaGetErrorString(e));
            }
            done = e == cudaSuccess;
        }
        if (done) return NULL;
        if (now_s() > dl) {
            n->failed = true;
            ncclCommAbort(n->comm);
            n->comm = NULL;
            return kn_error(KN_ERR_RUNTIME,
                            "communicator (nccl): rank %d waited %.3g s (--comm-timeout) in %s #%lld on GPU %d: a peer "
                            "is dead or hung, or the ranks cannot connect (NCCL_SOCKET_IFNAME, NCCL_DEBUG=INFO); "
                            "NCCL was aborted",
                            n->rank, n->timeout_s, what, n->seq, n->device);
        }
        struct timespec ts = {0, ns};
        nanosleep(&ts, NULL);
        if (ns < 200000) ns *= 2;
    }
}

kn_status *comm_nccl_create(const unsigned char id[COMM_NCCL_ID_BYTES], int rank, int size, int device,
                            double timeout_s, comm_nccl **out) {
    *out = NULL;
    KN_TRY(select_device(device));
    comm_nccl *n = calloc(1, sizeof *n);
    if (!n) return KN_OOM(sizeof *n);
    n->rank = rank;
    n->size = size;
    n->device = device;
    n->timeout_s = timeout_s > 0 ? timeout_s : 300;
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&n->comm, size, u, rank, &cfg);
    if (r != ncclSuccess && r != ncclInProgress) {
        free(n);
        return kn_error(KN_ERR_RUNTIME, "communicator (nccl): rank %d of %d: ncclCommInitRankConfig on GPU %d: %s",
                        rank, size, device, ncclGetErrorString(r));
    }
    kn_status *st = poll_state(n, "initialisation", NULL, false);
    if (st) {
        comm_nccl_free(n);
        return st;
    }
    *out = n;
    return NULL;
}

void comm_nccl_free(comm_nccl *n) {
    if (!n) return;
    if (n->comm) {
        if (n->failed) ncclCommAbort(n->comm);
        else {
            ncclCommFinalize(n->comm);
            ncclResult_t a = ncclInProgress;
            double dl = now_s() + n->timeout_s;
            while (ncclCommGetAsyncError(n->comm, &a) == ncclSuccess && a == ncclInProgress && now_s() < dl) {
                struct timespec ts = {0, 100000};
                nanosleep(&ts, NULL);
            }
            if (a == ncclSuccess) ncclCommDestroy(n->comm);
            else ncclCommAbort(n->comm);
        }
    }
    free(n);
}

static kn_status *enqueued(comm_nccl *n, ncclResult_t r, const char *what) {
    if (r == ncclSuccess || r == ncclInProgress) return NULL;
    n->failed = true;
    return kn_error(KN_ERR_RUNTIME, "communicator (nccl): rank %d: %s #%lld: %s (%s)", n->rank, what, n->seq,
                    ncclGetErrorString(r), ncclGetLastError(n->comm));
}

static kn_status *usable(const comm_nccl *n) {
    KN_CHECK(n && n->comm && !n->failed, KN_ERR_RUNTIME, "communicator (nccl): an earlier collective failed");
    return NULL;
}

kn_status *comm_nccl_allreduce_sum_f32(comm_nccl *n, float *const *bufs, const int64_t *cnt, int k, void *stream) {
    KN_TRY(usable(n));
    /* one group: the k buckets go out together, as the MPI path has them all in flight */
    KN_TRY(enqueued(n, ncclGroupStart(), "all-reduce"));
    for (int i = 0; i < k; i++) {
        ncclResult_t r =
            ncclAllReduce(bufs[i], bufs[i], (size_t)cnt[i], ncclFloat32, ncclSum, n->comm, (cudaStream_t)stream);
        if (r != ncclSuccess && r != ncclInProgress) {
            ncclGroupEnd();
            return enqueued(n, r, "all-reduce");
        }
    }
    KN_TRY(enqueued(n, ncclGroupEnd(), "all-reduce"));
    n->seq++;
    return NULL;
}

kn_status *comm_nccl_broadcast(comm_nccl *n, void *buf, size_t bytes, int root, void *stream) {
    KN_TRY(usable(n));
    KN_TRY(enqueued(n, ncclBroadcast(buf, buf, bytes, ncclUint8, root, n->comm, (cudaStream_t)stream), "broadcast"));
    n->seq++;
    return NULL;
}

kn_status *comm_nccl_allgather(comm_nccl *n, const void *send, size_t bytes, void *recv, void *stream) {
    KN_TRY(usable(n));
    KN_TRY(enqueued(n, ncclAllGather(send, recv, bytes, ncclUint8, n->comm, (cudaStream_t)stream), "all-gather"));
    n->seq++;
    return NULL;
}

kn_status *comm_nccl_wait(comm_nccl *n, void *stream, const char *what) {
    KN_TRY(usable(n));
    return poll_state(n, what ? what : "collective", (cudaStream_t)stream, true);
}

#else /* built without NCCL */

struct comm_nccl {
    int unused;
};

static kn_status *no_nccl(void) {
    return kn_error(KN_ERR_UNSUPPORTED,
                    "communicator: this kiln was built without NCCL (a CUDA build finds it in the CUDA toolkit, "
                    "nccl.h and libnccl.so); use --device cpu, or rebuild with -DKILN_CUDA=ON");
}
bool comm_nccl_built(void) { return false; }
bool comm_nccl_failed(const comm_nccl *n) { return n != NULL; }
kn_status *comm_nccl_unique_id(int device, unsigned char id[COMM_NCCL_ID_BYTES]) {
    (void)device, (void)id;
    return no_nccl();
}
kn_status *comm_nccl_create(const unsigned char id[COMM_NCCL_ID_BYTES], int rank, int size, int device,
                            double timeout_s, comm_nccl **out) {
    (void)id, (void)rank, (void)size, (void)device, (void)timeout_s;
    *out = NULL;
    return no_nccl();
}
void comm_nccl_free(comm_nccl *n) { (void)n; }
kn_status *comm_nccl_allreduce_sum_f32(comm_nccl *n, float *const *bufs, const int64_t *cnt, int k, void *stream) {
    (void)n, (void)bufs, (void)cnt, (void)k, (void)stream;
    return no_nccl();
}
kn_status *comm_nccl_broadcast(comm_nccl *n, void *buf, size_t bytes, int root, void *stream) {
    (void)n, (void)buf, (void)bytes, (void)root, (void)stream;
    return no_nccl();
}
kn_status *comm_nccl_allgather(comm_nccl *n, const void *send, size_t bytes, void *recv, void *stream) {
    (void)n, (void)send, (void)bytes, (void)recv, (void)stream;
    return no_nccl();
}
kn_status *comm_nccl_wait(comm_nccl *n, void *stream, const char *what) {
    (void)n, (void)stream, (void)what;
    return no_nccl();
}

#endif
