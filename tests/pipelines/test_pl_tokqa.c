/* tokenClassification and questionAnswering against transformers' pipelines: runs the C task
 * functions on the tiny model folders under tests/pipelines/data/ and compares with the answers
 * recorded by gen_tokqa_refs.py (tokqa_expected.json): labels, words, offsets and indices exactly,
 * scores within 1e-4. Also checks the tokenizer's only_second overflow windows (ids, type ids,
 * offsets) against the package's, and that bad input is refused with an error. */
#include "pipelines/pipeline.h"
#include "pipelines/tokenizer.h"
#include "runtime/core/status.h"
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_data;
static int g_fail, g_checks;
static double g_maxdiff;
static int g_warnings;

#define FAIL(...) \
    do { \
        g_fail++; \
        fprintf(stderr, "FAIL: " __VA_ARGS__); \
        fputc('\n', stderr); \
    } while (0)

static void count_warn(void *ctx, const char *msg) {
    (void)ctx;
    (void)msg;
    g_warnings++;
}

static json_object *get(json_object *o, const char *k) {
    json_object *v = NULL;
    json_object_object_get_ex(o, k, &v);
    return v;
}

static char names[8][64];
static kn_pipeline *cache[8];

static kn_pipeline *open_model(const char *name) {
    for (int i = 0; i < 8; i++)
        if (cache[i] && !strcmp(names[i], name)) return cache[i];
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", g_data, name);
    kn_pl_options o;
    kn_pl_options_init(&o);
    o.batch_size = 3; /* several batches, sorted and padded */
    o.warn = count_warn;
    kn_pipeline *p = NULL;
    kn_status *st = kn_pipeline_open(dir, &o, &p);
    if (st) {
        FAIL("open %s: %s", dir, kn_status_message(st));
        kn_status_free(st);
        return NULL;
    }
    for (int i = 0; i < 8; i++)
        if (!cache[i]) {
            cache[i] = p;
            snprintf(names[i], sizeof names[i], "%s", name);
            return p;
        }
    return p;
}

static void close_models(void) {
    for (int i = 0; i < 8; i++) {
        kn_pipeline_free(cache[i]);
        cache[i] = NULL;
    }
}

static void score_check(const char *what, double got, double want) {
    double d = fabs(got - want);
    if (d > g_maxdiff) g_maxdiff = d;
    if (!(d <= 1e-4)) FAIL("%s: score %.6f, transformers %.6f", what, got, want);
}

static kn_pl_aggregation agg_of(const char *s) {
    if (!strcmp(s, "simple")) return KN_AGG_SIMPLE;
    if (!strcmp(s, "first")) return KN_AGG_FIRST;
    if (!strcmp(s, "average")) return KN_AGG_AVERAGE;
    if (!strcmp(s, "max")) return KN_AGG_MAX;
    return KN_AGG_NONE;
}

