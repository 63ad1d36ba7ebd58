/* Test driver for the training parity checks (tests/train_parity.py): trains an ONNX model with
 * kiln's trainer as a plan file says (optimiser, schedule, clipping, loss, batches as raw files)
 * and writes the loss of every step, the final parameters and the exported ONNX model, for the
 * script to compare with PyTorch doing the same.
 *
 * Plan lines:  model PATH | trainable PATTERNS | optim adamw|adam|sgd LR WD [MOMENTUM NESTEROV]
 *              | schedule constant|linear|cosine WARMUP TOTAL | clip MAXNORM | accumulate N
 *              | loss ce OUTPUT IGNORE [LABEL_RANK] | loss cosine|cosent|mnrl OUTPUT MASK_INPUT
 *              | batch NAME f32|i64 NDIM DIMS... FILE  (an input of the next step) | step
 *              | no_decay PATTERNS | out DIR | export PATH
 *              | head mean|cls TOKENS MASK IN_FEATURES CLASSES SEED (a linear head over pooled
 *                TOKENS, value and graph output "logits", before the loss)
 *              | seed N | save CKPT (a checkpoint after the steps so far, extra {"step":K})
 *              | resume CKPT (loaded before the next step; the losses file then holds only the
 *                steps run here) | export_threshold BYTES (external data above it)
 *              | export_fsize BYTES (RLIMIT_FSIZE while exporting: a full disk; a failed
 *                export exits 3) | eval OUTPUT FILE (kn_trainer_forward on the batch lines
 *                before it, OUTPUT written as raw float32)
 *              | fuse  (kn_train_fuse before the loss: fused attention and GELU; counts to stderr)
 *              | recompute layers|PATTERNS  (activation recomputation, kn_trainer_options.recompute)
 * The planner's peak bytes of a step go to stderr at the end ("train_driver: peak N bytes").
 * The losses add inputs "labels" (ce: int64, any shape) and "scores" (cosine, cosent: float [B]);
 * the pair losses mean-pool OUTPUT [2B, T, D] over MASK_INPUT and split the batch in halves
 * (anchors, positives for mnrl, whose scale is 20 as sentence-transformers' default).
 * KN_TRAIN_VERBOSE=1 prints each step's loss and gradient norm to stderr. */
#include "autograd/checkpoint.h"
#include "autograd/head.h"
#include "autograd/loss.h"
#include "autograd/train_fuse.h"
#include "autograd/trainer.h"
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>

#define MAX_BATCH 8

static int fail(kn_status *st, const char *what) {
    fprintf(stderr, "train_driver: %s: %s\n", what, st ? kn_status_message(st) : "failed");
    kn_status_free(st);
    return 1;
}

