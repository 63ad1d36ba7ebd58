/* Unit tests for the normalisations and losses: the AVX2/AVX-512 layer-norm row kernels against
 * the scalar reference over many sizes and special values, and the op kernels end to end through
 * infer + kernel against values computed here (LayerNormalization fast vs generic path,
 * RMSNormalization, BatchNormalization both modes, Instance/Group/Lp/MVN/LRN, the losses). */
#include "tests/unit/harness.h"
#include "kernels/cpu/rows.h"
typedef void (*ln_fn)(const float *, float *, int64_t, int64_t, const float *, const float *, float, float *, float *);

static uint32_t rng_state = 777;
static double drand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (double)((rng_state >> 8) & 0xFFFF) / 65536.0 * 8.0 - 4.0;
}

START_TEST(test_layernorm_simd_matches_scalar) {
    ln_fn fns[2];
    int nv = 0;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) fns[nv++] = kn_layernorm_rows_f32_avx2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
        fns[nv++] = kn_layernorm_rows_f32_avx512;
    /* the scalar reference itself, on any machine: [1, 3] -> [-1, 1] with eps 0 */
    const float kx[2] = {1, 3}, ks[2] = {1, 1};
    float ky[2], km, ki;
    kn_layernorm_rows_f32_scalar(kx, ky, 1, 2, ks, NULL, 0.0f, &km, &ki);
    ck_assert(ky[0] == -1 && ky[1] == 1 && km == 2 && ki == 1);
    static const int64_t sizes[] = {1, 7, 8, 15, 16, 17, 33, 384, 1000};
    const int rows = 3;
    for (int v = 0; v < nv; v++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
            for (int special = 0; special < 3; special++)
                for (int with_bias = 0; with_bias < 2; with_bias++) {
                    int64_t n = sizes[si];
                    size_t bytes = sizeof(float) * (size_t)(rows * n);
                    float *x = malloc(bytes), *ref = malloc(bytes), *got = malloc(bytes);
                    float *sc = malloc(sizeof(float) * n), *bi = malloc(sizeof(float) * n);
                    for (int64_t i = 0; i < rows * n; i++)
                        x[i] = (float)drand() + 100.0f; /* offset tests the two-pass variance */
                    for (int64_t i = 0; i < n; i++) {
                        sc[i] = (float)drand();
                        bi[i] = (float)drand();
                    }
                    if (special == 1) x[n + n / 2] = NAN;
                    if (special == 2) x[n + n / 3] = INFINITY;
                    float rm[3], ri[3], gm[3], gi[3];
                    kn_layernorm_rows_f32_scalar(x, ref, rows, n, sc, with_bias ? bi : NULL, 1e-5f, rm, ri);
                    fns[v](x, got, rows, n, sc, with_bias ? bi : NULL, 1e-5f, gm, gi);
                    for (int r = 0; r < rows; r++) {
                        ck_assert_msg(close_to(gm[r], rm[r], 1e-5, 1e-5), "mean v%d n%lld r%d: %g vs %g", v,
                                      (long long)n, r, gm[r], rm[r]);
                        ck_assert_msg(close_to(gi[r], ri[r], 1e-3, 1e-5), "invstd v%d n%lld r%d: %g vs %g", v,
                                      (long long)n, r, gi[r], ri[r]);
                    }
                    for (int64_t i = 0; i < rows * n; i++)
                        ck_assert_msg(close_to(got[i], ref[i], 1e-3, 1e-3), "v%d n%lld special %d i%lld: %g vs %g", v,
                                      (long long)n, special, (long long)i, got[i], ref[i]);
                    if (special) ck_assert(isnan(ref[n])); /* NaN or Inf in a row poisons its variance */
                    if (special == 1) ck_assert(isnan(rm[1]));
                    free(x);
                    free(ref);
                    free(got);
                    free(sc);
                    free(bi);
                }
}
END_TEST

