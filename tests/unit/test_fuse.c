/* Tests of the fusion passes (graph/fuse.c): small graphs for each pattern and its exporter
 * variants, the op histogram before and after, the fused node's attributes, the outputs of the
 * fused and unfused graphs on the same random inputs, and near misses that must stay unfused. */
#include "tests/unit/harness.h"
#include "graph/model.h"
#include "graph/passes.h"
#include "runtime/kiln.h"
#include <stdio.h>

/* ---- graph building ---- */

static kn_graph *tg_new(void) {
    kn_graph *g = kn_graph_new("fuse_test");
    ck_assert_ptr_nonnull(g);
    g->opsets[0] = 17;
    g->opset_domains[0] = strdup("");
    g->n_opsets = 1;
    return g;
}

static int tg_value(kn_graph *g, const char *name) {
    int v = kn_graph_find_value(g, name);
    if (v < 0) v = kn_graph_add_value(g, name);
    ck_assert_int_ge(v, 0);
    return v;
}

/* A float32 graph input; ndim -1 leaves its rank unknown. */
static int tg_input(kn_graph *g, const char *name, int ndim, const int64_t *dims) {
    int v = tg_value(g, name);
    g->values[v].is_input = true;
    g->values[v].type.dtype = KN_F32;
    if (ndim >= 0) kn_tensor_set_shape(&g->values[v].type, ndim, dims);
    g->inputs = realloc(g->inputs, sizeof(int) * (size_t)(g->n_inputs + 1));
    g->inputs[g->n_inputs++] = v;
    return v;
}

static void tg_output(kn_graph *g, const char *name) {
    int v = tg_value(g, name);
    g->values[v].is_output = true;
    g->outputs = realloc(g->outputs, sizeof(int) * (size_t)(g->n_outputs + 1));
    g->outputs[g->n_outputs++] = v;
}

/* A float32 constant (scalar when nd == 0) filled from vals, or with a ramp when vals is NULL. */
static void tg_const(kn_graph *g, const char *name, int nd, const int64_t *dims, const double *vals) {
    int v = tg_value(g, name);
    kn_tensor *t = mk(KN_F32, nd, dims, vals);
    for (int64_t i = 0; !vals && i < kn_numel(t); i++) kn_set_f64(t, i, 0.05 * (double)((i * 7) % 11) - 0.2);
    g->values[v].constant = t;
    g->values[v].type.dtype = KN_F32;
    kn_tensor_set_shape(&g->values[v].type, nd, dims);
}

static void tg_const_i64(kn_graph *g, const char *name, int n, const int64_t *vals) {
    int v = tg_value(g, name);
    int64_t d[1] = {n};
    kn_tensor *t = mk_raw(KN_I64, 1, d, vals);
    g->values[v].constant = t;
    g->values[v].type.dtype = KN_I64;
    kn_tensor_set_shape(&g->values[v].type, 1, d);
}

static void tg_scalar(kn_graph *g, const char *name, double x) { tg_const(g, name, 0, NULL, &x); }

/* A node with inputs / outputs given as space-separated value names ("-" for an omitted one) and
 * borrowed attributes (copied). */
static void tg_node(kn_graph *g, const char *op, const char *domain, const char *ins, const char *outs,
                    const kn_attr *attrs, int n_attrs) {
    int iv[8], ov[8], ni = 0, no = 0;
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
    ck_assert_int_ge(kn_graph_add_node(g, name, op, domain, iv, ni, ov, no, a, n_attrs), 0);
}
#define NODE(g, op, ins, outs) tg_node(g, op, "", ins, outs, NULL, 0)

static int count_op(const kn_graph *g, const char *op) {
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++) n += strcmp(g->nodes[i].op_type, op) == 0;
    return n;
}

static const kn_node *find_op(const kn_graph *g, const char *op) {
    for (int i = 0; i < g->n_nodes; i++)
        if (strcmp(g->nodes[i].op_type, op) == 0) return &g->nodes[i];
    return NULL;
}

/* ---- running a graph ---- */

/* The shape fed to an input declared without one (the unknown-rank near misses). */
static int fb_ndim;
static int64_t fb_dims[KN_MAX_DIMS];

/* Runs g (taken over by a model) on deterministic pseudo-random inputs drawn with seed; returns the
 * first output as a malloc'd float array and its element count. */
static float *run_graph(kn_graph *g, unsigned seed, int64_t *n_out) {
    kn_model *m = calloc(1, sizeof *m);
    m->graph = g;
    kn_session *s = NULL;
    kn_status *st = kn_session_create(m, NULL, &s);
    ck_assert_msg(st == NULL, "session: %s", st ? kn_status_message(st) : "");
    kn_named_tensor in[8];
    float *bufs[8];
    for (int i = 0; i < g->n_inputs; i++) {
        const kn_value *v = &g->values[g->inputs[i]];
        memset(&in[i], 0, sizeof in[i]);
        in[i].name = v->name;
        in[i].dtype = KN_F32;
        bool fb = v->type.ndim < 0;
        in[i].ndim = fb ? fb_ndim : v->type.ndim;
        int64_t n = 1;
        for (int d = 0; d < in[i].ndim; d++) {
            in[i].dims[d] = fb ? fb_dims[d] : v->type.dims[d];
            n *= in[i].dims[d];
        }
        bufs[i] = malloc(sizeof(float) * (size_t)n);
        for (int64_t k = 0; k < n; k++) {
            seed = seed * 1103515245u + 12345u;
            bufs[i][k] = (float)((seed >> 8) & 0xffff) / 65536.0f * 2.0f - 1.0f;
        }
        in[i].data = bufs[i];
        in[i].capacity = sizeof(float) * (size_t)n;
    }
    kn_named_tensor out = {0};
    out.name = g->values[g->outputs[0]].name;
    st = kn_session_run(s, in, g->n_inputs, &out, 1);
    ck_assert_msg(st == NULL, "run: %s", st ? kn_status_message(st) : "");
    ck_assert_int_eq(out.dtype, KN_F32);
    int64_t n = 1;
    for (int d = 0; d < out.ndim; d++) n *= out.dims[d];
    float *r = malloc(sizeof(float) * (size_t)(n ? n : 1));
    memcpy(r, out.data, sizeof(float) * (size_t)n);
    kn_free(out.data);
    for (int i = 0; i < g->n_inputs; i++) free(bufs[i]);
    kn_session_free(s);
    kn_model_free(m);
    *n_out = n;
    return r;
}

