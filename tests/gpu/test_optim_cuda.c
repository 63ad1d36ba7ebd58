/* The device optimiser and mixed-precision helpers (kernels/cuda/kn_train_cuda.h) against the
 * CPU: SGD (plain, momentum with dampening, Nesterov, L2 decay), Adam (L2) and AdamW (decoupled
 * decay, and none) over 6 steps with a changing rate and gradients, sizes 1 to 70000: weights
 * and moments must equal autograd/optim.c's bit for bit; a found_inf word makes the update a
 * no-op; the unscale pass (float32, float16, bfloat16 gradients) against (float)g / scale and its
 * inf/NaN flag; the loss scale against a transcription of torch's GradScaler.update; float16 /
 * bfloat16 weight copies against the CPU's conversions; the sum of squares against a double sum
 * and run to run; and a whole mixed-precision loop (float16 gradients of a scaled loss, one
 * overflowing step skipped, the scale halved and grown again) against the same loop on the host;
 * a constant weight of a cuda session updated in place in the device weight cache (the next run
 * must see it without an upload); and the trainer's update (accumulation, averaging, clipping by
 * the global norm, AdamW with and without decay) replayed on the device, bit for bit.
 * Exit 77 with "skipped: no CUDA device" where there is none. */
#include "autograd/optim.h"
#include "graph/model.h"
#include "graph/passes.h"
#include "graph/ops.h"
#include "kernels/cuda/kn_train_cuda.h"
#include "runtime/core/dtype.h"
#include "runtime/executor.h"
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const kn_backend *cu;
static int failures, checks;
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(double lo, double hi) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return lo + (hi - lo) * (double)(rng >> 11) / 9007199254740992.0;
}

static void ok(kn_status *st, const char *what) {
    if (!st) return;
    printf("FAIL %s: %s\n", what, kn_status_message(st));
    kn_status_free(st);
    exit(1);
}
static void expect(bool c, const char *fmt, const char *a, long long b) {
    checks++;
    if (c) return;
    failures++;
    printf("FAIL ");
    printf(fmt, a, b);
    printf("\n");
}

static void *dev(size_t bytes) {
    void *p = cu->alloc(cu, bytes ? bytes : 1);
    if (!p) {
        printf("FAIL device alloc of %zu bytes\n", bytes);
        exit(1);
    }
    return p;
}
static void up(void *d, const void *h, size_t n) { ok(cu->copy(cu, d, KN_DEVICE_CUDA, h, KN_DEVICE_CPU, n), "upload"); }
static void down(void *h, const void *d, size_t n) {
    ok(cu->copy(cu, h, KN_DEVICE_CPU, d, KN_DEVICE_CUDA, n), "download");
}

