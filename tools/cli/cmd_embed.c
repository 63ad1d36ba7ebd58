/* `kiln embed`: sentence embeddings from a Hugging Face / sentence-transformers model folder,
 * texts from the command line or one per line on stdin, one JSON line {"input", "embedding"} per
 * text on stdout. A thin front end over the featureExtraction pipeline (pipelines/pl_feature.c),
 * kept for its simple line format; `kiln run --type featureExtraction` is the general one. */
#ifdef KILN_HAVE_PIPELINES
#include "tools/cli/cli.h"
#include "pipelines/pipeline.h"
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kn_status *kn_embed_batch(const kn_pipeline *p, const kn_pl_feature_options *fo, char **texts, int n) {
    kn_pl_embedding *e = calloc((size_t)n, sizeof *e);
    if (!e) return KN_OOM(sizeof *e * (size_t)n);
    kn_status *st = kn_pl_feature_extraction(p, n, (const char *const *)texts, fo, e);
    for (int i = 0; !st && i < n; i++) {
        json_object *line = json_object_new_object();
        json_object_object_add(line, "input", json_object_new_string(texts[i]));
        json_object *arr = json_object_new_array();
        for (size_t k = 0; k < (size_t)e[i].n_tokens * (size_t)e[i].dim; k++)
            json_object_array_add(arr, isfinite(e[i].data[k]) ? json_object_new_double(e[i].data[k]) : NULL);
        json_object_object_add(line, "embedding", arr);
        printf("%s\n", json_object_to_json_string_ext(line, JSON_C_TO_STRING_PLAIN));
        json_object_put(line);
    }
    for (int i = 0; i < n; i++) kn_pl_embedding_free(&e[i]);
    free(e);
    return st;
}

int kn_cmd_embed(int argc, char **argv) {
    const char *dir = NULL, *pool_opt = NULL;
    kn_pl_options po;
    kn_pl_options_init(&po);
    kn_pl_feature_options fo;
    kn_pl_feature_options_init(&fo);
    char **texts = NULL;
    int n_texts = 0, rc = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) dir = argv[++i];
        else if (strcmp(argv[i], "--onnx-file") == 0 && i + 1 < argc) po.onnx_file = argv[++i];
        else if (strcmp(argv[i], "--pooling") == 0 && i + 1 < argc) pool_opt = argv[++i];
        else if (strcmp(argv[i], "--normalize") == 0) fo.normalize = 1;
        else if (strcmp(argv[i], "--batch-size") == 0 && i + 1 < argc) po.batch_size = atoi(argv[++i]);
        else if (strcmp(argv[i], "--max-length") == 0 && i + 1 < argc) po.max_length = atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) po.session.num_threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
            if (kn_cli_parse_device(argv[++i], &po.session)) {
                rc = 2;
                goto done;
            }
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            fprintf(stderr, "kiln embed: unknown option %s\n", argv[i]);
            rc = 2;
            goto done;
        } else {
            char **t = realloc(texts, sizeof(char *) * (size_t)(n_texts + 1));
            if (!t) {
                rc = 1;
                goto done;
            }
            texts = t;
            texts[n_texts++] = argv[i];
        }
    }
    if (pool_opt) {
        static const struct {
            const char *name;
            kn_pl_pooling mode;
        } pools[] = {{"mean", KN_POOL_MEAN}, {"cls", KN_POOL_CLS}, {"max", KN_POOL_MAX}, {"last", KN_POOL_LAST}};
        fo.pooling = KN_POOL_DEFAULT;
        for (size_t k = 0; k < sizeof pools / sizeof pools[0]; k++)
            if (!strcmp(pool_opt, pools[k].name)) fo.pooling = pools[k].mode;
        if (fo.pooling == KN_POOL_DEFAULT) {
            fprintf(stderr, "kiln embed: unknown pooling '%s' (mean, cls, max, last)\n", pool_opt);
            rc = 2;
            goto done;
        }
    }
    if (!dir || po.batch_size < 1 || po.max_length < 0) {
        fprintf(stderr,
                "usage: kiln embed --model DIR [--onnx-file F] [--pooling mean|cls|max|last] [--normalize] "
                "[--batch-size N] [--max-length N]\n"
                "                  [--threads N] [--device cpu|cuda[:N]] [TEXT...]\n"
                "       (texts from stdin, one per line, when none are given)\n");
        rc = 2;
        goto done;
    }
    kn_pipeline *p = NULL;
    kn_status *st = kn_pipeline_open(dir, &po, &p);
    int batch = po.batch_size;
    if (!st && n_texts == 0) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        int have = 0;
        char **buf = calloc((size_t)batch, sizeof(char *));
        if (!buf) st = KN_OOM(sizeof(char *) * (size_t)batch);
        while (!st && (len = getline(&line, &cap, stdin)) >= 0) {
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
            if (!(buf[have] = strdup(line))) {
                st = KN_OOM(len);
                break;
            }
            if (++have == batch) {
                st = kn_embed_batch(p, &fo, buf, have);
                for (int i = 0; i < have; i++) free(buf[i]);
                have = 0;
            }
        }
        if (!st && have) st = kn_embed_batch(p, &fo, buf, have);
        for (int i = 0; buf && i < have; i++) free(buf[i]);
        free(buf);
        free(line);
    }
    for (int i = 0; !st && i < n_texts; i += batch)
        st = kn_embed_batch(p, &fo, texts + i, n_texts - i < batch ? n_texts - i : batch);
    if (st) {
        fprintf(stderr, "kiln: error: %s\n", kn_status_message(st));
        kn_status_free(st);
        rc = 1;
    }
    kn_pipeline_free(p);
done:
    free(texts);
    return rc;
}
#endif
