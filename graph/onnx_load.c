/* ONNX ModelProto -> kiln IR. The file is mapped and parsed with protobuf-c (after a cheap pass that
 * bounds message nesting, since protobuf-c recurses without limit); then each GraphProto becomes a
 * kn_graph: values by name, initializers as constants, typed inputs/outputs, nodes with converted
 * attributes and subgraphs. Names a subgraph uses from an enclosing graph become outer values there
 * and implicit inputs of the owning node. Calls of model-local functions are inlined with renamed
 * internals. Everything is validated: a bad file yields an error naming the file and the node or
 * tensor, never a crash or an allocation larger than the file justifies.
 *
 * Size limits: protobuf caps a message at 2 GB (protobuf-c reads a length-delimited field with a
 * 32-bit length), so a model whose weights exceed that must keep them as external data, which is
 * mapped, not parsed: external data files may be any size. Embedded raw_data buffers are taken
 * over from the parse rather than copied, so loading costs one copy of embedded weights. */
#include "graph/onnx_internal.h"
#include "graph/ops.h"
#include "runtime/core/dtype.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Newest IR and ai.onnx opset accepted: the IR of the onnx.proto this build was generated from,
 * and a few opsets beyond the newest kiln was written against (node->opset lets ops adapt). */
#define KN_ONNX_MAX_IR ((int64_t)ONNX__VERSION__IR_VERSION)
#define KN_ONNX_MAX_OPSET 32
/* Message nesting bound: a real model with several nested Loop/If bodies stays far below it. */
#define KN_PB_MAX_DEPTH 96
/* Function inlining bounds: recursion depth, and total nodes produced (a function calling another
 * twice at each of 30 levels must not expand to a billion nodes). */
#define KN_FN_MAX_DEPTH 32
#define KN_FN_MAX_NODES (1 << 22)

static const char *kn_s(const char *s) { return s ? s : ""; }
static const char *kn_dom(const char *d) { return d && strcmp(d, "ai.onnx") ? d : ""; }

/* ---- nesting bound on the raw protobuf ---- */

static bool kn_pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

/* Walks the wire format with the message descriptors and an explicit stack. Malformed input just
 * ends the walk: protobuf-c then reports it. */
static kn_status *kn_pb_check_nesting(const uint8_t *buf, size_t len, const ProtobufCMessageDescriptor *root) {
    struct {
        const ProtobufCMessageDescriptor *d;
        const uint8_t *end;
    } stk[KN_PB_MAX_DEPTH];
    int top = 0;
    stk[0].d = root;
    stk[0].end = buf + len;
    const uint8_t *p = buf;
    for (;;) {
        while (top >= 0 && p >= stk[top].end) {
            if (p > stk[top].end) return NULL;
            top--;
        }
        if (top < 0) return NULL;
        const uint8_t *end = stk[top].end;
        uint64_t tag, v;
        if (!kn_pb_varint(&p, end, &tag)) return NULL;
        switch (tag & 7) {
        case 0:
            if (!kn_pb_varint(&p, end, &v)) return NULL;
            break;
        case 1:
            if (end - p < 8) return NULL;
            p += 8;
            break;
        case 5:
            if (end - p < 4) return NULL;
            p += 4;
            break;
        case 2: {
            if (!kn_pb_varint(&p, end, &v) || v > (uint64_t)(end - p)) return NULL;
            const ProtobufCFieldDescriptor *f =
                tag >> 3 <= UINT_MAX ? protobuf_c_message_descriptor_get_field(stk[top].d, (unsigned)(tag >> 3)) : NULL;
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                if (top + 1 >= KN_PB_MAX_DEPTH)
                    return kn_error(KN_ERR_INVALID_MODEL, "messages nested more than %d deep", KN_PB_MAX_DEPTH);
                top++;
                stk[top].d = f->descriptor;
                stk[top].end = p + v;
            } else {
                p += v;
            }
            break;
        }
        default: return NULL;
        }
    }
}

/* ---- name -> value id map (open addressing; keys owned) ---- */

typedef struct {
    char *key;
    int id;
} kn_nm_slot;
typedef struct {
    kn_nm_slot *slots;
    size_t cap, n;
} kn_namemap;

static uint64_t kn_nm_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int kn_nm_get(const kn_namemap *m, const char *k) {
    if (!m->cap) return -1;
    for (size_t i = kn_nm_hash(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->slots[i].key) return -1;
        if (strcmp(m->slots[i].key, k) == 0) return m->slots[i].id;
    }
}

static bool kn_nm_put(kn_namemap *m, const char *k, int id) {
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        kn_nm_slot *s = calloc(cap, sizeof *s);
        if (!s) return false;
        for (size_t j = 0; j < m->cap; j++) {
            if (!m->slots[j].key) continue;
            size_t i = kn_nm_hash(m->slots[j].key) & (cap - 1);
            while (s[i].key) i = (i + 1) & (cap - 1);
            s[i] = m->slots[j];
        }
        free(m->slots);
        m->slots = s;
        m->cap = cap;
    }
    size_t i = kn_nm_hash(k) & (m->cap - 1);
    for (; m->slots[i].key; i = (i + 1) & (m->cap - 1))
        if (strcmp(m->slots[i].key, k) == 0) {
            m->slots[i].id = id;
            return true;
        }
    if (!(m->slots[i].key = strdup(k))) return false;
    m->slots[i].id = id;
    m->n++;
    return true;
}

