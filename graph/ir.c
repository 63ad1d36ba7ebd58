/* Graph IR construction, lookup and teardown. */
#include "graph/ir.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *kn_strdup0(const char *s) { return strdup(s ? s : ""); }

kn_graph *kn_graph_new(const char *name) {
    kn_graph *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->name = kn_strdup0(name);
    if (!g->name) {
        free(g);
        return NULL;
    }
    return g;
}

void kn_attr_clear(kn_attr *a) {
    free(a->name);
    free(a->s);
    free(a->floats);
    free(a->ints);
    for (int i = 0; i < a->n_strings; i++) free(a->strings[i]);
    free(a->strings);
    kn_tensor_free(a->t);
    for (int i = 0; i < a->n_tensors; i++) kn_tensor_free(a->tensors[i]);
    free(a->tensors);
    kn_graph_free(a->g);
    memset(a, 0, sizeof *a);
}

void kn_node_clear(kn_node *n) {
    free(n->name);
    free(n->op_type);
    free(n->domain);
    free(n->inputs);
    free(n->outputs);
    for (int a = 0; a < n->n_attrs; a++) kn_attr_clear(&n->attrs[a]);
    free(n->attrs);
    free(n->params);
    if (n->prepared && n->prepared_free) n->prepared_free(n->prepared);
    memset(n, 0, sizeof *n);
}

void kn_graph_free(kn_graph *g) {
    if (!g) return;
    for (int i = 0; i < g->n_values; i++) {
        kn_value *v = &g->values[i];
        free(v->name);
        for (int d = 0; d < KN_MAX_DIMS; d++) free(v->dim_names[d]);
        kn_tensor_free(v->constant);
    }
    for (int i = 0; i < g->n_nodes; i++) kn_node_clear(&g->nodes[i]);
    for (int i = 0; i < g->n_opsets; i++) free(g->opset_domains[i]);
    free(g->values);
    free(g->nodes);
    free(g->inputs);
    free(g->outputs);
    free(g->name);
    free(g);
}

int kn_graph_add_value(kn_graph *g, const char *name) {
    if (g->n_values == g->cap_values) {
        int cap = g->cap_values ? g->cap_values * 2 : 64;
        kn_value *v = realloc(g->values, (size_t)cap * sizeof *v);
        if (!v) return -1;
        g->values = v;
        g->cap_values = cap;
    }
    kn_value *v = &g->values[g->n_values];
    memset(v, 0, sizeof *v);
    v->name = kn_strdup0(name);
    if (!v->name) return -1;
    v->producer = -1;
    v->type.ndim = -1;
    return g->n_values++;
}

int kn_graph_find_value(const kn_graph *g, const char *name) {
    for (int i = g->n_values - 1; i >= 0; i--)
        if (strcmp(g->values[i].name, name) == 0) return i;
    return -1;
}

int kn_graph_add_node(kn_graph *g, const char *name, const char *op_type, const char *domain, const int *inputs,
                      int n_inputs, const int *outputs, int n_outputs, kn_attr *attrs, int n_attrs) {
    if (g->n_nodes == g->cap_nodes) {
        int cap = g->cap_nodes ? g->cap_nodes * 2 : 64;
        kn_node *n = realloc(g->nodes, (size_t)cap * sizeof *n);
        if (!n) return -1;
        g->nodes = n;
        g->cap_nodes = cap;
    }
    kn_node *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->name = kn_strdup0(name);
    n->op_type = kn_strdup0(op_type);
    n->domain = kn_strdup0(domain && strcmp(domain, "ai.onnx") ? domain : "");
    n->inputs = malloc(sizeof(int) * (size_t)(n_inputs ? n_inputs : 1));
    n->outputs = malloc(sizeof(int) * (size_t)(n_outputs ? n_outputs : 1));
    if (!n->name || !n->op_type || !n->domain || !n->inputs || !n->outputs) {
        free(n->name);
        free(n->op_type);
        free(n->domain);
        free(n->inputs);
        free(n->outputs);
        return -1;
    }
    if (n_inputs) memcpy(n->inputs, inputs, sizeof(int) * (size_t)n_inputs);
    if (n_outputs) memcpy(n->outputs, outputs, sizeof(int) * (size_t)n_outputs);
    n->n_inputs = n_inputs;
    n->n_outputs = n_outputs;
    n->attrs = attrs;
    n->n_attrs = n_attrs;
    n->op = -1;
    int id = g->n_nodes++;
    for (int i = 0; i < n_outputs; i++)
        if (outputs[i] >= 0) g->values[outputs[i]].producer = id;
    return id;
}

