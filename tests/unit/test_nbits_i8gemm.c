/* Unit tests for MatMulNBits accuracy_level 4's int8 GEMM (kernels/cpu/nbits_i8gemm.c): every ISA
 * this CPU has (the plain loop, AVX2, AVX-512 VNNI) bit for bit against a plain reference written
 * out here (A's rows quantised by kn_nbits_quant_a, the integer block sums, then each column's
 * float32 chain: fma of the sum by sa * sb block by block, the bias, the zero-point chain over the
 * blocks), over 8..200 rows, N not a multiple of the 32-column panel or the 8-column AVX2 tile, K
 * not a multiple of the block, block sizes 16..256, 4 and 8 bits, zero points absent and present,
 * bias absent and present, rows holding NaN and infinities, threaded and not; and the pieces:
 * the panel copy and A's reordering against their definitions, the AVX-512 quantisation of A
 * against kn_nbits_quant_a. */
#include "tests/unit/harness.h"
#include "kernels/cpu/nbits.h"
#include "kernels/cpu/nbits_i8gemm.h"
#include "kernels/cpu/rows.h"
#include <stdio.h>

static uint32_t rng_state = 4242;
static uint32_t urand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}
static float frand(void) { return (float)(urand() & 0xFFFF) / 65536.0f * 2.0f - 1.0f; }

/* weight i of column col's block b */
static int w_at(const uint8_t *col, int64_t b, int64_t i, int bits, int64_t bs) {
    const uint8_t *p = col + b * (bs * bits / 8);
    return bits == 4 ? (p[i / 2] >> ((i & 1) * 4)) & 15 : p[i];
}

static void ref_gemm(const float *a, int64_t M, int64_t N, int64_t K, int64_t bs, int bits, const uint8_t *b,
                     const float *sc, const float *off, const float *bias, float *y) {
    int64_t nb = (K + bs - 1) / bs, cs = nb * bs * bits / 8;
    int8_t *qa = malloc((size_t)(nb * bs));
    float *sa = malloc(sizeof(float) * (size_t)nb), *as = malloc(sizeof(float) * (size_t)nb);
    for (int64_t m = 0; m < M; m++) {
        kn_nbits_quant_a(a + m * K, K, bs, qa, sa, as);
        for (int64_t n = 0; n < N; n++) {
            float acc = 0.0f, zs = 0.0f;
            for (int64_t k = 0; k < nb; k++) {
                int32_t d = 0;
                for (int64_t i = 0; i < bs; i++) d += qa[k * bs + i] * w_at(b + n * cs, k, i, bits, bs);
                acc = fmaf((float)d, sa[k] * sc[n * nb + k], acc);
            }
            if (bias) acc += bias[n];
            for (int64_t k = 0; k < nb; k++) zs = fmaf(as[k], off[n * nb + k], zs);
            y[m * N + n] = acc + zs;
        }
    }
    free(qa);
    free(sa);
    free(as);
}

static bool same(float x, float r) { return isnan(r) ? isnan(x) : memcmp(&x, &r, sizeof x) == 0; }

typedef struct i8g_case {
    int64_t M, N, K, bs;
    int bits;
    bool zp, bias, special;
} i8g_case;

static void check_case(const i8g_case *c, int isa, int64_t group, const float *y, const float *yr);

