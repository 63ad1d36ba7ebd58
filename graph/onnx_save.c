/* Writing a model back as ONNX after fine-tuning: the original ModelProto is parsed and
 * re-serialised with the named initializers rewritten, and what training added to the graph
 * (graph/model.h: kn_onnx_write_options.ext, e.g. a pooling and classification head with its
 * new weights and outputs) appended, so every node, attribute, opset, metadata entry and
 * untouched weight stays as the file had it and ONNX Runtime reads the result like the
 * original. Weights go to an external data file when the source had one or when they would
 * break protobuf's 2 GiB limit; every file is replaced atomically. */
#include "graph/atomic_file.h"
#include "graph/onnx_internal.h"
#include "runtime/core/dtype.h"
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kn_status *read_all(const char *path, uint8_t **buf, size_t *len) {
    FILE *f = fopen(path, "rb");
    KN_CHECK(f, KN_ERR_IO, "%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *buf = n > 0 ? malloc((size_t)n) : NULL;
    bool ok = n > 0 && *buf && fread(*buf, 1, (size_t)n, f) == (size_t)n;
    fclose(f);
    if (!ok) {
        free(*buf);
        *buf = NULL;
        return kn_error(KN_ERR_IO, "%s: cannot read", path);
    }
    *len = (size_t)n;
    return NULL;
}

static kn_status *load_proto(const char *path, Onnx__ModelProto **out) {
    uint8_t *buf = NULL;
    size_t len = 0;
    KN_TRY(read_all(path, &buf, &len));
    Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, buf);
    free(buf);
    if (!mp || !mp->graph) {
        if (mp) onnx__model_proto__free_unpacked(mp, NULL);
        return kn_error(KN_ERR_INVALID_MODEL, "%s: not an ONNX ModelProto", path);
    }
    *out = mp;
    return NULL;
}

static void clear_external(Onnx__TensorProto *tp) {
    for (size_t i = 0; i < tp->n_external_data; i++)
        onnx__string_string_entry_proto__free_unpacked(tp->external_data[i], NULL);
    free(tp->external_data);
    tp->external_data = NULL;
    tp->n_external_data = 0;
    tp->has_data_location = 0;
    tp->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT;
}

/* tp holds t's values as raw data from now on, its other data fields and external data gone. */
static kn_status *set_tensor(Onnx__TensorProto *tp, const kn_tensor *t) {
    int64_t n = 1;
    for (size_t d = 0; d < tp->n_dims; d++) n *= tp->dims[d];
    KN_CHECK(n == kn_numel(t) && (int)tp->data_type == (int)t->dtype, KN_ERR_INVALID_ARGUMENT,
             "initializer '%s': the file has %lld elements of type %d, the new value %lld of type %d", tp->name,
             (long long)n, (int)tp->data_type, (long long)kn_numel(t), (int)t->dtype);
    size_t bytes = kn_nbytes(t);
    uint8_t *raw = malloc(bytes ? bytes : 1);
    if (!raw) return KN_OOM(bytes);
    if (bytes) memcpy(raw, t->data, bytes);
    free(tp->raw_data.data);
    tp->raw_data.data = raw;
    tp->raw_data.len = bytes;
    tp->has_raw_data = 1;
    free(tp->float_data);
    tp->float_data = NULL;
    tp->n_float_data = 0;
    free(tp->double_data);
    tp->double_data = NULL;
    tp->n_double_data = 0;
    clear_external(tp);
    return NULL;
}

/* ---- new messages, every field malloc'd so that free_unpacked releases them with the rest ---- */

static char *dup_s(const char *s) { return strdup(s ? s : ""); }

