/* Shared helpers of the tokenizer: per-call arena, the aligned normalized string, UTF-8 coding,
 * the Unicode classes Hugging Face's Rust code relies on, hash maps and the byte trie. */
#include "pipelines/tok_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- arena ---- */
void *tk_alloc(tk_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    tk_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > (1u << 16) ? n : (1u << 16);
        if (c && c->cap * 2 > cap && c->cap < (64u << 20)) cap = c->cap * 2 > n ? c->cap * 2 : n;
        tk_chunk *nc = malloc(sizeof(tk_chunk) + 16 + cap);
        if (!nc) {
            a->oom = 1;
            return NULL;
        }
        nc->next = c;
        nc->used = 0;
        nc->cap = cap;
        a->head = c = nc;
    }
    char *base = (char *)(((uintptr_t)(c + 1) + 15) & ~(uintptr_t)15);
    void *p = base + c->used;
    c->used += n;
    return p;
}

void tk_arena_free(tk_arena *a) {
    tk_chunk *c = a->head;
    while (c) {
        tk_chunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
}

/* ---- normalized string ---- */
void tk_ns_init(tk_nstr *n) {
    memset(n, 0, sizeof *n);
    n->fixed_id = -1;
}

int tk_ns_reserve(tk_arena *a, tk_nstr *n, int32_t extra) {
    if (n->len + extra <= n->cap) return 0;
    int32_t cap = n->cap ? n->cap * 2 : 32;
    while (cap < n->len + extra) cap *= 2;
    char *s = tk_alloc(a, (size_t)cap + 1);
    int32_t *a0 = tk_alloc(a, sizeof(int32_t) * (size_t)cap);
    int32_t *a1 = tk_alloc(a, sizeof(int32_t) * (size_t)cap);
    if (!s || !a0 || !a1) return -1;
    if (n->len) {
        memcpy(s, n->s, (size_t)n->len);
        memcpy(a0, n->a0, sizeof(int32_t) * (size_t)n->len);
        memcpy(a1, n->a1, sizeof(int32_t) * (size_t)n->len);
    }
    n->s = s;
    n->a0 = a0;
    n->a1 = a1;
    n->cap = cap;
    return 0;
}

int tk_ns_push(tk_arena *a, tk_nstr *n, uint32_t cp, int32_t o0, int32_t o1) {
    if (n->len + 4 > n->cap && tk_ns_reserve(a, n, 4)) return -1;
    int k = tk_utf8_enc(cp, n->s + n->len);
    for (int i = 0; i < k; i++) {
        n->a0[n->len + i] = o0;
        n->a1[n->len + i] = o1;
    }
    n->len += k;
    return 0;
}

int tk_ns_push_bytes(tk_arena *a, tk_nstr *n, const char *s, int32_t len, int32_t o0, int32_t o1) {
    if (tk_ns_reserve(a, n, len)) return -1;
    memcpy(n->s + n->len, s, (size_t)len);
    for (int32_t i = 0; i < len; i++) {
        n->a0[n->len + i] = o0;
        n->a1[n->len + i] = o1;
    }
    n->len += len;
    return 0;
}

int tk_ns_slice(tk_arena *a, const tk_nstr *src, int32_t s, int32_t e, tk_nstr *out) {
    tk_ns_init(out);
    /* slices share the parent's storage: every stage writes new buffers, never in place */
    out->s = src->s + s;
    out->a0 = src->a0 + s;
    out->a1 = src->a1 + s;
    out->len = e - s;
    out->cap = e - s;
    (void)a;
    return 0;
}

/* ---- UTF-8 ---- */
int tk_utf8_dec(const char *s, int32_t len, int32_t i, uint32_t *cp) {
    const uint8_t *u = (const uint8_t *)s + i;
    if (u[0] < 0x80) {
        *cp = u[0];
        return 1;
    }
    if ((u[0] & 0xE0) == 0xC0 && i + 1 < len) {
        *cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
        return 2;
    }
    if ((u[0] & 0xF0) == 0xE0 && i + 2 < len) {
        *cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
        return 3;
    }
    if (i + 3 < len) {
        *cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) | ((uint32_t)(u[2] & 0x3F) << 6) |
            (u[3] & 0x3F);
        return 4;
    }
    *cp = 0xFFFD;
    return 1;
}

