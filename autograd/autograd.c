/* The autograd pass (autograd/autograd.h) and the helpers rules emit nodes with
 * (autograd/grad.h). The pass walks the forward nodes in reverse topological order, once, as
 * ggml_compute_backward does; which rule runs comes from the op table's grad column. */
#include "autograd/autograd.h"
#include "autograd/grad.h"
#include "graph/passes.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Opset of the ai.onnx nodes the rules emit: Unsqueeze, Squeeze, ReduceSum and Split take their
 * axes / sizes as inputs from 13, Shape has start/end from 15; 17 is the newest whose ReduceMean
 * still takes axes as an attribute, which nothing here relies on either way. */
enum { AG_ONNX_OPSET = 17 };

/* ---- static facts ---- */

const kn_tensor *ag_type(const kn_grad_ctx *c, int v) { return v >= 0 && v < c->n_types ? &c->types[v] : NULL; }

int ag_rank(const kn_grad_ctx *c, int v) {
    const kn_tensor *t = ag_type(c, v);
    return t ? t->ndim : -1;
}

kn_dtype ag_dtype(const kn_grad_ctx *c, int v) {
    const kn_tensor *t = ag_type(c, v);
    return t ? t->dtype : KN_UNDEFINED;
}

bool ag_same_shape(const kn_grad_ctx *c, int a, int b) {
    const kn_tensor *x = ag_type(c, a), *y = ag_type(c, b);
    return x && y && x->ndim >= 0 && kn_shape_known(x) && kn_shape_known(y) && kn_same_shape(x, y);
}

int ag_fail(kn_grad_ctx *c, kn_status *st) {
    if (!c->err) c->err = st;
    else kn_status_free(st);
    return -1;
}

int ag_axis(kn_grad_ctx *c, int64_t axis, int v) {
    int r = ag_rank(c, v), a = -1;
    if (c->err) return -1;
    if (r < 0)
        return ag_fail(c,
                       kn_error(KN_ERR_UNSUPPORTED, "the rank of '%s' is not known statically", c->g->values[v].name));
    kn_status *st = kn_norm_axis(axis, r, &c->g->nodes[c->node], &a);
    return st ? ag_fail(c, st) : a;
}

/* ---- attributes ---- */

kn_attr ag_attr_int(const char *name, int64_t v) {
    kn_attr a = {0};
    a.name = (char *)name;
    a.type = KN_ATTR_INT;
    a.i = v;
    return a;
}

kn_attr ag_attr_float(const char *name, float v) {
    kn_attr a = {0};
    a.name = (char *)name;
    a.type = KN_ATTR_FLOAT;
    a.f = v;
    return a;
}

kn_attr ag_attr_str(const char *name, const char *v) {
    kn_attr a = {0};
    a.name = (char *)name;
    a.type = KN_ATTR_STRING;
    a.s = (char *)v;
    a.s_len = strlen(v);
    return a;
}

kn_attr ag_attr_ints(const char *name, const int64_t *v, int n) {
    kn_attr a = {0};
    a.name = (char *)name;
    a.type = KN_ATTR_INTS;
    a.ints = (int64_t *)v;
    a.n_ints = n;
    return a;
}

/* ---- emitting ---- */

/* A fresh value named after the forward node; the serial makes it unique over the pass, the
 * lookup guards against a model that already uses such a name. */
static int ag_new_value(kn_grad_ctx *c) {
    char name[512];
    do snprintf(name, sizeof name, "grad/%s/%d", c->g->nodes[c->node].name, (*c->serial)++);
    while (kn_graph_find_value(c->g, name) >= 0);
    int v = kn_graph_add_value(c->g, name);
    if (v < 0) ag_fail(c, KN_OOM(sizeof(kn_value)));
    return v;
}

