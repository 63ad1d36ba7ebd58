/* kiln tokenizers: a C reading of Hugging Face tokenizer.json files that yields the same ids,
 * type ids and character offsets as the `tokenizers` package. A loaded tokenizer is immutable
 * and may be shared by any number of threads; every encode call owns its scratch memory. */
#ifndef KN_TOKENIZER_H
#define KN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_tokenizer kn_tokenizer;

/* One encoded text (or pair). Offsets are character (code point) offsets into the original
 * text, like the Python package; special tokens added by post-processing get [0, 0]. */
typedef struct kn_encoding {
    int32_t n;
    int32_t *ids;
    int32_t *type_ids;
    int32_t *offsets;        /* 2*n: start, end */
    uint8_t *special_mask;   /* 1 for tokens added by post-processing or padding */
    uint8_t *attention_mask; /* 0 for padding */
    char **tokens;           /* n NUL-terminated strings, owned by the encoding */
    int32_t *token_lens;     /* their lengths in bytes (a token may itself hold a NUL) */
    int32_t n_overflow;      /* truncated windows (stride), each a full encoding; for a pair
                                * the package's top-level order (its nested windows are not kept) */
    struct kn_encoding *overflow;
    int32_t truncated; /* 1: truncation dropped tokens (with or without overflow windows) */
} kn_encoding;

/* Loads a tokenizer from a tokenizer.json file (exactly as the package's Tokenizer.from_file),
 * or from a folder holding tokenizer.json or only an old BERT vocab.txt (then do_lower_case is
 * read from tokenizer_config.json). A folder is read as transformers' from_pretrained reads it:
 * the added tokens of tokenizer_config.json's added_tokens_decoder and the special tokens of
 * special_tokens_map.json / tokenizer_config.json (bos ... mask, additional_special_tokens)
 * become added tokens; model_max_length is not a default truncation (transformers only
 * truncates when asked). On failure returns NULL and writes a message naming the file and the
 * offending field into err. */
kn_tokenizer *kn_tokenizer_load(const char *path, char *err, size_t err_len);
/* The same from a JSON text already in memory. */
kn_tokenizer *kn_tokenizer_load_json(const char *json, size_t len, char *err, size_t err_len);
void kn_tokenizer_free(kn_tokenizer *tok);

enum { KN_TRUNCATE_LONGEST_FIRST = 0, KN_TRUNCATE_ONLY_FIRST, KN_TRUNCATE_ONLY_SECOND };
typedef struct kn_encode_options {
    int add_special_tokens; /* 1: run the post-processor (default) */
    int max_length;         /* > 0: truncate to this many tokens, overriding the file's */
    int strategy;           /* with max_length: KN_TRUNCATE_* (default longest first) */
    int stride;             /* with max_length: tokens repeated between overflow windows */
    int per_call;           /* 1: the file's truncation and padding do not apply, as in
                                * transformers, which sets both on every call (pipelines) */
    int no_overflow;        /* 1: truncation keeps the first window only and builds no overflow
                                * windows (a pair's window combinations grow with the product of
                                * the two lengths); kn_encoding.truncated still says it cut */
} kn_encode_options;
void kn_encode_options_init(kn_encode_options *o);

/* Encodes text (with an optional pair, NULL for none). Invalid UTF-8 is replaced by U+FFFD,
 * one per maximal invalid subsequence, as Rust's from_utf8_lossy and Python do. Returns 0, or
 * -1 with a message in err. */
int kn_tokenizer_encode(const kn_tokenizer *tok, const char *text, size_t len, const char *pair, size_t pair_len,
                        const kn_encode_options *opt, kn_encoding *out, char *err, size_t err_len);
/* Encodes n texts (pairs may be NULL) on n_threads threads (<= 0: one per core), then pads the
 * batch if the tokenizer's padding strategy is BatchLongest. out has n entries. */
int kn_tokenizer_encode_batch(const kn_tokenizer *tok, int n, const char *const *texts, const size_t *lens,
                              const char *const *pairs, const size_t *pair_lens, const kn_encode_options *opt,
                              int n_threads, kn_encoding *out, char *err, size_t err_len);
void kn_encoding_free(kn_encoding *e);

/* Decodes ids back into text through the tokenizer's decoder (unknown ids are skipped, like
 * the package); returns a malloc'd NUL-terminated string, its length in *out_len (the text
 * itself may hold NULs; out_len may be NULL), or NULL with a message in err. */
char *kn_tokenizer_decode(const kn_tokenizer *tok, const int32_t *ids, int n, int skip_special, size_t *out_len,
                          char *err, size_t err_len);

int32_t kn_tokenizer_token_to_id(const kn_tokenizer *tok, const char *token); /* -1 if absent */
const char *kn_tokenizer_id_to_token(const kn_tokenizer *tok, int32_t id);    /* NULL if absent */
int32_t kn_tokenizer_vocab_size(const kn_tokenizer *tok);

#ifdef __cplusplus
}
#endif
#endif
