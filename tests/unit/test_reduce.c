/* Unit tests for the reduction family: the AVX2/AVX-512 row kernels (reduce, softmax) against
 * the scalar reference over many sizes and special values, and the op kernels end to end through
 * infer + kernel (axes as attribute and as input, negative axes, keepdims, empty tensors and
 * identities, NaN propagation, ArgMax/TopK tie order, CumSum modes). */
#include "tests/unit/harness.h"
#include "kernels/cpu/rows.h"

static const int64_t sizes[] = {0, 1, 7, 8, 15, 16, 17, 33, 384, 1000};
#define NSIZES (int)(sizeof sizes / sizeof sizes[0])

static uint32_t rng_state = 12345;
static float frand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xFFFF) / 65536.0f * 20.0f - 10.0f;
}

typedef void (*rowred_fn)(const float *, float *, int64_t, int64_t, int);
typedef void (*softmax_fn)(const float *, float *, int64_t, int64_t, int);

static int simd_variants(rowred_fn *rf, softmax_fn *sf) {
    int n = 0;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        rf[n] = kn_reduce_rows_f32_avx2;
        sf[n] = kn_softmax_rows_f32_avx2;
        n++;
    }
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq")) {
        rf[n] = kn_reduce_rows_f32_avx512;
        sf[n] = kn_softmax_rows_f32_avx512;
        n++;
    }
    return n;
}

/* special: 0 none, 1 a NaN in the row, 2 a +inf, 3 a -inf */
static void fill_row(float *x, int64_t n, int special) {
    for (int64_t i = 0; i < n; i++) x[i] = frand();
    if (n > 0 && special) {
        int64_t at = (n * 5) / 7;
        x[at] = special == 1 ? NAN : special == 2 ? INFINITY : -INFINITY;
    }
}

START_TEST(test_rowreduce_simd_matches_scalar) {
    rowred_fn rf[2];
    softmax_fn sf[2];
    int nv = simd_variants(rf, sf);
    const int rows = 3;
    /* the scalar reference itself, on any machine */
    const float known[4] = {1, -2, 5, 0.5f};
    float r4[4];
    for (int kind = 0; kind < 4; kind++) kn_reduce_rows_f32_scalar(known, r4 + kind, 1, 4, kind);
    ck_assert(r4[0] == 4.5f && r4[1] == 1.125f && r4[2] == 5 && r4[3] == -2);
    for (int v = 0; v < nv; v++)
        for (int si = 0; si < NSIZES; si++)
            for (int special = 0; special < 4; special++)
                for (int kind = 0; kind < 4; kind++) {
                    int64_t n = sizes[si];
                    float *x = malloc(sizeof(float) * (size_t)(rows * n + 1));
                    for (int r = 0; r < rows; r++) fill_row(x + r * n, n, r == 1 ? special : 0);
                    float ref[3], got[3];
                    kn_reduce_rows_f32_scalar(x, ref, rows, n, kind);
                    rf[v](x, got, rows, n, kind);
                    for (int r = 0; r < rows; r++)
                        ck_assert_msg(close_to(got[r], ref[r], 1e-5f, 1e-3f),
                                      "variant %d kind %d n %lld special %d row %d: %g vs %g", v, kind, (long long)n,
                                      special, r, got[r], ref[r]);
                    if (n > 0 && special == 1) ck_assert(isnan(ref[1]));
                    if (n == 0)
                        ck_assert(kind == 0       ? ref[0] == 0
                                      : kind == 1 ? isnan(ref[0])
                                      : kind == 2 ? ref[0] == -INFINITY
                                                  : ref[0] == INFINITY);
                    free(x);
                }
}
END_TEST

