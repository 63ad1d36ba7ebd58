/* `kiln embed`: sentence embeddings from a Hugging Face / sentence-transformers model folder
 * (model.onnx or onnx/model.onnx, tokenizer.json, 1_Pooling/config.json, modules.json), texts from
 * the command line or one per line on stdin, one JSON line per text on stdout. Pooling follows the
 * folder's config (mean, cls, max) unless --pooling says otherwise; --normalize (or a Normalize
 * module) L2-normalises. Batches are padded to their longest text. */
#ifdef KILN_HAVE_PIPELINES
#include "cli.h"
#include "tokenizer.h"
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef enum { KN_POOL_MEAN, KN_POOL_CLS, KN_POOL_MAX } kn_pooling;

static bool kn_exists(const char *p) { struct stat st; return stat(p, &st) == 0; }

static void kn_read_pooling(const char *dir, kn_pooling *pool, bool *normalize) {
    char p[4096];
    snprintf(p, sizeof p, "%s/1_Pooling/config.json", dir);
    json_object *j = json_object_from_file(p);
    if (j) {
        json_object *v;
        if (json_object_object_get_ex(j, "pooling_mode_cls_token", &v) && json_object_get_boolean(v)) *pool = KN_POOL_CLS;
        if (json_object_object_get_ex(j, "pooling_mode_max_tokens", &v) && json_object_get_boolean(v)) *pool = KN_POOL_MAX;
        if (json_object_object_get_ex(j, "pooling_mode_mean_tokens", &v) && json_object_get_boolean(v)) *pool = KN_POOL_MEAN;
        json_object_put(j);
    }
    snprintf(p, sizeof p, "%s/modules.json", dir);
    j = json_object_from_file(p);
    if (j && json_object_is_type(j, json_type_array))
        for (size_t i = 0; i < json_object_array_length(j); i++) {
            json_object *m = json_object_array_get_idx(j, i), *t;
            if (json_object_object_get_ex(m, "type", &t) && strstr(json_object_get_string(t), "Normalize")) *normalize = true;
        }
    if (j) json_object_put(j);
}

/* Embeds texts[0..n) as one padded batch and prints them. */
static kn_status *kn_embed_batch(kn_session *s, const kn_tokenizer *tok, int max_len, char **texts, int n,
                                 kn_pooling pool, bool normalize) {
    kn_encoding *enc = calloc((size_t)n, sizeof *enc);
    if (!enc) return KN_OOM(0);
    kn_encode_options eo;
    kn_encode_options_init(&eo);
    eo.max_length = max_len;
    char err[512];
    size_t *lens = malloc(sizeof(size_t) * (size_t)n);
    for (int i = 0; i < n; i++) lens[i] = strlen(texts[i]);
    kn_status *st = NULL;
    if (kn_tokenizer_encode_batch(tok, n, (const char *const *)texts, lens, NULL, NULL, &eo, 0, enc, err, sizeof err) != 0)
        st = kn_error(KN_ERR_INVALID_ARGUMENT, "tokenizer: %s", err);
    int64_t seq = 1;
    for (int i = 0; !st && i < n; i++) if (enc[i].n > seq) seq = enc[i].n;
    int64_t *ids = calloc((size_t)(n * seq), sizeof(int64_t)), *mask = calloc((size_t)(n * seq), sizeof(int64_t));
    int64_t *types = calloc((size_t)(n * seq), sizeof(int64_t));
    if (!st && (!ids || !mask || !types)) st = KN_OOM(0);
    for (int i = 0; !st && i < n; i++)
        for (int k = 0; k < enc[i].n; k++) {
            ids[i * seq + k] = enc[i].ids[k];
            mask[i * seq + k] = enc[i].attention_mask ? enc[i].attention_mask[k] : 1;
            types[i * seq + k] = enc[i].type_ids ? enc[i].type_ids[k] : 0;
        }
    kn_named_tensor in[8];
    int n_in = 0;
    for (int k = 0; !st && k < kn_session_input_count(s) && k < 8; k++) {
        kn_value_info vi;
        st = kn_session_input_info(s, k, &vi);
        if (st) break;
        int64_t *src = strcmp(vi.name, "input_ids") == 0 ? ids : strcmp(vi.name, "attention_mask") == 0 ? mask
                     : strcmp(vi.name, "token_type_ids") == 0 ? types : NULL;
        if (!src) { st = kn_error(KN_ERR_INVALID_ARGUMENT, "model input '%s' is not one kiln embed knows (input_ids, attention_mask, token_type_ids)", vi.name); break; }
        if (vi.dtype != KN_I64) { st = kn_error(KN_ERR_UNSUPPORTED, "model input '%s' is %s; kiln embed feeds int64", vi.name, kn_dtype_name(vi.dtype)); break; }
        in[n_in++] = (kn_named_tensor){.name = vi.name, .dtype = KN_I64, .ndim = 2, .dims = {n, seq}, .data = src};
    }
    kn_named_tensor out = {0};
    if (!st) {
        kn_value_info vi;
        st = kn_session_output_info(s, 0, &vi);
        out.name = vi.name;
    }
    if (!st) st = kn_session_run(s, in, n_in, &out, 1);
    if (!st && (out.ndim != 3 || out.dtype != KN_F32 || out.dims[0] != n || out.dims[1] != seq))
        st = kn_error(KN_ERR_UNSUPPORTED, "first model output '%s' is not float32[batch, sequence, hidden]", out.name);
    for (int i = 0; !st && i < n; i++) {
        int64_t H = out.dims[2];
        const float *h = (const float *)out.data + (size_t)i * seq * H;
        double *e = calloc((size_t)H, sizeof(double));
        double count = 0;
        for (int64_t d = 0; d < H; d++) e[d] = pool == KN_POOL_MAX ? -INFINITY : 0;
        for (int64_t t = 0; t < seq; t++) {
            if (!mask[i * seq + t]) continue;
            if (pool == KN_POOL_CLS && t > 0) break;
            count++;
            for (int64_t d = 0; d < H; d++)
                e[d] = pool == KN_POOL_MAX ? fmax(e[d], h[t * H + d]) : e[d] + h[t * H + d];
        }
        double norm = 0;
        for (int64_t d = 0; d < H; d++) {
            if (pool == KN_POOL_MEAN) e[d] /= count > 0 ? count : 1;
            norm += e[d] * e[d];
        }
        norm = normalize ? fmax(sqrt(norm), 1e-12) : 1.0;
        json_object *line = json_object_new_object();
        json_object_object_add(line, "input", json_object_new_string(texts[i]));
        json_object *arr = json_object_new_array();
        for (int64_t d = 0; d < H; d++) json_object_array_add(arr, json_object_new_double(e[d] / norm));
        json_object_object_add(line, "embedding", arr);
        printf("%s\n", json_object_to_json_string_ext(line, JSON_C_TO_STRING_PLAIN));
        json_object_put(line);
        free(e);
    }
    free(out.data);
    for (int i = 0; i < n; i++) kn_encoding_free(&enc[i]);
    free(enc); free(lens); free(ids); free(mask); free(types);
    return st;
}

