// Fused scaled dot-product attention on the device (kiln:KnSdpa), FlashAttention-2 style: one
// block per (query tile, head, batch) walks the key/value sequence in tiles held in shared memory,
// keeps the softmax online (running row max and sum in float registers) and never writes the
// S x T score matrix anywhere. float16/bfloat16: Q.K^T and P.V on the tensor cores (mma.m16n8k16
// through ldmatrix fragments, kernels/cuda/kn_device.h), float accumulation. float32: the same
// walk with float FMA tiles, so a float32 session stays exact (no TF32).
//
// Masks, as KnSdpa's CPU kernel (kernels/cpu/attention.c) applies them: an additive bias of any
// float dtype broadcast numpy-style to [B,Hq,S,T]; is_causal (key t hidden from query i when
// t > i); fully masked rows give zeros and a logsumexp of -inf. Key padding costs nothing: a
// pre-pass finds, per bias row, the first and last key whose bias is above ATT_MASKED (-1e30; the
// -inf and float32-min padding masks of exporters are below it), and a block visits only the key
// tiles between its rows' bounds. Skipping is exact: a skipped key's weight exp(s + bias - max) is
// 0 in float32 once the row has one key above the threshold; a row with none is walked in full.
// GQA: kv head h / (Hq / Hkv) serves query head h.
//
// A decoder's past (KnSdpa inputs 4 and 5, made by kn_pass_split_past_kv): key/value rows t < P are
// read from the past tensors where the generator's cache keeps them and rows t >= P from the new
// keys/values, the tile loaders picking the source per row, so a decode step never copies the
// past into a present. Under is_causal the queries then sit after the P past positions.
#include "kernels/cuda/cuda_common.h"
#include "kernels/cpu/op_checks.h"
#include <limits.h>
#include <string.h>

#define ATT_THREADS 128
#define ATT_MASKED (-1e30f)

// Everything a launch needs, passed by value. Q, K, V and Y rows are found through element strides
// over (batch, head, position), their last dim contiguous: KnSdpa's [B,H,S,D] and the contrib ops'
// [B,S,H*D] (or a fused [B,S,3*hidden] projection) alike. Bias strides are 0 on broadcast dims.
struct att_args {
    const void *q, *k, *v, *bias;
    int64_t qst[3], kst[3], vst[3], yst[3];
    // KnSdpa's past key/value [B,Hkv,P,D] (key rows 0..P-1; k and v then hold rows P..T-1), or NULL
    const void *pk, *pv;
    int64_t pkst[3], pvst[3];
    int P;
    const void *qb, *kb, *vb; // com.microsoft: per-column input biases [heads * D] added on load, or NULL
    float *lse;               // [B,Hq,S] or NULL
    const int *ranges;        // [rows][2] key bounds per range row, or NULL (no skipping)
    int bias_dt;              // 0 float32, 1 float16, 2 bfloat16
    int64_t bs[4];            // bias strides over b, h, i, t
    int rng_b, rng_h, rng_s;  // range rows: extents over (b, h, i), 1 where the masks do not vary
    // com.microsoft key mask: 0 none, 1 [B] key ends, 2 [2B] ends then starts, 3 [B,T] 0/1;
    // dtype 0 int32, 1 int64, 2 bool. A masked key, and with causal_filter a future one, gets
    // `filter` added (mask_filter_value) instead of being hidden.
    const void *kmask;
    int kmask_kind, kmask_dt;
    float filter;
    bool causal_filter;
    float skip_below; // keys whose additive terms are at or below this may be skipped
    // GroupQueryAttention: seqlens_k [B] (int32, on the device): entry b has seqlens[b] + 1 valid
    // keys, its queries sit after a past of that minus S (0 on the first prompt)
    const int *seqlens;
    bool first;
    int B, Hq, Hkv, S, T, Dk, Dv;
    float scale;
    bool causal; // future keys hidden (-inf): t > i (+ the past length under seqlens)
};

// Entry b's key count and causal offset (the position of its query 0).
__device__ static inline void att_entry(const att_args &a, int b, int *tot, int *off) {
    *tot = a.T;
    *off = a.P;
    if (a.seqlens) {
        int sl = a.seqlens[b] + 1;
        *tot = sl < 0 ? 0 : sl < a.T ? sl : a.T;
        *off = a.first ? 0 : sl - a.S;
    }
}

__device__ static inline float att_bias(const att_args &a, int b, int h, int i, int t) {
    int64_t off = b * a.bs[0] + h * a.bs[1] + i * a.bs[2] + t * a.bs[3];
    if (a.bias_dt == 0) return ((const float *)a.bias)[off];
    if (a.bias_dt == 1) return __half2float(((const __half *)a.bias)[off]);
    return __bfloat162float(((const __nv_bfloat16 *)a.bias)[off]);
}

__device__ static inline int64_t att_mask_int(const att_args &a, int64_t i) {
    if (a.kmask_dt == 0) return ((const int32_t *)a.kmask)[i];
    if (a.kmask_dt == 1) return ((const int64_t *)a.kmask)[i];
    return ((const uint8_t *)a.kmask)[i];
}

// The contrib ops' filter terms of key t for query row i of batch b: mask_filter_value once for a
// masked key and once more for a future one (unless !causal: the key spans leave the frontier to
// att_row_range), summed first as the CPU's mask buffer does.
__device__ static inline float att_filter(const att_args &a, int b, int i, int t, bool causal) {
    float f = 0.0f;
    if (a.kmask_kind) {
        bool keep;
        if (a.kmask_kind == 3) keep = att_mask_int(a, (int64_t)b * a.T + t) > 0;
        else keep = t < att_mask_int(a, b) && (a.kmask_kind == 1 || t >= att_mask_int(a, a.B + b));
        if (!keep) f = a.filter;
    }
    if (causal && a.causal_filter && t > i) f += a.filter;
    return f;
}

// What the masks add to key t of query row i of (b, h), causal frontiers aside (the key spans'
// view): the key mask's filter, then the bias.
__device__ static inline float att_add(const att_args &a, int b, int h, int i, int t) {
    float x = a.kmask_kind ? att_filter(a, b, i, t, false) : 0.0f;
    return a.bias ? x + att_bias(a, b, h, i, t) : x;
}

// Keys [lo, hi) query row i of (b, h) must visit: its range row's unmasked span, clipped by the
// causal frontier; the whole visible row when that leaves nothing (then no key is skipped).
__device__ static inline void att_row_range(const att_args &a, int b, int h, int i, int *lo, int *hi) {
    int l = 0, e = a.T;
    if (a.ranges) {
        int r = ((a.rng_b > 1 ? b : 0) * a.rng_h + (a.rng_h > 1 ? h : 0)) * a.rng_s + (a.rng_s > 1 ? i : 0);
        l = a.ranges[2 * r];
        e = a.ranges[2 * r + 1];
    }
    int tot, off;
    att_entry(a, b, &tot, &off);
    if (e > tot) e = tot;
    if (a.causal || (a.causal_filter && a.filter <= a.skip_below)) {
        int vis = i + off + 1 < tot ? i + off + 1 : tot;
        if (vis < 0) vis = 0;
        if (e > vis) e = vis;
        if (l >= e) { // no unmasked visible key: the row as the CPU walks it
            l = 0;
            e = a.causal ? vis : tot;
        }
    }
    *lo = l;
    *hi = e;
}

// The block's key span: union of its rows' spans (rows q0 .. q0+nrows-1), through shared memory.
__device__ static void att_block_range(const att_args &a, int b, int h, int q0, int nrows, KN_SHARED_PTR(int) red,
                                       int *lo, int *hi) {
    int l = INT_MAX, e = 0;
    int tid = threadIdx.x;
    for (int r = tid; r < nrows; r += blockDim.x) {
        int i = q0 + r, rl, re;
        if (i >= a.S) break;
        att_row_range(a, b, h, i, &rl, &re);
        if (rl < l) l = rl;
        if (re > e) e = re;
    }
    for (int o = 16; o > 0; o >>= 1) {
        l = min(l, __shfl_xor_sync(0xffffffffu, l, o));
        e = max(e, __shfl_xor_sync(0xffffffffu, e, o));
    }
    int lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
    if (lane == 0) {
        red[2 * warp] = l;
        red[2 * warp + 1] = e;
    }
    __syncthreads();
    l = INT_MAX;
    e = 0;
    for (int w = 0; w < nw; w++) {
        l = min(l, (int)red[2 * w]);
        e = max(e, (int)red[2 * w + 1]);
    }
    *lo = l;
    *hi = e;
}

// Score of query row i against key t after scale and masks (-inf when hidden).
__device__ static inline float att_score(const att_args &a, float s, int b, int h, int i, int t) {
    int tot, off;
    att_entry(a, b, &tot, &off);
    if (t >= tot || i >= a.S || (a.causal && t > i + off)) return -INFINITY;
    float x = s * a.scale;
    if (a.kmask_kind || a.causal_filter) x += att_filter(a, b, i, t, true);
    if (a.bias) x += att_bias(a, b, h, i, t);
    return x;
}