/* A new TensorProto holding a copy of t as raw data (numeric tensors only). */
static kn_status *tensor_pb(const char *name, const kn_tensor *t, Onnx__TensorProto **out) {
    KN_CHECK(t->dtype != KN_STRING && t->kind == KN_KIND_TENSOR, KN_ERR_UNSUPPORTED,
             "export: the new constant '%s' is not a numeric tensor", name);
    Onnx__TensorProto *tp = malloc(sizeof *tp);
    if (!tp) return KN_OOM(sizeof *tp);
    onnx__tensor_proto__init(tp);
    tp->name = dup_s(name);
    tp->has_data_type = 1;
    tp->data_type = (int32_t)t->dtype;
    tp->n_dims = (size_t)t->ndim;
    tp->dims = malloc(sizeof(int64_t) * (size_t)(t->ndim ? t->ndim : 1));
    size_t bytes = kn_nbytes(t);
    tp->raw_data.data = malloc(bytes ? bytes : 1);
    tp->raw_data.len = bytes;
    tp->has_raw_data = 1;
    if (!tp->name || !tp->dims || !tp->raw_data.data) {
        onnx__tensor_proto__free_unpacked(tp, NULL);
        return KN_OOM(bytes);
    }
    for (int d = 0; d < t->ndim; d++) tp->dims[d] = t->dims[d];
    if (bytes) memcpy(tp->raw_data.data, t->data, bytes);
    *out = tp;
    return NULL;
}

static kn_status *attr_pb(const kn_attr *a, Onnx__AttributeProto **out) {
    Onnx__AttributeProto *ap = malloc(sizeof *ap);
    if (!ap) return KN_OOM(sizeof *ap);
    onnx__attribute_proto__init(ap);
    ap->name = dup_s(a->name);
    ap->has_type = 1;
    ap->type = (Onnx__AttributeProto__AttributeType)a->type;
    kn_status *st = ap->name ? NULL : KN_OOM(0);
    switch (st ? KN_ATTR_UNDEFINED : a->type) {
    case KN_ATTR_UNDEFINED: break;
    case KN_ATTR_FLOAT:
        ap->has_f = 1;
        ap->f = a->f;
        break;
    case KN_ATTR_INT:
        ap->has_i = 1;
        ap->i = a->i;
        break;
    case KN_ATTR_STRING:
        ap->has_s = 1;
        ap->s.len = a->s_len;
        ap->s.data = malloc(a->s_len ? a->s_len : 1);
        if (!ap->s.data) st = KN_OOM(a->s_len);
        else if (a->s_len) memcpy(ap->s.data, a->s, a->s_len);
        break;
    case KN_ATTR_FLOATS:
        ap->n_floats = (size_t)a->n_floats;
        ap->floats = malloc(sizeof(float) * (size_t)(a->n_floats ? a->n_floats : 1));
        if (!ap->floats) st = KN_OOM(0);
        else if (a->n_floats) memcpy(ap->floats, a->floats, sizeof(float) * (size_t)a->n_floats);
        break;
    case KN_ATTR_INTS:
        ap->n_ints = (size_t)a->n_ints;
        ap->ints = malloc(sizeof(int64_t) * (size_t)(a->n_ints ? a->n_ints : 1));
        if (!ap->ints) st = KN_OOM(0);
        else if (a->n_ints) memcpy(ap->ints, a->ints, sizeof(int64_t) * (size_t)a->n_ints);
        break;
    case KN_ATTR_STRINGS:
        ap->strings = calloc((size_t)(a->n_strings ? a->n_strings : 1), sizeof *ap->strings);
        if (!ap->strings) st = KN_OOM(0);
        for (int i = 0; !st && i < a->n_strings; i++) {
            size_t n = strlen(a->strings[i]);
            ap->strings[i].data = malloc(n ? n : 1);
            if (!ap->strings[i].data) st = KN_OOM(n);
            else {
                memcpy(ap->strings[i].data, a->strings[i], n);
                ap->strings[i].len = n;
                ap->n_strings = (size_t)i + 1;
            }
        }
        break;
    case KN_ATTR_TENSOR: st = tensor_pb("", a->t, &ap->t); break;
    default:
        st = kn_error(KN_ERR_UNSUPPORTED, "export: attribute '%s' of type %d of an added node", a->name, (int)a->type);
    }
    if (st) {
        onnx__attribute_proto__free_unpacked(ap, NULL);
        return st;
    }
    *out = ap;
    return NULL;
}

