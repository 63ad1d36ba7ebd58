/* Where the scale and zero point of each element of a QuantizeLinear / DequantizeLinear live
 * (per tensor, per axis or blocked), decided once per call on the host and read per element by
 * both the CPU kernels (kernels/cpu/quant.c) and the CUDA ones (kernels/cuda/quant.cu), so the
 * two backends cannot disagree on which scale an element takes. */
#pragma once

#include "graph/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_qmap {
    int kind; /* 0 per tensor, 1 per axis, 2 blocked */
    int64_t inner, axdim, sdim, block;
} kn_qmap;

#if defined(__CUDACC__)
#define KN_QMAP_FN __host__ __device__ static inline
#else
#define KN_QMAP_FN static inline
#endif

/* The index into scale / zero point of flat element i of the quantised tensor. */
KN_QMAP_FN int64_t kn_qmap_index(const kn_qmap *m, int64_t i) {
    if (m->kind == 0) return 0;
    int64_t inner_i = i % m->inner, a = (i / m->inner) % m->axdim;
    if (m->kind == 1) return a;
    int64_t outer = i / (m->inner * m->axdim);
    return (outer * m->sdim + a / m->block) * m->inner + inner_i;
}

/* Checks scale and zero point against x (the node's axis and block_size) and fills m; the
 * error names the node and both shapes. */
kn_status *kn_qmap_make(const kn_node *node, const kn_tensor *x, const kn_tensor *scale, const kn_tensor *zp,
                        kn_qmap *m);

#ifdef __cplusplus
}
#endif
