/* unit.test_chat_template: the chat-template API beyond rendering parity (parity.py has that):
 * errors name line:column and the construct, raise_exception's message is the status message,
 * strftime_now with a fixed time, model folders (chat_template.jinja, tokenizer_config.json with a
 * string or a named list, special tokens as strings or objects), limits (nesting, output size,
 * loop budget), and a mutation fuzz over the model templates that must never crash or hang (the
 * CI runs it under AddressSanitizer).
 *   test_chat_template TEMPLATES_DIR */
#include "pipelines/chat_template.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>

static int failures, checks;
#define CHECK(cond, ...) \
    do { \
        checks++; \
        if (!(cond)) { \
            failures++; \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__); \
            fprintf(stderr, "\n"); \
        } \
    } while (0)

/* renders src over ctx; returns the text (malloc'd) or NULL with the status in *st */
static char *render(const char *src, const char *ctx, kn_status **st) {
    kn_chat_template *t = NULL;
    char *out = NULL;
    kn_chat_template_options o = {.fixed_now = 1, .now = 1721999000};
    *st = kn_chat_template_parse(src, &t);
    if (!*st) *st = kn_chat_template_render_ex(t, ctx, &o, &out);
    kn_chat_template_free(t);
    return out;
}

static void expect_text(const char *src, const char *ctx, const char *want) {
    kn_status *st;
    char *out = render(src, ctx, &st);
    CHECK(!st && out && !strcmp(out, want), "%s -> %s (want %s)", src, st ? kn_status_message(st) : out, want);
    kn_status_free(st);
    free(out);
}
static void expect_error(const char *src, const char *ctx, kn_status_code code, const char *const *parts) {
    kn_status *st;
    char *out = render(src, ctx, &st);
    CHECK(st && !out, "%s should fail, rendered %s", src, out ? out : "");
    if (st) {
        CHECK(!code || kn_status_get_code(st) == code, "%s: code %d, want %d (%s)", src, kn_status_get_code(st), code,
              kn_status_message(st));
        for (int i = 0; parts && parts[i]; i++)
            CHECK(strstr(kn_status_message(st), parts[i]), "%s: message '%s' lacks '%s'", src, kn_status_message(st),
                  parts[i]);
    }
    kn_status_free(st);
    free(out);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (b) b[n] = 0;
    fclose(f);
    return b;
}
static void spit(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void test_errors(void) {
    const char *p1[] = {"line 2, column 10", NULL};
    expect_error("{% if x %}\n  {{ y + }}\n{% endif %}", "{}", KN_ERR_INVALID_ARGUMENT, p1);
    const char *p2[] = {"line 1, column 4", "include", NULL};
    expect_error("{% include 'x' %}", "{}", KN_ERR_UNSUPPORTED, p2);
    const char *p3[] = {"line 3, column 6", "no filter named 'nope'", NULL};
    expect_error("a\nb\n{{ x|nope }}", "{}", KN_ERR_INVALID_ARGUMENT, p3);
    const char *p4[] = {"'endif'", "line 1, column 11", NULL};
    expect_error("{% if x %}", "{}", KN_ERR_INVALID_ARGUMENT, p4);
    const char *p5[] = {"'y' is undefined", "line 1, column 4", NULL};
    expect_error("{{ y.z }}", "{}", KN_ERR_INVALID_ARGUMENT, p5);
    const char *p6[] = {"division by zero", NULL};
    expect_error("{{ 1 // 0 }}", "{}", KN_ERR_INVALID_ARGUMENT, p6);
    const char *p7[] = {"invalid JSON", NULL};
    expect_error("x", "{\"messages\": [", KN_ERR_INVALID_ARGUMENT, p7);
    const char *p8[] = {"must be a JSON object", NULL};
    expect_error("x", "[1]", KN_ERR_INVALID_ARGUMENT, p8);

    /* raise_exception: the status message is exactly the template's message */
    kn_status *st;
    char *out = render("{% if messages|length == 0 %}{{ raise_exception('No messages given: \"x\" é') }}{% endif %}",
                       "{\"messages\": []}", &st);
    CHECK(st && !out && !strcmp(kn_status_message(st), "No messages given: \"x\" é"), "raise_exception message '%s'",
          st ? kn_status_message(st) : "(rendered)");
    CHECK(kn_status_get_code(st) == KN_ERR_INVALID_ARGUMENT, "raise_exception code %d", kn_status_get_code(st));
    kn_status_free(st);
    free(out);
}

static void test_render(void) {
    setenv("TZ", "UTC", 1);
    tzset();
    expect_text("{{ strftime_now('%d %b %Y %H:%M') }}", "{}", "26 Jul 2024 13:03");
    expect_text(
        "{% for m in messages %}{{ m.role }}:{{ m.content|trim }}{% if not loop.last %}|{% endif %}{% endfor %}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \" a \"}, {\"role\": \"assistant\", \"content\": \"b\"}]}",
        "user:a|assistant:b");
    expect_text("  {% if true %}\n  x\n  {% endif %}\n", "{}", "  x\n");
    expect_text("{{ {'b': [1, 2.5, none], 'a': 'é\\n'}|tojson(indent=2) }}", "{}",
                "{\n  \"b\": [\n    1,\n    2.5,\n    null\n  ],\n  \"a\": \"é\\n\"\n}");
    /* the default render function uses the clock: only check it formats something */
    kn_chat_template *t = NULL;
    char *out = NULL;
    kn_status *st = kn_chat_template_parse("{{ strftime_now('%Y') }}", &t);
    if (!st) st = kn_chat_template_render(t, "{}", &out);
    CHECK(!st && out && strlen(out) == 4 && out[0] == '2', "strftime_now(%%Y) now: %s",
          out ? out : kn_status_message(st));
    kn_status_free(st);
    free(out);
    kn_chat_template_free(t);
    /* a parsed template is reusable */
    st = kn_chat_template_parse("{{ n * 2 }}", &t);
    for (int i = 0; i < 3 && !st; i++) {
        char ctx[32], want[32];
        snprintf(ctx, sizeof ctx, "{\"n\": %d}", i);
        snprintf(want, sizeof want, "%d", 2 * i);
        st = kn_chat_template_render(t, ctx, &out);
        CHECK(!st && !strcmp(out, want), "reuse %d: %s", i, out ? out : kn_status_message(st));
        free(out);
        out = NULL;
    }
    kn_status_free(st);
    kn_chat_template_free(t);
}

static void test_context(void) {
    char *ctx = NULL;
    kn_status *st = kn_chat_template_context("[{\"role\": \"user\", \"content\": \"hi\", \"reasoning\": \"r\"}]", NULL,
                                             1, "<s>", NULL, &ctx);
    CHECK(!st && ctx, "context: %s", kn_status_message(st));
    if (ctx) {
        char *out =
            render("{{ messages[0] }}|{{ tools }}|{{ documents }}|{{ add_generation_prompt }}|{{ bos_token }}|{{ "
                   "eos_token is defined }}",
                   ctx, &st);
        CHECK(!st && out &&
                  !strcmp(out,
                          "{'thinking': 'r', 'role': 'user', 'content': 'hi', 'reasoning': 'r', 'reasoning_content': "
                          "'r'}|None|None|True|<s>|False"),
              "context render: %s", out ? out : kn_status_message(st));
        free(out);
        kn_status_free(st);
    }
    free(ctx);
    st = kn_chat_template_context("{\"role\": \"user\"}", NULL, 0, NULL, NULL, &ctx);
    CHECK(st && !ctx && strstr(kn_status_message(st), "JSON list"), "messages not a list: %s", kn_status_message(st));
    kn_status_free(st);
    st = kn_chat_template_context("[]", "{}", 0, NULL, NULL, &ctx);
    CHECK(st && !ctx && strstr(kn_status_message(st), "tools"), "tools not a list: %s", kn_status_message(st));
    kn_status_free(st);
}

static void test_limits(void) {
    /* deep nesting of expressions, statements and context JSON fails cleanly */
    size_t n = 5000;
    char *deep = malloc(4 * n + 16);
    strcpy(deep, "{{ ");
    for (size_t i = 0; i < n; i++) strcat(deep + 3 + i, "(");
    strcat(deep, "1");
    for (size_t i = 0; i < n; i++) strcat(deep, ")");
    strcat(deep, " }}");
    const char *pd[] = {"nested too deeply", NULL};
    expect_error(deep, "{}", KN_ERR_INVALID_ARGUMENT, pd);
    deep[0] = 0;
    for (size_t i = 0; i < 1000; i++) strcat(deep, "{%if 1%}");
    expect_error(deep, "{}", KN_ERR_INVALID_ARGUMENT, NULL);
    deep[0] = 0;
    strcat(deep, "{\"a\": ");
    for (size_t i = 0; i < 2000; i++) strcat(deep, "[");
    for (size_t i = 0; i < 2000; i++) strcat(deep, "]");
    strcat(deep, "}");
    expect_error("{{ a }}", deep, KN_ERR_INVALID_ARGUMENT, NULL);
    free(deep);
    /* runaway loops and output end with an error, never a hang */
    const char *pl[] = {"loop iterations", NULL};
    expect_error("{% set l = range(5000) %}{% for a in l %}{% for b in l %}{% endfor %}{% endfor %}", "{}",
                 KN_ERR_INVALID_ARGUMENT, pl);
    kn_chat_template *t = NULL;
    char *out = NULL;
    kn_chat_template_options o = {.max_out = 1000};
    kn_status *st = kn_chat_template_parse("{% for a in range(1000) %}0123456789{% endfor %}", &t);
    if (!st) st = kn_chat_template_render_ex(t, "{}", &o, &out);
    CHECK(st && !out && kn_status_get_code(st) == KN_ERR_OUT_OF_MEMORY, "max_out: %s",
          st ? kn_status_message(st) : out);
    kn_status_free(st);
    kn_chat_template_free(t);
    const char *pm[] = {"nested too deeply", NULL};
    expect_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "{}", KN_ERR_INVALID_ARGUMENT, pm);
    const char *pr[] = {"range too big", NULL};
    expect_error("{{ range(1000000)|length }}", "{}", KN_ERR_INVALID_ARGUMENT, pr);
}

