/* Unit tests for the ONNX loader and TensorProto files: models written by
 * tests/gen_loader_fixtures.py (run at test time into a temporary directory) are loaded and the IR
 * checked field by field; broken, truncated, random and bit-flipped models must give an error
 * status with a message naming the file and the culprit, never a crash. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "graph/model.h"
#include "graph/ops.h"
#include "graph/passes.h"
#include "runtime/kiln.h"
#include "tests/unit/harness.h"
#include <check.h>
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[512]; /* fixtures written by the generator */
static char g_src[512]; /* repository root */

static const char *fx(const char *name) {
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/%s", g_dir, name);
    return buf;
}

static kn_model *load_ok(const char *name) {
    kn_model *m = NULL;
    kn_status *st = kn_onnx_load_file(fx(name), &m);
    if (st) fprintf(stderr, "%s\n", kn_status_message(st));
    ck_assert_ptr_null(st);
    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_nonnull(m->graph);
    return m;
}

static const kn_value *val(const kn_graph *g, const char *name) {
    int id = kn_graph_find_value(g, name);
    ck_assert_msg(id >= 0, "value '%s' missing", name);
    return &g->values[id];
}

static const kn_node *node_named(const kn_graph *g, const char *name) {
    for (int i = 0; i < g->n_nodes; i++)
        if (strcmp(g->nodes[i].name, name) == 0) return &g->nodes[i];
    ck_abort_msg("node '%s' missing", name);
    return NULL;
}

static int count_op(const kn_graph *g, const char *op) {
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++) n += strcmp(g->nodes[i].op_type, op) == 0;
    return n;
}

static const kn_tensor *cst(const kn_graph *g, const char *name, kn_dtype dt, int ndim) {
    const kn_value *v = val(g, name);
    ck_assert_msg(v->constant != NULL, "value '%s' is not a constant", name);
    ck_assert_int_eq(v->constant->dtype, dt);
    ck_assert_int_eq(v->constant->ndim, ndim);
    ck_assert_int_eq(v->type.dtype, dt);
    return v->constant;
}

/* ---- dtypes ---- */

