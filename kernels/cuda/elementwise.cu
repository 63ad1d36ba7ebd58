// Elementwise ops on the device: unary math, binary arithmetic/comparison/logic with numpy
// broadcasting, and Where. float32/float16/bfloat16 compute in float (16-bit types round once
// on store, as the CPU reference does); int32/int64 wrap like the CPU's two's-complement code.
#include "kernels/cuda/cuda_common.h"
#include <type_traits>

// ---- unary ----
enum kn_un {
    UN_ABS,
    UN_NEG,
    UN_RELU,
    UN_SQRT,
    UN_ERF,
    UN_TANH,
    UN_SIGMOID,
    UN_EXP,
    UN_LOG,
    UN_RECIP,
    UN_FLOOR,
    UN_CEIL,
    UN_SIN,
    UN_COS,
    UN_SIGN
};

template <class A> __device__ static inline A un_float(int op, A x) {
    switch (op) {
    case UN_ABS: return fabsf(x);
    case UN_NEG: return -x;
    case UN_RELU: return x > 0 ? x : (x == x ? 0.0f : x); // NaN stays NaN
    case UN_SQRT: return sqrtf(x);
    case UN_ERF: return erff(x);
    case UN_TANH: return tanhf(x);
    case UN_SIGMOID: return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
    case UN_EXP: return expf(x);
    case UN_LOG: return logf(x);
    case UN_RECIP: return 1.0f / x;
    case UN_FLOOR: return floorf(x);
    case UN_CEIL: return ceilf(x);
    case UN_SIN: return sinf(x);
    case UN_COS: return cosf(x);
    case UN_SIGN: return x > 0 ? 1.0f : x < 0 ? -1.0f : x; // sign(NaN) = NaN, sign(-0) = -0
    default: return x;
    }
}
template <class A> __device__ static inline A un_int(int op, A x) {
    typedef typename std::make_unsigned<A>::type U;
    switch (op) {
    case UN_ABS: return x < 0 ? (A)(U)(0 - (U)x) : x;
    case UN_NEG: return (A)(U)(0 - (U)x);
    case UN_RELU: return x > 0 ? x : 0;
    case UN_SIGN: return x > 0 ? 1 : x < 0 ? -1 : 0;
    default: return x;
    }
}

// y[n] = op(x[n])
template <class T> __global__ void unary_float_kernel(T *y, const T *x, int64_t n, int op) {
    KN_GRID_STRIDE(i, n) y[i] = kn_num<T>::st(un_float<float>(op, kn_num<T>::ld(x[i])));
}
template <class T> __global__ void unary_int_kernel(T *y, const T *x, int64_t n, int op) {
    KN_GRID_STRIDE(i, n) y[i] = un_int<T>(op, x[i]);
}
// y[n] (bool) = !x[n]
__global__ void not_bool_kernel(uint8_t *y, const uint8_t *x, int64_t n) { KN_GRID_STRIDE(i, n) y[i] = !x[i]; }
// y[n] (bool) = isnan(x[n])
template <class T> __global__ void isnan_kernel(uint8_t *y, const T *x, int64_t n) {
    KN_GRID_STRIDE(i, n) {
        float v = kn_num<T>::ld(x[i]);
        y[i] = v != v;
    }
}

static bool un_float_only(int op) { return op != UN_ABS && op != UN_NEG && op != UN_RELU && op != UN_SIGN; }