int kn_cmd_embed(int argc, char **argv) {
    const char *dir = NULL, *onnx_file = NULL, *pool_opt = NULL;
    bool normalize = false;
    int batch = 32, max_len = 0;
    kn_session_options o;
    kn_session_options_init(&o);
    char **texts = NULL;
    int n_texts = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) dir = argv[++i];
        else if (strcmp(argv[i], "--onnx-file") == 0 && i + 1 < argc) onnx_file = argv[++i];
        else if (strcmp(argv[i], "--pooling") == 0 && i + 1 < argc) pool_opt = argv[++i];
        else if (strcmp(argv[i], "--normalize") == 0) normalize = true;
        else if (strcmp(argv[i], "--batch-size") == 0 && i + 1 < argc) batch = atoi(argv[++i]);
        else if (strcmp(argv[i], "--max-length") == 0 && i + 1 < argc) max_len = atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) o.num_threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) { if (kn_cli_parse_device(argv[++i], &o)) return 2; }
        else if (argv[i][0] == '-' && argv[i][1] == '-') { fprintf(stderr, "kiln embed: unknown option %s\n", argv[i]); return 2; }
        else { texts = realloc(texts, sizeof(char *) * (size_t)(n_texts + 1)); texts[n_texts++] = strdup(argv[i]); }
    }
    if (!dir || batch < 1) {
        fprintf(stderr, "usage: kiln embed --model DIR [--onnx-file F] [--pooling mean|cls|max] [--normalize] [--batch-size N] [--max-length N] [TEXT...]\n"
                        "       (texts from stdin, one per line, when none are given)\n");
        return 2;
    }
    kn_pooling pool = KN_POOL_MEAN;
    kn_read_pooling(dir, &pool, &normalize);
    if (pool_opt) {
        if (!strcmp(pool_opt, "mean")) pool = KN_POOL_MEAN;
        else if (!strcmp(pool_opt, "cls")) pool = KN_POOL_CLS;
        else if (!strcmp(pool_opt, "max")) pool = KN_POOL_MAX;
        else { fprintf(stderr, "kiln embed: unknown pooling '%s'\n", pool_opt); return 2; }
    }
    char mp[4096];
    if (onnx_file) snprintf(mp, sizeof mp, "%s", onnx_file);
    else {
        snprintf(mp, sizeof mp, "%s/model.onnx", dir);
        if (!kn_exists(mp)) snprintf(mp, sizeof mp, "%s/onnx/model.onnx", dir);
    }
    char err[512];
    kn_tokenizer *tok = kn_tokenizer_load(dir, err, sizeof err);
    if (!tok) { fprintf(stderr, "kiln: error: %s\n", err); return 1; }
    kn_model *m = NULL;
    kn_session *s = NULL;
    kn_status *st = kn_model_load(mp, &m);
    if (!st) st = kn_session_create(m, &o, &s);
    if (!st && n_texts == 0) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        int have = 0;
        char **buf = malloc(sizeof(char *) * (size_t)batch);
        while (!st && (len = getline(&line, &cap, stdin)) >= 0) {
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
            buf[have++] = strdup(line);
            if (have == batch) {
                st = kn_embed_batch(s, tok, max_len, buf, have, pool, normalize);
                for (int i = 0; i < have; i++) free(buf[i]);
                have = 0;
            }
        }
        if (!st && have) st = kn_embed_batch(s, tok, max_len, buf, have, pool, normalize);
        for (int i = 0; i < have; i++) free(buf[i]);
        free(buf);
        free(line);
    }
    for (int i = 0; !st && i < n_texts; i += batch)
        st = kn_embed_batch(s, tok, max_len, texts + i, n_texts - i < batch ? n_texts - i : batch, pool, normalize);
    int rc = 0;
    if (st) { fprintf(stderr, "kiln: error: %s\n", kn_status_message(st)); kn_status_free(st); rc = 1; }
    for (int i = 0; i < n_texts; i++) free(texts[i]);
    free(texts);
    kn_session_free(s);
    kn_model_free(m);
    kn_tokenizer_free(tok);
    return rc;
}
#endif
