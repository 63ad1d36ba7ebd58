/* Loading: reads tokenizer.json through json-c into the component trees, checking every field
 * it uses and naming the field (as a path like model.vocab) when one is missing or malformed.
 * Also builds a BERT tokenizer from a bare vocab.txt folder. */
#include "pipelines/tok_internal.h"
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* nul: the text had \\u0000 escapes, rewritten before parsing (json-c cuts object keys at NUL)
 * to this sentinel code point, one of plane 16 that the text does not hold; strings taken from
 * the tree turn it back into NUL. 0: no NUL. */
typedef struct {
    char *err;
    size_t len;
    uint32_t nul;
} lctx;

static int32_t unsentinel(uint32_t sentinel, char *s, int32_t len) {
    char sb[4];
    tk_utf8_enc(sentinel, sb);
    int32_t w = 0;
    for (int32_t i = 0; i < len;) {
        if (i + 4 <= len && !memcmp(s + i, sb, 4)) {
            s[w++] = 0;
            i += 4;
        } else s[w++] = s[i++];
    }
    s[w] = 0;
    return w;
}

#define FAIL(L, ...) \
    do { \
        tk_errf((L)->err, (L)->len, __VA_ARGS__); \
        return -1; \
    } while (0)

static json_object *field(json_object *o, const char *k) {
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object)) return NULL;
    if (!json_object_object_get_ex(o, k, &v)) return NULL;
    return v;
}

static int is_null(json_object *v) { return v == NULL || json_object_is_type(v, json_type_null); }

static int get_bool(lctx *L, json_object *o, const char *k, const char *path, int def, int *out) {
    json_object *v = field(o, k);
    if (is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_object_is_type(v, json_type_boolean)) FAIL(L, "%s.%s: expected a boolean", path, k);
    *out = json_object_get_boolean(v);
    return 0;
}

static int get_int(lctx *L, json_object *o, const char *k, const char *path, int64_t def, int64_t *out) {
    json_object *v = field(o, k);
    if (is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_object_is_type(v, json_type_int)) FAIL(L, "%s.%s: expected an integer", path, k);
    *out = json_object_get_int64(v);
    return 0;
}

/* String field; *out is NULL when absent and def is NULL. */
static int get_str(lctx *L, json_object *o, const char *k, const char *path, const char *def, char **out) {
    json_object *v = field(o, k);
    if (is_null(v)) {
        *out = def ? strdup(def) : NULL;
        return def && !*out ? -1 : 0;
    }
    if (!json_object_is_type(v, json_type_string)) FAIL(L, "%s.%s: expected a string", path, k);
    *out = strndup(json_object_get_string(v), (size_t)json_object_get_string_len(v));
    return *out ? 0 : -1;
}

static int get_type(lctx *L, json_object *o, const char *path, const char **type) {
    if (!json_object_is_type(o, json_type_object)) FAIL(L, "%s: expected an object", path);
    json_object *t = field(o, "type");
    if (!t || !json_object_is_type(t, json_type_string)) FAIL(L, "%s.type: missing or not a string", path);
    *type = json_object_get_string(t);
    return 0;
}

/* A pattern object {"String": s} or {"Regex": r}. */
static int get_pattern(lctx *L, json_object *o, const char *path, char **lit, int32_t *lit_len, pcre2_code **re) {
    json_object *p = field(o, "pattern"), *v;
    *lit = NULL;
    *re = NULL;
    *lit_len = 0;
    if (!p || !json_object_is_type(p, json_type_object)) FAIL(L, "%s.pattern: missing or not an object", path);
    if ((v = field(p, "String")) && json_object_is_type(v, json_type_string)) {
        *lit_len = json_object_get_string_len(v);
        *lit = malloc((size_t)*lit_len + 1);
        if (!*lit) return -1;
        memcpy(*lit, json_object_get_string(v), (size_t)*lit_len + 1);
        return 0;
    }
    if ((v = field(p, "Regex")) && json_object_is_type(v, json_type_string)) {
        char e[256];
        *re = tk_regex_compile(json_object_get_string(v), (size_t)json_object_get_string_len(v), e, sizeof e);
        if (!*re) FAIL(L, "%s.pattern.Regex: %s", path, e);
        *lit = strdup(json_object_get_string(v));
        return 0;
    }
    FAIL(L, "%s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", path);
}

static int get_behavior(lctx *L, json_object *o, const char *path, int def, int *out) {
    json_object *v = field(o, "behavior");
    if (is_null(v)) {
        *out = def;
        return 0;
    }
    const char *s = json_object_get_string(v);
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, names[i])) {
            *out = i;
            return 0;
        }
    FAIL(L, "%s.behavior: unknown split behaviour '%s'", path, s);
}

static int b64val(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

static int base64_decode(const char *s, size_t n, uint8_t **out, size_t *out_len) {
    uint8_t *o = malloc(n / 4 * 3 + 4);
    if (!o) return -1;
    size_t w = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=' || s[i] == '\n' || s[i] == '\r') continue;
        int v = b64val(s[i]);
        if (v < 0) {
            free(o);
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[w++] = (uint8_t)(acc >> bits);
        }
    }
    *out = o;
    *out_len = w;
    return 0;
}

/* ---- normalizers ---- */
static int load_normalizer(lctx *L, json_object *o, const char *path, tk_normalizer **out) {
    const char *type;
    if (get_type(L, o, path, &type)) return -1;
    tk_normalizer *n = calloc(1, sizeof *n);
    if (!n) FAIL(L, "out of memory");
    *out = n;
    if (!strcmp(type, "BertNormalizer")) {
        n->kind = NRM_BERT;
        json_object *sa = field(o, "strip_accents");
        if (get_bool(L, o, "clean_text", path, 1, &n->clean_text) ||
            get_bool(L, o, "handle_chinese_chars", path, 1, &n->chinese) ||
            get_bool(L, o, "lowercase", path, 1, &n->lowercase))
            return -1;
        if (is_null(sa)) n->strip_accents = n->lowercase;
        else if (get_bool(L, o, "strip_accents", path, 0, &n->strip_accents)) return -1;
    } else if (!strcmp(type, "NFC")) n->kind = NRM_NFC;
    else if (!strcmp(type, "NFD")) n->kind = NRM_NFD;
    else if (!strcmp(type, "NFKC")) n->kind = NRM_NFKC;
    else if (!strcmp(type, "NFKD")) n->kind = NRM_NFKD;
    else if (!strcmp(type, "Lowercase")) n->kind = NRM_LOWER;
    else if (!strcmp(type, "StripAccents")) n->kind = NRM_STRIP_ACCENTS;
    else if (!strcmp(type, "Nmt")) n->kind = NRM_NMT;
    else if (!strcmp(type, "Precompiled")) {
        n->kind = NRM_PRECOMPILED;
        json_object *v = field(o, "precompiled_charsmap");
        if (is_null(v)) return 0;
        if (!json_object_is_type(v, json_type_string))
            FAIL(L, "%s.precompiled_charsmap: expected a base64 string", path);
        if (base64_decode(json_object_get_string(v), (size_t)json_object_get_string_len(v), &n->charsmap,
                          &n->charsmap_len))
            FAIL(L, "%s.precompiled_charsmap: invalid base64", path);
        if (n->charsmap_len && n->charsmap_len < 4) FAIL(L, "%s.precompiled_charsmap: truncated charsmap", path);
    } else if (!strcmp(type, "Strip")) {
        n->kind = NRM_STRIP;
        if (get_bool(L, o, "strip_left", path, 1, &n->left) || get_bool(L, o, "strip_right", path, 1, &n->right))
            return -1;
    } else if (!strcmp(type, "Replace")) {
        n->kind = NRM_REPLACE;
        if (get_pattern(L, o, path, &n->pattern, &n->pattern_len, &n->re)) return -1;
        if (get_str(L, o, "content", path, NULL, &n->content)) return -1;
        if (!n->content) FAIL(L, "%s.content: missing", path);
        n->content_len = (int32_t)strlen(n->content);
    } else if (!strcmp(type, "Prepend")) {
        n->kind = NRM_PREPEND;
        if (get_str(L, o, "prepend", path, NULL, &n->content)) return -1;
        if (!n->content) FAIL(L, "%s.prepend: missing", path);
        n->content_len = (int32_t)strlen(n->content);
    } else if (!strcmp(type, "Sequence")) {
        n->kind = NRM_SEQ;
        json_object *a = field(o, "normalizers");
        if (!a || !json_object_is_type(a, json_type_array)) FAIL(L, "%s.normalizers: missing or not an array", path);
        int cnt = (int)json_object_array_length(a);
        n->seq = calloc((size_t)cnt + 1, sizeof *n->seq);
        if (!n->seq) FAIL(L, "out of memory");
        for (int i = 0; i < cnt; i++) {
            char p[256];
            snprintf(p, sizeof p, "%s.normalizers[%d]", path, i);
            n->n_seq = i + 1;
            if (load_normalizer(L, json_object_array_get_idx(a, (size_t)i), p, &n->seq[i])) return -1;
        }
    } else FAIL(L, "%s.type: unsupported normalizer '%s'", path, type);
    return 0;
}

