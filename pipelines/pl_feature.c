/* featureExtraction over text: token embeddings from the model, pooled the way
 * sentence-transformers' Pooling module pools them (mean / CLS / max / last token, or none) and
 * optionally L2-normalised like its Normalize module. */
#include "pipelines/pl_internal.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kn_pl_feature_options_init(kn_pl_feature_options *o) {
    memset(o, 0, sizeof *o);
    o->pooling = KN_POOL_DEFAULT;
    o->normalize = -1;
}

void kn_pl_embedding_free(kn_pl_embedding *e) {
    if (!e) return;
    free(e->data);
    memset(e, 0, sizeof *e);
}

typedef struct {
    const kn_pipeline *p;
    const kn_pl_feature_options *o;
    kn_pl_pooling pool;
    int normalize; /* 1: L2 per pooled vector (or per token row with pooling none) */
    kn_pl_embedding *out;
} pl_feat_ctx;

static kn_pl_pooling pl_feat_pooling(const kn_pipeline *p, const kn_pl_feature_options *o) {
    if (o->pooling != KN_POOL_DEFAULT) return o->pooling;
    if (p->pooling != KN_POOL_DEFAULT) return p->pooling;
    return KN_POOL_MEAN;
}

static int pl_feat_normalize(const kn_pipeline *p, const kn_pl_feature_options *o) {
    if (o->normalize >= 0) return o->normalize != 0;
    return p->normalize != 0;
}

/* torch.nn.functional.normalize: x / max(||x||, 1e-12) */
static void pl_l2(float *x, int dim) {
    double s = 0;
    for (int d = 0; d < dim; d++) s += (double)x[d] * x[d];
    double n = sqrt(s);
    if (n < 1e-12) n = 1e-12;
    for (int d = 0; d < dim; d++) x[d] = (float)(x[d] / n);
}

static const char *pl_feat_outputs(const kn_pl_batch *b, char *buf, size_t len) {
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < b->n_out && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s'%s'", i ? ", " : "", b->out[i].name);
    return buf;
}

/* The output to read: the named one; else a pooled sentence_embedding (unless token embeddings
 * are wanted); else the token embeddings (last_hidden_state, token_embeddings, the first
 * rank-3 output). */
static kn_status *pl_feat_pick(const pl_feat_ctx *c, const kn_pl_batch *b, const kn_named_tensor **out) {
    char names[512];
    *out = NULL;
    if (c->o->output_name) {
        *out = pl_output(b, c->p, c->o->output_name);
        if (!*out)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: the model has no output '%s' (its outputs are %s)", c->p->dir,
                            c->o->output_name, pl_feat_outputs(b, names, sizeof names));
        return NULL;
    }
    /* the model's own pooling wins unless a pooling was asked for and token embeddings exist */
    const kn_named_tensor *sent = c->pool != KN_POOL_NONE ? pl_output(b, c->p, "sentence_embedding") : NULL;
    if (sent && c->o->pooling == KN_POOL_DEFAULT) {
        *out = sent;
        return NULL;
    }
    static const char *const tok_names[] = {"last_hidden_state", "token_embeddings"};
    for (int k = 0; k < 2; k++)
        if ((*out = pl_output(b, c->p, tok_names[k]))) return NULL;
    for (int i = 0; i < b->n_out; i++)
        if (b->out[i].ndim == 3 && b->out[i].dtype == KN_F32) {
            *out = &b->out[i];
            return NULL;
        }
    if (sent) {
        *out = sent;
        return NULL;
    }
    return kn_error(KN_ERR_UNSUPPORTED,
                    "%s: no output holds token embeddings (float [batch, sequence, hidden]); the outputs are %s%s",
                    c->p->dir, pl_feat_outputs(b, names, sizeof names),
                    c->pool == KN_POOL_NONE ? " (pooling none needs token embeddings)" : "; name one with output_name");
}

/* One pooled row, as sentence-transformers' Pooling computes it over the attention mask. */
static void pl_pool_row(kn_pl_pooling pool, const float *h, const int64_t *mask, int64_t seq, int dim, float *e) {
    if (pool == KN_POOL_CLS) {
        memcpy(e, h, sizeof(float) * (size_t)dim);
        return;
    }
    if (pool == KN_POOL_LAST) {
        int64_t last = seq - 1; /* sentence-transformers' choice for a row without tokens */
        for (int64_t t = seq - 1; t >= 0; t--)
            if (mask[t]) {
                last = t;
                break;
            }
        memcpy(e, h + last * dim, sizeof(float) * (size_t)dim);
        return;
    }
    if (pool == KN_POOL_MAX) {
        /* masked positions count as -1e9 there, so a row without tokens pools to -1e9 */
        for (int d = 0; d < dim; d++) e[d] = -1e9f;
        for (int64_t t = 0; t < seq; t++) {
            if (!mask[t]) continue;
            for (int d = 0; d < dim; d++)
                if (h[t * dim + d] > e[d]) e[d] = h[t * dim + d];
        }
        return;
    }
    /* mean: sum over the mask / max(count, 1e-9), summed in double for long sequences */
    double *acc = calloc((size_t)dim, sizeof(double));
    double cnt = 0;
    for (int64_t t = 0; t < seq; t++) {
        if (!mask[t]) continue;
        cnt++;
        for (int d = 0; d < dim; d++) {
            if (acc) acc[d] += h[t * dim + d];
            else e[d] += h[t * dim + d]; /* no scratch: accumulate in float */
        }
    }
    if (cnt < 1e-9) cnt = 1e-9;
    for (int d = 0; d < dim; d++) e[d] = (float)((acc ? acc[d] : e[d]) / cnt);
    free(acc);
}

