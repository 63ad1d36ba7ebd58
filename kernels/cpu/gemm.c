/* kn_sgemm: packed, cache-blocked single-precision GEMM. The structure follows the usual
 * Goto/BLIS design: for each NC-wide column block and KC-deep slice of K, op(B) is packed into
 * NR-wide interleaved panels, then for each MC-high row block op(A) is packed (scaled by alpha)
 * into MR-high panels, and a register-tiled micro-kernel computes MR x NR tiles of C. Work is
 * split into one rectangular region of C per thread, each with its own packing buffers, so the
 * threads never synchronise inside a call. Skinny products (M <= 4) skip packing entirely. */
#include "kernels/cpu/gemm.h"
#include <stdlib.h>
#include <string.h>

/* KC covers K = 384 (MiniLM hidden size) in one slice and K = 1536 in three, so C is revisited
 * rarely; an MC x KC block of A (192 KiB) stays in L2 and one KC x NR panel of B in L1/L2 while
 * the micro-kernel sweeps the block (512 measured best among 256..768 on Zen 4). MC is a multiple
 * of every MR (4, 6, 8) and NC of every NR (8, 16, 32). Overridable for benchmarking. */
#ifndef KC_MAX
#define KC_MAX 512
#endif
#ifndef MC_MAX
#define MC_MAX 96
#endif
#define NC_MAX 1536
#define SCALAR_MR 4
#define SCALAR_NR 8

typedef struct isa_desc {
    int isa;
    int mr, nr;
    kn_sgemm_micro_fn micro;
    kn_sgemm_rows_fn rows, rows_bt; /* NULL: no skinny path */
    kn_sgemm_rows_packed_fn rows_packed;
    void (*pack_a8)(const float *A, int64_t lda, int64_t kc, float alpha, float *dst); /* mr == 8 only */
} isa_desc;

static void micro_scalar(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc, float beta) {
    float acc[SCALAR_MR][SCALAR_NR] = {{0}};
    for (int64_t k = 0; k < kc; k++, Ap += SCALAR_MR, Bp += SCALAR_NR)
        for (int r = 0; r < SCALAR_MR; r++)
            for (int j = 0; j < SCALAR_NR; j++) acc[r][j] += Ap[r] * Bp[j];
    for (int r = 0; r < SCALAR_MR; r++)
        for (int j = 0; j < SCALAR_NR; j++) {
            float *p = C + r * ldc + j;
            *p = beta == 0.0f ? acc[r][j] : beta * *p + acc[r][j];
        }
}

static int resolve_isa(int want) {
    __builtin_cpu_init();
    bool has512 = __builtin_cpu_supports("avx512f");
    bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (want == KN_SGEMM_ISA_SCALAR) return KN_SGEMM_ISA_SCALAR;
    if (want == KN_SGEMM_ISA_AVX2) return has2 ? KN_SGEMM_ISA_AVX2 : KN_SGEMM_ISA_SCALAR;
    if (has512) return KN_SGEMM_ISA_AVX512;
    return has2 ? KN_SGEMM_ISA_AVX2 : KN_SGEMM_ISA_SCALAR;
}

static isa_desc get_isa(int want) {
    isa_desc d = {0};
    d.isa = resolve_isa(want);
    switch (d.isa) {
    case KN_SGEMM_ISA_AVX512:
        d.mr = KN_SGEMM_AVX512_MR;
        d.nr = KN_SGEMM_AVX512_NR;
        d.micro = kn_sgemm_micro_avx512;
        d.rows = kn_sgemm_rows_avx512;
        d.rows_bt = kn_sgemm_rows_bt_avx512;
        d.rows_packed = kn_sgemm_rows_packed_avx512;
        d.pack_a8 = kn_sgemm_pack_a8_avx2;
        break;
    case KN_SGEMM_ISA_AVX2:
        d.mr = KN_SGEMM_AVX2_MR;
        d.nr = KN_SGEMM_AVX2_NR;
        d.micro = kn_sgemm_micro_avx2;
        d.rows = kn_sgemm_rows_avx2;
        d.rows_bt = kn_sgemm_rows_bt_avx2;
        d.rows_packed = kn_sgemm_rows_packed_avx2;
        break;
    default:
        d.mr = SCALAR_MR;
        d.nr = SCALAR_NR;
        d.micro = micro_scalar;
        d.rows = d.rows_bt = NULL;
        break;
    }
    return d;
}

