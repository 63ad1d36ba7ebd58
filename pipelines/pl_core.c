/* Opening a model folder for the pipelines (model file, config.json, tokenizer, preprocessor
 * and sentence-transformers files, input roles) and the batch runner every task uses. */
#include "pipelines/pl_internal.h"
#include "runtime/core/dtype.h"
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

void kn_pl_options_init(kn_pl_options *o) {
    memset(o, 0, sizeof *o);
    kn_session_options_init(&o->session);
    o->batch_size = 32;
}

static void pl_log_to_warn(void *user, kn_log_level level, const char *msg) {
    const kn_pipeline *p = user;
    p->opt.warn(p->opt.warn_ctx, msg);
}

/* Warnings go to the pipeline's warn, else to its session's log callback, else to stderr. */
void pl_warn(const kn_pipeline *p, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p && p->opt.warn) p->opt.warn(p->opt.warn_ctx, msg);
    else if (p && p->opt.session.log) p->opt.session.log(p->opt.session.log_user, KN_LOG_WARNING, msg);
    else kn_log_stderr(NULL, KN_LOG_WARNING, msg);
}

const char *pl_json_str(json_object *o, const char *key, const char *dflt) {
    json_object *v;
    if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return dflt;
}

int64_t pl_json_int(json_object *o, const char *key, int64_t dflt) {
    json_object *v;
    if (o && json_object_object_get_ex(o, key, &v) &&
        (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)))
        return json_object_get_int64(v);
    return dflt;
}

static bool pl_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static bool pl_is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A JSON file of the folder, or NULL when absent; a malformed one is an error. */
static kn_status *pl_read_json(const char *dir, const char *name, json_object **out) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *out = NULL;
    if (!pl_exists(path)) return NULL;
    json_object *j = json_object_from_file(path);
    if (!j)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: not valid JSON (%s)", path,
                        json_util_get_last_err() ? json_util_get_last_err() : "parse error");
    if (!json_object_is_type(j, json_type_object) && !json_object_is_type(j, json_type_array)) {
        json_object_put(j);
        return kn_error(KN_ERR_INVALID_MODEL, "%s: expected a JSON object", path);
    }
    *out = j;
    return NULL;
}

/* The model file: opt->onnx_file, else model.onnx at the root or under onnx/, else the only
 * .onnx file there. */
static kn_status *pl_find_onnx(const char *dir, const char *onnx_file, char *path, size_t len) {
    if (onnx_file) {
        if (onnx_file[0] == '/' || pl_exists(onnx_file)) snprintf(path, len, "%s", onnx_file);
        else snprintf(path, len, "%s/%s", dir, onnx_file);
        if (!pl_exists(path)) return kn_error(KN_ERR_IO, "%s: the --onnx-file '%s' does not exist", dir, onnx_file);
        return NULL;
    }
    static const char *const sub[] = {"", "/onnx"};
    for (int k = 0; k < 2; k++) {
        snprintf(path, len, "%s%s/model.onnx", dir, sub[k]);
        if (pl_exists(path)) return NULL;
    }
    char found[2][1024];
    int n = 0;
    for (int k = 0; k < 2; k++) {
        char d[4096];
        snprintf(d, sizeof d, "%s%s", dir, sub[k]);
        DIR *dp = opendir(d);
        if (!dp) continue;
        struct dirent *e;
        while ((e = readdir(dp))) {
            size_t l = strlen(e->d_name);
            if (l > 5 && !strcmp(e->d_name + l - 5, ".onnx")) {
                if (n < 2) snprintf(found[n], sizeof found[n], "%s%.1000s", sub[k][0] ? "onnx/" : "", e->d_name);
                if (n < 1 && strlen(d) + l + 2 <= len) {
                    memcpy(path, d, strlen(d));
                    path[strlen(d)] = '/';
                    memcpy(path + strlen(d) + 1, e->d_name, l + 1);
                }
                n++;
            }
        }
        closedir(dp);
    }
    if (n == 1) return NULL;
    if (n == 0) return kn_error(KN_ERR_IO, "%s: no model: no .onnx file at the root or under onnx/", dir);
    return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: %d .onnx files (%s, %s, ...); choose one with --onnx-file", dir, n,
                    found[0], found[1]);
}

