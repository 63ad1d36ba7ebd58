/* The trainer on the CUDA backend (kn_trainer_options.device = KN_DEVICE_CUDA) against the CPU
 * trainer, step by step: the MLP of train.parity_mlp (AdamW, gradient accumulation over 2
 * micro-batches, clipping) and, with argv (model.onnx token_output mask_input), the real MiniLM
 * that train.parity_minilm writes (AdamW, CosineSimilarityLoss over mean pooling).
 * Checked: every micro-batch's loss within 1e-5 relative of the CPU's, and the final weights
 * within the bound the gradients' agreement allows (see weights_close); a checkpoint saved by the
 * device trainer, loaded into a CPU trainer, gives the device's weights bit for bit, and the two
 * then take the same next step; an exported ONNX file holds the device weights bit for bit.
 * Mixed precision (MLP): float16 and bfloat16 forward/backward on float32 masters with a dynamic
 * loss scale: float16's first step overflows at the default scale 65536 (the loss gradient itself
 * does not fit), so it is skipped and the scale halved; the loss curves then stay within 2% (fp16)
 * and 5% (bf16) of float32's. With a fourth argument fp16|bf16, MiniLM in that precision: each
 * update's loss within 2% (fp16) / 5% (bf16) of the CPU float32 trainer's on the same batch.
 * With argv[1] "amp": per-op autocast (options.autocast) in fp16 and bf16 against float32's loss
 * curve, and a run checkpointed mid-way with its dynamic loss scale and resumed in a fresh trainer
 * against the uninterrupted run (losses, skipped steps, scale and weights bit for bit), whole-graph
 * fp16 and autocast.
 * With the argument "cnn": train.parity_cnn's CNN (Conv, BatchNormalization in training mode,
 * MaxPool, a grouped strided Conv, GlobalAveragePool) with SGD and momentum, step by step.
 * Exit 77 where there is no CUDA device. */
#include "autograd/checkpoint.h"
#include "autograd/loss.h"
#include "autograd/trainer.h"
#include "graph/model.h"
#include "graph/passes.h"
#include "runtime/core/dtype.h"
#include "runtime/executor.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fails;
#define CHECK(c, ...) \
    do { \
        if (!(c)) { \
            printf("FAIL: " __VA_ARGS__); \
            printf("\n"); \
            fails++; \
        } \
    } while (0)

static void die(kn_status *st, const char *what) {
    if (!st) return;
    printf("FAIL %s: %s\n", what, kn_status_message(st));
    exit(1);
}

static uint32_t rs;
static double urand(double lo, double hi) {
    rs = rs * 1103515245u + 12345u;
    return lo + (hi - lo) * (double)((rs >> 8) & 0xffffff) / 16777216.0;
}

/* ---- the MLP of train.parity_mlp: 16 -> 32 (Relu) -> 32 (Tanh) -> 5, cross-entropy ---- */
static void add_const(kn_graph *g, const char *name, int nd, const int64_t *d, double scale) {
    int v = kn_graph_add_value(g, name);
    kn_tensor *t = NULL;
    die(kn_tensor_new(KN_F32, nd, d, &t), "tensor");
    for (int64_t i = 0; i < kn_numel(t); i++) ((float *)t->data)[i] = (float)urand(-scale, scale);
    g->values[v].constant = t;
    g->values[v].type.dtype = KN_F32;
    kn_tensor_set_shape(&g->values[v].type, nd, d);
}
static void add_gemm(kn_graph *g, const char *a, const char *w, const char *b, const char *out) {
    int in[3] = {kn_graph_find_value(g, a), kn_graph_find_value(g, w), kn_graph_find_value(g, b)};
    int o = kn_graph_add_value(g, out);
    kn_attr *at = calloc(1, sizeof *at);
    at->name = strdup("transB");
    at->type = KN_ATTR_INT;
    at->i = 1;
    if (kn_graph_add_node(g, out, "Gemm", "", in, 3, &o, 1, at, 1) < 0) die(KN_OOM(0), "node");
}
static void add_unary(kn_graph *g, const char *op, const char *a, const char *out) {
    int in = kn_graph_find_value(g, a), o = kn_graph_add_value(g, out);
    if (kn_graph_add_node(g, out, op, "", &in, 1, &o, 1, NULL, 0) < 0) die(KN_OOM(0), "node");
}

