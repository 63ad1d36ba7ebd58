/* Fixed worker pool for data-parallel loops. Each kn_parallel_for call is a job on a shared list:
 * workers and the caller claim chunks with an atomic counter, so several callers (concurrent
 * session runs) share the workers without blocking each other. A worker that calls
 * kn_parallel_for again runs the inner loop serially, which keeps nesting deadlock-free.
 * Workers waiting for work, and a caller waiting for its job's last chunks, spin briefly before
 * they sleep: a model runs many short parallel loops back to back, and a futex wake-up (tens of
 * microseconds on a virtual machine, 10-14% of a MiniLM run's samples) costs more than the gap
 * between two of them. */
#include "runtime/core/threadpool.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct kn_job {
    kn_range_fn fn;
    void *ctx;
    int64_t n, chunk, n_chunks;
    atomic_int_fast64_t next; /* next chunk to claim */
    atomic_int_fast64_t done; /* chunks finished */
    int users;                /* workers holding a pointer to this job (under the pool mutex) */
    struct kn_job *prev, *nextj;
} kn_job;

struct kn_threadpool {
    int n_workers;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* a job was posted or shutdown */
    pthread_cond_t done_cv; /* a job finished */
    kn_job *jobs;           /* doubly linked list of jobs with unclaimed chunks */
    bool stop;
    atomic_uint_fast64_t posted; /* jobs posted (and shutdown): what a spinning worker watches */
};

/* pause iterations of a spin (about 0.1-0.3 ms, by the CPU's pause latency) */
enum { KN_POOL_SPIN = 2000 };

static inline void kn_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static _Thread_local bool kn_in_worker;

static void kn_job_unlink(kn_threadpool *p, kn_job *j) {
    if (j->prev) j->prev->nextj = j->nextj;
    else if (p->jobs == j) p->jobs = j->nextj;
    if (j->nextj) j->nextj->prev = j->prev;
    j->prev = j->nextj = NULL;
}

/* Run chunks of j until none are left; returns how many this thread ran. */
static int64_t kn_job_work(kn_job *j) {
    int64_t ran = 0;
    for (;;) {
        int64_t c = atomic_fetch_add(&j->next, 1);
        if (c >= j->n_chunks) break;
        int64_t b = c * j->chunk, e = b + j->chunk < j->n ? b + j->chunk : j->n;
        j->fn(j->ctx, b, e);
        ran++;
    }
    return ran;
}

static void *kn_worker_main(void *arg) {
    kn_threadpool *p = arg;
    kn_in_worker = true;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (!p->stop && !p->jobs) {
            uint_fast64_t seen = atomic_load_explicit(&p->posted, memory_order_relaxed);
            pthread_mutex_unlock(&p->mu);
            for (int i = 0; i < KN_POOL_SPIN && atomic_load_explicit(&p->posted, memory_order_acquire) == seen; i++)
                kn_cpu_relax();
            pthread_mutex_lock(&p->mu);
        }
        while (!p->stop && !p->jobs) pthread_cond_wait(&p->work_cv, &p->mu);
        if (p->stop) break;
        kn_job *j = p->jobs;
        j->users++; /* the caller's stack frame must outlive our use of j */
        pthread_mutex_unlock(&p->mu);
        int64_t ran = kn_job_work(j);
        pthread_mutex_lock(&p->mu);
        /* all chunks claimed: nobody else should pick this job up */
        if (atomic_load(&j->next) >= j->n_chunks && (j->prev || j->nextj || p->jobs == j)) kn_job_unlink(p, j);
        if (ran) atomic_fetch_add(&j->done, ran);
        j->users--;
        pthread_cond_broadcast(&p->done_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

kn_threadpool *kn_threadpool_create(int n_threads) {
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    kn_threadpool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_workers = n_threads - 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    atomic_init(&p->posted, 0);
    if (p->n_workers > 0) {
        p->threads = calloc((size_t)p->n_workers, sizeof *p->threads);
        if (!p->threads) {
            free(p);
            return NULL;
        }
        for (int i = 0; i < p->n_workers; i++)
            if (pthread_create(&p->threads[i], NULL, kn_worker_main, p) != 0) {
                p->n_workers = i;
                break;
            }
    }
    return p;
}

void kn_threadpool_free(kn_threadpool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    atomic_fetch_add(&p->posted, 1);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p);
}

int kn_threadpool_size(const kn_threadpool *p) { return p ? p->n_workers + 1 : 1; }

void kn_parallel_for(kn_threadpool *p, int64_t n, int64_t grain, kn_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int threads = kn_threadpool_size(p);
    if (!p || p->n_workers == 0 || kn_in_worker || n <= grain) {
        fn(ctx, 0, n);
        return;
    }
    /* a few chunks per thread balance uneven work without much claiming overhead */
    int64_t chunk = (n + (int64_t)threads * 4 - 1) / ((int64_t)threads * 4);
    if (chunk < grain) chunk = grain;
    kn_job j = {.fn = fn, .ctx = ctx, .n = n, .chunk = chunk, .n_chunks = (n + chunk - 1) / chunk};
    atomic_init(&j.next, 0);
    atomic_init(&j.done, 0);
    if (j.n_chunks == 1) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&p->mu);
    j.nextj = p->jobs;
    if (p->jobs) p->jobs->prev = &j;
    p->jobs = &j;
    atomic_fetch_add(&p->posted, 1);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);

    kn_in_worker = true; /* nested loops inside fn run serially */
    int64_t ran = kn_job_work(&j);
    kn_in_worker = false;
    for (int i = 0; i < KN_POOL_SPIN && atomic_load_explicit(&j.done, memory_order_acquire) + ran < j.n_chunks; i++)
        kn_cpu_relax();

    pthread_mutex_lock(&p->mu);
    if (j.prev || j.nextj || p->jobs == &j) kn_job_unlink(p, &j);
    atomic_fetch_add(&j.done, ran);
    while (atomic_load(&j.done) < j.n_chunks || j.users > 0) pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