static void *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(n > 0 ? (size_t)n : 1);
    if (p && n > 0 && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return p;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: train_driver PLAN\n");
        return 2;
    }
    FILE *plan = fopen(argv[1], "r");
    if (!plan) return fail(NULL, "cannot open the plan");
    char line[4096], model_path[1024] = "", out_dir[1024] = ".", export_path[1024] = "", trainable[1024] = "";
    char loss_kind[16] = "", loss_out[256] = "", loss_arg[256] = "", no_decay[1024] = "";
    char head_pool[16] = "", head_tokens[256] = "", head_mask[256] = "", recompute[1024] = "";
    long long head_in = 0, head_classes = 0, export_threshold = 0, export_fsize = 0;
    unsigned long long head_seed = 0;
    int label_rank = 1;
    kn_trainer_options o;
    kn_trainer_options_init(&o);
    o.num_threads = 2;
    kn_trainer *t = NULL;
    kn_named_tensor batch[MAX_BATCH];
    void *bufs[MAX_BATCH];
    int n_batch = 0, step = 0;
    bool fuse = false;
    FILE *losses = NULL;
    while (fgets(line, sizeof line, plan)) {
        char kw[32] = "";
        if (sscanf(line, "%31s", kw) != 1) continue;
        const char *rest = line + strlen(kw);
        if (!strcmp(kw, "model")) sscanf(rest, "%1023s", model_path);
        else if (!strcmp(kw, "trainable")) sscanf(rest, "%1023s", trainable);
        else if (!strcmp(kw, "out")) sscanf(rest, "%1023s", out_dir);
        else if (!strcmp(kw, "export")) sscanf(rest, "%1023s", export_path);
        else if (!strcmp(kw, "fuse")) fuse = true;
        else if (!strcmp(kw, "recompute") && sscanf(rest, "%1023s", recompute) == 1) o.recompute = recompute;
        else if (!strcmp(kw, "no_decay") && sscanf(rest, "%1023s", no_decay) == 1) o.optim.no_decay = no_decay;
        else if (!strcmp(kw, "clip")) sscanf(rest, "%lf", &o.optim.max_grad_norm);
        else if (!strcmp(kw, "accumulate")) sscanf(rest, "%d", &o.optim.accumulate);
        else if (!strcmp(kw, "loss")) sscanf(rest, "%15s %255s %255s %d", loss_kind, loss_out, loss_arg, &label_rank);
        else if (!strcmp(kw, "head"))
            sscanf(rest, "%15s %255s %255s %lld %lld %llu", head_pool, head_tokens, head_mask, &head_in, &head_classes,
                   &head_seed);
        else if (!strcmp(kw, "seed")) sscanf(rest, "%llu", (unsigned long long *)&o.seed);
        else if (!strcmp(kw, "export_threshold")) sscanf(rest, "%lld", &export_threshold);
        else if (!strcmp(kw, "export_fsize")) sscanf(rest, "%lld", &export_fsize);
        else if (!strcmp(kw, "optim")) {
            char k[16];
            int nest = 0;
            sscanf(rest, "%15s %lf %lf %lf %d", k, &o.optim.lr, &o.optim.weight_decay, &o.optim.momentum, &nest);
            o.optim.kind = !strcmp(k, "sgd") ? KN_OPTIM_SGD : !strcmp(k, "adam") ? KN_OPTIM_ADAM : KN_OPTIM_ADAMW;
            o.optim.nesterov = nest != 0;
        } else if (!strcmp(kw, "schedule")) {
            char k[16];
            long long w = 0, tot = 0;
            sscanf(rest, "%15s %lld %lld", k, &w, &tot);
            o.optim.schedule = !strcmp(k, "linear") ? KN_SCHED_LINEAR
                : !strcmp(k, "cosine")              ? KN_SCHED_COSINE
                                                    : KN_SCHED_CONSTANT;
            o.optim.warmup_steps = w;
            o.optim.total_steps = tot;
        } else if (!strcmp(kw, "batch")) {
            if (n_batch == MAX_BATCH) return fail(NULL, "too many batch inputs");
            kn_named_tensor *x = &batch[n_batch];
            memset(x, 0, sizeof *x);
            char name[256], dt[8], file[1024];
            int off = 0;
            if (sscanf(rest, "%255s %7s %d%n", name, dt, &x->ndim, &off) != 3) return fail(NULL, line);
            rest += off;
            for (int d = 0; d < x->ndim; d++) {
                long long v;
                sscanf(rest, "%lld%n", &v, &off);
                rest += off;
                x->dims[d] = v;
            }
            sscanf(rest, "%1023s", file);
            x->name = strdup(name);
            x->dtype = !strcmp(dt, "i64") ? KN_I64 : KN_F32;
            size_t len;
            x->data = bufs[n_batch] = read_file(file, &len);
            if (!x->data) return fail(NULL, file);
            x->capacity = len;
            n_batch++;
        } else if (!strcmp(kw, "save")) {
            char ck[1024], extra[64];
            sscanf(rest, "%1023s", ck);
            snprintf(extra, sizeof extra, "{\"step\":%d}", step);
            if (!t) return fail(NULL, "save before the first step");
            kn_status *st = kn_trainer_checkpoint_save(t, ck, extra);
            if (st) return fail(st, "save");
        } else if (!strcmp(kw, "step") || !strcmp(kw, "resume") || !strcmp(kw, "eval")) {
            if (!t) {
                kn_model *m;
                kn_status *st = kn_train_load(model_path, &m);
                if (st) return fail(st, "load");
                if (head_pool[0]) {
                    int tok = kn_graph_find_value(m->graph, head_tokens), pooled = -1, logits = -1;
                    if (!strcmp(head_pool, "cls")) st = kn_head_cls_pool(m->graph, tok, &pooled);
                    else st = kn_head_mean_pool(m->graph, tok, kn_graph_find_value(m->graph, head_mask), &pooled);
                    if (!st)
                        st = kn_head_linear(m->graph, pooled, head_in, head_classes, head_seed, "classifier", "logits",
                                            &logits);
                    if (!st) st = kn_head_output(m->graph, logits);
                    if (st) return fail(st, "head");
                }
                if (fuse) {
                    kn_fuse_counts fc;
                    st = kn_train_fuse(m->graph, trainable[0] && strcmp(trainable, "*") ? trainable : NULL, &fc);
                    if (st) return fail(st, "fuse");
                    fprintf(stderr, "train_driver: fused %d attention, %d GELU, %d skip-LayerNorm\n", fc.attention,
                            fc.gelu, fc.skip_layernorm);
                }
                int out = kn_graph_find_value(m->graph, loss_out), loss = -1, v;
                if (out < 0) return fail(NULL, "no such loss input value");
                if (!strcmp(loss_kind, "ce")) {
                    int64_t d[2] = {-1, -1};
                    st = kn_loss_add_input(m->graph, "labels", KN_I64, label_rank, d, &v);
                    if (!st) st = kn_loss_cross_entropy(m->graph, out, v, atoll(loss_arg), &loss);
                } else { /* cosine, cosent, mnrl: pairs over mean pooling */
                    int64_t d[1] = {-1};
                    int pooled, a, b, mask = kn_graph_find_value(m->graph, loss_arg);
                    bool mnrl = !strcmp(loss_kind, "mnrl");
                    st = mnrl ? NULL : kn_loss_add_input(m->graph, "scores", KN_F32, 1, d, &v);
                    if (!st) st = kn_loss_mean_pool(m->graph, out, mask, &pooled);
                    if (!st) st = kn_loss_split_halves(m->graph, pooled, &a, &b);
                    if (!st && mnrl) st = kn_loss_multiple_negatives_ranking(m->graph, a, b, 20.0, &loss);
                    else if (!st && !strcmp(loss_kind, "cosent")) st = kn_loss_cosent(m->graph, a, b, v, 20.0, &loss);
                    else if (!st) st = kn_loss_cosine_similarity(m->graph, a, b, v, &loss);
                }
                if (st) return fail(st, "loss");
                o.trainable = trainable[0] && strcmp(trainable, "*") ? trainable : NULL;
                st = kn_trainer_create(m, loss, &o, &t);
                if (st) return fail(st, "trainer");
                char path[1100];
                snprintf(path, sizeof path, "%s/losses.txt", out_dir);
                losses = fopen(path, "w");
                if (!losses) return fail(NULL, path);
            }
            if (!strcmp(kw, "resume")) {
                char ck[1024], *extra = NULL;
                sscanf(rest, "%1023s", ck);
                kn_status *st = kn_trainer_checkpoint_load(t, ck, &extra);
                if (st) return fail(st, "resume");
                if (!extra || sscanf(extra, "{\"step\":%d}", &step) != 1) return fail(NULL, "resume: no step in extra");
                free(extra);
                continue;
            }
            if (!strcmp(kw, "eval")) {
                char name[256], file[1024];
                sscanf(rest, "%255s %1023s", name, file);
                kn_named_tensor y = {.name = name};
                kn_status *st = kn_trainer_forward(t, batch, n_batch, &y, 1);
                if (st) return fail(st, "eval");
                int64_t n = 1;
                for (int d = 0; d < y.ndim; d++) n *= y.dims[d];
                FILE *f = fopen(file, "wb");
                if (!f || y.dtype != KN_F32 || fwrite(y.data, sizeof(float), (size_t)n, f) != (size_t)n)
                    return fail(NULL, file);
                fclose(f);
                kn_free(y.data);
                for (int i = 0; i < n_batch; i++) {
                    free((void *)batch[i].name);
                    free(bufs[i]);
                }
                n_batch = 0;
                continue;
            }
            double l;
            kn_status *st = kn_trainer_step(t, batch, n_batch, &l, NULL);
            if (st) return fail(st, "step");
            fprintf(losses, "%.9g\n", l);
            if (getenv("KN_TRAIN_VERBOSE"))
                fprintf(stderr, "step %d loss %.9g grad norm %.9g\n", step, l, kn_trainer_grad_norm(t));
            for (int i = 0; i < n_batch; i++) {
                free((void *)batch[i].name);
                free(bufs[i]);
            }
            n_batch = 0;
            step++;
        }
    }
    fclose(plan);
    if (!t) return fail(NULL, "the plan has no step");
    fclose(losses);
    fprintf(stderr, "train_driver: peak %zu bytes\n", kn_trainer_peak_bytes(t));
    char path[1100];
    snprintf(path, sizeof path, "%s/params.txt", out_dir);
    FILE *idx = fopen(path, "w");
    if (!idx) return fail(NULL, path);
    for (int i = 0; i < kn_trainer_param_count(t); i++) {
        int nd;
        const int64_t *dims;
        float *w;
        const char *name = kn_trainer_param(t, i, &nd, &dims, &w);
        int64_t n = 1;
        for (int d = 0; d < nd; d++) n *= dims[d];
        snprintf(path, sizeof path, "%s/p%d.bin", out_dir, i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(w, sizeof(float), (size_t)n, f) != (size_t)n) return fail(NULL, path);
        fclose(f);
        fprintf(idx, "%s %lld p%d.bin\n", name, (long long)n, i);
    }
    fclose(idx);
    if (export_path[0]) {
        if (export_fsize > 0) { /* a disk that fills up: writes past the limit fail with EFBIG */
            signal(SIGXFSZ, SIG_IGN);
            struct rlimit rl = {(rlim_t)export_fsize, (rlim_t)export_fsize};
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0) return fail(NULL, "setrlimit");
        }
        kn_trainer_export_options eo = {.external_threshold = export_threshold};
        kn_status *st = kn_trainer_export_onnx_ex(t, model_path, export_path, &eo);
        if (st) {
            fail(st, "export");
            return 3;
        }
    }
    kn_trainer_free(t);
    printf("trained %d steps\n", step);
    return 0;
}
