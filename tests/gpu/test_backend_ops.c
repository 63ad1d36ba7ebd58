/* Every op the CUDA backend supports, run on the device and on the CPU reference node by node:
 * random inputs over many shapes (odd sizes, broadcasting, scalars, empty tensors, large ones)
 * and every supported dtype. Device outputs sit between guard bytes that must come back intact
 * (stray writes), NaN/Inf must appear only where the CPU has them, and values must agree within
 * per-dtype tolerances. Ops without a CUDA kernel are listed as skipped. A table ends the run.
 * Exit 77 with "skipped: no CUDA device" where there is none.
 * Usage: test_backend_ops [-v] [Op,Op,...]: with op names, only those ops' cases run. */
#include "graph/ops.h"
#include "runtime/executor.h"
#include "runtime/core/dtype.h"
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GUARD 256
#define GUARD_BYTE 0xA5
#define MAX_IN 12 /* EmbedLayerNormalization has 9 inputs */

static const kn_backend *cu;
static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static double urand(double lo, double hi) { return lo + (hi - lo) * (double)(rnd() >> 11) / 9007199254740992.0; }

typedef struct {
    int cases, passed, failed;
    double worst;
} op_stats;
static op_stats stats[KN_OP_COUNT];
static int verbose;
/* ops named on the command line (comma-separated): only their cases run and are tabled */
static bool only[KN_OP_COUNT], only_some;
static bool op_selected(int op) { return !only_some || only[op]; }

/* ---- inputs ---- */
enum { R_ANY, R_POS, R_SMALLINT, R_BOOL };
static kn_tensor *rand_tensor(kn_dtype dt, int nd, const int64_t *dims, int range) {
    kn_tensor *t = NULL;
    kn_status *st = kn_tensor_new(dt, nd, dims, &t);
    if (st) {
        fprintf(stderr, "tensor: %s\n", kn_status_message(st));
        exit(1);
    }
    for (int64_t i = 0; i < kn_numel(t); i++) {
        double v;
        if (dt == KN_BOOL || range == R_BOOL) v = (double)(rnd() & 1);
        else if (kn_dtype_is_float(dt))
            v = range == R_POS ? urand(0.05, 4.0) : range == R_SMALLINT ? (double)(int)urand(-3, 4) : urand(-3.0, 3.0);
        else
            v = range == R_POS        ? (double)(1 + rnd() % 9)
                : range == R_SMALLINT ? (double)((int)(rnd() % 7) - 3)
                                      : (double)((int64_t)(rnd() % 2001) - 1000);
        kn_set_f64(t, i, v);
    }
    return t;
}
static kn_tensor *ints_tensor(const int64_t *v, int n) {
    int64_t d = n;
    kn_tensor *t = NULL;
    kn_tensor_new(KN_I64, 1, &d, &t);
    memcpy(t->data, v, sizeof(int64_t) * (size_t)n);
    return t;
}

/* ---- comparing ---- */
/* cuconv's ops that sum (convolutions, their adjoints, batch statistics): the accumulating tolerance */
static bool cuconv_acc(int op) {
    return op == KN_OP_Conv || op == KN_OP_ConvTranspose || op == KN_OP_KnConvGradX || op == KN_OP_KnConvGradW ||
        op == KN_OP_BatchNormalization || op == KN_OP_KnBatchNormalizationGrad || op == KN_OP_AveragePool ||
        op == KN_OP_GlobalAveragePool || op == KN_OP_KnAveragePoolGrad || op == KN_OP_KnMaxPoolGrad ||
        op == KN_OP_Resize || op == KN_OP_LpPool || op == KN_OP_GlobalLpPool;
}
static void tol_of(kn_dtype t, int op, double *rtol, double *atol) {
    bool acc = op == KN_OP_MatMul || op == KN_OP_Gemm || op == KN_OP_ReduceSum || op == KN_OP_ReduceMean ||
        op == KN_OP_Softmax || op == KN_OP_LogSoftmax || op == KN_OP_LayerNormalization || op == KN_OP_Pow ||
        op == KN_OP_MsEmbedLayerNormalization || op == KN_OP_KnReduceSumTo || op == KN_OP_KnSoftmaxGrad ||
        op == KN_OP_KnLogSoftmaxGrad || op == KN_OP_KnLayerNormalizationGrad || op == KN_OP_KnGatherGrad ||
        cuconv_acc(op);
    /* cucontrib: the row normalisations and the block-quantised GEMM sum in another order */
    acc = acc || op == KN_OP_MsSkipLayerNormalization || op == KN_OP_MsSkipSimplifiedLayerNormalization ||
        op == KN_OP_SimplifiedLayerNormalization || op == KN_OP_MsMatMulNBits || op == KN_OP_MsGemmFastGelu;
    acc = acc || op == KN_OP_RMSNormalization; /* cucover: a row sum of squares */
    acc = acc || op == KN_OP_MsFusedGemm;      /* fusedgemm: a GEMM, then (16-bit) a second rounding */

    switch (t) {
    case KN_F32:
        *rtol = acc ? 1e-4 : 2e-6;
        *atol = acc ? 1e-4 : 1e-6;
        break;
    case KN_F16:
        *rtol = acc ? 5e-3 : 1e-3;
        *atol = acc ? 5e-3 : 1e-3;
        break;
    case KN_BF16:
        *rtol = acc ? 3e-2 : 8e-3;
        *atol = acc ? 3e-2 : 8e-3;
        break;
    default:
        *rtol = 0;
        *atol = 0;
        break;
    }
    /* cuops: recurrent ops: float32 products summed in another order and float activations */
    if ((op == KN_OP_RNN || op == KN_OP_GRU || op == KN_OP_LSTM) && t == KN_F32) {
        *rtol = 1e-4;
        *atol = 1e-5;
    }
    if (op == KN_OP_Erf || op == KN_OP_Tanh || op == KN_OP_Exp || op == KN_OP_Log || op == KN_OP_Sin ||
        op == KN_OP_Cos || op == KN_OP_Sigmoid) {
        if (t == KN_F32) {
            *rtol = 1e-5;
            *atol = 1e-6;
        }
    }
}

/* 0 if equal within tolerance; sets *worst to the largest abs difference */
static int compare(const kn_tensor *ref, const void *got, int op, double *worst, char *why, size_t wl) {
    double rtol, atol;
    tol_of(ref->dtype, op, &rtol, &atol);
    kn_tensor g = *ref;
    g.data = (void *)got;
    int64_t n = kn_numel(ref);
    for (int64_t i = 0; i < n; i++) {
        double a = kn_get_f64(ref, i), b = kn_get_f64(&g, i);
        if (isnan(a) || isnan(b)) {
            if (isnan(a) && isnan(b)) continue;
            snprintf(why, wl, "element %lld: cpu %g, cuda %g (NaN mismatch)", (long long)i, a, b);
            return 1;
        }
        if (isinf(a) || isinf(b)) {
            if (a == b) continue;
            snprintf(why, wl, "element %lld: cpu %g, cuda %g (Inf mismatch)", (long long)i, a, b);
            return 1;
        }
        double d = fabs(a - b);
        if (d > *worst) *worst = d;
        if (d > atol + rtol * fabs(a)) {
            snprintf(why, wl, "element %lld: cpu %.9g, cuda %.9g (|diff| %.3g > %.3g)", (long long)i, a, b, d,
                     atol + rtol * fabs(a));
            return 1;
        }
    }
    return 0;
}

/* ---- one case: node op with attrs on inputs, CPU vs CUDA ---- */
static const char *dims_str(const kn_tensor *t, char *buf, size_t n) { return kn_tensor_desc(t, buf, n); }

/* Case modes: the device output 0 written over input 0's device buffer (the planner's in-place
 * sharing for elementwise ops), and outputs handed to the kernel as NULL (omitted by the graph:
 * the CPU still computes them, the device must leave the others right). */
static int case_inplace;
static unsigned case_omit;

static void run_case(int op, int opset, kn_attr *attrs, int n_attrs, kn_tensor **in, int n_in, int n_out) {
    if (!op_selected(op)) return;
    kn_node node = {0};
    node.name = (char *)"t";
    node.op_type = (char *)kn_op_table[op].name;
    node.domain = (char *)kn_op_table[op].domain;
    if (!op_selected(op)) return;
    node.op = op;
    node.opset = opset;
    node.n_attrs = n_attrs;
    node.attrs = attrs;
    node.n_inputs = n_in;
    kn_status *pst = kn_node_decode_params(&node); /* as loading does */
    if (pst) {
        fprintf(stderr, "%s: params: %s\n", kn_op_table[op].name, kn_status_message(pst));
        exit(1);
    }
    const kn_tensor *cin[MAX_IN];
    for (int k = 0; k < n_in; k++) cin[k] = in[k];
    char desc[512] = "", b[KN_DESC_LEN];
    size_t off = 0;
    for (int k = 0; k < n_in && off < sizeof desc; k++)
        off += (size_t)snprintf(desc + off, sizeof desc - off, "%s%s", k ? ", " : "",
                                in[k] ? dims_str(in[k], b, sizeof b) : "-");
    op_stats *S = &stats[op];
    S->cases++;
    /* CPU reference */
    kn_tensor ref_t[MAX_IN] = {{0}}, *ref[MAX_IN];
    for (int k = 0; k < n_out; k++) ref[k] = &ref_t[k];
    kn_scratch scratch = {0};
    kn_exec_ctx cctx = {
        .backend = kn_cpu_backend(), .scratch_alloc = kn_scratch_alloc_impl, .scratch_state = &scratch, .seed = 1};
    kn_status *st = kn_node_eval_host(&cctx, &node, cin, n_in, ref, n_out);
    if (st) {
        /* the case is invalid for the op (the CPU refuses it): not a CUDA failure */
        if (verbose) printf("  note %s(%s): cpu: %s\n", node.op_type, desc, kn_status_message(st));
        kn_status_free(st);
        S->cases--;
        kn_scratch_release(&scratch);
        return;
    }
    if (!cu->supports(cu, &node, cin, n_in)) {
        printf("FAIL %s(%s): the CUDA backend does not support a case of an op it has a kernel for\n", node.op_type,
               desc);
        S->failed++;
        goto done;
    }
    {
        /* device inputs, except those the backend reads on the host */
        uint64_t hm = cu->host_inputs ? cu->host_inputs(cu, &node) : 0;
        kn_tensor din_t[MAX_IN], *din[MAX_IN];
        void *dptr[MAX_IN] = {0};
        for (int k = 0; k < n_in; k++) {
            din[k] = NULL;
            if (!in[k]) continue;
            din_t[k] = *in[k];
            din[k] = &din_t[k];
            if (hm >> k & 1) continue;
            size_t nb = kn_nbytes(in[k]);
            dptr[k] = cu->alloc(cu, nb);
            if (!dptr[k]) {
                fprintf(stderr, "device alloc of %zu bytes failed\n", nb);
                exit(1);
            }
            kn_status *ce = cu->copy(cu, dptr[k], KN_DEVICE_CUDA, in[k]->data, KN_DEVICE_CPU, nb);
            if (ce) {
                fprintf(stderr, "upload: %s\n", kn_status_message(ce));
                exit(1);
            }
            din_t[k].data = dptr[k];
            din_t[k].device = KN_DEVICE_CUDA;
            din_t[k].owns = false;
        }
        /* device outputs between guards */
        kn_tensor dout_t[MAX_IN], *dout[MAX_IN];
        char *graw[MAX_IN] = {0};
        for (int k = 0; k < n_out; k++) {
            dout_t[k] = ref_t[k];
            dout_t[k].owns = false;
            dout_t[k].device = KN_DEVICE_CUDA;
            dout[k] = &dout_t[k];
            size_t nb = kn_nbytes(&ref_t[k]);
            cudaMalloc((void **)&graw[k], nb + 2 * GUARD);
            cudaMemset(graw[k], GUARD_BYTE, nb + 2 * GUARD);
            dout_t[k].data = graw[k] + GUARD;
            if (case_omit >> k & 1) dout[k] = NULL;
        }
        bool inplace = case_inplace && n_in > 0 && dptr[0] && kn_nbytes(in[0]) == kn_nbytes(&ref_t[0]);
        if (inplace) dout_t[0].data = dptr[0];
        /* cudaMemset is asynchronous and on the legacy stream, which the run's non-blocking stream
         * does not wait for: settle it (and the uploads) before the kernel starts */
        if (cudaDeviceSynchronize() != cudaSuccess) {
            fprintf(stderr, "device error before the case\n");
            exit(1);
        }
        kn_exec_ctx dctx = cctx;
        dctx.backend = cu;
        st = cu->stream_begin(cu, &dctx.stream);
        if (!st) {
            kn_kernel_fn fn = cu->kernel(cu, op);
            st = fn(&dctx, &node, (const kn_tensor *const *)din, n_in, dout, n_out);
            kn_status *e = cu->stream_end(cu, dctx.stream);
            if (!st) st = e;
            else if (e) kn_status_free(e);
        }
        char why[256] = "";
        int bad = 0;
        if (st) {
            snprintf(why, sizeof why, "%s", kn_status_message(st));
            kn_status_free(st);
            bad = 1;
        }
        for (int k = 0; k < n_out && !bad; k++) {
            size_t nb = kn_nbytes(&ref_t[k]);
            unsigned char *h = malloc(nb + 2 * GUARD);
            if (!dout[k]) { /* omitted: the kernel must not have written anything */
                cudaMemcpy(h, graw[k], nb + 2 * GUARD, cudaMemcpyDeviceToHost);
                for (size_t i = 0; i < nb + 2 * GUARD && !bad; i++)
                    if (h[i] != GUARD_BYTE) {
                        snprintf(why, sizeof why, "omitted output %d was written (byte %zu)", k, i);
                        bad = 1;
                    }
                free(h);
                continue;
            }
            cudaMemcpy(h, graw[k], nb + 2 * GUARD, cudaMemcpyDeviceToHost);
            if (k == 0 && inplace) /* the result is in input 0's buffer; the guarded one must be untouched */
                for (size_t i = 0; i < nb + 2 * GUARD && !bad; i++)
                    if (h[i] != GUARD_BYTE) {
                        snprintf(why, sizeof why, "in place: the unused output buffer was written (byte %zu)", i);
                        bad = 1;
                    }
            if (k == 0 && inplace) cudaMemcpy(h + GUARD, dptr[0], nb, cudaMemcpyDeviceToHost);
            for (size_t i = 0; i < GUARD && !bad; i++)
                if (h[i] != GUARD_BYTE || h[GUARD + nb + i] != GUARD_BYTE) {
                    snprintf(why, sizeof why, "output %d: stray write %s the output (guard byte %zu)", k,
                             h[i] != GUARD_BYTE ? "before" : "after", i);
                    bad = 1;
                }
            if (!bad && compare(&ref_t[k], h + GUARD, op, &S->worst, why, sizeof why)) bad = 1;
            free(h);
        }
        if (bad) {
            S->failed++;
            char attrs_desc[128] = "";
            printf("FAIL %s(%s) opset %d%s%s -> %s: %s\n", node.op_type, desc, opset, inplace ? " in place" : "",
                   case_omit ? " with omitted outputs" : "", dims_str(&ref_t[0], b, sizeof b), why);
            (void)attrs_desc;
        } else {
            S->passed++;
        }
        for (int k = 0; k < n_in; k++)
            if (dptr[k]) cu->free(cu, dptr[k]);
        for (int k = 0; k < n_out; k++) cudaFree(graw[k]);
    }
done:
    for (int k = 0; k < n_out; k++) kn_tensor_release(&ref_t[k]);
    kn_scratch_release(&scratch);
    free(node.params);
}

static kn_attr ai(const char *n, int64_t v) {
    kn_attr a = {0};
    a.name = (char *)n;
    a.type = KN_ATTR_INT;
    a.i = v;
    return a;
}
static kn_attr af(const char *n, float v) {
    kn_attr a = {0};
    a.name = (char *)n;
    a.type = KN_ATTR_FLOAT;
    a.f = v;
    return a;
}
static kn_attr aints(const char *n, const int64_t *v, int k) {
    kn_attr a = {0};
    a.name = (char *)n;
    a.type = KN_ATTR_INTS;
    a.ints = (int64_t *)v;
    a.n_ints = k;
    return a;
}

static kn_attr astr(const char *n, const char *v) {
    kn_attr a = {0};
    a.name = (char *)n;
    a.type = KN_ATTR_STRING;
    a.s = (char *)v;
    a.s_len = strlen(v);
    return a;
}

static void run1(int op, int opset, kn_attr *at, int na, kn_tensor **in, int n_in, int n_out) {
    run_case(op, opset, at, na, in, n_in, n_out);
    for (int k = 0; k < n_in; k++) kn_tensor_free(in[k]);
}

/* shapes: rank, dims */
typedef struct {
    int nd;
    int64_t d[6];
} shp;
static const shp unary_shapes[] = {{0, {0}},       {1, {1}},         {1, {7}},       {2, {3, 5}},      {1, {0}},
                                   {3, {2, 0, 3}}, {3, {17, 33, 9}}, {1, {1 << 20}}, {4, {2, 3, 5, 7}}};
static const shp bin_pairs[][2] = {
    {{1, {7}}, {1, {7}}},
    {{2, {3, 5}}, {1, {5}}},
    {{3, {2, 1, 4}}, {2, {3, 1}}},
    {{0, {0}}, {1, {4}}},
    {{2, {0, 3}}, {1, {3}}},
    {{1, {1 << 20}}, {0, {0}}},
    {{4, {4, 1, 6, 1}}, {4, {1, 5, 1, 3}}},
    {{2, {129, 257}}, {2, {129, 257}}},
    {{2, {1, 1}}, {3, {2, 3, 1}}},
    {{6, {2, 1, 3, 1, 2, 3}}, {5, {2, 1, 2, 1, 3}}},
};
#define N_ARR(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void test_unary(void) {
    static const int fops[] = {KN_OP_Sqrt,       KN_OP_Erf,   KN_OP_Tanh, KN_OP_Sigmoid, KN_OP_Exp, KN_OP_Log,
                               KN_OP_Reciprocal, KN_OP_Floor, KN_OP_Ceil, KN_OP_Sin,     KN_OP_Cos, KN_OP_IsNaN};
    static const int iops[] = {KN_OP_Abs, KN_OP_Neg, KN_OP_Relu, KN_OP_Sign};
    static const kn_dtype fdt[] = {KN_F32, KN_F16, KN_BF16}, idt[] = {KN_F32, KN_F16, KN_BF16, KN_I32, KN_I64};
    for (int o = 0; o < N_ARR(fops); o++)
        for (int t = 0; t < N_ARR(fdt); t++)
            for (int s = 0; s < N_ARR(unary_shapes); s++) {
                int range = fops[o] == KN_OP_Sqrt || fops[o] == KN_OP_Log ? R_POS : R_ANY;
                kn_tensor *in[1] = {rand_tensor(fdt[t], unary_shapes[s].nd, unary_shapes[s].d, range)};
                run1(fops[o], 18, NULL, 0, in, 1, 1);
            }
    for (int o = 0; o < N_ARR(iops); o++)
        for (int t = 0; t < N_ARR(idt); t++)
            for (int s = 0; s < N_ARR(unary_shapes); s++) {
                kn_tensor *in[1] = {rand_tensor(idt[t], unary_shapes[s].nd, unary_shapes[s].d, R_ANY)};
                run1(iops[o], 18, NULL, 0, in, 1, 1);
            }
    for (int s = 0; s < N_ARR(unary_shapes); s++) {
        kn_tensor *in[1] = {rand_tensor(KN_BOOL, unary_shapes[s].nd, unary_shapes[s].d, R_BOOL)};
        run1(KN_OP_Not, 18, NULL, 0, in, 1, 1);
    }
    /* NaN/Inf inputs must propagate the way the CPU's do */
    int64_t d = 6;
    kn_tensor *x = rand_tensor(KN_F32, 1, &d, R_ANY);
    ((float *)x->data)[1] = NAN;
    ((float *)x->data)[2] = INFINITY;
    ((float *)x->data)[3] = -INFINITY;
    for (int o = 0; o < N_ARR(fops); o++) {
        kn_tensor *c = NULL;
        kn_tensor_clone(x, &c);
        kn_tensor *in[1] = {c};
        run1(fops[o], 18, NULL, 0, in, 1, 1);
    }
    kn_tensor_free(x);
}

static void test_binary(void) {
    static const int aops[] = {KN_OP_Add, KN_OP_Sub, KN_OP_Mul, KN_OP_Div, KN_OP_Pow};
    static const int cops[] = {KN_OP_Equal, KN_OP_Less, KN_OP_Greater, KN_OP_LessOrEqual, KN_OP_GreaterOrEqual};
    static const int lops[] = {KN_OP_And, KN_OP_Or, KN_OP_Xor};
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16, KN_I32, KN_I64};
    for (int p = 0; p < N_ARR(bin_pairs); p++)
        for (int t = 0; t < N_ARR(dts); t++) {
            for (int o = 0; o < N_ARR(aops); o++) {
                bool pw = aops[o] == KN_OP_Pow;
                kn_tensor *in[2] = {rand_tensor(dts[t], bin_pairs[p][0].nd, bin_pairs[p][0].d, pw ? R_POS : R_ANY),
                                    rand_tensor(dts[t], bin_pairs[p][1].nd, bin_pairs[p][1].d,
                                                pw                         ? R_SMALLINT
                                                    : aops[o] == KN_OP_Div ? R_POS
                                                                           : R_ANY)};
                run1(aops[o], 18, NULL, 0, in, 2, 1);
            }
            for (int o = 0; o < N_ARR(cops); o++) {
                kn_tensor *in[2] = {rand_tensor(dts[t], bin_pairs[p][0].nd, bin_pairs[p][0].d, R_SMALLINT),
                                    rand_tensor(dts[t], bin_pairs[p][1].nd, bin_pairs[p][1].d, R_SMALLINT)};
                run1(cops[o], 18, NULL, 0, in, 2, 1);
            }
        }
    for (int p = 0; p < N_ARR(bin_pairs); p++) {
        for (int o = 0; o < N_ARR(lops); o++) {
            kn_tensor *in[2] = {rand_tensor(KN_BOOL, bin_pairs[p][0].nd, bin_pairs[p][0].d, R_BOOL),
                                rand_tensor(KN_BOOL, bin_pairs[p][1].nd, bin_pairs[p][1].d, R_BOOL)};
            run1(lops[o], 18, NULL, 0, in, 2, 1);
        }
        kn_tensor *in[2] = {rand_tensor(KN_BOOL, bin_pairs[p][0].nd, bin_pairs[p][0].d, R_BOOL),
                            rand_tensor(KN_BOOL, bin_pairs[p][1].nd, bin_pairs[p][1].d, R_BOOL)};
        run1(KN_OP_Equal, 18, NULL, 0, in, 2, 1);
        static const kn_dtype wdt[] = {KN_F32, KN_F16, KN_I64, KN_BOOL, KN_I32};
        for (int t = 0; t < N_ARR(wdt); t++) {
            kn_tensor *w[3] = {rand_tensor(KN_BOOL, bin_pairs[p][0].nd, bin_pairs[p][0].d, R_BOOL),
                               rand_tensor(wdt[t], bin_pairs[p][1].nd, bin_pairs[p][1].d, R_ANY),
                               rand_tensor(wdt[t], bin_pairs[p][0].nd, bin_pairs[p][0].d, R_ANY)};
            run1(KN_OP_Where, 18, NULL, 0, w, 3, 1);
        }
    }
}

static void test_cast(void) {
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16, KN_I32, KN_I64, KN_BOOL, KN_F64, KN_I8, KN_U8};
    for (int a = 0; a < N_ARR(dts); a++)
        for (int b = 0; b < N_ARR(dts); b++)
            for (int s = 0; s < N_ARR(unary_shapes); s++) {
                kn_attr at[1] = {ai("to", dts[b])};
                kn_tensor *in[1] = {rand_tensor(dts[a], unary_shapes[s].nd, unary_shapes[s].d, R_ANY)};
                if (kn_dtype_is_float(dts[a]) && kn_numel(in[0]) > 3) { /* NaN, huge, fractional negatives */
                    kn_set_f64(in[0], 0, NAN);
                    kn_set_f64(in[0], 1, -2.75);
                    kn_set_f64(in[0], 2, dts[a] == KN_F16 ? 60000.0 : 3e9);
                }
                run1(KN_OP_Cast, 18, at, 1, in, 1, 1);
            }
}

static void test_matmul(void) {
    static const shp pairs[][2] = {
        {{2, {3, 4}}, {2, {4, 5}}},
        {{2, {1, 1}}, {2, {1, 1}}},
        {{3, {2, 7, 13}}, {2, {13, 9}}},
        {{3, {4, 5, 6}}, {3, {4, 6, 3}}},
        {{2, {5, 6}}, {3, {3, 6, 2}}},
        {{4, {2, 1, 3, 4}}, {4, {1, 3, 4, 5}}},
        {{1, {6}}, {2, {6, 4}}},
        {{2, {4, 6}}, {1, {6}}},
        {{1, {6}}, {1, {6}}},
        {{2, {0, 4}}, {2, {4, 3}}},
        {{2, {3, 0}}, {2, {0, 5}}},
        {{2, {257, 129}}, {2, {129, 65}}},
        {{3, {2, 128, 768}}, {2, {768, 768}}},
        {{4, {1, 12, 16, 64}}, {4, {1, 12, 64, 16}}},
        /* a 1-D A against batched B; equal batches at different ranks; B's batch broadcast over A's */
        {{1, {6}}, {3, {2, 6, 4}}},
        {{3, {3, 5, 6}}, {4, {1, 3, 6, 2}}},
        {{4, {2, 3, 5, 6}}, {3, {3, 6, 4}}},
        {{3, {2, 5, 7}}, {1, {7}}},
    };
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16};
    for (int p = 0; p < N_ARR(pairs); p++)
        for (int t = 0; t < N_ARR(dts); t++) {
            kn_tensor *in[2] = {rand_tensor(dts[t], pairs[p][0].nd, pairs[p][0].d, R_ANY),
                                rand_tensor(dts[t], pairs[p][1].nd, pairs[p][1].d, R_ANY)};
            run1(KN_OP_MatMul, 18, NULL, 0, in, 2, 1);
        }
    /* Gemm: transposes, alpha/beta, C of every broadcastable shape or none */
    for (int t = 0; t < N_ARR(dts); t++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int c = 0; c < 5; c++) {
                    int64_t M = 7, K = 11, N = 5;
                    int64_t ad[2] = {ta ? K : M, ta ? M : K}, bd[2] = {tb ? N : K, tb ? K : N};
                    static const shp cs[] = {{0, {0}}, {1, {5}}, {2, {7, 1}}, {2, {7, 5}}, {1, {1}}};
                    kn_attr at[4] = {ai("transA", ta), ai("transB", tb), af("alpha", c == 2 ? 0.5f : 1.0f),
                                     af("beta", c == 3 ? 2.0f : 1.0f)};
                    kn_tensor *in[3] = {rand_tensor(dts[t], 2, ad, R_ANY), rand_tensor(dts[t], 2, bd, R_ANY),
                                        c == 4 ? NULL : rand_tensor(dts[t], cs[c].nd, cs[c].d, R_ANY)};
                    run1(KN_OP_Gemm, 13, at, 4, in, c == 4 ? 2 : 3, 1);
                }
}