/* Builds the graph twice, applies `pass` to one copy, checks the fused count, and compares the
 * outputs of both copies on the same inputs (1e-5 relative). Returns the fused graph's histogram
 * of `op` through *n_op and fills *fused_attr_scale with the fused node's "scale" when present. */
typedef kn_graph *(*builder_fn)(int variant);
typedef kn_status *(*pass_fn)(kn_graph *g, int *n);

static void check_pass(builder_fn build, int variant, pass_fn pass, int want_fused, const char *op, int want_op,
                       const char *gone, float *scale_out) {
    kn_graph *ref = build(variant), *g = build(variant);
    kn_graph_resolve_ops(ref);
    kn_graph_resolve_ops(g);
    int gone_before = gone ? count_op(g, gone) : 0;
    int nodes_before = g->n_nodes;
    int n = -1;
    ck_assert_ptr_null(pass(g, &n));
    ck_assert_msg(n == want_fused, "variant %d: %d fused, want %d", variant, n, want_fused);
    ck_assert_int_eq(count_op(g, op), want_op);
    if (gone && want_fused) ck_assert_msg(count_op(g, gone) < gone_before, "variant %d: %s not removed", variant, gone);
    if (!want_fused) ck_assert_int_eq(g->n_nodes, nodes_before);
    else kn_graph_eliminate_dead(g);
    const kn_node *f = find_op(g, op);
    if (scale_out && f) *scale_out = kn_attr_float(f, "scale", NAN);
    /* graph outputs keep their names and dtypes */
    ck_assert_int_eq(g->n_outputs, ref->n_outputs);
    for (int k = 0; k < g->n_outputs; k++)
        ck_assert_str_eq(g->values[g->outputs[k]].name, ref->values[ref->outputs[k]].name);
    int64_t na, nb;
    float *a = run_graph(ref, 99u + (unsigned)variant, &na), *b = run_graph(g, 99u + (unsigned)variant, &nb);
    ck_assert_int_eq(na, nb);
    ck_assert_int_gt(na, 0);
    for (int64_t i = 0; i < na; i++)
        FAST_ASSERT(fabsf(a[i] - b[i]) <= 1e-5f * fmaxf(1.0f, fabsf(a[i])), "variant %d: out[%lld] %g vs fused %g",
                    variant, (long long)i, a[i], b[i]);
    free(a);
    free(b);
}

/* ---- attention ---- */

enum { B = 2, H = 3, S = 5, T = 6, D = 4 };

/* variant 0: PyTorch SDPA export: [B,S,H*D] projections, Reshape + Transpose (K with perm 0,2,3,1),
 *            sqrt(scale) on Q and on K, additive [B,1,S,T] mask, Where(IsNaN) guard, merge back.
 * variant 1: Q, K, V given as [B,H,S,D]; K^T by perm 0,1,3,2; Div of the scores by sqrt(D); a
 *            [1,1,S,1] bias (last dim broadcast) as Add's first operand; no guard.
 * variant 2: Mul of the scores by 1/sqrt(D), no mask.
 * variant 3: as 2 with Q through a per-head RMS norm (Pow, ReduceMean keepdims over the last axis,
 *            Add eps, Sqrt, Div, Mul, Mul by a weight), as Gemma-3 exports its q_norm: its rank is
 *            proven through the ReduceMean.
 * near misses: 10 Softmax axis 2; 11 the scores are also a graph output; 12 Q of unknown rank;
 *            13 the softmax probabilities also feed another node; 14 variant 3 with keepdims 0
 *            (the norm's rank, one less, is not followed: Q's rank unproven). */
static kn_graph *build_attention(int variant) {
    kn_graph *g = tg_new();
    int64_t d3q[3] = {B, S, H * D}, d3k[3] = {B, T, H * D}, d4q[4] = {B, H, S, D}, d4k[4] = {B, H, T, D};
    int64_t p0213[4] = {0, 2, 1, 3}, p0231[4] = {0, 2, 3, 1}, p0132[4] = {0, 1, 3, 2};
    kn_attr tq = attr_ints("perm", p0213, 4), tk = attr_ints("perm", p0231, 4), tkt = attr_ints("perm", p0132, 4);
    kn_attr sm = attr_i("axis", variant == 10 ? 2 : -1);
    if (variant == 0) {
        tg_input(g, "q", 3, d3q);
        tg_input(g, "k", 3, d3k);
        tg_input(g, "v", 3, d3k);
        int64_t md[4] = {B, 1, S, T};
        tg_input(g, "mask", 4, md);
        int64_t sq[4] = {B, S, H, D}, sk[4] = {B, T, H, D}, so[3] = {B, S, H * D};
        tg_const_i64(g, "shq", 4, sq);
        tg_const_i64(g, "shk", 4, sk);
        tg_const_i64(g, "sho", 3, so);
        tg_scalar(g, "c", 1.0 / sqrt(sqrt((double)D)));
        tg_scalar(g, "zero", 0.0);
        NODE(g, "Reshape", "q shq", "qr");
        tg_node(g, "Transpose", "", "qr", "q4", &tq, 1);
        NODE(g, "Reshape", "k shk", "kr");
        tg_node(g, "Transpose", "", "kr", "kt", &tk, 1);
        NODE(g, "Reshape", "v shk", "vr");
        tg_node(g, "Transpose", "", "vr", "v4", &tq, 1);
        NODE(g, "Mul", "q4 c", "qs");
        NODE(g, "Mul", "kt c", "ks");
        NODE(g, "MatMul", "qs ks", "scores");
        NODE(g, "Add", "scores mask", "masked");
        tg_node(g, "Softmax", "", "masked", "p", &sm, 1);
        NODE(g, "IsNaN", "p", "nan");
        NODE(g, "Where", "nan zero p", "pg");
        NODE(g, "MatMul", "pg v4", "ctx");
        tg_node(g, "Transpose", "", "ctx", "ctx2", &tq, 1);
        NODE(g, "Reshape", "ctx2 sho", "y");
        tg_output(g, "y");
        return g;
    }
    tg_input(g, "q4", variant == 12 ? -1 : 4, d4q);
    if (variant == 12) g->values[g->inputs[0]].type.dtype = KN_F32;
    tg_input(g, "k4", 4, d4k);
    tg_input(g, "v4", 4, d4k);
    tg_node(g, "Transpose", "", "k4", "kt", &tkt, 1);
    const char *qv = "q4";
    if (variant == 3 || variant == 14) {
        int64_t last = -1, dw[1] = {D};
        double w[D];
        for (int i = 0; i < D; i++) w[i] = 0.5 + 0.25 * i;
        kn_attr rm[2] = {attr_ints("axes", &last, 1), attr_i("keepdims", variant == 3)};
        tg_scalar(g, "two", 2.0);
        tg_scalar(g, "eps", 1e-6);
        tg_scalar(g, "one", 1.0);
        tg_const(g, "qw", 1, dw, w);
        NODE(g, "Pow", "q4 two", "q2");
        tg_node(g, "ReduceMean", "", "q2", "ms", rm, 2);
        NODE(g, "Add", "ms eps", "mse");
        NODE(g, "Sqrt", "mse", "rms");
        NODE(g, "Div", "one rms", "inv");
        if (variant == 14) {
            int64_t ax[1] = {-1};
            tg_const_i64(g, "ax", 1, ax);
            NODE(g, "Unsqueeze", "inv ax", "inv4");
            NODE(g, "Mul", "q4 inv4", "qn");
        } else {
            NODE(g, "Mul", "q4 inv", "qn");
        }
        NODE(g, "Mul", "qn qw", "qnw");
        qv = "qnw";
    }
    char qk[32];
    snprintf(qk, sizeof qk, "%s kt", qv);
    NODE(g, "MatMul", qk, "scores");
    const char *pre = "scores";
    if (variant == 2 || variant == 3 || variant == 14) {
        tg_scalar(g, "c", 1.0 / sqrt((double)D));
        NODE(g, "Mul", "c scores", "scaled");
        pre = "scaled";
    } else {
        int64_t md[4] = {1, 1, S, 1};
        tg_input(g, "bias", 4, md);
        tg_scalar(g, "c", sqrt((double)D));
        NODE(g, "Div", "scores c", "scaled");
        NODE(g, "Add", "bias scaled", "masked");
        pre = "masked";
    }
    tg_node(g, "Softmax", "", pre, "p", &sm, 1);
    NODE(g, "MatMul", "p v4", "y");
    tg_output(g, "y");
    if (variant == 11) tg_output(g, "scores");
    if (variant == 13) {
        NODE(g, "Neg", "p", "pn");
        tg_output(g, "pn");
    }
    return g;
}

