/* The communicator (runtime/comm.h): the single-process implementation, the MPI one on host
 * buffers when built with MPI (KILN_HAVE_MPI), the TCP one of torchrun-style launches
 * (runtime/comm_tcp.c), and NCCL for device buffers on top of either (runtime/comm_nccl.c). The
 * MPI collectives are MPI-3 non-blocking ones polled with MPI_Test against a deadline, with
 * arrival notes to every peer so that a timeout can name the ranks that never arrived. NCCL's
 * bootstrapping is here, not in comm_nccl.c: the host transport that carries its id is the one
 * the MPI and TCP tests exercise. */
#include "runtime/comm.h"
#include "runtime/comm_nccl.h"
#include "runtime/comm_tcp.h"
#include "runtime/core/status.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef KILN_HAVE_MPI
#include <mpi.h>
#define HB_TAG 32700 /* the heartbeats' tag; the arrival notes use 100 .. 30099 */
#endif

struct kn_comm {
    int rank, size, local_rank;
    bool mpi, failed;
    comm_tcp *tcp;          /* the host transport of a torchrun-style launch */
    comm_nccl *nccl;        /* device collectives (backend "nccl") */
    char backend[16];       /* kn_comm_backend's answer */
    int inc_k, inc_started; /* kn_comm_allreduce_begin's k, and how many were started */
    double timeout_s;
    int64_t seq; /* collectives started, for the arrival notes' tags and the messages */
#ifdef KILN_HAVE_MPI
    MPI_Comm world;
    MPI_Request *req; /* room for the collectives and the 2 (size - 1) notes */
    int req_cap;
    int *note_in;
    int note_out;
    /* liveness: while a rank waits it sends a heartbeat to every peer now and then, and keeps a
     * receive from each peer posted; a timeout with every arrival note in names the peers that
     * stayed silent (stopped, or stuck inside the collective) */
    MPI_Request *hb_req; /* size entries, MPI_REQUEST_NULL at the own rank */
    int *hb_in, hb_out;
    double *hb_seen; /* when each peer's last heartbeat came */
    double hb_sent;
#endif
};

void kn_comm_options_init(kn_comm_options *o) {
    memset(o, 0, sizeof *o);
    o->timeout_s = 300;
    o->backend = "auto";
}

static const char *env(const char *k) {
    const char *v = getenv(k);
    return v && *v ? v : NULL;
}

/* mpirun (Open MPI, MPICH/Hydra, PMIx) or srun set these in every process they start. */
static bool launched_by_mpi(void) {
    return env("OMPI_COMM_WORLD_SIZE") || env("PMI_SIZE") || env("PMIX_RANK") || env("MPI_LOCALNRANKS") ||
        (env("SLURM_PROCID") && env("SLURM_NTASKS") && atoi(env("SLURM_NTASKS")) > 1);
}

/* The process's rank on its node: the GPU it takes (one process per GPU). */
static int local_rank_env(int rank) {
    const char *k[] = {"LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"};
    for (size_t i = 0; i < sizeof k / sizeof *k; i++)
        if (env(k[i])) return atoi(env(k[i]));
    return rank;
}

