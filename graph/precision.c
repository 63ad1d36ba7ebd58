/* Reduced-precision inference graphs (graph/precision.h): one forward sweep that tracks, for each
 * float32 value, its low-precision twin, moving the ops a device backend computes well in
 * float16/bfloat16 to that type and inserting the Casts where the two worlds meet. The trainer's
 * mixed-precision rewrite (autograd/trainer_device.c) converts the whole graph at once because
 * every op it differentiates has a low-precision kernel; inference models carry ops that must
 * stay float32 (Pow and Exp overflow float16, the CPU fallbacks), so this pass decides per node. */
#include "graph/precision.h"
#include "graph/ops.h"
#include "graph/passes.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint16_t kn_f32_to_lowp_sat(float f, kn_dtype lp) {
    if (lp == KN_F16) {
        if (isfinite(f) && fabsf(f) > 65504.0f) f = f < 0 ? -65504.0f : 65504.0f;
        return kn_f32_to_f16(f);
    }
    if (isfinite(f) && fabsf(f) > 3.3895314e38f) f = f < 0 ? -3.3895314e38f : 3.3895314e38f;
    return kn_f32_to_bf16(f);
}

/* Ops moved to the low precision: their kernels accumulate in float32 (GEMMs and convolutions,
 * normalisations, softmax, mean/max/min reductions and pools) or are exact or well-conditioned in
 * any float type. BatchNormalization stays float32 (variances near float16's subnormals). Left out
 * on purpose: Pow, Exp, ReduceSum and ReduceSumSquare (float16 overflow), Cast (its target type is
 * the model's), comparisons (results are bool either way) and everything the backend lacks. */
static bool lowp_op(int op) {
    switch (op) {
    case KN_OP_MatMul:
    case KN_OP_Gemm:
    case KN_OP_Add:
    case KN_OP_Sub:
    case KN_OP_Mul:
    case KN_OP_Div:
    case KN_OP_Where:
    case KN_OP_Max:
    case KN_OP_Min:
    case KN_OP_Relu:
    case KN_OP_Neg:
    case KN_OP_Abs:
    case KN_OP_Tanh:
    case KN_OP_Sigmoid:
    case KN_OP_Erf:
    case KN_OP_Gelu:
    case KN_OP_Sqrt:
    case KN_OP_Softmax:
    case KN_OP_LogSoftmax:
    case KN_OP_LayerNormalization:
    case KN_OP_ReduceMean:
    case KN_OP_ReduceMax:
    case KN_OP_ReduceMin:
    case KN_OP_Transpose:
    case KN_OP_Reshape:
    case KN_OP_Flatten:
    case KN_OP_Squeeze:
    case KN_OP_Unsqueeze:
    case KN_OP_Identity:
    case KN_OP_Concat:
    case KN_OP_Split:
    case KN_OP_Slice:
    case KN_OP_Expand:
    case KN_OP_Gather:
    case KN_OP_KnSdpa:
    case KN_OP_MsSkipLayerNormalization:
    case KN_OP_MsBiasGelu:
    case KN_OP_MsFastGelu:
    case KN_OP_Conv:
    case KN_OP_MaxPool:
    case KN_OP_AveragePool:
    case KN_OP_GlobalAveragePool:
    case KN_OP_GlobalMaxPool:
    case KN_OP_MsFusedGemm: return true;
    default: return false;
    }
}

/* The element type of every output when the inputs have types `in`: declared types first, then
 * the rule of the few op kinds whose type is obvious; KN_UNDEFINED when unsure. */
static kn_dtype out_dtype(const kn_graph *g, const kn_node *n, int k, const kn_dtype *dt) {
    int v = n->outputs[k];
    if (g->values[v].type.dtype != KN_UNDEFINED) return g->values[v].type.dtype;
    switch (n->op) {
    case KN_OP_Shape:
    case KN_OP_Size:
    case KN_OP_NonZero:
    case KN_OP_ArgMax:
    case KN_OP_ArgMin: return KN_I64;
    case KN_OP_Equal:
    case KN_OP_Less:
    case KN_OP_Greater:
    case KN_OP_LessOrEqual:
    case KN_OP_GreaterOrEqual:
    case KN_OP_Not:
    case KN_OP_And:
    case KN_OP_Or:
    case KN_OP_Xor:
    case KN_OP_IsNaN:
    case KN_OP_IsInf: return KN_BOOL;
    case KN_OP_Cast:
        for (int a = 0; a < n->n_attrs; a++)
            if (!strcmp(n->attrs[a].name, "to")) return (kn_dtype)n->attrs[a].i;
        return KN_UNDEFINED;
    case KN_OP_Where: return n->n_inputs > 1 && n->inputs[1] >= 0 ? dt[n->inputs[1]] : KN_UNDEFINED;
    default: break;
    }
    /* type-preserving ops: the first input's type (elementwise, data movement, normalisations) */
    if (lowp_op(n->op) || n->op == KN_OP_Pow || n->op == KN_OP_Exp || n->op == KN_OP_Log || n->op == KN_OP_ReduceSum ||
        n->op == KN_OP_Reciprocal || n->op == KN_OP_Tile || n->op == KN_OP_Pad || n->op == KN_OP_Floor ||
        n->op == KN_OP_Ceil || n->op == KN_OP_BatchNormalization || n->op == KN_OP_ConvTranspose ||
        n->op == KN_OP_Resize || n->op == KN_OP_InstanceNormalization || n->op == KN_OP_ReduceSumSquare ||
        n->op == KN_OP_CumSum)
        return n->n_inputs > 0 && n->inputs[0] >= 0 ? dt[n->inputs[0]] : KN_UNDEFINED;
    return KN_UNDEFINED;
}

