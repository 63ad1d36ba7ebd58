/* Activation recomputation (autograd/recompute.c, kn_trainer_options.recompute) on a 4-layer MLP
 * whose node names carry layer.N segments, as exporters write them: AdamW steps with "layers"
 * and with a pattern give bitwise the losses and weights of the run without, the planner's peak
 * is lower, the pass copies nodes and places no copy before the forward ends, and a spec that
 * chooses nothing is refused naming it. BERT-size checks are train.recompute
 * (tests/train_recompute.py). */
#include "tests/unit/harness.h"
#include "autograd/autograd.h"
#include "autograd/loss.h"
#include "autograd/recompute.h"
#include "autograd/trainer.h"
#include "graph/model.h"
#include "graph/passes.h"
#include "runtime/kiln.h"
#include <stdio.h>

#define OK(expr) \
    do { \
        kn_status *st_ = (expr); \
        ck_assert_msg(st_ == NULL, "%s: %s", #expr, st_ ? kn_status_message(st_) : ""); \
    } while (0)

enum { ROWS = 128, HID = 32, LAYERS = 4, STEPS = 3 };
static float xs[ROWS * HID], ys[ROWS * HID];

static uint32_t rs = 1;
static float frand(void) {
    rs = rs * 1103515245u + 12345u;
    return (float)((rs >> 8) & 0xffff) / 65536.0f - 0.5f;
}

static int node(kn_graph *g, const char *name, const char *op, int a, int b) {
    char vn[128];
    snprintf(vn, sizeof vn, "%s_out", name);
    int out = kn_graph_add_value(g, vn), in[2] = {a, b};
    ck_assert_int_ge(kn_graph_add_node(g, name, op, "", in, b >= 0 ? 2 : 1, &out, 1, NULL, 0), 0);
    return out;
}

/* h_{k+1} = h_k + Tanh(MatMul(h_k, W_k) + b_k) * Sigmoid(MatMul(h_k, W_k)): every value inside a
 * layer is read only there, h_{k+1} crosses into the next. */
static kn_model *mlp(int *loss) {
    kn_graph *g = kn_graph_new("recompute_test");
    g->opsets[0] = 17;
    g->opset_domains[0] = strdup("");
    g->n_opsets = 1;
    int64_t dx[2] = {ROWS, HID}, dw[2] = {HID, HID}, db[1] = {HID};
    int x, y;
    OK(kn_loss_add_input(g, "x", KN_F32, 2, dx, &x));
    OK(kn_loss_add_input(g, "y", KN_F32, 2, dx, &y));
    rs = 7;
    int h = x;
    for (int k = 0; k < LAYERS; k++) {
        char n[128];
        float w[HID * HID], b[HID];
        for (int i = 0; i < HID * HID; i++) w[i] = frand() * 0.4f;
        for (int i = 0; i < HID; i++) b[i] = frand() * 0.1f;
        snprintf(n, sizeof n, "enc.layer.%d.weight", k);
        int wv = kn_graph_add_value(g, n);
        g->values[wv].constant = mk_raw(KN_F32, 2, dw, w);
        snprintf(n, sizeof n, "enc.layer.%d.bias", k);
        int bv = kn_graph_add_value(g, n);
        g->values[bv].constant = mk_raw(KN_F32, 1, db, b);
#define NAME(s) (snprintf(n, sizeof n, "/enc/layer.%d/%s", k, s), n)
        int mm = node(g, NAME("mm"), "MatMul", h, wv);
        int t = node(g, NAME("tanh"), "Tanh", node(g, NAME("add"), "Add", mm, bv), -1);
        int gate = node(g, NAME("gate"), "Sigmoid", mm, -1);
        h = node(g, NAME("residual"), "Add", h, node(g, NAME("mul"), "Mul", t, gate));
#undef NAME
    }
    g->values[h].is_output = true;
    g->outputs = malloc(sizeof(int));
    g->outputs[g->n_outputs++] = h;
    OK(kn_graph_resolve_ops(g));
    OK(kn_loss_mse(g, h, y, loss));
    kn_model *m = calloc(1, sizeof *m);
    m->graph = g;
    return m;
}

/* Losses of STEPS AdamW steps, the final weights (concatenated) and the peak bytes. */
static void run(const char *recompute, double *losses, float *weights, size_t *peak) {
    int loss;
    kn_model *m = mlp(&loss);
    kn_trainer_options o;
    kn_trainer_options_init(&o);
    o.optim.kind = KN_OPTIM_ADAMW;
    o.optim.lr = 1e-2;
    o.num_threads = 2;
    o.recompute = recompute;
    kn_trainer *t = NULL;
    OK(kn_trainer_create(m, loss, &o, &t));
    kn_named_tensor b[2] = {{.name = "x", .dtype = KN_F32, .ndim = 2, .dims = {ROWS, HID}, .data = xs},
                            {.name = "y", .dtype = KN_F32, .ndim = 2, .dims = {ROWS, HID}, .data = ys}};
    for (int s = 0; s < STEPS; s++) OK(kn_trainer_step(t, b, 2, &losses[s], NULL));
    *peak = kn_trainer_peak_bytes(t);
    size_t off = 0;
    for (int i = 0; i < kn_trainer_param_count(t); i++) {
        int nd;
        const int64_t *dims;
        float *w;
        kn_trainer_param(t, i, &nd, &dims, &w);
        int64_t n = 1;
        for (int d = 0; d < nd; d++) n *= dims[d];
        memcpy(weights + off, w, sizeof(float) * (size_t)n);
        off += (size_t)n;
    }
    ck_assert_int_eq((int)off, LAYERS * (HID * HID + HID));
    kn_trainer_free(t);
}

START_TEST(recompute_bitwise_and_lower_peak) {
    rs = 99;
    for (int i = 0; i < ROWS * HID; i++) {
        xs[i] = frand() * 2;
        ys[i] = frand();
    }
    static float w0[LAYERS * (HID * HID + HID)], w1[LAYERS * (HID * HID + HID)];
    double l0[STEPS], l1[STEPS];
    size_t p0, p1;
    run(NULL, l0, w0, &p0);
    ck_assert_msg(l0[STEPS - 1] < l0[0], "the loss did not fall: %g -> %g", l0[0], l0[STEPS - 1]);
    const char *specs[2] = {"layers", "*/mm,*/tanh,*/gate"};
    for (int k = 0; k < 2; k++) {
        run(specs[k], l1, w1, &p1);
        for (int s = 0; s < STEPS; s++)
            ck_assert_msg(l0[s] == l1[s], "%s: step %d loss %.9g, without %.9g", specs[k], s, l1[s], l0[s]);
        ck_assert_msg(!memcmp(w0, w1, sizeof w0), "%s: the weights differ from the run without", specs[k]);
        ck_assert_msg(p1 < p0, "%s: peak %zu bytes, without %zu", specs[k], p1, p0);
        fprintf(stderr, "recompute %s: losses and weights bitwise, peak %zu of %zu bytes (%.3f)\n", specs[k], p1, p0,
                (double)p1 / (double)p0);
    }
}
END_TEST

/* The pass itself: copies made, each after the last forward node, reading no dropped original;
 * a spec that chooses nothing is an error naming it. */
START_TEST(recompute_pass_places_copies) {
    int loss;
    kn_model *m = mlp(&loss);
    kn_graph *g = m->graph;
    int wrt[LAYERS];
    for (int k = 0; k < LAYERS; k++) {
        char n[64];
        snprintf(n, sizeof n, "enc.layer.%d.weight", k);
        wrt[k] = kn_graph_find_value(g, n);
    }
    OK(kn_autograd(g, loss, wrt, LAYERS, NULL));
    OK(kn_graph_toposort(g));
    kn_status *st = kn_train_recompute(g, "nothing*", NULL);
    ck_assert_ptr_nonnull(st);
    ck_assert_msg(strstr(kn_status_message(st), "'nothing*' chooses no forward node"), "%s", kn_status_message(st));
    kn_status_free(st);
    int copies = 0;
    OK(kn_train_recompute(g, "layers", &copies));
    ck_assert_int_ge(copies, 4 * LAYERS);
    int last_forward = -1, first_copy = -1;
    for (int i = 0; i < g->n_nodes; i++) {
        const char *nm = g->nodes[i].name;
        bool copy = strstr(nm, "/recompute") != NULL, bwd = !strncmp(nm, "grad", 4);
        if (!copy && !bwd && strncmp(nm, "/enc/", 5) == 0) last_forward = i;
        if (copy && first_copy < 0) first_copy = i;
    }
    ck_assert_msg(first_copy > last_forward, "a copy at node %d, before the forward's last node %d", first_copy,
                  last_forward);
    kn_model_free(m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("recompute");
    TCase *tc = tcase_create("recompute");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, recompute_bitwise_and_lower_peak);
    tcase_add_test(tc, recompute_pass_places_copies);
    suite_add_tcase(s, tc);
    return kn_test_run_suite(s);
}
