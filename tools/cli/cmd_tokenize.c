/* `kiln tokenize` and `kiln detokenize`: text lines in, one JSON object per line out (ids,
 * tokens, character offsets, type ids), and ids back to text. Lines are encoded in batches on
 * all cores; output order is input order. */
#include "pipelines/tokenizer.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int kn_cmd_tokenize(int argc, char **argv);
int kn_cmd_detokenize(int argc, char **argv);

typedef struct {
    char *buf;
    size_t len, cap;
} obuf;

static int ob_reserve(obuf *o, size_t n) {
    if (o->len + n <= o->cap) return 0;
    size_t cap = o->cap ? o->cap : 1 << 16;
    while (cap < o->len + n) cap *= 2;
    char *b = realloc(o->buf, cap);
    if (!b) return -1;
    o->buf = b;
    o->cap = cap;
    return 0;
}

static int ob_str(obuf *o, const char *s, size_t n) {
    if (ob_reserve(o, n)) return -1;
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    return 0;
}

static int ob_int(obuf *o, long v) {
    char t[24];
    int n = snprintf(t, sizeof t, "%ld", v);
    return ob_str(o, t, (size_t)n);
}

static int ob_json_string(obuf *o, const char *s, size_t n) {
    if (ob_reserve(o, n * 6 + 2)) return -1;
    char *w = o->buf + o->len;
    *w++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *w++ = '\\';
            *w++ = (char)c;
        } else if (c == '\n') {
            *w++ = '\\';
            *w++ = 'n';
        } else if (c == '\t') {
            *w++ = '\\';
            *w++ = 't';
        } else if (c == '\r') {
            *w++ = '\\';
            *w++ = 'r';
        } else if (c < 0x20) w += sprintf(w, "\\u%04x", c);
        else *w++ = (char)c;
    }
    *w++ = '"';
    o->len = (size_t)(w - o->buf);
    return 0;
}

static int write_encoding(obuf *o, const kn_encoding *e, int full) {
    int rc = ob_str(o, "{\"ids\": [", 9);
    for (int32_t i = 0; i < e->n && !rc; i++) {
        if (i) rc |= ob_str(o, ", ", 2);
        rc |= ob_int(o, e->ids[i]);
    }
    rc |= ob_str(o, "], \"tokens\": [", 14);
    for (int32_t i = 0; i < e->n && !rc; i++) {
        if (i) rc |= ob_str(o, ", ", 2);
        rc |= ob_json_string(o, e->tokens[i], (size_t)e->token_lens[i]);
    }
    rc |= ob_str(o, "], \"offsets\": [", 15);
    for (int32_t i = 0; i < e->n && !rc; i++) {
        if (i) rc |= ob_str(o, ", ", 2);
        rc |= ob_str(o, "[", 1);
        rc |= ob_int(o, e->offsets[2 * i]);
        rc |= ob_str(o, ", ", 2);
        rc |= ob_int(o, e->offsets[2 * i + 1]);
        rc |= ob_str(o, "]", 1);
    }
    rc |= ob_str(o, "], \"type_ids\": [", 16);
    for (int32_t i = 0; i < e->n && !rc; i++) {
        if (i) rc |= ob_str(o, ", ", 2);
        rc |= ob_int(o, e->type_ids[i]);
    }
    if (full) {
        rc |= ob_str(o, "], \"special_tokens_mask\": [", 27);
        for (int32_t i = 0; i < e->n && !rc; i++) {
            if (i) rc |= ob_str(o, ", ", 2);
            rc |= ob_int(o, e->special_mask[i]);
        }
        rc |= ob_str(o, "], \"attention_mask\": [", 22);
        for (int32_t i = 0; i < e->n && !rc; i++) {
            if (i) rc |= ob_str(o, ", ", 2);
            rc |= ob_int(o, e->attention_mask[i]);
        }
    }
    if (full > 1) { /* the overflowing windows of a truncated text, each a full object */
        rc |= ob_str(o, "], \"overflowing\": [", 19);
        for (int32_t k = 0; k < e->n_overflow && !rc; k++) {
            if (k) rc |= ob_str(o, ", ", 2);
            rc |= write_encoding(o, &e->overflow[k], 1);
            if (!rc) o->len--; /* drop the newline */
        }
    }
    rc |= ob_str(o, "]}\n", 3);
    return rc;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* --bench: reads all of stdin, then times only the encoding (threads 0 or 1: one at a time on
 * the calling thread; more: batches of 512 across threads) and prints a JSON summary. */
static int run_bench(const kn_tokenizer *tok, const kn_encode_options *opt, int threads) {
    char **lines = NULL;
    size_t *lens = NULL, n = 0, cap = 0, bytes = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t r;
    while ((r = getline(&line, &lcap, stdin)) >= 0) {
        if (r > 0 && line[r - 1] == '\n') line[--r] = 0;
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            char **nl = realloc(lines, cap * sizeof *lines);
            size_t *ns = realloc(lens, cap * sizeof *lens);
            if (nl) lines = nl;
            if (ns) lens = ns;
            if (!nl || !ns) {
                fprintf(stderr, "kiln tokenize: out of memory\n");
                return 1;
            }
        }
        lines[n] = line;
        lens[n] = (size_t)r;
        bytes += (size_t)r + 1;
        n++;
        line = NULL;
        lcap = 0;
    }
    free(line);
    char err[512];
    long tokens = 0;
    int rc = 0;
    double t0 = now_s();
    if (threads <= 1) {
        for (size_t i = 0; i < n && !rc; i++) {
            kn_encoding e;
            if (kn_tokenizer_encode(tok, lines[i], lens[i], NULL, 0, opt, &e, err, sizeof err)) {
                rc = 1;
                break;
            }
            tokens += e.n;
            kn_encoding_free(&e);
        }
    } else {
        kn_encoding enc[512];
        for (size_t i = 0; i < n && !rc; i += 512) {
            int m = (int)(n - i < 512 ? n - i : 512);
            if (kn_tokenizer_encode_batch(tok, m, (const char *const *)lines + i, lens + i, NULL, NULL, opt, threads,
                                          enc, err, sizeof err)) {
                rc = 1;
                break;
            }
            for (int k = 0; k < m; k++) {
                tokens += enc[k].n;
                kn_encoding_free(&enc[k]);
            }
        }
    }
    double dt = now_s() - t0;
    if (rc) fprintf(stderr, "kiln tokenize: %s\n", err);
    else
        printf("{\"lines\": %zu, \"bytes\": %zu, \"tokens\": %ld, \"seconds\": %.6f, \"mb_per_s\": %.3f}\n", n, bytes,
               tokens, dt, (double)bytes / 1e6 / (dt > 0 ? dt : 1e-9));
    for (size_t i = 0; i < n; i++) free(lines[i]);
    free(lines);
    free(lens);
    return rc;
}

