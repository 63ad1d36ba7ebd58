/* Fusion chosen per backend: a model loaded with fusion on keeps its graph unfused, and each
 * backend's sessions run a copy fused only with the passes whose fused ops that backend has
 * kernels for (kn_model_graph_for), made once and shared. Checked on the zoo's BERT with the
 * CPU backend (every fusion) and with stand-in backends that lack some fused kernels, whose
 * graphs must then hold none of those ops; the results of the fused and unfused graphs agree.
 * Skipped visibly when the zoo is absent. */
#include "graph/model.h"
#include "graph/ops.h"
#include "graph/passes.h"
#include "kiln.h"
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char zoo_model[4096];

static int have_zoo(void) {
    const char *src = getenv("KILN_SOURCE_DIR");
    snprintf(zoo_model, sizeof zoo_model, "%s/../shared/zoo/bert_feature/model.onnx", src ? src : ".");
    FILE *f = fopen(zoo_model, "rb");
    if (!f) {
        printf("skipped: model zoo not found at %s\n", zoo_model);
        return 0;
    }
    fclose(f);
    return 1;
}

static int count_op(const kn_graph *g, int op) {
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++) n += g->nodes[i].op == op;
    return n;
}

/* A CPU backend without kernels for the ops in `lacks` (a stand-in for a device backend). */
static const int *lacks;
static int n_lacks;
static kn_kernel_fn lacking_kernel(const kn_backend *b, int op) {
    for (int i = 0; i < n_lacks; i++)
        if (lacks[i] == op) return NULL;
    return kn_cpu_backend()->kernel(kn_cpu_backend(), op);
}

static const int fused_ops[] = {
    KN_OP_KnSdpa, KN_OP_MsBiasGelu, KN_OP_MsGelu, KN_OP_MsFastGelu, KN_OP_MsSkipLayerNormalization, KN_OP_MsFusedConv};

