/* Element type properties and scalar conversions for the reduced-precision formats. */
#ifndef KN_DTYPE_H
#define KN_DTYPE_H
#include "kiln.h"
#include <stdbool.h>
#include <stdint.h>

bool kn_dtype_is_float(kn_dtype t); /* f16, bf16, f32, f64 and the f8/f4 formats */
bool kn_dtype_is_int(kn_dtype t);   /* signed or unsigned integer, not bool */
bool kn_dtype_is_signed(kn_dtype t);
bool kn_dtype_valid(int t);

float kn_f16_to_f32(uint16_t h);
uint16_t kn_f32_to_f16(float f); /* round to nearest even */
float kn_bf16_to_f32(uint16_t h);
uint16_t kn_f32_to_bf16(float f); /* round to nearest even, NaN kept */
/* 8-bit floats (ONNX semantics; saturate applies to the FN/FNUZ/E5M2 casts as the spec says). */
float kn_f8_to_f32(uint8_t v, kn_dtype t);
uint8_t kn_f32_to_f8(float f, kn_dtype t, bool saturate);
float kn_f4e2m1_to_f32(uint8_t v);
uint8_t kn_f32_to_f4e2m1(float f);

/* Element i of a float16/bfloat16/float32/float64 buffer as float, and back (other dtypes read
 * as 0 and are not written: callers check the dtype first). Inline, for kernels' inner loops. */
static inline float kn_load_f32(const void *p, kn_dtype t, int64_t i) {
    switch (t) {
    case KN_F32: return ((const float *)p)[i];
    case KN_F64: return (float)((const double *)p)[i];
    case KN_F16: return kn_f16_to_f32(((const uint16_t *)p)[i]);
    case KN_BF16: return kn_bf16_to_f32(((const uint16_t *)p)[i]);
    case KN_BOOL: return ((const uint8_t *)p)[i] ? 1.0f : 0.0f;
    default: return 0.0f;
    }
}
static inline void kn_store_f32(void *p, kn_dtype t, int64_t i, float v) {
    switch (t) {
    case KN_F32: ((float *)p)[i] = v; break;
    case KN_F64: ((double *)p)[i] = v; break;
    case KN_F16: ((uint16_t *)p)[i] = kn_f32_to_f16(v); break;
    case KN_BF16: ((uint16_t *)p)[i] = kn_f32_to_bf16(v); break;
    default: break;
    }
}

#endif