START_TEST(test_fuse_attention) {
    float scale = 0;
    check_pass(build_attention, 0, kn_pass_fuse_attention, 1, "KnSdpa", 1, "Softmax", &scale);
    ck_assert(fabsf(scale - 0.5f) < 1e-6f); /* (1/sqrt(sqrt(4)))^2 */
    check_pass(build_attention, 1, kn_pass_fuse_attention, 1, "KnSdpa", 1, "Softmax", &scale);
    ck_assert(fabsf(scale - 0.5f) < 1e-6f);
    check_pass(build_attention, 2, kn_pass_fuse_attention, 1, "KnSdpa", 1, "Softmax", &scale);
    ck_assert(fabsf(scale - 0.5f) < 1e-6f);
    check_pass(build_attention, 3, kn_pass_fuse_attention, 1, "KnSdpa", 1, "Softmax", &scale);
    ck_assert(fabsf(scale - 0.5f) < 1e-6f);
    /* variant 0 drops Softmax, IsNaN, Where, both MatMuls, both Muls, Add and K's Transpose for one
     * KnSdpa and a Transpose of K to [B,H,T,D] */
    kn_graph *g = build_attention(0);
    kn_graph_resolve_ops(g);
    int before = g->n_nodes, n = 0;
    ck_assert_ptr_null(kn_pass_fuse_attention(g, &n));
    ck_assert_int_eq(count_op(g, "IsNaN") + count_op(g, "Where") + count_op(g, "MatMul") + count_op(g, "Mul"), 0);
    ck_assert_int_eq(count_op(g, "Transpose"), 4);
    ck_assert_int_eq(g->n_nodes, before - 9 + 2);
    const kn_node *f = find_op(g, "KnSdpa");
    ck_assert_int_eq(f->n_inputs, 4);
    ck_assert_str_eq(f->domain, "kiln");
    ck_assert_str_eq(g->values[f->inputs[3]].name, "mask");
    kn_graph_free(g);
}
END_TEST

/* A model converted to float16 holds the attention's scale and NaN guard as float16 constants:
 * kn_pass_fuse_attention leaves it (its kernels' other users take float32), the CPU's
 * kn_pass_fuse_attention_lowp fuses it with the float16 value as the scale. Structure only: the
 * graph mixes types here; textgen.fp16 runs a float16 model fused against ONNX Runtime. */
static kn_graph *build_attention_f16_consts(void) {
    kn_graph *g = build_attention(0);
    const char *names[2] = {"c", "zero"};
    for (int i = 0; i < 2; i++) {
        int v = kn_graph_find_value(g, names[i]);
        ck_assert_int_ge(v, 0);
        double x = kn_get_f64(g->values[v].constant, 0);
        kn_tensor_free(g->values[v].constant);
        g->values[v].constant = mk(KN_F16, 0, NULL, &x);
        g->values[v].type.dtype = KN_F16;
    }
    kn_graph_resolve_ops(g);
    return g;
}

START_TEST(test_fuse_attention_f16_consts) {
    kn_graph *g = build_attention_f16_consts();
    int n = -1;
    ck_assert_ptr_null(kn_pass_fuse_attention(g, &n));
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(count_op(g, "KnSdpa"), 0);
    kn_graph_free(g);
    g = build_attention_f16_consts();
    ck_assert_ptr_null(kn_pass_fuse_attention_lowp(g, &n));
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(count_op(g, "Softmax") + count_op(g, "IsNaN") + count_op(g, "Where"), 0);
    const kn_node *f = find_op(g, "KnSdpa");
    ck_assert_ptr_nonnull(f);
    /* 1/sqrt(sqrt(4)) rounds to 0.70703125 in float16: the scale is its square, not 0.5 */
    ck_assert(fabsf(kn_attr_float(f, "scale", NAN) - 0.70703125f * 0.70703125f) < 1e-6f);
    /* the CPU backend asks for it, with the plain attention pass */
    unsigned m = kn_fusions_for_backend(kn_cpu_backend());
    ck_assert((m & KN_FUSE_ATTENTION) && (m & KN_FUSE_ATTENTION_LOWP));
    kn_graph_free(g);
}
END_TEST

