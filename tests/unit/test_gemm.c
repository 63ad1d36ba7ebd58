/* Unit tests for kn_sgemm: every micro-kernel family (scalar, AVX2, AVX-512 where the CPU has
 * them) and the threaded split against the plain reference over many shapes (1x1x1, odd sizes,
 * partial tiles, K slices, skinny M, a BERT-sized slice), transposes, alpha/beta (including
 * beta = 0 over NaN garbage) and padded leading dimensions; the batched variant with broadcast
 * strides; A packed ahead (convolution weights), also over several images' columns side by side;
 * and the MatMul / Gemm / Einsum / Det op kernels end to end through infer + kernel,
 * including Einsum's lowering to batched sgemm against its plain loop, and MatMulInteger's SIMD
 * path against a plain integer sum. */
#include "tests/unit/harness.h"
#include "kernels/cpu/gemm.h"
#include "runtime/core/dtype.h"

static uint32_t rng_state = 2463534242u;
static float frand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xFFFF) / 65536.0f * 2.0f - 1.0f;
}

static kn_threadpool *pool4;

#define ISA_PACKED (-1)   /* check_gemm: kn_sgemm_pack_b + kn_sgemm_packed_run (ta must be false) */
#define ISA_PACKED_A (-2) /* check_gemm: kn_sgemm_pack_a + kn_sgemm_packed_a_run (no transposes, alpha 1) */

/* |got - ref| within a bound that scales with sum |alpha a b| + |beta c| per element. */
static void check_gemm(int isa, kn_threadpool *pool, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                       float beta, int64_t pad) {
    int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    int64_t arows = ta ? K : M, brows = tb ? N : K;
    float *A = malloc(sizeof(float) * (size_t)(arows * lda + 1));
    float *B = malloc(sizeof(float) * (size_t)(brows * ldb + 1));
    float *C = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    float *R = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    float *Aa = malloc(sizeof(float) * (size_t)(arows * lda + 1));
    float *Ba = malloc(sizeof(float) * (size_t)(brows * ldb + 1));
    float *Bound = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    for (int64_t i = 0; i < arows * lda; i++) {
        A[i] = frand();
        Aa[i] = fabsf(A[i]);
    }
    for (int64_t i = 0; i < brows * ldb; i++) {
        B[i] = frand();
        Ba[i] = fabsf(B[i]);
    }
    for (int64_t i = 0; i < M * ldc; i++) {
        /* beta == 0 must ignore whatever C holds, NaN included */
        C[i] = R[i] = beta == 0.0f ? NAN : frand();
        Bound[i] = beta == 0.0f ? 0.0f : fabsf(C[i]);
    }
    if (isa == ISA_PACKED) { /* B packed ahead, as constant weights are */
        kn_sgemm_packed P;
        ck_assert(kn_sgemm_pack_b(tb, K, N, B, ldb, &P));
        kn_sgemm_packed_run(pool, M, alpha, A, lda, &P, beta, C, ldc);
        kn_sgemm_packed_release(&P);
    } else if (isa == ISA_PACKED_A) { /* A packed ahead, as a convolution's constant weights are */
        ck_assert(!ta && !tb && alpha == 1.0f);
        kn_sgemm_packed_a P;
        ck_assert(kn_sgemm_pack_a(M, K, A, lda, &P));
        /* with threads, the caller's workspace (as Conv gives it); without, each task's own */
        float *ws = pool ? aligned_alloc(64, sizeof(float) * (size_t)kn_sgemm_packed_a_ws(&P, N, pool)) : NULL;
        kn_sgemm_packed_a_run(pool, &P, N, B, ldb, beta, C, ldc, ws);
        free(ws);
        kn_sgemm_packed_a_release(&P);
    } else {
        kn_sgemm_isa(pool, isa, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    }
    kn_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
    kn_sgemm_ref(ta, tb, M, N, K, fabsf(alpha), Aa, lda, Ba, ldb, fabsf(beta), Bound, ldc);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < ldc; j++) {
            float g = C[i * ldc + j], r = R[i * ldc + j];
            if (j >= N) { /* padding columns are never written */
                ck_assert_msg(isnan(g) == isnan(r) && (isnan(g) || g == r), "isa %d wrote past N at (%lld,%lld)", isa,
                              (long long)i, (long long)j);
                continue;
            }
            float tol = 2e-6f * (Bound[i * ldc + j] + 1.0f) * (1.0f + sqrtf((float)K) * 0.05f);
            ck_assert_msg(!isnan(g) && fabsf(g - r) <= tol,
                          "isa %s ta=%d tb=%d %lldx%lldx%lld alpha=%g beta=%g pad=%lld: C[%lld,%lld] = %.8g, want %.8g",
                          kn_sgemm_isa_name(isa), ta, tb, (long long)M, (long long)N, (long long)K, alpha, beta,
                          (long long)pad, (long long)i, (long long)j, g, r);
        }
    free(A);
    free(B);
    free(C);
    free(R);
    free(Aa);
    free(Ba);
    free(Bound);
}