static void run_case(const i8g_case *c, kn_threadpool *pool, int isa) {
    int64_t nb = (c->K + c->bs - 1) / c->bs, cs = nb * c->bs * c->bits / 8;
    float *a = malloc(sizeof(float) * (size_t)(c->M * c->K));
    uint8_t *b = malloc((size_t)(c->N * cs));
    float *sc = malloc(sizeof(float) * (size_t)(c->N * nb)), *off = malloc(sizeof(float) * (size_t)(c->N * nb));
    float *bias = malloc(sizeof(float) * (size_t)c->N);
    float *y = malloc(sizeof(float) * (size_t)(c->M * c->N)), *yr = malloc(sizeof(float) * (size_t)(c->M * c->N));
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(y);
    ck_assert_ptr_nonnull(yr);
    for (int64_t i = 0; i < c->M * c->K; i++) a[i] = frand() * 4.0f;
    if (c->special) {
        /* NaN in row 1 (last of a block: its scale becomes NaN; and mid-row), +inf in row 3, -inf in
         * the last row's last block, a zero row 2 */
        a[1 * c->K + c->K - 1] = NAN;
        a[1 * c->K + c->K / 3] = NAN;
        a[3 * c->K] = INFINITY;
        a[c->M * c->K - 1] = -INFINITY;
        for (int64_t k = 0; k < c->K; k++) a[2 * c->K + k] = 0.0f;
    }
    for (int64_t i = 0; i < c->N * cs; i++) b[i] = (uint8_t)urand();
    for (int64_t i = 0; i < c->N * nb; i++) {
        sc[i] = 0.01f + 0.02f * (frand() + 1.0f);
        float z = c->zp ? (float)(urand() % (1u << c->bits)) : (float)(1 << (c->bits - 1));
        off[i] = -z * sc[i];
    }
    for (int64_t n = 0; n < c->N; n++) bias[n] = frand();
    memset(y, 0xff, sizeof(float) * (size_t)(c->M * c->N));
    ref_gemm(a, c->M, c->N, c->K, c->bs, c->bits, b, sc, off, c->bias ? bias : NULL, yr);
    /* the plain [N][blocks] scales, and the grouped layouts a prepared node keeps (8 and 16 wide) */
    int64_t ng = (c->N + 15) / 16 * 16 * nb;
    float *gsc = malloc(sizeof(float) * (size_t)ng), *goff = malloc(sizeof(float) * (size_t)ng);
    ck_assert_ptr_nonnull(gsc);
    ck_assert_ptr_nonnull(goff);
    for (int64_t group = 0; group <= 16; group += 8) {
        if (group) {
            kn_nbits_group(sc, c->N, nb, group, gsc);
            kn_nbits_group(off, c->N, nb, group, goff);
        }
        memset(y, 0xff, sizeof(float) * (size_t)(c->M * c->N));
        kn_scratch scratch = {0};
        kn_exec_ctx ctx = {.pool = pool, .scratch_alloc = kn_scratch_alloc_impl, .scratch_state = &scratch};
        kn_status *st = kn_nbits_i8gemm(&ctx, a, c->M, c->N, c->K, c->bs, c->bits, b, group ? gsc : sc,
                                        group ? goff : off, group, c->bias ? bias : NULL, y, isa);
        kn_scratch_release(&scratch);
        ck_assert_ptr_null(st);
        check_case(c, isa, group, y, yr);
    }
    free(gsc);
    free(goff);
    free(a);
    free(b);
    free(sc);
    free(off);
    free(bias);
    free(y);
    free(yr);
}

static void check_case(const i8g_case *c, int isa, int64_t group, const float *y, const float *yr) {
    int64_t bad = 0, first = -1, finite = 0;
    for (int64_t i = 0; i < c->M * c->N; i++) {
        if (!same(y[i], yr[i]) && bad++ == 0) first = i;
        finite += isfinite(yr[i]) && yr[i] != 0.0f;
    }
    FAST_ASSERT(
        bad == 0,
        "isa %d group %lld M%lld N%lld K%lld bs%lld bits%d zp%d bias%d special%d: %lld values differ, first [%lld] "
        "%.9g vs %.9g",
        isa, (long long)group, (long long)c->M, (long long)c->N, (long long)c->K, (long long)c->bs, c->bits, c->zp,
        c->bias, c->special, (long long)bad, (long long)first, first >= 0 ? y[first] : 0.0f,
        first >= 0 ? yr[first] : 0.0f);
    /* the reference is not trivially zero or NaN: most values are ordinary numbers */
    FAST_ASSERT(finite > c->M * c->N / 4, "M%lld N%lld: only %lld finite nonzero values", (long long)c->M,
                (long long)c->N, (long long)finite);
    if (c->special) {
        FAST_ASSERT(isnan(yr[1 * c->N]) && isnan(y[1 * c->N]), "a NaN row gives NaN");
        FAST_ASSERT(!isfinite(y[3 * c->N]), "an infinite row is not finite");
    }
}

static int max_isa(void) { return kn_nbits_have_vnni() ? 2 : kn_red_simd_level() >= 1 ? 1 : 0; }

START_TEST(test_i8gemm_shapes) {
    kn_threadpool *pool = kn_threadpool_create(3);
    static const int64_t bss[5] = {16, 32, 64, 128, 256}, ms[6] = {8, 9, 13, 30, 64, 200}, ns[5] = {1, 7, 33, 70, 96};
    int idx = 0, top = max_isa();
    for (int bits = 4; bits <= 8; bits += 4)
        for (int bi = 0; bi < 5; bi++)
            for (int mi = 0; mi < 6; mi++, idx++) {
                int64_t bs = bss[bi], nbk = 1 + idx % 4;
                i8g_case c = {.M = ms[mi],
                              .N = ns[idx % 5],
                              .K = nbk * bs - (idx % 3 ? 0 : 1 + idx % (bs - 1)),
                              .bs = bs,
                              .bits = bits,
                              .zp = idx % 2 == 0,
                              .bias = idx % 3 != 1,
                              .special = idx % 4 == 3};
                if (c.K < 1) c.K = bs;
                for (int isa = 0; isa <= top; isa++) run_case(&c, idx % 2 ? pool : NULL, isa);
            }
    /* the bench's shapes at a few rows: K 896 and 4864, block 32, several panels, threaded */
    i8g_case big[2] = {{17, 1152, 896, 32, 4, false, true, false}, {9, 100, 4864, 32, 4, true, false, false}};
    for (int i = 0; i < 2; i++)
        for (int isa = 0; isa <= top; isa++) run_case(&big[i], pool, isa);
    kn_threadpool_free(pool);
}
END_TEST

/* the panel copy (words of each column transposed, scales by block, the rest zero) and A's
 * reordering per 8 values */
