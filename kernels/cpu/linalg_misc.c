/* CPU kernels for the matrix-product ops (MatMul, Gemm, MatMulInteger, QLinearMatMul), Einsum and
 * Det. float32 goes through kn_sgemm; float16/bfloat16 are widened to float32 around it; the
 * 8-bit integer products use the int16-pair integer GEMM; double and the other integer MatMul
 * types use plain loops. Two-operand float32 Einsums lower to a batched sgemm, the rest run a
 * plain loop over the label space. */
#include "graph/ops.h"
#include "graph/op_helpers.h"
#include "kernels/cpu/elementwise_simd.h"
#include "kernels/cpu/gemm.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Every kernel has the one signature the op table wants; not all use every argument. */
#pragma GCC diagnostic ignored "-Wunused-parameter"

#define DESC(t, buf) kn_tensor_desc((t), (buf), sizeof(buf))

/* ---------------------------------------------------------------- helpers */

static bool is_half(kn_dtype t) { return t == KN_F16 || t == KN_BF16; }

/* A float32 view of a float16/bfloat16/float32 tensor (converted into scratch when needed). */
static float *as_f32(kn_exec_ctx *ctx, const kn_tensor *t) {
    if (t->dtype == KN_F32) return (float *)t->data;
    int64_t n = kn_numel(t);
    float *f = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!f) return NULL;
    const uint16_t *h = t->data;
    if (t->dtype == KN_F16)
        for (int64_t i = 0; i < n; i++) f[i] = kn_f16_to_f32(h[i]);
    else if (t->dtype == KN_BF16)
        for (int64_t i = 0; i < n; i++) f[i] = kn_bf16_to_f32(h[i]);
    else
        for (int64_t i = 0; i < n; i++) f[i] = (float)kn_get_f64(t, i);
    return f;
}

static void store_from_f32(kn_tensor *t, const float *f) {
    int64_t n = kn_numel(t);
    uint16_t *h = t->data;
    if (t->dtype == KN_F16)
        for (int64_t i = 0; i < n; i++) h[i] = kn_f32_to_f16(f[i]);
    else if (t->dtype == KN_BF16)
        for (int64_t i = 0; i < n; i++) h[i] = kn_f32_to_bf16(f[i]);
}

/* Batch structure of a numpy matmul: output batch index -> matrix index in A and in B. */
typedef struct mm_geom {
    int64_t M, N, K, nbatch;
    int nbd;
    int64_t bdims[KN_MAX_DIMS], sa[KN_MAX_DIMS], sb[KN_MAX_DIMS];
    int64_t a_mats, b_mats; /* matrices stored in A and B */
} mm_geom;

static kn_status *mm_geom_init(const char *op, const kn_tensor *a, const kn_tensor *b, const kn_tensor *out,
                               mm_geom *g) {
    char ba[KN_DESC_LEN], bb[KN_DESC_LEN];
    memset(g, 0, sizeof *g);
    if (a->ndim < 1 || b->ndim < 1)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: scalar operand (%s, %s)", op, DESC(a, ba), DESC(b, bb));
    g->M = a->ndim == 1 ? 1 : a->dims[a->ndim - 2];
    g->K = a->dims[a->ndim - 1];
    int64_t kb = b->ndim == 1 ? b->dims[0] : b->dims[b->ndim - 2];
    g->N = b->ndim == 1 ? 1 : b->dims[b->ndim - 1];
    if (kb != g->K)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: inner dims differ: %s x %s", op, DESC(a, ba), DESC(b, bb));
    int nba = a->ndim >= 2 ? a->ndim - 2 : 0, nbb = b->ndim >= 2 ? b->ndim - 2 : 0;
    g->nbd = nba > nbb ? nba : nbb;
    g->nbatch = 1;
    g->a_mats = g->b_mats = 1;
    int64_t st_a = 1, st_b = 1;
    for (int i = g->nbd - 1; i >= 0; i--) {
        int ia = i - (g->nbd - nba), ib = i - (g->nbd - nbb);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: batch dims do not broadcast: %s x %s", op, DESC(a, ba),
                            DESC(b, bb));
        g->bdims[i] = da > db ? da : db;
        if (da == 0 || db == 0) g->bdims[i] = 0;
        g->sa[i] = da == 1 ? 0 : st_a;
        g->sb[i] = db == 1 ? 0 : st_b;
        st_a *= da;
        st_b *= db;
        g->nbatch *= g->bdims[i];
    }
    g->a_mats = st_a;
    g->b_mats = st_b;
    if (kn_numel(out) != g->nbatch * g->M * g->N)
        return kn_error(KN_ERR_RUNTIME, "%s: output %s does not match %s x %s", op, DESC(out, ba), DESC(a, ba),
                        DESC(b, bb));
    return NULL;
}

static void mm_offsets(const mm_geom *g, int64_t bi, int64_t *ia, int64_t *ib) {
    int64_t oa = 0, ob = 0;
    for (int i = g->nbd - 1; i >= 0; i--) {
        int64_t d = g->bdims[i] ? bi % g->bdims[i] : 0;
        bi = g->bdims[i] ? bi / g->bdims[i] : 0;
        oa += d * g->sa[i];
        ob += d * g->sb[i];
    }
    *ia = oa;
    *ib = ob;
}