static void check_dtypes(const kn_graph *g) {
    const kn_tensor *t;
    t = cst(g, "t_float", KN_F32, 1);
    ck_assert(((float *)t->data)[0] == 1.5f && ((float *)t->data)[1] == -2.25f && ((float *)t->data)[2] == 3.0f);
    t = cst(g, "t_uint8", KN_U8, 1);
    ck_assert(((uint8_t *)t->data)[1] == 255 && ((uint8_t *)t->data)[2] == 7);
    t = cst(g, "t_int8", KN_I8, 1);
    ck_assert(((int8_t *)t->data)[0] == -128 && ((int8_t *)t->data)[1] == 127 && ((int8_t *)t->data)[2] == -1);
    t = cst(g, "t_uint16", KN_U16, 1);
    ck_assert(((uint16_t *)t->data)[1] == 65535 && ((uint16_t *)t->data)[2] == 300);
    t = cst(g, "t_int16", KN_I16, 1);
    ck_assert(((int16_t *)t->data)[0] == -32768 && ((int16_t *)t->data)[2] == -2);
    t = cst(g, "t_int32", KN_I32, 1);
    ck_assert(((int32_t *)t->data)[0] == INT32_MIN && ((int32_t *)t->data)[1] == INT32_MAX);
    t = cst(g, "t_int64", KN_I64, 1);
    ck_assert(((int64_t *)t->data)[0] == INT64_MIN && ((int64_t *)t->data)[1] == INT64_MAX &&
              ((int64_t *)t->data)[2] == 6);
    t = cst(g, "t_string", KN_STRING, 1);
    ck_assert_str_eq(((char **)t->data)[0], "a");
    ck_assert_str_eq(((char **)t->data)[1], "");
    ck_assert_str_eq(((char **)t->data)[2], "h\xc3\xa9llo");
    t = cst(g, "t_bool", KN_BOOL, 1);
    ck_assert(((uint8_t *)t->data)[0] == 1 && ((uint8_t *)t->data)[1] == 0 && ((uint8_t *)t->data)[2] == 1);
    t = cst(g, "t_float16", KN_F16, 1);
    ck_assert(((uint16_t *)t->data)[0] == 0x3C00 && ((uint16_t *)t->data)[1] == 0xC000 &&
              ((uint16_t *)t->data)[2] == 0x3800);
    t = cst(g, "t_double", KN_F64, 1);
    ck_assert(((double *)t->data)[0] == 1e300 && ((double *)t->data)[1] == -0.5);
    t = cst(g, "t_uint32", KN_U32, 1);
    ck_assert(((uint32_t *)t->data)[1] == UINT32_MAX && ((uint32_t *)t->data)[2] == 9);
    t = cst(g, "t_uint64", KN_U64, 1);
    ck_assert(((uint64_t *)t->data)[1] == UINT64_MAX && ((uint64_t *)t->data)[2] == 10);
    t = cst(g, "t_complex64", KN_C64, 1);
    ck_assert_int_eq(t->dims[0], 2);
    ck_assert(((float *)t->data)[0] == 1 && ((float *)t->data)[1] == 2 && ((float *)t->data)[2] == 3 &&
              ((float *)t->data)[3] == -4);
    t = cst(g, "t_complex128", KN_C128, 1);
    ck_assert(((double *)t->data)[0] == 1 && ((double *)t->data)[1] == 2);
    t = cst(g, "t_bfloat16", KN_BF16, 1);
    ck_assert(((uint16_t *)t->data)[0] == 0x3F80 && ((uint16_t *)t->data)[1] == 0xC000 &&
              ((uint16_t *)t->data)[2] == 0x3F00);
    static const struct {
        const char *name;
        kn_dtype dt;
        uint8_t bits[3];
    } f8[] = {
        {"t_float8e4m3fn", KN_F8E4M3FN, {0x38, 0xC0, 0x30}}, {"t_float8e4m3fnuz", KN_F8E4M3FNUZ, {0x40, 0xC8, 0x38}},
        {"t_float8e5m2", KN_F8E5M2, {0x3C, 0xC0, 0x38}},     {"t_float8e5m2fnuz", KN_F8E5M2FNUZ, {0x40, 0xC4, 0x3C}},
        {"t_float8e8m0", KN_F8E8M0, {0x7F, 0x80, 0x7E}},
    };
    for (size_t i = 0; i < sizeof f8 / sizeof f8[0]; i++) {
        t = cst(g, f8[i].name, f8[i].dt, 1);
        ck_assert_msg(memcmp(t->data, f8[i].bits, 3) == 0, "%s bits differ", f8[i].name);
    }
    /* Sub-byte types: unpacked to one element per byte, signed ones sign-extended. */
    static const struct {
        const char *name;
        kn_dtype dt;
        int8_t v[5];
    } sub[] = {
        {"t_uint4", KN_U4, {0, 15, 7, 1, 9}},           {"t_int4", KN_I4, {-8, 7, -1, 0, 3}},
        {"t_float4e2m1", KN_F4E2M1, {2, 0xC, 1, 7, 0}}, {"t_uint2", KN_U2, {0, 1, 2, 3, 3}},
        {"t_int2", KN_I2, {-2, -1, 0, 1, 1}},
    };
    for (size_t i = 0; i < sizeof sub / sizeof sub[0]; i++) {
        t = cst(g, sub[i].name, sub[i].dt, 1);
        ck_assert_int_eq(t->dims[0], 5);
        ck_assert_msg(memcmp(t->data, sub[i].v, 5) == 0, "%s unpacked wrongly", sub[i].name);
    }
    t = cst(g, "t_empty", KN_F32, 2);
    ck_assert(t->dims[0] == 0 && t->dims[1] == 4 && kn_numel(t) == 0);
    t = cst(g, "t_scalar", KN_I64, 0);
    ck_assert_int_eq(((int64_t *)t->data)[0], 42);
    ck_assert_int_eq(g->n_inputs, 0);
    ck_assert_int_eq(g->n_outputs, 28);
}

START_TEST(typed_field_initializers) {
    kn_model *m = load_ok("typed.onnx");
    ck_assert_int_eq(m->ir_version, 11);
    check_dtypes(m->graph);
    kn_model_release(m);
}
END_TEST

START_TEST(raw_data_initializers) {
    kn_model *m = load_ok("raw.onnx");
    check_dtypes(m->graph);
    kn_model_release(m);
}
END_TEST

/* ---- external data ---- */

static bool in_map(const kn_model *m, const void *p) {
    for (int i = 0; i < m->n_maps; i++)
        if ((const char *)p >= (const char *)m->maps[i] && (const char *)p < (const char *)m->maps[i] + m->map_lens[i])
            return true;
    return false;
}

START_TEST(external_data) {
    kn_model *m = load_ok("external.onnx");
    const kn_graph *g = m->graph;
    ck_assert_int_eq(m->n_maps, 1); /* one file, mapped once for all four tensors */
    const kn_tensor *w1 = cst(g, "W1", KN_F32, 2);
    ck_assert(!w1->owns && in_map(m, w1->data));
    for (int i = 0; i < 6; i++) ck_assert(((float *)w1->data)[i] == (float)i + 0.5f);
    const kn_tensor *w2 = cst(g, "W2", KN_I64, 1);
    ck_assert(!w2->owns && in_map(m, w2->data));
    ck_assert(((int64_t *)w2->data)[1] == -20 && ((int64_t *)w2->data)[3] == -40);
    const kn_tensor *w3 = cst(g, "W3", KN_F16, 1); /* odd offset: copied */
    ck_assert(w3->owns && !in_map(m, w3->data));
    ck_assert(((uint16_t *)w3->data)[0] == 0x3C00 && ((uint16_t *)w3->data)[1] == 0xC000 &&
              ((uint16_t *)w3->data)[2] == 0x3800);
    const kn_tensor *w4 = cst(g, "W4", KN_I4, 1);
    ck_assert(((int8_t *)w4->data)[0] == -8 && ((int8_t *)w4->data)[1] == 7 && ((int8_t *)w4->data)[2] == -1);
    ck_assert_int_eq(g->n_inputs, 1);
    ck_assert_str_eq(g->values[g->inputs[0]].name, "X");
    kn_model_release(m);

    /* From a buffer: external data resolves against base_dir, and is refused without one. */
    FILE *f = fopen(fx("external.onnx"), "rb");
    ck_assert_ptr_nonnull(f);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    ck_assert(n > 0 && n < sizeof buf);
    ck_assert_ptr_null(kn_onnx_load_buffer(buf, n, g_dir, &m));
    ck_assert(((float *)cst(m->graph, "W1", KN_F32, 2)->data)[5] == 5.5f);
    kn_model_release(m);
    kn_status *st = kn_onnx_load_buffer(buf, n, NULL, &m);
    ck_assert_ptr_nonnull(st);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(kn_status_message(st), "W1"));
    kn_status_free(st);
}
END_TEST

