/* kiln bench: latency percentiles, throughput and memory of one model, either on input files
 * (--inputs DIR) or on inputs generated from the model's declared inputs over a sweep of batch
 * sizes and sequence lengths (--batch 1,8,32 --seq 128). Text for people, --json (one object per
 * sweep point) for tools/bench/compare.py. */
#include "tools/cli/cli.h"
#include "runtime/core/dtype.h"
#include "graph/ops.h"
#include "runtime/executor.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#define BENCH_MAX_SWEEP 64
#define BENCH_MAX_DIMS 32

typedef struct bench_dim_override {
    const char *name;
    int64_t size;
} bench_dim_override;

typedef struct bench_args {
    const char *path, *in_dir, *save_dir, *prec_s;
    int iters, warmup;
    bool json, batch_given, seq_given;
    int64_t batch[BENCH_MAX_SWEEP], seq[BENCH_MAX_SWEEP];
    int n_batch, n_seq;
    int64_t past, vocab;
    double pad_fraction;
    uint64_t seed;
    bench_dim_override dims[BENCH_MAX_DIMS];
    int n_dims;
    kn_session_options o;
    kn_model_options mo; /* --no-fuse */
} bench_args;

/* What an input is for decides how it is filled; the names are those transformers' exporters use. */
typedef enum {
    ROLE_IDS,
    ROLE_MASK,
    ROLE_TYPE,
    ROLE_POS,
    ROLE_PIXELS,
    ROLE_PAST,
    ROLE_CACHE_FLAG,
    ROLE_OTHER
} bench_role;