static const char *vname(const kn_graph *g, int v) { return v >= 0 ? g->values[v].name : ""; }

static kn_status *node_pb(const kn_graph *g, const kn_node *n, Onnx__NodeProto **out) {
    Onnx__NodeProto *np = malloc(sizeof *np);
    if (!np) return KN_OOM(sizeof *np);
    onnx__node_proto__init(np);
    np->name = dup_s(n->name);
    np->op_type = dup_s(n->op_type);
    np->domain = dup_s(n->domain);
    np->input = calloc((size_t)n->n_inputs + 1, sizeof(char *));
    np->output = calloc((size_t)n->n_outputs + 1, sizeof(char *));
    np->attribute = calloc((size_t)n->n_attrs + 1, sizeof *np->attribute);
    kn_status *st =
        np->name && np->op_type && np->domain && np->input && np->output && np->attribute ? NULL : KN_OOM(0);
    for (int i = 0; !st && i < n->n_inputs - n->n_implicit; i++)
        if (!(np->input[np->n_input++] = dup_s(vname(g, n->inputs[i])))) st = KN_OOM(0);
    for (int i = 0; !st && i < n->n_outputs; i++)
        if (!(np->output[np->n_output++] = dup_s(vname(g, n->outputs[i])))) st = KN_OOM(0);
    for (int i = 0; !st && i < n->n_attrs; i++) {
        st = attr_pb(&n->attrs[i], &np->attribute[i]);
        if (!st) np->n_attribute++;
    }
    if (st) {
        onnx__node_proto__free_unpacked(np, NULL);
        return kn_error_wrap(st, "export: node '%s' (%s): ", n->name, n->op_type);
    }
    *out = np;
    return NULL;
}

static kn_status *value_info_pb(const kn_value *v, Onnx__ValueInfoProto **out) {
    Onnx__ValueInfoProto *vi = malloc(sizeof *vi);
    Onnx__TypeProto *tp = malloc(sizeof *tp);
    Onnx__TypeProto__Tensor *tt = malloc(sizeof *tt);
    Onnx__TensorShapeProto *sh = malloc(sizeof *sh);
    if (!vi || !tp || !tt || !sh) {
        free(vi);
        free(tp);
        free(tt);
        free(sh);
        return KN_OOM(sizeof *vi);
    }
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sh);
    vi->type = tp;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    tt->has_elem_type = 1;
    tt->elem_type = (int32_t)v->type.dtype;
    vi->name = dup_s(v->name);
    kn_status *st = vi->name ? NULL : KN_OOM(0);
    if (v->type.ndim >= 0) {
        tt->shape = sh;
        sh->dim = calloc((size_t)v->type.ndim + 1, sizeof *sh->dim);
        if (!sh->dim) st = KN_OOM(0);
        for (int d = 0; !st && d < v->type.ndim; d++) {
            Onnx__TensorShapeProto__Dimension *dm = malloc(sizeof *dm);
            if (!dm) {
                st = KN_OOM(sizeof *dm);
                break;
            }
            onnx__tensor_shape_proto__dimension__init(dm);
            sh->dim[sh->n_dim++] = dm;
            if (v->dim_names[d]) {
                dm->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
                if (!(dm->dim_param = strdup(v->dim_names[d]))) st = KN_OOM(0);
            } else if (v->type.dims[d] >= 0) {
                dm->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
                dm->dim_value = v->type.dims[d];
            }
        }
    } else free(sh);
    if (st) {
        onnx__value_info_proto__free_unpacked(vi, NULL);
        return st;
    }
    *out = vi;
    return NULL;
}

