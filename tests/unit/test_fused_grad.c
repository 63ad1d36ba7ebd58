/* Gradients of the fused ops kiln trains through, against finite differences of plain double
 * references in this file.
 *
 * Attention: checks of kiln's fused attention backward (KnSdpa's gradient rule, the SdpaGrad kernel in
 * kernels/cpu/attention_grad.c) and of KnSdpa's logsumexp output: a float32 graph
 * loss = sum(R * KnSdpa(Q, K, V[, bias])) is differentiated by kn_autograd and run in a session;
 * every gradient element (or a sample, for the multi-tile case) is compared with central finite
 * differences of the same loss computed in double by a plain reference attention in this file,
 * the forward output and the logsumexp with that reference too. Cases: odd S / T / d / dv, several
 * heads, no bias, trainable biases broadcast from [1,H,S,T], [B,1,1,T] and [S,T], constant padding
 * masks with -inf (and a fully masked row), causal with S != T, several query and key tiles, and
 * the kernel's own logsumexp recomputation (SdpaGrad without its lse input).
 *
 * SkipLayerNormalization: loss = sum(R0 * output) (+ sum(R3 * input_skip_bias_sum) when that
 * output is read too), differentiated with respect to input, skip (full or broadcast over the
 * batch), gamma, beta and bias, in float32 against central differences in double. */
#include "tests/unit/harness.h"
#include "autograd/autograd.h"
#include "graph/model.h"
#include "graph/passes.h"
#include "runtime/executor.h"
#include "runtime/kiln.h"
#include <math.h>
#include <stdio.h>

typedef struct scase {
    const char *name;
    int64_t B, H, S, T, D, Dv;
    int bias_nd;          /* 0: no bias */
    int64_t bias_dims[4]; /* right-aligned to [B,H,S,T] */
    int bias_kind;        /* 0: random trainable, 1: constant padding mask (-inf) with a fully masked row */
    bool causal;
    float scale;        /* 0: the default 1/sqrt(D) */
    bool explicit_grad; /* SdpaGrad built by hand without lse: the kernel recomputes it */
    int sample;         /* elements checked per tensor (0: all) */
} scase;

static uint32_t lcg(uint32_t *s) {
    *s = *s * 1103515245u + 12345u;
    return (*s >> 8) & 0xffffff;
}
static double urand(uint32_t *s, double lo, double hi) { return lo + (hi - lo) * (double)lcg(s) / 16777216.0; }

/* ---- the reference, in double ---- */

typedef struct sref {
    const scase *k;
    double *q, *kk, *v, *bias, *r; /* r: [B,H,S,Dv] loss weights */
    int64_t bstride[4];
} sref;

static double ref_scale(const scase *k) { return k->scale > 0 ? k->scale : 1.0 / sqrt((double)k->D); }

/* loss = sum(R * attention); y and lse (may be NULL) receive the forward's output and row lse. */
static double ref_loss(const sref *r, double *y, double *lse) {
    const scase *k = r->k;
    double loss = 0, sc = ref_scale(k);
    double *s = malloc(sizeof(double) * (size_t)k->T);
    for (int64_t b = 0; b < k->B; b++)
        for (int64_t h = 0; h < k->H; h++)
            for (int64_t i = 0; i < k->S; i++) {
                double mx = -INFINITY;
                for (int64_t t = 0; t < k->T; t++) {
                    double acc = 0;
                    for (int64_t e = 0; e < k->D; e++)
                        acc += r->q[((b * k->H + h) * k->S + i) * k->D + e] *
                            r->kk[((b * k->H + h) * k->T + t) * k->D + e];
                    acc *= sc;
                    if (r->bias)
                        acc += r->bias[b * r->bstride[0] + h * r->bstride[1] + i * r->bstride[2] + t * r->bstride[3]];
                    if (k->causal && t > i) acc = -INFINITY;
                    s[t] = acc;
                    if (acc > mx) mx = acc;
                }
                double sum = 0;
                for (int64_t t = 0; t < k->T; t++) {
                    s[t] = mx == -INFINITY ? 0 : exp(s[t] - mx);
                    sum += s[t];
                }
                if (lse) lse[(b * k->H + h) * k->S + i] = mx == -INFINITY ? -INFINITY : mx + log(sum);
                for (int64_t e = 0; e < k->Dv; e++) {
                    double acc = 0;
                    for (int64_t t = 0; t < k->T; t++)
                        acc += (sum > 0 ? s[t] / sum : 0) * r->v[((b * k->H + h) * k->T + t) * k->Dv + e];
                    int64_t o = ((b * k->H + h) * k->S + i) * k->Dv + e;
                    if (y) y[o] = acc;
                    loss += r->r[o] * acc;
                }
            }
    free(s);
    return loss;
}

