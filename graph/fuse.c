/* Fusion passes: pattern matchers that replace a subgraph by one node with a CPU kernel, each a
 * separate function over a kn_graph (see passes.h). A matcher fires only when every intermediate
 * it removes feeds nothing but the pattern and is no graph output, and when what it needs to know
 * about shapes is proven by constants, Transpose perms or a light rank propagation (the models
 * carry no value_info, so full shapes are rarely known before a run). The fused node writes the
 * pattern's final value, so graph outputs keep their names and dtypes. */
#include "graph/passes.h"
#include "graph/ops.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- graph bookkeeping ---- */

typedef struct fuse_ctx {
    kn_graph *g;
    int *uses; /* per value: number of node input slots reading it (+1 if a graph output) */
    int *rank; /* per value: proven rank, -1 unknown */
    /* scalars may be float16/bfloat16 constants: set while matching attention for a CPU session
     * (KN_FUSE_ATTENTION_LOWP), whose scale and NaN guard an fp16 export holds in float16 */
    bool lowp_scalars;
} fuse_ctx;

static void fuse_ctx_free(fuse_ctx *c) {
    free(c->uses);
    free(c->rank);
    c->uses = c->rank = NULL;
}

static int fuse_op(const kn_node *n) { return n->op >= 0 ? n->op : kn_op_lookup(n->op_type, n->domain); }

static const int64_t *fuse_perm(const kn_node *n, int *len) {
    const int64_t *p = NULL;
    *len = kn_attr_ints(n, "perm", &p);
    return p;
}

/* Length of a 1-D value, -1 unknown: a constant, Unsqueeze of a scalar, or a Concat of such. */
static int64_t fuse_len1d(const kn_graph *g, const int *rank, int v, int depth) {
    if (v < 0 || depth > 16) return -1;
    const kn_value *val = &g->values[v];
    if (val->constant) return val->constant->ndim == 1 ? val->constant->dims[0] : -1;
    if (val->producer < 0) return val->type.ndim == 1 ? val->type.dims[0] : -1;
    const kn_node *n = &g->nodes[val->producer];
    int op = fuse_op(n);
    if (op == KN_OP_Unsqueeze && n->n_inputs >= 1 && n->inputs[0] >= 0 && rank[n->inputs[0]] == 0) return 1;
    if (op == KN_OP_Shape && n->n_inputs == 1 && n->n_attrs == 0 && n->inputs[0] >= 0) return rank[n->inputs[0]];
    if (op == KN_OP_Reshape && n->n_inputs == 2 && n->inputs[0] >= 0 && rank[n->inputs[0]] == 1) {
        const kn_tensor *sh = n->inputs[1] >= 0 ? g->values[n->inputs[1]].constant : NULL;
        if (sh && kn_numel(sh) == 1) return fuse_len1d(g, rank, n->inputs[0], depth + 1);
    }
    if (op == KN_OP_ConstantOfShape && n->n_inputs == 1) { /* ConstantOfShape(Shape(x)) with 1-D x */
        const kn_node *sp = n->inputs[0] >= 0 && g->values[n->inputs[0]].producer >= 0
            ? &g->nodes[g->values[n->inputs[0]].producer]
            : NULL;
        if (sp && fuse_op(sp) == KN_OP_Shape && sp->n_attrs == 0 && sp->inputs[0] >= 0 && rank[sp->inputs[0]] == 1)
            return fuse_len1d(g, rank, sp->inputs[0], depth + 1);
        return -1;
    }
    if (op == KN_OP_Where || op == KN_OP_Mul || op == KN_OP_Add || op == KN_OP_Cast || op == KN_OP_Identity ||
        op == KN_OP_Equal) {
        /* elementwise over 1-D / scalar operands: the broadcast length */
        int64_t len = 1;
        for (int k = 0; k < n->n_inputs; k++) {
            int v2 = n->inputs[k];
            if (v2 < 0 || rank[v2] < 0 || rank[v2] > 1) return -1;
            if (rank[v2] == 0) continue;
            int64_t l = fuse_len1d(g, rank, v2, depth + 1);
            if (l < 0 || (l != 1 && len != 1 && l != len)) return -1;
            if (l != 1) len = l;
        }
        return len;
    }
    if (op == KN_OP_Concat) {
        int64_t s = 0;
        for (int k = 0; k < n->n_inputs; k++) {
            int64_t l = fuse_len1d(g, rank, n->inputs[k], depth + 1);
            if (l < 0) return -1;
            s += l;
        }
        return s;
    }
    return -1;
}

/* Ranks of every value, propagated forward through the (topologically ordered) nodes by the rules
 * of the ops common in transformer exports; anything else stays unknown. */
static void fuse_ranks(const kn_graph *g, int *rank) {
    for (int v = 0; v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        rank[v] = val->constant ? val->constant->ndim
                                : (val->producer < 0 && val->kind == KN_VAL_TENSOR ? val->type.ndim : -1);
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        int op = fuse_op(n), r = -1;
        int r0 = n->n_inputs > 0 && n->inputs[0] >= 0 ? rank[n->inputs[0]] : -1;
        int r1 = n->n_inputs > 1 && n->inputs[1] >= 0 ? rank[n->inputs[1]] : -1;
        switch (op) {
        case KN_OP_Add:
        case KN_OP_Sub:
        case KN_OP_Mul:
        case KN_OP_Div:
        case KN_OP_Pow:
        case KN_OP_Where:
        case KN_OP_Equal:
        case KN_OP_Less:
        case KN_OP_Greater:
        case KN_OP_LessOrEqual:
        case KN_OP_GreaterOrEqual:
        case KN_OP_And:
        case KN_OP_Or: {
            r = 0;
            for (int k = 0; k < n->n_inputs; k++) {
                int rk = n->inputs[k] >= 0 ? rank[n->inputs[k]] : -1;
                if (rk < 0) {
                    r = -1;
                    break;
                }
                if (rk > r) r = rk;
            }
            break;
        }
        case KN_OP_Cast:
        case KN_OP_Identity:
        case KN_OP_Softmax:
        case KN_OP_LayerNormalization:
        case KN_OP_Erf:
        case KN_OP_Tanh:
        case KN_OP_Relu:
        case KN_OP_Sqrt:
        case KN_OP_Neg:
        case KN_OP_Gelu:
        case KN_OP_Sigmoid:
        case KN_OP_Not:
        case KN_OP_IsNaN:
        case KN_OP_Split:
        case KN_OP_Dropout:
        case KN_OP_MsBiasGelu:
        case KN_OP_MsFastGelu:
        case KN_OP_MsGelu:
        case KN_OP_MsSkipLayerNormalization:
        case KN_OP_KnSdpa:
        case KN_OP_Exp:
        case KN_OP_Log:
        case KN_OP_Cos: /* rotary embeddings' tables */
        case KN_OP_Sin:
        case KN_OP_Reciprocal:
        case KN_OP_Abs:
        case KN_OP_Clip:
        case KN_OP_Slice:
        case KN_OP_Pad:
        case KN_OP_Tile:
        case KN_OP_CumSum:
        case KN_OP_Trilu:
        case KN_OP_Concat:
        case KN_OP_GatherElements:
        case KN_OP_Conv:
        case KN_OP_BatchNormalization:
        case KN_OP_LeakyRelu:
        case KN_OP_HardSigmoid:
        case KN_OP_Elu:
        case KN_OP_Selu:
        case KN_OP_Celu:
        case KN_OP_Softplus:
        case KN_OP_Softsign:
        case KN_OP_ThresholdedRelu: r = r0; break;
        case KN_OP_MatMul:
            if (r0 >= 2 && r1 >= 2) r = r0 > r1 ? r0 : r1;
            else if (r0 == 1 && r1 >= 2) r = r1 - 1;
            else if (r1 == 1 && r0 >= 2) r = r0 - 1;
            break;
        case KN_OP_Gemm:
        case KN_OP_MsFusedGemm: r = 2; break;
        case KN_OP_Range: r = 1; break;
        case KN_OP_ReduceMean: /* RMS norms left as ops (Gemma-3's per-head q/k norms before rotary) */
        case KN_OP_ReduceSum:
        case KN_OP_ReduceSumSquare:
        case KN_OP_ReduceMax:
        case KN_OP_ReduceMin:
        case KN_OP_ReduceL2:
            if (kn_attr_int(n, "keepdims", 1)) r = r0;
            break;
        case KN_OP_Flatten: r = 2; break;
        case KN_OP_Shape: r = 1; break;
        case KN_OP_Transpose: {
            int pl;
            fuse_perm(n, &pl);
            r = pl >= 0 ? pl : r0;
            break;
        }
        case KN_OP_Gather: r = r0 >= 1 && r1 >= 0 ? r0 + r1 - 1 : -1; break;
        case KN_OP_Reshape:
        case KN_OP_ConstantOfShape: {
            int64_t l = fuse_len1d(g, rank, n->inputs[op == KN_OP_Reshape ? 1 : 0], 0);
            r = l >= 0 && l <= KN_MAX_DIMS ? (int)l : -1;
            break;
        }
        case KN_OP_Expand: {
            int64_t l = n->n_inputs > 1 ? fuse_len1d(g, rank, n->inputs[1], 0) : -1;
            r = l >= 0 && r0 >= 0 ? (int)(l > r0 ? l : r0) : -1;
            break;
        }
        case KN_OP_Unsqueeze:
        case KN_OP_Squeeze: {
            const kn_value *ax = n->n_inputs > 1 && n->inputs[1] >= 0 ? &g->values[n->inputs[1]] : NULL;
            const int64_t *av = NULL;
            int64_t na =
                ax && ax->constant && ax->constant->ndim <= 1 ? kn_numel(ax->constant) : kn_attr_ints(n, "axes", &av);
            if (r0 >= 0 && na >= 0) r = op == KN_OP_Unsqueeze ? r0 + (int)na : (na > 0 ? r0 - (int)na : -1);
            break;
        }
        default: break;
        }
        if (r > KN_MAX_DIMS) r = -1;
        for (int k = 0; k < n->n_outputs; k++)
            if (n->outputs[k] >= 0)
                rank[n->outputs[k]] =
                    (k == 0 || op == KN_OP_Split || (op == KN_OP_MsSkipLayerNormalization && k == 3)) ? r : -1;
    }
}