START_TEST(test_layernorm_op_fast_vs_generic) {
    kn_threadpool *pool = kn_threadpool_create(4);
    int64_t d[3] = {6, 5, 40};
    int64_t nel = 6 * 5 * 40;
    double *v = malloc(sizeof(double) * nel), sv[200], bv[40];
    for (int64_t i = 0; i < nel; i++) v[i] = drand();
    for (int i = 0; i < 200; i++) sv[i] = drand();
    for (int i = 0; i < 40; i++) bv[i] = drand();
    int64_t sd[2] = {5, 40}, bd[1] = {40}; /* bias broadcasts along the axis-1 block */
    kn_tensor *x32 = mk(KN_F32, 3, d, v), *x64 = mk(KN_F64, 3, d, v);
    kn_tensor *s32 = mk(KN_F32, 2, sd, sv), *s64 = mk(KN_F64, 2, sd, sv);
    kn_tensor *b32 = mk(KN_F32, 1, bd, bv), *b64 = mk(KN_F64, 1, bd, bv);
    kn_attr at[1] = {attr_i("axis", -2)};
    kn_tensor *ia[3] = {x32, s32, b32}, *ib[3] = {x64, s64, b64}, *oa[3], *ob[3];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_LayerNormalization, 17, at, 1, ia, 3, oa, NULL, 3, pool));
    ck_assert_ptr_null(kn_test_run_op(KN_OP_LayerNormalization, 17, at, 1, ib, 3, ob, NULL, 3, pool));
    ck_assert_int_eq(oa[1]->ndim, 3);
    ck_assert_int_eq(oa[1]->dims[0], 6);
    ck_assert_int_eq(oa[1]->dims[1], 1);
    ck_assert_int_eq(oa[1]->dtype, KN_F32);
    for (int64_t i = 0; i < nel; i++) ck_assert(close_to(kn_get_f64(oa[0], i), kn_get_f64(ob[0], i), 1e-4, 1e-4));
    for (int i = 0; i < 6; i++) {
        ck_assert(close_to(kn_get_f64(oa[1], i), kn_get_f64(ob[1], i), 1e-5, 1e-5));
        ck_assert(close_to(kn_get_f64(oa[2], i), kn_get_f64(ob[2], i), 1e-4, 1e-5));
    }
    /* check one row against a direct computation */
    double mu = 0, var = 0;
    for (int i = 0; i < 200; i++) mu += v[i];
    mu /= 200;
    for (int i = 0; i < 200; i++) var += (v[i] - mu) * (v[i] - mu);
    double inv = 1 / sqrt(var / 200 + 1e-5);
    ck_assert(close_to(kn_get_f64(ob[0], 41), (v[41] - mu) * inv * sv[41] + bv[1], 1e-9, 1e-9));
    free_all(oa, 3);
    free_all(ob, 3);
    /* a scale that does not broadcast is an error */
    int64_t bad[1] = {7};
    kn_tensor *sbad = mk(KN_F32, 1, bad, NULL);
    kn_tensor *ic[2] = {x32, sbad};
    expect_err(kn_test_run_op(KN_OP_LayerNormalization, 17, at, 1, ic, 2, oa, NULL, 1, pool));
    free_all(oa, 1);
    kn_tensor_free(sbad);
    kn_tensor_free(x32);
    kn_tensor_free(x64);
    kn_tensor_free(s32);
    kn_tensor_free(s64);
    kn_tensor_free(b32);
    kn_tensor_free(b64);
    free(v);
    kn_threadpool_free(pool);
}
END_TEST

