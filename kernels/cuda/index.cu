// Index and selection ops on the device: ArgMax/ArgMin, Hardmax, TopK, CumSum, GatherElements, GatherND,
// ScatterElements, ScatterND, OneHot, Trilu, Tile, Pad and Range. Results equal the CPU
// reference's, ties included: ArgMax/TopK order by (value, index) with NaN the largest, as the CPU
// does; scatters apply their updates in index order (one thread owns every update that can reach
// an element), so duplicates and float reductions come out as on the CPU, deterministically. An
// index out of range zeroes/skips its element and sets the stream's error word, failing the run
// at its end as Gather does. Shape arguments (TopK's k, CumSum's axis, Tile's repeats, Pad's pads,
// OneHot's depth, Trilu's k, Range's scalars) are read on the host.
#include "kernels/cuda/cuda_common.h"
#include <string.h>
extern "C" {
#include "graph/op_helpers.h"
#include "kernels/cpu/op_checks.h"
}

// Row-major dims and strides by value.
struct kn_shp {
    int nd;
    int64_t d[KN_MAX_DIMS], s[KN_MAX_DIMS];
};
static kn_shp shp_of(const kn_tensor *t) {
    kn_shp r;
    r.nd = t->ndim;
    int64_t st = 1;
    for (int k = t->ndim - 1; k >= 0; k--) {
        r.d[k] = t->dims[k];
        r.s[k] = st;
        st *= t->dims[k];
    }
    return r;
}

// outer (dims before axis), n (the axis), inner (dims after)
static void split_axis(const kn_tensor *x, int axis, int64_t *outer, int64_t *n, int64_t *inner) {
    *outer = *inner = 1;
    for (int d = 0; d < axis; d++) *outer *= x->dims[d];
    for (int d = axis + 1; d < x->ndim; d++) *inner *= x->dims[d];
    *n = x->dims[axis];
}

// The key a float or integer element sorts by: float for the float types (exact for 16-bit ones).
template <class T> struct key_of {
    typedef int64_t K;
    __device__ static K ld(T v) { return (int64_t)v; }
    __device__ static bool isnan_(K) { return false; }
};
template <> struct key_of<float> {
    typedef float K;
    __device__ static K ld(float v) { return v; }
    __device__ static bool isnan_(K v) { return v != v; }
};
template <> struct key_of<__half> {
    typedef float K;
    __device__ static K ld(__half v) { return __half2float(v); }
    __device__ static bool isnan_(K v) { return v != v; }
};
template <> struct key_of<__nv_bfloat16> {
    typedef float K;
    __device__ static K ld(__nv_bfloat16 v) { return __bfloat162float(v); }
    __device__ static bool isnan_(K v) { return v != v; }
};

// ---- ArgMax / ArgMin: the CPU's scan order (first NaN wins; ties: first, or last index) ----
template <class K, class KT>
__device__ static inline bool arg_better(K v, int64_t i, K bv, int64_t bi, bool is_max, bool last) {
    bool vn = KT::isnan_(v), bn = KT::isnan_(bv);
    if (vn || bn) return vn && bn ? i < bi : vn;
    if (v != bv) return is_max ? v > bv : v < bv;
    return last ? i > bi : i < bi;
}

// inner == 1: a warp per line, lanes striding the contiguous axis, then a shuffle reduction
template <class T>
__global__ void argmax_warp_kernel(int64_t *y, const T *x, int64_t lines, int64_t n, bool is_max, bool last) {
    typedef key_of<T> KT;
    typedef typename KT::K K;
    int lane = threadIdx.x & 31;
    int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5, nw = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t l = warp; l < lines; l += nw) {
        const T *p = x + l * n;
        K bv = KT::ld(p[0]);
        int64_t bi = 0;
        for (int64_t i = lane; i < n; i += 32) {
            K v = KT::ld(p[i]);
            if (i == lane || arg_better<K, KT>(v, i, bv, bi, is_max, last)) {
                bv = v;
                bi = i;
            }
        }
        for (int o = 16; o > 0; o >>= 1) {
            K ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (arg_better<K, KT>(ov, oi, bv, bi, is_max, last)) {
                bv = ov;
                bi = oi;
            }
        }
        if (lane == 0) y[l] = bi;
    }
}
// inner > 1: a thread per line, neighbours reading neighbouring (coalesced) elements
template <class T>
__global__ void argmax_line_kernel(int64_t *y, const T *x, int64_t outer, int64_t n, int64_t inner, bool is_max,
                                   bool last) {
    typedef key_of<T> KT;
    typedef typename KT::K K;
    KN_GRID_STRIDE(l, outer * inner) {
        int64_t o = l / inner, in = l % inner;
        const T *p = x + o * n * inner + in;
        K bv = KT::ld(p[0]);
        int64_t bi = 0;
        for (int64_t i = 1; i < n; i++) {
            K v = KT::ld(p[i * inner]);
            if (arg_better<K, KT>(v, i, bv, bi, is_max, last)) {
                bv = v;
                bi = i;
            }
        }
        y[l] = bi;
    }
}

template <class T>
static void argmax_launch(int64_t *y, const void *x, int64_t outer, int64_t n, int64_t inner, bool is_max, bool last,
                          cudaStream_t s) {
    if (inner == 1)
        KN_LAUNCH(argmax_warp_kernel<T>, kn_cuda_blocks(outer * 32, 256), 256, 0, s, y, (const T *)x, outer, n, is_max,
                  last);
    else
        KN_LAUNCH(argmax_line_kernel<T>, kn_cuda_blocks(outer * inner, 256), 256, 0, s, y, (const T *)x, outer, n,
                  inner, is_max, last);
}

