/* zeroShotClassification: an NLI model scores every (text, "This example is <label>.") pair and
 * the entailment logits become label probabilities, as transformers'
 * ZeroShotClassificationPipeline computes them. All pairs of a call run together through the
 * batch runner. */
#include "pipelines/pl_internal.h"
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void kn_pl_zero_shot_options_init(kn_pl_zero_shot_options *o) { memset(o, 0, sizeof *o); }

/* The hypothesis for one label: Python's str.format with one argument, the subset templates
 * use: "{}" or "{0}" take the label, "{{" and "}}" are braces. Anything else in braces, or a
 * template without a field, is an error, as str.format (or the pipeline's check) makes it. */
static kn_status *zs_format(const char *tpl, const char *label, char **out) {
    size_t tl = strlen(tpl), ll = strlen(label), cap = tl + 1, fields = 0;
    for (const char *s = tpl; (s = strchr(s, '{')); s++) cap += ll;
    char *buf = malloc(cap), *w = buf;
    if (!buf) return KN_OOM(cap);
    int autonum = 0, manual = 0;
    for (const char *s = tpl; *s; s++) {
        if (s[0] == '{' && s[1] == '{') {
            *w++ = '{';
            s++;
            continue;
        }
        if (s[0] == '}' && s[1] == '}') {
            *w++ = '}';
            s++;
            continue;
        }
        if (s[0] == '{' && (s[1] == '}' || (s[1] == '0' && s[2] == '}'))) {
            if (s[1] == '}') autonum++;
            else manual++;
            /* "{} {}" asks for a second argument; mixing "{}" and "{0}" is refused by Python too */
            if (autonum > 1 || (autonum && manual)) {
                free(buf);
                return kn_error(KN_ERR_INVALID_ARGUMENT,
                                "zeroShotClassification: hypothesis template \"%s\" has more than one {} field; "
                                "it takes one label (use {0} to repeat it)",
                                tpl);
            }
            memcpy(w, label, ll);
            w += ll;
            s += s[1] == '}' ? 1 : 2;
            fields++;
            continue;
        }
        if (s[0] == '{' || s[0] == '}') {
            free(buf);
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "zeroShotClassification: hypothesis template \"%s\": unexpected '%c' at character %d "
                            "(the label goes in {}; write {{ or }} for a brace)",
                            tpl, s[0], (int)(s - tpl));
        }
        *w++ = *s;
    }
    *w = 0;
    if (!fields) {
        free(buf);
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "zeroShotClassification: the hypothesis template \"%s\" has no {} for the label "
                        "(e.g. \"This example is {}.\")",
                        tpl);
    }
    *out = buf;
    return NULL;
}

/* The entailment column as the pipeline finds it: the first label2id key starting with
 * "entail" (any case), in the file's order; id2label when there is no label2id. -1 when none. */
static int zs_entailment_id(const kn_pipeline *p) {
    json_object *l2i;
    if (p->config && json_object_object_get_ex(p->config, "label2id", &l2i) &&
        json_object_is_type(l2i, json_type_object)) {
        json_object_object_foreach(l2i, key, val) {
            if (!strncasecmp(key, "entail", 6)) {
                if (!json_object_is_type(val, json_type_int)) return -2;
                return json_object_get_int(val);
            }
        }
        return -1;
    }
    for (int i = 0; i < p->num_labels; i++)
        if (!strncasecmp(p->labels[i], "entail", 6)) return i;
    return -1;
}

/* Highest first; ties put the later candidate first, as reversed(np.argsort(scores)) does. */
static int zs_cmp(const void *a, const void *b) {
    const kn_pl_label_score *x = a, *y = b;
    int xn = isnan(x->score), yn = isnan(y->score);
    if (xn != yn) return xn - yn;
    if (!xn && x->score != y->score) return x->score > y->score ? -1 : 1;
    return y->id - x->id;
}

/* Encodes every (text, hypothesis) pair, cutting only the text as the pipeline does
 * (truncation only_first) so that the hypothesis stays whole. */
static kn_status *zs_encode(const kn_pipeline *p, int n, int L, const char *const *texts, char *const *hyp,
                            kn_encoding *enc) {
    size_t rows = (size_t)n * (size_t)L;
    const char **a = malloc(sizeof *a * rows), **b = malloc(sizeof *b * rows);
    if (!a || !b) {
        free(a);
        free(b);
        return KN_OOM(sizeof *a * rows * 2);
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < L; j++) {
            a[(size_t)i * L + j] = texts[i];
            b[(size_t)i * L + j] = hyp[j];
        }
    kn_encode_options eo;
    kn_encode_options_init(&eo);
    eo.max_length = p->max_length;
    eo.strategy = KN_TRUNCATE_ONLY_FIRST;
    eo.no_overflow = 1; /* only the first window is used */
    kn_status *st = pl_encode(p, (int)rows, a, b, &eo, 0, enc);
    /* a hypothesis too long to leave room for any text: transformers then drops truncation and
     * the model fails on the length, so cut both sides instead and say so */
    for (size_t r = 0; !st && p->max_length > 0 && r < rows; r++) {
        if (enc[r].n <= p->max_length) continue;
        pl_warn(p,
                "zero-shot pair %zu (text %zu, label %zu): the hypothesis alone exceeds the model's %d-token limit; "
                "truncating both sides",
                r, r / (size_t)L, r % (size_t)L, p->max_length);
        kn_encoding_free(&enc[r]);
        kn_encode_options lf = eo;
        lf.strategy = KN_TRUNCATE_LONGEST_FIRST;
        st = pl_encode(p, 1, &a[r], &b[r], &lf, 0, &enc[r]);
    }
    for (int i = 0; !st && i < n; i++) {
        int cut = 0;
        for (int j = 0; j < L; j++) {
            kn_encoding *e = &enc[(size_t)i * L + j];
            cut |= e->n_overflow > 0 || e->truncated;
            for (int k = 0; k < e->n_overflow; k++) kn_encoding_free(&e->overflow[k]);
            free(e->overflow);
            e->overflow = NULL;
            e->n_overflow = 0;
        }
        if (cut)
            pl_warn(p, "input %d is longer than the model's limit with its hypothesis; truncated to %d tokens", i,
                    p->max_length);
    }
    free(a);
    free(b);
    return st;
}