static void kn_nm_free(kn_namemap *m) {
    for (size_t i = 0; i < m->cap; i++) free(m->slots[i].key);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* ---- load state, function calls and scopes ---- */

typedef struct kn_loader {
    kn_onnx_src src;
    Onnx__ModelProto *mp;
    const char **op_domains;
    int64_t *op_versions;
    size_t n_ops;       /* every opset_import, normalised */
    unsigned long uniq; /* numbers inlined calls so their internal names are unique */
    long inlined;       /* nodes produced by inlining so far */
} kn_loader;

typedef struct {
    const char *name;
    const Onnx__AttributeProto *ap;
} kn_attr_bind;

/* One inlined call of a model-local function: how its formal names map to the caller's, and its
 * bound attributes (call site first, then the function's defaults). */
typedef struct kn_fcall {
    const Onnx__FunctionProto *fp;
    char *prefix;
    char **actual_in, **actual_out;
    kn_attr_bind *attrs;
    size_t n_attrs;
    const struct kn_fcall *outer; /* the function this call sits in, if any */
    int depth;
} kn_fcall;

typedef struct kn_scope {
    kn_graph *g;
    kn_namemap names;
    struct kn_scope *parent;
    const kn_fcall *escape; /* a subgraph of a function-body node: names leaving it are renamed */
    const kn_fcall *fn;     /* innermost function whose attributes and opsets apply here */
} kn_scope;

/* Caller-namespace name for a name used inside fc's body; malloc'd. "" stays "" (omitted). */
static char *kn_fc_rename(const kn_fcall *fc, const char *name) {
    if (!fc || !*name) return strdup(name);
    for (size_t i = 0; i < fc->fp->n_input; i++)
        if (strcmp(kn_s(fc->fp->input[i]), name) == 0) return strdup(fc->actual_in[i]);
    for (size_t i = 0; i < fc->fp->n_output; i++)
        if (strcmp(kn_s(fc->fp->output[i]), name) == 0 && fc->actual_out[i][0]) return strdup(fc->actual_out[i]);
    size_t n = strlen(fc->prefix) + strlen(name) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s", fc->prefix, name);
    return s;
}

static const Onnx__AttributeProto *kn_fc_attr(const kn_fcall *fc, const char *name) {
    for (size_t i = 0; fc && i < fc->n_attrs; i++)
        if (strcmp(fc->attrs[i].name, name) == 0) return fc->attrs[i].ap;
    return NULL;
}

static int kn_opset_for(const kn_loader *L, const kn_fcall *fn, const char *domain) {
    const char *d = kn_dom(domain);
    if (fn)
        for (size_t i = 0; i < fn->fp->n_opset_import; i++)
            if (strcmp(kn_dom(fn->fp->opset_import[i]->domain), d) == 0) {
                int64_t v = fn->fp->opset_import[i]->version;
                return v > 0 && v <= INT_MAX ? (int)v : 0;
            }
    for (size_t i = 0; i < L->n_ops; i++)
        if (strcmp(L->op_domains[i], d) == 0) return (int)L->op_versions[i];
    return 0;
}

static const Onnx__FunctionProto *kn_find_function(const kn_loader *L, const Onnx__NodeProto *np) {
    for (size_t i = 0; i < L->mp->n_functions; i++) {
        const Onnx__FunctionProto *f = L->mp->functions[i];
        if (strcmp(kn_s(f->name), kn_s(np->op_type)) == 0 && strcmp(kn_dom(f->domain), kn_dom(np->domain)) == 0 &&
            strcmp(kn_s(f->overload), kn_s(np->overload)) == 0)
            return f;
    }
    return NULL;
}

/* ---- value types ---- */

static kn_status *kn_apply_tensor_type(kn_value *v, bool has_et, int et, const Onnx__TensorShapeProto *shape,
                                       bool strict) {
    if (has_et && et != 0 && !kn_dtype_valid(et)) {
        if (strict) return kn_error(KN_ERR_UNSUPPORTED, "value '%s' has unknown element type %d", v->name, et);
        return NULL;
    }
    if (shape && shape->n_dim > KN_MAX_DIMS) {
        if (strict)
            return kn_error(KN_ERR_UNSUPPORTED, "value '%s' has rank %zu (kiln supports up to %d)", v->name,
                            shape->n_dim, KN_MAX_DIMS);
        shape = NULL;
    }
    if (has_et) v->type.dtype = (kn_dtype)et;
    for (int d = 0; d < KN_MAX_DIMS; d++) {
        free(v->dim_names[d]);
        v->dim_names[d] = NULL;
    }
    if (!shape) {
        v->type.ndim = -1;
        return NULL;
    }
    v->type.ndim = (int)shape->n_dim;
    for (size_t d = 0; d < shape->n_dim; d++) {
        const Onnx__TensorShapeProto__Dimension *dim = shape->dim[d];
        v->type.dims[d] = -1;
        if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && dim->dim_value >= 0) {
            v->type.dims[d] = dim->dim_value;
        } else if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM && dim->dim_param &&
                   dim->dim_param[0]) {
            if (!(v->dim_names[d] = strdup(dim->dim_param))) return KN_OOM(0);
        }
    }
    return NULL;
}

/* A map's key type: ONNX allows the integer types and string. */
static kn_status *kn_apply_map_key(kn_value *v, const Onnx__TypeProto__Map *mt, bool strict) {
    int kt = mt->has_key_type ? mt->key_type : 0;
    bool ok = kt == KN_STRING || kt == KN_I8 || kt == KN_I16 || kt == KN_I32 || kt == KN_I64 || kt == KN_U8 ||
        kt == KN_U16 || kt == KN_U32 || kt == KN_U64;
    if (!ok && strict) return kn_error(KN_ERR_UNSUPPORTED, "map value '%s' has key type %d", v->name, kt);
    v->key_dtype = ok ? (kn_dtype)kt : KN_UNDEFINED;
    return NULL;
}