/* ---- pre-tokenizers ---- */
#define GPT2_RE "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static int get_prepend_scheme(lctx *L, json_object *o, const char *path, int *out) {
    json_object *v = field(o, "prepend_scheme");
    if (is_null(v)) { /* files from before prepend_scheme used add_prefix_space */
        int aps;
        if (get_bool(L, o, "add_prefix_space", path, 1, &aps)) return -1;
        *out = aps ? PREPEND_ALWAYS : PREPEND_NEVER;
        return 0;
    }
    const char *s = json_object_get_string(v);
    if (!strcmp(s, "always")) *out = PREPEND_ALWAYS;
    else if (!strcmp(s, "first")) *out = PREPEND_FIRST;
    else if (!strcmp(s, "never")) *out = PREPEND_NEVER;
    else FAIL(L, "%s.prepend_scheme: unknown value '%s'", path, s);
    return 0;
}

static int get_replacement(lctx *L, json_object *o, const char *path, uint32_t *cp, char *buf, int32_t *len) {
    char *r;
    if (get_str(L, o, "replacement", path, "\xE2\x96\x81", &r)) return -1;
    int32_t l = (int32_t)strlen(r);
    if (l == 0 || l > 4) {
        free(r);
        FAIL(L, "%s.replacement: expected one character", path);
    }
    tk_utf8_dec(r, l, 0, cp);
    if (buf) {
        memcpy(buf, r, (size_t)l);
        buf[l] = 0;
        *len = l;
    }
    free(r);
    return 0;
}

static int load_pretok(lctx *L, json_object *o, const char *path, tk_pretok **out) {
    const char *type;
    if (get_type(L, o, path, &type)) return -1;
    tk_pretok *p = calloc(1, sizeof *p);
    if (!p) FAIL(L, "out of memory");
    *out = p;
    char e[256];
    if (!strcmp(type, "BertPreTokenizer")) p->kind = PT_BERT;
    else if (!strcmp(type, "ByteLevel")) {
        p->kind = PT_BYTELEVEL;
        if (get_bool(L, o, "add_prefix_space", path, 1, &p->add_prefix_space) ||
            get_bool(L, o, "use_regex", path, 1, &p->use_regex) ||
            get_bool(L, o, "trim_offsets", path, 1, &p->trim_offsets))
            return -1;
        if (p->use_regex && !(p->re = tk_regex_compile(GPT2_RE, strlen(GPT2_RE), e, sizeof e)))
            FAIL(L, "%s: %s", path, e);
    } else if (!strcmp(type, "Whitespace")) {
        p->kind = PT_WHITESPACE;
        if (!(p->re = tk_regex_compile("\\w+|[^\\w\\s]+", 15, e, sizeof e))) FAIL(L, "%s: %s", path, e);
    } else if (!strcmp(type, "WhitespaceSplit")) p->kind = PT_WSSPLIT;
    else if (!strcmp(type, "Metaspace")) {
        p->kind = PT_METASPACE;
        if (get_replacement(L, o, path, &p->replacement_cp, p->replacement, &p->replacement_len) ||
            get_prepend_scheme(L, o, path, &p->prepend_scheme) || get_bool(L, o, "split", path, 1, &p->split))
            return -1;
    } else if (!strcmp(type, "Split")) {
        p->kind = PT_SPLIT;
        if (get_pattern(L, o, path, &p->pattern, &p->pattern_len, &p->re) ||
            get_behavior(L, o, path, SPLIT_REMOVED, &p->behavior) || get_bool(L, o, "invert", path, 0, &p->invert))
            return -1;
    } else if (!strcmp(type, "Punctuation")) {
        p->kind = PT_PUNCT;
        if (get_behavior(L, o, path, SPLIT_ISOLATED, &p->behavior)) return -1;
    } else if (!strcmp(type, "Digits")) {
        p->kind = PT_DIGITS;
        if (get_bool(L, o, "individual_digits", path, 0, &p->individual_digits)) return -1;
    } else if (!strcmp(type, "CharDelimiterSplit")) {
        p->kind = PT_CHARDELIM;
        char *d;
        if (get_str(L, o, "delimiter", path, NULL, &d)) return -1;
        if (!d || !*d) {
            free(d);
            FAIL(L, "%s.delimiter: missing", path);
        }
        tk_utf8_dec(d, (int32_t)strlen(d), 0, &p->delimiter);
        free(d);
    } else if (!strcmp(type, "UnicodeScripts")) {
        p->kind = PT_SCRIPTS;
        if (tk_scripts_build(&p->scripts, e, sizeof e)) FAIL(L, "%s: %s", path, e);
    } else if (!strcmp(type, "Sequence")) {
        p->kind = PT_SEQ;
        json_object *a = field(o, "pretokenizers");
        if (!a || !json_object_is_type(a, json_type_array)) FAIL(L, "%s.pretokenizers: missing or not an array", path);
        int cnt = (int)json_object_array_length(a);
        p->seq = calloc((size_t)cnt + 1, sizeof *p->seq);
        if (!p->seq) FAIL(L, "out of memory");
        for (int i = 0; i < cnt; i++) {
            char q[256];
            snprintf(q, sizeof q, "%s.pretokenizers[%d]", path, i);
            p->n_seq = i + 1;
            if (load_pretok(L, json_object_array_get_idx(a, (size_t)i), q, &p->seq[i])) return -1;
        }
    } else FAIL(L, "%s.type: unsupported pre-tokenizer '%s'", path, type);
    return 0;
}

/* ---- model ---- */
static double pow10_exact(int k) {
    char b[16];
    snprintf(b, sizeof b, "1e%d", k);
    return strtod(b, NULL);
}

