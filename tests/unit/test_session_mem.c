/* Memory behaviour of sessions over many runs, on the shared zoo's small BERT (skipped visibly
 * when the zoo is absent): the arena pool must not grow with the number of runs when batch shapes
 * vary (peak RSS after ten times the runs stays within a small margin of the peak after the first
 * pass), and a run that fails after the library allocated an output leaves the caller nothing to
 * free (kiln.h's ownership rule). */
#include "kiln.h"
#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

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

static kn_session *open_session(kn_model **m) {
    ck_assert_ptr_null(kn_model_load(zoo_model, m));
    kn_session *s = NULL;
    kn_session_options o;
    kn_session_options_init(&o);
    o.num_threads = 1;
    ck_assert_ptr_null(kn_session_create(*m, &o, &s));
    return s;
}

/* One run of shape batch x seq; the output is allocated by the library and freed here. */
static void run_shape(kn_session *s, int batch, int seq) {
    size_t n = (size_t)batch * (size_t)seq;
    int64_t *ids = malloc(n * sizeof *ids), *mask = malloc(n * sizeof *mask), *types = calloc(n, sizeof *types);
    ck_assert(ids && mask && types);
    for (size_t i = 0; i < n; i++) {
        ids[i] = (int64_t)((i * 31 + 7) % 1000);
        mask[i] = 1;
    }
    kn_named_tensor in[3] = {
        {.name = "input_ids", .dtype = KN_I64, .ndim = 2, .dims = {batch, seq}, .data = ids},
        {.name = "attention_mask", .dtype = KN_I64, .ndim = 2, .dims = {batch, seq}, .data = mask},
        {.name = "token_type_ids", .dtype = KN_I64, .ndim = 2, .dims = {batch, seq}, .data = types},
    };
    kn_named_tensor out = {.name = "last_hidden_state"};
    kn_status *st = kn_session_run(s, in, 3, &out, 1);
    ck_assert_msg(!st, "%s", kn_status_message(st));
    kn_free(out.data);
    free(ids);
    free(mask);
    free(types);
}

static long peak_rss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Shapes as a text stream gives them: a long batch now and then between many short ones, and
 * sequence lengths that keep changing, so plans are evicted and rebuilt and arenas of every size
 * are asked for in turn. */
static void one_pass(kn_session *s, uint32_t *rng) {
    for (int i = 0; i < 60; i++) {
        *rng = *rng * 1664525u + 1013904223u;
        int seq = 1 + (int)((*rng >> 8) % 64);
        int batch = 1 + (int)((*rng >> 20) % 8);
        if (i % 10 == 0) {
            seq = 128;
            batch = 8;
        }
        run_shape(s, batch, seq);
    }
}

START_TEST(rss_flat_over_mixed_shapes) {
    if (!have_zoo()) return;
    kn_model *m = NULL;
    kn_session *s = open_session(&m);
    uint32_t rng = 12345;
    one_pass(s, &rng);
    long first = peak_rss_kb();
    for (int k = 0; k < 9; k++) one_pass(s, &rng);
    long last = peak_rss_kb();
    printf("peak RSS after 1x: %ld kB, after 10x: %ld kB\n", first, last);
    /* a pool that kept one arena per run would add megabytes per pass; 4 MB covers allocator noise */
    ck_assert_msg(last <= first + 4096, "peak RSS grew from %ld kB to %ld kB over 10x the runs", first, last);
    kn_session_free(s);
    kn_model_free(m);
}
END_TEST

START_TEST(failed_run_frees_its_outputs) {
    if (!have_zoo()) return;
    kn_model *m = NULL;
    kn_session *s = open_session(&m);
    int64_t ids[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, mask[10], types[10] = {0};
    for (int i = 0; i < 10; i++) mask[i] = 1;
    kn_named_tensor in[3] = {
        {.name = "input_ids", .dtype = KN_I64, .ndim = 2, .dims = {2, 5}, .data = ids},
        {.name = "attention_mask", .dtype = KN_I64, .ndim = 2, .dims = {2, 5}, .data = mask},
        {.name = "token_type_ids", .dtype = KN_I64, .ndim = 2, .dims = {2, 5}, .data = types},
    };
    kn_value_info vi;
    ck_assert_ptr_null(kn_session_output_info(s, 0, &vi));
    /* the first output is allocated by the library, the second asks for the same value into a
     * buffer that is too small: the run fails after the first allocation */
    float small[4];
    kn_named_tensor out[2] = {
        {.name = vi.name},
        {.name = vi.name, .data = small, .capacity = sizeof small},
    };
    kn_status *st = kn_session_run(s, in, 3, out, 2);
    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(kn_status_get_code(st), KN_ERR_INVALID_ARGUMENT);
    kn_status_free(st);
    ck_assert_ptr_null(out[0].data);
    ck_assert_uint_eq(out[0].capacity, 0);
    ck_assert_ptr_eq(out[1].data, small); /* the caller's buffer is left to the caller */
    /* the same outputs then succeed: nothing was left half-owned */
    out[1] = (kn_named_tensor){.name = vi.name};
    ck_assert_ptr_null(kn_session_run(s, in, 3, out, 2));
    ck_assert_ptr_nonnull(out[0].data);
    ck_assert_ptr_nonnull(out[1].data);
    ck_assert(memcmp(out[0].data, out[1].data, out[0].capacity) == 0);
    kn_free(out[0].data);
    kn_free(out[1].data);
    kn_session_free(s);
    kn_model_free(m);
}
END_TEST

int main(void) {
    Suite *su = suite_create("session_mem");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, rss_flat_over_mixed_shapes);
    tcase_add_test(tc, failed_run_frees_its_outputs);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