START_TEST(test_rmsnorm) {
    int64_t d[2] = {2, 2}, sd[1] = {2};
    double v[4] = {3, 4, 1, 1}, s[2] = {1, 2};
    kn_tensor *in[2] = {mk(KN_F32, 2, d, v), mk(KN_F32, 1, sd, s)}, *out[1];
    kn_attr at[1] = {attr_f("epsilon", 0.0f)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_RMSNormalization, 23, at, 1, in, 2, out, NULL, 1, NULL));
    double r = sqrt(12.5);
    ck_assert(close_to(kn_get_f64(out[0], 0), 3 / r, 1e-6, 0));
    ck_assert(close_to(kn_get_f64(out[0], 1), 8 / r, 1e-6, 0));
    ck_assert(close_to(kn_get_f64(out[0], 3), 2, 1e-6, 0));
    free_all(out, 1);
    free_all(in, 2);
}
END_TEST

START_TEST(test_batchnorm_modes) {
    int64_t d[3] = {2, 2, 2}, cd[1] = {2};
    double v[8] = {1, 2, 10, 20, 3, 4, 30, 40};
    double sc[2] = {1, 2}, b[2] = {0, 1}, m[2] = {0, 10}, var[2] = {1, 4};
    kn_tensor *in[5] = {mk(KN_F32, 3, d, v), mk(KN_F32, 1, cd, sc), mk(KN_F32, 1, cd, b), mk(KN_F32, 1, cd, m),
                        mk(KN_F32, 1, cd, var)},
              *out[3];
    kn_attr at[2] = {attr_f("epsilon", 0.0f), attr_i("training_mode", 1)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_BatchNormalization, 15, at, 1, in, 5, out, NULL, 1, NULL));
    ck_assert(close_to(kn_get_f64(out[0], 2), (10 - 10) / 2.0 * 2 + 1, 1e-6, 1e-6));
    ck_assert(close_to(kn_get_f64(out[0], 7), (40 - 10) / 2.0 * 2 + 1, 1e-6, 1e-6));
    free_all(out, 1);
    ck_assert_ptr_null(kn_test_run_op(KN_OP_BatchNormalization, 15, at, 2, in, 5, out, NULL, 3, NULL));
    /* channel 0 batch: {1,2,3,4}: mean 2.5, var 1.25; running = 0.9*old + 0.1*batch */
    ck_assert(close_to(kn_get_f64(out[1], 0), 0.25, 1e-6, 1e-6));
    ck_assert(close_to(kn_get_f64(out[2], 0), 0.9 + 0.125, 1e-6, 1e-6));
    ck_assert(close_to(kn_get_f64(out[0], 0), (1 - 2.5) / sqrt(1.25), 1e-5, 1e-6));
    free_all(out, 3);
    free_all(in, 5);
}
END_TEST

