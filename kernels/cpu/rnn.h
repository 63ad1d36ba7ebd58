/* The float32 weights of RNN, GRU and LSTM packed once per model for the recurrent driver
 * (kernels/cpu/rnn.c): W and R of each direction in the GEMM's panel layout, so neither the input
 * product nor the per-step recurrent product repacks (or, for a few rows, re-reads in dot-product
 * order) the same constant weights on every run. The CPU backend's graph_optimize hook makes them
 * and keeps them in the node's prepared slot; the kernel uses them only when they describe the W
 * and R it is given. */
#ifndef KN_CPU_RNN_H
#define KN_CPU_RNN_H
#include "kernels/cpu/gemm.h"

typedef struct kn_rnn_packed {
    int dirs;
    const void *w_src, *r_src;  /* the data of the W and R they were packed from */
    kn_sgemm_packed w[2], r[2]; /* per direction: op(B) = W_d^T (I x GH) and R_d^T (H x GH) */
} kn_rnn_packed;

struct kn_tensor;
/* W [dirs, GH, I] and R [dirs, GH, H] float32 constants packed into *out; *out stays NULL for
 * shapes the kernel would reject (it then reports them). */
kn_status *kn_rnn_prepare(const struct kn_tensor *W, const struct kn_tensor *R, kn_rnn_packed **out);
void kn_rnn_prepared_free(void *p);

#endif
