/* Stream order on the SIMT interpreter: with KILN_SIM_STREAMCHECK=1 (kernels/cuda/simt/runtime.cpp,
 * "stream order") a copy, memset or launch on one stream that touches bytes written on another
 * stream with no event wait or synchronisation between them fails with cudaErrorIllegalState, and
 * the waits CUDA documents make it pass: cudaEventRecord + cudaStreamWaitEvent (covering the work
 * recorded before the event only), cudaStreamSynchronize, a completed cudaEventQuery. Then the
 * device trainer's communication stream (kn_cuda_side_*, kernels/cuda/kn_train_cuda.h): a
 * gradient copy queued there after a kernel on a run's stream is refused without
 * kn_cuda_side_after and correct with it; the event validity rules (NULL handles, elapsed time of
 * an event without timing). */
#include "kernels/cuda/kn_train_cuda.h"
#include "runtime/executor.h"
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures, checks;
#define CHECK(c, ...) \
    do { \
        checks++; \
        if (!(c)) { \
            failures++; \
            printf("FAIL line %d: ", __LINE__); \
            printf(__VA_ARGS__); \
            printf("\n"); \
        } \
    } while (0)

static void raw_api(void) {
    cudaStream_t a, b;
    cudaEvent_t ev, nt;
    CHECK(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking) == cudaSuccess, "stream a");
    CHECK(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking) == cudaSuccess, "stream b");
    CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) == cudaSuccess, "event");
    float *d = NULL, h[64];
    CHECK(cudaMalloc((void **)&d, sizeof h) == cudaSuccess, "cudaMalloc");
    CHECK(cudaMemset(d, 0, sizeof h) == cudaSuccess, "cudaMemset (legacy stream: synchronous)");
    /* a write on a, a read on b with no wait: refused */
    CHECK(cudaMemsetAsync(d, 0x3f, sizeof h, a) == cudaSuccess, "memset on a");
    cudaError_t e = cudaMemcpyAsync(h, d + 8, 16, cudaMemcpyDeviceToHost, b);
    CHECK(e == cudaErrorIllegalState, "a read on b of a's write without a wait: %s", cudaGetErrorString(e));
    const char *msg = cudaGetErrorString(cudaGetLastError());
    CHECK(strstr(msg, "no wait between them") != NULL, "the message names the missing wait: %s", msg);
    /* the event recorded after the write, waited for by b: in order */
    CHECK(cudaEventRecord(ev, a) == cudaSuccess, "record");
    CHECK(cudaStreamWaitEvent(b, ev, 0) == cudaSuccess, "wait");
    CHECK(cudaMemcpyAsync(h, d, sizeof h, cudaMemcpyDeviceToHost, b) == cudaSuccess, "read after the wait");
    CHECK(h[0] == h[63] && h[0] > 0.7f && h[0] < 0.75f, "the bytes read (%g)", (double)h[0]);
    /* a later write on a is not covered by the old wait */
    CHECK(cudaMemsetAsync(d, 0, 4, a) == cudaSuccess, "second memset on a");
    e = cudaMemcpyAsync(h, d, sizeof h, cudaMemcpyDeviceToHost, b);
    CHECK(e == cudaErrorIllegalState, "the old wait does not cover a later write: %s", cudaGetErrorString(e));
    cudaGetLastError();
    /* a write on b over bytes a wrote (write after write): refused too */
    e = cudaMemsetAsync(d, 1, 4, b);
    CHECK(e == cudaErrorIllegalState, "write after write on another stream: %s", cudaGetErrorString(e));
    cudaGetLastError();
    /* the host synchronised with a: in order */
    CHECK(cudaStreamSynchronize(a) == cudaSuccess, "synchronize a");
    CHECK(cudaMemcpyAsync(h, d, sizeof h, cudaMemcpyDeviceToHost, b) == cudaSuccess, "read after the synchronisation");
    /* a completed query of an event recorded on a orders what follows it */
    CHECK(cudaMemsetAsync(d, 0, 4, a) == cudaSuccess, "third memset on a");
    CHECK(cudaEventRecord(ev, a) == cudaSuccess && cudaEventQuery(ev) == cudaSuccess, "record + query");
    CHECK(cudaMemcpyAsync(h, d, 4, cudaMemcpyDeviceToHost, b) == cudaSuccess, "read after a completed query");
    /* event handles */
    CHECK(cudaEventRecord(NULL, a) == cudaErrorInvalidResourceHandle, "record of a NULL event");
    CHECK(cudaStreamWaitEvent(b, NULL, 0) == cudaErrorInvalidResourceHandle, "wait for a NULL event");
    cudaGetLastError();
    float ms = 0;
    CHECK(cudaEventCreate(&nt) == cudaSuccess, "timed event");
    CHECK(cudaEventElapsedTime(&ms, nt, ev) == cudaErrorInvalidResourceHandle, "elapsed time without timing");
    CHECK(cudaEventElapsedTime(&ms, nt, nt) == cudaErrorInvalidResourceHandle, "elapsed time of an unrecorded event");
    CHECK(cudaEventRecord(nt, a) == cudaSuccess && cudaEventElapsedTime(&ms, nt, nt) == cudaSuccess && ms == 0,
          "elapsed time of a recorded timed event");
    cudaGetLastError();
    cudaEventDestroy(nt);
    cudaEventDestroy(ev);
    cudaFree(d);
    cudaStreamDestroy(a);
    cudaStreamDestroy(b);
}