static void test_rows(void) {
    static const shp shapes[] = {{1, {1}},       {2, {3, 7}},    {3, {2, 5, 33}}, {4, {2, 12, 17, 17}},
                                 {2, {4, 1000}}, {2, {3, 4097}}, {2, {0, 5}},     {2, {8, 768}}};
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16};
    for (int s = 0; s < N_ARR(shapes); s++)
        for (int t = 0; t < N_ARR(dts); t++)
            for (int ax = -1; ax >= -shapes[s].nd && ax >= -2; ax--) {
                kn_attr at[1] = {ai("axis", ax)};
                kn_tensor *in[1] = {rand_tensor(dts[t], shapes[s].nd, shapes[s].d, R_ANY)};
                run1(KN_OP_Softmax, 13, at, 1, in, 1, 1);
                kn_tensor *in2[1] = {rand_tensor(dts[t], shapes[s].nd, shapes[s].d, R_ANY)};
                run1(KN_OP_LogSoftmax, 13, at, 1, in2, 1, 1);
                kn_tensor *in3[1] = {rand_tensor(dts[t], shapes[s].nd, shapes[s].d, R_ANY)};
                run1(KN_OP_Softmax, 11, at, 1, in3, 1, 1); /* coerced 2-D */
                /* LayerNormalization over the trailing dims from axis, with and without bias, with stats */
                int r = shapes[s].nd, a = r + ax;
                int64_t sd[6];
                for (int d = a; d < r; d++) sd[d - a] = shapes[s].d[d];
                for (int bias = 0; bias < 2; bias++) {
                    kn_attr la[2] = {ai("axis", ax), af("epsilon", 1e-5f)};
                    kn_tensor *li[3] = {rand_tensor(dts[t], r, shapes[s].d, R_ANY),
                                        rand_tensor(dts[t], r - a, sd, R_ANY),
                                        bias ? rand_tensor(dts[t], r - a, sd, R_ANY) : NULL};
                    run1(KN_OP_LayerNormalization, 17, la, 2, li, bias ? 3 : 2, bias ? 3 : 1);
                }
            }
}

static void test_reduce(void) {
    static const int ops[] = {KN_OP_ReduceSum, KN_OP_ReduceMean, KN_OP_ReduceMax, KN_OP_ReduceMin};
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16, KN_I32, KN_I64};
    static const shp shapes[] = {{1, {9}},          {2, {3, 7}},    {3, {4, 5, 6}},
                                 {4, {2, 3, 5, 7}}, {2, {2, 5000}}, {3, {2, 0, 3}}};
    static const int64_t axes_sets[][3] = {{-1}, {0}, {0, -1}, {1}};
    static const int n_axes[] = {1, 1, 2, 1};
    for (int o = 0; o < N_ARR(ops); o++)
        for (int t = 0; t < N_ARR(dts); t++)
            for (int s = 0; s < N_ARR(shapes); s++)
                for (int a = 0; a < 5; a++)
                    for (int kd = 0; kd < 2; kd++) {
                        if (a < 4 && axes_sets[a][0] >= shapes[s].nd) continue;
                        kn_attr at[1] = {ai("keepdims", kd)};
                        kn_tensor *in[2] = {rand_tensor(dts[t], shapes[s].nd, shapes[s].d, R_ANY),
                                            a < 4 ? ints_tensor(axes_sets[a], n_axes[a]) : NULL};
                        run1(ops[o], 18, at, 1, in, a < 4 ? 2 : 1, 1);
                    }
    /* opset 13 ReduceMean with the axes attribute */
    int64_t ax[1] = {-1}, d[3] = {2, 3, 768};
    kn_attr at[1] = {aints("axes", ax, 1)};
    kn_tensor *in[1] = {rand_tensor(KN_F32, 3, d, R_ANY)};
    run1(KN_OP_ReduceMean, 13, at, 1, in, 1, 1);
}

/* The kiln backward ops autograd emits (graph/ops.def, kernels/cuda/grad.cu) and the forward ops
 * added for training graphs (Gelu, variadic Max/Min, CastLike). */
static kn_tensor *i32_or_i64(const int64_t *v, int n, bool i32) {
    kn_tensor *t = ints_tensor(v, n);
    if (!i32) return t;
    int64_t d = n;
    kn_tensor *u = NULL;
    kn_tensor_new(KN_I32, 1, &d, &u);
    for (int i = 0; i < n; i++) ((int32_t *)u->data)[i] = (int32_t)v[i];
    kn_tensor_free(t);
    return u;
}

static void test_grad_ops(void) {
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16};
    /* ReduceSumTo: x summed down to every shape it could have been broadcast from */
    static const shp sumto[][2] = {
        {{2, {3, 5}}, {1, {5}}},
        {{3, {2, 3, 4}}, {2, {3, 1}}},
        {{2, {4, 5}}, {2, {1, 1}}},
        {{1, {6}}, {0, {0}}},
        {{3, {2, 0, 3}}, {1, {3}}},
        {{3, {2, 1, 4}}, {3, {2, 1, 4}}},
        {{3, {7, 129, 33}}, {2, {129, 1}}},
        {{2, {64, 4096}}, {1, {4096}}},
        {{4, {2, 3, 5, 7}}, {4, {2, 1, 5, 1}}},
        {{2, {1000, 3}}, {2, {1, 3}}},
    };
    for (int p = 0; p < N_ARR(sumto); p++)
        for (int t = 0; t < N_ARR(dts); t++) {
            kn_tensor *in[2] = {rand_tensor(dts[t], sumto[p][0].nd, sumto[p][0].d, R_ANY),
                                ints_tensor(sumto[p][1].d, sumto[p][1].nd)};
            run1(KN_OP_KnReduceSumTo, 1, NULL, 0, in, 2, 1);
        }
    /* SoftmaxGrad / LogSoftmaxGrad on one axis (strided when not the last) or coerced 2-D */
    static const shp rows[] = {{1, {1}},       {2, {3, 7}},    {3, {2, 5, 33}}, {4, {2, 3, 17, 17}},
                               {2, {4, 1000}}, {2, {3, 4097}}, {2, {0, 5}},     {3, {2, 3, 0}}};
    for (int s = 0; s < N_ARR(rows); s++)
        for (int t = 0; t < N_ARR(dts); t++)
            for (int ax = -1; ax >= -rows[s].nd && ax >= -2; ax--)
                for (int c2 = 0; c2 < 2; c2++) {
                    kn_attr at[2] = {ai("axis", ax), ai("coerce_2d", c2)};
                    kn_tensor *in[2] = {rand_tensor(dts[t], rows[s].nd, rows[s].d, R_ANY),
                                        rand_tensor(dts[t], rows[s].nd, rows[s].d, R_ANY)};
                    run1(KN_OP_KnSoftmaxGrad, 1, at, 2, in, 2, 1);
                    kn_tensor *in2[2] = {rand_tensor(dts[t], rows[s].nd, rows[s].d, R_ANY),
                                         rand_tensor(dts[t], rows[s].nd, rows[s].d, R_ANY)};
                    run1(KN_OP_KnLogSoftmaxGrad, 1, at, 2, in2, 2, 1);
                }
    /* LayerNormalizationGrad from statistics as LayerNormalization saves them (float32, or
     * bfloat16 for bfloat16 x), every output, dx alone, and dscale/dbias omitted in turn */
    for (int s = 0; s < N_ARR(rows); s++)
        for (int t = 0; t < N_ARR(dts); t++)
            for (int ax = -1; ax >= -rows[s].nd && ax >= -2; ax--)
                for (int mode = 0; mode < 3; mode++) {
                    int r = rows[s].nd, a = r + ax;
                    int64_t sd[6], st[6];
                    for (int d = 0; d < r; d++) {
                        if (d >= a) sd[d - a] = rows[s].d[d];
                        st[d] = d < a ? rows[s].d[d] : 1;
                    }
                    kn_dtype sdt = dts[t] == KN_BF16 && mode == 1 ? KN_BF16 : KN_F32;
                    kn_attr la[1] = {ai("axis", ax)};
                    kn_tensor *in[5] = {rand_tensor(dts[t], r, rows[s].d, R_ANY),
                                        rand_tensor(dts[t], r, rows[s].d, R_ANY), rand_tensor(dts[t], r - a, sd, R_ANY),
                                        rand_tensor(sdt, r, st, R_ANY), rand_tensor(sdt, r, st, R_POS)};
                    case_omit = mode == 2 ? 2u : 0u;
                    run1(KN_OP_KnLayerNormalizationGrad, 1, la, 1, in, 5, mode == 1 ? 1 : 3);
                    case_omit = 0;
                }
    {
        int64_t d[2] = {3, 6}, sd[1] = {6}, st[2] = {3, 1};
        kn_attr la[1] = {ai("axis", -1)};
        kn_tensor *in[5] = {rand_tensor(KN_F32, 2, d, R_ANY), rand_tensor(KN_F32, 2, d, R_ANY),
                            rand_tensor(KN_F32, 1, sd, R_ANY), rand_tensor(KN_F32, 2, st, R_ANY),
                            rand_tensor(KN_F32, 2, st, R_POS)};
        case_omit = 4u; /* dbias omitted */
        run1(KN_OP_KnLayerNormalizationGrad, 1, la, 1, in, 5, 3);
        case_omit = 0;
    }
    /* Gelu and GeluGrad, exact and tanh forms */
    for (int f = 0; f < 2; f++)
        for (int t = 0; t < N_ARR(dts); t++)
            for (int s = 0; s < N_ARR(unary_shapes); s++) {
                kn_attr at[1] = {astr("approximate", f ? "tanh" : "none")};
                kn_tensor *in[1] = {rand_tensor(dts[t], unary_shapes[s].nd, unary_shapes[s].d, R_ANY)};
                run1(KN_OP_Gelu, 20, at, 1, in, 1, 1);
                kn_tensor *in2[2] = {rand_tensor(dts[t], unary_shapes[s].nd, unary_shapes[s].d, R_ANY),
                                     rand_tensor(dts[t], unary_shapes[s].nd, unary_shapes[s].d, R_ANY)};
                run1(KN_OP_KnGeluGrad, 1, at, 1, in2, 2, 1);
            }
    /* GatherGrad: repeated and negative indices, int32 and int64, any axis, many repeats of few
     * rows (an embedding's padding token), no indices at all */
    typedef struct {
        shp data;
        int axis, ni;
        int64_t idx[8];
    } gcase;
    static const gcase gc[] = {
        {{2, {11, 8}}, 0, 6, {1, 4, 4, 9, -1, 4}},
        {{3, {3, 7, 4}}, 1, 5, {6, 0, 0, -7, 2}},
        {{3, {3, 7, 4}}, -1, 3, {3, 3, 3}},
        {{1, {5}}, 0, 4, {0, 4, 0, 2}},
        {{2, {11, 8}}, 0, 0, {0}},
        {{2, {2, 3}}, 1, 8, {0, 1, 2, 0, 1, 2, 2, 2}},
    };
    for (int c = 0; c < N_ARR(gc); c++)
        for (int t = 0; t < N_ARR(dts); t++)
            for (int i32 = 0; i32 < 2; i32++) {
                const gcase *g = &gc[c];
                int r = g->data.nd, a = g->axis < 0 ? g->axis + r : g->axis;
                int64_t dd[6];
                int nd = 0;
                for (int d = 0; d < r; d++) {
                    if (d == a) dd[nd++] = g->ni;
                    else dd[nd++] = g->data.d[d];
                }
                kn_attr at[1] = {ai("axis", g->axis)};
                kn_tensor *in[3] = {rand_tensor(dts[t], nd, dd, R_ANY), i32_or_i64(g->idx, g->ni, i32 != 0),
                                    ints_tensor(g->data.d, r)};
                run1(KN_OP_KnGatherGrad, 1, at, 1, in, 3, 1);
            }
    for (int t = 0; t < N_ARR(dts); t++) { /* 640 tokens into a 1000 x 64 table, half of them row 0 */
        int64_t ids[640], dd[2] = {640, 64}, sh[2] = {1000, 64};
        for (int i = 0; i < 640; i++) ids[i] = i % 2 ? 0 : (int64_t)(rnd() % 1000);
        kn_attr at[1] = {ai("axis", 0)};
        kn_tensor *in[3] = {rand_tensor(dts[t], 2, dd, R_ANY), ints_tensor(ids, 640), ints_tensor(sh, 2)};
        run1(KN_OP_KnGatherGrad, 1, at, 1, in, 3, 1);
    }
    /* SliceGrad: the Slice inputs of opset 10 on, negative starts and steps, clamped ends, empty */
    typedef struct {
        shp x;
        int n;
        int64_t st[3], en[3], ax[3], sp[3];
        bool axes, steps;
    } scase;
    static const scase sc[] = {
        {{2, {16, 8}}, 1, {0}, {5}, {0}, {1}, true, false},
        {{3, {4, 6, 5}}, 2, {1, -1}, {3, -6}, {0, 2}, {1, -2}, true, true},
        {{1, {10}}, 1, {2}, {100}, {0}, {1}, false, false},
        {{2, {3, 4}}, 1, {2}, {2}, {1}, {1}, true, false},
        {{3, {2, 9, 7}}, 3, {0, 1, -3}, {2, 9, 7}, {0, 1, 2}, {1, 3, 1}, true, true},
        {{2, {300, 70}}, 1, {7}, {290}, {0}, {1}, true, false},
    };
    for (int c = 0; c < N_ARR(sc); c++)
        for (int t = 0; t < N_ARR(dts); t++) {
            const scase *k = &sc[c];
            /* the slice's shape from Slice's own rule: run the CPU Slice on zeros */
            kn_tensor *x = rand_tensor(dts[t], k->x.nd, k->x.d, R_ANY);
            kn_tensor *sin[5] = {x, ints_tensor(k->st, k->n), ints_tensor(k->en, k->n),
                                 k->axes ? ints_tensor(k->ax, k->n) : NULL, k->steps ? ints_tensor(k->sp, k->n) : NULL};
            kn_node sl = {0};
            sl.name = (char *)"s";
            sl.op_type = (char *)"Slice";
            sl.domain = (char *)"";
            sl.op = KN_OP_Slice;
            sl.opset = 13;
            sl.n_inputs = k->steps ? 5 : k->axes ? 4 : 3;
            kn_status *pst = kn_node_decode_params(&sl);
            kn_tensor ys = {0}, *yo[1] = {&ys};
            kn_scratch scratch = {0};
            kn_exec_ctx cctx = {.backend = kn_cpu_backend(),
                                .scratch_alloc = kn_scratch_alloc_impl,
                                .scratch_state = &scratch,
                                .seed = 1};
            if (!pst) pst = kn_node_eval_host(&cctx, &sl, (const kn_tensor *const *)sin, sl.n_inputs, yo, 1);
            if (pst) {
                printf("FAIL SliceGrad case %d: Slice: %s\n", c, kn_status_message(pst));
                kn_status_free(pst);
                stats[KN_OP_KnSliceGrad].failed++;
            } else {
                kn_tensor *in[6] = {rand_tensor(dts[t], ys.ndim, ys.dims, R_ANY),
                                    ints_tensor(k->x.d, k->x.nd),
                                    sin[1],
                                    sin[2],
                                    sin[3],
                                    sin[4]};
                run1(KN_OP_KnSliceGrad, 1, NULL, 0, in, sl.n_inputs + 1, 1);
                sin[1] = sin[2] = sin[3] = sin[4] = NULL;
            }
            kn_tensor_release(&ys);
            kn_scratch_release(&scratch);
            free(sl.params);
            for (int i = 0; i < 5; i++) kn_tensor_free(sin[i]);
        }
    /* variadic Max / Min: one, two (every broadcast pair) and three inputs, NaN propagation */
    static const kn_dtype mdt[] = {KN_F32, KN_F16, KN_BF16, KN_I32, KN_I64};
    static const int mops[] = {KN_OP_Max, KN_OP_Min};
    for (int o = 0; o < 2; o++)
        for (int t = 0; t < N_ARR(mdt); t++) {
            for (int p = 0; p < N_ARR(bin_pairs); p++) {
                kn_tensor *in[2] = {rand_tensor(mdt[t], bin_pairs[p][0].nd, bin_pairs[p][0].d, R_ANY),
                                    rand_tensor(mdt[t], bin_pairs[p][1].nd, bin_pairs[p][1].d, R_ANY)};
                run1(mops[o], 13, NULL, 0, in, 2, 1);
            }
            int64_t a[2] = {4, 5}, b[1] = {5}, c[2] = {4, 1};
            kn_tensor *in3[3] = {rand_tensor(mdt[t], 1, b, R_ANY), rand_tensor(mdt[t], 2, a, R_ANY),
                                 rand_tensor(mdt[t], 2, c, R_ANY)};
            if (kn_dtype_is_float(mdt[t])) {
                kn_set_f64(in3[1], 3, NAN);
                kn_set_f64(in3[2], 2, NAN);
            }
            run1(mops[o], 13, NULL, 0, in3, 3, 1);
            kn_tensor *in1[1] = {rand_tensor(mdt[t], 2, a, R_ANY)};
            run1(mops[o], 13, NULL, 0, in1, 1, 1);
        }
    /* CastLike: the second input gives the dtype only */
    static const kn_dtype cdt[] = {KN_F32, KN_F16, KN_BF16, KN_I64, KN_I32, KN_BOOL};
    for (int a = 0; a < N_ARR(cdt); a++)
        for (int b = 0; b < N_ARR(cdt); b++) {
            int64_t d[2] = {7, 9}, one = 1;
            kn_tensor *in[2] = {rand_tensor(cdt[a], 2, d, R_ANY), rand_tensor(cdt[b], 1, &one, R_ANY)};
            run1(KN_OP_CastLike, 19, NULL, 0, in, 2, 1);
        }
}

/* GatherGrad with an index outside the table: the run fails naming the node (the CPU refuses it
 * too), int32 and int64 indices. */
static void test_gather_grad_out_of_range(void) {
    op_stats *S = &stats[KN_OP_KnGatherGrad];
    for (int i64 = 0; i64 < 2; i64++) {
        S->cases++;
        int64_t dyd[2] = {3, 4}, idn = 3, shp2[2] = {10, 4};
        kn_tensor *dy = rand_tensor(KN_F32, 2, dyd, R_ANY), *ix = NULL, *sh = ints_tensor(shp2, 2);
        kn_tensor_new(i64 ? KN_I64 : KN_I32, 1, &idn, &ix);
        kn_set_i64(ix, 0, 2);
        kn_set_i64(ix, 1, i64 ? 10 : -11);
        kn_set_i64(ix, 2, 1);
        kn_attr at[1] = {ai("axis", 0)};
        kn_node node = {0};
        node.name = (char *)"gather_grad_oob";
        node.op_type = (char *)"GatherGrad";
        node.domain = (char *)"kiln";
        node.op = KN_OP_KnGatherGrad;
        node.opset = 1;
        node.n_attrs = 1;
        node.attrs = at;
        node.n_inputs = 3;
        kn_status_free(kn_node_decode_params(&node));
        size_t db = kn_nbytes(dy), ib = kn_nbytes(ix), yb = 10 * 4 * sizeof(float);
        void *ddy = cu->alloc(cu, db), *di = cu->alloc(cu, ib), *dout = cu->alloc(cu, yb);
        kn_status *st = cu->copy(cu, ddy, KN_DEVICE_CUDA, dy->data, KN_DEVICE_CPU, db);
        if (!st) st = cu->copy(cu, di, KN_DEVICE_CUDA, ix->data, KN_DEVICE_CPU, ib);
        if (st) {
            fprintf(stderr, "upload: %s\n", kn_status_message(st));
            exit(1);
        }
        kn_tensor tdy = *dy, ti = *ix, ty = {0};
        tdy.data = ddy, tdy.device = KN_DEVICE_CUDA, tdy.owns = false;
        ti.data = di, ti.device = KN_DEVICE_CUDA, ti.owns = false;
        ty.kind = KN_KIND_TENSOR, ty.dtype = KN_F32, ty.ndim = 2, ty.dims[0] = 10, ty.dims[1] = 4;
        ty.data = dout, ty.device = KN_DEVICE_CUDA;
        const kn_tensor *din[3] = {&tdy, &ti, sh};
        kn_tensor *douts[1] = {&ty};
        kn_scratch scratch = {0};
        kn_exec_ctx ctx = {.backend = cu, .scratch_alloc = kn_scratch_alloc_impl, .scratch_state = &scratch};
        const char *fail = NULL;
        st = cu->stream_begin(cu, &ctx.stream);
        if (st) {
            fail = "stream_begin failed";
            kn_status_free(st);
        } else {
            st = cu->kernel(cu, KN_OP_KnGatherGrad)(&ctx, &node, din, 3, douts, 1);
            kn_status *e = cu->stream_end(cu, ctx.stream);
            if (!st && !e) fail = "an out-of-range index gave no error";
            else if (!st && !strstr(kn_status_message(e), "gather_grad_oob")) fail = "the error does not name the node";
            kn_status_free(st);
            kn_status_free(e);
        }
        if (fail) {
            S->failed++;
            printf("FAIL GatherGrad out of range (%s indices): %s\n", i64 ? "int64" : "int32", fail);
        } else S->passed++;
        cu->free(cu, ddy);
        cu->free(cu, di);
        cu->free(cu, dout);
        kn_scratch_release(&scratch);
        kn_tensor_free(dy);
        kn_tensor_free(ix);
        kn_tensor_free(sh);
        free(node.params);
    }
}

static void test_shape_ops(void) {
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_I64, KN_BOOL, KN_I32, KN_U8};
    for (int t = 0; t < N_ARR(dts); t++) {
        /* Gather: axis 0 (embedding lookup) and others, int32/int64 indices, negative ones */
        int64_t dd[3] = {50, 7, 3}, id[2] = {4, 5};
        for (int axis = -1; axis < 3; axis++)
            for (int i64 = 0; i64 < 2; i64++) {
                kn_attr at[1] = {ai("axis", axis)};
                kn_tensor *in[2] = {rand_tensor(dts[t], 3, dd, R_ANY), NULL};
                int dim = (int)dd[axis < 0 ? 2 : axis];
                kn_tensor_new(i64 ? KN_I64 : KN_I32, 2, id, &in[1]);
                for (int64_t i = 0; i < kn_numel(in[1]); i++) kn_set_i64(in[1], i, (int64_t)(rnd() % (2 * dim)) - dim);
                run1(KN_OP_Gather, 13, at, 1, in, 2, 1);
            }
        int64_t e0 = 0;
        kn_attr ga[1] = {ai("axis", 0)};
        kn_tensor *gi[2] = {rand_tensor(dts[t], 3, dd, R_ANY), NULL};
        kn_tensor_new(KN_I64, 1, &e0, &gi[1]);
        run1(KN_OP_Gather, 13, ga, 1, gi, 2, 1);
        kn_tensor *gs[2] = {rand_tensor(dts[t], 3, dd, R_ANY), NULL};
        kn_tensor_new(KN_I64, 0, NULL, &gs[1]);
        kn_set_i64(gs[1], 0, 3);
        run1(KN_OP_Gather, 13, ga, 1, gs, 2, 1);
        /* Transpose */
        int64_t td[4] = {2, 3, 5, 7};
        static const int64_t perms[][4] = {{0, 2, 1, 3}, {3, 2, 1, 0}, {1, 0, 3, 2}, {0, 1, 2, 3}};
        for (int p = 0; p < 4; p++) {
            kn_attr at[1] = {aints("perm", perms[p], 4)};
            kn_tensor *in[1] = {rand_tensor(dts[t], 4, td, R_ANY)};
            run1(KN_OP_Transpose, 13, at, 1, in, 1, 1);
        }
        kn_tensor *tin[1] = {rand_tensor(dts[t], 2, (int64_t[]){129, 67}, R_ANY)};
        run1(KN_OP_Transpose, 13, NULL, 0, tin, 1, 1);
        /* Concat and Split along each axis, with an empty piece */
        for (int axis = 0; axis < 3; axis++) {
            int64_t a[3] = {2, 3, 4}, b[3] = {2, 3, 4}, c[3] = {2, 3, 4};
            b[axis] = 5;
            c[axis] = 0;
            kn_attr at[1] = {ai("axis", axis)};
            kn_tensor *in[3] = {rand_tensor(dts[t], 3, a, R_ANY), rand_tensor(dts[t], 3, b, R_ANY),
                                rand_tensor(dts[t], 3, c, R_ANY)};
            run1(KN_OP_Concat, 13, at, 1, in, 3, 1);
            int64_t sd[3] = {4, 6, 8}, sp[3] = {1, 0, 0};
            sp[1] = sd[axis] - 1 - 2;
            sp[2] = 2;
            kn_tensor *si[2] = {rand_tensor(dts[t], 3, sd, R_ANY), ints_tensor(sp, 3)};
            run1(KN_OP_Split, 18, at, 1, si, 2, 3);
            kn_attr at2[2] = {ai("axis", axis), ai("num_outputs", 2)};
            kn_tensor *si2[1] = {rand_tensor(dts[t], 3, sd, R_ANY)};
            run1(KN_OP_Split, 18, at2, 2, si2, 1, 2);
        }
        /* Slice: steps, negative steps, clamping, axes */
        static const int64_t sl[][4][3] = {
            {{0, 1, 0}, {2, 3, 4}, {0, 1, 2}, {1, 1, 1}},
            {{-1, 0, 0}, {-100, 3, 4}, {0, 1, 2}, {-1, 2, 1}},
            {{1, 0, 0}, {1000, 3, 4}, {2, 0, 1}, {2, 1, 3}},
            {{0, 2, 0}, {2, 2, 4}, {0, 1, 2}, {1, 1, 1}},
        };
        int64_t xd[3] = {3, 4, 5};
        for (int s = 0; s < 4; s++) {
            kn_tensor *in[5] = {rand_tensor(dts[t], 3, xd, R_ANY), ints_tensor(sl[s][0], 3), ints_tensor(sl[s][1], 3),
                                ints_tensor(sl[s][2], 3), ints_tensor(sl[s][3], 3)};
            run1(KN_OP_Slice, 13, NULL, 0, in, 5, 1);
        }
        /* Expand */
        static const shp ex[][2] = {{{2, {3, 1}}, {1, {3}}},
                                    {{1, {1}}, {3, {2, 3, 4}}},
                                    {{3, {1, 4, 1}}, {3, {3, 1, 5}}},
                                    {{0, {0}}, {1, {0}}}};
        for (int e = 0; e < 4; e++) {
            int64_t shape_vals[6];
            int nv = ex[e][1].nd;
            for (int i = 0; i < nv; i++) shape_vals[i] = ex[e][1].d[i];
            if (e == 0) {
                nv = 2;
                shape_vals[0] = 3;
                shape_vals[1] = 4;
            }
            kn_tensor *in[2] = {rand_tensor(dts[t], ex[e][0].nd, ex[e][0].d, R_ANY), ints_tensor(shape_vals, nv)};
            run1(KN_OP_Expand, 13, NULL, 0, in, 2, 1);
        }
        /* byte copies */
        int64_t rd[3] = {2, 3, 4}, rs[2] = {6, -1}, ua[2] = {0, 3}, sa[1] = {0};
        kn_tensor *ri[2] = {rand_tensor(dts[t], 3, rd, R_ANY), ints_tensor(rs, 2)};
        run1(KN_OP_Reshape, 14, NULL, 0, ri, 2, 1);
        kn_tensor *ui[2] = {rand_tensor(dts[t], 3, rd, R_ANY), ints_tensor(ua, 2)};
        run1(KN_OP_Unsqueeze, 13, NULL, 0, ui, 2, 1);
        int64_t qd[3] = {1, 3, 4};
        kn_tensor *qi[2] = {rand_tensor(dts[t], 3, qd, R_ANY), ints_tensor(sa, 1)};
        run1(KN_OP_Squeeze, 13, NULL, 0, qi, 2, 1);
        kn_attr fa[1] = {ai("axis", 2)};
        kn_tensor *fi[1] = {rand_tensor(dts[t], 3, rd, R_ANY)};
        run1(KN_OP_Flatten, 13, fa, 1, fi, 1, 1);
        kn_tensor *ii[1] = {rand_tensor(dts[t], 3, rd, R_ANY)};
        run1(KN_OP_Identity, 16, NULL, 0, ii, 1, 1);
    }
    /* ConstantOfShape: default zero and a given value */
    int64_t shape[3] = {2, 3, 5}, one = 1;
    kn_tensor *v = NULL;
    kn_tensor_new(KN_I64, 1, &one, &v);
    ((int64_t *)v->data)[0] = 7;
    kn_attr ca[1] = {{0}};
    ca[0].name = (char *)"value";
    ca[0].type = KN_ATTR_TENSOR;
    ca[0].t = v;
    kn_tensor *in[1] = {ints_tensor(shape, 3)};
    run1(KN_OP_ConstantOfShape, 20, ca, 1, in, 1, 1);
    kn_tensor *in2[1] = {ints_tensor(shape, 3)};
    run1(KN_OP_ConstantOfShape, 20, NULL, 0, in2, 1, 1);
    kn_tensor_free(v);
}

