/* Training pieces (autograd/loss.c, optim.c, trainer.c): each loss builder's value against
 * PyTorch / sentence-transformers on fixed inputs (numbers computed once with torch 2.x and
 * sentence-transformers 6.3 and pasted) and its gradient
 * against central finite differences; the optimisers against torch.optim after three steps and
 * the schedules against transformers' lambdas; the trainer on a small linear model: an SGD step
 * against the closed form, accumulation against one big batch, clipping, tied weights, the
 * errors for a pattern that matches nothing and a loss no parameter reaches, and a weight
 * behind a foldable Transpose that must not be folded, a non-finite micro-batch that must change
 * nothing, and a linear head's initialisation, forward and training (autograd/head.h). Export,
 * checkpoints and parity with PyTorch are train.* (tests/train_parity.py). */
#include "tests/unit/harness.h"
#include "autograd/autograd.h"
#include "autograd/head.h"
#include "autograd/loss.h"
#include "autograd/optim.h"
#include "autograd/trainer.h"
#include "graph/model.h"
#include "graph/passes.h"
#include "runtime/fold.h"
#include "runtime/kiln.h"
#include <math.h>
#include <stdio.h>
#include <unistd.h>

static kn_graph *new_graph(void) {
    kn_graph *g = kn_graph_new("train_test");
    ck_assert_ptr_nonnull(g);
    g->opsets[0] = 17;
    g->opset_domains[0] = strdup("");
    g->n_opsets = 1;
    return g;
}

static int input(kn_graph *g, const char *name, kn_dtype dt, int nd, const int64_t *dims) {
    int v;
    kn_status *st = kn_loss_add_input(g, name, dt, nd, dims, &v);
    ck_assert_msg(st == NULL, "%s", st ? kn_status_message(st) : "");
    return v;
}

static void output(kn_graph *g, int v) {
    g->values[v].is_output = true;
    g->outputs = realloc(g->outputs, sizeof(int) * (size_t)(g->n_outputs + 1));
    g->outputs[g->n_outputs++] = v;
}

static kn_model *wrap(kn_graph *g) {
    kn_model *m = calloc(1, sizeof *m);
    m->graph = g;
    return m;
}

