/* Training steps on the CUDA backend's device buffers: the optimiser updates of autograd/optim.c
 * (SGD with momentum/dampening/Nesterov, Adam, AdamW; torch's single-tensor formulas, in double
 * per element, stored as float32) and the mixed-precision helpers of torch.cuda.amp: float32
 * master weights copied to float16/bfloat16 for the forward, one pass that unscales the
 * gradients and flags inf/NaN, and GradScaler's dynamic loss scale. Every pointer is a device
 * pointer from the backend's alloc; `stream` is one from b->stream_begin (the calls queue work on
 * it; b->stream_end waits for it), or NULL to run on a stream of its own and wait before
 * returning. Nothing here uses float atomics, so a step gives the same bits every time.
 *
 * How the trainer uses them (one optimiser step, mixed precision):
 *   1. the fp16/bf16 graph runs forward + backward with the loss multiplied by scale (a graph
 *      input) and its weights as inputs fed from the low-precision copies;
 *   2. kn_cuda_amp_unscale for every gradient with one found_inf word (zeroed by
 *      kn_cuda_amp_found_inf_clear), giving float32 gradients divided by the scale;
 *   3. kn_cuda_grad_accumulate over micro-batches, kn_cuda_grad_scale by 1 / accumulate, and for
 *      clipping kn_cuda_sumsq per gradient (the global norm from their sum, on the host) and
 *      kn_cuda_grad_scale by the coefficient, as autograd/trainer.c does on the host;
 *   4. kn_cuda_optim_update for every parameter with found_inf passed: after an overflow the
 *      kernels leave weights and moments untouched (the step is skipped, as GradScaler.step);
 *   5. kn_cuda_amp_update_scale (halve on overflow, grow after growth_interval good steps);
 *   6. kn_cuda_cast_weights master -> low-precision copies for the next forward.
 * In float32 only 4 applies. torch's scheduler.step() runs after a skipped step too; whether the
 * trainer's schedule counts it is the trainer's choice.
 * Weights that are graph constants (not inputs) live in the backend's weight cache, keyed by
 * their host address: b->weights(b, host, bytes, &dev) gives the device copy every session on the
 * device reads, and kn_cuda_optim_update may update it in place, so the next run uses the new
 * weights with no upload (the host copy is then stale; copy it back to export). A host copy
 * updated on the host instead needs b->forget(b, host) before the next run, or the runs keep the
 * old device copy. (The trainer today feeds its parameters as graph inputs, which are uploaded
 * every run and not cached.) */
#ifndef KN_TRAIN_CUDA_H
#define KN_TRAIN_CUDA_H
#include "graph/ops.h"
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The optimiser's constants for one step; kind takes kn_optim_kind's values (0 SGD, 1 Adam,
 * 2 AdamW) so the trainer copies them from its kn_optim_options. */
typedef struct kn_cuda_optim {
    int kind;
    double lr; /* this step's rate (the schedule's) */
    double momentum, dampening;
    bool nesterov;
    double beta1, beta2, eps;
    double weight_decay; /* 0 for the tensors the no_decay patterns exclude */
    int64_t step;        /* 1-based */
} kn_cuda_optim;

/* w, m, v: float32 [n]; g: float32 gradients (already averaged / clipped); v unused by SGD;
 * found_inf: NULL, or a device int that, when non-zero, makes this a no-op. */
kn_status *kn_cuda_optim_update(const kn_backend *b, void *stream, const kn_cuda_optim *o, float *w, const float *g,
                                float *m, float *v, int64_t n, const int *found_inf);

/* found_inf (device int) = 0. */
kn_status *kn_cuda_amp_found_inf_clear(const kn_backend *b, void *stream, int *found_inf);
/* out[i] = (float)g[i] * inv_scale, g of dtype (float32, float16, bfloat16; out may equal g for
 * float32); any inf/NaN in g sets *found_inf to 1 (never back to 0), as
 * torch._amp_foreach_non_finite_check_and_unscale_. inv_scale: a device float (1 / scale). */
kn_status *kn_cuda_amp_unscale(const kn_backend *b, void *stream, kn_dtype dtype, const void *g, float *out, int64_t n,
                               const float *inv_scale, int *found_inf);
/* GradScaler.update on the device (torch._amp_update_scale_): on overflow scale *= backoff and
 * growth_tracker = 0; else growth_tracker += 1 and, when it reaches growth_interval, scale *=
 * growth (kept only if finite) and growth_tracker = 0. inv_scale (may be NULL) receives 1 / scale.
 * scale and inv_scale are device floats, growth_tracker and found_inf device ints. */
kn_status *kn_cuda_amp_update_scale(const kn_backend *b, void *stream, float *scale, float *inv_scale,
                                    int *growth_tracker, const int *found_inf, double growth, double backoff,
                                    int growth_interval);
/* dst (float16 or bfloat16, round to nearest even) = master (float32), n elements. */
kn_status *kn_cuda_cast_weights(const kn_backend *b, void *stream, kn_dtype dtype, void *dst, const float *master,
                                int64_t n);
/* The trainer's gradient bookkeeping (autograd/trainer.c) on the device: acc[i] += g[i] (micro-
 * batch accumulation, float), and g[i] = (float)((double)g[i] * factor) (the 1 / accumulate
 * average; the clipping coefficient, which the trainer rounds to float first, is passed as that
 * float: the product of two floats is exact in double, so this is its float multiply). */
kn_status *kn_cuda_grad_accumulate(const kn_backend *b, void *stream, float *acc, const float *g, int64_t n);
kn_status *kn_cuda_grad_scale(const kn_backend *b, void *stream, float *g, int64_t n, double factor);
/* *out (a device double) = sum of g[i]^2 in double, in a fixed order (blocks of 256, then the
 * block sums in order), for global-norm clipping. */
kn_status *kn_cuda_sumsq(const kn_backend *b, void *stream, const float *g, int64_t n, double *out);

/* A side stream for a data-parallel trainer's gradient communication, overlapped with the
 * backward: kn_cuda_side_after records an event on a run's stream (b->stream_begin's) and makes
 * the side stream wait for it, so what is queued next on the side stream (copies, NCCL) runs after
 * every kernel queued on the run's stream so far and never blocks that stream. n_events events on
 * the side stream are recorded (kn_cuda_side_record) and polled (kn_cuda_side_query) by the host;
 * kn_cuda_side_sync waits for the whole side stream. kn_cuda_side_stream is its cudaStream_t (for
 * kn_comm_device_*), kn_cuda_side_queue the `stream` the kn_cuda_* calls above take to queue there.
 * A NULL run_stream (work that already completed) needs no wait. Copies are asynchronous: host
 * memory must stay put until they completed. */
typedef struct kn_cuda_side kn_cuda_side;
kn_status *kn_cuda_side_create(const kn_backend *b, int n_events, kn_cuda_side **out);
void kn_cuda_side_free(kn_cuda_side *c);
void *kn_cuda_side_stream(const kn_cuda_side *c);
void *kn_cuda_side_queue(const kn_cuda_side *c);
kn_status *kn_cuda_side_after(kn_cuda_side *c, void *run_stream);
kn_status *kn_cuda_side_copy(kn_cuda_side *c, void *dst, kn_device_kind dd, const void *src, kn_device_kind sd,
                             size_t bytes);
kn_status *kn_cuda_side_record(kn_cuda_side *c, int i);
kn_status *kn_cuda_side_query(kn_cuda_side *c, int i, bool *done);
kn_status *kn_cuda_side_sync(kn_cuda_side *c);

#ifdef __cplusplus
}
#endif
#endif
