/* The TCP communicator of torchrun-style launches (runtime/comm_tcp.c through runtime/comm.h), on
 * 2, 3 and 4 forked processes on 127.0.0.1 with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set as
 * torchrun sets them: the rendezvous, a 128-byte blob (NCCL's unique id) broadcast from rank 0 and
 * all-gathered, the sum all-reduce of several buckets (small integers and halves, exact: the
 * values unit.comm_mpi checks for MPI; and random floats, equal on every rank to the rank-order
 * sum, bit for bit), a broadcast from the last rank, a barrier. Then the failures, each within a
 * short deadline and naming what did not come: a rank that never starts (rank 0 names it, the
 * others get rank 0's report), rank 0 absent (the others name MASTER_ADDR:MASTER_PORT), a rank
 * that dies before a collective and one that hangs in it. */
#include "runtime/comm.h"
#include "runtime/core/status.h"
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int fails;
#define CHECK(c, ...) \
    do { \
        if (!(c)) { \
            fails++; \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__); \
            fputc('\n', stderr); \
        } \
    } while (0)

/* A port nobody listens on now (the kernel's choice of a free one). */
static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(s, (struct sockaddr *)&a, &len) < 0) {
        perror("free_port");
        exit(2);
    }
    close(s);
    return ntohs(a.sin_port);
}

static void set_env(int rank, int size, int port) {
    char b[32];
    snprintf(b, sizeof b, "%d", rank);
    setenv("RANK", b, 1);
    setenv("LOCAL_RANK", b, 1);
    snprintf(b, sizeof b, "%d", size);
    setenv("WORLD_SIZE", b, 1);
    snprintf(b, sizeof b, "%d", port);
    setenv("MASTER_PORT", b, 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
}

static kn_status *init(double timeout_s, kn_comm **c) {
    kn_comm_options o;
    kn_comm_options_init(&o);
    o.timeout_s = timeout_s;
    return kn_comm_init(&o, c);
}

/* splitmix: every rank can compute every rank's inputs */
static float rnd(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) / 9007199254740992.0 * 2 - 1);
}

