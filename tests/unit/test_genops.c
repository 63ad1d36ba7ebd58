/* Unit tests for the text-generation ops (graph/infer_genops.c, kernels/cpu/genops.c, nbits.c):
 * MatMulNBits through the executor's node path against a double-precision product of the
 * dequantised weights (4 and 8 bits, every block size, K not a multiple of it, zero points absent,
 * packed and float, 1..9 and 64 rows, threaded and not), its vector inner loops at every level
 * this CPU has against the plain ones, accuracy_level 4's int8 path (A quantised per block, as ONNX
 * Runtime's CPU) bit for bit against the same algorithm written out here and its AVX2 loop against
 * the plain one, GroupQueryAttention with present written into past's own
 * buffer (GenAI's shared KV cache) against separate buffers over several decode steps, and the
 * error paths (shapes that disagree with K, N, bits, block_size, sequence lengths that do not fit
 * the cache), each naming the node. tests/genops_parity.py covers the ops against ONNX Runtime. */
#include "tests/unit/harness.h"
#include "kernels/cpu/nbits.h"
#include "kernels/cpu/rows.h"
#include "runtime/core/dtype.h"
#include <stdio.h>

static uint32_t rng_state = 777;
static uint32_t urand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}
static double drand(void) { return (double)(urand() & 0xFFFF) / 65536.0 * 2.0 - 1.0; }

/* ---- MatMulNBits ---- */

typedef struct nb_case {
    int64_t M, K, N, bs;
    int bits, zp_kind; /* 0 none, 1 packed uint8, 2 float */
    bool bias;
    int level; /* accuracy_level */
    /* 0: run as an op alone; else with the node prepared as loading does (kn_nbits_prepare) from
     * 1: B itself (packed where the VNNI loop takes it), 2: a copy of B (the packing must then be
     * ignored: another B), 3: no constant B */
    int prep;
} nb_case;

/* accuracy_level 4's int8 algorithm (kernels/cpu/nbits.h) written out on its own for one row of A
 * and one column: A's blocks quantised, integer dot products with the unsigned weights, then the
 * float32 chains in the kernel's order; the kernel must give these bits exactly. */
static float i8_ref(const float *a, int64_t K, int64_t bs, const uint8_t *col, const float *sc, const double *zero,
                    int bits, const float *bias) {
    int64_t nb = (K + bs - 1) / bs, blob = bs * bits / 8;
    float acc = 0.0f, zs = 0.0f, asum[64];
    for (int64_t b = 0; b < nb; b++) {
        float amax = 0.0f;
        for (int64_t k = b * bs; k < K && k < (b + 1) * bs; k++) amax = fabsf(a[k]) > amax ? fabsf(a[k]) : amax;
        float scale = amax / 127.0f, inv = amax != 0.0f ? 127.0f / amax : 0.0f;
        int32_t dot = 0, qs = 0;
        for (int64_t k = b * bs; k < K && k < (b + 1) * bs; k++) {
            int qa = (int)rintf(a[k] * inv), i = (int)(k - b * bs);
            const uint8_t *p = col + b * blob;
            dot += qa * (bits == 4 ? (p[i / 2] >> ((i & 1) * 4)) & 15 : p[i]);
            qs += qa;
        }
        acc = fmaf((float)dot, scale * sc[b], acc);
        asum[b] = scale * (float)qs;
    }
    if (bias) acc += *bias;
    for (int64_t b = 0; b < nb; b++) zs = fmaf(asum[b], -(float)zero[b] * sc[b], zs);
    return acc + zs;
}

/* MatMulNBits run as the executor runs a loaded node: its constant operands prepared first, from
 * bprep as B */
static kn_status *nb_eval_prepared(const kn_attr *at, int n_at, kn_tensor *const *in, const kn_tensor *bprep,
                                   kn_tensor **out, kn_threadpool *pool) {
    kn_node node = kn_test_node(KN_OP_MsMatMulNBits, 1, at, n_at);
    kn_status *st = kn_node_decode_params(&node);
    if (st) return st;
    kn_nbits_prepared *pr = NULL;
    if ((st = kn_nbits_prepare(&node, bprep, in[2], in[3], &pr))) {
        free(node.params);
        return st;
    }
    ck_assert_ptr_nonnull(pr);
    node.prepared = pr;
    out[0] = calloc(1, sizeof(kn_tensor));
    kn_scratch scratch = {0};
    kn_exec_ctx ctx = {.pool = pool,
                       .backend = kn_cpu_backend(),
                       .scratch_alloc = kn_scratch_alloc_impl,
                       .scratch_state = &scratch,
                       .seed = KN_TEST_SEED};
    st = kn_node_eval_host(&ctx, &node, (const kn_tensor *const *)in, 6, out, 1);
    kn_nbits_prepared_free(pr);
    free(node.params);
    kn_scratch_release(&scratch);
    if (st) free_all(out, 1);
    return st;
}