static kn_status *unary_cuda(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *x, kn_tensor *y, int op) {
    int64_t n = kn_numel(x);
    if (n <= 0) return NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
    switch (x->dtype) {
    case KN_F32:
        KN_LAUNCH(unary_float_kernel<float>, g, 256, 0, s, (float *)y->data, (const float *)x->data, n, op);
        break;
    case KN_F16:
        KN_LAUNCH(unary_float_kernel<__half>, g, 256, 0, s, (__half *)y->data, (const __half *)x->data, n, op);
        break;
    case KN_BF16:
        KN_LAUNCH(unary_float_kernel<__nv_bfloat16>, g, 256, 0, s, (__nv_bfloat16 *)y->data,
                  (const __nv_bfloat16 *)x->data, n, op);
        break;
    case KN_I32:
        if (un_float_only(op)) return kn_err_dtype(node, x);
        KN_LAUNCH(unary_int_kernel<int32_t>, g, 256, 0, s, (int32_t *)y->data, (const int32_t *)x->data, n, op);
        break;
    case KN_I64:
        if (un_float_only(op)) return kn_err_dtype(node, x);
        KN_LAUNCH(unary_int_kernel<int64_t>, g, 256, 0, s, (int64_t *)y->data, (const int64_t *)x->data, n, op);
        break;
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "unary kernel");
    return NULL;
}

#define KN_UNARY(op, code) \
    KN_CUDA_KERNEL(op) { return unary_cuda(ctx, node, in[0], out[0], code); }
KN_UNARY(Abs, UN_ABS)
KN_UNARY(Neg, UN_NEG)
KN_UNARY(Relu, UN_RELU)
KN_UNARY(Sqrt, UN_SQRT)
KN_UNARY(Erf, UN_ERF)
KN_UNARY(Tanh, UN_TANH)
KN_UNARY(Sigmoid, UN_SIGMOID)
KN_UNARY(Exp, UN_EXP)
KN_UNARY(Log, UN_LOG)
KN_UNARY(Reciprocal, UN_RECIP)
KN_UNARY(Floor, UN_FLOOR)
KN_UNARY(Ceil, UN_CEIL)
KN_UNARY(Sin, UN_SIN)
KN_UNARY(Cos, UN_COS)
KN_UNARY(Sign, UN_SIGN)

KN_CUDA_KERNEL(Not) {
    int64_t n = kn_numel(in[0]);
    if (n <= 0) return NULL;
    KN_LAUNCH(not_bool_kernel, kn_cuda_blocks(n, 256), 256, 0, kn_cuda_s(ctx), (uint8_t *)out[0]->data,
              (const uint8_t *)in[0]->data, n);
    KN_CUDA_LAUNCHED(node, "Not kernel");
    return NULL;
}

KN_CUDA_KERNEL(IsNaN) {
    int64_t n = kn_numel(in[0]);
    if (n <= 0) return NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
    uint8_t *y = (uint8_t *)out[0]->data;
    switch (in[0]->dtype) {
    case KN_F32: KN_LAUNCH(isnan_kernel<float>, g, 256, 0, s, y, (const float *)in[0]->data, n); break;
    case KN_F16: KN_LAUNCH(isnan_kernel<__half>, g, 256, 0, s, y, (const __half *)in[0]->data, n); break;
    case KN_BF16: KN_LAUNCH(isnan_kernel<__nv_bfloat16>, g, 256, 0, s, y, (const __nv_bfloat16 *)in[0]->data, n); break;
    default: return kn_err_dtype(node, in[0]);
    }
    KN_CUDA_LAUNCHED(node, "IsNaN kernel");
    return NULL;
}

// ---- binary ----
enum kn_bin {
    BI_ADD,
    BI_SUB,
    BI_MUL,
    BI_DIV,
    BI_POW,
    BI_MAX,
    BI_MIN,
    BI_EQ,
    BI_LT,
    BI_GT,
    BI_LE,
    BI_GE,
    BI_AND,
    BI_OR,
    BI_XOR
};
static bool bin_is_cmp(int op) { return op >= BI_EQ && op <= BI_GE; }
static bool bin_is_logic(int op) { return op >= BI_AND; }

