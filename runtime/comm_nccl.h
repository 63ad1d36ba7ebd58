/* The NCCL part of the communicator (runtime/comm.h), internal to runtime/comm*.c: only the
 * calls into NCCL and the CUDA runtime. Everything around them (which rank creates the unique id,
 * its broadcast over MPI or the TCP rendezvous, the GPU chosen by LOCAL_RANK, bucketing, the
 * refusals) lives in runtime/comm.c, shared with the MPI and TCP paths and tested by their tests
 * on machines without a GPU. Compiled for real when the CUDA build finds NCCL (KILN_HAVE_NCCL,
 * set on this one file); otherwise every function reports that this build has no NCCL.
 *
 * The communicator is non-blocking (ncclConfig_t.blocking = 0): initialisation and collectives
 * are polled with ncclCommGetAsyncError and cudaStreamQuery against the deadline, and aborted
 * when it passes, so a dead or hung peer ends in an error instead of a hang. */
#ifndef KN_RUNTIME_COMM_NCCL_H
#define KN_RUNTIME_COMM_NCCL_H
#include "runtime/kiln.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define COMM_NCCL_ID_BYTES 128 /* sizeof(ncclUniqueId) */

typedef struct comm_nccl comm_nccl;

/* Whether this build has NCCL (the functions below then work on a GPU). */
bool comm_nccl_built(void);
/* Rank 0's id of a new clique, to broadcast to the others. Selects device first (the id is
 * created on the caller's current device). */
kn_status *comm_nccl_unique_id(int device, unsigned char id[COMM_NCCL_ID_BYTES]);
kn_status *comm_nccl_create(const unsigned char id[COMM_NCCL_ID_BYTES], int rank, int size, int device,
                            double timeout_s, comm_nccl **out);
void comm_nccl_free(comm_nccl *n);
/* Enqueued on stream (a cudaStream_t; NULL: the legacy default stream); they return once
 * enqueued: comm_nccl_wait waits for them. bufs, send and recv are device pointers. */
kn_status *comm_nccl_allreduce_sum_f32(comm_nccl *n, float *const *bufs, const int64_t *cnt, int k, void *stream);
kn_status *comm_nccl_broadcast(comm_nccl *n, void *buf, size_t bytes, int root, void *stream);
kn_status *comm_nccl_allgather(comm_nccl *n, const void *send, size_t bytes, void *recv, void *stream);
kn_status *comm_nccl_wait(comm_nccl *n, void *stream, const char *what);
bool comm_nccl_failed(const comm_nccl *n);

#endif
