// The convolution family on the device: Conv, ConvTranspose and the kiln backward ops ConvGradX /
// ConvGradW. All four are one implicit GEMM per group, C[R x Q] = A[R x K] * B[K x Q], whose
// operands are gathered from the tensors on the fly (no im2col buffer in device memory):
//   forward  (Conv):               rows = output channels,  cols = (image, output position),
//                                  K = (input channel, kernel tap), B = X at the tap's position;
//   input adjoint (ConvGradX, and ConvTranspose, which is the same sum with its own weights):
//                                  rows = input channels,   cols = (image, input position),
//                                  K = (output channel, tap), B = dy where the tap lands on a stride;
//   weight adjoint (ConvGradW):    rows = output channels,  cols = (input channel, tap),
//                                  K = (image, output position).
// Tiles of 64 x 64 outputs per 256-thread block, K in steps of 16 staged in shared memory, 4 x 4
// outputs per thread in registers, fp32 accumulation (16-bit inputs widened on the way into shared
// memory, outputs rounded once). Every output is owned by one thread and summed in a fixed order,
// so results are bit-identical run to run (no atomics). Depthwise convolutions (one input channel
// per group), where the GEMM would use one row of 64, have direct kernels: one thread per output
// for the forward and the input adjoint, one block per weight (a fixed-order tree reduction) for
// the weight adjoint. Spatial ranks 1 to 3, any groups, strides, dilations, pads and auto_pad.
#include "kernels/cuda/cuda_common.h"
#include "graph/op_helpers.h"

#define CONV_MAX_SP 3
#define CONV_BM 64
#define CONV_BN 64
#define CONV_BK 16
#define CONV_THREADS 256

// The window between the forward's image (X) and its output (Y), plus the group split.
struct conv_geo {
    int nsp;
    int img[CONV_MAX_SP], out[CONV_MAX_SP], k[CONV_MAX_SP], s[CONV_MAX_SP], d[CONV_MAX_SP], pb[CONV_MAX_SP];
    int64_t img_n, out_n, k_n;
    int64_t N, G, Cg, Mg;
};

enum conv_mode { CONV_FWD = 0, CONV_DX = 1, CONV_DW = 2 };

// Coordinates of linear index i over dims n[0..nsp).
__device__ static inline void conv_coords(const int *n, int nsp, int64_t i, int *c) {
    for (int d = nsp - 1; d >= 0; d--) {
        c[d] = (int)(i % n[d]);
        i /= n[d];
    }
}

// Image offset of output position o under tap kk, or -1 in the padding.
__device__ static inline int64_t conv_img_off(const conv_geo &g, int64_t o, int64_t kk) {
    int oc[CONV_MAX_SP], kc[CONV_MAX_SP];
    conv_coords(g.out, g.nsp, o, oc);
    conv_coords(g.k, g.nsp, kk, kc);
    int64_t off = 0;
    for (int d = 0; d < g.nsp; d++) {
        int ip = oc[d] * g.s[d] - g.pb[d] + kc[d] * g.d[d];
        if (ip < 0 || ip >= g.img[d]) return -1;
        off = off * g.img[d] + ip;
    }
    return off;
}

// Output offset whose tap kk reads image position ip, or -1 if none does (off-stride or outside).
__device__ static inline int64_t conv_out_off(const conv_geo &g, int64_t ip, int64_t kk) {
    int ic[CONV_MAX_SP], kc[CONV_MAX_SP];
    conv_coords(g.img, g.nsp, ip, ic);
    conv_coords(g.k, g.nsp, kk, kc);
    int64_t off = 0;
    for (int d = 0; d < g.nsp; d++) {
        int t = ic[d] + g.pb[d] - kc[d] * g.d[d];
        if (t < 0 || t % g.s[d]) return -1;
        t /= g.s[d];
        if (t >= g.out[d]) return -1;
        off = off * g.out[d] + t;
    }
    return off;
}

// A[g][r][kx] of the mode's GEMM as stored (callers bound r and kx).
template <int MODE, class T>
__device__ static inline T conv_a(const conv_geo &g, const T *a, int64_t gi, int64_t r, int64_t kx) {
    if (MODE == CONV_FWD) return a[(gi * g.Mg + r) * g.Cg * g.k_n + kx];
    if (MODE == CONV_DX) {
        int64_t m = kx / g.k_n, kk = kx % g.k_n;
        return a[((gi * g.Mg + m) * g.Cg + r) * g.k_n + kk];
    }
    int64_t n = kx / g.out_n, o = kx % g.out_n; // CONV_DW: a = dy
    return a[((n * g.G + gi) * g.Mg + r) * g.out_n + o];
}

