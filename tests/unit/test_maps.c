/* Map values (kn_map: init, deep clone, alone and inside a sequence, release) and the ai.onnx.ml
 * map ops run through the executor's node path: ZipMap rows against the scores, DictVectorizer and
 * CastMap against plain linear-scan references over random maps, and their error paths (labels
 * that do not fit, repeated or negative keys, keys of the wrong kind, strings that are not
 * numbers). ONNX Runtime parity end to end is cli.exec_maps. */
#include "tests/unit/harness.h"
#include "runtime/core/dtype.h"
#include <stdio.h>

/* A new map from n keys (int64s, or strings when skeys) and values (float, or strings). */
static kn_tensor *mk_map(int64_t n, const int64_t *ikeys, const char *const *skeys, kn_dtype vt, const float *fv,
                         const char *const *sv) {
    kn_tensor *t = calloc(1, sizeof *t);
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_null(kn_map_init(t, skeys ? KN_STRING : KN_I64, vt, n));
    kn_map *m = t->data;
    for (int64_t i = 0; i < n; i++) {
        if (skeys) ((char **)m->keys.data)[i] = strdup(skeys[i]);
        else ((int64_t *)m->keys.data)[i] = ikeys[i];
        if (vt == KN_STRING) ((char **)m->values.data)[i] = strdup(sv[i]);
        else kn_set_f64(&m->values, i, fv[i]);
    }
    return t;
}

static kn_tensor *run1(int op, kn_attr *at, int na, kn_tensor *in) {
    kn_tensor *ins[1] = {in}, *out[1] = {0};
    kn_status *st = kn_test_run_op(op, 1, at, na, ins, 1, out, NULL, 1, NULL);
    ck_assert_msg(st == NULL, "%s", st ? kn_status_message(st) : "");
    return out[0];
}

static void run_err(int op, kn_attr *at, int na, kn_tensor *in, const char *what, const char *needle) {
    kn_tensor *ins[1] = {in}, *out[1] = {0};
    kn_status *st = kn_test_run_op(op, 1, at, na, ins, 1, out, NULL, 1, NULL);
    ck_assert_msg(st != NULL, "%s: expected an error", what);
    ck_assert_msg(strstr(kn_status_message(st), needle), "%s: '%s' lacks '%s'", what, kn_status_message(st), needle);
    kn_status_free(st);
    free_all(out, 1);
}

START_TEST(test_map_clone_release) {
    const char *keys[3] = {"b", "a", "c"}, *vals[3] = {"x", "yy", "zzz"};
    kn_tensor *m = mk_map(3, NULL, keys, KN_STRING, NULL, vals);
    char d[KN_DESC_LEN];
    ck_assert_str_eq(kn_tensor_desc(m, d, sizeof d), "map<string,string>(3)");
    kn_tensor seq;
    ck_assert_ptr_null(kn_seq_init(&seq, KN_STRING));
    ck_assert_ptr_null(kn_seq_insert(&seq, 0, m));
    int64_t ik[2] = {7, -1};
    float fv[2] = {0.5f, 2.0f};
    kn_tensor *m2 = mk_map(2, ik, NULL, KN_F32, fv, NULL);
    kn_tensor *c2 = NULL;
    ck_assert_ptr_null(kn_tensor_clone(m2, &c2));
    kn_tensor_free(m2); /* the clone owns its own storage */
    const kn_map *cm2 = c2->data;
    ck_assert(c2->kind == KN_KIND_MAP && c2->dtype == KN_F32 && cm2->keys.dtype == KN_I64);
    ck_assert(((int64_t *)cm2->keys.data)[1] == -1 && ((float *)cm2->values.data)[0] == 0.5f);
    kn_tensor_free(c2);

    kn_tensor *cs = NULL;
    ck_assert_ptr_null(kn_tensor_clone(&seq, &cs));
    kn_tensor_release(&seq); /* frees m */
    const kn_seq *q = cs->data;
    ck_assert(q->n == 1 && q->items[0]->kind == KN_KIND_MAP);
    const kn_map *cm = q->items[0]->data;
    ck_assert_str_eq(((char **)cm->keys.data)[2], "c");
    ck_assert_str_eq(((char **)cm->values.data)[1], "yy");
    kn_tensor_free(cs);

    kn_tensor empty;
    ck_assert_ptr_null(kn_map_init(&empty, KN_I64, KN_UNDEFINED, 0)); /* an empty map with no value type */
    ck_assert_ptr_null(kn_tensor_clone(&empty, &cs));
    kn_tensor_free(cs);
    kn_tensor_release(&empty);
}
END_TEST

