// Resize on the device: nearest (every rounding mode), linear and cubic (exclude_outside, the
// cubic coefficient) under every coordinate transformation the CPU has (half_pixel,
// half_pixel_symmetric, pytorch_half_pixel, align_corners, asymmetric, tf_crop_and_resize with its
// extrapolation value). One thread per output element: per axis it finds its taps (at most 4,
// indices clamped to the edge, as the ONNX reference) with the CPU's coordinate arithmetic in
// double, then sums the tensor product of the axes' taps in double. Consecutive threads take
// consecutive positions of the last axis, so neighbouring threads read neighbouring inputs.
// Antialiasing (whose taps grow with the downscale) stays on the CPU. Sizes, scales and roi are
// read on the host.
#include "kernels/cuda/cuda_common.h"
#include "graph/op_helpers.h"

#define RS_TAPS 4

struct rs_axis {
    int64_t in, out;
    double scale, roi0, roi1;
    bool identity;
};
struct rs_geo {
    int r;
    rs_axis ax[KN_MAX_DIMS];
    int mode, ct, nm; // kn_resize_mode, kn_resize_coord, kn_resize_nearest
    double a, extrapolation;
    bool exclude_outside;
};

// Source coordinate of output index y along one axis (the CPU's src_coord); *ex when
// tf_crop_and_resize lands outside the input.
__device__ static double rs_src(const rs_geo &g, const rs_axis &a, double y, bool *ex) {
    double out_w = a.scale * (double)a.in;
    *ex = false;
    switch (g.ct) {
    case KN_COORD_ALIGN_CORNERS: return out_w == 1 ? 0.0 : y * (double)(a.in - 1) / (out_w - 1);
    case KN_COORD_ASYMMETRIC: return y / a.scale;
    case KN_COORD_TF_CROP: {
        double x = out_w == 1 ? (a.roi1 - a.roi0) * (double)(a.in - 1) / 2
                              : y * (a.roi1 - a.roi0) * (double)(a.in - 1) / (out_w - 1);
        x += a.roi0 * (double)(a.in - 1);
        *ex = !(x >= 0 && x <= (double)(a.in - 1));
        return x;
    }
    case KN_COORD_PYTORCH_HALF_PIXEL: return out_w == 1 ? -0.5 : (y + 0.5) / a.scale - 0.5;
    case KN_COORD_HALF_PIXEL_SYM: {
        double adj = (double)a.out / out_w, center = (double)a.in / 2, off = center * (1 - adj);
        return off + (y + 0.5) / a.scale - 0.5;
    }
    default: return (y + 0.5) / a.scale - 0.5;
    }
}

__device__ static double rs_cubic(double x, double A) {
    x = fabs(x);
    if (x <= 1) return ((A + 2) * x - (A + 3)) * x * x + 1;
    if (x < 2) return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
    return 0;
}

// Taps of source coordinate x (the CPU's resize_taps without antialiasing): count, indices, weights.
__device__ static int rs_taps(const rs_geo &g, const rs_axis &a, double x, int64_t *idx, double *w) {
    int64_t xi = (int64_t)floor(x);
    double ratio = x - (double)xi;
    if (ratio == 0) { // the reference prefers the left pixel: ratio in (0, 1]
        ratio = 1;
        xi -= 1;
    }
    if (g.mode == KN_RESIZE_NEAREST) {
        bool right;
        if (ratio == 1) right = true;
        else switch (g.nm) {
            case KN_NEAREST_ROUND_FLOOR: right = ratio > 0.5; break;
            case KN_NEAREST_ROUND_CEIL: right = ratio >= 0.5; break;
            case KN_NEAREST_FLOOR: right = false; break;
            case KN_NEAREST_CEIL: right = true; break;
            default: right = a.scale < 1; break;
            }
        int64_t i = xi + (right ? 1 : 0);
        idx[0] = i < 0 ? 0 : i >= a.in ? a.in - 1 : i;
        w[0] = 1;
        return 1;
    }
    int start = g.mode == KN_RESIZE_LINEAR ? 0 : -1, n = 2 - 2 * start;
    double sum = 0;
    for (int t = 0; t < n; t++) {
        int i = start + t;
        double c = g.mode == KN_RESIZE_LINEAR ? (t == 0 ? 1 - ratio : ratio) : rs_cubic((double)i - ratio, g.a);
        int64_t src = xi + i;
        if (g.exclude_outside && (src < 0 || src >= a.in)) c = 0;
        idx[t] = src < 0 ? 0 : src >= a.in ? a.in - 1 : src;
        w[t] = c;
        sum += c;
    }
    if (g.exclude_outside)
        for (int t = 0; t < n; t++) w[t] /= sum;
    return n;
}

