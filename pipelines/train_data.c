/* Training data for `kiln train` (pipelines/train_data.h): JSONL examples, batches and the
 * evaluation metrics. Tokenization goes through the pipeline's own pl_encode so training sees
 * exactly the ids, truncation and padding that `kiln run` later feeds the trained model. */
#include "pipelines/train_data.h"
#include "pipelines/pl_internal.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void td_warn(void (*warn)(void *, const char *), void *ctx, const char *msg) {
    if (warn) warn(ctx, msg);
    else fprintf(stderr, "kiln: warning: %s\n", msg);
}

static void td_example_free(kn_td_example *e) {
    free(e->a);
    free(e->b);
    for (int i = 0; i < e->n_words; i++) free(e->words[i]);
    free(e->words);
    free(e->word_labels);
}

void kn_train_data_free(kn_train_data *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++) td_example_free(&d->ex[i]);
    free(d->ex);
    memset(d, 0, sizeof *d);
}

static const char *td_format_name(kn_td_format f) {
    static const char *const n[] = {"empty", "scored pairs (sentence1, sentence2, score)", "pairs (anchor, positive)",
                                    "labelled text (input, label)", "tagged words (tokens, labels)"};
    return n[f];
}

/* A label given as a name or an id: its id, or -1 with msg set. */
static int td_label(const kn_pipeline *p, json_object *v, char *msg, size_t len) {
    int nl = kn_pipeline_num_labels(p);
    if (json_object_is_type(v, json_type_int)) {
        int64_t id = json_object_get_int64(v);
        if (id >= 0 && id < nl) return (int)id;
        snprintf(msg, len, "label id %lld is not one of the model's %d labels (config.json id2label)", (long long)id,
                 nl);
        return -1;
    }
    if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        int id = kn_pipeline_label_id(p, s);
        if (id >= 0 && id < nl) return id;
        size_t off = (size_t)snprintf(msg, len, "label '%s' is not one the model knows (config.json label2id:", s);
        for (int i = 0; i < nl && off < len; i++)
            off += (size_t)snprintf(msg + off, len - off, "%s %s", i ? "," : "", kn_pipeline_label(p, i));
        if (off < len) snprintf(msg + off, len - off, "%s)", nl ? "" : " none");
        return -1;
    }
    snprintf(msg, len, "a label must be a name or an integer id, not %s", json_type_to_name(json_object_get_type(v)));
    return -1;
}

static bool td_str(json_object *o, const char *key, json_object **v) {
    return json_object_object_get_ex(o, key, v) && json_object_is_type(*v, json_type_string);
}

/* Parses one line into e. Returns 0; 1 with msg for a malformed line; 2 with msg for an
 * unknown label (never skipped: the data and the model disagree, not one line). */