/* The planner's in-place sharing: output 0 in input 0's buffer, for the ops it allows it on. */
static void test_inplace(void) {
    static const int uops[] = {KN_OP_Relu, KN_OP_Sigmoid, KN_OP_Neg, KN_OP_Exp};
    static const shp shapes[] = {{1, {7}}, {3, {17, 33, 9}}, {1, {1 << 20}}};
    case_inplace = 1;
    for (int o = 0; o < N_ARR(uops); o++)
        for (int sh = 0; sh < N_ARR(shapes); sh++) {
            kn_tensor *in[1] = {rand_tensor(KN_F16, shapes[sh].nd, shapes[sh].d, R_ANY)};
            run1(uops[o], 18, NULL, 0, in, 1, 1);
        }
    static const int bops[] = {KN_OP_Add, KN_OP_Mul, KN_OP_Sub};
    for (int o = 0; o < N_ARR(bops); o++)
        for (int p = 0; p < N_ARR(bin_pairs); p++) {
            kn_tensor *in[2] = {rand_tensor(KN_F32, bin_pairs[p][0].nd, bin_pairs[p][0].d, R_ANY),
                                rand_tensor(KN_F32, bin_pairs[p][1].nd, bin_pairs[p][1].d, R_ANY)};
            run1(bops[o], 18, NULL, 0, in, 2, 1); /* skipped by run_case unless output 0 has input 0's size */
        }
    /* Cast to a type of the same size, and to the same type */
    static const kn_dtype from[] = {KN_F32, KN_I32, KN_F16, KN_I64}, to[] = {KN_I32, KN_F32, KN_BF16, KN_I64};
    for (int c = 0; c < N_ARR(from); c++) {
        kn_attr at[1] = {ai("to", to[c])};
        int64_t d[2] = {33, 65};
        kn_tensor *in[1] = {rand_tensor(from[c], 2, d, R_ANY)};
        run1(KN_OP_Cast, 18, at, 1, in, 1, 1);
    }
    case_inplace = 0;
}

/* Split with outputs the graph omits: the others must still get their own bands. */
static void test_split_omitted(void) {
    int64_t sd[3] = {4, 6, 8};
    for (int axis = 0; axis < 3; axis++)
        for (unsigned omit = 1; omit < 7; omit++) {
            int64_t sp[3] = {1, sd[axis] - 3, 2};
            kn_attr at[1] = {ai("axis", axis)};
            kn_tensor *si[2] = {rand_tensor(KN_F32, 3, sd, R_ANY), ints_tensor(sp, 3)};
            case_omit = omit;
            run1(KN_OP_Split, 18, at, 1, si, 2, 3);
            case_omit = 0;
        }
}

/* int64 above 2^53 to float32/float16: one rounding, as the CPU (2^60 + 2^36 + 1 rounds up in
 * float32 directly, but through double it becomes an exact tie and rounds to even, down). */
static void test_cast_big_ints(void) {
    static const kn_dtype to[] = {KN_F32, KN_F16, KN_BF16, KN_F64};
    for (int t = 0; t < N_ARR(to); t++) {
        int64_t d = 4;
        kn_tensor *x = NULL;
        kn_tensor_new(KN_I64, 1, &d, &x);
        int64_t *v = x->data;
        v[0] = ((int64_t)1 << 60) + ((int64_t)1 << 36) + 1;
        v[1] = -v[0];
        v[2] = ((int64_t)1 << 53) + 1;
        v[3] = INT64_MAX;
        kn_attr at[1] = {ai("to", to[t])};
        kn_tensor *in[1] = {x};
        run1(KN_OP_Cast, 18, at, 1, in, 1, 1);
    }
}

/* com.microsoft EmbedLayerNormalization over the input forms: with and without segments, mask,
 * position_ids ([B,S] and [1,S]), beta, and each optional output; float32, float16, bfloat16. */
static kn_tensor *ids_tensor(int64_t b, int64_t s, int64_t hi) {
    int64_t d[2] = {b, s};
    kn_tensor *t = NULL;
    kn_tensor_new(KN_I32, 2, d, &t);
    for (int64_t i = 0; i < b * s; i++) ((int32_t *)t->data)[i] = (int32_t)(rnd() % (uint64_t)hi);
    return t;
}
static void test_embed_ln(void) {
    static const int64_t shapes[][3] = {{2, 5, 16}, {1, 1, 7}, {3, 9, 96}, {2, 33, 300}, {0, 4, 8}};
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16};
    for (int sh = 0; sh < N_ARR(shapes); sh++)
        for (int t = 0; t < N_ARR(dts); t++)
            for (int form = 0; form < 4; form++) {
                int64_t B = shapes[sh][0], S = shapes[sh][1], H = shapes[sh][2], V = 40, P = S + 3, G = 3;
                bool seg = form != 1, mask = form != 2, beta = form != 3;
                int pos = form == 2 ? 1 : form == 3 ? 2 : 0; /* none, [B,S], [1,S] */
                int64_t wd[2] = {V, H}, pd[2] = {P, H}, gd[2] = {G, H}, hd[1] = {H};
                kn_tensor *in[9] = {ids_tensor(B, S, V),
                                    seg ? ids_tensor(B, S, G) : NULL,
                                    rand_tensor(dts[t], 2, wd, R_ANY),
                                    rand_tensor(dts[t], 2, pd, R_ANY),
                                    seg || form == 3 ? rand_tensor(dts[t], 2, gd, R_ANY) : NULL,
                                    rand_tensor(dts[t], 1, hd, R_ANY),
                                    beta ? rand_tensor(dts[t], 1, hd, R_ANY) : NULL,
                                    mask ? ids_tensor(B, S, 3) : NULL,
                                    pos ? ids_tensor(pos == 2 ? 1 : B, S, P) : NULL};
                int n_in = pos ? 9 : mask ? 8 : 7;
                kn_attr at[1] = {af("epsilon", 1e-5f)};
                /* outputs: all three, and output 0 alone with the others omitted */
                case_omit = form == 1 ? 6u : 0u;
                run_case(KN_OP_MsEmbedLayerNormalization, 1, at, 1, in, n_in, 3);
                case_omit = 0;
                for (int k = 0; k < 9; k++) kn_tensor_free(in[k]);
            }
}

/* An EmbedLayerNormalization id outside its table (word, segment or position) must fail the run
 * naming the node, as the CPU does, not read past the table. */
static kn_tensor dev_copy(const kn_tensor *t) {
    kn_tensor d = *t;
    d.data = cu->alloc(cu, kn_nbytes(t) ? kn_nbytes(t) : 1);
    kn_status *st = cu->copy(cu, d.data, KN_DEVICE_CUDA, t->data, KN_DEVICE_CPU, kn_nbytes(t));
    if (!d.data || st) {
        fprintf(stderr, "upload failed\n");
        exit(1);
    }
    d.device = KN_DEVICE_CUDA;
    d.owns = false;
    return d;
}
static void test_embed_ln_out_of_range(void) {
    op_stats *S = &stats[KN_OP_MsEmbedLayerNormalization];
    for (int which = 0; which < 3; which++) { /* input_ids, segment_ids, position_ids */
        S->cases++;
        int64_t B = 2, L = 3, H = 8, wd[2] = {5, H}, pd[2] = {4, H}, gd[2] = {2, H}, hd[1] = {H};
        kn_tensor *h[9] = {ids_tensor(B, L, 5),
                           ids_tensor(B, L, 2),
                           rand_tensor(KN_F32, 2, wd, R_ANY),
                           rand_tensor(KN_F32, 2, pd, R_ANY),
                           rand_tensor(KN_F32, 2, gd, R_ANY),
                           rand_tensor(KN_F32, 1, hd, R_ANY),
                           rand_tensor(KN_F32, 1, hd, R_ANY),
                           ids_tensor(B, L, 2),
                           ids_tensor(1, L, 4)};
        int32_t bad[3] = {5, -1, 4};
        ((int32_t *)h[which == 0 ? 0 : which == 1 ? 1 : 8]->data)[which == 2 ? 2 : 4] = bad[which];
        kn_tensor d[9], yt = {0};
        const kn_tensor *din[9];
        for (int k = 0; k < 9; k++) {
            d[k] = dev_copy(h[k]);
            din[k] = &d[k];
        }
        yt.kind = KN_KIND_TENSOR;
        yt.dtype = KN_F32;
        yt.ndim = 3;
        yt.dims[0] = B;
        yt.dims[1] = L;
        yt.dims[2] = H;
        yt.data = cu->alloc(cu, (size_t)(B * L * H) * sizeof(float));
        yt.device = KN_DEVICE_CUDA;
        kn_tensor *dout[1] = {&yt};
        kn_node node = {0};
        node.name = (char *)"eln_oob";
        node.op_type = (char *)"EmbedLayerNormalization";
        node.domain = (char *)"com.microsoft";
        node.op = KN_OP_MsEmbedLayerNormalization;
        node.opset = 1;
        node.n_inputs = 9;
        kn_status_free(kn_node_decode_params(&node));
        kn_scratch scratch = {0};
        kn_exec_ctx ctx = {.backend = cu, .scratch_alloc = kn_scratch_alloc_impl, .scratch_state = &scratch};
        char why[512] = "";
        kn_status *st = cu->stream_begin(cu, &ctx.stream);
        if (st) {
            snprintf(why, sizeof why, "stream_begin: %s", kn_status_message(st));
            kn_status_free(st);
        } else {
            st = cu->kernel(cu, KN_OP_MsEmbedLayerNormalization)(&ctx, &node, din, 9, dout, 1);
            kn_status *e = cu->stream_end(cu, ctx.stream);
            if (st) kn_status_free(st); /* failing at the launch is fine too */
            if (!st && !e) snprintf(why, sizeof why, "an id outside its table (case %d) gave no error", which);
            else if (e && !strstr(kn_status_message(e), "eln_oob"))
                snprintf(why, sizeof why, "the error does not name the node: %s", kn_status_message(e));
            if (e) kn_status_free(e);
        }
        if (why[0]) {
            printf("FAIL EmbedLayerNormalization out of range: %s\n", why);
            S->failed++;
        } else {
            S->passed++;
        }
        for (int k = 0; k < 9; k++) {
            cu->free(cu, d[k].data);
            kn_tensor_free(h[k]);
        }
        cu->free(cu, yt.data);
        kn_scratch_release(&scratch);
        free(node.params);
    }
}

/* A Gather index out of range must fail the run (the CPU reports it), naming the node, and the
 * stream must come back clean: the next run on it succeeds. */
static void test_gather_out_of_range(void) {
    op_stats *S = &stats[KN_OP_Gather];
    for (int i64 = 0; i64 < 2; i64++) {
        S->cases++;
        int64_t xd[2] = {10, 4}, idn = 3;
        kn_tensor *x = rand_tensor(KN_F32, 2, xd, R_ANY), *ix = NULL;
        kn_tensor_new(i64 ? KN_I64 : KN_I32, 1, &idn, &ix);
        kn_set_i64(ix, 0, 2);
        kn_set_i64(ix, 1, i64 ? 10 : -11);
        kn_set_i64(ix, 2, 1);
        kn_attr at[1] = {ai("axis", 0)};
        kn_node node = {0};
        node.name = (char *)"gather_oob";
        node.op_type = (char *)"Gather";
        node.domain = (char *)"";
        node.op = KN_OP_Gather;
        node.opset = 13;
        node.n_attrs = 1;
        node.attrs = at;
        node.n_inputs = 2;
        kn_status_free(kn_node_decode_params(&node)); /* Gather's params; freed with the case */
        int64_t yd[2] = {3, 4};
        size_t xb = kn_nbytes(x), ib = kn_nbytes(ix), yb = 3 * 4 * sizeof(float);
        void *dx = cu->alloc(cu, xb), *di = cu->alloc(cu, ib), *dy = cu->alloc(cu, yb);
        kn_status *st = cu->copy(cu, dx, KN_DEVICE_CUDA, x->data, KN_DEVICE_CPU, xb);
        if (!st) st = cu->copy(cu, di, KN_DEVICE_CUDA, ix->data, KN_DEVICE_CPU, ib);
        if (st) {
            fprintf(stderr, "upload: %s\n", kn_status_message(st));
            exit(1);
        }
        kn_tensor tx = *x, ti = *ix, ty = {0};
        tx.data = dx;
        tx.device = KN_DEVICE_CUDA;
        tx.owns = false;
        ti.data = di;
        ti.device = KN_DEVICE_CUDA;
        ti.owns = false;
        ty.kind = KN_KIND_TENSOR;
        ty.dtype = KN_F32;
        ty.ndim = 2;
        ty.dims[0] = yd[0];
        ty.dims[1] = yd[1];
        ty.data = dy;
        ty.device = KN_DEVICE_CUDA;
        const kn_tensor *din[2] = {&tx, &ti};
        kn_tensor *dout[1] = {&ty};
        kn_scratch scratch = {0};
        kn_exec_ctx ctx = {.backend = cu, .scratch_alloc = kn_scratch_alloc_impl, .scratch_state = &scratch};
        const char *fail = NULL;
        char why[512] = "";
        st = cu->stream_begin(cu, &ctx.stream);
        if (st) {
            snprintf(why, sizeof why, "stream_begin: %s", kn_status_message(st));
            fail = why;
            kn_status_free(st);
        }
        if (!fail) {
            st = cu->kernel(cu, KN_OP_Gather)(&ctx, &node, din, 2, dout, 1);
            kn_status *e = cu->stream_end(cu, ctx.stream);
            if (st) kn_status_free(st); /* failing at the launch is fine too */
            if (!st && !e) fail = "an out-of-range index gave no error";
            else if (e && !strstr(kn_status_message(e), "gather_oob")) {
                snprintf(why, sizeof why, "the error does not name the node: %s", kn_status_message(e));
                fail = why;
            }
            if (e) kn_status_free(e);
        }
        if (!fail) { /* in range now, on the recycled stream: no stale error */
            kn_set_i64(ix, 1, -1);
            st = cu->copy(cu, di, KN_DEVICE_CUDA, ix->data, KN_DEVICE_CPU, ib);
            if (!st) st = cu->stream_begin(cu, &ctx.stream);
            if (!st) {
                kn_status *k = cu->kernel(cu, KN_OP_Gather)(&ctx, &node, din, 2, dout, 1);
                st = cu->stream_end(cu, ctx.stream);
                if (k) {
                    if (st) kn_status_free(st);
                    st = k;
                }
            }
            if (st) {
                snprintf(why, sizeof why, "in-range run after the failure: %s", kn_status_message(st));
                fail = why;
                kn_status_free(st);
            } else {
                float got[12], *xs = x->data;
                cudaMemcpy(got, dy, yb, cudaMemcpyDeviceToHost);
                for (int r = 0; r < 3 && !fail; r++)
                    for (int c = 0; c < 4; c++)
                        if (got[r * 4 + c] != xs[(r == 0 ? 2 : r == 1 ? 9 : 1) * 4 + c]) {
                            fail = "wrong rows after the failure";
                            break;
                        }
            }
        }
        if (fail) {
            S->failed++;
            printf("FAIL Gather out of range (%s indices): %s\n", i64 ? "int64" : "int32", fail);
        } else S->passed++;
        cu->free(cu, dx);
        cu->free(cu, di);
        cu->free(cu, dy);
        kn_scratch_release(&scratch);
        kn_tensor_free(x);
        kn_tensor_free(ix);
        free(node.params);
    }
}

/* Weights: a large initializer uploaded through the weight cache and read at once by a kernel on
 * a run's stream (the upload must be complete, not merely staged), and the cache's identity. */
static void test_weights(void) {
    op_stats *S = &stats[KN_OP_Add];
    S->cases++;
    int64_t n = (int64_t)48 << 20; /* 192 MB of float32 */
    float *w = malloc((size_t)n * sizeof(float));
    if (!w) {
        fprintf(stderr, "host alloc failed\n");
        exit(1);
    }
    for (int64_t i = 0; i < n; i++) w[i] = (float)(i % 1000) * 0.5f;
    const void *dw = NULL, *dw2 = NULL;
    const char *fail = NULL;
    kn_status *st = cu->weights(cu, w, (size_t)n * sizeof(float), &dw);
    if (!st) st = cu->weights(cu, w, (size_t)n * sizeof(float), &dw2);
    if (st) {
        printf("FAIL weights: %s\n", kn_status_message(st));
        kn_status_free(st);
        S->failed++;
        free(w);
        return;
    }
    if (dw != dw2) fail = "the same weight was uploaded twice";
    kn_tensor a = {0};
    a.kind = KN_KIND_TENSOR;
    a.dtype = KN_F32;
    a.ndim = 1;
    a.dims[0] = n;
    a.device = KN_DEVICE_CUDA;
    a.data = (void *)dw;
    kn_tensor y = a;
    y.data = cu->alloc(cu, (size_t)n * sizeof(float));
    kn_node node = {0};
    node.name = (char *)"w";
    node.op_type = (char *)"Add";
    node.domain = (char *)"";
    node.op = KN_OP_Add;
    node.opset = 14;
    node.n_inputs = 2;
    const kn_tensor *din[2] = {&a, &a};
    kn_tensor *dout[1] = {&y};
    kn_scratch scratch = {0};
    kn_exec_ctx ctx = {.backend = cu, .scratch_alloc = kn_scratch_alloc_impl, .scratch_state = &scratch};
    st = cu->stream_begin(cu, &ctx.stream);
    if (!st) {
        kn_status *k = cu->kernel(cu, KN_OP_Add)(&ctx, &node, din, 2, dout, 1);
        st = cu->stream_end(cu, ctx.stream);
        if (k) {
            if (st) kn_status_free(st);
            st = k;
        }
    }
    if (st) {
        printf("FAIL weights: Add: %s\n", kn_status_message(st));
        kn_status_free(st);
        fail = "kernel failed";
    } else {
        float *h = malloc((size_t)n * sizeof(float));
        cudaMemcpy(h, y.data, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost);
        for (int64_t i = 0; i < n && !fail; i++)
            if (h[i] != 2 * w[i]) fail = "a kernel read a weight before its upload finished";
        free(h);
    }
    cu->free(cu, y.data);
    if (cu->forget) cu->forget(cu, w);
    if (!fail && cu->weights) { /* forgotten: a new upload, not the stale copy, even at the same address */
        w[0] = 12345.0f;
        st = cu->weights(cu, w, (size_t)n * sizeof(float), &dw);
        float h0 = 0;
        if (!st) cudaMemcpy(&h0, dw, sizeof h0, cudaMemcpyDeviceToHost);
        if (st) kn_status_free(st);
        if (h0 != 12345.0f) fail = "forget() left a stale device copy";
        if (cu->forget) cu->forget(cu, w);
    }
    if (fail) {
        S->failed++;
        printf("FAIL weights: %s\n", fail);
    } else S->passed++;
    kn_scratch_release(&scratch);
    free(w);
}

/* ---- cuconv: the convolution family, pools and BatchNormalization, forward and backward ---- */

/* Conv window configurations: X dims, W dims, group, strides, dilations, pads (begin..., end...),
 * auto_pad (NULL: explicit pads). Odd sizes, groups, depthwise (with a channel multiplier),
 * dilation, stride 2 and 3, asymmetric pads, 1x1, 7x7, 1-D and 3-D, a GEMM of several tiles in
 * rows, columns and K, and an empty batch. */
typedef struct {
    int nd;
    int64_t x[5], w[5];
    int64_t group;
    int64_t s[3], d[3], p[6];
    const char *auto_pad;
} conv_cfg;
static const conv_cfg conv_cfgs[] = {
    {4, {2, 3, 7, 9}, {4, 3, 3, 3}, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, NULL},
    {4, {1, 4, 11, 10}, {6, 4, 3, 2}, 1, {2, 2}, {2, 1}, {0, 1, 1, 2}, NULL},
    {4, {2, 4, 6, 6}, {6, 2, 3, 3}, 2, {1, 1}, {1, 1}, {0, 0, 0, 0}, NULL},
    {4, {2, 5, 8, 7}, {5, 1, 3, 3}, 5, {1, 1}, {1, 1}, {1, 1, 1, 1}, NULL},
    {4, {1, 5, 9, 9}, {10, 1, 3, 3}, 5, {2, 2}, {1, 1}, {1, 0, 1, 0}, NULL},
    {4, {2, 8, 5, 5}, {16, 8, 1, 1}, 1, {1, 1}, {1, 1}, {0, 0, 0, 0}, NULL},
    {4, {1, 3, 17, 17}, {8, 3, 7, 7}, 1, {2, 2}, {1, 1}, {3, 3, 3, 3}, NULL},
    {3, {2, 3, 13}, {5, 3, 4}, 1, {3}, {1}, {2, 1}, NULL},
    {5, {1, 2, 5, 6, 4}, {3, 2, 2, 3, 2}, 1, {1, 2, 1}, {1, 1, 2}, {1, 1, 0, 0, 1, 1}, NULL},
    {4, {1, 3, 9, 8}, {4, 3, 3, 3}, 1, {2, 2}, {1, 1}, {0}, "SAME_UPPER"},
    {4, {1, 3, 8, 7}, {4, 3, 2, 2}, 1, {2, 1}, {1, 1}, {0}, "SAME_LOWER"},
    {4, {1, 20, 9, 9}, {70, 20, 3, 3}, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, NULL},
    {4, {0, 3, 5, 5}, {4, 3, 3, 3}, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, NULL},
};

static int conv_attrs(const conv_cfg *c, kn_attr *at) {
    int nsp = c->nd - 2, n = 0;
    at[n++] = ai("group", c->group);
    at[n++] = aints("strides", c->s, nsp);
    at[n++] = aints("dilations", c->d, nsp);
    if (c->auto_pad) at[n++] = astr("auto_pad", c->auto_pad);
    else at[n++] = aints("pads", c->p, 2 * nsp);
    return n;
}

/* The forward's output dims for explicit pads (the backward cases use those only). */
static void conv_out_dims(const conv_cfg *c, int64_t *y) {
    int nsp = c->nd - 2;
    y[0] = c->x[0];
    y[1] = c->w[0];
    for (int i = 0; i < nsp; i++)
        y[2 + i] = (c->x[2 + i] + c->p[i] + c->p[nsp + i] - ((c->w[2 + i] - 1) * c->d[i] + 1)) / c->s[i] + 1;
}

static void test_cuconv_conv(void) {
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16};
    for (int k = 0; k < N_ARR(conv_cfgs); k++)
        for (int t = 0; t < N_ARR(dts); t++) {
            const conv_cfg *c = &conv_cfgs[k];
            kn_attr at[4];
            int na = conv_attrs(c, at);
            for (int bias = 0; bias < 2; bias++) {
                int64_t M = c->w[0];
                kn_tensor *in[3] = {rand_tensor(dts[t], c->nd, c->x, R_ANY), rand_tensor(dts[t], c->nd, c->w, R_ANY),
                                    bias ? rand_tensor(dts[t], 1, &M, R_ANY) : NULL};
                run1(KN_OP_Conv, 11, at, na, in, bias ? 3 : 2, 1);
            }
            if (c->auto_pad) continue;
            /* the backward ops of the same Conv */
            int64_t yd[5];
            conv_out_dims(c, yd);
            kn_tensor *gx[3] = {rand_tensor(dts[t], c->nd, yd, R_ANY), rand_tensor(dts[t], c->nd, c->w, R_ANY),
                                ints_tensor(c->x, c->nd)};
            run1(KN_OP_KnConvGradX, 1, at, na, gx, 3, 1);
            kn_tensor *gw[3] = {rand_tensor(dts[t], c->nd, yd, R_ANY), rand_tensor(dts[t], c->nd, c->x, R_ANY),
                                ints_tensor(c->w, c->nd)};
            run1(KN_OP_KnConvGradW, 1, at, na, gw, 3, 1);
        }
}

/* ConvTranspose: X dims, W dims [C, M/group, k...], group, strides, dilations, pads,
 * output_padding (or output_shape when os[0] > 0). */
typedef struct {
    int nd;
    int64_t x[5], w[5];
    int64_t group;
    int64_t s[3], d[3], p[6], op[3], os[3];
} convt_cfg;
static const convt_cfg convt_cfgs[] = {
    {4, {2, 4, 5, 5}, {4, 3, 3, 3}, 1, {2, 2}, {1, 1}, {1, 1, 1, 1}, {1, 1}, {0}},
    {4, {1, 4, 4, 6}, {4, 2, 3, 3}, 2, {1, 1}, {1, 1}, {0, 0, 0, 0}, {0, 0}, {0}},
    {3, {2, 3, 7}, {3, 2, 4}, 1, {3}, {1}, {0, 1}, {0}, {0}},
    {4, {1, 2, 5, 5}, {2, 3, 3, 3}, 1, {1, 2}, {2, 1}, {1, 0, 0, 1}, {0, 1}, {0}},
    {4, {1, 4, 5, 5}, {4, 1, 3, 3}, 4, {2, 2}, {1, 1}, {1, 1, 1, 1}, {0, 0}, {0}},
    {4, {1, 3, 4, 4}, {3, 5, 3, 3}, 1, {2, 2}, {1, 1}, {0}, {0}, {10, 9}},
    {5, {1, 2, 3, 4, 3}, {2, 2, 2, 2, 2}, 1, {2, 1, 2}, {1, 1, 1}, {0, 1, 0, 0, 0, 1}, {1, 0, 0}, {0}},
};

static void test_cuconv_convt(void) {
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16};
    for (int k = 0; k < N_ARR(convt_cfgs); k++)
        for (int t = 0; t < N_ARR(dts); t++) {
            const convt_cfg *c = &convt_cfgs[k];
            int nsp = c->nd - 2, na = 0;
            kn_attr at[5];
            at[na++] = ai("group", c->group);
            at[na++] = aints("strides", c->s, nsp);
            at[na++] = aints("dilations", c->d, nsp);
            if (c->os[0] > 0) at[na++] = aints("output_shape", c->os, nsp);
            else {
                at[na++] = aints("pads", c->p, 2 * nsp);
                at[na++] = aints("output_padding", c->op, nsp);
            }
            for (int bias = 0; bias < 2; bias++) {
                int64_t M = c->w[1] * c->group;
                kn_tensor *in[3] = {rand_tensor(dts[t], c->nd, c->x, R_ANY), rand_tensor(dts[t], c->nd, c->w, R_ANY),
                                    bias ? rand_tensor(dts[t], 1, &M, R_ANY) : NULL};
                run1(KN_OP_ConvTranspose, 11, at, na, in, bias ? 3 : 2, 1);
            }
        }
}