static kn_model *build_mlp(int *loss) {
    rs = 12345u; /* every call builds the same weights */
    kn_graph *g = kn_graph_new("mlp");
    g->opsets[0] = 17;
    g->opset_domains[0] = strdup("");
    g->n_opsets = 1;
    int x, lab;
    die(kn_loss_add_input(g, "x", KN_F32, 2, (int64_t[]){6, 16}, &x), "x");
    die(kn_loss_add_input(g, "labels", KN_I64, 1, (int64_t[]){6}, &lab), "labels");
    add_const(g, "l0.weight", 2, (int64_t[]){32, 16}, 0.25);
    add_const(g, "l0.bias", 1, (int64_t[]){32}, 0.25);
    add_const(g, "l1.weight", 2, (int64_t[]){32, 32}, 0.18);
    add_const(g, "l1.bias", 1, (int64_t[]){32}, 0.18);
    add_const(g, "l2.weight", 2, (int64_t[]){5, 32}, 0.18);
    add_const(g, "l2.bias", 1, (int64_t[]){5}, 0.18);
    add_gemm(g, "x", "l0.weight", "l0.bias", "g0");
    add_unary(g, "Relu", "g0", "h0");
    add_gemm(g, "h0", "l1.weight", "l1.bias", "g1");
    add_unary(g, "Tanh", "g1", "h1");
    add_gemm(g, "h1", "l2.weight", "l2.bias", "logits");
    die(kn_graph_resolve_ops(g), "resolve");
    die(kn_loss_cross_entropy(g, kn_graph_find_value(g, "logits"), lab, -100, loss), "loss");
    kn_model *m = calloc(1, sizeof *m);
    m->graph = g;
    return m;
}

/* micro-batch k of the MLP: fixed per k, so runs that skip steps can be fed the same data */
static float mlp_x[6 * 16];
static int64_t mlp_lab[6];
static kn_named_tensor mlp_batch[2];
static void mlp_feed(int k) {
    rs = 777u + 31u * (uint32_t)k;
    for (int i = 0; i < 6 * 16; i++) mlp_x[i] = (float)urand(-2, 2);
    for (int i = 0; i < 6; i++) mlp_lab[i] = i == 2 ? -100 : (int64_t)(urand(0, 5)) % 5;
    mlp_batch[0] = (kn_named_tensor){
        .name = "x", .dtype = KN_F32, .ndim = 2, .dims = {6, 16}, .data = mlp_x, .capacity = sizeof mlp_x};
    mlp_batch[1] = (kn_named_tensor){
        .name = "labels", .dtype = KN_I64, .ndim = 1, .dims = {6}, .data = mlp_lab, .capacity = sizeof mlp_lab};
}

static kn_trainer_options opts(kn_device_kind dev, kn_precision prec, int accumulate) {
    kn_trainer_options o;
    kn_trainer_options_init(&o);
    o.optim.kind = KN_OPTIM_ADAMW;
    o.optim.lr = 1e-2;
    o.optim.weight_decay = 0.01;
    o.optim.max_grad_norm = 1.0;
    o.optim.accumulate = accumulate;
    o.device = dev;
    o.precision = prec;
    o.seed = 5;
    return o;
}

/* The final weights: max |dev - cpu| per tensor. The gradients agree to ~1e-6 relative (the
 * device sums in other orders); AdamW's step m/(sqrt(v)+eps) is scale-free, so a gradient that is
 * zero in exact arithmetic (rounding noise of either sign on each side) may move a weight by up to
 * lr per step in opposite directions: the bound is 2 * lr * steps for such tensors, and 1e-4 for
 * the others (the step's relative change times lr * steps, with margin). */
static double weights_close(const char *what, kn_trainer *a, kn_trainer *b, double lr, int64_t steps, int *n_loose) {
    double worst = 0;
    *n_loose = 0;
    for (int i = 0; i < kn_trainer_param_count(a); i++) {
        int nd;
        const int64_t *dims;
        float *wa, *wb;
        const char *na = kn_trainer_param(a, i, &nd, &dims, &wa);
        const char *nb = kn_trainer_param(b, i, NULL, NULL, &wb);
        CHECK(na && nb && !strcmp(na, nb), "%s: parameter %d named %s / %s", what, i, na ? na : "?", nb ? nb : "?");
        int64_t n = 1;
        for (int d = 0; d < nd; d++) n *= dims[d];
        double md = 0;
        for (int64_t k = 0; k < n; k++) md = fmax(md, fabs((double)wa[k] - (double)wb[k]));
        if (md > 1e-4) (*n_loose)++;
        CHECK(md <= 2 * lr * (double)steps + 1e-6, "%s: %s differs by %g (bound %g)", what, na, md,
              2 * lr * (double)steps);
        worst = fmax(worst, md);
    }
    return worst;
}

static int64_t param_numel(kn_trainer *t, int i) {
    int nd;
    const int64_t *dims;
    kn_trainer_param(t, i, &nd, &dims, NULL);
    int64_t n = 1;
    for (int d = 0; d < nd; d++) n *= dims[d];
    return n;
}

