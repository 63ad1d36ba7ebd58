/* Unit tests for the data-movement and shape ops, run through infer + CPU kernel: Reshape's
 * 0/-1/allowzero rules and impossible sizes, Squeeze/Unsqueeze across opsets, Slice clamping
 * with huge and negative ends and negative steps, Gather range checks, the blocked Transpose
 * against the plain reference over many permutations and odd sizes, Expand/Tile broadcasting,
 * empty tensors, string elements, Pad modes, Split's uneven tail, Unique and Resize. */
#include "tests/unit/harness.h"

#include "graph/op_helpers.h"

static kn_tensor *mk_i64(int n, const int64_t *v) {
    int64_t d[1] = {n};
    return mk_raw(KN_I64, 1, d, v);
}

/* Runs KN_OP_##OP through the executor's node path (kn_test_run_op), every output wanted. */
#define RUN(OP, opset, attrs, na, in, nin, out, nout) \
    kn_test_run_op(KN_OP_##OP, opset, attrs, na, in, nin, out, NULL, nout, NULL)
#define RUNP(pool, OP, opset, attrs, na, in, nin, out, nout) \
    kn_test_run_op(KN_OP_##OP, opset, attrs, na, in, nin, out, NULL, nout, pool)

static void expect_dims(const kn_tensor *t, int ndim, const int64_t *dims) {
    ck_assert_int_eq(t->ndim, ndim);
    for (int i = 0; i < ndim; i++) ck_assert_int_eq(t->dims[i], dims[i]);
}

START_TEST(test_reshape_rules) {
    int64_t xd[3] = {2, 3, 4};
    float xv[24];
    for (int i = 0; i < 24; i++) xv[i] = (float)i;
    kn_tensor *x = mk_raw(KN_F32, 3, xd, xv), *out[1];
    struct {
        int n;
        int64_t s[4];
        int allowzero;
        int ok;
        int rn;
        int64_t r[4];
    } cases[] = {
        {2, {0, -1}, 0, 1, 2, {2, 12}}, {3, {-1, 0, 2}, 0, 1, 3, {4, 3, 2}},
        {1, {-1}, 0, 1, 1, {24}},       {4, {2, 0, 2, 2}, 0, 1, 4, {2, 3, 2, 2}},
        {2, {5, -1}, 0, 0, 0, {0}},  /* 24 is not a multiple of 5 */
        {2, {4, 7}, 0, 0, 0, {0}},   /* wrong element count */
        {2, {-1, -1}, 0, 0, 0, {0}}, /* two -1 */
        {2, {0, 24}, 1, 0, 0, {0}},  /* allowzero: 0 is a real zero, count mismatch */
        {2, {-2, 12}, 0, 0, 0, {0}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        kn_tensor *s = mk_i64(cases[c].n, cases[c].s);
        kn_tensor *in[2] = {x, s};
        kn_attr at[1] = {attr_i("allowzero", cases[c].allowzero)};
        kn_status *st = RUN(Reshape, 14, at, 1, in, 2, out, 1);
        if (cases[c].ok) {
            ck_assert_msg(st == NULL, "case %zu: %s", c, st ? kn_status_message(st) : "");
            expect_dims(out[0], cases[c].rn, cases[c].r);
            ck_assert(memcmp(out[0]->data, xv, sizeof xv) == 0);
            kn_tensor_free(out[0]);
        } else {
            expect_err_code(st, KN_ERR_INVALID_ARGUMENT);
        }
        kn_tensor_free(s);
    }
    /* allowzero with an empty input: a genuine zero dim */
    int64_t ed[2] = {0, 3}, es[3] = {3, 0, 5};
    kn_tensor *e = mk_raw(KN_F32, 2, ed, NULL), *s = mk_i64(3, es), *in[2] = {e, s};
    kn_attr at[1] = {attr_i("allowzero", 1)};
    ck_assert_ptr_null(RUN(Reshape, 14, at, 1, in, 2, out, 1));
    expect_dims(out[0], 3, es);
    kn_tensor_free(out[0]);
    /* unknown shape value: the rank is the shape vector's length, every dim unknown, no error */
    kn_tensor sv = {.dtype = KN_I64, .ndim = 1, .dims = {2}};
    kn_tensor *in2[2] = {x, &sv};
    kn_tensor o = {0}, *op[1] = {&o};
    ck_assert_ptr_null(kn_test_infer(KN_OP_Reshape, 14, NULL, 0, in2, 2, op, 1));
    ck_assert_int_eq(o.ndim, 2);
    ck_assert(o.dims[0] == -1 && o.dims[1] == -1);
    /* Expand likewise: [3, 1] by an unknown 3-vector is [?, 3, ?] */
    int64_t xed[2] = {3, 1};
    kn_tensor *xe = mk_raw(KN_F32, 2, xed, NULL);
    kn_tensor sv3 = {.dtype = KN_I64, .ndim = 1, .dims = {3}}, oe = {0}, *ope[1] = {&oe};
    kn_tensor *in3[2] = {xe, &sv3};
    ck_assert_ptr_null(kn_test_infer(KN_OP_Expand, 13, NULL, 0, in3, 2, ope, 1));
    ck_assert_int_eq(oe.ndim, 3);
    ck_assert(oe.dims[0] == -1 && oe.dims[1] == 3 && oe.dims[2] == -1);
    kn_tensor_free(xe);
    kn_tensor_free(e);
    kn_tensor_free(s);
    kn_tensor_free(x);
}
END_TEST

START_TEST(test_squeeze_unsqueeze_opsets) {
    int64_t xd[4] = {1, 3, 1, 2};
    kn_tensor *x = mk_raw(KN_F32, 4, xd, NULL), *out[1];
    /* opset 11: axes attribute, negative axis */
    int64_t ax[1] = {-2};
    kn_attr at[1] = {attr_ints("axes", ax, 1)};
    kn_tensor *in1[1] = {x};
    ck_assert_ptr_null(RUN(Squeeze, 11, at, 1, in1, 1, out, 1));
    int64_t e1[3] = {1, 3, 2};
    expect_dims(out[0], 3, e1);
    kn_tensor_free(out[0]);
    /* opset 13: axes input; no axes squeezes every 1 */
    ck_assert_ptr_null(RUN(Squeeze, 13, NULL, 0, in1, 1, out, 1));
    int64_t e2[2] = {3, 2};
    expect_dims(out[0], 2, e2);
    kn_tensor_free(out[0]);
    /* squeezing a non-1 axis is an error */
    int64_t bad[1] = {1};
    kn_tensor *ba = mk_i64(1, bad), *in2[2] = {x, ba};
    expect_err_code(RUN(Squeeze, 13, NULL, 0, in2, 2, out, 1), KN_ERR_INVALID_ARGUMENT);
    /* Unsqueeze opset 13 with unsorted negative axes: output rank 6 */
    int64_t ua[2] = {-1, 0};
    kn_tensor *ut = mk_i64(2, ua), *in3[2] = {x, ut};
    ck_assert_ptr_null(RUN(Unsqueeze, 13, NULL, 0, in3, 2, out, 1));
    int64_t e3[6] = {1, 1, 3, 1, 2, 1};
    expect_dims(out[0], 6, e3);
    kn_tensor_free(out[0]);
    /* opset 11 attribute form; duplicate axes are an error */
    int64_t dup[2] = {1, 1};
    kn_attr at2[1] = {attr_ints("axes", dup, 2)};
    expect_err_code(RUN(Unsqueeze, 11, at2, 1, in1, 1, out, 1), KN_ERR_INVALID_ARGUMENT);
    kn_tensor_free(ba);
    kn_tensor_free(ut);
    kn_tensor_free(x);
}
END_TEST

/* Plain reference for one sliced axis of a 1-D array. */
static int ref_slice(int64_t n, int64_t s, int64_t e, int64_t step, int64_t *idx) {
    if (s < 0) s += n;
    if (e < 0) e += n;
    int cnt = 0;
    if (step > 0) {
        if (s < 0) s = 0;
        if (s > n) s = n;
        if (e < 0) e = 0;
        if (e > n) e = n;
        for (int64_t i = s; i < e; i += step) {
            idx[cnt++] = i;
            if (e - i <= step) break; /* the next step would pass e (and could overflow) */
        }
    } else {
        if (s < 0) s = 0; /* only reached when s < -n */
        if (s > n - 1) s = n - 1;
        if (e < -1) e = -1;
        if (e > n - 1) e = n - 1;
        for (int64_t i = s; i > e; i += step) {
            idx[cnt++] = i;
            if ((uint64_t)(i - e) <= (uint64_t)0 - (uint64_t)step) break;
        }
    }
    return cnt;
}

START_TEST(test_slice_clamping) {
    const int64_t n = 7;
    int64_t xd[1] = {n};
    int32_t xv[7] = {0, 1, 2, 3, 4, 5, 6};
    kn_tensor *x = mk_raw(KN_I32, 1, xd, xv), *out[1];
    const int64_t vals[] = {INT64_MIN, -100, -8, -7, -3, -1, 0, 1, 3, 6, 7, 8, 100, INT64_MAX};
    const int64_t steps[] = {1, 2, 3, -1, -2, -5, 100, -100, INT64_MAX, INT64_MIN};
    int nv = sizeof vals / sizeof vals[0];
    for (int a = 0; a < nv; a++)
        for (int b = 0; b < nv; b++)
            for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
                kn_tensor *st = mk_i64(1, &vals[a]), *en = mk_i64(1, &vals[b]), *sp = mk_i64(1, &steps[k]);
                int64_t axes[1] = {-1};
                kn_tensor *ax = mk_i64(1, axes);
                kn_tensor *in[5] = {x, st, en, ax, sp};
                kn_status *s = RUN(Slice, 13, NULL, 0, in, 5, out, 1);
                ck_assert_msg(s == NULL, "%s", s ? kn_status_message(s) : "");
                int64_t idx[16];
                int cnt = ref_slice(n, vals[a], vals[b], steps[k], idx);
                ck_assert_msg(out[0]->dims[0] == cnt, "start %lld end %lld step %lld: %lld vs %d", (long long)vals[a],
                              (long long)vals[b], (long long)steps[k], (long long)out[0]->dims[0], cnt);
                for (int i = 0; i < cnt; i++) ck_assert_int_eq(((int32_t *)out[0]->data)[i], xv[idx[i]]);
                kn_tensor_free(out[0]);
                kn_tensor_free(st);
                kn_tensor_free(en);
                kn_tensor_free(sp);
                kn_tensor_free(ax);
            }
    /* zero step is an error; opset 1 attribute form works */
    int64_t z = 0, one = 1, four = 4;
    kn_tensor *st = mk_i64(1, &one), *en = mk_i64(1, &four), *sp = mk_i64(1, &z);
    kn_tensor *in[5] = {x, st, en, NULL, sp};
    expect_err_code(RUN(Slice, 13, NULL, 0, in, 5, out, 1), KN_ERR_INVALID_ARGUMENT);
    kn_attr at[2] = {attr_ints("starts", &one, 1), attr_ints("ends", &four, 1)};
    kn_tensor *in1[1] = {x};
    ck_assert_ptr_null(RUN(Slice, 1, at, 2, in1, 1, out, 1));
    ck_assert_int_eq(out[0]->dims[0], 3);
    ck_assert_int_eq(((int32_t *)out[0]->data)[0], 1);
    kn_tensor_free(out[0]);
    kn_tensor_free(st);
    kn_tensor_free(en);
    kn_tensor_free(sp);
    kn_tensor_free(x);
}
END_TEST

START_TEST(test_slice_2d_negative_step) {
    int64_t xd[2] = {3, 4};
    float xv[12];
    for (int i = 0; i < 12; i++) xv[i] = (float)i;
    kn_tensor *x = mk_raw(KN_F32, 2, xd, xv), *out[1];
    int64_t s[2] = {-1, 0}, e[2] = {INT64_MIN, 100}, ax[2] = {0, 1}, st[2] = {-1, 3};
    kn_tensor *ts = mk_i64(2, s), *te = mk_i64(2, e), *ta = mk_i64(2, ax), *tp = mk_i64(2, st);
    kn_tensor *in[5] = {x, ts, te, ta, tp};
    ck_assert_ptr_null(RUN(Slice, 13, NULL, 0, in, 5, out, 1));
    int64_t ed[2] = {3, 2};
    expect_dims(out[0], 2, ed);
    const float want[6] = {8, 11, 4, 7, 0, 3};
    for (int i = 0; i < 6; i++) ck_assert_float_eq(((float *)out[0]->data)[i], want[i]);
    kn_tensor_free(out[0]);
    kn_tensor_free(ts);
    kn_tensor_free(te);
    kn_tensor_free(ta);
    kn_tensor_free(tp);
    kn_tensor_free(x);
}
END_TEST

START_TEST(test_gather_indices) {
    int64_t xd[2] = {3, 2};
    float xv[6] = {0, 1, 2, 3, 4, 5};
    kn_tensor *x = mk_raw(KN_F32, 2, xd, xv), *out[1];
    int64_t id[2] = {2, 2};
    int32_t iv[4] = {0, -1, 1, -3};
    kn_tensor *ind = mk_raw(KN_I32, 2, id, iv), *in[2] = {x, ind};
    ck_assert_ptr_null(RUN(Gather, 13, NULL, 0, in, 2, out, 1));
    int64_t ed[3] = {2, 2, 2};
    expect_dims(out[0], 3, ed);
    const float want[8] = {0, 1, 4, 5, 2, 3, 0, 1};
    for (int i = 0; i < 8; i++) ck_assert_float_eq(((float *)out[0]->data)[i], want[i]);
    kn_tensor_free(out[0]);
    /* out of range either way is an error, never a read */
    const int64_t bad[2] = {3, -4};
    for (int b = 0; b < 2; b++) {
        kn_tensor *bi = mk_i64(1, &bad[b]), *in2[2] = {x, bi};
        expect_err_code(RUN(Gather, 13, NULL, 0, in2, 2, out, 1), KN_ERR_RUNTIME);
        kn_tensor_free(bi);
    }
    /* axis 1, negative */
    kn_attr at[1] = {attr_i("axis", -1)};
    int64_t one = 1;
    kn_tensor *oi = mk_i64(1, &one), *in3[2] = {x, oi};
    ck_assert_ptr_null(RUN(Gather, 13, at, 1, in3, 2, out, 1));
    int64_t ed2[2] = {3, 1};
    expect_dims(out[0], 2, ed2);
    ck_assert_float_eq(((float *)out[0]->data)[2], 5);
    kn_tensor_free(out[0]);
    /* GatherElements / GatherND / ScatterElements out of range */
    int64_t big = 7;
    int64_t gd[2] = {1, 1};
    kn_tensor *ge = mk_raw(KN_I64, 2, gd, &big), *in4[2] = {x, ge};
    expect_err_code(RUN(GatherElements, 13, NULL, 0, in4, 2, out, 1), KN_ERR_RUNTIME);
    expect_err_code(RUN(GatherND, 13, NULL, 0, in4, 2, out, 1), KN_ERR_RUNTIME);
    float u = 9;
    kn_tensor *ut = mk_raw(KN_F32, 2, gd, &u), *in5[3] = {x, ge, ut};
    expect_err_code(RUN(ScatterElements, 13, NULL, 0, in5, 3, out, 1), KN_ERR_RUNTIME);
    kn_tensor_free(ge);
    kn_tensor_free(ut);
    kn_tensor_free(oi);
    kn_tensor_free(ind);
    kn_tensor_free(x);
}
END_TEST

START_TEST(test_gather_strings) {
    int64_t xd[1] = {3};
    const char *sv[3] = {"a", "bb", "ccc"};
    kn_tensor *x = mk_raw(KN_STRING, 1, xd, sv), *out[1];
    int64_t iv[4] = {2, 0, 2, -2};
    kn_tensor *ind = mk_i64(4, iv), *in[2] = {x, ind};
    ck_assert_ptr_null(RUN(Gather, 13, NULL, 0, in, 2, out, 1));
    const char *want[4] = {"ccc", "a", "ccc", "bb"};
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(((char **)out[0]->data)[i], want[i]);
        /* deep copies, not aliases of the input's strings */
        ck_assert_ptr_ne(((char **)out[0]->data)[i], ((char **)x->data)[iv[i] < 0 ? iv[i] + 3 : iv[i]]);
    }
    kn_tensor_free(out[0]);
    /* Pad with strings: edge mode duplicates */
    int64_t pads[2] = {1, 2};
    kn_tensor *pt = mk_i64(2, pads), *in2[2] = {x, pt};
    kn_attr at[1] = {attr_s("mode", "edge")};
    ck_assert_ptr_null(RUN(Pad, 18, at, 1, in2, 2, out, 1));
    const char *pw[6] = {"a", "a", "bb", "ccc", "ccc", "ccc"};
    for (int i = 0; i < 6; i++) ck_assert_str_eq(((char **)out[0]->data)[i], pw[i]);
    kn_tensor_free(out[0]);
    kn_tensor_free(pt);
    kn_tensor_free(ind);
    kn_tensor_free(x);
}
END_TEST

static uint32_t rs = 777;
static uint32_t rnd(void) {
    rs = rs * 1664525u + 1013904223u;
    return rs >> 8;
}

static int next_perm(int *p, int n) {
    int i = n - 2;
    while (i >= 0 && p[i] >= p[i + 1]) i--;
    if (i < 0) return 0;
    int j = n - 1;
    while (p[j] <= p[i]) j--;
    int t = p[i];
    p[i] = p[j];
    p[j] = t;
    for (int a = i + 1, b = n - 1; a < b; a++, b--) {
        t = p[a];
        p[a] = p[b];
        p[b] = t;
    }
    return 1;
}

START_TEST(test_transpose_matches_reference) {
    const int64_t odd[] = {1, 2, 3, 5, 31, 33, 67};
    const kn_dtype types[] = {KN_F32, KN_U8, KN_F16, KN_F64, KN_C128};
    for (int rank = 1; rank <= 4; rank++)
        for (int trial = 0; trial < 6; trial++) {
            int64_t dims[4];
            int64_t total = 1;
            for (int k = 0; k < rank; k++) {
                dims[k] = odd[rnd() % 7];
                if (rank == 4 && dims[k] > 33) dims[k] = 5;
                total *= dims[k];
            }
            kn_dtype dt = types[rnd() % 5];
            kn_tensor *x = mk_raw(dt, rank, dims, NULL);
            unsigned char *xb = x->data;
            for (size_t i = 0; i < kn_nbytes(x); i++) xb[i] = (unsigned char)rnd();
            int perm[4] = {0, 1, 2, 3};
            do {
                int64_t pv[4];
                for (int k = 0; k < rank; k++) pv[k] = perm[k];
                kn_attr at[1] = {attr_ints("perm", pv, rank)};
                kn_tensor *in[1] = {x}, *out[1];
                ck_assert_ptr_null(RUN(Transpose, 13, at, 1, in, 1, out, 1));
                void *ref = malloc(kn_nbytes(x) + 1);
                ck_assert_ptr_null(kn_shapeops_transpose_ref(dt, ref, x->data, rank, dims, perm));
                ck_assert_msg(memcmp(ref, out[0]->data, kn_nbytes(x)) == 0, "rank %d dtype %d perm %d%d%d%d total %lld",
                              rank, (int)dt, perm[0], perm[1], perm[2], perm[3], (long long)total);
                free(ref);
                kn_tensor_free(out[0]);
            } while (next_perm(perm, rank));
            kn_tensor_free(x);
        }
    /* big batched 2-D and BERT-style permutations through the fast paths, threads included */
    kn_threadpool *pool = kn_threadpool_create(4);
    int64_t bd[4] = {2, 67, 3, 45};
    kn_tensor *x = mk_raw(KN_F32, 4, bd, NULL);
    for (int64_t i = 0; i < kn_numel(x); i++) ((float *)x->data)[i] = (float)i;
    const int perms[3][4] = {{0, 2, 1, 3}, {0, 1, 3, 2}, {3, 2, 1, 0}};
    for (int p = 0; p < 3; p++) {
        int64_t pv[4] = {perms[p][0], perms[p][1], perms[p][2], perms[p][3]};
        kn_attr at[1] = {attr_ints("perm", pv, 4)};
        kn_tensor *in[1] = {x}, *out[1];
        ck_assert_ptr_null(RUNP(pool, Transpose, 13, at, 1, in, 1, out, 1));
        float *ref = malloc(kn_nbytes(x));
        ck_assert_ptr_null(kn_shapeops_transpose_ref(KN_F32, ref, x->data, 4, bd, perms[p]));
        ck_assert(memcmp(ref, out[0]->data, kn_nbytes(x)) == 0);
        free(ref);
        kn_tensor_free(out[0]);
    }
    /* threaded Slice with a negative step against the same values read directly */
    int64_t s0[1] = {-1}, e0[1] = {INT64_MIN}, a0[1] = {1}, st0[1] = {-2};
    kn_tensor *ts = mk_i64(1, s0), *te = mk_i64(1, e0), *ta = mk_i64(1, a0), *tp = mk_i64(1, st0);
    kn_tensor *in5[5] = {x, ts, te, ta, tp}, *out5[1];
    ck_assert_ptr_null(RUNP(pool, Slice, 13, NULL, 0, in5, 5, out5, 1));
    ck_assert_int_eq(out5[0]->dims[1], 34);
    for (int64_t b = 0; b < 2; b++)
        for (int64_t i = 0; i < 34; i++)
            for (int64_t k = 0; k < 135; k++)
                ck_assert_float_eq(((float *)out5[0]->data)[(b * 34 + i) * 135 + k],
                                   ((float *)x->data)[(b * 67 + 66 - 2 * i) * 135 + k]);
    kn_tensor_free(out5[0]);
    kn_tensor_free(ts);
    kn_tensor_free(te);
    kn_tensor_free(ta);
    kn_tensor_free(tp);
    kn_threadpool_free(pool);
    kn_tensor_free(x);
}
END_TEST

START_TEST(test_expand_tile) {
    int64_t xd[2] = {3, 1};
    int16_t xv[3] = {1, 2, 3};
    kn_tensor *x = mk_raw(KN_I16, 2, xd, xv), *out[1];
    int64_t sh[3] = {2, 1, 4};
    kn_tensor *s = mk_i64(3, sh), *in[2] = {x, s};
    ck_assert_ptr_null(RUN(Expand, 13, NULL, 0, in, 2, out, 1));
    int64_t ed[3] = {2, 3, 4};
    expect_dims(out[0], 3, ed);
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++) ck_assert_int_eq(((int16_t *)out[0]->data)[(b * 3 + i) * 4 + j], xv[i]);
    kn_tensor_free(out[0]);
    /* shape smaller than the input keeps the input's dims; incompatible dims fail */
    int64_t sh2[1] = {1}, sh3[2] = {2, 2};
    kn_tensor *s2 = mk_i64(1, sh2), *s3 = mk_i64(2, sh3), *in2[2] = {x, s2}, *in3[2] = {x, s3};
    ck_assert_ptr_null(RUN(Expand, 13, NULL, 0, in2, 2, out, 1));
    expect_dims(out[0], 2, xd);
    kn_tensor_free(out[0]);
    expect_err_code(RUN(Expand, 13, NULL, 0, in3, 2, out, 1), KN_ERR_INVALID_ARGUMENT);
    /* Tile [3,1] by [2,3] */
    int64_t rp[2] = {2, 3};
    kn_tensor *r = mk_i64(2, rp), *in4[2] = {x, r};
    ck_assert_ptr_null(RUN(Tile, 13, NULL, 0, in4, 2, out, 1));
    int64_t td[2] = {6, 3};
    expect_dims(out[0], 2, td);
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 3; j++) ck_assert_int_eq(((int16_t *)out[0]->data)[i * 3 + j], xv[i % 3]);
    kn_tensor_free(out[0]);
    /* zero repeats give an empty tensor */
    int64_t rz[2] = {0, 3};
    kn_tensor *z = mk_i64(2, rz), *in5[2] = {x, z};
    ck_assert_ptr_null(RUN(Tile, 13, NULL, 0, in5, 2, out, 1));
    ck_assert_int_eq(kn_numel(out[0]), 0);
    kn_tensor_free(out[0]);
    kn_tensor_free(s);
    kn_tensor_free(s2);
    kn_tensor_free(s3);
    kn_tensor_free(r);
    kn_tensor_free(z);
    kn_tensor_free(x);
}
END_TEST

