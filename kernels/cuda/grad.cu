// The kiln backward ops autograd emits (graph/ops.def, CPU references in kernels/cpu/grad.c) on
// the device: ReduceSumTo, SoftmaxGrad, LogSoftmaxGrad, LayerNormalizationGrad, GeluGrad,
// GatherGrad and SliceGrad, for float32, float16 and bfloat16. As on the CPU every sum is taken
// in double and a result is rounded once. Nothing here uses float atomics: every output element
// is owned by one thread (or one block), and sums run in a fixed order, so two runs give the
// same bits. ReduceSumTo and GatherGrad add up in the CPU's order, which makes them bit-equal to
// it in float32.
#include "kernels/cuda/cuda_common.h"

extern "C" {
kn_status *kn_shapeops_slice_params(const kn_node *node, const kn_tensor *const *in, int n_in, int64_t *starts,
                                    int64_t *steps, int64_t *out_dims);
}

#define KG_THREADS 128

template <class T> __device__ static inline double kg_ld(const T *p, int64_t i) { return (double)kn_num<T>::ld(p[i]); }
// double -> T through float, as the rest of the backend stores 16-bit results
template <class T> __device__ static inline T kg_st(double v) {
    return kn_num<T>::st((typename kn_num<T>::acc)(float)v);
}
template <> __device__ inline float kg_st<float>(double v) { return (float)v; }

// Sum of v over the block (every thread gets it). sh holds 32 doubles; the leading barrier lets
// a second call reuse sh after the first one's readers are done.
__device__ static double kg_block_sum(double v, KN_SHARED_PTR(double) sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = (int)threadIdx.x < nw ? sh[threadIdx.x] : 0.0;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}

static int kg_dtype_index(kn_dtype t) { return t == KN_F32 ? 0 : t == KN_F16 ? 1 : t == KN_BF16 ? 2 : -1; }

// Calls F<T>::run(args...) for T of dtype t (float32, float16, bfloat16).
#define KG_DISPATCH(t, node, tensor, F, ...) \
    do { \
        switch (t) { \
        case KN_F32: F<float>::run(__VA_ARGS__); break; \
        case KN_F16: F<__half>::run(__VA_ARGS__); break; \
        case KN_BF16: F<__nv_bfloat16>::run(__VA_ARGS__); break; \
        default: return kn_err_dtype((node), (tensor)); \
        } \
    } while (0)

// ---- ReduceSumTo(x, shape) ----
// y[o] = sum over the broadcast dims of x, walked in x's order (the CPU's): kept dims kd/ks in
// output order, reduced dims rd/rs.
struct kg_sumto_geom {
    int nk, nr;
    int64_t kd[KN_MAX_DIMS], ks[KN_MAX_DIMS], rd[KN_MAX_DIMS], rs[KN_MAX_DIMS];
    int64_t n_red;
};
__device__ static inline int64_t kg_off(const int64_t *d, const int64_t *s, int n, int64_t i) {
    int64_t off = 0;
    for (int k = n - 1; k >= 0; k--) {
        off += (i % d[k]) * s[k];
        i /= d[k];
    }
    return off;
}
template <class T> __global__ void sumto_kernel(T *y, const T *x, int64_t n_out, kg_sumto_geom g) {
    KN_GRID_STRIDE(o, n_out) {
        int64_t base = kg_off(g.kd, g.ks, g.nk, o);
        double acc = 0;
        for (int64_t r = 0; r < g.n_red; r++) acc += kg_ld(x, base + kg_off(g.rd, g.rs, g.nr, r));
        y[o] = kg_st<T>(acc);
    }
}
template <class T> struct sumto_launch {
    static void run(kn_tensor *y, const kn_tensor *x, int64_t n_out, const kg_sumto_geom &g, cudaStream_t s) {
        KN_LAUNCH(sumto_kernel<T>, kn_cuda_blocks(n_out, KG_THREADS), KG_THREADS, 0, s, (T *)y->data,
                  (const T *)x->data, n_out, g);
    }
};

