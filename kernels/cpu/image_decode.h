/* The one JPEG/PNG decoder of kiln, used by the ImageDecoder op and by the image pipelines: what
 * PIL's Image.open + convert("RGB") gives (libjpeg-turbo and libpng underneath), plus the EXIF
 * orientation for callers that transpose as ImageOps.exif_transpose does (the pipelines; the op
 * does not) and a PNG's single transparent colour as PIL keeps it. */
#ifndef KN_IMAGE_DECODE_H
#define KN_IMAGE_DECODE_H
#include "runtime/core/status.h"
#include <stddef.h>
#include <stdint.h>

typedef struct kn_image {
    int w, h;
    uint8_t *px;     /* h rows of w RGB pixels, malloc'd; the caller frees */
    int orientation; /* EXIF Orientation 1..8 (1 when absent or malformed) */
    int has_key;     /* a PNG tRNS colour PIL keeps in info["transparency"] */
    uint8_t key[3];
} kn_image;

#define KN_IMAGE_MAX_PIXELS ((int64_t)1 << 28)

/* Decodes buf (JPEG or PNG, recognised by content); name is what error messages call the data. */
kn_status *kn_image_decode(const uint8_t *buf, size_t len, const char *name, kn_image *out);

#endif
