/* CPU kernels for resampling and box ops: Resize/Upsample (separable, one axis at a time in
 * double precision, following the ONNX reference's coordinate and coefficient rules),
 * GridSample (N-d), AffineGrid, RoiAlign and NonMaxSuppression. */
#include "graph/ops.h"
#include "graph/op_helpers.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAXR KN_MAX_DIMS
#define MAX_TAPS 64 /* most taps one output coordinate reads along an axis */


/* ---------------- Resize ---------------- */

typedef enum {
    CT_HALF_PIXEL = KN_COORD_HALF_PIXEL,
    CT_HALF_PIXEL_SYM = KN_COORD_HALF_PIXEL_SYM,
    CT_PYTORCH_HALF_PIXEL = KN_COORD_PYTORCH_HALF_PIXEL,
    CT_ALIGN_CORNERS = KN_COORD_ALIGN_CORNERS,
    CT_ASYMMETRIC = KN_COORD_ASYMMETRIC,
    CT_TF_CROP = KN_COORD_TF_CROP
} coord_mode;
typedef enum {
    NM_ROUND_FLOOR = KN_NEAREST_ROUND_FLOOR,
    NM_ROUND_CEIL = KN_NEAREST_ROUND_CEIL,
    NM_FLOOR = KN_NEAREST_FLOOR,
    NM_CEIL = KN_NEAREST_CEIL,
    NM_SIMPLE = KN_NEAREST_SIMPLE
} nearest_mode;
typedef enum { RM_NEAREST = KN_RESIZE_NEAREST, RM_LINEAR = KN_RESIZE_LINEAR, RM_CUBIC = KN_RESIZE_CUBIC } resize_mode;

typedef struct resize_opts {
    resize_mode mode;
    coord_mode ct;
    nearest_mode nm;
    double a; /* cubic coefficient */
    bool exclude_outside, antialias;
    double extrapolation;
} resize_opts;

/* From the node's params (graph/infer_shape_ops.c decodes them, Upsample's and Resize-10's
 * coordinate rules included; unknown modes fail at load). */
static kn_status *resize_opts_get(const kn_node *node, resize_opts *o) {
    const kn_params_resize *p = KN_PARAMS(node, resize);
    o->mode = (resize_mode)p->mode;
    o->a = p->cubic_coeff_a;
    o->exclude_outside = p->exclude_outside;
    o->antialias = p->antialias;
    o->extrapolation = p->extrapolation_value;
    o->ct = (coord_mode)p->coord;
    o->nm = (nearest_mode)p->nearest;
    return NULL;
}

/* Source coordinate of output index y along one axis; *extrap set when tf_crop_and_resize
 * lands outside the input. */
static double src_coord(const resize_opts *o, double y, double scale, int64_t in_w, int64_t out_w_int, double roi0,
                        double roi1, bool *extrap) {
    double out_w = scale * (double)in_w;
    *extrap = false;
    switch (o->ct) {
    case CT_ALIGN_CORNERS: return out_w == 1 ? 0.0 : y * (double)(in_w - 1) / (out_w - 1);
    case CT_ASYMMETRIC: return y / scale;
    case CT_TF_CROP: {
        double x =
            out_w == 1 ? (roi1 - roi0) * (double)(in_w - 1) / 2 : y * (roi1 - roi0) * (double)(in_w - 1) / (out_w - 1);
        x += roi0 * (double)(in_w - 1);
        *extrap = !(x >= 0 && x <= (double)(in_w - 1)); /* NaN roi included */
        return x;
    }
    case CT_PYTORCH_HALF_PIXEL: return out_w == 1 ? -0.5 : (y + 0.5) / scale - 0.5;
    case CT_HALF_PIXEL_SYM: {
        double adj = (double)out_w_int / out_w, center = (double)in_w / 2, off = center * (1 - adj);
        return off + (y + 0.5) / scale - 0.5;
    }
    default: return (y + 0.5) / scale - 0.5;
    }
}

static double cubic_w(double x, double A) {
    x = fabs(x);
    if (x <= 1) return ((A + 2) * x - (A + 3)) * x * x + 1;
    if (x < 2) return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
    return 0;
}

/* First tap offset of an antialiased kernel, floor(v) + 1, bounded so tiny scales cannot
 * overflow the int conversion (the tap count is capped at MAX_TAPS anyway). */
static int aa_start(double v) {
    double f = floor(v) + 1;
    return f < -(double)MAX_TAPS ? -MAX_TAPS : (int)f;
}