// A column q of B's tile, decoded once per thread: the column is fixed while K is walked (each
// thread loads the same column of every K step), so only K's index is decoded per element.
//   FWD: q = (image, output position); org = the window origin o*s - pad per dim
//   DX:  q = (image, input position);  org = ip + pad per dim
//   DW:  q = (input channel, tap);     org = tap*dilation - pad per dim
struct conv_col {
    int64_t base;
    int org[CONV_MAX_SP];
};

template <int MODE> __device__ static inline conv_col conv_col_make(const conv_geo &g, int64_t gi, int64_t q) {
    conv_col c;
    int co[CONV_MAX_SP];
    if (MODE == CONV_FWD) {
        int64_t n = q / g.out_n;
        conv_coords(g.out, g.nsp, q % g.out_n, co);
        c.base = (n * g.G + gi) * g.Cg * g.img_n;
        for (int d = 0; d < g.nsp; d++) c.org[d] = co[d] * g.s[d] - g.pb[d];
    } else if (MODE == CONV_DX) {
        int64_t n = q / g.img_n;
        conv_coords(g.img, g.nsp, q % g.img_n, co);
        c.base = (n * g.G + gi) * g.Mg * g.out_n;
        for (int d = 0; d < g.nsp; d++) c.org[d] = co[d] + g.pb[d];
    } else {
        int64_t ch = q / g.k_n;
        conv_coords(g.k, g.nsp, q % g.k_n, co);
        c.base = (gi * g.Cg + ch) * g.img_n;
        for (int d = 0; d < g.nsp; d++) c.org[d] = co[d] * g.d[d] - g.pb[d];
    }
    return c;
}

// B[g][kx][q] of the mode's GEMM as stored, zero in the padding or off the stride.
template <int MODE, class T>
__device__ static inline T conv_b(const conv_geo &g, const T *b, const conv_col &c, int64_t kx) {
    int kc[CONV_MAX_SP];
    int64_t off = 0, base;
    if (MODE == CONV_FWD) { // K = (input channel, tap)
        conv_coords(g.k, g.nsp, kx % g.k_n, kc);
        base = c.base + kx / g.k_n * g.img_n;
        for (int d = 0; d < g.nsp; d++) {
            int ip = c.org[d] + kc[d] * g.d[d];
            if (ip < 0 || ip >= g.img[d]) return kn_num<T>::st(0.0f);
            off = off * g.img[d] + ip;
        }
    } else if (MODE == CONV_DX) { // K = (output channel, tap); b = dy
        conv_coords(g.k, g.nsp, kx % g.k_n, kc);
        base = c.base + kx / g.k_n * g.out_n;
        for (int d = 0; d < g.nsp; d++) {
            int t = c.org[d] - kc[d] * g.d[d];
            if (t < 0 || t % g.s[d]) return kn_num<T>::st(0.0f);
            t /= g.s[d];
            if (t >= g.out[d]) return kn_num<T>::st(0.0f);
            off = off * g.out[d] + t;
        }
    } else { // CONV_DW: K = (image, output position); b = x
        conv_coords(g.out, g.nsp, kx % g.out_n, kc);
        base = c.base + kx / g.out_n * g.G * g.Cg * g.img_n;
        for (int d = 0; d < g.nsp; d++) {
            int ip = kc[d] * g.s[d] + c.org[d];
            if (ip < 0 || ip >= g.img[d]) return kn_num<T>::st(0.0f);
            off = off * g.img[d] + ip;
        }
    }
    return b[base + off];
}

// Output offset of C[g][r][q], and its bias index (-1: none).
template <int MODE> __device__ static inline int64_t conv_c_off(const conv_geo &g, int64_t gi, int64_t r, int64_t q) {
    if (MODE == CONV_FWD) return ((q / g.out_n * g.G + gi) * g.Mg + r) * g.out_n + q % g.out_n;
    if (MODE == CONV_DX) return ((q / g.img_n * g.G + gi) * g.Cg + r) * g.img_n + q % g.img_n;
    return ((gi * g.Mg + r) * g.Cg) * g.k_n + q;
}

