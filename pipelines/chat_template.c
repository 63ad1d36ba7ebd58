/* Chat templates: a Jinja2 subset, lexed, parsed and interpreted in C with the semantics that
 * transformers' apply_chat_template gets from Jinja2 (trim_blocks, lstrip_blocks, loop controls,
 * Python's str()/repr() of values, json.dumps for tojson, undefined values that render empty and
 * fail when used as operands). Whatever lies outside the subset fails at parse time naming the
 * construct and its line:column, so a template kiln cannot render exactly is never rendered
 * approximately. Every recursion has a depth limit and every loop a step budget, so malformed
 * or hostile templates fail instead of crashing or hanging. */
#include "pipelines/chat_template.h"
#include "runtime/core/status.h"
#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#define CT_MAX_DEPTH 200              /* parser nesting and render recursion (Python's own limit is ~1000) */
#define CT_MAX_STEPS 10000000LL       /* loop iterations + macro calls per render */
#define CT_MAX_RANGE 100000           /* the sandbox's range() limit */
#define CT_ARENA_LIMIT (256ull << 20) /* bytes a single parse or render may allocate */

/* ------------------------------------------------------------------------------------------ */
/* arena: parse and render allocate from one each, freed at once */

typedef struct ct_chunk {
    struct ct_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} ct_chunk;
typedef struct ct_arena {
    ct_chunk *head;
    size_t total, limit;
} ct_arena;

static void *ar_alloc(ct_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (a->total + n > a->limit) return NULL;
    if (!a->head || a->head->used + n > a->head->cap) {
        size_t cap = n > 65536 ? n : 65536;
        ct_chunk *c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    a->total += n;
    return p;
}
static void ar_free(ct_arena *a) {
    while (a->head) {
        ct_chunk *n = a->head->next;
        free(a->head);
        a->head = n;
    }
    a->total = 0;
}

/* growable byte buffer (rendered output, repr, json) */
typedef struct ct_buf {
    char *p;
    size_t n, cap, max;
    int oom;
} ct_buf;
static void buf_put(ct_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        if (b->max && b->n + n > b->max) {
            b->oom = 2;
            return;
        }
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void buf_puts(ct_buf *b, const char *s) { buf_put(b, s, strlen(s)); }
static void buf_printf(ct_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(ct_buf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k > 0) buf_put(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

/* ------------------------------------------------------------------------------------------ */
/* UTF-8 and Python's notions of whitespace and printable characters */

/* Decodes one code point at s[*i]; an invalid byte stands for itself (U+0080..U+00FF never
 * arise from valid input, so the byte is kept as the caller's text had it). */
static int32_t u8_next(const char *s, size_t n, size_t *i) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + *i, (utf8proc_ssize_t)(n - *i), &cp);
    if (k <= 0) {
        cp = (unsigned char)s[*i];
        k = 1;
    }
    *i += (size_t)k;
    return cp;
}
static size_t u8_len(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n;) {
        u8_next(s, n, &i);
        c++;
    }
    return c;
}
/* byte offset of code point k (k <= length) */
static size_t u8_off(const char *s, size_t n, size_t k) {
    size_t i = 0;
    while (k-- && i < n) u8_next(s, n, &i);
    return i;
}
static int py_isspace(int32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
        (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}
static int py_isprintable(int32_t c) {
    if (c == ' ') return 1;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS: return 0;
    default: return 1;
    }
}
static void u8_put(ct_buf *b, int32_t cp) {
    utf8proc_uint8_t t[4];
    utf8proc_ssize_t k = utf8proc_encode_char(cp, t);
    if (k <= 0) {
        t[0] = (utf8proc_uint8_t)cp;
        k = 1;
    }
    buf_put(b, (const char *)t, (size_t)k);
}

/* ------------------------------------------------------------------------------------------ */
/* values */

enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_NS, V_LOOP, V_MACRO, V_FUNC };
/* what a V_LIST stands for in Python: the views differ in repr, truthiness and subscripting */
enum { LV_LIST, LV_TUPLE, LV_GEN, LV_ITEMS, LV_KEYS, LV_VALUES };
enum { F_RAISE = 1, F_STRFTIME, F_NAMESPACE, F_DICT, F_RANGE };

struct node;
struct scope;
typedef struct jval {
    int t;
    size_t n; /* V_STR: byte length */
    union {
        int64_t i;
        double f;
        const char *s;
        struct jlist *l;
        struct jdict *d;
        struct jloop *lp;
        int fn;
        struct {
            const struct node *m;
            struct scope *sc;
        } mac;
    } u;
    int hint; /* V_UNDEF: 1 the name u.s[0:n] was not found, 2 a mapping lacked the key u.s[0:n];
                 V_STR: 1 markupsafe's Markup (from |safe or |escape): what is added to it is escaped */
} jval;
typedef struct jlist {
    int64_t n;
    int view;
    jval *v;
} jlist;
typedef struct jdict {
    int64_t n, cap;
    jval *k, *v;
} jdict;
typedef struct jloop {
    int64_t i, len;
    jlist *items;
} jloop;

static const jval JUNDEF = {V_UNDEF, 0, {0}};
static jval jnone(void) { return (jval){V_NONE, 0, {0}}; }
static jval jbool(int b) {
    jval v = {V_BOOL, 0, {0}};
    v.u.i = b != 0;
    return v;
}
static jval jint(int64_t i) {
    jval v = {V_INT, 0, {0}};
    v.u.i = i;
    return v;
}
static jval jfloat(double f) {
    jval v = {V_FLOAT, 0, {0}};
    v.u.f = f;
    return v;
}
static jval jstr(const char *s, size_t n) {
    jval v = {V_STR, n, {0}};
    v.u.s = s;
    return v;
}

static jval markup(jval v, int on) {
    v.hint = on && v.t == V_STR;
    return v;
}
static int is_markup(const jval *v) { return v->t == V_STR && v->hint == 1; }

/* ------------------------------------------------------------------------------------------ */
/* lexer */

enum {
    TK_EOF,
    TK_DATA,
    TK_VAR_BEGIN,
    TK_VAR_END,
    TK_BLOCK_BEGIN,
    TK_BLOCK_END,
    TK_NAME,
    TK_STRING,
    TK_INT,
    TK_FLOAT,
    TK_OP
};
typedef struct ct_tok {
    int t;
    int line, col;
    const char *s; /* name / operator / data / decoded string */
    size_t n;
    int64_t i;
    double f;
} ct_tok;

typedef struct ct_parser {
    ct_arena *ar;
    const char *src;
    size_t len;
    ct_tok *toks;
    int ntok, cap, pos;
    kn_status *err;
    int depth, loop_depth, macro_depth;
} ct_parser;

