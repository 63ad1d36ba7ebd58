/* ImageDecoder (opset 20) and kiln's one JPEG/PNG decoder (kn_image_decode, image_decode.h),
 * also used by the image pipelines: uint8 HWC in RGB, BGR or Grayscale.
 * Grayscale is derived from RGB with the ITU-R 601 weights in 16-bit fixed point, the conversion
 * the ONNX reference's imaging library applies. */
#include "graph/ops.h"
#include "kernels/cpu/image_decode.h"
#include <stdio.h> /* before jpeglib.h, which uses FILE */
#include <jpeglib.h>
#include <png.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* ---- EXIF orientation (the TIFF structure inside a JPEG APP1 segment or a PNG eXIf chunk) ---- */

static unsigned img_rd16(const uint8_t *p, int le) {
    return le ? (unsigned)(p[0] | p[1] << 8) : (unsigned)(p[0] << 8 | p[1]);
}
static uint32_t img_rd32(const uint8_t *p, int le) {
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* The Orientation tag (0x0112) of IFD0, or 1; anything malformed reads as 1, as PIL ignores it. */
static int img_exif_orientation(const uint8_t *t, size_t len) {
    if (len >= 6 && !memcmp(t, "Exif\0\0", 6)) {
        t += 6;
        len -= 6;
    }
    if (len < 8) return 1;
    int le;
    if (t[0] == 'I' && t[1] == 'I') le = 1;
    else if (t[0] == 'M' && t[1] == 'M') le = 0;
    else return 1;
    if (img_rd16(t + 2, le) != 42) return 1;
    uint32_t off = img_rd32(t + 4, le);
    if (off > len || len - off < 2) return 1;
    unsigned n = img_rd16(t + off, le);
    for (unsigned i = 0; i < n; i++) {
        size_t e = (size_t)off + 2 + (size_t)i * 12;
        if (e + 12 > len) break;
        if (img_rd16(t + e, le) == 0x0112) {
            unsigned type = img_rd16(t + e + 2, le);
            unsigned v = type == 3 ? img_rd16(t + e + 8, le) : type == 4 ? (unsigned)img_rd32(t + e + 8, le) : 1;
            return v >= 1 && v <= 8 ? (int)v : 1;
        }
    }
    return 1;
}

/* ---- JPEG ---- */

typedef struct {
    struct jpeg_error_mgr mgr;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} img_jpeg_err;

static void img_jpeg_fail(j_common_ptr c) {
    img_jpeg_err *e = (img_jpeg_err *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}

/* libjpeg prints warnings (a truncated stream) to stderr; PIL decodes such files too, so do we */
static void img_jpeg_quiet(j_common_ptr c) { (void)c; }

static kn_status *img_decode_jpeg(const uint8_t *buf, size_t len, const char *name, kn_image *out, int *orient) {
    struct jpeg_decompress_struct d;
    img_jpeg_err err;
    /* volatile: they survive the longjmp back from libjpeg's error handler */
    uint8_t *volatile rgb = NULL, *volatile row = NULL;
    memset(&d, 0, sizeof d);
    d.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = img_jpeg_fail;
    err.mgr.output_message = img_jpeg_quiet;
    if (setjmp(err.jb)) {
        jpeg_destroy_decompress(&d);
        free(rgb);
        free(row);
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: bad JPEG data: %s", name, err.msg);
    }
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, buf, (unsigned long)len);
    jpeg_save_markers(&d, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&d, TRUE);
    /* CMYK files come out as stored (Adobe writers store them inverted) and are converted below
     * as PIL converts CMYK to RGB; everything else libjpeg converts to RGB itself */
    bool cmyk = d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK;
    d.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    *orient = 1;
    for (jpeg_saved_marker_ptr m = d.marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && !memcmp(m->data, "Exif\0\0", 6)) {
            *orient = img_exif_orientation(m->data, m->data_length);
            break;
        }
    jpeg_start_decompress(&d);
    int64_t h = d.output_height, w = d.output_width;
    int comps = d.output_components;
    if (h * w > KN_IMAGE_MAX_PIXELS || comps != (cmyk ? 4 : 3)) {
        jpeg_destroy_decompress(&d);
        return kn_error(KN_ERR_UNSUPPORTED, "%s: JPEG of %lldx%lld with %d components is not supported", name,
                        (long long)w, (long long)h, comps);
    }
    rgb = malloc((size_t)(h * w * 3));
    row = malloc((size_t)(w * comps));
    if (!rgb || !row) {
        jpeg_destroy_decompress(&d);
        free(rgb);
        free(row);
        return KN_OOM((size_t)(h * w * 3));
    }
    bool inverted = cmyk && d.saw_Adobe_marker;
    while (d.output_scanline < d.output_height) {
        size_t y = d.output_scanline;
        if (!cmyk) {
            JSAMPROW r = rgb + y * (size_t)w * 3;
            jpeg_read_scanlines(&d, &r, 1);
            continue;
        }
        JSAMPROW r = row;
        jpeg_read_scanlines(&d, &r, 1);
        for (int64_t x = 0; x < w; x++) {
            int v[4];
            for (int k = 0; k < 4; k++) v[k] = inverted ? 255 - row[x * 4 + k] : row[x * 4 + k];
            int nk = 255 - v[3];
            for (int k = 0; k < 3; k++) {
                int t = v[k] * nk + 128;
                int c = nk - (((t >> 8) + t) >> 8);
                rgb[(y * (size_t)w + (size_t)x) * 3 + (size_t)k] = (uint8_t)(c < 0 ? 0 : c > 255 ? 255 : c);
            }
        }
    }
    jpeg_finish_decompress(&d);
    jpeg_destroy_decompress(&d);
    free(row);
    out->px = rgb;
    out->w = (int)w;
    out->h = (int)h;
    return NULL;
}

/* ---- PNG ---- */

typedef struct {
    jmp_buf jb;
    char msg[256];
    const uint8_t *buf;
    size_t len, pos;
} img_png_io;

static void img_png_fail(png_structp png, png_const_charp msg) {
    img_png_io *io = png_get_error_ptr(png);
    snprintf(io->msg, sizeof io->msg, "%s", msg);
    longjmp(io->jb, 1);
}

static void img_png_quiet(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void img_png_read(png_structp png, png_bytep dst, png_size_t n) {
    img_png_io *io = png_get_io_ptr(png);
    if (n > io->len - io->pos) png_error(png, "truncated file");
    memcpy(dst, io->buf + io->pos, n);
    io->pos += n;
}

/* PIL's modes, then convert("RGB"): 8-bit samples as they are, 16-bit colour and alpha samples
 * by their high byte, 16-bit grayscale ("I;16") clipped to 255, palettes looked up, grayscale
 * replicated, alpha and transparency dropped. No gamma or colour profile is applied. */
static kn_status *img_decode_png(const uint8_t *buf, size_t len, const char *name, kn_image *out, int *orient) {
    img_png_io io;
    memset(&io, 0, sizeof io);
    io.buf = buf;
    io.len = len;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &io, img_png_fail, img_png_quiet);
    if (!png) return KN_OOM(sizeof(png_struct *));
    png_infop info = png_create_info_struct(png), end = png_create_info_struct(png);
    uint8_t *volatile data = NULL;
    png_bytep *volatile rows = NULL;
    uint8_t *volatile rgb = NULL;
    if (!info || !end) {
        png_destroy_read_struct(&png, info ? &info : NULL, end ? &end : NULL);
        return KN_OOM(sizeof(png_info *));
    }
    if (setjmp(io.jb)) {
        png_destroy_read_struct(&png, &info, &end);
        free(data);
        free(rows);
        free(rgb);
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: bad PNG data: %s", name, io.msg);
    }
    png_set_read_fn(png, &io, img_png_read);
    png_set_user_limits(png, 1u << 20, 1u << 20);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), ctype = png_get_color_type(png, info);
    if ((int64_t)w * h > KN_IMAGE_MAX_PIXELS) {
        png_destroy_read_struct(&png, &info, &end);
        return kn_error(KN_ERR_UNSUPPORTED, "%s: PNG of %ux%u pixels is too large", name, (unsigned)w, (unsigned)h);
    }
    /* PIL's info["transparency"]: a palette whose tRNS makes exactly one entry transparent and
     * the rest opaque gives that entry's colour; 8-bit gray and RGB give their tRNS colour */
    int has_key = 0;
    uint8_t key[3] = {0, 0, 0};
    png_bytep trns_alpha = NULL;
    int num_trns = 0;
    png_color_16p trns_color = NULL;
    if (png_get_tRNS(png, info, &trns_alpha, &num_trns, &trns_color)) {
        if (ctype == PNG_COLOR_TYPE_PALETTE && trns_alpha && num_trns > 0) {
            int zeros = 0, others = 0, idx = -1;
            for (int i = 0; i < num_trns; i++) {
                if (trns_alpha[i] == 0) {
                    zeros++;
                    idx = i;
                } else if (trns_alpha[i] != 255) others++;
            }
            png_colorp pal = NULL;
            int npal = 0;
            if (zeros == 1 && !others && png_get_PLTE(png, info, &pal, &npal) && idx < npal) {
                has_key = 1;
                key[0] = pal[idx].red;
                key[1] = pal[idx].green;
                key[2] = pal[idx].blue;
            }
        } else if (trns_color && depth == 8 && ctype == PNG_COLOR_TYPE_GRAY && trns_color->gray <= 255) {
            has_key = 1;
            key[0] = key[1] = key[2] = (uint8_t)trns_color->gray;
        } else if (trns_color && depth == 8 && ctype == PNG_COLOR_TYPE_RGB && trns_color->red <= 255 &&
                   trns_color->green <= 255 && trns_color->blue <= 255) {
            has_key = 1;
            key[0] = (uint8_t)trns_color->red;
            key[1] = (uint8_t)trns_color->green;
            key[2] = (uint8_t)trns_color->blue;
        }
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    bool gray16 = ctype == PNG_COLOR_TYPE_GRAY && depth == 16;
    if (depth == 16 && !gray16) png_set_strip_16(png); /* the high byte, as PIL's ";16B" raw modes */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info);
    size_t rb = png_get_rowbytes(png, info);
    data = malloc(rb * h);
    rows = malloc(sizeof(png_bytep) * h);
    rgb = malloc((size_t)w * h * 3);
    if (!data || !rows || !rgb) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) rows[y] = data + (size_t)y * rb;
    png_read_image(png, rows);
    png_read_end(png, end);
    png_bytep exif = NULL;
    png_uint_32 exif_len = 0;
    *orient = 1;
    if ((png_get_eXIf_1(png, info, &exif_len, &exif) || png_get_eXIf_1(png, end, &exif_len, &exif)) && exif)
        *orient = img_exif_orientation(exif, exif_len);
    for (png_uint_32 y = 0; y < h; y++) {
        const uint8_t *s = rows[y];
        uint8_t *o = rgb + (size_t)y * w * 3;
        for (png_uint_32 x = 0; x < w; x++, o += 3) {
            if (gray16) {
                unsigned v = (unsigned)s[2 * x] << 8 | s[2 * x + 1];
                o[0] = o[1] = o[2] = (uint8_t)(v > 255 ? 255 : v);
            } else if (ch <= 2) {
                o[0] = o[1] = o[2] = s[(size_t)x * (size_t)ch];
            } else {
                memcpy(o, s + (size_t)x * (size_t)ch, 3);
            }
        }
    }
    png_destroy_read_struct(&png, &info, &end);
    free(data);
    free(rows);
    out->px = rgb;
    out->w = (int)w;
    out->h = (int)h;
    out->has_key = has_key;
    memcpy(out->key, key, 3);
    return NULL;
}