static kn_status *arg_cuda(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *x, kn_tensor *y, bool is_max) {
    if (!y) return NULL;
    if (x->ndim < 1) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input must have rank >= 1", node->op_type);
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, arg)->axis, x->ndim, node, &axis));
    bool last = KN_PARAMS(node, arg)->select_last_index;
    int64_t outer, n, inner;
    split_axis(x, axis, &outer, &n, &inner);
    if (outer * inner == 0) return NULL;
    if (n == 0) {
        char buf[KN_DESC_LEN];
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: cannot reduce an empty axis %d of %s", node->op_type, axis,
                        kn_tensor_desc(x, buf, sizeof buf));
    }
    cudaStream_t s = kn_cuda_s(ctx);
    int64_t *py = (int64_t *)y->data;
    switch (x->dtype) {
    case KN_F32: argmax_launch<float>(py, x->data, outer, n, inner, is_max, last, s); break;
    case KN_F16: argmax_launch<__half>(py, x->data, outer, n, inner, is_max, last, s); break;
    case KN_BF16: argmax_launch<__nv_bfloat16>(py, x->data, outer, n, inner, is_max, last, s); break;
    case KN_I32: argmax_launch<int32_t>(py, x->data, outer, n, inner, is_max, last, s); break;
    case KN_I64: argmax_launch<int64_t>(py, x->data, outer, n, inner, is_max, last, s); break;
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "ArgMax/ArgMin kernel");
    return NULL;
}
KN_CUDA_KERNEL(ArgMax) { return arg_cuda(ctx, node, in[0], out[0], true); }
KN_CUDA_KERNEL(ArgMin) { return arg_cuda(ctx, node, in[0], out[0], false); }

// ---- Hardmax: 1 at each line's first largest element (the first NaN wins), 0 elsewhere; a warp
// per line ----
template <class T> __global__ void hardmax_kernel(T *y, const T *x, int64_t outer, int64_t n, int64_t inner) {
    typedef key_of<T> KT;
    typedef typename KT::K K;
    int lane = threadIdx.x & 31;
    int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5, nw = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t l = warp; l < outer * inner; l += nw) {
        int64_t base = (l / inner) * n * inner + l % inner;
        K bv = KT::ld(x[base]);
        int64_t bi = 0;
        for (int64_t i = lane; i < n; i += 32) {
            K v = KT::ld(x[base + i * inner]);
            if (i == lane || arg_better<K, KT>(v, i, bv, bi, true, false)) {
                bv = v;
                bi = i;
            }
        }
        for (int o = 16; o > 0; o >>= 1) {
            K ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (arg_better<K, KT>(ov, oi, bv, bi, true, false)) {
                bv = ov;
                bi = oi;
            }
        }
        for (int64_t i = lane; i < n; i += 32) y[base + i * inner] = kn_num<T>::st(i == bi ? 1.0f : 0.0f);
    }
}

KN_CUDA_KERNEL(Hardmax) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    if (!y) return NULL;
    if (x->ndim < 1) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input must have rank >= 1", node->op_type);
    int axis;
    const kn_params_softmax *p = KN_PARAMS(node, softmax);
    KN_TRY(kn_norm_axis(p->axis, x->ndim, node, &axis));
    int64_t outer = 1, n = 1, inner = 1; // before opset 13 the axis and everything after it is one line
    for (int i = 0; i < x->ndim; i++) {
        if (i < axis) outer *= x->dims[i];
        else if (i == axis || p->coerce_2d) n *= x->dims[i];
        else inner *= x->dims[i];
    }
    if (outer * n * inner == 0) return NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(outer * inner * 32, 256);
    switch (x->dtype) {
    case KN_F32:
        KN_LAUNCH(hardmax_kernel<float>, g, 256, 0, s, (float *)y->data, (const float *)x->data, outer, n, inner);
        break;
    case KN_F16:
        KN_LAUNCH(hardmax_kernel<__half>, g, 256, 0, s, (__half *)y->data, (const __half *)x->data, outer, n, inner);
        break;
    case KN_BF16:
        KN_LAUNCH(hardmax_kernel<__nv_bfloat16>, g, 256, 0, s, (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)x->data,
                  outer, n, inner);
        break;
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "Hardmax kernel");
    return NULL;
}

// ---- TopK: a block per line sorts (key, index) pairs in shared memory (bitonic), best first (lines
// up to 2048); longer lines select k <= 256 in rounds ----
#define TOPK_MAX 2048
template <class K, class KT> __device__ static inline bool topk_before(K a, int ia, K b, int ib, bool largest) {
    // padding (index -1) sorts last; NaN is the largest value; ties keep the lower index first
    if (ia < 0 || ib < 0) return ib < 0 && ia >= 0;
    bool an = KT::isnan_(a), bn = KT::isnan_(b);
    int c;
    if (an || bn) c = (int)an - (int)bn;
    else c = (a > b) - (a < b);
    if (largest) c = -c;
    if (c) return c < 0;
    return ia < ib;
}

template <class T>
__global__ void topk_kernel(T *vals, int64_t *idx, const T *x, int64_t n, int64_t inner, int64_t k, int p2,
                            bool largest) {
    typedef key_of<T> KT;
    typedef typename KT::K K;
    KN_SHARED(K, key, TOPK_MAX);
    KN_SHARED(int, id, TOPK_MAX);
    int64_t line = blockIdx.x, o = line / inner, in = line % inner;
    const T *p = x + o * n * inner + in;
    for (int i = threadIdx.x; i < p2; i += blockDim.x) {
        if (i < n) {
            key[i] = KT::ld(p[(int64_t)i * inner]);
            id[i] = i;
        } else {
            key[i] = K(0);
            id[i] = -1;
        }
    }
    __syncthreads();
    for (int size = 2; size <= p2; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < p2; i += blockDim.x) {
                int j = i ^ stride;
                if (j > i) {
                    bool up = (i & size) == 0; // this pair's half sorts best first
                    K ki = key[i], kj = key[j];
                    int ii = id[i], ij = id[j];
                    bool swap =
                        up ? topk_before<K, KT>(kj, ij, ki, ii, largest) : topk_before<K, KT>(ki, ii, kj, ij, largest);
                    if (swap) {
                        key[i] = kj;
                        key[j] = ki;
                        id[i] = ij;
                        id[j] = ii;
                    }
                }
            }
            __syncthreads();
        }
    int64_t ob = o * k * inner + in;
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
        int src = id[i];
        if (vals) vals[ob + (int64_t)i * inner] = p[(int64_t)src * inner];
        if (idx) idx[ob + (int64_t)i * inner] = src;
    }
}