int tk_utf8_enc(uint32_t c, char *o) {
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* Length of the valid sequence at s[i], or -(bytes of the maximal invalid subpart). */
static int utf8_check(const uint8_t *s, size_t len, size_t i) {
    uint8_t b = s[i];
    if (b < 0x80) return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) need = 1;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else return -1;
    for (int k = 1; k <= need; k++) {
        if (i + k >= len) return -k;
        uint8_t c = s[i + k];
        if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) return -k;
    }
    return need + 1;
}

size_t tk_utf8_invalid_at(const char *s, size_t len) {
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < len;) {
        int k = utf8_check(u, len, i);
        if (k < 0) return i;
        i += (size_t)k;
    }
    return (size_t)-1;
}

char *tk_utf8_lossy(const char *s, size_t len, size_t *out_len, size_t *n_replaced) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, bad = 0;
    while (i < len) {
        int k = utf8_check(u, len, i);
        if (k < 0) {
            bad++;
            i += (size_t)-k;
        } else i += (size_t)k;
    }
    if (n_replaced) *n_replaced = bad;
    char *o = malloc(len + bad * 3 + 1);
    if (!o) return NULL;
    if (!bad) {
        memcpy(o, s, len);
        o[len] = 0;
        *out_len = len;
        return o;
    }
    size_t w = 0;
    i = 0;
    while (i < len) {
        int k = utf8_check(u, len, i);
        if (k < 0) {
            w += (size_t)tk_utf8_enc(0xFFFD, o + w);
            i += (size_t)-k;
        } else {
            memcpy(o + w, s + i, (size_t)k);
            w += (size_t)k;
            i += (size_t)k;
        }
    }
    o[w] = 0;
    *out_len = w;
    return o;
}

/* ---- Unicode classes ---- */
int tk_is_whitespace(uint32_t c) {
    if (c < 0x80) return c == ' ' || (c >= 9 && c <= 13);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
        c == 0x202F || c == 0x205F || c == 0x3000;
}

int tk_is_punct(uint32_t c) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

/* Characters whose General_Category changed after Unicode 8.0 or 9.0 (UnicodeData.txt of those
 * versions against 15.0's): the package's older tables still give them the old value. */
static int punct_in_8_only(uint32_t c) {
    return c == 0x166D   /* CANADIAN SYLLABICS CHI SIGN: Po in 8.0, So in 15.0 */
        || c == 0x111C9; /* SHARADA SANDHI MARK: Po in 8.0 and 9.0, Mn in 15.0 */
}

static int mn_in_8_only(uint32_t c) { return c == 0x1734; /* HANUNOO SIGN PAMUDPOD: Mn in 8.0, Mc in 15.0 */ }

static int not_mn_in_8(uint32_t c) {
    return c == 0x1885 || c == 0x1886 /* MONGOLIAN ALI GALI BALUDA, THREE BALUDA: Lo in 8.0 */
        || c == 0xA9BD                /* JAVANESE VOWEL SIGN KELUAN: Mc in 8.0 */
        || punct_in_8_only(c);
}

static int mark_in_9_only(uint32_t c) {
    return c == 0x1CF2 || c == 0x1CF3; /* VEDIC SIGN ARDHAVISARGA, ROTATED ARDHAVISARGA: Mc in 9.0, Lo in 15.0 */
}

/* The package's BERT and Punctuation pre-tokenizers: ASCII punctuation (which takes in $+<=>^`|~,
 * symbols to Unicode) or P* in Unicode 8.0, so later punctuation stays inside words. */
int tk_is_bert_punct(uint32_t c) {
    if (c < 0x80) return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
    if (punct_in_8_only(c)) return 1;
    return tk_is_punct(c) && !tk_assigned_after_8(c);
}