/* ---- model-local functions ---- */

static float scale_of(const kn_graph *g, const char *out) {
    const kn_value *v = val(g, out);
    ck_assert_int_ge(v->producer, 0);
    const kn_node *mul = &g->nodes[v->producer];
    ck_assert_str_eq(mul->op_type, "Mul");
    const kn_value *s = &g->values[mul->inputs[1]];
    ck_assert_ptr_nonnull(s->constant);
    ck_assert_int_eq(s->constant->dtype, KN_F32);
    return *(float *)s->constant->data;
}

START_TEST(function_inlining) {
    kn_model *m = load_ok("function.onnx");
    const kn_graph *g = m->graph;
    ck_assert_int_eq(count_op(g, "AddScale"), 0);
    ck_assert_int_eq(count_op(g, "Twice"), 0);
    ck_assert_int_eq(count_op(g, "Add"), 3);
    ck_assert_int_eq(count_op(g, "Mul"), 3);
    ck_assert_int_eq(count_op(g, "Constant"), 0); /* became initializers */
    ck_assert(scale_of(g, "Z1") == 2.0f);         /* given at the call */
    ck_assert(scale_of(g, "Z2") == 0.5f);         /* the function's default */
    ck_assert(scale_of(g, "Z3") == 3.0f);         /* passed through Twice's beta */
    int x = kn_graph_find_value(g, "X"), y = kn_graph_find_value(g, "Y");
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        ck_assert_int_eq(n->opset, 14); /* the function's own opset import */
        ck_assert_str_eq(n->domain, "");
        ck_assert_int_eq(n->op, kn_op_lookup(n->op_type, ""));
        if (strcmp(n->op_type, "Add") == 0) {
            ck_assert_int_eq(n->inputs[0], x);
            ck_assert(n->inputs[1] == y || n->inputs[1] == x);
        }
    }
    /* Internal names are unique across the three expansions. */
    for (int i = 0; i < g->n_values; i++)
        for (int j = i + 1; j < g->n_values; j++) ck_assert_str_ne(g->values[i].name, g->values[j].name);
    ck_assert_int_eq(g->n_outputs, 3);
    kn_model_release(m);
}
END_TEST

START_TEST(function_with_subgraph) {
    kn_model *m = load_ok("function_subgraph.onnx");
    const kn_graph *g = m->graph;
    ck_assert_int_eq(g->n_nodes, 1);
    const kn_node *n = &g->nodes[0];
    ck_assert_str_eq(n->op_type, "If");
    ck_assert_int_eq(n->inputs[0], kn_graph_find_value(g, "C"));
    ck_assert_int_eq(n->n_implicit, 1); /* the formal input 'a' is the caller's X */
    ck_assert_int_eq(n->inputs[1], kn_graph_find_value(g, "X"));
    ck_assert_int_eq(n->outputs[0], kn_graph_find_value(g, "Z"));
    const kn_graph *tg = kn_node_attr(n, "then_branch")->g, *eg = kn_node_attr(n, "else_branch")->g;
    ck_assert(val(tg, "X")->is_outer && val(eg, "X")->is_outer);
    const kn_node *tmul = node_named(tg, "tmul");
    ck_assert_int_eq(tmul->inputs[0], kn_graph_find_value(tg, "X"));
    const kn_value *k = &tg->values[tmul->inputs[1]];
    ck_assert(k->constant && *(float *)k->constant->data == 4.0f); /* attribute reference inside a subgraph */
    ck_assert_int_eq(tmul->opset, 17);
    kn_model_release(m);
}
END_TEST

/* ---- subgraphs ---- */

static bool has_name(const kn_graph *g, const int *ids, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && strcmp(g->values[ids[i]].name, name) == 0) return true;
    return false;
}

