/* Image files to pixel_values for the image pipelines, reproducing what transformers feeds a
 * model: load_image (PIL open, ImageOps.exif_transpose, convert("RGB"), which drops alpha rather
 * than compositing it) followed by the PIL backend of the image processor (PIL's resize on the
 * uint8 image, numpy center crop, rescale in float64 then float32, normalize in float32).
 * The resampling is PIL's own algorithm (Resample.c: separable filters, coefficients normalised
 * to 22-bit fixed point, rounding to uint8 after each pass), so the uint8 values before rescaling
 * are the same as PIL's, not merely close. */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
/* fused multiply-adds would change the filter coefficients' last bits and so PIL's rounding */
#pragma GCC optimize("fp-contract=off")
#endif
#include "pipelines/pl_imgproc.h"
#include <stdio.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PL_MAX_PIXELS ((int64_t)1 << 28)
#define PL_MAX_FILE ((size_t)1 << 30)

void pl_rgb_free(pl_rgb *im) {
    if (!im) return;
    free(im->px);
    im->px = NULL;
    im->w = im->h = 0;
}

static kn_status *pl_rgb_alloc(pl_rgb *im, int64_t w, int64_t h, const char *name) {
    if (w <= 0 || h <= 0 || w * h > PL_MAX_PIXELS)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: image of %lldx%lld pixels is not supported", name, (long long)w,
                        (long long)h);
    im->px = malloc((size_t)(w * h * 3));
    if (!im->px) return KN_OOM((size_t)(w * h * 3));
    im->w = (int)w;
    im->h = (int)h;
    return NULL;
}

/* ImageOps.exif_transpose: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
 * 7 transverse, 8 rotate 90 counter-clockwise. */
static kn_status *pl_orient(pl_rgb *im, int o, const char *name) {
    if (o <= 1 || o > 8) return NULL;
    int W = im->w, H = im->h;
    pl_rgb out = {0};
    bool swap = o >= 5;
    KN_TRY(pl_rgb_alloc(&out, swap ? H : W, swap ? W : H, name));
    for (int y = 0; y < out.h; y++)
        for (int x = 0; x < out.w; x++) {
            int sx, sy;
            switch (o) {
            case 2:
                sx = W - 1 - x;
                sy = y;
                break;
            case 3:
                sx = W - 1 - x;
                sy = H - 1 - y;
                break;
            case 4:
                sx = x;
                sy = H - 1 - y;
                break;
            case 5:
                sx = y;
                sy = x;
                break;
            case 6:
                sx = y;
                sy = H - 1 - x;
                break;
            case 7:
                sx = W - 1 - y;
                sy = H - 1 - x;
                break;
            default:
                sx = W - 1 - y;
                sy = x;
                break;
            }
            memcpy(out.px + ((size_t)y * out.w + x) * 3, im->px + ((size_t)sy * W + sx) * 3, 3);
        }
    free(im->px);
    out.has_key = im->has_key;
    memcpy(out.key, im->key, 3);
    out.orientation = 1; /* applied */
    *im = out;
    return NULL;
}

kn_status *pl_image_decode(const uint8_t *buf, size_t len, const char *name, pl_rgb *out) {
    KN_TRY(kn_image_decode(buf, len, name, out)); /* the one decoder, shared with the ImageDecoder op */
    kn_status *st = pl_orient(out, out->orientation, name);
    if (st) pl_rgb_free(out);
    return st;
}

kn_status *pl_image_load(const char *path, pl_rgb *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return kn_error(KN_ERR_IO, "%s: cannot open the image", path);
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    kn_status *st = NULL;
    for (;;) {
        if (len == cap) {
            if (cap >= PL_MAX_FILE) {
                st = kn_error(KN_ERR_UNSUPPORTED, "%s: image file larger than 1 GiB", path);
                break;
            }
            size_t nc = cap ? cap * 2 : 1 << 16;
            uint8_t *nb = realloc(buf, nc);
            if (!nb) {
                st = KN_OOM(nc);
                break;
            }
            buf = nb;
            cap = nc;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0) {
            if (ferror(f)) st = kn_error(KN_ERR_IO, "%s: read error", path);
            break;
        }
    }
    fclose(f);
    if (!st) st = pl_image_decode(buf, len, path, out);
    free(buf);
    return st;
}

/* ---- PIL resampling ---- */