// grid: x over column tiles, y over (group, row tile). R, Q, K: the GEMM's sizes per group.
template <int MODE, class T>
__global__ void conv_gemm_kernel(T *c, const T *a, const T *b, const T *bias, conv_geo g, int64_t R, int64_t Q,
                                 int64_t K, int64_t row_tiles, int64_t g0) {
    KN_SHARED(float, as, CONV_BK *CONV_BM);
    KN_SHARED(float, bs, CONV_BK *CONV_BN);
    int t = threadIdx.x, tx = t % 16, ty = t / 16;
    int64_t gi = g0 + blockIdx.y / row_tiles, r0 = (blockIdx.y % row_tiles) * CONV_BM,
            q0 = (int64_t)blockIdx.x * CONV_BN;
    // the B column this thread loads on every K step (CONV_THREADS is a multiple of CONV_BN)
    int qc = t % CONV_BN;
    bool qok = q0 + qc < Q;
    conv_col col = conv_col_make<MODE>(g, gi, qok ? q0 + qc : 0);
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += CONV_BK) {
        // A tile: consecutive threads along K (the contiguous axis of W); B tile: along the columns
        // (the contiguous positions of X / dy)
        for (int e = t; e < CONV_BK * CONV_BM; e += CONV_THREADS) {
            int kx = e % CONV_BK, r = e / CONV_BK;
            int64_t gr = r0 + r, gk = k0 + kx;
            as[kx * CONV_BM + r] = gr < R && gk < K ? kn_num<T>::ld(conv_a<MODE, T>(g, a, gi, gr, gk)) : 0.0f;
        }
        for (int e = t; e < CONV_BK * CONV_BN; e += CONV_THREADS) {
            int kx = e / CONV_BN;
            int64_t gk = k0 + kx;
            bs[kx * CONV_BN + qc] = qok && gk < K ? kn_num<T>::ld(conv_b<MODE, T>(g, b, col, gk)) : 0.0f;
        }
        __syncthreads();
        for (int kx = 0; kx < CONV_BK; kx++) {
            float av[4], bv[4];
            for (int i = 0; i < 4; i++) av[i] = as[kx * CONV_BM + ty + 16 * i];
            for (int j = 0; j < 4; j++) bv[j] = bs[kx * CONV_BN + tx + 16 * j];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; i++) {
        int64_t r = r0 + ty + 16 * i;
        if (r >= R) continue;
        float bv = 0.0f;
        if (bias) bv = kn_num<T>::ld(bias[gi * R + r]);
        for (int j = 0; j < 4; j++) {
            int64_t q = q0 + tx + 16 * j;
            if (q < Q) c[conv_c_off<MODE>(g, gi, r, q)] = kn_num<T>::st(acc[i][j] + bv);
        }
    }
}

// The 16-bit GEMM on tensor cores: the same 64 x 64 tile and operand gathers, K in steps of 16
// staged in shared memory as packed pairs (A row-major, B column-major, so each fragment register
// is one 32-bit word; rows padded to 12 words against bank conflicts), and per warp (2 x 4 warps)
// a 32 x 16 block of m16n8k16 MMAs with fp32 accumulators.
#define CONV_KW 12 // words per staged row: 8 pairs of K + 4 padding
__device__ static inline uint32_t conv_bits(__half h) { return __half_as_ushort(h); }
__device__ static inline uint32_t conv_bits(__nv_bfloat16 h) { return __bfloat16_as_ushort(h); }
__device__ static inline void conv_mma(float d[4], const uint32_t a[4], const uint32_t b[2], __half) {
    kn_mma_m16n8k16_f16(d, a, b, d);
}
__device__ static inline void conv_mma(float d[4], const uint32_t a[4], const uint32_t b[2], __nv_bfloat16) {
    kn_mma_m16n8k16_bf16(d, a, b, d);
}