/* strict: an input/output of a graph, whose type kiln must be able to represent. */
static kn_status *kn_apply_type(kn_value *v, const Onnx__TypeProto *tp, bool strict) {
    if (!tp) return NULL;
    const Onnx__TypeProto *inner = NULL;
    switch (tp->value_case) {
    case ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE:
        v->kind = KN_VAL_TENSOR;
        return kn_apply_tensor_type(v, tp->tensor_type->has_elem_type, tp->tensor_type->elem_type,
                                    tp->tensor_type->shape, strict);
    case ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE:
        v->kind = KN_VAL_TENSOR;
        return kn_apply_tensor_type(v, tp->sparse_tensor_type->has_elem_type, tp->sparse_tensor_type->elem_type,
                                    tp->sparse_tensor_type->shape, strict);
    case ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE:
        v->kind = KN_VAL_SEQUENCE;
        v->elem_kind = KN_VAL_TENSOR;
        inner = tp->sequence_type->elem_type;
        if (inner && inner->value_case == ONNX__TYPE_PROTO__VALUE_MAP_TYPE) {
            v->elem_kind = KN_VAL_MAP;
            KN_TRY(kn_apply_map_key(v, inner->map_type, strict));
            inner = inner->map_type->value_type;
        }
        break;
    case ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE:
        v->kind = KN_VAL_OPTIONAL;
        inner = tp->optional_type->elem_type;
        v->elem_kind = KN_VAL_UNKNOWN;
        if (inner && inner->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE) v->elem_kind = KN_VAL_TENSOR;
        else if (inner && inner->value_case == ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE) {
            v->elem_kind = KN_VAL_SEQUENCE;
            inner = inner->sequence_type->elem_type;
        } else if (inner && inner->value_case == ONNX__TYPE_PROTO__VALUE_MAP_TYPE) {
            v->elem_kind = KN_VAL_MAP;
            KN_TRY(kn_apply_map_key(v, inner->map_type, strict));
            inner = inner->map_type->value_type;
        }
        break;
    case ONNX__TYPE_PROTO__VALUE_MAP_TYPE:
        v->kind = KN_VAL_MAP;
        v->elem_kind = KN_VAL_TENSOR;
        KN_TRY(kn_apply_map_key(v, tp->map_type, strict));
        inner = tp->map_type->value_type;
        break;
    case ONNX__TYPE_PROTO__VALUE_OPAQUE_TYPE: v->kind = KN_VAL_UNKNOWN; return NULL;
    default: return NULL;
    }
    /* Sequences and optionals describe their element tensor in v->type. */
    if (inner && inner->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE)
        return kn_apply_tensor_type(v, inner->tensor_type->has_elem_type, inner->tensor_type->elem_type,
                                    inner->tensor_type->shape, strict);
    return NULL;
}

static void kn_set_const_type(kn_value *v, const kn_tensor *t) {
    v->kind = KN_VAL_TENSOR;
    v->type.dtype = t->dtype;
    kn_tensor_set_shape(&v->type, t->ndim, t->dims);
}

/* ---- scopes ---- */

/* Finds name in s or an enclosing graph; a name from an enclosing graph becomes an outer value of
 * every scope in between. *id = -1 when nobody defines it. */
static kn_status *kn_scope_resolve(kn_scope *s, const char *name, int *id) {
    *id = kn_nm_get(&s->names, name);
    if (*id >= 0 || !s->parent) return NULL;
    char *pname = kn_fc_rename(s->escape, name);
    if (!pname) return KN_OOM(0);
    int pid;
    kn_status *st = kn_scope_resolve(s->parent, pname, &pid);
    if (st || pid < 0) {
        free(pname);
        return st;
    }
    /* Named as in the parent, so the executor can bind it by name. */
    int v = kn_graph_add_value(s->g, pname);
    free(pname);
    if (v < 0) return KN_OOM(0);
    kn_value *dst = &s->g->values[v];
    const kn_value *src = &s->parent->g->values[pid];
    dst->kind = src->kind;
    dst->elem_kind = src->elem_kind;
    dst->key_dtype = src->key_dtype;
    dst->type = src->type;
    dst->type.data = NULL;
    dst->type.owns = false;
    dst->is_outer = true;
    for (int d = 0; d < KN_MAX_DIMS; d++)
        if (src->dim_names[d] && !(dst->dim_names[d] = strdup(src->dim_names[d]))) return KN_OOM(0);
    if (!kn_nm_put(&s->names, name, v)) return KN_OOM(0);
    *id = v;
    return NULL;
}

/* A new value for a name defined in this scope; duplicates are errors (SSA). */
static kn_status *kn_scope_define(kn_scope *s, const char *name, int *id) {
    if (kn_nm_get(&s->names, name) >= 0) return kn_error(KN_ERR_INVALID_MODEL, "'%s' is defined more than once", name);
    *id = kn_graph_add_value(s->g, name);
    if (*id < 0 || !kn_nm_put(&s->names, name, *id)) return KN_OOM(0);
    return NULL;
}

static kn_status *kn_convert_graph(kn_loader *L, Onnx__GraphProto *gp, kn_scope *parent, const kn_fcall *escape,
                                   const kn_fcall *fn, int depth, kn_graph **out);

/* ---- attributes ---- */

static kn_attr_type kn_attr_guess_type(const Onnx__AttributeProto *a) {
    if (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED) return (kn_attr_type)a->type;
    /* IR version 1 had no type field: the value field that is present decides. */
    if (a->has_f) return KN_ATTR_FLOAT;
    if (a->has_i) return KN_ATTR_INT;
    if (a->has_s) return KN_ATTR_STRING;
    if (a->t) return KN_ATTR_TENSOR;
    if (a->g) return KN_ATTR_GRAPH;
    if (a->sparse_tensor) return KN_ATTR_SPARSE_TENSOR;
    if (a->tp) return KN_ATTR_TYPE_PROTO;
    if (a->n_floats) return KN_ATTR_FLOATS;
    if (a->n_ints) return KN_ATTR_INTS;
    if (a->n_strings) return KN_ATTR_STRINGS;
    if (a->n_tensors) return KN_ATTR_TENSORS;
    if (a->n_graphs) return KN_ATTR_GRAPHS;
    return KN_ATTR_UNDEFINED;
}

static int kn_tp_elem(const Onnx__TypeProto *tp) {
    return tp && tp->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE && tp->tensor_type->has_elem_type
        ? tp->tensor_type->elem_type
        : 0;
}

