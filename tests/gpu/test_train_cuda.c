/* Training graphs through the CUDA backend: a model's forward graph plus its loss is
 * differentiated by kn_autograd (as the trainer does: the trainable weights are graph inputs),
 * then one device=cuda session and one device=cpu session run forward and backward on the same
 * inputs, and every gradient must agree: max |cuda - cpu| <= 1e-4 * max |cpu| + 1e-8 per gradient
 * (the absolute term for a gradient that is zero in exact arithmetic, such as the key bias's,
 * which softmax ignores: both sides give rounding noise near 1e-10) and the loss within 1e-5
 * relative. Every node of the training graph must run on the device: a
 * node the CUDA backend leaves to the CPU (reported through the session's log) fails the test.
 * Models: the MLP of train.parity_mlp (Gemm, Relu, Tanh, cross-entropy with an ignored label)
 * and, with the argument "cnn" alone, train.parity_cnn's SmallCnn (Conv, BatchNormalization in
 * training mode, MaxPool, a grouped strided Conv, GlobalAveragePool: ConvGradX/W, the pool and
 * BatchNormalization backward ops on the device),
 * and a one-layer transformer encoder (embedding Gather, sliced position table, LayerNorm,
 * two-head attention with a mask, erf GELU, mean pooling, a classifier and cross-entropy), each
 * in float32 and again entirely in float16 and in bfloat16 (against the CPU in the same type:
 * 1e-2 and 5e-2 of the largest gradient).
 * Each device session runs twice (the second run reuses its plan and arena) and must give the same
 * bits both times. Exit 77 with
 * "skipped: no CUDA device" where there is none. */
#include "autograd/autograd.h"
#include "autograd/loss.h"
#include "autograd/trainer.h"
#include "graph/model.h"
#include "graph/ops.h"
#include "graph/passes.h"
#include "runtime/executor.h"
#include "runtime/fold.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t seed = 12345u;
static double urand(double lo, double hi) {
    seed = seed * 1103515245u + 12345u;
    return lo + (hi - lo) * (double)((seed >> 8) & 0xffffff) / 16777216.0;
}

static void die(kn_status *st, const char *what) {
    if (!st) return;
    printf("FAIL %s: %s\n", what, kn_status_message(st));
    exit(1);
}

/* ---- building ---- */
#define TB_MAX 256
typedef struct {
    kn_graph *g;
    kn_model *m; /* a loaded model (g is its graph), or NULL for a built one */
    int wrt[TB_MAX], n_wrt;
    kn_tensor *feed[TB_MAX]; /* host values of the graph inputs, in input order */
} tb;

static int tv(tb *b, const char *name) {
    int v = kn_graph_find_value(b->g, name);
    return v >= 0 ? v : kn_graph_add_value(b->g, name);
}

static int t_input(tb *b, const char *name, kn_tensor *t, bool trainable) {
    int v = tv(b, name);
    b->g->values[v].is_input = true;
    b->g->values[v].type.dtype = t->dtype;
    kn_tensor_set_shape(&b->g->values[v].type, t->ndim, t->dims);
    b->g->inputs = realloc(b->g->inputs, sizeof(int) * (size_t)(b->g->n_inputs + 1));
    b->feed[b->g->n_inputs] = t;
    b->g->inputs[b->g->n_inputs++] = v;
    if (trainable) b->wrt[b->n_wrt++] = v;
    return v;
}

/* the float type the built models compute in: float32, float16 or bfloat16 */
static kn_dtype fdt = KN_F32;
static kn_tensor *rnd_f32(int nd, const int64_t *d, double lo, double hi) {
    kn_tensor *t = NULL;
    die(kn_tensor_new(fdt, nd, d, &t), "tensor");
    for (int64_t i = 0; i < kn_numel(t); i++) kn_set_f64(t, i, urand(lo, hi));
    return t;
}
static kn_tensor *i64s(int nd, const int64_t *d, const int64_t *v) {
    kn_tensor *t = NULL;
    die(kn_tensor_new(KN_I64, nd, d, &t), "tensor");
    memcpy(t->data, v, sizeof(int64_t) * (size_t)kn_numel(t));
    return t;
}
#define D(...) \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]) { __VA_ARGS__ }