static kn_status *pl_read_labels(kn_pipeline *p) {
    json_object *id2label;
    int64_t declared = pl_json_int(p->config, "num_labels", 0);
    int n = 0;
    if (p->config && json_object_object_get_ex(p->config, "id2label", &id2label) &&
        json_object_is_type(id2label, json_type_object)) {
        json_object_object_foreach(id2label, k, v) {
            (void)v;
            char *end;
            long id = strtol(k, &end, 10);
            if (*end || id < 0 || id > 1000000)
                return kn_error(KN_ERR_INVALID_MODEL, "%s/config.json: id2label key '%s' is not a label id", p->dir, k);
            if (id + 1 > n) n = (int)id + 1;
        }
        p->labels = calloc((size_t)n + 1, sizeof *p->labels);
        if (!p->labels) return KN_OOM(n);
        json_object_object_foreach(id2label, k2, v2) {
            long id = strtol(k2, NULL, 10);
            if (!json_object_is_type(v2, json_type_string))
                return kn_error(KN_ERR_INVALID_MODEL, "%s/config.json: id2label[%s] is not a string", p->dir, k2);
            p->labels[id] = strdup(json_object_get_string(v2));
        }
    }
    if (n == 0 && declared > 0 && declared < 1000000) {
        n = (int)declared;
        p->labels = calloc((size_t)n + 1, sizeof *p->labels);
        if (!p->labels) return KN_OOM(n);
    }
    for (int i = 0; i < n; i++) {
        if (p->labels[i]) continue;
        char b[32];
        snprintf(b, sizeof b, "LABEL_%d", i);
        p->labels[i] = strdup(b);
    }
    p->num_labels = n;
    return NULL;
}

/* Pooling and normalisation from sentence-transformers' modules.json and 1_Pooling/config.json
 * (the pooling module's folder is read from modules.json when it names one). */
static kn_status *pl_read_st(kn_pipeline *p) {
    json_object *mods = NULL, *pool = NULL, *stc = NULL;
    KN_TRY(pl_read_json(p->dir, "modules.json", &mods));
    char pool_dir[512] = "1_Pooling";
    if (mods && json_object_is_type(mods, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(mods); i++) {
            json_object *m = json_object_array_get_idx(mods, i);
            const char *type = pl_json_str(m, "type", "");
            if (strstr(type, "Normalize")) p->normalize = 1;
            if (strstr(type, "Pooling")) {
                const char *path = pl_json_str(m, "path", NULL);
                if (path && *path && !strstr(path, "..")) snprintf(pool_dir, sizeof pool_dir, "%s", path);
            }
        }
    }
    char rel[600];
    snprintf(rel, sizeof rel, "%s/config.json", pool_dir);
    kn_status *st = pl_read_json(p->dir, rel, &pool);
    if (st) {
        json_object_put(mods);
        return st;
    }
    if (pool) {
        json_object *v;
        static const struct {
            const char *key;
            kn_pl_pooling mode;
        } keys[] = {{"pooling_mode_cls_token", KN_POOL_CLS},
                    {"pooling_mode_max_tokens", KN_POOL_MAX},
                    {"pooling_mode_lasttoken", KN_POOL_LAST},
                    {"pooling_mode_mean_tokens", KN_POOL_MEAN}};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
            if (json_object_object_get_ex(pool, keys[k].key, &v) && json_object_get_boolean(v))
                p->pooling = keys[k].mode;
        /* sentence-transformers 6 writes one "pooling_mode" string instead of the flags */
        const char *mode = pl_json_str(pool, "pooling_mode", NULL);
        if (mode) {
            static const struct {
                const char *name;
                kn_pl_pooling mode;
            } modes[] = {
                {"cls", KN_POOL_CLS}, {"mean", KN_POOL_MEAN}, {"max", KN_POOL_MAX}, {"lasttoken", KN_POOL_LAST}};
            kn_pl_pooling found = KN_POOL_DEFAULT;
            for (size_t k = 0; k < sizeof modes / sizeof modes[0]; k++)
                if (!strcmp(mode, modes[k].name)) found = modes[k].mode;
            if (found == KN_POOL_DEFAULT) {
                kn_status *e =
                    kn_error(KN_ERR_UNSUPPORTED,
                             "%s/%s: pooling_mode '%s' is not one kiln implements (cls, mean, max, lasttoken)", p->dir,
                             rel, mode);
                json_object_put(mods);
                json_object_put(pool);
                return e;
            }
            p->pooling = found;
        }
    }
    st = pl_read_json(p->dir, "sentence_bert_config.json", &stc);
    if (!st) p->st_max_seq_length = (int)pl_json_int(stc, "max_seq_length", 0);
    json_object_put(mods);
    json_object_put(pool);
    json_object_put(stc);
    return st;
}