static void nb_run(const nb_case *c, kn_threadpool *pool) {
    int64_t nb = (c->K + c->bs - 1) / c->bs, blob = c->bs * c->bits / 8, zs = (nb * c->bits + 7) / 8;
    int64_t da[2] = {c->M, c->K}, db[3] = {c->N, nb, blob}, dsc[1] = {c->N * nb},
            dz[1] = {c->zp_kind == 1 ? c->N * zs : c->N * nb};
    int64_t dbias[1] = {c->N};
    kn_tensor *a = mk(KN_F32, 2, da, NULL), *b = mk(KN_U8, 3, db, NULL), *sc = mk(KN_F32, 1, dsc, NULL);
    kn_tensor *zp = c->zp_kind ? mk(c->zp_kind == 1 ? KN_U8 : KN_F32, 1, dz, NULL) : NULL;
    kn_tensor *bias = c->bias ? mk(KN_F32, 1, dbias, NULL) : NULL;
    for (int64_t i = 0; i < kn_numel(a); i++) ((float *)a->data)[i] = (float)drand();
    for (int64_t i = 0; i < kn_numel(b); i++) ((uint8_t *)b->data)[i] = (uint8_t)urand();
    for (int64_t i = 0; i < kn_numel(sc); i++) ((float *)sc->data)[i] = (float)(0.01 + 0.05 * (drand() + 1.0));
    if (zp && zp->dtype == KN_U8)
        for (int64_t i = 0; i < kn_numel(zp); i++) ((uint8_t *)zp->data)[i] = (uint8_t)urand();
    if (zp && zp->dtype == KN_F32)
        for (int64_t i = 0; i < kn_numel(zp); i++) ((float *)zp->data)[i] = (float)((drand() + 1.0) * 7.0);
    for (int64_t i = 0; bias && i < c->N; i++) ((float *)bias->data)[i] = (float)drand();
    /* the reference: every weight dequantised, the product in double */
    double *ref = calloc((size_t)(c->M * c->N), sizeof(double));
    const uint8_t *bq = b->data;
    for (int64_t n = 0; n < c->N; n++)
        for (int64_t k = 0; k < c->K; k++) {
            int64_t blk = k / c->bs, i = k % c->bs;
            const uint8_t *p = bq + (n * nb + blk) * blob;
            int q = c->bits == 4 ? (p[i / 2] >> ((i & 1) * 4)) & 15 : p[i];
            double z = c->bits == 4 ? 8.0 : 128.0;
            if (c->zp_kind == 1) {
                const uint8_t *zb = (const uint8_t *)zp->data + n * zs;
                z = c->bits == 4 ? (zb[blk / 2] >> ((blk & 1) * 4)) & 15 : zb[blk];
            } else if (c->zp_kind == 2) {
                z = ((float *)zp->data)[n * nb + blk];
            }
            double w = ((double)q - z) * ((float *)sc->data)[n * nb + blk];
            for (int64_t m = 0; m < c->M; m++) ref[m * c->N + n] += ((float *)a->data)[m * c->K + k] * w;
        }
    double mx = 0.0;
    for (int64_t i = 0; i < c->M * c->N; i++) {
        if (bias) ref[i] += ((float *)bias->data)[i % c->N];
        mx = fabs(ref[i]) > mx ? fabs(ref[i]) : mx;
    }
    kn_attr at[5] = {attr_i("K", c->K), attr_i("N", c->N), attr_i("bits", c->bits), attr_i("block_size", c->bs),
                     attr_i("accuracy_level", c->level)};
    kn_tensor *in[6] = {a, b, sc, zp, NULL, bias}, *out[1], *bcopy = NULL;
    if (c->prep == 2) {
        bcopy = mk(KN_U8, 3, db, NULL);
        memcpy(bcopy->data, b->data, (size_t)kn_numel(b));
        in[1] = bcopy;
    }
    if (c->prep) expect_ok(nb_eval_prepared(at, 5, in, c->prep == 3 ? NULL : b, out, pool));
    else expect_ok(kn_test_run_op(KN_OP_MsMatMulNBits, 1, at, 5, in, 6, out, NULL, 1, pool));
    char what[128];
    snprintf(what, sizeof what, "MatMulNBits M%lld K%lld N%lld bits%d bs%lld zp%d level%d prep%d", (long long)c->M,
             (long long)c->K, (long long)c->N, c->bits, (long long)c->bs, c->zp_kind, c->level, c->prep);
    /* level 4 with float zero points stays on the float32 product, as in ONNX Runtime */
    if (c->level == 4 && c->zp_kind != 2) {
        /* the int8 algorithm bit for bit; within its quantisation error (1/254 of
         * each block's largest |a| per value) of the exact product */
        const float *y = out[0]->data;
        double *zero = calloc((size_t)nb, sizeof(double));
        int64_t bad = 0;
        double worst = 0.0;
        for (int64_t n = 0; n < c->N; n++) {
            for (int64_t blk = 0; blk < nb; blk++) {
                zero[blk] = c->bits == 4 ? 8.0 : 128.0;
                if (c->zp_kind == 1) {
                    const uint8_t *zb = (const uint8_t *)zp->data + n * zs;
                    zero[blk] = c->bits == 4 ? (zb[blk / 2] >> ((blk & 1) * 4)) & 15 : zb[blk];
                }
            }
            for (int64_t m = 0; m < c->M; m++) {
                float r = i8_ref((float *)a->data + m * c->K, c->K, c->bs, bq + n * nb * blob,
                                 (float *)sc->data + n * nb, zero, c->bits, bias ? (float *)bias->data + n : NULL);
                /* bit for bit, the few-row loops and the int8 GEMM of many rows alike */
                bad += memcmp(&r, &y[m * c->N + n], sizeof r) != 0;
                double e = fabs(y[m * c->N + n] - ref[m * c->N + n]);
                worst = e > worst ? e : worst;
            }
        }
        free(zero);
        FAST_ASSERT(bad == 0, "%s: %lld values differ from the int8 algorithm", what, (long long)bad);
        FAST_ASSERT(worst <= 3e-2 * mx && worst > 0.0, "%s: int8 error %g of max %g", what, worst, mx);
    } else {
        expect_close(out[0], ref, c->M * c->N, 1e-5, 1e-5 * mx, what);
    }
    free_all(out, 1);
    free(ref);
    kn_tensor *ts[6] = {a, b, sc, zp, bias, bcopy};
    free_all(ts, 6);
}