/* ap's value into *a under the given name. Subgraphs become children of scope s. */
static kn_status *kn_convert_attr(kn_loader *L, kn_scope *s, const kn_fcall *escape, const kn_fcall *fn, int depth,
                                  const Onnx__AttributeProto *ap, const char *name, kn_attr *a) {
    memset(a, 0, sizeof *a);
    if (!(a->name = strdup(name))) return KN_OOM(0);
    a->type = kn_attr_guess_type(ap);
    switch ((int)a->type) {
    case KN_ATTR_FLOAT: a->f = ap->f; return NULL;
    case KN_ATTR_INT: a->i = ap->i; return NULL;
    case KN_ATTR_STRING:
        if (!(a->s = malloc(ap->s.len + 1))) return KN_OOM(ap->s.len);
        if (ap->s.len) memcpy(a->s, ap->s.data, ap->s.len);
        a->s[ap->s.len] = 0;
        a->s_len = ap->s.len;
        return NULL;
    case KN_ATTR_FLOATS:
        if (ap->n_floats > INT_MAX) return kn_error(KN_ERR_UNSUPPORTED, "too many values");
        if (!(a->floats = malloc(sizeof(float) * (ap->n_floats ? ap->n_floats : 1)))) return KN_OOM(ap->n_floats);
        if (ap->n_floats) memcpy(a->floats, ap->floats, sizeof(float) * ap->n_floats);
        a->n_floats = (int)ap->n_floats;
        return NULL;
    case KN_ATTR_INTS:
        if (ap->n_ints > INT_MAX) return kn_error(KN_ERR_UNSUPPORTED, "too many values");
        if (!(a->ints = malloc(sizeof(int64_t) * (ap->n_ints ? ap->n_ints : 1)))) return KN_OOM(ap->n_ints);
        if (ap->n_ints) memcpy(a->ints, ap->ints, sizeof(int64_t) * ap->n_ints);
        a->n_ints = (int)ap->n_ints;
        return NULL;
    case KN_ATTR_STRINGS:
        if (ap->n_strings > INT_MAX) return kn_error(KN_ERR_UNSUPPORTED, "too many values");
        if (!(a->strings = calloc(ap->n_strings ? ap->n_strings : 1, sizeof(char *)))) return KN_OOM(ap->n_strings);
        a->n_strings = (int)ap->n_strings;
        for (size_t i = 0; i < ap->n_strings; i++) {
            if (!(a->strings[i] = malloc(ap->strings[i].len + 1))) return KN_OOM(ap->strings[i].len);
            if (ap->strings[i].len) memcpy(a->strings[i], ap->strings[i].data, ap->strings[i].len);
            a->strings[i][ap->strings[i].len] = 0;
        }
        return NULL;
    case KN_ATTR_TENSOR:
        if (!ap->t) return kn_error(KN_ERR_INVALID_MODEL, "tensor attribute has no tensor");
        return kn_onnx_tensor_from_pb(&L->src, ap->t, false, &a->t);
    case KN_ATTR_SPARSE_TENSOR:
        /* Kept as its dense equivalent: every consumer (Constant) wants the dense values. */
        if (!ap->sparse_tensor) return kn_error(KN_ERR_INVALID_MODEL, "sparse tensor attribute has no tensor");
        return kn_onnx_sparse_from_pb(&L->src, ap->sparse_tensor, &a->t);
    case KN_ATTR_TENSORS:
    case 12: { /* SPARSE_TENSORS, densified like SPARSE_TENSOR */
        bool sparse = a->type != KN_ATTR_TENSORS;
        size_t n = sparse ? ap->n_sparse_tensors : ap->n_tensors;
        if (n > INT_MAX) return kn_error(KN_ERR_UNSUPPORTED, "too many tensors");
        if (!(a->tensors = calloc(n ? n : 1, sizeof(kn_tensor *)))) return KN_OOM(n);
        a->n_tensors = (int)n;
        for (size_t i = 0; i < n; i++)
            KN_TRY(sparse ? kn_onnx_sparse_from_pb(&L->src, ap->sparse_tensors[i], &a->tensors[i])
                          : kn_onnx_tensor_from_pb(&L->src, ap->tensors[i], false, &a->tensors[i]));
        return NULL;
    }
    case KN_ATTR_GRAPH:
        if (!ap->g) return kn_error(KN_ERR_INVALID_MODEL, "graph attribute has no graph");
        return kn_convert_graph(L, ap->g, s, escape, fn, depth + 1, &a->g);
    case KN_ATTR_GRAPHS:
        /* kn_attr holds one graph; no standard op takes a list of graphs. */
        return kn_error(KN_ERR_UNSUPPORTED, "attributes holding a list of graphs are not supported");
    case KN_ATTR_TYPE_PROTO: a->tp_elem_type = kn_tp_elem(ap->tp); return NULL;
    case 14: /* TYPE_PROTOS: the element types, as ints */
        if (ap->n_type_protos > INT_MAX) return kn_error(KN_ERR_UNSUPPORTED, "too many values");
        if (!(a->ints = malloc(sizeof(int64_t) * (ap->n_type_protos ? ap->n_type_protos : 1)))) return KN_OOM(0);
        for (size_t i = 0; i < ap->n_type_protos; i++) a->ints[i] = kn_tp_elem(ap->type_protos[i]);
        a->n_ints = (int)ap->n_type_protos;
        return NULL;
    default: return kn_error(KN_ERR_INVALID_MODEL, "attribute has unknown type %d", (int)a->type);
    }
}

/* The value of a Constant node as a tensor (taken from its attribute), or NULL if it has none. */
static kn_status *kn_constant_tensor(kn_attr *a, kn_tensor **out) {
    *out = NULL;
    const char *n = a->name;
    if ((strcmp(n, "value") == 0 && a->type == KN_ATTR_TENSOR) ||
        (strcmp(n, "sparse_value") == 0 && a->type == KN_ATTR_SPARSE_TENSOR)) {
        *out = a->t;
        a->t = NULL;
        return NULL;
    }
    int64_t len;
    if (strcmp(n, "value_float") == 0 && a->type == KN_ATTR_FLOAT) {
        KN_TRY(kn_tensor_new(KN_F32, 0, NULL, out));
        *(float *)(*out)->data = a->f;
    } else if (strcmp(n, "value_int") == 0 && a->type == KN_ATTR_INT) {
        KN_TRY(kn_tensor_new(KN_I64, 0, NULL, out));
        *(int64_t *)(*out)->data = a->i;
    } else if (strcmp(n, "value_floats") == 0 && a->type == KN_ATTR_FLOATS) {
        len = a->n_floats;
        KN_TRY(kn_tensor_new(KN_F32, 1, &len, out));
        if (len) memcpy((*out)->data, a->floats, sizeof(float) * (size_t)len);
    } else if (strcmp(n, "value_ints") == 0 && a->type == KN_ATTR_INTS) {
        len = a->n_ints;
        KN_TRY(kn_tensor_new(KN_I64, 1, &len, out));
        if (len) memcpy((*out)->data, a->ints, sizeof(int64_t) * (size_t)len);
    } else if (strcmp(n, "value_string") == 0 && a->type == KN_ATTR_STRING) {
        KN_TRY(kn_tensor_new(KN_STRING, 0, NULL, out));
        ((char **)(*out)->data)[0] = a->s;
        a->s = NULL;
    } else if (strcmp(n, "value_strings") == 0 && a->type == KN_ATTR_STRINGS) {
        len = a->n_strings;
        KN_TRY(kn_tensor_new(KN_STRING, 1, &len, out));
        for (int i = 0; i < a->n_strings; i++) {
            ((char **)(*out)->data)[i] = a->strings[i];
            a->strings[i] = NULL;
        }
    }
    return NULL;
}

