// MatMul (batched, numpy-broadcast batch dims, 1-D operands) and Gemm through cuBLASLt on the
// run's stream, with that stream's handle and workspace. float32 runs with CUBLAS_COMPUTE_32F
// (no TF32), so results match the CPU's float32 GEMM up to summation order, unless the session
// asked for TF32 (kn_exec_ctx.precision): then CUBLAS_COMPUTE_32F_FAST_TF32; float16/bfloat16
// accumulate in float32. The com.microsoft GEMMs with an activation ride on cuBLASLt's epilogues:
// GemmFastGelu on GELU_BIAS / GELU, FusedGemm's ReLU on RELU_BIAS / RELU (its other activations
// are one pass over the output).
// Row-major C[M,N] = A[M,K] B[K,N] is computed as the column-major C^T = B^T A^T, which needs no
// transposes: B is cuBLAS's first operand.
#include "kernels/cuda/cuda_common.h"

struct lt_gemm {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc; // la: our B (cuBLAS's A), lb: our A
    cublasLtMatmulHeuristicResult_t algo;
    bool ok;
};

static size_t align_of(const void *p, int64_t stride_bytes) {
    uintptr_t v = (uintptr_t)p | (uintptr_t)stride_bytes | 256;
    return (size_t)(v & (~v + 1));
}

static void lt_destroy(lt_gemm *g) {
    if (g->la) cublasLtMatrixLayoutDestroy(g->la);
    if (g->lb) cublasLtMatrixLayoutDestroy(g->lb);
    if (g->lc) cublasLtMatrixLayoutDestroy(g->lc);
    if (g->desc) cublasLtMatmulDescDestroy(g->desc);
}

static kn_status *lt_fail(lt_gemm *g, const kn_node *n, const char *what, int code) {
    lt_destroy(g);
    char nd[256];
    return kn_error(KN_ERR_RUNTIME, "cuda: %s (%s): cuBLASLt status %d", what, kn_node_desc(n, nd, sizeof nd), code);
}

static kn_status *layout(cublasLtMatrixLayout_t *l, cudaDataType_t dt, int64_t rows, int64_t cols, int64_t ld,
                         int batch, int64_t stride) {
    if (cublasLtMatrixLayoutCreate(l, dt, (uint64_t)rows, (uint64_t)cols, ld) != CUBLAS_STATUS_SUCCESS)
        return kn_error(KN_ERR_RUNTIME, "cuda: cublasLtMatrixLayoutCreate failed");
    if (batch > 1) {
        int32_t b = batch;
        cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &b, sizeof b);
        cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride);
    }
    return NULL;
}

// A cuBLASLt epilogue: bias [N] (of D's type, one row broadcast over the rows of row-major D, which
// are cuBLAS's columns) added, then the activation, in the GEMM's float32 before D is rounded.
struct lt_epilogue {
    cublasLtEpilogue_t epi;
    const void *bias; // NULL for RELU/GELU alone
};