START_TEST(test_empty_and_concat_split) {
    int64_t ad[2] = {2, 0}, bd[2] = {2, 3};
    float bv[6] = {1, 2, 3, 4, 5, 6};
    kn_tensor *a = mk_raw(KN_F32, 2, ad, NULL), *b = mk_raw(KN_F32, 2, bd, bv), *out[3];
    kn_attr at[1] = {attr_i("axis", -1)};
    kn_tensor *in[3] = {a, b, a};
    ck_assert_ptr_null(RUN(Concat, 13, at, 1, in, 3, out, 1));
    expect_dims(out[0], 2, bd);
    ck_assert(memcmp(out[0]->data, bv, sizeof bv) == 0);
    kn_tensor_free(out[0]);
    /* rank mismatch */
    int64_t cd[1] = {3};
    kn_tensor *c = mk_raw(KN_F32, 1, cd, NULL), *in2[2] = {b, c};
    expect_err_code(RUN(Concat, 13, at, 1, in2, 2, out, 1), KN_ERR_INVALID_ARGUMENT);
    /* Split opset 18 num_outputs=2 on 3 columns: uneven tail (2, 1) */
    kn_attr sat[2] = {attr_i("axis", 1), attr_i("num_outputs", 2)};
    kn_tensor *in3[1] = {b};
    ck_assert_ptr_null(RUN(Split, 18, sat, 2, in3, 1, out, 2));
    int64_t d0[2] = {2, 2}, d1[2] = {2, 1};
    expect_dims(out[0], 2, d0);
    expect_dims(out[1], 2, d1);
    const float w0[4] = {1, 2, 4, 5}, w1[2] = {3, 6};
    ck_assert(memcmp(out[0]->data, w0, sizeof w0) == 0);
    ck_assert(memcmp(out[1]->data, w1, sizeof w1) == 0);
    free_all(out, 2);
    /* split sizes input including a zero-size part, and a bad sum */
    int64_t sp[3] = {0, 3, 0}, bad[3] = {1, 1, 0};
    kn_tensor *st = mk_i64(3, sp), *bt = mk_i64(3, bad), *in4[2] = {b, st}, *in5[2] = {b, bt};
    kn_attr sat2[1] = {attr_i("axis", 1)};
    ck_assert_ptr_null(RUN(Split, 13, sat2, 1, in4, 2, out, 3));
    ck_assert_int_eq(out[0]->dims[1], 0);
    ck_assert(memcmp(out[1]->data, bv, sizeof bv) == 0);
    free_all(out, 3);
    expect_err_code(RUN(Split, 13, sat2, 1, in5, 2, out, 3), KN_ERR_INVALID_ARGUMENT);
    /* empty input through Transpose, Slice and Gather */
    kn_tensor *in6[1] = {a};
    ck_assert_ptr_null(RUN(Transpose, 13, NULL, 0, in6, 1, out, 1));
    int64_t td[2] = {0, 2};
    expect_dims(out[0], 2, td);
    kn_tensor_free(out[0]);
    kn_tensor_free(a);
    kn_tensor_free(b);
    kn_tensor_free(c);
    kn_tensor_free(st);
    kn_tensor_free(bt);
}
END_TEST

