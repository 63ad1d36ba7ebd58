/* Unit tests for the attention, recurrent, quantisation, signal, random and string ops: Attention
 * against a naive double-precision reference (causal, float / bool masks, GQA, past KV, 3-D
 * inputs, softcap, odd sizes, more query rows than one block), LSTM / GRU against values from
 * onnxruntime, Quantize / Dequantize rounding, saturation and round trips, DFT against a direct
 * sum, seeded random draws against numpy's RandomState, and the string ops. */
#include "tests/unit/harness.h"
#include "runtime/core/dtype.h"

static uint32_t rng_state = 987654321u;
static float frand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xFFFF) / 65536.0f * 2.0f - 1.0f;
}

static kn_tensor *mk_rand(int nd, const int64_t *dims) {
    kn_tensor *x = mk(KN_F32, nd, dims, NULL);
    for (int64_t i = 0; i < kn_numel(x); i++) ((float *)x->data)[i] = frand();
    return x;
}

/* ---- Attention ---- */

typedef struct attn_case {
    int rank; /* 3 or 4 */
    int64_t B, Hq, Hkv, Sq, Skv, D, Dv, past;
    int causal;
    int mask_kind; /* 0 none, 1 float [Sq, T], 2 bool [B,1,Sq,T], 3 float [Hq,Sq,T] */
    float softcap;
    int qk_mode;
} attn_case;

/* The spec written out in plain loops, in double; tensors are 4-D float [B,H,S,D] (Q in
 * [B,Hq,Sq,D]) with K/V already holding past + new positions. */
static void attn_reference(const attn_case *c, const float *q, const float *k, const float *v, const float *mask,
                           const uint8_t *bmask, double *y, double *qk) {
    int64_t T = c->past + c->Skv;
    double scale = 1.0 / sqrt((double)c->D);
    double *s = malloc(sizeof(double) * (size_t)T), *bias = malloc(sizeof(double) * (size_t)T);
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t h = 0; h < c->Hq; h++)
            for (int64_t i = 0; i < c->Sq; i++) {
                int64_t kh = h / (c->Hq / c->Hkv);
                bool all = true;
                for (int64_t t = 0; t < T; t++) {
                    double acc = 0;
                    for (int64_t d = 0; d < c->D; d++)
                        acc += (double)q[((b * c->Hq + h) * c->Sq + i) * c->D + d] *
                            k[((b * c->Hkv + kh) * T + t) * c->D + d];
                    acc *= scale;
                    if (c->softcap > 0) acc = c->softcap * tanh(acc / c->softcap);
                    s[t] = acc;
                    double bb = 0;
                    if (c->mask_kind == 1) bb = mask[i * T + t];
                    if (c->mask_kind == 3) bb = mask[(h * c->Sq + i) * T + t];
                    if (c->mask_kind == 2 && !bmask[(b * c->Sq + i) * T + t]) bb = -INFINITY;
                    if (c->causal && t > i + c->past) bb = -INFINITY;
                    bias[t] = bb;
                    if (!isinf(bb)) all = false;
                }
                double *qrow = qk + ((b * c->Hq + h) * c->Sq + i) * T;
                for (int64_t t = 0; t < T; t++) qrow[t] = c->qk_mode == 2 ? s[t] + bias[t] : s[t];
                double mx = -INFINITY, sum = 0;
                for (int64_t t = 0; t < T; t++)
                    if (s[t] + bias[t] > mx) mx = s[t] + bias[t];
                for (int64_t t = 0; t < T; t++) {
                    s[t] = all ? 0 : exp(s[t] + bias[t] - mx);
                    sum += s[t];
                }
                for (int64_t t = 0; t < T; t++) s[t] = all ? 0 : s[t] / sum;
                if (c->qk_mode == 3)
                    for (int64_t t = 0; t < T; t++) qrow[t] = s[t];
                for (int64_t d = 0; d < c->Dv; d++) {
                    double acc = 0;
                    for (int64_t t = 0; t < T; t++) acc += s[t] * v[((b * c->Hkv + kh) * T + t) * c->Dv + d];
                    y[((b * c->Hq + h) * c->Sq + i) * c->Dv + d] = acc;
                }
            }
    free(s);
    free(bias);
}

/* Reorders a [B,H,S,D] float array into the 3-D [B,S,H*D] layout. */
static void to_3d(const float *src, float *dst, int64_t B, int64_t H, int64_t S, int64_t D) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t s = 0; s < S; s++)
                for (int64_t d = 0; d < D; d++) dst[((b * S + s) * H + h) * D + d] = src[((b * H + h) * S + s) * D + d];
}