KN_CUDA_KERNEL(KnReduceSumTo) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    int64_t ny = kn_numel(y);
    if (ny <= 0) return NULL;
    int r = x->ndim, lead = x->ndim - y->ndim;
    if (lead < 0)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ReduceSumTo: output rank %d above input rank %d", y->ndim, r);
    kg_sumto_geom g;
    memset(&g, 0, sizeof g);
    g.n_red = 1;
    int64_t st = 1, xs[KN_MAX_DIMS];
    for (int d = r - 1; d >= 0; d--) {
        xs[d] = st;
        st *= x->dims[d];
    }
    for (int d = 0; d < r; d++) {
        int64_t yd = d >= lead ? y->dims[d - lead] : 1;
        if (yd == x->dims[d]) {
            g.kd[g.nk] = x->dims[d];
            g.ks[g.nk++] = xs[d];
        } else if (yd == 1) {
            g.rd[g.nr] = x->dims[d];
            g.rs[g.nr++] = xs[d];
            g.n_red *= x->dims[d];
        } else {
            return kn_error(KN_ERR_INVALID_ARGUMENT, "ReduceSumTo: dim %d of the output is %lld, the input's %lld", d,
                            (long long)yd, (long long)x->dims[d]);
        }
    }
    KG_DISPATCH(x->dtype, node, x, sumto_launch, y, x, ny, g, kn_cuda_s(ctx));
    KN_CUDA_LAUNCHED(node, "ReduceSumTo kernel");
    return NULL;
}

// ---- SoftmaxGrad / LogSoftmaxGrad(dy, y) ----
// One block per row of n elements at stride inner: s = sum(dy * y) (log form: sum(dy)), then
// dx = y * (dy - s) (log form: dy - exp(y) * s), in double.
template <class T>
__global__ void softmax_grad_kernel(T *dx, const T *dy, const T *y, int64_t n, int64_t inner, bool lg) {
    KN_SHARED(double, sh, 32);
    int64_t row = blockIdx.x, o = row / inner, p = row % inner, base = o * n * inner + p;
    double s = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
        int64_t i = base + j * inner;
        s += lg ? kg_ld(dy, i) : kg_ld(dy, i) * kg_ld(y, i);
    }
    s = kg_block_sum(s, sh);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
        int64_t i = base + j * inner;
        double g = kg_ld(dy, i), v = kg_ld(y, i);
        dx[i] = kg_st<T>(lg ? g - exp(v) * s : v * (g - s));
    }
}
template <class T> struct softmax_grad_launch {
    static void run(kn_tensor *dx, const kn_tensor *dy, const kn_tensor *y, int64_t rows, int64_t n, int64_t inner,
                    bool lg, cudaStream_t s) {
        KN_LAUNCH(softmax_grad_kernel<T>, (unsigned)rows, KG_THREADS, 0, s, (T *)dx->data, (const T *)dy->data,
                  (const T *)y->data, n, inner, lg);
    }
};

static kn_status *softmax_grad_cuda(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in,
                                    kn_tensor *const *out, bool lg) {
    const kn_tensor *dy = in[0], *y = in[1];
    kn_tensor *dx = out[0];
    if (!dx || kn_numel(dy) <= 0) return NULL;
    const kn_params_softmax_grad *p = KN_PARAMS(node, softmax_grad);
    int axis;
    KN_TRY(kn_norm_axis(p->axis, dy->ndim > 0 ? dy->ndim : 1, node, &axis));
    int64_t outer = 1, n = 1, inner = 1;
    for (int i = 0; i < dy->ndim; i++) {
        if (i < axis) outer *= dy->dims[i];
        else if (i == axis || p->coerce_2d) n *= dy->dims[i];
        else inner *= dy->dims[i];
    }
    if (kn_numel(y) != kn_numel(dy))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: dy and y differ in size", node->op_type);
    int64_t rows = outer * inner;
    if (rows > 0x7fffffffLL) return kn_error(KN_ERR_UNSUPPORTED, "%s: %lld rows", node->op_type, (long long)rows);
    KG_DISPATCH(dy->dtype, node, dy, softmax_grad_launch, dx, dy, y, rows, n, inner, lg, kn_cuda_s(ctx));
    KN_CUDA_LAUNCHED(node, "SoftmaxGrad kernel");
    return NULL;
}
KN_CUDA_KERNEL(KnSoftmaxGrad) { return softmax_grad_cuda(ctx, node, in, out, false); }
KN_CUDA_KERNEL(KnLogSoftmaxGrad) { return softmax_grad_cuda(ctx, node, in, out, true); }

