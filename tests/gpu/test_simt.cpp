// Tests of kiln's SIMT interpreter (kernels/cuda/simt) on its own: small kernels with known
// answers for each primitive (shuffles of every kind and width, votes, match, reductions, atomics
// under contention, barriers in loops, static and dynamic shared memory, mma.m16n8k16 fragments
// against a plain matrix product, ldmatrix against the PTX layout, half/bfloat16 rounding), then
// deliberately broken kernels that the interpreter must catch, each error naming its kernel.
// Kernels are written as for nvcc, through kernels/cuda/kn_device.h: the nvcc build compiles this
// file too (gpu.interpreter_primitives) and runs the primitive tests on a real GPU, so that the
// interpreter's answers are checked against the hardware's; the broken kernels and the
// interpreter's own checks run only under the interpreter (on a GPU they would hang or be
// undefined). Exit 0 when all pass, 77 without a device in the nvcc build.
#include "kernels/cuda/kn_device.h"
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <algorithm>
#include <functional>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <vector>

static int n_fail;
static std::string why;
#define EXPECT(c, ...) \
    do { \
        if (!(c)) { \
            char b_[512]; \
            snprintf(b_, sizeof b_, __VA_ARGS__); \
            why = b_; \
            return false; \
        } \
    } while (0)

static std::vector<void *> dev_blocks; // freed after each test
template <class T> static T *dev(size_t n) {
    void *p = NULL;
    if (cudaMalloc(&p, n * sizeof(T) + 1) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc failed\n");
        exit(2);
    }
    cudaMemset(p, 0, n * sizeof(T));
    dev_blocks.push_back(p);
    return (T *)p;
}
static void dev_free_all() {
    for (void *p : dev_blocks) cudaFree(p);
    dev_blocks.clear();
}
template <class T> static std::vector<T> back(const T *d, size_t n) {
    std::vector<T> h(n);
    cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
}
static std::string launch_error() {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    return e == cudaSuccess ? std::string() : std::string(cudaGetErrorString(e));
}

// ---- shuffles ----
__global__ void shfl_kernel(int *out, int kind, int arg, int width) {
    int lane = threadIdx.x & 31, v = 1000 * (threadIdx.x >> 5) + lane, r = 0;
    switch (kind) {
    case 0: r = __shfl_sync(0xffffffffu, v, arg, width); break;
    case 1: r = __shfl_up_sync(0xffffffffu, v, (unsigned)arg, width); break;
    case 2: r = __shfl_down_sync(0xffffffffu, v, (unsigned)arg, width); break;
    default: r = __shfl_xor_sync(0xffffffffu, v, arg, width); break;
    }
    out[threadIdx.x] = r;
}
static bool t_shuffles() {
    int *d = dev<int>(64);
    for (int kind = 0; kind < 4; kind++)
        for (int width = 1; width <= 32; width *= 2)
            for (int arg = 0; arg < 34; arg += (kind == 0 ? 5 : 1)) {
                if (kind == 3 && arg > 31) continue;
                KN_LAUNCH(shfl_kernel, 1, 64, 0, 0, d, kind, arg, width);
                std::string e = launch_error();
                EXPECT(e.empty(), "kind %d: %s", kind, e.c_str());
                std::vector<int> h = back(d, 64);
                for (int t = 0; t < 64; t++) {
                    int lane = t & 31, seg = lane / width * width, pos = lane % width, src;
                    if (kind == 0) src = seg + arg % width;
                    else if (kind == 1) src = pos >= arg ? lane - arg : lane;
                    else if (kind == 2) src = pos + arg < width ? lane + arg : lane;
                    else src = (lane ^ arg) < seg + width ? lane ^ arg : lane;
                    int want = 1000 * (t >> 5) + src;
                    EXPECT(h[t] == want, "kind %d width %d arg %d: thread %d got %d, want %d", kind, width, arg, t,
                           h[t], want);
                }
            }
    return true;
}