static const int64_t shapes[][3] = {
    {1, 1, 1},     {1, 7, 3},      {2, 2, 2},       {17, 33, 65}, {8, 32, 1},   {6, 16, 5},
    {9, 33, 17},   {64, 64, 64},   {95, 97, 400},   {100, 1, 50}, {1, 100, 50}, {3, 200, 77},
    {4, 129, 385}, {130, 70, 800}, {200, 1600, 20}, {5, 3, 0},
};
#define NSHAPES (int)(sizeof shapes / sizeof shapes[0])

START_TEST(test_sgemm_shapes_all_isas) {
    for (int isa = KN_SGEMM_ISA_SCALAR; isa <= KN_SGEMM_ISA_AVX512; isa++)
        for (int s = 0; s < NSHAPES; s++)
            for (int t = 0; t < 4; t++)
                check_gemm(isa, NULL, t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f, 0.0f, 0);
}
END_TEST

START_TEST(test_sgemm_alpha_beta_ld) {
    static const float ab[][2] = {{1, 1}, {0.5f, -2}, {-1.5f, 0}, {2, 0.25f}, {0, 3}};
    for (int isa = KN_SGEMM_ISA_SCALAR; isa <= KN_SGEMM_ISA_AVX512; isa++)
        for (int k = 0; k < 5; k++)
            for (int t = 0; t < 4; t++) {
                check_gemm(isa, NULL, t & 1, t & 2, 17, 33, 65, ab[k][0], ab[k][1], 3);
                check_gemm(isa, NULL, t & 1, t & 2, 37, 70, 500, ab[k][0], ab[k][1], 5);
                check_gemm(isa, NULL, t & 1, t & 2, 3, 100, 20, ab[k][0], ab[k][1], 1);
            }
}
END_TEST

START_TEST(test_sgemm_threaded) {
    for (int s = 0; s < NSHAPES; s++)
        for (int t = 0; t < 4; t++)
            check_gemm(KN_SGEMM_ISA_AUTO, pool4, t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 0.75f, 0.5f,
                       2);
    /* a slice of a BERT FFN product, big enough that every thread gets several blocks */
    check_gemm(KN_SGEMM_ISA_AUTO, pool4, false, false, 128, 768, 3072, 1.0f, 0.0f, 0);
    check_gemm(KN_SGEMM_ISA_AUTO, pool4, false, true, 256, 384, 1536, 1.0f, 1.0f, 0);
    check_gemm(KN_SGEMM_ISA_AUTO, pool4, false, false, 1, 3000, 700, 1.0f, 0.0f, 0);
}
END_TEST

/* B packed once (constant weights) and multiplied by many A: every shape, both B layouts, with and
 * without threads, alpha/beta and padded leading dimensions, against the reference. */
START_TEST(test_sgemm_packed_b) {
    for (int s = 0; s < NSHAPES; s++)
        for (int tb = 0; tb < 2; tb++) {
            check_gemm(ISA_PACKED, NULL, false, tb, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f, 0.0f, 0);
            check_gemm(ISA_PACKED, pool4, false, tb, shapes[s][0], shapes[s][1], shapes[s][2], 0.75f, 0.5f, 2);
        }
    check_gemm(ISA_PACKED, pool4, false, false, 128, 768, 3072, 1.0f, 0.0f, 0);
    check_gemm(ISA_PACKED, pool4, false, true, 8, 1024, 1024, 1.0f, 0.0f, 0);
    check_gemm(ISA_PACKED, pool4, false, false, 1, 3000, 700, 1.0f, 0.0f, 0);
}
END_TEST

