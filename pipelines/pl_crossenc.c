/* crossEncoder: reranks documents against a query with a sequence-classification model fed
 * (query, document) text pairs, scoring as sentence-transformers' CrossEncoder.predict / .rank
 * do: the activation comes from config_sentence_transformers.json (sentence-transformers folders,
 * those with modules.json), config.json's
 * "sentence_transformers" entry or the legacy sbert_ce_default_activation_function, else
 * sigmoid for a one-logit head.
 *
 * A head with several logits has no single score in CrossEncoder (rank() refuses it, predict()
 * returns the raw vector); here its score is the LAST class's value after the activation,
 * softmax by default (pipeline.h), i.e. CrossEncoder.predict(apply_softmax=True)[:, -1]: the
 * "relevant" probability of a binary relevance head. */
#include "pipelines/pl_internal.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kn_pl_cross_encoder_options_init(kn_pl_cross_encoder_options *o) {
    memset(o, 0, sizeof *o);
    o->activation = KN_ACT_DEFAULT;
    o->threshold = -INFINITY;
    o->top_k = 0;
}

void kn_pl_ranking_free(kn_pl_ranking *r) {
    if (!r) return;
    free(r->v);
    memset(r, 0, sizeof *r);
}

/* kn_pl_activation plus Tanh, which sentence-transformers configs may name */
enum { CE_NONE, CE_SIGMOID, CE_SOFTMAX, CE_TANH, CE_UNSET };

/* An activation_fn class path as sentence-transformers stores it (fullname of the module,
 * e.g. "torch.nn.modules.activation.Sigmoid"). Paths outside torch are custom code that
 * CrossEncoder only imports with trust_remote_code: it warns and keeps its default, so do we. */
static kn_status *ce_resolve(const kn_pipeline *p, const char *path, const char *where, int *act) {
    if (strncmp(path, "torch.", 6)) {
        pl_warn(p, "%s: activation_fn '%s' is custom code that cannot be run here; using the default activation", where,
                path);
        return NULL;
    }
    const char *cls = strrchr(path, '.') + 1;
    static const struct {
        const char *name;
        int act;
    } known[] = {{"Sigmoid", CE_SIGMOID}, {"Identity", CE_NONE}, {"Softmax", CE_SOFTMAX}, {"Tanh", CE_TANH}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(cls, known[i].name)) {
            *act = known[i].act;
            return NULL;
        }
    return kn_error(KN_ERR_UNSUPPORTED,
                    "%s: activation_fn '%s' is not supported (Sigmoid, Identity, Softmax, Tanh are)", where, path);
}

/* The activation CrossEncoder would use for this folder, in its order of precedence. */
static kn_status *ce_default_activation(const kn_pipeline *p, int k, int *act) {
    *act = CE_UNSET;
    char path[4200];
    /* CrossEncoder reads config_sentence_transformers.json only for a sentence-transformers
     * folder (one with modules.json); a plain transformers folder goes by config.json alone */
    snprintf(path, sizeof path, "%s/modules.json", p->dir);
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    snprintf(path, sizeof path, "%s/config_sentence_transformers.json", p->dir);
    if (f && (f = fopen(path, "rb"))) {
        fclose(f);
        json_object *j = json_object_from_file(path);
        if (!j || !json_object_is_type(j, json_type_object)) {
            json_object_put(j);
            return kn_error(KN_ERR_INVALID_MODEL, "%s: not a JSON object", path);
        }
        const char *fn = pl_json_str(j, "activation_fn", NULL);
        kn_status *st = fn ? ce_resolve(p, fn, path, act) : NULL;
        json_object_put(j);
        if (st || *act != CE_UNSET) return st;
    }
    snprintf(path, sizeof path, "%s/config.json", p->dir);
    json_object *stcfg;
    if (p->config && json_object_object_get_ex(p->config, "sentence_transformers", &stcfg) &&
        json_object_is_type(stcfg, json_type_object) && json_object_object_get_ex(stcfg, "activation_fn", NULL)) {
        const char *fn = pl_json_str(stcfg, "activation_fn", NULL);
        if (fn) KN_TRY(ce_resolve(p, fn, path, act));
    } else {
        const char *fn = pl_json_str(p->config, "sbert_ce_default_activation_function", NULL);
        if (fn) KN_TRY(ce_resolve(p, fn, path, act));
    }
    if (*act != CE_UNSET) return NULL;
    int n_labels = p->num_labels > 0 ? p->num_labels : k;
    *act = n_labels == 1 ? CE_SIGMOID : CE_SOFTMAX;
    return NULL;
}

