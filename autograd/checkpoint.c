/* Trainer checkpoints (autograd/checkpoint.h): a safetensors file written through
 * graph/atomic_file.h, read back whole, verified and only then copied into the trainer, so a
 * failed load leaves the trainer as it was. */
#include "autograd/checkpoint.h"
#include "autograd/trainer_internal.h"
#include "autograd/trainer_device.h"
#include "graph/atomic_file.h"
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { K_PARAM, K_M, K_V, K_ACC, N_KINDS };
static const char *const kind_prefix[N_KINDS] = {"param/", "adam_m/", "adam_v/", "grad_acc/"};
static const char *const optim_name[3] = {"sgd", "adam", "adamw"};

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *c = p;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 0x100000001b3ull;
    return h;
}
#define FNV_INIT 0xcbf29ce484222325ull

/* ---- a growable string for the header ---- */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_fmt(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_put(b, tmp, n < 0 ? 0 : (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}
/* s as a JSON string literal */
static void sb_json(sbuf *b, const char *s) {
    sb_str(b, "\"");
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            char e[2] = {'\\', (char)*c};
            sb_put(b, e, 2);
        } else if (*c < 0x20) sb_fmt(b, "\\u%04x", *c);
        else sb_put(b, (const char *)c, 1);
    }
    sb_str(b, "\"");
}

static const float *state_data(const kn_param *p, int kind) {
    return kind == K_PARAM ? p->w : kind == K_M ? p->m : kind == K_V ? p->v : p->acc;
}

kn_status *kn_trainer_checkpoint_save(const kn_trainer *t, const char *path, const char *extra_json) {
    KN_CHECK(t && path, KN_ERR_INVALID_ARGUMENT, "kn_trainer_checkpoint_save: NULL argument");
    KN_TRY(kn_error_wrap(trainer_dev_download(t), "kn_trainer_checkpoint_save: ")); /* a device trainer's state */
    int kinds = t->o.optim.accumulate > 1 ? N_KINDS : K_ACC;
    uint64_t sum = FNV_INIT;
    sbuf b = {0};
    size_t off = 0;
    /* tensors back to back, as safetensors requires (float32 keeps each 4-byte aligned) */
    sbuf tensors = {0};
    for (int k = 0; k < kinds; k++)
        for (int i = 0; i < t->n_params; i++) {
            const kn_param *p = &t->p[i];
            size_t bytes = sizeof(float) * (size_t)p->n;
            sum = fnv1a(sum, state_data(p, k), bytes);
            sb_str(&tensors, ",");
            char key[1100];
            snprintf(key, sizeof key, "%s%s", kind_prefix[k], p->name);
            sb_json(&tensors, key);
            sb_str(&tensors, ":{\"dtype\":\"F32\",\"shape\":[");
            for (int d = 0; d < p->ndim; d++) sb_fmt(&tensors, "%s%" PRId64, d ? "," : "", p->dims[d]);
            sb_fmt(&tensors, "],\"data_offsets\":[%zu,%zu]}", off, off + bytes);
            off += bytes;
        }
    sb_fmt(&b,
           "{\"__metadata__\":{\"format\":\"kiln-checkpoint\",\"version\":\"1\",\"optimizer\":\"%s\","
           "\"step\":\"%" PRId64 "\",\"micro\":\"%d\",\"accumulate\":\"%d\",\"rng\":\"%016" PRIx64
           "\",\"checksum\":\"%016" PRIx64 "\"",
           optim_name[t->o.optim.kind], t->steps, t->micro, t->o.optim.accumulate, t->rng, sum);
    bool amp = false;
    float scale = 0;
    int tracker = 0;
    int64_t skipped = 0;
    kn_status *ast = trainer_dev_amp_state(t, &amp, &scale, &tracker, &skipped);
    if (ast) {
        free(b.s);
        free(tensors.s);
        return kn_error_wrap(ast, "kn_trainer_checkpoint_save: ");
    }
    /* %.9g gives a float32 back exactly */
    if (amp)
        sb_fmt(&b, ",\"loss_scale\":\"%.9g\",\"growth_tracker\":\"%d\",\"skipped\":\"%" PRId64 "\"", (double)scale,
               tracker, skipped);
    if (extra_json) {
        sb_str(&b, ",\"extra\":");
        sb_json(&b, extra_json);
    }
    sb_str(&b, "}");
    if (tensors.s) sb_str(&b, tensors.s);
    sb_str(&b, "}");
    free(tensors.s);
    while (!b.oom && (8 + b.len) % 64) sb_str(&b, " "); /* the data starts 64-byte aligned */
    if (b.oom || tensors.oom) {
        free(b.s);
        return KN_OOM(b.len);
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)b.len >> (8 * i));
    kn_atomic_file *f = NULL;
    kn_status *st = kn_atomic_open(path, &f);
    if (!st) st = kn_atomic_write(f, len8, 8);
    if (!st) st = kn_atomic_write(f, b.s, b.len);
    free(b.s);
    for (int k = 0; !st && k < kinds; k++)
        for (int i = 0; !st && i < t->n_params; i++) {
            const kn_param *p = &t->p[i];
            st = kn_atomic_write(f, state_data(p, k), sizeof(float) * (size_t)p->n);
        }
    if (st) {
        kn_atomic_abort(f);
        return kn_error_wrap(st, "kn_trainer_checkpoint_save: ");
    }
    return kn_error_wrap(kn_atomic_commit(f), "kn_trainer_checkpoint_save: ");
}