START_TEST(test_pad_modes) {
    int64_t xd[1] = {4};
    float xv[4] = {1, 2, 3, 4};
    kn_tensor *x = mk_raw(KN_F32, 1, xd, xv), *out[1];
    int64_t pads[2] = {3, 5};
    kn_tensor *p = mk_i64(2, pads);
    float cv = 9;
    int64_t sd[1] = {1};
    kn_tensor *c = mk_raw(KN_F32, 0, sd, &cv);
    struct {
        const char *mode;
        float want[12];
    } cases[] = {
        {"constant", {9, 9, 9, 1, 2, 3, 4, 9, 9, 9, 9, 9}},
        {"reflect", {4, 3, 2, 1, 2, 3, 4, 3, 2, 1, 2, 3}},
        {"edge", {1, 1, 1, 1, 2, 3, 4, 4, 4, 4, 4, 4}},
        {"wrap", {2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1}},
    };
    for (int m = 0; m < 4; m++) {
        kn_attr at[1] = {attr_s("mode", cases[m].mode)};
        kn_tensor *in[3] = {x, p, c};
        ck_assert_ptr_null(RUN(Pad, 18, at, 1, in, 3, out, 1));
        ck_assert_int_eq(out[0]->dims[0], 12);
        for (int i = 0; i < 12; i++)
            ck_assert_msg(((float *)out[0]->data)[i] == cases[m].want[i], "%s[%d] = %g", cases[m].mode, i,
                          ((float *)out[0]->data)[i]);
        kn_tensor_free(out[0]);
    }
    /* negative pads crop; over-cropping is an error */
    int64_t crop[2] = {-1, 1}, over[2] = {-3, -2};
    kn_tensor *cp = mk_i64(2, crop), *op = mk_i64(2, over), *in2[2] = {x, cp}, *in3[2] = {x, op};
    ck_assert_ptr_null(RUN(Pad, 18, NULL, 0, in2, 2, out, 1));
    const float cw[4] = {2, 3, 4, 0};
    ck_assert(memcmp(out[0]->data, cw, sizeof cw) == 0);
    kn_tensor_free(out[0]);
    expect_err_code(RUN(Pad, 18, NULL, 0, in3, 2, out, 1), KN_ERR_INVALID_ARGUMENT);
    kn_tensor_free(cp);
    kn_tensor_free(op);
    kn_tensor_free(p);
    kn_tensor_free(c);
    kn_tensor_free(x);
}
END_TEST