START_TEST(if_subgraph_captures) {
    kn_model *m = load_ok("if.onnx");
    const kn_graph *g = m->graph;
    const kn_node *br = node_named(g, "branch");
    ck_assert_str_eq(br->op_type, "If");
    ck_assert_int_eq(br->n_implicit, 4);
    ck_assert_int_eq(br->n_inputs, 5);
    ck_assert_int_eq(br->inputs[0], kn_graph_find_value(g, "cond"));
    const int *impl = br->inputs + br->n_inputs - br->n_implicit;
    for (const char **nm = (const char *[]){"W", "X", "V", "cond", NULL}; *nm; nm++)
        ck_assert_msg(has_name(g, impl, br->n_implicit, *nm), "implicit input %s missing", *nm);
    const kn_attr *ta = kn_node_attr(br, "then_branch"), *ea = kn_node_attr(br, "else_branch");
    ck_assert(ta && ta->type == KN_ATTR_GRAPH && ta->g && ea && ea->g);
    const kn_graph *tg = ta->g, *eg = ea->g;
    ck_assert_ptr_eq(tg->parent, g);
    ck_assert_ptr_eq(eg->parent, g);
    for (const char **nm = (const char *[]){"W", "X", "V", "cond", NULL}; *nm; nm++) {
        const kn_value *v = val(tg, *nm);
        ck_assert_msg(v->is_outer && v->producer == -1, "%s should be outer in then_branch", *nm);
    }
    ck_assert_int_eq(val(tg, "X")->type.dtype, KN_F32); /* type copied from the enclosing graph */
    ck_assert_int_eq(val(tg, "X")->type.ndim, 1);
    ck_assert(!val(tg, "m")->is_outer);
    const kn_node *inner = node_named(tg, "inner_if");
    ck_assert_int_eq(inner->n_implicit, 1);
    ck_assert_str_eq(tg->values[inner->inputs[inner->n_inputs - 1]].name, "V");
    const kn_graph *itg = kn_node_attr(inner, "then_branch")->g;
    ck_assert_ptr_eq(itg->parent, tg);
    ck_assert(val(itg, "V")->is_outer);
    ck_assert_int_eq(itg->n_outputs, 1);
    /* else returns the enclosing graph's X directly */
    ck_assert_int_eq(eg->n_nodes, 0);
    ck_assert_int_eq(eg->n_outputs, 1);
    ck_assert_str_eq(eg->values[eg->outputs[0]].name, "X");
    ck_assert(eg->values[eg->outputs[0]].is_outer);
    ck_assert_int_eq(eg->n_opsets, g->n_opsets);
    kn_model_release(m);
}
END_TEST

/* ---- types, metadata, attributes ---- */

START_TEST(symbolic_dims_metadata_attributes) {
    kn_model *m = load_ok("symbolic.onnx");
    const kn_graph *g = m->graph;
    ck_assert_int_eq(m->ir_version, 9);
    ck_assert_int_eq(m->model_version, 7);
    ck_assert_str_eq(m->producer_name, "kiln-tests");
    ck_assert_str_eq(m->producer_version, "1.2");
    ck_assert_str_eq(m->domain, "org.kiln");
    ck_assert_str_eq(m->doc_string, "symbolic dims");
    ck_assert_int_eq(g->n_opsets, 2);
    ck_assert_int_eq(kn_graph_opset(g, ""), 17);
    ck_assert_int_eq(kn_graph_opset(g, "ai.onnx"), 17);
    ck_assert_int_eq(kn_graph_opset(g, "com.microsoft"), 1);

    ck_assert_int_eq(g->n_inputs, 1); /* w is an initializer */
    const kn_value *x = &g->values[g->inputs[0]];
    ck_assert_str_eq(x->name, "x");
    ck_assert(x->is_input && x->kind == KN_VAL_TENSOR && x->type.dtype == KN_F32 && x->type.ndim == 3);
    ck_assert(x->type.dims[0] == -1 && x->type.dims[1] == 3 && x->type.dims[2] == -1);
    ck_assert_str_eq(x->dim_names[0], "batch");
    ck_assert_ptr_null(x->dim_names[1]);
    ck_assert_str_eq(x->dim_names[2], "seq");
    const kn_tensor *w = cst(g, "w", KN_F32, 2);
    ck_assert(((float *)w->data)[2] == 3.0f && !val(g, "w")->is_input);
    const kn_value *y = val(g, "y");
    ck_assert(y->is_output && y->type.ndim == 3 && y->type.dims[2] == -1 && y->dim_names[2] == NULL);
    ck_assert_str_eq(y->dim_names[0], "batch");
    const kn_value *xw = val(g, "xw"); /* from value_info */
    ck_assert(xw->type.ndim == 3 && xw->type.dims[1] == 3);
    ck_assert_str_eq(xw->dim_names[2], "seq");

    const kn_node *mul = node_named(g, "mul");
    ck_assert_str_eq(mul->domain, ""); /* "ai.onnx" is the default domain */
    ck_assert_int_eq(mul->opset, 17);
    ck_assert_int_eq(mul->op, kn_op_lookup("Mul", ""));
    ck_assert_int_ge(mul->op, 0);
    const kn_tensor *sc = cst(g, "shape_c", KN_I64, 1); /* Constant node folded to an initializer */
    ck_assert(sc->dims[0] == 3 && ((int64_t *)sc->data)[2] == 3);
    ck_assert_int_eq(count_op(g, "Constant"), 0);
    ck_assert_int_eq(val(g, "shape_c")->producer, -1);

    const kn_value *seq = val(g, "seq_out");
    ck_assert(seq->kind == KN_VAL_SEQUENCE && seq->type.dtype == KN_F32);
    const kn_value *opt = val(g, "opt_out");
    ck_assert(opt->kind == KN_VAL_OPTIONAL && opt->elem_kind == KN_VAL_TENSOR && opt->type.ndim == 3);

    const kn_tensor *sp = cst(g, "sp", KN_F32, 2);
    static const float dense[6] = {0, 5, 0, 0, 6, 0};
    ck_assert(memcmp(sp->data, dense, sizeof dense) == 0);

    const kn_node *c = node_named(g, "custom");
    ck_assert_str_eq(c->domain, "com.microsoft");
    ck_assert_int_eq(c->opset, 1);
    ck_assert_int_eq(c->op, -1);
    ck_assert_int_eq(c->n_outputs, 2);
    ck_assert_int_eq(c->outputs[1], -1); /* "" is an omitted optional output */
    ck_assert(kn_attr_float(c, "f", 0) == 0.25f);
    ck_assert_int_eq(kn_attr_int(c, "i", 0), -3);
    ck_assert_str_eq(kn_attr_str(c, "s", ""), "text");
    ck_assert_int_eq(kn_node_attr(c, "s")->s_len, 4);
    const kn_attr *a = kn_node_attr(c, "t");
    ck_assert(a->type == KN_ATTR_TENSOR && a->t->dtype == KN_I32 && ((int32_t *)a->t->data)[1] == 8);
    a = kn_node_attr(c, "floats");
    ck_assert(a->type == KN_ATTR_FLOATS && a->n_floats == 2 && a->floats[1] == 2.0f);
    const int64_t *iv;
    ck_assert_int_eq(kn_attr_ints(c, "ints", &iv), 3);
    ck_assert_int_eq(iv[2], 6);
    a = kn_node_attr(c, "strings");
    ck_assert(a->type == KN_ATTR_STRINGS && a->n_strings == 2);
    ck_assert_str_eq(a->strings[1], "qq");
    a = kn_node_attr(c, "tensors");
    ck_assert(a->type == KN_ATTR_TENSORS && a->n_tensors == 1 && a->tensors[0]->dtype == KN_F64);
    a = kn_node_attr(c, "tp");
    ck_assert(a->type == KN_ATTR_TYPE_PROTO && a->tp_elem_type == KN_I64);
    kn_model_release(m);
}
END_TEST