// shuffles of 8-byte and 16-bit types keep every bit
__global__ void shfl_types_kernel(double *od, __half *oh, long long *ol) {
    int lane = threadIdx.x;
    od[lane] = __shfl_xor_sync(0xffffffffu, 1.0 / (lane + 1), 1);
    oh[lane] = __shfl_down_sync(0xffffffffu, __float2half((float)lane * 0.5f), 3);
    ol[lane] = __shfl_up_sync(0xffffffffu, (long long)lane << 40, 2);
}
static bool t_shuffle_types() {
    double *od = dev<double>(32);
    __half *oh = dev<__half>(32);
    long long *ol = dev<long long>(32);
    KN_LAUNCH(shfl_types_kernel, 1, 32, 0, 0, od, oh, ol);
    std::string e = launch_error();
    EXPECT(e.empty(), "%s", e.c_str());
    auto hd = back(od, 32);
    auto hh = back(oh, 32);
    auto hl = back(ol, 32);
    for (int l = 0; l < 32; l++) {
        EXPECT(hd[l] == 1.0 / ((l ^ 1) + 1), "double lane %d", l);
        int s = l + 3 < 32 ? l + 3 : l;
        EXPECT(__half2float(hh[l]) == s * 0.5f, "half lane %d: %g", l, __half2float(hh[l]));
        int u = l >= 2 ? l - 2 : l;
        EXPECT(hl[l] == (long long)u << 40, "long long lane %d", l);
    }
    return true;
}

// ---- votes, match, reductions, with full and half-warp masks ----
__global__ void vote_kernel(unsigned *out) {
    int lane = threadIdx.x & 31;
    unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
    out[lane * 8 + 0] = __ballot_sync(0xffffffffu, lane % 3 == 0);
    out[lane * 8 + 1] = __any_sync(half, lane == 20);
    out[lane * 8 + 2] = __all_sync(half, lane < 16);
    out[lane * 8 + 3] = __match_any_sync(0xffffffffu, lane % 5);
    int pred = -1;
    out[lane * 8 + 4] = __match_all_sync(half, lane < 16 ? 7 : lane, &pred);
    out[lane * 8 + 5] = (unsigned)pred;
    out[lane * 8 + 6] = __reduce_add_sync(0xffffffffu, (unsigned)lane);
    out[lane * 8 + 7] = (unsigned)__reduce_min_sync(half, 100 - lane);
    __syncwarp();
}
static bool t_votes() {
    unsigned *d = dev<unsigned>(256);
    KN_LAUNCH(vote_kernel, 1, 32, 0, 0, d);
    std::string e = launch_error();
    EXPECT(e.empty(), "%s", e.c_str());
    auto h = back(d, 256);
    unsigned b3 = 0;
    for (int l = 0; l < 32; l++)
        if (l % 3 == 0) b3 |= 1u << l;
    for (int l = 0; l < 32; l++) {
        unsigned *o = &h[l * 8];
        EXPECT(o[0] == b3, "ballot lane %d: %08x", l, o[0]);
        EXPECT(o[1] == (l >= 16 ? 1u : 0u), "any lane %d", l);
        EXPECT(o[2] == (l < 16 ? 1u : 0u), "all lane %d", l);
        unsigned m = 0;
        for (int k = 0; k < 32; k++)
            if (k % 5 == l % 5) m |= 1u << k;
        EXPECT(o[3] == m, "match_any lane %d: %08x want %08x", l, o[3], m);
        EXPECT(o[4] == (l < 16 ? 0x0000ffffu : 0u) && o[5] == (l < 16 ? 1u : 0u), "match_all lane %d: %08x %u", l, o[4],
               o[5]);
        EXPECT(o[6] == 496, "reduce_add lane %d: %u", l, o[6]);
        EXPECT(o[7] == (l < 16 ? 85u : 69u), "reduce_min lane %d: %u", l, o[7]);
    }
    return true;
}