static const char *pl_role_name(kn_pl_role r) {
    static const char *const n[] = {"input_ids", "attention_mask", "token_type_ids", "position_ids", "pixel_values"};
    return n[r];
}

static kn_status *pl_match_inputs(kn_pipeline *p, const char *model_path) {
    int n = kn_session_input_count(p->session);
    if (n > KN_PL_MAX_IO)
        return kn_error(KN_ERR_UNSUPPORTED, "%s: %d model inputs; pipelines feed at most %d", model_path, n,
                        KN_PL_MAX_IO);
    for (int i = 0; i < n; i++) {
        kn_value_info vi;
        KN_TRY(kn_session_input_info(p->session, i, &vi));
        kn_pl_input *in = &p->in[p->n_inputs];
        int role = -1;
        for (int r = KN_ROLE_IDS; r <= KN_ROLE_PIXELS; r++)
            if (!strcmp(vi.name, pl_role_name((kn_pl_role)r))) role = r;
        if (role < 0)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "%s: model input '%s' (%s) is not one a pipeline can feed "
                            "(input_ids, attention_mask, token_type_ids, position_ids, pixel_values)",
                            model_path, vi.name, kn_dtype_name(vi.dtype));
        bool ok = role == KN_ROLE_PIXELS ? vi.dtype == KN_F32 : (vi.dtype == KN_I64 || vi.dtype == KN_I32);
        if (!ok)
            return kn_error(KN_ERR_UNSUPPORTED, "%s: model input '%s' is %s; pipelines feed %s", model_path, vi.name,
                            kn_dtype_name(vi.dtype), role == KN_ROLE_PIXELS ? "float32" : "int64 or int32");
        if (role != KN_ROLE_PIXELS && !p->tok)
            return kn_error(KN_ERR_INVALID_MODEL,
                            "%s: the model takes '%s' but the folder has no tokenizer.json or vocab.txt", p->dir,
                            vi.name);
        in->name = strdup(vi.name);
        in->dtype = vi.dtype;
        in->role = (kn_pl_role)role;
        in->ndim = vi.ndim;
        for (int d = 0; d < vi.ndim && d < KN_MAX_DIMS; d++) in->dims[d] = vi.dims[d];
        p->n_inputs++;
    }
    bool has_ids = false;
    for (int i = 0; i < p->n_inputs; i++) has_ids |= p->in[i].role == KN_ROLE_IDS || p->in[i].role == KN_ROLE_PIXELS;
    if (!has_ids)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: the model has neither input_ids nor pixel_values", model_path);
    p->n_outputs = kn_session_output_count(p->session);
    if (p->n_outputs > KN_PL_MAX_IO) p->n_outputs = KN_PL_MAX_IO;
    for (int i = 0; i < p->n_outputs; i++) {
        kn_value_info vi;
        KN_TRY(kn_session_output_info(p->session, i, &vi));
        p->out_names[i] = strdup(vi.name);
    }
    return NULL;
}

/* The token limit: tokenizer_config.json model_max_length when it is a real one, and the
 * position table (RoBERTa-family tables start after the padding index, hence the offset). */
