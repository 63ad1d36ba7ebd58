/* Unit tests of the C tokenizer on small hand-written tokenizer.json files whose expected ids
 * and offsets were taken from the `tokenizers` Python package (and, for folders with config
 * files, from transformers' AutoTokenizer), plus UTF-8 repair, load errors, decoding,
 * batch/thread agreement, a long input, UnicodeScripts, stride windows of pairs and the BPE
 * word cache (cold, warm, full and shared by threads against an uncached tokenizer). */
#include "pipelines/tok_internal.h"
#include <pthread.h>
#include "pipelines/tokenizer.h"
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *BERT_JSON =
    "{\"added_tokens\": [{\"id\": 1, \"content\": \"[CLS]\", \"special\": true, \"normalized\": false},"
    " {\"id\": 2, \"content\": \"[SEP]\", \"special\": true, \"normalized\": false}],"
    " \"normalizer\": {\"type\": \"BertNormalizer\", \"lowercase\": true},"
    " \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"},"
    " \"post_processor\": {\"type\": \"BertProcessing\", \"sep\": [\"[SEP]\", 2], \"cls\": [\"[CLS]\", 1]},"
    " \"decoder\": {\"type\": \"WordPiece\", \"prefix\": \"##\", \"cleanup\": true},"
    " \"model\": {\"type\": \"WordPiece\", \"unk_token\": \"[UNK]\", \"vocab\": {\"[UNK]\": 0, \"[CLS]\": 1, "
    "\"[SEP]\": 2,"
    " \"hello\": 3, \"world\": 4, \"##s\": 5, \",\": 6, \"un\": 7, \"##aff\": 8, \"##able\": 9, \"cafe\": 10}}}";

static const char *BPE_JSON =
    "{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true},"
    " \"post_processor\": {\"type\": \"ByteLevel\", \"trim_offsets\": true, \"add_prefix_space\": false},"
    " \"decoder\": {\"type\": \"ByteLevel\"},"
    " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"\\u0120\": 2, \"ab\": 3, \"\\u0120a\": 4, "
    "\"\\u0120ab\": 5,"
    " \"\\u00c3\": 6, \"\\u00a9\": 7}, \"merges\": [[\"a\", \"b\"], [\"\\u0120\", \"a\"], [\"\\u0120a\", \"b\"]]}}";

static const char *UNIGRAM_JSON =
    "{\"normalizer\": {\"type\": \"NFKC\"},"
    " \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"always\", "
    "\"split\": true},"
    " \"decoder\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"always\"},"
    " \"model\": {\"type\": \"Unigram\", \"unk_id\": 0, \"vocab\": [[\"<unk>\", 0.0], [\"\\u2581\", -1.0], [\"c\", "
    "-2.0], [\"a\", -2.0],"
    " [\"f\", -2.0], [\"\\u00e9\", -2.0], [\"e\", -3.0], [\"\\u2581caf\\u00e9\", -1.0]]}}";

static kn_tokenizer *load(const char *json) {
    char err[512] = {0};
    kn_tokenizer *t = kn_tokenizer_load_json(json, strlen(json), err, sizeof err);
    ck_assert_msg(t != NULL, "load failed: %s", err);
    return t;
}

static void encode(const kn_tokenizer *t, const char *s, const char *pair, kn_encoding *e) {
    char err[512] = {0};
    int rc = kn_tokenizer_encode(t, s, strlen(s), pair, pair ? strlen(pair) : 0, NULL, e, err, sizeof err);
    ck_assert_msg(rc == 0, "encode failed: %s", err);
}

