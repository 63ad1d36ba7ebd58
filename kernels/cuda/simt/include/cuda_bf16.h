// __nv_bfloat16 for kiln's SIMT interpreter: bfloat16 stored as its bits, with NVIDIA's
// cuda_bf16.h conversions bit for bit: float -> bfloat16 rounds to nearest even (overflow gives
// infinity, any NaN becomes 0x7fff); bfloat16 -> float is the bits shifted up (exact, payload
// kept). Arithmetic rounds the float result once (correctly rounded: float has > 2 * 8 + 2 bits).
#ifndef KN_SIM_CUDA_BF16_H
#define KN_SIM_CUDA_BF16_H
#include "cuda_fp16.h"

static inline unsigned short kn_sim_f2bf_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    x += 0x7fffu + ((x >> 16) & 1u);
    return (unsigned short)(x >> 16);
}
static inline float kn_sim_bf2f(unsigned short b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

struct __nv_bfloat16_raw {
    unsigned short x;
};
struct __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(const __nv_bfloat16_raw &r) : __x(r.x) {}
    __nv_bfloat16(float f) : __x(kn_sim_f2bf_bits(f)) {}
    __nv_bfloat16(double f) : __x(kn_sim_f2bf_bits((float)f)) {}
    __nv_bfloat16(int i) : __x(kn_sim_f2bf_bits((float)i)) {}
    operator float() const { return kn_sim_bf2f(__x); }
    operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
};
struct __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

static inline float __bfloat162float(__nv_bfloat16 b) { return kn_sim_bf2f(b.__x); }
static inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(__nv_bfloat16_raw{kn_sim_f2bf_bits(f)}); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162{__float2bfloat16(a), __float2bfloat16(b)};
}
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16(__nv_bfloat16_raw{u}); }
static inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16(__bfloat162float(a) + __bfloat162float(b));
}
static inline __nv_bfloat16 __hsub(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16(__bfloat162float(a) - __bfloat162float(b));
}
static inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16(__bfloat162float(a) * __bfloat162float(b));
}
static inline __nv_bfloat16 __hdiv(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __float2bfloat16(__bfloat162float(a) / __bfloat162float(b));
}
static inline __nv_bfloat16 __hneg(__nv_bfloat16 a) {
    return __nv_bfloat16(__nv_bfloat16_raw{(unsigned short)(a.__x ^ 0x8000u)});
}
static inline bool __hisnan(__nv_bfloat16 a) { return (a.__x & 0x7fffu) > 0x7f80u; }
static inline __nv_bfloat16 operator+(const __nv_bfloat16 &a, const __nv_bfloat16 &b) { return __hadd(a, b); }
static inline __nv_bfloat16 operator-(const __nv_bfloat16 &a, const __nv_bfloat16 &b) { return __hsub(a, b); }
static inline __nv_bfloat16 operator*(const __nv_bfloat16 &a, const __nv_bfloat16 &b) { return __hmul(a, b); }
static inline __nv_bfloat16 operator/(const __nv_bfloat16 &a, const __nv_bfloat16 &b) { return __hdiv(a, b); }
static inline __nv_bfloat16 operator-(const __nv_bfloat16 &a) { return __hneg(a); }
static inline bool operator==(const __nv_bfloat16 &a, const __nv_bfloat16 &b) {
    return __bfloat162float(a) == __bfloat162float(b);
}
static inline bool operator!=(const __nv_bfloat16 &a, const __nv_bfloat16 &b) { return !(a == b); }
static inline bool operator<(const __nv_bfloat16 &a, const __nv_bfloat16 &b) {
    return __bfloat162float(a) < __bfloat162float(b);
}
static inline bool operator>(const __nv_bfloat16 &a, const __nv_bfloat16 &b) {
    return __bfloat162float(a) > __bfloat162float(b);
}
#endif