/* ---- optimisers: CPU kn_optim_update vs kn_cuda_optim_update, bit for bit ---- */
static void optim_case(const char *name, kn_optim_options *o, int64_t n) {
    size_t nb = sizeof(float) * (size_t)n;
    float *w = malloc(nb), *m = calloc((size_t)n, 4), *v = calloc((size_t)n, 4), *g = malloc(nb);
    float *dw = malloc(nb), *dm = malloc(nb), *dv = malloc(nb);
    for (int64_t i = 0; i < n; i++) w[i] = (float)urand(-1, 1);
    float *Dw = dev(nb), *Dm = dev(nb), *Dv = dev(nb), *Dg = dev(nb);
    up(Dw, w, nb);
    up(Dm, m, nb);
    up(Dv, v, nb);
    int bad = 0;
    for (int64_t step = 1; step <= 6 && !bad; step++) {
        for (int64_t i = 0; i < n; i++) g[i] = (float)urand(-2, 2) * (step == 3 ? 1e-3f : 1.0f);
        double lr = o->lr * (1.0 - 0.1 * (double)step);
        up(Dg, g, nb);
        kn_cuda_optim co = {(int)o->kind, lr,       o->momentum, o->dampening,    o->nesterov,
                            o->beta1,     o->beta2, o->eps,      o->weight_decay, step};
        void *s = NULL;
        ok(cu->stream_begin(cu, &s), "stream");
        ok(kn_cuda_optim_update(cu, s, &co, Dw, Dg, Dm, Dv, n, NULL), name);
        ok(cu->stream_end(cu, s), "stream end");
        kn_optim_update(o, step, lr, true, w, g, m, v, n);
        down(dw, Dw, nb);
        down(dm, Dm, nb);
        down(dv, Dv, nb);
        for (int64_t i = 0; i < n && !bad; i++)
            if (memcmp(&w[i], &dw[i], 4) || memcmp(&m[i], &dm[i], 4) ||
                (o->kind != KN_OPTIM_SGD && memcmp(&v[i], &dv[i], 4))) {
                printf("FAIL %s n=%lld step %lld element %lld: w cpu %.9g cuda %.9g, m %.9g %.9g, v %.9g %.9g\n", name,
                       (long long)n, (long long)step, (long long)i, w[i], dw[i], m[i], dm[i], v[i], dv[i]);
                bad = 1;
            }
    }
    checks++;
    failures += bad;
    /* a found_inf word that is set: nothing changes */
    int one = 1, *Df = dev(sizeof(int));
    up(Df, &one, sizeof one);
    kn_cuda_optim co = {(int)o->kind, o->lr,    o->momentum, o->dampening,    o->nesterov,
                        o->beta1,     o->beta2, o->eps,      o->weight_decay, 7};
    ok(kn_cuda_optim_update(cu, NULL, &co, Dw, Dg, Dm, Dv, n, Df), name);
    down(dw, Dw, nb);
    down(dm, Dm, nb);
    expect(!memcmp(dw, w, nb) && !memcmp(dm, m, nb), "%s n=%lld: an update with found_inf set changed the weights",
           name, (long long)n);
    cu->free(cu, Df);
    cu->free(cu, Dw);
    cu->free(cu, Dm);
    cu->free(cu, Dv);
    cu->free(cu, Dg);
    free(w), free(m), free(v), free(g), free(dw), free(dm), free(dv);
}

static void test_optim(void) {
    static const int64_t sizes[] = {1, 7, 1000, 70000};
    for (int k = 0; k < 7; k++) {
        kn_optim_options o;
        kn_optim_options_init(&o);
        const char *name = "";
        switch (k) {
        case 0: name = "sgd", o.kind = KN_OPTIM_SGD, o.lr = 0.1, o.weight_decay = 0; break;
        case 1:
            name = "sgd_momentum_dampening", o.kind = KN_OPTIM_SGD, o.lr = 0.05, o.momentum = 0.9, o.dampening = 0.1,
            o.weight_decay = 0;
            break;
        case 2:
            name = "sgd_nesterov_l2", o.kind = KN_OPTIM_SGD, o.lr = 0.05, o.momentum = 0.9, o.nesterov = true,
            o.weight_decay = 1e-2;
            break;
        case 3: name = "adam_l2", o.kind = KN_OPTIM_ADAM, o.lr = 1e-3, o.weight_decay = 1e-2; break;
        case 4: name = "adam", o.kind = KN_OPTIM_ADAM, o.lr = 3e-3, o.weight_decay = 0; break;
        case 5: name = "adamw", o.kind = KN_OPTIM_ADAMW, o.lr = 5e-3, o.weight_decay = 0.01; break;
        case 6:
            name = "adamw_no_decay_betas", o.kind = KN_OPTIM_ADAMW, o.lr = 1e-2, o.weight_decay = 0, o.beta1 = 0.8,
            o.beta2 = 0.95, o.eps = 1e-6;
            break;
        }
        for (int s = 0; s < 4; s++) optim_case(name, &o, sizes[s]);
    }
}