// ---- atomics under contention, global and shared ----
__global__ void atomics_kernel(int *sum, int *mx, unsigned long long *cas_count, float *fsum, unsigned *hist,
                               int n_bins) {
    KN_SHARED(unsigned, bins, 16);
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (threadIdx.x < 16) bins[threadIdx.x] = 0;
    __syncthreads();
    atomicAdd(sum, 1);
    atomicMax(mx, (t * 7919) % 100003);
    unsigned long long o = *cas_count, seen;
    while ((seen = atomicCAS(cas_count, o, o + 1)) != o) o = seen;
    atomicAdd(fsum, 0.5f);
    atomicAdd(&bins[t % n_bins], 1u);
    __syncthreads();
    if ((int)threadIdx.x < n_bins) atomicAdd(&hist[threadIdx.x], (unsigned)bins[threadIdx.x]);
}
static bool t_atomics() {
    int *sum = dev<int>(1), *mx = dev<int>(1);
    unsigned long long *cc = dev<unsigned long long>(1);
    float *fs = dev<float>(1);
    unsigned *hist = dev<unsigned>(16);
    const int B = 37, T = 192, N = B * T;
    KN_LAUNCH(atomics_kernel, B, T, 0, 0, sum, mx, cc, fs, hist, 13);
    std::string e = launch_error();
    EXPECT(e.empty(), "%s", e.c_str());
    int want_max = 0;
    for (int t = 0; t < N; t++) want_max = std::max(want_max, (t * 7919) % 100003);
    EXPECT(back(sum, 1)[0] == N, "atomicAdd: %d", back(sum, 1)[0]);
    EXPECT(back(mx, 1)[0] == want_max, "atomicMax: %d want %d", back(mx, 1)[0], want_max);
    EXPECT(back(cc, 1)[0] == (unsigned long long)N, "atomicCAS loop: %llu", back(cc, 1)[0]);
    EXPECT(back(fs, 1)[0] == 0.5f * N, "float atomicAdd: %g", back(fs, 1)[0]);
    auto h = back(hist, 16);
    for (int b = 0; b < 13; b++) {
        unsigned w = 0;
        for (int t = 0; t < N; t++) w += t % 13 == b;
        EXPECT(h[b] == w, "shared histogram bin %d: %u want %u", b, h[b], w);
    }
    return true;
}

// ---- barriers in loops: a tree reduction per block, block count by __syncthreads_count ----
__global__ void tree_kernel(const float *x, float *out, int *counts) {
    KN_SHARED(float, s, 256);
    int t = threadIdx.x;
    s[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (t < k) s[t] += s[t + k];
        __syncthreads();
    }
    int c = __syncthreads_count(x[blockIdx.x * blockDim.x + t] > 0.5f);
    int any = __syncthreads_or(t == 3), all = __syncthreads_and(t >= 0);
    if (t == 0) {
        out[blockIdx.x] = s[0];
        counts[blockIdx.x] = c * 4 + any * 2 + all;
    }
}
static bool t_barriers() {
    const int B = 9, T = 256;
    std::vector<float> hx(B * T);
    for (int i = 0; i < B * T; i++) hx[i] = (float)((i * 37) % 101) / 100.0f;
    float *x = dev<float>(B * T), *out = dev<float>(B);
    int *cnt = dev<int>(B);
    cudaMemcpy(x, hx.data(), sizeof(float) * B * T, cudaMemcpyHostToDevice);
    KN_LAUNCH(tree_kernel, B, T, 0, 0, x, out, cnt);
    std::string e = launch_error();
    EXPECT(e.empty(), "%s", e.c_str());
    auto h = back(out, B);
    auto hc = back(cnt, B);
    for (int b = 0; b < B; b++) {
        double w = 0;
        int c = 0;
        for (int t = 0; t < T; t++) {
            w += hx[b * T + t];
            c += hx[b * T + t] > 0.5f;
        }
        EXPECT(fabs(h[b] - w) < 1e-3, "block %d: %g want %g", b, h[b], w);
        EXPECT(hc[b] == c * 4 + 3, "block %d: count/or/and %d want %d", b, hc[b], c * 4 + 3);
    }
    return true;
}

// ---- dynamic shared memory (2-D block): each block reverses its slice ----
__global__ void reverse_kernel(const int *x, int *y) {
    KN_SHARED_DYN(int, buf);
    int n = blockDim.x * blockDim.y, t = threadIdx.y * blockDim.x + threadIdx.x;
    buf[t] = x[blockIdx.x * n + t];
    __syncthreads();
    y[blockIdx.x * n + t] = buf[n - 1 - t];
}
static bool t_dynamic_shared() {
    const int B = 5, TX = 24, TY = 3, N = B * TX * TY;
    std::vector<int> hx(N);
    for (int i = 0; i < N; i++) hx[i] = i * 3 + 1;
    int *x = dev<int>(N), *y = dev<int>(N);
    cudaMemcpy(x, hx.data(), sizeof(int) * N, cudaMemcpyHostToDevice);
    KN_LAUNCH(reverse_kernel, B, dim3(TX, TY), TX * TY * sizeof(int), 0, x, y);
    std::string e = launch_error();
    EXPECT(e.empty(), "%s", e.c_str());
    auto h = back(y, N);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < TX * TY; t++)
            EXPECT(h[b * TX * TY + t] == hx[b * TX * TY + TX * TY - 1 - t], "block %d element %d", b, t);