/* C[batch] = A[batch] * B[batch] in float32, using one big or one batched sgemm when the batch
 * layout allows it. */
static void matmul_f32(kn_threadpool *pool, const mm_geom *g, const float *A, const float *B, float *C,
                       const kn_sgemm_packed *packed) {
    int64_t M = g->M, N = g->N, K = g->K;
    if (g->nbatch == 0 || M == 0 || N == 0) return;
    if (g->b_mats == 1 && g->a_mats == g->nbatch) {
        /* Activations times weights: the batch folds into M. */
        if (packed && packed->B == B && packed->K == K && packed->N == N && !packed->trans_b)
            kn_sgemm_packed_run(pool, g->nbatch * M, 1.0f, A, K, packed, 0.0f, C, N);
        else kn_sgemm(pool, false, false, g->nbatch * M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
    } else if (g->a_mats == g->nbatch && g->b_mats == g->nbatch) {
        kn_sgemm_batched(pool, false, false, g->nbatch, M, N, K, 1.0f, A, K, M * K, B, N, K * N, 0.0f, C, N, M * N);
    } else if (g->a_mats == 1 && g->b_mats == g->nbatch) {
        kn_sgemm_batched(pool, false, false, g->nbatch, M, N, K, 1.0f, A, K, 0, B, N, K * N, 0.0f, C, N, M * N);
    } else {
        for (int64_t bi = 0; bi < g->nbatch; bi++) {
            int64_t ia, ib;
            mm_offsets(g, bi, &ia, &ib);
            kn_sgemm(pool, false, false, M, N, K, 1.0f, A + ia * M * K, K, B + ib * K * N, N, 0.0f, C + bi * M * N, N);
        }
    }
}

/* ---------------------------------------------------------------- MatMul */

kn_status *kn_cpu_MatMul(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    const kn_tensor *a = in[0], *b = in[1];
    kn_tensor *y = out[0];
    mm_geom g;
    KN_TRY(mm_geom_init("MatMul", a, b, y, &g));
    if (a->dtype != b->dtype) return kn_err_dtype(node, b);
    int64_t M = g.M, N = g.N, K = g.K;
    switch (a->dtype) {
    case KN_F32: matmul_f32(ctx->pool, &g, a->data, b->data, y->data, node->prepared); return NULL;
    case KN_F16:
    case KN_BF16: {
        float *fa = as_f32(ctx, a), *fb = as_f32(ctx, b);
        float *fc = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(kn_numel(y) > 0 ? kn_numel(y) : 1));
        if (!fa || !fb || !fc) return KN_OOM(kn_nbytes(y));
        matmul_f32(ctx->pool, &g, fa, fb, fc, NULL);
        store_from_f32(y, fc);
        return NULL;
    }
    case KN_F64:
        for (int64_t bi = 0; bi < g.nbatch; bi++) {
            int64_t ia, ib;
            mm_offsets(&g, bi, &ia, &ib);
            kn_dgemm_plain(M, N, K, (const double *)a->data + ia * M * K, (const double *)b->data + ib * K * N,
                           (double *)y->data + bi * M * N);
        }
        return NULL;
    case KN_I32:
    case KN_I64:
    case KN_U32:
    case KN_U64:
    case KN_I8:
    case KN_U8:
    case KN_I16:
    case KN_U16: {
        int64_t na = kn_numel(a), nb = kn_numel(b);
        int64_t *ia64 = kn_scratch_alloc(ctx, sizeof(int64_t) * (size_t)(na + nb + M * N + 1));
        if (!ia64) return KN_OOM(sizeof(int64_t) * (size_t)(na + nb + M * N));
        int64_t *ib64 = ia64 + na, *ic64 = ib64 + nb;
        for (int64_t i = 0; i < na; i++) ia64[i] = kn_get_i64(a, i);
        for (int64_t i = 0; i < nb; i++) ib64[i] = kn_get_i64(b, i);
        for (int64_t bi = 0; bi < g.nbatch; bi++) {
            int64_t ia, ib;
            mm_offsets(&g, bi, &ia, &ib);
            kn_igemm_plain(M, N, K, ia64 + ia * M * K, ib64 + ib * K * N, ic64);
            for (int64_t i = 0; i < M * N; i++) kn_set_i64(y, bi * M * N + i, ic64[i]);
        }
        return NULL;
    }
    default: return kn_err_dtype(node, a);
    }
}

/* ---------------------------------------------------------------- Gemm */

/* FusedGemm's activation over n float32 values in place: Relu, Sigmoid and Tanh on the elementwise
 * ops' SIMD rows (so the fused op rounds as Gemm followed by that op does), the rest in plain loops
 * the compiler vectorises where it can. */
