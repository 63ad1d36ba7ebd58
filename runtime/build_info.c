/* What this build of kiln contains: backends and the CPU features found at run time. */
#include "kiln.h"
#include <stdio.h>

#ifdef KILN_HAVE_CUDA
const char *kn_cuda_build_info(void); /* kernels/cuda/cuda_info.cu */
#endif

const char *kn_build_info(void) {
    static _Thread_local char buf[256]; /* per thread: no shared mutable state */
    int off = snprintf(buf, sizeof buf, "cpu(");
    int first = 1;
    __builtin_cpu_init();
#define KN_FEAT(name) \
    if (__builtin_cpu_supports(name)) { \
        off += snprintf(buf + off, sizeof buf - off, "%s%s", first ? "" : ",", name); \
        first = 0; \
    }
    KN_FEAT("sse4.2")
    KN_FEAT("avx2")
    KN_FEAT("fma")
    KN_FEAT("avx512f")
    KN_FEAT("avx512bw")
    KN_FEAT("avx512vl")
#undef KN_FEAT
    off += snprintf(buf + off, sizeof buf - off, ")");
#ifdef KILN_HAVE_CUDA
    off += snprintf(buf + off, sizeof buf - off, " %s", kn_cuda_build_info());
#endif
#ifdef KILN_HAVE_MPI
    /* the communicator of data-parallel training (runtime/comm.c) */
    snprintf(buf + off, sizeof buf - off, " mpi");
#endif
    return buf;
}