/* A packed once (a convolution's constant weights) and multiplied by many B: every shape, with and
 * without threads (columns split, or rows when N is small), beta and padded leading dimensions
 * whose columns past N must stay untouched. */
START_TEST(test_sgemm_packed_a) {
    for (int s = 0; s < NSHAPES; s++) {
        check_gemm(ISA_PACKED_A, NULL, false, false, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f, 0.0f, 0);
        check_gemm(ISA_PACKED_A, pool4, false, false, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f, 0.5f, 2);
        check_gemm(ISA_PACKED_A, pool4, false, false, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f, 0.0f, 3);
    }
    check_gemm(ISA_PACKED_A, pool4, false, false, 128, 3136, 576, 1.0f, 0.0f, 0);
    check_gemm(ISA_PACKED_A, pool4, false, false, 512, 49, 1200, 1.0f, 0.0f, 1);
    check_gemm(ISA_PACKED_A, pool4, false, false, 101, 2000, 130, 1.0f, 1.0f, 0);
}
END_TEST

/* Packed A times several images' columns side by side (kn_sgemm_packed_a_run_images): images of
 * fewer columns than a panel, panels straddling two images, gaps between images that must stay
 * untouched, beta, with and without threads, rows above and below the in-place B limit (64). */
START_TEST(test_sgemm_packed_a_images) {
    static const int64_t cases[][4] = {/* M, K, ncol, images */
                                       {16, 9, 7, 5},   {40, 130, 49, 8}, {8, 600, 33, 3}, {100, 64, 49, 8},
                                       {3, 17, 100, 4}, {70, 20, 196, 3}, {64, 31, 13, 11}};
    for (int c = 0; c < 7; c++)
        for (int t = 0; t < 2; t++) {
            int64_t M = cases[c][0], K = cases[c][1], ncol = cases[c][2], imgs = cases[c][3];
            int64_t bstride = K * ncol + 5, cstride = M * ncol + 3;
            float beta = t ? 0.5f : 0.0f;
            float *A = malloc(sizeof(float) * (size_t)(M * K)), *B = malloc(sizeof(float) * (size_t)(imgs * bstride));
            float *C = malloc(sizeof(float) * (size_t)(imgs * cstride)),
                  *R = malloc(sizeof(float) * (size_t)(imgs * cstride));
            for (int64_t i = 0; i < M * K; i++) A[i] = frand();
            for (int64_t i = 0; i < imgs * bstride; i++) B[i] = frand();
            for (int64_t i = 0; i < imgs * cstride; i++) C[i] = R[i] = frand();
            kn_sgemm_packed_a P;
            ck_assert(kn_sgemm_pack_a(M, K, A, K, &P));
            kn_threadpool *tp = t ? pool4 : NULL;
            float *ws = aligned_alloc(64, sizeof(float) * (size_t)kn_sgemm_packed_a_ws(&P, imgs * ncol, tp));
            kn_sgemm_packed_a_run_images(tp, &P, imgs, ncol, B, ncol, bstride, beta, C, ncol, cstride, ws);
            for (int64_t i = 0; i < imgs; i++)
                kn_sgemm_ref(false, false, M, ncol, K, 1.0f, A, K, B + i * bstride, ncol, beta, R + i * cstride, ncol);
            for (int64_t i = 0; i < imgs * cstride; i++) {
                float tol = 2e-6f * (1.0f + sqrtf((float)K)) * (1.0f + fabsf(R[i]));
                ck_assert_msg(fabsf(C[i] - R[i]) <= tol,
                              "images M=%lld K=%lld ncol=%lld x%lld beta=%g [%lld]: %g vs %g", (long long)M,
                              (long long)K, (long long)ncol, (long long)imgs, beta, (long long)i, C[i], R[i]);
            }
            free(ws);
            kn_sgemm_packed_a_release(&P);
            free(A);
            free(B);
            free(C);
            free(R);
        }
}
END_TEST

