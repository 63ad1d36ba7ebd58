/* The TCP transport of the communicator (runtime/comm.h), internal to runtime/comm*.c: the
 * rendezvous of a torchrun-style launch (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT: rank 0
 * listens on the port, the others connect to it and introduce themselves) and the host
 * collectives over the star it leaves (every rank holds one socket to rank 0, rank 0 one to each
 * peer). Rank 0 sums the all-reduce in rank order, so every rank gets the same bits. It carries
 * what MPI would otherwise carry: NCCL's unique id, the small host collectives of `kiln train`,
 * and the gradients of a CPU run launched without MPI.
 *
 * Every send and receive polls against the deadline (timeout_s), and the messages name the rank
 * that did not come: at the rendezvous the ranks that never connected (or rank 0, unreachable),
 * in a collective the rank that closed its socket (dead) or stayed silent (hung). Rank 0 passes
 * its failure on to the other ranks, which report it instead of timing out in turn. */
#ifndef KN_RUNTIME_COMM_TCP_H
#define KN_RUNTIME_COMM_TCP_H
#include "runtime/kiln.h"
#include <stddef.h>
#include <stdint.h>

typedef struct comm_tcp comm_tcp;

/* Rank 0 listens on port (all interfaces), the others connect to addr:port until the deadline.
 * Returns once every rank of size is connected (rank 0) or accepted (the others). */
kn_status *comm_tcp_connect(const char *addr, int port, int rank, int size, double timeout_s, comm_tcp **out);
void comm_tcp_free(comm_tcp *t);

kn_status *comm_tcp_allreduce_sum_f32(comm_tcp *t, float *const *bufs, const int64_t *n, int k);
kn_status *comm_tcp_broadcast(comm_tcp *t, void *buf, size_t bytes, int root);
kn_status *comm_tcp_allgather(comm_tcp *t, const void *send, size_t bytes, void *recv);
kn_status *comm_tcp_barrier(comm_tcp *t);

#endif
