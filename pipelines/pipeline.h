/* kiln pipelines: Hugging Face tasks (feature extraction, text / token / zero-shot
 * classification, cross-encoder reranking, image classification, extractive question answering)
 * over a model folder, giving the answers transformers' Python pipelines give.
 *
 * A kn_pipeline is opened once from a folder (or a Hugging Face repo id resolved through the
 * local cache or a download) and is then immutable: any number of threads may call the task
 * functions on one pipeline at once; they share the model's weights and one session.
 * Every task takes n inputs and returns n results in input order; inside a call the inputs are
 * sorted by length and run in batches of options.batch_size, padded to the longest in the batch.
 * Results are plain structs freed with their kn_pl_*_free function.
 * Texts are NUL-terminated UTF-8. A text that holds the character U+0000 passes it as the two bytes
 * C0 80 (Modified UTF-8, never valid UTF-8 otherwise): the tokenizer then sees U+0000 itself, and
 * text slices in results (words, answers) carry it as C0 80 too. */
#ifndef KN_PIPELINE_H
#define KN_PIPELINE_H

#include "kiln.h"
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_pipeline kn_pipeline;

typedef enum kn_pl_pooling {
    KN_POOL_DEFAULT = 0, /* from 1_Pooling/config.json, else mean */
    KN_POOL_MEAN,
    KN_POOL_CLS,
    KN_POOL_MAX,
    KN_POOL_LAST,
    KN_POOL_NONE /* token embeddings */
} kn_pl_pooling;

typedef enum kn_pl_activation {
    KN_ACT_DEFAULT = 0, /* as transformers: sigmoid for multi_label_classification or one label, else softmax */
    KN_ACT_SOFTMAX,
    KN_ACT_SIGMOID,
    KN_ACT_NONE
} kn_pl_activation;

typedef enum kn_pl_aggregation {
    KN_AGG_NONE = 0,
    KN_AGG_SIMPLE,
    KN_AGG_FIRST,
    KN_AGG_AVERAGE,
    KN_AGG_MAX
} kn_pl_aggregation;

typedef struct kn_pl_options {
    kn_session_options session; /* device, threads, precision */
    const char *onnx_file;      /* NULL: the only *.onnx at the root or under onnx/ (model.onnx preferred) */
    int batch_size;             /* rows per model run (default 32) */
    int max_length;             /* 0: the model's limit (tokenizer model_max_length, max_position_embeddings) */
    int tokenizer_threads;      /* 0: one per core */
    /* what to print warnings to (truncated inputs, CPU fallbacks); NULL: session.log, else
     * stderr; a no-op function silences them */
    void (*warn)(void *ctx, const char *msg);
    void *warn_ctx;
} kn_pl_options;
void kn_pl_options_init(kn_pl_options *o);

/* Opens a model folder: a path, else a Hugging Face repo id ("org/name") looked up in the cache
 * (HF_HOME / ~/.cache/huggingface/hub), else downloaded from HF_ENDPOINT (default the public hub)
 * with HF_TOKEN into that cache. Reads config.json, tokenizer.json and friends,
 * preprocessor_config.json, modules.json / 1_Pooling/config.json, and matches the model's inputs
 * by name and dtype. Errors name the folder, the file and the field. */
kn_status *kn_pipeline_open(const char *path_or_repo, const kn_pl_options *opt, kn_pipeline **out);
void kn_pipeline_free(kn_pipeline *p);
const char *kn_pipeline_dir(const kn_pipeline *p);           /* the resolved folder */
int kn_pipeline_num_labels(const kn_pipeline *p);            /* from config.json id2label, else the output width */
const char *kn_pipeline_label(const kn_pipeline *p, int id); /* id2label[id], or "LABEL_<id>" */
int kn_pipeline_label_id(const kn_pipeline *p, const char *label); /* label2id, case-insensitive; -1 */
bool kn_pipeline_takes_images(const kn_pipeline *p);               /* a pixel_values input: an image model */

/* ---- featureExtraction ---- */
typedef struct kn_pl_feature_options {
    kn_pl_pooling pooling;
    int normalize;           /* -1: from modules.json (a Normalize module), 0 / 1: off / on */
    const char *output_name; /* NULL: the first output, or sentence_embedding when pooling is folded in */
} kn_pl_feature_options;
void kn_pl_feature_options_init(kn_pl_feature_options *o);
typedef struct kn_pl_embedding {
    int n_tokens; /* 1 when pooled; the unpadded token count for KN_POOL_NONE */
    int dim;
    float *data; /* n_tokens x dim */
} kn_pl_embedding;
kn_status *kn_pl_feature_extraction(const kn_pipeline *p, int n, const char *const *texts,
                                    const kn_pl_feature_options *o, kn_pl_embedding *out);
/* Image encoders (pixel_values input): each input is an image file path. */
kn_status *kn_pl_image_features(const kn_pipeline *p, int n, const char *const *paths, const kn_pl_feature_options *o,
                                kn_pl_embedding *out);
void kn_pl_embedding_free(kn_pl_embedding *e);