/* ---- nodes ---- */

static kn_status *kn_convert_nodes(kn_loader *L, kn_scope *s, Onnx__NodeProto **nodes, size_t n, const kn_fcall *fc,
                                   int depth);

static const char *kn_np_name(const Onnx__NodeProto *np) { return np->name && np->name[0] ? np->name : "<unnamed>"; }

/* First pass over a node list: every output gets its value, so inputs may refer to nodes listed
 * later (the topological sort comes after load) and subgraphs see the whole enclosing graph. */
static kn_status *kn_register_outputs(kn_scope *s, Onnx__NodeProto **nodes, size_t n, const kn_fcall *fc) {
    for (size_t i = 0; i < n; i++) {
        const Onnx__NodeProto *np = nodes[i];
        for (size_t o = 0; o < np->n_output; o++) {
            char *rn = kn_fc_rename(fc, kn_s(np->output[o]));
            if (!rn) return KN_OOM(0);
            bool skip = !rn[0];
            /* A function's formal outputs are the call's outputs, which the caller registered. */
            for (size_t k = 0; fc && !skip && k < fc->fp->n_output; k++)
                if (strcmp(fc->actual_out[k], rn) == 0) skip = true;
            int id;
            kn_status *st = skip ? NULL : kn_scope_define(s, rn, &id);
            free(rn);
            if (st) {
                if (st->code == KN_ERR_INVALID_MODEL)
                    return kn_error_wrap(st, "node '%s' (%s): duplicate output: ", kn_np_name(np), kn_s(np->op_type));
                return st;
            }
        }
    }
    return NULL;
}

static void kn_fcall_free(kn_fcall *c) {
    for (size_t i = 0; c->actual_in && i < c->fp->n_input; i++) free(c->actual_in[i]);
    for (size_t i = 0; c->actual_out && i < c->fp->n_output; i++) free(c->actual_out[i]);
    free(c->actual_in);
    free(c->actual_out);
    free(c->attrs);
    free(c->prefix);
}

static kn_status *kn_inline_call(kn_loader *L, kn_scope *s, const Onnx__NodeProto *np, const kn_fcall *fc,
                                 const Onnx__FunctionProto *fp, int depth) {
    const kn_fcall *actx = fc ? fc : s->fn;
    int fdepth = actx ? actx->depth + 1 : 1;
    for (const kn_fcall *f = actx; f; f = f->outer)
        if (f->fp == fp)
            return kn_error(KN_ERR_INVALID_MODEL, "function '%s' calls itself (recursion is not allowed)",
                            kn_s(fp->name));
    if (fdepth > KN_FN_MAX_DEPTH)
        return kn_error(KN_ERR_INVALID_MODEL, "functions nested more than %d deep", KN_FN_MAX_DEPTH);
    L->inlined += (long)fp->n_node;
    if (L->inlined > KN_FN_MAX_NODES)
        return kn_error(KN_ERR_UNSUPPORTED, "inlining model functions would produce more than %d nodes",
                        KN_FN_MAX_NODES);

    kn_fcall c = {.fp = fp, .outer = actx, .depth = fdepth};
    kn_status *st = NULL;
    size_t pl = strlen(kn_s(fp->name)) + 48;
    c.prefix = malloc(pl);
    c.actual_in = calloc(fp->n_input + 1, sizeof(char *));
    c.actual_out = calloc(fp->n_output + 1, sizeof(char *));
    c.attrs = calloc(np->n_attribute + fp->n_attribute_proto + 1, sizeof *c.attrs);
    if (!c.prefix || !c.actual_in || !c.actual_out || !c.attrs) {
        st = KN_OOM(0);
        goto done;
    }
    snprintf(c.prefix, pl, "%s/%lu/", kn_s(fp->name), L->uniq++);
    for (size_t i = 0; i < fp->n_input; i++)
        if (!(c.actual_in[i] = kn_fc_rename(fc, i < np->n_input ? kn_s(np->input[i]) : ""))) {
            st = KN_OOM(0);
            goto done;
        }
    for (size_t i = 0; i < fp->n_output; i++)
        if (!(c.actual_out[i] = kn_fc_rename(fc, i < np->n_output ? kn_s(np->output[i]) : ""))) {
            st = KN_OOM(0);
            goto done;
        }
    for (size_t i = 0; i < np->n_attribute; i++) {
        const Onnx__AttributeProto *ap = np->attribute[i];
        if (ap->ref_attr_name && ap->ref_attr_name[0]) ap = kn_fc_attr(actx, ap->ref_attr_name);
        if (ap) c.attrs[c.n_attrs++] = (kn_attr_bind){kn_s(np->attribute[i]->name), ap};
    }
    for (size_t i = 0; i < fp->n_attribute_proto; i++) {
        const Onnx__AttributeProto *ap = fp->attribute_proto[i];
        if (!kn_fc_attr(&c, kn_s(ap->name))) c.attrs[c.n_attrs++] = (kn_attr_bind){kn_s(ap->name), ap};
    }
    st = kn_register_outputs(s, fp->node, fp->n_node, &c);
    if (!st) st = kn_convert_nodes(L, s, fp->node, fp->n_node, &c, depth);
done:
    kn_fcall_free(&c);
    if (st) st = kn_error_wrap(st, "in function '%s': ", kn_s(fp->name));
    return st;
}

static bool kn_has_id(const int *ids, int n, int id) {
    for (int i = 0; i < n; i++)
        if (ids[i] == id) return true;
    return false;
}

