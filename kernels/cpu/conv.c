/* CPU kernels for the convolution family: Conv, com.microsoft FusedConv, ConvInteger,
 * QLinearConv, ConvTranspose, DeformConv and Col2Im. Float convolutions lower to im2col + kn_sgemm
 * per (image, group), with the column matrix skipped for 1x1 stride-1 kernels and unfolded ~1 MiB
 * at a time (the chunks of all images run in parallel); depthwise and small-group 1-D/2-D ones
 * take a direct SIMD path (conv_dw.h) instead. ConvTranspose is the mirror image (sgemm, then
 * col2im). The integer convolutions run im2col + the int16-pair integer GEMM on zero-point-shifted
 * data; double Conv, DeformConv and the integer fallback (no AVX2) use a plain direct convolution
 * in double. */
#include "graph/ops.h"
#include "graph/op_helpers.h"
#include "kernels/cpu/conv_dw.h"
#include "kernels/cpu/conv_prep.h"
#include "kernels/cpu/gemm.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Every kernel has the one signature the op table wants; not all use every argument. */
#pragma GCC diagnostic ignored "-Wunused-parameter"

#define DESC(t, buf) kn_tensor_desc((t), (buf), sizeof(buf))

/* Most taps (Cg * kernel size) one output of the direct grouped convolution sums. */
#define KN_DW_MAX_TAPS KN_DW_MAX_PLANE_TAPS

/* ---------------------------------------------------------------- shared pieces */

/* A sliding window between an image and the columns it unfolds to: image coordinate of column
 * position p for kernel offset q is p*stride - pad + q*dilation. */
typedef struct win {
    int nsp;
    int64_t img[KN_MAX_DIMS], cols[KN_MAX_DIMS], k[KN_MAX_DIMS];
    int64_t s[KN_MAX_DIMS], d[KN_MAX_DIMS], pb[KN_MAX_DIMS];
    int64_t img_n, col_n, k_n; /* products */
} win;

static void win_finish(win *w) {
    w->img_n = w->col_n = w->k_n = 1;
    for (int i = 0; i < w->nsp; i++) {
        w->img_n *= w->img[i];
        w->col_n *= w->cols[i];
        w->k_n *= w->k[i];
    }
}

/* Columns p of the innermost dim whose image coordinate p*s + off lies in [0, n). */
static void valid_range(int64_t cols, int64_t s, int64_t off, int64_t n, int64_t *lo, int64_t *hi) {
    int64_t a = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t b = n - off <= 0 ? 0 : (n - off + s - 1) / s;
    if (b > cols) b = cols;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

/* For column block `outer` (all dims but the last) and kernel offsets kpos: the image offset of
 * the innermost row, or -1 if the row lies in the padding. */
static int64_t row_base(const win *w, int64_t outer, const int64_t *kpos) {
    int64_t off = 0, stride = w->img[w->nsp - 1];
    for (int dd = w->nsp - 2; dd >= 0; dd--) {
        int64_t p = outer % w->cols[dd];
        outer /= w->cols[dd];
        int64_t ip = p * w->s[dd] - w->pb[dd] + kpos[dd] * w->d[dd];
        if (ip < 0 || ip >= w->img[dd]) return -1;
        off += ip * stride;
        stride *= w->img[dd];
    }
    return off;
}

static void kpos_of(const win *w, int64_t kk, int64_t *kpos) {
    for (int dd = w->nsp - 1; dd >= 0; dd--) {
        kpos[dd] = kk % w->k[dd];
        kk /= w->k[dd];
    }
}

/* Column rows o0..o1 (blocks of the innermost dim): col[(c*k_n + kk) * ld + p] =
 * img[c][coord] (0 in the padding), ld = width = (o1 - o0) * cols[last] unless given (> 0: the
 * columns of several images side by side). One body for the float and the int16 (integer
 * convolution) element types. */
#define KN_DEFINE_IM2COL(name, T) \
    static void name(const T *img, int64_t C, const win *w, int64_t o0, int64_t o1, T *col, int64_t ld) { \
        int L = w->nsp - 1; \
        int64_t wl = w->cols[L], width = ld > 0 ? ld : (o1 - o0) * wl; \
        for (int64_t c = 0; c < C; c++) \
            for (int64_t kk = 0; kk < w->k_n; kk++) { \
                int64_t kpos[KN_MAX_DIMS]; \
                kpos_of(w, kk, kpos); \
                T *row = col + (c * w->k_n + kk) * width; \
                const T *src = img + c * w->img_n; \
                int64_t off = kpos[L] * w->d[L] - w->pb[L], lo, hi; \
                valid_range(wl, w->s[L], off, w->img[L], &lo, &hi); \
                for (int64_t o = o0; o < o1; o++) { \
                    T *r = row + (o - o0) * wl; \
                    int64_t base = row_base(w, o, kpos); \
                    if (base < 0) { \
                        memset(r, 0, sizeof(T) * (size_t)wl); \
                        continue; \
                    } \
                    const T *sp = src + base + off; \
                    for (int64_t p = 0; p < lo; p++) r[p] = 0; \
                    if (w->s[L] == 1) memcpy(r + lo, sp + lo, sizeof(T) * (size_t)(hi - lo)); \
                    else \
                        for (int64_t p = lo; p < hi; p++) r[p] = sp[p * w->s[L]]; \
                    for (int64_t p = hi; p < wl; p++) r[p] = 0; \
                } \
            } \
    }
KN_DEFINE_IM2COL(im2col_nd, float)
KN_DEFINE_IM2COL(im2col_i16, int16_t)

/* im2col for 2-D windows, the CNN case: the input row of each output row is found directly
 * (row_base's divisions per row and tap were ~3% of YOLOv8n). */
static void im2col(const float *img, int64_t C, const win *w, int64_t o0, int64_t o1, float *col, int64_t ld) {
    if (w->nsp != 2) {
        im2col_nd(img, C, w, o0, o1, col, ld);
        return;
    }
    int64_t H = w->img[0], W = w->img[1], OW = w->cols[1], KH = w->k[0], KW = w->k[1];
    int64_t width = ld > 0 ? ld : (o1 - o0) * OW, sw = w->s[1];
    for (int64_t c = 0; c < C; c++)
        for (int64_t kh = 0; kh < KH; kh++)
            for (int64_t kw = 0; kw < KW; kw++) {
                float *row = col + ((c * KH + kh) * KW + kw) * width;
                int64_t off = kw * w->d[1] - w->pb[1], lo, hi;
                valid_range(OW, sw, off, W, &lo, &hi);
                for (int64_t oh = o0; oh < o1; oh++) {
                    float *r = row + (oh - o0) * OW;
                    int64_t ih = oh * w->s[0] - w->pb[0] + kh * w->d[0];
                    if (ih < 0 || ih >= H) {
                        memset(r, 0, sizeof(float) * (size_t)OW);
                        continue;
                    }
                    const float *sp = img + (c * H + ih) * W + off;
                    for (int64_t p = 0; p < lo; p++) r[p] = 0.0f;
                    if (sw == 1) memcpy(r + lo, sp + lo, sizeof(float) * (size_t)(hi - lo));
                    else
                        for (int64_t p = lo; p < hi; p++) r[p] = sp[p * sw];
                    for (int64_t p = hi; p < OW; p++) r[p] = 0.0f;
                }
            }
}

/* img[c][coord] += col[(c*k_n + kk) * col_n + p], the adjoint of im2col. */
static void col2im(const float *col, int64_t C, const win *w, float *img) {
    int L = w->nsp - 1;
    int64_t wl = w->cols[L], nouter = w->col_n / (wl ? wl : 1);
    for (int64_t c = 0; c < C; c++)
        for (int64_t kk = 0; kk < w->k_n; kk++) {
            int64_t kpos[KN_MAX_DIMS];
            kpos_of(w, kk, kpos);
            const float *row = col + (c * w->k_n + kk) * w->col_n;
            float *dst = img + c * w->img_n;
            int64_t off = kpos[L] * w->d[L] - w->pb[L], lo, hi;
            valid_range(wl, w->s[L], off, w->img[L], &lo, &hi);
            for (int64_t o = 0; o < nouter; o++) {
                int64_t base = row_base(w, o, kpos);
                if (base < 0) continue;
                const float *r = row + o * wl;
                float *dd = dst + base + off;
                for (int64_t p = lo; p < hi; p++) dd[p * w->s[L]] += r[p];
            }
        }
}

static kn_status *conv_shapes(const kn_node *node, const char *op, const kn_tensor *x, const kn_tensor *w,
                              const kn_tensor *y, int64_t *group, kn_conv_geom *g) {
    char bx[KN_DESC_LEN], bw[KN_DESC_LEN];
    if (x->ndim < 3 || x->ndim != w->ndim || x->ndim > KN_MAX_DIMS)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: X %s and W %s must have equal rank >= 3", op, DESC(x, bx),
                        DESC(w, bw));
    int nsp = x->ndim - 2;
    const kn_params_conv *cp = KN_PARAMS(node, conv);
    *group = cp->group;
    if (*group < 1 || x->dims[1] != w->dims[1] * *group || w->dims[0] % *group)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: X %s and W %s do not fit group %lld", op, DESC(x, bx),
                        DESC(w, bw), (long long)*group);
    const int64_t *ks = cp->win.kernel_shape;
    int nk = cp->win.n_kernel_shape;
    if (nk >= 0) {
        if (nk != nsp) return kn_error(KN_ERR_INVALID_MODEL, "%s: kernel_shape has %d values", op, nk);
        for (int i = 0; i < nsp; i++)
            if (ks[i] != w->dims[2 + i])
                return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: kernel_shape differs from W %s", op, DESC(w, bw));
    }
    KN_TRY(kn_conv_geometry(node, op, nsp, x->dims + 2, w->dims + 2, false, g));
    if (y->ndim != x->ndim || y->dims[0] != x->dims[0] || y->dims[1] != w->dims[0])
        return kn_error(KN_ERR_RUNTIME, "%s: output %s does not fit X %s, W %s", op, DESC(y, bx), DESC(x, bx),
                        DESC(w, bw));
    for (int i = 0; i < nsp; i++)
        if (y->dims[2 + i] != g->out[i])
            return kn_error(KN_ERR_RUNTIME, "%s: output %s does not fit X %s, W %s", op, DESC(y, bx), DESC(x, bx),
                            DESC(w, bw));
    return NULL;
}

