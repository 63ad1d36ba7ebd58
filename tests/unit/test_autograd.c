/* Gradient checks of the autograd pass (autograd/autograd.c) and every gradient rule: each case
 * builds a tiny graph by hand (float64 inputs), takes loss = ReduceSum(y * R) over its outputs
 * with fixed pseudo-random R, runs the pass, runs the graph in a kiln session and compares each
 * gradient with central finite differences of the loss, as ggml's test-backend-ops does. The
 * cases cover broadcasting, odd sizes, reductions with keepdims 0/1 and negative axes, MatMul's
 * batch broadcasting and 1-D operands, Gather with repeated indices, a two-layer MLP and an
 * embedding + LayerNorm + attention-like block, the convolution family (1-D to 3-D, strides,
 * pads, auto_pad, dilations, groups, float32 GEMM paths), pools, BatchNormalization in both
 * modes, Dropout in training mode, activations, reductions and data movement; then the error
 * for an op without a rule, ties at maxima, kn_graph_set_dropout, and a check that every op with
 * a RULE row appears in some case. */
#include "tests/unit/harness.h"
#include "autograd/autograd.h"
#include "autograd/dropout.h"
#include "graph/model.h"
#include "graph/passes.h"
#include "runtime/kiln.h"
#include <stdio.h>

/* ---- graph building ---- */

static kn_graph *tg_new(void) {
    kn_graph *g = kn_graph_new("autograd_test");
    ck_assert_ptr_nonnull(g);
    g->opsets[0] = 17;
    g->opset_domains[0] = strdup("");
    g->opsets[1] = 1;
    g->opset_domains[1] = strdup("com.microsoft");
    g->n_opsets = 2;
    return g;
}

static int tg_value(kn_graph *g, const char *name) {
    int v = kn_graph_find_value(g, name);
    if (v < 0) v = kn_graph_add_value(g, name);
    ck_assert_int_ge(v, 0);
    return v;
}

static void tg_input(kn_graph *g, const char *name, kn_dtype dt, const int64_t *dims, int nd) {
    int v = tg_value(g, name);
    g->values[v].is_input = true;
    g->values[v].type.dtype = dt;
    kn_tensor_set_shape(&g->values[v].type, nd, dims);
    g->inputs = realloc(g->inputs, sizeof(int) * (size_t)(g->n_inputs + 1));
    g->inputs[g->n_inputs++] = v;
}

static void tg_output(kn_graph *g, const char *name) {
    int v = tg_value(g, name);
    g->values[v].is_output = true;
    g->outputs = realloc(g->outputs, sizeof(int) * (size_t)(g->n_outputs + 1));
    g->outputs[g->n_outputs++] = v;
}

static void tg_const(kn_graph *g, const char *name, kn_tensor *t) {
    int v = tg_value(g, name);
    g->values[v].constant = t;
    g->values[v].type.dtype = t->dtype;
    kn_tensor_set_shape(&g->values[v].type, t->ndim, t->dims);
}

static void tg_ints(kn_graph *g, const char *name, int n, const int64_t *vals) {
    int64_t d[1] = {n};
    tg_const(g, name, mk_raw(KN_I64, 1, d, vals));
}

static void tg_f64(kn_graph *g, const char *name, int nd, const int64_t *dims, const double *vals) {
    tg_const(g, name, mk(KN_F64, nd, dims, vals));
}

/* A node with inputs / outputs as space-separated value names ("-": omitted), attributes copied;
 * opset 0 takes the graph's. */
static void tg_node_v(kn_graph *g, const char *op, const char *domain, int opset, const char *ins, const char *outs,
                      const kn_attr *attrs, int n_attrs) {
    int iv[16], ov[16], ni = 0, no = 0;
    char buf[256], *save = NULL;
    snprintf(buf, sizeof buf, "%s", ins);
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save))
        iv[ni++] = strcmp(t, "-") ? tg_value(g, t) : -1;
    snprintf(buf, sizeof buf, "%s", outs);
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) ov[no++] = tg_value(g, t);
    kn_attr *a = n_attrs ? calloc((size_t)n_attrs, sizeof *a) : NULL;
    for (int i = 0; i < n_attrs; i++) ck_assert_ptr_null(kn_attr_copy(&a[i], &attrs[i]));
    char name[64];
    snprintf(name, sizeof name, "n%d_%s", g->n_nodes, op);
    int id = kn_graph_add_node(g, name, op, domain, iv, ni, ov, no, a, n_attrs);
    ck_assert_int_ge(id, 0);
    g->nodes[id].opset = opset;
}

#define NODE(g, op, ins, outs) tg_node_v(g, op, "", 0, ins, outs, NULL, 0)
#define NODE_A(g, op, ins, outs, ...) \
    tg_node_v(g, op, "", 0, ins, outs, (kn_attr[]){__VA_ARGS__}, sizeof((kn_attr[]){__VA_ARGS__}) / sizeof(kn_attr))
#define D(...) (int64_t[]){__VA_ARGS__}, sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)
#define IN(g, name, ...) tg_input(g, name, KN_F64, D(__VA_ARGS__))

/* ---- running ---- */

static uint32_t lcg(uint32_t *s) {
    *s = *s * 1103515245u + 12345u;
    return (*s >> 8) & 0xffffff;
}
static double urand(uint32_t *s, double lo, double hi) { return lo + (hi - lo) * (double)lcg(s) / 16777216.0; }

static kn_session *open_session(kn_graph *g, kn_model **m) {
    *m = calloc(1, sizeof **m);
    (*m)->graph = g;
    kn_session *s = NULL;
    kn_status *st = kn_session_create(*m, NULL, &s);
    ck_assert_msg(st == NULL, "session: %s", st ? kn_status_message(st) : "");
    return s;
}

typedef void (*build_fn)(kn_graph *g);
typedef struct gcase {
    const char *name;
    build_fn build;
    double lo, hi; /* input range (0, 0: [-1, 1]) */
    double h, tol; /* finite-difference step and tolerance (0: 1e-6 and 1e-6) */
} gcase;

/* The loss of the session's graph (its output 0) at the given inputs. */
static double run_loss(kn_session *s, const kn_tensor *inputs, int n_out) {
    kn_tensor outs[64];
    ck_assert_int_le(n_out, 64);
    kn_status *st = kn_session_run_values(s, inputs, outs);
    ck_assert_msg(st == NULL, "run: %s", st ? kn_status_message(st) : "");
    double l = kn_get_f64(&outs[0], 0);
    for (int k = 0; k < n_out; k++) kn_tensor_release(&outs[k]);
    return l;
}

/* Runs one case; returns whether every gradient matched, printing the worst element if not. */
static bool check_case(const gcase *k) {
    double lo = k->lo == k->hi ? -1 : k->lo, hi = k->lo == k->hi ? 1 : k->hi;
    double h = k->h ? k->h : 1e-6, tol = k->tol ? k->tol : 1e-6;
    /* 1. the forward alone, for the outputs' shapes */
    kn_graph *g = tg_new();
    k->build(g);
    ck_assert_ptr_null(kn_graph_resolve_ops(g));
    int n_in = g->n_inputs, n_y = g->n_outputs;
    kn_tensor *inputs = calloc((size_t)n_in, sizeof *inputs);
    uint32_t seed = 12345;
    for (int i = 0; i < n_in; i++) {
        const kn_value *v = &g->values[g->inputs[i]];
        kn_tensor *t = mk(v->type.dtype, v->type.ndim, v->type.dims, NULL);
        for (int64_t e = 0; e < kn_numel(t); e++) kn_set_f64(t, e, urand(&seed, lo, hi));
        inputs[i] = *t;
        free(t);
    }
    kn_model *m;
    kn_session *s = open_session(g, &m);
    kn_tensor ys[16];
    ck_assert_int_le(n_y, 16);
    kn_status *st = kn_session_run_values(s, inputs, ys);
    ck_assert_msg(st == NULL, "%s: forward: %s", k->name, st ? kn_status_message(st) : "");
    kn_session_free(s);
    kn_model_free(m);

    /* 2. the same graph with the loss and the backward */
    g = tg_new();
    k->build(g);
    int n_old_out = g->n_outputs;
    g->n_outputs = 0; /* the loss and the gradients are the outputs */
    char terms[512] = "";
    for (int o = 0; o < n_y; o++) {
        char r[32], p[32], t[32];
        snprintf(r, sizeof r, "R%d", o);
        snprintf(p, sizeof p, "P%d", o);
        snprintf(t, sizeof t, "T%d", o);
        kn_tensor *R = mk(ys[o].dtype, ys[o].ndim, ys[o].dims, NULL);
        for (int64_t e = 0; e < kn_numel(R); e++) kn_set_f64(R, e, urand(&seed, -1, 1));
        tg_const(g, r, R);
        char ins[128];
        snprintf(ins, sizeof ins, "%s %s", g->values[g->outputs[o]].name, r);
        NODE(g, "Mul", ins, p);
        NODE_A(g, "ReduceSum", p, t, attr_i("keepdims", 0));
        size_t len = strlen(terms);
        snprintf(terms + len, sizeof terms - len, "%s%s", o ? " " : "", t);
        kn_tensor_release(&ys[o]);
    }
    (void)n_old_out;
    if (n_y == 1) NODE(g, "Identity", terms, "loss");
    else NODE(g, "Sum", terms, "loss");
    for (int v = 0; v < g->n_values; v++) g->values[v].is_output = false;
    tg_output(g, "loss");
    ck_assert_ptr_null(kn_graph_resolve_ops(g));
    int wrt[16], grads[16];
    for (int i = 0; i < n_in; i++) wrt[i] = g->inputs[i];
    st = kn_autograd(g, kn_graph_find_value(g, "loss"), wrt, n_in, grads);
    ck_assert_msg(st == NULL, "%s: autograd: %s", k->name, st ? kn_status_message(st) : "");
    int n_out = g->n_outputs;
    s = open_session(g, &m);
    kn_tensor outs[64];
    st = kn_session_run_values(s, inputs, outs);
    ck_assert_msg(st == NULL, "%s: run: %s", k->name, st ? kn_status_message(st) : "");

    /* 3. every element of every gradient against (L(x + h) - L(x - h)) / 2h */
    bool ok = true;
    for (int i = 0; i < n_in; i++) {
        const kn_tensor *gt = &outs[1 + i];
        ck_assert_int_eq(kn_numel(gt), kn_numel(&inputs[i]));
        double worst = 0, got_w = 0, want_w = 0;
        int64_t at = -1;
        for (int64_t e = 0; e < kn_numel(&inputs[i]); e++) {
            double x0 = kn_get_f64(&inputs[i], e);
            kn_set_f64(&inputs[i], e, x0 + h);
            double lp = run_loss(s, inputs, n_out);
            kn_set_f64(&inputs[i], e, x0 - h);
            double lm = run_loss(s, inputs, n_out);
            kn_set_f64(&inputs[i], e, x0);
            double want = (lp - lm) / (2 * h), got = kn_get_f64(gt, e);
            double err = fabs(got - want) / (tol + tol * fabs(want));
            if (!(err <= worst)) { /* NaN counts as the worst */
                worst = isnan(err) ? INFINITY : err;
                at = e;
                got_w = got;
                want_w = want;
            }
        }
        if (worst > 1) {
            fprintf(stderr, "autograd %s: grad of '%s'[%lld] = %.10g, finite differences %.10g\n", k->name,
                    g->values[g->inputs[i]].name, (long long)at, got_w, want_w);
            ok = false;
        }
    }
    (void)grads;
    for (int o = 0; o < n_out; o++) kn_tensor_release(&outs[o]);
    for (int i = 0; i < n_in; i++) kn_tensor_release(&inputs[i]);
    free(inputs);
    kn_session_free(s);
    kn_model_free(m);
    return ok;
}

