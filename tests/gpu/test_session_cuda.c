/* Whole models through a device=cuda session against a device=cpu session of the same model:
 * every zoo model's first test data set, outputs compared at rtol 1e-3 / atol 1e-4, each model
 * run twice on the device (the second run reuses the cached plan, arena, weights and stream).
 * Two sessions share one model so the weight cache is exercised across sessions. ResNet and ViT
 * must run with no op left to the CPU (the fallback notices of the session log). Exit 77 with
 * "skipped: no CUDA device" where there is none. Usage: test_session_cuda ZOO_DIR */
#include "graph/model.h"
#include "graph/ops.h"
#include "graph/passes.h"
#include "tests/gpu/zoo_io.h"
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Ops the cuda sessions leave to the CPU (the backend's "runs on the CPU" notices): the image
 * models (ResNet, ViT) must have none, now that the convolution family has CUDA kernels. */
static int fallbacks;
static void on_log(void *user, kn_log_level level, const char *msg) {
    (void)user;
    (void)level;
    if (strstr(msg, "runs on the CPU")) {
        printf("  %s\n", msg);
        fallbacks++;
    }
}
static bool no_fallback_model(const char *name) {
    return !strcmp(name, "resnet_imgcls") || !strcmp(name, "vit_imgcls");
}
static int n_sdpa_total; /* KnSdpa nodes in the cuda graphs, over all models */

static int run_model(const char *zoo, const char *name, double *worst_out) {
    char path[1024], ds[1024];
    if (snprintf(path, sizeof path, "%s/%s/model.onnx", zoo, name) >= (int)sizeof path) return -1;
    if (snprintf(ds, sizeof ds, "%s/%s/test_data_set_0", zoo, name) >= (int)sizeof ds) return -1;
    struct stat sb;
    if (stat(path, &sb) || stat(ds, &sb)) return -1;
    kn_model *m = NULL;
    kn_status *st = kn_model_load(path, &m);
    if (st) {
        printf("FAIL %s: load: %s\n", name, kn_status_message(st));
        kn_status_free(st);
        return 1;
    }
    kn_session_options oc, og;
    kn_session_options_init(&oc);
    kn_session_options_init(&og);
    og.device = KN_DEVICE_CUDA;
    og.log = on_log;
    int fb0 = fallbacks;
    kn_session *sc = NULL, *sg = NULL, *sg2 = NULL;
    if ((st = kn_session_create(m, &oc, &sc)) || (st = kn_session_create(m, &og, &sg)) ||
        (st = kn_session_create(m, &og, &sg2))) {
        printf("FAIL %s: session: %s\n", name, kn_status_message(st));
        kn_status_free(st);
        kn_session_free(sc);
        kn_session_free(sg);
        kn_session_free(sg2);
        kn_model_free(m);
        return 1;
    }
    int n_in = kn_session_input_count(sc), n_out = kn_session_output_count(sc), fail = 0;
    /* a cuda session fuses attention as the CPU one does: every kiln:KnSdpa of the CPU's graph is
     * in the device's graph too (kernels/cuda/attention.cu), not left as MatMul/Softmax */
    const kn_backend *cub = NULL;
    const kn_graph *gcpu = NULL, *gdev = NULL;
    if ((st = kn_backend_get(KN_DEVICE_CUDA, 0, &cub)) || (st = kn_model_graph_for(m, kn_cpu_backend(), &gcpu)) ||
        (st = kn_model_graph_for(m, cub, &gdev))) {
        printf("FAIL %s: graphs: %s\n", name, kn_status_message(st));
        kn_status_free(st);
        fail = 1;
    } else {
        int nc = 0, nd = 0;
        for (int i = 0; i < gcpu->n_nodes; i++) nc += gcpu->nodes[i].op == KN_OP_KnSdpa;
        for (int i = 0; i < gdev->n_nodes; i++) nd += gdev->nodes[i].op == KN_OP_KnSdpa;
        if (nc != nd) {
            printf("FAIL %s: %d fused attention nodes on the CPU, %d on cuda\n", name, nc, nd);
            fail = 1;
        }
        n_sdpa_total += nd;
    }
    kn_named_tensor *in = calloc((size_t)n_in, sizeof *in);
    kn_tensor **held = calloc((size_t)n_in, sizeof *held);
    for (int k = 0; k < n_in && !fail; k++) {
        char f[1200];
        snprintf(f, sizeof f, "%s/input_%d.pb", ds, k);
        char *nm = NULL;
        st = kn_tensor_proto_read_file(f, &held[k], &nm);
        if (st) {
            printf("FAIL %s: %s: %s\n", name, f, kn_status_message(st));
            kn_status_free(st);
            fail = 1;
            break;
        }
        kn_value_info vi;
        kn_session_input_info(sc, k, &vi);
        in[k].name = vi.name;
        in[k].dtype = held[k]->dtype;
        in[k].ndim = held[k]->ndim;
        memcpy(in[k].dims, held[k]->dims, sizeof(int64_t) * (size_t)held[k]->ndim);
        in[k].data = held[k]->data;
        free(nm);
    }
    double worst = 0;
    for (int rep = 0; rep < 3 && !fail; rep++) {
        kn_named_tensor *oc_t = calloc((size_t)n_out, sizeof *oc_t), *og_t = calloc((size_t)n_out, sizeof *og_t);
        for (int k = 0; k < n_out; k++) {
            kn_value_info vi;
            kn_session_output_info(sc, k, &vi);
            oc_t[k].name = og_t[k].name = vi.name;
        }
        if ((st = kn_session_run(sc, in, n_in, oc_t, n_out)) ||
            (st = kn_session_run(rep == 2 ? sg2 : sg, in, n_in, og_t, n_out))) {
            printf("FAIL %s: run %d: %s\n", name, rep, kn_status_message(st));
            kn_status_free(st);
            fail = 1;
        }
        for (int k = 0; k < n_out && !fail; k++) {
            if (oc_t[k].dtype != og_t[k].dtype || oc_t[k].ndim != og_t[k].ndim) {
                printf("FAIL %s: output %d type/rank differs\n", name, k);
                fail = 1;
                break;
            }
            kn_tensor a = {0}, b = {0};
            a.dtype = b.dtype = oc_t[k].dtype;
            kn_tensor_set_shape(&a, oc_t[k].ndim, oc_t[k].dims);
            kn_tensor_set_shape(&b, og_t[k].ndim, og_t[k].dims);
            if (!kn_same_shape(&a, &b)) {
                printf("FAIL %s: output %d shape differs\n", name, k);
                fail = 1;
                break;
            }
            a.data = oc_t[k].data;
            b.data = og_t[k].data;
            for (int64_t i = 0; i < kn_numel(&a); i++) {
                double x = kn_get_f64(&a, i), y = kn_get_f64(&b, i);
                if (isnan(x) && isnan(y)) continue;
                double d = fabs(x - y);
                if (d > worst) worst = d;
                if (!(d <= 1e-4 + 1e-3 * fabs(x))) {
                    printf("FAIL %s: run %d output %d element %lld: cpu %.7g cuda %.7g\n", name, rep, k, (long long)i,
                           x, y);
                    fail = 1;
                    break;
                }
            }
        }
        for (int k = 0; k < n_out; k++) {
            kn_free(oc_t[k].data);
            kn_free(og_t[k].data);
        }
        free(oc_t);
        free(og_t);
    }
    if (no_fallback_model(name) && fallbacks != fb0) {
        printf("FAIL %s: %d ops ran on the CPU in a cuda session\n", name, fallbacks - fb0);
        fail = 1;
    }
    for (int k = 0; k < n_in; k++) kn_tensor_free(held[k]);
    free(held);
    free(in);
    kn_session_free(sc);
    kn_session_free(sg);
    kn_session_free(sg2);
    kn_model_free(m);
    *worst_out = worst;
    return fail;
}

int main(int argc, char **argv) {
    if (zoo_io_no_cuda()) return 77;
    const char *zoo = argc > 1 ? argv[1] : "../shared/zoo";
    DIR *d = opendir(zoo);
    if (!d) {
        printf("skipped: model zoo not found at %s\n", zoo);
        return 77;
    }
    struct dirent *e;
    char names[64][256];
    int n = 0;
    while ((e = readdir(d)) && n < 64)
        if (e->d_name[0] != '.') snprintf(names[n++], sizeof names[0], "%s", e->d_name);
    closedir(d);
    int passed = 0, failed = 0;
    printf("%-24s %8s %12s\n", "model", "result", "max |diff|");
    for (int i = 0; i < n; i++) {
        double worst = 0;
        int r = run_model(zoo, names[i], &worst);
        if (r < 0) continue;
        printf("%-24s %8s %12.3g\n", names[i], r ? "FAIL" : "ok", worst);
        if (r) failed++;
        else passed++;
    }
    printf("%d passed, %d failed; %d fused attention (kiln:KnSdpa) nodes ran on cuda\n", passed, failed, n_sdpa_total);
    return failed || !passed ? 1 : 0;
}