const char *kn_sgemm_isa_name(int isa) {
    switch (resolve_isa(isa)) {
    case KN_SGEMM_ISA_AVX512: return "avx512";
    case KN_SGEMM_ISA_AVX2: return "avx2";
    default: return "scalar";
    }
}

void kn_sgemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) {
                float a = trans_a ? A[k * lda + i] : A[i * lda + k];
                float b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
                s += (double)a * b;
            }
            float *c = C + i * ldc + j;
            *c = beta == 0.0f ? (float)(alpha * s) : (float)(alpha * s + (double)beta * *c);
        }
}

static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
    if (beta == 1.0f) return;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

/* op(A)[ic:ic+mc, pc:pc+kc] * alpha into MR-row panels: dst[panel][k*MR + r], zero-padded. */
static void pack_a(const isa_desc *d, bool ta, const float *A, int64_t lda, int64_t ic, int64_t pc, int64_t mc,
                   int64_t kc, int mr_full, float alpha, float *dst) {
    for (int64_t ir = 0; ir < mc; ir += mr_full, dst += mr_full * kc) {
        int mr = mc - ir < mr_full ? (int)(mc - ir) : mr_full;
        if (!ta && mr == 8 && mr_full == 8 && d->pack_a8) {
            d->pack_a8(A + (ic + ir) * lda + pc, lda, kc, alpha, dst);
        } else if (!ta) {
            for (int r = 0; r < mr; r++) {
                const float *src = A + (ic + ir + r) * lda + pc;
                for (int64_t k = 0; k < kc; k++) dst[k * mr_full + r] = alpha * src[k];
            }
            for (int r = mr; r < mr_full; r++)
                for (int64_t k = 0; k < kc; k++) dst[k * mr_full + r] = 0.0f;
        } else {
            for (int64_t k = 0; k < kc; k++) {
                const float *src = A + (pc + k) * lda + ic + ir;
                float *d = dst + k * mr_full;
                int r = 0;
                for (; r < mr; r++) d[r] = alpha * src[r];
                for (; r < mr_full; r++) d[r] = 0.0f;
            }
        }
    }
}

/* op(B)[pc:pc+kc, jc:jc+nc] into NR-column panels: dst[panel][k*NR + j], zero-padded. */
static void pack_b(bool tb, const float *B, int64_t ldb, int64_t pc, int64_t jc, int64_t kc, int64_t nc, int nr_full,
                   float *dst) {
    for (int64_t jr = 0; jr < nc; jr += nr_full, dst += nr_full * kc) {
        int nr = nc - jr < nr_full ? (int)(nc - jr) : nr_full;
        if (!tb) {
            for (int64_t k = 0; k < kc; k++) {
                const float *src = B + (pc + k) * ldb + jc + jr;
                float *d = dst + k * nr_full;
                /* constant sizes, so the copy is inlined: a libc call per 64-128 bytes cost ~10% of a
                 * convolution whose B is its input */
                if (nr == nr_full && nr_full == 32) {
                    memcpy(d, src, sizeof(float) * 32);
                } else if (nr == nr_full && nr_full == 16) {
                    memcpy(d, src, sizeof(float) * 16);
                } else if (nr == nr_full) {
                    memcpy(d, src, sizeof(float) * (size_t)nr_full);
                } else {
                    int j = 0;
                    for (; j < nr; j++) d[j] = src[j];
                    for (; j < nr_full; j++) d[j] = 0.0f;
                }
            }
        } else {
            for (int j = 0; j < nr; j++) {
                const float *src = B + (jc + jr + j) * ldb + pc;
                for (int64_t k = 0; k < kc; k++) dst[k * nr_full + j] = src[k];
            }
            for (int j = nr; j < nr_full; j++)
                for (int64_t k = 0; k < kc; k++) dst[k * nr_full + j] = 0.0f;
        }
    }
}

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

