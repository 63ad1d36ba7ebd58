/* Unit tests for the com.microsoft contrib ops (graph/infer_contrib.c, kernels/cpu/contrib.c):
 * each kernel runs through infer + kernel and is checked against a plain double-precision
 * reference written here (Gelu forms, GemmFastGelu, SkipLayerNormalization with all outputs,
 * EmbedLayerNormalization with every input form, DynamicQuantizeLSTM against the float LSTM on its
 * dequantised weights, Attention with
 * masks / past / present, MultiHeadAttention with bias / padding mask / attention bias / qk),
 * threaded and unthreaded, plus the error paths for malformed shapes and attributes.
 * tests/contrib_parity.py covers the same ops end to end against ONNX Runtime. */
#include "tests/unit/harness.h"
#include "tests/unit/rng.h"
#include "runtime/core/dtype.h"

/* the generator behind every random input here (tests/unit/rng.h) */
static test_rng rng = {4242};

/* ---- Gelu family ---- */

static double gelu_erf(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }
static double gelu_tanh(double x) {
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
}

START_TEST(test_gelu_family) {
    kn_threadpool *pool = kn_threadpool_create(3);
    const kn_dtype dts[3] = {KN_F32, KN_F64, KN_F16};
    for (int di = 0; di < 3; di++) {
        kn_dtype dt = dts[di];
        double tol = dt == KN_F16 ? 2e-3 : dt == KN_F64 ? 1e-12 : 2e-6;
        int64_t d[2] = {37, 129}, db[1] = {129};
        kn_tensor *x = mk(dt, 2, d, NULL), *b = rng_tensor(&rng, dt, 1, db, 1.0);
        for (int64_t i = 0; i < kn_numel(x); i++) kn_set_f64(x, i, -8.0 + 16.0 * (double)i / (double)kn_numel(x));
        double *ref = malloc(sizeof(double) * (size_t)kn_numel(x));
        for (int form = 0; form < 3; form++) {
            int op = form == 0 ? KN_OP_MsGelu : form == 1 ? KN_OP_MsFastGelu : KN_OP_MsBiasGelu;
            kn_tensor *in[2] = {x, b}, *out[1];
            for (int64_t i = 0; i < kn_numel(x); i++) {
                double v = kn_get_f64(x, i) + (form ? kn_get_f64(b, i % 129) : 0.0);
                if (dt == KN_F16 && form) v = kn_f16_to_f32(kn_f32_to_f16((float)v));
                ref[i] = form == 1 ? gelu_tanh(v) : gelu_erf(v);
            }
            ck_assert_ptr_null(kn_test_run_op(op, 17, NULL, 0, in, form ? 2 : 1, out, NULL, 1, pool));
            ck_assert_int_eq(out[0]->dtype, dt);
            expect_close(out[0], ref, kn_numel(out[0]), tol, tol, kn_op_table[op].name);
            free_all(out, 1);
        }
        /* FastGelu without its optional bias */
        kn_tensor *in1[2] = {x, NULL}, *out[1];
        for (int64_t i = 0; i < kn_numel(x); i++) ref[i] = gelu_tanh(kn_get_f64(x, i));
        ck_assert_ptr_null(kn_test_run_op(KN_OP_MsFastGelu, 17, NULL, 0, in1, 2, out, NULL, 1, NULL));
        expect_close(out[0], ref, kn_numel(out[0]), tol, tol, "FastGelu no bias");
        free_all(out, 1);
        /* a bias that does not match the last dim is an error */
        int64_t dbad[1] = {7};
        kn_tensor *bad = rng_tensor(&rng, dt, 1, dbad, 1.0), *in2[2] = {x, bad};
        expect_err(kn_test_run_op(KN_OP_MsBiasGelu, 17, NULL, 0, in2, 2, out, NULL, 1, NULL));
        free_all(out, 1);
        free(ref);
        kn_tensor_free(bad);
        kn_tensor_free(x);
        kn_tensor_free(b);
    }
    int64_t d1[1] = {4};
    kn_tensor *xi = mk(KN_I32, 1, d1, NULL), *in[1] = {xi}, *out[1];
    expect_err(kn_test_run_op(KN_OP_MsGelu, 17, NULL, 0, in, 1, out, NULL, 1, NULL));
    free_all(out, 1);
    kn_tensor_free(xi);
    kn_threadpool_free(pool);
}
END_TEST