static void p_fail(ct_parser *p, kn_status_code code, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void p_fail(ct_parser *p, kn_status_code code, int line, int col, const char *fmt, ...) {
    if (p->err) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    p->err = kn_error(code, "chat template line %d, column %d: %s", line, col, msg);
}

static void p_linecol(const ct_parser *p, size_t off, int *line, int *col) {
    int l = 1, c = 1;
    for (size_t i = 0; i < off && i < p->len; i++) {
        if (p->src[i] == '\n') {
            l++;
            c = 1;
        } else if (((unsigned char)p->src[i] & 0xc0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *col = c;
}

static ct_tok *p_push(ct_parser *p, int t, size_t off) {
    if (p->err) return NULL;
    if (p->ntok == p->cap) {
        int cap = p->cap ? p->cap * 2 : 256;
        ct_tok *q = realloc(p->toks, (size_t)cap * sizeof *q);
        if (!q) {
            p->err = KN_OOM((size_t)cap * sizeof *q);
            return NULL;
        }
        p->toks = q;
        p->cap = cap;
    }
    ct_tok *k = &p->toks[p->ntok++];
    memset(k, 0, sizeof *k);
    k->t = t;
    p_linecol(p, off, &k->line, &k->col);
    return k;
}

/* whitespace run (Python's \s) starting at i; returns its end */
static size_t skip_ws(const char *s, size_t n, size_t i) {
    while (i < n) {
        size_t j = i;
        int32_t c = u8_next(s, n, &j);
        if (!py_isspace(c)) break;
        i = j;
    }
    return i;
}
static size_t rstrip_ws(const char *s, size_t n) {
    /* Python str.rstrip(): walk forward remembering the end of the last non-space */
    size_t end = 0;
    for (size_t i = 0; i < n;) {
        int32_t c = u8_next(s, n, &i);
        if (!py_isspace(c)) end = i;
    }
    return end;
}

static void p_data(ct_parser *p, const char *s, size_t n, size_t off) {
    if (!n) return;
    ct_tok *k = p_push(p, TK_DATA, off);
    if (!k) return;
    k->s = s;
    k->n = n;
}

/* Applies the strip rules of Jinja's OptionalLStrip to the text before a tag. */
static size_t lstrip_text(const char *text, size_t n, int sign, int is_var, int line_starting) {
    if (sign == '-') return rstrip_ws(text, n);
    if (sign == '+' || is_var) return n;
    size_t l_pos = 0;
    for (size_t i = n; i > 0; i--)
        if (text[i - 1] == '\n') {
            l_pos = i;
            break;
        }
    if (l_pos > 0 || line_starting) {
        if (l_pos < n && skip_ws(text, n, l_pos) == n) return l_pos;
    }
    return n;
}

static int is_name_start(unsigned char c) { return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_name_char(unsigned char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* digits with single '_' separators: returns end or start when none */
static size_t scan_digits(const char *s, size_t n, size_t i) {
    size_t st = i;
    if (i >= n || !is_digit((unsigned char)s[i])) return st;
    while (i < n) {
        if (is_digit((unsigned char)s[i])) i++;
        else if (s[i] == '_' && i + 1 < n && is_digit((unsigned char)s[i + 1])) i++;
        else break;
    }
    return i;
}

/* Decodes a string literal body as Jinja does (Python's unicode-escape over the ASCII text
 * with non-ASCII characters passed through): \n \t \xNN \uNNNN \UNNNNNNNN \ooo and the rest;
 * an unknown escape keeps its backslash. */
static int decode_string(ct_parser *p, const char *s, size_t n, ct_tok *k) {
    ct_buf b = {0};
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\' || i + 1 >= n) {
            size_t j = i;
            u8_next(s, n, &j);
            buf_put(&b, s + i, j - i);
            i = j;
            continue;
        }
        char c = s[i + 1];
        i += 2;
        switch (c) {
        case '\n': break;
        case '\\': buf_put(&b, "\\", 1); break;
        case '\'': buf_put(&b, "'", 1); break;
        case '"': buf_put(&b, "\"", 1); break;
        case 'a': buf_put(&b, "\a", 1); break;
        case 'b': buf_put(&b, "\b", 1); break;
        case 'f': buf_put(&b, "\f", 1); break;
        case 'n': buf_put(&b, "\n", 1); break;
        case 'r': buf_put(&b, "\r", 1); break;
        case 't': buf_put(&b, "\t", 1); break;
        case 'v': buf_put(&b, "\v", 1); break;
        case 'x':
        case 'u':
        case 'U': {
            int want = c == 'x' ? 2 : c == 'u' ? 4 : 8;
            uint32_t cp = 0;
            for (int d = 0; d < want; d++) {
                char h = i + (size_t)d < n ? s[i + (size_t)d] : 0;
                int v = h >= '0' && h <= '9' ? h - '0'
                    : h >= 'a' && h <= 'f'   ? h - 'a' + 10
                    : h >= 'A' && h <= 'F'   ? h - 'A' + 10
                                             : -1;
                if (v < 0) {
                    free(b.p);
                    p_fail(p, KN_ERR_INVALID_ARGUMENT, k->line, k->col, "truncated \\%cXX escape in a string literal",
                           c);
                    return -1;
                }
                cp = cp * 16 + (uint32_t)v;
            }
            i += (size_t)want;
            if (cp > 0x10ffff) {
                free(b.p);
                p_fail(p, KN_ERR_INVALID_ARGUMENT, k->line, k->col, "illegal Unicode character in a string literal");
                return -1;
            }
            u8_put(&b, (int32_t)cp);
            break;
        }
        case 'N':
            free(b.p);
            p_fail(p, KN_ERR_UNSUPPORTED, k->line, k->col, "\\N{...} escapes are outside the supported subset");
            return -1;
        default:
            if (c >= '0' && c <= '7') {
                int cp = c - '0';
                for (int d = 0; d < 2 && i < n && s[i] >= '0' && s[i] <= '7'; d++) cp = cp * 8 + (s[i++] - '0');
                u8_put(&b, cp);
            } else {
                /* unknown escape: the backslash stays, the character is re-read normally */
                buf_put(&b, "\\", 1);
                i -= 1;
            }
        }
    }
    if (b.oom) {
        free(b.p);
        p->err = KN_OOM(n);
        return -1;
    }
    char *d = ar_alloc(p->ar, b.n + 1);
    if (!d) {
        free(b.p);
        p->err = KN_OOM(b.n);
        return -1;
    }
    if (b.n) memcpy(d, b.p, b.n);
    d[b.n] = 0;
    k->s = d;
    k->n = b.n;
    free(b.p);
    return 0;
}

static const char *const ct_ops2[] = {"//", "**", "==", "!=", ">=", "<=", NULL};
static const char ct_ops1[] = "+-/*%~[](){}><=.:|,;";

/* Lexes the tokens of one {{ }} or {% %} tag; returns the offset after its end, or 0 on error. */
static size_t lex_tag(ct_parser *p, size_t i, int is_var, int *line_starting) {
    const char *s = p->src;
    size_t n = p->len;
    int bal = 0;
    char stack[CT_MAX_DEPTH];
    for (;;) {
        if (i >= n) {
            int l, c;
            p_linecol(p, n, &l, &c);
            p_fail(p, KN_ERR_INVALID_ARGUMENT, l, c, "unexpected end of template, expected '%s'", is_var ? "}}" : "%}");
            return 0;
        }
        if (!bal) {
            if (is_var) {
                if (s[i] == '-' && i + 2 < n + 0 && s[i + 1] == '}' && s[i + 2] == '}') {
                    size_t st = i;
                    i = skip_ws(s, n, i + 3);
                    p_push(p, TK_VAR_END, st);
                    *line_starting = i > st + 3 && s[i - 1] == '\n';
                    return i;
                }
                if (s[i] == '}' && i + 1 < n && s[i + 1] == '}') {
                    p_push(p, TK_VAR_END, i);
                    *line_starting = 0;
                    return i + 2;
                }
            } else {
                if (s[i] == '+' && i + 2 < n && s[i + 1] == '%' && s[i + 2] == '}') {
                    p_push(p, TK_BLOCK_END, i);
                    *line_starting = 0;
                    return i + 3;
                }
                if (s[i] == '-' && i + 2 < n && s[i + 1] == '%' && s[i + 2] == '}') {
                    size_t st = i;
                    i = skip_ws(s, n, i + 3);
                    p_push(p, TK_BLOCK_END, st);
                    *line_starting = i > st + 3 && s[i - 1] == '\n';
                    return i;
                }
                if (s[i] == '%' && i + 1 < n && s[i + 1] == '}') {
                    p_push(p, TK_BLOCK_END, i);
                    i += 2;
                    *line_starting = 0;
                    if (i < n && s[i] == '\n') {
                        i++;
                        *line_starting = 1;
                    }
                    return i;
                }
            }
        }
        size_t j = skip_ws(s, n, i);
        if (j > i) {
            i = j;
            continue;
        }
        unsigned char c = (unsigned char)s[i];
        /* float: digits then fraction and/or exponent, never right after a '.' */
        if (is_digit(c) && !(i > 0 && s[i - 1] == '.')) {
            size_t a = scan_digits(s, n, i), e = a;
            int isf = 0;
            if (a < n && s[a] == '.' && scan_digits(s, n, a + 1) > a + 1) {
                e = scan_digits(s, n, a + 1);
                isf = 1;
            }
            if (e < n && (s[e] == 'e' || s[e] == 'E')) {
                size_t q = e + 1;
                if (q < n && (s[q] == '+' || s[q] == '-')) q++;
                size_t r = scan_digits(s, n, q);
                if (r > q) {
                    e = r;
                    isf = 1;
                }
            }
            if (isf) {
                char tmp[128];
                size_t m = 0;
                for (size_t q = i; q < e && m + 1 < sizeof tmp; q++)
                    if (s[q] != '_') tmp[m++] = s[q];
                tmp[m] = 0;
                ct_tok *k = p_push(p, TK_FLOAT, i);
                if (!k) return 0;
                k->f = strtod(tmp, NULL);
                i = e;
                continue;
            }
        }
        if (is_digit(c)) {
            ct_tok *k = p_push(p, TK_INT, i);
            if (!k) return 0;
            int base = 10;
            size_t q = i;
            if (c == '0' && i + 1 < n && strchr("bBoOxX", s[i + 1]) && s[i + 1]) {
                base = (s[i + 1] | 32) == 'b' ? 2 : (s[i + 1] | 32) == 'o' ? 8 : 16;
                q = i + 2;
            }
            uint64_t v = 0;
            int any = 0, ovf = 0;
            size_t st = q;
            for (; q < n; q++) {
                int d;
                char h = s[q];
                if (h == '_' && q > st && q + 1 < n) continue;
                if (h >= '0' && h <= '9') d = h - '0';
                else if ((h | 32) >= 'a' && (h | 32) <= 'f') d = (h | 32) - 'a' + 10;
                else break;
                if (d >= base) break;
                if (base == 10 && !any && d == 0 && c == '0') {
                    /* "0", "00", "0_0": a decimal zero never takes more digits than zeros */
                    any = 1;
                    while (q + 1 < n && (s[q + 1] == '0' || (s[q + 1] == '_' && q + 2 < n && s[q + 2] == '0'))) q++;
                    q++;
                    break;
                }
                if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base) ovf = 1;
                v = v * (uint64_t)base + (uint64_t)d;
                any = 1;
            }
            if (!any || ovf || v > INT64_MAX) {
                p_fail(p, any ? KN_ERR_UNSUPPORTED : KN_ERR_INVALID_ARGUMENT, k->line, k->col,
                       any ? "integer literal beyond 64 bits" : "malformed integer literal");
                return 0;
            }
            k->i = (int64_t)v;
            i = q;
            continue;
        }
        if (is_name_start(c)) {
            size_t q = i;
            while (q < n && is_name_char((unsigned char)s[q])) q++;
            ct_tok *k = p_push(p, TK_NAME, i);
            if (!k) return 0;
            k->s = s + i;
            k->n = q - i;
            i = q;
            continue;
        }
        if (c == '\'' || c == '"') {
            size_t q = i + 1;
            while (q < n && s[q] != (char)c) q += s[q] == '\\' ? 2 : 1;
            ct_tok *k = p_push(p, TK_STRING, i);
            if (!k) return 0;
            if (q >= n) {
                p_fail(p, KN_ERR_INVALID_ARGUMENT, k->line, k->col, "unterminated string literal");
                return 0;
            }
            if (decode_string(p, s + i + 1, q - i - 1, k)) return 0;
            i = q + 1;
            continue;
        }
        int oplen = 0;
        for (int o = 0; ct_ops2[o]; o++)
            if (i + 1 < n && s[i] == ct_ops2[o][0] && s[i + 1] == ct_ops2[o][1]) oplen = 2;
        if (!oplen && c && strchr(ct_ops1, c)) oplen = 1;
        if (!oplen) {
            int l, col;
            p_linecol(p, i, &l, &col);
            if (c >= 0x80 || is_name_char(c))
                p_fail(p, KN_ERR_UNSUPPORTED, l, col, "non-ASCII identifiers are outside the supported subset");
            else p_fail(p, KN_ERR_INVALID_ARGUMENT, l, col, "unexpected character '%c'", c);
            return 0;
        }
        ct_tok *k = p_push(p, TK_OP, i);
        if (!k) return 0;
        k->s = s + i;
        k->n = (size_t)oplen;
        if (oplen == 1 && (c == '(' || c == '[' || c == '{')) {
            if (bal >= CT_MAX_DEPTH) {
                p_fail(p, KN_ERR_INVALID_ARGUMENT, k->line, k->col, "brackets nested too deeply");
                return 0;
            }
            stack[bal++] = c == '(' ? ')' : c == '[' ? ']' : '}';
        } else if (oplen == 1 && (c == ')' || c == ']' || c == '}')) {
            if (!bal) {
                p_fail(p, KN_ERR_INVALID_ARGUMENT, k->line, k->col, "unexpected '%c'", c);
                return 0;
            }
            if (stack[bal - 1] != (char)c) {
                p_fail(p, KN_ERR_INVALID_ARGUMENT, k->line, k->col, "unexpected '%c', expected '%c'", c,
                       stack[bal - 1]);
                return 0;
            }
            bal--;
        }
        i += (size_t)oplen;
    }
}

static void lex(ct_parser *p) {
    const char *s = p->src;
    size_t n = p->len, i = 0;
    int line_starting = 1;
    while (i < n && !p->err) {
        /* the earliest tag start */
        size_t t = i;
        int kind = 0;
        for (; t + 1 < n; t++)
            if (s[t] == '{' && (s[t + 1] == '{' || s[t + 1] == '%' || s[t + 1] == '#')) {
                kind = s[t + 1];
                break;
            }
        if (!kind) {
            p_data(p, s + i, n - i, i);
            return;
        }
        int sign = t + 2 < n && (s[t + 2] == '-' || s[t + 2] == '+') ? s[t + 2] : 0;
        size_t after = t + 2 + (sign ? 1 : 0);
        /* {% raw %} */
        int raw = 0;
        size_t raw_end = 0;
        if (kind == '%') {
            size_t q = skip_ws(s, n, after);
            if (q + 3 <= n && memcmp(s + q, "raw", 3) == 0) {
                size_t r = skip_ws(s, n, q + 3);
                if (r + 1 < n && s[r] == '-' && r + 2 < n && s[r + 1] == '%' && s[r + 2] == '}') {
                    raw = 1;
                    raw_end = skip_ws(s, n, r + 3);
                } else if (r + 1 < n && s[r] == '%' && s[r + 1] == '}') {
                    raw = 1;
                    raw_end = r + 2;
                }
            }
        }
        size_t keep = lstrip_text(s + i, t - i, sign, kind == '{', line_starting);
        p_data(p, s + i, keep, i);
        if (raw) {
            int ls = raw_end > 0 && s[raw_end - 1] == '\n';
            /* the earliest {%[-+]? endraw ...%} */
            size_t q = raw_end;
            for (;; q++) {
                if (q + 1 >= n) {
                    int l, c;
                    p_linecol(p, t, &l, &c);
                    p_fail(p, KN_ERR_INVALID_ARGUMENT, l, c, "missing end of raw directive");
                    return;
                }
                if (s[q] != '{' || s[q + 1] != '%') continue;
                int sg = q + 2 < n && (s[q + 2] == '-' || s[q + 2] == '+') ? s[q + 2] : 0;
                size_t r = skip_ws(s, n, q + 2 + (sg ? 1 : 0));
                if (r + 6 > n || memcmp(s + r, "endraw", 6) != 0) continue;
                r = skip_ws(s, n, r + 6);
                size_t end = 0;
                int ls2 = 0;
                if (r + 2 < n && s[r] == '+' && s[r + 1] == '%' && s[r + 2] == '}') end = r + 3;
                else if (r + 2 < n && s[r] == '-' && s[r + 1] == '%' && s[r + 2] == '}') {
                    end = skip_ws(s, n, r + 3);
                    ls2 = end > r + 3 && s[end - 1] == '\n';
                } else if (r + 1 < n && s[r] == '%' && s[r + 1] == '}') {
                    end = r + 2;
                    if (end < n && s[end] == '\n') {
                        end++;
                        ls2 = 1;
                    }
                } else continue;
                size_t k2 = lstrip_text(s + raw_end, q - raw_end, sg, 0, ls);
                p_data(p, s + raw_end, k2, raw_end);
                i = end;
                line_starting = ls2;
                break;
            }
            continue;
        }
        if (kind == '#') {
            size_t q = after;
            for (;; q++) {
                if (q + 1 >= n) {
                    int l, c;
                    p_linecol(p, t, &l, &c);
                    p_fail(p, KN_ERR_INVALID_ARGUMENT, l, c, "missing end of comment tag");
                    return;
                }
                if ((s[q] == '+' || s[q] == '-') && q + 2 < n && s[q + 1] == '#' && s[q + 2] == '}') {
                    if (s[q] == '+') {
                        i = q + 3;
                        line_starting = 0;
                    } else {
                        i = skip_ws(s, n, q + 3);
                        line_starting = i > q + 3 && s[i - 1] == '\n';
                    }
                    break;
                }
                if (s[q] == '#' && s[q + 1] == '}') {
                    i = q + 2;
                    line_starting = 0;
                    if (i < n && s[i] == '\n') {
                        i++;
                        line_starting = 1;
                    }
                    break;
                }
            }
            continue;
        }
        p_push(p, kind == '{' ? TK_VAR_BEGIN : TK_BLOCK_BEGIN, t);
        i = lex_tag(p, after, kind == '{', &line_starting);
        if (!i) return;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* syntax tree */

enum {
    /* expressions */
    N_CONST,
    N_NAME,
    N_LIST,
    N_TUPLE,
    N_DICT,
    N_ATTR,
    N_ITEM,
    N_SLICE,
    N_CALL,
    N_FILTER,
    N_TEST,
    N_BIN,
    N_NEG,
    N_POS,
    N_NOT,
    N_AND,
    N_OR,
    N_CMP,
    N_COND,
    N_CONCAT,
    /* statements */
    N_BODY,
    N_TEXT,
    N_EMIT,
    N_IF,
    N_FOR,
    N_SET,
    N_SET_ATTR,
    N_SET_BLOCK,
    N_MACRO,
    N_BREAK,
    N_CONTINUE,
    N_FILTER_BLOCK
};
/* binary operators and comparisons */
enum {
    OP_ADD = 1,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_FDIV,
    OP_MOD,
    OP_POW,
    OP_EQ,
    OP_NE,
    OP_LT,
    OP_LE,
    OP_GT,
    OP_GE,
    OP_IN,
    OP_NOTIN
};

typedef struct node {
    int kind, line, col;
    int op;
    const char *name; /* identifier, attribute, filter or test name */
    size_t name_n;
    jval val;               /* N_CONST */
    struct node *a, *b, *c; /* operands; N_IF: else body; N_FOR: a target(s) b iterable c filter */
    struct node **list;     /* arguments, items, bodies, targets */
    int n;
    struct node **list2; /* keyword argument values, dict values, elif conditions, defaults */
    const char **names;  /* keyword argument names, parameter names */
    int n2;
    int *ops;     /* N_CMP operators */
    int constant; /* N_SLICE over literals only: Jinja may fold it at compile time */
} node;

static node *p_node(ct_parser *p, int kind, const ct_tok *at) {
    node *x = ar_alloc(p->ar, sizeof *x);
    if (!x) {
        if (!p->err) p->err = KN_OOM(sizeof *x);
        return NULL;
    }
    memset(x, 0, sizeof *x);
    x->kind = kind;
    x->line = at ? at->line : 0;
    x->col = at ? at->col : 0;
    return x;
}

/* growable node-pointer vector built in malloc memory, then moved into the arena */
typedef struct nvec {
    node **v;
    const char **names;
    int n, cap;
} nvec;
static int nv_push(ct_parser *p, nvec *v, node *x, const char *name) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 8;
        node **q = realloc(v->v, (size_t)cap * sizeof *q);
        const char **r = q ? realloc(v->names, (size_t)cap * sizeof *r) : NULL;
        if (q) v->v = q;
        if (!q || !r) {
            if (!p->err) p->err = KN_OOM((size_t)cap * sizeof *q);
            return -1;
        }
        v->names = r;
        v->cap = cap;
    }
    v->v[v->n] = x;
    v->names[v->n] = name;
    v->n++;
    return 0;
}
static node **nv_done(ct_parser *p, nvec *v, const char ***names) {
    node **out = NULL;
    if (v->n && !p->err) {
        out = ar_alloc(p->ar, (size_t)v->n * sizeof *out);
        const char **nm = names ? ar_alloc(p->ar, (size_t)v->n * sizeof *nm) : NULL;
        if (!out || (names && !nm)) {
            if (!p->err) p->err = KN_OOM((size_t)v->n * sizeof *out);
            out = NULL;
        } else {
            memcpy(out, v->v, (size_t)v->n * sizeof *out);
            if (names) {
                memcpy(nm, v->names, (size_t)v->n * sizeof *nm);
                *names = nm;
            }
        }
    }
    free(v->v);
    free(v->names);
    v->v = NULL;
    v->names = NULL;
    return out;
}

static ct_tok *cur(ct_parser *p) { return &p->toks[p->pos]; }
static ct_tok *peek_tok(ct_parser *p, int k) {
    int i = p->pos + k;
    return &p->toks[i < p->ntok ? i : p->ntok - 1];
}
static int tok_is_op(const ct_tok *k, const char *op) {
    return k->t == TK_OP && k->n == strlen(op) && memcmp(k->s, op, k->n) == 0;
}
static int tok_is_name(const ct_tok *k, const char *name) {
    return k->t == TK_NAME && k->n == strlen(name) && memcmp(k->s, name, k->n) == 0;
}
static const char *tok_desc(const ct_tok *k, char *buf, size_t cap) {
    switch (k->t) {
    case TK_EOF: return "end of template";
    case TK_DATA: return "template data";
    case TK_VAR_BEGIN: return "'{{'";
    case TK_VAR_END: return "end of print statement '}}'";
    case TK_BLOCK_BEGIN: return "'{%'";
    case TK_BLOCK_END: return "end of statement block '%}'";
    case TK_STRING: return "string";
    case TK_INT: return "integer";
    case TK_FLOAT: return "float";
    default: snprintf(buf, cap, "'%.*s'", (int)(k->n > 40 ? 40 : k->n), k->s); return buf;
    }
}
static void p_unexpected(ct_parser *p, const char *what) {
    char b[64];
    ct_tok *k = cur(p);
    p_fail(p, KN_ERR_INVALID_ARGUMENT, k->line, k->col, "expected %s, got %s", what, tok_desc(k, b, sizeof b));
}
static int expect_op(ct_parser *p, const char *op) {
    if (p->err) return -1;
    if (!tok_is_op(cur(p), op)) {
        char w[16];
        snprintf(w, sizeof w, "'%s'", op);
        p_unexpected(p, w);
        return -1;
    }
    p->pos++;
    return 0;
}
static int expect_t(ct_parser *p, int t, const char *what) {
    if (p->err) return -1;
    if (cur(p)->t != t) {
        p_unexpected(p, what);
        return -1;
    }
    p->pos++;
    return 0;
}
static const char *p_name(ct_parser *p, const ct_tok *k) {
    char *s = ar_alloc(p->ar, k->n + 1);
    if (!s) {
        if (!p->err) p->err = KN_OOM(k->n);
        return "";
    }
    memcpy(s, k->s, k->n);
    s[k->n] = 0;
    return s;
}

static node *parse_expr(ct_parser *p, int with_cond);
static node *parse_tuple(ct_parser *p, int with_cond, int explicit_parens);
static node *parse_unary(ct_parser *p, int with_filter);
static node *parse_or(ct_parser *p);

static const char *const ct_filters[] = {
    "trim",      "length",      "count",     "tojson",     "items",      "join",    "list",
    "first",     "last",        "upper",     "lower",      "capitalize", "replace", "default",
    "d",         "reject",      "select",    "selectattr", "rejectattr", "map",     "string",
    "int",       "float",       "abs",       "safe",       "escape",     "e",       "title",
    "unique",    "reverse",     "sum",       "min",        "max",        "round",   "indent",
    "wordcount", "dictsort",    "sort",      "batch",      "slice",      "center",  "truncate",
    "format",    "pprint",      "striptags", "urlize",     "urlencode",  "xmlattr", "filesizeformat",
    "attr",      "forceescape", "groupby",   "random",     "wordwrap",   "boolean", NULL};
/* filters Jinja has that this subset does not render: parse-time errors naming them */
static int filter_supported(const char *f) {
    static const char *const ok[] = {"trim",    "length", "count",  "tojson", "items",      "join",       "list",
                                     "first",   "last",   "upper",  "lower",  "capitalize", "replace",    "default",
                                     "d",       "reject", "select", "map",    "selectattr", "rejectattr", "string",
                                     "int",     "float",  "abs",    "safe",   "escape",     "e",          "title",
                                     "reverse", "indent", "unique", NULL};
    for (int i = 0; ok[i]; i++)
        if (!strcmp(ok[i], f)) return 1;
    return 0;
}
static int filter_known(const char *f) {
    for (int i = 0; ct_filters[i]; i++)
        if (!strcmp(ct_filters[i], f)) return 1;
    return 0;
}
static const char *const ct_tests[] = {
    "defined",     "undefined", "none",  "string",   "number",  "iterable", "mapping", "sequence", "true", "false",
    "boolean",     "integer",   "float", "equalto",  "eq",      "==",       "ne",      "!=",       "lt",   "<",
    "le",          "<=",        "gt",    ">",        "ge",      ">=",       "in",      "sameas",   "odd",  "even",
    "divisibleby", "lower",     "upper", "callable", "escaped", "filter",   "test",    NULL};
static int test_supported(const char *t) {
    for (int i = 0; ct_tests[i]; i++)
        if (!strcmp(ct_tests[i], t)) return strcmp(t, "escaped") && strcmp(t, "filter") && strcmp(t, "test");
    return 0;
}
static int test_known(const char *t) {
    for (int i = 0; ct_tests[i]; i++)
        if (!strcmp(ct_tests[i], t)) return 1;
    return 0;
}

/* ( args ) after the '(' has been seen: positional then keyword arguments */
static int parse_call_args(ct_parser *p, node *call) {
    nvec pos = {0}, kw = {0};
    if (expect_op(p, "(")) return -1;
    while (!p->err && !tok_is_op(cur(p), ")")) {
        if (pos.n + kw.n) {
            if (expect_op(p, ",")) break;
            if (tok_is_op(cur(p), ")")) break;
        }
        ct_tok *k = cur(p);
        if (tok_is_op(k, "*") || tok_is_op(k, "**")) {
            p_fail(p, KN_ERR_UNSUPPORTED, k->line, k->col,
                   "*args / **kwargs in calls are outside the supported subset");
            break;
        }
        if (k->t == TK_NAME && tok_is_op(peek_tok(p, 1), "=")) {
            const char *nm = p_name(p, k);
            p->pos += 2;
            node *v = parse_expr(p, 1);
            if (!v) break;
            nv_push(p, &kw, v, nm);
        } else {
            if (kw.n) {
                p_fail(p, KN_ERR_INVALID_ARGUMENT, k->line, k->col, "positional argument after a keyword argument");
                break;
            }
            node *v = parse_expr(p, 1);
            if (!v) break;
            nv_push(p, &pos, v, NULL);
        }
    }
    if (!p->err) expect_op(p, ")");
    call->n = pos.n;
    call->list = nv_done(p, &pos, NULL);
    call->n2 = kw.n;
    call->list2 = nv_done(p, &kw, &call->names);
    return p->err ? -1 : 0;
}

/* a dotted name after '|' or 'is' */
static const char *parse_dotted(ct_parser *p) {
    ct_tok *k = cur(p);
    if (k->t != TK_NAME) {
        p_unexpected(p, "a name");
        return NULL;
    }
    p->pos++;
    char buf[256];
    size_t m = 0;
    memcpy(buf, k->s, k->n < 200 ? k->n : 200);
    m = k->n < 200 ? k->n : 200;
    while (tok_is_op(cur(p), ".") && peek_tok(p, 1)->t == TK_NAME && m < 200) {
        ct_tok *q = peek_tok(p, 1);
        buf[m++] = '.';
        size_t c = q->n < 200 - m ? q->n : 200 - m;
        memcpy(buf + m, q->s, c);
        m += c;
        p->pos += 2;
    }
    buf[m] = 0;
    ct_tok tmp = {.s = buf, .n = m};
    return p_name(p, &tmp);
}

static node *parse_filter(ct_parser *p, node *x) {
    ct_tok *at = cur(p);
    if (tok_is_op(at, "|")) p->pos++; /* absent only before the first filter of a filter block */
    ct_tok *nk = cur(p);
    const char *name = parse_dotted(p);
    if (!name) return NULL;
    /* an unknown name fails after parsing unless an if or inline if holds it (check_names), an
     * unsupported one when it runs: Jinja too compiles those and fails only if they are reached */
    node *f = p_node(p, N_FILTER, at);
    if (!f) return NULL;
    f->op = !filter_known(name) ? 2 : !filter_supported(name) ? 1 : 0;
    f->ops = ar_alloc(p->ar, 2 * sizeof(int));
    if (!f->ops) {
        p->err = KN_OOM(8);
        return NULL;
    }
    f->ops[0] = nk->line;
    f->ops[1] = nk->col;
    f->name = name;
    f->a = x;
    if (tok_is_op(cur(p), "(") && parse_call_args(p, f)) return NULL;
    return f;
}

static node *parse_primary(ct_parser *p);
static node *parse_postfix(ct_parser *p, node *x);

/* whether Jinja's optimizer can fold the expression (literals, operators and filters over them) */
static int is_const(const node *x) {
    if (!x) return 1;
    switch (x->kind) {
    case N_CONST: return 1;
    case N_SLICE: return x->constant;
    case N_LIST:
    case N_TUPLE:
    case N_CONCAT:
        for (int i = 0; i < x->n; i++)
            if (!is_const(x->list[i])) return 0;
        return 1;
    case N_DICT:
        for (int i = 0; i < x->n; i++)
            if (!is_const(x->list[i]) || !is_const(x->list2[i])) return 0;
        return 1;
    case N_FILTER:
    case N_TEST:
        for (int i = 0; i < x->n; i++)
            if (!is_const(x->list[i])) return 0;
        for (int i = 0; i < x->n2; i++)
            if (!is_const(x->list2[i])) return 0;
        return is_const(x->a);
    case N_ITEM:
    case N_BIN:
    case N_AND:
    case N_OR: return is_const(x->a) && is_const(x->b);
    case N_ATTR:
    case N_NEG:
    case N_POS:
    case N_NOT: return is_const(x->a);
    case N_COND: return is_const(x->a) && is_const(x->b) && is_const(x->c);
    case N_CMP:
        for (int i = 0; i < x->n; i++)
            if (!is_const(x->list[i])) return 0;
        return is_const(x->a);
    default: return 0;
    }
}

static node *parse_test(ct_parser *p, node *x) {
    ct_tok *at = cur(p);
    p->pos++; /* 'is' */
    int neg = 0;
    if (tok_is_name(cur(p), "not")) {
        neg = 1;
        p->pos++;
    }
    ct_tok *nk = cur(p);
    const char *name = NULL;
    /* the operator aliases of tests (x is == 1) are names in Jinja's grammar only; keep names */
    name = parse_dotted(p);
    if (!name) return NULL;
    node *t = p_node(p, N_TEST, at);
    if (!t) return NULL;
    t->op = !test_known(name) ? 2 : !test_supported(name) ? 1 : 0;
    t->ops = ar_alloc(p->ar, 2 * sizeof(int));
    if (!t->ops) {
        p->err = KN_OOM(8);
        return NULL;
    }
    t->ops[0] = nk->line;
    t->ops[1] = nk->col;
    t->name = name;
    t->a = x;
    ct_tok *k = cur(p);
    if (tok_is_op(k, "(")) {
        if (parse_call_args(p, t)) return NULL;
    } else if ((k->t == TK_NAME || k->t == TK_STRING || k->t == TK_INT || k->t == TK_FLOAT || tok_is_op(k, "(") ||
                tok_is_op(k, "[") || tok_is_op(k, "{")) &&
               !tok_is_name(k, "else") && !tok_is_name(k, "or") && !tok_is_name(k, "and")) {
        if (tok_is_name(k, "is")) {
            p_fail(p, KN_ERR_INVALID_ARGUMENT, k->line, k->col, "you cannot chain multiple tests with is");
            return NULL;
        }
        node *arg = parse_primary(p);
        if (arg) arg = parse_postfix(p, arg);
        if (!arg) return NULL;
        t->list = ar_alloc(p->ar, sizeof(node *));
        if (!t->list) {
            p->err = KN_OOM(sizeof(node *));
            return NULL;
        }
        t->list[0] = arg;
        t->n = 1;
    }
    if (neg) {
        node *nn = p_node(p, N_NOT, at);
        if (!nn) return NULL;
        nn->a = t;
        return nn;
    }
    return t;
}

static node *parse_subscribed(ct_parser *p) {
    ct_tok *at = cur(p);
    node *args[3] = {NULL, NULL, NULL};
    if (tok_is_op(cur(p), ":")) {
        p->pos++;
    } else {
        node *x = parse_expr(p, 1);
        if (!x || !tok_is_op(cur(p), ":")) return x;
        p->pos++;
        args[0] = x;
    }
    if (tok_is_op(cur(p), ":")) {
        /* start::step */
    } else if (!tok_is_op(cur(p), "]") && !tok_is_op(cur(p), ",")) {
        args[1] = parse_expr(p, 1);
        if (!args[1]) return NULL;
    }
    if (tok_is_op(cur(p), ":")) {
        p->pos++;
        if (!tok_is_op(cur(p), "]") && !tok_is_op(cur(p), ",")) {
            args[2] = parse_expr(p, 1);
            if (!args[2]) return NULL;
        }
    }
    node *s = p_node(p, N_SLICE, at);
    if (!s) return NULL;
    s->a = args[0];
    s->b = args[1];
    s->c = args[2];
    return s;
}

static node *parse_postfix(ct_parser *p, node *x) {
    while (x && !p->err) {
        ct_tok *k = cur(p);
        if (tok_is_op(k, ".")) {
            p->pos++;
            ct_tok *a = cur(p);
            if (a->t == TK_NAME) {
                node *g = p_node(p, N_ATTR, k);
                if (!g) return NULL;
                g->a = x;
                g->name = p_name(p, a);
                g->name_n = a->n;
                p->pos++;
                x = g;
            } else if (a->t == TK_INT) {
                node *g = p_node(p, N_ITEM, k);
                node *c = p_node(p, N_CONST, a);
                if (!g || !c) return NULL;
                c->val = jint(a->i);
                g->a = x;
                g->b = c;
                p->pos++;
                x = g;
            } else {
                p_unexpected(p, "a name or number after '.'");
                return NULL;
            }
        } else if (tok_is_op(k, "[")) {
            p->pos++;
            /* x[a], x[a:b:c], or a tuple key x[a, b] / x[] (Jinja's parse_subscript) */
            node *idx = NULL;
            nvec items = {0};
            while (!p->err && !tok_is_op(cur(p), "]")) {
                if (items.n && expect_op(p, ",")) break; /* no trailing comma, as Jinja */
                node *e = parse_subscribed(p);
                if (!e) break;
                nv_push(p, &items, e, NULL);
            }
            int single = items.n == 1;
            if (!p->err && single) {
                idx = items.v[0];
                free(items.v);
                free(items.names);
            } else if (!p->err) {
                for (int i = 0; i < items.n; i++)
                    if (items.v[i]->kind == N_SLICE && items.v[i]->n == 0)
                        p_fail(p, KN_ERR_UNSUPPORTED, items.v[i]->line, items.v[i]->col,
                               "slices inside a tuple subscript are outside the supported subset");
                idx = p_node(p, N_TUPLE, k);
                int n = items.n;
                node **l = nv_done(p, &items, NULL);
                if (idx) {
                    idx->n = n;
                    idx->list = l;
                }
            } else {
                free(items.v);
                free(items.names);
            }
            if (p->err || !idx || expect_op(p, "]")) return NULL;
            /* a slice spec has no operand yet; a slice expression used as the key has one */
            int is_slice = idx->kind == N_SLICE && idx->n == 0;
            node *g = p_node(p, is_slice ? N_SLICE : N_ITEM, k);
            if (!g) return NULL;
            if (is_slice) {
                *g = *idx;
                g->line = k->line;
                g->col = k->col;
                g->list = ar_alloc(p->ar, sizeof(node *));
                if (!g->list) {
                    p->err = KN_OOM(8);
                    return NULL;
                }
                g->list[0] = x; /* the sliced value; a/b/c are start/stop/step */
                g->n = 1;
                g->constant =
                    is_const(x) && (!g->a || is_const(g->a)) && (!g->b || is_const(g->b)) && (!g->c || is_const(g->c));
            } else {
                g->a = x;
                g->b = idx;
            }
            x = g;
        } else if (tok_is_op(k, "(")) {
            node *c = p_node(p, N_CALL, k);
            if (!c) return NULL;
            c->a = x;
            if (parse_call_args(p, c)) return NULL;
            x = c;
        } else {
            break;
        }
    }
    return x;
}

static node *parse_filter_expr(ct_parser *p, node *x) {
    while (x && !p->err) {
        ct_tok *k = cur(p);
        if (tok_is_op(k, "|")) x = parse_filter(p, x);
        else if (tok_is_name(k, "is")) x = parse_test(p, x);
        else if (tok_is_op(k, "(")) {
            node *c = p_node(p, N_CALL, k);
            if (!c) return NULL;
            c->a = x;
            if (parse_call_args(p, c)) return NULL;
            x = c;
        } else break;
    }
    return x;
}

static node *parse_primary(ct_parser *p) {
    ct_tok *k = cur(p);
    if (p->err) return NULL;
    if (k->t == TK_NAME) {
        node *x = p_node(p, N_CONST, k);
        if (!x) return NULL;
        p->pos++;
        if (tok_is_name(k, "true") || tok_is_name(k, "True")) x->val = jbool(1);
        else if (tok_is_name(k, "false") || tok_is_name(k, "False")) x->val = jbool(0);
        else if (tok_is_name(k, "none") || tok_is_name(k, "None")) x->val = jnone();
        else {
            x->kind = N_NAME;
            x->name = p_name(p, k);
            x->name_n = k->n;
        }
        return x;
    }
    if (k->t == TK_STRING) {
        node *x = p_node(p, N_CONST, k);
        if (!x) return NULL;
        /* adjacent literals concatenate */
        size_t total = 0;
        int e = p->pos;
        while (e < p->ntok && p->toks[e].t == TK_STRING) total += p->toks[e++].n;
        char *s = ar_alloc(p->ar, total + 1);
        if (!s) {
            p->err = KN_OOM(total);
            return NULL;
        }
        size_t m = 0;
        for (int i = p->pos; i < e; i++) {
            memcpy(s + m, p->toks[i].s, p->toks[i].n);
            m += p->toks[i].n;
        }
        s[m] = 0;
        x->val = jstr(s, m);
        p->pos = e;
        return x;
    }
    if (k->t == TK_INT || k->t == TK_FLOAT) {
        node *x = p_node(p, N_CONST, k);
        if (!x) return NULL;
        x->val = k->t == TK_INT ? jint(k->i) : jfloat(k->f);
        p->pos++;
        return x;
    }
    if (tok_is_op(k, "(")) {
        p->pos++;
        node *x = parse_tuple(p, 1, 1);
        if (!x || expect_op(p, ")")) return NULL;
        return x;
    }
    if (tok_is_op(k, "[")) {
        p->pos++;
        node *x = p_node(p, N_LIST, k);
        nvec items = {0};
        while (x && !p->err && !tok_is_op(cur(p), "]")) {
            if (items.n && (expect_op(p, ",") || tok_is_op(cur(p), "]"))) break;
            node *e = parse_expr(p, 1);
            if (!e) break;
            nv_push(p, &items, e, NULL);
        }
        if (x) {
            x->n = items.n;
            x->list = nv_done(p, &items, NULL);
        } else free(items.v), free(items.names);
        if (p->err || expect_op(p, "]")) return NULL;
        return x;
    }
    if (tok_is_op(k, "{")) {
        p->pos++;
        node *x = p_node(p, N_DICT, k);
        nvec keys = {0}, vals = {0};
        while (x && !p->err && !tok_is_op(cur(p), "}")) {
            if (keys.n && (expect_op(p, ",") || tok_is_op(cur(p), "}"))) break;
            node *kx = parse_expr(p, 1);
            if (!kx || expect_op(p, ":")) break;
            node *vx = parse_expr(p, 1);
            if (!vx) break;
            nv_push(p, &keys, kx, NULL);
            nv_push(p, &vals, vx, NULL);
        }
        if (x) {
            x->n = keys.n;
            x->list = nv_done(p, &keys, NULL);
            x->n2 = vals.n;
            x->list2 = nv_done(p, &vals, NULL);
        } else {
            free(keys.v), free(keys.names), free(vals.v), free(vals.names);
        }
        if (p->err || expect_op(p, "}")) return NULL;
        return x;
    }
    p_unexpected(p, "an expression");
    return NULL;
}

static node *parse_unary(ct_parser *p, int with_filter) {
    if (++p->depth > CT_MAX_DEPTH) {
        p_fail(p, KN_ERR_INVALID_ARGUMENT, cur(p)->line, cur(p)->col, "expression nested too deeply");
        return NULL;
    }
    ct_tok *k = cur(p);
    node *x;
    if (tok_is_op(k, "-") || tok_is_op(k, "+")) {
        p->pos++;
        x = p_node(p, tok_is_op(k, "-") ? N_NEG : N_POS, k);
        node *a = parse_unary(p, 0);
        if (!x || !a) return NULL;
        x->a = a;
    } else {
        x = parse_primary(p);
    }
    x = parse_postfix(p, x);
    if (with_filter) x = parse_filter_expr(p, x);
    p->depth--;
    return x;
}

static node *bin(ct_parser *p, int op, ct_tok *at, node *l, node *r) {
    if (!l || !r) return NULL;
    node *x = p_node(p, N_BIN, at);
    if (!x) return NULL;
    x->op = op;
    x->a = l;
    x->b = r;
    return x;
}
static node *parse_pow(ct_parser *p) {
    node *l = parse_unary(p, 1);
    while (l && tok_is_op(cur(p), "**")) {
        ct_tok *at = cur(p);
        p->pos++;
        l = bin(p, OP_POW, at, l, parse_unary(p, 1));
    }
    return l;
}
static node *parse_math2(ct_parser *p) {
    node *l = parse_pow(p);
    for (;;) {
        ct_tok *k = cur(p);
        int op = tok_is_op(k, "*") ? OP_MUL
            : tok_is_op(k, "/")    ? OP_DIV
            : tok_is_op(k, "//")   ? OP_FDIV
            : tok_is_op(k, "%")    ? OP_MOD
                                   : 0;
        if (!op || !l) return l;
        p->pos++;
        l = bin(p, op, k, l, parse_pow(p));
    }
}
static node *parse_concat(ct_parser *p) {
    ct_tok *at = cur(p);
    node *first = parse_math2(p);
    if (!first || !tok_is_op(cur(p), "~")) return first;
    nvec v = {0};
    nv_push(p, &v, first, NULL);
    while (!p->err && tok_is_op(cur(p), "~")) {
        p->pos++;
        node *x = parse_math2(p);
        if (!x) break;
        nv_push(p, &v, x, NULL);
    }
    node *c = p_node(p, N_CONCAT, at);
    int n = v.n;
    node **l = nv_done(p, &v, NULL);
    if (!c || p->err) return NULL;
    c->n = n;
    c->list = l;
    return c;
}
static node *parse_math1(ct_parser *p) {
    node *l = parse_concat(p);
    for (;;) {
        ct_tok *k = cur(p);
        int op = tok_is_op(k, "+") ? OP_ADD : tok_is_op(k, "-") ? OP_SUB : 0;
        if (!op || !l) return l;
        p->pos++;
        l = bin(p, op, k, l, parse_concat(p));
    }
}
static node *parse_compare(ct_parser *p) {
    ct_tok *at = cur(p);
    node *x = parse_math1(p);
    if (!x) return NULL;
    nvec rhs = {0};
    int ops[64], nops = 0;
    for (;;) {
        ct_tok *k = cur(p);
        int op = tok_is_op(k, "==") ? OP_EQ
            : tok_is_op(k, "!=")    ? OP_NE
            : tok_is_op(k, "<")     ? OP_LT
            : tok_is_op(k, "<=")    ? OP_LE
            : tok_is_op(k, ">")     ? OP_GT
            : tok_is_op(k, ">=")    ? OP_GE
                                    : 0;
        if (op) p->pos++;
        else if (tok_is_name(k, "in")) {
            op = OP_IN;
            p->pos++;
        } else if (tok_is_name(k, "not") && tok_is_name(peek_tok(p, 1), "in")) {
            op = OP_NOTIN;
            p->pos += 2;
        } else break;
        if (nops == 64) {
            p_fail(p, KN_ERR_UNSUPPORTED, k->line, k->col, "more than 64 chained comparisons");
            break;
        }
        node *r = parse_math1(p);
        if (!r) break;
        ops[nops++] = op;
        nv_push(p, &rhs, r, NULL);
    }
    if (!nops || p->err) {
        free(rhs.v);
        free(rhs.names);
        return p->err ? NULL : x;
    }
    node *c = p_node(p, N_CMP, at);
    int n = rhs.n;
    node **l = nv_done(p, &rhs, NULL);
    int *o = ar_alloc(p->ar, sizeof(int) * (size_t)nops);
    if (!c || !l || !o) {
        if (!p->err) p->err = KN_OOM(64);
        return NULL;
    }
    memcpy(o, ops, sizeof(int) * (size_t)nops);
    c->a = x;
    c->n = n;
    c->list = l;
    c->ops = o;
    return c;
}
static node *parse_not(ct_parser *p) {
    ct_tok *k = cur(p);
    if (tok_is_name(k, "not")) {
        if (++p->depth > CT_MAX_DEPTH) {
            p_fail(p, KN_ERR_INVALID_ARGUMENT, k->line, k->col, "expression nested too deeply");
            return NULL;
        }
        p->pos++;
        node *x = p_node(p, N_NOT, k);
        node *a = parse_not(p);
        p->depth--;
        if (!x || !a) return NULL;
        x->a = a;
        return x;
    }
    return parse_compare(p);
}
static node *parse_and(ct_parser *p) {
    node *l = parse_not(p);
    while (l && tok_is_name(cur(p), "and")) {
        ct_tok *k = cur(p);
        p->pos++;
        node *r = parse_not(p);
        node *x = r ? p_node(p, N_AND, k) : NULL;
        if (!x) return NULL;
        x->a = l;
        x->b = r;
        l = x;
    }
    return l;
}
static node *parse_or(ct_parser *p) {
    node *l = parse_and(p);
    while (l && tok_is_name(cur(p), "or")) {
        ct_tok *k = cur(p);
        p->pos++;
        node *r = parse_and(p);
        node *x = r ? p_node(p, N_OR, k) : NULL;
        if (!x) return NULL;
        x->a = l;
        x->b = r;
        l = x;
    }
    return l;
}
static node *parse_cond(ct_parser *p) {
    ct_tok *at = cur(p);
    node *x = parse_or(p);
    while (x && tok_is_name(cur(p), "if")) {
        if (++p->depth > CT_MAX_DEPTH) {
            p_fail(p, KN_ERR_INVALID_ARGUMENT, at->line, at->col, "expression nested too deeply");
            return NULL;
        }
        p->pos++;
        node *c = parse_or(p);
        node *e = NULL;
        if (c && tok_is_name(cur(p), "else")) {
            p->pos++;
            e = parse_cond(p);
            if (!e) return NULL;
        }
        p->depth--;
        node *y = c ? p_node(p, N_COND, at) : NULL;
        if (!y) return NULL;
        y->a = c;
        y->b = x;
        y->c = e;
        x = y;
        at = cur(p);
    }
    return x;
}
static node *parse_expr(ct_parser *p, int with_cond) {
    if (++p->depth > CT_MAX_DEPTH) {
        p_fail(p, KN_ERR_INVALID_ARGUMENT, cur(p)->line, cur(p)->col, "expression nested too deeply");
        return NULL;
    }
    node *x = with_cond ? parse_cond(p) : parse_or(p);
    p->depth--;
    return x;
}
/* expression or tuple "a, b" (a trailing comma makes a one-element tuple) */
static node *parse_tuple(ct_parser *p, int with_cond, int explicit_parens) {
    ct_tok *at = cur(p);
    nvec v = {0};
    int is_tuple = 0;
    for (;;) {
        if (v.n) {
            if (!tok_is_op(cur(p), ",")) break;
            p->pos++;
            is_tuple = 1;
        }
        ct_tok *k = cur(p);
        if (v.n &&
            (k->t == TK_VAR_END || k->t == TK_BLOCK_END || tok_is_op(k, ")") || tok_is_op(k, "]") ||
             tok_is_op(k, "}") || tok_is_name(k, "recursive") || tok_is_name(k, "if") || tok_is_name(k, "in")))
            break;
        if (!v.n && explicit_parens && tok_is_op(k, ")")) break; /* () */
        node *x = parse_expr(p, with_cond);
        if (!x) {
            free(v.v);
            free(v.names);
            return NULL;
        }
        nv_push(p, &v, x, NULL);
    }
    if (!is_tuple && v.n == 1) {
        node *x = v.v[0];
        free(v.v);
        free(v.names);
        return x;
    }
    node *t = p_node(p, N_TUPLE, at);
    int n = v.n;
    node **l = nv_done(p, &v, NULL);
    if (!t || p->err) return NULL;
    t->n = n;
    t->list = l;
    return t;
}

/* ---- statements ---- */

static node *parse_body(ct_parser *p, const char *const *ends);

static int end_block(ct_parser *p) { return expect_t(p, TK_BLOCK_END, "end of statement block '%}'"); }
/* the end of a statement head before a body: Jinja's parse_statements skips an optional ':' */
static int end_head(ct_parser *p) {
    if (tok_is_op(cur(p), ":")) p->pos++;
    return end_block(p);
}

/* an assignment target: name, ns.attr (when allowed) or a tuple of names */
static node *parse_target(ct_parser *p, int with_ns, int *is_attr) {
    nvec v = {0};
    ct_tok *at = cur(p);
    *is_attr = 0;
    int parens = 0;
    if (tok_is_op(cur(p), "(")) {
        parens = 1;
        p->pos++;
    }
    for (;;) {
        ct_tok *k = cur(p);
        if (k->t != TK_NAME) {
            p_unexpected(p, "a name to assign to");
            break;
        }
        node *x;
        if (with_ns && tok_is_op(peek_tok(p, 1), ".") && peek_tok(p, 2)->t == TK_NAME) {
            /* ns.attr (Jinja's NSRef), alone or inside a tuple target */
            x = p_node(p, N_ATTR, k);
            if (!x) break;
            x->name = p_name(p, k);
            x->name_n = k->n;
            ct_tok *a = peek_tok(p, 2);
            node *an = p_node(p, N_CONST, a);
            if (!an) break;
            an->val = jstr(p_name(p, a), a->n);
            x->a = an;
            p->pos += 3;
        } else {
            x = p_node(p, N_NAME, k);
            if (!x) break;
            x->name = p_name(p, k);
            x->name_n = k->n;
            p->pos++;
        }
        if (!v.n && x->kind == N_ATTR && !parens && !tok_is_op(cur(p), ",")) {
            *is_attr = 1;
            free(v.v);
            free(v.names);
            return x;
        }
        nv_push(p, &v, x, NULL);
        if (!tok_is_op(cur(p), ",")) break;
        p->pos++;
        ct_tok *nx = cur(p);
        if (tok_is_name(nx, "in") || (parens && tok_is_op(nx, ")"))) break;
    }
    if (parens && !p->err) expect_op(p, ")");
    if (p->err) {
        free(v.v);
        free(v.names);
        return NULL;
    }
    node *t = p_node(p, N_TUPLE, at);
    int n = v.n;
    node **l = nv_done(p, &v, NULL);
    if (!t) return NULL;
    t->n = n;
    t->list = l;
    return t;
}

static const char *const ct_unsupported_tags[] = {"call", "with", "block",      "extends", "include", "import",
                                                  "from", "do",   "autoescape", "trans",   NULL};

static node *parse_statement(ct_parser *p) {
    ct_tok *bt = cur(p); /* '{%' */
    p->pos++;
    ct_tok *k = cur(p);
    if (k->t != TK_NAME) {
        p_unexpected(p, "a statement name");
        return NULL;
    }
    if (++p->depth > CT_MAX_DEPTH) {
        p_fail(p, KN_ERR_INVALID_ARGUMENT, k->line, k->col, "statements nested too deeply");
        return NULL;
    }
    node *res = NULL;
    if (tok_is_name(k, "if")) {
        p->pos++;
        node *x = p_node(p, N_IF, k);
        nvec conds = {0}, bodies = {0};
        static const char *const ends[] = {"elif", "else", "endif", NULL};
        static const char *const ends2[] = {"endif", NULL};
        for (;;) {
            node *c = parse_tuple(p, 0, 0);
            if (!c || end_head(p)) break;
            node *b = parse_body(p, ends);
            if (!b) break;
            nv_push(p, &conds, c, NULL);
            nv_push(p, &bodies, b, NULL);
            ct_tok *e = cur(p);
            p->pos++;
            if (tok_is_name(e, "elif")) continue;
            if (tok_is_name(e, "else")) {
                if (end_head(p)) break;
                node *eb = parse_body(p, ends2);
                if (!eb) break;
                if (x) x->c = eb;
                p->pos++;
            }
            end_block(p);
            break;
        }
        if (x) {
            x->n = conds.n;
            x->list2 = nv_done(p, &conds, NULL);
            x->n2 = bodies.n;
            x->list = nv_done(p, &bodies, NULL);
        } else {
            free(conds.v), free(conds.names), free(bodies.v), free(bodies.names);
        }
        res = p->err ? NULL : x;
    } else if (tok_is_name(k, "for")) {
        p->pos++;
        node *x = p_node(p, N_FOR, k);
        int is_attr;
        node *tg = x ? parse_target(p, 0, &is_attr) : NULL;
        if (tg && !tok_is_name(cur(p), "in")) p_unexpected(p, "'in'");
        if (tg && !p->err) {
            p->pos++;
            node *it = parse_tuple(p, 0, 0);
            node *flt = NULL;
            if (it && tok_is_name(cur(p), "if")) {
                p->pos++;
                flt = parse_expr(p, 1);
            }
            if (it && tok_is_name(cur(p), "recursive"))
                p_fail(p, KN_ERR_UNSUPPORTED, cur(p)->line, cur(p)->col,
                       "recursive for loops are outside the supported subset");
            if (it && !p->err && !end_head(p)) {
                static const char *const ends[] = {"endfor", "else", NULL};
                static const char *const ends2[] = {"endfor", NULL};
                p->loop_depth++;
                node *body = parse_body(p, ends);
                p->loop_depth--;
                if (body) {
                    x->a = tg;
                    x->b = it;
                    x->c = flt;
                    x->list = ar_alloc(p->ar, 2 * sizeof(node *));
                    if (!x->list) p->err = KN_OOM(16);
                    else {
                        x->list[0] = body;
                        x->list[1] = NULL;
                        x->n = 1;
                        ct_tok *e = cur(p);
                        p->pos++;
                        if (tok_is_name(e, "else")) {
                            /* else runs outside the loop: break there belongs to an outer loop */
                            if (!end_head(p)) {
                                x->list[1] = parse_body(p, ends2);
                                p->pos++;
                            }
                        }
                        end_block(p);
                    }
                }
            }
        }
        res = p->err ? NULL : x;
    } else if (tok_is_name(k, "set")) {
        p->pos++;
        int is_attr;
        node *tg = parse_target(p, 1, &is_attr);
        if (tg && tok_is_op(cur(p), "=")) {
            p->pos++;
            node *v = parse_tuple(p, 1, 0);
            node *x = v ? p_node(p, is_attr ? N_SET_ATTR : N_SET, k) : NULL;
            if (x && !end_block(p)) {
                x->a = tg;
                x->b = v;
                res = x;
            }
        } else if (tg && !is_attr) {
            if (tok_is_op(cur(p), "|")) {
                p_fail(p, KN_ERR_UNSUPPORTED, cur(p)->line, cur(p)->col,
                       "filtered block assignments are outside the supported subset");
            } else if (!end_head(p)) {
                static const char *const ends[] = {"endset", NULL};
                node *body = parse_body(p, ends);
                node *x = body ? p_node(p, N_SET_BLOCK, k) : NULL;
                if (x) {
                    p->pos++;
                    if (!end_block(p)) {
                        x->a = tg;
                        x->b = body;
                        res = x;
                    }
                }
            }
        } else if (tg) {
            p_unexpected(p, "'='");
        }
    } else if (tok_is_name(k, "macro")) {
        p->pos++;
        ct_tok *nk = cur(p);
        if (nk->t != TK_NAME) p_unexpected(p, "a macro name");
        else p->pos++;
        node *x = p->err ? NULL : p_node(p, N_MACRO, k);
        nvec params = {0}, defs = {0};
        if (x && !expect_op(p, "(")) {
            x->name = p_name(p, nk);
            while (!p->err && !tok_is_op(cur(p), ")")) {
                if (params.n && (expect_op(p, ",") || tok_is_op(cur(p), ")"))) break;
                ct_tok *pk = cur(p);
                if (pk->t != TK_NAME) {
                    p_unexpected(p, "a parameter name");
                    break;
                }
                p->pos++;
                node *d = NULL;
                if (tok_is_op(cur(p), "=")) {
                    p->pos++;
                    d = parse_expr(p, 1);
                    if (!d) break;
                } else if (defs.n && defs.v[defs.n - 1]) {
                    p_fail(p, KN_ERR_INVALID_ARGUMENT, pk->line, pk->col,
                           "non-default argument follows default argument");
                    break;
                }
                nv_push(p, &params, NULL, p_name(p, pk));
                nv_push(p, &defs, d, NULL);
            }
            if (!p->err && !expect_op(p, ")") && !end_head(p)) {
                static const char *const ends[] = {"endmacro", NULL};
                p->macro_depth++;
                int saved = p->loop_depth;
                p->loop_depth = 0;
                node *body = parse_body(p, ends);
                p->loop_depth = saved;
                p->macro_depth--;
                if (body) {
                    p->pos++;
                    if (!end_block(p)) {
                        x->a = body;
                        res = x;
                    }
                }
            }
        }
        x = res;
        int np = params.n;
        const char **names = NULL;
        nv_done(p, &params, &names);
        node **dl = nv_done(p, &defs, NULL);
        if (x) {
            x->n2 = np;
            x->names = names;
            x->list2 = dl;
        }
    } else if (tok_is_name(k, "break") || tok_is_name(k, "continue")) {
        p->pos++;
        if (!p->loop_depth)
            p_fail(p, KN_ERR_INVALID_ARGUMENT, k->line, k->col, "'%.*s' outside of a loop", (int)k->n, k->s);
        else {
            node *x = p_node(p, tok_is_name(k, "break") ? N_BREAK : N_CONTINUE, k);
            if (x && !end_block(p)) res = x;
        }
    } else if (tok_is_name(k, "filter")) {
        /* {% filter f(args)|g %}body{% endfilter %}: the rendered body through the filters; the
         * chain is built over a placeholder name no template can spell */
        p->pos++;
        node *ph = p_node(p, N_NAME, k);
        if (ph) {
            ph->name = " body";
            ph->name_n = 5;
        }
        node *chain = ph ? parse_filter(p, ph) : NULL;
        while (chain && tok_is_op(cur(p), "|")) chain = parse_filter(p, chain);
        if (chain && !end_head(p)) {
            static const char *const ends[] = {"endfilter", NULL};
            node *body = parse_body(p, ends);
            node *x = body ? p_node(p, N_FILTER_BLOCK, k) : NULL;
            if (x) {
                p->pos++;
                if (!end_block(p)) {
                    x->a = body;
                    x->b = chain;
                    res = x;
                }
            }
        }
    } else if (tok_is_name(k, "generation")) {
        /* transformers' AssistantTracker: the body renders as it is */
        p->pos++;
        if (!end_head(p)) {
            static const char *const ends[] = {"endgeneration", NULL};
            node *body = parse_body(p, ends);
            if (body) {
                p->pos++;
                if (!end_block(p)) res = body;
            }
        }
    } else {
        int known = 0;
        for (int i = 0; ct_unsupported_tags[i]; i++)
            if (tok_is_name(k, ct_unsupported_tags[i])) known = 1;
        if (known)
            p_fail(p, KN_ERR_UNSUPPORTED, k->line, k->col, "tag '%.*s' is outside the supported subset", (int)k->n,
                   k->s);
        else
            p_fail(p, KN_ERR_INVALID_ARGUMENT, k->line, k->col, "encountered unknown tag '%.*s'",
                   (int)(k->n > 40 ? 40 : k->n), k->s);
    }
    (void)bt;
    p->depth--;
    return p->err ? NULL : res;
}

/* statements until one of ends (left current: the name after '{%'), or the end of the template */
static node *parse_body(ct_parser *p, const char *const *ends) {
    ct_tok *at = cur(p);
    node *b = p_node(p, N_BODY, at);
    nvec v = {0};
    while (b && !p->err) {
        ct_tok *k = cur(p);
        if (k->t == TK_EOF) {
            if (ends) {
                char want[128] = "";
                for (int i = 0; ends[i]; i++) {
                    strncat(want, i ? " or '" : "'", sizeof want - strlen(want) - 1);
                    strncat(want, ends[i], sizeof want - strlen(want) - 1);
                    strncat(want, "'", sizeof want - strlen(want) - 1);
                }
                p_fail(p, KN_ERR_INVALID_ARGUMENT, k->line, k->col, "unexpected end of template, expected %s", want);
            }
            break;
        }
        if (k->t == TK_DATA) {
            node *x = p_node(p, N_TEXT, k);
            if (!x) break;
            x->val = jstr(k->s, k->n);
            nv_push(p, &v, x, NULL);
            p->pos++;
        } else if (k->t == TK_VAR_BEGIN) {
            p->pos++;
            node *e = parse_tuple(p, 1, 0);
            if (!e || expect_t(p, TK_VAR_END, "end of print statement '}}'")) break;
            node *x = p_node(p, N_EMIT, k);
            if (!x) break;
            x->a = e;
            nv_push(p, &v, x, NULL);
        } else if (k->t == TK_BLOCK_BEGIN) {
            ct_tok *nm = peek_tok(p, 1);
            int is_end = 0;
            for (int i = 0; ends && ends[i]; i++)
                if (tok_is_name(nm, ends[i])) is_end = 1;
            if (is_end) {
                p->pos++;
                break;
            }
            if (nm->t == TK_NAME &&
                (tok_is_name(nm, "endif") || tok_is_name(nm, "endfor") || tok_is_name(nm, "else") ||
                 tok_is_name(nm, "elif") || tok_is_name(nm, "endset") || tok_is_name(nm, "endmacro") ||
                 tok_is_name(nm, "endgeneration") || tok_is_name(nm, "endraw") || tok_is_name(nm, "endfilter"))) {
                p_fail(p, KN_ERR_INVALID_ARGUMENT, nm->line, nm->col, "unexpected '%.*s'", (int)nm->n, nm->s);
                break;
            }
            node *x = parse_statement(p);
            if (!x) break;
            nv_push(p, &v, x, NULL);
        } else {
            p_unexpected(p, "template data or a tag");
            break;
        }
    }
    int n = v.n;
    node **l = nv_done(p, &v, NULL);
    if (!b || p->err) return NULL;
    b->n = n;
    b->list = l;
    return b;
}

/* ------------------------------------------------------------------------------------------ */
/* rendering state */

typedef struct scope {
    struct scope *parent;
    int n, cap;
    int captured; /* a macro defined here refers to it: it outlives its loop iteration */
    const char **names;
    jval *vals;
} scope;

typedef struct rctx {
    ct_arena ar;
    kn_status *err;
    int64_t steps;
    int depth;
    jdict *ctx; /* the context variables */
    time_t now;
    size_t max_out;
} rctx;

static void r_fail(rctx *r, const node *at, kn_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void r_fail(rctx *r, const node *at, kn_status_code code, const char *fmt, ...) {
    if (r->err) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (at) r->err = kn_error(code, "chat template line %d, column %d: %s", at->line, at->col, msg);
    else r->err = kn_error(code, "chat template: %s", msg);
}
static void *r_alloc(rctx *r, size_t n) {
    void *p = ar_alloc(&r->ar, n);
    if (!p && !r->err)
        r->err = kn_error(KN_ERR_OUT_OF_MEMORY, "chat template: render needs more than %zu bytes", (size_t)r->ar.limit);
    return p;
}
static jval r_str(rctx *r, const char *s, size_t n) {
    char *d = r_alloc(r, n + 1);
    if (!d) return JUNDEF;
    if (n) memcpy(d, s, n);
    d[n] = 0;
    return jstr(d, n);
}
static jval buf_to_str(rctx *r, ct_buf *b) {
    if (b->oom) {
        free(b->p);
        if (!r->err) r->err = kn_error(KN_ERR_OUT_OF_MEMORY, "chat template: a string outgrew the output limit");
        return JUNDEF;
    }
    jval v = r_str(r, b->p ? b->p : "", b->n);
    free(b->p);
    return v;
}
static jlist *new_list(rctx *r, int64_t n, int view) {
    jlist *l = r_alloc(r, sizeof *l);
    if (!l) return NULL;
    l->n = n;
    l->view = view;
    l->v = n ? r_alloc(r, (size_t)n * sizeof(jval)) : NULL;
    if (n && !l->v) return NULL;
    return l;
}
static jval jlistv(jlist *l) {
    jval v = {V_LIST, 0, {0}};
    if (!l) return JUNDEF;
    v.u.l = l;
    return v;
}
static jdict *new_dict(rctx *r, int64_t cap) {
    jdict *d = r_alloc(r, sizeof *d);
    if (!d) return NULL;
    d->n = 0;
    d->cap = cap < 4 ? 4 : cap;
    d->k = r_alloc(r, (size_t)d->cap * sizeof(jval));
    d->v = r_alloc(r, (size_t)d->cap * sizeof(jval));
    if (!d->k || !d->v) return NULL;
    return d;
}

static int val_eq(const jval *a, const jval *b);
static int dict_find(const jdict *d, const jval *k) {
    for (int64_t i = 0; i < d->n; i++)
        if (val_eq(&d->k[i], k)) return (int)i;
    return -1;
}
static int dict_find_str(const jdict *d, const char *s, size_t n) {
    for (int64_t i = 0; i < d->n; i++)
        if (d->k[i].t == V_STR && d->k[i].n == n && memcmp(d->k[i].u.s, s, n) == 0) return (int)i;
    return -1;
}
static int dict_set(rctx *r, jdict *d, jval k, jval v) {
    int i = dict_find(d, &k);
    if (i >= 0) {
        d->v[i] = v;
        return 0;
    }
    if (d->n == d->cap) {
        int64_t cap = d->cap * 2;
        jval *nk = r_alloc(r, (size_t)cap * sizeof(jval)), *nv = r_alloc(r, (size_t)cap * sizeof(jval));
        if (!nk || !nv) return -1;
        memcpy(nk, d->k, (size_t)d->n * sizeof(jval));
        memcpy(nv, d->v, (size_t)d->n * sizeof(jval));
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n] = v;
    d->n++;
    return 0;
}

static jval scope_get(const scope *sc, const char *name, int *found) {
    for (; sc; sc = sc->parent)
        for (int i = sc->n - 1; i >= 0; i--)
            if (!strcmp(sc->names[i], name)) {
                *found = 1;
                return sc->vals[i];
            }
    *found = 0;
    return JUNDEF;
}
static int scope_set(rctx *r, scope *sc, const char *name, jval v) {
    for (int i = 0; i < sc->n; i++)
        if (!strcmp(sc->names[i], name)) {
            sc->vals[i] = v;
            return 0;
        }
    if (sc->n == sc->cap) {
        int cap = sc->cap ? sc->cap * 2 : 2;
        const char **nn = r_alloc(r, (size_t)cap * sizeof *nn);
        jval *nv = r_alloc(r, (size_t)cap * sizeof *nv);
        if (!nn || !nv) return -1;
        if (sc->n) {
            memcpy(nn, sc->names, (size_t)sc->n * sizeof *nn);
            memcpy(nv, sc->vals, (size_t)sc->n * sizeof *nv);
        }
        sc->names = nn;
        sc->vals = nv;
        sc->cap = cap;
    }
    sc->names[sc->n] = name;
    sc->vals[sc->n] = v;
    sc->n++;
    return 0;
}
static scope *new_scope(rctx *r, scope *parent) {
    scope *s = r_alloc(r, sizeof *s);
    if (!s) return NULL;
    memset(s, 0, sizeof *s);
    s->parent = parent;
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* Python semantics of values */

static int truthy(const jval *v) {
    switch (v->t) {
    case V_UNDEF:
    case V_NONE: return 0;
    case V_BOOL:
    case V_INT: return v->u.i != 0;
    case V_FLOAT: return v->u.f != 0.0;
    case V_STR: return v->n != 0;
    case V_LIST: return v->u.l->view == LV_GEN || v->u.l->n != 0;
    case V_DICT: return v->u.d->n != 0;
    default: return 1;
    }
}
static int is_num(const jval *v) { return v->t == V_BOOL || v->t == V_INT || v->t == V_FLOAT; }
static double num_f(const jval *v) { return v->t == V_FLOAT ? v->u.f : (double)v->u.i; }

static int val_eq(const jval *a, const jval *b) {
    if (is_num(a) && is_num(b)) {
        if (a->t == V_FLOAT || b->t == V_FLOAT) return num_f(a) == num_f(b);
        return a->u.i == b->u.i;
    }
    if (a->t != b->t) return 0;
    switch (a->t) {
    case V_UNDEF:
    case V_NONE: return 1;
    case V_STR: return a->n == b->n && memcmp(a->u.s, b->u.s, a->n) == 0;
    case V_LIST: {
        const jlist *x = a->u.l, *y = b->u.l;
        if (x == y) return 1;
        /* list == tuple is False in Python, and views compare by identity except dict_keys */
        if (x->view != y->view || x->view == LV_GEN || x->view == LV_ITEMS || x->view == LV_VALUES) return 0;
        if (x->n != y->n) return 0;
        for (int64_t i = 0; i < x->n; i++)
            if (!val_eq(&x->v[i], &y->v[i])) return 0;
        return 1;
    }
    case V_DICT: {
        const jdict *x = a->u.d, *y = b->u.d;
        if (x->n != y->n) return 0;
        for (int64_t i = 0; i < x->n; i++) {
            int j = dict_find(y, &x->k[i]);
            if (j < 0 || !val_eq(&x->v[i], &y->v[j])) return 0;
        }
        return 1;
    }
    case V_NS: return a->u.d == b->u.d;
    case V_LOOP: return a->u.lp == b->u.lp;
    case V_MACRO: return a->u.mac.m == b->u.mac.m;
    case V_FUNC: return a->u.fn == b->u.fn;
    }
    return 0;
}

static const char *type_name(const jval *v) {
    switch (v->t) {
    case V_UNDEF: return "Undefined";
    case V_NONE: return "NoneType";
    case V_BOOL: return "bool";
    case V_INT: return "int";
    case V_FLOAT: return "float";
    case V_STR: return "str";
    case V_LIST: {
        static const char *const n[] = {"list", "tuple", "generator", "dict_items", "dict_keys", "dict_values"};
        return n[v->u.l->view];
    }
    case V_DICT: return "dict";
    case V_NS: return "Namespace";
    case V_LOOP: return "LoopContext";
    case V_MACRO: return "Macro";
    default: return "function";
    }
}

/* Python's ordering (<): numbers, strings (code point order is UTF-8 byte order), lists and
 * tuples lexicographically; anything else is a TypeError. Returns -1/0/1 or -2 on error. */
static int val_cmp(const jval *a, const jval *b) {
    if (is_num(a) && is_num(b)) {
        if (a->t != V_FLOAT && b->t != V_FLOAT) return a->u.i < b->u.i ? -1 : a->u.i > b->u.i;
        double x = num_f(a), y = num_f(b);
        if (isnan(x) || isnan(y)) return 2; /* unordered: every comparison False */
        return x < y ? -1 : x > y;
    }
    if (a->t == V_STR && b->t == V_STR) {
        size_t m = a->n < b->n ? a->n : b->n;
        int c = memcmp(a->u.s, b->u.s, m);
        if (c) return c < 0 ? -1 : 1;
        return a->n < b->n ? -1 : a->n > b->n;
    }
    if (a->t == V_LIST && b->t == V_LIST && a->u.l->view == b->u.l->view &&
        (a->u.l->view == LV_LIST || a->u.l->view == LV_TUPLE)) {
        const jlist *x = a->u.l, *y = b->u.l;
        for (int64_t i = 0; i < x->n && i < y->n; i++) {
            if (val_eq(&x->v[i], &y->v[i])) continue;
            return val_cmp(&x->v[i], &y->v[i]);
        }
        return x->n < y->n ? -1 : x->n > y->n;
    }
    return -2;
}

/* repr(float) */
static void py_float(ct_buf *b, double d) {
    if (isnan(d)) {
        buf_puts(b, "nan");
        return;
    }
    if (isinf(d)) {
        buf_puts(b, d < 0 ? "-inf" : "inf");
        return;
    }
    char tmp[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, d);
        if (strtod(tmp, NULL) == d) break;
    }
    /* tmp: [-]d[.ddd]e[+-]xx */
    const char *s = tmp;
    if (*s == '-') {
        buf_put(b, "-", 1);
        s++;
    }
    char dig[32];
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s != '.') dig[nd++] = *s;
    while (nd > 1 && dig[nd - 1] == '0') nd--;
    int ex = atoi(s + 1);
    int decpt = ex + 1;
    if (decpt > 16 || decpt < -3) {
        buf_put(b, dig, 1);
        if (nd > 1) {
            buf_put(b, ".", 1);
            buf_put(b, dig + 1, (size_t)nd - 1);
        }
        buf_printf(b, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    } else if (decpt <= 0) {
        buf_put(b, "0.", 2);
        for (int i = 0; i < -decpt; i++) buf_put(b, "0", 1);
        buf_put(b, dig, (size_t)nd);
    } else if (decpt >= nd) {
        buf_put(b, dig, (size_t)nd);
        for (int i = nd; i < decpt; i++) buf_put(b, "0", 1);
        buf_put(b, ".0", 2);
    } else {
        buf_put(b, dig, (size_t)decpt);
        buf_put(b, ".", 1);
        buf_put(b, dig + decpt, (size_t)(nd - decpt));
    }
}

static void py_repr_str(ct_buf *b, const char *s, size_t n) {
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    buf_put(b, &q, 1);
    for (size_t i = 0; i < n;) {
        size_t st = i;
        int32_t c = u8_next(s, n, &i);
        if (c == q || c == '\\') {
            buf_put(b, "\\", 1);
            buf_put(b, s + st, 1);
        } else if (c == '\n') buf_puts(b, "\\n");
        else if (c == '\r') buf_puts(b, "\\r");
        else if (c == '\t') buf_puts(b, "\\t");
        else if (c < 0x20 || c == 0x7f) buf_printf(b, "\\x%02x", c);
        else if (c < 0x7f) buf_put(b, s + st, 1);
        else if (!py_isprintable(c)) {
            if (c < 0x100) buf_printf(b, "\\x%02x", c);
            else if (c < 0x10000) buf_printf(b, "\\u%04x", c);
            else buf_printf(b, "\\U%08x", c);
        } else buf_put(b, s + st, i - st);
    }
    buf_put(b, &q, 1);
}

static int py_str(rctx *r, const node *at, ct_buf *b, const jval *v, int repr, int depth);
static int py_seq(rctx *r, const node *at, ct_buf *b, const jlist *l, int depth) {
    for (int64_t i = 0; i < l->n; i++) {
        if (i) buf_put(b, ", ", 2);
        if (py_str(r, at, b, &l->v[i], 1, depth + 1)) return -1;
    }
    return 0;
}
/* str(v) (repr=0) or repr(v) (repr=1) into b */
static int py_str(rctx *r, const node *at, ct_buf *b, const jval *v, int repr, int depth) {
    if (depth > CT_MAX_DEPTH) {
        r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "value nested too deeply to print");
        return -1;
    }
    switch (v->t) {
    case V_UNDEF:
        if (repr) buf_puts(b, "Undefined");
        return 0;
    case V_NONE: buf_puts(b, "None"); return 0;
    case V_BOOL: buf_puts(b, v->u.i ? "True" : "False"); return 0;
    case V_INT: buf_printf(b, "%lld", (long long)v->u.i); return 0;
    case V_FLOAT: py_float(b, v->u.f); return 0;
    case V_STR:
        if (repr && is_markup(v)) buf_puts(b, "Markup(");
        if (repr) py_repr_str(b, v->u.s, v->n);
        else buf_put(b, v->u.s, v->n);
        if (repr && is_markup(v)) buf_puts(b, ")");
        return 0;
    case V_LIST: {
        const jlist *l = v->u.l;
        switch (l->view) {
        case LV_LIST:
            buf_put(b, "[", 1);
            if (py_seq(r, at, b, l, depth)) return -1;
            buf_put(b, "]", 1);
            return 0;
        case LV_TUPLE:
            buf_put(b, "(", 1);
            if (py_seq(r, at, b, l, depth)) return -1;
            buf_puts(b, l->n == 1 ? ",)" : ")");
            return 0;
        case LV_GEN:
            r_fail(r, at, KN_ERR_UNSUPPORTED, "printing a generator (Python prints its address); apply |list first");
            return -1;
        default:
            buf_puts(b, l->view == LV_ITEMS ? "dict_items([" : l->view == LV_KEYS ? "dict_keys([" : "dict_values([");
            if (py_seq(r, at, b, l, depth)) return -1;
            buf_puts(b, "])");
            return 0;
        }
    }
    case V_DICT: {
        const jdict *d = v->u.d;
        buf_put(b, "{", 1);
        for (int64_t i = 0; i < d->n; i++) {
            if (i) buf_put(b, ", ", 2);
            if (py_str(r, at, b, &d->k[i], 1, depth + 1)) return -1;
            buf_put(b, ": ", 2);
            if (py_str(r, at, b, &d->v[i], 1, depth + 1)) return -1;
        }
        buf_put(b, "}", 1);
        return 0;
    }
    default:
        r_fail(r, at, KN_ERR_UNSUPPORTED, "printing a %s (Python prints its address) is outside the supported subset",
               type_name(v));
        return -1;
    }
}
static jval to_str(rctx *r, const node *at, const jval *v) {
    if (v->t == V_STR) return *v;
    ct_buf b = {0};
    b.max = r->max_out;
    if (py_str(r, at, &b, v, 0, 0)) {
        free(b.p);
        return JUNDEF;
    }
    return buf_to_str(r, &b);
}

/* markupsafe.escape: a Markup stays as it is, anything else is str()-ed and escaped */
static jval html_escape(rctx *r, const node *at, jval v) {
    if (is_markup(&v)) return v;
    jval s = to_str(r, at, &v);
    if (r->err) return JUNDEF;
    ct_buf b = {0};
    for (size_t i = 0; i < s.n; i++) {
        char c = s.u.s[i];
        if (c == '&') buf_puts(&b, "&amp;");
        else if (c == '<') buf_puts(&b, "&lt;");
        else if (c == '>') buf_puts(&b, "&gt;");
        else if (c == '"') buf_puts(&b, "&#34;");
        else if (c == '\'') buf_puts(&b, "&#39;");
        else buf_put(&b, &c, 1);
    }
    return markup(buf_to_str(r, &b), 1);
}

/* json.dumps(x, ensure_ascii, indent, separators, sort_keys) as transformers' tojson */
typedef struct json_opts {
    int ensure_ascii;
    int indent; /* -1: none */
    const char *item_sep, *key_sep;
    size_t item_sep_n, key_sep_n;
    int sort_keys;
} json_opts;
static void json_str(ct_buf *b, const char *s, size_t n, int ensure_ascii) {
    buf_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        size_t st = i;
        int32_t c = u8_next(s, n, &i);
        switch (c) {
        case '"': buf_puts(b, "\\\""); break;
        case '\\': buf_puts(b, "\\\\"); break;
        case '\n': buf_puts(b, "\\n"); break;
        case '\r': buf_puts(b, "\\r"); break;
        case '\t': buf_puts(b, "\\t"); break;
        case '\b': buf_puts(b, "\\b"); break;
        case '\f': buf_puts(b, "\\f"); break;
        default:
            if (c < 0x20) buf_printf(b, "\\u%04x", c);
            else if (c >= 0x7f && ensure_ascii) {
                if (c < 0x10000) buf_printf(b, "\\u%04x", c);
                else {
                    int32_t u = c - 0x10000;
                    buf_printf(b, "\\u%04x\\u%04x", 0xd800 + (u >> 10), 0xdc00 + (u & 0x3ff));
                }
            } else buf_put(b, s + st, i - st);
        }
    }
    buf_put(b, "\"", 1);
}
static void json_nl(ct_buf *b, const json_opts *o, int level) {
    buf_put(b, "\n", 1);
    for (int i = 0; i < o->indent * level; i++) buf_put(b, " ", 1);
}
static int json_dump(rctx *r, const node *at, ct_buf *b, const jval *v, const json_opts *o, int level) {
    if (level > CT_MAX_DEPTH) {
        r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "tojson: value nested too deeply");
        return -1;
    }
    switch (v->t) {
    case V_NONE: buf_puts(b, "null"); return 0;
    case V_BOOL: buf_puts(b, v->u.i ? "true" : "false"); return 0;
    case V_INT: buf_printf(b, "%lld", (long long)v->u.i); return 0;
    case V_FLOAT:
        if (isnan(v->u.f)) buf_puts(b, "NaN");
        else if (isinf(v->u.f)) buf_puts(b, v->u.f < 0 ? "-Infinity" : "Infinity");
        else py_float(b, v->u.f);
        return 0;
    case V_STR: json_str(b, v->u.s, v->n, o->ensure_ascii); return 0;
    case V_LIST: {
        const jlist *l = v->u.l;
        if (l->view != LV_LIST && l->view != LV_TUPLE) break;
        if (!l->n) {
            buf_puts(b, "[]");
            return 0;
        }
        buf_put(b, "[", 1);
        for (int64_t i = 0; i < l->n; i++) {
            if (i) buf_put(b, o->item_sep, o->item_sep_n);
            if (o->indent >= 0) json_nl(b, o, level + 1);
            if (json_dump(r, at, b, &l->v[i], o, level + 1)) return -1;
        }
        if (o->indent >= 0) json_nl(b, o, level);
        buf_put(b, "]", 1);
        return 0;
    }
    case V_DICT: {
        const jdict *d = v->u.d;
        if (!d->n) {
            buf_puts(b, "{}");
            return 0;
        }
        int64_t *ord = r_alloc(r, (size_t)d->n * sizeof *ord);
        if (!ord) return -1;
        for (int64_t i = 0; i < d->n; i++) ord[i] = i;
        if (o->sort_keys) {
            for (int64_t i = 0; i < d->n; i++)
                if (d->k[i].t != V_STR) {
                    r_fail(r, at, KN_ERR_UNSUPPORTED, "tojson(sort_keys=true) over non-string keys");
                    return -1;
                }
            /* insertion sort: dicts in templates are small, and it is stable like Python's */
            for (int64_t i = 1; i < d->n; i++) {
                int64_t x = ord[i], j = i;
                while (j > 0 && val_cmp(&d->k[ord[j - 1]], &d->k[x]) > 0) {
                    ord[j] = ord[j - 1];
                    j--;
                }
                ord[j] = x;
            }
        }
        buf_put(b, "{", 1);
        for (int64_t q = 0; q < d->n; q++) {
            int64_t i = ord[q];
            if (q) buf_put(b, o->item_sep, o->item_sep_n);
            if (o->indent >= 0) json_nl(b, o, level + 1);
            const jval *k = &d->k[i];
            if (k->t == V_STR) json_str(b, k->u.s, k->n, o->ensure_ascii);
            else if (k->t == V_INT || k->t == V_FLOAT || k->t == V_BOOL || k->t == V_NONE) {
                buf_put(b, "\"", 1);
                if (json_dump(r, at, b, k, o, level + 1)) return -1;
                buf_put(b, "\"", 1);
            } else {
                r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "tojson: keys must be str, int, float, bool or None, not %s",
                       type_name(k));
                return -1;
            }
            buf_put(b, o->key_sep, o->key_sep_n);
            if (json_dump(r, at, b, &d->v[i], o, level + 1)) return -1;
        }
        if (o->indent >= 0) json_nl(b, o, level);
        buf_put(b, "}", 1);
        return 0;
    }
    default: break;
    }
    r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "tojson: object of type %s is not JSON serializable", type_name(v));
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* attribute and item access, iteration */