static kn_status *pl_read_limits(kn_pipeline *p) {
    json_object *tc = NULL;
    KN_TRY(pl_read_json(p->dir, "tokenizer_config.json", &tc));
    int64_t mml = pl_json_int(tc, "model_max_length", 0);
    int64_t lim = mml > 0 && mml < 1000000 ? mml : 0;
    int64_t mpe = pl_json_int(p->config, "max_position_embeddings", 0);
    if (!mpe) mpe = pl_json_int(p->config, "n_positions", 0);
    if (mpe > 0 && p->model_type) {
        static const char *const offset2[] = {"roberta", "xlm-roberta", "camembert",      "longformer",
                                              "mpnet",   "bart",        "xlm-roberta-xl", "data2vec-text"};
        for (size_t i = 0; i < sizeof offset2 / sizeof offset2[0]; i++)
            if (!strcmp(p->model_type, offset2[i])) mpe -= 2;
    }
    if (mpe > 0 && (lim == 0 || mpe < lim)) lim = mpe;
    p->max_length = (int)lim;
    /* the pad id: the tokenizer's pad token, else config.json pad_token_id, else 0 */
    p->pad_id = -1;
    if (p->tok) {
        json_object *pt;
        const char *name = NULL;
        if (tc && json_object_object_get_ex(tc, "pad_token", &pt)) {
            if (json_object_is_type(pt, json_type_string)) name = json_object_get_string(pt);
            else if (json_object_is_type(pt, json_type_object)) name = pl_json_str(pt, "content", NULL);
        }
        if (name) p->pad_id = kn_tokenizer_token_to_id(p->tok, name);
        static const char *const guesses[] = {"[PAD]", "<pad>", "<|padding|>"};
        for (size_t i = 0; p->pad_id < 0 && !name && i < 3; i++)
            p->pad_id = kn_tokenizer_token_to_id(p->tok, guesses[i]);
    }
    /* transformers feeds token_type_ids only when the tokenizer returns them: model_input_names
     * from the file, else the tokenizer class's own list (in transformers 5 only these classes
     * list token_type_ids; the generic TokenizersBackend does not) */
    const char *cls = pl_json_str(tc, "tokenizer_class", NULL);
    if (cls) {
        static const char *const with_types[] = {"BertTokenizer",
                                                 "CanineTokenizer",
                                                 "ConvBertTokenizer",
                                                 "DPRContextEncoderTokenizer",
                                                 "DPRQuestionEncoderTokenizer",
                                                 "DebertaTokenizer",
                                                 "DebertaV2Tokenizer",
                                                 "FNetTokenizer",
                                                 "LayoutLMv2Tokenizer",
                                                 "MarkupLMTokenizer",
                                                 "MobileBertTokenizer",
                                                 "SqueezeBertTokenizer",
                                                 "TapasTokenizer"};
        size_t cl = strlen(cls);
        if (cl > 4 && !strcmp(cls + cl - 4, "Fast")) cl -= 4;
        p->zero_type_ids = 1;
        for (size_t i = 0; i < sizeof with_types / sizeof with_types[0]; i++)
            if (strlen(with_types[i]) == cl && !strncmp(cls, with_types[i], cl)) p->zero_type_ids = 0;
    }
    json_object *names;
    if (tc && json_object_object_get_ex(tc, "model_input_names", &names) &&
        json_object_is_type(names, json_type_array)) {
        p->zero_type_ids = 1;
        for (size_t i = 0; i < json_object_array_length(names); i++) {
            const char *nm = json_object_get_string(json_object_array_get_idx(names, i));
            if (nm && !strcmp(nm, "token_type_ids")) p->zero_type_ids = 0;
        }
    }
    if (p->pad_id < 0) p->pad_id = (int32_t)pl_json_int(p->config, "pad_token_id", 0);
    if (p->pad_id < 0) p->pad_id = 0;
    json_object_put(tc);
    return NULL;
}

static kn_status *pl_open(kn_pipeline *p, const char *path_or_repo) {
    KN_TRY(pl_hub_resolve(path_or_repo, p->opt.onnx_file, &p->dir));
    if (!pl_is_dir(p->dir)) return kn_error(KN_ERR_IO, "%s: not a folder", p->dir);
    char model_path[4096];
    KN_TRY(pl_find_onnx(p->dir, p->opt.onnx_file, model_path, sizeof model_path));
    KN_TRY(pl_read_json(p->dir, "config.json", &p->config));
    if (p->config && !json_object_is_type(p->config, json_type_object))
        return kn_error(KN_ERR_INVALID_MODEL, "%s/config.json: expected a JSON object", p->dir);
    json_object *text_config;
    const char *mt = pl_json_str(p->config, "model_type", NULL);
    if (p->config && json_object_object_get_ex(p->config, "text_config", &text_config) && !mt)
        mt = pl_json_str(text_config, "model_type", NULL);
    if (mt) p->model_type = strdup(mt);
    const char *pt = pl_json_str(p->config, "problem_type", NULL);
    if (pt) p->problem_type = strdup(pt);
    KN_TRY(pl_read_labels(p));
    KN_TRY(pl_read_json(p->dir, "preprocessor_config.json", &p->preproc));
    KN_TRY(pl_read_st(p));
    char tp[4096], vp[4096];
    snprintf(tp, sizeof tp, "%s/tokenizer.json", p->dir);
    snprintf(vp, sizeof vp, "%s/vocab.txt", p->dir);
    if (pl_exists(tp) || pl_exists(vp)) {
        char err[1024];
        p->tok = kn_tokenizer_load(p->dir, err, sizeof err);
        if (!p->tok) return kn_error(KN_ERR_INVALID_MODEL, "%s", err);
        int64_t vs = pl_json_int(p->config, "vocab_size", 0);
        json_object *tc2;
        if (!vs && p->config && json_object_object_get_ex(p->config, "text_config", &tc2))
            vs = pl_json_int(tc2, "vocab_size", 0);
        int32_t tv = kn_tokenizer_vocab_size(p->tok);
        if (vs > 0 && tv > vs)
            return kn_error(KN_ERR_INVALID_MODEL,
                            "%s: the tokenizer has %d tokens but config.json vocab_size is %lld: "
                            "tokenizer and model do not match",
                            p->dir, tv, (long long)vs);
    }
    KN_TRY(pl_read_limits(p));
    KN_TRY(kn_error_wrap(kn_model_load(model_path, &p->model), "%s: ", model_path));
    /* the session's notices (ops left to the CPU) reach the pipeline's warn as its own do */
    if (p->opt.warn && !p->opt.session.log) {
        p->opt.session.log = pl_log_to_warn;
        p->opt.session.log_user = p;
    }
    KN_TRY(kn_session_create(p->model, &p->opt.session, &p->session));
    return pl_match_inputs(p, model_path);
}