kn_status *kn_image_decode(const uint8_t *buf, size_t len, const char *name, kn_image *out) {
    memset(out, 0, sizeof *out);
    out->orientation = 1;
    if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF)
        return img_decode_jpeg(buf, len, name, out, &out->orientation);
    if (len >= 8 && !memcmp(buf, "\x89PNG\r\n\x1a\n", 8)) return img_decode_png(buf, len, name, out, &out->orientation);
    return kn_error(KN_ERR_UNSUPPORTED, "%s: not a JPEG or PNG image (kiln decodes those two)", name);
}

/* The shape rule and params decoder are in graph/infer_misc.c. */

kn_status *kn_cpu_ImageDecoder(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                               kn_tensor *const *out, int n_out) {
    kn_pixel_format fmt = KN_PARAMS(node, image)->pixel_format;
    kn_image img;
    KN_TRY(kn_image_decode(in[0]->data, (size_t)kn_numel(in[0]), "ImageDecoder", &img));
    bool gray = fmt == KN_PIXEL_GRAY, bgr = fmt == KN_PIXEL_BGR;
    kn_tensor *o = out[0];
    memset(o, 0, sizeof *o);
    o->dtype = KN_U8;
    o->ndim = 3;
    o->dims[0] = img.h;
    o->dims[1] = img.w;
    o->dims[2] = gray ? 1 : 3;
    kn_status *st = kn_tensor_alloc_data(o);
    if (!st) {
        uint8_t *dst = o->data;
        for (int64_t p = 0; p < img.h * img.w; p++) {
            const uint8_t *s = img.px + p * 3;
            if (gray) dst[p] = (uint8_t)((s[0] * 19595u + s[1] * 38470u + s[2] * 7471u + 0x8000u) >> 16);
            else if (bgr) {
                dst[p * 3] = s[2];
                dst[p * 3 + 1] = s[1];
                dst[p * 3 + 2] = s[0];
            } else memcpy(dst + p * 3, s, 3);
        }
    }
    free(img.px);
    return st;
}
