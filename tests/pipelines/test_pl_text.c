/* Checks kn_pl_text_classification, kn_pl_zero_shot_classification and kn_pl_cross_encoder
 * against the answers transformers' pipelines and sentence-transformers' CrossEncoder gave on the
 * same tiny models (tests/pipelines/data/<name>/expected.json, written by gen_textcls_refs.py):
 * labels and order exactly, scores within 1e-4. Every case runs with batch size 32 and 2 so
 * that length sorting and batch splitting are covered. Then the error paths: bad templates, no
 * labels, bad top_k, non-NLI models, NULL inputs, and the truncation warning.
 *
 *   test_pl_text DATA_DIR */
#include "pipelines/pipeline.h"
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOL 1e-4

static int g_pass, g_fail;
static double g_maxdiff;

static void check(int ok, const char *what, const char *detail) {
    if (ok) g_pass++;
    else {
        g_fail++;
        printf("FAIL %s: %s\n", what, detail);
    }
}

typedef struct {
    int n;
    char last[1024];
} warn_log;
static void on_warn(void *ctx, const char *msg) {
    warn_log *w = ctx;
    w->n++;
    snprintf(w->last, sizeof w->last, "%s", msg);
}

static const char **str_array(json_object *a, int *n) {
    *n = (int)json_object_array_length(a);
    const char **v = calloc((size_t)*n + 1, sizeof *v);
    for (int i = 0; i < *n; i++) {
        json_object *e = json_object_array_get_idx(a, i);
        v[i] = e && json_object_is_type(e, json_type_string) ? json_object_get_string(e) : NULL;
    }
    return v;
}

static json_object *field(json_object *o, const char *k) {
    json_object *v = NULL;
    json_object_object_get_ex(o, k, &v);
    return v;
}

/* Compares one label list with the expected [{"label", "score"}, ...]. */
static int same_labels(const kn_pl_labels *got, json_object *exp, char *why, size_t wl) {
    int n = (int)json_object_array_length(exp);
    if (got->n != n) {
        snprintf(why, wl, "%d labels, expected %d", got->n, n);
        return 0;
    }
    for (int j = 0; j < n; j++) {
        json_object *e = json_object_array_get_idx(exp, j);
        const char *l = json_object_get_string(field(e, "label"));
        double s = json_object_get_double(field(e, "score"));
        double d = fabs(got->v[j].score - s);
        if (d > g_maxdiff) g_maxdiff = d;
        if (strcmp(got->v[j].label, l)) {
            snprintf(why, wl, "rank %d: label '%s', expected '%s'", j, got->v[j].label, l);
            return 0;
        }
        if (!(d <= TOL)) {
            snprintf(why, wl, "rank %d (%s): score %.7f, expected %.7f", j, l, got->v[j].score, s);
            return 0;
        }
    }
    return 1;
}

