/* Checks of kn_train_fuse (autograd/train_fuse.c): on a decomposed attention block whose score
 * scale is a float32 initializer, the scale is absorbed into KnSdpa only when it is not
 * trainable (a trainable scale keeps the decomposition and its initializer); the gradients of
 * the fused graph (KnSdpa's SdpaGrad) equal those of the decomposed graph (Softmax's backward and
 * four MatMuls), and a GELU (Erf form) is fused into com.microsoft Gelu, which autograd
 * differentiates as well. */
#include "tests/unit/harness.h"
#include "autograd/autograd.h"
#include "autograd/train_fuse.h"
#include "graph/model.h"
#include "runtime/executor.h"
#include "runtime/kiln.h"
#include <math.h>
#include <stdio.h>

static int gv(kn_graph *g, const char *name) {
    int v = kn_graph_find_value(g, name);
    if (v < 0) v = kn_graph_add_value(g, name);
    ck_assert_int_ge(v, 0);
    return v;
}

static void node(kn_graph *g, const char *op, const char *ins, const char *outs, const kn_attr *attrs, int n_attrs) {
    int iv[8], ov[8], ni = 0, no = 0;
    char buf[256], *save = NULL;
    snprintf(buf, sizeof buf, "%s", ins);
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) iv[ni++] = gv(g, t);
    snprintf(buf, sizeof buf, "%s", outs);
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) ov[no++] = gv(g, t);
    kn_attr *a = n_attrs ? calloc((size_t)n_attrs, sizeof *a) : NULL;
    for (int i = 0; i < n_attrs; i++) ck_assert_ptr_null(kn_attr_copy(&a[i], &attrs[i]));
    char name[64];
    snprintf(name, sizeof name, "n%d_%s", g->n_nodes, op);
    ck_assert_int_ge(kn_graph_add_node(g, name, op, "", iv, ni, ov, no, a, n_attrs), 0);
    g->nodes[g->n_nodes - 1].opset = 17;
}

static void input(kn_graph *g, const char *name, int nd, const int64_t *dims) {
    int v = gv(g, name);
    g->values[v].is_input = true;
    g->values[v].type.dtype = KN_F32;
    kn_tensor_set_shape(&g->values[v].type, nd, dims);
    g->inputs = realloc(g->inputs, sizeof(int) * (size_t)(g->n_inputs + 1));
    g->inputs[g->n_inputs++] = v;
}

static void constant(kn_graph *g, const char *name, kn_tensor *t) {
    int v = gv(g, name);
    g->values[v].constant = t;
    g->values[v].type.dtype = t->dtype;
    kn_tensor_set_shape(&g->values[v].type, t->ndim, t->dims);
}

static const int64_t QD[4] = {2, 3, 5, 4};

/* y = Gelu_erf(softmax(Q K^T * sc) V), loss = sum(y * R) */
static kn_graph *build(void) {
    kn_graph *g = kn_graph_new("train_fuse_test");
    g->opsets[0] = 17;
    g->opset_domains[0] = strdup("");
    g->n_opsets = 1;
    input(g, "Q", 4, QD);
    input(g, "K", 4, QD);
    input(g, "V", 4, QD);
    constant(g, "sc", mk(KN_F32, 0, NULL, (double[]){0.5}));
    constant(g, "sqrt2", mk(KN_F32, 0, NULL, (double[]){sqrt(2.0)}));
    constant(g, "one", mk(KN_F32, 0, NULL, (double[]){1.0}));
    constant(g, "half", mk(KN_F32, 0, NULL, (double[]){0.5}));
    double r[120];
    for (int i = 0; i < 120; i++) r[i] = sin(0.37 * i + 0.1);
    constant(g, "R", mk(KN_F32, 4, QD, r));
    kn_attr perm = attr_ints("perm", (int64_t[]){0, 1, 3, 2}, 4), ax = attr_i("axis", -1), kd = attr_i("keepdims", 0);
    node(g, "Transpose", "K", "Kt", &perm, 1);
    node(g, "MatMul", "Q Kt", "S", NULL, 0);
    node(g, "Mul", "S sc", "Ss", NULL, 0);
    node(g, "Softmax", "Ss", "P", &ax, 1);
    node(g, "MatMul", "P V", "x", NULL, 0);
    node(g, "Div", "x sqrt2", "xd", NULL, 0);
    node(g, "Erf", "xd", "e", NULL, 0);
    node(g, "Add", "e one", "e1", NULL, 0);
    node(g, "Mul", "x e1", "xe", NULL, 0);
    node(g, "Mul", "xe half", "y", NULL, 0);
    node(g, "Mul", "y R", "yr", NULL, 0);
    node(g, "ReduceSum", "yr", "loss", &kd, 1);
    int l = gv(g, "loss");
    g->values[l].is_output = true;
    g->outputs = malloc(sizeof(int));
    g->outputs[g->n_outputs++] = l;
    ck_assert_ptr_null(kn_graph_resolve_ops(g));
    return g;
}