START_TEST(test_fuse_attention_near_misses) {
    fb_ndim = 4;
    fb_dims[0] = B;
    fb_dims[1] = H;
    fb_dims[2] = S;
    fb_dims[3] = D;
    for (int v = 10; v <= 14; v++) check_pass(build_attention, v, kn_pass_fuse_attention, 0, "KnSdpa", 0, NULL, NULL);
}
END_TEST

/* ---- GELU ---- */

/* variant 0: Erf form after MatMul + 1-D bias, BERT's order (x * (erf + 1)) * 0.5 -> BiasGelu.
 * variant 1: Erf form by Mul(1/sqrt2), order (0.5 * x) * (1 + erf), on a graph input -> Gelu.
 * variant 2: Tanh form (GPT-2's gelu_new) after MatMul + bias -> FastGelu with bias.
 * near misses: 10 the bias is a graph input (the Add stays, Gelu alone fuses);
 *              11 Div by 1.5 instead of sqrt2; 12 Erf output also a graph output. */
static kn_graph *build_gelu(int variant) {
    kn_graph *g = tg_new();
    int64_t da[3] = {2, 3, 8}, dw[2] = {8, 6}, db[1] = {6};
    tg_input(g, "a", 3, da);
    tg_const(g, "w", 2, dw, NULL);
    if (variant == 10) tg_input(g, "b", 1, db);
    else tg_const(g, "b", 1, db, NULL);
    tg_scalar(g, "half", 0.5);
    tg_scalar(g, "one", 1.0);
    if (variant == 1) {
        tg_scalar(g, "rs2", 1.0 / sqrt(2.0));
        NODE(g, "Mul", "a rs2", "d");
        NODE(g, "Erf", "d", "e");
        NODE(g, "Add", "one e", "e1");
        NODE(g, "Mul", "half a", "hx");
        NODE(g, "Mul", "hx e1", "y");
        tg_output(g, "y");
        return g;
    }
    NODE(g, "MatMul", "a w", "mm");
    NODE(g, "Add", "b mm", "x");
    if (variant == 2) {
        tg_scalar(g, "three", 3.0);
        tg_scalar(g, "c1", 0.044715);
        tg_scalar(g, "c2", sqrt(2.0 / M_PI));
        NODE(g, "Pow", "x three", "x3");
        NODE(g, "Mul", "x3 c1", "x3c");
        NODE(g, "Add", "x x3c", "in");
        NODE(g, "Mul", "in c2", "ins");
        NODE(g, "Tanh", "ins", "t");
        NODE(g, "Add", "t one", "t1");
        NODE(g, "Mul", "x half", "hx");
        NODE(g, "Mul", "hx t1", "y");
        tg_output(g, "y");
        return g;
    }
    tg_scalar(g, "s2", variant == 11 ? 1.5 : sqrt(2.0));
    NODE(g, "Div", "x s2", "d");
    NODE(g, "Erf", "d", "e");
    NODE(g, "Add", "e one", "e1");
    NODE(g, "Mul", "x e1", "xe");
    NODE(g, "Mul", "xe half", "y");
    tg_output(g, "y");
    if (variant == 12) tg_output(g, "e");
    return g;
}

START_TEST(test_fuse_gelu) {
    check_pass(build_gelu, 0, kn_pass_fuse_bias_gelu, 1, "BiasGelu", 1, "Erf", NULL);
    check_pass(build_gelu, 1, kn_pass_fuse_bias_gelu, 1, "Gelu", 1, "Erf", NULL);
    check_pass(build_gelu, 2, kn_pass_fuse_bias_gelu, 1, "FastGelu", 1, "Tanh", NULL);
    kn_graph *g = build_gelu(0);
    kn_graph_resolve_ops(g);
    int n = 0;
    ck_assert_ptr_null(kn_pass_fuse_bias_gelu(g, &n));
    ck_assert_int_eq(g->n_nodes, 2); /* MatMul, BiasGelu */
    const kn_node *f = find_op(g, "BiasGelu");
    ck_assert_str_eq(f->domain, "com.microsoft");
    ck_assert_str_eq(g->values[f->inputs[0]].name, "mm");
    ck_assert_str_eq(g->values[f->inputs[1]].name, "b");
    kn_graph_free(g);
    g = build_gelu(2);
    kn_graph_resolve_ops(g);
    ck_assert_ptr_null(kn_pass_fuse_bias_gelu(g, &n));
    f = find_op(g, "FastGelu");
    ck_assert_int_eq(f->n_inputs, 2);
    ck_assert_int_eq(g->n_nodes, 2);
    kn_graph_free(g);
}
END_TEST

START_TEST(test_fuse_gelu_near_misses) {
    /* a non-constant bias is not folded in: the Add stays and the activation alone fuses */
    check_pass(build_gelu, 10, kn_pass_fuse_bias_gelu, 1, "Gelu", 1, "Erf", NULL);
    kn_graph *g = build_gelu(10);
    kn_graph_resolve_ops(g);
    int n = 0;
    ck_assert_ptr_null(kn_pass_fuse_bias_gelu(g, &n));
    ck_assert_int_eq(count_op(g, "BiasGelu"), 0);
    ck_assert_int_eq(count_op(g, "Add"), 1);
    kn_graph_free(g);
    check_pass(build_gelu, 11, kn_pass_fuse_bias_gelu, 0, "BiasGelu", 0, NULL, NULL);
    check_pass(build_gelu, 12, kn_pass_fuse_bias_gelu, 0, "BiasGelu", 0, NULL, NULL);
}
END_TEST

/* ---- residual add + LayerNormalization ---- */

/* variant 0: Add(x, residual) -> LayerNormalization(axis -1, epsilon 1e-6) -> y.
 * variant 1: the sum also feeds a later Add (pre-LN residual stream) -> output 3 carries it.
 * variant 2: 2-D operands, LayerNormalization without bias.
 * near misses: 10 axis 1; 11 the residual is a constant; 12 operands of unknown rank. */
static kn_graph *build_sln(int variant) {
    kn_graph *g = tg_new();
    int64_t d3[3] = {2, 3, 8}, d2[2] = {6, 8}, dg[1] = {8};
    int nd = variant == 2 ? 2 : 3;
    const int64_t *dx = variant == 2 ? d2 : d3;
    tg_input(g, "x", variant == 12 ? -1 : nd, dx);
    if (variant == 12) g->values[g->inputs[0]].type.dtype = KN_F32;
    if (variant == 11) tg_const(g, "r", nd, dx, NULL);
    else tg_input(g, "r", nd, dx);
    tg_const(g, "gamma", 1, dg, NULL);
    tg_const(g, "beta", 1, dg, NULL);
    NODE(g, "Add", "x r", "sum");
    kn_attr at[2] = {attr_i("axis", variant == 10 ? 1 : -1), attr_f("epsilon", 1e-6f)};
    tg_node(g, "LayerNormalization", "", variant == 2 ? "sum gamma" : "sum gamma beta", "y", at, 2);
    if (variant == 1) {
        NODE(g, "Add", "y sum", "z");
        tg_output(g, "z");
    } else {
        tg_output(g, "y");
    }
    return g;
}