static int is_str_method(const char *n) {
    static const char *const m[] = {
        "strip",  "lstrip",     "rstrip",  "startswith", "endswith", "split",      "upper",    "lower",
        "title",  "capitalize", "replace", "find",       "join",     "splitlines", "count",    "index",
        "rfind",  "rsplit",     "isdigit", "isalpha",    "isspace",  "islower",    "isupper",  "format",
        "encode", "zfill",      "center",  "ljust",      "rjust",    "partition",  "casefold", NULL};
    for (int i = 0; m[i]; i++)
        if (!strcmp(m[i], n)) return 1;
    return 0;
}
static int is_dict_method(const char *n) {
    static const char *const m[] = {"items",   "keys",   "values", "get",        "copy",     "pop",
                                    "popitem", "update", "clear",  "setdefault", "fromkeys", NULL};
    for (int i = 0; m[i]; i++)
        if (!strcmp(m[i], n)) return 1;
    return 0;
}
static int is_list_method(const char *n) {
    static const char *const m[] = {"append", "extend", "insert", "remove",  "pop",  "clear",
                                    "index",  "count",  "sort",   "reverse", "copy", NULL};
    for (int i = 0; m[i]; i++)
        if (!strcmp(m[i], n)) return 1;
    return 0;
}

static jval loop_attr(rctx *r, const node *at, const jloop *lp, const char *name) {
    if (!strcmp(name, "index")) return jint(lp->i + 1);
    if (!strcmp(name, "index0")) return jint(lp->i);
    if (!strcmp(name, "revindex")) return jint(lp->len - lp->i);
    if (!strcmp(name, "revindex0")) return jint(lp->len - lp->i - 1);
    if (!strcmp(name, "first")) return jbool(lp->i == 0);
    if (!strcmp(name, "last")) return jbool(lp->i == lp->len - 1);
    if (!strcmp(name, "length")) return jint(lp->len);
    if (!strcmp(name, "depth")) return jint(1);
    if (!strcmp(name, "depth0")) return jint(0);
    if (!strcmp(name, "previtem")) return lp->i > 0 ? lp->items->v[lp->i - 1] : JUNDEF;
    if (!strcmp(name, "nextitem")) return lp->i + 1 < lp->len ? lp->items->v[lp->i + 1] : JUNDEF;
    if (!strcmp(name, "cycle") || !strcmp(name, "changed")) {
        r_fail(r, at, KN_ERR_UNSUPPORTED, "loop.%s is only supported as a call", name);
        return JUNDEF;
    }
    return JUNDEF;
}