/* GemmFastGelu: FastGelu(X W + bias) over a broadcast batch, with and without the bias */
START_TEST(test_gemm_fast_gelu) {
    int64_t dx[3] = {2, 3, 5}, dw[2] = {5, 7}, db[1] = {7};
    kn_tensor *x = rng_tensor(&rng, KN_F32, 3, dx, 1.0), *w = rng_tensor(&rng, KN_F32, 2, dw, 0.5),
              *b = rng_tensor(&rng, KN_F32, 1, db, 1.0);
    double ref[42];
    for (int bias = 0; bias < 2; bias++) {
        for (int64_t r = 0; r < 6; r++)
            for (int64_t n = 0; n < 7; n++) {
                double acc = bias ? kn_get_f64(b, n) : 0.0;
                for (int64_t k = 0; k < 5; k++) acc += kn_get_f64(x, r * 5 + k) * kn_get_f64(w, k * 7 + n);
                ref[r * 7 + n] = gelu_tanh(acc);
            }
        kn_tensor *in[3] = {x, w, b}, *out[1];
        ck_assert_ptr_null(kn_test_run_op(KN_OP_MsGemmFastGelu, 1, NULL, 0, in, bias ? 3 : 2, out, NULL, 1, NULL));
        ck_assert_int_eq(out[0]->ndim, 3);
        ck_assert_int_eq(out[0]->dims[2], 7);
        expect_close(out[0], ref, 42, 1e-5, 1e-5, "GemmFastGelu");
        free_all(out, 1);
    }
    /* a bias that is not the product's last dim */
    kn_tensor *in[3] = {x, w, x}, *out[1];
    expect_err(kn_test_run_op(KN_OP_MsGemmFastGelu, 1, NULL, 0, in, 3, out, NULL, 1, NULL));
    kn_tensor *all[] = {x, w, b};
    free_all(all, 3);
}
END_TEST

/* ---- SkipLayerNormalization ---- */

START_TEST(test_skip_layer_norm) {
    kn_threadpool *pool = kn_threadpool_create(3);
    int64_t B = 3, S = 5, H = 24;
    int64_t dx[3] = {B, S, H}, dskip_b[3] = {1, S, H}, dskip_2[2] = {S, H}, dh[1] = {H};
    kn_tensor *x = rng_tensor(&rng, KN_F32, 3, dx, 3.0), *g = rng_tensor(&rng, KN_F32, 1, dh, 1.0),
              *be = rng_tensor(&rng, KN_F32, 1, dh, 1.0);
    kn_tensor *bi = rng_tensor(&rng, KN_F32, 1, dh, 1.0);
    for (int64_t i = 0; i < kn_numel(x); i++) kn_set_f64(x, i, kn_get_f64(x, i) + 7.0); /* offset mean */
    kn_tensor *skips[3] = {rng_tensor(&rng, KN_F32, 3, dx, 1.0), rng_tensor(&rng, KN_F32, 3, dskip_b, 1.0),
                           rng_tensor(&rng, KN_F32, 2, dskip_2, 1.0)};
    float eps = 1e-5f;
    kn_attr at[1] = {attr_f("epsilon", eps)};
    double *ry = malloc(sizeof(double) * (size_t)(B * S * H)), *rs = malloc(sizeof(double) * (size_t)(B * S * H));
    double rm[15], ri[15];
    for (int si = 0; si < 3; si++) {
        kn_tensor *sk = skips[si];
        int64_t skip_rows = kn_numel(sk) / H;
        for (int64_t r = 0; r < B * S; r++) {
            double m = 0, v = 0;
            for (int64_t i = 0; i < H; i++) {
                double s = kn_get_f64(x, r * H + i) + kn_get_f64(sk, (r % skip_rows) * H + i) + kn_get_f64(bi, i);
                rs[r * H + i] = s;
                m += s;
            }
            m /= (double)H;
            for (int64_t i = 0; i < H; i++) v += (rs[r * H + i] - m) * (rs[r * H + i] - m);
            v /= (double)H;
            rm[r] = m;
            ri[r] = 1.0 / sqrt(v + eps);
            for (int64_t i = 0; i < H; i++)
                ry[r * H + i] = (rs[r * H + i] - m) * ri[r] * kn_get_f64(g, i) + kn_get_f64(be, i);
        }
        kn_tensor *in[5] = {x, sk, g, be, bi}, *out[4];
        ck_assert_ptr_null(
            kn_test_run_op(KN_OP_MsSkipLayerNormalization, 17, at, 1, in, 5, out, NULL, 4, si ? pool : NULL));
        ck_assert_int_eq(out[1]->ndim, 3);
        ck_assert_int_eq(out[1]->dims[2], 1);
        expect_close(out[0], ry, kn_numel(out[0]), 1e-5, 1e-5, "SLN output");
        expect_close(out[1], rm, kn_numel(out[1]), 1e-6, 1e-6, "SLN mean");
        expect_close(out[2], ri, kn_numel(out[2]), 1e-5, 1e-6, "SLN inv_std_var");
        expect_close(out[3], rs, kn_numel(out[3]), 1e-6, 1e-6, "SLN sum");
        free_all(out, 4);
    }
    /* optional outputs omitted, no beta / bias, float16 */
    kn_tensor *x16 = mk(KN_F16, 3, dx, NULL), *s16 = mk(KN_F16, 3, dx, NULL), *g16 = mk(KN_F16, 1, dh, NULL);
    for (int64_t i = 0; i < kn_numel(x); i++) {
        kn_set_f64(x16, i, kn_get_f64(x, i));
        kn_set_f64(s16, i, kn_get_f64(skips[0], i));
    }
    for (int64_t i = 0; i < H; i++) kn_set_f64(g16, i, kn_get_f64(g, i));
    for (int64_t r = 0; r < B * S; r++) {
        double m = 0, v = 0, tmp[24];
        for (int64_t i = 0; i < H; i++) m += (tmp[i] = kn_get_f64(x16, r * H + i) + kn_get_f64(s16, r * H + i));
        m /= (double)H;
        for (int64_t i = 0; i < H; i++) v += (tmp[i] - m) * (tmp[i] - m);
        v /= (double)H;
        for (int64_t i = 0; i < H; i++) ry[r * H + i] = (tmp[i] - m) / sqrt(v + 1e-12) * kn_get_f64(g16, i);
    }
    kn_tensor *in16[3] = {x16, s16, g16}, *out16[4];
    bool want[4] = {true, false, false, false};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_MsSkipLayerNormalization, 17, NULL, 0, in16, 3, out16, want, 4, pool));
    ck_assert_int_eq(out16[0]->dtype, KN_F16);
    expect_close(out16[0], ry, kn_numel(out16[0]), 4e-3, 4e-3, "SLN fp16");
    free_all(out16, 4);
    /* errors: gamma of the wrong length, skip that does not broadcast, 1-D input */
    int64_t dbad[1] = {H - 1}, dsbad[3] = {B, S + 1, H};
    kn_tensor *gbad = rng_tensor(&rng, KN_F32, 1, dbad, 1.0), *sbad = rng_tensor(&rng, KN_F32, 3, dsbad, 1.0), *out[4];
    kn_tensor *e1[3] = {x, skips[0], gbad}, *e2[3] = {x, sbad, g}, *e3[3] = {g, g, g};
    expect_err(kn_test_run_op(KN_OP_MsSkipLayerNormalization, 17, NULL, 0, e1, 3, out, NULL, 1, NULL));
    free_all(out, 1);
    expect_err(kn_test_run_op(KN_OP_MsSkipLayerNormalization, 17, NULL, 0, e2, 3, out, NULL, 1, NULL));
    free_all(out, 1);
    expect_err(kn_test_run_op(KN_OP_MsSkipLayerNormalization, 17, NULL, 0, e3, 3, out, NULL, 1, NULL));
    free_all(out, 1);
    kn_tensor *all[] = {x, g, be, bi, skips[0], skips[1], skips[2], x16, s16, g16, gbad, sbad};
    free_all(all, (int)(sizeof all / sizeof all[0]));
    free(ry);
    free(rs);
    kn_threadpool_free(pool);
}
END_TEST

