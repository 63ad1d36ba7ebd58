// CUDA build facts for `kiln --version`: the architectures compiled in and whether a device is
// present at run time. The CUDA backend proper (kernels, device arenas, streams) builds on this.
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" const char *kn_cuda_build_info(void) {
    static thread_local char buf[128];
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) n = 0;
#ifdef KILN_CUDA_SIM
    // kiln-sim: the backend runs on the SIMT interpreter (kernels/cuda/simt), not on a GPU
    snprintf(buf, sizeof buf, "cuda(SIMT interpreter, sm_90)");
#else
    snprintf(buf, sizeof buf, "cuda(sm_90a%s)", n > 0 ? "" : "; no CUDA device");
#endif
    return buf;
}