int ag_node(kn_grad_ctx *c, const char *op, const char *domain, const int *ins, int n_ins, int *outs, int n_outs,
            const kn_attr *attrs, int n_attrs) {
    if (c->err) return -1; /* a -1 input without an error is an omitted optional input */
    for (int k = 0; k < n_outs; k++)
        if ((outs[k] = ag_new_value(c)) < 0) return -1;
    kn_attr *a = n_attrs ? calloc((size_t)n_attrs, sizeof *a) : NULL;
    if (n_attrs && !a) return ag_fail(c, KN_OOM(sizeof *a * (size_t)n_attrs));
    for (int i = 0; i < n_attrs; i++) {
        kn_status *st = kn_attr_copy(&a[i], &attrs[i]);
        if (st) {
            for (int j = 0; j < i; j++) kn_attr_clear(&a[j]);
            free(a);
            return ag_fail(c, st);
        }
    }
    char name[512];
    snprintf(name, sizeof name, "grad/%s/%s_%d", c->g->nodes[c->node].name, op, (*c->serial)++);
    int id = kn_graph_add_node(c->g, name, op, domain, ins, n_ins, outs, n_outs, a, n_attrs);
    if (id < 0) {
        for (int j = 0; j < n_attrs; j++) kn_attr_clear(&a[j]);
        free(a);
        return ag_fail(c, KN_OOM(sizeof(kn_node)));
    }
    kn_node *n = &c->g->nodes[id];
    n->op = kn_op_lookup(op, domain);
    n->opset = domain[0] ? 1 : AG_ONNX_OPSET;
    if (n->op < 0) return ag_fail(c, kn_error(KN_ERR_RUNTIME, "gradient rule: no op %s in domain '%s'", op, domain));
    kn_status *st = kn_node_decode_params(n); /* as loading and the fusion passes do */
    return st ? ag_fail(c, st) : 0;
}

int ag_op(kn_grad_ctx *c, const char *op, const int *ins, int n_ins, const kn_attr *attrs, int n_attrs) {
    int out = -1;
    return ag_node(c, op, "", ins, n_ins, &out, 1, attrs, n_attrs) < 0 ? -1 : out;
}

int ag_kiln(kn_grad_ctx *c, const char *op, const int *ins, int n_ins, const kn_attr *attrs, int n_attrs) {
    int out = -1;
    return ag_node(c, op, "kiln", ins, n_ins, &out, 1, attrs, n_attrs) < 0 ? -1 : out;
}

int ag_op1(kn_grad_ctx *c, const char *op, int a) { return ag_op(c, op, &a, 1, NULL, 0); }

int ag_op2(kn_grad_ctx *c, const char *op, int a, int b) {
    int in[2] = {a, b};
    return ag_op(c, op, in, 2, NULL, 0);
}

int ag_add(kn_grad_ctx *c, int a, int b) { return ag_op2(c, "Add", a, b); }
int ag_sub(kn_grad_ctx *c, int a, int b) { return ag_op2(c, "Sub", a, b); }
int ag_mul(kn_grad_ctx *c, int a, int b) { return ag_op2(c, "Mul", a, b); }
int ag_div(kn_grad_ctx *c, int a, int b) { return ag_op2(c, "Div", a, b); }
int ag_neg(kn_grad_ctx *c, int a) { return ag_op1(c, "Neg", a); }
int ag_shape(kn_grad_ctx *c, int a) { return ag_op1(c, "Shape", a); }

int ag_reshape_to(kn_grad_ctx *c, int g, int in, int out) {
    if (ag_same_shape(c, in, out)) return g;
    return ag_op2(c, "Reshape", g, ag_shape(c, in));
}

int ag_transpose(kn_grad_ctx *c, int a, const int64_t *perm, int n) {
    kn_attr at = ag_attr_ints("perm", perm, n);
    return ag_op(c, "Transpose", &a, 1, &at, 1);
}

int ag_forward_output(kn_grad_ctx *c, int k, const char *suffix) {
    kn_node *n = &c->g->nodes[c->node];
    if (k < n->n_outputs && n->outputs[k] >= 0) return n->outputs[k];
    char name[512];
    snprintf(name, sizeof name, "%s/%s", c->g->values[c->out[0]].name, suffix);
    if (kn_graph_find_value(c->g, name) >= 0)
        return ag_fail(c, kn_error(KN_ERR_INVALID_MODEL, "value '%s' exists", name));
    int v = kn_graph_add_value(c->g, name);
    if (v < 0) return ag_fail(c, KN_OOM(sizeof(kn_value)));
    n = &c->g->nodes[c->node];
    if (k >= n->n_outputs) {
        int *o = realloc(n->outputs, sizeof(int) * (size_t)(k + 1));
        if (!o) return ag_fail(c, KN_OOM(sizeof(int) * (size_t)(k + 1)));
        for (int i = n->n_outputs; i <= k; i++) o[i] = -1;
        n->outputs = o;
        n->n_outputs = k + 1;
    }
    n->outputs[k] = v;
    c->g->values[v].producer = c->node;
    return v;
}

/* ---- constants ---- */

