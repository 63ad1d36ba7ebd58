/* The TCP transport of the communicator (runtime/comm_tcp.h): rendezvous and star collectives on
 * non-blocking sockets, every transfer polled against a deadline. A message is a header (magic,
 * kind, sender, sequence number, payload bytes) and its payload; a rank that receives a header of
 * another kind or sequence than it expects reports both, so ranks that went out of step fail
 * loudly instead of mixing buffers. IPv4 only (MASTER_ADDR a name or dotted address). */
#include "runtime/comm_tcp.h"
#include "runtime/core/status.h"
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TCP_MAGIC 0x6b6c6e31u /* "kln1" */
enum { K_HELLO = 1, K_ALLREDUCE, K_BCAST, K_ALLGATHER, K_BARRIER, K_ABORT };
static const char *kind_name[] = {"?", "rendezvous", "all-reduce", "broadcast", "all-gather", "barrier", "abort"};

typedef struct tcp_hdr {
    uint32_t magic, kind;
    int32_t rank, size;
    uint64_t seq, bytes;
} tcp_hdr;

struct comm_tcp {
    int rank, size;
    double timeout_s;
    uint64_t seq;
    bool failed;
    int *fd; /* rank 0: fd[p] for every peer p (fd[0] unused); the others: fd[0], to rank 0 */
    float *tmp;
    size_t tmp_cap;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Moves exactly bytes through fd before the deadline: 0, ETIMEDOUT, or the error (ECONNRESET when
 * the peer closed the connection). */
static int io_full(int fd, void *buf, size_t bytes, bool out, double deadline) {
    size_t done = 0;
    while (done < bytes) {
        double left = deadline - now_s();
        if (left <= 0) return ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = out ? POLLOUT : POLLIN};
        int r = poll(&p, 1, left > 1 ? 1000 : (int)(left * 1000) + 1);
        if (r < 0 && errno != EINTR) return errno;
        if (r <= 0) continue;
        ssize_t k = out ? send(fd, (char *)buf + done, bytes - done, MSG_NOSIGNAL)
                        : recv(fd, (char *)buf + done, bytes - done, 0);
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            return errno == EPIPE ? ECONNRESET : errno;
        }
        if (k == 0) return ECONNRESET;
        done += (size_t)k;
    }
    return 0;
}

static void set_socket(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK);
}

/* Rank 0 tells the other ranks why it failed (best effort, briefly), so that they report the
 * cause instead of timing out on rank 0. */
static void pass_on(comm_tcp *t, int skip, const char *msg) {
    if (t->rank != 0) return;
    size_t len = strlen(msg) + 1;
    tcp_hdr h = {TCP_MAGIC, K_ABORT, 0, t->size, t->seq, len};
    for (int p = 1; p < t->size; p++) {
        if (p == skip || t->fd[p] < 0) continue;
        double dl = now_s() + 0.5;
        if (!io_full(t->fd[p], &h, sizeof h, true, dl)) io_full(t->fd[p], (void *)msg, len, true, dl);
    }
}

static kn_status *fail(comm_tcp *t, int kind, int peer, int err) {
    t->failed = true;
    char msg[512];
    if (err == ETIMEDOUT)
        snprintf(msg, sizeof msg,
                 "communicator (tcp): rank %d waited %.3g s (--comm-timeout) in %s #%llu for rank %d, which did "
                 "not come (hung, stopped or slow)",
                 t->rank, t->timeout_s, kind_name[kind], (unsigned long long)t->seq, peer);
    else
        snprintf(msg, sizeof msg,
                 "communicator (tcp): rank %d: in %s #%llu, rank %d closed its connection (%s): it died or failed",
                 t->rank, kind_name[kind], (unsigned long long)t->seq, peer, strerror(err));
    pass_on(t, peer, msg);
    return kn_error(KN_ERR_RUNTIME, "%s", msg);
}

