/* Trainer checkpoints: everything a run needs to continue as if it had not stopped (weights,
 * optimiser moments, gradients accumulated towards the next update, the step count that drives
 * the schedule and Adam's bias correction, the trainer's random state) plus the caller's own
 * state as JSON (a CLI's epoch, data position, shuffle seed).
 *
 * The file is safetensors (so `safetensors.safe_open` reads it): an 8-byte little-endian
 * header length, a JSON header, then the tensors' bytes. The header maps "param/NAME",
 * "adam_m/NAME" (SGD: the momentum buffer), "adam_v/NAME" and, with accumulation, "grad_acc/NAME"
 * to {"dtype":"F32","shape":[...],"data_offsets":[begin,end]} (offsets into the data), and its
 * "__metadata__" holds strings: format "kiln-checkpoint", version "1", optimizer
 * (sgd|adam|adamw), step, micro (micro-batches accumulated since the last update), accumulate,
 * rng (16 hex digits), checksum (FNV-1a 64 of the data bytes, 16 hex digits), extra (the
 * caller's JSON) and, for a mixed-precision (fp16/bf16) device trainer, the dynamic loss scale:
 * loss_scale (%.9g, exact for a float32), growth_tracker (good micro-batches since the last
 * change) and skipped (overflowed micro-batches), restored on load so a resumed run takes the
 * steps the uninterrupted one would (a file without them leaves the trainer's initial scale). Tensors are little-endian float32 in that order, back to back from a 64-byte
 * aligned start (the header is padded with spaces). */
#ifndef KN_AUTOGRAD_CHECKPOINT_H
#define KN_AUTOGRAD_CHECKPOINT_H
#include "autograd/trainer.h"

/* Writes t's state and extra_json (NULL: none; it is stored as given, not parsed) to path
 * atomically (a temporary beside it, fsync'd, renamed): on failure the previous file stays. */
kn_status *kn_trainer_checkpoint_save(const kn_trainer *t, const char *path, const char *extra_json);

/* Restores a checkpoint into t, a trainer created as the saved one was (same model, loss,
 * trainable parameters and optimiser). Checks the file whole before changing anything: the
 * checksum, the format, the optimiser kind, and that its parameters are t's by name and shape,
 * failing with a message that names every missing, unexpected or differently shaped parameter.
 * *extra_json (may be NULL) receives the caller's JSON, malloc'd (NULL when none was saved). */
kn_status *kn_trainer_checkpoint_load(kn_trainer *t, const char *path, char **extra_json);

#endif