START_TEST(test_zipmap_rows) {
    char *labels[3] = {"cat", "dog", "eel"};
    kn_attr at[1] = {attr_strings("classlabels_strings", labels, 3)};
    int64_t dims[2] = {2, 3};
    double v[6] = {0.1, 0.2, 0.7, 0.5, 0.25, 0.25};
    kn_tensor *x = mk(KN_F32, 2, dims, v);
    kn_tensor *y = run1(KN_OP_MlZipMap, at, 1, x);
    const kn_seq *q = y->data;
    ck_assert(y->kind == KN_KIND_SEQUENCE && q->n == 2);
    for (int r = 0; r < 2; r++) {
        const kn_map *m = q->items[r]->data;
        ck_assert(m->keys.dims[0] == 3 && m->keys.dtype == KN_STRING && m->values.dtype == KN_F32);
        for (int j = 0; j < 3; j++) {
            ck_assert_str_eq(((char **)m->keys.data)[j], labels[j]);
            ck_assert(((float *)m->values.data)[j] == (float)v[r * 3 + j]);
        }
    }
    kn_tensor_free(y);
    int64_t il[2] = {4, 9};
    kn_attr at2[1] = {attr_ints("classlabels_int64s", il, 2)};
    run_err(KN_OP_MlZipMap, at2, 1, x, "2 labels for 3 columns", "3 columns for 2 class labels");
    kn_attr both[2] = {at[0], at2[0]};
    run_err(KN_OP_MlZipMap, both, 2, x, "both label lists", "exactly one");
    kn_tensor_free(x);
}
END_TEST

/* n unique keys drawn from [0, 4n) in random order, values random. */
static void rand_map(int64_t n, int64_t *keys, float *vals, unsigned *seed) {
    for (int64_t i = 0; i < n; i++) {
        bool dup;
        do {
            keys[i] = (int64_t)(rand_r(seed) % (unsigned)(4 * n)) - n;
            dup = false;
            for (int64_t j = 0; j < i && !dup; j++) dup = keys[j] == keys[i];
        } while (dup);
        vals[i] = (float)rand_r(seed) / (float)RAND_MAX - 0.5f;
    }
}

START_TEST(test_dictvectorizer_vs_scan) {
    unsigned seed = 11;
    enum { N = 300, V = 500 };
    static int64_t keys[N], vocab[V];
    static float vals[N];
    rand_map(N, keys, vals, &seed);
    for (int i = 0; i < V; i++) vocab[i] = (int64_t)(rand_r(&seed) % (4 * N)) - N;
    kn_tensor *m = mk_map(N, keys, NULL, KN_F32, vals, NULL);
    kn_attr at[1] = {attr_ints("int64_vocabulary", vocab, V)};
    kn_tensor *y = run1(KN_OP_MlDictVectorizer, at, 1, m);
    ck_assert(y->ndim == 2 && y->dims[0] == 1 && y->dims[1] == V && y->dtype == KN_F32);
    int hits = 0;
    for (int i = 0; i < V; i++) {
        float want = 0;
        for (int j = 0; j < N; j++)
            if (keys[j] == vocab[i]) want = vals[j], hits++;
        FAST_ASSERT(((float *)y->data)[i] == want, "word %d (%lld): %g vs %g", i, (long long)vocab[i],
                    ((float *)y->data)[i], want);
    }
    ck_assert(hits > 50 && hits < V - 50); /* both cases are exercised */
    kn_tensor_free(y);

    char *sv[2] = {"a", "b"};
    kn_attr sat[1] = {attr_strings("string_vocabulary", sv, 2)};
    run_err(KN_OP_MlDictVectorizer, sat, 1, m, "int keys, string vocabulary", "the vocabulary is string");
    kn_tensor_free(m);

    int64_t rep[3] = {4, 2, 4};
    float rv[3] = {1, 2, 3};
    kn_tensor *r = mk_map(3, rep, NULL, KN_F32, rv, NULL);
    run_err(KN_OP_MlDictVectorizer, at, 1, r, "repeated key", "repeats a key");
    kn_tensor_free(r);

    const char *sk[3] = {"w", "a", "q"}, *svals[3] = {"1", "2", "3"};
    kn_tensor *ms = mk_map(3, NULL, sk, KN_STRING, NULL, svals);
    char *voc[4] = {"q", "x", "w", "a"};
    kn_attr sat2[1] = {attr_strings("string_vocabulary", voc, 4)};
    y = run1(KN_OP_MlDictVectorizer, sat2, 1, ms);
    const char *want[4] = {"3", "", "1", "2"};
    for (int i = 0; i < 4; i++) ck_assert_str_eq(((char **)y->data)[i], want[i]);
    kn_tensor_free(y);
    kn_tensor_free(ms);
}
END_TEST