/* Rank, size and the TCP star of a torchrun-style launch (RANK, WORLD_SIZE, MASTER_ADDR/PORT). */
static kn_status *tcp_init(kn_comm *c) {
    const char *need[] = {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"};
    for (size_t i = 0; i < sizeof need / sizeof *need; i++)
        KN_CHECK(env(need[i]), KN_ERR_INVALID_ARGUMENT,
                 "communicator (tcp): %s is not set (a torchrun-style launch sets RANK, WORLD_SIZE, MASTER_ADDR, "
                 "MASTER_PORT and LOCAL_RANK)",
                 need[i]);
    char *end = NULL;
    long rank = strtol(env("RANK"), &end, 10), size;
    KN_CHECK(!*end, KN_ERR_INVALID_ARGUMENT, "communicator (tcp): RANK=%s is not a number", env("RANK"));
    size = strtol(env("WORLD_SIZE"), &end, 10);
    KN_CHECK(!*end && size >= 1 && size < 65536, KN_ERR_INVALID_ARGUMENT, "communicator (tcp): WORLD_SIZE=%s",
             env("WORLD_SIZE"));
    KN_CHECK(rank >= 0 && rank < size, KN_ERR_INVALID_ARGUMENT, "communicator (tcp): RANK=%ld is not in [0, %ld)", rank,
             size);
    c->rank = (int)rank;
    c->size = (int)size;
    return comm_tcp_connect(env("MASTER_ADDR"), atoi(env("MASTER_PORT")), c->rank, c->size, c->timeout_s, &c->tcp);
}

static kn_status *mpi_init(kn_comm *c) {
#ifdef KILN_HAVE_MPI
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    KN_CHECK(inited || MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) == MPI_SUCCESS, KN_ERR_RUNTIME,
             "communicator: MPI_Init_thread failed");
    /* errors come back as codes, so that a broken peer is reported, not a crash */
    MPI_Comm_dup(MPI_COMM_WORLD, &c->world);
    MPI_Comm_set_errhandler(c->world, MPI_ERRORS_RETURN);
    MPI_Comm_rank(c->world, &c->rank);
    MPI_Comm_size(c->world, &c->size);
    c->mpi = true;
    c->note_in = calloc((size_t)c->size, sizeof *c->note_in);
    c->hb_in = calloc((size_t)c->size, sizeof *c->hb_in);
    c->hb_seen = calloc((size_t)c->size, sizeof *c->hb_seen);
    c->hb_req = calloc((size_t)c->size, sizeof *c->hb_req);
    if (!c->note_in || !c->hb_in || !c->hb_seen || !c->hb_req) return KN_OOM(sizeof(int) * (size_t)c->size);
    for (int p = 0; p < c->size; p++) {
        c->hb_req[p] = MPI_REQUEST_NULL;
        if (p != c->rank) MPI_Irecv(&c->hb_in[p], 1, MPI_INT, p, HB_TAG, c->world, &c->hb_req[p]);
    }
    return NULL;
#else
    (void)c;
    return kn_error(KN_ERR_UNSUPPORTED,
                    "communicator: this process was started by mpirun/srun, but kiln was built without MPI "
                    "(install libopenmpi-dev and rebuild); refusing to train as an independent process");
#endif
}

/* NCCL over the host transport: rank 0 makes the id on its GPU, the host transport carries it
 * (MPI broadcast, or the TCP star), every rank joins on the GPU its LOCAL_RANK names. */
static kn_status *nccl_init(kn_comm *c) {
    KN_CHECK(comm_nccl_built(), KN_ERR_UNSUPPORTED,
             "communicator: backend 'nccl': this kiln was built without NCCL (the CUDA build finds nccl.h and "
             "libnccl.so in the CUDA toolkit); train with --device cpu");
    unsigned char id[COMM_NCCL_ID_BYTES] = {0};
    kn_status *st = c->rank == 0 ? comm_nccl_unique_id(c->local_rank, id) : NULL;
    /* a failed id still goes out (zeros), with the failure, so the other ranks stop too */
    int ok = !st;
    kn_status *b = kn_comm_broadcast(c, &ok, sizeof ok, 0);
    if (!b && ok) b = kn_comm_broadcast(c, id, sizeof id, 0);
    if (st || b) {
        kn_status_free(b);
        return st ? st : kn_error(KN_ERR_RUNTIME, "communicator (nccl): rank 0 could not create NCCL's id");
    }
    if (!ok)
        return kn_error(KN_ERR_RUNTIME, "communicator (nccl): rank %d: rank 0 could not create NCCL's id", c->rank);
    return comm_nccl_create(id, c->rank, c->size, c->local_rank, c->timeout_s, &c->nccl);
}

kn_status *kn_comm_init(const kn_comm_options *o, kn_comm **out) {
    *out = NULL;
    kn_comm_options def;
    if (!o) {
        kn_comm_options_init(&def);
        o = &def;
    }
    const char *b = o->backend ? o->backend : "auto";
    bool nccl = !strcmp(b, "nccl");
    KN_CHECK(!strcmp(b, "auto") || !strcmp(b, "single") || !strcmp(b, "mpi") || !strcmp(b, "tcp") || nccl,
             KN_ERR_INVALID_ARGUMENT, "communicator: backend '%s': auto, single, mpi, tcp or nccl", b);
    bool torchrun = env("WORLD_SIZE") && atoi(env("WORLD_SIZE")) > 1;
    bool auto_host = !strcmp(b, "auto") || nccl;
    bool want_mpi = !strcmp(b, "mpi") || (auto_host && launched_by_mpi());
    bool want_tcp = !strcmp(b, "tcp") || (auto_host && !want_mpi && torchrun);
    kn_comm *c = calloc(1, sizeof *c);
    if (!c) return KN_OOM(sizeof *c);
    c->size = 1;
    c->timeout_s = o->timeout_s > 0 ? o->timeout_s : 300;
    kn_status *st = want_mpi ? mpi_init(c) : want_tcp ? tcp_init(c) : NULL;
    c->local_rank = local_rank_env(c->rank);
    snprintf(c->backend, sizeof c->backend, "%s%s", nccl ? "nccl/" : "",
             want_mpi       ? "mpi"
                 : want_tcp ? "tcp"
                            : "single");
    if (!st && !nccl && o->device && !strcmp(b, "auto") && c->size > 1 && comm_nccl_built()) {
        nccl = true;
        snprintf(c->backend, sizeof c->backend, "nccl/%s", want_mpi ? "mpi" : "tcp");
    }
    if (!st && nccl) st = nccl_init(c);
    if (st) {
        kn_comm_free(c);
        return st;
    }
    *out = c;
    return NULL;
}