/* Pool window configurations: X dims, kernel, strides, dilations, pads, ceil_mode. */
typedef struct {
    int nd;
    int64_t x[5], k[3], s[3], d[3], p[6];
    int ceil;
} pool_cfg;
static const pool_cfg pool_cfgs[] = {
    {4, {2, 3, 9, 11}, {3, 3}, {2, 2}, {1, 1}, {1, 1, 1, 1}, 0},
    {4, {1, 2, 8, 8}, {2, 2}, {2, 2}, {1, 1}, {0, 0, 0, 0}, 0},
    {4, {1, 2, 10, 7}, {3, 2}, {2, 3}, {1, 1}, {0, 1, 2, 0}, 1},
    {4, {2, 2, 9, 9}, {3, 3}, {1, 1}, {2, 2}, {2, 2, 2, 2}, 0},
    {3, {2, 3, 13}, {4}, {3}, {1}, {1, 2}, 1},
    {5, {1, 2, 5, 6, 4}, {2, 3, 2}, {2, 1, 2}, {1, 1, 1}, {0, 1, 1, 1, 1, 0}, 0},
    {4, {1, 3, 33, 31}, {3, 3}, {2, 2}, {1, 1}, {1, 1, 1, 1}, 1},
    {4, {0, 3, 5, 5}, {2, 2}, {1, 1}, {1, 1}, {0, 0, 0, 0}, 0},
};

static void test_cuconv_pool(void) {
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16};
    for (int k = 0; k < N_ARR(pool_cfgs); k++)
        for (int t = 0; t < N_ARR(dts); t++) {
            const pool_cfg *c = &pool_cfgs[k];
            int nsp = c->nd - 2;
            kn_attr at[7];
            int na = 0;
            at[na++] = aints("kernel_shape", c->k, nsp);
            at[na++] = aints("strides", c->s, nsp);
            at[na++] = aints("dilations", c->d, nsp);
            at[na++] = aints("pads", c->p, 2 * nsp);
            at[na++] = ai("ceil_mode", c->ceil);
            /* MaxPool with and without Indices, row- and column-major */
            for (int ind = 0; ind < 3; ind++) {
                at[na] = ai("storage_order", ind == 2);
                kn_tensor *in[1] = {rand_tensor(dts[t], c->nd, c->x, R_ANY)};
                run1(KN_OP_MaxPool, 12, at, na + 1, in, 1, ind ? 2 : 1);
            }
            /* LpPool, p 2 and 3 (dilations and ceil_mode from opset 18) */
            for (int pv = 2; pv <= 3; pv++) {
                at[na] = ai("p", pv);
                kn_tensor *in[1] = {rand_tensor(dts[t], c->nd, c->x, R_ANY)};
                run1(KN_OP_LpPool, 18, at, na + 1, in, 1, 1);
            }
            /* AveragePool: the divisor with and without the padding (no dilations before opset 19) */
            for (int inc = 0; inc < 2; inc++) {
                at[na] = ai("count_include_pad", inc);
                kn_tensor *in[1] = {rand_tensor(dts[t], c->nd, c->x, R_ANY)};
                run1(KN_OP_AveragePool, 19, at, na + 1, in, 1, 1);
                /* its backward, and MaxPool's */
                kn_tensor *x = rand_tensor(dts[t], c->nd, c->x, R_ANY);
                kn_tensor *pin[1] = {x};
                kn_tensor ydt = {0}, *yp = &ydt;
                kn_scratch scr = {0};
                kn_node nd = {0};
                nd.name = (char *)"shape";
                nd.op_type = (char *)"AveragePool";
                nd.domain = (char *)"";
                nd.op = KN_OP_AveragePool;
                nd.opset = 19;
                nd.n_attrs = na + 1;
                nd.attrs = at;
                nd.n_inputs = 1;
                kn_exec_ctx cctx = {.backend = kn_cpu_backend(),
                                    .scratch_alloc = kn_scratch_alloc_impl,
                                    .scratch_state = &scr,
                                    .seed = 1};
                kn_status *st = kn_node_decode_params(&nd);
                if (!st) st = kn_node_eval_host(&cctx, &nd, (const kn_tensor *const *)pin, 1, &yp, 1);
                if (st) { /* the CPU refuses the window: nothing to compare */
                    kn_status_free(st);
                    kn_tensor_free(x);
                } else {
                    kn_tensor *ga[2] = {rand_tensor(dts[t], ydt.ndim, ydt.dims, R_ANY), ints_tensor(c->x, c->nd)};
                    run1(KN_OP_KnAveragePoolGrad, 1, at, na + 1, ga, 2, 1);
                    if (inc == 0) {
                        kn_tensor *gm[2] = {rand_tensor(dts[t], ydt.ndim, ydt.dims, R_ANY), x};
                        run1(KN_OP_KnMaxPoolGrad, 1, at, na, gm, 2, 1);
                    } else {
                        kn_tensor_free(x);
                    }
                }
                kn_tensor_release(&ydt);
                kn_scratch_release(&scr);
                free(nd.params);
            }
        }
    /* Global pools: 4-D, 3-D, 5-D, a plane larger than a block, an empty plane */
    static const shp gshapes[] = {{4, {2, 3, 7, 5}},   {3, {2, 3, 9}},    {5, {1, 2, 3, 4, 5}},
                                  {4, {1, 2, 33, 33}}, {4, {2, 3, 0, 4}}, {4, {0, 3, 2, 2}}};
    for (int k = 0; k < N_ARR(gshapes); k++)
        for (int t = 0; t < N_ARR(dts); t++) {
            kn_tensor *a[1] = {rand_tensor(dts[t], gshapes[k].nd, gshapes[k].d, R_ANY)};
            run1(KN_OP_GlobalAveragePool, 1, NULL, 0, a, 1, 1);
            kn_tensor *m[1] = {rand_tensor(dts[t], gshapes[k].nd, gshapes[k].d, R_ANY)};
            run1(KN_OP_GlobalMaxPool, 1, NULL, 0, m, 1, 1);
            kn_attr lp[1] = {ai("p", 2 + k % 2)};
            kn_tensor *l[1] = {rand_tensor(dts[t], gshapes[k].nd, gshapes[k].d, R_ANY)};
            run1(KN_OP_GlobalLpPool, 2, lp, 1, l, 1, 1);
        }
}

static void test_cuconv_batchnorm(void) {
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16};
    static const shp xs[] = {{4, {2, 3, 5, 4}},    {2, {4, 6}},         {3, {2, 5, 7}},
                             {5, {1, 2, 3, 4, 2}}, {4, {3, 2, 17, 19}}, {4, {0, 3, 2, 2}}};
    for (int k = 0; k < N_ARR(xs); k++)
        for (int t = 0; t < N_ARR(dts); t++)
            for (int mode = 0; mode < 4; mode++) {
                /* 0: inference; 1: training_mode (opset 15) with running statistics; 2: opset 9
                 * training signalled by the outputs (running and batch statistics); 3: float32
                 * parameters for 16-bit X */
                int64_t C = xs[k].d[1];
                kn_dtype pt = mode == 3 ? KN_F32 : dts[t];
                if (mode == 3 && dts[t] == KN_F32) continue;
                if ((mode == 1 || mode == 2) && xs[k].d[0] == 0) continue;
                kn_attr at[3] = {af("epsilon", 1e-3f), af("momentum", 0.8f), ai("training_mode", mode == 1)};
                kn_tensor *in[5] = {rand_tensor(dts[t], xs[k].nd, xs[k].d, R_ANY), rand_tensor(pt, 1, &C, R_ANY),
                                    rand_tensor(pt, 1, &C, R_ANY), rand_tensor(pt, 1, &C, R_ANY),
                                    rand_tensor(pt, 1, &C, R_POS)};
                int opset = mode == 2 ? 9 : 15;
                run1(KN_OP_BatchNormalization, opset, at, mode == 2 ? 2 : 3, in, 5, mode == 1 ? 3 : mode == 2 ? 5 : 1);
            }
    /* BatchNormalizationGrad, inference and training mode, every output and dx alone */
    for (int k = 0; k < N_ARR(xs); k++)
        for (int t = 0; t < N_ARR(dts); t++)
            for (int mode = 0; mode < 4; mode++) {
                int64_t C = xs[k].d[1];
                kn_attr at[2] = {af("epsilon", 1e-5f), ai("training_mode", mode & 1)};
                kn_tensor *in[5] = {rand_tensor(dts[t], xs[k].nd, xs[k].d, R_ANY),
                                    rand_tensor(dts[t], xs[k].nd, xs[k].d, R_ANY), rand_tensor(dts[t], 1, &C, R_ANY),
                                    rand_tensor(dts[t], 1, &C, R_ANY), rand_tensor(dts[t], 1, &C, R_POS)};
                if (mode >= 2) case_omit = mode == 2 ? 4u : 6u;
                run1(KN_OP_KnBatchNormalizationGrad, 1, at, 2, in, 5, 3);
                case_omit = 0;
            }
}

static kn_tensor *f32_tensor(const double *v, int n) {
    int64_t d = n;
    kn_tensor *t = NULL;
    kn_tensor_new(KN_F32, 1, &d, &t);
    for (int i = 0; i < n; i++) ((float *)t->data)[i] = (float)v[i];
    return t;
}

/* Resize: every mode against every coordinate transformation, the nearest rounding modes, cubic
 * with exclude_outside, tf_crop_and_resize with roi and the extrapolation value, by scales and
 * by sizes, up- and down-sampling, 3-D to 5-D inputs. */
static void test_cuconv_resize(void) {
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16};
    static const char *const coords[] = {"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                                         "asymmetric"};
    static const char *const nearest[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
    static const shp xs[] = {{4, {1, 2, 5, 7}}, {3, {2, 3, 11}}, {5, {1, 1, 3, 4, 5}}, {4, {2, 1, 1, 6}}};
    static const double sc4[][4] = {{1, 1, 2, 0.5}, {1, 1, 0.6, 1.7}, {1, 1, 1, 3}};
    for (int k = 0; k < N_ARR(xs); k++)
        for (int t = 0; t < N_ARR(dts); t++)
            for (int m = 0; m < 3; m++)
                for (int c = 0; c < N_ARR(coords); c++)
                    for (int v = 0; v < (m == 0 ? N_ARR(nearest) : 2); v++) {
                        int r = xs[k].nd;
                        kn_attr at[5];
                        int na = 0;
                        at[na++] = astr("mode", m == 0 ? "nearest" : m == 1 ? "linear" : "cubic");
                        at[na++] = astr("coordinate_transformation_mode", coords[c]);
                        if (m == 0) at[na++] = astr("nearest_mode", nearest[v]);
                        if (m == 2) {
                            at[na++] = ai("exclude_outside", v);
                            at[na++] = af("cubic_coeff_a", v ? -0.5f : -0.75f);
                        }
                        kn_tensor *in[4] = {rand_tensor(dts[t], r, xs[k].d, R_ANY), NULL, NULL, NULL};
                        bool by_sizes = (c + v + k) % 2;
                        if (by_sizes) {
                            int64_t sz[5];
                            for (int d = 0; d < r; d++)
                                sz[d] = d < r - 2 ? xs[k].d[d] : xs[k].d[d] * (d + v + 2) / 3 + 1;
                            in[3] = ints_tensor(sz, r);
                        } else {
                            double sc[5];
                            for (int d = 0; d < r; d++) sc[d] = d < r - 2 ? 1 : sc4[(c + d) % 3][2 + (d + r) % 2];
                            in[2] = f32_tensor(sc, r);
                        }
                        run1(KN_OP_Resize, 19, at, na, in, 4, 1);
                    }
    /* tf_crop_and_resize: a roi reaching outside the input, the extrapolation value */
    for (int t = 0; t < N_ARR(dts); t++)
        for (int m = 0; m < 3; m++) {
            static const double roi[8] = {0, 0, -0.2, 0.1, 1, 1, 0.8, 1.3};
            int64_t sz[4] = {1, 2, 6, 5};
            kn_attr at[3] = {astr("mode",
                                  m == 0       ? "nearest"
                                      : m == 1 ? "linear"
                                               : "cubic"),
                             astr("coordinate_transformation_mode", "tf_crop_and_resize"),
                             af("extrapolation_value", 2.5f)};
            kn_tensor *in[4] = {rand_tensor(dts[t], 4, xs[0].d, R_ANY), f32_tensor(roi, 8), NULL, ints_tensor(sz, 4)};
            run1(KN_OP_Resize, 19, at, 3, in, 4, 1);
        }
    /* Upsample (opset 9): the scales input, nearest and linear */
    for (int t = 0; t < N_ARR(dts); t++)
        for (int m = 0; m < 2; m++) {
            static const double sc[4] = {1, 1, 2, 3};
            kn_attr at[1] = {astr("mode", m ? "linear" : "nearest")};
            kn_tensor *in[2] = {rand_tensor(dts[t], 4, xs[0].d, R_ANY), f32_tensor(sc, 4)};
            run1(KN_OP_Upsample, 9, at, 1, in, 2, 1);
        }
}

/* ---- KnSdpa (kernels/cuda/attention.cu): the fused attention against the CPU kernel ----
 * The reference is the CPU's float32 KnSdpa on the device inputs' exact values (float16/bfloat16
 * inputs widened), so the tolerances measure the device kernel alone: float32 is the exact path
 * (fp32 FMA, only the summation order differs); float16/bfloat16 round P to the input type before
 * the P.V product and the output once, with float accumulation. Bias kinds: 0 none, 1 key padding
 * [B,1,1,T] with -inf past each row's length, 2 the same with float32-min (transformers' masks),
 * 3 a random additive [1,Hq,S,T] bias, 4 a random [B,1,S,T] bias with -inf holes and a fully
 * masked row, 5 key padding [B,1,1,T] as float16 (the bias's own dtype). */
typedef struct {
    int B, Hq, Hkv, S, T, Dk, Dv, bias, causal, lse;
    float scale; /* 0: the default 1/sqrt(Dk) */
    /* past: a past key and value of P rows as inputs 4 and 5 (kn_pass_split_past_kv's form; T
     * counts the new rows after them, the bias covers P + T keys) */
    int past, P;
} sdpa_case_t;

static void sdpa_tol(kn_dtype dt, double *rtol, double *atol) {
    *rtol = dt == KN_F32 ? 1e-5 : dt == KN_F16 ? 2e-3 : 1.5e-2;
    *atol = dt == KN_F32 ? 5e-6 : dt == KN_F16 ? 2e-3 : 1.5e-2;
}

static kn_tensor *sdpa_rand(kn_dtype dt, int nd, const int64_t *dims, double amp) {
    kn_tensor *t = NULL;
    if (kn_tensor_new(dt, nd, dims, &t)) exit(1);
    for (int64_t i = 0; i < kn_numel(t); i++) kn_set_f64(t, i, urand(-amp, amp));
    return t;
}
static kn_tensor *sdpa_widen(const kn_tensor *x) { /* float32 copy of x's exact values */
    kn_tensor *t = NULL;
    if (kn_tensor_new(KN_F32, x->ndim, x->dims, &t)) exit(1);
    for (int64_t i = 0; i < kn_numel(t); i++) kn_set_f64(t, i, kn_get_f64(x, i));
    return t;
}
static void *sdpa_upload(const kn_tensor *t) {
    size_t nb = kn_nbytes(t);
    void *d = cu->alloc(cu, nb ? nb : 1);
    kn_status *st = d ? cu->copy(cu, d, KN_DEVICE_CUDA, t->data, KN_DEVICE_CPU, nb) : NULL;
    if (!d || st) {
        fprintf(stderr, "upload failed\n");
        exit(1);
    }
    return d;
}

static double sdpa_worst_y[3], sdpa_worst_lse[3]; /* by dtype: f32, f16, bf16 */
static bool att_expect_error;       /* att_check: the case is bad input, refused by the CPU and the device */
static kn_tensor att_err_shapes[3]; /* ... and the outputs' types and shapes it would have */

/* node on the CPU over rin (float32) against node on the device over hin (dtype dt, the same
 * values); output 0 in dt, further outputs (KnSdpa's logsumexp) float32. Tolerances: sdpa_tol. */
static void att_check(kn_node *node, const kn_tensor *const *rin, const kn_tensor *const *hin, int n_in, int n_out,
                      kn_dtype dt, const char *desc) {
    int op = node->op;
    op_stats *S = &stats[op];
    int di = dt == KN_F32 ? 0 : dt == KN_F16 ? 1 : 2;
    S->cases++;
    kn_tensor ref_t[3] = {{0}}, *ref[3] = {&ref_t[0], &ref_t[1], &ref_t[2]};
    kn_scratch scratch = {0};
    kn_exec_ctx cctx = {
        .backend = kn_cpu_backend(), .scratch_alloc = kn_scratch_alloc_impl, .scratch_state = &scratch, .seed = 1};
    char why[256] = "";
    kn_status *st = kn_node_eval_host(&cctx, node, rin, n_in, ref, n_out);
    if (st && att_expect_error) { /* bad input: the CPU refuses it, and so must the device */
        kn_status_free(st);
        for (int o = 0; o < n_out; o++) {
            kn_tensor_release(&ref_t[o]);
            ref_t[o] = att_err_shapes[o];
        }
    } else if (st) {
        printf("FAIL %s(%s): cpu reference: %s\n", node->op_type, desc, kn_status_message(st));
        kn_status_free(st);
        S->failed++;
        goto done;
    } else if (att_expect_error) {
        printf("FAIL %s(%s): the CPU accepted a case meant to be refused\n", node->op_type, desc);
        S->failed++;
        goto done;
    }
    if (!cu->supports(cu, node, hin, n_in)) {
        printf("FAIL %s(%s): not supported\n", node->op_type, desc);
        S->failed++;
        goto done;
    }
    {
        kn_tensor din_t[12], *din[12];
        uint64_t hm = cu->host_inputs ? cu->host_inputs(cu, node) : 0;
        for (int i = 0; i < n_in; i++) {
            din[i] = NULL;
            if (!hin[i]) continue;
            din_t[i] = *hin[i];
            din[i] = &din_t[i];
            if (hm >> i & 1) continue; /* read on the host */
            din_t[i].data = sdpa_upload(hin[i]);
            din_t[i].device = KN_DEVICE_CUDA;
            din_t[i].owns = false;
            din[i] = &din_t[i];
        }
        kn_tensor dout_t[3], *dout[3];
        char *graw[3] = {0};
        size_t onb[3];
        for (int o = 0; o < n_out; o++) {
            dout_t[o] = ref_t[o];
            if (o == 0 || op != KN_OP_KnSdpa) dout_t[o].dtype = dt;
            dout_t[o].owns = false;
            dout_t[o].device = KN_DEVICE_CUDA;
            onb[o] = kn_nbytes(&dout_t[o]);
            cudaMalloc((void **)&graw[o], onb[o] + 2 * GUARD);
            cudaMemset(graw[o], GUARD_BYTE, onb[o] + 2 * GUARD);
            dout_t[o].data = graw[o] + GUARD;
            dout[o] = &dout_t[o];
        }
        cudaDeviceSynchronize();
        kn_exec_ctx dctx = cctx;
        dctx.backend = cu;
        st = cu->stream_begin(cu, &dctx.stream);
        if (!st) {
            st = cu->kernel(cu, op)(&dctx, node, (const kn_tensor *const *)din, n_in, dout, n_out);
            kn_status *e = cu->stream_end(cu, dctx.stream);
            if (!st) st = e;
            else if (e) kn_status_free(e);
        }
        int bad = 0;
        if (att_expect_error) {
            if (!st) snprintf(why, sizeof why, "bad input gave no error");
            else if (!strstr(kn_status_message(st), node->name))
                snprintf(why, sizeof why, "the error does not name the node: %s", kn_status_message(st));
            bad = !st || !strstr(kn_status_message(st), node->name);
            if (st) kn_status_free(st);
            st = NULL;
            n_out = -n_out; /* nothing to compare; the buffers are still freed below */
        } else if (st) {
            snprintf(why, sizeof why, "%s", kn_status_message(st));
            kn_status_free(st);
            bad = 1;
        }
        for (int o = 0; o < n_out && !bad; o++) {
            unsigned char *h = malloc(onb[o] + 2 * GUARD);
            cudaMemcpy(h, graw[o], onb[o] + 2 * GUARD, cudaMemcpyDeviceToHost);
            for (size_t i = 0; i < GUARD && !bad; i++)
                if (h[i] != GUARD_BYTE || h[GUARD + onb[o] + i] != GUARD_BYTE) {
                    snprintf(why, sizeof why, "output %d: stray write (guard byte %zu)", o, i);
                    bad = 1;
                }
            kn_tensor g = dout_t[o];
            g.data = h + GUARD;
            double rtol, atol;
            sdpa_tol(dt, &rtol, &atol);
            if (o == 1 && op == KN_OP_KnSdpa) /* logsumexp: from float scores either way */
                rtol = 0, atol = dt == KN_F32 ? 1e-4 : 2e-3;
            double *worst = o == 0 ? &sdpa_worst_y[di] : &sdpa_worst_lse[di];
            for (int64_t i = 0; i < kn_numel(&ref_t[o]) && !bad; i++) {
                double a = kn_get_f64(&ref_t[o], i), b = kn_get_f64(&g, i);
                if (isnan(a) || isnan(b) || isinf(a) || isinf(b)) {
                    if (!(a == b || (isnan(a) && isnan(b)))) {
                        snprintf(why, sizeof why, "output %d element %lld: cpu %g, cuda %g", o, (long long)i, a, b);
                        bad = 1;
                    }
                    continue;
                }
                double d = fabs(a - b);
                if (op == KN_OP_KnSdpa && d > *worst) *worst = d;
                if (d > S->worst) S->worst = d;
                if (d > atol + rtol * fabs(a)) {
                    snprintf(why, sizeof why, "output %d element %lld: cpu %.7g, cuda %.7g (|diff| %.3g > %.3g)", o,
                             (long long)i, a, b, d, atol + rtol * fabs(a));
                    bad = 1;
                }
            }
            free(h);
        }
        if (bad) {
            S->failed++;
            printf("FAIL %s(%s): %s\n", node->op_type, desc, why);
        } else {
            S->passed++;
            if (verbose) printf("  ok %s(%s)\n", node->op_type, desc);
        }
        for (int i = 0; i < n_in; i++)
            if (din[i] && !(hm >> i & 1)) cu->free(cu, (void *)din_t[i].data);
        if (n_out < 0) n_out = -n_out;
        for (int o = 0; o < n_out; o++) cudaFree(graw[o]);
    }
done:
    for (int o = 0; o < n_out; o++) kn_tensor_release(&ref_t[o]);
    kn_scratch_release(&scratch);
}

static void sdpa_case(kn_dtype dt, sdpa_case_t c) {
    if (!op_selected(KN_OP_KnSdpa)) return;
    int64_t qd[4] = {c.B, c.Hq, c.S, c.Dk}, kd[4] = {c.B, c.Hkv, c.T, c.Dk}, vd[4] = {c.B, c.Hkv, c.T, c.Dv};
    kn_tensor *q = sdpa_rand(dt, 4, qd, 1.5), *k = sdpa_rand(dt, 4, kd, 1.5), *v = sdpa_rand(dt, 4, vd, 2.0);
    int64_t pkd[4] = {c.B, c.Hkv, c.P, c.Dk}, pvd[4] = {c.B, c.Hkv, c.P, c.Dv};
    kn_tensor *pk = c.past ? sdpa_rand(dt, 4, pkd, 1.5) : NULL, *pv = c.past ? sdpa_rand(dt, 4, pvd, 2.0) : NULL;
    kn_tensor *pkf = pk ? sdpa_widen(pk) : NULL, *pvf = pv ? sdpa_widen(pv) : NULL;
    c.T += c.P; /* the keys the bias and masks see */
    kn_tensor *bias = NULL;
    int64_t bdims[4] = {1, 1, 1, 1};
    if (c.bias == 1 || c.bias == 2 || c.bias == 5) {
        bdims[0] = c.B;
        bdims[3] = c.T;
        if (kn_tensor_new(c.bias == 5 ? KN_F16 : KN_F32, 4, bdims, &bias)) exit(1);
        for (int b = 0; b < c.B; b++) {
            /* lengths: full, then shorter rows, one of a single key */
            int len = b == 0 ? c.T : b == 1 ? (c.T + 1) / 2 : 1;
            for (int t = 0; t < c.T; t++)
                kn_set_f64(bias, (int64_t)b * c.T + t,
                           t < len           ? 0.0
                               : c.bias == 2 ? -3.4028234663852886e38
                                             : -INFINITY);
        }
    } else if (c.bias == 3) {
        bdims[1] = c.Hq;
        bdims[2] = c.S;
        bdims[3] = c.T;
        bias = sdpa_rand(KN_F32, 4, bdims, 2.0);
    } else if (c.bias == 4) {
        bdims[0] = c.B;
        bdims[2] = c.S;
        bdims[3] = c.T;
        bias = sdpa_rand(KN_F32, 4, bdims, 1.0);
        for (int64_t i = 0; i < kn_numel(bias); i++)
            if (rnd() % 4 == 0) kn_set_f64(bias, i, -INFINITY);
        for (int t = 0; t < c.T; t++) kn_set_f64(bias, t, -INFINITY); /* row 0 of batch 0: fully masked */
    }
    kn_tensor *qf = sdpa_widen(q), *kf = sdpa_widen(k), *vf = sdpa_widen(v), *bf = bias ? sdpa_widen(bias) : NULL;
    kn_attr at[2];
    int na = 0;
    if (c.causal) at[na++] = ai("is_causal", 1);
    if (c.scale != 0.0f) at[na++] = af("scale", c.scale);
    kn_node node = {0};
    node.name = (char *)"sdpa";
    node.op_type = (char *)"KnSdpa";
    node.domain = (char *)"kiln";
    node.op = KN_OP_KnSdpa;
    node.opset = 1;
    node.n_attrs = na;
    node.attrs = at;
    int n_in = c.past ? 6 : bias ? 4 : 3, n_out = c.lse ? 2 : 1;
    node.n_inputs = n_in;
    node.n_outputs = n_out;
    if (kn_node_decode_params(&node)) exit(1);
    char desc[256];
    snprintf(desc, sizeof desc, "%s B%d Hq%d Hkv%d S%d T%d Dk%d Dv%d bias%d%s%s%s%d",
             dt == KN_F32       ? "float32"
                 : dt == KN_F16 ? "float16"
                                : "bfloat16",
             c.B, c.Hq, c.Hkv, c.S, c.T, c.Dk, c.Dv, c.bias, c.causal ? " causal" : "", c.lse ? " lse" : "",
             c.past ? " past P" : "", c.past ? c.P : 0);
    const kn_tensor *rin[6] = {qf, kf, vf, bf, pkf, pvf}, *hin[6] = {q, k, v, bias, pk, pv};
    att_check(&node, rin, hin, n_in, n_out, dt, desc);
    free(node.params);
    kn_tensor_free(q);
    kn_tensor_free(k);
    kn_tensor_free(v);
    kn_tensor_free(qf);
    kn_tensor_free(kf);
    kn_tensor_free(vf);
    if (bias) kn_tensor_free(bias);
    if (bf) kn_tensor_free(bf);
    if (pk) kn_tensor_free(pk);
    if (pv) kn_tensor_free(pv);
    if (pkf) kn_tensor_free(pkf);
    if (pvf) kn_tensor_free(pvf);
}

/* Head sizes 32/64/80/128 (and 16, 20, 256 padded), sequences off the tile sizes (1, 7, 64, 129),
 * per-row key lengths, causal, biases, GQA, the logsumexp output, in all three dtypes. */
static void test_sdpa(void) {
    static const sdpa_case_t cases[] = {
        /* B Hq Hkv  S    T   Dk   Dv bias causal lse scale */
        {1, 2, 2, 1, 1, 32, 32, 0, 0, 0, 0},     {2, 2, 2, 7, 7, 64, 64, 1, 0, 1, 0},
        {1, 4, 1, 64, 64, 80, 80, 0, 1, 1, 0},   {3, 2, 1, 129, 129, 128, 128, 2, 1, 0, 0},
        {3, 2, 2, 129, 129, 32, 32, 1, 0, 1, 0}, {1, 2, 2, 7, 129, 32, 32, 3, 0, 0, 0.3f},
        {2, 1, 1, 65, 64, 64, 64, 4, 0, 1, 0},   {2, 2, 1, 9, 9, 32, 64, 4, 1, 1, 0},
        {3, 2, 2, 33, 70, 20, 20, 5, 0, 0, 0},   {1, 1, 1, 7, 7, 16, 16, 0, 1, 0, 0},
        {1, 1, 1, 7, 40, 256, 256, 1, 0, 1, 0},
    };
    kn_dtype dts[3] = {KN_F32, KN_F16, KN_BF16};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int d = 0; d < 3; d++) sdpa_case(dts[d], cases[i]);
    if (op_selected(KN_OP_KnSdpa))
        printf("KnSdpa max |diff| output / logsumexp: float32 %.3g / %.3g, float16 %.3g / %.3g, bfloat16 %.3g / %.3g\n",
               sdpa_worst_y[0], sdpa_worst_lse[0], sdpa_worst_y[1], sdpa_worst_lse[1], sdpa_worst_y[2],
               sdpa_worst_lse[2]);
}

