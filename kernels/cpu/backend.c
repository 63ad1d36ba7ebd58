/* The CPU backend's function table: kernels come from the op table (kn_cpu_<op>, one per row of
 * graph/ops.def), memory is host memory, and copies are memcpy. */
#include "graph/ops.h"
#include <stdlib.h>
#include <string.h>

static const kn_kernel_fn kn_cpu_kernels[KN_OP_COUNT] = {
#define KN_OP(id, name, domain, inplace, params, grad) [KN_OP_##id] = kn_cpu_##id,
#include "graph/ops.def"
#undef KN_OP
};

static kn_kernel_fn cpu_kernel(const kn_backend *b, int op) {
    return op >= 0 && op < KN_OP_COUNT ? kn_cpu_kernels[op] : NULL;
}
static bool cpu_supports(const kn_backend *b, const kn_node *n, const kn_tensor *const *in, int n_in) {
    return cpu_kernel(b, n->op) != NULL;
}
static void *cpu_alloc(const kn_backend *b, size_t bytes) {
    void *p = NULL;
    /* 64-byte alignment for AVX-512 loads */
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) return NULL;
    return p;
}
static void cpu_free(const kn_backend *b, void *p) { free(p); }
static kn_status *cpu_copy(const kn_backend *b, void *dst, kn_device_kind dd, const void *src, kn_device_kind sd,
                           size_t n) {
    if (n) memmove(dst, src, n);
    return NULL;
}

static const kn_backend kn_cpu = {
    .name = "cpu",
    .device = KN_DEVICE_CPU,
    .kernel = cpu_kernel,
    .supports = cpu_supports,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy = cpu_copy,
};

const kn_backend *kn_cpu_backend(void) { return &kn_cpu; }