static kn_status *fuse_ctx_init(fuse_ctx *c, kn_graph *g) {
    c->g = g;
    c->lowp_scalars = false;
    size_t nv = (size_t)(g->n_values ? g->n_values : 1);
    c->uses = calloc(nv, sizeof(int));
    c->rank = malloc(nv * sizeof(int));
    if (!c->uses || !c->rank) {
        fuse_ctx_free(c);
        return KN_OOM(nv * 2 * sizeof(int));
    }
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_inputs; k++)
            if (g->nodes[i].inputs[k] >= 0) c->uses[g->nodes[i].inputs[k]]++;
    for (int k = 0; k < g->n_outputs; k++)
        if (g->outputs[k] >= 0) c->uses[g->outputs[k]]++;
    fuse_ranks(g, c->rank);
    return NULL;
}

/* The node producing v when it is op `op`, else NULL. */
static const kn_node *fuse_prod(const fuse_ctx *c, int v, int op) {
    if (v < 0 || c->g->values[v].constant || c->g->values[v].producer < 0) return NULL;
    const kn_node *n = &c->g->nodes[c->g->values[v].producer];
    return fuse_op(n) == op ? n : NULL;
}

/* v is an intermediate the pattern may delete: read exactly `n` times, all inside the pattern. */
static bool fuse_private(const fuse_ctx *c, int v, int n) {
    return v >= 0 && !c->g->values[v].is_output && !c->g->values[v].constant && c->uses[v] == n;
}

/* A float32 constant with one element (or float16/bfloat16: lowp_scalars); its value in *x. */
static bool fuse_scalar(const fuse_ctx *c, int v, double *x) {
    if (v < 0 || !c->g->values[v].constant) return false;
    const kn_tensor *t = c->g->values[v].constant;
    bool lowp = c->lowp_scalars && (t->dtype == KN_F16 || t->dtype == KN_BF16);
    if ((t->dtype != KN_F32 && !lowp) || kn_numel(t) != 1 || !t->data) return false;
    *x = kn_load_f32(t->data, t->dtype, 0);
    return true;
}

static bool fuse_near(double x, double want) { return fabs(x - want) <= 1e-6 * fabs(want); }

/* For a binary node with one scalar-constant operand: the other operand, and the constant. */
static int fuse_other(const fuse_ctx *c, const kn_node *n, double *x) {
    if (n->n_inputs != 2) return -1;
    if (fuse_scalar(c, n->inputs[1], x)) return n->inputs[0];
    if (fuse_op(n) != KN_OP_Div && fuse_scalar(c, n->inputs[0], x)) return n->inputs[1];
    return -1;
}

/* Remove the nodes flagged in del (indices into g->nodes) and append the new node. */
static void fuse_drop(kn_graph *g, const uint8_t *del) {
    int w = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        kn_node *n = &g->nodes[i];
        if (!del[i]) {
            g->nodes[w++] = *n;
            continue;
        }
        kn_node_clear(n);
    }
    g->n_nodes = w;
    for (int v = 0; v < g->n_values; v++) g->values[v].producer = -1;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_outputs; k++)
            if (g->nodes[i].outputs[k] >= 0) g->values[g->nodes[i].outputs[k]].producer = i;
}

static int fuse_node_index(const kn_graph *g, const kn_node *n) { return (int)(n - g->nodes); }

/* A fresh value named after `base` with a suffix no other value has. */
static int fuse_new_value(kn_graph *g, const char *base, const char *suffix) {
    char name[512];
    for (int k = 0;; k++) {
        if (k) snprintf(name, sizeof name, "%s/%s_%d", base, suffix, k);
        else snprintf(name, sizeof name, "%s/%s", base, suffix);
        if (kn_graph_find_value(g, name) < 0) break;
    }
    return kn_graph_add_value(g, name);
}

/* Replace the nodes in del by one node (op_type, domain) with the given inputs, writing value out.
 * Attribute arrays are moved in. */
static kn_status *fuse_replace(kn_graph *g, uint8_t *del, const char *name, const char *op_type, const char *domain,
                               const int *ins, int n_ins, int out, kn_attr *attrs, int n_attrs) {
    int id = kn_graph_add_node(g, name, op_type, domain, ins, n_ins, &out, 1, attrs, n_attrs);
    if (id < 0) {
        for (int a = 0; a < n_attrs; a++) kn_attr_clear(&attrs[a]);
        free(attrs);
        return KN_OOM(sizeof(kn_node));
    }
    g->nodes[id].op = kn_op_lookup(op_type, domain);
    g->nodes[id].opset = 1;
    kn_status *st = kn_node_decode_params(&g->nodes[id]); /* its params, as loading decodes them */
    if (st) {
        free(del);
        return st;
    }
    uint8_t *d2 = realloc(del, (size_t)g->n_nodes);
    if (!d2) {
        free(del);
        return KN_OOM((size_t)g->n_nodes);
    }
    d2[id] = 0;
    fuse_drop(g, d2);
    free(d2);
    return NULL;
}

static kn_attr *fuse_attr_float(const char *name, float f) {
    kn_attr *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->name = strdup(name);
    if (!a->name) {
        free(a);
        return NULL;
    }
    a->type = KN_ATTR_FLOAT;
    a->f = f;
    return a;
}

/* ---- attention ---- */

/* Peel an optional Mul/Div by a private scalar constant off v; multiplies *scale and flags the node. */
static int fuse_peel_scale(const fuse_ctx *c, int v, double *scale, uint8_t *del) {
    const kn_node *m = fuse_prod(c, v, KN_OP_Mul);
    if (!m) m = fuse_prod(c, v, KN_OP_Div);
    double x;
    int o;
    if (!m || !fuse_private(c, v, 1) || (o = fuse_other(c, m, &x)) < 0 || !(x != 0.0) || !isfinite(x)) return v;
    *scale *= fuse_op(m) == KN_OP_Div ? 1.0 / x : x;
    del[fuse_node_index(c->g, m)] = 1;
    return o;
}