template <int MODE, class T>
__global__ void conv_mma_kernel(T *c, const T *a, const T *b, const T *bias, conv_geo g, int64_t R, int64_t Q,
                                int64_t K, int64_t row_tiles, int64_t g0) {
    KN_SHARED(uint32_t, as, CONV_BM * CONV_KW);
    KN_SHARED(uint32_t, bs, CONV_BN * CONV_KW);
    int t = threadIdx.x, lane = t & 31, warp = t >> 5, wm = warp >> 2, wn = warp & 3, lg = lane >> 2, lt = lane & 3;
    int64_t gi = g0 + blockIdx.y / row_tiles, r0 = (blockIdx.y % row_tiles) * CONV_BM,
            q0 = (int64_t)blockIdx.x * CONV_BN;
    int qc = t % CONV_BN;
    bool qok = q0 + qc < Q;
    conv_col col = conv_col_make<MODE>(g, gi, qok ? q0 + qc : 0);
    float acc[2][2][4];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += CONV_BK) {
        for (int e = t; e < CONV_BM * (CONV_BK / 2); e += CONV_THREADS) {
            int kp = e % (CONV_BK / 2), r = e / (CONV_BK / 2);
            int64_t gr = r0 + r, gk = k0 + 2 * kp;
            uint32_t lo = 0, hi = 0;
            if (gr < R && gk < K) lo = conv_bits(conv_a<MODE, T>(g, a, gi, gr, gk));
            if (gr < R && gk + 1 < K) hi = conv_bits(conv_a<MODE, T>(g, a, gi, gr, gk + 1));
            as[r * CONV_KW + kp] = lo | hi << 16;
        }
        for (int e = t; e < CONV_BN * (CONV_BK / 2); e += CONV_THREADS) {
            int kp = e / CONV_BN;
            int64_t gk = k0 + 2 * kp;
            uint32_t lo = 0, hi = 0;
            if (qok && gk < K) lo = conv_bits(conv_b<MODE, T>(g, b, col, gk));
            if (qok && gk + 1 < K) hi = conv_bits(conv_b<MODE, T>(g, b, col, gk + 1));
            bs[qc * CONV_KW + kp] = lo | hi << 16;
        }
        __syncthreads();
        uint32_t af[2][4], bf[2][2];
        for (int i = 0; i < 2; i++) {
            int row = wm * 32 + i * 16 + lg;
            af[i][0] = as[row * CONV_KW + lt];
            af[i][1] = as[(row + 8) * CONV_KW + lt];
            af[i][2] = as[row * CONV_KW + lt + 4];
            af[i][3] = as[(row + 8) * CONV_KW + lt + 4];
        }
        for (int j = 0; j < 2; j++) {
            int col = wn * 16 + j * 8 + lg;
            bf[j][0] = bs[col * CONV_KW + lt];
            bf[j][1] = bs[col * CONV_KW + lt + 4];
        }
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) conv_mma(acc[i][j], af[i], bf[j], T());
        __syncthreads();
    }
    for (int i = 0; i < 2; i++)
        for (int h = 0; h < 2; h++) {
            int64_t r = r0 + wm * 32 + i * 16 + lg + 8 * h;
            if (r >= R) continue;
            float bv = bias ? kn_num<T>::ld(bias[gi * R + r]) : 0.0f;
            for (int j = 0; j < 2; j++)
                for (int e = 0; e < 2; e++) {
                    int64_t q = q0 + wn * 16 + j * 8 + 2 * lt + e;
                    if (q < Q) c[conv_c_off<MODE>(g, gi, r, q)] = kn_num<T>::st(acc[i][j][2 * h + e] + bv);
                }
        }
}

// Depthwise forward (Cg == 1): y[n][m][o] = bias[m] + sum_kk x[n][m / Mg][tap] * w[m][kk].
template <class T>
__global__ void conv_dw_fwd_kernel(T *y, const T *x, const T *w, const T *bias, conv_geo g, int64_t total) {
    KN_GRID_STRIDE(i, total) {
        int64_t o = i % g.out_n, nm = i / g.out_n, m = nm % (g.G * g.Mg), n = nm / (g.G * g.Mg), gi = m / g.Mg;
        const T *xp = x + (n * g.G + gi) * g.img_n;
        const T *wp = w + m * g.k_n;
        float s = 0.0f;
        for (int64_t kk = 0; kk < g.k_n; kk++) {
            int64_t off = conv_img_off(g, o, kk);
            if (off >= 0) s = fmaf(kn_num<T>::ld(wp[kk]), kn_num<T>::ld(xp[off]), s);
        }
        if (bias) s += kn_num<T>::ld(bias[m]);
        y[i] = kn_num<T>::st(s);
    }
}

// Depthwise input adjoint (Cg == 1): dx[n][g][ip] = bias[g] + sum_{m in group, kk} w[m][kk] * dy[n][m][tap^-1].
template <class T>
__global__ void conv_dw_dx_kernel(T *dx, const T *dy, const T *w, const T *bias, conv_geo g, int64_t total) {
    KN_GRID_STRIDE(i, total) {
        int64_t ip = i % g.img_n, ng = i / g.img_n, gi = ng % g.G, n = ng / g.G;
        float s = 0.0f;
        for (int64_t m = 0; m < g.Mg; m++) {
            const T *dyp = dy + (n * g.G + gi) * g.Mg * g.out_n + m * g.out_n;
            const T *wp = w + (gi * g.Mg + m) * g.k_n;
            for (int64_t kk = 0; kk < g.k_n; kk++) {
                int64_t off = conv_out_off(g, ip, kk);
                if (off >= 0) s = fmaf(kn_num<T>::ld(wp[kk]), kn_num<T>::ld(dyp[off]), s);
            }
        }
        if (bias) s += kn_num<T>::ld(bias[gi]);
        dx[i] = kn_num<T>::st(s);
    }
}