START_TEST(test_unique_and_nonzero) {
    int64_t xd[1] = {6};
    float xv[6] = {2, 1, 1, 3, 4, 3};
    kn_tensor *x = mk_raw(KN_F32, 1, xd, xv), *out[4];
    kn_tensor *in[1] = {x};
    kn_attr at[1] = {attr_i("sorted", 0)};
    ck_assert_ptr_null(RUN(Unique, 11, at, 1, in, 1, out, 4));
    const float y[4] = {2, 1, 3, 4};
    const int64_t idx[4] = {0, 1, 3, 4}, inv[6] = {0, 1, 1, 2, 3, 2}, cnt[4] = {1, 2, 2, 1};
    ck_assert_int_eq(out[0]->dims[0], 4);
    ck_assert(memcmp(out[0]->data, y, sizeof y) == 0);
    ck_assert(memcmp(out[1]->data, idx, sizeof idx) == 0);
    ck_assert(memcmp(out[2]->data, inv, sizeof inv) == 0);
    ck_assert(memcmp(out[3]->data, cnt, sizeof cnt) == 0);
    free_all(out, 4);
    ck_assert_ptr_null(RUN(Unique, 11, NULL, 0, in, 1, out, 4));
    const float ys[4] = {1, 2, 3, 4};
    const int64_t is[4] = {1, 0, 3, 4}, invs[6] = {1, 0, 0, 2, 3, 2};
    ck_assert(memcmp(out[0]->data, ys, sizeof ys) == 0);
    ck_assert(memcmp(out[1]->data, is, sizeof is) == 0);
    ck_assert(memcmp(out[2]->data, invs, sizeof invs) == 0);
    free_all(out, 4);
    /* NonZero of a 2x3 int8 */
    int64_t nd[2] = {2, 3};
    int8_t nv[6] = {0, 5, 0, -1, 0, 2};
    kn_tensor *n = mk_raw(KN_I8, 2, nd, nv), *in2[1] = {n};
    ck_assert_ptr_null(RUN(NonZero, 13, NULL, 0, in2, 1, out, 1));
    const int64_t nz[6] = {0, 1, 1, 1, 0, 2};
    int64_t ndims[2] = {2, 3};
    expect_dims(out[0], 2, ndims);
    ck_assert(memcmp(out[0]->data, nz, sizeof nz) == 0);
    kn_tensor_free(out[0]);
    kn_tensor_free(n);
    kn_tensor_free(x);
}
END_TEST