static void t_weight(tb *b, const char *name, int nd, const int64_t *d, double scale) {
    t_input(b, name, rnd_f32(nd, d, -scale, scale), true);
}

static void t_const(tb *b, const char *name, kn_tensor *t) {
    int v = tv(b, name);
    b->g->values[v].constant = t;
    b->g->values[v].type.dtype = t->dtype;
    kn_tensor_set_shape(&b->g->values[v].type, t->ndim, t->dims);
}

static kn_attr a_int(const char *n, int64_t v) {
    kn_attr a = {0};
    a.name = (char *)n;
    a.type = KN_ATTR_INT;
    a.i = v;
    return a;
}
static kn_attr a_ints(const char *n, const int64_t *v, int k) {
    kn_attr a = {0};
    a.name = (char *)n;
    a.type = KN_ATTR_INTS;
    a.ints = (int64_t *)v;
    a.n_ints = k;
    return a;
}
static kn_attr a_float(const char *n, float v) {
    kn_attr a = {0};
    a.name = (char *)n;
    a.type = KN_ATTR_FLOAT;
    a.f = v;
    return a;
}

/* A node with space-separated input / output names, attributes copied. */
static void t_node(tb *b, const char *op, const char *ins, const char *outs, const kn_attr *attrs, int n_attrs) {
    int iv[16], ov[16], ni = 0, no = 0;
    char buf[256], *save = NULL;
    snprintf(buf, sizeof buf, "%s", ins);
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) iv[ni++] = tv(b, t);
    snprintf(buf, sizeof buf, "%s", outs);
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) ov[no++] = tv(b, t);
    kn_attr *a = n_attrs ? calloc((size_t)n_attrs, sizeof *a) : NULL;
    for (int i = 0; i < n_attrs; i++) die(kn_attr_copy(&a[i], &attrs[i]), "attribute");
    char name[64];
    snprintf(name, sizeof name, "n%d_%s", b->g->n_nodes, op);
    if (kn_graph_add_node(b->g, name, op, "", iv, ni, ov, no, a, n_attrs) < 0)
        die(kn_error(KN_ERR_RUNTIME, "node"), op);
}
#define N0(b, op, ins, outs) t_node(b, op, ins, outs, NULL, 0)
#define NA(b, op, ins, outs, ...) \
    t_node(b, op, ins, outs, (kn_attr[]){__VA_ARGS__}, sizeof((kn_attr[]){__VA_ARGS__}) / sizeof(kn_attr))

static void t_init(tb *b, const char *name) {
    memset(b, 0, sizeof *b);
    b->g = kn_graph_new(name);
    b->g->opsets[0] = 20; /* Gelu */
    b->g->opset_domains[0] = strdup("");
    b->g->n_opsets = 1;
}

/* The MLP of train.parity_mlp: 16 -> 32 (Relu) -> 32 (Tanh) -> 5, batch 6, one label ignored. */
static int build_mlp(tb *b) {
    t_init(b, "mlp");
    t_input(b, "x", rnd_f32(D(6, 16), -2, 2), false);
    static const int64_t lab[6] = {0, 3, -100, 4, 1, 2};
    t_input(b, "labels", i64s(D(6), lab), false);
    t_weight(b, "l0.weight", D(32, 16), 0.25);
    t_weight(b, "l0.bias", D(32), 0.25);
    t_weight(b, "l1.weight", D(32, 32), 0.18);
    t_weight(b, "l1.bias", D(32), 0.18);
    t_weight(b, "l2.weight", D(5, 32), 0.18);
    t_weight(b, "l2.bias", D(5), 0.18);
    NA(b, "Gemm", "x l0.weight l0.bias", "g0", a_int("transB", 1));
    N0(b, "Relu", "g0", "h0");
    NA(b, "Gemm", "h0 l1.weight l1.bias", "g1", a_int("transB", 1));
    N0(b, "Tanh", "g1", "h1");
    NA(b, "Gemm", "h1 l2.weight l2.bias", "logits", a_int("transB", 1));
    int loss;
    die(kn_loss_cross_entropy(b->g, tv(b, "logits"), tv(b, "labels"), -100, &loss), "mlp loss");
    return loss;
}