/* serde_json's default (not correctly rounded) float parsing, which is how the Rust package
 * reads Unigram scores: u64 significand, then one multiply or divide by a power of ten. A
 * correctly rounded strtod differs by an ulp now and then, which flips Viterbi ties. */
static double serde_f64(const char *s) {
    int neg = 0, exp = 0;
    uint64_t sig = 0;
    const char *p = s;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    int overflow = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (overflow || (sig >= UINT64_MAX / 10 && (sig > UINT64_MAX / 10 || d > UINT64_MAX % 10))) {
            overflow = 1;
            exp++;
            continue;
        }
        sig = sig * 10 + d;
    }
    if (*p == '.') {
        p++;
        for (; *p >= '0' && *p <= '9'; p++) {
            uint64_t d = (uint64_t)(*p - '0');
            if (overflow || (sig >= UINT64_MAX / 10 && (sig > UINT64_MAX / 10 || d > UINT64_MAX % 10))) {
                overflow = 1;
                continue;
            }
            sig = sig * 10 + d;
            exp--;
        }
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        int eneg = 0, e = 0;
        if (*p == '+') p++;
        else if (*p == '-') {
            eneg = 1;
            p++;
        }
        for (; *p >= '0' && *p <= '9'; p++)
            if (e < 100000) e = e * 10 + (*p - '0');
        exp += eneg ? -e : e;
    }
    double f = (double)sig;
    for (;;) {
        int a = exp < 0 ? -exp : exp;
        if (a <= 308) {
            if (exp >= 0) f *= pow10_exact(a);
            else f /= pow10_exact(a);
            break;
        }
        if (f == 0.0 || exp >= 0) break;
        f /= 1e308;
        exp += 308;
    }
    return neg ? -f : f;
}

static int vocab_alloc(lctx *L, tk_model *m, int32_t n) {
    m->n_vocab = n;
    m->id2tok = calloc((size_t)n + 1, sizeof(char *));
    m->id2len = calloc((size_t)n + 1, sizeof(int32_t));
    if (!m->id2tok || !m->id2len) FAIL(L, "out of memory");
    return 0;
}

static int vocab_set(lctx *L, tk_model *m, int32_t id, const char *s, int32_t len) {
    if (m->id2tok[id]) free(m->id2tok[id]);
    m->id2tok[id] = malloc((size_t)len + 1);
    if (!m->id2tok[id]) FAIL(L, "out of memory");
    memcpy(m->id2tok[id], s, (size_t)len);
    m->id2tok[id][len] = 0;
    m->id2len[id] = L->nul ? unsentinel(L->nul, m->id2tok[id], len) : len;
    return 0;
}

/* {"token": id, ...}: ids may be sparse; keys point at the id2tok copies. */
static int load_vocab_map(lctx *L, tk_model *m, json_object *v, const char *path) {
    if (!v || !json_object_is_type(v, json_type_object)) FAIL(L, "%s.vocab: missing or not an object", path);
    int64_t maxid = -1;
    json_object_object_foreach(v, k, val) {
        (void)k;
        if (!json_object_is_type(val, json_type_int)) FAIL(L, "%s.vocab[\"%s\"]: expected an integer id", path, k);
        int64_t id = json_object_get_int64(val);
        if (id < 0 || id > (1 << 28)) FAIL(L, "%s.vocab[\"%s\"]: id %lld out of range", path, k, (long long)id);
        if (id > maxid) maxid = id;
    }
    /* the id table is sized by the largest id: sparse ids far beyond the entries would make a small
     * file allocate gigabytes */
    int64_t count = json_object_object_length(v);
    if (maxid >= (int64_t)1 << 20 && maxid > 64 * count)
        FAIL(L, "%s.vocab: id %lld for %lld entries: ids this sparse are not supported", path, (long long)maxid,
             (long long)count);
    if (vocab_alloc(L, m, (int32_t)(maxid + 1))) return -1;
    struct lh_entry *ent;
    for (ent = json_object_get_object(v)->head; ent; ent = ent->next) {
        const char *k = (const char *)lh_entry_k(ent);
        int32_t id = (int32_t)json_object_get_int64((json_object *)lh_entry_v(ent));
        if (vocab_set(L, m, id, k, (int32_t)strlen(k))) return -1;
    }
    for (int32_t i = 0; i < m->n_vocab; i++)
        if (m->id2tok[i] && tk_strmap_put(&m->vocab, m->id2tok[i], (uint32_t)m->id2len[i], i)) FAIL(L, "out of memory");
    return 0;
}

