/* Internal structures of the tokenizer pipeline: the normalized string with its alignment to
 * the original text, the component trees loaded from tokenizer.json, and small containers
 * (arena, string map, pair map, trie) shared by the stages. Not a public header. */
#ifndef KN_TOK_INTERNAL_H
#define KN_TOK_INTERNAL_H

#include "pipelines/tokenizer.h"
#include <stdarg.h>
#include <stdint.h>
#include <stddef.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* ---- arena: one per encode call, so the hot path never frees ---- */
typedef struct tk_chunk {
    struct tk_chunk *next;
    size_t used, cap;
} tk_chunk;
typedef struct tk_arena {
    tk_chunk *head;
    int oom;
} tk_arena;
void *tk_alloc(tk_arena *a, size_t n);
void tk_arena_free(tk_arena *a);

/* ---- normalized string: bytes plus, per byte, the original byte range it came from ---- */
typedef struct tk_nstr {
    char *s;
    int32_t *a0, *a1;
    int32_t len, cap;
    int32_t fixed_id; /* >= 0: an added token, not to be split or modelled further */
} tk_nstr;
void tk_ns_init(tk_nstr *n);
int tk_ns_reserve(tk_arena *a, tk_nstr *n, int32_t extra);
/* Appends code point cp whose bytes all align to original range [o0, o1). */
int tk_ns_push(tk_arena *a, tk_nstr *n, uint32_t cp, int32_t o0, int32_t o1);
int tk_ns_push_bytes(tk_arena *a, tk_nstr *n, const char *s, int32_t len, int32_t o0, int32_t o1);
/* Copy of the byte range [s, e) of src. */
int tk_ns_slice(tk_arena *a, const tk_nstr *src, int32_t s, int32_t e, tk_nstr *out);

/* ---- UTF-8 and Unicode classes (Rust std / HF semantics) ---- */
int tk_utf8_dec(const char *s, int32_t len, int32_t i, uint32_t *cp); /* bytes used; input valid */
int tk_utf8_enc(uint32_t cp, char *out);
/* The offset of the first invalid UTF-8 sequence in s, or (size_t)-1 when s is valid. */
size_t tk_utf8_invalid_at(const char *s, size_t len);
/* Replaces invalid sequences by U+FFFD (maximal subparts); returns malloc'd copy; *n_replaced
 * (when not NULL) says how many were replaced. */
char *tk_utf8_lossy(const char *s, size_t len, size_t *out_len, size_t *n_replaced);
int tk_is_whitespace(uint32_t c); /* Rust char::is_whitespace (White_Space) */
int tk_is_punct(uint32_t c);      /* Unicode P* */
int tk_is_bert_punct(uint32_t c); /* ASCII punctuation or P* as of Unicode 8.0 */
int tk_is_control(uint32_t c);    /* BERT: Cc Cf Co as of Unicode 8.0, except \t \n \r */
int tk_is_chinese(uint32_t c);
int tk_is_numeric(uint32_t c); /* Nd Nl No */
int tk_is_mn_8(uint32_t c);    /* Mn as of Unicode 8.0 */
int tk_is_mark_9(uint32_t c);  /* Mn Mc Me as of Unicode 9.0 */
/* Assigned after Unicode 8.0 / 9.0 (through 15.0), from tok_ucd_age.c. */
int tk_assigned_after_8(uint32_t c);
int tk_assigned_after_9(uint32_t c);

/* ---- hash maps ---- */
typedef struct tk_strmap {
    uint32_t cap, n;
    struct tk_sm_ent *ents;
} tk_strmap;
struct tk_sm_ent {
    const char *k;
    uint32_t len, hash;
    int32_t val;
};
uint32_t tk_hash(const char *s, size_t len);
int tk_strmap_put(tk_strmap *m, const char *k, uint32_t len, int32_t val); /* key not copied */
int32_t tk_strmap_get(const tk_strmap *m, const char *k, uint32_t len);    /* -1 if absent */
void tk_strmap_free(tk_strmap *m);

typedef struct tk_pairmap {
    uint32_t cap, n;
    struct tk_pm_ent *ents;
} tk_pairmap;
struct tk_pm_ent {
    uint64_t key;
    int32_t rank, new_id;
};
int tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id);
const struct tk_pm_ent *tk_pairmap_get(const tk_pairmap *m, int32_t a, int32_t b);
void tk_pairmap_free(tk_pairmap *m);

/* byte trie for Unigram's common-prefix search */
typedef struct tk_trie {
    int32_t *first, *next, *val;
    uint8_t *label;
    int32_t n, cap;
    int32_t root_child[256];
} tk_trie;
int tk_trie_insert(tk_trie *t, const char *k, int32_t len, int32_t val);
void tk_trie_free(tk_trie *t);