void kn_comm_free(kn_comm *c) {
    if (!c) return;
    comm_nccl_free(c->nccl);
    comm_tcp_free(c->tcp);
#ifdef KILN_HAVE_MPI
    if (c->mpi) {
        if (c->failed) MPI_Abort(MPI_COMM_WORLD, 1); /* pending requests: MPI cannot finalise */
        for (int p = 0; c->hb_req && p < c->size; p++)
            if (c->hb_req[p] != MPI_REQUEST_NULL) {
                MPI_Cancel(&c->hb_req[p]);
                MPI_Wait(&c->hb_req[p], MPI_STATUS_IGNORE);
            }
        if (c->world != MPI_COMM_NULL) MPI_Comm_free(&c->world);
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) MPI_Finalize();
    }
    free(c->req);
    free(c->note_in);
    free(c->hb_in);
    free(c->hb_seen);
    free(c->hb_req);
#endif
    free(c);
}

void kn_comm_abort(kn_comm *c, int code) {
#ifdef KILN_HAVE_MPI
    if (c && c->mpi) MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
#endif
    (void)c;
    exit(code ? code : 1);
}

int kn_comm_rank(const kn_comm *c) { return c ? c->rank : 0; }
int kn_comm_size(const kn_comm *c) { return c ? c->size : 1; }
const char *kn_comm_backend(const kn_comm *c) { return c ? c->backend : "single"; }
bool kn_comm_failed(const kn_comm *c) { return c && (c->failed || comm_nccl_failed(c->nccl)); }
int kn_comm_local_rank(const kn_comm *c) { return c ? c->local_rank : 0; }
bool kn_comm_on_device(const kn_comm *c) { return c && c->nccl; }

#ifdef KILN_HAVE_MPI

/* Takes in the heartbeats that came (reposting the receives) and sends one to every peer when
 * the last is older than the interval. */