static void tokcls_case(json_object *c) {
    const char *model = json_object_get_string(get(c, "model")), *agg = json_object_get_string(get(c, "aggregation"));
    kn_pipeline *p = open_model(model);
    if (!p) return;
    json_object *texts = get(c, "texts"), *words = get(c, "words"), *exp = get(c, "expected");
    int n = (int)json_object_array_length(exp);
    kn_pl_token_class_options o;
    kn_pl_token_class_options_init(&o);
    o.aggregation = agg_of(agg);
    kn_pl_entities *out = calloc((size_t)n, sizeof *out);
    kn_status *st;
    if (texts) {
        const char **t = calloc((size_t)n, sizeof *t);
        for (int i = 0; i < n; i++) t[i] = json_object_get_string(json_object_array_get_idx(texts, i));
        st = kn_pl_token_classification(p, n, t, &o, out);
        free(t);
    } else {
        const char ***w = calloc((size_t)n, sizeof *w);
        int *nw = calloc((size_t)n, sizeof *nw);
        for (int i = 0; i < n; i++) {
            json_object *wl = json_object_array_get_idx(words, i);
            nw[i] = (int)json_object_array_length(wl);
            w[i] = calloc((size_t)nw[i] + 1, sizeof **w);
            for (int k = 0; k < nw[i]; k++) w[i][k] = json_object_get_string(json_object_array_get_idx(wl, k));
        }
        st = kn_pl_token_classification_words(p, n, (const char *const *const *)w, nw, &o, out);
        for (int i = 0; i < n; i++) free(w[i]);
        free(w);
        free(nw);
    }
    if (st) {
        FAIL("%s %s: %s", model, agg, kn_status_message(st));
        kn_status_free(st);
        free(out);
        return;
    }
    int bad0 = g_fail, ents = 0;
    for (int i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(exp, i);
        int ne = (int)json_object_array_length(e);
        g_checks++;
        if (ne != out[i].n) {
            FAIL("%s %s%s input %d: %d entities, transformers %d", model, agg, words ? " (words)" : "", i, out[i].n,
                 ne);
            for (int k = 0; k < out[i].n; k++)
                fprintf(stderr, "   got %s '%s' %d-%d %.4f\n", out[i].v[k].entity, out[i].v[k].word, out[i].v[k].start,
                        out[i].v[k].end, out[i].v[k].score);
            for (int k = 0; k < ne; k++)
                fprintf(stderr, "  want %s\n", json_object_to_json_string(json_object_array_get_idx(e, k)));
            continue;
        }
        for (int k = 0; k < ne; k++) {
            json_object *x = json_object_array_get_idx(e, k);
            kn_pl_entity *g = &out[i].v[k];
            char what[256];
            snprintf(what, sizeof what, "%s %s%s input %d entity %d", model, agg, words ? " (words)" : "", i, k);
            ents++;
            if (strcmp(g->entity, json_object_get_string(get(x, "entity"))))
                FAIL("%s: entity %s, transformers %s", what, g->entity, json_object_get_string(get(x, "entity")));
            if (strcmp(g->word, json_object_get_string(get(x, "word"))))
                FAIL("%s: word '%s', transformers '%s'", what, g->word, json_object_get_string(get(x, "word")));
            if (g->start != json_object_get_int(get(x, "start")) || g->end != json_object_get_int(get(x, "end")))
                FAIL("%s: span %d-%d, transformers %d-%d", what, g->start, g->end, json_object_get_int(get(x, "start")),
                     json_object_get_int(get(x, "end")));
            if (g->index != json_object_get_int(get(x, "index")))
                FAIL("%s: index %d, transformers %d", what, g->index, json_object_get_int(get(x, "index")));
            score_check(what, g->score, json_object_get_double(get(x, "score")));
        }
    }
    printf("%s tokenClassification %s %-8s %d inputs, %d entities: %s\n", g_fail == bad0 ? "ok  " : "FAIL", model, agg,
           n, ents, words ? "pre-split words" : "texts");
    for (int i = 0; i < n; i++) kn_pl_entities_free(&out[i]);
    free(out);
}

