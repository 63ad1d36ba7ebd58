/* Public API tests on a real model of the shared zoo (skipped visibly when the zoo is absent):
 * load from a path and from a buffer, input/output info with symbolic dims, runs with
 * library-allocated and caller-owned outputs, input validation errors, and one session serving
 * concurrent runs of different shapes from many threads with results equal to serial runs, the
 * fusion switch of kn_model_options, reduced precision refused on the CPU and sequence buckets. */
#include "kiln.h"
#include "runtime/executor.h"
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char zoo_model[4096];

static bool have_zoo(void) {
    const char *src = getenv("KILN_SOURCE_DIR");
    snprintf(zoo_model, sizeof zoo_model, "%s/../shared/zoo/bert_feature/model.onnx", src ? src : ".");
    FILE *f = fopen(zoo_model, "rb");
    if (!f) {
        printf("skipped: model zoo not found at %s\n", zoo_model);
        return false;
    }
    fclose(f);
    return true;
}

typedef struct {
    int batch, seq;
    int64_t *ids, *mask, *types;
    float *out;
    size_t out_n;
} job;

static void job_init(job *j, int batch, int seq, int salt) {
    j->batch = batch;
    j->seq = seq;
    size_t n = (size_t)batch * seq;
    j->ids = malloc(n * sizeof(int64_t));
    j->mask = malloc(n * sizeof(int64_t));
    j->types = calloc(n, sizeof(int64_t));
    for (size_t i = 0; i < n; i++) {
        j->ids[i] = (int64_t)((i * 37 + salt * 11) % 1000);
        j->mask[i] = (i % seq) < (size_t)(seq - salt % 3) ? 1 : 0;
    }
    j->out = NULL;
}

static kn_status *job_run(kn_session *s, job *j) {
    kn_named_tensor in[3] = {
        {.name = "input_ids", .dtype = KN_I64, .ndim = 2, .dims = {j->batch, j->seq}, .data = j->ids},
        {.name = "attention_mask", .dtype = KN_I64, .ndim = 2, .dims = {j->batch, j->seq}, .data = j->mask},
        {.name = "token_type_ids", .dtype = KN_I64, .ndim = 2, .dims = {j->batch, j->seq}, .data = j->types},
    };
    kn_named_tensor out = {.name = "last_hidden_state"};
    kn_status *st = kn_session_run(s, in, 3, &out, 1);
    if (!st) {
        free(j->out);
        j->out = out.data;
        j->out_n = out.capacity / sizeof(float);
    }
    return st;
}

static void job_free(job *j) {
    free(j->ids);
    free(j->mask);
    free(j->types);
    free(j->out);
}