static kn_status *fuse_try_attention_at(fuse_ctx *c, int si, bool *fired) {
    kn_graph *g = c->g;
    *fired = false;
    const kn_node *sm = &g->nodes[si];
    if (sm->n_inputs != 1 || sm->n_outputs != 1) return NULL;
    int p = sm->outputs[0], x = sm->inputs[0];
    if (p < 0 || g->values[p].is_output) return NULL;
    uint8_t *del = calloc((size_t)g->n_nodes + 1, 1);
    if (!del) return KN_OOM((size_t)g->n_nodes);
    del[si] = 1;
    int64_t axis = kn_attr_int(sm, "axis", sm->opset && sm->opset < 13 ? 1 : -1);
    /* the P.V product: directly, or behind SDPA's Where(IsNaN(P), 0, P) guard */
    const kn_node *pv = NULL;
    int pv_in = p;
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        for (int k = 0; k < n->n_inputs; k++) {
            if (n->inputs[k] != p) continue;
            int op = fuse_op(n);
            if (op == KN_OP_MatMul && k == 0 && c->uses[p] == 1) pv = n;
            else if (op == KN_OP_Where && k == 2 && c->uses[p] == 2 && n->n_inputs == 3) {
                const kn_node *isn = fuse_prod(c, n->inputs[0], KN_OP_IsNaN);
                double z;
                if (isn && isn->inputs[0] == p && fuse_private(c, n->inputs[0], 1) &&
                    fuse_scalar(c, n->inputs[1], &z) && z == 0.0 && fuse_private(c, n->outputs[0], 1)) {
                    for (int j = 0; j < g->n_nodes; j++) {
                        const kn_node *mm = &g->nodes[j];
                        if (fuse_op(mm) == KN_OP_MatMul && mm->n_inputs == 2 && mm->inputs[0] == n->outputs[0]) pv = mm;
                    }
                    if (pv) {
                        del[i] = 1;
                        del[fuse_node_index(g, isn)] = 1;
                        pv_in = n->outputs[0];
                    }
                }
            }
        }
    }
    if (!pv || !fuse_private(c, p, pv_in == p ? 1 : 2) || pv->n_outputs != 1 || pv->inputs[0] != pv_in) goto no;
    int vv = pv->inputs[1];
    del[fuse_node_index(g, pv)] = 1;
    /* additive bias, then the scaled scores */
    double scale = 1.0;
    int mask = -1, sc = x;
    const kn_node *add = fuse_prod(c, x, KN_OP_Add);
    if (add && fuse_private(c, x, 1) && add->n_inputs == 2) {
        for (int side = 0; side < 2 && mask < 0; side++) {
            /* the scores side is a private MatMul output, maybe behind a scalar scale */
            int s = add->inputs[side], core = s;
            double xx;
            const kn_node *m = fuse_prod(c, s, KN_OP_Mul);
            if (!m) m = fuse_prod(c, s, KN_OP_Div);
            if (m && fuse_private(c, s, 1) && fuse_other(c, m, &xx) >= 0) core = fuse_other(c, m, &xx);
            if (fuse_prod(c, core, KN_OP_MatMul) && fuse_private(c, core, 1)) {
                mask = add->inputs[1 - side];
                sc = s;
            }
        }
        if (mask < 0) goto no;
        del[fuse_node_index(g, add)] = 1;
    }
    sc = fuse_peel_scale(c, sc, &scale, del);
    const kn_node *qk = fuse_prod(c, sc, KN_OP_MatMul);
    if (!qk || !fuse_private(c, sc, 1) || qk->n_inputs != 2) goto no;
    del[fuse_node_index(g, qk)] = 1;
    int q = fuse_peel_scale(c, qk->inputs[0], &scale, del);
    int kt = fuse_peel_scale(c, qk->inputs[1], &scale, del);
    /* K^T: Transpose(K[B,H,T,d], 0,1,3,2) or Transpose(K[B,T,H,d], 0,2,3,1) */
    const kn_node *tr = fuse_prod(c, kt, KN_OP_Transpose);
    int plen;
    const int64_t *perm = tr ? fuse_perm(tr, &plen) : NULL;
    if (!tr || !fuse_private(c, kt, 1) || !perm || plen != 4 || perm[0] != 0) goto no;
    int kin = fuse_peel_scale(c, tr->inputs[0], &scale, del);
    bool bthd;
    if (perm[1] == 1 && perm[2] == 3 && perm[3] == 2) bthd = false;
    else if (perm[1] == 2 && perm[2] == 3 && perm[3] == 1) bthd = true;
    else goto no;
    del[fuse_node_index(g, tr)] = 1;
    /* shapes: rank-4 Q, K, V make the MatMuls plain batched products over [B,H]; the softmax axis is
     * then the key axis; a bias of rank <= 4 cannot widen the scores */
    if (c->rank[q] != 4 || c->rank[kin] != 4 || c->rank[vv] != 4) goto no;
    if (!(axis == -1 || axis == 3)) goto no;
    if (mask >= 0 && (c->rank[mask] < 0 || c->rank[mask] > 4)) goto no;
    if (!isfinite(scale) || scale == 0.0) goto no;
    for (int i = 0; i < g->n_nodes; i++) /* an intermediate read by a subgraph or anything else */
        if (del[i])
            for (int k = 0; k < g->nodes[i].n_outputs; k++) {
                int o = g->nodes[i].outputs[k];
                if (o >= 0 && o != pv->outputs[0] && g->values[o].is_output) goto no;
            }

    int out = pv->outputs[0];
    char name[256];
    snprintf(name, sizeof name, "%s/kn_sdpa", sm->name && sm->name[0] ? sm->name : "softmax");
    if (bthd) { /* K[B,T,H,d] -> [B,H,T,d] by a new Transpose (the old one went to [B,H,d,T]) */
        int kv = fuse_new_value(g, g->values[kin].name, "kn_bhtd");
        if (kv < 0) {
            free(del);
            return KN_OOM(0);
        }
        kn_attr *pa = calloc(1, sizeof *pa);
        int64_t *pp = malloc(4 * sizeof(int64_t));
        char *pn = strdup("perm");
        if (!pa || !pp || !pn) {
            free(pa);
            free(pp);
            free(pn);
            free(del);
            return KN_OOM(0);
        }
        pp[0] = 0;
        pp[1] = 2;
        pp[2] = 1;
        pp[3] = 3;
        *pa = (kn_attr){.name = pn, .type = KN_ATTR_INTS, .ints = pp, .n_ints = 4};
        char tn[300];
        snprintf(tn, sizeof tn, "%s/k_bhtd", name);
        int id = kn_graph_add_node(g, tn, "Transpose", "", &kin, 1, &kv, 1, pa, 1);
        if (id < 0) {
            kn_attr_clear(pa);
            free(pa);
            free(del);
            return KN_OOM(0);
        }
        g->nodes[id].op = KN_OP_Transpose;
        g->nodes[id].opset = 13;
        kn_status *pst = kn_node_decode_params(&g->nodes[id]);
        if (pst) {
            free(del);
            return pst;
        }
        uint8_t *d2 = realloc(del, (size_t)g->n_nodes + 1);
        if (!d2) {
            free(del);
            return KN_OOM(0);
        }
        del = d2;
        del[id] = 0;
        kin = kv;
    }
    kn_attr *sa = fuse_attr_float("scale", (float)scale);
    if (!sa) {
        free(del);
        return KN_OOM(0);
    }
    int ins[4] = {q, kin, vv, mask};
    kn_status *st = fuse_replace(g, del, name, "KnSdpa", "kiln", ins, mask >= 0 ? 4 : 3, out, sa, 1);
    if (!st) *fired = true;
    return st;
no:
    free(del);
    return NULL;
}

/* Runs one matcher over every node of kind `anchor` until none fires; the context is rebuilt after
 * each rewrite since indices move. */
typedef kn_status *(*fuse_try_fn)(fuse_ctx *c, int node, bool *fired);

static kn_status *fuse_try_attention(fuse_ctx *c, int si, bool *fired) { return fuse_try_attention_at(c, si, fired); }