static win win_from_conv(const kn_conv_geom *g) {
    win w;
    memset(&w, 0, sizeof w);
    w.nsp = g->nsp;
    for (int i = 0; i < g->nsp; i++) {
        w.img[i] = g->in[i];
        w.cols[i] = g->out[i];
        w.k[i] = g->k[i];
        w.s[i] = g->stride[i];
        w.d[i] = g->dil[i];
        w.pb[i] = g->pad_b[i];
    }
    win_finish(&w);
    return w;
}

/* ---------------------------------------------------------------- direct grouped convolution */

/* Depthwise and small-group 1-D/2-D convolutions: im2col + a GEMM of Mg rows by Cg*k_n depth
 * wastes most of the work on packing. Here each (image, group) copies its Cg input planes once
 * into zero-padded buffers split by stride phase (phase r of a row holds the padded columns
 * r, r + sw, r + 2sw, ...), so output column ow of tap kw reads phase (kw*dw) % sw at
 * ow + (kw*dw) / sw: every tap is a contiguous vector load with no bounds test, and one row
 * kernel (conv_dw.h) serves all strides, dilations and pads. Horizontal strides 1 and 2 (every
 * common CNN) skip the copy: dw_item_plane reads the input in place. */
typedef struct dw_job {
    const float *x, *w, *b;
    float *y;
    int64_t N, G, Cg, Mg;
    int64_t H, Wd, KH, KW, sh, sw, dh, dw, ph, pw, OH, OW;
    int64_t rows; /* padded input rows needed: (OH-1)*sh + (KH-1)*dh + 1 */
    int64_t wq;   /* columns per phase row, with slack for the vector tail */
    int64_t owv;  /* OW rounded up to 16 */
    int64_t slot_floats, slots;
    float *buf;
    int act;
    float lo, hi;
    kn_conv_dw_row_fn row;
    kn_conv_dw_plane_fn plane; /* set: dw_item_plane, reading the input in place (no buf) */
} dw_job;

static void dw_item(const dw_job *j, int64_t item, float *buf) {
    int64_t n = item / j->G, g = item % j->G, plane = j->rows * j->wq;
    float *tmp = buf + j->Cg * j->sw * plane;
    for (int64_t c = 0; c < j->Cg; c++) {
        const float *src = j->x + ((n * j->G + g) * j->Cg + c) * j->H * j->Wd;
        for (int64_t r = 0; r < j->sw; r++) {
            float *dst = buf + (c * j->sw + r) * plane;
            for (int64_t i = 0; i < j->rows; i++) {
                float *d = dst + i * j->wq;
                int64_t ih = i - j->ph;
                if (ih < 0 || ih >= j->H) {
                    memset(d, 0, sizeof(float) * (size_t)j->wq);
                    continue;
                }
                const float *s = src + ih * j->Wd;
                /* d[q] = s[q*sw + r - pw] where that lies in [0, Wd) */
                int64_t off = r - j->pw, lo, hi;
                valid_range(j->wq, j->sw, off, j->Wd, &lo, &hi);
                memset(d, 0, sizeof(float) * (size_t)lo);
                if (j->sw == 1) memcpy(d + lo, s + lo + off, sizeof(float) * (size_t)(hi - lo));
                else
                    for (int64_t q = lo; q < hi; q++) d[q] = s[q * j->sw + off];
                memset(d + hi, 0, sizeof(float) * (size_t)(j->wq - hi));
            }
        }
    }
    int64_t taps = j->Cg * j->KH * j->KW, tap_off[KN_DW_MAX_TAPS];
    const float *srcs[KN_DW_MAX_TAPS];
    int t = 0;
    for (int64_t c = 0; c < j->Cg; c++)
        for (int64_t kh = 0; kh < j->KH; kh++)
            for (int64_t kw = 0; kw < j->KW; kw++) {
                int64_t q = kw * j->dw;
                tap_off[t++] = (c * j->sw + q % j->sw) * plane + kh * j->dh * j->wq + q / j->sw;
            }
    for (int64_t m = 0; m < j->Mg; m++) {
        int64_t oc = g * j->Mg + m;
        const float *wt = j->w + oc * taps;
        float bias = j->b ? j->b[oc] : 0.0f, *yp = j->y + (n * j->G * j->Mg + oc) * j->OH * j->OW;
        for (int64_t oh = 0; oh < j->OH; oh++) {
            const float *row0 = buf + oh * j->sh * j->wq;
            for (t = 0; t < taps; t++) srcs[t] = row0 + tap_off[t];
            /* a row's vector tail spills into the next row, written after it; the plane's last
             * row would spill into another plane (maybe another thread's), so it goes via tmp */
            if (oh + 1 < j->OH && (j->owv - j->OW) <= (j->OH - 1 - oh) * j->OW) {
                j->row(yp + oh * j->OW, srcs, wt, (int)taps, j->owv, bias, j->act, j->lo, j->hi);
                continue;
            }
            j->row(tmp, srcs, wt, (int)taps, j->owv, bias, j->act, j->lo, j->hi);
            memcpy(yp + oh * j->OW, tmp, sizeof(float) * (size_t)j->OW);
        }
    }
}

static float dw_act_scalar(float s, int act, float lo, float hi) {
    if (act == KN_CONV_DW_CLAMP) return s < lo ? lo : s > hi ? hi : s;
    if (act == KN_CONV_DW_SILU) return s / (1.0f + expf(-s));
    return s;
}

/* The same item for horizontal strides 1 and 2 without the padded copy (the copy was ~15% of
 * MobileNetV2 at batch 8): the plane kernel reads the input in place and masks the padding. */
static void dw_item_plane(const dw_job *j, int64_t item) {
    int64_t n = item / j->G, g = item % j->G, taps = j->Cg * j->KH * j->KW;
    kn_conv_dw_plane p = {j->x + (n * j->G + g) * j->Cg * j->H * j->Wd,
                          j->Cg,
                          j->H,
                          j->Wd,
                          j->KH,
                          j->KW,
                          j->sh,
                          j->sw,
                          j->dh,
                          j->dw,
                          j->ph,
                          j->pw,
                          j->OH,
                          j->OW};
    for (int64_t m = 0; m < j->Mg; m++) {
        int64_t oc = g * j->Mg + m;
        j->plane(j->y + (n * j->G * j->Mg + oc) * j->OH * j->OW, &p, j->w + oc * taps, j->b ? j->b[oc] : 0.0f, j->act,
                 j->lo, j->hi);
    }
}

static void dw_slot(void *ctx, int64_t begin, int64_t end) {
    const dw_job *j = ctx;
    for (int64_t s = begin; s < end; s++)
        for (int64_t item = s; item < j->N * j->G; item += j->slots) {
            if (j->plane) dw_item_plane(j, item);
            else dw_item(j, item, j->buf + s * j->slot_floats);
        }
}

static kn_conv_dw_row_fn dw_row_fn(void) {
    if (__builtin_cpu_supports("avx512f")) return kn_conv_dw_row_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kn_conv_dw_row_avx2;
    return kn_conv_dw_row_scalar;
}

static kn_conv_dw_plane_fn dw_plane_fn(void) {
    if (__builtin_cpu_supports("avx512f")) return kn_conv_dw_plane_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kn_conv_dw_plane_avx2;
    return kn_conv_dw_plane_scalar;
}

/* Whether the direct path takes this convolution: grouped, 1-D or 2-D, few taps per output. */
static bool dw_eligible(int64_t G, int64_t Cg, const kn_conv_geom *g) {
    if (G < 2 || (g->nsp != 1 && g->nsp != 2) || Cg > 4) return false;
    int64_t taps = Cg;
    for (int i = 0; i < g->nsp; i++) taps *= g->k[i];
    return taps <= KN_DW_MAX_TAPS;
}