/* Best first; equal scores keep document order (rank() sorts stably); NaN last. */
static int ce_cmp(const void *a, const void *b) {
    const kn_pl_rank *x = a, *y = b;
    int xn = isnan(x->score), yn = isnan(y->score);
    if (xn != yn) return xn - yn;
    if (!xn && x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->index - y->index;
}

kn_status *kn_pl_cross_encoder(const kn_pipeline *p, const char *query, int n_docs, const char *const *docs,
                               const kn_pl_cross_encoder_options *o, kn_pl_ranking *out) {
    if (!out) return kn_error(KN_ERR_INVALID_ARGUMENT, "crossEncoder: no result to fill");
    memset(out, 0, sizeof *out);
    if (!query) return kn_error(KN_ERR_INVALID_ARGUMENT, "crossEncoder: the query is NULL");
    if (n_docs < 0 || (n_docs > 0 && !docs))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "crossEncoder: %d documents with a NULL array", n_docs);
    kn_pl_cross_encoder_options dflt;
    if (!o) {
        kn_pl_cross_encoder_options_init(&dflt);
        o = &dflt;
    }
    if (o->top_k < 0)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "crossEncoder: top_k %d is negative (0 keeps every document)",
                        o->top_k);
    if (o->activation < KN_ACT_DEFAULT || o->activation > KN_ACT_NONE)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "crossEncoder: unknown activation %d", (int)o->activation);
    if (n_docs == 0) return NULL;
    for (int i = 0; i < n_docs; i++)
        if (!docs[i]) return kn_error(KN_ERR_INVALID_ARGUMENT, "crossEncoder: document %d is NULL", i);

    const char **q = malloc(sizeof *q * (size_t)n_docs);
    kn_encoding *enc = calloc((size_t)n_docs, sizeof *enc);
    const kn_encoding **rows = malloc(sizeof *rows * (size_t)n_docs);
    pl_logits c = {.p = p, .n_rows = n_docs};
    kn_status *st = !q || !enc || !rows ? KN_OOM(sizeof *enc * (size_t)n_docs) : NULL;
    for (int i = 0; !st && i < n_docs; i++) q[i] = query;
    /* CrossEncoder tokenizes [query, document] as a pair, truncating longest-first, to an
     * older sentence_bert_config.json max_seq_length when the folder has one */
    int max_len = p->st_max_seq_length > 0 && (p->max_length <= 0 || p->st_max_seq_length < p->max_length)
        ? p->st_max_seq_length
        : 0;
    if (!st) st = pl_encode(p, n_docs, q, docs, NULL, max_len, enc);
    for (int i = 0; !st && i < n_docs; i++) rows[i] = &enc[i];
    if (!st) st = pl_run_encodings(p, n_docs, rows, pl_collect_logits, &c);
    int act = CE_UNSET, k = c.k;
    if (!st) {
        if (o->activation == KN_ACT_SIGMOID) act = CE_SIGMOID;
        else if (o->activation == KN_ACT_SOFTMAX) act = CE_SOFTMAX;
        else if (o->activation == KN_ACT_NONE) act = CE_NONE;
        else st = ce_default_activation(p, k, &act);
    }
    kn_pl_rank *v = NULL;
    if (!st && !(v = malloc(sizeof *v * (size_t)n_docs))) st = KN_OOM(sizeof *v * (size_t)n_docs);
    int kept = 0;
    for (int i = 0; !st && i < n_docs; i++) {
        float *x = c.logits + (size_t)i * (size_t)k;
        if (act == CE_SIGMOID) pl_sigmoid(x, k);
        else if (act == CE_SOFTMAX) pl_softmax(x, k);
        else if (act == CE_TANH)
            for (int j = 0; j < k; j++) x[j] = tanhf(x[j]);
        float s = x[k - 1];
        if (s < o->threshold) continue;
        v[kept++] = (kn_pl_rank){.index = i, .score = s};
    }
    if (!st) {
        qsort(v, (size_t)kept, sizeof *v, ce_cmp);
        out->n = o->top_k > 0 && o->top_k < kept ? o->top_k : kept;
        out->v = v;
        v = NULL;
    }
    free(v);
    for (int i = 0; enc && i < n_docs; i++) kn_encoding_free(&enc[i]);
    free(enc);
    free(rows);
    free(q);
    free(c.logits);
    return st;
}