/* A rank other than 0 waits longer for rank 0 than rank 0 waits for anyone, so that rank 0's
 * report of the rank it waited for arrives first. */
static double deadline(const comm_tcp *t) {
    double slack = t->rank == 0 ? 0 : t->timeout_s / 2 < 5 ? t->timeout_s / 2 : 5;
    return now_s() + t->timeout_s + slack;
}

static kn_status *send_msg(comm_tcp *t, int fd, int peer, int kind, const void *buf, size_t bytes, double dl) {
    tcp_hdr h = {TCP_MAGIC, (uint32_t)kind, t->rank, t->size, t->seq, bytes};
    int err = io_full(fd, &h, sizeof h, true, dl);
    if (!err && bytes) err = io_full(fd, (void *)buf, bytes, true, dl);
    return err ? fail(t, kind, peer, err) : NULL;
}

/* Receives the header of message kind from peer and checks it; *bytes: the payload's size. */
static kn_status *recv_hdr(comm_tcp *t, int fd, int peer, int kind, uint64_t want_bytes, double dl) {
    tcp_hdr h;
    int err = io_full(fd, &h, sizeof h, false, dl);
    if (err) return fail(t, kind, peer, err);
    if (h.magic == TCP_MAGIC && h.kind == K_ABORT && peer == 0 && h.bytes < 4096) {
        char msg[4096];
        err = io_full(fd, msg, (size_t)h.bytes, false, now_s() + 1);
        msg[err || !h.bytes ? 0 : h.bytes - 1] = 0;
        t->failed = true;
        return kn_error(KN_ERR_RUNTIME, "communicator (tcp): rank %d: rank 0 stopped the job: %s", t->rank, msg);
    }
    if (h.magic != TCP_MAGIC || h.rank != peer || h.kind != (uint32_t)kind || h.seq != t->seq ||
        h.bytes != want_bytes) {
        t->failed = true;
        char msg[512];
        snprintf(msg, sizeof msg,
                 "communicator (tcp): rank %d is in %s #%llu (%llu bytes) but rank %d sent %s #%llu (%llu bytes): the "
                 "ranks are out of step (a different command line or data?)",
                 t->rank, kind_name[kind], (unsigned long long)t->seq, (unsigned long long)want_bytes, (int)h.rank,
                 h.magic == TCP_MAGIC && h.kind <= K_ABORT ? kind_name[h.kind] : "garbage", (unsigned long long)h.seq,
                 (unsigned long long)h.bytes);
        pass_on(t, peer, msg);
        return kn_error(KN_ERR_RUNTIME, "%s", msg);
    }
    return NULL;
}

static kn_status *recv_payload(comm_tcp *t, int fd, int peer, int kind, void *buf, size_t bytes, double dl) {
    int err = bytes ? io_full(fd, buf, bytes, false, dl) : 0;
    return err ? fail(t, kind, peer, err) : NULL;
}