static void test_mlp_fp32(const char *dir) {
    int lc, lg;
    kn_trainer *tc = NULL, *tg = NULL;
    kn_trainer_options oc = opts(KN_DEVICE_CPU, KN_PRECISION_FP32, 2), og = opts(KN_DEVICE_CUDA, KN_PRECISION_FP32, 2);
    kn_model *m_lc = build_mlp(&lc);
    die(kn_trainer_create(m_lc, lc, &oc, &tc), "cpu trainer");
    kn_model *m_lg = build_mlp(&lg);
    die(kn_trainer_create(m_lg, lg, &og, &tg), "cuda trainer");
    double worst_loss = 0;
    for (int k = 0; k < 8; k++) {
        double l1 = 0, l2 = 0;
        bool u1 = false, u2 = false;
        mlp_feed(k);
        die(kn_trainer_step(tc, mlp_batch, 2, &l1, &u1), "cpu step");
        die(kn_trainer_step(tg, mlp_batch, 2, &l2, &u2), "cuda step");
        double rel = fabs(l1 - l2) / fabs(l1);
        worst_loss = fmax(worst_loss, rel);
        CHECK(rel <= 1e-5 && u1 == u2, "mlp micro-batch %d: loss cpu %.9g cuda %.9g, updated %d/%d", k, l1, l2, u1, u2);
        CHECK(fabs(kn_trainer_grad_norm(tc) - kn_trainer_grad_norm(tg)) <= 1e-5 * kn_trainer_grad_norm(tc),
              "mlp micro-batch %d: gradient norm cpu %.9g cuda %.9g", k, kn_trainer_grad_norm(tc),
              kn_trainer_grad_norm(tg));
    }
    CHECK(kn_trainer_steps(tg) == 4, "mlp: %lld steps", (long long)kn_trainer_steps(tg));
    int loose;
    double ww = weights_close("mlp", tc, tg, 1e-2, 4, &loose);
    CHECK(loose == 0, "mlp: %d tensors beyond 1e-4", loose);
    printf("mlp fp32: 8 micro-batches, 4 AdamW steps: max loss rel diff %.3g, max weight diff %.3g\n", worst_loss, ww);

    /* a checkpoint mid-accumulation (one pending micro-batch) from the device, into a CPU trainer */
    mlp_feed(8);
    die(kn_trainer_step(tg, mlp_batch, 2, NULL, NULL), "cuda step");
    die(kn_trainer_step(tc, mlp_batch, 2, NULL, NULL), "cpu step");
    char path[1024];
    snprintf(path, sizeof path, "%s/mlp_device.ckpt", dir);
    die(kn_trainer_checkpoint_save(tg, path, NULL), "save");
    int l3;
    kn_trainer *tr = NULL;
    kn_model *m_l3 = build_mlp(&l3);
    die(kn_trainer_create(m_l3, l3, &oc, &tr), "resumed trainer");
    die(kn_trainer_checkpoint_load(tr, path, NULL), "load");
    for (int i = 0; i < kn_trainer_param_count(tg); i++) {
        float *wa, *wb;
        kn_trainer_param(tg, i, NULL, NULL, &wa);
        const char *n = kn_trainer_param(tr, i, NULL, NULL, &wb);
        CHECK(!memcmp(wa, wb, sizeof(float) * (size_t)param_numel(tg, i)),
              "checkpoint: %s differs from the device trainer's", n);
    }
    /* the next micro-batch completes the step on both: the pending gradients and moments came along */
    mlp_feed(9);
    double la = 0, lb = 0;
    bool ua = false, ub = false;
    die(kn_trainer_step(tg, mlp_batch, 2, &la, &ua), "cuda step");
    die(kn_trainer_step(tr, mlp_batch, 2, &lb, &ub), "resumed step");
    CHECK(ua && ub && la == lb, "after the checkpoint: loss cuda %.9g resumed cpu %.9g", la, lb);
    weights_close("mlp after resume", tr, tg, 1e-2, 1, &loose);
    CHECK(loose == 0, "after resume: %d tensors beyond 1e-4", loose);
    /* and the other way: a host write through kn_trainer_param reaches the device */
    float *w0;
    kn_trainer_param(tg, 5, NULL, NULL, &w0);
    w0[0] += 1.0f;
    float *w1;
    kn_trainer_param(tr, 5, NULL, NULL, &w1);
    w1[0] += 1.0f;
    mlp_feed(10);
    die(kn_trainer_step(tg, mlp_batch, 2, &la, NULL), "cuda step");
    die(kn_trainer_step(tr, mlp_batch, 2, &lb, NULL), "resumed step");
    CHECK(fabs(la - lb) <= 1e-5 * fabs(lb), "after a host write: loss cuda %.9g cpu %.9g", la, lb);
    printf("mlp fp32 checkpoint: device state saved, loaded on the CPU bit for bit, next losses %.9g / %.9g\n", la, lb);
    unlink(path);
    kn_trainer_free(tr);
    kn_trainer_free(tc);
    kn_trainer_free(tg);
}