static kn_status *conv_dw_f32(kn_exec_ctx *ctx, const float *x, const float *w, const float *b, float *y, int64_t N,
                              int64_t C, int64_t M, int64_t G, const kn_conv_geom *g, kn_conv_dw_row_fn row,
                              kn_conv_dw_plane_fn plane, int act, float lo, float hi) {
    dw_job j;
    memset(&j, 0, sizeof j);
    j.x = x;
    j.w = w;
    j.b = b;
    j.y = y;
    j.N = N;
    j.G = G;
    j.Cg = C / G;
    j.Mg = M / G;
    int L = g->nsp - 1;
    j.H = g->nsp == 2 ? g->in[0] : 1;
    j.KH = g->nsp == 2 ? g->k[0] : 1;
    j.sh = g->nsp == 2 ? g->stride[0] : 1;
    j.dh = g->nsp == 2 ? g->dil[0] : 1;
    j.ph = g->nsp == 2 ? g->pad_b[0] : 0;
    j.OH = g->nsp == 2 ? g->out[0] : 1;
    j.Wd = g->in[L];
    j.KW = g->k[L];
    j.sw = g->stride[L];
    j.dw = g->dil[L];
    j.pw = g->pad_b[L];
    j.OW = g->out[L];
    if (N * G == 0 || j.OH == 0 || j.OW == 0 || j.Mg == 0) return NULL;
    j.rows = (j.OH - 1) * j.sh + (j.KH - 1) * j.dh + 1;
    j.owv = (j.OW + 15) / 16 * 16;
    j.wq = j.owv + (j.KW - 1) * j.dw / j.sw + 1;
    j.act = act;
    j.lo = lo;
    j.hi = hi;
    j.row = row;
    int64_t T = ctx->pool ? kn_threadpool_size(ctx->pool) : 1;
    j.slots = T < N * G ? T : N * G;
    if (plane && j.sw <= 2) {
        j.plane = plane;
        if (j.slots > 1) kn_parallel_for(ctx->pool, j.slots, 1, dw_slot, &j);
        else dw_slot(&j, 0, 1);
        return NULL;
    }
    j.slot_floats = j.Cg * j.sw * j.rows * j.wq + j.owv;
    size_t bytes = sizeof(float) * (size_t)(j.slot_floats * j.slots);
    j.buf = kn_scratch_alloc(ctx, bytes);
    if (!j.buf) return KN_OOM(bytes);
    if (j.slots > 1) kn_parallel_for(ctx->pool, j.slots, 1, dw_slot, &j);
    else dw_slot(&j, 0, 1);
    return NULL;
}

/* ---------------------------------------------------------------- float32 Conv */

typedef struct conv_job {
    const float *x, *w, *b;
    float *y;
    int64_t N, G, Cg, Mg;
    win wn;
    bool direct;     /* 1x1, stride 1, no pad: X is its own column matrix */
    int64_t chunk;   /* outer column rows unfolded at a time (bounds the column buffer) */
    int64_t nchunks; /* chunks per item (1 on the direct path) */
    float *cols;     /* one column buffer per slot */
    int64_t slots;
    kn_threadpool *pool; /* threads for the sgemm when items run one at a time */
    int act;             /* clamp the output to [lo, hi] with the bias (FusedConv's Relu / Clip) */
    float lo, hi;
    kn_conv_bias_act_fn bias_act;
    const kn_sgemm_packed_a *pa; /* the weights packed once per model, one per group (NULL: packed per call) */
    float *ws;                   /* with pa: each slot's B panels (ws_floats) */
    int64_t ws_floats;
    int64_t ipu; /* with pa: images per item (> 1: small images side by side in one product) */
} conv_job;

/* Unit `unit` of the work: item (image, group) unit / nchunks, and of its column rows (blocks of
 * the innermost output dim) chunk unit % nchunks; the whole item on the direct path. */
/* Item `item` when images go ipu at a time: images [n0, n0 + cnt) of group g in one product. */
static void conv_unit_images(const conv_job *j, int64_t item, float *col, float *ws) {
    int64_t n0 = item / j->G * j->ipu, g = item % j->G, cnt = j->N - n0 < j->ipu ? j->N - n0 : j->ipu;
    const win *w = &j->wn;
    int64_t cn = w->col_n, xs = j->G * j->Cg * w->img_n, ys = j->G * j->Mg * cn;
    const float *x = j->x + (n0 * j->G + g) * j->Cg * w->img_n;
    float *y = j->y + (n0 * j->G + g) * j->Mg * cn;
    if (j->direct) {
        kn_sgemm_packed_a_run_images(j->pool, &j->pa[g], cnt, cn, x, cn, xs, 0.0f, y, cn, ys, ws);
    } else {
        int64_t nouter = cn / w->cols[w->nsp - 1];
        for (int64_t i = 0; i < cnt; i++) im2col(x + i * xs, j->Cg, w, 0, nouter, col + i * cn, cnt * cn);
        kn_sgemm_packed_a_run_images(j->pool, &j->pa[g], cnt, cn, col, cnt * cn, cn, 0.0f, y, cn, ys, ws);
    }
    if (j->act || j->b)
        for (int64_t i = 0; i < cnt; i++)
            for (int64_t m = 0; m < j->Mg; m++)
                j->bias_act(y + i * ys + m * cn, cn, j->b ? j->b[g * j->Mg + m] : 0.0f, j->act, j->lo, j->hi);
}

static void conv_unit(const conv_job *j, int64_t unit, float *col, float *ws) {
    if (j->ipu > 1) {
        conv_unit_images(j, unit, col, ws);
        return;
    }
    int64_t item = unit / j->nchunks, ci = unit % j->nchunks;
    int64_t n = item / j->G, g = item % j->G;
    const win *w = &j->wn;
    const float *x = j->x + (n * j->G + g) * j->Cg * w->img_n;
    float *y = j->y + (n * j->G + g) * j->Mg * w->col_n;
    const float *wt = j->w + g * j->Mg * j->Cg * w->k_n;
    int64_t K = j->Cg * w->k_n;
    int64_t p0 = 0, width = w->col_n;
    const kn_sgemm_packed_a *pa = j->pa ? &j->pa[g] : NULL;
    if (j->direct) {
        if (pa) kn_sgemm_packed_a_run(j->pool, pa, w->col_n, x, w->col_n, 0.0f, y, w->col_n, ws);
        else kn_sgemm(j->pool, false, false, j->Mg, w->col_n, K, 1.0f, wt, K, x, w->col_n, 0.0f, y, w->col_n);
    } else {
        int64_t wl = w->cols[w->nsp - 1], nouter = wl ? w->col_n / wl : 0;
        int64_t o0 = ci * j->chunk, o1 = o0 + j->chunk < nouter ? o0 + j->chunk : nouter;
        p0 = o0 * wl;
        width = (o1 - o0) * wl;
        im2col(x, j->Cg, w, o0, o1, col, 0);
        if (pa) kn_sgemm_packed_a_run(j->pool, pa, width, col, width, 0.0f, y + p0, w->col_n, ws);
        else kn_sgemm(j->pool, false, false, j->Mg, width, K, 1.0f, wt, K, col, width, 0.0f, y + p0, w->col_n);
    }
    if (j->act || j->b)
        for (int64_t m = 0; m < j->Mg; m++)
            j->bias_act(y + m * w->col_n + p0, width, j->b ? j->b[g * j->Mg + m] : 0.0f, j->act, j->lo, j->hi);
}

static void conv_slot(void *ctx, int64_t begin, int64_t end) {
    const conv_job *j = ctx;
    int64_t colsz = j->direct ? 0 : j->Cg * j->wn.k_n * j->chunk * j->wn.cols[j->wn.nsp - 1];
    int64_t units = (j->N + j->ipu - 1) / j->ipu * j->G * j->nchunks;
    for (int64_t s = begin; s < end; s++)
        for (int64_t u = s; u < units; u += j->slots)
            conv_unit(j, u, j->cols + s * colsz, j->ws ? j->ws + s * j->ws_floats : NULL);
}

/* What kn_conv_prepare keeps on a node: the weight it packed (a run uses the packing only for
 * that very tensor) and its G per-group A matrices. */
typedef struct conv_prep {
    const float *w;
    int64_t G, Mg, K;
    kn_sgemm_packed_a *pa;
} conv_prep;

static void conv_prep_free(void *p) {
    conv_prep *cp = p;
    for (int64_t i = 0; cp->pa && i < cp->G; i++) kn_sgemm_packed_a_release(&cp->pa[i]);
    free(cp->pa);
    free(cp);
}

kn_status *kn_conv_prepare(const kn_graph *gr, kn_node *n) {
    if ((n->op != KN_OP_Conv && n->op != KN_OP_MsFusedConv) || n->n_inputs < 2 || n->inputs[1] < 0) return NULL;
    return kn_conv_prepare_weights(n, gr->values[n->inputs[1]].constant);
}

kn_status *kn_conv_prepare_weights(kn_node *n, const kn_tensor *w) {
    if ((n->op != KN_OP_Conv && n->op != KN_OP_MsFusedConv) || n->prepared) return NULL;
    if (!w || w->dtype != KN_F32 || w->ndim < 3 || !w->data) return NULL;
    int64_t G = KN_PARAMS(n, conv)->group, M = w->dims[0], K = kn_numel(w) / (M ? M : 1);
    /* the direct grouped path (dw_eligible) reads the weights as they are */
    if (G < 1 || M <= 0 || K <= 0 || M % G || (G >= 2 && w->dims[1] <= 4 && w->ndim <= 4)) return NULL;
    conv_prep *cp = calloc(1, sizeof *cp);
    if (!cp) return KN_OOM(sizeof *cp);
    cp->w = w->data;
    cp->G = G;
    cp->Mg = M / G;
    cp->K = K;
    cp->pa = calloc((size_t)G, sizeof *cp->pa);
    if (!cp->pa) {
        free(cp);
        return KN_OOM(sizeof *cp->pa * (size_t)G);
    }
    const float *wd = w->data;
    for (int64_t i = 0; i < G; i++)
        if (!kn_sgemm_pack_a(cp->Mg, K, wd + i * cp->Mg * K, K, &cp->pa[i])) {
            conv_prep_free(cp);
            return KN_OOM((size_t)(M * K) * sizeof(float));
        }
    n->prepared = cp;
    n->prepared_free = conv_prep_free;
    return NULL;
}