/* One thread's share: the whole blocked algorithm on an M x N region of C. */
static void sgemm_region(const isa_desc *d, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                         const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    const int MR = d->mr, NR = d->nr;
    int64_t kc_max = K < KC_MAX ? K : KC_MAX;
    int64_t mc_max = round_up(M < MC_MAX ? M : MC_MAX, MR);
    int64_t nc_max = round_up(N < NC_MAX ? N : NC_MAX, NR);
    size_t bytes = sizeof(float) * (size_t)(mc_max * kc_max + nc_max * kc_max + MR * NR) + 128;
    float *ws = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!ws) { /* no memory for packing: still give the right answer */
        kn_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    float *Ap = ws, *Bp = ws + round_up(mc_max * kc_max, 16), *tile = Bp + round_up(nc_max * kc_max, 16);
    for (int64_t jc = 0; jc < N; jc += NC_MAX) {
        int64_t nc = N - jc < NC_MAX ? N - jc : NC_MAX;
        for (int64_t pc = 0; pc < K; pc += KC_MAX) {
            int64_t kc = K - pc < KC_MAX ? K - pc : KC_MAX;
            float bet = pc == 0 ? beta : 1.0f;
            pack_b(tb, B, ldb, pc, jc, kc, nc, NR, Bp);
            for (int64_t ic = 0; ic < M; ic += MC_MAX) {
                int64_t mc = M - ic < MC_MAX ? M - ic : MC_MAX;
                pack_a(d, ta, A, lda, ic, pc, mc, kc, MR, alpha, Ap);
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    int nr = nc - jr < NR ? (int)(nc - jr) : NR;
                    const float *bp = Bp + jr * kc;
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        int mr = mc - ir < MR ? (int)(mc - ir) : MR;
                        const float *ap = Ap + ir * kc;
                        float *c = C + (ic + ir) * ldc + jc + jr;
                        if (mr == MR && nr == NR) {
                            d->micro(kc, ap, bp, c, ldc, bet);
                        } else {
                            d->micro(kc, ap, bp, tile, NR, 0.0f);
                            for (int r = 0; r < mr; r++)
                                for (int j = 0; j < nr; j++) {
                                    float *p = c + r * ldc + j;
                                    *p = bet == 0.0f ? tile[r * NR + j] : bet * *p + tile[r * NR + j];
                                }
                        }
                    }
                }
            }
        }
    }
    free(ws);
}

/* sgemm_region with op(B) already packed (kn_sgemm_pack_b): the columns [j0, j0 + N) of the
 * product, j0 a multiple of the panel width. Only A is packed here. */
static void sgemm_region_packed(const isa_desc *d, int64_t M, int64_t N, float alpha, const float *A, int64_t lda,
                                const kn_sgemm_packed *P, int64_t j0, float beta, float *C, int64_t ldc) {
    const int MR = d->mr, NR = d->nr;
    int64_t K = P->K, npad = round_up(P->N, NR);
    int64_t kc_max = K < KC_MAX ? K : KC_MAX;
    int64_t mc_max = round_up(M < MC_MAX ? M : MC_MAX, MR);
    size_t bytes = sizeof(float) * (size_t)(mc_max * kc_max + MR * NR) + 128;
    float *ws = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!ws) {
        kn_sgemm_ref(false, P->trans_b, M, N, K, alpha, A, lda, P->trans_b ? P->B + j0 * P->ldb : P->B + j0, P->ldb,
                     beta, C, ldc);
        return;
    }
    float *Ap = ws, *tile = Ap + round_up(mc_max * kc_max, 16);
    for (int64_t pc = 0; pc < K; pc += KC_MAX) {
        int64_t kc = K - pc < KC_MAX ? K - pc : KC_MAX;
        float bet = pc == 0 ? beta : 1.0f;
        const float *slice = P->data + pc * npad;
        for (int64_t ic = 0; ic < M; ic += MC_MAX) {
            int64_t mc = M - ic < MC_MAX ? M - ic : MC_MAX;
            pack_a(d, false, A, lda, ic, pc, mc, kc, MR, alpha, Ap);
            for (int64_t jr = 0; jr < N; jr += NR) {
                int nr = N - jr < NR ? (int)(N - jr) : NR;
                const float *bp = slice + (j0 + jr) / NR * NR * kc;
                for (int64_t ir = 0; ir < mc; ir += MR) {
                    int mr = mc - ir < MR ? (int)(mc - ir) : MR;
                    const float *ap = Ap + ir * kc;
                    float *c = C + (ic + ir) * ldc + jr;
                    if (mr == MR && nr == NR) {
                        d->micro(kc, ap, bp, c, ldc, bet);
                    } else {
                        d->micro(kc, ap, bp, tile, NR, 0.0f);
                        for (int r = 0; r < mr; r++)
                            for (int j = 0; j < nr; j++) {
                                float *q = c + r * ldc + j;
                                *q = bet == 0.0f ? tile[r * NR + j] : bet * *q + tile[r * NR + j];
                            }
                    }
                }
            }
        }
    }
    free(ws);
}