/* Appends item to the repeated field (*arr, *n) of pointers. */
static kn_status *push(void ***arr, size_t *n, void *item) {
    void **a = realloc(*arr, sizeof(void *) * (*n + 1));
    if (!a) return KN_OOM(sizeof(void *));
    *arr = a;
    a[(*n)++] = item;
    return NULL;
}
#define PUSH(arr, n, item) push((void ***)&(arr), &(n), (item))

static Onnx__TensorProto *find_init(Onnx__GraphProto *gp, const char *name) {
    for (size_t i = 0; i < gp->n_initializer; i++)
        if (gp->initializer[i]->name && !strcmp(gp->initializer[i]->name, name)) return gp->initializer[i];
    return NULL;
}

static bool has_info(Onnx__ValueInfoProto **vi, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (vi[i]->name && !strcmp(vi[i]->name, name)) return true;
    return false;
}

/* Adds ext's constants, nodes, inputs and outputs to gp; new-initializer values from o. */
static kn_status *add_ext(Onnx__GraphProto *gp, const kn_onnx_write_options *o) {
    const kn_graph *g = o->ext;
    for (int v = 0; v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        if (!val->constant || find_init(gp, val->name)) continue;
        const kn_tensor *t = val->constant;
        for (int k = 0; k < o->n; k++)
            if (!strcmp(o->names[k], val->name)) t = o->values[k];
        Onnx__TensorProto *tp = NULL;
        KN_TRY(tensor_pb(val->name, t, &tp));
        kn_status *st = PUSH(gp->initializer, gp->n_initializer, tp);
        if (st) {
            onnx__tensor_proto__free_unpacked(tp, NULL);
            return st;
        }
    }
    for (int i = 0; i < g->n_nodes; i++) {
        Onnx__NodeProto *np = NULL;
        KN_TRY(node_pb(g, &g->nodes[i], &np));
        kn_status *st = PUSH(gp->node, gp->n_node, np);
        if (st) {
            onnx__node_proto__free_unpacked(np, NULL);
            return st;
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        const int *ids = pass ? g->outputs : g->inputs;
        int n = pass ? g->n_outputs : g->n_inputs;
        for (int i = 0; i < n; i++) {
            const kn_value *val = &g->values[ids[i]];
            if (pass ? has_info(gp->output, gp->n_output, val->name) : has_info(gp->input, gp->n_input, val->name))
                continue;
            Onnx__ValueInfoProto *vi = NULL;
            KN_TRY(value_info_pb(val, &vi));
            kn_status *st = pass ? PUSH(gp->output, gp->n_output, vi) : PUSH(gp->input, gp->n_input, vi);
            if (st) {
                onnx__value_info_proto__free_unpacked(vi, NULL);
                return st;
            }
        }
    }
    return NULL;
}

/* ---- external data ---- */

static const char *ext_entry(const Onnx__TensorProto *tp, const char *key) {
    for (size_t i = 0; i < tp->n_external_data; i++)
        if (tp->external_data[i]->key && !strcmp(tp->external_data[i]->key, key)) return tp->external_data[i]->value;
    return NULL;
}

/* The bytes of an initializer that src keeps in an external file, read into its raw_data. */
static kn_status *read_external(Onnx__TensorProto *tp, const char *src_dir) {
    const char *loc = ext_entry(tp, "location"), *off = ext_entry(tp, "offset"), *len = ext_entry(tp, "length");
    KN_CHECK(loc && !strstr(loc, ".."), KN_ERR_INVALID_MODEL, "initializer '%s': bad external data location", tp->name);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", src_dir, loc);
    FILE *f = fopen(path, "rb");
    KN_CHECK(f, KN_ERR_IO, "initializer '%s': cannot open its external data %s", tp->name, path);
    long long o = off ? atoll(off) : 0, n = -1;
    if (len) n = atoll(len);
    else if (fseek(f, 0, SEEK_END) == 0) n = ftell(f) - o;
    uint8_t *buf = n >= 0 ? malloc(n ? (size_t)n : 1) : NULL;
    bool ok = buf && fseeko(f, (off_t)o, SEEK_SET) == 0 && fread(buf, 1, (size_t)n, f) == (size_t)n;
    fclose(f);
    if (!ok) {
        free(buf);
        return kn_error(KN_ERR_IO, "initializer '%s': cannot read %lld bytes at %lld of %s", tp->name, n, o, path);
    }
    clear_external(tp);
    free(tp->raw_data.data);
    tp->raw_data.data = buf;
    tp->raw_data.len = (size_t)n;
    tp->has_raw_data = 1;
    return NULL;
}

static kn_status *add_entry(Onnx__TensorProto *tp, const char *key, const char *value) {
    Onnx__StringStringEntryProto *e = malloc(sizeof *e);
    if (!e) return KN_OOM(sizeof *e);
    onnx__string_string_entry_proto__init(e);
    e->key = strdup(key);
    e->value = strdup(value);
    kn_status *st = e->key && e->value ? PUSH(tp->external_data, tp->n_external_data, e) : KN_OOM(0);
    if (st) onnx__string_string_entry_proto__free_unpacked(e, NULL);
    return st;
}

/* Moves every raw initializer of at least 1 KiB into df (location: data_name). */
static kn_status *externalize(Onnx__GraphProto *gp, kn_atomic_file *df, const char *data_name) {
    static const uint8_t zeros[64] = {0};
    for (size_t i = 0; i < gp->n_initializer; i++) {
        Onnx__TensorProto *tp = gp->initializer[i];
        if (!tp->has_raw_data || tp->raw_data.len < 1024) continue;
        size_t pad = (64 - kn_atomic_size(df) % 64) % 64;
        KN_TRY(kn_atomic_write(df, zeros, pad));
        size_t off = kn_atomic_size(df);
        KN_TRY(kn_atomic_write(df, tp->raw_data.data, tp->raw_data.len));
        char num[32];
        KN_TRY(add_entry(tp, "location", data_name));
        snprintf(num, sizeof num, "%zu", off);
        KN_TRY(add_entry(tp, "offset", num));
        snprintf(num, sizeof num, "%zu", tp->raw_data.len);
        KN_TRY(add_entry(tp, "length", num));
        tp->has_data_location = 1;
        tp->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
        free(tp->raw_data.data);
        tp->raw_data.data = NULL;
        tp->raw_data.len = 0;
        tp->has_raw_data = 0;
    }
    return NULL;
}

static kn_status *write_model(Onnx__ModelProto *mp, const char *src_path, const char *dst_path,
                              const kn_onnx_write_options *o) {
    Onnx__GraphProto *gp = mp->graph;
    bool had_external = false;
    for (size_t i = 0; i < gp->n_initializer; i++)
        had_external |= gp->initializer[i]->has_data_location &&
            gp->initializer[i]->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    for (int k = 0; k < o->n; k++) {
        Onnx__TensorProto *tp = find_init(gp, o->names[k]);
        bool in_ext = false;
        for (int v = 0; !tp && o->ext && v < o->ext->n_values; v++)
            in_ext |= o->ext->values[v].constant && !strcmp(o->ext->values[v].name, o->names[k]);
        if (tp) KN_TRY(set_tensor(tp, o->values[k]));
        else
            KN_CHECK(in_ext, KN_ERR_INVALID_ARGUMENT, "%s: no initializer '%s' in the main graph", src_path,
                     o->names[k]);
    }
    if (o->ext) KN_TRY(add_ext(gp, o));
    uint64_t total = 0;
    for (size_t i = 0; i < gp->n_initializer; i++) {
        const Onnx__TensorProto *tp = gp->initializer[i];
        const char *len = ext_entry(tp, "length");
        total += tp->has_raw_data ? tp->raw_data.len : len ? (uint64_t)atoll(len) : 0;
        total += tp->n_float_data * 4 + tp->n_double_data * 8 + tp->n_int64_data * 8 + tp->n_int32_data * 4;
    }
    int64_t threshold = o->external_threshold > 0 ? o->external_threshold : KN_ONNX_EXTERNAL_THRESHOLD;
    kn_atomic_file *df = NULL, *mf = NULL;
    if (had_external || total > (uint64_t)threshold) {
        char *s = strdup(src_path), *d = strdup(dst_path);
        kn_status *st = s && d ? NULL : KN_OOM(0);
        for (size_t i = 0; !st && i < gp->n_initializer; i++)
            if (gp->initializer[i]->has_data_location &&
                gp->initializer[i]->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
                st = read_external(gp->initializer[i], dirname(s));
        char data_path[4096], data_name[1024];
        if (!st) {
            snprintf(data_name, sizeof data_name, "%s.data", basename(d));
            snprintf(data_path, sizeof data_path, "%s.data", dst_path);
            st = kn_atomic_open(data_path, &df);
        }
        if (!st) st = externalize(gp, df, data_name);
        free(s);
        free(d);
        if (st) {
            kn_atomic_abort(df);
            return st;
        }
    }
    size_t size = onnx__model_proto__get_packed_size(mp);
    uint8_t *out = malloc(size ? size : 1);
    kn_status *st = out ? NULL : KN_OOM(size);
    if (!st) {
        onnx__model_proto__pack(mp, out);
        st = kn_atomic_open(dst_path, &mf);
    }
    if (!st) st = kn_atomic_write(mf, out, size);
    free(out);
    /* the data file first: the new model must never point into an old data file */
    if (!st && df) {
        st = kn_atomic_commit(df);
        df = NULL;
    }
    if (!st) {
        st = kn_atomic_commit(mf);
        mf = NULL;
    }
    kn_atomic_abort(df);
    kn_atomic_abort(mf);
    return st;
}

kn_status *kn_onnx_write(const char *src_path, const char *dst_path, const kn_onnx_write_options *o) {
    KN_CHECK(src_path && dst_path && o, KN_ERR_INVALID_ARGUMENT, "kn_onnx_write: NULL argument");
    Onnx__ModelProto *mp = NULL;
    KN_TRY(load_proto(src_path, &mp));
    kn_status *st = write_model(mp, src_path, dst_path, o);
    onnx__model_proto__free_unpacked(mp, NULL);
    return st;
}

kn_status *kn_onnx_write_with_initializers(const char *src_path, const char *dst_path, const char *const *names,
                                           const kn_tensor *const *values, int n) {
    kn_onnx_write_options o = {.names = names, .values = values, .n = n};
    return kn_onnx_write(src_path, dst_path, &o);
}

static kn_status *add_name(char ***arr, int *n, const char *s) {
    char **a = realloc(*arr, sizeof(char *) * (size_t)(*n + 1));
    if (!a) return KN_OOM(sizeof(char *));
    *arr = a;
    if (!(a[*n] = strdup(s ? s : ""))) return KN_OOM(0);
    (*n)++;
    return NULL;
}

kn_status *kn_onnx_graph_names(const char *path, char ***defined, int *n_defined, char ***outputs, int *n_outputs) {
    *defined = *outputs = NULL;
    *n_defined = *n_outputs = 0;
    Onnx__ModelProto *mp = NULL;
    KN_TRY(load_proto(path, &mp));
    const Onnx__GraphProto *gp = mp->graph;
    kn_status *st = NULL;
    for (size_t i = 0; !st && i < gp->n_input; i++) st = add_name(defined, n_defined, gp->input[i]->name);
    for (size_t i = 0; !st && i < gp->n_initializer; i++) st = add_name(defined, n_defined, gp->initializer[i]->name);
    for (size_t i = 0; !st && i < gp->n_node; i++)
        for (size_t k = 0; !st && k < gp->node[i]->n_output; k++)
            st = add_name(defined, n_defined, gp->node[i]->output[k]);
    for (size_t i = 0; !st && i < gp->n_output; i++) st = add_name(outputs, n_outputs, gp->output[i]->name);
    onnx__model_proto__free_unpacked(mp, NULL);
    return st;
}