int ag_const(kn_grad_ctx *c, kn_tensor *t) {
    if (!t || c->err) {
        kn_tensor_free(t);
        return c->err ? -1 : ag_fail(c, KN_OOM(sizeof(kn_tensor)));
    }
    int v = ag_new_value(c);
    if (v < 0) {
        kn_tensor_free(t);
        return -1;
    }
    kn_value *val = &c->g->values[v];
    val->constant = t;
    val->type.dtype = t->dtype;
    kn_tensor_set_shape(&val->type, t->ndim, t->dims);
    return v;
}

static bool ag_is_float(kn_dtype t) { return t == KN_F32 || t == KN_F64 || t == KN_F16 || t == KN_BF16; }

int ag_scalar(kn_grad_ctx *c, double x, int like) {
    kn_dtype dt = ag_dtype(c, like);
    kn_tensor *t = NULL;
    kn_status *st = kn_tensor_new(ag_is_float(dt) ? dt : KN_F64, 0, NULL, &t);
    if (st) return ag_fail(c, st);
    kn_set_f64(t, 0, x);
    int v = ag_const(c, t);
    return ag_is_float(dt) ? v : ag_op2(c, "CastLike", v, like);
}

int ag_ints(kn_grad_ctx *c, const int64_t *vals, int n) {
    int64_t d[1] = {n};
    kn_tensor *t = NULL;
    kn_status *st = kn_tensor_new(KN_I64, 1, d, &t);
    if (st) return ag_fail(c, st);
    if (n) memcpy(t->data, vals, sizeof(int64_t) * (size_t)n);
    return ag_const(c, t);
}

int ag_zeros_like(kn_grad_ctx *c, int like) { return ag_op2(c, "Expand", ag_scalar(c, 0.0, like), ag_shape(c, like)); }

int ag_sum_to(kn_grad_ctx *c, int g, int in, int out) {
    if (ag_same_shape(c, in, out)) return g;
    int ins[2] = {g, ag_shape(c, in)};
    return ag_kiln(c, "ReduceSumTo", ins, 2, NULL, 0);
}

/* ---- the pass ---- */

/* Static dtypes and shapes of every value, by the shape rules with the data of constants: the
 * rules need ranks (perms, axes) and dtypes (constants) that intermediate values do not declare.
 * A node whose rule fails or needs data leaves its outputs as declared. */
static void ag_infer_types(const kn_graph *g, kn_tensor *types, int64_t *shape_data) {
    for (int v = 0; v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        types[v] = val->type;
        types[v].data = NULL;
        if (val->constant) {
            types[v].dtype = val->constant->dtype;
            kn_tensor_set_shape(&types[v], val->constant->ndim, val->constant->dims);
            types[v].data = val->constant->data;
        }
    }
    const kn_tensor *in[64];
    kn_tensor out_t[16];
    kn_tensor *out[16];
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        kn_infer_fn fn = kn_op_infer(n->op);
        bool sub = false;
        for (int a = 0; a < n->n_attrs; a++) sub |= n->attrs[a].g != NULL || n->attrs[a].n_tensors > 0;
        if (!fn || sub || n->n_inputs > 64 || n->n_outputs > 16) continue;
        bool ok = true;
        for (int k = 0; k < n->n_inputs; k++) {
            in[k] = n->inputs[k] >= 0 ? &types[n->inputs[k]] : NULL;
            ok &= !in[k] || (in[k]->ndim >= 0 && in[k]->dtype != KN_UNDEFINED);
        }
        if (!ok) continue;
        for (int k = 0; k < n->n_outputs; k++) {
            memset(&out_t[k], 0, sizeof out_t[k]);
            out_t[k].ndim = -1;
            out[k] = n->outputs[k] >= 0 ? &out_t[k] : NULL;
        }
        kn_infer_ctx ic = {n, in, n->n_inputs, out, n->n_outputs};
        kn_status *st = fn(&ic);
        if (st) {
            kn_status_free(st);
            continue;
        }
        for (int k = 0; k < n->n_outputs; k++) {
            int o = n->outputs[k];
            if (o < 0 || g->values[o].constant) continue;
            if (out_t[k].dtype != KN_UNDEFINED) types[o].dtype = out_t[k].dtype;
            if (out_t[k].ndim >= 0) kn_tensor_set_shape(&types[o], out_t[k].ndim, out_t[k].dims);
            types[o].data = NULL;
        }
        /* Shape of a statically shaped value is data the next rules (Reshape, Expand, ...) need */
        int o = n->n_outputs > 0 ? n->outputs[0] : -1;
        if (n->op == KN_OP_Shape && o >= 0 && in[0] && kn_shape_known(in[0]) && types[o].ndim == 1) {
            const kn_params_shape *p = KN_PARAMS(n, shape);
            int r = in[0]->ndim;
            int64_t st = p->start < 0 ? p->start + r : p->start, en = p->has_end ? p->end : r;
            if (en < 0) en += r;
            st = st < 0 ? 0 : st > r ? r : st;
            en = en < st ? st : en > r ? r : en;
            if (en - st != types[o].dims[0]) continue;
            int64_t *d = shape_data + (size_t)o * KN_MAX_DIMS;
            for (int64_t a = st; a < en; a++) d[a - st] = in[0]->dims[a];
            types[o].data = d;
        }
    }
}

