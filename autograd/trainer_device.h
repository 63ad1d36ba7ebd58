/* The trainer on a device backend (kn_trainer_options.device = KN_DEVICE_CUDA), internal to
 * autograd/trainer.c and autograd/checkpoint.c: parameters, gradients, accumulated gradients and
 * moments live in device buffers, the session reads the parameters where they are
 * (kn_session_run_device) and writes the gradients into device buffers, and the update runs on
 * the device (kernels/cuda/kn_train_cuda.h). The host copies in kn_param (w, m, v, acc) are
 * refreshed only when asked (export, checkpoint, kn_trainer_param). With precision FP16/BF16 the
 * graph is rewritten before autograd (trainer_lowp_graph): the parameters become low-precision
 * inputs fed from copies of the float32 masters, and the loss is multiplied by a dynamic loss
 * scale, as torch.cuda.amp's GradScaler does; with options.autocast only the low-precision op
 * list runs in that type (trainer_device.c, lowp_autocast) and parameters and gradients stay
 * float32. Compiled once per backend variant (like
 * runtime/backends.c): without CUDA every function reports KN_ERR_NO_DEVICE. */
#ifndef KN_AUTOGRAD_TRAINER_DEVICE_H
#define KN_AUTOGRAD_TRAINER_DEVICE_H
#include "autograd/trainer_internal.h"

/* Allocates the device state from the host parameters (after the session exists). */
kn_status *trainer_dev_create(kn_trainer *t);
void trainer_dev_free(kn_trainer *t);
/* kn_trainer_step and kn_trainer_forward once bind_inputs filled t->in (batch, then params). */
kn_status *trainer_dev_step(kn_trainer *t, int n_batch, double *loss, bool *updated);
kn_status *trainer_dev_forward(kn_trainer *t, int n_batch, kn_named_tensor *outputs, int n_outputs);
/* kn_trainer_step_empty: a rank without examples in this global batch joins the update. */
kn_status *trainer_dev_step_empty(kn_trainer *t, bool *updated);
/* Device state -> the host copies (no-op when they are current or there is no device state). */
kn_status *trainer_dev_download(const kn_trainer *t);
/* The host copies (changed by the caller, a loaded checkpoint) -> the device state. */
kn_status *trainer_dev_upload(kn_trainer *t);
/* Download, and upload again before the next step (the caller got writable host weights). */
kn_status *trainer_dev_expose(const kn_trainer *t);
/* The dynamic loss scale's state (GradScaler's scale and growth tracker) and the skipped
 * micro-batches, for checkpoints: *on is false (and nothing else is written) without mixed
 * precision. Setting it is a no-op then. */
kn_status *trainer_dev_amp_state(const kn_trainer *t, bool *on, float *scale, int *tracker, int64_t *skipped);
kn_status *trainer_dev_set_amp_state(kn_trainer *t, float scale, int tracker, int64_t skipped);
/* Before autograd: for FP16/BF16, rewrites the graph in that precision; *loss becomes the float32
 * loss the step reports and *dloss the scaled loss to differentiate. FP32: nothing. */
/* Data parallelism overlapped with the backward: the bucket all-reduces started while the
 * backward ran (queued on the communication stream with NCCL, started on the host communicator
 * otherwise) and the seconds the host waited for the communication after the backward, since the
 * trainer was made (0 without a device trainer). */
int64_t trainer_dev_overlapped(const kn_trainer *t);
double trainer_dev_comm_wait(const kn_trainer *t);
kn_status *trainer_lowp_graph(kn_trainer *t, kn_graph *g, int *loss, int *dloss);

#endif
