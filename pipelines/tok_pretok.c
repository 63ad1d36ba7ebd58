/* Pre-tokenizers: split each piece of normalized text into smaller pieces with the split
 * behaviours of Hugging Face (removed, isolated, merged with previous/next, contiguous), and
 * the ByteLevel and Metaspace rewrites. Pieces share the arena; nothing is freed here. */
#include "pipelines/tok_internal.h"
#include <stdlib.h>
#include <string.h>

typedef struct {
    tk_nstr *v;
    int n, cap;
} plist;
typedef struct {
    int32_t s, e;
    int m;
} span;
typedef struct {
    span *v;
    int n, cap;
} slist;

static int pl_push(tk_arena *a, plist *l, const tk_nstr *p) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        tk_nstr *v = tk_alloc(a, sizeof(tk_nstr) * (size_t)cap);
        if (!v) return -1;
        if (l->n) memcpy(v, l->v, sizeof(tk_nstr) * (size_t)l->n);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = *p;
    return 0;
}

static int sl_push(tk_arena *a, slist *l, int32_t s, int32_t e, int m) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        span *v = tk_alloc(a, sizeof(span) * (size_t)cap);
        if (!v) return -1;
        if (l->n) memcpy(v, l->v, sizeof(span) * (size_t)l->n);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n].s = s;
    l->v[l->n].e = e;
    l->v[l->n].m = m;
    l->n++;
    return 0;
}

/* Applies a split behaviour to spans covering the piece and emits the non-empty parts. */
static int emit(tk_arena *a, const tk_nstr *p, slist *sp, int behavior, int invert, plist *out) {
    if (invert)
        for (int i = 0; i < sp->n; i++) sp->v[i].m = !sp->v[i].m;
    span *v = sp->v;
    int n = sp->n, w = 0;
    switch (behavior) {
    case SPLIT_REMOVED:
        for (int i = 0; i < n; i++)
            if (!v[i].m) v[w++] = v[i];
        n = w;
        break;
    case SPLIT_ISOLATED: break;
    case SPLIT_CONTIGUOUS:
        for (int i = 0; i < n; i++) {
            if (w > 0 && v[w - 1].m == v[i].m) v[w - 1].e = v[i].e;
            else v[w++] = v[i];
        }
        n = w;
        break;
    case SPLIT_MERGED_PREV: {
        int prev = 0;
        for (int i = 0; i < n; i++) {
            int m = v[i].m;
            if (m && !prev && w > 0) v[w - 1].e = v[i].e;
            else v[w++] = v[i];
            prev = m;
        }
        n = w;
        break;
    }
    case SPLIT_MERGED_NEXT: {
        int prev = 0;
        w = n;
        for (int i = n - 1; i >= 0; i--) {
            int m = v[i].m;
            if (m && !prev && w < n) v[w].s = v[i].s;
            else v[--w] = v[i];
            prev = m;
        }
        if (n > w) memmove(v, v + w, sizeof(span) * (size_t)(n - w));
        n = n - w;
        break;
    }
    }
    for (int i = 0; i < n; i++) {
        if (v[i].e <= v[i].s) continue;
        tk_nstr q;
        tk_ns_slice(a, p, v[i].s, v[i].e, &q);
        if (pl_push(a, out, &q)) return -1;
    }
    return 0;
}

typedef int (*char_pred)(uint32_t c, const tk_pretok *pt);

/* Each matching character is its own match; runs of others are one non-match. */
static int split_chars(tk_arena *a, const tk_nstr *p, char_pred f, const tk_pretok *pt, int behavior, plist *out) {
    slist sp = {0};
    int32_t run = 0;
    for (int32_t i = 0; i < p->len;) {
        uint32_t c;
        int k = tk_utf8_dec(p->s, p->len, i, &c);
        if (f(c, pt)) {
            if (run < i && sl_push(a, &sp, run, i, 0)) return -1;
            if (sl_push(a, &sp, i, i + k, 1)) return -1;
            run = i + k;
        }
        i += k;
    }
    if (run < p->len && sl_push(a, &sp, run, p->len, 0)) return -1;
    return emit(a, p, &sp, behavior, 0, out);
}