/* ---- the kiln graph ---- */

static int gv(kn_graph *g, const char *name) {
    int v = kn_graph_find_value(g, name);
    if (v < 0) v = kn_graph_add_value(g, name);
    ck_assert_int_ge(v, 0);
    return v;
}

static void g_input(kn_graph *g, const char *name, int nd, const int64_t *dims) {
    int v = gv(g, name);
    g->values[v].is_input = true;
    g->values[v].type.dtype = KN_F32;
    kn_tensor_set_shape(&g->values[v].type, nd, dims);
    g->inputs = realloc(g->inputs, sizeof(int) * (size_t)(g->n_inputs + 1));
    g->inputs[g->n_inputs++] = v;
}

static void g_output(kn_graph *g, const char *name) {
    int v = gv(g, name);
    g->values[v].is_output = true;
    g->outputs = realloc(g->outputs, sizeof(int) * (size_t)(g->n_outputs + 1));
    g->outputs[g->n_outputs++] = v;
}

static void g_const(kn_graph *g, const char *name, kn_tensor *t) {
    int v = gv(g, name);
    g->values[v].constant = t;
    g->values[v].type.dtype = t->dtype;
    kn_tensor_set_shape(&g->values[v].type, t->ndim, t->dims);
}

static void g_node(kn_graph *g, const char *op, const char *domain, const int *ins, int n_in, const int *outs,
                   int n_out, const kn_attr *attrs, int n_attrs) {
    kn_attr *a = n_attrs ? calloc((size_t)n_attrs, sizeof *a) : NULL;
    for (int i = 0; i < n_attrs; i++) ck_assert_ptr_null(kn_attr_copy(&a[i], &attrs[i]));
    char name[64];
    snprintf(name, sizeof name, "n%d_%s", g->n_nodes, op);
    int id = kn_graph_add_node(g, name, op, domain, ins, n_in, outs, n_out, a, n_attrs);
    ck_assert_int_ge(id, 0);
    g->nodes[id].opset = domain[0] ? 1 : 17;
}

static kn_graph *g_new(void) {
    kn_graph *g = kn_graph_new("sdpa_grad_test");
    ck_assert_ptr_nonnull(g);
    g->opsets[0] = 17;
    g->opset_domains[0] = strdup("");
    g->opsets[1] = 1;
    g->opset_domains[1] = strdup("kiln");
    g->n_opsets = 2;
    return g;
}

static kn_tensor *f32_of(const double *x, int nd, const int64_t *dims) {
    kn_tensor *t = mk(KN_F32, nd, dims, x);
    return t;
}

static int64_t numel(const int64_t *d, int nd) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= d[i];
    return n;
}