static void run_attn_case(const attn_case *c, kn_threadpool *pool) {
    int64_t T = c->past + c->Skv;
    size_t nq = (size_t)(c->B * c->Hq * c->Sq * c->D), nk = (size_t)(c->B * c->Hkv * T * c->D),
           nv = (size_t)(c->B * c->Hkv * T * c->Dv);
    float *q = malloc(sizeof(float) * nq), *k = malloc(sizeof(float) * nk), *v = malloc(sizeof(float) * nv);
    for (size_t i = 0; i < nq; i++) q[i] = frand() * 2;
    for (size_t i = 0; i < nk; i++) k[i] = frand() * 2;
    for (size_t i = 0; i < nv; i++) v[i] = frand();
    float *mask = malloc(sizeof(float) * (size_t)(c->Hq * c->Sq * T + 1));
    uint8_t *bmask = malloc((size_t)(c->B * c->Sq * T + 1));
    for (int64_t i = 0; i < c->Hq * c->Sq * T; i++) mask[i] = frand();
    for (int64_t i = 0; i < c->B * c->Sq * T; i++) bmask[i] = (uint8_t)((i * 7 + 3) % 5 != 0);
    if (c->mask_kind == 2)
        for (int64_t t = 0; t < T; t++) bmask[t] = 0; /* one fully masked row */
    /* inputs: new K/V positions are the tail of the reference arrays */
    kn_tensor *in[6] = {0};
    int64_t dq[4] = {c->B, c->Hq, c->Sq, c->D}, dk[4] = {c->B, c->Hkv, c->Skv, c->D},
            dv[4] = {c->B, c->Hkv, c->Skv, c->Dv};
    int64_t dpk[4] = {c->B, c->Hkv, c->past, c->D}, dpv[4] = {c->B, c->Hkv, c->past, c->Dv};
    in[0] = mk(KN_F32, 4, dq, NULL);
    memcpy(in[0]->data, q, sizeof(float) * nq);
    in[1] = mk(KN_F32, 4, dk, NULL);
    in[2] = mk(KN_F32, 4, dv, NULL);
    for (int64_t bh = 0; bh < c->B * c->Hkv; bh++) {
        memcpy((float *)in[1]->data + bh * c->Skv * c->D, k + (bh * T + c->past) * c->D,
               sizeof(float) * (size_t)(c->Skv * c->D));
        memcpy((float *)in[2]->data + bh * c->Skv * c->Dv, v + (bh * T + c->past) * c->Dv,
               sizeof(float) * (size_t)(c->Skv * c->Dv));
    }
    if (c->past) {
        in[4] = mk(KN_F32, 4, dpk, NULL);
        in[5] = mk(KN_F32, 4, dpv, NULL);
        for (int64_t bh = 0; bh < c->B * c->Hkv; bh++) {
            memcpy((float *)in[4]->data + bh * c->past * c->D, k + bh * T * c->D,
                   sizeof(float) * (size_t)(c->past * c->D));
            memcpy((float *)in[5]->data + bh * c->past * c->Dv, v + bh * T * c->Dv,
                   sizeof(float) * (size_t)(c->past * c->Dv));
        }
    }
    if (c->mask_kind == 1) {
        int64_t d[2] = {c->Sq, T};
        in[3] = mk(KN_F32, 2, d, NULL);
        memcpy(in[3]->data, mask, sizeof(float) * (size_t)(c->Sq * T));
    }
    if (c->mask_kind == 3) {
        int64_t d[3] = {c->Hq, c->Sq, T};
        in[3] = mk(KN_F32, 3, d, NULL);
        memcpy(in[3]->data, mask, sizeof(float) * (size_t)(c->Hq * c->Sq * T));
    }
    if (c->mask_kind == 2) {
        int64_t d[4] = {c->B, 1, c->Sq, T};
        in[3] = mk(KN_BOOL, 4, d, NULL);
        memcpy(in[3]->data, bmask, (size_t)(c->B * c->Sq * T));
    }
    kn_attr at[6];
    int na = 0;
    at[na++] = attr_i("is_causal", c->causal);
    at[na++] = attr_i("qk_matmul_output_mode", c->qk_mode);
    if (c->softcap > 0) at[na++] = attr_f("softcap", c->softcap);
    if (c->rank == 3) {
        at[na++] = attr_i("q_num_heads", c->Hq);
        at[na++] = attr_i("kv_num_heads", c->Hkv);
        for (int i = 0; i < 3; i++) {
            int64_t H = i == 0 ? c->Hq : c->Hkv, S = i == 0 ? c->Sq : c->Skv, D = i == 2 ? c->Dv : c->D;
            float *tmp = malloc(sizeof(float) * (size_t)(kn_numel(in[i]) + 1));
            to_3d(in[i]->data, tmp, c->B, H, S, D);
            int64_t d3[3] = {c->B, S, H * D};
            kn_tensor *t3 = mk(KN_F32, 3, d3, NULL);
            memcpy(t3->data, tmp, sizeof(float) * (size_t)kn_numel(t3));
            free(tmp);
            kn_tensor_free(in[i]);
            in[i] = t3;
        }
    }
    kn_tensor *out[4];
    kn_status *st = kn_test_run_op(KN_OP_Attention, 24, at, na, in, 6, out, NULL, 4, pool);
    ck_assert_msg(st == NULL, "attention failed: %s", st ? kn_status_message(st) : "");
    double *y = malloc(sizeof(double) * (size_t)(c->B * c->Hq * c->Sq * c->Dv + 1));
    double *qk = malloc(sizeof(double) * (size_t)(c->B * c->Hq * c->Sq * T + 1));
    attn_reference(c, q, k, v, mask, bmask, y, qk);
    int64_t ny = c->B * c->Hq * c->Sq * c->Dv;
    if (c->rank == 3) {
        ck_assert_int_eq(out[0]->ndim, 3);
        float *yf = malloc(sizeof(float) * (size_t)(ny + 1));
        for (int64_t i = 0; i < ny; i++) yf[i] = (float)y[i];
        float *y3 = malloc(sizeof(float) * (size_t)(ny + 1));
        to_3d(yf, y3, c->B, c->Hq, c->Sq, c->Dv);
        for (int64_t i = 0; i < ny; i++) y[i] = y3[i];
        free(yf);
        free(y3);
    } else {
        ck_assert_int_eq(out[0]->ndim, 4);
    }
    expect_close(out[0], y, ny, 2e-5, 2e-5, "Y");
    expect_close(out[3], qk, c->B * c->Hq * c->Sq * T, 2e-5, 2e-5, "qk");
    ck_assert_int_eq(out[1]->dims[2], T);
    for (int64_t i = 0; i < (int64_t)nk; i++) ck_assert(((float *)out[1]->data)[i] == k[i]);
    for (int64_t i = 0; i < (int64_t)nv; i++) ck_assert(((float *)out[2]->data)[i] == v[i]);
    /* Y alone (the causal path then skips fully masked key blocks) must agree */
    kn_tensor *y_only[1];
    st = kn_test_run_op(KN_OP_Attention, 24, at, na, in, 6, y_only, NULL, 1, pool);
    ck_assert_msg(st == NULL, "attention (Y only) failed: %s", st ? kn_status_message(st) : "");
    expect_close(y_only[0], y, ny, 2e-5, 2e-5, "Y only");
    free_all(y_only, 1);
    free(y);
    free(qk);
    free(q);
    free(k);
    free(v);
    free(mask);
    free(bmask);
    free_all(out, 4);
    free_all(in, 6);
}

