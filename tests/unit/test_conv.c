/* Unit tests for the convolution and pooling kernels against naive double-precision references
 * written straight from the ONNX definitions: Conv in 1-D/2-D/3-D with pads, strides, dilations,
 * groups (depthwise included, which takes the per-item threaded path), 1x1 direct, auto_pad
 * modes, a column matrix big enough to be unfolded in chunks, an empty batch and float16;
 * ConvInteger with zero points (per-channel for W); ConvTranspose with groups, strides and
 * output_padding; MaxPool (values and Indices, ceil_mode, dilations), AveragePool
 * (count_include_pad), the 2-D float32 pool fast path against the generic walk, and the error
 * paths (mismatched channels, out-of-range MaxUnpool indices); Conv and FusedConv with the
 * weights packed once ahead (kn_conv_prepare_weights) over batches, groups, strides, pads,
 * dilations, odd sizes and K slices, and a run on other weights than those packed. */
#include "tests/unit/harness.h"
#include "runtime/core/dtype.h"
#include "kernels/cpu/conv_dw.h"
#include "kernels/cpu/conv_prep.h"
#include <sys/mman.h>
#include <unistd.h>

static uint32_t rng_state = 88172645u;
static float frand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xFFFF) / 65536.0f * 2.0f - 1.0f;
}

static kn_threadpool *pool;
static void pool_setup(void) { pool = kn_threadpool_create(2); }
static void pool_teardown(void) {
    kn_threadpool_free(pool);
    pool = NULL;
}

/* A tensor of uniform values in [-1, 1). */
static kn_tensor *mk_rand(kn_dtype t, int nd, const int64_t *dims) {
    kn_tensor *x = mk(t, nd, dims, NULL);
    for (int64_t i = 0; i < kn_numel(x); i++) kn_set_f64(x, i, frand());
    return x;
}

/* ---- naive references ---- */
typedef struct cparams {
    int nsp;
    int64_t N, C, M, G;
    int64_t in[3], k[3], s[3], d[3], pb[3], pe[3];
} cparams;

static int64_t prod(const int64_t *v, int n) {
    int64_t p = 1;
    for (int i = 0; i < n; i++) p *= v[i];
    return p;
}

static void conv_out_dims(const cparams *p, int64_t *out) {
    for (int i = 0; i < p->nsp; i++)
        out[i] = (p->in[i] + p->pb[i] + p->pe[i] - (p->k[i] - 1) * p->d[i] - 1) / p->s[i] + 1;
}

/* y[n][m][o...] = b[m] + sum_{c,q} x[n][g*Cg+c][o*s - pb + q*d] w[m][c][q] */
static void conv_naive(const cparams *p, const kn_tensor *x, const kn_tensor *w, const kn_tensor *b, double *y) {
    int64_t od[3], Cg = p->C / p->G, Mg = p->M / p->G;
    conv_out_dims(p, od);
    int64_t on = prod(od, p->nsp), kn = prod(p->k, p->nsp), inn = prod(p->in, p->nsp);
    for (int64_t n = 0; n < p->N; n++)
        for (int64_t m = 0; m < p->M; m++)
            for (int64_t o = 0; o < on; o++) {
                double s = b ? kn_get_f64(b, m) : 0;
                for (int64_t c = 0; c < Cg; c++)
                    for (int64_t q = 0; q < kn; q++) {
                        int64_t oi[3], qi[3], r = o, rq = q, off = 0;
                        bool ok = true;
                        for (int dd = p->nsp - 1; dd >= 0; dd--) {
                            oi[dd] = r % od[dd];
                            r /= od[dd];
                            qi[dd] = rq % p->k[dd];
                            rq /= p->k[dd];
                        }
                        for (int dd = 0; dd < p->nsp; dd++) {
                            int64_t ip = oi[dd] * p->s[dd] - p->pb[dd] + qi[dd] * p->d[dd];
                            if (ip < 0 || ip >= p->in[dd]) ok = false;
                            off = off * p->in[dd] + ip;
                        }
                        if (!ok) continue;
                        s += kn_get_f64(x, (n * p->C + (m / Mg) * Cg + c) * inn + off) *
                            kn_get_f64(w, (m * Cg + c) * kn + q);
                    }
                y[(n * p->M + m) * on + o] = s;
            }
}

static void expect_conv(const cparams *p, kn_dtype dt, bool bias, kn_attr *extra, int n_extra, double tol) {
    int64_t xd[5] = {p->N, p->C}, wd[5] = {p->M, p->C / p->G}, bd[1] = {p->M};
    for (int i = 0; i < p->nsp; i++) {
        xd[2 + i] = p->in[i];
        wd[2 + i] = p->k[i];
    }
    kn_tensor *in[3] = {mk_rand(dt, p->nsp + 2, xd), mk_rand(dt, p->nsp + 2, wd), bias ? mk_rand(dt, 1, bd) : NULL},
              *out[1];
    int64_t pads[6];
    for (int i = 0; i < p->nsp; i++) {
        pads[i] = p->pb[i];
        pads[p->nsp + i] = p->pe[i];
    }
    kn_attr at[8] = {attr_ints("strides", p->s, p->nsp), attr_ints("dilations", p->d, p->nsp), attr_i("group", p->G)};
    int na = 3;
    if (n_extra)
        for (int i = 0; i < n_extra; i++) at[na++] = extra[i];
    else at[na++] = attr_ints("pads", pads, 2 * p->nsp);
    kn_status *st = kn_test_run_op(KN_OP_Conv, 21, at, na, in, bias ? 3 : 2, out, NULL, 1, pool);
    ck_assert_msg(!st, "Conv: %s", st ? kn_status_message(st) : "");
    int64_t od[3];
    conv_out_dims(p, od);
    ck_assert_int_eq(out[0]->ndim, p->nsp + 2);
    for (int i = 0; i < p->nsp; i++) ck_assert_int_eq(out[0]->dims[2 + i], od[i]);
    int64_t n = kn_numel(out[0]);
    double *ref = malloc(sizeof(double) * (size_t)(n + 1));
    conv_naive(p, in[0], in[1], in[2], ref);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs(kn_get_f64(out[0], i) - ref[i]) <= tol * (1 + fabs(ref[i])),
                      "Conv nsp=%d G=%lld [%lld]: %g vs %g", p->nsp, (long long)p->G, (long long)i,
                      kn_get_f64(out[0], i), ref[i]);
    free(ref);
    for (int i = 0; i < 3; i++)
        if (in[i]) kn_tensor_free(in[i]);
    kn_tensor_free(out[0]);
}