START_TEST(test_matmul_nbits) {
    kn_threadpool *pool = kn_threadpool_create(3);
    static const int64_t bss[5] = {16, 32, 64, 128, 256}, ms[6] = {1, 2, 4, 5, 9, 64};
    int idx = 0;
    for (int bits = 4; bits <= 8; bits += 4)
        for (int bi = 0; bi < 5; bi++)
            for (int mi = 0; mi < 6; mi++, idx++) {
                nb_case c = {
                    ms[mi], 3 * bss[bi] + (idx % 3 ? 0 : 5), 13 + 4 * (idx % 5), bss[bi], bits, idx % 3, idx % 2 == 0,
                    idx % 4};
                nb_run(&c, idx % 2 ? pool : NULL);
            }
    nb_case big = {17, 1100, 150, 32, 4, 1, true, 0}; /* several panels of K and N, tile edges both ways */
    nb_run(&big, pool);
    nb_case tall = {83, 1100, 70, 32, 4, 1, true, 0}; /* rows over two blocks of the outer-product tiles */
    nb_run(&tall, pool);
    kn_threadpool_free(pool);
}
END_TEST

/* accuracy_level 4: A quantised to int8 per block (every block size, 4 and 8 bits, K not a multiple
 * of the block, zero points absent and packed, and float ones that keep the float32 product; 1..64
 * rows; N not a multiple of the 8 columns the vector loop takes; threaded and not) */
START_TEST(test_matmul_nbits_int8) {
    kn_threadpool *pool = kn_threadpool_create(3);
    static const int64_t bss[5] = {16, 32, 64, 128, 256}, ms[4] = {1, 2, 5, 64};
    int idx = 0;
    for (int bits = 4; bits <= 8; bits += 4)
        for (int bi = 0; bi < 5; bi++)
            for (int mi = 0; mi < 4; mi++, idx++) {
                nb_case c = {
                    ms[mi], 2 * bss[bi] + (idx % 3 ? 0 : 7), 9 + 8 * (idx % 4), bss[bi], bits, idx % 3, idx % 2 == 0,
                    4};
                nb_run(&c, idx % 2 ? pool : NULL);
            }
    kn_threadpool_free(pool);
}
END_TEST

/* accuracy_level 4 on prepared nodes (scales decoded at load, B packed for the VNNI decode loop
 * where this CPU has it): 1..7 rows and 64, every block size, 4 and 8 bits, N below, at and past
 * the 16-column tile, K not a multiple of the block, zero points absent, packed and float, bias or
 * not, the packing taken, ignored for another B, and absent; bit for bit the int8 algorithm */
START_TEST(test_matmul_nbits_int8_prepared) {
    kn_threadpool *pool = kn_threadpool_create(3);
    static const int64_t bss[5] = {16, 32, 64, 128, 256}, ns[5] = {5, 16, 33, 70, 128};
    int idx = 0;
    for (int bits = 4; bits <= 8; bits += 4)
        for (int bi = 0; bi < 5; bi++)
            for (int64_t m = 1; m <= 8; m++, idx++) {
                nb_case c = {m == 8 ? 64 : m,
                             2 * bss[bi] + (idx % 3 ? 0 : 9),
                             ns[idx % 5],
                             bss[bi],
                             bits,
                             idx % 4 == 3 ? 2 : idx % 2,
                             idx % 3 == 1,
                             4,
                             1 + idx % 3};
                nb_run(&c, idx % 2 ? pool : NULL);
            }
    kn_threadpool_free(pool);
}
END_TEST

/* B packed per 16 columns (kn_nbits_i8_pack16) against the layout nbits.h describes, and the VNNI
 * decode loop over it against the plain loop bit for bit: every block size, 4 and 8 bits, N not a
 * multiple of the tile, K not a multiple of the block, 1..4 rows, zero points or not, bias or not,
 * NaN and infinities in A (whose rows then give NaN in both) */
