// The generic elementwise ops the first CUDA kernels left to the CPU: the activations with
// attributes (LeakyRelu, Elu, Selu, Celu, HardSigmoid, HardSwish, Softplus, Softsign, Mish, Swish,
// ThresholdedRelu, Shrink), the inverse and hyperbolic trigonometry, Round, the binary Mod and
// PRelu, variadic Sum/Mean, and Clip. Floats compute in double and round through float on store,
// exactly as the CPU reference does, so float32 results match it bit for bit in most cases and
// 16-bit ones round once the same way.
#include "kernels/cuda/cuda_common.h"

// ---- unary: op is the kn_op id; alpha/beta/gamma the node's activation attributes ----
__device__ static inline double act_softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

__device__ static inline double act_f(int op, double x, double a, double b, double g) {
    switch (op) {
    case KN_OP_Acos: return acos(x);
    case KN_OP_Acosh: return acosh(x);
    case KN_OP_Asin: return asin(x);
    case KN_OP_Asinh: return asinh(x);
    case KN_OP_Atan: return atan(x);
    case KN_OP_Atanh: return atanh(x);
    case KN_OP_Cosh: return cosh(x);
    case KN_OP_Sinh: return sinh(x);
    case KN_OP_Tan: return tan(x);
    case KN_OP_Round: return rint(x); // ties to even, as the CPU's nearbyint
    case KN_OP_LeakyRelu: return x < 0 ? a * x : x;
    case KN_OP_Elu: return x < 0 ? a * expm1(x) : x;
    case KN_OP_Selu: return x <= 0 ? g * (a * exp(x) - a) : g * x;
    case KN_OP_Celu: return fmax(0.0, x) + fmin(0.0, a * expm1(x / a));
    case KN_OP_HardSigmoid: return fmax(0.0, fmin(1.0, a * x + b));
    case KN_OP_HardSwish: return x * fmax(0.0, fmin(1.0, x / 6.0 + 0.5));
    case KN_OP_Softplus: return act_softplus(x);
    case KN_OP_Softsign: return x / (1.0 + fabs(x));
    case KN_OP_Mish: return x * tanh(act_softplus(x));
    case KN_OP_Swish: return x / (1.0 + exp(-a * x));
    case KN_OP_ThresholdedRelu: return x > a ? x : 0.0;
    case KN_OP_Shrink: return x < -a ? x + b : x > a ? x - b : 0.0;
    default: return x;
    }
}

template <class T> __global__ void act_kernel(T *y, const T *x, int64_t n, int op, double a, double b, double g) {
    KN_GRID_STRIDE(i, n) {
        double r = act_f(op, (double)kn_num<T>::ld(x[i]), a, b, g);
        y[i] = kn_num<T>::st((typename kn_num<T>::acc)(float)r);
    }
}

static kn_status *act_cuda(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *x, kn_tensor *y) {
    int op = node->op;
    double a = 0, b = 0, g = 0;
    switch (op) {
    case KN_OP_LeakyRelu:
    case KN_OP_Elu:
    case KN_OP_Celu:
    case KN_OP_ThresholdedRelu:
    case KN_OP_Swish: a = KN_PARAMS(node, act)->alpha; break;
    case KN_OP_Selu:
        a = KN_PARAMS(node, act)->alpha;
        g = KN_PARAMS(node, act)->gamma;
        break;
    case KN_OP_HardSigmoid:
    case KN_OP_Shrink:
        a = KN_PARAMS(node, act)->alpha;
        b = KN_PARAMS(node, act)->beta;
        break;
    default: break;
    }
    if (op == KN_OP_Celu && a == 0.0) return kn_error(KN_ERR_INVALID_MODEL, "Celu: alpha must be nonzero");
    int64_t n = kn_numel(x);
    if (!y || n <= 0) return NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned gr = kn_cuda_blocks(n, 256);
    switch (x->dtype) {
    case KN_F32:
        KN_LAUNCH(act_kernel<float>, gr, 256, 0, s, (float *)y->data, (const float *)x->data, n, op, a, b, g);
        break;
    case KN_F16:
        KN_LAUNCH(act_kernel<__half>, gr, 256, 0, s, (__half *)y->data, (const __half *)x->data, n, op, a, b, g);
        break;
    case KN_BF16:
        KN_LAUNCH(act_kernel<__nv_bfloat16>, gr, 256, 0, s, (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)x->data, n,
                  op, a, b, g);
        break;
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "activation kernel");
    return NULL;
}

#define KN_ACT(op) \
    KN_CUDA_KERNEL(op) { return act_cuda(ctx, node, in[0], out[0]); }