START_TEST(test_attention_vs_reference) {
    kn_threadpool *pool = kn_threadpool_create(3);
    static const attn_case cases[] = {
        {4, 2, 3, 3, 4, 6, 8, 8, 0, 0, 0, 0, 0},
        {4, 2, 3, 3, 4, 4, 8, 8, 0, 1, 0, 0, 3},    /* causal, probabilities out */
        {4, 1, 4, 2, 5, 7, 3, 5, 0, 0, 1, 0, 2},    /* GQA, odd sizes, float mask, bias out */
        {4, 2, 2, 1, 3, 2, 4, 4, 3, 1, 2, 0, 0},    /* past KV, causal, bool mask with a dead row */
        {3, 2, 4, 2, 3, 5, 4, 6, 2, 0, 3, 0, 1},    /* 3-D inputs, past, per-head mask */
        {4, 1, 2, 2, 3, 3, 4, 4, 0, 0, 0, 1.5f, 1}, /* softcap */
        {4, 1, 2, 1, 70, 75, 16, 8, 5, 1, 0, 0, 0}, /* more query rows than one block */
        {4, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_attn_case(&cases[i], i % 2 ? pool : NULL);
    kn_threadpool_free(pool);
}
END_TEST

START_TEST(test_attention_half_precision) {
    /* float16 / bfloat16 inputs round every step like the reference; compare loosely with the
     * double reference run on the same (already rounded) values */
    attn_case c = {4, 1, 2, 2, 5, 5, 8, 8, 0, 1, 0, 0, 3};
    int64_t d[4] = {1, 2, 5, 8};
    size_t n = 80;
    float q[80], k[80], v[80];
    for (int dt = 0; dt < 2; dt++) {
        kn_dtype t = dt ? KN_BF16 : KN_F16;
        kn_tensor *in[3];
        float *src[3] = {q, k, v};
        for (int i = 0; i < 3; i++) {
            in[i] = mk(t, 4, d, NULL);
            for (size_t e = 0; e < n; e++) {
                float x = frand();
                uint16_t hbits = dt ? kn_f32_to_bf16(x) : kn_f32_to_f16(x);
                ((uint16_t *)in[i]->data)[e] = hbits;
                src[i][e] = dt ? kn_bf16_to_f32(hbits) : kn_f16_to_f32(hbits);
            }
        }
        kn_attr at[2] = {attr_i("is_causal", 1), attr_i("qk_matmul_output_mode", 3)};
        kn_tensor *out[4];
        ck_assert_ptr_null(kn_test_run_op(KN_OP_Attention, 23, at, 2, in, 3, out, NULL, 4, NULL));
        ck_assert_int_eq(out[0]->dtype, t);
        double y[80], qk[50];
        attn_reference(&c, q, k, v, NULL, NULL, y, qk);
        double tol = dt ? 2e-2 : 4e-3;
        expect_close(out[0], y, 80, tol, tol, "half Y");
        expect_close(out[3], qk, 50, tol, tol, "half probabilities");
        free_all(out, 4);
        free_all(in, 3);
    }
}
END_TEST

START_TEST(test_attention_rejects_bad_shapes) {
    int64_t dq[4] = {1, 3, 2, 4}, dk[4] = {1, 2, 2, 4}, dk2[4] = {1, 3, 2, 5};
    kn_tensor *in[3] = {mk_rand(4, dq), mk_rand(4, dk), mk_rand(4, dk)};
    kn_tensor *out[1];
    kn_status *st =
        kn_test_run_op(KN_OP_Attention, 23, NULL, 0, in, 3, out, NULL, 1, NULL); /* 3 q heads over 2 kv heads */
    ck_assert_ptr_nonnull(st);
    kn_status_free(st);
    free_all(out, 1);
    kn_tensor_free(in[1]);
    in[1] = mk_rand(4, dk2);
    kn_tensor_free(in[2]);
    in[2] = mk_rand(4, dk2);
    st = kn_test_run_op(KN_OP_Attention, 23, NULL, 0, in, 3, out, NULL, 1, NULL); /* head sizes differ */
    ck_assert_ptr_nonnull(st);
    kn_status_free(st);
    free_all(out, 1);
    free_all(in, 3);
}
END_TEST

START_TEST(test_rotary_embedding) {
    /* one head of size 4, two positions; rotation by the given cos/sin */
    int64_t dx[4] = {1, 1, 2, 4}, dc[2] = {3, 2}, dp[2] = {1, 2};
    double xv[8] = {1, 2, 3, 4, 5, 6, 7, 8}, cv[6] = {1, 1, 0, 0, 0.5, 0.5}, sv[6] = {0, 0, 1, 1, 0.5, 0.5},
           pv[2] = {2, 1};
    kn_tensor *in[4] = {mk(KN_F32, 4, dx, xv), mk(KN_F32, 2, dc, cv), mk(KN_F32, 2, dc, sv), mk(KN_I64, 2, dp, pv)};
    kn_tensor *out[1];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_RotaryEmbedding, 23, NULL, 0, in, 4, out, NULL, 1, NULL));
    /* pos 2: c=s=0.5: x1=(1,2), x2=(3,4) -> (0.5-1.5, 1-2, 0.5+1.5, 1+2); pos 1: c=0, s=1 -> (-7,-8,5,6) */
    double want[8] = {-1, -1, 2, 3, -7, -8, 5, 6};
    expect_close(out[0], want, 8, 1e-6, 1e-6, "rope");
    free_all(out, 1);
    kn_attr at[1] = {attr_i("interleaved", 1)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_RotaryEmbedding, 23, at, 1, in, 4, out, NULL, 1, NULL));
    /* interleaved pairs (1,2),(3,4) at c=s=0.5 -> (-0.5,1.5,-0.5,3.5); (5,6),(7,8) at c=0,s=1 -> (-6,5,-8,7) */
    double want2[8] = {-0.5, 1.5, -0.5, 3.5, -6, 5, -8, 7};
    expect_close(out[0], want2, 8, 1e-6, 1e-6, "rope interleaved");
    free_all(out, 1);
    ((int64_t *)in[3]->data)[0] = 3; /* beyond the cache */
    kn_status *st = kn_test_run_op(KN_OP_RotaryEmbedding, 23, NULL, 0, in, 4, out, NULL, 1, NULL);
    ck_assert_ptr_nonnull(st);
    kn_status_free(st);
    free_all(out, 1);
    free_all(in, 4);
}
END_TEST

/* ---- recurrent ops, expected values from onnxruntime ---- */

static void rnn_inputs(double *x, double *w, double *r, double *b, double *p, int H) {
    for (int i = 0; i < 12; i++) x[i] = i * 0.1 - 0.5;
    int nw = 4 * H * 2, nr = 4 * H * H, nb = 8 * H, np_ = 3 * H;
    for (int i = 0; i < nw; i++) w[i] = -0.5 + (double)i / (nw - 1);
    for (int i = 0; i < nr; i++) r[i] = 0.3 - 0.6 * (double)i / (nr - 1);
    for (int i = 0; i < nb; i++) b[i] = -0.2 + 0.4 * (double)i / (nb - 1);
    for (int i = 0; i < np_; i++) p[i] = 0.1 + 0.2 * (double)i / (np_ - 1);
}

