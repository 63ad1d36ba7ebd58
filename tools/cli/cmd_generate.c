/* `kiln run --type textGeneration` (JSON lines in, JSON lines out, optionally one delta line per
 * piece of text as it comes) and `kiln generate --model DIR "prompt"` (text streamed to the
 * terminal), both over pipelines/generate.h. A prompt is a user turn: with the folder's chat
 * template it is rendered as apply_chat_template(add_generation_prompt=True) and encoded without
 * special tokens, as transformers does; --no-chat-template feeds the text as it is. */
#ifdef KILN_HAVE_PIPELINES
#include "tools/cli/cli.h"
#include "pipelines/generate.h"
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GEN_MAX_STOP 16

typedef struct gen_cli {
    const char *model, *input, *system;
    kn_gen_options o;
    const char *stop[GEN_MAX_STOP];
    int stream;
    int stats;      /* --stats: plans built and tokens to stderr at the end */
    int profile;    /* --profile: the session's time per op type to stderr at the end */
    int raw;        /* --no-chat-template */
    int prompt_ids; /* --prompt-ids: each output line carries PromptTokenIds */
    int noted;      /* the no-template note was printed */
} gen_cli;

static void gen_cli_usage(const char *cmd) {
    fprintf(stderr,
            "usage: kiln %s --model DIR%s [options]\n"
            "  --max-new-tokens N  --temperature T (> 0 samples, 0 is greedy)  --top-k K  --top-p P\n"
            "  --min-p P  --repetition-penalty R  --seed S  --stop STRING (repeatable)  --system-prompt TEXT\n"
            "  --batch-size N  --truncate (keep a long prompt's last tokens)  --device cpu|cuda[:N]  --threads N\n"
            "  --stats: executor plans built and tokens generated, to stderr (kiln run: and per line FirstTokenMs,\n"
            "           DecodeMsPerToken in the output)\n"
            "  --no-chat-template: the prompt text as it is (default: the folder's chat template renders it)\n"
            "  --prompt-ids: output lines carry PromptTokenIds, the prompt as fed to the model\n"
            "  --no-share-buffer: a GroupQueryAttention decoder copies its past every step (measurements)\n"
            "  --profile: time and calls per op type over the whole call, to stderr\n"
            "  defaults: the folder's generation_config.json (genai_config.json search), else greedy, 64 tokens%s\n",
            cmd, strcmp(cmd, "generate") ? " --type textGeneration [--input FILE]" : " \"prompt\"",
            strcmp(cmd, "generate") ? "\n  --stream: one JSON delta line per piece of text as it comes" : "");
}

/* Parses the shared options; returns the index of an unknown argument's position, or -1 on
 * error, or argc when all were read. Positional arguments go to *positional. */