typedef struct gemm_job {
    const isa_desc *d;
    bool ta, tb;
    int64_t M, N, K;
    float alpha, beta;
    const float *A, *B;
    float *C;
    int64_t lda, ldb, ldc;
    int64_t tm, tn;     /* task grid */
    int64_t rows, cols; /* region size per task (the last ones are smaller) */
    bool skinny;
    const kn_sgemm_packed *packed; /* op(B) packed ahead (B, ldb and tb still describe it for the skinny path) */
} gemm_job;

static void gemm_task(void *ctx, int64_t begin, int64_t end) {
    const gemm_job *j = ctx;
    for (int64_t t = begin; t < end; t++) {
        int64_t i0 = (t / j->tn) * j->rows, j0 = (t % j->tn) * j->cols;
        if (i0 >= j->M || j0 >= j->N) continue;
        int64_t m = j->M - i0 < j->rows ? j->M - i0 : j->rows;
        int64_t n = j->N - j0 < j->cols ? j->N - j0 : j->cols;
        const float *a = j->ta ? j->A + i0 : j->A + i0 * j->lda;
        const float *b = j->tb ? j->B + j0 * j->ldb : j->B + j0;
        float *c = j->C + i0 * j->ldc + j0;
        if (j->skinny && j->packed && j->d->rows_packed)
            j->d->rows_packed(m, j0, n, j->K, KC_MAX, j->alpha, a, j->lda, j->packed->data,
                              KC_MAX * round_up(j->packed->N, j->d->nr), j->beta, c, j->ldc);
        else if (j->skinny)
            (j->tb ? j->d->rows_bt : j->d->rows)(m, n, j->K, j->alpha, a, j->lda, b, j->ldb, j->beta, c, j->ldc);
        else if (j->packed) sgemm_region_packed(j->d, m, n, j->alpha, a, j->lda, j->packed, j0, j->beta, c, j->ldc);
        else sgemm_region(j->d, j->ta, j->tb, m, n, j->K, j->alpha, a, j->lda, b, j->ldb, j->beta, c, j->ldc);
    }
}

static void sgemm_dispatch_packed(kn_threadpool *pool, int isa, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                                  float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                                  float *C, int64_t ldc, const kn_sgemm_packed *packed);

static void sgemm_dispatch(kn_threadpool *pool, int isa, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                           const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                           int64_t ldc) {
    sgemm_dispatch_packed(pool, isa, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL);
}

static void sgemm_dispatch_packed(kn_threadpool *pool, int isa, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                                  float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                                  float *C, int64_t ldc, const kn_sgemm_packed *packed) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    isa_desc d = get_isa(isa);
    gemm_job j = {&d, ta, tb, M, N, K, alpha, beta, A, B, C, lda, ldb, ldc, 1, 1, M, N, false, packed};
    j.skinny = (tb ? d.rows_bt : d.rows) && M <= 4 && !ta;
    int64_t T = pool ? kn_threadpool_size(pool) : 1;
    double flops = 2.0 * (double)M * (double)N * (double)K;
    /* Below ~1 MFLOP the fork/join costs more than it saves. */
    if (T > 1 && flops >= 1e6) {
        int64_t unit_n = j.skinny ? 64 : d.nr;
        if (j.skinny) {
            j.tm = 1;
            j.tn = T;
        } else {
            /* Pick the grid tm x tn = T whose padded per-task area is smallest; ties go to
             * splitting M, which keeps each task's packed B panels long. But every task packs
             * the B columns it covers itself, so when splitting M would leave thin strips
             * (<= 64 rows, as at batch 1) the repeated packing of B rivals the strips' compute:
             * there splitting N is preferred (measured: MiniLM-L6 batch 1 about 10% faster;
             * at batch 8 splitting N was slower, hence the threshold). */
            bool thin = !packed && (M + T - 1) / T <= 64 && N >= T * unit_n;
            double best = -1;
            for (int64_t tm = T; tm >= 1; tm--) {
                if (T % tm) continue;
                int64_t tn = T / tm;
                double area = (double)round_up((M + tm - 1) / tm, d.mr) * (double)round_up((N + tn - 1) / tn, unit_n);
                if (thin && tm > 1) area *= 1.5;
                if (best < 0 || area < best) {
                    best = area;
                    j.tm = tm;
                    j.tn = tn;
                }
            }
        }
        j.rows = round_up((M + j.tm - 1) / j.tm, j.skinny ? 1 : d.mr);
        j.cols = round_up((N + j.tn - 1) / j.tn, unit_n);
    }
    int64_t tasks = j.tm * j.tn;
    if (tasks == 1) gemm_task(&j, 0, 1);
    else kn_parallel_for(pool, tasks, 1, gemm_task, &j);
}