/* ---- TensorProto files ---- */

static void roundtrip(const kn_tensor *t) {
    char path[1024];
    snprintf(path, sizeof path, "%s/roundtrip_%d.pb", g_dir, (int)t->dtype);
    ck_assert_ptr_null(kn_tensor_proto_write_file(path, t, "rt"));
    kn_tensor *r = NULL;
    char *name = NULL;
    kn_status *st = kn_tensor_proto_read_file(path, &r, &name);
    if (st) fprintf(stderr, "%s\n", kn_status_message(st));
    ck_assert_ptr_null(st);
    ck_assert_str_eq(name, "rt");
    ck_assert_int_eq(r->dtype, t->dtype);
    ck_assert(kn_same_shape(r, t));
    if (t->dtype == KN_STRING) {
        for (int64_t i = 0; i < kn_numel(t); i++) ck_assert_str_eq(((char **)r->data)[i], ((char **)t->data)[i]);
    } else {
        ck_assert(memcmp(r->data, t->data, kn_nbytes(t)) == 0);
    }
    free(name);
    kn_tensor_free(r);
}

START_TEST(tensor_proto_files) {
    kn_tensor *t = NULL;
    char *name = NULL;
    ck_assert_ptr_null(kn_tensor_proto_read_file(fx("tensor_f32.pb"), &t, &name));
    ck_assert_str_eq(name, "input_x");
    ck_assert(t->dtype == KN_F32 && t->ndim == 2 && t->dims[0] == 2 && t->dims[1] == 3 &&
              ((float *)t->data)[5] == 5.0f);
    free(name);
    kn_tensor_free(t);
    ck_assert_ptr_null(kn_tensor_proto_read_file(fx("tensor_str.pb"), &t, NULL));
    ck_assert_str_eq(((char **)t->data)[1], "onnx");
    kn_tensor_free(t);
    ck_assert_ptr_null(kn_tensor_proto_read_file(fx("tensor_i4.pb"), &t, NULL));
    ck_assert(t->dtype == KN_I4 && ((int8_t *)t->data)[0] == -8 && ((int8_t *)t->data)[4] == 3);
    roundtrip(t); /* odd element count: the last byte is half used */
    kn_tensor_free(t);

    int64_t d23[2] = {2, 3}, d7[1] = {7}, d3[1] = {3};
    ck_assert_ptr_null(kn_tensor_new(KN_F32, 2, d23, &t));
    for (int i = 0; i < 6; i++) ((float *)t->data)[i] = (float)i * -1.25f;
    roundtrip(t);
    kn_tensor_free(t);
    ck_assert_ptr_null(kn_tensor_new(KN_U2, 1, d7, &t));
    for (int i = 0; i < 7; i++) ((uint8_t *)t->data)[i] = (uint8_t)(i % 4);
    roundtrip(t);
    kn_tensor_free(t);
    ck_assert_ptr_null(kn_tensor_new(KN_I2, 1, d7, &t));
    for (int i = 0; i < 7; i++) ((int8_t *)t->data)[i] = (int8_t)(i % 4 - 2);
    roundtrip(t);
    kn_tensor_free(t);
    ck_assert_ptr_null(kn_tensor_new(KN_F16, 1, d3, &t));
    ((uint16_t *)t->data)[1] = 0x3C00;
    roundtrip(t);
    kn_tensor_free(t);
    ck_assert_ptr_null(kn_tensor_new(KN_STRING, 1, d3, &t));
    for (int i = 0; i < 3; i++) ((char **)t->data)[i] = strdup(i == 1 ? "" : "xyz");
    roundtrip(t);
    kn_tensor_free(t);
    ck_assert_ptr_null(kn_tensor_new(KN_I64, 0, NULL, &t));
    *(int64_t *)t->data = -77;
    roundtrip(t);
    kn_tensor_free(t);

    /* Garbage and truncation are errors. */
    static const unsigned char junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    kn_status *st = kn_tensor_proto_read(junk, sizeof junk, &t, NULL);
    ck_assert_ptr_nonnull(st);
    ck_assert_ptr_null(t);
    kn_status_free(st);
    st = kn_tensor_proto_read_file(fx("no_such_file.pb"), &t, NULL);
    ck_assert_ptr_nonnull(st);
    ck_assert_ptr_nonnull(strstr(kn_status_message(st), "no_such_file.pb"));
    kn_status_free(st);
}
END_TEST

