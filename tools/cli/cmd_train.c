/* `kiln train`: fine-tunes a model folder on JSON-lines data (pipelines/train_data.h) with the
 * trainer (autograd/trainer.h) and writes a model folder that `kiln run` uses as it is. Each
 * epoch ends with an export to a temporary file beside the output model, an evaluation through
 * a pipeline over that file, and a rename when it is the best (or, without --eval, the latest),
 * so --output never holds a half-written model. statistics.json and the --log lines record the
 * run.
 *
 * The loop keeps its position in one struct (train_pos: epoch, batch within the epoch, the
 * shuffle seed, the early-stopping state), and a step is a function of that position, the
 * trainer's state and the session's run counter (Dropout masks) alone, so --save-steps writes
 * those three into one checkpoint file (the trainer's, with the rest as its extra JSON) and
 * --resume reads them back before the loop starts.
 *
 * Under mpirun (runtime/comm.h) every rank runs this same loop on its share of each global batch
 * (shard_step); rank 0 alone logs, evaluates and writes, and broadcasts the position after each
 * epoch so that every rank stops at the same point. */
#include "autograd/checkpoint.h"
#include "autograd/dropout.h"
#include "autograd/loss.h"
#include "autograd/trainer.h"
#include "graph/ops.h"
#include "pipelines/pl_internal.h"
#include "pipelines/train_data.h"
#include "runtime/comm.h"
#include "tools/cli/cli.h"
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct train_args {
    const char *model, *type, *train, *eval, *output, *onnx_file;
    int epochs;
    int64_t max_steps;
    int batch_size;
    double lr, weight_decay, max_grad_norm, dropout, tolerance;
    int64_t warmup_steps;
    const char *scheduler, *loss, *freeze, *log, *device, *precision;
    const char *comm; /* --comm: kn_comm_options.backend */
    uint64_t seed;
    bool shuffle, skip_bad;
    bool no_overlap; /* --no-overlap: all-reduce after the whole backward */
    int patience, threads;
    int64_t save_steps; /* 0: no checkpoints */
    const char *resume; /* a checkpoint file or folder, or an output folder; NULL: a fresh run */
    bool overwrite;     /* replace the trained model of an earlier run in --output */
    double comm_timeout, bucket_mb;
    const char *recompute; /* kn_trainer_options.recompute; NULL: none */
    bool autocast;         /* kn_trainer_options.autocast (with --precision fp16|bf16) */
} train_args;

static void train_usage(void) {
    fprintf(stderr,
            "usage: kiln train --model DIR|REPO --type featureExtraction|textClassification|tokenClassification\n"
            "                  --train FILE.jsonl [--eval FILE.jsonl] --output DIR [options]\n"
            "  --epochs N (1)  --max-steps N  --batch-size N (32)  --lr X (2e-5)  --weight-decay X (0.01)\n"
            "  --warmup-steps N (0)  --scheduler constant|linear|cosine (linear)  --max-grad-norm X (1; 0: off)\n"
            "  --loss cosine|cosent|mnrl|ce (from the data)  --seed N (42)  --no-shuffle  --dropout X (0)\n"
            "  --freeze PATTERNS (comma-separated fnmatch patterns of initializers kept fixed)\n"
            "  --log FILE (JSON lines per step)  --patience N (3)  --tolerance X (1e-4)  --skip-bad-lines\n"
            "  --device cpu|cuda[:N]  --precision fp32|fp16|bf16 (fp16/bf16 on cuda)  --threads N  --onnx-file F\n"
            "  --device cpu  --precision fp32  --threads N  --onnx-file F\n"
            "  --save-steps N (a checkpoint in OUTPUT/checkpoint/ every N steps and at the end)\n"
            "  --resume [DIR] (continue from DIR's checkpoint; no DIR: --output's)\n"
            "  --overwrite (an --output that holds an earlier run's model.onnx, statistics.json or checkpoint\n"
            "               is refused without it; with it they are deleted before training starts)\n"
            "  --comm-timeout S (300: under mpirun, how long a rank waits for the others)\n"
            "  --bucket-mb X (25: the gradient all-reduce's bucket size)\n"
            "  --no-overlap (all-reduce the buckets after the backward, not as it produces them)\n"
            "  --comm auto|single|mpi|tcp|nccl (auto: mpi under mpirun/srun, else tcp when WORLD_SIZE > 1;\n"
            "               with --device cuda, NCCL over either when built with it)\n"
            "  --recompute layers|PATTERNS (recompute activations in the backward: every numbered layer's, or\n"
            "               those of the nodes the fnmatch patterns name; less memory, the same training)\n"
            "  --autocast (with --precision fp16|bf16: only MatMul/Gemm/convolution/attention in it)\n"
            "Under mpirun -np N (or torchrun-style: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK)\n"
            "each rank trains on its share of every batch: the global batch is N x\n"
            "--batch-size, in the order one process would see; rank 0 logs, evaluates and writes.\n"
            "Data: featureExtraction {\"sentence1\", \"sentence2\", \"score\"} or {\"anchor\", \"positive\"};\n"
            "textClassification {\"input\": text or [text, pair], \"label\"}; tokenClassification {\"tokens\": [...],\n"
            "\"labels\": [...]}. The output folder holds model.onnx, the tokenizer and config files and\n"
            "statistics.json.\n");
}

static int train_fail(kn_status *st) {
    fprintf(stderr, "kiln train: error: %s\n", kn_status_message(st));
    kn_status_free(st);
    return 1;
}

static void train_warn(void *ctx, const char *msg) {
    (void)ctx;
    fprintf(stderr, "kiln train: warning: %s\n", msg);
}

/* ---- files ---- */

static bool path_exists(const char *p) {
    struct stat s;
    return stat(p, &s) == 0;
}

static kn_status *copy_file(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb");
    if (!in) return kn_error(KN_ERR_IO, "%s: cannot open: %s", src, strerror(errno));
    char tmp[4200];
    FILE *out = (size_t)snprintf(tmp, sizeof tmp, "%s.tmp", dst) < sizeof tmp ? fopen(tmp, "wb") : NULL;
    if (!out) {
        fclose(in);
        return kn_error(KN_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
    }
    char buf[65536];
    size_t n;
    bool ok = true;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) ok &= fwrite(buf, 1, n, out) == n;
    ok &= !ferror(in);
    fclose(in);
    ok &= fclose(out) == 0;
    if (!ok || rename(tmp, dst) != 0) {
        unlink(tmp);
        return kn_error(KN_ERR_IO, "%s: cannot write: %s", dst, strerror(errno));
    }
    return NULL;
}

static bool is_weight_file(const char *name) {
    static const char *const ext[] = {".onnx", ".onnx_data", ".onnx.data", ".safetensors", ".bin",
                                      ".h5",   ".msgpack",   ".ot",        ".tmp",         ".pt"};
    size_t l = strlen(name);
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        size_t e = strlen(ext[i]);
        if (l >= e && !strcmp(name + l - e, ext[i])) return true;
    }
    return !strcmp(name, "statistics.json");
}

/* The regular files of src (not the weights) into dst; a folder recurses one level when
 * `deep` (sentence-transformers' module folders: 1_Pooling, 2_Normalize). */
static kn_status *copy_side_files(const char *src, const char *dst, bool deep) {
    DIR *d = opendir(src);
    if (!d) return kn_error(KN_ERR_IO, "%s: cannot read the folder: %s", src, strerror(errno));
    if (mkdir(dst, 0755) != 0 && errno != EEXIST) {
        closedir(d);
        return kn_error(KN_ERR_IO, "%s: cannot create: %s", dst, strerror(errno));
    }
    kn_status *st = NULL;
    struct dirent *e;
    while (!st && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char s[4200], t[4200];
        struct stat sb;
        if ((size_t)snprintf(s, sizeof s, "%s/%s", src, e->d_name) >= sizeof s ||
            (size_t)snprintf(t, sizeof t, "%s/%s", dst, e->d_name) >= sizeof t || stat(s, &sb) != 0)
            continue;
        if (S_ISDIR(sb.st_mode)) {
            if (deep && strcmp(e->d_name, "onnx") != 0) st = copy_side_files(s, t, false);
        } else if (S_ISREG(sb.st_mode) && !is_weight_file(e->d_name)) {
            st = copy_file(s, t);
        }
    }
    closedir(d);
    return st;
}