kn_status *kn_pipeline_open(const char *path_or_repo, const kn_pl_options *opt, kn_pipeline **out) {
    *out = NULL;
    if (!path_or_repo || !*path_or_repo) return kn_error(KN_ERR_INVALID_ARGUMENT, "kn_pipeline_open: no model path");
    kn_pipeline *p = calloc(1, sizeof *p);
    if (!p) return KN_OOM(sizeof *p);
    if (opt) p->opt = *opt;
    else kn_pl_options_init(&p->opt);
    if (p->opt.batch_size < 1) p->opt.batch_size = 32;
    p->opt.onnx_file = NULL; /* only valid during open */
    kn_pl_options o2 = p->opt;
    o2.onnx_file = opt ? opt->onnx_file : NULL;
    p->opt = o2;
    kn_status *st = pl_open(p, path_or_repo);
    p->opt.onnx_file = NULL;
    if (st) {
        kn_pipeline_free(p);
        return st;
    }
    *out = p;
    return NULL;
}

void kn_pipeline_free(kn_pipeline *p) {
    if (!p) return;
    kn_session_free(p->session);
    kn_model_free(p->model);
    kn_tokenizer_free(p->tok);
    json_object_put(p->config);
    json_object_put(p->preproc);
    for (int i = 0; p->labels && i < p->num_labels; i++) free(p->labels[i]);
    free(p->labels);
    for (int i = 0; i < p->n_inputs; i++) free(p->in[i].name);
    for (int i = 0; i < p->n_outputs; i++) free(p->out_names[i]);
    free(p->problem_type);
    free(p->model_type);
    free(p->dir);
    free(p);
}

const char *kn_pipeline_dir(const kn_pipeline *p) { return p->dir; }

bool kn_pipeline_takes_images(const kn_pipeline *p) {
    for (int i = 0; i < p->n_inputs; i++)
        if (p->in[i].role == KN_ROLE_PIXELS) return true;
    return false;
}
int kn_pipeline_num_labels(const kn_pipeline *p) { return p->num_labels; }

const char *kn_pipeline_label(const kn_pipeline *p, int id) {
    if (id >= 0 && id < p->num_labels) return p->labels[id];
    return NULL;
}

int kn_pipeline_label_id(const kn_pipeline *p, const char *label) {
    json_object *l2i, *v;
    if (p->config && json_object_object_get_ex(p->config, "label2id", &l2i) &&
        json_object_is_type(l2i, json_type_object)) {
        json_object_object_foreach(l2i, k, val) {
            (void)v;
            if (!strcasecmp(k, label) && json_object_is_type(val, json_type_int)) return json_object_get_int(val);
        }
    }
    for (int i = 0; i < p->num_labels; i++)
        if (!strcasecmp(p->labels[i], label)) return i;
    return -1;
}

