/* `kiln run`: a Hugging Face task over JSON lines. Lines come from a file, every *.jsonl of a
 * folder, or stdin; results go to result_K.jsonl files of an output folder, or stdout, one line
 * per input line in input order (tests/pipelines/README.md has the format, with Hugot's field
 * names). Input is streamed a chunk at a time so memory stays constant whatever the file size; a
 * bad line becomes an error line and never stops the run.
 *
 * Every line gets exactly one output line (a blank one an error line), whatever its bytes: lines are read with
 * their length (NUL bytes do not end them), a line over --max-line-bytes is skipped to its end and
 * answered with an error, invalid UTF-8 is replaced by U+FFFD (as the tokenizer does) with a
 * "warning" field saying so, and lines are checked as strict JSON (RFC 8259: no NaN, trailing
 * commas, single quotes or raw control characters) before json-c builds them, so the output is
 * always valid UTF-8 JSON. U+0000 inside a text goes to the pipelines as C0 80 (pipeline.h), so it is
 * a character of the text, not its end. */
#ifdef KILN_HAVE_PIPELINES
#include "tools/cli/cli.h"
#include "pipelines/pipeline.h"
#include "pipelines/tok_internal.h"
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef enum { RT_FEATURE, RT_TEXT, RT_TOKEN, RT_ZERO, RT_CROSS, RT_IMAGE, RT_QA, RT_COUNT } run_type;
static const char *const run_type_names[RT_COUNT] = {
    "featureExtraction", "textClassification",  "tokenClassification", "zeroShotClassification",
    "crossEncoder",      "imageClassification", "questionAnswering"};

/* One input line and, after the chunk ran, its result or error. */
typedef struct run_item {
    long line;
    char *raw;      /* the line as read, invalid UTF-8 repaired (echoed when it is not JSON) */
    size_t raw_len; /* its length: it may hold NUL bytes */
    char *warn;     /* a note on the line that did not stop it (repaired bytes) */
    char **owned;   /* texts rewritten for the pipelines (U+0000 as C0 80) */
    int n_owned;
    json_object *obj;   /* the parsed line */
    json_object *input; /* its "input" (borrowed from obj), NULL when absent */
    char *err;          /* an error line's message */
    json_object *out;   /* the result */
    const char *a, *b;  /* text + pair, question + context, query + pair document */
    char *path;         /* an image path resolved against the input file's folder */
    const char **list;  /* documents (crossEncoder) or words (tokenClassification) */
    int n_list;
    bool has_list;
} run_item;

typedef struct run_ctx {
    run_type type;
    bool image_model; /* featureExtraction over pixel_values */
    kn_pipeline *p;
    kn_pl_feature_options feat;
    kn_pl_text_class_options text;
    kn_pl_token_class_options token;
    kn_pl_zero_shot_options zero;
    kn_pl_cross_encoder_options cross;
    kn_pl_image_class_options image;
    kn_pl_qa_options qa;
    const char *src; /* the input's name for messages */
    char *base_dir;  /* relative image paths start here (NULL: the working folder) */
    run_item **cur;  /* the items of the pipeline call under way (warnings name their lines) */
    int n_cur;
    size_t max_line_bytes; /* longer lines are answered with an error, not read into memory */
    bool progress;
    double t0, last_draw;
    long done, total, failed;
} run_ctx;

static volatile sig_atomic_t run_interrupts;

static void run_on_sigint(int sig) {
    (void)sig;
    if (++run_interrupts >= 2) _exit(130);
    static const char msg[] = "\nkiln run: interrupted: finishing the current chunk (Ctrl-C again to stop at once)\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
}

static double run_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void run_progress_clear(const run_ctx *c) {
    if (c->progress) fputs("\r\033[K", stderr);
}