static kn_status *fuse_try_attention_lowp(fuse_ctx *c, int si, bool *fired) {
    c->lowp_scalars = true;
    kn_status *st = fuse_try_attention_at(c, si, fired);
    c->lowp_scalars = false;
    return st;
}

static kn_status *fuse_run(kn_graph *g, int anchor, fuse_try_fn fn, int *n_fused) {
    *n_fused = 0;
    for (;;) {
        fuse_ctx c;
        KN_TRY(fuse_ctx_init(&c, g));
        bool fired = false;
        kn_status *st = NULL;
        for (int i = 0; i < g->n_nodes && !fired && !st; i++)
            if (fuse_op(&g->nodes[i]) == anchor) st = fn(&c, i, &fired);
        fuse_ctx_free(&c);
        if (st) return st;
        if (!fired) break;
        (*n_fused)++;
        KN_TRY(kn_graph_toposort(g));
    }
    return NULL;
}

kn_status *kn_pass_fuse_attention(kn_graph *g, int *n_fused) {
    return fuse_run(g, KN_OP_Softmax, fuse_try_attention, n_fused);
}

kn_status *kn_pass_fuse_attention_lowp(kn_graph *g, int *n_fused) {
    return fuse_run(g, KN_OP_Softmax, fuse_try_attention_lowp, n_fused);
}

/* ---- a decoder's past keys/values read in place ---- */

/* The axis list of an Unsqueeze: its constant input (opset 13) or attribute; 0 when unknown. */
static int fuse_unsqueeze_axes(const kn_graph *g, const kn_node *n, int64_t *axes, int max) {
    if (n->n_inputs >= 2 && n->inputs[1] >= 0) {
        const kn_tensor *t = g->values[n->inputs[1]].constant;
        if (!t || (t->dtype != KN_I64 && t->dtype != KN_I32) || kn_numel(t) > max) return 0;
        for (int64_t i = 0; i < kn_numel(t); i++) axes[i] = kn_get_i64(t, i);
        return (int)kn_numel(t);
    }
    const int64_t *a = NULL;
    int na = kn_attr_ints(n, "axes", &a);
    if (na <= 0 || na > max) return 0;
    memcpy(axes, a, sizeof(int64_t) * (size_t)na);
    return na;
}

/* Nodes reading v other than Shape/Size of it (a plan computes those ahead); a graph output
 * counts as one more. */
static int fuse_data_readers(const fuse_ctx *c, int v) {
    const kn_graph *g = c->g;
    int readers = g->values[v].is_output ? 1 : 0;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_inputs; k++) {
            if (g->nodes[i].inputs[k] != v) continue;
            int op = fuse_op(&g->nodes[i]);
            if (!((op == KN_OP_Shape || op == KN_OP_Size) && k == 0)) readers++;
        }
    return readers;
}

/* One of KnSdpa's key/value inputs v when it is Concat(past, new) along the sequence axis of a
 * proven 4-D value, maybe behind repeat_kv (Unsqueeze at axis 2, Expand, Reshape back to 4-D:
 * each query head group reading one key/value head, which the kernel does by itself). Each value
 * on the way may be read elsewhere only by Shape/Size and be no graph output: those nodes are
 * then left in place for the Shapes, and a plan, which computes the Shapes ahead, never runs them
 * (kn_plan_build skips nodes nothing reads at run time). *past / *fresh: the parts; *rep: whether
 * repeat_kv was seen. A past made by a one-input Concat (a copy) is read at its source. */
static bool fuse_concat_parts(const fuse_ctx *c, int v, int *past, int *fresh, bool *rep) {
    const kn_graph *g = c->g;
    *rep = false;
    const kn_node *rs = fuse_prod(c, v, KN_OP_Reshape);
    if (rs && rs->n_inputs == 2 && c->rank[v] == 4) {
        const kn_node *ex = fuse_prod(c, rs->inputs[0], KN_OP_Expand);
        const kn_node *un = ex ? fuse_prod(c, ex->inputs[0], KN_OP_Unsqueeze) : NULL;
        int64_t ax[2];
        int na = un ? fuse_unsqueeze_axes(g, un, ax, 2) : 0;
        if (!un || fuse_data_readers(c, v) != 1 || fuse_data_readers(c, rs->inputs[0]) != 1 ||
            fuse_data_readers(c, ex->inputs[0]) != 1 || na != 1 || !(ax[0] == 2 || ax[0] == -3) || un->inputs[0] < 0 ||
            c->rank[un->inputs[0]] != 4 || c->rank[ex->inputs[0]] != 5 || fuse_len1d(g, c->rank, ex->inputs[1], 0) != 5)
            return false;
        v = un->inputs[0];
        *rep = true;
    }
    const kn_node *cc = fuse_prod(c, v, KN_OP_Concat);
    if (!cc || cc->n_inputs != 2 || cc->n_outputs != 1 || c->rank[v] != 4 || fuse_data_readers(c, v) != 1) return false;
    int64_t axis = kn_attr_int(cc, "axis", 0);
    if (axis != 2 && axis != -2) return false;
    *past = cc->inputs[0];
    *fresh = cc->inputs[1];
    const kn_node *one = fuse_prod(c, *past, KN_OP_Concat);
    if (one && one->n_inputs == 1 && one->inputs[0] >= 0 && c->rank[one->inputs[0]] == 4) *past = one->inputs[0];
    return *past >= 0 && *fresh >= 0;
}

static kn_status *fuse_try_split_kv(fuse_ctx *c, int si, bool *fired) {
    kn_graph *g = c->g;
    *fired = false;
    const kn_node *n = &g->nodes[si];
    if (n->n_inputs < 3 || n->n_inputs > 4 || n->n_outputs != 1) return NULL;
    uint8_t *del = calloc((size_t)g->n_nodes + 1, 1);
    if (!del) return KN_OOM((size_t)g->n_nodes);
    int pk, nk, pv, nv;
    bool rk, rv;
    if (!fuse_concat_parts(c, n->inputs[1], &pk, &nk, &rk) || !fuse_concat_parts(c, n->inputs[2], &pv, &nv, &rv) ||
        rk != rv) {
        free(del);
        return NULL;
    }
    kn_attr *at = n->n_attrs ? calloc((size_t)n->n_attrs, sizeof *at) : NULL;
    if (n->n_attrs && !at) {
        free(del);
        return KN_OOM(0);
    }
    for (int a = 0; a < n->n_attrs; a++) {
        kn_status *st = kn_attr_copy(&at[a], &n->attrs[a]);
        if (st) {
            for (int b = 0; b < a; b++) kn_attr_clear(&at[b]);
            free(at);
            free(del);
            return st;
        }
    }
    int ins[6] = {n->inputs[0], nk, nv, n->n_inputs > 3 ? n->inputs[3] : -1, pk, pv};
    char name[300];
    snprintf(name, sizeof name, "%s/past_in_place", n->name ? n->name : "kn_sdpa");
    int out = n->outputs[0];
    del[si] = 1;
    kn_status *st = fuse_replace(g, del, name, "KnSdpa", "kiln", ins, 6, out, at, n->n_attrs);
    if (!st) *fired = true;
    return st;
}

kn_status *kn_pass_split_past_kv(kn_graph *g, int *n_split) {
    return fuse_run(g, KN_OP_KnSdpa, fuse_try_split_kv, n_split);
}

/* ---- bias + GELU ---- */

/* The product 0.5 * x * a1 as two Muls in any order and nesting; returns the outer Mul or NULL. */
static const kn_node *fuse_half_product(const fuse_ctx *c, int xv, int a1, uint8_t *del) {
    const kn_graph *g = c->g;
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *m2 = &g->nodes[i];
        if (fuse_op(m2) != KN_OP_Mul || m2->n_inputs != 2 || m2->n_outputs != 1) continue;
        for (int side = 0; side < 2; side++) {
            const kn_node *m1 = fuse_prod(c, m2->inputs[side], KN_OP_Mul);
            if (!m1 || m1->n_inputs != 2 || !fuse_private(c, m2->inputs[side], 1)) continue;
            int f[3] = {m1->inputs[0], m1->inputs[1], m2->inputs[1 - side]};
            int hx = 0, ha = 0, hh = 0;
            for (int k = 0; k < 3; k++) {
                double h;
                if (f[k] == xv) hx++;
                else if (f[k] == a1) ha++;
                else if (fuse_scalar(c, f[k], &h) && h == 0.5) hh++;
            }
            if (hx == 1 && ha == 1 && hh == 1) {
                del[fuse_node_index(g, m1)] = 1;
                del[i] = 1;
                return m2;
            }
        }
    }
    return NULL;
}