KN_ACT(Acos)
KN_ACT(Acosh)
KN_ACT(Asin)
KN_ACT(Asinh)
KN_ACT(Atan)
KN_ACT(Atanh)
KN_ACT(Cosh)
KN_ACT(Sinh)
KN_ACT(Tan)
KN_ACT(Round)
KN_ACT(LeakyRelu)
KN_ACT(Elu)
KN_ACT(Selu)
KN_ACT(Celu)
KN_ACT(HardSigmoid)
KN_ACT(HardSwish)
KN_ACT(Softplus)
KN_ACT(Softsign)
KN_ACT(Mish)
KN_ACT(Swish)
KN_ACT(ThresholdedRelu)
KN_ACT(Shrink)

// ---- binary with broadcasting: Mod (fmod or Python's sign rule), PRelu, and the pairwise step of
// Sum/Mean ----
enum { MB_MOD, MB_PRELU, MB_ADD };

template <class T>
__global__ void mbin_float_kernel(T *y, const T *pa, const T *pb, int64_t n, kn_bcast bc, int op, bool fmod_) {
    KN_GRID_STRIDE(i, n) {
        double a = (double)kn_num<T>::ld(pa[kn_bcast_off(bc, 0, i)]);
        double b = (double)kn_num<T>::ld(pb[kn_bcast_off(bc, 1, i)]);
        double r;
        if (op == MB_MOD) {
            r = fmod(a, b);
            if (!fmod_ && r != 0 && ((r < 0) != (b < 0))) r += b;
        } else if (op == MB_PRELU) {
            r = a < 0 ? a * b : a;
        } else {
            r = a + b;
        }
        y[i] = kn_num<T>::st((typename kn_num<T>::acc)(float)r);
    }
}

template <class T>
__global__ void mbin_int_kernel(T *y, const T *pa, const T *pb, int64_t n, kn_bcast bc, int op, bool fmod_) {
    KN_GRID_STRIDE(i, n) {
        int64_t a = (int64_t)pa[kn_bcast_off(bc, 0, i)], b = (int64_t)pb[kn_bcast_off(bc, 1, i)], r;
        if (op == MB_MOD) {
            if (b == 0 || b == -1) r = 0;
            else {
                r = a % b;
                if (!fmod_ && r != 0 && ((r < 0) != (b < 0))) r += b;
            }
        } else if (op == MB_PRELU) {
            r = a < 0 ? (int64_t)((uint64_t)a * (uint64_t)b) : a;
        } else {
            r = (int64_t)((uint64_t)a + (uint64_t)b);
        }
        y[i] = (T)r;
    }
}

static kn_status *mbin_cuda(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *a, const kn_tensor *b, kn_tensor *y,
                            int op, bool fmod_) {
    int64_t n = kn_numel(y);
    if (n <= 0) return NULL;
    const kn_tensor *ops[2] = {a, b};
    kn_bcast bc;
    kn_cuda_bcast_init(&bc, y, ops, 2);
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
    switch (y->dtype) {
    case KN_F32:
        KN_LAUNCH(mbin_float_kernel<float>, g, 256, 0, s, (float *)y->data, (const float *)a->data,
                  (const float *)b->data, n, bc, op, fmod_);
        break;
    case KN_F16:
        KN_LAUNCH(mbin_float_kernel<__half>, g, 256, 0, s, (__half *)y->data, (const __half *)a->data,
                  (const __half *)b->data, n, bc, op, fmod_);
        break;
    case KN_BF16:
        KN_LAUNCH(mbin_float_kernel<__nv_bfloat16>, g, 256, 0, s, (__nv_bfloat16 *)y->data,
                  (const __nv_bfloat16 *)a->data, (const __nv_bfloat16 *)b->data, n, bc, op, fmod_);
        break;
    case KN_I32:
        KN_LAUNCH(mbin_int_kernel<int32_t>, g, 256, 0, s, (int32_t *)y->data, (const int32_t *)a->data,
                  (const int32_t *)b->data, n, bc, op, fmod_);
        break;
    case KN_I64:
        KN_LAUNCH(mbin_int_kernel<int64_t>, g, 256, 0, s, (int64_t *)y->data, (const int64_t *)a->data,
                  (const int64_t *)b->data, n, bc, op, fmod_);
        break;
    default: return kn_err_dtype(node, y);
    }
    KN_CUDA_LAUNCHED(node, "binary kernel");
    return NULL;
}