static double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Linear interpolation between order statistics (numpy's default), so kiln's figures and
 * compare.py's pooled ones mean the same thing. sorted must be ascending. */
static double bench_percentile(const double *sorted, int n, double q) {
    double pos = q * (n - 1);
    int lo = (int)floor(pos);
    if (lo >= n - 1) return sorted[n - 1];
    return sorted[lo] + (pos - lo) * (sorted[lo + 1] - sorted[lo]);
}

/* splitmix64: reproducible inputs from --seed without depending on the C library's rand(). */
static uint64_t bench_rand(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double bench_uniform(uint64_t *s) { return ((bench_rand(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static float bench_normal(uint64_t *s) {
    double u = bench_uniform(s), v = bench_uniform(s);
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static int bench_parse_list(const char *s, int64_t *out, int cap, int64_t min, const char *flag) {
    int n = 0;
    while (*s) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || errno || v < min || n == cap || (*end && *end != ',')) {
            fprintf(stderr, "kiln bench: %s wants a comma-separated list of integers >= %lld (at most %d), got '%s'\n",
                    flag, (long long)min, cap, s);
            return -1;
        }
        out[n++] = v;
        s = *end ? end + 1 : end;
    }
    if (!n) {
        fprintf(stderr, "kiln bench: %s is empty\n", flag);
        return -1;
    }
    return n;
}

static bool bench_has(const char *s, const char *sub) {
    if (!s) return false;
    size_t m = strlen(sub);
    for (; *s; s++) {
        size_t k = 0;
        while (k < m && s[k] && tolower((unsigned char)s[k]) == sub[k]) k++;
        if (k == m) return true;
    }
    return false;
}

static bench_role bench_role_of(const kn_value_info *vi) {
    const char *n = vi->name;
    bool is_int = vi->dtype == KN_I64 || vi->dtype == KN_I32;
    if (bench_has(n, "token_type")) return ROLE_TYPE;
    if (bench_has(n, "position_ids")) return ROLE_POS;
    if (bench_has(n, "mask")) return ROLE_MASK;
    if (bench_has(n, "use_cache")) return ROLE_CACHE_FLAG;
    if (bench_has(n, "past") || bench_has(n, "cache")) return ROLE_PAST;
    if (is_int && (bench_has(n, "input_ids") || strcmp(n, "ids") == 0 || bench_has(n, "_ids"))) return ROLE_IDS;
    if (bench_has(n, "pixel") || (kn_dtype_is_float(vi->dtype) && vi->ndim == 4)) return ROLE_PIXELS;
    return ROLE_OTHER;
}

/* The vocabulary: rows of the embedding table that a Gather (or com.microsoft's
 * EmbedLayerNormalization) indexes with the ids, following shape-only ops on the way. */
static int64_t bench_find_vocab(const kn_graph *g, const char *input) {
    int frontier[16], n = 0;
    int v0 = kn_graph_find_value(g, input);
    if (v0 < 0) return -1;
    frontier[n++] = v0;
    for (int depth = 0; depth < 4 && n; depth++) {
        int next[16], m = 0;
        for (int f = 0; f < n; f++) {
            int v = frontier[f];
            for (int i = 0; i < g->n_nodes; i++) {
                const kn_node *nd = &g->nodes[i];
                for (int k = 0; k < nd->n_inputs; k++) {
                    if (nd->inputs[k] != v) continue;
                    int table = -1;
                    if (strcmp(nd->op_type, "Gather") == 0 && k == 1) table = nd->inputs[0];
                    else if (strcmp(nd->op_type, "EmbedLayerNormalization") == 0 && k == 0 && nd->n_inputs > 2)
                        table = nd->inputs[2];
                    if (table >= 0) {
                        const kn_tensor *c = g->values[table].constant;
                        if (c && c->ndim == 2 && c->dims[0] > 0) return c->dims[0];
                    }
                    static const char *const pass[] = {"Cast",    "Reshape",  "Unsqueeze", "Squeeze",
                                                       "Flatten", "Identity", "Expand"};
                    for (size_t p = 0; p < sizeof pass / sizeof *pass; p++)
                        if (strcmp(nd->op_type, pass[p]) == 0 && k == 0 && nd->n_outputs > 0 && nd->outputs[0] >= 0 &&
                            m < 16)
                            next[m++] = nd->outputs[0];
                }
            }
        }
        memcpy(frontier, next, sizeof(int) * (size_t)m);
        n = m;
    }
    return -1;
}

/* Size of dimension d of an input: declared, else --dim NAME=SIZE, else from its symbolic name,
 * else from where it sits for the input's role. *used_s records whether the sequence length
 * shaped anything (an image model sweeps no sequence lengths). */
static kn_status *bench_dim_size(const bench_args *a, const kn_value_info *vi, bench_role role, int d, int64_t B,
                                 int64_t S, bool *used_s, int64_t *out) {
    int64_t P = a->past;
    const char *nm = vi->dim_names[d];
    if (vi->dims[d] >= 0) {
        *out = vi->dims[d];
        return NULL;
    }
    for (int i = 0; nm && i < a->n_dims; i++)
        if (strcmp(a->dims[i].name, nm) == 0) {
            *out = a->dims[i].size;
            return NULL;
        }
    if (nm) {
        if (bench_has(nm, "batch")) {
            *out = B;
            return NULL;
        }
        if (bench_has(nm, "past") && (strchr(nm, '+') || bench_has(nm, "total"))) {
            *used_s = true;
            *out = P + S;
            return NULL;
        }
        if (bench_has(nm, "total")) {
            *used_s = true;
            *out = P + S;
            return NULL;
        }
        if (bench_has(nm, "past")) {
            *out = P;
            return NULL;
        }
        if (bench_has(nm, "seq") || bench_has(nm, "len") || bench_has(nm, "token")) {
            *used_s = true;
            *out = role == ROLE_MASK ? P + S : S;
            return NULL;
        }
        if (bench_has(nm, "channel")) {
            *out = 3;
            return NULL;
        }
        if (bench_has(nm, "height") || bench_has(nm, "width")) {
            *out = 224;
            return NULL;
        }
    }
    if (d == 0 && role != ROLE_CACHE_FLAG) {
        *out = B;
        return NULL;
    }
    switch (role) {
    case ROLE_IDS:
    case ROLE_TYPE:
    case ROLE_POS: /* an unknown input's axes are not guessed: --dim names them */
        if (d == 1) {
            *used_s = true;
            *out = S;
            return NULL;
        }
        break;
    case ROLE_MASK:
        if (d == vi->ndim - 1) {
            *used_s = true;
            *out = P + S;
            return NULL;
        }
        break;
    case ROLE_PAST:
        if (d == vi->ndim - 2) {
            *out = P;
            return NULL;
        }
        break;
    case ROLE_PIXELS:
        if (d == 1) {
            *out = 3;
            return NULL;
        }
        if (d >= 2) {
            *out = 224;
            return NULL;
        }
        break;
    default: break;
    }
    return kn_error(KN_ERR_INVALID_ARGUMENT,
                    "cannot choose a size for dimension %d ('%s') of input '%s'; give it with --dim %s=SIZE", d,
                    nm ? nm : "?", vi->name, nm ? nm : "NAME");
}

static void bench_store(void *p, kn_dtype t, int64_t i, double v) {
    switch (t) {
    case KN_I64: ((int64_t *)p)[i] = (int64_t)v; break;
    case KN_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case KN_I16: ((int16_t *)p)[i] = (int16_t)v; break;
    case KN_I8: ((int8_t *)p)[i] = (int8_t)v; break;
    case KN_U8:
    case KN_BOOL: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case KN_U16: ((uint16_t *)p)[i] = (uint16_t)v; break;
    case KN_U32: ((uint32_t *)p)[i] = (uint32_t)v; break;
    case KN_U64: ((uint64_t *)p)[i] = (uint64_t)v; break;
    default: kn_store_f32(p, t, i, (float)v); break;
    }
}

/* One generated input set for batch B and sequence length S. */
typedef struct bench_inputs {
    int n;
    kn_tensor **t;
    int64_t vocab; /* -1 when no input holds token ids */
    bool used_s;
} bench_inputs;

static void bench_inputs_free(bench_inputs *in) {
    for (int i = 0; i < in->n; i++) kn_tensor_free(in->t[i]);
    free(in->t);
    memset(in, 0, sizeof *in);
}

static kn_status *bench_generate(const bench_args *a, const kn_session *s, const kn_model *m, int64_t B, int64_t S,
                                 bench_inputs *out) {
    memset(out, 0, sizeof *out);
    out->vocab = -1;
    int n = kn_session_input_count(s);
    out->t = calloc((size_t)(n ? n : 1), sizeof *out->t);
    if (!out->t) return KN_OOM(0);
    out->n = n;
    uint64_t rng = a->seed;
    /* the last round(F*S) of the S new positions of every row are padding; one real token stays */
    int64_t pad = (int64_t)llround(a->pad_fraction * (double)S);
    if (pad > S - 1) pad = S - 1;
    for (int i = 0; i < n; i++) {
        kn_value_info vi;
        kn_status *st = kn_session_input_info(s, i, &vi);
        if (st) return st;
        if (vi.ndim < 0)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "input '%s' has no declared rank, so its inputs cannot be generated; use --inputs DIR",
                            vi.name);
        if (vi.dtype == KN_STRING || kn_dtype_size(vi.dtype) == 0)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "input '%s' is %s, which kiln bench cannot generate; use --inputs DIR", vi.name,
                            kn_dtype_name(vi.dtype));
        bench_role role = bench_role_of(&vi);
        int64_t dims[KN_MAX_DIMS];
        for (int d = 0; d < vi.ndim; d++)
            if ((st = bench_dim_size(a, &vi, role, d, B, S, &out->used_s, &dims[d]))) return st;
        if ((st = kn_tensor_new(vi.dtype, vi.ndim, dims, &out->t[i])))
            return kn_error_wrap(st, "input '%s': ", vi.name);
        kn_tensor *t = out->t[i];
        int64_t ne = kn_numel(t), last = vi.ndim > 0 ? dims[vi.ndim - 1] : 1;
        if (role == ROLE_IDS && !kn_dtype_is_float(vi.dtype)) {
            if (out->vocab < 0) out->vocab = a->vocab > 0 ? a->vocab : bench_find_vocab(m->graph, vi.name);
            if (out->vocab <= 0)
                return kn_error(
                    KN_ERR_INVALID_ARGUMENT,
                    "cannot tell the vocabulary size for '%s' (no Gather from an embedding table reads it); "
                    "pass --vocab N",
                    vi.name);
        }
        for (int64_t k = 0; k < ne; k++) {
            int64_t j = last ? k % last : 0; /* position along the last axis */
            bool padded = pad > 0 && last > 0 && j >= last - pad;
            double v = 0;
            switch (role) {
            case ROLE_IDS:
                v = kn_dtype_is_float(vi.dtype) ? bench_normal(&rng)
                    : padded                    ? 0
                                                : (double)(bench_rand(&rng) % (uint64_t)out->vocab);
                break;
            case ROLE_MASK: v = padded ? 0 : 1; break;
            case ROLE_TYPE: v = 0; break;
            case ROLE_POS: v = (double)(a->past + j); break;
            case ROLE_CACHE_FLAG: v = a->past > 0; break;
            default: v = kn_dtype_is_float(vi.dtype) ? bench_normal(&rng) : vi.dtype == KN_BOOL ? 1 : 0; break;
            }
            bench_store(t->data, vi.dtype, k, v);
        }
    }
    return NULL;
}

static kn_status *bench_save(const char *dir, const kn_session *s, const bench_inputs *in) {
    for (int i = 0; i < in->n; i++) {
        kn_value_info vi;
        kn_status *st = kn_session_input_info(s, i, &vi);
        if (st) return st;
        char p[4096];
        if (snprintf(p, sizeof p, "%s/input_%d.pb", dir, i) >= (int)sizeof p)
            return kn_error(KN_ERR_IO, "path too long: %s", dir);
        if ((st = kn_tensor_proto_write_file(p, in->t[i], vi.name))) return st;
    }
    return NULL;
}

static void bench_json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* One sweep point's figures. */
typedef struct bench_point {
    int64_t batch, seq, past, vocab; /* seq, vocab: -1 when meaningless */
    const char *inputs;              /* "generated" or the --inputs folder */
} bench_point;

/* Peak resident bytes of this process. VmHWM first: getrusage's ru_maxrss survives exec, so under
 * a big parent (compare.py with PyTorch loaded) it would report the parent's size at fork. */
static size_t bench_peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        unsigned long long kb;
        if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) {
            fclose(f);
            return (size_t)kb * 1024;
        }
    }
    if (f) fclose(f);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024; /* Linux reports KiB */
}