static void run_progress_draw(run_ctx *c, bool final) {
    if (!c->progress) return;
    double now = run_now();
    if (!final && now - c->last_draw < 0.1) return;
    c->last_draw = now;
    double el = now - c->t0, rate = el > 0 ? c->done / el : 0;
    fprintf(stderr, "\r\033[Kkiln run: %ld", c->done);
    if (c->total > 0) fprintf(stderr, "/%ld", c->total);
    fprintf(stderr, " items, %.1f items/s", rate);
    if (c->total > c->done && rate > 0) {
        long eta = (long)((c->total - c->done) / rate + 0.5);
        fprintf(stderr, ", ETA %ld:%02ld", eta / 60, eta % 60);
    }
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

/* Pipeline warnings say "input K" for the K-th input of the call; name the line instead. */
static void run_warn(void *ctx, const char *msg) {
    run_ctx *c = ctx;
    int k, pos = 0;
    run_progress_clear(c);
    if (sscanf(msg, "input %d%n", &k, &pos) == 1 && pos > 0 && k >= 0 && k < c->n_cur)
        fprintf(stderr, "kiln run: warning: %s:%ld: the input%s\n", c->src, c->cur[k]->line, msg + pos);
    else fprintf(stderr, "kiln run: warning: %s\n", msg);
}

static json_object *run_num(double v) { return isfinite(v) ? json_object_new_double(v) : NULL; }

static void run_item_reset(run_item *it) {
    json_object_put(it->out);
    it->out = NULL;
    free(it->err);
    it->err = NULL;
}

static void run_item_free(run_item *it) {
    run_item_reset(it);
    free(it->raw);
    free(it->warn);
    for (int i = 0; i < it->n_owned; i++) free(it->owned[i]);
    free(it->owned);
    json_object_put(it->obj);
    free(it->path);
    free(it->list);
    memset(it, 0, sizeof *it);
}

static void run_item_fail(run_item *it, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void run_item_fail(run_item *it, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_object_put(it->out);
    it->out = NULL;
    free(it->err);
    size_t len = strlen(msg) + 32;
    it->err = malloc(len);
    if (it->err) snprintf(it->err, len, "line %ld: %s", it->line, msg);
}

/* ---- parsing a line into the task's arguments ---- */

static const char *run_str(json_object *o) {
    return o && json_object_is_type(o, json_type_string) ? json_object_get_string(o) : NULL;
}

/* A JSON array of strings into a malloc'd array of borrowed pointers; false when not one. */
static bool run_str_list(json_object *a, const char ***out, int *n) {
    if (!json_object_is_type(a, json_type_array)) return false;
    size_t len = json_object_array_length(a);
    const char **v = malloc(sizeof *v * (len ? len : 1));
    if (!v) return false;
    for (size_t i = 0; i < len; i++)
        if (!(v[i] = run_str(json_object_array_get_idx(a, i)))) {
            free(v);
            return false;
        }
    *out = v;
    *n = (int)len;
    return true;
}

static void run_resolve_path(const run_ctx *c, run_item *it, const char *path) {
    if (path[0] == '/' || !c->base_dir) it->path = strdup(path);
    else {
        size_t len = strlen(c->base_dir) + strlen(path) + 2;
        if ((it->path = malloc(len))) snprintf(it->path, len, "%s/%s", c->base_dir, path);
    }
    it->a = it->path;
    if (!it->path) run_item_fail(it, "out of memory");
}

/* ---- strict JSON (RFC 8259) ---- */

/* json-c accepts NaN, Infinity, raw control characters and "1." even in strict mode, so lines are
 * checked here first; json-c then only builds what passed. */
typedef struct run_jv {
    const char *s;
    size_t len, pos;
    const char *why;
    int depth;
} run_jv;

static void run_jv_ws(run_jv *v) {
    while (v->pos < v->len &&
           (v->s[v->pos] == ' ' || v->s[v->pos] == '\t' || v->s[v->pos] == '\n' || v->s[v->pos] == '\r'))
        v->pos++;
}

static bool run_jv_fail(run_jv *v, const char *why) {
    v->why = why;
    return false;
}

static bool run_jv_digits(run_jv *v) {
    size_t p0 = v->pos;
    while (v->pos < v->len && v->s[v->pos] >= '0' && v->s[v->pos] <= '9') v->pos++;
    return v->pos > p0;
}

static bool run_jv_string(run_jv *v) {
    v->pos++; /* the opening quote */
    while (v->pos < v->len) {
        unsigned char ch = (unsigned char)v->s[v->pos];
        if (ch == '"') {
            v->pos++;
            return true;
        }
        if (ch < 0x20) return run_jv_fail(v, "a control character inside a string must be escaped");
        if (ch != '\\') {
            v->pos++;
            continue;
        }
        if (++v->pos >= v->len) break;
        ch = (unsigned char)v->s[v->pos];
        if (ch == 'u') {
            for (int k = 1; k <= 4; k++)
                if (v->pos + k >= v->len || !isxdigit((unsigned char)v->s[v->pos + k])) {
                    v->pos += k;
                    return run_jv_fail(v, "\\u needs four hex digits");
                }
            v->pos += 5;
        } else if (strchr("\"\\/bfnrt", ch) && ch) {
            v->pos++;
        } else {
            return run_jv_fail(v, "unknown escape in a string");
        }
    }
    return run_jv_fail(v, "the line ends inside a string");
}

static bool run_jv_value(run_jv *v) {
    run_jv_ws(v);
    if (v->pos >= v->len) return run_jv_fail(v, "a value is missing");
    char ch = v->s[v->pos];
    if (ch == '{' || ch == '[') {
        if (++v->depth > 64) return run_jv_fail(v, "nested deeper than 64 levels");
        char close = ch == '{' ? '}' : ']';
        v->pos++;
        run_jv_ws(v);
        if (v->pos < v->len && v->s[v->pos] == close) {
            v->pos++;
            v->depth--;
            return true;
        }
        for (;;) {
            if (close == '}') {
                run_jv_ws(v);
                if (v->pos >= v->len || v->s[v->pos] != '"') return run_jv_fail(v, "expected a quoted member name");
                if (!run_jv_string(v)) return false;
                run_jv_ws(v);
                if (v->pos >= v->len || v->s[v->pos] != ':')
                    return run_jv_fail(v, "expected ':' after the member name");
                v->pos++;
            }
            if (!run_jv_value(v)) return false;
            run_jv_ws(v);
            if (v->pos < v->len && v->s[v->pos] == ',') {
                v->pos++;
                run_jv_ws(v);
                if (v->pos < v->len && v->s[v->pos] == close) return run_jv_fail(v, "a trailing comma");
                continue;
            }
            if (v->pos < v->len && v->s[v->pos] == close) {
                v->pos++;
                v->depth--;
                return true;
            }
            return run_jv_fail(v, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    if (ch == '"') return run_jv_string(v);
    if (ch == '-' || (ch >= '0' && ch <= '9')) {
        if (ch == '-') v->pos++;
        if (v->pos < v->len && v->s[v->pos] == '0') v->pos++;
        else if (!run_jv_digits(v)) return run_jv_fail(v, "a number needs digits (NaN and Infinity are not JSON)");
        if (v->pos < v->len && v->s[v->pos] == '.') {
            v->pos++;
            if (!run_jv_digits(v)) return run_jv_fail(v, "digits expected after '.'");
        }
        if (v->pos < v->len && (v->s[v->pos] == 'e' || v->s[v->pos] == 'E')) {
            v->pos++;
            if (v->pos < v->len && (v->s[v->pos] == '+' || v->s[v->pos] == '-')) v->pos++;
            if (!run_jv_digits(v)) return run_jv_fail(v, "digits expected in the exponent");
        }
        return true;
    }
    static const char *const lits[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t l = strlen(lits[k]);
        if (v->len - v->pos >= l && !memcmp(v->s + v->pos, lits[k], l)) {
            v->pos += l;
            return true;
        }
    }
    if (ch == '\'') return run_jv_fail(v, "strings take double quotes");
    if (ch == 'N' || ch == 'I') return run_jv_fail(v, "NaN and Infinity are not JSON");
    if (ch == 0) return run_jv_fail(v, "a NUL byte");
    return run_jv_fail(v, "unexpected character");
}

/* NULL when s is one strict JSON value; else the reason, with *col its 1-based byte column. */
static const char *run_json_check(const char *s, size_t len, size_t *col) {
    run_jv v = {s, len, 0, NULL, 0};
    if (run_jv_value(&v)) {
        run_jv_ws(&v);
        if (v.pos == len) return NULL;
        v.why = "text after the value";
    }
    *col = v.pos + 1;
    /* a NUL byte is named as such, whatever was expected there */
    if (v.pos < len && s[v.pos] == 0) return "a NUL byte";
    return v.why;
}

/* ---- UTF-8 repair ---- */

/* Replaces every invalid subpart of it->raw by U+FFFD, as the tokenizer does (tk_utf8_lossy:
 * Unicode's maximal-subpart rule), and notes how many there were. */
static void run_repair_utf8(run_item *it) {
    if (tk_utf8_invalid_at(it->raw, it->raw_len) == (size_t)-1) return; /* valid: no copy */
    size_t w, bad;
    char *o = tk_utf8_lossy(it->raw, it->raw_len, &w, &bad);
    if (!o) {
        run_item_fail(it, "out of memory");
        return;
    }
    free(it->raw);
    it->raw = o;
    it->raw_len = w;
    char msg[160];
    snprintf(msg, sizeof msg, "line %ld: %zu invalid UTF-8 sequence%s replaced by U+FFFD", it->line, bad,
             bad == 1 ? "" : "s");
    free(it->warn);
    it->warn = strdup(msg);
}

/* A text as the pipelines take it: a C string, so U+0000 (which json-c keeps as a NUL byte) goes
 * as C0 80 (pipeline.h) instead of ending the text there. */
static const char *run_text(run_item *it, json_object *o, const char *what) {
    const char *s = run_str(o);
    if (!s) return NULL;
    size_t n = (size_t)json_object_get_string_len(o), nul = 0;
    for (size_t k = 0; k < n; k++) nul += s[k] == 0;
    if (!nul) return s;
    char **ow = realloc(it->owned, sizeof *ow * (size_t)(it->n_owned + 1));
    char *m = malloc(n + nul + 1);
    if (ow) it->owned = ow;
    if (!ow || !m) {
        free(m);
        run_item_fail(it, "out of memory copying %s", what);
        return NULL;
    }
    size_t w = 0;
    for (size_t k = 0; k < n; k++) {
        if (s[k]) m[w++] = s[k];
        else {
            m[w++] = (char)0xC0;
            m[w++] = (char)0x80;
        }
    }
    m[w] = 0;
    it->owned[it->n_owned++] = m;
    return m;
}

/* A JSON string of text that came back from a pipeline: C0 80 is U+0000 again. */
static json_object *run_json_text(const char *s) {
    if (!s) s = "";
    size_t n = strlen(s);
    if (!memmem(s, n, "\xC0\x80", 2)) return json_object_new_string_len(s, (int)n);
    char *m = malloc(n + 1);
    if (!m) return json_object_new_string(s);
    size_t w = 0;
    for (size_t k = 0; k < n; k++) {
        if ((unsigned char)s[k] == 0xC0 && k + 1 < n && (unsigned char)s[k + 1] == 0x80) {
            m[w++] = 0;
            k++;
        } else m[w++] = s[k];
    }
    json_object *o = json_object_new_string_len(m, (int)w);
    free(m);
    return o;
}

static void run_parse(run_ctx *c, run_item *it) {
    size_t len = it->raw_len, col = 0;
    const char *why = run_json_check(it->raw, len, &col);
    if (why) {
        run_item_fail(it, "malformed JSON at column %zu: %s", col, why);
        return;
    }
    json_tokener *tok = json_tokener_new();
    if (!tok) {
        run_item_fail(it, "out of memory");
        return;
    }
    if (len > (size_t)1 << 30) {
        json_tokener_free(tok);
        run_item_fail(it, "the line is longer than 1 GiB");
        return;
    }
    it->obj = json_tokener_parse_ex(tok, it->raw, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!it->obj) {
        run_item_fail(it, "malformed JSON: %s",
                      jerr == json_tokener_continue ? "the line ends inside a value" : json_tokener_error_desc(jerr));
        return;
    }
    for (size_t k = end; k < len; k++)
        if (!strchr(" \t\r\n", it->raw[k])) {
            run_item_fail(it, "malformed JSON: text after the object at column %zu", k + 1);
            return;
        }
    if (!json_object_is_type(it->obj, json_type_object)) {
        run_item_fail(it, "expected a JSON object {\"input\": ...}");
        return;
    }
    if (!json_object_object_get_ex(it->obj, "input", &it->input) || !it->input) {
        it->input = NULL;
        run_item_fail(it, "no \"input\" field");
        return;
    }
    json_object *in = it->input, *v;
    switch (c->type) {
    case RT_FEATURE:
    case RT_IMAGE:
        if (!run_str(in)) {
            run_item_fail(it, "%s expects \"input\": \"%s\"", run_type_names[c->type],
                          c->type == RT_IMAGE || c->image_model ? "path/to/image" : "text");
            return;
        }
        if (c->type == RT_IMAGE || c->image_model) {
            /* a path cannot hold U+0000 */
            if (memchr(run_str(in), 0, (size_t)json_object_get_string_len(in)))
                run_item_fail(it, "the image path holds U+0000");
            else run_resolve_path(c, it, run_str(in));
        } else {
            it->a = run_text(it, in, "the input");
        }
        return;
    case RT_ZERO:
        if (!run_str(in)) run_item_fail(it, "zeroShotClassification expects \"input\": \"text\"");
        else it->a = run_text(it, in, "the input");
        return;
    case RT_TEXT:
        if (run_str(in)) {
            it->a = run_text(it, in, "the input");
            return;
        }
        if (json_object_is_type(in, json_type_array) && json_object_array_length(in) == 2 &&
            run_str(json_object_array_get_idx(in, 0)) && run_str(json_object_array_get_idx(in, 1))) {
            if ((it->a = run_text(it, json_object_array_get_idx(in, 0), "the text")))
                it->b = run_text(it, json_object_array_get_idx(in, 1), "the pair");
            if (it->err) it->a = it->b = NULL;
            return;
        }
        run_item_fail(it, "textClassification expects \"input\": \"text\" or [\"text\", \"pair\"]");
        return;
    case RT_TOKEN:
        if (run_str(in)) {
            it->a = run_text(it, in, "the input");
            return;
        }
        if (run_str_list(in, &it->list, &it->n_list)) {
            it->has_list = true;
            for (int k = 0; k < it->n_list; k++)
                if (!(it->list[k] = run_text(it, json_object_array_get_idx(in, (size_t)k), "a word"))) return;
            return;
        }
        run_item_fail(it, "tokenClassification expects \"input\": \"text\" or [\"word\", \"word\", ...]");
        return;
    case RT_CROSS:
        if (json_object_is_type(in, json_type_array) && json_object_array_length(in) == 2 &&
            run_str(json_object_array_get_idx(in, 0)) && run_str(json_object_array_get_idx(in, 1))) {
            if ((it->a = run_text(it, json_object_array_get_idx(in, 0), "the query")))
                it->b = run_text(it, json_object_array_get_idx(in, 1), "the document");
            if (it->err) it->a = it->b = NULL;
            return;
        }
        if (json_object_is_type(in, json_type_object) && json_object_object_get_ex(in, "query", &v) && run_str(v) &&
            json_object_object_get_ex(in, "documents", &v) && run_str_list(v, &it->list, &it->n_list)) {
            it->has_list = true;
            json_object *q = NULL;
            json_object_object_get_ex(in, "query", &q);
            if (!(it->a = run_text(it, q, "the query"))) return;
            for (int k = 0; k < it->n_list; k++)
                if (!(it->list[k] = run_text(it, json_object_array_get_idx(v, (size_t)k), "a document"))) {
                    it->a = NULL;
                    return;
                }
            return;
        }
        it->a = it->b = NULL;
        run_item_fail(it,
                      "crossEncoder expects \"input\": [\"query\", \"document\"] or {\"query\": \"...\", "
                      "\"documents\": [\"...\", ...]}");
        return;
    case RT_QA: {
        json_object *q = NULL, *ctx = NULL;
        if (json_object_is_type(in, json_type_object) && json_object_object_get_ex(in, "question", &q) && run_str(q) &&
            json_object_object_get_ex(in, "context", &ctx) && run_str(ctx)) {
            if ((it->a = run_text(it, q, "the question"))) it->b = run_text(it, ctx, "the context");
            if (it->err) it->a = it->b = NULL;
            return;
        }
        run_item_fail(it, "questionAnswering expects \"input\": {\"question\": \"...\", \"context\": \"...\"}");
        return;
    }
    default: return;
    }
}

/* ---- results to JSON (Hugot's field names) ---- */

static json_object *run_labels_json(const kn_pl_labels *l) {
    json_object *a = json_object_new_array();
    for (int i = 0; i < l->n; i++) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "Label", json_object_new_string(l->v[i].label ? l->v[i].label : ""));
        json_object_object_add(o, "Score", run_num(l->v[i].score));
        json_object_array_add(a, o);
    }
    return a;
}

static json_object *run_embedding_json(const run_ctx *c, const kn_pl_embedding *e) {
    json_object *a = json_object_new_array();
    if (c->feat.pooling != KN_POOL_NONE) {
        for (size_t k = 0; k < (size_t)e->n_tokens * (size_t)e->dim; k++) json_object_array_add(a, run_num(e->data[k]));
    } else {
        for (int t = 0; t < e->n_tokens; t++) {
            json_object *row = json_object_new_array();
            for (int d = 0; d < e->dim; d++) json_object_array_add(row, run_num(e->data[(size_t)t * e->dim + d]));
            json_object_array_add(a, row);
        }
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "Embeddings", a);
    return o;
}

static json_object *run_entities_json(const run_ctx *c, const kn_pl_entities *e) {
    json_object *a = json_object_new_array();
    for (int i = 0; i < e->n; i++) {
        const kn_pl_entity *x = &e->v[i];
        json_object *o = json_object_new_object();
        json_object_object_add(o, "Entity", json_object_new_string(x->entity ? x->entity : ""));
        json_object_object_add(o, "Score", run_num(x->score));
        if (c->token.aggregation == KN_AGG_NONE) json_object_object_add(o, "Index", json_object_new_int(x->index));
        json_object_object_add(o, "Word", run_json_text(x->word));
        json_object_object_add(o, "Start", json_object_new_int(x->start));
        json_object_object_add(o, "End", json_object_new_int(x->end));
        json_object_array_add(a, o);
    }
    return a;
}

/* ---- running a set of items through the task ---- */

/* Calls the task on m parsed items; sets each item's out (or err when only that item failed).
 * An error returned means the call as a whole failed and the caller retries item by item. */
static kn_status *run_items(run_ctx *c, run_item **it, int m) {
    kn_status *st = NULL;
    const char **a = calloc((size_t)m, sizeof *a), **b = calloc((size_t)m, sizeof *b);
    if (!a || !b) {
        free(a);
        free(b);
        return KN_OOM(sizeof *a * (size_t)m);
    }
    for (int i = 0; i < m; i++) {
        a[i] = it[i]->a;
        b[i] = it[i]->b;
    }
    c->cur = it;
    c->n_cur = m;
    switch (c->type) {
    case RT_FEATURE: {
        kn_pl_embedding *e = calloc((size_t)m, sizeof *e);
        if (!e) {
            st = KN_OOM(sizeof *e * (size_t)m);
            break;
        }
        st = c->image_model ? kn_pl_image_features(c->p, m, a, &c->feat, e)
                            : kn_pl_feature_extraction(c->p, m, a, &c->feat, e);
        for (int i = 0; i < m; i++) {
            if (!st) it[i]->out = run_embedding_json(c, &e[i]);
            kn_pl_embedding_free(&e[i]);
        }
        free(e);
        break;
    }
    case RT_TEXT:
    case RT_ZERO:
    case RT_IMAGE: {
        kn_pl_labels *l = calloc((size_t)m, sizeof *l);
        if (!l) {
            st = KN_OOM(sizeof *l * (size_t)m);
            break;
        }
        if (c->type == RT_TEXT) {
            bool any_pair = false;
            for (int i = 0; i < m; i++) any_pair |= b[i] != NULL;
            st = kn_pl_text_classification(c->p, m, a, any_pair ? b : NULL, &c->text, l);
        } else if (c->type == RT_ZERO) {
            st = kn_pl_zero_shot_classification(c->p, m, a, &c->zero, l);
        } else {
            st = kn_pl_image_classification(c->p, m, a, &c->image, l);
        }
        for (int i = 0; i < m; i++) {
            if (!st && c->type == RT_ZERO) {
                json_object *o = json_object_new_object(), *sv = json_object_new_array();
                json_object_object_add(o, "Sequence", run_json_text(a[i]));
                for (int k = 0; k < l[i].n; k++) {
                    json_object *kv = json_object_new_object();
                    json_object_object_add(kv, "Key", json_object_new_string(l[i].v[k].label ? l[i].v[k].label : ""));
                    json_object_object_add(kv, "Value", run_num(l[i].v[k].score));
                    json_object_array_add(sv, kv);
                }
                json_object_object_add(o, "SortedValues", sv);
                it[i]->out = o;
            } else if (!st) {
                it[i]->out = run_labels_json(&l[i]);
            }
            kn_pl_labels_free(&l[i]);
        }
        free(l);
        break;
    }
    case RT_TOKEN: {
        kn_pl_entities *e = calloc((size_t)m, sizeof *e);
        const char *const **words = calloc((size_t)m, sizeof *words);
        int *n_words = calloc((size_t)m, sizeof *n_words), *idx = calloc((size_t)m, sizeof *idx);
        run_item **sub = calloc((size_t)m, sizeof *sub);
        if (!e || !words || !n_words || !idx || !sub) st = KN_OOM(sizeof *e * (size_t)m);
        /* texts and pre-split word lists go to their two entry points */
        for (int pass = 0; !st && pass < 2; pass++) {
            int k = 0;
            for (int i = 0; i < m; i++) {
                if (it[i]->has_list != (pass == 1)) continue;
                idx[k] = i;
                sub[k] = it[i];
                a[k] = it[i]->a;
                words[k] = it[i]->list;
                n_words[k] = it[i]->n_list;
                k++;
            }
            if (!k) continue;
            c->cur = sub;
            c->n_cur = k;
            if (pass == 0) st = kn_pl_token_classification(c->p, k, a, &c->token, e);
            else st = kn_pl_token_classification_words(c->p, k, words, n_words, &c->token, e);
            for (int j = 0; j < k; j++) {
                if (!st) it[idx[j]]->out = run_entities_json(c, &e[j]);
                kn_pl_entities_free(&e[j]);
            }
        }
        free(e);
        free(words);
        free(n_words);
        free(idx);
        free(sub);
        break;
    }
    case RT_QA: {
        kn_pl_answers *ans = calloc((size_t)m, sizeof *ans);
        if (!ans) {
            st = KN_OOM(sizeof *ans * (size_t)m);
            break;
        }
        st = kn_pl_question_answering(c->p, m, a, b, &c->qa, ans);
        for (int i = 0; i < m; i++) {
            if (!st) {
                json_object *arr = json_object_new_array();
                for (int k = 0; k < ans[i].n; k++) {
                    json_object *o = json_object_new_object();
                    json_object_object_add(o, "Answer", run_json_text(ans[i].v[k].answer));
                    json_object_object_add(o, "Score", run_num(ans[i].v[k].score));
                    json_object_object_add(o, "Start", json_object_new_int(ans[i].v[k].start));
                    json_object_object_add(o, "End", json_object_new_int(ans[i].v[k].end));
                    json_object_array_add(arr, o);
                }
                it[i]->out = arr;
            }
            kn_pl_answers_free(&ans[i]);
        }
        free(ans);
        break;
    }
    case RT_CROSS: {
        /* query + documents: one call each; its failure is that line's alone */
        for (int i = 0; i < m; i++) {
            if (!it[i]->has_list) continue;
            kn_pl_ranking r = {0};
            c->cur = &it[i];
            c->n_cur = 1;
            kn_status *s1 =
                it[i]->n_list ? kn_pl_cross_encoder(c->p, it[i]->a, it[i]->n_list, it[i]->list, &c->cross, &r) : NULL;
            if (s1) {
                run_item_fail(it[i], "%s", kn_status_message(s1));
                kn_status_free(s1);
                continue;
            }
            json_object *arr = json_object_new_array();
            for (int k = 0; k < r.n; k++) {
                json_object *o = json_object_new_object();
                int d = r.v[k].index;
                json_object_object_add(o, "Index", json_object_new_int(d));
                json_object_object_add(o, "Score", run_num(r.v[k].score));
                json_object_object_add(o, "Document", run_json_text(d >= 0 && d < it[i]->n_list ? it[i]->list[d] : ""));
                json_object_array_add(arr, o);
            }
            it[i]->out = arr;
            kn_pl_ranking_free(&r);
        }
        /* pair lines: lines sharing a query go in one call, every score kept */
        kn_pl_cross_encoder_options po = c->cross;
        po.threshold = -INFINITY;
        po.top_k = 0;
        run_item **grp = calloc((size_t)m, sizeof *grp);
        if (!grp) {
            st = KN_OOM(sizeof *grp * (size_t)m);
            break;
        }
        for (int i = 0; !st && i < m; i++) {
            if (it[i]->has_list || it[i]->out || it[i]->err) continue;
            int k = 0;
            for (int j = i; j < m; j++)
                if (!it[j]->has_list && !it[j]->out && !it[j]->err && !strcmp(it[j]->a, it[i]->a)) {
                    grp[k] = it[j];
                    b[k] = it[j]->b;
                    k++;
                }
            kn_pl_ranking r = {0};
            c->cur = grp;
            c->n_cur = k;
            st = kn_pl_cross_encoder(c->p, it[i]->a, k, b, &po, &r);
            for (int q = 0; !st && q < r.n; q++) {
                int d = r.v[q].index;
                if (d < 0 || d >= k || grp[d]->out) continue;
                grp[d]->out = json_object_new_object();
                json_object_object_add(grp[d]->out, "Score", run_num(r.v[q].score));
            }
            for (int q = 0; !st && q < k; q++)
                if (!grp[q]->out) run_item_fail(grp[q], "the cross-encoder returned no score for this pair");
            kn_pl_ranking_free(&r);
        }
        free(grp);
        break;
    }
    default: break;
    }
    c->cur = NULL;
    c->n_cur = 0;
    free(a);
    free(b);
    return st;
}

/* Runs a chunk's good items; when the batched call fails, item by item so that only the
 * items that fail on their own get error lines. */
static void run_chunk(run_ctx *c, run_item *items, int n) {
    run_item **ok = malloc(sizeof *ok * (size_t)(n ? n : 1));
    if (!ok) {
        for (int i = 0; i < n; i++)
            if (!items[i].err) run_item_fail(&items[i], "out of memory");
        return;
    }
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!items[i].err) ok[m++] = &items[i];
    kn_status *st = m ? run_items(c, ok, m) : NULL;
    if (st && m == 1) run_item_fail(ok[0], "%s", kn_status_message(st));
    else if (st) {
        for (int i = 0; i < m; i++) run_item_reset(ok[i]);
        for (int i = 0; i < m; i++) {
            kn_status *s1 = run_items(c, &ok[i], 1);
            if (s1) {
                run_item_fail(ok[i], "%s", kn_status_message(s1));
                kn_status_free(s1);
            }
        }
    }
    kn_status_free(st);
    free(ok);
}

/* Writes a chunk's lines; SIGINT is held off meanwhile so that no line is cut short. */
static int run_write(run_ctx *c, FILE *out, run_item *items, int n) {
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &old);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        run_item *it = &items[i];
        json_object *o = json_object_new_object();
        if (it->input) json_object_object_add(o, "input", json_object_get(it->input));
        else
            json_object_object_add(o, "input",
                                   it->obj || !it->raw ? NULL : json_object_new_string_len(it->raw, (int)it->raw_len));
        if (it->warn) {
            json_object_object_add(o, "warning", json_object_new_string(it->warn));
            run_progress_clear(c);
            fprintf(stderr, "kiln run: warning: %s:%s\n", c->src,
                    strncmp(it->warn, "line ", 5) ? it->warn : it->warn + 5);
        }
        if (it->err || !it->out) {
            const char *msg = it->err ? it->err : "no result";
            json_object_object_add(o, "error", json_object_new_string(msg));
            run_progress_clear(c);
            fprintf(stderr, "kiln run: %s:%s\n", c->src, strncmp(msg, "line ", 5) ? msg : msg + 5);
            c->failed++;
        } else {
            json_object_object_add(o, "output", json_object_get(it->out));
        }
        if (fputs(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), out) < 0 || fputc('\n', out) < 0) rc = -1;
        json_object_put(o);
    }
    if (fflush(out) != 0) rc = -1;
    c->done += n;
    run_progress_draw(c, false);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* Lines in a file, for the progress bar's total (blank lines included: an estimate). */
