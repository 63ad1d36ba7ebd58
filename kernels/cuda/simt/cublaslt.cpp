// cuBLASLt for kiln's SIMT interpreter: descriptors are plain structs, the heuristic always
// offers one "algorithm" that remembers the alignments it was promised, and cublasLtMatmul
// computes D = alpha op(A) op(B) + beta C (column-major, strided batches) with host loops that
// accumulate in float32 with fused multiply-adds, as CUBLAS_COMPUTE_32F does on the GPU (in its
// own order), then round once to D's type. CUBLAS_COMPUTE_32F_FAST_TF32 (float32 operands only)
// first rounds A and B to TF32 (10 explicit mantissa bits, to nearest with ties away from zero,
// as the tensor cores' cvt.rna.tf32.f32 does), so a TF32 session's error is the GPU's. Epilogues
// as cublasLt.h documents them: the bias vector (D's rows long, D's type unless BIAS_DATA_TYPE says
// otherwise, broadcast over columns and batches) added before the activation; RELU is
// x := max(x, 0) (a NaN becomes 0, as on the GPU), GELU the tanh approximation, all in float32
// before the one rounding. It validates what real cuBLASLt
// rejects or mis-serves: layouts whose shapes disagree, leading dimensions below the row count,
// non-device pointers, and pointers less aligned than the preference promised.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

struct kn_sim_lt_handle {
    int unused;
};
struct kn_sim_lt_desc {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    cublasOperation_t ta, tb;
    uint32_t epilogue;
    const void *bias;
    int32_t bias_type; // -1: D's type
};
struct kn_sim_lt_layout {
    cudaDataType_t t;
    uint64_t rows, cols;
    int64_t ld;
    int32_t batch;
    int64_t stride;
};
struct kn_sim_lt_pref {
    uint64_t ws;
    uint32_t align[4];
};

namespace {
thread_local char lt_err[512];
cublasStatus_t lt_fail(cublasStatus_t s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
cublasStatus_t lt_fail(cublasStatus_t s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lt_err, sizeof lt_err, fmt, ap);
    va_end(ap);
    if (getenv("KILN_SIM_VERBOSE")) fprintf(stderr, "kiln SIMT cuBLASLt: %s\n", lt_err);
    return s;
}
size_t dt_size(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : t == CUDA_R_64F ? 8 : 2; }
double ld_elem(const void *p, cudaDataType_t t, int64_t i) {
    switch (t) {
    case CUDA_R_32F: return ((const float *)p)[i];
    case CUDA_R_64F: return ((const double *)p)[i];
    case CUDA_R_16F: return __half2float(((const __half *)p)[i]);
    default: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    }
}
void st_elem(void *p, cudaDataType_t t, int64_t i, double v) {
    switch (t) {
    case CUDA_R_32F: ((float *)p)[i] = (float)v; break;
    case CUDA_R_64F: ((double *)p)[i] = v; break;
    case CUDA_R_16F: ((__half *)p)[i] = __float2half_rn((float)v); break;
    default: ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn((float)v); break;
    }
}
// the whole strided-batch extent of a matrix must be device memory
bool on_device(const void *p, const kn_sim_lt_layout *l) {
    if (!kn_sim_device_accessible(p, NULL, NULL)) return false;
    int64_t last = (int64_t)(l->batch - 1) * l->stride + (int64_t)(l->cols - 1) * l->ld + (int64_t)l->rows;
    return kn_sim_device_accessible((const char *)p + last * (int64_t)dt_size(l->t) - 1, NULL, NULL);
}
} // namespace