// Set up row-major D[M,N] = alpha op(A) op(B) + beta D for `batch` matrices at the given element
// strides; align_* are the pointer alignments every call will respect; epi: an epilogue, or none.
static kn_status *lt_setup(lt_gemm *g, kn_cuda_stream *s, const kn_node *n, cudaDataType_t dt, bool tf32, bool ta,
                           bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, int batch,
                           int64_t sa, int64_t sb, int64_t sc, size_t align_a, size_t align_b, size_t align_c,
                           const lt_epilogue *epi = NULL) {
    memset(g, 0, sizeof *g);
    cublasComputeType_t ct = tf32 && dt == CUDA_R_32F ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    if (cublasLtMatmulDescCreate(&g->desc, ct, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS)
        return lt_fail(g, n, "cublasLtMatmulDescCreate", 0);
    cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa);
    cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb);
    if (epi) {
        // set before the heuristic: the algorithm must support the epilogue and the bias alignment
        uint32_t e = (uint32_t)epi->epi;
        if (cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e) !=
                CUBLAS_STATUS_SUCCESS ||
            (epi->bias &&
             cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &epi->bias, sizeof epi->bias) !=
                 CUBLAS_STATUS_SUCCESS))
            return lt_fail(g, n, "cuBLASLt epilogue attributes", 0);
    }
    kn_status *st = layout(&g->la, dt, tb ? K : N, tb ? N : K, ldb, batch, sb);
    if (!st) st = layout(&g->lb, dt, ta ? M : K, ta ? K : M, lda, batch, sa);
    if (!st) st = layout(&g->lc, dt, N, M, ldc, batch, sc);
    if (st) {
        lt_destroy(g);
        return st;
    }
    cublasLtMatmulPreference_t pref;
    if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS)
        return lt_fail(g, n, "cublasLtMatmulPreferenceCreate", 0);
    uint64_t ws = s->ws_bytes;
    uint32_t aa = (uint32_t)align_b, ab = (uint32_t)align_a, ac = (uint32_t)align_c; // cuBLAS's A is our B
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof aa);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof ab);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof ac);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof ac);
    int found = 0;
    cublasStatus_t cs =
        cublasLtMatmulAlgoGetHeuristic(s->lt, g->desc, g->la, g->lb, g->lc, g->lc, pref, 1, &g->algo, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (cs != CUBLAS_STATUS_SUCCESS || found == 0) return lt_fail(g, n, "no cuBLASLt algorithm for this GEMM", (int)cs);
    g->ok = true;
    return NULL;
}

static kn_status *lt_run(lt_gemm *g, kn_cuda_stream *s, const kn_node *n, const void *A, const void *B, void *C,
                         float alpha, float beta) {
    cublasStatus_t cs = cublasLtMatmul(s->lt, g->desc, &alpha, B, g->la, A, g->lb, &beta, C, g->lc, C, g->lc,
                                       &g->algo.algo, s->ws, s->ws_bytes, s->s);
    if (cs != CUBLAS_STATUS_SUCCESS) {
        char nd[256];
        return kn_error(KN_ERR_RUNTIME, "cuda: cublasLtMatmul (%s): status %d", kn_node_desc(n, nd, sizeof nd),
                        (int)cs);
    }
    return NULL;
}

static bool dt_of(kn_dtype t, cudaDataType_t *dt) {
    switch (t) {
    case KN_F32: *dt = CUDA_R_32F; return true;
    case KN_F16: *dt = CUDA_R_16F; return true;
    case KN_BF16: *dt = CUDA_R_16BF; return true;
    default: return false;
    }
}