static long run_count_lines(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char buf[65536];
    size_t got;
    long n = 0;
    int last = '\n';
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
        for (size_t i = 0; i < got; i++) n += buf[i] == '\n';
        last = buf[got - 1];
    }
    fclose(f);
    return n + (last != '\n');
}

/* Whitespace only (a NUL byte is not whitespace: such a line is answered, with an error). */
static bool run_blank(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return false;
    return true;
}

/* One input line of any bytes (NUL included) without its '\n': at most limit bytes are kept, the
 * rest is read and counted only (*total), so a huge line costs no memory. Returns false at the end
 * of the input with nothing read. *complete: the line ended with '\n'. */
static bool run_read_line(FILE *in, char **buf, size_t *cap, size_t limit, size_t *len, size_t *total, bool *complete) {
    *len = *total = 0;
    *complete = false;
    flockfile(in);
    for (;;) {
        int ch = getc_unlocked(in);
        if (ch == EOF) {
            if (ferror(in) && errno == EINTR && !run_interrupts) {
                clearerr(in);
                continue;
            }
            break;
        }
        if (ch == '\n') {
            *complete = true;
            break;
        }
        (*total)++;
        if (*len >= limit) continue;
        if (*len + 2 > *cap) {
            size_t nc = *cap ? *cap * 2 : 4096;
            if (nc > limit + 2) nc = limit + 2;
            if (nc < *len + 2) nc = *len + 2;
            char *nb = realloc(*buf, nc);
            if (!nb) {
                funlockfile(in);
                *len = 0;
                *total = (size_t)-1;
                return true;
            }
            *buf = nb;
            *cap = nc;
        }
        (*buf)[(*len)++] = (char)ch;
    }
    funlockfile(in);
    if (*buf) (*buf)[*len] = 0;
    return *complete || *total > 0;
}