/* a1 = Add(t, 1) where t is the output of node `t_node`; returns a1 or -1. */
static int fuse_plus_one(const fuse_ctx *c, int t, uint8_t *del) {
    const kn_graph *g = c->g;
    if (!fuse_private(c, t, 1)) return -1;
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *a = &g->nodes[i];
        double one;
        if (fuse_op(a) != KN_OP_Add || a->n_inputs != 2 || (a->inputs[0] != t && a->inputs[1] != t)) continue;
        if (!fuse_scalar(c, a->inputs[a->inputs[0] == t ? 1 : 0], &one) || one != 1.0) return -1;
        if (!fuse_private(c, a->outputs[0], 1)) return -1;
        del[i] = 1;
        return a->outputs[0];
    }
    return -1;
}

/* x = Add(MatMul(a, W[K,N]), b[N]) with constant W and b: the MatMul output and b, so the bias
 * is proven 1-D along x's last axis. */
static bool fuse_bias_of(const fuse_ctx *c, int xv, int uses_of_x, int *mm_out, int *bias, uint8_t *del) {
    const kn_node *a = fuse_prod(c, xv, KN_OP_Add);
    if (!a || a->n_inputs != 2 || !fuse_private(c, xv, uses_of_x)) return false;
    for (int side = 0; side < 2; side++) {
        int m = a->inputs[side], b = a->inputs[1 - side];
        const kn_node *mm = fuse_prod(c, m, KN_OP_MatMul);
        const kn_tensor *bt = b >= 0 ? c->g->values[b].constant : NULL;
        if (!mm || !bt || bt->ndim != 1 || mm->n_inputs != 2 || !fuse_private(c, m, 1)) continue;
        const kn_tensor *w = mm->inputs[1] >= 0 ? c->g->values[mm->inputs[1]].constant : NULL;
        if (!w || w->ndim != 2 || w->dims[1] != bt->dims[0] || w->dtype != bt->dtype || c->rank[mm->inputs[0]] < 2)
            continue;
        *mm_out = m;
        *bias = b;
        del[fuse_node_index(c->g, a)] = 1;
        return true;
    }
    return false;
}

static kn_status *fuse_emit_gelu(fuse_ctx *c, uint8_t *del, const kn_node *anchor, int xv, int uses_of_x, int out,
                                 bool tanh_form, bool *fired) {
    kn_graph *g = c->g;
    int mm_out = -1, bias = -1;
    bool has_bias = fuse_bias_of(c, xv, uses_of_x, &mm_out, &bias, del);
    char name[256];
    snprintf(name, sizeof name, "%s/kn_gelu", anchor->name && anchor->name[0] ? anchor->name : "gelu");
    int ins[2] = {has_bias ? mm_out : xv, bias};
    const char *op = tanh_form ? "FastGelu" : has_bias ? "BiasGelu" : "Gelu";
    KN_TRY(fuse_replace(g, del, name, op, "com.microsoft", ins, has_bias ? 2 : 1, out, NULL, 0));
    *fired = true;
    return NULL;
}

/* Erf form: 0.5 * x * (1 + Erf(x / sqrt2)) (or x * (1/sqrt2)), anchored at the Erf. */
static kn_status *fuse_try_gelu_erf(fuse_ctx *c, int ei, bool *fired) {
    kn_graph *g = c->g;
    *fired = false;
    const kn_node *erf = &g->nodes[ei];
    if (erf->n_inputs != 1 || erf->n_outputs != 1) return NULL;
    uint8_t *del = calloc((size_t)g->n_nodes + 1, 1);
    if (!del) return KN_OOM((size_t)g->n_nodes);
    del[ei] = 1;
    const kn_node *d = fuse_prod(c, erf->inputs[0], KN_OP_Div);
    if (!d) d = fuse_prod(c, erf->inputs[0], KN_OP_Mul);
    double k;
    int xv = d ? fuse_other(c, d, &k) : -1;
    if (xv < 0 || !fuse_private(c, erf->inputs[0], 1)) goto no;
    if (!(fuse_op(d) == KN_OP_Div ? fuse_near(k, sqrt(2.0)) : fuse_near(k, sqrt(0.5)))) goto no;
    del[fuse_node_index(g, d)] = 1;
    int a1 = fuse_plus_one(c, erf->outputs[0], del);
    if (a1 < 0) goto no;
    const kn_node *m2 = fuse_half_product(c, xv, a1, del);
    if (!m2 || g->values[m2->outputs[0]].kind != KN_VAL_TENSOR) goto no;
    return fuse_emit_gelu(c, del, erf, xv, 2, m2->outputs[0], false, fired);
no:
    free(del);
    return NULL;
}

/* Tanh form: 0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * Pow(x, 3)))), anchored at the Tanh. */
static kn_status *fuse_try_gelu_tanh(fuse_ctx *c, int ti, bool *fired) {
    kn_graph *g = c->g;
    *fired = false;
    const kn_node *th = &g->nodes[ti];
    if (th->n_inputs != 1 || th->n_outputs != 1) return NULL;
    uint8_t *del = calloc((size_t)g->n_nodes + 1, 1);
    if (!del) return KN_OOM((size_t)g->n_nodes);
    del[ti] = 1;
    double k;
    const kn_node *ms = fuse_prod(c, th->inputs[0], KN_OP_Mul);
    int inner = ms ? fuse_other(c, ms, &k) : -1;
    if (inner < 0 || !fuse_private(c, th->inputs[0], 1) || !fuse_near(k, sqrt(2.0 / M_PI))) goto no;
    del[fuse_node_index(g, ms)] = 1;
    const kn_node *ad = fuse_prod(c, inner, KN_OP_Add);
    if (!ad || ad->n_inputs != 2 || !fuse_private(c, inner, 1)) goto no;
    del[fuse_node_index(g, ad)] = 1;
    int xv = -1;
    for (int side = 0; side < 2 && xv < 0; side++) {
        const kn_node *mc = fuse_prod(c, ad->inputs[side], KN_OP_Mul);
        int cube = mc ? fuse_other(c, mc, &k) : -1;
        if (cube < 0 || !fuse_near(k, 0.044715) || !fuse_private(c, ad->inputs[side], 1)) continue;
        const kn_node *pw = fuse_prod(c, cube, KN_OP_Pow);
        double e;
        if (!pw || pw->n_inputs != 2 || !fuse_scalar(c, pw->inputs[1], &e) || e != 3.0 || !fuse_private(c, cube, 1))
            continue;
        if (pw->inputs[0] != ad->inputs[1 - side]) continue;
        xv = pw->inputs[0];
        del[fuse_node_index(g, mc)] = 1;
        del[fuse_node_index(g, pw)] = 1;
    }
    if (xv < 0) goto no;
    int a1 = fuse_plus_one(c, th->outputs[0], del);
    if (a1 < 0) goto no;
    const kn_node *m2 = fuse_half_product(c, xv, a1, del);
    if (!m2) goto no;
    return fuse_emit_gelu(c, del, th, xv, 3, m2->outputs[0], true, fired);
no:
    free(del);
    return NULL;
}

kn_status *kn_pass_fuse_bias_gelu(kn_graph *g, int *n_fused) {
    int a = 0, b = 0;
    KN_TRY(fuse_run(g, KN_OP_Erf, fuse_try_gelu_erf, &a));
    KN_TRY(fuse_run(g, KN_OP_Tanh, fuse_try_gelu_tanh, &b));
    *n_fused = a + b;
    return NULL;
}

/* ---- residual add + LayerNormalization ---- */