#define OK(expr) \
    do { \
        kn_status *st_ = (expr); \
        ck_assert_msg(st_ == NULL, "%s: %s", #expr, st_ ? kn_status_message(st_) : ""); \
    } while (0)

/* ---- losses ---- */

enum { L_CE, L_MSE, L_BCE, L_COS, L_MNRL, L_COSENT, L_POOL, L_CE3, N_LOSSES };
static const double u_v[9] = {1, 2, 0.5, 0.1, -1, 3, 2, 1, -2}, v_v[9] = {0.3, 0.2, -0.1, 1, 1, 1, -0.5, 2, 0.7};
static const double sc_v[3] = {0.8, 0.1, 0.5};
static const double lg_v[12] = {1, 2, 0.5, 0.1, -1, 3, 2, 2, 2, 0.3, 0.2, -0.1};
static const double x_v[6] = {0.5, -1.5, 2, 0, -0.3, 0.8}, y_v[6] = {1, 0, 0, 1, 0.5, 0.25};
static const double tok_v[12] = {1, 2, 3, 4, 9, 9, 0.5, -1, 7, 7, 7, 7};

/* Builds loss case k on float64 inputs; returns the loss value and fills the float inputs (the
 * values differentiated) and every input's data, in graph input order. */
static int build_loss(kn_graph *g, int k, const double **data) {
    int loss = -1;
    int64_t d33[2] = {3, 3}, d3[1] = {3}, d43[2] = {4, 3}, d4[1] = {4}, d32[2] = {3, 2};
    int u, v, s;
    switch (k) {
    case L_CE: {
        int lg = input(g, "logits", KN_F64, 2, d43), lb = input(g, "labels", KN_I64, 1, d4);
        data[0] = lg_v;
        OK(kn_loss_cross_entropy(g, lg, lb, -100, &loss));
        break;
    }
    case L_CE3: { /* token classification: logits [B, T, C], labels [B, T] (the same numbers) */
        int64_t d223[3] = {2, 2, 3}, d22[2] = {2, 2};
        int lg = input(g, "logits", KN_F64, 3, d223), lb = input(g, "labels", KN_I64, 2, d22);
        data[0] = lg_v;
        OK(kn_loss_cross_entropy(g, lg, lb, -100, &loss));
        break;
    }
    case L_MSE:
    case L_BCE: {
        int x = input(g, "x", KN_F64, 2, d32), y = input(g, "y", KN_F64, 2, d32);
        data[0] = x_v;
        data[1] = y_v;
        OK(k == L_MSE ? kn_loss_mse(g, x, y, &loss) : kn_loss_bce_with_logits(g, x, y, &loss));
        break;
    }
    case L_POOL: {
        int64_t dt[3] = {2, 3, 2}, dm[2] = {2, 3};
        int t = input(g, "tok", KN_F64, 3, dt), m = input(g, "mask", KN_I64, 2, dm), pooled;
        data[0] = tok_v;
        OK(kn_loss_mean_pool(g, t, m, &pooled));
        loss = pooled;
        break;
    }
    default:
        u = input(g, "u", KN_F64, 2, d33);
        v = input(g, "v", KN_F64, 2, d33);
        data[0] = u_v;
        data[1] = v_v;
        if (k == L_MNRL) {
            OK(kn_loss_multiple_negatives_ranking(g, u, v, 20.0, &loss));
            break;
        }
        s = input(g, "scores", KN_F64, 1, d3);
        data[2] = sc_v;
        OK(k == L_COS ? kn_loss_cosine_similarity(g, u, v, s, &loss) : kn_loss_cosent(g, u, v, s, 20.0, &loss));
    }
    return loss;
}

static const double loss_want[N_LOSSES] = {
    0.493684562137, 1.40708333333, 0.86183689403, 0.13231740414, 7.23183487752, 8.88926313316, 0, 0.493684562137};
static const char *loss_name[N_LOSSES] = {"cross_entropy", "mse",    "bce",       "cosine",
                                          "mnrl",          "cosent", "mean_pool", "cross_entropy [B,T,C]"};

static void set_inputs(const kn_graph *g, const double **data, kn_tensor *ins) {
    static const int64_t labels[4] = {1, 2, -100, 0}, mask[6] = {1, 1, 0, 1, 0, 0};
    for (int i = 0; i < g->n_inputs; i++) {
        const kn_value *v = &g->values[g->inputs[i]];
        kn_tensor *t;
        bool is_mask = !strcmp(v->name, "mask");
        if (v->type.dtype == KN_I64) t = mk_raw(KN_I64, v->type.ndim, v->type.dims, is_mask ? mask : labels);
        else t = mk(KN_F64, v->type.ndim, v->type.dims, data[i]);
        ins[i] = *t;
        free(t);
    }
}

/* The value and the gradient of every float input against finite differences (the mean pool,
 * not a scalar, is checked as its sum). */
START_TEST(loss_values_and_gradients) {
    int k = _i;
    const double *data[4] = {0};
    kn_graph *g = new_graph();
    int loss = build_loss(g, k, data);
    int wrt[4], n_wrt = 0;
    for (int i = 0; i < g->n_inputs; i++)
        if (g->values[g->inputs[i]].type.dtype == KN_F64) wrt[n_wrt++] = g->inputs[i];
    output(g, loss);
    OK(kn_autograd(g, loss, wrt, n_wrt, NULL));
    kn_model *m = wrap(g);
    OK(kn_graph_optimize(g, false));
    kn_session *s;
    OK(kn_session_create(m, NULL, &s));
    kn_tensor ins[4], outs[8];
    set_inputs(g, data, ins);
    OK(kn_session_run_values(s, ins, outs));
    double l = 0;
    for (int64_t e = 0; e < kn_numel(&outs[0]); e++) l += kn_get_f64(&outs[0], e);
    if (k == L_POOL) {
        const double want[4] = {2, 3, 0.5, -1};
        expect_close(&outs[0], want, 4, 1e-12, 1e-12, "mean_pool");
    } else {
        ck_assert_msg(close_to(l, loss_want[k], 1e-9, 1e-10), "%s: %.12g, torch %.12g", loss_name[k], l, loss_want[k]);
    }
    for (int w = 0; w < n_wrt; w++) {
        int idx = 0;
        while (g->inputs[idx] != wrt[w]) idx++;
        const kn_tensor *gt = &outs[1 + w];
        for (int64_t e = 0; e < kn_numel(&ins[idx]); e++) {
            double x0 = kn_get_f64(&ins[idx], e), h = 1e-6, lp = 0, lm = 0;
            kn_tensor o2[8];
            for (int side = 0; side < 2; side++) {
                kn_set_f64(&ins[idx], e, x0 + (side ? -h : h));
                OK(kn_session_run_values(s, ins, o2));
                double sum = 0;
                for (int64_t q = 0; q < kn_numel(&o2[0]); q++) sum += kn_get_f64(&o2[0], q);
                *(side ? &lm : &lp) = sum;
                for (int q = 0; q < g->n_outputs; q++) kn_tensor_release(&o2[q]);
            }
            kn_set_f64(&ins[idx], e, x0);
            double fd = (lp - lm) / (2 * h), got = kn_get_f64(gt, e);
            ck_assert_msg(close_to(got, fd, 1e-5, 1e-6), "%s: d/d%s[%lld] = %.9g, finite differences %.9g",
                          loss_name[k], g->values[wrt[w]].name, (long long)e, got, fd);
        }
    }
    for (int q = 0; q < g->n_outputs; q++) kn_tensor_release(&outs[q]);
    for (int i = 0; i < g->n_inputs; i++) kn_tensor_release(&ins[i]);
    kn_session_free(s);
    kn_model_free(m);
}
END_TEST

/* ---- optimisers and schedules: torch.optim after three steps of the same gradients ---- */

static void optim_run(const kn_optim_options *o, float *w) {
    static const float gs[3][3] = {{0.1f, -0.3f, 0.7f}, {-0.2f, 0.5f, 0.05f}, {0.3f, 0.3f, -0.4f}};
    float m[3] = {0}, v[3] = {0};
    w[0] = 1.0f, w[1] = -2.0f, w[2] = 0.5f;
    for (int s = 0; s < 3; s++) kn_optim_update(o, s + 1, kn_optim_lr(o, s), true, w, gs[s], m, v, 3);
}

START_TEST(optimisers_match_torch) {
    struct {
        kn_optim_kind kind;
        double momentum, dampening;
        bool nesterov;
        double wd;
        double want[3];
    } cases[] = {
        {KN_OPTIM_ADAMW, 0, 0, false, 0.01, {0.899452507, -1.97294843, 0.309855521}},
        {KN_OPTIM_ADAM, 0, 0, false, 0.01, {0.892958581, -1.97008383, 0.309926063}},
        {KN_OPTIM_SGD, 0.9, 0, true, 0.01, {0.954805553, -2.0733881, 0.318440884}},
        {KN_OPTIM_SGD, 0.9, 0.1, false, 0, {0.980100036, -2.03119993, 0.337750018}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        kn_optim_options o;
        kn_optim_options_init(&o);
        o.kind = cases[c].kind;
        o.lr = 0.1;
        o.momentum = cases[c].momentum;
        o.dampening = cases[c].dampening;
        o.nesterov = cases[c].nesterov;
        o.weight_decay = cases[c].wd;
        float w[3];
        optim_run(&o, w);
        for (int i = 0; i < 3; i++)
            ck_assert_msg(close_to(w[i], cases[c].want[i], 1e-6, 1e-7), "case %zu w[%d] = %.9g, torch %.9g", c, i,
                          (double)w[i], cases[c].want[i]);
    }
    const double lin[11] = {0,           0.166666667, 0.333333333,  0.5, 0.428571429, 0.357142857, 0.285714286,
                            0.214285714, 0.142857143, 0.0714285714, 0};
    const double cosv[11] = {0,           0.166666667,  0.333333333, 0.5, 0.475242217, 0.40587245, 0.305630233,
                             0.194369767, 0.0941275495, 0.024757783, 0};
    kn_optim_options o;
    kn_optim_options_init(&o);
    o.lr = 0.5;
    o.warmup_steps = 3;
    o.total_steps = 10;
    for (int s = 0; s <= 10; s++) {
        o.schedule = KN_SCHED_LINEAR;
        ck_assert(close_to(kn_optim_lr(&o, s), lin[s], 1e-8, 1e-9));
        o.schedule = KN_SCHED_COSINE;
        ck_assert(close_to(kn_optim_lr(&o, s), cosv[s], 1e-8, 1e-9));
        o.schedule = KN_SCHED_CONSTANT;
        ck_assert(kn_optim_lr(&o, s) == 0.5);
    }
    ck_assert(kn_name_matches("*bias*,*LayerNorm*", "encoder.layer.0.attention.output.LayerNorm.weight"));
    ck_assert(kn_name_matches("*bias*,*LayerNorm*", "fc1.bias"));
    ck_assert(!kn_name_matches("*bias*,*LayerNorm*", "fc1.weight"));
    ck_assert(!kn_name_matches(NULL, "fc1.weight"));
}
END_TEST

/* ---- the trainer on pred = x W (+ x W again when tied) + b, MSE against y ---- */

static const float X[12] = {0.5f, -1, 2, 0.3f, 0.1f, -0.7f, 1.5f, 0.2f, -0.4f, 1, 1, 1};
static const float Y[8] = {1, 0, -1, 0.5f, 0.2f, 0.2f, 2, -1};
static const float W0[6] = {0.1f, -0.2f, 0.3f, 0.05f, -0.1f, 0.4f}, B0[2] = {0.01f, -0.02f};

/* rows: the batch size of the graph's x and y inputs. */
static kn_model *linear_model(int64_t rows, bool tied, int *loss) {
    kn_graph *g = new_graph();
    int64_t dx[2] = {rows, 3}, dy[2] = {rows, 2}, dw[2] = {3, 2}, db[1] = {2};
    int x = input(g, "x", KN_F32, 2, dx), y = input(g, "y", KN_F32, 2, dy);
    int w = kn_graph_add_value(g, "fc.weight"), b = kn_graph_add_value(g, "fc.bias");
    g->values[w].constant = mk_raw(KN_F32, 2, dw, W0);
    g->values[b].constant = mk_raw(KN_F32, 1, db, B0);
    int h = kn_graph_add_value(g, "h"), p = kn_graph_add_value(g, "pred"), h2 = kn_graph_add_value(g, "h2");
    int in[2] = {x, w};
    kn_graph_add_node(g, "mm", "MatMul", "", in, 2, &h, 1, NULL, 0);
    if (tied) {
        kn_graph_add_node(g, "mm2", "MatMul", "", in, 2, &h2, 1, NULL, 0);
        int in3[2] = {h, h2};
        int hs = kn_graph_add_value(g, "hs");
        kn_graph_add_node(g, "sum", "Add", "", in3, 2, &hs, 1, NULL, 0);
        h = hs;
    }
    int in2[2] = {h, b};
    kn_graph_add_node(g, "add", "Add", "", in2, 2, &p, 1, NULL, 0);
    output(g, p);
    OK(kn_graph_resolve_ops(g));
    OK(kn_loss_mse(g, p, y, loss));
    return wrap(g);
}

static kn_trainer *linear_trainer(int64_t rows, bool tied, const kn_optim_options *oo, const char *trainable) {
    int loss;
    kn_model *m = linear_model(rows, tied, &loss);
    kn_trainer_options o;
    kn_trainer_options_init(&o);
    o.optim = *oo;
    o.trainable = trainable;
    o.num_threads = 1;
    kn_trainer *t = NULL;
    OK(kn_trainer_create(m, loss, &o, &t));
    return t;
}

static kn_status *linear_step(kn_trainer *t, int64_t row0, int64_t rows, double *loss, bool *updated) {
    kn_named_tensor b[2] = {
        {.name = "x", .dtype = KN_F32, .ndim = 2, .dims = {rows, 3}, .data = (void *)(X + 3 * row0)},
        {.name = "y", .dtype = KN_F32, .ndim = 2, .dims = {rows, 2}, .data = (void *)(Y + 2 * row0)}};
    return kn_trainer_step(t, b, 2, loss, updated);
}

static float *param(kn_trainer *t, const char *name) {
    for (int i = 0; i < kn_trainer_param_count(t); i++) {
        float *d;
        const char *n = kn_trainer_param(t, i, NULL, NULL, &d);
        if (!strcmp(n, name)) return d;
    }
    ck_abort_msg("no parameter %s", name);
    return NULL;
}

/* One SGD step against the closed form: dL/dW = 2 / (N * 2) * x^T (x W + b - y). */
START_TEST(trainer_sgd_step) {
    kn_optim_options o;
    kn_optim_options_init(&o);
    o.kind = KN_OPTIM_SGD;
    o.lr = 0.1;
    o.weight_decay = 0;
    for (int tied = 0; tied < 2; tied++) {
        kn_trainer *t = linear_trainer(4, tied, &o, NULL);
        ck_assert_int_eq(kn_trainer_param_count(t), 2); /* a tied weight is one parameter */
        double loss, want_loss = 0, gw[6] = {0}, gb[2] = {0};
        bool upd;
        OK(linear_step(t, 0, 4, &loss, &upd));
        ck_assert(upd);
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < 2; j++) {
                double p = B0[j];
                for (int i = 0; i < 3; i++) p += (tied ? 2.0 : 1.0) * X[3 * r + i] * W0[2 * i + j];
                double e = p - Y[2 * r + j];
                want_loss += e * e / 8;
                for (int i = 0; i < 3; i++) gw[2 * i + j] += (tied ? 2.0 : 1.0) * 2 * e / 8 * X[3 * r + i];
                gb[j] += 2 * e / 8;
            }
        ck_assert_msg(close_to(loss, want_loss, 1e-6, 1e-7), "loss %.9g, want %.9g", loss, want_loss);
        float *w = param(t, "fc.weight"), *b = param(t, "fc.bias");
        for (int i = 0; i < 6; i++) ck_assert(close_to(w[i], W0[i] - 0.1 * gw[i], 1e-5, 1e-6));
        for (int i = 0; i < 2; i++) ck_assert(close_to(b[i], B0[i] - 0.1 * gb[i], 1e-5, 1e-6));
        ck_assert_int_eq(kn_trainer_steps(t), 1);
        kn_trainer_free(t);
    }
}
END_TEST

/* Two micro-batches of 2 rows with accumulate 2 = one batch of 4 rows (AdamW, clipped). */
START_TEST(trainer_accumulate_and_clip) {
    kn_optim_options o;
    kn_optim_options_init(&o);
    o.lr = 0.05;
    o.max_grad_norm = 0.5;
    kn_trainer *big = linear_trainer(4, false, &o, "fc.*");
    o.accumulate = 2;
    kn_trainer *acc = linear_trainer(2, false, &o, "fc.*");
    for (int step = 0; step < 3; step++) {
        bool upd;
        OK(linear_step(big, 0, 4, NULL, &upd));
        ck_assert(upd);
        OK(linear_step(acc, 0, 2, NULL, &upd));
        ck_assert(!upd);
        OK(linear_step(acc, 2, 2, NULL, &upd));
        ck_assert(upd);
        ck_assert(close_to(kn_trainer_grad_norm(acc), kn_trainer_grad_norm(big), 1e-5, 1e-7));
    }
    float *a = param(acc, "fc.weight"), *b = param(big, "fc.weight");
    for (int i = 0; i < 6; i++) ck_assert_msg(close_to(a[i], b[i], 1e-5, 1e-6), "w[%d] %g vs %g", i, a[i], b[i]);
    kn_trainer_free(big);
    kn_trainer_free(acc);

    /* clipping to 1e-3 with plain SGD moves the parameters by lr * 1e-3 in global norm */
    kn_optim_options_init(&o);
    o.kind = KN_OPTIM_SGD;
    o.lr = 1.0;
    o.weight_decay = 0;
    o.max_grad_norm = 1e-3;
    kn_trainer *t = linear_trainer(4, false, &o, NULL);
    OK(linear_step(t, 0, 4, NULL, NULL));
    ck_assert(kn_trainer_grad_norm(t) > 0.01);
    double sq = 0;
    float *w = param(t, "fc.weight"), *bb = param(t, "fc.bias");
    for (int i = 0; i < 6; i++) sq += (w[i] - W0[i]) * (w[i] - W0[i]);
    for (int i = 0; i < 2; i++) sq += (bb[i] - B0[i]) * (bb[i] - B0[i]);
    ck_assert_msg(close_to(sqrt(sq), 1e-3, 1e-3, 0), "moved %g", sqrt(sq));
    kn_trainer_free(t);
}
END_TEST

/* Only fc.weight trains when chosen; fc.bias stays a constant; a pattern matching nothing fails. */
START_TEST(trainer_patterns) {
    kn_optim_options o;
    kn_optim_options_init(&o);
    kn_trainer *t = linear_trainer(4, false, &o, "*.weight");
    ck_assert_int_eq(kn_trainer_param_count(t), 1);
    OK(linear_step(t, 0, 4, NULL, NULL));
    kn_trainer_free(t);
    int loss;
    kn_model *m = linear_model(4, false, &loss);
    kn_trainer_options to;
    kn_trainer_options_init(&to);
    to.trainable = "fc.weight,encoder.*";
    kn_status *st = kn_trainer_create(m, loss, &to, &t);
    ck_assert_ptr_nonnull(st);
    ck_assert_msg(strstr(kn_status_message(st), "encoder.*") != NULL, "%s", kn_status_message(st));
    kn_status_free(st);
    /* a loss no parameter reaches */
    m = linear_model(4, false, &loss);
    int y = kn_graph_find_value(m->graph, "y");
    OK(kn_loss_mse(m->graph, y, y, &loss));
    st = kn_trainer_create(m, loss, NULL, &t);
    ck_assert_ptr_nonnull(st);
    ck_assert_msg(strstr(kn_status_message(st), "depends on none") != NULL, "%s", kn_status_message(st));
    kn_status_free(st);
}
END_TEST

/* A weight behind a foldable Transpose (pred = x Transpose(Wt)): the second step's loss is the
 * one the weights after the first step give, so nothing folded or packed the initial weight. */
START_TEST(trainer_weight_not_folded) {
    kn_graph *g = new_graph();
    int64_t dx[2] = {4, 3}, dy[2] = {4, 2}, dw[2] = {2, 3};
    int x = input(g, "x", KN_F32, 2, dx), y = input(g, "y", KN_F32, 2, dy);
    int w = kn_graph_add_value(g, "wt"), wtr = kn_graph_add_value(g, "w"), p = kn_graph_add_value(g, "pred");
    const float wt0[6] = {0.1f, 0.3f, -0.1f, -0.2f, 0.05f, 0.4f};
    g->values[w].constant = mk_raw(KN_F32, 2, dw, wt0);
    kn_graph_add_node(g, "tr", "Transpose", "", &w, 1, &wtr, 1, NULL, 0);
    int in[2] = {x, wtr};
    kn_graph_add_node(g, "mm", "MatMul", "", in, 2, &p, 1, NULL, 0);
    output(g, p);
    OK(kn_graph_resolve_ops(g));
    int loss;
    OK(kn_loss_mse(g, p, y, &loss));
    kn_trainer_options o;
    kn_trainer_options_init(&o);
    o.optim.kind = KN_OPTIM_SGD;
    o.optim.lr = 0.5;
    o.optim.weight_decay = 0;
    kn_trainer *t;
    OK(kn_trainer_create(wrap(g), loss, &o, &t));
    double l1, l2, want = 0;
    OK(linear_step(t, 0, 4, &l1, NULL));
    float *wt = param(t, "wt");
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < 2; j++) {
            double e = -Y[2 * r + j];
            for (int i = 0; i < 3; i++) e += X[3 * r + i] * wt[3 * j + i];
            want += e * e / 8;
        }
    OK(linear_step(t, 0, 4, &l2, NULL));
    ck_assert_msg(close_to(l2, want, 1e-6, 1e-7) && fabs(l2 - l1) > 1e-3,
                  "step 2 loss %.9g, the updated weights give %.9g", l2, want);
    kn_trainer_free(t);
}
END_TEST