static void run_case(const kn_pipeline *p, const char *name, int ci, json_object *c, int bs, warn_log *wl) {
    const char *task = json_object_get_string(field(c, "task"));
    char what[256], why[512] = "";
    snprintf(what, sizeof what, "%s case %d (%s, batch %d)", name, ci, task, bs);
    int ok = 1;
    int before = wl->n;
    if (!strcmp(task, "text") || !strcmp(task, "zeroshot")) {
        int n;
        const char **texts = str_array(field(c, "texts"), &n);
        json_object *exp = field(c, "expected");
        kn_pl_labels *out = calloc((size_t)n, sizeof *out);
        kn_status *st;
        if (!strcmp(task, "text")) {
            const char **pairs = NULL;
            int np = 0;
            if (field(c, "pairs")) pairs = str_array(field(c, "pairs"), &np);
            kn_pl_text_class_options o;
            kn_pl_text_class_options_init(&o);
            o.top_k = json_object_get_int(field(c, "top_k"));
            const char *act = json_object_get_string(field(c, "activation"));
            o.activation = !strcmp(act, "sigmoid") ? KN_ACT_SIGMOID
                : !strcmp(act, "softmax")          ? KN_ACT_SOFTMAX
                : !strcmp(act, "none")             ? KN_ACT_NONE
                                                   : KN_ACT_DEFAULT;
            st = kn_pl_text_classification(p, n, texts, pairs, &o, out);
            free(pairs);
        } else {
            int nl;
            const char **labels = str_array(field(c, "labels"), &nl);
            kn_pl_zero_shot_options o;
            kn_pl_zero_shot_options_init(&o);
            o.labels = labels;
            o.n_labels = nl;
            o.multi_label = json_object_get_boolean(field(c, "multi_label"));
            if (field(c, "template")) o.template_ = json_object_get_string(field(c, "template"));
            st = kn_pl_zero_shot_classification(p, n, texts, &o, out);
            free(labels);
        }
        if (st) {
            ok = 0;
            snprintf(why, sizeof why, "error: %s", kn_status_message(st));
            kn_status_free(st);
        }
        for (int i = 0; ok && i < n; i++) {
            char w2[400];
            if (!same_labels(&out[i], json_object_array_get_idx(exp, i), w2, sizeof w2)) {
                ok = 0;
                snprintf(why, sizeof why, "input %d: %s", i, w2);
            }
        }
        for (int i = 0; i < n; i++) kn_pl_labels_free(&out[i]);
        free(out);
        /* the long input (over the 64-token limit) must have been truncated with a warning */
        int has_long = 0;
        for (int i = 0; i < n; i++) has_long |= texts[i] && strlen(texts[i]) > 400;
        if (ok && has_long && wl->n == before) {
            ok = 0;
            snprintf(why, sizeof why, "no truncation warning for the long input");
        }
        free(texts);
    } else if (!strcmp(task, "crossenc")) {
        int n;
        const char **docs = str_array(field(c, "docs"), &n);
        kn_pl_cross_encoder_options o;
        kn_pl_cross_encoder_options_init(&o);
        o.top_k = json_object_get_int(field(c, "top_k"));
        if (field(c, "threshold")) o.threshold = (float)json_object_get_double(field(c, "threshold"));
        kn_pl_ranking r = {0};
        kn_status *st = kn_pl_cross_encoder(p, json_object_get_string(field(c, "query")), n, docs, &o, &r);
        json_object *exp = field(c, "expected");
        int ne = (int)json_object_array_length(exp);
        if (st) {
            ok = 0;
            snprintf(why, sizeof why, "error: %s", kn_status_message(st));
            kn_status_free(st);
        } else if (r.n != ne) {
            ok = 0;
            snprintf(why, sizeof why, "%d results, expected %d", r.n, ne);
        }
        for (int j = 0; ok && j < ne; j++) {
            json_object *e = json_object_array_get_idx(exp, j);
            int idx = json_object_get_int(field(e, "index"));
            double s = json_object_get_double(field(e, "score"));
            double d = fabs(r.v[j].score - s);
            if (d > g_maxdiff) g_maxdiff = d;
            if (r.v[j].index != idx || !(d <= TOL)) {
                ok = 0;
                snprintf(why, sizeof why, "rank %d: doc %d score %.7f, expected doc %d score %.7f", j, r.v[j].index,
                         r.v[j].score, idx, s);
            }
        }
        kn_pl_ranking_free(&r);
        free(docs);
    } else {
        ok = 0;
        snprintf(why, sizeof why, "unknown task '%s'", task);
    }
    check(ok, what, why);
}

static kn_pipeline *open_model(const char *data, const char *name, int bs, warn_log *wl) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", data, name);
    kn_pl_options opt;
    kn_pl_options_init(&opt);
    opt.batch_size = bs;
    opt.tokenizer_threads = 1;
    opt.warn = on_warn;
    opt.warn_ctx = wl;
    kn_pipeline *p = NULL;
    kn_status *st = kn_pipeline_open(dir, &opt, &p);
    if (st) {
        char why[1200];
        snprintf(why, sizeof why, "%s", kn_status_message(st));
        check(0, dir, why);
        kn_status_free(st);
        return NULL;
    }
    return p;
}