static int td_parse(const kn_pipeline *p, kn_td_task task, const char *line, size_t len, kn_td_format *fmt,
                    kn_td_example *e, char *msg, size_t mlen) {
    json_tokener *tok = json_tokener_new();
    if (!tok) {
        snprintf(msg, mlen, "out of memory");
        return 1;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    json_object *o = json_tokener_parse_ex(tok, line, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!o || jerr != json_tokener_success) {
        snprintf(msg, mlen, "not valid JSON (%s at byte %zu)",
                 jerr == json_tokener_continue ? "the line ends inside a value" : json_tokener_error_desc(jerr),
                 end + 1);
        json_object_put(o);
        return 1;
    }
    while (end < len && (line[end] == ' ' || line[end] == '\t' || line[end] == '\r')) end++;
    int rc = 0;
    json_object *v, *w;
    kn_td_format f = KN_TD_EMPTY;
    if (end < len) {
        snprintf(msg, mlen, "text after the JSON value at byte %zu", end + 1);
        rc = 1;
    } else if (!json_object_is_type(o, json_type_object)) {
        snprintf(msg, mlen, "expected a JSON object");
        rc = 1;
    } else if (task == KN_TD_FEATURE) {
        json_object *sc;
        if (td_str(o, "sentence1", &v) && td_str(o, "sentence2", &w) && json_object_object_get_ex(o, "score", &sc) &&
            (json_object_is_type(sc, json_type_double) || json_object_is_type(sc, json_type_int))) {
            f = KN_TD_SCORED_PAIRS;
            e->score = (float)json_object_get_double(sc);
            if (!isfinite(e->score)) {
                snprintf(msg, mlen, "score is not a finite number");
                rc = 1;
            }
        } else if (td_str(o, "anchor", &v) && td_str(o, "positive", &w)) {
            f = KN_TD_PAIRS;
        } else {
            snprintf(msg, mlen,
                     "featureExtraction expects {\"sentence1\": text, \"sentence2\": text, \"score\": number} or "
                     "{\"anchor\": text, \"positive\": text}");
            rc = 1;
        }
        if (!rc) {
            e->a = strdup(json_object_get_string(v));
            e->b = strdup(json_object_get_string(w));
        }
    } else if (task == KN_TD_TEXT_CLASS) {
        json_object *lab;
        f = KN_TD_LABELLED_TEXT;
        if (!json_object_object_get_ex(o, "input", &v) || !json_object_object_get_ex(o, "label", &lab)) {
            snprintf(msg, mlen, "textClassification expects {\"input\": text or [text, pair], \"label\": label}");
            rc = 1;
        } else if (json_object_is_type(v, json_type_string)) {
            e->a = strdup(json_object_get_string(v));
        } else if (json_object_is_type(v, json_type_array) && json_object_array_length(v) == 2 &&
                   json_object_is_type(json_object_array_get_idx(v, 0), json_type_string) &&
                   json_object_is_type(json_object_array_get_idx(v, 1), json_type_string)) {
            e->a = strdup(json_object_get_string(json_object_array_get_idx(v, 0)));
            e->b = strdup(json_object_get_string(json_object_array_get_idx(v, 1)));
        } else {
            snprintf(msg, mlen, "\"input\" must be a text or a [text, pair] array of two texts");
            rc = 1;
        }
        if (!rc && (e->label = td_label(p, lab, msg, mlen)) < 0) rc = 2;
    } else {
        json_object *labs;
        f = KN_TD_TAGGED_WORDS;
        if (!json_object_object_get_ex(o, "tokens", &v) || !json_object_object_get_ex(o, "labels", &labs) ||
            !json_object_is_type(v, json_type_array) || !json_object_is_type(labs, json_type_array)) {
            snprintf(msg, mlen, "tokenClassification expects {\"tokens\": [words], \"labels\": [labels]}");
            rc = 1;
        } else if (json_object_array_length(v) != json_object_array_length(labs) || !json_object_array_length(v)) {
            snprintf(msg, mlen, "%zu tokens but %zu labels; one label a word, at least one word",
                     json_object_array_length(v), json_object_array_length(labs));
            rc = 1;
        } else {
            int n = (int)json_object_array_length(v);
            e->words = calloc((size_t)n, sizeof *e->words);
            e->word_labels = calloc((size_t)n, sizeof *e->word_labels);
            if (!e->words || !e->word_labels) {
                snprintf(msg, mlen, "out of memory");
                rc = 1;
            }
            for (int i = 0; !rc && i < n; i++) {
                json_object *t = json_object_array_get_idx(v, (size_t)i);
                if (!json_object_is_type(t, json_type_string) || !json_object_get_string_len(t) ||
                    strpbrk(json_object_get_string(t), " \t\n")) {
                    snprintf(msg, mlen, "tokens[%d] must be a non-empty word without spaces", i);
                    rc = 1;
                    break;
                }
                e->words[i] = strdup(json_object_get_string(t));
                e->n_words = i + 1;
                char lm[768];
                e->word_labels[i] = td_label(p, json_object_array_get_idx(labs, (size_t)i), lm, sizeof lm);
                if (e->word_labels[i] < 0) {
                    snprintf(msg, mlen, "labels[%d]: %s", i, lm);
                    rc = 2;
                }
            }
        }
    }
    json_object_put(o);
    if (!rc && *fmt != KN_TD_EMPTY && f != *fmt) {
        snprintf(msg, mlen, "%s after %s lines: one file holds one kind", td_format_name(f), td_format_name(*fmt));
        rc = 1;
    }
    if (!rc) *fmt = f;
    return rc;
}

kn_status *kn_train_data_read(const kn_pipeline *p, const char *path, kn_td_task task, bool skip_bad,
                              void (*warn)(void *ctx, const char *msg), void *warn_ctx, kn_train_data *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return kn_error(KN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, cap_ex = 0;
    kn_status *st = NULL;
    while (!st && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        size_t k = 0;
        while (k < (size_t)len && (line[k] == ' ' || line[k] == '\t')) k++;
        if (k == (size_t)len) continue; /* blank lines separate nothing; skip them */
        if (out->n == cap_ex) {
            int nc = cap_ex ? 2 * cap_ex : 256;
            kn_td_example *ex = realloc(out->ex, sizeof *ex * (size_t)nc);
            if (!ex) {
                st = KN_OOM(sizeof *ex * (size_t)nc);
                break;
            }
            out->ex = ex;
            cap_ex = nc;
        }
        kn_td_example *e = &out->ex[out->n];
        memset(e, 0, sizeof *e);
        e->line = lineno;
        char msg[1024];
        int rc = td_parse(p, task, line, (size_t)len, &out->format, e, msg, sizeof msg);
        if (!rc) {
            out->n++;
            continue;
        }
        td_example_free(e);
        if (rc == 1 && skip_bad) {
            char w[1200];
            snprintf(w, sizeof w, "%s:%d: skipped: %s", path, lineno, msg);
            td_warn(warn, warn_ctx, w);
            out->skipped++;
            continue;
        }
        st = kn_error(KN_ERR_INVALID_ARGUMENT, "%s:%d: %s%s", path, lineno, msg,
                      rc == 1 ? " (--skip-bad-lines skips such lines)" : "");
    }
    free(line);
    fclose(f);
    if (!st && out->n == 0)
        st = kn_error(KN_ERR_INVALID_ARGUMENT, "%s: no examples (%d lines, %d skipped)", path, lineno, out->skipped);
    if (st) kn_train_data_free(out);
    return st;
}

int kn_td_max_length(const kn_pipeline *p) { return p->st_max_seq_length > 0 ? p->st_max_seq_length : p->max_length; }

kn_pl_pooling kn_td_pooling(const kn_pipeline *p) { return p->pooling == KN_POOL_DEFAULT ? KN_POOL_MEAN : p->pooling; }
bool kn_td_normalize(const kn_pipeline *p) { return p->normalize != 0; }

void kn_td_batch_free(kn_td_batch *b) {
    for (int i = 0; i < KN_TD_MAX_IN; i++) free(b->mem[i]);
    memset(b, 0, sizeof *b);
}

static size_t td_cp_len(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* The words joined by single spaces (as transformers' is_split_into_words sees them for
 * whitespace pre-tokenizers) and each word's code-point span in that text. */
static char *td_join_words(const kn_td_example *e, int32_t *spans) {
    size_t total = 1;
    for (int i = 0; i < e->n_words; i++) total += strlen(e->words[i]) + 1;
    char *s = malloc(total);
    if (!s) return NULL;
    size_t off = 0;
    int32_t cp = 0;
    for (int i = 0; i < e->n_words; i++) {
        if (i) {
            s[off++] = ' ';
            cp++;
        }
        size_t l = strlen(e->words[i]);
        memcpy(s + off, e->words[i], l);
        off += l;
        spans[2 * i] = cp;
        cp += (int32_t)td_cp_len(e->words[i]);
        spans[2 * i + 1] = cp;
    }
    s[off] = 0;
    return s;
}

/* transformers' token-classification labels: a word's label on its first sub-token, -100 on
 * the others and on special tokens. Word ids come from the token offsets. */
static void td_token_labels(const kn_td_example *e, const int32_t *spans, const kn_encoding *enc, int64_t *labels) {
    int prev = -1;
    for (int t = 0; t < enc->n; t++) {
        labels[t] = -100;
        if (enc->special_mask && enc->special_mask[t]) continue;
        int32_t s = enc->offsets[2 * t], en = enc->offsets[2 * t + 1];
        if (en <= s) continue;
        int w = -1;
        for (int i = 0; i < e->n_words && w < 0; i++)
            if (s >= spans[2 * i] && s < spans[2 * i + 1]) w = i;
        if (w >= 0 && w != prev) labels[t] = e->word_labels[w];
        if (w >= 0) prev = w;
    }
}

/* Tokenizes the rows of examples idx[0..n) (pairs: both sides) into enc[rows]; words of
 * tagged examples into joined texts, their spans in spans[i] (n_words pairs). */
static kn_status *td_encode(const kn_pipeline *p, const kn_train_data *d, const int *idx, int n, kn_encoding *enc,
                            int32_t **spans) {
    bool pairs = d->format == KN_TD_SCORED_PAIRS || d->format == KN_TD_PAIRS;
    int rows = pairs ? 2 * n : n;
    const char **texts = calloc((size_t)rows, sizeof *texts), **second = calloc((size_t)rows, sizeof *second);
    char **joined = calloc((size_t)rows, sizeof *joined);
    kn_status *st = texts && second && joined ? NULL : KN_OOM(sizeof *texts * (size_t)rows);
    bool any_second = false;
    for (int i = 0; !st && i < n; i++) {
        const kn_td_example *e = &d->ex[idx[i]];
        if (pairs) {
            texts[i] = e->a;
            texts[n + i] = e->b;
        } else if (d->format == KN_TD_TAGGED_WORDS) {
            spans[i] = malloc(sizeof(int32_t) * 2 * (size_t)e->n_words);
            joined[i] = spans[i] ? td_join_words(e, spans[i]) : NULL;
            if (!joined[i]) st = KN_OOM(0);
            texts[i] = joined[i];
        } else {
            texts[i] = e->a;
            second[i] = e->b;
            any_second |= e->b != NULL;
        }
    }
    kn_encode_options eo;
    kn_encode_options_init(&eo);
    eo.max_length = kn_td_max_length(p);
    eo.no_overflow = 1;
    if (!st) st = pl_encode(p, rows, texts, any_second ? second : NULL, &eo, 0, enc);
    for (int i = 0; i < rows && joined; i++) free(joined[i]);
    free(joined);
    free(texts);
    free(second);
    return st;
}

kn_status *kn_td_make_batch(const kn_pipeline *p, const kn_train_data *d, const int *idx, int n, kn_td_batch *out) {
    memset(out, 0, sizeof *out);
    bool pairs = d->format == KN_TD_SCORED_PAIRS || d->format == KN_TD_PAIRS;
    int rows = pairs ? 2 * n : n;
    kn_encoding *enc = calloc((size_t)rows, sizeof *enc);
    int32_t **spans = calloc((size_t)n, sizeof *spans);
    if (!enc || !spans) {
        free(enc);
        free(spans);
        return KN_OOM(sizeof *enc * (size_t)rows);
    }
    kn_status *st = td_encode(p, d, idx, n, enc, spans);
    int64_t seq = 1;
    for (int r = 0; !st && r < rows; r++) {
        if (enc[r].n > seq) seq = enc[r].n;
        out->tokens += enc[r].n;
    }
    out->rows = rows;
    out->seq = seq;
    size_t cells = (size_t)rows * (size_t)seq;
    for (int i = 0; !st && i < p->n_inputs; i++) {
        const kn_pl_input *pi = &p->in[i];
        if (pi->role == KN_ROLE_PIXELS) {
            st = kn_error(KN_ERR_UNSUPPORTED, "%s: kiln train takes text models; this one takes pixel_values", p->dir);
            break;
        }
        void *mem = malloc((pi->dtype == KN_I32 ? 4 : 8) * (cells ? cells : 1));
        if (!mem) {
            st = KN_OOM(8 * cells);
            break;
        }
        out->mem[out->n_in] = mem;
        for (int r = 0; r < rows; r++) {
            const kn_encoding *e = &enc[r];
            for (int64_t t = 0; t < seq; t++) {
                bool real = t < e->n && (!e->attention_mask || e->attention_mask[t]);
                int64_t v = pi->role == KN_ROLE_IDS ? (t < e->n ? e->ids[t] : p->pad_id)
                    : pi->role == KN_ROLE_MASK      ? (real ? 1 : 0)
                    : pi->role == KN_ROLE_TYPES ? (t < e->n && e->type_ids && !p->zero_type_ids ? e->type_ids[t] : 0)
                                                : t;
                size_t c = (size_t)r * (size_t)seq + (size_t)t;
                if (pi->dtype == KN_I32) ((int32_t *)mem)[c] = (int32_t)v;
                else ((int64_t *)mem)[c] = v;
            }
        }
        out->in[out->n_in++] =
            (kn_named_tensor){.name = pi->name, .dtype = pi->dtype, .ndim = 2, .dims = {rows, seq}, .data = mem};
    }
    if (!st && d->format != KN_TD_PAIRS) {
        kn_named_tensor *x = &out->in[out->n_in];
        if (d->format == KN_TD_SCORED_PAIRS) {
            float *s = malloc(sizeof(float) * (size_t)n);
            if (!s) st = KN_OOM(sizeof(float) * (size_t)n);
            for (int i = 0; !st && i < n; i++) s[i] = d->ex[idx[i]].score;
            *x = (kn_named_tensor){.name = "scores", .dtype = KN_F32, .ndim = 1, .dims = {n}, .data = s};
            out->mem[out->n_in] = s;
        } else if (d->format == KN_TD_LABELLED_TEXT) {
            int64_t *l = malloc(sizeof(int64_t) * (size_t)n);
            if (!l) st = KN_OOM(sizeof(int64_t) * (size_t)n);
            for (int i = 0; !st && i < n; i++) l[i] = d->ex[idx[i]].label;
            *x = (kn_named_tensor){.name = "labels", .dtype = KN_I64, .ndim = 1, .dims = {n}, .data = l};
            out->mem[out->n_in] = l;
        } else {
            int64_t *l = malloc(sizeof(int64_t) * (cells ? cells : 1));
            if (!l) st = KN_OOM(sizeof(int64_t) * cells);
            for (int r = 0; !st && r < n; r++) {
                for (int64_t t = 0; t < seq; t++) l[(size_t)r * (size_t)seq + (size_t)t] = -100;
                td_token_labels(&d->ex[idx[r]], spans[r], &enc[r], l + (size_t)r * (size_t)seq);
            }
            *x = (kn_named_tensor){.name = "labels", .dtype = KN_I64, .ndim = 2, .dims = {n, seq}, .data = l};
            out->mem[out->n_in] = l;
        }
        out->n_in++;
    }
    for (int r = 0; r < rows; r++) kn_encoding_free(&enc[r]);
    for (int i = 0; i < n; i++) free(spans[i]);
    free(spans);
    free(enc);
    if (st) kn_td_batch_free(out);
    return st;
}

/* ---- evaluation ---- */

typedef struct {
    double v;
    int i;
} td_rank;
static int td_rank_cmp(const void *a, const void *b) {
    const td_rank *x = a, *y = b;
    return x->v < y->v ? -1 : x->v > y->v ? 1 : x->i - y->i;
}

static void td_ranks(const double *x, int n, double *r, td_rank *tmp) {
    for (int i = 0; i < n; i++) tmp[i] = (td_rank){x[i], i};
    qsort(tmp, (size_t)n, sizeof *tmp, td_rank_cmp);
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && tmp[j + 1].v == tmp[i].v) j++;
        double avg = 0.5 * (double)(i + j) + 1.0;
        for (int k = i; k <= j; k++) r[tmp[k].i] = avg;
        i = j + 1;
    }
}

double kn_td_spearman(const double *x, const double *y, int n) {
    if (n < 2) return NAN;
    double *rx = malloc(sizeof(double) * (size_t)n * 2);
    td_rank *tmp = malloc(sizeof *tmp * (size_t)n);
    if (!rx || !tmp) {
        free(rx);
        free(tmp);
        return NAN;
    }
    double *ry = rx + n;
    td_ranks(x, n, rx, tmp);
    td_ranks(y, n, ry, tmp);
    double mx = 0, my = 0;
    for (int i = 0; i < n; i++) {
        mx += rx[i];
        my += ry[i];
    }
    mx /= n;
    my /= n;
    double sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) {
        sxy += (rx[i] - mx) * (ry[i] - my);
        sxx += (rx[i] - mx) * (rx[i] - mx);
        syy += (ry[i] - my) * (ry[i] - my);
    }
    free(rx);
    free(tmp);
    return sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : NAN;
}

