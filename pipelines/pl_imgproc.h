/* Internal image loading and preprocessing for the image pipelines: decoding a JPEG or PNG file
 * to 8-bit RGB the way transformers' load_image does it (PIL open, EXIF transpose,
 * convert("RGB")), and turning it into pixel_values the way the PIL backend of the image
 * processor named by preprocessor_config.json does (resize, center crop, rescale, normalize). */
#ifndef KN_PL_IMGPROC_H
#define KN_PL_IMGPROC_H

#include "kernels/cpu/image_decode.h"
#include "runtime/core/status.h"
#include <json-c/json.h>
#include <stdint.h>

/* 8-bit RGB, h rows of w pixels, interleaved: the decoder's image (a PNG's transparent colour
 * comes with it; processors with do_convert_rgb paint those pixels white). */
typedef kn_image pl_rgb;

/* Decodes a file (JPEG or PNG, recognised by content) and applies its EXIF orientation. */
kn_status *pl_image_load(const char *path, pl_rgb *out);
/* The same from memory; name is what error messages call the data. */
kn_status *pl_image_decode(const uint8_t *buf, size_t len, const char *name, pl_rgb *out);
void pl_rgb_free(pl_rgb *im);

/* The preprocessing steps read from preprocessor_config.json (with the defaults of the class it
 * names). */
typedef struct pl_preproc {
    char klass[64]; /* image processor class, "Pil"/"Fast" suffixes dropped */
    int do_resize;
    int size_h, size_w; /* {height, width}; 0 when absent */
    int shortest_edge, longest_edge, max_h, max_w;
    int resample; /* PIL code: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming */
    int convnext; /* ConvNext's resize: shortest_edge / crop_pct then crop, or a plain square resize */
    double crop_pct;
    int do_center_crop;
    int crop_h, crop_w;
    int do_rescale;
    double rescale_factor;
    int do_normalize;
    float mean[3], std[3];
    int do_convert_rgb;
} pl_preproc;

/* Reads the configuration; cfg may be NULL (every default); model_type (config.json) picks the
 * class when the file names none. where names the file in errors. */
kn_status *pl_preproc_read(json_object *cfg, const char *model_type, const char *where, pl_preproc *out);

/* The output size the configuration gives for an image of w x h (after resize and crop). */
void pl_preproc_out_size(const pl_preproc *pp, int w, int h, int *ow, int *oh);

/* Resize, crop, rescale, normalize: writes 3 x oh x ow float32 (CHW) into out, which the caller
 * sized with pl_preproc_out_size. */
kn_status *pl_preprocess(const pl_preproc *pp, const pl_rgb *im, float *out);

/* PIL's Image.resize of an RGB image (its separable fixed-point filters; nearest through its
 * affine scaler). */
kn_status *pl_resize_pil(const pl_rgb *in, int ow, int oh, int resample, pl_rgb *out);

#endif
