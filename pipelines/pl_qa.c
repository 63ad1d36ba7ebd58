/* questionAnswering (extractive): transformers' QuestionAnsweringPipeline (4.57, the last release
 * that ships it) with a fast tokenizer: question + context windows (only_second truncation with a
 * stride), context-only softmax, span scores as the outer product of start and end
 * probabilities, answers aligned to words, merged by text across windows, best first. */
#include "pipelines/pl_internal.h"
#include "pipelines/tok_internal.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void kn_pl_qa_options_init(kn_pl_qa_options *o) {
    memset(o, 0, sizeof *o);
    o->top_k = 1;
    o->max_answer_len = 15;
    o->doc_stride = 0;  /* transformers: min(max_seq_len / 2, 128) */
    o->max_seq_len = 0; /* min(384, the model's limit) */
}

void kn_pl_answers_free(kn_pl_answers *a) {
    if (!a) return;
    for (int i = 0; i < a->n; i++) free(a->v[i].answer);
    free(a->v);
    a->v = NULL;
    a->n = 0;
}

typedef struct {
    const kn_pipeline *p;
    float **start, **end; /* per row: n logits each */
} qa_ctx;

static kn_status *qa_batch(void *vctx, const kn_pl_batch *b) {
    qa_ctx *c = vctx;
    const kn_named_tensor *s = pl_output(b, c->p, "start_logits"), *e = pl_output(b, c->p, "end_logits");
    int64_t ss = b->seq, es = b->seq, so = 0, eo = 0, stride_s = 1, stride_e = 1;
    if (!s || !e) {
        if (b->n_out >= 2) {
            s = &b->out[0];
            e = &b->out[1];
        } else if (b->n_out == 1 && b->out[0].ndim == 3 && b->out[0].dims[2] == 2) {
            /* one [batch, tokens, 2] output: start and end interleaved */
            s = e = &b->out[0];
            ss = es = 2 * b->seq;
            eo = 1;
            stride_s = stride_e = 2;
        }
    }
    bool ok = s && e && s->dtype == KN_F32 && e->dtype == KN_F32;
    if (ok && s != e)
        ok = s->ndim == 2 && e->ndim == 2 && s->dims[0] == b->n && s->dims[1] == b->seq && e->dims[0] == b->n &&
            e->dims[1] == b->seq;
    if (ok && s == e) ok = s->dims[0] == b->n && s->dims[1] == b->seq;
    if (!ok)
        return kn_error(KN_ERR_INVALID_MODEL,
                        "%s: questionAnswering needs start_logits and end_logits outputs [batch, tokens] "
                        "(or two outputs, or one [batch, tokens, 2])",
                        c->p->dir);
    for (int r = 0; r < b->n; r++) {
        int n = b->enc[r]->n, row = b->row_index[r];
        float *sv = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1)),
              *ev = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
        if (!sv || !ev) {
            free(sv);
            free(ev);
            return KN_OOM(sizeof(float) * (size_t)n);
        }
        const float *sd = s->data, *ed = e->data;
        for (int i = 0; i < n; i++) {
            sv[i] = sd[r * ss + so + i * stride_s];
            ev[i] = ed[r * es + eo + i * stride_e];
        }
        c->start[row] = sv;
        c->end[row] = ev;
    }
    return NULL;
}

typedef struct {
    double score;
    int s, e;
} qa_cand;
static int qa_cand_cmp(const void *a, const void *b) {
    const qa_cand *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? 1 : -1;
    if (x->s != y->s) return x->s - y->s;
    return x->e - y->e;
}

typedef struct {
    char *text;
    double score;
    int start, end;
} qa_ans;
typedef struct {
    qa_ans *v;
    int n, cap;
} qa_list;

static size_t cp_count(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* The id of the tokenizer's cls token (transformers keeps it unmasked: some models point at it
 * for "no answer"). */