/* The model file: --onnx-file, else model.onnx at the root or under onnx/, else the only .onnx
 * at the root. */
static kn_status *find_model(const char *dir, const char *onnx_file, char *path, size_t len) {
    if (onnx_file) {
        if (onnx_file[0] == '/' || path_exists(onnx_file)) snprintf(path, len, "%s", onnx_file);
        else snprintf(path, len, "%s/%s", dir, onnx_file);
        return path_exists(path) ? NULL : kn_error(KN_ERR_IO, "%s: no such model file", path);
    }
    snprintf(path, len, "%s/model.onnx", dir);
    if (path_exists(path)) return NULL;
    snprintf(path, len, "%s/onnx/model.onnx", dir);
    if (path_exists(path)) return NULL;
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 5 && !strcmp(e->d_name + l - 5, ".onnx")) {
            if (!n) snprintf(path, len, "%s/%s", dir, e->d_name);
            n++;
        }
    }
    if (d) closedir(d);
    if (n == 1) return NULL;
    return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %s", dir,
                    n ? "several .onnx files; choose one with --onnx-file" : "no .onnx model file");
}

/* The rolling checkpoint, OUTPUT/checkpoint/CKPT_FILE, replaced atomically at each save. */
#define CKPT_FILE "trainer_state.safetensors"

/* What an earlier run leaves in --output. Training into such a folder again would leave its
 * model.onnx looking like this run's result until this run's first epoch is saved (and for good
 * when it fails before), so a fresh run refuses the folder without --overwrite and with it
 * deletes them first; --resume continues the run that wrote them. */
static kn_status *prepare_output(const train_args *a) {
    static const char *const old[] = {"model.onnx", "model.onnx.data", "statistics.json", "checkpoint/" CKPT_FILE};
    if (a->resume) return NULL;
    for (size_t i = 0; i < sizeof old / sizeof old[0]; i++) {
        char p[4200];
        if ((size_t)snprintf(p, sizeof p, "%s/%s", a->output, old[i]) >= sizeof p || !path_exists(p)) continue;
        if (!a->overwrite)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "--output %s already holds %s from an earlier run; pass --overwrite to replace that run's "
                            "results or --resume to continue it",
                            a->output, old[i]);
        if (unlink(p) != 0) return kn_error(KN_ERR_IO, "%s: cannot delete: %s", p, strerror(errno));
    }
    return NULL;
}

/* ---- the loss graph ---- */

/* A pattern that matches exactly this name (fnmatch's special characters escaped). */
static bool append_literal(char **buf, size_t *len, size_t *cap, const char *name) {
    size_t need = *len + 2 * strlen(name) + 2;
    if (need > *cap) {
        size_t nc = need * 2;
        char *b = realloc(*buf, nc);
        if (!b) return false;
        *buf = b;
        *cap = nc;
    }
    if (*len) (*buf)[(*len)++] = ',';
    for (const char *c = name; *c; c++) {
        if (strchr("*?[]\\,", *c)) (*buf)[(*len)++] = '\\';
        (*buf)[(*len)++] = *c;
    }
    (*buf)[*len] = 0;
    return true;
}

/* Which initializers train: float32 tensors that are weights rather than constants of the
 * export (scales, fill values: single elements not named as weights), minus --freeze. Rank-1
 * parameters (biases, norm scales) get no weight decay, as transformers' Trainer excludes bias
 * and LayerNorm parameters. */
static kn_status *choose_trainable(const kn_graph *g, const char *freeze, char **trainable, char **no_decay,
                                   int *n_train) {
    size_t tl = 0, tc = 0, nl = 0, nc = 0;
    *trainable = *no_decay = NULL;
    *n_train = 0;
    /* a --freeze pattern that matches no initializer is a typo, not a choice */
    for (const char *q = freeze; q && *q;) {
        const char *e = strchr(q, ',');
        size_t len = e ? (size_t)(e - q) : strlen(q);
        char pat[256];
        if (len > 0 && len < sizeof pat) {
            memcpy(pat, q, len);
            pat[len] = 0;
            bool hit = false;
            for (int v = 0; v < g->n_values && !hit; v++)
                hit = g->values[v].constant && kn_name_matches(pat, g->values[v].name);
            KN_CHECK(hit, KN_ERR_INVALID_ARGUMENT, "--freeze: the pattern '%s' matches no initializer", pat);
        }
        q = e ? e + 1 : q + len;
    }
    for (int v = 0; v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        const kn_tensor *c = val->constant;
        if (!c || val->is_input || c->dtype != KN_F32 || c->kind != KN_KIND_TENSOR || c->ndim < 1) continue;
        size_t ln = strlen(val->name);
        bool named =
            (ln >= 6 && !strcmp(val->name + ln - 6, "weight")) || (ln >= 4 && !strcmp(val->name + ln - 4, "bias"));
        if (kn_numel(c) < 2 && !named) continue;
        if (freeze && kn_name_matches(freeze, val->name)) continue;
        if (!append_literal(trainable, &tl, &tc, val->name)) return KN_OOM(tc);
        if (c->ndim == 1 && !append_literal(no_decay, &nl, &nc, val->name)) return KN_OOM(nc);
        (*n_train)++;
    }
    if (!*n_train)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "no trainable weights%s", freeze ? " (--freeze leaves none)" : "");
    if (!*no_decay) *no_decay = strdup("");
    return *no_decay ? NULL : KN_OOM(1);
}

/* x[:, 0, :] of token embeddings [B, T, D] (sentence-transformers' CLS pooling). */
static kn_status *cls_pool(kn_graph *g, int tokens, int *pooled) {
    int idx = kn_graph_add_value(g, "kiln_train/cls_index");
    int out = kn_graph_add_value(g, "kiln_train/cls_pooled");
    if (idx < 0 || out < 0) return KN_OOM(0);
    kn_tensor *t = NULL;
    KN_TRY(kn_tensor_new(KN_I64, 0, NULL, &t));
    ((int64_t *)t->data)[0] = 0;
    g->values[idx].constant = t;
    g->values[idx].type.dtype = KN_I64;
    kn_tensor_set_shape(&g->values[idx].type, 0, NULL);
    kn_attr *a = calloc(1, sizeof *a);
    if (!a) return KN_OOM(sizeof *a);
    KN_TRY(kn_attr_copy(a, &(kn_attr){.name = "axis", .type = KN_ATTR_INT, .i = 1}));
    int ins[2] = {tokens, idx};
    int id = kn_graph_add_node(g, "kiln_train/cls_gather", "Gather", "", ins, 2, &out, 1, a, 1);
    if (id < 0) return KN_OOM(sizeof(kn_node));
    kn_node *n = &g->nodes[id];
    n->op = kn_op_lookup("Gather", "");
    n->opset = 17;
    g->values[out].producer = id;
    KN_TRY(kn_node_decode_params(n));
    *pooled = out;
    return NULL;
}

static int find_output(const kn_graph *g, const char *const *names, int rank) {
    for (int k = 0; names[k]; k++) {
        int v = kn_graph_find_value(g, names[k]);
        if (v >= 0 && g->values[v].is_output) return v;
    }
    for (int i = 0; i < g->n_outputs; i++)
        if (rank < 0 || g->values[g->outputs[i]].type.ndim == rank) return g->outputs[i];
    return -1;
}