static void test_load_dir(void) {
    char dir[] = "/tmp/kn_chat_tmplXXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return;
    }
    char p[256], p2[256];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    snprintf(p2, sizeof p2, "%s/chat_template.jinja", dir);
    kn_chat_template_source s;
    kn_status *st = kn_chat_template_load_dir(dir, &s);
    CHECK(st && strstr(kn_status_message(st), "no chat_template"), "empty folder: %s", kn_status_message(st));
    kn_status_free(st);

    spit(p,
         "{\"bos_token\": \"<s>\", \"eos_token\": {\"content\": \"</s>\", \"lstrip\": false}, "
         "\"chat_template\": \"{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}\"}");
    st = kn_chat_template_load_dir(dir, &s);
    CHECK(!st && s.source && !strcmp(s.source, "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}") &&
              s.bos_token && !strcmp(s.bos_token, "<s>") && s.eos_token && !strcmp(s.eos_token, "</s>"),
          "string template: %s", st ? kn_status_message(st) : "wrong fields");
    kn_status_free(st);
    kn_chat_template_source_free(&s);

    spit(p,
         "{\"bos_token\": null, \"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, "
         "{\"name\": \"default\", \"template\": \"D\"}]}");
    st = kn_chat_template_load_dir(dir, &s);
    CHECK(!st && s.source && !strcmp(s.source, "D") && !s.bos_token && !s.eos_token, "named list: %s",
          st ? kn_status_message(st) : s.source);
    kn_status_free(st);
    kn_chat_template_source_free(&s);

    spit(p, "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}]}");
    st = kn_chat_template_load_dir(dir, &s);
    CHECK(st && strstr(kn_status_message(st), "default"), "list without default: %s", kn_status_message(st));
    kn_status_free(st);

    spit(p2, "FROM FILE");
    st = kn_chat_template_load_dir(dir, &s);
    CHECK(!st && s.source && !strcmp(s.source, "FROM FILE"), "chat_template.jinja first: %s",
          st ? kn_status_message(st) : s.source);
    kn_status_free(st);
    kn_chat_template_source_free(&s);

    spit(p, "{not json");
    st = kn_chat_template_load_dir(dir, &s);
    CHECK(st != NULL, "broken tokenizer_config.json must fail");
    kn_status_free(st);
    unlink(p);
    unlink(p2);
    rmdir(dir);
}

