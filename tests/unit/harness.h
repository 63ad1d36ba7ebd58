/* The shared harness of the Check unit tests (tests/unit/test_*.c). For the op tests: attribute
 * and tensor makers, one function that runs an op end to end through the executor's own node
 * path (kn_node_eval_host: shape inference with data, host allocation of the outputs, the CPU
 * backend's kernel with the runtime's scratch allocator) so the tests run the code the executor
 * runs rather than a copy of it, static inference alone, and closeness / error checks. For every
 * test: FAST_ASSERT and the suite runner. All static inline: each test executable includes it. */
#ifndef KN_TEST_HARNESS_H
#define KN_TEST_HARNESS_H
#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "graph/ops.h"
#include "runtime/executor.h"

/* Check records each passing assertion with a file write; hot loops only call it on failure. */
#define FAST_ASSERT(cond, ...) \
    do { \
        if (!(cond)) ck_assert_msg((cond), __VA_ARGS__); \
    } while (0)

/* ---- attributes: the name, string and arrays are borrowed, not copied ---- */

static inline kn_attr attr_i(const char *name, int64_t v) {
    kn_attr a = {0};
    a.name = (char *)name;
    a.type = KN_ATTR_INT;
    a.i = v;
    return a;
}
static inline kn_attr attr_f(const char *name, float v) {
    kn_attr a = {0};
    a.name = (char *)name;
    a.type = KN_ATTR_FLOAT;
    a.f = v;
    return a;
}
static inline kn_attr attr_s(const char *name, const char *v) {
    kn_attr a = {0};
    a.name = (char *)name;
    a.type = KN_ATTR_STRING;
    a.s = (char *)v;
    a.s_len = strlen(v);
    return a;
}
static inline kn_attr attr_ints(const char *name, const int64_t *v, int n) {
    kn_attr a = {0};
    a.name = (char *)name;
    a.type = KN_ATTR_INTS;
    a.ints = (int64_t *)v;
    a.n_ints = n;
    return a;
}
static inline kn_attr attr_floats(const char *name, const float *v, int n) {
    kn_attr a = {0};
    a.name = (char *)name;
    a.type = KN_ATTR_FLOATS;
    a.floats = (float *)v;
    a.n_floats = n;
    return a;
}
static inline kn_attr attr_strings(const char *name, char *const *v, int n) {
    kn_attr a = {0};
    a.name = (char *)name;
    a.type = KN_ATTR_STRINGS;
    a.strings = (char **)v;
    a.n_strings = n;
    return a;
}

/* ---- tensors ---- */

/* A new host tensor of any dtype; vals (numel doubles, stored through kn_set_f64) or NULL for zeros. */
static inline kn_tensor *mk(kn_dtype dt, int nd, const int64_t *dims, const double *vals) {
    kn_tensor *t = NULL;
    ck_assert_ptr_null(kn_tensor_new(dt, nd, dims, &t));
    for (int64_t i = 0; vals && i < kn_numel(t); i++) kn_set_f64(t, i, vals[i]);
    return t;
}

/* A new host tensor from raw element storage (copied), or from C strings (duplicated) for
 * KN_STRING; data NULL gives zeros. */
static inline kn_tensor *mk_raw(kn_dtype dt, int nd, const int64_t *dims, const void *data) {
    kn_tensor *t = mk(dt, nd, dims, NULL);
    if (data && dt != KN_STRING) memcpy(t->data, data, kn_nbytes(t));
    if (data && dt == KN_STRING)
        for (int64_t i = 0; i < kn_numel(t); i++) ((char **)t->data)[i] = strdup(((char *const *)data)[i]);
    return t;
}

/* Frees the non-NULL tensors and clears their slots. */
static inline void free_all(kn_tensor **ts, int n) {
    for (int i = 0; i < n; i++) {
        kn_tensor_free(ts[i]);
        ts[i] = NULL;
    }
}

/* ---- running ops ---- */

/* The run seed (kn_exec_ctx.seed) of every op run here: random ops without a seed attribute mix it
 * with the node's name, so their draws repeat from run to run. */
#define KN_TEST_SEED 1234

/* A node of op (its ONNX name and domain from graph/ops.def) named "t". */
static inline kn_node kn_test_node(int op, int opset, const kn_attr *attrs, int n_attrs) {
    kn_node n = {0};
    n.name = (char *)"t";
    n.op_type = (char *)kn_op_table[op].name;
    n.domain = (char *)kn_op_table[op].domain;
    n.op = op;
    n.opset = opset;
    n.n_attrs = n_attrs;
    n.attrs = (kn_attr *)attrs;
    return n;
}

/* Inputs may be given as kn_tensor ** or const kn_tensor ** (arrays of either); anything else
 * draws the compiler's incompatible-pointer diagnostic, as a plain function parameter would. */