/* ---- bad models ---- */

static void expect_error(const char *file, const char *k1, const char *k2) {
    kn_model *m = (kn_model *)1;
    kn_status *st = kn_onnx_load_file(fx(file), &m);
    ck_assert_msg(st != NULL, "%s loaded but should have failed", file);
    ck_assert_ptr_null(m);
    const char *msg = kn_status_message(st);
    ck_assert_int_ne(kn_status_get_code(st), KN_OK);
    ck_assert_msg(strstr(msg, file) != NULL, "message for %s does not name the file: %s", file, msg);
    ck_assert_msg(!k1 || strstr(msg, k1), "message for %s lacks '%s': %s", file, k1, msg);
    ck_assert_msg(!k2 || strstr(msg, k2), "message for %s lacks '%s': %s", file, k2, msg);
    kn_status_free(st);
}

START_TEST(bad_models_are_errors) {
    expect_error("bad_dims.onnx", "short_w", "raw_data");
    expect_error("bad_typed_count.onnx", "count_w", "int64_data");
    expect_error("bad_huge.onnx", "huge_w", "elements");
    expect_error("bad_claimed_typed.onnx", "claim_w", "float_data");
    expect_error("bad_negative_dim.onnx", "neg_w", "negative");
    expect_error("bad_rank9.onnx", "rank9_w", "rank 9");
    expect_error("bad_unknown_dtype.onnx", "odd_w", "99");
    expect_error("bad_ext_escape.onnx", "esc_w", "escapes");
    expect_error("bad_ext_escape2.onnx", "esc_w", "escapes");
    expect_error("bad_ext_absolute.onnx", "esc_w", "absolute");
    expect_error("bad_ext_past_end.onnx", "far_w", "past the end");
    expect_error("bad_ext_missing.onnx", "gone_w", "not_there.bin");
    expect_error("bad_missing_input.onnx", "adder", "'nope'");
    expect_error("bad_duplicate_output.onnx", "second", "'Z'");
    expect_error("bad_ir_version.onnx", "IR version 99", NULL);
    expect_error("bad_opset.onnx", "version 0", NULL);
    expect_error("bad_no_graph.onnx", "no graph", NULL);
    expect_error("bad_undefined_output.onnx", "ghost", NULL);
    expect_error("bad_recursive_function.onnx", "Rec", "itself");
    expect_error("no_such_model.onnx", "cannot open", NULL);
    kn_model *m = NULL;
    kn_status *st = kn_onnx_load_file(g_dir, &m); /* a directory */
    ck_assert_ptr_nonnull(st);
    kn_status_free(st);
}
END_TEST

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(len > 0 ? (size_t)len : 1);
    *n = b ? fread(b, 1, (size_t)len, f) : 0;
    fclose(f);
    return b;
}