/* Taps for one output coordinate: n indices (already clamped to the input: edge padding) and
 * weights. Returns n (<= cap). */
static int resize_taps(const resize_opts *o, double x, double scale, int64_t in_w, int64_t *idx, double *w, int cap) {
    int64_t xi = (int64_t)floor(x);
    double ratio = x - (double)xi;
    if (ratio == 0) {
        ratio = 1;
        xi -= 1;
    } /* the reference prefers the left pixel: ratio in (0, 1] */
    int start, n;
    if (o->mode == RM_NEAREST) {
        bool right;
        if (ratio == 1) right = true;
        else switch (o->nm) {
            case NM_ROUND_FLOOR: right = ratio > 0.5; break;
            case NM_ROUND_CEIL: right = ratio >= 0.5; break;
            case NM_FLOOR: right = false; break;
            case NM_CEIL: right = true; break;
            default: right = scale < 1; break;
            }
        int64_t i = xi + (right ? 1 : 0);
        idx[0] = i < 0 ? 0 : i >= in_w ? in_w - 1 : i;
        w[0] = 1;
        return 1;
    }
    double s = o->antialias ? fmin(scale, 1.0) : 1.0;
    if (o->mode == RM_LINEAR) {
        start = o->antialias ? aa_start(-1 / s) : 0;
        n = 2 - 2 * start;
    } else {
        start = o->antialias ? aa_start(-2 / s) : -1;
        n = 2 - 2 * start;
    }
    if (n > cap) { /* extreme antialiased downscales: keep the central taps (weights are renormalised) */
        n = cap;
        start = 1 - n / 2;
    }
    double sum = 0;
    for (int t = 0; t < n; t++) {
        int i = start + t;
        double c;
        if (o->mode == RM_LINEAR)
            c = o->antialias ? fmax(0.0, 1 - fabs(((double)i - ratio) * s)) : (t == 0 ? 1 - ratio : ratio);
        else c = cubic_w(((double)i - ratio) * s, o->a);
        int64_t src = xi + i;
        if (o->exclude_outside && (src < 0 || src >= in_w)) c = 0;
        idx[t] = src < 0 ? 0 : src >= in_w ? in_w - 1 : src;
        w[t] = c;
        sum += c;
    }
    if (o->antialias || o->exclude_outside)
        for (int t = 0; t < n; t++) w[t] /= sum;
    return n;
}


/* Taps per output coordinate along an axis with this scale (the same for every coordinate). */
static int taps_for(const resize_opts *o, double scale) {
    if (o->mode == RM_NEAREST) return 1;
    double s = o->antialias ? fmin(scale, 1.0) : 1.0;
    int start = o->mode == RM_LINEAR ? (o->antialias ? aa_start(-1 / s) : 0) : (o->antialias ? aa_start(-2 / s) : -1);
    int n = 2 - 2 * start;
    return n < MAX_TAPS ? n : MAX_TAPS;
}

typedef struct axis_job {
    const resize_opts *o;
    const double *src;
    double *dst;
    int64_t in_w, out_w, inner;
    const int64_t *idx;
    const double *w;
    const int *nt;
    int stride; /* taps stored per output coordinate */
} axis_job;

static void axis_rows(void *arg, int64_t begin, int64_t end) {
    const axis_job *j = arg;
    for (int64_t row = begin; row < end; row++) {
        int64_t b = row / j->out_w, y = row % j->out_w;
        double *d = j->dst + row * j->inner;
        if (j->nt[y] == 0) {
            for (int64_t k = 0; k < j->inner; k++) d[k] = j->o->extrapolation;
            continue;
        }
        for (int64_t k = 0; k < j->inner; k++) d[k] = 0;
        for (int t = 0; t < j->nt[y]; t++) {
            double wt = j->w[y * j->stride + t];
            if (wt == 0) continue;
            const double *s = j->src + (b * j->in_w + j->idx[y * j->stride + t]) * j->inner;
            for (int64_t k = 0; k < j->inner; k++) d[k] += wt * s[k];
        }
    }
}

