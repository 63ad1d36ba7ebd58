/* The op table generated from ops.def, name resolution and infer-function lookup. */
#include "ops.h"
#include <string.h>

const kn_op_info kn_op_table[KN_OP_COUNT] = {
#define KN_OP(id, name, domain, inplace) [KN_OP_##id] = {name, domain, inplace},
#include "ops.def"
#undef KN_OP
};

static const kn_infer_fn *kn_infer_table(void) {
    /* built from weak references: a missing function reads as NULL */
    static const kn_infer_fn table[KN_OP_COUNT] = {
#define KN_OP(id, name, domain, inplace) [KN_OP_##id] = kn_infer_##id,
#include "ops.def"
#undef KN_OP
    };
    return table;
}

kn_infer_fn kn_op_infer(int op) { return op >= 0 && op < KN_OP_COUNT ? kn_infer_table()[op] : NULL; }

int kn_op_lookup(const char *op_type, const char *domain) {
    const char *d = domain && strcmp(domain, "ai.onnx") ? domain : "";
    for (int i = 0; i < KN_OP_COUNT; i++)
        if (strcmp(kn_op_table[i].name, op_type) == 0 && strcmp(kn_op_table[i].domain, d) == 0) return i;
    return -1;
}