/* ---- reading: a JSON parser for the header (objects, arrays, strings, integers) ---- */

typedef struct jp {
    const char *p, *end;
    bool bad;
} jp;

static void jp_ws(jp *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t')) j->p++;
}
static bool jp_lit(jp *j, char c) {
    jp_ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return true;
    }
    return false;
}
static void jp_utf8(sbuf *b, unsigned cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) u[0] = (char)cp, n = 1;
    else if (cp < 0x800) u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 63)), n = 2;
    else if (cp < 0x10000)
        u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 63)), u[2] = (char)(0x80 | (cp & 63)), n = 3;
    else
        u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 63)), u[2] = (char)(0x80 | ((cp >> 6) & 63)),
        u[3] = (char)(0x80 | (cp & 63)), n = 4;
    sb_put(b, u, n);
}
static unsigned jp_hex4(jp *j) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++, j->p++) {
        char c = j->p < j->end ? *j->p : 0;
        int d = c >= '0' && c <= '9' ? c - '0'
            : c >= 'a' && c <= 'f'   ? c - 'a' + 10
            : c >= 'A' && c <= 'F'   ? c - 'A' + 10
                                     : -1;
        if (d < 0) {
            j->bad = true;
            return 0;
        }
        v = v * 16 + (unsigned)d;
    }
    return v;
}
/* A string literal, malloc'd (NULL on error). */
static char *jp_string(jp *j) {
    if (!jp_lit(j, '"')) {
        j->bad = true;
        return NULL;
    }
    sbuf b = {0};
    sb_str(&b, "");
    while (j->p < j->end && *j->p != '"' && !j->bad) {
        char c = *j->p++;
        if (c != '\\') {
            sb_put(&b, &c, 1);
            continue;
        }
        c = j->p < j->end ? *j->p++ : 0;
        const char *esc = strchr("\"\\/bfnrt", c);
        if (c && esc) {
            char r = "\"\\/\b\f\n\r\t"[esc - "\"\\/bfnrt"];
            sb_put(&b, &r, 1);
        } else if (c == 'u') {
            unsigned cp = jp_hex4(j);
            if (cp >= 0xD800 && cp < 0xDC00 && j->p + 1 < j->end && j->p[0] == '\\' && j->p[1] == 'u') {
                j->p += 2;
                unsigned lo = jp_hex4(j);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            jp_utf8(&b, cp);
        } else j->bad = true;
    }
    if (!jp_lit(j, '"') || b.oom) j->bad = true;
    if (j->bad) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
/* [int, ...] into v (at most cap); returns the count, -1 on error. */
static int jp_ints(jp *j, int64_t *v, int cap) {
    if (!jp_lit(j, '[')) return -1;
    int n = 0;
    if (jp_lit(j, ']')) return 0;
    do {
        jp_ws(j);
        char *e;
        long long x = strtoll(j->p, &e, 10);
        if (e == j->p || n >= cap) return -1;
        j->p = e;
        v[n++] = x;
    } while (jp_lit(j, ','));
    return jp_lit(j, ']') ? n : -1;
}

typedef struct ck_entry {
    char *key;
    char dtype[8];
    int ndim;
    int64_t dims[KN_MAX_DIMS];
    int64_t begin, end;
} ck_entry;

typedef struct ck_file {
    uint8_t *buf;
    size_t len;
    const uint8_t *data;
    size_t data_len;
    ck_entry *e;
    int n;
    char *meta[16][2];
    int n_meta;
} ck_file;

static void ck_free(ck_file *c) {
    for (int i = 0; i < c->n; i++) free(c->e[i].key);
    free(c->e);
    for (int i = 0; i < c->n_meta; i++) free(c->meta[i][0]), free(c->meta[i][1]);
    free(c->buf);
}

static const char *ck_meta(const ck_file *c, const char *key) {
    for (int i = 0; i < c->n_meta; i++)
        if (!strcmp(c->meta[i][0], key)) return c->meta[i][1];
    return NULL;
}

static kn_status *ck_parse_header(ck_file *c, const char *h, size_t n, const char *path) {
    jp j = {h, h + n, false};
    KN_CHECK(jp_lit(&j, '{'), KN_ERR_INVALID_MODEL, "%s: the header is not a JSON object", path);
    if (jp_lit(&j, '}')) return NULL;
    do {
        char *key = jp_string(&j);
        if (!key || !jp_lit(&j, ':') || !jp_lit(&j, '{')) {
            free(key);
            break;
        }
        if (!strcmp(key, "__metadata__")) {
            free(key);
            if (jp_lit(&j, '}')) continue;
            do {
                char *k = jp_string(&j), *v = k && jp_lit(&j, ':') ? jp_string(&j) : NULL;
                if (!v || c->n_meta == 16) {
                    free(k);
                    free(v);
                    j.bad = true;
                    break;
                }
                c->meta[c->n_meta][0] = k;
                c->meta[c->n_meta++][1] = v;
            } while (jp_lit(&j, ','));
            if (!j.bad && !jp_lit(&j, '}')) j.bad = true;
            continue;
        }
        ck_entry *e = realloc(c->e, sizeof *e * (size_t)(c->n + 1));
        if (!e) {
            free(key);
            return KN_OOM(sizeof *e);
        }
        c->e = e;
        e = &c->e[c->n++];
        memset(e, 0, sizeof *e);
        e->key = key;
        e->begin = e->end = -1;
        do {
            char *f = jp_string(&j);
            if (!f || !jp_lit(&j, ':')) j.bad = true;
            else if (!strcmp(f, "dtype")) {
                char *dt = jp_string(&j);
                if (dt) snprintf(e->dtype, sizeof e->dtype, "%s", dt);
                free(dt);
            } else if (!strcmp(f, "shape")) {
                if ((e->ndim = jp_ints(&j, e->dims, KN_MAX_DIMS)) < 0) j.bad = true;
            } else if (!strcmp(f, "data_offsets")) {
                int64_t o[2];
                if (jp_ints(&j, o, 2) != 2) j.bad = true;
                e->begin = o[0];
                e->end = o[1];
            } else j.bad = true;
            free(f);
        } while (!j.bad && jp_lit(&j, ','));
        if (!j.bad && !jp_lit(&j, '}')) j.bad = true;
    } while (!j.bad && jp_lit(&j, ','));
    KN_CHECK(!j.bad && jp_lit(&j, '}'), KN_ERR_INVALID_MODEL, "%s: malformed checkpoint header near byte %zu", path,
             (size_t)(j.p - h));
    return NULL;
}

static kn_status *ck_read(ck_file *c, const char *path) {
    FILE *f = fopen(path, "rb");
    KN_CHECK(f, KN_ERR_IO, "%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    c->buf = n >= 8 ? malloc((size_t)n + 1) : NULL; /* NUL-ended: number parsing stops inside */
    bool ok = c->buf && fread(c->buf, 1, (size_t)n, f) == (size_t)n;
    if (ok) c->buf[n] = 0;
    fclose(f);
    KN_CHECK(ok, KN_ERR_IO, "%s: cannot read (%ld bytes)", path, n);
    c->len = (size_t)n;
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)c->buf[i] << (8 * i);
    KN_CHECK(hl <= c->len - 8, KN_ERR_INVALID_MODEL, "%s: header length %llu exceeds the file (%zu bytes)", path,
             (unsigned long long)hl, c->len);
    KN_TRY(ck_parse_header(c, (const char *)c->buf + 8, (size_t)hl, path));
    c->data = c->buf + 8 + hl;
    c->data_len = c->len - 8 - (size_t)hl;
    const char *fmt = ck_meta(c, "format"), *sum = ck_meta(c, "checksum");
    KN_CHECK(fmt && !strcmp(fmt, "kiln-checkpoint"), KN_ERR_INVALID_MODEL, "%s: not a kiln checkpoint", path);
    KN_CHECK(sum, KN_ERR_INVALID_MODEL, "%s: no checksum", path);
    uint64_t got = fnv1a(FNV_INIT, c->data, c->data_len), want = strtoull(sum, NULL, 16);
    KN_CHECK(got == want, KN_ERR_INVALID_MODEL, "%s: checksum mismatch (file says %s, data gives %016" PRIx64 ")", path,
             sum, got);
    for (int i = 0; i < c->n; i++) {
        const ck_entry *e = &c->e[i];
        int64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) numel *= e->dims[d];
        KN_CHECK(!strcmp(e->dtype, "F32") && e->begin >= 0 && e->end - e->begin == numel * 4 &&
                     (uint64_t)e->end <= c->data_len,
                 KN_ERR_INVALID_MODEL, "%s: tensor '%s' has a bad dtype, shape or data range", path, e->key);
    }
    return NULL;
}

static const ck_entry *ck_find(const ck_file *c, int kind, const char *name) {
    size_t pl = strlen(kind_prefix[kind]);
    for (int i = 0; i < c->n; i++)
        if (!strncmp(c->e[i].key, kind_prefix[kind], pl) && !strcmp(c->e[i].key + pl, name)) return &c->e[i];
    return NULL;
}

/* Every difference between the file's tensors and t's parameters, in one message. */
static kn_status *ck_match(const ck_file *c, const kn_trainer *t, int kinds, const char *path) {
    sbuf m = {0};
    int bad = 0;
    for (int k = 0; k < kinds; k++)
        for (int i = 0; i < t->n_params; i++) {
            const kn_param *p = &t->p[i];
            const ck_entry *e = ck_find(c, k, p->name);
            bool same = e && e->ndim == p->ndim;
            for (int d = 0; same && d < p->ndim; d++) same = e->dims[d] == p->dims[d];
            if (same || bad++ >= 20) continue;
            if (!e) sb_fmt(&m, "; '%s%s' is missing", kind_prefix[k], p->name);
            else {
                sb_fmt(&m, "; '%s%s' has shape [", kind_prefix[k], p->name);
                for (int d = 0; d < e->ndim; d++) sb_fmt(&m, "%s%lld", d ? "," : "", (long long)e->dims[d]);
                sb_str(&m, "], the trainer [");
                for (int d = 0; d < p->ndim; d++) sb_fmt(&m, "%s%lld", d ? "," : "", (long long)p->dims[d]);
                sb_str(&m, "]");
            }
        }
    for (int i = 0; i < c->n; i++) {
        bool known = false;
        for (int k = 0; k < N_KINDS && !known; k++) {
            size_t pl = strlen(kind_prefix[k]);
            if (strncmp(c->e[i].key, kind_prefix[k], pl)) continue;
            for (int q = 0; q < t->n_params && !known; q++) known = !strcmp(c->e[i].key + pl, t->p[q].name);
            known |= k >= kinds; /* grad_acc of a run with accumulation: checked with `accumulate` */
        }
        if (!known && bad++ < 20) sb_fmt(&m, "; '%s' is not a parameter of the trainer", c->e[i].key);
    }
    kn_status *st = NULL;
    if (bad)
        st = kn_error(KN_ERR_INVALID_ARGUMENT, "%s: the checkpoint does not fit the trainer (%d differences)%s%s", path,
                      bad, m.s ? m.s : "", bad > 20 ? "; ..." : "");
    free(m.s);
    return st;
}

kn_status *kn_trainer_checkpoint_load(kn_trainer *t, const char *path, char **extra_json) {
    if (extra_json) *extra_json = NULL;
    KN_CHECK(t && path, KN_ERR_INVALID_ARGUMENT, "kn_trainer_checkpoint_load: NULL argument");
    ck_file c = {0};
    kn_status *st = ck_read(&c, path);
    const char *opt = st ? NULL : ck_meta(&c, "optimizer"), *step = ck_meta(&c, "step"), *micro = ck_meta(&c, "micro"),
               *acc = ck_meta(&c, "accumulate"), *rng = ck_meta(&c, "rng"), *extra = ck_meta(&c, "extra");
    if (!st && (!opt || !step || !micro || !acc || !rng))
        st = kn_error(KN_ERR_INVALID_MODEL, "%s: the metadata lacks optimizer, step, micro, accumulate or rng", path);
    if (!st && strcmp(opt, optim_name[t->o.optim.kind]))
        st = kn_error(KN_ERR_INVALID_ARGUMENT, "%s: saved with optimizer %s, the trainer uses %s", path, opt,
                      optim_name[t->o.optim.kind]);
    int saved_micro = st ? 0 : atoi(micro);
    /* pending micro-batches only make sense under the same accumulation */
    if (!st && saved_micro > 0 && atoi(acc) != t->o.optim.accumulate)
        st = kn_error(KN_ERR_INVALID_ARGUMENT,
                      "%s: saved %d micro-batches into an update of %s, the trainer accumulates %d", path, saved_micro,
                      acc, t->o.optim.accumulate);
    if (!st && saved_micro >= t->o.optim.accumulate)
        st = kn_error(KN_ERR_INVALID_MODEL, "%s: micro %d is not below accumulate %d", path, saved_micro,
                      t->o.optim.accumulate);
    int kinds = t->o.optim.accumulate > 1 && atoi(acc) > 1 ? N_KINDS : K_ACC;
    if (!st) st = ck_match(&c, t, kinds, path);
    /* the dynamic loss scale of a mixed-precision run (absent in float32 and in older files) */
    const char *ls = st ? NULL : ck_meta(&c, "loss_scale"), *gt = ls ? ck_meta(&c, "growth_tracker") : NULL;
    const char *sk = ls ? ck_meta(&c, "skipped") : NULL;
    float scale = ls ? strtof(ls, NULL) : 0;
    if (ls && (!gt || !sk || !(scale > 0) || !isfinite(scale) || atoi(gt) < 0))
        st = kn_error(KN_ERR_INVALID_MODEL, "%s: loss_scale '%s' without a valid growth_tracker and skipped", path, ls);
    char *x = NULL;
    if (!st && extra && extra_json && !(x = strdup(extra))) st = KN_OOM(strlen(extra));
    if (st) {
        ck_free(&c);
        return kn_error_wrap(st, "kn_trainer_checkpoint_load: ");
    }
    for (int k = 0; k < N_KINDS; k++)
        for (int i = 0; i < t->n_params; i++) {
            kn_param *p = &t->p[i];
            float *dst = k == K_PARAM ? p->w : k == K_M ? p->m : k == K_V ? p->v : p->acc;
            if (k == K_ACC && p->acc == p->g) continue;
            if (k < kinds) memcpy(dst, c.data + ck_find(&c, k, p->name)->begin, sizeof(float) * (size_t)p->n);
            else memset(dst, 0, sizeof(float) * (size_t)p->n);
        }
    t->steps = strtoll(step, NULL, 10);
    t->micro = saved_micro;
    t->rng = strtoull(rng, NULL, 16);
    int tracker = gt ? atoi(gt) : 0;
    int64_t skipped = sk ? strtoll(sk, NULL, 10) : 0;
    ck_free(&c);
    st = trainer_dev_upload(t); /* a device trainer continues from the loaded state */
    if (!st && ls) st = trainer_dev_set_amp_state(t, scale, tracker, skipped);
    if (st) {
        free(x);
        return kn_error_wrap(st, "kn_trainer_checkpoint_load: ");
    }
    if (extra_json) *extra_json = x;
    return NULL;
}