START_TEST(test_lstm_peepholes) {
    enum { H = 3 };
    double x[12], w[24], r[36], b[24], p[9];
    rnn_inputs(x, w, r, b, p, H);
    int64_t dx[3] = {3, 2, 2}, dw[3] = {1, 4 * H, 2}, dr[3] = {1, 4 * H, H}, db[2] = {1, 8 * H}, dp[2] = {1, 3 * H};
    kn_tensor *in[8] = {
        mk(KN_F32, 3, dx, x), mk(KN_F32, 3, dw, w), mk(KN_F32, 3, dr, r), mk(KN_F32, 2, db, b), NULL, NULL, NULL,
        mk(KN_F32, 2, dp, p)};
    kn_attr at[1] = {attr_i("hidden_size", H)};
    kn_tensor *out[3];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_LSTM, 14, at, 1, in, 8, out, NULL, 3, NULL));
    static const double y[18] = {-0.04359481483697891, -0.053506091237068176, -0.062175214290618896,
                                 -0.00731675885617733, -0.009478442370891571, -0.011596543714404106,
                                 0.006410067435353994, 0.008893161080777645,  0.011806702241301537,
                                 0.038407664746046066, 0.052240848541259766,  0.06733797490596771,
                                 0.05635807290673256,  0.07941628247499466,   0.1055261492729187,
                                 0.07735618203878403,  0.11240529268980026,   0.15308086574077606};
    static const double yc[6] = {0.12665605545043945, 0.16926290094852448, 0.2139320820569992,
                                 0.18088509142398834, 0.24557863175868988, 0.3144134283065796};
    expect_close(out[0], y, 18, 1e-5, 1e-5, "lstm Y");
    expect_close(out[1], y + 12, 6, 1e-5, 1e-5, "lstm Y_h");
    expect_close(out[2], yc, 6, 1e-5, 1e-5, "lstm Y_c");
    free_all(out, 3);
    free_all(in, 8);
}
END_TEST

/* The LSTM cell's vector path (default activations, no clip) against its scalar path, which a
 * clip too large to bind selects with the same math: bidirectional, peepholes, initial states
 * and sequence lengths, over hidden sizes that leave every vector tail. */
START_TEST(test_lstm_vector_cell) {
    static const int Hs[] = {1, 7, 16, 33};
    for (int hi = 0; hi < 4; hi++) {
        int64_t H = Hs[hi], S = 5, Bn = 3, I = 4, D = 2;
        int64_t dx[3] = {S, Bn, I}, dw[3] = {D, 4 * H, I}, dr[3] = {D, 4 * H, H}, db[2] = {D, 8 * H}, dsl[1] = {Bn},
                dh[3] = {D, Bn, H}, dp[2] = {D, 3 * H};
        kn_tensor *in[8] = {mk(KN_F32, 3, dx, NULL), mk(KN_F32, 3, dw, NULL),  mk(KN_F32, 3, dr, NULL),
                            mk(KN_F32, 2, db, NULL), mk(KN_I32, 1, dsl, NULL), mk(KN_F32, 3, dh, NULL),
                            mk(KN_F32, 3, dh, NULL), mk(KN_F32, 2, dp, NULL)};
        uint32_t st = 12345u + (uint32_t)H;
        for (int t = 0; t < 8; t++) {
            if (t == 4) continue;
            for (int64_t i = 0; i < kn_numel(in[t]); i++) {
                st = st * 1664525u + 1013904223u;
                kn_set_f64(in[t], i, ((double)(st >> 8) / 16777216.0 * 2.0 - 1.0) * (t == 0 ? 2.0 : 0.6));
            }
        }
        const double sl[3] = {5, 2, 4};
        for (int b = 0; b < 3; b++) kn_set_f64(in[4], b, sl[b]);
        kn_attr at[3] = {attr_i("hidden_size", H), attr_s("direction", "bidirectional"), attr_f("clip", 1e30f)};
        kn_tensor *vo[3], *so[3];
        ck_assert_ptr_null(kn_test_run_op(KN_OP_LSTM, 14, at, 2, in, 8, vo, NULL, 3, NULL));
        ck_assert_ptr_null(kn_test_run_op(KN_OP_LSTM, 14, at, 3, in, 8, so, NULL, 3, NULL));
        for (int o = 0; o < 3; o++) {
            ck_assert_int_eq(kn_numel(vo[o]), kn_numel(so[o]));
            for (int64_t i = 0; i < kn_numel(vo[o]); i++) {
                double a = kn_get_f64(vo[o], i), e = kn_get_f64(so[o], i);
                FAST_ASSERT(fabs(a - e) <= 1e-5 * (1 + fabs(e)), "H %lld out %d [%lld]: %g vs %g", (long long)H, o,
                            (long long)i, a, e);
            }
        }
        ck_assert(fabs(kn_get_f64(so[1], 0)) > 1e-3); /* the state is not trivially zero */
        free_all(vo, 3);
        free_all(so, 3);
        free_all(in, 8);
    }
}
END_TEST