kn_status *pl_encode(const kn_pipeline *p, int n, const char *const *texts, const char *const *pairs,
                     const kn_encode_options *eo, int max_length, kn_encoding *out) {
    if (!p->tok) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: this model has no tokenizer; it takes images", p->dir);
    kn_encode_options o;
    if (eo) o = *eo;
    else {
        kn_encode_options_init(&o);
        o.max_length = max_length > 0 ? max_length : p->max_length;
        /* the windows past the first are thrown away here: do not build them (memory linear in
         * the input, not in the product of a pair's lengths) */
        o.no_overflow = 1;
    }
    o.per_call = 1;
    size_t *lens = malloc(sizeof(size_t) * (size_t)(2 * n + 1));
    const char **tx = calloc((size_t)(2 * n + 1), sizeof *tx);
    char **own = calloc((size_t)(2 * n + 1), sizeof *own);
    if (!lens || !tx || !own) {
        free(lens);
        free(tx);
        free(own);
        return KN_OOM(sizeof(size_t) * (size_t)n * 2);
    }
    size_t *plens = lens + n;
    const char **px = tx + n;
    kn_status *st = NULL;
    for (int i = 0; !st && i < 2 * n; i++) {
        const char *src = i < n ? texts[i] : pairs ? pairs[i - n] : NULL;
        tx[i] = src;
        lens[i] = src ? strlen(src) : 0;
        if (src && memmem(src, lens[i], "\xC0\x80", 2)) {
            /* U+0000 comes as C0 80 (pipeline.h): the tokenizer gets the NUL character itself */
            if (!(own[i] = malloc(lens[i] + 1))) {
                st = KN_OOM(lens[i]);
                break;
            }
            size_t w = 0;
            for (size_t k = 0; k < lens[i]; k++) {
                if ((unsigned char)src[k] == 0xC0 && k + 1 < lens[i] && (unsigned char)src[k + 1] == 0x80) {
                    own[i][w++] = 0;
                    k++;
                } else own[i][w++] = src[k];
            }
            tx[i] = own[i];
            lens[i] = w;
        }
    }
    char err[1024];
    int rc = st ? 0
                : kn_tokenizer_encode_batch(p->tok, n, tx, lens, pairs ? px : NULL, plens, &o, p->opt.tokenizer_threads,
                                            out, err, sizeof err);
    for (int i = 0; i < 2 * n; i++) free(own[i]);
    free(own);
    free(tx);
    free(lens);
    if (st) return st;
    if (rc) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: tokenizer: %s", p->dir, err);
    if (!eo) {
        for (int i = 0; i < n; i++) {
            if (out[i].n_overflow <= 0 && !out[i].truncated) continue;
            pl_warn(p, "input %d is longer than the model's limit; truncated to %d tokens", i, o.max_length);
            for (int k = 0; k < out[i].n_overflow; k++) kn_encoding_free(&out[i].overflow[k]);
            free(out[i].overflow);
            out[i].overflow = NULL;
            out[i].n_overflow = 0;
        }
    }
    return NULL;
}

const kn_named_tensor *pl_output(const kn_pl_batch *b, const kn_pipeline *p, const char *name) {
    (void)p;
    if (!name) return b->n_out > 0 ? &b->out[0] : NULL;
    for (int i = 0; i < b->n_out; i++)
        if (!strcmp(b->out[i].name, name)) return &b->out[i];
    return NULL;
}

/* Runs one prepared set of inputs, converts the floating outputs to float32 and calls fn. */
static kn_status *pl_run_call(const kn_pipeline *p, kn_named_tensor *in, int n_in, kn_pl_batch *b, kn_pl_batch_fn fn,
                              void *ctx) {
    kn_named_tensor out[KN_PL_MAX_IO];
    memset(out, 0, sizeof out);
    for (int i = 0; i < p->n_outputs; i++) out[i].name = p->out_names[i];
    kn_status *st = kn_session_run(p->session, in, n_in, out, p->n_outputs);
    for (int i = 0; !st && i < p->n_outputs; i++) {
        kn_dtype t = out[i].dtype;
        if (t != KN_F16 && t != KN_BF16 && t != KN_F64) continue;
        int64_t cnt = 1;
        for (int d = 0; d < out[i].ndim; d++) cnt *= out[i].dims[d];
        float *f = malloc(sizeof(float) * (size_t)(cnt ? cnt : 1));
        if (!f) {
            st = KN_OOM(sizeof(float) * (size_t)cnt);
            break;
        }
        for (int64_t k = 0; k < cnt; k++) f[k] = kn_load_f32(out[i].data, t, k);
        kn_free(out[i].data);
        out[i].data = f;
        out[i].dtype = KN_F32;
    }
    if (!st) {
        b->n_out = p->n_outputs;
        b->out = out;
        st = fn(ctx, b);
    }
    for (int i = 0; i < p->n_outputs; i++) kn_free(out[i].data);
    return st;
}

typedef struct {
    int row, len;
} pl_order;
static int pl_order_cmp(const void *a, const void *b) {
    const pl_order *x = a, *y = b;
    if (x->len != y->len) return y->len - x->len;
    return x->row - y->row;
}