/* One axis: dst[outer, o, inner] = sum_t w[o,t] * src[outer, idx[o,t], inner]. */
static kn_status *resize_axis(kn_exec_ctx *ctx, const resize_opts *o, const double *src, double *dst, int64_t outer,
                              int64_t in_w, int64_t out_w, int64_t inner, double scale, double roi0, double roi1) {
    int cap = taps_for(o, scale);
    size_t rows = (size_t)(out_w ? out_w : 1);
    int64_t *idx = malloc(rows * (size_t)cap * sizeof(int64_t));
    double *w = malloc(rows * (size_t)cap * sizeof(double));
    int *nt = malloc(rows * sizeof(int));
    if (!idx || !w || !nt) {
        free(idx);
        free(w);
        free(nt);
        return KN_OOM(rows * (size_t)cap * 16);
    }
    for (int64_t y = 0; y < out_w; y++) {
        bool ex;
        double x = src_coord(o, (double)y, scale, in_w, out_w, roi0, roi1, &ex);
        nt[y] = ex ? 0 : resize_taps(o, x, scale, in_w, idx + y * cap, w + y * cap, cap);
    }
    axis_job j = {o, src, dst, in_w, out_w, inner, idx, w, nt, cap};
    int64_t grain = inner >= 256 ? 1 : 256 / inner;
    kn_parallel_for(ctx ? ctx->pool : NULL, outer * out_w, grain, axis_rows, &j);
    free(idx);
    free(w);
    free(nt);
    return NULL;
}

static void store_value(kn_tensor *y, int64_t i, double v) {
    if (kn_dtype_is_int(y->dtype)) {
        double r = nearbyint(v);
        kn_set_i64(y, i, (int64_t)r);
        /* saturate like the reference: clamp through the type's own range */
        if (y->dtype == KN_U8) ((uint8_t *)y->data)[i] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
        else if (y->dtype == KN_I8) ((int8_t *)y->data)[i] = (int8_t)(r < -128 ? -128 : r > 127 ? 127 : r);
    } else kn_set_f64(y, i, v);
}

/* Nearest needs no arithmetic on values: each output element copies one input element, so
 * every dtype is exact (int64 beyond 2^53 included). */
static kn_status *resize_nearest(const resize_opts *o, const kn_tensor *x, kn_tensor *y, const double *scales,
                                 const double *roi) {
    int r = x->ndim;
    int64_t *src[MAXR], xs[MAXR], s = 1;
    for (int k = r - 1; k >= 0; k--) {
        xs[k] = s;
        s *= x->dims[k];
    }
    for (int k = 0; k < r; k++) {
        src[k] = malloc((size_t)y->dims[k] * sizeof(int64_t));
        if (!src[k]) {
            for (int j = 0; j < k; j++) free(src[j]);
            return KN_OOM(y->dims[k] * 8);
        }
        bool identity = fabs(scales[k] - 1.0) <= 1e-9 && y->dims[k] == x->dims[k];
        for (int64_t i = 0; i < y->dims[k]; i++) {
            int64_t ix = i;
            double w;
            bool ex;
            if (!identity)
                resize_taps(o, src_coord(o, (double)i, scales[k], x->dims[k], y->dims[k], roi[k], roi[r + k], &ex),
                            scales[k], x->dims[k], &ix, &w, 1);
            src[k][i] = ix * xs[k];
        }
    }
    size_t es = kn_dtype_size(x->dtype);
    int64_t ny = kn_numel(y), inner = y->dims[r - 1], idx[MAXR] = {0};
    const char *xb = x->data;
    char *yb = y->data;
    for (int64_t row = 0; row < ny / inner; row++) {
        int64_t base = 0;
        for (int k = 0; k < r - 1; k++) base += src[k][idx[k]];
        char *d = yb + row * inner * (int64_t)es;
        switch (es) {
        case 4:
            for (int64_t i = 0; i < inner; i++) ((uint32_t *)d)[i] = ((const uint32_t *)xb)[base + src[r - 1][i]];
            break;
        case 2:
            for (int64_t i = 0; i < inner; i++) ((uint16_t *)d)[i] = ((const uint16_t *)xb)[base + src[r - 1][i]];
            break;
        case 1:
            for (int64_t i = 0; i < inner; i++) d[i] = xb[base + src[r - 1][i]];
            break;
        default:
            for (int64_t i = 0; i < inner; i++)
                memcpy(d + i * (int64_t)es, xb + (base + src[r - 1][i]) * (int64_t)es, es);
        }
        for (int k = r - 2; k >= 0; k--) {
            if (++idx[k] < y->dims[k]) break;
            idx[k] = 0;
        }
    }
    for (int k = 0; k < r; k++) free(src[k]);
    return NULL;
}