/* A micro-batch with a NaN (then an infinite) input is refused with KN_ERR_NON_FINITE and
 * changes nothing: with AdamW and 2 micro-batches per update, good / bad / bad / good gives the
 * weights of good / good bit for bit, and the step count and moments are the same. */
START_TEST(trainer_nonfinite_keeps_state) {
    kn_optim_options o;
    kn_optim_options_init(&o);
    o.lr = 0.05;
    o.accumulate = 2;
    kn_trainer *ref = linear_trainer(2, false, &o, NULL), *t = linear_trainer(2, false, &o, NULL);
    float bad[6];
    memcpy(bad, X, sizeof bad);
    for (int round = 0; round < 2; round++) {
        bool upd;
        OK(linear_step(ref, 0, 2, NULL, NULL));
        OK(linear_step(ref, 2, 2, NULL, &upd));
        ck_assert(upd);
        OK(linear_step(t, 0, 2, NULL, NULL));
        float before[8];
        memcpy(before, param(t, "fc.weight"), 6 * sizeof(float));
        memcpy(before + 6, param(t, "fc.bias"), 2 * sizeof(float));
        for (int k = 0; k < 2; k++) {
            bad[1] = k ? INFINITY : NAN;
            kn_named_tensor b[2] = {{.name = "x", .dtype = KN_F32, .ndim = 2, .dims = {2, 3}, .data = bad},
                                    {.name = "y", .dtype = KN_F32, .ndim = 2, .dims = {2, 2}, .data = (void *)Y}};
            double loss = 0;
            upd = true;
            kn_status *st = kn_trainer_step(t, b, 2, &loss, &upd);
            ck_assert_ptr_nonnull(st);
            ck_assert_int_eq(kn_status_get_code(st), KN_ERR_NON_FINITE);
            ck_assert_msg(strstr(kn_status_message(st), "non-finite loss at update step") != NULL, "%s",
                          kn_status_message(st));
            kn_status_free(st);
            ck_assert(!upd && !isfinite(loss));
            ck_assert_int_eq(kn_trainer_steps(t), round);
            ck_assert(!memcmp(before, param(t, "fc.weight"), 6 * sizeof(float)));
            ck_assert(!memcmp(before + 6, param(t, "fc.bias"), 2 * sizeof(float)));
        }
        OK(linear_step(t, 2, 2, NULL, &upd));
        ck_assert(upd);
        ck_assert(!memcmp(param(t, "fc.weight"), param(ref, "fc.weight"), 6 * sizeof(float)));
        ck_assert(!memcmp(param(t, "fc.bias"), param(ref, "fc.bias"), 2 * sizeof(float)));
    }
    kn_trainer_free(ref);
    kn_trainer_free(t);
}
END_TEST

