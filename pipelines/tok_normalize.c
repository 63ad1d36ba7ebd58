/* Normalizers: each rewrites the normalized string into fresh arena buffers, carrying for every
 * output byte the original range of the character it came from, with the alignment rules of
 * Hugging Face's NormalizedString (inserted characters take their neighbour's range, composed
 * characters keep their starter's, replacements take the last replaced character's). Unicode
 * normalization hands ranges out in order, as the package's transform does, rather than moving
 * them with the characters that canonical ordering moves. */
#include "pipelines/tok_internal.h"
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

typedef struct {
    uint32_t cp;
    int32_t a0, a1;
    int32_t chg; /* NormalizedString's change: +1 inserted, -n absorbs n following characters */
} ucp;

static uint32_t lower_cp(uint32_t c, uint32_t *second) {
    *second = 0;
    if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    if (c == 0x130) {
        *second = 0x307;
        return 'i';
    } /* Rust's full lowercase mapping */
    return (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
}

static int is_ascii(const tk_nstr *s) {
    for (int32_t i = 0; i < s->len; i++)
        if ((uint8_t)s->s[i] >= 0x80) return 0;
    return 1;
}

static int unicode_normalize(int kind, tk_arena *a, tk_nstr *s);
static int lowercase(tk_arena *a, tk_nstr *s);

static int bert_normalize(const tk_normalizer *n, tk_arena *a, tk_nstr *s) {
    tk_nstr o;
    tk_ns_init(&o);
    if (tk_ns_reserve(a, &o, s->len + 8)) return -1;
    for (int32_t i = 0; i < s->len;) {
        uint32_t c;
        int k = tk_utf8_dec(s->s, s->len, i, &c);
        int32_t o0 = s->a0[i], o1 = s->a1[i + k - 1];
        int32_t p0 = i ? s->a0[i - 1] : 0, p1 = i ? s->a1[i - 1] : 0;
        i += k;
        if (n->clean_text) {
            if (c == 0 || c == 0xFFFD || tk_is_control(c)) continue;
            if (c == '\t' || c == '\n' || c == '\r' || tk_is_whitespace(c)) c = ' ';
        }
        int chinese = n->chinese && tk_is_chinese(c);
        if (chinese && tk_ns_push(a, &o, ' ', p0, p1)) return -1;
        if (tk_ns_push(a, &o, c, o0, o1)) return -1;
        if (chinese && tk_ns_push(a, &o, ' ', o0, o1)) return -1;
    }
    o.fixed_id = s->fixed_id;
    *s = o;
    /* the package's order: NFD (Unicode 9.0 tables) over the whole string, so marks are put in
     * canonical order first, then Mn by its Unicode 8.0 category goes, then lowercase */
    if (n->strip_accents) {
        if (unicode_normalize(NRM_NFD, a, s)) return -1;
        tk_nstr f;
        tk_ns_init(&f);
        if (tk_ns_reserve(a, &f, s->len + 4)) return -1;
        for (int32_t i = 0; i < s->len;) {
            uint32_t c;
            int k = tk_utf8_dec(s->s, s->len, i, &c);
            int32_t o0 = s->a0[i], o1 = s->a1[i + k - 1];
            i += k;
            if (c >= 0x300 && tk_is_mn_8(c)) continue;
            if (tk_ns_push(a, &f, c, o0, o1)) return -1;
        }
        f.fixed_id = s->fixed_id;
        *s = f;
    }
    return n->lowercase ? lowercase(a, s) : 0;
}

static int to_ucp(tk_arena *a, const tk_nstr *s, ucp **out, int32_t *n) {
    ucp *v = tk_alloc(a, sizeof(ucp) * (size_t)(s->len + 1));
    if (!v) return -1;
    int32_t m = 0;
    for (int32_t i = 0; i < s->len;) {
        uint32_t c;
        int k = tk_utf8_dec(s->s, s->len, i, &c);
        v[m].cp = c;
        v[m].a0 = s->a0[i];
        v[m].a1 = s->a1[i + k - 1];
        m++;
        i += k;
    }
    *out = v;
    *n = m;
    return 0;
}

static int from_ucp(tk_arena *a, const ucp *v, int32_t n, tk_nstr *s) {
    tk_nstr o;
    tk_ns_init(&o);
    if (tk_ns_reserve(a, &o, n * 2 + 4)) return -1;
    for (int32_t i = 0; i < n; i++)
        if (tk_ns_push(a, &o, v[i].cp, v[i].a0, v[i].a1)) return -1;
    o.fixed_id = s->fixed_id;
    *s = o;
    return 0;
}

/* The package normalizes with Unicode 9.0 tables: a later character has combining class 0, no
 * decomposition and no composition there. */
static int ccc(uint32_t c) {
    return c < 0x300 || tk_assigned_after_9(c) ? 0 : utf8proc_get_property((utf8proc_int32_t)c)->combining_class;
}

/* Composes two code points, or returns 0 when they do not form a primary composite. */
static uint32_t compose_pair(uint32_t a, uint32_t b) {
    if (tk_assigned_after_9(a) || tk_assigned_after_9(b)) return 0;
    utf8proc_int32_t buf[2] = {(utf8proc_int32_t)a, (utf8proc_int32_t)b};
    utf8proc_ssize_t r = utf8proc_normalize_utf32(buf, 2, UTF8PROC_COMPOSE);
    /* utf8proc's bare COMPOSE also forms composition exclusions (U+2ADC, U+1D15E, ...), which
     * NFC never produces */
    if (r != 1 || utf8proc_get_property(buf[0])->comp_exclusion) return 0;
    return (uint32_t)buf[0];
}

static int unicode_normalize(int kind, tk_arena *a, tk_nstr *s) {
    if (is_ascii(s)) return 0;
    ucp *v;
    int32_t n;
    if (to_ucp(a, s, &v, &n)) return -1;
    int compat = kind == NRM_NFKC || kind == NRM_NFKD;
    int compose = kind == NRM_NFC || kind == NRM_NFKC;
    /* decompose every character, keeping its range for each piece */
    int32_t cap = n * 4 + 16, m = 0;
    ucp *d = tk_alloc(a, sizeof(ucp) * (size_t)cap);
    if (!d) return -1;
    for (int32_t i = 0; i < n; i++) {
        utf8proc_int32_t buf[32];
        int bc = 0;
        utf8proc_ssize_t r = v[i].cp < 0xA0 || tk_assigned_after_9(v[i].cp)
            ? 0
            : utf8proc_decompose_char((utf8proc_int32_t)v[i].cp, buf, 32,
                                      UTF8PROC_DECOMPOSE | (compat ? UTF8PROC_COMPAT : 0), &bc);
        if (r <= 0 || r > 32) {
            buf[0] = (utf8proc_int32_t)v[i].cp;
            r = 1;
        }
        if (m + r > cap) {
            int32_t nc = (m + (int32_t)r) * 2;
            ucp *nd = tk_alloc(a, sizeof(ucp) * (size_t)nc);
            if (!nd) return -1;
            memcpy(nd, d, sizeof(ucp) * (size_t)m);
            d = nd;
            cap = nc;
        }
        for (int j = 0; j < r; j++) {
            d[m].cp = (uint32_t)buf[j];
            d[m].chg = j ? 1 : 0;
            m++;
        }
    }
    /* canonical ordering: stable insertion sort of each run of non-starters by class */
    for (int32_t i = 1; i < m; i++) {
        int ci = ccc(d[i].cp);
        if (!ci) continue;
        int32_t j = i;
        ucp x = d[i];
        while (j > 0 && ccc(d[j - 1].cp) > ci) {
            d[j] = d[j - 1];
            j--;
        }
        d[j] = x;
    }
    if (compose && m > 1) {
        int32_t starter = ccc(d[0].cp) == 0 ? 0 : -1, w = 1;
        int last = starter == 0 ? 0 : 256;
        for (int32_t i = 1; i < m; i++) {
            uint32_t ch = d[i].cp;
            int cc = ccc(ch);
            uint32_t comp = 0;
            if (starter >= 0 && ch >= 0x300 && (last < cc || last == 0)) comp = compose_pair(d[starter].cp, ch);
            if (comp) {
                d[starter].cp = comp;
                d[starter].chg += d[i].chg - 1;
                continue;
            }
            if (cc == 0) starter = w;
            last = cc;
            d[w++] = d[i];
        }
        m = w;
    }
    /* The package's transform walks the input once: a character with change <= 0 takes the range
     * of the next input character and passes over -change more; an inserted one (change > 0)
     * takes the range of the last input character passed. So a character that canonical
     * ordering moved does not carry its own range along. */
    int32_t at = 0;
    for (int32_t i = 0; i < m; i++) {
        const ucp *src = d[i].chg > 0 ? &v[at > 0 ? at - 1 : 0] : &v[at < n ? at : n - 1];
        d[i].a0 = src->a0;
        d[i].a1 = src->a1;
        if (d[i].chg <= 0) at += 1 - d[i].chg;
    }
    return from_ucp(a, d, m, s);
}

static int lowercase(tk_arena *a, tk_nstr *s) {
    tk_nstr o;
    tk_ns_init(&o);
    if (tk_ns_reserve(a, &o, s->len + 4)) return -1;
    for (int32_t i = 0; i < s->len;) {
        uint32_t c, c2;
        int k = tk_utf8_dec(s->s, s->len, i, &c);
        int32_t o0 = s->a0[i], o1 = s->a1[i + k - 1];
        i += k;
        c = lower_cp(c, &c2);
        if (tk_ns_push(a, &o, c, o0, o1)) return -1;
        if (c2 && tk_ns_push(a, &o, c2, o0, o1)) return -1;
    }
    o.fixed_id = s->fixed_id;
    *s = o;
    return 0;
}

static int strip_accents(tk_arena *a, tk_nstr *s) {
    tk_nstr o;
    tk_ns_init(&o);
    if (tk_ns_reserve(a, &o, s->len + 4)) return -1;
    for (int32_t i = 0; i < s->len;) {
        uint32_t c;
        int k = tk_utf8_dec(s->s, s->len, i, &c);
        int32_t o0 = s->a0[i], o1 = s->a1[i + k - 1];
        i += k;
        if (c >= 0x300 && tk_is_mark_9(c)) continue; /* StripAccents drops every mark (Mn, Mc, Me) */
        if (tk_ns_push(a, &o, c, o0, o1)) return -1;
    }
    o.fixed_id = s->fixed_id;
    *s = o;
    return 0;
}

static int strip(const tk_normalizer *n, tk_nstr *s) {
    int32_t b = 0, e = s->len;
    if (n->left)
        while (b < e) {
            uint32_t c;
            int k = tk_utf8_dec(s->s, s->len, b, &c);
            if (!tk_is_whitespace(c)) break;
            b += k;
        }
    if (n->right)
        while (e > b) {
            int32_t p = e - 1;
            while (p > b && ((uint8_t)s->s[p] & 0xC0) == 0x80) p--;
            uint32_t c;
            tk_utf8_dec(s->s, s->len, p, &c);
            if (!tk_is_whitespace(c)) break;
            e = p;
        }
    s->s += b;
    s->a0 += b;
    s->a1 += b;
    s->len = e - b;
    s->cap -= b;
    return 0;
}

/* Finds the next match of a literal or regex at or after pos; returns 0 and sets [ms, me). */
static int find_next(const char *pat, int32_t plen, pcre2_code *re, pcre2_match_data *md, const tk_nstr *s, int32_t pos,
                     int32_t *ms, int32_t *me) {
    if (re) {
        int r = pcre2_match(re, (PCRE2_SPTR)s->s, (PCRE2_SIZE)s->len, (PCRE2_SIZE)pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (r < 0) return -1;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        *ms = (int32_t)ov[0];
        *me = (int32_t)ov[1];
        return 0;
    }
    if (plen <= 0) return -1;
    const char *p = memmem(s->s + pos, (size_t)(s->len - pos), pat, (size_t)plen);
    if (!p) return -1;
    *ms = (int32_t)(p - s->s);
    *me = *ms + plen;
    return 0;
}

static int replace(const tk_normalizer *n, tk_arena *a, tk_nstr *s) {
    pcre2_match_data *md = n->re ? pcre2_match_data_create_from_pattern(n->re, NULL) : NULL;
    if (n->re && !md) return -1;
    tk_nstr o;
    tk_ns_init(&o);
    int rc = tk_ns_reserve(a, &o, s->len + 4);
    int32_t pos = 0, last = 0, ms, me;
    while (!rc && pos <= s->len && !find_next(n->pattern, n->pattern_len, n->re, md, s, pos, &ms, &me)) {
        if (me == ms) { /* empty matches replace nothing */
            if (ms >= s->len) break;
            uint32_t c;
            pos = ms + tk_utf8_dec(s->s, s->len, ms, &c);
            continue;
        }
        for (int32_t i = last; i < ms; i++)
            if ((rc = tk_ns_push_bytes(a, &o, s->s + i, 1, s->a0[i], s->a1[i]))) break;
        if (!rc) rc = tk_ns_push_bytes(a, &o, n->content, n->content_len, s->a0[me - 1], s->a1[me - 1]);
        last = pos = me;
    }
    for (int32_t i = last; !rc && i < s->len; i++) rc = tk_ns_push_bytes(a, &o, s->s + i, 1, s->a0[i], s->a1[i]);
    if (md) pcre2_match_data_free(md);
    if (rc) return -1;
    o.fixed_id = s->fixed_id;
    *s = o;
    return 0;
}

static int prepend(const tk_normalizer *n, tk_arena *a, tk_nstr *s) {
    if (!s->len) return 0;
    tk_nstr o;
    tk_ns_init(&o);
    if (tk_ns_push_bytes(a, &o, n->content, n->content_len, s->a0[0], s->a1[0])) return -1;
    if (tk_ns_reserve(a, &o, s->len)) return -1;
    memcpy(o.s + o.len, s->s, (size_t)s->len);
    memcpy(o.a0 + o.len, s->a0, sizeof(int32_t) * (size_t)s->len);
    memcpy(o.a1 + o.len, s->a1, sizeof(int32_t) * (size_t)s->len);
    o.len += s->len;
    o.fixed_id = s->fixed_id;
    *s = o;
    return 0;
}

/* SentencePiece's NMT normalization: drop some controls, map odd spaces to ' '. */
static int nmt(tk_arena *a, tk_nstr *s) {
    tk_nstr o;
    tk_ns_init(&o);
    if (tk_ns_reserve(a, &o, s->len + 4)) return -1;
    for (int32_t i = 0; i < s->len;) {
        uint32_t c;
        int k = tk_utf8_dec(s->s, s->len, i, &c);
        int32_t o0 = s->a0[i], o1 = s->a1[i + k - 1];
        i += k;
        if ((c >= 1 && c <= 8) || c == 0xB || (c >= 0xE && c <= 0x1F) || c == 0x7F || c == 0x8F || c == 0x9F) continue;
        if (c == 9 || c == 0xA || c == 0xC || c == 0xD || c == 0x1680 || (c >= 0x200B && c <= 0x200F) || c == 0x2028 ||
            c == 0x2029 || c == 0x2581 || c == 0xFEFF || c == 0xFFFD)
            c = ' ';
        if (tk_ns_push(a, &o, c, o0, o1)) return -1;
    }
    o.fixed_id = s->fixed_id;
    *s = o;
    return 0;
}

int tk_precompiled_normalize(const tk_normalizer *n, tk_arena *a, tk_nstr *s);

int tk_normalize(const tk_normalizer *n, tk_arena *a, tk_nstr *s) {
    if (!n) return 0;
    switch (n->kind) {
    case NRM_BERT: return bert_normalize(n, a, s);
    case NRM_NFC:
    case NRM_NFD:
    case NRM_NFKC:
    case NRM_NFKD: return unicode_normalize(n->kind, a, s);
    case NRM_LOWER: return lowercase(a, s);
    case NRM_STRIP: return strip(n, s);
    case NRM_STRIP_ACCENTS: return strip_accents(a, s);
    case NRM_REPLACE: return replace(n, a, s);
    case NRM_PREPEND: return prepend(n, a, s);
    case NRM_NMT: return nmt(a, s);
    case NRM_PRECOMPILED: return tk_precompiled_normalize(n, a, s);
    case NRM_SEQ:
        for (int i = 0; i < n->n_seq; i++)
            if (tk_normalize(n->seq[i], a, s)) return -1;
        return 0;
    }
    return 0;
}

void tk_normalizer_free(tk_normalizer *n) {
    if (!n) return;
    for (int i = 0; i < n->n_seq; i++) tk_normalizer_free(n->seq[i]);
    free(n->seq);
    free(n->pattern);
    free(n->content);
    free(n->charsmap);
    if (n->re) pcre2_code_free(n->re);
    free(n);
}
