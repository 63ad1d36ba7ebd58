// RNN, GRU and LSTM on the device, float32, as the CPU driver (kernels/cpu/rnn.c) computes them:
// the input projections of every time step are one cuBLASLt GEMM per direction, the recurrent
// projection one GEMM per step (GRU without linear_before_reset: a second one for (r * h) Rh),
// and one fused kernel per step combines the gates, updates h (and c) and writes Y. Every
// direction, layout, sequence_lens, initial states, peepholes, clip, input_forget and the
// activations the CPU supports. sequence_lens stays on the device (reading it on the host would
// make the run wait for it): every run takes S steps, each row's masked past its own length, so
// its h, c stop there and its Y rows beyond stay zero, as ONNX says; a length outside [0, S] is
// reported through the run's error word (stream_end), clamped meanwhile.
#include "kernels/cuda/cuda_common.h"

kn_status *kn_cuda_gemm_f32_nt(kn_exec_ctx *ctx, const kn_node *node, int64_t M, int64_t N, int64_t K, const float *A,
                               int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc);

enum { CELL_RNN = 1, CELL_GRU = 3, CELL_LSTM = 4 };

// The activations of one direction (f, g, h), by value.
struct rnn_acts {
    kn_rnn_act a[3];
};

__device__ static inline float rnn_apply(const kn_rnn_act &a, float x) {
    switch (a.kind) {
    case KN_RNN_ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case KN_RNN_ACT_TANH: return tanhf(x);
    case KN_RNN_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case KN_RNN_ACT_AFFINE: return a.alpha * x + a.beta;
    case KN_RNN_ACT_LEAKYRELU: return x >= 0.0f ? x : a.alpha * x;
    case KN_RNN_ACT_THRESHOLDEDRELU: return x > a.alpha ? x : 0.0f;
    case KN_RNN_ACT_SCALEDTANH: return a.alpha * tanhf(a.beta * x);
    case KN_RNN_ACT_HARDSIGMOID: {
        float v = a.alpha * x + a.beta;
        return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
    case KN_RNN_ACT_ELU: return x >= 0.0f ? x : a.alpha * (expf(x) - 1.0f);
    case KN_RNN_ACT_SOFTSIGN: return x / (1.0f + fabsf(x));
    case KN_RNN_ACT_SOFTPLUS: return log1pf(expf(x));
    }
    return x;
}
// lens[b] <- sequence_lens[b] (int32 or int64; none: S), clamped to [0, S] after flagging one outside
__global__ void rnn_lens_kernel(int64_t *lens, const void *sl, bool sl64, int64_t Bn, int64_t S, int *err, int code) {
    KN_GRID_STRIDE(b, Bn) {
        int64_t l = !sl ? S : sl64 ? ((const int64_t *)sl)[b] : (int64_t)((const int32_t *)sl)[b];
        if (l < 0 || l > S) {
            atomicCAS(err, 0, code);
            l = l < 0 ? 0 : S;
        }
        lens[b] = l;
    }
}

__device__ static inline float rnn_clip(float x, float clip) {
    return clip > 0.0f ? (x < -clip ? -clip : x > clip ? clip : x) : x;
}

// xs[(t * Bn + b) * I + i] <- X in either layout
__global__ void rnn_xs_kernel(float *xs, const float *x, int64_t S, int64_t Bn, int64_t I) {
    KN_GRID_STRIDE(j, S * Bn * I) {
        int64_t i = j % I, b = (j / I) % Bn, t = j / (I * Bn);
        xs[j] = x[(b * S + t) * I + i];
    }
}

// h, c <- the initial states of direction d (or zero); Y rows past each sequence's end <- 0
__global__ void rnn_init_kernel(float *h, float *c, const float *h0, const float *c0, float *y, const int64_t *lens,
                                int64_t S, int64_t Bn, int64_t H, int dirs, int d, int layout) {
    KN_GRID_STRIDE(j, Bn * H) {
        int64_t k = j % H, b = j / H;
        int64_t si = layout ? (b * dirs + d) * H + k : (d * Bn + b) * H + k;
        h[j] = h0 ? h0[si] : 0.0f;
        c[j] = c0 ? c0[si] : 0.0f;
        if (y)
            for (int64_t t = lens[b]; t < S; t++)
                y[layout ? ((b * S + t) * dirs + d) * H + k : ((t * dirs + d) * Bn + b) * H + k] = 0.0f;
    }
}

// GRU without linear_before_reset: tmp = r * h for the rows still running
__global__ void gru_reset_kernel(float *tmp, const float *xw, const float *hr, const float *h, const float *wb,
                                 const float *rb, const int64_t *lens, int64_t step, int64_t Bn, int64_t H, bool rev,
                                 float clip, rnn_acts acts) {
    KN_GRID_STRIDE(j, Bn * H) {
        int64_t k = j % H, b = j / H;
        if (step >= lens[b]) continue;
        int64_t t = rev ? lens[b] - 1 - step : step, GH = 3 * H;
        const float *x = xw + (t * Bn + b) * GH;
        float rg = rnn_apply(acts.a[0], rnn_clip(x[H + k] + hr[b * GH + H + k] + wb[H + k] + rb[H + k], clip));
        tmp[j] = rg * h[j];
    }
}

// One step of every running sequence: gates, the new h (and c), Y
__global__ void rnn_cell_kernel(float *h, float *c, float *y, const float *xw, const float *hr, const float *rh,
                                const float *wb, const float *rb, const float *peep, const int64_t *lens, int64_t step,
                                int64_t S, int64_t Bn, int64_t H, int dirs, int d, int layout, bool rev, int cell,
                                float clip, bool lbr, bool input_forget, rnn_acts acts) {
    KN_GRID_STRIDE(j, Bn * H) {
        int64_t k = j % H, b = j / H;
        if (step >= lens[b]) continue;
        int64_t t = rev ? lens[b] - 1 - step : step, GH = cell * H;
        const float *x = xw + (t * Bn + b) * GH, *hrb = hr + b * GH;
        const kn_rnn_act &fa = acts.a[0], &ga = acts.a[1], &ha = acts.a[2];
        float hn;
        if (cell == CELL_RNN) {
            hn = rnn_apply(fa, rnn_clip(x[k] + hrb[k] + wb[k] + rb[k], clip));
        } else if (cell == CELL_GRU) {
            float z = rnn_apply(fa, rnn_clip(x[k] + hrb[k] + wb[k] + rb[k], clip));
            float hh;
            if (lbr) {
                float rg = rnn_apply(fa, rnn_clip(x[H + k] + hrb[H + k] + wb[H + k] + rb[H + k], clip));
                hh =
                    rnn_apply(ga, rnn_clip(x[2 * H + k] + rg * (hrb[2 * H + k] + rb[2 * H + k]) + wb[2 * H + k], clip));
            } else {
                hh = rnn_apply(ga, rnn_clip(x[2 * H + k] + rh[j] + rb[2 * H + k] + wb[2 * H + k], clip));
            }
            hn = (1.0f - z) * hh + z * h[j];
        } else {
            float cp = c[j];
            float ig = rnn_apply(fa, rnn_clip(x[k] + hrb[k] + wb[k] + rb[k] + peep[k] * cp, clip));
            float fg = input_forget ? 1.0f - ig
                                    : rnn_apply(fa,
                                                rnn_clip(x[2 * H + k] + hrb[2 * H + k] + wb[2 * H + k] + rb[2 * H + k] +
                                                             peep[2 * H + k] * cp,
                                                         clip));
            float cg = rnn_apply(ga, rnn_clip(x[3 * H + k] + hrb[3 * H + k] + wb[3 * H + k] + rb[3 * H + k], clip));
            float cn = fg * cp + ig * cg;
            float og = rnn_apply(fa, rnn_clip(x[H + k] + hrb[H + k] + wb[H + k] + rb[H + k] + peep[H + k] * cn, clip));
            c[j] = cn;
            hn = og * rnn_apply(ha, cn);
        }
        h[j] = hn;
        if (y) y[layout ? ((b * S + t) * dirs + d) * H + k : ((t * dirs + d) * Bn + b) * H + k] = hn;
    }
}

__global__ void rnn_final_kernel(float *yh, float *yc, const float *h, const float *c, int64_t Bn, int64_t H, int dirs,
                                 int d, int layout) {
    KN_GRID_STRIDE(j, Bn * H) {
        int64_t k = j % H, b = j / H;
        int64_t si = layout ? (b * dirs + d) * H + k : (d * Bn + b) * H + k;
        if (yh) yh[si] = h[j];
        if (yc) yc[si] = c[j];
    }
}

static kn_status *rnn_cuda(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                           kn_tensor *const *out, int n_out, int cell) {
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    int G = cell;
    const kn_tensor *X = in[0], *W = in[1], *R = in[2];
    const kn_tensor *Bt = n_in > 3 ? in[3] : NULL, *SL = n_in > 4 ? in[4] : NULL, *H0 = n_in > 5 ? in[5] : NULL;
    const kn_tensor *C0 = cell == CELL_LSTM && n_in > 6 ? in[6] : NULL,
                    *P = cell == CELL_LSTM && n_in > 7 ? in[7] : NULL;
    if (X->ndim != 3 || W->ndim != 3 || R->ndim != 3)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: X %s and W %s must be 3-D", node->op_type,
                        kn_tensor_desc(X, b1, sizeof b1), kn_tensor_desc(W, b2, sizeof b2));
    const kn_params_rnn *rp = KN_PARAMS(node, rnn);
    int layout = (int)rp->layout;
    int dirs = rp->direction == KN_RNN_BIDIRECTIONAL ? 2 : 1;
    bool reverse_only = rp->direction == KN_RNN_REVERSE;
    int64_t S = layout ? X->dims[1] : X->dims[0], Bn = layout ? X->dims[0] : X->dims[1], I = X->dims[2];
    int64_t H = rp->has_hidden_size ? rp->hidden_size : R->dims[2];
    int64_t GH = G * H;
    if (H <= 0 || W->dims[0] != dirs || W->dims[1] != GH || W->dims[2] != I || R->dims[0] != dirs || R->dims[1] != GH ||
        R->dims[2] != H)
        return kn_error(KN_ERR_INVALID_ARGUMENT,
                        "%s: W %s / R %s do not match %d direction(s), hidden_size %lld, input %s", node->op_type,
                        kn_tensor_desc(W, b1, sizeof b1), kn_tensor_desc(R, b2, sizeof b2), dirs, (long long)H,
                        kn_tensor_desc(X, b1, sizeof b1));
    if (Bt && (Bt->ndim != 2 || Bt->dims[0] != dirs || Bt->dims[1] != 2 * GH))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: B %s must be [%d, %lld]", node->op_type,
                        kn_tensor_desc(Bt, b1, sizeof b1), dirs, (long long)(2 * GH));
    if (SL && (SL->ndim != 1 || SL->dims[0] != Bn))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: sequence_lens %s must be [%lld]", node->op_type,
                        kn_tensor_desc(SL, b1, sizeof b1), (long long)Bn);
    const kn_tensor *states[2] = {H0, C0};
    for (int k = 0; k < 2; k++) {
        const kn_tensor *s = states[k];
        if (!s) continue;
        bool ok = s->ndim == 3 &&
            (layout ? (s->dims[0] == Bn && s->dims[1] == dirs) : (s->dims[0] == dirs && s->dims[1] == Bn)) &&
            s->dims[2] == H;
        if (!ok)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: initial state %s has the wrong shape", node->op_type,
                            kn_tensor_desc(s, b1, sizeof b1));
    }
    if (P && (P->ndim != 2 || P->dims[0] != dirs || P->dims[1] != 3 * H))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "LSTM: P %s must be [%d, %lld]", kn_tensor_desc(P, b1, sizeof b1),
                        dirs, (long long)(3 * H));
    kn_tensor *Y = n_out > 0 ? out[0] : NULL, *Yh = n_out > 1 ? out[1] : NULL,
              *Yc = cell == CELL_LSTM && n_out > 2 ? out[2] : NULL;
    cudaStream_t s = kn_cuda_s(ctx);
    // one device block for every temporary: xs (layout 1), xw, hr, h, c, tmp (r * h, then its product),
    // zero bias and peepholes, the lengths
    size_t n_xs = layout ? (size_t)(S * Bn * I) : 0, n_xw = (size_t)(S * Bn * GH), n_hr = (size_t)(Bn * GH),
           n_h = (size_t)(Bn * H), n_zero = (size_t)(2 * GH + 3 * H);
    size_t floats = n_xs + n_xw + n_hr + 4 * n_h + n_zero;
    size_t bytes = floats * sizeof(float) + sizeof(int64_t) * (size_t)(Bn + 1);
    char *buf = NULL;
    cudaError_t ce = cudaMallocAsync((void **)&buf, bytes, s);
    if (ce != cudaSuccess) return kn_cuda_err(ce, node, "recurrent scratch");
    float *xs = (float *)buf, *xw = xs + n_xs, *hr = xw + n_xw, *h = hr + n_hr, *c = h + n_h, *tmp = c + n_h,
          *zero = tmp + 2 * n_h;
    int64_t *dlens = (int64_t *)(zero + n_zero);
    kn_status *st = NULL;
    // zeroed whole: the zero bias and peepholes, and tmp's rows of ended sequences, which the
    // GRU product reads (and nobody uses) are then defined
    ce = cudaMemsetAsync(buf, 0, floats * sizeof(float), s);
    if (ce != cudaSuccess) st = kn_cuda_err(ce, node, "recurrent setup");
    if (!st)
        KN_LAUNCH(rnn_lens_kernel, kn_cuda_blocks(Bn, 256), 256, 0, s, dlens, SL ? SL->data : (const void *)NULL,
                  SL && SL->dtype == KN_I64, Bn, S, kn_cuda_st(ctx)->dev_err, kn_cuda_err_code(ctx, node));
    const float *xin = (const float *)X->data;
    if (!st && layout && n_xs) {
        KN_LAUNCH(rnn_xs_kernel, kn_cuda_blocks((int64_t)n_xs, 256), 256, 0, s, xs, xin, S, Bn, I);
        xin = xs;
    }
    unsigned g = kn_cuda_blocks(Bn * H, 256);
    int n_act = cell == CELL_RNN ? 1 : cell == CELL_GRU ? 2 : 3;
    for (int d = 0; !st && d < dirs; d++) {
        bool rev = reverse_only || d == 1;
        rnn_acts acts;
        for (int a = 0; a < 3; a++) acts.a[a] = rp->acts[d * n_act + (a < n_act ? a : 0)];
        const float *wd = (const float *)W->data + d * GH * I, *rd = (const float *)R->data + d * GH * H;
        const float *wb = Bt ? (const float *)Bt->data + d * 2 * GH : zero, *rb = Bt ? wb + GH : zero + GH;
        const float *peep = P ? (const float *)P->data + d * 3 * H : zero + 2 * GH;
        KN_LAUNCH(rnn_init_kernel, g, 256, 0, s, h, c, H0 ? (const float *)H0->data : (const float *)NULL,
                  C0 ? (const float *)C0->data : (const float *)NULL, Y ? (float *)Y->data : (float *)NULL, dlens, S,
                  Bn, H, dirs, d, layout);
        st = kn_cuda_gemm_f32_nt(ctx, node, S * Bn, GH, I, xin, I, wd, I, xw, GH);
        for (int64_t step = 0; !st && step < S; step++) {
            st = kn_cuda_gemm_f32_nt(ctx, node, Bn, GH, H, h, H, rd, H, hr, GH);
            if (!st && cell == CELL_GRU && !rp->linear_before_reset) {
                KN_LAUNCH(gru_reset_kernel, g, 256, 0, s, tmp, xw, hr, h, wb, rb, dlens, step, Bn, H, rev, rp->clip,
                          acts);
                st = kn_cuda_gemm_f32_nt(ctx, node, Bn, H, H, tmp, H, rd + 2 * H * H, H, tmp + n_h, H);
            }
            if (!st)
                KN_LAUNCH(rnn_cell_kernel, g, 256, 0, s, h, c, Y ? (float *)Y->data : (float *)NULL, xw, hr, tmp + n_h,
                          wb, rb, peep, dlens, step, S, Bn, H, dirs, d, layout, rev, cell, rp->clip,
                          rp->linear_before_reset, rp->input_forget, acts);
        }
        if (!st && (Yh || Yc))
            KN_LAUNCH(rnn_final_kernel, g, 256, 0, s, Yh ? (float *)Yh->data : (float *)NULL,
                      Yc ? (float *)Yc->data : (float *)NULL, h, c, Bn, H, dirs, d, layout);
        if (!st && (ce = cudaGetLastError()) != cudaSuccess) st = kn_cuda_err(ce, node, "recurrent kernels");
    }
    cudaFreeAsync(buf, s);
    return st;
}

KN_CUDA_KERNEL(RNN) { return rnn_cuda(ctx, node, in, n_in, out, n_out, CELL_RNN); }
KN_CUDA_KERNEL(GRU) { return rnn_cuda(ctx, node, in, n_in, out, n_out, CELL_GRU); }
KN_CUDA_KERNEL(LSTM) { return rnn_cuda(ctx, node, in, n_in, out, n_out, CELL_LSTM); }

// float32 throughout (the CPU converts other types to float32; here they stay on the CPU)
bool kn_cuda_rnn_supports(const kn_node *n, const kn_tensor *const *in, int n_in) {
    if (n_in < 3) return false;
    for (int k = 0; k < n_in; k++) {
        if (!in[k]) continue;
        if (k == 4 ? (in[k]->dtype != KN_I32 && in[k]->dtype != KN_I64) : in[k]->dtype != KN_F32) return false;
    }
    return in[0] && in[1] && in[2];
}