int kn_graph_opset(const kn_graph *g, const char *domain) {
    const char *d = domain && strcmp(domain, "ai.onnx") ? domain : "";
    for (; g; g = g->parent)
        for (int i = 0; i < g->n_opsets; i++) {
            const char *gd = g->opset_domains[i] && strcmp(g->opset_domains[i], "ai.onnx") ? g->opset_domains[i] : "";
            if (strcmp(gd, d) == 0) return g->opsets[i];
        }
    return 0;
}

const kn_attr *kn_node_attr(const kn_node *n, const char *name) {
    for (int i = 0; i < n->n_attrs; i++)
        if (n->attrs[i].name && strcmp(n->attrs[i].name, name) == 0) return &n->attrs[i];
    return NULL;
}

int64_t kn_attr_int(const kn_node *n, const char *name, int64_t def) {
    const kn_attr *a = kn_node_attr(n, name);
    if (!a) return def;
    if (a->type == KN_ATTR_FLOAT) return (int64_t)a->f;
    return a->i;
}

float kn_attr_float(const kn_node *n, const char *name, float def) {
    const kn_attr *a = kn_node_attr(n, name);
    if (!a) return def;
    if (a->type == KN_ATTR_INT) return (float)a->i;
    return a->f;
}

const char *kn_attr_str(const kn_node *n, const char *name, const char *def) {
    const kn_attr *a = kn_node_attr(n, name);
    return a && a->s ? a->s : def;
}

int kn_attr_ints(const kn_node *n, const char *name, const int64_t **vals) {
    const kn_attr *a = kn_node_attr(n, name);
    if (!a) {
        *vals = NULL;
        return -1;
    }
    *vals = a->ints;
    return a->n_ints;
}

kn_status *kn_attr_copy(kn_attr *dst, const kn_attr *src) {
    memset(dst, 0, sizeof *dst);
    dst->type = src->type;
    dst->f = src->f;
    dst->i = src->i;
    dst->tp_elem_type = src->tp_elem_type;
    dst->name = kn_strdup0(src->name);
    if (!dst->name) goto oom;
    if (src->s) {
        dst->s = malloc(src->s_len + 1);
        if (!dst->s) goto oom;
        memcpy(dst->s, src->s, src->s_len);
        dst->s[src->s_len] = 0;
        dst->s_len = src->s_len;
    }
    if (src->n_floats) {
        dst->floats = malloc(sizeof(float) * (size_t)src->n_floats);
        if (!dst->floats) goto oom;
        memcpy(dst->floats, src->floats, sizeof(float) * (size_t)src->n_floats);
        dst->n_floats = src->n_floats;
    }
    if (src->n_ints) {
        dst->ints = malloc(sizeof(int64_t) * (size_t)src->n_ints);
        if (!dst->ints) goto oom;
        memcpy(dst->ints, src->ints, sizeof(int64_t) * (size_t)src->n_ints);
        dst->n_ints = src->n_ints;
    }
    if (src->n_strings) {
        dst->strings = calloc((size_t)src->n_strings, sizeof(char *));
        if (!dst->strings) goto oom;
        dst->n_strings = src->n_strings;
        for (int i = 0; i < src->n_strings; i++)
            if (!(dst->strings[i] = kn_strdup0(src->strings[i]))) goto oom;
    }
    if (src->t) {
        kn_status *st = kn_tensor_clone(src->t, &dst->t);
        if (st) {
            kn_attr_clear(dst);
            return st;
        }
    }
    if (src->n_tensors) {
        dst->tensors = calloc((size_t)src->n_tensors, sizeof(kn_tensor *));
        if (!dst->tensors) goto oom;
        dst->n_tensors = src->n_tensors;
        for (int i = 0; i < src->n_tensors; i++) {
            kn_status *st = kn_tensor_clone(src->tensors[i], &dst->tensors[i]);
            if (st) {
                kn_attr_clear(dst);
                return st;
            }
        }
    }
    if (src->g) {
        kn_attr_clear(dst);
        return kn_error(KN_ERR_UNSUPPORTED, "copying graph attribute '%s' is not supported", src->name);
    }
    return NULL;
oom:
    kn_attr_clear(dst);
    return KN_OOM(0);
}

static kn_status *graph_clone(const kn_graph *g, kn_graph *parent, kn_graph **out);