static void side_stream(const kn_backend *cu) {
    enum { N = 1000 };
    float host[N], back[N];
    for (int i = 0; i < N; i++) host[i] = (float)i * 0.5f - 3.0f;
    float *g = cu->alloc(cu, sizeof host);
    CHECK(g != NULL, "alloc");
    if (!g) return;
    kn_status *st = cu->copy(cu, g, KN_DEVICE_CUDA, host, KN_DEVICE_CPU, sizeof host);
    CHECK(!st, "upload");
    kn_status_free(st);
    kn_cuda_side *side = NULL;
    st = kn_cuda_side_create(cu, 2, &side);
    CHECK(!st && side, "kn_cuda_side_create");
    kn_status_free(st);
    if (!side) return;
    void *run = NULL;
    st = cu->stream_begin(cu, &run);
    CHECK(!st, "stream_begin");
    kn_status_free(st);
    /* a kernel on the run's stream writes g; the side stream copies it without the event: refused */
    st = kn_cuda_grad_scale(cu, run, g, N, 2.0);
    CHECK(!st, "grad_scale on the run's stream");
    kn_status_free(st);
    st = kn_cuda_side_copy(side, back, KN_DEVICE_CPU, g, KN_DEVICE_CUDA, sizeof back);
    CHECK(st != NULL, "a side copy of a kernel's output without kn_cuda_side_after is refused");
    if (st) CHECK(strstr(kn_status_message(st), "no wait") != NULL, "the message: %s", kn_status_message(st));
    kn_status_free(st);
    cudaGetLastError();
    /* ordered after the run's stream: copied, its event completes, the values are the kernel's */
    st = kn_cuda_side_after(side, run);
    if (!st) st = kn_cuda_side_copy(side, back, KN_DEVICE_CPU, g, KN_DEVICE_CUDA, sizeof back);
    if (!st) st = kn_cuda_side_record(side, 1);
    bool done = false;
    if (!st) st = kn_cuda_side_query(side, 1, &done);
    CHECK(!st && done, "ordered side copy: %s", st ? kn_status_message(st) : "not done");
    kn_status_free(st);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += back[i] != 2.0f * host[i];
    CHECK(bad == 0, "%d of %d copied values differ from the kernel's", bad, N);
    st = kn_cuda_side_query(side, 2, &done);
    CHECK(st != NULL, "an event index out of range is refused");
    kn_status_free(st);
    st = cu->stream_end(cu, run);
    CHECK(!st, "stream_end");
    kn_status_free(st);
    kn_cuda_side_free(side);
    cu->free(cu, g);
}

int main(void) {
    setenv("KILN_SIM_STREAMCHECK", "1", 1);
    raw_api();
    const kn_backend *cu = NULL;
    kn_status *st = kn_backend_get(KN_DEVICE_CUDA, 0, &cu);
    CHECK(!st && cu, "the CUDA backend");
    kn_status_free(st);
    if (cu) side_stream(cu);
    printf("%d checks, %d failures\n%s\n", checks, failures, failures ? "FAIL" : "ok");
    return failures ? 1 : 0;
}