START_TEST(test_gru_bidirectional_seqlens) {
    enum { H = 3 };
    double x[12], w4[24], r4[36], b4[24], p[9];
    rnn_inputs(x, w4, r4, b4, p, H);
    /* GRU weights: the first 3H rows of the LSTM ones, the reverse direction scaled */
    double w[2 * 18], r[2 * 27], b[2 * 18];
    for (int i = 0; i < 18; i++) {
        w[i] = w4[i];
        w[18 + i] = w4[i] * 0.5;
    }
    for (int i = 0; i < 27; i++) {
        r[i] = r4[i];
        r[27 + i] = -r4[i];
    }
    for (int i = 0; i < 9; i++) {
        b[i] = b4[i];
        b[9 + i] = b4[12 + i];
    }
    memcpy(b + 18, b, sizeof(double) * 18);
    int64_t dx[3] = {3, 2, 2}, dw[3] = {2, 3 * H, 2}, dr[3] = {2, 3 * H, H}, db[2] = {2, 6 * H}, ds[1] = {2};
    double sl[2] = {3, 2};
    kn_tensor *in[5] = {mk(KN_F32, 3, dx, x), mk(KN_F32, 3, dw, w), mk(KN_F32, 3, dr, r), mk(KN_F32, 2, db, b),
                        mk(KN_I32, 1, ds, sl)};
    static const double y0[36] = {-0.008606908842921257,
                                  -0.028376370668411255,
                                  -0.04897354915738106,
                                  -0.0010597840882837772,
                                  -0.005322347395122051,
                                  -0.00962189119309187,
                                  0.01040396187454462,
                                  0.027970338240265846,
                                  0.04500429704785347,
                                  0.011727417819201946,
                                  0.032627835869789124,
                                  0.052983373403549194,
                                  0.005061295349150896,
                                  0.010714340023696423,
                                  0.015207324177026749,
                                  0.018736641854047775,
                                  0.051059894263744354,
                                  0.08099350333213806,
                                  0.01937362179160118,
                                  0.05490357428789139,
                                  0.08921656012535095,
                                  0.01412498764693737,
                                  0.04022569581866264,
                                  0.06501562893390656,
                                  0.032878316938877106,
                                  0.09085012972354889,
                                  0.14284521341323853,
                                  0.0,
                                  0.0,
                                  0.0,
                                  0.01982109621167183,
                                  0.056451790034770966,
                                  0.09053535759449005,
                                  0.0,
                                  0.0,
                                  0.0};
    static const double yh0[12] = {0.032878316938877106, 0.09085012972354889,  0.14284521341323853,
                                   0.018736641854047775, 0.051059894263744354, 0.08099350333213806,
                                   0.01040396187454462,  0.027970338240265846, 0.04500429704785347,
                                   0.011727417819201946, 0.032627835869789124, 0.052983373403549194};
    static const double y1[36] = {-0.03204164281487465,
                                  -0.0565185546875,
                                  -0.08198180794715881,
                                  -0.028253143653273582,
                                  -0.03694458678364754,
                                  -0.045726172626018524,
                                  -0.04310177266597748,
                                  -0.035236090421676636,
                                  -0.02769012749195099,
                                  -0.03502844274044037,
                                  -0.0214509479701519,
                                  -0.00804973766207695,
                                  -0.03702215850353241,
                                  -0.03614865615963936,
                                  -0.036301176995038986,
                                  -0.027562687173485756,
                                  0.0010577850043773651,
                                  0.027834566310048103,
                                  -0.02983471378684044,
                                  -0.0013190163299441338,
                                  0.026766296476125717,
                                  -0.01969546265900135,
                                  0.002935815369710326,
                                  0.02483413554728031,
                                  -0.021350249648094177,
                                  0.03444458544254303,
                                  0.0852878987789154,
                                  0.0,
                                  0.0,
                                  0.0,
                                  -0.016115769743919373,
                                  0.017483249306678772,
                                  0.04943164810538292,
                                  0.0,
                                  0.0,
                                  0.0};
    static const double yh1[12] = {-0.021350249648094177, 0.03444458544254303,   0.0852878987789154,
                                   -0.027562687173485756, 0.0010577850043773651, 0.027834566310048103,
                                   -0.04310177266597748,  -0.035236090421676636, -0.02769012749195099,
                                   -0.03502844274044037,  -0.0214509479701519,   -0.00804973766207695};
    for (int lbr = 0; lbr < 2; lbr++) {
        kn_attr at[3] = {attr_i("hidden_size", H), attr_i("linear_before_reset", lbr),
                         attr_s("direction", "bidirectional")};
        kn_tensor *out[2];
        ck_assert_ptr_null(kn_test_run_op(KN_OP_GRU, 14, at, 3, in, 5, out, NULL, 2, NULL));
        expect_close(out[0], lbr ? y1 : y0, 36, 1e-5, 1e-5, "gru Y");
        expect_close(out[1], lbr ? yh1 : yh0, 12, 1e-5, 1e-5, "gru Y_h");
        free_all(out, 2);
    }
    free_all(in, 5);
}
END_TEST

START_TEST(test_rnn_simple_and_layout) {
    /* hidden 1, input 1, W=1, R=0.5, tanh: h1 = tanh(x1), h2 = tanh(x2 + 0.5 h1) */
    int64_t dx[3] = {2, 1, 1}, dw[3] = {1, 1, 1};
    double xv[2] = {0.3, -0.2}, wv[1] = {1}, rv[1] = {0.5};
    kn_tensor *in[3] = {mk(KN_F32, 3, dx, xv), mk(KN_F32, 3, dw, wv), mk(KN_F32, 3, dw, rv)};
    kn_tensor *out[2];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_RNN, 14, NULL, 0, in, 3, out, NULL, 2, NULL));
    double h1 = tanh(0.3), h2 = tanh(-0.2 + 0.5 * h1), want[2] = {h1, h2};
    expect_close(out[0], want, 2, 1e-6, 1e-6, "rnn Y");
    expect_close(out[1], want + 1, 1, 1e-6, 1e-6, "rnn Y_h");
    free_all(out, 2);
    /* layout 1 with batch 1 and seq 2: X is [1, 2, 1], same numbers */
    in[0]->dims[0] = 1;
    in[0]->dims[1] = 2;
    kn_attr at[1] = {attr_i("layout", 1)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_RNN, 14, at, 1, in, 3, out, NULL, 2, NULL));
    ck_assert_int_eq(out[0]->dims[0], 1);
    ck_assert_int_eq(out[0]->dims[1], 2);
    expect_close(out[0], want, 2, 1e-6, 1e-6, "rnn Y layout 1");
    free_all(out, 2);
    free_all(in, 3);
}
END_TEST

/* ---- quantisation ---- */

START_TEST(test_quantize_rounding_and_saturation) {
    int64_t d[1] = {9}, s1[1] = {0};
    double xv[9] = {0.5, 1.5, 2.5, -0.5, -1.5, 1000, -1000, 3.2, NAN};
    double sv[1] = {1}, zv[1] = {10};
    kn_tensor *in[3] = {mk(KN_F32, 1, d, xv), mk(KN_F32, 0, s1, sv), mk(KN_U8, 0, s1, zv)};
    kn_tensor *out[1];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_QuantizeLinear, 21, NULL, 0, in, 3, out, NULL, 1, NULL));
    ck_assert_int_eq(out[0]->dtype, KN_U8);
    double want[9] = {10, 12, 12, 10, 8, 255, 0, 13, 10}; /* half to even, then + zero point, saturated */
    expect_close(out[0], want, 9, 0, 0, "q uint8");
    free_all(out, 1);
    kn_tensor_free(in[2]);
    in[2] = mk(KN_I4, 0, s1, (double[]){0});
    ck_assert_ptr_null(kn_test_run_op(KN_OP_QuantizeLinear, 21, NULL, 0, in, 3, out, NULL, 1, NULL));
    double want4[9] = {0, 2, 2, -0, -2, 7, -8, 3, 0};
    expect_close(out[0], want4, 9, 0, 0, "q int4");
    free_all(out, 1);
    free_all(in, 3);
}
END_TEST

