/* The float32 fast paths of the kiln backward ops used in training (kernels/cpu/grad.c) against
 * their plain reference: ReduceSumTo down to trailing axes (bias gradients; column chunks in
 * parallel) equals the general odometer path run on the same values in float64, for shapes with
 * one and several column chunks, leading 1s kept in the target, a full sum, and targets the fast
 * path must leave alone (a middle axis kept); GeluGrad (erf and tanh forms, SIMD erf / exp
 * in float) against the float64 kernel on the same values. */
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

int main(void) {
    Suite *s = suite_create("grad_fast");
    TCase *tc = tcase_create("grad_fast");
    tcase_add_test(tc, reduce_sum_to_fast);
    tcase_add_test(tc, gelu_grad_fast);
    suite_add_tcase(s, tc);
    return kn_test_run_suite(s);
}