#ifdef KILN_CUDA_SIM
    // one element too little dynamic shared memory: the last thread's write is out of bounds
    KN_LAUNCH(reverse_kernel, B, dim3(TX, TY), TX * TY * sizeof(int) - 4, 0, x, y);
    e = launch_error();
    EXPECT(e.find("reverse_kernel") != std::string::npos && e.find("out of bounds") != std::string::npos,
           "short dynamic smem: '%s'", e.c_str());
#endif
    return true;
}

// ---- tensor cores: fragments loaded by the PTX layout from row-major A[16][16], B[16][8] ----
template <bool BF> __global__ void mma_kernel(const uint16_t *A, const uint16_t *B, const float *C, float *D) {
    int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    auto pair = [](uint16_t lo, uint16_t hi) { return (uint32_t)lo | (uint32_t)hi << 16; };
    uint32_t a[4] = {pair(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]),
                     pair(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]),
                     pair(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]),
                     pair(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9])};
    uint32_t b[2] = {pair(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]),
                     pair(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g])};
    float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]}, d[4];
    if (BF) kn_mma_m16n8k16_bf16(d, a, b, c);
    else kn_mma_m16n8k16_f16(d, a, b, c);
    D[g * 8 + 2 * t] = d[0];
    D[g * 8 + 2 * t + 1] = d[1];
    D[(g + 8) * 8 + 2 * t] = d[2];
    D[(g + 8) * 8 + 2 * t + 1] = d[3];
}
template <bool BF> static bool mma_case() {
    std::vector<uint16_t> ha(256), hb(128);
    std::vector<float> fa(256), fb(128), hc(128);
    for (int i = 0; i < 256; i++) {
        fa[i] = (float)((i * 7) % 11 - 5) * 0.25f;
        ha[i] = BF ? __bfloat16_as_ushort(__float2bfloat16(fa[i])) : __half_as_ushort(__float2half(fa[i]));
    }
    for (int i = 0; i < 128; i++) {
        fb[i] = (float)((i * 5) % 9 - 4) * 0.5f;
        hb[i] = BF ? __bfloat16_as_ushort(__float2bfloat16(fb[i])) : __half_as_ushort(__float2half(fb[i]));
        hc[i] = (float)(i % 3);
    }
    uint16_t *A = dev<uint16_t>(256), *B = dev<uint16_t>(128);
    float *C = dev<float>(128), *D = dev<float>(128);
    cudaMemcpy(A, ha.data(), 512, cudaMemcpyHostToDevice);
    cudaMemcpy(B, hb.data(), 256, cudaMemcpyHostToDevice);
    cudaMemcpy(C, hc.data(), 512, cudaMemcpyHostToDevice);
    KN_LAUNCH(mma_kernel<BF>, 1, 32, 0, 0, A, B, C, D);
    std::string e = launch_error();
    EXPECT(e.empty(), "%s", e.c_str());
    auto hd = back(D, 128);
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 8; c++) {
            double w = hc[r * 8 + c];
            for (int k = 0; k < 16; k++) w += (double)fa[r * 16 + k] * fb[k * 8 + c];
            EXPECT(hd[r * 8 + c] == (float)w, "%s D[%d][%d] = %g, want %g", BF ? "bf16" : "f16", r, c, hd[r * 8 + c],
                   w);
        }
    return true;
}
static bool t_mma() { return mma_case<false>() && mma_case<true>(); }