__device__ static inline float bin_float(int op, float a, float b) {
    switch (op) {
    case BI_ADD: return a + b;
    case BI_SUB: return a - b;
    case BI_MUL: return a * b;
    case BI_DIV: return a / b;
    case BI_POW: return (float)pow((double)a, (double)b);       // the CPU reference computes pow in double
    case BI_MAX: return a != a || b != b ? NAN : a > b ? a : b; // NaN wins, as on the CPU
    case BI_MIN: return a != a || b != b ? NAN : a < b ? a : b;
    default: return 0;
    }
}
template <class A> __device__ static inline A ipow(A base, A e) {
    typedef typename std::make_unsigned<A>::type U;
    if (e < 0) return base == 1 ? 1 : base == -1 ? ((e & 1) ? -1 : 1) : 0;
    U r = 1, b = (U)base;
    while (e) {
        if (e & 1) r *= b;
        b *= b;
        e >>= 1;
    }
    return (A)r;
}
template <class A> __device__ static inline A bin_int(int op, A a, A b) {
    typedef typename std::make_unsigned<A>::type U;
    switch (op) {
    case BI_ADD: return (A)((U)a + (U)b);
    case BI_SUB: return (A)((U)a - (U)b);
    case BI_MUL: return (A)((U)a * (U)b);
    case BI_DIV: return b == 0 ? 0 : b == -1 ? (A)(0 - (U)a) : a / b; // truncation, as the CPU
    case BI_POW: return ipow<A>(a, b);
    case BI_MAX: return a > b ? a : b;
    case BI_MIN: return a < b ? a : b;
    default: return 0;
    }
}
template <class A> __device__ static inline bool bin_cmp(int op, A a, A b) {
    switch (op) {
    case BI_EQ: return a == b;
    case BI_LT: return a < b;
    case BI_GT: return a > b;
    case BI_LE: return a <= b;
    case BI_GE: return a >= b;
    default: return false;
    }
}

// y[bc.dims] = a[bcast] op b[bcast]; same-shape operands take the contiguous path
template <class T>
__global__ void binary_float_kernel(T *y, const T *a, const T *b, int64_t n, kn_bcast bc, bool flat, int op) {
    KN_GRID_STRIDE(i, n) {
        int64_t ia = flat ? i : kn_bcast_off(bc, 0, i), ib = flat ? i : kn_bcast_off(bc, 1, i);
        y[i] = kn_num<T>::st(bin_float(op, kn_num<T>::ld(a[ia]), kn_num<T>::ld(b[ib])));
    }
}
template <class T>
__global__ void binary_int_kernel(T *y, const T *a, const T *b, int64_t n, kn_bcast bc, bool flat, int op) {
    KN_GRID_STRIDE(i, n) {
        int64_t ia = flat ? i : kn_bcast_off(bc, 0, i), ib = flat ? i : kn_bcast_off(bc, 1, i);
        y[i] = bin_int<T>(op, a[ia], b[ib]);
    }
}
// y[bc.dims] (bool) = a cmp b
template <class T>
__global__ void compare_kernel(uint8_t *y, const T *a, const T *b, int64_t n, kn_bcast bc, bool flat, int op) {
    KN_GRID_STRIDE(i, n) {
        int64_t ia = flat ? i : kn_bcast_off(bc, 0, i), ib = flat ? i : kn_bcast_off(bc, 1, i);
        y[i] = bin_cmp<typename kn_num<T>::acc>(op, kn_num<T>::ld(a[ia]), kn_num<T>::ld(b[ib]));
    }
}
// y[bc.dims] (bool) = a logic b (bool)
__global__ void logic_kernel(uint8_t *y, const uint8_t *a, const uint8_t *b, int64_t n, kn_bcast bc, bool flat,
                             int op) {
    KN_GRID_STRIDE(i, n) {
        int64_t ia = flat ? i : kn_bcast_off(bc, 0, i), ib = flat ? i : kn_bcast_off(bc, 1, i);
        bool x = a[ia] != 0, z = b[ib] != 0;
        y[i] = op == BI_AND ? (x && z) : op == BI_OR ? (x || z) : (x != z);
    }
}