static int split_regex(tk_arena *a, const tk_nstr *p, pcre2_code *re, int behavior, int invert, plist *out) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) return -1;
    slist sp = {0};
    int32_t pos = 0, prev = 0;
    while (pos <= p->len) {
        int r = pcre2_match(re, (PCRE2_SPTR)p->s, (PCRE2_SIZE)p->len, (PCRE2_SIZE)pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (r < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        int32_t s = (int32_t)ov[0], e = (int32_t)ov[1];
        if (prev < s && sl_push(a, &sp, prev, s, 0)) goto fail;
        if (sl_push(a, &sp, s, e, 1)) goto fail;
        prev = e;
        if (e == s) {
            if (e >= p->len) break;
            uint32_t c;
            pos = e + tk_utf8_dec(p->s, p->len, e, &c);
        } else pos = e;
    }
    if (prev < p->len && sl_push(a, &sp, prev, p->len, 0)) goto fail;
    pcre2_match_data_free(md);
    return emit(a, p, &sp, behavior, invert, out);
fail:
    pcre2_match_data_free(md);
    return -1;
}

static int split_string(tk_arena *a, const tk_nstr *p, const char *pat, int32_t plen, int behavior, int invert,
                        plist *out) {
    slist sp = {0};
    int32_t prev = 0;
    if (plen > 0) {
        const char *q = p->s, *end = p->s + p->len;
        while ((q = memmem(q, (size_t)(end - q), pat, (size_t)plen))) {
            int32_t s = (int32_t)(q - p->s);
            if (prev < s && sl_push(a, &sp, prev, s, 0)) return -1;
            if (sl_push(a, &sp, s, s + plen, 1)) return -1;
            prev = s + plen;
            q += plen;
        }
    }
    if (prev < p->len && sl_push(a, &sp, prev, p->len, 0)) return -1;
    return emit(a, p, &sp, behavior, invert, out);
}

static int pred_ws(uint32_t c, const tk_pretok *pt) {
    (void)pt;
    return tk_is_whitespace(c);
}
static int pred_bert_punct(uint32_t c, const tk_pretok *pt) {
    (void)pt;
    return tk_is_bert_punct(c);
}
static int pred_numeric(uint32_t c, const tk_pretok *pt) {
    (void)pt;
    return tk_is_numeric(c);
}
static int pred_delim(uint32_t c, const tk_pretok *pt) { return c == pt->delimiter; }
static int pred_replacement(uint32_t c, const tk_pretok *pt) { return c == pt->replacement_cp; }

/* Prepends str with the alignment of the piece's first character, as NormalizedString::prepend. */
static int ns_prepend(tk_arena *a, tk_nstr *p, const char *str, int32_t len) {
    if (!p->len) return 0;
    tk_nstr o;
    tk_ns_init(&o);
    if (tk_ns_push_bytes(a, &o, str, len, p->a0[0], p->a1[0]) || tk_ns_reserve(a, &o, p->len)) return -1;
    memcpy(o.s + o.len, p->s, (size_t)p->len);
    memcpy(o.a0 + o.len, p->a0, sizeof(int32_t) * (size_t)p->len);
    memcpy(o.a1 + o.len, p->a1, sizeof(int32_t) * (size_t)p->len);
    o.len += p->len;
    *p = o;
    return 0;
}

static int byte_map(tk_arena *a, tk_nstr *p) {
    tk_nstr o;
    tk_ns_init(&o);
    if (tk_ns_reserve(a, &o, p->len * 2)) return -1;
    for (int32_t i = 0; i < p->len;) {
        uint32_t c;
        int k = tk_utf8_dec(p->s, p->len, i, &c);
        int32_t o0 = p->a0[i], o1 = p->a1[i + k - 1];
        for (int j = 0; j < k; j++) {
            uint32_t cp = tk_byte_to_cp((uint8_t)p->s[i + j]);
            int n = tk_utf8_enc(cp, o.s + o.len);
            for (int x = 0; x < n; x++) {
                o.a0[o.len + x] = o0;
                o.a1[o.len + x] = o1;
            }
            o.len += n;
        }
        i += k;
    }
    *p = o;
    return 0;
}

static int metaspace(const tk_pretok *pt, tk_arena *a, tk_nstr *p, plist *out) {
    tk_nstr o;
    tk_ns_init(&o);
    if (tk_ns_reserve(a, &o, p->len * 3 + pt->replacement_len)) return -1;
    for (int32_t i = 0; i < p->len; i++) {
        if (p->s[i] == ' ') {
            if (tk_ns_push_bytes(a, &o, pt->replacement, pt->replacement_len, p->a0[i], p->a1[i])) return -1;
        } else {
            o.s[o.len] = p->s[i];
            o.a0[o.len] = p->a0[i];
            o.a1[o.len] = p->a1[i];
            o.len++;
        }
    }
    int starts = o.len >= pt->replacement_len && !memcmp(o.s, pt->replacement, (size_t)pt->replacement_len);
    if (!starts &&
        (pt->prepend_scheme == PREPEND_ALWAYS || (pt->prepend_scheme == PREPEND_FIRST && o.len && o.a0[0] == 0)))
        if (ns_prepend(a, &o, pt->replacement, pt->replacement_len)) return -1;
    if (!pt->split) return pl_push(a, out, &o);
    return split_chars(a, &o, pred_replacement, pt, SPLIT_MERGED_NEXT, out);
}

/* A new piece starts where a character's script differs from the last script seen; Any (space
 * and later characters) neither starts one nor counts as last. The package's first piece
 * starts at the first character with a script, so leading Any characters are dropped, and a
 * piece of only Any characters yields nothing. */
static int split_scripts(const tk_pretok *pt, tk_arena *a, const tk_nstr *p, plist *out) {
    int32_t start = -1;
    int last = 0;
    tk_nstr q;
    for (int32_t i = 0; i < p->len;) {
        uint32_t c;
        int k = tk_utf8_dec(p->s, p->len, i, &c);
        int sc = tk_script_of(&pt->scripts, c);
        if (sc != 0) {
            if (start < 0) start = i;
            else if (sc != last) {
                tk_ns_slice(a, p, start, i, &q);
                if (pl_push(a, out, &q)) return -1;
                start = i;
            }
            last = sc;
        }
        i += k;
    }
    if (start >= 0) {
        tk_ns_slice(a, p, start, p->len, &q);
        if (pl_push(a, out, &q)) return -1;
    }
    return 0;
}

static int pretok_one(const tk_pretok *pt, tk_arena *a, tk_nstr *p, plist *out) {
    switch (pt->kind) {
    case PT_BERT: {
        plist tmp = {0};
        if (split_chars(a, p, pred_ws, pt, SPLIT_REMOVED, &tmp)) return -1;
        for (int i = 0; i < tmp.n; i++)
            if (split_chars(a, &tmp.v[i], pred_bert_punct, pt, SPLIT_ISOLATED, out)) return -1;
        return 0;
    }
    case PT_BYTELEVEL: {
        tk_nstr q = *p;
        if (pt->add_prefix_space && q.len && q.s[0] != ' ' && ns_prepend(a, &q, " ", 1)) return -1;
        int first = out->n;
        if (pt->use_regex) {
            if (split_regex(a, &q, pt->re, SPLIT_ISOLATED, 0, out)) return -1;
        } else if (q.len && pl_push(a, out, &q)) return -1;
        for (int i = first; i < out->n; i++)
            if (byte_map(a, &out->v[i])) return -1;
        return 0;
    }
    case PT_WHITESPACE: return split_regex(a, p, pt->re, SPLIT_REMOVED, 1, out);
    case PT_WSSPLIT: return split_chars(a, p, pred_ws, pt, SPLIT_REMOVED, out);
    case PT_METASPACE: return metaspace(pt, a, p, out);
    case PT_SPLIT:
        if (pt->re) return split_regex(a, p, pt->re, pt->behavior, pt->invert, out);
        return split_string(a, p, pt->pattern, pt->pattern_len, pt->behavior, pt->invert, out);
    case PT_PUNCT: return split_chars(a, p, pred_bert_punct, pt, pt->behavior, out);
    case PT_DIGITS:
        return split_chars(a, p, pred_numeric, pt, pt->individual_digits ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS, out);
    case PT_CHARDELIM: return split_chars(a, p, pred_delim, pt, SPLIT_REMOVED, out);
    case PT_SCRIPTS: return split_scripts(pt, a, p, out);
    }
    return pl_push(a, out, p);
}

int tk_pretokenize(const tk_pretok *pt, tk_arena *a, tk_nstr **pieces, int *n) {
    if (!pt) return 0;
    if (pt->kind == PT_SEQ) {
        for (int i = 0; i < pt->n_seq; i++)
            if (tk_pretokenize(pt->seq[i], a, pieces, n)) return -1;
        return 0;
    }
    plist out = {0};
    for (int i = 0; i < *n; i++) {
        if ((*pieces)[i].fixed_id >= 0) {
            if (pl_push(a, &out, &(*pieces)[i])) return -1;
            continue;
        }
        if (pretok_one(pt, a, &(*pieces)[i], &out)) return -1;
    }
    *pieces = out.v;
    *n = out.n;
    return 0;
}

void tk_pretok_free(tk_pretok *p) {
    if (!p) return;
    for (int i = 0; i < p->n_seq; i++) tk_pretok_free(p->seq[i]);
    free(p->seq);
    free(p->pattern);
    tk_scripts_free(&p->scripts);
    if (p->re) pcre2_code_free(p->re);
    free(p);
}