static int32_t qa_cls_id(const kn_pipeline *p) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", p->dir);
    json_object *tc = json_object_from_file(path), *v;
    int32_t id = -1;
    if (tc && json_object_object_get_ex(tc, "cls_token", &v)) {
        const char *name =
            json_object_is_type(v, json_type_string) ? json_object_get_string(v) : pl_json_str(v, "content", NULL);
        if (name) id = kn_tokenizer_token_to_id(p->tok, name);
    }
    if (tc) json_object_put(tc);
    if (id < 0) id = kn_tokenizer_token_to_id(p->tok, "[CLS]");
    if (id < 0) id = kn_tokenizer_token_to_id(p->tok, "<s>");
    return id;
}

/* Which tokens are the context's (sequence_ids() == 1): type id 1 where the tokenizer sets type
 * ids, else the non-special tokens after the first special token that follows the question. */
static void qa_context_tokens(const kn_encoding *e, uint8_t *ctx) {
    bool types = false;
    for (int i = 0; i < e->n; i++)
        if (e->type_ids && e->type_ids[i] == 1 && !(e->special_mask && e->special_mask[i])) types = true;
    bool seen_q = false, after = false;
    for (int i = 0; i < e->n; i++) {
        bool special = e->special_mask && e->special_mask[i];
        if (types) {
            ctx[i] = !special && e->type_ids[i] == 1;
            continue;
        }
        if (!special) seen_q = true;
        else if (seen_q) after = true;
        ctx[i] = !special && after;
    }
}

/* align_to_words: the character span of the words holding tokens s and e. Word boundaries are
 * known for tokenizers with a continuing-subword prefix (WordPiece "##"): a word is a token and
 * the prefixed tokens after it. Other tokenizers keep the tokens' own offsets (transformers'
 * fallback when words are unknown). */
static void qa_indices(const kn_pipeline *p, const kn_encoding *e, const uint8_t *ctx, int s, int en, int *cs,
                       int *ce) {
    const char *pre = p->tok->model.cont_prefix;
    size_t pl = pre ? strlen(pre) : 0;
    if (pl && ctx[s] && ctx[en]) {
        while (s > 0 && ctx[s - 1] && e->tokens && !strncmp(e->tokens[s], pre, pl)) s--;
        while (en + 1 < e->n && ctx[en + 1] && e->tokens && !strncmp(e->tokens[en + 1], pre, pl)) en++;
    }
    *cs = e->offsets[2 * s];
    *ce = e->offsets[2 * en + 1];
}

static kn_status *qa_add(qa_list *l, const char *ctx, const size_t *cpb, size_t ncp, int cs, int ce, double score) {
    if (cs < 0) cs = 0;
    if ((size_t)ce > ncp) ce = (int)ncp;
    if (ce < cs) ce = cs;
    size_t b0 = cpb[cs], len = cpb[ce] - b0;
    for (int i = 0; i < l->n; i++) /* get_answer: the same text, ignoring case, adds up */
        if (strlen(l->v[i].text) == len && !strncasecmp(l->v[i].text, ctx + b0, len)) {
            l->v[i].score += score;
            return NULL;
        }
    if (l->n == l->cap) {
        int nc = l->cap ? l->cap * 2 : 16;
        qa_ans *v = realloc(l->v, sizeof *v * (size_t)nc);
        if (!v) return KN_OOM(sizeof *v * (size_t)nc);
        l->v = v;
        l->cap = nc;
    }
    char *t = strndup(ctx + b0, len);
    if (!t) return KN_OOM(len);
    l->v[l->n++] = (qa_ans){t, score, cs, ce};
    return NULL;
}

static int qa_ans_cmp(const void *a, const void *b) {
    const qa_ans *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? 1 : -1;
    return x->start - y->start; /* stable enough: transformers keeps insertion order on ties */
}