/* One post-LN encoder layer: B 2, T 5, D 8, 2 heads of 4, FFN 16, vocabulary 11, 3 classes. */
static int build_encoder(tb *b) {
    enum { B = 2, T = 5, H = 8, V = 11 };
    t_init(b, "encoder");
    static const int64_t ids[B * T] = {1, 4, 4, 9, 0, 2, 10, 4, 0, 0}; /* 4 repeats: GatherGrad accumulates */
    t_input(b, "ids", i64s(D(B, T), ids), false);
    kn_tensor *mask = rnd_f32(D(B, T), 0, 0);
    static const float mk[B * T] = {1, 1, 1, 1, 0, 1, 1, 1, 0, 0};
    for (int i = 0; i < B * T; i++) kn_set_f64(mask, i, mk[i]);
    t_input(b, "mask", mask, false);
    static const int64_t lab[B] = {2, 0};
    t_input(b, "labels", i64s(D(B), lab), false);
    t_weight(b, "word", D(V, H), 1.0);
    t_weight(b, "pos", D(16, H), 0.5);
    t_weight(b, "ln0.g", D(H), 1.0);
    t_weight(b, "ln0.b", D(H), 0.2);
    const char *proj[] = {"q", "k", "v", "o"};
    char nm[64];
    for (int i = 0; i < 4; i++) {
        snprintf(nm, sizeof nm, "%s.w", proj[i]);
        t_weight(b, nm, D(H, H), 0.5);
        snprintf(nm, sizeof nm, "%s.b", proj[i]);
        t_weight(b, nm, D(H), 0.2);
    }
    t_weight(b, "ln1.g", D(H), 1.0);
    t_weight(b, "ln1.b", D(H), 0.2);
    t_weight(b, "f1.w", D(H, 16), 0.4);
    t_weight(b, "f1.b", D(16), 0.2);
    t_weight(b, "f2.w", D(16, H), 0.3);
    t_weight(b, "f2.b", D(H), 0.2);
    t_weight(b, "ln2.g", D(H), 1.0);
    t_weight(b, "ln2.b", D(H), 0.2);
    t_weight(b, "cls.w", D(3, H), 0.5);
    t_weight(b, "cls.b", D(3), 0.2);
    t_const(b, "s0", i64s(D(1), (int64_t[]){0}));
    t_const(b, "sT", i64s(D(1), (int64_t[]){T}));
    t_const(b, "ax0", i64s(D(1), (int64_t[]){0}));
    t_const(b, "heads", i64s(D(4), (int64_t[]){B, T, 2, 4}));
    t_const(b, "flat", i64s(D(3), (int64_t[]){B, T, H}));
    t_const(b, "m_axes", i64s(D(2), (int64_t[]){1, 2}));
    kn_tensor *sc = rnd_f32(0, NULL, 0, 0), *big = rnd_f32(0, NULL, 0, 0), *one = rnd_f32(0, NULL, 0, 0);
    kn_set_f64(sc, 0, 0.5); /* 1 / sqrt(4) */
    kn_set_f64(big, 0, -10000.0);
    kn_set_f64(one, 0, 1.0);
    t_const(b, "scale", sc);
    t_const(b, "neg", big);
    t_const(b, "one", one);
    N0(b, "Gather", "word ids", "we");
    N0(b, "Slice", "pos s0 sT ax0", "pe");
    N0(b, "Add", "we pe", "emb");
    NA(b, "LayerNormalization", "emb ln0.g ln0.b", "h0", a_int("axis", -1), a_float("epsilon", 1e-5f));
    for (int i = 0; i < 3; i++) {
        char ins[64], o1[16], o2[16], o3[16];
        snprintf(ins, sizeof ins, "h0 %s.w", proj[i]);
        snprintf(o1, sizeof o1, "%s_mm", proj[i]);
        N0(b, "MatMul", ins, o1);
        snprintf(ins, sizeof ins, "%s %s.b", o1, proj[i]);
        snprintf(o2, sizeof o2, "%s_lin", proj[i]);
        N0(b, "Add", ins, o2);
        snprintf(ins, sizeof ins, "%s heads", o2);
        snprintf(o3, sizeof o3, "%s_4d", proj[i]);
        N0(b, "Reshape", ins, o3);
        snprintf(o1, sizeof o1, "%s_h", proj[i]);
        /* K goes straight to [B, 2, 4, T] */
        NA(b, "Transpose", o3, o1, a_ints("perm", i == 1 ? (int64_t[]){0, 2, 3, 1} : (int64_t[]){0, 2, 1, 3}, 4));
    }
    N0(b, "MatMul", "q_h k_h", "sc0");
    N0(b, "Mul", "sc0 scale", "sc1");
    /* additive mask: (1 - mask) * -10000 as [B, 1, 1, T] */
    N0(b, "Sub", "one mask", "inv_m");
    N0(b, "Mul", "inv_m neg", "madd");
    N0(b, "Unsqueeze", "madd m_axes", "madd4");
    N0(b, "Add", "sc1 madd4", "sc2");
    NA(b, "Softmax", "sc2", "att", a_int("axis", -1));
    N0(b, "MatMul", "att v_h", "ctx4");
    NA(b, "Transpose", "ctx4", "ctx_t", a_ints("perm", (int64_t[]){0, 2, 1, 3}, 4));
    N0(b, "Reshape", "ctx_t flat", "ctx");
    N0(b, "MatMul", "ctx o.w", "o_mm");
    N0(b, "Add", "o_mm o.b", "o_lin");
    N0(b, "Add", "o_lin h0", "r1");
    NA(b, "LayerNormalization", "r1 ln1.g ln1.b", "h1", a_int("axis", -1), a_float("epsilon", 1e-5f));
    N0(b, "MatMul", "h1 f1.w", "f1_mm");
    N0(b, "Add", "f1_mm f1.b", "f1_lin");
    N0(b, "Gelu", "f1_lin", "f1_act");
    N0(b, "MatMul", "f1_act f2.w", "f2_mm");
    N0(b, "Add", "f2_mm f2.b", "f2_lin");
    N0(b, "Add", "f2_lin h1", "r2");
    NA(b, "LayerNormalization", "r2 ln2.g ln2.b", "h2", a_int("axis", -1), a_float("epsilon", 1e-5f));
    int pooled, loss;
    die(kn_loss_mean_pool(b->g, tv(b, "h2"), tv(b, "mask"), &pooled), "mean pool");
    int w = tv(b, "cls.w"), bias = tv(b, "cls.b"), logits = kn_graph_add_value(b->g, "logits");
    kn_attr *ga = calloc(1, sizeof *ga);
    kn_attr tb1 = a_int("transB", 1);
    die(kn_attr_copy(ga, &tb1), "attribute");
    if (kn_graph_add_node(b->g, "cls", "Gemm", "", (int[]){pooled, w, bias}, 3, &logits, 1, ga, 1) < 0)
        die(kn_error(KN_ERR_RUNTIME, "node"), "cls");
    die(kn_loss_cross_entropy(b->g, logits, tv(b, "labels"), -100, &loss), "encoder loss");
    return loss;
}