START_TEST(test_wordpiece_bert) {
    kn_tokenizer *t = load(BERT_JSON);
    kn_encoding e;
    encode(t, "Hello, worlds! unaffable", NULL, &e);
    const int32_t ids[] = {1, 3, 6, 4, 5, 0, 7, 8, 9, 2};
    const int32_t off[] = {0, 0, 0, 5, 5, 6, 7, 12, 12, 13, 13, 14, 15, 17, 17, 20, 20, 24, 0, 0};
    ck_assert_int_eq(e.n, 10);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(e.ids[i], ids[i]);
        ck_assert_int_eq(e.offsets[2 * i], off[2 * i]);
        ck_assert_int_eq(e.offsets[2 * i + 1], off[2 * i + 1]);
    }
    ck_assert_str_eq(e.tokens[4], "##s");
    ck_assert_int_eq(e.special_mask[0], 1);
    kn_encoding_free(&e);
    /* accents stripped from NFD input, offsets still count the original characters */
    encode(t, "CAFE\xCC\x81 hello", "world", &e);
    ck_assert_int_eq(e.n, 6);
    ck_assert_int_eq(e.ids[1], 10);
    ck_assert_int_eq(e.offsets[2], 0);
    ck_assert_int_eq(e.offsets[3], 4);
    ck_assert_int_eq(e.offsets[4], 6);
    ck_assert_int_eq(e.type_ids[4], 1);
    ck_assert_int_eq(e.type_ids[5], 1);
    ck_assert_int_eq(e.type_ids[3], 0);
    kn_encoding_free(&e);
    /* [CLS] in the text is matched as the special token, not split by punctuation */
    encode(t, "hello[SEP]world", NULL, &e);
    ck_assert_int_eq(e.n, 5);
    ck_assert_int_eq(e.ids[2], 2);
    ck_assert_int_eq(e.offsets[4], 5);
    ck_assert_int_eq(e.offsets[5], 10);
    kn_encoding_free(&e);
    const int32_t dec_ids[] = {1, 3, 6, 4, 5, 2};
    char err[256];
    char *text = kn_tokenizer_decode(t, dec_ids, 6, 1, NULL, err, sizeof err);
    ck_assert_ptr_nonnull(text);
    ck_assert_str_eq(text, "hello, worlds");
    free(text);
    kn_tokenizer_free(t);
}
END_TEST

START_TEST(test_bpe_bytelevel) {
    kn_tokenizer *t = load(BPE_JSON);
    kn_encoding e;
    encode(t, "ab ab  a\xC3\xA9", NULL, &e);
    /* the package: ['ab', 'Ġ', 'ab', 'Ġ', 'Ġa', 'Ã', '©'] (a+b merges first, so no Ġab), offsets
     * trimmed of the leading space, both halves of é at [8, 9] */
    const int32_t ids[] = {3, 2, 3, 2, 4, 6, 7};
    const int32_t off[] = {0, 2, 3, 3, 3, 5, 6, 6, 7, 8, 8, 9, 8, 9};
    ck_assert_int_eq(e.n, 7);
    for (int i = 0; i < 7; i++) {
        ck_assert_int_eq(e.ids[i], ids[i]);
        ck_assert_int_eq(e.offsets[2 * i], off[2 * i]);
        ck_assert_int_eq(e.offsets[2 * i + 1], off[2 * i + 1]);
    }
    char err[256];
    char *text = kn_tokenizer_decode(t, e.ids, e.n, 0, NULL, err, sizeof err);
    ck_assert_str_eq(text, "ab ab  a\xC3\xA9");
    free(text);
    kn_encoding_free(&e);
    kn_tokenizer_free(t);
}
END_TEST

START_TEST(test_unigram_metaspace_nfkc) {
    kn_tokenizer *t = load(UNIGRAM_JSON);
    kn_encoding e;
    encode(t, "cafe\xCC\x81 x", NULL, &e);
    /* the package gives ['▁café', '▁', 'x'] at [(0, 4), (5, 6), (6, 7)] ('x' is unknown) */
    ck_assert_int_eq(e.n, 3);
    ck_assert_int_eq(e.ids[0], 7);
    ck_assert_int_eq(e.ids[1], 1);
    ck_assert_int_eq(e.ids[2], 0);
    ck_assert_str_eq(e.tokens[2], "x");
    const int32_t off[] = {0, 4, 5, 6, 6, 7};
    for (int i = 0; i < 6; i++) ck_assert_int_eq(e.offsets[i], off[i]);
    kn_encoding_free(&e);
    kn_tokenizer_free(t);
}
END_TEST

START_TEST(test_utf8_lossy) {
    size_t n;
    char *s = tk_utf8_lossy("a\xE2\x82z", 4, &n, NULL);
    ck_assert_str_eq(s, "a\xEF\xBF\xBDz"); /* one U+FFFD for the truncated sequence */
    free(s);
    s = tk_utf8_lossy("\xC0\xAF", 2, &n, NULL);
    ck_assert_str_eq(s, "\xEF\xBF\xBD\xEF\xBF\xBD");
    free(s);
    s = tk_utf8_lossy("\xF0\x9F\x98\x80", 4, &n, NULL);
    ck_assert_int_eq(n, 4);
    free(s);
    for (int b = 0; b < 256; b++) ck_assert_int_eq(tk_cp_to_byte(tk_byte_to_cp((uint8_t)b)), b);
}
END_TEST