/* ---- unscale + inf/NaN check ---- */
static void unscale_case(kn_dtype dt, int64_t n, int poison) {
    size_t es = kn_dtype_size(dt), nb = es * (size_t)n;
    char *g = malloc(nb);
    float *ref = malloc(sizeof(float) * (size_t)n), *got = malloc(sizeof(float) * (size_t)n);
    float scale = 65536.0f, inv = 1.0f / scale;
    for (int64_t i = 0; i < n; i++) {
        float x = (float)urand(-4, 4) * 4096.0f; /* within float16 */
        if (poison && i == n / 2) x = poison == 1 ? INFINITY : NAN;
        kn_store_f32(g, dt, i, x);
        ref[i] = kn_load_f32(g, dt, i) * inv;
    }
    void *Dg = dev(nb);
    float *Do = dev(sizeof(float) * (size_t)n), *Di = dev(sizeof(float));
    int *Df = dev(sizeof(int)), f = -1;
    up(Dg, g, nb);
    up(Di, &inv, sizeof inv);
    ok(kn_cuda_amp_found_inf_clear(cu, NULL, Df), "clear");
    ok(kn_cuda_amp_unscale(cu, NULL, dt, Dg, Do, n, Di, Df), "unscale");
    down(got, Do, sizeof(float) * (size_t)n);
    down(&f, Df, sizeof f);
    int bad = 0;
    for (int64_t i = 0; i < n && !bad; i++)
        if (memcmp(&got[i], &ref[i], 4) && !(isnan(got[i]) && isnan(ref[i]))) bad = 1;
    char what[64];
    snprintf(what, sizeof what, "dtype %d n %lld", (int)dt, (long long)n);
    expect(!bad, "unscale %s: a value differs from g / scale (case %lld)", what, poison);
    expect(f == (poison ? 1 : 0), "unscale %s: found_inf is wrong (poison %lld)", what, poison);
    if (poison) { /* a later finite tensor leaves the flag set */
        for (int64_t i = 0; i < n; i++) kn_store_f32(g, dt, i, 1.0f);
        up(Dg, g, nb);
        ok(kn_cuda_amp_unscale(cu, NULL, dt, Dg, Do, n, Di, Df), "unscale");
        down(&f, Df, sizeof f);
        expect(f == 1, "unscale %s: a finite tensor cleared found_inf (%lld)", what, 0);
    }
    cu->free(cu, Dg), cu->free(cu, Do), cu->free(cu, Di), cu->free(cu, Df);
    free(g), free(ref), free(got);
}

/* ---- GradScaler.update, as torch's _amp_update_scale_cpu_ ---- */
static void scaler_ref(float *scale, int *tracker, int found, double growth, double backoff, int interval) {
    if (found) {
        *scale = (float)(*scale * backoff);
        *tracker = 0;
    } else {
        int s = *tracker + 1;
        if (s == interval) {
            float ns = (float)(*scale * growth);
            if (isfinite(ns)) *scale = ns;
            *tracker = 0;
        } else {
            *tracker = s;
        }
    }
}

static void test_scaler(void) {
    static const int pattern[] = {0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0};
    float *Ds = dev(sizeof(float)), *Dinv = dev(sizeof(float));
    int *Dt = dev(sizeof(int)), *Df = dev(sizeof(int));
    for (int big = 0; big < 2; big++) {
        float s = big ? FLT_MAX / 3 : 65536.0f, got = 0, ginv = 0;
        int t = 0, gt = -1;
        up(Ds, &s, sizeof s);
        up(Dt, &t, sizeof t);
        for (int k = 0; k < (int)(sizeof pattern / sizeof pattern[0]); k++) {
            up(Df, &pattern[k], sizeof(int));
            ok(kn_cuda_amp_update_scale(cu, NULL, Ds, Dinv, Dt, Df, 2.0, 0.5, 3), "update scale");
            scaler_ref(&s, &t, pattern[k], 2.0, 0.5, 3);
            down(&got, Ds, sizeof got);
            down(&ginv, Dinv, sizeof ginv);
            down(&gt, Dt, sizeof gt);
            expect(got == s && gt == t && ginv == 1.0f / s, "loss scale %s: differs from GradScaler at step %lld",
                   big ? "near FLT_MAX" : "65536", k);
        }
    }
    cu->free(cu, Ds), cu->free(cu, Dinv), cu->free(cu, Dt), cu->free(cu, Df);
}

