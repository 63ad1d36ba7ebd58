/* The text-generation decode loop (generate.h): folder and config reading, the key/value cache,
 * logits processing and sampling, EOS / stop strings / streaming.
 *
 * The cache: when the model takes position_ids, every sequence slot of a batch owns a cache of
 * `cap` positions per layer (the prompts' padded length plus max_new_tokens, rounded up to 64),
 * allocated once per call. It is fed as the past of every decode step, its used positions rounded
 * up to a bucket of 64 (gen_bucket); positions not yet written are masked by attention_mask (and
 * zero, so a masked score times a zero weight stays 0), and the step's own key/value, which the
 * graph appends after the past in its present output, is copied into the slot at the sequence's
 * length. The past shape then changes once per 64 tokens, so one executor plan serves all the
 * cache lengths of a bucket; the cache is widened in place when a bucket fills. On a CPU or CUDA
 * session whose presents are Concat(past, new rows) (the Optimum exports), the model returns the
 * new rows instead of the presents (gen_split_presents) and its fused attention reads the cache
 * and those rows apart, so a step copies no past at all; on the device the new rows are bound as
 * outputs at fixed addresses and copied device to device into the cache, which keeps the decode
 * steps' CUDA graphs replayable. Models without position_ids derive positions
 * from the past length, so they get the past at its exact length (the previous step's present)
 * and run one prompt at a time (left padding would shift their positions).
 *
 * A decoder whose pasts feed GroupQueryAttention alone (the GenAI layout) gets ONNX Runtime
 * GenAI's past_present_share_buffer instead: one buffer of cap positions per layer, fed as the
 * past and bound as the present output (a CPU session computes a caller-buffer output in that
 * buffer), so the op writes only the new positions and nothing is copied per step. Rows are
 * right-padded and carry their own lengths (the mask's sum, the op's seqlens_k), so a batch of
 * prompts of different lengths runs together.
 *
 * On a device session (--device cuda) those buffers live in device memory, allocated once per
 * call: each past is bound as a device input and each present as a device output at the same
 * address (kn_session_run_device), which the executor computes in place, so the cache never
 * crosses to the host; only the ids, mask and positions go up and the logits come back. The
 * addresses stay fixed for the whole call, so a decode plan's runs after its second replay the
 * recorded CUDA graph (kn_generator_graph_counts).
 *
 * When the backend picks tokens (kn_backend.greedy / topk, gen_pick_dev) the logits stay in device
 * memory too: greedy ids, or top-k sampling's candidates for the CPU's seeded draw, come back. */
#include "pipelines/generate.h"
#include "pipelines/chat_template.h"
#include "pipelines/pl_internal.h"
#include "runtime/core/dtype.h"
#include "runtime/executor.h"
#include "graph/passes.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define GEN_MAX_LAYERS 256
#define GEN_MAX_EOS 16
#define GEN_CAP_ROUND 64

struct kn_generator {
    char *dir;
    kn_model *model;
    kn_session *sess;
    kn_tokenizer *tok;
    char name_ids[128], name_mask[128], name_pos[128], name_logits[128];
    int has_mask, has_pos;
    int share_buffer; /* every past feeds GroupQueryAttention, whose present may be the past's buffer */
    kn_dtype ids_dtype, mask_dtype, pos_dtype;
    /* the caches' element type (the past inputs' declared one: float32, float16 or bfloat16) and the
     * logits', which are read as float32 (converted once per row and step) */
    kn_dtype kv_dtype, logits_dtype;
    size_t kv_es;
    int n_layers;
    char *past_k[GEN_MAX_LAYERS], *past_v[GEN_MAX_LAYERS], *pres_k[GEN_MAX_LAYERS], *pres_v[GEN_MAX_LAYERS];
    /* past_in_place: the values the step returns instead of each present (its new rows only) */
    char *new_k[GEN_MAX_LAYERS], *new_v[GEN_MAX_LAYERS];
    int past_in_place;
    /* a sliding-window cache's length (gen_present_rows) when the split dropped its Slices: the
     * generator's cache then stays shorter than it, 0 when none */
    int64_t past_window;
    int past_read;         /* fused attentions reading a past in place (gen_count_in_place) */
    const char *past_note; /* why a past is copied each step, NULL when none is */
    int64_t kv_heads, head_dim;
    int vocab;
    int context;
    int32_t eos[GEN_MAX_EOS];
    int n_eos;
    int32_t pad_id;
    kn_gen_options defaults; /* generation_config.json / genai_config.json "search" */
    kn_chat_template *tmpl;  /* the folder's chat template, NULL when it has none */
    char *tmpl_error;        /* the folder has a template kiln cannot read: why (formatting fails with it) */
    char *bos_token, *eos_token;
};

void kn_gen_options_init(kn_gen_options *o) {
    memset(o, 0, sizeof *o);
    o->max_new_tokens = 64;
    o->temperature = 1.0f;
    o->top_p = 1.0f;
    o->repetition_penalty = 1.0f;
    o->batch_size = 1;
}

const char *kn_gen_finish_name(kn_gen_finish f) {
    return f == KN_GEN_EOS ? "eos" : f == KN_GEN_STOP ? "stop" : "length";
}

void kn_gen_result_free(kn_gen_result *r) {
    if (!r) return;
    free(r->text);
    free(r->ids);
    free(r->prompt_ids);
    memset(r, 0, sizeof *r);
}

const kn_tokenizer *kn_generator_tokenizer(const kn_generator *g) { return g->tok; }
int kn_generator_context(const kn_generator *g) { return g->context; }
int64_t kn_generator_plans_built(const kn_generator *g) { return kn_session_plans_built(g->sess); }
int kn_generator_past_in_place(const kn_generator *g) { return g->past_read; }
/* the GenAI layout shares one buffer as past and present instead: nothing is copied there */
const char *kn_generator_past_note(const kn_generator *g) { return g->share_buffer ? NULL : g->past_note; }
const char *kn_generator_profile(const kn_generator *g, char *buf, size_t len) {
    return kn_session_profile(g->sess, buf, len);
}

void kn_generator_graph_counts(const kn_generator *g, int64_t *captured, int64_t *replayed) {
    kn_session_graph_counts(g->sess, captured, replayed);
}

static int gen_exists(const char *p) {
    struct stat s;
    return stat(p, &s) == 0 && S_ISREG(s.st_mode);
}

static json_object *gen_read_json(const char *dir, const char *file, kn_status **st) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (!gen_exists(path)) return NULL;
    json_object *o = json_object_from_file(path);
    if (!o) *st = kn_error(KN_ERR_INVALID_MODEL, "%s: not valid JSON", path);
    return o;
}

/* eos_token_id as an int or a list of ints; returns how many were read (0: absent). */
static int gen_read_ids(json_object *o, const char *key, int32_t *ids, int max) {
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !v) return 0;
    if (json_object_is_type(v, json_type_int)) {
        ids[0] = (int32_t)json_object_get_int64(v);
        return 1;
    }
    int n = 0;
    if (json_object_is_type(v, json_type_array))
        for (size_t i = 0; i < json_object_array_length(v) && n < max; i++) {
            json_object *e = json_object_array_get_idx(v, i);
            if (json_object_is_type(e, json_type_int)) ids[n++] = (int32_t)json_object_get_int64(e);
        }
    return n;
}

static double gen_json_num(json_object *o, const char *key, double dflt) {
    json_object *v;
    if (o && json_object_object_get_ex(o, key, &v) &&
        (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)))
        return json_object_get_double(v);
    return dflt;
}

/* The sampling settings a folder asks for, as transformers' GenerationConfig reads them (its
 * defaults where absent: greedy, temperature 1, top-k 50 when sampling, top-p 1). */
static void gen_read_defaults(json_object *o, int genai, kn_gen_options *d) {
    json_object *v;
    if (!o) return;
    if (json_object_object_get_ex(o, "do_sample", &v) && json_object_is_type(v, json_type_boolean))
        d->do_sample = json_object_get_boolean(v);
    d->temperature = (float)gen_json_num(o, "temperature", d->temperature);
    d->top_k = (int)gen_json_num(o, "top_k", d->top_k);
    d->top_p = (float)gen_json_num(o, "top_p", d->top_p);
    d->min_p = (float)gen_json_num(o, "min_p", d->min_p);
    d->repetition_penalty = (float)gen_json_num(o, "repetition_penalty", d->repetition_penalty);
    if (!genai) d->max_new_tokens = (int)gen_json_num(o, "max_new_tokens", d->max_new_tokens);
}

void kn_generator_default_options(const kn_generator *g, kn_gen_options *o) { *o = g->defaults; }

static json_object *gen_path(json_object *o, const char *a, const char *b) {
    json_object *v = NULL, *w = NULL;
    if (!o || !json_object_object_get_ex(o, a, &v)) return NULL;
    if (!b) return v;
    return json_object_object_get_ex(v, b, &w) ? w : NULL;
}

/* A genai_config name pattern such as "past_key_values.%d.key" for layer l. */
static char *gen_layer_name(const char *pattern, int l) {
    char buf[256];
    snprintf(buf, sizeof buf, pattern, l);
    return strdup(buf);
}

static int gen_find_input(const kn_session *s, const char *name, kn_value_info *info) {
    for (int i = 0; i < kn_session_input_count(s); i++) {
        kn_value_info vi;
        kn_status *st = kn_session_input_info(s, i, &vi);
        if (st) {
            kn_status_free(st);
            continue;
        }
        if (!strcmp(vi.name, name)) {
            if (info) *info = vi;
            return 1;
        }
    }
    return 0;
}