static void run_case(const scase *k) {
    uint32_t seed = 777;
    int64_t qd[4] = {k->B, k->H, k->S, k->D}, kd[4] = {k->B, k->H, k->T, k->D}, vd[4] = {k->B, k->H, k->T, k->Dv};
    int64_t yd[4] = {k->B, k->H, k->S, k->Dv};
    int64_t nq = numel(qd, 4), nk = numel(kd, 4), nv = numel(vd, 4), ny = numel(yd, 4);
    int64_t nb = k->bias_nd ? numel(k->bias_dims, k->bias_nd) : 0;
    sref r = {k};
    /* values rounded to float32 so both sides see the same inputs */
    double *bufs[5];
    int64_t counts[5] = {nq, nk, nv, nb, ny};
    for (int i = 0; i < 5; i++) {
        bufs[i] = calloc((size_t)(counts[i] + 1), sizeof(double));
        for (int64_t e = 0; e < counts[i]; e++) bufs[i][e] = (float)urand(&seed, -1.5, 1.5);
    }
    r.q = bufs[0];
    r.kk = bufs[1];
    r.v = bufs[2];
    r.bias = nb ? bufs[3] : NULL;
    r.r = bufs[4];
    if (nb) {
        int64_t md[4] = {1, 1, 1, 1}, st = 1;
        for (int d = 0; d < k->bias_nd; d++) md[4 - k->bias_nd + d] = k->bias_dims[d];
        for (int d = 3; d >= 0; d--) {
            r.bstride[d] = md[d] == 1 ? 0 : st;
            st *= md[d];
        }
        if (k->bias_kind == 1) { /* padding: the last keys of every row of the last batch; row 0 of batch 0 all */
            for (int64_t e = 0; e < nb; e++) r.bias[e] = 0;
            for (int64_t b = 0; b < md[0]; b++)
                for (int64_t i = 0; i < md[2]; i++)
                    for (int64_t t = 0; t < md[3]; t++) {
                        int64_t o = b * r.bstride[0] + i * r.bstride[2] + t * r.bstride[3];
                        if (b == md[0] - 1 && t >= md[3] - 2) r.bias[o] = -INFINITY;
                        if (b == 0 && i == 0 && md[2] > 1) r.bias[o] = -INFINITY;
                    }
        }
    }
    bool bias_in = nb && k->bias_kind == 0;

    kn_graph *g = g_new();
    g_input(g, "Q", 4, qd);
    g_input(g, "K", 4, kd);
    g_input(g, "V", 4, vd);
    if (bias_in) g_input(g, "bias", k->bias_nd, k->bias_dims);
    else if (nb) g_const(g, "bias", f32_of(r.bias, k->bias_nd, k->bias_dims));
    g_const(g, "R", f32_of(r.r, 4, yd));
    kn_attr at[2];
    int na = 0;
    if (k->scale > 0) at[na++] = attr_f("scale", k->scale);
    if (k->causal) at[na++] = attr_i("is_causal", 1);
    int ins[4] = {gv(g, "Q"), gv(g, "K"), gv(g, "V"), nb ? gv(g, "bias") : -1};
    int y = gv(g, "y"), lse = gv(g, "lse_out");
    int nin_wrt = bias_in ? 4 : 3;
    if (k->explicit_grad) {
        /* y = KnSdpa(...), then SdpaGrad(R, Q, K, V, bias, y) by hand: R is dL/dy */
        g_node(g, "KnSdpa", "kiln", ins, nb ? 4 : 3, &y, 1, at, na);
        int gin[6] = {gv(g, "R"), ins[0], ins[1], ins[2], nb ? ins[3] : -1, y};
        int gout[4] = {gv(g, "dQ"), gv(g, "dK"), gv(g, "dV"), gv(g, "dS")};
        g_node(g, "SdpaGrad", "kiln", gin, 6, gout, bias_in ? 4 : 3, at, na);
        int p = gv(g, "p"), l = gv(g, "loss");
        int mi[2] = {y, gv(g, "R")};
        g_node(g, "Mul", "", mi, 2, &p, 1, NULL, 0);
        kn_attr kd0 = attr_i("keepdims", 0);
        g_node(g, "ReduceSum", "", &p, 1, &l, 1, &kd0, 1);
        g_output(g, "loss");
        g_output(g, "dQ");
        g_output(g, "dK");
        g_output(g, "dV");
        if (bias_in) {
            /* dS summed to the bias's shape as the rule does */
            int sh = gv(g, "bias_shape"), db = gv(g, "dbias");
            g_node(g, "Shape", "", &ins[3], 1, &sh, 1, NULL, 0);
            int ri[2] = {gv(g, "dS"), sh};
            g_node(g, "ReduceSumTo", "kiln", ri, 2, &db, 1, NULL, 0);
            g_output(g, "dbias");
        }
        g_output(g, "y");
        ck_assert_ptr_null(kn_graph_resolve_ops(g));
    } else {
        int yo[2] = {y, lse};
        g_node(g, "KnSdpa", "kiln", ins, nb ? 4 : 3, yo, 2, at, na);
        int p = gv(g, "p"), l = gv(g, "loss");
        int mi[2] = {y, gv(g, "R")};
        g_node(g, "Mul", "", mi, 2, &p, 1, NULL, 0);
        kn_attr kd0 = attr_i("keepdims", 0);
        g_node(g, "ReduceSum", "", &p, 1, &l, 1, &kd0, 1);
        g_output(g, "loss");
        ck_assert_ptr_null(kn_graph_resolve_ops(g));
        int wrt[4] = {ins[0], ins[1], ins[2], ins[3]};
        kn_status *st = kn_autograd(g, l, wrt, nin_wrt, NULL);
        ck_assert_msg(st == NULL, "%s: autograd: %s", k->name, st ? kn_status_message(st) : "");
        /* the rule switched the logsumexp output on and fed it to SdpaGrad */
        bool found = false;
        for (int i = 0; i < g->n_nodes; i++)
            if (!strcmp(g->nodes[i].op_type, "SdpaGrad")) {
                found = true;
                ck_assert_int_eq(g->nodes[i].n_inputs, 7);
                ck_assert_int_eq(g->nodes[i].inputs[6], lse);
            }
        ck_assert(found);
        g_output(g, "y");
        g_output(g, "lse_out");
    }
    kn_model *m = calloc(1, sizeof *m);
    m->graph = g;
    kn_session *s = NULL;
    kn_session_options so;
    kn_session_options_init(&so);
    so.num_threads = 2;
    kn_status *st = kn_session_create(m, &so, &s);
    ck_assert_msg(st == NULL, "%s: session: %s", k->name, st ? kn_status_message(st) : "");
    kn_tensor inputs[4];
    kn_tensor *it[4] = {f32_of(r.q, 4, qd), f32_of(r.kk, 4, kd), f32_of(r.v, 4, vd),
                        bias_in ? f32_of(r.bias, k->bias_nd, k->bias_dims) : NULL};
    for (int i = 0; i < nin_wrt; i++) inputs[i] = *it[i];
    kn_tensor outs[8];
    st = kn_session_run_values(s, inputs, outs);
    ck_assert_msg(st == NULL, "%s: run: %s", k->name, st ? kn_status_message(st) : "");
    int n_out = g->n_outputs;

    /* forward, loss and logsumexp against the reference */
    double *yref = malloc(sizeof(double) * (size_t)ny), *lref = malloc(sizeof(double) * (size_t)(k->B * k->H * k->S));
    double L = ref_loss(&r, yref, lref);
    const kn_tensor *ykiln = &outs[1 + nin_wrt];
    double worst = 0;
    for (int64_t e = 0; e < ny; e++) worst = fmax(worst, fabs(kn_get_f64(ykiln, e) - yref[e]));
    ck_assert_msg(worst < 1e-5, "%s: forward differs by %g", k->name, worst);
    ck_assert_msg(fabs(kn_get_f64(&outs[0], 0) - L) < 1e-4 * (1 + fabs(L)), "%s: loss %g vs %g", k->name,
                  kn_get_f64(&outs[0], 0), L);
    if (!k->explicit_grad) {
        const kn_tensor *lk = &outs[2 + nin_wrt];
        for (int64_t e = 0; e < k->B * k->H * k->S; e++) {
            double got = kn_get_f64(lk, e);
            if (isinf(lref[e]))
                ck_assert_msg(isinf(got) && got < 0, "%s: lse[%lld] = %g, want -inf", k->name, (long long)e, got);
            else
                ck_assert_msg(fabs(got - lref[e]) < 1e-5 * (1 + fabs(lref[e])), "%s: lse[%lld] = %g, want %g", k->name,
                              (long long)e, got, lref[e]);
        }
    }

    /* each gradient against central differences of the double reference */
    double *targets[4] = {r.q, r.kk, r.v, r.bias};
    int64_t tn[4] = {nq, nk, nv, nb};
    const char *names[4] = {"Q", "K", "V", "bias"};
    double h = 1e-4;
    for (int i = 0; i < nin_wrt; i++) {
        const kn_tensor *gt = &outs[1 + i];
        ck_assert_int_eq(kn_numel(gt), tn[i]);
        double gmax = 0;
        for (int64_t e = 0; e < tn[i]; e++) gmax = fmax(gmax, fabs(kn_get_f64(gt, e)));
        int64_t checks = k->sample ? k->sample : tn[i];
        double w = 0;
        int64_t at_e = -1;
        double got_w = 0, want_w = 0;
        for (int64_t c = 0; c < checks; c++) {
            int64_t e = k->sample ? (int64_t)(lcg(&seed) % (uint32_t)tn[i]) : c;
            double x0 = targets[i][e];
            if (isinf(x0)) continue;
            targets[i][e] = x0 + h;
            double lp = ref_loss(&r, NULL, NULL);
            targets[i][e] = x0 - h;
            double lm = ref_loss(&r, NULL, NULL);
            targets[i][e] = x0;
            double want = (lp - lm) / (2 * h), got = kn_get_f64(gt, e);
            double err = fabs(got - want) / (1e-3 + gmax);
            if (!(err <= w)) {
                w = isnan(err) ? INFINITY : err;
                at_e = e;
                got_w = got;
                want_w = want;
            }
        }
        fprintf(stderr, "sdpa grad %-28s d%-4s max error %.2e of max |grad| %.3g\n", k->name, names[i], w, gmax);
        ck_assert_msg(w < 2e-5, "%s: d%s[%lld] = %.9g, finite differences %.9g", k->name, names[i], (long long)at_e,
                      got_w, want_w);
    }
    for (int o = 0; o < n_out; o++) kn_tensor_release(&outs[o]);
    for (int i = 0; i < 4; i++) kn_tensor_free(it[i]);
    for (int i = 0; i < 5; i++) free(bufs[i]);
    free(yref);
    free(lref);
    kn_session_free(s);
    kn_model_free(m);
}

