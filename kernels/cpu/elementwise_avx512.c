/* AVX-512F build of the float32 elementwise fast paths (see elementwise_simd_impl.h). */
#include "kernels/cpu/simd_avx512.h"
#define KN_EW_SUFFIX avx512
#include "kernels/cpu/elementwise_simd_impl.h"
