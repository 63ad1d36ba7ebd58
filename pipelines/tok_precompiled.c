/* The Precompiled normalizer of SentencePiece conversions (T5, XLM-R, ...): a darts-clone
 * double-array trie mapping byte sequences to replacement strings, applied per extended
 * grapheme cluster with the quirks Hugging Face copied from SentencePiece (whole cluster first
 * when it is shorter than 6 bytes, otherwise character by character). */
#include "tok_internal.h"
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* Blob layout: u32 trie size in bytes, the trie units, then NUL-separated replacements. */
static int charsmap_parts(const tk_normalizer *n, const uint8_t **trie, uint32_t *nunits, const char **norm, size_t *norm_len)
{
    if (n->charsmap_len < 4) return -1;
    const uint8_t *b = n->charsmap;
    uint32_t sz = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
    if ((size_t)sz + 4 > n->charsmap_len || sz % 4) return -1;
    *trie = b + 4; *nunits = sz / 4;
    *norm = (const char *)b + 4 + sz; *norm_len = n->charsmap_len - 4 - sz;
    return 0;
}

static uint32_t unit_at(const uint8_t *t, uint32_t i)
{
    const uint8_t *p = t + 4 * (size_t)i;
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* The first (shortest) prefix of key found in the trie, as SentencePiece uses it. */
static const char *transform(const tk_normalizer *n, const char *key, int32_t len, int32_t *out_len)
{
    const uint8_t *trie; uint32_t nu; const char *norm; size_t nl;
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

/* Emits replacement r for the old characters [old, old + nold), aligning new characters to
 * the old ones in order and any extra ones to the last old character (transform's rules). */
static int emit(tk_arena *a, tk_nstr *o, const tk_nstr *s, const int32_t *old, int nold, const char *r, int32_t rl)
{
    int k = 0;
    for (int32_t i = 0; i < rl;) {
        uint32_t c; int nb = tk_utf8_dec(r, rl, i, &c);
        int j = k < nold ? k : nold - 1;
        int32_t st = old[j], en = j + 1 < nold ? old[j + 1] : -1;
        int32_t a0 = s->a0[st], a1 = en >= 0 ? s->a1[en - 1] : 0;
        if (en < 0) {   /* last old character: its end */
            int32_t e = st;
            uint32_t x; e += tk_utf8_dec(s->s, s->len, st, &x);
            a1 = s->a1[e - 1];
        }
        if (tk_ns_push(a, o, c, a0, a1)) return -1;
        k++;
        i += nb;
    }
    return 0;
}

int tk_precompiled_normalize(const tk_normalizer *n, tk_arena *a, tk_nstr *s)
{
    if (!s->len) return 0;
    tk_nstr o; tk_ns_init(&o);
    if (tk_ns_reserve(a, &o, s->len + 8)) return -1;
    int32_t *starts = tk_alloc(a, sizeof(int32_t) * (size_t)(s->len + 1));
    if (!starts) return -1;
    int modified = 0;
    for (int32_t g = 0; g < s->len;) {
        /* one extended grapheme cluster [g, e) with its character starts */
        int nst = 0; int32_t e = g;
        utf8proc_int32_t state = 0;
        uint32_t prev = 0;
        while (e < s->len) {
            uint32_t c; int k = tk_utf8_dec(s->s, s->len, e, &c);
            if (nst > 0 && utf8proc_grapheme_break_stateful((utf8proc_int32_t)prev, (utf8proc_int32_t)c, &state)) break;
            starts[nst++] = e;
            prev = c;
            e += k;
        }
        int32_t rl;
        const char *r = e - g < 6 ? transform(n, s->s + g, e - g, &rl) : NULL;
        if (r) {
            modified = 1;
            if (emit(a, &o, s, starts, nst, r, rl)) return -1;
        } else {
            for (int i = 0; i < nst; i++) {
                int32_t cs = starts[i], ce = i + 1 < nst ? starts[i + 1] : e;
                const char *q = transform(n, s->s + cs, ce - cs, &rl);
                if (q) { modified = 1; if (emit(a, &o, s, &starts[i], 1, q, rl)) return -1; }
                else if (tk_ns_reserve(a, &o, ce - cs)) return -1;
                else {
                    memcpy(o.s + o.len, s->s + cs, (size_t)(ce - cs));
                    memcpy(o.a0 + o.len, s->a0 + cs, sizeof(int32_t) * (size_t)(ce - cs));
                    memcpy(o.a1 + o.len, s->a1 + cs, sizeof(int32_t) * (size_t)(ce - cs));
                    o.len += ce - cs;
                }
            }
        }
        g = e;
    }
    if (!modified) return 0;
    o.fixed_id = s->fixed_id;
    *s = o;
    return 0;
}