START_TEST(test_nbits_int8_packed_inner) {
    static const int64_t bss[5] = {16, 32, 64, 128, 256}, ns[3] = {16, 7, 29};
    for (int bits = 4; bits <= 8; bits += 4)
        for (int bi = 0; bi < 5; bi++)
            for (int ni = 0; ni < 3; ni++) {
                enum { NBK = 3, NR = KN_NBITS_I8_NR, NMAX = 32 };
                int64_t bs = bss[bi], N = ns[ni], k2 = NBK * bs - 3, blob = bs * bits / 8, cs = NBK * blob;
                int64_t lq = NBK * bs, tiles = (N + 15) / 16;
                float a2[NR * NBK * 256], sc[NMAX * NBK], off[NMAX * NBK], offz[NMAX * NBK], bias[NMAX];
                float sc16[NMAX * NBK], off16[NMAX * NBK], y[NR * 16], yr[16], s2[NR * NBK], as2[NR * NBK];
                int8_t q2[NR * NBK * 256];
                uint8_t bq[NMAX * NBK * 256], bp[NMAX * NBK * 256];
                float zdef = (float)(1 << (bits - 1));
                for (int i = 0; i < NR * k2; i++) a2[i] = (float)drand() * 3.0f;
                /* row 2's block 1 ends in NaN (its largest |a| is then NaN: kn_nbits_quant_a's max keeps
                 * the last NaN), row 3's block 0 holds an infinity */
                if (ni == 1) a2[2 * k2 + 2 * bs - 1] = NAN;
                if (ni == 0) a2[k2 + 2 * bs + 5] = NAN; /* mid-block: a finite (wrapped) row */
                if (ni == 2) a2[3 * k2 + 1] = bi % 2 ? INFINITY : -INFINITY;
                for (int64_t i = 0; i < N * cs; i++) bq[i] = (uint8_t)urand();
                for (int64_t i = 0; i < N * NBK; i++) {
                    sc[i] = (float)(0.02 + 0.01 * drand());
                    off[i] = -(float)(urand() % (1u << bits)) * sc[i];
                    offz[i] = -zdef * sc[i];
                }
                for (int64_t j = 0; j < N; j++) bias[j] = (float)drand();
                for (int r = 0; r < NR; r++)
                    kn_nbits_quant_a(a2 + r * k2, k2, bs, q2 + r * lq, s2 + r * NBK, as2 + r * NBK);
                if (kn_red_simd_level() == 2) /* the vector quantisation: the same bytes and floats */
                    for (int r = 0; r < NR; r++) {
                        int8_t qv[NBK * 256];
                        float sv[NBK], av[NBK];
                        memset(qv, 0x55, sizeof qv);
                        kn_nbits_quant_a_avx512(a2 + r * k2, k2, bs, false, qv, sv, av);
                        FAST_ASSERT(memcmp(qv, q2 + r * lq, (size_t)lq) == 0 &&
                                        memcmp(sv, s2 + r * NBK, sizeof sv) == 0 &&
                                        memcmp(av, as2 + r * NBK, sizeof av) == 0,
                                    "quant_a_avx512 bs %lld row %d", (long long)bs, r);
                    }
                kn_nbits_i8_pack16(bq, N, NBK, bits, bs, bp);
                /* the layout: the value of column n at k sits where nbits.h says */
                for (int64_t n = 0; n < tiles * 16; n++)
                    for (int64_t k = 0; k < NBK * bs; k++) {
                        int64_t t = n / 16, j = n % 16, kb = k / bs, i = k % bs;
                        int want = 0;
                        if (n < N) {
                            const uint8_t *p = bq + n * cs + kb * blob;
                            want = bits == 4 ? (p[i / 2] >> ((i & 1) * 4)) & 15 : p[i];
                        }
                        const uint8_t *tb = bp + t * 16 * cs;
                        int got = bits == 4 ? (tb[(k / 8 * 16 + j) * 4 + k % 4] >> (k % 8 / 4 * 4)) & 15
                                            : tb[(k / 4 * 16 + j) * 4 + k % 4];
                        FAST_ASSERT(got == want, "pack bits %d bs %lld n %lld k %lld: %d vs %d", bits, (long long)bs,
                                    (long long)n, (long long)k, got, want);
                    }
                if (!kn_nbits_have_vnni()) continue;
                for (int v = 0; v < 4; v++) {
                    bool zp = v & 1;
                    const float *bi2 = v & 2 ? bias : NULL, *o = zp ? off : offz;
                    kn_nbits_group(sc, N, NBK, 16, sc16);
                    kn_nbits_group(o, N, NBK, 16, off16);
                    for (int nr = 1; nr <= NR; nr++)
                        for (int64_t t = 0; t < tiles; t++) {
                            int nc = N - t * 16 < 16 ? (int)(N - t * 16) : 16;
                            memset(y, 0x7f, sizeof y);
                            kn_nbits_i8_dot16p_vnni(q2, lq, s2, as2, NBK, nr, bp + t * 16 * cs, sc16 + t * NBK * 16,
                                                    zp ? off16 + t * NBK * 16 : NULL, zdef, NBK, bits, bs,
                                                    bi2 ? bi2 + t * 16 : NULL, nc, y, 16);
                            for (int r = 0; r < nr; r++) {
                                kn_nbits_i8_dot_scalar(q2 + r * lq, s2 + r * NBK, as2 + r * NBK, bq + t * 16 * cs, cs,
                                                       sc + t * 16 * NBK, o + t * 16 * NBK, NBK, 1, NBK, bits, bs,
                                                       bi2 ? bi2 + t * 16 : NULL, nc, yr);
                                for (int i = 0; i < 16; i++) {
                                    float g = y[r * 16 + i];
                                    uint32_t gb;
                                    memcpy(&gb, &g, sizeof gb);
                                    /* columns past nc are left alone */
                                    bool same = i < nc ? memcmp(&g, &yr[i], sizeof g) == 0 || (isnan(g) && isnan(yr[i]))
                                                       : gb == 0x7f7f7f7fu;
                                    FAST_ASSERT(same,
                                                "VNNI packed bits %d bs %lld N %lld v %d rows %d tile %lld row %d col "
                                                "%d: %.9g vs %.9g",
                                                bits, (long long)bs, (long long)N, v, nr, (long long)t, r, i, g,
                                                i < nc ? yr[i] : 0.0f);
                                }
                                /* the rows with NaN or an infinity come out NaN, the others finite */
                                bool bad_row = (ni == 1 && r == 2) || (ni == 2 && r == 3);
                                for (int i = 0; i < nc; i++)
                                    FAST_ASSERT(bad_row ? isnan(y[r * 16 + i]) : isfinite(y[r * 16 + i]),
                                                "row %d col %d: %g", r, i, y[r * 16 + i]);
                            }
                        }
                }
            }
}
END_TEST

/* the int8 path's pieces: a row's quantisation against its definition (zeros, a block of zeros,
 * ties rounded to even), and the AVX2 8-column loop against the plain one bit for bit */
