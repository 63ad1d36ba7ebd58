// The few constructs whose spelling differs between nvcc and the SIMT interpreter (kernels/cuda/simt),
// so that every kernel source compiles both ways unchanged:
//   KN_LAUNCH(kernel, grid, block, smem, stream, args...)   the one way kernels are launched;
//   KN_SHARED(T, name, N), KN_SHARED_DYN(T, name)            static and dynamic shared arrays;
//   KN_SHARED_PTR(T)                                          a pointer into shared memory (parameters);
//   kn_mma_m16n8k16_{f16,bf16}, kn_ldmatrix_x{1,2,4}[_trans]  tensor-core fragments (PTX layouts).
// Under nvcc these are the native forms and inline PTX; under the interpreter (KILN_CUDA_SIM) they
// are checked emulations. A kernel whose template arguments contain a comma is passed to
// KN_LAUNCH in parentheses: KN_LAUNCH((k<A, B>), ...).
#ifndef KN_DEVICE_H
#define KN_DEVICE_H
#include <stdint.h>

#ifdef KILN_CUDA_SIM
#include "kernels/cuda/simt/simt.h"
#define KN_LAUNCH(kernel, grid, block, smem, stream, ...) \
    kn_sim::launch(#kernel, kernel, (grid), (block), (smem), (stream), ##__VA_ARGS__)
#define KN_SHARED(T, name, N) \
    kn_sim::sptr<T> name = kn_sim::shared_static<T>(#name, (N), [] { \
        static const char kn_key = 0; \
        return &kn_key; \
    }())
#define KN_SHARED_DYN(T, name) kn_sim::sptr<T> name = kn_sim::shared_dynamic<T>(#name)
#define KN_SHARED_PTR(T) kn_sim::sptr<T>
#else
#define KN_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define KN_SHARED(T, name, N) __shared__ T name[N]
#define KN_SHARED_DYN(T, name) \
    extern __shared__ __align__(16) unsigned char kn_dyn_smem_##name[]; \
    T *name = reinterpret_cast<T *>(kn_dyn_smem_##name)
#define KN_SHARED_PTR(T) T *
#endif

// ---- tensor cores: mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 ----
// Per lane (g = lane / 4, t = lane % 4), as in the PTX ISA's fragment figures:
//   a[0] = A[g][2t..2t+1]  a[1] = A[g+8][2t..2t+1]  a[2] = A[g][2t+8..]  a[3] = A[g+8][2t+8..]
//   b[0] = B[2t..2t+1][g]  b[1] = B[2t+8..2t+9][g]                (pairs: low half first)
//   c/d[0..1] = C[g][2t..2t+1]  c/d[2..3] = C[g+8][2t..2t+1]
// Every lane of the warp must call it (the instruction is warp-wide, .aligned).
#ifdef KILN_CUDA_SIM
__device__ static inline void kn_mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                  const float c[4]) {
    kn_sim::mma_m16n8k16(d, a, b, c, false);
}
__device__ static inline void kn_mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                   const float c[4]) {
    kn_sim::mma_m16n8k16(d, a, b, c, true);
}
// ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16: lanes 8i..8i+7 give the row addresses
// (16 bytes each) of matrix i; lane l receives r[i] = M_i[l/4][2(l%4)..+1] (.trans: M_i[2(l%4)..+1][l/4]).
template <class P> __device__ static inline void kn_ldmatrix_x1(uint32_t r[1], P row) {
    kn_sim::ldmatrix(r, 1, false, row);
}
template <class P> __device__ static inline void kn_ldmatrix_x2(uint32_t r[2], P row) {
    kn_sim::ldmatrix(r, 2, false, row);
}
template <class P> __device__ static inline void kn_ldmatrix_x4(uint32_t r[4], P row) {
    kn_sim::ldmatrix(r, 4, false, row);
}
template <class P> __device__ static inline void kn_ldmatrix_x1_trans(uint32_t r[1], P row) {
    kn_sim::ldmatrix(r, 1, true, row);
}
template <class P> __device__ static inline void kn_ldmatrix_x2_trans(uint32_t r[2], P row) {
    kn_sim::ldmatrix(r, 2, true, row);
}
template <class P> __device__ static inline void kn_ldmatrix_x4_trans(uint32_t r[4], P row) {
    kn_sim::ldmatrix(r, 4, true, row);
}
#else
__device__ static inline void kn_mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                  const float c[4]) {
#ifdef __CUDA_ARCH__
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#endif
}
__device__ static inline void kn_mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                   const float c[4]) {
#ifdef __CUDA_ARCH__
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
                   "f"(c[3]));
#endif
}
#ifdef __CUDA_ARCH__
#define KN_LDSM(n, suffix, regs, ...) \
    unsigned kn_a = (unsigned)__cvta_generic_to_shared(row); \
    asm volatile("ldmatrix.sync.aligned.m8n8.x" #n suffix ".shared.b16 " regs ", [%" #n "];\n" \
                 : __VA_ARGS__ \
                 : "r"(kn_a))
#else
#define KN_LDSM(n, suffix, regs, ...) (void)row
#endif
template <class P> __device__ static inline void kn_ldmatrix_x1(uint32_t r[1], P row) {
    KN_LDSM(1, "", "{%0}", "=r"(r[0]));
}
template <class P> __device__ static inline void kn_ldmatrix_x2(uint32_t r[2], P row) {
    KN_LDSM(2, "", "{%0,%1}", "=r"(r[0]), "=r"(r[1]));
}
template <class P> __device__ static inline void kn_ldmatrix_x4(uint32_t r[4], P row) {
    KN_LDSM(4, "", "{%0,%1,%2,%3}", "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]));
}
template <class P> __device__ static inline void kn_ldmatrix_x1_trans(uint32_t r[1], P row) {
    KN_LDSM(1, ".trans", "{%0}", "=r"(r[0]));
}
template <class P> __device__ static inline void kn_ldmatrix_x2_trans(uint32_t r[2], P row) {
    KN_LDSM(2, ".trans", "{%0,%1}", "=r"(r[0]), "=r"(r[1]));
}
template <class P> __device__ static inline void kn_ldmatrix_x4_trans(uint32_t r[4], P row) {
    KN_LDSM(4, ".trans", "{%0,%1,%2,%3}", "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]));
}
#undef KN_LDSM
#endif

#endif