static const scase cases[] = {
    {"plain B2 H3 S5 T7 d4 dv3", 2, 3, 5, 7, 4, 3, 0, {0}, 0, false, 0, false, 0},
    {"bias [1,H,S,T] scale 0.3", 2, 2, 3, 5, 4, 4, 4, {1, 2, 3, 5}, 0, false, 0.3f, false, 0},
    {"bias [B,1,1,T]", 2, 2, 3, 5, 3, 5, 4, {2, 1, 1, 5}, 0, false, 0, false, 0},
    {"padding mask -inf [B,1,S,T]", 2, 2, 4, 5, 6, 6, 4, {2, 1, 4, 5}, 1, false, 0, false, 0},
    {"causal S4 T6 bias [S,T]", 1, 2, 4, 6, 5, 3, 2, {4, 6}, 0, true, 0, false, 0},
    {"causal S6 T6", 2, 1, 6, 6, 4, 4, 0, {0}, 0, true, 0, false, 0},
    {"tiles S70 T133 mask [B,1,1,T]", 2, 2, 70, 133, 8, 5, 4, {2, 1, 1, 133}, 1, false, 0, false, 60},
    {"tiles causal S150 T150", 1, 2, 150, 150, 4, 4, 0, {0}, 0, true, 0, false, 60},
    {"lse recomputed, bias [1,H,S,T]", 2, 2, 5, 7, 4, 3, 4, {1, 2, 5, 7}, 0, false, 0, true, 0},
    {"lse recomputed, tiles, mask", 1, 2, 70, 140, 8, 8, 4, {1, 1, 1, 140}, 1, false, 0, true, 60},
};
#define N_CASES (int)(sizeof cases / sizeof cases[0])