/* ---- components ---- */
enum {
    NRM_BERT = 1,
    NRM_NFC,
    NRM_NFD,
    NRM_NFKC,
    NRM_NFKD,
    NRM_LOWER,
    NRM_STRIP,
    NRM_STRIP_ACCENTS,
    NRM_REPLACE,
    NRM_PREPEND,
    NRM_PRECOMPILED,
    NRM_NMT,
    NRM_SEQ
};
typedef struct tk_normalizer {
    int kind;
    int clean_text, chinese, strip_accents, lowercase;
    int left, right;
    char *pattern;
    int32_t pattern_len;
    pcre2_code *re; /* Replace */
    char *content;
    int32_t content_len; /* Replace, Prepend */
    uint8_t *charsmap;
    size_t charsmap_len; /* Precompiled */
    struct tk_normalizer **seq;
    int n_seq;
} tk_normalizer;

/* Unicode 9.0 scripts as runs of code points (UnicodeScripts pre-tokenizer); id 0 is Any. */
typedef struct tk_scripts {
    uint32_t *run_start;
    uint8_t *run_id;
    int32_t n_runs, cap;
    uint8_t han, hiragana, katakana;
    uint8_t changed[4]; /* ids of the scripts of tok_scripts.c's CHANGED_AFTER_9 entries */
} tk_scripts;
int tk_scripts_build(tk_scripts *s, char *err, size_t err_len);
void tk_scripts_free(tk_scripts *s);
int tk_script_of(const tk_scripts *s, uint32_t c); /* the package's fixed_script */

enum { SPLIT_REMOVED = 0, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };
enum {
    PT_BERT = 1,
    PT_BYTELEVEL,
    PT_WHITESPACE,
    PT_WSSPLIT,
    PT_METASPACE,
    PT_SPLIT,
    PT_PUNCT,
    PT_DIGITS,
    PT_SCRIPTS,
    PT_CHARDELIM,
    PT_SEQ
};
enum { PREPEND_ALWAYS = 0, PREPEND_FIRST, PREPEND_NEVER };
typedef struct tk_pretok {
    int kind;
    int add_prefix_space, use_regex, trim_offsets;
    pcre2_code *re; /* ByteLevel, Split(regex), Whitespace */
    char *pattern;
    int32_t pattern_len; /* Split(string) */
    int behavior, invert;
    char replacement[8];
    int32_t replacement_len;
    uint32_t replacement_cp;
    int prepend_scheme, split;
    int individual_digits;
    uint32_t delimiter;
    tk_scripts scripts; /* UnicodeScripts */
    struct tk_pretok **seq;
    int n_seq;
} tk_pretok;

enum { MODEL_WORDPIECE = 1, MODEL_BPE, MODEL_UNIGRAM, MODEL_WORDLEVEL };
typedef struct tk_model {
    int kind;
    tk_strmap vocab;
    char **id2tok;
    int32_t *id2len;
    int32_t n_vocab;
    int32_t unk_id;
    char *cont_prefix;
    int32_t cont_prefix_len; /* WordPiece, BPE */
    int max_chars;
    tk_pairmap merges;
    char *eow_suffix;
    int32_t eow_suffix_len;
    int byte_fallback, fuse_unk, ignore_merges;
    double *scores;
    double min_score;
    tk_trie trie;
    struct tk_bpe_cache *cache; /* BPE: word -> result memo; mutable behind a const model */
} tk_model;

enum { POST_TEMPLATE = 1, POST_BERT, POST_ROBERTA, POST_BYTELEVEL, POST_SEQ };
typedef struct tk_tpl_item {
    int is_seq;
    int seq;
    int32_t type_id;
    char *special;
} tk_tpl_item;
typedef struct tk_special {
    char *name;
    int32_t *ids;
    char **tokens;
    int n;
} tk_special;
typedef struct tk_post {
    int kind;
    int32_t cls_id, sep_id;
    char *cls, *sep;
    int trim_offsets, add_prefix_space;
    tk_tpl_item *single, *pair;
    int n_single, n_pair;
    tk_special *specials;
    int n_specials;
    struct tk_post **seq;
    int n_seq;
} tk_post;

enum {
    DEC_BYTELEVEL = 1,
    DEC_WORDPIECE,
    DEC_METASPACE,
    DEC_BPE,
    DEC_BYTEFALLBACK,
    DEC_FUSE,
    DEC_STRIP,
    DEC_REPLACE,
    DEC_CTC,
    DEC_SEQ
};
typedef struct tk_decoder {
    int kind;
    char *prefix;
    int cleanup;
    char *suffix;
    uint32_t replacement_cp;
    int prepend_scheme;
    char *content;
    int start, stop;
    char *pattern;
    pcre2_code *re;
    char *pad_token, *word_delim;
    struct tk_decoder **seq;
    int n_seq;
} tk_decoder;