/* postprocess for one question: every window of it, then the best top_k answers. */
static kn_status *qa_post(const kn_pipeline *p, const char *context, const kn_encoding *const *wins,
                          float *const *starts, float *const *ends, int nw, const kn_pl_qa_options *o, int32_t cls_id,
                          kn_pl_answers *out) {
    size_t cl = strlen(context), ncp = cp_count(context, cl);
    size_t *cpb = malloc(sizeof(size_t) * (ncp + 1));
    if (!cpb) return KN_OOM(ncp);
    for (size_t b = 0, c = 0; b <= cl; b++)
        if (b == cl || ((unsigned char)context[b] & 0xC0) != 0x80) cpb[c++] = b;
    qa_list l = {0};
    kn_status *st = NULL;
    double min_null = 1000000;
    int pre_topk = o->top_k * 2 + 10, L = o->max_answer_len;
    for (int w = 0; w < nw && !st; w++) {
        const kn_encoding *e = wins[w];
        int n = e->n;
        if (n <= 0) continue;
        uint8_t *ctx = malloc((size_t)n);
        double *ps = malloc(sizeof(double) * (size_t)n * 2), *pe = ps + n;
        qa_cand *cand = malloc(sizeof *cand * (size_t)n * (size_t)(L < n ? L : n));
        if (!ctx || !ps || !cand) {
            free(ctx);
            free(ps);
            free(cand);
            st = KN_OOM((size_t)n * L);
            break;
        }
        qa_context_tokens(e, ctx);
        for (int i = 0; i < n; i++)
            if (e->ids[i] == cls_id) ctx[i] = 1; /* p_mask 0 for the cls token */
        double ms = -INFINITY, me = -INFINITY;
        for (int i = 0; i < n; i++) {
            ps[i] = ctx[i] ? starts[w][i] : -10000.0;
            pe[i] = ctx[i] ? ends[w][i] : -10000.0;
            ms = fmax(ms, ps[i]);
            me = fmax(me, pe[i]);
        }
        double ss = 0, se = 0;
        for (int i = 0; i < n; i++) {
            ps[i] = exp(ps[i] - ms);
            ss += ps[i];
            pe[i] = exp(pe[i] - me);
            se += pe[i];
        }
        for (int i = 0; i < n; i++) {
            ps[i] /= ss;
            pe[i] /= se;
        }
        if (o->handle_impossible_answer) min_null = fmin(min_null, ps[0] * pe[0]);
        ps[0] = pe[0] = 0; /* transformers always takes the first token out of the spans */
        int nc = 0;
        for (int s = 0; s < n; s++)
            for (int en = s; en < n && en - s < L; en++) cand[nc++] = (qa_cand){ps[s] * pe[en], s, en};
        qsort(cand, (size_t)nc, sizeof *cand, qa_cand_cmp);
        for (int k = 0; k < nc && k < pre_topk && !st; k++) {
            if (!ctx[cand[k].s] || !ctx[cand[k].e]) continue;
            int cs, ce;
            qa_indices(p, e, ctx, cand[k].s, cand[k].e, &cs, &ce);
            st = qa_add(&l, context, cpb, ncp, cs, ce, cand[k].score);
        }
        free(ctx);
        free(ps);
        free(cand);
    }
    if (!st && o->handle_impossible_answer) {
        if (l.n == l.cap) {
            qa_ans *v = realloc(l.v, sizeof *v * (size_t)(l.cap + 1));
            if (!v) st = KN_OOM(sizeof *v);
            else {
                l.v = v;
                l.cap++;
            }
        }
        if (!st) {
            char *t = strdup("");
            if (!t) st = KN_OOM(1);
            else l.v[l.n++] = (qa_ans){t, min_null, 0, 0};
        }
    }
    if (!st) {
        qsort(l.v, (size_t)l.n, sizeof *l.v, qa_ans_cmp);
        int k = l.n < o->top_k ? l.n : o->top_k;
        out->v = calloc((size_t)(k > 0 ? k : 1), sizeof *out->v);
        if (!out->v) st = KN_OOM(sizeof *out->v * (size_t)k);
        for (int i = 0; !st && i < k; i++) {
            out->v[i] = (kn_pl_answer){l.v[i].text, (float)l.v[i].score, l.v[i].start, l.v[i].end};
            l.v[i].text = NULL;
            out->n = i + 1;
        }
    }
    for (int i = 0; i < l.n; i++) free(l.v[i].text);
    free(l.v);
    free(cpb);
    return st;
}