/* Loads must never crash; returns whether it failed (with a message). */
static bool try_load(const void *buf, size_t n) {
    kn_model *m = NULL;
    kn_status *st = kn_onnx_load_buffer(buf, n, g_dir, &m);
    if (!st) {
        ck_assert_ptr_nonnull(m);
        kn_model_release(m);
        return false;
    }
    ck_assert_ptr_null(m);
    ck_assert(strlen(kn_status_message(st)) > 0);
    kn_status_free(st);
    return true;
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

START_TEST(truncated_empty_random) {
    size_t n;
    unsigned char *b = slurp(fx("if.onnx"), &n);
    ck_assert(b && n > 100);
    ck_assert(!try_load(b, n));
    for (size_t len = 0; len < n; len++) try_load(b, len); /* some prefixes are valid models; none may crash */
    ck_assert(try_load(b, n / 2));
    ck_assert(try_load(b, n - 1));
    ck_assert(try_load(b, 0));
    free(b);
    /* an empty file */
    char path[1024];
    snprintf(path, sizeof path, "%s/empty.onnx", g_dir);
    fclose(fopen(path, "wb"));
    kn_model *m = NULL;
    kn_status *st = kn_onnx_load_file(path, &m);
    ck_assert_ptr_nonnull(st);
    ck_assert_ptr_nonnull(strstr(kn_status_message(st), "empty"));
    kn_status_free(st);
    /* random bytes */
    uint64_t s = 0x9E3779B97F4A7C15ull;
    unsigned char r[4096];
    for (int it = 0; it < 300; it++) {
        size_t len = 1 + rng_next(&s) % sizeof r;
        for (size_t i = 0; i < len; i++) r[i] = (unsigned char)rng_next(&s);
        ck_assert(try_load(r, len));
    }
}
END_TEST

/* protobuf-c recurses without limit, so deep nesting is refused before parsing. */
static size_t wrap(unsigned char *buf, size_t len, size_t cap, unsigned field) {
    unsigned char hdr[16];
    size_t h = 0;
    hdr[h++] = (unsigned char)(field << 3 | 2);
    for (size_t v = len;; v >>= 7) {
        hdr[h++] = (unsigned char)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80) break;
    }
    ck_assert(len + h <= cap);
    memmove(buf + h, buf, len);
    memcpy(buf, hdr, h);
    return len + h;
}

START_TEST(deep_nesting_refused) {
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = calloc(cap, 1);
    for (int level = 0; level < 2000; level++) {
        len = wrap(buf, len, cap, 6); /* AttributeProto.g */
        len = wrap(buf, len, cap, 5); /* NodeProto.attribute */
        len = wrap(buf, len, cap, 1); /* GraphProto.node */
    }
    len = wrap(buf, len, cap, 7); /* ModelProto.graph */
    memmove(buf + 2, buf, len);
    buf[0] = 0x08;
    buf[1] = 0x08; /* ir_version 8 */
    kn_model *m = NULL;
    kn_status *st = kn_onnx_load_buffer(buf, len + 2, NULL, &m);
    ck_assert_ptr_nonnull(st);
    ck_assert_ptr_nonnull(strstr(kn_status_message(st), "nested"));
    kn_status_free(st);
    free(buf);
}
END_TEST

/* ---- model zoo ---- */

/* The loader alone (kn_onnx_load_buffer / _file, without kn_model_load*'s optimisation) leaves
 * the nodes' attributes undecoded. Shape inference (LSTM's reads hidden_size and direction) and a
 * session on such a model must fail with a status naming the node, not dereference the missing
 * params; once kn_graph_resolve_ops has decoded them the same inference works. */
START_TEST(raw_load_undecoded_params_are_an_error) {
    size_t n = 0;
    unsigned char *b = slurp(fx("lstm.onnx"), &n);
    ck_assert(b && n > 0);
    kn_model *m = NULL;
    ck_assert_ptr_null(kn_onnx_load_buffer(b, n, NULL, &m));
    free(b);
    kn_graph *g = m->graph;
    ck_assert_int_eq(g->n_nodes, 1);
    const kn_node *lstm = &g->nodes[0];
    ck_assert_int_eq(lstm->op, KN_OP_LSTM);
    const kn_tensor *in[3];
    for (int k = 0; k < 3; k++) {
        const kn_value *v = &g->values[lstm->inputs[k]];
        in[k] = v->constant ? v->constant : &v->type;
    }
    kn_tensor y = {0}, *out[1] = {&y};
    y.ndim = -1;
    kn_status *st = kn_infer_node(lstm, in, 3, out, 1);
    ck_assert_ptr_nonnull(st);
    ck_assert_msg(strstr(kn_status_message(st), "lstm0") != NULL, "%s", kn_status_message(st));
    kn_status_free(st);
    kn_session *s = NULL;
    st = kn_session_create(m, NULL, &s);
    ck_assert_ptr_nonnull(st);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(kn_status_message(st), "lstm0") != NULL, "%s", kn_status_message(st));
    kn_status_free(st);
    /* decoded: Y [seq 5, directions 1, batch 2, hidden 4] */
    ck_assert_ptr_null(kn_graph_resolve_ops(g));
    ck_assert_ptr_null(kn_infer_node(&g->nodes[0], in, 3, out, 1));
    ck_assert_int_eq(y.ndim, 4);
    ck_assert(y.dims[0] == 5 && y.dims[1] == 1 && y.dims[2] == 2 && y.dims[3] == 4);
    kn_model_release(m);
}
END_TEST