static kn_status *pl_feat_batch(void *ctx, const kn_pl_batch *b) {
    pl_feat_ctx *c = ctx;
    const kn_named_tensor *t;
    KN_TRY(pl_feat_pick(c, b, &t));
    if (t->dtype != KN_F32)
        return kn_error(KN_ERR_UNSUPPORTED, "%s: model output '%s' is %s, not floating point", c->p->dir, t->name,
                        kn_dtype_name(t->dtype));
    bool pooled = t->ndim == 2;
    if ((t->ndim != 2 && t->ndim != 3) || t->dims[0] != b->n || (t->ndim == 3 && t->dims[1] != b->seq))
        return kn_error(
            KN_ERR_UNSUPPORTED,
            "%s: model output '%s' has rank %d; expected [batch=%d, hidden] or [batch=%d, sequence=%lld, hidden]",
            c->p->dir, t->name, t->ndim, b->n, b->n, (long long)b->seq);
    if (pooled && c->pool == KN_POOL_NONE)
        return kn_error(
            KN_ERR_INVALID_ARGUMENT,
            "%s: model output '%s' is already pooled ([batch, hidden]); pooling none needs token embeddings", c->p->dir,
            t->name);
    int64_t dim64 = t->dims[t->ndim - 1];
    if (dim64 < 1 || dim64 > (1 << 24))
        return kn_error(KN_ERR_UNSUPPORTED, "%s: model output '%s' has hidden size %lld", c->p->dir, t->name,
                        (long long)dim64);
    int dim = (int)dim64;
    const float *base = t->data;
    for (int r = 0; r < b->n; r++) {
        kn_pl_embedding *e = &c->out[b->row_index[r]];
        const int64_t *mask = b->mask + (size_t)r * (size_t)b->seq;
        e->dim = dim;
        if (pooled || c->pool != KN_POOL_NONE) {
            e->n_tokens = 1;
            e->data = calloc((size_t)dim, sizeof(float));
            if (!e->data) return KN_OOM(sizeof(float) * (size_t)dim);
            if (pooled) memcpy(e->data, base + (size_t)r * dim, sizeof(float) * (size_t)dim);
            else pl_pool_row(c->pool, base + (size_t)r * b->seq * dim, mask, b->seq, dim, e->data);
            if (c->normalize) pl_l2(e->data, dim);
            continue;
        }
        int n_tok = 0;
        for (int64_t k = 0; k < b->seq; k++) n_tok += mask[k] != 0;
        e->n_tokens = n_tok;
        e->data = malloc(sizeof(float) * (size_t)(n_tok ? n_tok : 1) * (size_t)dim);
        if (!e->data) return KN_OOM(sizeof(float) * (size_t)n_tok * (size_t)dim);
        int w = 0;
        for (int64_t k = 0; k < b->seq; k++) {
            if (!mask[k]) continue;
            memcpy(e->data + (size_t)w * dim, base + ((size_t)r * b->seq + (size_t)k) * dim,
                   sizeof(float) * (size_t)dim);
            /* Normalize applies to sentence embeddings; token rows only when asked explicitly */
            if (c->o->normalize == 1) pl_l2(e->data + (size_t)w * dim, dim);
            w++;
        }
    }
    return NULL;
}

kn_status *kn_pl_feature_extraction(const kn_pipeline *p, int n, const char *const *texts,
                                    const kn_pl_feature_options *o, kn_pl_embedding *out) {
    if (n <= 0) return NULL;
    if (!p || !texts || !out)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_pl_feature_extraction: NULL pipeline, texts or results");
    memset(out, 0, sizeof *out * (size_t)n);
    kn_pl_feature_options dflt;
    if (!o) {
        kn_pl_feature_options_init(&dflt);
        o = &dflt;
    }
    if (o->pooling < KN_POOL_DEFAULT || o->pooling > KN_POOL_NONE)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_pl_feature_extraction: unknown pooling %d", (int)o->pooling);
    for (int i = 0; i < n; i++)
        if (!texts[i]) return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_pl_feature_extraction: text %d is NULL", i);
    /* sentence-transformers truncates to its own max_seq_length, not the model's limit */
    int max_len = p->opt.max_length > 0 ? p->opt.max_length
        : p->st_max_seq_length > 0      ? p->st_max_seq_length
                                        : p->max_length;
    kn_encoding *enc = calloc((size_t)n, sizeof *enc);
    const kn_encoding **rows = malloc(sizeof *rows * (size_t)n);
    if (!enc || !rows) {
        free(enc);
        free(rows);
        return KN_OOM(sizeof *enc * (size_t)n);
    }
    kn_status *st = pl_encode(p, n, texts, NULL, NULL, max_len, enc);
    if (!st) {
        for (int i = 0; i < n; i++) rows[i] = &enc[i];
        pl_feat_ctx c = {
            .p = p, .o = o, .pool = pl_feat_pooling(p, o), .normalize = pl_feat_normalize(p, o), .out = out};
        st = pl_run_encodings(p, n, rows, pl_feat_batch, &c);
    }
    for (int i = 0; i < n; i++) kn_encoding_free(&enc[i]);
    free(enc);
    free(rows);
    if (st)
        for (int i = 0; i < n; i++) kn_pl_embedding_free(&out[i]);
    return st;
}