START_TEST(test_softmax_simd_matches_scalar) {
    rowred_fn rf[2];
    softmax_fn sf[2];
    int nv = simd_variants(rf, sf);
    const int rows = 3;
    for (int v = 0; v < nv; v++)
        for (int si = 0; si < NSIZES; si++)
            for (int special = 0; special < 4; special++)
                for (int lg = 0; lg < 2; lg++) {
                    int64_t n = sizes[si];
                    size_t bytes = sizeof(float) * (size_t)(rows * n + 1);
                    float *x = malloc(bytes), *ref = malloc(bytes), *got = malloc(bytes);
                    for (int r = 0; r < rows; r++) fill_row(x + r * n, n, r == 1 ? special : 0);
                    kn_softmax_rows_f32_scalar(x, ref, rows, n, lg);
                    sf[v](x, got, rows, n, lg);
                    for (int64_t i = 0; i < rows * n; i++)
                        ck_assert_msg(close_to(got[i], ref[i], 1e-5f, 1e-6f),
                                      "variant %d log %d n %lld special %d i %lld: %g vs %g", v, lg, (long long)n,
                                      special, (long long)i, got[i], ref[i]);
                    /* in place gives the same answer */
                    memcpy(got, x, bytes);
                    sf[v](got, got, rows, n, lg);
                    for (int64_t i = 0; i < rows * n; i++) ck_assert(close_to(got[i], ref[i], 1e-5f, 1e-6f));
                    if (!lg && special == 0 && n > 0) {
                        double s = 0;
                        for (int64_t i = 0; i < n; i++) s += ref[i];
                        ck_assert(fabs(s - 1.0) < 1e-5);
                    }
                    if (special == 1 && n > 0) ck_assert(isnan(ref[n]));
                    free(x);
                    free(ref);
                    free(got);
                }
}
END_TEST

START_TEST(test_softmax_large_magnitudes_stable) {
    rowred_fn rf[2];
    softmax_fn sf[2];
    int nv = simd_variants(rf, sf);
    float x[40], ref[40], got[40];
    for (int i = 0; i < 40; i++) x[i] = 10000.0f + (float)i; /* naive exp overflows */
    kn_softmax_rows_f32_scalar(x, ref, 1, 40, 0);
    ck_assert(fabsf(ref[39] - 0.632120f) < 1e-4f);
    for (int v = 0; v < nv; v++) {
        sf[v](x, got, 1, 40, 0);
        for (int i = 0; i < 40; i++) ck_assert(close_to(got[i], ref[i], 1e-5f, 1e-7f));
    }
    /* log-softmax must not fold max + log(sum) into one float: at 1e4 that costs ~1e-3 */
    double s = 0;
    for (int i = 0; i < 40; i++) s += exp((double)i - 39);
    double want = -log(s);
    kn_softmax_rows_f32_scalar(x, ref, 1, 40, 1);
    ck_assert(fabs(ref[39] - want) < 1e-5);
    for (int v = 0; v < nv; v++) {
        sf[v](x, got, 1, 40, 1);
        ck_assert_msg(fabs(got[39] - want) < 1e-5, "variant %d: %g vs %g", v, got[39], want);
    }
}
END_TEST

START_TEST(test_reduce_sum_axes_input_negative_keepdims) {
    int64_t d[3] = {2, 3, 4};
    double v[24];
    for (int i = 0; i < 24; i++) v[i] = i;
    int64_t ad[1] = {1};
    double av[1] = {-2};
    kn_tensor *in[2] = {mk(KN_F32, 3, d, v), mk(KN_I64, 1, ad, av)};
    kn_attr at[1] = {attr_i("keepdims", 1)};
    kn_tensor *out[1];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_ReduceSum, 13, at, 1, in, 2, out, NULL, 1, NULL));
    ck_assert_int_eq(out[0]->ndim, 3);
    ck_assert_int_eq(out[0]->dims[1], 1);
    ck_assert_int_eq(out[0]->dims[2], 4);
    /* out[0][0][k] = k + (4+k) + (8+k) */
    ck_assert(fabs(kn_get_f64(out[0], 1) - 15.0) < 1e-6);
    ck_assert(fabs(kn_get_f64(out[0], 4) - (12 + 16 + 20)) < 1e-6);
    free_all(out, 1);
    /* opset 11: axes attribute, keepdims 0 */
    int64_t axes[2] = {0, -1};
    kn_attr at2[2] = {attr_ints("axes", axes, 2), attr_i("keepdims", 0)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_ReduceSum, 11, at2, 2, in, 1, out, NULL, 1, NULL));
    ck_assert_int_eq(out[0]->ndim, 1);
    ck_assert_int_eq(out[0]->dims[0], 3);
    double e0 = 0;
    for (int a = 0; a < 2; a++)
        for (int k = 0; k < 4; k++) e0 += a * 12 + k;
    ck_assert(fabs(kn_get_f64(out[0], 0) - e0) < 1e-6);
    free_all(out, 1);
    free_all(in, 2);
}
END_TEST

