/* One pipeline shared by many threads: textClassification and featureExtraction called at once
 * from several threads on one kn_pipeline (one model, one session) must give bit-identical
 * results to a single-threaded call, whatever the interleaving. */
#include "pipelines/pipeline.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N_TEXTS = 24, N_THREADS = 4, N_ROUNDS = 5 };

static const char *texts[N_TEXTS];

typedef struct {
    const kn_pipeline *cls, *feat;
    kn_pl_labels ref_labels[N_TEXTS];
    kn_pl_embedding ref_emb[N_TEXTS];
    int failures;
    pthread_mutex_t mu;
} shared_t;

static int check_call(shared_t *sh, char *why, size_t len) {
    kn_pl_text_class_options co;
    kn_pl_text_class_options_init(&co);
    co.top_k = 0;
    kn_pl_labels lab[N_TEXTS];
    kn_status *st = kn_pl_text_classification(sh->cls, N_TEXTS, texts, NULL, &co, lab);
    if (st) {
        snprintf(why, len, "textClassification: %s", kn_status_message(st));
        kn_status_free(st);
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < N_TEXTS; i++) {
        if (lab[i].n != sh->ref_labels[i].n) bad = 1;
        for (int k = 0; !bad && k < lab[i].n; k++)
            if (lab[i].v[k].id != sh->ref_labels[i].v[k].id || lab[i].v[k].score != sh->ref_labels[i].v[k].score)
                bad = 1;
        kn_pl_labels_free(&lab[i]);
    }
    if (bad) {
        snprintf(why, len, "textClassification differs from the single-threaded result");
        return 1;
    }
    kn_pl_feature_options fo;
    kn_pl_feature_options_init(&fo);
    kn_pl_embedding emb[N_TEXTS];
    st = kn_pl_feature_extraction(sh->feat, N_TEXTS, texts, &fo, emb);
    if (st) {
        snprintf(why, len, "featureExtraction: %s", kn_status_message(st));
        kn_status_free(st);
        return 1;
    }
    for (int i = 0; i < N_TEXTS; i++) {
        const kn_pl_embedding *r = &sh->ref_emb[i];
        if (emb[i].n_tokens != r->n_tokens || emb[i].dim != r->dim ||
            memcmp(emb[i].data, r->data, sizeof(float) * (size_t)r->n_tokens * (size_t)r->dim))
            bad = 1;
        kn_pl_embedding_free(&emb[i]);
    }
    if (bad) {
        snprintf(why, len, "featureExtraction differs from the single-threaded result");
        return 1;
    }
    return 0;
}

static void *worker(void *arg) {
    shared_t *sh = arg;
    char why[512];
    for (int r = 0; r < N_ROUNDS; r++) {
        if (check_call(sh, why, sizeof why)) {
            pthread_mutex_lock(&sh->mu);
            if (!sh->failures++) fprintf(stderr, "FAIL: %s\n", why);
            pthread_mutex_unlock(&sh->mu);
            break;
        }
    }
    return NULL;
}

static kn_pipeline *open_or_die(const char *dir, int batch) {
    kn_pl_options o;
    kn_pl_options_init(&o);
    o.batch_size = batch; /* small batches: threads interleave many runs on the session */
    o.session.num_threads = 1;
    kn_pipeline *p = NULL;
    kn_status *st = kn_pipeline_open(dir, &o, &p);
    if (st) {
        fprintf(stderr, "FAIL: opening %s: %s\n", dir, kn_status_message(st));
        exit(1);
    }
    return p;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_pl_threads FIXTURES_DIR\n");
        return 2;
    }
    static char buf[N_TEXTS][160];
    static const char *const words[] = {"kiln", "runs", "models",  "on",  "the",    "GPU",
                                        "café", "東京", "quickly", "and", "exactly"};
    for (int i = 0; i < N_TEXTS; i++) {
        size_t off = 0;
        for (int k = 0; k <= i % 9 + 1; k++)
            off +=
                (size_t)snprintf(buf[i] + off, sizeof buf[i] - off, "%s%s", k ? " " : "", words[(i * 7 + k * 3) % 11]);
        texts[i] = buf[i];
    }
    char d1[4096], d2[4096];
    snprintf(d1, sizeof d1, "%s/textcls_bert_top1/model", argv[1]);
    snprintf(d2, sizeof d2, "%s/feature_st_mean_norm/model", argv[1]);
    shared_t sh = {.cls = open_or_die(d1, 3), .feat = open_or_die(d2, 5)};
    pthread_mutex_init(&sh.mu, NULL);
    /* the single-threaded reference */
    kn_pl_text_class_options co;
    kn_pl_text_class_options_init(&co);
    co.top_k = 0;
    kn_pl_feature_options fo;
    kn_pl_feature_options_init(&fo);
    kn_status *st = kn_pl_text_classification(sh.cls, N_TEXTS, texts, NULL, &co, sh.ref_labels);
    if (!st) st = kn_pl_feature_extraction(sh.feat, N_TEXTS, texts, &fo, sh.ref_emb);
    if (st) {
        fprintf(stderr, "FAIL: reference call: %s\n", kn_status_message(st));
        return 1;
    }
    if (sh.ref_labels[0].n < 2 || sh.ref_emb[0].dim < 2) {
        fprintf(stderr, "FAIL: degenerate reference results\n");
        return 1;
    }
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++)
        if (pthread_create(&th[t], NULL, worker, &sh)) {
            fprintf(stderr, "FAIL: pthread_create\n");
            return 1;
        }
    for (int t = 0; t < N_THREADS; t++) pthread_join(th[t], NULL);
    printf("%d threads x %d rounds x (%d texts classified + %d embedded) on shared pipelines: %s\n", N_THREADS,
           N_ROUNDS, N_TEXTS, N_TEXTS, sh.failures ? "MISMATCH" : "identical to the single-threaded results");
    for (int i = 0; i < N_TEXTS; i++) {
        kn_pl_labels_free(&sh.ref_labels[i]);
        kn_pl_embedding_free(&sh.ref_emb[i]);
    }
    kn_pipeline_free((kn_pipeline *)sh.cls);
    kn_pipeline_free((kn_pipeline *)sh.feat);
    pthread_mutex_destroy(&sh.mu);
    return sh.failures ? 1 : 0;
}
