// ReduceSum/ReduceMean/ReduceMax/ReduceMin (and ReduceProd, ReduceL1, ReduceL2, ReduceLogSum,
// ReduceLogSumExp, ReduceSumSquare) over any set of axes on the device: one thread per
// output element walks its reduced elements (simple and exact first; row-parallel versions are
// the next step). Floats accumulate in double like the CPU reference; NaN propagates through
// Max/Min; integers accumulate in int64 and wrap.
#include "kernels/cuda/cuda_common.h"

extern "C" kn_status *kn_reduce_axes_mask(const kn_node *n, const kn_tensor *x, const kn_tensor *axes_in, bool *mask,
                                          bool *noop, bool *unknown);

enum { RD_SUM, RD_MEAN, RD_MAX, RD_MIN, RD_PROD, RD_L1, RD_L2, RD_LOGSUM, RD_LOGSUMEXP, RD_SUMSQ };

struct kn_red_geom {
    int nk, nr;
    int64_t kd[KN_MAX_DIMS], ks[KN_MAX_DIMS]; // kept dims (output order) and their input strides
    int64_t rd[KN_MAX_DIMS], rs[KN_MAX_DIMS]; // reduced dims and strides
    int64_t n_red;
};

__device__ static inline int64_t red_off(const int64_t *d, const int64_t *s, int n, int64_t i) {
    int64_t off = 0;
    for (int k = n - 1; k >= 0; k--) {
        off += (i % d[k]) * s[k];
        i /= d[k];
    }
    return off;
}

// y[o] = reduce over r of x[kept(o) + reduced(r)]
template <class T> __global__ void reduce_float_kernel(T *y, const T *x, int64_t n_out, kn_red_geom g, int kind) {
    KN_GRID_STRIDE(o, n_out) {
        int64_t base = red_off(g.kd, g.ks, g.nk, o);
        double acc = kind == RD_MAX ? -INFINITY : kind == RD_MIN ? INFINITY : kind == RD_PROD ? 1.0 : 0.0;
        bool nan = false;
        // LogSumExp: shifted by the largest value, as the CPU (no shift when it is infinite)
        double m = -INFINITY;
        if (kind == RD_LOGSUMEXP) {
            for (int64_t r = 0; r < g.n_red; r++) {
                double v = (double)kn_num<T>::ld(x[base + red_off(g.rd, g.rs, g.nr, r)]);
                if (v > m) m = v;
            }
            if (isinf(m)) m = 0;
        }
        for (int64_t r = 0; r < g.n_red; r++) {
            double v = (double)kn_num<T>::ld(x[base + red_off(g.rd, g.rs, g.nr, r)]);
            if (kind == RD_SUM || kind == RD_MEAN || kind == RD_LOGSUM) acc += v;
            else if (kind == RD_PROD) acc *= v;
            else if (kind == RD_L1) acc += fabs(v);
            else if (kind == RD_L2 || kind == RD_SUMSQ) acc += v * v;
            else if (kind == RD_LOGSUMEXP) acc += exp(v - m);
            else if (v != v) nan = true;
            else if (kind == RD_MAX ? v > acc : v < acc) acc = v;
        }
        if (kind == RD_MEAN) acc /= (double)g.n_red;
        else if (kind == RD_L2) acc = sqrt(acc);
        else if (kind == RD_LOGSUM) acc = log(acc);
        else if (kind == RD_LOGSUMEXP) acc = log(acc) + m;
        if (nan) acc = NAN;
        y[o] = kn_num<T>::st((typename kn_num<T>::acc)acc);
    }
}
template <class T> __global__ void reduce_int_kernel(T *y, const T *x, int64_t n_out, kn_red_geom g, int kind) {
    KN_GRID_STRIDE(o, n_out) {
        int64_t base = red_off(g.kd, g.ks, g.nk, o);
        // Max/Min of an empty range is the type's identity (lowest / highest), as on the CPU
        int64_t acc = kind == RD_MAX ? (sizeof(T) == 4 ? (int64_t)INT32_MIN : INT64_MIN)
            : kind == RD_MIN         ? (sizeof(T) == 4 ? (int64_t)INT32_MAX : INT64_MAX)
            : kind == RD_PROD        ? 1
                                     : 0;
        for (int64_t r = 0; r < g.n_red; r++) {
            int64_t v = (int64_t)x[base + red_off(g.rd, g.rs, g.nr, r)];
            if (kind == RD_L1 && v < 0) v = (int64_t)(0 - (uint64_t)v);
            if (kind == RD_SUMSQ) v = (int64_t)((uint64_t)v * (uint64_t)v);
            if (kind == RD_PROD) acc = (int64_t)((uint64_t)acc * (uint64_t)v);
            else if (kind == RD_SUM || kind == RD_MEAN || kind == RD_L1 || kind == RD_SUMSQ)
                acc = (int64_t)((uint64_t)acc + (uint64_t)v);
            else if (kind == RD_MAX ? v > acc : v < acc) acc = v;
        }
        if (kind == RD_MEAN && g.n_red) acc /= g.n_red;
        y[o] = (T)acc;
    }
}

