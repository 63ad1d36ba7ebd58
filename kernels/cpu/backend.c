/* The CPU backend's function table: kernels come from the op table (kn_cpu_<op>, one per row of
 * graph/ops.def), memory is host memory, and copies are memcpy. Its whole-graph hook packs the
 * constant weights of MatMul and Gemm once per model, as ONNX Runtime's kernels pre-pack them:
 * products with few rows otherwise spend much of their time repacking the same weights. MatMulNBits'
 * constant scales and zero points are decoded to float32 once the same way, the recurrent ops'
 * W and R packed, and Conv's constant weights packed into the GEMM's A panels (conv_prep.h);
 * control-flow bodies get the same treatment. */
#include "graph/ops.h"
#include "kernels/cpu/conv_prep.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/nbits.h"
#include "kernels/cpu/rnn.h"
#include <stdlib.h>
#include <string.h>

static const kn_kernel_fn kn_cpu_kernels[KN_OP_COUNT] = {
#define KN_OP(id, name, domain, inplace, params, grad) [KN_OP_##id] = kn_cpu_##id,
#include "graph/ops.def"
#undef KN_OP
};

static kn_kernel_fn cpu_kernel(const kn_backend *b, int op) {
    return op >= 0 && op < KN_OP_COUNT ? kn_cpu_kernels[op] : NULL;
}
static bool cpu_supports(const kn_backend *b, const kn_node *n, const kn_tensor *const *in, int n_in) {
    return cpu_kernel(b, n->op) != NULL;
}
static void *cpu_alloc(const kn_backend *b, size_t bytes) {
    void *p = NULL;
    /* 64-byte alignment for AVX-512 loads */
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) return NULL;
    return p;
}
static void cpu_free(const kn_backend *b, void *p) { free(p); }
static kn_status *cpu_copy(const kn_backend *b, void *dst, kn_device_kind dd, const void *src, kn_device_kind sd,
                           size_t n) {
    if (n) memmove(dst, src, n);
    return NULL;
}

static void cpu_packed_free(void *p) {
    kn_sgemm_packed_release(p);
    free(p);
}

/* RNN / GRU / LSTM with constant float32 W and R: both packed once (kernels/cpu/rnn.h). */
static kn_status *cpu_prepare_rnn(kn_graph *g, kn_node *n) {
    if ((n->op != KN_OP_RNN && n->op != KN_OP_GRU && n->op != KN_OP_LSTM) || n->prepared || n->n_inputs < 3 ||
        n->inputs[1] < 0 || n->inputs[2] < 0)
        return NULL;
    kn_rnn_packed *pk = NULL;
    KN_TRY(kn_rnn_prepare(g->values[n->inputs[1]].constant, g->values[n->inputs[2]].constant, &pk));
    if (pk) {
        n->prepared = pk;
        n->prepared_free = kn_rnn_prepared_free;
    }
    return NULL;
}

static kn_status *cpu_graph_optimize(const kn_backend *b, kn_graph *g);

/* The bodies of If, Loop and Scan (graph attributes) run the same kernels, once per run or per
 * iteration: their constant weights are prepared the same way. */
static kn_status *cpu_prepare_bodies(const kn_backend *b, kn_node *n) {
    for (int a = 0; a < n->n_attrs; a++)
        if (n->attrs[a].type == KN_ATTR_GRAPH && n->attrs[a].g) KN_TRY(cpu_graph_optimize(b, n->attrs[a].g));
    return NULL;
}

/* A 2-D float32 constant weight B of MatMul(A, B) or Gemm(A, B, C) (not transA): packed once. */
static kn_status *cpu_graph_optimize(const kn_backend *b, kn_graph *g) {
    for (int i = 0; i < g->n_nodes; i++) {
        kn_node *n = &g->nodes[i];
        KN_TRY(cpu_prepare_bodies(b, n));
        KN_TRY(cpu_prepare_rnn(g, n));
        /* MatMulNBits: constant scales and zero points decoded to float32 once (and a constant B
         * packed for the level 4 decode loop) */
        if (n->op == KN_OP_MsMatMulNBits && !n->prepared && n->n_inputs > 2 && n->inputs[2] >= 0) {
            const kn_tensor *sc = g->values[n->inputs[2]].constant;
            const kn_tensor *bq = n->inputs[1] >= 0 ? g->values[n->inputs[1]].constant : NULL;
            bool zp_given = n->n_inputs > 3 && n->inputs[3] >= 0;
            const kn_tensor *zp = zp_given ? g->values[n->inputs[3]].constant : NULL;
            if (!sc || (zp_given && !zp)) continue;
            kn_nbits_prepared *pr = NULL;
            KN_TRY(kn_nbits_prepare(n, bq, sc, zp, &pr));
            if (pr) {
                n->prepared = pr;
                n->prepared_free = kn_nbits_prepared_free;
            }
            continue;
        }
        if ((n->op == KN_OP_Conv || n->op == KN_OP_MsFusedConv) && !n->prepared) {
            KN_TRY(kn_conv_prepare(g, n));
            continue;
        }
        if ((n->op != KN_OP_MatMul && n->op != KN_OP_Gemm) || n->n_inputs < 2 || n->inputs[1] < 0 || n->prepared)
            continue;
        const kn_tensor *w = g->values[n->inputs[1]].constant;
        /* A's dtype must match B's: the kernels check it on every run and use the packing for float32 only */
        if (!w || w->dtype != KN_F32 || w->ndim != 2 || !w->data) continue;
        bool tb = false;
        if (n->op == KN_OP_Gemm) {
            const kn_params_gemm *p = KN_PARAMS(n, gemm);
            if (p->trans_a) continue;
            tb = p->trans_b;
        }
        int64_t K = tb ? w->dims[1] : w->dims[0], N = tb ? w->dims[0] : w->dims[1];
        if (K <= 0 || N <= 0) continue;
        kn_sgemm_packed *pk = malloc(sizeof *pk);
        if (!pk) return KN_OOM(sizeof *pk);
        if (!kn_sgemm_pack_b(tb, K, N, w->data, w->dims[1], pk)) {
            free(pk);
            return KN_OOM((size_t)(K * N) * sizeof(float));
        }
        n->prepared = pk;
        n->prepared_free = cpu_packed_free;
    }
    return NULL;
}

static const kn_backend kn_cpu = {
    .name = "cpu",
    .device = KN_DEVICE_CPU,
    .kernel = cpu_kernel,
    .supports = cpu_supports,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy = cpu_copy,
    .graph_optimize = cpu_graph_optimize,
};

const kn_backend *kn_cpu_backend(void) { return &kn_cpu; }
