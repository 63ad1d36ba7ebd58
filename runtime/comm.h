/* The communicator of data-parallel training: rank, size and the few collectives a trainer
 * needs (sum all-reduce of float32 buffers, broadcast, barrier, all-gather of small host
 * values), over MPI when the process was launched by mpirun/srun and kiln was built with MPI,
 * and a single-process implementation otherwise (every collective is then the identity).
 *
 * Every collective of the MPI implementation is non-blocking underneath and polled against a
 * deadline (kn_comm_options.timeout_s): a peer that died or hangs makes the collective fail
 * with a message naming the rank it waits for, instead of blocking forever. For that, each
 * collective is preceded by an arrival note sent to every peer (a few bytes each), so a rank
 * that times out knows which peers never reached the collective. After such a failure the
 * communicator is unusable; kn_comm_abort ends the whole job (mpirun then stops every rank).
 *
 * Without MPI, a torchrun-style environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) gives
 * rank and size, and the host collectives go over TCP sockets to rank 0 (runtime/comm_tcp.h);
 * its rendezvous and every transfer have the same deadline and name the rank that did not come.
 *
 * Backend "nccl" adds NCCL on top of either host transport, for device buffers (the
 * kn_comm_device_* collectives, enqueued on a CUDA stream): rank 0 creates NCCL's unique id, the
 * host transport broadcasts it, and each process takes the GPU its LOCAL_RANK names (under
 * mpirun: OMPI_COMM_WORLD_LOCAL_RANK / MPI_LOCALRANKID / SLURM_LOCALID). The host collectives
 * stay on the host transport. */
#ifndef KN_RUNTIME_COMM_H
#define KN_RUNTIME_COMM_H
#include "runtime/kiln.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kn_comm kn_comm;

typedef struct kn_comm_options {
    /* Seconds a collective may wait for its peers; <= 0: 300. */
    double timeout_s;
    /* "auto" or NULL: MPI when the environment says mpirun/srun launched this process (and kiln
     * was built with MPI), else TCP when WORLD_SIZE > 1 (torchrun-style), else a single process;
     * "single"; "mpi" (fails without MPI); "tcp"; "nccl": NCCL for device buffers over the host
     * transport "auto" would choose (fails in a build without NCCL). */
    const char *backend;
    /* A device run: with "auto", NCCL when there is more than one rank and this build has it
     * (else the device trainer stages its gradients through the host collectives). */
    bool device;
} kn_comm_options;
void kn_comm_options_init(kn_comm_options *o);

/* Fails when the environment shows a multi-process launch that this build cannot join (mpirun
 * without MPI support, WORLD_SIZE > 1 without MASTER_ADDR/MASTER_PORT), so N copies never train
 * on their own and race on the same output. MPI is initialised here and finalised by
 * kn_comm_free. */
kn_status *kn_comm_init(const kn_comm_options *o, kn_comm **out);
/* Finalises MPI; after a failed collective it aborts the job instead (MPI cannot finalise with
 * a collective still pending). */
void kn_comm_free(kn_comm *c);
/* Ends every rank of the job with code (MPI_Abort); a single process just exits. */
void kn_comm_abort(kn_comm *c, int code);

int kn_comm_rank(const kn_comm *c);
int kn_comm_size(const kn_comm *c);
/* "single", "mpi" or "tcp", with "nccl/" in front when device collectives use NCCL */
const char *kn_comm_backend(const kn_comm *c);
/* The rank on this node (LOCAL_RANK, or the launcher's equivalent; else the rank): the GPU index
 * of a device run (one process per GPU). */
int kn_comm_local_rank(const kn_comm *c);
/* Whether the kn_comm_device_* collectives work (NCCL); otherwise a device trainer stages its
 * gradients through host memory and the host collectives. */
bool kn_comm_on_device(const kn_comm *c);
/* Whether a collective has failed (timeout, MPI error): the communicator is then unusable. */
bool kn_comm_failed(const kn_comm *c);

/* bufs[i] (n[i] floats each) replaced by their element-wise sum over the ranks. All k buffers
 * are reduced at once (one non-blocking all-reduce each, all in flight together): a trainer
 * passes its gradient buckets. */
kn_status *kn_comm_allreduce_sum_f32(kn_comm *c, float *const *bufs, const int64_t *n, int k);
/* The same k all-reduces started one by one, so that a trainer can start a bucket as soon as the
 * backward has produced it: _begin(k), then _start for i = 0 .. k - 1 in this order on every
 * rank (MPI's rule for non-blocking collectives), then _wait (the deadline applies there).
 * _progress lets MPI move the started ones along meanwhile. Over TCP each start completes at
 * once. */
kn_status *kn_comm_allreduce_begin(kn_comm *c, int k);
kn_status *kn_comm_allreduce_start(kn_comm *c, int i, float *buf, int64_t n);
void kn_comm_progress(kn_comm *c);
kn_status *kn_comm_allreduce_wait(kn_comm *c);
/* buf (bytes) from root to every rank. */
kn_status *kn_comm_broadcast(kn_comm *c, void *buf, size_t bytes, int root);
kn_status *kn_comm_barrier(kn_comm *c);
/* Each rank's send (bytes) into recv[rank * bytes ...]; recv holds size * bytes. */
kn_status *kn_comm_allgather(kn_comm *c, const void *send, size_t bytes, void *recv);

/* The same collectives on device buffers (NCCL), enqueued on stream (a cudaStream_t; NULL: the
 * legacy default stream) in call order; they return once enqueued. kn_comm_device_wait waits
 * for the stream against the deadline (a timeout aborts NCCL and fails the communicator). */
kn_status *kn_comm_device_allreduce_sum_f32(kn_comm *c, float *const *bufs, const int64_t *n, int k, void *stream);
kn_status *kn_comm_device_broadcast(kn_comm *c, void *buf, size_t bytes, int root, void *stream);
kn_status *kn_comm_device_allgather(kn_comm *c, const void *send, size_t bytes, void *recv, void *stream);
kn_status *kn_comm_device_wait(kn_comm *c, void *stream);

#endif
