// Shared by the CUDA backend's files: the per-run stream object, error helpers, launch geometry,
// element-type traits and the shape metadata kernels take by value (no device allocations for
// shapes: up to KN_MAX_DIMS dims travel in kernel parameters).
#ifndef KN_CUDA_COMMON_H
#define KN_CUDA_COMMON_H
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cublasLt.h>
#include "kernels/cuda/kn_device.h"
#include <stdint.h>
extern "C" {
#include "graph/ops.h"
#include "runtime/core/status.h"
}

struct kn_cuda_dev;

#define KN_CUDA_ERR_NODES 64

// One queue per run: its stream, a cuBLASLt handle and workspace for it alone, and pinned host
// staging for copies between pageable host memory and the device. Pooled per device.
struct kn_cuda_stream {
    cudaStream_t s;
    cublasLtHandle_t lt;
    void *ws;
    size_t ws_bytes; // cuBLASLt workspace
    char *pinned;
    size_t pinned_cap, pinned_used;
    // Bad input found inside a kernel (a Gather index out of range) cannot fail the launch: the
    // kernel stores 1 + its slot in err_nodes here, and stream_end turns that into the run's error.
    int *dev_err;
    const kn_node *err_nodes[KN_CUDA_ERR_NODES];
    int n_err_nodes;
    kn_cuda_dev *dev;
    kn_cuda_stream *next; // free list
    // While recording a CUDA graph (backend.cu graph_begin): host copies are staged in the
    // recording's own pinned buffer, never drained or reused, and listed for graph_pin. held: a
    // graph owns the stream, so stream_end does not pool it.
    struct kn_cuda_graph *capture;
    bool held;
    // Copies to the host a run's end completes (kn_backend.copy_to_host_later): queued into the
    // pinned staging, copied on to their host addresses after stream_end's one wait, so a run
    // waits once, not once per output. err_pin: where that wait brings the error word.
    struct kn_cuda_later *later;
    int n_later, cap_later;
    int *err_pin;
    // Staging outgrown while copies may still read it: kept (the stream's lifetime; each
    // at most half the next) instead of freed, as cudaFreeHost would wait for the device.
    char **retired;
    int n_retired;
};
struct kn_cuda_later {
    void *dst;
    const char *pin;
    size_t n;
};

#define KN_CUDA_WS_BYTES ((size_t)32 << 20)

static inline kn_cuda_stream *kn_cuda_st(kn_exec_ctx *ctx) { return (kn_cuda_stream *)ctx->stream; }
static inline cudaStream_t kn_cuda_s(kn_exec_ctx *ctx) { return ((kn_cuda_stream *)ctx->stream)->s; }

// The code a checking kernel of `node` stores in dev_err (first failure wins): 1 + its slot, or
// KN_CUDA_ERR_NODES + 1 once the slots are used up (the error then names no node).
static inline int kn_cuda_err_code(kn_exec_ctx *ctx, const kn_node *node) {
    kn_cuda_stream *s = kn_cuda_st(ctx);
    for (int i = 0; i < s->n_err_nodes; i++)
        if (s->err_nodes[i] == node) return i + 1;
    if (s->n_err_nodes == KN_CUDA_ERR_NODES) return KN_CUDA_ERR_NODES + 1;
    s->err_nodes[s->n_err_nodes++] = node;
    return s->n_err_nodes;
}

// A kernel of the CUDA backend, with the same contract as a CPU kernel (graph/ops.h) but device
// pointers in every tensor except the inputs its host_inputs mask keeps on the host.
#define KN_CUDA_KERNEL(op) \
    kn_status *kn_cuda_##op(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in, \
                            kn_tensor *const *out, int n_out)

// Error from a CUDA runtime call or a launch (cudaGetLastError), naming the op.
kn_status *kn_cuda_err(cudaError_t e, const kn_node *n, const char *what);
#define KN_CUDA_TRY(call, node, what) \
    do { \
        cudaError_t kn__e = (call); \
        if (kn__e != cudaSuccess) return kn_cuda_err(kn__e, (node), (what)); \
    } while (0)
