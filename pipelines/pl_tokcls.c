/* tokenClassification: transformers' TokenClassificationPipeline (5.x) over a model folder:
 * per-token softmax, special tokens dropped through the special-tokens mask, subword detection,
 * the none / simple / first / average / max aggregations and the ignore_labels filter. */
#include "pipelines/pl_internal.h"
#include "pipelines/tok_internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void kn_pl_token_class_options_init(kn_pl_token_class_options *o) {
    memset(o, 0, sizeof *o);
    o->aggregation = KN_AGG_NONE;
}

void kn_pl_entities_free(kn_pl_entities *e) {
    if (!e) return;
    for (int i = 0; i < e->n; i++) free(e->v[i].word);
    free(e->v);
    e->v = NULL;
    e->n = 0;
}

/* Per-input model output: n tokens x k label probabilities. */
typedef struct {
    const kn_pipeline *p;
    float **probs;
    int k;
} tc_ctx;

static kn_status *tc_batch(void *vctx, const kn_pl_batch *b) {
    tc_ctx *c = vctx;
    const kn_named_tensor *t = pl_output(b, c->p, "logits");
    if (!t) t = pl_output(b, c->p, NULL);
    if (!t || t->dtype != KN_F32 || t->ndim != 3 || t->dims[0] != b->n || t->dims[1] != b->seq || t->dims[2] < 1)
        return kn_error(KN_ERR_INVALID_MODEL,
                        "%s: tokenClassification needs a float output [batch, tokens, labels] (logits); "
                        "the model gives %s",
                        c->p->dir, t ? t->name : "none");
    int k = (int)t->dims[2];
    if (c->k && c->k != k)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: the logits width changed between batches (%d, %d)", c->p->dir, c->k,
                        k);
    c->k = k;
    const float *lg = t->data;
    for (int r = 0; r < b->n; r++) {
        const kn_encoding *e = b->enc[r];
        float *pr = malloc(sizeof(float) * (size_t)(e->n > 0 ? e->n : 1) * (size_t)k);
        if (!pr) return KN_OOM(sizeof(float) * (size_t)e->n * (size_t)k);
        for (int i = 0; i < e->n; i++) {
            memcpy(pr + (size_t)i * k, lg + ((size_t)r * (size_t)b->seq + (size_t)i) * (size_t)k,
                   sizeof(float) * (size_t)k);
            pl_softmax(pr + (size_t)i * k, k);
        }
        c->probs[b->row_index[r]] = pr;
    }
    return NULL;
}

/* A token or word on its way to an entity: "word" is the token string (or the original text for
 * an unknown token), scores points at its k probabilities (or owned averages). */
typedef struct {
    char *word;
    const float *scores;
    float *own;
    int label;
    float score;
    int index, start, end;
    int is_subword;
} tc_pre;

static int argmax(const float *x, int k) {
    int m = 0;
    for (int i = 1; i < k; i++)
        if (x[i] > x[m]) m = i; /* numpy's argmax: the first maximum */
    return m;
}