START_TEST(test_i8gemm_pieces) {
    enum { NB = 7, BS = 32, N = 40 }; /* 28 words a column: a full 16 and a partial 12 */
    int64_t cs = NB * BS / 2, nw = cs / 4;
    uint8_t b[N * NB * BS / 2];
    float sc[N * NB], off[N * NB], bias[N];
    for (size_t i = 0; i < sizeof b; i++) b[i] = (uint8_t)urand();
    for (int i = 0; i < N * NB; i++) sc[i] = frand(), off[i] = frand();
    for (int i = 0; i < N; i++) bias[i] = frand();
    uint32_t panel[NB * BS / 8 * KN_NBITS_I8G_PW];
    float sbp[NB * KN_NBITS_I8G_PW], offp[NB * KN_NBITS_I8G_PW], biasp[KN_NBITS_I8G_PW];
    for (int isa = 0; isa <= max_isa(); isa += 2) /* the plain copy and the AVX-512 transpose */
        for (int nc = 1; nc <= KN_NBITS_I8G_PW; nc += nc < 16 ? 4 : 7) {
            memset(panel, 0x5a, sizeof panel);
            kn_nbits_i8g_pack(b, cs, 7, nc, sc, off, NB, 0, bias, panel, sbp, offp, biasp, isa);
            for (int c = 0; c < KN_NBITS_I8G_PW; c++) {
                for (int64_t w = 0; w < nw; w++) {
                    uint32_t want = 0;
                    if (c < nc) memcpy(&want, b + (7 + c) * cs + 4 * w, 4);
                    FAST_ASSERT(panel[w * KN_NBITS_I8G_PW + c] == want, "isa %d nc %d: panel word %lld column %d", isa,
                                nc, (long long)w, c);
                }
                for (int k = 0; k < NB; k++) {
                    ck_assert_float_eq(sbp[k * KN_NBITS_I8G_PW + c], c < nc ? sc[(7 + c) * NB + k] : 0.0f);
                    ck_assert_float_eq(offp[k * KN_NBITS_I8G_PW + c], c < nc ? off[(7 + c) * NB + k] : 0.0f);
                }
                ck_assert_float_eq(biasp[c], c < nc ? bias[7 + c] : 0.0f);
            }
        }
    int8_t q[24], d[24];
    for (int i = 0; i < 24; i++) q[i] = (int8_t)(i * 3 - 30);
    kn_nbits_i8g_deint8(q, 24, d);
    for (int g = 0; g < 24; g += 8)
        for (int i = 0; i < 4; i++) {
            ck_assert_int_eq(d[g + i], q[g + 2 * i]);
            ck_assert_int_eq(d[g + 4 + i], q[g + 2 * i + 1]);
        }
    /* the AVX-512 quantisation against kn_nbits_quant_a (then deint8 for 4 bits): every block size,
     * partial last blocks, NaN first, mid and last in a block, infinities, zero blocks, ties */
    if (max_isa() < 2) return;
    static const int64_t bss[5] = {16, 32, 64, 128, 256};
    for (int bi = 0; bi < 5; bi++)
        for (int t = 0; t < 6; t++) {
            int64_t bs = bss[bi], K = 3 * bs - (t % 3 ? 0 : 5 + t), nb = 3, lq = nb * bs;
            float x[3 * 256], sa[3], as[3], sv[3], av[3];
            int8_t qr[3 * 256], qv[3 * 256], qrd[3 * 256];
            for (int64_t k = 0; k < K; k++) x[k] = frand() * (t + 1);
            if (t == 1) x[0] = NAN, x[bs + bs / 2] = NAN, x[2 * bs - 1] = NAN;
            if (t == 2) x[3] = INFINITY, x[bs + 1] = -INFINITY;
            if (t == 3)
                for (int64_t k = bs; k < 2 * bs; k++) x[k] = 0.0f;
            if (t == 4) x[0] = 1.0f, x[1] = 2.5f / 127.0f, x[2] = -3.5f / 127.0f, x[3] = 0.5f / 127.0f;
            kn_nbits_quant_a(x, K, bs, qr, sa, as);
            kn_nbits_i8g_deint8(qr, lq, qrd);
            for (int deint = 0; deint < 2; deint++) {
                memset(qv, 0x55, sizeof qv);
                kn_nbits_quant_a_avx512(x, K, bs, deint, qv, sv, av);
                FAST_ASSERT(memcmp(qv, deint ? qrd : qr, (size_t)lq) == 0, "quant bs %lld case %d deint %d",
                            (long long)bs, t, deint);
                FAST_ASSERT(memcmp(sv, sa, sizeof sv) == 0 && memcmp(av, as, sizeof av) == 0,
                            "quant scales bs %lld case %d", (long long)bs, t);
            }
        }
}
END_TEST

int main(void) {
    Suite *s = suite_create("nbits_i8gemm");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_i8gemm_shapes);
    tcase_add_test(tc, test_i8gemm_pieces);
    suite_add_tcase(s, tc);
    return kn_test_run_suite(s);
}
