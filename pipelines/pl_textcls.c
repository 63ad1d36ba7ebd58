/* textClassification: sequence-classification logits turned into labelled scores the way
 * transformers' TextClassificationPipeline does (default activation from the config, top_k,
 * id2label), for single texts and true text pairs; and the label-list helpers every
 * classification task returns. */
#include "pipelines/pl_internal.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kn_pl_text_class_options_init(kn_pl_text_class_options *o) {
    memset(o, 0, sizeof *o);
    o->activation = KN_ACT_DEFAULT;
    o->top_k = 1;
}

void kn_pl_labels_free(kn_pl_labels *l) {
    if (!l) return;
    free(l->v);
    free(l->owned);
    memset(l, 0, sizeof *l);
}

/* Highest score first; equal scores keep label order (Python's stable sort, numpy's argmax);
 * NaN sorts last so the order stays a total one. */
static int tc_cmp(const void *a, const void *b) {
    const kn_pl_label_score *x = a, *y = b;
    int xn = isnan(x->score), yn = isnan(y->score);
    if (xn != yn) return xn - yn;
    if (!xn && x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->id - y->id;
}

static void tc_activate(float *x, int k, kn_pl_activation act) {
    if (act == KN_ACT_SOFTMAX) pl_softmax(x, k);
    else if (act == KN_ACT_SIGMOID) pl_sigmoid(x, k);
}

kn_status *kn_pl_text_classification(const kn_pipeline *p, int n, const char *const *texts, const char *const *pairs,
                                     const kn_pl_text_class_options *o, kn_pl_labels *out) {
    if (n < 0 || (n > 0 && (!texts || !out)))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "textClassification: %d texts with a NULL array", n);
    if (n > 0) memset(out, 0, sizeof *out * (size_t)n);
    if (n == 0) return NULL;
    kn_pl_text_class_options dflt;
    if (!o) {
        kn_pl_text_class_options_init(&dflt);
        o = &dflt;
    }
    if (o->top_k < 0)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "textClassification: top_k %d is negative (0 means every label)",
                        o->top_k);
    if (o->activation < KN_ACT_DEFAULT || o->activation > KN_ACT_NONE)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "textClassification: unknown activation %d", (int)o->activation);
    for (int i = 0; i < n; i++)
        if (!texts[i]) return kn_error(KN_ERR_INVALID_ARGUMENT, "textClassification: input %d is NULL", i);

    kn_encoding *enc = calloc((size_t)n, sizeof *enc);
    const kn_encoding **rows = malloc(sizeof *rows * (size_t)n);
    pl_logits c = {.p = p, .n_rows = n};
    kn_status *st = !enc || !rows ? KN_OOM(sizeof *enc * (size_t)n) : NULL;
    if (!st) st = pl_encode(p, n, texts, pairs, NULL, 0, enc);
    for (int i = 0; !st && i < n; i++) rows[i] = &enc[i];
    if (!st) st = pl_run_encodings(p, n, rows, pl_collect_logits, &c);
    int k = c.k;
    /* transformers reads labels from id2label: a model wider than its config has no names */
    if (!st && p->num_labels > 0 && k != p->num_labels)
        st = kn_error(KN_ERR_INVALID_MODEL, "%s: the model gives %d logits but config.json id2label has %d labels",
                      p->dir, k, p->num_labels);
    kn_pl_activation act = o->activation != KN_ACT_DEFAULT ? o->activation : pl_default_activation(p, k);
    int keep = o->top_k == 0 || o->top_k > k ? k : o->top_k;
    /* without a config the labels are LABEL_<i>, owned by each result */
    size_t own_len = 0;
    if (!st && p->num_labels == 0)
        for (int j = 0; j < k; j++) own_len += (size_t)snprintf(NULL, 0, "LABEL_%d", j) + 1;
    for (int i = 0; !st && i < n; i++) {
        float *x = c.logits + (size_t)i * (size_t)k;
        tc_activate(x, k, act);
        kn_pl_label_score *all = malloc(sizeof *all * (size_t)k);
        if (!all) {
            st = KN_OOM(sizeof *all * (size_t)k);
            break;
        }
        char *owned = NULL;
        if (own_len && !(owned = malloc(own_len))) {
            free(all);
            st = KN_OOM(own_len);
            break;
        }
        char *w = owned;
        for (int j = 0; j < k; j++) {
            all[j].id = j;
            all[j].score = x[j];
            if (owned) {
                all[j].label = w;
                w += sprintf(w, "LABEL_%d", j) + 1;
            } else {
                all[j].label = p->labels[j];
            }
        }
        qsort(all, (size_t)k, sizeof *all, tc_cmp);
        out[i].n = keep;
        out[i].v = all;
        out[i].owned = owned;
    }
    for (int i = 0; enc && i < n; i++) kn_encoding_free(&enc[i]);
    free(enc);
    free(rows);
    free(c.logits);
    if (st)
        for (int i = 0; i < n; i++) kn_pl_labels_free(&out[i]);
    return st;
}