// Long lines (a vocabulary) with a small k: k rounds of a block-wide selection, round i taking
// the best element that comes after round i-1's in the (value, index) order. O(k n) coalesced
// reads, no sorting memory, the same total order and so the same result as the sort.
#define TOPK_LONG_K 256
template <class T>
__global__ void topk_long_kernel(T *vals, int64_t *idx, const T *x, int64_t n, int64_t inner, int64_t k, bool largest) {
    typedef key_of<T> KT;
    typedef typename KT::K K;
    KN_SHARED(K, wkey, 32);
    KN_SHARED(int64_t, wid, 32);
    int64_t line = blockIdx.x, o = line / inner, in = line % inner;
    const T *p = x + o * n * inner + in;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    K pk = K(0);
    int64_t pid = -1; // the previous round's pick; -1: none yet
    int64_t ob = o * k * inner + in;
    for (int64_t r = 0; r < k; r++) {
        K bk = K(0);
        int64_t bi = -1;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            K v = KT::ld(p[i * inner]);
            bool after = pid < 0 || topk_before<K, KT>(pk, (int)pid, v, (int)i, largest);
            if (after && (bi < 0 || topk_before<K, KT>(v, (int)i, bk, (int)bi, largest))) {
                bk = v;
                bi = i;
            }
        }
        for (int off = 16; off > 0; off >>= 1) {
            K ok = __shfl_xor_sync(0xffffffffu, bk, off);
            int64_t oi = __shfl_xor_sync(0xffffffffu, bi, off);
            if (oi >= 0 && (bi < 0 || topk_before<K, KT>(ok, (int)oi, bk, (int)bi, largest))) {
                bk = ok;
                bi = oi;
            }
        }
        if (lane == 0) {
            wkey[warp] = bk;
            wid[warp] = bi;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 1; w < nwarps; w++)
                if (wid[w] >= 0 && (bi < 0 || topk_before<K, KT>(wkey[w], (int)wid[w], bk, (int)bi, largest))) {
                    bk = wkey[w];
                    bi = wid[w];
                }
            if (vals) vals[ob + r * inner] = p[bi * inner];
            if (idx) idx[ob + r * inner] = bi;
            wkey[0] = bk;
            wid[0] = bi;
        }
        __syncthreads();
        pk = wkey[0];
        pid = wid[0];
        __syncthreads();
    }
}

KN_CUDA_KERNEL(TopK) {
    const kn_tensor *x = in[0];
    kn_tensor *vals = out[0], *ids = n_out > 1 ? out[1] : NULL;
    const kn_tensor *shp = vals ? vals : ids;
    if (!shp) return NULL;
    if (x->ndim < 1) return kn_error(KN_ERR_INVALID_ARGUMENT, "TopK: input must have rank >= 1");
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, topk)->axis, x->ndim, node, &axis));
    int64_t outer, n, inner, k = shp->dims[axis];
    split_axis(x, axis, &outer, &n, &inner);
    if (k > n || k < 0)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "TopK: k=%lld exceeds axis size %lld", (long long)k, (long long)n);
    if (k == 0 || outer * inner == 0) return NULL;
    if (n > TOPK_MAX && k > TOPK_LONG_K)
        return kn_error(KN_ERR_UNSUPPORTED, "TopK: k=%lld of an axis of %lld on cuda (at most %d of more than %d)",
                        (long long)k, (long long)n, TOPK_LONG_K, TOPK_MAX);
    if (n > INT32_MAX) return kn_error(KN_ERR_UNSUPPORTED, "TopK: axis of %lld on cuda", (long long)n);
    bool long_line = n > TOPK_MAX;
    int p2 = 1;
    while (!long_line && p2 < n) p2 <<= 1;
    int threads = p2 < 256 ? (p2 < 32 ? 32 : p2) : 256;
    unsigned g = (unsigned)(outer * inner);
    cudaStream_t s = kn_cuda_s(ctx);
    bool lg = KN_PARAMS(node, topk)->largest;
    int64_t *pi = ids ? (int64_t *)ids->data : NULL;
    switch (x->dtype) {
#define TOPK_CASE(DT, T) \
    case DT: \
        if (long_line) \
            KN_LAUNCH(topk_long_kernel<T>, g, 256, 0, s, vals ? (T *)vals->data : (T *)NULL, pi, (const T *)x->data, \
                      n, inner, k, lg); \
        else \
            KN_LAUNCH(topk_kernel<T>, g, threads, 0, s, vals ? (T *)vals->data : (T *)NULL, pi, (const T *)x->data, n, \
                      inner, k, p2, lg); \
        break;
        TOPK_CASE(KN_F32, float)
        TOPK_CASE(KN_F16, __half)
        TOPK_CASE(KN_BF16, __nv_bfloat16)
        TOPK_CASE(KN_I32, int32_t)
        TOPK_CASE(KN_I64, int64_t)
#undef TOPK_CASE
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "TopK kernel");
    return NULL;
}

// ---- CumSum / CumProd: a thread per line (neighbours on neighbouring elements), in double for
// the floats and wrapping uint64 for the integers, in the CPU's order ----
template <class T>
__global__ void cumsum_float_kernel(T *y, const T *x, int64_t outer, int64_t n, int64_t inner, bool excl, bool rev,
                                    bool prod) {
    KN_GRID_STRIDE(l, outer * inner) {
        int64_t base = (l / inner) * n * inner + l % inner;
        double a = prod ? 1 : 0;
        for (int64_t s = 0; s < n; s++) {
            int64_t i = base + (rev ? n - 1 - s : s) * inner;
            double v = (double)kn_num<T>::ld(x[i]);
            if (excl) {
                y[i] = kn_num<T>::st((typename kn_num<T>::acc)(float)a);
                a = prod ? a * v : a + v;
            } else {
                a = prod ? a * v : a + v;
                y[i] = kn_num<T>::st((typename kn_num<T>::acc)(float)a);
            }
        }
    }
}
template <class T>
__global__ void cumsum_int_kernel(T *y, const T *x, int64_t outer, int64_t n, int64_t inner, bool excl, bool rev,
                                  bool prod) {
    KN_GRID_STRIDE(l, outer * inner) {
        int64_t base = (l / inner) * n * inner + l % inner;
        uint64_t a = prod ? 1 : 0;
        for (int64_t s = 0; s < n; s++) {
            int64_t i = base + (rev ? n - 1 - s : s) * inner;
            uint64_t v = (uint64_t)(int64_t)x[i];
            if (excl) {
                y[i] = (T)(int64_t)a;
                a = prod ? a * v : a + v;
            } else {
                a = prod ? a * v : a + v;
                y[i] = (T)(int64_t)a;
            }
        }
    }
}