void kn_sgemm(kn_threadpool *pool, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    sgemm_dispatch(pool, KN_SGEMM_ISA_AUTO, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void kn_sgemm_isa(kn_threadpool *pool, int isa, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                  float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc) {
    sgemm_dispatch(pool, isa, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

bool kn_sgemm_pack_b(bool trans_b, int64_t K, int64_t N, const float *B, int64_t ldb, kn_sgemm_packed *out) {
    memset(out, 0, sizeof *out);
    isa_desc d = get_isa(KN_SGEMM_ISA_AUTO);
    int64_t npad = round_up(N, d.nr);
    size_t bytes = sizeof(float) * (size_t)(K * npad);
    out->data = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    if (!out->data) return false;
    out->isa = d.isa;
    out->trans_b = trans_b;
    out->K = K;
    out->N = N;
    out->B = B;
    out->ldb = ldb;
    out->bytes = bytes;
    /* slice-major: the KC-deep slice starting at row pc holds every NR-wide panel of it, so a
     * panel's place follows from (pc, column) alone, for any split of the columns among threads */
    for (int64_t pc = 0; pc < K; pc += KC_MAX) {
        int64_t kc = K - pc < KC_MAX ? K - pc : KC_MAX;
        pack_b(trans_b, B, ldb, pc, 0, kc, N, d.nr, out->data + pc * npad);
    }
    return true;
}

void kn_sgemm_packed_release(kn_sgemm_packed *p) {
    free(p->data);
    memset(p, 0, sizeof *p);
}

void kn_sgemm_packed_run(kn_threadpool *pool, int64_t M, float alpha, const float *A, int64_t lda,
                         const kn_sgemm_packed *B, float beta, float *C, int64_t ldc) {
    sgemm_dispatch_packed(pool, B->isa, false, B->trans_b, M, B->N, B->K, alpha, A, lda, B->B, B->ldb, beta, C, ldc, B);
}

typedef struct batch_job {
    bool ta, tb;
    int64_t M, N, K;
    float alpha, beta;
    const float *A, *B;
    float *C;
    int64_t lda, ldb, ldc, sa, sb, sc;
} batch_job;

static void batch_task(void *ctx, int64_t begin, int64_t end) {
    const batch_job *j = ctx;
    for (int64_t b = begin; b < end; b++)
        sgemm_dispatch(NULL, KN_SGEMM_ISA_AUTO, j->ta, j->tb, j->M, j->N, j->K, j->alpha, j->A + b * j->sa, j->lda,
                       j->B + b * j->sb, j->ldb, j->beta, j->C + b * j->sc, j->ldc);
}

void kn_sgemm_batched(kn_threadpool *pool, bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                      float alpha, const float *A, int64_t lda, int64_t stride_a, const float *B, int64_t ldb,
                      int64_t stride_b, float beta, float *C, int64_t ldc, int64_t stride_c) {
    if (batch <= 0) return;
    int64_t T = pool ? kn_threadpool_size(pool) : 1;
    double flops = 2.0 * (double)M * (double)N * (double)K;
    /* Many small products: one whole product per task. Few big ones: thread inside each. */
    if (batch == 1 || T <= 1 || (batch < 2 * T && flops >= 4e6)) {
        for (int64_t b = 0; b < batch; b++)
            kn_sgemm(pool, trans_a, trans_b, M, N, K, alpha, A + b * stride_a, lda, B + b * stride_b, ldb, beta,
                     C + b * stride_c, ldc);
        return;
    }
    batch_job j = {trans_a, trans_b, M, N, K, alpha, beta, A, B, C, lda, ldb, ldc, stride_a, stride_b, stride_c};
    kn_parallel_for(pool, batch, 1, batch_task, &j);
}

void kn_dgemm_plain(int64_t M, int64_t N, int64_t K, const double *A, const double *B, double *C) {
    for (int64_t i = 0; i < M; i++) {
        double *c = C + i * N;
        for (int64_t j = 0; j < N; j++) c[j] = 0.0;
        for (int64_t k = 0; k < K; k++) {
            double a = A[i * K + k];
            const double *b = B + k * N;
            for (int64_t j = 0; j < N; j++) c[j] += a * b[j];
        }
    }
}

void kn_igemm_plain(int64_t M, int64_t N, int64_t K, const int64_t *A, const int64_t *B, int64_t *C) {
    /* Unsigned arithmetic: integer MatMul wraps on overflow like the reference, without UB. */
    for (int64_t i = 0; i < M; i++) {
        uint64_t *c = (uint64_t *)(C + i * N);
        for (int64_t j = 0; j < N; j++) c[j] = 0;
        for (int64_t k = 0; k < K; k++) {
            uint64_t a = (uint64_t)A[i * K + k];
            const int64_t *b = B + k * N;
            for (int64_t j = 0; j < N; j++) c[j] += a * (uint64_t)b[j];
        }
    }
}

void kn_igemm_pack_b16(int64_t K, int64_t N, const int16_t *B, int16_t *Bp) {
    for (int64_t k = 0; k < K + (K & 1); k++)
        for (int64_t j = 0; j < N; j++) Bp[(k / 2) * 2 * N + 2 * j + (k & 1)] = k < K ? B[k * N + j] : 0;
}

bool kn_igemm_s16(int64_t M, int64_t N, int64_t K, const int16_t *A, int64_t lda, const int16_t *Bp, int32_t *C,
                  int64_t ldc) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2")) return false;
    kn_igemm_s16_avx2(M, N, K, A, lda, Bp, C, ldc);
    return true;
}

/* ---------------------------------------------------------------- packed A (constant weights) */

bool kn_sgemm_pack_a(int64_t M, int64_t K, const float *A, int64_t lda, kn_sgemm_packed_a *out) {
    memset(out, 0, sizeof *out);
    isa_desc d = get_isa(KN_SGEMM_ISA_AUTO);
    int64_t mpad = round_up(M, d.mr);
    size_t bytes = sizeof(float) * (size_t)(K * mpad);
    out->data = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    if (!out->data) return false;
    out->isa = d.isa;
    out->M = M;
    out->K = K;
    out->A = A;
    out->lda = lda;
    out->bytes = bytes;
    /* slice-major as kn_sgemm_pack_b: the panel of rows [ir, ir + MR) in the slice starting at
     * depth pc lies at pc * mpad + ir * kc, for any split of the rows among threads */
    for (int64_t pc = 0; pc < K; pc += KC_MAX) {
        int64_t kc = K - pc < KC_MAX ? K - pc : KC_MAX;
        pack_a(&d, false, A, lda, 0, pc, M, kc, d.mr, 1.0f, out->data + pc * mpad);
    }
    return true;
}

void kn_sgemm_packed_a_release(kn_sgemm_packed_a *p) {
    free(p->data);
    memset(p, 0, sizeof *p);
}

/* Floats of one task's B panels and edge tile for a region of up to N columns. */
static int64_t pa_task_floats(const isa_desc *d, int64_t K, int64_t N) {
    int64_t kc_max = K < KC_MAX ? K : KC_MAX, nc_max = round_up(N < NC_MAX ? N : NC_MAX, d->nr);
    return round_up(nc_max * kc_max, 16) + d->mr * d->nr + 16;
}

/* The columns of B and C of a packed-A product: ncol per image, images bstride / cstride apart
 * (one image: the whole matrix), so that small images share panels. */
typedef struct pa_cols {
    const float *B;
    float *C;
    int64_t ldb, ldc, ncol, bstride, cstride;
} pa_cols;

/* pack_b of virtual columns [jc, jc + nc): a panel within one image is copied as pack_b does, one
 * across two images column by column. */
static void pack_b_cols(const pa_cols *x, int64_t pc, int64_t jc, int64_t kc, int64_t nc, int nr_full, float *dst) {
    for (int64_t jr = 0; jr < nc; jr += nr_full, dst += nr_full * kc) {
        int nr = nc - jr < nr_full ? (int)(nc - jr) : nr_full;
        int64_t v0 = jc + jr, img = v0 / x->ncol;
        if ((v0 + nr - 1) / x->ncol == img) {
            pack_b(false, x->B + img * x->bstride, x->ldb, pc, v0 % x->ncol, kc, nr, nr_full, dst);
            continue;
        }
        for (int j = 0; j < nr_full; j++) {
            int64_t v = v0 + j;
            const float *src = j < nr ? x->B + (v / x->ncol) * x->bstride + pc * x->ldb + v % x->ncol : NULL;
            for (int64_t k = 0; k < kc; k++) dst[k * nr_full + j] = src ? src[k * x->ldb] : 0.0f;
        }
    }
}

/* Rows [i0, i0 + M) (i0 a multiple of MR) by virtual columns [j0, j0 + N): only B is packed, into
 * ws (64-byte aligned, pa_task_floats) or, when NULL, a buffer of its own. */
static void sgemm_region_pa(const isa_desc *d, const kn_sgemm_packed_a *P, int64_t i0, int64_t M, int64_t j0, int64_t N,
                            const pa_cols *x, float beta, float *given) {
    const int MR = d->mr, NR = d->nr;
    int64_t K = P->K, mpad = round_up(P->M, MR), ldc = x->ldc;
    size_t bytes = sizeof(float) * (size_t)pa_task_floats(d, K, N);
    float *ws = given ? given : aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!ws) {
        for (int64_t v = j0; v < j0 + N; v++) { /* one column at a time: any image layout */
            int64_t img = v / x->ncol, p = v % x->ncol;
            kn_sgemm_ref(false, false, M, 1, K, 1.0f, P->A + i0 * P->lda, P->lda, x->B + img * x->bstride + p, x->ldb,
                         beta, x->C + img * x->cstride + i0 * ldc + p, ldc);
        }
        return;
    }
    int64_t kc_max = K < KC_MAX ? K : KC_MAX;
    float *Bp = ws, *tile = Bp + round_up(round_up(N < NC_MAX ? N : NC_MAX, NR) * kc_max, 16);
    /* Few rows (<= 64): whole B panels are read in place by the AVX-512 kernel, since packing
     * them would cost about as much as using them; only edge panels are packed, one at a time. */
    bool in_place = d->isa == KN_SGEMM_ISA_AVX512 && P->M <= 64;
    for (int64_t jc = 0; jc < N; jc += NC_MAX) {
        int64_t nc = N - jc < NC_MAX ? N - jc : NC_MAX;
        for (int64_t pc = 0; pc < K; pc += KC_MAX) {
            int64_t kc = K - pc < KC_MAX ? K - pc : KC_MAX;
            float bet = pc == 0 ? beta : 1.0f;
            if (in_place) {
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    int nr = nc - jr < NR ? (int)(nc - jr) : NR;
                    int64_t v0 = j0 + jc + jr, img = v0 / x->ncol;
                    bool whole = nr == NR && (v0 + nr - 1) / x->ncol == img;
                    const float *bsrc = x->B + img * x->bstride + pc * x->ldb + v0 % x->ncol;
                    float *cb = x->C + img * x->cstride + i0 * ldc + v0 % x->ncol;
                    if (!whole) pack_b_cols(x, pc, v0, kc, nr, NR, Bp);
                    for (int64_t ir = 0; ir < M; ir += MR) {
                        int mr = M - ir < MR ? (int)(M - ir) : MR;
                        const float *ap = P->data + pc * mpad + (i0 + ir) * kc;
                        if (whole && mr == MR) {
                            kn_sgemm_micro_ldb_avx512(kc, ap, bsrc, x->ldb, cb + ir * ldc, ldc, bet);
                            continue;
                        }
                        if (whole) kn_sgemm_micro_ldb_avx512(kc, ap, bsrc, x->ldb, tile, NR, 0.0f);
                        else d->micro(kc, ap, Bp, tile, NR, 0.0f);
                        for (int j = 0; j < nr; j++) {
                            int64_t v = v0 + j;
                            float *q = x->C + (v / x->ncol) * x->cstride + (i0 + ir) * ldc + v % x->ncol;
                            for (int r = 0; r < mr; r++, q += ldc)
                                *q = bet == 0.0f ? tile[r * NR + j] : bet * *q + tile[r * NR + j];
                        }
                    }
                }
                continue;
            }
            pack_b_cols(x, pc, j0 + jc, kc, nc, NR, Bp);
            const float *slice = P->data + pc * mpad + i0 * kc;
            for (int64_t ic = 0; ic < M; ic += MC_MAX) {
                int64_t mc = M - ic < MC_MAX ? M - ic : MC_MAX;
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    int nr = nc - jr < NR ? (int)(nc - jr) : NR;
                    const float *bp = Bp + jr * kc;
                    int64_t v0 = j0 + jc + jr, img = v0 / x->ncol;
                    bool one_img = (v0 + nr - 1) / x->ncol == img;
                    float *cb = x->C + img * x->cstride + (i0 + ic) * ldc + v0 % x->ncol;
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        int mr = mc - ir < MR ? (int)(mc - ir) : MR;
                        const float *ap = slice + (ic + ir) * kc;
                        if (mr == MR && nr == NR && one_img) {
                            d->micro(kc, ap, bp, cb + ir * ldc, ldc, bet);
                            continue;
                        }
                        d->micro(kc, ap, bp, tile, NR, 0.0f);
                        for (int j = 0; j < nr; j++) {
                            int64_t v = v0 + j;
                            float *q = x->C + (v / x->ncol) * x->cstride + (i0 + ic + ir) * ldc + v % x->ncol;
                            for (int r = 0; r < mr; r++, q += ldc)
                                *q = bet == 0.0f ? tile[r * NR + j] : bet * *q + tile[r * NR + j];
                        }
                    }
                }
            }
        }
    }
    if (!given) free(ws);
}