/* "'x' -> 'h' -> 'u'": the values from a wrt value to v, by the predecessors the forward sweep
 * recorded. */
static void ag_path(const kn_graph *g, const int *pred, int v, char *buf, size_t len) {
    int chain[256], n = 0;
    for (int u = v; u >= 0 && n < 256; u = pred[u]) chain[n++] = u;
    size_t off = 0;
    buf[0] = 0;
    if (n == 256 && off < len) off += (size_t)snprintf(buf + off, len - off, "... -> ");
    for (int k = n - 1; k >= 0 && off < len; k--)
        off += (size_t)snprintf(buf + off, len - off, "%s'%s'", k == n - 1 ? "" : " -> ", g->values[chain[k]].name);
}

static kn_status *ag_no_rule(const kn_graph *g, int node, const int *pred, const uint8_t *from) {
    const kn_node *n = &g->nodes[node];
    int via = -1;
    for (int k = 0; k < n->n_inputs && via < 0; k++)
        if (n->inputs[k] >= 0 && from[n->inputs[k]]) via = n->inputs[k];
    char path[2048], nd[256];
    ag_path(g, pred, via, path, sizeof path);
    const char *why = n->op < 0                   ? "kiln has no such op"
        : kn_op_table[n->op].grad == KN_GRAD_NONE ? "the op is not differentiable"
                                                  : "no gradient rule yet";
    return kn_error(KN_ERR_UNSUPPORTED, "autograd: %s%s%s has no gradient (%s), on the path %s -> %s",
                    n->domain[0] ? n->domain : "", n->domain[0] ? ":" : "", n->op_type, why, path,
                    kn_node_desc(n, nd, sizeof nd));
}

/* gacc[v] += add (the first contribution is taken as is). */
static int ag_accumulate(kn_grad_ctx *c, int *gacc, int v, int add) {
    if (add < 0) return -1;
    gacc[v] = gacc[v] < 0 ? add : ag_add(c, gacc[v], add);
    return gacc[v];
}

/* The seed: ones in the loss's shape. */
static int ag_seed(kn_grad_ctx *c, int loss) {
    const kn_tensor *t = ag_type(c, loss);
    if (t && t->ndim >= 0 && kn_shape_known(t) && ag_is_float(t->dtype)) {
        kn_tensor *one = NULL;
        kn_status *st = kn_tensor_new(t->dtype, t->ndim, t->dims, &one);
        if (st) return ag_fail(c, st);
        for (int64_t i = 0; i < kn_numel(one); i++) kn_set_f64(one, i, 1.0);
        return ag_const(c, one);
    }
    return ag_op2(c, "Expand", ag_scalar(c, 1.0, loss), ag_shape(c, loss));
}

typedef struct ag_state {
    kn_tensor *types;
    int64_t *shape_data; /* KN_MAX_DIMS per value: data of Shape nodes known statically */
    uint8_t *from, *to;
    int *pred, *gacc;
    int *dy, *dx;
    bool *need;
} ag_state;

static void ag_state_free(ag_state *s) {
    free(s->types);
    free(s->shape_data);
    free(s->from);
    free(s->to);
    free(s->pred);
    free(s->gacc);
    free(s->dy);
    free(s->dx);
    free(s->need);
}

static kn_status *ag_output(kn_graph *g, int v) {
    int *o = realloc(g->outputs, sizeof(int) * (size_t)(g->n_outputs + 1));
    if (!o) return KN_OOM(sizeof(int) * (size_t)(g->n_outputs + 1));
    g->outputs = o;
    g->outputs[g->n_outputs++] = v;
    g->values[v].is_output = true;
    return NULL;
}

