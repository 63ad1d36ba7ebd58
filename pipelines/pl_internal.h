/* Internals shared by the pipeline files: the opened model folder, and the batch runner every
 * task is built on (tokenize, sort by length, pad per batch, bind inputs by role, run, hand the
 * outputs to the task's callback). */
#ifndef KN_PL_INTERNAL_H
#define KN_PL_INTERNAL_H

#include "pipelines/pipeline.h"
#include "runtime/core/status.h"
#include "pipelines/tokenizer.h"
#include <json-c/json.h>
#include <stdarg.h>

#define KN_PL_MAX_IO 16

/* What a model input is fed with; matched by name (and checked by dtype) at open. */
typedef enum kn_pl_role { KN_ROLE_IDS, KN_ROLE_MASK, KN_ROLE_TYPES, KN_ROLE_POSITIONS, KN_ROLE_PIXELS } kn_pl_role;

typedef struct kn_pl_input {
    char *name;
    kn_dtype dtype; /* int64/int32 for text roles, float32/16 for pixels */
    kn_pl_role role;
    int ndim;
    int64_t dims[KN_MAX_DIMS]; /* declared, < 0 when symbolic */
} kn_pl_input;

struct kn_pipeline {
    char *dir;
    kn_pl_options opt;
    kn_model *model;
    kn_session *session;
    kn_tokenizer *tok;    /* NULL for image models */
    json_object *config;  /* config.json, NULL when absent */
    json_object *preproc; /* preprocessor_config.json, NULL when absent */
    int num_labels;
    char **labels;      /* num_labels entries, id2label or LABEL_<i> */
    char *problem_type; /* config.json problem_type, NULL when absent */
    char *model_type;   /* config.json model_type, NULL when absent */
    int max_length;     /* token limit; 0 = none known */
    int32_t pad_id;
    int zero_type_ids;     /* tokenizer_config.json model_input_names lacks token_type_ids:
                               * transformers then feeds none, so the model sees zeros */
    kn_pl_pooling pooling; /* from 1_Pooling/config.json (KN_POOL_DEFAULT when none) */
    int normalize;         /* a Normalize module in modules.json */
    int st_max_seq_length; /* sentence_bert_config.json max_seq_length, 0 when absent */
    int n_inputs;
    kn_pl_input in[KN_PL_MAX_IO];
    int n_outputs;
    char *out_names[KN_PL_MAX_IO];
};

/* A printf-style warning through opt.warn (stderr by default). */
void pl_warn(const kn_pipeline *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Resolves a path or a Hugging Face repo id ("org/name", optionally "@revision", default main) to
 * a local folder, malloc'd into *dir (pl_hub.c): an existing path as is, else the snapshot in the
 * huggingface_hub cache ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub) when it holds the
 * model (onnx_file, NULL: model.onnx / onnx/model.onnx), else a download from $HF_ENDPOINT (with
 * $HF_TOKEN) of the configs, tokenizer files and that one model with its external data.
 * HF_HUB_OFFLINE=1: the cache only. */
kn_status *pl_hub_resolve(const char *path_or_repo, const char *onnx_file, char **dir);
/* The same for an argument that is always a repo id (kiln download). */
kn_status *pl_hub_fetch(const char *repo_at_rev, const char *onnx_file, char **dir);

/* Tokenizes n texts (pairs may be NULL or hold NULLs) for the model: special tokens added,
 * the file's truncation/padding replaced by eo (NULL: truncate longest-first to p->max_length, or
 * to max_length when > 0), a warning naming the item for each truncated one. out has n entries;
 * free each with kn_encoding_free. */
kn_status *pl_encode(const kn_pipeline *p, int n, const char *const *texts, const char *const *pairs,
                     const kn_encode_options *eo, int max_length, kn_encoding *out);

/* One model run handed to a task: row r of every output belongs to rows[r], which is the
 * encoding the caller passed as rows[row_index[r]]. */
typedef struct kn_pl_batch {
    int n;                         /* rows in this run */
    int64_t seq;                   /* padded sequence length (0 for images) */
    const int *row_index;          /* n: index into the caller's rows */
    const kn_encoding *const *enc; /* n: the rows' encodings (NULL for images) */
    const int64_t *mask;           /* n x seq attention mask as fed (NULL for images) */
    int n_out;
    kn_named_tensor *out; /* every model output, converted to float32 when floating */
} kn_pl_batch;
typedef kn_status *(*kn_pl_batch_fn)(void *ctx, const kn_pl_batch *b);

/* Runs n_rows encodings in batches of opt.batch_size, longest first, each batch padded to its
 * longest row with the pad id (attention mask 0, type ids 0, position ids 0..seq-1); calls fn
 * once per batch. */
kn_status *pl_run_encodings(const kn_pipeline *p, int n_rows, const kn_encoding *const *rows, kn_pl_batch_fn fn,
                            void *ctx);

/* Runs one batch of pixel_values (n x C x H x W float32, NCHW) through the model and calls fn
 * (row_index is 0..n-1). */
kn_status *pl_run_pixels(const kn_pipeline *p, int n, const float *pixels, int c, int h, int w, kn_pl_batch_fn fn,
                         void *ctx);

/* The output named name (NULL: the first), or NULL. */
const kn_named_tensor *pl_output(const kn_pl_batch *b, const kn_pipeline *p, const char *name);

/* The batch callback of the classification tasks: gathers the first output's rows (logits
 * [batch, k], or [batch] as k = 1) into one n_rows x k matrix in the caller's row order. */
typedef struct pl_logits {
    const kn_pipeline *p;
    int n_rows;
    int k;         /* logits per row, fixed by the first batch */
    float *logits; /* n_rows x k, malloc'd by the callback; the caller frees it */
} pl_logits;
kn_status *pl_collect_logits(void *ctx, const kn_pl_batch *b);

/* In-place activations over a row of k scores. */
void pl_softmax(float *x, int k);
void pl_sigmoid(float *x, int k);
/* The default activation for classification heads, as transformers picks it. */
kn_pl_activation pl_default_activation(const kn_pipeline *p, int n_logits);

/* JSON helpers over config files: a string / int field, or the fallback. */
const char *pl_json_str(json_object *o, const char *key, const char *dflt);
int64_t pl_json_int(json_object *o, const char *key, int64_t dflt);

#endif
