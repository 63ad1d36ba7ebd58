/* Operand checks and index geometry of ops whose CPU reference and CUDA kernel must refuse the
 * same inputs with the same message: defined beside each op's CPU kernel, called by both, so a
 * rule changes in one place. */
#pragma once

#include "graph/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ScatterND: indices [..., k] with 1 <= k <= rank(data), updates = indices.shape[:-1] +
 * data.shape[k:]; slice is the product of data.shape[k:], tuples the number of index tuples. */
kn_status *kn_check_scatternd(const kn_node *node, const kn_tensor *x, const kn_tensor *ind, const kn_tensor *u,
                              int64_t *k, int64_t *slice, int64_t *tuples);

/* CumSum / CumProd: the axis input (an int32/int64 scalar) normalised against x. */
kn_status *kn_check_cum_axis(const kn_node *node, const kn_tensor *const *in, int n_in, int *axis);

/* com.microsoft Attention: input [B,S,D], weights [D, q + k + v] (qkv_hidden_sizes or three equal
 * parts), heads dividing both hidden sizes, bias [q + k + v]. */
typedef struct kn_msatt_dims {
    int64_t B, S, Din, Dtot, N, H, Hv; /* H, Hv: the query/key and value head sizes */
} kn_msatt_dims;
kn_status *kn_check_ms_attention(const kn_node *node, const kn_tensor *x, const kn_tensor *w, const kn_tensor *bias,
                                 kn_msatt_dims *d);

#ifdef __cplusplus
}
#endif