static kn_status *build_loss(kn_model *m, const kn_pipeline *p, kn_td_loss loss, kn_td_task task, int *out_loss) {
    kn_graph *g = m->graph;
    int64_t d1[1] = {-1}, d2[2] = {-1, -1};
    int v = -1;
    if (task == KN_TD_FEATURE) {
        int mask = kn_graph_find_value(g, "attention_mask");
        int pooled = -1;
        int se = kn_graph_find_value(g, "sentence_embedding");
        if (se >= 0 && g->values[se].is_output) {
            pooled = se; /* the export already pools */
        } else {
            static const char *const names[] = {"last_hidden_state", "token_embeddings", NULL};
            int tokens = find_output(g, names, 3);
            if (tokens < 0)
                return kn_error(KN_ERR_INVALID_MODEL,
                                "featureExtraction training needs token embeddings [batch, tokens, dim] "
                                "(last_hidden_state) or sentence_embedding; the model has neither");
            kn_pl_pooling pool = kn_td_pooling(p);
            if (pool == KN_POOL_MEAN) {
                if (mask < 0) return kn_error(KN_ERR_INVALID_MODEL, "mean pooling needs an attention_mask input");
                KN_TRY(kn_loss_mean_pool(g, tokens, mask, &pooled));
            } else if (pool == KN_POOL_CLS) {
                KN_TRY(cls_pool(g, tokens, &pooled));
            } else {
                return kn_error(KN_ERR_UNSUPPORTED,
                                "%s: the folder's pooling (1_Pooling/config.json) is max or last-token; kiln train "
                                "implements mean and CLS pooling",
                                p->dir);
            }
        }
        /* a Normalize module changes no cosine: every pair loss normalises itself */
        int a, b;
        KN_TRY(kn_loss_split_halves(g, pooled, &a, &b));
        if (loss == KN_TD_LOSS_MNRL) return kn_loss_multiple_negatives_ranking(g, a, b, KN_TD_PAIR_SCALE, out_loss);
        KN_TRY(kn_loss_add_input(g, "scores", KN_F32, 1, d1, &v));
        if (loss == KN_TD_LOSS_COSENT) return kn_loss_cosent(g, a, b, v, KN_TD_PAIR_SCALE, out_loss);
        return kn_loss_cosine_similarity(g, a, b, v, out_loss);
    }
    static const char *const names[] = {"logits", NULL};
    int logits = find_output(g, names, task == KN_TD_TEXT_CLASS ? 2 : 3);
    if (logits < 0)
        return kn_error(KN_ERR_INVALID_MODEL, "%s needs a logits output [batch, %slabels]",
                        task == KN_TD_TEXT_CLASS ? "textClassification" : "tokenClassification",
                        task == KN_TD_TEXT_CLASS ? "" : "tokens, ");
    KN_TRY(kn_loss_add_input(g, "labels", KN_I64, task == KN_TD_TEXT_CLASS ? 1 : 2, task == KN_TD_TEXT_CLASS ? d1 : d2,
                             &v));
    return kn_loss_cross_entropy(g, logits, v, -100, out_loss);
}

/* ---- the loop ---- */

/* Where the loop is; everything a resume needs besides the trainer's parameters and moments. */
typedef struct train_pos {
    int epoch;          /* 0-based */
    int batch;          /* next batch within the epoch */
    int64_t step;       /* optimiser steps so far */
    uint64_t seed;      /* the shuffle of epoch e is a function of (seed, e) */
    double best;        /* best eval metric so far (-inf: none) */
    int best_epoch;     /* 1-based, 0: none */
    double best_loss;   /* lowest eval loss (early stopping) */
    int bad_epochs;     /* epochs without an eval-loss improvement beyond the tolerance */
    bool stopped_early; /* patience ran out */
} train_pos;

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Epoch e's order: Fisher-Yates from a generator seeded by (seed, e), the same on every machine. */
static void epoch_order(int *order, int n, uint64_t seed, int epoch, bool shuffle) {
    for (int i = 0; i < n; i++) order[i] = i;
    if (!shuffle) return;
    uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(epoch + 1));
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(splitmix64(&s) % (uint64_t)(i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

typedef struct epoch_stats {
    double lsum; /* the sum of the step losses so far (a checkpoint may fall mid-epoch) */
    double train_loss;
    int steps;
    bool evaluated;
    kn_td_eval ev;
    bool saved;
} epoch_stats;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void json_num(FILE *f, double x) {
    if (isfinite(x)) fprintf(f, "%.9g", x);
    else fputs("null", f);
}

static kn_status *write_statistics(const char *out_dir, const train_args *a, const epoch_stats *es, int n_epochs,
                                   const train_pos *pos, int skipped_train, int skipped_eval, const char *status) {
    char path[4200], tmp[4300];
    FILE *f = (size_t)snprintf(path, sizeof path, "%s/statistics.json", out_dir) < sizeof path &&
            (size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) < sizeof tmp
        ? fopen(tmp, "w")
        : NULL;
    if (!f) return kn_error(KN_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
    fprintf(f, "{\n  \"type\": \"%s\",\n  \"status\": \"%s\",\n  \"epochs_run\": %d,\n  \"steps\": %lld,\n", a->type,
            status, n_epochs, (long long)pos->step);
    fputs("  \"epoch_train_losses\": [", f);
    for (int e = 0; e < n_epochs; e++) {
        fputs(e ? ", " : "", f);
        json_num(f, es[e].train_loss);
    }
    fputs("],\n  \"epoch_eval_losses\": [", f);
    for (int e = 0; e < n_epochs && a->eval; e++) {
        fputs(e ? ", " : "", f);
        json_num(f, es[e].evaluated ? es[e].ev.loss : NAN);
    }
    fputs("],\n  \"epochs\": [", f);
    for (int e = 0; e < n_epochs; e++) {
        fprintf(f, "%s\n    {\"epoch\": %d, \"steps\": %d, \"train_loss\": ", e ? "," : "", e + 1, es[e].steps);
        json_num(f, es[e].train_loss);
        if (es[e].evaluated) {
            fputs(", \"eval_loss\": ", f);
            json_num(f, es[e].ev.loss);
            fprintf(f, ", \"eval_metric\": \"%s\", \"eval_value\": ", es[e].ev.metric);
            json_num(f, es[e].ev.value);
            if (!strcmp(es[e].ev.metric, "spearman")) {
                fputs(", \"eval_spearman\": ", f);
                json_num(f, es[e].ev.spearman);
            } else {
                fputs(", \"eval_accuracy\": ", f);
                json_num(f, es[e].ev.accuracy);
                if (!strcmp(es[e].ev.metric, "macro_f1")) {
                    fputs(", \"eval_macro_f1\": ", f);
                    json_num(f, es[e].ev.macro_f1);
                }
            }
        }
        fprintf(f, ", \"saved\": %s}", es[e].saved ? "true" : "false");
    }
    fprintf(f, "\n  ],\n  \"best_epoch\": %d,\n  \"best_eval_value\": ", pos->best_epoch);
    json_num(f, pos->best_epoch ? pos->best : NAN);
    fprintf(f, ",\n  \"early_stopped\": %s,\n  \"patience\": %d,\n  \"tolerance\": %g,\n",
            pos->stopped_early ? "true" : "false", a->patience, a->tolerance);
    fprintf(f, "  \"skipped_train_lines\": %d,\n  \"skipped_eval_lines\": %d\n}\n", skipped_train, skipped_eval);
    bool ok = !ferror(f);
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return kn_error(KN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    }
    return NULL;
}

static void progress(bool on, int epoch, int epochs, int b, int nb, double loss, double sps) {
    if (!on) return;
    int width = 30, fill = nb ? (int)((double)b * width / nb) : width;
    fprintf(stderr, "\r\033[Kepoch %d/%d [", epoch + 1, epochs);
    for (int i = 0; i < width; i++) fputc(i < fill ? '=' : i == fill ? '>' : ' ', stderr);
    fprintf(stderr, "] %d/%d  loss %.4f  %.1f samples/s", b, nb, loss, sps);
    fflush(stderr);
}

static int parse_args(int argc, char **argv, train_args *a) {
    memset(a, 0, sizeof *a);
    a->epochs = 1;
    a->max_steps = -1;
    a->batch_size = 32;
    a->lr = 2e-5;
    a->weight_decay = 0.01;
    a->max_grad_norm = 1.0;
    a->scheduler = "linear";
    a->seed = 42;
    a->shuffle = true;
    a->patience = 3;
    a->tolerance = 1e-4;
    a->device = "cpu";
    a->comm = "auto";
    a->precision = "fp32";
    a->comm_timeout = 300;
    a->bucket_mb = 25;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--help") || !strcmp(k, "-h")) {
            train_usage();
            exit(0);
        }
        if (!strcmp(k, "--no-shuffle")) {
            a->shuffle = false;
            continue;
        }
        if (!strcmp(k, "--no-overlap")) {
            a->no_overlap = true;
            continue;
        }
        if (!strcmp(k, "--skip-bad-lines")) {
            a->skip_bad = true;
            continue;
        }
        if (!strcmp(k, "--overwrite")) {
            a->overwrite = true;
            continue;
        }
        if (!strcmp(k, "--autocast")) {
            a->autocast = true;
            continue;
        }
        if (!strcmp(k, "--resume")) { /* the folder is optional: none means --output's checkpoint */
            a->resume = i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0 ? argv[++i] : "";
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "kiln train: %s needs a value\n", k);
            return -1;
        }
        const char *v = argv[++i];
        char *end = NULL;
        errno = 0;
#define STR(flag, field) \
    if (!strcmp(k, flag)) { \
        a->field = v; \
        continue; \
    }
#define NUM(flag, field, conv) \
    if (!strcmp(k, flag)) { \
        a->field = conv; \
        if (!*v || *end || errno) { \
            fprintf(stderr, "kiln train: %s: '%s' is not a number\n", k, v); \
            return -1; \
        } \
        continue; \
    }
        STR("--model", model)
        STR("--type", type)
        STR("--train", train)
        STR("--eval", eval)
        STR("--output", output)
        STR("--onnx-file", onnx_file)
        STR("--scheduler", scheduler)
        STR("--loss", loss)
        STR("--freeze", freeze)
        STR("--log", log)
        STR("--device", device)
        STR("--comm", comm)
        STR("--precision", precision)
        STR("--recompute", recompute)
        NUM("--epochs", epochs, (int)strtol(v, &end, 10))
        NUM("--max-steps", max_steps, strtoll(v, &end, 10))
        NUM("--batch-size", batch_size, (int)strtol(v, &end, 10))
        NUM("--lr", lr, strtod(v, &end))
        NUM("--weight-decay", weight_decay, strtod(v, &end))
        NUM("--warmup-steps", warmup_steps, strtoll(v, &end, 10))
        NUM("--max-grad-norm", max_grad_norm, strtod(v, &end))
        NUM("--dropout", dropout, strtod(v, &end))
        NUM("--seed", seed, strtoull(v, &end, 10))
        NUM("--patience", patience, (int)strtol(v, &end, 10))
        NUM("--tolerance", tolerance, strtod(v, &end))
        NUM("--threads", threads, (int)strtol(v, &end, 10))
        NUM("--save-steps", save_steps, strtoll(v, &end, 10))
        NUM("--comm-timeout", comm_timeout, strtod(v, &end))
        NUM("--bucket-mb", bucket_mb, strtod(v, &end))
#undef STR
#undef NUM
        fprintf(stderr, "kiln train: unknown option '%s'\n", k);
        return -1;
    }
    if (!a->model || !a->type || !a->train || !a->output) {
        fprintf(stderr, "kiln train: --model, --type, --train and --output are required\n");
        return -1;
    }
    if (a->epochs < 1 || a->batch_size < 1 || a->lr < 0 || a->weight_decay < 0 || a->warmup_steps < 0 ||
        a->max_grad_norm < 0 || a->dropout < 0 || a->dropout >= 1 || a->patience < 1 || a->tolerance < 0 ||
        a->max_steps == 0 || a->threads < 0 || a->save_steps < 0 || !(a->comm_timeout > 0) || !(a->bucket_mb > 0)) {
        fprintf(stderr,
                "kiln train: out-of-range option (epochs, batch size and patience >= 1; lr, weight decay, "
                "warm-up, clipping, tolerance >= 0; 0 <= dropout < 1; max steps >= 1)\n");
        return -1;
    }
    return 0;
}

