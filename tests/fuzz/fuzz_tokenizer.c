/* libFuzzer harness for tokenizer.json: any byte string must load or fail with a message, never
 * crash, hang, leak or read outside its buffers (the Regex patterns go to PCRE2). A tokenizer that
 * loads then encodes a few fixed texts (one with invalid UTF-8, a pair, with and without
 * truncation and stride) and decodes the ids back, so the loaded tables are exercised too.
 * Build: tests/fuzz/README.md. */
#include "pipelines/tokenizer.h"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void exercise(const kn_tokenizer *t) {
    static const char *const texts[] = {"Hello, world! kiln's tokenizer",
                                        "caf\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x99\x82", "bad \xff\xc0 bytes",
                                        ""};
    kn_encode_options o;
    for (int k = 0; k < 3; k++) {
        kn_encode_options_init(&o);
        if (k == 1) {
            o.max_length = 6;
            o.stride = 2;
        }
        if (k == 2) {
            o.add_special_tokens = 0;
            o.per_call = 1;
        }
        for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
            kn_encoding e = {0};
            char err[256];
            const char *pair = i == 1 ? texts[0] : NULL;
            size_t plen = pair ? 31 : 0;
            size_t len = 0;
            while (texts[i][len]) len++;
            if (kn_tokenizer_encode(t, texts[i], len, pair, plen, &o, &e, err, sizeof err) != 0) continue;
            size_t out_len = 0;
            char *s = kn_tokenizer_decode(t, e.ids, e.n, k == 0, &out_len, err, sizeof err);
            free(s);
            kn_encoding_free(&e);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[1024];
    kn_tokenizer *t = kn_tokenizer_load_json((const char *)data, size, err, sizeof err);
    if (!t) return 0;
    exercise(t);
    kn_tokenizer_free(t);
    return 0;
}