/* com.microsoft MultiHeadAttention and Attention on the same kernel, against the CPU's float32
 * kernels (kernels/cpu/contrib.c) on the same values. mask kinds: 0 none, 1 mask_index [B] (key
 * ends; one batch row of length 0: all keys filtered), 2 [2B] ends then starts, 3 a 2-D [B,T]
 * 0/1 mask (int64), 4 the same with mask_filter_value -1e9. Also the QKV bias, attention_bias
 * [1,N,S,T], unidirectional, qkv_hidden_sizes with a different value head size, and for
 * MultiHeadAttention a key/value sequence of its own length and key/value in [B,N,L,H]. */
typedef struct {
    int attn; /* 1: Attention (fused projection), 0: MultiHeadAttention */
    int B, N, S, L, H, Hv, mask, qkv_bias, ab, causal, bnsh;
} ms_case_t;

static void ms_case(kn_dtype dt, ms_case_t c) {
    int op = c.attn ? KN_OP_MsAttention : KN_OP_MsMultiHeadAttention;
    if (!op_selected(op)) return;
    if (c.attn) c.L = c.S;
    int64_t D = (int64_t)c.N * c.H, Dv = (int64_t)c.N * c.Hv, Din = 24;
    kn_tensor *hin[8] = {0};
    int n_in;
    if (c.attn) {
        int64_t xd[3] = {c.B, c.S, Din}, wd[2] = {Din, 2 * D + Dv}, bd[1] = {2 * D + Dv};
        hin[0] = sdpa_rand(dt, 3, xd, 1.0);
        hin[1] = sdpa_rand(dt, 2, wd, 0.4);
        if (c.qkv_bias) hin[2] = sdpa_rand(dt, 1, bd, 0.5);
        n_in = 3;
    } else {
        int64_t qd[3] = {c.B, c.S, D}, kd[3] = {c.B, c.L, D}, vd[3] = {c.B, c.L, Dv}, bd[1] = {2 * D + Dv};
        int64_t kd4[4] = {c.B, c.N, c.L, c.H}, vd4[4] = {c.B, c.N, c.L, c.Hv};
        hin[0] = sdpa_rand(dt, 3, qd, 1.5);
        hin[1] = c.bnsh ? sdpa_rand(dt, 4, kd4, 1.5) : sdpa_rand(dt, 3, kd, 1.5);
        hin[2] = c.bnsh ? sdpa_rand(dt, 4, vd4, 2.0) : sdpa_rand(dt, 3, vd, 2.0);
        if (c.qkv_bias) hin[3] = sdpa_rand(dt, 1, bd, 0.5);
        n_in = 4;
    }
    int mi = c.attn ? 3 : 4, abi = 5;
    if (c.mask) {
        int64_t md1 = c.mask == 2 ? 2 * c.B : c.B, md2[2] = {c.B, c.L};
        kn_tensor *m = NULL;
        if (kn_tensor_new(c.mask >= 3 ? KN_I64 : KN_I32, c.mask >= 3 ? 2 : 1, c.mask >= 3 ? md2 : &md1, &m)) exit(1);
        for (int b = 0; b < c.B; b++) {
            int len = b == 0 ? c.L : b == 1 ? (c.L + 1) / 2 : 0, start = c.mask == 2 && b == 0 ? c.L / 3 : 0;
            if (c.mask >= 3)
                for (int t = 0; t < c.L; t++) kn_set_f64(m, (int64_t)b * c.L + t, t < len);
            else {
                kn_set_f64(m, b, len);
                if (c.mask == 2) kn_set_f64(m, c.B + b, start);
            }
        }
        hin[mi] = m;
    }
    if (c.ab) {
        int64_t ad[4] = {1, c.N, c.S, c.L};
        hin[abi] = sdpa_rand(KN_F32, 4, ad, 1.0);
    }
    for (int i = 0; i < 8; i++)
        if (hin[i]) n_in = i + 1;
    kn_tensor *rin[8] = {0};
    for (int i = 0; i < n_in; i++)
        if (hin[i]) rin[i] = kn_dtype_is_float(hin[i]->dtype) ? sdpa_widen(hin[i]) : hin[i];
    kn_attr at[3];
    int na = 0;
    at[na++] = ai("num_heads", c.N);
    if (c.causal) at[na++] = ai("unidirectional", 1);
    if (c.mask == 4) at[na++] = af("mask_filter_value", -1e9f);
    if (c.attn && c.Hv != c.H) {
        static int64_t sizes[3];
        sizes[0] = sizes[1] = D;
        sizes[2] = Dv;
        at[na++] = aints("qkv_hidden_sizes", sizes, 3);
    }
    kn_node node = {0};
    node.name = (char *)"ms";
    node.op_type = (char *)kn_op_table[op].name;
    node.domain = (char *)"com.microsoft";
    node.op = op;
    node.opset = 1;
    node.n_attrs = na;
    node.attrs = at;
    node.n_inputs = n_in;
    node.n_outputs = 1;
    if (kn_node_decode_params(&node)) exit(1);
    char desc[256];
    snprintf(desc, sizeof desc, "%s B%d N%d S%d L%d H%d Hv%d mask%d%s%s%s%s",
             dt == KN_F32       ? "float32"
                 : dt == KN_F16 ? "float16"
                                : "bfloat16",
             c.B, c.N, c.S, c.L, c.H, c.Hv, c.mask, c.qkv_bias ? " qkv_bias" : "", c.ab ? " attention_bias" : "",
             c.causal ? " unidirectional" : "", c.bnsh ? " bnsh" : "");
    att_check(&node, (const kn_tensor *const *)rin, (const kn_tensor *const *)hin, n_in, 1, dt, desc);
    free(node.params);
    for (int i = 0; i < n_in; i++) {
        if (rin[i] && rin[i] != hin[i]) kn_tensor_free(rin[i]);
        if (hin[i]) kn_tensor_free(hin[i]);
    }
}

static void test_ms_attention(void) {
    static const ms_case_t cases[] = {
        /* attn B N  S   L   H  Hv mask qkvb ab causal bnsh */
        {0, 2, 2, 7, 7, 32, 32, 0, 1, 0, 0, 0},   {0, 3, 2, 9, 70, 64, 64, 1, 1, 1, 0, 0},
        {0, 2, 2, 33, 33, 16, 24, 3, 0, 0, 1, 0}, {0, 2, 2, 5, 40, 32, 32, 4, 0, 0, 0, 1},
        {1, 3, 2, 9, 9, 32, 32, 1, 1, 0, 0, 0},   {1, 2, 2, 70, 70, 16, 16, 2, 1, 1, 1, 0},
        {1, 2, 4, 17, 17, 8, 16, 3, 0, 0, 0, 0},
    };
    kn_dtype dts[3] = {KN_F32, KN_F16, KN_BF16};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int d = 0; d < 3; d++) ms_case(dts[d], cases[i]);
}

/* com.microsoft GroupQueryAttention against the CPU kernel (kernels/cpu/genops.c) on the same
 * values: output and both present caches. Prompts (right-padded entries through seqlens_k),
 * decode steps and chunks after a past, packed QKV, rotary (half-split or interleaved, positions
 * implied or given), kv heads shared by 2 or 4 query heads. */
typedef struct {
    int B, S, N, KV, H, P, total, packed, rotary, inter, posids;
    int sl[2]; /* seqlens_k */
} gqa_case_t;

static void gqa_case(kn_dtype dt, gqa_case_t c) {
    int op = KN_OP_MsGroupQueryAttention;
    if (!op_selected(op)) return;
    int64_t D = c.packed ? (int64_t)(c.N + 2 * c.KV) * c.H : (int64_t)c.N * c.H;
    kn_tensor *hin[10] = {0};
    int64_t qd[3] = {c.B, c.S, D}, kd[3] = {c.B, c.S, (int64_t)c.KV * c.H}, pd[4] = {c.B, c.KV, c.P, c.H};
    hin[0] = sdpa_rand(dt, 3, qd, 1.5);
    if (!c.packed) {
        hin[1] = sdpa_rand(dt, 3, kd, 1.5);
        hin[2] = sdpa_rand(dt, 3, kd, 2.0);
    }
    if (c.P > 0) {
        hin[3] = sdpa_rand(dt, 4, pd, 1.5);
        hin[4] = sdpa_rand(dt, 4, pd, 2.0);
    }
    int64_t bd = c.B, one = 1;
    if (kn_tensor_new(KN_I32, 1, &bd, &hin[5]) || kn_tensor_new(KN_I32, 1, &one, &hin[6])) exit(1);
    for (int b = 0; b < c.B; b++) kn_set_f64(hin[5], b, c.sl[b]);
    kn_set_f64(hin[6], 0, c.total);
    int n_in = 7;
    if (c.rotary) {
        int64_t cd[2] = {96, c.H / 4}; /* rotary over half the head */
        hin[7] = sdpa_rand(dt, 2, cd, 1.0);
        hin[8] = sdpa_rand(dt, 2, cd, 1.0);
        n_in = 9;
        if (c.posids) {
            int64_t pdd[2] = {c.B, c.S};
            if (kn_tensor_new(KN_I64, 2, pdd, &hin[9])) exit(1);
            for (int64_t i = 0; i < c.B * c.S; i++) kn_set_f64(hin[9], i, (double)(3 + i % 20));
            n_in = 10;
        }
    }
    kn_tensor *rin[10] = {0};
    for (int i = 0; i < n_in; i++)
        if (hin[i]) rin[i] = kn_dtype_is_float(hin[i]->dtype) ? sdpa_widen(hin[i]) : hin[i];
    kn_attr at[4];
    int na = 0;
    at[na++] = ai("num_heads", c.N);
    at[na++] = ai("kv_num_heads", c.KV);
    if (c.rotary) at[na++] = ai("do_rotary", 1);
    if (c.inter) at[na++] = ai("rotary_interleaved", 1);
    kn_node node = {0};
    node.name = (char *)"gqa";
    node.op_type = (char *)"GroupQueryAttention";
    node.domain = (char *)"com.microsoft";
    node.op = op;
    node.opset = 1;
    node.n_attrs = na;
    node.attrs = at;
    node.n_inputs = n_in;
    node.n_outputs = 3;
    if (kn_node_decode_params(&node)) exit(1);
    char desc[256];
    snprintf(desc, sizeof desc, "%s B%d S%d N%d KV%d H%d past%d total%d seqlens %d,%d%s%s%s%s",
             dt == KN_F32       ? "float32"
                 : dt == KN_F16 ? "float16"
                                : "bfloat16",
             c.B, c.S, c.N, c.KV, c.H, c.P, c.total, c.sl[0], c.B > 1 ? c.sl[1] : -1, c.packed ? " packed" : "",
             c.rotary ? " rotary" : "", c.inter ? " interleaved" : "", c.posids ? " position_ids" : "");
    int64_t T = c.total > c.P ? c.total : c.P, yd[3] = {c.B, c.S, (int64_t)c.N * c.H}, cd4[4] = {c.B, c.KV, T, c.H};
    memset(att_err_shapes, 0, sizeof att_err_shapes);
    for (int o = 0; o < 3; o++) {
        att_err_shapes[o].kind = KN_KIND_TENSOR;
        att_err_shapes[o].dtype = KN_F32;
        kn_tensor_set_shape(&att_err_shapes[o], o ? 4 : 3, o ? cd4 : yd);
    }
    att_check(&node, (const kn_tensor *const *)rin, (const kn_tensor *const *)hin, n_in, 3, dt, desc);
    free(node.params);
    for (int i = 0; i < n_in; i++) {
        if (rin[i] && rin[i] != hin[i]) kn_tensor_free(rin[i]);
        if (hin[i]) kn_tensor_free(hin[i]);
    }
}

static void test_gqa(void) {
    static const gqa_case_t cases[] = {
        /* B S  N KV  H   P total packed rotary inter posids seqlens */
        {2, 7, 4, 2, 32, 0, 7, 0, 1, 0, 0, {6, 4}},    /* prompt, entry 1 right-padded */
        {2, 1, 4, 1, 64, 9, 9, 0, 1, 0, 0, {8, 5}},    /* decode into a cache of 9 */
        {2, 5, 2, 2, 16, 0, 5, 1, 0, 0, 0, {4, 4}},    /* packed QKV prompt, no rotary */
        {2, 3, 4, 2, 32, 6, 9, 0, 1, 1, 1, {8, 7}},    /* a chunk after a past, interleaved, position_ids */
        {1, 66, 2, 1, 80, 0, 66, 0, 1, 0, 0, {65, 0}}, /* a prompt over two query tiles */
    };
    kn_dtype dts[3] = {KN_F32, KN_F16, KN_BF16};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int d = 0; d < 3; d++) gqa_case(dts[d], cases[i]);
    /* seqlens_k beyond the cache, a position past cos_cache: the run fails naming the node, and
     * the stream comes back clean for the next case */
    static const gqa_case_t bad[] = {
        {2, 1, 4, 1, 64, 9, 9, 0, 1, 0, 0, {8, 11}},
        {1, 3, 4, 2, 32, 6, 9, 0, 1, 1, 1, {200, 0}},
    };
    att_expect_error = true;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) gqa_case(KN_F32, bad[i]);
    att_expect_error = false;
    gqa_case(KN_F16, cases[1]);
}

/* com.microsoft RotaryEmbedding against the CPU kernel: [B,N,S,H] and [B,S,N*H] inputs (heads from
 * num_heads or from the cache), full and partial rotary dims, half-split and interleaved, a
 * position offset [1] or position_ids [B,S], and a position past the cache (refused). */
typedef struct {
    int rank4, B, S, N, H, rd, inter, nh_attr, pos_kind, maxpos; /* pos_kind 0: [1] offset, 1: [B,S] */
    int bad;
} rope_case_t;

static void rope_case(kn_dtype dt, rope_case_t c) {
    int op = KN_OP_MsRotaryEmbedding;
    if (!op_selected(op)) return;
    int rd = c.rd ? c.rd : c.H;
    int64_t xd4[4] = {c.B, c.N, c.S, c.H}, xd3[3] = {c.B, c.S, (int64_t)c.N * c.H}, cd[2] = {c.maxpos, rd / 2};
    kn_tensor *hin[4] = {0};
    hin[0] = c.rank4 ? sdpa_rand(dt, 4, xd4, 2.0) : sdpa_rand(dt, 3, xd3, 2.0);
    int64_t one = 1, pd[2] = {c.B, c.S};
    if (kn_tensor_new(KN_I64, c.pos_kind ? 2 : 1, c.pos_kind ? pd : &one, &hin[1])) exit(1);
    for (int64_t i = 0; i < kn_numel(hin[1]); i++)
        kn_set_f64(hin[1], i, c.pos_kind ? (double)((i * 7) % (c.maxpos - 1)) : 3.0);
    if (c.bad) kn_set_f64(hin[1], 0, c.maxpos + 2);
    hin[2] = sdpa_rand(dt, 2, cd, 1.0);
    hin[3] = sdpa_rand(dt, 2, cd, 1.0);
    kn_tensor *rin[4];
    for (int i = 0; i < 4; i++) rin[i] = kn_dtype_is_float(hin[i]->dtype) ? sdpa_widen(hin[i]) : hin[i];
    kn_attr at[3];
    int na = 0;
    if (c.nh_attr) at[na++] = ai("num_heads", c.N);
    if (c.rd) at[na++] = ai("rotary_embedding_dim", c.rd);
    if (c.inter) at[na++] = ai("interleaved", 1);
    kn_node node = {0};
    node.name = (char *)"rope";
    node.op_type = (char *)"RotaryEmbedding";
    node.domain = (char *)"com.microsoft";
    node.op = op;
    node.opset = 1;
    node.n_attrs = na;
    node.attrs = at;
    node.n_inputs = 4;
    node.n_outputs = 1;
    if (kn_node_decode_params(&node)) exit(1);
    char desc[256];
    snprintf(desc, sizeof desc, "%s %s B%d S%d N%d H%d rd%d%s%s pos%d%s",
             dt == KN_F32       ? "float32"
                 : dt == KN_F16 ? "float16"
                                : "bfloat16",
             c.rank4 ? "BNSH" : "BSD", c.B, c.S, c.N, c.H, rd, c.inter ? " interleaved" : "",
             c.nh_attr ? " num_heads" : "", c.pos_kind, c.bad ? " position past the cache" : "");
    memset(att_err_shapes, 0, sizeof att_err_shapes);
    att_err_shapes[0] = *hin[0];
    att_err_shapes[0].data = NULL;
    att_err_shapes[0].owns = false;
    att_err_shapes[0].dtype = KN_F32;
    att_expect_error = c.bad;
    att_check(&node, (const kn_tensor *const *)rin, (const kn_tensor *const *)hin, 4, 1, dt, desc);
    att_expect_error = false;
    free(node.params);
    for (int i = 0; i < 4; i++) {
        if (rin[i] != hin[i]) kn_tensor_free(rin[i]);
        kn_tensor_free(hin[i]);
    }
}

static void test_rope(void) {
    static const rope_case_t cases[] = {
        /* rank4 B S N  H  rd inter nh pos maxpos bad */
        {1, 2, 5, 3, 32, 0, 0, 0, 1, 40, 0},
        {0, 2, 5, 4, 16, 8, 1, 1, 0, 40, 0},
        {0, 1, 7, 2, 64, 0, 0, 0, 1, 40, 0},
        {0, 2, 3, 2, 20, 12, 0, 1, 1, 40, 0},
    };
    kn_dtype dts[3] = {KN_F32, KN_F16, KN_BF16};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int d = 0; d < 3; d++) rope_case(dts[d], cases[i]);
    rope_case_t bad = cases[0];
    bad.bad = 1;
    rope_case(KN_F32, bad);
}

/* ---- cuops: activations with attributes, trigonometry, Round, Mod, PRelu, Sum/Mean, Clip ---- */
static void test_cuops_misc(void) {
    static const kn_dtype fdt[] = {KN_F32, KN_F16, KN_BF16};
    static const int plain[] = {KN_OP_Atan,  KN_OP_Asinh,     KN_OP_Cosh,     KN_OP_Sinh,     KN_OP_Tan,
                                KN_OP_Round, KN_OP_HardSwish, KN_OP_Softplus, KN_OP_Softsign, KN_OP_Mish};
    static const int unit[] = {KN_OP_Acos, KN_OP_Asin, KN_OP_Atanh}; /* defined on (-1, 1) */
    for (int t = 0; t < N_ARR(fdt); t++)
        for (int s = 0; s < N_ARR(unary_shapes); s++) {
            const shp *sh = &unary_shapes[s];
            for (int o = 0; o < N_ARR(plain); o++) {
                kn_tensor *in[1] = {rand_tensor(fdt[t], sh->nd, sh->d, plain[o] == KN_OP_Round ? R_ANY : R_ANY)};
                if (plain[o] == KN_OP_Round) /* exact halves: ties go to even */
                    for (int64_t i = 0; i < kn_numel(in[0]); i += 3) kn_set_f64(in[0], i, (double)(i % 9) - 4.5);
                run1(plain[o], 18, NULL, 0, in, 1, 1);
            }
            for (int o = 0; o < N_ARR(unit); o++) {
                kn_tensor *in[1] = {rand_tensor(fdt[t], sh->nd, sh->d, R_ANY)};
                for (int64_t i = 0; i < kn_numel(in[0]); i++) kn_set_f64(in[0], i, kn_get_f64(in[0], i) / 3.1);
                run1(unit[o], 18, NULL, 0, in, 1, 1);
            }
            kn_tensor *ac[1] = {rand_tensor(fdt[t], sh->nd, sh->d, R_POS)};
            for (int64_t i = 0; i < kn_numel(ac[0]); i++) kn_set_f64(ac[0], i, 1.0 + kn_get_f64(ac[0], i));
            run1(KN_OP_Acosh, 18, NULL, 0, ac, 1, 1);
            /* attributes other than the defaults */
            kn_attr a1[1] = {af("alpha", 0.3f)};
            kn_attr a2[2] = {af("alpha", 1.7f), af("gamma", 1.2f)};
            kn_attr a3[2] = {af("alpha", 0.4f), af("beta", 0.3f)};
            kn_attr sh2[2] = {af("lambd", 0.7f), af("bias", 0.2f)};
            int ops1[] = {KN_OP_LeakyRelu, KN_OP_Elu, KN_OP_Celu, KN_OP_ThresholdedRelu, KN_OP_Swish};
            for (int o = 0; o < N_ARR(ops1); o++) {
                kn_tensor *in[1] = {rand_tensor(fdt[t], sh->nd, sh->d, R_ANY)};
                run1(ops1[o], ops1[o] == KN_OP_Swish ? 24 : 18, a1, 1, in, 1, 1);
                kn_tensor *in2[1] = {rand_tensor(fdt[t], sh->nd, sh->d, R_ANY)};
                run1(ops1[o], ops1[o] == KN_OP_Swish ? 24 : 18, NULL, 0, in2, 1, 1); /* defaults */
            }
            kn_tensor *se[1] = {rand_tensor(fdt[t], sh->nd, sh->d, R_ANY)};
            run1(KN_OP_Selu, 18, a2, 2, se, 1, 1);
            kn_tensor *hs[1] = {rand_tensor(fdt[t], sh->nd, sh->d, R_ANY)};
            run1(KN_OP_HardSigmoid, 18, a3, 2, hs, 1, 1);
            kn_tensor *sk[1] = {rand_tensor(fdt[t], sh->nd, sh->d, R_ANY)};
            run1(KN_OP_Shrink, 18, sh2, 2, sk, 1, 1);
        }
    /* binary with broadcasting: Mod (both fmod modes; integer and float), PRelu */
    static const kn_dtype ndt[] = {KN_F32, KN_F16, KN_BF16, KN_I32, KN_I64};
    for (int p = 0; p < N_ARR(bin_pairs); p++)
        for (int t = 0; t < N_ARR(ndt); t++) {
            bool fl = kn_dtype_is_float(ndt[t]);
            for (int fm = fl ? 1 : 0; fm < 2; fm++) {
                kn_attr at[1] = {ai("fmod", fm)};
                kn_tensor *in[2] = {rand_tensor(ndt[t], bin_pairs[p][0].nd, bin_pairs[p][0].d, R_ANY),
                                    rand_tensor(ndt[t], bin_pairs[p][1].nd, bin_pairs[p][1].d, R_SMALLINT)};
                run1(KN_OP_Mod, 13, at, 1, in, 2, 1);
            }
            kn_tensor *pr[2] = {rand_tensor(ndt[t], bin_pairs[p][0].nd, bin_pairs[p][0].d, R_ANY),
                                rand_tensor(ndt[t], bin_pairs[p][1].nd, bin_pairs[p][1].d, R_ANY)};
            run1(KN_OP_PRelu, 16, NULL, 0, pr, 2, 1);
        }
    { /* PRelu-6: a 1-D slope along the channel axis */
        int64_t xd[4] = {2, 3, 4, 5}, sd[1] = {3};
        kn_tensor *pr[2] = {rand_tensor(KN_F32, 4, xd, R_ANY), rand_tensor(KN_F32, 1, sd, R_ANY)};
        run1(KN_OP_PRelu, 6, NULL, 0, pr, 2, 1);
    }
    /* variadic Sum/Mean over 1 to 4 broadcast inputs */
    static const shp vs[] = {{2, {3, 5}}, {1, {5}}, {0, {0}}, {2, {1, 5}}};
    for (int t = 0; t < N_ARR(ndt); t++)
        for (int k = 1; k <= 4; k++)
            for (int o = 0; o < 2; o++) {
                int op = o ? KN_OP_Mean : KN_OP_Sum;
                if (op == KN_OP_Mean && !kn_dtype_is_float(ndt[t])) continue;
                kn_tensor *in[4];
                for (int j = 0; j < k; j++) in[j] = rand_tensor(ndt[t], vs[(j + k) % 4].nd, vs[(j + k) % 4].d, R_ANY);
                run1(op, 13, NULL, 0, in, k, 1);
            }
    {
        int64_t e[2] = {0, 4};
        kn_tensor *in[2] = {rand_tensor(KN_F32, 2, e, R_ANY), rand_tensor(KN_F32, 1, e + 1, R_ANY)};
        run1(KN_OP_Sum, 13, NULL, 0, in, 2, 1);
    }
    /* Clip: scalar inputs (either omitted), and Clip-6 attributes */
    for (int t = 0; t < N_ARR(ndt); t++)
        for (int s = 0; s < N_ARR(unary_shapes); s++) {
            const shp *sh = &unary_shapes[s];
            int64_t one = 1;
            kn_tensor *lo = rand_tensor(ndt[t], 0, &one, R_SMALLINT), *hi = rand_tensor(ndt[t], 0, &one, R_SMALLINT);
            kn_set_f64(lo, 0, -1);
            kn_set_f64(hi, 0, 2);
            kn_tensor *in[3] = {rand_tensor(ndt[t], sh->nd, sh->d, R_ANY), lo, s % 3 == 1 ? NULL : hi};
            if (s % 3 == 1) kn_tensor_free(hi);
            run1(KN_OP_Clip, 13, NULL, 0, in, s % 3 == 2 ? 2 : 3, 1);
            if (s % 3 == 2) kn_tensor_free(hi);
        }
    {
        kn_attr at[2] = {af("min", -0.5f), af("max", 0.25f)};
        kn_tensor *in[1] = {rand_tensor(KN_F32, unary_shapes[3].nd, unary_shapes[3].d, R_ANY)};
        run1(KN_OP_Clip, 6, at, 2, in, 1, 1);
    }
}

/* ---- cuops: index and selection ops ---- */
static kn_tensor *idx_tensor(kn_dtype dt, int nd, const int64_t *dims, int64_t lo, int64_t hi) {
    kn_tensor *t = NULL;
    kn_tensor_new(dt, nd, dims, &t);
    for (int64_t i = 0; i < kn_numel(t); i++) kn_set_i64(t, i, lo + (int64_t)(rnd() % (uint64_t)(hi - lo)));
    return t;
}
static kn_tensor *scalar_i64(int64_t v) {
    kn_tensor *t = NULL;
    kn_tensor_new(KN_I64, 0, NULL, &t);
    ((int64_t *)t->data)[0] = v;
    return t;
}
static kn_tensor *scalar_of(kn_dtype dt, double v) {
    kn_tensor *t = NULL;
    kn_tensor_new(dt, 0, NULL, &t);
    kn_set_f64(t, 0, v);
    return t;
}