static kn_status *fuse_try_skip_ln(fuse_ctx *c, int li, bool *fired) {
    kn_graph *g = c->g;
    *fired = false;
    const kn_node *ln = &g->nodes[li];
    if (ln->n_inputs < 2 || ln->n_inputs > 3 || ln->n_outputs < 1) return NULL;
    for (int k = 1; k < ln->n_outputs; k++) /* mean / inv_std_dev are not SkipLayerNormalization's */
        if (ln->outputs[k] >= 0 && (c->uses[ln->outputs[k]] || g->values[ln->outputs[k]].is_output)) return NULL;
    if (kn_attr_int(ln, "axis", -1) != -1 || kn_attr_int(ln, "stash_type", 1) != 1) return NULL;
    int xv = ln->inputs[0], gam = ln->inputs[1], bet = ln->n_inputs > 2 ? ln->inputs[2] : -1;
    const kn_tensor *gt = gam >= 0 ? g->values[gam].constant : NULL, *bt = bet >= 0 ? g->values[bet].constant : NULL;
    if (!gt || gt->ndim != 1 || gt->dtype != KN_F32 ||
        (bet >= 0 && (!bt || bt->ndim != 1 || bt->dims[0] != gt->dims[0] || bt->dtype != KN_F32)))
        return NULL;
    const kn_node *ad = fuse_prod(c, xv, KN_OP_Add);
    if (!ad || ad->n_inputs != 2 || g->values[xv].is_output || ad->inputs[0] < 0 || ad->inputs[1] < 0) return NULL;
    int a = ad->inputs[0], b = ad->inputs[1];
    /* SkipLayerNormalization wants input and skip of one shape (2-D or 3-D, skip may drop the
     * batch); equal proven ranks of 2 or 3 from two non-constant operands rule out a bias add
     * and any broadcast it could not express (its kernel rejects the rest rather than guess) */
    if (g->values[a].constant || g->values[b].constant) return NULL;
    if (c->rank[a] != c->rank[b] || (c->rank[a] != 2 && c->rank[a] != 3)) return NULL;
    int extra = c->uses[xv] - 1; /* the residual sum also feeds later layers: output 3 */
    uint8_t *del = calloc((size_t)g->n_nodes + 1, 1);
    if (!del) return KN_OOM((size_t)g->n_nodes);
    del[li] = 1;
    del[fuse_node_index(g, ad)] = 1;
    char name[256];
    snprintf(name, sizeof name, "%s/kn_skip_ln", ln->name && ln->name[0] ? ln->name : "layernorm");
    kn_attr *ea = fuse_attr_float("epsilon", kn_attr_float(ln, "epsilon", 1e-5f));
    if (!ea) {
        free(del);
        return KN_OOM(0);
    }
    int ins[4] = {a, b, gam, bet}, outs[4] = {ln->outputs[0], -1, -1, xv};
    int n_outs = extra > 0 ? 4 : 1;
    int id = kn_graph_add_node(g, name, "SkipLayerNormalization", "com.microsoft", ins, bet >= 0 ? 4 : 3, outs, n_outs,
                               ea, 1);
    if (id < 0) {
        kn_attr_clear(ea);
        free(ea);
        free(del);
        return KN_OOM(0);
    }
    g->nodes[id].op = KN_OP_MsSkipLayerNormalization;
    g->nodes[id].opset = 1;
    kn_status *pst = kn_node_decode_params(&g->nodes[id]);
    if (pst) {
        free(del);
        return pst;
    }
    uint8_t *d2 = realloc(del, (size_t)g->n_nodes);
    if (!d2) {
        free(del);
        return KN_OOM(0);
    }
    d2[id] = 0;
    fuse_drop(g, d2);
    free(d2);
    *fired = true;
    return NULL;
}

kn_status *kn_pass_fuse_skip_layernorm(kn_graph *g, int *n_fused) {
    return fuse_run(g, KN_OP_LayerNormalization, fuse_try_skip_ln, n_fused);
}

/* ---- GEMM + GELU epilogue ---- */

/* FastGelu(MatMul(X, W[K,N]), b?) with constant 2-D W and the product read by the FastGelu alone ->
 * com.microsoft GemmFastGelu(X, W, b?): one GEMM whose epilogue adds the bias and applies the GELU
 * (cuBLASLt's GELU_BIAS on the CUDA backend) instead of a product written and read back. */
static kn_status *fuse_try_gemm_gelu(fuse_ctx *c, int fi, bool *fired) {
    kn_graph *g = c->g;
    *fired = false;
    const kn_node *fg = &g->nodes[fi];
    if (fg->n_inputs < 1 || fg->n_inputs > 2 || fg->n_outputs != 1 || fg->inputs[0] < 0) return NULL;
    int bias = fg->n_inputs > 1 ? fg->inputs[1] : -1;
    const kn_node *mm = fuse_prod(c, fg->inputs[0], KN_OP_MatMul);
    if (!mm || mm->n_inputs != 2 || !fuse_private(c, fg->inputs[0], 1) || mm->inputs[1] < 0) return NULL;
    const kn_tensor *w = g->values[mm->inputs[1]].constant;
    if (!w || w->ndim != 2 || (w->dtype != KN_F32 && w->dtype != KN_F16 && w->dtype != KN_BF16)) return NULL;
    uint8_t *del = calloc((size_t)g->n_nodes + 1, 1);
    if (!del) return KN_OOM((size_t)g->n_nodes);
    del[fi] = 1;
    del[fuse_node_index(g, mm)] = 1;
    char name[256];
    snprintf(name, sizeof name, "%s/kn_gemm_gelu", fg->name && fg->name[0] ? fg->name : "fastgelu");
    int ins[3] = {mm->inputs[0], mm->inputs[1], bias};
    KN_TRY(
        fuse_replace(g, del, name, "GemmFastGelu", "com.microsoft", ins, bias >= 0 ? 3 : 2, fg->outputs[0], NULL, 0));
    *fired = true;
    return NULL;
}

kn_status *kn_pass_fuse_gemm_gelu(kn_graph *g, int *n_fused) {
    return fuse_run(g, KN_OP_MsFastGelu, fuse_try_gemm_gelu, n_fused);
}

/* ---- Conv + Relu / Clip ---- */

/* Relu(Conv(X, W[, B])), Clip(Conv(...), min, max) with constant scalar bounds, or the SiLU
 * Mul(c, Sigmoid(c)) of c = Conv(...), W a float32 constant: FusedConv(X, W[, B]) with activation
 * Relu / Clip / Silu (kiln's), anchored at the activation. The activation then rides on the
 * convolution's bias pass instead of passes of its own over the output. */