static void qa_case(json_object *c) {
    kn_pipeline *p = open_model(json_object_get_string(get(c, "model")));
    if (!p) return;
    json_object *opts = get(c, "options"), *qs = get(c, "questions"), *cs = get(c, "contexts"),
                *exp = get(c, "expected");
    kn_pl_qa_options o;
    kn_pl_qa_options_init(&o);
    json_object *v;
    if ((v = get(opts, "top_k"))) o.top_k = json_object_get_int(v);
    if ((v = get(opts, "max_answer_len"))) o.max_answer_len = json_object_get_int(v);
    if ((v = get(opts, "max_seq_len"))) o.max_seq_len = json_object_get_int(v);
    if ((v = get(opts, "doc_stride"))) o.doc_stride = json_object_get_int(v);
    if ((v = get(opts, "handle_impossible_answer"))) o.handle_impossible_answer = json_object_get_boolean(v);
    int n = (int)json_object_array_length(exp);
    const char **q = calloc((size_t)n, sizeof *q), **cx = calloc((size_t)n, sizeof *cx);
    for (int i = 0; i < n; i++) {
        q[i] = json_object_get_string(json_object_array_get_idx(qs, i));
        cx[i] = json_object_get_string(json_object_array_get_idx(cs, i));
    }
    kn_pl_answers *out = calloc((size_t)n, sizeof *out);
    kn_status *st = kn_pl_question_answering(p, n, q, cx, &o, out);
    int bad0 = g_fail;
    if (st) {
        FAIL("qa %s: %s", json_object_to_json_string(opts), kn_status_message(st));
        kn_status_free(st);
    }
    for (int i = 0; !st && i < n; i++) {
        json_object *e = json_object_array_get_idx(exp, i);
        int ne = (int)json_object_array_length(e);
        g_checks++;
        if (ne != out[i].n) {
            FAIL("qa %s input %d: %d answers, transformers %d", json_object_to_json_string(opts), i, out[i].n, ne);
            continue;
        }
        for (int k = 0; k < ne; k++) {
            json_object *x = json_object_array_get_idx(e, k);
            kn_pl_answer *a = &out[i].v[k];
            char what[256];
            snprintf(what, sizeof what, "qa %s input %d answer %d", json_object_to_json_string(opts), i, k);
            if (strcmp(a->answer, json_object_get_string(get(x, "answer"))) ||
                a->start != json_object_get_int(get(x, "start")) || a->end != json_object_get_int(get(x, "end")))
                FAIL("%s: '%s' %d-%d, transformers '%s' %d-%d", what, a->answer, a->start, a->end,
                     json_object_get_string(get(x, "answer")), json_object_get_int(get(x, "start")),
                     json_object_get_int(get(x, "end")));
            score_check(what, a->score, json_object_get_double(get(x, "score")));
        }
    }
    printf("%s questionAnswering %s: %d questions\n", g_fail == bad0 ? "ok  " : "FAIL",
           json_object_to_json_string(opts), n);
    for (int i = 0; i < n; i++) kn_pl_answers_free(&out[i]);
    free(out);
    free(q);
    free(cx);
}

static void window_case(json_object *c) {
    char dir[4096], err[512];
    snprintf(dir, sizeof dir, "%s/%s", g_data, json_object_get_string(get(c, "model")));
    kn_tokenizer *tok = kn_tokenizer_load(dir, err, sizeof err);
    if (!tok) {
        FAIL("tokenizer %s: %s", dir, err);
        return;
    }
    const char *q = json_object_get_string(get(c, "question")), *cx = json_object_get_string(get(c, "context"));
    kn_encode_options eo;
    kn_encode_options_init(&eo);
    eo.max_length = json_object_get_int(get(c, "max_length"));
    eo.stride = json_object_get_int(get(c, "stride"));
    eo.strategy = KN_TRUNCATE_ONLY_SECOND;
    eo.per_call = 1;
    kn_encoding enc;
    int bad0 = g_fail;
    json_object *wins = get(c, "windows");
    int nw = (int)json_object_array_length(wins);
    g_checks++;
    if (kn_tokenizer_encode(tok, q, strlen(q), cx, strlen(cx), &eo, &enc, err, sizeof err)) {
        FAIL("encode: %s", err);
        kn_tokenizer_free(tok);
        return;
    }
    if (1 + enc.n_overflow != nw)
        FAIL("windows max_length %d stride %d: %d windows, transformers %d", eo.max_length, eo.stride,
             1 + enc.n_overflow, nw);
    for (int w = 0; w < nw && w < 1 + enc.n_overflow; w++) {
        const kn_encoding *e = w ? &enc.overflow[w - 1] : &enc;
        json_object *x = json_object_array_get_idx(wins, w), *ids = get(x, "ids"), *types = get(x, "type_ids"),
                    *offs = get(x, "offsets");
        int n = (int)json_object_array_length(ids);
        if (n != e->n) {
            FAIL("window %d (max_length %d stride %d): %d tokens, transformers %d", w, eo.max_length, eo.stride, e->n,
                 n);
            continue;
        }
        for (int i = 0; i < n; i++) {
            json_object *o = json_object_array_get_idx(offs, i);
            if (e->ids[i] != json_object_get_int(json_object_array_get_idx(ids, i)) ||
                e->type_ids[i] != json_object_get_int(json_object_array_get_idx(types, i)) ||
                e->offsets[2 * i] != json_object_get_int(json_object_array_get_idx(o, 0)) ||
                e->offsets[2 * i + 1] != json_object_get_int(json_object_array_get_idx(o, 1))) {
                FAIL("window %d token %d (max_length %d stride %d): id %d type %d [%d,%d] differ from transformers'", w,
                     i, eo.max_length, eo.stride, e->ids[i], e->type_ids[i], e->offsets[2 * i], e->offsets[2 * i + 1]);
                break;
            }
        }
    }
    printf("%s overflow windows (only_second) max_length %d stride %d: %d windows\n", g_fail == bad0 ? "ok  " : "FAIL",
           eo.max_length, eo.stride, nw);
    kn_encoding_free(&enc);
    kn_tokenizer_free(tok);
}