typedef struct lowp_state {
    kn_graph *g;
    kn_dtype lp;
    int *twin;       /* float32 value -> its low-precision twin, -1 none yet */
    int *orig;       /* low-precision value -> the float32 value it stands for, -1 */
    uint8_t *f32_ok; /* the float32 value itself is (or will be) computed */
    kn_dtype *dt;    /* element type of every value as the original graph has it */
    int cap;
} lowp_state;

static kn_status *lowp_grow(lowp_state *s) {
    if (s->g->n_values < s->cap) return NULL;
    int cap = s->g->n_values * 2 + 16;
    int *t = realloc(s->twin, sizeof(int) * (size_t)cap), *o = t ? realloc(s->orig, sizeof(int) * (size_t)cap) : NULL;
    if (t) s->twin = t;
    if (o) s->orig = o;
    uint8_t *f = o ? realloc(s->f32_ok, (size_t)cap) : NULL;
    if (f) s->f32_ok = f;
    kn_dtype *d = f ? realloc(s->dt, sizeof(kn_dtype) * (size_t)cap) : NULL;
    if (!d) return KN_OOM(cap);
    s->dt = d;
    for (int i = s->cap; i < cap; i++) {
        s->twin[i] = s->orig[i] = -1;
        s->f32_ok[i] = 0;
        s->dt[i] = KN_UNDEFINED;
    }
    s->cap = cap;
    return NULL;
}

/* A new value named after v with v's shape and element type t. */
static int lowp_value(lowp_state *s, int v, const char *suffix, kn_dtype t, kn_status **st) {
    char name[600];
    snprintf(name, sizeof name, "%s%s", s->g->values[v].name, suffix);
    int w = kn_graph_add_value(s->g, name);
    if (w < 0 || (*st = lowp_grow(s))) {
        if (!*st) *st = KN_OOM(0);
        return -1;
    }
    kn_value *val = &s->g->values[w];
    const kn_value *src = &s->g->values[v];
    kn_tensor_set_shape(&val->type, src->type.ndim, src->type.ndim >= 0 ? src->type.dims : NULL);
    val->type.dtype = t;
    for (int d = 0; d < src->type.ndim && d < KN_MAX_DIMS; d++) val->dim_names[d] = NULL;
    s->dt[w] = t;
    return w;
}

/* Cast node from -> to (an existing value id), element type t. */
static kn_status *lowp_cast_node(lowp_state *s, int from, int to, kn_dtype t) {
    kn_attr *a = calloc(1, sizeof *a);
    if (!a || !(a->name = strdup("to"))) {
        free(a);
        return KN_OOM(0);
    }
    a->type = KN_ATTR_INT;
    a->i = t;
    char name[600];
    snprintf(name, sizeof name, "%s:cast", s->g->values[to].name);
    if (kn_graph_add_node(s->g, name, "Cast", "", &from, 1, &to, 1, a, 1) < 0) {
        kn_attr_clear(a);
        free(a);
        return KN_OOM(0);
    }
    return NULL;
}

/* The low-precision twin of float32 value v: a converted constant, or a Cast of v. */
static kn_status *lowp_twin(lowp_state *s, int v, int *out) {
    if (s->twin[v] >= 0) {
        *out = s->twin[v];
        return NULL;
    }
    kn_status *st = NULL;
    int w = lowp_value(s, v, ":lowp", s->lp, &st);
    if (w < 0) return st;
    kn_value *val = &s->g->values[v];
    if (val->constant && val->constant->kind == KN_KIND_TENSOR) {
        const kn_tensor *c = val->constant;
        kn_tensor *h = NULL;
        KN_TRY(kn_tensor_new(s->lp, c->ndim, c->dims, &h));
        int64_t n = kn_numel(c);
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)h->data)[i] = kn_f32_to_lowp_sat(((const float *)c->data)[i], s->lp);
        s->g->values[w].constant = h;
        kn_tensor_set_shape(&s->g->values[w].type, c->ndim, c->dims);
    } else {
        KN_TRY(lowp_cast_node(s, v, w, s->lp));
    }
    s->twin[v] = w;
    s->orig[w] = v;
    *out = w;
    return NULL;
}