static void undefined_use(rctx *r, const node *at, const jval *v) {
    if (v->hint == 1) r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "'%.*s' is undefined", (int)v->n, v->u.s);
    else if (v->hint == 2)
        r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "'dict object' has no attribute '%.*s'", (int)v->n, v->u.s);
    else r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "an undefined value was used");
}
static jval undef_hint(int hint, const char *s, size_t n) {
    jval v = JUNDEF;
    v.hint = hint;
    v.u.s = s;
    v.n = n;
    return v;
}

/* obj.name: Jinja's getattr (the attribute first, then obj['name']) */
static jval get_attr(rctx *r, const node *at, const node *objn, jval obj, const char *name, size_t n) {
    switch (obj.t) {
    case V_UNDEF: undefined_use(r, objn ? objn : at, &obj); return JUNDEF;
    case V_DICT:
        if (is_dict_method(name)) {
            r_fail(r, at, KN_ERR_UNSUPPORTED, "'.%s' of a mapping names its method; only calls of it are supported",
                   name);
            return JUNDEF;
        }
        /* fallthrough */
    case V_NS: {
        int i = dict_find_str(obj.u.d, name, n);
        return i >= 0 ? obj.u.d->v[i] : undef_hint(2, name, n);
    }
    case V_LOOP: return loop_attr(r, at, obj.u.lp, name);
    case V_STR:
        if (is_str_method(name)) {
            r_fail(r, at, KN_ERR_UNSUPPORTED, "'.%s' of a string names its method; only calls of it are supported",
                   name);
            return JUNDEF;
        }
        return JUNDEF;
    case V_LIST:
        if (obj.u.l->view == LV_LIST && is_list_method(name)) {
            r_fail(r, at, KN_ERR_UNSUPPORTED, "'.%s' of a list names its method, outside the supported subset", name);
            return JUNDEF;
        }
        return JUNDEF;
    default: return JUNDEF;
    }
}