void kn_gemm_activation_f32(const kn_params_gemm *p, float *y, int64_t n) {
    float a = p->act_alpha, b = p->act_beta, g = p->act_gamma;
    switch (p->act) {
    case KN_GEMM_ACT_NONE: return;
    case KN_GEMM_ACT_RELU: kn_ew_unary_f32_level(kn_ew_best_level(), KN_EW_RELU, y, y, n); return;
    case KN_GEMM_ACT_SIGMOID: kn_ew_unary_f32_level(kn_ew_best_level(), KN_EW_SIGMOID, y, y, n); return;
    case KN_GEMM_ACT_TANH: kn_ew_unary_f32_level(kn_ew_best_level(), KN_EW_TANH, y, y, n); return;
    case KN_GEMM_ACT_LEAKY_RELU:
        for (int64_t i = 0; i < n; i++) y[i] = y[i] < 0.0f ? a * y[i] : y[i];
        return;
    case KN_GEMM_ACT_HARD_SIGMOID:
        for (int64_t i = 0; i < n; i++) y[i] = fmaxf(0.0f, fminf(1.0f, a * y[i] + b));
        return;
    case KN_GEMM_ACT_CLIP:
        for (int64_t i = 0; i < n; i++) y[i] = y[i] < a ? a : y[i] > b ? b : y[i];
        return;
    case KN_GEMM_ACT_THRESHOLDED_RELU:
        for (int64_t i = 0; i < n; i++) y[i] = y[i] > a ? y[i] : 0.0f;
        return;
    case KN_GEMM_ACT_SOFTSIGN:
        for (int64_t i = 0; i < n; i++) y[i] = y[i] / (1.0f + fabsf(y[i]));
        return;
    default: break;
    }
    for (int64_t i = 0; i < n; i++) {
        float v = y[i];
        switch (p->act) {
        case KN_GEMM_ACT_ELU: v = v < 0.0f ? a * expm1f(v) : v; break;
        case KN_GEMM_ACT_SELU: v = v > 0.0f ? g * v : g * a * expm1f(v); break;
        case KN_GEMM_ACT_CELU: v = fmaxf(0.0f, v) + fminf(0.0f, a * expm1f(v / a)); break;
        case KN_GEMM_ACT_SOFTPLUS: v = v > 0.0f ? v + log1pf(expf(-v)) : log1pf(expf(v)); break;
        case KN_GEMM_ACT_PARAMETRIC_SOFTPLUS: {
            float x = b * v;
            v = a * (x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x)));
            break;
        }
        case KN_GEMM_ACT_SCALED_TANH: v = a * tanhf(b * v); break;
        default: break;
        }
        y[i] = v;
    }
}

/* Gemm and FusedGemm: Y = act(alpha op(A) op(B) + beta C), the activation (none for Gemm) applied
 * to the float32 result before a 16-bit output is rounded. */
static kn_status *gemm_run(kn_exec_ctx *ctx, const kn_node *node, const char *op, const kn_tensor *const *in, int n_in,
                           kn_tensor *const *out) {
    const kn_tensor *a = in[0], *b = in[1], *c = n_in > 2 ? in[2] : NULL;
    kn_tensor *y = out[0];
    char ba[KN_DESC_LEN], bb[KN_DESC_LEN];
    if (a->ndim != 2 || b->ndim != 2)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: operands must be 2-D, got %s and %s", op, DESC(a, ba),
                        DESC(b, bb));
    const kn_params_gemm *gp = KN_PARAMS(node, gemm);
    bool ta = gp->trans_a, tb = gp->trans_b;
    float alpha = gp->alpha, beta = gp->beta;
    int64_t M = ta ? a->dims[1] : a->dims[0], K = ta ? a->dims[0] : a->dims[1];
    int64_t K2 = tb ? b->dims[1] : b->dims[0], N = tb ? b->dims[0] : b->dims[1];
    if (K != K2 || y->ndim != 2 || y->dims[0] != M || y->dims[1] != N)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: shapes %s x %s do not give %s", op, DESC(a, ba), DESC(b, bb),
                        DESC(y, ba));
    /* C broadcast to (M, N): per-dim stride 0 where C has size 1 or lacks the dim. */
    int64_t csr = 0, csc = 0;
    if (c) {
        if (c->ndim > 2) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: C %s has rank > 2", op, DESC(c, ba));
        int64_t cr = c->ndim == 2 ? c->dims[0] : 1, cc = c->ndim >= 1 ? c->dims[c->ndim - 1] : 1;
        if ((cr != 1 && cr != M) || (cc != 1 && cc != N))
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: C %s does not broadcast to [%lld,%lld]", op, DESC(c, ba),
                            (long long)M, (long long)N);
        csr = cr == 1 ? 0 : cc;
        csc = cc == 1 ? 0 : 1;
        if (c->dtype != y->dtype) return kn_err_dtype(node, c);
    }
    if (a->dtype != b->dtype) return kn_err_dtype(node, b);
    if (a->dtype == KN_F32 || is_half(a->dtype)) {
        float *fa = as_f32(ctx, a), *fb = as_f32(ctx, b), *fc = c ? as_f32(ctx, c) : NULL;
        float *fy =
            a->dtype == KN_F32 ? y->data : kn_scratch_alloc(ctx, sizeof(float) * (size_t)(M * N > 0 ? M * N : 1));
        if (!fa || !fb || !fy || (c && !fc)) return KN_OOM(kn_nbytes(y));
        float bet = 0.0f;
        if (c && beta != 0.0f) {
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) fy[i * N + j] = fc[i * csr + j * csc];
            bet = beta;
        }
        const kn_sgemm_packed *pk = node->prepared;
        if (pk && !ta && pk->B == fb && pk->trans_b == tb && pk->K == K && pk->N == N)
            kn_sgemm_packed_run(ctx->pool, M, alpha, fa, K, pk, bet, fy, N);
        else kn_sgemm(ctx->pool, ta, tb, M, N, K, alpha, fa, ta ? M : K, fb, tb ? K : N, bet, fy, N);
        kn_gemm_activation_f32(gp, fy, M * N);
        if (a->dtype != KN_F32) store_from_f32(y, fy);
        return NULL;
    }
    if (gp->act != KN_GEMM_ACT_NONE) return kn_err_dtype(node, a);
    bool is_f64 = a->dtype == KN_F64;
    if (!is_f64 && !kn_dtype_is_int(a->dtype)) return kn_err_dtype(node, a);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            int64_t si = 0;
            for (int64_t k = 0; k < K; k++) {
                int64_t ai = ta ? k * M + i : i * K + k, bi = tb ? j * K + k : k * N + j;
                if (is_f64) s += ((const double *)a->data)[ai] * ((const double *)b->data)[bi];
                else si += kn_get_i64(a, ai) * kn_get_i64(b, bi);
            }
            if (!is_f64) s = (double)si;
            double v = alpha * s;
            if (c && beta != 0.0f) v += beta * kn_get_f64(c, i * csr + j * csc);
            if (is_f64) ((double *)y->data)[i * N + j] = v;
            else kn_set_i64(y, i * N + j, (int64_t)llround(v));
        }
    return NULL;
}