static kn_status *fuse_try_conv_act(fuse_ctx *c, int ai, bool *fired) {
    kn_graph *g = c->g;
    *fired = false;
    const kn_node *a = &g->nodes[ai];
    int aop = fuse_op(a);
    if (a->n_inputs < 1 || a->n_outputs != 1 || a->outputs[0] < 0) return NULL;
    int cv = a->inputs[0];
    const kn_node *conv = NULL;
    const kn_tensor *w = NULL;
    if (aop != KN_OP_Mul) {
        conv = fuse_prod(c, cv, KN_OP_Conv);
        if (!conv || !fuse_private(c, cv, 1) || conv->n_outputs != 1 || conv->n_inputs < 2 || conv->n_inputs > 3)
            return NULL;
        w = conv->inputs[1] >= 0 ? g->values[conv->inputs[1]].constant : NULL;
        if (!w || w->dtype != KN_F32 || (conv->n_inputs == 3 && conv->inputs[2] < 0)) return NULL;
    }
    double lo = -INFINITY, hi = INFINITY;
    int del_extra = -1; /* the Sigmoid of the SiLU form */
    if (aop == KN_OP_Mul) {
        /* SiLU: Mul(c, Sigmoid(c)) in either order, c read by exactly those two */
        if (a->n_inputs != 2) return NULL;
        const kn_node *sg = NULL;
        for (int k = 0; k < 2 && !sg; k++) {
            const kn_node *s = fuse_prod(c, a->inputs[k], KN_OP_Sigmoid);
            if (s && s->n_inputs == 1 && s->inputs[0] == a->inputs[1 - k] && fuse_private(c, a->inputs[k], 1)) {
                sg = s;
                cv = a->inputs[1 - k];
            }
        }
        if (!sg) return NULL;
        conv = fuse_prod(c, cv, KN_OP_Conv);
        if (!conv || !fuse_private(c, cv, 2) || conv->n_outputs != 1 || conv->n_inputs < 2 || conv->n_inputs > 3)
            return NULL;
        w = conv->inputs[1] >= 0 ? g->values[conv->inputs[1]].constant : NULL;
        if (!w || w->dtype != KN_F32 || (conv->n_inputs == 3 && conv->inputs[2] < 0)) return NULL;
        del_extra = fuse_node_index(g, sg);
    } else if (aop == KN_OP_Clip) {
        if (a->opset > 0 && a->opset < 11) {
            lo = kn_attr_float(a, "min", -INFINITY);
            hi = kn_attr_float(a, "max", INFINITY);
        } else {
            if (a->n_inputs > 3) return NULL;
            for (int k = 1; k < a->n_inputs; k++) {
                double v;
                if (a->inputs[k] < 0) continue;
                if (!fuse_scalar(c, a->inputs[k], &v)) return NULL;
                if (k == 1) lo = v;
                else hi = v;
            }
        }
        if (isnan(lo) || isnan(hi)) return NULL;
    } else if (a->n_inputs != 1) return NULL;
    uint8_t *del = calloc((size_t)g->n_nodes, 1);
    int na = conv->n_attrs + 2, k = 0;
    kn_attr *attrs = calloc((size_t)na, sizeof *attrs);
    float *fp = aop == KN_OP_Clip ? malloc(2 * sizeof(float)) : NULL;
    char *an = strdup("activation"),
         *av = strdup(aop == KN_OP_Clip      ? "Clip"
                          : aop == KN_OP_Mul ? "Silu"
                                             : "Relu"),
         *pn = aop == KN_OP_Clip ? strdup("activation_params") : NULL;
    kn_status *st = NULL;
    if (!del || !attrs || !an || !av || (aop == KN_OP_Clip && (!fp || !pn))) st = KN_OOM(sizeof(kn_attr) * (size_t)na);
    for (int i = 0; i < conv->n_attrs && !st; i++, k++) st = kn_attr_copy(&attrs[k], &conv->attrs[i]);
    if (st) {
        for (int i = 0; i < k; i++) kn_attr_clear(&attrs[i]);
        free(attrs);
        free(del);
        free(fp);
        free(an);
        free(av);
        free(pn);
        return st;
    }
    attrs[k].name = an;
    attrs[k].type = KN_ATTR_STRING;
    attrs[k].s = av;
    attrs[k++].s_len = strlen(av);
    if (aop == KN_OP_Clip) {
        fp[0] = (float)lo;
        fp[1] = (float)hi;
        attrs[k].name = pn;
        attrs[k].type = KN_ATTR_FLOATS;
        attrs[k].floats = fp;
        attrs[k++].n_floats = 2;
    }
    char name[256];
    snprintf(name, sizeof name, "%s/kn_fused", conv->name && conv->name[0] ? conv->name : "conv");
    int ins[3] = {conv->inputs[0], conv->inputs[1], conv->n_inputs == 3 ? conv->inputs[2] : -1};
    int out = a->outputs[0], n_ins = conv->n_inputs;
    del[ai] = 1;
    del[fuse_node_index(g, conv)] = 1;
    if (del_extra >= 0) del[del_extra] = 1;
    KN_TRY(fuse_replace(g, del, name, "FusedConv", "com.microsoft", ins, n_ins, out, attrs, k));
    *fired = true;
    return NULL;
}

kn_status *kn_pass_fuse_conv_act(kn_graph *g, int *n_fused) {
    int a = 0, b = 0, d = 0;
    KN_TRY(fuse_run(g, KN_OP_Relu, fuse_try_conv_act, &a));
    KN_TRY(fuse_run(g, KN_OP_Clip, fuse_try_conv_act, &b));
    KN_TRY(fuse_run(g, KN_OP_Mul, fuse_try_conv_act, &d));
    *n_fused = a + b + d;
    return NULL;
}

/* ---- GEMM + activation ---- */

/* The FusedGemm activation an activation node stands for, with its parameters (ONNX attribute
 * defaults; Clip's bounds from constant scalars or its pre-11 attributes); NULL when it is none
 * the op takes or its parameters are not constant. */
static const char *fuse_gemm_act(const fuse_ctx *c, const kn_node *a, float *pa, float *pb, float *pg) {
    *pa = *pb = *pg = 0.0f;
    switch (fuse_op(a)) {
    case KN_OP_Relu: return "Relu";
    case KN_OP_Sigmoid: return "Sigmoid";
    case KN_OP_Tanh: return "Tanh";
    case KN_OP_Softplus: return "Softplus";
    case KN_OP_Softsign: return "Softsign";
    case KN_OP_LeakyRelu: *pa = kn_attr_float(a, "alpha", 0.01f); return "LeakyRelu";
    case KN_OP_Elu: *pa = kn_attr_float(a, "alpha", 1.0f); return "Elu";
    case KN_OP_Celu: *pa = kn_attr_float(a, "alpha", 1.0f); return *pa != 0.0f ? "Celu" : NULL;
    case KN_OP_ThresholdedRelu: *pa = kn_attr_float(a, "alpha", 1.0f); return "ThresholdedRelu";
    case KN_OP_HardSigmoid:
        *pa = kn_attr_float(a, "alpha", 0.2f);
        *pb = kn_attr_float(a, "beta", 0.5f);
        return "HardSigmoid";
    case KN_OP_Selu:
        *pa = kn_attr_float(a, "alpha", 1.67326319217681884765625f);
        *pg = kn_attr_float(a, "gamma", 1.05070102214813232421875f);
        return "Selu";
    case KN_OP_Clip: {
        double lo = -INFINITY, hi = INFINITY;
        if (a->opset > 0 && a->opset < 11) {
            lo = kn_attr_float(a, "min", -INFINITY);
            hi = kn_attr_float(a, "max", INFINITY);
        } else {
            if (a->n_inputs > 3) return NULL;
            for (int k = 1; k < a->n_inputs; k++) {
                double v;
                if (a->inputs[k] < 0) continue;
                if (!fuse_scalar(c, a->inputs[k], &v)) return NULL;
                if (k == 1) lo = v;
                else hi = v;
            }
        }
        if (isnan(lo) || isnan(hi)) return NULL;
        *pa = (float)lo;
        *pb = (float)hi;
        return "Clip";
    }
    default: return NULL;
    }
}

static bool fuse_float_const(const kn_tensor *t) {
    return t && (t->dtype == KN_F32 || t->dtype == KN_F16 || t->dtype == KN_BF16);
}

/* act(Gemm(A, B[, C])) with B a float constant, or act(Add(MatMul(X, W), b)) with X of proven rank
 * 2, W a 2-D float constant and b a constant [N] or [1, N] of W's type: com.microsoft FusedGemm,
 * anchored at the activation, every intermediate read by the pattern alone. On CUDA the bias and
 * ReLU are then cuBLASLt's RELU_BIAS epilogue, and the other activations one pass over the output
 * instead of an elementwise op's own. */