/* Streams one input into one output, chunk by chunk. Returns -1 on a write error. */
static int run_stream(run_ctx *c, FILE *in, FILE *out, int chunk) {
    run_item *items = calloc((size_t)chunk, sizeof *items);
    if (!items) {
        fprintf(stderr, "kiln run: out of memory\n");
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0, n_lines = 0;
    int rc = 0;
    bool eof = false;
    while (!eof && !run_interrupts && rc == 0) {
        int n = 0;
        while (n < chunk) {
            errno = 0;
            size_t len, total;
            bool complete;
            if (!run_read_line(in, &line, &cap, c->max_line_bytes, &len, &total, &complete)) {
                eof = true;
                break;
            }
            lineno++;
            /* a line cut short by Ctrl-C was never fully read: drop it */
            if (!complete && run_interrupts) {
                eof = true;
                break;
            }
            run_item *it = &items[n];
            it->line = lineno;
            if (total == (size_t)-1) {
                n++;
                run_item_fail(it, "out of memory");
                continue;
            }
            if (total > len) {
                n++;
                run_item_fail(it, "the line has %zu bytes, over the limit of %zu (--max-line-bytes)", total,
                              c->max_line_bytes);
                continue;
            }
            while (len > 0 && line[len - 1] == '\r') line[--len] = 0;
            n++;
            /* answered too, so output line N is always input line N's */
            if (run_blank(line, len)) {
                run_item_fail(it, "empty line: nothing to run");
                continue;
            }
            if (!(it->raw = malloc(len + 1))) {
                run_item_fail(it, "out of memory");
                continue;
            }
            memcpy(it->raw, line, len);
            it->raw[len] = 0;
            it->raw_len = len;
            run_repair_utf8(it);
            if (!it->err) run_parse(c, it);
            if (run_interrupts) break;
        }
        n_lines += n;
        if (n) {
            run_chunk(c, items, n);
            if (run_write(c, out, items, n) != 0) {
                run_progress_clear(c);
                fprintf(stderr, "kiln run: cannot write the results of %s: %s\n", c->src, strerror(errno));
                rc = -1;
            }
        }
        for (int i = 0; i < n; i++) run_item_free(&items[i]);
    }
    if (ferror(in) && !run_interrupts) {
        run_progress_clear(c);
        fprintf(stderr, "kiln run: error reading %s: %s\n", c->src, strerror(errno));
        rc = -1;
    }
    if (n_lines == 0 && rc == 0 && !run_interrupts) {
        run_progress_clear(c);
        fprintf(stderr, "kiln run: %s: no input lines\n", c->src);
    }
    free(line);
    free(items);
    return rc;
}

static int run_jsonl_filter(const struct dirent *e) {
    size_t l = strlen(e->d_name);
    return l > 6 && !strcmp(e->d_name + l - 6, ".jsonl") && e->d_name[0] != '.';
}

static void run_usage(void) {
    fprintf(stderr,
            "usage: kiln run --model PATH --type TYPE [--input FILE|DIR] [--output DIR] [options]\n"
            "  TYPE: featureExtraction, textClassification, tokenClassification, zeroShotClassification,\n"
            "        crossEncoder, imageClassification, questionAnswering\n"
            "  input: JSON lines {\"input\": ...} from FILE, every *.jsonl of DIR (sorted), or stdin;\n"
            "         output: result_K.jsonl per input file in --output DIR, else stdout\n"
            "  --batch-size N  --device cpu|cuda[:N]  --precision fp32|tf32|fp16|bf16  --threads N\n"
            "  --seq-bucket N (pad each batch's length to a multiple of N: one plan per bucket)\n"
            "  --onnx-file F  --max-length N  --max-line-bytes N (default 32 MiB)  --progress | --no-progress\n"
            "  featureExtraction: --pooling mean|cls|max|last|none  --normalize\n"
            "  textClassification / imageClassification: --top-k K (0 = all)  --activation softmax|sigmoid|none\n"
            "  tokenClassification: --aggregation none|simple|first|average|max\n"
            "  zeroShotClassification: --labels a,b,c  --template T  --multi-label\n"
            "  crossEncoder: --top-k K  --threshold X  --activation softmax|sigmoid|none\n"
            "  questionAnswering: --top-k K  --doc-stride N  --max-answer-len N  --max-length N\n"
            "exit status: 0 every line succeeded, 1 some failed (or the model could not be opened), 2 usage, 130 "
            "interrupted\n");
}

static bool run_parse_int(const char *s, long lo, long hi, long *v) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi) return false;
    *v = x;
    return true;
}