kn_status *kn_pl_question_answering(const kn_pipeline *p, int n, const char *const *questions,
                                    const char *const *contexts, const kn_pl_qa_options *opt, kn_pl_answers *out) {
    kn_pl_qa_options o;
    if (opt) o = *opt;
    else kn_pl_qa_options_init(&o);
    if (n <= 0) return NULL;
    if (!questions || !contexts || !out)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "questionAnswering: no questions, contexts or output array");
    memset(out, 0, sizeof *out * (size_t)n);
    if (!p->tok) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: questionAnswering needs a tokenizer", p->dir);
    if (o.top_k < 1)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "questionAnswering: top_k should be >= 1 (got %d)", o.top_k);
    if (o.max_answer_len < 1)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "questionAnswering: max_answer_len should be >= 1 (got %d)",
                        o.max_answer_len);
    for (int i = 0; i < n; i++) {
        if (!questions[i] || !*questions[i])
            return kn_error(KN_ERR_INVALID_ARGUMENT, "questionAnswering: input %d: the question is empty", i);
        if (!contexts[i] || !*contexts[i])
            return kn_error(KN_ERR_INVALID_ARGUMENT, "questionAnswering: input %d: the context is empty", i);
    }
    int msl = o.max_seq_len > 0 ? o.max_seq_len : (p->max_length > 0 && p->max_length < 384 ? p->max_length : 384);
    int stride = o.doc_stride > 0 ? o.doc_stride : (msl / 2 < 128 ? msl / 2 : 128);
    if (stride > msl)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "questionAnswering: doc_stride (%d) is larger than max_seq_len (%d)",
                        stride, msl);
    kn_encode_options eo;
    kn_encode_options_init(&eo);
    eo.max_length = msl;
    eo.strategy = KN_TRUNCATE_ONLY_SECOND;
    eo.stride = stride;
    kn_encoding *enc = calloc((size_t)n, sizeof *enc);
    if (!enc) return KN_OOM(sizeof *enc * (size_t)n);
    kn_status *st = pl_encode(p, n, questions, contexts, &eo, 0, enc);
    /* a question that leaves no room for the context: the tokenizer then puts the whole context
     * in one window longer than max_seq_len (transformers fails there too); say why instead */
    for (int i = 0; !st && i < n; i++)
        for (int k = -1; !st && k < enc[i].n_overflow; k++) {
            const kn_encoding *w = k < 0 ? &enc[i] : &enc[i].overflow[k];
            if (w->n > msl)
                st = kn_error(KN_ERR_INVALID_ARGUMENT,
                              "questionAnswering: input %d: the question and its special tokens fill the "
                              "%d-token window (--max-length): no room is left for the context; shorten the question "
                              "or raise --max-length",
                              i, msl);
        }
    int nrows = 0;
    for (int i = 0; !st && i < n; i++) nrows += 1 + enc[i].n_overflow;
    const kn_encoding **rows = malloc(sizeof *rows * (size_t)(nrows > 0 ? nrows : 1));
    qa_ctx c = {.p = p,
                .start = calloc((size_t)(nrows > 0 ? nrows : 1), sizeof(float *)),
                .end = calloc((size_t)(nrows > 0 ? nrows : 1), sizeof(float *))};
    if (!st && (!rows || !c.start || !c.end)) st = KN_OOM(sizeof *rows * (size_t)nrows);
    for (int i = 0, r = 0; !st && i < n; i++) {
        rows[r++] = &enc[i];
        for (int k = 0; k < enc[i].n_overflow; k++) rows[r++] = &enc[i].overflow[k];
    }
    if (!st) st = pl_run_encodings(p, nrows, rows, qa_batch, &c);
    int32_t cls_id = st ? -1 : qa_cls_id(p);
    for (int i = 0, r = 0; !st && i < n; i++) {
        int nw = 1 + enc[i].n_overflow;
        st = qa_post(p, contexts[i], rows + r, c.start + r, c.end + r, nw, &o, cls_id, &out[i]);
        r += nw;
    }
    for (int r = 0; r < nrows && c.start; r++) {
        free(c.start[r]);
        free(c.end[r]);
    }
    free(c.start);
    free(c.end);
    free(rows);
    for (int i = 0; i < n; i++) kn_encoding_free(&enc[i]);
    free(enc);
    if (st)
        for (int i = 0; i < n; i++) kn_pl_answers_free(&out[i]);
    return st;
}