// ---- LayerNormalizationGrad(dy, x, scale, mean, inv_std) -> dx, dscale, dbias ----
// dx: one block per row, g = dy * scale, xhat = (x - mean) * inv:
//   dx = inv * (g - mean(g) - xhat * mean(g * xhat))
// dscale, dbias: one thread per column walking the rows in order (the CPU's order).
template <class T, class U>
__global__ void ln_grad_dx_kernel(T *dx, const T *dy, const T *x, const T *scale, const U *mean, const U *inv,
                                  int64_t n) {
    KN_SHARED(double, sh, 32);
    int64_t r = blockIdx.x;
    double mu = (double)kn_num<U>::ld(mean[r]), is = (double)kn_num<U>::ld(inv[r]);
    double mg = 0, mgx = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        int64_t k = r * n + i;
        double g = kg_ld(dy, k) * kg_ld(scale, i), xh = (kg_ld(x, k) - mu) * is;
        mg += g;
        mgx += g * xh;
    }
    mg = kg_block_sum(mg, sh) / (double)n;
    mgx = kg_block_sum(mgx, sh) / (double)n;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        int64_t k = r * n + i;
        double g = kg_ld(dy, k) * kg_ld(scale, i), xh = (kg_ld(x, k) - mu) * is;
        dx[k] = kg_st<T>(is * (g - mg - xh * mgx));
    }
}
template <class T, class U>
__global__ void ln_grad_params_kernel(T *dscale, T *dbias, const T *dy, const T *x, const U *mean, const U *inv,
                                      int64_t rows, int64_t n) {
    KN_GRID_STRIDE(i, n) {
        double ds = 0, db = 0;
        for (int64_t r = 0; r < rows; r++) {
            double d = kg_ld(dy, r * n + i);
            ds += d * ((kg_ld(x, r * n + i) - (double)kn_num<U>::ld(mean[r])) * (double)kn_num<U>::ld(inv[r]));
            db += d;
        }
        if (dscale) dscale[i] = kg_st<T>(ds);
        if (dbias) dbias[i] = kg_st<T>(db);
    }
}
template <class T, class U>
static void ln_grad_launch(kn_tensor *const *out, int n_out, const kn_tensor *const *in, int64_t rows, int64_t n,
                           cudaStream_t s) {
    const T *dy = (const T *)in[0]->data, *x = (const T *)in[1]->data, *sc = (const T *)in[2]->data;
    const U *mean = (const U *)in[3]->data, *inv = (const U *)in[4]->data;
    kn_tensor *dx = out[0], *dscale = n_out > 1 ? out[1] : NULL, *dbias = n_out > 2 ? out[2] : NULL;
    if (dx && rows > 0)
        KN_LAUNCH((ln_grad_dx_kernel<T, U>), (unsigned)rows, KG_THREADS, 0, s, (T *)dx->data, dy, x, sc, mean, inv, n);
    if ((dscale || dbias) && n > 0)
        KN_LAUNCH((ln_grad_params_kernel<T, U>), kn_cuda_blocks(n, KG_THREADS), KG_THREADS, 0, s,
                  dscale ? (T *)dscale->data : (T *)NULL, dbias ? (T *)dbias->data : (T *)NULL, dy, x, mean, inv, rows,
                  n);
}