/* An index out of range must fail the run at its end with an error naming the node, as Gather's
 * does (the CPU refuses the case before moving anything). */
static void oob_case(int op, int opset, kn_attr *attrs, int n_attrs, kn_tensor **in, int n_in, int n_out) {
    op_stats *S = &stats[op];
    if (!op_selected(op)) goto out;
    S->cases++;
    kn_node node = {0};
    node.name = (char *)"index_oob";
    node.op_type = (char *)kn_op_table[op].name;
    node.domain = (char *)"";
    node.op = op;
    node.opset = opset;
    node.n_attrs = n_attrs;
    node.attrs = attrs;
    node.n_inputs = n_in;
    kn_status_free(kn_node_decode_params(&node));
    const kn_tensor *cin[MAX_IN];
    for (int k = 0; k < n_in; k++) cin[k] = in[k];
    kn_tensor ot[MAX_IN] = {{0}}, *outs[MAX_IN];
    for (int k = 0; k < n_out; k++) outs[k] = &ot[k];
    kn_status *st = kn_infer_node(&node, cin, n_in, outs, n_out);
    const char *fail = NULL;
    char why[512] = "";
    if (st) {
        snprintf(why, sizeof why, "infer: %s", kn_status_message(st));
        kn_status_free(st);
        fail = why;
    }
    uint64_t hm = cu->host_inputs(cu, &node);
    kn_tensor dt[MAX_IN];
    const kn_tensor *din[MAX_IN];
    kn_tensor *dout[MAX_IN];
    void *dp[2 * MAX_IN] = {0};
    for (int k = 0; !fail && k < n_in; k++) {
        dt[k] = *in[k];
        dt[k].owns = false;
        din[k] = &dt[k];
        if (hm >> k & 1) continue;
        dp[k] = cu->alloc(cu, kn_nbytes(in[k]) + 1);
        cu->copy(cu, dp[k], KN_DEVICE_CUDA, in[k]->data, KN_DEVICE_CPU, kn_nbytes(in[k]));
        dt[k].data = dp[k];
        dt[k].device = KN_DEVICE_CUDA;
    }
    for (int k = 0; !fail && k < n_out; k++) {
        dp[MAX_IN + k] = cu->alloc(cu, kn_nbytes(&ot[k]) + 1);
        ot[k].data = dp[MAX_IN + k];
        ot[k].device = KN_DEVICE_CUDA;
        dout[k] = &ot[k];
    }
    if (!fail) {
        kn_scratch scratch = {0};
        kn_exec_ctx ctx = {.backend = cu, .scratch_alloc = kn_scratch_alloc_impl, .scratch_state = &scratch};
        st = cu->stream_begin(cu, &ctx.stream);
        if (!st) {
            kn_status *k = cu->kernel(cu, op)(&ctx, &node, din, n_in, dout, n_out);
            st = cu->stream_end(cu, ctx.stream);
            if (k) { /* failing at the launch is fine too */
                kn_status_free(k);
                if (!st) st = kn_error(KN_ERR_RUNTIME, "index_oob: refused at launch");
            }
        }
        if (!st) fail = "an out-of-range index gave no error";
        else if (!strstr(kn_status_message(st), "index_oob")) {
            snprintf(why, sizeof why, "the error does not name the node: %s", kn_status_message(st));
            fail = why;
        }
        kn_status_free(st);
        kn_scratch_release(&scratch);
    }
    for (int k = 0; k < 2 * MAX_IN; k++)
        if (dp[k]) cu->free(cu, dp[k]);
    free(node.params);
    if (fail) {
        S->failed++;
        printf("FAIL %s out of range: %s\n", kn_op_table[op].name, fail);
    } else {
        S->passed++;
    }
out:
    for (int k = 0; k < n_in; k++) kn_tensor_free(in[k]);
}

static void test_cuops_index(void) {
    static const kn_dtype ndt[] = {KN_F32, KN_F16, KN_BF16, KN_I32, KN_I64};
    static const shp ashp[] = {{1, {7}}, {2, {3, 5}}, {3, {4, 33, 5}}, {2, {3, 1000}}, {3, {2, 0, 3}}, {2, {1, 1}}};
    /* ArgMax/ArgMin: small integers make ties; every axis, keepdims and select_last_index */
    for (int t = 0; t < N_ARR(ndt); t++)
        for (int s = 0; s < N_ARR(ashp); s++)
            for (int ax = -1; ax < ashp[s].nd; ax++)
                for (int v = 0; v < 4; v++) {
                    kn_attr at[3] = {ai("axis", ax), ai("keepdims", v & 1), ai("select_last_index", v >> 1)};
                    kn_tensor *in[1] = {rand_tensor(ndt[t], ashp[s].nd, ashp[s].d, R_SMALLINT)};
                    run1(v & 1 ? KN_OP_ArgMax : KN_OP_ArgMin, 13, at, 3, in, 1, 1);
                    kn_tensor *in2[1] = {rand_tensor(ndt[t], ashp[s].nd, ashp[s].d, R_SMALLINT)};
                    run1(v & 1 ? KN_OP_ArgMin : KN_OP_ArgMax, 13, at, 3, in2, 1, 1);
                }
    { /* NaN wins, the first one */
        int64_t d[2] = {2, 70};
        kn_tensor *x = rand_tensor(KN_F32, 2, d, R_ANY);
        ((float *)x->data)[5] = NAN;
        ((float *)x->data)[40] = NAN;
        ((float *)x->data)[70 + 69] = NAN;
        for (int o = 0; o < 2; o++) {
            kn_attr at[2] = {ai("axis", 1), ai("select_last_index", o)};
            kn_tensor *c = NULL;
            kn_tensor_clone(x, &c);
            kn_tensor *in[1] = {c};
            run1(o ? KN_OP_ArgMin : KN_OP_ArgMax, 13, at, 2, in, 1, 1);
        }
        kn_tensor_free(x);
    }
    /* Hardmax: ties and NaN, every axis, the 2-D coercion before opset 13 */
    static const kn_dtype hdt[] = {KN_F32, KN_F16, KN_BF16};
    for (int t = 0; t < N_ARR(hdt); t++)
        for (int s = 0; s < N_ARR(ashp); s++)
            for (int ax = -1; ax < ashp[s].nd; ax++)
                for (int op13 = 0; op13 < 2; op13++) {
                    kn_attr at[1] = {ai("axis", ax)};
                    kn_tensor *in[1] = {rand_tensor(hdt[t], ashp[s].nd, ashp[s].d, R_SMALLINT)};
                    if (kn_numel(in[0]) > 4) kn_set_f64(in[0], 3, NAN);
                    run1(KN_OP_Hardmax, op13 ? 13 : 11, at, 1, in, 1, 1);
                }
    /* TopK: ties (small integers), both orders, every axis, k from 0 to the whole axis */
    static const shp tshp[] = {{1, {7}}, {2, {3, 50}}, {2, {20, 3}}, {3, {2, 9, 4}}, {2, {2, 2048}}, {2, {0, 5}}};
    for (int t = 0; t < N_ARR(ndt); t++)
        for (int s = 0; s < N_ARR(tshp); s++)
            for (int ax = -1; ax < tshp[s].nd; ax++) {
                int a = ax < 0 ? tshp[s].nd - 1 : ax;
                int64_t n = tshp[s].d[a];
                int64_t ks[3] = {n < 3 ? n : 3, n, n / 2};
                for (int ki = 0; ki < 3; ki++)
                    for (int lg = 0; lg < 2; lg++) {
                        if (tshp[s].d[1] == 2048 && (ki != 0 || t > 1)) continue; /* the big line: a few cases */
                        kn_attr at[3] = {ai("axis", ax), ai("largest", lg), ai("sorted", 1)};
                        int64_t one = 1;
                        kn_tensor *in[2] = {rand_tensor(ndt[t], tshp[s].nd, tshp[s].d, R_SMALLINT),
                                            ints_tensor(&ks[ki], 1)};
                        (void)one;
                        run1(KN_OP_TopK, 11, at, 3, in, 2, 2);
                    }
            }
    { /* NaN is the largest value */
        int64_t d[1] = {9}, k = 4;
        kn_tensor *x = rand_tensor(KN_F32, 1, d, R_ANY);
        ((float *)x->data)[2] = NAN;
        ((float *)x->data)[7] = NAN;
        for (int lg = 0; lg < 2; lg++) {
            kn_attr at[1] = {ai("largest", lg)};
            kn_tensor *c = NULL;
            kn_tensor_clone(x, &c);
            kn_tensor *in[2] = {c, ints_tensor(&k, 1)};
            run1(KN_OP_TopK, 11, at, 1, in, 2, 2);
        }
        kn_tensor_free(x);
    }
    { /* a line longer than the sorting block: k <= 256 selected in rounds, ties and NaN included */
        static const kn_dtype ldt[] = {KN_F32, KN_I64, KN_F16};
        int64_t d[2] = {2, 5000}, dT[2] = {3000, 2}, ks[2] = {7, 256};
        for (int t = 0; t < 3; t++)
            for (int ki = 0; ki < 2; ki++)
                for (int lg = 0; lg < 2; lg++) {
                    kn_attr at[2] = {ai("axis", -1), ai("largest", lg)};
                    kn_tensor *x = rand_tensor(ldt[t], 2, d, R_SMALLINT);
                    if (t == 0) kn_set_f64(x, 4321, NAN);
                    kn_tensor *in[2] = {x, ints_tensor(&ks[ki], 1)};
                    run1(KN_OP_TopK, 11, at, 2, in, 2, 2);
                }
        kn_attr a0[1] = {ai("axis", 0)};
        kn_tensor *in[2] = {rand_tensor(KN_F32, 2, dT, R_ANY), ints_tensor(&ks[0], 1)};
        run1(KN_OP_TopK, 11, a0, 1, in, 2, 2);
    }
    /* CumSum: every axis (negative too), exclusive and reverse */
    static const shp cshp[] = {{1, {7}}, {2, {3, 5}}, {3, {4, 3, 5}}, {3, {2, 0, 3}}, {2, {2, 300}}};
    for (int t = 0; t < N_ARR(ndt); t++)
        for (int s = 0; s < N_ARR(cshp); s++)
            for (int ax = -cshp[s].nd; ax < cshp[s].nd; ax++)
                for (int v = 0; v < 4; v++) {
                    kn_attr at[2] = {ai("exclusive", v & 1), ai("reverse", v >> 1)};
                    kn_tensor *in[2] = {rand_tensor(ndt[t], cshp[s].nd, cshp[s].d, R_ANY), scalar_i64(ax)};
                    run1(KN_OP_CumSum, 14, at, 2, in, 2, 1);
                }
    /* GatherElements / GatherND: int32 and int64 indices, negative ones, 1- to 8-byte elements */
    static const kn_dtype edt[] = {KN_F32, KN_F16, KN_I64, KN_BOOL};
    for (int t = 0; t < N_ARR(edt); t++)
        for (int i64 = 0; i64 < 2; i64++) {
            kn_dtype it = i64 ? KN_I64 : KN_I32;
            int64_t xd[3] = {3, 4, 5}, i0[3] = {2, 4, 5}, i1[3] = {3, 6, 2}, i2[3] = {3, 4, 0};
            kn_attr a0[1] = {ai("axis", 0)}, a1[1] = {ai("axis", -2)}, a2[1] = {ai("axis", 2)};
            kn_tensor *g0[2] = {rand_tensor(edt[t], 3, xd, R_ANY), idx_tensor(it, 3, i0, -3, 3)};
            run1(KN_OP_GatherElements, 13, a0, 1, g0, 2, 1);
            kn_tensor *g1[2] = {rand_tensor(edt[t], 3, xd, R_ANY), idx_tensor(it, 3, i1, -4, 4)};
            run1(KN_OP_GatherElements, 13, a1, 1, g1, 2, 1);
            kn_tensor *g2[2] = {rand_tensor(edt[t], 3, xd, R_ANY), idx_tensor(it, 3, i2, 0, 5)};
            run1(KN_OP_GatherElements, 13, a2, 1, g2, 2, 1);
            int64_t n0[2] = {6, 2}, n1[3] = {3, 2, 1}, n2[2] = {4, 3};
            kn_tensor *q0[2] = {rand_tensor(edt[t], 3, xd, R_ANY), idx_tensor(it, 2, n0, -3, 3)};
            run1(KN_OP_GatherND, 13, NULL, 0, q0, 2, 1);
            kn_attr b1[1] = {ai("batch_dims", 1)};
            kn_tensor *q1[2] = {rand_tensor(edt[t], 3, xd, R_ANY), idx_tensor(it, 3, n1, -4, 4)};
            run1(KN_OP_GatherND, 13, b1, 1, q1, 2, 1);
            kn_tensor *q2[2] = {rand_tensor(edt[t], 3, xd, R_ANY), idx_tensor(it, 2, n2, 0, 3)};
            int64_t *q2d = (int64_t *)(i64 ? q2[1]->data : NULL);
            if (q2d) q2d[2] = 2;
            run1(KN_OP_GatherND, 13, NULL, 0, q2, 2, 1);
        }
    /* ScatterElements / ScatterND: duplicate indices, every reduction, applied in index order */
    static const char *reds[] = {"none", "add", "mul", "max", "min"};
    for (int t = 0; t < N_ARR(ndt); t++)
        for (int r = 0; r < N_ARR(reds); r++)
            for (int i64 = 0; i64 < 2; i64++) {
                kn_dtype it = i64 ? KN_I64 : KN_I32;
                int64_t xd[2] = {4, 5}, id[2] = {6, 5}, id1[2] = {4, 7};
                kn_attr a0[2] = {ai("axis", 0), astr("reduction", reds[r])};
                kn_attr a1[2] = {ai("axis", -1), astr("reduction", reds[r])};
                kn_tensor *s0[3] = {rand_tensor(ndt[t], 2, xd, R_ANY), idx_tensor(it, 2, id, -4, 4),
                                    rand_tensor(ndt[t], 2, id, R_ANY)};
                run1(KN_OP_ScatterElements, 18, a0, 2, s0, 3, 1);
                kn_tensor *s1[3] = {rand_tensor(ndt[t], 2, xd, R_ANY), idx_tensor(it, 2, id1, -5, 5),
                                    rand_tensor(ndt[t], 2, id1, R_ANY)};
                run1(KN_OP_ScatterElements, 18, a1, 2, s1, 3, 1);
                kn_attr an[1] = {astr("reduction", reds[r])};
                int64_t nd3[3] = {4, 5, 6}, ni[2] = {5, 1}, nu[3] = {5, 5, 6}, ni2[2] = {7, 2}, nu2[2] = {7, 6};
                kn_tensor *n0[3] = {rand_tensor(ndt[t], 3, nd3, R_ANY), idx_tensor(it, 2, ni, -4, 4),
                                    rand_tensor(ndt[t], 3, nu, R_ANY)};
                run1(KN_OP_ScatterND, 18, an, 1, n0, 3, 1);
                kn_tensor *n1[3] = {rand_tensor(ndt[t], 3, nd3, R_ANY), idx_tensor(it, 2, ni2, 0, 4),
                                    rand_tensor(ndt[t], 2, nu2, R_ANY)};
                run1(KN_OP_ScatterND, 18, an, 1, n1, 3, 1);
            }
    /* out-of-range indices fail the run like Gather's */
    {
        int64_t xd[2] = {3, 4}, id[2] = {2, 4};
        kn_attr a0[1] = {ai("axis", 0)};
        kn_tensor *g[2] = {rand_tensor(KN_F32, 2, xd, R_ANY), idx_tensor(KN_I64, 2, id, 3, 4)};
        oob_case(KN_OP_GatherElements, 13, a0, 1, g, 2, 1);
        int64_t nd_[2] = {2, 2};
        kn_tensor *q[2] = {rand_tensor(KN_F32, 2, xd, R_ANY), idx_tensor(KN_I32, 2, nd_, -9, -8)};
        oob_case(KN_OP_GatherND, 13, NULL, 0, q, 2, 1);
        kn_attr a1[2] = {ai("axis", 1), astr("reduction", "add")};
        kn_tensor *s0[3] = {rand_tensor(KN_F32, 2, xd, R_ANY), idx_tensor(KN_I64, 2, id, 4, 5),
                            rand_tensor(KN_F32, 2, id, R_ANY)};
        oob_case(KN_OP_ScatterElements, 18, a1, 2, s0, 3, 1);
        int64_t ni[2] = {2, 1}, nu[2] = {2, 4};
        kn_tensor *s1[3] = {rand_tensor(KN_F32, 2, xd, R_ANY), idx_tensor(KN_I64, 2, ni, -5, -4),
                            rand_tensor(KN_F32, 2, nu, R_ANY)};
        oob_case(KN_OP_ScatterND, 18, NULL, 0, s1, 3, 1);
    }
    /* OneHot: int and float indices, negative ones, out of range (all off), any axis */
    static const kn_dtype vdt[] = {KN_F32, KN_I64, KN_F16, KN_BOOL};
    for (int t = 0; t < N_ARR(vdt); t++)
        for (int ax = -3; ax < 3; ax++) {
            int64_t id[2] = {3, 4}, two = 2;
            kn_attr at[1] = {ai("axis", ax)};
            kn_tensor *vals = rand_tensor(vdt[t], 1, &two, R_ANY);
            kn_tensor *in[3] = {idx_tensor(ax & 1 ? KN_I32 : KN_I64, 2, id, -6, 6), scalar_i64(5), vals};
            run1(KN_OP_OneHot, 11, at, 1, in, 3, 1);
            kn_tensor *fi = rand_tensor(KN_F32, 2, id, R_ANY);
            kn_tensor *in2[3] = {fi, scalar_i64(4), rand_tensor(vdt[t], 1, &two, R_ANY)};
            run1(KN_OP_OneHot, 11, at, 1, in2, 3, 1);
        }
    /* Trilu: both triangles, k from below to above the diagonal, or omitted */
    static const shp trs[] = {{2, {4, 5}}, {3, {3, 4, 5}}, {2, {6, 2}}, {3, {2, 0, 3}}};
    for (int t = 0; t < N_ARR(edt); t++)
        for (int s = 0; s < N_ARR(trs); s++)
            for (int up = 0; up < 2; up++)
                for (int k = -3; k <= 3; k += 2) {
                    kn_attr at[1] = {ai("upper", up)};
                    kn_tensor *in[2] = {rand_tensor(edt[t], trs[s].nd, trs[s].d, R_ANY), scalar_i64(k)};
                    run1(KN_OP_Trilu, 14, at, 1, in, k == 3 ? 1 : 2, 1);
                    if (k == 3) kn_tensor_free(in[1]);
                }
    /* Tile */
    static const int64_t reps[][3] = {{2, 1, 1}, {1, 3, 2}, {0, 2, 1}, {1, 1, 1}};
    for (int t = 0; t < N_ARR(edt); t++)
        for (int r = 0; r < 4; r++) {
            int64_t xd[3] = {2, 3, 4};
            kn_tensor *in[2] = {rand_tensor(edt[t], 3, xd, R_ANY), ints_tensor(reps[r], 3)};
            run1(KN_OP_Tile, 13, NULL, 0, in, 2, 1);
        }
    /* Pad: every mode, negative pads (cropping), a constant value, axes (opset 18), Pad-2 attributes */
    static const char *modes[] = {"constant", "reflect", "edge", "wrap"};
    static const int64_t pads[][4] = {{1, 2, 0, 1}, {0, 0, 0, 0}, {2, 3, 2, 3}, {-1, 1, 1, -2}};
    for (int t = 0; t < N_ARR(edt); t++)
        for (int m = 0; m < 4; m++)
            for (int p = 0; p < 4; p++) {
                int64_t xd[2] = {3, 4};
                kn_attr at[1] = {astr("mode", modes[m])};
                kn_tensor *in[3] = {rand_tensor(edt[t], 2, xd, R_ANY), ints_tensor(pads[p], 4), scalar_of(edt[t], 1)};
                run1(KN_OP_Pad, 13, at, 1, in, m == 0 ? 3 : 2, 1);
                if (m != 0) kn_tensor_free(in[2]);
            }
    {
        int64_t xd[3] = {2, 3, 4}, ax[2] = {-1, 0}, pd[4] = {1, 0, 2, 1};
        kn_attr at[1] = {astr("mode", "reflect")};
        kn_tensor *in[4] = {rand_tensor(KN_F32, 3, xd, R_ANY), ints_tensor(pd, 4), NULL, ints_tensor(ax, 2)};
        run1(KN_OP_Pad, 18, at, 1, in, 4, 1);
        int64_t p2[4] = {0, 1, 1, 0};
        kn_attr a2[2] = {aints("pads", p2, 4), af("value", 2.5f)};
        int64_t x2[2] = {3, 2};
        kn_tensor *in2[1] = {rand_tensor(KN_F32, 2, x2, R_ANY)};
        run1(KN_OP_Pad, 2, a2, 2, in2, 1, 1);
    }
    /* Range */
    for (int t = 0; t < N_ARR(ndt); t++) {
        kn_tensor *in[3] = {scalar_of(ndt[t], -3), scalar_of(ndt[t], 7), scalar_of(ndt[t], 2)};
        run1(KN_OP_Range, 11, NULL, 0, in, 3, 1);
        kn_tensor *in2[3] = {scalar_of(ndt[t], 5), scalar_of(ndt[t], -4), scalar_of(ndt[t], -3)};
        run1(KN_OP_Range, 11, NULL, 0, in2, 3, 1);
    }
}

/* ---- cuops: the other reductions ---- */
static void test_cuops_reduce(void) {
    static const int ops[] = {KN_OP_ReduceProd,   KN_OP_ReduceL1,        KN_OP_ReduceL2,
                              KN_OP_ReduceLogSum, KN_OP_ReduceLogSumExp, KN_OP_ReduceSumSquare};
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16, KN_I32, KN_I64};
    static const shp shapes[] = {{1, {9}}, {2, {3, 7}}, {3, {4, 5, 6}}, {2, {2, 300}}, {3, {2, 0, 3}}};
    static const int64_t axes_sets[][3] = {{-1}, {0}, {0, -1}, {1}};
    static const int n_axes[] = {1, 1, 2, 1};
    for (int o = 0; o < N_ARR(ops); o++)
        for (int t = 0; t < N_ARR(dts); t++)
            for (int s = 0; s < N_ARR(shapes); s++)
                for (int a = 0; a < 5; a++)
                    for (int kd = 0; kd < 2; kd++) {
                        bool fl_only =
                            ops[o] == KN_OP_ReduceL2 || ops[o] == KN_OP_ReduceLogSum || ops[o] == KN_OP_ReduceLogSumExp;
                        if (fl_only && !kn_dtype_is_float(dts[t])) continue;
                        if (a < 4 && axes_sets[a][0] >= shapes[s].nd) continue;
                        int range = ops[o] == KN_OP_ReduceLogSum ? R_POS
                            : ops[o] == KN_OP_ReduceProd         ? R_SMALLINT
                                                                 : R_ANY;
                        kn_attr at[1] = {ai("keepdims", kd)};
                        kn_tensor *in[2] = {rand_tensor(dts[t], shapes[s].nd, shapes[s].d, range),
                                            a < 4 ? ints_tensor(axes_sets[a], n_axes[a]) : NULL};
                        run1(ops[o], 18, at, 1, in, a < 4 ? 2 : 1, 1);
                    }
    /* empty axes with noop_with_empty_axes: the input unchanged */
    int64_t d[2] = {3, 4};
    kn_attr at[1] = {ai("noop_with_empty_axes", 1)};
    int64_t none[1] = {0};
    kn_tensor *in[2] = {rand_tensor(KN_F32, 2, d, R_ANY), ints_tensor(none, 0)};
    run1(KN_OP_ReduceSumSquare, 18, at, 1, in, 2, 1);
}

/* ---- cuops: RNN, GRU, LSTM ---- */
static kn_attr astrs(const char *n, const char **v, int k) {
    kn_attr a = {0};
    a.name = (char *)n;
    a.type = KN_ATTR_STRINGS;
    a.strings = (char **)v;
    a.n_strings = k;
    return a;
}
static void test_cuops_rnn(void) {
    static const int ops[] = {KN_OP_RNN, KN_OP_GRU, KN_OP_LSTM};
    static const char *dirs_s[] = {"forward", "reverse", "bidirectional"};
    for (int o = 0; o < 3; o++) {
        int G = ops[o] == KN_OP_RNN ? 1 : ops[o] == KN_OP_GRU ? 3 : 4;
        for (int dr = 0; dr < 3; dr++)
            for (int layout = 0; layout < 2; layout++)
                for (int v = 0; v < 4; v++) {
                    /* v: 0 plain; 1 bias, initial states, sequence_lens with an empty and a short
                     * sequence; 2 clip, GRU linear_before_reset, LSTM peepholes and input_forget;
                     * 3 other activations */
                    int dirs = dr == 2 ? 2 : 1;
                    int64_t S = 5, B = 3, I = 4, H = v == 3 ? 6 : 8;
                    int64_t xd[3] = {layout ? B : S, layout ? S : B, I}, wd[3] = {dirs, G * H, I},
                            rd[3] = {dirs, G * H, H}, bd[2] = {dirs, 2 * G * H},
                            hd[3] = {layout ? B : dirs, layout ? dirs : B, H}, pd[2] = {dirs, 3 * H};
                    kn_tensor *in[8] = {rand_tensor(KN_F32, 3, xd, R_ANY),
                                        rand_tensor(KN_F32, 3, wd, R_ANY),
                                        rand_tensor(KN_F32, 3, rd, R_ANY),
                                        NULL,
                                        NULL,
                                        NULL,
                                        NULL,
                                        NULL};
                    for (int k = 1; k < 3; k++) /* weights small enough to keep the gates unsaturated */
                        for (int64_t i = 0; i < kn_numel(in[k]); i++) kn_set_f64(in[k], i, kn_get_f64(in[k], i) / 6);
                    int n_in = 3;
                    if (v >= 1) {
                        in[3] = rand_tensor(KN_F32, 2, bd, R_ANY);
                        in[4] = idx_tensor(KN_I32, 1, &B, 0, S + 1);
                        ((int32_t *)in[4]->data)[0] = 0;
                        ((int32_t *)in[4]->data)[1] = (int32_t)S;
                        in[5] = rand_tensor(KN_F32, 3, hd, R_ANY);
                        n_in = 6;
                        if (ops[o] == KN_OP_LSTM) {
                            in[6] = rand_tensor(KN_F32, 3, hd, R_ANY);
                            n_in = 7;
                            if (v == 2) {
                                in[7] = rand_tensor(KN_F32, 2, pd, R_ANY);
                                n_in = 8;
                            }
                        }
                    }
                    kn_attr at[8];
                    int na = 0;
                    at[na++] = astr("direction", dirs_s[dr]);
                    at[na++] = ai("hidden_size", H);
                    at[na++] = ai("layout", layout);
                    if (v == 2) {
                        at[na++] = af("clip", 1.5f);
                        if (ops[o] == KN_OP_GRU) at[na++] = ai("linear_before_reset", 1);
                        if (ops[o] == KN_OP_LSTM) at[na++] = ai("input_forget", 1);
                    }
                    static const char *acts1[] = {"Relu", "Softsign"};
                    static const char *acts2[] = {"HardSigmoid", "Elu", "Softplus", "LeakyRelu"};
                    static const char *acts3[] = {"Sigmoid",     "ScaledTanh", "Affine",
                                                  "HardSigmoid", "Tanh",       "ThresholdedRelu"};
                    float alphas[4] = {0.3f, 0.8f, 0.5f, 0.1f}, betas[2] = {0.6f, 0.2f};
                    if (v == 3) {
                        int n = G == 1 ? dirs : G == 3 ? 2 * dirs : 3 * dirs;
                        at[na++] = astrs("activations", G == 1 ? acts1 : G == 3 ? acts2 : acts3, n);
                        kn_attr al = {0}, be = {0};
                        al.name = (char *)"activation_alpha";
                        al.type = KN_ATTR_FLOATS;
                        al.floats = alphas;
                        al.n_floats = G == 3 ? 3 : 2;
                        be.name = (char *)"activation_beta";
                        be.type = KN_ATTR_FLOATS;
                        be.floats = betas;
                        be.n_floats = G == 4 ? 2 : 0;
                        if (G != 1) at[na++] = al;
                        if (G == 4) at[na++] = be;
                    }
                    int n_out = ops[o] == KN_OP_LSTM ? 3 : 2;
                    case_omit = v == 2 ? 1u : 0u; /* Y omitted once: Y_h (and Y_c) alone */
                    run_case(ops[o], 14, at, na, in, n_in, n_out);
                    case_omit = 0;
                    for (int k = 0; k < 8; k++) kn_tensor_free(in[k]);
                }
    }
}