static int count(const kn_graph *g, const char *op) {
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++) n += !strcmp(g->nodes[i].op_type, op);
    return n;
}

/* The loss and d/dQ, d/dK, d/dV of g at fixed inputs (4 tensors, released by the caller); g is
 * freed. Returns the number of SdpaGrad nodes the backward has. */
static int grads(kn_graph *g, kn_tensor *outs) {
    int wrt[3] = {gv(g, "Q"), gv(g, "K"), gv(g, "V")};
    kn_status *st = kn_autograd(g, gv(g, "loss"), wrt, 3, NULL);
    ck_assert_msg(st == NULL, "autograd: %s", st ? kn_status_message(st) : "");
    int n_sdpa_grad = count(g, "SdpaGrad");
    kn_model *m = calloc(1, sizeof *m);
    m->graph = g;
    kn_session *s = NULL;
    ck_assert_ptr_null(kn_session_create(m, NULL, &s));
    kn_tensor in[3];
    kn_tensor *t[3];
    for (int k = 0; k < 3; k++) {
        double v[120];
        for (int i = 0; i < 120; i++) v[i] = cos(0.11 * i * (k + 1) + k);
        t[k] = mk(KN_F32, 4, QD, v);
        in[k] = *t[k];
    }
    st = kn_session_run_values(s, in, outs);
    ck_assert_msg(st == NULL, "run: %s", st ? kn_status_message(st) : "");
    for (int k = 0; k < 3; k++) kn_tensor_free(t[k]);
    kn_session_free(s);
    kn_model_free(m);
    return n_sdpa_grad;
}

START_TEST(scale_absorbed_only_when_frozen) {
    kn_graph *g = build();
    kn_fuse_counts c;
    ck_assert_ptr_null(kn_train_fuse(g, NULL, &c)); /* every float initializer trainable, sc included */
    ck_assert_int_eq(c.attention, 0);
    ck_assert_int_eq(count(g, "Softmax"), 1);
    ck_assert_ptr_nonnull(g->values[gv(g, "sc")].constant); /* restored after the passes */
    ck_assert_int_eq(c.gelu, 0);                            /* its constants are trainable too */
    kn_graph_free(g);

    g = build();
    ck_assert_ptr_null(kn_train_fuse(g, "Q_proj*", &c)); /* nothing in the graph is trainable */
    ck_assert_int_eq(c.attention, 1);
    ck_assert_int_eq(c.gelu, 1);
    ck_assert_int_eq(count(g, "KnSdpa"), 1);
    ck_assert_int_eq(count(g, "Softmax"), 0);
    for (int i = 0; i < g->n_nodes; i++)
        if (!strcmp(g->nodes[i].op_type, "KnSdpa"))
            ck_assert_float_eq_tol(kn_attr_float(&g->nodes[i], "scale", 0), 0.5f, 1e-7f);
    kn_graph_free(g);
}
END_TEST

START_TEST(fused_gradients_match) {
    kn_graph *a = build(), *b = build();
    kn_fuse_counts c;
    ck_assert_ptr_null(kn_train_fuse(b, "none", &c));
    ck_assert_int_eq(c.attention, 1);
    kn_tensor ga[4], gb[4];
    ck_assert_int_eq(grads(a, ga), 0);
    ck_assert_int_eq(grads(b, gb), 1);
    for (int k = 0; k < 4; k++) {
        ck_assert_int_eq(kn_numel(&ga[k]), kn_numel(&gb[k]));
        double worst = 0, mx = 0;
        for (int64_t e = 0; e < kn_numel(&ga[k]); e++) {
            worst = fmax(worst, fabs(kn_get_f64(&ga[k], e) - kn_get_f64(&gb[k], e)));
            mx = fmax(mx, fabs(kn_get_f64(&ga[k], e)));
        }
        fprintf(stderr, "train_fuse: output %d: fused vs decomposed %.2e of max %.3g\n", k, worst, mx);
        ck_assert_msg(worst <= 2e-6 * (1 + mx), "output %d differs by %g", k, worst);
        kn_tensor_release(&ga[k]);
        kn_tensor_release(&gb[k]);
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("train_fuse");
    TCase *tc = tcase_create("train_fuse");
    tcase_add_test(tc, scale_absorbed_only_when_frozen);
    tcase_add_test(tc, fused_gradients_match);
    suite_add_tcase(s, tc);
    return kn_test_run_suite(s);
}
