/* The image pipelines against transformers (references written by gen_image_refs.py into
 * tests/pipelines/data/image_refs.json): decoding (RGB identical to load_image), preprocessing
 * (pixel_values bit-identical to the PIL image processor for every configuration and image: a
 * CRC of the float32 array, its sum, and sampled values within 1e-4), image-classification
 * answers (labels exact, scores within 1e-4, at several batch sizes), image-feature-extraction
 * rows and pooling, and bad files failing with a message naming them.
 *
 *   test_pl_image DATA_DIR
 *   test_pl_image --dump preprocessor_config.json IMAGE OUT.raw   (pixel_values as float32)
 *   test_pl_image --decode IMAGE OUT.raw                          (decoded RGB bytes) */
#include "pipelines/pipeline.h"
#include "pipelines/pl_imgproc.h"
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_fail, g_checks;

#define CHECK(cond, ...) \
    do { \
        g_checks++; \
        if (!(cond)) { \
            g_fail++; \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__); \
            fputc('\n', stderr); \
        } \
    } while (0)

static uint32_t crc32_bytes(const void *data, size_t n) {
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    const uint8_t *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static int report(kn_status *st, const char *what) {
    if (!st) return 0;
    fprintf(stderr, "%s: %s\n", what, kn_status_message(st));
    kn_status_free(st);
    return 1;
}

static json_object *get(json_object *o, const char *k) {
    json_object *v = NULL;
    json_object_object_get_ex(o, k, &v);
    return v;
}

/* Preprocesses one image with one configuration; *out malloc'd, 3 x oh x ow. */
static kn_status *preprocess(json_object *cfg, const char *where, const char *path, float **out, int *ow, int *oh) {
    pl_preproc pp;
    kn_status *st = pl_preproc_read(cfg, NULL, where, &pp);
    if (st) return st;
    pl_rgb im;
    if ((st = pl_image_load(path, &im))) return st;
    pl_preproc_out_size(&pp, im.w, im.h, ow, oh);
    *out = malloc(sizeof(float) * 3 * (size_t)*ow * (size_t)*oh);
    if (!*out) {
        pl_rgb_free(&im);
        return kn_error(KN_ERR_OUT_OF_MEMORY, "out of memory");
    }
    st = pl_preprocess(&pp, &im, *out);
    pl_rgb_free(&im);
    if (st) {
        free(*out);
        *out = NULL;
    }
    return st;
}

static int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        perror(path);
        if (f) fclose(f);
        return 1;
    }
    return fclose(f) != 0;
}

static int cmd_dump(const char *cfg_path, const char *img, const char *out) {
    json_object *cfg = json_object_from_file(cfg_path);
    if (!cfg) {
        fprintf(stderr, "%s: not JSON\n", cfg_path);
        return 1;
    }
    float *px = NULL;
    int w, h;
    int rc = report(preprocess(cfg, cfg_path, img, &px, &w, &h), img);
    if (!rc) rc = write_file(out, px, sizeof(float) * 3 * (size_t)w * h);
    free(px);
    json_object_put(cfg);
    return rc;
}

static int cmd_decode(const char *img, const char *out) {
    pl_rgb im;
    if (report(pl_image_load(img, &im), img)) return 1;
    int rc = write_file(out, im.px, (size_t)im.w * im.h * 3);
    pl_rgb_free(&im);
    return rc;
}

static void test_decode(const char *dir, json_object *refs) {
    int ok = 0, n = 0;
    json_object_object_foreach(get(refs, "decode"), name, ref) {
        char path[4096];
        snprintf(path, sizeof path, "%s/images/%s", dir, name);
        pl_rgb im;
        n++;
        kn_status *st = pl_image_load(path, &im);
        CHECK(!st, "decode %s: %s", name, st ? kn_status_message(st) : "");
        if (st) {
            kn_status_free(st);
            continue;
        }
        char crc[16];
        snprintf(crc, sizeof crc, "%08x", crc32_bytes(im.px, (size_t)im.w * im.h * 3));
        bool same = im.w == json_object_get_int(get(ref, "w")) && im.h == json_object_get_int(get(ref, "h")) &&
            !strcmp(crc, json_object_get_string(get(ref, "crc")));
        CHECK(same, "decode %s: %dx%d crc %s, load_image gives %dx%d crc %s", name, im.w, im.h, crc,
              json_object_get_int(get(ref, "w")), json_object_get_int(get(ref, "h")),
              json_object_get_string(get(ref, "crc")));
        ok += same;
        pl_rgb_free(&im);
    }
    printf("decode: %d/%d images identical to transformers' load_image\n", ok, n);
}