START_TEST(test_quantize_axis_blocked_round_trip) {
    /* x [2, 4]; per-axis scales on axis 1 and blocked scales (block 2) on axis 1 */
    int64_t dx[2] = {2, 4}, ds[1] = {4}, db[2] = {2, 2};
    double xv[8] = {-1.0, 0.3, 2.0, 7.7, 0.25, -0.6, 1.1, -3.3};
    double sv[4] = {0.01, 0.02, 0.05, 0.1}, zv[4] = {0, -3, 5, 1}, bs[4] = {0.01, 0.05, 0.02, 0.1},
           bz[4] = {1, -2, 0, 3};
    kn_tensor *q_in[3] = {mk(KN_F32, 2, dx, xv), mk(KN_F32, 1, ds, sv), mk(KN_I8, 1, ds, zv)};
    kn_tensor *q_out[1], *d_out[1];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_QuantizeLinear, 21, NULL, 0, q_in, 3, q_out, NULL, 1, NULL));
    ck_assert_int_eq(q_out[0]->dtype, KN_I8);
    kn_tensor *d_in[3] = {q_out[0], q_in[1], q_in[2]};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_DequantizeLinear, 21, NULL, 0, d_in, 3, d_out, NULL, 1, NULL));
    for (int i = 0; i < 8; i++) {
        double s = sv[i % 4], qv = xv[i] / s + zv[i % 4];
        if (qv >= -128.5 && qv <= 127.5) ck_assert(fabs(kn_get_f64(d_out[0], i) - xv[i]) <= s / 2 + 1e-6);
        else ck_assert(fabs(kn_get_f64(q_out[0], i)) >= 127); /* saturated */
    }
    free_all(d_out, 1);
    free_all(q_out, 1);
    kn_tensor_free(q_in[1]);
    kn_tensor_free(q_in[2]);
    q_in[1] = mk(KN_F32, 2, db, bs);
    q_in[2] = mk(KN_I8, 2, db, bz);
    kn_attr at[2] = {attr_i("axis", 1), attr_i("block_size", 2)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_QuantizeLinear, 21, at, 2, q_in, 3, q_out, NULL, 1, NULL));
    /* element (r, c) uses scale/zero point (r, c / 2) */
    for (int i = 0; i < 8; i++) {
        int r = i / 4, c = i % 4;
        double s = bs[r * 2 + c / 2], z = bz[r * 2 + c / 2];
        double want = nearbyint(xv[i] / s) + z;
        want = want > 127 ? 127 : want < -128 ? -128 : want;
        ck_assert_msg(kn_get_f64(q_out[0], i) == want, "blocked %d: %g vs %g", i, kn_get_f64(q_out[0], i), want);
    }
    d_in[0] = q_out[0];
    d_in[1] = q_in[1];
    d_in[2] = q_in[2];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_DequantizeLinear, 21, at, 2, d_in, 3, d_out, NULL, 1, NULL));
    for (int i = 0; i < 8; i++) {
        int r = i / 4, c = i % 4;
        double s = bs[r * 2 + c / 2], z = bz[r * 2 + c / 2];
        ck_assert(fabs(kn_get_f64(d_out[0], i) - (kn_get_f64(q_out[0], i) - z) * s) < 1e-6);
    }
    free_all(d_out, 1);
    free_all(q_out, 1);
    /* a scale that matches neither layout is an error */
    kn_attr bad[2] = {attr_i("axis", 1), attr_i("block_size", 1)};
    kn_status *st = kn_test_run_op(KN_OP_QuantizeLinear, 21, bad, 2, q_in, 3, q_out, NULL, 1, NULL);
    ck_assert_ptr_nonnull(st);
    kn_status_free(st);
    free_all(q_out, 1);
    free_all(q_in, 3);
}
END_TEST

START_TEST(test_dynamic_quantize) {
    int64_t d[1] = {4};
    double xv[4] = {0, 2, -3, 255};
    kn_tensor *in[1] = {mk(KN_F32, 1, d, xv)};
    kn_tensor *out[3];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_DynamicQuantizeLinear, 11, NULL, 0, in, 1, out, NULL, 3, NULL));
    float scale = *(float *)out[1]->data;
    ck_assert(fabsf(scale - 258.0f / 255.0f) < 1e-6f);
    ck_assert_int_eq(*(uint8_t *)out[2]->data, 3);
    ck_assert_int_eq(((uint8_t *)out[0]->data)[2], 0);
    ck_assert_int_eq(((uint8_t *)out[0]->data)[3], 255);
    free_all(out, 3);
    free_all(in, 1);
}
END_TEST

/* ---- signal ---- */

START_TEST(test_dft_matches_direct_sum) {
    static const int lens[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 100, 257};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        int n = lens[li];
        int64_t d[3] = {2, n, 1};
        double *xv = malloc(sizeof(double) * (size_t)(2 * n));
        for (int i = 0; i < 2 * n; i++) xv[i] = frand();
        kn_tensor *in[3] = {mk(KN_F32, 3, d, xv), NULL, NULL};
        kn_tensor *out[1];
        ck_assert_ptr_null(kn_test_run_op(KN_OP_DFT, 20, NULL, 0, in, 3, out, NULL, 1, NULL));
        ck_assert_int_eq(out[0]->dims[2], 2);
        for (int b = 0; b < 2; b++)
            for (int k = 0; k < n; k++) {
                double re = 0, im = 0;
                for (int j = 0; j < n; j++) {
                    re += xv[b * n + j] * cos(-2 * M_PI * j * k / n);
                    im += xv[b * n + j] * sin(-2 * M_PI * j * k / n);
                }
                ck_assert_msg(fabs(kn_get_f64(out[0], (b * n + k) * 2) - re) < 1e-4 * (1 + n / 16), "n %d k %d re", n,
                              k);
                ck_assert_msg(fabs(kn_get_f64(out[0], (b * n + k) * 2 + 1) - im) < 1e-4 * (1 + n / 16), "n %d k %d im",
                              n, k);
            }
        /* onesided forward then onesided inverse restores the signal */
        kn_attr fw[1] = {attr_i("onesided", 1)};
        kn_tensor *spec[1];
        ck_assert_ptr_null(kn_test_run_op(KN_OP_DFT, 20, fw, 1, in, 3, spec, NULL, 1, NULL));
        ck_assert_int_eq(spec[0]->dims[1], n / 2 + 1);
        int64_t ld[1] = {1};
        kn_tensor *inv_in[2] = {spec[0], mk(KN_I64, 0, ld, (double[]){n})};
        kn_attr iv[2] = {attr_i("onesided", 1), attr_i("inverse", 1)};
        kn_tensor *back[1];
        ck_assert_ptr_null(kn_test_run_op(KN_OP_DFT, 20, iv, 2, inv_in, 2, back, NULL, 1, NULL));
        ck_assert_int_eq(back[0]->dims[2], 1);
        expect_close(back[0], xv, 2 * n, 1e-4, 1e-4, "irfft");
        free_all(back, 1);
        kn_tensor_free(inv_in[1]);
        free_all(spec, 1);
        free_all(out, 1);
        free_all(in, 1);
        free(xv);
    }
}
END_TEST