START_TEST(test_nbits_int8_inner) {
    enum { K = 100, BS = 32, NB = (K + BS - 1) / BS };
    float a[K];
    for (int k = 0; k < K; k++) a[k] = (float)drand();
    for (int k = 32; k < 64; k++) a[k] = 0.0f; /* block 1 all zero: scale 0, values 0 */
    a[0] = 1.0f;                               /* block 0's max is 1: a * 127 exactly, 0.5 / 127 ties */
    a[1] = 0.5f / 127.0f * 5.0f;               /* 2.5 rounds to 2 */
    a[2] = -0.5f / 127.0f * 7.0f;              /* -3.5 rounds to -4 */
    int8_t qa[NB * BS];
    float sa[NB], as[NB];
    memset(qa, 0x55, sizeof qa);
    kn_nbits_quant_a(a, K, BS, qa, sa, as);
    if (kn_red_simd_level() == 2) {
        int8_t qv[NB * BS];
        float sv[NB], av[NB];
        kn_nbits_quant_a_avx512(a, K, BS, false, qv, sv, av);
        ck_assert(memcmp(qv, qa, sizeof qv) == 0 && memcmp(sv, sa, sizeof sv) == 0 && memcmp(av, as, sizeof av) == 0);
    }
    ck_assert_float_eq(sa[0], 1.0f / 127.0f);
    ck_assert_int_eq(qa[0], 127);
    ck_assert_int_eq(qa[1], 2);
    ck_assert_int_eq(qa[2], -4);
    ck_assert_float_eq(sa[1], 0.0f);
    ck_assert_float_eq(as[1], 0.0f);
    for (int b = 0; b < NB; b++) {
        float amax = 0.0f;
        int sum = 0;
        for (int k = b * BS; k < K && k < (b + 1) * BS; k++) amax = fmaxf(amax, fabsf(a[k]));
        for (int k = b * BS; k < (b + 1) * BS; k++) {
            int want = k < K ? (int)rintf(a[k] * (amax != 0.0f ? 127.0f / amax : 0.0f)) : 0;
            FAST_ASSERT(qa[k] == want, "quant k %d: %d vs %d", k, qa[k], want);
            sum += want;
        }
        ck_assert_float_eq(sa[b], amax / 127.0f);
        ck_assert_float_eq(as[b], sa[b] * (float)sum);
    }
    /* the plain loop over grouped scales equals it over plain ones; the AVX2 loop (A reordered,
     * scales grouped, 1..4 rows) equals the plain one bit for bit */
    static const int64_t bss[5] = {16, 32, 64, 128, 256};
    for (int bits = 4; bits <= 8; bits += 4)
        for (int bi = 0; bi < 5; bi++) {
            enum { NBK = 3, NR = KN_NBITS_I8_NR };
            int64_t bs = bss[bi], k2 = NBK * bs - 5, blob = bs * bits / 8, cs = NBK * blob, lq = NBK * bs;
            float a2[NR * NBK * 256], sc[8 * NBK], off[8 * NBK], sc8[8 * NBK], off8[8 * NBK], bias[8];
            float y[NR * 8], yr[NR * 8], yg[8], s2[NR * NBK], as2[NR * NBK];
            int8_t q2[NR * NBK * 256], qd[NR * NBK * 256];
            uint8_t bq[8 * NBK * 256];
            for (int i = 0; i < NR * k2; i++) a2[i] = (float)drand() * 3.0f;
            for (size_t i = 0; i < (size_t)(8 * cs); i++) bq[i] = (uint8_t)urand();
            for (int i = 0; i < 8 * NBK; i++) {
                sc[i] = (float)(0.02 + 0.01 * drand());
                off[i] = -(float)(urand() % (1u << bits)) * sc[i];
            }
            kn_nbits_group(sc, 8, NBK, 8, sc8);
            kn_nbits_group(off, 8, NBK, 8, off8);
            for (int j = 0; j < 8; j++) bias[j] = (float)drand();
            for (int r = 0; r < NR; r++) {
                kn_nbits_quant_a(a2 + r * k2, k2, bs, q2 + r * lq, s2 + r * NBK, as2 + r * NBK);
                if (bits == 4) kn_nbits_i8_deint(q2 + r * lq, lq, bs, qd + r * lq);
            }
            for (int wb = 0; wb < 2; wb++)
                for (int nr = 1; nr <= NR; nr++) {
                    const float *bi2 = wb ? bias : NULL;
                    for (int r = 0; r < nr; r++) {
                        kn_nbits_i8_dot_scalar(q2 + r * lq, s2 + r * NBK, as2 + r * NBK, bq, cs, sc, off, NBK, 1, NBK,
                                               bits, bs, bi2, 8, yr + r * 8);
                        kn_nbits_i8_dot_scalar(q2 + r * lq, s2 + r * NBK, as2 + r * NBK, bq, cs, sc8, off8, 1, 8, NBK,
                                               bits, bs, bi2, 8, yg);
                        FAST_ASSERT(memcmp(yg, yr + r * 8, sizeof yg) == 0, "grouped scales bits %d bs %lld", bits,
                                    (long long)bs);
                    }
                    if (kn_red_simd_level() < 1) continue;
                    kn_nbits_i8_dot8_avx2(bits == 4 ? qd : q2, lq, s2, as2, NBK, nr, bq, cs, sc8, off8, NBK, bits, bs,
                                          bi2, y, 8);
                    for (int i = 0; i < nr * 8; i++)
                        FAST_ASSERT(memcmp(&y[i], &yr[i], sizeof y[i]) == 0,
                                    "bits %d bs %lld rows %d value %d: %.9g vs %.9g", bits, (long long)bs, nr, i, y[i],
                                    yr[i]);
                    if (!kn_nbits_have_vnni()) continue;
                    memset(y, 0, sizeof y);
                    kn_nbits_i8_dot8_vnni(bits == 4 ? qd : q2, lq, s2, as2, NBK, nr, bq, cs, sc8, off8, NBK, bits, bs,
                                          bi2, y, 8);
                    for (int i = 0; i < nr * 8; i++)
                        FAST_ASSERT(memcmp(&y[i], &yr[i], sizeof y[i]) == 0, "VNNI bits %d bs %lld rows %d value %d",
                                    bits, (long long)bs, nr, i);
                }
        }
}
END_TEST

/* the vector inner loops of every level this CPU runs (AVX2 on an AVX-512 machine too) against the
 * plain ones: dequantisation bit for bit, dot products and tiles to float32 rounding */