KN_CUDA_KERNEL(KnLayerNormalizationGrad) {
    const kn_tensor *x = in[1], *scale = in[2], *mean = in[3], *inv = in[4];
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, layernorm)->axis, x->ndim, node, &axis));
    int64_t rows = 1, n = 1;
    for (int i = 0; i < x->ndim; i++) *(i < axis ? &rows : &n) *= x->dims[i];
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN], b3[KN_DESC_LEN];
    KN_CHECK(kn_numel(scale) == n && kn_numel(mean) == rows && kn_numel(inv) == rows && kn_numel(in[0]) == rows * n,
             KN_ERR_INVALID_ARGUMENT, "LayerNormalizationGrad: scale %s or statistics %s do not match x %s",
             kn_tensor_desc(scale, b1, sizeof b1), kn_tensor_desc(mean, b2, sizeof b2),
             kn_tensor_desc(x, b3, sizeof b3));
    if (rows > 0x7fffffffLL) return kn_error(KN_ERR_UNSUPPORTED, "LayerNormalizationGrad: %lld rows", (long long)rows);
    if (n <= 0) return NULL; // empty rows: dx is empty, and dscale/dbias too
    // with rows == 0 dscale and dbias are sums over nothing: the params kernel writes zeros
    cudaStream_t s = kn_cuda_s(ctx);
    bool st16 = mean->dtype == KN_BF16;
    switch (x->dtype) {
    case KN_F32:
        st16 ? ln_grad_launch<float, __nv_bfloat16>(out, n_out, in, rows, n, s)
             : ln_grad_launch<float, float>(out, n_out, in, rows, n, s);
        break;
    case KN_F16:
        st16 ? ln_grad_launch<__half, __nv_bfloat16>(out, n_out, in, rows, n, s)
             : ln_grad_launch<__half, float>(out, n_out, in, rows, n, s);
        break;
    case KN_BF16:
        st16 ? ln_grad_launch<__nv_bfloat16, __nv_bfloat16>(out, n_out, in, rows, n, s)
             : ln_grad_launch<__nv_bfloat16, float>(out, n_out, in, rows, n, s);
        break;
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "LayerNormalizationGrad kernel");
    return NULL;
}

// ---- GeluGrad(dy, x) = dy * gelu'(x) ----
__device__ static inline double kg_gelu_grad(double x, bool tanh_form) {
    if (!tanh_form) return 0.5 * (1.0 + erf(x * 0.70710678118654752)) + x * exp(-0.5 * x * x) * 0.39894228040143268;
    const double k = 0.79788456080286536, a = 0.044715;
    double t = tanh(k * (x + a * x * x * x));
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * a * x * x);
}
template <class T> __global__ void gelu_grad_kernel(T *dx, const T *dy, const T *x, int64_t n, bool tanh_form) {
    KN_GRID_STRIDE(i, n) dx[i] = kg_st<T>(kg_ld(dy, i) * kg_gelu_grad(kg_ld(x, i), tanh_form));
}
template <class T> struct gelu_grad_launch {
    static void run(kn_tensor *dx, const kn_tensor *dy, const kn_tensor *x, int64_t n, bool tf, cudaStream_t s) {
        KN_LAUNCH(gelu_grad_kernel<T>, kn_cuda_blocks(n, 256), 256, 0, s, (T *)dx->data, (const T *)dy->data,
                  (const T *)x->data, n, tf);
    }
};
KN_CUDA_KERNEL(KnGeluGrad) {
    const kn_tensor *dy = in[0], *x = in[1];
    int64_t n = kn_numel(dy);
    KN_CHECK(kn_numel(x) == n, KN_ERR_INVALID_ARGUMENT, "GeluGrad: dy and x differ in size");
    if (n <= 0 || !out[0]) return NULL;
    KG_DISPATCH(dy->dtype, node, dy, gelu_grad_launch, out[0], dy, x, n, KN_PARAMS(node, act)->gelu_tanh,
                kn_cuda_s(ctx));
    KN_CUDA_LAUNCHED(node, "GeluGrad kernel");
    return NULL;
}