static int gen_cli_parse(int argc, char **argv, gen_cli *c, kn_session_options *so, const char **positional,
                         const char *cmd) {
    int n_stop = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--stream")) {
            c->stream = 1;
            continue;
        }
        if (!strcmp(a, "--stats")) {
            c->stats = 1;
            continue;
        }
        if (!strcmp(a, "--profile")) {
            c->profile = so->profile = 1;
            continue;
        }
        if (!strcmp(a, "--truncate")) {
            c->o.truncate = 1;
            continue;
        }
        if (!strcmp(a, "--no-chat-template")) {
            c->raw = 1;
            continue;
        }
        if (!strcmp(a, "--prompt-ids")) {
            c->prompt_ids = 1;
            continue;
        }
        if (!strcmp(a, "--no-share-buffer")) {
            c->o.no_share_buffer = 1;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            gen_cli_usage(cmd);
            return -2;
        }
        if (a[0] != '-' || !a[1]) {
            if (positional && !*positional) {
                *positional = a;
                continue;
            }
            fprintf(stderr, "kiln %s: unexpected argument '%s'\n", cmd, a);
            return -1;
        }
        if (!v) {
            fprintf(stderr, "kiln %s: %s needs a value\n", cmd, a);
            return -1;
        }
        char *end = NULL;
        i++;
        if (!strcmp(a, "--model")) c->model = v;
        else if (!strcmp(a, "--type")) {
            if (strcmp(v, "textGeneration")) {
                fprintf(stderr, "kiln %s: --type %s is not textGeneration\n", cmd, v);
                return -1;
            }
        } else if (!strcmp(a, "--input")) c->input = v;
        else if (!strcmp(a, "--system-prompt")) c->system = v;
        else if (!strcmp(a, "--stop")) {
            if (n_stop == GEN_MAX_STOP) {
                fprintf(stderr, "kiln %s: at most %d --stop strings\n", cmd, GEN_MAX_STOP);
                return -1;
            }
            c->stop[n_stop++] = v;
        } else if (!strcmp(a, "--device")) {
            if (kn_cli_parse_device(v, so)) {
                fprintf(stderr, "kiln %s: bad --device %s\n", cmd, v);
                return -1;
            }
        } else if (!strcmp(a, "--threads")) {
            long long x = strtoll(v, &end, 10);
            if (!*v || *end || x < 0) {
                fprintf(stderr, "kiln %s: --threads wants a non-negative integer, not '%s'\n", cmd, v);
                return -1;
            }
            so->num_threads = (int)x;
        } else if (!strcmp(a, "--max-new-tokens") || !strcmp(a, "--top-k") || !strcmp(a, "--batch-size") ||
                   !strcmp(a, "--seed")) {
            long long x = strtoll(v, &end, 10);
            if (!*v || *end || x < 0 || (x < 1 && strcmp(a, "--top-k") && strcmp(a, "--seed"))) {
                fprintf(stderr, "kiln %s: %s wants a %s integer, not '%s'\n", cmd, a,
                        strcmp(a, "--top-k") && strcmp(a, "--seed") ? "positive" : "non-negative", v);
                return -1;
            }
            if (!strcmp(a, "--max-new-tokens")) c->o.max_new_tokens = (int)x;
            if (!strcmp(a, "--top-k")) c->o.top_k = (int)x;
            if (!strcmp(a, "--batch-size")) c->o.batch_size = (int)x;
            if (!strcmp(a, "--seed")) c->o.seed = (uint64_t)x;
        } else if (!strcmp(a, "--temperature") || !strcmp(a, "--top-p") || !strcmp(a, "--min-p") ||
                   !strcmp(a, "--repetition-penalty")) {
            double x = strtod(v, &end);
            if (!*v || *end || !(x >= 0) || (!strcmp(a, "--repetition-penalty") && !(x > 0))) {
                fprintf(stderr, "kiln %s: %s wants a number >= 0, not '%s'\n", cmd, a, v);
                return -1;
            }
            if (!strcmp(a, "--temperature")) {
                c->o.temperature = (float)x;
                c->o.do_sample = x > 0;
            }
            if (!strcmp(a, "--top-p")) c->o.top_p = (float)x;
            if (!strcmp(a, "--min-p")) c->o.min_p = (float)x;
            if (!strcmp(a, "--repetition-penalty")) c->o.repetition_penalty = (float)x;
        } else {
            fprintf(stderr, "kiln %s: unknown option %s\n", cmd, a);
            return -1;
        }
    }
    c->o.stop = c->stop;
    c->o.n_stop = n_stop;
    if (!c->model) {
        fprintf(stderr, "kiln %s: --model DIR is required\n", cmd);
        return -1;
    }
    return argc;
}

static int gen_cli_open(const gen_cli *c, const kn_session_options *so, kn_generator **g, const char *cmd) {
    kn_status *st = kn_generator_open(c->model, so, g);
    if (st) {
        fprintf(stderr, "kiln %s: %s\n", cmd, kn_status_message(st));
        kn_status_free(st);
        return 1;
    }
    return 0;
}

/* One conversation (a JSON list of messages) to prompt text; says once, on stderr, when turns are
 * joined plainly because the folder has no chat template. */