static kn_status *cum_cuda(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                           kn_tensor *const *out, bool prod) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    if (!y) return NULL;
    int axis;
    KN_TRY(kn_check_cum_axis(node, in, n_in, &axis));
    bool excl = KN_PARAMS(node, cum)->exclusive, rev = KN_PARAMS(node, cum)->reverse;
    int64_t outer, n, inner;
    split_axis(x, axis, &outer, &n, &inner);
    if (outer * n * inner <= 0) return NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(outer * inner, 128);
    switch (x->dtype) {
#define CUM_CASE(DT, T, KER) \
    case DT: KN_LAUNCH(KER<T>, g, 128, 0, s, (T *)y->data, (const T *)x->data, outer, n, inner, excl, rev, prod); break;
        CUM_CASE(KN_F32, float, cumsum_float_kernel)
        CUM_CASE(KN_F16, __half, cumsum_float_kernel)
        CUM_CASE(KN_BF16, __nv_bfloat16, cumsum_float_kernel)
        CUM_CASE(KN_I32, int32_t, cumsum_int_kernel)
        CUM_CASE(KN_I64, int64_t, cumsum_int_kernel)
#undef CUM_CASE
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "CumSum/CumProd kernel");
    return NULL;
}
KN_CUDA_KERNEL(CumSum) { return cum_cuda(ctx, node, in, n_in, out, false); }
KN_CUDA_KERNEL(CumProd) { return cum_cuda(ctx, node, in, n_in, out, true); }

// ---- GatherElements: y[c] = x[c with c[axis] = idx[c]] ----
template <class E, class I>
__global__ void gather_elements_kernel(E *y, const E *x, const I *idx, int64_t n, kn_shp is, kn_shp xs, int axis,
                                       int *err, int code) {
    KN_GRID_STRIDE(t, n) {
        int64_t v = (int64_t)idx[t], dim = xs.d[axis];
        if (v < 0) v += dim;
        if (v < 0 || v >= dim) {
            y[t] = E(0);
            atomicCAS(err, 0, code);
            continue;
        }
        int64_t off = 0, r = t;
        for (int k = is.nd - 1; k >= 0; k--) {
            int64_t c = r % is.d[k];
            r /= is.d[k];
            off += (k == axis ? v : c) * xs.s[k];
        }
        y[t] = x[off];
    }
}

// ---- GatherND: y[tuple, e] = x[batch, idx[tuple], e] ----
template <class E, class I>
__global__ void gather_nd_kernel(E *y, const E *x, const I *idx, int64_t tuples, int64_t k, int64_t slice,
                                 int64_t per_batch, int64_t per_batch_data, int b, kn_shp xs, int *err, int code) {
    KN_GRID_STRIDE(i, tuples * slice) {
        int64_t t = i / slice, e = i % slice;
        int64_t off = (per_batch ? t / per_batch : 0) * per_batch_data;
        bool ok = true;
        for (int64_t d = 0; d < k; d++) {
            int64_t dim = xs.d[b + d], v = (int64_t)idx[t * k + d];
            if (v < 0) v += dim;
            if (v < 0 || v >= dim) ok = false;
            off += v * xs.s[b + d];
        }
        if (ok) y[i] = x[off + e];
        else {
            y[i] = E(0);
            atomicCAS(err, 0, code);
        }
    }
}

// ---- scatters: y starts as a copy of x; reductions in double (floats) or wrapping int64 ----
template <class T> struct red_of {
    __device__ static T apply(T a, T b, int red) {
        int64_t x = (int64_t)a, y = (int64_t)b;
        switch (red) {
        case KN_SCATTER_ADD: return (T)(int64_t)((uint64_t)x + (uint64_t)y);
        case KN_SCATTER_MUL: return (T)(int64_t)((uint64_t)x * (uint64_t)y);
        case KN_SCATTER_MAX: return x > y ? a : b;
        case KN_SCATTER_MIN: return x < y ? a : b;
        default: return b;
        }
    }
};
template <class T> struct red_float {
    __device__ static T apply(T a, T b, int red) {
        if (red == KN_SCATTER_NONE) return b;
        double x = (double)kn_num<T>::ld(a), y = (double)kn_num<T>::ld(b);
        double r = red == KN_SCATTER_ADD ? x + y
            : red == KN_SCATTER_MUL      ? x * y
            : red == KN_SCATTER_MAX      ? (x > y ? x : y)
                                         : (x < y ? x : y);
        return kn_num<T>::st((typename kn_num<T>::acc)(float)r);
    }
};
template <> struct red_of<float> : red_float<float> {};
template <> struct red_of<__half> : red_float<__half> {};
template <> struct red_of<__nv_bfloat16> : red_float<__nv_bfloat16> {};

// a thread per line of the indices along the axis: every update reaching an element of y comes
// from the same line, applied in order
template <class E, class I>
__global__ void scatter_elements_kernel(E *y, const E *u, const I *idx, int64_t lines, kn_shp is, kn_shp xs, int axis,
                                        int red, int *err, int code) {
    KN_GRID_STRIDE(l, lines) {
        int64_t base_i = 0, base_y = 0, r = l;
        for (int k = is.nd - 1; k >= 0; k--) {
            if (k == axis) continue;
            int64_t c = r % is.d[k];
            r /= is.d[k];
            base_i += c * is.s[k];
            base_y += c * xs.s[k];
        }
        for (int64_t j = 0; j < is.d[axis]; j++) {
            int64_t t = base_i + j * is.s[axis], v = (int64_t)idx[t], dim = xs.d[axis];
            if (v < 0) v += dim;
            if (v < 0 || v >= dim) {
                atomicCAS(err, 0, code);
                continue;
            }
            E *dst = y + base_y + v * xs.s[axis];
            *dst = red_of<E>::apply(*dst, u[t], red);
        }
    }
}