typedef struct train_run {
    train_args a;
    kn_td_task task;
    kn_td_loss loss;
    kn_pipeline *p;
    kn_train_data train, eval;
    kn_trainer *t;
    char model_path[4200];
    char cand[4300], final[4300];
    FILE *log;
    epoch_stats *es;
    kn_optim_options sched; /* the schedule, for the lr each step used */
    int64_t ckpt_step;      /* the step of the checkpoint in OUTPUT/checkpoint (-1: none yet) */
    char *loss_name;        /* the loss value, for the check before a checkpoint */
    kn_comm *comm;          /* data parallelism: rank 0 alone logs, evaluates and writes */
    int rank, size;
    double *rank_loss; /* size entries: each rank's share of the batch loss */
} train_run;

static kn_status *setup(train_run *r) {
    train_args *a = &r->a;
    if (!strcmp(a->type, "featureExtraction")) r->task = KN_TD_FEATURE;
    else if (!strcmp(a->type, "textClassification")) r->task = KN_TD_TEXT_CLASS;
    else if (!strcmp(a->type, "tokenClassification")) r->task = KN_TD_TOKEN_CLASS;
    else
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "--type '%s': kiln train takes featureExtraction, textClassification or tokenClassification",
                        a->type);
    kn_session_options dev; /* --device cpu|cuda[:N], --precision fp32|fp16|bf16 (fp16/bf16: cuda only) */
    kn_session_options_init(&dev);
    if (kn_cli_parse_device(a->device, &dev) ||
        (strcmp(a->precision, "fp32") && (dev.device == KN_DEVICE_CPU || !strcmp(a->precision, "tf32"))) ||
        kn_cli_parse_precision(a->precision, &dev, "kiln train"))
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "--device %s --precision %s: kiln train takes cpu or cuda[:N], and "
                        "fp32, or fp16/bf16 on cuda",
                        a->device, a->precision);
    kn_sched_kind sk;
    if (!strcmp(a->scheduler, "constant")) sk = KN_SCHED_CONSTANT;
    else if (!strcmp(a->scheduler, "linear")) sk = KN_SCHED_LINEAR;
    else if (!strcmp(a->scheduler, "cosine")) sk = KN_SCHED_COSINE;
    else return kn_error(KN_ERR_INVALID_ARGUMENT, "--scheduler '%s': constant, linear or cosine", a->scheduler);
    if (sk == KN_SCHED_CONSTANT && a->warmup_steps > 0)
        train_warn(NULL, "--warmup-steps: the constant scheduler has no warm-up (use linear or cosine)");
    kn_pl_options po;
    kn_pl_options_init(&po);
    po.batch_size = a->batch_size;
    po.onnx_file = a->onnx_file;
    po.session.num_threads = a->threads;
    po.warn = train_warn;
    /* a path, or a Hugging Face repo id resolved through the cache as `kiln run` does */
    KN_TRY(kn_pipeline_open(a->model, &po, &r->p));
    char rm[PATH_MAX], ro[PATH_MAX];
    if (realpath(kn_pipeline_dir(r->p), rm) && realpath(a->output, ro) && !strcmp(rm, ro))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "--output is the --model folder; write the trained model elsewhere");
    KN_TRY(prepare_output(a));
    KN_TRY(kn_train_data_read(r->p, a->train, r->task, a->skip_bad, train_warn, NULL, &r->train));
    if (a->eval) KN_TRY(kn_train_data_read(r->p, a->eval, r->task, a->skip_bad, train_warn, NULL, &r->eval));
    if (a->eval && r->eval.format != r->train.format)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s holds other kinds of examples than %s", a->eval, a->train);

    /* the loss: from the data, --loss where it has a choice */
    kn_td_format f = r->train.format;
    r->loss = f == KN_TD_SCORED_PAIRS ? KN_TD_LOSS_COSINE : f == KN_TD_PAIRS ? KN_TD_LOSS_MNRL : KN_TD_LOSS_CE;
    if (a->loss) {
        static const char *const names[] = {"cosine", "cosent", "mnrl", "ce"};
        int k = -1;
        for (int i = 0; i < 4; i++)
            if (!strcmp(a->loss, names[i])) k = i;
        bool ok = k >= 0 && (f == KN_TD_SCORED_PAIRS ? (k == 0 || k == 1) : f == KN_TD_PAIRS ? k == 2 : k == 3);
        if (!ok)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "--loss %s does not fit %s data (scored pairs: cosine or cosent; anchor/positive pairs: "
                            "mnrl; classification: ce)",
                            a->loss, a->train);
        r->loss = (kn_td_loss)k;
    }

    KN_TRY(find_model(kn_pipeline_dir(r->p), a->onnx_file, r->model_path, sizeof r->model_path));
    kn_model *m = NULL;
    KN_TRY(kn_train_load(r->model_path, &m));
    int dropouts = 0;
    for (int i = 0; i < m->graph->n_nodes; i++) dropouts += !strcmp(m->graph->nodes[i].op_type, "Dropout");
    kn_status *st = NULL;
    /* before the loss and its gradient are built: the gradient rule reads the mask the forward
     * draws. The masks follow --seed and the session's run counter (restored on --resume); the
     * exported model keeps the file's own (inference) Dropout nodes. */
    if (dropouts) st = kn_graph_set_dropout(m->graph, a->dropout, a->seed, NULL);
    else if (a->dropout != 0) train_warn(NULL, "--dropout: the model has no Dropout nodes; the value has no effect");
    int loss = -1, n_train = 0;
    char *trainable = NULL, *no_decay = NULL;
    if (!st) st = build_loss(m, r->p, r->loss, r->task, &loss);
    if (!st && !(r->loss_name = strdup(m->graph->values[loss].name))) st = KN_OOM(1);
    if (!st) st = choose_trainable(m->graph, a->freeze, &trainable, &no_decay, &n_train);
    if (st) {
        kn_model_free(m);
        free(trainable);
        free(no_decay);
        return kn_error_wrap(st, "%s: ", r->model_path);
    }
    int64_t gb = (int64_t)a->batch_size * r->size; /* the global batch */
    int nb = (int)((r->train.n + gb - 1) / gb);
    int64_t total = (int64_t)nb * a->epochs;
    if (a->max_steps > 0 && a->max_steps < total) total = a->max_steps;
    kn_trainer_options o;
    kn_trainer_options_init(&o);
    o.trainable = trainable;
    o.num_threads = a->threads;
    o.device = dev.device;
    o.device_index = dev.device_index;
    /* NCCL chose this process's GPU by LOCAL_RANK; the session takes the same one */
    if (kn_comm_on_device(r->comm) && !strchr(a->device, ':')) o.device_index = kn_comm_local_rank(r->comm);
    o.precision = dev.precision;
    o.recompute = a->recompute;
    o.autocast = a->autocast;
    o.optim.kind = KN_OPTIM_ADAMW;
    o.optim.lr = a->lr;
    o.optim.weight_decay = a->weight_decay;
    o.optim.no_decay = no_decay;
    o.optim.schedule = sk;
    o.optim.warmup_steps = a->warmup_steps;
    o.optim.total_steps = total;
    o.optim.max_grad_norm = a->max_grad_norm;
    r->sched = o.optim;
    r->sched.no_decay = NULL;
    st = kn_trainer_create(m, loss, &o, &r->t);
    free(trainable);
    free(no_decay);
    KN_TRY(kn_error_wrap(st, "%s: ", r->model_path));
    size_t bucket = (size_t)(a->bucket_mb * 1048576.0);
    KN_TRY(kn_trainer_set_comm(r->t, r->comm, bucket ? bucket : 1));
    kn_trainer_set_overlap(r->t, !a->no_overlap);
    snprintf(r->final, sizeof r->final, "%s/model.onnx", a->output);
    snprintf(r->cand, sizeof r->cand, "%s/.model.onnx.candidate.tmp", a->output);
    if (r->rank != 0) return NULL;
    fprintf(stderr, "kiln train: %s, %d examples (%d skipped), %d parameters, %d steps per epoch\n", a->type,
            r->train.n, r->train.skipped, kn_trainer_param_count(r->t), nb);
    if (r->size > 1) {
        fprintf(stderr, "kiln train: %d ranks (%s), global batch %lld = %d x %d, gradients all-reduced in %d buckets\n",
                r->size, kn_comm_backend(r->comm), (long long)gb, r->size, a->batch_size, kn_trainer_buckets(r->t));
        if (r->loss == KN_TD_LOSS_MNRL || r->loss == KN_TD_LOSS_COSENT)
            train_warn(NULL,
                       "--loss mnrl/cosent compare the examples within a batch: under mpirun each rank "
                       "compares only its own --batch-size examples, so the loss is not that of one process "
                       "with the global batch");
    }

    if (mkdir(a->output, 0755) != 0 && errno != EEXIST)
        return kn_error(KN_ERR_IO, "%s: cannot create: %s", a->output, strerror(errno));
    KN_TRY(copy_side_files(kn_pipeline_dir(r->p), a->output, true));
    snprintf(r->final, sizeof r->final, "%s/model.onnx", a->output);
    /* the candidate has its own folder so it carries the final file name: an export with external
     * data names its data file after the model (model.onnx.data), and that name must hold once
     * both are renamed into --output */
    char cdir[4300];
    snprintf(cdir, sizeof cdir, "%s/.candidate", a->output);
    if (mkdir(cdir, 0755) != 0 && errno != EEXIST)
        return kn_error(KN_ERR_IO, "%s: cannot create: %s", cdir, strerror(errno));
    if ((size_t)snprintf(r->cand, sizeof r->cand, "%s/model.onnx", cdir) >= sizeof r->cand)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "--output: the path is too long");
    r->ckpt_step = -1;
    /* a resumed run rewrites the log once it knows the checkpoint's step (resume_run) */
    if (a->log && !a->resume && r->rank == 0 && !(r->log = fopen(a->log, "w")))
        return kn_error(KN_ERR_IO, "--log %s: cannot write: %s", a->log, strerror(errno));
    return NULL;
}