/* ---- the cases ---- */

static void b_add(kn_graph *g) {
    IN(g, "a", 2, 3, 4);
    IN(g, "b", 4);
    NODE(g, "Add", "a b", "y");
    tg_output(g, "y");
}
static void b_mul(kn_graph *g) {
    IN(g, "a", 2, 1, 4);
    IN(g, "b", 3, 1);
    NODE(g, "Mul", "a b", "y");
    tg_output(g, "y");
}
static void b_sub(kn_graph *g) {
    IN(g, "a", 1, 7);
    IN(g, "b", 13, 1);
    NODE(g, "Sub", "a b", "y");
    tg_output(g, "y");
}
static void b_div(kn_graph *g) {
    IN(g, "a", 2, 3);
    IN(g, "b", 3);
    NODE(g, "Div", "a b", "y");
    tg_output(g, "y");
}
static void b_pow(kn_graph *g) {
    IN(g, "a", 2, 3);
    IN(g, "b", 2, 3);
    NODE(g, "Pow", "a b", "y");
    tg_output(g, "y");
}
static void b_pow_const(kn_graph *g) {
    IN(g, "a", 5);
    double e = 3;
    tg_f64(g, "e", 0, NULL, &e);
    NODE(g, "Pow", "a e", "y");
    tg_output(g, "y");
}
static void b_same_twice(kn_graph *g) /* y = x * x + x: contributions accumulate */
{
    IN(g, "x", 7);
    NODE(g, "Mul", "x x", "xx");
    NODE(g, "Add", "xx x", "y");
    tg_output(g, "y");
}
#define UNARY_CASE(fn, op) \
    static void fn(kn_graph *g) { \
        IN(g, "x", 2, 7); \
        NODE(g, op, "x", "y"); \
        tg_output(g, "y"); \
    }
UNARY_CASE(b_neg, "Neg")
UNARY_CASE(b_sqrt, "Sqrt")
UNARY_CASE(b_exp, "Exp")
UNARY_CASE(b_log, "Log")
UNARY_CASE(b_tanh, "Tanh")
UNARY_CASE(b_sigmoid, "Sigmoid")
UNARY_CASE(b_relu, "Relu")
UNARY_CASE(b_erf, "Erf")
UNARY_CASE(b_identity, "Identity")
UNARY_CASE(b_dropout, "Dropout")
static void b_gelu(kn_graph *g) {
    IN(g, "x", 13);
    tg_node_v(g, "Gelu", "", 20, "x", "y", NULL, 0);
    tg_output(g, "y");
}
static void b_gelu_tanh(kn_graph *g) {
    IN(g, "x", 13);
    tg_node_v(g, "Gelu", "", 20, "x", "y", (kn_attr[]){attr_s("approximate", "tanh")}, 1);
    tg_output(g, "y");
}
static void b_ms_gelu(kn_graph *g) {
    IN(g, "x", 3, 5);
    tg_node_v(g, "Gelu", "com.microsoft", 1, "x", "y", NULL, 0);
    tg_output(g, "y");
}
static void b_bias_gelu(kn_graph *g) {
    IN(g, "a", 3, 5);
    IN(g, "b", 5);
    tg_node_v(g, "BiasGelu", "com.microsoft", 1, "a b", "y", NULL, 0);
    tg_output(g, "y");
}
static void b_fast_gelu(kn_graph *g) {
    IN(g, "a", 3, 5);
    IN(g, "b", 5);
    tg_node_v(g, "FastGelu", "com.microsoft", 1, "a b", "y", NULL, 0);
    tg_output(g, "y");
}
static void b_where(kn_graph *g) {
    IN(g, "a", 2, 3);
    IN(g, "b", 3);
    int64_t d[2] = {2, 3};
    tg_const(g, "c", mk(KN_BOOL, 2, d, (double[]){1, 0, 0, 1, 1, 0}));
    NODE(g, "Where", "c a b", "y");
    tg_output(g, "y");
}
static void b_cast(kn_graph *g) {
    IN(g, "x", 2, 3);
    NODE_A(g, "Cast", "x", "f", attr_i("to", KN_F32));
    NODE_A(g, "Cast", "f", "y", attr_i("to", KN_F64));
    tg_output(g, "y");
}
static void b_castlike(kn_graph *g) {
    IN(g, "x", 2, 3);
    IN(g, "z", 3);
    NODE(g, "Mul", "x z", "p");
    NODE(g, "CastLike", "p z", "y");
    tg_output(g, "y");
}
static void b_max(kn_graph *g) { /* inputs drawn apart: no ties */
    IN(g, "a", 2, 3);
    IN(g, "b", 3);
    IN(g, "c", 2, 1);
    NODE(g, "Max", "a b c", "y");
    tg_output(g, "y");
}
static void b_min(kn_graph *g) {
    IN(g, "a", 2, 3);
    IN(g, "b", 2, 3);
    NODE(g, "Min", "a b", "y");
    tg_output(g, "y");
}
static void b_matmul(kn_graph *g) {
    IN(g, "a", 2, 3, 4);
    IN(g, "b", 4, 5);
    NODE(g, "MatMul", "a b", "y");
    tg_output(g, "y");
}
static void b_matmul_bcast(kn_graph *g) {
    IN(g, "a", 2, 1, 3, 4);
    IN(g, "b", 3, 4, 2);
    NODE(g, "MatMul", "a b", "y");
    tg_output(g, "y");
}
static void b_matmul_vec_left(kn_graph *g) {
    IN(g, "a", 4);
    IN(g, "b", 2, 4, 3);
    NODE(g, "MatMul", "a b", "y");
    tg_output(g, "y");
}
static void b_matmul_vec_right(kn_graph *g) {
    IN(g, "a", 2, 3, 4);
    IN(g, "b", 4);
    NODE(g, "MatMul", "a b", "y");
    tg_output(g, "y");
}
static void b_matmul_dot(kn_graph *g) {
    IN(g, "a", 7);
    IN(g, "b", 7);
    NODE(g, "MatMul", "a b", "y");
    tg_output(g, "y");
}
static void b_gemm(kn_graph *g) {
    IN(g, "a", 3, 4);
    IN(g, "b", 4, 5);
    IN(g, "c", 5);
    NODE_A(g, "Gemm", "a b c", "y", attr_f("alpha", 0.5f), attr_f("beta", 2.0f));
    tg_output(g, "y");
}
static void b_gemm_t(kn_graph *g) {
    IN(g, "a", 4, 3);
    IN(g, "b", 5, 4);
    IN(g, "c", 3, 1);
    NODE_A(g, "Gemm", "a b c", "y", attr_i("transA", 1), attr_i("transB", 1));
    tg_output(g, "y");
}
static void b_rsum_k0(kn_graph *g) {
    IN(g, "x", 2, 3, 4);
    tg_ints(g, "ax", 1, (int64_t[]){1});
    NODE_A(g, "ReduceSum", "x ax", "y", attr_i("keepdims", 0));
    tg_output(g, "y");
}
static void b_rsum_k1(kn_graph *g) {
    IN(g, "x", 2, 3, 4);
    tg_ints(g, "ax", 1, (int64_t[]){-1});
    NODE(g, "ReduceSum", "x ax", "y");
    tg_output(g, "y");
}
static void b_rsum_all(kn_graph *g) {
    IN(g, "x", 3, 1, 5);
    NODE_A(g, "ReduceSum", "x", "y", attr_i("keepdims", 0));
    tg_output(g, "y");
}
static void b_rmean_k0(kn_graph *g) {
    IN(g, "x", 2, 3, 4);
    int64_t ax[2] = {0, -1};
    NODE_A(g, "ReduceMean", "x", "y", attr_ints("axes", ax, 2), attr_i("keepdims", 0));
    tg_output(g, "y");
}
static void b_rmean_k1(kn_graph *g) {
    IN(g, "x", 13, 2);
    int64_t ax[1] = {-2};
    NODE_A(g, "ReduceMean", "x", "y", attr_ints("axes", ax, 1));
    tg_output(g, "y");
}
static void b_softmax(kn_graph *g) {
    IN(g, "x", 2, 3, 5);
    NODE(g, "Softmax", "x", "y");
    tg_output(g, "y");
}
static void b_softmax_ax1(kn_graph *g) {
    IN(g, "x", 2, 3, 5);
    NODE_A(g, "Softmax", "x", "y", attr_i("axis", 1));
    tg_output(g, "y");
}
static void b_softmax_op11(kn_graph *g) /* before opset 13: rows of everything from axis 1 on */
{
    IN(g, "x", 2, 3, 4);
    tg_node_v(g, "Softmax", "", 11, "x", "y", NULL, 0);
    tg_output(g, "y");
}
static void b_logsoftmax(kn_graph *g) {
    IN(g, "x", 3, 7);
    NODE(g, "LogSoftmax", "x", "y");
    tg_output(g, "y");
}
static void b_layernorm(kn_graph *g) {
    IN(g, "x", 2, 3, 8);
    IN(g, "s", 8);
    IN(g, "b", 8);
    NODE_A(g, "LayerNormalization", "x s b", "y", attr_i("stash_type", KN_F64));
    tg_output(g, "y");
}
static void b_layernorm_ax1(kn_graph *g) {
    IN(g, "x", 2, 3, 4);
    IN(g, "s", 3, 4);
    NODE_A(g, "LayerNormalization", "x s", "y", attr_i("axis", 1), attr_i("stash_type", KN_F64));
    tg_output(g, "y");
}
static void b_reshape(kn_graph *g) {
    IN(g, "x", 2, 3, 4);
    tg_ints(g, "sh", 2, (int64_t[]){-1, 4});
    NODE(g, "Reshape", "x sh", "r");
    NODE(g, "Tanh", "r", "y"); /* a shape-dependent consumer so a wrong layout would show */
    tg_output(g, "y");
}
static void b_flatten(kn_graph *g) {
    IN(g, "x", 2, 3, 4);
    NODE_A(g, "Flatten", "x", "y", attr_i("axis", 2));
    tg_output(g, "y");
}
static void b_squeeze(kn_graph *g) {
    IN(g, "x", 2, 1, 3);
    tg_ints(g, "ax", 1, (int64_t[]){1});
    NODE(g, "Squeeze", "x ax", "y");
    tg_output(g, "y");
}
static void b_unsqueeze(kn_graph *g) {
    IN(g, "x", 3);
    tg_ints(g, "ax", 2, (int64_t[]){0, 2});
    NODE(g, "Unsqueeze", "x ax", "y");
    tg_output(g, "y");
}
static void b_transpose(kn_graph *g) {
    IN(g, "x", 2, 3, 4);
    int64_t p[3] = {2, 0, 1};
    NODE_A(g, "Transpose", "x", "y", attr_ints("perm", p, 3));
    tg_output(g, "y");
}
static void b_transpose_default(kn_graph *g) {
    IN(g, "x", 2, 3, 4);
    NODE(g, "Transpose", "x", "y");
    tg_output(g, "y");
}
static void b_concat(kn_graph *g) {
    IN(g, "a", 2, 3);
    IN(g, "b", 2, 5);
    IN(g, "c", 2, 1);
    NODE_A(g, "Concat", "a b c", "y", attr_i("axis", -1));
    tg_output(g, "y");
}
static void b_split(kn_graph *g) {
    IN(g, "x", 2, 7);
    tg_ints(g, "sp", 2, (int64_t[]){3, 4});
    NODE_A(g, "Split", "x sp", "y1 y2", attr_i("axis", 1));
    tg_output(g, "y1");
    tg_output(g, "y2");
}
static void b_split_unused(kn_graph *g) /* the second piece reaches no loss: zeros for it */
{
    IN(g, "x", 6, 2);
    NODE_A(g, "Split", "x", "y1 y2", attr_i("axis", 0));
    tg_output(g, "y1");
}
static void b_slice(kn_graph *g) {
    IN(g, "x", 5, 7);
    tg_ints(g, "st", 2, (int64_t[]){1, -5});
    tg_ints(g, "en", 2, (int64_t[]){4, 7});
    tg_ints(g, "ax", 2, (int64_t[]){0, 1});
    tg_ints(g, "sp", 2, (int64_t[]){1, 2});
    NODE(g, "Slice", "x st en ax sp", "y");
    tg_output(g, "y");
}
static void b_slice_neg(kn_graph *g) {
    IN(g, "x", 7);
    tg_ints(g, "st", 1, (int64_t[]){-1});
    tg_ints(g, "en", 1, (int64_t[]){0});
    tg_ints(g, "ax", 1, (int64_t[]){0});
    tg_ints(g, "sp", 1, (int64_t[]){-3});
    NODE(g, "Slice", "x st en ax sp", "y");
    tg_output(g, "y");
}
static void b_expand(kn_graph *g) {
    IN(g, "x", 3, 1);
    tg_ints(g, "sh", 3, (int64_t[]){2, 3, 4});
    NODE(g, "Expand", "x sh", "y");
    tg_output(g, "y");
}
static void b_gather(kn_graph *g) {
    IN(g, "x", 5, 3);
    int64_t d[2] = {3, 2};
    tg_const(g, "i", mk(KN_I64, 2, d, (double[]){0, 2, 2, 4, 0, 0}));
    NODE(g, "Gather", "x i", "y");
    tg_output(g, "y");
}
static void b_gather_ax1(kn_graph *g) {
    IN(g, "x", 2, 5, 3);
    tg_ints(g, "i", 3, (int64_t[]){2, -1, 2});
    NODE_A(g, "Gather", "x i", "y", attr_i("axis", 1));
    tg_output(g, "y");
}
/* Two layers: log_softmax(tanh(x W1 + b1) W2 + b2), the input differentiated too. */
static void b_mlp(kn_graph *g) {
    IN(g, "x", 4, 3);
    IN(g, "w1", 3, 5);
    IN(g, "b1", 5);
    IN(g, "w2", 5, 2);
    IN(g, "b2", 2);
    NODE(g, "MatMul", "x w1", "h0");
    NODE(g, "Add", "h0 b1", "h1");
    NODE(g, "Tanh", "h1", "h");
    NODE_A(g, "Gemm", "h w2 b2", "z");
    NODE(g, "LogSoftmax", "z", "y");
    tg_output(g, "y");
}
/* Embedding, LayerNorm, a single-head self-attention with a scaled softmax, and a GELU MLP: the
 * ops of a transformer block, all at once. */