START_TEST(test_fuse_skip_layernorm) {
    for (int v = 0; v <= 2; v++)
        check_pass(build_sln, v, kn_pass_fuse_skip_layernorm, 1, "SkipLayerNormalization", 1, "LayerNormalization",
                   NULL);
    kn_graph *g = build_sln(1);
    kn_graph_resolve_ops(g);
    int n = 0;
    ck_assert_ptr_null(kn_pass_fuse_skip_layernorm(g, &n));
    const kn_node *f = find_op(g, "SkipLayerNormalization");
    ck_assert_int_eq(f->n_outputs, 4);
    ck_assert_str_eq(g->values[f->outputs[3]].name, "sum");
    ck_assert(fabsf(kn_attr_float(f, "epsilon", 0) - 1e-6f) < 1e-12f);
    ck_assert_int_eq(count_op(g, "Add"), 1);
    kn_graph_free(g);
}
END_TEST

START_TEST(test_fuse_skip_layernorm_near_misses) {
    fb_ndim = 3;
    fb_dims[0] = 2;
    fb_dims[1] = 3;
    fb_dims[2] = 8;
    for (int v = 10; v <= 12; v++)
        check_pass(build_sln, v, kn_pass_fuse_skip_layernorm, 0, "SkipLayerNormalization", 0, NULL, NULL);
}
END_TEST

/* ---- GEMM + GELU epilogue ---- */

/* variant 0: FastGelu(MatMul(a, W), b) -> GemmFastGelu(a, W, b); 1: FastGelu without bias.
 * near misses: 10 W is a graph input; 11 the product is also a graph output. */
static kn_graph *build_gemm_gelu(int variant) {
    kn_graph *g = tg_new();
    int64_t da[3] = {2, 3, 8}, dw[2] = {8, 6}, db[1] = {6};
    tg_input(g, "a", 3, da);
    if (variant == 10) tg_input(g, "w", 2, dw);
    else tg_const(g, "w", 2, dw, NULL);
    tg_const(g, "b", 1, db, NULL);
    NODE(g, "MatMul", "a w", "mm");
    tg_node(g, "FastGelu", "com.microsoft", variant == 1 ? "mm" : "mm b", "y", NULL, 0);
    tg_output(g, "y");
    if (variant == 11) tg_output(g, "mm");
    return g;
}

START_TEST(test_fuse_gemm_gelu) {
    check_pass(build_gemm_gelu, 0, kn_pass_fuse_gemm_gelu, 1, "GemmFastGelu", 1, "FastGelu", NULL);
    check_pass(build_gemm_gelu, 1, kn_pass_fuse_gemm_gelu, 1, "GemmFastGelu", 1, "FastGelu", NULL);
    kn_graph *g = build_gemm_gelu(0);
    kn_graph_resolve_ops(g);
    int n = 0;
    ck_assert_ptr_null(kn_pass_fuse_gemm_gelu(g, &n));
    ck_assert_int_eq(g->n_nodes, 1);
    const kn_node *f = find_op(g, "GemmFastGelu");
    ck_assert_str_eq(f->domain, "com.microsoft");
    ck_assert_int_eq(f->n_inputs, 3);
    ck_assert_str_eq(g->values[f->inputs[0]].name, "a");
    ck_assert_str_eq(g->values[f->inputs[1]].name, "w");
    ck_assert_str_eq(g->values[f->inputs[2]].name, "b");
    kn_graph_free(g);
    /* the tanh GELU of a GPT-2 MLP: the GELU pass makes FastGelu(mm, b), this pass folds the MatMul in */
    g = build_gelu(2);
    kn_graph_resolve_ops(g);
    ck_assert_ptr_null(kn_pass_fuse_bias_gelu(g, &n));
    ck_assert_ptr_null(kn_pass_fuse_gemm_gelu(g, &n));
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(g->n_nodes, 1);
    ck_assert_int_eq(count_op(g, "GemmFastGelu"), 1);
    kn_graph_free(g);
    check_pass(build_gemm_gelu, 10, kn_pass_fuse_gemm_gelu, 0, "GemmFastGelu", 0, NULL, NULL);
    check_pass(build_gemm_gelu, 11, kn_pass_fuse_gemm_gelu, 0, "GemmFastGelu", 0, NULL, NULL);
}
END_TEST

/* Conv + Relu / Clip. Variants: 0 depthwise 3x3 + Clip(-0.2, 0.3); 1 dense 3x3 without bias +
 * Relu; 2 1x1 with bias + Clip with only a min; 3 grouped (G 2, Cg 3) stride 2 + Relu; 4 Clip-6
 * with attribute bounds; 5, 6 SiLU as Mul(c, Sigmoid(c)) and Mul(Sigmoid(c), c). Near misses: 10 the Conv output is also a graph output; 11 Clip's max is
 * an input; 12 W is an input; 13 the Sigmoid is of another value. */