static int64_t py_index(int64_t i, int64_t n) { return i < 0 ? i + n : i; }

static jval str_char(rctx *r, const jval *s, int64_t k) {
    size_t a = u8_off(s->u.s, s->n, (size_t)k), b = a;
    if (a < s->n) u8_next(s->u.s, s->n, &b);
    return jstr(s->u.s + a, b - a);
    (void)r;
}

/* obj[key]: Jinja's getitem (the item first, then the attribute of a string key) */
static jval get_item(rctx *r, const node *at, const node *objn, jval obj, jval key) {
    switch (obj.t) {
    case V_UNDEF: undefined_use(r, objn ? objn : at, &obj); return JUNDEF;
    case V_DICT: {
        int i = dict_find(obj.u.d, &key);
        if (i >= 0) return obj.u.d->v[i];
        if (key.t == V_STR) return get_attr(r, at, objn, obj, key.u.s, key.n);
        return JUNDEF;
    }
    case V_LIST: {
        const jlist *l = obj.u.l;
        if (l->view != LV_LIST && l->view != LV_TUPLE) return JUNDEF;
        if (key.t == V_INT || key.t == V_BOOL) {
            int64_t i = py_index(key.u.i, l->n);
            return i >= 0 && i < l->n ? l->v[i] : JUNDEF;
        }
        if (key.t == V_STR) return get_attr(r, at, objn, obj, key.u.s, key.n);
        return JUNDEF;
    }
    case V_STR:
        if (key.t == V_INT || key.t == V_BOOL) {
            int64_t n = (int64_t)u8_len(obj.u.s, obj.n), i = py_index(key.u.i, n);
            return i >= 0 && i < n ? markup(str_char(r, &obj, i), is_markup(&obj)) : JUNDEF;
        }
        if (key.t == V_STR) return get_attr(r, at, objn, obj, key.u.s, key.n);
        return JUNDEF;
    case V_NS:
    case V_LOOP:
        if (key.t == V_STR) return get_attr(r, at, objn, obj, key.u.s, key.n);
        return JUNDEF;
    default: return JUNDEF;
    }
}

/* Python's slice.indices(); returns the count of selected elements */
static int64_t slice_indices(int64_t len, const jval *st, const jval *sp, const jval *sd, int64_t *start,
                             int64_t *step) {
    int64_t step_ = sd && sd->t != V_NONE ? sd->u.i : 1;
    int64_t lo, hi;
    if (step_ > 0) {
        lo = 0;
        hi = len;
    } else {
        lo = -1;
        hi = len - 1;
    }
    int64_t b, e;
    if (!st || st->t == V_NONE) b = step_ > 0 ? lo : hi;
    else {
        b = st->u.i;
        if (b < 0) {
            b += len;
            if (b < lo) b = lo;
        } else if (b > hi) b = hi;
    }
    if (!sp || sp->t == V_NONE) e = step_ > 0 ? hi : lo;
    else {
        e = sp->u.i;
        if (e < 0) {
            e += len;
            if (e < lo) e = lo;
        } else if (e > hi) e = hi;
    }
    *start = b;
    *step = step_;
    if (step_ > 0) return e > b ? (e - b + step_ - 1) / step_ : 0;
    return b > e ? (b - e + (-step_) - 1) / (-step_) : 0;
}

static jval do_slice(rctx *r, const node *at, const node *objn, jval obj, const jval *st, const jval *sp,
                     const jval *sd) {
    if (obj.t == V_UNDEF) {
        undefined_use(r, objn ? objn : at, &obj);
        return JUNDEF;
    }
    /* Jinja compiles slices to plain Python subscripts: every failure is an error */
    const jval *ix[3] = {st, sp, sd};
    for (int i = 0; i < 3; i++)
        if (ix[i] && ix[i]->t != V_NONE && ix[i]->t != V_INT && ix[i]->t != V_BOOL) {
            if (at->constant) goto folded;
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "slice indices must be integers or None, not %s", type_name(ix[i]));
            return JUNDEF;
        }
    if (sd && sd->t != V_NONE && sd->u.i == 0) {
        r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "slice step cannot be zero");
        return JUNDEF;
    }
    int64_t start, step;
    if (obj.t == V_LIST && (obj.u.l->view == LV_LIST || obj.u.l->view == LV_TUPLE)) {
        const jlist *l = obj.u.l;
        int64_t m = slice_indices(l->n, st, sp, sd, &start, &step);
        jlist *o = new_list(r, m, l->view);
        if (!o) return JUNDEF;
        for (int64_t i = 0; i < m; i++) o->v[i] = l->v[start + i * step];
        return jlistv(o);
    }
    if (obj.t == V_STR) {
        int64_t n = (int64_t)u8_len(obj.u.s, obj.n);
        int64_t m = slice_indices(n, st, sp, sd, &start, &step);
        if (step == 1) {
            size_t a = u8_off(obj.u.s, obj.n, (size_t)start), b = a + u8_off(obj.u.s + a, obj.n - a, (size_t)m);
            return markup(jstr(obj.u.s + a, b - a), is_markup(&obj));
        }
        /* general step: index every code point once */
        size_t *offs = r_alloc(r, (size_t)(n + 1) * sizeof *offs);
        if (!offs) return JUNDEF;
        size_t i = 0;
        for (int64_t k = 0; k < n; k++) {
            offs[k] = i;
            u8_next(obj.u.s, obj.n, &i);
        }
        offs[n] = obj.n;
        ct_buf b = {0};
        for (int64_t k = 0; k < m; k++) {
            int64_t c = start + k * step;
            buf_put(&b, obj.u.s + offs[c], offs[c + 1] - offs[c]);
        }
        return markup(buf_to_str(r, &b), is_markup(&obj));
    }
    if (at->constant) goto folded;
    r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "'%s' object is not subscriptable by a slice", type_name(&obj));
    return JUNDEF;
folded:
    /* Jinja's optimizer folds literal expressions with getitem's forgiving semantics, but only
     * where an enclosing expression has a printable constant value: which one renders and which
     * raises depends on the whole expression, so kiln refuses rather than guess */
    r_fail(r, at, KN_ERR_UNSUPPORTED,
           "a failing slice of literals ('%s' object) is outside the supported subset (Jinja's constant folding "
           "decides its value)",
           type_name(&obj));
    return JUNDEF;
}

/* the elements iteration yields (a dict its keys, a string its characters, undefined nothing) */
static jlist *iter_list(rctx *r, const node *at, jval v) {
    switch (v.t) {
    case V_UNDEF: return new_list(r, 0, LV_LIST);
    case V_LIST: return v.u.l;
    case V_DICT: {
        jlist *l = new_list(r, v.u.d->n, LV_LIST);
        if (l) memcpy(l->v, v.u.d->k, (size_t)v.u.d->n * sizeof(jval));
        return l;
    }
    case V_STR: {
        int64_t n = (int64_t)u8_len(v.u.s, v.n);
        jlist *l = new_list(r, n, LV_LIST);
        if (!l) return NULL;
        size_t i = 0;
        for (int64_t k = 0; k < n; k++) {
            size_t st = i;
            u8_next(v.u.s, v.n, &i);
            l->v[k] = jstr(v.u.s + st, i - st);
        }
        return l;
    }
    default: r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "'%s' object is not iterable", type_name(&v)); return NULL;
    }
}

static int contains(rctx *r, const node *at, jval item, jval seq, int *res) {
    if (seq.t == V_STR) {
        if (item.t != V_STR) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "'in <string>' requires string as left operand, not %s",
                   type_name(&item));
            return -1;
        }
        *res = item.n == 0 || (item.n <= seq.n && memmem(seq.u.s, seq.n, item.u.s, item.n) != NULL);
        return 0;
    }
    if (seq.t == V_DICT) {
        *res = dict_find(seq.u.d, &item) >= 0;
        return 0;
    }
    if (seq.t == V_NS || seq.t == V_NONE || seq.t == V_INT || seq.t == V_FLOAT || seq.t == V_BOOL || seq.t == V_MACRO ||
        seq.t == V_FUNC) {
        r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "argument of type '%s' is not iterable", type_name(&seq));
        return -1;
    }
    jlist *l = iter_list(r, at, seq);
    if (!l) return -1;
    *res = 0;
    for (int64_t i = 0; i < l->n; i++)
        if (val_eq(&l->v[i], &item)) {
            *res = 1;
            break;
        }
    return 0;
}

static int64_t py_len(rctx *r, const node *at, jval v) {
    switch (v.t) {
    case V_UNDEF: return 0;
    case V_STR: return (int64_t)u8_len(v.u.s, v.n);
    case V_LIST:
        if (v.u.l->view != LV_GEN) return v.u.l->n;
        break;
    case V_DICT: return v.u.d->n;
    case V_LOOP: return v.u.lp->len;
    default: break;
    }
    r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "object of type '%s' has no len()", type_name(&v));
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* arithmetic */

static jval arith(rctx *r, const node *at, int op, jval a, jval b) {
    if (a.t == V_UNDEF || b.t == V_UNDEF) {
        undefined_use(r, a.t == V_UNDEF ? at->a : at->b, a.t == V_UNDEF ? &a : &b);
        return JUNDEF;
    }
    if (is_num(&a) && is_num(&b)) {
        int fl = a.t == V_FLOAT || b.t == V_FLOAT;
        int64_t x = a.u.i, y = b.u.i, z;
        double fx = num_f(&a), fy = num_f(&b);
        switch (op) {
        case OP_ADD:
            if (fl) return jfloat(fx + fy);
            if (__builtin_add_overflow(x, y, &z)) break;
            return jint(z);
        case OP_SUB:
            if (fl) return jfloat(fx - fy);
            if (__builtin_sub_overflow(x, y, &z)) break;
            return jint(z);
        case OP_MUL:
            if (fl) return jfloat(fx * fy);
            if (__builtin_mul_overflow(x, y, &z)) break;
            return jint(z);
        case OP_DIV:
            if (fy == 0) goto zero;
            return jfloat(fx / fy);
        case OP_FDIV:
            if (fl) {
                if (fy == 0) goto zero;
                return jfloat(floor(fx / fy));
            }
            if (y == 0) goto zero;
            if (x == INT64_MIN && y == -1) break;
            z = x / y;
            if ((x % y != 0) && ((x < 0) != (y < 0))) z--;
            return jint(z);
        case OP_MOD:
            if (fl) {
                if (fy == 0) goto zero;
                double m = fmod(fx, fy);
                if (m != 0 && ((m < 0) != (fy < 0))) m += fy;
                return jfloat(m);
            }
            if (y == 0) goto zero;
            if (y == -1) return jint(0);
            z = x % y;
            if (z != 0 && ((z < 0) != (y < 0))) z += y;
            return jint(z);
        case OP_POW:
            if (fl || y < 0) return jfloat(pow(fx, fy));
            {
                int64_t acc = 1, base = x, e = y;
                while (e) {
                    if (e & 1 && __builtin_mul_overflow(acc, base, &acc)) goto ovf;
                    e >>= 1;
                    if (e && __builtin_mul_overflow(base, base, &base)) goto ovf;
                }
                return jint(acc);
            }
        }
    ovf:
        r_fail(r, at, KN_ERR_UNSUPPORTED, "integer arithmetic beyond 64 bits");
        return JUNDEF;
    zero:
        r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "division by zero");
        return JUNDEF;
    }
    if (op == OP_ADD && a.t == V_STR && b.t == V_STR) {
        int mk = is_markup(&a) || is_markup(&b);
        if (mk) {
            /* Markup.__add__ / __radd__: the other side is escaped */
            a = html_escape(r, at, a);
            b = html_escape(r, at, b);
            if (r->err) return JUNDEF;
        }
        char *d = r_alloc(r, a.n + b.n + 1);
        if (!d) return JUNDEF;
        memcpy(d, a.u.s, a.n);
        memcpy(d + a.n, b.u.s, b.n);
        d[a.n + b.n] = 0;
        return markup(jstr(d, a.n + b.n), mk);
    }
    if (op == OP_ADD && a.t == V_LIST && b.t == V_LIST && a.u.l->view == b.u.l->view &&
        (a.u.l->view == LV_LIST || a.u.l->view == LV_TUPLE)) {
        jlist *l = new_list(r, a.u.l->n + b.u.l->n, a.u.l->view);
        if (!l) return JUNDEF;
        if (a.u.l->n) memcpy(l->v, a.u.l->v, (size_t)a.u.l->n * sizeof(jval));
        if (b.u.l->n) memcpy(l->v + a.u.l->n, b.u.l->v, (size_t)b.u.l->n * sizeof(jval));
        return jlistv(l);
    }
    if (op == OP_MUL &&
        ((a.t == V_STR && (b.t == V_INT || b.t == V_BOOL)) || (b.t == V_STR && (a.t == V_INT || a.t == V_BOOL)))) {
        jval s = a.t == V_STR ? a : b;
        int64_t k = a.t == V_STR ? b.u.i : a.u.i;
        if (k <= 0) return markup(jstr("", 0), is_markup(&s));
        if (s.n && (uint64_t)k > (uint64_t)(r->max_out / s.n)) {
            r_fail(r, at, KN_ERR_OUT_OF_MEMORY, "string repetition beyond the output limit");
            return JUNDEF;
        }
        char *d = r_alloc(r, s.n * (size_t)k + 1);
        if (!d) return JUNDEF;
        for (int64_t i = 0; i < k; i++) memcpy(d + s.n * (size_t)i, s.u.s, s.n);
        d[s.n * (size_t)k] = 0;
        return markup(jstr(d, s.n * (size_t)k), is_markup(&s));
    }
    if (op == OP_MOD && a.t == V_STR) {
        r_fail(r, at, KN_ERR_UNSUPPORTED, "printf-style string formatting is outside the supported subset");
        return JUNDEF;
    }
    static const char *const sym[] = {"", "+", "-", "*", "/", "//", "%", "**"};
    r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "unsupported operand type(s) for %s: '%s' and '%s'", sym[op], type_name(&a),
           type_name(&b));
    return JUNDEF;
}

/* ------------------------------------------------------------------------------------------ */
/* string helpers with Python's semantics */

/* strip chars (NULL: whitespace) from the ends: which 1 left, 2 right, 3 both */
static jval py_strip(jval s, const jval *chars, int which) {
    size_t a = 0, b = s.n;
    int32_t set[256];
    int nset = 0;
    if (chars)
        for (size_t i = 0; i < chars->n && nset < 256;) set[nset++] = u8_next(chars->u.s, chars->n, &i);
    if (which & 1) {
        while (a < b) {
            size_t j = a;
            int32_t c = u8_next(s.u.s, b, &j);
            int hit = 0;
            if (chars) {
                for (int k = 0; k < nset; k++) hit |= set[k] == c;
            } else hit = py_isspace(c);
            if (!hit) break;
            a = j;
        }
    }
    if (which & 2) {
        /* scan forward remembering the end of the last character to keep */
        size_t end = a;
        for (size_t i = a; i < b;) {
            int32_t c = u8_next(s.u.s, b, &i);
            int hit = 0;
            if (chars) {
                for (int k = 0; k < nset; k++) hit |= set[k] == c;
            } else hit = py_isspace(c);
            if (!hit) end = i;
        }
        b = end;
    }
    return jstr(s.u.s + a, b - a);
}

static int is_cased(int32_t c) {
    return utf8proc_tolower(c) != c || utf8proc_toupper(c) != c || utf8proc_totitle(c) != c;
}

/* per-code-point case mapping: mode 0 lower, 1 upper, 2 capitalize, 3 Jinja's title filter,
 * 4 Python's str.title() */
static jval py_case(rctx *r, jval s, int mode) {
    ct_buf b = {0};
    int word_start = 1, prev_cased = 0;
    size_t idx = 0;
    for (size_t i = 0; i < s.n; idx++) {
        int32_t c = u8_next(s.u.s, s.n, &i);
        int32_t o;
        if (mode == 0) o = utf8proc_tolower(c);
        else if (mode == 1) o = utf8proc_toupper(c);
        else if (mode == 2) o = idx == 0 ? utf8proc_totitle(c) : utf8proc_tolower(c);
        else if (mode == 4) {
            int cased = is_cased(c);
            o = !cased ? c : prev_cased ? utf8proc_tolower(c) : utf8proc_totitle(c);
            prev_cased = cased;
        } else {
            /* Jinja's title: words begin after runs of '-', whitespace, '(', '{', '[', '<' */
            int sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py_isspace(c);
            o = sep ? c : word_start ? utf8proc_toupper(c) : utf8proc_tolower(c);
            word_start = sep;
        }
        /* characters whose full case mapping differs from the simple one (German sharp s, ...) */
        if (mode == 1 && c == 0xdf) {
            buf_puts(&b, "SS");
            continue;
        }
        u8_put(&b, o);
    }
    return buf_to_str(r, &b);
}

static jval py_replace(rctx *r, jval s, jval old, jval nw, int64_t count) {
    ct_buf b = {0};
    b.max = r->max_out;
    if (old.n == 0) {
        /* Python inserts `new` before every character and at the end */
        int64_t done = 0;
        size_t i = 0;
        for (;;) {
            if (count < 0 || done < count) {
                buf_put(&b, nw.u.s, nw.n);
                done++;
            }
            if (i >= s.n) break;
            size_t st = i;
            u8_next(s.u.s, s.n, &i);
            buf_put(&b, s.u.s + st, i - st);
        }
        return buf_to_str(r, &b);
    }
    size_t i = 0;
    int64_t done = 0;
    while (i < s.n) {
        const char *hit = (count < 0 || done < count) ? memmem(s.u.s + i, s.n - i, old.u.s, old.n) : NULL;
        if (!hit) break;
        size_t k = (size_t)(hit - s.u.s);
        buf_put(&b, s.u.s + i, k - i);
        buf_put(&b, nw.u.s, nw.n);
        i = k + old.n;
        done++;
    }
    buf_put(&b, s.u.s + i, s.n - i);
    return buf_to_str(r, &b);
}

static jval py_split(rctx *r, const node *at, jval s, const jval *sep, int64_t maxsplit) {
    jval *items = NULL;
    int64_t n = 0, cap = 0;
#define PUSH(a, len) \
    do { \
        if (n == cap) { \
            cap = cap ? cap * 2 : 8; \
            jval *q = r_alloc(r, (size_t)cap * sizeof *q); \
            if (!q) return JUNDEF; \
            if (n) memcpy(q, items, (size_t)n * sizeof *q); \
            items = q; \
        } \
        items[n++] = jstr((a), (len)); \
    } while (0)
    if (!sep || sep->t == V_NONE) {
        size_t i = 0;
        int64_t splits = 0;
        for (;;) {
            /* skip whitespace */
            while (i < s.n) {
                size_t j = i;
                if (!py_isspace(u8_next(s.u.s, s.n, &j))) break;
                i = j;
            }
            if (i >= s.n) break;
            if (maxsplit >= 0 && splits >= maxsplit) {
                PUSH(s.u.s + i, s.n - i);
                break;
            }
            size_t st = i;
            while (i < s.n) {
                size_t j = i;
                if (py_isspace(u8_next(s.u.s, s.n, &j))) break;
                i = j;
            }
            PUSH(s.u.s + st, i - st);
            splits++;
        }
    } else {
        if (sep->t != V_STR) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "must be str or None, not %s", type_name(sep));
            return JUNDEF;
        }
        if (!sep->n) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "empty separator");
            return JUNDEF;
        }
        size_t i = 0;
        int64_t splits = 0;
        for (;;) {
            const char *hit = (maxsplit < 0 || splits < maxsplit) ? memmem(s.u.s + i, s.n - i, sep->u.s, sep->n) : NULL;
            if (!hit) {
                PUSH(s.u.s + i, s.n - i);
                break;
            }
            size_t k = (size_t)(hit - s.u.s);
            PUSH(s.u.s + i, k - i);
            i = k + sep->n;
            splits++;
        }
    }
#undef PUSH
    jlist *l = new_list(r, n, LV_LIST);
    if (!l) return JUNDEF;
    if (n) memcpy(l->v, items, (size_t)n * sizeof *items);
    return jlistv(l);
}

/* ------------------------------------------------------------------------------------------ */
/* evaluation */

static jval eval(rctx *r, scope *sc, const node *e);
static int exec_body(rctx *r, scope *sc, const node *b, ct_buf *out);

typedef struct args {
    int n, nk;
    jval *v;
    const char **kn;
    jval *kv;
} args;

static int eval_args(rctx *r, scope *sc, const node *call, args *a) {
    a->n = call->n;
    a->nk = call->n2;
    a->kn = call->names;
    a->v = call->n ? r_alloc(r, (size_t)call->n * sizeof(jval)) : NULL;
    a->kv = call->n2 ? r_alloc(r, (size_t)call->n2 * sizeof(jval)) : NULL;
    if ((call->n && !a->v) || (call->n2 && !a->kv)) return -1;
    for (int i = 0; i < call->n; i++) {
        a->v[i] = eval(r, sc, call->list[i]);
        if (r->err) return -1;
    }
    for (int i = 0; i < call->n2; i++) {
        a->kv[i] = eval(r, sc, call->list2[i]);
        if (r->err) return -1;
    }
    return 0;
}
/* the argument at position pos or named name (Python's binding), NULL when absent */
static const jval *arg_get(rctx *r, const node *at, const args *a, int pos, const char *name, const char *fn) {
    const jval *v = pos >= 0 && pos < a->n ? &a->v[pos] : NULL;
    for (int i = 0; i < a->nk; i++)
        if (!strcmp(a->kn[i], name)) {
            if (v) {
                r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "%s() got multiple values for argument '%s'", fn, name);
                return NULL;
            }
            v = &a->kv[i];
        }
    return v;
}
static int args_check(rctx *r, const node *at, const args *a, int maxpos, const char *const *names, const char *fn) {
    if (a->n > maxpos) {
        r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "%s() takes at most %d positional argument(s) (%d given)", fn, maxpos,
               a->n);
        return -1;
    }
    for (int i = 0; i < a->nk; i++) {
        int ok = 0;
        for (int k = 0; names && names[k]; k++)
            if (!strcmp(names[k], a->kn[i])) ok = 1;
        if (!ok) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "%s() got an unexpected keyword argument '%s'", fn, a->kn[i]);
            return -1;
        }
    }
    return 0;
}
static int need_str(rctx *r, const node *at, const jval *v, const char *what) {
    if (v && v->t == V_STR) return 0;
    r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "%s must be a string, not %s", what, v ? type_name(v) : "nothing");
    return -1;
}
static int need_int(rctx *r, const node *at, const jval *v, const char *what) {
    if (v && (v->t == V_INT || v->t == V_BOOL)) return 0;
    r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "%s must be an integer, not %s", what, v ? type_name(v) : "nothing");
    return -1;
}

static jval call_macro(rctx *r, const node *at, jval m, const args *a);
static int run_test(rctx *r, const node *at, const char *name, jval v, const jval *targs, int ntargs);
static jval run_filter(rctx *r, scope *sc, const node *at, const char *name, jval v, args *a);