KN_CUDA_KERNEL(Mod) {
    if (!out[0]) return NULL;
    return mbin_cuda(ctx, node, in[0], in[1], out[0], MB_MOD, KN_PARAMS(node, binary)->fmod != 0);
}

KN_CUDA_KERNEL(PRelu) {
    if (!out[0]) return NULL;
    const kn_tensor *x = in[0], *slope = in[1];
    // before opset 7 a 1-D slope runs along the channel axis: viewed as [C, 1, ..., 1] as on the CPU
    kn_tensor view;
    if (node->opset > 0 && node->opset < 7 && slope->ndim == 1 && x->ndim >= 2 && slope->dims[0] == x->dims[1]) {
        view = *slope;
        view.owns = false;
        view.ndim = x->ndim - 1;
        for (int i = 1; i < view.ndim; i++) view.dims[i] = 1;
        slope = &view;
    }
    return mbin_cuda(ctx, node, x, slope, out[0], MB_PRELU, false);
}

// y = y / k (Mean), in double through float like the CPU
template <class T> __global__ void div_by_kernel(T *y, int64_t n, double k) {
    KN_GRID_STRIDE(i, n) y[i] = kn_num<T>::st((typename kn_num<T>::acc)(float)((double)kn_num<T>::ld(y[i]) / k));
}

// Sum/Mean: y = in[0] + in[1], then y = y + in[k] (y has the full shape, so reading it in place
// before writing is safe), rounding after each step as the CPU does
static kn_status *sum_cuda(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in, kn_tensor *y,
                           bool mean) {
    if (!y || n_in < 1) return NULL;
    int64_t n = kn_numel(y);
    if (n <= 0) return NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    if (n_in == 1) {
        // a broadcast copy: y = in[0] + 0 would change -0; Expand's strided copy keeps the bits
        const kn_tensor *ops[1] = {in[0]};
        kn_bcast bc;
        kn_cuda_bcast_init(&bc, y, ops, 1);
        return kn_cuda_strided_copy(node, y->data, in[0]->data, kn_dtype_size(y->dtype), bc.nd, bc.dims, bc.st[0], s);
    }
    KN_TRY(mbin_cuda(ctx, node, in[0], in[1], y, MB_ADD, false));
    for (int k = 2; k < n_in; k++) KN_TRY(mbin_cuda(ctx, node, y, in[k], y, MB_ADD, false));
    if (!mean) return NULL;
    unsigned g = kn_cuda_blocks(n, 256);
    switch (y->dtype) {
    case KN_F32: KN_LAUNCH(div_by_kernel<float>, g, 256, 0, s, (float *)y->data, n, (double)n_in); break;
    case KN_F16: KN_LAUNCH(div_by_kernel<__half>, g, 256, 0, s, (__half *)y->data, n, (double)n_in); break;
    case KN_BF16:
        KN_LAUNCH(div_by_kernel<__nv_bfloat16>, g, 256, 0, s, (__nv_bfloat16 *)y->data, n, (double)n_in);
        break;
    default: return kn_err_dtype(node, y);
    }
    KN_CUDA_LAUNCHED(node, "Mean kernel");
    return NULL;
}
KN_CUDA_KERNEL(Sum) { return sum_cuda(ctx, node, in, n_in, out[0], false); }
KN_CUDA_KERNEL(Mean) { return sum_cuda(ctx, node, in, n_in, out[0], true); }

// ---- Clip: bounds from the attributes (Clip-6) or from scalar inputs read on the host ----
template <class T> __global__ void clip_float_kernel(T *y, const T *x, int64_t n, double lo, double hi) {
    KN_GRID_STRIDE(i, n) {
        double v = (double)kn_num<T>::ld(x[i]);
        if (v < lo) v = lo;
        if (v > hi) v = hi;
        y[i] = kn_num<T>::st((typename kn_num<T>::acc)(float)v);
    }
}
template <class T> __global__ void clip_int_kernel(T *y, const T *x, int64_t n, int64_t lo, int64_t hi) {
    KN_GRID_STRIDE(i, n) {
        int64_t v = (int64_t)x[i];
        if (v < lo) v = lo;
        if (v > hi) v = hi;
        y[i] = (T)v;
    }
}