/* One rank of a healthy job: returns its failure count (the child's exit status). */
static int healthy_rank(int rank, int size, int port) {
    set_env(rank, size, port);
    kn_comm *c = NULL;
    kn_status *st = init(60, &c);
    if (st) {
        fprintf(stderr, "FAIL rank %d: %s\n", rank, kn_status_message(st));
        return 1;
    }
    CHECK(kn_comm_rank(c) == rank && kn_comm_size(c) == size && !strcmp(kn_comm_backend(c), "tcp") &&
              kn_comm_local_rank(c) == rank && !kn_comm_on_device(c),
          "rank %d: rank %d size %d backend %s", rank, kn_comm_rank(c), kn_comm_size(c), kn_comm_backend(c));
    /* NCCL's id: rank 0's 128 bytes everywhere */
    unsigned char id[128], want[128];
    for (int i = 0; i < 128; i++) {
        want[i] = (unsigned char)(i * 7 + 3);
        id[i] = rank == 0 ? want[i] : 0;
    }
    if ((st = kn_comm_broadcast(c, id, sizeof id, 0))) goto out;
    CHECK(!memcmp(id, want, sizeof id), "rank %d: the 128-byte blob from rank 0", rank);
    unsigned char *all = malloc(128 * (size_t)size), mine[128];
    for (int i = 0; i < 128; i++) mine[i] = (unsigned char)(rank * 31 + i);
    if ((st = kn_comm_allgather(c, mine, sizeof mine, all))) goto out;
    int bad = 0;
    for (int p = 0; p < size; p++)
        for (int i = 0; i < 128; i++) bad += all[p * 128 + i] != (unsigned char)(p * 31 + i);
    CHECK(!bad, "rank %d: all-gather of 128-byte blobs: %d bytes wrong", rank, bad);
    free(all);
    /* exact sums (unit.comm_mpi's values) and random floats */
    enum { K = 4 };
    int64_t n[K] = {1, 1000, 70000, 3};
    float *bufs[K];
    for (int k = 0; k < 3; k++) {
        bufs[k] = malloc(sizeof(float) * (size_t)n[k]);
        for (int64_t i = 0; i < n[k]; i++) bufs[k][i] = (float)(rank + 1) * (float)(i % 7) + 0.5f * (float)k;
    }
    bufs[3] = malloc(sizeof(float) * 3);
    uint64_t seed = 1000 + (uint64_t)rank;
    for (int i = 0; i < 3; i++) bufs[3][i] = rnd(&seed);
    if ((st = kn_comm_allreduce_sum_f32(c, bufs, n, K))) goto out;
    double tri = (double)size * (size + 1) / 2;
    for (int k = 0; k < 3; k++) {
        bad = 0;
        for (int64_t i = 0; i < n[k]; i++) bad += bufs[k][i] != (float)(tri * (double)(i % 7) + 0.5 * k * size);
        CHECK(!bad, "rank %d: bucket %d: %d of %lld sums wrong", rank, k, bad, (long long)n[k]);
        free(bufs[k]);
    }
    float ref[3] = {0, 0, 0};
    for (int p = 0; p < size; p++) {
        uint64_t s = 1000 + (uint64_t)p;
        for (int i = 0; i < 3; i++) ref[i] = p == 0 ? rnd(&s) : ref[i] + rnd(&s);
    }
    CHECK(!memcmp(ref, bufs[3], sizeof ref), "rank %d: random floats: %.9g %.9g %.9g, rank order gives %.9g %.9g %.9g",
          rank, bufs[3][0], bufs[3][1], bufs[3][2], ref[0], ref[1], ref[2]);
    free(bufs[3]);
    /* the buckets started one by one (the trainer's overlap): over TCP each completes at once */
    float one[2] = {(float)rank, 1}, two[3] = {2, 2, (float)rank};
    if ((st = kn_comm_allreduce_begin(c, 2)) || (st = kn_comm_allreduce_start(c, 0, one, 2)) ||
        (st = kn_comm_allreduce_start(c, 1, two, 3)) || (st = kn_comm_allreduce_wait(c)))
        goto out;
    CHECK(one[0] == (float)(size * (size - 1) / 2) && one[1] == (float)size && two[0] == 2.0f * (float)size &&
              two[2] == one[0],
          "rank %d: one-by-one all-reduces: %g %g %g %g", rank, one[0], one[1], two[0], two[2]);
    char msg[32], wmsg[32];
    snprintf(msg, sizeof msg, "from rank %d", rank);
    snprintf(wmsg, sizeof wmsg, "from rank %d", size - 1);
    if ((st = kn_comm_broadcast(c, msg, sizeof msg, size - 1))) goto out;
    CHECK(!strcmp(msg, wmsg), "rank %d: broadcast from the last rank gave '%s'", rank, msg);
    if ((st = kn_comm_barrier(c))) goto out;
    CHECK(!kn_comm_failed(c), "rank %d: no collective failed", rank);
out:
    if (st) {
        fprintf(stderr, "FAIL rank %d: %s\n", rank, kn_status_message(st));
        kn_status_free(st);
        fails++;
    }
    kn_comm_free(c);
    return fails;
}

/* One rank of a broken job: its first collective (or the rendezvous) must fail with a message
 * holding every string of want (NULL-terminated); mode: 0 normal, 1 exits after the rendezvous,
 * 2 sleeps past the deadline, 3 survives (it is the peer of the broken rank), 4 never starts. */