START_TEST(load_info_run_errors) {
    if (!have_zoo()) return;
    kn_model *m = NULL;
    kn_status *st = kn_model_load(zoo_model, &m);
    ck_assert_msg(!st, "%s", kn_status_message(st));
    kn_session *s = NULL;
    kn_session_options o;
    kn_session_options_init(&o);
    o.num_threads = 2;
    ck_assert_ptr_null(kn_session_create(m, &o, &s));
    ck_assert_int_eq(kn_session_input_count(s), 3);
    kn_value_info vi;
    ck_assert_ptr_null(kn_session_input_info(s, 0, &vi));
    ck_assert_str_eq(vi.name, "input_ids");
    ck_assert_int_eq(vi.dtype, KN_I64);
    ck_assert_int_eq(vi.ndim, 2);
    ck_assert_int_lt(vi.dims[0], 0);
    ck_assert_ptr_nonnull(vi.dim_names[0]);
    ck_assert_ptr_null(kn_session_output_info(s, 0, &vi));
    ck_assert_int_eq(vi.ndim, 3);
    ck_assert_int_eq(vi.dims[2], 64);
    st = kn_session_input_info(s, 7, &vi);
    ck_assert_ptr_nonnull(st);
    kn_status_free(st);

    job j;
    job_init(&j, 2, 5, 0);
    ck_assert_ptr_null(job_run(s, &j));
    ck_assert_uint_eq(j.out_n, 2 * 5 * 64);
    for (size_t i = 0; i < j.out_n; i++) ck_assert(isfinite(j.out[i]));
    ck_assert_uint_gt(kn_session_peak_bytes(s), 0);

    /* caller-owned output buffer: too small is an error, big enough is filled */
    kn_named_tensor in[3] = {
        {.name = "input_ids", .dtype = KN_I64, .ndim = 2, .dims = {2, 5}, .data = j.ids},
        {.name = "attention_mask", .dtype = KN_I64, .ndim = 2, .dims = {2, 5}, .data = j.mask},
        {.name = "token_type_ids", .dtype = KN_I64, .ndim = 2, .dims = {2, 5}, .data = j.types},
    };
    float small[10], big[2 * 5 * 64];
    kn_named_tensor out = {.name = "last_hidden_state", .data = small, .capacity = sizeof small};
    st = kn_session_run(s, in, 3, &out, 1);
    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(kn_status_get_code(st), KN_ERR_INVALID_ARGUMENT);
    kn_status_free(st);
    out = (kn_named_tensor){.name = "last_hidden_state", .data = big, .capacity = sizeof big};
    ck_assert_ptr_null(kn_session_run(s, in, 3, &out, 1));
    ck_assert(memcmp(big, j.out, sizeof big) == 0);

    /* bad inputs: every one an error with a message, never a crash */
    kn_named_tensor bad[3];
    memcpy(bad, in, sizeof bad);
    bad[0].name = "nope";
    st = kn_session_run(s, bad, 3, NULL, 0);
    ck_assert_ptr_nonnull(st);
    ck_assert_ptr_nonnull(strstr(kn_status_message(st), "nope"));
    kn_status_free(st);
    memcpy(bad, in, sizeof bad);
    bad[1].dtype = KN_F32;
    st = kn_session_run(s, bad, 3, NULL, 0);
    ck_assert_ptr_nonnull(st);
    kn_status_free(st);
    st = kn_session_run(s, in, 2, NULL, 0); /* missing input */
    ck_assert_ptr_nonnull(st);
    ck_assert_ptr_nonnull(strstr(kn_status_message(st), "missing input"));
    kn_status_free(st);
    memcpy(bad, in, sizeof bad);
    bad[0].ndim = 3;
    bad[0].dims[2] = 1;
    st = kn_session_run(s, bad, 3, NULL, 0);
    ck_assert_ptr_nonnull(st);
    kn_status_free(st);
    memcpy(bad, in, sizeof bad);
    int64_t ids_oob[10];
    for (int i = 0; i < 10; i++) ids_oob[i] = 5000; /* outside the 1000-token table */
    bad[0].data = ids_oob;
    st = kn_session_run(s, bad, 3, NULL, 0);
    ck_assert_ptr_nonnull(st);
    ck_assert_ptr_nonnull(strstr(kn_status_message(st), "Gather"));
    kn_status_free(st);
    kn_named_tensor unknown_out = {.name = "nothing"};
    st = kn_session_run(s, in, 3, &unknown_out, 1);
    ck_assert_ptr_nonnull(st);
    kn_status_free(st);

    job_free(&j);
    kn_session_free(s);
    kn_model_free(m);
}
END_TEST

START_TEST(load_from_buffer) {
    if (!have_zoo()) return;
    FILE *f = fopen(zoo_model, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n);
    ck_assert_int_eq(fread(buf, 1, (size_t)n, f), n);
    fclose(f);
    kn_model *m = NULL;
    kn_status *st = kn_model_load_buffer(buf, (size_t)n, NULL, &m);
    ck_assert_msg(!st, "%s", kn_status_message(st));
    free(buf); /* the model must not depend on the caller's buffer */
    kn_session *s = NULL;
    ck_assert_ptr_null(kn_session_create(m, NULL, &s));
    job j;
    job_init(&j, 1, 4, 1);
    ck_assert_ptr_null(job_run(s, &j));
    job_free(&j);
    kn_session_free(s);
    kn_model_free(m);
    st = kn_model_load_buffer("garbage!", 8, NULL, &m);
    ck_assert_ptr_nonnull(st);
    ck_assert_ptr_null(m);
    kn_status_free(st);
}
END_TEST

