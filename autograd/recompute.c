/* Activation recomputation (autograd/recompute.h): the chosen forward nodes are copied into the
 * backward just before the first node that reads what they computed, and the backward reads the
 * copies, so the forward's own outputs die at their last forward use. Segments are layers, told
 * apart by the numbered path segment exporters put in node names, so a copy never reaches back
 * into an earlier layer (that would rebuild the whole forward at the start of the backward and
 * keep it, saving nothing). */
#include "autograd/recompute.h"
#include "graph/ops.h"
#include <ctype.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rc_state {
    kn_graph *g;
    int nn;        /* nodes before the pass */
    int *producer; /* value -> node (original index), -1 */
    uint8_t *drop; /* value: recomputed for the backward */
    int *copy;     /* value -> its recomputed value, -1 */
    int copies;
    kn_status *err;
} rc_state;

/* kn_autograd names its nodes grad/... and the Identity nodes of the gradient outputs grad:... */
static bool rc_is_backward(const kn_node *n) { return !strncmp(n->name, "grad/", 5) || !strncmp(n->name, "grad:", 5); }

/* Normalisations: their outputs bound the segments of a graph whose names mark no layers. */
static bool rc_norm(const kn_node *n) {
    switch (n->op) {
    case KN_OP_LayerNormalization:
    case KN_OP_RMSNormalization:
    case KN_OP_SimplifiedLayerNormalization:
    case KN_OP_MsSkipLayerNormalization:
    case KN_OP_MsSkipSimplifiedLayerNormalization:
    case KN_OP_MsEmbedLayerNormalization:
    case KN_OP_BatchNormalization:
    case KN_OP_GroupNormalization:
    case KN_OP_InstanceNormalization: return true;
    default: return false;
    }
}

static bool rc_sep(char c) { return c == '/' || c == '.' || c == '_' || c == ':' || c == '-'; }

/* Length of the name's prefix through its first layer segment (layer.3, layers_3, h.3, ...);
 * 0 without one. */
static size_t rc_layer_prefix(const char *name) {
    static const char *const marks[] = {"layers", "layer", "blocks", "block", "h"};
    for (const char *p = name; *p; p++) {
        if (p != name && !rc_sep(p[-1])) continue;
        for (size_t k = 0; k < sizeof marks / sizeof marks[0]; k++) {
            size_t l = strlen(marks[k]);
            if (strncmp(p, marks[k], l)) continue;
            const char *q = p + l;
            if ((*q != '.' && *q != '_') || !isdigit((unsigned char)q[1])) continue;
            q++;
            while (isdigit((unsigned char)*q)) q++;
            if (*q && !rc_sep(*q)) continue;
            return (size_t)(q - name);
        }
    }
    return 0;
}

static bool rc_same_layer(const kn_node *a, const kn_node *b) {
    size_t la = rc_layer_prefix(a->name), lb = rc_layer_prefix(b->name);
    return la == lb && !strncmp(a->name, b->name, la);
}

static bool rc_random(const kn_node *n) {
    static const char *const ops[] = {"Dropout",           "RandomNormal", "RandomUniform", "RandomNormalLike",
                                      "RandomUniformLike", "Bernoulli",    "Multinomial"};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++)
        if (!strcmp(n->op_type, ops[k]) && !n->domain[0]) return true;
    return false;
}

/* marked: some node name has a layer segment ("layers" then chooses the nodes inside layers;
 * without one it chooses every forward node, and normalisation outputs bound the segments). */
static bool rc_chosen(const kn_node *n, const char *spec, bool marked) {
    if (rc_is_backward(n) || rc_random(n) || n->n_implicit > 0) return false;
    for (int a = 0; a < n->n_attrs; a++)
        if (n->attrs[a].g) return false; /* control flow: its subgraphs stay */
    if (!strcmp(spec, "layers")) return !marked || rc_layer_prefix(n->name) > 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save))
        if (*p && fnmatch(p, n->name, 0) == 0) return true;
    return false;
}