static void b_block(kn_graph *g) {
    IN(g, "emb", 6, 4);
    IN(g, "ln_s", 4);
    IN(g, "ln_b", 4);
    IN(g, "wq", 4, 4);
    IN(g, "wk", 4, 4);
    IN(g, "w1", 4, 8);
    int64_t d[2] = {1, 5};
    tg_const(g, "tok", mk(KN_I64, 2, d, (double[]){1, 3, 3, 0, 5}));
    NODE(g, "Gather", "emb tok", "e");
    NODE_A(g, "LayerNormalization", "e ln_s ln_b", "h", attr_i("stash_type", KN_F64));
    NODE(g, "MatMul", "h wq", "q");
    NODE(g, "MatMul", "h wk", "k");
    int64_t p[3] = {0, 2, 1};
    NODE_A(g, "Transpose", "k", "kt", attr_ints("perm", p, 3));
    NODE(g, "MatMul", "q kt", "sc");
    double half = 0.5;
    tg_f64(g, "half", 0, NULL, &half);
    NODE(g, "Mul", "sc half", "sc2");
    NODE(g, "Softmax", "sc2", "att");
    NODE(g, "MatMul", "att h", "o");
    NODE(g, "Add", "o h", "r");
    NODE(g, "MatMul", "r w1", "u");
    tg_node_v(g, "Gelu", "com.microsoft", 1, "u", "y", NULL, 0);
    tg_output(g, "y");
}

/* ---- the convolution family ---- */
#define INS(...) (int64_t[]){__VA_ARGS__}, sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)
static void b_conv2d(kn_graph *g) { /* strides 2x1, asymmetric pads, bias */
    IN(g, "x", 2, 3, 5, 6);
    IN(g, "w", 4, 3, 3, 2);
    IN(g, "b", 4);
    NODE_A(g, "Conv", "x w b", "y", attr_ints("strides", INS(2, 1)), attr_ints("pads", INS(1, 0, 0, 1)));
    tg_output(g, "y");
}
static void b_conv2d_group_dil(kn_graph *g) {
    IN(g, "x", 1, 4, 6, 5);
    IN(g, "w", 6, 2, 2, 3);
    NODE_A(g, "Conv", "x w", "y", attr_i("group", 2), attr_ints("dilations", INS(2, 1)),
           attr_ints("kernel_shape", INS(2, 3)));
    tg_output(g, "y");
}
static void b_conv2d_depthwise(kn_graph *g) {
    IN(g, "x", 2, 3, 5, 5);
    IN(g, "w", 3, 1, 3, 3);
    IN(g, "b", 3);
    NODE_A(g, "Conv", "x w b", "y", attr_i("group", 3), attr_s("auto_pad", "SAME_UPPER"),
           attr_ints("strides", INS(2, 2)));
    tg_output(g, "y");
}
static void b_conv1d(kn_graph *g) {
    IN(g, "x", 2, 3, 7);
    IN(g, "w", 2, 3, 3);
    NODE_A(g, "Conv", "x w", "y", attr_ints("pads", INS(2, 1)), attr_ints("strides", INS(2)));
    tg_output(g, "y");
}
static void b_conv3d(kn_graph *g) {
    IN(g, "x", 1, 2, 3, 4, 3);
    IN(g, "w", 2, 2, 2, 2, 2);
    IN(g, "b", 2);
    NODE_A(g, "Conv", "x w b", "y", attr_s("auto_pad", "SAME_LOWER"));
    tg_output(g, "y");
}
#define IN32(g, name, ...) tg_input(g, name, KN_F32, D(__VA_ARGS__))
static void b_conv2d_f32(kn_graph *g) { /* the im2col + GEMM path */
    IN32(g, "x", 2, 4, 6, 7);
    IN32(g, "w", 6, 2, 3, 3);
    IN32(g, "b", 6);
    NODE_A(g, "Conv", "x w b", "y", attr_i("group", 2), attr_ints("pads", INS(1, 1, 1, 1)),
           attr_ints("strides", INS(1, 2)), attr_ints("dilations", INS(1, 2)));
    tg_output(g, "y");
}
static void b_conv_dw_f32(kn_graph *g) { /* depthwise: many small GEMMs, one per thread */
    IN32(g, "x", 3, 6, 5, 5);
    IN32(g, "w", 6, 1, 3, 3);
    NODE_A(g, "Conv", "x w", "y", attr_i("group", 6), attr_ints("pads", INS(1, 1, 1, 1)));
    tg_output(g, "y");
}
static void b_conv1x1_f32(kn_graph *g) { /* the direct (no im2col) path */
    IN32(g, "x", 2, 3, 4, 5);
    IN32(g, "w", 5, 3, 1, 1);
    NODE(g, "Conv", "x w", "y");
    tg_output(g, "y");
}
static void b_maxpool(kn_graph *g) {
    IN(g, "x", 2, 2, 5, 6);
    NODE_A(g, "MaxPool", "x", "y", attr_ints("kernel_shape", INS(2, 3)), attr_ints("strides", INS(2, 2)),
           attr_ints("pads", INS(1, 0, 0, 1)));
    tg_output(g, "y");
}
static void b_maxpool_ceil_dil(kn_graph *g) { /* overlapping windows, Indices output unused */
    IN(g, "x", 1, 3, 7, 6);
    NODE_A(g, "MaxPool", "x", "y ind", attr_ints("kernel_shape", INS(3, 2)), attr_ints("strides", INS(2, 1)),
           attr_ints("dilations", INS(1, 2)), attr_i("ceil_mode", 1));
    tg_output(g, "y");
}
static void b_maxpool1d_f32(kn_graph *g) {
    IN32(g, "x", 2, 3, 9);
    NODE_A(g, "MaxPool", "x", "y", attr_ints("kernel_shape", INS(3)), attr_ints("strides", INS(2)),
           attr_s("auto_pad", "SAME_UPPER"));
    tg_output(g, "y");
}
static void b_avgpool(kn_graph *g) {
    IN(g, "x", 2, 3, 5, 6);
    NODE_A(g, "AveragePool", "x", "y", attr_ints("kernel_shape", INS(3, 2)), attr_ints("strides", INS(2, 2)),
           attr_ints("pads", INS(1, 1, 1, 0)));
    tg_output(g, "y");
}
static void b_avgpool_incl_ceil(kn_graph *g) {
    IN(g, "x", 1, 2, 6, 7);
    NODE_A(g, "AveragePool", "x", "y", attr_ints("kernel_shape", INS(3, 3)), attr_ints("strides", INS(2, 2)),
           attr_ints("pads", INS(1, 1, 1, 1)), attr_i("count_include_pad", 1), attr_i("ceil_mode", 1));
    tg_output(g, "y");
}
static void b_avgpool3d(kn_graph *g) {
    IN(g, "x", 1, 2, 4, 3, 5);
    NODE_A(g, "AveragePool", "x", "y", attr_ints("kernel_shape", INS(2, 2, 3)), attr_s("auto_pad", "SAME_LOWER"));
    tg_output(g, "y");
}
static void b_global_avg(kn_graph *g) {
    IN(g, "x", 2, 3, 4, 5);
    NODE(g, "GlobalAveragePool", "x", "y");
    tg_output(g, "y");
}
static void b_global_max(kn_graph *g) {
    IN(g, "x", 2, 3, 7);
    NODE(g, "GlobalMaxPool", "x", "y");
    tg_output(g, "y");
}
static void b_bn_infer(kn_graph *g) {
    IN(g, "x", 2, 3, 4, 2);
    IN(g, "s", 3);
    IN(g, "b", 3);
    tg_f64(g, "m", 1, (int64_t[]){3}, (double[]){0.1, -0.2, 0.3});
    tg_f64(g, "v", 1, (int64_t[]){3}, (double[]){0.5, 1.5, 0.8});
    tg_node_v(g, "BatchNormalization", "", 15, "x s b m v", "y", (kn_attr[]){attr_f("epsilon", 1e-3f)}, 1);
    tg_output(g, "y");
}
static void b_bn_train(kn_graph *g) { /* batch statistics; the running ones are outputs nobody differentiates */
    IN(g, "x", 3, 2, 5);
    IN(g, "s", 2);
    IN(g, "b", 2);
    tg_f64(g, "m", 1, (int64_t[]){2}, (double[]){0.1, -0.2});
    tg_f64(g, "v", 1, (int64_t[]){2}, (double[]){0.5, 1.5});
    tg_node_v(g, "BatchNormalization", "", 15, "x s b m v", "y rm rv",
              (kn_attr[]){attr_i("training_mode", 1), attr_f("momentum", 0.8f)}, 2);
    tg_output(g, "y");
}
static void b_bn_train_2d(kn_graph *g) { /* [N, C] input, as after a Gemm */
    IN(g, "x", 6, 3);
    IN(g, "s", 3);
    IN(g, "b", 3);
    tg_f64(g, "m", 1, (int64_t[]){3}, (double[]){0, 0, 0});
    tg_f64(g, "v", 1, (int64_t[]){3}, (double[]){1, 1, 1});
    tg_node_v(g, "BatchNormalization", "", 15, "x s b m v", "y", (kn_attr[]){attr_i("training_mode", 1)}, 1);
    tg_output(g, "y");
}