START_TEST(test_resize_nearest_and_linear) {
    int64_t xd[4] = {1, 1, 2, 2};
    float xv[4] = {1, 2, 3, 4};
    kn_tensor *x = mk_raw(KN_F32, 4, xd, xv), *out[1];
    int64_t sd[1] = {4};
    float sc[4] = {1, 1, 2, 3};
    kn_tensor *s = mk_raw(KN_F32, 1, sd, sc);
    kn_tensor *in[3] = {x, NULL, s};
    ck_assert_ptr_null(RUN(Resize, 19, NULL, 0, in, 3, out, 1));
    int64_t od[4] = {1, 1, 4, 6};
    expect_dims(out[0], 4, od);
    const float want[24] = {1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 3, 3, 3, 4, 4, 4};
    ck_assert(memcmp(out[0]->data, want, sizeof want) == 0);
    kn_tensor_free(out[0]);
    /* align_corners linear to 3x3: the centre is the mean */
    int64_t sz[4] = {1, 1, 3, 3};
    kn_tensor *z = mk_i64(4, sz), *in2[4] = {x, NULL, NULL, z};
    kn_attr at[2] = {attr_s("mode", "linear"), attr_s("coordinate_transformation_mode", "align_corners")};
    ck_assert_ptr_null(RUN(Resize, 19, at, 2, in2, 4, out, 1));
    ck_assert_float_eq_tol(((float *)out[0]->data)[4], 2.5f, 1e-6f);
    ck_assert_float_eq_tol(((float *)out[0]->data)[1], 1.5f, 1e-6f);
    ck_assert_float_eq_tol(((float *)out[0]->data)[8], 4.0f, 1e-6f);
    kn_tensor_free(out[0]);
    /* scales and sizes together is an error */
    kn_tensor *in3[4] = {x, NULL, s, z};
    expect_err_code(RUN(Resize, 19, NULL, 0, in3, 4, out, 1), KN_ERR_INVALID_ARGUMENT);
    kn_tensor_free(z);
    kn_tensor_free(s);
    kn_tensor_free(x);
}
END_TEST