static int broken_rank(int rank, int size, int port, int mode, const char *const *want) {
    set_env(rank, size, port);
    kn_comm *c = NULL;
    kn_status *st = init(1.5, &c);
    if (!st && mode == 1) _exit(0); /* dies: its socket closes */
    if (!st && mode == 2) {
        sleep(6);
        kn_comm_free(c);
        return 0;
    }
    if (!st) {
        float x[4] = {1, 2, 3, 4}, *b = x;
        int64_t n = 4;
        st = kn_comm_allreduce_sum_f32(c, &b, &n, 1);
    }
    int bad = 0;
    if (!st) {
        fprintf(stderr, "FAIL rank %d: no error\n", rank);
        bad = 1;
    } else {
        for (int i = 0; want[i]; i++)
            if (!strstr(kn_status_message(st), want[i])) bad = 1;
        fprintf(stderr, "%s rank %d: %s\n", bad ? "FAIL" : "ok  ", rank, kn_status_message(st));
    }
    kn_status_free(st);
    kn_comm_free(c);
    return bad;
}

typedef struct scenario {
    const char *what;
    int size, start_from; /* ranks start_from .. size - 1 are started */
    int mode[4];
    const char *want[4][4];
} scenario;

static int spawn(int rank, int size, int port, const scenario *sc) {
    pid_t pid = fork();
    if (pid == 0) {
        int r = sc ? broken_rank(rank, size, port, sc->mode[rank], sc->want[rank]) : healthy_rank(rank, size, port);
        fflush(stderr);
        _exit(r ? 1 : 0);
    }
    return pid;
}

static void run(const char *what, int size, const scenario *sc) {
    int port = free_port(), pids[4], ok = 1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = sc ? sc->start_from : 0; r < size; r++)
        if (!sc || sc->mode[r] != 4) pids[r] = spawn(r, size, port, sc);
    for (int r = sc ? sc->start_from : 0; r < size; r++) {
        if (sc && sc->mode[r] == 4) continue;
        int status = 0;
        waitpid(pids[r], &status, 0);
        if (!(sc && sc->mode[r] == 2) && (!WIFEXITED(status) || WEXITSTATUS(status))) ok = 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    CHECK(ok, "%s", what);
    printf("%s %s (%.2f s)\n", ok ? "ok  " : "FAIL", what, s);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    run("2 ranks: rendezvous, blob, all-reduce, broadcast, all-gather, barrier", 2, NULL);
    run("3 ranks: the same", 3, NULL);
    run("4 ranks: the same", 4, NULL);
    static const scenario never = {.what = "rank 2 never starts",
                                   .size = 3,
                                   .mode = {0, 3, 4, 0},
                                   .want = {{"rank 2 never connected", "MASTER_PORT", NULL},
                                            {"rank 0 stopped the job", "rank 2 never connected", NULL}}};
    run("3 ranks, rank 2 never starts: rank 0 names it, rank 1 reports rank 0's message", 3, &never);
    static const scenario no_root = {.what = "rank 0 absent",
                                     .size = 2,
                                     .start_from = 1,
                                     .mode = {0, 0},
                                     .want = {{NULL}, {"could not reach rank 0 at 127.0.0.1:", NULL}}};
    run("2 ranks, rank 0 absent: rank 1 names MASTER_ADDR:MASTER_PORT", 2, &no_root);
    static const scenario dies = {.what = "rank 2 dies",
                                  .size = 3,
                                  .mode = {0, 3, 1},
                                  .want = {{"rank 2 closed its connection", "all-reduce", NULL},
                                           {"rank 0 stopped the job", "rank 2 closed", NULL}}};
    run("3 ranks, rank 2 dies before the all-reduce: named at once", 3, &dies);
    static const scenario hangs = {
        .what = "rank 1 hangs",
        .size = 3,
        .mode = {0, 2, 3},
        .want = {{"waited 1.5 s", "for rank 1", NULL}, {NULL}, {"rank 0 stopped the job", "for rank 1", NULL}}};
    run("3 ranks, rank 1 hangs in the all-reduce: rank 0 names it after the deadline", 3, &hangs);
    return fails ? 1 : 0;
}