/* ---- cuops: bitwise ops, BitShift, IsInf, CumProd ---- */
static void test_cuops_bits(void) {
    static const kn_dtype idt[] = {KN_U8, KN_U16, KN_U32, KN_U64, KN_I8, KN_I32, KN_I64};
    for (int p = 0; p < N_ARR(bin_pairs); p++)
        for (int t = 0; t < N_ARR(idt); t++) {
            static const int ops[] = {KN_OP_BitwiseAnd, KN_OP_BitwiseOr, KN_OP_BitwiseXor};
            for (int o = 0; o < 3; o++) {
                kn_tensor *in[2] = {rand_tensor(idt[t], bin_pairs[p][0].nd, bin_pairs[p][0].d, R_ANY),
                                    rand_tensor(idt[t], bin_pairs[p][1].nd, bin_pairs[p][1].d, R_ANY)};
                run1(ops[o], 18, NULL, 0, in, 2, 1);
            }
            for (int left = 0; left < 2; left++) { /* counts past the width, and negative for signed types */
                bool sg = idt[t] == KN_I8 || idt[t] == KN_I32 || idt[t] == KN_I64;
                kn_attr at[1] = {astr("direction", left ? "LEFT" : "RIGHT")};
                kn_tensor *in[2] = {rand_tensor(idt[t], bin_pairs[p][0].nd, bin_pairs[p][0].d, R_ANY),
                                    idx_tensor(idt[t], bin_pairs[p][1].nd, bin_pairs[p][1].d, sg ? -3 : 0, 70)};
                run1(KN_OP_BitShift, 11, at, 1, in, 2, 1);
            }
        }
    for (int t = 0; t < N_ARR(idt); t++)
        for (int s = 0; s < N_ARR(unary_shapes); s++) {
            kn_tensor *in[1] = {rand_tensor(idt[t], unary_shapes[s].nd, unary_shapes[s].d, R_ANY)};
            run1(KN_OP_BitwiseNot, 18, NULL, 0, in, 1, 1);
        }
    static const kn_dtype fdt[] = {KN_F32, KN_F16, KN_BF16};
    for (int t = 0; t < N_ARR(fdt); t++)
        for (int v = 0; v < 4; v++) {
            int64_t d = 40;
            kn_tensor *x = rand_tensor(fdt[t], 1, &d, R_ANY);
            kn_set_f64(x, 3, INFINITY);
            kn_set_f64(x, 9, -INFINITY);
            kn_set_f64(x, 11, NAN);
            kn_attr at[2] = {ai("detect_negative", v & 1), ai("detect_positive", v >> 1)};
            kn_tensor *in[1] = {x};
            run1(KN_OP_IsInf, 20, at, 2, in, 1, 1);
        }
    static const kn_dtype ndt[] = {KN_F32, KN_F16, KN_BF16, KN_I32, KN_I64};
    static const shp cshp[] = {{1, {7}}, {2, {3, 5}}, {3, {4, 3, 5}}, {3, {2, 0, 3}}};
    for (int t = 0; t < N_ARR(ndt); t++)
        for (int s = 0; s < N_ARR(cshp); s++)
            for (int ax = -cshp[s].nd; ax < cshp[s].nd; ax++)
                for (int v = 0; v < 4; v++) {
                    kn_attr at[2] = {ai("exclusive", v & 1), ai("reverse", v >> 1)};
                    kn_tensor *in[2] = {rand_tensor(ndt[t], cshp[s].nd, cshp[s].d, R_SMALLINT), scalar_i64(ax)};
                    run1(KN_OP_CumProd, 26, at, 2, in, 2, 1);
                }
}


/* ---- cucontrib: com.microsoft Gelu family, skip / RMS normalisations, MatMulNBits, GatherBlockQuantized ---- */

static const kn_dtype contrib_dts[] = {KN_F32, KN_F16, KN_BF16};

/* Gelu (erf), FastGelu with and without its bias, BiasGelu: odd sizes, a bias over the last dim. */
static void test_contrib_gelu(void) {
    static const shp shapes[] = {{1, {1}}, {2, {3, 5}}, {3, {2, 7, 33}}, {2, {4, 300}}, {2, {0, 8}}};
    for (int sh = 0; sh < N_ARR(shapes); sh++)
        for (int t = 0; t < N_ARR(contrib_dts); t++) {
            const shp *S = &shapes[sh];
            int64_t hd[1] = {S->d[S->nd - 1]};
            kn_tensor *in1[1] = {rand_tensor(contrib_dts[t], S->nd, S->d, R_ANY)};
            run1(KN_OP_MsGelu, 1, NULL, 0, in1, 1, 1);
            kn_tensor *in2[1] = {rand_tensor(contrib_dts[t], S->nd, S->d, R_ANY)};
            run1(KN_OP_MsFastGelu, 1, NULL, 0, in2, 1, 1);
            if (hd[0] <= 0) continue;
            kn_tensor *in3[2] = {rand_tensor(contrib_dts[t], S->nd, S->d, R_ANY),
                                 rand_tensor(contrib_dts[t], 1, hd, R_ANY)};
            run1(KN_OP_MsFastGelu, 1, NULL, 0, in3, 2, 1);
            kn_tensor *in4[2] = {rand_tensor(contrib_dts[t], S->nd, S->d, R_ANY),
                                 rand_tensor(contrib_dts[t], 1, hd, R_ANY)};
            run1(KN_OP_MsBiasGelu, 1, NULL, 0, in4, 2, 1);
        }
}

/* SkipLayerNormalization and SkipSimplifiedLayerNormalization: skip of the input's shape, [S,H]
 * and [1,S,H] broadcast over the batch; with and without beta and bias; all four outputs, output 0
 * alone, and mean/inv_std_var omitted; rows short and long (a row of 9000 is not staged in shared
 * memory). */
static void test_contrib_skipnorm(void) {
    static const int64_t shapes[][3] = {{2, 5, 16}, {1, 1, 7}, {3, 9, 96}, {0, 4, 300}, {2, 3, 1000}, {1, 2, 9000}};
    for (int sh = 0; sh < N_ARR(shapes); sh++)
        for (int t = 0; t < N_ARR(contrib_dts); t++)
            for (int form = 0; form < 4; form++)
                for (int rms = 0; rms < 2; rms++) {
                    kn_dtype dt = contrib_dts[t];
                    int64_t B = shapes[sh][0], S = shapes[sh][1], H = shapes[sh][2];
                    int64_t xd[3] = {B, S, H}, sd2[2] = {S, H}, sd3[3] = {1, S, H}, hd[1] = {H};
                    bool two_d = form == 3; /* a [B*S, H] input */
                    int64_t x2[2] = {B * S, H};
                    kn_tensor *x = two_d ? rand_tensor(dt, 2, x2, R_ANY) : rand_tensor(dt, 3, xd, R_ANY);
                    kn_tensor *skip = form == 1 ? rand_tensor(dt, 2, sd2, R_ANY)
                        : form == 2             ? rand_tensor(dt, 3, sd3, R_ANY)
                        : two_d                 ? rand_tensor(dt, 2, x2, R_ANY)
                                                : rand_tensor(dt, 3, xd, R_ANY);
                    kn_tensor *gamma = rand_tensor(dt, 1, hd, R_ANY);
                    kn_tensor *beta = form != 1 ? rand_tensor(dt, 1, hd, R_ANY) : NULL;
                    kn_tensor *bias = form != 2 ? rand_tensor(dt, 1, hd, R_ANY) : NULL;
                    kn_attr at[1] = {af("epsilon", form == 0 ? 1e-5f : 1e-6f)};
                    int n_out = form == 2 ? 1 : 4;
                    case_omit = form == 1 ? 6u : 0u;
                    if (rms) {
                        kn_tensor *in[4] = {x, skip, gamma, bias};
                        run_case(KN_OP_MsSkipSimplifiedLayerNormalization, 1, at, 1, in, bias ? 4 : 3, n_out);
                    } else {
                        kn_tensor *in[5] = {x, skip, gamma, beta, bias};
                        run_case(KN_OP_MsSkipLayerNormalization, 1, at, 1, in, bias ? 5 : beta ? 4 : 3, n_out);
                    }
                    case_omit = 0;
                    kn_tensor *all[5] = {x, skip, gamma, beta, bias};
                    for (int k = 0; k < 5; k++) kn_tensor_free(all[k]);
                }
}

/* SimplifiedLayerNormalization (RMS norm): axis -1 and 1, X and scale of the same or different
 * float types, with and without inv_std_var. */
static void test_contrib_rmsnorm(void) {
    static const shp shapes[] = {{2, {3, 16}}, {3, {2, 5, 96}}, {3, {1, 3, 1000}}, {2, {1, 1}}, {3, {0, 2, 8}}};
    for (int sh = 0; sh < N_ARR(shapes); sh++)
        for (int t = 0; t < N_ARR(contrib_dts); t++)
            for (int form = 0; form < 3; form++) {
                const shp *S = &shapes[sh];
                int axis = form == 2 && S->nd == 3 ? 1 : -1;
                int a = axis < 0 ? S->nd - 1 : axis, nsd = S->nd - a;
                int64_t sd[6];
                for (int i = 0; i < nsd; i++) sd[i] = S->d[a + i];
                kn_dtype xt = contrib_dts[t], st = form == 1 ? contrib_dts[(t + 1) % 3] : xt;
                kn_tensor *in[2] = {rand_tensor(xt, S->nd, S->d, R_ANY), rand_tensor(st, nsd, sd, R_ANY)};
                kn_attr at[2] = {ai("axis", axis), af("epsilon", 1e-6f)};
                run1(KN_OP_SimplifiedLayerNormalization, 1, at, 2, in, 2, form == 0 ? 1 : 2);
            }
}

/* MatMulNBits: 4- and 8-bit weights, block sizes 16..128 with K a multiple of the block or not,
 * zero points absent, packed uint8 or of the scales' type, with and without bias; M of 1..4 (the
 * decode path) and larger (the tiled path, partial tiles), A of rank 1..3. Weights near unit size
 * so sums stay moderate. */
static kn_tensor *bytes_tensor(int nd, const int64_t *dims) {
    kn_tensor *t = NULL;
    kn_tensor_new(KN_U8, nd, dims, &t);
    for (int64_t i = 0; i < kn_numel(t); i++) ((uint8_t *)t->data)[i] = (uint8_t)rnd();
    return t;
}
static kn_tensor *small_tensor(kn_dtype dt, int nd, const int64_t *dims, double lo, double hi) {
    kn_tensor *t = rand_tensor(dt, nd, dims, R_ANY);
    for (int64_t i = 0; i < kn_numel(t); i++) kn_set_f64(t, i, urand(lo, hi));
    return t;
}
static void test_contrib_nbits(void) {
    /* M rows (A [M,K]; M == 0 means A [2,3,K]; M < 0 means A [K]), K, N, bits, block_size */
    static const int64_t cfg[][5] = {{1, 64, 7, 4, 32},    {3, 48, 70, 4, 32},  {4, 200, 9, 8, 16},
                                     {-1, 32, 5, 4, 16},   {0, 128, 33, 4, 64}, {70, 100, 65, 4, 32},
                                     {9, 256, 20, 8, 128}, {1, 40, 8, 8, 16}};
    for (int c = 0; c < N_ARR(cfg); c++)
        for (int t = 0; t < N_ARR(contrib_dts); t++)
            for (int form = 0; form < 3; form++) {
                kn_dtype dt = contrib_dts[t];
                int64_t M = cfg[c][0], K = cfg[c][1], N = cfg[c][2], bits = cfg[c][3], bs = cfg[c][4];
                int64_t nb = (K + bs - 1) / bs, blob = bs * bits / 8, zs = (nb * bits + 7) / 8;
                int64_t ad[3], bd[3] = {N, nb, blob}, scd[1] = {N * nb}, zd8[1] = {N * zs}, nd1[1] = {N};
                int and_ = 0;
                if (M < 0) ad[and_++] = K;
                else if (M == 0) {
                    ad[and_++] = 2;
                    ad[and_++] = 3;
                    ad[and_++] = K;
                } else {
                    ad[and_++] = M;
                    ad[and_++] = K;
                }
                /* form 0: no zero points, bias; 1: packed uint8 zero points; 2: zero points of the scales' type */
                kn_tensor *in[6] = {small_tensor(dt, and_, ad, -2.0, 2.0),
                                    bytes_tensor(3, bd),
                                    small_tensor(dt, 1, scd, 0.005, 0.12),
                                    NULL,
                                    NULL,
                                    form != 1 ? small_tensor(dt, 1, nd1, -1.0, 1.0) : NULL};
                if (form == 1) in[3] = bytes_tensor(1, zd8);
                if (form == 2) in[3] = small_tensor(dt, 1, scd, 0.0, (double)((1 << bits) - 1));
                /* accuracy_level 1 (accepted, float products on both sides): at level 4 the CPU
                 * quantises A to int8 per block as ONNX Runtime's CPU kernel does, while the CUDA
                 * kernel computes in float at every level, as ONNX Runtime's CUDA provider does, so
                 * the two are not the same function there (contrib.genops_parity holds the CPU's
                 * level 4 to ONNX Runtime) */
                kn_attr at[5] = {ai("K", K), ai("N", N), ai("bits", bits), ai("block_size", bs),
                                 ai("accuracy_level", form == 1 ? 1 : 0)};
                run1(KN_OP_MsMatMulNBits, 1, at, 5, in, in[5] ? 6 : 4, 1);
            }
}

/* GatherBlockQuantized: packed 4-bit uint8, 8-bit uint8, uint4 and int4 data; zero points or not;
 * int32 and int64 indices (negative ones too); gather axis 0 with quantisation along the last
 * axis, and a gather over axis 1 of 3-D data quantised along axis 0. */
static kn_tensor *contrib_idx_tensor(kn_dtype dt, int nd, const int64_t *dims, int64_t hi) {
    kn_tensor *t = NULL;
    kn_tensor_new(dt, nd, dims, &t);
    for (int64_t i = 0; i < kn_numel(t); i++) kn_set_f64(t, i, (double)((int64_t)(rnd() % (uint64_t)(2 * hi)) - hi));
    return t;
}
static kn_tensor *q4_tensor(kn_dtype dt, int nd, const int64_t *dims) {
    kn_tensor *t = NULL;
    kn_tensor_new(dt, nd, dims, &t);
    for (int64_t i = 0; i < kn_numel(t); i++)
        kn_set_f64(t, i, dt == KN_I4 ? (double)((int)(rnd() % 16) - 8) : (double)(rnd() % 16));
    return t;
}
static void test_contrib_gbq(void) {
    for (int t = 0; t < N_ARR(contrib_dts); t++)
        for (int form = 0; form < 6; form++)
            for (int zp = 0; zp < 2; zp++) {
                kn_dtype dt = contrib_dts[t];
                int64_t V = 11, H = 96, bs = form == 1 ? 32 : 16;
                int64_t bits = form == 1 ? 8 : 4, ga = 0, qa = 1;
                kn_tensor *data, *sc, *z = NULL;
                int64_t id[2] = {2, 3};
                if (form == 0 || form == 3) { /* packed uint8 [V, H/2], scales [V, H/bs], zero points [V, nb/2] */
                    int64_t dd[2] = {V, H / 2}, sd[2] = {V, (H + bs - 1) / bs}, zd[2] = {V, (sd[1] + 1) / 2};
                    if (form == 3) { /* a block count that is odd: the last zero point byte is half used */
                        H = 80;
                        dd[1] = H / 2;
                        sd[1] = H / bs;
                        zd[1] = (sd[1] + 1) / 2;
                    }
                    data = bytes_tensor(2, dd);
                    sc = small_tensor(dt, 2, sd, 0.01, 0.5);
                    if (zp) z = bytes_tensor(2, zd);
                } else if (form == 1) { /* 8-bit uint8 */
                    int64_t dd[2] = {V, H}, sd[2] = {V, H / bs};
                    data = bytes_tensor(2, dd);
                    sc = small_tensor(dt, 2, sd, 0.01, 0.5);
                    if (zp) z = bytes_tensor(2, sd);
                } else if (form == 2 || form == 4) { /* uint4 / int4, one value a byte */
                    kn_dtype q = form == 2 ? KN_U4 : KN_I4;
                    int64_t dd[2] = {V, H}, sd[2] = {V, H / bs};
                    data = q4_tensor(q, 2, dd);
                    sc = small_tensor(dt, 2, sd, 0.01, 0.5);
                    if (zp) z = q4_tensor(q, 2, sd);
                } else { /* 3-D uint4 [4, V, 8], gathered along axis 1, quantised along axis 0 */
                    int64_t dd[3] = {32, V, 8}, sd[3] = {2, V, 8};
                    ga = 1;
                    qa = 0;
                    data = q4_tensor(KN_U4, 3, dd);
                    sc = small_tensor(dt, 3, sd, 0.01, 0.5);
                    if (zp) z = q4_tensor(KN_U4, 3, sd);
                }
                kn_tensor *in[4] = {data, contrib_idx_tensor(form & 1 ? KN_I32 : KN_I64, 2, id, V), sc, z};
                kn_attr at[4] = {ai("bits", bits), ai("block_size", bs), ai("gather_axis", ga),
                                 ai("quantize_axis", qa)};
                run1(KN_OP_MsGatherBlockQuantized, 1, at, 4, in, z ? 4 : 3, 1);
            }
}

/* GemmFastGelu (cuBLASLt's GELU_BIAS / GELU epilogue): X of rank 1..3 against one W, with and
 * without bias; and Gemm with a bias row C ([N], [1, N]) and alpha != 1, which takes the BIAS
 * epilogue instead of a copy of C. */
static void test_contrib_gemm_epilogue(void) {
    static const shp pairs[][2] = {{{2, {3, 4}}, {2, {4, 5}}},       {{3, {2, 7, 13}}, {2, {13, 9}}},
                                   {{1, {6}}, {2, {6, 4}}},          {{2, {1, 1}}, {2, {1, 1}}},
                                   {{2, {65, 129}}, {2, {129, 33}}}, {{3, {0, 2, 8}}, {2, {8, 3}}}};
    for (int p = 0; p < N_ARR(pairs); p++)
        for (int t = 0; t < N_ARR(contrib_dts); t++)
            for (int b = 0; b < 2; b++) {
                int64_t nd[1] = {pairs[p][1].d[1]};
                kn_tensor *in[3] = {rand_tensor(contrib_dts[t], pairs[p][0].nd, pairs[p][0].d, R_ANY),
                                    rand_tensor(contrib_dts[t], pairs[p][1].nd, pairs[p][1].d, R_ANY),
                                    b ? rand_tensor(contrib_dts[t], 1, nd, R_ANY) : NULL};
                run1(KN_OP_MsGemmFastGelu, 1, NULL, 0, in, b ? 3 : 2, 1);
            }
    for (int t = 0; t < N_ARR(contrib_dts); t++)
        for (int c = 0; c < 2; c++) {
            int64_t ad[2] = {9, 17}, bd[2] = {17, 6}, cd[2] = {1, 6};
            kn_attr at[2] = {af("alpha", 0.5f), af("beta", 1.0f)};
            kn_tensor *in[3] = {rand_tensor(contrib_dts[t], 2, ad, R_ANY), rand_tensor(contrib_dts[t], 2, bd, R_ANY),
                                c ? rand_tensor(contrib_dts[t], 2, cd, R_ANY)
                                  : rand_tensor(contrib_dts[t], 1, cd + 1, R_ANY)};
            run1(KN_OP_Gemm, 13, at, 2, in, 3, 1);
        }
}

/* int8 quantisation (exact): QuantizeLinear and DequantizeLinear per tensor, per axis and blocked,
 * 8-, 16- and 4-bit targets with and without zero points, float32/float16/bfloat16 sides;
 * DynamicQuantizeLinear over ranges of both signs, one sign, constant and empty; MatMulInteger with
 * unsigned and signed operands, no, scalar, per-row and per-column zero points, broadcast batches. */
static kn_tensor *qint_tensor(kn_dtype dt, int nd, const int64_t *dims) {
    kn_tensor *t = NULL;
    kn_tensor_new(dt, nd, dims, &t);
    int64_t lo = 0, span = 256;
    switch (dt) {
    case KN_I8: lo = -128; break;
    case KN_U16: span = 65536; break;
    case KN_I16: lo = -32768, span = 65536; break;
    case KN_U4: span = 16; break;
    case KN_I4: lo = -8, span = 16; break;
    default: break;
    }
    for (int64_t i = 0; i < kn_numel(t); i++) kn_set_f64(t, i, (double)(lo + (int64_t)(rnd() % (uint64_t)span)));
    return t;
}
static void test_contrib_quant(void) {
    static const kn_dtype qts[] = {KN_U8, KN_I8, KN_U16, KN_I16, KN_U4, KN_I4};
    int64_t xd[3] = {2, 6, 5}, sd1[1] = {6}, sdb[3] = {2, 2, 5}, s0[1] = {1};
    for (int t = 0; t < N_ARR(contrib_dts); t++)
        for (int q = 0; q < N_ARR(qts); q++)
            for (int form = 0; form < 4;
                 form++) { /* per tensor, per tensor without zp, per axis 1, blocked 4 on axis 1 */
                kn_dtype ft = contrib_dts[t], st = contrib_dts[(t + q) % 3];
                bool zp = form != 1;
                const int64_t *sdims = form >= 2 ? (form == 2 ? sd1 : sdb) : s0;
                int snd = form == 3 ? 3 : form == 2 ? 1 : 0;
                kn_attr at[3] = {ai("axis", 1), ai("block_size", form == 3 ? 4 : 0),
                                 ai("output_dtype", zp ? 0 : (int64_t)qts[q])};
                kn_tensor *in[3] = {rand_tensor(ft, 3, xd, R_ANY), small_tensor(st, snd, sdims, 0.01, 0.05),
                                    zp ? qint_tensor(qts[q], snd, sdims) : NULL};
                run1(KN_OP_QuantizeLinear, 21, at, 3, in, zp ? 3 : 2, 1);
                kn_tensor *dn[3] = {qint_tensor(qts[q], 3, xd), small_tensor(ft, snd, sdims, 0.01, 0.5),
                                    zp ? qint_tensor(qts[q], snd, sdims) : NULL};
                run1(KN_OP_DequantizeLinear, 21, at, 2, dn, zp ? 3 : 2, 1);
            }
    static const shp dq_shapes[] = {{2, {3, 5}}, {3, {2, 7, 300}}, {1, {1}}, {1, {0}}, {2, {40, 129}}};
    for (int sh = 0; sh < N_ARR(dq_shapes); sh++)
        for (int r = 0; r < 4; r++) { /* both signs, positive, negative, constant */
            kn_tensor *x = rand_tensor(KN_F32, dq_shapes[sh].nd, dq_shapes[sh].d, R_ANY);
            for (int64_t i = 0; i < kn_numel(x); i++) {
                float *v = (float *)x->data + i;
                if (r == 1) *v = fabsf(*v) + 0.5f;
                if (r == 2) *v = -fabsf(*v) - 0.25f;
                if (r == 3) *v = 1.75f;
            }
            kn_tensor *in[1] = {x};
            run1(KN_OP_DynamicQuantizeLinear, 11, NULL, 0, in, 1, 3);
        }
    static const shp pairs[][2] = {{{2, {3, 4}}, {2, {4, 5}}},     {{3, {2, 7, 13}}, {2, {13, 9}}},
                                   {{2, {70, 33}}, {2, {33, 66}}}, {{4, {2, 1, 3, 4}}, {3, {3, 4, 5}}},
                                   {{1, {6}}, {2, {6, 4}}},        {{2, {0, 4}}, {2, {4, 3}}}};
    static const kn_dtype i8s[2] = {KN_U8, KN_I8};
    for (int p = 0; p < N_ARR(pairs); p++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int z = 0; z < 3; z++) { /* none, scalars, per row of A / column of B */
                    const shp *A = &pairs[p][0], *B = &pairs[p][1];
                    int64_t M[1] = {A->nd == 1 ? 1 : A->d[A->nd - 2]}, N[1] = {B->d[B->nd - 1]};
                    kn_tensor *in[4] = {qint_tensor(i8s[ta], A->nd, A->d), qint_tensor(i8s[tb], B->nd, B->d), NULL,
                                        NULL};
                    if (z == 1) {
                        in[2] = qint_tensor(i8s[ta], 0, M);
                        in[3] = qint_tensor(i8s[tb], 0, N);
                    } else if (z == 2) {
                        in[2] = qint_tensor(i8s[ta], 1, M);
                        in[3] = qint_tensor(i8s[tb], 1, N);
                    }
                    run1(KN_OP_MatMulInteger, 10, NULL, 0, in, z ? 4 : 2, 1);
                }
}

/* GatherBlockQuantized with an index outside data's gather dim: the run fails naming the node (the
 * kernel zeroes the element and sets the stream's error word), and a later in-range run on the
 * recycled stream is clean. */