START_TEST(test_load_errors) {
    char err[512];
    ck_assert_ptr_null(
        kn_tokenizer_load_json("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\"", 38, err, sizeof err));
    ck_assert_msg(strstr(err, "truncated") != NULL, "%s", err);
    ck_assert_ptr_null(kn_tokenizer_load_json("{\"model\": ]", 11, err, sizeof err));
    ck_assert_msg(strstr(err, "malformed") != NULL, "%s", err);
    const char *j = "{\"model\": {\"type\": \"WordPiece\", \"unk_token\": \"[UNK]\"}}";
    ck_assert_ptr_null(kn_tokenizer_load_json(j, strlen(j), err, sizeof err));
    ck_assert_msg(strstr(err, "model.vocab") != NULL, "%s", err);
    j = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\", \"b\"]]}}";
    ck_assert_ptr_null(kn_tokenizer_load_json(j, strlen(j), err, sizeof err));
    ck_assert_msg(strstr(err, "model.merges[0]") != NULL, "%s", err);
    j = "{\"model\": {\"type\": \"WordLevel\", \"vocab\": {}}, \"normalizer\": {\"type\": \"Bogus\"}}";
    ck_assert_ptr_null(kn_tokenizer_load_json(j, strlen(j), err, sizeof err));
    ck_assert_msg(strstr(err, "normalizer.type") != NULL, "%s", err);
}
END_TEST

START_TEST(test_batch_and_long) {
    kn_tokenizer *t = load(BPE_JSON);
    enum { N = 64 };
    char *texts[N];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        texts[i] = malloc(64);
        lens[i] = (size_t)snprintf(texts[i], 64, "ab%*s a b", i % 7, "");
    }
    kn_encoding batch[N], one;
    char err[256];
    ck_assert_int_eq(
        kn_tokenizer_encode_batch(t, N, (const char *const *)texts, lens, NULL, NULL, NULL, 4, batch, err, sizeof err),
        0);
    for (int i = 0; i < N; i++) {
        encode(t, texts[i], NULL, &one);
        ck_assert_int_eq(one.n, batch[i].n);
        for (int k = 0; k < one.n; k++) ck_assert_int_eq(one.ids[k], batch[i].ids[k]);
        kn_encoding_free(&one);
        kn_encoding_free(&batch[i]);
        free(texts[i]);
    }
    /* one 2 MB word: the BPE merge heap keeps this linear-logarithmic */
    size_t n = 2u << 20;
    char *big = malloc(n + 1);
    for (size_t i = 0; i < n; i++) big[i] = i % 2 ? 'b' : 'a';
    big[n] = 0;
    encode(t, big, NULL, &one);
    ck_assert_int_eq(one.n, (int32_t)(n / 2));
    ck_assert_int_eq(one.ids[0], 3);
    ck_assert_int_eq(one.offsets[2 * (one.n - 1) + 1], (int32_t)n);
    kn_encoding_free(&one);
    encode(t, "", NULL, &one);
    ck_assert_int_eq(one.n, 0);
    kn_encoding_free(&one);
    free(big);
    kn_tokenizer_free(t);
}
END_TEST