kn_status *kn_cpu_Gemm(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                       kn_tensor *const *out, int n_out) {
    return gemm_run(ctx, node, "Gemm", in, n_in, out);
}

/* com.microsoft FusedGemm (float32, float16, bfloat16). */
kn_status *kn_cpu_MsFusedGemm(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                              kn_tensor *const *out, int n_out) {
    return gemm_run(ctx, node, "FusedGemm", in, n_in, out);
}

/* ---------------------------------------------------------------- integer products */

/* Zero point read per row/column: scalar (numel 1) or one per index along the axis. */
static kn_status *zero_points(const char *op, const kn_tensor *zp, int64_t n, const char *what, int64_t *out) {
    char bz[KN_DESC_LEN];
    if (!zp) {
        for (int64_t i = 0; i < n; i++) out[i] = 0;
        return NULL;
    }
    int64_t cnt = kn_numel(zp);
    if (cnt != 1 && cnt != n)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s %s must be a scalar or have %lld values", op, what,
                        DESC(zp, bz), (long long)n);
    for (int64_t i = 0; i < n; i++) out[i] = kn_get_i64(zp, cnt == 1 ? 0 : i);
    return NULL;
}

static bool is_8bit(kn_dtype t) { return t == KN_U8 || t == KN_I8; }

/* Per-matrix zero points: a scalar, one per row of A (per column of B), or one per row of every
 * stored matrix ([..., M, 1] for A, [..., 1, N] for B). */
static kn_status *zp_table(kn_exec_ctx *ctx, const char *op, const kn_tensor *zp, int64_t per, int64_t mats,
                           const char *what, int64_t **out, int64_t *mat_stride) {
    char bz[KN_DESC_LEN];
    int64_t cnt = zp ? kn_numel(zp) : 1;
    if (cnt != 1 && cnt != per && cnt != per * mats)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s %s must be a scalar or have %lld (or %lld) values", op, what,
                        DESC(zp, bz), (long long)per, (long long)(per * mats));
    int64_t *v = kn_scratch_alloc(ctx, sizeof(int64_t) * (size_t)(per * (cnt == per * mats ? mats : 1) + 1));
    if (!v) return KN_OOM(cnt);
    int64_t n = per * (cnt == per * mats ? mats : 1);
    for (int64_t i = 0; i < n; i++) v[i] = zp ? kn_get_i64(zp, cnt == 1 ? 0 : cnt == per ? i % per : i) : 0;
    *out = v;
    *mat_stride = cnt == per * mats && mats > 1 ? per : 0;
    return NULL;
}

typedef struct igemm_job {
    int64_t N, K;
    const int16_t *A, *Bp;
    int32_t *C;
} igemm_job;

static void igemm_rows(void *ctx, int64_t begin, int64_t end) {
    const igemm_job *j = ctx;
    kn_igemm_s16(end - begin, j->N, j->K, j->A + begin * j->K, j->K, j->Bp, j->C + begin * j->N, j->N);
}

/* C (int32, wrapping) = A16 (M x K) * B16 (K x N), packing B16 into bp ((K + 1) * N int16) unless
 * bp_ready (a caller reusing one B over many products packs it once): the AVX2 kernel over row
 * blocks where the CPU has it, else the plain loop. Shared by MatMulInteger, QLinearMatMul and the
 * quantised recurrent projections (rnn.c). */