static kn_graph *build_conv_act(int variant) {
    kn_graph *g = tg_new();
    if (variant == 4) g->opsets[0] = 6;
    int64_t C = variant == 1 ? 4
        : variant == 3       ? 6
                             : 8,
            M = variant == 3 ? 4 : 8,
            G = variant == 0 ? 8
        : variant == 3       ? 2
                             : 1;
    int64_t k = variant == 2 ? 1 : 3, s = variant == 3 ? 2 : 1;
    int64_t dx[4] = {2, C, 9, 11}, dw[4] = {M, C / G, k, k}, db[1] = {M};
    tg_input(g, "x", 4, dx);
    if (variant == 12) tg_input(g, "w", 4, dw);
    else tg_const(g, "w", 4, dw, NULL);
    tg_const(g, "b", 1, db, NULL);
    int64_t pads[4] = {k / 2, k / 2, k / 2, k / 2}, st[2] = {s, s};
    kn_attr at[3] = {attr_ints("pads", pads, 4), attr_ints("strides", st, 2), attr_i("group", G)};
    tg_node(g, "Conv", "", variant == 1 ? "x w" : "x w b", "c", at, 3);
    tg_scalar(g, "lo", -0.2);
    tg_scalar(g, "hi", 0.3);
    if (variant == 11) tg_input(g, "hi_in", 0, NULL);
    if (variant == 5 || variant == 6 || variant == 13) {
        NODE(g, "Sigmoid", variant == 13 ? "x" : "c", "sg");
        NODE(g, "Mul", variant == 6 ? "sg c" : "c sg", "y");
    } else if (variant == 1 || variant == 3) NODE(g, "Relu", "c", "y");
    else if (variant == 2) NODE(g, "Clip", "c lo", "y");
    else if (variant == 4) {
        kn_attr ca[2] = {attr_f("min", -0.1f), attr_f("max", 0.25f)};
        tg_node(g, "Clip", "", "c", "y", ca, 2);
    } else NODE(g, "Clip", variant == 11 ? "c lo hi_in" : "c lo hi", "y");
    tg_output(g, "y");
    if (variant == 10) tg_output(g, "c");
    return g;
}

START_TEST(test_fuse_conv_act) {
    for (int v = 0; v <= 6; v++) check_pass(build_conv_act, v, kn_pass_fuse_conv_act, 1, "FusedConv", 1, "Conv", NULL);
    kn_graph *g = build_conv_act(0);
    kn_graph_resolve_ops(g);
    int n = 0;
    ck_assert_ptr_null(kn_pass_fuse_conv_act(g, &n));
    const kn_node *f = find_op(g, "FusedConv");
    ck_assert_str_eq(kn_attr_str(f, "activation", ""), "Clip");
    ck_assert_int_eq(kn_attr_int(f, "group", 0), 8);
    ck_assert_int_eq(count_op(g, "Clip"), 0);
    kn_graph_free(g);
    for (int v = 10; v <= 13; v++) check_pass(build_conv_act, v, kn_pass_fuse_conv_act, 0, "FusedConv", 0, NULL, NULL);
}
END_TEST

/* ---- GEMM + activation ---- */

/* variant 0: Relu(Gemm(a, W, b[N])); 1: LeakyRelu(0.2) of Gemm transB, alpha 0.5, beta 2, C [M, N];
 * 2: Sigmoid(Add(b, MatMul(a, W))) (bias first); 3: Clip(Gemm(a, W), -0.2, 0.3) without C; 4:
 * HardSigmoid(0.3, 0.4) of MatMul + Add(mm, b[1, N]); 5: Tanh of Gemm transA; 6: Selu(1.5, 2) of
 * Gemm; 7: Softplus; 8: ThresholdedRelu(0.1); 9: Elu(0.7) of MatMul + Add; 14: Celu(0.5); 15:
 * Softsign. Near misses: 10 the Gemm output is also a graph output; 11 it also feeds another node;
 * 12 the MatMul's a has rank 3; 13 W is a graph input; 16 the bias is a graph input; 17 Clip's max
 * is an input; 18 the Add's other operand is [M, N]. */
static kn_graph *build_gemm_act(int variant) {
    kn_graph *g = tg_new();
    int64_t M = 5, K = 8, N = 6;
    bool mm = variant == 2 || variant == 4 || variant == 9 || variant == 12 || variant == 16 || variant == 18;
    bool ta = variant == 5, tb = variant == 1;
    int64_t da[3] = {ta ? K : M, ta ? M : K, 0}, da3[3] = {2, M, K}, dw[2] = {tb ? N : K, tb ? K : N};
    int64_t db[1] = {N}, db2[2] = {1, N}, dc[2] = {M, N};
    if (variant == 12) tg_input(g, "a", 3, da3);
    else tg_input(g, "a", 2, da);
    if (variant == 13) tg_input(g, "w", 2, dw);
    else tg_const(g, "w", 2, dw, NULL);
    if (variant == 16) tg_input(g, "b", 1, db);
    else if (variant == 4) tg_const(g, "b", 2, db2, NULL);
    else if (variant == 1 || variant == 18) tg_const(g, "b", 2, dc, NULL);
    else tg_const(g, "b", 1, db, NULL);
    if (mm) {
        NODE(g, "MatMul", "a w", "pre0");
        NODE(g, "Add", variant == 2 ? "b pre0" : "pre0 b", "pre");
    } else {
        kn_attr at[4] = {attr_i("transA", ta), attr_i("transB", tb), attr_f("alpha", variant == 1 ? 0.5f : 1.0f),
                         attr_f("beta", variant == 1 ? 2.0f : 1.0f)};
        tg_node(g, "Gemm", "", variant == 3 ? "a w" : "a w b", "pre", at, 4);
    }
    tg_scalar(g, "lo", -0.2);
    tg_scalar(g, "hi", 0.3);
    if (variant == 17) tg_input(g, "hi_in", 0, NULL);
    kn_attr aa = attr_f("alpha", 0.0f), ab = attr_f("beta", 0.0f), ag = attr_f("gamma", 0.0f);
    switch (variant) {
    case 0:
    case 10:
    case 11:
    case 12:
    case 13:
    case 16:
    case 18: NODE(g, "Relu", "pre", "y"); break;
    case 1:
        aa = attr_f("alpha", 0.2f);
        tg_node(g, "LeakyRelu", "", "pre", "y", &aa, 1);
        break;
    case 2: NODE(g, "Sigmoid", "pre", "y"); break;
    case 3: NODE(g, "Clip", "pre lo hi", "y"); break;
    case 17: NODE(g, "Clip", "pre lo hi_in", "y"); break;
    case 4: {
        kn_attr hs[2] = {attr_f("alpha", 0.3f), attr_f("beta", 0.4f)};
        tg_node(g, "HardSigmoid", "", "pre", "y", hs, 2);
        break;
    }
    case 5: NODE(g, "Tanh", "pre", "y"); break;
    case 6: {
        aa = attr_f("alpha", 1.5f);
        ag = attr_f("gamma", 2.0f);
        kn_attr se[2] = {aa, ag};
        tg_node(g, "Selu", "", "pre", "y", se, 2);
        break;
    }
    case 7: NODE(g, "Softplus", "pre", "y"); break;
    case 8:
        aa = attr_f("alpha", 0.1f);
        tg_node(g, "ThresholdedRelu", "", "pre", "y", &aa, 1);
        break;
    case 9:
        aa = attr_f("alpha", 0.7f);
        tg_node(g, "Elu", "", "pre", "y", &aa, 1);
        break;
    case 14:
        aa = attr_f("alpha", 0.5f);
        tg_node(g, "Celu", "", "pre", "y", &aa, 1);
        break;
    case 15: NODE(g, "Softsign", "pre", "y"); break;
    default: ck_abort_msg("variant %d", variant);
    }
    (void)ab;
    tg_output(g, "y");
    if (variant == 10) tg_output(g, "pre");
    if (variant == 11) {
        NODE(g, "Neg", "pre", "z");
        tg_output(g, "z");
    }
    return g;
}