// a thread per element of the slice, walking the tuples in order
template <class E, class I>
__global__ void scatter_nd_kernel(E *y, const E *u, const I *idx, int64_t tuples, int64_t k, int64_t slice, kn_shp xs,
                                  int red, int *err, int code) {
    KN_GRID_STRIDE(e, slice) {
        for (int64_t t = 0; t < tuples; t++) {
            int64_t off = 0;
            bool ok = true;
            for (int64_t d = 0; d < k; d++) {
                int64_t dim = xs.d[d], v = (int64_t)idx[t * k + d];
                if (v < 0) v += dim;
                if (v < 0 || v >= dim) ok = false;
                off += v * xs.s[d];
            }
            if (!ok) {
                atomicCAS(err, 0, code);
                continue;
            }
            E *dst = y + off + e;
            *dst = red_of<E>::apply(*dst, u[t * slice + e], red);
        }
    }
}

// Element-size (or, for reductions, element-type) dispatch for the index kernels.
#define IDX_BY_SIZE(es, i64, LAUNCH) \
    switch (es) { \
    case 1: \
        if (i64) LAUNCH(uint8_t, int64_t) else LAUNCH(uint8_t, int32_t) break; \
    case 2: \
        if (i64) LAUNCH(uint16_t, int64_t) else LAUNCH(uint16_t, int32_t) break; \
    case 4: \
        if (i64) LAUNCH(uint32_t, int64_t) else LAUNCH(uint32_t, int32_t) break; \
    case 8: \
        if (i64) LAUNCH(uint64_t, int64_t) else LAUNCH(uint64_t, int32_t) break; \
    default: return kn_err_dtype(node, x); \
    }

KN_CUDA_KERNEL(GatherElements) {
    const kn_tensor *x = in[0], *ind = in[1];
    kn_tensor *y = out[0];
    if (!y) return NULL;
    int axis, r = x->ndim;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, axis)->axis, r, node, &axis));
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    KN_CHECK(ind->ndim == r, KN_ERR_INVALID_ARGUMENT, "GatherElements: indices %s rank differs from data %s",
             kn_tensor_desc(ind, b2, sizeof b2), kn_tensor_desc(x, b1, sizeof b1));
    for (int k = 0; k < r; k++)
        KN_CHECK(k == axis || ind->dims[k] <= x->dims[k], KN_ERR_INVALID_ARGUMENT,
                 "GatherElements: indices %s exceed data %s", kn_tensor_desc(ind, b2, sizeof b2),
                 kn_tensor_desc(x, b1, sizeof b1));
    int64_t n = kn_numel(ind);
    if (n <= 0) return NULL;
    kn_shp is = shp_of(ind), xs = shp_of(x);
    bool i64 = ind->dtype == KN_I64;
    cudaStream_t s = kn_cuda_s(ctx);
    int *err = kn_cuda_st(ctx)->dev_err, code = kn_cuda_err_code(ctx, node);
    unsigned g = kn_cuda_blocks(n, 256);
#define GE_LAUNCH(E, I) \
    KN_LAUNCH((gather_elements_kernel<E, I>), g, 256, 0, s, (E *)y->data, (const E *)x->data, (const I *)ind->data, n, \
              is, xs, axis, err, code);
    IDX_BY_SIZE(kn_dtype_size(x->dtype), i64, GE_LAUNCH)
#undef GE_LAUNCH
    KN_CUDA_LAUNCHED(node, "GatherElements kernel");
    return NULL;
}

KN_CUDA_KERNEL(GatherND) {
    const kn_tensor *x = in[0], *ind = in[1];
    kn_tensor *y = out[0];
    if (!y) return NULL;
    int b = (int)KN_PARAMS(node, gathernd)->batch_dims;
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    KN_CHECK(ind->ndim >= 1 && b >= 0 && b < ind->ndim && b <= x->ndim, KN_ERR_INVALID_ARGUMENT,
             "GatherND: indices %s and batch_dims %d do not fit data %s", kn_tensor_desc(ind, b2, sizeof b2), b,
             kn_tensor_desc(x, b1, sizeof b1));
    int64_t k = ind->dims[ind->ndim - 1], nb = 1, slice = 1;
    KN_CHECK(b + k <= x->ndim, KN_ERR_INVALID_ARGUMENT, "GatherND: indices %s index too many dims of %s",
             kn_tensor_desc(ind, b2, sizeof b2), kn_tensor_desc(x, b1, sizeof b1));
    for (int i = 0; i < b; i++) {
        KN_CHECK(ind->dims[i] == x->dims[i], KN_ERR_INVALID_ARGUMENT,
                 "GatherND: batch dims of indices %s and data %s differ", kn_tensor_desc(ind, b2, sizeof b2),
                 kn_tensor_desc(x, b1, sizeof b1));
        nb *= x->dims[i];
    }
    for (int i = b + (int)k; i < x->ndim; i++) slice *= x->dims[i];
    int64_t per_batch_data = nb ? kn_numel(x) / nb : 0;
    int64_t tuples = k ? kn_numel(ind) / k : 0, per_batch = nb ? tuples / nb : 0;
    if (tuples * slice <= 0) return NULL;
    kn_shp xs = shp_of(x);
    bool i64 = ind->dtype == KN_I64;
    cudaStream_t s = kn_cuda_s(ctx);
    int *err = kn_cuda_st(ctx)->dev_err, code = kn_cuda_err_code(ctx, node);
    unsigned g = kn_cuda_blocks(tuples * slice, 256);
#define GN_LAUNCH(E, I) \
    KN_LAUNCH((gather_nd_kernel<E, I>), g, 256, 0, s, (E *)y->data, (const E *)x->data, (const I *)ind->data, tuples, \
              k, slice, per_batch, per_batch_data, b, xs, err, code);
    IDX_BY_SIZE(kn_dtype_size(x->dtype), i64, GN_LAUNCH)
#undef GN_LAUNCH
    KN_CUDA_LAUNCHED(node, "GatherND kernel");
    return NULL;
}