START_TEST(test_fusion_per_backend) {
    if (!have_zoo()) return;
    kn_model_options mo;
    kn_model_options_init(&mo);
    mo.fuse = 1;
    kn_model *m = NULL;
    kn_status *st = kn_model_load_ex(zoo_model, &mo, &m);
    ck_assert_msg(!st, "%s", st ? kn_status_message(st) : "");
    for (size_t k = 0; k < sizeof fused_ops / sizeof *fused_ops; k++)
        ck_assert_int_eq(count_op(m->graph, fused_ops[k]), 0); /* loading keeps the file's graph */

    const kn_graph *gc = NULL, *gc2 = NULL;
    ck_assert_ptr_null(kn_model_graph_for(m, kn_cpu_backend(), &gc));
    ck_assert_ptr_ne(gc, m->graph);
    ck_assert_int_gt(count_op(gc, KN_OP_KnSdpa), 0);
    ck_assert_int_gt(count_op(gc, KN_OP_MsSkipLayerNormalization), 0);
    ck_assert_int_gt(count_op(gc, KN_OP_MsBiasGelu) + count_op(gc, KN_OP_MsGelu), 0);
    ck_assert_ptr_null(kn_model_graph_for(m, kn_cpu_backend(), &gc2));
    ck_assert_ptr_eq(gc, gc2); /* made once */

    /* a backend with no fused kernel and no whole-graph hook runs the loaded graph itself */
    kn_backend none = *kn_cpu_backend();
    none.kernel = lacking_kernel;
    none.graph_optimize = NULL;
    lacks = fused_ops;
    n_lacks = 6;
    const kn_graph *gn = NULL;
    ck_assert_ptr_null(kn_model_graph_for(m, &none, &gn));
    ck_assert_ptr_eq(gn, m->graph);

    /* one with attention only gets attention fused, nothing else */
    static const int no_ln_gelu[] = {KN_OP_MsBiasGelu, KN_OP_MsGelu, KN_OP_MsFastGelu, KN_OP_MsSkipLayerNormalization,
                                     KN_OP_MsFusedConv};
    kn_backend attn = *kn_cpu_backend();
    attn.kernel = lacking_kernel;
    lacks = no_ln_gelu;
    n_lacks = 5;
    const kn_graph *ga = NULL;
    ck_assert_ptr_null(kn_model_graph_for(m, &attn, &ga));
    ck_assert_int_gt(count_op(ga, KN_OP_KnSdpa), 0);
    for (int k = 0; k < 5; k++) ck_assert_int_eq(count_op(ga, no_ln_gelu[k]), 0);
    /* on the CPU the past of a decoder is split off the attention too (KnSdpa's CPU kernel alone reads it apart),
     * and attention with float16 / bfloat16 constants fuses there (KN_FUSE_ATTENTION_LOWP) */
    ck_assert_int_eq(kn_fusions_for_backend(&attn), KN_FUSE_ATTENTION | KN_FUSE_SPLIT_PAST_KV | KN_FUSE_ATTENTION_LOWP);
    ck_assert_int_eq(kn_fusions_for_backend(kn_cpu_backend()),
                     (KN_FUSE_ALL & ~KN_FUSE_GEMM_ACT) | KN_FUSE_SPLIT_PAST_KV |
                         KN_FUSE_ATTENTION_LOWP); /* FusedGemm: device only */
    /* the CUDA KnSdpa reads a past in place too (kernels/cuda/attention.cu); no KnSdpa, no split */
    kn_backend dev_attn = attn;
    dev_attn.device = KN_DEVICE_CUDA;
    ck_assert_int_eq(kn_fusions_for_backend(&dev_attn) & KN_FUSE_SPLIT_PAST_KV, KN_FUSE_SPLIT_PAST_KV);
    /* the low-precision attention fusion is the CPU's only: CUDA's fp16 path is not checked against it */
    ck_assert_int_eq(kn_fusions_for_backend(&dev_attn) & KN_FUSE_ATTENTION_LOWP, 0);
    lacks = fused_ops; /* none's kernels again: KnSdpa among those lacking */
    n_lacks = 6;
    ck_assert_int_eq(kn_fusions_for_backend(&none) & KN_FUSE_SPLIT_PAST_KV, 0);
    lacks = no_ln_gelu;
    n_lacks = 5;

    /* the same answers from the fused and the unfused graph */
    kn_session_options so;
    kn_session_options_init(&so);
    kn_session *s = NULL;
    ck_assert_ptr_null(kn_session_create(m, &so, &s));
    kn_model_options mn;
    kn_model_options_init(&mn);
    mn.fuse = 0;
    kn_model *m0 = NULL;
    ck_assert_ptr_null(kn_model_load_ex(zoo_model, &mn, &m0));
    kn_session *s0 = NULL;
    ck_assert_ptr_null(kn_session_create(m0, &so, &s0));
    enum { B = 2, S = 7 };
    int64_t ids[B * S], mask[B * S], types[B * S];
    for (int i = 0; i < B * S; i++) {
        ids[i] = (i * 131) % 1000 + 5;
        mask[i] = i % S < S - i / S;
        types[i] = 0;
    }
    kn_named_tensor in[3] = {
        {.name = "input_ids", .dtype = KN_I64, .ndim = 2, .dims = {B, S}, .data = ids},
        {.name = "attention_mask", .dtype = KN_I64, .ndim = 2, .dims = {B, S}, .data = mask},
        {.name = "token_type_ids", .dtype = KN_I64, .ndim = 2, .dims = {B, S}, .data = types},
    };
    kn_value_info vi;
    ck_assert_ptr_null(kn_session_output_info(s, 0, &vi));
    kn_named_tensor o1[1] = {{.name = vi.name}}, o0[1] = {{.name = vi.name}};
    ck_assert_ptr_null(kn_session_run(s, in, 3, o1, 1));
    ck_assert_ptr_null(kn_session_run(s0, in, 3, o0, 1));
    size_t n = 1;
    for (int d = 0; d < o1[0].ndim; d++) n *= (size_t)o1[0].dims[d];
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)((float *)o1[0].data)[i] - ((float *)o0[0].data)[i]);
        if (d > worst) worst = d;
    }
    printf("fused vs unfused: %zu values, max |diff| %.3g\n", n, worst);
    ck_assert(worst < 1e-4);
    free(o1[0].data);
    free(o0[0].data);
    kn_session_free(s);
    kn_session_free(s0);
    kn_model_free(m);
    kn_model_free(m0);
}
END_TEST

int main(void) {
    Suite *su = suite_create("fuse_backend");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_fusion_per_backend);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
