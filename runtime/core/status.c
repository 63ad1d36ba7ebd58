/* Status objects: an error code plus a heap message. NULL is success, so the common path costs
 * nothing; allocation failure while reporting falls back to a static out-of-memory status. */
#include "runtime/core/status.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kn_status kn_status_oom = {KN_ERR_OUT_OF_MEMORY, "out of memory while reporting an error"};

static char *kn_vformat(const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (s) vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

kn_status *kn_error(kn_status_code code, const char *fmt, ...) {
    kn_status *st = malloc(sizeof *st);
    if (!st) return &kn_status_oom;
    va_list ap;
    va_start(ap, fmt);
    st->msg = kn_vformat(fmt, ap);
    va_end(ap);
    if (!st->msg) {
        free(st);
        return &kn_status_oom;
    }
    st->code = code;
    return st;
}

kn_status *kn_error_wrap(kn_status *st, const char *fmt, ...) {
    if (!st || st == &kn_status_oom) return st;
    va_list ap;
    va_start(ap, fmt);
    char *prefix = kn_vformat(fmt, ap);
    va_end(ap);
    if (!prefix) return st;
    size_t a = strlen(prefix), b = strlen(st->msg);
    char *m = malloc(a + b + 1);
    if (m) {
        memcpy(m, prefix, a);
        memcpy(m + a, st->msg, b + 1);
        free(st->msg);
        st->msg = m;
    }
    free(prefix);
    return st;
}

kn_status_code kn_status_get_code(const kn_status *st) { return st ? st->code : KN_OK; }
const char *kn_status_message(const kn_status *st) { return st ? st->msg : "ok"; }
void kn_status_free(kn_status *st) {
    if (!st || st == &kn_status_oom) return;
    free(st->msg);
    free(st);
}
void kn_free(void *p) { free(p); }