static int run_pick(const char *s, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

/* Whether this build has the type's pipeline (its entry points and result functions). */
static int run_cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int kn_cmd_run(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--type") && !strcmp(argv[i + 1], "textGeneration")) return kn_cmd_run_textgen(argc, argv);
    const char *model = NULL, *type_s = NULL, *in_path = NULL, *out_dir = NULL, *labels_s = NULL, *template_s = NULL;
    const char *pool_s = NULL, *agg_s = NULL, *act_s = NULL, *prec_s = NULL;
    long top_k = -1, doc_stride = -1, max_ans = -1, v = 0;
    /* generous for one document, yet bounded: tokenizing costs ~130 bytes of memory per input byte */
    size_t max_line_bytes = (size_t)32 << 20;
    double threshold = NAN;
    int progress = -1, multi_label = 0, normalize = -1;
    kn_pl_options po;
    kn_pl_options_init(&po);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = true;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            run_usage();
            return 0;
        } else if (!strcmp(a, "--multi-label")) {
            multi_label = 1;
            takes = false;
        } else if (!strcmp(a, "--normalize")) {
            normalize = 1;
            takes = false;
        } else if (!strcmp(a, "--progress")) {
            progress = 1;
            takes = false;
        } else if (!strcmp(a, "--no-progress")) {
            progress = 0;
            takes = false;
        } else if (!val) {
            fprintf(stderr, "kiln run: %s needs a value (or is not an option)\n", a);
            run_usage();
            return 2;
        } else if (!strcmp(a, "--model")) model = val;
        else if (!strcmp(a, "--type")) type_s = val;
        else if (!strcmp(a, "--input")) in_path = val;
        else if (!strcmp(a, "--output")) out_dir = val;
        else if (!strcmp(a, "--onnx-file")) po.onnx_file = val;
        else if (!strcmp(a, "--labels")) labels_s = val;
        else if (!strcmp(a, "--template")) template_s = val;
        else if (!strcmp(a, "--pooling")) pool_s = val;
        else if (!strcmp(a, "--aggregation")) agg_s = val;
        else if (!strcmp(a, "--activation")) act_s = val;
        else if (!strcmp(a, "--precision")) prec_s = val;
        else if (!strcmp(a, "--device")) {
            if (kn_cli_parse_device(val, &po.session)) return 2;
        } else if (!strcmp(a, "--max-line-bytes")) {
            char *end;
            errno = 0;
            unsigned long long x = strtoull(val, &end, 10);
            if (errno || end == val || *end || x < 16 || x > ((unsigned long long)1 << 30)) {
                fprintf(stderr, "kiln run: --max-line-bytes '%s' is not a whole number in [16, %llu]\n", val,
                        (unsigned long long)1 << 30);
                return 2;
            }
            max_line_bytes = (size_t)x;
        } else if (!strcmp(a, "--threshold")) {
            char *end;
            threshold = strtod(val, &end);
            if (end == val || *end || isnan(threshold)) {
                fprintf(stderr, "kiln run: --threshold '%s' is not a number\n", val);
                return 2;
            }
        } else {
            long *dst = NULL, lo = 1, hi = 1 << 20;
            if (!strcmp(a, "--batch-size")) dst = &v;
            else if (!strcmp(a, "--threads")) {
                dst = &v;
                lo = 0;
                hi = 1024;
            } else if (!strcmp(a, "--max-length")) dst = &v;
            else if (!strcmp(a, "--top-k")) {
                dst = &top_k;
                lo = 0;
            } else if (!strcmp(a, "--doc-stride")) {
                dst = &doc_stride;
                lo = 0;
            } else if (!strcmp(a, "--max-answer-len")) dst = &max_ans;
            else if (!strcmp(a, "--seq-bucket")) dst = &v;
            else {
                fprintf(stderr, "kiln run: unknown option %s\n", a);
                run_usage();
                return 2;
            }
            if (!run_parse_int(val, lo, hi, dst)) {
                fprintf(stderr, "kiln run: %s '%s' is not a whole number in [%ld, %ld]\n", a, val, lo, hi);
                return 2;
            }
            if (!strcmp(a, "--batch-size")) po.batch_size = (int)v;
            else if (!strcmp(a, "--threads")) po.session.num_threads = (int)v;
            else if (!strcmp(a, "--max-length")) po.max_length = (int)v;
            else if (!strcmp(a, "--seq-bucket")) po.session.seq_bucket = (int)v;
        }
        if (takes) i++;
    }
    if (!model || !type_s) {
        fprintf(stderr, "kiln run: %s\n", !model ? "--model is required" : "--type is required");
        run_usage();
        return 2;
    }
    int t = run_pick(type_s, run_type_names, RT_COUNT);
    if (t < 0) {
        fprintf(stderr, "kiln run: unknown --type '%s'\n", type_s);
        run_usage();
        return 2;
    }
    static const char *const precs[] = {"fp32", "tf32", "fp16", "bf16"};
    static const kn_precision precv[] = {KN_PRECISION_FP32, KN_PRECISION_TF32, KN_PRECISION_FP16, KN_PRECISION_BF16};
    if (prec_s) {
        int k = run_pick(prec_s, precs, 4);
        if (k < 0) {
            fprintf(stderr, "kiln run: unknown --precision '%s' (fp32, tf32, fp16, bf16)\n", prec_s);
            return 2;
        }
        po.session.precision = precv[k];
        /* the CPU backend computes in the model's own dtypes; reduced precision is a GPU feature
         * (kn_session_create refuses it on the CPU, so the run goes on in fp32) */
        if (k != 0 && po.session.device == KN_DEVICE_CPU) {
            fprintf(stderr,
                    "kiln run: warning: --precision %s applies to CUDA devices; the CPU runs the model in fp32\n",
                    prec_s);
            po.session.precision = KN_PRECISION_FP32;
        }
    }
    static const char *const pools[] = {"mean", "cls", "max", "last", "none"};
    static const kn_pl_pooling poolv[] = {KN_POOL_MEAN, KN_POOL_CLS, KN_POOL_MAX, KN_POOL_LAST, KN_POOL_NONE};
    static const char *const aggs[] = {"none", "simple", "first", "average", "max"};
    static const kn_pl_aggregation aggv[] = {KN_AGG_NONE, KN_AGG_SIMPLE, KN_AGG_FIRST, KN_AGG_AVERAGE, KN_AGG_MAX};
    static const char *const acts[] = {"softmax", "sigmoid", "none"};
    static const kn_pl_activation actv[] = {KN_ACT_SOFTMAX, KN_ACT_SIGMOID, KN_ACT_NONE};
    int pool_k = pool_s ? run_pick(pool_s, pools, 5) : -2, agg_k = agg_s ? run_pick(agg_s, aggs, 5) : -2,
        act_k = act_s ? run_pick(act_s, acts, 3) : -2;
    if (pool_k == -1 || agg_k == -1 || act_k == -1) {
        fprintf(stderr, "kiln run: unknown %s '%s'\n",
                pool_k == -1      ? "--pooling"
                    : agg_k == -1 ? "--aggregation"
                                  : "--activation",
                pool_k == -1      ? pool_s
                    : agg_k == -1 ? agg_s
                                  : act_s);
        return 2;
    }
    if (t == RT_ZERO && !labels_s) {
        fprintf(stderr, "kiln run: zeroShotClassification needs --labels a,b,c\n");
        return 2;
    }

    /* the inputs: one file, a folder's *.jsonl in name order, or stdin */
    char **files = NULL;
    int n_files = 0, rc = 0;
    bool in_is_dir = false;
    run_ctx c;
    memset(&c, 0, sizeof c);
    char *labels_buf = NULL;
    const char **labels = NULL;
    if (in_path) {
        struct stat sb;
        if (stat(in_path, &sb) != 0) {
            fprintf(stderr, "kiln run: --input %s: %s\n", in_path, strerror(errno));
            return 1;
        }
        in_is_dir = S_ISDIR(sb.st_mode);
        if (in_is_dir) {
            struct dirent **ents = NULL;
            int k = scandir(in_path, &ents, run_jsonl_filter, alphasort);
            if (k < 0) {
                fprintf(stderr, "kiln run: --input %s: %s\n", in_path, strerror(errno));
                return 1;
            }
            files = calloc((size_t)(k ? k : 1), sizeof *files);
            for (int i = 0; i < k; i++) {
                size_t len = strlen(in_path) + strlen(ents[i]->d_name) + 2;
                if (files && (files[n_files] = malloc(len)))
                    snprintf(files[n_files++], len, "%s/%s", in_path, ents[i]->d_name);
                free(ents[i]);
            }
            free(ents);
            if (!files || n_files < k) {
                fprintf(stderr, "kiln run: out of memory\n");
                rc = 1;
                goto out;
            }
            qsort(files, (size_t)n_files, sizeof *files, run_cmp_str);
            if (n_files == 0) fprintf(stderr, "kiln run: %s: no *.jsonl files\n", in_path);
        } else {
            files = calloc(1, sizeof *files);
            if (!files || !(files[0] = strdup(in_path))) {
                fprintf(stderr, "kiln run: out of memory\n");
                rc = 1;
                goto out;
            }
            n_files = 1;
        }
    }

    c.type = (run_type)t;
    c.max_line_bytes = max_line_bytes;
    po.warn = run_warn;
    po.warn_ctx = &c;
    c.src = "kiln run";
    kn_status *st = kn_pipeline_open(model, &po, &c.p);
    if (st) {
        char *msg = strdup(kn_status_message(st));
        for (char *q = msg; q && *q; q++)
            if (*q == '\n') *q = ' ';
        fprintf(stderr, "kiln run: error: %s\n", msg ? msg : "cannot open the model");
        free(msg);
        kn_status_free(st);
        rc = 1;
        goto out;
    }
    bool takes_pixels = kn_pipeline_takes_images(c.p);
    c.image_model = c.type == RT_FEATURE && takes_pixels;
    if ((c.type == RT_IMAGE) != takes_pixels && c.type != RT_FEATURE) {
        fprintf(stderr, "kiln run: error: %s: %s\n", kn_pipeline_dir(c.p),
                takes_pixels
                    ? "an image model (pixel_values input); use --type imageClassification or featureExtraction"
                    : "a text model (no pixel_values input); imageClassification needs an image model");
        rc = 1;
        goto out;
    }

    /* task options: the pipeline's defaults, then what the command line says */
    kn_pl_feature_options_init(&c.feat);
    if (pool_k >= 0) c.feat.pooling = poolv[pool_k];
    if (normalize >= 0) c.feat.normalize = normalize;
    if (c.type == RT_TEXT) {
        kn_pl_text_class_options_init(&c.text);
        if (top_k >= 0) c.text.top_k = (int)top_k;
        if (act_k >= 0) c.text.activation = actv[act_k];
    } else if (c.type == RT_TOKEN) {
        kn_pl_token_class_options_init(&c.token);
        if (agg_k >= 0) c.token.aggregation = aggv[agg_k];
    } else if (c.type == RT_ZERO) {
        kn_pl_zero_shot_options_init(&c.zero);
        labels_buf = strdup(labels_s);
        labels = calloc(strlen(labels_s) / 2 + 2, sizeof *labels);
        if (!labels_buf || !labels) {
            fprintf(stderr, "kiln run: out of memory\n");
            rc = 1;
            goto out;
        }
        for (char *save = NULL, *tk = strtok_r(labels_buf, ",", &save); tk; tk = strtok_r(NULL, ",", &save)) {
            while (*tk == ' ') tk++;
            for (char *e = tk + strlen(tk); e > tk && e[-1] == ' ';) *--e = 0;
            if (*tk) labels[c.zero.n_labels++] = tk;
        }
        if (!c.zero.n_labels) {
            fprintf(stderr, "kiln run: --labels '%s' holds no label\n", labels_s);
            rc = 2;
            goto out;
        }
        c.zero.labels = labels;
        c.zero.multi_label = multi_label;
        if (template_s) c.zero.template_ = template_s;
    } else if (c.type == RT_CROSS) {
        kn_pl_cross_encoder_options_init(&c.cross);
        if (top_k >= 0) c.cross.top_k = (int)top_k;
        if (act_k >= 0) c.cross.activation = actv[act_k];
        if (!isnan(threshold)) c.cross.threshold = (float)threshold;
    } else if (c.type == RT_IMAGE) {
        kn_pl_image_class_options_init(&c.image);
        if (top_k >= 0) c.image.top_k = (int)top_k;
        if (act_k >= 0) c.image.activation = actv[act_k];
    } else if (c.type == RT_QA) {
        kn_pl_qa_options_init(&c.qa);
        if (top_k >= 0) c.qa.top_k = (int)top_k;
        if (doc_stride >= 0) c.qa.doc_stride = (int)doc_stride;
        if (max_ans >= 0) c.qa.max_answer_len = (int)max_ans;
        if (po.max_length > 0) c.qa.max_seq_len = po.max_length;
    }

    if (out_dir && mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "kiln run: --output %s: %s\n", out_dir, strerror(errno));
        rc = 1;
        goto out;
    }
    c.progress = progress == 1 || (progress == -1 && isatty(STDERR_FILENO));
    if (c.progress)
        for (int i = 0; i < n_files; i++) c.total += run_count_lines(files[i]);
    json_c_set_serialization_double_format("%.9g", JSON_C_OPTION_GLOBAL); /* floats round-trip */
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = run_on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: Ctrl-C must also end a read blocked on stdin */
    sigaction(SIGINT, &sa, &old_sa);
    c.t0 = c.last_draw = run_now();
    int chunk = po.batch_size * 8 > 4096 ? 4096 : po.batch_size * 8;
    if (chunk < 64) chunk = 64;
    long n_inputs = in_path ? n_files : 1;
    for (long k = 0; k < n_inputs && rc == 0 && !run_interrupts; k++) {
        FILE *in = stdin, *out = stdout;
        char out_path[4096];
        if (in_path) {
            if (!(in = fopen(files[k], "r"))) {
                fprintf(stderr, "kiln run: cannot open %s: %s\n", files[k], strerror(errno));
                rc = 1;
                break;
            }
            c.src = files[k];
            free(c.base_dir);
            char *slash = strrchr(files[k], '/');
            c.base_dir = slash ? strndup(files[k], (size_t)(slash - files[k])) : NULL;
        } else {
            c.src = "<stdin>";
        }
        if (out_dir) {
            snprintf(out_path, sizeof out_path, "%s/result_%ld.jsonl", out_dir, k);
            if (!(out = fopen(out_path, "w"))) {
                fprintf(stderr, "kiln run: cannot write %s: %s\n", out_path, strerror(errno));
                if (in != stdin) fclose(in);
                rc = 1;
                break;
            }
        }
        if (run_stream(&c, in, out, chunk) != 0) rc = 1;
        if (in != stdin) fclose(in);
        if (out != stdout && fclose(out) != 0) {
            fprintf(stderr, "kiln run: cannot write %s: %s\n", out_path, strerror(errno));
            rc = 1;
        }
    }
    run_progress_draw(&c, true);
    if (c.failed) {
        fprintf(stderr, "kiln run: %ld of %ld lines failed\n", c.failed, c.done);
        if (rc == 0) rc = 1;
    }
    if (run_interrupts) {
        fprintf(stderr, "kiln run: interrupted after %ld items\n", c.done);
        rc = 130;
    }
    sigaction(SIGINT, &old_sa, NULL);
out:
    kn_pipeline_free(c.p);
    free(c.base_dir);
    free(labels_buf);
    free(labels);
    for (int i = 0; i < n_files; i++) free(files[i]);
    free(files);
    return rc;
}
#endif