/* The SmallCnn of train.parity_cnn: Conv 3->8 (3x3, pad 1) -> BatchNormalization in training mode ->
 * Relu -> MaxPool 2 -> grouped Conv 8->8 (3x3, stride 2, pad 1, 4 groups) -> Relu ->
 * GlobalAveragePool -> Flatten -> Linear 8->5, cross-entropy; batch 6 of 3x10x10. */
static int build_cnn(tb *b) {
    t_init(b, "cnn");
    t_input(b, "x", rnd_f32(D(6, 3, 10, 10), -2, 2), false);
    static const int64_t lab[6] = {0, 3, 4, 4, 1, 2};
    t_input(b, "labels", i64s(D(6), lab), false);
    t_weight(b, "conv1.weight", D(8, 3, 3, 3), 0.3);
    t_weight(b, "conv1.bias", D(8), 0.2);
    t_weight(b, "bn.weight", D(8), 1.0);
    t_weight(b, "bn.bias", D(8), 0.3);
    t_const(b, "bn.running_mean", rnd_f32(D(8), -0.1, 0.1));
    t_const(b, "bn.running_var", rnd_f32(D(8), 0.9, 1.1));
    t_weight(b, "conv2.weight", D(8, 2, 3, 3), 0.4);
    t_weight(b, "conv2.bias", D(8), 0.2);
    t_weight(b, "fc.weight", D(5, 8), 0.4);
    t_weight(b, "fc.bias", D(5), 0.2);
    static const int64_t k3[2] = {3, 3}, k2[2] = {2, 2}, p1[4] = {1, 1, 1, 1}, s2[2] = {2, 2};
    NA(b, "Conv", "x conv1.weight conv1.bias", "c1", a_ints("kernel_shape", k3, 2), a_ints("pads", p1, 4));
    NA(b, "BatchNormalization", "c1 bn.weight bn.bias bn.running_mean bn.running_var", "bn1", a_int("training_mode", 1),
       a_float("epsilon", 1e-5f), a_float("momentum", 0.9f));
    N0(b, "Relu", "bn1", "r1");
    NA(b, "MaxPool", "r1", "p1", a_ints("kernel_shape", k2, 2), a_ints("strides", s2, 2));
    NA(b, "Conv", "p1 conv2.weight conv2.bias", "c2", a_ints("kernel_shape", k3, 2), a_ints("pads", p1, 4),
       a_ints("strides", s2, 2), a_int("group", 4));
    N0(b, "Relu", "c2", "r2");
    N0(b, "GlobalAveragePool", "r2", "gap");
    N0(b, "Flatten", "gap", "flat");
    NA(b, "Gemm", "flat fc.weight fc.bias", "logits", a_int("transB", 1));
    int loss;
    die(kn_loss_cross_entropy(b->g, tv(b, "logits"), tv(b, "labels"), -100, &loss), "cnn loss");
    return loss;
}

