/* Training data for `kiln train`: JSON-lines examples read against a model folder (its
 * tokenizer, its labels), tokenized and padded into the batches the trainer feeds, and the
 * evaluation metrics computed through a pipeline over an exported model. It sits in pipelines/
 * because it needs the tokenizers and the folder reading that kn_pipeline_open does.
 *
 * Formats (one JSON object a line):
 *   featureExtraction  {"sentence1": s, "sentence2": t, "score": x}  (scored pairs, Hugot's format)
 *                      {"anchor": s, "positive": t}                 (pairs, in-batch negatives)
 *   textClassification {"input": text or [text, pair], "label": name or id}
 *   tokenClassification {"tokens": [words...], "labels": [name or id per word]} */
#ifndef KN_TRAIN_DATA_H
#define KN_TRAIN_DATA_H

#include "pipelines/pipeline.h"
#include <stdbool.h>

typedef enum kn_td_task { KN_TD_FEATURE = 0, KN_TD_TEXT_CLASS, KN_TD_TOKEN_CLASS } kn_td_task;
typedef enum kn_td_format {
    KN_TD_EMPTY = 0,
    KN_TD_SCORED_PAIRS,
    KN_TD_PAIRS,
    KN_TD_LABELLED_TEXT,
    KN_TD_TAGGED_WORDS
} kn_td_format;
/* The losses `kiln train` builds; evaluation computes the same one on the eval set. */
typedef enum kn_td_loss { KN_TD_LOSS_COSINE = 0, KN_TD_LOSS_COSENT, KN_TD_LOSS_MNRL, KN_TD_LOSS_CE } kn_td_loss;
/* sentence-transformers' default scale of MultipleNegativesRankingLoss and CoSENTLoss */
#define KN_TD_PAIR_SCALE 20.0

typedef struct kn_td_example {
    int line;    /* 1-based line in its file */
    char *a, *b; /* text and pair (b may be NULL); the two sides of a pair */
    float score; /* scored pairs */
    int label;   /* text classification: the label id */
    int n_words; /* token classification */
    char **words;
    int *word_labels;
} kn_td_example;

typedef struct kn_train_data {
    kn_td_format format;
    int n;
    kn_td_example *ex;
    int skipped; /* malformed lines skipped (skip_bad) */
} kn_train_data;

/* Reads path for task against the pipeline's model folder (labels through config.json label2id /
 * id2label). A malformed line is an error naming the file and line, or with skip_bad is counted
 * in out->skipped and reported through warn (NULL: stderr); a label the model does not know is
 * always an error naming the label and the line. An empty file is an error. */
kn_status *kn_train_data_read(const kn_pipeline *p, const char *path, kn_td_task task, bool skip_bad,
                              void (*warn)(void *ctx, const char *msg), void *warn_ctx, kn_train_data *out);
void kn_train_data_free(kn_train_data *d);

/* One training batch: the model's text inputs (input_ids, attention_mask, token_type_ids as the
 * model declares them) and the loss's own input ("scores" float [n] for scored pairs, "labels"
 * int64 [n] or [n, seq] for classification, none for pairs). Pairs are 2n rows, the first sides
 * then the second sides, padded together. */
#define KN_TD_MAX_IN 8
typedef struct kn_td_batch {
    int n_in;
    kn_named_tensor in[KN_TD_MAX_IN];
    int rows;
    int64_t seq;
    int64_t tokens; /* real (unpadded) tokens, for throughput */
    void *mem[KN_TD_MAX_IN];
} kn_td_batch;
kn_status *kn_td_make_batch(const kn_pipeline *p, const kn_train_data *d, const int *idx, int n, kn_td_batch *out);
void kn_td_batch_free(kn_td_batch *b);

/* The truncation length training uses: sentence_bert_config.json max_seq_length, else the
 * model's limit (as the featureExtraction pipeline). */
int kn_td_max_length(const kn_pipeline *p);
/* The folder's pooling (modules.json / 1_Pooling), KN_POOL_MEAN when it names none. */
kn_pl_pooling kn_td_pooling(const kn_pipeline *p);
bool kn_td_normalize(const kn_pipeline *p);

typedef struct kn_td_eval {
    int n;              /* examples evaluated */
    double loss;        /* the training loss on the eval set */
    const char *metric; /* "spearman", "ranking_accuracy", "macro_f1" */
    double value;       /* the metric, higher is better */
    double accuracy;    /* classification: accuracy (tokens for tokenClassification); pairs: ranking */
    double macro_f1;    /* classification */
    double spearman;    /* scored pairs */
} kn_td_eval;
/* Runs the pipeline's model over d and computes the loss and metrics: Spearman correlation of
 * the cosine similarity with the score for scored pairs, in-batch ranking accuracy (batches of
 * batch_size) for pairs, accuracy and macro F1 (over the classes present in gold or predicted
 * labels) for classification. */
kn_status *kn_td_evaluate(const kn_pipeline *p, const kn_train_data *d, kn_td_loss loss, int batch_size,
                          kn_td_eval *out);

/* Spearman rank correlation of x and y (average ranks for ties), NaN when undefined. */
double kn_td_spearman(const double *x, const double *y, int n);

#endif