START_TEST(test_dropout_modes) {
    int64_t xd[1] = {6};
    float xv[6] = {1, 1, 1, 1, 1, 1};
    kn_tensor *x = mk_raw(KN_F32, 1, xd, xv), *out[2];
    /* inference: identity with an all-true mask */
    kn_tensor *in1[1] = {x};
    ck_assert_ptr_null(RUN(Dropout, 13, NULL, 0, in1, 1, out, 2));
    ck_assert_int_eq(out[1]->dtype, KN_BOOL);
    for (int i = 0; i < 6; i++) {
        ck_assert_float_eq(((float *)out[0]->data)[i], 1);
        ck_assert_int_eq(((uint8_t *)out[1]->data)[i], 1);
    }
    free_all(out, 2);
    /* training with seed 0 reproduces numpy's np.random.seed(0); uniform(): 0.549 0.715 0.603 0.545 0.424 0.646 */
    float r = 0.6f;
    uint8_t t = 1;
    int64_t sd[1] = {1};
    kn_tensor *rt = mk_raw(KN_F32, 0, sd, &r), *tt = mk_raw(KN_BOOL, 0, sd, &t), *in2[3] = {x, rt, tt};
    kn_attr at[1] = {attr_i("seed", 0)};
    ck_assert_ptr_null(RUN(Dropout, 13, at, 1, in2, 3, out, 2));
    const uint8_t want[6] = {0, 1, 1, 0, 0, 1};
    for (int i = 0; i < 6; i++) {
        ck_assert_int_eq(((uint8_t *)out[1]->data)[i], want[i]);
        ck_assert_float_eq_tol(((float *)out[0]->data)[i], want[i] ? 2.5f : 0.0f, 1e-6f);
    }
    free_all(out, 2);
    /* ratio out of range */
    *(float *)rt->data = 1.0f;
    expect_err_code(RUN(Dropout, 13, at, 1, in2, 3, out, 2), KN_ERR_INVALID_ARGUMENT);
    kn_tensor_free(rt);
    kn_tensor_free(tt);
    kn_tensor_free(x);
}
END_TEST

int main(void) {
    Suite *s = suite_create("shape_ops");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_reshape_rules);
    tcase_add_test(tc, test_squeeze_unsqueeze_opsets);
    tcase_add_test(tc, test_slice_clamping);
    tcase_add_test(tc, test_slice_2d_negative_step);
    tcase_add_test(tc, test_gather_indices);
    tcase_add_test(tc, test_gather_strings);
    tcase_add_test(tc, test_transpose_matches_reference);
    tcase_add_test(tc, test_expand_tile);
    tcase_add_test(tc, test_empty_and_concat_split);
    tcase_add_test(tc, test_pad_modes);
    tcase_add_test(tc, test_unique_and_nonzero);
    tcase_add_test(tc, test_resize_nearest_and_linear);
    tcase_add_test(tc, test_dropout_modes);
    suite_add_tcase(s, tc);
    return kn_test_run_suite(s);
}