static void heartbeat(kn_comm *c, double now, double interval) {
    for (int p = 0; p < c->size; p++) {
        int got = 0;
        while (p != c->rank && c->hb_req[p] != MPI_REQUEST_NULL &&
               MPI_Test(&c->hb_req[p], &got, MPI_STATUS_IGNORE) == MPI_SUCCESS && got) {
            c->hb_seen[p] = now;
            MPI_Irecv(&c->hb_in[p], 1, MPI_INT, p, HB_TAG, c->world, &c->hb_req[p]);
        }
    }
    if (now - c->hb_sent < interval) return;
    c->hb_sent = now;
    for (int p = 0; p < c->size; p++) {
        if (p == c->rank) continue;
        MPI_Request r;
        /* small enough to go eagerly: the request is freed and completes on its own */
        if (MPI_Isend(&c->hb_out, 1, MPI_INT, p, HB_TAG, c->world, &r) == MPI_SUCCESS) MPI_Request_free(&r);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Room for k collective requests after the 2 (size - 1) note requests. */
static kn_status *reserve(kn_comm *c, int k) {
    int need = 2 * (c->size - 1) + k;
    if (need <= c->req_cap) return NULL;
    MPI_Request *r = realloc(c->req, sizeof *r * (size_t)need);
    if (!r) return KN_OOM(sizeof *r * (size_t)need);
    c->req = r;
    c->req_cap = need;
    return NULL;
}

/* Posts the arrival notes of the next collective: a receive from and a send to every peer. */
static kn_status *notes_post(kn_comm *c) {
    int tag = 100 + (int)(c->seq % 30000), j = 0;
    c->note_out = (int)(c->seq % 1000000);
    for (int p = 0; p < c->size; p++) {
        if (p == c->rank) continue;
        if (MPI_Irecv(&c->note_in[p], 1, MPI_INT, p, tag, c->world, &c->req[j]) != MPI_SUCCESS ||
            MPI_Isend(&c->note_out, 1, MPI_INT, p, tag, c->world, &c->req[c->size - 1 + j]) != MPI_SUCCESS) {
            c->failed = true;
            return kn_error(KN_ERR_RUNTIME, "communicator: rank %d: posting the arrival notes to rank %d failed",
                            c->rank, p);
        }
        j++;
    }
    return NULL;
}

/* Polls the notes and the k collective requests until all are done or the deadline passes. */
static kn_status *wait_all(kn_comm *c, int k, const char *what) {
    int n = 2 * (c->size - 1) + k;
    double t0 = now_s(), deadline = t0 + c->timeout_s, interval = c->timeout_s / 8;
    if (interval > 1) interval = 1;
    long sleep_ns = 1000;
    for (;;) {
        heartbeat(c, now_s(), interval);
        int done = 0;
        if (MPI_Testall(n, c->req, &done, MPI_STATUSES_IGNORE) != MPI_SUCCESS) {
            c->failed = true;
            return kn_error(KN_ERR_RUNTIME, "communicator: rank %d: %s #%lld failed in MPI", c->rank, what,
                            (long long)c->seq);
        }
        if (done) break;
        if (now_s() > deadline) {
            c->failed = true;
            /* the peers whose arrival note never came did not reach this collective */
            char missing[256] = "";
            size_t len = 0;
            int j = 0, n_missing = 0;
            for (int p = 0; p < c->size; p++) {
                if (p == c->rank) continue;
                int got = 0;
                MPI_Test(&c->req[j++], &got, MPI_STATUS_IGNORE);
                if (got) continue;
                n_missing++;
                if (len + 16 < sizeof missing)
                    len += (size_t)snprintf(missing + len, sizeof missing - len, "%s%d", len ? ", " : "", p);
            }
            if (n_missing)
                return kn_error(KN_ERR_RUNTIME,
                                "communicator: rank %d waited %.3g s (--comm-timeout) in %s #%lld for rank%s %s, "
                                "which did not reach it (dead or hung)",
                                c->rank, c->timeout_s, what, (long long)c->seq, n_missing > 1 ? "s" : "", missing);
            /* every peer arrived: name those that went silent while this rank waited */
            double now = now_s();
            len = 0;
            for (int p = 0; p < c->size; p++) {
                if (p == c->rank || now - c->hb_seen[p] < c->timeout_s / 2) continue;
                n_missing++;
                if (len + 16 < sizeof missing)
                    len += (size_t)snprintf(missing + len, sizeof missing - len, "%s%d", len ? ", " : "", p);
            }
            if (n_missing)
                return kn_error(KN_ERR_RUNTIME,
                                "communicator: rank %d waited %.3g s (--comm-timeout) in %s #%lld for rank%s %s, "
                                "which reached it but gave no sign of life for %.3g s (hung)",
                                c->rank, c->timeout_s, what, (long long)c->seq, n_missing > 1 ? "s" : "", missing,
                                c->timeout_s / 2);
            return kn_error(KN_ERR_RUNTIME,
                            "communicator: rank %d waited %.3g s (--comm-timeout) in %s #%lld: every rank reached it "
                            "and is alive, but it did not complete",
                            c->rank, c->timeout_s, what, (long long)c->seq);
        }
        /* a short back-off: the ranks may share cores with each other */
        struct timespec ts = {0, sleep_ns};
        nanosleep(&ts, NULL);
        if (sleep_ns < 200000) sleep_ns *= 2;
    }
    c->seq++;
    return NULL;
}

static kn_status *start(kn_comm *c, int k) {
    KN_CHECK(!c->failed, KN_ERR_RUNTIME, "communicator: rank %d: an earlier collective failed", c->rank);
    KN_TRY(reserve(c, k));
    return notes_post(c);
}
#define COLL(c, i) (&(c)->req[2 * ((c)->size - 1) + (i)])
#endif

kn_status *kn_comm_allreduce_sum_f32(kn_comm *c, float *const *bufs, const int64_t *n, int k) {
    KN_CHECK(c && (bufs || !k) && (n || !k) && k >= 0, KN_ERR_INVALID_ARGUMENT, "kn_comm_allreduce: bad arguments");
    if (c->tcp && c->size > 1) return comm_tcp_allreduce_sum_f32(c->tcp, bufs, n, k);
    if (!c->mpi || c->size == 1) return NULL;
#ifdef KILN_HAVE_MPI
    KN_TRY(start(c, k));
    for (int i = 0; i < k; i++) {
        KN_CHECK(n[i] >= 0 && n[i] <= 0x7fffffff, KN_ERR_INVALID_ARGUMENT,
                 "kn_comm_allreduce: buffer %d has %lld elements (at most 2^31 - 1 per bucket)", i, (long long)n[i]);
        if (MPI_Iallreduce(MPI_IN_PLACE, bufs[i], (int)n[i], MPI_FLOAT, MPI_SUM, c->world, COLL(c, i)) != MPI_SUCCESS) {
            c->failed = true;
            return kn_error(KN_ERR_RUNTIME, "communicator: rank %d: MPI_Iallreduce failed", c->rank);
        }
    }
    return wait_all(c, k, "all-reduce");
#else
    return NULL;
#endif
}

kn_status *kn_comm_allreduce_begin(kn_comm *c, int k) {
    KN_CHECK(c && k >= 0 && !c->inc_k, KN_ERR_INVALID_ARGUMENT, "kn_comm_allreduce_begin: bad arguments");
    c->inc_k = k;
    c->inc_started = 0;
#ifdef KILN_HAVE_MPI
    if (c->mpi && c->size > 1 && k) {
        kn_status *st = start(c, k);
        if (st) c->inc_k = 0;
        return st;
    }
#endif
    return NULL;
}

kn_status *kn_comm_allreduce_start(kn_comm *c, int i, float *buf, int64_t n) {
    KN_CHECK(c && c->inc_k && i == c->inc_started && i < c->inc_k && (buf || !n), KN_ERR_INVALID_ARGUMENT,
             "kn_comm_allreduce_start: all-reduce %d of %d (the next is %d)", i, c ? c->inc_k : 0,
             c ? c->inc_started : 0);
    c->inc_started++;
    if (c->tcp && c->size > 1) return comm_tcp_allreduce_sum_f32(c->tcp, &buf, &n, 1);
#ifdef KILN_HAVE_MPI
    if (c->mpi && c->size > 1) {
        KN_CHECK(n >= 0 && n <= 0x7fffffff, KN_ERR_INVALID_ARGUMENT,
                 "kn_comm_allreduce: buffer %d has %lld elements (at most 2^31 - 1 per bucket)", i, (long long)n);
        if (MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, c->world, COLL(c, i)) != MPI_SUCCESS) {
            c->failed = true;
            return kn_error(KN_ERR_RUNTIME, "communicator: rank %d: MPI_Iallreduce failed", c->rank);
        }
    }
#endif
    return NULL;
}

void kn_comm_progress(kn_comm *c) {
#ifdef KILN_HAVE_MPI
    /* Open MPI moves non-blocking collectives along only inside MPI calls */
    int flag = 0;
    if (c && c->mpi && c->size > 1 && c->inc_started)
        MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, c->world, &flag, MPI_STATUS_IGNORE);
#else
    (void)c;
#endif
}