/* The candidate export and its external data file, if any, deleted. */
static void drop_candidate(train_run *r) {
    char d[4400];
    unlink(r->cand);
    snprintf(d, sizeof d, "%s.data", r->cand);
    unlink(d);
}

/* The candidate becomes OUTPUT/model.onnx, its external data (model.onnx.data) renamed first:
 * each rename is atomic, and the model file, renamed last, is what makes the new weights the
 * output's. Only a crash between the two renames pairs the previous model.onnx with the new data
 * file, which has the same layout (the same source and the same writer). A data file an earlier
 * export left is deleted when this one has none. */
static kn_status *promote_candidate(train_run *r) {
    char cd[4400], fd[4400];
    snprintf(cd, sizeof cd, "%s.data", r->cand);
    snprintf(fd, sizeof fd, "%s.data", r->final);
    bool ext = path_exists(cd);
    if (ext && rename(cd, fd) != 0) return kn_error(KN_ERR_IO, "%s: cannot write: %s", fd, strerror(errno));
    if (rename(r->cand, r->final) != 0) return kn_error(KN_ERR_IO, "%s: cannot write: %s", r->final, strerror(errno));
    if (!ext) unlink(fd);
    return NULL;
}

/* ---- checkpoints ---- */

static void ckpt_num(FILE *f, const char *key, double x) {
    fprintf(f, ",\"%s\":", key);
    if (isfinite(x)) fprintf(f, "%.17g", x);
    else fputs("null", f);
}

/* OUTPUT/checkpoint/CKPT_FILE: the trainer's state and, as its extra JSON, the loop's position,
 * the early-stopping and best-model state, the session's run counter (Dropout masks) and the
 * statistics of the epochs so far (the current one partly). One file, written atomically, so a
 * checkpoint is either the previous one or the new one. */
static kn_status *save_checkpoint(train_run *r, const train_pos *pos, int epochs_run) {
    if (r->rank != 0) return NULL; /* every rank holds the same state; rank 0 writes it */
    char dir[4300], path[4400];
    snprintf(dir, sizeof dir, "%s/checkpoint", r->a.output);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return kn_error(KN_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
    snprintf(path, sizeof path, "%s/" CKPT_FILE, dir);
    char *extra = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&extra, &len);
    if (!f) return KN_OOM(0);
    fprintf(f,
            "{\"kiln_train\":1,\"epoch\":%d,\"batch\":%d,\"step\":%lld,\"seed\":\"%llu\",\"runs\":\"%llu\","
            "\"best_epoch\":%d,\"bad_epochs\":%d,\"stopped_early\":%s,\"epochs_run\":%d,\"n_train\":%d,"
            "\"batch_size\":%d,\"global_batch\":%lld,\"world_size\":%d",
            pos->epoch, pos->batch, (long long)pos->step, (unsigned long long)pos->seed,
            (unsigned long long)kn_trainer_run_count(r->t), pos->best_epoch, pos->bad_epochs,
            pos->stopped_early ? "true" : "false", epochs_run, r->train.n, r->a.batch_size,
            (long long)r->a.batch_size * r->size, r->size);
    ckpt_num(f, "best", pos->best);
    ckpt_num(f, "best_loss", pos->best_loss);
    fputs(",\"epochs\":[", f);
    int ne = pos->epoch < r->a.epochs ? pos->epoch + 1 : r->a.epochs;
    for (int e = 0; e < ne; e++) {
        const epoch_stats *es = &r->es[e];
        fprintf(f, "%s{\"steps\":%d,\"saved\":%s,\"evaluated\":%s,\"metric\":\"%s\"", e ? "," : "", es->steps,
                es->saved ? "true" : "false", es->evaluated ? "true" : "false", es->ev.metric ? es->ev.metric : "");
        ckpt_num(f, "lsum", es->lsum);
        ckpt_num(f, "train_loss", es->train_loss);
        ckpt_num(f, "eval_loss", es->ev.loss);
        ckpt_num(f, "value", es->ev.value);
        ckpt_num(f, "accuracy", es->ev.accuracy);
        ckpt_num(f, "macro_f1", es->ev.macro_f1);
        ckpt_num(f, "spearman", es->ev.spearman);
        fprintf(f, ",\"n\":%d}", es->ev.n);
    }
    fputs("]}", f);
    if (fclose(f) != 0) {
        free(extra);
        return KN_OOM(len);
    }
    kn_status *st = kn_trainer_checkpoint_save(r->t, path, extra);
    free(extra);
    if (!st) r->ckpt_step = pos->step;
    return st;
}