static kn_status *resize_run(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                             kn_tensor *y) {
    const kn_tensor *x = in[0];
    if (!kn_dtype_is_float(x->dtype) && !kn_dtype_is_int(x->dtype)) return kn_err_dtype(node, x);
    KN_CHECK(x->ndim >= 1, KN_ERR_INVALID_ARGUMENT, "%s: input must have rank >= 1", node->op_type);
    resize_opts o;
    KN_TRY(resize_opts_get(node, &o));
    double scales[MAXR], roi[2 * MAXR];
    int64_t od[MAXR];
    KN_TRY(kn_shapeops_resize_params(node, in, n_in, scales, od, roi));
    int r = x->ndim;
    for (int k = 0; k < r; k++)
        if (od[k] != y->dims[k])
            return kn_error(KN_ERR_RUNTIME, "%s: output dim %d is %lld, expected %lld", node->op_type, k,
                            (long long)y->dims[k], (long long)od[k]);
    int64_t ny = kn_numel(y), nx = kn_numel(x);
    if (ny == 0) return NULL;
    char desc[KN_DESC_LEN];
    KN_CHECK(nx > 0, KN_ERR_INVALID_ARGUMENT, "%s: cannot resize empty %s to a non-empty output", node->op_type,
             kn_tensor_desc(x, desc, sizeof desc));
    if (o.mode == RM_NEAREST && o.ct != CT_TF_CROP) return resize_nearest(&o, x, y, scales, roi);
    int64_t cur[MAXR];
    memcpy(cur, x->dims, sizeof cur);
    int64_t cap = nx > ny ? nx : ny;
    /* every intermediate is at most max(|x|, |y|)... except when one axis grows and another
     * shrinks, so size the buffers for the largest intermediate */
    {
        int64_t t[MAXR], best = nx;
        memcpy(t, x->dims, sizeof t);
        for (int k = 0; k < r; k++) {
            t[k] = od[k];
            int64_t p = 1;
            for (int j = 0; j < r; j++) p *= t[j];
            if (p > best) best = p;
        }
        if (best > cap) cap = best;
    }
    KN_CHECK(cap <= KN_MAX_NUMEL, KN_ERR_INVALID_ARGUMENT, "%s: intermediate of %lld elements is too large",
             node->op_type, (long long)cap);
    double *a = malloc((size_t)cap * sizeof(double)), *b = malloc((size_t)cap * sizeof(double));
    if (!a || !b) {
        free(a);
        free(b);
        return KN_OOM(cap * 16);
    }
    for (int64_t i = 0; i < nx; i++) a[i] = kn_get_f64(x, i);
    kn_status *st = NULL;
    for (int k = 0; k < r && !st; k++) {
        bool identity = fabs(scales[k] - 1.0) <= 1e-9 && od[k] == cur[k] &&
            (o.ct != CT_TF_CROP || (fabs(roi[k]) <= 1e-9 && fabs(roi[r + k] - 1) <= 1e-9));
        if (identity) continue;
        int64_t outer = 1, inner = 1;
        for (int j = 0; j < k; j++) outer *= cur[j];
        for (int j = k + 1; j < r; j++) inner *= cur[j];
        st = resize_axis(ctx, &o, a, b, outer, cur[k], od[k], inner, scales[k], roi[k], roi[r + k]);
        cur[k] = od[k];
        double *t = a;
        a = b;
        b = t;
    }
    if (!st)
        for (int64_t i = 0; i < ny; i++) store_value(y, i, a[i]);
    free(a);
    free(b);
    return st;
}

kn_status *kn_cpu_Resize(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    return resize_run(ctx, node, in, n_in, out[0]);
}

kn_status *kn_cpu_Upsample(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                           kn_tensor *const *out, int n_out) {
    return resize_run(ctx, node, in, n_in, out[0]);
}

/* ---------------- GridSample ---------------- */

/* Reflect by the near border until inside [lo, hi]; in doubles throughout so huge grid values
 * cannot overflow an integer conversion. */
static double gs_reflect(double x, double lo, double hi) {
    double rng = hi - lo;
    if (rng <= 0) return lo;
    if (x < lo) {
        double dx = lo - x, n = floor(dx / rng), r = dx - n * rng;
        return fmod(n, 2.0) == 0 ? lo + r : hi - r;
    }
    if (x > hi) {
        double dx = x - hi, n = floor(dx / rng), r = dx - n * rng;
        return fmod(n, 2.0) == 0 ? hi - r : lo + r;
    }
    return x;
}

/* Pixel index after padding; -1 means zero. */
static int64_t gs_pixel(int64_t i, int64_t d, int pad, double lo, double hi) {
    if (d <= 0) return -1; /* empty input: every sample reads padding zero */
    if (pad == 0) return i >= 0 && i < d ? i : -1;
    if (pad == 1) return i < 0 ? 0 : i >= d ? d - 1 : i;
    int64_t j = (int64_t)gs_reflect((double)i, lo, hi);
    return j < 0 ? 0 : j >= d ? d - 1 : j;
}

