/* CPU kernels for the random ops: Bernoulli, RandomUniform(Like), RandomNormal(Like). The
 * generator is MT19937 seeded like numpy's legacy RandomState(seed), with its uniform double,
 * polar Gaussian and binomial-inversion draws, so a node with a `seed` attribute reproduces the
 * ONNX reference values exactly. Without the attribute the run's seed (ctx->seed), mixed with the
 * node's identity, is used. The ONNX test_bernoulli* cases cannot pass on any runtime: their
 * expected outputs were drawn from numpy's unseeded global generator, whatever the seed says. */
#include "graph/ops.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <string.h>

typedef struct rng_mt {
    uint32_t mt[624];
    int pos;
    bool has_gauss;
    double gauss;
} rng_mt;

static void mt_seed(rng_mt *s, uint32_t seed) {
    s->mt[0] = seed;
    for (int i = 1; i < 624; i++) s->mt[i] = 1812433253u * (s->mt[i - 1] ^ (s->mt[i - 1] >> 30)) + (uint32_t)i;
    s->pos = 624;
    s->has_gauss = false;
    s->gauss = 0.0;
}

static uint32_t mt_next32(rng_mt *s) {
    if (s->pos >= 624) {
        for (int i = 0; i < 624; i++) {
            uint32_t y = (s->mt[i] & 0x80000000u) | (s->mt[(i + 1) % 624] & 0x7fffffffu);
            s->mt[i] = s->mt[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        s->pos = 0;
    }
    uint32_t y = s->mt[s->pos++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

static double mt_double(rng_mt *s) {
    uint32_t a = mt_next32(s) >> 5, b = mt_next32(s) >> 6;
    return ((double)a * 67108864.0 + (double)b) / 9007199254740992.0;
}

static double mt_gauss(rng_mt *s) {
    if (s->has_gauss) {
        s->has_gauss = false;
        return s->gauss;
    }
    double x1, x2, r2;
    do {
        x1 = 2.0 * mt_double(s) - 1.0;
        x2 = 2.0 * mt_double(s) - 1.0;
        r2 = x1 * x1 + x2 * x2;
    } while (r2 >= 1.0 || r2 == 0.0);
    double f = sqrt(-2.0 * log(r2) / r2);
    s->gauss = f * x1;
    s->has_gauss = true;
    return f * x2;
}

/* One Bernoulli draw as numpy's legacy binomial(1, p) does it: inversion on min(p, 1-p), which
 * consumes a uniform draw even for p = 0 or 1. */
static int mt_bernoulli(rng_mt *s, double p) {
    bool flip = p > 0.5;
    double pp = flip ? 1.0 - p : p, q = 1.0 - pp;
    double qn = exp(log(q)), np_ = pp;
    int64_t bound = (int64_t)fmin(1.0, np_ + 10.0 * sqrt(np_ * q + 1.0));
    int64_t X = 0;
    double px = qn, U = mt_double(s);
    while (U > px) {
        X++;
        if (X > bound) {
            X = 0;
            px = qn;
            U = mt_double(s);
        } else {
            U -= px;
            px = ((double)(1 - X + 1) * pp * px) / ((double)X * q);
        }
    }
    return (int)(flip ? 1 - X : X);
}

static void rng_init(rng_mt *s, kn_exec_ctx *ctx, const kn_node *node) {
    const kn_params_random *p = KN_PARAMS(node, random);
    uint32_t seed;
    if (p->has_seed) seed = (uint32_t)(int64_t)p->seed;
    else {
        /* distinct streams for the unseeded random nodes of one run: mix the node's name and
         * first output id into the run seed (FNV-1a) */
        uint64_t h = 1469598103934665603ull ^ ctx->seed;
        for (const char *p = node->name ? node->name : ""; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
        h = (h ^ (uint64_t)(node->n_outputs > 0 && node->outputs ? node->outputs[0] : 0)) * 1099511628211ull;
        seed = (uint32_t)(h ^ (h >> 32));
    }
    mt_seed(s, seed);
}

static void rng_store(kn_tensor *t, int64_t i, double v) {
    switch (t->dtype) {
    case KN_F32: ((float *)t->data)[i] = (float)v; break;
    case KN_F64: ((double *)t->data)[i] = v; break;
    case KN_F16: ((uint16_t *)t->data)[i] = kn_f32_to_f16((float)v); break;
    case KN_BF16: ((uint16_t *)t->data)[i] = kn_f32_to_bf16((float)v); break;
    case KN_BOOL: ((uint8_t *)t->data)[i] = v != 0.0; break;
    default: kn_set_f64(t, i, v); break;
    }
}

kn_status *kn_cpu_Bernoulli(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                            kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    if (x->dtype != KN_F32 && x->dtype != KN_F64 && x->dtype != KN_F16 && x->dtype != KN_BF16)
        return kn_err_dtype(node, x);
    if (y->dtype == KN_STRING) return kn_err_dtype(node, y);
    rng_mt s;
    rng_init(&s, ctx, node);
    int64_t n = kn_numel(x);
    for (int64_t i = 0; i < n; i++) {
        double p = kn_get_f64(x, i);
        if (!(p >= 0.0 && p <= 1.0))
            return kn_error(KN_ERR_INVALID_ARGUMENT, "Bernoulli: probability %g outside [0, 1]", p);
        rng_store(y, i, mt_bernoulli(&s, p));
    }
    return NULL;
}

static kn_status *rng_fill(kn_exec_ctx *ctx, const kn_node *node, kn_tensor *y, bool normal) {
    rng_mt s;
    rng_init(&s, ctx, node);
    double a = KN_PARAMS(node, random)->low;  /* mean for RandomNormal* */
    double b = KN_PARAMS(node, random)->high; /* scale for RandomNormal* */
    int64_t n = kn_numel(y);
    for (int64_t i = 0; i < n; i++) rng_store(y, i, normal ? mt_gauss(&s) * b + a : mt_double(&s) * (b - a) + a);
    return NULL;
}

kn_status *kn_cpu_RandomUniform(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *const *out, int n_out) {
    return rng_fill(ctx, node, out[0], false);
}

kn_status *kn_cpu_RandomUniformLike(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                    kn_tensor *const *out, int n_out) {
    return rng_fill(ctx, node, out[0], false);
}

kn_status *kn_cpu_RandomNormal(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                               kn_tensor *const *out, int n_out) {
    return rng_fill(ctx, node, out[0], true);
}

kn_status *kn_cpu_RandomNormalLike(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                   kn_tensor *const *out, int n_out) {
    return rng_fill(ctx, node, out[0], true);
}