/* ---- running ---- */
static int fallbacks;
static void on_log(void *user, kn_log_level level, const char *msg) {
    (void)user;
    printf("  %s: %s\n", level == KN_LOG_WARNING ? "warning" : "info", msg);
    if (strstr(msg, "runs on the CPU")) fallbacks++;
}

static int check_model(const char *name, int (*build)(tb *)) {
    /* float16/bfloat16: both sides round every op's result to the type, but in different orders
     * inside MatMul and the reductions */
    double tol = fdt == KN_F32 ? 1e-4 : fdt == KN_F16 ? 1e-2 : 5e-2, tol_loss = fdt == KN_F32 ? 1e-5 : tol;
    tb b;
    int loss = build(&b);
    kn_graph *g = b.g;
    g->values[loss].is_output = true;
    g->outputs = realloc(g->outputs, sizeof(int) * (size_t)(g->n_outputs + 1));
    g->outputs[g->n_outputs++] = loss;
    die(kn_graph_resolve_ops(g), "resolve");
    int grads[TB_MAX];
    die(kn_autograd(g, loss, b.wrt, b.n_wrt, grads), "autograd");
    die(kn_graph_optimize(g, false), "optimize");
    kn_model *m = b.m;
    if (!m) {
        m = calloc(1, sizeof *m);
        m->graph = g;
    }
    kn_session_options oc, og;
    kn_session_options_init(&oc);
    kn_session_options_init(&og);
    og.device = KN_DEVICE_CUDA;
    og.log = on_log;
    kn_session *sc = NULL, *sg = NULL;
    die(kn_session_create(m, &oc, &sc), "cpu session");
    die(kn_session_create(m, &og, &sg), "cuda session");
    int n_in = g->n_inputs, n_out = g->n_outputs, fail = 0;
    static kn_tensor in[TB_MAX], rc[TB_MAX], rg[TB_MAX], first[TB_MAX];
    for (int k = 0; k < n_in; k++) in[k] = *b.feed[k];
    int fb0 = fallbacks;
    die(kn_session_run_values(sc, in, rc), "cpu run");
    for (int rep = 0; rep < 2; rep++) {
        die(kn_session_run_values(sg, in, rg), "cuda run");
        int n_grads = 0;
        double worst = 0, loss_c = 0, loss_g = 0;
        for (int o = 0; o < n_out; o++) {
            const char *on = g->values[g->outputs[o]].name;
            int64_t n = kn_numel(&rc[o]);
            if (n != kn_numel(&rg[o])) {
                printf("FAIL %s: output %s has %lld elements on cuda, %lld on cpu\n", name, on,
                       (long long)kn_numel(&rg[o]), (long long)n);
                fail = 1;
                continue;
            }
            if (g->outputs[o] == loss) {
                loss_c = kn_get_f64(&rc[o], 0);
                loss_g = kn_get_f64(&rg[o], 0);
                if (!(fabs(loss_c - loss_g) <= tol_loss * fabs(loss_c))) {
                    printf("FAIL %s: loss cpu %.9g cuda %.9g\n", name, loss_c, loss_g);
                    fail = 1;
                }
                continue;
            }
            double mx = 0, md = 0;
            int64_t at = 0;
            for (int64_t i = 0; i < n; i++) {
                double a = kn_get_f64(&rc[o], i), d = fabs(a - kn_get_f64(&rg[o], i));
                if (fabs(a) > mx) mx = fabs(a);
                if (!(d <= md)) {
                    md = d;
                    at = i;
                }
            }
            double rel = mx > 1e-6 ? md / mx : 0; /* a zero gradient's noise is not a relative error */
            if (rel > worst) worst = rel;
            n_grads += !strncmp(on, "grad:", 5); /* the model's own outputs are compared too */
            if (!(md <= tol * mx + 1e-8)) {
                printf("FAIL %s: %s: max |diff| %.3g at %lld (cpu %.9g, cuda %.9g), max |cpu| %.3g\n", name, on, md,
                       (long long)at, kn_get_f64(&rc[o], at), kn_get_f64(&rg[o], at), mx);
                fail = 1;
            }
        }
        if (n_grads != b.n_wrt) {
            printf("FAIL %s: %d gradients, %d trainable weights\n", name, n_grads, b.n_wrt);
            fail = 1;
        }
        printf("%s run %d: %d nodes, %d gradients, loss cpu %.9g cuda %.9g, worst max|diff|/max|cpu| %.3g (gradients "
               "above 1e-6)\n",
               name, rep + 1, g->n_nodes, n_grads, loss_c, loss_g, worst);
        /* the device's reductions have a fixed order (no float atomics): runs repeat bit for bit */
        for (int o = 0; o < n_out; o++) {
            if (rep == 0) {
                first[o] = rg[o];
                continue;
            }
            if (kn_nbytes(&rg[o]) != kn_nbytes(&first[o]) || memcmp(rg[o].data, first[o].data, kn_nbytes(&rg[o]))) {
                printf("FAIL %s: %s differs between two cuda runs\n", name, g->values[g->outputs[o]].name);
                fail = 1;
            }
            kn_tensor_release(&rg[o]);
            kn_tensor_release(&first[o]);
        }
    }
    if (fallbacks != fb0) {
        printf("FAIL %s: %d ops of the training graph ran on the CPU\n", name, fallbacks - fb0);
        fail = 1;
    }
    for (int o = 0; o < n_out; o++) kn_tensor_release(&rc[o]);
    kn_session_free(sc);
    kn_session_free(sg);
    kn_model_free(m);
    for (int k = 0; k < n_in; k++) kn_tensor_free(b.feed[k]);
    return fail;
}