/* ---- label/score lists (text, image and zero-shot classification) ---- */
typedef struct kn_pl_label_score {
    const char *label; /* owned by the pipeline (id2label) or by the result */
    int id;
    float score;
} kn_pl_label_score;
typedef struct kn_pl_labels {
    int n; /* sorted by score, highest first */
    kn_pl_label_score *v;
    char *owned; /* storage of labels the result owns (zero-shot candidates) */
} kn_pl_labels;
void kn_pl_labels_free(kn_pl_labels *l);

/* ---- textClassification ---- */
typedef struct kn_pl_text_class_options {
    kn_pl_activation activation;
    int top_k; /* 0: every label; default 1 (transformers' default) */
} kn_pl_text_class_options;
void kn_pl_text_class_options_init(kn_pl_text_class_options *o);
/* pairs may be NULL, or hold NULL entries for single texts. */
kn_status *kn_pl_text_classification(const kn_pipeline *p, int n, const char *const *texts, const char *const *pairs,
                                     const kn_pl_text_class_options *o, kn_pl_labels *out);

/* ---- tokenClassification ---- */
typedef struct kn_pl_token_class_options {
    kn_pl_aggregation aggregation;
    const char *const *ignore_labels; /* NULL: {"O"} */
    int n_ignore_labels;
} kn_pl_token_class_options;
void kn_pl_token_class_options_init(kn_pl_token_class_options *o);
typedef struct kn_pl_entity {
    const char *entity; /* the label (aggregation none) or the entity group (B-/I- stripped) */
    float score;
    int index;      /* token index (aggregation none), else -1 */
    char *word;     /* decoded text of the tokens */
    int start, end; /* character offsets into the input */
} kn_pl_entity;
typedef struct kn_pl_entities {
    int n;
    kn_pl_entity *v;
} kn_pl_entities;
kn_status *kn_pl_token_classification(const kn_pipeline *p, int n, const char *const *texts,
                                      const kn_pl_token_class_options *o, kn_pl_entities *out);
/* Pre-split words: words[i] holds n_words[i] words joined by single spaces before tokenizing;
 * offsets then refer to that joined text. */
kn_status *kn_pl_token_classification_words(const kn_pipeline *p, int n, const char *const *const *words,
                                            const int *n_words, const kn_pl_token_class_options *o,
                                            kn_pl_entities *out);
void kn_pl_entities_free(kn_pl_entities *e);

/* ---- zeroShotClassification ---- */
typedef struct kn_pl_zero_shot_options {
    const char *const *labels;
    int n_labels;
    const char *template_; /* NULL: "This example is {}." */
    int multi_label;
} kn_pl_zero_shot_options;
void kn_pl_zero_shot_options_init(kn_pl_zero_shot_options *o);
kn_status *kn_pl_zero_shot_classification(const kn_pipeline *p, int n, const char *const *texts,
                                          const kn_pl_zero_shot_options *o, kn_pl_labels *out);

/* ---- crossEncoder (reranking) ---- */
typedef struct kn_pl_cross_encoder_options {
    kn_pl_activation activation; /* default: sigmoid for one logit, softmax otherwise */
    float threshold;             /* drop results scoring below; -INFINITY keeps all */
    int top_k;                   /* 0: all */
} kn_pl_cross_encoder_options;
void kn_pl_cross_encoder_options_init(kn_pl_cross_encoder_options *o);
typedef struct kn_pl_rank {
    int index;
    float score;
} kn_pl_rank;
typedef struct kn_pl_ranking {
    int n;
    kn_pl_rank *v;
} kn_pl_ranking; /* sorted, best first */
kn_status *kn_pl_cross_encoder(const kn_pipeline *p, const char *query, int n_docs, const char *const *docs,
                               const kn_pl_cross_encoder_options *o, kn_pl_ranking *out);
void kn_pl_ranking_free(kn_pl_ranking *r);

/* ---- imageClassification ---- */
typedef struct kn_pl_image_class_options {
    kn_pl_activation activation;
    int top_k; /* default 5, as transformers */
} kn_pl_image_class_options;
void kn_pl_image_class_options_init(kn_pl_image_class_options *o);
kn_status *kn_pl_image_classification(const kn_pipeline *p, int n, const char *const *paths,
                                      const kn_pl_image_class_options *o, kn_pl_labels *out);

/* ---- questionAnswering (extractive) ---- */
typedef struct kn_pl_qa_options {
    int top_k;          /* default 1 */
    int max_answer_len; /* default 15 tokens */
    int doc_stride;     /* default 128 */
    int max_seq_len;    /* default min(384, model limit) */
    int handle_impossible_answer;
} kn_pl_qa_options;
void kn_pl_qa_options_init(kn_pl_qa_options *o);
typedef struct kn_pl_answer {
    char *answer;
    float score;
    int start, end;
} kn_pl_answer;
typedef struct kn_pl_answers {
    int n;
    kn_pl_answer *v;
} kn_pl_answers;
kn_status *kn_pl_question_answering(const kn_pipeline *p, int n, const char *const *questions,
                                    const char *const *contexts, const kn_pl_qa_options *o, kn_pl_answers *out);
void kn_pl_answers_free(kn_pl_answers *a);

#ifdef __cplusplus
}
#endif
#endif