START_TEST(test_nbits_inner_loops) {
    int lvl = kn_red_simd_level();
    enum { K = 300, BS = 32, NB = (K + BS - 1) / BS, NC = 4 };
    for (int lv = 1; lv <= lvl; lv++)
        for (int bits = 4; bits <= 8; bits += 4) {
            bool z = lv == 2;
            int64_t blob = BS * bits / 8, cs = NB * blob;
            uint8_t bq[NC * NB * 32];
            float a[4 * K], sc[NC * NB], off[NC * NB], y[4 * NC], yr[4 * NC];
            for (size_t i = 0; i < sizeof bq; i++) bq[i] = (uint8_t)urand();
            for (int i = 0; i < 4 * K; i++) a[i] = (float)drand();
            for (int i = 0; i < NC * NB; i++) {
                sc[i] = (float)(0.02 + 0.01 * drand());
                off[i] = -(float)(urand() % 16) * sc[i];
            }
            float dq[K], dqr[K], panel[NC * K];
            for (int n = 0; n < NC; n++) {
                const uint8_t *q = bq + n * cs;
                const float *s = sc + n * NB, *o = off + n * NB;
                kn_nbits_dequant_scalar(q, s, o, K, bits, BS, 0, NB, dqr);
                memcpy(panel + n * K, dqr, sizeof dqr);
                /* a middle range of blocks too, as the prefill panels take them */
                (z ? kn_nbits_dequant_avx512 : kn_nbits_dequant_avx2)(q, s, o, K, bits, BS, 0, NB, dq);
                for (int k = 0; k < K; k++)
                    FAST_ASSERT(dq[k] == dqr[k], "level %d dequant bits %d n %d k %d", lv, bits, n, k);
                (z ? kn_nbits_dequant_avx512 : kn_nbits_dequant_avx2)(q, s, o, K, bits, BS, 3, NB, dq);
                for (int k = 3 * BS; k < K; k++)
                    FAST_ASSERT(dq[k - 3 * BS] == dqr[k], "level %d dequant from block 3, k %d", lv, k);
                kn_nbits_dot_scalar(a, K, 4, q, s, o, K, bits, BS, yr + n, NC);
                (z ? kn_nbits_dot_avx512 : kn_nbits_dot_avx2)(a, K, 4, q, s, o, K, bits, BS, y + n, NC);
            }
            for (int i = 0; i < 4 * NC; i++)
                FAST_ASSERT(close_to(y[i], yr[i], 1e-5, 1e-5), "level %d dot %d: %g vs %g", lv, i, y[i], yr[i]);
            float y4[NC];
            (z ? kn_nbits_dot1x4_avx512 : kn_nbits_dot1x4_avx2)(a, bq, cs, sc, off, NB, K, bits, BS, y4);
            for (int n = 0; n < NC; n++) FAST_ASSERT(close_to(y4[n], yr[n], 1e-5, 1e-5), "level %d dot1x4 %d", lv, n);
            if (bits == 4) { /* the decode path on A deinterleaved (BS is a multiple of 2W at both levels) */
                float ad[K];
                (z ? kn_nbits_deint_avx512 : kn_nbits_deint_avx2)(a, K / BS * BS, ad);
                (z ? kn_nbits_dot1x4_4p_avx512 : kn_nbits_dot1x4_4p_avx2)(a, ad, bq, cs, sc, off, NB, K, BS, y4);
                for (int n = 0; n < NC; n++)
                    FAST_ASSERT(close_to(y4[n], yr[n], 1e-5, 1e-5), "level %d dot1x4_4p %d: %g vs %g", lv, n, y4[n],
                                yr[n]);
                /* without zero points (off NULL: -8 * scale): the same sums as the offsets given */
                float off8[NC * NB], y8[NC], yn[NC], yr8[NC];
                for (int i = 0; i < NC * NB; i++) off8[i] = -8.0f * sc[i];
                for (int n = 0; n < NC; n++)
                    kn_nbits_dot_scalar(a, K, 1, bq + n * cs, sc + n * NB, off8 + n * NB, K, bits, BS, yr8 + n, 1);
                (z ? kn_nbits_dot1x4_4p_avx512 : kn_nbits_dot1x4_4p_avx2)(a, ad, bq, cs, sc, off8, NB, K, BS, y8);
                (z ? kn_nbits_dot1x4_4p_avx512 : kn_nbits_dot1x4_4p_avx2)(a, ad, bq, cs, sc, NULL, NB, K, BS, yn);
                for (int n = 0; n < NC; n++) {
                    FAST_ASSERT(close_to(y8[n], yr8[n], 1e-5, 1e-5), "level %d dot1x4_4p zp 8 %d: %g vs %g", lv, n,
                                y8[n], yr8[n]);
                    FAST_ASSERT(yn[n] == y8[n], "level %d dot1x4_4p off NULL %d: %g vs %g", lv, n, yn[n], y8[n]);
                }
            }
            /* tile and edge over the dequantised panel, written and then accumulated onto */
            int tm = z ? KN_NBITS_TM_AVX512 : KN_NBITS_TM_AVX2;
            float c[4 * NC], ce[4 * NC];
            for (int acc = 0; acc < 2; acc++) {
                (z ? kn_nbits_tile_avx512 : kn_nbits_tile_avx2)(a, K, panel, K, K, c, NC, acc);
                (z ? kn_nbits_edge_avx512 : kn_nbits_edge_avx2)(a, K, tm, panel, K, NC, K, ce, NC, acc);
            }
            for (int i = 0; i < tm * NC; i++) {
                FAST_ASSERT(close_to(c[i], 2 * yr[i], 1e-5, 2e-5), "level %d tile %d: %g vs %g", lv, i, c[i],
                            2 * yr[i]);
                FAST_ASSERT(close_to(ce[i], 2 * yr[i], 1e-5, 2e-5), "level %d edge %d: %g vs %g", lv, i, ce[i],
                            2 * yr[i]);
            }
        }
}
END_TEST

/* The prefill's outer-product tile (AVX-512) against plain sums, at every (mv, nt) it takes, odd
 * K lengths, written and then accumulated onto; strides wider than the tile. */
