/* The op table generated from ops.def, name resolution, shape-rule lookup, and the one place
 * where attributes are decoded into params (kn_node_decode_params). */
#include "graph/ops.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kn_status *kn_params_decode_none(const kn_node *n, void *p) { return NULL; }

const kn_op_info kn_op_table[KN_OP_COUNT] = {
#define KN_GRAD_FN_TODO(id) NULL
#define KN_GRAD_FN_NONE(id) NULL
#define KN_GRAD_FN_RULE(id) kn_grad_##id
#define KN_OP(id, name, domain, inplace, params, grad) \
    [KN_OP_##id] = {name, \
                    domain, \
                    inplace, \
                    #params, \
                    kn_params_decode_##params, \
                    sizeof(kn_params_##params), \
                    KN_GRAD_##grad, \
                    KN_GRAD_FN_##grad(id)},
#include "graph/ops.def"
#undef KN_OP
};

static const kn_infer_fn kn_infer_table[KN_OP_COUNT] = {
#define KN_OP(id, name, domain, inplace, params, grad) [KN_OP_##id] = kn_infer_##id,
#include "graph/ops.def"
#undef KN_OP
};

kn_infer_fn kn_op_infer(int op) { return op >= 0 && op < KN_OP_COUNT ? kn_infer_table[op] : NULL; }

int kn_op_lookup(const char *op_type, const char *domain) {
    const char *d = domain && strcmp(domain, "ai.onnx") ? domain : "";
    for (int i = 0; i < KN_OP_COUNT; i++)
        if (strcmp(kn_op_table[i].name, op_type) == 0 && strcmp(kn_op_table[i].domain, d) == 0) return i;
    return -1;
}

kn_status *kn_node_decode_params(kn_node *n) {
    if (n->op < 0 || n->op >= KN_OP_COUNT || n->params) return NULL;
    const kn_op_info *info = &kn_op_table[n->op];
    if (info->params == kn_params_decode_none) return NULL;
    void *p = calloc(1, info->params_size);
    if (!p) return KN_OOM(info->params_size);
    kn_status *st = info->params(n, p);
    if (st) {
        free(p);
        char nd[256];
        return kn_error_wrap(st, "%s: ", kn_node_desc(n, nd, sizeof nd));
    }
    n->params = p;
    return NULL;
}

kn_status *kn_node_check_params(const kn_node *n) {
    if (n->op < 0 || n->op >= KN_OP_COUNT || n->params || kn_op_table[n->op].params == kn_params_decode_none)
        return NULL;
    char nd[256];
    return kn_error(KN_ERR_INVALID_ARGUMENT,
                    "%s: attributes not decoded (a graph straight from the loader: load it with kn_model_load / "
                    "kn_model_load_buffer, or call kn_graph_resolve_ops first)",
                    kn_node_desc(n, nd, sizeof nd));
}