KN_CUDA_KERNEL(MatMul) {
    const kn_tensor *A = in[0], *B = in[1];
    kn_tensor *Y = out[0];
    kn_cuda_stream *s = kn_cuda_st(ctx);
    bool tf32 = ctx->precision == KN_PRECISION_TF32;
    cudaDataType_t dt;
    if (!dt_of(A->dtype, &dt) || B->dtype != A->dtype) return kn_err_dtype(node, A);
    size_t es = kn_dtype_size(A->dtype);
    bool a1 = A->ndim == 1, b1 = B->ndim == 1;
    int64_t M = a1 ? 1 : A->dims[A->ndim - 2], K = A->dims[A->ndim - 1], N = b1 ? 1 : B->dims[B->ndim - 1];
    int ab = a1 ? 0 : A->ndim - 2, bb = b1 ? 0 : B->ndim - 2, ob = ab > bb ? ab : bb;
    // batch dims right-aligned; broadcast strides in matrices
    int64_t od[KN_MAX_DIMS], sa[KN_MAX_DIMS], sb[KN_MAX_DIMS];
    int64_t count = 1, batch_a = 1, batch_b = 1;
    for (int d = 0; d < ab; d++) batch_a *= A->dims[d];
    for (int d = 0; d < bb; d++) batch_b *= B->dims[d];
    {
        int64_t ra = 1, rb = 1;
        for (int d = ob - 1; d >= 0; d--) {
            int da = d - (ob - ab), db = d - (ob - bb);
            int64_t xa = da >= 0 ? A->dims[da] : 1, xb = db >= 0 ? B->dims[db] : 1;
            od[d] = xa > xb ? xa : xb;
            if (xa == 0 || xb == 0) od[d] = 0;
            sa[d] = xa == 1 ? 0 : ra;
            sb[d] = xb == 1 ? 0 : rb;
            ra *= xa;
            rb *= xb;
            count *= od[d];
        }
    }
    if (count == 0 || M == 0 || N == 0) return NULL;
    if (K == 0) { // empty sums
        KN_CUDA_TRY(cudaMemsetAsync(Y->data, 0, kn_nbytes(Y), s->s), node, "MatMul zero fill");
        return NULL;
    }
    lt_gemm g = {};
    kn_status *st = NULL;
    bool same_batch = batch_a == batch_b && ab == bb;
    for (int d = 0; same_batch && d < ab; d++) same_batch = A->dims[d] == B->dims[d];
    if (batch_b == 1) {
        // B is one matrix: A's batches fold into its rows
        int64_t Mf = M * batch_a;
        st = lt_setup(&g, s, node, dt, tf32, false, false, Mf, N, K, K, N, N, 1, 0, 0, 0, align_of(A->data, 0),
                      align_of(B->data, 0), align_of(Y->data, 0));
        if (!st) st = lt_run(&g, s, node, A->data, B->data, Y->data, 1.0f, 0.0f);
    } else if (same_batch || batch_a == 1) {
        int64_t stride_a = batch_a == 1 ? 0 : M * K;
        if (batch_a == 1 && count > 1) {
            // a shared A: loop below handles it without relying on zero batch strides
            same_batch = false;
        } else {
            st = lt_setup(&g, s, node, dt, tf32, false, false, M, N, K, K, N, N, (int)count, stride_a, K * N, M * N,
                          align_of(A->data, stride_a * (int64_t)es), align_of(B->data, K * N * (int64_t)es),
                          align_of(Y->data, M * N * (int64_t)es));
            if (!st) st = lt_run(&g, s, node, A->data, B->data, Y->data, 1.0f, 0.0f);
            if (g.ok) lt_destroy(&g);
            return st;
        }
    }
    if (batch_b != 1 && !same_batch) {
        // general broadcast: one GEMM per output matrix, sharing one algorithm choice
        st = lt_setup(&g, s, node, dt, tf32, false, false, M, N, K, K, N, N, 1, 0, 0, 0,
                      align_of(A->data, M * K * (int64_t)es), align_of(B->data, K * N * (int64_t)es),
                      align_of(Y->data, M * N * (int64_t)es));
        for (int64_t i = 0; !st && i < count; i++) {
            int64_t r = i, ia = 0, ib = 0;
            for (int d = ob - 1; d >= 0; d--) {
                int64_t c = r % od[d];
                r /= od[d];
                ia += c * sa[d];
                ib += c * sb[d];
            }
            st = lt_run(&g, s, node, (const char *)A->data + ia * M * K * (int64_t)es,
                        (const char *)B->data + ib * K * N * (int64_t)es, (char *)Y->data + i * M * N * (int64_t)es,
                        1.0f, 0.0f);
        }
    }
    if (g.ok) lt_destroy(&g);
    return st;
}