void kn_generator_free(kn_generator *g) {
    if (!g) return;
    for (int l = 0; l < g->n_layers; l++) {
        free(g->past_k[l]);
        free(g->past_v[l]);
        free(g->pres_k[l]);
        free(g->pres_v[l]);
        free(g->new_k[l]);
        free(g->new_v[l]);
    }
    kn_session_free(g->sess);
    kn_model_free(g->model);
    kn_tokenizer_free(g->tok);
    kn_chat_template_free(g->tmpl);
    free(g->tmpl_error);
    free(g->bos_token), free(g->eos_token);
    free(g->dir);
    free(g);
}

/* The folder's chat template, when it has one. One that is there but does not load or parse is
 * kept as its error, which formatting with the template reports (never a quiet fallback to the
 * plain join); --no-chat-template use still works. */
static kn_status *gen_open_template(kn_generator *g, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    int has = gen_exists(path);
    if (!has) {
        kn_status *st = NULL;
        json_object *tc = gen_read_json(dir, "tokenizer_config.json", &st);
        if (st) return st;
        json_object *v;
        has = tc && json_object_object_get_ex(tc, "chat_template", &v) && v;
        json_object_put(tc);
    }
    if (!has) return NULL;
    kn_chat_template_source src;
    kn_status *st = kn_chat_template_load_dir(dir, &src);
    if (!st && (st = kn_chat_template_parse(src.source, &g->tmpl))) kn_chat_template_source_free(&src);
    if (st) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s: chat template: %s", dir, kn_status_message(st));
        kn_status_free(st);
        g->tmpl_error = strdup(msg);
        return g->tmpl_error ? NULL : KN_OOM(strlen(msg));
    }
    g->bos_token = src.bos_token, g->eos_token = src.eos_token;
    src.bos_token = src.eos_token = NULL;
    kn_chat_template_source_free(&src);
    return NULL;
}

/* Whether each layer's past key and value are read by one GroupQueryAttention node alone (as its
 * past_key / past_value) whose present_key / present_value are the layer's present outputs: that
 * node then appends the new positions to a past buffer bound as its present, and nothing else
 * reads the past it overwrites. */
static int gen_gqa_shares(const kn_generator *g) {
    const kn_graph *gr = g->model->graph;
    for (int l = 0; l < g->n_layers; l++) {
        const char *names[2] = {g->past_k[l], g->past_v[l]}, *pres[2] = {g->pres_k[l], g->pres_v[l]};
        for (int t = 0; t < 2; t++) {
            int v = kn_graph_find_value(gr, names[t]), uses = 0, ok = 0;
            if (v < 0) return 0;
            for (int i = 0; i < gr->n_nodes; i++) {
                const kn_node *n = &gr->nodes[i];
                for (int k = 0; k < n->n_inputs; k++) {
                    if (n->inputs[k] != v) continue;
                    uses++;
                    ok = n->op == KN_OP_MsGroupQueryAttention && k == 3 + t && n->n_outputs > 1 + t &&
                        n->outputs[1 + t] >= 0 && !strcmp(gr->values[n->outputs[1 + t]].name, pres[t]);
                }
            }
            if (uses != 1 || !ok) return 0;
        }
    }
    return 1;
}

/* Whether slice node n keeps the last rows of its input along the sequence axis (2 or -2 of 4-D
 * caches): starts a constant -W, ends past any length, step 1. Returns W, else 0. This is a
 * sliding-window layer's cache as transformers' DynamicSlidingWindowLayer traces it (Gemma-3 by
 * torch.onnx.export): the window's past is the last W rows. */
static int64_t gen_window_slice(const kn_graph *gr, const kn_node *n) {
    if (n->op != KN_OP_Slice || n->n_inputs < 4 || n->n_outputs != 1) return 0;
    int64_t c[4] = {0, 0, 0, 1};
    for (int i = 1; i < 5; i++) {
        if (i >= n->n_inputs || n->inputs[i] < 0) {
            if (i < 4) return 0; /* starts, ends and axes must be given */
            continue;
        }
        const kn_tensor *t = gr->values[n->inputs[i]].constant;
        if (!t || (t->dtype != KN_I64 && t->dtype != KN_I32) || kn_numel(t) != 1) return 0;
        c[i - 1] = kn_get_i64(t, 0);
    }
    if (!(c[2] == 2 || c[2] == -2) || c[3] != 1 || c[0] >= 0 || c[1] < INT32_MAX) return 0;
    return -c[0];
}

/* The value v when it is Concat(past, new) along the sequence axis (-2 or 2 of 4-D caches) of the
 * graph input `past`, maybe behind Identity nodes, and past through a one-input Concat: the new
 * rows' value, else -1. A sliding-window layer's present, the last W rows of that Concat whose
 * past is itself the last W' rows of the past (gen_window_slice), is accepted too: *window is
 * then min(W, W') and *cut the Concat, whose past-side input the caller points at the past
 * itself: both Slices keep everything while the past and the new rows together fit in the
 * window, which the generator's cache then always does (gen_batch bounds its length). */
static int gen_present_rows(const kn_graph *gr, int v, int past, int64_t *window, int *cut) {
    int64_t w_out = 0;
    *cut = -1;
    for (int hops = 0; v >= 0 && gr->values[v].producer >= 0 && hops < 8; hops++) {
        const kn_node *n = &gr->nodes[gr->values[v].producer];
        if (n->op == KN_OP_Identity && n->n_inputs == 1) {
            v = n->inputs[0];
            continue;
        }
        int64_t w = w_out ? 0 : gen_window_slice(gr, n);
        if (w > 0) {
            w_out = w;
            v = n->inputs[0];
            continue;
        }
        if (n->op != KN_OP_Concat || n->n_inputs != 2 || n->n_outputs != 1) return -1;
        int64_t axis = kn_attr_int(n, "axis", 0);
        int a = n->inputs[0];
        int64_t w_in = 0;
        if (w_out && a >= 0 && gr->values[a].producer >= 0) {
            const kn_node *sl = &gr->nodes[gr->values[a].producer];
            if ((w_in = gen_window_slice(gr, sl)) > 0) a = sl->inputs[0];
        }
        if (w_out && !w_in) return -1; /* a window on one side only: not the traced cache */
        if (a >= 0 && gr->values[a].producer >= 0) {
            const kn_node *one = &gr->nodes[gr->values[a].producer];
            if (one->op == KN_OP_Concat && one->n_inputs == 1) a = one->inputs[0];
        }
        if (!((axis == 2 || axis == -2) && a == past && n->inputs[1] >= 0)) return -1;
        if (w_out) {
            *window = w_in < w_out ? w_in : w_out;
            *cut = gr->values[v].producer;
        }
        return n->inputs[1];
    }
    return -1;
}

/* Optimum layout on the CPU: each present output is Concat(past, new rows), the copy of the whole
 * past that the generator, keeping its own cache, does not need. The model's graph then returns
 * the new rows instead (output names new_k / new_v), so the Concat feeds only the attention, and a
 * fused attention reads the past and the new rows apart (kn_pass_split_past_kv); an attention that
 * does not fuse keeps its Concat (a copy, the same result). Runs before the session is made, as
 * the session's graph is derived from the model's once. Models whose presents are anything else
 * (GroupQueryAttention, a past that is not an input) stay as they are. */
static kn_status *gen_split_presents(kn_generator *g, const char *pk, const char *pv, const char *ok, const char *ov) {
    kn_graph *gr = g->model->graph;
    int n = 0, rows[2 * GEN_MAX_LAYERS], pres[2 * GEN_MAX_LAYERS], cut[2 * GEN_MAX_LAYERS], srcs[2 * GEN_MAX_LAYERS];
    int64_t window = 0;
    for (int l = 0; l < GEN_MAX_LAYERS; l++) {
        char *names[4] = {gen_layer_name(pk, l), gen_layer_name(pv, l), gen_layer_name(ok, l), gen_layer_name(ov, l)};
        int past[2] = {kn_graph_find_value(gr, names[0]), kn_graph_find_value(gr, names[1])};
        int out[2] = {kn_graph_find_value(gr, names[2]), kn_graph_find_value(gr, names[3])};
        for (int i = 0; i < 4; i++) free(names[i]);
        if (past[0] < 0 || !gr->values[past[0]].is_input) break;
        for (int t = 0; t < 2; t++) {
            int64_t w = 0;
            int r = out[t] >= 0 && gr->values[out[t]].is_output && past[t] >= 0
                ? gen_present_rows(gr, out[t], past[t], &w, &cut[n])
                : -1;
            if (r < 0 || gr->values[r].is_output || gr->values[r].is_input) return NULL;
            for (int i = 0; i < n; i++)
                if (rows[i] == r) return NULL;
            if (w > 0 && (!window || w < window)) window = w;
            rows[n] = r, pres[n] = out[t], srcs[n] = past[t], n++;
        }
    }
    if (!n) return NULL;
    for (int i = 0; i < n; i++) {
        if (cut[i] >= 0) gr->nodes[cut[i]].inputs[0] = srcs[i]; /* the window's Slices, dead below */
        for (int k = 0; k < gr->n_outputs; k++)
            if (gr->outputs[k] == pres[i]) gr->outputs[k] = rows[i];
        gr->values[pres[i]].is_output = false;
        gr->values[rows[i]].is_output = true;
        char **slot = i % 2 ? &g->new_v[i / 2] : &g->new_k[i / 2];
        if (!(*slot = strdup(gr->values[rows[i]].name))) return KN_OOM(0);
    }
    kn_graph_eliminate_dead(gr); /* the presents' Identity nodes, the windows' Slices */
    g->past_in_place = n / 2;
    g->past_window = window;
    return NULL;
}

/* What the stats report (kn_generator_past_in_place, _past_note): the layers whose fused attention
 * reads a past input where it lies (KnSdpa's inputs 4 and 5, kn_pass_split_past_kv) in the
 * session's optimised graph, and why the others copy their past each step. */