START_TEST(test_reduce_empty_axes_and_noop) {
    int64_t d[2] = {2, 3};
    double v[6] = {1, -2, 3, 4, 5, 6};
    int64_t z[1] = {0};
    kn_tensor *in[2] = {mk(KN_F32, 2, d, v), mk(KN_I64, 1, z, NULL)};
    kn_tensor *out[1];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_ReduceMax, 18, NULL, 0, in, 2, out, NULL, 1, NULL));
    ck_assert_int_eq(kn_numel(out[0]), 1);
    ck_assert(kn_get_f64(out[0], 0) == 6);
    free_all(out, 1);
    kn_attr at[1] = {attr_i("noop_with_empty_axes", 1)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_ReduceMax, 18, at, 1, in, 2, out, NULL, 1, NULL));
    ck_assert_int_eq(kn_numel(out[0]), 6);
    ck_assert(kn_get_f64(out[0], 1) == -2);
    free_all(out, 1);
    /* an empty axes tensor without a data pointer is still a known (empty) value */
    kn_tensor no_data = {.dtype = KN_I64, .ndim = 1, .dims = {0}};
    kn_tensor *in2[2] = {in[0], &no_data};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_ReduceSum, 13, NULL, 0, in2, 2, out, NULL, 1, NULL));
    ck_assert_int_eq(kn_numel(out[0]), 1);
    ck_assert(kn_get_f64(out[0], 0) == 17);
    free_all(out, 1);
    free_all(in, 2);
}
END_TEST

/* Reducing an axis of length 0 gives each op's identity. */
START_TEST(test_reduce_empty_set_identities) {
    int64_t d[3] = {2, 0, 4};
    int64_t ad[1] = {1};
    double av[1] = {1};
    kn_tensor *in[2] = {mk(KN_F32, 3, d, NULL), mk(KN_I64, 1, ad, av)};
    struct {
        int op;
        double want;
    } cases[] = {
        {KN_OP_ReduceSum, 0},
        {KN_OP_ReduceProd, 1},
        {KN_OP_ReduceMax, -INFINITY},
        {KN_OP_ReduceMin, INFINITY},
        {KN_OP_ReduceL1, 0},
        {KN_OP_ReduceL2, 0},
        {KN_OP_ReduceSumSquare, 0},
        {KN_OP_ReduceLogSum, -INFINITY},
        {KN_OP_ReduceLogSumExp, -INFINITY},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        kn_tensor *out[1];
        ck_assert_ptr_null(kn_test_run_op(cases[c].op, 18, NULL, 0, in, 2, out, NULL, 1, NULL));
        ck_assert_int_eq(kn_numel(out[0]), 8);
        for (int i = 0; i < 8; i++)
            ck_assert_msg(kn_get_f64(out[0], i) == cases[c].want, "op %s", kn_op_table[cases[c].op].name);
        free_all(out, 1);
    }
    /* an empty kept dim: empty output, nothing to do */
    int64_t d2[2] = {0, 3};
    kn_tensor *in2[2] = {mk(KN_F32, 2, d2, NULL), in[1]};
    kn_tensor *out[1];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_ReduceMean, 18, NULL, 0, in2, 2, out, NULL, 1, NULL));
    ck_assert_int_eq(kn_numel(out[0]), 0);
    free_all(out, 1);
    kn_tensor_free(in2[0]);
    free_all(in, 2);
}
END_TEST

/* The threaded fast path (f32, trailing axes) and the generic path (f64) agree, NaN included. */
START_TEST(test_reduce_fast_path_matches_generic) {
    kn_threadpool *pool = kn_threadpool_create(4);
    int64_t d[3] = {5, 33, 40};
    int64_t nel = 5 * 33 * 40;
    double *v = malloc(sizeof(double) * nel);
    for (int64_t i = 0; i < nel; i++) v[i] = frand();
    v[77] = NAN;
    int64_t ad[1] = {2};
    double axv[2] = {-1, -2};
    kn_tensor *x32 = mk(KN_F32, 3, d, v), *x64 = mk(KN_F64, 3, d, v), *axes = mk(KN_I64, 1, ad, axv);
    int ops[4] = {KN_OP_ReduceSum, KN_OP_ReduceMean, KN_OP_ReduceMax, KN_OP_ReduceMin};
    for (int o = 0; o < 4; o++) {
        kn_tensor *a[2] = {x32, axes}, *b[2] = {x64, axes}, *oa[1], *ob[1];
        ck_assert_ptr_null(kn_test_run_op(ops[o], 18, NULL, 0, a, 2, oa, NULL, 1, pool));
        ck_assert_ptr_null(kn_test_run_op(ops[o], 18, NULL, 0, b, 2, ob, NULL, 1, pool));
        ck_assert_int_eq(kn_numel(oa[0]), 5);
        ck_assert(isnan(kn_get_f64(oa[0], 0)));
        for (int i = 0; i < 5; i++)
            ck_assert_msg(close_to((float)kn_get_f64(oa[0], i), (float)kn_get_f64(ob[0], i), 1e-5f, 1e-3f),
                          "op %d i %d", o, i);
        free_all(oa, 1);
        free_all(ob, 1);
    }
    kn_tensor_free(x32);
    kn_tensor_free(x64);
    kn_tensor_free(axes);
    free(v);
    kn_threadpool_free(pool);
}
END_TEST