// Gemm and FusedGemm: Y = alpha op(A) op(B) + beta C, then ReLU when `relu` asks for it. A bias
// row (C of [N] or [1, N], beta 1) goes in the GEMM's epilogue (BIAS, or RELU_BIAS) instead of a
// copy into Y; other C are copied into Y and accumulated with beta, ReLU then being the RELU
// epilogue. When no cuBLASLt algorithm takes the epilogue, the plain GEMM runs on Y holding C and
// *relu_done says the ReLU is still to do.
static kn_status *gemm_epilogue(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *Y, bool relu, bool *relu_done) {
    const kn_tensor *A = in[0], *B = in[1], *C = n_in > 2 ? in[2] : NULL;
    kn_cuda_stream *s = kn_cuda_st(ctx);
    bool tf32 = ctx->precision == KN_PRECISION_TF32;
    *relu_done = false;
    cudaDataType_t dt;
    if (!dt_of(A->dtype, &dt) || B->dtype != A->dtype) return kn_err_dtype(node, A);
    const kn_params_gemm *gp = KN_PARAMS(node, gemm);
    bool ta = gp->trans_a, tb = gp->trans_b;
    float alpha = gp->alpha, beta = gp->beta;
    int64_t M = ta ? A->dims[1] : A->dims[0], K = ta ? A->dims[0] : A->dims[1], N = tb ? B->dims[0] : B->dims[1];
    if (M == 0 || N == 0) {
        *relu_done = true;
        return NULL;
    }
    size_t es = kn_dtype_size(A->dtype);
    bool bias_row = C && beta == 1.0f && kn_numel(C) == N && N > 1 && (C->ndim == 1 || C->dims[0] == 1);
    lt_epilogue be = {bias_row ? (relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS) : CUBLASLT_EPILOGUE_RELU,
                      bias_row ? C->data : NULL};
    bool epi = bias_row || relu;
    if (bias_row) {
        beta = 0.0f;
    } else if (C && beta != 0.0f && kn_numel(C) > 0) {
        // Y <- C broadcast to [M, N]; the GEMM then accumulates onto it with beta
        kn_bcast bc;
        kn_cuda_bcast_init(&bc, Y, &C, 1);
        KN_TRY(kn_cuda_strided_copy(node, Y->data, C->data, es, 2, Y->dims, bc.st[0], s->s));
    } else {
        beta = 0.0f;
    }
    lt_gemm g = {};
    kn_status *ls = lt_setup(&g, s, node, dt, tf32, ta, tb, M, N, K, ta ? M : K, tb ? K : N, N, 1, 0, 0, 0,
                             align_of(A->data, 0), align_of(B->data, 0), align_of(Y->data, 0), epi ? &be : NULL);
    if (ls && epi) {
        // no algorithm takes this epilogue (the bias's alignment, say): C copied into Y and
        // accumulated, as above, and the ReLU left to the caller
        kn_status_free(ls);
        if (bias_row) {
            kn_bcast bc;
            kn_cuda_bcast_init(&bc, Y, &C, 1);
            KN_TRY(kn_cuda_strided_copy(node, Y->data, C->data, es, 2, Y->dims, bc.st[0], s->s));
            beta = 1.0f;
        }
        epi = false;
        ls = lt_setup(&g, s, node, dt, tf32, ta, tb, M, N, K, ta ? M : K, tb ? K : N, N, 1, 0, 0, 0,
                      align_of(A->data, 0), align_of(B->data, 0), align_of(Y->data, 0));
    }
    KN_TRY(ls);
    kn_status *st = lt_run(&g, s, node, A->data, B->data, Y->data, alpha, beta);
    lt_destroy(&g);
    *relu_done = epi && relu;
    return st;
}

KN_CUDA_KERNEL(Gemm) {
    (void)n_out;
    bool relu_done;
    return gemm_epilogue(ctx, node, in, n_in, out[0], false, &relu_done);
}

