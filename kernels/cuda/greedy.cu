// Text generation's greedy token choice on the device (kn_backend.greedy, used by
// pipelines/pl_generate.c): the logits of a decode step stay in device memory and only one int32
// id per row comes back. The choice equals the CPU generator's scan (best = 0, then i wherever
// x[i] > x[best]): the lowest id of the largest logit, a NaN never chosen unless it is at id 0
// (then nothing beats it and 0 is the answer). So NaN elements count as (-inf, no id) in a
// (value, id) maximum, and id 0 being NaN is checked at the end. The repetition penalty, when
// asked, is applied to the row's distinct earlier ids first, in place, with the CPU's arithmetic.
// Two passes for a real GPU: blocks of GREEDY_THREADS over chunks of a row (coalesced loads, warp
// shuffles, one shared-memory step), then a warp per row over the chunks' winners.
// Top-k sampling's candidates (kn_backend.topk) the same way: each chunk, staged in shared memory,
// gives its k best by k rounds of that maximum, each strictly after the last in the CPU sampler's
// order; a block per row then takes the k best of the chunks' candidates.
#include "kernels/cuda/cuda_common.h"
#include <string.h>

#define GREEDY_THREADS 256
#define GREEDY_CHUNK 4096 /* elements per block of the first pass */

// (value, id) with id INT32_MAX for "no candidate": larger value wins, then the lower id
__device__ static inline bool greedy_better(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

__device__ static inline void greedy_warp_max(float &v, int &i) {
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (greedy_better(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
}

__global__ void greedy_penalty_kernel(float *x, const int64_t *row_off, int64_t vocab, const int32_t *pen_ids,
                                      const int32_t *pen_off, float penalty) {
    int r = blockIdx.x;
    float *row = x + row_off[r];
    for (int k = pen_off[r] + threadIdx.x; k < pen_off[r + 1]; k += blockDim.x) {
        int32_t t = pen_ids[k];
        if (t < 0 || t >= vocab) continue;
        float v = row[t];
        row[t] = v < 0 ? v * penalty : v / penalty;
    }
}

// grid (chunks, rows): part[r * chunks + c] = the chunk's best (value, id)
__global__ void greedy_chunk_kernel(float *part_v, int *part_i, const float *x, const int64_t *row_off, int64_t vocab,
                                    int chunks) {
    KN_SHARED(float, sv, GREEDY_THREADS / 32);
    KN_SHARED(int, si, GREEDY_THREADS / 32);
    int c = blockIdx.x, r = blockIdx.y;
    const float *row = x + row_off[r];
    int64_t lo = (int64_t)c * GREEDY_CHUNK, hi = lo + GREEDY_CHUNK < vocab ? lo + GREEDY_CHUNK : vocab;
    float bv = -INFINITY;
    int bi = INT32_MAX;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        float v = row[i];
        if (v == v && greedy_better(v, (int)i, bv, bi)) { // ascending ids: a tie keeps the first
            bv = v;
            bi = (int)i;
        }
    }
    greedy_warp_max(bv, bi);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sv[warp] = bv;
        si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        int nw = blockDim.x >> 5;
        bv = lane < nw ? sv[lane] : -INFINITY;
        bi = lane < nw ? si[lane] : INT32_MAX;
        greedy_warp_max(bv, bi);
        if (lane == 0) {
            part_v[(int64_t)r * chunks + c] = bv;
            part_i[(int64_t)r * chunks + c] = bi;
        }
    }
}

// a warp per row: the chunks' winners, then the CPU scan's rule for a NaN at id 0 (and a row with no
// candidate at all, all NaN: id 0 too)
__global__ void greedy_final_kernel(int32_t *ids, const float *part_v, const int *part_i, const float *x,
                                    const int64_t *row_off, int chunks) {
    int r = blockIdx.x, lane = threadIdx.x;
    float bv = -INFINITY;
    int bi = INT32_MAX;
    for (int c = lane; c < chunks; c += 32) {
        float v = part_v[(int64_t)r * chunks + c];
        int i = part_i[(int64_t)r * chunks + c];
        if (greedy_better(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
    greedy_warp_max(bv, bi);
    if (lane == 0) {
        float x0 = x[row_off[r]];
        ids[r] = x0 != x0 || bi == INT32_MAX ? 0 : bi;
    }
}

// ---- top-k for sampling: the k best (value, id) in the CPU sort's order (value descending, then id
// ascending), which is the order of the greedy choice repeated: round j takes the best element
// strictly after round j - 1's. NaN is not ordered (the CPU's sort has no order for it): a row
// holding one is flagged, and the caller takes the host path. ----

// (v, i) comes strictly after (pv, pi) in the order; never true for a NaN v
__device__ static inline bool topk_after(float v, int i, float pv, int pi) { return v < pv || (v == pv && i > pi); }

// the block's best (v, i) after the previous pick, left in (*bv, *bi) of every thread; sv/si hold a
// value per warp, sb the broadcast pair
__device__ static inline void topk_block_max(float &bv, int &bi, KN_SHARED_PTR(float) sv, KN_SHARED_PTR(int) si,
                                             KN_SHARED_PTR(float) sbv, KN_SHARED_PTR(int) sbi) {
    greedy_warp_max(bv, bi);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sv[warp] = bv;
        si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        int nw = blockDim.x >> 5;
        bv = lane < nw ? sv[lane] : -INFINITY;
        bi = lane < nw ? si[lane] : INT32_MAX;
        greedy_warp_max(bv, bi);
        if (lane == 0) {
            sbv[0] = bv;
            sbi[0] = bi;
        }
    }
    __syncthreads();
    bv = sbv[0];
    bi = sbi[0];
}

// grid (chunks, rows): the chunk's k best into part[(r * chunks + c) * k + j] (sentinel (-inf,
// INT32_MAX) past its end), part_nan[r * chunks + c] whether it holds a NaN. The chunk sits in
// shared memory for the k rounds.
__global__ void topk_chunk_kernel(float *part_v, int *part_i, int *part_nan, const float *x, const int64_t *row_off,
                                  int64_t vocab, int chunks, int k) {
    KN_SHARED(float, xs, GREEDY_CHUNK);
    KN_SHARED(float, sv, GREEDY_THREADS / 32);
    KN_SHARED(int, si, GREEDY_THREADS / 32);
    KN_SHARED(float, sbv, 1);
    KN_SHARED(int, sbi, 1);
    int c = blockIdx.x, r = blockIdx.y;
    const float *row = x + row_off[r];
    int64_t lo = (int64_t)c * GREEDY_CHUNK;
    int n = (int)(lo + GREEDY_CHUNK < vocab ? GREEDY_CHUNK : vocab - lo);
    int nan_seen = 0;
    for (int t = threadIdx.x; t < n; t += blockDim.x) {
        float v = row[lo + t];
        xs[t] = v;
        nan_seen |= v != v;
    }
    // the NaN flag as a maximum over the block (a NaN-free chunk: 0)
    float fv = (float)nan_seen;
    int fi = 0;
    topk_block_max(fv, fi, sv, si, sbv, sbi);
    if (threadIdx.x == 0) part_nan[(int64_t)r * chunks + c] = fv > 0;
    float pv = INFINITY;
    int pi = -1; // before everything, +inf included
    for (int j = 0; j < k; j++) {
        float bv = -INFINITY;
        int bi = INT32_MAX;
        for (int t = threadIdx.x; t < n; t += blockDim.x) {
            float v = xs[t];
            int id = (int)(lo + t);
            if (topk_after(v, id, pv, pi) && greedy_better(v, id, bv, bi)) {
                bv = v;
                bi = id;
            }
        }
        topk_block_max(bv, bi, sv, si, sbv, sbi);
        if (threadIdx.x == 0) {
            part_v[((int64_t)r * chunks + c) * k + j] = bv;
            part_i[((int64_t)r * chunks + c) * k + j] = bi;
        }
        pv = bv;
        pi = bi;
    }
}

// a block per row: the k best of the chunks' candidates, and the row's NaN flag
__global__ void topk_final_kernel(float *vals, int32_t *ids, int *nan_out, const float *part_v, const int *part_i,
                                  const int *part_nan, int chunks, int k) {
    KN_SHARED(float, sv, GREEDY_THREADS / 32);
    KN_SHARED(int, si, GREEDY_THREADS / 32);
    KN_SHARED(float, sbv, 1);
    KN_SHARED(int, sbi, 1);
    int r = blockIdx.x;
    int64_t m = (int64_t)chunks * k;
    const float *cv = part_v + (int64_t)r * m;
    const int *ci = part_i + (int64_t)r * m;
    float fv = 0;
    int fi = 0;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) fv = part_nan[(int64_t)r * chunks + c] ? 1.0f : fv;
    topk_block_max(fv, fi, sv, si, sbv, sbi);
    if (threadIdx.x == 0) nan_out[r] = fv > 0;
    float pv = INFINITY;
    int pi = -1;
    for (int j = 0; j < k; j++) {
        float bv = -INFINITY;
        int bi = INT32_MAX;
        for (int64_t t = threadIdx.x; t < m; t += blockDim.x) {
            float v = cv[t];
            int id = ci[t];
            if (id != INT32_MAX && topk_after(v, id, pv, pi) && greedy_better(v, id, bv, bi)) {
                bv = v;
                bi = id;
            }
        }
        topk_block_max(bv, bi, sv, si, sbv, sbi);
        if (threadIdx.x == 0) {
            vals[(int64_t)r * k + j] = bv;
            ids[(int64_t)r * k + j] = bi;
        }
        pv = bv;
        pi = bi;
    }
}

static size_t greedy_align(size_t n) { return (n + 255) & ~(size_t)255; }

// k == 0: the greedy ids into ids[rows]; k > 0: the top k into vals/ids[rows * k] and nan[rows]
static kn_status *greedy_run(const kn_backend *b, float *logits, int rows, const int64_t *row_off, int64_t vocab,
                             const int32_t *pen_ids, const int32_t *pen_off, float penalty, int k, float *vals,
                             int32_t *ids, uint8_t *nan) {
    if (rows <= 0) return NULL;
    if (k < 0 || k > KN_TOPK_MAX || k > vocab)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "top-k on %s: k %d (at most %d and the vocabulary, %lld)", b->name, k,
                        KN_TOPK_MAX, (long long)vocab);
    if (vocab <= 0 || vocab > INT32_MAX)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "greedy on %s: vocabulary of %lld ids", b->name, (long long)vocab);
    if (rows > 65535) return kn_error(KN_ERR_INVALID_ARGUMENT, "greedy on %s: %d rows (at most 65535)", b->name, rows);
    int chunks = (int)((vocab + GREEDY_CHUNK - 1) / GREEDY_CHUNK);
    int n_pen = pen_off ? pen_off[rows] : 0;
    // scratch in the run queue's own workspace (nothing else uses it while we hold the queue)
    size_t o_off = 0, o_poff = o_off + greedy_align(sizeof(int64_t) * (size_t)rows);
    size_t o_pid = o_poff + greedy_align(sizeof(int32_t) * (size_t)(rows + 1));
    size_t o_pv = o_pid + greedy_align(sizeof(int32_t) * (size_t)(n_pen ? n_pen : 1));
    size_t kk = (size_t)(k ? k : 1);
    size_t o_pi = o_pv + greedy_align(sizeof(float) * (size_t)rows * (size_t)chunks * kk);
    size_t o_pn = o_pi + greedy_align(sizeof(int) * (size_t)rows * (size_t)chunks * kk);
    size_t o_ids = o_pn + greedy_align(sizeof(int) * (size_t)rows * (size_t)chunks);
    size_t o_vals = o_ids + greedy_align(sizeof(int32_t) * (size_t)rows * kk);
    size_t o_nan = o_vals + greedy_align(sizeof(float) * (size_t)rows * kk);
    size_t need = o_nan + greedy_align(sizeof(int) * (size_t)rows);
    void *sp = NULL;
    KN_TRY(b->stream_begin(b, &sp));
    kn_cuda_stream *s = (kn_cuda_stream *)sp;
    kn_status *st = NULL;
    char *ws = (char *)s->ws;
    if (need > s->ws_bytes)
        st = kn_error(KN_ERR_INVALID_ARGUMENT, "greedy on %s: %d rows and %d penalised ids need %zu bytes of scratch",
                      b->name, rows, n_pen, need);
    if (!st) st = b->copy_async(b, ws + o_off, b->device, row_off, KN_DEVICE_CPU, sizeof(int64_t) * (size_t)rows, sp);
    if (!st && n_pen) {
        st = b->copy_async(b, ws + o_poff, b->device, pen_off, KN_DEVICE_CPU, sizeof(int32_t) * (size_t)(rows + 1), sp);
        if (!st)
            st = b->copy_async(b, ws + o_pid, b->device, pen_ids, KN_DEVICE_CPU, sizeof(int32_t) * (size_t)n_pen, sp);
        if (!st) {
            KN_LAUNCH(greedy_penalty_kernel, rows, GREEDY_THREADS, 0, s->s, logits, (const int64_t *)(ws + o_off),
                      vocab, (const int32_t *)(ws + o_pid), (const int32_t *)(ws + o_poff), penalty);
            cudaError_t e = cudaGetLastError();
            if (e != cudaSuccess) st = kn_cuda_err(e, NULL, "the greedy repetition penalty kernel");
        }
    }
    if (!st && k) {
        KN_LAUNCH(topk_chunk_kernel, dim3((unsigned)chunks, (unsigned)rows), GREEDY_THREADS, 0, s->s,
                  (float *)(ws + o_pv), (int *)(ws + o_pi), (int *)(ws + o_pn), (const float *)logits,
                  (const int64_t *)(ws + o_off), vocab, chunks, k);
        cudaError_t e = cudaGetLastError();
        if (e == cudaSuccess) {
            KN_LAUNCH(topk_final_kernel, rows, GREEDY_THREADS, 0, s->s, (float *)(ws + o_vals), (int32_t *)(ws + o_ids),
                      (int *)(ws + o_nan), (const float *)(ws + o_pv), (const int *)(ws + o_pi),
                      (const int *)(ws + o_pn), chunks, k);
            e = cudaGetLastError();
        }
        if (e != cudaSuccess) st = kn_cuda_err(e, NULL, "the top-k kernels");
        // k candidates per row come back, and the NaN flags
        int *nf = new int[rows];
        if (!st)
            st = b->copy_async(b, ids, KN_DEVICE_CPU, ws + o_ids, b->device, sizeof(int32_t) * (size_t)rows * kk, sp);
        if (!st)
            st = b->copy_async(b, vals, KN_DEVICE_CPU, ws + o_vals, b->device, sizeof(float) * (size_t)rows * kk, sp);
        if (!st) st = b->copy_async(b, nf, KN_DEVICE_CPU, ws + o_nan, b->device, sizeof(int) * (size_t)rows, sp);
        for (int r = 0; r < rows && !st; r++) nan[r] = (uint8_t)(nf[r] != 0);
        delete[] nf;
    } else if (!st) {
        KN_LAUNCH(greedy_chunk_kernel, dim3((unsigned)chunks, (unsigned)rows), GREEDY_THREADS, 0, s->s,
                  (float *)(ws + o_pv), (int *)(ws + o_pi), (const float *)logits, (const int64_t *)(ws + o_off), vocab,
                  chunks);
        cudaError_t e = cudaGetLastError();
        if (e == cudaSuccess) {
            KN_LAUNCH(greedy_final_kernel, rows, 32, 0, s->s, (int32_t *)(ws + o_ids), (const float *)(ws + o_pv),
                      (const int *)(ws + o_pi), (const float *)logits, (const int64_t *)(ws + o_off), chunks);
            e = cudaGetLastError();
        }
        if (e != cudaSuccess) st = kn_cuda_err(e, NULL, "the greedy argmax kernels");
        // only the ids come back
        if (!st) st = b->copy_async(b, ids, KN_DEVICE_CPU, ws + o_ids, b->device, sizeof(int32_t) * (size_t)rows, sp);
    }
    kn_status *st2 = b->stream_end(b, sp);
    if (!st) return st2;
    kn_status_free(st2);
    return st;
}

kn_status *kn_cuda_greedy(const kn_backend *b, float *logits, int rows, const int64_t *row_off, int64_t vocab,
                          const int32_t *pen_ids, const int32_t *pen_off, float penalty, int32_t *ids) {
    return greedy_run(b, logits, rows, row_off, vocab, pen_ids, pen_off, penalty, 0, NULL, ids, NULL);
}

kn_status *kn_cuda_topk(const kn_backend *b, float *logits, int rows, const int64_t *row_off, int64_t vocab,
                        const int32_t *pen_ids, const int32_t *pen_off, float penalty, int k, float *vals, int32_t *ids,
                        uint8_t *nan) {
    if (k < 1) return kn_error(KN_ERR_INVALID_ARGUMENT, "top-k on %s: k %d < 1", b->name, k);
    return greedy_run(b, logits, rows, row_off, vocab, pen_ids, pen_off, penalty, k, vals, ids, nan);
}
