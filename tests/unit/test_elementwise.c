/* Unit tests for the elementwise family: the AVX2/AVX-512 float32 kernels against the scalar
 * reference on many sizes (0, 1, odd tails, large) and special values, broadcasting against a
 * naive index-by-index evaluation (including the multithreaded path), integer edge semantics
 * (overflow wrap, truncating Div, Python-sign Mod, INT64_MIN / -1), NaN/Inf handling, variadic
 * ops, Clip across opsets, Where, Cast / CastLike / BitCast (strings, float8, int4, e8m0), and
 * the errors bad shapes, dtypes and attributes must give. */
#include <stdio.h>
#include "tests/unit/harness.h"
#include "runtime/core/dtype.h"
#include "kernels/cpu/elementwise_simd.h"

static kn_threadpool *test_pool;

static uint32_t rng_state = 987654321u;
static float frand(float lo, float hi) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)((rng_state >> 8) & 0xFFFFFF) / 16777216.0f;
}

/* Runs KN_OP_##ID through the executor's node path (kn_test_run_op); *out is its one output. */
#define RUN(ID, attrs, na, opset, in, n_in, out) \
    kn_test_run_op(KN_OP_##ID, opset, attrs, na, in, n_in, out, NULL, 1, test_pool)

/* ---- SIMD vs scalar reference ---- */

static const int64_t sizes[] = {0, 1, 2, 7, 8, 15, 16, 17, 31, 33, 1000, 1023, 4099};
#define NSIZES (int)(sizeof sizes / sizeof sizes[0])

static void fill(float *x, int64_t n, int range, bool specials) {
    static const float lo[] = {-10.0f, -100.0f, -1.0f, -0.01f, -6.0f};
    static const float special[] = {NAN,     INFINITY, -INFINITY, 0.0f,    -0.0f,  88.5f,   88.72f,
                                    89.0f,   -87.5f,   -104.0f,   -120.0f, 1e-30f, -1e-30f, 0.625f,
                                    -0.625f, 1.0f,     -1.0f,     6.0f,    9.5f,   -9.5f};
    for (int64_t i = 0; i < n; i++) x[i] = frand(lo[range], -lo[range]);
    if (specials)
        for (int64_t i = 0; i < n; i += 3) x[i] = special[(i / 3) % (int64_t)(sizeof special / sizeof special[0])];
}

START_TEST(test_unary_simd_matches_reference) {
    static const char *names[] = {"relu", "sigmoid", "tanh", "exp", "erf", "gelu_erf", "gelu_tanh"};
    int best = kn_ew_best_level();
    int checked = 0;
    for (int level = KN_EW_AVX2; level <= best; level++)
        for (int op = 0; op < KN_EW_UNOP_COUNT; op++)
            for (int si = 0; si < NSIZES; si++)
                for (int range = 0; range < 5; range++) {
                    int64_t n = sizes[si];
                    float *x = malloc(sizeof(float) * (size_t)(n + 1));
                    float *ref = malloc(sizeof(float) * (size_t)(n + 1));
                    float *got = malloc(sizeof(float) * (size_t)(n + 2));
                    fill(x, n, range, range == 0 || range == 4);
                    got[n] = 12345.0f; /* sentinel: nothing written past n */
                    kn_ew_unary_f32_level(KN_EW_SCALAR, op, x, ref, n);
                    kn_ew_unary_f32_level(level, op, x, got, n);
                    for (int64_t i = 0; i < n; i++)
                        FAST_ASSERT(close_to(got[i], ref[i], 4e-6, 1e-12),
                                    "level %d %s n %lld x=%.9g: got %.9g ref %.9g", level, names[op], (long long)n,
                                    x[i], got[i], ref[i]);
                    ck_assert(got[n] == 12345.0f);
                    /* in place gives the same answer */
                    memcpy(got, x, sizeof(float) * (size_t)n);
                    kn_ew_unary_f32_level(level, op, got, got, n);
                    for (int64_t i = 0; i < n; i++) FAST_ASSERT(close_to(got[i], ref[i], 4e-6, 1e-12), "in place");
                    checked++;
                    free(x);
                    free(ref);
                    free(got);
                }
    if (best == KN_EW_SCALAR) ck_assert_int_eq(checked, 0);
    else ck_assert_int_gt(checked, 0);
}
END_TEST

START_TEST(test_unary_reference_values) {
    /* anchor the reference itself on known values */
    float x[] = {0.0f, 1.0f, -1.0f, 2.0f, NAN};
    float y[5];
    kn_ew_unary_f32_level(KN_EW_SCALAR, KN_EW_ERF, x, y, 5);
    ck_assert(fabsf(y[1] - 0.842700793f) < 1e-7f && fabsf(y[2] + 0.842700793f) < 1e-7f && isnan(y[4]));
    kn_ew_unary_f32_level(KN_EW_SCALAR, KN_EW_GELU_ERF, x, y, 5);
    ck_assert(fabsf(y[1] - 0.841344746f) < 1e-7f && fabsf(y[2] + 0.158655254f) < 1e-7f);
    kn_ew_unary_f32_level(KN_EW_SCALAR, KN_EW_GELU_TANH, x, y, 5);
    ck_assert(fabsf(y[1] - 0.841191990f) < 1e-6f && fabsf(y[3] - 1.954597694f) < 1e-6f);
    kn_ew_unary_f32_level(KN_EW_SCALAR, KN_EW_RELU, x, y, 5);
    ck_assert(y[1] == 1.0f && y[2] == 0.0f && isnan(y[4]));
}
END_TEST

START_TEST(test_binary_simd_matches_reference) {
    int best = kn_ew_best_level();
    for (int level = KN_EW_AVX2; level <= best; level++)
        for (int op = 0; op < KN_EW_BINOP_COUNT; op++)
            for (int si = 0; si < NSIZES; si++)
                for (int mode = 0; mode < 4; mode++) {
                    int64_t n = sizes[si], sa = mode & 1 ? 0 : 1, sb = mode & 2 ? 0 : 1;
                    float *a = malloc(sizeof(float) * (size_t)(n + 1)), *b = malloc(sizeof(float) * (size_t)(n + 1));
                    float *ref = malloc(sizeof(float) * (size_t)(n + 1)),
                          *got = malloc(sizeof(float) * (size_t)(n + 1));
                    fill(a, n, 0, true);
                    fill(b, n, 2, false);
                    if (n > 4) b[4] = 0.0f;
                    if (n > 5) b[5] = -0.0f;
                    kn_ew_binary_f32_level(KN_EW_SCALAR, op, a, sa, b, sb, ref, n);
                    kn_ew_binary_f32_level(level, op, a, sa, b, sb, got, n);
                    for (int64_t i = 0; i < n; i++)
                        FAST_ASSERT((isnan(ref[i]) && isnan(got[i])) || memcmp(&ref[i], &got[i], 4) == 0,
                                    "level %d op %d mode %d n %lld i %lld: %g vs %g", level, op, mode, (long long)n,
                                    (long long)i, got[i], ref[i]);
                    free(a);
                    free(b);
                    free(ref);
                    free(got);
                }
}
END_TEST

/* ---- broadcasting through the kernels against a naive evaluation ---- */

static int64_t bidx(const kn_tensor *t, const kn_tensor *out, int64_t flat) {
    int64_t idx = 0, stride = 1;
    for (int d = out->ndim - 1; d >= 0; d--) {
        int64_t c = flat % out->dims[d];
        flat /= out->dims[d];
        int td = d - (out->ndim - t->ndim);
        if (td >= 0) {
            if (t->dims[td] != 1) idx += c * stride;
            stride *= t->dims[td];
        }
    }
    return idx;
}

START_TEST(test_broadcast_f32_arith) {
    static const struct {
        int na;
        int64_t a[4];
        int nb;
        int64_t b[4];
    } cases[] = {
        {3, {2, 3, 4}, 1, {4}},
        {3, {2, 3, 4}, 2, {3, 1}},
        {3, {2, 1, 4}, 3, {1, 3, 1}},
        {1, {1}, 1, {5}},
        {0, {0}, 2, {2, 2}},
        {2, {5, 1}, 2, {1, 5}},
        {3, {2, 3, 0}, 2, {3, 1}},
        {3, {64, 300, 17}, 2, {300, 1}},
        {2, {1000, 129}, 2, {1000, 129}},
        {4, {3, 1, 5, 7}, 4, {1, 4, 5, 1}},
        {2, {7, 9}, 0, {0}},
        {3, {40, 50, 60}, 1, {1}},
    };
    const int ops[] = {KN_OP_Add, KN_OP_Sub, KN_OP_Mul, KN_OP_Div, KN_OP_Pow, KN_OP_Max};
    const char *names[] = {"Add", "Sub", "Mul", "Div", "Pow", "Max"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int swap = 0; swap < 2; swap++)
            for (int op = 0; op < 6; op++) {
                kn_tensor *a = mk(KN_F32, cases[c].na, cases[c].a, NULL),
                          *b = mk(KN_F32, cases[c].nb, cases[c].b, NULL);
                if (swap) {
                    kn_tensor *t = a;
                    a = b;
                    b = t;
                }
                for (int64_t i = 0; i < kn_numel(a); i++) ((float *)a->data)[i] = frand(0.5f, 3.0f);
                for (int64_t i = 0; i < kn_numel(b); i++) ((float *)b->data)[i] = frand(-3.0f, 3.0f);
                const kn_tensor *in[2] = {a, b};
                kn_tensor *y;
                expect_ok(kn_test_run_op(ops[op], 17, NULL, 0, in, 2, &y, NULL, 1, test_pool));
                for (int64_t i = 0; i < kn_numel(y); i++) {
                    float va = ((float *)a->data)[bidx(a, y, i)], vb = ((float *)b->data)[bidx(b, y, i)];
                    float r = op == 0 ? va + vb
                        : op == 1     ? va - vb
                        : op == 2     ? va * vb
                        : op == 3     ? va / vb
                        : op == 4     ? (float)pow(va, vb)
                                      : fmaxf(va, vb);
                    FAST_ASSERT(close_to(((float *)y->data)[i], r, 1e-6, 0), "case %zu %s i %lld", c, names[op],
                                (long long)i);
                }
                kn_tensor_free(a);
                kn_tensor_free(b);
                kn_tensor_free(y);
            }
}
END_TEST

START_TEST(test_broadcast_int_and_compare) {
    int64_t da[] = {4, 1, 3}, db[] = {5, 1};
    kn_tensor *a = mk(KN_I32, 3, da, NULL), *b = mk(KN_I32, 2, db, NULL);
    for (int i = 0; i < 12; i++) ((int32_t *)a->data)[i] = i * 7 - 40;
    for (int i = 0; i < 5; i++) ((int32_t *)b->data)[i] = i - 2;
    const kn_tensor *in[2] = {a, b};
    kn_tensor *y;
    expect_ok(RUN(Add, NULL, 0, 14, in, 2, &y));
    ck_assert_int_eq(y->ndim, 3);
    ck_assert(y->dims[0] == 4 && y->dims[1] == 5 && y->dims[2] == 3 && y->dtype == KN_I32);
    for (int64_t i = 0; i < kn_numel(y); i++)
        FAST_ASSERT(((int32_t *)y->data)[i] ==
                        ((int32_t *)a->data)[bidx(a, y, i)] + ((int32_t *)b->data)[bidx(b, y, i)],
                    "add %lld", (long long)i);
    kn_tensor_free(y);
    expect_ok(RUN(Greater, NULL, 0, 13, in, 2, &y));
    ck_assert(y->dtype == KN_BOOL);
    for (int64_t i = 0; i < kn_numel(y); i++)
        FAST_ASSERT(((uint8_t *)y->data)[i] ==
                        (((int32_t *)a->data)[bidx(a, y, i)] > ((int32_t *)b->data)[bidx(b, y, i)]),
                    "greater %lld", (long long)i);
    kn_tensor_free(y);
    kn_tensor_free(a);
    kn_tensor_free(b);
}
END_TEST

/* ---- integer semantics ---- */

static kn_tensor *i64_op(int op, kn_attr *attrs, int na, const int64_t *a, const int64_t *b, int n) {
    int64_t d[] = {n};
    kn_tensor *ta = mk_raw(KN_I64, 1, d, a), *tb = mk_raw(KN_I64, 1, d, b);
    const kn_tensor *in[2] = {ta, tb};
    kn_tensor *y;
    expect_ok(kn_test_run_op(op, 18, attrs, na, in, 2, &y, NULL, 1, test_pool));
    kn_tensor_free(ta);
    kn_tensor_free(tb);
    return y;
}

START_TEST(test_int64_edges) {
    const int64_t a[] = {INT64_MAX, INT64_MIN, -7, 7, -7, 7, INT64_MIN, 5};
    const int64_t b[] = {1, -1, 2, -2, -2, 2, -1, 0};
    kn_tensor *y = i64_op(KN_OP_Add, NULL, 0, a, b, 8);
    const int64_t *v = y->data;
    ck_assert(v[0] == INT64_MIN && v[1] == INT64_MAX && v[2] == -5);
    kn_tensor_free(y);
    y = i64_op(KN_OP_Div, NULL, 0, a, b, 8);
    v = y->data;
    ck_assert(v[2] == -3 && v[3] == -3 && v[4] == 3 && v[5] == 3); /* truncation toward zero */
    ck_assert(v[6] == INT64_MIN && v[7] == 0);                     /* no trap on INT64_MIN/-1 or /0 */
    kn_tensor_free(y);
    y = i64_op(KN_OP_Mod, NULL, 0, a, b, 8);
    v = y->data;
    ck_assert(v[2] == 1 && v[3] == -1 && v[4] == -1 && v[5] == 1); /* sign of the divisor */
    kn_tensor_free(y);
    kn_attr fm = attr_i("fmod", 1);
    y = i64_op(KN_OP_Mod, &fm, 1, a, b, 8);
    v = y->data;
    ck_assert(v[2] == -1 && v[3] == 1 && v[4] == -1 && v[5] == 1); /* sign of the dividend */
    kn_tensor_free(y);
    y = i64_op(KN_OP_Mul, NULL, 0, a, b, 8);
    v = y->data;
    ck_assert(v[1] == INT64_MIN && v[0] == INT64_MAX); /* INT64_MIN * -1 wraps */
    kn_tensor_free(y);
    const int64_t pa[] = {2, 3, -2, 10}, pb[] = {10, 3, 3, 18};
    y = i64_op(KN_OP_Pow, NULL, 0, pa, pb, 4);
    v = y->data;
    ck_assert(v[0] == 1024 && v[1] == 27 && v[2] == -8 && v[3] == 1000000000000000000LL);
    kn_tensor_free(y);
}
END_TEST

START_TEST(test_bit_ops) {
    int64_t d[] = {4};
    kn_tensor *a = mk(KN_U8, 1, d, NULL), *b = mk(KN_U8, 1, d, NULL);
    uint8_t av[] = {1, 255, 16, 3}, bv[] = {7, 1, 4, 9};
    memcpy(a->data, av, 4);
    memcpy(b->data, bv, 4);
    const kn_tensor *in[2] = {a, b};
    kn_attr left = attr_s("direction", "LEFT"), right = attr_s("direction", "RIGHT"), bad = attr_s("direction", "UP");
    kn_tensor *y;
    expect_ok(RUN(BitShift, &left, 1, 11, in, 2, &y));
    uint8_t *v = y->data;
    ck_assert(v[0] == 128 && v[1] == 254 && v[2] == 0 && v[3] == 0);
    kn_tensor_free(y);
    expect_ok(RUN(BitShift, &right, 1, 11, in, 2, &y));
    v = y->data;
    ck_assert(v[0] == 0 && v[1] == 127 && v[2] == 1 && v[3] == 0);
    kn_tensor_free(y);
    expect_err(RUN(BitShift, &bad, 1, 11, in, 2, &y));
    expect_ok(RUN(Sub, NULL, 0, 14, in, 2, &y));
    v = y->data;
    ck_assert(v[0] == 250 && v[3] == 250); /* unsigned wrap */
    kn_tensor_free(y);
    expect_ok(RUN(BitwiseXor, NULL, 0, 18, in, 2, &y));
    v = y->data;
    ck_assert(v[0] == 6 && v[1] == 254);
    kn_tensor_free(y);
    const kn_tensor *one[1] = {a};
    expect_ok(RUN(BitwiseNot, NULL, 0, 18, one, 1, &y));
    ck_assert(((uint8_t *)y->data)[0] == 254 && ((uint8_t *)y->data)[1] == 0);
    kn_tensor_free(y);
    kn_tensor_free(a);
    kn_tensor_free(b);
}
END_TEST

/* ---- float semantics and special values ---- */

START_TEST(test_float_specials) {
    int64_t d[] = {6};
    float av[] = {NAN, 1.0f, -INFINITY, 2.5f, -0.5f, -5.5f}, bv[] = {1.0f, NAN, 0.0f, 2.0f, 3.0f, 2.0f};
    kn_tensor *a = mk_raw(KN_F32, 1, d, av), *b = mk_raw(KN_F32, 1, d, bv);
    const kn_tensor *in[2] = {a, b}, *one[1] = {a};
    kn_tensor *y;
    expect_ok(RUN(Max, NULL, 0, 13, in, 2, &y));
    ck_assert(isnan(((float *)y->data)[0]) && isnan(((float *)y->data)[1]) && ((float *)y->data)[2] == 0.0f);
    kn_tensor_free(y);
    expect_ok(RUN(Equal, NULL, 0, 13, in, 2, &y));
    ck_assert(((uint8_t *)y->data)[0] == 0 && ((uint8_t *)y->data)[1] == 0);
    kn_tensor_free(y);
    expect_ok(RUN(Round, NULL, 0, 11, one, 1, &y));
    ck_assert(((float *)y->data)[3] == 2.0f && ((float *)y->data)[4] == 0.0f && ((float *)y->data)[5] == -6.0f);
    kn_tensor_free(y);
    expect_ok(RUN(Relu, NULL, 0, 14, one, 1, &y));
    ck_assert(isnan(((float *)y->data)[0]) && ((float *)y->data)[2] == 0.0f && ((float *)y->data)[3] == 2.5f);
    kn_tensor_free(y);
    expect_ok(RUN(IsNaN, NULL, 0, 13, one, 1, &y));
    ck_assert(y->dtype == KN_BOOL && ((uint8_t *)y->data)[0] == 1 && ((uint8_t *)y->data)[1] == 0);
    kn_tensor_free(y);
    kn_attr neg_only[2] = {attr_i("detect_positive", 0), attr_i("detect_negative", 1)};
    expect_ok(RUN(IsInf, neg_only, 2, 10, one, 1, &y));
    ck_assert(((uint8_t *)y->data)[2] == 1 && ((uint8_t *)y->data)[0] == 0);
    kn_tensor_free(y);
    kn_attr fm = attr_i("fmod", 0);
    expect_ok(RUN(Mod, &fm, 1, 13, in, 2, &y));
    ck_assert(fabsf(((float *)y->data)[5] - 0.5f) < 1e-6f && fabsf(((float *)y->data)[4] - 2.5f) < 1e-6f);
    kn_tensor_free(y);
    expect_ok(RUN(Sign, NULL, 0, 13, one, 1, &y));
    ck_assert(isnan(((float *)y->data)[0]) && ((float *)y->data)[2] == -1.0f && ((float *)y->data)[1] == 1.0f);
    kn_tensor_free(y);
    kn_tensor_free(a);
    kn_tensor_free(b);
}
END_TEST

START_TEST(test_activations_kernel) {
    /* the full kernels (SIMD where available) on a large tensor, split over the pool */
    int64_t d[] = {3, 70001};
    kn_tensor *x = mk(KN_F32, 2, d, NULL);
    float *xv = x->data;
    for (int64_t i = 0; i < kn_numel(x); i++) xv[i] = frand(-8.0f, 8.0f);
    const kn_tensor *in[1] = {x};
    kn_tensor *y;
    kn_attr tanh_approx = attr_s("approximate", "tanh");
    expect_ok(RUN(Gelu, &tanh_approx, 1, 20, in, 1, &y));
    for (int64_t i = 0; i < kn_numel(x); i++) {
        double v = xv[i];
        double r = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
        FAST_ASSERT(close_to(((float *)y->data)[i], r, 5e-6, 1e-12), "gelu tanh x=%g", v);
    }
    kn_tensor_free(y);
    expect_ok(RUN(Gelu, NULL, 0, 20, in, 1, &y));
    for (int64_t i = 0; i < kn_numel(x); i++) {
        double v = xv[i];
        FAST_ASSERT(close_to(((float *)y->data)[i], 0.5 * v * erfc(-v / sqrt(2.0)), 5e-6, 1e-12), "gelu x=%g", v);
    }
    kn_tensor_free(y);
    kn_attr bad = attr_s("approximate", "cubic");
    expect_err(RUN(Gelu, &bad, 1, 20, in, 1, &y));
    expect_ok(RUN(Sigmoid, NULL, 0, 13, in, 1, &y));
    for (int64_t i = 0; i < kn_numel(x); i++)
        FAST_ASSERT(close_to(((float *)y->data)[i], 1 / (1 + exp(-(double)xv[i])), 5e-6, 1e-12), "sigmoid x=%g", xv[i]);
    kn_tensor_free(y);
    kn_attr la = attr_f("alpha", 0.1f);
    expect_ok(RUN(LeakyRelu, &la, 1, 16, in, 1, &y));
    for (int64_t i = 0; i < kn_numel(x); i++)
        FAST_ASSERT(close_to(((float *)y->data)[i], xv[i] < 0 ? 0.1f * xv[i] : xv[i], 1e-6, 0), "leakyrelu x=%g",
                    xv[i]);
    kn_tensor_free(y);
    expect_ok(RUN(Softplus, NULL, 0, 1, in, 1, &y));
    for (int64_t i = 0; i < kn_numel(x); i++)
        FAST_ASSERT(close_to(((float *)y->data)[i], log1p(exp((double)xv[i])), 1e-6, 1e-12), "softplus x=%g", xv[i]);
    kn_tensor_free(y);
    kn_tensor_free(x);
    /* float16 through the generic path */
    int64_t d3[] = {3};
    kn_tensor *h = mk(KN_F16, 1, d3, NULL);
    uint16_t *hv = h->data;
    hv[0] = kn_f32_to_f16(-1.0f);
    hv[1] = kn_f32_to_f16(0.5f);
    hv[2] = kn_f32_to_f16(2.0f);
    const kn_tensor *hin[1] = {h};
    expect_ok(RUN(Tanh, NULL, 0, 13, hin, 1, &y));
    ck_assert(y->dtype == KN_F16);
    ck_assert(fabsf(kn_f16_to_f32(((uint16_t *)y->data)[1]) - tanhf(0.5f)) < 1e-3f);
    kn_tensor_free(y);
    kn_tensor_free(h);
}
END_TEST

START_TEST(test_swiglu_prelu) {
    int64_t d[] = {2, 3};
    float av[] = {1, -2, 3, 4, -1, 0.5f}, bv[] = {0.5f, 1, -1, 2, 2, -1};
    kn_tensor *a = mk_raw(KN_F32, 2, d, av), *b = mk_raw(KN_F32, 2, d, bv);
    const kn_tensor *in[2] = {a, b};
    kn_tensor *y;
    kn_attr al = attr_f("alpha", 0.5f);
    expect_ok(RUN(SwiGLU, &al, 1, 28, in, 2, &y));
    for (int i = 0; i < 6; i++)
        ck_assert(close_to(((float *)y->data)[i], av[i] / (1 + exp(-0.5 * av[i])) * bv[i], 1e-6, 0));
    kn_tensor_free(y);
    int64_t ds[] = {3};
    float sv[] = {0.1f, 0.2f, 0.3f};
    kn_tensor *s = mk_raw(KN_F32, 1, ds, sv);
    const kn_tensor *pin[2] = {a, s};
    expect_ok(RUN(PRelu, NULL, 0, 16, pin, 2, &y));
    ck_assert(((float *)y->data)[1] == -2 * 0.2f && ((float *)y->data)[4] == -1 * 0.2f && ((float *)y->data)[3] == 4);
    kn_tensor_free(y);
    /* PRelu-6: a 1-D slope runs along axis 1 */
    int64_t d3[] = {2, 3, 2};
    float xv3[12];
    for (int i = 0; i < 12; i++) xv3[i] = -1.0f - (float)i;
    kn_tensor *x3 = mk_raw(KN_F32, 3, d3, xv3);
    const kn_tensor *cin[2] = {x3, s};
    expect_ok(RUN(PRelu, NULL, 0, 6, cin, 2, &y));
    for (int i = 0; i < 12; i++) ck_assert(((float *)y->data)[i] == xv3[i] * sv[(i / 2) % 3]);
    kn_tensor_free(y);
    expect_err(RUN(PRelu, NULL, 0, 16, cin, 2, &y)); /* not numpy-broadcastable from opset 7 */
    kn_tensor_free(x3);
    /* slope may not grow X */
    const kn_tensor *bad[2] = {s, a};
    expect_err(RUN(PRelu, NULL, 0, 16, bad, 2, &y));
    /* SwiGLU does not broadcast */
    const kn_tensor *sw_bad[2] = {a, s};
    expect_err(RUN(SwiGLU, NULL, 0, 28, sw_bad, 2, &y));
    kn_tensor_free(a);
    kn_tensor_free(b);
    kn_tensor_free(s);
}
END_TEST

/* ---- variadic, Clip, Where ---- */

START_TEST(test_variadic) {
    int64_t d1[] = {3}, d2[] = {2, 1}, d3[] = {1};
    float v1[] = {1, 2, 3}, v2[] = {10, 20}, v3[] = {100};
    kn_tensor *a = mk_raw(KN_F32, 1, d1, v1), *b = mk_raw(KN_F32, 2, d2, v2), *c = mk_raw(KN_F32, 1, d3, v3);
    const kn_tensor *in[3] = {a, b, c};
    kn_tensor *y;
    expect_ok(RUN(Sum, NULL, 0, 13, in, 3, &y));
    ck_assert(y->ndim == 2 && y->dims[0] == 2 && y->dims[1] == 3);
    float *v = y->data;
    ck_assert(v[0] == 111 && v[2] == 113 && v[3] == 121 && v[5] == 123);
    kn_tensor_free(y);
    expect_ok(RUN(Mean, NULL, 0, 13, in, 3, &y));
    ck_assert(fabsf(((float *)y->data)[5] - 41.0f) < 1e-5f);
    kn_tensor_free(y);
    expect_ok(RUN(Min, NULL, 0, 13, in, 3, &y));
    ck_assert(((float *)y->data)[4] == 2 && ((float *)y->data)[0] == 1);
    kn_tensor_free(y);
    expect_ok(RUN(Max, NULL, 0, 13, in, 1, &y));
    ck_assert(y->ndim == 1 && ((float *)y->data)[2] == 3);
    kn_tensor_free(y);
    int64_t dbad[] = {4};
    kn_tensor *bad = mk(KN_F32, 1, dbad, NULL);
    const kn_tensor *bin[2] = {a, bad};
    expect_err(RUN(Sum, NULL, 0, 13, bin, 2, &y));
    kn_tensor_free(bad);
    kn_tensor_free(a);
    kn_tensor_free(b);
    kn_tensor_free(c);
}
END_TEST

START_TEST(test_clip) {
    int64_t d[] = {5};
    float xv[] = {-3, -1, 0, 1, NAN};
    kn_tensor *x = mk_raw(KN_F32, 1, d, xv);
    kn_tensor *y;
    kn_attr mm[2] = {attr_f("min", -2.0f), attr_f("max", 0.5f)};
    const kn_tensor *in1[1] = {x};
    expect_ok(RUN(Clip, mm, 2, 6, in1, 1, &y));
    float *v = y->data;
    ck_assert(v[0] == -2 && v[1] == -1 && v[3] == 0.5f && isnan(v[4]));
    kn_tensor_free(y);
    float lo = 0.5f, hi = -1.0f;
    kn_tensor *tlo = mk_raw(KN_F32, 0, NULL, &lo), *thi = mk_raw(KN_F32, 0, NULL, &hi);
    const kn_tensor *in3[3] = {x, NULL, thi};
    expect_ok(RUN(Clip, NULL, 0, 13, in3, 3, &y));
    ck_assert(((float *)y->data)[0] == -3 && ((float *)y->data)[3] == -1);
    kn_tensor_free(y);
    const kn_tensor *in4[3] = {x, tlo, thi}; /* min > max: everything becomes max */
    expect_ok(RUN(Clip, NULL, 0, 13, in4, 3, &y));
    ck_assert(((float *)y->data)[0] == -1 && ((float *)y->data)[2] == -1);
    kn_tensor_free(y);
    int64_t dv[] = {2};
    kn_tensor *vec = mk(KN_F32, 1, dv, NULL);
    const kn_tensor *in5[2] = {x, vec};
    expect_err(RUN(Clip, NULL, 0, 13, in5, 2, &y));
    kn_tensor *xi = mk(KN_I32, 1, d, NULL), *ilo = mk(KN_I32, 0, NULL, NULL);
    int32_t xiv[] = {-5, 0, 5, 10, 100};
    memcpy(xi->data, xiv, sizeof xiv);
    *(int32_t *)ilo->data = 3;
    const kn_tensor *in6[2] = {xi, ilo};
    expect_ok(RUN(Clip, NULL, 0, 13, in6, 2, &y));
    ck_assert(((int32_t *)y->data)[0] == 3 && ((int32_t *)y->data)[4] == 100);
    kn_tensor_free(y);
    kn_tensor_free(x);
    kn_tensor_free(tlo);
    kn_tensor_free(thi);
    kn_tensor_free(vec);
    kn_tensor_free(xi);
    kn_tensor_free(ilo);
}
END_TEST

START_TEST(test_where) {
    int64_t dc[] = {2, 1}, dx[] = {3}, dy[] = {1};
    kn_tensor *c = mk(KN_BOOL, 2, dc, NULL), *x = mk(KN_I64, 1, dx, NULL), *yv = mk(KN_I64, 1, dy, NULL);
    ((uint8_t *)c->data)[0] = 1;
    for (int i = 0; i < 3; i++) ((int64_t *)x->data)[i] = i + 1;
    ((int64_t *)yv->data)[0] = -9;
    const kn_tensor *in[3] = {c, x, yv};
    kn_tensor *o;
    expect_ok(RUN(Where, NULL, 0, 16, in, 3, &o));
    ck_assert(o->ndim == 2 && o->dims[0] == 2 && o->dims[1] == 3 && o->dtype == KN_I64);
    int64_t *v = o->data;
    ck_assert(v[0] == 1 && v[2] == 3 && v[3] == -9 && v[5] == -9);
    kn_tensor_free(o);
    /* strings are copied, not aliased */
    kn_tensor *sx = mk(KN_STRING, 1, dx, NULL), *sy = mk(KN_STRING, 1, dy, NULL);
    const char *words[] = {"a", "bb", "ccc"};
    for (int i = 0; i < 3; i++) ((char **)sx->data)[i] = strdup(words[i]);
    ((char **)sy->data)[0] = strdup("z");
    const kn_tensor *sin[3] = {c, sx, sy};
    expect_ok(RUN(Where, NULL, 0, 16, sin, 3, &o));
    char **s = o->data;
    ck_assert_str_eq(s[1], "bb");
    ck_assert_str_eq(s[4], "z");
    ck_assert_ptr_ne(s[4], ((char **)sy->data)[0]);
    kn_tensor_free(o);
    const kn_tensor *mixed[3] = {c, x, sy};
    expect_err(RUN(Where, NULL, 0, 16, mixed, 3, &o));
    kn_tensor_free(c);
    kn_tensor_free(x);
    kn_tensor_free(yv);
    kn_tensor_free(sx);
    kn_tensor_free(sy);
}
END_TEST

/* ---- Cast family ---- */

static kn_tensor *cast_to(const kn_tensor *x, kn_dtype to, kn_attr *extra, int n_extra) {
    kn_attr attrs[4];
    attrs[0] = attr_i("to", to);
    for (int i = 0; i < n_extra; i++) attrs[1 + i] = extra[i];
    const kn_tensor *in[1] = {x};
    kn_tensor *y;
    expect_ok(RUN(Cast, attrs, 1 + n_extra, 25, in, 1, &y));
    ck_assert_int_eq(y->dtype, to);
    return y;
}

START_TEST(test_cast_strings) {
    int64_t d[] = {7};
    float xv[] = {0.47892547f, 999999.0f, 1e-7f, NAN, INFINITY, -INFINITY, 1e-4f};
    kn_tensor *x = mk_raw(KN_F32, 1, d, xv);
    kn_tensor *s = cast_to(x, KN_STRING, NULL, 0);
    /* numpy's astype(str): float32 switches to exponents at 1e6 and below 1e-4 */
    const char *expect[] = {"0.47892547", "999999.0", "1e-07", "nan", "inf", "-inf", "1e-04"};
    for (int i = 0; i < 7; i++) ck_assert_str_eq(((char **)s->data)[i], expect[i]);
    kn_tensor *back = cast_to(s, KN_F32, NULL, 0);
    for (int i = 0; i < 7; i++) ck_assert(close_to(((float *)back->data)[i], xv[i], 0, 0));
    kn_tensor_free(back);
    /* spec spellings, and big integers parsed exactly */
    const char *texts[] = {"+INF", "-inf", "NaN", "1E8", "-1e-5", "9007199254740993", "100"};
    for (int i = 0; i < 7; i++) {
        free(((char **)s->data)[i]);
        ((char **)s->data)[i] = strdup(texts[i]);
    }
    back = cast_to(s, KN_F64, NULL, 0);
    double *dv = back->data;
    ck_assert(isinf(dv[0]) && dv[0] > 0 && isinf(dv[1]) && dv[1] < 0 && isnan(dv[2]) && dv[3] == 1e8 && dv[4] == -1e-5);
    kn_tensor_free(back);
    back = cast_to(s, KN_I64, NULL, 0);
    ck_assert(((int64_t *)back->data)[5] == 9007199254740993LL && ((int64_t *)back->data)[6] == 100);
    kn_tensor_free(back);
    kn_tensor_free(s);
    kn_tensor *i = mk(KN_I32, 1, d, NULL);
    ((int32_t *)i->data)[0] = -17;
    s = cast_to(i, KN_STRING, NULL, 0);
    ck_assert_str_eq(((char **)s->data)[0], "-17");
    kn_tensor_free(s);
    kn_tensor_free(i);
    /* float16 prints its own shortest form, as numpy does */
    kn_tensor *h = mk(KN_F16, 1, d, NULL);
    ((uint16_t *)h->data)[0] = kn_f32_to_f16(0.1f);
    ((uint16_t *)h->data)[1] = kn_f32_to_f16(65504.0f);
    ((uint16_t *)h->data)[3] = kn_f32_to_f16(999.0f);
    s = cast_to(h, KN_STRING, NULL, 0);
    ck_assert_str_eq(((char **)s->data)[0], "0.1");
    ck_assert_str_eq(((char **)s->data)[1], "6.55e+04");
    ck_assert_str_eq(((char **)s->data)[2], "0.0");
    ck_assert_str_eq(((char **)s->data)[3], "999.0");
    kn_tensor_free(s);
    kn_tensor_free(h);
    kn_tensor_free(x);
}
END_TEST

START_TEST(test_cast_numeric) {
    int64_t d[] = {6};
    float xv[] = {-9.0f, 7.9f, 300.0f, 1e6f, -0.0f, 0.47892547f};
    kn_tensor *x = mk_raw(KN_F32, 1, d, xv);
    kn_tensor *y = cast_to(x, KN_I4, NULL, 0);
    int8_t *i4 = y->data;
    ck_assert(i4[0] == 7 && i4[1] == 7); /* -9 wraps to 7 in 4 bits, 7.9 truncates */
    kn_tensor_free(y);
    y = cast_to(x, KN_U8, NULL, 0);
    ck_assert(((uint8_t *)y->data)[2] == 44); /* 300 wraps */
    kn_tensor_free(y);
    y = cast_to(x, KN_F8E4M3FN, NULL, 0);
    ck_assert(((uint8_t *)y->data)[3] == 0x7e && ((uint8_t *)y->data)[4] == 0x80);
    kn_tensor_free(y);
    kn_attr nosat = attr_i("saturate", 0);
    y = cast_to(x, KN_F8E4M3FN, &nosat, 1);
    ck_assert(((uint8_t *)y->data)[3] == 0x7f);
    kn_tensor_free(y);
    y = cast_to(x, KN_F8E5M2FNUZ, &nosat, 1);
    ck_assert(((uint8_t *)y->data)[3] == 0x80 && ((uint8_t *)y->data)[4] == 0x00);
    kn_tensor_free(y);
    y = cast_to(x, KN_BF16, NULL, 0);
    ck_assert(((uint16_t *)y->data)[5] == kn_f32_to_bf16(0.47892547f));
    kn_tensor_free(y);
    y = cast_to(x, KN_BOOL, NULL, 0);
    ck_assert(((uint8_t *)y->data)[0] == 1 && ((uint8_t *)y->data)[4] == 0);
    kn_tensor_free(y);
    /* e8m0: round up (default), down, nearest */
    float ev[] = {0.0f, 0.124f, 1.1f, 2.0f, 3.0f, 1.4f};
    kn_tensor *e = mk_raw(KN_F32, 1, d, ev);
    y = cast_to(e, KN_F8E8M0, NULL, 0);
    uint8_t *u = y->data;
    ck_assert(u[0] == 0 && u[1] == 124 && u[2] == 128 && u[3] == 128 && u[4] == 129);
    kn_tensor_free(y);
    kn_attr down = attr_s("round_mode", "down"), nearest = attr_s("round_mode", "nearest");
    y = cast_to(e, KN_F8E8M0, &down, 1);
    ck_assert(((uint8_t *)y->data)[2] == 127 && ((uint8_t *)y->data)[4] == 128);
    kn_tensor_free(y);
    y = cast_to(e, KN_F8E8M0, &nearest, 1);
    ck_assert(((uint8_t *)y->data)[5] == 127 && ((uint8_t *)y->data)[4] == 129);
    kn_tensor_free(y);
    kn_tensor *back = cast_to(e, KN_F8E8M0, NULL, 0);
    y = cast_to(back, KN_F32, NULL, 0);
    ck_assert(((float *)y->data)[3] == 2.0f && ((float *)y->data)[4] == 4.0f);
    kn_tensor_free(y);
    kn_tensor_free(back);
    kn_tensor_free(e);
    /* int64 -> float32 rounds once */
    kn_tensor *big = mk(KN_I64, 1, d, NULL);
    ((int64_t *)big->data)[0] = (1LL << 53) + 1;
    ((int64_t *)big->data)[1] = (1LL << 24) + 1;
    y = cast_to(big, KN_F32, NULL, 0);
    ck_assert(((float *)y->data)[1] == 16777216.0f);
    kn_tensor_free(y);
    y = cast_to(big, KN_F64, NULL, 0);
    ck_assert(((double *)y->data)[1] == 16777217.0);
    kn_tensor_free(y);
    kn_tensor_free(big);
    /* CastLike takes the dtype of its second input */
    kn_tensor *like = mk(KN_F16, 1, d, NULL);
    const kn_tensor *in[2] = {x, like};
    expect_ok(RUN(CastLike, NULL, 0, 19, in, 2, &y));
    ck_assert(y->dtype == KN_F16 && ((uint16_t *)y->data)[0] == kn_f32_to_f16(-9.0f));
    kn_tensor_free(y);
    kn_tensor_free(like);
    kn_tensor_free(x);
}
END_TEST

START_TEST(test_bitcast) {
    int64_t d[] = {3};
    float xv[] = {1.0f, -2.5f, 3.75f};
    kn_tensor *x = mk_raw(KN_F32, 1, d, xv);
    kn_attr to = attr_i("to", KN_I32);
    const kn_tensor *in[1] = {x};
    kn_tensor *y;
    expect_ok(RUN(BitCast, &to, 1, 26, in, 1, &y));
    ck_assert(((int32_t *)y->data)[0] == 1065353216 && ((int32_t *)y->data)[1] == -1071644672);
    kn_tensor_free(y);
    kn_attr to64 = attr_i("to", KN_I64);
    expect_err(RUN(BitCast, &to64, 1, 26, in, 1, &y));
    kn_tensor *i4 = mk(KN_I4, 1, d, NULL);
    int8_t iv[] = {-1, 7, -8};
    memcpy(i4->data, iv, 3);
    kn_attr tou4 = attr_i("to", KN_U4);
    const kn_tensor *in4[1] = {i4};
    expect_ok(RUN(BitCast, &tou4, 1, 26, in4, 1, &y));
    ck_assert(((uint8_t *)y->data)[0] == 15 && ((uint8_t *)y->data)[1] == 7 && ((uint8_t *)y->data)[2] == 8);
    kn_tensor_free(y);
    kn_tensor_free(i4);
    kn_tensor_free(x);
}
END_TEST

/* ---- errors and empty tensors ---- */

START_TEST(test_errors_and_empty) {
    int64_t d1[] = {2, 3}, d2[] = {4};
    kn_tensor *a = mk(KN_F32, 2, d1, NULL), *b = mk(KN_F32, 1, d2, NULL), *i = mk(KN_I32, 2, d1, NULL);
    const kn_tensor *in[2] = {a, b};
    kn_tensor *y;
    expect_err(RUN(Add, NULL, 0, 14, in, 2, &y)); /* 3 vs 4 */
    const kn_tensor *mixed[2] = {a, i};
    expect_err(RUN(Mul, NULL, 0, 14, mixed, 2, &y)); /* float vs int */
    const kn_tensor *ints[1] = {i};
    expect_err(RUN(Sqrt, NULL, 0, 13, ints, 1, &y)); /* Sqrt has no int kernel */
    expect_err(RUN(And, NULL, 0, 7, mixed, 2, &y));
    kn_attr bad_to = attr_i("to", 99);
    const kn_tensor *one[1] = {a};
    expect_err(RUN(Cast, &bad_to, 1, 21, one, 1, &y));
    expect_err(RUN(Cast, NULL, 0, 21, one, 1, &y));
    const kn_tensor *missing[2] = {a, NULL};
    expect_err(RUN(Add, NULL, 0, 14, missing, 2, &y));
    /* empty tensors: shapes propagate, nothing is touched */
    int64_t de[] = {0, 3}, dr[] = {3};
    kn_tensor *e = mk(KN_F32, 2, de, NULL), *r = mk(KN_F32, 1, dr, NULL);
    const kn_tensor *ein[2] = {e, r};
    expect_ok(RUN(Add, NULL, 0, 14, ein, 2, &y));
    ck_assert(y->ndim == 2 && y->dims[0] == 0 && y->dims[1] == 3);
    kn_tensor_free(y);
    const kn_tensor *eone[1] = {e};
    expect_ok(RUN(Exp, NULL, 0, 13, eone, 1, &y));
    ck_assert(kn_numel(y) == 0);
    kn_tensor_free(y);
    /* static inference with unknown dims propagates them */
    kn_tensor u = {0};
    u.dtype = KN_F32;
    u.ndim = 2;
    u.dims[0] = -1;
    u.dims[1] = 3;
    kn_tensor o = {0};
    kn_tensor *outs[1] = {&o};
    const kn_tensor *uin[2] = {&u, r};
    expect_ok(kn_test_infer(KN_OP_Add, 14, NULL, 0, uin, 2, outs, 1));
    ck_assert(o.ndim == 2 && o.dims[0] == -1 && o.dims[1] == 3);
    kn_tensor_free(e);
    kn_tensor_free(r);
    kn_tensor_free(a);
    kn_tensor_free(b);
    kn_tensor_free(i);
}
END_TEST

static Suite *elementwise_suite(void) {
    Suite *s = suite_create("elementwise");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_unary_simd_matches_reference);
    tcase_add_test(tc, test_unary_reference_values);
    tcase_add_test(tc, test_binary_simd_matches_reference);
    tcase_add_test(tc, test_broadcast_f32_arith);
    tcase_add_test(tc, test_broadcast_int_and_compare);
    tcase_add_test(tc, test_int64_edges);
    tcase_add_test(tc, test_bit_ops);
    tcase_add_test(tc, test_float_specials);
    tcase_add_test(tc, test_activations_kernel);
    tcase_add_test(tc, test_swiglu_prelu);
    tcase_add_test(tc, test_variadic);
    tcase_add_test(tc, test_clip);
    tcase_add_test(tc, test_where);
    tcase_add_test(tc, test_cast_strings);
    tcase_add_test(tc, test_cast_numeric);
    tcase_add_test(tc, test_bitcast);
    tcase_add_test(tc, test_errors_and_empty);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    test_pool = kn_threadpool_create(4);
    int rc = kn_test_run_suite(elementwise_suite());
    kn_threadpool_free(test_pool);
    return rc;
}