/* An old BERT folder with only vocab.txt (and do_lower_case in tokenizer_config.json). */
START_TEST(test_vocab_txt_folder) {
    char dir[] = "/tmp/kn_tok_vocabXXXXXX", path[256], err[512];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    FILE *f = fopen(path, "w");
    fputs("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n##s\n,\n", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    f = fopen(path, "w");
    fputs("{\"do_lower_case\": false}", f);
    fclose(f);
    kn_tokenizer *t = kn_tokenizer_load(dir, err, sizeof err);
    ck_assert_msg(t != NULL, "%s", err);
    kn_encoding e;
    encode(t, "hello, worlds Hello", NULL, &e);
    const int32_t ids[] = {2, 5, 8, 6, 7, 1, 3}; /* cased: "Hello" is unknown */
    ck_assert_int_eq(e.n, 7);
    for (int i = 0; i < 7; i++) ck_assert_int_eq(e.ids[i], ids[i]);
    ck_assert_int_eq(e.offsets[2 * 5], 14);
    ck_assert_int_eq(e.offsets[2 * 5 + 1], 19);
    kn_encoding_free(&e);
    kn_tokenizer_free(t);
    unlink(path);
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    unlink(path);
    rmdir(dir);
    ck_assert_ptr_null(kn_tokenizer_load(dir, err, sizeof err));
    ck_assert_msg(strstr(err, dir) != NULL, "%s", err);
}
END_TEST

/* A copy of a tokenizer.json text with one more top-level member ("\"key\": value"). */
static char *with_member(const char *json, const char *member) {
    size_t n = strlen(json), m = strlen(member);
    char *r = malloc(n + m + 3);
    ck_assert_ptr_nonnull(r);
    memcpy(r, json, n - 1); /* all but the closing brace */
    sprintf(r + n - 1, ", %s}", member);
    return r;
}

static void check_enc(const kn_encoding *e, int n, const int32_t *ids, const int32_t *types, const int32_t *off) {
    ck_assert_int_eq(e->n, n);
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(e->ids[i], ids[i]);
        if (types) ck_assert_int_eq(e->type_ids[i], types[i]);
        ck_assert_int_eq(e->offsets[2 * i], off[2 * i]);
        ck_assert_int_eq(e->offsets[2 * i + 1], off[2 * i + 1]);
    }
}

/* UnicodeScripts (expected pieces from the package): leading spaces dropped, kana and Han one
 * piece, U+0589 Common as in Unicode 9.0 (Armenian in later data), spaces joining any script. */
START_TEST(test_unicode_scripts) {
    kn_tokenizer *t =
        load("{\"pre_tokenizer\": {\"type\": \"UnicodeScripts\"},"
             " \"model\": {\"type\": \"WordLevel\", \"unk_token\": \"[UNK]\", \"vocab\": {\"[UNK]\": 0}}}");
    kn_encoding e;
    encode(t,
           "  \xe3\x81\xa9\xe3\x81\x93\xe3\x81\xa7\xe7\x94\x9f\xe3\x82\x8c\xe3\x80\x82Yes ab "
           "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82\xd6\x89x",
           NULL, &e);
    const int32_t ids[] = {0, 0, 0, 0, 0, 0};
    const int32_t off[] = {2, 7, 7, 8, 8, 15, 15, 21, 21, 22, 22, 23};
    check_enc(&e, 6, ids, NULL, off);
    kn_encoding_free(&e);
    encode(t, "   ", NULL, &e); /* only Any characters: nothing */
    ck_assert_int_eq(e.n, 0);
    kn_encoding_free(&e);
    kn_tokenizer_free(t);
}
END_TEST

/* Stride windows of a pair (expected from the package): the kept encoding, then each further
 * window of the first text with every window of the second, then the kept first window with
 * the further windows of the second. */
START_TEST(test_pair_overflow) {
    char *json = with_member(
        BERT_JSON,
        "\"truncation\": {\"max_length\": 7, \"stride\": 1, \"strategy\": \"LongestFirst\", \"direction\": \"Right\"}");
    kn_tokenizer *t = load(json);
    free(json);
    kn_encoding e;
    encode(t, "hello world hello world", "cafe cafe cafe cafe", &e);
    const int32_t types[] = {0, 0, 0, 0, 1, 1, 1};
    const int32_t ids_a[] = {1, 3, 4, 2, 10, 10, 2}, ids_b[] = {1, 4, 3, 2, 10, 10, 2};
    const int32_t a0[] = {0, 5, 6, 11}, a1[] = {6, 11, 12, 17}, a2[] = {12, 17, 18, 23};
    const int32_t b0[] = {0, 4, 5, 9}, b1[] = {5, 9, 10, 14}, b2[] = {10, 14, 15, 19};
    const int32_t *wa[] = {a0, a1, a2}, *wb[] = {b0, b1, b2};
    /* (first window, second window) of the kept encoding and of each overflow, in order */
    const int pairs[][2] = {{0, 0}, {1, 0}, {1, 1}, {1, 2}, {2, 0}, {2, 1}, {2, 2}, {0, 1}, {0, 2}};
    ck_assert_int_eq(e.n_overflow, 8);
    for (int k = 0; k < 9; k++) {
        const kn_encoding *x = k == 0 ? &e : &e.overflow[k - 1];
        const int32_t *oa = wa[pairs[k][0]], *ob = wb[pairs[k][1]];
        int32_t off[14] = {0, 0, oa[0], oa[1], oa[2], oa[3], 0, 0, ob[0], ob[1], ob[2], ob[3], 0, 0};
        check_enc(x, 7, pairs[k][0] == 1 ? ids_b : ids_a, types, off);
    }
    kn_encoding_free(&e);
    kn_tokenizer_free(t);
}
END_TEST