static size_t cp_count(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* The decoder over a list of strings (transformers' convert_tokens_to_string). */
static kn_status *tc_join(const kn_pipeline *p, char **words, int n, char **out) {
    *out = tk_decode_tokens(p->tok->decoder, words, n);
    if (!*out)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: the tokenizer's decoder failed on an entity's tokens", p->dir);
    return NULL;
}

static bool tc_ignored(const kn_pl_token_class_options *o, const char *label) {
    static const char *const dflt[] = {"O"};
    const char *const *ig = o->ignore_labels ? o->ignore_labels : dflt;
    int n = o->ignore_labels ? o->n_ignore_labels : 1;
    for (int i = 0; i < n; i++)
        if (ig[i] && !strcmp(ig[i], label)) return true;
    return false;
}

/* get_tag: B-/I- prefix and the tag; anything else counts as a continuation (I). */
static const char *tc_tag(const char *label, char *bi) {
    if ((label[0] == 'B' || label[0] == 'I') && label[1] == '-') {
        *bi = label[0];
        return label + 2;
    }
    *bi = 'I';
    return label;
}

static kn_status *tc_push(kn_pl_entities *out, int *cap, kn_pl_entity e) {
    if (out->n == *cap) {
        int nc = *cap ? *cap * 2 : 8;
        kn_pl_entity *v = realloc(out->v, sizeof *v * (size_t)nc);
        if (!v) {
            free(e.word);
            return KN_OOM(sizeof *v * (size_t)nc);
        }
        out->v = v;
        *cap = nc;
    }
    out->v[out->n++] = e;
    return NULL;
}

/* group_entities + group_sub_entities over ents[0..n), appending the kept groups to out. */
static kn_status *tc_group(const kn_pipeline *p, tc_pre *ents, int n, const kn_pl_token_class_options *o,
                           kn_pl_entities *out, int *cap) {
    char **words = malloc(sizeof(char *) * (size_t)(n > 0 ? n : 1));
    if (!words) return KN_OOM(sizeof(char *) * (size_t)n);
    kn_status *st = NULL;
    for (int g0 = 0; g0 < n && !st;) {
        int g1 = g0 + 1;
        char lbi;
        const char *ltag = tc_tag(p->labels[ents[g0].label], &lbi);
        for (; g1 < n; g1++) {
            char bi;
            const char *tag = tc_tag(p->labels[ents[g1].label], &bi);
            (void)lbi;
            if (strcmp(tag, ltag) || bi == 'B') break;
            ltag = tag;
        }
        /* the group's name: the first member's label after its first '-' (split("-", 1)[-1]) */
        const char *lab = p->labels[ents[g0].label];
        const char *dash = strchr(lab, '-');
        const char *group = dash ? dash + 1 : lab;
        double sum = 0;
        int cnt = 0;
        for (int i = g0; i < g1; i++) {
            words[i - g0] = ents[i].word;
            if (!isnan(ents[i].score)) {
                sum += ents[i].score;
                cnt++;
            }
        }
        if (!tc_ignored(o, group)) {
            kn_pl_entity e = {.entity = group,
                              .score = cnt ? (float)(sum / cnt) : NAN,
                              .index = -1,
                              .start = ents[g0].start,
                              .end = ents[g1 - 1].end};
            st = tc_join(p, words, g1 - g0, &e.word);
            if (!st) st = tc_push(out, cap, e);
        }
        g0 = g1;
    }
    free(words);
    return st;
}

/* One input: its text (for offsets), encoding and probabilities. */
static kn_status *tc_post(const kn_pipeline *p, const char *text, const kn_encoding *e, const float *probs, int k,
                          const kn_pl_token_class_options *o, bool *warned, kn_pl_entities *out) {
    kn_pl_aggregation agg = o->aggregation;
    size_t tl = strlen(text), ncp = cp_count(text);
    size_t *cpb = malloc(sizeof(size_t) * (ncp + 1)); /* code point -> byte offset */
    tc_pre *pre = calloc((size_t)(e->n > 0 ? e->n : 1), sizeof *pre);
    kn_status *st = NULL;
    int npre = 0, cap = 0;
    if (!cpb || !pre) {
        free(cpb);
        free(pre);
        return KN_OOM(sizeof(size_t) * ncp);
    }
    for (size_t b = 0, c = 0; b <= tl; b++)
        if (b == tl || ((unsigned char)text[b] & 0xC0) != 0x80) cpb[c++] = b;
    const tk_model *m = &p->tok->model;
    bool word_aware = m->cont_prefix && m->cont_prefix[0];
    if (!word_aware && (agg == KN_AGG_FIRST || agg == KN_AGG_AVERAGE || agg == KN_AGG_MAX) && !*warned) {
        pl_warn(p,
                "tokenClassification: the tokenizer does not mark subwords (no continuing_subword_prefix); "
                "words are guessed from the spaces around each token, as transformers does");
        *warned = true;
    }
    for (int i = 0; i < e->n && !st; i++) {
        if (e->special_mask && e->special_mask[i]) continue;
        tc_pre *q = &pre[npre];
        const char *tok = kn_tokenizer_id_to_token(p->tok, e->ids[i]);
        if (!tok) tok = e->tokens ? e->tokens[i] : "";
        int s = e->offsets[2 * i], en = e->offsets[2 * i + 1];
        if (s < 0) s = 0;
        if (en < s) en = s;
        if ((size_t)en > ncp) en = (int)ncp;
        if (s > en) s = en;
        const char *ref = text + cpb[s];
        size_t ref_len = cpb[en] - cpb[s];
        if (word_aware) q->is_subword = cp_count(tok) != (size_t)(en - s);
        else {
            /* transformers: start > 0 and no " " in sentence[start - 1 : start + 1] */
            bool space = text[cpb[s - (s > 0)]] == ' ' || (s < (int)ncp && text[cpb[s]] == ' ');
            q->is_subword = s > 0 && !space;
        }
        if (e->ids[i] == m->unk_id) {
            q->word = strndup(ref, ref_len);
            q->is_subword = 0;
        } else q->word = strdup(tok);
        if (!q->word) {
            st = KN_OOM(strlen(tok));
            break;
        }
        q->scores = probs + (size_t)i * k;
        q->index = i;
        q->start = s;
        q->end = en;
        npre++;
    }
    /* one entity per token (none, simple) or per word (first, average, max) */
    int nent = 0;
    tc_pre *ents = pre;
    if (!st && (agg == KN_AGG_NONE || agg == KN_AGG_SIMPLE)) {
        for (int i = 0; i < npre; i++) {
            pre[i].label = argmax(pre[i].scores, k);
            pre[i].score = pre[i].scores[pre[i].label];
        }
        nent = npre;
    } else if (!st) {
        ents = calloc((size_t)(npre > 0 ? npre : 1), sizeof *ents);
        char **words = malloc(sizeof(char *) * (size_t)(npre > 0 ? npre : 1));
        if (!ents || !words) st = KN_OOM(sizeof *ents * (size_t)npre);
        for (int w0 = 0; !st && w0 < npre;) {
            int w1 = w0 + 1;
            while (w1 < npre && pre[w1].is_subword) w1++;
            tc_pre *w = &ents[nent];
            for (int i = w0; i < w1; i++) words[i - w0] = pre[i].word;
            st = tc_join(p, words, w1 - w0, &w->word);
            if (st) break;
            nent++;
            if (agg == KN_AGG_FIRST) w->label = argmax(pre[w0].scores, k), w->score = pre[w0].scores[w->label];
            else if (agg == KN_AGG_MAX) {
                int best = w0;
                float bm = pre[w0].scores[argmax(pre[w0].scores, k)];
                for (int i = w0 + 1; i < w1; i++) {
                    float mx = pre[i].scores[argmax(pre[i].scores, k)];
                    if (mx > bm) {
                        bm = mx;
                        best = i;
                    }
                }
                w->label = argmax(pre[best].scores, k);
                w->score = pre[best].scores[w->label];
            } else {
                w->own = malloc(sizeof(float) * (size_t)k);
                if (!w->own) {
                    st = KN_OOM(sizeof(float) * (size_t)k);
                    break;
                }
                for (int j = 0; j < k; j++) {
                    double s = 0;
                    int c = 0;
                    for (int i = w0; i < w1; i++)
                        if (!isnan(pre[i].scores[j])) {
                            s += pre[i].scores[j];
                            c++;
                        }
                    w->own[j] = c ? (float)(s / c) : NAN;
                }
                w->label = argmax(w->own, k);
                w->score = w->own[w->label];
            }
            w->start = pre[w0].start;
            w->end = pre[w1 - 1].end;
            w->index = -1;
            w0 = w1;
        }
        free(words);
    }
    for (int i = 0; !st && i < nent; i++)
        if (ents[i].label >= p->num_labels)
            st =
                kn_error(KN_ERR_INVALID_MODEL, "%s: the model predicts label %d but config.json id2label has %d labels",
                         p->dir, ents[i].label, p->num_labels);
    if (!st && agg == KN_AGG_NONE) {
        for (int i = 0; i < nent && !st; i++) {
            const char *lab = p->labels[ents[i].label];
            if (tc_ignored(o, lab)) continue;
            kn_pl_entity x = {.entity = lab,
                              .score = ents[i].score,
                              .index = ents[i].index,
                              .word = strdup(ents[i].word),
                              .start = ents[i].start,
                              .end = ents[i].end};
            if (!x.word) st = KN_OOM(strlen(ents[i].word));
            else st = tc_push(out, &cap, x);
        }
    } else if (!st) st = tc_group(p, ents, nent, o, out, &cap);
    if (ents != pre) {
        for (int i = 0; i < nent; i++) {
            free(ents[i].word);
            free(ents[i].own);
        }
        free(ents);
    }
    for (int i = 0; i < npre; i++) free(pre[i].word);
    free(pre);
    free(cpb);
    return st;
}

static kn_status *tc_run(const kn_pipeline *p, int n, const char *const *texts, const kn_pl_token_class_options *o,
                         kn_pl_entities *out) {
    kn_pl_token_class_options dflt;
    if (!o) {
        kn_pl_token_class_options_init(&dflt);
        o = &dflt;
    }
    if (o->aggregation < KN_AGG_NONE || o->aggregation > KN_AGG_MAX)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "tokenClassification: unknown aggregation strategy %d",
                        (int)o->aggregation);
    if (o->ignore_labels && o->n_ignore_labels < 0)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "tokenClassification: n_ignore_labels is %d", o->n_ignore_labels);
    memset(out, 0, sizeof *out * (size_t)(n > 0 ? n : 0));
    if (n <= 0) return NULL;
    for (int i = 0; i < n; i++)
        if (!texts[i]) return kn_error(KN_ERR_INVALID_ARGUMENT, "tokenClassification: input %d is NULL", i);
    if (!p->tok) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: tokenClassification needs a tokenizer", p->dir);
    kn_encoding *enc = calloc((size_t)n, sizeof *enc);
    const kn_encoding **rows = malloc(sizeof *rows * (size_t)n);
    tc_ctx c = {.p = p, .probs = calloc((size_t)n, sizeof(float *))};
    kn_status *st = NULL;
    if (!enc || !rows || !c.probs) st = KN_OOM(sizeof *enc * (size_t)n);
    if (!st) st = pl_encode(p, n, texts, NULL, NULL, 0, enc);
    if (!st) {
        for (int i = 0; i < n; i++) rows[i] = &enc[i];
        st = pl_run_encodings(p, n, rows, tc_batch, &c);
    }
    bool warned = false;
    for (int i = 0; !st && i < n; i++) st = tc_post(p, texts[i], &enc[i], c.probs[i], c.k, o, &warned, &out[i]);
    for (int i = 0; enc && i < n; i++) kn_encoding_free(&enc[i]);
    for (int i = 0; c.probs && i < n; i++) free(c.probs[i]);
    if (st)
        for (int i = 0; i < n; i++) kn_pl_entities_free(&out[i]);
    free(enc);
    free(rows);
    free(c.probs);
    return st;
}