static kn_status *binary_cuda(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, kn_tensor *y, int op) {
    const kn_tensor *a = in[0], *b = in[1];
    int64_t n = kn_numel(y);
    if (n <= 0) return NULL;
    if (a->dtype != b->dtype) return kn_err_dtype(node, b);
    kn_bcast bc;
    kn_cuda_bcast_init(&bc, y, in, 2);
    bool flat = kn_numel(a) == n && kn_numel(b) == n;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
    const void *pa = a->data, *pb = b->data;
    void *py = y->data;
    if (bin_is_logic(op)) {
        if (a->dtype != KN_BOOL) return kn_err_dtype(node, a);
        KN_LAUNCH(logic_kernel, g, 256, 0, s, (uint8_t *)py, (const uint8_t *)pa, (const uint8_t *)pb, n, bc, flat, op);
    } else if (bin_is_cmp(op)) {
        switch (a->dtype) {
        case KN_F32:
            KN_LAUNCH(compare_kernel<float>, g, 256, 0, s, (uint8_t *)py, (const float *)pa, (const float *)pb, n, bc,
                      flat, op);
            break;
        case KN_F16:
            KN_LAUNCH(compare_kernel<__half>, g, 256, 0, s, (uint8_t *)py, (const __half *)pa, (const __half *)pb, n,
                      bc, flat, op);
            break;
        case KN_BF16:
            KN_LAUNCH(compare_kernel<__nv_bfloat16>, g, 256, 0, s, (uint8_t *)py, (const __nv_bfloat16 *)pa,
                      (const __nv_bfloat16 *)pb, n, bc, flat, op);
            break;
        case KN_I32:
            KN_LAUNCH(compare_kernel<int32_t>, g, 256, 0, s, (uint8_t *)py, (const int32_t *)pa, (const int32_t *)pb, n,
                      bc, flat, op);
            break;
        case KN_I64:
            KN_LAUNCH(compare_kernel<int64_t>, g, 256, 0, s, (uint8_t *)py, (const int64_t *)pa, (const int64_t *)pb, n,
                      bc, flat, op);
            break;
        case KN_BOOL:
            KN_LAUNCH(compare_kernel<uint8_t>, g, 256, 0, s, (uint8_t *)py, (const uint8_t *)pa, (const uint8_t *)pb, n,
                      bc, flat, op);
            break;
        default: return kn_err_dtype(node, a);
        }
    } else {
        switch (a->dtype) {
        case KN_F32:
            KN_LAUNCH(binary_float_kernel<float>, g, 256, 0, s, (float *)py, (const float *)pa, (const float *)pb, n,
                      bc, flat, op);
            break;
        case KN_F16:
            KN_LAUNCH(binary_float_kernel<__half>, g, 256, 0, s, (__half *)py, (const __half *)pa, (const __half *)pb,
                      n, bc, flat, op);
            break;
        case KN_BF16:
            KN_LAUNCH(binary_float_kernel<__nv_bfloat16>, g, 256, 0, s, (__nv_bfloat16 *)py, (const __nv_bfloat16 *)pa,
                      (const __nv_bfloat16 *)pb, n, bc, flat, op);
            break;
        case KN_I32:
            KN_LAUNCH(binary_int_kernel<int32_t>, g, 256, 0, s, (int32_t *)py, (const int32_t *)pa, (const int32_t *)pb,
                      n, bc, flat, op);
            break;
        case KN_I64:
            KN_LAUNCH(binary_int_kernel<int64_t>, g, 256, 0, s, (int64_t *)py, (const int64_t *)pa, (const int64_t *)pb,
                      n, bc, flat, op);
            break;
        default: return kn_err_dtype(node, a);
        }
    }
    KN_CUDA_LAUNCHED(node, "binary kernel");
    return NULL;
}

#define KN_BINARY(op, code) \
    KN_CUDA_KERNEL(op) { return binary_cuda(ctx, node, in, out[0], code); }
KN_BINARY(Add, BI_ADD)
KN_BINARY(Sub, BI_SUB)
KN_BINARY(Mul, BI_MUL)
KN_BINARY(Div, BI_DIV)
KN_BINARY(Pow, BI_POW)
KN_BINARY(Equal, BI_EQ)
KN_BINARY(Less, BI_LT)
KN_BINARY(Greater, BI_GT)
KN_BINARY(LessOrEqual, BI_LE)
KN_BINARY(GreaterOrEqual, BI_GE)
KN_BINARY(And, BI_AND)
KN_BINARY(Or, BI_OR)
KN_BINARY(Xor, BI_XOR)

