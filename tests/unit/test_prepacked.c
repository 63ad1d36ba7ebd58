/* The MatMul and Gemm kernels multiply by the weights the CPU backend packed once per model
 * (kn_node.prepared, a kn_sgemm_packed made by its graph_optimize hook) instead of repacking B on
 * every run: a merge once dropped the kernels' use of it while the hook kept packing, which left
 * a 4-layer MLP 2.6x slower than ONNX Runtime with every result still right. So the packing given
 * here is of a different matrix B' than the input B (same address recorded): the product must be
 * A * B' when the kernel takes the packed path, over skinny (M <= 4) and blocked row counts,
 * one and four threads, both Gemm layouts; and A * B when the packing does not describe the
 * input (another address or shape), which the kernel must then ignore. */
#include "tests/unit/harness.h"
#include "kernels/cpu/gemm.h"

static uint32_t rng_state = 7u;
static float frand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xFFFF) / 65536.0f * 2.0f - 1.0f;
}

static kn_tensor *rand_tensor(int64_t r, int64_t c) {
    int64_t dims[2] = {r, c};
    kn_tensor *t = mk(KN_F32, 2, dims, NULL);
    for (int64_t i = 0; i < r * c; i++) ((float *)t->data)[i] = frand();
    return t;
}

/* Runs op on (a, b[, bias]) with node.prepared = pk, as the executor runs a node (infer + kernel). */
static kn_tensor *run_prepared(int op, bool trans_b, const kn_tensor *a, const kn_tensor *b, const kn_tensor *bias,
                               kn_sgemm_packed *pk, kn_threadpool *pool) {
    kn_attr at[1] = {attr_i("transB", 1)};
    kn_node node = kn_test_node(op, 13, at, op == KN_OP_Gemm && trans_b ? 1 : 0);
    ck_assert_ptr_null(kn_node_decode_params(&node));
    node.prepared = pk;
    const kn_tensor *in[3] = {a, b, bias};
    kn_tensor *out[1] = {calloc(1, sizeof(kn_tensor))};
    kn_scratch scratch = {0};
    kn_exec_ctx ctx = {.pool = pool,
                       .backend = kn_cpu_backend(),
                       .scratch_alloc = kn_scratch_alloc_impl,
                       .scratch_state = &scratch,
                       .seed = KN_TEST_SEED};
    kn_status *st = kn_node_eval_host(&ctx, &node, in, bias ? 3 : 2, out, 1);
    ck_assert_msg(!st, "%s", st ? kn_status_message(st) : "");
    free(node.params);
    kn_scratch_release(&scratch);
    return out[0];
}

/* max |y - (A * op(B) + bias)| over the M x N result, the reference in double */
static double max_err(const kn_tensor *y, const kn_tensor *a, const float *B, bool tb, const kn_tensor *bias,
                      int64_t M, int64_t N, int64_t K) {
    double worst = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = bias ? ((const float *)bias->data)[j] : 0.0;
            for (int64_t k = 0; k < K; k++)
                s += (double)((const float *)a->data)[i * K + k] * (tb ? B[j * K + k] : B[k * N + j]);
            double d = fabs(s - ((const float *)y->data)[i * N + j]);
            if (d > worst) worst = d;
        }
    return worst;
}

static void check_case(int op, bool tb, int64_t M, int64_t N, int64_t K, kn_threadpool *pool) {
    kn_tensor *a = rand_tensor(M, K), *b = tb ? rand_tensor(N, K) : rand_tensor(K, N);
    kn_tensor *other = tb ? rand_tensor(N, K) : rand_tensor(K, N); /* B' */
    kn_tensor *bias = op == KN_OP_Gemm ? rand_tensor(1, N) : NULL;
    if (bias) { /* Gemm's C as a vector [N] */
        bias->ndim = 1;
        bias->dims[0] = N;
    }
    kn_sgemm_packed pk;
    ck_assert(kn_sgemm_pack_b(tb, K, N, other->data, tb ? K : N, &pk));
    pk.B = b->data; /* the packing claims to be of the input B */
    kn_tensor *y = run_prepared(op, tb, a, b, bias, &pk, pool);
    double e_packed = max_err(y, a, other->data, tb, bias, M, N, K), e_plain = max_err(y, a, b->data, tb, bias, M, N, K);
    ck_assert_msg(e_packed < 1e-4 && e_plain > 1e-2, "%s M=%lld N=%lld K=%lld tb=%d: |y - A*B'| %.3g, |y - A*B| %.3g",
                  kn_op_table[op].name, (long long)M, (long long)N, (long long)K, tb, e_packed, e_plain);
    kn_tensor_free(y);

    /* a packing of other data, or of another shape, is not used */
    pk.B = other->data;
    y = run_prepared(op, tb, a, b, bias, &pk, pool);
    ck_assert_double_lt(max_err(y, a, b->data, tb, bias, M, N, K), 1e-4);
    kn_tensor_free(y);
    pk.B = b->data;
    pk.N = N + 1;
    y = run_prepared(op, tb, a, b, bias, &pk, pool);
    ck_assert_double_lt(max_err(y, a, b->data, tb, bias, M, N, K), 1e-4);
    kn_tensor_free(y);
    pk.N = N;

    kn_sgemm_packed_release(&pk);
    kn_tensor_free(a);
    kn_tensor_free(b);
    kn_tensor_free(other);
    kn_tensor_free(bias);
}

START_TEST(test_matmul_gemm_use_packed_weights) {
    kn_threadpool *pool = kn_threadpool_create(4);
    static const int64_t shapes[][3] = {{1, 1024, 256}, {3, 70, 33}, {4, 96, 600}, {17, 50, 129}, {64, 160, 520}};
    for (int t = 0; t < 2; t++)
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            kn_threadpool *p = t ? pool : NULL;
            check_case(KN_OP_MatMul, false, shapes[s][0], shapes[s][1], shapes[s][2], p);
            check_case(KN_OP_Gemm, false, shapes[s][0], shapes[s][1], shapes[s][2], p);
            check_case(KN_OP_Gemm, true, shapes[s][0], shapes[s][1], shapes[s][2], p);
        }
    kn_threadpool_free(pool);
}
END_TEST

int main(void) {
    Suite *s = suite_create("prepacked");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_matmul_gemm_use_packed_weights);
    suite_add_tcase(s, tc);
    return kn_test_run_suite(s);
}