/* Bad input comes back as an error, never a crash. */
static void bad_input(void) {
    kn_pipeline *qa = open_model("qa_bert"), *tc = open_model("tc_bert");
    if (!qa || !tc) return;
    const char *q[] = {""}, *c[] = {"Some context."}, *q2[] = {"Who?"};
    kn_pl_answers a[1];
    kn_pl_qa_options o;
    kn_pl_qa_options_init(&o);
    struct {
        const char *what;
        kn_status *st;
    } cases[4];
    cases[0].what = "empty question";
    cases[0].st = kn_pl_question_answering(qa, 1, q, c, &o, a);
    o.doc_stride = 200;
    o.max_seq_len = 64;
    cases[1].what = "doc_stride > max_seq_len";
    cases[1].st = kn_pl_question_answering(qa, 1, q2, c, &o, a);
    kn_pl_qa_options_init(&o);
    o.top_k = 0;
    cases[2].what = "top_k 0";
    cases[2].st = kn_pl_question_answering(qa, 1, q2, c, &o, a);
    kn_pl_token_class_options t;
    kn_pl_token_class_options_init(&t);
    t.aggregation = (kn_pl_aggregation)9;
    kn_pl_entities e[1];
    cases[3].what = "unknown aggregation";
    cases[3].st = kn_pl_token_classification(tc, 1, c, &t, e);
    for (int i = 0; i < 4; i++) {
        g_checks++;
        if (!cases[i].st) FAIL("bad input '%s' was accepted", cases[i].what);
        else {
            printf("ok   refused %s: %s\n", cases[i].what, kn_status_message(cases[i].st));
            kn_status_free(cases[i].st);
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s tests/pipelines/data\n", argv[0]);
        return 2;
    }
    g_data = argv[1];
    char path[4096];
    snprintf(path, sizeof path, "%s/tokqa_expected.json", g_data);
    json_object *root = json_object_from_file(path);
    if (!root) {
        fprintf(stderr, "%s: cannot read\n", path);
        return 1;
    }
    json_object *tc = get(root, "tokcls"), *qa = get(root, "qa"), *wins = get(root, "qa_windows");
    for (size_t i = 0; tc && i < json_object_array_length(tc); i++) tokcls_case(json_object_array_get_idx(tc, i));
    for (size_t i = 0; qa && i < json_object_array_length(qa); i++) qa_case(json_object_array_get_idx(qa, i));
    for (size_t i = 0; wins && i < json_object_array_length(wins); i++) window_case(json_object_array_get_idx(wins, i));
    bad_input();
    close_models();
    json_object_put(root);
    if (!tc || !qa || !wins || g_checks < 40) { FAIL("the reference file lacks cases (%d checks)", g_checks); }
    printf("%d checks, %d failures, max score difference %.3g, %d warnings\n", g_checks, g_fail, g_maxdiff, g_warnings);
    return g_fail ? 1 : 0;
}
