/* Training a loaded model in place: the trainable float32 initializers become graph inputs
 * that kiln owns (so constant folding, plan-time evaluation and the CPU's weight packing never
 * freeze a value that changes every step), the loss built into the graph (autograd/loss.h) is
 * differentiated by kn_autograd, and each step runs forward and backward in one session and
 * updates the parameters and the optimiser moments in place (autograd/optim.h). Buffers are
 * allocated once at creation; a step allocates nothing of its own beyond what a session run
 * does. */
#ifndef KN_AUTOGRAD_TRAINER_H
#define KN_AUTOGRAD_TRAINER_H
#include "autograd/optim.h"
#include "graph/model.h"
#include "runtime/kiln.h"

typedef struct kn_trainer kn_trainer;

typedef struct kn_trainer_options {
    /* Comma-separated fnmatch patterns naming the trainable initializers (float32 only); NULL
     * or "": every float32 initializer. The others stay constants and are folded as usual. */
    const char *trainable;
    kn_optim_options optim;
    int num_threads; /* 0: one per core */
    /* Seeds kn_trainer_random (what a resumed run continues from a checkpoint); 0 is a seed. */
    uint64_t seed;
    /* KN_DEVICE_CUDA: the session runs on that device, and the parameters, gradients and moments
     * stay there (the update runs on the device); the host copies behind kn_trainer_param, export
     * and checkpoints are refreshed when those are called. */
    kn_device_kind device;
    int device_index;
    /* FP16/BF16 (device only): the forward and backward run in that type on low-precision copies
     * of float32 master weights, with a dynamic loss scale (GradScaler: init_scale, 0 -> 65536,
     * halved on an overflow step, which is skipped, doubled after growth_interval good
     * micro-batches, 0 -> 2000). */
    kn_precision precision;
    float init_scale;
    int growth_interval;
    /* With FP16/BF16: per-op autocast, as torch.autocast, instead of the whole graph in that type.
     * Only the ops of the low-precision list (trainer_device.h: MatMul, Gemm, convolutions,
     * attention) run in it, on inputs cast on entry, their outputs cast back to float32; norms,
     * softmax, reductions, activations and the loss stay float32, and the parameters are fed as
     * the float32 masters (a cast per use, shared by the ops that read the same value). */
    bool autocast;
    /* Activation recomputation (autograd/recompute.h): "layers", or comma-separated fnmatch
     * patterns over node names; NULL or "": none. The chosen forward nodes' activations are
     * recomputed in the backward instead of kept, for a lower peak (kn_trainer_peak_bytes) and
     * bitwise the same training. */
    const char *recompute;
} kn_trainer_options;
void kn_trainer_options_init(kn_trainer_options *o);

/* The model as the file has it, neither folded nor fused, so its initializers are still the
 * weights the file names (folding may merge a weight into a derived constant). Build the loss
 * on out->graph, then hand the model to kn_trainer_create. */
kn_status *kn_train_load(const char *path, kn_model **out);

/* Takes m (freed with the trainer, also on failure). loss: the loss value of m->graph. A weight
 * used by many nodes is one parameter and gets their gradients summed, so tied weights stay
 * tied. Fails naming a pattern that matches nothing and a loss that does not depend on any
 * trainable parameter. */
kn_status *kn_trainer_create(kn_model *m, int loss, const kn_trainer_options *o, kn_trainer **out);
void kn_trainer_free(kn_trainer *t);

/* One micro-batch: the graph's inputs other than the parameters, by name. Runs forward and
 * backward, adds the gradients to the accumulated ones, and after optim.accumulate
 * micro-batches clips them (max_grad_norm), averages them over the micro-batches and updates
 * the parameters. *loss (may be NULL) receives the micro-batch's loss; *updated (may be NULL)
 * whether the parameters changed.
 * A micro-batch whose loss or gradient norm is NaN or infinite is refused with KN_ERR_NON_FINITE
 * (the message names the update step, the micro-batch, the loss and the norm): its gradients are
 * not accumulated and the parameters, moments, accumulated gradients and step count stay as the
 * last good micro-batch left them, so the caller may skip the batch (or lower the rate and
 * resume from a checkpoint). *loss still receives the bad loss. */
kn_status *kn_trainer_step(kn_trainer *t, const kn_named_tensor *batch, int n_batch, double *loss, bool *updated);

/* Runs the forward pass only (with the current weights; nothing is updated): outputs as for
 * kn_session_run, e.g. the logits of a head (autograd/head.h). The batch holds every graph input
 * as for kn_trainer_step (the session asks for all of them, labels too, though outputs the loss
 * does not feed do not depend on them). */
kn_status *kn_trainer_forward(kn_trainer *t, const kn_named_tensor *batch, int n_batch, kn_named_tensor *outputs,
                              int n_outputs);

/* The next number of the trainer's own random stream (splitmix64 from options.seed), saved
 * and restored by checkpoints, for whatever the training loop draws (shuffling, dropout seeds). */
uint64_t kn_trainer_random(kn_trainer *t);