/* Training mode with the ONNX seed attribute: the same mask at every run, so finite
 * differences see one function. */
static void b_dropout_train(kn_graph *g) {
    IN(g, "x", 3, 7);
    double r = 0.3;
    tg_f64(g, "ratio", 0, NULL, &r);
    tg_const(g, "train", mk(KN_BOOL, 0, NULL, (double[]){1}));
    tg_node_v(g, "Dropout", "", 13, "x ratio train", "y", (kn_attr[]){attr_i("seed", 7)}, 1);
    tg_output(g, "y");
}
static void b_dropout_train_mask(kn_graph *g) { /* the mask output already on, default ratio */
    IN(g, "x", 2, 9);
    tg_const(g, "train", mk(KN_BOOL, 0, NULL, (double[]){1}));
    tg_node_v(g, "Dropout", "", 13, "x - train", "y mask", (kn_attr[]){attr_i("seed", 3)}, 1);
    tg_output(g, "y");
}

/* ---- more unary functions, activations, reductions and data movement ---- */
UNARY_CASE(b_abs, "Abs")
UNARY_CASE(b_reciprocal, "Reciprocal")
UNARY_CASE(b_sin, "Sin")
UNARY_CASE(b_cos, "Cos")
UNARY_CASE(b_tan, "Tan")
UNARY_CASE(b_sinh, "Sinh")
UNARY_CASE(b_cosh, "Cosh")
UNARY_CASE(b_asin, "Asin")
UNARY_CASE(b_acos, "Acos")
UNARY_CASE(b_atan, "Atan")
UNARY_CASE(b_asinh, "Asinh")
UNARY_CASE(b_acosh, "Acosh")
UNARY_CASE(b_atanh, "Atanh")
UNARY_CASE(b_floor, "Floor")
UNARY_CASE(b_ceil, "Ceil")
UNARY_CASE(b_round, "Round")
UNARY_CASE(b_sign, "Sign")
UNARY_CASE(b_selu, "Selu")
UNARY_CASE(b_softplus, "Softplus")
UNARY_CASE(b_softsign, "Softsign")
UNARY_CASE(b_hardswish, "HardSwish")
UNARY_CASE(b_mish, "Mish")
#define ACT_CASE(fn, op, ...) \
    static void fn(kn_graph *g) { \
        IN(g, "x", 3, 5); \
        NODE_A(g, op, "x", "y", __VA_ARGS__); \
        tg_output(g, "y"); \
    }