static int rc_value(rc_state *s, int v);

/* The new node order: the forward as the sort left it, then the backward and the copies as late
 * as possible (Kahn's algorithm on the reversed backward with a stack: a node comes out, in
 * reverse, right after the last of its readers, and lands just before the first). The sort
 * hoists backward nodes that read only forward values (the Transpose of an activation for a
 * weight gradient, a Shape) into the forward, and the copies they read would follow them there
 * and live through the whole backward. */
static kn_status *rc_place(const kn_graph *g, int nn_orig, int *order) {
    int nn = g->n_nodes, nv = g->n_values;
    int *pending = calloc((size_t)nn + 1, sizeof(int)), *stack = malloc(sizeof(int) * ((size_t)nn + 1));
    int *producer = malloc(sizeof(int) * ((size_t)nv + 1));
    uint8_t *late = calloc((size_t)nn + 1, 1); /* backward or copy */
    kn_status *st = NULL;
    if (!pending || !stack || !producer || !late) {
        st = KN_OOM(0);
        goto done;
    }
    for (int v = 0; v < nv; v++) producer[v] = -1;
    int n = 0, n_late = 0;
    for (int i = 0; i < nn; i++)
        for (int k = 0; k < g->nodes[i].n_outputs; k++)
            if (g->nodes[i].outputs[k] >= 0) producer[g->nodes[i].outputs[k]] = i;
    /* late: a backward node, a copy, or what reads one (the Identity that names a gradient
     * output); the originals are in topological order and the copies read only copies and
     * forward values */
    for (int i = 0; i < nn; i++) {
        const kn_node *nd = &g->nodes[i];
        bool reads_late = false;
        for (int k = 0; k < nd->n_inputs; k++) {
            int v = nd->inputs[k];
            reads_late |= v >= 0 && producer[v] >= 0 && (producer[v] >= nn_orig || late[producer[v]]);
        }
        /* a Shape or Size of a forward value stays where the sort put it: moved late, it would
         * keep the tensor it reads only the shape of alive into the backward */
        bool shape_only = nd->op == KN_OP_Shape || nd->op == KN_OP_Size;
        late[i] = reads_late || ((i >= nn_orig || rc_is_backward(nd)) && !shape_only);
        n_late += late[i];
        if (!late[i]) order[n++] = i;
    }
    for (int i = 0; i < nn; i++)
        for (int k = 0; late[i] && k < g->nodes[i].n_inputs; k++) {
            int v = g->nodes[i].inputs[k];
            if (v >= 0 && producer[v] >= 0 && late[producer[v]]) pending[producer[v]]++;
        }
    int top = 0, m = 0;
    for (int i = 0; i < nn; i++)
        if (late[i] && !pending[i]) stack[top++] = i; /* the last sink comes out first */
    while (top > 0) {
        int i = stack[--top];
        order[nn - 1 - m++] = i;
        for (int k = g->nodes[i].n_inputs - 1; k >= 0; k--) {
            int v = g->nodes[i].inputs[k], p = v >= 0 ? producer[v] : -1;
            if (p >= 0 && late[p] && --pending[p] == 0) stack[top++] = p;
        }
    }
    if (m != n_late || n + m != nn)
        st = kn_error(KN_ERR_INVALID_MODEL, "the backward has a cycle (%d of %d nodes ordered)", m, n_late);
done:
    free(pending);
    free(stack);
    free(producer);
    free(late);
    return st;
}