static double pl_f_box(double x) { return x > -0.5 && x <= 0.5 ? 1.0 : 0.0; }
static double pl_f_bilinear(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}
static double pl_f_hamming(double x) {
    if (x < 0.0) x = -x;
    if (x == 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x = x * M_PI;
    return sin(x) / x * (0.54f + 0.46f * cos(x)); /* float constants, as PIL */
}
static double pl_f_bicubic(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}
static double pl_sinc(double x) {
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}
static double pl_f_lanczos(double x) { return -3.0 <= x && x < 3.0 ? pl_sinc(x) * pl_sinc(x / 3) : 0.0; }

#define PL_PRECISION_BITS (32 - 8 - 2)

/* Resample.c's precompute_coeffs + normalize_coeffs_8bpc over the whole input range. */
static int pl_coeffs(int in_size, int out_size, double (*filter)(double), double fsupport, int **bounds_out,
                     int32_t **kk_out) {
    double scale = (double)in_size / out_size, filterscale = scale;
    if (filterscale < 1.0) filterscale = 1.0;
    double support = fsupport * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *kk = malloc(sizeof(double) * (size_t)out_size * (size_t)ksize);
    int *bounds = malloc(sizeof(int) * (size_t)out_size * 2);
    int32_t *ik = malloc(sizeof(int32_t) * (size_t)out_size * (size_t)ksize);
    if (!kk || !bounds || !ik) {
        free(kk);
        free(bounds);
        free(ik);
        return -1;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = 0 + (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double *k = &kk[(size_t)xx * (size_t)ksize];
        int x;
        for (x = 0; x < xmax; x++) {
            double w = filter((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        for (; x < ksize; x++) k[x] = 0;
        bounds[xx * 2] = xmin;
        bounds[xx * 2 + 1] = xmax;
    }
    for (size_t i = 0; i < (size_t)out_size * (size_t)ksize; i++)
        ik[i] = kk[i] < 0 ? (int32_t)(-0.5 + kk[i] * (1 << PL_PRECISION_BITS))
                          : (int32_t)(0.5 + kk[i] * (1 << PL_PRECISION_BITS));
    free(kk);
    *bounds_out = bounds;
    *kk_out = ik;
    return ksize;
}

static inline uint8_t pl_clip8(int32_t v) {
    v >>= PL_PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Image.resize(..., NEAREST): Geometry.c's ImagingScaleAffine, positions stepped in double. */
static void pl_resize_nearest(const pl_rgb *in, pl_rgb *out) {
    double a0 = (double)in->w / out->w, a4 = (double)in->h / out->h;
    double xo = 0 + a0 * 0.5, yo = 0 + a4 * 0.5;
    int *xin = malloc(sizeof(int) * (size_t)out->w);
    if (!xin) {
        memset(out->px, 0, (size_t)out->w * out->h * 3);
        return;
    }
    for (int x = 0; x < out->w; x++) {
        int v = xo < 0.0 ? -1 : (int)xo;
        xin[x] = v >= 0 && v < in->w ? v : -1;
        xo += a0;
    }
    for (int y = 0; y < out->h; y++) {
        int yi = yo < 0.0 ? -1 : (int)yo;
        uint8_t *o = out->px + (size_t)y * out->w * 3;
        for (int x = 0; x < out->w; x++) {
            if (yi >= 0 && yi < in->h && xin[x] >= 0) memcpy(o + x * 3, in->px + ((size_t)yi * in->w + xin[x]) * 3, 3);
            else memset(o + x * 3, 0, 3);
        }
        yo += a4;
    }
    free(xin);
}

/* One horizontal pass (ImagingResampleHorizontal_8bpc): out row yy from in row yy + row0. */
static void pl_pass_h(const pl_rgb *in, int row0, pl_rgb *out, const int *bounds, const int32_t *kk, int ks) {
    for (int yy = 0; yy < out->h; yy++) {
        const uint8_t *row = in->px + (size_t)(yy + row0) * in->w * 3;
        uint8_t *o = out->px + (size_t)yy * out->w * 3;
        for (int xx = 0; xx < out->w; xx++) {
            int xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1];
            const int32_t *k = &kk[(size_t)xx * ks];
            int32_t s0 = 1 << (PL_PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < xmax; x++) {
                const uint8_t *p = row + (size_t)(x + xmin) * 3;
                s0 += p[0] * k[x];
                s1 += p[1] * k[x];
                s2 += p[2] * k[x];
            }
            o[xx * 3] = pl_clip8(s0);
            o[xx * 3 + 1] = pl_clip8(s1);
            o[xx * 3 + 2] = pl_clip8(s2);
        }
    }
}

/* One vertical pass (ImagingResampleVertical_8bpc); in and out have the same width. */
static void pl_pass_v(const pl_rgb *in, pl_rgb *out, const int *bounds, const int32_t *kk, int ks) {
    size_t stride = (size_t)in->w * 3;
    for (int yy = 0; yy < out->h; yy++) {
        int ymin = bounds[yy * 2], ymax = bounds[yy * 2 + 1];
        const int32_t *k = &kk[(size_t)yy * ks];
        uint8_t *o = out->px + (size_t)yy * stride;
        for (size_t xx = 0; xx < stride; xx++) {
            int32_t s = 1 << (PL_PRECISION_BITS - 1);
            for (int y = 0; y < ymax; y++) s += in->px[(size_t)(y + ymin) * stride + xx] * k[y];
            o[xx] = pl_clip8(s);
        }
    }
}

kn_status *pl_resize_pil(const pl_rgb *in, int ow, int oh, int resample, pl_rgb *out) {
    memset(out, 0, sizeof *out);
    KN_TRY(pl_rgb_alloc(out, ow, oh, "resize"));
    if (ow == in->w && oh == in->h) { /* Image.resize returns a copy */
        memcpy(out->px, in->px, (size_t)ow * oh * 3);
        return NULL;
    }
    if (resample == 0) {
        pl_resize_nearest(in, out);
        return NULL;
    }
    double (*filter)(double);
    double support;
    switch (resample) {
    case 1:
        filter = pl_f_lanczos;
        support = 3.0;
        break;
    case 2:
        filter = pl_f_bilinear;
        support = 1.0;
        break;
    case 3:
        filter = pl_f_bicubic;
        support = 2.0;
        break;
    case 4:
        filter = pl_f_box;
        support = 0.5;
        break;
    case 5:
        filter = pl_f_hamming;
        support = 1.0;
        break;
    default:
        pl_rgb_free(out);
        return kn_error(KN_ERR_UNSUPPORTED, "resample %d is not a PIL resampling filter (0-5)", resample);
    }
    int *bh = NULL, *bv = NULL;
    int32_t *kh = NULL, *kv = NULL;
    int ksh = pl_coeffs(in->w, ow, filter, support, &bh, &kh);
    int ksv = ksh < 0 ? -1 : pl_coeffs(in->h, oh, filter, support, &bv, &kv);
    if (ksh < 0 || ksv < 0) {
        free(bh);
        free(kh);
        pl_rgb_free(out);
        return KN_OOM((size_t)ow * 64);
    }
    bool need_h = ow != in->w, need_v = oh != in->h;
    /* Pillow runs the vertical pass first when it removes more rows than twice the columns
     * the horizontal pass removes (found by comparing both orders with Image.resize over
     * thousands of sizes and every filter); each pass rounds to uint8, so the order shows */
    bool v_first = need_h && need_v && oh < in->h && (in->h - oh) > 2 * (in->w - ow);
    pl_rgb tmp = {0};
    kn_status *st = NULL;
    if (need_h && need_v && !v_first) {
        /* the horizontal pass only computes the rows the vertical pass reads */
        int y_first = bv[0], y_last = bv[oh * 2 - 2] + bv[oh * 2 - 1];
        for (int i = 0; i < oh; i++) bv[i * 2] -= y_first;
        st = pl_rgb_alloc(&tmp, ow, y_last - y_first, "resize");
        if (!st) {
            pl_pass_h(in, y_first, &tmp, bh, kh, ksh);
            pl_pass_v(&tmp, out, bv, kv, ksv);
        }
    } else if (need_h && need_v) {
        st = pl_rgb_alloc(&tmp, in->w, oh, "resize");
        if (!st) {
            pl_pass_v(in, &tmp, bv, kv, ksv);
            pl_pass_h(&tmp, 0, out, bh, kh, ksh);
        }
    } else if (need_h) {
        pl_pass_h(in, 0, out, bh, kh, ksh);
    } else {
        pl_pass_v(in, out, bv, kv, ksv);
    }
    pl_rgb_free(&tmp);
    free(bh);
    free(bv);
    free(kh);
    free(kv);
    if (st) pl_rgb_free(out);
    return st;
}

/* ---- the image processor's configuration ---- */

static const float pl_std_half[3] = {0.5f, 0.5f, 0.5f};
static const double pl_clip_mean[3] = {0.48145466, 0.4578275, 0.40821073};
static const double pl_clip_std[3] = {0.26862954, 0.26130258, 0.27577711};

/* Reads a size entry: an object with height/width, shortest_edge, longest_edge, max_height/
 * max_width; an int (square or shortest edge, as the class's default_to_square says); a list
 * [height, width]. */
static kn_status *pl_read_size(json_object *v, int square, const char *where, const char *key, int *h, int *w, int *se,
                               int *le, int *mh, int *mw) {
    if (json_object_is_type(v, json_type_null)) return NULL;
    *h = *w = 0;
    if (se) *se = *le = *mh = *mw = 0;
    if (json_object_is_type(v, json_type_int)) {
        int s = json_object_get_int(v);
        if (s <= 0) return kn_error(KN_ERR_INVALID_MODEL, "%s: %s %d is not a size", where, key, s);
        if (square || !se) *h = *w = s;
        else *se = s;
        return NULL;
    }
    if (json_object_is_type(v, json_type_array) && json_object_array_length(v) == 2) {
        *h = json_object_get_int(json_object_array_get_idx(v, 0));
        *w = json_object_get_int(json_object_array_get_idx(v, 1));
    } else if (json_object_is_type(v, json_type_object)) {
        json_object *x;
        if (json_object_object_get_ex(v, "height", &x)) *h = json_object_get_int(x);
        if (json_object_object_get_ex(v, "width", &x)) *w = json_object_get_int(x);
        if (se) {
            if (json_object_object_get_ex(v, "shortest_edge", &x)) *se = json_object_get_int(x);
            if (json_object_object_get_ex(v, "longest_edge", &x)) *le = json_object_get_int(x);
            if (json_object_object_get_ex(v, "max_height", &x)) *mh = json_object_get_int(x);
            if (json_object_object_get_ex(v, "max_width", &x)) *mw = json_object_get_int(x);
        }
    } else {
        return kn_error(KN_ERR_INVALID_MODEL, "%s: %s is neither a size object nor an integer", where, key);
    }
    int vals[6] = {*h, *w, se ? *se : 0, se ? *le : 0, se ? *mh : 0, se ? *mw : 0};
    for (int i = 0; i < 6; i++)
        if (vals[i] < 0 || vals[i] > 65536)
            return kn_error(KN_ERR_INVALID_MODEL, "%s: %s holds %d, not a size", where, key, vals[i]);
    return NULL;
}

static kn_status *pl_read_triple(json_object *cfg, const char *key, const char *where, float *dst) {
    json_object *v;
    if (!json_object_object_get_ex(cfg, key, &v) || json_object_is_type(v, json_type_null)) return NULL;
    if (json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)) {
        for (int c = 0; c < 3; c++) dst[c] = (float)json_object_get_double(v);
        return NULL;
    }
    if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) != 3)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: %s must be a number or a list of 3 numbers (RGB)", where, key);
    for (int c = 0; c < 3; c++) dst[c] = (float)json_object_get_double(json_object_array_get_idx(v, (size_t)c));
    return NULL;
}

static int pl_read_flag(json_object *cfg, const char *key, int dflt) {
    json_object *v;
    if (!cfg || !json_object_object_get_ex(cfg, key, &v) || json_object_is_type(v, json_type_null)) return dflt;
    return json_object_get_boolean(v) ? 1 : 0;
}

kn_status *pl_preproc_read(json_object *cfg, const char *model_type, const char *where, pl_preproc *pp) {
    memset(pp, 0, sizeof *pp);
    const char *klass = NULL;
    json_object *v;
    if (cfg && json_object_object_get_ex(cfg, "image_processor_type", &v) && json_object_is_type(v, json_type_string))
        klass = json_object_get_string(v);
    if (!klass && cfg && json_object_object_get_ex(cfg, "feature_extractor_type", &v) &&
        json_object_is_type(v, json_type_string))
        klass = json_object_get_string(v);
    char name[64] = "";
    if (klass) {
        snprintf(name, sizeof name, "%s", klass);
        static const char *const suffixes[] = {"ImageProcessorFast", "ImageProcessorPil", "ImageProcessor",
                                               "FeatureExtractor"};
        for (size_t i = 0; i < 4; i++) {
            size_t n = strlen(name), s = strlen(suffixes[i]);
            if (n > s && !strcmp(name + n - s, suffixes[i])) {
                name[n - s] = 0;
                break;
            }
        }
    } else if (model_type) {
        /* what AutoImageProcessor maps these model types to */
        static const struct {
            const char *mt, *k;
        } map[] = {{"vit", "ViT"},
                   {"resnet", "ConvNext"},
                   {"convnext", "ConvNext"},
                   {"convnextv2", "ConvNext"},
                   {"regnet", "ConvNext"},
                   {"cvt", "ConvNext"},
                   {"van", "ConvNext"},
                   {"deit", "DeiT"},
                   {"beit", "Beit"},
                   {"data2vec-vision", "Beit"},
                   {"dinov2", "Bit"},
                   {"bit", "Bit"},
                   {"clip", "CLIP"},
                   {"swin", "ViT"},
                   {"swinv2", "ViT"},
                   {"dinat", "ViT"},
                   {"nat", "ViT"}};
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
            if (!strcmp(model_type, map[i].mt)) snprintf(name, sizeof name, "%s", map[i].k);
    }
    snprintf(pp->klass, sizeof pp->klass, "%s", name);
    /* class defaults (the PIL backends' class attributes); a saved file repeats them all */
    int square = 1;
    for (int c = 0; c < 3; c++) {
        pp->mean[c] = pl_std_half[c];
        pp->std[c] = pl_std_half[c];
    }
    pp->resample = -1;
    pp->rescale_factor = 1.0 / 255;
    if (!strcmp(name, "ViT")) {
        pp->resample = 2;
        pp->size_h = pp->size_w = 224;
        pp->do_resize = pp->do_rescale = pp->do_normalize = 1;
    } else if (!strcmp(name, "ConvNext")) {
        pp->convnext = 1;
        pp->resample = 3;
        pp->shortest_edge = 384;
        pp->crop_pct = 224.0 / 256;
        square = 0;
        pp->do_resize = pp->do_rescale = pp->do_normalize = 1;
    } else if (!strcmp(name, "Bit") || !strcmp(name, "CLIP")) {
        pp->resample = 3;
        pp->shortest_edge = 224;
        square = 0;
        pp->crop_h = pp->crop_w = 224;
        pp->do_resize = pp->do_center_crop = pp->do_rescale = pp->do_normalize = pp->do_convert_rgb = 1;
        for (int c = 0; c < 3; c++) {
            pp->mean[c] = (float)pl_clip_mean[c];
            pp->std[c] = (float)pl_clip_std[c];
        }
    } else if (!strcmp(name, "DeiT")) {
        pp->resample = 3;
        pp->size_h = pp->size_w = 256;
        pp->crop_h = pp->crop_w = 224;
        pp->do_resize = pp->do_center_crop = pp->do_rescale = pp->do_normalize = 1;
    } else if (!strcmp(name, "Beit")) {
        pp->resample = 3;
        pp->size_h = pp->size_w = 224;
        pp->crop_h = pp->crop_w = 224;
        pp->do_resize = pp->do_rescale = pp->do_normalize = 1;
    }
    if (cfg && !json_object_is_type(cfg, json_type_object))
        return kn_error(KN_ERR_INVALID_MODEL, "%s: expected a JSON object", where);
    pp->do_resize = pl_read_flag(cfg, "do_resize", pp->do_resize);
    pp->do_center_crop = pl_read_flag(cfg, "do_center_crop", pp->do_center_crop);
    pp->do_rescale = pl_read_flag(cfg, "do_rescale", pp->do_rescale);
    pp->do_normalize = pl_read_flag(cfg, "do_normalize", pp->do_normalize);
    pp->do_convert_rgb = pl_read_flag(cfg, "do_convert_rgb", pp->do_convert_rgb);
    if (cfg && json_object_object_get_ex(cfg, "size", &v))
        KN_TRY(pl_read_size(v, square, where, "size", &pp->size_h, &pp->size_w, &pp->shortest_edge, &pp->longest_edge,
                            &pp->max_h, &pp->max_w));
    if (cfg && json_object_object_get_ex(cfg, "crop_size", &v))
        KN_TRY(pl_read_size(v, 1, where, "crop_size", &pp->crop_h, &pp->crop_w, NULL, NULL, NULL, NULL));
    if (cfg && json_object_object_get_ex(cfg, "resample", &v) && !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_int))
            return kn_error(KN_ERR_INVALID_MODEL, "%s: resample must be a PIL filter code", where);
        pp->resample = json_object_get_int(v);
    }
    if (pp->resample < 0) pp->resample = 2; /* the PIL backend's resize default */
    if (pp->resample > 5)
        return kn_error(KN_ERR_UNSUPPORTED, "%s: resample %d is not a PIL filter (0-5)", where, pp->resample);
    if (cfg && json_object_object_get_ex(cfg, "rescale_factor", &v) && !json_object_is_type(v, json_type_null))
        pp->rescale_factor = json_object_get_double(v);
    if (cfg && json_object_object_get_ex(cfg, "crop_pct", &v) && !json_object_is_type(v, json_type_null))
        pp->crop_pct = json_object_get_double(v);
    if (cfg) {
        KN_TRY(pl_read_triple(cfg, "image_mean", where, pp->mean));
        KN_TRY(pl_read_triple(cfg, "image_std", where, pp->std));
    }
    if (pp->do_normalize)
        for (int c = 0; c < 3; c++)
            if (pp->std[c] == 0) return kn_error(KN_ERR_INVALID_MODEL, "%s: image_std[%d] is 0", where, c);
    if (pp->do_resize) {
        if (pp->convnext) {
            if (!pp->shortest_edge)
                return kn_error(KN_ERR_INVALID_MODEL, "%s: ConvNext's size must have shortest_edge", where);
            if (pp->shortest_edge < 384 && !(pp->crop_pct > 0 && pp->crop_pct <= 1))
                return kn_error(KN_ERR_INVALID_MODEL, "%s: crop_pct %g is not in (0, 1]", where, pp->crop_pct);
        } else if (!pp->shortest_edge && !(pp->max_h && pp->max_w) && !(pp->size_h && pp->size_w)) {
            return kn_error(KN_ERR_INVALID_MODEL,
                            "%s: size must have height and width, shortest_edge, or max_height and max_width", where);
        }
    }
    if (pp->do_center_crop && !(pp->crop_h > 0 && pp->crop_w > 0))
        return kn_error(KN_ERR_INVALID_MODEL, "%s: do_center_crop needs crop_size with height and width", where);
    return NULL;
}