/* The node's packed weights when they are those of w for this geometry, else NULL. */
static const kn_sgemm_packed_a *conv_packed(const kn_node *node, const float *w, int64_t M, int64_t G, int64_t K) {
    const conv_prep *cp = node->prepared;
    if (!cp || cp->w != w || cp->G != G || cp->Mg * G != M || cp->K != K) return NULL;
    return cp->pa;
}

static kn_status *conv_f32(kn_exec_ctx *ctx, const float *x, const float *w, const float *b, float *y, int64_t N,
                           int64_t C, int64_t M, int64_t G, const kn_conv_geom *g, int act, float lo, float hi,
                           const kn_sgemm_packed_a *pa) {
    conv_job j;
    memset(&j, 0, sizeof j);
    j.pa = pa;
    j.x = x;
    j.w = w;
    j.b = b;
    j.y = y;
    j.N = N;
    j.G = G;
    j.Cg = C / G;
    j.Mg = M / G;
    j.act = act;
    j.lo = lo;
    j.hi = hi;
    j.bias_act = __builtin_cpu_supports("avx512f")                        ? kn_conv_bias_act_avx512
        : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? kn_conv_bias_act_avx2
                                                                          : kn_conv_bias_act_scalar;
    j.wn = win_from_conv(g);
    j.direct = true;
    for (int i = 0; i < g->nsp; i++)
        if (g->k[i] != 1 || g->stride[i] != 1 || g->pad_b[i] || g->pad_e[i]) j.direct = false;
    int64_t items = N * G;
    if (items == 0 || j.wn.col_n == 0 || M == 0) return NULL;
    if (dw_eligible(G, j.Cg, g))
        return conv_dw_f32(ctx, x, w, b, y, N, C, M, G, g, dw_row_fn(), dw_plane_fn(), act, lo, hi);
    int64_t T = ctx->pool ? kn_threadpool_size(ctx->pool) : 1;
    double item_flops = 2.0 * (double)j.Mg * (double)j.wn.col_n * (double)(j.Cg * j.wn.k_n);
    /* Many small products (depthwise, small images): one per thread at a time. Otherwise each
     * product is threaded inside sgemm. */
    bool per_item = T > 1 && items >= 2 * T && item_flops < 2e7;
    j.nchunks = 1;
    if (!j.direct) {
        /* Unfold ~1 MiB of columns at a time, so the GEMM reads them from cache rather than
         * memory, but at least 256 columns (the packed weights are reused across them) and at
         * least one innermost row. The chunks of all items are then the units of work. */
        int64_t wl = j.wn.cols[j.wn.nsp - 1], nouter = j.wn.col_n / wl;
        int64_t row_bytes = (int64_t)sizeof(float) * j.Cg * j.wn.k_n * wl;
        j.chunk = ((int64_t)1 << 20) / (row_bytes > 0 ? row_bytes : 1);
        if (j.chunk < (256 + wl - 1) / wl) j.chunk = (256 + wl - 1) / wl;
        if (j.chunk > nouter) j.chunk = nouter;
        j.nchunks = (nouter + j.chunk - 1) / j.chunk;
        per_item = T > 1 && items * j.nchunks >= 2 * T;
    }
    j.ipu = 1;
    if (pa && N > 1 && j.nchunks == 1) {
        /* Small images (ResNet's 14x14 and 7x7 stages) fill few panels, the last one partly:
         * 49 columns take 64. Side by side, ipu images make one product of >= 256 (unfolded) or
         * 512 (1x1) columns, the units balanced (8 images of 49: 2 units of 4). */
        int64_t target = j.direct ? 512 : 256, cn = j.wn.col_n;
        int64_t ipu = (target + cn - 1) / cn;
        if (ipu > N) ipu = N;
        if (ipu > 1) {
            int64_t units = (N + ipu - 1) / ipu;
            j.ipu = (N + units - 1) / units;
            j.chunk = j.wn.col_n / j.wn.cols[j.wn.nsp - 1] * j.ipu; /* column buffer rows for ipu images */
            items = units * G;
            per_item = T > 1 && items >= 2 * T;
        }
    }
    j.slots = per_item ? T : 1;
    j.pool = per_item ? NULL : ctx->pool;
    if (!j.direct) {
        int64_t row_bytes = (int64_t)sizeof(float) * j.Cg * j.wn.k_n * j.wn.cols[j.wn.nsp - 1];
        size_t bytes = (size_t)row_bytes * (size_t)j.chunk * (size_t)j.slots;
        j.cols = kn_scratch_alloc(ctx, bytes ? bytes : 1);
        if (!j.cols) return KN_OOM(bytes);
    }
    if (pa) {
        int64_t wl = j.wn.cols[j.wn.nsp - 1];
        j.ws_floats = kn_sgemm_packed_a_ws(pa,
                                           j.ipu > 1      ? j.ipu * j.wn.col_n
                                               : j.direct ? j.wn.col_n
                                                          : j.chunk * wl,
                                           j.pool);
        size_t bytes = sizeof(float) * (size_t)(j.ws_floats * j.slots);
        j.ws = kn_scratch_alloc(ctx, bytes);
        if (!j.ws) return KN_OOM(bytes);
    }
    if (per_item) kn_parallel_for(ctx->pool, j.slots, 1, conv_slot, &j);
    else conv_slot(&j, 0, 1);
    return NULL;
}

/* ---------------------------------------------------------------- double direct convolution */

/* y[n][m][o] = bias[m] + sum_{c in group, q} x[n][c][coord(o, q)] * w[m][c'][q]. */
static void conv_direct_f64(const double *x, const double *w, const double *bias, int64_t N, int64_t C, int64_t M,
                            int64_t G, const kn_conv_geom *g, double *y) {
    win wn = win_from_conv(g);
    int64_t Cg = C / G, Mg = M / G;
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < M; m++) {
            int64_t grp = m / Mg;
            for (int64_t o = 0; o < wn.col_n; o++) {
                int64_t opos[KN_MAX_DIMS], rem = o;
                for (int dd = wn.nsp - 1; dd >= 0; dd--) {
                    opos[dd] = rem % wn.cols[dd];
                    rem /= wn.cols[dd];
                }
                double s = bias ? bias[m] : 0.0;
                for (int64_t kk = 0; kk < wn.k_n; kk++) {
                    int64_t kpos[KN_MAX_DIMS], off = 0;
                    kpos_of(&wn, kk, kpos);
                    bool ok = true;
                    for (int dd = 0; dd < wn.nsp && ok; dd++) {
                        int64_t ip = opos[dd] * wn.s[dd] - wn.pb[dd] + kpos[dd] * wn.d[dd];
                        if (ip < 0 || ip >= wn.img[dd]) ok = false;
                        off = off * wn.img[dd] + ip;
                    }
                    if (!ok) continue;
                    for (int64_t c = 0; c < Cg; c++)
                        s += x[(n * C + grp * Cg + c) * wn.img_n + off] * w[(m * Cg + c) * wn.k_n + kk];
                }
                y[(n * M + m) * wn.col_n + o] = s;
            }
        }
}

static double *to_f64(kn_exec_ctx *ctx, const kn_tensor *t) {
    int64_t n = kn_numel(t);
    double *d = kn_scratch_alloc(ctx, sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!d) return NULL;
    if (t->dtype == KN_F64) memcpy(d, t->data, sizeof(double) * (size_t)n);
    else
        for (int64_t i = 0; i < n; i++) d[i] = kn_get_f64(t, i);
    return d;
}

static float *to_f32(kn_exec_ctx *ctx, const kn_tensor *t) {
    if (t->dtype == KN_F32) return t->data;
    int64_t n = kn_numel(t);
    float *f = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!f) return NULL;
    if (t->dtype == KN_F16)
        for (int64_t i = 0; i < n; i++) f[i] = kn_f16_to_f32(((const uint16_t *)t->data)[i]);
    else
        for (int64_t i = 0; i < n; i++) f[i] = (float)kn_get_f64(t, i);
    return f;
}

static void from_f32(kn_tensor *t, const float *f) {
    int64_t n = kn_numel(t);
    if (t->dtype == KN_F32) {
        if (f != t->data) memcpy(t->data, f, sizeof(float) * (size_t)n);
        return;
    }
    for (int64_t i = 0; i < n; i++) kn_set_f64(t, i, f[i]);
}

static bool conv_float_dtype(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_F64 || t == KN_BF16; }

static kn_status *check_bias(const char *op, const kn_tensor *b, int64_t M) {
    char bb[KN_DESC_LEN];
    if (b && kn_numel(b) != M)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: bias %s must have %lld values", op, DESC(b, bb), (long long)M);
    return NULL;
}