/* xorshift: the fuzz is reproducible from its seed */
static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void fuzz(const char *dir) {
    /* the five model templates, then those of extra/ */
    char *names[64];
    int nn = 0;
    static const char *const base[] = {"llama-3.1", "llama-3.2", "qwen-2.5", "phi-3.5", "gemma-3"};
    for (int i = 0; i < 5; i++) names[nn++] = strdup(base[i]);
    char xd[1024];
    snprintf(xd, sizeof xd, "%s/extra", dir);
    DIR *d = opendir(xd);
    for (struct dirent *e; d && (e = readdir(d)) && nn < 64;) {
        size_t l = strlen(e->d_name);
        if (l > 6 && !strcmp(e->d_name + l - 6, ".jinja")) {
            char tmp[600];
            snprintf(tmp, sizeof tmp, "extra/%.*s", (int)(l - 6), e->d_name);
            names[nn++] = strdup(tmp);
        }
    }
    if (d) closedir(d);
    static const char *const pieces[] = {"{{",
                                         "}}",
                                         "{%",
                                         "%}",
                                         "{#",
                                         "#}",
                                         "-",
                                         "+",
                                         "|",
                                         "(",
                                         ")",
                                         "[",
                                         "]",
                                         "'",
                                         "\"",
                                         ".",
                                         ",",
                                         ":",
                                         " if ",
                                         " for ",
                                         " in ",
                                         " endfor ",
                                         " endif ",
                                         " set ",
                                         "loop",
                                         "messages",
                                         "tojson",
                                         "trim",
                                         "\\",
                                         "\n",
                                         "~",
                                         "*",
                                         "0",
                                         " is ",
                                         " not ",
                                         "namespace(",
                                         "raise_exception(",
                                         "{% raw %}",
                                         "é",
                                         "\xff"};
    const char *ctx =
        "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": "
        "\"u\"}, {\"role\": \"assistant\", \"content\": \"a\", \"tool_calls\": [{\"function\": {\"name\": "
        "\"f\", \"arguments\": {\"x\": 1}}}]}, {\"role\": \"tool\", \"content\": \"r\"}], "
        "\"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", "
        "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]}";
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int rendered = 0, refused = 0, runs = 0;
    for (int k = 0; k < nn; k++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s.jinja", dir, names[k]);
        char *src = slurp(path);
        CHECK(src != NULL, "cannot read %s", path);
        if (!src) {
            free(names[k]);
            continue;
        }
        size_t n = strlen(src);
        /* the unmutated template renders */
        kn_status *st;
        char *out = render(src, ctx, &st);
        /* the published templates render this conversation, or refuse it with their own message */
        CHECK(!st || kn_status_get_code(st) == KN_ERR_INVALID_ARGUMENT, "%s: %s", names[k], kn_status_message(st));
        kn_status_free(st);
        free(out);
        for (int it = 0; it < (k < 5 ? 600 : 200); it++) {
            char *m = malloc(n + 64 * 8 + 1);
            memcpy(m, src, n + 1);
            size_t len = n;
            int edits = 1 + (int)(rng_next(&seed) % 4);
            for (int e = 0; e < edits; e++) {
                size_t at = len ? rng_next(&seed) % len : 0;
                int kind = (int)(rng_next(&seed) % 3);
                if (kind == 0 && len) { /* delete a run */
                    size_t del = 1 + rng_next(&seed) % 8;
                    if (at + del > len) del = len - at;
                    memmove(m + at, m + at + del, len - at - del + 1);
                    len -= del;
                } else { /* insert or overwrite a piece */
                    const char *pc = pieces[rng_next(&seed) % (sizeof pieces / sizeof *pieces)];
                    size_t pl = strlen(pc);
                    if (kind == 2 && at + pl <= len) memcpy(m + at, pc, pl);
                    else {
                        memmove(m + at + pl, m + at, len - at + 1);
                        memcpy(m + at, pc, pl);
                        len += pl;
                    }
                }
            }
            out = render(m, ctx, &st);
            runs++;
            if (st) {
                refused++;
                CHECK(kn_status_message(st)[0] != 0, "empty error message");
            } else rendered++;
            kn_status_free(st);
            free(out);
            free(m);
        }
        free(src);
        free(names[k]);
    }
    printf("fuzz: %d mutated templates, %d rendered, %d refused with an error\n", runs, rendered, refused);
    CHECK(rendered > 0 && refused > 0, "the mutations should both render and fail (%d, %d)", rendered, refused);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_chat_template TEMPLATES_DIR\n");
        return 2;
    }
    test_errors();
    test_render();
    test_context();
    test_limits();
    test_load_dir();
    fuzz(argv[1]);
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