START_TEST(test_sgemm_batched) {
    const int64_t batch = 7, M = 13, N = 21, K = 19;
    for (int bcast = 0; bcast < 2; bcast++)
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t & 2;
            int64_t sa = bcast ? 0 : M * K;
            float *A = malloc(sizeof(float) * (size_t)(batch * M * K));
            float *B = malloc(sizeof(float) * (size_t)(batch * K * N));
            float *C = malloc(sizeof(float) * (size_t)(batch * M * N));
            float *R = malloc(sizeof(float) * (size_t)(batch * M * N));
            for (int64_t i = 0; i < batch * M * K; i++) A[i] = frand();
            for (int64_t i = 0; i < batch * K * N; i++) B[i] = frand();
            for (int64_t i = 0; i < batch * M * N; i++) C[i] = R[i] = frand();
            kn_sgemm_batched(pool4, ta, tb, batch, M, N, K, 1.25f, A, ta ? M : K, sa, B, tb ? K : N, K * N, 0.5f, C, N,
                             M * N);
            for (int64_t b = 0; b < batch; b++)
                kn_sgemm_ref(ta, tb, M, N, K, 1.25f, A + b * sa, ta ? M : K, B + b * K * N, tb ? K : N, 0.5f,
                             R + b * M * N, N);
            for (int64_t i = 0; i < batch * M * N; i++)
                ck_assert_msg(fabsf(C[i] - R[i]) <= 1e-4f, "batched bcast=%d t=%d [%lld]: %g vs %g", bcast, t,
                              (long long)i, C[i], R[i]);
            free(A);
            free(B);
            free(C);
            free(R);
        }
}
END_TEST

/* ---- op-level tests ---- */

/* A tensor of uniform values in [-1, 1), or of small non-negative integers for integer dtypes. */
static kn_tensor *mk_rand(kn_dtype t, int nd, const int64_t *dims) {
    kn_tensor *x = mk(t, nd, dims, NULL);
    for (int64_t i = 0; i < kn_numel(x); i++)
        kn_set_f64(x, i, kn_dtype_is_int(t) ? (double)((int)((frand() + 1.0f) * 10.0f)) : frand());
    return x;
}

/* numpy matmul in double via index arithmetic, independent of the kernel's batching logic */
static double matmul_ref(const kn_tensor *a, const kn_tensor *b, const kn_tensor *y, int64_t flat) {
    int ya = a->ndim == 1 ? 0 : 1, yb = b->ndim == 1 ? 0 : 1;
    int nb = y->ndim - ya - yb;
    int64_t idx[KN_MAX_DIMS], rem = flat;
    for (int d = y->ndim - 1; d >= 0; d--) {
        idx[d] = rem % y->dims[d];
        rem /= y->dims[d];
    }
    int64_t i = ya ? idx[nb] : 0, j = yb ? idx[nb + ya] : 0, K = a->dims[a->ndim - 1];
    int64_t oa = 0, ob = 0;
    int abd = a->ndim - 2 > 0 ? a->ndim - 2 : 0, bbd = b->ndim - 2 > 0 ? b->ndim - 2 : 0;
    for (int d = 0; d < abd; d++) oa = oa * a->dims[d] + (a->dims[d] == 1 ? 0 : idx[nb - abd + d]);
    for (int d = 0; d < bbd; d++) ob = ob * b->dims[d] + (b->dims[d] == 1 ? 0 : idx[nb - bbd + d]);
    int64_t M = a->ndim == 1 ? 1 : a->dims[a->ndim - 2], N = b->ndim == 1 ? 1 : b->dims[b->ndim - 1];
    double s = 0;
    for (int64_t k = 0; k < K; k++) s += kn_get_f64(a, (oa * M + i) * K + k) * kn_get_f64(b, (ob * K + k) * N + j);
    return s;
}