/* ---- EmbedLayerNormalization ---- */

static kn_tensor *mk_ids(int64_t b, int64_t s, const int32_t *v) {
    int64_t d[2] = {b, s};
    return mk_raw(KN_I32, 2, d, v);
}

/* reference: LayerNorm(word[ids] + pos[p] + seg[segs]) per token, in double */
static void eln_ref(const kn_tensor *ids, const kn_tensor *segs, const kn_tensor *pos, const kn_tensor *we,
                    const kn_tensor *pe, const kn_tensor *se, const kn_tensor *g, const kn_tensor *b, double eps,
                    double *y, double *sum) {
    int64_t n = kn_numel(ids), S = ids->dims[1], H = we->dims[1];
    for (int64_t t = 0; t < n; t++) {
        int64_t wi = ((int32_t *)ids->data)[t], si = segs ? ((int32_t *)segs->data)[t] : 0;
        int64_t pi = pos ? ((int32_t *)pos->data)[pos->dims[0] == 1 ? t % S : t] : t % S;
        double m = 0, v = 0;
        for (int64_t k = 0; k < H; k++) {
            double e = kn_get_f64(we, wi * H + k) + kn_get_f64(pe, pi * H + k) + (se ? kn_get_f64(se, si * H + k) : 0);
            sum[t * H + k] = e;
            m += e;
        }
        m /= (double)H;
        for (int64_t k = 0; k < H; k++) v += (sum[t * H + k] - m) * (sum[t * H + k] - m);
        double inv = 1.0 / sqrt(v / (double)H + eps);
        for (int64_t k = 0; k < H; k++)
            y[t * H + k] = (sum[t * H + k] - m) * inv * kn_get_f64(g, k) + (b ? kn_get_f64(b, k) : 0);
    }
}

