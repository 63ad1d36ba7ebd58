/* Optimiser updates and schedules (autograd/optim.h). The order of operations follows
 * torch/optim/{sgd,adam,adamw}.py's _single_tensor_* functions, so the same rounding points
 * exist: AdamW decays before the moments, Adam folds the decay into the gradient. */
#include "autograd/optim.h"
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

void kn_optim_options_init(kn_optim_options *o) {
    memset(o, 0, sizeof *o);
    o->kind = KN_OPTIM_ADAMW;
    o->lr = 1e-3;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->eps = 1e-8;
    o->weight_decay = 0.01;
    o->no_decay = "*bias*,*LayerNorm*,*layer_norm*,*norm*";
    o->schedule = KN_SCHED_CONSTANT;
    o->accumulate = 1;
}

double kn_optim_lr(const kn_optim_options *o, int64_t step) {
    if (o->schedule == KN_SCHED_CONSTANT) return o->lr;
    double w = (double)o->warmup_steps, t = (double)o->total_steps, s = (double)step;
    if (s < w) return o->lr * s / (w > 1 ? w : 1);
    double rest = t - w > 1 ? t - w : 1;
    if (o->schedule == KN_SCHED_LINEAR) {
        double f = (t - s) / rest;
        return o->lr * (f > 0 ? f : 0);
    }
    /* get_cosine_schedule_with_warmup with num_cycles 0.5 */
    double progress = (s - w) / rest;
    double f = 0.5 * (1.0 + cos(3.14159265358979323846 * 0.5 * 2.0 * progress));
    return o->lr * (f > 0 ? f : 0);
}

void kn_optim_update(const kn_optim_options *o, int64_t step, double lr, bool decay, float *w, const float *g, float *m,
                     float *v, int64_t n) {
    double wd = decay ? o->weight_decay : 0.0;
    if (o->kind == KN_OPTIM_SGD) {
        double mom = o->momentum, damp = o->dampening;
        for (int64_t i = 0; i < n; i++) {
            float d = (float)((double)g[i] + wd * (double)w[i]);
            if (mom != 0) {
                m[i] = step == 1 ? d : (float)(mom * (double)m[i] + (1.0 - damp) * (double)d);
                d = o->nesterov ? (float)((double)d + mom * (double)m[i]) : m[i];
            }
            w[i] = (float)((double)w[i] - lr * (double)d);
        }
        return;
    }
    double b1 = o->beta1, b2 = o->beta2;
    double bc1 = 1.0 - pow(b1, (double)step), bc2_sqrt = sqrt(1.0 - pow(b2, (double)step));
    double step_size = lr / bc1;
    bool adamw = o->kind == KN_OPTIM_ADAMW;
    for (int64_t i = 0; i < n; i++) {
        if (adamw && wd != 0) w[i] = (float)((double)w[i] * (1.0 - lr * wd));
        double d = adamw ? (double)g[i] : (double)(float)((double)g[i] + wd * (double)w[i]);
        m[i] = (float)((double)m[i] + (1.0 - b1) * (d - (double)m[i]));
        v[i] = (float)(b2 * (double)v[i] + (1.0 - b2) * d * d);
        double denom = sqrt((double)v[i]) / bc2_sqrt + o->eps;
        w[i] = (float)((double)w[i] - step_size * (double)m[i] / denom);
    }
}

bool kn_name_matches(const char *patterns, const char *name) {
    if (!patterns || !name) return false;
    char pat[256];
    for (const char *p = patterns; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > 0 && len < sizeof pat) {
            memcpy(pat, p, len);
            pat[len] = 0;
            if (fnmatch(pat, name, 0) == 0) return true;
        }
        if (!e) break;
        p = e + 1;
    }
    return false;
}
