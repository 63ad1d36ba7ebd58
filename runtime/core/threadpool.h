/* A fixed pool of worker threads for data-parallel loops. kn_parallel_for splits [0, n) into
 * chunks of at least `grain` items; the calling thread works too. Safe to call from several
 * threads at once (each call is its own job); nested calls run serially in the caller. */
#ifndef KN_THREADPOOL_H
#define KN_THREADPOOL_H
#include <stdint.h>

typedef struct kn_threadpool kn_threadpool;
kn_threadpool *kn_threadpool_create(int n_threads); /* n_threads <= 0: one per core */
void kn_threadpool_free(kn_threadpool *p);
int kn_threadpool_size(const kn_threadpool *p); /* threads including the caller */
/* fn(ctx, begin, end) over disjoint ranges covering [0, n). pool may be NULL (serial). */
typedef void (*kn_range_fn)(void *ctx, int64_t begin, int64_t end);
void kn_parallel_for(kn_threadpool *p, int64_t n, int64_t grain, kn_range_fn fn, void *ctx);

#endif