// Depthwise weight adjoint (Cg == 1): one block per weight w[m][kk], its sum over (image, output
// position) split over the threads in a fixed pattern and reduced by a fixed tree.
template <class T> __global__ void conv_dw_dw_kernel(T *dw, const T *dy, const T *x, conv_geo g) {
    KN_SHARED(float, sh, 32);
    int64_t wi = blockIdx.x, m = wi / g.k_n, kk = wi % g.k_n, gi = m / g.Mg;
    int64_t K = g.N * g.out_n;
    float s = 0.0f;
    for (int64_t e = threadIdx.x; e < K; e += blockDim.x) {
        int64_t n = e / g.out_n, o = e % g.out_n;
        int64_t off = conv_img_off(g, o, kk);
        if (off >= 0)
            s = fmaf(kn_num<T>::ld(dy[(n * g.G * g.Mg + m) * g.out_n + o]),
                     kn_num<T>::ld(x[(n * g.G + gi) * g.img_n + off]), s);
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sh[warp] = s;
    __syncthreads();
    if (warp == 0) {
        int nw = (blockDim.x + 31) >> 5;
        s = lane < nw ? sh[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) dw[wi] = kn_num<T>::st(s);
    }
}

// ---- host side ----

static kn_status *conv_geo_make(const kn_node *node, const char *op, const kn_conv_geom *cg, int64_t N, int64_t G,
                                int64_t Cg, int64_t Mg, conv_geo *g) {
    memset(g, 0, sizeof *g);
    if (cg->nsp < 1 || cg->nsp > CONV_MAX_SP)
        return kn_error(KN_ERR_UNSUPPORTED, "%s: %d spatial dims on cuda (1 to %d)", op, cg->nsp, CONV_MAX_SP);
    g->nsp = cg->nsp;
    g->img_n = g->out_n = g->k_n = 1;
    for (int i = 0; i < cg->nsp; i++) {
        if (cg->in[i] > INT32_MAX || cg->out[i] > INT32_MAX || cg->k[i] > INT32_MAX || cg->stride[i] > INT32_MAX ||
            cg->dil[i] > INT32_MAX || cg->pad_b[i] > INT32_MAX / 2 || cg->stride[i] < 1)
            return kn_error(KN_ERR_UNSUPPORTED, "%s: window dims beyond 32 bits on cuda", op);
        g->img[i] = (int)cg->in[i];
        g->out[i] = (int)cg->out[i];
        g->k[i] = (int)cg->k[i];
        g->s[i] = (int)cg->stride[i];
        g->d[i] = (int)cg->dil[i];
        g->pb[i] = (int)cg->pad_b[i];
        g->img_n *= cg->in[i];
        g->out_n *= cg->out[i];
        g->k_n *= cg->k[i];
    }
    g->N = N;
    g->G = G;
    g->Cg = Cg;
    g->Mg = Mg;
    (void)node;
    return NULL;
}

// float16 / bfloat16: tensor cores, fp32 accumulation; float32: the exact FMA path
template <int MODE, class T>
static void conv_gemm_go(dim3 grid, cudaStream_t s, T *c, const T *a, const T *b, const T *bias, const conv_geo &g,
                         int64_t R, int64_t Q, int64_t K, int64_t row_tiles, int64_t g0) {
    KN_LAUNCH((conv_mma_kernel<MODE, T>), grid, CONV_THREADS, 0, s, c, a, b, bias, g, R, Q, K, row_tiles, g0);
}
template <int MODE>
static void conv_gemm_go(dim3 grid, cudaStream_t s, float *c, const float *a, const float *b, const float *bias,
                         const conv_geo &g, int64_t R, int64_t Q, int64_t K, int64_t row_tiles, int64_t g0) {
    KN_LAUNCH((conv_gemm_kernel<MODE, float>), grid, CONV_THREADS, 0, s, c, a, b, bias, g, R, Q, K, row_tiles, g0);
}

template <int MODE, class T>
static kn_status *conv_gemm_launch(const kn_node *node, void *c, const void *a, const void *b, const void *bias,
                                   const conv_geo &g, cudaStream_t s) {
    int64_t R, Q, K;
    if (MODE == CONV_FWD) R = g.Mg, Q = g.N * g.out_n, K = g.Cg * g.k_n;
    else if (MODE == CONV_DX) R = g.Cg, Q = g.N * g.img_n, K = g.Mg * g.k_n;
    else R = g.Mg, Q = g.Cg * g.k_n, K = g.N * g.out_n;
    if (R <= 0 || Q <= 0 || g.G <= 0) return NULL;
    int64_t row_tiles = (R + CONV_BM - 1) / CONV_BM, col_tiles = (Q + CONV_BN - 1) / CONV_BN;
    if (row_tiles > 65535 || col_tiles > 0x7fffffffLL)
        return kn_error(KN_ERR_UNSUPPORTED, "%s: %lld x %lld output tiles per group exceed the grid on cuda",
                        node->op_type, (long long)row_tiles, (long long)col_tiles);
    // grid.y holds (group, row tile) pairs: launched in runs of groups that fit its 65535
    int64_t per = 65535 / row_tiles;
    for (int64_t g0 = 0; g0 < g.G; g0 += per) {
        int64_t ng = g.G - g0 < per ? g.G - g0 : per;
        dim3 grid((unsigned)col_tiles, (unsigned)(row_tiles * ng));
        conv_gemm_go<MODE>(grid, s, (T *)c, (const T *)a, (const T *)b, (const T *)bias, g, R, Q, K, row_tiles, g0);
    }
    KN_CUDA_LAUNCHED(node, "convolution GEMM kernel");
    return NULL;
}

template <class T>
static kn_status *conv_run(const kn_node *node, int mode, void *c, const void *a, const void *b, const void *bias,
                           const conv_geo &g, int64_t total, cudaStream_t s) {
    bool depthwise = g.Cg == 1;
    if (mode == CONV_FWD) {
        if (!depthwise) return conv_gemm_launch<CONV_FWD, T>(node, c, a, b, bias, g, s);
        KN_LAUNCH(conv_dw_fwd_kernel<T>, kn_cuda_blocks(total, 256), 256, 0, s, (T *)c, (const T *)b, (const T *)a,
                  (const T *)bias, g, total);
    } else if (mode == CONV_DX) {
        if (!depthwise) return conv_gemm_launch<CONV_DX, T>(node, c, a, b, bias, g, s);
        KN_LAUNCH(conv_dw_dx_kernel<T>, kn_cuda_blocks(total, 256), 256, 0, s, (T *)c, (const T *)b, (const T *)a,
                  (const T *)bias, g, total);
    } else {
        if (!depthwise) return conv_gemm_launch<CONV_DW, T>(node, c, a, b, bias, g, s);
        if (total > 0x7fffffffLL) return kn_error(KN_ERR_UNSUPPORTED, "%s: too many weights", node->op_type);
        KN_LAUNCH(conv_dw_dw_kernel<T>, (unsigned)total, 256, 0, s, (T *)c, (const T *)a, (const T *)b, g);
    }
    KN_CUDA_LAUNCHED(node, "depthwise convolution kernel");
    return NULL;
}

// a, b as the mode's GEMM takes them: FWD (W, X), DX (W, dy), DW (dy, X).
static kn_status *conv_dispatch(const kn_node *node, kn_dtype dt, int mode, void *c, const void *a, const void *b,
                                const void *bias, const conv_geo &g, int64_t total, cudaStream_t s) {
    if (total <= 0) return NULL;
    switch (dt) {
    case KN_F32: return conv_run<float>(node, mode, c, a, b, bias, g, total, s);
    case KN_F16: return conv_run<__half>(node, mode, c, a, b, bias, g, total, s);
    case KN_BF16: return conv_run<__nv_bfloat16>(node, mode, c, a, b, bias, g, total, s);
    default: return kn_error(KN_ERR_UNSUPPORTED, "%s: %s on cuda", node->op_type, kn_dtype_name(dt));
    }
}

static kn_status *conv_dtypes(const kn_node *node, const kn_tensor *const *in, int n) {
    if (!kn_cuda_float(in[0]->dtype)) return kn_err_dtype(node, in[0]);
    for (int k = 1; k < n; k++)
        if (in[k] && in[k]->dtype != in[0]->dtype) return kn_err_dtype(node, in[k]);
    return NULL;
}

KN_CUDA_KERNEL(Conv) {
    const kn_tensor *x = in[0], *w = in[1], *b = n_in > 2 ? in[2] : NULL;
    kn_tensor *y = out[0];
    char bx[KN_DESC_LEN], bw[KN_DESC_LEN];
    KN_TRY(conv_dtypes(node, in, n_in > 3 ? 3 : n_in));
    if (x->ndim < 3 || x->ndim != w->ndim || x->ndim > KN_MAX_DIMS)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "Conv: X %s and W %s must have equal rank >= 3",
                        kn_tensor_desc(x, bx, sizeof bx), kn_tensor_desc(w, bw, sizeof bw));
    const kn_params_conv *cp = KN_PARAMS(node, conv);
    int64_t G = cp->group;
    if (G < 1 || x->dims[1] != w->dims[1] * G || w->dims[0] % G)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "Conv: X %s and W %s do not fit group %lld",
                        kn_tensor_desc(x, bx, sizeof bx), kn_tensor_desc(w, bw, sizeof bw), (long long)G);
    int nsp = x->ndim - 2;
    if (cp->win.n_kernel_shape >= 0) {
        bool ok = cp->win.n_kernel_shape == nsp;
        for (int i = 0; ok && i < nsp; i++) ok = cp->win.kernel_shape[i] == w->dims[2 + i];
        if (!ok)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "Conv: kernel_shape differs from W %s",
                            kn_tensor_desc(w, bw, sizeof bw));
    }
    kn_conv_geom cg;
    KN_TRY(kn_conv_geometry(node, "Conv", nsp, x->dims + 2, w->dims + 2, false, &cg));
    int64_t M = w->dims[0];
    bool ok = y->ndim == x->ndim && y->dims[0] == x->dims[0] && y->dims[1] == M;
    for (int i = 0; ok && i < nsp; i++) ok = y->dims[2 + i] == cg.out[i];
    if (!ok)
        return kn_error(KN_ERR_RUNTIME, "Conv: output %s does not fit X %s", kn_tensor_desc(y, bw, sizeof bw),
                        kn_tensor_desc(x, bx, sizeof bx));
    if (b && kn_numel(b) != M)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "Conv: bias %s must have %lld values",
                        kn_tensor_desc(b, bw, sizeof bw), (long long)M);
    conv_geo g;
    KN_TRY(conv_geo_make(node, "Conv", &cg, x->dims[0], G, w->dims[1], M / G, &g));
    return conv_dispatch(node, x->dtype, CONV_FWD, y->data, w->data, x->data, b ? b->data : NULL, g, kn_numel(y),
                         kn_cuda_s(ctx));
}