START_TEST(sdpa_grad_case) { run_case(&cases[_i]); }
END_TEST

/* ---- SkipLayerNormalization ---- */

typedef struct lcase {
    const char *name;
    int64_t B, S, H;
    bool skip_bcast; /* skip [S,H] instead of [B,S,H] */
    bool has_beta, has_bias, read_sum;
} lcase;

typedef struct lref {
    const lcase *k;
    double *x, *skip, *gamma, *beta, *bias, *r0, *r3;
} lref;

static double ln_ref_loss(const lref *r) {
    const lcase *k = r->k;
    double loss = 0, eps = 1e-5;
    double *s = malloc(sizeof(double) * (size_t)k->H);
    for (int64_t row = 0; row < k->B * k->S; row++) {
        int64_t srow = k->skip_bcast ? row % k->S : row;
        double mu = 0, var = 0;
        for (int64_t h = 0; h < k->H; h++) {
            s[h] = r->x[row * k->H + h] + r->skip[srow * k->H + h] + (r->bias ? r->bias[h] : 0);
            mu += s[h];
            if (r->r3) loss += r->r3[row * k->H + h] * s[h];
        }
        mu /= (double)k->H;
        for (int64_t h = 0; h < k->H; h++) var += (s[h] - mu) * (s[h] - mu);
        var /= (double)k->H;
        double is = 1.0 / sqrt(var + eps);
        for (int64_t h = 0; h < k->H; h++)
            loss += r->r0[row * k->H + h] * ((s[h] - mu) * is * r->gamma[h] + (r->beta ? r->beta[h] : 0));
    }
    free(s);
    return loss;
}

