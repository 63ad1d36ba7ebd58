/* ImageDecoder (opset 20): JPEG through libjpeg-turbo and PNG through libpng into uint8 HWC in
 * RGB, BGR or Grayscale. The decoders are also what the image pipelines use (kn_image_decode).
 * Grayscale is derived from RGB with the ITU-R 601 weights in 16-bit fixed point, the conversion
 * the ONNX reference's imaging library applies. */
#include "graph/ops.h"
#include <stdio.h> /* before jpeglib.h, which uses FILE */
#include <jpeglib.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

/* Decoded image: 8-bit RGB, h * w * 3 bytes, malloc'd. */
typedef struct kn_image { int64_t h, w; uint8_t *rgb; } kn_image;
kn_status *kn_image_decode(const uint8_t *buf, size_t len, kn_image *out);

#define KN_IMAGE_MAX_PIXELS ((int64_t)1 << 28)

typedef struct { struct jpeg_error_mgr mgr; jmp_buf jb; char msg[JMSG_LENGTH_MAX]; } kn_jpeg_err;

static void kn_jpeg_fail(j_common_ptr c) {
    kn_jpeg_err *e = (kn_jpeg_err *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}

/* libjpeg would print warnings (a truncated stream, say) to stderr; kiln reports errors itself */
static void kn_jpeg_quiet(j_common_ptr c) { (void)c; }

static kn_status *kn_decode_jpeg(const uint8_t *buf, size_t len, kn_image *out) {
    struct jpeg_decompress_struct d;
    kn_jpeg_err err;
    /* volatile: survives the longjmp back from libjpeg's error handler */
    uint8_t *volatile rgb = NULL;
    d.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = kn_jpeg_fail;
    err.mgr.output_message = kn_jpeg_quiet;
    if (setjmp(err.jb)) {
        jpeg_destroy_decompress(&d);
        free(rgb);
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ImageDecoder: bad JPEG data: %s", err.msg);
    }
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, buf, (unsigned long)len);
    jpeg_read_header(&d, TRUE);
    d.out_color_space = JCS_RGB;
    jpeg_start_decompress(&d);
    int64_t h = d.output_height, w = d.output_width;
    if (h * w > KN_IMAGE_MAX_PIXELS || d.output_components != 3) {
        jpeg_destroy_decompress(&d);
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ImageDecoder: JPEG of %lldx%lld with %d components is not supported",
                        (long long)w, (long long)h, d.output_components);
    }
    rgb = malloc((size_t)(h * w * 3));
    if (!rgb) { jpeg_destroy_decompress(&d); return KN_OOM((size_t)(h * w * 3)); }
    while (d.output_scanline < d.output_height) {
        JSAMPROW row = rgb + (size_t)d.output_scanline * (size_t)w * 3;
        jpeg_read_scanlines(&d, &row, 1);
    }
    jpeg_finish_decompress(&d);
    jpeg_destroy_decompress(&d);
    *out = (kn_image){h, w, rgb};
    return NULL;
}

static kn_status *kn_decode_png(const uint8_t *buf, size_t len, kn_image *out) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, buf, len))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "ImageDecoder: bad PNG data: %s", img.message);
    img.format = PNG_FORMAT_RGB;
    int64_t h = img.height, w = img.width;
    if (h * w > KN_IMAGE_MAX_PIXELS) { png_image_free(&img); return kn_error(KN_ERR_INVALID_ARGUMENT, "ImageDecoder: PNG of %lldx%lld is too large", (long long)w, (long long)h); }
    uint8_t *rgb = malloc(PNG_IMAGE_SIZE(img));
    if (!rgb) { png_image_free(&img); return KN_OOM(PNG_IMAGE_SIZE(img)); }
    if (!png_image_finish_read(&img, NULL, rgb, 0, NULL)) {
        free(rgb);
        kn_status *st = kn_error(KN_ERR_INVALID_ARGUMENT, "ImageDecoder: bad PNG data: %s", img.message);
        png_image_free(&img);
        return st;
    }
    *out = (kn_image){h, w, rgb};
    return NULL;
}

kn_status *kn_image_decode(const uint8_t *buf, size_t len, kn_image *out) {
    memset(out, 0, sizeof *out);
    if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF) return kn_decode_jpeg(buf, len, out);
    if (len >= 8 && memcmp(buf, "\x89PNG\r\n\x1a\n", 8) == 0) return kn_decode_png(buf, len, out);
    return kn_error(KN_ERR_UNSUPPORTED, "ImageDecoder: unsupported image format (kiln decodes JPEG and PNG)");
}

/* The shape rule and params decoder are in graph/infer_misc.c. */

kn_status *kn_cpu_ImageDecoder(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                               kn_tensor *const *out, int n_out) {
    kn_pixel_format fmt = KN_PARAMS(node, image)->pixel_format;
    kn_image img;
    KN_TRY(kn_image_decode(in[0]->data, (size_t)kn_numel(in[0]), &img));
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
            const uint8_t *s = img.rgb + p * 3;
            if (gray) dst[p] = (uint8_t)((s[0] * 19595u + s[1] * 38470u + s[2] * 7471u + 0x8000u) >> 16);
            else if (bgr) { dst[p * 3] = s[2]; dst[p * 3 + 1] = s[1]; dst[p * 3 + 2] = s[0]; }
            else memcpy(dst + p * 3, s, 3);
        }
    }
    free(img.rgb);
    return st;
}