static kn_status *ag_run(kn_graph *g, int loss, const int *wrt, int n_wrt, int *grads, ag_state *s) {
    int nv = g->n_values, nn = g->n_nodes, serial = 0, max_io = 1;
    for (int i = 0; i < nn; i++) {
        if (g->nodes[i].n_inputs > max_io) max_io = g->nodes[i].n_inputs;
        if (g->nodes[i].n_outputs > max_io) max_io = g->nodes[i].n_outputs;
    }
    s->types = calloc((size_t)nv, sizeof *s->types);
    s->shape_data = calloc((size_t)nv * KN_MAX_DIMS, sizeof(int64_t));
    s->from = calloc((size_t)nv, 1);
    s->to = calloc((size_t)nv, 1);
    s->pred = malloc(sizeof(int) * (size_t)nv);
    s->gacc = malloc(sizeof(int) * (size_t)nv);
    s->dy = malloc(sizeof(int) * (size_t)max_io);
    s->dx = malloc(sizeof(int) * (size_t)max_io);
    s->need = malloc(sizeof(bool) * (size_t)max_io);
    if (!s->types || !s->shape_data || !s->from || !s->to || !s->pred || !s->gacc || !s->dy || !s->dx || !s->need)
        return KN_OOM(sizeof(kn_tensor) * (size_t)nv);
    for (int v = 0; v < nv; v++) s->pred[v] = s->gacc[v] = -1;
    ag_infer_types(g, s->types, s->shape_data);

    /* values that depend on a wrt value (with the predecessor each was reached from, for the
     * error's path), and values the loss depends on */
    for (int k = 0; k < n_wrt; k++) s->from[wrt[k]] = 1;
    for (int i = 0; i < nn; i++) {
        const kn_node *n = &g->nodes[i];
        int via = -1;
        for (int k = 0; k < n->n_inputs && via < 0; k++)
            if (n->inputs[k] >= 0 && s->from[n->inputs[k]]) via = n->inputs[k];
        for (int k = 0; via >= 0 && k < n->n_outputs; k++)
            if (n->outputs[k] >= 0 && !s->from[n->outputs[k]]) {
                s->from[n->outputs[k]] = 1;
                s->pred[n->outputs[k]] = via;
            }
    }
    s->to[loss] = 1;
    for (int i = nn - 1; i >= 0; i--) {
        const kn_node *n = &g->nodes[i];
        bool reach = false;
        for (int k = 0; k < n->n_outputs; k++) reach |= n->outputs[k] >= 0 && s->to[n->outputs[k]];
        for (int k = 0; reach && k < n->n_inputs; k++)
            if (n->inputs[k] >= 0) s->to[n->inputs[k]] = 1;
    }

    kn_grad_ctx c = {.g = g, .types = s->types, .n_types = nv, .serial = &serial, .node = 0};
    if (nn > 0 && s->from[loss]) {
        c.node = g->values[loss].producer >= 0 ? g->values[loss].producer : nn - 1;
        s->gacc[loss] = ag_seed(&c, loss);
        if (c.err) return c.err;
    }

    /* A node is differentiated when a gradient reaches one of its outputs and one of its inputs
     * leads back to a wrt value: gradients reach only what the rules differentiate, so shape
     * inputs (Reshape's shape, Shape nodes) and integer paths never ask for a rule. */
    for (int i = nn - 1; i >= 0; i--) {
        const kn_node *n = &g->nodes[i];
        bool any_dy = false, any_need = false;
        for (int k = 0; k < n->n_outputs; k++) {
            s->dy[k] = n->outputs[k] >= 0 ? s->gacc[n->outputs[k]] : -1;
            any_dy |= s->dy[k] >= 0;
        }
        for (int k = 0; k < n->n_inputs; k++) {
            int v = n->inputs[k];
            s->need[k] = v >= 0 && s->from[v] && s->to[v] && ag_is_float(s->types[v].dtype);
            s->dx[k] = -1;
            any_need |= s->need[k];
        }
        /* a value on the path whose dtype the static sweep could not infer (an input of unknown
         * rank upstream) would silently cut the gradient to zeros: refuse instead */
        for (int k = 0; any_dy && k < n->n_inputs; k++) {
            int v = n->inputs[k];
            if (v >= 0 && s->from[v] && s->to[v] && s->types[v].dtype == KN_UNDEFINED)
                return kn_error(KN_ERR_UNSUPPORTED,
                                "autograd: the dtype of '%s' (input %d of node '%s', %s) is not known statically, so "
                                "the gradient through it cannot be built; declare the ranks of the graph inputs",
                                g->values[v].name, k, n->name, n->op_type);
        }
        if (!any_dy || !any_need) continue;
        if (n->op < 0 || !kn_op_table[n->op].grad_rule) return ag_no_rule(g, i, s->pred, s->from);
        /* the rule may add nodes (moving g->nodes), so it gets copies of what it reads */
        int n_in = n->n_inputs, n_out = n->n_outputs;
        int *ins = malloc(sizeof(int) * (size_t)(n_in + n_out + 1));
        if (!ins) return KN_OOM(sizeof(int) * (size_t)(n_in + n_out + 1));
        memcpy(ins, n->inputs, sizeof(int) * (size_t)n_in);
        memcpy(ins + n_in, n->outputs, sizeof(int) * (size_t)n_out);
        c.node = i;
        c.op = n->op;
        c.params = n->params;
        c.n_in = n_in;
        c.n_out = n_out;
        c.in = ins;
        c.out = ins + n_in;
        c.dy = s->dy;
        c.dx = s->dx;
        c.need = s->need;
        kn_status *st = kn_op_table[n->op].grad_rule(&c);
        if (!st) st = c.err;
        for (int k = 0; !st && k < n_in; k++) {
            if (s->dx[k] < 0 || !s->need[k]) continue;
            ag_accumulate(&c, s->gacc, ins[k], s->dx[k]);
            st = c.err;
        }
        free(ins);
        if (st) {
            char nd[256];
            return kn_error_wrap(st, "autograd: gradient of %s: ", kn_node_desc(&g->nodes[i], nd, sizeof nd));
        }
    }

    for (int k = 0; k < n_wrt; k++) {
        int w = wrt[k];
        c.node = g->values[loss].producer >= 0 ? g->values[loss].producer : 0;
        int gv = s->gacc[w] >= 0 ? s->gacc[w] : ag_zeros_like(&c, w);
        if (c.err) return c.err;
        char name[512];
        snprintf(name, sizeof name, "grad:%s", g->values[w].name);
        if (kn_graph_find_value(g, name) >= 0)
            return kn_error(KN_ERR_INVALID_ARGUMENT, "autograd: the graph already has a value named '%s'", name);
        int out = kn_graph_add_value(g, name);
        if (out < 0) return KN_OOM(sizeof(kn_value));
        char nname[520];
        snprintf(nname, sizeof nname, "%s/out", name);
        int id = kn_graph_add_node(g, nname, "Identity", "", &gv, 1, &out, 1, NULL, 0);
        if (id < 0) return KN_OOM(sizeof(kn_node));
        g->nodes[id].op = KN_OP_Identity;
        g->nodes[id].opset = AG_ONNX_OPSET;
        g->values[out].type = s->types[w];
        g->values[out].type.data = NULL;
        KN_TRY(ag_output(g, out));
        if (grads) grads[k] = out;
    }
    return NULL;
}

kn_status *kn_autograd(kn_graph *g, int loss, const int *wrt, int n_wrt, int *grads) {
    KN_CHECK(g && loss >= 0 && loss < g->n_values, KN_ERR_INVALID_ARGUMENT, "autograd: bad loss value id %d", loss);
    for (int k = 0; k < n_wrt; k++) {
        KN_CHECK(wrt[k] >= 0 && wrt[k] < g->n_values, KN_ERR_INVALID_ARGUMENT, "autograd: bad value id %d", wrt[k]);
        KN_CHECK(g->values[wrt[k]].producer < 0, KN_ERR_INVALID_ARGUMENT,
                 "autograd: '%s' is computed by a node; differentiate with respect to graph inputs or initializers",
                 g->values[wrt[k]].name);
    }
    KN_TRY(kn_graph_resolve_ops(g)); /* idempotent; rules and shape rules read decoded params */
    KN_TRY(kn_graph_toposort(g));
    ag_state s = {0};
    kn_status *st = ag_run(g, loss, wrt, n_wrt, grads, &s);
    ag_state_free(&s);
    if (st) return st;
    kn_graph_eliminate_dead(g);
    /* dead-node elimination renumbers nothing but nodes; the gradient outputs keep their ids */
    return NULL;
}