static double ckpt_get_num(json_object *o, const char *key, double none) {
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v) || !v || json_object_get_type(v) == json_type_null) return none;
    return json_object_get_double(v);
}

static uint64_t ckpt_get_u64(json_object *o, const char *key) {
    const char *v = pl_json_str(o, key, "0");
    return strtoull(v, NULL, 10);
}

/* --resume: DIR may be the checkpoint file, its folder, or an output folder (its checkpoint/). */
static kn_status *resume_path(const train_args *a, char *path, size_t len) {
    const char *d = a->resume[0] ? a->resume : a->output;
    struct stat sb;
    if (stat(d, &sb) == 0 && S_ISREG(sb.st_mode)) {
        snprintf(path, len, "%s", d);
        return NULL;
    }
    snprintf(path, len, "%s/" CKPT_FILE, d);
    if (path_exists(path)) return NULL;
    snprintf(path, len, "%s/checkpoint/" CKPT_FILE, d);
    if (path_exists(path)) return NULL;
    return kn_error(KN_ERR_IO, "--resume %s: no checkpoint there (%s/checkpoint/%s; write one with --save-steps)", d, d,
                    CKPT_FILE);
}

/* Keeps the --log lines up to step (the checkpoint's), so the resumed run's lines follow them as
 * an uninterrupted run's would, and opens the log for appending. */
static kn_status *resume_log(train_run *r, int64_t step) {
    if (r->rank != 0) return NULL; /* rank 0 alone logs */
    const char *p = r->a.log;
    FILE *in = fopen(p, "r");
    char *kept = NULL;
    size_t klen = 0;
    FILE *out = open_memstream(&kept, &klen);
    if (!out) {
        if (in) fclose(in);
        return KN_OOM(0);
    }
    char *line = NULL;
    size_t cap = 0;
    while (in && getline(&line, &cap, in) > 0) {
        json_object *o = json_tokener_parse(line);
        if (o && pl_json_int(o, "step", INT64_MAX) <= step) fputs(line, out);
        json_object_put(o);
    }
    free(line);
    if (in) fclose(in);
    fclose(out);
    r->log = fopen(p, "w");
    bool ok = r->log && fwrite(kept, 1, klen, r->log) == klen && fflush(r->log) == 0;
    free(kept);
    return ok ? NULL : kn_error(KN_ERR_IO, "--log %s: cannot write: %s", p, strerror(errno));
}

/* Restores the trainer and the loop from a checkpoint: the run then continues at the step after
 * it as if it had never stopped (same batches, learning rates, Dropout masks and best-model
 * state). */
static kn_status *resume_run(train_run *r, train_pos *pos, int *epochs_run) {
    char path[4400];
    KN_TRY(resume_path(&r->a, path, sizeof path));
    char *extra = NULL;
    KN_TRY(kn_error_wrap(kn_trainer_checkpoint_load(r->t, path, &extra), "--resume %s: ", path));
    json_object *o = extra ? json_tokener_parse(extra) : NULL;
    free(extra);
    kn_status *st = NULL;
    if (!o || pl_json_int(o, "kiln_train", 0) != 1)
        st = kn_error(KN_ERR_INVALID_ARGUMENT, "--resume %s: a trainer checkpoint, but not one kiln train wrote", path);
    /* the position counts global batches: any world size resumes it whose ranks x --batch-size is
     * the checkpoint's global batch (older checkpoints: their batch_size, written by one process) */
    else if (pl_json_int(o, "n_train", -1) != r->train.n ||
             pl_json_int(o, "global_batch", pl_json_int(o, "batch_size", -1)) != (int64_t)r->a.batch_size * r->size)
        st = kn_error(KN_ERR_INVALID_ARGUMENT,
                      "--resume %s: the checkpoint was written for %lld training examples in global batches of %lld; "
                      "this run has %d in global batches of %lld (%d ranks x --batch-size %d; the saved position "
                      "would point at other examples)",
                      path, (long long)pl_json_int(o, "n_train", -1),
                      (long long)pl_json_int(o, "global_batch", pl_json_int(o, "batch_size", -1)), r->train.n,
                      (long long)r->a.batch_size * r->size, r->size, r->a.batch_size);
    json_object *eps = NULL;
    if (!st &&
        (!json_object_object_get_ex(o, "epochs", &eps) || !json_object_is_type(eps, json_type_array) ||
         (int)json_object_array_length(eps) > r->a.epochs))
        st = kn_error(KN_ERR_INVALID_ARGUMENT, "--resume %s: the checkpoint is past --epochs %d", path, r->a.epochs);
    if (!st) {
        pos->epoch = (int)pl_json_int(o, "epoch", 0);
        pos->batch = (int)pl_json_int(o, "batch", 0);
        pos->step = pl_json_int(o, "step", 0);
        pos->seed = ckpt_get_u64(o, "seed");
        pos->best = ckpt_get_num(o, "best", -INFINITY);
        pos->best_epoch = (int)pl_json_int(o, "best_epoch", 0);
        pos->best_loss = ckpt_get_num(o, "best_loss", INFINITY);
        pos->bad_epochs = (int)pl_json_int(o, "bad_epochs", 0);
        json_object *se = NULL;
        pos->stopped_early = json_object_object_get_ex(o, "stopped_early", &se) && json_object_get_boolean(se);
        *epochs_run = (int)pl_json_int(o, "epochs_run", 0);
        for (int e = 0; e < (int)json_object_array_length(eps); e++) {
            json_object *x = json_object_array_get_idx(eps, (size_t)e), *b = NULL;
            epoch_stats *es = &r->es[e];
            es->steps = (int)pl_json_int(x, "steps", 0);
            es->saved = json_object_object_get_ex(x, "saved", &b) && json_object_get_boolean(b);
            es->evaluated = json_object_object_get_ex(x, "evaluated", &b) && json_object_get_boolean(b);
            es->lsum = ckpt_get_num(x, "lsum", NAN);
            es->train_loss = ckpt_get_num(x, "train_loss", NAN);
            es->ev.n = (int)pl_json_int(x, "n", 0);
            es->ev.loss = ckpt_get_num(x, "eval_loss", NAN);
            es->ev.value = ckpt_get_num(x, "value", NAN);
            es->ev.accuracy = ckpt_get_num(x, "accuracy", NAN);
            es->ev.macro_f1 = ckpt_get_num(x, "macro_f1", NAN);
            es->ev.spearman = ckpt_get_num(x, "spearman", NAN);
            static const char *const metrics[] = {"spearman", "ranking_accuracy", "macro_f1"};
            const char *m = pl_json_str(x, "metric", "");
            for (int k = 0; k < 3; k++)
                if (!strcmp(m, metrics[k])) es->ev.metric = metrics[k];
        }
        kn_trainer_set_run_count(r->t, ckpt_get_u64(o, "runs"));
        r->ckpt_step = pos->step;
        fprintf(stderr, "kiln train: resuming from %s at step %lld (epoch %d, batch %d)\n", path, (long long)pos->step,
                pos->epoch + 1, pos->batch + 1);
    }
    json_object_put(o);
    if (!st && r->a.log) st = resume_log(r, pos->step);
    return st;
}