START_TEST(test_matmul_op_broadcast_dtypes) {
    static const struct {
        int na, nb;
        int64_t da[4], db[4];
    } cases[] = {
        {2, 2, {5, 7}, {7, 3}},
        {1, 2, {7}, {7, 4}},
        {2, 1, {3, 7}, {7}},
        {1, 1, {6}, {6}},
        {3, 2, {4, 5, 6}, {6, 9}},
        {3, 3, {2, 5, 6}, {2, 6, 3}},
        {4, 3, {2, 1, 3, 4}, {5, 4, 2}},
        {2, 3, {3, 4}, {6, 4, 5}},
        {3, 3, {1, 3, 4}, {5, 4, 0}},
        {3, 2, {0, 3, 4}, {4, 5}},
    };
    static const kn_dtype dts[] = {KN_F32, KN_F64, KN_F16, KN_I32, KN_I64, KN_U32};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++) {
            kn_tensor *in[2] = {mk_rand(dts[d], cases[c].na, cases[c].da), mk_rand(dts[d], cases[c].nb, cases[c].db)},
                      *out[1];
            kn_status *st = kn_test_run_op(KN_OP_MatMul, 21, NULL, 0, in, 2, out, NULL, 1, pool4);
            ck_assert_msg(!st, "MatMul case %zu dtype %d: %s", c, dts[d], st ? kn_status_message(st) : "");
            ck_assert_int_eq(out[0]->dtype, dts[d]);
            double tol = dts[d] == KN_F16 ? 2e-2 : 1e-5;
            for (int64_t i = 0; i < kn_numel(out[0]); i++) {
                double r = matmul_ref(in[0], in[1], out[0], i), g = kn_get_f64(out[0], i);
                ck_assert_msg(fabs(g - r) <= tol * (1 + fabs(r)), "MatMul case %zu dtype %d [%lld]: %g vs %g", c,
                              dts[d], (long long)i, g, r);
            }
            kn_tensor_free(in[0]);
            kn_tensor_free(in[1]);
            kn_tensor_free(out[0]);
        }
    /* mismatched inner dims are an error, not a crash */
    int64_t da[2] = {3, 4}, db[2] = {5, 2};
    kn_tensor *in[2] = {mk_rand(KN_F32, 2, da), mk_rand(KN_F32, 2, db)}, *out[1];
    kn_status *st = kn_test_run_op(KN_OP_MatMul, 21, NULL, 0, in, 2, out, NULL, 1, pool4);
    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(kn_status_get_code(st), KN_ERR_INVALID_ARGUMENT);
    kn_status_free(st);
    kn_tensor_free(in[0]);
    kn_tensor_free(in[1]);
    kn_tensor_free(out[0]);
}
END_TEST

START_TEST(test_gemm_op_trans_bias) {
    const int64_t M = 7, N = 5, K = 9;
    static const int64_t cshapes[][3] = {{0}, {1, 1}, {1, 5}, {2, 7, 1}, {2, 1, 5}, {2, 7, 5}, {2, 1, 1}};
    for (int t = 0; t < 4; t++)
        for (int cs = 0; cs < 7; cs++) {
            bool ta = t & 1, tb = t & 2;
            int64_t da[2] = {ta ? K : M, ta ? M : K}, db[2] = {tb ? N : K, tb ? K : N};
            kn_tensor *in[3] = {mk_rand(KN_F32, 2, da), mk_rand(KN_F32, 2, db), NULL}, *out[1];
            if (cs) in[2] = mk_rand(KN_F32, (int)cshapes[cs][0], cshapes[cs] + 1);
            kn_attr at[4] = {attr_i("transA", ta), attr_i("transB", tb), attr_f("alpha", 0.5f), attr_f("beta", -2.0f)};
            kn_status *st = kn_test_run_op(KN_OP_Gemm, 21, at, 4, in, cs ? 3 : 2, out, NULL, 1, pool4);
            ck_assert_msg(!st, "Gemm: %s", st ? kn_status_message(st) : "");
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                    double s = 0;
                    for (int64_t k = 0; k < K; k++)
                        s += kn_get_f64(in[0], ta ? k * M + i : i * K + k) *
                            kn_get_f64(in[1], tb ? j * K + k : k * N + j);
                    s *= 0.5;
                    if (in[2]) {
                        const kn_tensor *c = in[2];
                        int64_t cr = c->ndim == 2 ? c->dims[0] : 1, cc = c->ndim >= 1 ? c->dims[c->ndim - 1] : 1;
                        s += -2.0 * kn_get_f64(c, (cr == 1 ? 0 : i) * cc + (cc == 1 ? 0 : j));
                    }
                    double g = kn_get_f64(out[0], i * N + j);
                    ck_assert_msg(fabs(g - s) < 1e-5, "Gemm t=%d cs=%d (%lld,%lld): %g vs %g", t, cs, (long long)i,
                                  (long long)j, g, s);
                }
            for (int i = 0; i < 3; i++)
                if (in[i]) kn_tensor_free(in[i]);
            kn_tensor_free(out[0]);
        }
}
END_TEST