// ConvTranspose(X [N, C, in], W [C, Mg, k]) is the input adjoint of the Conv whose image is this
// output and whose output is X: the same GEMM as ConvGradX, with the bias added.
KN_CUDA_KERNEL(ConvTranspose) {
    const kn_tensor *x = in[0], *w = in[1], *b = n_in > 2 ? in[2] : NULL;
    kn_tensor *y = out[0];
    char bx[KN_DESC_LEN], bw[KN_DESC_LEN];
    KN_TRY(conv_dtypes(node, in, n_in > 3 ? 3 : n_in));
    if (x->ndim < 3 || x->ndim != w->ndim || x->ndim > KN_MAX_DIMS)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ConvTranspose: X %s and W %s must have equal rank >= 3",
                        kn_tensor_desc(x, bx, sizeof bx), kn_tensor_desc(w, bw, sizeof bw));
    int nsp = x->ndim - 2;
    int64_t G = KN_PARAMS(node, conv)->group;
    if (G < 1 || x->dims[1] != w->dims[0] || w->dims[0] % G)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ConvTranspose: X %s and W %s do not fit group %lld",
                        kn_tensor_desc(x, bx, sizeof bx), kn_tensor_desc(w, bw, sizeof bw), (long long)G);
    kn_conv_geom cg;
    int64_t outpad[KN_MAX_DIMS];
    KN_TRY(kn_convt_geometry(node, nsp, x->dims + 2, w->dims + 2, &cg, outpad));
    int64_t N = x->dims[0], C = x->dims[1], Mg = w->dims[1], M = Mg * G;
    bool ok = y->ndim == x->ndim && y->dims[0] == N && y->dims[1] == M;
    for (int i = 0; ok && i < nsp; i++) ok = y->dims[2 + i] == cg.out[i];
    if (!ok)
        return kn_error(KN_ERR_RUNTIME, "ConvTranspose: output %s does not fit X %s", kn_tensor_desc(y, bw, sizeof bw),
                        kn_tensor_desc(x, bx, sizeof bx));
    if (b && kn_numel(b) != M)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ConvTranspose: bias %s must have %lld values",
                        kn_tensor_desc(b, bw, sizeof bw), (long long)M);
    // the Conv it is the adjoint of: image = this output, output = X, Cg = Mg, Mg = C / G
    kn_conv_geom fw = cg;
    for (int i = 0; i < nsp; i++) {
        fw.in[i] = cg.out[i];
        fw.out[i] = cg.in[i];
    }
    conv_geo g;
    KN_TRY(conv_geo_make(node, "ConvTranspose", &fw, N, G, Mg, C / G, &g));
    return conv_dispatch(node, x->dtype, CONV_DX, y->data, w->data, x->data, b ? b->data : NULL, g, kn_numel(y),
                         kn_cuda_s(ctx));
}

