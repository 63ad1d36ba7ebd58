/* `kiln chat-template`: renders a model's chat template over a conversation, as transformers'
 * apply_chat_template(tokenize=False) does, and prints the text. --batch renders many
 * (template, context) cases from JSON lines in one process, for the parity tests. */
#ifdef KILN_HAVE_PIPELINES
#include "pipelines/chat_template.h"
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void ct_usage(void) {
    fprintf(
        stderr,
        "usage: kiln chat-template (--model DIR | --template FILE) (--messages FILE.json | --context FILE.json)\n"
        "                          [--add-generation-prompt] [--tools FILE.json] [--bos S] [--eos S] [--now EPOCH]\n"
        "       kiln chat-template --batch FILE.jsonl\n"
        "  --messages: a JSON list of {role, content, ...}; the context is then {messages, tools, documents,\n"
        "              add_generation_prompt, bos_token, eos_token} as apply_chat_template builds it\n"
        "  --context:  the whole JSON object of template variables instead\n"
        "  --batch:    lines {\"template\": S, \"context\": {...}, \"now\": N}; prints a line\n"
        "              {\"ok\": true, \"text\": S} or {\"ok\": false, \"error\": S} for each\n");
}

static char *ct_slurp(const char *path) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return NULL;
    size_t n = 0, cap = 1 << 16;
    char *b = malloc(cap);
    while (b) {
        if (n + 1 >= cap) {
            char *q = realloc(b, cap * 2);
            if (!q) {
                free(b);
                b = NULL;
                break;
            }
            b = q;
            cap *= 2;
        }
        size_t k = fread(b + n, 1, cap - n - 1, f);
        if (!k) break;
        n += k;
    }
    if (f != stdin) fclose(f);
    if (b) b[n] = 0;
    return b;
}

static int ct_batch(const char *path) {
    char *text = ct_slurp(path);
    if (!text) {
        fprintf(stderr, "kiln chat-template: cannot read %s\n", path);
        return 1;
    }
    char *last_src = NULL;
    kn_chat_template *t = NULL;
    kn_status *tst = NULL;
    int line_no = 0, rc = 0;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        line_no++;
        if (*line) {
            struct json_object *c = json_tokener_parse(line), *tv, *cv, *nv;
            if (!c || !json_object_object_get_ex(c, "template", &tv) || !json_object_object_get_ex(c, "context", &cv)) {
                fprintf(stderr, "kiln chat-template: %s:%d: expected {\"template\", \"context\"}\n", path, line_no);
                if (c) json_object_put(c);
                rc = 1;
                break;
            }
            const char *src = json_object_get_string(tv);
            if (!last_src || strcmp(last_src, src)) {
                kn_chat_template_free(t);
                kn_status_free(tst);
                t = NULL;
                free(last_src);
                last_src = strdup(src);
                tst = kn_chat_template_parse(src, &t);
            }
            kn_chat_template_options o = {0};
            if (json_object_object_get_ex(c, "now", &nv)) {
                o.fixed_now = 1;
                o.now = (time_t)json_object_get_int64(nv);
            }
            char *out = NULL;
            kn_status *st = tst
                ? NULL
                : kn_chat_template_render_ex(t, json_object_to_json_string_ext(cv, JSON_C_TO_STRING_PLAIN), &o, &out);
            struct json_object *res = json_object_new_object();
            json_object_object_add(res, "ok", json_object_new_boolean(!tst && !st));
            if (tst || st)
                json_object_object_add(res, "error", json_object_new_string(kn_status_message(tst ? tst : st)));
            else json_object_object_add(res, "text", json_object_new_string(out));
            puts(json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
            json_object_put(res);
            json_object_put(c);
            kn_status_free(st);
            free(out);
        }
        line = nl ? nl + 1 : NULL;
    }
    kn_chat_template_free(t);
    kn_status_free(tst);
    free(last_src);
    free(text);
    return rc;
}

int kn_cmd_chat_template(int argc, char **argv) {
    const char *model = NULL, *tmpl = NULL, *messages = NULL, *context = NULL, *tools = NULL, *bos = NULL, *eos = NULL;
    const char *batch = NULL;
    int gen = 0, fixed = 0;
    long long now = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--add-generation-prompt")) gen = 1;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            ct_usage();
            return 0;
        } else if (v && !strcmp(a, "--model")) model = argv[++i];
        else if (v && !strcmp(a, "--template")) tmpl = argv[++i];
        else if (v && !strcmp(a, "--messages")) messages = argv[++i];
        else if (v && !strcmp(a, "--context")) context = argv[++i];
        else if (v && !strcmp(a, "--tools")) tools = argv[++i];
        else if (v && !strcmp(a, "--bos")) bos = argv[++i];
        else if (v && !strcmp(a, "--eos")) eos = argv[++i];
        else if (v && !strcmp(a, "--batch")) batch = argv[++i];
        else if (v && !strcmp(a, "--now")) {
            fixed = 1;
            now = atoll(argv[++i]);
        } else {
            fprintf(stderr, "kiln chat-template: unknown or incomplete argument '%s'\n", a);
            ct_usage();
            return 2;
        }
    }
    if (batch) return ct_batch(batch);
    if (!!model == !!tmpl || !!messages == !!context) {
        ct_usage();
        return 2;
    }
    kn_chat_template_source src = {0};
    kn_status *st = NULL;
    if (model) st = kn_chat_template_load_dir(model, &src);
    else if (!(src.source = ct_slurp(tmpl))) {
        fprintf(stderr, "kiln chat-template: cannot read %s\n", tmpl);
        return 1;
    }
    char *ctx_text = NULL;
    if (!st) {
        const char *path = context ? context : messages;
        char *body = ct_slurp(path);
        struct json_object *j = body ? json_tokener_parse(body) : NULL;
        free(body);
        if (!j) {
            fprintf(stderr, "kiln chat-template: %s: cannot read it as JSON\n", path);
            kn_chat_template_source_free(&src);
            return 1;
        }
        if (messages) {
            char *tb = NULL;
            if (tools && !(tb = ct_slurp(tools))) {
                fprintf(stderr, "kiln chat-template: cannot read %s\n", tools);
                json_object_put(j);
                kn_chat_template_source_free(&src);
                return 1;
            }
            st = kn_chat_template_context(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN), tb, gen,
                                          bos ? bos : src.bos_token, eos ? eos : src.eos_token, &ctx_text);
            free(tb);
        } else {
            ctx_text = strdup(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
        }
        json_object_put(j);
    }
    kn_chat_template *t = NULL;
    char *out = NULL;
    if (!st) st = kn_chat_template_parse(src.source, &t);
    kn_chat_template_options o = {.fixed_now = fixed, .now = (time_t)now};
    if (!st) st = kn_chat_template_render_ex(t, ctx_text, &o, &out);
    kn_chat_template_free(t);
    kn_chat_template_source_free(&src);
    free(ctx_text);
    if (st) {
        fprintf(stderr, "kiln: error: %s\n", kn_status_message(st));
        kn_status_free(st);
        return 1;
    }
    fwrite(out, 1, strlen(out), stdout);
    free(out);
    return 0;
}
#endif