kn_status *kn_cpu_GridSample(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                             kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *g = in[1];
    kn_tensor *y = out[0];
    if (!kn_dtype_is_float(x->dtype)) return kn_err_dtype(node, x);
    if (!kn_dtype_is_float(g->dtype)) return kn_err_dtype(node, g);
    /* unknown modes fail at load */
    int mode = KN_PARAMS(node, grid)->mode, pad = KN_PARAMS(node, grid)->padding;
    bool ac = KN_PARAMS(node, grid)->align_corners;
    int sd = x->ndim - 2;
    KN_CHECK(sd >= 1 && sd <= 3, KN_ERR_UNSUPPORTED, "GridSample: %d spatial dims", sd);
    int64_t N = x->dims[0], C = x->dims[1], in_sp = 1, out_sp = 1;
    const int64_t *dims = x->dims + 2;
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    KN_CHECK(g->ndim == x->ndim && g->dims[0] == N && g->dims[g->ndim - 1] == sd, KN_ERR_INVALID_ARGUMENT,
             "GridSample: grid %s does not match input %s", kn_tensor_desc(g, b2, sizeof b2),
             kn_tensor_desc(x, b1, sizeof b1));
    for (int k = 0; k < sd; k++)
        KN_CHECK(g->dims[1 + k] == y->dims[2 + k], KN_ERR_RUNTIME, "GridSample: output does not match grid %s",
                 kn_tensor_desc(g, b2, sizeof b2));
    for (int k = 0; k < sd; k++) {
        in_sp *= dims[k];
        out_sp *= y->dims[2 + k];
    }
    double lo[3], hi[3];
    for (int k = 0; k < sd; k++) {
        lo[k] = ac ? 0.0 : -0.5;
        hi[k] = ac ? (double)dims[k] - 1 : (double)dims[k] - 0.5;
    }
    int ntap = mode == 0 ? 1 : mode == 1 ? 2 : 4;
    for (int64_t n = 0; n < N; n++)
        for (int64_t p = 0; p < out_sp; p++) {
            /* grid holds (x, y[, z]) = innermost-first; coordinate k is spatial dim k */
            int64_t tidx[3][4];
            double tw[3][4];
            for (int k = 0; k < sd; k++) {
                double nv = kn_get_f64(g, (n * out_sp + p) * sd + (sd - 1 - k));
                float xf = ac ? (float)((nv + 1) / 2.0 * (double)(dims[k] - 1))
                              : (float)(((nv + 1) * (double)dims[k] - 1) / 2.0);
                double xv = xf;
                if (!isfinite(xv)) xv = pad == 0 ? lo[k] - 4 : 0; /* NaN/inf grid: zero, or the first pixel */
                if (mode == 0) xv = nearbyint(xv);
                if (xv < lo[k] || xv > hi[k]) {
                    if (pad == 1) xv = xv < 0 ? 0 : xv > (double)(dims[k] - 1) ? (double)(dims[k] - 1) : xv;
                    else if (pad == 2) xv = (float)gs_reflect(xv, lo[k], hi[k]);
                    else if (fabs(xv) > 1e15) xv = lo[k] - 4; /* far outside: all taps are zero padding */
                }
                if (mode == 0) {
                    tidx[k][0] = gs_pixel((int64_t)xv, dims[k], pad, lo[k], hi[k]);
                    tw[k][0] = 1;
                    continue;
                }
                int64_t x0 = (int64_t)floor(xv);
                double t = xv - (double)x0;
                if (mode == 1) {
                    tw[k][0] = 1 - t;
                    tw[k][1] = t;
                    for (int q = 0; q < 2; q++) tidx[k][q] = gs_pixel(x0 + q, dims[k], pad, lo[k], hi[k]);
                } else {
                    for (int q = 0; q < 4; q++) {
                        tw[k][q] = cubic_w(t - (double)(q - 1), -0.75);
                        tidx[k][q] = gs_pixel(x0 - 1 + q, dims[k], pad, lo[k], hi[k]);
                    }
                }
            }
            int combos = 1;
            for (int k = 0; k < sd; k++) combos *= ntap;
            for (int64_t c = 0; c < C; c++) {
                double acc = 0;
                int64_t base = (n * C + c) * in_sp;
                for (int cb = 0; cb < combos; cb++) {
                    int rem = cb;
                    double w = 1;
                    int64_t off = 0;
                    bool zero = false;
                    for (int k = sd - 1; k >= 0; k--) {
                        int q = rem % ntap;
                        rem /= ntap;
                        if (tidx[k][q] < 0) {
                            zero = true;
                            break;
                        }
                        w *= tw[k][q];
                        int64_t stride = 1;
                        for (int j = k + 1; j < sd; j++) stride *= dims[j];
                        off += tidx[k][q] * stride;
                    }
                    if (!zero) acc += w * kn_get_f64(x, base + off);
                }
                kn_set_f64(y, (n * C + c) * out_sp + p, acc);
            }
        }
    return NULL;
}

