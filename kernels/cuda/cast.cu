// Cast between float32/float16/bfloat16/float64/int8/uint8/int32/int64/bool on the device, with
// the CPU reference's rules: floats to integers truncate toward zero, NaN and out-of-range values
// are pinned (NaN -> INT64_MIN bits for int32/int64, 0 otherwise), integers wrap, anything to bool
// is "!= 0", and 16-bit floats are rounded to nearest even from float.
#include "kernels/cuda/cuda_common.h"

enum { C_F, C_S, C_U }; // carrier: float (double), signed, unsigned

__device__ static inline double ld_f(const void *p, int t, int64_t i) {
    switch (t) {
    case KN_F32: return ((const float *)p)[i];
    case KN_F64: return ((const double *)p)[i];
    case KN_F16: return __half2float(((const __half *)p)[i]);
    case KN_BF16: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    default: return 0;
    }
}
__device__ static inline int64_t ld_s(const void *p, int t, int64_t i) {
    switch (t) {
    case KN_I8: return ((const int8_t *)p)[i];
    case KN_I32: return ((const int32_t *)p)[i];
    default: return ((const int64_t *)p)[i];
    }
}
__device__ static inline uint64_t ld_u(const void *p, int t, int64_t i) {
    return ((const uint8_t *)p)[i];
} // uint8, bool

__device__ static inline void st_float(void *p, int t, int64_t i, double v) {
    switch (t) {
    case KN_F32: ((float *)p)[i] = (float)v; break;
    case KN_F64: ((double *)p)[i] = v; break;
    case KN_F16: ((__half *)p)[i] = __float2half_rn((float)v); break;
    case KN_BF16: ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn((float)v); break;
    default: break;
    }
}
__device__ static inline void st_bits(void *p, int t, int64_t i, uint64_t v, bool nonzero) {
    switch (t) {
    case KN_BOOL: ((uint8_t *)p)[i] = nonzero; break;
    case KN_I8:
    case KN_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case KN_I32: ((uint32_t *)p)[i] = (uint32_t)v; break;
    default: ((uint64_t *)p)[i] = v; break;
    }
}

// y[n] (to) = cast(x[n] (from)); the dtype switches are uniform across the grid
__global__ void cast_kernel(void *y, int to, int to_c, const void *x, int from, int from_c, int64_t n) {
    KN_GRID_STRIDE(i, n) {
        if (from_c == C_F) {
            double v = ld_f(x, from, i);
            if (to_c == C_F) {
                st_float(y, to, i, v);
                continue;
            }
            uint64_t bits;
            if (v != v) bits = to == KN_I64 || to == KN_I32 ? (uint64_t)INT64_MIN : 0;
            else if (v >= 18446744073709551615.0) bits = UINT64_MAX;
            else if (v >= 9223372036854775807.0) bits = (uint64_t)v;
            else if (v <= -9223372036854775808.0) bits = (uint64_t)INT64_MIN;
            else bits = (uint64_t)(int64_t)v;
            st_bits(y, to, i, bits, v != 0);
        } else if (from_c == C_S) {
            // integers round once, straight to float32 (as the CPU), except for a float64 target:
            // via double, an int64 above 2^53 would round twice
            int64_t v = ld_s(x, from, i);
            if (to_c == C_F) st_float(y, to, i, to == KN_F64 ? (double)v : (double)(float)v);
            else st_bits(y, to, i, (uint64_t)v, v != 0);
        } else {
            uint64_t v = ld_u(x, from, i);
            if (to_c == C_F) st_float(y, to, i, to == KN_F64 ? (double)v : (double)(float)v);
            else st_bits(y, to, i, v, v != 0);
        }
    }
}

static int carrier(kn_dtype t) {
    switch (t) {
    case KN_F32:
    case KN_F64:
    case KN_F16:
    case KN_BF16: return C_F;
    case KN_I8:
    case KN_I32:
    case KN_I64: return C_S;
    case KN_U8:
    case KN_BOOL: return C_U;
    default: return -1;
    }
}

KN_CUDA_KERNEL(Cast) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    int64_t n = kn_numel(x);
    if (n <= 0) return NULL;
    int fc = carrier(x->dtype), tc = carrier(y->dtype);
    if (fc < 0) return kn_err_dtype(node, x);
    if (tc < 0) return kn_err_dtype(node, y);
    if (x->dtype == y->dtype) {
        if (x->data == y->data) return NULL; // in place (the planner shares equal-sized buffers)
        KN_CUDA_TRY(cudaMemcpyAsync(y->data, x->data, kn_nbytes(x), cudaMemcpyDeviceToDevice, kn_cuda_s(ctx)), node,
                    "Cast copy");
        return NULL;
    }
    KN_LAUNCH(cast_kernel, kn_cuda_blocks(n, 256), 256, 0, kn_cuda_s(ctx), y->data, y->dtype, tc, x->data, x->dtype, fc,
              n);
    KN_CUDA_LAUNCHED(node, "Cast kernel");
    return NULL;
}

// CastLike(x, like): Cast to like's dtype (like's values are not read)
KN_CUDA_KERNEL(CastLike) { return kn_cuda_Cast(ctx, node, in, 1, out, n_out); }

bool kn_cuda_castlike_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    (void)n;
    return n_in >= 2 && in[0] && in[1] && carrier(in[0]->dtype) >= 0 && carrier(in[1]->dtype) >= 0;
}

bool kn_cuda_cast_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 1 || !in[0] || carrier(in[0]->dtype) < 0) return false;
    const kn_params_cast *p = KN_PARAMS(n, cast);
    int64_t to = p && p->has_to ? p->to : 0;
    if (to <= 0 || to >= KN_DTYPE_COUNT || carrier((kn_dtype)to) < 0) return false;
    // the saturate attribute only concerns float8 targets, which stay on the CPU
    return true;
}