kn_status *kn_pl_zero_shot_classification(const kn_pipeline *p, int n, const char *const *texts,
                                          const kn_pl_zero_shot_options *o, kn_pl_labels *out) {
    if (n < 0 || (n > 0 && (!texts || !out)))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "zeroShotClassification: %d texts with a NULL array", n);
    if (n > 0) memset(out, 0, sizeof *out * (size_t)n);
    if (!o || o->n_labels < 1 || !o->labels)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "zeroShotClassification: no candidate labels; give at least one");
    if (n == 0) return NULL;
    int L = o->n_labels;
    for (int j = 0; j < L; j++)
        if (!o->labels[j])
            return kn_error(KN_ERR_INVALID_ARGUMENT, "zeroShotClassification: candidate label %d is NULL", j);
    for (int i = 0; i < n; i++)
        if (!texts[i]) return kn_error(KN_ERR_INVALID_ARGUMENT, "zeroShotClassification: input %d is NULL", i);
    if ((size_t)n * (size_t)L > 100000000)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "zeroShotClassification: %d texts x %d labels is too many pairs for one call", n, L);

    int ent = zs_entailment_id(p);
    if (ent == -2)
        return kn_error(KN_ERR_INVALID_MODEL, "%s/config.json: label2id's entailment entry is not an integer", p->dir);
    if (ent == -1)
        pl_warn(p,
                "%s/config.json: no label2id entry starts with 'entail'; using the last logit as entailment, as "
                "transformers does "
                "(its results are only meaningful if that is the entailment class)",
                p->dir);

    const char *tpl = o->template_ ? o->template_ : "This example is {}.";
    size_t rows = (size_t)n * (size_t)L;
    char **hyp = calloc((size_t)L, sizeof *hyp);
    kn_encoding *enc = calloc(rows, sizeof *enc);
    const kn_encoding **rp = malloc(sizeof *rp * rows);
    pl_logits c = {.p = p, .n_rows = (int)rows};
    kn_status *st = !hyp || !enc || !rp ? KN_OOM(sizeof *enc * rows) : NULL;
    for (int j = 0; !st && j < L; j++) st = zs_format(tpl, o->labels[j], &hyp[j]);
    if (!st) st = zs_encode(p, n, L, texts, hyp, enc);
    for (size_t r = 0; !st && r < rows; r++) rp[r] = &enc[r];
    if (!st) st = pl_run_encodings(p, (int)rows, rp, pl_collect_logits, &c);
    int k = c.k;
    if (!st && k < 2)
        st = kn_error(KN_ERR_INVALID_MODEL,
                      "%s: the model gives %d logit%s per pair; zero-shot classification needs an NLI model "
                      "(entailment and contradiction classes)",
                      p->dir, k, k == 1 ? "" : "s");
    /* Python indexing: -1 is the last column; contradiction is column 0 unless entailment is */
    int ei = ent < 0 ? k - 1 : ent, ci = ent == 0 ? k - 1 : 0;
    if (!st && ei >= k)
        st = kn_error(KN_ERR_INVALID_MODEL,
                      "%s/config.json: the entailment label id %d is outside the model's %d logits", p->dir, ent, k);

    size_t own_len = 0;
    for (int j = 0; j < L; j++) own_len += strlen(o->labels[j]) + 1;
    int pairwise = o->multi_label || L == 1;
    for (int i = 0; !st && i < n; i++) {
        kn_pl_label_score *v = malloc(sizeof *v * (size_t)L);
        char *owned = malloc(own_len);
        float *e = malloc(sizeof(float) * (size_t)L);
        if (!v || !owned || !e) {
            free(v);
            free(owned);
            free(e);
            st = KN_OOM(own_len);
            break;
        }
        const float *x = c.logits + (size_t)i * (size_t)L * (size_t)k;
        if (pairwise) {
            /* each label on its own: softmax over [contradiction, entailment] */
            for (int j = 0; j < L; j++) {
                float pair[2] = {x[(size_t)j * k + ci], x[(size_t)j * k + ei]};
                pl_softmax(pair, 2);
                e[j] = pair[1];
            }
        } else {
            for (int j = 0; j < L; j++) e[j] = x[(size_t)j * k + ei];
            pl_softmax(e, L);
        }
        char *w = owned;
        for (int j = 0; j < L; j++) {
            size_t l = strlen(o->labels[j]) + 1;
            memcpy(w, o->labels[j], l);
            v[j] = (kn_pl_label_score){.label = w, .id = j, .score = e[j]};
            w += l;
        }
        free(e);
        qsort(v, (size_t)L, sizeof *v, zs_cmp);
        out[i] = (kn_pl_labels){.n = L, .v = v, .owned = owned};
    }
    for (size_t r = 0; enc && r < rows; r++) kn_encoding_free(&enc[r]);
    for (int j = 0; hyp && j < L; j++) free(hyp[j]);
    free(hyp);
    free(enc);
    free(rp);
    free(c.logits);
    if (st)
        for (int i = 0; i < n; i++) kn_pl_labels_free(&out[i]);
    return st;
}