void kn_igemm_i16(kn_threadpool *pool, int64_t M, int64_t N, int64_t K, const int16_t *a16, const int16_t *b16,
                  int16_t *bp, bool bp_ready, int32_t *c) {
    if (!bp_ready) kn_igemm_pack_b16(K, N, b16, bp);
    igemm_job job = {N, K, a16, bp, c};
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        kn_parallel_for(pool, M, 1 + 65536 / (N * K + 1), igemm_rows, &job);
        return;
    }
    for (int64_t i = 0; i < M; i++) {
        uint32_t *ci = (uint32_t *)(c + i * N);
        for (int64_t j = 0; j < N; j++) ci[j] = 0;
        for (int64_t k = 0; k < K; k++) {
            uint32_t av = (uint32_t)(int32_t)a16[i * K + k];
            const int16_t *br = b16 + k * N;
            for (int64_t j = 0; j < N; j++) ci[j] += av * (uint32_t)(int32_t)br[j];
        }
    }
}

/* acc[b][i][j] = sum_k (A - azp[i]) * (B - bzp[j]) over the numpy matmul batch, in int32 with
 * wrap-around (the ONNX result type). The 8-bit operands less their zero points fit int16, which
 * the SIMD kernel multiplies in pairs; the plain loop is the fallback without AVX2. */
static kn_status *int_matmul(kn_exec_ctx *ctx, const char *op, const mm_geom *g, const kn_tensor *a, const kn_tensor *b,
                             const kn_tensor *azp_t, const kn_tensor *bzp_t, int32_t **acc_out) {
    int64_t M = g->M, N = g->N, K = g->K;
    int32_t *acc = kn_scratch_alloc(ctx, sizeof(int32_t) * (size_t)(g->nbatch * M * N + 1));
    int16_t *a16 = kn_scratch_alloc(ctx, sizeof(int16_t) * (size_t)(M * K + 1));
    int16_t *b16 = kn_scratch_alloc(ctx, sizeof(int16_t) * (size_t)(K * N + 1));
    int16_t *bp = kn_scratch_alloc(ctx, sizeof(int16_t) * (size_t)((K + 1) * N + 1));
    if (!acc || !a16 || !b16 || !bp) return KN_OOM(sizeof(int32_t) * (size_t)(g->nbatch * M * N));
    int64_t *azp, *bzp, azs, bzs;
    KN_TRY(zp_table(ctx, op, azp_t, M, g->a_mats, "A zero point", &azp, &azs));
    KN_TRY(zp_table(ctx, op, bzp_t, N, g->b_mats, "B zero point", &bzp, &bzs));
    const uint8_t *au = a->data, *bu = b->data;
    bool as = a->dtype == KN_I8, bs = b->dtype == KN_I8;
    for (int64_t bi = 0; bi < g->nbatch; bi++) {
        int64_t ia, ib;
        mm_offsets(g, bi, &ia, &ib);
        const uint8_t *am = au + ia * M * K, *bm = bu + ib * K * N;
        const int64_t *az = azp + ia * azs, *bz = bzp + ib * bzs;
        for (int64_t k = 0; k < K; k++)
            for (int64_t j = 0; j < N; j++)
                b16[k * N + j] = (int16_t)((bs ? (int8_t)bm[k * N + j] : bm[k * N + j]) - bz[j]);
        for (int64_t i = 0; i < M; i++)
            for (int64_t k = 0; k < K; k++)
                a16[i * K + k] = (int16_t)((as ? (int8_t)am[i * K + k] : am[i * K + k]) - az[i]);
        kn_igemm_i16(ctx->pool, M, N, K, a16, b16, bp, false, acc + bi * M * N);
    }
    *acc_out = acc;
    return NULL;
}

kn_status *kn_cpu_MatMulInteger(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *const *out, int n_out) {
    const kn_tensor *a = in[0], *b = in[1];
    if (!is_8bit(a->dtype)) return kn_err_dtype(node, a);
    if (!is_8bit(b->dtype)) return kn_err_dtype(node, b);
    mm_geom g;
    KN_TRY(mm_geom_init("MatMulInteger", a, b, out[0], &g));
    int32_t *acc;
    KN_TRY(int_matmul(ctx, "MatMulInteger", &g, a, b, n_in > 2 ? in[2] : NULL, n_in > 3 ? in[3] : NULL, &acc));
    int64_t n = g.nbatch * g.M * g.N;
    if (n > 0) memcpy(out[0]->data, acc, sizeof(int32_t) * (size_t)n);
    return NULL;
}

static kn_status *scales(const char *op, const kn_tensor *s, int64_t n, const char *what, float *out) {
    char bz[KN_DESC_LEN];
    int64_t cnt = kn_numel(s);
    if (cnt != 1 && cnt != n)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s %s must be a scalar or have %lld values", op, what,
                        DESC(s, bz), (long long)n);
    for (int64_t i = 0; i < n; i++) out[i] = (float)kn_get_f64(s, cnt == 1 ? 0 : i);
    return NULL;
}

static int64_t saturate_q(double v, kn_dtype t) {
    double lo = t == KN_U8 ? 0 : -128, hi = t == KN_U8 ? 255 : 127;
    if (t == KN_I32) {
        lo = -2147483648.0;
        hi = 2147483647.0;
    }
    if (v < lo) v = lo;
    if (v > hi) v = hi;
    return (int64_t)v;
}