/* ---------------- AffineGrid ---------------- */

kn_status *kn_cpu_AffineGrid(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                             kn_tensor *const *out, int n_out) {
    const kn_tensor *th = in[0];
    kn_tensor *y = out[0];
    if (!kn_dtype_is_float(th->dtype)) return kn_err_dtype(node, th);
    bool ac = KN_PARAMS(node, grid)->align_corners;
    int sd = y->ndim - 2;
    int64_t N = y->dims[0];
    char b[KN_DESC_LEN];
    KN_CHECK((sd == 2 || sd == 3) && th->ndim == 3 && th->dims[0] == N && th->dims[1] == sd && th->dims[2] == sd + 1,
             KN_ERR_INVALID_ARGUMENT, "AffineGrid: theta %s does not match %d spatial dims",
             kn_tensor_desc(th, b, sizeof b), sd);
    int64_t sp = 1;
    for (int k = 0; k < sd; k++) sp *= y->dims[1 + k];
    for (int64_t n = 0; n < N; n++)
        for (int64_t p = 0; p < sp; p++) {
            /* homogeneous base coordinate, innermost axis first: (x, y[, z], 1) */
            double base[4];
            int64_t r = p;
            for (int k = sd - 1; k >= 0; k--) {
                int64_t len = y->dims[1 + k], i = r % len;
                r /= len;
                double v = ac ? (len > 1 ? -1.0 + (double)i * (2.0 / (double)(len - 1)) : -1.0)
                              : -1.0 + 1.0 / (double)len + (double)i * (2.0 / (double)len);
                base[sd - 1 - k] = v;
            }
            base[sd] = 1.0;
            for (int j = 0; j < sd; j++) {
                double acc = 0;
                for (int q = 0; q <= sd; q++) acc += kn_get_f64(th, (n * sd + j) * (sd + 1) + q) * base[q];
                kn_set_f64(y, (n * sp + p) * sd + j, acc);
            }
        }
    return NULL;
}

/* ---------------- RoiAlign ---------------- */