static int load_model(lctx *L, json_object *o, tk_model *m) {
    const char *path = "model";
    if (!o || !json_object_is_type(o, json_type_object)) FAIL(L, "model: missing or not an object");
    json_object *t = field(o, "type");
    const char *type;
    if (t && json_object_is_type(t, json_type_string)) type = json_object_get_string(t);
    else if (field(o, "merges")) type = "BPE";
    else if (json_object_is_type(field(o, "vocab"), json_type_array)) type = "Unigram";
    else if (field(o, "max_input_chars_per_word") || field(o, "continuing_subword_prefix")) type = "WordPiece";
    else type = "WordLevel";
    m->unk_id = -1;
    char *unk = NULL;
    if (!strcmp(type, "WordPiece")) {
        m->kind = MODEL_WORDPIECE;
        int64_t mc;
        if (load_vocab_map(L, m, field(o, "vocab"), path) || get_str(L, o, "unk_token", path, "[UNK]", &unk) ||
            get_str(L, o, "continuing_subword_prefix", path, "##", &m->cont_prefix) ||
            get_int(L, o, "max_input_chars_per_word", path, 100, &mc))
            goto fail;
        m->max_chars = (int)mc;
        m->cont_prefix_len = (int32_t)strlen(m->cont_prefix);
        m->unk_id = tk_strmap_get(&m->vocab, unk, (uint32_t)strlen(unk));
        if (m->unk_id < 0) {
            tk_errf(L->err, L->len, "model.unk_token: '%s' is not in model.vocab", unk);
            goto fail;
        }
    } else if (!strcmp(type, "WordLevel")) {
        m->kind = MODEL_WORDLEVEL;
        if (load_vocab_map(L, m, field(o, "vocab"), path) || get_str(L, o, "unk_token", path, "<unk>", &unk)) goto fail;
        m->unk_id = tk_strmap_get(&m->vocab, unk, (uint32_t)strlen(unk));
    } else if (!strcmp(type, "BPE")) {
        m->kind = MODEL_BPE;
        if (load_vocab_map(L, m, field(o, "vocab"), path) || get_str(L, o, "unk_token", path, NULL, &unk) ||
            get_str(L, o, "continuing_subword_prefix", path, NULL, &m->cont_prefix) ||
            get_str(L, o, "end_of_word_suffix", path, NULL, &m->eow_suffix) ||
            get_bool(L, o, "fuse_unk", path, 0, &m->fuse_unk) ||
            get_bool(L, o, "byte_fallback", path, 0, &m->byte_fallback) ||
            get_bool(L, o, "ignore_merges", path, 0, &m->ignore_merges))
            goto fail;
        m->cont_prefix_len = m->cont_prefix ? (int32_t)strlen(m->cont_prefix) : 0;
        m->eow_suffix_len = m->eow_suffix ? (int32_t)strlen(m->eow_suffix) : 0;
        /* The package turns its cache off under dropout; kiln ignores dropout at inference
         * (results are deterministic), so the cache is always on. */
        if (!(m->cache = tk_bpe_cache_new())) {
            tk_errf(L->err, L->len, "out of memory creating the BPE cache");
            goto fail;
        }
        if (unk) m->unk_id = tk_strmap_get(&m->vocab, unk, (uint32_t)strlen(unk));
        json_object *mg = field(o, "merges");
        if (!mg || !json_object_is_type(mg, json_type_array)) {
            tk_errf(L->err, L->len, "model.merges: missing or not an array");
            goto fail;
        }
        size_t n = json_object_array_length(mg);
        char *buf = NULL;
        size_t cap = 0;
        for (size_t i = 0; i < n; i++) {
            json_object *e = json_object_array_get_idx(mg, i);
            const char *a, *b;
            size_t al, bl;
            if (json_object_is_type(e, json_type_string)) {
                a = json_object_get_string(e);
                const char *sp = strchr(a, ' ');
                if (!sp || strchr(sp + 1, ' ')) {
                    free(buf);
                    tk_errf(L->err, L->len, "model.merges[%zu]: expected \"a b\"", i);
                    goto fail;
                }
                al = (size_t)(sp - a);
                b = sp + 1;
                bl = strlen(b);
            } else if (json_object_is_type(e, json_type_array) && json_object_array_length(e) == 2 &&
                       json_object_is_type(json_object_array_get_idx(e, 0), json_type_string) &&
                       json_object_is_type(json_object_array_get_idx(e, 1), json_type_string)) {
                a = json_object_get_string(json_object_array_get_idx(e, 0));
                al = strlen(a);
                b = json_object_get_string(json_object_array_get_idx(e, 1));
                bl = strlen(b);
            } else {
                free(buf);
                tk_errf(L->err, L->len, "model.merges[%zu]: expected \"a b\" or [a, b]", i);
                goto fail;
            }
            char abuf[256], bbuf[256];
            if (L->nul && al < sizeof abuf && bl < sizeof bbuf) {
                memcpy(abuf, a, al);
                al = (size_t)unsentinel(L->nul, abuf, (int32_t)al);
                a = abuf;
                memcpy(bbuf, b, bl);
                bl = (size_t)unsentinel(L->nul, bbuf, (int32_t)bl);
                b = bbuf;
            }
            int32_t ia = tk_strmap_get(&m->vocab, a, (uint32_t)al), ib = tk_strmap_get(&m->vocab, b, (uint32_t)bl);
            if (ia < 0 || ib < 0) {
                free(buf);
                tk_errf(L->err, L->len, "model.merges[%zu]: token '%.*s' is not in model.vocab", i,
                        (int)(ia < 0 ? al : bl), ia < 0 ? a : b);
                goto fail;
            }
            size_t skip = m->cont_prefix_len && bl >= (size_t)m->cont_prefix_len &&
                    !memcmp(b, m->cont_prefix, (size_t)m->cont_prefix_len)
                ? (size_t)m->cont_prefix_len
                : 0;
            if (al + bl + 1 > cap) {
                cap = (al + bl + 1) * 2;
                char *nb = realloc(buf, cap);
                if (!nb) {
                    free(buf);
                    goto oom;
                }
                buf = nb;
            }
            memcpy(buf, a, al);
            memcpy(buf + al, b + skip, bl - skip);
            int32_t inew = tk_strmap_get(&m->vocab, buf, (uint32_t)(al + bl - skip));
            if (inew < 0) {
                tk_errf(L->err, L->len, "model.merges[%zu]: merged token '%.*s' is not in model.vocab", i,
                        (int)(al + bl - skip), buf);
                free(buf);
                goto fail;
            }
            if (tk_pairmap_put(&m->merges, ia, ib, (int32_t)i, inew)) {
                free(buf);
                goto oom;
            }
        }
        free(buf);
    } else if (!strcmp(type, "Unigram")) {
        m->kind = MODEL_UNIGRAM;
        json_object *v = field(o, "vocab");
        if (!v || !json_object_is_type(v, json_type_array)) {
            tk_errf(L->err, L->len, "model.vocab: missing or not an array");
            goto fail;
        }
        int32_t n = (int32_t)json_object_array_length(v);
        if (vocab_alloc(L, m, n)) goto fail;
        m->scores = calloc((size_t)n + 1, sizeof(double));
        if (!m->scores) goto oom;
        m->min_score = 1e300;
        for (int32_t i = 0; i < n; i++) {
            json_object *e = json_object_array_get_idx(v, (size_t)i);
            if (!json_object_is_type(e, json_type_array) || json_object_array_length(e) != 2 ||
                !json_object_is_type(json_object_array_get_idx(e, 0), json_type_string)) {
                tk_errf(L->err, L->len, "model.vocab[%d]: expected [piece, score]", i);
                goto fail;
            }
            json_object *ps = json_object_array_get_idx(e, 0), *sc = json_object_array_get_idx(e, 1);
            if (!json_object_is_type(sc, json_type_double) && !json_object_is_type(sc, json_type_int)) {
                tk_errf(L->err, L->len, "model.vocab[%d][1]: expected a number", i);
                goto fail;
            }
            if (vocab_set(L, m, i, json_object_get_string(ps), json_object_get_string_len(ps))) goto fail;
            m->scores[i] = json_object_is_type(sc, json_type_double) ? serde_f64(json_object_get_string(sc))
                                                                     : json_object_get_double(sc);
            if (m->scores[i] < m->min_score) m->min_score = m->scores[i];
            if (tk_strmap_put(&m->vocab, m->id2tok[i], (uint32_t)m->id2len[i], i) ||
                tk_trie_insert(&m->trie, m->id2tok[i], m->id2len[i], i))
                goto oom;
        }
        int64_t uid;
        if (get_int(L, o, "unk_id", path, -1, &uid) || get_bool(L, o, "byte_fallback", path, 0, &m->byte_fallback))
            goto fail;
        if (uid >= n) {
            tk_errf(L->err, L->len, "model.unk_id: %lld is outside the vocabulary of %d", (long long)uid, n);
            goto fail;
        }
        m->unk_id = (int32_t)uid;
    } else {
        tk_errf(L->err, L->len, "model.type: unsupported model '%s'", type);
        goto fail;
    }
    free(unk);
    return 0;
oom:
    tk_errf(L->err, L->len, "out of memory loading the model");
fail:
    free(unk);
    return -1;
}

/* ---- post-processors ---- */
static int get_special_pair(lctx *L, json_object *o, const char *k, const char *path, char **tok, int32_t *id) {
    json_object *v = field(o, k);
    if (!v || !json_object_is_type(v, json_type_array) || json_object_array_length(v) != 2 ||
        !json_object_is_type(json_object_array_get_idx(v, 0), json_type_string) ||
        !json_object_is_type(json_object_array_get_idx(v, 1), json_type_int))
        FAIL(L, "%s.%s: expected [token, id]", path, k);
    *tok = strdup(json_object_get_string(json_object_array_get_idx(v, 0)));
    *id = (int32_t)json_object_get_int64(json_object_array_get_idx(v, 1));
    return *tok ? 0 : -1;
}