/* Losses at each of n updates (micro-batch k fed on update k), skipping overflowed steps. */
static void mlp_curve(kn_precision prec, bool autocast, int n, double *losses, double *scale_after_first,
                      int64_t *skipped) {
    int l;
    kn_trainer *t = NULL;
    kn_trainer_options o = opts(KN_DEVICE_CUDA, prec, 1);
    o.autocast = autocast;
    kn_model *m_l = build_mlp(&l);
    die(kn_trainer_create(m_l, l, &o, &t), "trainer");
    int done = 0, calls = 0;
    *scale_after_first = 0;
    while (done < n && calls < 4 * n) {
        mlp_feed(done);
        bool up = false;
        double loss = 0;
        die(kn_trainer_step(t, mlp_batch, 2, &loss, &up), "step");
        if (calls++ == 0) *scale_after_first = kn_trainer_loss_scale(t);
        if (up) losses[done++] = loss;
    }
    CHECK(done == n, "precision %d: %d updates in %d calls", (int)prec, done, calls);
    *skipped = kn_trainer_skipped_steps(t);
    kn_trainer_free(t);
}

static void test_mlp_mixed(void) {
    enum { N = 12 };
    double ref[N], lo[N], s32, s;
    int64_t sk32, sk;
    mlp_curve(KN_PRECISION_FP32, false, N, ref, &s32, &sk32);
    static const kn_precision ps[2] = {KN_PRECISION_FP16, KN_PRECISION_BF16};
    static const char *names[2] = {"fp16", "bf16"};
    static const double tol[2] = {2e-2, 5e-2};
    for (int p = 0; p < 2; p++) {
        mlp_curve(ps[p], false, N, lo, &s, &sk);
        double worst = 0;
        for (int k = 0; k < N; k++) worst = fmax(worst, fabs(lo[k] - ref[k]) / fabs(ref[k]));
        CHECK(worst <= tol[p], "%s: loss curve %.3g relative from fp32's (tolerance %g)", names[p], worst, tol[p]);
        CHECK(ref[N - 1] < ref[0] && lo[N - 1] < lo[0], "%s: the loss did not fall (%g -> %g)", names[p], lo[0],
              lo[N - 1]);
        if (ps[p] == KN_PRECISION_FP16)
            CHECK(sk >= 1 && s == 32768.0, "fp16: %lld steps skipped, scale after the first %g (want >= 1, 32768)",
                  (long long)sk, s);
        printf("mlp %s: %d updates, %lld overflow steps skipped, scale after the first micro-batch %g, loss %.6g -> "
               "%.6g (fp32 %.6g -> %.6g), max rel diff to fp32 %.3g\n",
               names[p], N, (long long)sk, s, lo[0], lo[N - 1], ref[0], ref[N - 1], worst);
    }
}

/* ---- per-op autocast and the loss scale across a checkpoint (argv[1] "amp") ---- */

/* options.autocast: the Gemms in fp16/bf16, Relu, Tanh, the log-softmax and the loss in float32,
 * parameters and gradients float32; the loss curve against float32's. */
static void test_mlp_autocast(void) {
    enum { N = 12 };
    double ref[N], lo[N], whole[N], s32, s, sw;
    int64_t sk32, sk, skw;
    mlp_curve(KN_PRECISION_FP32, false, N, ref, &s32, &sk32);
    static const kn_precision ps[2] = {KN_PRECISION_FP16, KN_PRECISION_BF16};
    static const char *names[2] = {"fp16", "bf16"};
    static const double tol[2] = {1e-2, 3e-2};
    for (int p = 0; p < 2; p++) {
        mlp_curve(ps[p], true, N, lo, &s, &sk);
        mlp_curve(ps[p], false, N, whole, &sw, &skw);
        double worst = 0, worst_whole = 0;
        for (int k = 0; k < N; k++) {
            worst = fmax(worst, fabs(lo[k] - ref[k]) / fabs(ref[k]));
            worst_whole = fmax(worst_whole, fabs(whole[k] - ref[k]) / fabs(ref[k]));
        }
        CHECK(worst <= tol[p], "autocast %s: loss curve %.3g relative from fp32's (tolerance %g)", names[p], worst,
              tol[p]);
        CHECK(lo[N - 1] < lo[0], "autocast %s: the loss did not fall (%g -> %g)", names[p], lo[0], lo[N - 1]);
        CHECK(worst != 0, "autocast %s: bitwise float32's losses: nothing ran in low precision", names[p]);
        printf("mlp autocast %s: %d updates, %lld overflow steps skipped, loss %.6g -> %.6g, max rel diff to fp32 "
               "%.3g (whole graph in %s: %.3g)\n",
               names[p], N, (long long)sk, lo[0], lo[N - 1], worst, names[p], worst_whole);
    }
}

/* Micro-batches of an fp16 MLP (whole graph or autocast) with growth_interval 2, so the scale
 * keeps moving (the default 65536 overflows, 32768 grows back after two good micro-batches):
 * `calls` micro-batches, feeding batch k = the updates done so far (a skipped one is fed again). */