typedef struct pa_job {
    const isa_desc *d;
    const kn_sgemm_packed_a *P;
    const pa_cols *x;
    int64_t N, tn, rows, cols;
    float beta;
    float *ws; /* NULL or one pa_task_floats(K, cols) block per task */
} pa_job;

static void pa_task(void *ctx, int64_t begin, int64_t end) {
    const pa_job *j = ctx;
    for (int64_t t = begin; t < end; t++) {
        int64_t i0 = (t / j->tn) * j->rows, j0 = (t % j->tn) * j->cols;
        if (i0 >= j->P->M || j0 >= j->N) continue;
        int64_t m = j->P->M - i0 < j->rows ? j->P->M - i0 : j->rows;
        int64_t n = j->N - j0 < j->cols ? j->N - j0 : j->cols;
        sgemm_region_pa(j->d, j->P, i0, m, j0, n, j->x, j->beta,
                        j->ws ? j->ws + t * pa_task_floats(j->d, j->P->K, j->cols) : NULL);
    }
}

int64_t kn_sgemm_packed_a_ws(const kn_sgemm_packed_a *A, int64_t N, kn_threadpool *pool) {
    isa_desc d = get_isa(A->isa);
    int64_t T = pool ? kn_threadpool_size(pool) : 1;
    return T * pa_task_floats(&d, A->K, N);
}