/* Two layers: Relu(Gemm(a, W0, b0)) then LeakyRelu(MatMul(h, W1) + b1), whose MatMul input has the
 * rank the Gemm (then the FusedGemm) proves; variant 1: the input a is of unknown rank, which the
 * Gemm still makes 2-D. */
static kn_graph *build_mlp2(int variant) {
    kn_graph *g = tg_new();
    int64_t da[2] = {3, 8}, dw0[2] = {8, 6}, db0[1] = {6}, dw1[2] = {6, 4}, db1[1] = {4};
    if (variant == 1) {
        tg_input(g, "a", -1, NULL);
        fb_ndim = 2;
        fb_dims[0] = 3;
        fb_dims[1] = 8;
    } else tg_input(g, "a", 2, da);
    tg_const(g, "w0", 2, dw0, NULL);
    tg_const(g, "b0", 1, db0, NULL);
    tg_const(g, "w1", 2, dw1, NULL);
    tg_const(g, "b1", 1, db1, NULL);
    NODE(g, "Gemm", "a w0 b0", "p0");
    NODE(g, "Relu", "p0", "h0");
    NODE(g, "MatMul", "h0 w1", "m1");
    NODE(g, "Add", "m1 b1", "p1");
    kn_attr lr = attr_f("alpha", 0.05f);
    tg_node(g, "LeakyRelu", "", "p1", "y", &lr, 1);
    tg_output(g, "y");
    return g;
}

START_TEST(test_fuse_gemm_act) {
    check_pass(build_mlp2, 0, kn_pass_fuse_gemm_act, 2, "FusedGemm", 2, "Relu", NULL);
    check_pass(build_mlp2, 1, kn_pass_fuse_gemm_act, 2, "FusedGemm", 2, "Relu", NULL);
    static const int fuses[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14, 15};
    for (size_t k = 0; k < sizeof fuses / sizeof fuses[0]; k++)
        check_pass(build_gemm_act, fuses[k], kn_pass_fuse_gemm_act, 1, "FusedGemm", 1, NULL, NULL);
    /* the fused node: Gemm's attributes kept, the activation and its parameters added */
    kn_graph *g = build_gemm_act(1);
    kn_graph_resolve_ops(g);
    int n = 0;
    ck_assert_ptr_null(kn_pass_fuse_gemm_act(g, &n));
    ck_assert_int_eq(g->n_nodes, 1);
    const kn_node *f = find_op(g, "FusedGemm");
    ck_assert_str_eq(f->domain, "com.microsoft");
    ck_assert_str_eq(kn_attr_str(f, "activation", ""), "LeakyRelu");
    ck_assert_float_eq(kn_attr_float(f, "activation_alpha", 0), 0.2f);
    ck_assert_int_eq(kn_attr_int(f, "transB", 0), 1);
    ck_assert_float_eq(kn_attr_float(f, "alpha", 0), 0.5f);
    ck_assert_float_eq(kn_attr_float(f, "beta", 0), 2.0f);
    ck_assert_int_eq(f->n_inputs, 3);
    kn_graph_free(g);
    /* MatMul + Add: the bias becomes C, the Add and MatMul are gone */
    g = build_gemm_act(2);
    kn_graph_resolve_ops(g);
    ck_assert_ptr_null(kn_pass_fuse_gemm_act(g, &n));
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(g->n_nodes, 1);
    f = find_op(g, "FusedGemm");
    ck_assert_str_eq(g->values[f->inputs[0]].name, "a");
    ck_assert_str_eq(g->values[f->inputs[1]].name, "w");
    ck_assert_str_eq(g->values[f->inputs[2]].name, "b");
    ck_assert_int_eq(count_op(g, "MatMul") + count_op(g, "Add") + count_op(g, "Sigmoid"), 0);
    kn_graph_free(g);
    /* Clip's constant bounds become activation_alpha / _beta */
    g = build_gemm_act(3);
    kn_graph_resolve_ops(g);
    ck_assert_ptr_null(kn_pass_fuse_gemm_act(g, &n));
    f = find_op(g, "FusedGemm");
    ck_assert_str_eq(kn_attr_str(f, "activation", ""), "Clip");
    ck_assert_float_eq_tol(kn_attr_float(f, "activation_alpha", 0), -0.2f, 1e-7f);
    ck_assert_float_eq_tol(kn_attr_float(f, "activation_beta", 0), 0.3f, 1e-7f);
    ck_assert_int_eq(f->n_inputs, 2);
    kn_graph_free(g);
    static const int misses[] = {10, 11, 12, 13, 16, 17, 18};
    for (size_t k = 0; k < sizeof misses / sizeof misses[0]; k++)
        check_pass(build_gemm_act, misses[k], kn_pass_fuse_gemm_act, 0, "FusedGemm", 0, NULL, NULL);
    /* the CPU does not run this pass (no gain measured there); a device backend with the kernel does */
    ck_assert_int_eq(kn_fusions_for_backend(kn_cpu_backend()) & KN_FUSE_GEMM_ACT, 0);
    kn_backend dev = *kn_cpu_backend();
    dev.device = KN_DEVICE_CUDA;
    ck_assert_int_ne(kn_fusions_for_backend(&dev) & KN_FUSE_GEMM_ACT, 0);
}
END_TEST

/* ---- a decoder's past read in place (kn_pass_split_past_kv, after the attention fusion) ---- */

enum { KV_P = 7, KV_S = 2 }; /* past positions, new positions */

/* present = Concat(past, new) along the sequence axis as attention's K and V, scores scaled by a
 * Mul and masked by a [B,1,S,P+S] bias, Shape(present key) as a second output (read ahead by a
 * plan, so the key's Concat stays in the graph but is never run).
 * variant 0: H heads for K and V, K^T by a Transpose, the value Concat on axis -2.
 * variant 1: one key/value head behind repeat_kv (Unsqueeze axis 2, Expand to [B,1,H,T,D],
 *            Reshape to [B,H,T,D]), as the torch exporter writes Llama's attention.
 * near misses: 10 the key present is also a graph output; 11 another node reads the key present;
 *              12 repeat_kv's Unsqueeze at axis 1 (the same numbers with one key/value head, but no
 *              proof of the head grouping). */