static double td_cos(const float *a, const float *b, int dim) {
    double ab = 0, aa = 0, bb = 0;
    for (int k = 0; k < dim; k++) {
        ab += (double)a[k] * b[k];
        aa += (double)a[k] * a[k];
        bb += (double)b[k] * b[k];
    }
    double den = sqrt(aa) * sqrt(bb);
    return den > 0 ? ab / den : 0;
}

/* log(sum(exp(x))) over n values */
static double td_lse(const double *x, int n) {
    double m = -INFINITY, s = 0;
    for (int i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    for (int i = 0; i < n; i++) s += exp(x[i] - m);
    return m + log(s);
}

static kn_status *td_eval_pairs(const kn_pipeline *p, const kn_train_data *d, kn_td_loss loss, int bs,
                                kn_td_eval *out) {
    int n = d->n;
    const char **texts = malloc(sizeof *texts * 2 * (size_t)n);
    kn_pl_embedding *emb = calloc(2 * (size_t)n, sizeof *emb);
    double *cs = malloc(sizeof(double) * 2 * (size_t)(n + bs) * (size_t)(bs + 1));
    kn_status *st = texts && emb && cs ? NULL : KN_OOM(sizeof *emb * 2 * (size_t)n);
    for (int i = 0; !st && i < n; i++) {
        texts[i] = d->ex[i].a;
        texts[n + i] = d->ex[i].b;
    }
    kn_pl_feature_options fo;
    kn_pl_feature_options_init(&fo);
    if (!st) st = kn_pl_feature_extraction(p, 2 * n, texts, &fo, emb);
    if (!st && d->format == KN_TD_SCORED_PAIRS) {
        double *sc = cs + n, sq = 0;
        for (int i = 0; i < n; i++) {
            cs[i] = td_cos(emb[i].data, emb[n + i].data, emb[i].dim);
            sc[i] = d->ex[i].score;
            sq += (cs[i] - sc[i]) * (cs[i] - sc[i]);
        }
        out->spearman = kn_td_spearman(cs, sc, n);
        out->metric = "spearman";
        out->value = out->spearman;
        if (loss == KN_TD_LOSS_COSENT) {
            /* CoSENTLoss over the whole eval set as one batch */
            double *terms = malloc(sizeof(double) * ((size_t)n * (size_t)n + 1));
            if (!terms) st = KN_OOM(sizeof(double) * (size_t)n * (size_t)n);
            int m = 0;
            if (terms) {
                terms[m++] = 0;
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < n; j++)
                        if (sc[i] > sc[j]) terms[m++] = KN_TD_PAIR_SCALE * (cs[j] - cs[i]);
                out->loss = td_lse(terms, m);
            }
            free(terms);
        } else {
            out->loss = sq / n;
        }
    } else if (!st) {
        /* in-batch negatives over batches of bs in file order, as training forms them */
        double lsum = 0;
        int correct = 0, batches = 0;
        for (int b0 = 0; b0 < n; b0 += bs) {
            int m = n - b0 < bs ? n - b0 : bs;
            double bl = 0;
            for (int i = 0; i < m; i++) {
                double *row = cs;
                int best = 0;
                for (int j = 0; j < m; j++) {
                    row[j] = KN_TD_PAIR_SCALE * td_cos(emb[b0 + i].data, emb[n + b0 + j].data, emb[0].dim);
                    if (row[j] > row[best]) best = j;
                }
                correct += best == i;
                bl += td_lse(row, m) - row[i];
            }
            lsum += bl / m;
            batches++;
        }
        out->loss = lsum / batches;
        out->accuracy = (double)correct / n;
        out->metric = "ranking_accuracy";
        out->value = out->accuracy;
    }
    for (int i = 0; i < 2 * n; i++) kn_pl_embedding_free(&emb[i]);
    free(emb);
    free(texts);
    free(cs);
    return st;
}