/* A folder read like transformers' from_pretrained (expected from AutoTokenizer): special
 * tokens named only in special_tokens_map.json and tokenizer_config.json become added tokens,
 * in the vocabulary (cafe, with lstrip) or past it in attribute order ([MASK], worlds, <new>),
 * and model_max_length does not truncate. */
START_TEST(test_folder_configs) {
    char dir[] = "/tmp/kn_tok_foldXXXXXX", path[256], err[512];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    const char *files[][2] = {
        {"tokenizer.json", BERT_JSON},
        {"special_tokens_map.json",
         "{\"mask_token\": \"[MASK]\", \"additional_special_tokens\": [\"worlds\", \"<new>\"]}"},
        {"tokenizer_config.json",
         "{\"model_max_length\": 4, \"bos_token\": {\"__type\": \"AddedToken\", \"content\": \"cafe\","
         " \"lstrip\": true, \"rstrip\": false, \"normalized\": false, \"single_word\": false, \"special\": true}}"},
    };
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i][0]);
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs(files[i][1], f);
        fclose(f);
    }
    kn_tokenizer *t = kn_tokenizer_load(dir, err, sizeof err);
    ck_assert_msg(t != NULL, "%s", err);
    kn_encoding e;
    encode(t, "hello worlds [MASK]<new> cafe", NULL, &e);
    const int32_t ids[] = {1, 3, 12, 11, 13, 10, 2};
    const int32_t off[] = {0, 0, 0, 5, 6, 12, 13, 19, 19, 24, 24, 29, 0, 0};
    check_enc(&e, 7, ids, NULL, off);
    kn_encoding_free(&e);
    kn_tokenizer_free(t);
    /* the file alone is the package's Tokenizer.from_file: no config files */
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    t = kn_tokenizer_load(path, err, sizeof err);
    ck_assert_msg(t != NULL, "%s", err);
    ck_assert_int_eq(kn_tokenizer_token_to_id(t, "<new>"), -1);
    kn_tokenizer_free(t);
    /* a malformed config file is an error naming it */
    snprintf(path, sizeof path, "%s/special_tokens_map.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"mask_token\": ", f);
    fclose(f);
    ck_assert_ptr_null(kn_tokenizer_load(dir, err, sizeof err));
    ck_assert_msg(strstr(err, "special_tokens_map.json") != NULL, "%s", err);
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i][0]);
        unlink(path);
    }
    rmdir(dir);
}
END_TEST

/* ---- BPE word cache ---- */
/* One assertion per encoding: Check logs every assertion, and these hold ~100k tokens. */
static void assert_same_encoding(const kn_encoding *x, const kn_encoding *y) {
    ck_assert_int_eq(x->n, y->n);
    int32_t bad = -1;
    for (int32_t i = 0; i < x->n && bad < 0; i++) {
        if (x->ids[i] != y->ids[i] || x->offsets[2 * i] != y->offsets[2 * i] ||
            x->offsets[2 * i + 1] != y->offsets[2 * i + 1] || x->token_lens[i] != y->token_lens[i] ||
            memcmp(x->tokens[i], y->tokens[i], (size_t)x->token_lens[i]))
            bad = i;
    }
    ck_assert_msg(bad < 0, "encodings differ at token %d", (int)bad);
}

typedef struct {
    const kn_tokenizer *t;
    const char *text;
    kn_encoding enc;
    int rc;
} cache_job;

static void *cache_worker(void *arg) {
    cache_job *j = arg;
    char err[256];
    j->rc = kn_tokenizer_encode(j->t, j->text, strlen(j->text), NULL, 0, NULL, &j->enc, err, sizeof err);
    return NULL;
}

