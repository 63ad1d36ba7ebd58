/* The trainer's state, shared by the files that implement autograd/trainer.h and
 * autograd/checkpoint.h (the checkpoint reads and restores every field that a resumed run needs:
 * weights, moments, pending accumulated gradients, the step count and the random state). Not
 * part of the public API. */
#ifndef KN_AUTOGRAD_TRAINER_INTERNAL_H
#define KN_AUTOGRAD_TRAINER_INTERNAL_H
#include "autograd/trainer.h"
#include "runtime/comm.h"

typedef struct kn_param {
    int value; /* the graph input it became */
    const char *name;
    int ndim;
    int64_t dims[KN_MAX_DIMS];
    int64_t n;
    float *w, *g, *acc, *m, *v; /* acc == g without accumulation */
    bool decay;
} kn_param;

struct kn_trainer {
    kn_model *m;
    kn_session *s;
    kn_trainer_options o;
    char *no_decay; /* copies of the option strings */
    kn_param *p;
    int n_params;
    int loss;
    kn_named_tensor *in, *out; /* n_params parameters after room for the batch, loss + grads */
    int in_cap;
    double loss_buf;
    int micro;     /* micro-batches accumulated since the last update */
    int64_t steps; /* updates done */
    double grad_norm;
    uint64_t rng; /* kn_trainer_random's state, seeded by options.seed */
    /* What export adds to the source file (autograd/trainer.c, trainer_snapshot): the nodes,
     * constants and outputs the caller added to the loaded graph before kn_trainer_create (a
     * pooling and classification head), copied before the loss and autograd were built on it.
     * NULL when the graph only had the file's nodes. */
    kn_graph *ext;
    /* Data parallelism (kn_trainer_set_comm): the communicator (NULL: one process), the flat
     * buckets the gradients are packed into for the all-reduce (bucket b holds the parameters
     * bucket_first[b] .. bucket_first[b + 1] - 1), and the weight of the next micro-batch's
     * gradient (kn_trainer_set_grad_weight). */
    kn_comm *comm;
    int n_buckets;
    int *bucket_first;
    float **bucket;
    int64_t *bucket_n;
    double grad_weight;
    struct kn_trainer_dev *dev; /* device state (autograd/trainer_device.h); NULL on the CPU */
    /* the all-reduce overlapped with the backward (autograd/trainer_overlap.h; NULL: none), and
     * kn_trainer_set_overlap(false) */
    struct trainer_overlap *ov;
    bool no_overlap;
};

/* Which parameter each value of g is the gradient of, by the "grad:<name>" outputs: (*param_of)[v] =
 * parameter index + 1, 0 for none (replaces *param_of). autograd/trainer_overlap.c */
kn_status *trainer_grad_values(const kn_trainer *t, const kn_graph *g, int **param_of);

#endif