static void bench_report(const bench_args *a, const kn_session *s, const bench_point *pt, double *times, double t_load,
                         size_t peak_dev, bool first) {
    int n = a->iters;
    qsort(times, (size_t)n, sizeof(double), bench_cmp_double);
    double p50 = bench_percentile(times, n, 0.5), p90 = bench_percentile(times, n, 0.9),
           p99 = bench_percentile(times, n, 0.99);
    double mean = 0;
    for (int i = 0; i < n; i++) mean += times[i];
    mean /= n;
    size_t peak_rss = bench_peak_rss();
    const char *dev = a->o.device == KN_DEVICE_CPU ? "cpu" : "cuda";
    const char *prec = kn_cli_precision_name(a->o.precision);
    double tokens = pt->seq > 0 ? (double)pt->batch * (double)pt->seq / p50 : -1;
    if (a->json) {
        printf("{\"model\": ");
        bench_json_str(a->path);
        printf(", \"device\": \"%s\", \"precision\": \"%s\", \"threads\": %d, \"iters\": %d, \"warmup\": %d, "
               "\"batch\": %lld, ",
               dev, prec, a->o.num_threads, n, a->warmup, (long long)pt->batch);
        if (pt->seq > 0) printf("\"seq\": %lld, ", (long long)pt->seq);
        else printf("\"seq\": null, ");
        printf("\"past\": %lld, \"inputs\": ", (long long)pt->past);
        bench_json_str(pt->inputs);
        printf(", \"load_ms\": %.3f, \"median_ms\": %.4f, \"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p99_ms\": %.4f, "
               "\"mean_ms\": %.4f, "
               "\"min_ms\": %.4f, \"items_per_s\": %.3f, ",
               t_load * 1e3, p50 * 1e3, p50 * 1e3, p90 * 1e3, p99 * 1e3, mean * 1e3, times[0] * 1e3, pt->batch / p50);
        if (tokens >= 0) printf("\"tokens_per_s\": %.3f, ", tokens);
        else printf("\"tokens_per_s\": null, ");
        printf("\"peak_arena_bytes\": %zu, \"plan_bytes\": %zu, \"body_plans_built\": %lld, "
               "\"peak_host_rss_bytes\": %zu, ",
               kn_session_peak_bytes(s), kn_session_plan_bytes(s), (long long)kn_session_body_plans_built(s), peak_rss);
        /* plans of the whole graph built so far by this session (all points): with --seq-bucket, a
         * sweep of lengths adds one per bucket */
        printf("\"seq_bucket\": %d, \"plans_built\": %lld, ", a->o.seq_bucket, (long long)kn_session_plans_built(s));
        if (a->o.device == KN_DEVICE_CUDA) printf("\"peak_device_bytes\": %zu, ", peak_dev);
        else printf("\"peak_device_bytes\": null, ");
        int64_t g_rec = 0, g_rep = 0;
        kn_session_graph_counts(s, &g_rec, &g_rep);
        printf("\"cuda_graphs_recorded\": %lld, \"cuda_graph_replays\": %lld, ", (long long)g_rec, (long long)g_rep);
        printf("\"times_ms\": [");
        for (int i = 0; i < n; i++) printf("%s%.4f", i ? ", " : "", times[i] * 1e3);
        printf("]}\n");
        fflush(stdout);
        return;
    }
    if (first) {
        printf("model:       %s\n", a->path);
        printf("device:      %s, threads %d, precision %s\n", dev, a->o.num_threads, prec);
        printf("load:        %.1f ms\n", t_load * 1e3);
        printf("iterations:  %d (warmup %d)\n", n, a->warmup);
    }
    printf("\ninputs:      %s: batch %lld", pt->inputs, (long long)pt->batch);
    if (pt->seq > 0) printf(", seq %lld", (long long)pt->seq);
    if (pt->past > 0) printf(", past %lld", (long long)pt->past);
    if (pt->vocab > 0) printf(", vocab %lld", (long long)pt->vocab);
    printf("\nlatency:     p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, mean %.3f ms, min %.3f ms\n", p50 * 1e3, p90 * 1e3,
           p99 * 1e3, mean * 1e3, times[0] * 1e3);
    printf("throughput:  %.2f runs/s, %.2f items/s (batch %lld)", 1.0 / p50, pt->batch / p50, (long long)pt->batch);
    if (tokens >= 0) printf(", %.1f tokens/s", tokens);
    printf("\npeak arena:  %zu bytes\n", kn_session_peak_bytes(s));
    printf("plans:       %zu bytes of values computed ahead; %lld control-flow body plans built\n",
           kn_session_plan_bytes(s), (long long)kn_session_body_plans_built(s));
    printf("peak host:   %zu bytes resident\n", peak_rss);
    if (a->o.device == KN_DEVICE_CUDA) {
        printf("peak device: %zu bytes (device memory in use beyond what was in use before the session)\n", peak_dev);
        int64_t g_rec = 0, g_rep = 0;
        kn_session_graph_counts(s, &g_rec, &g_rep);
        printf("cuda graphs: %lld recorded, %lld runs replayed (the rest ran node by node)\n", (long long)g_rec,
               (long long)g_rep);
    }
}

