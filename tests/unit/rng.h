/* Seeded pseudo-random test data shared by the op tests (test_fused_gemm.c, test_contrib.c): a
 * linear congruential generator whose state the test program owns and seeds, so each program's
 * sequence (and the cases it draws) stays fixed from run to run, and float tensors of any dtype
 * filled from it. Header-only and static inline, as harness.h: each test is one program. */
#ifndef KN_TEST_RNG_H
#define KN_TEST_RNG_H
#include "tests/unit/harness.h"
#include <stdint.h>

typedef struct test_rng {
    uint32_t state;
} test_rng;

/* The next value in [-2, 2), 16 bits of resolution. */
static inline double rng_uniform(test_rng *r) {
    r->state = r->state * 1664525u + 1013904223u;
    return (double)((r->state >> 8) & 0xFFFF) / 65536.0 * 4.0 - 2.0;
}

/* A new tensor of dtype t (stored through kn_set_f64) with values in [-2s, 2s). */
static inline kn_tensor *rng_tensor(test_rng *r, kn_dtype t, int nd, const int64_t *dims, double s) {
    kn_tensor *x = mk(t, nd, dims, NULL);
    for (int64_t i = 0; i < kn_numel(x); i++) kn_set_f64(x, i, rng_uniform(r) * s);
    return x;
}

#endif