START_TEST(test_windows) {
    int64_t s1[1] = {0};
    kn_tensor *in[1] = {mk(KN_I64, 0, s1, (double[]){4})};
    kn_tensor *out[1];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_HannWindow, 17, NULL, 0, in, 1, out, NULL, 1, NULL));
    double hann[4] = {0, 0.5, 1, 0.5};
    expect_close(out[0], hann, 4, 1e-6, 1e-6, "hann periodic");
    free_all(out, 1);
    kn_attr sym[1] = {attr_i("periodic", 0)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_BlackmanWindow, 17, sym, 1, in, 1, out, NULL, 1, NULL));
    double bl[4] = {0, 0.63, 0.63, 0};
    expect_close(out[0], bl, 4, 1e-6, 1e-6, "blackman symmetric");
    free_all(out, 1);
    free_all(in, 1);
}
END_TEST

/* ---- random ---- */

START_TEST(test_random_matches_numpy_seeded) {
    int64_t d[1] = {8};
    double p[8] = {0.1, 0.5, 0.9, 0.3, 0.7, 0.0, 1.0, 0.45};
    kn_tensor *in[1] = {mk(KN_F32, 1, d, p)};
    kn_attr at[1] = {attr_f("seed", 0)};
    kn_tensor *out[1];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_Bernoulli, 22, at, 1, in, 1, out, NULL, 1, NULL));
    double want[8] = {0, 1, 1, 0, 1, 0, 1, 1}; /* numpy RandomState(0).binomial(1, p) */
    expect_close(out[0], want, 8, 0, 0, "bernoulli");
    free_all(out, 1);
    free_all(in, 1);
    int64_t shape[1] = {3};
    kn_attr ua[2] = {attr_f("seed", 3), {0}};
    ua[1].name = (char *)"shape";
    ua[1].type = KN_ATTR_INTS;
    ua[1].ints = shape;
    ua[1].n_ints = 1;
    ck_assert_ptr_null(kn_test_run_op(KN_OP_RandomUniform, 22, ua, 2, NULL, 0, out, NULL, 1, NULL));
    double u[3] = {0.5507979025745755, 0.7081478226181048, 0.2909047389129443};
    expect_close(out[0], u, 3, 1e-6, 1e-6, "uniform");
    free_all(out, 1);
    ck_assert_ptr_null(kn_test_run_op(KN_OP_RandomNormal, 22, ua, 2, NULL, 0, out, NULL, 1, NULL));
    double g[3] = {1.7886284734303186, 0.43650985051198943, 0.09649746807200862};
    expect_close(out[0], g, 3, 1e-6, 1e-6, "normal");
    free_all(out, 1);
}
END_TEST

/* ---- strings ---- */

START_TEST(test_string_ops) {
    int64_t d3[1] = {3}, d1[1] = {1};
    const char *words[3] = {"Monday", "tuesday", "MONDAY"};
    kn_tensor *x = mk_raw(KN_STRING, 1, d3, words);
    char *stops[1] = {(char *)"monday"};
    kn_attr at[2] = {attr_strings("stopwords", stops, 1), attr_s("case_change_action", "UPPER")};
    kn_tensor *out[2];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_StringNormalizer, 10, at, 2, &x, 1, out, NULL, 1, NULL));
    ck_assert_int_eq(out[0]->dims[0], 1);
    ck_assert_str_eq(((char **)out[0]->data)[0], "TUESDAY");
    free_all(out, 1);

    const char *suffix[1] = {"!"};
    kn_tensor *cin[2] = {x, mk_raw(KN_STRING, 1, d1, suffix)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_StringConcat, 20, NULL, 0, cin, 2, out, NULL, 1, NULL));
    ck_assert_int_eq(out[0]->dims[0], 3);
    ck_assert_str_eq(((char **)out[0]->data)[2], "MONDAY!");
    free_all(out, 1);
    kn_tensor_free(cin[1]);

    const char *lines[3] = {"a,b,,c", "", "x"};
    kn_tensor *s = mk_raw(KN_STRING, 1, d3, lines);
    kn_attr sa[2] = {attr_s("delimiter", ","), attr_i("maxsplit", 2)};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_StringSplit, 20, sa, 2, &s, 1, out, NULL, 2, NULL));
    ck_assert_int_eq(out[0]->ndim, 2);
    ck_assert_int_eq(out[0]->dims[1], 3);
    char **sp = out[0]->data;
    ck_assert_str_eq(sp[0], "a");
    ck_assert_str_eq(sp[1], "b");
    ck_assert_str_eq(sp[2], ",c");
    ck_assert_str_eq(sp[3], "");
    ck_assert_str_eq(sp[6], "x");
    ck_assert_str_eq(sp[8], "");
    ck_assert_int_eq(((int64_t *)out[1]->data)[0], 3);
    ck_assert_int_eq(((int64_t *)out[1]->data)[1], 1);
    free_all(out, 2);
    const char *ws[3] = {"  one  two three ", "   ", "x"};
    kn_tensor *w = mk_raw(KN_STRING, 1, d3, ws);
    ck_assert_ptr_null(kn_test_run_op(KN_OP_StringSplit, 20, NULL, 0, &w, 1, out, NULL, 2, NULL));
    ck_assert_int_eq(out[0]->dims[1], 3);
    ck_assert_str_eq(((char **)out[0]->data)[2], "three");
    ck_assert_int_eq(((int64_t *)out[1]->data)[1], 0);
    free_all(out, 2);

    const char *urls[3] = {"www.google.com", "www.bbc.co.uk", "xwww.a.com"};
    kn_tensor *u = mk_raw(KN_STRING, 1, d3, urls);
    kn_attr ra[1] = {attr_s("pattern", "www\\.[a-z.]+\\.com")};
    ck_assert_ptr_null(kn_test_run_op(KN_OP_RegexFullMatch, 20, ra, 1, &u, 1, out, NULL, 1, NULL));
    ck_assert_int_eq(((uint8_t *)out[0]->data)[0], 1);
    ck_assert_int_eq(((uint8_t *)out[0]->data)[1], 0);
    ck_assert_int_eq(((uint8_t *)out[0]->data)[2], 0);
    free_all(out, 1);
    kn_tensor_free(u);
    kn_tensor_free(w);
    kn_tensor_free(s);
    kn_tensor_free(x);
}
END_TEST