/* ---- master weights to float16 / bfloat16 ---- */
static void test_cast(void) {
    int64_t n = 4099;
    float *w = malloc(sizeof(float) * (size_t)n);
    uint16_t *got = malloc(2 * (size_t)n);
    for (int64_t i = 0; i < n; i++) w[i] = (float)(urand(-1, 1) * pow(10.0, urand(-9, 6)));
    w[0] = 70000.0f, w[1] = NAN, w[2] = -0.0f, w[3] = 1e-8f;
    float *Dw = dev(sizeof(float) * (size_t)n);
    uint16_t *Dh = dev(2 * (size_t)n);
    up(Dw, w, sizeof(float) * (size_t)n);
    for (int b = 0; b < 2; b++) {
        kn_dtype dt = b ? KN_BF16 : KN_F16;
        ok(kn_cuda_cast_weights(cu, NULL, dt, Dh, Dw, n), "cast weights");
        down(got, Dh, 2 * (size_t)n);
        int64_t bad = -1;
        for (int64_t i = n - 1; i >= 0; i--) {
            uint16_t r = b ? kn_f32_to_bf16(w[i]) : kn_f32_to_f16(w[i]);
            bool nan_both = isnan(w[i]) && isnan(b ? kn_bf16_to_f32(got[i]) : kn_f16_to_f32(got[i]));
            if (r != got[i] && !nan_both) bad = i;
        }
        expect(bad < 0, "cast weights to %s: element %lld differs from the CPU's conversion",
               b ? "bfloat16" : "float16", bad);
    }
    cu->free(cu, Dw), cu->free(cu, Dh);
    free(w), free(got);
}

/* ---- sum of squares ---- */
static void test_sumsq(void) {
    static const int64_t sizes[] = {0, 1, 255, 257, 100000, 300001};
    for (int k = 0; k < 6; k++) {
        int64_t n = sizes[k];
        float *g = malloc(sizeof(float) * (size_t)(n ? n : 1));
        double ref = 0, a = -1, b = -2;
        for (int64_t i = 0; i < n; i++) {
            g[i] = (float)urand(-3, 3);
            ref += (double)g[i] * g[i];
        }
        float *Dg = dev(sizeof(float) * (size_t)n);
        double *Do = dev(sizeof(double));
        up(Dg, g, sizeof(float) * (size_t)n);
        ok(kn_cuda_sumsq(cu, NULL, Dg, n, Do), "sumsq");
        down(&a, Do, sizeof a);
        ok(kn_cuda_sumsq(cu, NULL, Dg, n, Do), "sumsq");
        down(&b, Do, sizeof b);
        expect(fabs(a - ref) <= 1e-12 * ref && !memcmp(&a, &b, sizeof a),
               "sumsq %s n=%lld: differs from the double sum or between runs", "", n);
        cu->free(cu, Dg), cu->free(cu, Do);
        free(g);
    }
}

/* ---- a mixed-precision loop: AdamW on float32 masters, float16 gradients of a loss scaled by
 * the dynamic scale, step 4 overflowing (skipped, scale halved), growth every 2 good steps ---- */