START_TEST(test_einsum_det) {
    /* "bij,bjk->bik" against the matmul reference; a trace; an implicit-output transpose. */
    int64_t da[3] = {2, 3, 4}, db[3] = {2, 4, 5};
    kn_tensor *in[2] = {mk_rand(KN_F32, 3, da), mk_rand(KN_F32, 3, db)}, *out[1];
    kn_attr at = attr_s("equation", "bij, bjk -> bik");
    ck_assert_ptr_null(kn_test_run_op(KN_OP_Einsum, 21, &at, 1, in, 2, out, NULL, 1, pool4));
    ck_assert_int_eq(out[0]->ndim, 3);
    for (int64_t i = 0; i < kn_numel(out[0]); i++)
        ck_assert(fabs(kn_get_f64(out[0], i) - matmul_ref(in[0], in[1], out[0], i)) < 1e-5);
    kn_tensor_free(out[0]);
    kn_tensor_free(in[1]);

    int64_t ds[2] = {4, 4};
    kn_tensor *sq = mk_rand(KN_F64, 2, ds);
    at = attr_s("equation", "ii");
    ck_assert_ptr_null(kn_test_run_op(KN_OP_Einsum, 21, &at, 1, &sq, 1, out, NULL, 1, pool4));
    ck_assert_int_eq(out[0]->ndim, 0);
    double tr = 0;
    for (int i = 0; i < 4; i++) tr += kn_get_f64(sq, i * 5);
    ck_assert(fabs(kn_get_f64(out[0], 0) - tr) < 1e-12);
    kn_tensor_free(out[0]);

    at = attr_s("equation", "...ji");
    ck_assert_ptr_null(kn_test_run_op(KN_OP_Einsum, 21, &at, 1, in, 1, out, NULL, 1, pool4));
    ck_assert_int_eq(out[0]->ndim, 3);
    ck_assert_int_eq(out[0]->dims[1], 4);
    ck_assert_int_eq(out[0]->dims[2], 3);
    for (int64_t b = 0; b < 2; b++)
        for (int64_t i = 0; i < 4; i++)
            for (int64_t j = 0; j < 3; j++)
                ck_assert(kn_get_f64(out[0], (b * 4 + i) * 3 + j) == kn_get_f64(in[0], (b * 3 + j) * 4 + i));
    kn_tensor_free(out[0]);
    kn_tensor_free(in[0]);

    /* det of a known matrix, and of a singular one */
    double vals[9] = {2, -1, 0, -1, 2, -1, 0, -1, 2};
    int64_t d3[2] = {3, 3};
    kn_tensor *m = mk_rand(KN_F32, 2, d3);
    for (int i = 0; i < 9; i++) kn_set_f64(m, i, vals[i]);
    ck_assert_ptr_null(kn_test_run_op(KN_OP_Det, 21, NULL, 0, &m, 1, out, NULL, 1, pool4));
    ck_assert(fabs(kn_get_f64(out[0], 0) - 4.0) < 1e-5);
    kn_tensor_free(out[0]);
    for (int i = 0; i < 3; i++) kn_set_f64(m, 6 + i, kn_get_f64(m, i) + kn_get_f64(m, 3 + i));
    ck_assert_ptr_null(kn_test_run_op(KN_OP_Det, 21, NULL, 0, &m, 1, out, NULL, 1, pool4));
    ck_assert(fabs(kn_get_f64(out[0], 0)) < 1e-5);
    kn_tensor_free(out[0]);
    kn_tensor_free(m);
    kn_tensor_free(sq);

    /* a label with two sizes is an error */
    int64_t e1[2] = {3, 4}, e2[2] = {5, 2};
    kn_tensor *bad[2] = {mk_rand(KN_F32, 2, e1), mk_rand(KN_F32, 2, e2)};
    at = attr_s("equation", "ij,jk->ik");
    kn_status *st = kn_test_run_op(KN_OP_Einsum, 21, &at, 1, bad, 2, out, NULL, 1, pool4);
    ck_assert_ptr_nonnull(st);
    kn_status_free(st);
    kn_tensor_free(out[0]);
    kn_tensor_free(bad[0]);
    kn_tensor_free(bad[1]);
}
END_TEST

