/* CPU kernels for the signal-processing ops: DFT (opset 17 axis attribute, opset 20 axis input),
 * STFT, the Hann / Hamming / Blackman windows and MelWeightMatrix. Transforms run in double: a
 * radix-2 FFT for power-of-two lengths and Bluestein's algorithm on top of it otherwise. */
#include "graph/ops.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

static bool sig_float(kn_dtype t) { return t == KN_F32 || t == KN_F64 || t == KN_F16 || t == KN_BF16; }

static int64_t sig_pow2_ceil(int64_t n) {
    int64_t m = 1;
    while (m < n) m <<= 1;
    return m;
}

/* Doubles of work memory sig_transform needs for length n: none for powers of two, the padded
 * convolution buffers and the chirp for Bluestein otherwise. */
static int64_t sig_work_len(int64_t n) {
    if (n <= 1 || (n & (n - 1)) == 0) return 0;
    return 4 * sig_pow2_ceil(2 * n - 1) + 2 * n;
}

/* Iterative radix-2 transform, n a power of two; sign -1 forward, +1 inverse (unscaled). */
static void sig_fft_pow2(double *re, double *im, int64_t n, int sign) {
    for (int64_t i = 1, j = 0; i < n; i++) { /* bit reversal */
        int64_t bit = n >> 1;
        for (; j & bit; bit >>= 1) j ^= bit;
        j ^= bit;
        if (i < j) {
            double t = re[i];
            re[i] = re[j];
            re[j] = t;
            t = im[i];
            im[i] = im[j];
            im[j] = t;
        }
    }
    for (int64_t len = 2; len <= n; len <<= 1) {
        int64_t half = len / 2;
        for (int64_t k = 0; k < half; k++) {
            double ang = sign * 2.0 * M_PI * (double)k / (double)len, wr = cos(ang), wi = sin(ang);
            for (int64_t i = k; i < n; i += len) {
                double vr = re[i + half] * wr - im[i + half] * wi, vi = re[i + half] * wi + im[i + half] * wr;
                re[i + half] = re[i] - vr;
                im[i + half] = im[i] - vi;
                re[i] += vr;
                im[i] += vi;
            }
        }
    }
}

/* In-place complex transform of any length n (re/im arrays); sign -1 forward, +1 inverse
 * (unscaled). Other lengths use Bluestein's chirp-z: a power-of-two convolution of the input
 * times the chirp exp(s*i*pi*k^2/n) with its conjugate. work holds sig_work_len(n) doubles. */
static void sig_transform(double *re, double *im, int64_t n, int sign, double *work) {
    if (n <= 1) return;
    if ((n & (n - 1)) == 0) {
        sig_fft_pow2(re, im, n, sign);
        return;
    }
    int64_t M = sig_pow2_ceil(2 * n - 1);
    double *ar = work, *ai = work + M, *br = work + 2 * M, *bi = work + 3 * M, *wr = work + 4 * M, *wi = wr + n;
    memset(work, 0, sizeof(double) * (size_t)(4 * M));
    for (int64_t k = 0; k < n; k++) {
        double ang = sign * M_PI * (double)((k * k) % (2 * n)) / (double)n; /* exact phase for long n */
        wr[k] = cos(ang);
        wi[k] = sin(ang);
        ar[k] = re[k] * wr[k] - im[k] * wi[k];
        ai[k] = re[k] * wi[k] + im[k] * wr[k];
        br[k] = wr[k];
        bi[k] = -wi[k];
        if (k > 0) {
            br[M - k] = wr[k];
            bi[M - k] = -wi[k];
        }
    }
    sig_fft_pow2(ar, ai, M, -1);
    sig_fft_pow2(br, bi, M, -1);
    for (int64_t k = 0; k < M; k++) {
        double r = ar[k] * br[k] - ai[k] * bi[k], i = ar[k] * bi[k] + ai[k] * br[k];
        ar[k] = r;
        ai[k] = i;
    }
    sig_fft_pow2(ar, ai, M, 1);
    double inv = 1.0 / (double)M;
    for (int64_t k = 0; k < n; k++) {
        double cr = ar[k] * inv, ci = ai[k] * inv;
        re[k] = cr * wr[k] - ci * wi[k];
        im[k] = cr * wi[k] + ci * wr[k];
    }
}

static double sig_load(const kn_tensor *t, int64_t i) {
    switch (t->dtype) {
    case KN_F32: return ((const float *)t->data)[i];
    case KN_F64: return ((const double *)t->data)[i];
    case KN_F16: return kn_f16_to_f32(((const uint16_t *)t->data)[i]);
    case KN_BF16: return kn_bf16_to_f32(((const uint16_t *)t->data)[i]);
    default: return kn_get_f64(t, i);
    }
}

static void sig_store(kn_tensor *t, int64_t i, double v) {
    switch (t->dtype) {
    case KN_F32: ((float *)t->data)[i] = (float)v; break;
    case KN_F64: ((double *)t->data)[i] = v; break;
    case KN_F16: ((uint16_t *)t->data)[i] = kn_f32_to_f16((float)v); break;
    case KN_BF16: ((uint16_t *)t->data)[i] = kn_f32_to_bf16((float)v); break;
    default: kn_set_f64(t, i, v); break;
    }
}