static void gen_count_in_place(kn_generator *g, int has_pos) {
    const kn_graph *sg = kn_session_graph(g->sess);
    int split = 0;
    for (int i = 0; sg && i < sg->n_nodes; i++) {
        const kn_node *n = &sg->nodes[i];
        if (n->op == KN_OP_KnSdpa && n->n_inputs == 6 && n->inputs[4] >= 0 && sg->values[n->inputs[4]].is_input)
            split++;
    }
    g->past_read = split;
    g->past_note = NULL;
    const kn_graph *mg = g->model->graph;
    int pk = g->past_in_place ? kn_graph_find_value(mg, g->past_k[0]) : -1;
    if (g->past_in_place && split < g->past_in_place && pk >= 0 && mg->values[pk].type.dtype != KN_F32)
        g->past_note = "the cache is not float32 and the session is not CPU: the attention fusion that reads a past "
                       "in place takes float16/bfloat16 models on the CPU only, so each layer's Concat copies the past";
    else if (g->past_in_place && split < g->past_in_place)
        g->past_note = "an attention did not fuse, its Concat copies the past; kiln info --optimized shows it";
    else if (!g->past_in_place && !has_pos)
        g->past_note = "the model has no position_ids input: its positions come from the past's length, so each "
                       "step is fed the last present, a copy of the past at its exact length";
    else if (!g->past_in_place)
        g->past_note = "the presents are not Concat(past, new rows) of the pasts, or the session is not CPU/CUDA";
}

static kn_status *gen_open(kn_generator *g, const char *dir, const kn_session_options *so) {
    kn_status *st = NULL;
    json_object *genai = gen_read_json(dir, "genai_config.json", &st);
    json_object *cfg = st ? NULL : gen_read_json(dir, "config.json", &st);
    json_object *gcfg = st ? NULL : gen_read_json(dir, "generation_config.json", &st);
    char path[4096];
    const char *pk = "past_key_values.%d.key", *pv = "past_key_values.%d.value";
    const char *ok = "present.%d.key", *ov = "present.%d.value";
    snprintf(g->name_ids, sizeof g->name_ids, "input_ids");
    snprintf(g->name_mask, sizeof g->name_mask, "attention_mask");
    snprintf(g->name_pos, sizeof g->name_pos, "position_ids");
    snprintf(g->name_logits, sizeof g->name_logits, "logits");
    if (st) goto done;
    json_object *model = gen_path(genai, "model", NULL), *dec = gen_path(model, "decoder", NULL);
    if (genai) {
        const char *file = pl_json_str(dec, "filename", NULL);
        if (!file) {
            st = kn_error(KN_ERR_INVALID_MODEL, "%s/genai_config.json: model.decoder.filename missing", dir);
            goto done;
        }
        snprintf(path, sizeof path, "%s/%s", dir, file);
        if (!gen_exists(path)) {
            st = kn_error(KN_ERR_IO, "%s: named by genai_config.json model.decoder.filename, not found", path);
            goto done;
        }
        json_object *in = gen_path(dec, "inputs", NULL), *out = gen_path(dec, "outputs", NULL);
        snprintf(g->name_ids, sizeof g->name_ids, "%s", pl_json_str(in, "input_ids", "input_ids"));
        snprintf(g->name_mask, sizeof g->name_mask, "%s", pl_json_str(in, "attention_mask", "attention_mask"));
        snprintf(g->name_pos, sizeof g->name_pos, "%s", pl_json_str(in, "position_ids", "position_ids"));
        snprintf(g->name_logits, sizeof g->name_logits, "%s", pl_json_str(out, "logits", "logits"));
        pk = pl_json_str(in, "past_key_names", pk);
        pv = pl_json_str(in, "past_value_names", pv);
        ok = pl_json_str(out, "present_key_names", ok);
        ov = pl_json_str(out, "present_value_names", ov);
        g->context = (int)pl_json_int(model, "context_length", 0);
        g->kv_heads = pl_json_int(dec, "num_key_value_heads", 0);
        g->head_dim = pl_json_int(dec, "head_size", 0);
    } else {
        snprintf(path, sizeof path, "%s/model.onnx", dir);
        if (!gen_exists(path)) snprintf(path, sizeof path, "%s/onnx/model.onnx", dir);
        if (!gen_exists(path)) {
            st = kn_error(KN_ERR_IO, "%s: no genai_config.json, model.onnx nor onnx/model.onnx", dir);
            goto done;
        }
    }
    for (const char *p = pk; *p; p++)
        if (*p == '%' && p[1] != 'd') {
            st = kn_error(KN_ERR_INVALID_MODEL, "%s/genai_config.json: name pattern '%s' may only hold %%d", dir, pk);
            goto done;
        }
    char tpath[4096], err[512];
    snprintf(tpath, sizeof tpath, "%s/tokenizer.json", dir);
    if (!gen_exists(tpath)) {
        st = kn_error(KN_ERR_IO, "%s: the tokenizer file is missing", tpath);
        goto done;
    }
    g->tok = kn_tokenizer_load(dir, err, sizeof err);
    if (!g->tok) {
        st = kn_error(KN_ERR_INVALID_MODEL, "%s", err);
        goto done;
    }
    if ((st = kn_model_load(path, &g->model))) goto done;
    int pos_v = kn_graph_find_value(g->model->graph, g->name_pos);
    if ((!so || so->device == KN_DEVICE_CPU || so->device == KN_DEVICE_CUDA) && pos_v >= 0 &&
        g->model->graph->values[pos_v].is_input && (st = gen_split_presents(g, pk, pv, ok, ov)))
        goto done;
    kn_session_options dflt;
    kn_session_options_init(&dflt);
    if ((st = kn_session_create(g->model, so ? so : &dflt, &g->sess))) goto done;
    kn_value_info vi;
    if (!gen_find_input(g->sess, g->name_ids, &vi)) {
        st = kn_error(KN_ERR_INVALID_MODEL, "%s: no input named %s", path, g->name_ids);
        goto done;
    }
    g->ids_dtype = vi.dtype;
    if ((g->has_mask = gen_find_input(g->sess, g->name_mask, &vi))) g->mask_dtype = vi.dtype;
    if ((g->has_pos = gen_find_input(g->sess, g->name_pos, &vi))) g->pos_dtype = vi.dtype;
    for (int l = 0; l < GEN_MAX_LAYERS; l++) {
        char *name = gen_layer_name(pk, l);
        int found = gen_find_input(g->sess, name, &vi);
        free(name);
        if (!found) break;
        g->past_k[l] = gen_layer_name(pk, l);
        g->past_v[l] = gen_layer_name(pv, l);
        g->pres_k[l] = gen_layer_name(ok, l);
        g->pres_v[l] = gen_layer_name(ov, l);
        g->n_layers = l + 1;
        if (l == 0) g->kv_dtype = vi.dtype;
        else if (vi.dtype != g->kv_dtype) {
            st = kn_error(KN_ERR_INVALID_MODEL, "%s: past inputs of types %s and %s: one cache type is needed", path,
                          kn_dtype_name(g->kv_dtype), kn_dtype_name(vi.dtype));
            goto done;
        }
        if (vi.ndim == 4 && vi.dims[1] > 0) g->kv_heads = vi.dims[1];
        if (vi.ndim == 4 && vi.dims[3] > 0) g->head_dim = vi.dims[3];
    }
    if (!g->n_layers) {
        st = kn_error(KN_ERR_INVALID_MODEL, "%s: no past key/value inputs (%s): export the model with past", path, pk);
        goto done;
    }
    if (g->kv_dtype != KN_F32 && g->kv_dtype != KN_F16 && g->kv_dtype != KN_BF16) {
        st = kn_error(KN_ERR_INVALID_MODEL,
                      "%s: past inputs of type %s: kiln's cache holds float32, float16 or bfloat16", path,
                      kn_dtype_name(g->kv_dtype));
        goto done;
    }
    g->kv_es = kn_dtype_size(g->kv_dtype);
    g->logits_dtype = KN_F32;
    for (int i = 0; i < kn_session_output_count(g->sess); i++) {
        kn_status *e = kn_session_output_info(g->sess, i, &vi);
        if (e) kn_status_free(e);
        else if (!strcmp(vi.name, g->name_logits)) g->logits_dtype = vi.dtype;
    }
    g->share_buffer = gen_gqa_shares(g);
    gen_count_in_place(g, pos_v >= 0 && g->model->graph->values[pos_v].is_input);
    if (g->kv_heads <= 0) {
        int64_t heads = pl_json_int(cfg, "num_attention_heads", pl_json_int(cfg, "n_head", 0));
        g->kv_heads = pl_json_int(cfg, "num_key_value_heads", heads);
    }
    if (g->head_dim <= 0) {
        int64_t hidden = pl_json_int(cfg, "hidden_size", pl_json_int(cfg, "n_embd", 0));
        int64_t heads = pl_json_int(cfg, "num_attention_heads", pl_json_int(cfg, "n_head", 0));
        g->head_dim = pl_json_int(cfg, "head_dim", heads > 0 ? hidden / heads : 0);
    }
    if (g->kv_heads <= 0 || g->head_dim <= 0) {
        st = kn_error(KN_ERR_INVALID_MODEL, "%s: key/value heads and head size unknown (no fixed dims, no config)",
                      path);
        goto done;
    }
    if (!g->context) g->context = (int)pl_json_int(cfg, "max_position_embeddings", pl_json_int(cfg, "n_positions", 0));
    g->n_eos = gen_read_ids(gcfg, "eos_token_id", g->eos, GEN_MAX_EOS);
    if (!g->n_eos) g->n_eos = gen_read_ids(model, "eos_token_id", g->eos, GEN_MAX_EOS);
    if (!g->n_eos) g->n_eos = gen_read_ids(cfg, "eos_token_id", g->eos, GEN_MAX_EOS);
    int32_t pad[GEN_MAX_EOS];
    if (gen_read_ids(gcfg, "pad_token_id", pad, GEN_MAX_EOS) || gen_read_ids(model, "pad_token_id", pad, GEN_MAX_EOS) ||
        gen_read_ids(cfg, "pad_token_id", pad, GEN_MAX_EOS))
        g->pad_id = pad[0];
    else g->pad_id = g->n_eos ? g->eos[0] : 0;
    g->vocab = (int)pl_json_int(cfg, "vocab_size", 0);
    kn_gen_options_init(&g->defaults);
    g->defaults.top_k = 50;
    gen_read_defaults(gen_path(genai, "search", NULL), 1, &g->defaults);
    gen_read_defaults(gcfg, 0, &g->defaults);
    if (g->defaults.max_new_tokens < 1) g->defaults.max_new_tokens = 64;
    st = gen_open_template(g, dir);
done:
    json_object_put(genai);
    json_object_put(cfg);
    json_object_put(gcfg);
    return st;
}

