// Data movement on the device: Transpose, Expand, Slice (one strided-copy kernel), Concat and
// Split (2-D pitched copies), the byte copies of Reshape/Flatten/Squeeze/Unsqueeze/Identity (none
// when the planner let the output alias the input), and ConstantOfShape. Shape arguments are read
// on the host (see the backend's host_inputs); output shapes come from inference.
#include "kernels/cuda/cuda_common.h"

extern "C" {
kn_status *kn_shapeops_slice_params(const kn_node *node, const kn_tensor *const *in, int n_in, int64_t *starts,
                                    int64_t *steps, int64_t *out_dims);
kn_status *kn_shapeops_split_sizes(const kn_node *node, const kn_tensor *const *in, int n_in, int n_out, int axis,
                                   int64_t *sizes);
}

struct kn_copy_geom {
    int nd;
    int64_t dims[KN_MAX_DIMS];
    int64_t sst[KN_MAX_DIMS];
};

// dst[dims] (contiguous) = src[sum coord_d * sst[d]]
template <class E> __global__ void strided_copy_kernel(E *dst, const E *src, int64_t n, kn_copy_geom s) {
    KN_GRID_STRIDE(i, n) {
        int64_t r = i, off = 0;
        for (int d = s.nd - 1; d >= 0; d--) {
            int64_t c = r % s.dims[d];
            r /= s.dims[d];
            off += c * s.sst[d];
        }
        dst[i] = src[off];
    }
}

kn_status *kn_cuda_strided_copy(const kn_node *node, void *dst, const void *src, size_t es, int nd, const int64_t *dims,
                                const int64_t *sst, cudaStream_t st) {
    kn_copy_geom s;
    memset(&s, 0, sizeof s);
    int64_t n = 1;
    // drop size-1 dims: fewer divisions per element
    for (int d = 0; d < nd; d++) {
        n *= dims[d];
        if (dims[d] == 1) continue;
        s.dims[s.nd] = dims[d];
        s.sst[s.nd] = sst[d];
        s.nd++;
    }
    if (n <= 0) return NULL;
    unsigned g = kn_cuda_blocks(n, 256);
    switch (es) {
    case 1: KN_LAUNCH(strided_copy_kernel<uint8_t>, g, 256, 0, st, (uint8_t *)dst, (const uint8_t *)src, n, s); break;
    case 2:
        KN_LAUNCH(strided_copy_kernel<uint16_t>, g, 256, 0, st, (uint16_t *)dst, (const uint16_t *)src, n, s);
        break;
    case 4:
        KN_LAUNCH(strided_copy_kernel<uint32_t>, g, 256, 0, st, (uint32_t *)dst, (const uint32_t *)src, n, s);
        break;
    case 8:
        KN_LAUNCH(strided_copy_kernel<uint64_t>, g, 256, 0, st, (uint64_t *)dst, (const uint64_t *)src, n, s);
        break;
    default: return kn_error(KN_ERR_UNSUPPORTED, "cuda: strided copy of %zu-byte elements", es);
    }
    KN_CUDA_LAUNCHED(node, "strided copy kernel");
    return NULL;
}

static void row_strides(const kn_tensor *t, int64_t *st) {
    int64_t s = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        st[d] = s;
        s *= t->dims[d];
    }
}

KN_CUDA_KERNEL(Transpose) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    int64_t xs[KN_MAX_DIMS], sst[KN_MAX_DIMS];
    int perm[KN_MAX_DIMS];
    const int64_t *p = KN_PARAMS(node, transpose)->perm;
    int np = KN_PARAMS(node, transpose)->n_perm;
    for (int d = 0; d < x->ndim; d++) perm[d] = np == x->ndim ? (int)p[d] : x->ndim - 1 - d;
    row_strides(x, xs);
    for (int d = 0; d < y->ndim; d++) sst[d] = xs[perm[d]];
    return kn_cuda_strided_copy(node, y->data, x->data, kn_dtype_size(x->dtype), y->ndim, y->dims, sst, kn_cuda_s(ctx));
}