static kn_status *gen_cli_format(const kn_generator *g, gen_cli *c, const char *cmd, json_object *messages,
                                 char **out) {
    const char *system = c->system;
    if (!kn_generator_has_chat_template(g) && !c->raw && !c->noted &&
        (json_object_array_length(messages) > 1 || system)) {
        fprintf(stderr, "kiln %s: %s has no chat template: the system prompt and turns are joined with newlines\n", cmd,
                c->model);
        c->noted = 1;
    }
    return kn_generate_format_chat(g, system, json_object_to_json_string_ext(messages, JSON_C_TO_STRING_PLAIN), !c->raw,
                                   out, NULL);
}

static json_object *gen_user_turn(const char *text) {
    json_object *m = json_object_new_array(), *e = json_object_new_object();
    json_object_object_add(e, "role", json_object_new_string("user"));
    json_object_object_add(e, "content", json_object_new_string(text));
    json_object_array_add(m, e);
    return m;
}

/* Chat-templated text carries its special tokens: the tokenizer must not add its own. */
static void gen_cli_special(const kn_generator *g, gen_cli *c) {
    c->o.prompt_no_special = !c->raw && kn_generator_has_chat_template(g);
}

static int gen_term_piece(void *user, int index, const char *piece, size_t len) {
    (void)user, (void)index;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static void gen_cli_profile(const kn_generator *g) {
    char *buf = malloc(1 << 16);
    if (buf) fprintf(stderr, "%s", kn_generator_profile(g, buf, 1 << 16));
    free(buf);
}

int kn_cmd_generate(int argc, char **argv) {
    gen_cli c;
    memset(&c, 0, sizeof c);
    kn_gen_options_init(&c.o);
    kn_session_options so;
    kn_session_options_init(&so);
    const char *prompt = NULL;
    int r = gen_cli_parse(argc, argv, &c, &so, &prompt, "generate");
    if (r < 0) return r == -2 ? 0 : 2;
    if (!prompt) {
        fprintf(stderr, "kiln generate: no prompt given\n");
        return 2;
    }
    kn_generator *g;
    if (gen_cli_open(&c, &so, &g, "generate")) return 1;
    /* the folder's generation settings first, the command line's over them */
    kn_generator_default_options(g, &c.o);
    prompt = NULL;
    gen_cli_parse(argc, argv, &c, &so, &prompt, "generate");
    gen_cli_special(g, &c);
    char *text = NULL;
    json_object *turn = gen_user_turn(prompt);
    kn_status *st = gen_cli_format(g, &c, "generate", turn, &text);
    json_object_put(turn);
    kn_gen_result res;
    const char *p = text;
    if (!st) st = kn_generate(g, 1, &p, &c.o, gen_term_piece, NULL, &res);
    free(text);
    int rc = 0;
    if (st) {
        fprintf(stderr, "\nkiln generate: %s\n", kn_status_message(st));
        kn_status_free(st);
        rc = 1;
    } else {
        printf("\n");
        if (c.stats) {
            int64_t captured = 0, replayed = 0;
            kn_generator_graph_counts(g, &captured, &replayed);
            const char *note = kn_generator_past_note(g); /* on the line itself: tests read the last line */
            fprintf(stderr,
                    "kiln generate: %d tokens, %lld plans built, prompt %d tokens, first token %.3f ms, decode %.3f "
                    "ms/token, %lld graphs recorded, %lld replays, past read in place in %d layers%s%s%s\n",
                    res.n_ids, (long long)kn_generator_plans_built(g), res.n_prompt_ids, 1e3 * res.first_token_s,
                    res.n_ids > 1 ? 1e3 * res.decode_s / (res.n_ids - 1) : 0.0, (long long)captured,
                    (long long)replayed, kn_generator_past_in_place(g), note ? " (past copied: " : "", note ? note : "",
                    note ? ")" : "");
        }
        if (c.profile) gen_cli_profile(g);
        kn_gen_result_free(&res);
    }
    kn_generator_free(g);
    return rc;
}

typedef struct gen_line {
    json_object *obj;   /* the parsed line */
    json_object *input; /* its "input" or "messages" */
    char *prompt;       /* formatted, NULL on error */
    char *error;
} gen_line;

typedef struct gen_stream_ctx {
    gen_line *lines;
    int base;
} gen_stream_ctx;

static int gen_json_piece(void *user, int index, const char *piece, size_t len) {
    gen_stream_ctx *s = user;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "index", json_object_new_int(s->base + index));
    json_object_object_add(o, "delta", json_object_new_string_len(piece, (int)len));
    printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    fflush(stdout);
    json_object_put(o);
    (void)s->lines;
    return 0;
}