/* Device memory: the CUDA backend's pool caches blocks and never gives them back while it runs,
 * so free memory sampled after every run, against the free memory before the session, is the
 * most kiln held (weights, arenas, workspaces). It is device-wide: other processes on the GPU
 * count too. */
static size_t bench_device_free(const kn_backend *be) { return be && be->free_bytes ? be->free_bytes(be) : 0; }

/* Warm up, time a.iters runs, report. */
static kn_status *bench_point_run(const bench_args *a, kn_session *s, const kn_named_tensor *named, int n_in,
                                  const bench_point *pt, double *times, double t_load, const kn_backend *dev_be,
                                  size_t dev_base, bool first) {
    kn_status *st = NULL;
    size_t min_free = dev_base;
    for (int i = 0; !st && i < a->warmup; i++) {
        st = kn_session_run(s, named, n_in, NULL, 0);
        size_t f = bench_device_free(dev_be);
        if (f && f < min_free) min_free = f;
    }
    for (int i = 0; !st && i < a->iters; i++) {
        double t0 = bench_now();
        st = kn_session_run(s, named, n_in, NULL, 0);
        times[i] = bench_now() - t0;
        size_t f = bench_device_free(dev_be);
        if (f && f < min_free) min_free = f;
    }
    if (st) return st;
    bench_report(a, s, pt, times, t_load, dev_base > min_free ? dev_base - min_free : 0, first);
    return NULL;
}

