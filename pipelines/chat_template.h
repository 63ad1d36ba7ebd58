/* Chat templates: a Jinja subset interpreter that renders a model's chat_template exactly as
 * transformers' apply_chat_template does (Jinja2's ImmutableSandboxedEnvironment with
 * trim_blocks, lstrip_blocks and loop controls, transformers' tojson / raise_exception /
 * strftime_now / namespace). A construct outside the subset is an error naming it and its
 * line:column, never an approximate rendering. A parsed template is immutable and may be
 * rendered by any number of threads at once; each render owns its memory. */
#ifndef KN_CHAT_TEMPLATE_H
#define KN_CHAT_TEMPLATE_H

#include "kiln.h"
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_chat_template kn_chat_template;

/* Parses a template source. Errors (KN_ERR_INVALID_ARGUMENT for syntax, KN_ERR_UNSUPPORTED for
 * a construct outside the subset) name "line L, column C". */
kn_status *kn_chat_template_parse(const char *source, kn_chat_template **out);
void kn_chat_template_free(kn_chat_template *t);

typedef struct kn_chat_template_options {
    int fixed_now;  /* 1: strftime_now formats `now` instead of the current time */
    time_t now;     /* with fixed_now; formatted as local time, as Python's datetime.now() */
    size_t max_out; /* 0: 64 MiB; a render producing more fails (a runaway template never hangs) */
} kn_chat_template_options;

/* Renders with the variables of a JSON object (messages, add_generation_prompt, bos_token,
 * eos_token, tools, ... as apply_chat_template passes them). *out is malloc'd, NUL-terminated.
 * raise_exception(msg) fails with a status whose message is exactly msg. */
kn_status *kn_chat_template_render(const kn_chat_template *t, const char *context_json, char **out);
kn_status *kn_chat_template_render_ex(const kn_chat_template *t, const char *context_json,
                                      const kn_chat_template_options *opt, char **out);

/* The variables apply_chat_template(tokenize=False) passes to a template: {messages, tools, documents,
 * add_generation_prompt, bos_token, eos_token}. messages_json is a JSON list of messages, given the
 * aliases transformers adds (a message's reasoning, under the first of reasoning_content /
 * thinking / reasoning, also as "thinking", first, and "reasoning_content"); tools_json a JSON list
 * or NULL (null); documents is null; a NULL token is left out. *context_json is malloc'd. */
kn_status *kn_chat_template_context(const char *messages_json, const char *tools_json, int add_generation_prompt,
                                    const char *bos_token, const char *eos_token, char **context_json);

/* A model folder's template and special tokens, read as transformers reads them:
 * chat_template.jinja if present, else tokenizer_config.json "chat_template" (a string, or a list
 * of {name, template} of which "default" is taken), and its bos_token / eos_token (a string or
 * an added-token object {"content": ...}; absent: NULL). Every string is malloc'd. */
typedef struct kn_chat_template_source {
    char *source;
    char *bos_token;
    char *eos_token;
} kn_chat_template_source;
kn_status *kn_chat_template_load_dir(const char *dir, kn_chat_template_source *out);
void kn_chat_template_source_free(kn_chat_template_source *s);

#ifdef __cplusplus
}
#endif
#endif
