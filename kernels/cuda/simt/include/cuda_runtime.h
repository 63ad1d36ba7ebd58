/* The CUDA runtime API as kiln's SIMT interpreter provides it (kernels/cuda/simt/runtime.cpp): the
 * subset kiln and its tests call, with CUDA's names, so that the CUDA backend and the GPU tests
 * compile unchanged against it. Device memory is host memory; kernels run on the calling thread
 * when launched. In C++ it also brings in the device-side language (kernels/cuda/simt/simt.h).
 * Never mixed with NVIDIA's headers or libcudart in one binary. */
#ifndef KN_SIM_CUDA_RUNTIME_H
#define KN_SIM_CUDA_RUNTIME_H
#include <stddef.h>
#include <stdint.h>

#define KILN_CUDA_SIM_RUNTIME 1
#define CUDART_VERSION 12000

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidPitchValue = 12,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalState = 401,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorLaunchFailure = 719,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureUnmatched = 903,
    cudaErrorStreamCaptureImplicit = 906,
    cudaErrorStreamCaptureWrongThread = 908,
    cudaErrorUnknown = 999
} cudaError_t;

typedef struct kn_sim_stream *cudaStream_t;
typedef struct kn_sim_event *cudaEvent_t;
typedef struct kn_sim_graph *cudaGraph_t;
typedef struct kn_sim_graph_exec *cudaGraphExec_t;
typedef enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2
} cudaStreamCaptureMode;
typedef enum cudaStreamCaptureStatus {
    cudaStreamCaptureStatusNone = 0,
    cudaStreamCaptureStatusActive = 1,
    cudaStreamCaptureStatusInvalidated = 2
} cudaStreamCaptureStatus;
#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamPerThread ((cudaStream_t)0x2)
#define cudaStreamDefault 0x0
#define cudaStreamNonBlocking 0x1
#define cudaHostAllocDefault 0x0
#define cudaHostAllocPortable 0x1
#define cudaHostAllocMapped 0x2
#define cudaEventDefault 0x0
#define cudaEventDisableTiming 0x2

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;

typedef enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
    cudaFuncAttributePreferredSharedMemoryCarveout = 9
} cudaFuncAttribute;

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem, sharedMemPerBlock, sharedMemPerBlockOptin, sharedMemPerMultiprocessor, memPitch,
        totalConstMem;
    int regsPerBlock, warpSize, maxThreadsPerBlock, maxThreadsDim[3], maxGridSize[3], clockRate, major, minor;
    int multiProcessorCount, maxThreadsPerMultiProcessor, l2CacheSize, memoryBusWidth, pciBusID, pciDeviceID,
        unifiedAddressing;
};
typedef struct cudaDeviceProp cudaDeviceProp;

cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaGetDevice(int *dev);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaDeviceReset(void);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t n);
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s);
cudaError_t cudaFreeAsync(void *p, cudaStream_t s);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                         cudaMemcpyKind kind);
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemset(void *p, int v, size_t n);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamQuery(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaFuncSetAttribute(const void *fn, cudaFuncAttribute attr, int value);
/* Stream capture and CUDA graphs: work queued on a capturing stream (kernel launches, async
 * copies and memsets, cuBLASLt matmuls) is recorded, not run, and replayed in order by
 * cudaGraphLaunch. As on a GPU, a synchronising call while a capture is active (cudaStreamSynchronize
 * or cudaStreamQuery of the capturing stream, cudaDeviceSynchronize, the synchronous cudaMemcpy and
 * cudaMemset, work on the legacy stream) fails and invalidates the capture, whose end then returns
 * cudaErrorStreamCaptureInvalidated. */
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus *status);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);

/* Interpreter-only: whether p lies in memory a kernel may dereference (a cudaMalloc block or
 * pinned host memory), and the block's extent. */
int kn_sim_device_accessible(const void *p, const void **base, size_t *bytes);
/* Interpreter-only: 1 when s is capturing, so launches and library calls record instead of run;
 * kn_sim_capture_record then appends the work (run(ctx) when replayed; del(ctx) when the graph
 * goes) and returns 0, or an error when s is not capturing. */
int kn_sim_stream_capturing(cudaStream_t s);
/* Interpreter-only, with KILN_SIM_STREAMCHECK=1 (else a no-op): a launch of kernel name on s with
 * these pointer arguments, checked against the stream order (runtime.cpp "stream order"). */
cudaError_t kn_sim_stream_launch(cudaStream_t s, const void *const *ptrs, int n, const char *name);
cudaError_t kn_sim_capture_record(cudaStream_t s, cudaError_t (*run)(void *ctx), void *ctx, void (*del)(void *ctx));

#ifdef __cplusplus
}
template <class T> static inline cudaError_t cudaMalloc(T **p, size_t n) { return cudaMalloc((void **)p, n); }
template <class T> static inline cudaError_t cudaMallocHost(T **p, size_t n) { return cudaMallocHost((void **)p, n); }
template <class T> static inline cudaError_t cudaHostAlloc(T **p, size_t n, unsigned f) {
    return cudaHostAlloc((void **)p, n, f);
}
template <class T> static inline cudaError_t cudaFuncSetAttribute(T *fn, cudaFuncAttribute a, int v) {
    return cudaFuncSetAttribute((const void *)fn, a, v);
}
#include "../simt.h"
#endif
#endif