// ConvGradX / ConvGradW: the Conv's geometry from X's and W's dims (one an input, one the output).
static kn_status *conv_grad_geo(const kn_node *node, const char *op, const kn_tensor *dy, const int64_t *xd,
                                const int64_t *wd, int nd, conv_geo *g) {
    char bd[KN_DESC_LEN];
    if (nd < 3 || nd > KN_MAX_DIMS || dy->ndim != nd)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: dy %s must have the rank of X and W (>= 3)", op,
                        kn_tensor_desc(dy, bd, sizeof bd));
    int64_t G = KN_PARAMS(node, conv)->group;
    if (G < 1 || xd[1] != wd[1] * G || wd[0] % G)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: X channels %lld and W [%lld, %lld, ...] do not fit group %lld",
                        op, (long long)xd[1], (long long)wd[0], (long long)wd[1], (long long)G);
    kn_conv_geom cg;
    KN_TRY(kn_conv_geometry(node, op, nd - 2, xd + 2, wd + 2, false, &cg));
    bool ok = dy->dims[0] == xd[0] && dy->dims[1] == wd[0];
    for (int i = 0; ok && i < nd - 2; i++) ok = dy->dims[2 + i] == cg.out[i];
    if (!ok)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: dy %s does not fit the convolution", op,
                        kn_tensor_desc(dy, bd, sizeof bd));
    return conv_geo_make(node, op, &cg, xd[0], G, wd[1], wd[0] / G, g);
}