static int load_template(lctx *L, json_object *a, const char *path, tk_tpl_item **out, int *n) {
    if (!a || !json_object_is_type(a, json_type_array)) FAIL(L, "%s: missing or not an array", path);
    int cnt = (int)json_object_array_length(a);
    *out = calloc((size_t)cnt + 1, sizeof **out);
    if (!*out) FAIL(L, "out of memory");
    for (int i = 0; i < cnt; i++) {
        json_object *e = json_object_array_get_idx(a, (size_t)i), *s, *x;
        tk_tpl_item *it = &(*out)[i];
        *n = i + 1;
        if ((s = field(e, "Sequence"))) {
            it->is_seq = 1;
            x = field(s, "id");
            const char *id = x ? json_object_get_string(x) : "";
            if (strcmp(id, "A") && strcmp(id, "B")) FAIL(L, "%s[%d].Sequence.id: expected \"A\" or \"B\"", path, i);
            it->seq = id[0] == 'B';
        } else if ((s = field(e, "SpecialToken"))) {
            x = field(s, "id");
            if (!x || !json_object_is_type(x, json_type_string)) FAIL(L, "%s[%d].SpecialToken.id: missing", path, i);
            it->special = strdup(json_object_get_string(x));
        } else FAIL(L, "%s[%d]: expected Sequence or SpecialToken", path, i);
        x = field(s, "type_id");
        it->type_id = x ? (int32_t)json_object_get_int64(x) : 0;
    }
    return 0;
}

static int load_post(lctx *L, json_object *o, const char *path, tk_post **out) {
    const char *type;
    if (get_type(L, o, path, &type)) return -1;
    tk_post *p = calloc(1, sizeof *p);
    if (!p) FAIL(L, "out of memory");
    *out = p;
    if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
        p->kind = type[0] == 'B' ? POST_BERT : POST_ROBERTA;
        if (get_special_pair(L, o, "cls", path, &p->cls, &p->cls_id) ||
            get_special_pair(L, o, "sep", path, &p->sep, &p->sep_id))
            return -1;
        if (p->kind == POST_ROBERTA &&
            (get_bool(L, o, "trim_offsets", path, 1, &p->trim_offsets) ||
             get_bool(L, o, "add_prefix_space", path, 1, &p->add_prefix_space)))
            return -1;
    } else if (!strcmp(type, "ByteLevel")) {
        p->kind = POST_BYTELEVEL;
        if (get_bool(L, o, "trim_offsets", path, 1, &p->trim_offsets) ||
            get_bool(L, o, "add_prefix_space", path, 1, &p->add_prefix_space))
            return -1;
    } else if (!strcmp(type, "TemplateProcessing")) {
        p->kind = POST_TEMPLATE;
        char q[256];
        snprintf(q, sizeof q, "%s.single", path);
        if (load_template(L, field(o, "single"), q, &p->single, &p->n_single)) return -1;
        snprintf(q, sizeof q, "%s.pair", path);
        if (load_template(L, field(o, "pair"), q, &p->pair, &p->n_pair)) return -1;
        json_object *st = field(o, "special_tokens");
        if (!st || !json_object_is_type(st, json_type_object))
            FAIL(L, "%s.special_tokens: missing or not an object", path);
        p->specials = calloc((size_t)json_object_object_length(st) + 1, sizeof *p->specials);
        if (!p->specials) FAIL(L, "out of memory");
        json_object_object_foreach(st, k, v) {
            tk_special *s = &p->specials[p->n_specials++];
            s->name = strdup(k);
            json_object *ids = field(v, "ids"), *toks = field(v, "tokens");
            if (!ids || !toks || !json_object_is_type(ids, json_type_array) ||
                !json_object_is_type(toks, json_type_array) ||
                json_object_array_length(ids) != json_object_array_length(toks))
                FAIL(L, "%s.special_tokens[\"%s\"]: expected ids and tokens arrays of equal length", path, k);
            s->n = (int)json_object_array_length(ids);
            s->ids = calloc((size_t)s->n + 1, sizeof(int32_t));
            s->tokens = calloc((size_t)s->n + 1, sizeof(char *));
            if (!s->ids || !s->tokens || !s->name) FAIL(L, "out of memory");
            for (int i = 0; i < s->n; i++) {
                s->ids[i] = (int32_t)json_object_get_int64(json_object_array_get_idx(ids, (size_t)i));
                s->tokens[i] = strdup(json_object_get_string(json_object_array_get_idx(toks, (size_t)i)));
            }
        }
        for (int pass = 0; pass < 2; pass++) {
            tk_tpl_item *it = pass ? p->pair : p->single;
            int n = pass ? p->n_pair : p->n_single;
            for (int i = 0; i < n; i++) {
                if (it[i].is_seq) continue;
                int found = 0;
                for (int s = 0; s < p->n_specials; s++) found |= !strcmp(p->specials[s].name, it[i].special);
                if (!found)
                    FAIL(L, "%s.%s[%d]: special token '%s' is not in special_tokens", path, pass ? "pair" : "single", i,
                         it[i].special);
            }
        }
    } else if (!strcmp(type, "Sequence")) {
        p->kind = POST_SEQ;
        json_object *a = field(o, "processors");
        if (!a || !json_object_is_type(a, json_type_array)) FAIL(L, "%s.processors: missing or not an array", path);
        int cnt = (int)json_object_array_length(a);
        p->seq = calloc((size_t)cnt + 1, sizeof *p->seq);
        if (!p->seq) FAIL(L, "out of memory");
        for (int i = 0; i < cnt; i++) {
            char q[256];
            snprintf(q, sizeof q, "%s.processors[%d]", path, i);
            p->n_seq = i + 1;
            if (load_post(L, json_object_array_get_idx(a, (size_t)i), q, &p->seq[i])) return -1;
        }
    } else FAIL(L, "%s.type: unsupported post-processor '%s'", path, type);
    return 0;
}

/* ---- decoders ---- */
static int load_decoder(lctx *L, json_object *o, const char *path, tk_decoder **out) {
    const char *type;
    if (get_type(L, o, path, &type)) return -1;
    tk_decoder *d = calloc(1, sizeof *d);
    if (!d) FAIL(L, "out of memory");
    *out = d;
    if (!strcmp(type, "ByteLevel")) d->kind = DEC_BYTELEVEL;
    else if (!strcmp(type, "WordPiece")) {
        d->kind = DEC_WORDPIECE;
        if (get_str(L, o, "prefix", path, "##", &d->prefix) || get_bool(L, o, "cleanup", path, 1, &d->cleanup))
            return -1;
    } else if (!strcmp(type, "Metaspace")) {
        d->kind = DEC_METASPACE;
        if (get_replacement(L, o, path, &d->replacement_cp, NULL, NULL) ||
            get_prepend_scheme(L, o, path, &d->prepend_scheme))
            return -1;
    } else if (!strcmp(type, "BPEDecoder")) {
        d->kind = DEC_BPE;
        if (get_str(L, o, "suffix", path, "</w>", &d->suffix)) return -1;
    } else if (!strcmp(type, "ByteFallback")) d->kind = DEC_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse")) d->kind = DEC_FUSE;
    else if (!strcmp(type, "Strip")) {
        d->kind = DEC_STRIP;
        int64_t s, e;
        if (get_str(L, o, "content", path, " ", &d->content) || get_int(L, o, "start", path, 0, &s) ||
            get_int(L, o, "stop", path, 0, &e))
            return -1;
        if (!d->content[0]) FAIL(L, "%s.content: empty", path);
        d->start = (int)s;
        d->stop = (int)e;
    } else if (!strcmp(type, "Replace")) {
        d->kind = DEC_REPLACE;
        int32_t pl;
        if (get_pattern(L, o, path, &d->pattern, &pl, &d->re) || get_str(L, o, "content", path, NULL, &d->content))
            return -1;
        if (!d->content) FAIL(L, "%s.content: missing", path);
    } else if (!strcmp(type, "CTC")) {
        d->kind = DEC_CTC;
        if (get_str(L, o, "pad_token", path, "<pad>", &d->pad_token) ||
            get_str(L, o, "word_delimiter_token", path, "|", &d->word_delim) ||
            get_bool(L, o, "cleanup", path, 1, &d->cleanup))
            return -1;
    } else if (!strcmp(type, "Sequence")) {
        d->kind = DEC_SEQ;
        json_object *a = field(o, "decoders");
        if (!a || !json_object_is_type(a, json_type_array)) FAIL(L, "%s.decoders: missing or not an array", path);
        int cnt = (int)json_object_array_length(a);
        d->seq = calloc((size_t)cnt + 1, sizeof *d->seq);
        if (!d->seq) FAIL(L, "out of memory");
        for (int i = 0; i < cnt; i++) {
            char q[256];
            snprintf(q, sizeof q, "%s.decoders[%d]", path, i);
            d->n_seq = i + 1;
            if (load_decoder(L, json_object_array_get_idx(a, (size_t)i), q, &d->seq[i])) return -1;
        }
    } else FAIL(L, "%s.type: unsupported decoder '%s'", path, type);
    return 0;
}