// Key or value row t of one (batch, kv head): from the past below P, else from the new rows.
template <class T>
__device__ static inline const T *att_row(const T *past, int64_t pst, const T *cur, int64_t cst, int P, int t) {
    return t < P ? past + (int64_t)t * pst : cur + (int64_t)(t - P) * cst;
}

// One element of a Q/K/V row, plus its column's input bias when there is one (rounded back to T).
template <class T> __device__ static inline T att_ld(const T *p, const T *bias, int c) {
    if (!bias) return *p;
    return kn_num<T>::st(kn_num<T>::ld(*p) + kn_num<T>::ld(bias[c]));
}

// ---- float16 / bfloat16: tensor cores ----

__device__ static inline uint16_t att_bits(__half v) { return __half_as_ushort(v); }
__device__ static inline uint16_t att_bits(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }
template <class T> __device__ static inline uint32_t att_pack(float lo, float hi) {
    return (uint32_t)att_bits(kn_num<T>::st(lo)) | ((uint32_t)att_bits(kn_num<T>::st(hi)) << 16);
}
template <class T> __device__ static inline void att_mma(float d[4], const uint32_t a[4], const uint32_t b[2]);
template <> __device__ inline void att_mma<__half>(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    kn_mma_m16n8k16_f16(d, a, b, d);
}
template <> __device__ inline void att_mma<__nv_bfloat16>(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    kn_mma_m16n8k16_bf16(d, a, b, d);
}