kn_status *kn_cpu_DFT(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                      kn_tensor *const *out, int n_out) {
    char b1[KN_DESC_LEN];
    const kn_tensor *x = in[0], *len_t = n_in > 1 ? in[1] : NULL, *axis_t = n_in > 2 ? in[2] : NULL;
    kn_tensor *y = out[0];
    if (!sig_float(x->dtype)) return kn_err_dtype(node, x);
    if ((len_t && kn_numel(len_t) != 1) || (axis_t && kn_numel(axis_t) != 1))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "DFT: dft_length and axis must be scalars");
    int r = x->ndim;
    int64_t axis = node->opset >= 20 ? (axis_t ? kn_get_i64(axis_t, 0) : -2) : KN_PARAMS(node, dft)->axis;
    if (r < 2 || axis < -r || axis >= r || (axis + r) % r == r - 1 || (x->dims[r - 1] != 1 && x->dims[r - 1] != 2))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "DFT: input %s with axis %lld is invalid",
                        kn_tensor_desc(x, b1, sizeof b1), (long long)axis);
    if (axis < 0) axis += r;
    bool inverse = KN_PARAMS(node, dft)->inverse, onesided = KN_PARAMS(node, dft)->onesided;
    int64_t m = x->dims[axis];
    int64_t N = len_t ? kn_get_i64(len_t, 0) : (inverse && onesided ? 2 * (m - 1) : m);
    if (N <= 0 || N > ((int64_t)1 << 30))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "DFT: transform length %lld invalid for %s", (long long)N,
                        kn_tensor_desc(x, b1, sizeof b1));
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; d++) outer *= x->dims[d];
    for (int d = axis + 1; d < r - 1; d++) inner *= x->dims[d];
    int64_t cin = x->dims[r - 1], cout = y->dims[r - 1], yl = y->dims[axis];
    size_t nbuf = (size_t)(2 * N + sig_work_len(N));
    double *buf = kn_scratch_alloc(ctx, sizeof(double) * nbuf);
    if (!buf) return KN_OOM(sizeof(double) * nbuf);
    double *re = buf, *im = buf + N, *work = buf + 2 * N;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            memset(buf, 0, sizeof(double) * (size_t)(2 * N));
            if (inverse && onesided) {
                /* Hermitian completion of the half spectrum; the imaginary parts of the DC and
                 * Nyquist bins cannot contribute to a real signal and are dropped. */
                int64_t half = N / 2 + 1;
                for (int64_t k = 0; k < half && k < m; k++) {
                    int64_t src = ((o * m + k) * inner + i) * cin;
                    re[k] = sig_load(x, src);
                    im[k] = cin == 2 ? sig_load(x, src + 1) : 0.0;
                }
                im[0] = 0.0;
                if (N % 2 == 0) im[N / 2] = 0.0;
                for (int64_t k = 1; k < half; k++)
                    if (N - k >= half) {
                        re[N - k] = re[k];
                        im[N - k] = -im[k];
                    }
            } else {
                for (int64_t k = 0; k < m && k < N; k++) {
                    int64_t src = ((o * m + k) * inner + i) * cin;
                    re[k] = sig_load(x, src);
                    im[k] = cin == 2 ? sig_load(x, src + 1) : 0.0;
                }
            }
            sig_transform(re, im, N, inverse ? 1 : -1, work);
            double sc = inverse ? 1.0 / (double)N : 1.0;
            for (int64_t k = 0; k < yl; k++) {
                int64_t dst = ((o * yl + k) * inner + i) * cout;
                sig_store(y, dst, re[k] * sc);
                if (cout == 2) sig_store(y, dst + 1, im[k] * sc);
            }
        }
    return NULL;
}