START_TEST(test_embed_layer_norm) {
    kn_threadpool *pool = kn_threadpool_create(3);
    enum { B = 2, S = 4, H = 20, V = 11, P = 6, G = 2 };
    int64_t dw[2] = {V, H}, dp[2] = {P, H}, dg[2] = {G, H}, dh[1] = {H};
    kn_tensor *we = rng_tensor(&rng, KN_F32, 2, dw, 1.0), *pe = rng_tensor(&rng, KN_F32, 2, dp, 1.0),
              *se = rng_tensor(&rng, KN_F32, 2, dg, 1.0);
    kn_tensor *g = rng_tensor(&rng, KN_F32, 1, dh, 1.0), *be = rng_tensor(&rng, KN_F32, 1, dh, 1.0);
    static const int32_t idv[B * S] = {3, 10, 0, 7, 1, 1, 5, 9}, segv[B * S] = {0, 0, 1, 1, 0, 1, 1, 1};
    static const int32_t maskv[B * S] = {1, 1, 1, 0, 1, 2, 0, 1}, posv[B * S] = {5, 4, 3, 2, 0, 0, 1, 1};
    static const int32_t pos1v[S] = {2, 3, 4, 5};
    kn_tensor *ids = mk_ids(B, S, idv), *segs = mk_ids(B, S, segv), *mask = mk_ids(B, S, maskv);
    kn_tensor *pos = mk_ids(B, S, posv), *pos1 = mk_ids(1, S, pos1v);
    double ry[B * S * H], rs[B * S * H];
    kn_attr at[1] = {attr_f("epsilon", 1e-5f)};
    /* forms: full BERT with mask; no segments (DistilBERT); position_ids [B,S]; position_ids [1,S], no beta */
    for (int form = 0; form < 4; form++) {
        const kn_tensor *sg = form == 1 ? NULL : segs, *st = form == 1 ? NULL : se, *bb = form == 3 ? NULL : be;
        const kn_tensor *ps = form == 2 ? pos : form == 3 ? pos1 : NULL;
        eln_ref(ids, sg, ps, we, pe, st, g, bb, 1e-5, ry, rs);
        const kn_tensor *in[9] = {ids, sg, we, pe, st, g, bb, form == 0 ? mask : NULL, ps};
        kn_tensor *out[3];
        ck_assert_ptr_null(kn_test_run_op(KN_OP_MsEmbedLayerNormalization, 1, at, 1, in, ps ? 9 : 8, out, NULL, 3,
                                          form & 1 ? pool : NULL));
        expect_close(out[0], ry, B * S * H, 1e-5, 1e-5, "EmbedLayerNormalization output");
        expect_close(out[2], rs, B * S * H, 1e-6, 1e-6, "EmbedLayerNormalization embedding_sum");
        ck_assert_int_eq(out[1]->dtype, KN_I32);
        ck_assert_int_eq(out[1]->ndim, 1);
        /* the count of exact ones: 3 and 2 (the 2 in row 1 does not count); 0 without a mask */
        ck_assert_int_eq(((int32_t *)out[1]->data)[0], form == 0 ? 3 : 0);
        ck_assert_int_eq(((int32_t *)out[1]->data)[1], form == 0 ? 2 : 0);
        free_all(out, 3);
    }
    /* errors: an id outside the word table, a position id outside its table, a sequence longer
     * than the position table, segment_ids without their table, mask_index_type 2 */
    static const int32_t badid[B * S] = {3, 11, 0, 7, 1, 1, 5, 9}, badpos[S] = {0, 1, 2, 6};
    kn_tensor *bid = mk_ids(B, S, badid), *bpos = mk_ids(1, S, badpos), *out[3];
    const kn_tensor *e1[7] = {bid, segs, we, pe, se, g, be}, *e2[9] = {ids, segs, we, pe, se, g, be, NULL, bpos};
    expect_err(kn_test_run_op(KN_OP_MsEmbedLayerNormalization, 1, NULL, 0, e1, 7, out, NULL, 1, NULL));
    expect_err(kn_test_run_op(KN_OP_MsEmbedLayerNormalization, 1, NULL, 0, e2, 9, out, NULL, 1, NULL));
    int64_t dlong[2] = {1, P + 1};
    kn_tensor *lids = mk(KN_I32, 2, dlong, NULL);
    const kn_tensor *e3[7] = {lids, NULL, we, pe, NULL, g, be}, *e4[7] = {ids, segs, we, pe, NULL, g, be};
    expect_err(kn_test_run_op(KN_OP_MsEmbedLayerNormalization, 1, NULL, 0, e3, 7, out, NULL, 1, NULL));
    expect_err(kn_test_run_op(KN_OP_MsEmbedLayerNormalization, 1, NULL, 0, e4, 7, out, NULL, 1, NULL));
    kn_attr bad[1] = {attr_i("mask_index_type", 2)};
    expect_err(kn_test_run_op(KN_OP_MsEmbedLayerNormalization, 1, bad, 1, e3, 7, out, NULL, 1, NULL));
    kn_tensor *all[] = {we, pe, se, g, be, ids, segs, mask, pos, pos1, bid, bpos, lids};
    free_all(all, (int)(sizeof all / sizeof all[0]));
    kn_threadpool_free(pool);
}
END_TEST

/* ---- DynamicQuantizeLSTM ---- */

/* Against kiln's float LSTM on the dequantised weights (transposed to LSTM's [dirs, 4H, K]): the
 * two differ only by the on-the-fly quantisation of X and h, a few 1/255 steps of their ranges. The
 * bit-level match with ONNX Runtime is tests/contrib_parity.py's. */