/* MatMulInteger (SIMD int16-pair path and its odd-K / column tails) against a plain sum */
START_TEST(test_matmul_integer) {
    static const struct {
        int64_t B, M, N, K;
        kn_dtype ta, tb;
        int zp_kind;
    } cases[] = {
        {1, 5, 37, 9, KN_U8, KN_U8, 1},   {2, 3, 64, 33, KN_I8, KN_U8, 2}, {1, 17, 8, 1, KN_U8, KN_I8, 0},
        {3, 4, 45, 130, KN_I8, KN_I8, 2}, {1, 2, 3, 0, KN_U8, KN_U8, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int64_t M = cases[c].M, N = cases[c].N, K = cases[c].K, Bt = cases[c].B;
        int64_t da[3] = {Bt, M, K}, db[3] = {Bt, K, N}, dza[1] = {M}, dzb[1] = {N};
        kn_tensor *in[4] = {NULL, NULL, NULL, NULL}, *out[1];
        ck_assert_ptr_null(kn_tensor_new(cases[c].ta, 3, da, &in[0]));
        ck_assert_ptr_null(kn_tensor_new(cases[c].tb, 3, db, &in[1]));
        for (int64_t i = 0; i < kn_numel(in[0]); i++)
            kn_set_i64(in[0], i, (int64_t)(frand() * 127.0f) + (cases[c].ta == KN_U8 ? 128 : 0));
        for (int64_t i = 0; i < kn_numel(in[1]); i++)
            kn_set_i64(in[1], i, (int64_t)(frand() * 127.0f) + (cases[c].tb == KN_U8 ? 128 : 0));
        int nz = 2;
        if (cases[c].zp_kind) {
            ck_assert_ptr_null(kn_tensor_new(cases[c].ta, cases[c].zp_kind == 2 ? 1 : 0, dza, &in[2]));
            ck_assert_ptr_null(kn_tensor_new(cases[c].tb, cases[c].zp_kind == 2 ? 1 : 0, dzb, &in[3]));
            for (int64_t i = 0; i < kn_numel(in[2]); i++) kn_set_i64(in[2], i, 3 + i % 5);
            for (int64_t i = 0; i < kn_numel(in[3]); i++)
                kn_set_i64(in[3], i, (int64_t)(i % 7) - 2 + (cases[c].tb == KN_U8 ? 4 : 0));
            nz = 4;
        }
        kn_status *st = kn_test_run_op(KN_OP_MatMulInteger, 21, NULL, 0, in, nz, out, NULL, 1, pool4);
        ck_assert_msg(!st, "MatMulInteger: %s", st ? kn_status_message(st) : "");
        ck_assert_int_eq(out[0]->dtype, KN_I32);
        for (int64_t b = 0; b < Bt; b++)
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                    int64_t za = in[2] ? kn_get_i64(in[2], kn_numel(in[2]) == 1 ? 0 : i) : 0;
                    int64_t zb = in[3] ? kn_get_i64(in[3], kn_numel(in[3]) == 1 ? 0 : j) : 0;
                    int64_t sum = 0;
                    for (int64_t k = 0; k < K; k++)
                        sum += (kn_get_i64(in[0], (b * M + i) * K + k) - za) *
                            (kn_get_i64(in[1], (b * K + k) * N + j) - zb);
                    ck_assert_msg(kn_get_i64(out[0], (b * M + i) * N + j) == sum,
                                  "MatMulInteger case %zu (%lld,%lld,%lld): %lld vs %lld", c, (long long)b,
                                  (long long)i, (long long)j, (long long)kn_get_i64(out[0], (b * M + i) * N + j),
                                  (long long)sum);
                }
        for (int i = 0; i < 4; i++)
            if (in[i]) kn_tensor_free(in[i]);
        kn_tensor_free(out[0]);
    }
}
END_TEST

