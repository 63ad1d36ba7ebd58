/* AVX-512F build of the direct convolution row kernels (see conv_dw_impl.h); called only after a
 * runtime CPU check in conv.c. */
#include "kernels/cpu/simd_avx512.h"
#define KN_DW_NAME kn_conv_dw_row_avx512
#define KN_BA_NAME kn_conv_bias_act_avx512
#define KN_PLANE_NAME kn_conv_dw_plane_avx512
#include "kernels/cpu/conv_dw_impl.h"