START_TEST(test_dynamic_quantize_lstm) {
    enum { S = 5, B = 3, I = 6, H = 4, D = 2, G = 16 };
    int64_t dx[3] = {S, B, I}, dw[3] = {D, I, G}, dr[3] = {D, H, G}, dwf[3] = {D, G, I}, drf[3] = {D, G, H};
    int64_t db[2] = {D, 2 * G}, dsc[2] = {D, G}, dl[1] = {B}, dd[1] = {D};
    kn_tensor *x = rng_tensor(&rng, KN_F32, 3, dx, 1.0), *bias = rng_tensor(&rng, KN_F32, 2, db, 0.2);
    kn_tensor *wq = mk(KN_I8, 3, dw, NULL), *rq = mk(KN_U8, 3, dr, NULL), *wf = mk(KN_F32, 3, dwf, NULL),
              *rf = mk(KN_F32, 3, drf, NULL);
    /* W per column ([D, 4H]), R per tensor ([D]) */
    kn_tensor *ws = mk(KN_F32, 2, dsc, NULL), *wz = mk(KN_I8, 2, dsc, NULL), *rs = mk(KN_F32, 1, dd, NULL),
              *rz = mk(KN_U8, 1, dd, NULL);
    for (int64_t i = 0; i < D * G; i++) kn_set_f64(ws, i, 0.004 + 0.0005 * (double)(i % 5));
    for (int d = 0; d < D; d++) {
        kn_set_f64(rs, d, 0.005 * (d + 1));
        kn_set_f64(rz, d, 128);
    }
    for (int d = 0; d < D; d++)
        for (int64_t k = 0; k < I; k++)
            for (int64_t n = 0; n < G; n++) {
                int q = (int)(rng_uniform(&rng) * 60.0);
                kn_set_f64(wq, (d * I + k) * G + n, q);
                kn_set_f64(wf, (d * G + n) * I + k, q * kn_get_f64(ws, d * G + n));
            }
    for (int d = 0; d < D; d++)
        for (int64_t k = 0; k < H; k++)
            for (int64_t n = 0; n < G; n++) {
                int q = 128 + (int)(rng_uniform(&rng) * 60.0);
                kn_set_f64(rq, (d * H + k) * G + n, q);
                kn_set_f64(rf, (d * G + n) * H + k, (q - 128) * kn_get_f64(rs, d));
            }
    int32_t lv[B] = {5, 2, 4};
    kn_tensor *lens = mk_raw(KN_I32, 1, dl, lv);
    kn_attr at[2] = {attr_i("hidden_size", H), attr_s("direction", "bidirectional")};
    kn_tensor *qin[12] = {x, wq, rq, bias, lens, NULL, NULL, NULL, ws, wz, rs, rz}, *qout[3];
    kn_tensor *fin[5] = {x, wf, rf, bias, lens}, *fout[3];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_MsDynamicQuantizeLSTM, 1, at, 2, qin, 12, qout, NULL, 3, NULL));
    ck_assert_ptr_null(kn_test_run_op(KN_OP_LSTM, 14, at, 2, fin, 5, fout, NULL, 3, NULL));
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(qout[k]->ndim, fout[k]->ndim);
        int64_t n = kn_numel(fout[k]);
        ck_assert_int_eq(kn_numel(qout[k]), n);
        double *ref = malloc(sizeof(double) * (size_t)n);
        for (int64_t i = 0; i < n; i++) ref[i] = kn_get_f64(fout[k], i);
        expect_close(qout[k], ref, n, 0.0, 3e-2, "DynamicQuantizeLSTM vs LSTM");
        free(ref);
    }
    free_all(qout, 3);
    free_all(fout, 3);
    /* errors: no scales, R in LSTM's layout, a zero point of another type than its weights */
    kn_tensor *e1[8] = {x, wq, rq, bias, lens, NULL, NULL, NULL},
              *e2[12] = {x, wq, wq, bias, lens, NULL, NULL, NULL, ws, wz, rs, rz};
    kn_tensor *e3[12] = {x, wq, rq, bias, lens, NULL, NULL, NULL, ws, rz, rs, rz};
    expect_err(kn_test_run_op(KN_OP_MsDynamicQuantizeLSTM, 1, at, 2, e1, 8, qout, NULL, 3, NULL));
    expect_err(kn_test_run_op(KN_OP_MsDynamicQuantizeLSTM, 1, at, 2, e2, 12, qout, NULL, 3, NULL));
    expect_err(kn_test_run_op(KN_OP_MsDynamicQuantizeLSTM, 1, at, 2, e3, 12, qout, NULL, 3, NULL));
    kn_tensor *all[] = {x, bias, wq, rq, wf, rf, ws, wz, rs, rz, lens};
    free_all(all, (int)(sizeof all / sizeof all[0]));
}
END_TEST

/* ---- attention reference ---- */

/* y[B,S,N*Hv] from q[B,N,S,H], k[B,N,T,H], v[B,N,T,Hv] (double), additive mask[B,S,T] and bias
 * [B,N,S,T] (either may be NULL); qk receives the pre-softmax scores when non-NULL. */
static void ref_attention(int64_t B, int64_t N, int64_t S, int64_t T, int64_t H, int64_t Hv, const double *q,
                          const double *k, const double *v, const double *mask, const double *bias, double scale,
                          double *y, double *qk) {
    double *sc = malloc(sizeof(double) * (size_t)T);
    for (int64_t b = 0; b < B; b++)
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < S; i++) {
                double mx = -INFINITY, sum = 0;
                for (int64_t t = 0; t < T; t++) {
                    double d = 0;
                    for (int64_t h = 0; h < H; h++)
                        d += q[((b * N + n) * S + i) * H + h] * k[((b * N + n) * T + t) * H + h];
                    sc[t] = d * scale + (mask ? mask[(b * S + i) * T + t] : 0) +
                        (bias ? bias[((b * N + n) * S + i) * T + t] : 0);
                    if (qk) qk[((b * N + n) * S + i) * T + t] = sc[t];
                    mx = sc[t] > mx ? sc[t] : mx;
                }
                for (int64_t t = 0; t < T; t++) sum += (sc[t] = exp(sc[t] - mx));
                for (int64_t h = 0; h < Hv; h++) {
                    double acc = 0;
                    for (int64_t t = 0; t < T; t++) acc += sc[t] / sum * v[((b * N + n) * T + t) * Hv + h];
                    y[(b * S + i) * N * Hv + n * Hv + h] = acc;
                }
            }
    free(sc);
}