static void pool_setup(void) { pool4 = kn_threadpool_create(4); }
static void pool_teardown(void) {
    kn_threadpool_free(pool4);
    pool4 = NULL;
}

/* The float32 batched-sgemm lowering of two-operand Einsum against the plain loop (float64) */
START_TEST(test_einsum_gemm_lowering) {
    static const struct {
        const char *eq;
        int na, nb;
        int64_t da[4], db[4];
    } cases[] = {
        {"bhqd,bhkd->bhqk", 4, 4, {2, 3, 5, 4}, {2, 3, 6, 4}},
        {"bhqk,bhkd->bhqd", 4, 4, {2, 3, 5, 6}, {2, 3, 6, 4}},
        {"ij,jk->ki", 2, 2, {3, 4}, {4, 5}},
        {"abc,cd->abd", 3, 2, {2, 3, 4}, {4, 5}},
        {"i,i->", 1, 1, {7}, {7}},
        {"i,j->ij", 1, 1, {3}, {4}},
        {"bn,anm->bam", 2, 3, {2, 3}, {4, 3, 5}},
        {"ij,ij->ij", 2, 2, {3, 4}, {3, 4}},
        {"ij,jk", 2, 2, {3, 4}, {4, 2}},
        {"...ij,...jk->...ik", 3, 3, {2, 3, 4}, {2, 4, 5}},
        {"ii,ij->j", 2, 2, {3, 3}, {3, 4}},
        {"ij,kj->ik", 2, 2, {0, 4}, {3, 4}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        kn_tensor *f[2] = {mk_rand(KN_F32, cases[c].na, cases[c].da), mk_rand(KN_F32, cases[c].nb, cases[c].db)};
        kn_tensor *d[2], *of[1], *od[1];
        for (int q = 0; q < 2; q++) {
            ck_assert_ptr_null(kn_tensor_new(KN_F64, f[q]->ndim, f[q]->dims, &d[q]));
            for (int64_t i = 0; i < kn_numel(f[q]); i++) kn_set_f64(d[q], i, kn_get_f64(f[q], i));
        }
        kn_attr at = attr_s("equation", cases[c].eq);
        kn_status *st = kn_test_run_op(KN_OP_Einsum, 21, &at, 1, f, 2, of, NULL, 1, pool4);
        ck_assert_msg(!st, "%s: %s", cases[c].eq, st ? kn_status_message(st) : "");
        ck_assert_ptr_null(kn_test_run_op(KN_OP_Einsum, 21, &at, 1, d, 2, od, NULL, 1, pool4));
        ck_assert_int_eq(kn_numel(of[0]), kn_numel(od[0]));
        for (int64_t i = 0; i < kn_numel(of[0]); i++)
            ck_assert_msg(fabs(kn_get_f64(of[0], i) - kn_get_f64(od[0], i)) < 1e-5, "%s [%lld]: %g vs %g", cases[c].eq,
                          (long long)i, kn_get_f64(of[0], i), kn_get_f64(od[0], i));
        for (int q = 0; q < 2; q++) {
            kn_tensor_free(f[q]);
            kn_tensor_free(d[q]);
        }
        kn_tensor_free(of[0]);
        kn_tensor_free(od[0]);
    }
}
END_TEST

static Suite *gemm_suite(void) {
    Suite *s = suite_create("gemm");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    /* checked fixture: the pool is made in the forked test process, where its threads live */
    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, test_sgemm_shapes_all_isas);
    tcase_add_test(tc, test_sgemm_alpha_beta_ld);
    tcase_add_test(tc, test_sgemm_threaded);
    tcase_add_test(tc, test_sgemm_packed_b);
    tcase_add_test(tc, test_sgemm_packed_a);
    tcase_add_test(tc, test_sgemm_packed_a_images);
    tcase_add_test(tc, test_sgemm_batched);
    tcase_add_test(tc, test_matmul_op_broadcast_dtypes);
    tcase_add_test(tc, test_gemm_op_trans_bias);
    tcase_add_test(tc, test_einsum_det);
    tcase_add_test(tc, test_einsum_gemm_lowering);
    tcase_add_test(tc, test_matmul_integer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return kn_test_run_suite(gemm_suite()); }