/* kn_model_options.fuse: on by default, the profile of a run shows the fused ops and no Softmax;
 * off, the file's Softmax runs and no fused op; both give the same hidden states (to float32
 * reassociation: the fused kernels add and normalise in another order). */
static void run_profiled(const kn_model_options *mo, job *j, char *prof, size_t len) {
    kn_model *m = NULL;
    kn_status *st = kn_model_load_ex(zoo_model, mo, &m);
    ck_assert_msg(!st, "%s", kn_status_message(st));
    kn_session_options o;
    kn_session_options_init(&o);
    o.num_threads = 2;
    o.profile = 1;
    kn_session *s = NULL;
    ck_assert_ptr_null(kn_session_create(m, &o, &s));
    ck_assert_ptr_null(job_run(s, j));
    kn_session_profile(s, prof, len);
    kn_session_free(s);
    kn_model_free(m);
}

START_TEST(fuse_option) {
    if (!have_zoo()) return;
    kn_model_options mo;
    kn_model_options_init(&mo);
    ck_assert_int_eq(mo.fuse, 1);
    job a, b;
    job_init(&a, 2, 9, 1);
    job_init(&b, 2, 9, 1);
    char pa[4096], pb[4096];
    run_profiled(NULL, &a, pa, sizeof pa);
    mo.fuse = 0;
    run_profiled(&mo, &b, pb, sizeof pb);
    ck_assert_msg(strstr(pa, "KnSdpa") && strstr(pa, "SkipLayerNormalization") && !strstr(pa, "Softmax"),
                  "fused profile:\n%s", pa);
    ck_assert_msg(strstr(pb, "Softmax") && !strstr(pb, "KnSdpa") && !strstr(pb, "SkipLayerNormalization"),
                  "unfused profile:\n%s", pb);
    ck_assert_uint_eq(a.out_n, b.out_n);
    double worst = 0;
    for (size_t i = 0; i < a.out_n; i++) {
        double d = fabs((double)a.out[i] - b.out[i]) / (1e-4 + fabs((double)b.out[i]));
        if (!(d <= worst)) worst = d;
    }
    ck_assert_msg(worst < 1e-2, "fused vs unfused: worst relative difference %g", worst);
    job_free(&a);
    job_free(&b);
}
END_TEST

/* kn_session_run returns intermediate values by name, kept alive by the plan: the attention
 * probabilities of layer 0 (a Softmax over keys: each row sums to 1, masked keys get 0) next to the
 * graph output, which is unchanged by asking for more. With fusion on, a value the fusion replaced
 * is an error that says so. */