START_TEST(test_attention_fused) {
    kn_threadpool *pool = kn_threadpool_create(3);
    enum { B = 2, S = 3, D = 10, N = 2, HQ = 8, HV = 12, P = 2, T = P + S, DT = 2 * HQ + HV, H = HQ / N, Hv = HV / N };
    int64_t dx[3] = {B, S, D}, dw[2] = {D, DT}, db[1] = {DT}, dm[2] = {B, T};
    kn_tensor *x = rng_tensor(&rng, KN_F32, 3, dx, 1.0), *w = rng_tensor(&rng, KN_F32, 2, dw, 0.5),
              *bias = rng_tensor(&rng, KN_F32, 1, db, 0.2);
    double mvals[B * T] = {1, 1, 1, 0, 1, 0, 1, 1, 1, 1};
    kn_tensor *mask = mk(KN_I32, 2, dm, mvals);
    int64_t qkv[3] = {HQ, HQ, HV};
    float filter = -1000.0f;
    /* projection and reference q/k/v without past */
    double proj[B * S * DT];
    for (int64_t r = 0; r < B * S; r++)
        for (int64_t c = 0; c < DT; c++) {
            double acc = kn_get_f64(bias, c);
            for (int64_t i = 0; i < D; i++) acc += kn_get_f64(x, r * D + i) * kn_get_f64(w, i * DT + c);
            proj[r * DT + c] = acc;
        }
    for (int with_past = 0; with_past < 2; with_past++) {
        int64_t Tc = with_past ? T : S, Pc = with_past ? P : 0;
        /* present needs equal head sizes, so the past variant uses square q/k/v */
        int64_t hq = HQ, hv = with_past ? HQ : HV, dt = 2 * hq + hv, h = hq / N, hvh = hv / N;
        int64_t dw2[2] = {D, dt}, db2[1] = {dt}, dp[5] = {2, B, N, P, h}, dm2[2] = {B, Tc};
        kn_tensor *w2 = with_past ? rng_tensor(&rng, KN_F32, 2, dw2, 0.5) : w,
                  *b2 = with_past ? rng_tensor(&rng, KN_F32, 1, db2, 0.2) : bias;
        kn_tensor *past = with_past ? rng_tensor(&rng, KN_F32, 5, dp, 1.0) : NULL;
        kn_tensor *m2 = with_past ? mask : mk(KN_I32, 2, dm2, (double[]){1, 1, 0, 0, 1, 1});
        if (with_past)
            for (int64_t r = 0; r < B * S; r++)
                for (int64_t c = 0; c < dt; c++) {
                    double acc = kn_get_f64(b2, c);
                    for (int64_t i = 0; i < D; i++) acc += kn_get_f64(x, r * D + i) * kn_get_f64(w2, i * dt + c);
                    proj[r * dt + c] = acc;
                }
        double *q = calloc((size_t)(B * N * S * h), sizeof(double)),
               *k = calloc((size_t)(B * N * Tc * h), sizeof(double));
        double *v = calloc((size_t)(B * N * Tc * hvh), sizeof(double)),
               *am = calloc((size_t)(B * S * Tc), sizeof(double));
        double *y = calloc((size_t)(B * S * N * hvh), sizeof(double));
        for (int64_t b = 0; b < B; b++)
            for (int64_t n = 0; n < N; n++) {
                for (int64_t t = 0; t < Pc; t++) {
                    for (int64_t j = 0; j < h; j++)
                        k[((b * N + n) * Tc + t) * h + j] = kn_get_f64(past, (((0 * B + b) * N + n) * P + t) * h + j);
                    for (int64_t j = 0; j < hvh; j++)
                        v[((b * N + n) * Tc + t) * hvh + j] = kn_get_f64(past, (((1 * B + b) * N + n) * P + t) * h + j);
                }
                for (int64_t s = 0; s < S; s++) {
                    const double *row = proj + (b * S + s) * dt;
                    for (int64_t j = 0; j < h; j++) {
                        q[((b * N + n) * S + s) * h + j] = row[n * h + j];
                        k[((b * N + n) * Tc + Pc + s) * h + j] = row[hq + n * h + j];
                    }
                    for (int64_t j = 0; j < hvh; j++)
                        v[((b * N + n) * Tc + Pc + s) * hvh + j] = row[2 * hq + n * hvh + j];
                }
            }
        for (int64_t b = 0; b < B; b++)
            for (int64_t s = 0; s < S; s++)
                for (int64_t t = 0; t < Tc; t++)
                    am[(b * S + s) * Tc + t] =
                        (kn_get_i64(m2, b * Tc + t) ? 0.0 : filter) + (t > Pc + s ? filter : 0.0);
        ref_attention(B, N, S, Tc, h, hvh, q, k, v, am, NULL, 1.0 / sqrt((double)h), y, NULL);
        kn_attr at[4] = {attr_i("num_heads", N), attr_i("unidirectional", 1), attr_f("mask_filter_value", filter),
                         attr_ints("qkv_hidden_sizes", qkv, 3)};
        kn_tensor *in[5] = {x, w2, b2, m2, past}, *out[2];
        bool want[2] = {true, with_past != 0};
        ck_assert_ptr_null(
            kn_test_run_op(KN_OP_MsAttention, 17, at, with_past ? 3 : 4, in, 5, out, want, 2, with_past ? pool : NULL));
        ck_assert_int_eq(out[0]->dims[2], N * hvh);
        expect_close(out[0], y, kn_numel(out[0]), 1e-4, 1e-5, with_past ? "Attention past" : "Attention");
        if (with_past) {
            ck_assert_int_eq(out[1]->ndim, 5);
            ck_assert_int_eq(out[1]->dims[3], T);
            /* present is [2,B,N,T,h]: keys then values */
            int64_t half = B * N * T * h;
            for (int64_t i = 0; i < half; i++) {
                ck_assert_msg(fabs(kn_get_f64(out[1], i) - k[i]) < 1e-5, "present key %lld", (long long)i);
                ck_assert_msg(fabs(kn_get_f64(out[1], half + i) - v[i]) < 1e-5, "present value %lld", (long long)i);
            }
        }
        free_all(out, 2);
        free(q);
        free(k);
        free(v);
        free(am);
        free(y);
        if (with_past) {
            kn_tensor_free(w2);
            kn_tensor_free(b2);
            kn_tensor_free(past);
        } else kn_tensor_free(m2);
    }
    /* errors: weights not 3*hidden, num_heads missing, unsupported mask shape */
    kn_attr at1[1] = {attr_i("num_heads", N)};
    int64_t dwb[2] = {D, 13}, dmb[2] = {B, 9};
    kn_tensor *wb = rng_tensor(&rng, KN_F32, 2, dwb, 1.0), *mb = mk(KN_I32, 2, dmb, NULL), *out[2];
    kn_tensor *e1[2] = {x, wb}, *e3[4] = {x, w, bias, mb};
    int64_t sq[3] = {HQ, HQ, HV};
    kn_attr at3[2] = {attr_i("num_heads", N), attr_ints("qkv_hidden_sizes", sq, 3)};
    expect_err(kn_test_run_op(KN_OP_MsAttention, 17, at1, 1, e1, 2, out, NULL, 1, NULL));
    free_all(out, 1);
    expect_err(kn_test_run_op(KN_OP_MsAttention, 17, NULL, 0, e3, 3, out, NULL, 1, NULL));
    free_all(out, 1);
    expect_err(kn_test_run_op(KN_OP_MsAttention, 17, at3, 2, e3, 4, out, NULL, 1, NULL));
    free_all(out, 1);
    kn_tensor *all[] = {x, w, bias, mask, wb, mb};
    free_all(all, 6);
    kn_threadpool_free(pool);
}
END_TEST