KN_CUDA_KERNEL(KnConvGradX) {
    const kn_tensor *dy = in[0], *w = in[1];
    kn_tensor *dx = out[0];
    KN_TRY(conv_dtypes(node, in, 2));
    if (w->ndim != dx->ndim)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ConvGradX: W has rank %d, X %d", w->ndim, dx->ndim);
    conv_geo g;
    KN_TRY(conv_grad_geo(node, "ConvGradX", dy, dx->dims, w->dims, dx->ndim, &g));
    return conv_dispatch(node, dy->dtype, CONV_DX, dx->data, w->data, dy->data, NULL, g, kn_numel(dx), kn_cuda_s(ctx));
}

KN_CUDA_KERNEL(KnConvGradW) {
    const kn_tensor *dy = in[0], *x = in[1];
    kn_tensor *dw = out[0];
    KN_TRY(conv_dtypes(node, in, 2));
    if (x->ndim != dw->ndim)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ConvGradW: X has rank %d, W %d", x->ndim, dw->ndim);
    conv_geo g;
    KN_TRY(conv_grad_geo(node, "ConvGradW", dy, x->dims, dw->dims, x->ndim, &g));
    return conv_dispatch(node, dy->dtype, CONV_DW, dw->data, dy->data, x->data, NULL, g, kn_numel(dw), kn_cuda_s(ctx));
}

// Float inputs of one type (the shape input of the grads excepted), 1 to 3 spatial dims.
bool kn_cuda_conv_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 2 || !in[0] || !in[1] || !kn_cuda_float(in[0]->dtype)) return false;
    bool grad = n->op == KN_OP_KnConvGradX || n->op == KN_OP_KnConvGradW;
    int nf = grad ? 2 : (n_in > 3 ? 3 : n_in);
    for (int k = 1; k < nf; k++)
        if (in[k] && in[k]->dtype != in[0]->dtype) return false;
    int r = in[0]->ndim;
    return r >= 3 && r <= 2 + CONV_MAX_SP;
}
