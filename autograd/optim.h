/* Optimisers and learning-rate schedules with PyTorch's update formulas (torch.optim.SGD, Adam,
 * AdamW, single-tensor path) and transformers' get_*_schedule_with_warmup, on float32 buffers
 * updated in place. The arithmetic is done in double per element and stored as float32, so a
 * step agrees with PyTorch's float32 one to rounding. */
#ifndef KN_AUTOGRAD_OPTIM_H
#define KN_AUTOGRAD_OPTIM_H
#include <stdbool.h>
#include <stdint.h>

typedef enum kn_optim_kind { KN_OPTIM_SGD = 0, KN_OPTIM_ADAM, KN_OPTIM_ADAMW } kn_optim_kind;
typedef enum kn_sched_kind { KN_SCHED_CONSTANT = 0, KN_SCHED_LINEAR, KN_SCHED_COSINE } kn_sched_kind;

typedef struct kn_optim_options {
    kn_optim_kind kind;
    double lr;
    double momentum, dampening; /* SGD */
    bool nesterov;              /* SGD */
    double beta1, beta2, eps;   /* Adam, AdamW */
    /* SGD and Adam: L2 added to the gradient; AdamW: decoupled, param *= 1 - lr * wd */
    double weight_decay;
    /* Comma-separated fnmatch patterns of parameter names that get no weight decay (transformers'
     * Trainer excludes biases and LayerNorm weights); NULL: the default of kn_optim_options_init */
    const char *no_decay;
    kn_sched_kind schedule;
    int64_t warmup_steps, total_steps; /* optimiser steps, for the LINEAR and COSINE schedules */
    double max_grad_norm;              /* > 0: clip the gradients to this global L2 norm */
    int accumulate;                    /* micro-batches per optimiser step (gradients averaged) */
} kn_optim_options;

/* AdamW(lr 1e-3, betas 0.9 / 0.999, eps 1e-8, weight decay 0.01) as torch.optim.AdamW, constant
 * schedule, no clipping, no accumulation; no_decay "*bias*,*LayerNorm*,*layer_norm*,*norm*". */
void kn_optim_options_init(kn_optim_options *o);

/* The learning rate of optimiser step `step` (0-based: the first update uses step 0), as
 * LambdaLR with transformers' schedule lambdas gives it. */
double kn_optim_lr(const kn_optim_options *o, int64_t step);

/* One update of n parameters w with gradients g: step is 1-based (Adam's bias correction); m and
 * v are the moment buffers (SGD: m is the momentum buffer, v unused), zero before step 1; decay
 * chooses whether weight_decay applies to this tensor. g is read only. */
void kn_optim_update(const kn_optim_options *o, int64_t step, double lr, bool decay, float *w, const float *g, float *m,
                     float *v, int64_t n);

/* Whether name matches one of the comma-separated fnmatch patterns (NULL or "": none). */
bool kn_name_matches(const char *patterns, const char *name);

#endif
