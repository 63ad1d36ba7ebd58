/* The image tasks: imageClassification (ImageClassificationPipeline: logits, the default
 * activation from problem_type and the label count, top_k best labels) and image
 * featureExtraction (ImageFeatureExtractionPipeline: an output's rows, optionally pooled).
 * Images are decoded and preprocessed by pl_imgproc.c and run in batches of opt.batch_size;
 * images whose preprocessed sizes differ (no resize configured) run in separate batches. */
#include "pipelines/pl_internal.h"
#include "pipelines/pl_imgproc.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kn_pl_image_class_options_init(kn_pl_image_class_options *o) {
    memset(o, 0, sizeof *o);
    o->activation = KN_ACT_DEFAULT;
    o->top_k = 5;
}

/* One preprocessed image waiting for its batch. */
typedef struct {
    int index; /* into the caller's paths */
    int w, h;
    float *px; /* 3 x h x w */
} pl_pending;

typedef kn_status *(*pl_rows_fn)(void *ctx, const kn_pl_batch *b, const int *orig);

typedef struct {
    pl_rows_fn fn;
    void *ctx;
    const int *orig; /* batch row -> caller's index */
} pl_group_ctx;

static kn_status *pl_group_cb(void *ctx, const kn_pl_batch *b) {
    pl_group_ctx *g = ctx;
    return g->fn(g->ctx, b, g->orig);
}

/* Decodes and preprocesses paths[0..n) in chunks of the batch size, runs each chunk grouped by
 * image size, and hands every batch to fn with the rows' caller indices. */
static kn_status *pl_run_images(const kn_pipeline *p, int n, const char *const *paths, pl_rows_fn fn, void *ctx) {
    if (n < 0) return kn_error(KN_ERR_INVALID_ARGUMENT, "image pipeline: %d inputs", n);
    if (n > 0 && !paths) return kn_error(KN_ERR_INVALID_ARGUMENT, "image pipeline: no paths");
    char where[4200];
    snprintf(where, sizeof where, "%s/preprocessor_config.json", p->dir);
    pl_preproc pp;
    KN_TRY(pl_preproc_read(p->preproc, p->model_type, where, &pp));
    int bs = p->opt.batch_size > 0 ? p->opt.batch_size : 32;
    if (bs > n) bs = n > 0 ? n : 1;
    pl_pending *pend = calloc((size_t)bs, sizeof *pend);
    int *orig = malloc(sizeof(int) * (size_t)bs);
    bool *done = malloc(sizeof(bool) * (size_t)bs);
    float *batch = NULL;
    size_t batch_cap = 0;
    kn_status *st = NULL;
    if (!pend || !orig || !done) st = KN_OOM(sizeof *pend * (size_t)bs);
    for (int s = 0; !st && s < n; s += bs) {
        int m = n - s < bs ? n - s : bs;
        memset(pend, 0, sizeof *pend * (size_t)m);
        for (int i = 0; !st && i < m; i++) {
            const char *path = paths[s + i];
            if (!path) {
                st = kn_error(KN_ERR_INVALID_ARGUMENT, "image %d: no path", s + i);
                break;
            }
            pl_rgb im;
            st = pl_image_load(path, &im);
            if (st) break;
            int ow, oh;
            pl_preproc_out_size(&pp, im.w, im.h, &ow, &oh);
            if (ow <= 0 || oh <= 0 || (int64_t)ow * oh > ((int64_t)1 << 26)) {
                st = kn_error(KN_ERR_INVALID_ARGUMENT, "%s: an image of %dx%d preprocesses to %dx%d", path, im.w, im.h,
                              ow, oh);
            } else {
                pend[i] = (pl_pending){s + i, ow, oh, malloc(sizeof(float) * 3 * (size_t)ow * (size_t)oh)};
                if (!pend[i].px) st = KN_OOM(sizeof(float) * 3 * (size_t)ow * oh);
                else st = kn_error_wrap(pl_preprocess(&pp, &im, pend[i].px), "%s: ", path);
            }
            pl_rgb_free(&im);
        }
        for (int i = 0; i < m; i++) done[i] = false;
        for (int i = 0; !st && i < m; i++) {
            if (done[i]) continue;
            int w = pend[i].w, h = pend[i].h, k = 0;
            size_t one = 3 * (size_t)w * (size_t)h;
            for (int j = i; j < m; j++)
                if (!done[j] && pend[j].w == w && pend[j].h == h) k++;
            if (one * (size_t)k > batch_cap) {
                float *nb = realloc(batch, sizeof(float) * one * (size_t)k);
                if (!nb) {
                    st = KN_OOM(sizeof(float) * one * (size_t)k);
                    break;
                }
                batch = nb;
                batch_cap = one * (size_t)k;
            }
            int r = 0;
            for (int j = i; j < m; j++) {
                if (done[j] || pend[j].w != w || pend[j].h != h) continue;
                memcpy(batch + one * (size_t)r, pend[j].px, sizeof(float) * one);
                orig[r++] = pend[j].index;
                done[j] = true;
            }
            pl_group_ctx g = {fn, ctx, orig};
            st = pl_run_pixels(p, k, batch, 3, h, w, pl_group_cb, &g);
        }
        for (int i = 0; i < m; i++) free(pend[i].px);
    }
    free(pend);
    free(orig);
    free(done);
    free(batch);
    return st;
}