kn_status *kn_comm_allreduce_wait(kn_comm *c) {
    KN_CHECK(c, KN_ERR_INVALID_ARGUMENT, "kn_comm_allreduce_wait: comm is NULL");
    int k = c->inc_k, started = c->inc_started;
    c->inc_k = c->inc_started = 0;
    KN_CHECK(started == k, KN_ERR_INVALID_ARGUMENT, "kn_comm_allreduce_wait: %d of %d all-reduces started", started, k);
#ifdef KILN_HAVE_MPI
    if (c->mpi && c->size > 1 && k) return wait_all(c, k, "all-reduce");
#endif
    return NULL;
}

kn_status *kn_comm_broadcast(kn_comm *c, void *buf, size_t bytes, int root) {
    KN_CHECK(c && (buf || !bytes) && root >= 0 && root < kn_comm_size(c), KN_ERR_INVALID_ARGUMENT,
             "kn_comm_broadcast: bad arguments");
    if (c->tcp && c->size > 1) return comm_tcp_broadcast(c->tcp, buf, bytes, root);
    if (!c->mpi || c->size == 1) return NULL;
#ifdef KILN_HAVE_MPI
    KN_CHECK(bytes <= 0x7fffffff, KN_ERR_INVALID_ARGUMENT, "kn_comm_broadcast: %zu bytes (at most 2^31 - 1)", bytes);
    KN_TRY(start(c, 1));
    if (MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, c->world, COLL(c, 0)) != MPI_SUCCESS) {
        c->failed = true;
        return kn_error(KN_ERR_RUNTIME, "communicator: rank %d: MPI_Ibcast failed", c->rank);
    }
    return wait_all(c, 1, "broadcast");