START_TEST(test_instance_and_group_norm) {
    int64_t d[3] = {1, 4, 3}, cd[1] = {4}, gd[1] = {2};
    double v[12], sc4[4] = {1, 1, 2, 2}, b4[4] = {0, 0, 5, 5}, sc2[2] = {1, 2}, b2[2] = {0, 5};
    for (int i = 0; i < 12; i++) v[i] = i * i;
    kn_tensor *x = mk(KN_F32, 3, d, v);
    kn_tensor *in21[3] = {x, mk(KN_F32, 1, cd, sc4), mk(KN_F32, 1, cd, b4)};
    kn_tensor *in18[3] = {x, mk(KN_F32, 1, gd, sc2), mk(KN_F32, 1, gd, b2)};
    kn_attr at[1] = {attr_i("num_groups", 2)};
    kn_tensor *o21[1], *o18[1];
    kn_threadpool *pool = kn_threadpool_create(3);
    ck_assert_ptr_null(kn_test_run_op(KN_OP_GroupNormalization, 21, at, 1, in21, 3, o21, NULL, 1, pool));
    ck_assert_ptr_null(kn_test_run_op(KN_OP_GroupNormalization, 18, at, 1, in18, 3, o18, NULL, 1, NULL));
    for (int i = 0; i < 12; i++) ck_assert(close_to(kn_get_f64(o21[0], i), kn_get_f64(o18[0], i), 1e-6, 1e-6));
    /* the float16 (generic) path agrees with the float32 one */
    kn_tensor *x16 = mk(KN_F16, 3, d, v), *o16[1];
    kn_tensor *in16[3] = {x16, in21[1], in21[2]};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_GroupNormalization, 21, at, 1, in16, 3, o16, NULL, 1, pool));
    ck_assert_int_eq(o16[0]->dtype, KN_F16);
    for (int i = 0; i < 12; i++) ck_assert(close_to(kn_get_f64(o16[0], i), kn_get_f64(o21[0], i), 5e-3, 5e-3));
    free_all(o16, 1);
    kn_tensor_free(x16);
    kn_threadpool_free(pool);
    double mu = 0, var = 0;
    for (int i = 0; i < 6; i++) mu += v[i];
    mu /= 6;
    for (int i = 0; i < 6; i++) var += (v[i] - mu) * (v[i] - mu);
    ck_assert(close_to(kn_get_f64(o21[0], 5), (25 - mu) / sqrt(var / 6 + 1e-5), 1e-5, 1e-6));
    free_all(o21, 1);
    free_all(o18, 1);
    kn_attr bad[1] = {attr_i("num_groups", 3)};
    expect_err(kn_test_run_op(KN_OP_GroupNormalization, 21, bad, 1, in21, 3, o21, NULL, 1, NULL));
    free_all(o21, 1);
    /* instance norm: each channel of 3 values normalised separately */
    kn_tensor *out[1];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_InstanceNormalization, 6, NULL, 0, in21, 3, out, NULL, 1, NULL));
    double m3 = (81 + 100 + 121) / 3.0,
           v3 = ((81 - m3) * (81 - m3) + (100 - m3) * (100 - m3) + (121 - m3) * (121 - m3)) / 3;
    ck_assert(close_to(kn_get_f64(out[0], 9), (81 - m3) / sqrt(v3 + 1e-5) * 2 + 5, 1e-5, 1e-6));
    free_all(out, 1);
    kn_tensor_free(in21[1]);
    kn_tensor_free(in21[2]);
    kn_tensor_free(in18[1]);
    kn_tensor_free(in18[2]);
    kn_tensor_free(x);
}
END_TEST

START_TEST(test_lp_mvn_lrn) {
    int64_t d[2] = {2, 2};
    double v[4] = {3, -4, 0, 0};
    kn_tensor *in[1] = {mk(KN_F32, 2, d, v)}, *out[1];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_LpNormalization, 1, NULL, 0, in, 1, out, NULL, 1, NULL));
    ck_assert(close_to(kn_get_f64(out[0], 1), -0.8, 1e-6, 0));
    ck_assert(kn_get_f64(out[0], 2) == 0); /* zero norm gives 0, not NaN */
    free_all(out, 1);
    kn_attr p1[1] = {attr_i("p", 1)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_LpNormalization, 1, p1, 1, in, 1, out, NULL, 1, NULL));
    ck_assert(close_to(kn_get_f64(out[0], 0), 3.0 / 7, 1e-6, 0));
    free_all(out, 1);
    free_all(in, 1);

    int64_t d4[4] = {2, 1, 1, 2};
    double v4[4] = {1, 2, 3, 6};
    kn_tensor *x4[1] = {mk(KN_F32, 4, d4, v4)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_MeanVarianceNormalization, 13, NULL, 0, x4, 1, out, NULL, 1, NULL));
    double mu = 3, sd = sqrt((4 + 1 + 0 + 9) / 4.0);
    ck_assert(close_to(kn_get_f64(out[0], 3), (6 - mu) / sd, 1e-5, 1e-6));
    free_all(out, 1);
    free_all(x4, 1);

    int64_t d3[4] = {1, 3, 1, 1};
    double v3[3] = {1, 2, 3};
    kn_tensor *x3[1] = {mk(KN_F32, 4, d3, v3)};
    kn_attr lrn[4] = {attr_i("size", 3), attr_f("alpha", 0.3f), attr_f("beta", 0.5f), attr_f("bias", 2.0f)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_LRN, 13, lrn, 4, x3, 1, out, NULL, 1, NULL));
    ck_assert(close_to(kn_get_f64(out[0], 0), 1 / pow(2 + 0.1 * (1 + 4), 0.5), 1e-5, 0));
    ck_assert(close_to(kn_get_f64(out[0], 1), 2 / pow(2 + 0.1 * (1 + 4 + 9), 0.5), 1e-5, 0));
    free_all(out, 1);
    free_all(x3, 1);
}
END_TEST