kn_status *kn_cpu_QLinearMatMul(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *const *out, int n_out) {
    const kn_tensor *a = in[0], *b = in[3];
    kn_tensor *y = out[0];
    if (!is_8bit(a->dtype)) return kn_err_dtype(node, a);
    if (!is_8bit(b->dtype)) return kn_err_dtype(node, b);
    if (!is_8bit(y->dtype)) return kn_err_dtype(node, y);
    mm_geom g;
    KN_TRY(mm_geom_init("QLinearMatMul", a, b, y, &g));
    int64_t M = g.M, N = g.N;
    float *as = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(M + N + 2));
    int64_t *yzp = kn_scratch_alloc(ctx, sizeof(int64_t));
    if (!as || !yzp) return KN_OOM(M + N);
    float *bs = as + M + 1, ys = 1.0f;
    KN_TRY(scales("QLinearMatMul", in[1], M, "a_scale", as));
    KN_TRY(scales("QLinearMatMul", in[4], N, "b_scale", bs));
    KN_TRY(scales("QLinearMatMul", in[6], 1, "y_scale", &ys));
    KN_TRY(zero_points("QLinearMatMul", in[7], 1, "y_zero_point", yzp));
    int32_t *acc;
    KN_TRY(int_matmul(ctx, "QLinearMatMul", &g, a, b, in[2], in[5], &acc));
    for (int64_t bi = 0; bi < g.nbatch; bi++)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                int64_t o = (bi * M + i) * N + j;
                float m = as[i] * bs[j] / ys; /* float32 like the reference */
                double v = rint((double)acc[o] * (double)m) + (double)yzp[0];
                kn_set_i64(y, o, saturate_q(v, y->dtype));
            }
    return NULL;
}

/* ---------------------------------------------------------------- Einsum */

typedef struct einsum_job {
    const kn_einsum *e;
    const kn_tensor *const *in;
    kn_tensor *out;
    int n_sum; /* contracted labels */
    int sum_lab[KN_EINSUM_MAX_LABELS];
    int64_t ostr[KN_EINSUM_MAX_OPS][KN_EINSUM_MAX_LABELS]; /* per operand, per label stride */
    bool is_int;
} einsum_job;

static void einsum_range(void *ctx, int64_t begin, int64_t end) {
    const einsum_job *j = ctx;
    const kn_einsum *e = j->e;
    int nops = e->n_ops;
    for (int64_t o = begin; o < end; o++) {
        int64_t base[KN_EINSUM_MAX_OPS] = {0};
        int64_t rem = o;
        for (int d = e->out_ndim - 1; d >= 0; d--) {
            int lab = e->out_lab[d];
            int64_t sz = e->lab_dim[lab], v = rem % sz;
            rem /= sz;
            for (int q = 0; q < nops; q++) base[q] += v * j->ostr[q][lab];
        }
        int64_t idx[KN_EINSUM_MAX_LABELS] = {0};
        int64_t off[KN_EINSUM_MAX_OPS];
        for (int q = 0; q < nops; q++) off[q] = base[q];
        double s = 0;
        int64_t si = 0;
        bool empty = false;
        for (int k = 0; k < j->n_sum; k++)
            if (e->lab_dim[j->sum_lab[k]] == 0) empty = true;
        while (!empty) {
            if (j->is_int) {
                int64_t p = 1;
                for (int q = 0; q < nops; q++) p *= kn_get_i64(j->in[q], off[q]);
                si += p;
            } else {
                double p = 1;
                for (int q = 0; q < nops; q++) p *= kn_get_f64(j->in[q], off[q]);
                s += p;
            }
            int k = j->n_sum - 1;
            for (; k >= 0; k--) {
                int lab = j->sum_lab[k];
                idx[k]++;
                for (int q = 0; q < nops; q++) off[q] += j->ostr[q][lab];
                if (idx[k] < e->lab_dim[lab]) break;
                for (int q = 0; q < nops; q++) off[q] -= idx[k] * j->ostr[q][lab];
                idx[k] = 0;
            }
            if (k < 0) break;
        }
        if (j->is_int) kn_set_i64(j->out, o, si);
        else kn_set_f64(j->out, o, s);
    }
}

/* dst (dims nd, row-major) = src gathered with per-dst-dim source strides. */
static void gather_strided(const float *src, int nd, const int64_t *dims, const int64_t *sstr, float *dst) {
    int64_t n = 1, idx[KN_EINSUM_MAX_LABELS] = {0}, off = 0;
    for (int d = 0; d < nd; d++) n *= dims[d];
    for (int64_t i = 0; i < n; i++) {
        dst[i] = src[off];
        for (int d = nd - 1; d >= 0; d--) {
            idx[d]++;
            off += sstr[d];
            if (idx[d] < dims[d]) break;
            off -= idx[d] * sstr[d];
            idx[d] = 0;
        }
    }
}

/* Two float32 operands whose labels each fall in one class - batch (both inputs and output), M
 * (first input and output), N (second input and output), K (both inputs, summed) - become one
 * batched sgemm between permuted copies (skipped when the layout already fits, with the second
 * operand read transposed when it is [batch, N, K] as in attention scores). Returns false to
 * fall back to the plain loop (repeated labels, broadcasting, labels summed inside one input). */