// 4 warps, 64 query rows (16 per warp, as one m16 fragment), BK keys per tile. HD: the head size
// rounded up to a multiple of 16 (zero-padded in shared memory). Shared rows are HD + 8 elements
// long, so the 8 row addresses of an ldmatrix fall in different banks. Q's tile is read into
// registers once and its shared rows are then reused for K (rows 0..BK-1) and V (BK..2BK-1).
template <class T, int HD, int BK> __global__ void __launch_bounds__(ATT_THREADS) att_mma_kernel(att_args a, void *y) {
    constexpr int BQ = 64, LD = HD + 8, NT = BK / 8, ND = HD / 8, KQ = HD / 16;
    constexpr int ROWS = BQ > 2 * BK ? BQ : 2 * BK;
    KN_SHARED(T, sm, ROWS * LD);
    KN_SHARED(int, red, 2 * (ATT_THREADS / 32));
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t4 = lane & 3;
    int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * BQ, kvh = h / (a.Hq / a.Hkv);
    const T *Q = (const T *)a.q + b * a.qst[0] + h * a.qst[1];
    const T *K = (const T *)a.k + b * a.kst[0] + kvh * a.kst[1];
    const T *V = (const T *)a.v + b * a.vst[0] + kvh * a.vst[1];
    const T *PK = a.pk ? (const T *)a.pk + b * a.pkst[0] + kvh * a.pkst[1] : NULL;
    const T *PV = a.pv ? (const T *)a.pv + b * a.pvst[0] + kvh * a.pvst[1] : NULL;
    const T *qb = a.qb ? (const T *)a.qb + h * a.Dk : NULL, *kb = a.kb ? (const T *)a.kb + kvh * a.Dk : NULL;
    const T *vb = a.vb ? (const T *)a.vb + kvh * a.Dv : NULL;
    T zero = kn_num<T>::st(0.0f);
    int lo, hi;
    att_block_range(a, b, h, q0, BQ, red, &lo, &hi);

    for (int e = tid; e < BQ * HD; e += ATT_THREADS) {
        int r = e / HD, c = e % HD, i = q0 + r;
        sm[r * LD + c] = i < a.S && c < a.Dk ? att_ld(Q + i * a.qst[2] + c, qb, c) : zero;
    }
    __syncthreads();
    uint32_t qf[KQ][4];
    for (int kk = 0; kk < KQ; kk++)
        kn_ldmatrix_x4(qf[kk], sm + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
    __syncthreads(); // Q's rows are overwritten by K and V below

    float o[ND][4];
    for (int n = 0; n < ND; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};
    int irow[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};

    for (int k0 = lo / BK * BK; k0 < hi; k0 += BK) {
        for (int e = tid; e < BK * HD; e += ATT_THREADS) {
            int r = e / HD, c = e % HD, t = k0 + r;
            sm[r * LD + c] =
                t < a.T && c < a.Dk ? att_ld(att_row(PK, a.pkst[2], K, a.kst[2], a.P, t) + c, kb, c) : zero;
            sm[(BK + r) * LD + c] =
                t < a.T && c < a.Dv ? att_ld(att_row(PV, a.pvst[2], V, a.vst[2], a.P, t) + c, vb, c) : zero;
        }
        __syncthreads();
        // S = Q.K^T for the warp's 16 rows and the tile's BK keys
        float s[NT][4];
        for (int n = 0; n < NT; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
        for (int kk = 0; kk < KQ; kk++) {
            if (kk * 16 >= a.Dk) break; // zero padding: nothing to add
            for (int n = 0; n < NT; n += 2) {
                uint32_t kb[4];
                kn_ldmatrix_x4(kb, sm + (n * 8 + (lane & 7) + (lane >> 4) * 8) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
                uint32_t b0[2] = {kb[0], kb[1]}, b1[2] = {kb[2], kb[3]};
                att_mma<T>(s[n], qf[kk], b0);
                att_mma<T>(s[n + 1], qf[kk], b1);
            }
        }
        // online softmax: the rows g and g+8 of this lane, shared by the 4 lanes of a quad
        float mx[2] = {-INFINITY, -INFINITY};
        for (int n = 0; n < NT; n++)
            for (int e = 0; e < 4; e++) {
                int r = e >> 1;
                float x = att_score(a, s[n][e], b, h, irow[r], k0 + n * 8 + 2 * t4 + (e & 1));
                s[n][e] = x;
                mx[r] = fmaxf(mx[r], x);
            }
        float muse[2], alpha[2];
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            float mn = fmaxf(mrow[r], mx[r]);
            muse[r] = mn == -INFINITY ? 0.0f : mn; // a row masked so far: exp(-inf - 0) = 0, no NaN
            alpha[r] = expf(mrow[r] - muse[r]);
            mrow[r] = mn;
        }
        float ls[2] = {0.0f, 0.0f};
        for (int n = 0; n < NT; n++)
            for (int e = 0; e < 4; e++) {
                float p = expf(s[n][e] - muse[e >> 1]);
                s[n][e] = p;
                ls[e >> 1] += p;
            }
        for (int r = 0; r < 2; r++) lrow[r] = lrow[r] * alpha[r] + ls[r];
        for (int n = 0; n < ND; n++)
            for (int e = 0; e < 4; e++) o[n][e] *= alpha[e >> 1];
        // O += P.V: P's accumulator fragments are the A fragments of the next product
        for (int ks = 0; ks < BK / 16; ks++) {
            uint32_t pa[4] = {att_pack<T>(s[2 * ks][0], s[2 * ks][1]), att_pack<T>(s[2 * ks][2], s[2 * ks][3]),
                              att_pack<T>(s[2 * ks + 1][0], s[2 * ks + 1][1]),
                              att_pack<T>(s[2 * ks + 1][2], s[2 * ks + 1][3])};
            for (int n = 0; n < ND; n += 2) {
                if (n * 8 >= a.Dv) break;
                uint32_t vb[4];
                kn_ldmatrix_x4_trans(
                    vb, sm + (BK + ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + (n + (lane >> 4)) * 8);
                uint32_t b0[2] = {vb[0], vb[1]}, b1[2] = {vb[2], vb[3]};
                att_mma<T>(o[n], pa, b0);
                att_mma<T>(o[n + 1], pa, b1);
            }
        }
        __syncthreads(); // the next tile overwrites K and V
    }

    T *Y = (T *)y + b * a.yst[0] + h * a.yst[1];
    for (int r = 0; r < 2; r++) {
        float l = lrow[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        int i = irow[r];
        if (i >= a.S) continue;
        float inv = l == 0.0f ? 0.0f : 1.0f / l; // fully masked row: zeros
        for (int n = 0; n < ND; n++)
            for (int e = 0; e < 2; e++) {
                int c = n * 8 + 2 * t4 + e;
                if (c < a.Dv) Y[i * a.yst[2] + c] = kn_num<T>::st(o[n][2 * r + e] * inv);
            }
        if (a.lse && t4 == 0) a.lse[(int64_t)(b * a.Hq + h) * a.S + i] = l == 0.0f ? -INFINITY : mrow[r] + logf(l);
    }
}

// ---- float32: FMA tiles ----

// 128 threads over a 32 x 32 score tile: thread (ty, tx) = (tid / 8, tid % 8) owns rows 2ty, 2ty+1
// and keys tx + 8j (so the 8 threads of a row sit in one warp and reduce by shuffles), then the
// output columns tx + 8j. Shared: Q [32][HD+1], one K-then-V tile [32][HD+1], P [32][33]; the odd
// row lengths keep the column walks free of bank conflicts.
#define ATT_F32_BQ 32
#define ATT_F32_BK 32
template <int HD> static size_t att_f32_smem(void) {
    return sizeof(float) * (size_t)(2 * 32 * (HD + 1) + 32 * (ATT_F32_BK + 1));
}

template <int HD> __global__ void __launch_bounds__(ATT_THREADS) att_f32_kernel(att_args a, float *y) {
    constexpr int BQ = ATT_F32_BQ, BK = ATT_F32_BK, LD = HD + 1, LP = BK + 1, NJ = HD / 8;
    KN_SHARED_DYN(float, dyn);
    KN_SHARED(int, red, 2 * (ATT_THREADS / 32));
    KN_SHARED_PTR(float) qs = dyn;
    KN_SHARED_PTR(float) kv = dyn + BQ * LD;
    KN_SHARED_PTR(float) ps = dyn + (BQ + BK) * LD;
    int tid = threadIdx.x, ty = tid >> 3, tx = tid & 7;
    int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * BQ, kvh = h / (a.Hq / a.Hkv);
    const float *Q = (const float *)a.q + b * a.qst[0] + h * a.qst[1];
    const float *K = (const float *)a.k + b * a.kst[0] + kvh * a.kst[1];
    const float *V = (const float *)a.v + b * a.vst[0] + kvh * a.vst[1];
    const float *PK = a.pk ? (const float *)a.pk + b * a.pkst[0] + kvh * a.pkst[1] : NULL;
    const float *PV = a.pv ? (const float *)a.pv + b * a.pvst[0] + kvh * a.pvst[1] : NULL;
    const float *qb = a.qb ? (const float *)a.qb + h * a.Dk : NULL;
    const float *kb = a.kb ? (const float *)a.kb + kvh * a.Dk : NULL;
    const float *vb = a.vb ? (const float *)a.vb + kvh * a.Dv : NULL;
    int lo, hi;
    att_block_range(a, b, h, q0, BQ, red, &lo, &hi);
    for (int e = tid; e < BQ * HD; e += ATT_THREADS) {
        int r = e / HD, c = e % HD, i = q0 + r;
        qs[r * LD + c] = i < a.S && c < a.Dk ? att_ld(Q + i * a.qst[2] + c, qb, c) : 0.0f;
    }
    float o[2][NJ];
    for (int r = 0; r < 2; r++)
        for (int j = 0; j < NJ; j++) o[r][j] = 0.0f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};
    int irow[2] = {q0 + 2 * ty, q0 + 2 * ty + 1};

    for (int k0 = lo / BK * BK; k0 < hi; k0 += BK) {
        __syncthreads(); // Q written (first tile); the previous tile's V and P read
        for (int e = tid; e < BK * HD; e += ATT_THREADS) {
            int r = e / HD, c = e % HD, t = k0 + r;
            kv[r * LD + c] =
                t < a.T && c < a.Dk ? att_ld(att_row(PK, a.pkst[2], K, a.kst[2], a.P, t) + c, kb, c) : 0.0f;
        }
        __syncthreads();
        float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
        for (int d = 0; d < a.Dk; d++) {
            float qa = qs[(2 * ty) * LD + d], qb = qs[(2 * ty + 1) * LD + d];
            for (int j = 0; j < 4; j++) {
                float kd = kv[(tx + 8 * j) * LD + d];
                s[0][j] = fmaf(qa, kd, s[0][j]);
                s[1][j] = fmaf(qb, kd, s[1][j]);
            }
        }
        for (int r = 0; r < 2; r++) {
            float mx = -INFINITY;
            for (int j = 0; j < 4; j++) {
                s[r][j] = att_score(a, s[r][j], b, h, irow[r], k0 + tx + 8 * j);
                mx = fmaxf(mx, s[r][j]);
            }
            for (int m = 1; m < 8; m <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, m));
            float mn = fmaxf(mrow[r], mx), mu = mn == -INFINITY ? 0.0f : mn;
            float alpha = expf(mrow[r] - mu), ls = 0.0f;
            mrow[r] = mn;
            for (int j = 0; j < 4; j++) {
                float p = expf(s[r][j] - mu);
                ls += p;
                ps[(2 * ty + r) * LP + tx + 8 * j] = p;
            }
            lrow[r] = lrow[r] * alpha + ls;
            for (int j = 0; j < NJ; j++) o[r][j] *= alpha;
        }
        __syncthreads(); // K read by all; P written
        for (int e = tid; e < BK * HD; e += ATT_THREADS) {
            int r = e / HD, c = e % HD, t = k0 + r;
            kv[r * LD + c] =
                t < a.T && c < a.Dv ? att_ld(att_row(PV, a.pvst[2], V, a.vst[2], a.P, t) + c, vb, c) : 0.0f;
        }
        __syncthreads();
        int kend = a.T - k0 < BK ? a.T - k0 : BK;
        for (int k = 0; k < kend; k++) {
            float pa = ps[(2 * ty) * LP + k], pb = ps[(2 * ty + 1) * LP + k];
            for (int j = 0; j < NJ; j++) {
                if (tx + 8 * j >= a.Dv) break;
                float vd = kv[k * LD + tx + 8 * j];
                o[0][j] = fmaf(pa, vd, o[0][j]);
                o[1][j] = fmaf(pb, vd, o[1][j]);
            }
        }
    }

    float *Y = y + b * a.yst[0] + h * a.yst[1];
    for (int r = 0; r < 2; r++) {
        float l = lrow[r];
        for (int m = 1; m < 8; m <<= 1) l += __shfl_xor_sync(0xffffffffu, l, m);
        int i = irow[r];
        if (i >= a.S) continue;
        float inv = l == 0.0f ? 0.0f : 1.0f / l;
        for (int j = 0; j < NJ; j++) {
            int c = tx + 8 * j;
            if (c < a.Dv) Y[i * a.yst[2] + c] = o[r][j] * inv;
        }
        if (a.lse && tx == 0) a.lse[(int64_t)(b * a.Hq + h) * a.S + i] = l == 0.0f ? -INFINITY : mrow[r] + logf(l);
    }
}

// ---- the key-span pre-pass: one warp per bias row ----

__global__ void att_ranges_kernel(att_args a, int *ranges, int nrows) {
    int row = (int)(blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)), lane = threadIdx.x & 31;
    if (row >= nrows) return; // whole warps leave together
    int i = row % a.rng_s, h = row / a.rng_s % a.rng_h, b = row / a.rng_s / a.rng_h;
    int l = INT_MAX, e = -1;
    for (int t = lane; t < a.T; t += 32) {
        float v = att_add(a, b, h, i, t);
        if (!(v <= a.skip_below)) { // NaN counts as unmasked: it must reach the output
            if (t < l) l = t;
            e = t;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        l = min(l, __shfl_xor_sync(0xffffffffu, l, o));
        e = max(e, __shfl_xor_sync(0xffffffffu, e, o));
    }
    if (lane == 0) {
        ranges[2 * row] = e < 0 ? 0 : l; // no unmasked key: the whole row
        ranges[2 * row + 1] = e < 0 ? a.T : e + 1;
    }
}

// ---- host side ----

static int att_head_pad(int64_t d) {
    if (d <= 32) return 32;
    if (d <= 64) return 64;
    if (d <= 80) return 80;
    if (d <= 96) return 96;
    if (d <= 128) return 128;
    if (d <= 256) return 256;
    return 0;
}

template <class T, int HD, int BK> static void att_launch_mma(const att_args &a, void *y, dim3 grid, cudaStream_t s) {
    KN_LAUNCH((att_mma_kernel<T, HD, BK>), grid, ATT_THREADS, 0, s, a, y);
}
template <int HD> static cudaError_t att_launch_f32(const att_args &a, float *y, dim3 grid, cudaStream_t s) {
    size_t smem = att_f32_smem<HD>();
    if (smem > (48u << 10)) {
        cudaError_t e = cudaFuncSetAttribute(reinterpret_cast<const void *>(att_f32_kernel<HD>),
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
    }
    KN_LAUNCH(att_f32_kernel<HD>, grid, ATT_THREADS, smem, s, a, y);
    return cudaSuccess;
}

template <class T> static void att_dispatch_mma(const att_args &a, void *y, int hd, dim3 grid, cudaStream_t s) {
    switch (hd) {
    case 32: att_launch_mma<T, 32, 64>(a, y, grid, s); break;
    case 64: att_launch_mma<T, 64, 64>(a, y, grid, s); break;
    case 80: att_launch_mma<T, 80, 64>(a, y, grid, s); break;
    case 96: att_launch_mma<T, 96, 64>(a, y, grid, s); break;
    case 128: att_launch_mma<T, 128, 64>(a, y, grid, s); break;
    default: att_launch_mma<T, 256, 32>(a, y, grid, s); break;
    }
}

static cudaError_t att_dispatch_f32(const att_args &a, float *y, int hd, dim3 grid, cudaStream_t s) {
    switch (hd) {
    case 32: return att_launch_f32<32>(a, y, grid, s);
    case 64: return att_launch_f32<64>(a, y, grid, s);
    case 80: return att_launch_f32<80>(a, y, grid, s);
    case 96: return att_launch_f32<96>(a, y, grid, s);
    case 128: return att_launch_f32<128>(a, y, grid, s);
    default: return att_launch_f32<256>(a, y, grid, s);
    }
}

static bool att_bias_dtype(kn_dtype t, int *code) {
    *code = t == KN_F32 ? 0 : t == KN_F16 ? 1 : t == KN_BF16 ? 2 : -1;
    return *code >= 0;
}

// Fills a's bias from M, broadcast numpy-style to [B,Hq,S,T] (what KnSdpa allows; the contrib
// ops' attention_bias [B|1,N|1,S,T] is a case of it).
static kn_status *att_set_bias(const kn_node *node, const kn_tensor *M, att_args *a) {
    char b1[KN_DESC_LEN];
    if (!M || kn_numel(M) == 0) return NULL;
    if (M->ndim > 4 || !att_bias_dtype(M->dtype, &a->bias_dt))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: bias %s must be float and of rank <= 4", node->op_type,
                        kn_tensor_desc(M, b1, sizeof b1));
    int64_t full[4] = {a->B, a->Hq, a->S, a->T}, md[4] = {1, 1, 1, 1};
    for (int d = 0; d < M->ndim; d++) md[4 - M->ndim + d] = M->dims[d];
    int64_t st = 1;
    for (int d = 3; d >= 0; d--) {
        if (md[d] != 1 && md[d] != full[d])
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: bias %s does not broadcast to [%lld,%lld,%lld,%lld]",
                            node->op_type, kn_tensor_desc(M, b1, sizeof b1), (long long)a->B, (long long)a->Hq,
                            (long long)a->S, (long long)a->T);
        a->bs[d] = md[d] == 1 ? 0 : st;
        st *= md[d];
    }
    a->bias = M->data;
    return NULL;
}

// The shared launch: key spans per range row when the masks vary along the keys and the spans fit
// the stream's workspace (otherwise every key is visited: slower, same result), then the kernel.
static kn_status *att_run(kn_exec_ctx *ctx, const kn_node *node, att_args *a, kn_dtype dt, void *y) {
    int hd = att_head_pad(a->Dk > a->Dv ? a->Dk : a->Dv);
    if (!hd || a->B > 65535 || a->Hq > 65535)
        return kn_error(KN_ERR_UNSUPPORTED, "%s: head sizes %d/%d or %d batches x %d heads beyond the CUDA kernel",
                        node->op_type, a->Dk, a->Dv, a->B, a->Hq);
    if ((int64_t)a->B * a->Hq * a->S == 0) return NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    if ((a->bias && a->bs[3]) || a->kmask_kind) {
        a->rng_b = a->bs[0] || a->kmask_kind ? a->B : 1;
        a->rng_h = a->bias && a->bs[1] ? a->Hq : 1;
        a->rng_s = a->bias && a->bs[2] ? a->S : 1;
        int64_t nrows = (int64_t)a->rng_b * a->rng_h * a->rng_s;
        kn_cuda_stream *cs = kn_cuda_st(ctx);
        if ((size_t)nrows * 2 * sizeof(int) <= cs->ws_bytes && nrows < INT_MAX / 2) {
            int *ranges = (int *)cs->ws;
            int per = ATT_THREADS / 32;
            KN_LAUNCH(att_ranges_kernel, (unsigned)((nrows + per - 1) / per), ATT_THREADS, 0, s, *a, ranges,
                      (int)nrows);
            KN_CUDA_LAUNCHED(node, "attention key spans");
            a->ranges = ranges;
        }
    }
    if (dt == KN_F32) {
        dim3 grid((unsigned)((a->S + ATT_F32_BQ - 1) / ATT_F32_BQ), (unsigned)a->Hq, (unsigned)a->B);
        KN_CUDA_TRY(att_dispatch_f32(*a, (float *)y, hd, grid, s), node, "attention shared memory");
    } else {
        dim3 grid((unsigned)((a->S + 63) / 64), (unsigned)a->Hq, (unsigned)a->B);
        if (dt == KN_F16) att_dispatch_mma<__half>(*a, y, hd, grid, s);
        else if (dt == KN_BF16) att_dispatch_mma<__nv_bfloat16>(*a, y, hd, grid, s);
        else return kn_error(KN_ERR_UNSUPPORTED, "%s: dtype not float32/float16/bfloat16", node->op_type);
    }
    KN_CUDA_LAUNCHED(node, "attention kernel");
    return NULL;
}

static void att_strides(int64_t st[3], int64_t sb, int64_t sh, int64_t ss) {
    st[0] = sb;
    st[1] = sh;
    st[2] = ss;
}

KN_CUDA_KERNEL(KnSdpa) {
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN], b3[KN_DESC_LEN];
    const kn_params_attention *ap = KN_PARAMS(node, attention);
    const kn_tensor *Q = in[0], *K = in[1], *V = in[2], *M = n_in > 3 ? in[3] : NULL;
    const kn_tensor *PK = n_in > 5 ? in[4] : NULL, *PV = n_in > 5 ? in[5] : NULL;
    kn_tensor *Y = out[0], *L = n_out > 1 ? out[1] : NULL;
    if (L && !L->data) L = NULL;
    if (Q->ndim != 4 || K->ndim != 4 || V->ndim != 4)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "KnSdpa: Q %s, K %s, V %s must be 4-D",
                        kn_tensor_desc(Q, b1, sizeof b1), kn_tensor_desc(K, b2, sizeof b2),
                        kn_tensor_desc(V, b3, sizeof b3));
    int64_t B = Q->dims[0], Hq = Q->dims[1], S = Q->dims[2], Dk = Q->dims[3];
    int64_t Hkv = K->dims[1], T = K->dims[2], Dv = V->dims[3], P = 0;
    if ((PK == NULL) != (PV == NULL))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "KnSdpa: a past key needs a past value and back");
    if (PK) {
        if (PK->ndim != 4 || PV->ndim != 4 || PK->dtype != Q->dtype || PV->dtype != Q->dtype || PK->dims[0] != B ||
            PK->dims[1] != Hkv || PK->dims[3] != Dk || PV->dims[0] != B || PV->dims[1] != Hkv ||
            PV->dims[2] != PK->dims[2] || PV->dims[3] != Dv)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "KnSdpa: past key %s / past value %s do not match K %s",
                            kn_tensor_desc(PK, b1, sizeof b1), kn_tensor_desc(PV, b2, sizeof b2),
                            kn_tensor_desc(K, b3, sizeof b3));
        P = PK->dims[2];
    }
    if (K->dtype != Q->dtype || V->dtype != Q->dtype || K->dims[0] != B || V->dims[0] != B || K->dims[3] != Dk ||
        V->dims[1] != Hkv || V->dims[2] != T || Hkv <= 0 || Hq % Hkv)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "KnSdpa: Q %s, K %s, V %s disagree (one dtype, batch, head size; q heads a multiple of kv "
                        "heads)",
                        kn_tensor_desc(Q, b1, sizeof b1), kn_tensor_desc(K, b2, sizeof b2),
                        kn_tensor_desc(V, b3, sizeof b3));
    if (B > INT_MAX || Hq > INT_MAX || S > INT_MAX - 64 || T > INT_MAX / 2 - 64 || P > INT_MAX / 2 || Dk > INT_MAX ||
        Dv > INT_MAX)
        return kn_error(KN_ERR_UNSUPPORTED, "KnSdpa: Q %s, V %s too large for the CUDA kernel",
                        kn_tensor_desc(Q, b1, sizeof b1), kn_tensor_desc(V, b2, sizeof b2));
    att_args a;
    memset(&a, 0, sizeof a);
    a.q = Q->data;
    a.k = K->data;
    a.v = V->data;
    att_strides(a.qst, Hq * S * Dk, S * Dk, Dk);
    att_strides(a.kst, Hkv * T * Dk, T * Dk, Dk);
    att_strides(a.vst, Hkv * T * Dv, T * Dv, Dv);
    att_strides(a.yst, Hq * S * Dv, S * Dv, Dv);
    if (PK) {
        a.pk = PK->data;
        a.pv = PV->data;
        att_strides(a.pkst, Hkv * P * Dk, P * Dk, Dk);
        att_strides(a.pvst, Hkv * P * Dv, P * Dv, Dv);
        a.P = (int)P;
    }
    a.lse = L ? (float *)L->data : NULL;
    a.B = (int)B;
    a.Hq = (int)Hq;
    a.Hkv = (int)Hkv;
    a.S = (int)S;
    a.T = (int)(P + T);
    a.Dk = (int)Dk;
    a.Dv = (int)Dv;
    a.scale = ap->has_scale ? ap->scale : Dk > 0 ? 1.0f / sqrtf((float)Dk) : 1.0f;
    a.causal = ap->is_causal;
    a.skip_below = ATT_MASKED;
    KN_TRY(att_set_bias(node, M, &a));
    return att_run(ctx, node, &a, Q->dtype, Y->data);
}