kn_status *kn_cpu_Conv(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                       kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *w = in[1], *b = n_in > 2 ? in[2] : NULL;
    kn_tensor *y = out[0];
    if (!conv_float_dtype(x->dtype)) return kn_err_dtype(node, x);
    if (w->dtype != x->dtype) return kn_err_dtype(node, w);
    if (b && b->dtype != x->dtype) return kn_err_dtype(node, b);
    int64_t G;
    kn_conv_geom g;
    KN_TRY(conv_shapes(node, "Conv", x, w, y, &G, &g));
    int64_t N = x->dims[0], C = x->dims[1], M = w->dims[0];
    KN_TRY(check_bias("Conv", b, M));
    if (kn_numel(y) == 0) return NULL;
    if (x->dtype == KN_F64) {
        double *xd = x->data, *wd = w->data, *bd = b ? b->data : NULL;
        conv_direct_f64(xd, wd, bd, N, C, M, G, &g, y->data);
        return NULL;
    }
    float *xf = to_f32(ctx, x), *wf = to_f32(ctx, w), *bf = b ? to_f32(ctx, b) : NULL;
    float *yf = y->dtype == KN_F32 ? y->data : kn_scratch_alloc(ctx, sizeof(float) * (size_t)kn_numel(y));
    if (!xf || !wf || !yf || (b && !bf)) return KN_OOM(kn_nbytes(y));
    KN_TRY(conv_f32(ctx, xf, wf, bf, yf, N, C, M, G, &g, 0, -INFINITY, INFINITY,
                    conv_packed(node, wf, M, G, kn_numel(w) / M)));
    from_f32(y, yf);
    return NULL;
}

/* com.microsoft FusedConv (float32): Y = act(Conv(X, W, B) + Z). Without Z, Relu, Clip and
 * kiln's Silu are applied in the convolution's bias pass (or its direct row kernel); Z and the
 * other activations are one pass after it. */
kn_status *kn_cpu_MsFusedConv(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                              kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *w = in[1], *b = n_in > 2 ? in[2] : NULL, *z = n_in > 3 ? in[3] : NULL;
    kn_tensor *y = out[0];
    if (x->dtype != KN_F32) return kn_err_dtype(node, x);
    if (w->dtype != KN_F32) return kn_err_dtype(node, w);
    if (b && b->dtype != KN_F32) return kn_err_dtype(node, b);
    if (z && z->dtype != KN_F32) return kn_err_dtype(node, z);
    int64_t G;
    kn_conv_geom g;
    KN_TRY(conv_shapes(node, "FusedConv", x, w, y, &G, &g));
    int64_t N = x->dims[0], C = x->dims[1], M = w->dims[0], n = kn_numel(y);
    KN_TRY(check_bias("FusedConv", b, M));
    char bz[KN_DESC_LEN], by[KN_DESC_LEN];
    if (z && kn_numel(z) != n)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "FusedConv: Z %s must have the output's shape %s", DESC(z, bz),
                        DESC(y, by));
    if (n == 0) return NULL;
    const kn_params_conv *p = KN_PARAMS(node, conv);
    bool clamp = !z && (p->act == KN_CONV_ACT_RELU || p->act == KN_CONV_ACT_CLIP),
         silu = !z && p->act == KN_CONV_ACT_SILU;
    float lo = p->act == KN_CONV_ACT_CLIP ? p->act_a : 0.0f, hi = p->act == KN_CONV_ACT_CLIP ? p->act_b : INFINITY;
    float *yf = y->data;
    int inl = clamp ? KN_CONV_DW_CLAMP : silu ? KN_CONV_DW_SILU : KN_CONV_DW_NONE;
    KN_TRY(conv_f32(ctx, x->data, w->data, b ? b->data : NULL, yf, N, C, M, G, &g, inl, lo, clamp ? hi : INFINITY,
                    conv_packed(node, w->data, M, G, kn_numel(w) / M)));
    if (inl || (!z && p->act == KN_CONV_ACT_NONE)) return NULL;
    const float *zf = z ? z->data : NULL;
    float a = p->act_a, c = p->act_b;
    for (int64_t i = 0; i < n; i++) {
        float v = yf[i] + (zf ? zf[i] : 0.0f);
        switch (p->act) {
        case KN_CONV_ACT_RELU: v = v < 0.0f ? 0.0f : v; break;
        case KN_CONV_ACT_CLIP: v = v < a ? a : v > c ? c : v; break;
        case KN_CONV_ACT_LEAKY_RELU: v = v < 0.0f ? a * v : v; break;
        case KN_CONV_ACT_SIGMOID: v = 1.0f / (1.0f + expf(-v)); break;
        case KN_CONV_ACT_TANH: v = tanhf(v); break;
        case KN_CONV_ACT_HARD_SIGMOID: v = fmaxf(0.0f, fminf(1.0f, a * v + c)); break;
        case KN_CONV_ACT_SILU: v = v / (1.0f + expf(-v)); break;
        default: break;
        }
        yf[i] = v;
    }
    return NULL;
}

/* ---------------------------------------------------------------- integer convolutions */

static kn_status *zp_values(const char *op, const kn_tensor *zp, int64_t n, int64_t *out) {
    char bz[KN_DESC_LEN];
    if (!zp) {
        for (int64_t i = 0; i < n; i++) out[i] = 0;
        return NULL;
    }
    int64_t cnt = kn_numel(zp);
    if (cnt != 1 && cnt != n)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: zero point %s must be a scalar or have %lld values", op,
                        DESC(zp, bz), (long long)n);
    for (int64_t i = 0; i < n; i++) out[i] = kn_get_i64(zp, cnt == 1 ? 0 : i);
    return NULL;
}

/* acc = conv(x - xzp, w - wzp[m]) (+ bias) in double: exact for 8-bit data. */
static kn_status *int_conv(kn_exec_ctx *ctx, const kn_node *node, const char *op, const kn_tensor *x,
                           const kn_tensor *w, const kn_tensor *xzp, const kn_tensor *wzp, const kn_tensor *bias,
                           const kn_tensor *y, double **acc, int64_t *Mout) {
    if (x->dtype != KN_U8 && x->dtype != KN_I8) return kn_err_dtype(node, x);
    if (w->dtype != KN_U8 && w->dtype != KN_I8) return kn_err_dtype(node, w);
    int64_t G;
    kn_conv_geom g;
    KN_TRY(conv_shapes(node, op, x, w, y, &G, &g));
    int64_t N = x->dims[0], C = x->dims[1], M = w->dims[0];
    KN_TRY(check_bias(op, bias, M));
    int64_t *zw = kn_scratch_alloc(ctx, sizeof(int64_t) * (size_t)(M + 1)), zx;
    double *xd = to_f64(ctx, x), *wd = to_f64(ctx, w), *bd = bias ? to_f64(ctx, bias) : NULL;
    double *yd = kn_scratch_alloc(ctx, sizeof(double) * (size_t)(kn_numel(y) + 1));
    if (!zw || !xd || !wd || !yd || (bias && !bd)) return KN_OOM(kn_nbytes(y));
    KN_TRY(zp_values(op, xzp, 1, &zx));
    KN_TRY(zp_values(op, wzp, M, zw));
    int64_t nx = kn_numel(x), per_m = kn_numel(w) / (M ? M : 1);
    for (int64_t i = 0; i < nx; i++) xd[i] -= (double)zx;
    for (int64_t m = 0; m < M; m++)
        for (int64_t i = 0; i < per_m; i++) wd[m * per_m + i] -= (double)zw[m];
    *acc = yd;
    *Mout = M;
    if (kn_numel(y) == 0) return NULL;
    /* 8-bit data less zero points fits int16: im2col + the int16-pair GEMM (int32 sums, as the
     * spec's int32 result), when AVX2 is there and the column matrix is of sane size. */
    win wn = win_from_conv(&g);
    int64_t Cg = C / G, Mg = M / G, Kc = Cg * wn.k_n;
    int16_t *x16 = NULL, *w16 = NULL, *col = NULL, *bp = NULL;
    int32_t *c32 = NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && Kc * wn.col_n <= ((int64_t)1 << 26)) {
        x16 = kn_scratch_alloc(ctx, sizeof(int16_t) * (size_t)(nx + 1));
        w16 = kn_scratch_alloc(ctx, sizeof(int16_t) * (size_t)(kn_numel(w) + 1));
        col = kn_scratch_alloc(ctx, sizeof(int16_t) * (size_t)(Kc * wn.col_n + 1));
        bp = kn_scratch_alloc(ctx, sizeof(int16_t) * (size_t)((Kc + 1) * wn.col_n + 1));
        c32 = kn_scratch_alloc(ctx, sizeof(int32_t) * (size_t)(Mg * wn.col_n + 1));
    }
    if (!x16 || !w16 || !col || !bp || !c32) {
        conv_direct_f64(xd, wd, bd, N, C, M, G, &g, yd);
        return NULL;
    }
    for (int64_t i = 0; i < nx; i++) x16[i] = (int16_t)xd[i];
    for (int64_t i = 0; i < kn_numel(w); i++) w16[i] = (int16_t)wd[i];
    int64_t wl = wn.cols[wn.nsp - 1];
    for (int64_t n = 0; n < N; n++)
        for (int64_t gi = 0; gi < G; gi++) {
            im2col_i16(x16 + (n * C + gi * Cg) * wn.img_n, Cg, &wn, 0, wl ? wn.col_n / wl : 0, col, 0);
            kn_igemm_pack_b16(Kc, wn.col_n, col, bp);
            kn_igemm_s16(Mg, wn.col_n, Kc, w16 + gi * Mg * Kc, Kc, bp, c32, wn.col_n);
            for (int64_t m = 0; m < Mg; m++) {
                double bv = bd ? bd[gi * Mg + m] : 0.0;
                double *yr = yd + (n * M + gi * Mg + m) * wn.col_n;
                for (int64_t p = 0; p < wn.col_n; p++) yr[p] = (double)c32[m * wn.col_n + p] + bv;
            }
        }
    return NULL;
}

