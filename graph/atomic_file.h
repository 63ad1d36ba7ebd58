/* Files that appear whole or not at all: written under a temporary name in the target's folder,
 * fsync'd, then renamed over the target (and the folder fsync'd), so a crash, a full disk or any
 * other failure leaves the previous file as it was and no temporary behind. Used by the ONNX
 * export (graph/onnx_save.c) and the trainer's checkpoints (autograd/checkpoint.c). */
#ifndef KN_GRAPH_ATOMIC_FILE_H
#define KN_GRAPH_ATOMIC_FILE_H
#include "runtime/core/status.h"
#include <stddef.h>

typedef struct kn_atomic_file kn_atomic_file;

/* Creates the temporary (path + ".tmp.XXXXXX", mode 0644). */
kn_status *kn_atomic_open(const char *path, kn_atomic_file **out);
/* Appends n bytes; errors (EFBIG, ENOSPC) name the target. */
kn_status *kn_atomic_write(kn_atomic_file *f, const void *p, size_t n);
/* Bytes written so far. */
size_t kn_atomic_size(const kn_atomic_file *f);
/* Flushes, fsyncs, closes and renames the temporary over the target; frees f whatever happens
 * (on failure the temporary is removed). */
kn_status *kn_atomic_commit(kn_atomic_file *f);
/* Closes and removes the temporary and frees f (NULL: nothing). */
void kn_atomic_abort(kn_atomic_file *f);

#endif