static bool einsum_gemm_f32(kn_exec_ctx *ctx, const kn_einsum *e, const kn_tensor *const *in, kn_tensor *y) {
    if (e->n_ops != 2 || in[0]->dtype != KN_F32 || in[1]->dtype != KN_F32) return false;
    int cls[KN_EINSUM_MAX_LABELS]; /* 0 unused, 1 batch, 2 M, 3 N, 4 K */
    bool ina[KN_EINSUM_MAX_LABELS] = {false}, inb[KN_EINSUM_MAX_LABELS] = {false}, ino[KN_EINSUM_MAX_LABELS] = {false};
    for (int q = 0; q < 2; q++)
        for (int d = 0; d < e->op_ndim[q]; d++) {
            int lab = e->op_lab[q][d];
            bool *seen = q ? inb : ina;
            if (seen[lab] || in[q]->dims[d] != e->lab_dim[lab]) return false;
            seen[lab] = true;
        }
    for (int d = 0; d < e->out_ndim; d++) ino[e->out_lab[d]] = true;
    int order[4][KN_EINSUM_MAX_LABELS], cnt[4] = {0};
    int64_t size[4] = {1, 1, 1, 1};
    for (int lab = 0; lab < KN_EINSUM_MAX_LABELS; lab++) {
        cls[lab] = 0;
        if (!e->used[lab]) continue;
        if (ina[lab] && inb[lab]) cls[lab] = ino[lab] ? 1 : 4;
        else if (ina[lab] && ino[lab]) cls[lab] = 2;
        else if (inb[lab] && ino[lab]) cls[lab] = 3;
        else return false;
    }
    for (int d = 0; d < e->out_ndim; d++) {
        int lab = e->out_lab[d];
        order[cls[lab] - 1][cnt[cls[lab] - 1]++] = lab;
    }
    for (int d = 0; d < e->op_ndim[0]; d++) {
        int lab = e->op_lab[0][d];
        if (cls[lab] == 4) order[3][cnt[3]++] = lab;
    }
    for (int c = 0; c < 4; c++)
        for (int i = 0; i < cnt[c]; i++) size[c] *= e->lab_dim[order[c][i]];
    int64_t Bt = size[0], M = size[1], N = size[2], K = size[3];
    /* source strides of every label in each operand */
    int64_t str[2][KN_EINSUM_MAX_LABELS] = {{0}};
    for (int q = 0; q < 2; q++) {
        int64_t st = 1;
        for (int d = e->op_ndim[q] - 1; d >= 0; d--) {
            str[q][e->op_lab[q][d]] = st;
            st *= in[q]->dims[d];
        }
    }
    /* wanted layouts as label lists */
    int la[KN_EINSUM_MAX_LABELS], lb[KN_EINSUM_MAX_LABELS], lbt[KN_EINSUM_MAX_LABELS], lc[KN_EINSUM_MAX_LABELS];
    int na = 0, nb = 0, nbt = 0, nc = 0;
    for (int i = 0; i < cnt[0]; i++) la[na++] = lb[nb++] = lbt[nbt++] = lc[nc++] = order[0][i];
    for (int i = 0; i < cnt[1]; i++) la[na++] = lc[nc++] = order[1][i];
    for (int i = 0; i < cnt[3]; i++) la[na++] = lb[nb++] = order[3][i];
    for (int i = 0; i < cnt[2]; i++) lb[nb++] = lbt[nbt++] = lc[nc++] = order[2][i];
    for (int i = 0; i < cnt[3]; i++) lbt[nbt++] = order[3][i];
    bool a_ok = na == e->op_ndim[0] && !memcmp(la, e->op_lab[0], sizeof(int) * (size_t)na);
    bool b_ok = nb == e->op_ndim[1] && !memcmp(lb, e->op_lab[1], sizeof(int) * (size_t)nb);
    bool bt_ok = !b_ok && nbt == e->op_ndim[1] && !memcmp(lbt, e->op_lab[1], sizeof(int) * (size_t)nbt);
    bool c_ok = nc == e->out_ndim && !memcmp(lc, e->out_lab, sizeof(int) * (size_t)nc);
    const float *A = in[0]->data, *B = in[1]->data;
    float *C = y->data;
    int64_t dims[KN_EINSUM_MAX_LABELS], sstr[KN_EINSUM_MAX_LABELS];
    if (!a_ok) {
        float *t = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(Bt * M * K + 1));
        if (!t) return false;
        for (int i = 0; i < na; i++) {
            dims[i] = e->lab_dim[la[i]];
            sstr[i] = str[0][la[i]];
        }
        gather_strided(A, na, dims, sstr, t);
        A = t;
    }
    if (!b_ok && !bt_ok) {
        float *t = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(Bt * K * N + 1));
        if (!t) return false;
        for (int i = 0; i < nb; i++) {
            dims[i] = e->lab_dim[lb[i]];
            sstr[i] = str[1][lb[i]];
        }
        gather_strided(B, nb, dims, sstr, t);
        B = t;
    }
    if (!c_ok) {
        C = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(Bt * M * N + 1));
        if (!C) return false;
    }
    kn_sgemm_batched(ctx->pool, false, bt_ok, Bt, M, N, K, 1.0f, A, K, M * K, B, bt_ok ? K : N, K * N, 0.0f, C, N,
                     M * N);
    if (!c_ok) {
        /* y[out order] from C[batch, M, N]: gather with C's strides per output label */
        int64_t cstr[KN_EINSUM_MAX_LABELS], st = 1;
        for (int i = nc - 1; i >= 0; i--) {
            cstr[lc[i]] = st;
            st *= e->lab_dim[lc[i]];
        }
        for (int d = 0; d < e->out_ndim; d++) {
            dims[d] = e->lab_dim[e->out_lab[d]];
            sstr[d] = cstr[e->out_lab[d]];
        }
        gather_strided(C, e->out_ndim, dims, sstr, y->data);
    }
    return true;
}

