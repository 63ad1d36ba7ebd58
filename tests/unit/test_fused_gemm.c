/* Unit tests for com.microsoft FusedGemm (graph/infer_linalg.c decoder and shape rule,
 * kernels/cpu/linalg_misc.c kernel): every activation over several shapes, transA/transB,
 * alpha/beta and every broadcast form of C, in float32, float16 and bfloat16, against a plain
 * double-precision Gemm followed by the activation written here; the activation parameters'
 * defaults; and the load errors (an unknown activation, missing required parameters).
 * tests/contrib_parity.py checks the op end to end against ONNX Runtime. */
#include "tests/unit/harness.h"
#include "tests/unit/rng.h"
#include "runtime/core/dtype.h"
#include <stdio.h>

/* the generator behind every random input here (tests/unit/rng.h) */
static test_rng rng = {777};

typedef struct act_case {
    const char *name;
    int n_params; /* activation_alpha, _beta, _gamma given */
    float a, b, g;
} act_case;

static const act_case acts[] = {
    {"Relu", 0, 0, 0, 0},
    {"LeakyRelu", 1, 0.2f, 0, 0},
    {"Sigmoid", 0, 0, 0, 0},
    {"Tanh", 0, 0, 0, 0},
    {"HardSigmoid", 2, 0.3f, 0.4f, 0},
    {"Elu", 1, 0.7f, 0, 0},
    {"Selu", 3, 1.5f, 0, 2.0f},
    {"Celu", 1, 0.6f, 0, 0},
    {"Softplus", 0, 0, 0, 0},
    {"Softsign", 0, 0, 0, 0},
    {"ThresholdedRelu", 1, 0.4f, 0, 0},
    {"ParametricSoftplus", 2, 0.5f, 1.5f, 0},
    {"ScaledTanh", 2, 0.8f, 1.3f, 0},
    {"Clip", 2, -0.5f, 0.75f, 0},
};
enum { N_ACTS = sizeof acts / sizeof acts[0] };

static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

/* The activations as ONNX (and ONNX Runtime's contrib ops) define them. */
static double act_ref(const char *name, double x, double a, double b, double g) {
    if (!strcmp(name, "Relu")) return x > 0 ? x : 0;
    if (!strcmp(name, "LeakyRelu")) return x < 0 ? a * x : x;
    if (!strcmp(name, "Sigmoid")) return 1.0 / (1.0 + exp(-x));
    if (!strcmp(name, "Tanh")) return tanh(x);
    if (!strcmp(name, "HardSigmoid")) return fmax(0.0, fmin(1.0, a * x + b));
    if (!strcmp(name, "Elu")) return x < 0 ? a * (exp(x) - 1.0) : x;
    if (!strcmp(name, "Selu")) return x > 0 ? g * x : g * (a * exp(x) - a);
    if (!strcmp(name, "Celu")) return fmax(0.0, x) + fmin(0.0, a * (exp(x / a) - 1.0));
    if (!strcmp(name, "Softplus")) return softplus(x);
    if (!strcmp(name, "Softsign")) return x / (1.0 + fabs(x));
    if (!strcmp(name, "ThresholdedRelu")) return x > a ? x : 0;
    if (!strcmp(name, "ParametricSoftplus")) return a * softplus(b * x);
    if (!strcmp(name, "ScaledTanh")) return a * tanh(b * x);
    if (!strcmp(name, "Clip")) return x < a ? a : x > b ? b : x;
    ck_abort_msg("no reference for %s", name);
    return 0;
}

/* The C forms Gemm broadcasts: none, [N], [1, N], [M, 1], [M, N], a scalar. */
enum { C_NONE, C_ROW, C_ROW2, C_COL, C_FULL, C_SCALAR, C_FORMS };

static int c_dims(int form, int64_t M, int64_t N, int64_t *d) {
    switch (form) {
    case C_ROW: d[0] = N; return 1;
    case C_ROW2: d[0] = 1, d[1] = N; return 2;
    case C_COL: d[0] = M, d[1] = 1; return 2;
    case C_FULL: d[0] = M, d[1] = N; return 2;
    default: return 0;
    }
}

static double c_at(const kn_tensor *c, int form, int64_t i, int64_t j) {
    switch (form) {
    case C_ROW:
    case C_ROW2: return kn_get_f64(c, j);
    case C_COL: return kn_get_f64(c, i);
    case C_FULL: return kn_get_f64(c, i * c->dims[1] + j);
    case C_SCALAR: return kn_get_f64(c, 0);
    default: return 0;
    }
}

