/* Decoders: turn a list of token strings back into text for generation, as Hugging Face's
 * decode_chain does: each decoder maps the list of strings to a new list, and the final list
 * is concatenated. */
#include "pipelines/tok_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char **v;
    int n, cap;
} svec;

static int sv_push(svec *s, char *str) {
    if (!str) return -1;
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 16;
        char **v = realloc(s->v, sizeof(char *) * (size_t)cap);
        if (!v) {
            free(str);
            return -1;
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = str;
    return 0;
}

static void sv_free(svec *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static char *str_replace_all(const char *s, const char *from, const char *to) {
    size_t fl = strlen(from), tl = strlen(to), n = 0;
    if (!fl) return strdup(s);
    for (const char *p = s; (p = strstr(p, from)); p += fl) n++;
    char *o = malloc(strlen(s) + n * tl + 1), *w = o;
    if (!o) return NULL;
    const char *p = s, *q;
    while ((q = strstr(p, from))) {
        memcpy(w, p, (size_t)(q - p));
        w += q - p;
        memcpy(w, to, tl);
        w += tl;
        p = q + fl;
    }
    strcpy(w, p);
    return o;
}

static char *cat_all(svec *s) {
    size_t n = 0;
    for (int i = 0; i < s->n; i++) n += strlen(s->v[i]);
    char *o = malloc(n + 1), *w = o;
    if (!o) return NULL;
    for (int i = 0; i < s->n; i++) {
        size_t l = strlen(s->v[i]);
        memcpy(w, s->v[i], l);
        w += l;
    }
    *w = 0;
    return o;
}

/* Decoded text travels as C strings between the steps, so a NUL in it is carried as a sentinel
 * code point and turned back into NUL by kn_tokenizer_decode, which picks one of plane 16 that
 * none of the tokens holds (tk_decode_sentinel) and turns it back only when a NUL was carried
 * (tk_decode_nuls), so that a real U+10FFFF, even one that byte-level decoding makes, stays. */
_Thread_local uint32_t tk_decode_sentinel = 0x10FFFF;
_Thread_local int tk_decode_nuls;

static char *nul_to_sentinel(char *s, size_t n) {
    size_t z = 0;
    for (size_t i = 0; i < n; i++) z += s[i] == 0;
    if (!z) return s;
    tk_decode_nuls = 1;
    char *o = malloc(n + 3 * z + 1), *w = o;
    if (!o) {
        free(s);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i]) *w++ = s[i];
        else { w += tk_utf8_enc(tk_decode_sentinel, w); }
    }
    *w = 0;
    free(s);
    return o;
}

/* bytes -> string, every invalid sequence replaced by U+FFFD */
static char *lossy(const char *b, size_t n) {
    size_t ol;
    char *s = tk_utf8_lossy(b, n, &ol, NULL);
    return s ? nul_to_sentinel(s, ol) : NULL;
}

static int parse_byte_token(const char *s, uint8_t *b) {
    unsigned v;
    if (strlen(s) != 6 || strncmp(s, "<0x", 3) || s[5] != '>') return 0;
    if (sscanf(s + 3, "%2X", &v) != 1) return 0;
    *b = (uint8_t)v;
    return 1;
}