extern "C" {

const char *kn_sim_cublaslt_last_error(void) { return lt_err; }

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    *h = new kn_sim_lt_handle();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t c, cudaDataType_t s) {
    *d = new kn_sim_lt_desc{c, s, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, NULL, -1};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void *v,
                                              size_t n) {
    if (a == CUBLASLT_MATMUL_DESC_BIAS_POINTER) {
        if (n != sizeof(void *)) return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "bias pointer attribute: %zu bytes", n);
        memcpy(&d->bias, v, sizeof(void *));
        return CUBLAS_STATUS_SUCCESS;
    }
    if (n != sizeof(int32_t))
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "matmul desc attribute %d: %zu bytes", (int)a, n);
    int32_t x;
    memcpy(&x, v, 4);
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: d->ta = (cublasOperation_t)x; break;
    case CUBLASLT_MATMUL_DESC_TRANSB: d->tb = (cublasOperation_t)x; break;
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: d->compute = (cublasComputeType_t)x; break;
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: d->scale = (cudaDataType_t)x; break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: d->epilogue = (uint32_t)x; break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: d->bias_type = x; break;
    default: return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "matmul desc attribute %d", (int)a);
    }
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
    *l = NULL;
    if (ld < (int64_t)rows || ld < 1)
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "layout: ld %lld below rows %llu", (long long)ld,
                       (unsigned long long)rows);
    *l = new kn_sim_lt_layout{t, rows, cols, ld, 1, 0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t a,
                                                const void *v, size_t n) {
    if (a == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT && n == 4) memcpy(&l->batch, v, 4);
    else if (a == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET && n == 8) memcpy(&l->stride, v, 8);
    else return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "layout attribute %d with %zu bytes", (int)a, n);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = new kn_sim_lt_pref{0, {256, 256, 256, 256}};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t a, const void *v, size_t n) {
    if (a == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES && n == 8) memcpy(&p->ws, v, 8);
    else if (a >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES && a <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES &&
             n == 4)
        memcpy(&p->align[a - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], v, 4);
    else return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "preference attribute %d with %zu bytes", (int)a, n);
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t check_shapes(const kn_sim_lt_desc *d, const kn_sim_lt_layout *a, const kn_sim_lt_layout *b,
                                   const kn_sim_lt_layout *c, const kn_sim_lt_layout *dl) {
    uint64_t m = d->ta == CUBLAS_OP_N ? a->rows : a->cols, k = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
    uint64_t kb = d->tb == CUBLAS_OP_N ? b->rows : b->cols, n = d->tb == CUBLAS_OP_N ? b->cols : b->rows;
    if (k != kb)
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "op(A) is %llux%llu but op(B) is %llux%llu", (unsigned long long)m,
                       (unsigned long long)k, (unsigned long long)kb, (unsigned long long)n);
    if (c->rows != m || c->cols != n || dl->rows != m || dl->cols != n)
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "C/D are %llux%llu, op(A) op(B) is %llux%llu",
                       (unsigned long long)dl->rows, (unsigned long long)dl->cols, (unsigned long long)m,
                       (unsigned long long)n);
    if (a->batch != dl->batch || b->batch != dl->batch || c->batch != dl->batch)
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "batch counts differ (%d, %d, %d, %d)", a->batch, b->batch,
                       c->batch, dl->batch);
    if ((d->compute != CUBLAS_COMPUTE_32F && d->compute != CUBLAS_COMPUTE_32F_FAST_TF32) || d->scale != CUDA_R_32F)
        return lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "compute type %d, scale type %d", (int)d->compute, (int)d->scale);
    if (a->t != b->t || c->t != dl->t) return lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "mixed A/B or C/D types");
    if (d->compute == CUBLAS_COMPUTE_32F_FAST_TF32 && a->t != CUDA_R_32F)
        return lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "TF32 compute with operands of type %d", (int)a->t);
    switch (d->epilogue) {
    case CUBLASLT_EPILOGUE_DEFAULT:
    case CUBLASLT_EPILOGUE_RELU:
    case CUBLASLT_EPILOGUE_GELU: break;
    case CUBLASLT_EPILOGUE_BIAS:
    case CUBLASLT_EPILOGUE_RELU_BIAS:
    case CUBLASLT_EPILOGUE_GELU_BIAS:
        if (!d->bias) return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "epilogue %u without a bias pointer", d->epilogue);
        if (d->bias_type != -1 && d->bias_type != CUDA_R_32F && d->bias_type != CUDA_R_16F &&
            d->bias_type != CUDA_R_16BF)
            return lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "bias data type %d", (int)d->bias_type);
        break;
    default: return lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "epilogue %u", d->epilogue);
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t dl, cublasLtMatmulPreference_t p, int requested,
                                              cublasLtMatmulHeuristicResult_t *res, int *found) {
    *found = 0;
    if (!h || requested < 1) return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "heuristic: no handle or no room");
    cublasStatus_t s = check_shapes(d, a, b, c, dl);
    if (s) return s;
    // KILN_SIM_LT_NO_EPILOGUE=1: no algorithm takes an epilogue, as real cuBLASLt may answer for a
    // type, layout or bias alignment it has none for (tests the backend's way around it)
    if (d->epilogue != CUBLASLT_EPILOGUE_DEFAULT && getenv("KILN_SIM_LT_NO_EPILOGUE"))
        return lt_fail(CUBLAS_STATUS_NOT_SUPPORTED, "heuristic: no algorithm for epilogue %u (KILN_SIM_LT_NO_EPILOGUE)",
                       d->epilogue);
    memset(res, 0, sizeof *res);
    for (int i = 0; i < 4; i++) res->algo.data[i] = p->align[i];
    res->workspaceSize = 0;
    res->state = CUBLAS_STATUS_SUCCESS;
    res->wavesCount = 1.0f;
    *found = 1;
    return CUBLAS_STATUS_SUCCESS;
}

