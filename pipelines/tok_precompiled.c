/* The Precompiled normalizer of SentencePiece conversions (T5, XLM-R, ...): a darts-clone
 * double-array trie mapping byte sequences to replacement strings, applied per extended
 * grapheme cluster with the quirks Hugging Face copied from SentencePiece (whole cluster first
 * when it is shorter than 6 bytes, otherwise character by character). */
#include "pipelines/tok_internal.h"
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* Blob layout: u32 trie size in bytes, the trie units, then NUL-separated replacements. */
static int charsmap_parts(const tk_normalizer *n, const uint8_t **trie, uint32_t *nunits, const char **norm,
                          size_t *norm_len) {
    if (n->charsmap_len < 4) return -1;
    const uint8_t *b = n->charsmap;
    uint32_t sz = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
    if ((size_t)sz + 4 > n->charsmap_len || sz % 4) return -1;
    *trie = b + 4;
    *nunits = sz / 4;
    *norm = (const char *)b + 4 + sz;
    *norm_len = n->charsmap_len - 4 - sz;
    return 0;
}

static uint32_t unit_at(const uint8_t *t, uint32_t i) {
    const uint8_t *p = t + 4 * (size_t)i;
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* The first (shortest) prefix of key found in the trie, as SentencePiece uses it. */
static const char *transform(const tk_normalizer *n, const char *key, int32_t len, int32_t *out_len) {
    const uint8_t *trie;
    uint32_t nu;
    const char *norm;
    size_t nl;
    if (charsmap_parts(n, &trie, &nu, &norm, &nl) || nu == 0) return NULL;
    uint32_t unit = unit_at(trie, 0);
    size_t pos = (unit >> 10) << ((unit & (1u << 9)) >> 6);
    for (int32_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)key[i];
        if (!c) break;
        pos ^= c;
        if (pos >= nu) return NULL;
        unit = unit_at(trie, (uint32_t)pos);
        if ((unit & ((1u << 31) | 0xFF)) != c) return NULL;
        pos ^= (unit >> 10) << ((unit & (1u << 9)) >> 6);
        if (pos >= nu) return NULL;
        if ((unit >> 8) & 1) {
            size_t v = unit_at(trie, (uint32_t)pos) & ((1u << 31) - 1);
            if (v >= nl) return NULL;
            size_t e = v;
            while (e < nl && norm[e]) e++;
            *out_len = (int32_t)(e - v);
            return norm + v;
        }
    }
    return NULL;
}

/* One character of the rewritten text with Hugging Face's change code: > 0 inserted (it takes
 * the alignment of the byte before the read position and consumes nothing), 0 replaces the
 * next old character, -N replaces it and drops the N after it. */
typedef struct {
    uint32_t cp;
    int32_t change;
} pc_change;

/* Queues the characters of replacement r for a chunk of nold old characters the way the
 * package does: all replace (0); when r is longer, its last extra characters are insertions
 * (1); when shorter, the last queued character, possibly one of an earlier chunk, also drops
 * the surplus. A chunk removed at the very start has nothing to attach to, so the read position
 * lags one character behind from there on, shifting later offsets; the package does the same. */
static int queue_norm(tk_arena *a, pc_change **v, int32_t *n, int32_t *cap, const char *r, int32_t rl, int32_t nold) {
    int32_t nnew = 0;
    for (int32_t i = 0; i < rl;) {
        uint32_t c;
        i += tk_utf8_dec(r, rl, i, &c);
        nnew++;
    }
    if (*n + nnew > *cap) {
        int32_t nc = (*n + nnew) * 2 + 16;
        pc_change *nv = tk_alloc(a, sizeof(pc_change) * (size_t)nc);
        if (!nv) return -1;
        if (*n) memcpy(nv, *v, sizeof(pc_change) * (size_t)*n);
        *v = nv;
        *cap = nc;
    }
    for (int32_t i = 0; i < rl;) {
        uint32_t c;
        i += tk_utf8_dec(r, rl, i, &c);
        (*v)[*n].cp = c;
        (*v)[*n].change = 0;
        (*n)++;
    }
    int32_t diff = nnew - nold;
    if (diff > 0)
        for (int32_t k = *n - diff; k < *n; k++) (*v)[k].change = 1;
    else if (diff < 0 && *n > 0) (*v)[*n - 1].change += diff;
    return 0;
}

