/* Scalar conversions between float32 and the reduced-precision float formats (float16,
 * bfloat16, the four ONNX float8 formats, float4e2m1). Rounding is round-to-nearest-even
 * everywhere; the special-value rules (saturation, NaN encodings, no negative zero in the FNUZ
 * formats) follow the ONNX Cast spec and match ml_dtypes, which the ONNX test data comes from. */
#include "runtime/core/dtype.h"
#include <math.h>
#include <string.h>

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float kn_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        /* zero or subnormal: m * 2^-24 is exact in float32 */
        float v = ldexpf((float)m, -24);
        return bits_f32(f32_bits(v) | sign);
    }
    if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

uint16_t kn_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) {
        if (x == 0x7f800000u) return sign | 0x7c00u;
        /* NaN: keep the top payload bits; an empty payload would read as Inf, so set quiet */
        uint16_t m = (uint16_t)((x >> 13) & 0x3ffu);
        return (uint16_t)(sign | 0x7c00u | (m ? m : 0x200u));
    }
    if (x >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 rounds to Inf */
    if (x < 0x38800000u) {
        /* subnormal result: adding 0.5 puts the f16 subnormal ulp (2^-24) at the float32 ulp,
         * so the FPU's own round-to-nearest-even does the rounding */
        float t = bits_f32(x) + 0.5f;
        return (uint16_t)(sign | (uint16_t)(f32_bits(t) - 0x3f000000u));
    }
    uint32_t odd = (x >> 13) & 1u;
    x += 0xc8000fffu + odd; /* rebias exponent (-112 << 23, mod 2^32) and round half to even */
    return (uint16_t)(sign | (uint16_t)(x >> 13));
}

float kn_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t kn_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* Layout of a small float format. */
typedef struct f8_fmt {
    int ebits, mbits, bias;
    double maxv;
    bool fnuz;    /* NaN is 0x80, no negative zero, no Inf */
    bool has_inf; /* E5M2: IEEE-like Inf and NaN */
} f8_fmt;

static const f8_fmt *f8_format(kn_dtype t) {
    static const f8_fmt e4m3fn = {4, 3, 7, 448.0, false, false};
    static const f8_fmt e4m3fnuz = {4, 3, 8, 240.0, true, false};
    static const f8_fmt e5m2 = {5, 2, 15, 57344.0, false, true};
    static const f8_fmt e5m2fnuz = {5, 2, 16, 57344.0, true, false};
    switch (t) {
    case KN_F8E4M3FN: return &e4m3fn;
    case KN_F8E4M3FNUZ: return &e4m3fnuz;
    case KN_F8E5M2: return &e5m2;
    case KN_F8E5M2FNUZ: return &e5m2fnuz;
    default: return NULL;
    }
}

static float small_decode(uint32_t v, int ebits, int mbits, int bias) {
    uint32_t sign = (v >> (ebits + mbits)) & 1u;
    uint32_t e = (v >> mbits) & ((1u << ebits) - 1u), m = v & ((1u << mbits) - 1u);
    double r =
        e == 0 ? ldexp((double)m, 1 - bias - mbits) : ldexp(1.0 + (double)m / (double)(1u << mbits), (int)e - bias);
    return (float)(sign ? -r : r);
}

/* Round |a| (finite, > 0) to the format's grid with round-to-nearest-even; the result may exceed
 * the format's max (the caller decides saturation). */
static double small_round(double a, int mbits, int bias) {
    int ex;
    frexp(a, &ex); /* a = f * 2^ex, f in [0.5, 1) */
    int e = ex - 1;
    if (e < 1 - bias) e = 1 - bias; /* subnormal range shares the min-normal quantum */
    double q = ldexp(1.0, e - mbits);
    return nearbyint(a / q) * q; /* default rounding mode is to-nearest-even */
}

/* Encode a value already on the grid and within range. */
static uint32_t small_encode(double r, int ebits, int mbits, int bias) {
    if (r == 0.0) return 0;
    int ex;
    frexp(r, &ex);
    int e = ex - 1;
    if (e < 1 - bias) return (uint32_t)ldexp(r, bias - 1 + mbits); /* subnormal */
    double frac = ldexp(r, -e) - 1.0;
    (void)ebits;
    return ((uint32_t)(e + bias) << mbits) | (uint32_t)ldexp(frac, mbits);
}

float kn_f8_to_f32(uint8_t v, kn_dtype t) {
    if (t == KN_F8E8M0) return v == 0xff ? NAN : ldexpf(1.0f, (int)v - 127);
    const f8_fmt *f = f8_format(t);
    if (!f) return NAN;
    if (f->fnuz) {
        if (v == 0x80) return NAN;
    } else if (f->has_inf) {
        if ((v & 0x7c) == 0x7c) {
            if ((v & 0x03) == 0) return (v & 0x80) ? -INFINITY : INFINITY;
            return (v & 0x80) ? -NAN : NAN;
        }
    } else if ((v & 0x7f) == 0x7f) {
        return (v & 0x80) ? -NAN : NAN;
    }
    return small_decode(v, f->ebits, f->mbits, f->bias);
}

uint8_t kn_f32_to_f8(float x, kn_dtype t, bool saturate) {
    if (t == KN_F8E8M0) {
        /* saturating round-up, the Cast default; Cast itself handles other round modes */
        uint32_t b = f32_bits(x), e = (b >> 23) & 0xffu;
        if (e == 0xff) return 0xff;
        if ((b & 0x7fffffu) && e < 0xfe) e++;
        return (uint8_t)e;
    }
    const f8_fmt *f = f8_format(t);
    if (!f) return 0;
    uint8_t sign = signbit(x) ? 0x80 : 0x00;
    if (isnan(x)) {
        if (f->fnuz) return 0x80;
        return (uint8_t)(sign | (f->has_inf ? 0x7e : 0x7f));
    }
    double a = fabs((double)x);
    uint8_t maxcode = (uint8_t)small_encode(f->maxv, f->ebits, f->mbits, f->bias);
    uint8_t over;
    if (saturate) over = (uint8_t)(sign | maxcode);
    else if (f->fnuz) over = 0x80;
    else if (f->has_inf) over = (uint8_t)(sign | 0x7c);
    else over = (uint8_t)(sign | 0x7f);
    if (isinf(x)) return over;
    if (saturate && a > f->maxv) return over;
    if (a == 0.0) return f->fnuz ? 0 : sign;
    double r = small_round(a, f->mbits, f->bias);
    if (r > f->maxv) return over;
    if (r == 0.0) return f->fnuz ? 0 : sign;
    return (uint8_t)(sign | small_encode(r, f->ebits, f->mbits, f->bias));
}

float kn_f4e2m1_to_f32(uint8_t v) { return small_decode(v & 0x0fu, 2, 1, 1); }

uint8_t kn_f32_to_f4e2m1(float x) {
    uint8_t sign = signbit(x) ? 0x8 : 0x0;
    /* float4 has no NaN; ml_dtypes (the ONNX reference) maps NaN to the zero of opposite sign */
    if (isnan(x)) return (uint8_t)(sign ^ 0x8);
    double a = fabs((double)x);
    if (a >= 6.0) return (uint8_t)(sign | 0x7); /* saturates, Inf included */
    if (a == 0.0) return sign;
    double r = small_round(a, 1, 1);
    if (r > 6.0) r = 6.0;
    return (uint8_t)(sign | small_encode(r, 2, 1, 1));
}