START_TEST(test_multi_head_attention) {
    kn_threadpool *pool = kn_threadpool_create(3);
    enum { B = 2, S = 3, L = 5, N = 2, D = 8, DV = 6, H = D / N, Hv = DV / N };
    int64_t dq[3] = {B, S, D}, dk[3] = {B, L, D}, dv[3] = {B, L, DV}, db[1] = {2 * D + DV}, dm[2] = {B, L};
    int64_t dab[4] = {1, N, S, L};
    kn_tensor *qt = rng_tensor(&rng, KN_F32, 3, dq, 1.0), *kt = rng_tensor(&rng, KN_F32, 3, dk, 1.0),
              *vt = rng_tensor(&rng, KN_F32, 3, dv, 1.0);
    kn_tensor *bias = rng_tensor(&rng, KN_F32, 1, db, 0.3), *ab = rng_tensor(&rng, KN_F32, 4, dab, 1.0);
    kn_tensor *kpm = mk(KN_I32, 2, dm, (double[]){1, 1, 1, 0, 0, 1, 1, 1, 1, 1});
    double q[B * N * S * H], k[B * N * L * H], v[B * N * L * Hv], am[B * S * L], abb[B * N * S * L];
    double y[B * S * DV], qk[B * N * S * L];
    for (int64_t b = 0; b < B; b++)
        for (int64_t n = 0; n < N; n++) {
            for (int64_t s = 0; s < S; s++)
                for (int64_t j = 0; j < H; j++)
                    q[((b * N + n) * S + s) * H + j] =
                        kn_get_f64(qt, (b * S + s) * D + n * H + j) + kn_get_f64(bias, n * H + j);
            for (int64_t l = 0; l < L; l++) {
                for (int64_t j = 0; j < H; j++)
                    k[((b * N + n) * L + l) * H + j] =
                        kn_get_f64(kt, (b * L + l) * D + n * H + j) + kn_get_f64(bias, D + n * H + j);
                for (int64_t j = 0; j < Hv; j++)
                    v[((b * N + n) * L + l) * Hv + j] =
                        kn_get_f64(vt, (b * L + l) * DV + n * Hv + j) + kn_get_f64(bias, 2 * D + n * Hv + j);
            }
            for (int64_t i = 0; i < S * L; i++) abb[(b * N + n) * S * L + i] = kn_get_f64(ab, n * S * L + i);
        }
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0; s < S; s++)
            for (int64_t l = 0; l < L; l++) am[(b * S + s) * L + l] = kn_get_i64(kpm, b * L + l) ? 0.0 : -10000.0;
    ref_attention(B, N, S, L, H, Hv, q, k, v, am, abb, 0.7, y, qk);
    kn_attr at[2] = {attr_i("num_heads", N), attr_f("scale", 0.7f)};
    kn_tensor *in[6] = {qt, kt, vt, bias, kpm, ab}, *out[4];
    bool want[4] = {true, true, true, true};
    for (int threaded = 0; threaded < 2; threaded++) {
        ck_assert_ptr_null(
            kn_test_run_op(KN_OP_MsMultiHeadAttention, 17, at, 2, in, 6, out, want, 4, threaded ? pool : NULL));
        expect_close(out[0], y, kn_numel(out[0]), 1e-4, 1e-5, "MHA output");
        expect_close(out[1], k, kn_numel(out[1]), 1e-5, 1e-5, "MHA present_key");
        expect_close(out[2], v, kn_numel(out[2]), 1e-5, 1e-5, "MHA present_value");
        expect_close(out[3], qk, kn_numel(out[3]), 1e-4, 1e-4, "MHA qk");
        free_all(out, 4);
    }
    /* errors: key width differs from query, value/key length mismatch, bias length, packed QKV */
    int64_t dkb[3] = {B, L, D + 2}, dvb[3] = {B, L + 1, DV}, dbb[1] = {7};
    kn_tensor *kb = rng_tensor(&rng, KN_F32, 3, dkb, 1.0), *vb = rng_tensor(&rng, KN_F32, 3, dvb, 1.0),
              *bb = rng_tensor(&rng, KN_F32, 1, dbb, 1.0);
    kn_tensor *e1[3] = {qt, kb, vt}, *e2[3] = {qt, kt, vb}, *e3[4] = {qt, kt, vt, bb}, *e4[3] = {qt, NULL, NULL};
    expect_err(kn_test_run_op(KN_OP_MsMultiHeadAttention, 17, at, 2, e1, 3, out, NULL, 1, NULL));
    free_all(out, 1);
    expect_err(kn_test_run_op(KN_OP_MsMultiHeadAttention, 17, at, 2, e2, 3, out, NULL, 1, NULL));
    free_all(out, 1);
    expect_err(kn_test_run_op(KN_OP_MsMultiHeadAttention, 17, at, 2, e3, 4, out, NULL, 1, NULL));
    free_all(out, 1);
    expect_err(kn_test_run_op(KN_OP_MsMultiHeadAttention, 17, at, 2, e4, 3, out, NULL, 1, NULL));
    free_all(out, 1);
    kn_tensor *all[] = {qt, kt, vt, bias, ab, kpm, kb, vb, bb};
    free_all(all, 9);
    kn_threadpool_free(pool);
}
END_TEST