START_TEST(test_conv_shapes) {
    cparams p2 = {2, 2, 4, 6, 2, {7, 9}, {3, 2}, {2, 1}, {1, 2}, {1, 0}, {2, 1}};
    expect_conv(&p2, KN_F32, true, NULL, 0, 1e-5);
    expect_conv(&p2, KN_F64, true, NULL, 0, 1e-12);
    expect_conv(&p2, KN_F16, false, NULL, 0, 2e-2);
    cparams dw = {2, 5, 8, 8, 8, {6, 6}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}};
    expect_conv(&dw, KN_F32, true, NULL, 0, 1e-5);
    cparams one = {2, 3, 16, 8, 1, {5, 5}, {1, 1}, {1, 1}, {1, 1}, {0, 0}, {0, 0}};
    expect_conv(&one, KN_F32, true, NULL, 0, 1e-5);
    cparams one_s = {2, 1, 4, 4, 1, {5, 6}, {1, 1}, {2, 2}, {1, 1}, {0, 0}, {0, 0}};
    expect_conv(&one_s, KN_F32, false, NULL, 0, 1e-5);
    cparams c1 = {1, 2, 3, 2, 1, {10}, {3}, {2}, {1}, {1}, {1}};
    expect_conv(&c1, KN_F32, true, NULL, 0, 1e-5);
    cparams c3 = {3, 1, 2, 3, 1, {4, 5, 6}, {2, 3, 2}, {1, 2, 1}, {1, 1, 2}, {1, 1, 1}, {1, 0, 1}};
    expect_conv(&c3, KN_F32, true, NULL, 0, 1e-5);
    cparams big = {2, 1, 32, 48, 1, {20, 20}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}};
    expect_conv(&big, KN_F32, true, NULL, 0, 1e-4);
    /* 64*25 column rows x 76*76 positions = 37 MB of columns: unfolded in chunks */
    cparams chunked = {2, 1, 64, 4, 1, {80, 80}, {5, 5}, {1, 1}, {1, 1}, {0, 0}, {0, 0}};
    expect_conv(&chunked, KN_F32, true, NULL, 0, 1e-4);
    cparams empty = {2, 0, 3, 4, 1, {5, 5}, {3, 3}, {1, 1}, {1, 1}, {0, 0}, {0, 0}};
    expect_conv(&empty, KN_F32, true, NULL, 0, 1e-5);
}
END_TEST

START_TEST(test_conv_auto_pad) {
    static const char *modes[] = {"SAME_UPPER", "SAME_LOWER", "VALID"};
    for (int m = 0; m < 3; m++) {
        cparams p = {2, 1, 2, 3, 1, {7, 8}, {3, 4}, {2, 2}, {1, 1}, {0, 0}, {0, 0}};
        for (int i = 0; i < 2 && m < 2; i++) {
            int64_t o = (p.in[i] + p.s[i] - 1) / p.s[i];
            int64_t total = (o - 1) * p.s[i] + p.k[i] - p.in[i];
            if (total < 0) total = 0;
            p.pb[i] = m == 0 ? total / 2 : total - total / 2;
            p.pe[i] = total - p.pb[i];
        }
        kn_attr ap = attr_s("auto_pad", modes[m]);
        expect_conv(&p, KN_F32, true, &ap, 1, 1e-5);
    }
}
END_TEST

START_TEST(test_conv_errors) {
    int64_t xd[4] = {1, 3, 5, 5}, wd[4] = {4, 2, 3, 3};
    kn_tensor *in[2] = {mk_rand(KN_F32, 4, xd), mk_rand(KN_F32, 4, wd)}, *out[1];
    kn_status *st = kn_test_run_op(KN_OP_Conv, 21, NULL, 0, in, 2, out, NULL, 1, pool);
    ck_assert_ptr_nonnull(st); /* 3 channels vs W wanting 2 */
    kn_status_free(st);
    kn_tensor_free(out[0]);
    kn_attr g = attr_i("group", 0);
    st = kn_test_run_op(KN_OP_Conv, 21, &g, 1, in, 2, out, NULL, 1, pool);
    ck_assert_ptr_nonnull(st);
    kn_status_free(st);
    kn_tensor_free(out[0]);
    kn_tensor_free(in[0]);
    kn_tensor_free(in[1]);
    /* window larger than the input */
    int64_t xs[4] = {1, 2, 2, 2}, ws[4] = {1, 2, 3, 3};
    kn_tensor *in2[2] = {mk_rand(KN_F32, 4, xs), mk_rand(KN_F32, 4, ws)};
    st = kn_test_run_op(KN_OP_Conv, 21, NULL, 0, in2, 2, out, NULL, 1, pool);
    ck_assert_ptr_nonnull(st);
    kn_status_free(st);
    kn_tensor_free(out[0]);
    kn_tensor_free(in2[0]);
    kn_tensor_free(in2[1]);
}
END_TEST

START_TEST(test_conv_transpose) {
    /* X [2,4,4,5], W [4,3,3,3], group 2 -> 6 output channels, stride 2, pads 1, output_padding 1 */
    const int64_t N = 2, C = 4, Mg = 3, G = 2, H = 4, W = 5, k = 3, s = 2, pad = 1, op = 1, dil = 1;
    int64_t xd[4] = {N, C, H, W}, wd[4] = {C, Mg, k, k}, bd[1] = {Mg * G};
    kn_tensor *in[3] = {mk_rand(KN_F32, 4, xd), mk_rand(KN_F32, 4, wd), mk_rand(KN_F32, 1, bd)}, *out[1];
    int64_t st2[2] = {s, s}, pads[4] = {pad, pad, pad, pad}, opad[2] = {op, op};
    kn_attr at[4] = {attr_ints("strides", st2, 2), attr_ints("pads", pads, 4), attr_ints("output_padding", opad, 2),
                     attr_i("group", G)};
    kn_status *st = kn_test_run_op(KN_OP_ConvTranspose, 21, at, 4, in, 3, out, NULL, 1, pool);
    ck_assert_msg(!st, "ConvTranspose: %s", st ? kn_status_message(st) : "");
    int64_t OH = s * (H - 1) + op + (k - 1) * dil + 1 - 2 * pad, OW = s * (W - 1) + op + (k - 1) * dil + 1 - 2 * pad;
    ck_assert_int_eq(out[0]->dims[1], Mg * G);
    ck_assert_int_eq(out[0]->dims[2], OH);
    ck_assert_int_eq(out[0]->dims[3], OW);
    double *ref = calloc((size_t)(N * Mg * G * OH * OW), sizeof(double));
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < Mg * G; m++)
            for (int64_t i = 0; i < OH * OW; i++) ref[(n * Mg * G + m) * OH * OW + i] = kn_get_f64(in[2], m);
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++)
                    for (int64_t m = 0; m < Mg; m++)
                        for (int64_t a = 0; a < k; a++)
                            for (int64_t b = 0; b < k; b++) {
                                int64_t oh = h * s - pad + a * dil, ow = w * s - pad + b * dil;
                                if (oh < 0 || oh >= OH || ow < 0 || ow >= OW) continue;
                                int64_t mo = (c / (C / G)) * Mg + m;
                                ref[((n * Mg * G + mo) * OH + oh) * OW + ow] +=
                                    kn_get_f64(in[0], ((n * C + c) * H + h) * W + w) *
                                    kn_get_f64(in[1], ((c * Mg + m) * k + a) * k + b);
                            }
    for (int64_t i = 0; i < kn_numel(out[0]); i++)
        ck_assert_msg(fabs(kn_get_f64(out[0], i) - ref[i]) < 1e-5, "ConvTranspose [%lld]: %g vs %g", (long long)i,
                      kn_get_f64(out[0], i), ref[i]);
    free(ref);
    for (int i = 0; i < 3; i++) kn_tensor_free(in[i]);
    kn_tensor_free(out[0]);
}
END_TEST