static void bench_bind(const kn_session *s, kn_tensor *const *t, int n, kn_named_tensor *named) {
    for (int i = 0; i < n; i++) {
        kn_value_info vi;
        kn_session_input_info(s, i, &vi);
        named[i] = (kn_named_tensor){.name = vi.name, .dtype = t[i]->dtype, .ndim = t[i]->ndim, .data = t[i]->data};
        for (int d = 0; d < t[i]->ndim; d++) named[i].dims[d] = t[i]->dims[d];
    }
}

static void bench_usage(void) {
    fprintf(
        stderr,
        "usage: kiln bench MODEL.onnx [--inputs DIR | --batch B[,B2..] --seq S[,S2..] [--past N] [--vocab V] "
        "[--pad-fraction F]\n"
        "                  [--dim NAME=SIZE]... [--seed N] [--save-inputs DIR]] [--iters N] [--warmup N] [--threads "
        "T]\n"
        "                  [--device cpu|cuda[:N]] [--precision fp32|tf32|fp16|bf16] [--profile] [--json] [--no-fuse]\n"
        "Without --inputs, inputs are generated from the model's declared inputs for every (batch, seq) pair:\n"
        "token ids uniform in [0, vocab) (vocab from the embedding table's Gather, else --vocab), attention\n"
        "masks all ones but for the last F*seq positions of each row (--pad-fraction), token type ids 0,\n"
        "position ids past..past+seq-1, pixel values and past key/values (length --past) standard normal.\n"
        "--save-inputs DIR writes each point's inputs to DIR/bB_sS/input_K.pb (--iters 0: only that).\n"
        "--json prints one object per point, with every timed run in times_ms.\n");
}