static void amp_run(kn_trainer *t, int calls, double *losses) {
    for (int c = 0; c < calls; c++) {
        mlp_feed((int)kn_trainer_steps(t));
        double l = 0;
        die(kn_trainer_step(t, mlp_batch, 2, &l, NULL), "amp step");
        losses[c] = l;
    }
}

static kn_trainer *amp_trainer(bool autocast) {
    int l;
    kn_trainer *t = NULL;
    kn_trainer_options o = opts(KN_DEVICE_CUDA, KN_PRECISION_FP16, 1);
    o.autocast = autocast;
    o.growth_interval = 2;
    kn_model *m = build_mlp(&l);
    die(kn_trainer_create(m, l, &o, &t), "amp trainer");
    return t;
}

/* A run stopped after `cut` micro-batches, checkpointed and resumed in a fresh trainer takes
 * exactly the uninterrupted run's steps: the same losses, skipped micro-batches, loss scale and
 * weights, bit for bit. */
static void test_amp_resume(const char *dir, bool autocast) {
    enum { CALLS = 10, CUT = 5 };
    const char *what = autocast ? "fp16 autocast" : "fp16";
    double full[CALLS], part[CALLS];
    kn_trainer *a = amp_trainer(autocast);
    amp_run(a, CALLS, full);
    kn_trainer *b = amp_trainer(autocast);
    amp_run(b, CUT, part);
    double scale_cut = kn_trainer_loss_scale(b);
    int64_t skipped_cut = kn_trainer_skipped_steps(b);
    char path[1024];
    snprintf(path, sizeof path, "%s/mlp_amp_%d.ckpt", dir, (int)autocast);
    die(kn_trainer_checkpoint_save(b, path, NULL), "amp save");
    kn_trainer_free(b);
    kn_trainer *r = amp_trainer(autocast);
    die(kn_trainer_checkpoint_load(r, path, NULL), "amp load");
    CHECK(kn_trainer_loss_scale(r) == scale_cut && kn_trainer_skipped_steps(r) == skipped_cut,
          "%s resume: scale %g skipped %lld after load, %g %lld saved", what, kn_trainer_loss_scale(r),
          (long long)kn_trainer_skipped_steps(r), scale_cut, (long long)skipped_cut);
    amp_run(r, CALLS - CUT, part + CUT);
    int diff = 0;
    for (int c = 0; c < CALLS; c++) diff += full[c] != part[c];
    CHECK(diff == 0, "%s resume: %d of %d micro-batch losses differ from the uninterrupted run", what, diff, CALLS);
    CHECK(kn_trainer_loss_scale(r) == kn_trainer_loss_scale(a) &&
              kn_trainer_skipped_steps(r) == kn_trainer_skipped_steps(a) && kn_trainer_steps(r) == kn_trainer_steps(a),
          "%s resume: scale %g / %g, skipped %lld / %lld, steps %lld / %lld", what, kn_trainer_loss_scale(r),
          kn_trainer_loss_scale(a), (long long)kn_trainer_skipped_steps(r), (long long)kn_trainer_skipped_steps(a),
          (long long)kn_trainer_steps(r), (long long)kn_trainer_steps(a));
    int wdiff = 0;
    for (int i = 0; i < kn_trainer_param_count(a); i++) {
        float *wa, *wb;
        kn_trainer_param(a, i, NULL, NULL, &wa);
        kn_trainer_param(r, i, NULL, NULL, &wb);
        wdiff += memcmp(wa, wb, sizeof(float) * (size_t)param_numel(a, i)) != 0;
    }
    CHECK(wdiff == 0, "%s resume: %d weight tensors differ from the uninterrupted run", what, wdiff);
    /* the state matters: the scale at the cut is not the initial one, or nothing was checked */
    CHECK(scale_cut != 65536.0 && skipped_cut > 0, "%s: scale %g, %lld skipped at the cut: nothing to restore", what,
          scale_cut, (long long)skipped_cut);
    printf("%s resume: cut after %d of %d micro-batches at scale %g (%lld skipped); %d losses and %d weight tensors "
           "differ from the uninterrupted run's; final scale %g, %lld skipped, %lld steps\n",
           what, CUT, CALLS, scale_cut, (long long)skipped_cut, diff, wdiff, kn_trainer_loss_scale(a),
           (long long)kn_trainer_skipped_steps(a), (long long)kn_trainer_steps(a));
    unlink(path);
    kn_trainer_free(r);
    kn_trainer_free(a);
}

/* ---- MiniLM from the ONNX file train.parity_minilm writes ---- */
static kn_trainer *minilm_trainer(const char *path, const char *out, const char *mask, kn_device_kind dev,
                                  kn_precision prec) {
    kn_model *m = NULL;
    die(kn_train_load(path, &m), path);
    kn_graph *g = m->graph;
    int pooled, u, w, sv, loss;
    die(kn_loss_mean_pool(g, kn_graph_find_value(g, out), kn_graph_find_value(g, mask), &pooled), "pool");
    die(kn_loss_split_halves(g, pooled, &u, &w), "halves");
    die(kn_loss_add_input(g, "scores", KN_F32, 1, (int64_t[]){2}, &sv), "scores");
    die(kn_loss_cosine_similarity(g, u, w, sv, &loss), "loss");
    kn_trainer_options o = opts(dev, prec, 1);
    o.optim.lr = 1e-4;
    kn_trainer *t = NULL;
    die(kn_trainer_create(m, loss, &o, &t), "minilm trainer");
    return t;
}