/* BertNormalizer's clean_text removes `is_other` of `unicode_categories`: Cc, Cf and Co of
 * Unicode 8.0. Not Cn: a code point unassigned then (or still) is kept and becomes a token. */
int tk_is_control(uint32_t c) {
    if (c == '\t' || c == '\n' || c == '\r') return 0;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CO) &&
        !tk_assigned_after_8(c);
}

int tk_is_chinese(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
        (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
        (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

int tk_is_numeric(uint32_t c) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

int tk_is_mn_8(uint32_t c) {
    if (mn_in_8_only(c)) return 1;
    return utf8proc_category((utf8proc_int32_t)c) == UTF8PROC_CATEGORY_MN && !tk_assigned_after_8(c) && !not_mn_in_8(c);
}

int tk_is_mark_9(uint32_t c) {
    if (mark_in_9_only(c)) return 1;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME) &&
        !tk_assigned_after_9(c) && c != 0x111C9 /* Po in 9.0 */;
}

/* ---- hashing ---- */
uint32_t tk_hash(const char *s, size_t len) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h ? h : 1;
}

static int strmap_grow(tk_strmap *m) {
    uint32_t cap = m->cap ? m->cap * 2 : 64;
    struct tk_sm_ent *e = calloc(cap, sizeof *e);
    if (!e) return -1;
    for (uint32_t i = 0; i < m->cap; i++) {
        if (!m->ents[i].hash) continue;
        uint32_t j = m->ents[i].hash & (cap - 1);
        while (e[j].hash) j = (j + 1) & (cap - 1);
        e[j] = m->ents[i];
    }
    free(m->ents);
    m->ents = e;
    m->cap = cap;
    return 0;
}

int tk_strmap_put(tk_strmap *m, const char *k, uint32_t len, int32_t val) {
    if ((m->n + 1) * 2 > m->cap && strmap_grow(m)) return -1;
    uint32_t h = tk_hash(k, len), j = h & (m->cap - 1);
    while (m->ents[j].hash) {
        struct tk_sm_ent *e = &m->ents[j];
        if (e->hash == h && e->len == len && !memcmp(e->k, k, len)) {
            e->val = val;
            return 0;
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->ents[j].k = k;
    m->ents[j].len = len;
    m->ents[j].hash = h;
    m->ents[j].val = val;
    m->n++;
    return 0;
}

int32_t tk_strmap_get(const tk_strmap *m, const char *k, uint32_t len) {
    if (!m->cap) return -1;
    uint32_t h = tk_hash(k, len), j = h & (m->cap - 1);
    while (m->ents[j].hash) {
        const struct tk_sm_ent *e = &m->ents[j];
        if (e->hash == h && e->len == len && !memcmp(e->k, k, len)) return e->val;
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

void tk_strmap_free(tk_strmap *m) {
    free(m->ents);
    memset(m, 0, sizeof *m);
}

static uint32_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

int tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id) {
    if ((m->n + 1) * 2 > m->cap) {
        uint32_t cap = m->cap ? m->cap * 2 : 1024;
        struct tk_pm_ent *e = malloc(cap * sizeof *e);
        if (!e) return -1;
        for (uint32_t i = 0; i < cap; i++) e[i].rank = -1;
        for (uint32_t i = 0; i < m->cap; i++) {
            if (m->ents[i].rank < 0) continue;
            uint32_t j = pair_hash(m->ents[i].key) & (cap - 1);
            while (e[j].rank >= 0) j = (j + 1) & (cap - 1);
            e[j] = m->ents[i];
        }
        free(m->ents);
        m->ents = e;
        m->cap = cap;
    }
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t j = pair_hash(key) & (m->cap - 1);
    while (m->ents[j].rank >= 0) {
        if (m->ents[j].key == key) return 0; /* HF keeps the first (lowest rank) merge */
        j = (j + 1) & (m->cap - 1);
    }
    m->ents[j].key = key;
    m->ents[j].rank = rank;
    m->ents[j].new_id = new_id;
    m->n++;
    return 0;
}

const struct tk_pm_ent *tk_pairmap_get(const tk_pairmap *m, int32_t a, int32_t b) {
    if (!m->cap) return NULL;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t j = pair_hash(key) & (m->cap - 1);
    while (m->ents[j].rank >= 0) {
        if (m->ents[j].key == key) return &m->ents[j];
        j = (j + 1) & (m->cap - 1);
    }
    return NULL;
}

void tk_pairmap_free(tk_pairmap *m) {
    free(m->ents);
    memset(m, 0, sizeof *m);
}

/* ---- trie: first-child / next-sibling lists, with a direct table at the root ---- */
static int32_t trie_new(tk_trie *t, uint8_t label) {
    if (t->n == t->cap) {
        int32_t cap = t->cap ? t->cap * 2 : 1024;
        int32_t *f = realloc(t->first, sizeof(int32_t) * (size_t)cap);
        if (!f) return -1;
        t->first = f;
        int32_t *nx = realloc(t->next, sizeof(int32_t) * (size_t)cap);
        if (!nx) return -1;
        t->next = nx;
        int32_t *v = realloc(t->val, sizeof(int32_t) * (size_t)cap);
        if (!v) return -1;
        t->val = v;
        uint8_t *l = realloc(t->label, (size_t)cap);
        if (!l) return -1;
        t->label = l;
        t->cap = cap;
    }
    int32_t i = t->n++;
    t->first[i] = -1;
    t->next[i] = -1;
    t->val[i] = -1;
    t->label[i] = label;
    return i;
}

int tk_trie_insert(tk_trie *t, const char *k, int32_t len, int32_t val) {
    if (len <= 0) return 0;
    if (t->n == 0)
        for (int i = 0; i < 256; i++) t->root_child[i] = -1;
    uint8_t b0 = (uint8_t)k[0];
    int32_t node = t->root_child[b0];
    if (node < 0) {
        node = trie_new(t, b0);
        if (node < 0) return -1;
        t->root_child[b0] = node;
    }
    for (int32_t i = 1; i < len; i++) {
        uint8_t b = (uint8_t)k[i];
        int32_t c = t->first[node];
        while (c >= 0 && t->label[c] != b) c = t->next[c];
        if (c < 0) {
            c = trie_new(t, b);
            if (c < 0) return -1;
            t->next[c] = t->first[node];
            t->first[node] = c;
        }
        node = c;
    }
    t->val[node] = val; /* the last duplicate wins, as in a HashMap */
    return 0;
}

void tk_trie_free(tk_trie *t) {
    free(t->first);
    free(t->next);
    free(t->val);
    free(t->label);
    memset(t, 0, sizeof *t);
}

/* ---- misc ---- */
void tk_errf(char *err, size_t err_len, const char *fmt, ...) {
    if (!err || !err_len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

pcre2_code *tk_regex_compile(const char *pat, size_t len, char *err, size_t err_len) {
    int ec;
    PCRE2_SIZE off;
    /* the pattern comes from a file: PCRE2 checks its UTF-8 (without the check, invalid bytes make
     * pcre2_compile read past the pattern) */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP, &ec, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        tk_errf(err, err_len, "bad regex /%.*s/ at %zu: %s", (int)len, pat, (size_t)off, (char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

/* GPT-2 maps the printable bytes to themselves and the other 68 (0-32, 127-160, 173) to 256 + k
 * in byte order. */
uint32_t tk_byte_to_cp(uint8_t b) {
    if (b <= 32) return 256u + b;
    if (b >= 127 && b <= 160) return 289u + (b - 127u);
    if (b == 173) return 323;
    return b;
}

int tk_cp_to_byte(uint32_t cp) {
    if (cp < 256) {
        if (cp <= 32 || (cp >= 127 && cp <= 160) || cp == 173) return -1;
        return (int)cp;
    }
    if (cp <= 288) return (int)(cp - 256);
    if (cp <= 322) return (int)(cp - 289 + 127);
    if (cp == 323) return 173;
    return -1;
}
