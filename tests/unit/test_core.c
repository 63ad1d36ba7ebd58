/* Unit tests for the runtime core: status messages, tensors, the thread pool, the memory
 * planner, the graph IR and its passes (toposort, dead-node elimination, constant folding). */
#include "graph/ops.h"
#include "graph/passes.h"
#include "runtime/fold.h"
#include "graph/planner.h"
#include "runtime/executor.h"
#include "tests/unit/harness.h"
#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(status_messages) {
    kn_status *st = kn_error(KN_ERR_INVALID_ARGUMENT, "bad %s %d", "thing", 3);
    ck_assert_int_eq(kn_status_get_code(st), KN_ERR_INVALID_ARGUMENT);
    ck_assert_str_eq(kn_status_message(st), "bad thing 3");
    st = kn_error_wrap(st, "node '%s': ", "n1");
    ck_assert_str_eq(kn_status_message(st), "node 'n1': bad thing 3");
    kn_status_free(st);
    ck_assert_int_eq(kn_status_get_code(NULL), KN_OK);
}
END_TEST

START_TEST(tensor_guards) {
    kn_tensor *t = NULL;
    int64_t huge[2] = {1000000, 1000000};
    kn_status *st = kn_tensor_new(KN_F32, 2, huge, &t);
    ck_assert_ptr_nonnull(st); /* 10^12 elements are refused, not allocated */
    ck_assert_ptr_null(t);
    kn_status_free(st);
    int64_t neg[1] = {-3};
    st = kn_tensor_new(KN_F32, 1, neg, &t);
    ck_assert_ptr_nonnull(st);
    kn_status_free(st);
    int64_t dims[3] = {2, 0, 5};
    ck_assert_ptr_null(kn_tensor_new(KN_I64, 3, dims, &t));
    ck_assert_int_eq(kn_numel(t), 0);
    char buf[KN_DESC_LEN];
    ck_assert_str_eq(kn_tensor_desc(t, buf, sizeof buf), "int64[2,0,5]");
    kn_tensor_free(t);
}
END_TEST

typedef struct {
    atomic_int_fast64_t sum;
    int64_t *hits;
} pf_ctx;
static void pf_body(void *c, int64_t b, int64_t e) {
    pf_ctx *p = c;
    for (int64_t i = b; i < e; i++) {
        atomic_fetch_add(&p->sum, i);
        p->hits[i]++;
    }
}

START_TEST(threadpool_covers_range_once) {
    kn_threadpool *pool = kn_threadpool_create(4);
    ck_assert_ptr_nonnull(pool);
    ck_assert_int_eq(kn_threadpool_size(pool), 4);
    int64_t sizes[] = {0, 1, 7, 100, 10007};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t n = sizes[s];
        pf_ctx c;
        atomic_init(&c.sum, 0);
        c.hits = calloc((size_t)n + 1, sizeof(int64_t));
        kn_parallel_for(pool, n, 3, pf_body, &c);
        ck_assert_int_eq(atomic_load(&c.sum), n * (n - 1) / 2);
        for (int64_t i = 0; i < n; i++) ck_assert_int_eq(c.hits[i], 1);
        free(c.hits);
    }
    kn_threadpool_free(pool);
}
END_TEST

typedef struct {
    kn_threadpool *pool;
    int64_t result;
} nest_ctx;
static void inner_body(void *c, int64_t b, int64_t e) {
    (void)c;
    (void)b;
    (void)e;
}
static void outer_body(void *c, int64_t b, int64_t e) {
    nest_ctx *n = c;
    for (int64_t i = b; i < e; i++) kn_parallel_for(n->pool, 100, 1, inner_body, NULL); /* nested: must not deadlock */
}

START_TEST(threadpool_nested_and_concurrent) {
    kn_threadpool *pool = kn_threadpool_create(3);
    nest_ctx c = {pool, 0};
    for (int r = 0; r < 50; r++) kn_parallel_for(pool, 64, 1, outer_body, &c);
    kn_threadpool_free(pool);
}
END_TEST