START_TEST(test_reduce_int_and_bool) {
    int64_t d[2] = {2, 3};
    double v[6] = {1, 0, 1, 0, 0, 0};
    kn_tensor *b = mk(KN_BOOL, 2, d, v);
    int64_t axes[1] = {1};
    kn_attr at[2] = {attr_ints("axes", axes, 1), attr_i("keepdims", 0)};
    kn_tensor *in[1] = {b}, *out[1];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_ReduceMax, 13, at, 2, in, 1, out, NULL, 1, NULL));
    ck_assert_int_eq(out[0]->dtype, KN_BOOL);
    ck_assert_int_eq(kn_get_i64(out[0], 0), 1);
    ck_assert_int_eq(kn_get_i64(out[0], 1), 0);
    free_all(out, 1);
    kn_tensor_free(b);
    double iv[6] = {3000000000.0, 5, -7, 1, 2, 3};
    kn_tensor *x = mk(KN_I64, 2, d, iv);
    in[0] = x;
    ck_assert_ptr_null(kn_test_run_op(KN_OP_ReduceSum, 11, at, 2, in, 1, out, NULL, 1, NULL));
    ck_assert_int_eq(kn_get_i64(out[0], 0), 2999999998LL);
    free_all(out, 1);
    ck_assert_ptr_null(kn_test_run_op(KN_OP_ReduceMin, 11, at, 2, in, 1, out, NULL, 1, NULL));
    ck_assert_int_eq(kn_get_i64(out[0], 0), -7);
    free_all(out, 1);
    kn_tensor_free(x);
}
END_TEST

START_TEST(test_argmax_select_last_and_topk_ties) {
    int64_t d[2] = {2, 4};
    double v[8] = {1, 5, 5, 2, 7, 7, 7, 0};
    kn_tensor *x = mk(KN_F32, 2, d, v);
    kn_tensor *in[2] = {x, NULL}, *out[2];
    kn_attr at[2] = {attr_i("axis", -1), attr_i("select_last_index", 1)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_ArgMax, 13, at, 2, in, 1, out, NULL, 1, NULL));
    ck_assert_int_eq(out[0]->ndim, 2);
    ck_assert_int_eq(kn_get_i64(out[0], 0), 2);
    ck_assert_int_eq(kn_get_i64(out[0], 1), 6 - 4);
    free_all(out, 1);
    ck_assert_ptr_null(kn_test_run_op(KN_OP_ArgMin, 13, at, 1, in, 1, out, NULL, 1, NULL));
    ck_assert_int_eq(kn_get_i64(out[0], 0), 0);
    ck_assert_int_eq(kn_get_i64(out[0], 1), 3);
    free_all(out, 1);
    int64_t kd[1] = {1};
    double kv[1] = {3};
    in[1] = mk(KN_I64, 1, kd, kv);
    ck_assert_ptr_null(kn_test_run_op(KN_OP_TopK, 11, NULL, 0, in, 2, out, NULL, 2, NULL));
    ck_assert_int_eq(out[0]->dims[1], 3);
    int64_t want_i[6] = {1, 2, 3, 0, 1, 2};
    double want_v[6] = {5, 5, 2, 7, 7, 7};
    for (int i = 0; i < 6; i++) {
        ck_assert_int_eq(kn_get_i64(out[1], i), want_i[i]);
        ck_assert(kn_get_f64(out[0], i) == want_v[i]);
    }
    free_all(out, 2);
    kn_attr small[1] = {attr_i("largest", 0)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_TopK, 11, small, 1, in, 2, out, NULL, 2, NULL));
    int64_t want_s[6] = {0, 3, 1, 3, 0, 1};
    for (int i = 0; i < 6; i++) ck_assert_int_eq(kn_get_i64(out[1], i), want_s[i]);
    free_all(out, 2);
    /* k larger than the axis is an error, not a read out of bounds */
    kn_set_f64(in[1], 0, 9);
    expect_err(kn_test_run_op(KN_OP_TopK, 11, NULL, 0, in, 2, out, NULL, 2, NULL));
    free_all(out, 2);
    free_all(in, 2);
}
END_TEST