static void run_ln_case(const lcase *k) {
    uint32_t seed = 4242;
    int64_t xd[3] = {k->B, k->S, k->H}, sd[3] = {k->B, k->S, k->H}, hd[1] = {k->H};
    int64_t nx = k->B * k->S * k->H, nsk = (k->skip_bcast ? 1 : k->B) * k->S * k->H;
    double *buf[7];
    int64_t cnt[7] = {nx, nsk, k->H, k->H, k->H, nx, nx};
    for (int i = 0; i < 7; i++) {
        buf[i] = malloc(sizeof(double) * (size_t)cnt[i]);
        for (int64_t e = 0; e < cnt[i]; e++) buf[i][e] = (float)urand(&seed, -1.5, 1.5);
    }
    lref r = {k,
              buf[0],
              buf[1],
              buf[2],
              k->has_beta ? buf[3] : NULL,
              k->has_bias ? buf[4] : NULL,
              buf[5],
              k->read_sum ? buf[6] : NULL};
    kn_graph *g = g_new();
    free(g->opset_domains[1]);
    g->opset_domains[1] = strdup("com.microsoft");
    g_input(g, "x", 3, xd);
    g_input(g, "skip", k->skip_bcast ? 2 : 3, k->skip_bcast ? sd + 1 : sd);
    g_input(g, "gamma", 1, hd);
    if (k->has_beta) g_input(g, "beta", 1, hd);
    if (k->has_bias) g_input(g, "bias", 1, hd);
    g_const(g, "R0", f32_of(r.r0, 3, xd));
    g_const(g, "R3", f32_of(buf[6], 3, xd));
    kn_attr eps = attr_f("epsilon", 1e-5f);
    int ins[5] = {gv(g, "x"), gv(g, "skip"), gv(g, "gamma"), k->has_beta ? gv(g, "beta") : -1,
                  k->has_bias ? gv(g, "bias") : -1};
    int outs[4] = {gv(g, "y"), -1, -1, gv(g, "s")};
    g_node(g, "SkipLayerNormalization", "com.microsoft", ins,
           k->has_bias       ? 5
               : k->has_beta ? 4
                             : 3,
           outs, k->read_sum ? 4 : 1, &eps, 1);
    int p0 = gv(g, "p0"), t0 = gv(g, "t0"), l = gv(g, "loss");
    int m0[2] = {outs[0], gv(g, "R0")};
    kn_attr kd0 = attr_i("keepdims", 0);
    g_node(g, "Mul", "", m0, 2, &p0, 1, NULL, 0);
    g_node(g, "ReduceSum", "", &p0, 1, k->read_sum ? &t0 : &l, 1, &kd0, 1);
    if (k->read_sum) {
        int p3 = gv(g, "p3"), t3 = gv(g, "t3");
        int m3[2] = {outs[3], gv(g, "R3")}, a[2] = {t0, t3};
        g_node(g, "Mul", "", m3, 2, &p3, 1, NULL, 0);
        g_node(g, "ReduceSum", "", &p3, 1, &t3, 1, &kd0, 1);
        g_node(g, "Add", "", a, 2, &l, 1, NULL, 0);
    }
    g_output(g, "loss");
    ck_assert_ptr_null(kn_graph_resolve_ops(g));
    int n_in = g->n_inputs, wrt[5];
    for (int i = 0; i < n_in; i++) wrt[i] = g->inputs[i];
    kn_status *st = kn_autograd(g, l, wrt, n_in, NULL);
    ck_assert_msg(st == NULL, "%s: autograd: %s", k->name, st ? kn_status_message(st) : "");
    kn_model *m = calloc(1, sizeof *m);
    m->graph = g;
    kn_session *s = NULL;
    st = kn_session_create(m, NULL, &s);
    ck_assert_msg(st == NULL, "%s: session: %s", k->name, st ? kn_status_message(st) : "");
    double *tg[5] = {r.x, r.skip, r.gamma, r.beta, r.bias};
    int64_t tn[5] = {nx, nsk, k->H, k->H, k->H};
    const int64_t *tdims[5] = {xd, k->skip_bcast ? sd + 1 : sd, hd, hd, hd};
    int tnd[5] = {3, k->skip_bcast ? 2 : 3, 1, 1, 1};
    const char *names[5] = {"input", "skip", "gamma", "beta", "bias"};
    int map[5], nm = 0; /* graph input i -> target */
    for (int t = 0; t < 5; t++)
        if (tg[t]) map[nm++] = t;
    ck_assert_int_eq(nm, n_in);
    kn_tensor inputs[5];
    kn_tensor *it[5];
    for (int i = 0; i < n_in; i++) {
        it[i] = f32_of(tg[map[i]], tnd[map[i]], tdims[map[i]]);
        inputs[i] = *it[i];
    }
    kn_tensor outv[8];
    st = kn_session_run_values(s, inputs, outv);
    ck_assert_msg(st == NULL, "%s: run: %s", k->name, st ? kn_status_message(st) : "");
    double L = ln_ref_loss(&r);
    ck_assert_msg(fabs(kn_get_f64(&outv[0], 0) - L) < 1e-4 * (1 + fabs(L)), "%s: loss %g vs %g", k->name,
                  kn_get_f64(&outv[0], 0), L);
    double h = 1e-4;
    for (int i = 0; i < n_in; i++) {
        int t = map[i];
        const kn_tensor *gt = &outv[1 + i];
        ck_assert_int_eq(kn_numel(gt), tn[t]);
        double gmax = 0, w = 0, got_w = 0, want_w = 0;
        int64_t at_e = -1;
        for (int64_t e = 0; e < tn[t]; e++) gmax = fmax(gmax, fabs(kn_get_f64(gt, e)));
        for (int64_t e = 0; e < tn[t]; e++) {
            double x0 = tg[t][e];
            tg[t][e] = x0 + h;
            double lp = ln_ref_loss(&r);
            tg[t][e] = x0 - h;
            double lm = ln_ref_loss(&r);
            tg[t][e] = x0;
            double want = (lp - lm) / (2 * h), got = kn_get_f64(gt, e), err = fabs(got - want) / (1e-3 + gmax);
            if (!(err <= w)) {
                w = isnan(err) ? INFINITY : err;
                at_e = e;
                got_w = got;
                want_w = want;
            }
        }
        fprintf(stderr, "skip-LN grad %-30s d%-6s max error %.2e of max |grad| %.3g\n", k->name, names[t], w, gmax);
        ck_assert_msg(w < 2e-5, "%s: d%s[%lld] = %.9g, finite differences %.9g", k->name, names[t], (long long)at_e,
                      got_w, want_w);
    }
    for (int o = 0; o < g->n_outputs; o++) kn_tensor_release(&outv[o]);
    for (int i = 0; i < n_in; i++) kn_tensor_free(it[i]);
    for (int i = 0; i < 7; i++) free(buf[i]);
    kn_session_free(s);
    kn_model_free(m);
}

static const lcase ln_cases[] = {
    {"full skip, beta, bias", 2, 3, 8, false, true, true, false},
    {"skip [S,H], no beta, bias, sum read", 2, 3, 7, true, false, true, true},
    {"full skip, beta, no bias, sum read", 3, 2, 5, false, true, false, true},
    {"skip [S,H] only", 2, 4, 6, true, false, false, false},
};
#define N_LN_CASES (int)(sizeof ln_cases / sizeof ln_cases[0])

START_TEST(skip_ln_grad_case) { run_ln_case(&ln_cases[_i]); }
END_TEST

int main(void) {
    Suite *s = suite_create("fused_grad");
    TCase *tc = tcase_create("fused_grad");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, sdpa_grad_case, 0, N_CASES);
    tcase_add_loop_test(tc, skip_ln_grad_case, 0, N_LN_CASES);
    suite_add_tcase(s, tc);
    return kn_test_run_suite(s);
}