// ---- ldmatrix: four 8x8 b16 matrices in shared memory, element value 256 * matrix + 8 * row + col ----
__global__ void ldsm_kernel(uint32_t *out, int n, int trans) {
    KN_SHARED(uint16_t, m, 4 * 64);
    int lane = threadIdx.x;
    for (int i = lane; i < 256; i += 32) m[i] = (uint16_t)((i / 64) * 256 + i % 64);
    __syncwarp();
    // lane 8i + r gives row r of matrix i
    KN_SHARED_PTR(uint16_t) row = m + (lane / 8) * 64 + (lane % 8) * 8;
    uint32_t r[4] = {0, 0, 0, 0};
    if (n == 1) {
        if (trans) kn_ldmatrix_x1_trans(r, row);
        else kn_ldmatrix_x1(r, row);
    }
    if (n == 2) {
        if (trans) kn_ldmatrix_x2_trans(r, row);
        else kn_ldmatrix_x2(r, row);
    }
    if (n == 4) {
        if (trans) kn_ldmatrix_x4_trans(r, row);
        else kn_ldmatrix_x4(r, row);
    }
    for (int i = 0; i < 4; i++) out[lane * 4 + i] = r[i];
}
static bool t_ldmatrix() {
    uint32_t *d = dev<uint32_t>(128);
    for (int n = 1; n <= 4; n *= 2)
        for (int trans = 0; trans < 2; trans++) {
            KN_LAUNCH(ldsm_kernel, 1, 32, 0, 0, d, n, trans);
            std::string e = launch_error();
            EXPECT(e.empty(), "%s", e.c_str());
            auto h = back(d, 128);
            for (int l = 0; l < 32; l++)
                for (int i = 0; i < n; i++) {
                    // PTX ISA: without .trans lane l holds row l/4, columns 2(l%4), 2(l%4)+1
                    int r0 = trans ? 2 * (l % 4) : l / 4, c0 = trans ? l / 4 : 2 * (l % 4);
                    int r1 = trans ? r0 + 1 : r0, c1 = trans ? c0 : c0 + 1;
                    uint32_t w = (uint32_t)(256 * i + 8 * r0 + c0) | (uint32_t)(256 * i + 8 * r1 + c1) << 16;
                    EXPECT(h[l * 4 + i] == w, "x%d%s lane %d reg %d: %08x want %08x", n, trans ? ".trans" : "", l, i,
                           h[l * 4 + i], w);
                }
        }
    return true;
}

// ---- half and bfloat16 bits ----
static bool t_fp16_bits() {
    struct {
        float f;
        unsigned short h, b;
    } cases[] = {{1.0f, 0x3c00, 0x3f80},           {-0.0f, 0x8000, 0x8000},         {65504.0f, 0x7bff, 0x4780},
                 {65519.99f, 0x7bff, 0x4780},      {65520.0f, 0x7c00, 0x4780},      {5.9604645e-8f, 0x0001, 0x3380},
                 {2.9802322e-8f, 0x0000, 0x3300},  {4.4703484e-8f, 0x0001, 0x3340}, {1.00048828125f, 0x3c00, 0x3f80},
                 {1.00146484375f, 0x3c02, 0x3f80}, {1.00390625f, 0x3c04, 0x3f80},   {1.01171875f, 0x3c0c, 0x3f82},
                 {INFINITY, 0x7c00, 0x7f80},       {-1e30f, 0xfc00, 0xf14a},        {NAN, 0x7fff, 0x7fff},
                 {3.4e38f, 0x7c00, 0x7f80},        {6.1035156e-05f, 0x0400, 0x3880}};
    for (auto &c : cases) {
        EXPECT(__half_as_ushort(__float2half_rn(c.f)) == c.h, "half(%g) = %04x, want %04x", c.f,
               __half_as_ushort(__float2half_rn(c.f)), c.h);
        EXPECT(__bfloat16_as_ushort(__float2bfloat16_rn(c.f)) == c.b, "bf16(%g) = %04x, want %04x", c.f,
               __bfloat16_as_ushort(__float2bfloat16_rn(c.f)), c.b);
    }
    for (unsigned u = 0; u < 65536; u++) { // every half survives the round trip through float
        __half h = __ushort_as_half((unsigned short)u);
        float f = __half2float(h);
        bool nan = (u & 0x7fff) > 0x7c00;
        unsigned back_bits = __half_as_ushort(__float2half_rn(f));
        EXPECT(nan ? (f != f && back_bits == 0x7fff) : back_bits == u, "half %04x -> %g -> %04x", u, f, back_bits);
        __nv_bfloat16 b = __ushort_as_bfloat16((unsigned short)u);
        float g = __bfloat162float(b);
        bool bnan = (u & 0x7fff) > 0x7f80;
        unsigned bb = __bfloat16_as_ushort(__float2bfloat16_rn(g));
        EXPECT(bnan ? bb == 0x7fff : bb == u, "bf16 %04x -> %g -> %04x", u, g, bb);
    }
    EXPECT(__half2float(__hadd(__float2half(1.0f), __float2half(0.00048828125f))) == 1.0f, "half add tie to even");
    return true;
}