kn_status *kn_cpu_ConvInteger(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                              kn_tensor *const *out, int n_out) {
    double *acc;
    int64_t M;
    KN_TRY(int_conv(ctx, node, "ConvInteger", in[0], in[1], n_in > 2 ? in[2] : NULL, n_in > 3 ? in[3] : NULL, NULL,
                    out[0], &acc, &M));
    int64_t n = kn_numel(out[0]);
    int32_t *y = out[0]->data;
    for (int64_t i = 0; i < n; i++) y[i] = (int32_t)acc[i];
    return NULL;
}

kn_status *kn_cpu_QLinearConv(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                              kn_tensor *const *out, int n_out) {
    kn_tensor *y = out[0];
    if (y->dtype != KN_U8 && y->dtype != KN_I8) return kn_err_dtype(node, y);
    const kn_tensor *bias = n_in > 8 ? in[8] : NULL;
    if (bias && bias->dtype != KN_I32) return kn_err_dtype(node, bias);
    double *acc;
    int64_t M;
    KN_TRY(int_conv(ctx, node, "QLinearConv", in[0], in[3], in[2], in[5], bias, y, &acc, &M));
    char bs[KN_DESC_LEN];
    int64_t nws = kn_numel(in[4]);
    if (kn_numel(in[1]) != 1 || kn_numel(in[6]) != 1 || (nws != 1 && nws != M))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "QLinearConv: scales must be scalars (w_scale %s may be per channel)",
                        DESC(in[4], bs));
    int64_t yzp = 0;
    KN_TRY(zp_values("QLinearConv", in[7], 1, &yzp));
    float xs = (float)kn_get_f64(in[1], 0), ys = (float)kn_get_f64(in[6], 0);
    int64_t n = kn_numel(y), per = M ? n / (y->dims[0] ? y->dims[0] : 1) / M : 0;
    double lo = y->dtype == KN_U8 ? 0 : -128, hi = y->dtype == KN_U8 ? 255 : 127;
    for (int64_t i = 0; i < n; i++) {
        int64_t m = per ? (i / per) % M : 0;
        float scale = xs * (float)kn_get_f64(in[4], nws == 1 ? 0 : m) / ys;
        double v = rint(acc[i] * (double)scale) + (double)yzp;
        v = v < lo ? lo : v > hi ? hi : v;
        kn_set_i64(y, i, (int64_t)v);
    }
    return NULL;
}

/* ---------------------------------------------------------------- ConvTranspose */

kn_status *kn_cpu_ConvTranspose(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *w = in[1], *b = n_in > 2 ? in[2] : NULL;
    kn_tensor *y = out[0];
    char bx[KN_DESC_LEN], bw[KN_DESC_LEN];
    if (!conv_float_dtype(x->dtype)) return kn_err_dtype(node, x);
    if (w->dtype != x->dtype) return kn_err_dtype(node, w);
    if (b && b->dtype != x->dtype) return kn_err_dtype(node, b);
    if (x->ndim < 3 || x->ndim != w->ndim || x->ndim > KN_MAX_DIMS)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ConvTranspose: X %s and W %s must have equal rank >= 3", DESC(x, bx),
                        DESC(w, bw));
    int nsp = x->ndim - 2;
    int64_t G = KN_PARAMS(node, conv)->group;
    if (G < 1 || x->dims[1] != w->dims[0] || w->dims[0] % G)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ConvTranspose: X %s and W %s do not fit group %lld", DESC(x, bx),
                        DESC(w, bw), (long long)G);
    kn_conv_geom g;
    int64_t outpad[KN_MAX_DIMS];
    KN_TRY(kn_convt_geometry(node, nsp, x->dims + 2, w->dims + 2, &g, outpad));
    int64_t N = x->dims[0], C = x->dims[1], Mg = w->dims[1], M = Mg * G, Cg = C / G;
    if (y->ndim != x->ndim || y->dims[0] != N || y->dims[1] != M)
        return kn_error(KN_ERR_RUNTIME, "ConvTranspose: output %s does not fit X %s, W %s", DESC(y, bx), DESC(x, bx),
                        DESC(w, bw));
    for (int i = 0; i < nsp; i++)
        if (y->dims[2 + i] != g.out[i])
            return kn_error(KN_ERR_RUNTIME, "ConvTranspose: output %s does not fit X %s, W %s", DESC(y, bx),
                            DESC(x, bx), DESC(w, bw));
    KN_TRY(check_bias("ConvTranspose", b, M));
    int64_t ny = kn_numel(y);
    if (ny == 0) return NULL;
    /* The image is the output; the input positions are the columns. */
    win wn;
    memset(&wn, 0, sizeof wn);
    wn.nsp = nsp;
    for (int i = 0; i < nsp; i++) {
        wn.img[i] = g.out[i];
        wn.cols[i] = g.in[i];
        wn.k[i] = g.k[i];
        wn.s[i] = g.stride[i];
        wn.d[i] = g.dil[i];
        wn.pb[i] = g.pad_b[i];
    }
    win_finish(&wn);
    float *xf = to_f32(ctx, x), *wf = to_f32(ctx, w), *bf = b ? to_f32(ctx, b) : NULL;
    float *yf = y->dtype == KN_F32 ? y->data : kn_scratch_alloc(ctx, sizeof(float) * (size_t)ny);
    float *col = kn_scratch_alloc(ctx, sizeof(float) * (size_t)(Mg * wn.k_n * wn.col_n + 1));
    if (!xf || !wf || !yf || !col || (b && !bf)) return KN_OOM(kn_nbytes(y));
    memset(yf, 0, sizeof(float) * (size_t)ny);
    for (int64_t n = 0; n < N; n++)
        for (int64_t gi = 0; gi < G; gi++) {
            const float *xg = xf + (n * C + gi * Cg) * wn.col_n;
            const float *wg = wf + gi * Cg * Mg * wn.k_n;
            float *yg = yf + (n * M + gi * Mg) * wn.img_n;
            /* col (Mg*k x in) = Wg^T (Mg*k x Cg) * Xg (Cg x in) */
            kn_sgemm(ctx->pool, true, false, Mg * wn.k_n, wn.col_n, Cg, 1.0f, wg, Mg * wn.k_n, xg, wn.col_n, 0.0f, col,
                     wn.col_n);
            col2im(col, Mg, &wn, yg);
        }
    if (bf)
        for (int64_t n = 0; n < N; n++)
            for (int64_t m = 0; m < M; m++) {
                float *r = yf + (n * M + m) * wn.img_n;
                for (int64_t p = 0; p < wn.img_n; p++) r[p] += bf[m];
            }
    from_f32(y, yf);
    return NULL;
}

/* ---------------------------------------------------------------- Col2Im */

kn_status *kn_cpu_Col2Im(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    char bx[KN_DESC_LEN];
    if (!conv_float_dtype(x->dtype)) return kn_err_dtype(node, x);
    int64_t *img = NULL, *blk = NULL, ni = 0, nb = 0;
    KN_TRY(kn_tensor_to_i64(in[1], &img, &ni));
    kn_status *st = kn_tensor_to_i64(in[2], &blk, &nb);
    kn_conv_geom g;
    if (!st && (ni != nb || ni < 1 || ni + 2 > KN_MAX_DIMS || x->ndim != 3))
        st = kn_error(KN_ERR_INVALID_ARGUMENT, "Col2Im: input %s, image_shape of %lld and block_shape of %lld values",
                      DESC(x, bx), (long long)ni, (long long)nb);
    if (!st) st = kn_conv_geometry(node, "Col2Im", (int)ni, img, blk, false, &g);
    win wn;
    memset(&wn, 0, sizeof wn);
    if (!st) {
        wn.nsp = (int)ni;
        for (int i = 0; i < wn.nsp; i++) {
            wn.img[i] = img[i];
            wn.cols[i] = g.out[i];
            wn.k[i] = blk[i];
            wn.s[i] = g.stride[i];
            wn.d[i] = g.dil[i];
            wn.pb[i] = g.pad_b[i];
        }
        win_finish(&wn);
        if (x->dims[1] % wn.k_n || x->dims[2] != wn.col_n || y->dims[1] * wn.k_n != x->dims[1])
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "Col2Im: input %s does not match %lld blocks of size %lld",
                          DESC(x, bx), (long long)wn.col_n, (long long)wn.k_n);
    }
    free(img);
    free(blk);
    if (st) return st;
    int64_t ny = kn_numel(y), N = x->dims[0], C = y->dims[1];
    if (ny == 0) return NULL;
    float *xf = to_f32(ctx, x);
    float *yf = y->dtype == KN_F32 ? y->data : kn_scratch_alloc(ctx, sizeof(float) * (size_t)ny);
    if (!xf || !yf) return KN_OOM(kn_nbytes(y));
    memset(yf, 0, sizeof(float) * (size_t)ny);
    for (int64_t n = 0; n < N; n++) col2im(xf + n * C * wn.k_n * wn.col_n, C, &wn, yf + n * C * wn.img_n);
    from_f32(y, yf);
    return NULL;
}