#else
    return NULL;
#endif
}

kn_status *kn_comm_barrier(kn_comm *c) {
    KN_CHECK(c, KN_ERR_INVALID_ARGUMENT, "kn_comm_barrier: comm is NULL");
    if (c->tcp && c->size > 1) return comm_tcp_barrier(c->tcp);
    if (!c->mpi || c->size == 1) return NULL;
#ifdef KILN_HAVE_MPI
    KN_TRY(start(c, 1));
    if (MPI_Ibarrier(c->world, COLL(c, 0)) != MPI_SUCCESS) {
        c->failed = true;
        return kn_error(KN_ERR_RUNTIME, "communicator: rank %d: MPI_Ibarrier failed", c->rank);
    }
    return wait_all(c, 1, "barrier");
#else
    return NULL;
#endif
}

kn_status *kn_comm_allgather(kn_comm *c, const void *send, size_t bytes, void *recv) {
    KN_CHECK(c && ((send && recv) || !bytes), KN_ERR_INVALID_ARGUMENT, "kn_comm_allgather: bad arguments");
    if (c->tcp && c->size > 1) return comm_tcp_allgather(c->tcp, send, bytes, recv);
    if (!c->mpi || c->size == 1) {
        if (bytes) memmove(recv, send, bytes);
        return NULL;
    }
#ifdef KILN_HAVE_MPI
    KN_CHECK(bytes * (size_t)c->size <= 0x7fffffff, KN_ERR_INVALID_ARGUMENT, "kn_comm_allgather: %zu bytes a rank",
             bytes);
    KN_TRY(start(c, 1));
    if (MPI_Iallgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, c->world, COLL(c, 0)) != MPI_SUCCESS) {
        c->failed = true;
        return kn_error(KN_ERR_RUNTIME, "communicator: rank %d: MPI_Iallgather failed", c->rank);
    }
    return wait_all(c, 1, "all-gather");
#else
    return NULL;
#endif
}

/* ---- device buffers ---- */

kn_status *kn_comm_device_allreduce_sum_f32(kn_comm *c, float *const *bufs, const int64_t *n, int k, void *stream) {
    KN_CHECK(c && (bufs || !k) && (n || !k) && k >= 0, KN_ERR_INVALID_ARGUMENT,
             "kn_comm_device_allreduce: bad arguments");
    KN_CHECK(c->nccl, KN_ERR_UNSUPPORTED, "kn_comm_device_allreduce: the %s communicator takes host buffers",
             c->backend);
    return comm_nccl_allreduce_sum_f32(c->nccl, bufs, n, k, stream);
}

kn_status *kn_comm_device_broadcast(kn_comm *c, void *buf, size_t bytes, int root, void *stream) {
    KN_CHECK(c && (buf || !bytes) && root >= 0 && root < c->size, KN_ERR_INVALID_ARGUMENT,
             "kn_comm_device_broadcast: bad arguments");
    KN_CHECK(c->nccl, KN_ERR_UNSUPPORTED, "kn_comm_device_broadcast: the %s communicator takes host buffers",
             c->backend);
    return comm_nccl_broadcast(c->nccl, buf, bytes, root, stream);
}

kn_status *kn_comm_device_allgather(kn_comm *c, const void *send, size_t bytes, void *recv, void *stream) {
    KN_CHECK(c && ((send && recv) || !bytes), KN_ERR_INVALID_ARGUMENT, "kn_comm_device_allgather: bad arguments");
    KN_CHECK(c->nccl, KN_ERR_UNSUPPORTED, "kn_comm_device_allgather: the %s communicator takes host buffers",
             c->backend);
    return comm_nccl_allgather(c->nccl, send, bytes, recv, stream);
}

kn_status *kn_comm_device_wait(kn_comm *c, void *stream) {
    KN_CHECK(c && c->nccl, KN_ERR_INVALID_ARGUMENT, "kn_comm_device_wait: not a device communicator");
    return comm_nccl_wait(c->nccl, stream, "device collective");
}