static void usage_tokenize(FILE *f) {
    fprintf(f,
            "usage: kiln tokenize --tokenizer PATH [--pair] [--no-special-tokens] [--max-length N] [--threads N] "
            "[--masks] [--overflow] [--bench]\n"
            "  Reads one text per line from stdin (with --pair: two texts separated by a tab) and writes one JSON\n"
            "  object per line: {\"ids\": [...], \"tokens\": [...], \"offsets\": [[start, end], ...], \"type_ids\": "
            "[...]}.\n"
            "  PATH is a tokenizer.json (read as the tokenizers package reads it), or a folder with tokenizer.json\n"
            "  or an old BERT vocab.txt (read as transformers reads it: special tokens named in\n"
            "  special_tokens_map.json and tokenizer_config.json are added; model_max_length does not truncate).\n"
            "  --masks adds special_tokens_mask and attention_mask, --overflow those and the overflowing windows\n"
            "  of truncated texts and pairs; --bench times encoding of all input\n"
            "  (single thread unless --threads N > 1) and prints MB/s instead of the encodings.\n");
}

static int parse_int_arg(const char *s, long *v) {
    char *end;
    errno = 0;
    *v = strtol(s, &end, 10);
    return errno || *end || end == s ? -1 : 0;
}

int kn_cmd_tokenize(int argc, char **argv) {
    const char *path = NULL;
    int pair = 0, masks = 0, bench = 0;
    long threads = 0, maxlen = 0;
    kn_encode_options opt;
    kn_encode_options_init(&opt);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--pair")) pair = 1;
        else if (!strcmp(argv[i], "--no-special-tokens")) opt.add_special_tokens = 0;
        else if (!strcmp(argv[i], "--masks")) masks = masks > 1 ? masks : 1;
        else if (!strcmp(argv[i], "--overflow")) masks = 2;
        else if (!strcmp(argv[i], "--bench")) bench = 1;
        else if (!strcmp(argv[i], "--max-length") && i + 1 < argc) {
            if (parse_int_arg(argv[++i], &maxlen) || maxlen <= 0 || maxlen > (1L << 30)) {
                fprintf(stderr, "kiln tokenize: --max-length needs a positive integer, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            if (parse_int_arg(argv[++i], &threads) || threads < 0 || threads > 1024) {
                fprintf(stderr, "kiln tokenize: --threads needs an integer in [0, 1024], got '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage_tokenize(stdout);
            return 0;
        } else {
            fprintf(stderr, "kiln tokenize: unknown argument '%s'\n", argv[i]);
            usage_tokenize(stderr);
            return 2;
        }
    }
    if (!path) {
        usage_tokenize(stderr);
        return 2;
    }
    opt.max_length = (int)maxlen;
    char err[1024];
    kn_tokenizer *tok = kn_tokenizer_load(path, err, sizeof err);
    if (!tok) {
        fprintf(stderr, "kiln tokenize: %s\n", err);
        return 1;
    }
    if (bench) {
        int rc = run_bench(tok, &opt, (int)threads);
        kn_tokenizer_free(tok);
        return rc;
    }

    enum { BATCH = 512 };
    char *lines[BATCH], *pairs[BATCH];
    size_t lens[BATCH], plens[BATCH];
    kn_encoding enc[BATCH];
    obuf o = {0};
    int rc = 0, eof = 0;
    while (!eof && !rc) {
        int n = 0;
        while (n < BATCH) {
            char *line = NULL;
            size_t cap = 0;
            ssize_t r = getline(&line, &cap, stdin);
            if (r < 0) {
                free(line);
                eof = 1;
                break;
            }
            if (r > 0 && line[r - 1] == '\n') line[--r] = 0;
            lines[n] = line;
            lens[n] = (size_t)r;
            pairs[n] = NULL;
            plens[n] = 0;
            if (pair) {
                char *tab = memchr(line, '\t', (size_t)r);
                if (!tab) {
                    fprintf(stderr, "kiln tokenize: --pair: line has no tab separating the two texts\n");
                    rc = 1;
                } else {
                    pairs[n] = tab + 1;
                    plens[n] = (size_t)(line + r - tab - 1);
                    lens[n] = (size_t)(tab - line);
                }
            }
            n++;
            if (rc) break;
        }
        if (!rc && n > 0) {
            if (kn_tokenizer_encode_batch(tok, n, (const char *const *)lines, lens,
                                          pair ? (const char *const *)pairs : NULL, pair ? plens : NULL, &opt,
                                          (int)threads, enc, err, sizeof err)) {
                fprintf(stderr, "kiln tokenize: %s\n", err);
                rc = 1;
            } else {
                for (int i = 0; i < n; i++) {
                    if (!rc && write_encoding(&o, &enc[i], masks)) {
                        fprintf(stderr, "kiln tokenize: out of memory\n");
                        rc = 1;
                    }
                    kn_encoding_free(&enc[i]);
                }
                if (!rc && fwrite(o.buf, 1, o.len, stdout) != o.len) {
                    fprintf(stderr, "kiln tokenize: write failed\n");
                    rc = 1;
                }
                o.len = 0;
            }
        }
        for (int i = 0; i < n; i++) free(lines[i]);
    }
    free(o.buf);
    kn_tokenizer_free(tok);
    return rc;
}

static void usage_detokenize(FILE *f) {
    fprintf(f,
            "usage: kiln detokenize --tokenizer PATH [--skip-special-tokens] [--json]\n"
            "  Reads one list of ids per line from stdin (a JSON array, the \"ids\" of a `kiln tokenize` line,\n"
            "  or integers separated by spaces or commas) and writes the decoded text, one per line\n"
            "  (with --json as a JSON string, so texts holding newlines stay on one line).\n");
}

int kn_cmd_detokenize(int argc, char **argv) {
    const char *path = NULL;
    int skip = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--skip-special-tokens")) skip = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage_detokenize(stdout);
            return 0;
        } else {
            fprintf(stderr, "kiln detokenize: unknown argument '%s'\n", argv[i]);
            usage_detokenize(stderr);
            return 2;
        }
    }
    if (!path) {
        usage_detokenize(stderr);
        return 2;
    }
    char err[1024];
    kn_tokenizer *tok = kn_tokenizer_load(path, err, sizeof err);
    if (!tok) {
        fprintf(stderr, "kiln detokenize: %s\n", err);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t r;
    int rc = 0;
    int32_t *ids = NULL;
    size_t idcap = 0;
    obuf o = {0};
    while (!rc && (r = getline(&line, &cap, stdin)) >= 0) {
        char *p = line, *end = line + r;
        char *k = strstr(line, "\"ids\"");
        if (k) {
            p = strchr(k, '[');
            if (!p) p = end;
            else {
                char *q = strchr(p, ']');
                if (q) end = q;
            }
        }
        size_t n = 0;
        while (p < end) {
            if ((*p >= '0' && *p <= '9') || *p == '-') {
                char *e2;
                long v = strtol(p, &e2, 10);
                if (v < 0 || v > INT32_MAX) {
                    fprintf(stderr, "kiln detokenize: id %ld out of range\n", v);
                    rc = 1;
                    break;
                }
                if (n == idcap) {
                    idcap = idcap ? idcap * 2 : 256;
                    int32_t *ni = realloc(ids, idcap * sizeof *ids);
                    if (!ni) {
                        rc = 1;
                        break;
                    }
                    ids = ni;
                }
                ids[n++] = (int32_t)v;
                p = e2;
            } else if (*p == ' ' || *p == ',' || *p == '[' || *p == ']' || *p == '\t' || *p == '\n' || *p == '\r') p++;
            else {
                fprintf(stderr, "kiln detokenize: unexpected character '%c' in ids line\n", *p);
                rc = 1;
                break;
            }
        }
        if (rc) break;
        size_t tlen;
        char *text = kn_tokenizer_decode(tok, ids, (int)n, skip, &tlen, err, sizeof err);
        if (!text) {
            fprintf(stderr, "kiln detokenize: %s\n", err);
            rc = 1;
            break;
        }
        o.len = 0;
        if (json ? ob_json_string(&o, text, tlen) : ob_str(&o, text, tlen)) rc = 1;
        if (!rc) rc = ob_str(&o, "\n", 1);
        free(text);
        if (!rc) fwrite(o.buf, 1, o.len, stdout);
    }
    free(o.buf);
    free(ids);
    free(line);
    kn_tokenizer_free(tok);
    return rc;
}