typedef struct tk_added {
    char *content;
    int32_t len;
    int32_t id;
    char *ncontent;
    int32_t nlen; /* content after the normalizer (normalized tokens) */
    int single_word, lstrip, rstrip, normalized, special;
} tk_added;

enum { TRUNC_LONGEST_FIRST = 0, TRUNC_ONLY_FIRST, TRUNC_ONLY_SECOND };
enum { PAD_NONE = 0, PAD_LONGEST, PAD_FIXED };
struct kn_tokenizer {
    tk_normalizer *normalizer;
    tk_pretok *pretok;
    tk_model model;
    tk_post *post;
    tk_decoder *decoder;
    tk_added *added;
    int n_added;
    tk_strmap added_map; /* content -> index in added */
    /* added tokens grouped by first byte: [0] matched on the original text, [1] on normalized */
    int32_t bucket_start[2][257];
    int32_t *bucket_items[2];
    int32_t *added_by_id;
    int32_t added_by_id_len; /* id -> index in added, or -1 */
    int trunc_on, trunc_strategy, trunc_stride, trunc_left;
    int32_t trunc_max;
    int pad, pad_left;
    int32_t pad_len, pad_multiple, pad_id, pad_type_id;
    char *pad_token;
};

/* stages */
int tk_normalize(const tk_normalizer *n, tk_arena *a, tk_nstr *s); /* in place (new buffers) */
/* Splits each piece of *pieces (n of them) further, replacing the array; pieces holding an
 * added token (fixed_id >= 0) pass through untouched. */
int tk_pretokenize(const tk_pretok *p, tk_arena *a, tk_nstr **pieces, int *n);

typedef struct tk_tok {
    int32_t id;
    int32_t s, e;
    const char *str;
    int32_t len;
} tk_tok;
typedef struct tk_toks {
    tk_tok *v;
    int32_t n, cap;
} tk_toks;
int tk_toks_push(tk_arena *a, tk_toks *t, int32_t id, int32_t s, int32_t e, const char *str, int32_t len);
/* Tokenizes one pre-tokenized piece; token ranges are byte ranges of the piece. */
int tk_model_tokenize(const tk_model *m, tk_arena *a, const tk_nstr *piece, tk_toks *out);

/* The BPE word cache (the package's 10,000-word cache): sharded, each shard behind a mutex taken
 * with trylock so a contended lookup just recomputes; full shards refuse inserts. */
#define TK_BPE_CACHE_CAPACITY 10000
#define TK_BPE_CACHE_MAX_WORD 256
struct tk_bpe_cache *tk_bpe_cache_new(void);
void tk_bpe_cache_free(struct tk_bpe_cache *c);
uint32_t tk_bpe_cache_count(struct tk_bpe_cache *c); /* words held (for tests) */

/* An encoding under construction (offsets in original characters). */
typedef struct tk_enc {
    int32_t n, cap;
    int32_t *ids, *type_ids, *off;
    uint8_t *special;
    const char **tok;
    int32_t *tok_len;
} tk_enc;
int tk_enc_push(tk_arena *a, tk_enc *e, int32_t id, int32_t type_id, int32_t s, int32_t e_, int special,
                const char *tok, int32_t tok_len);
int tk_post_process(const kn_tokenizer *t, const tk_post *p, tk_arena *a, tk_enc *A, tk_enc *B, int has_pair,
                    int add_special, tk_enc *out);
int tk_post_added_tokens(const tk_post *p, int is_pair);

char *tk_decode_tokens(const tk_decoder *d, char **toks, int n);
/* the code point that carries NUL through the decoder steps on this thread (tok_decode.c) */
extern _Thread_local uint32_t tk_decode_sentinel;
extern _Thread_local int tk_decode_nuls; /* set when a NUL was carried */

/* loading and freeing components */
void tk_normalizer_free(tk_normalizer *n);
void tk_pretok_free(tk_pretok *p);
void tk_post_free(tk_post *p);
void tk_decoder_free(tk_decoder *d);
void tk_model_clear(tk_model *m);

void tk_errf(char *err, size_t err_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
pcre2_code *tk_regex_compile(const char *pat, size_t len, char *err, size_t err_len);
/* The GPT-2 byte <-> printable code point table. */
uint32_t tk_byte_to_cp(uint8_t b);
int tk_cp_to_byte(uint32_t cp); /* -1 if not a byte-level char */

#endif