/* One node of scope s whose names live in fc's namespace (NULL: s's own). */
static kn_status *kn_convert_node(kn_loader *L, kn_scope *s, Onnx__NodeProto *np, const kn_fcall *fc, int depth) {
    const char *op = kn_s(np->op_type);
    if (!*op) return kn_error(KN_ERR_INVALID_MODEL, "node '%s' has no op_type", kn_np_name(np));
    const Onnx__FunctionProto *fp = kn_find_function(L, np);
    if (fp) {
        kn_status *st = kn_inline_call(L, s, np, fc, fp, depth);
        return st ? kn_error_wrap(st, "node '%s' (%s): ", kn_np_name(np), op) : NULL;
    }
    const kn_fcall *actx = fc ? fc : s->fn;
    kn_status *st = NULL;
    kn_attr *attrs = calloc(np->n_attribute + 1, sizeof *attrs);
    int na = 0, n_in = 0, n_out = 0, n_impl = 0;
    int *ins = NULL, *outs = calloc(np->n_output + 1, sizeof(int));
    char *rn = NULL, *nname = NULL;
    if (!attrs || !outs) {
        st = KN_OOM(0);
        goto fail;
    }
    if (np->n_input > INT_MAX / 2 || np->n_output > INT_MAX / 2 || np->n_attribute > INT_MAX / 2) {
        st = kn_error(KN_ERR_UNSUPPORTED, "too many inputs, outputs or attributes");
        goto fail;
    }
    for (size_t i = 0; i < np->n_attribute; i++) {
        const Onnx__AttributeProto *ap = np->attribute[i];
        const char *aname = kn_s(ap->name);
        if (ap->ref_attr_name && ap->ref_attr_name[0]) {
            if (!actx) {
                st = kn_error(KN_ERR_INVALID_MODEL, "attribute '%s' refers to '%s' outside a function", aname,
                              ap->ref_attr_name);
                goto fail;
            }
            ap = kn_fc_attr(actx, ap->ref_attr_name);
            if (!ap) continue; /* not given at the call and no default: the attribute is absent */
        }
        st = kn_convert_attr(L, s, fc, actx, depth, ap, aname, &attrs[na]);
        na++;
        if (st) {
            st = kn_error_wrap(st, "attribute '%s': ", aname);
            goto fail;
        }
    }
    /* Explicit inputs, then outer values the subgraphs capture (implicit inputs). */
    int cap_in = (int)np->n_input + 1;
    for (int a = 0; a < na; a++)
        if (attrs[a].g) cap_in += attrs[a].g->n_values;
    if (!(ins = malloc(sizeof(int) * (size_t)cap_in))) {
        st = KN_OOM(0);
        goto fail;
    }
    for (size_t i = 0; i < np->n_input; i++) {
        const char *name = kn_s(np->input[i]);
        if (!(rn = kn_fc_rename(fc, name))) {
            st = KN_OOM(0);
            goto fail;
        }
        int id = -1;
        if (rn[0]) {
            if ((st = kn_scope_resolve(s, rn, &id))) goto fail;
            if (id < 0) {
                st = kn_error(KN_ERR_INVALID_MODEL, "input '%s' is not defined by any node, initializer or graph input",
                              name);
                goto fail;
            }
        }
        ins[n_in++] = id;
        free(rn);
        rn = NULL;
    }
    for (int a = 0; a < na; a++) {
        const kn_graph *sg = attrs[a].g;
        for (int v = 0; sg && v < sg->n_values; v++) {
            if (!sg->values[v].is_outer) continue;
            int id;
            if ((st = kn_scope_resolve(s, sg->values[v].name, &id))) goto fail;
            if (id < 0) {
                st = kn_error(KN_ERR_INVALID_MODEL, "subgraph captures unknown value '%s'", sg->values[v].name);
                goto fail;
            }
            if (!kn_has_id(ins + np->n_input, n_impl, id)) {
                ins[n_in++] = id;
                n_impl++;
            }
        }
    }
    for (size_t o = 0; o < np->n_output; o++) {
        if (!(rn = kn_fc_rename(fc, kn_s(np->output[o])))) {
            st = KN_OOM(0);
            goto fail;
        }
        outs[n_out++] = rn[0] ? kn_nm_get(&s->names, rn) : -1;
        free(rn);
        rn = NULL;
    }
    /* Constant nodes become initializers: their values are known at load. */
    if (strcmp(op, "Constant") == 0 && !kn_dom(np->domain)[0] && na == 1 && n_in == 0 && n_out == 1 && outs[0] >= 0 &&
        !s->g->values[outs[0]].constant) {
        kn_tensor *t = NULL;
        if ((st = kn_constant_tensor(&attrs[0], &t))) goto fail;
        if (t) {
            kn_value *v = &s->g->values[outs[0]];
            v->constant = t;
            kn_set_const_type(v, t);
            kn_attr_clear(&attrs[0]);
            free(attrs);
            free(ins);
            free(outs);
            return NULL;
        }
    }
    const char *name = np->name ? np->name : "";
    if (fc) {
        /* Inlined nodes get unique names too, for messages and profiles. */
        size_t nl = strlen(fc->prefix) + strlen(name) + strlen(op) + 1;
        if (!(nname = malloc(nl))) {
            st = KN_OOM(nl);
            goto fail;
        }
        snprintf(nname, nl, "%s%s", fc->prefix, name[0] ? name : op);
        name = nname;
    }
    int id = kn_graph_add_node(s->g, name, op, kn_dom(np->domain), ins, n_in, outs, n_out, attrs, na);
    free(nname);
    nname = NULL;
    if (id < 0) {
        st = KN_OOM(0);
        goto fail;
    }
    kn_node *node = &s->g->nodes[id];
    node->n_implicit = n_impl;
    node->op = kn_op_lookup(op, kn_dom(np->domain));
    node->opset = kn_opset_for(L, actx, np->domain);
    free(ins);
    free(outs);
    return NULL;
fail:
    for (int a = 0; a < na; a++) kn_attr_clear(&attrs[a]);
    free(attrs);
    free(ins);
    free(outs);
    free(rn);
    free(nname);
    return kn_error_wrap(st, "node '%s' (%s): ", kn_np_name(np), op);
}

static kn_status *kn_convert_nodes(kn_loader *L, kn_scope *s, Onnx__NodeProto **nodes, size_t n, const kn_fcall *fc,
                                   int depth) {
    for (size_t i = 0; i < n; i++) KN_TRY(kn_convert_node(L, s, nodes[i], fc, depth));
    return NULL;
}

/* ---- graphs ---- */

