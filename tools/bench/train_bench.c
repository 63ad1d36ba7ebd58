/* kiln's side of tools/bench/train_bench.py: fine-tunes a sentence encoder ONNX model with
 * CosineSimilarityLoss over mean pooling (the graph's "last_hidden_state" pooled over
 * "attention_mask", the batch split into anchor and positive halves), AdamW, and times each
 * optimiser step on one fixed batch read from raw files. Prints one line per timed step
 * ("step MS") after the warm-up steps, then "loss X" of the last step; the caller reads the
 * process's peak RSS itself.
 *
 *   train_bench MODEL THREADS WARMUP STEPS FUSE TRAINABLE ROWS SEQ IDS MASK TYPES SCORES
 *
 * FUSE 1 runs kn_train_fuse before the trainer is built; TRAINABLE as kn_trainer_options ("*":
 * every float32 initializer); ROWS sentences (2 x pairs) of SEQ tokens; IDS, MASK, TYPES int64
 * [ROWS, SEQ] and SCORES float32 [ROWS / 2], raw little-endian. */
#include "autograd/loss.h"
#include "autograd/train_fuse.h"
#include "autograd/trainer.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int fail(kn_status *st, const char *what) {
    fprintf(stderr, "train_bench: %s: %s\n", what, st ? kn_status_message(st) : "failed");
    kn_status_free(st);
    return 1;
}

static void *read_raw(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *p = malloc(want ? want : 1);
    if (p && fread(p, 1, want, f) != want) {
        free(p);
        p = NULL;
    }
    fclose(f);
    return p;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 13) {
        fprintf(stderr,
                "usage: train_bench MODEL THREADS WARMUP STEPS FUSE TRAINABLE ROWS SEQ IDS MASK TYPES SCORES\n");
        return 2;
    }
    int threads = atoi(argv[2]), warmup = atoi(argv[3]), steps = atoi(argv[4]), fuse = atoi(argv[5]);
    const char *trainable = strcmp(argv[6], "*") ? argv[6] : NULL;
    int64_t rows = atoll(argv[7]), seq = atoll(argv[8]);
    kn_model *m = NULL;
    kn_status *st = kn_train_load(argv[1], &m);
    if (st) return fail(st, "load");
    if (fuse) {
        kn_fuse_counts fc;
        st = kn_train_fuse(m->graph, trainable, &fc);
        if (st) return fail(st, "fuse");
        fprintf(stderr, "train_bench: fused %d attention, %d GELU, %d skip-LayerNorm\n", fc.attention, fc.gelu,
                fc.skip_layernorm);
    }
    int out = kn_graph_find_value(m->graph, "last_hidden_state"),
        mask = kn_graph_find_value(m->graph, "attention_mask");
    if (out < 0 || mask < 0) return fail(NULL, "the model has no last_hidden_state / attention_mask");
    int64_t d[1] = {-1};
    int scores, pooled, a, b, loss;
    st = kn_loss_add_input(m->graph, "scores", KN_F32, 1, d, &scores);
    if (!st) st = kn_loss_mean_pool(m->graph, out, mask, &pooled);
    if (!st) st = kn_loss_split_halves(m->graph, pooled, &a, &b);
    if (!st) st = kn_loss_cosine_similarity(m->graph, a, b, scores, &loss);
    if (st) return fail(st, "loss");
    kn_trainer_options o;
    kn_trainer_options_init(&o);
    o.num_threads = threads;
    o.trainable = trainable;
    o.optim.kind = KN_OPTIM_ADAMW;
    o.optim.lr = 2e-5;
    o.optim.weight_decay = 0.01;
    kn_trainer *t = NULL;
    st = kn_trainer_create(m, loss, &o, &t);
    if (st) return fail(st, "trainer");
    size_t ni = sizeof(int64_t) * (size_t)(rows * seq);
    kn_named_tensor batch[4] = {
        {"input_ids", KN_I64, 2, {rows, seq}, read_raw(argv[9], ni), ni},
        {"attention_mask", KN_I64, 2, {rows, seq}, read_raw(argv[10], ni), ni},
        {"token_type_ids", KN_I64, 2, {rows, seq}, read_raw(argv[11], ni), ni},
        {"scores",
         KN_F32,
         1,
         {rows / 2},
         read_raw(argv[12], sizeof(float) * (size_t)(rows / 2)),
         sizeof(float) * (size_t)(rows / 2)},
    };
    for (int i = 0; i < 4; i++)
        if (!batch[i].data) return fail(NULL, "cannot read a batch file");
    double l = 0;
    for (int s = 0; s < warmup + steps; s++) {
        double t0 = now_ms();
        st = kn_trainer_step(t, batch, 4, &l, NULL);
        if (st) return fail(st, "step");
        if (s >= warmup) printf("step %.3f\n", now_ms() - t0);
        fflush(stdout);
    }
    printf("loss %.9g\n", l);
    for (int i = 0; i < 4; i++) free(batch[i].data);
    kn_trainer_free(t);
    return 0;
}
