/* CPU kernels for the string ops: StringNormalizer, StringConcat, StringSplit, RegexFullMatch and
 * TfIdfVectorizer. String tensors hold malloc'd char* elements; outputs arrive with NULL elements
 * and every element written here is a fresh allocation. Case mapping is ASCII only (UTF-8 bytes
 * above 0x7f pass through unchanged). RegexFullMatch uses PCRE2 when KILN_HAVE_PCRE2 is defined
 * (RE2-like syntax) and the POSIX extended regex of the C library otherwise. */
#include "graph/ops.h"
#include "graph/op_helpers.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#ifdef KILN_HAVE_PCRE2
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#else
#include <regex.h>
#endif


static const char *str_at(const kn_tensor *t, int64_t i) {
    const char *s = ((const char *const *)t->data)[i];
    return s ? s : "";
}

static kn_status *str_put(kn_tensor *t, int64_t i, const char *s, size_t len) {
    char **d = (char **)t->data;
    char *p = malloc(len + 1);
    if (!p) return KN_OOM(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    free(d[i]);
    d[i] = p;
    return NULL;
}

/* ---- StringNormalizer ---- */

kn_status *kn_cpu_StringNormalizer(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                   kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    if (x->dtype != KN_STRING) return kn_err_dtype(node, x);
    const kn_params_strnorm *np = KN_PARAMS(node, strnorm);
    int mode = np->case_change_action == KN_CASE_LOWER ? 1 : np->case_change_action == KN_CASE_UPPER ? 2 : 0;
    bool cs = np->is_case_sensitive;
    int64_t n = kn_numel(x), kept = kn_string_normalizer_kept(node, x), o = 0;
    if (kn_numel(y) != (kept ? kept : 1))
        return kn_error(KN_ERR_RUNTIME, "StringNormalizer: output holds %lld strings, %lld kept",
                        (long long)kn_numel(y), (long long)kept);
    for (int64_t i = 0; i < n; i++) {
        const char *s = str_at(x, i);
        bool stop = false;
        for (int k = 0; k < np->n_stopwords && !stop; k++)
            stop = cs ? strcmp(np->stopwords[k], s) == 0 : strcasecmp(np->stopwords[k], s) == 0;
        if (stop) continue;
        size_t len = strlen(s);
        KN_TRY(str_put(y, o, s, len));
        char *d = ((char **)y->data)[o++];
        for (size_t k = 0; k < len; k++)
            if (mode == 1) d[k] = (char)tolower((unsigned char)d[k]);
            else if (mode == 2) d[k] = (char)toupper((unsigned char)d[k]);
    }
    if (kept == 0) KN_TRY(str_put(y, 0, "", 0));
    return NULL;
}

/* ---- StringConcat (numpy broadcasting) ---- */

static int64_t str_bcast_index(const kn_tensor *t, const kn_tensor *y, int64_t i) {
    int64_t idx = 0, stride = 1;
    for (int d = y->ndim - 1, td = t->ndim - 1; d >= 0; d--, td--) {
        int64_t c = i % y->dims[d];
        i /= y->dims[d];
        if (td < 0) continue;
        if (t->dims[td] != 1) idx += c * stride;
        stride *= t->dims[td];
    }
    return idx;
}

kn_status *kn_cpu_StringConcat(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                               kn_tensor *const *out, int n_out) {
    const kn_tensor *a = in[0], *b = in[1];
    kn_tensor *y = out[0];
    if (a->dtype != KN_STRING) return kn_err_dtype(node, a);
    if (b->dtype != KN_STRING) return kn_err_dtype(node, b);
    int64_t n = kn_numel(y);
    for (int64_t i = 0; i < n; i++) {
        const char *sa = str_at(a, str_bcast_index(a, y, i)), *sb = str_at(b, str_bcast_index(b, y, i));
        size_t la = strlen(sa), lb = strlen(sb);
        char *p = malloc(la + lb + 1);
        if (!p) return KN_OOM(la + lb + 1);
        memcpy(p, sa, la);
        memcpy(p + la, sb, lb + 1);
        char **d = (char **)y->data;
        free(d[i]);
        d[i] = p;
    }
    return NULL;
}

/* ---- StringSplit (Python str.split semantics) ---- */

static bool str_is_space(char c) { return c && strchr(" \t\n\r\f\v", c) != NULL; }

kn_status *kn_cpu_StringSplit(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                              kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0], *lens = n_out > 1 ? out[1] : NULL;
    if (x->dtype != KN_STRING) return kn_err_dtype(node, x);
    const char *delim = KN_PARAMS(node, strsplit)->delimiter;
    if (delim && !*delim) delim = NULL;
    int64_t maxsplit = KN_PARAMS(node, strsplit)->maxsplit;
    int64_t n = kn_numel(x), width = y->dims[y->ndim - 1];
    for (int64_t i = 0; i < n; i++) {
        const char *s = str_at(x, i);
        int64_t cnt = kn_string_split_count(s, delim, maxsplit), k = 0;
        if (cnt > width)
            return kn_error(KN_ERR_RUNTIME, "StringSplit: %lld pieces exceed the output width %lld", (long long)cnt,
                            (long long)width);
        const char *p = s;
        if (!delim) {
            while (k < cnt) {
                while (str_is_space(*p)) p++;
                const char *e = p;
                if (k == cnt - 1 && maxsplit >= 0 && cnt == maxsplit + 1) e = p + strlen(p); /* remainder kept whole */
                else
                    while (*e && !str_is_space(*e)) e++;
                KN_TRY(str_put(y, i * width + k, p, (size_t)(e - p)));
                k++;
                p = e;
            }
        } else {
            size_t dl = strlen(delim);
            while (k < cnt) {
                const char *e = k == cnt - 1 ? NULL : strstr(p, delim);
                if (!e) e = p + strlen(p);
                KN_TRY(str_put(y, i * width + k, p, (size_t)(e - p)));
                k++;
                p = *e ? e + dl : e;
            }
        }
        for (; k < width; k++) KN_TRY(str_put(y, i * width + k, "", 0));
        if (lens && lens->data) ((int64_t *)lens->data)[i] = cnt;
    }
    return NULL;
}