/* Per-token logits of every row, in row order. */
typedef struct {
    const kn_pipeline *p;
    int k;
    float **logits; /* per row: n tokens x k */
} td_tok_ctx;

static kn_status *td_tok_batch(void *vctx, const kn_pl_batch *b) {
    td_tok_ctx *c = vctx;
    const kn_named_tensor *t = pl_output(b, c->p, "logits");
    if (!t) t = pl_output(b, c->p, NULL);
    if (!t || t->dtype != KN_F32 || t->ndim != 3 || t->dims[0] != b->n || t->dims[1] != b->seq || t->dims[2] < 1)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: tokenClassification needs logits [batch, tokens, labels]",
                        c->p->dir);
    c->k = (int)t->dims[2];
    for (int r = 0; r < b->n; r++) {
        const kn_encoding *e = b->enc[r];
        float *lg = malloc(sizeof(float) * (size_t)(e->n ? e->n : 1) * (size_t)c->k);
        if (!lg) return KN_OOM(sizeof(float) * (size_t)e->n * (size_t)c->k);
        memcpy(lg, (const float *)t->data + (size_t)r * (size_t)b->seq * (size_t)c->k,
               sizeof(float) * (size_t)e->n * (size_t)c->k);
        c->logits[b->row_index[r]] = lg;
    }
    return NULL;
}