// The reductions need the element type; plain scatters move bytes.
#define IDX_BY_TYPE(dt, i64, LAUNCH) \
    switch (dt) { \
    case KN_F32: \
        if (i64) LAUNCH(float, int64_t) else LAUNCH(float, int32_t) break; \
    case KN_F16: \
        if (i64) LAUNCH(__half, int64_t) else LAUNCH(__half, int32_t) break; \
    case KN_BF16: \
        if (i64) LAUNCH(__nv_bfloat16, int64_t) else LAUNCH(__nv_bfloat16, int32_t) break; \
    case KN_I32: \
        if (i64) LAUNCH(int32_t, int64_t) else LAUNCH(int32_t, int32_t) break; \
    case KN_I64: \
        if (i64) LAUNCH(int64_t, int64_t) else LAUNCH(int64_t, int32_t) break; \
    default: return kn_err_dtype(node, x); \
    }

static kn_status *copy_input(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *x, kn_tensor *y) {
    if (y->data == x->data || kn_nbytes(x) == 0) return NULL;
    KN_CUDA_TRY(cudaMemcpyAsync(y->data, x->data, kn_nbytes(x), cudaMemcpyDeviceToDevice, kn_cuda_s(ctx)), node,
                "scatter copy");
    return NULL;
}

KN_CUDA_KERNEL(ScatterElements) {
    const kn_tensor *x = in[0], *ind = in[1], *u = in[2];
    kn_tensor *y = out[0];
    if (!y) return NULL;
    int red = (int)KN_PARAMS(node, scatter)->reduction;
    int axis, r = x->ndim;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, scatter)->axis, r, node, &axis));
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    KN_CHECK(ind->ndim == r && kn_same_shape(ind, u), KN_ERR_INVALID_ARGUMENT,
             "%s: indices %s and updates %s must match (data rank %d)", node->op_type,
             kn_tensor_desc(ind, b1, sizeof b1), kn_tensor_desc(u, b2, sizeof b2), r);
    for (int k = 0; k < r; k++)
        KN_CHECK(ind->dims[k] <= x->dims[k] || k == axis, KN_ERR_INVALID_ARGUMENT, "%s: indices %s exceed data %s",
                 node->op_type, kn_tensor_desc(ind, b1, sizeof b1), kn_tensor_desc(x, b2, sizeof b2));
    KN_TRY(copy_input(ctx, node, x, y));
    int64_t n = kn_numel(ind);
    if (n <= 0) return NULL;
    int64_t lines = n / ind->dims[axis];
    kn_shp is = shp_of(ind), xs = shp_of(x);
    bool i64 = ind->dtype == KN_I64;
    cudaStream_t s = kn_cuda_s(ctx);
    int *err = kn_cuda_st(ctx)->dev_err, code = kn_cuda_err_code(ctx, node);
    unsigned g = kn_cuda_blocks(lines, 128);
#define SE_LAUNCH(E, I) \
    KN_LAUNCH((scatter_elements_kernel<E, I>), g, 128, 0, s, (E *)y->data, (const E *)u->data, (const I *)ind->data, \
              lines, is, xs, axis, red, err, code);
    if (red == KN_SCATTER_NONE) IDX_BY_SIZE(kn_dtype_size(x->dtype), i64, SE_LAUNCH)
    else IDX_BY_TYPE(x->dtype, i64, SE_LAUNCH)
#undef SE_LAUNCH
    KN_CUDA_LAUNCHED(node, "ScatterElements kernel");
    return NULL;
}

KN_CUDA_KERNEL(ScatterND) {
    const kn_tensor *x = in[0], *ind = in[1], *u = in[2];
    kn_tensor *y = out[0];
    if (!y) return NULL;
    int red = (int)KN_PARAMS(node, scatter)->reduction;
    int64_t k, slice, tuples;
    KN_TRY(kn_check_scatternd(node, x, ind, u, &k, &slice, &tuples));
    KN_TRY(copy_input(ctx, node, x, y));
    if (tuples * slice <= 0) return NULL;
    kn_shp xs = shp_of(x);
    bool i64 = ind->dtype == KN_I64;
    cudaStream_t s = kn_cuda_s(ctx);
    int *err = kn_cuda_st(ctx)->dev_err, code = kn_cuda_err_code(ctx, node);
    unsigned g = kn_cuda_blocks(slice, 128);
#define SN_LAUNCH(E, I) \
    KN_LAUNCH((scatter_nd_kernel<E, I>), g, 128, 0, s, (E *)y->data, (const E *)u->data, (const I *)ind->data, tuples, \
              k, slice, xs, red, err, code);
    if (red == KN_SCATTER_NONE) IDX_BY_SIZE(kn_dtype_size(x->dtype), i64, SN_LAUNCH)
    else IDX_BY_TYPE(x->dtype, i64, SN_LAUNCH)
#undef SN_LAUNCH
    KN_CUDA_LAUNCHED(node, "ScatterND kernel");
    return NULL;
}

// ---- OneHot: y[o, d, e] = d == wrap(idx[o, e]) ? on : off (values [off, on] on the device) ----
template <class E, class I>
__global__ void onehot_kernel(E *y, const I *idx, const E *vals, int64_t outer, int64_t depth, int64_t inner) {
    KN_GRID_STRIDE(i, outer * depth * inner) {
        int64_t e = i % inner, d = (i / inner) % depth, o = i / (inner * depth);
        double dv = (double)idx[o * inner + e];
        bool hit = false;
        if (fabs(dv) < (double)depth + 1) { // NaN and far out of range: off
            int64_t v = (int64_t)dv;
            if (v < 0) v += depth;
            hit = v == d;
        }
        y[i] = vals[hit ? 1 : 0];
    }
}