START_TEST(intermediate_outputs) {
    if (!have_zoo()) return;
    const char *probs = "/m/encoder/layer.0/attention/self/Softmax_output_0";
    kn_model_options mo;
    kn_model_options_init(&mo);
    mo.fuse = 0;
    kn_model *m = NULL;
    ck_assert_ptr_null(kn_model_load_ex(zoo_model, &mo, &m));
    kn_session *s = NULL;
    ck_assert_ptr_null(kn_session_create(m, NULL, &s));
    job j, plain;
    job_init(&j, 2, 9, 1); /* salt 1: the last key of every row is padding */
    job_init(&plain, 2, 9, 1);
    ck_assert_ptr_null(job_run(s, &plain));
    kn_named_tensor in[3] = {
        {.name = "input_ids", .dtype = KN_I64, .ndim = 2, .dims = {2, 9}, .data = j.ids},
        {.name = "attention_mask", .dtype = KN_I64, .ndim = 2, .dims = {2, 9}, .data = j.mask},
        {.name = "token_type_ids", .dtype = KN_I64, .ndim = 2, .dims = {2, 9}, .data = j.types},
    };
    kn_named_tensor out[3] = {{.name = probs}, {.name = "last_hidden_state"}, {.name = probs}};
    kn_status *st = kn_session_run(s, in, 3, out, 3);
    ck_assert_msg(!st, "%s", st ? kn_status_message(st) : "");
    ck_assert_int_eq(out[0].ndim, 4);
    ck_assert_int_eq(out[0].dims[3], 9);
    ck_assert_uint_eq(out[1].capacity, plain.out_n * sizeof(float));
    ck_assert_int_eq(memcmp(out[1].data, plain.out, out[1].capacity), 0);
    ck_assert_int_eq(memcmp(out[0].data, out[2].data, out[0].capacity), 0);
    const float *p = out[0].data;
    int64_t rows = out[0].dims[0] * out[0].dims[1] * out[0].dims[2];
    for (int64_t r = 0; r < rows; r++) {
        double sum = 0;
        for (int k = 0; k < 9; k++) sum += p[r * 9 + k];
        ck_assert_msg(fabs(sum - 1.0) < 1e-5, "row %lld sums to %g", (long long)r, sum);
        ck_assert_msg(p[r * 9 + 8] < 1e-6f, "row %lld gives the padded key %g", (long long)r, p[r * 9 + 8]);
    }
    for (int i = 0; i < 3; i++) kn_free(out[i].data);
    kn_named_tensor bad = {.name = "no such value"};
    st = kn_session_run(s, in, 3, &bad, 1);
    ck_assert_ptr_nonnull(st);
    ck_assert_msg(strstr(kn_status_message(st), "unknown output 'no such value'"), "%s", kn_status_message(st));
    kn_status_free(st);
    kn_session_free(s);
    kn_model_free(m);

    /* fused: the Softmax is inside kiln:KnSdpa now */
    ck_assert_ptr_null(kn_model_load(zoo_model, &m));
    ck_assert_ptr_null(kn_session_create(m, NULL, &s));
    kn_named_tensor fused = {.name = probs};
    st = kn_session_run(s, in, 3, &fused, 1);
    ck_assert_ptr_nonnull(st);
    ck_assert_msg(strstr(kn_status_message(st), "fuse = 0"), "%s", kn_status_message(st));
    kn_status_free(st);
    ck_assert_ptr_null(fused.data);
    kn_session_free(s);
    kn_model_free(m);
    job_free(&j);
    job_free(&plain);
}
END_TEST

typedef struct {
    kn_session *s;
    job *jobs;
    int n_jobs;
    int failures;
} worker_arg;

static void *worker(void *p) {
    worker_arg *w = p;
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < w->n_jobs; i++) {
            job mine = w->jobs[i];
            mine.out = NULL;
            kn_status *st = job_run(w->s, &mine);
            if (st) {
                w->failures++;
                kn_status_free(st);
                continue;
            }
            if (mine.out_n != w->jobs[i].out_n || memcmp(mine.out, w->jobs[i].out, mine.out_n * sizeof(float)) != 0)
                w->failures++;
            free(mine.out);
        }
    return NULL;
}

START_TEST(concurrent_runs_match_serial) {
    if (!have_zoo()) return;
    kn_model *m = NULL;
    ck_assert_ptr_null(kn_model_load(zoo_model, &m));
    kn_session *s = NULL;
    kn_session_options o;
    kn_session_options_init(&o);
    o.num_threads = 2;
    ck_assert_ptr_null(kn_session_create(m, &o, &s));
    enum { NJ = 5, NT = 6 };
    job jobs[NJ];
    int shapes[NJ][2] = {{1, 3}, {2, 8}, {3, 13}, {1, 1}, {4, 7}};
    for (int i = 0; i < NJ; i++) {
        job_init(&jobs[i], shapes[i][0], shapes[i][1], i);
        ck_assert_ptr_null(job_run(s, &jobs[i])); /* serial reference */
    }
    pthread_t t[NT];
    worker_arg args[NT];
    for (int i = 0; i < NT; i++) {
        args[i] = (worker_arg){s, jobs, NJ, 0};
        pthread_create(&t[i], NULL, worker, &args[i]);
    }
    int failures = 0;
    for (int i = 0; i < NT; i++) {
        pthread_join(t[i], NULL);
        failures += args[i].failures;
    }
    ck_assert_int_eq(failures, 0);
    for (int i = 0; i < NJ; i++) job_free(&jobs[i]);
    kn_session_free(s);
    kn_model_free(m);
}
END_TEST