static kn_graph *build_split_kv(int variant) {
    kn_graph *g = tg_new();
    int64_t kvh = variant == 1 || variant == 12 ? 1 : H;
    int64_t dq[4] = {B, H, KV_S, D}, dp[4] = {B, kvh, KV_P, D}, dn[4] = {B, kvh, KV_S, D},
            dm[4] = {B, 1, KV_S, KV_P + KV_S};
    int64_t p0132[4] = {0, 1, 3, 2};
    kn_attr tkt = attr_ints("perm", p0132, 4), sm = attr_i("axis", -1), a2 = attr_i("axis", 2),
            am2 = attr_i("axis", -2);
    tg_input(g, "q", 4, dq);
    tg_input(g, "past_k", 4, dp);
    tg_input(g, "k_new", 4, dn);
    tg_input(g, "past_v", 4, dp);
    tg_input(g, "v_new", 4, dn);
    tg_input(g, "bias", 4, dm);
    tg_scalar(g, "c", 1.0 / sqrt((double)D));
    tg_node(g, "Concat", "", "past_k k_new", "present_k", &a2, 1);
    tg_node(g, "Concat", "", "past_v v_new", "present_v", &am2, 1);
    const char *k = "present_k", *v = "present_v";
    if (variant == 1 || variant == 12) {
        int64_t ax[1] = {variant == 12 ? 1 : 2}, e[5] = {B, 1, H, KV_P + KV_S, D}, r[4] = {B, H, KV_P + KV_S, D};
        tg_const_i64(g, "ax", 1, ax);
        tg_const_i64(g, "ex", 5, e);
        tg_const_i64(g, "rs", 4, r);
        NODE(g, "Unsqueeze", "present_k ax", "k_u");
        NODE(g, "Expand", "k_u ex", "k_e");
        NODE(g, "Reshape", "k_e rs", "k_rep");
        NODE(g, "Unsqueeze", "present_v ax", "v_u");
        NODE(g, "Expand", "v_u ex", "v_e");
        NODE(g, "Reshape", "v_e rs", "v_rep");
        k = "k_rep", v = "v_rep";
    }
    char ins[64];
    snprintf(ins, sizeof ins, "%s", k);
    tg_node(g, "Transpose", "", ins, "kt", &tkt, 1);
    NODE(g, "MatMul", "q kt", "scores");
    NODE(g, "Mul", "scores c", "scaled");
    NODE(g, "Add", "scaled bias", "masked");
    tg_node(g, "Softmax", "", "masked", "p", &sm, 1);
    snprintf(ins, sizeof ins, "p %s", v);
    NODE(g, "MatMul", ins, "y");
    tg_output(g, "y");
    NODE(g, "Shape", "present_k", "k_shape");
    tg_output(g, "k_shape");
    if (variant == 10) tg_output(g, "present_k");
    if (variant == 11) {
        NODE(g, "Neg", "present_k", "k_neg");
        tg_output(g, "k_neg");
    }
    return g;
}

/* The plain graph against the attention-fused one with the past split off (want_split of them),
 * on the same inputs: the KnSdpa kernel reading the past and the new rows apart == MatMul,
 * Softmax, MatMul over the concatenation (1e-5 relative). */
static void check_split(int variant, int want_split) {
    kn_graph *ref = build_split_kv(variant), *g = build_split_kv(variant);
    kn_graph_resolve_ops(ref);
    kn_graph_resolve_ops(g);
    int n = -1;
    ck_assert_ptr_null(kn_pass_fuse_attention(g, &n));
    ck_assert_msg(n == 1, "variant %d: attention not fused", variant);
    ck_assert_ptr_null(kn_pass_split_past_kv(g, &n));
    ck_assert_msg(n == want_split, "variant %d: %d split, want %d", variant, n, want_split);
    kn_graph_eliminate_dead(g);
    const kn_node *f = find_op(g, "KnSdpa");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(f->n_inputs, want_split ? 6 : 4);
    if (want_split) {
        ck_assert_str_eq(g->values[f->inputs[1]].name, "k_new");
        ck_assert_str_eq(g->values[f->inputs[2]].name, "v_new");
        ck_assert_str_eq(g->values[f->inputs[4]].name, "past_k");
        ck_assert_str_eq(g->values[f->inputs[5]].name, "past_v");
        ck_assert_int_eq(count_op(g, "Concat"), 1); /* the key's, for Shape alone; the value's is gone */
        ck_assert_int_eq(count_op(g, "Expand") + count_op(g, "Unsqueeze"), 0); /* repeat_kv read by no one */
    }
    int64_t na, nb;
    float *a = run_graph(ref, 7u + (unsigned)variant, &na), *b = run_graph(g, 7u + (unsigned)variant, &nb);
    ck_assert_int_eq(na, nb);
    ck_assert_int_eq(na, (int64_t)B * H * KV_S * D);
    for (int64_t i = 0; i < na; i++)
        FAST_ASSERT(fabsf(a[i] - b[i]) <= 1e-5f * fmaxf(1.0f, fabsf(a[i])), "variant %d: out[%lld] %g vs split %g",
                    variant, (long long)i, a[i], b[i]);
    free(a);
    free(b);
}

START_TEST(test_split_past_kv) {
    check_split(0, 1);
    check_split(1, 1);
    for (int v = 10; v <= 12; v++) check_split(v, 0);
}
END_TEST

static Suite *fuse_suite(void) {
    Suite *s = suite_create("fuse");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_fuse_attention);
    tcase_add_test(tc, test_fuse_attention_f16_consts);
    tcase_add_test(tc, test_fuse_attention_near_misses);
    tcase_add_test(tc, test_fuse_gelu);
    tcase_add_test(tc, test_fuse_gelu_near_misses);
    tcase_add_test(tc, test_fuse_skip_layernorm);
    tcase_add_test(tc, test_fuse_skip_layernorm_near_misses);
    tcase_add_test(tc, test_fuse_gemm_gelu);
    tcase_add_test(tc, test_fuse_conv_act);
    tcase_add_test(tc, test_split_past_kv);
    tcase_add_test(tc, test_fuse_gemm_act);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return kn_test_run_suite(fuse_suite()); }