/* ---- imageClassification ---- */

typedef struct {
    const kn_pipeline *p;
    const kn_pl_image_class_options *o;
    kn_pl_labels *out;
} pl_cls_ctx;

static int pl_score_cmp(const void *a, const void *b) {
    const kn_pl_label_score *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? 1 : -1;
    return x->id - y->id; /* Python's sort is stable: ties keep label order */
}

static kn_status *pl_cls_rows(void *vctx, const kn_pl_batch *b, const int *orig) {
    pl_cls_ctx *c = vctx;
    const kn_pipeline *p = c->p;
    const kn_named_tensor *t = pl_output(b, p, "logits");
    if (!t) t = pl_output(b, p, NULL);
    if (!t || t->dtype != KN_F32 || t->ndim != 2 || t->dims[0] != b->n || t->dims[1] < 1)
        return kn_error(
            KN_ERR_INVALID_MODEL,
            "%s: image classification needs logits of shape [batch, labels]; the model's first output is %s", p->dir,
            t ? t->name : "missing");
    int k = (int)t->dims[1];
    if (p->num_labels > 0 && p->num_labels != k)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: the model gives %d logits but config.json has %d labels", p->dir, k,
                        p->num_labels);
    kn_pl_activation act = c->o->activation == KN_ACT_DEFAULT ? pl_default_activation(p, k) : c->o->activation;
    int top = c->o->top_k <= 0 || c->o->top_k > k ? k : c->o->top_k;
    float *row = malloc(sizeof(float) * (size_t)k);
    kn_pl_label_score *all = malloc(sizeof *all * (size_t)k);
    if (!row || !all) {
        free(row);
        free(all);
        return KN_OOM(sizeof(float) * (size_t)k);
    }
    kn_status *st = NULL;
    for (int r = 0; !st && r < b->n; r++) {
        memcpy(row, (const float *)t->data + (size_t)r * (size_t)k, sizeof(float) * (size_t)k);
        if (act == KN_ACT_SOFTMAX) pl_softmax(row, k);
        else if (act == KN_ACT_SIGMOID) pl_sigmoid(row, k);
        for (int i = 0; i < k; i++) all[i] = (kn_pl_label_score){NULL, i, row[i]};
        qsort(all, (size_t)k, sizeof *all, pl_score_cmp);
        kn_pl_labels *res = &c->out[orig[r]];
        res->v = malloc(sizeof *res->v * (size_t)top);
        if (!res->v) {
            st = KN_OOM(sizeof *res->v * (size_t)top);
            break;
        }
        /* models without id2label get LABEL_<id> names, which the result owns */
        size_t owned = 0;
        if (p->num_labels == 0) owned = (size_t)top * 24;
        if (owned && !(res->owned = malloc(owned))) {
            free(res->v);
            res->v = NULL;
            st = KN_OOM(owned);
            break;
        }
        for (int i = 0; i < top; i++) {
            res->v[i] = all[i];
            if (p->num_labels > 0) {
                res->v[i].label = p->labels[all[i].id];
            } else {
                char *s = res->owned + (size_t)i * 24;
                snprintf(s, 24, "LABEL_%d", all[i].id);
                res->v[i].label = s;
            }
        }
        res->n = top;
    }
    free(row);
    free(all);
    return st;
}

kn_status *kn_pl_image_classification(const kn_pipeline *p, int n, const char *const *paths,
                                      const kn_pl_image_class_options *o, kn_pl_labels *out) {
    if (!p || (n > 0 && !out))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_pl_image_classification: no pipeline or no output");
    kn_pl_image_class_options def;
    if (!o) {
        kn_pl_image_class_options_init(&def);
        o = &def;
    }
    if (n > 0) memset(out, 0, sizeof *out * (size_t)n);
    pl_cls_ctx c = {p, o, out};
    kn_status *st = pl_run_images(p, n, paths, pl_cls_rows, &c);
    if (st)
        for (int i = 0; i < n; i++) kn_pl_labels_free(&out[i]);
    return st;
}