#define KN_TEST_IN(in) \
    _Generic((in), kn_tensor **: (const kn_tensor *const *)(in), \
                                kn_tensor *const *: (const kn_tensor *const *)(in), default: (in))

static inline kn_status *kn_test_run_op_(int op, int opset, const kn_attr *attrs, int n_attrs,
                                         const kn_tensor *const *in, int n_in, kn_tensor **out, const bool *want,
                                         int n_out, kn_threadpool *pool) {
    kn_node node = kn_test_node(op, opset, attrs, n_attrs);
    kn_status *pst = kn_node_decode_params(&node); /* as loading does */
    if (pst) return pst;
    for (int i = 0; i < n_out; i++) {
        out[i] = NULL;
        if (want && !want[i]) continue;
        out[i] = calloc(1, sizeof(kn_tensor));
        ck_assert_ptr_nonnull(out[i]);
    }
    kn_scratch scratch = {0};
    kn_exec_ctx ctx = {.pool = pool,
                       .backend = kn_cpu_backend(),
                       .scratch_alloc = kn_scratch_alloc_impl,
                       .scratch_state = &scratch,
                       .seed = KN_TEST_SEED};
    kn_status *st = kn_node_eval_host(&ctx, &node, in, n_in, out, n_out);
    free(node.params);
    kn_scratch_release(&scratch);
    if (st) free_all(out, n_out);
    return st;
}

/* Runs op (a KN_OP_ id) at opset on the inputs (NULL entries: omitted optional inputs), as the
 * executor runs a node on the CPU. out[0..n_out) receive new tensors the caller frees (free_all);
 * want NULL asks for every output, otherwise out[i] stays NULL (omitted) where want[i] is false.
 * pool may be NULL. On an error every out[i] is NULL and the status (naming the node) returned. */
#define kn_test_run_op(op, opset, attrs, n_attrs, in, n_in, out, want, n_out, pool) \
    kn_test_run_op_((op), (opset), (attrs), (n_attrs), KN_TEST_IN(in), (n_in), (out), (want), (n_out), (pool))

static inline kn_status *kn_test_infer_(int op, int opset, const kn_attr *attrs, int n_attrs,
                                        const kn_tensor *const *in, int n_in, kn_tensor *const *out, int n_out) {
    kn_node node = kn_test_node(op, opset, attrs, n_attrs);
    kn_status *st = kn_node_decode_params(&node);
    if (st) return st;
    kn_infer_fn fn = kn_op_infer(op);
    ck_assert_ptr_nonnull(fn);
    kn_infer_ctx ic = {&node, in, n_in, out, n_out};
    st = fn(&ic);
    free(node.params);
    return st;
}

/* Shape inference alone (inputs may lack data, dims may be -1) into the caller's out tensors. */
#define kn_test_infer(op, opset, attrs, n_attrs, in, n_in, out, n_out) \
    kn_test_infer_((op), (opset), (attrs), (n_attrs), KN_TEST_IN(in), (n_in), (out), (n_out))

/* ---- checks ---- */

static inline void expect_ok(kn_status *st) {
    ck_assert_msg(st == NULL, "unexpected error: %s", st ? kn_status_message(st) : "");
}

/* An error with a message (the op names itself, the executor adds the node), freed after checking. */
static inline void expect_err(kn_status *st) {
    ck_assert_msg(st != NULL, "expected an error");
    ck_assert_msg(strlen(kn_status_message(st)) > 0, "empty error message");
    kn_status_free(st);
}

/* The same with a given code. */
static inline void expect_err_code(kn_status *st, kn_status_code code) {
    ck_assert_msg(st != NULL, "expected an error");
    ck_assert_int_eq(kn_status_get_code(st), code);
    ck_assert_msg(strlen(kn_status_message(st)) > 0, "empty error message");
    kn_status_free(st);
}

/* |got - ref| <= atol + rtol |ref|; NaN matches only NaN, an infinity only itself. */
static inline bool close_to(double got, double ref, double rtol, double atol) {
    if (isnan(got) || isnan(ref)) return isnan(got) && isnan(ref);
    if (isinf(got) || isinf(ref)) return got == ref;
    return fabs(got - ref) <= atol + rtol * fabs(ref);
}

/* t has n elements, each close_to its ref. */
static inline void expect_close(const kn_tensor *t, const double *ref, int64_t n, double rtol, double atol,
                                const char *what) {
    ck_assert_int_eq(kn_numel(t), n);
    for (int64_t i = 0; i < n; i++) {
        double g = kn_get_f64(t, i);
        FAST_ASSERT(close_to(g, ref[i], rtol, atol), "%s[%lld]: got %.9g want %.9g", what, (long long)i, g, ref[i]);
    }
}

/* ---- main ---- */

/* Runs every test of s; the process exit status. */
static inline int kn_test_run_suite(Suite *s) {
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