// ---- GatherGrad(dy, indices, shape): y[o, idx[j], k] += dy[o, j, k] ----
// Deterministic without float atomics: the indices are bucketed by target row (a counting sort,
// stable in j) into the stream's workspace, then each output element sums its bucket in j order.
// The bucketing walks the indices on one thread, O(indices + rows); the sums are parallel.
// ends[t] is one past bucket t's last entry, so bucket t is [t ? ends[t - 1] : 0, ends[t]).
template <class I>
__global__ void gather_grad_index_kernel(int32_t *ends, int32_t *list, const I *idx, int64_t ni, int64_t dim, int *err,
                                         int code) {
    for (int64_t t = 0; t < dim; t++) ends[t] = 0;
    bool bad = false;
    for (int64_t j = 0; j < ni; j++) {
        int64_t t = (int64_t)idx[j];
        if (t < 0) t += dim;
        if (t < 0 || t >= dim) bad = true;
        else ends[t]++;
    }
    int32_t run = 0;
    for (int64_t t = 0; t < dim; t++) { // exclusive prefix sum: ends[t] = start of bucket t
        int32_t c = ends[t];
        ends[t] = run;
        run += c;
    }
    for (int64_t j = 0; j < ni; j++) { // each entry advances its bucket's start to its end
        int64_t t = (int64_t)idx[j];
        if (t < 0) t += dim;
        if (t >= 0 && t < dim) list[ends[t]++] = (int32_t)j;
    }
    if (bad) atomicCAS(err, 0, code);
}
template <class T>
__global__ void gather_grad_sum_kernel(T *y, const T *dy, const int32_t *ends, const int32_t *list, int64_t outer,
                                       int64_t dim, int64_t inner, int64_t ni) {
    int64_t n = outer * dim * inner;
    KN_GRID_STRIDE(i, n) {
        int64_t k = i % inner, r = i / inner, t = r % dim, o = r / dim;
        int32_t b = t ? ends[t - 1] : 0, e = ends[t];
        double acc = 0;
        for (int32_t q = b; q < e; q++) acc += kg_ld(dy, (o * ni + list[q]) * inner + k);
        y[i] = kg_st<T>(acc);
    }
}
template <class T> struct gather_grad_launch {
    static void run(kn_tensor *y, const kn_tensor *dy, const int32_t *ends, const int32_t *list, int64_t outer,
                    int64_t dim, int64_t inner, int64_t ni, cudaStream_t s) {
        KN_LAUNCH(gather_grad_sum_kernel<T>, kn_cuda_blocks(outer * dim * inner, 256), 256, 0, s, (T *)y->data,
                  (const T *)dy->data, ends, list, outer, dim, inner, ni);
    }
};

KN_CUDA_KERNEL(KnGatherGrad) {
    const kn_tensor *dy = in[0], *ind = in[1];
    kn_tensor *y = out[0];
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, axis)->axis, y->ndim, node, &axis));
    int64_t outer = 1, inner = 1, dim = y->dims[axis], ni = kn_numel(ind);
    for (int i = 0; i < y->ndim; i++) {
        if (i < axis) outer *= y->dims[i];
        else if (i > axis) inner *= y->dims[i];
    }
    KN_CHECK(kn_numel(dy) == outer * ni * inner, KN_ERR_INVALID_ARGUMENT,
             "GatherGrad: dy has %lld elements, expected %lld", (long long)kn_numel(dy),
             (long long)(outer * ni * inner));
    if (kn_numel(y) <= 0) return NULL;
    kn_cuda_stream *st = kn_cuda_st(ctx);
    size_t need = sizeof(int32_t) * (size_t)(dim + ni);
    if (need > st->ws_bytes || ni > 0x7fffffffLL)
        return kn_error(KN_ERR_UNSUPPORTED,
                        "GatherGrad: %lld indices into %lld rows need %zu bytes of workspace on cuda", (long long)ni,
                        (long long)dim, need);
    // the workspace is the stream's: the kernels below run in stream order with every other
    // user of it (cuBLASLt), so it is free here
    int32_t *ends = (int32_t *)st->ws, *list = ends + dim;
    cudaStream_t s = kn_cuda_s(ctx);
    int *err = st->dev_err, code = kn_cuda_err_code(ctx, node);
    if (ind->dtype == KN_I64)
        KN_LAUNCH(gather_grad_index_kernel<int64_t>, 1, 1, 0, s, ends, list, (const int64_t *)ind->data, ni, dim, err,
                  code);
    else
        KN_LAUNCH(gather_grad_index_kernel<int32_t>, 1, 1, 0, s, ends, list, (const int32_t *)ind->data, ni, dim, err,
                  code);
    KN_CUDA_LAUNCHED(node, "GatherGrad index kernel");
    KG_DISPATCH(dy->dtype, node, dy, gather_grad_launch, y, dy, ends, list, outer, dim, inner, ni, s);
    KN_CUDA_LAUNCHED(node, "GatherGrad kernel");
    return NULL;
}