static void test_pixels(const char *dir, json_object *refs) {
    json_object *configs = get(refs, "configs");
    json_object_object_foreach(get(refs, "pixels"), cname, per_image) {
        json_object *cfg = get(configs, cname);
        int n = 0, exact = 0;
        double worst = 0;
        json_object_object_foreach(per_image, iname, ref) {
            char path[4096];
            snprintf(path, sizeof path, "%s/images/%s", dir, iname);
            float *px = NULL;
            int w, h;
            n++;
            kn_status *st = preprocess(cfg, cname, path, &px, &w, &h);
            CHECK(!st, "%s %s: %s", cname, iname, st ? kn_status_message(st) : "");
            if (st) {
                kn_status_free(st);
                continue;
            }
            json_object *shape = get(ref, "shape");
            bool shape_ok = json_object_get_int(json_object_array_get_idx(shape, 0)) == 3 &&
                json_object_get_int(json_object_array_get_idx(shape, 1)) == h &&
                json_object_get_int(json_object_array_get_idx(shape, 2)) == w;
            CHECK(shape_ok, "%s %s: shape 3x%dx%d differs from the reference", cname, iname, h, w);
            if (!shape_ok) {
                free(px);
                continue;
            }
            size_t cnt = 3 * (size_t)w * h;
            double sum = 0;
            for (size_t i = 0; i < cnt; i++) sum += px[i];
            json_object *samples = get(ref, "samples");
            for (size_t k = 0; k < json_object_array_length(samples); k++) {
                json_object *s = json_object_array_get_idx(samples, k);
                size_t idx = (size_t)json_object_get_int64(json_object_array_get_idx(s, 0));
                double want = json_object_get_double(json_object_array_get_idx(s, 1));
                double d = idx < cnt ? fabs(px[idx] - want) : INFINITY;
                if (d > worst) worst = d;
                CHECK(d <= 1e-4, "%s %s: value %zu is %.7g, transformers %.7g", cname, iname, idx,
                      idx < cnt ? px[idx] : NAN, want);
            }
            double want_sum = json_object_get_double(get(ref, "sum"));
            CHECK(fabs(sum - want_sum) <= 1e-6 * (double)cnt, "%s %s: sum %.9g, transformers %.9g", cname, iname, sum,
                  want_sum);
            char crc[16];
            snprintf(crc, sizeof crc, "%08x", crc32_bytes(px, cnt * sizeof(float)));
            bool same = !strcmp(crc, json_object_get_string(get(ref, "crc")));
            CHECK(same, "%s %s: pixel_values not bit-identical to transformers' (crc %s vs %s)", cname, iname, crc,
                  json_object_get_string(get(ref, "crc")));
            exact += same;
            free(px);
        }
        printf("preprocess %-16s %d/%d images bit-identical, max sampled diff %.3g\n", cname, exact, n, worst);
    }
}

static kn_pipeline *open_model(const char *dir, const char *name, int batch) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    kn_pl_options o;
    kn_pl_options_init(&o);
    o.batch_size = batch;
    kn_pipeline *p = NULL;
    kn_status *st = kn_pipeline_open(path, &o, &p);
    CHECK(!st, "open %s: %s", path, st ? kn_status_message(st) : "");
    kn_status_free(st);
    return p;
}