/* kn_head_linear: torch.nn.Linear's bounds (U(-1/sqrt(in), 1/sqrt(in)) for weight and bias), the
 * same weights for the same seed and others for another, Gemm for a rank-2 input; CLS pooling
 * takes token 0; the head trains (its output a graph output) like any weight. */
START_TEST(head_linear_init_and_train) {
    float w[2][64 * 3];
    for (int run = 0; run < 3; run++) {
        kn_graph *g = new_graph();
        int64_t dx[3] = {2, 4, 64};
        int x = input(g, "tokens", KN_F32, 3, dx), pooled, y;
        OK(kn_head_cls_pool(g, x, &pooled));
        OK(kn_head_linear(g, pooled, 64, 3, run == 2 ? 8 : 7, "cls", "logits", &y));
        OK(kn_head_output(g, y));
        ck_assert(g->values[y].is_output && !strcmp(g->values[y].name, "logits"));
        const kn_tensor *wt = g->values[kn_graph_find_value(g, "cls.weight")].constant;
        const kn_tensor *bt = g->values[kn_graph_find_value(g, "cls.bias")].constant;
        ck_assert(wt->ndim == 2 && wt->dims[0] == 3 && wt->dims[1] == 64 && bt->dims[0] == 3);
        double bound = 1.0 / 8.0, mx = 0;
        for (int i = 0; i < 192; i++) {
            float v = ((float *)wt->data)[i];
            ck_assert(fabs(v) <= bound);
            mx = fmax(mx, fabs(v));
        }
        for (int i = 0; i < 3; i++) ck_assert(fabs(((float *)bt->data)[i]) <= bound);
        ck_assert_msg(mx > 0.9 * bound, "max |w| %g of bound %g", mx, bound);
        memcpy(w[run], wt->data, sizeof w[run]);
        if (run < 2) {
            kn_graph_free(g);
            continue;
        }
        /* the logits of token 0 by hand, then a step that moves the head */
        int64_t dl[1] = {2};
        int labels = input(g, "labels", KN_I64, 1, dl), loss;
        OK(kn_loss_cross_entropy(g, y, labels, -100, &loss));
        kn_trainer_options o;
        kn_trainer_options_init(&o);
        o.num_threads = 1;
        kn_trainer *t;
        OK(kn_trainer_create(wrap(g), loss, &o, &t));
        ck_assert_int_eq(kn_trainer_param_count(t), 2);
        float tok[2 * 4 * 64];
        for (int i = 0; i < 2 * 4 * 64; i++) tok[i] = (float)sin(i * 0.37);
        int64_t lab[2] = {0, 2};
        kn_named_tensor b[2] = {{.name = "tokens", .dtype = KN_F32, .ndim = 3, .dims = {2, 4, 64}, .data = tok},
                                {.name = "labels", .dtype = KN_I64, .ndim = 1, .dims = {2}, .data = lab}};
        float logits[6];
        kn_named_tensor out = {.name = "logits", .data = logits, .capacity = sizeof logits};
        OK(kn_trainer_forward(t, b, 2, &out, 1));
        ck_assert(out.ndim == 2 && out.dims[0] == 2 && out.dims[1] == 3);
        float *wp = param(t, "cls.weight"), *bp = param(t, "cls.bias");
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < 3; c++) {
                double want = bp[c];
                for (int i = 0; i < 64; i++) want += (double)tok[r * 256 + i] * wp[c * 64 + i];
                ck_assert_msg(close_to(logits[r * 3 + c], want, 1e-5, 1e-6), "logit %g want %g", logits[r * 3 + c],
                              want);
            }
        double l1, l2;
        OK(kn_trainer_step(t, b, 2, &l1, NULL));
        OK(kn_trainer_step(t, b, 2, &l2, NULL));
        ck_assert_msg(l2 < l1, "loss %g then %g", l1, l2);
        kn_trainer_free(t);
    }
    ck_assert(!memcmp(w[0], w[1], sizeof w[0]));
    ck_assert(memcmp(w[0], w[2], sizeof w[0]));
}
END_TEST

int main(void) {
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("train");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, loss_values_and_gradients, 0, N_LOSSES);
    tcase_add_test(tc, optimisers_match_torch);
    tcase_add_test(tc, trainer_sgd_step);
    tcase_add_test(tc, trainer_accumulate_and_clip);
    tcase_add_test(tc, trainer_patterns);
    tcase_add_test(tc, trainer_weight_not_folded);
    tcase_add_test(tc, trainer_nonfinite_keeps_state);
    tcase_add_test(tc, head_linear_init_and_train);
    suite_add_tcase(s, tc);
    return kn_test_run_suite(s);
}