// FusedGemm's activation over Y in place, in float32 between the loads and the one rounding.
template <class T> __global__ void gemm_act_kernel(T *y, int64_t n, int act, float a, float b, float g) {
    KN_GRID_STRIDE(i, n) {
        float v = kn_num<T>::ld(y[i]);
        switch (act) {
        case KN_GEMM_ACT_RELU: v = fmaxf(v, 0.0f); break;
        case KN_GEMM_ACT_LEAKY_RELU: v = v < 0.0f ? a * v : v; break;
        case KN_GEMM_ACT_SIGMOID: v = 1.0f / (1.0f + expf(-v)); break;
        case KN_GEMM_ACT_TANH: v = tanhf(v); break;
        case KN_GEMM_ACT_HARD_SIGMOID: v = fmaxf(0.0f, fminf(1.0f, a * v + b)); break;
        case KN_GEMM_ACT_ELU: v = v < 0.0f ? a * expm1f(v) : v; break;
        case KN_GEMM_ACT_SELU: v = v > 0.0f ? g * v : g * a * expm1f(v); break;
        case KN_GEMM_ACT_CELU: v = fmaxf(0.0f, v) + fminf(0.0f, a * expm1f(v / a)); break;
        case KN_GEMM_ACT_SOFTPLUS: v = v > 0.0f ? v + log1pf(expf(-v)) : log1pf(expf(v)); break;
        case KN_GEMM_ACT_SOFTSIGN: v = v / (1.0f + fabsf(v)); break;
        case KN_GEMM_ACT_THRESHOLDED_RELU: v = v > a ? v : 0.0f; break;
        case KN_GEMM_ACT_PARAMETRIC_SOFTPLUS: {
            float x = b * v;
            v = a * (x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x)));
            break;
        }
        case KN_GEMM_ACT_SCALED_TANH: v = a * tanhf(b * v); break;
        case KN_GEMM_ACT_CLIP: v = v < a ? a : v > b ? b : v; break;
        default: break;
        }
        y[i] = kn_num<T>::st(v);
    }
}

// com.microsoft FusedGemm: Gemm's product with ReLU in cuBLASLt's RELU_BIAS / RELU epilogue, the
// other activations one elementwise pass over Y after the GEMM (as is ReLU when cuBLASLt has no
// algorithm with the epilogue).
KN_CUDA_KERNEL(MsFusedGemm) {
    (void)n_out;
    kn_tensor *Y = out[0];
    const kn_params_gemm *gp = KN_PARAMS(node, gemm);
    bool relu_done = false;
    KN_TRY(gemm_epilogue(ctx, node, in, n_in, Y, gp->act == KN_GEMM_ACT_RELU, &relu_done));
    int64_t n = kn_numel(Y);
    if (gp->act == KN_GEMM_ACT_NONE || relu_done || n == 0) return NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned blocks = kn_cuda_blocks(n, 256);
#define ACT_LAUNCH(T) \
    KN_LAUNCH(gemm_act_kernel<T>, blocks, 256, 0, s, (T *)Y->data, n, gp->act, gp->act_alpha, gp->act_beta, \
              gp->act_gamma)
    switch (Y->dtype) {
    case KN_F32: ACT_LAUNCH(float); break;
    case KN_F16: ACT_LAUNCH(__half); break;
    case KN_BF16: ACT_LAUNCH(__nv_bfloat16); break;
    default: return kn_err_dtype(node, Y);
    }
#undef ACT_LAUNCH
    KN_CUDA_LAUNCHED(node, "FusedGemm activation");
    return NULL;
}

bool kn_cuda_matmul_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 2 || !in[0] || !in[1] || in[0]->dtype != in[1]->dtype || !kn_cuda_float(in[0]->dtype)) return false;
    if (n->op == KN_OP_MatMul) return in[0]->ndim >= 1 && in[1]->ndim >= 1;
    // Gemm: 2-D operands, K > 0 (an empty product with a bias is left to the CPU), C of the same dtype
    if (in[0]->ndim != 2 || in[1]->ndim != 2) return false;
    if (n_in > 2 && in[2] && (in[2]->dtype != in[0]->dtype || in[2]->ndim > 2)) return false;
    int64_t K = KN_PARAMS(n, gemm)->trans_a ? in[0]->dims[0] : in[0]->dims[1];
    return K > 0;
}