/* ---- RegexFullMatch ---- */

#ifndef KILN_HAVE_PCRE2
/* Rewrites the common RE2 escapes the C library's extended regex lacks (\d, \s and the class
 * escapes inside brackets, non-capturing groups) and anchors the whole pattern. glibc already
 * understands \w, \W, \b and \B outside brackets. Returns a malloc'd string or NULL. */
static char *str_regex_to_posix(const char *pat) {
    size_t pl = strlen(pat);
    char *o = malloc(pl * 12 + 8), *q = o;
    if (!o) return NULL;
    bool in_br = false;
    q += sprintf(q, "^(");
    for (const char *p = pat; *p; p++) {
        if (*p == '\\' && p[1]) {
            char c = *++p;
            const char *cls = c == 'd' || c == 'D' ? "[:digit:]"
                : c == 's' || c == 'S'             ? "[:space:]"
                : c == 'w' || c == 'W'             ? "[:alnum:]_"
                                                   : NULL;
            if (in_br) {
                if (cls && (c == 'd' || c == 's' || c == 'w')) q += sprintf(q, "%s", cls);
                else if (c == '-') { /* a literal '-' must not form a range: use a one-member class */
                    q += sprintf(q, "%s", "[.-.]");
                } else *q++ = c;
            } else if (cls && c != 'w' && c != 'W') {
                q += sprintf(q, c >= 'a' ? "[%s]" : "[^%s]", cls);
            } else {
                *q++ = '\\';
                *q++ = c;
            }
            continue;
        }
        if (!in_br && *p == '[') {
            in_br = true;
            *q++ = *p;
            if (p[1] == '^') *q++ = *++p;
            if (p[1] == ']') *q++ = *++p;
            continue;
        }
        if (in_br && *p == ']') in_br = false;
        if (!in_br && *p == '(' && p[1] == '?' && p[2] == ':') {
            *q++ = '(';
            p += 2;
            continue;
        }
        *q++ = *p;
    }
    q += sprintf(q, ")$");
    return o;
}
#endif

kn_status *kn_cpu_RegexFullMatch(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                 kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    uint8_t *y = out[0]->data;
    if (x->dtype != KN_STRING) return kn_err_dtype(node, x);
    const char *pat = KN_PARAMS(node, regex)->pattern; /* present: the decoder checks */
    int64_t n = kn_numel(x);
#ifdef KILN_HAVE_PCRE2
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                   PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return kn_error(KN_ERR_INVALID_MODEL, "RegexFullMatch: bad pattern '%s' at %zu: %s", pat, (size_t)off,
                        (const char *)msg);
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) {
        pcre2_code_free(re);
        return KN_OOM(sizeof(void *));
    }
    for (int64_t i = 0; i < n; i++) {
        const char *s = str_at(x, i);
        int rc = pcre2_match(re, (PCRE2_SPTR)s, strlen(s), 0, 0, md, NULL);
        y[i] = rc >= 0;
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);
#else
    char *full = str_regex_to_posix(pat);
    if (!full) return KN_OOM(strlen(pat) * 12 + 8);
    regex_t re;
    int rc = regcomp(&re, full, REG_EXTENDED | REG_NOSUB);
    free(full);
    if (rc) {
        char msg[256];
        regerror(rc, &re, msg, sizeof msg);
        return kn_error(KN_ERR_INVALID_MODEL, "RegexFullMatch: bad pattern '%s': %s", pat, msg);
    }
    for (int64_t i = 0; i < n; i++) y[i] = regexec(&re, str_at(x, i), 0, NULL, 0) == 0;
    regfree(&re);