static void test_amp_loop(void) {
    enum { N = 513, STEPS = 8 };
    kn_optim_options o;
    kn_optim_options_init(&o);
    o.lr = 1e-2;
    float w[N], m[N] = {0}, v[N] = {0}, g32[N], hw[N], gu[N];
    uint16_t g16[N], w16[N];
    for (int i = 0; i < N; i++) w[i] = (float)urand(-1, 1);
    float *Dw = dev(sizeof w), *Dm = dev(sizeof m), *Dv = dev(sizeof v), *Dg = dev(sizeof g32);
    float *Dscale = dev(4), *Dinv = dev(4);
    uint16_t *Dg16 = dev(sizeof g16), *Dw16 = dev(sizeof w16);
    int *Dt = dev(4), *Df = dev(4), zero = 0;
    float scale = 1024.0f, inv = 1.0f / scale;
    int tracker = 0, opt_step = 0;
    up(Dw, w, sizeof w), up(Dm, m, sizeof m), up(Dv, v, sizeof v);
    up(Dscale, &scale, 4), up(Dinv, &inv, 4), up(Dt, &zero, 4);
    int bad = 0;
    for (int k = 0; k < STEPS; k++) {
        /* the gradient of the scaled loss, as a float16 graph would give it: g * scale rounded */
        for (int i = 0; i < N; i++) {
            float gi = (float)urand(-1, 1) * (k == 3 && i == 7 ? 1e5f : 1.0f);
            g16[i] = kn_f32_to_f16(gi * scale);
        }
        up(Dg16, g16, sizeof g16);
        void *s = NULL;
        ok(cu->stream_begin(cu, &s), "stream");
        ok(kn_cuda_amp_found_inf_clear(cu, s, Df), "clear");
        ok(kn_cuda_amp_unscale(cu, s, KN_F16, Dg16, Dg, N, Dinv, Df), "unscale");
        kn_cuda_optim co = {(int)o.kind, o.lr, 0, 0, false, o.beta1, o.beta2, o.eps, o.weight_decay, opt_step + 1};
        ok(kn_cuda_optim_update(cu, s, &co, Dw, Dg, Dm, Dv, N, Df), "update");
        ok(kn_cuda_amp_update_scale(cu, s, Dscale, Dinv, Dt, Df, 2.0, 0.5, 2), "scale");
        ok(kn_cuda_cast_weights(cu, s, KN_F16, Dw16, Dw, N), "cast");
        ok(cu->stream_end(cu, s), "stream end");
        /* the same on the host */
        bool found = false;
        for (int i = 0; i < N; i++) {
            gu[i] = kn_f16_to_f32(g16[i]) * inv;
            if (!isfinite(kn_f16_to_f32(g16[i]))) found = true;
        }
        if (!found) kn_optim_update(&o, ++opt_step, o.lr, true, w, gu, m, v, N);
        scaler_ref(&scale, &tracker, found, 2.0, 0.5, 2);
        inv = 1.0f / scale;
        int f = -1;
        down(&f, Df, 4), down(hw, Dw, sizeof hw), down(w16, Dw16, sizeof w16);
        float ds = 0;
        down(&ds, Dscale, 4);
        bool same = f == (int)found && ds == scale && !memcmp(hw, w, sizeof w);
        for (int i = 0; i < N && same; i++) same = w16[i] == kn_f32_to_f16(w[i]);
        if (!same && !bad) {
            printf("FAIL amp loop step %d: found_inf cuda %d host %d, scale cuda %g host %g, weights %s\n", k, f,
                   (int)found, ds, scale, memcmp(hw, w, sizeof w) ? "differ" : "equal");
            bad = 1;
        }
        if (k == 3 && !found) {
            printf("FAIL amp loop: step 4 was meant to overflow float16\n");
            bad = 1;
        }
    }
    checks++;
    failures += bad;
    printf("amp loop: %d steps, %d updates, final scale %g\n", STEPS, opt_step, scale);
    cu->free(cu, Dw), cu->free(cu, Dm), cu->free(cu, Dv), cu->free(cu, Dg), cu->free(cu, Dscale);
    cu->free(cu, Dinv), cu->free(cu, Dg16), cu->free(cu, Dw16), cu->free(cu, Dt), cu->free(cu, Df);
    (void)g32;
}

/* ---- the weight cache: y = MatMul(x, W) with W a constant; an SGD step on the cached device copy
 * (b->weights gives it) changes what the session's next run computes ---- */