START_TEST(test_pools) {
    /* MaxPool 2-D: kernel 3x2, stride 2, dilation (1,2), pads (1,1,1,0), ceil_mode */
    const int64_t N = 2, C = 3, H = 7, W = 8;
    int64_t xd[4] = {N, C, H, W}, ks[2] = {3, 2}, st2[2] = {2, 2}, dl[2] = {1, 2}, pads[4] = {1, 1, 1, 0};
    for (int ceil_mode = 0; ceil_mode < 2; ceil_mode++) {
        kn_tensor *x = mk_rand(KN_F32, 4, xd), *out[2];
        kn_attr at[5] = {attr_ints("kernel_shape", ks, 2), attr_ints("strides", st2, 2), attr_ints("dilations", dl, 2),
                         attr_ints("pads", pads, 4), attr_i("ceil_mode", ceil_mode)};
        kn_status *st = kn_test_run_op(KN_OP_MaxPool, 21, at, 5, &x, 1, out, NULL, 2, pool);
        ck_assert_msg(!st, "MaxPool: %s", st ? kn_status_message(st) : "");
        int64_t OH = out[0]->dims[2], OW = out[0]->dims[3];
        for (int d = 0; d < 2; d++) {
            int64_t in = xd[2 + d], ek = (ks[d] - 1) * dl[d] + 1, span = in + pads[d] + pads[2 + d] - ek;
            int64_t o = ceil_mode ? (span + st2[d] - 1) / st2[d] + 1 : span / st2[d] + 1;
            if (ceil_mode && (o - 1) * st2[d] >= in + pads[d]) o--;
            ck_assert_int_eq(out[0]->dims[2 + d], o);
        }
        for (int64_t p = 0; p < N * C; p++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    double best = -INFINITY;
                    int64_t bi = -1;
                    for (int64_t a = 0; a < ks[0]; a++)
                        for (int64_t b = 0; b < ks[1]; b++) {
                            int64_t h = oh * 2 - 1 + a, w = ow * 2 - 1 + b * 2;
                            if (h < 0 || h >= H || w < 0 || w >= W) continue;
                            double v = kn_get_f64(x, (p * H + h) * W + w);
                            if (v > best) {
                                best = v;
                                bi = (p * H + h) * W + w;
                            }
                        }
                    int64_t o = (p * OH + oh) * OW + ow;
                    ck_assert(kn_get_f64(out[0], o) == best);
                    ck_assert_int_eq(((int64_t *)out[1]->data)[o], bi);
                }
        kn_tensor_free(x);
        kn_tensor_free(out[0]);
        kn_tensor_free(out[1]);
    }
    /* AveragePool 1-D with and without the pads in the divisor */
    int64_t xd1[3] = {1, 2, 6}, k1[1] = {3}, p1[2] = {2, 1};
    for (int inc = 0; inc < 2; inc++) {
        kn_tensor *x = mk_rand(KN_F32, 3, xd1), *out[1];
        kn_attr at[3] = {attr_ints("kernel_shape", k1, 1), attr_ints("pads", p1, 2), attr_i("count_include_pad", inc)};
        ck_assert_ptr_null(kn_test_run_op(KN_OP_AveragePool, 21, at, 3, &x, 1, out, NULL, 1, pool));
        ck_assert_int_eq(out[0]->dims[2], 6 + 3 - 3 + 1);
        for (int64_t c = 0; c < 2; c++)
            for (int64_t o = 0; o < 7; o++) {
                double s = 0;
                int cnt = 0;
                for (int64_t q = 0; q < 3; q++) {
                    int64_t i = o - 2 + q;
                    if (i >= 0 && i < 6) {
                        s += kn_get_f64(x, c * 6 + i);
                        cnt++;
                    }
                }
                double want = s / (inc ? 3 : cnt);
                ck_assert_msg(fabs(kn_get_f64(out[0], c * 7 + o) - want) < 1e-6, "AveragePool inc=%d [%lld,%lld]", inc,
                              (long long)c, (long long)o);
            }
        kn_tensor_free(x);
        kn_tensor_free(out[0]);
    }
    /* The 2-D float32 fast path (no Indices) against the generic walk (float64 input) */
    static const char *ops2[] = {"MaxPool", "AveragePool", "LpPool"};
    const int kinds[] = {KN_OP_MaxPool, KN_OP_AveragePool, KN_OP_LpPool};
    for (int k = 0; k < 3; k++)
        for (int inc = 0; inc < 2; inc++) {
            kn_tensor *x32 = mk_rand(KN_F32, 4, xd), *x64, *o32[1], *o64[1];
            ck_assert_ptr_null(kn_tensor_new(KN_F64, 4, xd, &x64));
            for (int64_t i = 0; i < kn_numel(x32); i++) kn_set_f64(x64, i, kn_get_f64(x32, i));
            kn_attr at[5] = {attr_ints("kernel_shape", ks, 2), attr_ints("strides", st2, 2),
                             attr_ints("dilations", dl, 2), attr_ints("pads", pads, 4),
                             attr_i("count_include_pad", inc)};
            ck_assert_ptr_null(kn_test_run_op(kinds[k], 21, at, 5, &x32, 1, o32, NULL, 1, pool));
            ck_assert_ptr_null(kn_test_run_op(kinds[k], 21, at, 5, &x64, 1, o64, NULL, 1, pool));
            ck_assert_int_eq(kn_numel(o32[0]), kn_numel(o64[0]));
            for (int64_t i = 0; i < kn_numel(o32[0]); i++)
                ck_assert_msg(fabs(kn_get_f64(o32[0], i) - kn_get_f64(o64[0], i)) < 1e-5, "%s inc=%d [%lld]: %g vs %g",
                              ops2[k], inc, (long long)i, kn_get_f64(o32[0], i), kn_get_f64(o64[0], i));
            kn_tensor_free(x32);
            kn_tensor_free(x64);
            kn_tensor_free(o32[0]);
            kn_tensor_free(o64[0]);
        }
    /* 2-D float32 MaxPool (two 1-D passes) against the generic walk over more windows: YOLO's
     * SPPF (5x5, stride 1, pad 2), ResNet's stem (3x3, stride 2, pad 1), ceil_mode, dilations,
     * asymmetric pads and a window wider than the row */
    static const int64_t mp[][11] = {
        /* H, W, kh, kw, sh, sw, dh, dw, pb_h, pb_w, ceil (pads end = begin) */
        {20, 20, 5, 5, 1, 1, 1, 1, 2, 2, 0}, {17, 23, 3, 3, 2, 2, 1, 1, 1, 1, 0}, {9, 14, 3, 3, 2, 2, 1, 1, 1, 1, 1},
        {11, 7, 2, 3, 1, 2, 2, 1, 0, 1, 0},  {6, 5, 3, 7, 2, 1, 1, 1, 1, 3, 1},   {1, 33, 1, 4, 1, 3, 1, 2, 0, 2, 0},
    };
    for (int c = 0; c < 6; c++) {
        const int64_t *q = mp[c];
        int64_t d4[4] = {2, 3, q[0], q[1]}, kk[2] = {q[2], q[3]}, ss[2] = {q[4], q[5]}, dd[2] = {q[6], q[7]},
                pp[4] = {q[8], q[9], q[8], q[9] > 0 ? q[9] - 1 : 0};
        kn_tensor *x32 = mk_rand(KN_F32, 4, d4), *x64, *o32[1], *o64[1];
        ck_assert_ptr_null(kn_tensor_new(KN_F64, 4, d4, &x64));
        for (int64_t i = 0; i < kn_numel(x32); i++) kn_set_f64(x64, i, kn_get_f64(x32, i));
        kn_attr at[5] = {attr_ints("kernel_shape", kk, 2), attr_ints("strides", ss, 2), attr_ints("dilations", dd, 2),
                         attr_ints("pads", pp, 4), attr_i("ceil_mode", q[10])};
        ck_assert_ptr_null(kn_test_run_op(KN_OP_MaxPool, 21, at, 5, &x32, 1, o32, NULL, 1, pool));
        ck_assert_ptr_null(kn_test_run_op(KN_OP_MaxPool, 21, at, 5, &x64, 1, o64, NULL, 1, pool));
        ck_assert_int_eq(kn_numel(o32[0]), kn_numel(o64[0]));
        for (int64_t i = 0; i < kn_numel(o32[0]); i++) {
            double a = kn_get_f64(o32[0], i), b = kn_get_f64(o64[0], i);
            ck_assert_msg(a == b, "MaxPool case %d [%lld]: %g vs %g", c, (long long)i, a, b);
        }
        kn_tensor_free(x32);
        kn_tensor_free(x64);
        kn_tensor_free(o32[0]);
        kn_tensor_free(o64[0]);
    }
    /* GlobalAveragePool on an empty batch: no work, right shape */
    int64_t xe[4] = {0, 3, 4, 4};
    kn_tensor *x = mk_rand(KN_F32, 4, xe), *out[1];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_GlobalAveragePool, 21, NULL, 0, &x, 1, out, NULL, 1, pool));
    ck_assert_int_eq(out[0]->dims[0], 0);
    ck_assert_int_eq(out[0]->dims[2], 1);
    kn_tensor_free(x);
    kn_tensor_free(out[0]);
}
END_TEST