static kn_status *fuse_try_gemm_act(fuse_ctx *c, int ai, bool *fired) {
    kn_graph *g = c->g;
    *fired = false;
    const kn_node *a = &g->nodes[ai];
    if (a->n_inputs < 1 || a->n_outputs != 1 || a->outputs[0] < 0 || a->inputs[0] < 0) return NULL;
    if (fuse_op(a) != KN_OP_Clip && a->n_inputs != 1) return NULL;
    float pa, pb, pg;
    const char *act = fuse_gemm_act(c, a, &pa, &pb, &pg);
    if (!act) return NULL;
    int pre = a->inputs[0], ins[3] = {-1, -1, -1}, n_ins = 0;
    const kn_node *gemm = fuse_prod(c, pre, KN_OP_Gemm), *mm = NULL, *add = NULL;
    if (gemm) {
        if (!fuse_private(c, pre, 1) || gemm->n_outputs != 1 || gemm->n_inputs < 2 || gemm->n_inputs > 3 ||
            (gemm->opset > 0 && gemm->opset < 7) || gemm->inputs[0] < 0 || gemm->inputs[1] < 0 ||
            !fuse_float_const(g->values[gemm->inputs[1]].constant))
            return NULL;
        n_ins = gemm->n_inputs == 3 && gemm->inputs[2] >= 0 ? 3 : 2;
        for (int k = 0; k < n_ins; k++) ins[k] = gemm->inputs[k];
    } else {
        add = fuse_prod(c, pre, KN_OP_Add);
        if (!add || !fuse_private(c, pre, 1) || add->n_inputs != 2 || add->n_outputs != 1) return NULL;
        for (int side = 0; side < 2 && !mm; side++) {
            const kn_node *m = fuse_prod(c, add->inputs[side], KN_OP_MatMul);
            if (!m || !fuse_private(c, add->inputs[side], 1) || m->n_inputs != 2 || m->n_outputs != 1 ||
                m->inputs[0] < 0 || m->inputs[1] < 0 || c->rank[m->inputs[0]] != 2)
                continue;
            const kn_tensor *w = g->values[m->inputs[1]].constant;
            const kn_tensor *b = add->inputs[1 - side] >= 0 ? g->values[add->inputs[1 - side]].constant : NULL;
            if (!fuse_float_const(w) || w->ndim != 2 || !b || b->dtype != w->dtype || kn_numel(b) != w->dims[1] ||
                b->ndim < 1 || b->ndim > 2 || (b->ndim == 2 && b->dims[0] != 1))
                continue;
            mm = m;
            ins[0] = m->inputs[0];
            ins[1] = m->inputs[1];
            ins[2] = add->inputs[1 - side];
            n_ins = 3;
        }
        if (!mm) return NULL;
    }
    int n_copy = gemm ? gemm->n_attrs : 0, k = 0, na = n_copy + 4;
    uint8_t *del = calloc((size_t)g->n_nodes, 1);
    kn_attr *attrs = calloc((size_t)na, sizeof *attrs);
    kn_status *st = !del || !attrs ? KN_OOM(sizeof(kn_attr) * (size_t)na) : NULL;
    for (int i = 0; i < n_copy && !st; i++, k++) st = kn_attr_copy(&attrs[k], &gemm->attrs[i]);
    static const char *const names[4] = {"activation", "activation_alpha", "activation_beta", "activation_gamma"};
    float vals[4] = {0.0f, pa, pb, pg};
    for (int i = 0; i < 4 && !st; i++, k++) {
        attrs[k].name = strdup(names[i]);
        if (i == 0) {
            attrs[k].type = KN_ATTR_STRING;
            attrs[k].s = strdup(act);
            attrs[k].s_len = strlen(act);
        } else {
            attrs[k].type = KN_ATTR_FLOAT;
            attrs[k].f = vals[i];
        }
        if (!attrs[k].name || (i == 0 && !attrs[k].s)) st = KN_OOM(strlen(act) + 32);
    }
    if (st) {
        for (int i = 0; i < na && attrs; i++) kn_attr_clear(&attrs[i]);
        free(attrs);
        free(del);
        return st;
    }
    const kn_node *base = gemm ? gemm : mm;
    char name[256];
    snprintf(name, sizeof name, "%s/kn_gemm_act", base->name && base->name[0] ? base->name : "gemm");
    int out = a->outputs[0];
    del[ai] = 1;
    del[fuse_node_index(g, base)] = 1;
    if (add) del[fuse_node_index(g, add)] = 1;
    KN_TRY(fuse_replace(g, del, name, "FusedGemm", "com.microsoft", ins, n_ins, out, attrs, k));
    *fired = true;
    return NULL;
}

kn_status *kn_pass_fuse_gemm_act(kn_graph *g, int *n_fused) {
    static const int anchors[] = {
        KN_OP_Relu, KN_OP_LeakyRelu, KN_OP_Sigmoid,  KN_OP_Tanh,     KN_OP_HardSigmoid,     KN_OP_Elu,
        KN_OP_Selu, KN_OP_Celu,      KN_OP_Softplus, KN_OP_Softsign, KN_OP_ThresholdedRelu, KN_OP_Clip};
    *n_fused = 0;
    for (size_t i = 0; i < sizeof anchors / sizeof anchors[0]; i++) {
        int n = 0;
        KN_TRY(fuse_run(g, anchors[i], fuse_try_gemm_act, &n));
        *n_fused += n;
    }
    return NULL;
}

unsigned kn_fusions_for_backend(const kn_backend *b) {
    if (!b) return KN_FUSE_ALL;
    unsigned m = 0;
    if (b->kernel(b, KN_OP_KnSdpa)) m |= KN_FUSE_ATTENTION;
    /* the GELU pass makes any of the three, so it needs all three */
    if (b->kernel(b, KN_OP_MsBiasGelu) && b->kernel(b, KN_OP_MsGelu) && b->kernel(b, KN_OP_MsFastGelu))
        m |= KN_FUSE_GELU;
    if (b->kernel(b, KN_OP_MsSkipLayerNormalization)) m |= KN_FUSE_SKIP_LAYERNORM;
    /* it fuses the GELU pass's FastGelu */
    if ((m & KN_FUSE_GELU) && b->kernel(b, KN_OP_MsGemmFastGelu)) m |= KN_FUSE_GEMM_GELU;
    if (b->kernel(b, KN_OP_MsFusedConv)) m |= KN_FUSE_CONV_ACT;
    /* device backends only: on the CPU the activation is a pass of its own either way (the
     * measurement: README, fused epilogues) */
    if (b->device != KN_DEVICE_CPU && b->kernel(b, KN_OP_MsFusedGemm)) m |= KN_FUSE_GEMM_ACT;
    /* the CPU and CUDA kernels read a past beside the new keys (KnSdpa inputs 4, 5) */
    if ((m & KN_FUSE_ATTENTION) && (b->device == KN_DEVICE_CPU || b->device == KN_DEVICE_CUDA))
        m |= KN_FUSE_SPLIT_PAST_KV;
    /* the CPU kernel computes a float16/bfloat16 attention in float32 inside (textgen.fp16 checks
     * an fp16 export's tokens against ONNX Runtime's); the CUDA kernel's lowp path is not checked
     * against a reference for a model that is float16 in its file */
    if ((m & KN_FUSE_ATTENTION) && b->device == KN_DEVICE_CPU) m |= KN_FUSE_ATTENTION_LOWP;
    return m;
}

kn_status *kn_graph_fuse_some(kn_graph *g, unsigned passes, kn_fuse_counts *counts) {
    kn_fuse_counts c = {0};
    if (passes & KN_FUSE_ATTENTION)
        KN_TRY((passes & KN_FUSE_ATTENTION_LOWP) ? kn_pass_fuse_attention_lowp(g, &c.attention)
                                                 : kn_pass_fuse_attention(g, &c.attention));
    if (passes & KN_FUSE_GELU) KN_TRY(kn_pass_fuse_bias_gelu(g, &c.gelu));
    if (passes & KN_FUSE_SKIP_LAYERNORM) KN_TRY(kn_pass_fuse_skip_layernorm(g, &c.skip_layernorm));
    if (passes & KN_FUSE_GEMM_GELU) KN_TRY(kn_pass_fuse_gemm_gelu(g, &c.gemm_gelu));
    if (passes & KN_FUSE_CONV_ACT) KN_TRY(kn_pass_fuse_conv_act(g, &c.conv_act));
    if (passes & KN_FUSE_GEMM_ACT) KN_TRY(kn_pass_fuse_gemm_act(g, &c.gemm_act));
    if (passes & KN_FUSE_SPLIT_PAST_KV) KN_TRY(kn_pass_split_past_kv(g, &c.split_past_kv));
    if (counts) *counts = c;
    return NULL;
}

kn_status *kn_graph_fuse(kn_graph *g, kn_fuse_counts *counts) { return kn_graph_fuse_some(g, KN_FUSE_ALL, counts); }
