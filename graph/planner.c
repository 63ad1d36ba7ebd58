/* Best-fit offset assignment over value lifetimes (see planner.h). Requests are placed in order of
 * their start step; a block is free again once the step after its last use begins. */
#include "graph/planner.h"
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    size_t off, size;
    int end;
    int owner;
} kn_block;

static int kn_req_order(const void *a, const void *b, void *ctx) {
    const kn_mem_req *r = ctx;
    int ia = *(const int *)a, ib = *(const int *)b;
    if (r[ia].start != r[ib].start) return r[ia].start - r[ib].start;
    return ia - ib;
}

kn_status *kn_plan_memory(const kn_mem_req *reqs, int n, size_t align, size_t *offsets, size_t *peak) {
    *peak = 0;
    if (n <= 0) return NULL;
    if (align == 0 || (align & (align - 1)))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "planner: alignment %zu is not a power of two", align);
    int *order = malloc(sizeof(int) * (size_t)n);
    kn_block *live = malloc(sizeof(kn_block) * (size_t)n);
    int *block_of = malloc(sizeof(int) * (size_t)n); /* request -> index in live (or -1) */
    if (!order || !live || !block_of) {
        free(order);
        free(live);
        free(block_of);
        return KN_OOM(0);
    }
    for (int i = 0; i < n; i++) {
        order[i] = i;
        block_of[i] = -1;
    }
    qsort_r(order, (size_t)n, sizeof(int), kn_req_order, (void *)reqs);

    int n_live = 0; /* live blocks kept sorted by offset */
    size_t top = 0;
    kn_status *st = NULL;
    for (int k = 0; k < n; k++) {
        int i = order[k];
        const kn_mem_req *r = &reqs[i];
        if (r->start > r->end) {
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "planner: request %d ends (%d) before it starts (%d)", i, r->end,
                          r->start);
            break;
        }
        /* expire blocks whose last use is before this step */
        int w = 0;
        for (int b = 0; b < n_live; b++) {
            if (live[b].end >= r->start) live[w++] = live[b];
        }
        n_live = w;
        size_t need = (r->bytes + align - 1) & ~(align - 1);
        if (need == 0) need = align;
        int shared = -1;
        if (r->share_with >= 0 && r->share_with < n) {
            for (int b = 0; b < n_live; b++)
                if (live[b].owner == r->share_with && live[b].size >= need) {
                    shared = b;
                    break;
                }
        }
        if (shared >= 0) {
            offsets[i] = live[shared].off;
            if (r->end > live[shared].end) live[shared].end = r->end;
            live[shared].owner = i;
            continue;
        }
        /* best fit among the gaps between live blocks (sorted by offset), else the end */
        size_t best_off = SIZE_MAX, best_gap = SIZE_MAX, cursor = 0;
        for (int b = 0; b <= n_live; b++) {
            size_t gap_end = b < n_live ? live[b].off : SIZE_MAX;
            if (gap_end >= cursor && gap_end - cursor >= need) {
                size_t gap = gap_end - cursor;
                if (gap < best_gap || best_off == SIZE_MAX) {
                    best_gap = gap;
                    best_off = cursor;
                }
            }
            if (b < n_live) cursor = live[b].off + live[b].size;
        }
        offsets[i] = best_off;
        int pos = 0;
        while (pos < n_live && live[pos].off < best_off) pos++;
        for (int b = n_live; b > pos; b--) live[b] = live[b - 1];
        live[pos] = (kn_block){best_off, need, r->end, i};
        n_live++;
        if (best_off + need > top) top = best_off + need;
    }
    free(order);
    free(live);
    free(block_of);
    if (!st) *peak = top;
    return st;
}