/* ---- added tokens, truncation, padding ---- */
static int load_added(lctx *L, json_object *a, kn_tokenizer *t) {
    if (is_null(a)) return 0;
    if (!json_object_is_type(a, json_type_array)) FAIL(L, "added_tokens: expected an array");
    int n = (int)json_object_array_length(a);
    t->added = calloc((size_t)n + 1, sizeof *t->added);
    if (!t->added) FAIL(L, "out of memory");
    for (int i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(a, (size_t)i);
        char path[64];
        snprintf(path, sizeof path, "added_tokens[%d]", i);
        tk_added *x = &t->added[i];
        int64_t id;
        json_object *c = field(e, "content");
        if (!json_object_is_type(e, json_type_object)) FAIL(L, "%s: expected an object", path);
        if (!c || !json_object_is_type(c, json_type_string)) FAIL(L, "%s.content: missing or not a string", path);
        if (!field(e, "id")) FAIL(L, "%s.id: missing", path);
        if (get_int(L, e, "id", path, 0, &id)) return -1;
        if (id < 0 || id > (1 << 28)) FAIL(L, "%s.id: %lld out of range", path, (long long)id);
        x->id = (int32_t)id;
        x->len = json_object_get_string_len(c);
        x->content = malloc((size_t)x->len + 1);
        if (!x->content) FAIL(L, "out of memory");
        memcpy(x->content, json_object_get_string(c), (size_t)x->len + 1);
        if (L->nul) x->len = unsentinel(L->nul, x->content, x->len);
        t->n_added = i + 1;
        int special;
        if (get_bool(L, e, "single_word", path, 0, &x->single_word) || get_bool(L, e, "lstrip", path, 0, &x->lstrip) ||
            get_bool(L, e, "rstrip", path, 0, &x->rstrip) || get_bool(L, e, "special", path, 0, &special))
            return -1;
        x->special = special;
        if (get_bool(L, e, "normalized", path, !special, &x->normalized)) return -1;
    }
    return 0;
}

static int load_trunc_pad(lctx *L, json_object *root, kn_tokenizer *t) {
    json_object *tr = field(root, "truncation"), *pd = field(root, "padding");
    if (!is_null(tr)) {
        int64_t ml, st;
        char *s = NULL, *dir = NULL;
        if (get_int(L, tr, "max_length", "truncation", 512, &ml) || get_int(L, tr, "stride", "truncation", 0, &st) ||
            get_str(L, tr, "strategy", "truncation", "LongestFirst", &s) ||
            get_str(L, tr, "direction", "truncation", "Right", &dir)) {
            free(s);
            free(dir);
            return -1;
        }
        t->trunc_on = 1;
        t->trunc_max = (int32_t)ml;
        t->trunc_stride = (int)st;
        t->trunc_strategy = !strcmp(s, "OnlyFirst") ? TRUNC_ONLY_FIRST
            : !strcmp(s, "OnlySecond")              ? TRUNC_ONLY_SECOND
                                                    : TRUNC_LONGEST_FIRST;
        t->trunc_left = !strcmp(dir, "Left");
        free(s);
        free(dir);
    }
    if (!is_null(pd)) {
        json_object *strat = field(pd, "strategy");
        t->pad = PAD_LONGEST;
        if (strat && json_object_is_type(strat, json_type_object) && field(strat, "Fixed")) {
            t->pad = PAD_FIXED;
            t->pad_len = (int32_t)json_object_get_int64(field(strat, "Fixed"));
        }
        int64_t mul, pid, ptid;
        char *dir = NULL;
        json_object *m = field(pd, "pad_to_multiple_of");
        mul = is_null(m) ? 0 : json_object_get_int64(m);
        if (get_int(L, pd, "pad_id", "padding", 0, &pid) || get_int(L, pd, "pad_type_id", "padding", 0, &ptid) ||
            get_str(L, pd, "pad_token", "padding", "[PAD]", &t->pad_token) ||
            get_str(L, pd, "direction", "padding", "Right", &dir)) {
            free(dir);
            return -1;
        }
        t->pad_multiple = (int32_t)mul;
        t->pad_id = (int32_t)pid;
        t->pad_type_id = (int32_t)ptid;
        t->pad_left = !strcmp(dir, "Left");
        free(dir);
    }
    return 0;
}

int tk_tokenizer_finish(kn_tokenizer *t, char *err, size_t err_len);

/* Adds one special token named by the transformers config files unless an added token with
 * that content exists: it keeps its model id when the vocabulary has it, else it gets the next
 * id past the vocabulary and the added tokens (AddedVocabulary::add_tokens). v is a string or
 * an AddedToken object {"content", "lstrip", "rstrip", "single_word", "normalized", "special"}. */
static int add_config_token(lctx *L, kn_tokenizer *t, json_object *v, const char *path) {
    json_object *c = v;
    int special = 1, lstrip = 0, rstrip = 0, single_word = 0, normalized = 0;
    if (json_object_is_type(v, json_type_object)) {
        c = field(v, "content");
        if (!c || !json_object_is_type(c, json_type_string)) FAIL(L, "%s.content: missing or not a string", path);
        if (get_bool(L, v, "special", path, 1, &special) || get_bool(L, v, "lstrip", path, 0, &lstrip) ||
            get_bool(L, v, "rstrip", path, 0, &rstrip) || get_bool(L, v, "single_word", path, 0, &single_word) ||
            get_bool(L, v, "normalized", path, !special, &normalized))
            return -1;
    } else if (!json_object_is_type(v, json_type_string)) FAIL(L, "%s: expected a string or an object", path);
    const char *content = json_object_get_string(c);
    int32_t len = json_object_get_string_len(c);
    if (len == 0) return 0;
    int32_t next = t->model.n_vocab;
    for (int i = 0; i < t->n_added; i++) {
        if (t->added[i].len == len && !memcmp(t->added[i].content, content, (size_t)len)) return 0;
        if (t->added[i].id >= next) next = t->added[i].id + 1;
    }
    int32_t id = tk_strmap_get(&t->model.vocab, content, (uint32_t)len);
    if (id < 0) id = next;
    tk_added *na = realloc(t->added, sizeof *na * (size_t)(t->n_added + 2));
    if (!na) FAIL(L, "out of memory");
    t->added = na;
    tk_added *x = &t->added[t->n_added];
    memset(x, 0, sizeof *x);
    x->content = malloc((size_t)len + 1);
    if (!x->content) FAIL(L, "out of memory");
    memcpy(x->content, content, (size_t)len + 1);
    x->len = len;
    x->id = id;
    x->special = special;
    x->lstrip = lstrip;
    x->rstrip = rstrip;
    x->single_word = single_word;
    x->normalized = normalized;
    t->n_added++;
    return 0;
}