kn_status *kn_cpu_Einsum(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    const char *eq = KN_PARAMS(node, einsum)->equation;
    kn_tensor *y = out[0];
    for (int i = 0; i < n_in; i++) {
        if (!in[i]) return kn_error(KN_ERR_INVALID_MODEL, "Einsum: missing input %d", i);
        if (in[i]->dtype != y->dtype) return kn_err_dtype(node, in[i]);
    }
    if (!kn_dtype_is_int(y->dtype) && y->dtype != KN_F32 && y->dtype != KN_F64 && !is_half(y->dtype))
        return kn_err_dtype(node, y);
    einsum_job *j = kn_scratch_alloc(ctx, sizeof *j);
    kn_einsum *e = kn_scratch_alloc(ctx, sizeof *e);
    if (!j || !e) return KN_OOM(sizeof *j);
    memset(j, 0, sizeof *j);
    KN_TRY(kn_einsum_parse(eq, n_in, in, e));
    j->e = e;
    j->in = in;
    j->out = y;
    j->is_int = kn_dtype_is_int(y->dtype);
    for (int q = 0; q < n_in; q++) {
        int64_t st = 1;
        for (int d = e->op_ndim[q] - 1; d >= 0; d--) {
            int lab = e->op_lab[q][d];
            /* a size-1 ellipsis dim broadcasts: it does not advance with its label */
            if (!(in[q]->dims[d] == 1 && e->lab_dim[lab] != 1)) j->ostr[q][lab] += st;
            st *= in[q]->dims[d];
        }
    }
    bool in_out[KN_EINSUM_MAX_LABELS] = {false};
    for (int d = 0; d < e->out_ndim; d++) in_out[e->out_lab[d]] = true;
    for (int lab = 0; lab < KN_EINSUM_MAX_LABELS; lab++)
        if (e->used[lab] && !in_out[lab]) j->sum_lab[j->n_sum++] = lab;
    int64_t n = kn_numel(y);
    if (n <= 0) return NULL;
    if (einsum_gemm_f32(ctx, e, in, y)) return NULL;
    /* The plain loop visits every (output, summed) index pair: refuse work that would run for
     * hours rather than appear to hang. */
    double visits = (double)n;
    for (int k = 0; k < j->n_sum; k++) visits *= (double)e->lab_dim[j->sum_lab[k]];
    if (visits > 4e11)
        return kn_error(KN_ERR_UNSUPPORTED, "Einsum: '%s' needs %.3g multiply-adds in the general loop", eq, visits);
    kn_parallel_for(ctx->pool, n, 64, einsum_range, j);
    return NULL;
}

/* ---------------------------------------------------------------- Det */

kn_status *kn_cpu_Det(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                      kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    char bx[KN_DESC_LEN];
    if (x->dtype != KN_F32 && x->dtype != KN_F64 && !is_half(x->dtype)) return kn_err_dtype(node, x);
    if (x->ndim < 2 || x->dims[x->ndim - 1] != x->dims[x->ndim - 2])
        return kn_error(KN_ERR_INVALID_ARGUMENT, "Det: input %s must be (..., n, n)", DESC(x, bx));
    int64_t n = x->dims[x->ndim - 1], nb = kn_numel(out[0]);
    double *m = kn_scratch_alloc(ctx, sizeof(double) * (size_t)(n * n + 1));
    if (!m) return KN_OOM(sizeof(double) * (size_t)(n * n));
    for (int64_t b = 0; b < nb; b++) {
        for (int64_t i = 0; i < n * n; i++) m[i] = kn_get_f64(x, b * n * n + i);
        /* LU with partial pivoting: det = sign * prod(diag U). */
        double det = 1.0;
        for (int64_t c = 0; c < n && det != 0.0; c++) {
            int64_t p = c;
            for (int64_t r = c + 1; r < n; r++)
                if (fabs(m[r * n + c]) > fabs(m[p * n + c])) p = r;
            if (m[p * n + c] == 0.0) {
                det = 0.0;
                break;
            }
            if (p != c) {
                for (int64_t k = 0; k < n; k++) {
                    double t = m[c * n + k];
                    m[c * n + k] = m[p * n + k];
                    m[p * n + k] = t;
                }
                det = -det;
            }
            double piv = m[c * n + c];
            det *= piv;
            for (int64_t r = c + 1; r < n; r++) {
                double f = m[r * n + c] / piv;
                for (int64_t k = c; k < n; k++) m[r * n + k] -= f * m[c * n + k];
            }
        }
        kn_set_f64(out[0], b, det);
    }
    return NULL;
}