START_TEST(test_losses) {
    int64_t d[2] = {3, 2}, td[1] = {3}, wd[1] = {2};
    double v[6] = {1, 2, 0, 0, 3, 1}, t[3] = {1, 0, 1}, w[2] = {2, 1};
    kn_tensor *in[3] = {mk(KN_F32, 2, d, v), mk(KN_I64, 1, td, t), mk(KN_F32, 1, wd, w)}, *out[2];
    double lse0 = log(exp(1) + exp(2)), lse1 = log(2), lse2 = log(exp(3) + exp(1));
    double l0 = -(2 - lse0), l1 = -(0 - lse1), l2 = -(1 - lse2);
    kn_attr none[1] = {attr_s("reduction", "none")};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_SoftmaxCrossEntropyLoss, 13, none, 1, in, 2, out, NULL, 2, NULL));
    ck_assert_int_eq(out[0]->ndim, 1);
    ck_assert(close_to(kn_get_f64(out[0], 2), l2, 1e-6, 0));
    ck_assert(close_to(kn_get_f64(out[1], 4), 3 - lse2, 1e-6, 0));
    free_all(out, 2);
    /* weighted mean: sum(w[t] * l) / sum(w[t]) */
    ck_assert_ptr_null(kn_test_run_op(KN_OP_SoftmaxCrossEntropyLoss, 13, NULL, 0, in, 3, out, NULL, 1, NULL));
    ck_assert_int_eq(out[0]->ndim, 0);
    ck_assert(close_to(kn_get_f64(out[0], 0), (l0 + 2 * l1 + l2) / 4, 1e-6, 0));
    free_all(out, 1);
    /* ignore_index drops the element from both sums */
    kn_attr ign[1] = {attr_i("ignore_index", 0)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_SoftmaxCrossEntropyLoss, 13, ign, 1, in, 2, out, NULL, 1, NULL));
    ck_assert(close_to(kn_get_f64(out[0], 0), (l0 + l2) / 2, 1e-6, 0));
    free_all(out, 1);
    /* NLL on raw values, sum */
    kn_attr sum[1] = {attr_s("reduction", "sum")};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_NegativeLogLikelihoodLoss, 13, sum, 1, in, 3, out, NULL, 1, NULL));
    ck_assert(close_to(kn_get_f64(out[0], 0), -(2 * 1 + 0 * 2 + 1 * 1), 1e-6, 0));
    free_all(out, 1);
    /* out-of-range target is an error */
    kn_set_f64(in[1], 0, 5);
    expect_err(kn_test_run_op(KN_OP_NegativeLogLikelihoodLoss, 13, NULL, 0, in, 2, out, NULL, 1, NULL));
    free_all(out, 1);
    free_all(in, 3);
}
END_TEST

static Suite *norm_suite(void) {
    Suite *s = suite_create("norm");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_layernorm_simd_matches_scalar);
    tcase_add_test(tc, test_layernorm_op_fast_vs_generic);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_batchnorm_modes);
    tcase_add_test(tc, test_instance_and_group_norm);
    tcase_add_test(tc, test_lp_mvn_lrn);
    tcase_add_test(tc, test_losses);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return kn_test_run_suite(norm_suite()); }
