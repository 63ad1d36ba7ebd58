/* Standalone kn_sgemm benchmark and cross-check (not built by CMake). Prints GFLOP/s per shape,
 * by wall time and per CPU-second (steadier on a shared machine). From the repo root:
 *   F="-O2 -std=c11 -D_GNU_SOURCE -I runtime -I ."
 *   gcc $F -c kernels/cpu/gemm.c -o /tmp/g.o
 *   gcc $F -mavx2 -mfma -mf16c -c kernels/cpu/gemm_avx2.c -o /tmp/g2.o
 *   gcc $F -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c -c kernels/cpu/gemm_avx512.c -o /tmp/g5.o
 *   gcc $F -DKN_BENCH_OWN_POOL tools/bench/gemm_bench.c /tmp/g.o /tmp/g2.o /tmp/g5.o -lm -lpthread -o /tmp/gbench
 *   /tmp/gbench THREADS [ISA: 0 auto, 1 scalar, 2 avx2, 3 avx512]
 * KN_BENCH_OWN_POOL supplies a minimal pthread stand-in for the runtime's pool. */
#include "kernels/cpu/gemm.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifdef KN_BENCH_OWN_POOL
/* A minimal two-level stand-in for the runtime pool: one pthread per extra thread per call. */
#include <pthread.h>
struct kn_threadpool {
    int n;
};
kn_threadpool *kn_threadpool_create(int n) {
    kn_threadpool *p = malloc(sizeof *p);
    p->n = n;
    return p;
}
void kn_threadpool_free(kn_threadpool *p) { free(p); }
int kn_threadpool_size(const kn_threadpool *p) { return p ? p->n : 1; }
typedef struct {
    kn_range_fn fn;
    void *ctx;
    int64_t b, e;
} bench_chunk;
static void *bench_run(void *a) {
    bench_chunk *c = a;
    c->fn(c->ctx, c->b, c->e);
    return NULL;
}
void kn_parallel_for(kn_threadpool *p, int64_t n, int64_t grain, kn_range_fn fn, void *ctx) {
    int T = p ? p->n : 1;
    if (T > 16) T = 16;
    if (T <= 1 || n <= grain) {
        fn(ctx, 0, n);
        return;
    }
    pthread_t th[16];
    bench_chunk ch[16];
    int64_t per = (n + T - 1) / T;
    int used = 0;
    for (int t = 0; t < T; t++) {
        int64_t b = t * per, e = b + per < n ? b + per : n;
        if (b >= e) break;
        ch[t] = (bench_chunk){fn, ctx, b, e};
        used++;
    }
    for (int t = 1; t < used; t++) pthread_create(&th[t], NULL, bench_run, &ch[t]);
    bench_run(&ch[0]);
    for (int t = 1; t < used; t++) pthread_join(th[t], NULL);
}
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU time of the whole process: on a shared machine this is steadier than wall time. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    int isa = argc > 2 ? atoi(argv[2]) : 0;
    kn_threadpool *pool = kn_threadpool_create(threads);
    static const int64_t shapes[][3] = {
        {4096, 1536, 384}, {4096, 384, 1536}, {4096, 384, 384}, {4096, 1152, 384}, {128, 128, 32},
        {1, 1536, 384},    {4, 3072, 768},    {64, 64, 64},     {17, 33, 65},
    };
    printf("isa %s, %d threads\n", kn_sgemm_isa_name(isa), threads);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N);
        float *C = malloc(sizeof(float) * M * N), *R = malloc(sizeof(float) * M * N);
        for (int64_t i = 0; i < M * K; i++) A[i] = (float)((i * 7 % 13) - 6) / 7.0f;
        for (int64_t i = 0; i < K * N; i++) B[i] = (float)((i * 5 % 11) - 5) / 5.0f;
        kn_sgemm_isa(pool, isa, false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
        double flops = 2.0 * M * N * K;
        int reps = (int)(2e10 / flops / 8) + 1;
        if (reps > 2000) reps = 2000;
        double t0 = now(), c0 = cpu_now();
        for (int r = 0; r < reps; r++) kn_sgemm_isa(pool, isa, false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
        double dt = (now() - t0) / reps, ct = (cpu_now() - c0) / reps;
        double err = 0;
        if (M * N * K <= (int64_t)1 << 31) {
            kn_sgemm_ref(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, R, N);
            for (int64_t i = 0; i < M * N; i++) err = fmax(err, fabs(C[i] - R[i]));
        }
        printf("%5lld x %5lld x %5lld  %8.3f ms  %7.1f GFLOP/s wall  %7.1f GFLOP/s per cpu-second  maxerr %.2e\n",
               (long long)M, (long long)N, (long long)K, dt * 1e3, flops / dt * 1e-9, flops / ct * 1e-9, err);
        free(A);
        free(B);
        free(C);
        free(R);
    }
    kn_threadpool_free(pool);
    return 0;
}