/* One FusedGemm run against the reference: op(A) M x K, op(B) K x N. */
static void check_one(kn_threadpool *pool, kn_dtype dt, const act_case *ac, int64_t M, int64_t K, int64_t N, bool ta,
                      bool tb, float alpha, float beta, int cform) {
    int64_t da[2] = {ta ? K : M, ta ? M : K}, db[2] = {tb ? N : K, tb ? K : N}, dc[2];
    kn_tensor *a = rng_tensor(&rng, dt, 2, da, 1.0), *b = rng_tensor(&rng, dt, 2, db, 0.5);
    int nc = c_dims(cform, M, N, dc);
    kn_tensor *c = cform == C_NONE ? NULL : rng_tensor(&rng, dt, nc, dc, 1.0);
    double *ref = malloc(sizeof(double) * (size_t)(M * N));
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++)
                s += kn_get_f64(a, ta ? k * M + i : i * K + k) * kn_get_f64(b, tb ? j * K + k : k * N + j);
            double v = alpha * s + (c ? beta * c_at(c, cform, i, j) : 0.0);
            /* the kernel's float32 pre-activation (how Gemm rounds it), then the activation */
            ref[i * N + j] = act_ref(ac->name, (double)(float)v, ac->a, ac->b, ac->g);
        }
    kn_attr at[8];
    int na = 0;
    at[na++] = attr_s("activation", ac->name);
    if (ac->n_params > 0) at[na++] = attr_f("activation_alpha", ac->a);
    if (ac->n_params > 1 && strcmp(ac->name, "Selu")) at[na++] = attr_f("activation_beta", ac->b);
    if (ac->n_params > 2) at[na++] = attr_f("activation_gamma", ac->g);
    at[na++] = attr_i("transA", ta);
    at[na++] = attr_i("transB", tb);
    at[na++] = attr_f("alpha", alpha);
    at[na++] = attr_f("beta", beta);
    kn_tensor *in[3] = {a, b, c}, *out[1];
    kn_status *st = kn_test_run_op(KN_OP_MsFusedGemm, 1, at, na, in, c ? 3 : 2, out, NULL, 1, pool);
    ck_assert_msg(!st, "FusedGemm %s: %s", ac->name, st ? kn_status_message(st) : "");
    ck_assert_int_eq(out[0]->dtype, dt);
    ck_assert_int_eq(out[0]->ndim, 2);
    ck_assert_int_eq(out[0]->dims[0], M);
    ck_assert_int_eq(out[0]->dims[1], N);
    /* float32: the kernel's vector exp/tanh and its summation order (1e-5); 16-bit outputs: one
     * rounding of the float32 result (2^-8 relative for bfloat16, 2^-11 for float16) */
    double tol = dt == KN_F32 ? 1e-5 : dt == KN_F16 ? 1e-3 : 8e-3;
    char what[96];
    snprintf(what, sizeof what, "FusedGemm %s dtype %d M%lld K%lld N%lld t%d%d C%d", ac->name, (int)dt, (long long)M,
             (long long)K, (long long)N, ta, tb, cform);
    expect_close(out[0], ref, M * N, tol, tol, what);
    free_all(out, 1);
    free(ref);
    kn_tensor_free(a);
    kn_tensor_free(b);
    if (c) kn_tensor_free(c);
}

/* every activation, float32, over shapes that take the GEMM's blocked and small paths, threaded */
START_TEST(test_fused_gemm_f32) {
    kn_threadpool *pool = kn_threadpool_create(3);
    static const int64_t shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 33, 9}, {64, 40, 130}};
    for (int ai = 0; ai < N_ACTS; ai++)
        for (int s = 0; s < 4; s++) {
            int v = ai * 4 + s;
            check_one(s & 1 ? pool : NULL, KN_F32, &acts[ai], shapes[s][0], shapes[s][1], shapes[s][2], v & 1,
                      (v >> 1) & 1, s == 2 ? 0.5f : 1.0f, s == 3 ? -1.5f : 1.0f, v % C_FORMS);
        }
    /* every C form with every transposition, on one activation */
    for (int cf = 0; cf < C_FORMS; cf++)
        for (int t = 0; t < 4; t++) check_one(pool, KN_F32, &acts[0], 6, 4, 11, t & 1, t >> 1, 1.25f, 0.75f, cf);
    kn_threadpool_free(pool);
}
END_TEST

START_TEST(test_fused_gemm_half) {
    for (int ai = 0; ai < N_ACTS; ai++) {
        check_one(NULL, KN_F16, &acts[ai], 5, 12, 9, ai & 1, false, 1.0f, 1.0f, C_ROW);
        check_one(NULL, KN_BF16, &acts[ai], 4, 8, 6, false, ai & 1, 0.5f, 2.0f, C_FULL);
    }
}
END_TEST