kn_status *kn_generator_open(const char *dir, const kn_session_options *so, kn_generator **out) {
    *out = NULL;
    kn_generator *g = calloc(1, sizeof *g);
    if (!g) return KN_OOM(sizeof *g);
    g->dir = strdup(dir);
    kn_status *st = gen_open(g, dir, so);
    if (st) {
        kn_generator_free(g);
        return st;
    }
    *out = g;
    return NULL;
}

int kn_generator_has_chat_template(const kn_generator *g) { return g->tmpl != NULL || g->tmpl_error != NULL; }

kn_status *kn_generate_format_chat(const kn_generator *g, const char *system_prompt, const char *messages_json,
                                   int use_template, char **out, int *templated) {
    *out = NULL;
    if (templated) *templated = 0;
    json_object *m = json_tokener_parse(messages_json);
    if (!m || !json_object_is_type(m, json_type_array)) {
        json_object_put(m);
        return kn_error(KN_ERR_INVALID_ARGUMENT, "generate: the messages are not a JSON list");
    }
    size_t n = json_object_array_length(m);
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(m, i), *r;
        if (!json_object_is_type(e, json_type_object) || !json_object_object_get_ex(e, "role", &r) ||
            !json_object_is_type(r, json_type_string)) {
            json_object_put(m);
            return kn_error(KN_ERR_INVALID_ARGUMENT, "generate: message %zu has no string \"role\"", i);
        }
    }
    /* the system prompt is the conversation's first message unless the conversation has its own */
    json_object *first = n ? json_object_array_get_idx(m, 0) : NULL, *fr;
    int own_system =
        first && json_object_object_get_ex(first, "role", &fr) && !strcmp(json_object_get_string(fr), "system");
    json_object *all = m;
    if (system_prompt && !own_system) {
        all = json_object_new_array();
        json_object *sm = json_object_new_object();
        json_object_object_add(sm, "role", json_object_new_string("system"));
        json_object_object_add(sm, "content", json_object_new_string(system_prompt));
        json_object_array_add(all, sm);
        for (size_t i = 0; i < n; i++) json_object_array_add(all, json_object_get(json_object_array_get_idx(m, i)));
        json_object_put(m);
    }
    kn_status *st = NULL;
    if (g->tmpl_error && use_template) {
        json_object_put(all);
        return kn_error(KN_ERR_UNSUPPORTED, "%s (--no-chat-template feeds the text as it is)", g->tmpl_error);
    }
    if (g->tmpl && use_template) {
        char *ctx = NULL;
        st = kn_chat_template_context(json_object_to_json_string_ext(all, JSON_C_TO_STRING_PLAIN), NULL, 1,
                                      g->bos_token, g->eos_token, &ctx);
        if (!st) st = kn_chat_template_render(g->tmpl, ctx, out);
        free(ctx);
        if (st) {
            kn_status *e = kn_error(kn_status_get_code(st), "generate: chat template: %s", kn_status_message(st));
            kn_status_free(st);
            st = e;
        } else if (templated) *templated = 1;
        json_object_put(all);
        return st;
    }
    size_t na = json_object_array_length(all), len = 1;
    for (size_t i = 0; i < na; i++) {
        json_object *c;
        if (!json_object_object_get_ex(json_object_array_get_idx(all, i), "content", &c) ||
            !json_object_is_type(c, json_type_string)) {
            json_object_put(all);
            return kn_error(KN_ERR_INVALID_ARGUMENT, "generate: message %zu needs a string \"content\"", i);
        }
        len += strlen(json_object_get_string(c)) + 1;
    }
    char *s = malloc(len), *p = s;
    if (!s) {
        json_object_put(all);
        return KN_OOM(len);
    }
    *p = 0;
    for (size_t i = 0; i < na; i++) {
        json_object *c;
        json_object_object_get_ex(json_object_array_get_idx(all, i), "content", &c);
        p += sprintf(p, "%s%s", i ? "\n" : "", json_object_get_string(c));
    }
    json_object_put(all);
    *out = s;
    return NULL;
}

kn_status *kn_generate_format_prompt(const kn_generator *g, const char *system_prompt, int n, const char *const *roles,
                                     const char *const *contents, char **out, int *templated) {
    json_object *m = json_object_new_array();
    for (int i = 0; i < n; i++) {
        json_object *e = json_object_new_object();
        json_object_object_add(e, "role", json_object_new_string(roles[i]));
        json_object_object_add(e, "content", json_object_new_string(contents[i]));
        json_object_array_add(m, e);
    }
    kn_status *st = kn_generate_format_chat(g, system_prompt, json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN),
                                            1, out, templated);
    json_object_put(m);
    return st;
}

/* ---- sampling ---- */

/* splitmix64: the call's own generator, so that a seed gives the same tokens everywhere. */
static uint64_t gen_rand_u64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double gen_rand_unit(uint64_t *state) {
    return (double)(gen_rand_u64(state) >> 11) * (1.0 / 9007199254740992.0);
}

typedef struct gen_cand {
    float logit;
    int32_t id;
} gen_cand;