static kn_status *rendezvous_root(comm_tcp *t, int port, double timeout_s) {
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    KN_CHECK(ls >= 0, KN_ERR_RUNTIME, "communicator (tcp): socket: %s", strerror(errno));
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = INADDR_ANY};
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, t->size) < 0) {
        int e = errno;
        close(ls);
        return kn_error(KN_ERR_RUNTIME, "communicator (tcp): rank 0 cannot listen on port %d (MASTER_PORT): %s", port,
                        strerror(e));
    }
    fcntl(ls, F_SETFL, fcntl(ls, F_GETFL, 0) | O_NONBLOCK);
    double dl = now_s() + timeout_s;
    int joined = 1;
    kn_status *st = NULL;
    while (joined < t->size && !st) {
        double left = dl - now_s();
        if (left <= 0) break;
        struct pollfd p = {.fd = ls, .events = POLLIN};
        if (poll(&p, 1, left > 1 ? 1000 : (int)(left * 1000) + 1) <= 0) continue;
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) continue;
        set_socket(fd);
        tcp_hdr h;
        /* a connection that says nothing (a port scanner, a stray client) is dropped, not fatal */
        if (io_full(fd, &h, sizeof h, false, now_s() + (left < 5 ? left : 5)) || h.magic != TCP_MAGIC ||
            h.kind != K_HELLO) {
            close(fd);
            continue;
        }
        if (h.rank <= 0 || h.rank >= t->size || h.size != t->size)
            st = kn_error(KN_ERR_INVALID_ARGUMENT,
                          "communicator (tcp): a process with RANK=%d WORLD_SIZE=%d joined rank 0, whose WORLD_SIZE is "
                          "%d",
                          (int)h.rank, (int)h.size, t->size);
        else if (t->fd[h.rank] >= 0)
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "communicator (tcp): two processes joined as RANK=%d", (int)h.rank);
        if (st) {
            close(fd);
            break;
        }
        t->fd[h.rank] = fd;
        joined++;
    }
    close(ls);
    if (!st && joined < t->size) {
        char missing[256] = "";
        size_t len = 0;
        for (int p = 1; p < t->size; p++)
            if (t->fd[p] < 0 && len + 16 < sizeof missing)
                len += (size_t)snprintf(missing + len, sizeof missing - len, "%s%d", len ? ", " : "", p);
        char msg[512];
        snprintf(msg, sizeof msg,
                 "communicator (tcp): rank 0 waited %.3g s on port %d (MASTER_PORT) for %d of %d ranks; rank%s %s "
                 "never connected",
                 timeout_s, port, t->size - joined, t->size - 1, t->size - joined > 1 ? "s" : "", missing);
        t->failed = true;
        pass_on(t, -1, msg);
        return kn_error(KN_ERR_RUNTIME, "%s", msg);
    }
    if (st) {
        pass_on(t, -1, kn_status_message(st));
        return st;
    }
    for (int p = 1; p < t->size; p++) KN_TRY(send_msg(t, t->fd[p], p, K_HELLO, NULL, 0, now_s() + timeout_s));
    return NULL;
}

static kn_status *rendezvous_peer(comm_tcp *t, const char *addr, int port, double timeout_s) {
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int gai = getaddrinfo(addr, ps, &hints, &res);
    KN_CHECK(!gai && res, KN_ERR_INVALID_ARGUMENT, "communicator (tcp): MASTER_ADDR '%s': %s", addr,
             gai ? gai_strerror(gai) : "no IPv4 address");
    double dl = now_s() + timeout_s;
    int fd = -1, last = 0;
    while (fd < 0 && now_s() < dl) {
        for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
            int s = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
            if (s < 0) continue;
            set_socket(s);
            int r = connect(s, ai->ai_addr, ai->ai_addrlen);
            if (r < 0 && errno == EINPROGRESS) {
                struct pollfd p = {.fd = s, .events = POLLOUT};
                double left = dl - now_s();
                int e = 0;
                socklen_t el = sizeof e;
                r = poll(&p, 1, left > 1 ? 1000 : (int)(left * 1000) + 1) == 1 &&
                        getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0
                    ? 0
                    : -1;
                errno = e ? e : ETIMEDOUT;
            }
            if (r == 0) fd = s;
            else {
                last = errno;
                close(s);
            }
        }
        if (fd < 0) nap_ms(50); /* rank 0 may not listen yet */
    }
    freeaddrinfo(res);
    KN_CHECK(fd >= 0, KN_ERR_RUNTIME,
             "communicator (tcp): rank %d could not reach rank 0 at %s:%d (MASTER_ADDR:MASTER_PORT) within %.3g s: %s",
             t->rank, addr, port, timeout_s, strerror(last ? last : ETIMEDOUT));
    t->fd[0] = fd;
    KN_TRY(send_msg(t, fd, 0, K_HELLO, NULL, 0, dl));
    tcp_hdr h;
    int err = io_full(fd, &h, sizeof h, false, dl + 1);
    if (!err && h.kind == K_ABORT && h.bytes < 4096) {
        char msg[4096];
        err = io_full(fd, msg, (size_t)h.bytes, false, now_s() + 1);
        msg[err || !h.bytes ? 0 : h.bytes - 1] = 0;
        return kn_error(KN_ERR_RUNTIME, "communicator (tcp): rank %d: rank 0 stopped the job: %s", t->rank, msg);
    }
    KN_CHECK(!err && h.magic == TCP_MAGIC && h.kind == K_HELLO, KN_ERR_RUNTIME,
             "communicator (tcp): rank %d connected to rank 0 at %s:%d, but the rendezvous did not complete within "
             "%.3g s (%s)",
             t->rank, addr, port, timeout_s, err ? strerror(err) : "an unexpected answer");
    return NULL;
}