kn_status *kn_pl_token_classification(const kn_pipeline *p, int n, const char *const *texts,
                                      const kn_pl_token_class_options *o, kn_pl_entities *out) {
    if (n > 0 && (!texts || !out))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "tokenClassification: no texts or no output array");
    return tc_run(p, n, texts, o, out);
}

kn_status *kn_pl_token_classification_words(const kn_pipeline *p, int n, const char *const *const *words,
                                            const int *n_words, const kn_pl_token_class_options *o,
                                            kn_pl_entities *out) {
    if (n > 0 && (!words || !n_words || !out))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "tokenClassification: no words or no output array");
    /* transformers joins the words with the delimiter (" ") and reports offsets in that text */
    char **texts = calloc((size_t)(n > 0 ? n : 1), sizeof(char *));
    if (!texts) return KN_OOM(sizeof(char *) * (size_t)n);
    kn_status *st = NULL;
    for (int i = 0; i < n && !st; i++) {
        if (n_words[i] < 0 || (n_words[i] > 0 && !words[i])) {
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "tokenClassification: input %d has %d words", i, n_words[i]);
            break;
        }
        size_t len = 1;
        for (int w = 0; w < n_words[i]; w++) {
            if (!words[i][w]) {
                st = kn_error(KN_ERR_INVALID_ARGUMENT, "tokenClassification: input %d word %d is NULL", i, w);
                break;
            }
            len += strlen(words[i][w]) + 1;
        }
        if (st) break;
        char *t = texts[i] = malloc(len);
        if (!t) {
            st = KN_OOM(len);
            break;
        }
        size_t at = 0;
        for (int w = 0; w < n_words[i]; w++) {
            if (w) t[at++] = ' ';
            size_t l = strlen(words[i][w]);
            memcpy(t + at, words[i][w], l);
            at += l;
        }
        t[at] = 0;
    }
    if (!st) st = tc_run(p, n, (const char *const *)texts, o, out);
    for (int i = 0; i < n; i++) free(texts[i]);
    free(texts);
    return st;
}