// cuops: row-major float32 C[M,N] = A[M,K] B[N,K]^T on the run's stream, for kernels that need a
// product inside their own work (the recurrent ops' input and per-step recurrent projections).
kn_status *kn_cuda_gemm_f32_nt(kn_exec_ctx *ctx, const kn_node *node, int64_t M, int64_t N, int64_t K, const float *A,
                               int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return NULL;
    kn_cuda_stream *s = kn_cuda_st(ctx);
    if (K <= 0) {
        // an empty sum (C's rows are whole: ldc == N in every use)
        KN_CUDA_TRY(cudaMemsetAsync(C, 0, (size_t)(M * ldc) * sizeof(float), s->s), node, "GEMM zero");
        return NULL;
    }
    lt_gemm g;
    KN_TRY(lt_setup(&g, s, node, CUDA_R_32F, false, false, true, M, N, K, lda, ldb, ldc, 1, 0, 0, 0,
                    align_of(A, lda * 4), align_of(B, ldb * 4), align_of(C, ldc * 4)));
    kn_status *st = lt_run(&g, s, node, A, B, C, 1.0f, 0.0f);
    lt_destroy(&g);
    return st;
}

// com.microsoft GemmFastGelu: Y = FastGelu(X W + bias) with W one matrix [K, N], X's leading dims
// folded into the rows; the bias and the (tanh) GELU are cuBLASLt's GELU_BIAS / GELU epilogue, so
// the product is written once. Made by the GEMM + GELU fusion (graph/fuse.c) for the CUDA backend.
KN_CUDA_KERNEL(MsGemmFastGelu) {
    (void)n_out;
    const kn_tensor *X = in[0], *W = in[1], *bias = n_in > 2 ? in[2] : NULL;
    kn_tensor *Y = out[0];
    kn_cuda_stream *s = kn_cuda_st(ctx);
    cudaDataType_t dt;
    if (!dt_of(X->dtype, &dt) || W->dtype != X->dtype) return kn_err_dtype(node, X);
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    if (X->ndim < 1 || W->ndim != 2 || X->dims[X->ndim - 1] != W->dims[0])
        return kn_error(KN_ERR_INVALID_ARGUMENT, "GemmFastGelu: X %s and W %s do not multiply on cuda",
                        kn_tensor_desc(X, b0, sizeof b0), kn_tensor_desc(W, b1, sizeof b1));
    int64_t K = W->dims[0], N = W->dims[1], M = K > 0 ? kn_numel(X) / K : 0;
    if (bias && (kn_numel(bias) != N || bias->dtype != X->dtype))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "GemmFastGelu: bias %s must be [N=%lld] of X's type",
                        kn_tensor_desc(bias, b0, sizeof b0), (long long)N);
    if (M == 0 || N == 0) return NULL;
    if (K == 0) return kn_error(KN_ERR_UNSUPPORTED, "GemmFastGelu: an empty product on cuda");
    bool tf32 = ctx->precision == KN_PRECISION_TF32;
    lt_epilogue ep = {bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU, bias ? bias->data : NULL};
    lt_gemm g = {};
    kn_status *st = lt_setup(&g, s, node, dt, tf32, false, false, M, N, K, K, N, N, 1, 0, 0, 0, align_of(X->data, 0),
                             align_of(W->data, 0), align_of(Y->data, 0), &ep);
    bool epilogue = !st;
    if (st) {
        // no algorithm with this epilogue: the plain GEMM, then the bias and GELU over Y in place
        kn_status_free(st);
        KN_TRY(lt_setup(&g, s, node, dt, tf32, false, false, M, N, K, K, N, N, 1, 0, 0, 0, align_of(X->data, 0),
                        align_of(W->data, 0), align_of(Y->data, 0)));
    }
    st = lt_run(&g, s, node, X->data, W->data, Y->data, 1.0f, 0.0f);
    lt_destroy(&g);
    if (!st && !epilogue) st = kn_cuda_gelu_bias(ctx, node, Y, bias, Y, true);
    return st;
}

// X, W and bias of one float type, W one matrix, K > 0 (the empty product stays on the CPU).
bool kn_cuda_gemm_gelu_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    (void)n;
    if (n_in < 2 || !in[0] || !in[1] || !kn_cuda_float(in[0]->dtype) || in[1]->dtype != in[0]->dtype) return false;
    if (in[0]->ndim < 1 || in[1]->ndim != 2 || in[1]->dims[0] <= 0) return false;
    return n_in < 3 || !in[2] || in[2]->dtype == in[0]->dtype;
}