START_TEST(test_bpe_cache) {
    /* More distinct words than the cache holds (each ' a' + 14 a/b bits, some with an 'é' whose
     * bytes are separate tokens), every word twice, so the second pass mixes hits and the misses
     * of words refused by full shards. */
    enum { WORDS = 12000, WLEN = 20 };
    char *text = malloc((size_t)WORDS * 2 * WLEN + 1);
    size_t len = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int w = 0; w < WORDS; w++) {
            text[len++] = ' ';
            text[len++] = 'a';
            for (int b = 13; b >= 0; b--) text[len++] = (w >> b) & 1 ? 'b' : 'a';
            if (w % 5 == 0) {
                text[len++] = '\xC3';
                text[len++] = '\xA9';
            }
        }
    }
    text[len] = 0;

    /* the reference: the same model with the cache taken away */
    kn_tokenizer *ref_t = load(BPE_JSON);
    ck_assert_ptr_nonnull(ref_t->model.cache);
    tk_bpe_cache_free(ref_t->model.cache);
    ref_t->model.cache = NULL;
    kn_encoding ref, cold, warm;
    encode(ref_t, text, NULL, &ref);
    ck_assert_int_gt(ref.n, 2 * WORDS);

    kn_tokenizer *t = load(BPE_JSON);
    ck_assert_uint_eq(tk_bpe_cache_count(t->model.cache), 0);
    encode(t, text, NULL, &cold);
    uint32_t held = tk_bpe_cache_count(t->model.cache);
    ck_assert_uint_le(held, TK_BPE_CACHE_CAPACITY);
    ck_assert_uint_ge(held, TK_BPE_CACHE_CAPACITY * 9 / 10);
    encode(t, text, NULL, &warm);
    ck_assert_uint_eq(tk_bpe_cache_count(t->model.cache), held);
    assert_same_encoding(&ref, &cold);
    assert_same_encoding(&ref, &warm);
    kn_encoding_free(&cold);
    kn_encoding_free(&warm);

    /* a word over the size limit is computed but not cached */
    char longw[400];
    longw[0] = ' ';
    for (int i = 1; i < 399; i++) longw[i] = i % 3 ? 'a' : 'b';
    longw[399] = 0;
    kn_encoding lr, lc;
    encode(ref_t, longw, NULL, &lr);
    encode(t, longw, NULL, &lc);
    assert_same_encoding(&lr, &lc);
    ck_assert_uint_eq(tk_bpe_cache_count(t->model.cache), held);
    kn_encoding_free(&lr);
    kn_encoding_free(&lc);
    kn_tokenizer_free(t);

    /* four threads on one fresh tokenizer: cold inserts and lookups race on the shard locks */
    t = load(BPE_JSON);
    cache_job jobs[4];
    pthread_t th[4];
    for (int k = 0; k < 4; k++) {
        jobs[k].t = t;
        jobs[k].text = text;
        jobs[k].rc = -1;
        ck_assert_int_eq(pthread_create(&th[k], NULL, cache_worker, &jobs[k]), 0);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        ck_assert_int_eq(jobs[k].rc, 0);
        assert_same_encoding(&ref, &jobs[k].enc);
        kn_encoding_free(&jobs[k].enc);
    }
    ck_assert_uint_le(tk_bpe_cache_count(t->model.cache), TK_BPE_CACHE_CAPACITY);
    ck_assert_uint_gt(tk_bpe_cache_count(t->model.cache), 0);
    kn_tokenizer_free(t);
    kn_encoding_free(&ref);
    kn_tokenizer_free(ref_t);
    free(text);
}
END_TEST

int main(void) {
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_wordpiece_bert);
    tcase_add_test(tc, test_bpe_bytelevel);
    tcase_add_test(tc, test_unigram_metaspace_nfkc);
    tcase_add_test(tc, test_utf8_lossy);
    tcase_add_test(tc, test_load_errors);
    tcase_add_test(tc, test_batch_and_long);
    tcase_add_test(tc, test_vocab_txt_folder);
    tcase_add_test(tc, test_unicode_scripts);
    tcase_add_test(tc, test_pair_overflow);
    tcase_add_test(tc, test_folder_configs);
    tcase_add_test(tc, test_bpe_cache);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