static int decode_step(const tk_decoder *d, svec *in, svec *out) {
    switch (d->kind) {
    case DEC_BYTELEVEL: {
        size_t n = 0;
        for (int i = 0; i < in->n; i++) n += strlen(in->v[i]);
        char *buf = malloc(n + 1);
        size_t w = 0;
        if (!buf) return -1;
        for (int i = 0; i < in->n; i++) {
            const char *s = in->v[i];
            int32_t len = (int32_t)strlen(s);
            for (int32_t p = 0; p < len;) {
                uint32_t c;
                int k = tk_utf8_dec(s, len, p, &c);
                int b = tk_cp_to_byte(c);
                if (b >= 0) buf[w++] = (char)b;
                else {
                    memcpy(buf + w, s + p, (size_t)k);
                    w += (size_t)k;
                }
                p += k;
            }
        }
        char *o = lossy(buf, w);
        free(buf);
        return sv_push(out, o);
    }
    case DEC_WORDPIECE:
        for (int i = 0; i < in->n; i++) {
            const char *s = in->v[i];
            char *t;
            size_t pl = strlen(d->prefix);
            if (i == 0) t = strdup(s);
            else if (pl && !strncmp(s, d->prefix, pl)) t = strdup(s + pl);
            else {
                t = malloc(strlen(s) + 2);
                if (t) {
                    t[0] = ' ';
                    strcpy(t + 1, s);
                }
            }
            if (t && d->cleanup) {
                static const char *const rep[][2] = {{" .", "."},     {" ?", "?"},           {" !", "!"},
                                                     {" ,", ","},     {" ' ", "'"},          {" n't", "n't"},
                                                     {" 'm", "'m"},   {" do not", " don't"}, {" 's", "'s"},
                                                     {" 've", "'ve"}, {" 're", "'re"}};
                for (size_t r = 0; t && r < sizeof rep / sizeof rep[0]; r++) {
                    char *u = str_replace_all(t, rep[r][0], rep[r][1]);
                    free(t);
                    t = u;
                }
            }
            if (sv_push(out, t)) return -1;
        }
        return 0;
    case DEC_METASPACE: {
        char rep[8];
        rep[tk_utf8_enc(d->replacement_cp, rep)] = 0;
        for (int i = 0; i < in->n; i++) {
            char *t = str_replace_all(in->v[i], rep, " ");
            if (t && i == 0 && d->prepend_scheme != PREPEND_NEVER && t[0] == ' ') memmove(t, t + 1, strlen(t));
            if (sv_push(out, t)) return -1;
        }
        return 0;
    }
    case DEC_BPE:
        for (int i = 0; i < in->n; i++)
            if (sv_push(out, str_replace_all(in->v[i], d->suffix, i == in->n - 1 ? "" : " "))) return -1;
        return 0;
    case DEC_BYTEFALLBACK:
        for (int i = 0; i < in->n;) {
            uint8_t b;
            if (!parse_byte_token(in->v[i], &b)) {
                if (sv_push(out, strdup(in->v[i]))) return -1;
                i++;
                continue;
            }
            int j = i;
            char *buf = malloc((size_t)(in->n - i) + 1);
            if (!buf) return -1;
            size_t w = 0;
            while (j < in->n && parse_byte_token(in->v[j], &b)) {
                buf[w++] = (char)b;
                j++;
            }
            size_t ol;
            char *o = tk_utf8_lossy(buf, w, &ol, NULL);
            if (o && (ol != w || memcmp(o, buf, w))) { /* invalid bytes: one replacement character per byte token */
                free(o);
                o = malloc(w * 3 + 1);
                if (o) {
                    for (size_t k = 0; k < w; k++) memcpy(o + 3 * k, "\xEF\xBF\xBD", 3);
                    o[3 * w] = 0;
                }
            } else if (o) o = nul_to_sentinel(o, ol);
            free(buf);
            if (sv_push(out, o)) return -1;
            i = j;
        }
        return 0;
    case DEC_FUSE: return sv_push(out, cat_all(in));
    case DEC_STRIP: {
        uint32_t c;
        tk_utf8_dec(d->content, (int32_t)strlen(d->content), 0, &c);
        for (int i = 0; i < in->n; i++) {
            const char *s = in->v[i];
            int32_t len = (int32_t)strlen(s), b = 0, e = len;
            for (int k = 0; k < d->start && b < e; k++) {
                uint32_t x;
                int n = tk_utf8_dec(s, len, b, &x);
                if (x != c) break;
                b += n;
            }
            for (int k = 0; k < d->stop && e > b; k++) {
                int32_t q = e - 1;
                while (q > b && ((uint8_t)s[q] & 0xC0) == 0x80) q--;
                uint32_t x;
                tk_utf8_dec(s, len, q, &x);
                if (x != c) break;
                e = q;
            }
            if (sv_push(out, strndup(s + b, (size_t)(e - b)))) return -1;
        }
        return 0;
    }
    case DEC_REPLACE:
        for (int i = 0; i < in->n; i++) {
            if (!d->re) {
                if (sv_push(out, str_replace_all(in->v[i], d->pattern, d->content))) return -1;
                continue;
            }
            PCRE2_SIZE ol = strlen(in->v[i]) * 4 + strlen(d->content) * 8 + 64;
            char *o = malloc(ol);
            if (!o) return -1;
            int r = pcre2_substitute(d->re, (PCRE2_SPTR)in->v[i], PCRE2_ZERO_TERMINATED, 0,
                                     PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_LITERAL, NULL, NULL,
                                     (PCRE2_SPTR)d->content, PCRE2_ZERO_TERMINATED, (PCRE2_UCHAR *)o, &ol);
            if (r < 0) {
                free(o);
                o = strdup(in->v[i]);
            }
            if (sv_push(out, o)) return -1;
        }
        return 0;
    case DEC_CTC: {
        const char *prev = NULL;
        for (int i = 0; i < in->n; i++) {
            if (prev && !strcmp(prev, in->v[i])) continue;
            prev = in->v[i];
            if (!strcmp(in->v[i], d->pad_token)) continue;
            char *t = str_replace_all(in->v[i], d->word_delim, " ");
            if (d->cleanup && t) {
                char *u = str_replace_all(t, " .", ".");
                free(t);
                t = u;
            }
            if (sv_push(out, t)) return -1;
        }
        return 0;
    }
    case DEC_SEQ: {
        svec cur = {0};
        for (int i = 0; i < in->n; i++)
            if (sv_push(&cur, strdup(in->v[i]))) {
                sv_free(&cur);
                return -1;
            }
        for (int k = 0; k < d->n_seq; k++) {
            svec nx = {0};
            if (decode_step(d->seq[k], &cur, &nx)) {
                sv_free(&cur);
                sv_free(&nx);
                return -1;
            }
            sv_free(&cur);
            cur = nx;
        }
        for (int i = 0; i < cur.n; i++)
            if (sv_push(out, cur.v[i])) return -1;
        free(cur.v);
        return 0;
    }
    }
    return -1;
}

char *tk_decode_tokens(const tk_decoder *d, char **toks, int n) {
    svec in = {toks, n, n}, out = {0};
    if (!d) { /* no decoder: tokens joined by spaces */
        size_t len = 0;
        for (int i = 0; i < n; i++) len += strlen(toks[i]) + 1;
        char *o = malloc(len + 1), *w = o;
        if (!o) return NULL;
        for (int i = 0; i < n; i++) {
            if (i) *w++ = ' ';
            size_t l = strlen(toks[i]);
            memcpy(w, toks[i], l);
            w += l;
        }
        *w = 0;
        return o;
    }
    if (decode_step(d, &in, &out)) {
        sv_free(&out);
        return NULL;
    }
    char *r = cat_all(&out);
    sv_free(&out);
    return r;
}

void tk_decoder_free(tk_decoder *d) {
    if (!d) return;
    for (int i = 0; i < d->n_seq; i++) tk_decoder_free(d->seq[i]);
    free(d->seq);
    free(d->prefix);
    free(d->suffix);
    free(d->content);
    free(d->pattern);
    free(d->pad_token);
    free(d->word_delim);
    if (d->re) pcre2_code_free(d->re);
    free(d);
}