static int zoo_models(char paths[][1536], int max) {
    const char *dirs[3] = {NULL, "/work/shared/zoo", NULL};
    char d0[1024];
    snprintf(d0, sizeof d0, "%s/../shared/zoo", g_src);
    dirs[0] = d0;
    for (int k = 0; dirs[k]; k++) {
        DIR *d = opendir(dirs[k]);
        if (!d) continue;
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d)) && n < max) {
            if (e->d_name[0] == '.') continue;
            snprintf(paths[n], 1536, "%s/%s/model.onnx", dirs[k], e->d_name);
            if (access(paths[n], R_OK) == 0) n++;
        }
        closedir(d);
        if (n) return n;
    }
    return 0;
}

START_TEST(zoo_models_load_and_survive_bit_flips) {
    char paths[32][1536];
    int n = zoo_models(paths, 32);
    if (!n) {
        fprintf(stderr,
                "SKIP zoo_models_load_and_survive_bit_flips: no model zoo at ../shared/zoo or /work/shared/zoo\n");
        return;
    }
    size_t smallest = (size_t)-1;
    int pick = 0;
    for (int i = 0; i < n; i++) {
        kn_model *m = NULL;
        kn_status *st = kn_onnx_load_file(paths[i], &m);
        ck_assert_msg(st == NULL, "%s", st ? kn_status_message(st) : "");
        ck_assert_int_gt(m->graph->n_nodes, 0);
        ck_assert_int_gt(m->graph->n_inputs, 0);
        ck_assert_int_gt(m->graph->n_outputs, 0);
        for (int k = 0; k < m->graph->n_nodes; k++) ck_assert_int_gt(m->graph->nodes[k].opset, 0);
        kn_model_release(m);
        struct stat sb;
        if (stat(paths[i], &sb) == 0 && (size_t)sb.st_size < smallest) {
            smallest = (size_t)sb.st_size;
            pick = i;
        }
    }
    size_t len;
    unsigned char *orig = slurp(paths[pick], &len);
    unsigned char *b = malloc(len);
    ck_assert(orig && b);
    uint64_t s = 12345;
    int failed = 0, iters = 300;
    for (int it = 0; it < iters; it++) {
        memcpy(b, orig, len);
        int flips = 1 + (int)(rng_next(&s) % 8);
        for (int f = 0; f < flips; f++) {
            size_t pos = rng_next(&s) % len;
            b[pos] ^= (unsigned char)(1u << (rng_next(&s) % 8));
        }
        failed += try_load(b, len);
    }
    fprintf(stderr, "bit flips on %s: %d of %d loads rejected, none crashed\n", paths[pick], failed, iters);
    free(b);
    free(orig);
}
END_TEST

/* ---- fixture generation ---- */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static bool find_source_dir(void) {
    const char *env = getenv("KILN_SOURCE_DIR");
    if (env && *env) {
        snprintf(g_src, sizeof g_src, "%s", env);
        return true;
    }
    const char *suffix = "tests/unit/test_loader.c";
    const char *f = __FILE__;
    size_t fl = strlen(f), sl = strlen(suffix);
    if (fl < sl || strcmp(f + fl - sl, suffix) != 0) return false;
    snprintf(g_src, sizeof g_src, "%.*s", (int)(fl - sl), f);
    if (!g_src[0]) snprintf(g_src, sizeof g_src, ".");
    size_t l = strlen(g_src);
    if (l > 1 && g_src[l - 1] == '/') g_src[l - 1] = 0;
    return true;
}

int main(void) {
    if (!find_source_dir()) {
        fprintf(stderr, "cannot locate the source tree: set KILN_SOURCE_DIR\n");
        return 1;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/kiln_loader_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    char cmd[2048];
    /* the project venv's interpreter (tests/CMakeLists.txt passes it), python3 otherwise */
    const char *py = getenv("KILN_PYTHON");
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/gen_loader_fixtures.py' '%s'", py && *py ? py : "python3", g_src, g_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "fixture generator failed: %s\n", cmd);
        nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        return 1;
    }
    Suite *s = suite_create("loader");
    TCase *tc = tcase_create("loader");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, typed_field_initializers);
    tcase_add_test(tc, raw_data_initializers);
    tcase_add_test(tc, external_data);
    tcase_add_test(tc, function_inlining);
    tcase_add_test(tc, function_with_subgraph);
    tcase_add_test(tc, if_subgraph_captures);
    tcase_add_test(tc, symbolic_dims_metadata_attributes);
    tcase_add_test(tc, tensor_proto_files);
    tcase_add_test(tc, bad_models_are_errors);
    tcase_add_test(tc, truncated_empty_random);
    tcase_add_test(tc, deep_nesting_refused);
    tcase_add_test(tc, raw_load_undecoded_params_are_an_error);
    tcase_add_test(tc, zoo_models_load_and_survive_bit_flips);
    suite_add_tcase(s, tc);
    int rc = kn_test_run_suite(s);
    nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