static int gen_cand_cmp(const void *a, const void *b) {
    const gen_cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int32_t gen_draw(const gen_cand *cand, int n, const kn_gen_options *o, uint64_t *rng);

/* Picks the next token from one row of logits (modified in place), in transformers' order:
 * repetition penalty, then (sampling) temperature, top-k, top-p, min-p. */
static int32_t gen_pick(float *logits, int V, const int32_t *seen, int n_seen, const kn_gen_options *o, uint64_t *rng,
                        gen_cand *cand) {
    if (o->repetition_penalty != 1.0f)
        for (int i = 0; i < n_seen; i++) {
            int32_t t = seen[i];
            if (t < 0 || t >= V) continue;
            float *x = &logits[t];
            /* each id once: a second visit would penalise twice */
            int dup = 0;
            for (int j = 0; j < i && !dup; j++) dup = seen[j] == t;
            if (!dup) *x = *x < 0 ? *x * o->repetition_penalty : *x / o->repetition_penalty;
        }
    if (!o->do_sample) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    float temp = o->temperature > 0 ? o->temperature : 1.0f;
    for (int i = 0; i < V; i++) {
        cand[i].logit = logits[i] / temp;
        cand[i].id = i;
    }
    qsort(cand, (size_t)V, sizeof *cand, gen_cand_cmp);
    return gen_draw(cand, V, o, rng);
}

/* The sampling draw over n candidates sorted by gen_cand_cmp (temperature applied): top-k, top-p,
 * min-p, then the seeded draw. */
static int32_t gen_draw(const gen_cand *cand, int n, const kn_gen_options *o, uint64_t *rng) {
    if (o->top_k > 0 && o->top_k < n) n = o->top_k;
    double mx = cand[0].logit, sum = 0;
    double *pr = malloc(sizeof(double) * (size_t)n);
    if (!pr) return cand[0].id;
    for (int i = 0; i < n; i++) sum += pr[i] = exp(cand[i].logit - mx);
    for (int i = 0; i < n; i++) pr[i] /= sum;
    if (o->top_p < 1.0f) {
        double c = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            c += pr[i];
            if (c >= o->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    if (o->min_p > 0) {
        double lim = pr[0] * o->min_p;
        int keep = 1;
        while (keep < n && pr[keep] >= lim) keep++;
        n = keep;
    }
    sum = 0;
    for (int i = 0; i < n; i++) sum += pr[i];
    double u = gen_rand_unit(rng) * sum, c = 0;
    int32_t pick = cand[n - 1].id;
    for (int i = 0; i < n; i++) {
        c += pr[i];
        if (u < c) {
            pick = cand[i].id;
            break;
        }
    }
    free(pr);
    return pick;
}

/* ---- one sequence's output state ---- */

typedef struct gen_seq {
    int index; /* the caller's prompt index */
    int32_t *prompt;
    int n_prompt;
    int32_t *ids; /* generated */
    int n_ids;
    char *text; /* decoded so far (stop string cut when finished) */
    size_t len, emitted;
    int done;
    kn_gen_finish finish;
    double t_first, t_last; /* seconds since the batch began: first token, last token */
} gen_seq;

static int gen_is_eos(const kn_generator *g, int32_t t) {
    for (int i = 0; i < g->n_eos; i++)
        if (g->eos[i] == t) return 1;
    return 0;
}

/* Bytes at the end of s that could begin a stop string, to hold back from the stream. */
static size_t gen_stop_prefix(const char *s, size_t len, const kn_gen_options *o) {
    size_t hold = 0;
    for (int k = 0; k < o->n_stop; k++) {
        size_t sl = strlen(o->stop[k]);
        for (size_t m = sl > 1 ? sl - 1 : 0; m > hold; m--)
            if (m <= len && !memcmp(s + len - m, o->stop[k], m)) {
                hold = m;
                break;
            }
    }
    return hold;
}

/* Bytes at the end that are an incomplete UTF-8 character or U+FFFD standing for one (a byte
 * token of a multi-byte character decodes to U+FFFD until the rest arrives). */
static size_t gen_utf8_tail(const char *s, size_t len) {
    /* byte-fallback decoders turn a whole run of byte tokens into one U+FFFD per byte while any
     * of it is not UTF-8, and into its characters once the run completes them: every U+FFFD at
     * the end may still change, so all are held */
    size_t held = 0;
    while (len - held >= 3 && (unsigned char)s[len - held - 3] == 0xEF && (unsigned char)s[len - held - 2] == 0xBF &&
           (unsigned char)s[len - held - 1] == 0xBD)
        held += 3;
    if (held) return held;
    size_t i = len, back = 0;
    while (i > 0 && back < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--, back++;
    if (i == 0) return 0;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return need > back + 1 ? back + 1 : 0;
}

/* A byte-fallback token, "<0xE3>". */
static int gen_is_byte_token(const kn_tokenizer *tok, int32_t id) {
    const char *s = kn_tokenizer_id_to_token(tok, id);
    return s && strlen(s) == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && isxdigit((unsigned char)s[3]) &&
        isxdigit((unsigned char)s[4]) && s[5] == '>';
}

/* After a new token: re-decodes, looks for stop strings, streams what is safe. */
static kn_status *gen_update(const kn_generator *g, gen_seq *q, const kn_gen_options *o, kn_gen_stream_fn stream,
                             void *user, int *abort) {
    char err[256];
    size_t len;
    char *t = kn_tokenizer_decode(g->tok, q->ids, q->n_ids, 1, &len, err, sizeof err);
    if (!t) return kn_error(KN_ERR_RUNTIME, "decoding generated ids: %s", err);
    free(q->text);
    q->text = t;
    q->len = len;
    for (int k = 0; k < o->n_stop; k++) {
        if (!o->stop[k][0]) continue;
        char *hit = memmem(t, len, o->stop[k], strlen(o->stop[k]));
        if (hit) {
            q->len = (size_t)(hit - t);
            t[q->len] = 0;
            q->done = 1;
            q->finish = KN_GEN_STOP;
        }
    }
    size_t safe = q->len;
    if (!q->done) {
        size_t h1 = gen_utf8_tail(t, safe), h2 = gen_stop_prefix(t, safe, o);
        safe -= h1 > h2 ? h1 : h2;
        /* a ByteFallback decoder decodes a run of <0xXX> tokens as a whole, so a byte that is not
         * UTF-8 yet turns the run's earlier bytes, ASCII included, into U+FFFD: the text of a
         * trailing run of byte tokens is not settled until the run ends */
        int k = q->n_ids;
        while (k > 0 && gen_is_byte_token(g->tok, q->ids[k - 1])) k--;
        if (k < q->n_ids) {
            size_t slen = 0;
            char *st = k ? kn_tokenizer_decode(g->tok, q->ids, k, 1, &slen, err, sizeof err) : NULL;
            if (k && !st) return kn_error(KN_ERR_RUNTIME, "decoding generated ids: %s", err);
            if (slen > q->len || (slen && memcmp(st, t, slen))) slen = q->emitted; /* not a prefix: wait */
            free(st);
            if (slen < safe) safe = slen;
        }
    }
    if (stream && safe > q->emitted) {
        if (stream(user, q->index, t + q->emitted, safe - q->emitted)) *abort = 1;
        q->emitted = safe;
    }
    return NULL;
}

/* ---- the decode loop ---- */

static void gen_put_int(void *buf, kn_dtype dt, size_t i, int64_t v) {
    if (dt == KN_I32) ((int32_t *)buf)[i] = (int32_t)v;
    else ((int64_t *)buf)[i] = v;
}

static void gen_tensor(kn_named_tensor *t, const char *name, kn_dtype dt, int ndim, const int64_t *dims, void *data) {
    memset(t, 0, sizeof *t);
    t->name = name;
    t->dtype = dt;
    t->ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)(t->dims[i] = dims[i]);
    t->data = data;
    t->capacity = n * kn_dtype_size(dt);
}

/* The past length fed while n positions are in use: n rounded up to GEN_CAP_ROUND, at most cap,
 * so a run builds one plan per bucket rather than one per token, and attention reads at most
 * GEN_CAP_ROUND - 1 masked positions. */
static int64_t gen_bucket(int64_t n, int64_t cap) {
    int64_t b = (n + GEN_CAP_ROUND - 1) / GEN_CAP_ROUND * GEN_CAP_ROUND;
    return b < cap ? b : cap;
}

/* Widens a [rows, H, from, D] cache in place to [rows, H, to, D] (to > from; the buffer holds
 * rows * H * to * D floats), last block first so nothing is overwritten before it moves; the new
 * positions are zeroed (masked, but they must stay finite: a zero weight times NaN is NaN). */
static void gen_relayout(unsigned char *base, size_t es, int rows, int64_t H, int64_t from, int64_t to, int64_t D) {
    for (int64_t blk = (int64_t)rows * H - 1; blk >= 0; blk--) {
        unsigned char *dst = base + (size_t)(blk * to * D) * es, *src = base + (size_t)(blk * from * D) * es;
        memmove(dst, src, es * (size_t)(from * D));
        memset(dst + (size_t)(from * D) * es, 0, es * (size_t)((to - from) * D));
    }
}

/* gen_relayout for a cache in device memory: through a scratch copy (device copies must not
 * overlap), the new positions zeroed from the host's zeros (at least rows * H * to * D floats). */
static kn_status *gen_relayout_dev(const kn_backend *be, unsigned char *base, unsigned char *tmp,
                                   const unsigned char *zeros, size_t es, int rows, int64_t H, int64_t from, int64_t to,
                                   int64_t D) {
    size_t blocks = (size_t)rows * (size_t)H;
    if (from > 0) KN_TRY(be->copy(be, tmp, be->device, base, be->device, es * blocks * (size_t)(from * D)));
    for (size_t blk = 0; blk < blocks; blk++) {
        unsigned char *dst = base + blk * (size_t)(to * D) * es;
        if (from > 0)
            KN_TRY(be->copy(be, dst, be->device, tmp + blk * (size_t)(from * D) * es, be->device,
                            es * (size_t)(from * D)));
        KN_TRY(be->copy(be, dst + (size_t)(from * D) * es, be->device, zeros, KN_DEVICE_CPU,
                        es * (size_t)((to - from) * D)));
    }
    return NULL;
}

static double gen_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The logits' vocabulary size as the session's output declares it (0: not a fixed dim). */
static int64_t gen_logits_vocab(const kn_generator *g) {
    for (int i = 0; i < kn_session_output_count(g->sess); i++) {
        kn_value_info vi;
        kn_status *st = kn_session_output_info(g->sess, i, &vi);
        if (st) {
            kn_status_free(st);
            continue;
        }
        if (!strcmp(vi.name, g->name_logits)) return vi.ndim == 3 && vi.dims[2] > 0 ? vi.dims[2] : 0;
    }
    return 0;
}

/* Greedy choice on the device (kn_backend.greedy) for the step's `active` rows, whose logits
 * [active, S, V] stay in device memory: row r's last position (own_end: the row's own end, a
 * right-padded prefill), the repetition penalty over the row's distinct prompt and generated ids
 * as gen_pick applies it. Only the ids come back. */
static kn_status *gen_pick_dev(const kn_backend *be, float *dev_logits, gen_seq **rows, const int *map, int active,
                               int64_t S, int own_end, int64_t V, const kn_gen_options *o, int32_t *picked,
                               uint64_t *rng, gen_cand *cand, float *logits) {
    const int pen = o->repetition_penalty != 1.0f;
    int64_t *off = malloc(sizeof *off * (size_t)active);
    int32_t *poff = pen ? malloc(sizeof *poff * (size_t)(active + 1)) : NULL, *pids = NULL;
    uint8_t *mark = pen ? calloc((size_t)V, 1) : NULL;
    size_t total = 0;
    for (int r = 0; r < active; r++) total += (size_t)(rows[map[r]]->n_prompt + rows[map[r]]->n_ids);
    if (pen) pids = malloc(sizeof *pids * (total ? total : 1));
    kn_status *st = NULL;
    if (!off || (pen && (!poff || !pids || !mark))) st = KN_OOM(total * sizeof *pids);
    for (int r = 0; r < active && !st; r++) {
        const gen_seq *q = rows[map[r]];
        int64_t last = own_end ? q->n_prompt - 1 : S - 1;
        off[r] = ((int64_t)r * S + last) * V;
        if (!pen) continue;
        if (r == 0) poff[0] = 0;
        int32_t n = poff[r];
        for (int i = 0; i < q->n_prompt + q->n_ids; i++) {
            int32_t t = i < q->n_prompt ? q->prompt[i] : q->ids[i - q->n_prompt];
            if (t >= 0 && t < V && !mark[t]) mark[t] = 1, pids[n++] = t;
        }
        for (int32_t k = poff[r]; k < n; k++) mark[pids[k]] = 0;
        poff[r + 1] = n;
    }
    if (!st && !o->do_sample)
        st = be->greedy(be, dev_logits, active, off, V, pids, poff, o->repetition_penalty, picked);
    else if (!st) {
        /* sampling: the top k + 32 by logit come back; re-sorted by logit / temperature they hold
         * the CPU's top k unless the division ties the k-th with the last (then, or with a NaN in
         * the row, which the CPU's sort cannot place either, the row itself comes back) */
        int K = o->top_k + 32 < V ? o->top_k + 32 : (int)V;
        float temp = o->temperature > 0 ? o->temperature : 1.0f;
        float *vals = malloc(sizeof(float) * (size_t)active * (size_t)K);
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)active * (size_t)K);
        uint8_t *nan = malloc((size_t)active);
        if (!vals || !ids || !nan) st = KN_OOM(sizeof(float) * (size_t)active * (size_t)K);
        if (!st) st = be->topk(be, dev_logits, active, off, V, pids, poff, o->repetition_penalty, K, vals, ids, nan);
        kn_gen_options plain = *o;
        plain.repetition_penalty = 1.0f; /* applied on the device already */
        for (int r = 0; r < active && !st; r++) {
            const float *v = vals + (size_t)r * (size_t)K;
            int k1 = o->top_k < K ? o->top_k : K;
            if (nan[r] || (K < V && v[K - 1] / temp == v[k1 - 1] / temp)) {
                st = be->copy(be, logits, KN_DEVICE_CPU, dev_logits + off[r], be->device, sizeof(float) * (size_t)V);
                if (!st) picked[r] = gen_pick(logits, (int)V, NULL, 0, &plain, rng, cand);
                continue;
            }
            for (int i = 0; i < K; i++) {
                cand[i].logit = v[i] / temp;
                cand[i].id = ids[(size_t)r * (size_t)K + (size_t)i];
            }
            qsort(cand, (size_t)K, sizeof *cand, gen_cand_cmp);
            picked[r] = gen_draw(cand, K, o, rng);
        }
        free(vals), free(ids), free(nan);
    }
    free(off), free(poff), free(pids), free(mark);
    return st;
}

/* Runs one batch of b sequences (all the same prompt length P after left padding). */
static kn_status *gen_batch(kn_generator *g, gen_seq **rows, int b, const kn_gen_options *o, kn_gen_stream_fn stream,
                            void *user, uint64_t *rng) {
    kn_status *st = NULL;
    const double t0 = gen_now();
    const int L = g->n_layers;
    const int64_t H = g->kv_heads, D = g->head_dim;
    int P = 0;
    for (int i = 0; i < b; i++)
        if (rows[i]->n_prompt > P) P = rows[i]->n_prompt;
    /* shared: GroupQueryAttention reads and appends to one buffer of cap positions per layer, fed as
     * past and bound as present (past_present_share_buffer); prompts are right-padded, each row's
     * length is its own (the mask's sum, which the model turns into seqlens_k), so a row's keys
     * are always positions [0, length); else fixed: one cache of cap positions per slot, see the
     * file comment; else the exact past */
    const int shared = g->share_buffer && !o->no_share_buffer;
    /* GroupQueryAttention reads seqlens_k, not the mask: its rows cannot carry kiln's masked gaps */
    const int fixed = !shared && g->has_pos && !g->share_buffer;
    int64_t need = (int64_t)P + o->max_new_tokens;
    int64_t cap = (need + GEN_CAP_ROUND - 1) / GEN_CAP_ROUND * GEN_CAP_ROUND;
    if (g->context > 0 && cap > g->context) cap = g->context;
    if (cap < need) cap = need;
    /* the split dropped the window's Slices (gen_split_presents): a step's past and new rows, at
     * most cap + 1 positions, must fit in the window, where those Slices keep every row */
    if (fixed && g->past_in_place && g->past_window > 0 && cap + 1 > g->past_window) {
        if (need + 1 > g->past_window)
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "generate: %lld positions (prompt + max_new_tokens) do not fit the model's sliding-window "
                            "cache of %lld, which kiln's fixed cache does not roll over",
                            (long long)need, (long long)g->past_window);
        cap = g->past_window - 1;
    }
    int n_in = 3 + 2 * L, n_out = 1 + 2 * L;
    kn_named_tensor *in = calloc((size_t)n_in, sizeof *in), *out = calloc((size_t)n_out, sizeof *out);
    unsigned char **cache = calloc((size_t)(2 * L), sizeof *cache), **pres = calloc((size_t)(2 * L), sizeof *pres);
    const size_t es = g->kv_es;
    /* the shared buffers in the device session's memory (see the file comment) */
    const kn_backend *be = kn_session_backend(g->sess);
    const int on_dev = (shared || fixed) && be && be->device != KN_DEVICE_CPU && be->alloc && be->copy;
    unsigned char *zeros = NULL, *dev_tmp = NULL; /* on_dev && fixed: for widening the cache (gen_relayout_dev) */
    /* greedy on the device (gen_pick_dev): the logits are a device output, only ids come back;
     * top-k sampling (k + 32 <= KN_TOPK_MAX): the candidates come back, the sort and the seeded
     * draw are the CPU's; other sampling keeps the host path */
    const int dev_sample = o->do_sample && be && be->topk && o->top_k > 0 && o->top_k + 32 <= KN_TOPK_MAX;
    const int64_t dev_vocab =
        on_dev && be->greedy && g->logits_dtype == KN_F32 && (!o->do_sample || dev_sample) ? gen_logits_vocab(g) : 0;
    float *dev_logits = NULL;
    int32_t *picked = NULL;
    uint8_t *in_dev = calloc((size_t)n_in, 1), *out_dev = calloc((size_t)n_out, 1);
    int64_t *ids = calloc((size_t)b * (size_t)(P > 1 ? P : 1), sizeof *ids);
    int64_t *pos = calloc((size_t)b * (size_t)(P > 1 ? P : 1), sizeof *pos);
    uint8_t *valid = calloc((size_t)b * (size_t)(cap + 1), 1); /* per slot: attended to */
    int64_t *mask = calloc((size_t)b * (size_t)(cap + P + 1), sizeof *mask);
    int64_t *npos = calloc((size_t)b, sizeof *npos);
    int32_t *seen = NULL;
    gen_cand *cand = NULL;
    float *logits = NULL;
    int vocab = 0;
    unsigned char *exact_past[2 * GEN_MAX_LAYERS] = {0}; /* models without position_ids: last present */
    int *map = NULL;                                     /* batch row -> rows[] */
    if (!in || !out || !cache || !pres || !ids || !pos || !valid || !mask || !npos || !in_dev || !out_dev) {
        st = KN_OOM(0);
        goto done;
    }
    size_t cache_floats = (size_t)b * (size_t)H * (size_t)cap * (size_t)D;
    if (on_dev) {
        /* zeroed once from the host: positions not yet written are masked but must stay finite;
         * fixed: the presents too (the graph's output, at one address for the whole call), and a
         * scratch copy of a cache for widening it */
        size_t pres_floats = (size_t)b * (size_t)H * (size_t)(P > 1 ? P : 1) * (size_t)D;
        if (!g->past_in_place) pres_floats += cache_floats; /* else only a step's new rows */
        if (!(zeros = calloc(cache_floats ? cache_floats : 1, es))) {
            st = KN_OOM(cache_floats * es);
            goto done;
        }
        for (int k = 0; k < 2 * L && !st; k++) {
            if (!(cache[k] = be->alloc(be, cache_floats * es)) ||
                (fixed && !(pres[k] = be->alloc(be, pres_floats * es))))
                st = kn_error(KN_ERR_OUT_OF_MEMORY, "generate: the key/value cache on %s: %zu bytes per layer",
                              be->name, cache_floats * es);
            else st = be->copy(be, cache[k], be->device, zeros, KN_DEVICE_CPU, cache_floats * es);
        }
        if (!st && fixed && !(dev_tmp = be->alloc(be, cache_floats * es)))
            st = kn_error(KN_ERR_OUT_OF_MEMORY, "generate: scratch for the key/value cache on %s: %zu bytes", be->name,
                          cache_floats * es);
        size_t logit_bytes = sizeof(float) * (size_t)b * (size_t)(P > 1 ? P : 1) * (size_t)dev_vocab;
        if (!st && dev_vocab &&
            (!(dev_logits = be->alloc(be, logit_bytes)) || !(picked = malloc(sizeof(int32_t) * (size_t)b))))
            st = kn_error(KN_ERR_OUT_OF_MEMORY, "generate: the logits on %s: %zu bytes", be->name, logit_bytes);
        if (st) goto done;
    } else if (fixed || shared)
        for (int k = 0; k < 2 * L; k++) {
            if (!(cache[k] = calloc(cache_floats, es)) ||
                (fixed && !g->past_in_place &&
                 !(pres[k] = calloc(cache_floats + (size_t)b * (size_t)H * (size_t)(P > 1 ? P : 1) * (size_t)D, es)))) {
                st = KN_OOM(cache_floats * es);
                goto done;
            }
        }
    /* prefill: left padded prompts (right padded when shared), positions counting the real tokens
     * only */
    for (int r = 0; r < b; r++) {
        int pad = shared ? 0 : P - rows[r]->n_prompt;
        for (int j = 0; j < P; j++) {
            int real = shared ? j < rows[r]->n_prompt : j >= pad;
            ids[r * P + j] = real ? rows[r]->prompt[j - pad] : g->pad_id;
            mask[r * P + j] = real;
            pos[r * P + j] = real ? j - pad : 1;
            valid[r * (cap + 1) + j] = (uint8_t)real;
        }
        npos[r] = rows[r]->n_prompt;
    }
    int64_t cur = P; /* slots written */
    int64_t past_len = 0;
    int64_t stride = 0; /* positions per (row, head) in the cache's layout now: the past fed */
    int first = 1;
    int active = b;
    map = malloc(sizeof(int) * (size_t)b);
    if (!map) {
        st = KN_OOM(0);
        goto done;
    }
    for (int r = 0; r < b; r++) map[r] = r;
    int64_t step_in = P;
    static const double zero_f = 0; /* an empty past's data, whatever its type */
    while (active > 0) {
        int64_t S = first ? step_in : 1;
        /* shared: the mask says which positions each row uses; the prompt's is the prompt's length
         * (GroupQueryAttention's rule for a first prompt: as many tokens as the total), later ones
         * a bucket of 64 (one plan per bucket) */
        int64_t mlen = past_len + S;
        if (shared && !first) {
            int64_t longest = 0;
            for (int r = 0; r < active; r++) {
                const gen_seq *q = rows[map[r]];
                if (q->n_prompt + q->n_ids > longest) longest = q->n_prompt + q->n_ids;
            }
            mlen = gen_bucket(longest, cap);
        }
        /* build the step's inputs for the `active` rows */
        void *idbuf = malloc((size_t)active * (size_t)S * 8), *posbuf = malloc((size_t)active * (size_t)S * 8);
        void *maskbuf = malloc((size_t)active * (size_t)mlen * 8);
        if (!idbuf || !posbuf || !maskbuf) {
            free(idbuf), free(posbuf), free(maskbuf);
            st = KN_OOM(0);
            goto done;
        }
        for (int r = 0; r < active; r++) {
            int q = map[r];
            for (int64_t j = 0; j < S; j++) {
                gen_put_int(idbuf, g->ids_dtype, (size_t)(r * S + j),
                            first ? ids[q * P + j] : rows[q]->ids[rows[q]->n_ids - 1]);
                gen_put_int(posbuf, g->pos_dtype, (size_t)(r * S + j), first ? pos[q * P + j] : npos[q] - 1);
            }
            for (int64_t j = 0; j < mlen; j++) {
                int64_t m;
                if (first) m = mask[q * P + j];
                else if (shared) m = j < rows[q]->n_prompt + rows[q]->n_ids;
                else if (fixed) m = j == past_len ? 1 : valid[q * (cap + 1) + j];
                else m = 1;
                gen_put_int(maskbuf, g->mask_dtype, (size_t)(r * mlen + j), m);
            }
        }
        int ni = 0;
        int64_t d2[2] = {active, S}, dm[2] = {active, mlen};
        gen_tensor(&in[ni++], g->name_ids, g->ids_dtype, 2, d2, idbuf);
        if (g->has_mask) gen_tensor(&in[ni++], g->name_mask, g->mask_dtype, 2, dm, maskbuf);
        if (g->has_pos) gen_tensor(&in[ni++], g->name_pos, g->pos_dtype, 2, d2, posbuf);
        int64_t dp[4] = {active, H, past_len, D}, dq[4] = {active, H, past_len + S, D};
        if (shared) dp[2] = dq[2] = cap;
        for (int k = 0; k < 2 * L && shared; k++) {
            in_dev[ni] = (uint8_t)on_dev;
            gen_tensor(&in[ni++], k < L ? g->past_k[k] : g->past_v[k - L], g->kv_dtype, 4, dp, cache[k]);
        }
        for (int k = 0; k < 2 * L && !shared; k++) {
            const char *nm = k < L ? g->past_k[k] : g->past_v[k - L];
            void *data = fixed ? (void *)cache[k] : (exact_past[k] ? (void *)exact_past[k] : (void *)&zero_f);
            if (first) data = (void *)&zero_f;
            in_dev[ni] = (uint8_t)(on_dev && !first); /* the prefill's past is empty */
            gen_tensor(&in[ni++], nm, g->kv_dtype, 4, dp, data);
            if (first || !fixed) in[ni - 1].capacity = past_len ? in[ni - 1].capacity : 0;
        }
        int no = 0;
        memset(&out[no], 0, sizeof out[no]);
        out[no].name = g->name_logits;
        if (dev_logits) {
            int64_t dl[3] = {active, S, dev_vocab};
            out_dev[no] = 1;
            gen_tensor(&out[no], g->name_logits, KN_F32, 3, dl, dev_logits);
            out[no].capacity = sizeof(float) * (size_t)b * (size_t)(P > 1 ? P : 1) * (size_t)dev_vocab;
        }
        no++;
        for (int k = 0; k < 2 * L; k++) {
            const char *nm = k < L ? g->pres_k[k] : g->pres_v[k - L];
            if (fixed && g->past_in_place && on_dev) { /* the new rows, at one device address */
                int64_t dn[4] = {active, H, S, D};
                out_dev[no] = 1;
                gen_tensor(&out[no++], k < L ? g->new_k[k] : g->new_v[k - L], g->kv_dtype, 4, dn, pres[k]);
            } else if (fixed && g->past_in_place) { /* the step's new rows [active, H, S, D] */
                memset(&out[no], 0, sizeof out[no]);
                out[no++].name = k < L ? g->new_k[k] : g->new_v[k - L];
            } else if (fixed) {
                out_dev[no] = (uint8_t)on_dev;
                gen_tensor(&out[no++], nm, g->kv_dtype, 4, dq, pres[k]);
            } else if (shared) {
                out_dev[no] = (uint8_t)on_dev;
                gen_tensor(&out[no++], nm, g->kv_dtype, 4, dq, cache[k]); /* the past's own buffer */
            } else {
                memset(&out[no], 0, sizeof out[no]);
                out[no++].name = nm;
            }
        }
        st = on_dev ? kn_session_run_device(g->sess, in, ni, in_dev, out, no, out_dev)
                    : kn_session_run(g->sess, in, ni, out, no);
        free(idbuf), free(posbuf), free(maskbuf);
        if (st) goto done;
        if (dev_logits) out[0].data = NULL; /* device memory: never kn_free'd, read by gen_pick_dev */
        if ((out[0].dtype != KN_F32 && out[0].dtype != KN_F16 && out[0].dtype != KN_BF16) || out[0].ndim != 3 ||
            out[0].dims[0] != active || out[0].dims[1] != S) {
            st = kn_error(KN_ERR_INVALID_MODEL,
                          "generate: output %s is not float32/float16/bfloat16 [batch, sequence, vocab]", out[0].name);
            kn_free(out[0].data);
            goto done;
        }
        vocab = (int)out[0].dims[2];
        if (!cand) {
            cand = malloc(sizeof *cand * (size_t)vocab);
            logits = malloc(sizeof(float) * (size_t)vocab);
            if (!cand || !logits) {
                kn_free(out[0].data);
                st = KN_OOM(0);
                goto done;
            }
        }
        /* keep the step's keys/values */
        if (fixed) {
            int64_t T = past_len + S;
            int64_t want = gen_bucket(first ? P : cur + 1, cap);
            if (want > stride)
                for (int k = 0; k < 2 * L && !st; k++) {
                    if (on_dev) st = gen_relayout_dev(be, cache[k], dev_tmp, zeros, es, active, H, stride, want, D);
                    else gen_relayout(cache[k], es, active, H, stride, want, D);
                }
            stride = want;
            /* past read in place: the outputs are the new rows alone, [active, H, S, D] */
            const int64_t src_T = g->past_in_place ? S : T, src_0 = g->past_in_place ? 0 : past_len;
            for (int k = 0; k < 2 * L && g->past_in_place && !st; k++)
                if (out[1 + k].dtype != g->kv_dtype || out[1 + k].ndim != 4 || out[1 + k].dims[0] != active ||
                    out[1 + k].dims[1] != H || out[1 + k].dims[2] != S || out[1 + k].dims[3] != D) {
                    char b1[KN_DESC_LEN];
                    kn_tensor t = {.dtype = out[1 + k].dtype, .ndim = out[1 + k].ndim};
                    memcpy(t.dims, out[1 + k].dims, sizeof t.dims);
                    st = kn_error(KN_ERR_INVALID_MODEL,
                                  "generate: %s, the new keys/values of a present, is %s, not %s [%d,%lld,%lld,%lld]",
                                  out[1 + k].name, kn_tensor_desc(&t, b1, sizeof b1), kn_dtype_name(g->kv_dtype),
                                  active, (long long)H, (long long)S, (long long)D);
                }
            for (int k = 0; k < 2 * L && on_dev && !st; k++)
                for (int r = 0; r < active && !st; r++) {
                    /* the step's rows, device to device; a left-pad position keeps the zeros it
                     * was allocated with (see below) */
                    int64_t lo = 0;
                    while (first && lo < S && !valid[map[r] * (cap + 1) + lo]) lo++;
                    for (int64_t h = 0; h < H && !st && lo < S; h++)
                        st = be->copy(
                            be,
                            cache[k] +
                                (((size_t)r * (size_t)H + (size_t)h) * (size_t)stride + (size_t)(first ? lo : cur)) *
                                    (size_t)D * es,
                            be->device,
                            pres[k] +
                                (((size_t)r * (size_t)H + (size_t)h) * (size_t)src_T + (size_t)(src_0 + lo)) *
                                    (size_t)D * es,
                            be->device, es * (size_t)((S - lo) * D));
                }
            for (int k = 0; k < 2 * L && !on_dev && !st; k++) {
                const unsigned char *rows_k = g->past_in_place ? (const unsigned char *)out[1 + k].data : NULL;
                for (int r = 0; r < active; r++)
                    for (int64_t h = 0; h < H; h++)
                        for (int64_t j = 0; j < S; j++) {
                            const unsigned char *src = rows_k ? rows_k +
                                    (((size_t)r * (size_t)H + (size_t)h) * (size_t)S + (size_t)j) * (size_t)D * es
                                                              : pres[k] +
                                    (((size_t)r * (size_t)H + (size_t)h) * (size_t)T + (size_t)(past_len + j)) *
                                        (size_t)D * es;
                            unsigned char *dst = cache[k] +
                                (((size_t)r * (size_t)H + (size_t)h) * (size_t)stride + (size_t)(first ? j : cur)) *
                                    (size_t)D * es;
                            /* a left-pad position keeps zeros: its keys came from a query row
                             * that saw no key, which some exports turn into NaN, and a masked
                             * NaN still poisons the weighted sum */
                            if (first && !valid[map[r] * (cap + 1) + j]) memset(dst, 0, es * (size_t)D);
                            else memcpy(dst, src, es * (size_t)D);
                        }
            }
            for (int k = 0; k < 2 * L && g->past_in_place && !on_dev; k++) {
                kn_free(out[1 + k].data);
                out[1 + k].data = NULL;
            }
            if (st) {
                kn_free(out[0].data);
                goto done;
            }
            if (!first) {
                for (int r = 0; r < active; r++) valid[map[r] * (cap + 1) + cur] = 1;
                cur++;
            }
            past_len = stride;
        } else if (shared) {
            past_len += S;
        } else {
            for (int k = 0; k < 2 * L; k++) {
                if (exact_past[k]) kn_free(exact_past[k]);
                exact_past[k] = out[1 + k].data;
                out[1 + k].data = NULL;
            }
            past_len += S;
        }
        /* pick, record, finish */
        int abort = 0;
        if (dev_logits && vocab != dev_vocab) {
            st = kn_error(KN_ERR_INVALID_MODEL, "generate: output %s has %d logits per position, declared %lld",
                          out[0].name, vocab, (long long)dev_vocab);
            goto done;
        }
        if (dev_logits &&
            (st = gen_pick_dev(be, dev_logits, rows, map, active, S, shared && first, dev_vocab, o, picked, rng, cand,
                               logits)))
            goto done;
        for (int r = 0; r < active; r++) {
            gen_seq *q = rows[map[r]];
            int32_t t = dev_logits ? picked[r] : 0;
            if (!dev_logits) {
                int64_t last = shared && first ? q->n_prompt - 1 : S - 1; /* right padding: the row's own end */
                size_t at = ((size_t)r * (size_t)S + (size_t)last) * (size_t)vocab;
                if (out[0].dtype == KN_F32) memcpy(logits, (float *)out[0].data + at, sizeof(float) * (size_t)vocab);
                else /* float16 / bfloat16 logits: sampling and greedy read float32 */
                    for (int v = 0; v < vocab; v++)
                        logits[v] = kn_load_f32(out[0].data, out[0].dtype, (int64_t)(at + (size_t)v));
                int n_seen = q->n_prompt + q->n_ids;
                int32_t *sn = realloc(seen, sizeof(int32_t) * (size_t)(n_seen + 1));
                if (!sn) {
                    kn_free(out[0].data);
                    st = KN_OOM(0);
                    goto done;
                }
                seen = sn;
                memcpy(seen, q->prompt, sizeof(int32_t) * (size_t)q->n_prompt);
                memcpy(seen + q->n_prompt, q->ids, sizeof(int32_t) * (size_t)q->n_ids);
                t = gen_pick(logits, vocab, seen, n_seen, o, rng, cand);
            }
            q->ids[q->n_ids++] = t;
            q->t_last = gen_now() - t0;
            if (q->n_ids == 1) q->t_first = q->t_last;
            npos[map[r]]++;
            if ((st = gen_update(g, q, o, stream, user, &abort))) {
                kn_free(out[0].data);
                goto done;
            }
            if (!q->done && gen_is_eos(g, t)) q->done = 1, q->finish = KN_GEN_EOS;
            if (!q->done && q->n_ids >= o->max_new_tokens) q->done = 1, q->finish = KN_GEN_LENGTH;
        }
        kn_free(out[0].data);
        out[0].data = NULL;
        if (abort) {
            st = kn_error(KN_ERR_RUNTIME, "generate: stopped by the stream callback");
            goto done;
        }
        /* finished rows drop out: their cache rows are packed away */
        int w = 0;
        for (int r = 0; r < active; r++) {
            if (rows[map[r]]->done) continue;
            if (w != r) {
                size_t row = (size_t)H * (size_t)(shared ? cap : fixed ? stride : past_len) * (size_t)D;
                for (int k = 0; k < 2 * L && !st; k++) {
                    unsigned char *base = fixed || shared ? cache[k] : exact_past[k];
                    if (on_dev) /* w < r: whole rows, never overlapping */
                        st = be->copy(be, base + (size_t)w * row * es, be->device, base + (size_t)r * row * es,
                                      be->device, row * es);
                    else memmove(base + (size_t)w * row * es, base + (size_t)r * row * es, row * es);
                }
                if (st) goto done;
            }
            map[w++] = map[r];
        }
        active = w;
        first = 0;
    }
done:
    for (int k = 0; k < 2 * GEN_MAX_LAYERS; k++)
        if (exact_past[k]) kn_free(exact_past[k]);
    for (int k = 0; out && fixed && g->past_in_place && !on_dev && k < 2 * L; k++) kn_free(out[1 + k].data);
    if (cache)
        for (int k = 0; k < 2 * L; k++) {
            if (on_dev) {
                if (cache[k]) be->free(be, cache[k]);
                if (pres[k]) be->free(be, pres[k]);
            } else free(cache[k]), free(pres[k]);
        }
    if (dev_tmp) be->free(be, dev_tmp);
    if (dev_logits) be->free(be, dev_logits);
    free(picked);
    free(zeros);
    free(in_dev), free(out_dev);
    free(map);
    free(in), free(out), free(cache), free(pres), free(ids), free(pos), free(valid), free(mask), free(npos), free(seen);
    free(cand), free(logits);
    return st;
}