/* The session runs (forward+backward passes) so far and setting them (kn_session_run_count):
 * what training-mode Dropout's masks follow, for a caller that resumes from a checkpoint. */
uint64_t kn_trainer_run_count(const kn_trainer *t);
void kn_trainer_set_run_count(kn_trainer *t, uint64_t runs);

/* The optimiser steps taken so far. */
int64_t kn_trainer_steps(const kn_trainer *t);
/* The global L2 norm of the gradients of the last update, before clipping. */
double kn_trainer_grad_norm(const kn_trainer *t);

/* Mixed precision: the loss scale now (1 in float32), and the micro-batches skipped because
 * their scaled gradients overflowed (not counted as micro-batches or steps). */
double kn_trainer_loss_scale(const kn_trainer *t);
int64_t kn_trainer_skipped_steps(const kn_trainer *t);

/* The planner's peak arena bytes of one forward+backward run (after the first step). */
size_t kn_trainer_peak_bytes(const kn_trainer *t);

int kn_trainer_param_count(const kn_trainer *t);
/* Parameter i: its initializer name, shape and live float32 data (updated in place by each
 * step; writable, e.g. to load a checkpoint). */
const char *kn_trainer_param(const kn_trainer *t, int i, int *ndim, const int64_t **dims, float **data);

/* Writes the ONNX file at src_path (the file the model was loaded from) to dst_path with the
 * initializers of the trainable parameters replaced by their current values, everything else as
 * it was, plus what the caller added to the loaded graph before kn_trainer_create and the
 * inference outputs need (the nodes, new initializers and new graph outputs of a head,
 * autograd/head.h); the loss and the gradient graph are not written. The file is written under a
 * temporary name in dst's directory, fsync'd and renamed over dst: on any failure dst is as it
 * was and no temporary is left. Weights go to an external data file (dst + ".data") when the
 * source kept its weights outside (model.onnx.data) or when they exceed the threshold (see
 * kn_trainer_export_options), and inside the file otherwise. */
kn_status *kn_trainer_export_onnx(const kn_trainer *t, const char *src_path, const char *dst_path);
typedef struct kn_trainer_export_options {
    /* Total initializer bytes above which the weights go to an external data file; 0: the
     * default, just under protobuf's 2 GiB message limit (KN_ONNX_EXTERNAL_THRESHOLD). */
    int64_t external_threshold;
} kn_trainer_export_options;
kn_status *kn_trainer_export_onnx_ex(const kn_trainer *t, const char *src_path, const char *dst_path,
                                     const kn_trainer_export_options *o);

/* ---- data parallelism (runtime/comm.h) ----
 * Each rank runs the same trainer on its shard of every batch. kn_trainer_set_comm broadcasts
 * rank 0's parameters to every rank (so all start equal; call it again after loading a
 * checkpoint on rank 0 alone) and from then on every update first sums the accumulated
 * gradients over the ranks in buckets of about bucket_bytes (0: 25 MiB), divides them by the
 * number of ranks, and only then clips on the global norm and updates: every rank applies the
 * same update to the same weights. On the CPU each bucket's all-reduce starts as soon as the
 * backward has produced it (kn_trainer_set_overlap); a device trainer reduces after the
 * backward, in device memory through NCCL when c has it (kn_comm_on_device), else through the
 * host buckets. c (not owned) must outlive the trainer; NULL goes back to one process. */
typedef struct kn_comm kn_comm;
kn_status *kn_trainer_set_comm(kn_trainer *t, kn_comm *c, size_t bucket_bytes);
/* The number of all-reduce buckets (0 without a communicator of more than one rank). */
int kn_trainer_buckets(const kn_trainer *t);
/* On by default: without gradient accumulation, each bucket's all-reduce starts as soon as the
 * backward has produced its gradients (on the CPU: autograd/trainer_overlap.h; on a device in
 * float32: queued on a communication stream after the gradients' kernels, autograd/
 * trainer_device.c); off: after the whole backward. The same results either way; every rank must
 * choose the same. */
void kn_trainer_set_overlap(kn_trainer *t, bool on);
/* How many bucket all-reduces started while the backward still ran, so far. */
int64_t kn_trainer_overlapped_buckets(const kn_trainer *t);
/* Seconds the device trainer waited for the overlapped communication after the backward, so far
 * (0 on the CPU trainer). */
double kn_trainer_comm_wait_seconds(const kn_trainer *t);
/* The factor the following micro-batches' gradients are multiplied by before they are
 * accumulated (default 1). A rank whose shard of a global batch of m examples holds m_r passes
 * m_r * size / m, so the average over the ranks is the gradient of the whole batch's mean loss
 * when the shards are uneven. */
void kn_trainer_set_grad_weight(kn_trainer *t, double w);
/* A micro-batch with no examples on this rank (the last, short global batch): contributes a
 * zero gradient and takes part in the update (and its all-reduce) as kn_trainer_step does. */
kn_status *kn_trainer_step_empty(kn_trainer *t, bool *updated);

#endif