KN_CUDA_KERNEL(OneHot) {
    const kn_tensor *ind = in[0], *vals = in[2], *x = vals;
    kn_tensor *y = out[0];
    if (!y) return NULL;
    KN_CHECK(kn_numel(vals) == 2, KN_ERR_INVALID_ARGUMENT, "OneHot: values must hold [off, on]");
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, axis)->axis, y->ndim, node, &axis));
    int64_t depth = y->dims[axis], outer = 1, inner = 1;
    for (int k = 0; k < axis; k++) outer *= y->dims[k];
    for (int k = axis + 1; k < y->ndim; k++) inner *= y->dims[k];
    int64_t n = outer * depth * inner;
    if (n <= 0) return NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
#define OH_LAUNCH(E, I) \
    KN_LAUNCH((onehot_kernel<E, I>), g, 256, 0, s, (E *)y->data, (const I *)ind->data, (const E *)vals->data, outer, \
              depth, inner);
#define OH_IDX(E) \
    switch (ind->dtype) { \
    case KN_I64: OH_LAUNCH(E, int64_t) break; \
    case KN_I32: OH_LAUNCH(E, int32_t) break; \
    case KN_F32: OH_LAUNCH(E, float) break; \
    default: return kn_err_dtype(node, ind); \
    }
    switch (kn_dtype_size(x->dtype)) {
    case 1: OH_IDX(uint8_t) break;
    case 2: OH_IDX(uint16_t) break;
    case 4: OH_IDX(uint32_t) break;
    case 8: OH_IDX(uint64_t) break;
    default: return kn_err_dtype(node, x);
    }
#undef OH_IDX
#undef OH_LAUNCH
    KN_CUDA_LAUNCHED(node, "OneHot kernel");
    return NULL;
}

// ---- Trilu: y = x where (upper ? j - i >= k : j - i <= k), else 0 ----
template <class E>
__global__ void trilu_kernel(E *y, const E *x, int64_t n, int64_t rows, int64_t cols, int64_t k, bool upper) {
    KN_GRID_STRIDE(t, n) {
        int64_t j = t % cols, i = (t / cols) % rows;
        bool keep = upper ? j - i >= k : j - i <= k;
        y[t] = keep ? x[t] : E(0);
    }
}

KN_CUDA_KERNEL(Trilu) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    if (!y) return NULL;
    int64_t k = 0;
    if (n_in > 1 && in[1] && in[1]->data && kn_numel(in[1]) > 0) k = kn_get_i64(in[1], 0);
    bool upper = KN_PARAMS(node, trilu)->upper;
    int64_t n = kn_numel(x);
    if (n <= 0) return NULL;
    int64_t rows = x->dims[x->ndim - 2], cols = x->dims[x->ndim - 1];
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
    switch (kn_dtype_size(x->dtype)) {
#define TR_CASE(ES, E) \
    case ES: KN_LAUNCH(trilu_kernel<E>, g, 256, 0, s, (E *)y->data, (const E *)x->data, n, rows, cols, k, upper); break;
        TR_CASE(1, uint8_t)
        TR_CASE(2, uint16_t)
        TR_CASE(4, uint32_t)
        TR_CASE(8, uint64_t)
#undef TR_CASE
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "Trilu kernel");
    return NULL;
}

// ---- Tile and Pad: each output element finds its source (Pad: or the constant) ----
template <class E> __global__ void tile_kernel(E *y, const E *x, int64_t n, kn_shp ys, kn_shp xs) {
    KN_GRID_STRIDE(t, n) {
        int64_t r = t, off = 0;
        for (int k = ys.nd - 1; k >= 0; k--) {
            int64_t c = r % ys.d[k];
            r /= ys.d[k];
            off += (c % xs.d[k]) * xs.s[k];
        }
        y[t] = x[off];
    }
}

KN_CUDA_KERNEL(Tile) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    if (!y) return NULL;
    int64_t n = kn_numel(y);
    if (n <= 0) return NULL;
    for (int k = 0; k < x->ndim; k++)
        KN_CHECK(x->dims[k] > 0 && y->dims[k] % x->dims[k] == 0, KN_ERR_RUNTIME, "Tile: output dim %d inconsistent", k);
    kn_shp ys = shp_of(y), xs = shp_of(x);
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
    switch (kn_dtype_size(x->dtype)) {
#define TI_CASE(ES, E) \
    case ES: KN_LAUNCH(tile_kernel<E>, g, 256, 0, s, (E *)y->data, (const E *)x->data, n, ys, xs); break;
        TI_CASE(1, uint8_t)
        TI_CASE(2, uint16_t)
        TI_CASE(4, uint32_t)
        TI_CASE(8, uint64_t)
#undef TI_CASE
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "Tile kernel");
    return NULL;
}

struct pad_args {
    int64_t before[KN_MAX_DIMS];
};

__device__ static inline int64_t pad_src(int64_t o, int64_t before, int64_t n, int mode) {
    int64_t i = o - before;
    if (i >= 0 && i < n) return i;
    if (n == 0) return -1;
    switch (mode) {
    case KN_PAD_REFLECT: {
        if (n == 1) return 0;
        int64_t period = 2 * (n - 1), m = ((i % period) + period) % period;
        return m < n ? m : period - m;
    }
    case KN_PAD_EDGE: return i < 0 ? 0 : n - 1;
    case KN_PAD_WRAP: return ((i % n) + n) % n;
    default: return -1;
    }
}

template <class E>
__global__ void pad_kernel(E *y, const E *x, int64_t n, kn_shp ys, kn_shp xs, pad_args pa, int mode, E cv) {
    KN_GRID_STRIDE(t, n) {
        int64_t r = t, off = 0;
        bool fill = false;
        for (int k = ys.nd - 1; k >= 0; k--) {
            int64_t c = r % ys.d[k];
            r /= ys.d[k];
            int64_t sidx = pad_src(c, pa.before[k], xs.d[k], mode);
            if (sidx < 0) fill = true;
            else off += sidx * xs.s[k];
        }
        y[t] = fill ? cv : x[off];
    }
}