/* kn_session_options.precision on the CPU: refused, naming the precision. seq_bucket on the CPU:
 * lengths 3, 5 and 7 padded to 8 run through one plan and give the unpadded session's results
 * (up to summation order), cut back to each length, in library- and caller-allocated outputs. */
START_TEST(precision_refused_and_seq_buckets) {
    if (!have_zoo()) return;
    kn_model *m = NULL;
    ck_assert_ptr_null(kn_model_load(zoo_model, &m));
    kn_session_options o;
    kn_session_options_init(&o);
    o.precision = KN_PRECISION_BF16;
    kn_session *s = NULL, *plain = NULL;
    kn_status *st = kn_session_create(m, &o, &s);
    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(kn_status_get_code(st), KN_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(kn_status_message(st), "bf16") && strstr(kn_status_message(st), "CUDA"), "%s",
                  kn_status_message(st));
    kn_status_free(st);
    ck_assert_ptr_null(s);
    kn_session_options_init(&o);
    ck_assert_ptr_null(kn_session_create(m, &o, &plain));
    o.seq_bucket = 8;
    ck_assert_ptr_null(kn_session_create(m, &o, &s));
    int64_t plans0 = kn_session_plans_built(s);
    for (int seq = 3; seq <= 7; seq += 2) {
        job a, b;
        job_init(&a, 2, seq, seq);
        job_init(&b, 2, seq, seq);
        ck_assert_ptr_null(job_run(plain, &a));
        ck_assert_ptr_null(job_run(s, &b));
        ck_assert_uint_eq(a.out_n, b.out_n);
        for (size_t i = 0; i < a.out_n; i++)
            ck_assert_msg(fabsf(a.out[i] - b.out[i]) <= 1e-4f + 1e-4f * fabsf(a.out[i]), "seq %d element %zu: %g vs %g",
                          seq, i, a.out[i], b.out[i]);
        /* a caller buffer of the unpadded size is enough */
        float *buf = malloc(a.out_n * sizeof(float));
        kn_named_tensor in[3] = {
            {.name = "input_ids", .dtype = KN_I64, .ndim = 2, .dims = {2, seq}, .data = b.ids},
            {.name = "attention_mask", .dtype = KN_I64, .ndim = 2, .dims = {2, seq}, .data = b.mask},
            {.name = "token_type_ids", .dtype = KN_I64, .ndim = 2, .dims = {2, seq}, .data = b.types},
        };
        kn_named_tensor out = {.name = "last_hidden_state", .data = buf, .capacity = a.out_n * sizeof(float)};
        ck_assert_ptr_null(kn_session_run(s, in, 3, &out, 1));
        ck_assert_int_eq(out.ndim, 3);
        ck_assert_int_eq(out.dims[1], seq);
        ck_assert_int_eq(memcmp(buf, b.out, a.out_n * sizeof(float)), 0);
        free(buf);
        job_free(&a);
        job_free(&b);
    }
    ck_assert_int_eq(kn_session_plans_built(s) - plans0, 1);
    kn_session_free(s);
    kn_session_free(plain);
    kn_model_free(m);
}
END_TEST

int main(void) {
    Suite *su = suite_create("session");
    TCase *tc = tcase_create("api");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, load_info_run_errors);
    tcase_add_test(tc, load_from_buffer);
    tcase_add_test(tc, fuse_option);
    tcase_add_test(tc, intermediate_outputs);
    tcase_add_test(tc, concurrent_runs_match_serial);
    tcase_add_test(tc, precision_refused_and_seq_buckets);
    suite_add_tcase(su, tc);
    SRunner *r = srunner_create(su);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