/* ---------------------------------------------------------------- DeformConv */

/* Bilinear sample of a H x W plane with zeros outside, as torchvision's deform_conv2d does. */
static double bilinear(const double *p, int64_t H, int64_t W, double h, double w) {
    if (h <= -1 || h >= H || w <= -1 || w >= W) return 0.0;
    int64_t h0 = (int64_t)floor(h), w0 = (int64_t)floor(w), h1 = h0 + 1, w1 = w0 + 1;
    double lh = h - h0, lw = w - w0, hh = 1 - lh, hw = 1 - lw;
    double v00 = h0 >= 0 && w0 >= 0 ? p[h0 * W + w0] : 0;
    double v01 = h0 >= 0 && w1 < W ? p[h0 * W + w1] : 0;
    double v10 = h1 < H && w0 >= 0 ? p[h1 * W + w0] : 0;
    double v11 = h1 < H && w1 < W ? p[h1 * W + w1] : 0;
    return hh * hw * v00 + hh * lw * v01 + lh * hw * v10 + lh * lw * v11;
}

kn_status *kn_cpu_DeformConv(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                             kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *w = in[1], *off = in[2];
    const kn_tensor *b = n_in > 3 ? in[3] : NULL, *mask = n_in > 4 ? in[4] : NULL;
    kn_tensor *y = out[0];
    char bx[KN_DESC_LEN], bo[KN_DESC_LEN];
    if (!conv_float_dtype(x->dtype)) return kn_err_dtype(node, x);
    int64_t G;
    kn_conv_geom g;
    KN_TRY(conv_shapes(node, "DeformConv", x, w, y, &G, &g));
    if (g.nsp != 2) return kn_error(KN_ERR_UNSUPPORTED, "DeformConv: only 2-D input supported, got %s", DESC(x, bx));
    int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3], M = w->dims[0];
    int64_t kh = g.k[0], kw = g.k[1], oh = g.out[0], ow = g.out[1], Cg = C / G, Mg = M / G;
    int64_t OG = KN_PARAMS(node, conv)->offset_group;
    if (OG < 1 || C % OG)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "DeformConv: offset_group %lld does not divide %lld channels",
                        (long long)OG, (long long)C);
    int64_t want_off[4] = {N, OG * kh * kw * 2, oh, ow};
    if (off->ndim != 4 || memcmp(off->dims, want_off, sizeof want_off))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "DeformConv: offset %s should be [%lld,%lld,%lld,%lld]", DESC(off, bo),
                        (long long)N, (long long)want_off[1], (long long)oh, (long long)ow);
    if (mask) {
        int64_t want_m[4] = {N, OG * kh * kw, oh, ow};
        if (mask->ndim != 4 || memcmp(mask->dims, want_m, sizeof want_m))
            return kn_error(KN_ERR_INVALID_ARGUMENT, "DeformConv: mask %s has the wrong shape", DESC(mask, bo));
    }
    KN_TRY(check_bias("DeformConv", b, M));
    if (kn_numel(y) == 0) return NULL;
    double *xd = to_f64(ctx, x), *wd = to_f64(ctx, w), *od = to_f64(ctx, off);
    double *md = mask ? to_f64(ctx, mask) : NULL, *bd = b ? to_f64(ctx, b) : NULL;
    /* Sampled columns for one image and group: (Cg*kh*kw) x (oh*ow). */
    int64_t ncol = oh * ow, krows = Cg * kh * kw;
    double *col = kn_scratch_alloc(ctx, sizeof(double) * (size_t)(krows * ncol + 1));
    if (!xd || !wd || !od || !col || (mask && !md) || (b && !bd)) return KN_OOM(kn_nbytes(y));
    for (int64_t n = 0; n < N; n++)
        for (int64_t gi = 0; gi < G; gi++) {
            for (int64_t c = 0; c < Cg; c++) {
                int64_t cc = gi * Cg + c, og = cc / (C / OG);
                const double *plane = xd + (n * C + cc) * H * W;
                for (int64_t i = 0; i < kh; i++)
                    for (int64_t j = 0; j < kw; j++) {
                        int64_t q = i * kw + j;
                        const double *dy = od + ((n * OG + og) * kh * kw * 2 + 2 * q) * ncol;
                        const double *dx = dy + ncol;
                        const double *mk = md ? md + ((n * OG + og) * kh * kw + q) * ncol : NULL;
                        double *r = col + (c * kh * kw + q) * ncol;
                        for (int64_t a = 0; a < oh; a++)
                            for (int64_t bb = 0; bb < ow; bb++) {
                                int64_t p = a * ow + bb;
                                double hpos = (double)(a * g.stride[0] - g.pad_b[0] + i * g.dil[0]) + dy[p];
                                double wpos = (double)(bb * g.stride[1] - g.pad_b[1] + j * g.dil[1]) + dx[p];
                                double v = bilinear(plane, H, W, hpos, wpos);
                                r[p] = mk ? v * mk[p] : v;
                            }
                    }
            }
            for (int64_t m = 0; m < Mg; m++) {
                int64_t mm = gi * Mg + m;
                const double *wr = wd + mm * krows;
                for (int64_t p = 0; p < ncol; p++) {
                    double s = bd ? bd[mm] : 0.0;
                    for (int64_t k = 0; k < krows; k++) s += wr[k] * col[k * ncol + p];
                    kn_set_f64(y, (n * M + mm) * ncol + p, s);
                }
            }
        }
    return NULL;
}

/* ---------------------------------------------------------------- Conv backward (kiln ops) */

/* The geometry of the Conv a ConvGradX / ConvGradW node differentiates, from X's and W's dims
 * (one of them the node's output, the other an input), checked against dy. */
static kn_status *conv_grad_geom(const kn_node *node, const char *op, const kn_tensor *dy, const int64_t *xd,
                                 const int64_t *wd, int nd, int64_t *G, kn_conv_geom *g) {
    char bd[KN_DESC_LEN];
    int nsp = nd - 2;
    if (nd < 3 || nd > KN_MAX_DIMS || dy->ndim != nd)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: dy %s must have the rank of X and W (>= 3)", op, DESC(dy, bd));
    *G = KN_PARAMS(node, conv)->group;
    if (*G < 1 || xd[1] != wd[1] * *G || wd[0] % *G)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: X channels %lld and W [%lld, %lld, ...] do not fit group %lld",
                        op, (long long)xd[1], (long long)wd[0], (long long)wd[1], (long long)*G);
    KN_TRY(kn_conv_geometry(node, op, nsp, xd + 2, wd + 2, false, g));
    bool ok = dy->dims[0] == xd[0] && dy->dims[1] == wd[0];
    for (int i = 0; ok && i < nsp; i++) ok = dy->dims[2 + i] == g->out[i];
    if (!ok) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: dy %s does not fit the convolution", op, DESC(dy, bd));
    return NULL;
}

/* The float32 work of ConvGradX and ConvGradW: one GEMM (and col2im or im2col) per unit, a unit
 * being an (image, group) for dX (disjoint slices of dX) and a group for dW (its slice of dW,
 * summed over the images by the GEMM's beta). As in the forward, many small units (depthwise,
 * small images) run one per thread; otherwise each GEMM is threaded inside. */
typedef struct conv_grad_job {
    const float *dy, *src; /* src: W for dX, X for dW */
    float *dst;            /* dX or dW, zeroed */
    int64_t N, G, Cg, Mg;
    win wn;
    bool direct; /* dW of a 1x1 stride-1 unpadded kernel: X is its own column matrix */
    float *cols; /* Cg * k * positions floats per slot */
    int64_t slots;
    kn_threadpool *pool;
} conv_grad_job;

static void conv_grad_x_slot(void *ctx, int64_t begin, int64_t end) {
    const conv_grad_job *j = ctx;
    const win *w = &j->wn;
    int64_t K = j->Cg * w->k_n, M = j->Mg * j->G, C = j->Cg * j->G;
    for (int64_t s = begin; s < end; s++)
        for (int64_t item = s; item < j->N * j->G; item += j->slots) {
            int64_t n = item / j->G, gi = item % j->G;
            float *col = j->cols + s * K * w->col_n;
            /* col (Cg*k x out) = W_g^T (Cg*k x Mg) * dy_g (Mg x out) */
            kn_sgemm(j->pool, true, false, K, w->col_n, j->Mg, 1.0f, j->src + gi * j->Mg * K, K,
                     j->dy + (n * M + gi * j->Mg) * w->col_n, w->col_n, 0.0f, col, w->col_n);
            col2im(col, j->Cg, w, j->dst + (n * C + gi * j->Cg) * w->img_n);
        }
}

static void conv_grad_w_slot(void *ctx, int64_t begin, int64_t end) {
    const conv_grad_job *j = ctx;
    const win *w = &j->wn;
    int64_t K = j->Cg * w->k_n, M = j->Mg * j->G, C = j->Cg * j->G;
    int64_t wl = w->cols[w->nsp - 1], nouter = wl ? w->col_n / wl : 0;
    for (int64_t s = begin; s < end; s++)
        for (int64_t gi = s; gi < j->G; gi += j->slots)
            for (int64_t n = 0; n < j->N; n++) {
                const float *xg = j->src + (n * C + gi * j->Cg) * w->img_n;
                float *col = j->direct ? NULL : j->cols + s * K * w->col_n;
                if (col) im2col(xg, j->Cg, w, 0, nouter, col, 0);
                /* dW_g (Mg x Cg*k) += dy_g (Mg x out) * col^T (out x Cg*k) */
                kn_sgemm(j->pool, false, true, j->Mg, K, w->col_n, 1.0f, j->dy + (n * M + gi * j->Mg) * w->col_n,
                         w->col_n, col ? col : xg, w->col_n, 1.0f, j->dst + gi * j->Mg * K, K);
            }
}