typedef struct {
    int64_t id;
    json_object *tok;
} cfg_token;

static int check_utf8_tree(json_object *o, char *path, size_t cap, char *err, size_t err_len);

/* What transformers' from_pretrained reads from a folder that changes encoding: the added
 * tokens of tokenizer_config.json's added_tokens_decoder, then the special tokens (bos, eos,
 * unk, sep, pad, cls, mask, then additional_special_tokens), special_tokens_map.json taking
 * precedence over tokenizer_config.json, each registered as a special added token in that
 * order. model_max_length is not applied: transformers truncates only when asked to. */
static int load_folder_configs(lctx *L, kn_tokenizer *t, const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    json_object *cfg = NULL, *map = NULL, *v;
    struct stat st;
    if (!stat(p, &st) && !(cfg = json_object_from_file(p))) FAIL(L, "%s: malformed JSON", p);
    snprintf(p, sizeof p, "%s/special_tokens_map.json", dir);
    if (!stat(p, &st) && !(map = json_object_from_file(p))) {
        if (cfg) json_object_put(cfg);
        FAIL(L, "%s: malformed JSON", p);
    }
    int rc = 0;
    for (int k = 0; k < 2 && !rc; k++) {
        json_object *o = k ? map : cfg;
        char path[8192] = "", e[1024];
        if (o && check_utf8_tree(o, path, sizeof path, e, sizeof e)) {
            tk_errf(L->err, L->len, "%s/%s: %s", dir, k ? "special_tokens_map.json" : "tokenizer_config.json", e);
            rc = -1;
        }
    }
    if (rc) {
        if (cfg) json_object_put(cfg);
        if (map) json_object_put(map);
        return rc;
    }
    if ((v = field(cfg, "added_tokens_decoder")) && json_object_is_type(v, json_type_object)) {
        /* keyed by id: add them in id order */
        int n = json_object_object_length(v), k = 0;
        cfg_token *ord = calloc((size_t)n + 1, sizeof *ord);
        if (!ord) {
            if (cfg) json_object_put(cfg);
            if (map) json_object_put(map);
            FAIL(L, "out of memory");
        }
        json_object_object_foreach(v, key, val) {
            ord[k].id = strtoll(key, NULL, 10);
            ord[k].tok = val;
            k++;
        }
        for (int i = 1; i < k; i++)
            for (int j = i; j > 0 && ord[j - 1].id > ord[j].id; j--) {
                cfg_token x = ord[j];
                ord[j] = ord[j - 1];
                ord[j - 1] = x;
            }
        for (int i = 0; !rc && i < k; i++) {
            char q[96];
            snprintf(q, sizeof q, "tokenizer_config.json added_tokens_decoder[%lld]", (long long)ord[i].id);
            rc = add_config_token(L, t, ord[i].tok, q);
        }
        free(ord);
    }
    static const char *const names[] = {"bos_token",           "eos_token", "unk_token",  "sep_token",
                                        "pad_token",           "cls_token", "mask_token", "additional_special_tokens",
                                        "extra_special_tokens"};
    for (int i = 0; !rc && i < 9; i++) {
        json_object *src = map, *val = field(map, names[i]);
        if (is_null(val)) {
            src = cfg;
            val = field(cfg, names[i]);
        }
        if (is_null(val)) continue;
        char q[96];
        snprintf(q, sizeof q, "%s %s", src == map ? "special_tokens_map.json" : "tokenizer_config.json", names[i]);
        if (json_object_is_type(val, json_type_array)) {
            for (size_t k = 0; !rc && k < json_object_array_length(val); k++)
                rc = add_config_token(L, t, json_object_array_get_idx(val, k), q);
        } else if (i < 7) rc = add_config_token(L, t, val, q);
    }
    if (cfg) json_object_put(cfg);
    if (map) json_object_put(map);
    return rc;
}

/* Every key and string of a JSON tree must be valid UTF-8: the patterns go to PCRE2 and the
 * tokens into tables matched against valid text. The error names the field (path "a.b[2].c"). */
static int check_utf8_tree(json_object *o, char *path, size_t cap, char *err, size_t err_len) {
    size_t plen = strlen(path), bad;
    switch (json_object_get_type(o)) {
    case json_type_string:
        bad = tk_utf8_invalid_at(json_object_get_string(o), (size_t)json_object_get_string_len(o));
        if (bad != (size_t)-1) {
            tk_errf(err, err_len, "%s: invalid UTF-8 at byte %zu of the string", plen ? path : "(top level)", bad);
            return -1;
        }
        return 0;
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(o); i++) {
            snprintf(path + plen, cap - plen, "[%zu]", i);
            if (check_utf8_tree(json_object_array_get_idx(o, i), path, cap, err, err_len)) return -1;
        }
        path[plen] = 0;
        return 0;
    case json_type_object: {
        size_t k = 0;
        json_object_object_foreach(o, key, val) {
            bad = tk_utf8_invalid_at(key, strlen(key));
            if (bad != (size_t)-1) {
                tk_errf(err, err_len, "%s: invalid UTF-8 at byte %zu of key #%zu", plen ? path : "(top level)", bad, k);
                return -1;
            }
            snprintf(path + plen, cap - plen, "%s%.200s", plen ? "." : "", key);
            if (check_utf8_tree(val, path, cap, err, err_len)) return -1;
            path[plen] = 0;
            k++;
        }
        return 0;
    }
    default: return 0;
    }
}

static kn_tokenizer *from_json(json_object *root, uint32_t nul, const char *dir, char *err, size_t err_len) {
    lctx L = {err, err_len, nul};
    if (!json_object_is_type(root, json_type_object)) {
        tk_errf(err, err_len, "top level: expected an object");
        return NULL;
    }
    kn_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        tk_errf(err, err_len, "out of memory");
        return NULL;
    }
    json_object *v;
    if (load_model(&L, field(root, "model"), &t->model)) goto fail;
    if (!is_null(v = field(root, "normalizer")) && load_normalizer(&L, v, "normalizer", &t->normalizer)) goto fail;
    if (!is_null(v = field(root, "pre_tokenizer")) && load_pretok(&L, v, "pre_tokenizer", &t->pretok)) goto fail;
    if (!is_null(v = field(root, "post_processor")) && load_post(&L, v, "post_processor", &t->post)) goto fail;
    if (!is_null(v = field(root, "decoder")) && load_decoder(&L, v, "decoder", &t->decoder)) goto fail;
    if (load_added(&L, field(root, "added_tokens"), t) || load_trunc_pad(&L, root, t)) goto fail;
    if (dir && load_folder_configs(&L, t, dir)) goto fail;
    if (tk_tokenizer_finish(t, err, err_len)) goto fail;
    return t;
fail:
    kn_tokenizer_free(t);
    return NULL;
}

static int has_ci(const char *s, size_t len, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (!strncasecmp(s + i, needle, n)) return 1;
    return 0;
}

/* Copy of the JSON text with every \\u0000 escape replaced by a sentinel code point, or NULL
 * (with *nul = 0) when there is none. The sentinel is the highest code point of plane 16 that
 * the text holds neither raw nor escaped, so a real U+10FFFF in a vocabulary stays itself. */