// KnSdpa nodes as the fusion passes and autograd make them: 4-D float Q, K, V of one dtype, a float
// bias, a past key and value of Q's dtype (inputs 4, 5), head sizes up to 256, no softcap, window
// or scores output (ai.onnx Attention's extras).
bool kn_cuda_sdpa_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 3 || n_in > 6 || n_in == 5 || !in[0] || !in[1] || !in[2]) return false;
    if (n_in == 6 &&
        (!in[4] || !in[5] || in[4]->dtype != in[0]->dtype || in[5]->dtype != in[0]->dtype || in[4]->ndim != 4 ||
         in[5]->ndim != 4))
        return false;
    const kn_params_attention *ap = KN_PARAMS(n, attention);
    if (ap->softcap > 0.0f || ap->left_window_size >= 0 || ap->right_window_size >= 0 || ap->qk_matmul_output_mode)
        return false;
    kn_dtype t = in[0]->dtype;
    if (!kn_cuda_float(t) || in[1]->dtype != t || in[2]->dtype != t) return false;
    if (in[0]->ndim != 4 || in[1]->ndim != 4 || in[2]->ndim != 4) return false;
    int code;
    if (n_in >= 4 && in[3] && (!att_bias_dtype(in[3]->dtype, &code) || in[3]->ndim > 4)) return false;
    int64_t dk = in[0]->dims[3], dv = in[2]->dims[3];
    return (dk < 0 || dk <= 256) && (dv < 0 || dv <= 256);
}

