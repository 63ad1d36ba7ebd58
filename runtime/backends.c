/* Backend registry: maps a session's device choice to a backend table, and tells every device
 * backend opened so far when model data it may have cached goes away. The executor only ever
 * sees the tables; this is the one place that knows which backends the build contains. */
#include "graph/ops.h"
#include <stdatomic.h>

#ifdef KILN_HAVE_CUDA
kn_status *kn_cuda_backend_open(int device_index, const kn_backend **out); /* kernels/cuda/backend.cu */
void kn_cuda_forget_all(const void *host);
#endif

kn_status *kn_backend_get(kn_device_kind dev, int index, const kn_backend **out) {
    *out = NULL;
    if (dev == KN_DEVICE_CPU) {
        *out = kn_cpu_backend();
        return NULL;
    }
    if (dev == KN_DEVICE_CUDA) {
#ifdef KILN_HAVE_CUDA
        return kn_cuda_backend_open(index, out);
#else
        return kn_error(KN_ERR_NO_DEVICE,
                        "no CUDA device: device cuda:%d requested, but this build of kiln has no CUDA backend", index);
#endif
    }
    return kn_error(KN_ERR_INVALID_ARGUMENT, "unknown device kind %d", (int)dev);
}

void kn_backends_forget(const void *host) {
#ifdef KILN_HAVE_CUDA
    kn_cuda_forget_all(host);
#else
    (void)host;
#endif
}