KN_CUDA_KERNEL(Expand) {
    kn_bcast bc;
    kn_cuda_bcast_init(&bc, out[0], in, 1);
    return kn_cuda_strided_copy(node, out[0]->data, in[0]->data, kn_dtype_size(in[0]->dtype), out[0]->ndim,
                                out[0]->dims, bc.st[0], kn_cuda_s(ctx));
}

KN_CUDA_KERNEL(Slice) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    int64_t st[KN_MAX_DIMS], sp[KN_MAX_DIMS], od[KN_MAX_DIMS], xs[KN_MAX_DIMS], ss[KN_MAX_DIMS];
    KN_TRY(kn_shapeops_slice_params(node, in, n_in, st, sp, od));
    row_strides(x, xs);
    int64_t off = 0;
    for (int k = 0; k < x->ndim; k++) {
        if (od[k] != y->dims[k])
            return kn_error(KN_ERR_RUNTIME, "Slice: output dim %d is %lld, expected %lld", k, (long long)y->dims[k],
                            (long long)od[k]);
        if (od[k] == 0) return NULL;
        off += st[k] * xs[k];
        ss[k] = od[k] > 1 ? sp[k] * xs[k] : 0; // a huge step on a length-1 dim would overflow int64
    }
    size_t es = kn_dtype_size(x->dtype);
    return kn_cuda_strided_copy(node, y->data, (const char *)x->data + off * (int64_t)es, es, x->ndim, od, ss,
                                kn_cuda_s(ctx));
}

// outer x (axis * inner) blocks: Concat copies each input into its column band of the output,
// Split each band out of the input.
static void axis_split(const kn_tensor *t, int axis, int64_t *outer, int64_t *inner) {
    *outer = 1;
    *inner = 1;
    for (int d = 0; d < axis; d++) *outer *= t->dims[d];
    for (int d = axis + 1; d < t->ndim; d++) *inner *= t->dims[d];
}

// outer rows of w bytes from src (pitch sp) to dst (pitch dp). One row (an axis-0 Concat/Split)
// is a plain copy: cudaMemcpy2D refuses pitches above the device's maximum (about 2 GiB).
static kn_status *band_copy(kn_exec_ctx *ctx, const kn_node *node, void *dst, size_t dp, const void *src, size_t sp,
                            size_t w, size_t outer, const char *what) {
    if (!w || !outer) return NULL;
    if (outer == 1 || (w == dp && w == sp))
        KN_CUDA_TRY(cudaMemcpyAsync(dst, src, w * outer, cudaMemcpyDeviceToDevice, kn_cuda_s(ctx)), node, what);
    else
        KN_CUDA_TRY(cudaMemcpy2DAsync(dst, dp, src, sp, w, outer, cudaMemcpyDeviceToDevice, kn_cuda_s(ctx)), node,
                    what);
    return NULL;
}

KN_CUDA_KERNEL(Concat) {
    kn_tensor *y = out[0];
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, axis)->axis, y->ndim, node, &axis));
    int64_t outer, inner;
    axis_split(y, axis, &outer, &inner);
    size_t es = kn_dtype_size(y->dtype);
    size_t row = (size_t)(y->dims[axis] * inner) * es, col = 0;
    if (kn_numel(y) <= 0) return NULL;
    for (int k = 0; k < n_in; k++) {
        if (!in[k]) continue;
        size_t w = (size_t)(in[k]->ndim ? in[k]->dims[axis] : 1) * (size_t)inner * es;
        KN_TRY(band_copy(ctx, node, (char *)y->data + col, row, in[k]->data, w, w, (size_t)outer, "Concat copy"));
        col += w;
    }
    return NULL;
}

KN_CUDA_KERNEL(Split) {
    const kn_tensor *x = in[0];
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, split)->axis, x->ndim, node, &axis));
    int64_t outer, inner;
    axis_split(x, axis, &outer, &inner);
    size_t es = kn_dtype_size(x->dtype);
    size_t row = (size_t)(x->dims[axis] * inner) * es, col = 0;
    // band widths from the split sizes, not from the outputs: an omitted output (NULL) still
    // takes its band, and skipping it would shift every later output
    int64_t sizes[256];
    KN_TRY(kn_shapeops_split_sizes(node, in, n_in, n_out, axis, sizes));
    for (int k = 0; k < n_out; k++) {
        if (sizes[k] < 0) return kn_error(KN_ERR_RUNTIME, "Split: split sizes not known at run time");
        size_t w = (size_t)sizes[k] * (size_t)inner * es;
        if (out[k])
            KN_TRY(band_copy(ctx, node, out[k]->data, w, (const char *)x->data + col, row, w, (size_t)outer,
                             "Split copy"));
        col += w;
    }
    return NULL;
}