/* Opens a pipeline over the candidate file and evaluates d on it. */
static kn_status *evaluate_candidate(train_run *r, const kn_train_data *d, kn_td_eval *ev) {
    kn_pl_options po;
    kn_pl_options_init(&po);
    po.batch_size = r->a.batch_size;
    po.onnx_file = r->cand;
    po.session.num_threads = r->a.threads;
    po.warn = train_warn;
    kn_pipeline *ep = NULL;
    kn_status *st = kn_pipeline_open(r->a.output, &po, &ep);
    if (!st) st = kn_td_evaluate(ep, d, r->loss, r->a.batch_size, ev);
    kn_pipeline_free(ep);
    return st;
}

/* Exports the current weights to the candidate file, evaluates them (on --eval, else on the
 * first batch of the training data, only to see that they still give a finite loss), and
 * renames the candidate over model.onnx when it is the best so far. A model whose loss is no
 * longer finite is never saved. */
/* A step can leave the weights infinite while its loss, computed before the update, was finite:
 * checked before a weight is exported or checkpointed, so neither ever holds a diverged model. */
static kn_status *check_weights(const train_run *r, const train_pos *pos, const char *when) {
    for (int i = 0; i < kn_trainer_param_count(r->t); i++) {
        int nd;
        const int64_t *dims;
        float *w;
        const char *name = kn_trainer_param(r->t, i, &nd, &dims, &w);
        int64_t n = 1;
        for (int k = 0; k < nd; k++) n *= dims[k];
        for (int64_t k = 0; k < n; k++)
            if (!isfinite(w[k])) {
                char ck[4400] = "";
                if (r->ckpt_step >= 0)
                    snprintf(ck, sizeof ck, "; %s/checkpoint keeps step %lld's state (--resume with a lower --lr)",
                             r->a.output, (long long)r->ckpt_step);
                return kn_error(
                    KN_ERR_RUNTIME,
                    "training diverged: %s %lld (epoch %d) the weight '%s' holds %s (try a lower --lr); "
                    "%s%s",
                    when, (long long)pos->step, pos->epoch + 1, name, isnan(w[k]) ? "NaN" : "Inf",
                    pos->best_epoch ? "the output folder keeps the last good model" : "no good model was written", ck);
            }
    }
    return NULL;
}

/* A checkpoint must hold weights that still give a finite loss: one huge step can leave every
 * weight finite and the next loss NaN. The batch just trained runs forward once more with the
 * updated weights; that run does not count towards the Dropout masks' run counter. */
static kn_status *check_loss(train_run *r, const train_pos *pos, const int *idx, int m) {
    kn_td_batch b;
    KN_TRY(kn_td_make_batch(r->p, &r->train, idx, m, &b));
    uint64_t runs = kn_trainer_run_count(r->t);
    kn_named_tensor out = {.name = r->loss_name};
    kn_status *st = kn_trainer_forward(r->t, b.in, b.n_in, &out, 1);
    kn_trainer_set_run_count(r->t, runs);
    kn_td_batch_free(&b);
    KN_TRY(st);
    double l = out.dtype == KN_F32 && out.data ? ((const float *)out.data)[0] : NAN;
    kn_free(out.data);
    if (isfinite(l)) return NULL;
    char ck[4400] = "";
    if (r->ckpt_step >= 0)
        snprintf(ck, sizeof ck, "; %s/checkpoint keeps step %lld's state (--resume with a lower --lr)", r->a.output,
                 (long long)r->ckpt_step);
    return kn_error(KN_ERR_RUNTIME,
                    "training diverged: after step %lld (epoch %d) the loss on that step's batch is %s (try a lower "
                    "--lr); %s%s",
                    (long long)pos->step, pos->epoch + 1, isnan(l) ? "NaN" : "infinite",
                    pos->best_epoch ? "the output folder keeps the last good model" : "no good model was written", ck);
}

static kn_status *end_epoch(train_run *r, train_pos *pos, epoch_stats *es) {
    KN_TRY(check_weights(r, pos, "at the end of the epoch, after step"));
    KN_TRY(kn_trainer_export_onnx(r->t, r->model_path, r->cand));
    kn_train_data sample = r->train;
    if (sample.n > r->a.batch_size) sample.n = r->a.batch_size;
    kn_td_eval ev;
    kn_status *st = evaluate_candidate(r, r->a.eval ? &r->eval : &sample, &ev);
    if (!st && !isfinite(ev.loss))
        st = kn_error(KN_ERR_RUNTIME,
                      "training diverged: after epoch %d the model's loss on the %s is %s (try a lower --lr); %s",
                      pos->epoch + 1, r->a.eval ? "eval data" : "first training batch", isnan(ev.loss) ? "NaN" : "Inf",
                      pos->best_epoch ? "the output folder keeps the last good model" : "no good model was written");
    if (st) {
        drop_candidate(r);
        return kn_error_wrap(st, "epoch %d: ", pos->epoch + 1);
    }
    bool keep = true;
    if (r->a.eval) {
        es->ev = ev;
        es->evaluated = true;
        double v = isfinite(ev.value) ? ev.value : -INFINITY;
        keep = !pos->best_epoch || v > pos->best;
        if (keep) {
            pos->best = v;
            pos->best_epoch = pos->epoch + 1;
        }
        /* early stopping on the eval loss, as Hugot: an improvement must exceed the tolerance */
        if (ev.loss < pos->best_loss - r->a.tolerance) {
            pos->best_loss = ev.loss;
            pos->bad_epochs = 0;
        } else if (++pos->bad_epochs >= r->a.patience) {
            pos->stopped_early = true;
        }
        fprintf(stderr, "kiln train: epoch %d: train loss %.6g, eval loss %.6g, %s %.6g%s\n", pos->epoch + 1,
                es->train_loss, ev.loss, ev.metric, ev.value, keep ? " (best, saved)" : "");
    } else {
        pos->best_epoch = pos->epoch + 1;
        fprintf(stderr, "kiln train: epoch %d: train loss %.6g (saved)\n", pos->epoch + 1, es->train_loss);
    }
    if (keep) KN_TRY(promote_candidate(r));
    else drop_candidate(r);
    es->saved = keep;
    return NULL;
}

/* One global batch of m examples (idx): this rank's contiguous share of it (the shares in rank
 * order are the batch one process would take), its gradient weighted by its share so that the
 * average over the ranks is the whole batch's, and *loss the whole batch's loss (the shares'
 * losses weighted likewise, gathered from every rank). */
static kn_status *shard_step(train_run *r, const int *idx, int m, double *loss) {
    int lo = (int)((int64_t)m * r->rank / r->size), hi = (int)((int64_t)m * (r->rank + 1) / r->size);
    double l = 0;
    kn_status *st = NULL;
    if (hi > lo) {
        kn_td_batch b;
        KN_TRY(kn_td_make_batch(r->p, &r->train, idx + lo, hi - lo, &b));
        kn_trainer_set_grad_weight(r->t, r->size == 1 ? 1.0 : (double)(hi - lo) * r->size / m);
        st = kn_trainer_step(r->t, b.in, b.n_in, &l, NULL);
        kn_td_batch_free(&b);
    } else {
        st = kn_trainer_step_empty(r->t, NULL);
    }
    *loss = l;
    if (st || r->size == 1) return st;
    double mine = hi > lo ? l * (double)(hi - lo) / m : 0;
    KN_TRY(kn_comm_allgather(r->comm, &mine, sizeof mine, r->rank_loss));
    *loss = 0;
    for (int k = 0; k < r->size; k++) *loss += r->rank_loss[k];
    return NULL;
}