static kn_status *reduce_cuda(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in, kn_tensor *y,
                              int kind) {
    const kn_tensor *x = in[0];
    bool mask[KN_MAX_DIMS], noop, unknown;
    KN_TRY(kn_reduce_axes_mask(node, x, n_in > 1 ? in[1] : NULL, mask, &noop, &unknown));
    if (unknown) return kn_error(KN_ERR_RUNTIME, "%s: axes value is not known at run time", node->op_type);
    cudaStream_t s = kn_cuda_s(ctx);
    if (noop) {
        if (x->data != y->data && kn_nbytes(x))
            KN_CUDA_TRY(cudaMemcpyAsync(y->data, x->data, kn_nbytes(x), cudaMemcpyDeviceToDevice, s), node,
                        "Reduce copy");
        return NULL;
    }
    int64_t n_out = kn_numel(y);
    if (n_out <= 0) return NULL;
    kn_red_geom g;
    memset(&g, 0, sizeof g);
    g.n_red = 1;
    int64_t st = 1, xs[KN_MAX_DIMS];
    for (int d = x->ndim - 1; d >= 0; d--) {
        xs[d] = st;
        st *= x->dims[d];
    }
    for (int d = 0; d < x->ndim; d++) {
        if (mask[d]) {
            g.rd[g.nr] = x->dims[d];
            g.rs[g.nr] = xs[d];
            g.nr++;
            g.n_red *= x->dims[d];
        } else {
            g.kd[g.nk] = x->dims[d];
            g.ks[g.nk] = xs[d];
            g.nk++;
        }
    }
    unsigned gr = kn_cuda_blocks(n_out, 128);
    switch (x->dtype) {
    case KN_F32:
        KN_LAUNCH(reduce_float_kernel<float>, gr, 128, 0, s, (float *)y->data, (const float *)x->data, n_out, g, kind);
        break;
    case KN_F16:
        KN_LAUNCH(reduce_float_kernel<__half>, gr, 128, 0, s, (__half *)y->data, (const __half *)x->data, n_out, g,
                  kind);
        break;
    case KN_BF16:
        KN_LAUNCH(reduce_float_kernel<__nv_bfloat16>, gr, 128, 0, s, (__nv_bfloat16 *)y->data,
                  (const __nv_bfloat16 *)x->data, n_out, g, kind);
        break;
    case KN_I32:
        KN_LAUNCH(reduce_int_kernel<int32_t>, gr, 128, 0, s, (int32_t *)y->data, (const int32_t *)x->data, n_out, g,
                  kind);
        break;
    case KN_I64:
        KN_LAUNCH(reduce_int_kernel<int64_t>, gr, 128, 0, s, (int64_t *)y->data, (const int64_t *)x->data, n_out, g,
                  kind);
        break;
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "Reduce kernel");
    return NULL;
}

KN_CUDA_KERNEL(ReduceSum) { return reduce_cuda(ctx, node, in, n_in, out[0], RD_SUM); }
KN_CUDA_KERNEL(ReduceMean) { return reduce_cuda(ctx, node, in, n_in, out[0], RD_MEAN); }
KN_CUDA_KERNEL(ReduceMax) { return reduce_cuda(ctx, node, in, n_in, out[0], RD_MAX); }
KN_CUDA_KERNEL(ReduceMin) { return reduce_cuda(ctx, node, in, n_in, out[0], RD_MIN); }
KN_CUDA_KERNEL(ReduceProd) { return reduce_cuda(ctx, node, in, n_in, out[0], RD_PROD); }
KN_CUDA_KERNEL(ReduceL1) { return reduce_cuda(ctx, node, in, n_in, out[0], RD_L1); }
KN_CUDA_KERNEL(ReduceL2) { return reduce_cuda(ctx, node, in, n_in, out[0], RD_L2); }
KN_CUDA_KERNEL(ReduceLogSum) { return reduce_cuda(ctx, node, in, n_in, out[0], RD_LOGSUM); }
KN_CUDA_KERNEL(ReduceLogSumExp) { return reduce_cuda(ctx, node, in, n_in, out[0], RD_LOGSUMEXP); }
KN_CUDA_KERNEL(ReduceSumSquare) { return reduce_cuda(ctx, node, in, n_in, out[0], RD_SUMSQ); }

bool kn_cuda_reduce_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 1 || !in[0]) return false;
    kn_dtype t = in[0]->dtype;
    // L2, LogSum, LogSumExp of integers go through float on the CPU: left there
    if (n->op == KN_OP_ReduceL2 || n->op == KN_OP_ReduceLogSum || n->op == KN_OP_ReduceLogSumExp)
        return kn_cuda_float(t);
    return kn_cuda_float(t) || t == KN_I32 || t == KN_I64;
}