// x rounded to TF32: 13 low mantissa bits dropped, to nearest with ties away from zero (finite
// values; Inf and NaN pass through).
static float to_tf32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return x;
    u = (u + 0x1000u) & ~0x1fffu;
    memcpy(&x, &u, 4);
    return x;
}

static cublasStatus_t lt_compute(const kn_sim_lt_desc *d, float alpha, float beta, const void *A,
                                 const kn_sim_lt_layout *la, const void *B, const kn_sim_lt_layout *lb, const void *C,
                                 const kn_sim_lt_layout *lc, void *D, const kn_sim_lt_layout *ldl);

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha_p, const void *A,
                              cublasLtMatrixLayout_t la, const void *B, cublasLtMatrixLayout_t lb, const void *beta_p,
                              const void *C, cublasLtMatrixLayout_t lc, void *D, cublasLtMatrixLayout_t ldl,
                              const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_bytes, cudaStream_t s) {
    if (!h) return lt_fail(CUBLAS_STATUS_NOT_INITIALIZED, "no handle");
    cublasStatus_t st = check_shapes(d, la, lb, lc, ldl);
    if (st) return st;
    // KILN_SIM_LT_TRACE=1: one stderr line per product that has an epilogue, naming it, so tests
    // can tell a fused epilogue ran from its fallback (the plain GEMM plus a kernel of kiln's)
    if (d->epilogue != CUBLASLT_EPILOGUE_DEFAULT && getenv("KILN_SIM_LT_TRACE")) {
        const char *en = d->epilogue == CUBLASLT_EPILOGUE_RELU ? "RELU"
            : d->epilogue == CUBLASLT_EPILOGUE_BIAS            ? "BIAS"
            : d->epilogue == CUBLASLT_EPILOGUE_RELU_BIAS       ? "RELU_BIAS"
            : d->epilogue == CUBLASLT_EPILOGUE_GELU            ? "GELU"
            : d->epilogue == CUBLASLT_EPILOGUE_GELU_BIAS       ? "GELU_BIAS"
                                                               : "other";
        fprintf(stderr, "kiln SIMT cuBLASLt: matmul epilogue %s (%llu x %llu)\n", en, (unsigned long long)ldl->cols,
                (unsigned long long)ldl->rows);
    }
    if (ws_bytes && !kn_sim_device_accessible(ws, NULL, NULL))
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "workspace is not device memory");
    float alpha, beta;
    memcpy(&alpha, alpha_p, 4); // host pointer mode
    memcpy(&beta, beta_p, 4);
    if (!ldl->rows || !ldl->cols) return CUBLAS_STATUS_SUCCESS;
    if (!on_device(A, la) || !on_device(B, lb) || !on_device(D, ldl) || (beta != 0.0f && !on_device(C, lc)))
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "an operand (or its last batch) is not in device memory");
    bool has_bias = d->epilogue & CUBLASLT_EPILOGUE_BIAS;
    cudaDataType_t bt = d->bias_type == -1 ? ldl->t : (cudaDataType_t)d->bias_type;
    if (has_bias &&
        (!kn_sim_device_accessible(d->bias, NULL, NULL) ||
         !kn_sim_device_accessible((const char *)d->bias + (int64_t)ldl->rows * (int64_t)dt_size(bt) - 1, NULL, NULL)))
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "the bias vector (%lld elements) is not in device memory",
                       (long long)ldl->rows);
    const void *ptrs[4] = {A, B, C, D};
    const kn_sim_lt_layout *lays[4] = {la, lb, lc, ldl};
    for (int i = 0; i < 4; i++) {
        uint64_t al = algo ? algo->data[i] : 256;
        if (!al) continue;
        for (int32_t bi = 0; bi < lays[i]->batch; bi++) {
            uintptr_t p = (uintptr_t)ptrs[i] + (uintptr_t)(bi * lays[i]->stride * (int64_t)dt_size(lays[i]->t));
            if (p % al)
                return lt_fail(CUBLAS_STATUS_INVALID_VALUE,
                               "operand %c of batch %d at %p is not %llu-byte aligned as promised", "ABCD"[i], bi,
                               (void *)p, (unsigned long long)al);
        }
    }
    if (kn_sim_stream_capturing(s)) {
        // recorded with copies of the descriptors (the caller may destroy them once the call
        // returns, as cuBLASLt's captured kernels hold their parameters) and computed at replay
        struct rec {
            kn_sim_lt_desc d;
            kn_sim_lt_layout la, lb, lc, ldl;
            float alpha, beta;
            const void *A, *B, *C;
            void *D;
        };
        rec *r = new rec{*d, *la, *lb, *lc, *ldl, alpha, beta, A, B, C, D};
        cudaError_t e = kn_sim_capture_record(
            s,
            [](void *p) -> cudaError_t {
                rec *q = (rec *)p;
                return lt_compute(&q->d, q->alpha, q->beta, q->A, &q->la, q->B, &q->lb, q->C, &q->lc, q->D, &q->ldl)
                    ? cudaErrorLaunchFailure
                    : cudaSuccess;
            },
            r, [](void *p) { delete (rec *)p; });
        return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
    }
    return lt_compute(d, alpha, beta, A, la, B, lb, C, lc, D, ldl);
}