kn_status *comm_tcp_connect(const char *addr, int port, int rank, int size, double timeout_s, comm_tcp **out) {
    *out = NULL;
    KN_CHECK(size >= 1 && rank >= 0 && rank < size, KN_ERR_INVALID_ARGUMENT,
             "communicator (tcp): RANK=%d is not in [0, WORLD_SIZE=%d)", rank, size);
    KN_CHECK(port > 0 && port < 65536, KN_ERR_INVALID_ARGUMENT, "communicator (tcp): MASTER_PORT=%d", port);
    KN_CHECK(addr && *addr, KN_ERR_INVALID_ARGUMENT, "communicator (tcp): MASTER_ADDR is empty");
    comm_tcp *t = calloc(1, sizeof *t);
    if (!t) return KN_OOM(sizeof *t);
    t->rank = rank;
    t->size = size;
    t->timeout_s = timeout_s > 0 ? timeout_s : 300;
    t->fd = malloc(sizeof *t->fd * (size_t)size);
    if (!t->fd) {
        free(t);
        return KN_OOM(sizeof *t->fd * (size_t)size);
    }
    for (int p = 0; p < size; p++) t->fd[p] = -1;
    kn_status *st = NULL;
    if (size > 1)
        st = rank == 0 ? rendezvous_root(t, port, t->timeout_s) : rendezvous_peer(t, addr, port, t->timeout_s);
    if (st) {
        comm_tcp_free(t);
        return st;
    }
    t->seq = 1;
    *out = t;
    return NULL;
}

void comm_tcp_free(comm_tcp *t) {
    if (!t) return;
    for (int p = 0; p < t->size; p++)
        if (t->fd[p] >= 0) close(t->fd[p]);
    free(t->fd);
    free(t->tmp);
    free(t);
}

static kn_status *begin(comm_tcp *t) {
    KN_CHECK(!t->failed, KN_ERR_RUNTIME, "communicator (tcp): rank %d: an earlier collective failed", t->rank);
    return NULL;
}