/* Accuracy and macro F1 from gold/pred label pairs (classes present in either). */
static void td_class_metrics(const int *gold, const int *pred, int n, int k, kn_td_eval *out) {
    int *tp = calloc((size_t)k * 3, sizeof(int));
    if (!tp || n == 0) {
        free(tp);
        return;
    }
    int *fp = tp + k, *fn = tp + 2 * k, correct = 0;
    for (int i = 0; i < n; i++) {
        if (gold[i] == pred[i]) {
            tp[gold[i]]++;
            correct++;
        } else {
            fp[pred[i]]++;
            fn[gold[i]]++;
        }
    }
    double f1 = 0;
    int classes = 0;
    for (int c = 0; c < k; c++) {
        if (!tp[c] && !fp[c] && !fn[c]) continue;
        classes++;
        f1 += 2.0 * tp[c] / (2.0 * tp[c] + fp[c] + fn[c]);
    }
    out->accuracy = (double)correct / n;
    out->macro_f1 = classes ? f1 / classes : 0;
    out->metric = "macro_f1";
    out->value = out->macro_f1;
    free(tp);
}

static double td_ce(const float *lg, int k, int label) {
    double m = -INFINITY, s = 0;
    for (int j = 0; j < k; j++) m = lg[j] > m ? lg[j] : m;
    for (int j = 0; j < k; j++) s += exp((double)lg[j] - m);
    return m + log(s) - (double)lg[label];
}