kn_status *kn_generate_ids(kn_generator *g, int n, const int32_t *const *prompt_ids, const int *prompt_lens,
                           const kn_gen_options *opt, kn_gen_stream_fn stream, void *user, kn_gen_result *results) {
    kn_gen_options o = opt ? *opt : g->defaults;
    if (o.max_new_tokens < 1)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "generate: max_new_tokens %d < 1", o.max_new_tokens);
    if (o.batch_size < 1) o.batch_size = 1;
    if (g->share_buffer ? o.no_share_buffer : !g->has_pos) o.batch_size = 1;
    memset(results, 0, sizeof *results * (size_t)n);
    gen_seq *seqs = calloc((size_t)(n ? n : 1), sizeof *seqs);
    if (!seqs) return KN_OOM(0);
    kn_status *st = NULL;
    for (int i = 0; i < n && !st; i++) {
        int len = prompt_lens[i];
        const int32_t *p = prompt_ids[i];
        if (len < 1) {
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "generate: prompt %d is empty", i);
            break;
        }
        if (g->context > 0 && len + o.max_new_tokens > g->context) {
            if (!o.truncate || o.max_new_tokens >= g->context) {
                st = kn_error(
                    KN_ERR_INVALID_ARGUMENT,
                    "generate: prompt %d has %d tokens; with max_new_tokens %d that exceeds the model's context "
                    "of %d (truncate to keep the last %d)",
                    i, len, o.max_new_tokens, g->context, g->context - o.max_new_tokens);
                break;
            }
            p += len - (g->context - o.max_new_tokens);
            len = g->context - o.max_new_tokens;
        }
        seqs[i].index = i;
        seqs[i].prompt = malloc(sizeof(int32_t) * (size_t)len);
        seqs[i].ids = malloc(sizeof(int32_t) * (size_t)o.max_new_tokens);
        if (!seqs[i].prompt || !seqs[i].ids) {
            st = KN_OOM(0);
            break;
        }
        memcpy(seqs[i].prompt, p, sizeof(int32_t) * (size_t)len);
        seqs[i].n_prompt = len;
    }
    uint64_t rng = o.seed;
    for (int s = 0; s < n && !st; s += o.batch_size) {
        int b = n - s < o.batch_size ? n - s : o.batch_size;
        gen_seq *rows[b];
        for (int i = 0; i < b; i++) rows[i] = &seqs[s + i];
        st = gen_batch(g, rows, b, &o, stream, user, &rng);
        for (int i = 0; i < b && !st; i++) {
            gen_seq *q = rows[i];
            if (stream && q->len > q->emitted) stream(user, q->index, q->text + q->emitted, q->len - q->emitted);
        }
    }
    for (int i = 0; i < n; i++) {
        if (!st) {
            results[i].text = seqs[i].text ? seqs[i].text : strdup("");
            results[i].len = seqs[i].text ? seqs[i].len : 0;
            results[i].ids = seqs[i].ids;
            results[i].n_ids = seqs[i].n_ids;
            results[i].finish = seqs[i].finish;
            results[i].first_token_s = seqs[i].t_first;
            results[i].decode_s = seqs[i].t_last - seqs[i].t_first;
            results[i].prompt_ids = seqs[i].prompt;
            results[i].n_prompt_ids = seqs[i].n_prompt;
            seqs[i].prompt = NULL;
        } else {
            free(seqs[i].text);
            free(seqs[i].ids);
        }
        free(seqs[i].prompt);
    }
    free(seqs);
    return st;
}