static jval str_method(rctx *r, const node *at, jval s, const char *name, const args *a) {
    static const char *const none[] = {NULL};
    if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
        if (args_check(r, at, a, 1, none, name)) return JUNDEF;
        const jval *c = a->n ? &a->v[0] : NULL;
        if (c && c->t == V_NONE) c = NULL;
        if (c && need_str(r, at, c, "strip chars")) return JUNDEF;
        return py_strip(s, c, name[0] == 'l' ? 1 : name[0] == 'r' ? 2 : 3);
    }
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        if (args_check(r, at, a, 1, none, name) || !a->n) {
            if (!r->err) r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "%s() takes one argument", name);
            return JUNDEF;
        }
        const jval *p = &a->v[0];
        int n = 1;
        const jval *alts = p;
        if (p->t == V_LIST && p->u.l->view == LV_TUPLE) {
            alts = p->u.l->v;
            n = (int)p->u.l->n;
        }
        for (int i = 0; i < n; i++) {
            if (need_str(r, at, &alts[i], name)) return JUNDEF;
            const jval *q = &alts[i];
            if (q->n > s.n) continue;
            if (name[0] == 's' ? !memcmp(s.u.s, q->u.s, q->n) : !memcmp(s.u.s + s.n - q->n, q->u.s, q->n))
                return jbool(1);
        }
        return jbool(0);
    }
    if (!strcmp(name, "split")) {
        static const char *const kw[] = {"sep", "maxsplit", NULL};
        if (args_check(r, at, a, 2, kw, name)) return JUNDEF;
        const jval *sep = arg_get(r, at, a, 0, "sep", name), *mx = arg_get(r, at, a, 1, "maxsplit", name);
        if (r->err || (mx && need_int(r, at, mx, "maxsplit"))) return JUNDEF;
        return py_split(r, at, s, sep, mx ? mx->u.i : -1);
    }
    if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "capitalize") || !strcmp(name, "title")) {
        if (args_check(r, at, a, 0, none, name)) return JUNDEF;
        return py_case(r, s, name[0] == 'l' ? 0 : name[0] == 'u' ? 1 : name[0] == 'c' ? 2 : 4);
    }
    if (!strcmp(name, "replace")) {
        if (args_check(r, at, a, 3, none, name)) return JUNDEF;
        if (a->n < 2) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "replace() takes at least 2 arguments");
            return JUNDEF;
        }
        if (need_str(r, at, &a->v[0], "replace old") || need_str(r, at, &a->v[1], "replace new") ||
            (a->n > 2 && need_int(r, at, &a->v[2], "replace count")))
            return JUNDEF;
        return py_replace(r, s, a->v[0], a->v[1], a->n > 2 ? a->v[2].u.i : -1);
    }
    if (!strcmp(name, "find")) {
        if (args_check(r, at, a, 1, none, name) || !a->n || need_str(r, at, &a->v[0], "find")) return JUNDEF;
        const char *hit = a->v[0].n ? memmem(s.u.s, s.n, a->v[0].u.s, a->v[0].n) : s.u.s;
        return jint(hit ? (int64_t)u8_len(s.u.s, (size_t)(hit - s.u.s)) : -1);
    }
    if (!strcmp(name, "join")) {
        if (args_check(r, at, a, 1, none, name) || !a->n) return JUNDEF;
        jlist *l = iter_list(r, at, a->v[0]);
        if (!l) return JUNDEF;
        ct_buf b = {0};
        b.max = r->max_out;
        for (int64_t i = 0; i < l->n; i++) {
            if (l->v[i].t != V_STR) {
                free(b.p);
                r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "sequence item %lld: expected str instance, %s found",
                       (long long)i, type_name(&l->v[i]));
                return JUNDEF;
            }
            if (i) buf_put(&b, s.u.s, s.n);
            buf_put(&b, l->v[i].u.s, l->v[i].n);
        }
        return buf_to_str(r, &b);
    }
    r_fail(r, at, KN_ERR_UNSUPPORTED, "string method '%s' is outside the supported subset", name);
    return JUNDEF;
}

/* a Markup's methods return Markup and escape what they insert (markupsafe) */
static jval str_method_markup(rctx *r, const node *at, jval s, const char *name, const args *a) {
    if (!is_markup(&s)) return str_method(r, at, s, name, a);
    args b = *a;
    if ((!strcmp(name, "replace") && a->n >= 2) || (!strcmp(name, "join") && a->n >= 1)) {
        b.v = r_alloc(r, (size_t)a->n * sizeof(jval));
        if (!b.v) return JUNDEF;
        memcpy(b.v, a->v, (size_t)a->n * sizeof(jval));
        if (name[0] == 'r') b.v[1] = html_escape(r, at, a->v[1]);
        else {
            jlist *l = iter_list(r, at, a->v[0]);
            jlist *e = l ? new_list(r, l->n, LV_LIST) : NULL;
            if (!e) return JUNDEF;
            for (int64_t i = 0; i < l->n && !r->err; i++) e->v[i] = html_escape(r, at, l->v[i]);
            b.v[0] = jlistv(e);
        }
        if (r->err) return JUNDEF;
    }
    jval res = str_method(r, at, s, name, &b);
    static const char *const keep[] = {"strip", "lstrip",     "rstrip",  "upper", "lower",
                                       "title", "capitalize", "replace", "join",  NULL};
    for (int i = 0; keep[i]; i++)
        if (!strcmp(keep[i], name)) return markup(res, 1);
    if (!strcmp(name, "split") && res.t == V_LIST)
        for (int64_t i = 0; i < res.u.l->n; i++) res.u.l->v[i] = markup(res.u.l->v[i], 1);
    return res;
}

static jval dict_method(rctx *r, const node *at, jval d, const char *name, const args *a) {
    static const char *const none[] = {NULL};
    if (!strcmp(name, "items") || !strcmp(name, "keys") || !strcmp(name, "values")) {
        if (args_check(r, at, a, 0, none, name)) return JUNDEF;
        int view = name[0] == 'i' ? LV_ITEMS : name[0] == 'k' ? LV_KEYS : LV_VALUES;
        jlist *l = new_list(r, d.u.d->n, view);
        if (!l) return JUNDEF;
        for (int64_t i = 0; i < d.u.d->n; i++) {
            if (view == LV_KEYS) l->v[i] = d.u.d->k[i];
            else if (view == LV_VALUES) l->v[i] = d.u.d->v[i];
            else {
                jlist *t = new_list(r, 2, LV_TUPLE);
                if (!t) return JUNDEF;
                t->v[0] = d.u.d->k[i];
                t->v[1] = d.u.d->v[i];
                l->v[i] = jlistv(t);
            }
        }
        return jlistv(l);
    }
    if (!strcmp(name, "get")) {
        if (args_check(r, at, a, 2, none, name)) return JUNDEF;
        if (!a->n) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "get expected at least 1 argument, got 0");
            return JUNDEF;
        }
        int i = dict_find(d.u.d, &a->v[0]);
        return i >= 0 ? d.u.d->v[i] : a->n > 1 ? a->v[1] : jnone();
    }
    r_fail(r, at, KN_ERR_UNSUPPORTED, "mapping method '%s' is outside the supported subset", name);
    return JUNDEF;
}

static jval call_builtin(rctx *r, const node *at, int fn, const args *a) {
    static const char *const none[] = {NULL};
    switch (fn) {
    case F_RAISE: {
        if (args_check(r, at, a, 1, none, "raise_exception")) return JUNDEF;
        jval m = a->n ? to_str(r, at, &a->v[0]) : jstr("None", 4);
        if (r->err) return JUNDEF;
        r->err = kn_error(KN_ERR_INVALID_ARGUMENT, "%.*s", (int)m.n, m.u.s);
        return JUNDEF;
    }
    case F_STRFTIME: {
        if (args_check(r, at, a, 1, none, "strftime_now") || !a->n || need_str(r, at, &a->v[0], "strftime_now format"))
            return JUNDEF;
        struct tm tm;
        time_t now = r->now;
        localtime_r(&now, &tm);
        jval f = r_str(r, a->v[0].u.s, a->v[0].n);
        if (r->err) return JUNDEF;
        char out[1024];
        size_t k = a->v[0].n ? strftime(out, sizeof out, f.u.s, &tm) : 0;
        if (!k && a->v[0].n) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "strftime_now: the formatted date is empty or too long");
            return JUNDEF;
        }
        return r_str(r, out, k);
    }
    case F_NAMESPACE:
    case F_DICT: {
        const char *fname = fn == F_NAMESPACE ? "namespace" : "dict";
        if (a->n > 1) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "%s expected at most 1 positional argument, got %d", fname, a->n);
            return JUNDEF;
        }
        jdict *d = new_dict(r, a->nk + 4);
        if (!d) return JUNDEF;
        if (a->n) {
            const jval *src = &a->v[0];
            if (src->t == V_UNDEF) { /* dict(x) looks up x.keys first */
                undefined_use(r, at, src);
                return JUNDEF;
            }
            if (src->t == V_DICT || src->t == V_NS) {
                for (int64_t i = 0; i < src->u.d->n; i++)
                    if (dict_set(r, d, src->u.d->k[i], src->u.d->v[i])) return JUNDEF;
            } else {
                jlist *l = iter_list(r, at, *src);
                if (!l) return JUNDEF;
                for (int64_t i = 0; i < l->n; i++) {
                    jlist *pl = l->v[i].t == V_LIST ? iter_list(r, at, l->v[i]) : NULL;
                    if (!pl || pl->n != 2) {
                        r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "%s(): sequence element %lld is not a pair", fname,
                               (long long)i);
                        return JUNDEF;
                    }
                    if (dict_set(r, d, pl->v[0], pl->v[1])) return JUNDEF;
                }
            }
        }
        for (int i = 0; i < a->nk; i++)
            if (dict_set(r, d, jstr(a->kn[i], strlen(a->kn[i])), a->kv[i])) return JUNDEF;
        if (fn == F_NAMESPACE)
            for (int64_t i = 0; i < d->n; i++)
                if (d->k[i].t == V_STR && d->k[i].n && d->k[i].u.s[0] == '_') {
                    r_fail(r, at, KN_ERR_INVALID_ARGUMENT,
                           "chat templates cannot store underscore-prefixed attributes on a namespace, but got '%.*s'",
                           (int)d->k[i].n, d->k[i].u.s);
                    return JUNDEF;
                }
        jval v = {fn == F_NAMESPACE ? V_NS : V_DICT, 0, {0}};
        v.u.d = d;
        return v;
    }
    case F_RANGE: {
        if (args_check(r, at, a, 3, none, "range") || !a->n) {
            if (!r->err) r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "range expected at least 1 argument, got 0");
            return JUNDEF;
        }
        for (int i = 0; i < a->n; i++)
            if (need_int(r, at, &a->v[i], "range argument")) return JUNDEF;
        int64_t start = a->n > 1 ? a->v[0].u.i : 0, stop = a->n > 1 ? a->v[1].u.i : a->v[0].u.i,
                step = a->n > 2 ? a->v[2].u.i : 1;
        if (!step) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "range() arg 3 must not be zero");
            return JUNDEF;
        }
        int64_t n;
        if (step > 0) n = stop > start ? (stop - start + step - 1) / step : 0;
        else n = start > stop ? (start - stop - step - 1) / (-step) : 0;
        if (n > CT_MAX_RANGE) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "range too big, maximum size for range is %d", CT_MAX_RANGE);
            return JUNDEF;
        }
        jlist *l = new_list(r, n, LV_LIST);
        if (!l) return JUNDEF;
        for (int64_t i = 0; i < n; i++) l->v[i] = jint(start + i * step);
        return jlistv(l);
    }
    }
    return JUNDEF;
}

static jval eval_call(rctx *r, scope *sc, const node *e) {
    args a;
    const node *cn = e->a;
    if (cn->kind == N_ATTR) {
        jval obj = eval(r, sc, cn->a);
        if (r->err) return JUNDEF;
        const char *name = cn->name;
        int method = (obj.t == V_STR && is_str_method(name)) || (obj.t == V_DICT && is_dict_method(name)) ||
            (obj.t == V_LOOP && (!strcmp(name, "cycle") || !strcmp(name, "changed")));
        if (method) {
            if (eval_args(r, sc, e, &a)) return JUNDEF;
            if (obj.t == V_STR) return str_method_markup(r, e, obj, name, &a);
            if (obj.t == V_DICT) return dict_method(r, e, obj, name, &a);
            if (!strcmp(name, "cycle")) {
                if (a.nk || !a.n) {
                    r_fail(r, e, KN_ERR_INVALID_ARGUMENT, "no items for cycling given");
                    return JUNDEF;
                }
                return a.v[obj.u.lp->i % a.n];
            }
            r_fail(r, e, KN_ERR_UNSUPPORTED, "loop.changed is outside the supported subset");
            return JUNDEF;
        }
        jval f = get_attr(r, cn, cn->a, obj, name, cn->name_n);
        if (r->err) return JUNDEF;
        if (f.t == V_UNDEF) {
            r_fail(r, e, KN_ERR_INVALID_ARGUMENT, "'%s' object has no attribute '%s'", type_name(&obj), name);
            return JUNDEF;
        }
        if (eval_args(r, sc, e, &a)) return JUNDEF;
        if (f.t == V_MACRO) return call_macro(r, e, f, &a);
        if (f.t == V_FUNC) return call_builtin(r, e, f.u.fn, &a);
        r_fail(r, e, KN_ERR_INVALID_ARGUMENT, "'%s' object is not callable", type_name(&f));
        return JUNDEF;
    }
    jval f = eval(r, sc, cn);
    if (r->err) return JUNDEF;
    if (f.t == V_UNDEF) {
        undefined_use(r, cn, &f);
        return JUNDEF;
    }
    if (f.t != V_MACRO && f.t != V_FUNC) {
        r_fail(r, e, KN_ERR_INVALID_ARGUMENT, "'%s' object is not callable", type_name(&f));
        return JUNDEF;
    }
    if (eval_args(r, sc, e, &a)) return JUNDEF;
    return f.t == V_MACRO ? call_macro(r, e, f, &a) : call_builtin(r, e, f.u.fn, &a);
}

static int step(rctx *r, const node *at) {
    if (++r->steps > CT_MAX_STEPS) {
        r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "the template ran more than %lld loop iterations and calls",
               (long long)CT_MAX_STEPS);
        return -1;
    }
    return 0;
}

static jval call_macro(rctx *r, const node *at, jval m, const args *a) {
    const node *mac = m.u.mac.m;
    if (step(r, at)) return JUNDEF;
    if (a->n > mac->n2) {
        r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "macro '%s' takes not more than %d argument(s)", mac->name, mac->n2);
        return JUNDEF;
    }
    if (r->depth >= CT_MAX_DEPTH) {
        r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "macro calls nested more than %d deep", CT_MAX_DEPTH);
        return JUNDEF;
    }
    scope *s = new_scope(r, m.u.mac.sc);
    if (!s) return JUNDEF;
    for (int i = 0; i < a->nk; i++) {
        int ok = 0;
        for (int k = 0; k < mac->n2; k++) ok |= !strcmp(mac->names[k], a->kn[i]);
        if (!ok) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "macro '%s' takes no keyword argument '%s'", mac->name, a->kn[i]);
            return JUNDEF;
        }
    }
    for (int k = 0; k < mac->n2; k++) {
        jval v = JUNDEF;
        int have = 0;
        if (k < a->n) {
            v = a->v[k];
            have = 1;
        }
        for (int i = 0; i < a->nk; i++)
            if (!strcmp(mac->names[k], a->kn[i])) {
                if (have) {
                    r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "macro '%s' got multiple values for argument '%s'",
                           mac->name, a->kn[i]);
                    return JUNDEF;
                }
                v = a->kv[i];
                have = 1;
            }
        if (!have && mac->list2 && mac->list2[k]) {
            r->depth++;
            v = eval(r, s, mac->list2[k]);
            r->depth--;
            if (r->err) return JUNDEF;
        }
        if (scope_set(r, s, mac->names[k], v)) return JUNDEF;
    }
    ct_buf b = {0};
    b.max = r->max_out;
    r->depth++;
    int rc = exec_body(r, s, mac->a, &b);
    r->depth--;
    if (rc < 0 || r->err) {
        free(b.p);
        return JUNDEF;
    }
    return buf_to_str(r, &b);
}

static jval lookup(rctx *r, scope *sc, const node *e) {
    int found;
    jval v = scope_get(sc, e->name, &found);
    if (found) return v;
    int i = dict_find_str(r->ctx, e->name, e->name_n);
    if (i >= 0) return r->ctx->v[i];
    static const char *const fns[] = {"", "raise_exception", "strftime_now", "namespace", "dict", "range"};
    for (int f = 1; f <= F_RANGE; f++)
        if (!strcmp(fns[f], e->name)) {
            jval g = {V_FUNC, 0, {0}};
            g.u.fn = f;
            return g;
        }
    return undef_hint(1, e->name, e->name_n);
}

static jval eval(rctx *r, scope *sc, const node *e) {
    if (r->err) return JUNDEF;
    if (r->depth > CT_MAX_DEPTH) {
        r_fail(r, e, KN_ERR_INVALID_ARGUMENT, "evaluation nested too deeply");
        return JUNDEF;
    }
    r->depth++;
    jval out = JUNDEF;
    switch (e->kind) {
    case N_CONST: out = e->val; break;
    case N_NAME: out = lookup(r, sc, e); break;
    case N_LIST:
    case N_TUPLE: {
        jlist *l = new_list(r, e->n, e->kind == N_LIST ? LV_LIST : LV_TUPLE);
        if (!l) break;
        for (int i = 0; i < e->n && !r->err; i++) l->v[i] = eval(r, sc, e->list[i]);
        out = jlistv(l);
        break;
    }
    case N_DICT: {
        jdict *d = new_dict(r, e->n);
        if (!d) break;
        for (int i = 0; i < e->n && !r->err; i++) {
            jval k = eval(r, sc, e->list[i]);
            jval v = eval(r, sc, e->list2[i]);
            if (r->err) break;
            if (k.t == V_LIST && k.u.l->view != LV_TUPLE) {
                r_fail(r, e->list[i], KN_ERR_INVALID_ARGUMENT, "unhashable type: '%s'", type_name(&k));
                break;
            }
            if (k.t == V_DICT || k.t == V_NS) {
                r_fail(r, e->list[i], KN_ERR_INVALID_ARGUMENT, "unhashable type: 'dict'");
                break;
            }
            dict_set(r, d, k, v);
        }
        out.t = V_DICT;
        out.u.d = d;
        break;
    }
    case N_ATTR: {
        jval o = eval(r, sc, e->a);
        if (!r->err) out = get_attr(r, e, e->a, o, e->name, e->name_n);
        break;
    }
    case N_ITEM: {
        jval o = eval(r, sc, e->a);
        jval k = eval(r, sc, e->b);
        if (!r->err) out = get_item(r, e, e->a, o, k);
        break;
    }
    case N_SLICE: {
        jval o = eval(r, sc, e->list[0]);
        jval a = e->a ? eval(r, sc, e->a) : jnone();
        jval b = e->b ? eval(r, sc, e->b) : jnone();
        jval c = e->c ? eval(r, sc, e->c) : jnone();
        if (!r->err) out = do_slice(r, e, e->list[0], o, &a, &b, &c);
        break;
    }
    case N_CALL: out = eval_call(r, sc, e); break;
    case N_FILTER: {
        if (e->op) {
            r->err =
                kn_error(e->op == 2 ? KN_ERR_INVALID_ARGUMENT : KN_ERR_UNSUPPORTED,
                         e->op == 2 ? "chat template line %d, column %d: no filter named '%s'"
                                    : "chat template line %d, column %d: filter '%s' is outside the supported subset",
                         e->ops[0], e->ops[1], e->name);
            break;
        }
        jval v = eval(r, sc, e->a);
        args a;
        if (!r->err && !eval_args(r, sc, e, &a)) out = run_filter(r, sc, e, e->name, v, &a);
        break;
    }
    case N_TEST: {
        if (e->op) {
            r->err =
                kn_error(e->op == 2 ? KN_ERR_INVALID_ARGUMENT : KN_ERR_UNSUPPORTED,
                         e->op == 2 ? "chat template line %d, column %d: no test named '%s'"
                                    : "chat template line %d, column %d: test '%s' is outside the supported subset",
                         e->ops[0], e->ops[1], e->name);
            break;
        }
        jval v = eval(r, sc, e->a);
        args a;
        if (!r->err && !eval_args(r, sc, e, &a)) {
            if (a.nk) r_fail(r, e, KN_ERR_UNSUPPORTED, "keyword arguments to tests are outside the supported subset");
            else {
                int t = run_test(r, e, e->name, v, a.v, a.n);
                if (t >= 0) out = jbool(t);
            }
        }
        break;
    }
    case N_BIN: {
        jval a = eval(r, sc, e->a);
        jval b = eval(r, sc, e->b);
        if (!r->err) out = arith(r, e, e->op, a, b);
        break;
    }
    case N_NEG:
    case N_POS: {
        jval a = eval(r, sc, e->a);
        if (r->err) break;
        if (a.t == V_UNDEF) undefined_use(r, e->a, &a);
        else if (a.t == V_INT || a.t == V_BOOL) {
            if (e->kind == N_NEG && a.u.i == INT64_MIN)
                r_fail(r, e, KN_ERR_UNSUPPORTED, "integer arithmetic beyond 64 bits");
            else out = jint(e->kind == N_NEG ? -a.u.i : a.u.i);
        } else if (a.t == V_FLOAT) out = jfloat(e->kind == N_NEG ? -a.u.f : a.u.f);
        else
            r_fail(r, e, KN_ERR_INVALID_ARGUMENT, "bad operand type for unary %c: '%s'", e->kind == N_NEG ? '-' : '+',
                   type_name(&a));
        break;
    }
    case N_NOT: {
        jval a = eval(r, sc, e->a);
        if (!r->err) out = jbool(!truthy(&a));
        break;
    }
    case N_AND: {
        jval a = eval(r, sc, e->a);
        out = r->err || !truthy(&a) ? a : eval(r, sc, e->b);
        break;
    }
    case N_OR: {
        jval a = eval(r, sc, e->a);
        out = r->err || truthy(&a) ? a : eval(r, sc, e->b);
        break;
    }
    case N_CMP: {
        jval left = eval(r, sc, e->a);
        int res = 1;
        for (int i = 0; i < e->n && res && !r->err; i++) {
            jval right = eval(r, sc, e->list[i]);
            if (r->err) break;
            int op = e->ops[i], c;
            switch (op) {
            case OP_EQ: res = val_eq(&left, &right); break;
            case OP_NE: res = !val_eq(&left, &right); break;
            case OP_IN:
            case OP_NOTIN:
                if (contains(r, e, left, right, &c)) break;
                res = op == OP_IN ? c : !c;
                break;
            default:
                c = val_cmp(&left, &right);
                if (c == -2) {
                    static const char *const sym[] = {"<", "<=", ">", ">="};
                    r_fail(r, e, KN_ERR_INVALID_ARGUMENT, "'%s' not supported between instances of '%s' and '%s'",
                           sym[op - OP_LT], type_name(&left), type_name(&right));
                    break;
                }
                if (c == 2) res = 0;
                else res = op == OP_LT ? c < 0 : op == OP_LE ? c <= 0 : op == OP_GT ? c > 0 : c >= 0;
            }
            left = right;
        }
        if (!r->err) out = jbool(res);
        break;
    }
    case N_COND: {
        jval c = eval(r, sc, e->a);
        if (r->err) break;
        out = truthy(&c) ? eval(r, sc, e->b) : e->c ? eval(r, sc, e->c) : JUNDEF;
        break;
    }
    case N_CONCAT: {
        ct_buf b = {0};
        b.max = r->max_out;
        for (int i = 0; i < e->n && !r->err; i++) {
            jval v = eval(r, sc, e->list[i]);
            if (!r->err) py_str(r, e, &b, &v, 0, 0);
        }
        if (r->err) free(b.p);
        else out = buf_to_str(r, &b);
        break;
    }
    default: r_fail(r, e, KN_ERR_INVALID_ARGUMENT, "internal: not an expression"); break;
    }
    r->depth--;
    return r->err ? JUNDEF : out;
}

/* ------------------------------------------------------------------------------------------ */
/* tests and filters */

static int run_test(rctx *r, const node *at, const char *name, jval v, const jval *ta, int nta) {
    int t = v.t;
#define NEED(k) \
    do { \
        if (nta != (k)) { \
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "test '%s' takes %d argument(s), got %d", name, (k), nta); \
            return -1; \
        } \
    } while (0)
    if (strcmp(name, "divisibleby") && strcmp(name, "equalto") && strcmp(name, "eq") && strcmp(name, "==") &&
        strcmp(name, "ne") && strcmp(name, "!=") && strcmp(name, "lt") && strcmp(name, "<") && strcmp(name, "le") &&
        strcmp(name, "<=") && strcmp(name, "gt") && strcmp(name, ">") && strcmp(name, "ge") && strcmp(name, ">=") &&
        strcmp(name, "in") && strcmp(name, "sameas"))
        NEED(0);
    else NEED(1);