/* Static inference with unknown dims propagates -1 instead of failing. */
START_TEST(test_infer_unknown_dims) {
    kn_tensor q = {0}, k = {0}, v = {0}, o[4] = {{0}};
    q.dtype = k.dtype = v.dtype = KN_F32;
    int64_t dq[3] = {-1, -1, 8}, dk[3] = {-1, -1, 8};
    kn_tensor_set_shape(&q, 3, dq);
    kn_tensor_set_shape(&k, 3, dk);
    kn_tensor_set_shape(&v, 3, dk);
    kn_attr at[1] = {attr_i("num_heads", 2)};
    const kn_tensor *in[3] = {&q, &k, &v};
    kn_tensor *out[4] = {&o[0], &o[1], &o[2], &o[3]};
    ck_assert_ptr_null(kn_test_infer(KN_OP_MsMultiHeadAttention, 17, at, 1, in, 3, out, 4));
    ck_assert_int_eq(o[0].ndim, 3);
    ck_assert_int_eq(o[0].dims[0], -1);
    ck_assert_int_eq(o[0].dims[2], 8);
    ck_assert_int_eq(o[1].dims[2], -1);
    ck_assert_int_eq(o[1].dims[3], 4);
}
END_TEST

int main(void) {
    Suite *s = suite_create("contrib");
    TCase *tc = tcase_create("contrib");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_gelu_family);
    tcase_add_test(tc, test_gemm_fast_gelu);
    tcase_add_test(tc, test_skip_layer_norm);
    tcase_add_test(tc, test_embed_layer_norm);
    tcase_add_test(tc, test_dynamic_quantize_lstm);
    tcase_add_test(tc, test_attention_fused);
    tcase_add_test(tc, test_multi_head_attention);
    tcase_add_test(tc, test_infer_unknown_dims);
    suite_add_tcase(s, tc);
    return kn_test_run_suite(s);
}