template <class T> __global__ void resize_kernel(T *y, const T *x, rs_geo g, int64_t total) {
    KN_GRID_STRIDE(i, total) {
        int64_t idx[KN_MAX_DIMS][RS_TAPS], xst[KN_MAX_DIMS];
        double w[KN_MAX_DIMS][RS_TAPS];
        int nt[KN_MAX_DIMS];
        bool extrap = false;
        int64_t rem = i, st = 1;
        for (int k = g.r - 1; k >= 0; k--) {
            const rs_axis &a = g.ax[k];
            int64_t c = rem % a.out;
            rem /= a.out;
            xst[k] = st;
            st *= a.in;
            if (a.identity) {
                nt[k] = 1;
                idx[k][0] = c;
                w[k][0] = 1;
                continue;
            }
            bool ex;
            double sx = rs_src(g, a, (double)c, &ex);
            if (ex) {
                extrap = true;
                break;
            }
            nt[k] = rs_taps(g, a, sx, idx[k], w[k]);
        }
        if (extrap) {
            y[i] = kn_num<T>::st((float)g.extrapolation);
            continue;
        }
        // the tensor product of the axes' taps, in a fixed order (the last axis fastest)
        int tc[KN_MAX_DIMS];
        for (int k = 0; k < g.r; k++) tc[k] = 0;
        double acc = 0;
        for (;;) {
            double wt = 1;
            int64_t off = 0;
            for (int k = 0; k < g.r; k++) {
                wt *= w[k][tc[k]];
                off += idx[k][tc[k]] * xst[k];
            }
            if (wt != 0) acc += wt * (double)kn_num<T>::ld(x[off]);
            int k = g.r - 1;
            while (k >= 0 && ++tc[k] == nt[k]) tc[k--] = 0;
            if (k < 0) break;
        }
        y[i] = kn_num<T>::st((float)acc);
    }
}

static kn_status *resize_run(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                             kn_tensor *const *out) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    char bx[KN_DESC_LEN];
    if (!kn_cuda_float(x->dtype)) return kn_err_dtype(node, x);
    if (x->ndim < 1 || x->ndim > KN_MAX_DIMS)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input %s has rank 0", node->op_type,
                        kn_tensor_desc(x, bx, sizeof bx));
    const kn_params_resize *p = KN_PARAMS(node, resize);
    if (p->antialias) return kn_error(KN_ERR_UNSUPPORTED, "%s: antialias on cuda", node->op_type);
    double scales[KN_MAX_DIMS], roi[2 * KN_MAX_DIMS];
    int64_t od[KN_MAX_DIMS];
    KN_TRY(kn_shapeops_resize_params(node, in, n_in, scales, od, roi));
    int r = x->ndim;
    for (int k = 0; k < r; k++)
        if (od[k] != y->dims[k])
            return kn_error(KN_ERR_RUNTIME, "%s: output dim %d is %lld, expected %lld", node->op_type, k,
                            (long long)y->dims[k], (long long)od[k]);
    int64_t ny = kn_numel(y);
    if (ny == 0) return NULL;
    if (kn_numel(x) == 0)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: cannot resize empty %s to a non-empty output", node->op_type,
                        kn_tensor_desc(x, bx, sizeof bx));
    rs_geo g;
    memset(&g, 0, sizeof g);
    g.r = r;
    g.mode = p->mode;
    g.ct = p->coord;
    g.nm = p->nearest;
    g.a = p->cubic_coeff_a;
    g.extrapolation = p->extrapolation_value;
    g.exclude_outside = p->exclude_outside;
    bool nearest_copy = p->mode == KN_RESIZE_NEAREST && p->coord != KN_COORD_TF_CROP;
    for (int k = 0; k < r; k++) {
        rs_axis &a = g.ax[k];
        a.in = x->dims[k];
        a.out = od[k];
        a.scale = scales[k];
        a.roi0 = roi[k];
        a.roi1 = roi[r + k];
        // as the CPU: an axis that keeps its size at scale 1 (and the whole roi) is copied
        a.identity = fabs(scales[k] - 1.0) <= 1e-9 && od[k] == x->dims[k] &&
            (nearest_copy || p->coord != KN_COORD_TF_CROP || (fabs(roi[k]) <= 1e-9 && fabs(roi[r + k] - 1) <= 1e-9));
    }
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned nb = kn_cuda_blocks(ny, 256);
    switch (x->dtype) {
    case KN_F32: KN_LAUNCH(resize_kernel<float>, nb, 256, 0, s, (float *)y->data, (const float *)x->data, g, ny); break;
    case KN_F16:
        KN_LAUNCH(resize_kernel<__half>, nb, 256, 0, s, (__half *)y->data, (const __half *)x->data, g, ny);
        break;
    default:
        KN_LAUNCH(resize_kernel<__nv_bfloat16>, nb, 256, 0, s, (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)x->data,
                  g, ny);
    }
    KN_CUDA_LAUNCHED(node, "resize kernel");
    return NULL;
}

KN_CUDA_KERNEL(Resize) { return resize_run(ctx, node, in, n_in, out); }
// Upsample (deprecated): Resize with the scales as its only input or attribute
KN_CUDA_KERNEL(Upsample) { return resize_run(ctx, node, in, n_in, out); }

// Float data; no antialiasing (its tap count depends on the scale). roi, scales, sizes on the host.
bool kn_cuda_resize_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 1 || !in[0] || !kn_cuda_float(in[0]->dtype) || in[0]->ndim < 1) return false;
    return !KN_PARAMS(n, resize)->antialias;
}