/* Copies node p (original index) after copying what it reads that is recomputed too. */
static void rc_copy_node(rc_state *s, int p) {
    kn_graph *g = s->g;
    int n_in = g->nodes[p].n_inputs, n_out = g->nodes[p].n_outputs, n_attrs = g->nodes[p].n_attrs;
    int *ins = malloc(sizeof(int) * (size_t)(n_in + n_out + 1)), *outs = ins ? ins + n_in : NULL;
    kn_attr *attrs = n_attrs ? calloc((size_t)n_attrs, sizeof *attrs) : NULL;
    if (!ins || (n_attrs && !attrs)) {
        free(ins);
        free(attrs);
        s->err = KN_OOM(0);
        return;
    }
    for (int k = 0; k < n_in && !s->err; k++) {
        int u = g->nodes[p].inputs[k];
        ins[k] = u >= 0 && s->drop[u] ? rc_value(s, u) : u;
    }
    char name[1024];
    for (int k = 0; k < n_out && !s->err; k++) {
        int o = g->nodes[p].outputs[k];
        outs[k] = -1;
        if (o < 0) continue;
        snprintf(name, sizeof name, "%s/recompute", g->values[o].name);
        for (int serial = 2; kn_graph_find_value(g, name) >= 0; serial++) /* a model's own name */
            snprintf(name, sizeof name, "%s/recompute%d", g->values[o].name, serial);
        int c = kn_graph_add_value(g, name);
        if (c < 0) {
            s->err = KN_OOM(sizeof(kn_value));
            break;
        }
        g->values[c].type.dtype = g->values[o].type.dtype;
        if (g->values[o].type.ndim >= 0)
            kn_tensor_set_shape(&g->values[c].type, g->values[o].type.ndim, g->values[o].type.dims);
        else g->values[c].type.ndim = -1;
        g->values[c].kind = g->values[o].kind;
        outs[k] = c;
        s->copy[o] = c;
    }
    for (int a = 0; a < n_attrs && !s->err; a++) {
        kn_status *st = kn_attr_copy(&attrs[a], &g->nodes[p].attrs[a]);
        if (st) s->err = st;
    }
    int id = -1;
    if (!s->err) {
        snprintf(name, sizeof name, "%s/recompute", g->nodes[p].name);
        id =
            kn_graph_add_node(g, name, g->nodes[p].op_type, g->nodes[p].domain, ins, n_in, outs, n_out, attrs, n_attrs);
        if (id < 0) s->err = KN_OOM(sizeof(kn_node));
    }
    if (id < 0) {
        for (int a = 0; a < n_attrs; a++) kn_attr_clear(&attrs[a]);
        free(attrs);
    } else {
        kn_node *n = &g->nodes[id];
        n->op = g->nodes[p].op;
        n->opset = g->nodes[p].opset;
        s->err = kn_node_decode_params(n);
        s->copies++;
    }
    free(ins);
}

/* The recomputed twin of dropped value v, made on first use. */
static int rc_value(rc_state *s, int v) {
    if (s->copy[v] < 0 && !s->err) rc_copy_node(s, s->producer[v]);
    return s->err ? -1 : s->copy[v];
}