// ---- com.microsoft Attention and MultiHeadAttention: the same kernel on [B,S,N*H] rows ----

// The key mask (mask_index [B] / [2B] or a 2-D [B,T] 0/1 mask), the filter value and causality
// of the contrib ops, as ms_build_mask in kernels/cpu/contrib.c applies them.
static kn_status *att_ms_mask(const kn_node *node, const kn_tensor *m, att_args *a) {
    char b1[KN_DESC_LEN];
    const kn_params_ms_attention *p = KN_PARAMS(node, ms_attention);
    a->filter = p->mask_filter_value;
    a->causal_filter = p->unidirectional;
    // a masked key's weight exp(s + filter - max) is exactly 0 in float32 once the row has an
    // unmasked key and |filter| exceeds the score spread by ~104: skip such keys for filters of
    // -10000 (the default) and below; -inf biases are always skippable
    a->skip_below = p->mask_filter_value <= -1e4f ? p->mask_filter_value * 0.5f : ATT_MASKED;
    if (!m) return NULL;
    a->kmask = m->data;
    a->kmask_dt = m->dtype == KN_I32 ? 0 : m->dtype == KN_I64 ? 1 : m->dtype == KN_BOOL ? 2 : -1;
    if (a->kmask_dt < 0) return kn_err_dtype(node, m);
    if (m->ndim == 1 && m->dims[0] == a->B) a->kmask_kind = 1;
    else if (m->ndim == 1 && m->dims[0] == 2 * a->B && a->B > 0) a->kmask_kind = 2;
    else if (m->ndim == 2 && m->dims[0] == a->B && m->dims[1] == a->T) a->kmask_kind = 3;
    else
        return kn_error(KN_ERR_UNSUPPORTED, "%s: mask %s not supported on cuda (expected [B], [2B] or [B,T])",
                        node->op_type, kn_tensor_desc(m, b1, sizeof b1));
    return NULL;
}

static bool att_ms_mask_ok(const kn_tensor *m) {
    return !m || ((m->dtype == KN_I32 || m->dtype == KN_I64 || m->dtype == KN_BOOL) && (m->ndim == 1 || m->ndim == 2));
}

static bool att_only_output0(const kn_node *n) {
    for (int k = 1; k < n->n_outputs; k++)
        if (n->outputs && n->outputs[k] >= 0) return false;
    return true;
}

KN_CUDA_KERNEL(MsMultiHeadAttention) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    const kn_tensor *qt = in[0], *kt = n_in > 1 ? in[1] : NULL, *vt = n_in > 2 ? in[2] : NULL;
    const kn_tensor *bias = n_in > 3 ? in[3] : NULL, *mask = n_in > 4 ? in[4] : NULL, *ab = n_in > 5 ? in[5] : NULL;
    int64_t N = KN_PARAMS(node, ms_attention)->num_heads;
    if (!kt || !vt || qt->ndim != 3 || N <= 0 || qt->dims[2] % N || kt->dtype != qt->dtype || vt->dtype != qt->dtype)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "MultiHeadAttention: query %s must be [B,S,D] with D divisible by num_heads %lld, and key and "
                        "value given in its dtype",
                        kn_tensor_desc(qt, b0, sizeof b0), (long long)N);
    int64_t B = qt->dims[0], S = qt->dims[1], D = qt->dims[2], H = D / N, L, Hv;
    bool bnsh = kt->ndim == 4;
    if (kt->ndim == 3 && vt->ndim == 3 && kt->dims[0] == B && vt->dims[0] == B && kt->dims[1] == vt->dims[1] &&
        kt->dims[2] == D && vt->dims[2] % N == 0) {
        L = kt->dims[1];
        Hv = vt->dims[2] / N;
    } else if (bnsh && vt->ndim == 4 && kt->dims[0] == B && vt->dims[0] == B && kt->dims[1] == N && vt->dims[1] == N &&
               kt->dims[2] == vt->dims[2] && kt->dims[3] == H && !bias) {
        L = kt->dims[2];
        Hv = vt->dims[3];
    } else {
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "MultiHeadAttention: key %s / value %s do not fit query %s (need [B,L,D]/[B,L,Dv], or "
                        "[B,N,L,H]/[B,N,L,Hv] without bias)",
                        kn_tensor_desc(kt, b1, sizeof b1), kn_tensor_desc(vt, b2, sizeof b2),
                        kn_tensor_desc(qt, b0, sizeof b0));
    }
    int64_t Dv = N * Hv;
    if (bias && (bias->ndim != 1 || bias->dims[0] != 2 * D + Dv || bias->dtype != qt->dtype))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "MultiHeadAttention: bias %s must be [%lld] of the query's dtype",
                        kn_tensor_desc(bias, b1, sizeof b1), (long long)(2 * D + Dv));
    att_args a;
    memset(&a, 0, sizeof a);
    a.B = (int)B;
    a.Hq = a.Hkv = (int)N;
    a.S = (int)S;
    a.T = (int)L;
    a.Dk = (int)H;
    a.Dv = (int)Hv;
    a.q = qt->data;
    a.k = kt->data;
    a.v = vt->data;
    att_strides(a.qst, S * D, H, D);
    if (bnsh) {
        att_strides(a.kst, N * L * H, L * H, H);
        att_strides(a.vst, N * L * Hv, L * Hv, Hv);
    } else {
        att_strides(a.kst, L * D, H, D);
        att_strides(a.vst, L * Dv, Hv, Dv);
    }
    att_strides(a.yst, S * Dv, Hv, Dv);
    if (bias) {
        size_t es = kn_dtype_size(qt->dtype);
        a.qb = bias->data;
        a.kb = (const char *)bias->data + es * (size_t)D;
        a.vb = (const char *)bias->data + es * (size_t)(2 * D);
    }
    float sc = KN_PARAMS(node, ms_attention)->scale;
    a.scale = sc != 0.0f ? sc : (float)(1.0 / sqrt((double)H));
    KN_TRY(att_ms_mask(node, mask, &a));
    KN_TRY(att_set_bias(node, ab, &a));
    return att_run(ctx, node, &a, qt->dtype, out[0]->data);
}

// Separate query/key/value [B,S,D] (or [B,N,L,H] key/value), no past, outputs beyond 0 not wired.
bool kn_cuda_ms_mha_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 3 || !in[0] || !in[1] || !in[2] || n_in > 6 || !att_only_output0(n)) return false;
    kn_dtype t = in[0]->dtype;
    if (!kn_cuda_float(t) || in[1]->dtype != t || in[2]->dtype != t || in[0]->ndim != 3) return false;
    if (n_in > 3 && in[3] && in[3]->dtype != t) return false;
    if (n_in > 4 && !att_ms_mask_ok(in[4])) return false;
    int code;
    if (n_in > 5 && in[5] && (!att_bias_dtype(in[5]->dtype, &code) || in[5]->ndim != 4)) return false;
    int64_t N = KN_PARAMS(n, ms_attention)->num_heads;
    return N > 0 && (in[0]->dims[2] < 0 || in[0]->dims[2] <= 256 * N);
}

