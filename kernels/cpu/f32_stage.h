/* Float32 staging for the kernels that compute in float32 whatever their tensors' float dtype
 * (the com.microsoft contrib and text-generation ops): an input read as float32 in place or
 * through a converted scratch copy, an output written in place or staged and converted once at
 * the end. Scratch comes from the node's arena (kn_scratch_alloc), so nothing is freed here. */
#ifndef KN_CPU_F32_STAGE_H
#define KN_CPU_F32_STAGE_H
#include "graph/ops.h"
#include "runtime/core/dtype.h"
#include <stdbool.h>

static inline bool kn_cpu_f32_stageable(kn_dtype t) {
    return t == KN_F32 || t == KN_F64 || t == KN_F16 || t == KN_BF16;
}

/* t as float32: its own data when float32, else a converted scratch copy. */
static inline kn_status *kn_cpu_f32_view(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *t, const float **out) {
    if (t->dtype == KN_F32) {
        *out = (const float *)t->data;
        return NULL;
    }
    if (!kn_cpu_f32_stageable(t->dtype)) return kn_err_dtype(node, t);
    int64_t n = kn_numel(t);
    float *f = kn_scratch_alloc(ctx, (size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!f) return KN_OOM((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) f[i] = kn_load_f32(t->data, t->dtype, i);
    *out = f;
    return NULL;
}

/* Where float32 results for t go before kn_cpu_f32_commit: t itself when float32. */
static inline kn_status *kn_cpu_f32_dest(kn_exec_ctx *ctx, const kn_tensor *t, float **out) {
    if (t->dtype == KN_F32) {
        *out = (float *)t->data;
        return NULL;
    }
    int64_t n = kn_numel(t);
    float *f = kn_scratch_alloc(ctx, (size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!f) return KN_OOM((size_t)n * sizeof(float));
    *out = f;
    return NULL;
}

/* Converts staged results f into t (nothing to do when t is float32: f is its data). */
static inline void kn_cpu_f32_commit(kn_tensor *t, const float *f) {
    if (t->dtype == KN_F32) return;
    int64_t n = kn_numel(t);
    for (int64_t i = 0; i < n; i++) kn_store_f32(t->data, t->dtype, i, f[i]);
}

#endif