/* get_resize_output_image_size(size, default_to_square=False): the short side to s. */
static void pl_short_side(int w, int h, int s, int *ow, int *oh) {
    int shorter = w <= h ? w : h, longer = w <= h ? h : w;
    int nl = (int)((double)((int64_t)s * longer) / shorter);
    if (w <= h) {
        *ow = s;
        *oh = nl;
    } else {
        *oh = s;
        *ow = nl;
    }
}

/* get_size_with_aspect_ratio((h, w), shortest_edge, longest_edge). */
static void pl_short_long(int w, int h, int size, int max_size, int *ow, int *oh) {
    double raw = 0;
    bool have_raw = false;
    if (max_size > 0) {
        double mn = w < h ? w : h, mx = w < h ? h : w;
        if (mx / mn * size > max_size) {
            raw = max_size * mn / mx;
            have_raw = true;
            size = (int)nearbyint(raw); /* Python's round: halves to even */
        }
    }
    if ((h <= w && h == size) || (w <= h && w == size)) {
        *oh = h;
        *ow = w;
    } else if (w < h) {
        *ow = size;
        *oh = have_raw ? (int)(raw * h / w) : (int)((double)((int64_t)size * h) / w);
    } else {
        *oh = size;
        *ow = have_raw ? (int)(raw * w / h) : (int)((double)((int64_t)size * w) / h);
    }
}