static void test_contrib_gbq_out_of_range(void) {
    op_stats *S = &stats[KN_OP_MsGatherBlockQuantized];
    for (int bad = 1; bad >= 0; bad--) {
        S->cases++;
        int64_t dd[2] = {5, 16}, sd[2] = {5, 1}, idn = 2, yd[2] = {2, 32};
        kn_tensor *data = bytes_tensor(2, dd), *sc = small_tensor(KN_F32, 2, sd, 0.1, 0.2), *ix = NULL;
        kn_tensor_new(KN_I64, 1, &idn, &ix);
        kn_set_i64(ix, 0, 1);
        kn_set_i64(ix, 1, bad ? 5 : -5);
        kn_attr at[4] = {ai("bits", 4), ai("block_size", 32), ai("gather_axis", 0), ai("quantize_axis", 1)};
        kn_node node = {0};
        node.name = (char *)"gbq_oob";
        node.op_type = (char *)"GatherBlockQuantized";
        node.domain = (char *)"com.microsoft";
        node.op = KN_OP_MsGatherBlockQuantized;
        node.opset = 1;
        node.n_attrs = 4;
        node.attrs = at;
        node.n_inputs = 3;
        kn_status_free(kn_node_decode_params(&node));
        const kn_tensor *host[3] = {data, ix, sc};
        kn_tensor dt[3], ty = {0};
        const kn_tensor *din[3];
        for (int k = 0; k < 3; k++) {
            dt[k] = *host[k];
            dt[k].data = cu->alloc(cu, kn_nbytes(host[k]));
            dt[k].device = KN_DEVICE_CUDA;
            dt[k].owns = false;
            kn_status_free(cu->copy(cu, dt[k].data, KN_DEVICE_CUDA, host[k]->data, KN_DEVICE_CPU, kn_nbytes(host[k])));
            din[k] = &dt[k];
        }
        ty.kind = KN_KIND_TENSOR;
        ty.dtype = KN_F32;
        ty.ndim = 2;
        ty.dims[0] = yd[0];
        ty.dims[1] = yd[1];
        ty.data = cu->alloc(cu, 2 * 32 * sizeof(float));
        ty.device = KN_DEVICE_CUDA;
        kn_tensor *dout[1] = {&ty};
        kn_scratch scratch = {0};
        kn_exec_ctx ctx = {.backend = cu, .scratch_alloc = kn_scratch_alloc_impl, .scratch_state = &scratch};
        char why[512] = "";
        kn_status *st = cu->stream_begin(cu, &ctx.stream);
        if (st) snprintf(why, sizeof why, "stream_begin: %s", kn_status_message(st));
        else {
            kn_status *k = cu->kernel(cu, KN_OP_MsGatherBlockQuantized)(&ctx, &node, din, 3, dout, 1);
            st = cu->stream_end(cu, ctx.stream);
            if (k && !st) st = k;
            else kn_status_free(k);
            if (bad && !st) snprintf(why, sizeof why, "an out-of-range index gave no error");
            else if (bad && !strstr(kn_status_message(st), "gbq_oob"))
                snprintf(why, sizeof why, "the error does not name the node: %s", kn_status_message(st));
            else if (!bad && st) snprintf(why, sizeof why, "in range after a failure: %s", kn_status_message(st));
        }
        kn_status_free(st);
        if (why[0]) {
            S->failed++;
            printf("FAIL GatherBlockQuantized out of range (%s index): %s\n", bad ? "bad" : "good", why);
        } else {
            S->passed++;
        }
        for (int k = 0; k < 3; k++) cu->free(cu, dt[k].data);
        cu->free(cu, ty.data);
        kn_scratch_release(&scratch);
        free(node.params);
        kn_tensor_free(data);
        kn_tensor_free(sc);
        kn_tensor_free(ix);
    }
}

/* QLinearMatMul (exact): MatMulInteger's shapes and operand types with scalar or per-row/column
 * scales and zero points, uint8 and int8 outputs (saturating). */
static void test_contrib_qlinear_matmul(void) {
    static const shp pairs[][2] = {{{2, {3, 4}}, {2, {4, 5}}},
                                   {{3, {2, 7, 13}}, {2, {13, 9}}},
                                   {{2, {70, 33}}, {2, {33, 66}}},
                                   {{4, {2, 1, 3, 4}}, {3, {3, 4, 5}}}};
    static const kn_dtype i8s[2] = {KN_U8, KN_I8};
    for (int p = 0; p < N_ARR(pairs); p++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int form = 0; form < 2; form++) { /* scalars; per row of A / column of B */
                    const shp *A = &pairs[p][0], *B = &pairs[p][1];
                    int64_t M[1] = {A->d[A->nd - 2]}, N[1] = {B->d[B->nd - 1]}, one[1] = {1};
                    kn_dtype yt = i8s[(ta + tb + form) & 1];
                    kn_tensor *in[8] = {qint_tensor(i8s[ta], A->nd, A->d),
                                        small_tensor(KN_F32, form, form ? M : one, 0.01, 0.05),
                                        qint_tensor(i8s[ta], form, form ? M : one),
                                        qint_tensor(i8s[tb], B->nd, B->d),
                                        small_tensor(KN_F32, form, form ? N : one, 0.01, 0.05),
                                        qint_tensor(i8s[tb], form, form ? N : one),
                                        small_tensor(KN_F32, 0, one, 0.5, 2.0),
                                        qint_tensor(yt, 0, one)};
                    run1(KN_OP_QLinearMatMul, form ? 21 : 10, NULL, 0, in, 8, 1);
                }
}

/* cucover: ONNX RMSNormalization (opset 23): axis -1 and 1 (and -2 on rank 3), X and scale of one
 * float type, default and small epsilon. */
static void test_cucover_rmsnorm(void) {
    static const shp shapes[] = {{2, {3, 16}}, {3, {2, 5, 96}}, {3, {1, 3, 1000}}, {2, {1, 1}}, {3, {0, 2, 8}}};
    for (int sh = 0; sh < N_ARR(shapes); sh++)
        for (int t = 0; t < N_ARR(contrib_dts); t++)
            for (int form = 0; form < 3; form++) {
                const shp *S = &shapes[sh];
                int axis = form == 1 && S->nd == 3 ? 1 : form == 2 ? -2 : -1;
                int a = axis < 0 ? S->nd + axis : axis, nsd = S->nd - a;
                int64_t sd[6];
                for (int i = 0; i < nsd; i++) sd[i] = S->d[a + i];
                kn_dtype xt = contrib_dts[t];
                kn_tensor *in[2] = {rand_tensor(xt, S->nd, S->d, R_ANY), rand_tensor(xt, nsd, sd, R_ANY)};
                kn_attr at[2] = {ai("axis", axis), af("epsilon", form == 0 ? 1e-5f : 1e-6f)};
                run1(KN_OP_RMSNormalization, 23, at, 2, in, 2, 1);
            }
}

/* fusedgemm: com.microsoft FusedGemm. ReLU rides in cuBLASLt's RELU_BIAS (C a bias row, beta 1) or
 * RELU epilogue (C of another form, copied into Y and accumulated; or no C); the other activations
 * are a pass over Y after the GEMM. Every activation over two shapes, and ReLU over every C form
 * and transposition, in float32, float16 and bfloat16 (tolerance: the accumulating ops'; a 16-bit
 * output of the other activations is rounded twice, after the GEMM and after the activation). */
static void test_fusedgemm(void) {
    static const struct {
        const char *name;
        float a, b, g;
    } acts[] = {{"Relu", 0, 0, 0},
                {"LeakyRelu", 0.2f, 0, 0},
                {"Sigmoid", 0, 0, 0},
                {"Tanh", 0, 0, 0},
                {"HardSigmoid", 0.3f, 0.4f, 0},
                {"Elu", 0.7f, 0, 0},
                {"Selu", 1.5f, 0, 2.0f},
                {"Celu", 0.6f, 0, 0},
                {"Softplus", 0, 0, 0},
                {"Softsign", 0, 0, 0},
                {"ThresholdedRelu", 0.3f, 0, 0},
                {"ParametricSoftplus", 0.5f, 1.5f, 0},
                {"ScaledTanh", 0.8f, 1.3f, 0},
                {"Clip", -0.5f, 0.75f, 0}};
    static const int64_t mkn[][3] = {{3, 4, 5}, {33, 65, 17}};
    /* C: 0 none, 1 [N], 2 [1, N], 3 [M, 1], 4 [M, N], 5 scalar */
    for (int ac = 0; ac < N_ARR(acts); ac++)
        for (int sh = 0; sh < 2; sh++)
            for (int t = 0; t < N_ARR(contrib_dts); t++) {
                int64_t M = mkn[sh][0], K = mkn[sh][1], N = mkn[sh][2];
                bool ta = (ac + sh) & 1, tb = ((ac + sh) >> 1) & 1;
                int cf = (ac + sh + t) % 6;
                int64_t ad[2] = {ta ? K : M, ta ? M : K}, bd[2] = {tb ? N : K, tb ? K : N};
                int64_t cd[2] = {cf == 3 || cf == 4 ? M : 1, cf == 3 ? 1 : N};
                kn_tensor *c = cf == 0 ? NULL
                    : cf == 1          ? rand_tensor(contrib_dts[t], 1, cd + 1, R_ANY)
                    : cf == 5          ? rand_tensor(contrib_dts[t], 0, cd, R_ANY)
                                       : rand_tensor(contrib_dts[t], 2, cd, R_ANY);
                kn_tensor *in[3] = {rand_tensor(contrib_dts[t], 2, ad, R_ANY),
                                    rand_tensor(contrib_dts[t], 2, bd, R_ANY), c};
                kn_attr at[9] = {astr("activation", acts[ac].name),
                                 af("activation_alpha", acts[ac].a),
                                 af("activation_beta", acts[ac].b),
                                 af("activation_gamma", acts[ac].g),
                                 ai("transA", ta),
                                 ai("transB", tb),
                                 af("alpha", sh ? 0.5f : 1.0f),
                                 af("beta", sh && cf != 1 ? 2.0f : 1.0f)};
                run1(KN_OP_MsFusedGemm, 1, at, 8, in, c ? 3 : 2, 1);
            }
    for (int cf = 0; cf < 6; cf++)
        for (int tr = 0; tr < 4; tr++)
            for (int t = 0; t < N_ARR(contrib_dts); t++) {
                int64_t M = 9, K = 17, N = 6;
                bool ta = tr & 1, tb = tr >> 1;
                int64_t ad[2] = {ta ? K : M, ta ? M : K}, bd[2] = {tb ? N : K, tb ? K : N};
                int64_t cd[2] = {cf == 3 || cf == 4 ? M : 1, cf == 3 ? 1 : N};
                kn_tensor *c = cf == 0 ? NULL
                    : cf == 1          ? rand_tensor(contrib_dts[t], 1, cd + 1, R_ANY)
                    : cf == 5          ? rand_tensor(contrib_dts[t], 0, cd, R_ANY)
                                       : rand_tensor(contrib_dts[t], 2, cd, R_ANY);
                kn_tensor *in[3] = {rand_tensor(contrib_dts[t], 2, ad, R_ANY),
                                    rand_tensor(contrib_dts[t], 2, bd, R_ANY), c};
                kn_attr at[4] = {astr("activation", "Relu"), ai("transA", ta), ai("transB", tb),
                                 af("alpha", tr == 3 ? -0.75f : 1.0f)};
                run1(KN_OP_MsFusedGemm, 1, at, 4, in, c ? 3 : 2, 1);
            }
}

/* devgreedy: kn_backend.greedy, text generation's argmax on the device, against the CPU
 * generator's scan (best = 0, then i wherever x[i] > x[best]) over vocabularies around the
 * kernel's chunk (4096) and block (256) sizes up to Qwen2's 151936, rows at scattered offsets,
 * ties (the lowest id wins, across chunks too), NaN (never chosen; at id 0 it wins), -inf and +inf
 * rows, and the repetition penalty (distinct ids, some out of range) applied in place on the
 * device bit for bit as the CPU applies it. Selected by "greedy" on the command line. */
static bool greedy_only;
static op_stats greedy_stats;
static int32_t greedy_ref(const float *x, int64_t V) {
    int64_t best = 0;
    for (int64_t i = 1; i < V; i++)
        if (x[i] > x[best]) best = i;
    return (int32_t)best;
}
static void greedy_case(int64_t V, int rows, int kind, float penalty) {
    greedy_stats.cases++;
    int64_t slack = 3 * V + 17, n = (int64_t)rows * slack;
    float *h = malloc(sizeof(float) * (size_t)n), *back = malloc(sizeof(float) * (size_t)n);
    int64_t off[8];
    int32_t ids[8] = {0}, want[8] = {0}, pen_off[9] = {0}, pen_ids[8 * 12] = {0};
    int np = 0;
    for (int64_t i = 0; i < n; i++) h[i] = (float)urand(-4.0, 4.0);
    pen_off[0] = 0;
    for (int r = 0; r < rows; r++) {
        off[r] = (int64_t)r * slack + (int64_t)(rnd() % (uint64_t)(2 * V + 18));
        float *x = h + off[r];
        int64_t a = (int64_t)(rnd() % (uint64_t)V), b2 = (int64_t)(rnd() % (uint64_t)V);
        switch ((kind + r) % 6) {
        case 1: x[a] = x[b2] = 9.0f; break; /* a tie: the lower id */
        case 2:                             /* NaNs around a maximum, never chosen */
            x[a] = 9.0f;
            for (int k = 0; k < 9; k++) x[rnd() % (uint64_t)V] = NAN;
            if (!isnan(x[a]) && V > 1) x[V - 1] = NAN;
            break;
        case 3: x[0] = NAN; break; /* the scan's best stays id 0 */
        case 4:
            for (int64_t i = 0; i < V; i++) x[i] = -INFINITY; /* all -inf: id 0 */
            break;
        case 5: x[a] = INFINITY, x[V - 1] = INFINITY; break;
        default: break;
        }
        if (penalty != 1.0f) {
            int64_t cand[12] = {a, b2, 0, V - 1, -1, V, V / 2, V / 3, (V * 2) / 3, 1, 5, V + 3};
            for (int k = 0; k < 12; k++) {
                bool dup = false;
                for (int j = pen_off[r]; j < np; j++) dup |= pen_ids[j] == cand[k];
                if (!dup) pen_ids[np++] = (int32_t)cand[k];
            }
        }
        pen_off[r + 1] = np;
    }
    void *d = cu->alloc(cu, sizeof(float) * (size_t)n);
    kn_status *st = d ? cu->copy(cu, d, KN_DEVICE_CUDA, h, KN_DEVICE_CPU, sizeof(float) * (size_t)n)
                      : kn_error(KN_ERR_OUT_OF_MEMORY, "alloc");
    if (!st)
        st = cu->greedy(cu, d, rows, off, V, penalty != 1.0f ? pen_ids : NULL, penalty != 1.0f ? pen_off : NULL,
                        penalty, ids);
    if (!st) st = cu->copy(cu, back, KN_DEVICE_CPU, d, KN_DEVICE_CUDA, sizeof(float) * (size_t)n);
    bool ok = !st;
    for (int r = 0; r < rows && ok; r++) {
        float *x = h + off[r];
        for (int j = pen_off[r]; j < pen_off[r + 1]; j++) /* gen_pick's penalty */
            if (pen_ids[j] >= 0 && pen_ids[j] < V) {
                float *v = &x[pen_ids[j]];
                *v = *v < 0 ? *v * penalty : *v / penalty;
            }
        want[r] = greedy_ref(x, V);
        ok = ids[r] == want[r];
    }
    /* the penalised logits in place, the rest untouched: bit for bit */
    for (int64_t i = 0; i < n && ok; i++) ok = !memcmp(&h[i], &back[i], sizeof(float));
    if (ok) greedy_stats.passed++;
    else {
        greedy_stats.failed++;
        printf("FAIL greedy V=%lld rows=%d kind=%d penalty=%g: %s", (long long)V, rows, kind, (double)penalty,
               st ? kn_status_message(st) : "");
        for (int r = 0; r < rows && !st; r++) printf(" [row %d: %d want %d]", r, ids[r], want[r]);
        printf("\n");
    }
    if (verbose && ok)
        printf("ok greedy V=%lld rows=%d kind=%d penalty=%g\n", (long long)V, rows, kind, (double)penalty);
    kn_status_free(st);
    if (d) cu->free(cu, d);
    free(h), free(back);
}
static void test_devgreedy(void) {
    if (only_some && !greedy_only) return;
    if (!cu->greedy) {
        printf("FAIL greedy: the CUDA backend has no greedy entry point\n");
        greedy_stats.cases++, greedy_stats.failed++;
        return;
    }
    static const int64_t vs[] = {1, 2, 31, 255, 256, 257, 4095, 4096, 4097, 8193, 50257, 151936};
    for (size_t k = 0; k < sizeof vs / sizeof vs[0]; k++) {
        int big = vs[k] > 10000;
        for (int kind = 0; kind < 6; kind++) greedy_case(vs[k], big ? (kind % 2 ? 1 : 4) : 1 + kind % 4, kind, 1.0f);
        greedy_case(vs[k], big ? 2 : 5, 2, 1.3f);
        greedy_case(vs[k], 3, 4, 0.7f);
    }
    /* bad input: a vocabulary of 0 is an error, not a crash */
    int32_t id = -1;
    int64_t off0 = 0;
    void *d = cu->alloc(cu, 16);
    kn_status *st = cu->greedy(cu, d, 1, &off0, 0, NULL, NULL, 1.0f, &id);
    greedy_stats.cases++;
    if (st && id == -1) greedy_stats.passed++;
    else greedy_stats.failed++, printf("FAIL greedy: vocab 0 was not refused\n");
    kn_status_free(st);
    cu->free(cu, d);
}

/* kn_backend.topk (device sampling's candidates): each row's k best in the CPU sampler's order
 * (value descending, id ascending; ties across chunks), the NaN flag of rows holding one, the
 * penalty in place as for greedy. */
static int topk_ref_cmp(const void *a, const void *b) {
    const float *x = a, *y = b; /* pairs (value, id as float bits) */
    if (x[0] != y[0]) return x[0] > y[0] ? -1 : 1;
    int32_t i, j;
    memcpy(&i, &x[1], 4), memcpy(&j, &y[1], 4);
    return i < j ? -1 : i > j;
}
static void topk_case(int64_t V, int rows, int k, int kind, float penalty) {
    greedy_stats.cases++;
    int64_t slack = 2 * V + 5, n = (int64_t)rows * slack;
    float *h = malloc(sizeof(float) * (size_t)n), *pairs = malloc(sizeof(float) * 2 * (size_t)V);
    float *vals = malloc(sizeof(float) * (size_t)rows * (size_t)k);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)rows * (size_t)k);
    int64_t off[8];
    uint8_t nan[8] = {0};
    int32_t pen_off[9] = {0}, pen_ids[8 * 4] = {0};
    int np = 0;
    for (int64_t i = 0; i < n; i++) h[i] = (float)(int)urand(-6.0, 6.0) * 0.5f; /* many ties */
    for (int r = 0; r < rows; r++) {
        off[r] = (int64_t)r * slack + (int64_t)(rnd() % (uint64_t)(V + 6));
        float *x = h + off[r];
        if ((kind + r) % 3 == 1) x[rnd() % (uint64_t)V] = NAN;
        if ((kind + r) % 3 == 2) x[V - 1] = INFINITY, x[0] = -INFINITY;
        if (penalty != 1.0f) {
            int32_t c[4] = {0, (int32_t)(V / 2), (int32_t)(V - 1), -1};
            for (int q = 0; q < 4; q++) {
                bool dup = false;
                for (int j = pen_off[r]; j < np; j++) dup |= pen_ids[j] == c[q];
                if (!dup) pen_ids[np++] = c[q];
            }
        }
        pen_off[r + 1] = np;
    }
    void *d = cu->alloc(cu, sizeof(float) * (size_t)n);
    kn_status *st = d ? cu->copy(cu, d, KN_DEVICE_CUDA, h, KN_DEVICE_CPU, sizeof(float) * (size_t)n)
                      : kn_error(KN_ERR_OUT_OF_MEMORY, "alloc");
    if (!st)
        st = cu->topk(cu, d, rows, off, V, penalty != 1.0f ? pen_ids : NULL, penalty != 1.0f ? pen_off : NULL, penalty,
                      k, vals, ids, nan);
    bool ok = !st;
    for (int r = 0; r < rows && ok; r++) {
        float *x = h + off[r];
        for (int j = pen_off[r]; j < pen_off[r + 1]; j++)
            if (pen_ids[j] >= 0 && pen_ids[j] < V)
                x[pen_ids[j]] = x[pen_ids[j]] < 0 ? x[pen_ids[j]] * penalty : x[pen_ids[j]] / penalty;
        int m = 0, has_nan = 0;
        for (int64_t i = 0; i < V; i++) {
            if (isnan(x[i])) {
                has_nan = 1;
                continue;
            }
            int32_t id = (int32_t)i;
            pairs[2 * m] = x[i];
            memcpy(&pairs[2 * m + 1], &id, 4);
            m++;
        }
        ok = nan[r] == has_nan;
        if (has_nan || !ok) continue;
        qsort(pairs, (size_t)m, 2 * sizeof(float), topk_ref_cmp);
        for (int j = 0; j < k && ok; j++) {
            int32_t id;
            memcpy(&id, &pairs[2 * j + 1], 4);
            ok = ids[(size_t)r * (size_t)k + (size_t)j] == id &&
                !memcmp(&vals[(size_t)r * (size_t)k + (size_t)j], &pairs[2 * j], 4);
        }
    }
    if (ok) greedy_stats.passed++;
    else {
        greedy_stats.failed++;
        printf("FAIL topk V=%lld rows=%d k=%d kind=%d penalty=%g %s\n", (long long)V, rows, k, kind, (double)penalty,
               st ? kn_status_message(st) : "");
    }
    kn_status_free(st);
    if (d) cu->free(cu, d);
    free(h), free(pairs), free(vals), free(ids);
}
static void test_devgreedy_topk(void) {
    if ((only_some && !greedy_only) || !cu->topk) return;
    static const int64_t vs[] = {1, 40, 257, 4097, 9000};
    static const int ks[] = {1, 7, 40, 82, 256};
    for (size_t a = 0; a < sizeof vs / sizeof vs[0]; a++)
        for (size_t b = 0; b < sizeof ks / sizeof ks[0]; b++) {
            if (ks[b] > vs[a]) continue;
            topk_case(vs[a], 1 + (int)(b % 3), ks[b], (int)(a + b), b == 2 ? 1.3f : 1.0f);
        }
    topk_case(151936, 1, 82, 0, 1.0f);
    /* bad input: k above KN_TOPK_MAX or the vocabulary is refused */
    float v;
    int32_t id;
    uint8_t nf;
    int64_t off0 = 0;
    void *d = cu->alloc(cu, 64);
    kn_status *st = cu->topk(cu, d, 1, &off0, 4, NULL, NULL, 1.0f, 5, &v, &id, &nf);
    greedy_stats.cases++;
    if (st) greedy_stats.passed++;
    else greedy_stats.failed++, printf("FAIL topk: k 5 over a vocabulary of 4 was not refused\n");
    kn_status_free(st);
    cu->free(cu, d);
}

/* KnSdpa with a past read in place (inputs 4 and 5, kernels/cuda/attention.cu's two-source tile
 * loads): decode steps (S = T = 1) and prompts after a past, P = 0, P and P + T off the key tiles
 * (32 for float32, 64 / 32 for the mma path), GQA, causal (queries after the P past positions),
 * key padding and random biases over P + T keys, the logsumexp output; all three dtypes, against
 * the CPU kernel's own two-part read (its concatenating path when P = 0). */
static void test_sdpa_past(void) {
    static const sdpa_case_t cases[] = {
        /* B Hq Hkv  S  T  Dk   Dv bias causal lse scale past P */
        {1, 2, 2, 1, 1, 64, 64, 0, 0, 0, 0, 1, 7},    {4, 4, 1, 1, 1, 64, 64, 1, 1, 1, 0, 1, 64},
        {2, 4, 2, 1, 1, 32, 32, 2, 1, 0, 0, 1, 129},  {2, 2, 2, 5, 5, 64, 64, 0, 1, 1, 0, 1, 0},
        {3, 6, 2, 7, 7, 80, 80, 4, 1, 1, 0, 1, 33},   {1, 2, 1, 3, 3, 20, 20, 3, 0, 0, 0.3f, 1, 31},
        {2, 2, 2, 1, 1, 128, 128, 5, 0, 0, 0, 1, 65}, {1, 4, 2, 9, 9, 32, 64, 1, 1, 1, 0, 1, 70},
    };
    kn_dtype dts[3] = {KN_F32, KN_F16, KN_BF16};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int d = 0; d < 3; d++) sdpa_case(dts[d], cases[i]);
    if (op_selected(KN_OP_KnSdpa))
        printf("KnSdpa (with past) max |diff| output / logsumexp, all cases so far: float32 %.3g / %.3g, float16 "
               "%.3g / %.3g, bfloat16 %.3g / %.3g\n",
               sdpa_worst_y[0], sdpa_worst_lse[0], sdpa_worst_y[1], sdpa_worst_lse[1], sdpa_worst_y[2],
               sdpa_worst_lse[2]);
}

int main(int argc, char **argv) {
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "-v") == 0) {
            verbose = 1;
            continue;
        }
        if (strstr(argv[a], "greedy")) greedy_only = only_some = true; /* test_devgreedy */
        for (int op = 0; op < KN_OP_COUNT; op++) {
            size_t l = strlen(kn_op_table[op].name);
            for (const char *p = strstr(argv[a], kn_op_table[op].name); p; p = strstr(p + 1, kn_op_table[op].name))
                if ((p == argv[a] || p[-1] == ',') && (p[l] == 0 || p[l] == ',')) only[op] = only_some = true;
        }
    }
    kn_status *st = kn_backend_get(KN_DEVICE_CUDA, 0, &cu);
    if (st) {
        printf("skipped: no CUDA device (%s)\n", kn_status_message(st));
        kn_status_free(st);
        return 77;
    }
    test_unary();
    test_binary();
    test_cast();
    test_matmul();
    test_rows();
    test_reduce();
    test_shape_ops();
    test_inplace();
    test_split_omitted();
    test_cast_big_ints();
    if (op_selected(KN_OP_Gather)) test_gather_out_of_range();
    test_embed_ln();
    if (op_selected(KN_OP_MsEmbedLayerNormalization)) test_embed_ln_out_of_range();
    if (op_selected(KN_OP_Add)) test_weights();
    test_grad_ops();
    if (op_selected(KN_OP_KnGatherGrad)) test_gather_grad_out_of_range();
    test_cuconv_conv();
    test_cuconv_convt();
    test_cuconv_pool();
    test_cuconv_batchnorm();
    test_cuconv_resize();
    test_sdpa();
    test_ms_attention();
    test_gqa();
    test_rope();
    test_cuops_misc();
    test_cuops_index();
    test_cuops_reduce();
    test_cuops_rnn();
    test_cuops_bits();
    test_contrib_gelu();
    test_contrib_skipnorm();
    test_contrib_rmsnorm();
    test_contrib_nbits();
    test_contrib_gbq();
    test_contrib_gemm_epilogue();
    test_contrib_quant();
    test_contrib_gbq_out_of_range();
    test_contrib_qlinear_matmul();
    test_cucover_rmsnorm();
    test_fusedgemm();
    test_devgreedy();
    test_devgreedy_topk();
    test_sdpa_past();
    int total_fail = 0, total = 0, untested = 0;
    printf("\n%-22s %7s %7s %7s %12s\n", "op", "cases", "passed", "failed", "max |diff|");
    for (int op = 0; op < KN_OP_COUNT; op++) {
        if (!cu->kernel(cu, op) || !op_selected(op)) continue;
        op_stats *S = &stats[op];
        printf("%-22s %7d %7d %7d %12.3g%s\n", kn_op_table[op].name, S->cases, S->passed, S->failed, S->worst,
               S->cases ? "" : "  (no test cases: FAIL)");
        total += S->cases;
        total_fail += S->failed;
        if (!S->cases) untested++;
    }
    if (greedy_stats.cases) { /* kn_backend.greedy, not an op */
        printf("%-22s %7d %7d %7d\n", "(greedy)", greedy_stats.cases, greedy_stats.passed, greedy_stats.failed);
        total += greedy_stats.cases;
        total_fail += greedy_stats.failed;
    }
    printf("\nskipped (no CUDA kernel; these run on the CPU):");
    int col = 0;
    for (int op = 0; op < KN_OP_COUNT; op++)
        if (!cu->kernel(cu, op)) printf("%s%s", col++ % 12 ? " " : "\n  ", kn_op_table[op].name);
    printf("\n\n%d cases, %d failed, %d ops with a kernel but no cases\n", total, total_fail, untested);
    return total_fail || untested ? 1 : 0;
}