/* An attribute copy that also copies a subgraph (kn_attr_copy refuses graphs). */
static kn_status *attr_clone(kn_attr *dst, const kn_attr *src, kn_graph *owner) {
    if (!src->g) return kn_attr_copy(dst, src);
    kn_attr tmp = *src;
    tmp.g = NULL;
    KN_TRY(kn_attr_copy(dst, &tmp));
    kn_status *st = graph_clone(src->g, owner, &dst->g);
    if (st) kn_attr_clear(dst);
    return st;
}

static kn_status *graph_clone(const kn_graph *g, kn_graph *parent, kn_graph **out) {
    *out = NULL;
    kn_graph *c = kn_graph_new(g->name);
    if (!c) return KN_OOM(sizeof *c);
    c->parent = parent;
    kn_status *st = NULL;
    for (int i = 0; i < g->n_opsets; i++) {
        c->opsets[i] = g->opsets[i];
        if (!(c->opset_domains[i] = kn_strdup0(g->opset_domains[i]))) {
            st = KN_OOM(0);
            goto fail;
        }
        c->n_opsets = i + 1;
    }
    for (int v = 0; v < g->n_values; v++) {
        const kn_value *src = &g->values[v];
        if (kn_graph_add_value(c, src->name) != v) {
            st = KN_OOM(0);
            goto fail;
        }
        kn_value *dst = &c->values[v];
        char *name = dst->name;
        *dst = *src;
        dst->name = name;
        dst->constant = NULL;
        for (int d = 0; d < KN_MAX_DIMS; d++) dst->dim_names[d] = NULL; /* src's until copied */
        for (int d = 0; d < KN_MAX_DIMS; d++) {
            if (src->dim_names[d] && !(dst->dim_names[d] = kn_strdup0(src->dim_names[d]))) {
                st = KN_OOM(0);
                goto fail;
            }
        }
        if (src->constant) {
            if (!(dst->constant = malloc(sizeof(kn_tensor)))) {
                st = KN_OOM(sizeof(kn_tensor));
                goto fail;
            }
            *dst->constant = *src->constant;
            dst->constant->owns = false; /* a view: the weights stay g's */
        }
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        kn_attr *attrs = n->n_attrs ? calloc((size_t)n->n_attrs, sizeof *attrs) : NULL;
        if (n->n_attrs && !attrs) {
            st = KN_OOM(0);
            goto fail;
        }
        for (int a = 0; a < n->n_attrs; a++) {
            if ((st = attr_clone(&attrs[a], &n->attrs[a], c))) {
                for (int k = 0; k < a; k++) kn_attr_clear(&attrs[k]);
                free(attrs);
                goto fail;
            }
        }
        int id = kn_graph_add_node(c, n->name, n->op_type, n->domain, n->inputs, n->n_inputs, n->outputs, n->n_outputs,
                                   attrs, n->n_attrs);
        if (id < 0) {
            for (int k = 0; k < n->n_attrs; k++) kn_attr_clear(&attrs[k]);
            free(attrs);
            st = KN_OOM(0);
            goto fail;
        }
        kn_node *cn = &c->nodes[id];
        cn->op = n->op;
        cn->opset = n->opset;
        cn->n_implicit = n->n_implicit;
    }
    /* producers as in g (graph inputs and outer values keep -1) */
    for (int v = 0; v < g->n_values; v++) c->values[v].producer = g->values[v].producer;
    if (g->n_inputs && !(c->inputs = malloc(sizeof(int) * (size_t)g->n_inputs))) {
        st = KN_OOM(0);
        goto fail;
    }
    if (g->n_outputs && !(c->outputs = malloc(sizeof(int) * (size_t)g->n_outputs))) {
        st = KN_OOM(0);
        goto fail;
    }
    if (g->n_inputs) memcpy(c->inputs, g->inputs, sizeof(int) * (size_t)g->n_inputs);
    if (g->n_outputs) memcpy(c->outputs, g->outputs, sizeof(int) * (size_t)g->n_outputs);
    c->n_inputs = g->n_inputs;
    c->n_outputs = g->n_outputs;
    *out = c;
    return NULL;
fail:
    kn_graph_free(c);
    return st;
}

kn_status *kn_graph_clone(const kn_graph *g, kn_graph **out) { return graph_clone(g, g->parent, out); }

const char *kn_node_desc(const kn_node *n, char *buf, size_t len) {
    snprintf(buf, len, "node '%s' (%s%s%s, opset %d)", n->name && n->name[0] ? n->name : "<unnamed>",
             n->domain && n->domain[0] ? n->domain : "", n->domain && n->domain[0] ? ":" : "", n->op_type, n->opset);
    return buf;
}