kn_status *comm_tcp_allreduce_sum_f32(comm_tcp *t, float *const *bufs, const int64_t *n, int k) {
    KN_TRY(begin(t));
    uint64_t total = 0;
    int64_t most = 0;
    for (int i = 0; i < k; i++) {
        total += sizeof(float) * (uint64_t)n[i];
        if (n[i] > most) most = n[i];
    }
    double dl = deadline(t);
    if (t->rank) {
        tcp_hdr h = {TCP_MAGIC, K_ALLREDUCE, t->rank, t->size, t->seq, total};
        int err = io_full(t->fd[0], &h, sizeof h, true, dl);
        for (int i = 0; !err && i < k; i++) err = io_full(t->fd[0], bufs[i], sizeof(float) * (size_t)n[i], true, dl);
        if (err) return fail(t, K_ALLREDUCE, 0, err);
        KN_TRY(recv_hdr(t, t->fd[0], 0, K_ALLREDUCE, total, dl));
        for (int i = 0; i < k; i++)
            KN_TRY(recv_payload(t, t->fd[0], 0, K_ALLREDUCE, bufs[i], sizeof(float) * (size_t)n[i], dl));
        t->seq++;
        return NULL;
    }
    if ((size_t)most > t->tmp_cap) {
        float *p = realloc(t->tmp, sizeof(float) * (size_t)most);
        if (!p) return KN_OOM(sizeof(float) * (size_t)most);
        t->tmp = p;
        t->tmp_cap = (size_t)most;
    }
    /* rank order: ((x0 + x1) + x2) + ..., the same bits on every rank */
    for (int p = 1; p < t->size; p++) {
        KN_TRY(recv_hdr(t, t->fd[p], p, K_ALLREDUCE, total, dl));
        for (int i = 0; i < k; i++) {
            KN_TRY(recv_payload(t, t->fd[p], p, K_ALLREDUCE, t->tmp, sizeof(float) * (size_t)n[i], dl));
            float *b = bufs[i];
            for (int64_t e = 0; e < n[i]; e++) b[e] += t->tmp[e];
        }
    }
    for (int p = 1; p < t->size; p++) {
        tcp_hdr h = {TCP_MAGIC, K_ALLREDUCE, 0, t->size, t->seq, total};
        int err = io_full(t->fd[p], &h, sizeof h, true, dl);
        for (int i = 0; !err && i < k; i++) err = io_full(t->fd[p], bufs[i], sizeof(float) * (size_t)n[i], true, dl);
        if (err) return fail(t, K_ALLREDUCE, p, err);
    }
    t->seq++;
    return NULL;
}

kn_status *comm_tcp_broadcast(comm_tcp *t, void *buf, size_t bytes, int root) {
    KN_TRY(begin(t));
    double dl = deadline(t);
    if (t->rank == 0) {
        if (root != 0) {
            KN_TRY(recv_hdr(t, t->fd[root], root, K_BCAST, bytes, dl));
            KN_TRY(recv_payload(t, t->fd[root], root, K_BCAST, buf, bytes, dl));
        }
        for (int p = 1; p < t->size; p++)
            if (p != root) KN_TRY(send_msg(t, t->fd[p], p, K_BCAST, buf, bytes, dl));
    } else if (t->rank == root) {
        KN_TRY(send_msg(t, t->fd[0], 0, K_BCAST, buf, bytes, dl));
    } else {
        KN_TRY(recv_hdr(t, t->fd[0], 0, K_BCAST, bytes, dl));
        KN_TRY(recv_payload(t, t->fd[0], 0, K_BCAST, buf, bytes, dl));
    }
    t->seq++;
    return NULL;
}

static kn_status *gather_all(comm_tcp *t, int kind, const void *send, size_t bytes, void *recv) {
    KN_TRY(begin(t));
    double dl = deadline(t);
    size_t all = bytes * (size_t)t->size;
    if (t->rank) {
        KN_TRY(send_msg(t, t->fd[0], 0, kind, send, bytes, dl));
        KN_TRY(recv_hdr(t, t->fd[0], 0, kind, all, dl));
        KN_TRY(recv_payload(t, t->fd[0], 0, kind, recv, all, dl));
        t->seq++;
        return NULL;
    }
    if (bytes) memmove(recv, send, bytes);
    for (int p = 1; p < t->size; p++) {
        KN_TRY(recv_hdr(t, t->fd[p], p, kind, bytes, dl));
        KN_TRY(recv_payload(t, t->fd[p], p, kind, (char *)recv + (size_t)p * bytes, bytes, dl));
    }
    for (int p = 1; p < t->size; p++) KN_TRY(send_msg(t, t->fd[p], p, kind, recv, all, dl));
    t->seq++;
    return NULL;
}

kn_status *comm_tcp_allgather(comm_tcp *t, const void *send, size_t bytes, void *recv) {
    return gather_all(t, K_ALLGATHER, send, bytes, recv);
}

kn_status *comm_tcp_barrier(comm_tcp *t) { return gather_all(t, K_BARRIER, NULL, 0, NULL); }