static void expect_error(kn_status *st, const char *what, const char *needle) {
    char why[1200] = "";
    int ok = st && strstr(kn_status_message(st), needle);
    if (!st) snprintf(why, sizeof why, "succeeded; expected an error mentioning '%s'", needle);
    else if (!ok) snprintf(why, sizeof why, "message '%s' does not mention '%s'", kn_status_message(st), needle);
    check(ok, what, why);
    kn_status_free(st);
}

static void error_paths(const char *data) {
    warn_log wl = {0};
    kn_pipeline *nli = open_model(data, "roberta_nli", 32, &wl), *ce1 = open_model(data, "bert_ce1", 32, &wl);
    kn_pipeline *s3 = open_model(data, "bert_sentiment3", 32, &wl);
    if (!nli || !ce1 || !s3) goto done;
    const char *texts[] = {"Fast trip to Paris by train.", "I loved this movie!"};
    const char *labels[] = {"travel", "cooking"};
    kn_pl_labels out[2] = {{0}};
    kn_pl_zero_shot_options zo;
    kn_pl_zero_shot_options_init(&zo);
    zo.labels = labels;
    zo.n_labels = 2;

    zo.template_ = "This example is about it.";
    expect_error(kn_pl_zero_shot_classification(nli, 2, texts, &zo, out), "template without {}", "has no {}");
    zo.template_ = "{} and {}";
    expect_error(kn_pl_zero_shot_classification(nli, 2, texts, &zo, out), "template with two {}", "more than one {}");
    zo.template_ = "About {label}.";
    expect_error(kn_pl_zero_shot_classification(nli, 2, texts, &zo, out), "template with a named field",
                 "unexpected '{'");
    check(out[0].n == 0 && out[0].v == NULL, "results stay empty after an error", "out[0] was filled");
    /* escaped braces and {0} repeated: accepted, and the label lands in the hypothesis */
    zo.template_ = "{{{0}}} is {0}.";
    kn_status *st = kn_pl_zero_shot_classification(nli, 2, texts, &zo, out);
    check(!st && out[0].n == 2 && out[1].n == 2, "template with {{ }} and {0}",
          st ? kn_status_message(st) : "wrong result size");
    kn_status_free(st);
    kn_pl_labels_free(&out[0]);
    kn_pl_labels_free(&out[1]);
    zo.template_ = NULL;
    zo.n_labels = 0;
    expect_error(kn_pl_zero_shot_classification(nli, 2, texts, &zo, out), "no candidate labels", "no candidate labels");
    zo.n_labels = 2;
    expect_error(kn_pl_zero_shot_classification(ce1, 2, texts, &zo, out), "zero-shot on a one-logit model", "NLI");
    const char *with_null[] = {"ok", NULL};
    expect_error(kn_pl_zero_shot_classification(nli, 2, with_null, &zo, out), "zero-shot NULL text", "input 1 is NULL");

    /* no entailment label: transformers' fallback (last logit) with a warning */
    int w0 = wl.n;
    st = kn_pl_zero_shot_classification(s3, 2, texts, &zo, out);
    check(!st && wl.n > w0 && strstr(wl.last, "entail"), "zero-shot without an entailment label warns",
          st ? kn_status_message(st) : "no warning");
    kn_status_free(st);
    kn_pl_labels_free(&out[0]);
    kn_pl_labels_free(&out[1]);

    kn_pl_text_class_options to;
    kn_pl_text_class_options_init(&to);
    check(to.top_k == 1 && to.activation == KN_ACT_DEFAULT, "text options defaults", "top_k 1, default activation");
    to.top_k = -1;
    expect_error(kn_pl_text_classification(s3, 2, texts, NULL, &to, out), "negative top_k", "top_k -1");
    to.top_k = 7; /* more than the labels: all of them */
    st = kn_pl_text_classification(s3, 2, texts, NULL, &to, out);
    check(!st && out[0].n == 3, "top_k above the label count gives every label",
          st ? kn_status_message(st) : "wrong count");
    kn_status_free(st);
    kn_pl_labels_free(&out[0]);
    kn_pl_labels_free(&out[1]);
    to.top_k = 1;
    expect_error(kn_pl_text_classification(s3, 2, with_null, NULL, &to, out), "text NULL input", "input 1 is NULL");
    /* pairs of NULLs are single texts: same answer as no pairs */
    const char *no_pairs[] = {NULL, NULL};
    kn_pl_labels a[2] = {{0}}, b[2] = {{0}};
    to.top_k = 0;
    kn_status *s1 = kn_pl_text_classification(s3, 2, texts, NULL, &to, a);
    kn_status *s2 = kn_pl_text_classification(s3, 2, texts, no_pairs, &to, b);
    int same = !s1 && !s2 && a[0].n == b[0].n;
    for (int j = 0; same && j < a[0].n; j++) same = a[0].v[j].id == b[0].v[j].id && a[0].v[j].score == b[0].v[j].score;
    check(same, "NULL pair entries mean single texts", "results differ");
    kn_status_free(s1);
    kn_status_free(s2);
    for (int i = 0; i < 2; i++) {
        kn_pl_labels_free(&a[i]);
        kn_pl_labels_free(&b[i]);
    }

    kn_pl_cross_encoder_options co;
    kn_pl_cross_encoder_options_init(&co);
    check(co.top_k == 0 && isinf(co.threshold) && co.threshold < 0, "cross-encoder option defaults",
          "top_k 0, threshold -inf");
    kn_pl_ranking r = {0};
    expect_error(kn_pl_cross_encoder(ce1, NULL, 2, texts, &co, &r), "cross-encoder NULL query", "query is NULL");
    expect_error(kn_pl_cross_encoder(ce1, "q", 2, with_null, &co, &r), "cross-encoder NULL document",
                 "document 1 is NULL");
    co.top_k = -2;
    expect_error(kn_pl_cross_encoder(ce1, "q", 2, texts, &co, &r), "cross-encoder negative top_k", "top_k -2");
    co.top_k = 0;
    st = kn_pl_cross_encoder(ce1, "q", 0, NULL, &co, &r);
    check(!st && r.n == 0, "cross-encoder with no documents", st ? kn_status_message(st) : "results");
    kn_status_free(st);
    /* a forced activation overrides the default: sigmoid of none equals the default sigmoid */
    kn_pl_ranking r1 = {0}, r2 = {0};
    co.activation = KN_ACT_NONE;
    s1 = kn_pl_cross_encoder(ce1, "q", 2, texts, &co, &r1);
    co.activation = KN_ACT_DEFAULT;
    s2 = kn_pl_cross_encoder(ce1, "q", 2, texts, &co, &r2);
    same = !s1 && !s2 && r1.n == 2 && r2.n == 2;
    for (int j = 0; same && j < 2; j++)
        same = r1.v[j].index == r2.v[j].index && fabs(1.0 / (1.0 + exp(-r1.v[j].score)) - r2.v[j].score) < 1e-6;
    check(same, "cross-encoder activation none vs default sigmoid", "mismatch");
    kn_status_free(s1);
    kn_status_free(s2);
    kn_pl_ranking_free(&r1);
    kn_pl_ranking_free(&r2);
done:
    kn_pipeline_free(nli);
    kn_pipeline_free(ce1);
    kn_pipeline_free(s3);
}