static void test_weight_cache(void) {
    kn_graph *g = kn_graph_new("cache");
    g->opsets[0] = 17;
    g->opset_domains[0] = strdup("");
    g->n_opsets = 1;
    int x = kn_graph_add_value(g, "x"), wv = kn_graph_add_value(g, "W"), y = kn_graph_add_value(g, "y");
    int64_t xd[2] = {2, 3}, wd[2] = {3, 4};
    g->values[x].is_input = true;
    g->values[x].type.dtype = KN_F32;
    kn_tensor_set_shape(&g->values[x].type, 2, xd);
    g->inputs = malloc(sizeof(int));
    g->inputs[g->n_inputs++] = x;
    g->values[y].is_output = true;
    g->outputs = malloc(sizeof(int));
    g->outputs[g->n_outputs++] = y;
    kn_tensor *W = NULL, *X = NULL;
    ok(kn_tensor_new(KN_F32, 2, wd, &W), "tensor");
    ok(kn_tensor_new(KN_F32, 2, xd, &X), "tensor");
    /* w: the expected weights; W's own host data is never changed, so only the device copy can
     * carry the updates into the runs */
    float *xs = X->data, gr[12], w[12];
    for (int i = 0; i < 12; i++) w[i] = ((float *)W->data)[i] = (float)urand(-1, 1), gr[i] = (float)urand(-1, 1);
    for (int i = 0; i < 6; i++) xs[i] = (float)urand(-1, 1);
    g->values[wv].constant = W;
    g->values[wv].type.dtype = KN_F32;
    kn_tensor_set_shape(&g->values[wv].type, 2, wd);
    if (kn_graph_add_node(g, "mm", "MatMul", "", (int[]){x, wv}, 2, &y, 1, NULL, 0) < 0)
        ok(kn_error(KN_ERR_RUNTIME, "node"), "node");
    ok(kn_graph_resolve_ops(g), "resolve");
    kn_model *m = calloc(1, sizeof *m);
    m->graph = g;
    kn_session_options so;
    kn_session_options_init(&so);
    so.device = KN_DEVICE_CUDA;
    kn_session *s = NULL;
    ok(kn_session_create(m, &so, &s), "session");
    int bad = 0;
    for (int step = 0; step < 3; step++) {
        kn_tensor out[1];
        ok(kn_session_run_values(s, X, out), "run");
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 4; j++) {
                double ref = 0;
                for (int k = 0; k < 3; k++) ref += (double)xs[i * 3 + k] * w[k * 4 + j];
                if (fabs(kn_get_f64(&out[0], i * 4 + j) - ref) > 1e-5) bad = 1;
            }
        kn_tensor_release(&out[0]);
        /* an SGD step on the device copy the runs read, and the same on the host copy */
        const void *d = NULL;
        ok(cu->weights(cu, W->data, kn_nbytes(W), &d), "weights");
        float *Dg = dev(sizeof gr);
        up(Dg, gr, sizeof gr);
        kn_cuda_optim co = {0, 0.5, 0, 0, false, 0, 0, 0, 0, step + 1};
        ok(kn_cuda_optim_update(cu, NULL, &co, (float *)d, Dg, NULL, NULL, 12, NULL), "update");
        cu->free(cu, Dg);
        kn_optim_options o;
        kn_optim_options_init(&o);
        o.kind = KN_OPTIM_SGD;
        o.weight_decay = 0;
        kn_optim_update(&o, step + 1, 0.5, false, w, gr, NULL, NULL, 12);
    }
    expect(!bad, "weight cache: a run did not see the weights updated on the device%s (%lld)", "", 0);
    kn_session_free(s);
    kn_model_free(m);
}

/* ---- the trainer's update (autograd/trainer.c apply_update) replayed on the device: two
 * parameters, 2 micro-batches accumulated, averaged, clipped to norm 0.5 by the sum of squares,
 * AdamW; weights must match the host replay bit for bit over 3 updates ---- */
