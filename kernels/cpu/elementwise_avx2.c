/* AVX2+FMA build of the float32 elementwise fast paths (see elementwise_simd_impl.h). */
#include "kernels/cpu/simd_avx2.h"
#define KN_EW_SUFFIX avx2
#include "kernels/cpu/elementwise_simd_impl.h"