START_TEST(test_maxunpool_bad_index) {
    int64_t xd[4] = {1, 1, 2, 2}, ks[2] = {2, 2};
    kn_tensor *in[2] = {mk_rand(KN_F32, 4, xd), NULL}, *out[1];
    ck_assert_ptr_null(kn_tensor_new(KN_I64, 4, xd, &in[1]));
    int64_t *iv = in[1]->data;
    iv[0] = 0;
    iv[1] = 3;
    iv[2] = 9;
    iv[3] = 16; /* 16 is past the 4x4 output */
    kn_attr at[2] = {attr_ints("kernel_shape", ks, 2), attr_ints("strides", ks, 2)};
    kn_status *st = kn_test_run_op(KN_OP_MaxUnpool, 21, at, 2, in, 2, out, NULL, 1, pool);
    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(kn_status_get_code(st), KN_ERR_RUNTIME);
    kn_status_free(st);
    kn_tensor_free(out[0]);
    iv[3] = 15;
    ck_assert_ptr_null(kn_test_run_op(KN_OP_MaxUnpool, 21, at, 2, in, 2, out, NULL, 1, pool));
    ck_assert(kn_get_f64(out[0], 15) == kn_get_f64(in[0], 3));
    ck_assert(kn_get_f64(out[0], 1) == 0.0);
    kn_tensor_free(out[0]);
    kn_tensor_free(in[0]);
    kn_tensor_free(in[1]);
}
END_TEST

/* ConvInteger (im2col + int16-pair GEMM) against the naive reference on zero-point-shifted data */
START_TEST(test_conv_integer) {
    cparams p = {2, 2, 4, 6, 2, {7, 9}, {3, 2}, {2, 1}, {1, 2}, {1, 0}, {2, 1}};
    int64_t xd[4] = {p.N, p.C, p.in[0], p.in[1]}, wd[4] = {p.M, p.C / p.G, p.k[0], p.k[1]}, zd[1] = {p.M};
    kn_tensor *in[4], *out[1], *xr, *wr;
    ck_assert_ptr_null(kn_tensor_new(KN_U8, 4, xd, &in[0]));
    ck_assert_ptr_null(kn_tensor_new(KN_I8, 4, wd, &in[1]));
    ck_assert_ptr_null(kn_tensor_new(KN_U8, 0, NULL, &in[2]));
    ck_assert_ptr_null(kn_tensor_new(KN_I8, 1, zd, &in[3]));
    ck_assert_ptr_null(kn_tensor_new(KN_F64, 4, xd, &xr));
    ck_assert_ptr_null(kn_tensor_new(KN_F64, 4, wd, &wr));
    kn_set_i64(in[2], 0, 100);
    for (int64_t m = 0; m < p.M; m++) kn_set_i64(in[3], m, m - 3);
    for (int64_t i = 0; i < kn_numel(in[0]); i++) {
        kn_set_i64(in[0], i, (int64_t)((frand() + 1.0f) * 127.0f));
        kn_set_f64(xr, i, (double)(kn_get_i64(in[0], i) - 100));
    }
    int64_t per = kn_numel(in[1]) / p.M;
    for (int64_t i = 0; i < kn_numel(in[1]); i++) {
        kn_set_i64(in[1], i, (int64_t)(frand() * 127.0f));
        kn_set_f64(wr, i, (double)(kn_get_i64(in[1], i) - (i / per - 3)));
    }
    int64_t pads[4] = {p.pb[0], p.pb[1], p.pe[0], p.pe[1]};
    kn_attr at[4] = {attr_ints("strides", p.s, 2), attr_ints("dilations", p.d, 2), attr_i("group", p.G),
                     attr_ints("pads", pads, 4)};
    kn_status *st = kn_test_run_op(KN_OP_ConvInteger, 21, at, 4, in, 4, out, NULL, 1, pool);
    ck_assert_msg(!st, "ConvInteger: %s", st ? kn_status_message(st) : "");
    ck_assert_int_eq(out[0]->dtype, KN_I32);
    int64_t n = kn_numel(out[0]);
    double *ref = malloc(sizeof(double) * (size_t)(n + 1));
    conv_naive(&p, xr, wr, NULL, ref);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(kn_get_f64(out[0], i) == ref[i], "ConvInteger [%lld]: %g vs %g", (long long)i,
                      kn_get_f64(out[0], i), ref[i]);
    free(ref);
    for (int i = 0; i < 4; i++) kn_tensor_free(in[i]);
    kn_tensor_free(xr);
    kn_tensor_free(wr);
    kn_tensor_free(out[0]);
}
END_TEST


/* The direct grouped path (depthwise and Cg <= 4, 1-D and 2-D) over odd sizes, asymmetric pads,
 * strides 1-3, dilations 1-2, channel multipliers and kernels from 1x1 to 7x7, with and without
 * bias, against the double reference; also a 3x3 image smaller than its vector width. */
