/* Internal status helpers: every fallible function returns kn_status* (NULL on success). */
#ifndef KN_STATUS_H
#define KN_STATUS_H
#include "kiln.h"
#include <stdarg.h>

struct kn_status {
    kn_status_code code;
    char *msg;
};

kn_status *kn_error(kn_status_code code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix a context line ("node 'x' (MatMul): ") to an existing error; returns st. */
kn_status *kn_error_wrap(kn_status *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define KN_TRY(expr) \
    do { \
        kn_status *kn__st = (expr); \
        if (kn__st) return kn__st; \
    } while (0)
#define KN_CHECK(cond, code, ...) \
    do { \
        if (!(cond)) return kn_error((code), __VA_ARGS__); \
    } while (0)
#define KN_OOM(bytes) kn_error(KN_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes", (size_t)(bytes))

#endif