/* prec FP32: against the CPU trainer; FP16/BF16: the same CPU float32 run as the reference for the
 * loss curve (update k is fed batch k, so a skipped overflow step does not shift the data) */
static void test_minilm(const char *path, const char *out, const char *mask, const char *dir, kn_precision prec) {
    kn_trainer *tc = minilm_trainer(path, out, mask, KN_DEVICE_CPU, KN_PRECISION_FP32),
               *tg = minilm_trainer(path, out, mask, KN_DEVICE_CUDA, prec);
    /* the batch: every non-parameter input of the file, [4, 9] tokens, the last row half padding */
    kn_model *m = NULL;
    die(kn_onnx_load_file(path, &m), path);
    kn_named_tensor in[8];
    static int64_t tok[8][36];
    static float scores[2];
    int n = 0;
    for (int k = 0; k < m->graph->n_inputs && n < 7; k++) {
        const kn_value *v = &m->graph->values[m->graph->inputs[k]];
        for (int i = 0; i < 36; i++)
            tok[n][i] = !strcmp(v->name, mask) ? (i >= 31 ? 0 : 1)
                : strstr(v->name, "type")      ? 0
                                               : (i % 9 == 0 ? 101 : 1000 + (i * 7919) % 20000);
        in[n] = (kn_named_tensor){
            .name = v->name, .dtype = KN_I64, .ndim = 2, .dims = {4, 9}, .data = tok[n], .capacity = sizeof tok[n]};
        n++;
    }
    in[n++] = (kn_named_tensor){
        .name = "scores", .dtype = KN_F32, .ndim = 1, .dims = {2}, .data = scores, .capacity = sizeof scores};
    double worst = 0, tol = prec == KN_PRECISION_FP32 ? 1e-5 : prec == KN_PRECISION_FP16 ? 2e-2 : 5e-2;
    for (int k = 0, calls = 0; k < 3 && calls < 12; k++) {
        scores[0] = 0.2f + 0.1f * (float)k;
        scores[1] = 0.9f - 0.2f * (float)k;
        double l1 = 0, l2 = 0;
        bool up = false;
        die(kn_trainer_step(tc, in, n, &l1, NULL), "cpu step");
        while (!up && calls++ < 12) die(kn_trainer_step(tg, in, n, &l2, &up), "cuda step");
        double rel = fabs(l1 - l2) / fabs(l1);
        worst = fmax(worst, rel);
        CHECK(up && rel <= tol, "minilm step %d: loss cpu %.9g cuda %.9g (tolerance %g)", k, l1, l2, tol);
    }
    if (prec != KN_PRECISION_FP32) {
        printf("minilm %s: 3 AdamW updates, %lld overflow steps skipped, loss scale %g, max loss rel diff to the CPU's "
               "fp32 %.3g\n",
               prec == KN_PRECISION_FP16 ? "fp16" : "bf16", (long long)kn_trainer_skipped_steps(tg),
               kn_trainer_loss_scale(tg), worst);
        kn_model_free(m);
        kn_trainer_free(tc);
        kn_trainer_free(tg);
        return;
    }
    int loose;
    double ww = weights_close("minilm", tc, tg, 1e-4, 3, &loose);
    printf("minilm fp32: %d parameters, 3 AdamW steps: max loss rel diff %.3g, max weight diff %.3g (%d tensors beyond "
           "1e-4)\n",
           kn_trainer_param_count(tg), worst, ww, loose);
    /* the export holds the device weights */
    char dst[1024];
    snprintf(dst, sizeof dst, "%s/minilm_device_export.onnx", dir);
    die(kn_trainer_export_onnx(tg, path, dst), "export");
    kn_model *e = NULL;
    die(kn_train_load(dst, &e), dst);
    int same = 0;
    for (int i = 0; i < kn_trainer_param_count(tg); i++) {
        float *w;
        const char *name = kn_trainer_param(tg, i, NULL, NULL, &w);
        int v = kn_graph_find_value(e->graph, name);
        const kn_tensor *c = v >= 0 ? e->graph->values[v].constant : NULL;
        bool ok = c && kn_numel(c) == param_numel(tg, i) && !memcmp(c->data, w, kn_nbytes(c));
        CHECK(ok, "export: %s is not the device trainer's", name);
        same += ok;
    }
    printf("minilm export: %d/%d initializers equal the device weights bit for bit\n", same,
           kn_trainer_param_count(tg));
    unlink(dst);
    kn_model_free(e);
    kn_model_free(m);
    kn_trainer_free(tc);
    kn_trainer_free(tg);
}