/* NormalizedString::transform over the whole string: walks the old characters with a read
 * position, giving each new character the alignment the change codes select. An insertion at
 * the very start gets the empty range at the piece's original start (the package's (0, 0)
 * relative to the piece); Precompiled comes first in every converted pipeline, so a0[0] is
 * that start. */
static int apply_changes(tk_arena *a, const tk_nstr *s, const pc_change *v, int32_t n, tk_nstr *o) {
    int32_t pos = 0, base = s->len ? s->a0[0] : 0;
    for (int32_t i = 0; i < n; i++) {
        int32_t a0, a1;
        if (v[i].change > 0) {
            if (pos < 1) a0 = a1 = base;
            else {
                a0 = s->a0[pos - 1];
                a1 = s->a1[pos - 1];
            }
        } else {
            /* the codes never consume more than the text holds; the clamp keeps reads in bounds */
            int32_t at = pos < s->len ? pos : s->len - 1;
            a0 = s->a0[at];
            a1 = s->a1[at];
            uint32_t c;
            if (pos < s->len) pos += tk_utf8_dec(s->s, s->len, pos, &c);
            for (int32_t k = 0; k < -v[i].change && pos < s->len; k++) pos += tk_utf8_dec(s->s, s->len, pos, &c);
        }
        if (tk_ns_push(a, o, v[i].cp, a0, a1)) return -1;
    }
    return 0;
}

int tk_precompiled_normalize(const tk_normalizer *n, tk_arena *a, tk_nstr *s) {
    if (!s->len) return 0;
    int32_t *starts = tk_alloc(a, sizeof(int32_t) * (size_t)(s->len + 1));
    int32_t nv = 0, capv = s->len + 16;
    pc_change *v = tk_alloc(a, sizeof(pc_change) * (size_t)capv);
    if (!starts || !v) return -1;
    int modified = 0;
    for (int32_t g = 0; g < s->len;) {
        /* one extended grapheme cluster [g, e) with its character starts */
        int nst = 0;
        int32_t e = g;
        utf8proc_int32_t state = 0;
        uint32_t prev = 0;
        while (e < s->len) {
            uint32_t c;
            int k = tk_utf8_dec(s->s, s->len, e, &c);
            if (nst > 0 && utf8proc_grapheme_break_stateful((utf8proc_int32_t)prev, (utf8proc_int32_t)c, &state)) break;
            starts[nst++] = e;
            prev = c;
            e += k;
        }
        int32_t rl;
        const char *r = e - g < 6 ? transform(n, s->s + g, e - g, &rl) : NULL;
        if (r) {
            modified = 1;
            if (queue_norm(a, &v, &nv, &capv, r, rl, nst)) return -1;
        } else {
            for (int i = 0; i < nst; i++) {
                int32_t cs = starts[i], ce = i + 1 < nst ? starts[i + 1] : e;
                const char *q = transform(n, s->s + cs, ce - cs, &rl);
                if (q) modified = 1;
                if (queue_norm(a, &v, &nv, &capv, q ? q : s->s + cs, q ? rl : ce - cs, 1)) return -1;
            }
        }
        g = e;
    }
    if (!modified) return 0;
    tk_nstr o;
    tk_ns_init(&o);
    if (tk_ns_reserve(a, &o, s->len + 8) || apply_changes(a, s, v, nv, &o)) return -1;
    o.fixed_id = s->fixed_id;
    *s = o;
    return 0;
}