KN_CUDA_KERNEL(MsAttention) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_tensor *x = in[0], *w = n_in > 1 ? in[1] : NULL, *bias = n_in > 2 ? in[2] : NULL;
    const kn_tensor *mask = n_in > 3 ? in[3] : NULL, *ab = n_in > 5 ? in[5] : NULL;
    const kn_params_ms_attention *p = KN_PARAMS(node, ms_attention);
    kn_msatt_dims d;
    KN_TRY(kn_check_ms_attention(node, x, w, bias, &d));
    if (w->dtype != x->dtype || (bias && bias->dtype != x->dtype))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "Attention: weights %s and bias must have the input's dtype %s",
                        kn_tensor_desc(w, b1, sizeof b1), kn_tensor_desc(x, b0, sizeof b0));
    int64_t B = d.B, S = d.S, Din = d.Din, Dtot = d.Dtot, N = d.N, H = d.H, Hv = d.Hv, hq = N * H, hv = N * Hv;
    if (B * S == 0) return NULL;
    // the projection [B*S, Dtot] = x . W through the MatMul kernel (cuBLASLt) into stream-ordered
    // memory; the input bias is added as the attention kernel loads its tiles
    cudaStream_t s = kn_cuda_s(ctx);
    size_t es = kn_dtype_size(x->dtype), pb = (size_t)(B * S * Dtot) * es;
    void *proj = NULL;
    KN_CUDA_TRY(cudaMallocAsync(&proj, pb, s), node, "Attention projection buffer");
    kn_tensor xa = *x, pr;
    memset(&pr, 0, sizeof pr);
    xa.ndim = 2;
    xa.dims[0] = B * S;
    xa.dims[1] = Din;
    pr.kind = KN_KIND_TENSOR;
    pr.dtype = x->dtype;
    pr.ndim = 2;
    pr.dims[0] = B * S;
    pr.dims[1] = Dtot;
    pr.data = proj;
    pr.device = KN_DEVICE_CUDA;
    const kn_tensor *mm_in[2] = {&xa, w};
    kn_tensor *mm_out[1] = {&pr};
    kn_status *st = kn_cuda_MatMul(ctx, node, mm_in, 2, mm_out, 1);
    if (!st) {
        att_args a;
        memset(&a, 0, sizeof a);
        a.B = (int)B;
        a.Hq = a.Hkv = (int)N;
        a.S = a.T = (int)S;
        a.Dk = (int)H;
        a.Dv = (int)Hv;
        a.q = proj;
        a.k = (const char *)proj + es * (size_t)hq;
        a.v = (const char *)proj + es * (size_t)(2 * hq);
        att_strides(a.qst, S * Dtot, H, Dtot);
        att_strides(a.kst, S * Dtot, H, Dtot);
        att_strides(a.vst, S * Dtot, Hv, Dtot);
        att_strides(a.yst, S * hv, Hv, hv);
        if (bias) {
            a.qb = bias->data;
            a.kb = (const char *)bias->data + es * (size_t)hq;
            a.vb = (const char *)bias->data + es * (size_t)(2 * hq);
        }
        a.scale = p->scale != 0.0f ? p->scale : (float)(1.0 / sqrt((double)H));
        st = att_ms_mask(node, mask, &a);
        if (!st) st = att_set_bias(node, ab, &a);
        if (!st) st = att_run(ctx, node, &a, x->dtype, out[0]->data);
    }
    cudaError_t fe = cudaFreeAsync(proj, s);
    if (st) return st;
    KN_CUDA_TRY(fe, node, "Attention projection buffer");
    return NULL;
}

// Input [B,S,D] and weights of one dtype, no past (input 4) or past_sequence_length, no rotary or
// shared buffer, outputs beyond 0 (present) not wired.
bool kn_cuda_ms_attention_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 2 || !in[0] || !in[1] || !att_only_output0(n)) return false;
    const kn_params_ms_attention *p = KN_PARAMS(n, ms_attention);
    if (p->do_rotary || p->past_present_share_buffer || p->num_heads <= 0) return false;
    kn_dtype t = in[0]->dtype;
    if (!kn_cuda_float(t) || in[1]->dtype != t || in[0]->ndim != 3 || in[1]->ndim != 2) return false;
    if (n_in > 2 && in[2] && in[2]->dtype != t) return false;
    if (n_in > 3 && !att_ms_mask_ok(in[3])) return false;
    if ((n_in > 4 && in[4]) || (n_in > 6 && in[6])) return false;
    int code;
    if (n_in > 5 && in[5] && (!att_bias_dtype(in[5]->dtype, &code) || in[5]->ndim != 4)) return false;
    int64_t dt = in[1]->dims[1];
    return dt < 0 || dt <= 3 * 256 * p->num_heads;
}

// ---- com.microsoft GroupQueryAttention: the KV cache written in place, rotary, then the kernel ----

// What the cache and rotary kernels share. Element dtypes: q/k/v/caches T, cos/sin cs_dt (0 f32,
// 1 f16, 2 bf16), position_ids int64 or absent.
struct gqa_args {
    const void *q, *k, *v; // k, v NULL: packed in q's rows after the query heads
    const void *past_k, *past_v, *cosc, *sinc;
    const int64_t *pos;
    const int *seqlens;
    int cs_dt, maxpos;
    int B, S, N, KV, H, P, T, rd;
    bool first, inter;
    int *err;
    int code;
};

__device__ static inline float gqa_cs(const void *p, int dt, int64_t i) {
    if (dt == 0) return ((const float *)p)[i];
    if (dt == 1) return __half2float(((const __half *)p)[i]);
    return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}

// Entry b's past length (where its new rows go), or -1 (and the error word set) when seqlens_k
// does not fit the cache.
__device__ static inline int gqa_past(const gqa_args &g, int b) {
    int tot = g.seqlens[b] + 1, pl = g.first ? 0 : tot - g.S;
    if (tot < 1 || tot > g.T || pl < 0 || pl + g.S > g.T || pl > g.P) {
        atomicCAS(g.err, 0, g.code);
        return -1;
    }
    return pl;
}

// Element c of a head row x (stride 1) rotated at position p (rd leading dims rotate).
template <class T> __device__ static inline float gqa_rope(const gqa_args &g, const T *x, int c, int64_t p) {
    float v = kn_num<T>::ld(x[c]);
    if (c >= g.rd) return v;
    int half = g.rd / 2;
    if (g.inter) {
        int k = c >> 1;
        float cs = gqa_cs(g.cosc, g.cs_dt, p * half + k), sn = gqa_cs(g.sinc, g.cs_dt, p * half + k);
        return c & 1 ? kn_num<T>::ld(x[c - 1]) * sn + v * cs : v * cs - kn_num<T>::ld(x[c + 1]) * sn;
    }
    int k = c < half ? c : c - half;
    float cs = gqa_cs(g.cosc, g.cs_dt, p * half + k), sn = gqa_cs(g.sinc, g.cs_dt, p * half + k);
    return c < half ? v * cs - kn_num<T>::ld(x[c + half]) * sn : kn_num<T>::ld(x[c - half]) * sn + v * cs;
}

template <class T> __device__ static inline int64_t gqa_position(const gqa_args &g, int b, int s, int pl) {
    int64_t p = g.pos ? g.pos[(int64_t)b * g.S + s] : (int64_t)pl + s;
    if (p < 0 || p >= g.maxpos) {
        atomicCAS(g.err, 0, g.code);
        return -1;
    }
    return p;
}

// The caches' old part: past's P rows (unless present is past's own buffer), zeros after.
template <class T> __global__ void gqa_copy_past_kernel(gqa_args g, T *kc, T *vc, bool inplace) {
    int64_t n = (int64_t)g.B * g.KV * g.T * g.H;
    KN_GRID_STRIDE(e, n) {
        int64_t c = e % g.H, t = e / g.H % g.T, bh = e / ((int64_t)g.H * g.T);
        if (inplace && t < g.P) continue;
        bool old = t < g.P && g.past_k;
        int64_t src = (bh * g.P + t) * g.H + c;
        kc[e] = old ? ((const T *)g.past_k)[src] : kn_num<T>::st(0.0f);
        vc[e] = old ? ((const T *)g.past_v)[src] : kn_num<T>::st(0.0f);
    }
}

// The new rows: K rotated into the caches at each entry's past length, V as is, and Q rotated
// into qr [B,S,N,H] when do_rotary.
template <class T> __global__ void gqa_new_rows_kernel(gqa_args g, T *kc, T *vc, T *qr) {
    int64_t D = (int64_t)(g.k ? g.N : g.N + 2 * g.KV) * g.H, per = (int64_t)(g.N + 2 * g.KV) * g.H;
    int64_t n = (int64_t)g.B * g.S * per;
    KN_GRID_STRIDE(e, n) {
        int64_t col = e % per, bs = e / per;
        int b = (int)(bs / g.S), s = (int)(bs % g.S), hh = (int)(col / g.H), c = (int)(col % g.H);
        int pl = gqa_past(g, b);
        if (pl < 0) continue;
        int64_t p = g.rd > 0 ? gqa_position<T>(g, b, s, pl) : 0;
        if (p < 0) continue;
        if (hh < g.N) { // query head
            if (!qr) continue;
            const T *x = (const T *)g.q + bs * D + (int64_t)hh * g.H;
            qr[(bs * g.N + hh) * g.H + c] = kn_num<T>::st(gqa_rope<T>(g, x, c, p));
            continue;
        }
        bool isk = hh < g.N + g.KV;
        int kvh = isk ? hh - g.N : hh - g.N - g.KV;
        const T *x = g.k ? (const T *)(isk ? g.k : g.v) + bs * (int64_t)g.KV * g.H + (int64_t)kvh * g.H
                         : (const T *)g.q + bs * D + (int64_t)hh * g.H;
        int64_t dst = (((int64_t)b * g.KV + kvh) * g.T + pl + s) * g.H + c;
        if (isk) kc[dst] = g.rd > 0 ? kn_num<T>::st(gqa_rope<T>(g, x, c, p)) : x[c];
        else vc[dst] = x[c];
    }
}