START_TEST(test_cumsum_modes) {
    int64_t d[1] = {4};
    double v[4] = {1, 2, 3, 4};
    int64_t sd[1] = {0};
    kn_tensor *in[2] = {mk(KN_I32, 1, d, v), mk(KN_I64, 0, sd, NULL)};
    struct {
        int excl, rev;
        double want[4];
    } cases[] = {
        {0, 0, {1, 3, 6, 10}},
        {1, 0, {0, 1, 3, 6}},
        {0, 1, {10, 9, 7, 4}},
        {1, 1, {9, 7, 4, 0}},
    };
    for (int c = 0; c < 4; c++) {
        kn_attr at[2] = {attr_i("exclusive", cases[c].excl), attr_i("reverse", cases[c].rev)};
        kn_tensor *out[1];
        ck_assert_ptr_null(kn_test_run_op(KN_OP_CumSum, 14, at, 2, in, 2, out, NULL, 1, NULL));
        for (int i = 0; i < 4; i++) ck_assert_int_eq(kn_get_i64(out[0], i), (int64_t)cases[c].want[i]);
        free_all(out, 1);
    }
    kn_tensor *out[1];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_CumProd, 21, NULL, 0, in, 2, out, NULL, 1, NULL));
    ck_assert_int_eq(kn_get_i64(out[0], 3), 24);
    free_all(out, 1);
    kn_set_f64(in[1], 0, 3); /* axis out of range */
    expect_err(kn_test_run_op(KN_OP_CumSum, 14, NULL, 0, in, 2, out, NULL, 1, NULL));
    free_all(out, 1);
    free_all(in, 2);
}
END_TEST

START_TEST(test_softmax_opset_semantics) {
    /* opset 11 coerces to 2-D at axis 1: softmax over the 6 trailing values; opset 13 over axis 1 only */
    int64_t d[3] = {1, 2, 3};
    double v[6] = {0, 1, 2, 3, 4, 5};
    kn_tensor *in[1] = {mk(KN_F32, 3, d, v)}, *out[1];
    kn_attr at[1] = {attr_i("axis", 1)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_Softmax, 11, at, 1, in, 1, out, NULL, 1, NULL));
    double s = 0;
    for (int i = 0; i < 6; i++) s += exp(i);
    ck_assert(fabs(kn_get_f64(out[0], 5) - exp(5) / s) < 1e-6);
    free_all(out, 1);
    ck_assert_ptr_null(kn_test_run_op(KN_OP_Softmax, 13, at, 1, in, 1, out, NULL, 1, NULL));
    ck_assert(fabs(kn_get_f64(out[0], 5) - exp(5) / (exp(2) + exp(5))) < 1e-6);
    free_all(out, 1);
    ck_assert_ptr_null(kn_test_run_op(KN_OP_Hardmax, 13, NULL, 0, in, 1, out, NULL, 1, NULL));
    ck_assert(kn_get_f64(out[0], 2) == 1 && kn_get_f64(out[0], 0) == 0 && kn_get_f64(out[0], 5) == 1);
    free_all(out, 1);
    ck_assert_ptr_null(kn_test_run_op(KN_OP_LogSoftmax, 13, NULL, 0, in, 1, out, NULL, 1, NULL));
    ck_assert(fabs(kn_get_f64(out[0], 0) - (0 - log(1 + exp(1) + exp(2)))) < 1e-5);
    free_all(out, 1);
    free_all(in, 1);
}
END_TEST

/* bfloat16/float16 softmax must equal the ONNX reference, which rounds every step to the storage
 * type; values below come from onnx.reference.ReferenceEvaluator. */
