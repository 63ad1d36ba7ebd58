/* Gradient all-reduce overlapped with the backward pass (data parallelism on the CPU trainer),
 * internal to autograd/trainer.c. A node hook on the trainer's session sees each gradient as the
 * backward produces it, copies it (times the rank's grad weight) into its bucket, and starts the
 * bucket's non-blocking all-reduce once all of its gradients are in, while earlier layers still
 * compute. Buckets start in one fixed order on every rank (MPI's rule): from the last bucket to
 * the first, the order in which a backward produces the gradients of parameters stored in
 * forward order; a bucket complete out of turn waits for those before it in that order. The
 * optimiser step waits for all. The buckets and the summation are the non-overlapped path's, so
 * the results are the same bits. Used when the update follows every micro-batch (no gradient
 * accumulation) on the host; otherwise the trainer reduces after the backward as before. */
#ifndef KN_AUTOGRAD_TRAINER_OVERLAP_H
#define KN_AUTOGRAD_TRAINER_OVERLAP_H
#include "autograd/trainer_internal.h"

typedef struct trainer_overlap trainer_overlap;

/* After the buckets exist (kn_trainer_set_comm): the state and the session's node hook. */
kn_status *overlap_create(kn_trainer *t);
void overlap_free(kn_trainer *t);
/* Whether this trainer reduces through the overlapped path (the same answer on every rank). */
bool overlap_active(const kn_trainer *t);
/* Before the session run of a micro-batch that ends in an update. */
kn_status *overlap_begin(kn_trainer *t);
/* After the run (also a failed one): the gradients no hook saw (taken from the trainer's gradient
 * buffers), the buckets not started yet, and the wait for all. */
kn_status *overlap_finish(kn_trainer *t);
/* In the update: whether the buckets hold this step's reduced sums (then they are read, once). */
bool overlap_take(kn_trainer *t);

#endif
