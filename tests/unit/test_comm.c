/* runtime/comm.h on its own: `test_comm` (unit.test_comm) checks the single-process implementation (the
 * identity collectives, the refusals of a launch this build cannot join); `mpirun -np N test_comm
 * mpi` checks the MPI one: sum all-reduce of several buckets at once (exact: the summands are small
 * integers and halves), the same started one by one (the trainer's overlap), broadcast from the
 * last rank, all-gather, barrier, and that rank and size are MPI's. Exit status 0 when every check held on this rank. */
#include "runtime/comm.h"
#include "runtime/core/status.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static bool ok(kn_status *st) {
    if (!st) return true;
    fprintf(stderr, "FAIL: %s\n", kn_status_message(st));
    kn_status_free(st);
    fails++;
    return false;
}

static void single(void) {
    kn_comm_options o;
    kn_comm_options_init(&o);
    o.backend = "single";
    kn_comm *c = NULL;
    if (!ok(kn_comm_init(&o, &c))) return;
    CHECK(kn_comm_rank(c) == 0 && kn_comm_size(c) == 1 && !strcmp(kn_comm_backend(c), "single"), "single: rank/size");
    float a[3] = {1, 2, 3}, b[2] = {4, 5};
    float *bufs[2] = {a, b};
    int64_t n[2] = {3, 2};
    ok(kn_comm_allreduce_sum_f32(c, bufs, n, 2));
    CHECK(a[0] == 1 && a[2] == 3 && b[1] == 5, "single: the all-reduce is the identity");
    double x = 2.5, y = 0;
    ok(kn_comm_allgather(c, &x, sizeof x, &y));
    CHECK(y == 2.5, "single: all-gather copies (%g)", y);
    ok(kn_comm_broadcast(c, &x, sizeof x, 0));
    ok(kn_comm_barrier(c));
    kn_status *st = kn_comm_broadcast(c, &x, sizeof x, 1);
    CHECK(st && kn_status_get_code(st) == KN_ERR_INVALID_ARGUMENT, "single: broadcast from rank 1 of 1 is refused");
    kn_status_free(st);
    kn_comm_free(c);
    o.backend = "gloo";
    st = kn_comm_init(&o, &c);
    CHECK(st && strstr(kn_status_message(st), "'gloo'"), "an unknown backend is refused by name");
    kn_status_free(st);
    /* NCCL: refused by a build without it or on a machine without a GPU; a lone rank otherwise */
    o.backend = "nccl";
    st = kn_comm_init(&o, &c);
    if (st)
        CHECK(strstr(kn_status_message(st), "without NCCL") || strstr(kn_status_message(st), "CUDA device"),
              "nccl: refused for the reason: %s", kn_status_message(st));
    else {
        CHECK(kn_comm_on_device(c) && !strcmp(kn_comm_backend(c), "nccl/single"), "nccl: a device communicator");
        kn_comm_free(c);
    }
    kn_status_free(st);
    /* a torchrun-style launch is not joined silently as one process: without its rendezvous
     * variables it is refused, naming the first one missing */
    setenv("WORLD_SIZE", "2", 1);
    o.backend = "auto";
    st = kn_comm_init(&o, &c);
    CHECK(st && strstr(kn_status_message(st), "RANK is not set"), "WORLD_SIZE=2 without RANK is refused");
    kn_status_free(st);
    setenv("RANK", "1", 1);
    st = kn_comm_init(&o, &c);
    CHECK(st && strstr(kn_status_message(st), "MASTER_ADDR is not set"), "WORLD_SIZE=2 without MASTER_ADDR is refused");
    kn_status_free(st);
    unsetenv("RANK");
    unsetenv("WORLD_SIZE");
}

static void mpi(void) {
    kn_comm_options o;
    kn_comm_options_init(&o);
    o.timeout_s = 60;
    kn_comm *c = NULL;
    if (!ok(kn_comm_init(&o, &c))) return;
    int r = kn_comm_rank(c), s = kn_comm_size(c);
    const char *env_size = getenv("OMPI_COMM_WORLD_SIZE");
    CHECK(!strcmp(kn_comm_backend(c), "mpi"), "mpi: the backend is %s", kn_comm_backend(c));
    CHECK(!env_size || atoi(env_size) == s, "mpi: size %d is mpirun's %s", s, env_size);
    enum { K = 3 };
    int64_t n[K] = {1, 1000, 70000};
    float *bufs[K];
    for (int k = 0; k < K; k++) {
        bufs[k] = malloc(sizeof(float) * (size_t)n[k]);
        for (int64_t i = 0; i < n[k]; i++) bufs[k][i] = (float)(r + 1) * (float)(i % 7) + 0.5f * (float)k;
    }
    ok(kn_comm_allreduce_sum_f32(c, bufs, n, K));
    double tri = (double)s * (s + 1) / 2;
    for (int k = 0; k < K; k++) {
        int bad = 0;
        for (int64_t i = 0; i < n[k]; i++) bad += bufs[k][i] != (float)(tri * (double)(i % 7) + 0.5 * k * s);
        CHECK(!bad, "mpi: rank %d: bucket %d: %d of %lld sums wrong", r, k, bad, (long long)n[k]);
        free(bufs[k]);
    }
    /* the same all-reduces started one by one (kn_comm_allreduce_begin/start/wait), as the
     * trainer's overlap starts its buckets; out of turn is refused */
    for (int k = 0; k < K; k++) {
        bufs[k] = malloc(sizeof(float) * (size_t)n[k]);
        for (int64_t i = 0; i < n[k]; i++) bufs[k][i] = (float)(r + 1) * (float)(i % 5) + 0.25f * (float)k;
    }
    ok(kn_comm_allreduce_begin(c, K));
    kn_status *bad = kn_comm_allreduce_start(c, 1, bufs[1], n[1]);
    CHECK(bad && kn_status_get_code(bad) == KN_ERR_INVALID_ARGUMENT, "mpi: a start out of turn is refused");
    kn_status_free(bad);
    for (int k = 0; k < K; k++) {
        ok(kn_comm_allreduce_start(c, k, bufs[k], n[k]));
        kn_comm_progress(c);
    }
    ok(kn_comm_allreduce_wait(c));
    for (int k = 0; k < K; k++) {
        int wrong = 0;
        for (int64_t i = 0; i < n[k]; i++) wrong += bufs[k][i] != (float)(tri * (double)(i % 5) + 0.25 * k * s);
        CHECK(!wrong, "mpi: rank %d: one-by-one bucket %d: %d of %lld sums wrong", r, k, wrong, (long long)n[k]);
        free(bufs[k]);
    }
    char msg[32];
    snprintf(msg, sizeof msg, "from rank %d", r);
    ok(kn_comm_broadcast(c, msg, sizeof msg, s - 1));
    char want[32];
    snprintf(want, sizeof want, "from rank %d", s - 1);
    CHECK(!strcmp(msg, want), "mpi: rank %d: broadcast gave '%s'", r, msg);
    int *all = calloc((size_t)s, sizeof *all), mine = 10 * r + 3;
    ok(kn_comm_allgather(c, &mine, sizeof mine, all));
    for (int k = 0; k < s; k++) CHECK(all[k] == 10 * k + 3, "mpi: rank %d: all-gather[%d] = %d", r, k, all[k]);
    free(all);
    ok(kn_comm_barrier(c));
    CHECK(!kn_comm_failed(c), "mpi: no collective failed");
    printf("rank %d of %d: %s\n", r, s, fails ? "FAIL" : "ok");
    kn_comm_free(c);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "mpi")) mpi();
    else single();
    return fails ? 1 : 0;
}