START_TEST(test_tfidf_bigrams_with_skip) {
    /* pool: unigrams {2,3}, bigrams {(2,3),(4,5)}; counts of each in a row with skips */
    int64_t d[1] = {6};
    double xv[6] = {2, 4, 3, 5, 2, 3};
    kn_tensor *in[1] = {mk(KN_I64, 1, d, xv)};
    int64_t counts[2] = {0, 2}, pool[6] = {2, 3, 2, 3, 4, 5}, idx[4] = {0, 1, 2, 3};
    kn_attr at[7] = {attr_s("mode", "TF"), attr_i("min_gram_length", 1), attr_i("max_gram_length", 2),
                     attr_i("max_skip_count", 1)};
    at[4] = (kn_attr){0};
    at[4].name = (char *)"ngram_counts";
    at[4].type = KN_ATTR_INTS;
    at[4].ints = counts;
    at[4].n_ints = 2;
    at[5] = (kn_attr){0};
    at[5].name = (char *)"pool_int64s";
    at[5].type = KN_ATTR_INTS;
    at[5].ints = pool;
    at[5].n_ints = 6;
    at[6] = (kn_attr){0};
    at[6].name = (char *)"ngram_indexes";
    at[6].type = KN_ATTR_INTS;
    at[6].ints = idx;
    at[6].n_ints = 4;
    kn_tensor *out[1];
    ck_assert_ptr_null(kn_test_run_op(KN_OP_TfIdfVectorizer, 9, at, 7, in, 1, out, NULL, 1, NULL));
    /* unigrams 2 x2, 3 x2; bigram (2,3): adjacent once (pos 4-5), skip-1 once (pos 0-2); (4,5): skip-1 once */
    double want[4] = {2, 2, 2, 1};
    expect_close(out[0], want, 4, 0, 0, "tfidf");
    free_all(out, 1);
    free_all(in, 1);
}
END_TEST

/* ---- bad inputs are errors, not crashes ---- */

static void expect_error(int op, int opset, kn_attr *at, int na, kn_tensor **in, int n_in, int n_out,
                         const char *what) {
    kn_tensor *out[4] = {0};
    kn_status *st = kn_test_run_op(op, opset, at, na, in, n_in, out, NULL, n_out, NULL);
    ck_assert_msg(st != NULL, "%s: expected an error", what);
    kn_status_free(st);
    free_all(out, n_out);
}

START_TEST(test_misc_error_paths) {
    int64_t dq[4] = {1, 2, 3, 4}, dm[2] = {2, 3}, dm2[2] = {3, 4};
    kn_tensor *att[4] = {mk_rand(4, dq), mk_rand(4, dq), mk_rand(4, dq), mk_rand(2, dm)};
    expect_error(KN_OP_Attention, 23, NULL, 0, att, 4, 1, "mask [2,3] against [.., 3, 3]");
    kn_tensor_free(att[3]);
    att[3] = mk_rand(2, dm2); /* longer than the 3 keys */
    expect_error(KN_OP_Attention, 23, NULL, 0, att, 4, 1, "mask longer than keys");
    free_all(att, 4);

    int64_t dx[3] = {2, 1, 3}, dw[3] = {1, 4, 2}, dr[3] = {1, 4, 1};
    kn_tensor *rnn[3] = {mk_rand(3, dx), mk_rand(3, dw), mk_rand(3, dr)};
    expect_error(KN_OP_LSTM, 14, NULL, 0, rnn, 3, 3, "LSTM input size 3 vs W [1,4,2]");
    kn_attr bad_act[1] = {attr_strings("activations", (char *[]){(char *)"Nope"}, 1)};
    expect_error(KN_OP_RNN, 14, bad_act, 1, rnn, 3, 2, "unknown activation");
    free_all(rnn, 3);

    int64_t dqx[2] = {2, 3}, ds[1] = {2};
    kn_tensor *q[2] = {mk_rand(2, dqx), mk_rand(1, ds)};
    expect_error(KN_OP_QuantizeLinear, 21, NULL, 0, q, 2, 1, "per-axis scale of 2 on an axis of 3");
    kn_attr ax[1] = {attr_i("axis", 5)};
    expect_error(KN_OP_QuantizeLinear, 21, ax, 1, q, 2, 1, "axis out of range");
    free_all(q, 2);

    int64_t dd[2] = {4, 2};
    kn_tensor *dft[3] = {mk_rand(2, dd), NULL, mk(KN_I64, 0, dd, (double[]){-1})};
    expect_error(KN_OP_DFT, 20, NULL, 0, dft, 3, 1, "DFT over the complex axis");
    free_all(dft, 3);

    kn_tensor *notstr[1] = {mk_rand(1, ds)};
    expect_error(KN_OP_StringSplit, 20, NULL, 0, notstr, 1, 2, "StringSplit of floats");
    expect_error(KN_OP_RegexFullMatch, 20, NULL, 0, notstr, 1, 1, "RegexFullMatch of floats");
    free_all(notstr, 1);
    const char *w[2] = {"a", "b"};
    kn_tensor *str[1] = {mk_raw(KN_STRING, 1, ds, w)};
    kn_attr badre[1] = {attr_s("pattern", "(unclosed")};
    expect_error(KN_OP_RegexFullMatch, 20, badre, 1, str, 1, 1, "bad regex");
    free_all(str, 1);
}
END_TEST

static Suite *misc_suite(void) {
    Suite *s = suite_create("misc_ops");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_attention_vs_reference);
    tcase_add_test(tc, test_attention_rejects_bad_shapes);
    tcase_add_test(tc, test_attention_half_precision);
    tcase_add_test(tc, test_rotary_embedding);
    tcase_add_test(tc, test_lstm_peepholes);
    tcase_add_test(tc, test_lstm_vector_cell);
    tcase_add_test(tc, test_gru_bidirectional_seqlens);
    tcase_add_test(tc, test_rnn_simple_and_layout);
    tcase_add_test(tc, test_quantize_rounding_and_saturation);
    tcase_add_test(tc, test_quantize_axis_blocked_round_trip);
    tcase_add_test(tc, test_dynamic_quantize);
    tcase_add_test(tc, test_dft_matches_direct_sum);
    tcase_add_test(tc, test_windows);
    tcase_add_test(tc, test_random_matches_numpy_seeded);
    tcase_add_test(tc, test_string_ops);
    tcase_add_test(tc, test_tfidf_bigrams_with_skip);
    tcase_add_test(tc, test_misc_error_paths);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return kn_test_run_suite(misc_suite()); }