KN_CUDA_KERNEL(Pad) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    if (!y) return NULL;
    int r = x->ndim;
    int64_t pads[2 * KN_MAX_DIMS];
    KN_TRY(kn_shapeops_pad_params(node, in, n_in, pads));
    int mode = (int)KN_PARAMS(node, pad)->mode;
    int64_t n = kn_numel(y);
    if (n <= 0) return NULL;
    char b[KN_DESC_LEN];
    if (mode != KN_PAD_CONSTANT)
        for (int k = 0; k < r; k++)
            KN_CHECK(x->dims[k] > 0 || y->dims[k] == 0, KN_ERR_INVALID_ARGUMENT, "Pad: cannot pad empty axis %d of %s",
                     k, kn_tensor_desc(x, b, sizeof b));
    size_t es = kn_dtype_size(x->dtype);
    unsigned char cv[16] = {0};
    if (mode == KN_PAD_CONSTANT) {
        kn_tensor tmp = {};
        tmp.dtype = x->dtype;
        tmp.ndim = 0;
        tmp.data = cv;
        if (node->opset < 11) kn_set_f64(&tmp, 0, KN_PARAMS(node, pad)->value);
        else if (n_in > 2 && in[2] && in[2]->data && kn_numel(in[2]) > 0) memcpy(cv, in[2]->data, es);
    }
    pad_args pa;
    for (int k = 0; k < r; k++) pa.before[k] = pads[k];
    kn_shp ys = shp_of(y), xs = shp_of(x);
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
    switch (es) {
#define PAD_CASE(ES, E) \
    case ES: { \
        E c; \
        memcpy(&c, cv, sizeof c); \
        KN_LAUNCH(pad_kernel<E>, g, 256, 0, s, (E *)y->data, (const E *)x->data, n, ys, xs, pa, mode, c); \
        break; \
    }
        PAD_CASE(1, uint8_t)
        PAD_CASE(2, uint16_t)
        PAD_CASE(4, uint32_t)
        PAD_CASE(8, uint64_t)
#undef PAD_CASE
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "Pad kernel");
    return NULL;
}

// ---- Range: y[i] = start + i * delta (start and delta on the host) ----
template <class T> __global__ void range_float_kernel(T *y, int64_t n, double s, double d) {
    KN_GRID_STRIDE(i, n) y[i] = kn_num<T>::st((typename kn_num<T>::acc)(float)(s + (double)i * d));
}
template <class T> __global__ void range_int_kernel(T *y, int64_t n, int64_t s, int64_t d) {
    KN_GRID_STRIDE(i, n) y[i] = (T)(int64_t)((uint64_t)s + (uint64_t)i * (uint64_t)d);
}

KN_CUDA_KERNEL(Range) {
    kn_tensor *y = out[0], *x = y;
    if (!y) return NULL;
    int64_t n = y->dims[0];
    if (n <= 0) return NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
    double fs = kn_get_f64(in[0], 0), fd = kn_get_f64(in[2], 0);
    int64_t is = kn_get_i64(in[0], 0), id = kn_get_i64(in[2], 0);
    switch (y->dtype) {
    case KN_F32: KN_LAUNCH(range_float_kernel<float>, g, 256, 0, s, (float *)y->data, n, fs, fd); break;
    case KN_F16: KN_LAUNCH(range_float_kernel<__half>, g, 256, 0, s, (__half *)y->data, n, fs, fd); break;
    case KN_BF16:
        KN_LAUNCH(range_float_kernel<__nv_bfloat16>, g, 256, 0, s, (__nv_bfloat16 *)y->data, n, fs, fd);
        break;
    case KN_I32: KN_LAUNCH(range_int_kernel<int32_t>, g, 256, 0, s, (int32_t *)y->data, n, is, id); break;
    case KN_I64: KN_LAUNCH(range_int_kernel<int64_t>, g, 256, 0, s, (int64_t *)y->data, n, is, id); break;
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "Range kernel");
    return NULL;
}

bool kn_cuda_index_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 1 || !in[0]) return n->op == KN_OP_Range;
    kn_dtype t = in[0]->dtype;
    bool num = kn_cuda_float(t) || t == KN_I32 || t == KN_I64;
    size_t es = kn_dtype_size(t);
    bool bytes = t != KN_STRING && (es == 1 || es == 2 || es == 4 || es == 8);
    auto index_ok = [&](int k) { return n_in > k && in[k] && (in[k]->dtype == KN_I32 || in[k]->dtype == KN_I64); };
    switch (n->op) {
    case KN_OP_Hardmax: return kn_cuda_float(t);
    case KN_OP_ArgMax:
    case KN_OP_ArgMin:
    case KN_OP_CumSum:
    case KN_OP_CumProd: return num;
    case KN_OP_TopK: {
        if (!num || in[0]->ndim < 1) return false;
        int axis = (int)KN_PARAMS(n, topk)->axis;
        if (axis < 0) axis += in[0]->ndim;
        // k (input 1, on the host when the planner knows it) decides for long lines
        if (axis < 0 || axis >= in[0]->ndim) return false;
        if (in[0]->dims[axis] <= TOPK_MAX) return true;
        int64_t k = KN_PARAMS(n, topk)->k_attr;
        if (k < 0 && n_in > 1 && in[1] && in[1]->data && in[1]->device == KN_DEVICE_CPU) k = kn_get_i64(in[1], 0);
        return k >= 0 && k <= TOPK_LONG_K;
    }
    case KN_OP_GatherElements:
    case KN_OP_GatherND: return bytes && index_ok(1);
    case KN_OP_ScatterElements:
    case KN_OP_ScatterND:
        if (n_in < 3 || !in[2] || in[2]->dtype != t || !index_ok(1)) return false;
        return KN_PARAMS(n, scatter)->reduction == KN_SCATTER_NONE ? bytes : num;
    case KN_OP_OneHot:
        return n_in >= 3 && in[2] && (in[0]->dtype == KN_I32 || in[0]->dtype == KN_I64 || in[0]->dtype == KN_F32) &&
            in[2]->dtype != KN_STRING && kn_dtype_size(in[2]->dtype) <= 8 && kn_dtype_size(in[2]->dtype) > 0;
    case KN_OP_Trilu:
    case KN_OP_Tile:
    case KN_OP_Pad: return bytes;
    case KN_OP_Range: return num;
    default: return false;
    }
}