KN_CUDA_KERNEL(Clip) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    if (!y) return NULL;
    double lo = -INFINITY, hi = INFINITY;
    int64_t ilo = INT64_MIN, ihi = INT64_MAX;
    const kn_params_clip *p = KN_PARAMS(node, clip);
    if ((node->opset > 0 && node->opset < 11) || (n_in < 2 && p->has_min_max_attr)) {
        lo = p->min;
        hi = p->max;
    } else {
        for (int k = 1; k <= 2 && k < n_in; k++) {
            const kn_tensor *t = in[k];
            if (!t) continue;
            if (t->dtype != x->dtype) return kn_err_dtype(node, t);
            if (kn_numel(t) != 1 || !t->data) {
                char b[KN_DESC_LEN];
                return kn_error(KN_ERR_INVALID_ARGUMENT, "Clip: %s must be a scalar, got %s", k == 1 ? "min" : "max",
                                kn_tensor_desc(t, b, sizeof b));
            }
            double f = kn_get_f64(t, 0);
            int64_t i = kn_get_i64(t, 0);
            if (k == 1) {
                lo = f;
                ilo = i;
            } else {
                hi = f;
                ihi = i;
            }
        }
    }
    int64_t n = kn_numel(x);
    if (n <= 0) return NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
    switch (x->dtype) {
    case KN_F32:
        KN_LAUNCH(clip_float_kernel<float>, g, 256, 0, s, (float *)y->data, (const float *)x->data, n, lo, hi);
        break;
    case KN_F16:
        KN_LAUNCH(clip_float_kernel<__half>, g, 256, 0, s, (__half *)y->data, (const __half *)x->data, n, lo, hi);
        break;
    case KN_BF16:
        KN_LAUNCH(clip_float_kernel<__nv_bfloat16>, g, 256, 0, s, (__nv_bfloat16 *)y->data,
                  (const __nv_bfloat16 *)x->data, n, lo, hi);
        break;
    case KN_I32:
        KN_LAUNCH(clip_int_kernel<int32_t>, g, 256, 0, s, (int32_t *)y->data, (const int32_t *)x->data, n, ilo, ihi);
        break;
    case KN_I64:
        KN_LAUNCH(clip_int_kernel<int64_t>, g, 256, 0, s, (int64_t *)y->data, (const int64_t *)x->data, n, ilo, ihi);
        break;
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "Clip kernel");
    return NULL;
}

// ---- bitwise ops and BitShift on integers of any width (by element size), IsInf ----
enum { BT_AND, BT_OR, BT_XOR, BT_SHL, BT_SHR };
// sgn: signed elements (BitShift right is arithmetic; a count < 0 or >= bits gives 0 or the sign)
template <class U>
__global__ void bits_kernel(U *y, const U *pa, const U *pb, int64_t n, kn_bcast bc, int op, int bits, bool sgn) {
    KN_GRID_STRIDE(i, n) {
        uint64_t a = (uint64_t)pa[kn_bcast_off(bc, 0, i)], b = (uint64_t)pb[kn_bcast_off(bc, 1, i)], r;
        int sh = 64 - bits;
        int64_t sa = sgn ? (int64_t)(a << sh) >> sh : (int64_t)a, sb = sgn ? (int64_t)(b << sh) >> sh : 0;
        bool out = sgn ? (sb < 0 || sb >= bits) : b >= (uint64_t)bits;
        switch (op) {
        case BT_AND: r = a & b; break;
        case BT_OR: r = a | b; break;
        case BT_XOR: r = a ^ b; break;
        case BT_SHL: r = out ? 0 : a << b; break;
        default:
            if (out) r = sgn && sa < 0 ? ~(uint64_t)0 : 0;
            else r = sgn ? (uint64_t)(sa >> b) : a >> b;
            break;
        }
        y[i] = (U)r;
    }
}
template <class U> __global__ void bitnot_kernel(U *y, const U *x, int64_t n) { KN_GRID_STRIDE(i, n) y[i] = (U)~x[i]; }
template <class T> __global__ void isinf_kernel(uint8_t *y, const T *x, int64_t n, bool neg, bool pos) {
    KN_GRID_STRIDE(i, n) {
        float v = kn_num<T>::ld(x[i]);
        y[i] = isinf(v) && ((v > 0 && pos) || (v < 0 && neg));
    }
}