static cublasStatus_t lt_compute(const kn_sim_lt_desc *d, float alpha, float beta, const void *A,
                                 const kn_sim_lt_layout *la, const void *B, const kn_sim_lt_layout *lb, const void *C,
                                 const kn_sim_lt_layout *lc, void *D, const kn_sim_lt_layout *ldl) {
    if (!on_device(A, la) || !on_device(B, lb) || !on_device(D, ldl) || (beta != 0.0f && !on_device(C, lc)))
        return lt_fail(CUBLAS_STATUS_INVALID_VALUE, "an operand (or its last batch) is not in device memory");
    const int64_t m = (int64_t)ldl->rows, n = (int64_t)ldl->cols,
                  k = (int64_t)(d->ta == CUBLAS_OP_N ? la->cols : la->rows);
    bool has_bias = d->epilogue & CUBLASLT_EPILOGUE_BIAS;
    cudaDataType_t bt = d->bias_type == -1 ? ldl->t : (cudaDataType_t)d->bias_type;
    std::vector<float> a((size_t)(m * k)), b((size_t)(n * k)); // op(A) row-major [m][k], op(B)^T row-major [n][k]
    size_t es = dt_size(la->t);
    for (int32_t bi = 0; bi < ldl->batch; bi++) {
        const char *pa = (const char *)A + bi * la->stride * (int64_t)es,
                   *pb = (const char *)B + bi * lb->stride * (int64_t)es;
        const char *pc = (const char *)C + bi * lc->stride * (int64_t)dt_size(lc->t);
        char *pd = (char *)D + bi * ldl->stride * (int64_t)dt_size(ldl->t);
        for (int64_t i = 0; i < m; i++)
            for (int64_t kk = 0; kk < k; kk++)
                a[(size_t)(i * k + kk)] =
                    (float)ld_elem(pa, la->t, d->ta == CUBLAS_OP_N ? i + kk * la->ld : kk + i * la->ld);
        for (int64_t j = 0; j < n; j++)
            for (int64_t kk = 0; kk < k; kk++)
                b[(size_t)(j * k + kk)] =
                    (float)ld_elem(pb, lb->t, d->tb == CUBLAS_OP_N ? kk + j * lb->ld : j + kk * lb->ld);
        if (d->compute == CUBLAS_COMPUTE_32F_FAST_TF32) {
            for (float &v : a) v = to_tf32(v);
            for (float &v : b) v = to_tf32(v);
        }
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < m; i++) {
                const float *x = &a[(size_t)(i * k)], *y = &b[(size_t)(j * k)];
                float acc = 0;
                for (int64_t kk = 0; kk < k; kk++) acc = fmaf(x[kk], y[kk], acc);
                float v = alpha * acc;
                if (beta != 0.0f) v = fmaf(beta, (float)ld_elem(pc, lc->t, i + j * lc->ld), v);
                if (has_bias) v += (float)ld_elem(d->bias, bt, i);
                if (d->epilogue & CUBLASLT_EPILOGUE_RELU) v = fmaxf(v, 0.0f);
                if (d->epilogue & CUBLASLT_EPILOGUE_GELU)
                    v = 0.5f * v * (1.0f + tanhf(0.79788456080286535588f * (v + 0.044715f * v * v * v)));
                st_elem(pd, ldl->t, i + j * ldl->ld, v);
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}

} // extern "C"
