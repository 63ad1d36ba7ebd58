/* Static memory planner: given each intermediate's size and lifetime (first and last step that
 * touch it), assign offsets in one arena so values alive at the same time never overlap, reusing
 * freed ranges (best fit) and sharing a block in place where the op allows. Device-agnostic: the
 * offsets are bytes from the arena base on whichever device owns it. */
#ifndef KN_PLANNER_H
#define KN_PLANNER_H
#include "runtime/core/status.h"
#include <stddef.h>

typedef struct kn_mem_req {
    size_t bytes;
    int start, end; /* inclusive step range during which the bytes must stay intact */
    int share_with; /* index of an earlier request whose block this one takes over in place, or -1 */
} kn_mem_req;

/* offsets[i] receives the byte offset of request i; *peak the arena size needed. align: power of two. */
kn_status *kn_plan_memory(const kn_mem_req *reqs, int n, size_t align, size_t *offsets, size_t *peak);

#endif