#define KN_CUDA_LAUNCHED(node, what) KN_CUDA_TRY(cudaGetLastError(), (node), (what))

// Grid for a grid-stride loop over n items.
static inline unsigned kn_cuda_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > (1 << 20)) b = 1 << 20;
    return (unsigned)b;
}
#define KN_GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

// Element traits: loads into the type arithmetic is done in (float for the 16-bit floats).
template <class T> struct kn_num {
    typedef T acc;
    __device__ static acc ld(T v) { return v; }
    __device__ static T st(acc v) { return v; }
};
template <> struct kn_num<__half> {
    typedef float acc;
    __device__ static float ld(__half v) { return __half2float(v); }
    __device__ static __half st(float v) { return __float2half_rn(v); }
};
template <> struct kn_num<__nv_bfloat16> {
    typedef float acc;
    __device__ static float ld(__nv_bfloat16 v) { return __bfloat162float(v); }
    __device__ static __nv_bfloat16 st(float v) { return __float2bfloat16_rn(v); }
};

// The sum of v over the block (every thread gets it), by warp shuffles then one warp over the
// warps' sums; sh holds 32 floats of shared memory. Every thread of the block must call it.
__device__ static inline float kn_cuda_block_sum(float v, KN_SHARED_PTR(float) sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = threadIdx.x < nw ? sh[threadIdx.x] : 0.0f;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}

// Output dims plus, per operand, element strides with 0 on broadcast dimensions (numpy rules,
// operands right-aligned). Passed by value to kernels.
struct kn_bcast {
    int nd;
    int64_t dims[KN_MAX_DIMS];
    int64_t st[3][KN_MAX_DIMS];
};
void kn_cuda_bcast_init(kn_bcast *b, const kn_tensor *out, const kn_tensor *const *ops, int n_ops);
// Offset of output element i in operand k.
__device__ static inline int64_t kn_bcast_off(const kn_bcast &b, int k, int64_t i) {
    int64_t off = 0;
    for (int d = b.nd - 1; d >= 0; d--) {
        int64_t c = i % b.dims[d];
        i /= b.dims[d];
        off += c * b.st[k][d];
    }
    return off;
}

// dst (contiguous, dims) <- src at element strides sst, element size es: Transpose, Expand, Slice, Gemm's C.
kn_status *kn_cuda_strided_copy(const kn_node *n, void *dst, const void *src, size_t es, int nd, const int64_t *dims,
                                const int64_t *sst, cudaStream_t s);

// y = gelu(x + bias[i % N]) (bias optional, 1-D over x's last dim; tf: the tanh form), y may be x:
// the Gelu family's kernel (contrib.cu), also GemmFastGelu's when no cuBLASLt epilogue serves it.
kn_status *kn_cuda_gelu_bias(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *x, const kn_tensor *bias,
                             kn_tensor *y, bool tf);

// Every kernel and supports predicate named by the op list (cuda_ops.def); strong references, so
// a row whose kernel is missing does not link.
#define KN_CUDA_OP(op, sup, host) \
    KN_CUDA_KERNEL(op); \
    bool kn_cuda_##sup##_supports(const kn_node *n, const kn_tensor *const *in, int n_in);
#include "kernels/cuda/cuda_ops.def"
#undef KN_CUDA_OP

static inline bool kn_cuda_float(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_BF16; }

// kn_backend.greedy (greedy.cu): text generation's argmax per row on the device, ids to the host.
kn_status *kn_cuda_greedy(const kn_backend *b, float *logits, int rows, const int64_t *row_off, int64_t vocab,
                          const int32_t *pen_ids, const int32_t *pen_off, float penalty, int32_t *ids);
kn_status *kn_cuda_topk(const kn_backend *b, float *logits, int rows, const int64_t *row_off, int64_t vocab,
                        const int32_t *pen_ids, const int32_t *pen_off, float penalty, int k, float *vals, int32_t *ids,
                        uint8_t *nan);

#endif