static void gen_line_prompt(const kn_generator *g, gen_cli *c, gen_line *l, const char *text, size_t len) {
    l->obj = json_tokener_parse(text);
    (void)len;
    json_object *v;
    if (!l->obj || !json_object_is_type(l->obj, json_type_object)) {
        l->error = strdup("not a JSON object");
        return;
    }
    if (json_object_object_get_ex(l->obj, "input", &v) && json_object_is_type(v, json_type_string)) {
        json_object *turn = gen_user_turn(json_object_get_string(v));
        l->input = v;
        kn_status *st = gen_cli_format(g, c, "run", turn, &l->prompt);
        json_object_put(turn);
        if (st) l->error = strdup(kn_status_message(st)), kn_status_free(st);
        return;
    }
    if (json_object_object_get_ex(l->obj, "messages", &v) && json_object_is_type(v, json_type_array)) {
        int n = (int)json_object_array_length(v);
        for (int i = 0; i < n && !l->error; i++) {
            json_object *m = json_object_array_get_idx(v, (size_t)i), *r, *t;
            if (!json_object_is_type(m, json_type_object) || !json_object_object_get_ex(m, "role", &r) ||
                !json_object_object_get_ex(m, "content", &t) || !json_object_is_type(t, json_type_string) ||
                !json_object_is_type(r, json_type_string))
                l->error = strdup("each message needs string \"role\" and \"content\"");
        }
        l->input = v;
        if (!l->error) {
            kn_status *st = gen_cli_format(g, c, "run", v, &l->prompt);
            if (st) l->error = strdup(kn_status_message(st)), kn_status_free(st);
        }
        return;
    }
    l->error = strdup("textGeneration expects \"input\": \"text\" or \"messages\": [{\"role\", \"content\"}]");
}