ACT_CASE(b_leakyrelu, "LeakyRelu", attr_f("alpha", 0.2f))
ACT_CASE(b_elu, "Elu", attr_f("alpha", 0.7f))
ACT_CASE(b_celu, "Celu", attr_f("alpha", 1.3f))
ACT_CASE(b_hardsigmoid, "HardSigmoid", attr_f("alpha", 0.3f), attr_f("beta", 0.4f))
ACT_CASE(b_swish, "Swish", attr_f("alpha", 1.5f))
ACT_CASE(b_thresholdedrelu, "ThresholdedRelu", attr_f("alpha", 0.3f))
ACT_CASE(b_shrink, "Shrink", attr_f("lambd", 0.4f), attr_f("bias", 0.1f))
static void b_clip(kn_graph *g) { /* tensor bounds, both differentiated */
    IN(g, "x", 3, 5);
    IN(g, "lo");
    IN(g, "hi");
    NODE(g, "Abs", "hi", "ahi"); /* keep max above min for any draw */
    NODE(g, "Neg", "ahi", "nhi");
    NODE(g, "Min", "lo nhi", "lo2");
    NODE(g, "Clip", "x lo2 ahi", "y");
    tg_output(g, "y");
}
static void b_clip_min_only(kn_graph *g) {
    IN(g, "x", 4, 3);
    double m = -0.25;
    tg_f64(g, "lo", 0, NULL, &m);
    NODE(g, "Clip", "x lo", "y");
    tg_output(g, "y");
}
static void b_clip_attr(kn_graph *g) {
    IN(g, "x", 11);
    tg_node_v(g, "Clip", "", 6, "x", "y", (kn_attr[]){attr_f("min", -0.3f), attr_f("max", 0.6f)}, 2);
    tg_output(g, "y");
}
static void b_prelu(kn_graph *g) {
    IN(g, "x", 2, 3, 4);
    IN(g, "s", 3, 1);
    NODE(g, "PRelu", "x s", "y");
    tg_output(g, "y");
}
static void b_mean(kn_graph *g) {
    IN(g, "a", 2, 3);
    IN(g, "b", 3);
    IN(g, "c", 2, 1);
    NODE(g, "Mean", "a b c", "y");
    tg_output(g, "y");
}
static void b_sum3(kn_graph *g) {
    IN(g, "a", 2, 3);
    IN(g, "b", 3);
    IN(g, "c", 1, 1);
    NODE(g, "Sum", "a b c", "y");
    tg_output(g, "y");
}
#define REDUCE_CASE(fn, op, keep, ...) \
    static void fn(kn_graph *g) { \
        IN(g, "x", 2, 3, 5); \
        NODE_A(g, op, "x", "y", attr_i("keepdims", keep), ##__VA_ARGS__); \
        tg_output(g, "y"); \
    }
REDUCE_CASE(b_rmax_k0, "ReduceMax", 0, attr_ints("axes", INS(1)))
REDUCE_CASE(b_rmin_all, "ReduceMin", 1)
REDUCE_CASE(b_rl1, "ReduceL1", 0, attr_ints("axes", INS(-1, 0)))
REDUCE_CASE(b_rl2, "ReduceL2", 1, attr_ints("axes", INS(2)))
REDUCE_CASE(b_rsumsq, "ReduceSumSquare", 0, attr_ints("axes", INS(0, 2)))
REDUCE_CASE(b_rlogsum, "ReduceLogSum", 1, attr_ints("axes", INS(1)))
REDUCE_CASE(b_rlogsumexp, "ReduceLogSumExp", 0, attr_ints("axes", INS(-1)))
REDUCE_CASE(b_rprod, "ReduceProd", 0, attr_ints("axes", INS(1)))
static void b_rmax_op18(kn_graph *g) { /* axes as an input */
    IN(g, "x", 4, 3);
    tg_ints(g, "ax", 1, (int64_t[]){0});
    tg_node_v(g, "ReduceMax", "", 18, "x ax", "y", NULL, 0);
    tg_output(g, "y");
}
static void b_pad(kn_graph *g) { /* added and cropped edges */
    IN(g, "x", 3, 4, 5);
    tg_ints(g, "p", 6, (int64_t[]){1, 0, -1, 0, 2, 1});
    double v = 0.5;
    tg_f64(g, "v", 0, NULL, &v);
    NODE(g, "Pad", "x p v", "y");
    tg_output(g, "y");
}
static void b_pad_value(kn_graph *g) { /* the constant value differentiated too */
    IN(g, "x", 2, 3);
    IN(g, "v");
    tg_ints(g, "p", 4, (int64_t[]){0, 1, 2, 0});
    NODE(g, "Pad", "x p v", "y");
    tg_output(g, "y");
}
static void b_pad_axes(kn_graph *g) {
    IN(g, "x", 2, 3, 4);
    tg_ints(g, "p", 2, (int64_t[]){2, 1});
    tg_ints(g, "ax", 1, (int64_t[]){-1});
    tg_node_v(g, "Pad", "", 18, "x p - ax", "y", NULL, 0);
    tg_output(g, "y");
}
static void b_pad_attr(kn_graph *g) {
    IN(g, "x", 3, 2);
    tg_node_v(g, "Pad", "", 2, "x", "y", (kn_attr[]){attr_ints("pads", INS(1, 0, 0, 2))}, 1);
    tg_output(g, "y");
}
static void b_tile(kn_graph *g) {
    IN(g, "x", 2, 3);
    tg_ints(g, "r", 2, (int64_t[]){3, 2});
    NODE(g, "Tile", "x r", "y");
    tg_output(g, "y");
}
static void b_gather_elements(kn_graph *g) {
    IN(g, "x", 3, 4);
    int64_t d[2] = {2, 4};
    tg_const(g, "i", mk(KN_I64, 2, d, (double[]){0, 2, 2, -1, 1, 2, 0, 0}));
    NODE_A(g, "GatherElements", "x i", "y", attr_i("axis", 0));
    tg_output(g, "y");
}
static void b_cumsum(kn_graph *g) {
    IN(g, "x", 3, 5);
    tg_ints(g, "ax", 1, (int64_t[]){1});
    NODE(g, "CumSum", "x ax", "y");
    tg_output(g, "y");
}
static void b_cumsum_excl_rev(kn_graph *g) {
    IN(g, "x", 4, 3);
    tg_ints(g, "ax", 1, (int64_t[]){0});
    NODE_A(g, "CumSum", "x ax", "y", attr_i("exclusive", 1), attr_i("reverse", 1));
    tg_output(g, "y");
}

static void b_rmsnorm(kn_graph *g) {
    IN(g, "x", 2, 3, 6);
    IN(g, "s", 6);
    tg_node_v(g, "RMSNormalization", "", 23, "x s", "y", NULL, 0);
    tg_output(g, "y");
}
static void b_rmsnorm_ax1(kn_graph *g) {
    IN(g, "x", 2, 3, 4);
    IN(g, "s", 3, 1);
    tg_node_v(g, "RMSNormalization", "", 23, "x s", "y", (kn_attr[]){attr_i("axis", 1), attr_f("epsilon", 1e-3f)}, 2);
    tg_output(g, "y");
}
static void b_instnorm(kn_graph *g) {
    IN(g, "x", 2, 3, 4, 5);
    IN(g, "s", 3);
    IN(g, "b", 3);
    NODE_A(g, "InstanceNormalization", "x s b", "y", attr_f("epsilon", 1e-3f));
    tg_output(g, "y");
}
static void b_groupnorm21(kn_graph *g) { /* per-channel scale */
    IN(g, "x", 2, 6, 5);
    IN(g, "s", 6);
    IN(g, "b", 6);
    tg_node_v(g, "GroupNormalization", "", 21, "x s b", "y", (kn_attr[]){attr_i("num_groups", 3)}, 1);
    tg_output(g, "y");
}
static void b_groupnorm18(kn_graph *g) { /* per-group scale */
    IN(g, "x", 2, 4, 3, 2);
    IN(g, "s", 2);
    IN(g, "b", 2);
    tg_node_v(g, "GroupNormalization", "", 18, "x s b", "y", (kn_attr[]){attr_i("num_groups", 2)}, 1);
    tg_output(g, "y");
}

/* ConvTranspose's CPU kernel computes in float32 for every dtype: float32 tolerances. */
static void b_convt(kn_graph *g) {
    IN(g, "x", 2, 4, 3, 3);
    IN(g, "w", 4, 3, 3, 2);
    IN(g, "b", 3);
    NODE_A(g, "ConvTranspose", "x w b", "y", attr_ints("strides", INS(2, 1)), attr_ints("pads", INS(1, 0, 0, 1)),
           attr_ints("output_padding", INS(1, 0)));
    tg_output(g, "y");
}
static void b_convt_group(kn_graph *g) {
    IN(g, "x", 1, 4, 3, 4);
    IN(g, "w", 4, 2, 2, 2);
    NODE_A(g, "ConvTranspose", "x w", "y", attr_i("group", 2), attr_ints("dilations", INS(2, 1)),
           attr_s("auto_pad", "VALID"));
    tg_output(g, "y");
}

static void b_trilu(kn_graph *g) {
    IN(g, "x", 2, 4, 5);
    int64_t one = 1;
    tg_const(g, "k1", mk_raw(KN_I64, 0, NULL, &one));
    NODE_A(g, "Trilu", "x k1", "y", attr_i("upper", 0));
    tg_output(g, "y");
}
static void b_topk(kn_graph *g) {
    IN(g, "x", 3, 6);
    tg_ints(g, "k", 1, (int64_t[]){2});
    NODE_A(g, "TopK", "x k", "v i", attr_i("axis", 1));
    tg_output(g, "v");
}
static void b_gathernd(kn_graph *g) {
    IN(g, "x", 3, 4, 2);
    int64_t d[2] = {3, 2};
    tg_const(g, "i", mk(KN_I64, 2, d, (double[]){0, 1, 2, 3, 0, 1}));
    NODE(g, "GatherND", "x i", "y");
    tg_output(g, "y");
}
static void b_scatter_elements(kn_graph *g) {
    IN(g, "x", 3, 4);
    IN(g, "u", 2, 4);
    int64_t d[2] = {2, 4};
    tg_const(g, "i", mk(KN_I64, 2, d, (double[]){0, 2, 1, 0, 2, 0, 0, 1}));
    NODE_A(g, "ScatterElements", "x i u", "y", attr_i("axis", 0));
    tg_output(g, "y");
}
static void b_scatter_elements_add(kn_graph *g) {
    IN(g, "x", 2, 5);
    IN(g, "u", 2, 3);
    int64_t d[2] = {2, 3};
    tg_const(g, "i", mk(KN_I64, 2, d, (double[]){1, 1, 4, 0, -1, 0}));
    NODE_A(g, "ScatterElements", "x i u", "y", attr_i("axis", 1), attr_s("reduction", "add"));
    tg_output(g, "y");
}
static void b_scatter_nd(kn_graph *g) {
    IN(g, "x", 4, 3);
    IN(g, "u", 2, 3);
    int64_t d[2] = {2, 1};
    tg_const(g, "i", mk(KN_I64, 2, d, (double[]){1, 3}));
    NODE(g, "ScatterND", "x i u", "y");
    tg_output(g, "y");
}
UNARY_CASE(b_hardmax, "Hardmax")
static void b_lpnorm2(kn_graph *g) {
    IN(g, "x", 3, 4);
    NODE(g, "LpNormalization", "x", "y");
    tg_output(g, "y");
}
static void b_lpnorm1(kn_graph *g) {
    IN(g, "x", 3, 4);
    NODE_A(g, "LpNormalization", "x", "y", attr_i("axis", 0), attr_i("p", 1));
    tg_output(g, "y");
}

/* The fused ops, float32 only: their full checks (masks, causal, every output) are in
 * unit.test_fused_grad; these cases put them under the same finite-difference sweep. */
static void b_skip_layernorm_f32(kn_graph *g) {
    IN32(g, "x", 2, 3, 8);
    IN32(g, "skip", 2, 3, 8);
    IN32(g, "gamma", 8);
    IN32(g, "beta", 8);
    IN32(g, "bias", 8);
    kn_attr eps = attr_f("epsilon", 1e-5f);
    tg_node_v(g, "SkipLayerNormalization", "com.microsoft", 0, "x skip gamma beta bias", "y", &eps, 1);
    tg_output(g, "y");
}
static void b_sdpa_f32(kn_graph *g) {
    IN32(g, "q", 1, 2, 4, 8);
    IN32(g, "k", 1, 2, 5, 8);
    IN32(g, "v", 1, 2, 5, 6);
    tg_node_v(g, "KnSdpa", "kiln", 0, "q k v", "y", NULL, 0);
    tg_output(g, "y");
}

/* com.microsoft FusedGemm (kn_grad_MsFusedGemm: the activation's rule, then Gemm's), float32 as the
 * op is: every activation the decoder takes, with its parameters (tests/unit/test_fused_gemm.c's
 * values; Clip's narrower, so that 6 of the 15 pre-activations here lie outside its bounds), across
 * the transposes and C forms ([N], [M, N], [M, 1], none), alpha and beta. Each case fails when the
 * rule drops the activation's derivative (dz = dy), so every one has pre-activations on both sides
 * of its kinks, none within the step of one. */
static void fused_gemm_case(kn_graph *g, const char *act, int n_params, float a, float b, float gm, bool ta, bool tb,
                            int cf) {
    int64_t M = 3, K = 4, N = 5;
    /* cf, the C form: 0 none, 1 [N], 2 [M, N], 3 [M, 1] */
    tg_input(g, "a", KN_F32, ta ? (int64_t[]){K, M} : (int64_t[]){M, K}, 2);
    tg_input(g, "b", KN_F32, tb ? (int64_t[]){N, K} : (int64_t[]){K, N}, 2);
    if (cf == 1) IN32(g, "c", N);
    if (cf == 2) IN32(g, "c", M, N);
    if (cf == 3) IN32(g, "c", M, 1);
    kn_attr at[8];
    int na = 0;
    if (act) at[na++] = attr_s("activation", act);
    if (n_params > 0) at[na++] = attr_f("activation_alpha", a);
    if (n_params > 1 && act && strcmp(act, "Selu")) at[na++] = attr_f("activation_beta", b);
    if (n_params > 2) at[na++] = attr_f("activation_gamma", gm);
    at[na++] = attr_i("transA", ta);
    at[na++] = attr_i("transB", tb);
    at[na++] = attr_f("alpha", 0.8f);
    at[na++] = attr_f("beta", 1.3f);
    tg_node_v(g, "FusedGemm", "com.microsoft", 0, cf ? "a b c" : "a b", "y", at, na);
    tg_output(g, "y");
}
#define FUSED_GEMM_CASE(fn, act, np, a, b, gm, ta, tb, cf) \
    static void fn(kn_graph *g) { fused_gemm_case(g, act, np, a, b, gm, ta, tb, cf); }
FUSED_GEMM_CASE(b_fgemm_none, NULL, 0, 0, 0, 0, false, false, 1)
FUSED_GEMM_CASE(b_fgemm_relu, "Relu", 0, 0, 0, 0, false, false, 1)
FUSED_GEMM_CASE(b_fgemm_leakyrelu, "LeakyRelu", 1, 0.2f, 0, 0, true, false, 2)
FUSED_GEMM_CASE(b_fgemm_sigmoid, "Sigmoid", 0, 0, 0, 0, true, true, 3)
FUSED_GEMM_CASE(b_fgemm_tanh, "Tanh", 0, 0, 0, 0, false, false, 0)
FUSED_GEMM_CASE(b_fgemm_hardsigmoid, "HardSigmoid", 2, 0.3f, 0.4f, 0, true, false, 1)
FUSED_GEMM_CASE(b_fgemm_elu, "Elu", 1, 0.7f, 0, 0, false, true, 2)
FUSED_GEMM_CASE(b_fgemm_selu, "Selu", 3, 1.5f, 0, 2.0f, true, true, 1)
FUSED_GEMM_CASE(b_fgemm_celu, "Celu", 1, 0.6f, 0, 0, false, false, 0)
FUSED_GEMM_CASE(b_fgemm_softplus, "Softplus", 0, 0, 0, 0, false, true, 3)
FUSED_GEMM_CASE(b_fgemm_softsign, "Softsign", 0, 0, 0, 0, false, false, 2)
FUSED_GEMM_CASE(b_fgemm_thresholdedrelu, "ThresholdedRelu", 1, 0.4f, 0, 0, true, false, 3)
FUSED_GEMM_CASE(b_fgemm_psoftplus, "ParametricSoftplus", 2, 0.5f, 1.5f, 0, false, true, 1)
FUSED_GEMM_CASE(b_fgemm_scaledtanh, "ScaledTanh", 2, 0.8f, 1.3f, 0, true, false, 2)
FUSED_GEMM_CASE(b_fgemm_clip, "Clip", 2, -0.25f, 0.45f, 0, true, true, 0)

/* com.microsoft Attention / MultiHeadAttention (kn_grad_MsAttention / kn_grad_MsMultiHeadAttention):
 * the mask_index forms the fused kernel takes ([B] key ends, [2B] ends and starts, [B,T], [B,S,T]),
 * unidirectional, qkv_hidden_sizes, attention_bias as a differentiated input, MHA's cross
 * attention (L != S) with its packed bias and its [B,N,L,H] key/value layout. Masks are int32
 * constants (not differentiated). */
static void ms_attn_node(kn_graph *g, const char *op, const char *ins, const kn_attr *extra, int n_extra) {
    kn_attr at[4] = {attr_i("num_heads", 2)};
    for (int i = 0; i < n_extra; i++) at[1 + i] = extra[i];
    tg_node_v(g, op, "com.microsoft", 0, ins, "y", at, 1 + n_extra);
    tg_output(g, "y");
}
static void tg_i32(kn_graph *g, const char *name, int nd, const int64_t *dims, const double *vals) {
    tg_const(g, name, mk(KN_I32, nd, dims, vals));
}
static void b_ms_attention(kn_graph *g) {
    IN32(g, "x", 2, 3, 8);
    IN32(g, "w", 8, 24);
    IN32(g, "b", 24);
    ms_attn_node(g, "Attention", "x w b", NULL, 0);
}
static void b_ms_attention_keyend_causal(kn_graph *g) {
    IN32(g, "x", 2, 4, 8);
    IN32(g, "w", 8, 24);
    IN32(g, "b", 24);
    tg_i32(g, "m", 1, (int64_t[]){2}, (double[]){3, 2});
    kn_attr u = attr_i("unidirectional", 1);
    ms_attn_node(g, "Attention", "x w b m", &u, 1);
}
static void b_ms_attention_mask2d_qkv(kn_graph *g) {
    IN32(g, "x", 2, 4, 6);
    IN32(g, "w", 6, 20);
    tg_i32(g, "m", 2, (int64_t[]){2, 4}, (double[]){1, 1, 0, 1, 1, 1, 1, 0});
    int64_t qkv[3] = {8, 8, 4};
    kn_attr a[2] = {attr_ints("qkv_hidden_sizes", qkv, 3), attr_f("scale", 0.3f)};
    ms_attn_node(g, "Attention", "x w - m", a, 2);
}
static void b_ms_attention_startend_bias(kn_graph *g) {
    IN32(g, "x", 2, 4, 8);
    IN32(g, "w", 8, 24);
    IN32(g, "b", 24);
    tg_i32(g, "m", 1, (int64_t[]){4}, (double[]){4, 3, 1, 0});
    IN32(g, "ab", 1, 2, 4, 4);
    ms_attn_node(g, "Attention", "x w b m - ab", NULL, 0);
}
static void b_ms_attention_mask3d(kn_graph *g) {
    IN32(g, "x", 1, 3, 8);
    IN32(g, "w", 8, 24);
    IN32(g, "b", 24);
    tg_i32(g, "m", 3, (int64_t[]){1, 3, 3}, (double[]){1, 0, 1, 1, 1, 0, 0, 1, 1});
    kn_attr f = attr_f("mask_filter_value", -1000.0f);
    ms_attn_node(g, "Attention", "x w b m", &f, 1);
}
static void b_ms_mha_cross(kn_graph *g) {
    IN32(g, "q", 2, 3, 8);
    IN32(g, "k", 2, 5, 8);
    IN32(g, "v", 2, 5, 6);
    IN32(g, "b", 22);
    tg_i32(g, "m", 2, (int64_t[]){2, 5}, (double[]){1, 1, 1, 0, 0, 1, 1, 1, 1, 1});
    ms_attn_node(g, "MultiHeadAttention", "q k v b m", NULL, 0);
}
static void b_ms_mha_bnsh_causal_bias(kn_graph *g) {
    IN32(g, "q", 1, 4, 8);
    IN32(g, "k", 1, 2, 4, 4);
    IN32(g, "v", 1, 2, 4, 3);
    IN32(g, "ab", 1, 1, 4, 4);
    kn_attr u = attr_i("unidirectional", 1);
    ms_attn_node(g, "MultiHeadAttention", "q k v - - ab", &u, 1);
}

static const gcase cases[] = {
    {"add [2,3,4]+[4]", b_add},
    {"mul [2,1,4]*[3,1]", b_mul},
    {"sub [1,7]-[13,1]", b_sub},
    {"div [2,3]/[3]", b_div, 0.5, 1.5},
    {"pow", b_pow, 0.5, 1.5},
    {"pow by a constant", b_pow_const},
    {"x*x+x accumulates", b_same_twice},
    {"neg", b_neg},
    {"sqrt", b_sqrt, 0.5, 1.5},
    {"exp", b_exp},
    {"log", b_log, 0.5, 1.5},
    {"tanh", b_tanh},
    {"sigmoid", b_sigmoid},
    {"relu", b_relu},
    {"erf", b_erf},
    {"identity", b_identity},
    {"dropout (inference)", b_dropout},
    {"gelu", b_gelu},
    {"gelu tanh", b_gelu_tanh},
    {"com.microsoft gelu", b_ms_gelu},
    {"com.microsoft bias gelu", b_bias_gelu},
    {"com.microsoft fast gelu", b_fast_gelu},
    {"where [2,3],[3]", b_where},
    {"cast f64->f32->f64", b_cast, 0, 0, 1e-3, 1e-4},
    {"castlike (the type input gets nothing)", b_castlike},
    {"max of three, broadcast", b_max},
    {"min", b_min},
    {"matmul [2,3,4]@[4,5]", b_matmul},
    {"matmul [2,1,3,4]@[3,4,2]", b_matmul_bcast},
    {"matmul [4]@[2,4,3]", b_matmul_vec_left},
    {"matmul [2,3,4]@[4]", b_matmul_vec_right},
    {"matmul [7]@[7]", b_matmul_dot},
    {"gemm alpha beta, c [5]", b_gemm},
    {"gemm transA transB, c [3,1]", b_gemm_t},
    {"reducesum axes [1] keepdims 0", b_rsum_k0},
    {"reducesum axes [-1] keepdims 1", b_rsum_k1},
    {"reducesum all", b_rsum_all},
    {"reducemean axes [0,-1] keepdims 0", b_rmean_k0},
    {"reducemean axes [-2] keepdims 1", b_rmean_k1},
    {"softmax -1", b_softmax},
    {"softmax axis 1", b_softmax_ax1},
    {"softmax opset 11 (2-D coercion)", b_softmax_op11},
    {"logsoftmax", b_logsoftmax},
    {"layernorm [2,3,8] axis -1", b_layernorm},
    {"layernorm [2,3,4] axis 1, no bias", b_layernorm_ax1},
    {"reshape", b_reshape},
    {"flatten axis 2", b_flatten},
    {"squeeze", b_squeeze},
    {"unsqueeze [0,2]", b_unsqueeze},
    {"transpose [2,0,1]", b_transpose},
    {"transpose reversed", b_transpose_default},
    {"concat axis -1", b_concat},
    {"split [3,4]", b_split},
    {"split, one piece unused", b_split_unused},
    {"slice steps 2, negative start", b_slice},
    {"slice step -3", b_slice_neg},
    {"expand [3,1] -> [2,3,4]", b_expand},
    {"gather repeated indices", b_gather},
    {"gather axis 1, negative index", b_gather_ax1},
    {"two-layer MLP", b_mlp},
    {"transformer block", b_block},
    {"conv2d strides 2x1, pads, bias", b_conv2d},
    {"conv2d group 2, dilations", b_conv2d_group_dil},
    {"conv2d depthwise SAME_UPPER stride 2", b_conv2d_depthwise},
    {"conv1d pads, stride 2", b_conv1d},
    {"conv3d SAME_LOWER, bias", b_conv3d},
    {"conv2d float32 group dilations (im2col)", b_conv2d_f32, 0, 0, 1e-2, 2e-3},
    {"conv 1x1 float32 (direct)", b_conv1x1_f32, 0, 0, 1e-2, 2e-3},
    {"conv depthwise float32, 6 groups", b_conv_dw_f32, 0, 0, 1e-2, 2e-3},
    {"maxpool 2x3 stride 2 pads", b_maxpool},
    {"maxpool ceil_mode dilations, Indices", b_maxpool_ceil_dil},
    {"maxpool1d float32 SAME_UPPER", b_maxpool1d_f32, 0, 0, 1e-3, 2e-3},
    {"SkipLayerNormalization float32", b_skip_layernorm_f32, 0, 0, 1e-2, 2e-3},
    {"KnSdpa float32", b_sdpa_f32, 0, 0, 1e-2, 2e-3},
    {"averagepool pads", b_avgpool},
    {"averagepool count_include_pad ceil_mode", b_avgpool_incl_ceil},
    {"averagepool3d SAME_LOWER", b_avgpool3d},
    {"globalaveragepool", b_global_avg},
    {"globalmaxpool", b_global_max},
    {"batchnorm inference", b_bn_infer},
    {"batchnorm training", b_bn_train},
    {"batchnorm training [N,C]", b_bn_train_2d},
    {"dropout training ratio 0.3, seeded", b_dropout_train},
    {"dropout training, mask output on", b_dropout_train_mask},
    {"abs", b_abs},
    {"reciprocal", b_reciprocal, 0.5, 1.5},
    {"sin", b_sin},
    {"cos", b_cos},
    {"tan", b_tan},
    {"sinh", b_sinh},
    {"cosh", b_cosh},
    {"asin", b_asin, -0.8, 0.8},
    {"acos", b_acos, -0.8, 0.8},
    {"atan", b_atan, -2, 2},
    {"asinh", b_asinh, -2, 2},
    {"acosh", b_acosh, 1.2, 2.5},
    {"atanh", b_atanh, -0.8, 0.8},
    {"floor (zero)", b_floor, -2.9, 2.9},
    {"ceil (zero)", b_ceil, -2.9, 2.9},
    {"round (zero)", b_round, -2.9, 2.9},
    {"sign (zero)", b_sign},
    {"selu", b_selu},
    {"softplus", b_softplus, -3, 3},
    {"softsign", b_softsign, -3, 3},
    {"hardswish", b_hardswish, -5, 5},
    {"mish", b_mish, -3, 3},
    {"leakyrelu alpha 0.2", b_leakyrelu},
    {"elu alpha 0.7", b_elu},
    {"celu alpha 1.3", b_celu},
    {"hardsigmoid alpha 0.3 beta 0.4", b_hardsigmoid, -4, 4},
    {"swish alpha 1.5", b_swish, -3, 3},
    {"thresholdedrelu alpha 0.3", b_thresholdedrelu},
    {"shrink lambd 0.4 bias 0.1", b_shrink},
    {"clip, tensor bounds differentiated", b_clip},
    {"clip min only", b_clip_min_only},
    {"clip opset 6 attributes", b_clip_attr},
    {"prelu slope [3,1]", b_prelu},
    {"mean of three, broadcast", b_mean},
    {"sum of three, broadcast", b_sum3},
    {"reducemax axes [1] keepdims 0", b_rmax_k0},
    {"reducemin all keepdims 1", b_rmin_all},
    {"reducel1 axes [-1,0]", b_rl1},
    {"reducel2 axes [2]", b_rl2},
    {"reducesumsquare axes [0,2]", b_rsumsq},
    {"reducelogsum axes [1]", b_rlogsum, 0.5, 1.5},
    {"reducelogsumexp axes [-1]", b_rlogsumexp},
    {"reduceprod axes [1]", b_rprod, 0.5, 1.5},
    {"reducemax opset 18 axes input", b_rmax_op18},
    {"pad constant, negative pads", b_pad},
    {"pad, value differentiated", b_pad_value},
    {"pad opset 18 axes", b_pad_axes},
    {"pad opset 2 attribute", b_pad_attr},
    {"tile [3,2]", b_tile},
    {"gatherelements repeated indices", b_gather_elements},
    {"cumsum", b_cumsum},
    {"cumsum exclusive reverse", b_cumsum_excl_rev},
    {"rmsnormalization", b_rmsnorm},
    {"rmsnormalization axis 1, scale [3,1]", b_rmsnorm_ax1},
    {"instancenormalization", b_instnorm},
    {"groupnormalization opset 21 (per channel)", b_groupnorm21},
    {"groupnormalization opset 18 (per group)", b_groupnorm18},
    {"convtranspose strides, pads, output_padding, bias", b_convt, 0, 0, 1e-2, 2e-3},
    {"convtranspose group 2, dilations, VALID", b_convt_group, 0, 0, 1e-2, 2e-3},
    {"trilu lower k 1", b_trilu},
    {"topk axis 1", b_topk},
    {"gathernd repeated slices", b_gathernd},
    {"scatterelements", b_scatter_elements},
    {"scatterelements add, repeated indices", b_scatter_elements_add},
    {"scatternd", b_scatter_nd},
    {"hardmax (zero)", b_hardmax},
    {"lpnormalization p 2", b_lpnorm2},
    {"lpnormalization p 1 axis 0", b_lpnorm1},
    {"com.microsoft Attention float32, bias", b_ms_attention, 0, 0, 1e-2, 2e-3},
    {"com.microsoft Attention, [B] key ends, unidirectional", b_ms_attention_keyend_causal, 0, 0, 1e-2, 2e-3},
    {"com.microsoft Attention, [B,T] mask, qkv_hidden_sizes, scale", b_ms_attention_mask2d_qkv, 0, 0, 1e-2, 2e-3},
    {"com.microsoft Attention, [2B] ends+starts, attention_bias", b_ms_attention_startend_bias, 0, 0, 1e-2, 2e-3},
    {"com.microsoft Attention, [B,S,T] mask, mask_filter_value", b_ms_attention_mask3d, 0, 0, 1e-2, 2e-3},
    {"com.microsoft MultiHeadAttention cross, bias, [B,T] mask", b_ms_mha_cross, 0, 0, 1e-2, 2e-3},
    {"com.microsoft MultiHeadAttention [B,N,L,H] k/v, causal, attention_bias", b_ms_mha_bnsh_causal_bias, 0, 0, 1e-2,
     2e-3},
    {"com.microsoft FusedGemm no activation, C [N]", b_fgemm_none, 0, 0, 2e-3, 2e-3},
    {"com.microsoft FusedGemm Relu, C [N]", b_fgemm_relu, 0, 0, 2e-3, 2e-3},
    {"com.microsoft FusedGemm LeakyRelu 0.2, transA, C [M,N]", b_fgemm_leakyrelu, 0, 0, 2e-3, 2e-3},
    {"com.microsoft FusedGemm Sigmoid, transA transB, C [M,1]", b_fgemm_sigmoid, 0, 0, 2e-3, 2e-3},
    {"com.microsoft FusedGemm Tanh, no C", b_fgemm_tanh, 0, 0, 2e-3, 2e-3},
    {"com.microsoft FusedGemm HardSigmoid 0.3 0.4, transA, C [N]", b_fgemm_hardsigmoid, 0, 0, 2e-3, 2e-3},
    {"com.microsoft FusedGemm Elu 0.7, transB, C [M,N]", b_fgemm_elu, 0, 0, 2e-3, 2e-3},
    {"com.microsoft FusedGemm Selu 1.5 gamma 2, transA transB, C [N]", b_fgemm_selu, 0, 0, 2e-3, 2e-3},
    {"com.microsoft FusedGemm Celu 0.6, no C", b_fgemm_celu, 0, 0, 2e-3, 2e-3},
    {"com.microsoft FusedGemm Softplus, transB, C [M,1]", b_fgemm_softplus, 0, 0, 2e-3, 2e-3},
    {"com.microsoft FusedGemm Softsign, C [M,N]", b_fgemm_softsign, 0, 0, 2e-3, 2e-3},
    {"com.microsoft FusedGemm ThresholdedRelu 0.4, transA, C [M,1]", b_fgemm_thresholdedrelu, 0, 0, 2e-3, 2e-3},
    {"com.microsoft FusedGemm ParametricSoftplus 0.5 1.5, transB, C [N]", b_fgemm_psoftplus, 0, 0, 2e-3, 2e-3},
    {"com.microsoft FusedGemm ScaledTanh 0.8 1.3, transA, C [M,N]", b_fgemm_scaledtanh, 0, 0, 2e-3, 2e-3},
    {"com.microsoft FusedGemm Clip [-0.25, 0.45], transA transB, no C", b_fgemm_clip, 0, 0, 2e-3, 2e-3},
};
enum { N_CASES = sizeof cases / sizeof cases[0] };

START_TEST(grad_case) {
    ck_assert_msg(check_case(&cases[_i]), "case '%s': gradient differs from finite differences", cases[_i].name);
}
END_TEST

/* An op without a rule on the path: the error names the op, the node and the path. */
START_TEST(no_rule_names_path) {
    kn_graph *g = tg_new();
    IN(g, "x", 3);
    NODE(g, "Tanh", "x", "t");
    NODE(g, "MeanVarianceNormalization", "t", "u");
    NODE(g, "Exp", "u", "y");
    NODE_A(g, "ReduceSum", "y", "loss", attr_i("keepdims", 0));
    tg_output(g, "loss");
    ck_assert_ptr_null(kn_graph_resolve_ops(g));
    int x = kn_graph_find_value(g, "x");
    kn_status *st = kn_autograd(g, kn_graph_find_value(g, "loss"), &x, 1, NULL);
    ck_assert_ptr_nonnull(st);
    const char *msg = kn_status_message(st);
    ck_assert_msg(strstr(msg, "MeanVarianceNormalization") && strstr(msg, "'x' -> 't'") &&
                      strstr(msg, "n1_MeanVarianceNormalization"),
                  "message: %s", msg);
    ck_assert_int_eq(kn_status_get_code(st), KN_ERR_UNSUPPORTED);
    kn_status_free(st);
    kn_graph_free(g);
}
END_TEST

/* Shape inputs never ask for a rule: Shape (not differentiable) feeding Reshape's shape is not on
 * a gradient path, and an initializer can be differentiated (the gradient of sum(x * w) is x). */
START_TEST(shape_paths_and_initializers) {
    kn_graph *g = tg_new();
    IN(g, "x", 2, 3);
    double wv[6] = {1, 2, 3, 4, 5, 6};
    tg_f64(g, "w", 2, (int64_t[]){2, 3}, wv);
    NODE(g, "Shape", "x", "shx");
    NODE(g, "Mul", "x w", "p");
    NODE(g, "Reshape", "p shx", "q");
    NODE_A(g, "ReduceSum", "q", "loss", attr_i("keepdims", 0));
    tg_output(g, "loss");
    ck_assert_ptr_null(kn_graph_resolve_ops(g));
    int wrt[2] = {kn_graph_find_value(g, "x"), kn_graph_find_value(g, "w")}, grads[2];
    kn_status *st = kn_autograd(g, kn_graph_find_value(g, "loss"), wrt, 2, grads);
    ck_assert_msg(st == NULL, "autograd: %s", st ? kn_status_message(st) : "");
    ck_assert_str_eq(g->values[grads[0]].name, "grad:x");
    ck_assert_str_eq(g->values[grads[1]].name, "grad:w");
    kn_model *m;
    kn_session *s = open_session(g, &m);
    double xv[6] = {-1, 0.5, 2, 3, -4, 0.25};
    kn_tensor *xt = mk(KN_F64, 2, (int64_t[]){2, 3}, xv);
    kn_tensor outs[3];
    st = kn_session_run_values(s, xt, outs);
    ck_assert_msg(st == NULL, "run: %s", st ? kn_status_message(st) : "");
    expect_close(&outs[1], wv, 6, 0, 0, "grad:x");
    expect_close(&outs[2], xv, 6, 0, 0, "grad:w");
    for (int k = 0; k < 3; k++) kn_tensor_release(&outs[k]);
    kn_tensor_free(xt);
    kn_session_free(s);
    kn_model_free(m);
}
END_TEST

/* An input of unknown rank leaves the dtypes after it unknown: the pass refuses rather than
 * return zeros for a gradient that exists. */
START_TEST(unknown_dtype_refused) {
    kn_graph *g = tg_new();
    tg_input(g, "x", KN_F64, NULL, -1);
    NODE(g, "Relu", "x", "y");
    NODE_A(g, "ReduceSum", "y", "loss", attr_i("keepdims", 0));
    tg_output(g, "loss");
    ck_assert_ptr_null(kn_graph_resolve_ops(g));
    int wrt = kn_graph_find_value(g, "x");
    kn_status *st = kn_autograd(g, kn_graph_find_value(g, "loss"), &wrt, 1, NULL);
    ck_assert_ptr_nonnull(st);
    ck_assert_msg(strstr(kn_status_message(st), "'y'") && strstr(kn_status_message(st), "not known statically"), "%s",
                  kn_status_message(st));
    kn_status_free(st);
    kn_graph_free(g);
}
END_TEST

/* kn_graph_set_dropout: a new mask per run (step), the same sequence from a fresh session with
 * the same seed, another from another seed; y is x / (1 - ratio) or 0 with about `ratio` dropped,
 * and the gradient is the mask the forward drew, scaled. Ratio 0 leaves y = x. */
static kn_graph *dropout_graph(double ratio, uint64_t seed, int *n_changed, int *gx) {
    kn_graph *g = tg_new();
    tg_input(g, "x", KN_F32, D(40, 50));
    int64_t d[2] = {40, 50};
    kn_tensor *R = mk(KN_F32, 2, d, NULL);
    for (int64_t e = 0; e < 2000; e++) kn_set_f64(R, e, 0.5 + (double)(e % 7));
    tg_const(g, "R", R);
    tg_node_v(g, "Dropout", "", 11, "x", "y", NULL, 0); /* opset 11: ratio an attribute, no training mode */
    NODE(g, "Mul", "y R", "p");
    NODE_A(g, "ReduceSum", "p", "loss", attr_i("keepdims", 0));
    tg_output(g, "loss");
    tg_output(g, "y");
    ck_assert_ptr_null(kn_graph_resolve_ops(g));
    kn_status *st = kn_graph_set_dropout(g, ratio, seed, n_changed);
    ck_assert_msg(st == NULL, "set_dropout: %s", st ? kn_status_message(st) : "");
    int x = kn_graph_find_value(g, "x");
    st = kn_autograd(g, kn_graph_find_value(g, "loss"), &x, 1, gx);
    ck_assert_msg(st == NULL, "autograd: %s", st ? kn_status_message(st) : "");
    return g;
}

/* Runs the session `steps` times; masks[step * 2000 + e] = element kept. */
static void dropout_runs(double ratio, uint64_t seed, int steps, uint8_t *masks) {
    int n_changed = 0, gx = -1;
    kn_graph *g = dropout_graph(ratio, seed, &n_changed, &gx);
    ck_assert_int_eq(n_changed, 1);
    kn_model *m;
    kn_session *s = open_session(g, &m);
    kn_tensor *x = mk(KN_F32, 2, (int64_t[]){40, 50}, NULL);
    for (int64_t e = 0; e < 2000; e++) kn_set_f64(x, e, 1.0 + (double)(e % 13));
    for (int step = 0; step < steps; step++) {
        kn_tensor outs[3];
        kn_status *st = kn_session_run_values(s, x, outs);
        ck_assert_msg(st == NULL, "run: %s", st ? kn_status_message(st) : "");
        int dropped = 0;
        double scale = 1.0 / (1.0 - ratio);
        for (int64_t e = 0; e < 2000; e++) {
            double xv = kn_get_f64(x, e), yv = kn_get_f64(&outs[1], e), gv = kn_get_f64(&outs[2], e);
            double rv = 0.5 + (double)(e % 7);
            bool keep = yv != 0;
            masks[step * 2000 + e] = keep;
            dropped += !keep;
            ck_assert_msg(fabs(yv - (keep ? xv * scale : 0)) <= 1e-5 * xv * scale, "y[%lld] = %g for x %g",
                          (long long)e, yv, xv);
            ck_assert_msg(fabs(gv - (keep ? rv * scale : 0)) <= 1e-5 * rv * scale, "grad[%lld] = %g", (long long)e, gv);
        }
        if (ratio == 0) ck_assert_int_eq(dropped, 0);
        else ck_assert_msg(fabs(dropped / 2000.0 - ratio) < 0.05, "dropped %d of 2000 at ratio %g", dropped, ratio);
        for (int k = 0; k < 3; k++) kn_tensor_release(&outs[k]);
    }
    kn_tensor_free(x);
    kn_session_free(s);
    kn_model_free(m);
}

START_TEST(set_dropout_training) {
    uint8_t a[3 * 2000], b[3 * 2000], c[3 * 2000], z[2000];
    dropout_runs(0.25, 42, 3, a);
    dropout_runs(0.25, 42, 3, b);
    dropout_runs(0.25, 43, 3, c);
    ck_assert_msg(!memcmp(a, b, sizeof a), "the same seed drew other masks in a fresh session");
    ck_assert_msg(memcmp(a, a + 2000, 2000) && memcmp(a + 2000, a + 4000, 2000), "a step repeated the last mask");
    ck_assert_msg(memcmp(a, c, 2000), "another seed drew the same mask");
    dropout_runs(0.0, 42, 1, z);
}
END_TEST

/* Every op whose grad column is RULE appears in at least one finite-difference case (as the op
 * under test or on the differentiated path of one): a rule added without a case fails here,
 * naming the op. */
START_TEST(every_rule_has_a_case) {
    bool seen[KN_OP_COUNT] = {false};
    for (int k = 0; k < N_CASES; k++) {
        kn_graph *g = tg_new();
        cases[k].build(g);
        ck_assert_ptr_null(kn_graph_resolve_ops(g));
        for (int i = 0; i < g->n_nodes; i++)
            if (g->nodes[i].op >= 0) seen[g->nodes[i].op] = true;
        kn_graph_free(g);
    }
    int n_rule = 0, missing = 0;
    char names[2048] = "";
    for (int op = 0; op < KN_OP_COUNT; op++) {
        if (kn_op_table[op].grad != KN_GRAD_RULE) continue;
        n_rule++;
        if (seen[op]) continue;
        missing++;
        size_t len = strlen(names);
        snprintf(names + len, sizeof names - len, " %s%s%s", kn_op_table[op].domain,
                 kn_op_table[op].domain[0] ? ":" : "", kn_op_table[op].name);
    }
    fprintf(stderr, "autograd: %d ops with a gradient rule, checked by %d finite-difference cases\n", n_rule, N_CASES);
    ck_assert_msg(missing == 0, "%d RULE ops without a finite-difference case:%s", missing, names);
}
END_TEST

/* Ties at the maximum, as PyTorch: ReduceMax splits dy evenly between tied elements (amax),
 * MaxPool sends it to the first maximum of each window, GlobalMaxPool splits it (amax again). */
static void tie_case(const char *op, const kn_attr *attrs, int n_attrs, const int64_t *dims, int nd, const double *x,
                     const double *want) {
    kn_graph *g = tg_new();
    tg_input(g, "x", KN_F64, dims, nd);
    tg_node_v(g, op, "", 0, "x", "y", attrs, n_attrs);
    NODE_A(g, "ReduceSum", "y", "loss", attr_i("keepdims", 0));
    tg_output(g, "loss");
    ck_assert_ptr_null(kn_graph_resolve_ops(g));
    int wrt = kn_graph_find_value(g, "x");
    kn_status *st = kn_autograd(g, kn_graph_find_value(g, "loss"), &wrt, 1, NULL);
    ck_assert_msg(st == NULL, "autograd: %s", st ? kn_status_message(st) : "");
    kn_model *m;
    kn_session *s = open_session(g, &m);
    kn_tensor *xt = mk(KN_F64, nd, dims, x);
    kn_tensor outs[2];
    st = kn_session_run_values(s, xt, outs);
    ck_assert_msg(st == NULL, "run: %s", st ? kn_status_message(st) : "");
    expect_close(&outs[1], want, kn_numel(xt), 0, 1e-15, op);
    for (int k = 0; k < 2; k++) kn_tensor_release(&outs[k]);
    kn_tensor_free(xt);
    kn_session_free(s);
    kn_model_free(m);
}

START_TEST(ties_as_pytorch) {
    tie_case("ReduceMax", (kn_attr[]){attr_i("keepdims", 0)}, 1, (int64_t[]){2, 3}, 2, (double[]){1, 3, 3, 2, 3, 0},
             (double[]){0, 1.0 / 3, 1.0 / 3, 0, 1.0 / 3, 0});
    tie_case("ReduceMin", (kn_attr[]){attr_ints("axes", INS(1))}, 1, (int64_t[]){2, 3}, 2, (double[]){1, 1, 3, 2, 4, 2},
             (double[]){0.5, 0.5, 0, 0.5, 0, 0.5});
    tie_case("MaxPool", (kn_attr[]){attr_ints("kernel_shape", INS(2)), attr_ints("strides", INS(1))}, 2,
             (int64_t[]){1, 1, 4}, 3, (double[]){3, 3, 1, 1}, (double[]){1, 1, 1, 0});
    tie_case("GlobalMaxPool", NULL, 0, (int64_t[]){1, 2, 3}, 3, (double[]){5, 1, 5, 0, 0, -1},
             (double[]){0.5, 0, 0.5, 0.5, 0.5, 0});
}
END_TEST

int main(void) {
    Suite *s = suite_create("autograd");
    TCase *tc = tcase_create("autograd");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, grad_case, 0, N_CASES);
    tcase_add_test(tc, no_rule_names_path);
    tcase_add_test(tc, shape_paths_and_initializers);
    tcase_add_test(tc, unknown_dtype_refused);
    tcase_add_test(tc, set_dropout_training);
    tcase_add_test(tc, every_rule_has_a_case);
    tcase_add_test(tc, ties_as_pytorch);
    suite_add_tcase(s, tc);
    return kn_test_run_suite(s);
}