START_TEST(test_softmax_half_matches_reference_rounding) {
    int64_t d[2] = {1, 9};
    double v[9] = {0.5, -1.25, 2.0, 0.75, -3.0, 1.5, 0.10009765625, 2.203125, -0.69921875};
    double want_bf16[9] = {0.061767578125, 0.01080322265625, 0.27734375, 0.07958984375,  0.00189971923828125,
                           0.16796875,     0.041259765625,   0.33984375, 0.0186767578125};
    double want_f16[9] = {0.061920166015625, 0.0107574462890625,    0.277587890625,
                          0.07952880859375,  0.0018701553344726562, 0.1683349609375,
                          0.041473388671875, 0.340087890625,        0.0186614990234375};
    kn_dtype types[2] = {KN_BF16, KN_F16};
    for (int k = 0; k < 2; k++) {
        kn_tensor *in[1] = {mk(types[k], 2, d, v)}, *out[1];
        ck_assert_ptr_null(kn_test_run_op(KN_OP_Softmax, 13, NULL, 0, in, 1, out, NULL, 1, NULL));
        for (int i = 0; i < 9; i++)
            ck_assert_msg(kn_get_f64(out[0], i) == (k ? want_f16[i] : want_bf16[i]), "type %d i %d: %.12g", k, i,
                          kn_get_f64(out[0], i));
        free_all(out, 1);
        free_all(in, 1);
    }
}
END_TEST

/* The heap selection used when k << n gives exactly the first k of a full sort (ties by index,
 * NaN counting as largest), on float and integer data, largest and smallest. */
START_TEST(test_topk_select_matches_full_sort) {
    const int64_t n = 1000;
    int64_t d[2] = {3, n};
    double *v = malloc(sizeof(double) * 3 * n);
    for (int64_t i = 0; i < 3 * n; i++) v[i] = (double)((int)(frand() * 3)); /* many ties */
    kn_dtype types[2] = {KN_F32, KN_I32};
    for (int ti = 0; ti < 2; ti++)
        for (int largest = 0; largest < 2; largest++) {
            int64_t kd[1] = {1};
            double ksmall[1] = {7}, kall[1] = {(double)n};
            v[500] = ti == 0 ? NAN : 1; /* NaN only where the dtype has it */
            kn_tensor *x = mk(types[ti], 2, d, v);
            kn_tensor *a_in[2] = {x, mk(KN_I64, 1, kd, ksmall)}, *b_in[2] = {x, mk(KN_I64, 1, kd, kall)};
            kn_attr at[1] = {attr_i("largest", largest)};
            kn_tensor *oa[2], *ob[2];
            ck_assert_ptr_null(kn_test_run_op(KN_OP_TopK, 11, at, 1, a_in, 2, oa, NULL, 2, NULL));
            ck_assert_ptr_null(kn_test_run_op(KN_OP_TopK, 11, at, 1, b_in, 2, ob, NULL, 2, NULL));
            for (int r = 0; r < 3; r++)
                for (int i = 0; i < 7; i++) {
                    ck_assert_int_eq(kn_get_i64(oa[1], r * 7 + i), kn_get_i64(ob[1], r * n + i));
                    double va = kn_get_f64(oa[0], r * 7 + i), vb = kn_get_f64(ob[0], r * n + i);
                    ck_assert(va == vb || (isnan(va) && isnan(vb)));
                    if (i > 0 && !isnan(va)) {
                        double prev = kn_get_f64(oa[0], r * 7 + i - 1);
                        ck_assert(isnan(prev) || (largest ? prev >= va : prev <= va));
                        if (prev == va) ck_assert(kn_get_i64(oa[1], r * 7 + i - 1) < kn_get_i64(oa[1], r * 7 + i));
                    }
                }
            if (ti == 0 && largest) ck_assert_int_eq(kn_get_i64(oa[1], 0), 500); /* NaN first */
            free_all(oa, 2);
            free_all(ob, 2);
            kn_tensor_free(a_in[1]);
            kn_tensor_free(b_in[1]);
            kn_tensor_free(x);
        }
    free(v);
}
END_TEST

static Suite *reduce_suite(void) {
    Suite *s = suite_create("reduce");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_rowreduce_simd_matches_scalar);
    tcase_add_test(tc, test_softmax_simd_matches_scalar);
    tcase_add_test(tc, test_softmax_large_magnitudes_stable);
    tcase_add_test(tc, test_reduce_sum_axes_input_negative_keepdims);
    tcase_add_test(tc, test_reduce_empty_axes_and_noop);
    tcase_add_test(tc, test_reduce_empty_set_identities);
    tcase_add_test(tc, test_reduce_fast_path_matches_generic);
    tcase_add_test(tc, test_reduce_int_and_bool);
    tcase_add_test(tc, test_argmax_select_last_and_topk_ties);
    tcase_add_test(tc, test_topk_select_matches_full_sort);
    tcase_add_test(tc, test_cumsum_modes);
    tcase_add_test(tc, test_softmax_opset_semantics);
    tcase_add_test(tc, test_softmax_half_matches_reference_rounding);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return kn_test_run_suite(reduce_suite()); }