#endif
    return NULL;
}

/* ---- TfIdfVectorizer ---- */

typedef struct tfidf_gram {
    int64_t size, start, out_idx;
} tfidf_gram;

static bool tfidf_token_eq(const kn_tensor *x, int64_t xi, const char *const *pool_s, const int64_t *pool_i,
                           int64_t pi) {
    if (x->dtype == KN_STRING) return strcmp(str_at(x, xi), pool_s[pi]) == 0;
    return kn_get_i64(x, xi) == pool_i[pi];
}

kn_status *kn_cpu_TfIdfVectorizer(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                  kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    const kn_params_tfidf *tp = KN_PARAMS(node, tfidf);
    int mode = (int)tp->mode; /* 1 TF, 2 IDF, 3 TFIDF */
    int64_t minn = tp->min_gram_length, maxn = tp->max_gram_length;
    int64_t max_skip = tp->max_skip_count;
    const int64_t *counts = tp->ngram_counts, *idx = tp->ngram_indexes, *pool_i = tp->pool_int64s;
    int nc = tp->n_ngram_counts, ni = tp->n_ngram_indexes;
    const char *const *pool_s = tp->pool_strings;
    int np_i = tp->n_pool_int64s;
    int np_s = tp->n_pool_strings;
    int64_t pool_n = x->dtype == KN_STRING ? (np_s > 0 ? np_s : 0) : (np_i > 0 ? np_i : 0);
    if (x->dtype == KN_STRING ? np_s < 0 : np_i < 0)
        return kn_error(KN_ERR_INVALID_MODEL, "TfIdfVectorizer: the pool does not match the input type");
    if (minn < 1 || maxn < minn || max_skip < 0 || nc < 1 || ni < 0)
        return kn_error(KN_ERR_INVALID_MODEL, "TfIdfVectorizer: bad gram lengths [%lld, %lld], skip %lld or counts",
                        (long long)minn, (long long)maxn, (long long)max_skip);
    /* enumerate the pool's n-grams in id order; each id maps to an output column */
    int64_t n_grams = 0;
    for (int i = 0; i < nc; i++) {
        int64_t s = counts[i], e = i + 1 < nc ? counts[i + 1] : pool_n;
        if (s < 0 || e > pool_n || e < s) return kn_error(KN_ERR_INVALID_MODEL, "TfIdfVectorizer: bad ngram_counts");
        n_grams += (e - s) / (i + 1);
    }
    if (n_grams > ni)
        return kn_error(KN_ERR_INVALID_MODEL, "TfIdfVectorizer: %lld n-grams but %d ngram_indexes", (long long)n_grams,
                        ni);
    tfidf_gram *grams = kn_scratch_alloc(ctx, sizeof(tfidf_gram) * (size_t)(n_grams + 1));
    if (!grams) return KN_OOM(sizeof(tfidf_gram) * n_grams);
    int64_t g = 0;
    for (int i = 0; i < nc; i++) {
        int64_t s = counts[i], e = i + 1 < nc ? counts[i + 1] : pool_n, sz = i + 1;
        for (int64_t p = s; p + sz <= e; p += sz, g++) {
            grams[g].size = sz;
            grams[g].start = p;
            grams[g].out_idx = idx[g];
        }
    }
    int64_t width = y->dims[y->ndim - 1], rows = x->ndim == 2 ? x->dims[0] : 1, C = x->dims[x->ndim - 1];
    float *yv = y->data;
    memset(yv, 0, sizeof(float) * (size_t)(rows * width));
    for (int64_t r = 0; r < rows; r++) {
        int64_t start_n = minn;
        for (int64_t skip = 1; skip <= max_skip + 1; skip++) {
            for (int64_t s0 = 0; s0 < C; s0++) {
                if (s0 + skip * (start_n - 1) >= C) break;
                for (int64_t n = start_n; n <= maxn && s0 + skip * (n - 1) < C; n++) {
                    for (int64_t k = 0; k < n_grams; k++) {
                        if (grams[k].size != n) continue;
                        bool eq = true;
                        for (int64_t t = 0; t < n && eq; t++)
                            eq = tfidf_token_eq(x, r * C + s0 + skip * t, pool_s, pool_i, grams[k].start + t);
                        if (eq) {
                            yv[r * width + grams[k].out_idx] += 1.0f;
                            break;
                        }
                    }
                }
            }
            if (start_n == 1) {
                start_n = 2;
                if (start_n > maxn) break;
            }
        }
    }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < width; i++) {
            float f = yv[r * width + i], w = tp->weights && i < tp->n_weights ? tp->weights[i] : 1.0f;
            if (mode == 2) yv[r * width + i] = f > 0.0f ? (tp->weights && tp->n_weights ? w : 1.0f) : 0.0f;
            else if (mode == 3) yv[r * width + i] = tp->weights && tp->n_weights ? w * f : f;
        }
    return NULL;
}