kn_status *pl_run_encodings(const kn_pipeline *p, int n_rows, const kn_encoding *const *rows, kn_pl_batch_fn fn,
                            void *ctx) {
    if (n_rows <= 0) return NULL;
    pl_order *ord = malloc(sizeof *ord * (size_t)n_rows);
    if (!ord) return KN_OOM(sizeof *ord * (size_t)n_rows);
    for (int i = 0; i < n_rows; i++) ord[i] = (pl_order){i, rows[i]->n};
    qsort(ord, (size_t)n_rows, sizeof *ord, pl_order_cmp);
    int bs = p->opt.batch_size > 0 ? p->opt.batch_size : 32;
    kn_status *st = NULL;
    int64_t seq_max = ord[0].len > 0 ? ord[0].len : 1;
    size_t cells = (size_t)bs * (size_t)seq_max;
    int64_t *buf = malloc(sizeof(int64_t) * cells * (KN_ROLE_POSITIONS + 1));
    int32_t *buf32 = malloc(sizeof(int32_t) * cells * (KN_ROLE_POSITIONS + 1));
    int *row_index = malloc(sizeof(int) * (size_t)bs);
    const kn_encoding **enc = malloc(sizeof *enc * (size_t)bs);
    if (!buf || !buf32 || !row_index || !enc) st = KN_OOM(sizeof(int64_t) * cells * 4);
    for (int b0 = 0; !st && b0 < n_rows; b0 += bs) {
        int n = n_rows - b0 < bs ? n_rows - b0 : bs;
        int64_t seq = ord[b0].len > 0 ? ord[b0].len : 1;
        int64_t *ids = buf, *mask = buf + cells, *types = buf + 2 * cells, *pos = buf + 3 * cells;
        for (int r = 0; r < n; r++) {
            const kn_encoding *e = rows[ord[b0 + r].row];
            row_index[r] = ord[b0 + r].row;
            enc[r] = e;
            for (int64_t t = 0; t < seq; t++) {
                size_t c = (size_t)(r * seq + t);
                bool real = t < e->n && (!e->attention_mask || e->attention_mask[t]);
                ids[c] = t < e->n ? e->ids[t] : p->pad_id;
                mask[c] = real ? 1 : 0;
                types[c] = t < e->n && e->type_ids && !p->zero_type_ids ? e->type_ids[t] : 0;
                pos[c] = t;
            }
        }
        kn_named_tensor in[KN_PL_MAX_IO];
        int n_in = 0;
        for (int i = 0; i < p->n_inputs && !st; i++) {
            const kn_pl_input *pi = &p->in[i];
            if (pi->role == KN_ROLE_PIXELS) {
                st = kn_error(KN_ERR_INVALID_ARGUMENT,
                              "%s: the model takes pixel_values and text; pipelines feed one or the other", p->dir);
                break;
            }
            int64_t *src = buf + (size_t)pi->role * cells;
            void *data = src;
            if (pi->dtype == KN_I32) {
                int32_t *d32 = buf32 + (size_t)pi->role * cells;
                for (int64_t k = 0; k < n * seq; k++) d32[k] = (int32_t)src[k];
                data = d32;
            }
            in[n_in++] =
                (kn_named_tensor){.name = pi->name, .dtype = pi->dtype, .ndim = 2, .dims = {n, seq}, .data = data};
        }
        if (st) break;
        kn_pl_batch b = {.n = n, .seq = seq, .row_index = row_index, .enc = enc, .mask = mask};
        st = pl_run_call(p, in, n_in, &b, fn, ctx);
    }
    free(buf);
    free(buf32);
    free(row_index);
    free(enc);
    free(ord);
    return st;
}