// ---- SliceGrad(dy, shape, starts, ends[, axes, steps]): zeros, then dy where Slice read ----
// Slice reads each x element at most once, so every dy element has its own target: no races.
struct kg_slice_geom {
    int nd;
    int64_t od[KN_MAX_DIMS], step[KN_MAX_DIMS]; // slice dims, and y offsets per slice step
    int64_t base;
};
template <class E> __global__ void slice_grad_kernel(E *y, const E *dy, int64_t n, kg_slice_geom g) {
    KN_GRID_STRIDE(i, n) y[g.base + kg_off(g.od, g.step, g.nd, i)] = dy[i];
}

KN_CUDA_KERNEL(KnSliceGrad) {
    const kn_tensor *dy = in[0];
    kn_tensor *y = out[0];
    kn_node sl = *node; // Slice's parameter code reads its inputs from opset 10 on (this node is opset 1)
    sl.opset = 10;
    kn_tensor xs = *y;
    const kn_tensor *sin[5] = {&xs, in[2], in[3], n_in > 4 ? in[4] : NULL, n_in > 5 ? in[5] : NULL};
    int64_t st[KN_MAX_DIMS], sp[KN_MAX_DIMS], od[KN_MAX_DIMS];
    KN_TRY(kn_shapeops_slice_params(&sl, sin, 5, st, sp, od));
    int r = y->ndim;
    kg_slice_geom g;
    memset(&g, 0, sizeof g);
    g.nd = r;
    int64_t n = 1, s = 1;
    for (int i = r - 1; i >= 0; i--) {
        g.od[i] = od[i];
        g.step[i] = sp[i] * s;
        g.base += st[i] * s;
        s *= y->dims[i];
        n *= od[i];
    }
    KN_CHECK(n == kn_numel(dy), KN_ERR_INVALID_ARGUMENT, "SliceGrad: dy has %lld elements, the slice %lld",
             (long long)kn_numel(dy), (long long)n);
    cudaStream_t cs = kn_cuda_s(ctx);
    if (kn_nbytes(y)) KN_CUDA_TRY(cudaMemsetAsync(y->data, 0, kn_nbytes(y), cs), node, "SliceGrad zeros");
    if (n <= 0) return NULL;
    unsigned gr = kn_cuda_blocks(n, 256);
    switch (kn_dtype_size(dy->dtype)) {
    case 2:
        KN_LAUNCH(slice_grad_kernel<uint16_t>, gr, 256, 0, cs, (uint16_t *)y->data, (const uint16_t *)dy->data, n, g);
        break;
    case 4:
        KN_LAUNCH(slice_grad_kernel<uint32_t>, gr, 256, 0, cs, (uint32_t *)y->data, (const uint32_t *)dy->data, n, g);
        break;
    default: return kn_err_dtype(node, dy);
    }
    KN_CUDA_LAUNCHED(node, "SliceGrad kernel");
    return NULL;
}

// Float32/float16/bfloat16 gradients; the float inputs of one dtype (LayerNormalizationGrad's
// statistics float32 or bfloat16, as LayerNormalization writes them); GatherGrad's indices int32
// or int64.
bool kn_cuda_grad_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 1 || !in[0] || kg_dtype_index(in[0]->dtype) < 0) return false;
    kn_dtype t = in[0]->dtype;
    switch (n->op) {
    case KN_OP_KnSoftmaxGrad:
    case KN_OP_KnLogSoftmaxGrad:
    case KN_OP_KnGeluGrad: return n_in >= 2 && in[1] && in[1]->dtype == t;
    case KN_OP_KnLayerNormalizationGrad:
        if (n_in < 5) return false;
        for (int k = 1; k < 3; k++)
            if (!in[k] || in[k]->dtype != t) return false;
        for (int k = 3; k < 5; k++)
            if (!in[k] || (in[k]->dtype != KN_F32 && in[k]->dtype != KN_BF16) || in[k]->dtype != in[3]->dtype)
                return false;
        return true;
    case KN_OP_KnGatherGrad: return n_in >= 3 && in[1] && (in[1]->dtype == KN_I32 || in[1]->dtype == KN_I64);
    default: return true; // ReduceSumTo, SliceGrad: the shape arguments are read on the host
    }
}