static void test_trainer_replay(void) {
    enum { NP = 2 };
    static const int64_t sz[NP] = {300, 17};
    kn_optim_options o;
    kn_optim_options_init(&o);
    o.lr = 1e-2;
    o.max_grad_norm = 0.5;
    float *w[NP], *m[NP], *v[NP], *acc[NP], *g[NP], *Dw[NP], *Dm[NP], *Dv[NP], *Dacc[NP], *Dg[NP];
    for (int p = 0; p < NP; p++) {
        size_t nb = sizeof(float) * (size_t)sz[p];
        w[p] = malloc(nb), m[p] = calloc((size_t)sz[p], 4), v[p] = calloc((size_t)sz[p], 4);
        acc[p] = calloc((size_t)sz[p], 4), g[p] = malloc(nb);
        for (int64_t i = 0; i < sz[p]; i++) w[p][i] = (float)urand(-1, 1);
        Dw[p] = dev(nb), Dm[p] = dev(nb), Dv[p] = dev(nb), Dacc[p] = dev(nb), Dg[p] = dev(nb);
        up(Dw[p], w[p], nb), up(Dm[p], m[p], nb), up(Dv[p], v[p], nb), up(Dacc[p], acc[p], nb);
    }
    double *Dsq = dev(sizeof(double));
    int bad = 0;
    for (int step = 1; step <= 3; step++) {
        for (int micro = 0; micro < 2; micro++)
            for (int p = 0; p < NP; p++) {
                for (int64_t i = 0; i < sz[p]; i++) g[p][i] = (float)urand(-1, 1);
                up(Dg[p], g[p], sizeof(float) * (size_t)sz[p]);
                ok(kn_cuda_grad_accumulate(cu, NULL, Dacc[p], Dg[p], sz[p]), "accumulate");
                for (int64_t i = 0; i < sz[p]; i++) acc[p][i] += g[p][i];
            }
        /* host: as apply_update */
        double sq = 0, dsq = 0;
        for (int p = 0; p < NP; p++)
            for (int64_t i = 0; i < sz[p]; i++) {
                acc[p][i] = (float)((double)acc[p][i] * 0.5);
                sq += (double)acc[p][i] * (double)acc[p][i];
            }
        double clip = o.max_grad_norm / (sqrt(sq) + 1e-6);
        float c = (float)(clip > 1.0 ? 1.0 : clip);
        /* device: the same with its own sum of squares */
        for (int p = 0; p < NP; p++) {
            ok(kn_cuda_grad_scale(cu, NULL, Dacc[p], sz[p], 0.5), "scale");
            ok(kn_cuda_sumsq(cu, NULL, Dacc[p], sz[p], Dsq), "sumsq");
            double part = 0;
            down(&part, Dsq, sizeof part);
            dsq += part;
        }
        double dclip = o.max_grad_norm / (sqrt(dsq) + 1e-6);
        float dc = (float)(dclip > 1.0 ? 1.0 : dclip);
        if (fabs(dsq - sq) > 1e-12 * sq) bad = 1;
        for (int p = 0; p < NP; p++) {
            for (int64_t i = 0; i < sz[p]; i++) acc[p][i] *= c;
            ok(kn_cuda_grad_scale(cu, NULL, Dacc[p], sz[p], (double)dc), "clip");
            kn_optim_update(&o, step, o.lr, p == 0, w[p], acc[p], m[p], v[p], sz[p]);
            kn_cuda_optim co = {(int)o.kind, o.lr, 0, 0, false, o.beta1, o.beta2, o.eps, p == 0 ? o.weight_decay : 0,
                                step};
            ok(kn_cuda_optim_update(cu, NULL, &co, Dw[p], Dacc[p], Dm[p], Dv[p], sz[p], NULL), "update");
            memset(acc[p], 0, sizeof(float) * (size_t)sz[p]);
            up(Dacc[p], acc[p], sizeof(float) * (size_t)sz[p]);
            float *hw = malloc(sizeof(float) * (size_t)sz[p]);
            down(hw, Dw[p], sizeof(float) * (size_t)sz[p]);
            if (memcmp(hw, w[p], sizeof(float) * (size_t)sz[p])) bad = 1;
            free(hw);
        }
    }
    expect(!bad, "trainer replay%s: device weights differ from the host's after an update (%lld)", "", 0);
    for (int p = 0; p < NP; p++) {
        cu->free(cu, Dw[p]), cu->free(cu, Dm[p]), cu->free(cu, Dv[p]), cu->free(cu, Dacc[p]), cu->free(cu, Dg[p]);
        free(w[p]), free(m[p]), free(v[p]), free(acc[p]), free(g[p]);
    }
    cu->free(cu, Dsq);
}

int main(void) {
    kn_status *st = kn_backend_get(KN_DEVICE_CUDA, 0, &cu);
    if (st) {
        printf("skipped: no CUDA device (%s)\n", kn_status_message(st));
        kn_status_free(st);
        return 77;
    }
    test_optim();
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16};
    static const int64_t sizes[] = {1, 300, 65537};
    for (int t = 0; t < 3; t++)
        for (int s = 0; s < 3; s++)
            for (int p = 0; p < 3; p++) unscale_case(dts[t], sizes[s], p);
    test_scaler();
    test_cast();
    test_sumsq();
    test_amp_loop();
    test_weight_cache();
    test_trainer_replay();
    kn_status *e = kn_cuda_amp_unscale(cu, NULL, KN_I32, NULL, NULL, 4, NULL, NULL);
    expect(e != NULL, "unscale of int32 gradients was accepted%s%lld", "", 0);
    kn_status_free(e);
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