static char *escape_nuls(const char *json, size_t len, size_t *out_len, uint32_t *nul) {
    *nul = 0;
    if (!memmem(json, len, "\\u0000", 6)) return NULL;
    uint32_t sent = 0;
    char esc[16];
    for (uint32_t c = 0x10FFFF; !sent && c >= 0x100000; c--) {
        char raw[4];
        tk_utf8_enc(c, raw);
        snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xD800 + ((c - 0x10000) >> 10), 0xDC00 + ((c - 0x10000) & 0x3FF));
        if (!memmem(json, len, raw, 4) && !has_ci(json, len, esc)) sent = c;
    }
    if (!sent) return NULL;
    char *o = malloc(len * 2 + 1);
    if (!o) return NULL;
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        if (json[i] == '\\' && i + 1 < len) {
            if (i + 5 < len && !memcmp(json + i + 1, "u0000", 5)) {
                memcpy(o + w, esc, 12);
                w += 12;
                i += 5;
                *nul = sent;
                continue;
            }
            o[w++] = json[i++];
        }
        o[w++] = json[i];
    }
    o[w] = 0;
    *out_len = w;
    return o;
}

/* dir: the folder the text came from, whose transformers config files apply, or NULL. */
static kn_tokenizer *load_json_text(const char *json, size_t len, const char *dir, char *err, size_t err_len) {
    uint32_t nul;
    size_t clen;
    char *copy = escape_nuls(json, len, &clen, &nul);
    if (copy) {
        json = copy;
        len = clen;
    }
    json_tokener *tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
    if (!tok) {
        free(copy);
        tk_errf(err, err_len, "out of memory");
        return NULL;
    }
    json_object *root = json_tokener_parse_ex(tok, json, (int)len);
    enum json_tokener_error je = json_tokener_get_error(tok);
    if (!root || je != json_tokener_success) {
        if (je == json_tokener_continue)
            tk_errf(err, err_len, "truncated JSON: input ends at byte %zu inside a value", len);
        else
            tk_errf(err, err_len, "malformed JSON at byte %zu: %s", json_tokener_get_parse_end(tok),
                    json_tokener_error_desc(je));
        if (root) json_object_put(root);
        json_tokener_free(tok);
        free(copy);
        return NULL;
    }
    json_tokener_free(tok);
    char path[8192] = "";
    if (check_utf8_tree(root, path, sizeof path, err, err_len)) {
        json_object_put(root);
        free(copy);
        return NULL;
    }
    kn_tokenizer *t = from_json(root, nul, dir, err, err_len);
    json_object_put(root);
    free(copy);
    return t;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 > cap) {
            cap = (cap + 65536) * 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

/* An old BERT folder: vocab.txt (one token per line) with the BERT pipeline around it. */
static kn_tokenizer *from_vocab_txt(const char *dir, char *err, size_t err_len) {
    char p[4096];
    size_t len;
    snprintf(p, sizeof p, "%s/vocab.txt", dir);
    char *txt = read_file(p, &len);
    if (!txt) {
        tk_errf(err, err_len, "%s: cannot read (no tokenizer.json in %s either)", p, dir);
        return NULL;
    }
    int lower = 1;
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    json_object *cfg = json_object_from_file(p), *v;
    if (cfg && (v = field(cfg, "do_lower_case")) && json_object_is_type(v, json_type_boolean))
        lower = json_object_get_boolean(v);
    if (cfg) json_object_put(cfg);
    json_object *root = json_object_new_object(), *model = json_object_new_object(), *vocab = json_object_new_object();
    int32_t id = 0;
    for (char *line = txt, *nl; line < txt + len; line = nl + 1) {
        nl = memchr(line, '\n', (size_t)(txt + len - line));
        if (!nl) nl = txt + len;
        char *e = nl;
        if (e > line && e[-1] == '\r') e--;
        char save = *e;
        *e = 0;
        if (!field(vocab, line)) json_object_object_add(vocab, line, json_object_new_int(id));
        id++;
        *e = save;
    }
    free(txt);
    json_object_object_add(model, "type", json_object_new_string("WordPiece"));
    json_object_object_add(model, "vocab", vocab);
    json_object_object_add(root, "model", model);
    json_object *norm = json_object_new_object();
    json_object_object_add(norm, "type", json_object_new_string("BertNormalizer"));
    json_object_object_add(norm, "lowercase", json_object_new_boolean(lower));
    json_object_object_add(root, "normalizer", norm);
    json_object *pre = json_object_new_object();
    json_object_object_add(pre, "type", json_object_new_string("BertPreTokenizer"));
    json_object_object_add(root, "pre_tokenizer", pre);
    json_object *dec = json_object_new_object();
    json_object_object_add(dec, "type", json_object_new_string("WordPiece"));
    json_object_object_add(root, "decoder", dec);
    json_object *cls = field(vocab, "[CLS]"), *sep = field(vocab, "[SEP]");
    if (cls && sep) {
        json_object *post = json_object_new_object(), *c = json_object_new_array(), *s = json_object_new_array();
        json_object_array_add(c, json_object_new_string("[CLS]"));
        json_object_array_add(c, json_object_get(cls));
        json_object_array_add(s, json_object_new_string("[SEP]"));
        json_object_array_add(s, json_object_get(sep));
        json_object_object_add(post, "type", json_object_new_string("BertProcessing"));
        json_object_object_add(post, "cls", c);
        json_object_object_add(post, "sep", s);
        json_object_object_add(root, "post_processor", post);
    }
    json_object *added = json_object_new_array();
    static const char *const specials[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (int i = 0; i < 5; i++) {
        json_object *x = field(vocab, specials[i]);
        if (!x) continue;
        json_object *a = json_object_new_object();
        json_object_object_add(a, "id", json_object_get(x));
        json_object_object_add(a, "content", json_object_new_string(specials[i]));
        json_object_object_add(a, "special", json_object_new_boolean(1));
        json_object_array_add(added, a);
    }
    json_object_object_add(root, "added_tokens", added);
    kn_tokenizer *t = from_json(root, 0, dir, err, err_len);
    json_object_put(root);
    return t;
}

kn_tokenizer *kn_tokenizer_load_json(const char *json, size_t len, char *err, size_t err_len) {
    return load_json_text(json, len, NULL, err, err_len);
}

/* A folder is read the way transformers' from_pretrained reads it (tokenizer.json plus its
 * config files); a tokenizer.json file alone the way the package's Tokenizer.from_file does. */
kn_tokenizer *kn_tokenizer_load(const char *path, char *err, size_t err_len) {
    struct stat st;
    char p[4096];
    if (stat(path, &st)) {
        tk_errf(err, err_len, "%s: no such file or folder", path);
        return NULL;
    }
    const char *dir = NULL;
    if (S_ISDIR(st.st_mode)) {
        snprintf(p, sizeof p, "%s/tokenizer.json", path);
        if (stat(p, &st)) return from_vocab_txt(path, err, err_len);
        dir = path;
        path = p;
    }
    size_t len;
    char *json = read_file(path, &len);
    if (!json) {
        tk_errf(err, err_len, "%s: cannot read", path);
        return NULL;
    }
    char e[1024];
    kn_tokenizer *t = load_json_text(json, len, dir, e, sizeof e);
    free(json);
    if (!t) tk_errf(err, err_len, "%s: %s", path, e);
    return t;
}