kn_status *kn_cpu_STFT(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                       kn_tensor *const *out, int n_out) {
    char b1[KN_DESC_LEN];
    const kn_tensor *x = in[0], *win = n_in > 2 ? in[2] : NULL;
    kn_tensor *y = out[0];
    if (!sig_float(x->dtype)) return kn_err_dtype(node, x);
    if (win && !sig_float(win->dtype)) return kn_err_dtype(node, win);
    if (x->ndim != 3 || (x->dims[2] != 1 && x->dims[2] != 2))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "STFT: signal %s must be [batch, length, 1 or 2]",
                        kn_tensor_desc(x, b1, sizeof b1));
    if (kn_numel(in[1]) != 1 || (n_in > 3 && in[3] && kn_numel(in[3]) != 1) || (win && win->ndim != 1))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "STFT: frame_step / frame_length must be scalars and window 1-D");
    int64_t step = kn_get_i64(in[1], 0);
    int64_t B = x->dims[0], L = x->dims[1], cin = x->dims[2];
    int64_t frames = y->dims[1], bins = y->dims[2];
    int64_t fl = (n_in > 3 && in[3]) ? kn_get_i64(in[3], 0) : win ? win->dims[0] : L;
    if (win && win->dims[0] != fl)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "STFT: window %s does not match frame_length %lld",
                        kn_tensor_desc(win, b1, sizeof b1), (long long)fl);
    if (fl <= 0 || fl > L || step <= 0 || (frames > 0 && (frames - 1) * step + fl > L))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "STFT: frame_length %lld / frame_step %lld do not fit signal %s",
                        (long long)fl, (long long)step, kn_tensor_desc(x, b1, sizeof b1));
    size_t nbuf = (size_t)(2 * fl + sig_work_len(fl));
    double *buf = kn_scratch_alloc(ctx, sizeof(double) * nbuf);
    if (!buf) return KN_OOM(sizeof(double) * nbuf);
    double *re = buf, *im = buf + fl, *work = buf + 2 * fl;
    for (int64_t b = 0; b < B; b++)
        for (int64_t f = 0; f < frames; f++) {
            for (int64_t n = 0; n < fl; n++) {
                double w = win ? sig_load(win, n) : 1.0;
                int64_t src = (b * L + f * step + n) * cin;
                re[n] = sig_load(x, src) * w;
                im[n] = cin == 2 ? sig_load(x, src + 1) * w : 0.0;
            }
            sig_transform(re, im, fl, -1, work);
            for (int64_t k = 0; k < bins; k++) {
                int64_t dst = ((b * frames + f) * bins + k) * 2;
                sig_store(y, dst, re[k]);
                sig_store(y, dst + 1, im[k]);
            }
        }
    return NULL;
}

/* Generalised cosine window: a0 - a1 cos(2πn/D) + a2 cos(4πn/D), D = N (periodic) or N-1. */
static kn_status *sig_window(const kn_node *node, kn_tensor *y, double a0, double a1, double a2) {
    int64_t n = y->dims[0];
    bool periodic = KN_PARAMS(node, sigwin)->periodic;
    double D = periodic ? (double)n : (double)(n - 1);
    for (int64_t i = 0; i < n; i++) {
        double v = D == 0.0 ? 1.0 : a0 - a1 * cos(2.0 * M_PI * (double)i / D) + a2 * cos(4.0 * M_PI * (double)i / D);
        sig_store(y, i, v);
    }
    return NULL;
}

kn_status *kn_cpu_HannWindow(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                             kn_tensor *const *out, int n_out) {
    return sig_window(node, out[0], 0.5, 0.5, 0.0);
}

kn_status *kn_cpu_HammingWindow(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *const *out, int n_out) {
    return sig_window(node, out[0], 25.0 / 46.0, 1.0 - 25.0 / 46.0, 0.0);
}

kn_status *kn_cpu_BlackmanWindow(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                 kn_tensor *const *out, int n_out) {
    return sig_window(node, out[0], 0.42, 0.5, 0.08);
}

/* Triangular mel filters as in the ONNX reference: band edges evenly spaced in mel, mapped to
 * integer spectrogram bins by floor((dft_length + 1) * hz / sample_rate). */
kn_status *kn_cpu_MelWeightMatrix(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                  kn_tensor *const *out, int n_out) {
    kn_tensor *y = out[0];
    for (int i = 0; i < 5; i++)
        if (i >= n_in || !in[i] || kn_numel(in[i]) != 1)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "MelWeightMatrix: input %d must be a scalar", i);
    int64_t mel = kn_get_i64(in[0], 0), dft = kn_get_i64(in[1], 0);
    double rate = sig_load(in[2], 0), lo = sig_load(in[3], 0), hi = sig_load(in[4], 0);
    int64_t nspec = dft / 2 + 1;
    if (rate <= 0.0 || lo < 0.0 || hi < lo || hi > rate / 2.0 + 1e-9)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "MelWeightMatrix: bad sample_rate %g or edges [%g, %g]", rate, lo, hi);
    int64_t *bins = kn_scratch_alloc(ctx, sizeof(int64_t) * (size_t)(mel + 2));
    if (!bins) return KN_OOM(sizeof(int64_t) * (mel + 2));
    double lmel = 2595.0 * log1p(lo / 700.0) / log(10.0), hmel = 2595.0 * log1p(hi / 700.0) / log(10.0);
    double step = (hmel - lmel) / (double)(mel + 2);
    for (int64_t i = 0; i < mel + 2; i++) {
        double hz = 700.0 * expm1(((double)i * step + lmel) / 2595.0 * log(10.0));
        bins[i] = (int64_t)floor((double)(dft + 1) * hz / rate);
        if (bins[i] < 0) bins[i] = 0;
        if (bins[i] >= nspec) bins[i] = nspec - 1;
    }
    int64_t n = nspec * mel;
    for (int64_t i = 0; i < n; i++) sig_store(y, i, 0.0);
    for (int64_t i = 0; i < mel; i++) {
        int64_t l = bins[i], c = bins[i + 1], h = bins[i + 2];
        if (c == l) sig_store(y, c * mel + i, 1.0);
        else
            for (int64_t j = l; j <= c; j++) sig_store(y, j * mel + i, (double)(j - l) / (double)(c - l));
        for (int64_t j = c; j < h; j++) sig_store(y, j * mel + i, (double)(h - j) / (double)(h - c));
    }
    return NULL;
}