static kn_status *kn_graph_body(kn_loader *L, Onnx__GraphProto *gp, kn_scope *s, int depth) {
    kn_graph *g = s->g;
    /* Inside a function body the same subgraph proto is converted once per call: copy, don't steal. */
    bool steal = !s->fn && !s->escape;
    for (size_t i = 0; i < gp->n_initializer; i++) {
        Onnx__TensorProto *tp = gp->initializer[i];
        if (!tp->name || !tp->name[0]) return kn_error(KN_ERR_INVALID_MODEL, "initializer #%zu has no name", i);
        int id;
        kn_status *st = kn_scope_define(s, tp->name, &id);
        if (st) return kn_error_wrap(st, "initializer: ");
        kn_tensor *t;
        KN_TRY(kn_onnx_tensor_from_pb(&L->src, tp, steal, &t));
        g->values[id].constant = t;
        kn_set_const_type(&g->values[id], t);
    }
    for (size_t i = 0; i < gp->n_sparse_initializer; i++) {
        Onnx__SparseTensorProto *sp = gp->sparse_initializer[i];
        const char *name = sp->values ? kn_s(sp->values->name) : "";
        if (!name[0]) return kn_error(KN_ERR_INVALID_MODEL, "sparse initializer #%zu has no name", i);
        int id;
        kn_status *st = kn_scope_define(s, name, &id);
        if (st) return kn_error_wrap(st, "sparse initializer: ");
        kn_tensor *t;
        KN_TRY(kn_onnx_sparse_from_pb(&L->src, sp, &t));
        g->values[id].constant = t;
        kn_set_const_type(&g->values[id], t);
    }
    if (gp->n_input > INT_MAX || gp->n_output > INT_MAX)
        return kn_error(KN_ERR_UNSUPPORTED, "too many graph inputs or outputs");
    g->inputs = malloc(sizeof(int) * (gp->n_input + 1));
    g->outputs = malloc(sizeof(int) * (gp->n_output + 1));
    if (!g->inputs || !g->outputs) return KN_OOM(0);
    for (size_t i = 0; i < gp->n_input; i++) {
        const Onnx__ValueInfoProto *vi = gp->input[i];
        const char *name = kn_s(vi->name);
        if (!name[0]) return kn_error(KN_ERR_INVALID_MODEL, "graph input #%zu has no name", i);
        int id = kn_nm_get(&s->names, name);
        if (id >= 0 && g->values[id].constant) continue; /* IR < 4 lists initializers as inputs too */
        kn_status *st = kn_scope_define(s, name, &id);
        if (st) return kn_error_wrap(st, "graph input: ");
        g->values[id].is_input = true;
        g->inputs[g->n_inputs++] = id;
        st = kn_apply_type(&g->values[id], vi->type, true);
        if (st) return kn_error_wrap(st, "graph input '%s': ", name);
    }
    KN_TRY(kn_register_outputs(s, gp->node, gp->n_node, NULL));
    KN_TRY(kn_convert_nodes(L, s, gp->node, gp->n_node, NULL, depth));
    for (size_t i = 0; i < gp->n_output; i++) {
        const Onnx__ValueInfoProto *vi = gp->output[i];
        const char *name = kn_s(vi->name);
        int id = -1;
        if (name[0]) KN_TRY(kn_scope_resolve(s, name, &id));
        if (id < 0)
            return kn_error(KN_ERR_INVALID_MODEL, "graph output '%s' is not produced by any node, input or initializer",
                            name);
        kn_value *v = &g->values[id];
        v->is_output = true;
        g->outputs[g->n_outputs++] = id;
        if (!v->constant && !v->is_outer && !v->is_input) {
            kn_status *st = kn_apply_type(v, vi->type, true);
            if (st) return kn_error_wrap(st, "graph output '%s': ", name);
        }
    }
    for (size_t i = 0; i < gp->n_value_info; i++) {
        const Onnx__ValueInfoProto *vi = gp->value_info[i];
        int id = kn_nm_get(&s->names, kn_s(vi->name));
        if (id < 0) continue;
        kn_value *v = &g->values[id];
        /* Annotations of intermediates only refine what is not already known better. */
        if (!v->constant && !v->is_input && !v->is_output && !v->is_outer) KN_TRY(kn_apply_type(v, vi->type, false));
    }
    return NULL;
}

static kn_status *kn_convert_graph(kn_loader *L, Onnx__GraphProto *gp, kn_scope *parent, const kn_fcall *escape,
                                   const kn_fcall *fn, int depth, kn_graph **out) {
    *out = NULL;
    if (depth > KN_PB_MAX_DEPTH)
        return kn_error(KN_ERR_INVALID_MODEL, "subgraphs nested more than %d deep", KN_PB_MAX_DEPTH);
    kn_graph *g = kn_graph_new(kn_s(gp->name));
    if (!g) return KN_OOM(0);
    g->parent = parent ? parent->g : NULL;
    /* graph->opsets holds 8 imports; node->opset is exact whatever the count. */
    for (size_t i = 0; i < L->n_ops && g->n_opsets < 8; i++) {
        if (!(g->opset_domains[g->n_opsets] = strdup(L->op_domains[i]))) {
            kn_graph_free(g);
            return KN_OOM(0);
        }
        g->opsets[g->n_opsets++] = (int)L->op_versions[i];
    }
    kn_scope s = {.g = g, .parent = parent, .escape = escape, .fn = fn};
    kn_status *st = kn_graph_body(L, gp, &s, depth);
    kn_nm_free(&s.names);
    if (st) {
        kn_graph_free(g);
        return parent ? kn_error_wrap(st, "in subgraph '%s': ", kn_s(gp->name)) : st;
    }
    *out = g;
    return NULL;
}

/* ---- model ---- */