#ifdef KILN_CUDA_SIM
// ---- blocks run in a shuffled order ----
__global__ void order_kernel(int *ticket, int *order) {
    if (threadIdx.x == 0) order[atomicAdd(ticket, 1)] = blockIdx.x;
}
static bool t_block_order() {
    int *tk = dev<int>(1), *ord = dev<int>(64);
    KN_LAUNCH(order_kernel, 64, 32, 0, 0, tk, ord);
    EXPECT(launch_error().empty(), "launch");
    auto h = back(ord, 64);
    std::vector<int> seen(64, 0);
    int in_place = 0;
    for (int i = 0; i < 64; i++) {
        seen[h[i]]++;
        in_place += h[i] == i;
    }
    for (int i = 0; i < 64; i++) EXPECT(seen[i] == 1, "block %d ran %d times", i, seen[i]);
    EXPECT(in_place < 16, "blocks ran in launch order (%d of 64 in place)", in_place);
    return true;
}

// ---- runtime: host pointers refused, bad configurations, errors cleared ----
__global__ void touch_kernel(float *p) { p[threadIdx.x] = 1.0f; }
static bool t_runtime_checks() {
    float *h = (float *)malloc(64 * sizeof(float));
    KN_LAUNCH(touch_kernel, 1, 32, 0, 0, h);
    std::string e = launch_error();
    EXPECT(e.find("touch_kernel") != std::string::npos && e.find("not device memory") != std::string::npos,
           "host pointer: '%s'", e.c_str());
    free(h);
    float *d = dev<float>(32);
    KN_LAUNCH(touch_kernel, 1, 2048, 0, 0, d);
    e = launch_error();
    EXPECT(e.find("invalid configuration") != std::string::npos, "2048 threads: '%s'", e.c_str());
    KN_LAUNCH(touch_kernel, 1, 32, 0, 0, d);
    EXPECT(launch_error().empty(), "a good launch after failed ones");
    EXPECT(back(d, 32)[31] == 1.0f, "kernel ran");
    float x = 0;
    EXPECT(cudaMemcpy(&x, d, 4, cudaMemcpyDeviceToHost) == cudaSuccess && x == 1.0f, "D2H into host memory");
    EXPECT(cudaMemcpy(d, &x, 4, cudaMemcpyDeviceToHost) != cudaSuccess, "D2H from a host source must fail");
    EXPECT(cudaMemcpy(&x, d, 4, cudaMemcpyDeviceToDevice) != cudaSuccess, "D2D with a host destination must fail");
    cudaGetLastError();
    cudaDeviceProp p;
    cudaGetDeviceProperties(&p, 0);
    EXPECT(p.major == 9 && p.minor == 0 && strstr(p.name, "SIMT"), "device properties");
    return true;
}