START_TEST(test_conv_grouped_direct) {
    static const int64_t ks[][2] = {{3, 3}, {5, 5}, {1, 1}, {3, 5}, {7, 7}, {2, 3}};
    static const int64_t cgs[] = {1, 1, 2, 3, 4}, mgs[] = {1, 2, 3}, gs[] = {2, 3, 8};
    int cases = 0;
    for (int ki = 0; ki < 6; ki++)
        for (int64_t s = 1; s <= 3; s++)
            for (int64_t d = 1; d <= 2; d++) {
                int v = ki * 6 + (int)(s - 1) * 2 + (int)(d - 1);
                int64_t Cg = cgs[v % 5], Mg = mgs[v % 3], G = gs[v % 3], N = 1 + v % 2;
                int64_t H = 5 + v % 13, Wd = 3 + (v * 7) % 29;
                cparams p = {2,
                             N,
                             G * Cg,
                             G * Mg,
                             G,
                             {H, Wd},
                             {ks[ki][0], ks[ki][1]},
                             {s, s == 3 ? 1 : s},
                             {d, d},
                             {v % 3, (v + 1) % 3},
                             {(v + 2) % 3, v % 2}};
                for (int i = 0; i < 2; i++) /* keep the output non-empty */
                    while (p.in[i] + p.pb[i] + p.pe[i] < (p.k[i] - 1) * p.d[i] + 1) p.in[i]++;
                expect_conv(&p, KN_F32, v % 4 != 0, NULL, 0, 1e-5);
                cparams q = {1, N, G * Cg, G * Mg, G, {Wd + 2 * H}, {ks[ki][1]}, {s}, {d}, {v % 3}, {v % 2}};
                while (q.in[0] + q.pb[0] + q.pe[0] < (q.k[0] - 1) * q.d[0] + 1) q.in[0]++;
                expect_conv(&q, KN_F32, v % 3 != 0, NULL, 0, 1e-5);
                cases += 2;
            }
    cparams tiny = {2, 1, 16, 16, 16, {3, 3}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}};
    expect_conv(&tiny, KN_F32, true, NULL, 0, 1e-5);
    cparams wide = {2, 2, 24, 24, 24, {9, 131}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}};
    expect_conv(&wide, KN_F32, true, NULL, 0, 1e-5);
    ck_assert_int_eq(cases, 72);
}
END_TEST


/* Each ISA build of the direct convolution row kernel against the scalar one (this CPU runs only
 * one of them through Conv), with and without the clamp; NaN passes through when unclamped. */
