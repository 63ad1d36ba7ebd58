/* MatMulNBits accuracy_level 4's 8-column loop (kernels/cpu/nbits_i8_impl.h) with AVX-512 VNNI on
 * 256-bit vectors: vpdpbusd adds the 4 products of each int32 lane in one instruction where AVX2
 * takes three. Picked at run time where the CPU has VNNI (kernels/cpu/nbits.c); bit for bit the
 * AVX2 loop's results, the integer sums being exact. */
#pragma GCC target("avx512vnni")
#include "kernels/cpu/nbits.h"
#include <immintrin.h>

#define NB_I8_DOT(acc, w, a) ((void)ones, _mm256_dpbusd_epi32((acc), (w), (a)))
#define NB_I8_FN kn_nbits_i8_dot8_vnni
#include "kernels/cpu/nbits_i8_impl.h"