static int td_argmax(const float *x, int k) {
    int m = 0;
    for (int i = 1; i < k; i++)
        if (x[i] > x[m]) m = i;
    return m;
}

static kn_status *td_eval_class(const kn_pipeline *p, const kn_train_data *d, kn_td_eval *out) {
    int n = d->n;
    int *idx = calloc((size_t)n, sizeof(int));
    kn_encoding *enc = calloc((size_t)n, sizeof *enc);
    int32_t **spans = calloc((size_t)n, sizeof *spans);
    const kn_encoding **rows = malloc(sizeof *rows * (size_t)n);
    kn_status *st = idx && enc && spans && rows ? NULL : KN_OOM(sizeof *enc * (size_t)n);
    for (int i = 0; !st && i < n; i++) idx[i] = i;
    if (!st) st = td_encode(p, d, idx, n, enc, spans);
    for (int i = 0; !st && i < n; i++) rows[i] = &enc[i];
    int *gold = NULL, *pred = NULL, m = 0;
    double lsum = 0;
    if (!st && d->format == KN_TD_LABELLED_TEXT) {
        pl_logits lc = {.p = p, .n_rows = n};
        st = pl_run_encodings(p, n, rows, pl_collect_logits, &lc);
        gold = malloc(sizeof(int) * (size_t)n);
        pred = malloc(sizeof(int) * (size_t)n);
        if (!st && (!gold || !pred)) st = KN_OOM(sizeof(int) * (size_t)n);
        for (int i = 0; !st && i < n; i++) {
            const float *lg = lc.logits + (size_t)i * (size_t)lc.k;
            if (d->ex[i].label >= lc.k) {
                st = kn_error(KN_ERR_INVALID_MODEL, "line %d: label id %d but the model gives %d logits", d->ex[i].line,
                              d->ex[i].label, lc.k);
                break;
            }
            gold[m] = d->ex[i].label;
            pred[m] = td_argmax(lg, lc.k);
            lsum += td_ce(lg, lc.k, gold[m]);
            m++;
        }
        if (!st) td_class_metrics(gold, pred, m, lc.k, out);
        free(lc.logits);
    } else if (!st) {
        td_tok_ctx tc = {.p = p, .logits = calloc((size_t)n, sizeof(float *))};
        if (!tc.logits) st = KN_OOM(sizeof(float *) * (size_t)n);
        if (!st) st = pl_run_encodings(p, n, rows, td_tok_batch, &tc);
        int64_t total = 0;
        for (int i = 0; i < n; i++) total += enc[i].n;
        gold = malloc(sizeof(int) * (size_t)(total + 1));
        pred = malloc(sizeof(int) * (size_t)(total + 1));
        int64_t *lab = malloc(sizeof(int64_t) * (size_t)(total + 1));
        if (!st && (!gold || !pred || !lab)) st = KN_OOM(sizeof(int) * (size_t)total);
        for (int i = 0; !st && i < n; i++) {
            td_token_labels(&d->ex[i], spans[i], &enc[i], lab);
            for (int t = 0; t < enc[i].n; t++) {
                if (lab[t] < 0) continue;
                if (lab[t] >= tc.k) {
                    st = kn_error(KN_ERR_INVALID_MODEL, "line %d: label id %lld but the model gives %d logits",
                                  d->ex[i].line, (long long)lab[t], tc.k);
                    break;
                }
                const float *lg = tc.logits[i] + (size_t)t * (size_t)tc.k;
                gold[m] = (int)lab[t];
                pred[m] = td_argmax(lg, tc.k);
                lsum += td_ce(lg, tc.k, gold[m]);
                m++;
            }
        }
        if (!st) td_class_metrics(gold, pred, m, tc.k, out);
        for (int i = 0; tc.logits && i < n; i++) free(tc.logits[i]);
        free(tc.logits);
        free(lab);
    }
    if (!st) out->loss = m ? lsum / m : NAN;
    for (int i = 0; enc && i < n; i++) kn_encoding_free(&enc[i]);
    for (int i = 0; spans && i < n; i++) free(spans[i]);
    free(spans);
    free(enc);
    free(rows);
    free(idx);
    free(gold);
    free(pred);
    return st;
}

kn_status *kn_td_evaluate(const kn_pipeline *p, const kn_train_data *d, kn_td_loss loss, int batch_size,
                          kn_td_eval *out) {
    memset(out, 0, sizeof *out);
    out->n = d->n;
    out->spearman = NAN;
    if (d->n == 0) return kn_error(KN_ERR_INVALID_ARGUMENT, "evaluation: no examples");
    if (batch_size < 1) batch_size = 1;
    if (d->format == KN_TD_SCORED_PAIRS || d->format == KN_TD_PAIRS) return td_eval_pairs(p, d, loss, batch_size, out);
    return td_eval_class(p, d, out);
}