// ---- variadic Max / Min: y = in[0] op in[1], then y = y op in[k] (y has the full shape, so
// updating it in place reads each element before writing it), as the CPU does ----
static kn_status *variadic_cuda(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *y, int op) {
    if (n_in < 1 || !y) return NULL;
    if (n_in == 1) {
        if (in[0]->data != y->data && kn_nbytes(y))
            KN_CUDA_TRY(cudaMemcpyAsync(y->data, in[0]->data, kn_nbytes(y), cudaMemcpyDeviceToDevice, kn_cuda_s(ctx)),
                        node, "Max/Min copy");
        return NULL;
    }
    KN_TRY(binary_cuda(ctx, node, in, y, op));
    for (int k = 2; k < n_in; k++) {
        const kn_tensor *pair[2] = {y, in[k]};
        KN_TRY(binary_cuda(ctx, node, pair, y, op));
    }
    return NULL;
}
KN_CUDA_KERNEL(Max) { return variadic_cuda(ctx, node, in, n_in, out[0], BI_MAX); }
KN_CUDA_KERNEL(Min) { return variadic_cuda(ctx, node, in, n_in, out[0], BI_MIN); }

// ---- Gelu (opset 20): exact (erf) or tanh form, computed in double as the CPU reference ----
template <class T> __global__ void gelu_kernel(T *y, const T *x, int64_t n, bool tanh_form) {
    KN_GRID_STRIDE(i, n) {
        double v = (double)kn_num<T>::ld(x[i]);
        double r = tanh_form ? 0.5 * v * (1.0 + tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v)))
                             : 0.5 * v * erfc(-v * 0.70710678118654752440);
        y[i] = kn_num<T>::st((typename kn_num<T>::acc)(float)r);
    }
}
KN_CUDA_KERNEL(Gelu) {
    const kn_tensor *x = in[0];
    int64_t n = kn_numel(x);
    if (n <= 0) return NULL;
    bool tf = KN_PARAMS(node, act)->gelu_tanh;
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
    switch (x->dtype) {
    case KN_F32:
        KN_LAUNCH(gelu_kernel<float>, g, 256, 0, s, (float *)out[0]->data, (const float *)x->data, n, tf);
        break;
    case KN_F16:
        KN_LAUNCH(gelu_kernel<__half>, g, 256, 0, s, (__half *)out[0]->data, (const __half *)x->data, n, tf);
        break;
    case KN_BF16:
        KN_LAUNCH(gelu_kernel<__nv_bfloat16>, g, 256, 0, s, (__nv_bfloat16 *)out[0]->data,
                  (const __nv_bfloat16 *)x->data, n, tf);
        break;
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "Gelu kernel");
    return NULL;
}

// ---- Where: y = cond ? x : z, three-way broadcast, any element size ----
template <class E>
__global__ void where_kernel(E *y, const uint8_t *c, const E *x, const E *z, int64_t n, kn_bcast bc) {
    KN_GRID_STRIDE(i, n) y[i] = c[kn_bcast_off(bc, 0, i)] ? x[kn_bcast_off(bc, 1, i)] : z[kn_bcast_off(bc, 2, i)];
}