/* the parameters' defaults are the ONNX ops' (LeakyRelu 0.01, HardSigmoid 0.2/0.5, Selu's two
 * constants); no activation at all is the plain Gemm */
START_TEST(test_fused_gemm_defaults) {
    int64_t d[2] = {1, 4};
    static const double av[4] = {-2.0, -0.5, 0.5, 3.0}, one[1] = {1.0};
    int64_t d1[2] = {1, 1};
    kn_tensor *a = mk(KN_F32, 2, d1, one), *b = mk(KN_F32, 2, d, av);
    static const struct {
        const char *act;
        double want[4];
    } cases[] = {
        {"LeakyRelu", {-0.02, -0.005, 0.5, 3.0}},
        {"HardSigmoid", {0.1, 0.4, 0.6, 1.0}},
        {"Selu", {-1.5201664685, -0.6917581878, 0.5253505111, 3.1521030664}},
        {"Elu", {-0.8646647168, -0.3934693403, 0.5, 3.0}},
        {"ThresholdedRelu", {0, 0, 0, 3.0}},
        {"", {-2.0, -0.5, 0.5, 3.0}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        kn_attr at[1] = {attr_s("activation", cases[k].act)};
        kn_tensor *in[2] = {a, b}, *out[1];
        ck_assert_ptr_null(kn_test_run_op(KN_OP_MsFusedGemm, 1, at, 1, in, 2, out, NULL, 1, NULL));
        expect_close(out[0], cases[k].want, 4, 1e-6, 1e-6, cases[k].act);
        free_all(out, 1);
    }
    kn_tensor_free(a);
    kn_tensor_free(b);
}
END_TEST

/* load errors: an activation FusedGemm does not take, ScaledTanh / ParametricSoftplus without
 * both parameters; run errors: shapes that do not multiply, a C that does not broadcast, an integer
 * type (the op is float-only) */
START_TEST(test_fused_gemm_errors) {
    int64_t d[2] = {2, 3}, d2[2] = {3, 4}, dbad[2] = {4, 4};
    kn_tensor *a = rng_tensor(&rng, KN_F32, 2, d, 1.0), *b = rng_tensor(&rng, KN_F32, 2, d2, 1.0),
              *bb = rng_tensor(&rng, KN_F32, 2, dbad, 1.0);
    kn_tensor *out[1];
    kn_attr bogus[1] = {attr_s("activation", "Bogus")};
    kn_tensor *in[3] = {a, b, NULL};
    kn_status *st = kn_test_run_op(KN_OP_MsFusedGemm, 1, bogus, 1, in, 2, out, NULL, 1, NULL);
    ck_assert_ptr_nonnull(st);
    ck_assert_msg(strstr(kn_status_message(st), "Bogus") != NULL, "%s", kn_status_message(st));
    kn_status_free(st);
    kn_attr st1[2] = {attr_s("activation", "ScaledTanh"), attr_f("activation_alpha", 1.0f)};
    expect_err(kn_test_run_op(KN_OP_MsFusedGemm, 1, st1, 2, in, 2, out, NULL, 1, NULL));
    kn_attr ps[1] = {attr_s("activation", "ParametricSoftplus")};
    expect_err(kn_test_run_op(KN_OP_MsFusedGemm, 1, ps, 1, in, 2, out, NULL, 1, NULL));
    kn_attr relu[1] = {attr_s("activation", "Relu")};
    kn_tensor *in_bad[2] = {a, bb};
    expect_err(kn_test_run_op(KN_OP_MsFusedGemm, 1, relu, 1, in_bad, 2, out, NULL, 1, NULL));
    kn_tensor *cbad = rng_tensor(&rng, KN_F32, 1, d, 1.0), *in_c[3] = {a, b, cbad};
    expect_err(kn_test_run_op(KN_OP_MsFusedGemm, 1, relu, 1, in_c, 3, out, NULL, 1, NULL));
    kn_tensor *ai = mk(KN_I32, 2, d, NULL), *bi = mk(KN_I32, 2, d2, NULL), *in_i[2] = {ai, bi};
    expect_err(kn_test_run_op(KN_OP_MsFusedGemm, 1, relu, 1, in_i, 2, out, NULL, 1, NULL));
    kn_tensor *all[] = {a, b, bb, cbad, ai, bi};
    free_all(all, 6);
}
END_TEST

static Suite *fused_gemm_suite(void) {
    Suite *s = suite_create("fused_gemm");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_fused_gemm_f32);
    tcase_add_test(tc, test_fused_gemm_half);
    tcase_add_test(tc, test_fused_gemm_defaults);
    tcase_add_test(tc, test_fused_gemm_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return kn_test_run_suite(fused_gemm_suite()); }