START_TEST(test_castmap_vs_scan) {
    unsigned seed = 5;
    enum { N = 200 };
    static int64_t keys[N];
    static float vals[N];
    rand_map(N, keys, vals, &seed);
    for (int i = 0; i < N; i++) keys[i] = keys[i] < 0 ? -keys[i] - 1 + 3 * N : keys[i]; /* unique, >= 0 */
    kn_tensor *m = mk_map(N, keys, NULL, KN_F32, vals, NULL);
    kn_tensor *y = run1(KN_OP_MlCastMap, NULL, 0, m); /* DENSE, TO_FLOAT: values in key order */
    ck_assert(y->ndim == 2 && y->dims[1] == N);
    int64_t prev = -1;
    for (int i = 0; i < N; i++) { /* the i-th smallest key's value */
        int64_t best = -1;
        for (int j = 0; j < N; j++)
            if (keys[j] > prev && (best < 0 || keys[j] < keys[best])) best = j;
        FAST_ASSERT(((float *)y->data)[i] == vals[best], "entry %d", i);
        prev = keys[best];
    }
    kn_tensor_free(y);

    int64_t max_map = 2 * N;
    kn_attr sp[3] = {attr_s("map_form", "SPARSE"), attr_i("max_map", max_map), attr_s("cast_to", "TO_INT64")};
    y = run1(KN_OP_MlCastMap, sp, 3, m);
    ck_assert(y->ndim == 2 && y->dims[1] == max_map && y->dtype == KN_I64);
    for (int64_t i = 0; i < max_map; i++) {
        int64_t want = 0;
        for (int j = 0; j < N; j++)
            if (keys[j] == i) want = (int64_t)vals[j];
        FAST_ASSERT(((int64_t *)y->data)[i] == want, "index %lld", (long long)i);
    }
    kn_tensor_free(y);
    kn_tensor_free(m);

    int64_t neg[2] = {-3, 1};
    float nv[2] = {1, 2};
    kn_tensor *mn = mk_map(2, neg, NULL, KN_F32, nv, NULL);
    run_err(KN_OP_MlCastMap, sp, 3, mn, "negative key, SPARSE", "negative key -3");
    kn_tensor_free(mn);

    int64_t sk[2] = {0, 1};
    const char *bad[2] = {"1.5", "abc"};
    kn_tensor *ms = mk_map(2, sk, NULL, KN_STRING, NULL, bad);
    run_err(KN_OP_MlCastMap, NULL, 0, ms, "'abc' to float", "'abc' is not a float");
    kn_attr ts[1] = {attr_s("cast_to", "TO_STRING")};
    y = run1(KN_OP_MlCastMap, ts, 1, ms);
    ck_assert_str_eq(((char **)y->data)[0], "1.5");
    ck_assert_str_eq(((char **)y->data)[1], "abc");
    kn_tensor_free(y);
    kn_attr bad_to[1] = {attr_s("cast_to", "TO_DOUBLE")};
    run_err(KN_OP_MlCastMap, bad_to, 1, ms, "unknown cast_to", "TO_DOUBLE");
    kn_tensor_free(ms);

    int64_t d1[1] = {3};
    kn_tensor *t = mk(KN_F32, 1, d1, NULL);
    run_err(KN_OP_MlCastMap, NULL, 0, t, "a tensor for a map", "must be a map");
    kn_tensor_free(t);
}
END_TEST

static Suite *maps_suite(void) {
    Suite *s = suite_create("maps");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_map_clone_release);
    tcase_add_test(tc, test_zipmap_rows);
    tcase_add_test(tc, test_dictvectorizer_vs_scan);
    tcase_add_test(tc, test_castmap_vs_scan);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return kn_test_run_suite(maps_suite()); }