kn_status *kn_generate(kn_generator *g, int n, const char *const *prompts, const kn_gen_options *opt,
                       kn_gen_stream_fn stream, void *user, kn_gen_result *results) {
    kn_encoding *enc = calloc((size_t)(n ? n : 1), sizeof *enc);
    const int32_t **ids = calloc((size_t)(n ? n : 1), sizeof *ids);
    int *lens = calloc((size_t)(n ? n : 1), sizeof *lens);
    kn_status *st = NULL;
    if (!enc || !ids || !lens) st = KN_OOM(0);
    kn_encode_options eo;
    kn_encode_options_init(&eo);
    eo.per_call = 1;
    if (opt ? opt->prompt_no_special : g->defaults.prompt_no_special) eo.add_special_tokens = 0;
    char err[512];
    for (int i = 0; i < n && !st; i++) {
        if (kn_tokenizer_encode(g->tok, prompts[i], strlen(prompts[i]), NULL, 0, &eo, &enc[i], err, sizeof err))
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "generate: prompt %d: %s", i, err);
        else {
            ids[i] = enc[i].ids;
            lens[i] = enc[i].n;
        }
    }
    if (!st) st = kn_generate_ids(g, n, ids, lens, opt, stream, user, results);
    for (int i = 0; enc && i < n; i++) kn_encoding_free(&enc[i]);
    free(enc), free(ids), free(lens);
    return st;
}
