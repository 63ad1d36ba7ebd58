/* The float32 fast paths of the kiln backward ops used in training (kernels/cpu/grad.c) against
 * their plain reference: ReduceSumTo down to trailing axes (bias gradients; column chunks in
 * parallel) equals the general odometer path run on the same values in float64, for shapes with
 * one and several column chunks, leading 1s kept in the target, a full sum, and targets the fast
 * path must leave alone (a middle axis kept); GeluGrad (erf and tanh forms, SIMD erf / exp
 * in float) against the float64 kernel on the same values; LayerNormalizationGrad (row blocks in
 * parallel with per-block dscale / dbias partial sums) against the float64 kernel, with fewer and
 * more rows than blocks. */
#include "tests/unit/harness.h"
#include "runtime/core/threadpool.h"
#include <math.h>

static void check_sum_to(int xnd, const int64_t *xd, int ynd, const int64_t *yd, kn_threadpool *pool) {
    int64_t n = 1;
    for (int i = 0; i < xnd; i++) n *= xd[i];
    double *v = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) v[i] = (float)(sin(0.7 * (double)i + 0.3) * (1 + (double)(i % 13)));
    kn_tensor *x32 = mk(KN_F32, xnd, xd, v), *x64 = mk(KN_F64, xnd, xd, v);
    kn_tensor *shape = mk_raw(KN_I64, 1, (int64_t[]){ynd}, yd);
    kn_tensor *in32[2] = {x32, shape}, *in64[2] = {x64, shape}, *o32[1], *o64[1];
    expect_ok(kn_test_run_op(KN_OP_KnReduceSumTo, 1, NULL, 0, in32, 2, o32, NULL, 1, pool));
    expect_ok(kn_test_run_op(KN_OP_KnReduceSumTo, 1, NULL, 0, in64, 2, o64, NULL, 1, pool));
    ck_assert_int_eq(o32[0]->ndim, ynd);
    for (int i = 0; i < ynd; i++) ck_assert_int_eq(o32[0]->dims[i], yd[i]);
    int64_t ny = kn_numel(o64[0]);
    double *ref = malloc(sizeof(double) * (size_t)ny);
    for (int64_t i = 0; i < ny; i++) ref[i] = kn_get_f64(o64[0], i);
    /* both sum in double; the float32 result is that sum rounded once */
    expect_close(o32[0], ref, ny, 1e-7, 1e-6, "ReduceSumTo");
    free(ref);
    free(v);
    free_all(o32, 1);
    free_all(o64, 1);
    kn_tensor_free(x32);
    kn_tensor_free(x64);
    kn_tensor_free(shape);
}

START_TEST(reduce_sum_to_fast) {
    kn_threadpool *pool = kn_threadpool_create(3);
    check_sum_to(3, (int64_t[]){3, 5, 7}, 1, (int64_t[]){7}, pool);
    check_sum_to(3, (int64_t[]){3, 5, 7}, 2, (int64_t[]){1, 7}, pool);
    check_sum_to(3, (int64_t[]){3, 5, 7}, 2, (int64_t[]){5, 7}, pool);
    check_sum_to(3, (int64_t[]){2, 33, 600}, 1, (int64_t[]){600}, pool); /* 3 column chunks */
    check_sum_to(3, (int64_t[]){2, 33, 600}, 3, (int64_t[]){1, 1, 600}, NULL);
    check_sum_to(2, (int64_t[]){4, 5}, 2, (int64_t[]){1, 1}, pool);       /* everything */
    check_sum_to(3, (int64_t[]){3, 5, 7}, 2, (int64_t[]){5, 1}, pool);    /* the general path */
    check_sum_to(3, (int64_t[]){3, 5, 7}, 3, (int64_t[]){3, 1, 7}, pool); /* the general path */
    kn_threadpool_free(pool);
}
END_TEST

static void check_gelu_grad(bool tanh_form, kn_threadpool *pool) {
    int64_t n = 3000, d[1] = {n}; /* 3 chunks, the last one partial */
    double *x = malloc(sizeof(double) * (size_t)n), *g = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        x[i] = (float)(-9.0 + 18.0 * (double)i / (double)(n - 1));
        g[i] = (float)cos(0.3 * (double)i);
    }
    kn_tensor *x32 = mk(KN_F32, 1, d, x), *x64 = mk(KN_F64, 1, d, x), *g32 = mk(KN_F32, 1, d, g),
              *g64 = mk(KN_F64, 1, d, g);
    kn_tensor *in32[2] = {g32, x32}, *in64[2] = {g64, x64}, *o32[1], *o64[1];
    kn_attr at = attr_s("approximate", tanh_form ? "tanh" : "none");
    expect_ok(kn_test_run_op(KN_OP_KnGeluGrad, 1, &at, 1, in32, 2, o32, NULL, 1, pool));
    expect_ok(kn_test_run_op(KN_OP_KnGeluGrad, 1, &at, 1, in64, 2, o64, NULL, 1, pool));
    double *ref = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) ref[i] = kn_get_f64(o64[0], i);
    expect_close(o32[0], ref, n, 2e-6, 2e-7, tanh_form ? "GeluGrad tanh" : "GeluGrad");
    free(ref);
    free(x);
    free(g);
    free_all(o32, 1);
    free_all(o64, 1);
    kn_tensor *all[4] = {x32, x64, g32, g64};
    free_all(all, 4);
}

