// __half for kiln's SIMT interpreter: IEEE binary16 stored as its bits, with the conversions and
// arithmetic of NVIDIA's cuda_fp16.h bit for bit: float -> half rounds to nearest even, overflow
// gives infinity, any NaN becomes 0x7fff; half -> float is exact, a NaN becomes 0x7fffffff.
// Arithmetic rounds the float result once, which equals the hardware's correctly rounded half
// operation (float carries more than 2 * 11 + 2 bits).
#ifndef KN_SIM_CUDA_FP16_H
#define KN_SIM_CUDA_FP16_H
#include <stdint.h>
#include <string.h>

static inline unsigned short kn_sim_f2h_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, u = x & 0x7fffffffu;
    if (u >= 0x7f800000u) return (unsigned short)(u == 0x7f800000u ? (sign | 0x7c00u) : 0x7fffu);
    if (u >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u); // rounds to infinity
    if (u >= 0x38800000u) {                                        // normal half
        uint32_t m = u - 0x38000000u, r = m & 0x1fffu, h = m >> 13;
        if (r > 0x1000u || (r == 0x1000u && (h & 1u))) h++;
        return (unsigned short)(sign | h);
    }
    if (u < 0x33000000u) return (unsigned short)sign; // below half the smallest subnormal: zero
    // subnormal half: shift the full significand right, round to nearest even
    uint32_t e = u >> 23, mant = (u & 0x7fffffu) | 0x800000u, shift = 126u - e; // 14..24
    uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (h & 1u))) h++;
    return (unsigned short)(sign | h);
}
static inline float kn_sim_h2f(unsigned short h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    if (e == 0x1fu) u = m ? 0x7fffffffu : (sign | 0x7f800000u);
    else if (e == 0) {
        if (!m) u = sign;
        else { // subnormal: normalise
            e = 113;
            while (!(m & 0x400u)) {
                m <<= 1;
                e--;
            }
            u = sign | (e << 23) | ((m & 0x3ffu) << 13);
        }
    } else u = sign | ((e + 112u) << 23) | (m << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

struct __half_raw {
    unsigned short x;
};
struct __half {
    unsigned short __x;
    __half() = default;
    __half(const __half_raw &r) : __x(r.x) {}
    __half(float f) : __x(kn_sim_f2h_bits(f)) {}
    __half(double f) : __x(kn_sim_f2h_bits((float)f)) {}
    __half(int i) : __x(kn_sim_f2h_bits((float)i)) {}
    __half(unsigned i) : __x(kn_sim_f2h_bits((float)i)) {}
    __half(long long i) : __x(kn_sim_f2h_bits((float)i)) {}
    operator float() const { return kn_sim_h2f(__x); }
    operator __half_raw() const { return __half_raw{__x}; }
};
struct __half2 {
    __half x, y;
};
typedef __half half;
typedef __half2 half2;

static inline float __half2float(__half h) { return kn_sim_h2f(h.__x); }
static inline float __low2float(__half2 h) { return __half2float(h.x); }
static inline float __high2float(__half2 h) { return __half2float(h.y); }
static inline __half __float2half(float f) { return __half(__half_raw{kn_sim_f2h_bits(f)}); }
static inline __half __float2half_rn(float f) { return __float2half(f); }
static inline __half2 __float2half2_rn(float f) { return __half2{__float2half(f), __float2half(f)}; }
static inline __half2 __floats2half2_rn(float a, float b) { return __half2{__float2half(a), __float2half(b)}; }
static inline __half2 __halves2half2(__half a, __half b) { return __half2{a, b}; }
static inline __half __low2half(__half2 h) { return h.x; }
static inline __half __high2half(__half2 h) { return h.y; }
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }
static inline short __half_as_short(__half h) { return (short)h.__x; }
static inline __half __ushort_as_half(unsigned short u) { return __half(__half_raw{u}); }
static inline __half __short_as_half(short u) { return __half(__half_raw{(unsigned short)u}); }
static inline __half __hadd(__half a, __half b) { return __float2half(__half2float(a) + __half2float(b)); }
static inline __half __hsub(__half a, __half b) { return __float2half(__half2float(a) - __half2float(b)); }
static inline __half __hmul(__half a, __half b) { return __float2half(__half2float(a) * __half2float(b)); }
static inline __half __hdiv(__half a, __half b) { return __float2half(__half2float(a) / __half2float(b)); }
static inline __half __hneg(__half a) { return __half(__half_raw{(unsigned short)(a.__x ^ 0x8000u)}); }
static inline __half __habs(__half a) { return __half(__half_raw{(unsigned short)(a.__x & 0x7fffu)}); }
static inline __half __hfma(__half a, __half b, __half c) {
    return __float2half((float)((double)__half2float(a) * __half2float(b) + __half2float(c)));
}
static inline bool __hisnan(__half a) { return (a.__x & 0x7fffu) > 0x7c00u; }
static inline bool __hisinf(__half a) { return (a.__x & 0x7fffu) == 0x7c00u; }
static inline bool __heq(__half a, __half b) { return __half2float(a) == __half2float(b); }
static inline bool __hne(__half a, __half b) {
    return __half2float(a) != __half2float(b) && !__hisnan(a) && !__hisnan(b);
}
static inline bool __hlt(__half a, __half b) { return __half2float(a) < __half2float(b); }
static inline bool __hle(__half a, __half b) { return __half2float(a) <= __half2float(b); }
static inline bool __hgt(__half a, __half b) { return __half2float(a) > __half2float(b); }
static inline bool __hge(__half a, __half b) { return __half2float(a) >= __half2float(b); }
static inline __half __hmax(__half a, __half b) {
    if (__hisnan(a)) return __hisnan(b) ? __ushort_as_half(0x7fffu) : b;
    if (__hisnan(b)) return a;
    return __half2float(a) > __half2float(b) || (__half2float(a) == __half2float(b) && !(a.__x & 0x8000u)) ? a : b;
}
static inline __half __hmin(__half a, __half b) {
    if (__hisnan(a)) return __hisnan(b) ? __ushort_as_half(0x7fffu) : b;
    if (__hisnan(b)) return a;
    return __half2float(a) < __half2float(b) || (__half2float(a) == __half2float(b) && (a.__x & 0x8000u)) ? a : b;
}
static inline __half operator+(const __half &a, const __half &b) { return __hadd(a, b); }
static inline __half operator-(const __half &a, const __half &b) { return __hsub(a, b); }
static inline __half operator*(const __half &a, const __half &b) { return __hmul(a, b); }
static inline __half operator/(const __half &a, const __half &b) { return __hdiv(a, b); }
static inline __half operator-(const __half &a) { return __hneg(a); }
static inline __half &operator+=(__half &a, const __half &b) { return a = __hadd(a, b); }
static inline __half &operator-=(__half &a, const __half &b) { return a = __hsub(a, b); }
static inline __half &operator*=(__half &a, const __half &b) { return a = __hmul(a, b); }
static inline __half &operator/=(__half &a, const __half &b) { return a = __hdiv(a, b); }
static inline bool operator==(const __half &a, const __half &b) { return __heq(a, b); }
static inline bool operator!=(const __half &a, const __half &b) { return !__heq(a, b); }
static inline bool operator<(const __half &a, const __half &b) { return __hlt(a, b); }
static inline bool operator<=(const __half &a, const __half &b) { return __hle(a, b); }
static inline bool operator>(const __half &a, const __half &b) { return __hgt(a, b); }
static inline bool operator>=(const __half &a, const __half &b) { return __hge(a, b); }
#endif