START_TEST(planner_reuses_and_never_overlaps) {
    /* a chain a->b->c->d: each value dies after the next is made, so two slots suffice */
    kn_mem_req r[4] = {
        {.bytes = 100, .start = 0, .end = 1, .share_with = -1},
        {.bytes = 100, .start = 1, .end = 2, .share_with = -1},
        {.bytes = 100, .start = 2, .end = 3, .share_with = -1},
        {.bytes = 100, .start = 3, .end = 4, .share_with = -1},
    };
    size_t off[4], peak;
    ck_assert_ptr_null(kn_plan_memory(r, 4, 64, off, &peak));
    ck_assert_uint_eq(peak, 256); /* 2 x 128 (aligned) */
    ck_assert_uint_ne(off[0], off[1]);
    ck_assert_uint_eq(off[0], off[2]);
    /* random lifetimes: check no two live values overlap */
    enum { N = 300 };
    kn_mem_req q[N];
    size_t o[N];
    srand(7);
    for (int i = 0; i < N; i++) {
        int s = rand() % 200;
        q[i] = (kn_mem_req){.bytes = (size_t)(rand() % 5000), .start = s, .end = s + rand() % 30, .share_with = -1};
    }
    ck_assert_ptr_null(kn_plan_memory(q, N, 64, o, &peak));
    size_t sum_max = 0;
    for (int i = 0; i < N; i++) {
        ck_assert_uint_le(o[i] + q[i].bytes, peak);
        for (int j = i + 1; j < N; j++) {
            bool live_together = q[i].start <= q[j].end && q[j].start <= q[i].end;
            bool overlap = o[i] < o[j] + q[j].bytes && o[j] < o[i] + q[i].bytes;
            if (q[i].bytes && q[j].bytes) ck_assert(!(live_together && overlap));
        }
        sum_max += (q[i].bytes + 63) & ~(size_t)63;
    }
    ck_assert_uint_lt(peak, sum_max); /* reuse happened */
}
END_TEST

START_TEST(planner_in_place) {
    kn_mem_req r[2] = {
        {.bytes = 256, .start = 0, .end = 1, .share_with = -1},
        {.bytes = 256, .start = 1, .end = 2, .share_with = 0},
    };
    size_t off[2], peak;
    ck_assert_ptr_null(kn_plan_memory(r, 2, 64, off, &peak));
    ck_assert_uint_eq(off[0], off[1]);
    ck_assert_uint_eq(peak, 256);
    kn_mem_req bad = {.bytes = 1, .start = 3, .end = 1, .share_with = -1};
    kn_status *st = kn_plan_memory(&bad, 1, 64, off, &peak);
    ck_assert_ptr_nonnull(st);
    kn_status_free(st);
}
END_TEST

/* x -> Relu -> a -> Neg -> y, plus an unused branch, built out of order */
static kn_graph *small_graph(bool cycle) {
    kn_graph *g = kn_graph_new("g");
    int x = kn_graph_add_value(g, "x"), a = kn_graph_add_value(g, "a"), y = kn_graph_add_value(g, "y");
    int u = kn_graph_add_value(g, "unused");
    g->values[x].is_input = true;
    g->values[x].type.dtype = KN_F32;
    g->values[x].type.ndim = 1;
    g->values[x].type.dims[0] = 3;
    g->inputs = malloc(sizeof(int));
    g->inputs[0] = x;
    g->n_inputs = 1;
    g->outputs = malloc(sizeof(int));
    g->outputs[0] = y;
    g->n_outputs = 1;
    g->values[y].is_output = true;
    int in_neg[1] = {a}, out_neg[1] = {y};
    kn_graph_add_node(g, "neg", "Neg", "", in_neg, 1, out_neg, 1, NULL, 0);
    int in_relu[1] = {cycle ? y : x}, out_relu[1] = {a};
    kn_graph_add_node(g, "relu", "Relu", "", in_relu, 1, out_relu, 1, NULL, 0);
    int in_u[1] = {x}, out_u[1] = {u};
    kn_graph_add_node(g, "dead", "Abs", "", in_u, 1, out_u, 1, NULL, 0);
    kn_graph_resolve_ops(g);
    return g;
}

START_TEST(toposort_orders_and_detects_cycles) {
    kn_graph *g = small_graph(false);
    ck_assert_ptr_null(kn_graph_toposort(g));
    ck_assert_str_eq(g->nodes[0].name, "relu");
    ck_assert_int_eq(g->values[kn_graph_find_value(g, "y")].producer, 2);
    ck_assert_int_eq(kn_graph_eliminate_dead(g), 1);
    ck_assert_int_eq(g->n_nodes, 2);
    kn_graph_free(g);
    g = small_graph(true);
    kn_status *st = kn_graph_toposort(g);
    ck_assert_ptr_nonnull(st);
    ck_assert_ptr_nonnull(strstr(kn_status_message(st), "cycle"));
    kn_status_free(st);
    kn_graph_free(g);
}
END_TEST

