/* The float32 row kernels of the reduction family (reduce.c, softmax.c, norm.c and their
 * reduce_avx2.c / reduce_avx512.c paths), shared by the ops built on them (attention, the
 * contrib norms) and by their unit tests: scalar reference, AVX2 and AVX-512 versions of each,
 * and the threaded, dispatched entry points. */
#ifndef KN_CPU_ROWS_H
#define KN_CPU_ROWS_H
#include "graph/ops.h"
#include "runtime/core/threadpool.h"
#include <stdbool.h>
#include <stdint.h>

/* ---- the generic (any dtype, any layout) paths of reduce.c, shared with softmax.c, norm.c and
 * loss.c ---- */
/* Element i of p (of dtype t) as a double, and back. */
double kn_red_ld(const void *p, kn_dtype t, int64_t i);
void kn_red_st(void *p, kn_dtype t, int64_t i, double v);
/* Offsets of every kept position (koff, in output order) and every reduced position (roff), so
 * that output o reduces x[koff[o] + roff[r]] over r. */
kn_status *kn_red_offsets(kn_exec_ctx *ctx, const kn_tensor *x, const bool *mask, int64_t **koff, int64_t *nk,
                          int64_t **roff, int64_t *nr);

/* 0 scalar, 1 AVX2, 2 AVX-512: what this CPU runs (cached). */
int kn_red_simd_level(void);
/* Rows per parallel task for rows of row_len elements. */
int64_t kn_red_grain(int64_t row_len);

/* y[r] = sum / mean / max / min of row r (max and min propagate NaN). */
enum { KN_ROWRED_SUM = 0, KN_ROWRED_MEAN = 1, KN_ROWRED_MAX = 2, KN_ROWRED_MIN = 3 };
void kn_reduce_rows_f32_scalar(const float *x, float *y, int64_t rows, int64_t n, int kind);
void kn_reduce_rows_f32_avx2(const float *x, float *y, int64_t rows, int64_t n, int kind);
void kn_reduce_rows_f32_avx512(const float *x, float *y, int64_t rows, int64_t n, int kind);

/* Softmax (log_out: log-softmax) of each row of n. */
void kn_softmax_rows_f32(kn_threadpool *pool, const float *x, float *y, int64_t rows, int64_t n, int log_out);
void kn_softmax_rows_f32_scalar(const float *x, float *y, int64_t rows, int64_t n, int log_out);
void kn_softmax_rows_f32_avx2(const float *x, float *y, int64_t rows, int64_t n, int log_out);
void kn_softmax_rows_f32_avx512(const float *x, float *y, int64_t rows, int64_t n, int log_out);

/* Layer norm of each row of n with optional scale/bias; mean and invstd per row may be NULL. */
void kn_layernorm_rows_f32(kn_threadpool *pool, const float *x, float *y, int64_t rows, int64_t n, const float *scale,
                           const float *bias, float eps, float *mean, float *invstd);
void kn_layernorm_rows_f32_scalar(const float *x, float *y, int64_t rows, int64_t n, const float *scale,
                                  const float *bias, float eps, float *mean, float *invstd);
void kn_layernorm_rows_f32_avx2(const float *x, float *y, int64_t rows, int64_t n, const float *scale,
                                const float *bias, float eps, float *mean, float *invstd);
void kn_layernorm_rows_f32_avx512(const float *x, float *y, int64_t rows, int64_t n, const float *scale,
                                  const float *bias, float eps, float *mean, float *invstd);
#endif