static kn_status *conv_grad_run(kn_exec_ctx *ctx, conv_grad_job *j, int64_t units, kn_range_fn fn) {
    const win *w = &j->wn;
    int64_t T = ctx->pool ? kn_threadpool_size(ctx->pool) : 1, K = j->Cg * w->k_n;
    double unit_flops = 2.0 * (double)j->Mg * (double)w->col_n * (double)K * (units == j->G ? (double)j->N : 1.0);
    bool per_unit = T > 1 && units >= 2 * T && unit_flops < 2e7;
    j->slots = per_unit ? T : 1;
    j->pool = per_unit ? NULL : ctx->pool;
    if (!j->direct) {
        size_t bytes = sizeof(float) * (size_t)(K * w->col_n) * (size_t)j->slots;
        j->cols = kn_scratch_alloc(ctx, bytes ? bytes : 1);
        if (!j->cols) return KN_OOM(bytes);
    }
    if (per_unit) kn_parallel_for(ctx->pool, j->slots, 1, fn, j);
    else fn(j, 0, 1);
    return NULL;
}

/* The float64 adjoints of Conv by the direct sum over every (image, output channel, output
 * position, kernel tap) that lands inside the image: into dX (x += dy * w) or into dW
 * (w += dy * x). dst is zeroed first. */
static void conv_grad_f64(const win *wn, int64_t N, int64_t M, int64_t C, int64_t Cg, int64_t Mg, const double *d,
                          const double *src, double *dst, int64_t n_dst, bool into_x) {
    memset(dst, 0, sizeof(double) * (size_t)n_dst);
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < M; m++) {
            int64_t grp = m / Mg;
            for (int64_t o = 0; o < wn->col_n; o++) {
                double gv = d[(n * M + m) * wn->col_n + o];
                int64_t opos[KN_MAX_DIMS], rem = o;
                for (int dd = wn->nsp - 1; dd >= 0; dd--) {
                    opos[dd] = rem % wn->cols[dd];
                    rem /= wn->cols[dd];
                }
                for (int64_t kk = 0; kk < wn->k_n; kk++) {
                    int64_t kpos[KN_MAX_DIMS], off = 0;
                    kpos_of(wn, kk, kpos);
                    bool ok = true;
                    for (int dd = 0; dd < wn->nsp && ok; dd++) {
                        int64_t ip = opos[dd] * wn->s[dd] - wn->pb[dd] + kpos[dd] * wn->d[dd];
                        ok = ip >= 0 && ip < wn->img[dd];
                        off = off * wn->img[dd] + ip;
                    }
                    if (!ok) continue;
                    for (int64_t c = 0; c < Cg; c++) {
                        int64_t xi = (n * C + grp * Cg + c) * wn->img_n + off, wi = (m * Cg + c) * wn->k_n + kk;
                        if (into_x) dst[xi] += gv * src[wi];
                        else dst[wi] += gv * src[xi];
                    }
                }
            }
        }
}

/* dX = the adjoint of Conv in X: per (image, group) col = W_g^T dy_g, folded back by col2im (the
 * ConvTranspose computation); float64 by the direct scatter of the same sum. */
kn_status *kn_cpu_KnConvGradX(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                              kn_tensor *const *out, int n_out) {
    const kn_tensor *dy = in[0], *w = in[1];
    kn_tensor *dx = out[0];
    if (!conv_float_dtype(dy->dtype)) return kn_err_dtype(node, dy);
    if (w->dtype != dy->dtype) return kn_err_dtype(node, w);
    if (w->ndim != dx->ndim)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ConvGradX: W has rank %d, X %d", w->ndim, dx->ndim);
    int64_t G;
    kn_conv_geom g;
    KN_TRY(conv_grad_geom(node, "ConvGradX", dy, dx->dims, w->dims, dx->ndim, &G, &g));
    int64_t N = dx->dims[0], C = dx->dims[1], M = w->dims[0], Cg = C / G, Mg = M / G, nx = kn_numel(dx);
    win wn = win_from_conv(&g);
    if (nx == 0) return NULL;
    if (dy->dtype == KN_F64) {
        conv_grad_f64(&wn, N, M, C, Cg, Mg, dy->data, w->data, dx->data, nx, true);
        return NULL;
    }
    float *df = to_f32(ctx, dy), *wf = to_f32(ctx, w);
    float *xf = dx->dtype == KN_F32 ? dx->data : kn_scratch_alloc(ctx, sizeof(float) * (size_t)nx);
    if (!df || !wf || !xf) return KN_OOM(sizeof(float) * (size_t)nx);
    memset(xf, 0, sizeof(float) * (size_t)nx);
    conv_grad_job j = {df, wf, xf, N, G, Cg, Mg, wn, false, NULL, 1, ctx->pool};
    KN_TRY(conv_grad_run(ctx, &j, N * G, conv_grad_x_slot));
    from_f32(dx, xf);
    return NULL;
}

/* dW = sum over images of dy_g times the unfolded X_g (im2col; X itself for a 1x1 stride-1
 * unpadded kernel), accumulated by the GEMM's beta; float64 by the direct sum. */
kn_status *kn_cpu_KnConvGradW(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                              kn_tensor *const *out, int n_out) {
    const kn_tensor *dy = in[0], *x = in[1];
    kn_tensor *dw = out[0];
    if (!conv_float_dtype(dy->dtype)) return kn_err_dtype(node, dy);
    if (x->dtype != dy->dtype) return kn_err_dtype(node, x);
    if (x->ndim != dw->ndim)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ConvGradW: X has rank %d, W %d", x->ndim, dw->ndim);
    int64_t G;
    kn_conv_geom g;
    KN_TRY(conv_grad_geom(node, "ConvGradW", dy, x->dims, dw->dims, x->ndim, &G, &g));
    int64_t N = x->dims[0], C = x->dims[1], M = dw->dims[0], Cg = C / G, Mg = M / G, nw = kn_numel(dw);
    win wn = win_from_conv(&g);
    if (nw == 0) return NULL;
    if (dy->dtype == KN_F64) {
        conv_grad_f64(&wn, N, M, C, Cg, Mg, dy->data, x->data, dw->data, nw, false);
        return NULL;
    }
    float *df = to_f32(ctx, dy), *xf = to_f32(ctx, x);
    float *wf = dw->dtype == KN_F32 ? dw->data : kn_scratch_alloc(ctx, sizeof(float) * (size_t)nw);
    if (!df || !xf || !wf) return KN_OOM(sizeof(float) * (size_t)nw);
    memset(wf, 0, sizeof(float) * (size_t)nw);
    conv_grad_job j = {df, xf, wf, N, G, Cg, Mg, wn, true, NULL, 1, ctx->pool};
    for (int i = 0; i < g.nsp; i++)
        if (g.k[i] != 1 || g.stride[i] != 1 || g.pad_b[i] || g.pad_e[i]) j.direct = false;
    KN_TRY(conv_grad_run(ctx, &j, G, conv_grad_w_slot));
    from_f32(dw, wf);
    return NULL;
}

/* ---------------------------------------------------------------- direct convolution row, scalar */

void kn_conv_dw_row_scalar(float *out, const float *const *src, const float *wt, int ntaps, int64_t n, float bias,
                           int act, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) {
        float s = bias;
        for (int t = 0; t < ntaps; t++) s += wt[t] * src[t][i];
        if (act == KN_CONV_DW_CLAMP) s = s < lo ? lo : s > hi ? hi : s;
        else if (act == KN_CONV_DW_SILU) s = s / (1.0f + expf(-s));
        out[i] = s;
    }
}

void kn_conv_dw_plane_scalar(float *out, const kn_conv_dw_plane *p, const float *wt, float bias, int act, float lo,
                             float hi) {
    for (int64_t oh = 0; oh < p->OH; oh++)
        for (int64_t ow = 0; ow < p->OW; ow++) {
            float acc = bias;
            for (int64_t c = 0; c < p->Cg; c++)
                for (int64_t kh = 0; kh < p->KH; kh++) {
                    int64_t ih = oh * p->sh - p->ph + kh * p->dh;
                    if (ih < 0 || ih >= p->H) continue;
                    for (int64_t kw = 0; kw < p->KW; kw++) {
                        int64_t iw = ow * p->sw - p->pw + kw * p->dw;
                        float v = iw >= 0 && iw < p->Wd ? p->x[(c * p->H + ih) * p->Wd + iw] : 0.0f;
                        acc += wt[(c * p->KH + kh) * p->KW + kw] * v;
                    }
                }
            out[oh * p->OW + ow] = dw_act_scalar(acc, act, lo, hi);
        }
}

void kn_conv_bias_act_scalar(float *r, int64_t n, float bias, int act, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) {
        float v = r[i] + bias;
        if (act == KN_CONV_DW_CLAMP) v = v < lo ? lo : v > hi ? hi : v;
        else if (act == KN_CONV_DW_SILU) v = v / (1.0f + expf(-v));
        r[i] = v;
    }
}