/* The resize target (before any crop) and whether ConvNext crops after it. */
static void pl_resize_target(const pl_preproc *pp, int w, int h, int *rw, int *rh, int *cw, int *ch) {
    *rw = w;
    *rh = h;
    *cw = *ch = 0;
    if (!pp->do_resize) return;
    if (pp->convnext) {
        int se = pp->shortest_edge;
        if (se < 384) {
            pl_short_side(w, h, (int)(se / pp->crop_pct), rw, rh);
            *cw = *ch = se;
        } else {
            *rw = *rh = se;
        }
    } else if (pp->shortest_edge && pp->longest_edge) {
        pl_short_long(w, h, pp->shortest_edge, pp->longest_edge, rw, rh);
    } else if (pp->shortest_edge) {
        pl_short_side(w, h, pp->shortest_edge, rw, rh);
    } else if (pp->max_h && pp->max_w) {
        double hs = (double)pp->max_h / h, ws = (double)pp->max_w / w, s = hs < ws ? hs : ws;
        *rh = (int)(h * s);
        *rw = (int)(w * s);
    } else {
        *rw = pp->size_w;
        *rh = pp->size_h;
    }
}

void pl_preproc_out_size(const pl_preproc *pp, int w, int h, int *ow, int *oh) {
    int rw, rh, cw, ch;
    pl_resize_target(pp, w, h, &rw, &rh, &cw, &ch);
    if (cw) {
        rw = cw;
        rh = ch;
    }
    if (pp->do_center_crop) {
        rw = pp->crop_w;
        rh = pp->crop_h;
    }
    *ow = rw;
    *oh = rh;
}