static kn_status *kn_model_opsets(kn_loader *L, const Onnx__ModelProto *mp) {
    size_t n = mp->n_opset_import;
    L->op_domains = calloc(n + 1, sizeof(char *));
    L->op_versions = calloc(n + 1, sizeof(int64_t));
    if (!L->op_domains || !L->op_versions) return KN_OOM(0);
    for (size_t i = 0; i < n; i++) {
        const Onnx__OperatorSetIdProto *o = mp->opset_import[i];
        const char *d = kn_dom(o->domain);
        int64_t v = o->has_version ? o->version : 0;
        bool seen = false;
        for (size_t k = 0; k < L->n_ops; k++) {
            if (strcmp(L->op_domains[k], d) != 0) continue;
            /* "" and "ai.onnx" both listed is harmless when they agree. */
            if (L->op_versions[k] != v)
                return kn_error(KN_ERR_INVALID_MODEL, "domain '%s' is imported at two opset versions (%lld and %lld)",
                                d[0] ? d : "ai.onnx", (long long)L->op_versions[k], (long long)v);
            seen = true;
        }
        if (seen) continue;
        if (v < 1 || v > INT_MAX)
            return kn_error(KN_ERR_INVALID_MODEL, "opset import of domain '%s' has invalid version %lld",
                            d[0] ? d : "ai.onnx", (long long)v);
        if (!d[0] && v > KN_ONNX_MAX_OPSET)
            return kn_error(KN_ERR_UNSUPPORTED, "ai.onnx opset %lld is newer than kiln supports (up to %d)",
                            (long long)v, KN_ONNX_MAX_OPSET);
        L->op_domains[L->n_ops] = d;
        L->op_versions[L->n_ops++] = v;
    }
    /* Before IR 3 there were no opset imports: such models are ai.onnx opset 1. */
    if (n == 0 && mp->ir_version < 3) {
        L->op_domains[0] = "";
        L->op_versions[0] = 1;
        L->n_ops = 1;
    }
    return NULL;
}

static char *kn_dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static kn_status *kn_load_proto(kn_loader *L, Onnx__ModelProto *mp, kn_model *m) {
    if (!mp->has_ir_version || mp->ir_version < 1) return kn_error(KN_ERR_INVALID_MODEL, "model has no ir_version");
    if (mp->ir_version > KN_ONNX_MAX_IR)
        return kn_error(KN_ERR_UNSUPPORTED, "IR version %lld is newer than kiln supports (up to %lld)",
                        (long long)mp->ir_version, (long long)KN_ONNX_MAX_IR);
    if (!mp->graph) return kn_error(KN_ERR_INVALID_MODEL, "model has no graph");
    KN_TRY(kn_model_opsets(L, mp));
    m->ir_version = mp->ir_version;
    m->model_version = mp->has_model_version ? mp->model_version : 0;
    m->producer_name = kn_dup_or_null(mp->producer_name);
    m->producer_version = kn_dup_or_null(mp->producer_version);
    m->domain = kn_dup_or_null(mp->domain);
    m->doc_string = kn_dup_or_null(mp->doc_string);
    if ((mp->producer_name && !m->producer_name) || (mp->producer_version && !m->producer_version) ||
        (mp->domain && !m->domain) || (mp->doc_string && !m->doc_string))
        return KN_OOM(0);
    return kn_convert_graph(L, mp->graph, NULL, NULL, NULL, 0, &m->graph);
}

void kn_model_release(kn_model *m) {
    if (!m) return;
    /* device backends cache uploaded initializers by host address: drop them before it is reused */
    if (m->graph)
        for (int v = 0; v < m->graph->n_values; v++)
            if (m->graph->values[v].constant && m->graph->values[v].constant->data)
                kn_backends_forget(m->graph->values[v].constant->data);
    for (int k = 0; k < m->n_variants; k++) {
        kn_graph *vg = m->variants[k].graph;
        /* constants a fusion made belong to the variant (the others are views of m->graph's) */
        for (int v = 0; v < vg->n_values; v++)
            if (vg->values[v].constant && vg->values[v].constant->owns && vg->values[v].constant->data)
                kn_backends_forget(vg->values[v].constant->data);
        kn_graph_free(vg);
    }
    pthread_mutex_destroy(&m->variants_mu);
    kn_graph_free(m->graph);
    for (int i = 0; i < m->n_maps; i++)
        if (m->maps[i]) munmap(m->maps[i], m->map_lens[i]);
    free(m->maps);
    free(m->map_lens);
    free(m->producer_name);
    free(m->producer_version);
    free(m->domain);
    free(m->doc_string);
    free(m->path);
    free(m);
}

static kn_status *kn_load_bytes(const uint8_t *data, size_t size, const char *file, const char *base_dir,
                                const char *path, kn_model **out) {
    *out = NULL;
    if (size == 0) return kn_error(KN_ERR_INVALID_MODEL, "%s: the model is empty", file);
    kn_status *st = kn_pb_check_nesting(data, size, &onnx__model_proto__descriptor);
    if (st) return kn_error_wrap(st, "%s: not a usable ONNX model: ", file);
    Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, size, data);
    if (!mp) return kn_error(KN_ERR_INVALID_MODEL, "%s: not a valid ONNX model (protobuf parse failed)", file);
    kn_model *m = calloc(1, sizeof *m);
    if (!m) {
        onnx__model_proto__free_unpacked(mp, NULL);
        return KN_OOM(sizeof *m);
    }
    pthread_mutex_init(&m->variants_mu, NULL);
    kn_loader L = {.src = {.file = file, .base_dir = base_dir, .m = m}, .mp = mp};
    if (path && !(m->path = strdup(path))) st = KN_OOM(0);
    if (!st) st = kn_load_proto(&L, mp, m);
    kn_onnx_src_release(&L.src);
    free(L.op_domains);
    free(L.op_versions);
    onnx__model_proto__free_unpacked(mp, NULL);
    if (st) {
        kn_model_release(m);
        return kn_error_wrap(st, "%s: ", file);
    }
    *out = m;
    return NULL;
}

kn_status *kn_onnx_load_file(const char *path, kn_model **out) {
    *out = NULL;
    void *p;
    size_t len;
    char *dir;
    KN_TRY(kn_onnx_map_file(path, &p, &len, &dir));
    if (len == 0) {
        kn_onnx_unmap_file(p, len, dir);
        return kn_error(KN_ERR_INVALID_MODEL, "%s: the file is empty", path);
    }
    /* The parse copies what it keeps, so the mapping only lives for the load. */
    kn_status *st = kn_load_bytes(p, len, path, dir, path, out);
    kn_onnx_unmap_file(p, len, dir);
    return st;
}

kn_status *kn_onnx_load_buffer(const void *data, size_t size, const char *base_dir, kn_model **out) {
    *out = NULL;
    if (!data && size) return kn_error(KN_ERR_INVALID_ARGUMENT, "model buffer is NULL");
    return kn_load_bytes(data, size, "<buffer>", base_dir, NULL, out);
}

/* kn_model_load / kn_model_load_buffer / kn_model_free (runtime/session.c) wrap these and then
 * optimise the graph. */
