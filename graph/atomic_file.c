/* Atomic file replacement (graph/atomic_file.h): mkstemp beside the target, so the final
 * rename stays within one filesystem and is atomic. */
#include "graph/atomic_file.h"
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct kn_atomic_file {
    char *path, *tmp;
    int fd;
    size_t size;
};

kn_status *kn_atomic_open(const char *path, kn_atomic_file **out) {
    *out = NULL;
    KN_CHECK(path && path[0], KN_ERR_INVALID_ARGUMENT, "kn_atomic_open: empty path");
    kn_atomic_file *f = calloc(1, sizeof *f);
    size_t len = strlen(path);
    if (f) f->path = strdup(path);
    if (f) f->tmp = malloc(len + 12);
    if (!f || !f->path || !f->tmp) {
        if (f) free(f->path);
        free(f);
        return KN_OOM(len);
    }
    snprintf(f->tmp, len + 12, "%s.tmp.XXXXXX", path);
    f->fd = mkstemp(f->tmp);
    if (f->fd < 0) {
        kn_status *st = kn_error(KN_ERR_IO, "%s: cannot create a temporary beside it: %s", path, strerror(errno));
        free(f->tmp);
        free(f->path);
        free(f);
        return st;
    }
    /* mkstemp makes 0600; a model or checkpoint is an ordinary readable file (reading the umask
     * would mean setting it, which is process-wide state other threads see) */
    (void)fchmod(f->fd, 0644);
    *out = f;
    return NULL;
}

kn_status *kn_atomic_write(kn_atomic_file *f, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(f->fd, c, n > ((size_t)1 << 30) ? (size_t)1 << 30 : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return kn_error(KN_ERR_IO, "%s: write failed after %zu bytes: %s", f->path, f->size,
                            w < 0 ? strerror(errno) : "no space");
        c += w;
        n -= (size_t)w;
        f->size += (size_t)w;
    }
    return NULL;
}

size_t kn_atomic_size(const kn_atomic_file *f) { return f->size; }

void kn_atomic_abort(kn_atomic_file *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    unlink(f->tmp);
    free(f->tmp);
    free(f->path);
    free(f);
}

kn_status *kn_atomic_commit(kn_atomic_file *f) {
    kn_status *st = NULL;
    if (fsync(f->fd) != 0) st = kn_error(KN_ERR_IO, "%s: fsync failed: %s", f->path, strerror(errno));
    int rc = close(f->fd);
    f->fd = -1;
    if (!st && rc != 0) st = kn_error(KN_ERR_IO, "%s: close failed: %s", f->path, strerror(errno));
    if (!st && rename(f->tmp, f->path) != 0)
        st = kn_error(KN_ERR_IO, "%s: cannot rename the temporary over it: %s", f->path, strerror(errno));
    if (st) {
        kn_atomic_abort(f);
        return st;
    }
    /* the rename itself is durable once the folder is */
    char *d = strdup(f->path);
    if (d) {
        int dfd = open(dirname(d), O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        free(d);
    }
    free(f->tmp);
    free(f->path);
    free(f);
    return NULL;
}