static kn_status *bits_cuda(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, kn_tensor *y, int op) {
    if (!y) return NULL;
    int64_t n = kn_numel(y);
    if (n <= 0) return NULL;
    kn_bcast bc;
    kn_cuda_bcast_init(&bc, y, in, 2);
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
    int bits = (int)kn_dtype_size(y->dtype) * 8;
    bool sgn = y->dtype == KN_I8 || y->dtype == KN_I16 || y->dtype == KN_I32 || y->dtype == KN_I64;
    switch (kn_dtype_size(y->dtype)) {
#define BT_CASE(ES, U) \
    case ES: \
        KN_LAUNCH(bits_kernel<U>, g, 256, 0, s, (U *)y->data, (const U *)in[0]->data, (const U *)in[1]->data, n, bc, \
                  op, bits, sgn); \
        break;
        BT_CASE(1, uint8_t)
        BT_CASE(2, uint16_t)
        BT_CASE(4, uint32_t)
        BT_CASE(8, uint64_t)
#undef BT_CASE
    default: return kn_err_dtype(node, y);
    }
    KN_CUDA_LAUNCHED(node, "bitwise kernel");
    return NULL;
}
KN_CUDA_KERNEL(BitwiseAnd) { return bits_cuda(ctx, node, in, out[0], BT_AND); }
KN_CUDA_KERNEL(BitwiseOr) { return bits_cuda(ctx, node, in, out[0], BT_OR); }
KN_CUDA_KERNEL(BitwiseXor) { return bits_cuda(ctx, node, in, out[0], BT_XOR); }
KN_CUDA_KERNEL(BitShift) {
    return bits_cuda(ctx, node, in, out[0], KN_PARAMS(node, binary)->shift_left ? BT_SHL : BT_SHR);
}

KN_CUDA_KERNEL(BitwiseNot) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    int64_t n = kn_numel(x);
    if (!y || n <= 0) return NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
    switch (kn_dtype_size(x->dtype)) {
    case 1: KN_LAUNCH(bitnot_kernel<uint8_t>, g, 256, 0, s, (uint8_t *)y->data, (const uint8_t *)x->data, n); break;
    case 2: KN_LAUNCH(bitnot_kernel<uint16_t>, g, 256, 0, s, (uint16_t *)y->data, (const uint16_t *)x->data, n); break;
    case 4: KN_LAUNCH(bitnot_kernel<uint32_t>, g, 256, 0, s, (uint32_t *)y->data, (const uint32_t *)x->data, n); break;
    case 8: KN_LAUNCH(bitnot_kernel<uint64_t>, g, 256, 0, s, (uint64_t *)y->data, (const uint64_t *)x->data, n); break;
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "BitwiseNot kernel");
    return NULL;
}

KN_CUDA_KERNEL(IsInf) {
    const kn_tensor *x = in[0];
    int64_t n = kn_numel(x);
    if (!out[0] || n <= 0) return NULL;
    bool neg = KN_PARAMS(node, act)->detect_negative, pos = KN_PARAMS(node, act)->detect_positive;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
    uint8_t *y = (uint8_t *)out[0]->data;
    switch (x->dtype) {
    case KN_F32: KN_LAUNCH(isinf_kernel<float>, g, 256, 0, s, y, (const float *)x->data, n, neg, pos); break;
    case KN_F16: KN_LAUNCH(isinf_kernel<__half>, g, 256, 0, s, y, (const __half *)x->data, n, neg, pos); break;
    case KN_BF16:
        KN_LAUNCH(isinf_kernel<__nv_bfloat16>, g, 256, 0, s, y, (const __nv_bfloat16 *)x->data, n, neg, pos);
        break;
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "IsInf kernel");
    return NULL;
}

static bool misc_int(kn_dtype t) {
    return t == KN_I8 || t == KN_I16 || t == KN_I32 || t == KN_I64 || t == KN_U8 || t == KN_U16 || t == KN_U32 ||
        t == KN_U64;
}

bool kn_cuda_misc_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 1 || !in[0]) return false;
    kn_dtype t = in[0]->dtype;
    bool fl = kn_cuda_float(t), num = fl || t == KN_I32 || t == KN_I64;
    switch (n->op) {
    case KN_OP_Mod:
    case KN_OP_PRelu: return n_in == 2 && in[1] && in[1]->dtype == t && num;
    case KN_OP_Sum:
    case KN_OP_Mean:
        for (int k = 0; k < n_in; k++)
            if (!in[k] || in[k]->dtype != t) return false;
        return n->op == KN_OP_Sum ? num : fl;
    case KN_OP_Clip:
        for (int k = 1; k < n_in; k++)
            if (in[k] && in[k]->dtype != t) return false;
        return num;
    case KN_OP_BitwiseAnd:
    case KN_OP_BitwiseOr:
    case KN_OP_BitwiseXor: return n_in == 2 && in[1] && in[1]->dtype == t && misc_int(t);
    case KN_OP_BitShift: return n_in == 2 && in[1] && in[1]->dtype == t && misc_int(t);
    case KN_OP_BitwiseNot: return n_in == 1 && misc_int(t);
    case KN_OP_IsInf: return n_in == 1 && fl;
    default: return n_in == 1 && fl; // the activations
    }
}