template <class T> static void gqa_prep(const gqa_args &g, void *kc, void *vc, void *qr, bool inplace, cudaStream_t s) {
    int64_t n1 = (int64_t)g.B * g.KV * g.T * g.H, n2 = (int64_t)g.B * g.S * (g.N + 2 * g.KV) * g.H;
    if (n1 > 0) KN_LAUNCH(gqa_copy_past_kernel<T>, kn_cuda_blocks(n1, 256), 256, 0, s, g, (T *)kc, (T *)vc, inplace);
    if (n2 > 0) KN_LAUNCH(gqa_new_rows_kernel<T>, kn_cuda_blocks(n2, 256), 256, 0, s, g, (T *)kc, (T *)vc, (T *)qr);
}

KN_CUDA_KERNEL(MsGroupQueryAttention) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_params_ms_gqa *p = KN_PARAMS(node, ms_gqa);
#define GQ_IN(i) (n_in > (i) ? in[i] : NULL)
    const kn_tensor *qt = in[0], *kt = GQ_IN(1), *vt = GQ_IN(2), *pk = GQ_IN(3), *pv = GQ_IN(4);
    const kn_tensor *slt = GQ_IN(5), *tlt = GQ_IN(6), *cst = GQ_IN(7), *snt = GQ_IN(8), *pit = GQ_IN(9);
#undef GQ_IN
    kn_tensor *yo = out[0], *pko = n_out > 1 ? out[1] : NULL, *pvo = n_out > 2 ? out[2] : NULL;
    if (pko && !pko->data) pko = NULL;
    if (pvo && !pvo->data) pvo = NULL;
    int64_t N = p->num_heads, KV = p->kv_num_heads;
    if (!slt || !tlt || slt->dtype != KN_I32 || tlt->dtype != KN_I32 || kn_numel(tlt) != 1 || qt->ndim != 3 || N <= 0 ||
        KV <= 0 || N % KV)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "GroupQueryAttention: query %s [B,S,hidden], int32 seqlens_k and total_sequence_length, "
                        "num_heads a multiple of kv_num_heads are required",
                        kn_tensor_desc(qt, b0, sizeof b0));
    int64_t B = qt->dims[0], S = qt->dims[1], D = qt->dims[2], parts = kt ? N : N + 2 * KV;
    if (D % parts || D == 0 || (kt == NULL) != (vt == NULL) || (pk == NULL) != (pv == NULL))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "GroupQueryAttention: query %s does not split into %lld heads",
                        kn_tensor_desc(qt, b0, sizeof b0), (long long)parts);
    int64_t H = D / parts, P = pk ? pk->dims[2] : 0;
    if (kt &&
        (kt->ndim != 3 || vt->ndim != 3 || kt->dims[0] != B || kt->dims[1] != S || kt->dims[2] != KV * H ||
         !kn_same_shape(kt, vt)))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "GroupQueryAttention: key %s / value %s must be [%lld, %lld, %lld]",
                        kn_tensor_desc(kt, b0, sizeof b0), kn_tensor_desc(vt, b1, sizeof b1), (long long)B,
                        (long long)S, (long long)(KV * H));
    if (pk && (pk->ndim != 4 || !kn_same_shape(pk, pv) || pk->dims[0] != B || pk->dims[1] != KV || pk->dims[3] != H))
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "GroupQueryAttention: past_key %s must be [%lld, %lld, capacity, %lld]",
                        kn_tensor_desc(pk, b0, sizeof b0), (long long)B, (long long)KV, (long long)H);
    if (slt->ndim != 1 || slt->dims[0] != B)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "GroupQueryAttention: seqlens_k %s must be [%lld]",
                        kn_tensor_desc(slt, b0, sizeof b0), (long long)B);
    int64_t total_len = kn_get_i64(tlt, 0), T = total_len > P ? total_len : P;
    const kn_tensor *po[2] = {pko, pvo};
    for (int i = 0; i < 2; i++)
        if (po[i] &&
            (po[i]->ndim != 4 || po[i]->dims[0] != B || po[i]->dims[1] != KV || po[i]->dims[2] != T ||
             po[i]->dims[3] != H))
            return kn_error(KN_ERR_INVALID_ARGUMENT, "GroupQueryAttention: present %s must be [%lld, %lld, %lld, %lld]",
                            kn_tensor_desc(po[i], b0, sizeof b0), (long long)B, (long long)KV, (long long)T,
                            (long long)H);
    if (B * S == 0) return NULL;
    if (B > 65535 || N > 65535 || S > INT_MAX / 2 || T > INT_MAX / 2 || D > INT_MAX)
        return kn_error(KN_ERR_UNSUPPORTED, "GroupQueryAttention: query %s too large for the CUDA kernel",
                        kn_tensor_desc(qt, b0, sizeof b0));
    gqa_args g;
    memset(&g, 0, sizeof g);
    g.q = qt->data;
    g.k = kt ? kt->data : NULL;
    g.v = vt ? vt->data : NULL;
    g.past_k = pk ? pk->data : NULL;
    g.past_v = pv ? pv->data : NULL;
    g.seqlens = (const int *)slt->data;
    g.B = (int)B;
    g.S = (int)S;
    g.N = (int)N;
    g.KV = (int)KV;
    g.H = (int)H;
    g.P = (int)P;
    g.T = (int)T;
    g.first = S > 1 && S == total_len;
    g.inter = p->rotary_interleaved;
    g.err = kn_cuda_st(ctx)->dev_err;
    g.code = kn_cuda_err_code(ctx, node);
    if (p->do_rotary) {
        if (!cst || !snt || cst->ndim != 2 || !kn_same_shape(cst, snt) || 2 * cst->dims[1] > H || cst->dims[1] <= 0 ||
            !att_bias_dtype(cst->dtype, &g.cs_dt) || snt->dtype != cst->dtype)
            return kn_error(
                KN_ERR_INVALID_ARGUMENT,
                "GroupQueryAttention: do_rotary needs float cos_cache/sin_cache [max_position, rotary_dim/2] "
                "within head size %lld, got %s",
                (long long)H, cst ? kn_tensor_desc(cst, b0, sizeof b0) : "none");
        if (pit && (pit->ndim != 2 || pit->dims[0] != B || pit->dims[1] != S || pit->dtype != KN_I64))
            return kn_error(KN_ERR_INVALID_ARGUMENT, "GroupQueryAttention: position_ids %s must be int64 [%lld, %lld]",
                            kn_tensor_desc(pit, b0, sizeof b0), (long long)B, (long long)S);
        g.cosc = cst->data;
        g.sinc = snt->data;
        g.maxpos = (int)cst->dims[0];
        g.rd = (int)(2 * cst->dims[1]);
        g.pos = pit ? (const int64_t *)pit->data : NULL;
    }
    cudaStream_t s = kn_cuda_s(ctx);
    size_t es = kn_dtype_size(qt->dtype), cache_b = (size_t)(B * KV * T * H) * es, qr_b = (size_t)(B * S * N * H) * es;
    // caches: the present outputs, or stream-ordered scratch when they are not wired
    void *kc = pko ? pko->data : NULL, *vc = pvo ? pvo->data : NULL, *qr = NULL;
    kn_status *st = NULL;
    cudaError_t e = cudaSuccess;
    if (!kc) e = cudaMallocAsync(&kc, cache_b ? cache_b : 1, s);
    if (e == cudaSuccess && !vc) e = cudaMallocAsync(&vc, cache_b ? cache_b : 1, s);
    if (e == cudaSuccess && g.rd > 0) e = cudaMallocAsync(&qr, qr_b, s);
    if (e != cudaSuccess) st = kn_cuda_err(e, node, "GroupQueryAttention buffers");
    if (!st) {
        bool inplace = pk && kc == pk->data && vc == pv->data;
        if (qt->dtype == KN_F32) gqa_prep<float>(g, kc, vc, qr, inplace, s);
        else if (qt->dtype == KN_F16) gqa_prep<__half>(g, kc, vc, qr, inplace, s);
        else gqa_prep<__nv_bfloat16>(g, kc, vc, qr, inplace, s);
        e = cudaGetLastError();
        if (e != cudaSuccess) st = kn_cuda_err(e, node, "GroupQueryAttention cache update");
    }
    if (!st) {
        att_args a;
        memset(&a, 0, sizeof a);
        a.B = (int)B;
        a.Hq = (int)N;
        a.Hkv = (int)KV;
        a.S = (int)S;
        a.T = (int)T;
        a.Dk = a.Dv = (int)H;
        if (qr) {
            a.q = qr;
            att_strides(a.qst, S * N * H, H, N * H);
        } else {
            a.q = qt->data;
            att_strides(a.qst, S * D, H, D);
        }
        a.k = kc;
        a.v = vc;
        att_strides(a.kst, KV * T * H, T * H, H);
        att_strides(a.vst, KV * T * H, T * H, H);
        att_strides(a.yst, S * N * H, H, N * H);
        a.scale = p->scale != 0.0f ? p->scale : (float)(1.0 / sqrt((double)H));
        a.causal = true;
        a.seqlens = g.seqlens;
        a.first = g.first;
        a.skip_below = ATT_MASKED;
        st = att_run(ctx, node, &a, qt->dtype, yo->data);
    }
    if (qr) cudaFreeAsync(qr, s);
    if (!pko && kc) cudaFreeAsync(kc, s);
    if (!pvo && vc) cudaFreeAsync(vc, s);
    return st;
}