static int copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[65536];
    size_t k;
    int ok = a && b;
    while (ok && (k = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, k, b) == k;
    if (a) fclose(a);
    if (b && fclose(b)) ok = 0;
    return ok;
}

/* A sentence-transformers folder naming an activation_fn in config_sentence_transformers.json:
 * custom code is not run (CrossEncoder without trust_remote_code warns and falls back, here to
 * config.json's Identity, so the raw-logit references apply); an unsupported torch class fails. */
static void custom_activation(const char *data) {
    char tmpl[] = "/tmp/kiln_textcls_XXXXXX";
    char *dir = mkdtemp(tmpl);
    if (!dir) {
        check(0, "mkdtemp", "failed");
        return;
    }
    static const char *const files[] = {"model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json",
                                        "modules.json"};
    char from[4096], to[4096];
    int ok = 1;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(from, sizeof from, "%s/distilbert_ce_st_tanh/%s", data, files[i]);
        snprintf(to, sizeof to, "%s/%s", dir, files[i]);
        ok &= copy_file(from, to);
    }
    check(ok, "copy the tanh folder", "copy failed");
    snprintf(to, sizeof to, "%s/config_sentence_transformers.json", dir);
    snprintf(from, sizeof from, "%s/distilbert_ce_identity/expected.json", data);
    json_object *root = json_object_from_file(from);
    json_object *c0 = root ? json_object_array_get_idx(field(root, "cases"), 0) : NULL;
    static const char *const fns[] = {"mypkg.scores.Custom", "torch.nn.modules.activation.ReLU"};
    for (int t = 0; ok && c0 && t < 2; t++) {
        FILE *f = fopen(to, "w");
        fprintf(f, "{\"activation_fn\": \"%s\"}\n", fns[t]);
        fclose(f);
        warn_log wl = {0};
        kn_pl_options opt;
        kn_pl_options_init(&opt);
        opt.warn = on_warn;
        opt.warn_ctx = &wl;
        kn_pipeline *p = NULL;
        kn_status *st = kn_pipeline_open(dir, &opt, &p);
        if (st) {
            check(0, "open the copied folder", kn_status_message(st));
            kn_status_free(st);
            break;
        }
        if (t == 0) {
            int before = wl.n;
            run_case(p, "custom activation_fn (falls back to Identity)", 0, c0, 32, &wl);
            check(wl.n > before && strstr(wl.last, "mypkg.scores.Custom"), "custom activation_fn warns", wl.last);
        } else {
            int n;
            const char **docs = str_array(field(c0, "docs"), &n);
            kn_pl_ranking r = {0};
            expect_error(kn_pl_cross_encoder(p, "q", n, docs, NULL, &r), "unsupported torch activation_fn", "ReLU");
            free(docs);
        }
        kn_pipeline_free(p);
    }
    json_object_put(root);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(to, sizeof to, "%s/%s", dir, files[i]);
        remove(to);
    }
    snprintf(to, sizeof to, "%s/config_sentence_transformers.json", dir);
    remove(to);
    rmdir(dir);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
        return 2;
    }
    static const char *const models[] = {"bert_sentiment3",        "roberta_nli",
                                         "distilbert_nli_e0",      "bert_ce1",
                                         "distilbert_ce_identity", "distilbert_ce_st_tanh"};
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s/expected.json", argv[1], models[m]);
        json_object *root = json_object_from_file(path);
        json_object *cases = root ? field(root, "cases") : NULL;
        if (!cases) {
            check(0, path, "missing or not JSON");
            json_object_put(root);
            continue;
        }
        static const int sizes[] = {32, 2};
        for (int b = 0; b < 2; b++) {
            warn_log wl = {0};
            kn_pipeline *p = open_model(argv[1], models[m], sizes[b], &wl);
            if (!p) continue;
            for (size_t i = 0; i < json_object_array_length(cases); i++)
                run_case(p, models[m], (int)i, json_object_array_get_idx(cases, i), sizes[b], &wl);
            kn_pipeline_free(p);
        }
        json_object_put(root);
    }
    error_paths(argv[1]);
    custom_activation(argv[1]);
    printf("max score difference %.3g\n", g_maxdiff);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