#undef NEED
    if (!strcmp(name, "defined")) return t != V_UNDEF;
    if (!strcmp(name, "undefined")) return t == V_UNDEF;
    if (!strcmp(name, "none")) return t == V_NONE;
    if (!strcmp(name, "string")) return t == V_STR;
    if (!strcmp(name, "number")) return t == V_INT || t == V_FLOAT || t == V_BOOL;
    if (!strcmp(name, "integer")) return t == V_INT;
    if (!strcmp(name, "float")) return t == V_FLOAT;
    if (!strcmp(name, "boolean")) return t == V_BOOL;
    if (!strcmp(name, "true")) return t == V_BOOL && v.u.i;
    if (!strcmp(name, "false")) return t == V_BOOL && !v.u.i;
    if (!strcmp(name, "iterable")) return t == V_STR || t == V_LIST || t == V_DICT || t == V_UNDEF || t == V_LOOP;
    if (!strcmp(name, "mapping")) return t == V_DICT;
    if (!strcmp(name, "sequence"))
        return t == V_STR || t == V_DICT || t == V_UNDEF ||
            (t == V_LIST && (v.u.l->view == LV_LIST || v.u.l->view == LV_TUPLE));
    if (!strcmp(name, "callable")) return t == V_MACRO || t == V_FUNC;
    if (!strcmp(name, "odd") || !strcmp(name, "even") || !strcmp(name, "divisibleby")) {
        jval d = !strcmp(name, "divisibleby") ? ta[0] : jint(2);
        jval m = arith(r, at, OP_MOD, v, d);
        if (r->err) return -1;
        jval zero = jint(0), one = jint(1);
        return !strcmp(name, "odd") ? val_eq(&m, &one) : val_eq(&m, &zero);
    }
    if (!strcmp(name, "equalto") || !strcmp(name, "eq") || !strcmp(name, "==")) return val_eq(&v, &ta[0]);
    if (!strcmp(name, "ne") || !strcmp(name, "!=")) return !val_eq(&v, &ta[0]);
    if (!strcmp(name, "in")) {
        int c;
        if (contains(r, at, v, ta[0], &c)) return -1;
        return c;
    }
    if (!strcmp(name, "sameas")) {
        const jval *o = &ta[0];
        if (t != o->t) return 0;
        if (t == V_NONE) return 1;
        if (t == V_BOOL) return v.u.i == o->u.i;
        if (t == V_INT) return v.u.i == o->u.i && v.u.i >= -5 && v.u.i <= 256; /* CPython's cached ints */
        if (t == V_LIST) return v.u.l == o->u.l;
        if (t == V_DICT || t == V_NS) return v.u.d == o->u.d;
        return 0;
    }
    int c = val_cmp(&v, &ta[0]);
    if (c == -2) {
        r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "test '%s' cannot order '%s' and '%s'", name, type_name(&v),
               type_name(&ta[0]));
        return -1;
    }
    if (c == 2) return 0;
    if (!strcmp(name, "lt") || !strcmp(name, "<")) return c < 0;
    if (!strcmp(name, "le") || !strcmp(name, "<=")) return c <= 0;
    if (!strcmp(name, "gt") || !strcmp(name, ">")) return c > 0;
    if (!strcmp(name, "ge") || !strcmp(name, ">=")) return c >= 0;
    r_fail(r, at, KN_ERR_UNSUPPORTED, "test '%s' is outside the supported subset", name);
    return -1;
}

/* Jinja's make_attrgetter: "a.b.0" walks items (digits become integers) */
static jval attr_path(rctx *r, const node *at, jval v, jval attr) {
    if (attr.t != V_STR) return get_item(r, at, NULL, v, attr);
    size_t i = 0;
    for (;;) {
        size_t e = i;
        while (e < attr.n && attr.u.s[e] != '.') e++;
        int digits = e > i;
        for (size_t k = i; k < e; k++) digits &= is_digit((unsigned char)attr.u.s[k]);
        jval key = jstr(attr.u.s + i, e - i);
        if (digits && e - i < 18) {
            int64_t x = 0;
            for (size_t k = i; k < e; k++) x = x * 10 + (attr.u.s[k] - '0');
            key = jint(x);
        }
        v = get_item(r, at, NULL, v, key);
        if (r->err || e >= attr.n) return v;
        i = e + 1;
    }
}

static jval py_int_of(rctx *r, jval v, jval dflt, int64_t base) {
    if (v.t == V_INT || v.t == V_BOOL) return jint(v.u.i);
    if (v.t == V_FLOAT) {
        if (isnan(v.u.f) || isinf(v.u.f) || fabs(v.u.f) >= 9.2e18) return dflt;
        return jint((int64_t)v.u.f);
    }
    if (v.t == V_STR) {
        /* int(s, base): surrounding whitespace, a sign, digits with single underscores */
        jval s = py_strip(v, NULL, 3);
        char tmp[128];
        size_t m = 0;
        int ok = s.n > 0 && s.n < sizeof tmp;
        for (size_t i = 0; ok && i < s.n; i++) {
            char c = s.u.s[i];
            if (c == '_') {
                if (i == 0 || i + 1 >= s.n || !isalnum((unsigned char)s.u.s[i - 1]) ||
                    !isalnum((unsigned char)s.u.s[i + 1]))
                    ok = 0;
                continue;
            }
            tmp[m++] = c;
        }
        tmp[m] = 0;
        if (ok && m) {
            char *end;
            errno = 0;
            long long x = strtoll(tmp, &end, (int)base);
            if (!*end && !errno && !(tmp[0] == '+' && tmp[1] == '-') && !(tmp[0] == '-' && tmp[1] == '+') &&
                !isspace((unsigned char)tmp[m > 1 ? 1 : 0]))
                return jint(x);
        }
        /* int(float(s)) */
        if (ok && m) {
            char *end;
            double d = strtod(tmp, &end);
            int hex = strchr(tmp, 'x') || strchr(tmp, 'X');
            if (!*end && !hex) {
                if (isnan(d) || isinf(d) || fabs(d) >= 9.2e18) return dflt;
                return jint((int64_t)d);
            }
        }
        return dflt;
    }
    (void)r;
    return dflt;
}

static jval run_filter(rctx *r, scope *sc, const node *at, const char *name, jval v, args *a) {
    (void)sc;
    static const char *const none[] = {NULL};
    if (!strcmp(name, "safe")) {
        if (args_check(r, at, a, 0, none, name)) return JUNDEF;
        return markup(to_str(r, at, &v), 1); /* Markup(value) */
    }
    if (!strcmp(name, "trim")) {
        static const char *const kw[] = {"chars", NULL};
        if (args_check(r, at, a, 1, kw, name)) return JUNDEF;
        const jval *c = arg_get(r, at, a, 0, "chars", name);
        if (c && c->t == V_NONE) c = NULL;
        if (r->err || (c && need_str(r, at, c, "trim chars"))) return JUNDEF;
        jval s = to_str(r, at, &v);
        return r->err ? JUNDEF : markup(py_strip(s, c, 3), is_markup(&s));
    }
    if (!strcmp(name, "length") || !strcmp(name, "count")) {
        if (args_check(r, at, a, 0, none, name)) return JUNDEF;
        int64_t n = py_len(r, at, v);
        return r->err ? JUNDEF : jint(n);
    }
    if (!strcmp(name, "string")) {
        if (args_check(r, at, a, 0, none, name)) return JUNDEF;
        return to_str(r, at, &v);
    }
    if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "capitalize") || !strcmp(name, "title")) {
        if (args_check(r, at, a, 0, none, name)) return JUNDEF;
        jval s = to_str(r, at, &v);
        if (r->err) return JUNDEF;
        /* soft_str(s).upper() keeps a Markup; the title filter joins plain pieces */
        return markup(py_case(r, s,
                              name[0] == 'l'       ? 0
                                  : name[0] == 'u' ? 1
                                  : name[0] == 'c' ? 2
                                                   : 3),
                      is_markup(&s) && name[0] != 't');
    }
    if (!strcmp(name, "replace")) {
        static const char *const kw[] = {"old", "new", "count", NULL};
        if (args_check(r, at, a, 3, kw, name)) return JUNDEF;
        const jval *o = arg_get(r, at, a, 0, "old", name), *n = arg_get(r, at, a, 1, "new", name),
                   *c = arg_get(r, at, a, 2, "count", name);
        if (r->err) return JUNDEF;
        if (!o || !n) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "replace needs old and new");
            return JUNDEF;
        }
        jval s = to_str(r, at, &v), os = to_str(r, at, o), ns = to_str(r, at, n);
        if (r->err || (c && c->t != V_NONE && need_int(r, at, c, "replace count"))) return JUNDEF;
        return py_replace(r, s, os, ns, c && c->t != V_NONE ? c->u.i : -1);
    }
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        static const char *const kw[] = {"default_value", "boolean", NULL};
        if (args_check(r, at, a, 2, kw, name)) return JUNDEF;
        const jval *dv = arg_get(r, at, a, 0, "default_value", name), *bo = arg_get(r, at, a, 1, "boolean", name);
        if (r->err) return JUNDEF;
        jval d = dv ? *dv : jstr("", 0);
        if (v.t == V_UNDEF || (bo && truthy(bo) && !truthy(&v))) return d;
        return v;
    }
    if (!strcmp(name, "int") || !strcmp(name, "float")) {
        static const char *const kw[] = {"default", "base", NULL};
        if (args_check(r, at, a, name[0] == 'i' ? 2 : 1, kw, name)) return JUNDEF;
        const jval *dv = arg_get(r, at, a, 0, "default", name),
                   *bs = name[0] == 'i' ? arg_get(r, at, a, 1, "base", name) : NULL;
        if (r->err || (bs && need_int(r, at, bs, "int base"))) return JUNDEF;
        if (name[0] == 'i') return py_int_of(r, v, dv ? *dv : jint(0), bs ? bs->u.i : 10);
        jval d = dv ? *dv : jfloat(0.0);
        if (v.t == V_FLOAT) return v;
        if (v.t == V_INT || v.t == V_BOOL) return jfloat((double)v.u.i);
        if (v.t == V_STR) {
            jval s = py_strip(v, NULL, 3);
            char tmp[128];
            if (!s.n || s.n >= sizeof tmp || memchr(s.u.s, 'x', s.n) || memchr(s.u.s, 'X', s.n) ||
                memchr(s.u.s, '_', s.n))
                return d;
            memcpy(tmp, s.u.s, s.n);
            tmp[s.n] = 0;
            char *end;
            double f = strtod(tmp, &end);
            return *end ? d : jfloat(f);
        }
        return d;
    }
    if (!strcmp(name, "abs")) {
        if (args_check(r, at, a, 0, none, name)) return JUNDEF;
        if (v.t == V_INT || v.t == V_BOOL) return jint(v.u.i < 0 ? -v.u.i : v.u.i);
        if (v.t == V_FLOAT) return jfloat(fabs(v.u.f));
        r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "bad operand type for abs(): '%s'", type_name(&v));
        return JUNDEF;
    }
    if (!strcmp(name, "escape") || !strcmp(name, "e")) {
        if (args_check(r, at, a, 0, none, name)) return JUNDEF;
        return html_escape(r, at, v);
    }
    if (!strcmp(name, "unique")) {
        /* Jinja's do_unique: first occurrences, keys lower-cased unless case_sensitive (a generator) */
        static const char *const kw[] = {"case_sensitive", "attribute", NULL};
        if (args_check(r, at, a, 2, kw, name)) return JUNDEF;
        const jval *cs = arg_get(r, at, a, 0, "case_sensitive", name), *attr = arg_get(r, at, a, 1, "attribute", name);
        if (r->err) return JUNDEF;
        jlist *l = iter_list(r, at, v);
        jlist *o = l ? new_list(r, l->n, LV_GEN) : NULL;
        jval *keys = l && l->n ? r_alloc(r, (size_t)l->n * sizeof(jval)) : NULL;
        if (!o || (l->n && !keys)) return JUNDEF;
        int64_t m = 0;
        for (int64_t i = 0; i < l->n; i++) {
            jval k = attr && attr->t != V_NONE ? attr_path(r, at, l->v[i], *attr) : l->v[i];
            if (r->err) return JUNDEF;
            if (k.t == V_STR && !(cs && truthy(cs))) k = py_case(r, k, 0);
            if ((k.t == V_LIST && k.u.l->view != LV_TUPLE) || k.t == V_DICT || k.t == V_NS) {
                r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "unhashable type: '%s'", type_name(&k));
                return JUNDEF;
            }
            int seen = 0;
            for (int64_t j = 0; j < m && !seen; j++) seen = val_eq(&keys[j], &k);
            if (!seen) {
                keys[m] = k;
                o->v[m++] = l->v[i];
            }
        }
        o->n = m;
        return jlistv(o);
    }
    if (!strcmp(name, "indent")) {
        /* Jinja's do_indent: s + "\n" split by str.splitlines(), every line but the first (and
         * blank ones unless blank=true) prefixed, the first too with first=true */
        static const char *const kw[] = {"width", "first", "blank", NULL};
        if (args_check(r, at, a, 3, kw, name)) return JUNDEF;
        const jval *w = arg_get(r, at, a, 0, "width", name), *fi = arg_get(r, at, a, 1, "first", name),
                   *bl = arg_get(r, at, a, 2, "blank", name);
        if (r->err) return JUNDEF;
        if (v.t == V_UNDEF) {
            undefined_use(r, at->a, &v);
            return JUNDEF;
        }
        if (v.t != V_STR) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "indent: unsupported operand type(s) for +=: '%s' and 'str'",
                   type_name(&v));
            return JUNDEF;
        }
        jval ind = jstr("    ", 4);
        if (w && w->t == V_STR) ind = *w;
        else if (w) {
            if (need_int(r, at, w, "indent width")) return JUNDEF;
            int64_t k = w->u.i < 0 ? 0 : w->u.i;
            if (k > 4096) {
                r_fail(r, at, KN_ERR_UNSUPPORTED, "indent width beyond 4096 is outside the supported subset");
                return JUNDEF;
            }
            char *sp = r_alloc(r, (size_t)k + 1);
            if (!sp) return JUNDEF;
            memset(sp, ' ', (size_t)k);
            ind = jstr(sp, (size_t)k);
        }
        int first = fi && truthy(fi), blank = bl && truthy(bl);
        ct_buf b = {0};
        b.max = r->max_out;
        if (first) buf_put(&b, ind.u.s, ind.n);
        /* the lines of s + "\n" */
        char *t = r_alloc(r, v.n + 2);
        if (!t) return JUNDEF;
        memcpy(t, v.u.s, v.n);
        t[v.n] = '\n';
        size_t n = v.n + 1, i = 0, line = 0;
        while (i < n) {
            size_t st = i, end = i, next = i;
            for (;;) {
                if (next >= n) {
                    end = next;
                    break;
                }
                size_t j = next;
                int32_t c = u8_next(t, n, &j);
                if (c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || (c >= 0x1c && c <= 0x1e) || c == 0x85 ||
                    c == 0x2028 || c == 0x2029) {
                    end = next;
                    if (c == '\r' && j < n && t[j] == '\n') j++;
                    next = j;
                    break;
                }
                next = j;
            }
            if (line) {
                buf_put(&b, "\n", 1);
                if (blank || end > st) buf_put(&b, ind.u.s, ind.n);
            }
            buf_put(&b, t + st, end - st);
            line++;
            i = next;
        }
        return markup(buf_to_str(r, &b), is_markup(&v));
    }
    if (!strcmp(name, "tojson")) {
        /* transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
        static const char *const kw[] = {"ensure_ascii", "indent", "separators", "sort_keys", NULL};
        if (args_check(r, at, a, 4, kw, name)) return JUNDEF;
        const jval *ea = arg_get(r, at, a, 0, "ensure_ascii", name), *in = arg_get(r, at, a, 1, "indent", name),
                   *sp = arg_get(r, at, a, 2, "separators", name), *sk = arg_get(r, at, a, 3, "sort_keys", name);
        if (r->err) return JUNDEF;
        json_opts o = {ea ? truthy(ea) : 0, -1, ", ", ": ", 2, 2, sk ? truthy(sk) : 0};
        if (in && in->t != V_NONE) {
            if (in->t != V_INT && in->t != V_BOOL) {
                r_fail(r, at, KN_ERR_UNSUPPORTED, "tojson indent must be an integer here (got %s)", type_name(in));
                return JUNDEF;
            }
            if (in->u.i > 256) {
                r_fail(r, at, KN_ERR_UNSUPPORTED, "tojson indent beyond 256 is outside the supported subset");
                return JUNDEF;
            }
            o.indent = in->u.i < 0 ? 0 : (int)in->u.i;
            o.item_sep = ",";
            o.item_sep_n = 1;
        }
        if (sp && sp->t != V_NONE) {
            if (sp->t != V_LIST || sp->u.l->n != 2 || sp->u.l->v[0].t != V_STR || sp->u.l->v[1].t != V_STR) {
                r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "tojson separators must be a pair of strings");
                return JUNDEF;
            }
            o.item_sep = sp->u.l->v[0].u.s;
            o.item_sep_n = sp->u.l->v[0].n;
            o.key_sep = sp->u.l->v[1].u.s;
            o.key_sep_n = sp->u.l->v[1].n;
        }
        ct_buf b = {0};
        b.max = r->max_out;
        if (json_dump(r, at, &b, &v, &o, 0)) {
            free(b.p);
            return JUNDEF;
        }
        return buf_to_str(r, &b);
    }
    if (!strcmp(name, "items")) {
        if (args_check(r, at, a, 0, none, name)) return JUNDEF;
        if (v.t == V_UNDEF) return jlistv(new_list(r, 0, LV_GEN));
        if (v.t != V_DICT) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "can only get item pairs from a mapping, not %s", type_name(&v));
            return JUNDEF;
        }
        jval it = dict_method(r, at, v, "items", a);
        if (!r->err) it.u.l->view = LV_GEN;
        return it;
    }
    if (!strcmp(name, "list")) {
        if (args_check(r, at, a, 0, none, name)) return JUNDEF;
        jlist *l = iter_list(r, at, v);
        if (!l) return JUNDEF;
        jlist *o = new_list(r, l->n, LV_LIST);
        if (!o) return JUNDEF;
        if (l->n) memcpy(o->v, l->v, (size_t)l->n * sizeof(jval));
        return jlistv(o);
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        if (args_check(r, at, a, 0, none, name)) return JUNDEF;
        if (name[0] == 'l' && v.t == V_LIST && v.u.l->view == LV_GEN) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "'generator' object is not reversible");
            return JUNDEF;
        }
        if (name[0] == 'l' && v.t != V_UNDEF && v.t != V_STR && v.t != V_LIST && v.t != V_DICT) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "'%s' object is not reversible", type_name(&v));
            return JUNDEF;
        }
        jlist *l = iter_list(r, at, v);
        if (!l) return JUNDEF;
        if (!l->n) return JUNDEF;
        return name[0] == 'f' ? l->v[0] : l->v[l->n - 1];
    }
    if (!strcmp(name, "reverse")) {
        if (args_check(r, at, a, 0, none, name)) return JUNDEF;
        if (v.t == V_STR) {
            jval m1 = jint(-1), nn = jnone();
            return do_slice(r, at, NULL, v, &nn, &nn, &m1);
        }
        jlist *l = iter_list(r, at, v);
        if (!l) return JUNDEF;
        int view = v.t == V_LIST && v.u.l->view == LV_GEN ? LV_LIST : LV_GEN; /* reversed() gives an iterator */
        jlist *o = new_list(r, l->n, view);
        if (!o) return JUNDEF;
        for (int64_t i = 0; i < l->n; i++) o->v[i] = l->v[l->n - 1 - i];
        return jlistv(o);
    }
    if (!strcmp(name, "join")) {
        static const char *const kw[] = {"d", "attribute", NULL};
        if (args_check(r, at, a, 2, kw, name)) return JUNDEF;
        const jval *d = arg_get(r, at, a, 0, "d", name), *attr = arg_get(r, at, a, 1, "attribute", name);
        if (r->err) return JUNDEF;
        jval sep = d ? to_str(r, at, d) : jstr("", 0);
        jlist *l = iter_list(r, at, v);
        if (!l || r->err) return JUNDEF;
        ct_buf b = {0};
        b.max = r->max_out;
        for (int64_t i = 0; i < l->n && !r->err; i++) {
            jval x = l->v[i];
            if (attr && attr->t != V_NONE) x = attr_path(r, at, x, *attr);
            if (r->err) break;
            if (i) buf_put(&b, sep.u.s, sep.n);
            py_str(r, at, &b, &x, 0, 0);
        }
        if (r->err) {
            free(b.p);
            return JUNDEF;
        }
        return buf_to_str(r, &b);
    }
    if (!strcmp(name, "select") || !strcmp(name, "reject") || !strcmp(name, "selectattr") ||
        !strcmp(name, "rejectattr")) {
        if (a->nk) {
            r_fail(r, at, KN_ERR_UNSUPPORTED, "keyword arguments to %s are outside the supported subset", name);
            return JUNDEF;
        }
        int byattr = strstr(name, "attr") != NULL, want = name[0] == 's';
        if (!truthy(&v)) return jlistv(new_list(r, 0, LV_GEN)); /* Jinja iterates only a truthy value */
        if (byattr && a->n < 1) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "%s needs an attribute", name);
            return JUNDEF;
        }
        int k0 = byattr ? 1 : 0;
        const char *test = NULL;
        if (a->n > k0) {
            if (need_str(r, at, &a->v[k0], "test name")) return JUNDEF;
            jval tn = r_str(r, a->v[k0].u.s, a->v[k0].n);
            if (r->err) return JUNDEF;
            test = tn.u.s;
            if (!test_known(test)) {
                r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "no test named '%s'", test);
                return JUNDEF;
            }
            if (!test_supported(test)) {
                r_fail(r, at, KN_ERR_UNSUPPORTED, "test '%s' is outside the supported subset", test);
                return JUNDEF;
            }
        }
        jlist *l = iter_list(r, at, v);
        if (!l) return JUNDEF;
        jlist *o = new_list(r, l->n, LV_GEN);
        if (!o) return JUNDEF;
        int64_t m = 0;
        for (int64_t i = 0; i < l->n; i++) {
            jval x = byattr ? attr_path(r, at, l->v[i], a->v[0]) : l->v[i];
            if (r->err) return JUNDEF;
            int t = test ? run_test(r, at, test, x, a->v + k0 + 1, a->n - k0 - 1) : truthy(&x);
            if (t < 0) return JUNDEF;
            if (t == want) o->v[m++] = l->v[i];
        }
        o->n = m;
        return jlistv(o);
    }
    if (!strcmp(name, "map")) {
        if (!truthy(&v)) return jlistv(new_list(r, 0, LV_GEN)); /* Jinja iterates only a truthy value */
        jlist *l = iter_list(r, at, v);
        if (!l) return JUNDEF;
        jlist *o = new_list(r, l->n, LV_GEN);
        if (!o) return JUNDEF;
        const jval *attr = NULL, *dflt = NULL;
        for (int i = 0; i < a->nk; i++) {
            if (!strcmp(a->kn[i], "attribute")) attr = &a->kv[i];
            else if (!strcmp(a->kn[i], "default")) dflt = &a->kv[i];
        }
        if (attr) {
            if (a->n || a->nk > (dflt ? 2 : 1)) {
                r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "map(attribute=...) takes only attribute and default");
                return JUNDEF;
            }
            for (int64_t i = 0; i < l->n; i++) {
                jval x = attr_path(r, at, l->v[i], *attr);
                if (r->err) return JUNDEF;
                if (x.t == V_UNDEF && dflt) x = *dflt;
                o->v[i] = x;
            }
            return jlistv(o);
        }
        if (!a->n || need_str(r, at, &a->v[0], "map filter name")) {
            if (!r->err) r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "map needs a filter name or attribute=");
            return JUNDEF;
        }
        jval fn = r_str(r, a->v[0].u.s, a->v[0].n);
        if (r->err) return JUNDEF;
        if (!filter_known(fn.u.s)) {
            r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "no filter named '%s'", fn.u.s);
            return JUNDEF;
        }
        if (!filter_supported(fn.u.s) || !strcmp(fn.u.s, "map")) {
            r_fail(r, at, KN_ERR_UNSUPPORTED, "filter '%s' is outside the supported subset", fn.u.s);
            return JUNDEF;
        }
        args sub = {a->n - 1, a->nk, a->v + 1, a->kn, a->kv};
        for (int64_t i = 0; i < l->n; i++) {
            o->v[i] = run_filter(r, sc, at, fn.u.s, l->v[i], &sub);
            if (r->err) return JUNDEF;
        }
        return jlistv(o);
    }
    r_fail(r, at, KN_ERR_UNSUPPORTED, "filter '%s' is outside the supported subset", name);
    return JUNDEF;
}