START_TEST(constant_folding) {
    /* y = x + Neg(Constant([1,2,3])): Constant and Neg fold into one constant, Add stays */
    kn_graph *g = kn_graph_new("fold");
    int x = kn_graph_add_value(g, "x"), c1 = kn_graph_add_value(g, "c1"), c2 = kn_graph_add_value(g, "c2"),
        y = kn_graph_add_value(g, "y");
    g->values[x].is_input = true;
    g->values[x].type.dtype = KN_F32;
    g->values[x].type.ndim = 1;
    g->values[x].type.dims[0] = 3;
    g->inputs = malloc(sizeof(int));
    g->inputs[0] = x;
    g->n_inputs = 1;
    g->outputs = malloc(sizeof(int));
    g->outputs[0] = y;
    g->n_outputs = 1;
    g->values[y].is_output = true;
    g->n_opsets = 1;
    g->opsets[0] = 17;
    g->opset_domains[0] = strdup("");
    kn_attr *a = calloc(1, sizeof *a);
    a->name = strdup("value");
    a->type = KN_ATTR_TENSOR;
    int64_t d3[1] = {3};
    ck_assert_ptr_null(kn_tensor_new(KN_F32, 1, d3, &a->t));
    for (int i = 0; i < 3; i++) ((float *)a->t->data)[i] = (float)(i + 1);
    int o1[1] = {c1}, i2[1] = {c1}, o2[1] = {c2}, i3[2] = {x, c2}, o3[1] = {y};
    kn_graph_add_node(g, "const", "Constant", "", NULL, 0, o1, 1, a, 1);
    kn_graph_add_node(g, "neg", "Neg", "", i2, 1, o2, 1, NULL, 0);
    kn_graph_add_node(g, "add", "Add", "", i3, 2, o3, 1, NULL, 0);
    kn_graph_resolve_ops(g);
    ck_assert_ptr_null(kn_graph_toposort(g));
    int folded = 0;
    ck_assert_ptr_null(kn_graph_fold_constants(g, &folded));
    ck_assert_int_eq(folded, 2);
    ck_assert_int_eq(g->n_nodes, 1);
    ck_assert_str_eq(g->nodes[0].op_type, "Add");
    const kn_tensor *c = g->values[c2].constant;
    ck_assert_ptr_nonnull(c);
    ck_assert_float_eq(((float *)c->data)[0], -1.0f);
    ck_assert_float_eq(((float *)c->data)[2], -3.0f);
    kn_graph_free(g);
}
END_TEST

START_TEST(ops_table_is_complete) {
    /* every op in ops.def must have shape inference and a CPU kernel */
    int missing = 0;
    for (int i = 0; i < KN_OP_COUNT; i++) {
        if (!kn_op_infer(i)) {
            fprintf(stderr, "missing infer: %s\n", kn_op_table[i].name);
            missing++;
        }
        if (!kn_cpu_backend()->kernel(kn_cpu_backend(), i)) {
            fprintf(stderr, "missing CPU kernel: %s %s\n", kn_op_table[i].domain, kn_op_table[i].name);
            missing++;
        }
    }
    /* the other columns: a params family with a decoder and a struct, and a stated gradient */
    for (int i = 0; i < KN_OP_COUNT; i++) {
        const kn_op_info *o = &kn_op_table[i];
        if (!o->params || !o->params_size || !o->params_name[0]) {
            fprintf(stderr, "params column: %s\n", o->name);
            missing++;
        }
        bool grad_ok = o->grad == KN_GRAD_TODO || o->grad == KN_GRAD_NONE || o->grad == KN_GRAD_RULE;
        if (!grad_ok || (o->grad == KN_GRAD_RULE) != (o->grad_rule != NULL)) {
            fprintf(stderr, "grad column: %s\n", o->name);
            missing++;
        }
    }
    fprintf(stderr, "op table: %d ops, %d missing pieces\n", KN_OP_COUNT, missing);
    ck_assert_int_eq(kn_op_lookup("MatMul", ""), KN_OP_MatMul);
    ck_assert_int_eq(kn_op_lookup("MatMul", "ai.onnx"), KN_OP_MatMul);
    ck_assert_int_eq(kn_op_lookup("Attention", "com.microsoft"), KN_OP_MsAttention);
    ck_assert_int_eq(kn_op_lookup("NoSuchOp", ""), -1);
    ck_assert_int_eq(missing, 0);
}
END_TEST

int main(void) {
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, status_messages);
    tcase_add_test(tc, tensor_guards);
    tcase_add_test(tc, threadpool_covers_range_once);
    tcase_add_test(tc, threadpool_nested_and_concurrent);
    tcase_add_test(tc, planner_reuses_and_never_overlaps);
    tcase_add_test(tc, planner_in_place);
    tcase_add_test(tc, toposort_orders_and_detects_cycles);
    tcase_add_test(tc, constant_folding);
    tcase_add_test(tc, ops_table_is_complete);
    suite_add_tcase(s, tc);
    return kn_test_run_suite(s);
}