// ---- broken kernels: each must fail its launch with an error naming it ----
__global__ void broken_offbyone_kernel(float *out) {
    KN_SHARED(float, tile, 32);
    tile[threadIdx.x + 1] = (float)threadIdx.x; // thread 31 writes tile[32]
    __syncthreads();
    out[threadIdx.x] = tile[threadIdx.x];
}
__global__ void broken_race_kernel(float *out) {
    KN_SHARED(float, tile, 64);
    tile[threadIdx.x] = 0.0f;
    __syncthreads();
    tile[threadIdx.x] = (float)threadIdx.x;
    // missing __syncthreads(): the neighbour may not have written its element yet
    out[threadIdx.x] = tile[(threadIdx.x + 1) % blockDim.x];
}
__global__ void broken_uninit_kernel(float *out) {
    KN_SHARED(float, partial, 64);
    if (threadIdx.x < 32) partial[threadIdx.x] = 1.0f; // the upper half is never written
    __syncthreads();
    out[threadIdx.x] = partial[63 - threadIdx.x];
}
__global__ void broken_divergent_barrier_kernel(float *out) {
    if (threadIdx.x < 16) __syncthreads(); // half the block never arrives
    out[threadIdx.x] = 1.0f;
}
__global__ void broken_two_barriers_kernel(float *out) {
    if (threadIdx.x & 1) __syncthreads();
    else __syncthreads();
    out[threadIdx.x] = 1.0f;
}
__global__ void broken_warp_mask_kernel(float *out) {
    float v = (float)threadIdx.x;
    unsigned mask = threadIdx.x == 5 ? 0x0000ffffu : 0xffffffffu; // lane 5 disagrees
    out[threadIdx.x] = __shfl_xor_sync(mask, v, 1);
}
__global__ void broken_warp_exited_kernel(float *out) {
    if (threadIdx.x == 31) return; // lane 31 is named in the mask below but has exited
    out[threadIdx.x] = __shfl_down_sync(0xffffffffu, (float)threadIdx.x, 1);
}
__global__ void broken_mask_not_self_kernel(float *out) {
    out[threadIdx.x] = (float)__ballot_sync(0x1u, 1); // lanes other than 0 name a mask without themselves
}
__global__ void broken_warp_vs_barrier_kernel(float *out) {
    if (threadIdx.x < 16) __syncwarp();
    else __syncthreads();
    out[threadIdx.x] = 1.0f;
}
static bool expect_caught(void (*launch)(float *), const char *kernel, const char *what) {
    float *d = dev<float>(64);
    launch(d);
    std::string e = launch_error();
    EXPECT(e.find(kernel) != std::string::npos && e.find(what) != std::string::npos,
           "want an error naming %s and '%s', got '%s'", kernel, what, e.c_str());
    printf("      caught: %s\n", e.c_str());
    return true;
}
static bool t_catch_offbyone() {
    return expect_caught([](float *d) { KN_LAUNCH(broken_offbyone_kernel, 2, 32, 0, 0, d); }, "broken_offbyone_kernel",
                         "out of bounds");
}
static bool t_catch_race() {
    float *d = dev<float>(64);
    setenv("KILN_SIM_RACECHECK", "0", 1);
    KN_LAUNCH(broken_race_kernel, 1, 64, 0, 0, d); // unchecked: runs (and happens to give some answer)
    std::string e = launch_error();
    EXPECT(e.empty(), "without racecheck: '%s'", e.c_str());
    setenv("KILN_SIM_RACECHECK", "1", 1);
    bool ok = expect_caught([](float *p) { KN_LAUNCH(broken_race_kernel, 1, 64, 0, 0, p); }, "broken_race_kernel",
                            "shared-memory race");
    // a correct kernel stays clean under racecheck (the tree reduction has barriers everywhere)
    if (ok) ok = t_barriers() && t_atomics() && t_ldmatrix();
    unsetenv("KILN_SIM_RACECHECK");
    return ok;
}
static bool t_catch_uninit() {
    setenv("KILN_SIM_RACECHECK", "1", 1);
    bool ok = expect_caught([](float *p) { KN_LAUNCH(broken_uninit_kernel, 3, 64, 0, 0, p); }, "broken_uninit_kernel",
                            "uninitialized");
    unsetenv("KILN_SIM_RACECHECK");
    return ok;
}
static bool t_catch_divergent_barrier() {
    return expect_caught([](float *d) { KN_LAUNCH(broken_divergent_barrier_kernel, 1, 64, 0, 0, d); },
                         "broken_divergent_barrier_kernel", "__syncthreads");
}
static bool t_catch_two_barriers() {
    return expect_caught([](float *d) { KN_LAUNCH(broken_two_barriers_kernel, 1, 64, 0, 0, d); },
                         "broken_two_barriers_kernel", "different __syncthreads");
}
static bool t_catch_warp_mask() {
    return expect_caught([](float *d) { KN_LAUNCH(broken_warp_mask_kernel, 1, 32, 0, 0, d); },
                         "broken_warp_mask_kernel", "inconsistent warp masks");
}
static bool t_catch_warp_exited() {
    return expect_caught([](float *d) { KN_LAUNCH(broken_warp_exited_kernel, 1, 32, 0, 0, d); },
                         "broken_warp_exited_kernel", "exit");
}
static bool t_catch_mask_not_self() {
    return expect_caught([](float *d) { KN_LAUNCH(broken_mask_not_self_kernel, 1, 32, 0, 0, d); },
                         "broken_mask_not_self_kernel", "does not name the calling lane");
}
static bool t_catch_warp_vs_barrier() {
    return expect_caught([](float *d) { KN_LAUNCH(broken_warp_vs_barrier_kernel, 1, 32, 0, 0, d); },
                         "broken_warp_vs_barrier_kernel", "__syncthreads");
}

#endif // KILN_CUDA_SIM