KN_CUDA_KERNEL(Where) {
    kn_tensor *y = out[0];
    int64_t n = kn_numel(y);
    if (n <= 0) return NULL;
    kn_bcast bc;
    kn_cuda_bcast_init(&bc, y, in, 3);
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned g = kn_cuda_blocks(n, 256);
    const uint8_t *c = (const uint8_t *)in[0]->data;
    switch (kn_dtype_size(y->dtype)) {
    case 1:
        KN_LAUNCH(where_kernel<uint8_t>, g, 256, 0, s, (uint8_t *)y->data, c, (const uint8_t *)in[1]->data,
                  (const uint8_t *)in[2]->data, n, bc);
        break;
    case 2:
        KN_LAUNCH(where_kernel<uint16_t>, g, 256, 0, s, (uint16_t *)y->data, c, (const uint16_t *)in[1]->data,
                  (const uint16_t *)in[2]->data, n, bc);
        break;
    case 4:
        KN_LAUNCH(where_kernel<uint32_t>, g, 256, 0, s, (uint32_t *)y->data, c, (const uint32_t *)in[1]->data,
                  (const uint32_t *)in[2]->data, n, bc);
        break;
    case 8:
        KN_LAUNCH(where_kernel<uint64_t>, g, 256, 0, s, (uint64_t *)y->data, c, (const uint64_t *)in[1]->data,
                  (const uint64_t *)in[2]->data, n, bc);
        break;
    default: return kn_err_dtype(node, y);
    }
    KN_CUDA_LAUNCHED(node, "Where kernel");
    return NULL;
}

bool kn_cuda_elementwise_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    switch (n->op) {
    case KN_OP_Not: return n_in == 1 && in[0]->dtype == KN_BOOL;
    case KN_OP_IsNaN: return n_in == 1 && kn_cuda_float(in[0]->dtype);
    case KN_OP_Abs:
    case KN_OP_Neg:
    case KN_OP_Relu:
    case KN_OP_Sign:
        return n_in == 1 && (kn_cuda_float(in[0]->dtype) || in[0]->dtype == KN_I32 || in[0]->dtype == KN_I64);
    case KN_OP_Sqrt:
    case KN_OP_Erf:
    case KN_OP_Tanh:
    case KN_OP_Sigmoid:
    case KN_OP_Exp:
    case KN_OP_Log:
    case KN_OP_Reciprocal:
    case KN_OP_Floor:
    case KN_OP_Ceil:
    case KN_OP_Sin:
    case KN_OP_Cos: return n_in == 1 && kn_cuda_float(in[0]->dtype);
    case KN_OP_And:
    case KN_OP_Or:
    case KN_OP_Xor: return n_in == 2 && in[0] && in[1] && in[0]->dtype == KN_BOOL && in[1]->dtype == KN_BOOL;
    case KN_OP_Equal:
    case KN_OP_Less:
    case KN_OP_Greater:
    case KN_OP_LessOrEqual:
    case KN_OP_GreaterOrEqual: {
        if (n_in != 2 || !in[0] || !in[1] || in[0]->dtype != in[1]->dtype) return false;
        kn_dtype t = in[0]->dtype;
        return kn_cuda_float(t) || t == KN_I32 || t == KN_I64 || (t == KN_BOOL && n->op == KN_OP_Equal);
    }
    case KN_OP_Add:
    case KN_OP_Sub:
    case KN_OP_Mul:
    case KN_OP_Div:
    case KN_OP_Pow: {
        // Pow with a differently typed exponent stays on the CPU (its mixed-type rules live there)
        if (n_in != 2 || !in[0] || !in[1] || in[0]->dtype != in[1]->dtype) return false;
        kn_dtype t = in[0]->dtype;
        return kn_cuda_float(t) || t == KN_I32 || t == KN_I64;
    }
    case KN_OP_Max:
    case KN_OP_Min: {
        if (n_in < 1) return false;
        for (int k = 0; k < n_in; k++)
            if (!in[k] || in[k]->dtype != in[0]->dtype) return false;
        kn_dtype t = in[0]->dtype;
        return kn_cuda_float(t) || t == KN_I32 || t == KN_I64;
    }
    case KN_OP_Gelu: return n_in == 1 && kn_cuda_float(in[0]->dtype);
    case KN_OP_Where: {
        if (n_in != 3 || !in[0] || !in[1] || !in[2] || in[0]->dtype != KN_BOOL || in[1]->dtype != in[2]->dtype)
            return false;
        size_t es = kn_dtype_size(in[1]->dtype);
        return es == 1 || es == 2 || es == 4 || es == 8;
    }
    default: return false;
    }
}