static void test_classification(const char *dir, json_object *refs) {
    json_object *cases = get(refs, "classification");
    static const int batches[] = {4, 1, 32};
    for (size_t c = 0; c < json_object_array_length(cases); c++) {
        json_object *cs = json_object_array_get_idx(cases, c), *opts = get(cs, "options"), *v;
        const char *model = json_object_get_string(get(cs, "model"));
        json_object *images = get(cs, "images"), *expected = get(cs, "expected");
        int n = (int)json_object_array_length(images);
        kn_pl_image_class_options o;
        kn_pl_image_class_options_init(&o);
        if ((v = get(opts, "top_k"))) o.top_k = json_object_get_int(v);
        if ((v = get(opts, "function_to_apply"))) {
            const char *f = json_object_get_string(v);
            o.activation = !strcmp(f, "sigmoid") ? KN_ACT_SIGMOID
                : !strcmp(f, "softmax")          ? KN_ACT_SOFTMAX
                                                 : KN_ACT_NONE;
        }
        const char **paths = calloc((size_t)n, sizeof *paths);
        char(*buf)[4096] = calloc((size_t)n, sizeof *buf);
        for (int i = 0; i < n; i++) {
            snprintf(buf[i], sizeof buf[i], "%s/images/%s", dir,
                     json_object_get_string(json_object_array_get_idx(images, i)));
            paths[i] = buf[i];
        }
        /* every option set once at batch size 4; the defaults also at 1 and 32 */
        int nb = json_object_object_length(opts) == 0 ? 3 : 1;
        for (int b = 0; b < nb; b++) {
            kn_pipeline *p = open_model(dir, model, batches[b]);
            if (!p) continue;
            kn_pl_labels *out = calloc((size_t)n, sizeof *out);
            kn_status *st = kn_pl_image_classification(p, n, paths, &o, out);
            CHECK(!st, "%s classification: %s", model, st ? kn_status_message(st) : "");
            kn_status_free(st);
            double worst = 0;
            int labels_ok = 0;
            for (int i = 0; !st && i < n; i++) {
                json_object *exp = json_object_array_get_idx(expected, i);
                int m = (int)json_object_array_length(exp);
                CHECK(out[i].n == m, "%s %s: %d results, transformers %d", model, paths[i], out[i].n, m);
                bool all = out[i].n == m;
                for (int k = 0; k < m && k < out[i].n; k++) {
                    json_object *e = json_object_array_get_idx(exp, k);
                    const char *want = json_object_get_string(get(e, "label"));
                    double ws = json_object_get_double(get(e, "score"));
                    bool lab = !strcmp(out[i].v[k].label, want);
                    double d = fabs(out[i].v[k].score - ws);
                    if (d > worst) worst = d;
                    CHECK(lab, "%s %s #%d: label %s, transformers %s", model, paths[i], k, out[i].v[k].label, want);
                    CHECK(d <= 1e-4, "%s %s #%d: score %.7g, transformers %.7g", model, paths[i], k, out[i].v[k].score,
                          ws);
                    all &= lab && d <= 1e-4;
                }
                labels_ok += all;
                kn_pl_labels_free(&out[i]);
            }
            printf("classify %-10s %-45s batch %2d: %d/%d images match, max score diff %.3g\n", model,
                   json_object_to_json_string_ext(opts, JSON_C_TO_STRING_PLAIN), batches[b], labels_ok, n, worst);
            free(out);
            kn_pipeline_free(p);
        }
        free(paths);
        free(buf);
    }
}

static double cmp_rows(const kn_pl_embedding *e, json_object *rows, bool nested, const char *what) {
    int nr = nested ? (int)json_object_array_length(rows) : 1;
    CHECK(e->n_tokens == nr, "%s: %d rows, transformers %d", what, e->n_tokens, nr);
    double worst = 0;
    for (int r = 0; r < nr && r < e->n_tokens; r++) {
        json_object *row = nested ? json_object_array_get_idx(rows, (size_t)r) : rows;
        int d = (int)json_object_array_length(row);
        CHECK(e->dim == d, "%s: dim %d, transformers %d", what, e->dim, d);
        for (int k = 0; k < d && k < e->dim; k++) {
            double diff =
                fabs(e->data[r * e->dim + k] - json_object_get_double(json_object_array_get_idx(row, (size_t)k)));
            if (diff > worst) worst = diff;
        }
    }
    CHECK(worst <= 1e-4, "%s: max diff %.3g", what, worst);
    return worst;
}

static void test_features(const char *dir, json_object *refs) {
    json_object *f = get(refs, "features");
    kn_pipeline *p = open_model(dir, json_object_get_string(get(f, "model")), 2);
    if (!p) return;
    json_object *images = get(f, "images");
    int n = (int)json_object_array_length(images);
    const char **paths = calloc((size_t)n, sizeof *paths);
    char(*buf)[4096] = calloc((size_t)n, sizeof *buf);
    for (int i = 0; i < n; i++) {
        snprintf(buf[i], sizeof buf[i], "%s/images/%s", dir,
                 json_object_get_string(json_object_array_get_idx(images, i)));
        paths[i] = buf[i];
    }
    static const struct {
        const char *key;
        kn_pl_pooling pool;
        const char *output;
    } modes[] = {{"tokens", KN_POOL_DEFAULT, NULL},
                 {"tokens", KN_POOL_NONE, "last_hidden_state"},
                 {"cls", KN_POOL_CLS, NULL},
                 {"mean", KN_POOL_MEAN, NULL},
                 {"pooler_output", KN_POOL_DEFAULT, "pooler_output"}};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        kn_pl_feature_options o;
        kn_pl_feature_options_init(&o);
        o.pooling = modes[m].pool;
        o.output_name = modes[m].output;
        kn_pl_embedding *out = calloc((size_t)n, sizeof *out);
        kn_status *st = kn_pl_image_features(p, n, paths, &o, out);
        CHECK(!st, "features %s: %s", modes[m].key, st ? kn_status_message(st) : "");
        kn_status_free(st);
        double worst = 0;
        for (int i = 0; !st && i < n; i++) {
            double d = cmp_rows(&out[i], json_object_array_get_idx(get(f, modes[m].key), (size_t)i),
                                !strcmp(modes[m].key, "tokens"), modes[m].key);
            if (d > worst) worst = d;
            kn_pl_embedding_free(&out[i]);
        }
        printf("features %-14s pooling %d: %d images, max diff %.3g\n", modes[m].key, (int)modes[m].pool, n, worst);
        free(out);
    }
    free(paths);
    free(buf);
    kn_pipeline_free(p);
}