/* ---- train.parity_cnn's SmallCnn on the device trainer (argument "cnn") ---- */
static void add_node(kn_graph *g, const char *op, const char *ins, const char *out, kn_attr *at, int na) {
    int iv[8], ni = 0;
    char buf[256], *save = NULL;
    snprintf(buf, sizeof buf, "%s", ins);
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) iv[ni++] = kn_graph_find_value(g, t);
    int o = kn_graph_add_value(g, out);
    kn_attr *a = na ? calloc((size_t)na, sizeof *a) : NULL;
    for (int i = 0; i < na; i++) die(kn_attr_copy(&a[i], &at[i]), "attribute");
    if (kn_graph_add_node(g, out, op, "", iv, ni, &o, 1, a, na) < 0) die(KN_OOM(0), "node");
}
static kn_attr ints_attr(const char *n, const int64_t *v, int k) {
    kn_attr a = {0};
    a.name = (char *)n;
    a.type = KN_ATTR_INTS;
    a.ints = (int64_t *)v;
    a.n_ints = k;
    return a;
}
static kn_attr int_attr(const char *n, int64_t v) {
    kn_attr a = {0};
    a.name = (char *)n;
    a.type = KN_ATTR_INT;
    a.i = v;
    return a;
}

/* Conv 3->8 -> BatchNormalization (training mode) -> Relu -> MaxPool 2 -> grouped strided Conv ->
 * Relu -> GlobalAveragePool -> Flatten -> Gemm, cross-entropy; batch 6 of 3x10x10. */
static kn_model *build_cnn(int *loss) {
    rs = 4242u;
    kn_graph *g = kn_graph_new("cnn");
    g->opsets[0] = 17;
    g->opset_domains[0] = strdup("");
    g->n_opsets = 1;
    int x, lab;
    die(kn_loss_add_input(g, "x", KN_F32, 4, (int64_t[]){6, 3, 10, 10}, &x), "x");
    die(kn_loss_add_input(g, "labels", KN_I64, 1, (int64_t[]){6}, &lab), "labels");
    add_const(g, "conv1.weight", 4, (int64_t[]){8, 3, 3, 3}, 0.3);
    add_const(g, "conv1.bias", 1, (int64_t[]){8}, 0.2);
    add_const(g, "bn.weight", 1, (int64_t[]){8}, 1.0);
    add_const(g, "bn.bias", 1, (int64_t[]){8}, 0.3);
    add_const(g, "bn.running_mean", 1, (int64_t[]){8}, 0.1);
    add_const(g, "bn.running_var", 1, (int64_t[]){8}, 0.1);
    float *rv = g->values[kn_graph_find_value(g, "bn.running_var")].constant->data;
    for (int i = 0; i < 8; i++) rv[i] += 1.0f;
    add_const(g, "conv2.weight", 4, (int64_t[]){8, 2, 3, 3}, 0.4);
    add_const(g, "conv2.bias", 1, (int64_t[]){8}, 0.2);
    add_const(g, "fc.weight", 2, (int64_t[]){5, 8}, 0.4);
    add_const(g, "fc.bias", 1, (int64_t[]){5}, 0.2);
    static const int64_t k3[2] = {3, 3}, k2[2] = {2, 2}, p1[4] = {1, 1, 1, 1}, s2[2] = {2, 2};
    add_node(g, "Conv", "x conv1.weight conv1.bias", "c1",
             (kn_attr[]){ints_attr("kernel_shape", k3, 2), ints_attr("pads", p1, 4)}, 2);
    add_node(g, "BatchNormalization", "c1 bn.weight bn.bias bn.running_mean bn.running_var", "bn1",
             (kn_attr[]){int_attr("training_mode", 1)}, 1);
    add_unary(g, "Relu", "bn1", "r1");
    add_node(g, "MaxPool", "r1", "p1", (kn_attr[]){ints_attr("kernel_shape", k2, 2), ints_attr("strides", s2, 2)}, 2);
    add_node(g, "Conv", "p1 conv2.weight conv2.bias", "c2",
             (kn_attr[]){ints_attr("kernel_shape", k3, 2), ints_attr("pads", p1, 4), ints_attr("strides", s2, 2),
                         int_attr("group", 4)},
             4);
    add_unary(g, "Relu", "c2", "r2");
    add_unary(g, "GlobalAveragePool", "r2", "gap");
    add_unary(g, "Flatten", "gap", "flat");
    add_gemm(g, "flat", "fc.weight", "fc.bias", "logits");
    die(kn_graph_resolve_ops(g), "resolve");
    die(kn_loss_cross_entropy(g, kn_graph_find_value(g, "logits"), lab, -100, loss), "loss");
    kn_model *m = calloc(1, sizeof *m);
    m->graph = g;
    return m;
}