START_TEST(test_nbits_optile) {
    if (kn_red_simd_level() < 2) return;
    enum { MP = 80, NT = 8, KL = 37 };
    static float at[KL * MP], p[NT * KL], ct[NT * MP], ref[NT * MP];
    for (int i = 0; i < KL * MP; i++) at[i] = (float)(drand() - 0.5);
    for (int i = 0; i < NT * KL; i++) p[i] = (float)(drand() - 0.5);
    for (int mv = 1; mv <= KN_NBITS_OP_MV; mv++)
        for (int nt = 1; nt <= KN_NBITS_OP_NT; nt++)
            for (int kl = 1; kl <= KL; kl += 9) {
                for (int i = 0; i < NT * MP; i++) ct[i] = ref[i] = (float)i;
                for (int acc = 0; acc < 2; acc++)
                    kn_nbits_optile_avx512(at + 3, MP, mv, p + 1, KL, nt, kl, ct + 2, MP, acc);
                for (int j = 0; j < nt; j++)
                    for (int m = 0; m < 16 * mv; m++) {
                        double s = 0;
                        for (int k = 0; k < kl; k++) s += (double)at[3 + k * MP + m] * p[1 + j * KL + k];
                        ref[2 + j * MP + m] = (float)(2 * s);
                    }
                for (int i = 0; i < NT * MP; i++)
                    FAST_ASSERT(close_to(ct[i], ref[i], 1e-5, 1e-5), "optile mv %d nt %d kl %d at %d: %g vs %g", mv, nt,
                                kl, i, ct[i], ref[i]);
            }
}
END_TEST

START_TEST(test_matmul_nbits_errors) {
    int64_t da[2] = {2, 64}, db_bad[3] = {8, 3, 16}, db[3] = {8, 2, 16}, dsc[1] = {16}, dsc_bad[1] = {15};
    kn_tensor *a = mk(KN_F32, 2, da, NULL), *bbad = mk(KN_U8, 3, db_bad, NULL), *b = mk(KN_U8, 3, db, NULL);
    kn_tensor *sc = mk(KN_F32, 1, dsc, NULL), *scbad = mk(KN_F32, 1, dsc_bad, NULL), *out[1];
    kn_attr at[4] = {attr_i("K", 64), attr_i("N", 8), attr_i("bits", 4), attr_i("block_size", 32)};
    kn_tensor *in1[3] = {a, bbad, sc}, *in2[3] = {a, b, scbad}, *in3[3] = {a, b, sc};
    kn_status *st = kn_test_run_op(KN_OP_MsMatMulNBits, 1, at, 4, in1, 3, out, NULL, 1, NULL);
    ck_assert_ptr_nonnull(st);
    ck_assert_msg(strstr(kn_status_message(st), "MatMulNBits 't'") && strstr(kn_status_message(st), "blocks"), "%s",
                  kn_status_message(st));
    kn_status_free(st);
    expect_err(kn_test_run_op(KN_OP_MsMatMulNBits, 1, at, 4, in2, 3, out, NULL, 1, NULL));
    kn_attr at_bs[4] = {attr_i("K", 64), attr_i("N", 8), attr_i("bits", 4), attr_i("block_size", 24)};
    expect_err(kn_test_run_op(KN_OP_MsMatMulNBits, 1, at_bs, 4, in3, 3, out, NULL, 1, NULL));
    kn_attr at_bits[4] = {attr_i("K", 64), attr_i("N", 8), attr_i("bits", 3), attr_i("block_size", 32)};
    expect_err(kn_test_run_op(KN_OP_MsMatMulNBits, 1, at_bits, 4, in3, 3, out, NULL, 1, NULL));
    kn_attr at_k[4] = {attr_i("K", 48), attr_i("N", 8), attr_i("bits", 4), attr_i("block_size", 32)};
    expect_err(kn_test_run_op(KN_OP_MsMatMulNBits, 1, at_k, 4, in3, 3, out, NULL, 1, NULL));
    expect_ok(kn_test_run_op(KN_OP_MsMatMulNBits, 1, at, 4, in3, 3, out, NULL, 1, NULL));
    free_all(out, 1);
    kn_tensor *ts[5] = {a, bbad, b, sc, scbad};
    free_all(ts, 5);
}
END_TEST

/* ---- GroupQueryAttention with a shared KV cache ---- */

/* Runs the node with present_key/value given as past_key/value themselves, as GenAI binds them. */
static kn_status *gqa_shared(const kn_attr *at, int n_at, kn_tensor *const *in, kn_tensor *y, kn_threadpool *pool) {
    kn_node node = kn_test_node(KN_OP_MsGroupQueryAttention, 1, at, n_at);
    kn_status *st = kn_node_decode_params(&node);
    if (st) return st;
    kn_scratch scratch = {0};
    kn_exec_ctx ctx = {.pool = pool,
                       .backend = kn_cpu_backend(),
                       .scratch_alloc = kn_scratch_alloc_impl,
                       .scratch_state = &scratch,
                       .seed = KN_TEST_SEED};
    kn_tensor *out[3] = {y, in[3], in[4]};
    st = kn_cpu_MsGroupQueryAttention(&ctx, &node, (const kn_tensor *const *)in, 9, out, 3);
    free(node.params);
    kn_scratch_release(&scratch);
    return st;
}