START_TEST(gelu_grad_fast) {
    kn_threadpool *pool = kn_threadpool_create(3);
    check_gelu_grad(false, pool);
    check_gelu_grad(true, pool);
    check_gelu_grad(false, NULL);
    kn_threadpool_free(pool);
}
END_TEST

static void check_ln_grad(int64_t rows, int64_t n, kn_threadpool *pool) {
    int64_t xd[2] = {rows, n}, sd[1] = {n}, md[2] = {rows, 1};
    double *dy = malloc(sizeof(double) * (size_t)(rows * n)), *x = malloc(sizeof(double) * (size_t)(rows * n));
    double *sc = malloc(sizeof(double) * (size_t)n), *mu = malloc(sizeof(double) * (size_t)rows);
    double *iv = malloc(sizeof(double) * (size_t)rows);
    for (int64_t i = 0; i < rows * n; i++) {
        dy[i] = (float)sin(0.37 * (double)i);
        x[i] = (float)(2.0 * cos(0.11 * (double)i) + 0.5);
    }
    for (int64_t i = 0; i < n; i++) sc[i] = (float)(1.0 + 0.1 * (double)i);
    for (int64_t r = 0; r < rows; r++) {
        double m = 0, v = 0;
        for (int64_t i = 0; i < n; i++) m += x[r * n + i];
        m /= (double)n;
        for (int64_t i = 0; i < n; i++) v += (x[r * n + i] - m) * (x[r * n + i] - m);
        mu[r] = (float)m;
        iv[r] = (float)(1.0 / sqrt(v / (double)n + 1e-5));
    }
    kn_tensor *t32[5] = {mk(KN_F32, 2, xd, dy), mk(KN_F32, 2, xd, x), mk(KN_F32, 1, sd, sc), mk(KN_F32, 2, md, mu),
                         mk(KN_F32, 2, md, iv)};
    kn_tensor *t64[5] = {mk(KN_F64, 2, xd, dy), mk(KN_F64, 2, xd, x), mk(KN_F64, 1, sd, sc), mk(KN_F64, 2, md, mu),
                         mk(KN_F64, 2, md, iv)};
    kn_tensor *o32[3], *o64[3];
    kn_attr at = attr_i("axis", -1);
    expect_ok(kn_test_run_op(KN_OP_KnLayerNormalizationGrad, 1, &at, 1, t32, 5, o32, NULL, 3, pool));
    expect_ok(kn_test_run_op(KN_OP_KnLayerNormalizationGrad, 1, &at, 1, t64, 5, o64, NULL, 3, pool));
    const char *what[3] = {"LayerNormalizationGrad dx", "dscale", "dbias"};
    for (int k = 0; k < 3; k++) {
        int64_t m = kn_numel(o64[k]);
        double *ref = malloc(sizeof(double) * (size_t)m);
        for (int64_t i = 0; i < m; i++) ref[i] = kn_get_f64(o64[k], i);
        expect_close(o32[k], ref, m, 2e-7, 1e-6, what[k]);
        free(ref);
    }
    free_all(o32, 3);
    free_all(o64, 3);
    free_all(t32, 5);
    free_all(t64, 5);
    free(dy);
    free(x);
    free(sc);
    free(mu);
    free(iv);
}

START_TEST(ln_grad_fast) {
    kn_threadpool *pool = kn_threadpool_create(3);
    check_ln_grad(5, 7, pool);
    check_ln_grad(150, 33, pool); /* more rows than the 64 blocks, uneven */
    check_ln_grad(150, 33, NULL);
    kn_threadpool_free(pool);
}
END_TEST

int main(void) {
    Suite *s = suite_create("grad_fast");
    TCase *tc = tcase_create("grad_fast");
    tcase_add_test(tc, reduce_sum_to_fast);
    tcase_add_test(tc, gelu_grad_fast);
    tcase_add_test(tc, ln_grad_fast);
    suite_add_tcase(s, tc);
    return kn_test_run_suite(s);
}