/* ------------------------------------------------------------------------------------------ */
/* statements */

enum { EX_OK = 0, EX_BREAK = 1, EX_CONTINUE = 2, EX_ERR = -1 };

/* ns.attr = v: the name must hold a namespace() */
static int assign_ns(rctx *r, scope *sc, const node *tg, jval v, const node *at) {
    int found;
    jval ns = scope_get(sc, tg->name, &found);
    if (!found) {
        int k = dict_find_str(r->ctx, tg->name, tg->name_n);
        if (k >= 0) ns = r->ctx->v[k];
    }
    if (ns.t != V_NS) {
        r_fail(r, at, KN_ERR_INVALID_ARGUMENT, "cannot assign attribute on non-namespace object");
        return EX_ERR;
    }
    const jval *an = &tg->a->val;
    if (an->n && an->u.s[0] == '_') {
        r_fail(r, at, KN_ERR_INVALID_ARGUMENT,
               "chat templates cannot store underscore-prefixed attributes on a namespace, but got '%s'", an->u.s);
        return EX_ERR;
    }
    return dict_set(r, ns.u.d, *an, v) ? EX_ERR : EX_OK;
}

static int assign_target(rctx *r, scope *sc, const node *tg, jval v) {
    if (tg->kind == N_NAME) return scope_set(r, sc, tg->name, v) ? EX_ERR : EX_OK;
    /* tuple target: unpack exactly */
    if (v.t == V_UNDEF) {
        r_fail(r, tg, KN_ERR_INVALID_ARGUMENT, "cannot unpack an undefined value");
        return EX_ERR;
    }
    jlist *l = iter_list(r, tg, v);
    if (!l) return EX_ERR;
    if (l->n != tg->n) {
        r_fail(r, tg, KN_ERR_INVALID_ARGUMENT, "%s values to unpack (expected %d, got %lld)",
               l->n > tg->n ? "too many" : "not enough", tg->n, (long long)l->n);
        return EX_ERR;
    }
    for (int i = 0; i < tg->n; i++) {
        const node *e = tg->list[i];
        if (e->kind == N_ATTR ? assign_ns(r, sc, e, l->v[i], tg) : scope_set(r, sc, e->name, l->v[i])) return EX_ERR;
    }
    return EX_OK;
}

static int exec_for(rctx *r, scope *sc, const node *s, ct_buf *out) {
    jval itv = eval(r, sc, s->b);
    if (r->err) return EX_ERR;
    jlist *items = iter_list(r, s->b, itv);
    if (!items) return EX_ERR;
    const node *tg = s->a->n == 1 && s->a->kind == N_TUPLE ? s->a->list[0] : s->a;
    if (s->c) {
        /* the loop filter sees the target, not `loop` */
        jlist *kept = new_list(r, items->n, LV_LIST);
        if (!kept) return EX_ERR;
        int64_t m = 0;
        for (int64_t i = 0; i < items->n; i++) {
            if (step(r, s)) return EX_ERR;
            scope *fs = new_scope(r, sc);
            if (!fs || assign_target(r, fs, tg, items->v[i])) return EX_ERR;
            jval c = eval(r, fs, s->c);
            if (r->err) return EX_ERR;
            if (truthy(&c)) kept->v[m++] = items->v[i];
        }
        kept->n = m;
        items = kept;
    }
    /* one loop object for the whole loop, as Jinja's LoopContext, and one scope per iteration that
     * is reused unless a macro defined in it kept it */
    jloop *lp = r_alloc(r, sizeof *lp);
    if (!lp) return EX_ERR;
    lp->len = items->n;
    lp->items = items;
    jval lv = {V_LOOP, 0, {0}};
    lv.u.lp = lp;
    scope *is = NULL;
    int completed = 0; /* Jinja runs the else body unless an iteration reached the end of the body:
                          a break or a continue in every iteration leaves it to run */
    for (int64_t i = 0; i < items->n; i++) {
        if (step(r, s)) return EX_ERR;
        if (!is || is->captured) is = new_scope(r, sc);
        if (!is) return EX_ERR;
        is->n = 0;
        lp->i = i;
        if (scope_set(r, is, "loop", lv) || assign_target(r, is, tg, items->v[i])) return EX_ERR;
        int rc = exec_body(r, is, s->list[0], out);
        if (rc == EX_ERR) return EX_ERR;
        if (rc == EX_BREAK) break;
        if (rc == EX_OK) completed = 1;
    }
    if (!completed && s->list[1]) return exec_body(r, sc, s->list[1], out);
    return EX_OK;
}

static int exec_body(rctx *r, scope *sc, const node *b, ct_buf *out) {
    if (r->depth > CT_MAX_DEPTH) {
        r_fail(r, b, KN_ERR_INVALID_ARGUMENT, "statements nested too deeply");
        return EX_ERR;
    }
    r->depth++;
    int rc = EX_OK;
    for (int i = 0; i < b->n && rc == EX_OK; i++) {
        const node *s = b->list[i];
        switch (s->kind) {
        case N_TEXT: buf_put(out, s->val.u.s, s->val.n); break;
        case N_EMIT: {
            jval v = eval(r, sc, s->a);
            if (!r->err) py_str(r, s->a, out, &v, 0, 0);
            break;
        }
        case N_IF: {
            int done = 0;
            for (int k = 0; k < s->n && !done && !r->err; k++) {
                jval c = eval(r, sc, s->list2[k]);
                if (r->err) break;
                if (truthy(&c)) {
                    done = 1;
                    rc = exec_body(r, sc, s->list[k], out);
                }
            }
            if (!done && !r->err && s->c) rc = exec_body(r, sc, s->c, out);
            break;
        }
        case N_FOR: rc = exec_for(r, sc, s, out); break;
        case N_SET: {
            jval v = eval(r, sc, s->b);
            if (r->err) break;
            const node *tg = s->a->kind == N_TUPLE && s->a->n == 1 ? s->a->list[0] : s->a;
            rc = assign_target(r, sc, tg, v);
            break;
        }
        case N_SET_ATTR: {
            jval v = eval(r, sc, s->b);
            if (r->err) break;
            rc = assign_ns(r, sc, s->a, v, s);
            break;
        }
        case N_SET_BLOCK: {
            ct_buf b2 = {0};
            b2.max = r->max_out;
            int k = exec_body(r, sc, s->b, &b2);
            if (k != EX_OK || r->err) {
                free(b2.p);
                rc = k == EX_OK ? EX_ERR : k;
                break;
            }
            jval v = buf_to_str(r, &b2);
            if (!r->err) rc = assign_target(r, sc, s->a->kind == N_TUPLE && s->a->n == 1 ? s->a->list[0] : s->a, v);
            break;
        }
        case N_FILTER_BLOCK: {
            ct_buf b2 = {0};
            b2.max = r->max_out;
            int k = exec_body(r, sc, s->a, &b2);
            if (k != EX_OK || r->err) {
                free(b2.p);
                rc = k == EX_OK ? EX_ERR : k;
                break;
            }
            scope *fs = new_scope(r, sc);
            jval body = buf_to_str(r, &b2);
            if (!fs || r->err || scope_set(r, fs, " body", body)) break;
            jval v = eval(r, fs, s->b);
            if (!r->err) py_str(r, s->b, out, &v, 0, 0);
            break;
        }
        case N_MACRO: {
            jval m = {V_MACRO, 0, {0}};
            m.u.mac.m = s;
            m.u.mac.sc = sc;
            sc->captured = 1;
            if (scope_set(r, sc, s->name, m)) rc = EX_ERR;
            break;
        }
        case N_BODY: rc = exec_body(r, sc, s, out); break;
        case N_BREAK: rc = EX_BREAK; break;
        case N_CONTINUE: rc = EX_CONTINUE; break;
        default: r_fail(r, s, KN_ERR_INVALID_ARGUMENT, "internal: not a statement"); break;
        }
        if (r->err) rc = EX_ERR;
        if (out->oom && rc != EX_ERR) {
            r_fail(r, s, KN_ERR_OUT_OF_MEMORY,
                   out->oom == 2 ? "the rendered text exceeds %zu bytes" : "out of memory (%zu)", r->max_out);
            rc = EX_ERR;
        }
    }
    r->depth--;
    return rc;
}

/* Jinja's compiler rejects an unknown filter or test unless it sits in an if (test and bodies) or
 * an inline if, where it fails only when reached; loops, macros and blocks start a frame that is
 * strict again. Reports the first in source order. */
static void check_names(ct_parser *p, const node *x, int soft, int depth) {
    if (!x || p->err) return;
    if (depth > 4 * CT_MAX_DEPTH) {
        p_fail(p, KN_ERR_INVALID_ARGUMENT, x->line, x->col, "template nested too deeply");
        return;
    }
    int d = depth + 1;
    switch (x->kind) {
    case N_FILTER:
    case N_TEST:
        check_names(p, x->a, soft, d);
        if (x->op == 2 && !soft)
            p_fail(p, KN_ERR_INVALID_ARGUMENT, x->ops[0], x->ops[1], "no %s named '%s'",
                   x->kind == N_FILTER ? "filter" : "test", x->name);
        for (int i = 0; i < x->n; i++) check_names(p, x->list[i], soft, d);
        for (int i = 0; i < x->n2; i++) check_names(p, x->list2[i], soft, d);
        return;
    case N_COND:
        check_names(p, x->b, 1, d);
        check_names(p, x->a, 1, d);
        check_names(p, x->c, 1, d);
        return;
    case N_IF:
        for (int i = 0; i < x->n; i++) {
            check_names(p, x->list2[i], 1, d);
            check_names(p, x->list[i], 1, d);
        }
        check_names(p, x->c, 1, d);
        return;
    case N_FOR:
        check_names(p, x->b, soft, d);
        check_names(p, x->c, 0, d);
        check_names(p, x->list[0], 0, d);
        check_names(p, x->list[1], 0, d);
        return;
    case N_MACRO:
        for (int i = 0; i < x->n2; i++) check_names(p, x->list2 ? x->list2[i] : NULL, 0, d);
        check_names(p, x->a, 0, d);
        return;
    case N_SET_BLOCK: check_names(p, x->b, 0, d); return;
    case N_FILTER_BLOCK:
        check_names(p, x->a, 0, d);
        check_names(p, x->b, soft, d);
        return;
    case N_SLICE:
        check_names(p, x->list[0], soft, d);
        check_names(p, x->a, soft, d);
        check_names(p, x->b, soft, d);
        check_names(p, x->c, soft, d);
        return;
    case N_CMP:
        check_names(p, x->a, soft, d);
        for (int i = 0; i < x->n; i++) check_names(p, x->list[i], soft, d);
        return;
    default:
        check_names(p, x->a, soft, d);
        check_names(p, x->b, soft, d);
        if (x->kind != N_SET && x->kind != N_SET_ATTR) check_names(p, x->c, soft, d);
        for (int i = 0; i < x->n; i++) check_names(p, x->list[i], soft, d);
        if (x->kind != N_IF)
            for (int i = 0; i < x->n2 && x->list2; i++) check_names(p, x->list2[i], soft, d);
        return;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* public API */

struct kn_chat_template {
    ct_arena ar;
    node *body;
    char *src;
};

kn_status *kn_chat_template_parse(const char *source, kn_chat_template **out) {
    if (!source || !out) return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_chat_template_parse: NULL argument");
    *out = NULL;
    kn_chat_template *t = calloc(1, sizeof *t);
    if (!t) return KN_OOM(sizeof *t);
    t->ar.limit = CT_ARENA_LIMIT;
    /* Jinja's lexer: \r\n and \r become \n, and one trailing newline is dropped */
    size_t n = strlen(source);
    t->src = malloc(n + 1);
    if (!t->src) {
        free(t);
        return KN_OOM(n);
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (source[i] == '\r') {
            t->src[m++] = '\n';
            if (i + 1 < n && source[i + 1] == '\n') i++;
        } else t->src[m++] = source[i];
    }
    if (m && t->src[m - 1] == '\n') m--;
    t->src[m] = 0;
    ct_parser p = {.ar = &t->ar, .src = t->src, .len = m};
    lex(&p);
    if (!p.err) p_push(&p, TK_EOF, m);
    if (!p.err) t->body = parse_body(&p, NULL);
    if (!p.err && t->body) check_names(&p, t->body, 0, 0);
    free(p.toks);
    if (p.err || !t->body) {
        kn_chat_template_free(t);
        return p.err ? p.err : kn_error(KN_ERR_INVALID_ARGUMENT, "chat template: empty parse");
    }
    *out = t;
    return NULL;
}

void kn_chat_template_free(kn_chat_template *t) {
    if (!t) return;
    ar_free(&t->ar);
    free(t->src);
    free(t);
}

static jval from_json(rctx *r, struct json_object *o, int depth) {
    if (depth > CT_MAX_DEPTH) {
        r_fail(r, NULL, KN_ERR_INVALID_ARGUMENT, "context JSON nested more than %d deep", CT_MAX_DEPTH);
        return JUNDEF;
    }
    switch (json_object_get_type(o)) {
    case json_type_null: return jnone();
    case json_type_boolean: return jbool(json_object_get_boolean(o));
    case json_type_double: return jfloat(json_object_get_double(o));
    case json_type_int:
        errno = 0;
        if (json_object_get_int64(o) == INT64_MAX || json_object_get_int64(o) == INT64_MIN) {
            /* json-c saturates: a larger integer cannot be kept exactly */
            const char *s = json_object_to_json_string(o);
            if (s && strcmp(s, "9223372036854775807") && strcmp(s, "-9223372036854775808")) {
                r_fail(r, NULL, KN_ERR_UNSUPPORTED, "context integer %s is beyond 64 bits", s);
                return JUNDEF;
            }
        }
        return jint(json_object_get_int64(o));
    case json_type_string: return jstr(json_object_get_string(o), (size_t)json_object_get_string_len(o));
    case json_type_array: {
        size_t n = json_object_array_length(o);
        jlist *l = new_list(r, (int64_t)n, LV_LIST);
        if (!l) return JUNDEF;
        for (size_t i = 0; i < n && !r->err; i++) l->v[i] = from_json(r, json_object_array_get_idx(o, i), depth + 1);
        return jlistv(l);
    }
    case json_type_object: {
        jdict *d = new_dict(r, json_object_object_length(o));
        if (!d) return JUNDEF;
        json_object_object_foreach(o, k, val) {
            jval kv = jstr(k, strlen(k));
            jval vv = from_json(r, val, depth + 1);
            if (r->err || dict_set(r, d, kv, vv)) return JUNDEF;
        }
        jval v = {V_DICT, 0, {0}};
        v.u.d = d;
        return v;
    }
    }
    return JUNDEF;
}

kn_status *kn_chat_template_render_ex(const kn_chat_template *t, const char *context_json,
                                      const kn_chat_template_options *opt, char **out) {
    if (!t || !context_json || !out) return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_chat_template_render: NULL argument");
    *out = NULL;
    struct json_tokener *tk = json_tokener_new_ex(CT_MAX_DEPTH);
    if (!tk) return KN_OOM(sizeof(void *));
    struct json_object *ctx = json_tokener_parse_ex(tk, context_json, (int)strlen(context_json));
    enum json_tokener_error je = json_tokener_get_error(tk);
    json_tokener_free(tk);
    if (!ctx || je != json_tokener_success) {
        if (ctx) json_object_put(ctx);
        return kn_error(KN_ERR_INVALID_ARGUMENT, "chat template context: invalid JSON (%s)",
                        json_tokener_error_desc(je));
    }
    if (!json_object_is_type(ctx, json_type_object)) {
        json_object_put(ctx);
        return kn_error(KN_ERR_INVALID_ARGUMENT, "chat template context must be a JSON object");
    }
    rctx r = {0};
    r.ar.limit = CT_ARENA_LIMIT;
    r.max_out = opt && opt->max_out ? opt->max_out : (size_t)64 << 20;
    r.now = opt && opt->fixed_now ? opt->now : time(NULL);
    jval c = from_json(&r, ctx, 0);
    ct_buf b = {0};
    b.max = r.max_out;
    if (!r.err) {
        r.ctx = c.u.d;
        scope *root = new_scope(&r, NULL);
        if (root) exec_body(&r, root, t->body, &b);
    }
    ar_free(&r.ar);
    json_object_put(ctx);
    if (!r.err && b.oom)
        r.err = kn_error(KN_ERR_OUT_OF_MEMORY, "chat template: the rendered text exceeds %zu bytes", r.max_out);
    if (r.err) {
        free(b.p);
        return r.err;
    }
    if (!b.p) {
        b.p = malloc(1);
        if (!b.p) return KN_OOM(1);
        b.p[0] = 0;
    }
    *out = b.p;
    return NULL;
}

kn_status *kn_chat_template_render(const kn_chat_template *t, const char *context_json, char **out) {
    return kn_chat_template_render_ex(t, context_json, NULL, out);
}

/* transformers' _alias_reasoning_fields: a message's reasoning, under whichever of its names comes
 * first, is also passed as "thinking" (first key) and "reasoning_content" */
static struct json_object *alias_reasoning(struct json_object *msgs) {
    static const char *const fields[] = {"reasoning_content", "thinking", "reasoning"};
    if (!json_object_is_type(msgs, json_type_array)) return msgs;
    for (size_t i = 0; i < json_object_array_length(msgs); i++) {
        struct json_object *m = json_object_array_get_idx(msgs, i), *r = NULL, *v;
        if (!json_object_is_type(m, json_type_object)) continue;
        for (int f = 0; f < 3 && !r; f++)
            if (json_object_object_get_ex(m, fields[f], &v) && v) r = v;
        if (!r) continue;
        struct json_object *n = json_object_new_object(), *t;
        json_object_object_add(n, "thinking", json_object_get(json_object_object_get_ex(m, "thinking", &t) ? t : r));
        json_object_object_foreach(m, k, val) {
            if (!strcmp(k, "thinking")) continue;
            json_object_object_add(n, k, json_object_get(strcmp(k, "reasoning_content") ? val : r));
        }
        if (!json_object_object_get_ex(m, "reasoning_content", &t))
            json_object_object_add(n, "reasoning_content", json_object_get(r));
        json_object_array_put_idx(msgs, i, n);
    }
    return msgs;
}

kn_status *kn_chat_template_context(const char *messages_json, const char *tools_json, int add_generation_prompt,
                                    const char *bos_token, const char *eos_token, char **context_json) {
    if (!messages_json || !context_json)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_chat_template_context: NULL argument");
    *context_json = NULL;
    struct json_object *m = json_tokener_parse(messages_json);
    if (!m || !json_object_is_type(m, json_type_array)) {
        if (m) json_object_put(m);
        return kn_error(KN_ERR_INVALID_ARGUMENT, "chat template: the messages must be a JSON list");
    }
    struct json_object *tj = NULL;
    if (tools_json) {
        tj = json_tokener_parse(tools_json);
        if (!tj || !json_object_is_type(tj, json_type_array)) {
            if (tj) json_object_put(tj);
            json_object_put(m);
            return kn_error(KN_ERR_INVALID_ARGUMENT, "chat template: the tools must be a JSON list");
        }
    }
    struct json_object *c = json_object_new_object();
    json_object_object_add(c, "messages", alias_reasoning(m));
    /* apply_chat_template passes tools and documents even when they are None */
    json_object_object_add(c, "tools", tj);
    json_object_object_add(c, "documents", NULL);
    json_object_object_add(c, "add_generation_prompt", json_object_new_boolean(add_generation_prompt));
    if (bos_token) json_object_object_add(c, "bos_token", json_object_new_string(bos_token));
    if (eos_token) json_object_object_add(c, "eos_token", json_object_new_string(eos_token));
    *context_json = strdup(json_object_to_json_string_ext(c, JSON_C_TO_STRING_PLAIN));
    json_object_put(c);
    return *context_json ? NULL : KN_OOM(1);
}

/* ------------------------------------------------------------------------------------------ */
/* model folders */

static char *read_file(const char *path, kn_status **st) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 65536 * 2;
            if (cap > ((size_t)256 << 20)) {
                *st = kn_error(KN_ERR_IO, "%s: larger than 256 MiB", path);
                break;
            }
            char *q = realloc(buf, cap);
            if (!q) {
                *st = KN_OOM(cap);
                break;
            }
            buf = q;
        }
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) break;
    }
    if (ferror(f) && !*st) *st = kn_error(KN_ERR_IO, "%s: read error", path);
    fclose(f);
    if (*st) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

static char *token_string(struct json_object *v) {
    if (!v) return NULL;
    if (json_object_is_type(v, json_type_string)) return strdup(json_object_get_string(v));
    struct json_object *c;
    if (json_object_is_type(v, json_type_object) && json_object_object_get_ex(v, "content", &c) &&
        json_object_is_type(c, json_type_string))
        return strdup(json_object_get_string(c));
    return NULL;
}

kn_status *kn_chat_template_load_dir(const char *dir, kn_chat_template_source *out) {
    if (!dir || !out) return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_chat_template_load_dir: NULL argument");
    memset(out, 0, sizeof *out);
    size_t dl = strlen(dir);
    char *path = malloc(dl + 64);
    if (!path) return KN_OOM(dl + 64);
    kn_status *st = NULL;
    snprintf(path, dl + 64, "%s/chat_template.jinja", dir);
    out->source = read_file(path, &st);
    if (st) goto fail;
    snprintf(path, dl + 64, "%s/tokenizer_config.json", dir);
    char *cfg_text = read_file(path, &st);
    if (st) goto fail;
    if (cfg_text) {
        struct json_object *cfg = json_tokener_parse(cfg_text);
        free(cfg_text);
        if (!cfg || !json_object_is_type(cfg, json_type_object)) {
            if (cfg) json_object_put(cfg);
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "%s: not a JSON object", path);
            goto fail;
        }
        struct json_object *v;
        if (json_object_object_get_ex(cfg, "bos_token", &v)) out->bos_token = token_string(v);
        if (json_object_object_get_ex(cfg, "eos_token", &v)) out->eos_token = token_string(v);
        if (!out->source && json_object_object_get_ex(cfg, "chat_template", &v)) {
            if (json_object_is_type(v, json_type_string)) out->source = strdup(json_object_get_string(v));
            else if (json_object_is_type(v, json_type_array)) {
                for (size_t i = 0; i < json_object_array_length(v); i++) {
                    struct json_object *e = json_object_array_get_idx(v, i), *nm, *tp;
                    if (json_object_object_get_ex(e, "name", &nm) && json_object_object_get_ex(e, "template", &tp) &&
                        json_object_is_type(nm, json_type_string) && json_object_is_type(tp, json_type_string) &&
                        !strcmp(json_object_get_string(nm), "default"))
                        out->source = strdup(json_object_get_string(tp));
                }
                if (!out->source) {
                    json_object_put(cfg);
                    st = kn_error(KN_ERR_INVALID_ARGUMENT, "%s: chat_template lists no template named \"default\"",
                                  path);
                    goto fail;
                }
            } else {
                json_object_put(cfg);
                st = kn_error(KN_ERR_INVALID_ARGUMENT, "%s: chat_template is neither a string nor a list", path);
                goto fail;
            }
        }
        json_object_put(cfg);
    }
    if (!out->source) {
        st = kn_error(KN_ERR_INVALID_ARGUMENT,
                      "%s: no chat_template.jinja and no chat_template in tokenizer_config.json", dir);
        goto fail;
    }
    free(path);
    return NULL;
fail:
    free(path);
    kn_chat_template_source_free(out);
    return st;
}

void kn_chat_template_source_free(kn_chat_template_source *s) {
    if (!s) return;
    free(s->source);
    free(s->bos_token);
    free(s->eos_token);
    memset(s, 0, sizeof *s);
}