kn_status *kn_train_recompute(kn_graph *g, const char *spec, int *n_copies) {
    if (n_copies) *n_copies = 0;
    KN_CHECK(g && spec && *spec, KN_ERR_INVALID_ARGUMENT, "recompute: no graph or no node spec");
    rc_state s = {.g = g, .nn = g->n_nodes};
    int nv = g->n_values;
    uint8_t *chosen = calloc((size_t)s.nn + 1, 1);
    s.producer = malloc(sizeof(int) * (size_t)(nv + 1));
    s.drop = calloc((size_t)nv + 1, 1);
    s.copy = malloc(sizeof(int) * (size_t)(nv + 1));
    uint8_t *keep = calloc((size_t)nv + 1, 1);
    kn_node *sorted = NULL;
    if (!chosen || !s.producer || !s.drop || !s.copy || !keep) {
        s.err = KN_OOM(0);
        goto done;
    }
    int n_chosen = 0;
    for (int v = 0; v < nv; v++) s.producer[v] = s.copy[v] = -1;
    bool marked = false, by_norm = !strcmp(spec, "layers");
    for (int i = 0; i < s.nn && !marked; i++)
        marked = !rc_is_backward(&g->nodes[i]) && rc_layer_prefix(g->nodes[i].name) > 0;
    by_norm &= !marked;
    for (int i = 0; i < s.nn; i++) {
        chosen[i] = rc_chosen(&g->nodes[i], spec, marked);
        n_chosen += chosen[i];
        for (int k = 0; k < g->nodes[i].n_outputs; k++)
            if (g->nodes[i].outputs[k] >= 0) s.producer[g->nodes[i].outputs[k]] = i;
    }
    if (n_chosen == 0) {
        s.err = kn_error(KN_ERR_INVALID_ARGUMENT,
                         "'%s' chooses no forward node (\"layers\" needs node names with a numbered layer "
                         "segment such as layer.3)",
                         spec);
        goto done;
    }
    /* a value is dropped when it stays inside its producer's layer among chosen nodes */
    for (int i = 0; i < s.nn; i++) {
        const kn_node *n = &g->nodes[i];
        if (rc_is_backward(n)) continue;
        for (int k = 0; k < n->n_inputs; k++) {
            int v = n->inputs[k];
            if (v < 0 || s.producer[v] < 0 || !chosen[s.producer[v]]) continue;
            if (!chosen[i] || !rc_same_layer(n, &g->nodes[s.producer[v]])) keep[v] = 1;
        }
    }
    if (by_norm)
        for (int i = 0; i < s.nn; i++)
            if (rc_norm(&g->nodes[i]) && g->nodes[i].n_outputs > 0 && g->nodes[i].outputs[0] >= 0)
                keep[g->nodes[i].outputs[0]] = 1;
    for (int v = 0; v < nv; v++)
        s.drop[v] = s.producer[v] >= 0 && chosen[s.producer[v]] && !keep[v] && !g->values[v].is_output;
    /* the backward reads the copies (made once, each after what it reads) ... */
    for (int i = 0; i < s.nn && !s.err; i++) {
        /* a Shape reads no data: it keeps the forward's value, and runs in the forward */
        if (!rc_is_backward(&g->nodes[i]) || g->nodes[i].op == KN_OP_Shape || g->nodes[i].op == KN_OP_Size) continue;
        for (int k = 0; k < g->nodes[i].n_inputs && !s.err; k++) {
            int v = g->nodes[i].inputs[k];
            if (v >= 0 && v < nv && s.drop[v]) {
                int c = rc_value(&s, v);
                if (c >= 0) g->nodes[i].inputs[k] = c;
            }
        }
    }
    if (s.err) goto done;
    /* ... placed just before their first reader */
    int *order = malloc(sizeof(int) * ((size_t)g->n_nodes + 1));
    sorted = malloc(sizeof(kn_node) * ((size_t)g->n_nodes + 1));
    if (!order || !sorted) {
        free(order);
        s.err = KN_OOM(0);
        goto done;
    }
    s.err = rc_place(g, s.nn, order);
    if (!s.err) {
        for (int j = 0; j < g->n_nodes; j++) sorted[j] = g->nodes[order[j]];
        memcpy(g->nodes, sorted, sizeof(kn_node) * (size_t)g->n_nodes);
    }
    free(order);
    if (s.err) goto done;
    for (int v = 0; v < g->n_values; v++) g->values[v].producer = -1;
    for (int j = 0; j < g->n_nodes; j++)
        for (int k = 0; k < g->nodes[j].n_outputs; k++)
            if (g->nodes[j].outputs[k] >= 0) g->values[g->nodes[j].outputs[k]].producer = j;
    if (n_copies) *n_copies = s.copies;
done:
    free(chosen);
    free(keep);
    free(sorted);
    free(s.producer);
    free(s.drop);
    free(s.copy);
    return s.err ? kn_error_wrap(s.err, "recompute: ") : NULL;
}