static kn_status *byte_copy(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *x, kn_tensor *y) {
    size_t n = kn_nbytes(y);
    if (!n || y->data == x->data) return NULL; // aliased by the planner: nothing to move
    KN_CUDA_TRY(cudaMemcpyAsync(y->data, x->data, n, cudaMemcpyDeviceToDevice, kn_cuda_s(ctx)), node, "copy");
    return NULL;
}
KN_CUDA_KERNEL(Reshape) { return byte_copy(ctx, node, in[0], out[0]); }
KN_CUDA_KERNEL(Flatten) { return byte_copy(ctx, node, in[0], out[0]); }
KN_CUDA_KERNEL(Squeeze) { return byte_copy(ctx, node, in[0], out[0]); }
KN_CUDA_KERNEL(Unsqueeze) { return byte_copy(ctx, node, in[0], out[0]); }
KN_CUDA_KERNEL(Identity) { return byte_copy(ctx, node, in[0], out[0]); }

// y[n] = v (one element of es bytes)
template <class E> __global__ void fill_kernel(E *y, E v, int64_t n) { KN_GRID_STRIDE(i, n) y[i] = v; }

KN_CUDA_KERNEL(ConstantOfShape) {
    kn_tensor *y = out[0];
    int64_t n = kn_numel(y);
    if (n <= 0) return NULL;
    const kn_tensor *value = KN_PARAMS(node, const_shape)->value;
    uint64_t v = 0;
    size_t es = kn_dtype_size(y->dtype);
    if (value && value->data && kn_numel(value) >= 1) memcpy(&v, value->data, es);
    unsigned g = kn_cuda_blocks(n, 256);
    cudaStream_t s = kn_cuda_s(ctx);
    switch (es) {
    case 1: KN_LAUNCH(fill_kernel<uint8_t>, g, 256, 0, s, (uint8_t *)y->data, (uint8_t)v, n); break;
    case 2: KN_LAUNCH(fill_kernel<uint16_t>, g, 256, 0, s, (uint16_t *)y->data, (uint16_t)v, n); break;
    case 4: KN_LAUNCH(fill_kernel<uint32_t>, g, 256, 0, s, (uint32_t *)y->data, (uint32_t)v, n); break;
    case 8: KN_LAUNCH(fill_kernel<uint64_t>, g, 256, 0, s, (uint64_t *)y->data, v, n); break;
    default: return kn_err_dtype(node, y);
    }
    KN_CUDA_LAUNCHED(node, "ConstantOfShape kernel");
    return NULL;
}

bool kn_cuda_shape_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 1) return n->op == KN_OP_ConstantOfShape;
    switch (n->op) {
    case KN_OP_Reshape:
    case KN_OP_Flatten:
    case KN_OP_Squeeze:
    case KN_OP_Unsqueeze:
    case KN_OP_Identity: return in[0] != NULL;
    case KN_OP_Transpose:
    case KN_OP_Expand:
    case KN_OP_Slice:
    case KN_OP_Concat:
    case KN_OP_Split: {
        size_t es = kn_dtype_size(in[0]->dtype);
        return es == 1 || es == 2 || es == 4 || es == 8;
    }
    case KN_OP_Gather: {
        if (n_in < 2 || !in[1] || (in[1]->dtype != KN_I32 && in[1]->dtype != KN_I64)) return false;
        size_t es = kn_dtype_size(in[0]->dtype);
        return es == 1 || es == 2 || es == 4 || es == 8;
    }
    case KN_OP_ConstantOfShape: {
        const kn_tensor *value = KN_PARAMS(n, const_shape)->value;
        if (value && value->dtype == KN_STRING) return false;
        return true;
    }
    default: return false;
    }
}