START_TEST(test_gqa_shared_buffer) {
    kn_threadpool *pool = kn_threadpool_create(3);
    enum { B = 2, N = 4, KV = 2, H = 8, CAP = 12, HALF = 4 };
    kn_attr at[4] = {attr_i("num_heads", N), attr_i("kv_num_heads", KV), attr_i("do_rotary", 1),
                     attr_i("local_window_size", 5)};
    int64_t dc[4] = {B, KV, CAP, H}, dcs[2] = {CAP + 4, HALF}, dsl[1] = {B}, dtl[1] = {1};
    kn_tensor *cache_k = mk(KN_F32, 4, dc, NULL), *cache_v = mk(KN_F32, 4, dc, NULL);
    kn_tensor *sep_k = mk(KN_F32, 4, dc, NULL), *sep_v = mk(KN_F32, 4, dc, NULL);
    kn_tensor *cs = mk(KN_F32, 2, dcs, NULL), *sn = mk(KN_F32, 2, dcs, NULL);
    for (int64_t p = 0; p < CAP + 4; p++)
        for (int i = 0; i < HALF; i++) {
            ((float *)cs->data)[p * HALF + i] = cosf((float)p / powf(100.0f, (float)i / HALF));
            ((float *)sn->data)[p * HALF + i] = sinf((float)p / powf(100.0f, (float)i / HALF));
        }
    /* a prompt of 4 tokens (entry 1 padded to 3), then 3 steps of one token */
    int lens[2] = {4, 3};
    for (int step = 0; step < 4; step++) {
        int64_t S = step == 0 ? 4 : 1, dq[3] = {B, S, N * H}, dk[3] = {B, S, KV * H};
        kn_tensor *q = mk(KN_F32, 3, dq, NULL), *k = mk(KN_F32, 3, dk, NULL), *v = mk(KN_F32, 3, dk, NULL);
        for (int64_t i = 0; i < kn_numel(q); i++) ((float *)q->data)[i] = (float)drand();
        for (int64_t i = 0; i < kn_numel(k); i++) ((float *)k->data)[i] = (float)drand();
        for (int64_t i = 0; i < kn_numel(v); i++) ((float *)v->data)[i] = (float)drand();
        kn_tensor *sl = mk(KN_I32, 1, dsl, NULL), *tl = mk(KN_I32, 1, dtl, NULL);
        int total = 0;
        for (int b = 0; b < B; b++) {
            int t = step == 0 ? lens[b] : lens[b] + step;
            ((int32_t *)sl->data)[b] = t - 1;
            total = t > total ? t : total;
        }
        ((int32_t *)tl->data)[0] = step == 0 ? 4 : total;
        /* separate buffers through the executor's path, then the shared ones in place */
        kn_tensor *in_sep[9] = {q, k, v, sep_k, sep_v, sl, tl, cs, sn}, *out[3];
        expect_ok(kn_test_run_op(KN_OP_MsGroupQueryAttention, 1, at, 4, in_sep, 9, out, NULL, 3, pool));
        ck_assert_int_eq(out[1]->dims[2], CAP);
        kn_tensor *y = mk(KN_F32, 3, dq, NULL), *in_sh[9] = {q, k, v, cache_k, cache_v, sl, tl, cs, sn};
        expect_ok(gqa_shared(at, 4, in_sh, y, step % 2 ? pool : NULL));
        for (int b = 0; b < B; b++) {
            int valid_rows = step == 0 ? lens[b] : 1;
            for (int64_t i = 0; i < valid_rows * N * H; i++) {
                int64_t o = b * S * N * H + i;
                FAST_ASSERT(((float *)y->data)[o] == ((float *)out[0]->data)[o], "step %d output %lld", step,
                            (long long)o);
            }
            int tot = ((int32_t *)sl->data)[b] + 1;
            for (int h = 0; h < KV; h++)
                for (int64_t i = 0; i < (int64_t)tot * H; i++) {
                    int64_t o = (b * KV + h) * CAP * H + i;
                    FAST_ASSERT(((float *)cache_k->data)[o] == ((float *)out[1]->data)[o], "step %d key %lld", step,
                                (long long)o);
                    FAST_ASSERT(((float *)cache_v->data)[o] == ((float *)out[2]->data)[o], "step %d value %lld", step,
                                (long long)o);
                }
        }
        /* the separate run's present is the next step's past */
        memcpy(sep_k->data, out[1]->data, kn_nbytes(sep_k));
        memcpy(sep_v->data, out[2]->data, kn_nbytes(sep_v));
        free_all(out, 3);
        kn_tensor *ts[6] = {q, k, v, sl, tl, y};
        free_all(ts, 6);
    }
    /* seqlens beyond the cache's capacity: an error naming the node, not a write past its end */
    int64_t dq[3] = {B, 1, N * H}, dk[3] = {B, 1, KV * H};
    kn_tensor *q = mk(KN_F32, 3, dq, NULL), *k = mk(KN_F32, 3, dk, NULL), *v = mk(KN_F32, 3, dk, NULL);
    kn_tensor *sl = mk(KN_I32, 1, dsl, NULL), *tl = mk(KN_I32, 1, dtl, NULL);
    ((int32_t *)sl->data)[0] = CAP + 3;
    ((int32_t *)tl->data)[0] = CAP;
    kn_tensor *in_bad[9] = {q, k, v, cache_k, cache_v, sl, tl, cs, sn}, *out[3];
    kn_status *st = kn_test_run_op(KN_OP_MsGroupQueryAttention, 1, at, 4, in_bad, 9, out, NULL, 3, NULL);
    ck_assert_ptr_nonnull(st);
    ck_assert_msg(strstr(kn_status_message(st), "GroupQueryAttention 't'") != NULL, "%s", kn_status_message(st));
    kn_status_free(st);
    kn_tensor *ts[11] = {q, k, v, sl, tl, cache_k, cache_v, sep_k, sep_v, cs, sn};
    free_all(ts, 11);
    kn_threadpool_free(pool);
}
END_TEST

int main(void) {
    Suite *s = suite_create("genops");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_matmul_nbits);
    tcase_add_test(tc, test_nbits_inner_loops);
    tcase_add_test(tc, test_nbits_optile);
    tcase_add_test(tc, test_matmul_nbits_errors);
    tcase_add_test(tc, test_matmul_nbits_int8);
    tcase_add_test(tc, test_nbits_int8_inner);
    tcase_add_test(tc, test_matmul_nbits_int8_prepared);
    tcase_add_test(tc, test_nbits_int8_packed_inner);
    tcase_add_test(tc, test_gqa_shared_buffer);
    suite_add_tcase(s, tc);
    return kn_test_run_suite(s);
}