/* An ONNX sentence encoder (argv: model.onnx, its token output, its mask input), every float32
 * initializer of more than one element trainable (made a graph input, as the trainer does), with
 * CosineSimilarityLoss over mean pooling (train.parity_minilm's loss; argv[4] "cosent" or "mnrl":
 * CoSENTLoss or MultipleNegativesRankingLoss) on 2 pairs of 9 tokens: a manual check of a real
 * model's training graph, e.g. the one tests/train_parity.py writes for train.parity_minilm. */
static const char *onnx_path, *onnx_out, *onnx_mask, *onnx_loss = "cosine";
static int build_onnx(tb *b) {
    memset(b, 0, sizeof *b);
    die(kn_train_load(onnx_path, &b->m), onnx_path);
    kn_graph *g = b->g = b->m->graph;
    int n_feed = 0;
    for (int k = 0; k < g->n_inputs; k++) { /* token inputs: [4, 9] int64, the mask's last row half padding */
        kn_value *v = &g->values[g->inputs[k]];
        kn_tensor *t = NULL;
        die(kn_tensor_new(v->type.dtype, 2, (int64_t[]){4, 9}, &t), "tensor");
        for (int64_t i = 0; i < 36; i++)
            kn_set_f64(t, i,
                       !strcmp(v->name, onnx_mask)   ? (i >= 31 ? 0 : 1)
                           : strstr(v->name, "type") ? 0
                                                     : (double)(i % 9 == 0 ? 101 : 1000 + (i * 7919) % 20000));
        b->feed[n_feed++] = t;
    }
    for (int v = 0; v < g->n_values; v++) {
        kn_value *val = &g->values[v];
        /* scalars are the graph's constants (the attention scale, LayerNorm's epsilon), not weights */
        if (!val->constant || val->is_input || val->constant->dtype != KN_F32 ||
            val->constant->kind != KN_KIND_TENSOR || kn_numel(val->constant) < 2 || n_feed == TB_MAX)
            continue;
        b->feed[n_feed++] = val->constant;
        val->constant = NULL;
        val->is_input = true;
        g->inputs = realloc(g->inputs, sizeof(int) * (size_t)(g->n_inputs + 1));
        g->inputs[g->n_inputs++] = v;
        b->wrt[b->n_wrt++] = v;
    }
    int pooled, u, w, sv, loss;
    die(kn_loss_mean_pool(g, kn_graph_find_value(g, onnx_out), kn_graph_find_value(g, onnx_mask), &pooled), "pool");
    die(kn_loss_split_halves(g, pooled, &u, &w), "halves");
    if (!strcmp(onnx_loss, "mnrl")) {
        die(kn_loss_multiple_negatives_ranking(g, u, w, 20.0, &loss), "loss");
        return loss;
    }
    die(kn_loss_add_input(g, "scores", KN_F32, 1, (int64_t[]){2}, &sv), "scores");
    kn_tensor *sc = rnd_f32(D(2), 0, 1);
    b->feed[n_feed++] = sc;
    if (!strcmp(onnx_loss, "cosent")) die(kn_loss_cosent(g, u, w, sv, 20.0, &loss), "loss");
    else die(kn_loss_cosine_similarity(g, u, w, sv, &loss), "loss");
    return loss;
}