kn_status *pl_run_pixels(const kn_pipeline *p, int n, const float *pixels, int c, int h, int w, kn_pl_batch_fn fn,
                         void *ctx) {
    kn_named_tensor in[1];
    int n_in = 0;
    float *nhwc = NULL;
    for (int i = 0; i < p->n_inputs && !n_in; i++) {
        const kn_pl_input *pi = &p->in[i];
        if (pi->role != KN_ROLE_PIXELS)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "%s: the model takes '%s' besides pixel_values; an image pipeline cannot feed it", p->dir,
                            pi->name);
        /* channels-last models (TensorFlow exports) declare [batch, H, W, C]: transpose */
        bool last = pi->ndim == 4 && pi->dims[3] == c && pi->dims[1] != c;
        if (last) {
            size_t hw = (size_t)h * (size_t)w, total = (size_t)n * (size_t)c * hw;
            nhwc = malloc(sizeof(float) * (total ? total : 1));
            if (!nhwc) return KN_OOM(sizeof(float) * total);
            for (int b = 0; b < n; b++)
                for (int ch = 0; ch < c; ch++)
                    for (size_t k = 0; k < hw; k++)
                        nhwc[((size_t)b * hw + k) * (size_t)c + (size_t)ch] =
                            pixels[((size_t)b * (size_t)c + (size_t)ch) * hw + k];
            in[n_in++] =
                (kn_named_tensor){.name = pi->name, .dtype = KN_F32, .ndim = 4, .dims = {n, h, w, c}, .data = nhwc};
        } else {
            in[n_in++] = (kn_named_tensor){
                .name = pi->name, .dtype = KN_F32, .ndim = 4, .dims = {n, c, h, w}, .data = (void *)pixels};
        }
    }
    if (!n_in) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: the model has no pixel_values input", p->dir);
    int *row_index = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    if (!row_index) {
        free(nhwc);
        return KN_OOM(sizeof(int) * (size_t)n);
    }
    for (int i = 0; i < n; i++) row_index[i] = i;
    kn_pl_batch b = {.n = n, .seq = 0, .row_index = row_index};
    kn_status *st = pl_run_call(p, in, n_in, &b, fn, ctx);
    free(row_index);
    free(nhwc);
    return st;
}

kn_status *pl_collect_logits(void *vctx, const kn_pl_batch *b) {
    pl_logits *c = vctx;
    const kn_named_tensor *t = pl_output(b, c->p, NULL);
    if (!t) return kn_error(KN_ERR_INVALID_MODEL, "%s: the model has no output", c->p->dir);
    if (t->dtype != KN_F32)
        return kn_error(KN_ERR_INVALID_MODEL, "%s: output '%s' is not floating point; expected classification logits",
                        c->p->dir, t->name);
    /* [rows, labels]; a squeezed [rows] head is one logit per row */
    int64_t k = t->ndim == 2 ? t->dims[1] : t->ndim == 1 ? 1 : -1;
    if (k < 1 || t->dims[0] != b->n || k > 1000000)
        return kn_error(
            KN_ERR_INVALID_MODEL,
            "%s: output '%s' has %d dims (first %lld) for a batch of %d; expected logits [batch, num_labels]",
            c->p->dir, t->name, t->ndim, t->ndim > 0 ? (long long)t->dims[0] : 0LL, b->n);
    if (!c->logits) {
        c->k = (int)k;
        c->logits = malloc(sizeof(float) * (size_t)c->n_rows * (size_t)k);
        if (!c->logits) return KN_OOM(sizeof(float) * (size_t)c->n_rows * (size_t)k);
    } else if (c->k != k) {
        return kn_error(KN_ERR_INVALID_MODEL, "%s: output '%s' changed width between batches (%d, then %lld)",
                        c->p->dir, t->name, c->k, (long long)k);
    }
    const float *src = t->data;
    for (int r = 0; r < b->n; r++)
        memcpy(c->logits + (size_t)b->row_index[r] * (size_t)k, src + (size_t)r * (size_t)k, sizeof(float) * (size_t)k);
    return NULL;
}

void pl_softmax(float *x, int k) {
    if (k <= 0) return;
    float m = x[0];
    for (int i = 1; i < k; i++) m = x[i] > m ? x[i] : m;
    double s = 0;
    for (int i = 0; i < k; i++) s += exp((double)x[i] - m);
    for (int i = 0; i < k; i++) x[i] = (float)(exp((double)x[i] - m) / s);
}

void pl_sigmoid(float *x, int k) {
    for (int i = 0; i < k; i++) x[i] = (float)(1.0 / (1.0 + exp(-(double)x[i])));
}

kn_pl_activation pl_default_activation(const kn_pipeline *p, int n_logits) {
    /* transformers' order: regression, then multi-label or a single label, then softmax. The
     * label count is config.num_labels (the id2label size), not the output width: they differ
     * only for a config that disagrees with its model, and transformers goes by the config. */
    int n_labels = p->num_labels > 0 ? p->num_labels : n_logits;
    if (p->problem_type && !strcmp(p->problem_type, "regression")) return KN_ACT_NONE;
    if ((p->problem_type && !strcmp(p->problem_type, "multi_label_classification")) || n_labels == 1)
        return KN_ACT_SIGMOID;
    return KN_ACT_SOFTMAX;
}