/* Bad files fail the call with a message naming the file; nothing crashes or leaks. */
static void test_errors(const char *dir) {
    char tmpl[] = "/tmp/kiln_img_XXXXXX";
    char *tmp = mkdtemp(tmpl);
    CHECK(tmp != NULL, "mkdtemp");
    if (!tmp) return;
    char good_png[4096], good_jpg[4096];
    snprintf(good_png, sizeof good_png, "%s/images/rgb_37x53.png", dir);
    snprintf(good_jpg, sizeof good_jpg, "%s/images/rgb_64x48.jpg", dir);
    FILE *f = fopen(good_png, "rb");
    uint8_t png[8192];
    size_t png_n = f ? fread(png, 1, sizeof png, f) : 0;
    if (f) fclose(f);
    f = fopen(good_jpg, "rb");
    uint8_t jpg[8192];
    size_t jpg_n = f ? fread(jpg, 1, sizeof jpg, f) : 0;
    (void)jpg_n;
    if (f) fclose(f);
    uint8_t garbage[600];
    for (size_t i = 0; i < sizeof garbage; i++) garbage[i] = (uint8_t)(i * 37 + 11);
    memcpy(garbage, "\xFF\xD8\xFF\xE0", 4);
    struct {
        const char *name;
        const void *data;
        size_t n;
    } bad[] = {
        {"empty.jpg", "", 0},         {"text.png", "hello, not an image\n", 20}, {"truncated.png", png, png_n / 3},
        {"header_only.png", png, 30}, {"garbage.jpg", garbage, sizeof garbage},  {"truncated_header.jpg", jpg, 40},
        {"missing.jpg", NULL, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", tmp, bad[i].name);
        if (bad[i].data) write_file(path, bad[i].data, bad[i].n);
        pl_rgb im;
        kn_status *st = pl_image_load(path, &im);
        CHECK(st != NULL, "%s decoded without an error", bad[i].name);
        if (!st) {
            pl_rgb_free(&im);
            continue;
        }
        CHECK(strstr(kn_status_message(st), path) != NULL, "%s: the message does not name the file: %s", bad[i].name,
              kn_status_message(st));
        kn_status_free(st);
    }
    /* through the pipeline: the failing file fails the whole call and is named */
    kn_pipeline *p = open_model(dir, "vit_cls", 2);
    if (p) {
        char path[4200];
        snprintf(path, sizeof path, "%s/garbage.jpg", tmp);
        const char *paths[3] = {good_png, path, good_jpg};
        kn_pl_labels out[3];
        kn_status *st = kn_pl_image_classification(p, 3, paths, NULL, out);
        CHECK(st && strstr(kn_status_message(st), path), "classification with a bad file: %s",
              st ? kn_status_message(st) : "no error");
        kn_status_free(st);
        kn_pipeline_free(p);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", tmp, bad[i].name);
        remove(path);
    }
    remove(tmp);
    printf("errors: %zu bad files rejected with their path in the message\n", sizeof bad / sizeof bad[0]);
}

int main(int argc, char **argv) {
    if (argc == 5 && !strcmp(argv[1], "--dump")) return cmd_dump(argv[2], argv[3], argv[4]);
    if (argc == 4 && !strcmp(argv[1], "--decode")) return cmd_decode(argv[2], argv[3]);
    if (argc != 2) {
        fprintf(stderr, "usage: %s DATA_DIR | --dump CONFIG IMAGE OUT | --decode IMAGE OUT\n", argv[0]);
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/image_refs.json", argv[1]);
    json_object *refs = json_object_from_file(path);
    if (!refs) {
        fprintf(stderr, "%s: cannot read\n", path);
        return 1;
    }
    test_decode(argv[1], refs);
    test_pixels(argv[1], refs);
    test_classification(argv[1], refs);
    test_features(argv[1], refs);
    test_errors(argv[1]);
    json_object_put(refs);
    printf("%d checks, %d failed\n", g_checks, g_fail);
    return g_fail ? 1 : 0;
}