/* transformers' numpy center_crop: offsets (size - crop) // 2, zero padding (centred, the extra
 * row or column first) where the image is smaller than the crop. */
static kn_status *pl_center_crop(pl_rgb *im, int cw, int ch) {
    if (cw == im->w && ch == im->h) return NULL;
    pl_rgb out = {0};
    KN_TRY(pl_rgb_alloc(&out, cw, ch, "center crop"));
    int offy = im->h >= ch ? (im->h - ch) / 2 : -((ch - im->h + 1) / 2);
    int offx = im->w >= cw ? (im->w - cw) / 2 : -((cw - im->w + 1) / 2);
    for (int y = 0; y < ch; y++)
        for (int x = 0; x < cw; x++) {
            int sy = y + offy, sx = x + offx;
            uint8_t *o = out.px + ((size_t)y * cw + x) * 3;
            if (sy >= 0 && sy < im->h && sx >= 0 && sx < im->w) memcpy(o, im->px + ((size_t)sy * im->w + sx) * 3, 3);
            else memset(o, 0, 3);
        }
    free(im->px);
    *im = out;
    return NULL;
}

kn_status *pl_preprocess(const pl_preproc *pp, const pl_rgb *im, float *out) {
    int rw, rh, cw, ch;
    pl_resize_target(pp, im->w, im->h, &rw, &rh, &cw, &ch);
    if (rw <= 0 || rh <= 0)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "an image of %dx%d resizes to %dx%d", im->w, im->h, rw, rh);
    pl_rgb cur = {0}, keyed = {0};
    if (pp->do_convert_rgb && im->has_key) {
        /* convert_to_rgb: the transparent colour becomes alpha 0, composited onto white */
        KN_TRY(pl_rgb_alloc(&keyed, im->w, im->h, "convert_rgb"));
        size_t np = (size_t)im->w * im->h;
        for (size_t i = 0; i < np; i++) {
            const uint8_t *s = im->px + i * 3;
            uint8_t *o = keyed.px + i * 3;
            if (!memcmp(s, im->key, 3)) memset(o, 255, 3);
            else memcpy(o, s, 3);
        }
        im = &keyed;
    }
    kn_status *rs = pl_resize_pil(im, rw, rh, pp->resample, &cur);
    pl_rgb_free(&keyed);
    KN_TRY(rs);
    kn_status *st = NULL;
    if (cw) st = pl_center_crop(&cur, cw, ch);
    if (!st && pp->do_center_crop) st = pl_center_crop(&cur, pp->crop_w, pp->crop_h);
    if (st) {
        pl_rgb_free(&cur);
        return st;
    }
    size_t plane = (size_t)cur.w * cur.h;
    for (int c = 0; c < 3; c++) {
        float m = pp->mean[c], s = pp->std[c];
        float *o = out + (size_t)c * plane;
        for (size_t i = 0; i < plane; i++) {
            uint8_t u = cur.px[i * 3 + (size_t)c];
            /* rescale multiplies in float64 and stores float32; normalize works in float32 */
            float x = pp->do_rescale ? (float)((double)u * pp->rescale_factor) : (float)u;
            if (pp->do_normalize) x = (x - m) / s;
            o[i] = x;
        }
    }
    pl_rgb_free(&cur);
    return NULL;
}
