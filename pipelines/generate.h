/* kiln text generation: a decoder-only model folder (Optimum / onnx-community layout, or ONNX
 * Runtime GenAI's genai_config.json) opened with its tokenizer and generation settings, and a
 * decode loop over it: prefill, then one token per step with a key/value cache kiln owns,
 * greedy or sampled (temperature, top-k, top-p, min-p, repetition penalty, a seeded generator
 * owned by the call), EOS ids, stop strings and UTF-8-safe streaming. */
#ifndef KN_GENERATE_H
#define KN_GENERATE_H

#include "kiln.h"
#include "pipelines/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_generator kn_generator;

/* Opens a folder: the model is genai_config.json's model.decoder.filename when that file exists,
 * else model.onnx or onnx/model.onnx; the tokenizer is the folder's tokenizer.json. EOS ids come
 * from generation_config.json, else genai_config.json, else config.json (an int or a list).
 * so may be NULL (CPU defaults). A missing file is an error naming it. The generator does not
 * change after opening: many threads may call kn_generate on one at once (each call owns its
 * caches and its random generator). Float32 key/value caches only. */
kn_status *kn_generator_open(const char *dir, const kn_session_options *so, kn_generator **out);
void kn_generator_free(kn_generator *g);
const kn_tokenizer *kn_generator_tokenizer(const kn_generator *g);
/* The model's context (genai_config context_length, else config.json max_position_embeddings /
 * n_positions), 0 when unknown. */
int kn_generator_context(const kn_generator *g);

/* Executor plans the generator's session has built so far (a new one per new input-shape
 * signature): with a fixed-size cache a call builds one for the prefill and one for every step. */
int64_t kn_generator_plans_built(const kn_generator *g);
/* CUDA graphs of the generator's session (device sessions): runs recorded, and runs served by
 * replaying a recording. A GenAI-layout decoder on cuda keeps its cache at fixed device addresses,
 * so every decode step of a plan after its first two is a replay. */
void kn_generator_graph_counts(const kn_generator *g, int64_t *captured, int64_t *replayed);
/* Layers whose past keys/values a CPU decode step reads where they lie (the Optimum layout's
 * present = Concat(past, new) taken off the model: the step returns the new rows alone, which the
 * generator writes into its cache, and the attention reads the cache and the new rows as two
 * parts); 0 when every step copies its past (device sessions, models where that does not apply). */
int kn_generator_past_in_place(const kn_generator *g);
/* Why some layer's past is copied every step (the model has no position_ids, an attention did not
 * fuse, ...), NULL when every layer reads it in place. */
const char *kn_generator_past_note(const kn_generator *g);
/* The session's per-op profile (kn_session_profile) when it was opened with options.profile. */
const char *kn_generator_profile(const kn_generator *g, char *buf, size_t len);

typedef struct kn_gen_options {
    int max_new_tokens;       /* generated tokens only (default 64) */
    int do_sample;            /* 0: greedy (default); set by kn_gen_options_init's callers */
    float temperature;        /* with do_sample (default 1) */
    int top_k;                /* 0: off */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float repetition_penalty; /* 1: off; over prompt and generated ids, as transformers */
    uint64_t seed;            /* sampling generator's seed; the same seed gives the same tokens */
    const char *const *stop;  /* stop strings: generation ends at the first, which is cut off */
    int n_stop;
    int batch_size;        /* prompts run together (default 1) */
    int truncate;          /* 1: a prompt longer than the context keeps its last tokens; 0: error */
    int prompt_no_special; /* 1: kn_generate encodes prompts without the tokenizer's special tokens, as
                            * apply_chat_template(tokenize=True) does: chat-templated text carries its
                            * own (kn_generate_format_prompt says when) */
    int no_share_buffer;   /* 1: a GroupQueryAttention decoder gets its past copied into a new present
                            * every step (as ONNX Runtime without past_present_share_buffer), instead
                            * of appending in place to one buffer (for measurements) */
} kn_gen_options;
void kn_gen_options_init(kn_gen_options *o);

/* The options the folder asks for: kn_gen_options_init's, then genai_config.json's "search"
 * (do_sample, temperature, top_k, top_p, min_p, repetition_penalty) and generation_config.json's
 * (the same and max_new_tokens), with transformers' default top_k of 50. Callers then apply
 * their own choices over these. */
void kn_generator_default_options(const kn_generator *g, kn_gen_options *o);

typedef enum kn_gen_finish { KN_GEN_EOS = 0, KN_GEN_STOP = 1, KN_GEN_LENGTH = 2 } kn_gen_finish;
const char *kn_gen_finish_name(kn_gen_finish f); /* "eos", "stop", "length" */

typedef struct kn_gen_result {
    char *text; /* the generated text (special tokens skipped, stop string cut), malloc'd */
    size_t len;
    int32_t *ids; /* generated ids, the EOS id included when it ended the sequence; malloc'd */
    int n_ids;
    kn_gen_finish finish;
    int32_t *prompt_ids; /* the prompt as fed (after truncation), malloc'd */
    int n_prompt_ids;
    double first_token_s; /* seconds from its batch's start to its first token (prefill) */
    double decode_s;      /* seconds from its first token to its last (n_ids - 1 decode steps) */
} kn_gen_result;
void kn_gen_result_free(kn_gen_result *r);

/* Called with each new piece of prompt `index`'s text as soon as it is whole (never half a UTF-8
 * character nor a possible beginning of a stop string); the pieces of one prompt concatenate to
 * its result text. Return non-zero to abort the call. */
typedef int (*kn_gen_stream_fn)(void *user, int index, const char *piece, size_t len);

/* Generates for n prompts (already formatted text); results has n entries. stream may be NULL;
 * opt NULL: kn_generator_default_options. */
kn_status *kn_generate(kn_generator *g, int n, const char *const *prompts, const kn_gen_options *opt,
                       kn_gen_stream_fn stream, void *user, kn_gen_result *results);
/* The same from token ids (no tokenization), for callers that hold ids. */
kn_status *kn_generate_ids(kn_generator *g, int n, const int32_t *const *prompt_ids, const int *prompt_lens,
                           const kn_gen_options *opt, kn_gen_stream_fn stream, void *user, kn_gen_result *results);

/* The one place a conversation becomes prompt text. With the folder's chat template
 * (chat_template.jinja, else tokenizer_config.json "chat_template"), the turns are rendered as
 * transformers' apply_chat_template(add_generation_prompt=True) renders them, the system prompt
 * first as a "system" message when given, and *templated is set to 1: such text is to be encoded
 * without special tokens (kn_gen_options.prompt_no_special), as apply_chat_template(tokenize=True)
 * encodes it. Without a template the contents are joined with newlines (system prompt first) and
 * *templated is 0. roles/contents have n entries; *out is malloc'd; templated may be NULL. */
kn_status *kn_generate_format_prompt(const kn_generator *g, const char *system_prompt, int n, const char *const *roles,
                                     const char *const *contents, char **out, int *templated);
/* The same from a JSON list of messages ({"role", "content", ...} objects passed to the template
 * as they are); use_template 0 joins the contents even when the folder has a template. Without a
 * template every message needs a string content. */
kn_status *kn_generate_format_chat(const kn_generator *g, const char *system_prompt, const char *messages_json,
                                   int use_template, char **out, int *templated);
/* 1 when the folder has a chat template (kn_generate_format_prompt renders it, or fails saying why
 * kiln cannot read it). */
int kn_generator_has_chat_template(const kn_generator *g);

#ifdef __cplusplus
}
#endif
#endif