// No softcap, local window, smooth softmax or head sink, attention_bias, scores output or quantised
// cache; caches in the query's dtype; total_sequence_length read on the host.
bool kn_cuda_ms_gqa_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    const kn_params_ms_gqa *p = KN_PARAMS(n, ms_gqa);
    if (p->softcap > 0.0f || p->local_window_size > 0 || p->smooth_softmax || p->qk_output || p->quantized_kv)
        return false;
    if (n_in < 7 || !in[0] || !in[5] || !in[6] || n_in > 12) return false;
    for (int i = 10; i < n_in; i++)
        if (in[i]) return false;
    if (n->n_outputs > 3 && n->outputs && n->outputs[3] >= 0) return false;
    kn_dtype t = in[0]->dtype;
    if (!kn_cuda_float(t)) return false;
    for (int i = 1; i <= 4; i++)
        if (in[i] && in[i]->dtype != t) return false;
    if (in[5]->dtype != KN_I32 || in[6]->dtype != KN_I32) return false;
    if (n_in > 9 && in[9] && in[9]->dtype != KN_I64) return false;
    int64_t N = p->num_heads, KV = p->kv_num_heads, D = in[0]->ndim == 3 ? in[0]->dims[2] : -1;
    int64_t parts = in[1] ? N : N + 2 * KV;
    return N > 0 && KV > 0 && (D < 0 || (parts > 0 && D / parts <= 256));
}

// ---- com.microsoft RotaryEmbedding: the same rotation as GroupQueryAttention's, on its own ----

// y = x rotated per (b, s, head) row at element strides sb, ss, sn; positions pos[b*S+s] (int64 or
// int32), or one offset pos[0] + s when pos_one.
template <class T>
__global__ void rope_kernel(gqa_args g, const T *x, T *y, const void *pos, bool pos_i64, bool pos_one, int64_t sb,
                            int64_t ss, int64_t sn) {
    int64_t n = (int64_t)g.B * g.S * g.N * g.H;
    KN_GRID_STRIDE(e, n) {
        int c = (int)(e % g.H), h = (int)(e / g.H % g.N);
        int64_t bs = e / ((int64_t)g.H * g.N);
        int s = (int)(bs % g.S), b = (int)(bs / g.S);
        int64_t pi = pos_one ? 0 : bs, p = pos_i64 ? ((const int64_t *)pos)[pi] : ((const int32_t *)pos)[pi];
        if (pos_one) p += s;
        if (p < 0 || p >= g.maxpos) {
            atomicCAS(g.err, 0, g.code);
            continue;
        }
        int64_t off = b * sb + s * ss + h * sn;
        y[off + c] = kn_num<T>::st(gqa_rope<T>(g, x + off, c, p));
    }
}

KN_CUDA_KERNEL(MsRotaryEmbedding) {
    char b0[KN_DESC_LEN], b1[KN_DESC_LEN];
    const kn_params_ms_rotary *p = KN_PARAMS(node, ms_rotary);
    if (n_in < 4 || !in[1] || !in[2] || !in[3] || p->is_packed_batching)
        return kn_error(KN_ERR_INVALID_MODEL,
                        "RotaryEmbedding: input, position_ids, cos_cache and sin_cache are "
                        "required (packed batching is not supported)");
    const kn_tensor *x = in[0], *pos = in[1], *cs = in[2], *sn = in[3];
    int64_t B = x->dims[0], S, N, H, sb, ss, snh;
    if (x->ndim == 4) {
        N = x->dims[1];
        S = x->dims[2];
        H = x->dims[3];
        sb = N * S * H;
        snh = S * H;
        ss = H;
    } else if (x->ndim == 3) {
        S = x->dims[1];
        int64_t D = x->dims[2];
        if (p->num_heads > 0 && D % p->num_heads == 0) H = D / p->num_heads;
        else if (p->num_heads <= 0 && p->rotary_embedding_dim == 0 && cs->ndim == 2 && cs->dims[1] > 0 &&
                 D % (2 * cs->dims[1]) == 0)
            H = 2 * cs->dims[1];
        else
            return kn_error(KN_ERR_INVALID_ARGUMENT, "RotaryEmbedding: input %s does not split into heads",
                            kn_tensor_desc(x, b0, sizeof b0));
        N = D / H;
        sb = S * D;
        ss = D;
        snh = H;
    } else {
        return kn_error(KN_ERR_INVALID_ARGUMENT, "RotaryEmbedding: input %s must be 3-D or 4-D",
                        kn_tensor_desc(x, b0, sizeof b0));
    }
    int64_t rd = p->rotary_embedding_dim ? p->rotary_embedding_dim : H;
    gqa_args g;
    memset(&g, 0, sizeof g);
    if (rd <= 0 || rd > H || rd % 2 || cs->ndim != 2 || !kn_same_shape(cs, sn) || cs->dims[1] != rd / 2 ||
        !att_bias_dtype(cs->dtype, &g.cs_dt) || sn->dtype != cs->dtype)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "RotaryEmbedding: rotary dim %lld of head size %lld needs float caches [max_position, %lld], "
                        "got %s",
                        (long long)rd, (long long)H, (long long)(rd / 2), kn_tensor_desc(cs, b1, sizeof b1));
    bool one = kn_numel(pos) == 1 && pos->ndim <= 1;
    if (!one && (pos->ndim != 2 || pos->dims[0] != B || pos->dims[1] != S))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "RotaryEmbedding: position_ids %s must be [1] or [%lld, %lld]",
                        kn_tensor_desc(pos, b0, sizeof b0), (long long)B, (long long)S);
    if (pos->dtype != KN_I64 && pos->dtype != KN_I32) return kn_err_dtype(node, pos);
    int64_t n = kn_numel(x);
    if (n == 0) return NULL;
    if (B > INT_MAX || S > INT_MAX || N > INT_MAX || H > INT_MAX)
        return kn_error(KN_ERR_UNSUPPORTED, "RotaryEmbedding: input %s too large", kn_tensor_desc(x, b0, sizeof b0));
    g.B = (int)B;
    g.S = (int)S;
    g.N = (int)N;
    g.H = (int)H;
    g.rd = (int)rd;
    g.inter = p->interleaved;
    g.cosc = cs->data;
    g.sinc = sn->data;
    g.maxpos = (int)cs->dims[0];
    g.err = kn_cuda_st(ctx)->dev_err;
    g.code = kn_cuda_err_code(ctx, node);
    cudaStream_t s = kn_cuda_s(ctx);
    unsigned grid = kn_cuda_blocks(n, 256);
    bool i64 = pos->dtype == KN_I64;
    switch (x->dtype) {
    case KN_F32:
        KN_LAUNCH(rope_kernel<float>, grid, 256, 0, s, g, (const float *)x->data, (float *)out[0]->data, pos->data, i64,
                  one, sb, ss, snh);
        break;
    case KN_F16:
        KN_LAUNCH(rope_kernel<__half>, grid, 256, 0, s, g, (const __half *)x->data, (__half *)out[0]->data, pos->data,
                  i64, one, sb, ss, snh);
        break;
    case KN_BF16:
        KN_LAUNCH(rope_kernel<__nv_bfloat16>, grid, 256, 0, s, g, (const __nv_bfloat16 *)x->data,
                  (__nv_bfloat16 *)out[0]->data, pos->data, i64, one, sb, ss, snh);
        break;
    default: return kn_err_dtype(node, x);
    }
    KN_CUDA_LAUNCHED(node, "RotaryEmbedding kernel");
    return NULL;
}

bool kn_cuda_ms_rotary_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 4 || !in[0] || !in[1] || !in[2] || !in[3] || KN_PARAMS(n, ms_rotary)->is_packed_batching) return false;
    int code;
    return kn_cuda_float(in[0]->dtype) && in[1]->dtype == KN_I64 && att_bias_dtype(in[2]->dtype, &code) &&
        in[3]->dtype == in[2]->dtype;
}