/* ---- image featureExtraction ---- */

typedef struct {
    const kn_pipeline *p;
    const kn_pl_feature_options *o;
    int normalize;
    kn_pl_embedding *out;
} pl_feat_ctx;

static kn_status *pl_feat_rows(void *vctx, const kn_pl_batch *b, const int *orig) {
    pl_feat_ctx *c = vctx;
    const kn_pipeline *p = c->p;
    const kn_named_tensor *t = pl_output(b, p, c->o->output_name);
    if (!t) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: the model has no output '%s'", p->dir, c->o->output_name);
    if (t->dtype != KN_F32 || t->ndim < 2 || t->dims[0] != b->n)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: output '%s' is not a float [batch, ...] tensor", p->dir, t->name);
    /* trailing 1s are squeezed (a [batch, C, 1, 1] pooled feature map is a [batch, C] row); a
     * higher-rank output is rows of its second dimension with the rest flattened */
    int nd = t->ndim;
    while (nd > 2 && t->dims[nd - 1] == 1) nd--;
    int64_t rows = nd == 2 ? 1 : t->dims[1], dim = nd == 2 ? t->dims[1] : 1;
    for (int d = 2; nd > 2 && d < nd; d++) dim *= t->dims[d];
    if (rows < 1 || dim < 1) return kn_error(KN_ERR_INVALID_MODEL, "%s: output '%s' is empty", p->dir, t->name);
    kn_pl_pooling pool = c->o->pooling;
    bool tokens = nd > 2 && (pool == KN_POOL_DEFAULT || pool == KN_POOL_NONE);
    int64_t n_out = tokens ? rows : 1;
    for (int r = 0; r < b->n; r++) {
        const float *src = (const float *)t->data + (size_t)r * (size_t)(rows * dim);
        kn_pl_embedding *e = &c->out[orig[r]];
        e->data = malloc(sizeof(float) * (size_t)(n_out * dim));
        if (!e->data) return KN_OOM(sizeof(float) * (size_t)(n_out * dim));
        e->n_tokens = (int)n_out;
        e->dim = (int)dim;
        if (tokens || rows == 1) {
            memcpy(e->data, src, sizeof(float) * (size_t)(n_out * dim));
        } else if (pool == KN_POOL_CLS || pool == KN_POOL_LAST) {
            memcpy(e->data, src + (pool == KN_POOL_LAST ? (size_t)((rows - 1) * dim) : 0), sizeof(float) * (size_t)dim);
        } else {
            for (int64_t d = 0; d < dim; d++) {
                double acc = pool == KN_POOL_MAX ? -INFINITY : 0;
                for (int64_t k = 0; k < rows; k++) {
                    float v = src[k * dim + d];
                    if (pool == KN_POOL_MAX) acc = v > acc ? v : acc;
                    else acc += v;
                }
                e->data[d] = (float)(pool == KN_POOL_MAX ? acc : acc / (double)rows);
            }
        }
        if (c->normalize)
            for (int64_t k = 0; k < n_out; k++) {
                float *v = e->data + k * dim;
                double ss = 0;
                for (int64_t d = 0; d < dim; d++) ss += (double)v[d] * v[d];
                double nrm = sqrt(ss);
                if (nrm < 1e-12) nrm = 1e-12;
                for (int64_t d = 0; d < dim; d++) v[d] = (float)(v[d] / nrm);
            }
    }
    return NULL;
}

kn_status *kn_pl_image_features(const kn_pipeline *p, int n, const char *const *paths, const kn_pl_feature_options *o,
                                kn_pl_embedding *out) {
    if (!p || (n > 0 && !out))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_pl_image_features: no pipeline or no output");
    kn_pl_feature_options def;
    if (!o) {
        kn_pl_feature_options_init(&def);
        o = &def;
    }
    if (n > 0) memset(out, 0, sizeof *out * (size_t)n);
    pl_feat_ctx c = {p, o, o->normalize < 0 ? p->normalize : o->normalize, out};
    kn_status *st = pl_run_images(p, n, paths, pl_feat_rows, &c);
    if (st)
        for (int i = 0; i < n; i++) kn_pl_embedding_free(&out[i]);
    return st;
}