/* Float32 value v computed again from its twin (its producer moved to the low precision). */
static kn_status *lowp_need_f32(lowp_state *s, int v) {
    if (s->f32_ok[v]) return NULL;
    KN_TRY(lowp_cast_node(s, s->twin[v], v, KN_F32));
    s->f32_ok[v] = 1;
    return NULL;
}

kn_status *kn_graph_lower_precision(kn_graph *g, kn_dtype lp, const kn_backend *b, int *n_lowp) {
    if (n_lowp) *n_lowp = 0;
    KN_CHECK(lp == KN_F16 || lp == KN_BF16, KN_ERR_INVALID_ARGUMENT, "lower precision: %s is not float16/bfloat16",
             kn_dtype_name(lp));
    lowp_state s = {.g = g, .lp = lp};
    kn_status *st = lowp_grow(&s);
    int n_orig = g->n_nodes, moved = 0;
    for (int v = 0; !st && v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        s.dt[v] = val->constant ? val->constant->dtype : val->type.dtype;
        if (val->kind != KN_VAL_TENSOR && !val->constant) s.dt[v] = KN_UNDEFINED;
        s.f32_ok[v] = 1; /* until its producer moves */
    }
    for (int i = 0; !st && i < n_orig; i++) {
        kn_node *n = &g->nodes[i];
        bool any_f32 = false, unsure = false;
        for (int k = 0; k < n->n_inputs; k++) {
            int v = n->inputs[k];
            if (v < 0) continue;
            any_f32 |= s.dt[v] == KN_F32;
            unsure |= s.dt[v] == KN_UNDEFINED;
        }
        bool move = any_f32 && !unsure && n->op >= 0 && lowp_op(n->op) && b && b->kernel && b->kernel(b, n->op) &&
            n->n_implicit == 0;
        /* a node whose outputs are not all float32 (or unknown) is not type-preserving here */
        for (int k = 0; move && k < n->n_outputs; k++)
            if (n->outputs[k] >= 0 && out_dtype(g, n, k, s.dt) != KN_F32) move = false;
        if (!move) {
            for (int k = 0; k < n->n_inputs && !st; k++)
                if (n->inputs[k] >= 0 && s.dt[n->inputs[k]] == KN_F32) st = lowp_need_f32(&s, n->inputs[k]);
            n = &g->nodes[i];
            for (int k = 0; k < n->n_outputs; k++)
                if (n->outputs[k] >= 0) s.dt[n->outputs[k]] = out_dtype(g, n, k, s.dt);
            continue;
        }
        for (int k = 0; k < n->n_inputs && !st; k++) {
            int v = g->nodes[i].inputs[k], w = -1;
            if (v < 0 || s.dt[v] != KN_F32) continue;
            st = lowp_twin(&s, v, &w);
            if (!st) g->nodes[i].inputs[k] = w;
        }
        n = &g->nodes[i];
        for (int k = 0; k < n->n_outputs && !st; k++) {
            int v = n->outputs[k];
            if (v < 0) continue;
            s.dt[v] = KN_F32;
            int w = lowp_value(&s, v, ":lowp", lp, &st);
            if (w < 0) break;
            n = &g->nodes[i];
            n->outputs[k] = w;
            g->values[w].producer = i;
            g->values[v].producer = -1;
            s.twin[v] = w;
            s.orig[w] = v;
            s.f32_ok[v] = 0;
        }
        moved++;
    }
    /* graph outputs keep the model's declared float32 */
    for (int k = 0; k < g->n_outputs && !st; k++)
        if (g->outputs[k] >= 0) st = lowp_need_f32(&s, g->outputs[k]);
    /* control-flow bodies reading an outer float32 value need it computed */
    for (int i = 0; i < n_orig && !st; i++)
        for (int a = 0; a < g->nodes[i].n_attrs && !st; a++) {
            const kn_graph *body = g->nodes[i].attrs[a].g;
            for (int v = 0; body && v < body->n_values && !st; v++) {
                if (!body->values[v].is_outer) continue;
                int o = kn_graph_find_value(g, body->values[v].name);
                if (o >= 0 && o < s.cap && s.twin[o] >= 0 && s.orig[o] < 0) st = lowp_need_f32(&s, o);
            }
        }
    free(s.twin);
    free(s.orig);
    free(s.f32_ok);
    free(s.dt);
    KN_TRY(st);
    KN_TRY(kn_graph_toposort(g));
    KN_TRY(kn_graph_resolve_ops(g));
    if (n_lowp) *n_lowp = moved;
    return NULL;
}