int main(int argc, char **argv) {
    const kn_backend *cu = NULL;
    kn_status *st = kn_backend_get(KN_DEVICE_CUDA, 0, &cu);
    if (st) {
        printf("skipped: no CUDA device (%s)\n", kn_status_message(st));
        kn_status_free(st);
        return 77;
    }
    if (argc == 4 || argc == 5) {
        if (argc == 5) onnx_loss = argv[4];
        onnx_path = argv[1];
        onnx_out = argv[2];
        onnx_mask = argv[3];
        return check_model(onnx_path, build_onnx);
    }
    int fail = 0;
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16};
    static const char *const names[] = {"float32", "float16", "bfloat16"};
    if (argc == 2 && !strcmp(argv[1], "cnn")) { /* gpusim.train_cnn: the CNN alone */
        for (int t = 0; t < 3; t++) {
            char nm[64];
            fdt = dts[t];
            snprintf(nm, sizeof nm, "cnn/%s", names[t]);
            fail |= check_model(nm, build_cnn);
        }
        printf(fail ? "FAILED\n" : "all gradients match\n");
        return fail;
    }
    for (int t = 0; t < 3; t++) {
        char nm[64];
        fdt = dts[t];
        snprintf(nm, sizeof nm, "mlp/%s", names[t]);
        fail |= check_model(nm, build_mlp);
        snprintf(nm, sizeof nm, "encoder/%s", names[t]);
        fail |= check_model(nm, build_encoder);
    }
    printf(fail ? "FAILED\n" : "all gradients match\n");
    return fail;
}