START_TEST(test_conv_dw_row_isas) {
    enum { NT = 11, NMAX = 96 };
    float data[NT][NMAX], wt[NT], ref[NMAX], got[NMAX];
    const float *src[NT];
    for (int t = 0; t < NT; t++) {
        for (int i = 0; i < NMAX; i++) data[t][i] = frand();
        wt[t] = frand();
        src[t] = data[t];
    }
    data[3][5] = NAN;
    kn_conv_dw_row_fn fns[2] = {kn_conv_dw_row_avx2, kn_conv_dw_row_avx512};
    bool have[2] = {__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"), __builtin_cpu_supports("avx512f")};
    for (int f = 0; f < 2; f++) {
        if (!have[f]) continue;
        for (int64_t n = 16; n <= NMAX; n += 16)
            for (int act = 0; act < 3; act++) {
                kn_conv_dw_row_scalar(ref, src, wt, NT, n, 0.25f, act, 0.0f, 0.5f);
                fns[f](got, src, wt, NT, n, 0.25f, act, 0.0f, 0.5f);
                for (int64_t i = 0; i < n; i++) {
                    if (i == 5 && act != 1) {
                        ck_assert(isnan(got[i]) && isnan(ref[i]));
                        continue;
                    }
                    if (i == 5) continue; /* min/max order on NaN differs by ISA */
                    ck_assert_msg(fabsf(got[i] - ref[i]) <= 1e-5f * (1 + fabsf(ref[i])),
                                  "isa %d n %lld [%lld]: %g vs %g", f, (long long)n, (long long)i, got[i], ref[i]);
                    if (act == 1) ck_assert(got[i] >= 0.0f && got[i] <= 0.5f);
                }
            }
        /* the bias / clamp pass, over lengths that leave every tail size */
        kn_conv_bias_act_fn bas[2] = {kn_conv_bias_act_avx2, kn_conv_bias_act_avx512};
        for (int64_t n = 0; n <= 40; n++)
            for (int act = 0; act < 3; act++) {
                memcpy(ref, data[0], sizeof ref);
                memcpy(got, data[0], sizeof got);
                kn_conv_bias_act_scalar(ref, n, -0.125f, act, -0.25f, 0.5f);
                bas[f](got, n, -0.125f, act, -0.25f, 0.5f);
                for (int64_t i = 0; i < NMAX; i++)
                    ck_assert_msg(fabsf(got[i] - ref[i]) <= 1e-6f * (1 + fabsf(ref[i])),
                                  "bias_act isa %d act %d n %lld [%lld]", f, act, (long long)n, (long long)i);
                for (int64_t i = 0; i < n && act == 1; i++) ck_assert(got[i] >= -0.25f && got[i] <= 0.5f);
                for (int64_t i = n; i < NMAX; i++) ck_assert(got[i] == data[0][i]);
            }
    }
}
END_TEST

/* Each ISA's plane kernel against the scalar one on plane p (weights wt): equal values, NaN
 * where it has NaN (unclamped), nothing written past OH*OW. Returns the ISAs checked. */
static int plane_check(const kn_conv_dw_plane *p, const float *wt, int act, int v) {
    enum { OMAX = 9 * 80 };
    static float ref[OMAX + 32], got[OMAX + 32];
    kn_conv_dw_plane_fn fns[2] = {kn_conv_dw_plane_avx2, kn_conv_dw_plane_avx512};
    bool have[2] = {__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"), __builtin_cpu_supports("avx512f")};
    int64_t no = p->OH * p->OW;
    ck_assert(no <= OMAX);
    int checked = 0;
    for (int f = 0; f < 2; f++) {
        if (!have[f]) continue;
        for (int i = 0; i < OMAX + 32; i++) got[i] = ref[i] = 12345.0f;
        kn_conv_dw_plane_scalar(ref, p, wt, 0.25f, act, -0.5f, 0.5f);
        fns[f](got, p, wt, 0.25f, act, -0.5f, 0.5f);
        for (int64_t i = 0; i < no; i++) {
            if (isnan(ref[i]) && act != 1) {
                ck_assert_msg(isnan(got[i]), "isa %d case %d [%lld]", f, v, (long long)i);
                continue;
            }
            if (isnan(ref[i]) || isnan(got[i])) continue; /* min/max order on NaN differs by ISA */
            if (isinf(ref[i])) {
                ck_assert(got[i] == ref[i]);
                continue;
            }
            ck_assert_msg(fabsf(got[i] - ref[i]) <= 1e-5f * (1 + fabsf(ref[i])),
                          "isa %d case %d act %d [%lld]: %g vs %g", f, v, act, (long long)i, got[i], ref[i]);
            if (act == 1) ck_assert(got[i] >= -0.5f && got[i] <= 0.5f);
        }
        for (int64_t i = no; i < OMAX + 32; i++) ck_assert(got[i] == 12345.0f);
        checked++;
    }
    return checked;
}

/* The in-place plane kernels of each ISA against the scalar one over 400 geometries: 1-2 input
 * channels, kernels 1x1 to 5x5, horizontal strides 1 and 2, vertical 1-3, dilations 1-2, pads
 * 0-4 on either side (asymmetric), widths 1-80 (every vector tail), with the planes starting
 * right after an unreadable page or ending flush against one and the output followed by
 * sentinels: nothing outside the input planes is read, nothing past OH*OW written. NaN and Inf
 * in the input pass through unclamped. Then wide dilated 1x9 kernels with pads of 70, whose
 * many edge blocks take the column-order path. */
START_TEST(test_conv_dw_plane_isas) {
    enum { XMAX = 2 * 9 * 80 };
    long page = sysconf(_SC_PAGESIZE);
    size_t body = ((sizeof(float) * XMAX + (size_t)page - 1) / (size_t)page) * (size_t)page;
    char *map = mmap(NULL, body + 2 * (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert(map != MAP_FAILED);
    ck_assert(!mprotect(map, (size_t)page, PROT_NONE));
    ck_assert(!mprotect(map + (size_t)page + body, (size_t)page, PROT_NONE));
    float *lo_edge = (float *)(map + (size_t)page), *hi_edge = (float *)(map + (size_t)page + body);
    float wt[2 * 25];
    bool any = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int checked = 0;
    for (int v = 0; v < 404; v++) {
        kn_conv_dw_plane p;
        int64_t pe_h, pe_w;
        if (v < 400) {
            p.Cg = 1 + v % 2;
            p.KH = 1 + v % 5;
            p.KW = 1 + (v / 5) % 5;
            p.sw = 1 + (v / 3) % 2;
            p.sh = 1 + v % 3;
            p.dh = 1 + (v / 7) % 2;
            p.dw = 1 + (v / 11) % 2;
            p.ph = v % 4;
            p.pw = (v / 2) % 5;
            pe_h = (v / 4) % 3;
            pe_w = (v / 13) % 5;
            p.Wd = 1 + (v * 37) % 80;
            p.H = 1 + (v * 7) % 9;
        } else { /* 1x9, dilation 10, pads 70: 11 edge blocks of 9 masks each at stride 1 */
            p.Cg = 1 + v % 2;
            p.KH = 1;
            p.KW = 9;
            p.sw = 1 + (v - 400) / 2;
            p.sh = 1;
            p.dh = 1;
            p.dw = 10;
            p.ph = pe_h = 0;
            p.pw = 70;
            pe_w = 70 - v % 3;
            p.Wd = 200;
            p.H = 2;
        }
        while (p.Wd + p.pw + pe_w < (p.KW - 1) * p.dw + 1) p.Wd++;
        while (p.H + p.ph + pe_h < (p.KH - 1) * p.dh + 1) p.H++;
        p.OH = (p.H + p.ph + pe_h - (p.KH - 1) * p.dh - 1) / p.sh + 1;
        p.OW = (p.Wd + p.pw + pe_w - (p.KW - 1) * p.dw - 1) / p.sw + 1;
        int64_t nx = p.Cg * p.H * p.Wd;
        ck_assert(nx <= XMAX);
        float *x = v % 2 ? lo_edge : hi_edge - nx;
        for (int64_t i = 0; i < nx; i++) x[i] = frand();
        if (nx > 6) {
            x[v % nx] = NAN;
            x[(v * 5 + 3) % nx] = v % 3 ? INFINITY : -INFINITY;
        }
        p.x = x;
        for (int i = 0; i < 2 * 25; i++) wt[i] = frand();
        checked += plane_check(&p, wt, v % 3, v);
    }
    munmap(map, body + 2 * (size_t)page);
    ck_assert_int_ge(checked, any ? 404 : 0);
}
END_TEST

/* A depthwise 3x3 (the in-place plane path) over a batch of wide images with NaN and Inf inside
 * and on the borders: each output agrees with the reference, NaN exactly where it has NaN, Inf
 * where it has Inf. Strides 1 and 2, asymmetric pads, dilation 2, channels not a multiple of the vector. */
START_TEST(test_conv_dw_plane_nonfinite) {
    static const int64_t geo[][6] = {/* s, d, pb_h, pb_w, pe_h, pe_w */
                                     {1, 1, 1, 1, 1, 1},
                                     {2, 1, 1, 1, 1, 1},
                                     {2, 1, 0, 0, 1, 1},
                                     {1, 2, 2, 1, 0, 2},
                                     {2, 2, 1, 2, 2, 0}};
    for (int gi = 0; gi < 5; gi++) {
        int64_t N = 3, C = 19, H = 11, Wd = 70;
        cparams p = {2,
                     N,
                     C,
                     C,
                     C,
                     {H, Wd},
                     {3, 3},
                     {geo[gi][0], geo[gi][0]},
                     {geo[gi][1], geo[gi][1]},
                     {geo[gi][2], geo[gi][3]},
                     {geo[gi][4], geo[gi][5]}};
        int64_t xd[4] = {N, C, H, Wd}, wd[4] = {C, 1, 3, 3}, bd[1] = {C};
        kn_tensor *in[3] = {mk_rand(KN_F32, 4, xd), mk_rand(KN_F32, 4, wd), mk_rand(KN_F32, 1, bd)}, *out[1];
        float *x = in[0]->data;
        x[(1 * C + 3) * H * Wd + 5 * Wd + 0] = NAN;           /* left border */
        x[(2 * C + 7) * H * Wd + 0 * Wd + Wd - 1] = INFINITY; /* top right corner */
        x[(0 * C + 18) * H * Wd + 6 * Wd + 33] = -INFINITY;   /* interior */
        x[(2 * C + 18) * H * Wd + (H - 1) * Wd + 40] = NAN;   /* bottom row */
        int64_t pads[4] = {p.pb[0], p.pb[1], p.pe[0], p.pe[1]};
        kn_attr at[4] = {attr_ints("strides", p.s, 2), attr_ints("dilations", p.d, 2), attr_i("group", C),
                         attr_ints("pads", pads, 4)};
        kn_status *st = kn_test_run_op(KN_OP_Conv, 21, at, 4, in, 3, out, NULL, 1, pool);
        ck_assert_msg(!st, "Conv: %s", st ? kn_status_message(st) : "");
        int64_t n = kn_numel(out[0]);
        double *ref = malloc(sizeof(double) * (size_t)n);
        conv_naive(&p, in[0], in[1], in[2], ref);
        int nonfinite = 0;
        for (int64_t i = 0; i < n; i++) {
            double g = kn_get_f64(out[0], i);
            if (isnan(ref[i]) || isinf(ref[i])) {
                nonfinite++;
                ck_assert_msg(isnan(ref[i]) ? isnan(g) : g == ref[i], "geo %d [%lld]: %g vs %g", gi, (long long)i, g,
                              ref[i]);
                continue;
            }
            ck_assert_msg(fabs(g - ref[i]) <= 1e-5 * (1 + fabs(ref[i])), "geo %d [%lld]: %g vs %g", gi, (long long)i, g,
                          ref[i]);
        }
        ck_assert_int_gt(nonfinite, 0);
        free(ref);
        for (int i = 0; i < 3; i++) kn_tensor_free(in[i]);
        kn_tensor_free(out[0]);
    }
}
END_TEST

/* com.microsoft FusedConv = act(Conv + Z) against the reference, for each activation, through the
 * direct grouped path (clamp inside the row kernel) and the GEMM path (clamp in the bias pass),
 * with and without Z; an unknown activation is refused at decode. */
static void expect_fused(const cparams *p, const char *act, const float *ap, int nap, bool z) {
    int64_t xd[4] = {p->N, p->C, p->in[0], p->in[1]}, wd[4] = {p->M, p->C / p->G, p->k[0], p->k[1]}, bd[1] = {p->M};
    int64_t od[3];
    conv_out_dims(p, od);
    int64_t yd[4] = {p->N, p->M, od[0], od[1]};
    kn_tensor *in[4] = {mk_rand(KN_F32, 4, xd), mk_rand(KN_F32, 4, wd), mk_rand(KN_F32, 1, bd),
                        z ? mk_rand(KN_F32, 4, yd) : NULL},
              *out[1];
    int64_t pads[4] = {p->pb[0], p->pb[1], p->pe[0], p->pe[1]};
    kn_attr at[6] = {attr_ints("strides", p->s, 2), attr_ints("dilations", p->d, 2),
                     attr_i("group", p->G),         attr_ints("pads", pads, 4),
                     attr_s("activation", act),     attr_floats("activation_params", ap, nap)};
    kn_status *st = kn_test_run_op(KN_OP_MsFusedConv, 1, at, nap ? 6 : 5, in, z ? 4 : 3, out, NULL, 1, pool);
    ck_assert_msg(!st, "FusedConv: %s", st ? kn_status_message(st) : "");
    int64_t n = kn_numel(out[0]);
    ck_assert_int_eq(n, p->N * p->M * od[0] * od[1]);
    double *ref = malloc(sizeof(double) * (size_t)(n + 1));
    conv_naive(p, in[0], in[1], in[2], ref);
    for (int64_t i = 0; i < n; i++) {
        double v = ref[i] + (z ? kn_get_f64(in[3], i) : 0.0);
        if (!strcmp(act, "Relu")) v = v < 0 ? 0 : v;
        else if (!strcmp(act, "Clip")) v = v < ap[0] ? ap[0] : v > ap[1] ? ap[1] : v;
        else if (!strcmp(act, "LeakyRelu")) v = v < 0 ? ap[0] * v : v;
        else if (!strcmp(act, "Sigmoid")) v = 1 / (1 + exp(-v));
        else if (!strcmp(act, "Tanh")) v = tanh(v);
        else if (!strcmp(act, "HardSigmoid")) v = fmax(0, fmin(1, ap[0] * v + ap[1]));
        else if (!strcmp(act, "Silu")) v = v / (1 + exp(-v));
        ck_assert_msg(fabs(kn_get_f64(out[0], i) - v) <= 1e-5 * (1 + fabs(v)),
                      "FusedConv %s G=%lld z=%d [%lld]: %g vs %g", act, (long long)p->G, z, (long long)i,
                      kn_get_f64(out[0], i), v);
    }
    free(ref);
    for (int i = 0; i < 4; i++)
        if (in[i]) kn_tensor_free(in[i]);
    kn_tensor_free(out[0]);
}

START_TEST(test_fused_conv) {
    cparams dw = {2, 2, 12, 12, 12, {9, 21}, {3, 3}, {2, 1}, {1, 1}, {1, 1}, {1, 1}};
    cparams dense = {2, 2, 5, 7, 1, {8, 10}, {3, 3}, {1, 1}, {1, 1}, {1, 0}, {0, 1}};
    cparams one = {2, 1, 16, 8, 1, {6, 7}, {1, 1}, {1, 1}, {1, 1}, {0, 0}, {0, 0}};
    const cparams *ps[3] = {&dw, &dense, &one};
    const float clip[2] = {-0.5f, 0.75f}, leaky[1] = {0.1f}, hs[2] = {0.3f, 0.4f};
    for (int i = 0; i < 3; i++)
        for (int z = 0; z < 2; z++) {
            expect_fused(ps[i], "Relu", NULL, 0, z);
            expect_fused(ps[i], "Clip", clip, 2, z);
            expect_fused(ps[i], "LeakyRelu", leaky, 1, z);
            expect_fused(ps[i], "Sigmoid", NULL, 0, z);
            expect_fused(ps[i], "Tanh", NULL, 0, z);
            expect_fused(ps[i], "HardSigmoid", hs, 2, z);
            expect_fused(ps[i], "Silu", NULL, 0, z);
        }
    int64_t xd[4] = {1, 2, 4, 4}, wd[4] = {2, 2, 3, 3};
    kn_tensor *in[2] = {mk_rand(KN_F32, 4, xd), mk_rand(KN_F32, 4, wd)}, *out[1] = {NULL};
    kn_attr bad = attr_s("activation", "Swish");
    kn_status *st = kn_test_run_op(KN_OP_MsFusedConv, 1, &bad, 1, in, 2, out, NULL, 1, pool);
    ck_assert_ptr_nonnull(st);
    ck_assert_msg(strstr(kn_status_message(st), "Swish") != NULL, "%s", kn_status_message(st));
    kn_status_free(st);
    if (out[0]) kn_tensor_free(out[0]);
    kn_tensor_free(in[0]);
    kn_tensor_free(in[1]);
}
END_TEST

/* Conv (FusedConv with Relu when fused) of p on in, run as the executor runs it, with the weights
 * packed ahead as the CPU backend's graph hook packs a constant's when packed_w is given (NULL: no
 * packing). Returns the output; *prepared says whether the node was given packed weights. */
static kn_tensor *run_conv_prepared(const cparams *p, bool fused, const kn_tensor *packed_w, const kn_tensor *const *in,
                                    int n_in, kn_threadpool *tp, bool *prepared) {
    int64_t pads[6];
    for (int i = 0; i < p->nsp; i++) {
        pads[i] = p->pb[i];
        pads[p->nsp + i] = p->pe[i];
    }
    kn_attr at[5] = {attr_ints("strides", p->s, p->nsp), attr_ints("dilations", p->d, p->nsp), attr_i("group", p->G),
                     attr_ints("pads", pads, 2 * p->nsp), attr_s("activation", "Relu")};
    kn_node node = kn_test_node(fused ? KN_OP_MsFusedConv : KN_OP_Conv, fused ? 1 : 21, at, fused ? 5 : 4);
    kn_status *st = kn_node_decode_params(&node);
    ck_assert_msg(!st, "params: %s", st ? kn_status_message(st) : "");
    if (packed_w) {
        st = kn_conv_prepare_weights(&node, packed_w);
        ck_assert_msg(!st, "prepare: %s", st ? kn_status_message(st) : "");
    }
    *prepared = node.prepared != NULL;
    kn_tensor *out = calloc(1, sizeof *out);
    ck_assert_ptr_nonnull(out);
    kn_scratch scratch = {0};
    kn_exec_ctx ctx = {.pool = tp,
                       .backend = kn_cpu_backend(),
                       .scratch_alloc = kn_scratch_alloc_impl,
                       .scratch_state = &scratch,
                       .seed = KN_TEST_SEED};
    st = kn_node_eval_host(&ctx, &node, in, n_in, &out, 1);
    ck_assert_msg(!st, "Conv: %s", st ? kn_status_message(st) : "");
    if (node.prepared) node.prepared_free(node.prepared);
    free(node.params);
    kn_scratch_release(&scratch);
    return out;
}

static void check_against_naive(const cparams *p, bool relu, const kn_tensor *const *in, const kn_tensor *out,
                                const char *what) {
    int64_t od[3], n = kn_numel(out);
    conv_out_dims(p, od);
    ck_assert_int_eq(n, p->N * p->M * prod(od, p->nsp));
    double *ref = malloc(sizeof(double) * (size_t)(n + 1));
    conv_naive(p, in[0], in[1], in[2], ref);
    /* float32 sums of K = Cg * kernel-size terms in [-1, 1): the rounding error grows as sqrt(K) */
    double tol = 1e-6 * (1 + sqrt((double)(p->C / p->G * prod(p->k, p->nsp))));
    for (int64_t i = 0; i < n; i++) {
        double v = relu && ref[i] < 0 ? 0 : ref[i];
        ck_assert_msg(fabs(kn_get_f64(out, i) - v) <= tol * (1 + fabs(v)),
                      "%s nsp=%d N=%lld C=%lld M=%lld G=%lld k=%lld s=%lld d=%lld [%lld]: %g vs %g", what, p->nsp,
                      (long long)p->N, (long long)p->C, (long long)p->M, (long long)p->G, (long long)p->k[0],
                      (long long)p->s[0], (long long)p->d[0], (long long)i, kn_get_f64(out, i), v);
    }
    free(ref);
}

/* Weights packed once into the GEMM's A panels (one matrix per group): 1x1 direct (batch-wide
 * columns), strided and dilated windows, pads, groups with Cg > 4 (the GEMM path), M across the
 * MR/MC remainders, K across a 512-deep slice, batches 1, 3 and 8, with and without threads. */
START_TEST(test_conv_prepacked) {
    static const int64_t Ms[] = {1, 7, 16, 13, 100, 40}, Cs[] = {3, 8, 64, 5, 12, 70}, Ns[] = {1, 3, 8};
    static const int64_t ks[][2] = {{1, 1}, {3, 3}, {1, 1}, {3, 3}, {5, 5}, {2, 3}, {3, 1}};
    int cases = 0;
    for (int ki = 0; ki < 7; ki++)
        for (int v = 0; v < 6; v++) {
            int64_t s = ki == 2 || ki == 3 ? 2 : 1, d = ki == 6 || (ki == 1 && v % 2) ? 2 : 1;
            int64_t G = v % 3 == 2 ? 2 : 1, C = Cs[v] * G, M = Ms[(v + ki) % 6] * G, N = Ns[(v + ki) % 3];
            int64_t pad = ks[ki][0] == 1 && s == 1 ? 0 : (v + ki) % 3;
            cparams p = {2,
                         N,
                         C,
                         M,
                         G,
                         {5 + (v * 3 + ki) % 11, 4 + (v * 5 + ki * 3) % 13},
                         {ks[ki][0], ks[ki][1]},
                         {s, s},
                         {d, d},
                         {pad, pad % 2},
                         {pad, (pad + 1) % 2}};
            if (ki == 0 && v == 4) p.in[0] = p.in[1] = 40; /* columns split among threads */
            for (int i = 0; i < 2; i++)
                while (p.in[i] + p.pb[i] + p.pe[i] < (p.k[i] - 1) * p.d[i] + 1) p.in[i]++;
            int64_t xd[4] = {p.N, p.C, p.in[0], p.in[1]}, wd[4] = {p.M, p.C / p.G, p.k[0], p.k[1]}, bd[1] = {p.M};
            kn_tensor *in[3] = {mk_rand(KN_F32, 4, xd), mk_rand(KN_F32, 4, wd), mk_rand(KN_F32, 1, bd)};
            for (int fused = 0; fused < 2; fused++)
                for (int t = 0; t < 2; t++) {
                    bool prepared = false;
                    kn_tensor *out = run_conv_prepared(&p, fused, in[1], (const kn_tensor *const *)in,
                                                       (v + t) % 2 ? 3 : 2, t ? pool : NULL, &prepared);
                    ck_assert_msg(prepared, "weights of case %d/%d not packed", ki, v);
                    const kn_tensor *ref_in[3] = {in[0], in[1], (v + t) % 2 ? in[2] : NULL};
                    check_against_naive(&p, fused, ref_in, out, fused ? "FusedConv packed" : "Conv packed");
                    kn_tensor_free(out);
                    cases++;
                }
            /* packed for other weights of the same shape: the run must use the ones it is given */
            kn_tensor *other = mk_rand(KN_F32, 4, wd);
            bool prepared = false;
            kn_tensor *out = run_conv_prepared(&p, false, other, (const kn_tensor *const *)in, 3, pool, &prepared);
            ck_assert(prepared);
            check_against_naive(&p, false, (const kn_tensor *const *)in, out, "Conv packed for other weights");
            kn_tensor_free(out);
            kn_tensor_free(other);
            for (int i = 0; i < 3; i++) kn_tensor_free(in[i]);
        }
    /* 1-D and 3-D windows, and a K of 2 slices (C 130 x 3 x 3 = 1170) */
    cparams one = {1, 3, 20, 9, 1, {31}, {3}, {2}, {1}, {1}, {0}};
    cparams three = {3, 2, 6, 10, 2, {5, 4, 6}, {3, 2, 3}, {1, 2, 1}, {1, 1, 2}, {1, 0, 1}, {1, 1, 2}};
    cparams deep = {2, 2, 130, 24, 1, {9, 7}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}};
    const cparams *more[3] = {&one, &three, &deep};
    for (int i = 0; i < 3; i++) {
        const cparams *p = more[i];
        int64_t xd[5] = {p->N, p->C}, wd[5] = {p->M, p->C / p->G}, bd[1] = {p->M};
        for (int k = 0; k < p->nsp; k++) {
            xd[2 + k] = p->in[k];
            wd[2 + k] = p->k[k];
        }
        kn_tensor *in[3] = {mk_rand(KN_F32, p->nsp + 2, xd), mk_rand(KN_F32, p->nsp + 2, wd), mk_rand(KN_F32, 1, bd)};
        bool prepared = false;
        kn_tensor *out = run_conv_prepared(p, false, in[1], (const kn_tensor *const *)in, 3, pool, &prepared);
        ck_assert(prepared);
        check_against_naive(p, false, (const kn_tensor *const *)in, out, "Conv packed");
        kn_tensor_free(out);
        for (int k = 0; k < 3; k++) kn_tensor_free(in[k]);
        cases++;
    }
    /* the direct grouped path keeps its own weight layout: nothing is packed for it */
    int64_t dwd[4] = {8, 1, 3, 3};
    kn_tensor *dw = mk_rand(KN_F32, 4, dwd);
    kn_attr g8 = attr_i("group", 8);
    kn_node node = kn_test_node(KN_OP_Conv, 21, &g8, 1);
    ck_assert(!kn_node_decode_params(&node));
    ck_assert(!kn_conv_prepare_weights(&node, dw));
    ck_assert_ptr_null(node.prepared);
    free(node.params);
    kn_tensor_free(dw);
    ck_assert_int_eq(cases, 171);
}
END_TEST

static Suite *conv_suite(void) {
    Suite *s = suite_create("conv");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, test_conv_shapes);
    tcase_add_test(tc, test_conv_auto_pad);
    tcase_add_test(tc, test_conv_errors);
    tcase_add_test(tc, test_conv_transpose);
    tcase_add_test(tc, test_conv_integer);
    tcase_add_test(tc, test_pools);
    tcase_add_test(tc, test_maxunpool_bad_index);
    tcase_add_test(tc, test_conv_grouped_direct);
    tcase_add_test(tc, test_conv_dw_row_isas);
    tcase_add_test(tc, test_conv_dw_plane_isas);
    tcase_add_test(tc, test_conv_dw_plane_nonfinite);
    tcase_add_test(tc, test_fused_conv);
    tcase_add_test(tc, test_conv_prepacked);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return kn_test_run_suite(conv_suite()); }
