/* Element type table: sizes and names for every ONNX dtype kiln knows. */
#include "runtime/core/dtype.h"
#include <stddef.h>

typedef struct {
    const char *name;
    size_t size;
} kn_dtype_row;

static const kn_dtype_row kn_dtype_rows[KN_DTYPE_COUNT] = {
    [KN_UNDEFINED] = {"undefined", 0},
    [KN_F32] = {"float32", 4},
    [KN_U8] = {"uint8", 1},
    [KN_I8] = {"int8", 1},
    [KN_U16] = {"uint16", 2},
    [KN_I16] = {"int16", 2},
    [KN_I32] = {"int32", 4},
    [KN_I64] = {"int64", 8},
    [KN_STRING] = {"string", sizeof(char *)},
    [KN_BOOL] = {"bool", 1},
    [KN_F16] = {"float16", 2},
    [KN_F64] = {"float64", 8},
    [KN_U32] = {"uint32", 4},
    [KN_U64] = {"uint64", 8},
    [KN_C64] = {"complex64", 8},
    [KN_C128] = {"complex128", 16},
    [KN_BF16] = {"bfloat16", 2},
    [KN_F8E4M3FN] = {"float8e4m3fn", 1},
    [KN_F8E4M3FNUZ] = {"float8e4m3fnuz", 1},
    [KN_F8E5M2] = {"float8e5m2", 1},
    [KN_F8E5M2FNUZ] = {"float8e5m2fnuz", 1},
    [KN_U4] = {"uint4", 1},
    [KN_I4] = {"int4", 1},
    [KN_F4E2M1] = {"float4e2m1", 1},
    [KN_F8E8M0] = {"float8e8m0", 1},
    [KN_U2] = {"uint2", 1},
    [KN_I2] = {"int2", 1},
};

bool kn_dtype_valid(int t) { return t > 0 && t < KN_DTYPE_COUNT; }
const char *kn_dtype_name(kn_dtype t) { return kn_dtype_valid((int)t) || t == 0 ? kn_dtype_rows[t].name : "invalid"; }
size_t kn_dtype_size(kn_dtype t) { return kn_dtype_valid((int)t) ? kn_dtype_rows[t].size : 0; }

bool kn_dtype_is_float(kn_dtype t) {
    switch (t) {
    case KN_F32:
    case KN_F64:
    case KN_F16:
    case KN_BF16:
    case KN_F8E4M3FN:
    case KN_F8E4M3FNUZ:
    case KN_F8E5M2:
    case KN_F8E5M2FNUZ:
    case KN_F4E2M1:
    case KN_F8E8M0: return true;
    default: return false;
    }
}
bool kn_dtype_is_int(kn_dtype t) {
    switch (t) {
    case KN_U8:
    case KN_I8:
    case KN_U16:
    case KN_I16:
    case KN_I32:
    case KN_I64:
    case KN_U32:
    case KN_U64:
    case KN_U4:
    case KN_I4:
    case KN_U2:
    case KN_I2: return true;
    default: return false;
    }
}
bool kn_dtype_is_signed(kn_dtype t) {
    switch (t) {
    case KN_I8:
    case KN_I16:
    case KN_I32:
    case KN_I64:
    case KN_I4:
    case KN_I2: return true;
    default: return kn_dtype_is_float(t);
    }
}