static kn_status *train_loop(train_run *r, train_pos *pos, int *epochs_run) {
    train_args *a = &r->a;
    int n = r->train.n, gb = a->batch_size * r->size, nb = (n + gb - 1) / gb;
    int *order = malloc(sizeof(int) * (size_t)n);
    if (!order) return KN_OOM(sizeof(int) * (size_t)n);
    bool bar = isatty(2) && r->rank == 0;
    kn_status *st = NULL;
    double busy = 0; /* seconds in batching and steps: throughput leaves evaluation out */
    int64_t samples = 0;
    for (; !st && pos->epoch < a->epochs; pos->epoch++, pos->batch = 0) {
        epoch_stats *es = &r->es[pos->epoch];
        epoch_order(order, n, pos->seed, pos->epoch, a->shuffle);
        for (; pos->batch < nb; pos->batch++) {
            if (a->max_steps > 0 && pos->step >= a->max_steps) break;
            int b0 = pos->batch * gb, m = n - b0 < gb ? n - b0 : gb;
            double t0 = now_s();
            double loss = 0;
            st = shard_step(r, order + b0, m, &loss);
            if (st && kn_comm_failed(r->comm)) break;
            /* a trainer that refuses a non-finite step itself still reports the loss */
            if (st && isfinite(loss)) break;
            pos->step = kn_trainer_steps(r->t) + (st ? 1 : 0);
            if (st || !isfinite(loss) || !isfinite(kn_trainer_grad_norm(r->t))) {
                kn_status_free(st);
                if (bar) fputs("\r\033[K", stderr);
                char ck[4400] = "";
                if (r->ckpt_step >= 0)
                    snprintf(ck, sizeof ck, "; %s/checkpoint keeps step %lld's state (--resume with a lower --lr)",
                             a->output, (long long)r->ckpt_step);
                st = kn_error(KN_ERR_RUNTIME,
                              "the loss became %s at step %lld (epoch %d, batch %d, first example from line %d): "
                              "training diverged "
                              "(try a lower --lr or --max-grad-norm); %s%s",
                              isnan(loss)          ? "NaN"
                                  : isfinite(loss) ? "finite but the gradients not"
                                                   : "infinite",
                              (long long)pos->step, pos->epoch + 1, pos->batch + 1, r->train.ex[order[b0]].line,
                              pos->best_epoch ? "the output folder keeps the last good model"
                                              : "no epoch finished, so no model was written",
                              ck);
                break;
            }
            samples += m;
            es->lsum += loss;
            es->steps++;
            busy += now_s() - t0;
            double sps = busy > 0 ? (double)samples / busy : 0;
            if (r->log && r->rank == 0) {
                fprintf(r->log,
                        "{\"step\": %lld, \"epoch\": %d, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, "
                        "\"samples_per_s\": %.4g}\n",
                        (long long)pos->step, pos->epoch + 1, loss, kn_optim_lr(&r->sched, pos->step - 1),
                        kn_trainer_grad_norm(r->t), sps);
                fflush(r->log);
            }
            progress(bar, pos->epoch, a->epochs, pos->batch + 1, nb, loss, sps);
            if (a->save_steps > 0 && pos->step % a->save_steps == 0) {
                pos->batch++; /* the position to continue from: the next batch */
                st = check_weights(r, pos, "after step");
                if (!st) st = check_loss(r, pos, order + b0, m);
                if (!st) st = save_checkpoint(r, pos, *epochs_run);
                pos->batch--;
                if (st) break;
            }
        }
        if (bar) fputs("\r\033[K", stderr);
        if (st) break;
        if (!es->steps) break; /* --max-steps reached at an epoch boundary */
        es->train_loss = es->lsum / es->steps;
        st = r->rank == 0 ? end_epoch(r, pos, es) : NULL;
        /* rank 0's verdict (best epoch, early stopping) everywhere, so every rank stops together */
        if (!st && r->size > 1) st = kn_comm_broadcast(r->comm, pos, sizeof *pos, 0);
        *epochs_run = pos->epoch + 1;
        if (st || pos->stopped_early || (a->max_steps > 0 && pos->step >= a->max_steps)) {
            if (!st && pos->stopped_early)
                fprintf(stderr,
                        "kiln train: early stopping: the eval loss did not improve by more than %g for %d epochs\n",
                        a->tolerance, a->patience);
            /* the position a final checkpoint records: after this epoch, or within it when
             * --max-steps ended it early (a resume finishes it) */
            if (pos->batch >= nb) {
                pos->epoch++;
                pos->batch = 0;
            }
            break;
        }
    }
    free(order);
    return st;
}

int kn_cmd_train(int argc, char **argv) {
    train_run r;
    memset(&r, 0, sizeof r);
    if (parse_args(argc, argv, &r.a) != 0) {
        train_usage();
        return 2;
    }
    kn_comm_options co;
    kn_comm_options_init(&co);
    co.timeout_s = r.a.comm_timeout;
    co.device = !strncmp(r.a.device, "cuda", 4); /* NCCL between the GPUs when built with it */
    co.backend = r.a.comm;
    kn_status *st = kn_comm_init(&co, &r.comm);
    if (st) return train_fail(st);
    r.rank = kn_comm_rank(r.comm);
    r.size = kn_comm_size(r.comm);
    if (!(r.rank_loss = calloc((size_t)r.size, sizeof *r.rank_loss))) st = KN_OOM(sizeof(double) * (size_t)r.size);
    if (!st) st = setup(&r);
    train_pos pos = {.seed = r.a.seed, .best = -INFINITY, .best_loss = INFINITY};
    int epochs_run = 0;
    if (!st && !(r.es = calloc((size_t)r.a.epochs, sizeof *r.es))) st = KN_OOM(sizeof *r.es);
    if (!st && r.a.resume) st = resume_run(&r, &pos, &epochs_run);
    if (!st && pos.stopped_early)
        fprintf(stderr, "kiln train: the checkpoint's run had stopped early; nothing to do\n");
    else if (!st) st = train_loop(&r, &pos, &epochs_run);
    /* the end state, so a later --resume with more --epochs or --max-steps continues it */
    if (!st && r.a.save_steps > 0 && r.rank == 0) st = save_checkpoint(&r, &pos, epochs_run);
    if (r.es && r.t && r.rank == 0) {
        /* statistics.json records the epochs that ran, also when a later one failed */
        kn_status *s2 = write_statistics(r.a.output, &r.a, r.es, epochs_run, &pos, r.train.skipped, r.eval.skipped,
                                         st                      ? "failed"
                                             : pos.stopped_early ? "early_stopped"
                                                                 : "completed");
        if (s2 && !st) st = s2;
        else kn_status_free(s2);
    }
    /* the data-parallel summary: world size, buckets, the all-reduces the backward overlapped and
     * the device trainer's wait for the communication after the backward */
    if (!st && r.rank == 0 && r.size > 1)
        fprintf(stderr,
                "kiln train: data parallel: %d ranks (%s), %d buckets, %lld bucket all-reduces started during the "
                "backward (overlap %s), %.3f s waiting on communication after the backward\n",
                r.size, kn_comm_backend(r.comm), kn_trainer_buckets(r.t), (long long)kn_trainer_overlapped_buckets(r.t),
                r.a.no_overlap ? "off" : "on", kn_trainer_comm_wait_seconds(r.t));
    if (!st && r.rank == 0) {
        fprintf(stderr, "kiln train: %lld steps; %s written (epoch %d%s)%s\n", (long long)pos.step, r.final,
                pos.best_epoch, r.a.eval ? ", the best by the eval metric" : "",
                r.train.skipped + r.eval.skipped ? "" : "");
        if (r.train.skipped || r.eval.skipped)
            fprintf(stderr, "kiln train: skipped %d malformed training lines and %d eval lines\n", r.train.skipped,
                    r.eval.skipped);
    }
    if (r.log) fclose(r.log);
    if (r.cand[0] && r.rank == 0) {
        drop_candidate(&r);
        char cdir[4300];
        snprintf(cdir, sizeof cdir, "%s/.candidate", r.a.output);
        rmdir(cdir);
    }
    kn_trainer_free(r.t);
    free(r.loss_name);
    kn_pipeline_free(r.p);
    kn_train_data_free(&r.train);
    kn_train_data_free(&r.eval);
    free(r.es);
    free(r.rank_loss);
    if (st && r.size > 1) {
        /* the message first, then the whole job ends: the other ranks would wait for this one */
        fprintf(stderr, "kiln train: rank %d of %d: error: %s\n", r.rank, r.size, kn_status_message(st));
        fflush(stderr);
        kn_comm_abort(r.comm, 1);
    }
    kn_comm_free(r.comm);
    return st ? train_fail(st) : 0;
}