kn_status *kn_cpu_RoiAlign(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                           kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *rois = in[1], *bi = in[2];
    kn_tensor *y = out[0];
    if (!kn_dtype_is_float(x->dtype)) return kn_err_dtype(node, x);
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    KN_CHECK(rois->ndim == 2 && rois->dims[1] == 4 && kn_numel(bi) == rois->dims[0], KN_ERR_INVALID_ARGUMENT,
             "RoiAlign: rois %s / batch_indices %s malformed", kn_tensor_desc(rois, b1, sizeof b1),
             kn_tensor_desc(bi, b2, sizeof b2));
    const kn_params_roi_align *p = KN_PARAMS(node, roi_align);
    bool avg = p->avg; /* an unknown mode fails at load */
    bool half = p->half_pixel;
    double scale = p->spatial_scale;
    int64_t sr = p->sampling_ratio;
    int64_t R = rois->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3], PH = y->dims[2], PW = y->dims[3];
    KN_CHECK(kn_numel(y) == 0 || (H > 0 && W > 0), KN_ERR_INVALID_ARGUMENT, "RoiAlign: empty feature map %s",
             kn_tensor_desc(x, b1, sizeof b1));
    for (int64_t r = 0; r < R; r++) {
        int64_t b = kn_get_i64(bi, r);
        KN_CHECK(b >= 0 && b < x->dims[0], KN_ERR_RUNTIME, "RoiAlign: batch index %lld out of range for %s",
                 (long long)b, kn_tensor_desc(x, b1, sizeof b1));
        double off = half ? 0.5 : 0.0;
        double sw = kn_get_f64(rois, r * 4 + 0) * scale - off, sh = kn_get_f64(rois, r * 4 + 1) * scale - off;
        double ew = kn_get_f64(rois, r * 4 + 2) * scale - off, eh = kn_get_f64(rois, r * 4 + 3) * scale - off;
        double rw = ew - sw, rh = eh - sh;
        if (!half) {
            rw = fmax(rw, 1.0);
            rh = fmax(rh, 1.0);
        }
        double bh = rh / (double)PH, bw = rw / (double)PW;
        double ghd = sr > 0 ? (double)sr : ceil(rh / (double)PH), gwd = sr > 0 ? (double)sr : ceil(rw / (double)PW);
        if (!(ghd <= 65536 && gwd <= 65536 && isfinite(sh) && isfinite(sw) && isfinite(eh) && isfinite(ew)))
            return kn_error(KN_ERR_INVALID_ARGUMENT, "RoiAlign: roi %lld gives a non-finite or too large sampling grid",
                            (long long)r);
        int64_t gh = ghd > 0 ? (int64_t)ghd : 0, gw = gwd > 0 ? (int64_t)gwd : 0;
        double count = (double)(gh * gw > 1 ? gh * gw : 1);
        for (int64_t c = 0; c < C; c++) {
            int64_t base = (b * C + c) * H * W;
            for (int64_t ph = 0; ph < PH; ph++)
                for (int64_t pw = 0; pw < PW; pw++) {
                    double acc = 0;
                    bool first = true;
                    for (int64_t iy = 0; iy < gh; iy++)
                        for (int64_t ix = 0; ix < gw; ix++) {
                            double yy = sh + (double)ph * bh + ((double)iy + 0.5) * bh / (double)gh;
                            double xx = sw + (double)pw * bw + ((double)ix + 0.5) * bw / (double)gw;
                            double v1 = 0, v2 = 0, v3 = 0, v4 = 0, w1 = 0, w2 = 0, w3 = 0, w4 = 0;
                            if (!(yy < -1.0 || yy > (double)H || xx < -1.0 || xx > (double)W)) {
                                if (yy < 0) yy = 0;
                                if (xx < 0) xx = 0;
                                int64_t yl = (int64_t)yy, xl = (int64_t)xx, yh, xh;
                                if (yl >= H - 1) {
                                    yh = yl = H - 1;
                                    yy = (double)yl;
                                } else yh = yl + 1;
                                if (xl >= W - 1) {
                                    xh = xl = W - 1;
                                    xx = (double)xl;
                                } else xh = xl + 1;
                                double ly = yy - (double)yl, lx = xx - (double)xl, hy = 1 - ly, hx = 1 - lx;
                                w1 = hy * hx;
                                w2 = hy * lx;
                                w3 = ly * hx;
                                w4 = ly * lx;
                                v1 = kn_get_f64(x, base + yl * W + xl);
                                v2 = kn_get_f64(x, base + yl * W + xh);
                                v3 = kn_get_f64(x, base + yh * W + xl);
                                v4 = kn_get_f64(x, base + yh * W + xh);
                            }
                            if (avg) acc += w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4;
                            else {
                                double m = fmax(fmax(w1 * v1, w2 * v2), fmax(w3 * v3, w4 * v4));
                                acc = first ? m : fmax(acc, m);
                                first = false;
                            }
                        }
                    kn_set_f64(y, ((r * C + c) * PH + ph) * PW + pw, avg ? acc / count : acc);
                }
        }
    }
    return NULL;
}

/* ---------------- NonMaxSuppression ---------------- */

typedef struct nms_box {
    double score;
    int64_t idx;
} nms_box;