int kn_cmd_bench(int argc, char **argv) {
    bench_args a = {.iters = 20, .warmup = 3, .batch = {1}, .seq = {128}, .n_batch = 1, .n_seq = 1, .seed = 1};
    kn_session_options_init(&a.o);
    kn_model_options_init(&a.mo);
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            bench_usage();
            return 0;
        } else if (!strcmp(f, "--json")) a.json = true;
        else if (!strcmp(f, "--profile")) a.o.profile = 1;
        else if (!strcmp(f, "--no-fuse")) a.mo.fuse = 0;
        else if (f[0] == '-' && f[1] == '-' && !v) {
            fprintf(stderr, "kiln bench: %s needs a value\n", f);
            return 2;
        } else if (!strcmp(f, "--inputs")) a.in_dir = argv[++i];
        else if (!strcmp(f, "--save-inputs")) a.save_dir = argv[++i];
        else if (!strcmp(f, "--iters")) a.iters = atoi(argv[++i]);
        else if (!strcmp(f, "--warmup")) a.warmup = atoi(argv[++i]);
        else if (!strcmp(f, "--threads")) a.o.num_threads = atoi(argv[++i]);
        else if (!strcmp(f, "--device")) {
            if (kn_cli_parse_device(argv[++i], &a.o)) return 2;
        } else if (!strcmp(f, "--precision")) a.prec_s = argv[++i];
        else if (!strcmp(f, "--seq-bucket")) {
            if (kn_cli_parse_seq_bucket(argv[++i], &a.o, "kiln bench")) return 2;
        } else if (!strcmp(f, "--batch")) {
            if ((a.n_batch = bench_parse_list(argv[++i], a.batch, BENCH_MAX_SWEEP, 1, f)) < 0) return 2;
            a.batch_given = true;
        } else if (!strcmp(f, "--seq")) {
            if ((a.n_seq = bench_parse_list(argv[++i], a.seq, BENCH_MAX_SWEEP, 1, f)) < 0) return 2;
            a.seq_given = true;
        } else if (!strcmp(f, "--past")) {
            if (bench_parse_list(argv[++i], &a.past, 1, 0, f) < 0) return 2;
        } else if (!strcmp(f, "--vocab")) {
            if (bench_parse_list(argv[++i], &a.vocab, 1, 1, f) < 0) return 2;
        } else if (!strcmp(f, "--seed")) a.seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(f, "--pad-fraction")) {
            char *end;
            a.pad_fraction = strtod(argv[++i], &end);
            if (*end || !(a.pad_fraction >= 0 && a.pad_fraction < 1)) {
                fprintf(stderr, "kiln bench: --pad-fraction wants a number in [0, 1)\n");
                return 2;
            }
        } else if (!strcmp(f, "--dim")) {
            const char *eq = strchr(v, '=');
            char *end = NULL;
            long long sz = eq ? strtoll(eq + 1, &end, 10) : -1;
            if (!eq || eq == v || !end || *end || sz < 0 || a.n_dims == BENCH_MAX_DIMS) {
                fprintf(stderr, "kiln bench: --dim wants NAME=SIZE, got '%s'\n", v);
                return 2;
            }
            argv[i + 1][eq - v] = 0; /* the name ends at '=' (argv is ours to edit) */
            a.dims[a.n_dims++] = (bench_dim_override){argv[i + 1], sz};
            i++;
        } else if (f[0] == '-' && f[1] == '-') {
            fprintf(stderr, "kiln bench: unknown option '%s'\n", f);
            bench_usage();
            return 2;
        } else if (!a.path) a.path = f;
        else {
            fprintf(stderr, "kiln bench: unexpected argument '%s'\n", f);
            return 2;
        }
    }
    bool only_save = a.iters == 0 && a.save_dir && !a.in_dir;
    if (!a.path || (a.iters < 1 && !only_save) || a.warmup < 0) {
        bench_usage();
        return 2;
    }
    if (a.in_dir && (a.batch_given || a.seq_given || a.save_dir)) {
        fprintf(stderr,
                "kiln bench: --inputs DIR fixes the inputs; --batch, --seq and --save-inputs apply to generated inputs "
                "only\n");
        return 2;
    }
    /* after the loop: the warning for the CPU depends on --device, which may come later */
    if (a.prec_s && kn_cli_parse_precision(a.prec_s, &a.o, "kiln bench")) return 2;

    kn_model *m = NULL;
    kn_session *s = NULL;
    kn_pb_set in = {0};
    bench_inputs gen = {0};
    kn_named_tensor *named = NULL;
    const kn_backend *dev_be = NULL;
    size_t dev_base = 0;
    double *times = malloc(sizeof(double) * (size_t)(a.iters > 0 ? a.iters : 1));
    kn_status *st = times ? NULL : KN_OOM(0);
    if (!st && a.o.device == KN_DEVICE_CUDA) {
        /* opened before the session, so the baseline counts the CUDA context but not the weights */
        st = kn_backend_get(KN_DEVICE_CUDA, a.o.device_index, &dev_be);
        dev_base = bench_device_free(dev_be);
    }
    double t_load = bench_now();
    if (!st) st = kn_model_load_ex(a.path, &a.mo, &m);
    if (!st) st = kn_session_create(m, &a.o, &s);
    t_load = bench_now() - t_load;
    int n_in = s ? kn_session_input_count(s) : 0;
    if (!st) {
        named = calloc((size_t)(n_in ? n_in : 1), sizeof *named);
        if (!named) st = KN_OOM(0);
    }
    if (!st && a.in_dir) {
        st = kn_cli_read_pb_set(a.in_dir, "input_", &in);
        if (!st) st = kn_cli_bind(s, &in, named, false);
        if (!st) {
            bench_point pt = {
                .batch = in.n && in.t[0]->ndim > 0 ? in.t[0]->dims[0] : 1, .seq = -1, .vocab = -1, .inputs = a.in_dir};
            /* tokens per item: the sequence axis of the token ids (else of the mask) */
            for (int pass = 0; pass < 2 && pt.seq < 0; pass++)
                for (int i = 0; i < in.n && pt.seq < 0; i++) {
                    kn_value_info vi;
                    kn_session_input_info(s, i, &vi);
                    vi.name = named[i].name;
                    vi.dtype = in.t[i]->dtype;
                    vi.ndim = in.t[i]->ndim;
                    if (in.t[i]->ndim >= 2 && bench_role_of(&vi) == (pass ? ROLE_MASK : ROLE_IDS))
                        pt.seq = in.t[i]->dims[in.t[i]->ndim - 1];
                }
            st = bench_point_run(&a, s, named, in.n, &pt, times, t_load, dev_be, dev_base, true);
        }
    } else if (!st) {
        bool first = true;
        for (int bi = 0; !st && bi < a.n_batch; bi++)
            for (int si = 0; !st && si < a.n_seq; si++) {
                st = bench_generate(&a, s, m, a.batch[bi], a.seq[si], &gen);
                if (st) break;
                /* an image model has no sequence axis: one point per batch size, not one per --seq */
                if (!gen.used_s && si > 0) {
                    bench_inputs_free(&gen);
                    break;
                }
                bench_point pt = {.batch = gen.n && gen.t[0]->ndim > 0 ? gen.t[0]->dims[0] : a.batch[bi],
                                  .seq = gen.used_s ? a.seq[si] : -1,
                                  .past = a.past,
                                  .vocab = gen.vocab,
                                  .inputs = "generated"};
                if (a.batch_given && pt.batch != a.batch[bi])
                    fprintf(stderr,
                            "kiln bench: warning: the model fixes the batch size at %lld; --batch %lld not applied\n",
                            (long long)pt.batch, (long long)a.batch[bi]);
                if (a.save_dir) {
                    char d[4096];
                    int len = snprintf(d, sizeof d, "%s/b%lld", a.save_dir, (long long)a.batch[bi]);
                    if (gen.used_s) snprintf(d + len, sizeof d - (size_t)len, "_s%lld", (long long)a.seq[si]);
                    mkdir(a.save_dir, 0755);
                    mkdir(d, 0755);
                    st = bench_save(d, s, &gen);
                }
                bench_bind(s, gen.t, gen.n, named);
                if (!st && !only_save)
                    st = bench_point_run(&a, s, named, gen.n, &pt, times, t_load, dev_be, dev_base, first);
                first = false;
                bench_inputs_free(&gen);
            }
    }
    int rc = 0;
    if (st) {
        fprintf(stderr, "kiln: error: %s\n", kn_status_message(st));
        kn_status_free(st);
        rc = 1;
    } else if (a.o.profile) {
        /* on stderr under --json, so stdout stays one JSON object per line */
        char prof[8192];
        fprintf(a.json ? stderr : stdout, "\ntime per op over all warmup and timed runs:\n%s",
                kn_session_profile(s, prof, sizeof prof));
    }
    bench_inputs_free(&gen);
    free(times);
    free(named);
    kn_cli_pb_set_free(&in);
    kn_session_free(s);
    kn_model_free(m);
    return rc;
}