// ---- stream-ordered allocations inside a CUDA graph ----
__global__ void twice_kernel(const float *in, float *tmp) { tmp[threadIdx.x] = 2.0f * in[threadIdx.x]; }
__global__ void plus_one_kernel(const float *tmp, float *out) { out[threadIdx.x] = tmp[threadIdx.x] + 1.0f; }
// A scratch buffer cudaMallocAsync'ed and cudaFreeAsync'ed while a stream is captured is the
// graph's memory (a GroupQueryAttention step's rotated queries): every launch of the graph finds it.
static bool t_graph_async_alloc() {
    float *in = dev<float>(32), *out = dev<float>(32);
    cudaStream_t s;
    EXPECT(cudaStreamCreate(&s) == cudaSuccess, "stream");
    EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess, "begin capture");
    float *tmp = NULL;
    EXPECT(cudaMallocAsync((void **)&tmp, 32 * sizeof(float), s) == cudaSuccess, "cudaMallocAsync while capturing");
    KN_LAUNCH(twice_kernel, 1, 32, 0, s, in, tmp);
    KN_LAUNCH(plus_one_kernel, 1, 32, 0, s, tmp, out);
    EXPECT(cudaFreeAsync(tmp, s) == cudaSuccess, "cudaFreeAsync while capturing");
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    EXPECT(cudaStreamEndCapture(s, &graph) == cudaSuccess && graph, "end capture");
    EXPECT(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess, "instantiate");
    for (int launch = 0; launch < 3; launch++) {
        std::vector<float> h(32);
        for (int i = 0; i < 32; i++) h[i] = (float)(i + 100 * launch);
        EXPECT(cudaMemcpy(in, h.data(), sizeof(float) * 32, cudaMemcpyHostToDevice) == cudaSuccess, "upload");
        EXPECT(cudaGraphLaunch(exec, s) == cudaSuccess && cudaStreamSynchronize(s) == cudaSuccess, "launch %d: %s",
               launch, cudaGetErrorString(cudaGetLastError()));
        std::vector<float> r = back(out, 32);
        for (int i = 0; i < 32; i++)
            EXPECT(r[i] == 2.0f * h[i] + 1.0f, "launch %d: out[%d] = %g, want %g", launch, i, r[i], 2.0f * h[i] + 1.0f);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(s);
    return true;
}

int main() {
#ifndef KILN_CUDA_SIM
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        printf("skipped: no CUDA device\n");
        return 77;
    }
#endif
    struct {
        const char *name;
        bool (*fn)();
    } tests[] = {
        {"shuffles (idx, up, down, xor; widths 1..32)", t_shuffles},
        {"shuffles of double, __half, long long", t_shuffle_types},
        {"ballot, any, all, match_any, match_all, reduce (full and half masks)", t_votes},
        {"atomics under contention (global int/float/CAS loop, shared histogram)", t_atomics},
        {"barriers in loops, __syncthreads_count/and/or", t_barriers},
        {"dynamic shared memory (2-D blocks), its bound", t_dynamic_shared},
        {"mma.m16n8k16 f16 and bf16 vs a plain matrix product", t_mma},
        {"ldmatrix x1/x2/x4 and .trans vs the PTX layout", t_ldmatrix},
        {"half and bfloat16 rounding bits, all 65536 round trips", t_fp16_bits},
        {"cudaMallocAsync scratch of a captured stream lives with its graph", t_graph_async_alloc},
#ifdef KILN_CUDA_SIM
        {"blocks run in a shuffled order", t_block_order},
        {"runtime: host pointers, bad configurations, errors cleared", t_runtime_checks},
        {"catches an off-by-one shared write", t_catch_offbyone},
        {"catches a missing __syncthreads (racecheck)", t_catch_race},
        {"catches a read of shared memory nothing wrote (racecheck)", t_catch_uninit},
        {"catches a barrier half the block skips", t_catch_divergent_barrier},
        {"catches threads at different barriers", t_catch_two_barriers},
        {"catches lanes that disagree on a warp mask", t_catch_warp_mask},
        {"catches a warp op whose mask names an exited lane", t_catch_warp_exited},
        {"catches a mask that leaves out the calling lane", t_catch_mask_not_self},
        {"catches a warp op waiting on lanes at a barrier", t_catch_warp_vs_barrier},
#endif
    };
    int n = 0;
    for (auto &t : tests) {
        why.clear();
        bool ok = t.fn();
        dev_free_all();
        printf("%-4s %s%s%s\n", ok ? "ok" : "FAIL", t.name, ok ? "" : ": ", ok ? "" : why.c_str());
        n++;
        if (!ok) n_fail++;
    }
    printf("%d of %d interpreter tests passed\n", n - n_fail, n);
    return n_fail ? 1 : 0;
}