static int nms_cmp(const void *pa, const void *pb) {
    const nms_box *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

static bool nms_suppress(const kn_tensor *boxes, int64_t base, int64_t i, int64_t j, bool center, double thr) {
    double a[4], b[4];
    for (int k = 0; k < 4; k++) {
        a[k] = kn_get_f64(boxes, base + i * 4 + k);
        b[k] = kn_get_f64(boxes, base + j * 4 + k);
    }
    double ax0, ax1, ay0, ay1, bx0, bx1, by0, by1;
    if (!center) {
        ay0 = fmin(a[0], a[2]);
        ay1 = fmax(a[0], a[2]);
        ax0 = fmin(a[1], a[3]);
        ax1 = fmax(a[1], a[3]);
        by0 = fmin(b[0], b[2]);
        by1 = fmax(b[0], b[2]);
        bx0 = fmin(b[1], b[3]);
        bx1 = fmax(b[1], b[3]);
    } else {
        ax0 = a[0] - a[2] / 2;
        ax1 = a[0] + a[2] / 2;
        ay0 = a[1] - a[3] / 2;
        ay1 = a[1] + a[3] / 2;
        bx0 = b[0] - b[2] / 2;
        bx1 = b[0] + b[2] / 2;
        by0 = b[1] - b[3] / 2;
        by1 = b[1] + b[3] / 2;
    }
    double ix0 = fmax(ax0, bx0), ix1 = fmin(ax1, bx1), iy0 = fmax(ay0, by0), iy1 = fmin(ay1, by1);
    if (ix1 <= ix0 || iy1 <= iy0) return false;
    double inter = (ix1 - ix0) * (iy1 - iy0);
    double a1 = (ax1 - ax0) * (ay1 - ay0), a2 = (bx1 - bx0) * (by1 - by0), uni = a1 + a2 - inter;
    if (a1 <= 0 || a2 <= 0 || uni <= 0) return false;
    return inter / uni > thr;
}

/* Runs the whole selection; writes triples to sel (when non-NULL) and returns the count. */
static kn_status *nms_run(const kn_node *node, const kn_tensor *const *in, int n_in, int64_t *sel, int64_t cap,
                          int64_t *count) {
    const kn_tensor *boxes = in[0], *scores = in[1];
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    KN_CHECK(boxes->ndim == 3 && boxes->dims[2] == 4 && scores->ndim == 3 && scores->dims[0] == boxes->dims[0] &&
                 scores->dims[2] == boxes->dims[1],
             KN_ERR_INVALID_ARGUMENT, "NonMaxSuppression: boxes %s and scores %s do not match",
             kn_tensor_desc(boxes, b1, sizeof b1), kn_tensor_desc(scores, b2, sizeof b2));
    int64_t maxo = 0;
    double iou = 0, sthr = 0;
    bool has_sthr = false;
    if (n_in > 2 && in[2] && kn_numel(in[2]) > 0) maxo = kn_get_i64(in[2], 0);
    if (n_in > 3 && in[3] && kn_numel(in[3]) > 0) iou = kn_get_f64(in[3], 0);
    if (n_in > 4 && in[4] && kn_numel(in[4]) > 0) {
        sthr = kn_get_f64(in[4], 0);
        has_sthr = true;
    }
    bool center = KN_PARAMS(node, nms)->center_point_box;
    int64_t B = boxes->dims[0], NB = boxes->dims[1], NC = scores->dims[1], cnt = 0;
    *count = 0;
    if (maxo <= 0 || NB == 0) return NULL;
    nms_box *cand = malloc((size_t)NB * sizeof *cand);
    int64_t *kept = malloc((size_t)NB * sizeof *kept);
    if (!cand || !kept) {
        free(cand);
        free(kept);
        return KN_OOM(NB * 24);
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < NC; c++) {
            int64_t nc = 0, nk = 0;
            for (int64_t i = 0; i < NB; i++) {
                double s = kn_get_f64(scores, (b * NC + c) * NB + i);
                if (has_sthr && !(s > sthr)) continue;
                cand[nc].score = s;
                cand[nc].idx = i;
                nc++;
            }
            qsort(cand, (size_t)nc, sizeof *cand, nms_cmp);
            for (int64_t i = 0; i < nc && nk < maxo; i++) {
                bool keep = true;
                for (int64_t j = 0; j < nk && keep; j++)
                    if (nms_suppress(boxes, b * NB * 4, cand[i].idx, kept[j], center, iou)) keep = false;
                if (!keep) continue;
                kept[nk++] = cand[i].idx;
                if (sel && cnt < cap) {
                    sel[cnt * 3] = b;
                    sel[cnt * 3 + 1] = c;
                    sel[cnt * 3 + 2] = cand[i].idx;
                }
                cnt++;
            }
        }
    free(cand);
    free(kept);
    *count = cnt;
    return NULL;
}

kn_status *kn_shapeops_nms_count(const kn_node *node, const kn_tensor *const *in, int n_in, int64_t *count) {
    return nms_run(node, in, n_in, NULL, 0, count);
}

kn_status *kn_cpu_NonMaxSuppression(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                    kn_tensor *const *out, int n_out) {
    int64_t cnt;
    KN_TRY(nms_run(node, in, n_in, out[0]->data, out[0]->dims[0], &cnt));
    KN_CHECK(cnt == out[0]->dims[0], KN_ERR_RUNTIME, "NonMaxSuppression: selected %lld boxes, output holds %lld",
             (long long)cnt, (long long)out[0]->dims[0]);
    return NULL;
}