void kn_sgemm_packed_a_run_images(kn_threadpool *pool, const kn_sgemm_packed_a *A, int64_t images, int64_t ncol,
                                  const float *B, int64_t ldb, int64_t bstride, float beta, float *C, int64_t ldc,
                                  int64_t cstride, float *ws) {
    int64_t M = A->M, N = images * ncol;
    if (M <= 0 || N <= 0) return;
    if (A->K <= 0) {
        for (int64_t i = 0; i < images; i++) scale_c(M, ncol, beta, C + i * cstride, ldc);
        return;
    }
    isa_desc d = get_isa(A->isa);
    pa_cols x = {B, C, ldb, ldc, ncol, bstride, cstride};
    pa_job j = {&d, A, &x, N, 1, M, N, beta, ws};
    int64_t T = pool ? kn_threadpool_size(pool) : 1, tm = 1;
    if (T > 1 && 2.0 * (double)M * (double)N * (double)A->K >= 1e6) {
        /* the split whose largest task, in padded tiles, is smallest; splitting the rows makes
         * every thread pack all of B, hence its small handicap */
        double by_rows = (double)round_up((M + T - 1) / T, d.mr) * (double)round_up(N, d.nr) * 1.1;
        double by_cols = (double)round_up(M, d.mr) * (double)round_up((N + T - 1) / T, d.nr);
        if (by_cols <= by_rows) j.tn = T;
        else tm = T;
        j.rows = round_up((M + tm - 1) / tm, d.mr);
        j.cols = round_up((N + j.tn - 1) / j.tn, d.nr);
    }
    if (tm * j.tn == 1) pa_task(&j, 0, 1);
    else kn_parallel_for(pool, tm * j.tn, 1, pa_task, &j);
}

void kn_sgemm_packed_a_run(kn_threadpool *pool, const kn_sgemm_packed_a *A, int64_t N, const float *B, int64_t ldb,
                           float beta, float *C, int64_t ldc, float *ws) {
    kn_sgemm_packed_a_run_images(pool, A, 1, N, B, ldb, 0, beta, C, ldc, 0, ws);
}