static void gen_print(json_object *o) {
    printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

/* Runs the lines read so far (those without errors) as one kn_generate call of batch_size rows. */
static int gen_flush(kn_generator *g, const gen_cli *c, gen_line *lines, int n, int base) {
    const char **prompts = calloc((size_t)n + 1, sizeof *prompts);
    int *which = calloc((size_t)n + 1, sizeof *which), m = 0;
    kn_gen_result *res = calloc((size_t)n + 1, sizeof *res);
    kn_status *st = NULL;
    for (int i = 0; i < n; i++)
        if (!lines[i].error) which[m] = i, prompts[m++] = lines[i].prompt;
    gen_stream_ctx sc = {lines, base};
    if (m) st = kn_generate(g, m, prompts, &c->o, c->stream ? gen_json_piece : NULL, &sc, res);
    if (st && m > 1 && !c->stream) {
        /* one bad prompt (empty, over the context) must not cost the others their answers: run
         * them one by one, each line then carrying its own error */
        kn_status_free(st);
        st = NULL;
        for (int j = 0; j < m; j++) {
            kn_status *one = kn_generate(g, 1, &prompts[j], &c->o, NULL, NULL, &res[j]);
            if (one) {
                lines[which[j]].error = strdup(kn_status_message(one));
                kn_status_free(one);
                memset(&res[j], 0, sizeof res[j]);
            }
        }
    }
    for (int i = 0, j = 0; i < n; i++) {
        json_object *o = json_object_new_object();
        kn_gen_result *r = j < m && which[j] == i ? &res[j++] : NULL; /* NULL: the line was not run */
        if (lines[i].input) json_object_object_add(o, "input", json_object_get(lines[i].input));
        if (lines[i].error || st || !r) {
            const char *msg = lines[i].error ? lines[i].error : st ? kn_status_message(st) : "not run";
            json_object_object_add(o, "error", json_object_new_string(msg));
        } else {
            json_object *out = json_object_new_object(), *ids = json_object_new_array();
            json_object_object_add(out, "Response", json_object_new_string_len(r->text, (int)r->len));
            for (int k = 0; k < r->n_ids; k++) json_object_array_add(ids, json_object_new_int(r->ids[k]));
            json_object_object_add(out, "TokenIds", ids);
            json_object_object_add(out, "FinishReason", json_object_new_string(kn_gen_finish_name(r->finish)));
            if (c->stats) {
                json_object_object_add(out, "FirstTokenMs", json_object_new_double(1e3 * r->first_token_s));
                json_object_object_add(out, "DecodeMsPerToken",
                                       json_object_new_double(r->n_ids > 1 ? 1e3 * r->decode_s / (r->n_ids - 1) : 0));
            }
            if (c->prompt_ids) {
                json_object *pids = json_object_new_array();
                for (int k = 0; k < r->n_prompt_ids; k++)
                    json_object_array_add(pids, json_object_new_int(r->prompt_ids[k]));
                json_object_object_add(out, "PromptTokenIds", pids);
            }
            json_object_object_add(o, "output", out);
        }
        if (r) kn_gen_result_free(r);
        gen_print(o);
    }
    kn_status_free(st);
    free(prompts), free(which), free(res);
    return 0;
}

int kn_cmd_run_textgen(int argc, char **argv) {
    gen_cli c;
    memset(&c, 0, sizeof c);
    kn_gen_options_init(&c.o);
    kn_session_options so;
    kn_session_options_init(&so);
    int r = gen_cli_parse(argc, argv, &c, &so, NULL, "run");
    if (r < 0) return r == -2 ? 0 : 2;
    FILE *in = stdin;
    if (c.input && strcmp(c.input, "-") && !(in = fopen(c.input, "r"))) {
        fprintf(stderr, "kiln run: cannot open %s\n", c.input);
        return 1;
    }
    kn_generator *g;
    if (gen_cli_open(&c, &so, &g, "run")) {
        if (in != stdin) fclose(in);
        return 1;
    }
    kn_generator_default_options(g, &c.o);
    gen_cli_parse(argc, argv, &c, &so, NULL, "run");
    gen_cli_special(g, &c);
    int bs = c.o.batch_size, n = 0, base = 0;
    gen_line *lines = calloc((size_t)bs, sizeof *lines);
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&buf, &cap, in)) >= 0) {
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) buf[--len] = 0;
        if (!len) continue;
        gen_line_prompt(g, &c, &lines[n++], buf, (size_t)len);
        if (n == bs) {
            gen_flush(g, &c, lines, n, base);
            for (int i = 0; i < n; i++) json_object_put(lines[i].obj), free(lines[i].prompt), free(lines[i].error);
            memset(lines, 0, sizeof *lines * (size_t)bs);
            base += n;
            n = 0;
        }
    }
    if (n) gen_flush(g, &c, lines, n, base);
    for (int i = 0; i < n; i++) json_object_put(lines[i].obj), free(lines[i].prompt), free(lines[i].error);
    free(lines), free(buf);
    if (in != stdin) fclose(in);
    if (c.stats) {
        int64_t captured = 0, replayed = 0;
        kn_generator_graph_counts(g, &captured, &replayed);
        const char *note = kn_generator_past_note(g);
        fprintf(
            stderr,
            "kiln run: %lld plans built, %lld graphs recorded, %lld replays, past read in place in %d layers%s%s%s\n",
            (long long)kn_generator_plans_built(g), (long long)captured, (long long)replayed,
            kn_generator_past_in_place(g), note ? " (past copied: " : "", note ? note : "", note ? ")" : "");
    }
    if (c.profile) gen_cli_profile(g);
    kn_generator_free(g);
    return 0;
}
#endif