static float cnn_x[6 * 3 * 10 * 10];
static int64_t cnn_lab[6];
static kn_named_tensor cnn_batch[2];
static void cnn_feed(int k) {
    rs = 999u + 17u * (uint32_t)k;
    for (int i = 0; i < 600; i++) cnn_x[i] = (float)urand(-2, 2);
    for (int i = 0; i < 6; i++) cnn_lab[i] = (int64_t)(urand(0, 5)) % 5;
    cnn_batch[0] = (kn_named_tensor){
        .name = "x", .dtype = KN_F32, .ndim = 4, .dims = {6, 3, 10, 10}, .data = cnn_x, .capacity = sizeof cnn_x};
    cnn_batch[1] = (kn_named_tensor){
        .name = "labels", .dtype = KN_I64, .ndim = 1, .dims = {6}, .data = cnn_lab, .capacity = sizeof cnn_lab};
}

/* The device trainer against the CPU trainer on the CNN, SGD with momentum as train.parity_cnn
 * (lr 0.05, momentum 0.9), 8 steps: every loss within 1e-5 relative, gradient norms within 1e-5,
 * and the final weights within 1e-4 (SGD's step is linear in the gradient, so the gradients'
 * ~1e-6 agreement carries over). */
static void test_cnn(void) {
    kn_trainer_options o[2];
    kn_trainer *t[2] = {NULL, NULL};
    for (int d = 0; d < 2; d++) {
        kn_trainer_options_init(&o[d]);
        o[d].optim.kind = KN_OPTIM_SGD;
        o[d].optim.lr = 0.05;
        o[d].optim.momentum = 0.9;
        o[d].device = d ? KN_DEVICE_CUDA : KN_DEVICE_CPU;
        o[d].seed = 5;
        int l;
        kn_model *m = build_cnn(&l);
        die(kn_trainer_create(m, l, &o[d], &t[d]), d ? "cuda trainer" : "cpu trainer");
    }
    double worst = 0;
    for (int k = 0; k < 8; k++) {
        double l[2] = {0, 0};
        cnn_feed(k);
        for (int d = 0; d < 2; d++) die(kn_trainer_step(t[d], cnn_batch, 2, &l[d], NULL), "cnn step");
        double rel = fabs(l[0] - l[1]) / fabs(l[0]);
        worst = fmax(worst, rel);
        CHECK(rel <= 1e-5, "cnn step %d: loss cpu %.9g cuda %.9g", k, l[0], l[1]);
        CHECK(fabs(kn_trainer_grad_norm(t[0]) - kn_trainer_grad_norm(t[1])) <= 1e-5 * kn_trainer_grad_norm(t[0]),
              "cnn step %d: gradient norm cpu %.9g cuda %.9g", k, kn_trainer_grad_norm(t[0]),
              kn_trainer_grad_norm(t[1]));
    }
    double ww = 0;
    for (int i = 0; i < kn_trainer_param_count(t[0]); i++) {
        float *wa, *wb;
        const char *n = kn_trainer_param(t[0], i, NULL, NULL, &wa);
        kn_trainer_param(t[1], i, NULL, NULL, &wb);
        double md = 0;
        for (int64_t k = 0; k < param_numel(t[0], i); k++) md = fmax(md, fabs((double)wa[k] - (double)wb[k]));
        CHECK(md <= 1e-4, "cnn: %s differs by %g", n, md);
        ww = fmax(ww, md);
    }
    printf("cnn fp32 (device trainer): 8 SGD steps, %d parameters: max loss rel diff %.3g, max weight diff %.3g\n",
           kn_trainer_param_count(t[0]), worst, ww);
    kn_trainer_free(t[0]);
    kn_trainer_free(t[1]);
}

int main(int argc, char **argv) {
    const kn_backend *cu = NULL;
    kn_status *st = kn_backend_get(KN_DEVICE_CUDA, 0, &cu);
    if (st) {
        printf("skipped: no CUDA device (%s)\n", kn_status_message(st));
        kn_status_free(st);
        return 77;
    }
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    if (argc == 2 && !strcmp(argv[1], "amp")) {
        test_mlp_autocast();
        test_amp_resume(dir, false);
        test_amp_resume(dir, true);
    } else if (argc == 2 && !strcmp(argv[1], "cnn")) {
        test_cnn();
    } else if (argc == 4 || argc == 5) {
        kn_precision prec = argc == 5 && !strcmp(argv[4], "fp16") ? KN_PRECISION_FP16
            : argc == 5 && !strcmp(argv[4], "bf16")               ? KN_PRECISION_BF16
                                                                  : KN_PRECISION_FP32;
        test_minilm(argv[1], argv[2], argv[3], dir, prec);
    } else {
        test_mlp_fp32(dir);
        test_mlp_mixed();
    }
    printf(fails ? "FAILED (%d)\n" : "ok\n", fails);
    return fails != 0;
}
