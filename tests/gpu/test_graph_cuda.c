/* CUDA graphs and sequence buckets. The runtime's capture rules, through the CUDA runtime API (the interpreter's
 * stand-in in gpusim.graphs, the real one in gpu.graphs): work queued on a capturing stream runs
 * only when the graph is launched, and each launch runs it again; a synchronisation during a
 * capture fails and invalidates it. Then sessions: a zoo model run N times on a cuda session
 * (fp32 and fp16) with inputs changed every run records its plan once (second run) and replays it
 * for every later run, each result matching a CPU session on the same inputs (rtol 1e-3 / atol
 * 1e-4 in fp32, relative L2 < 1e-2 in fp16), and a replay of the same inputs is bit-identical to
 * the recorded run; a session that profiles never records (its per-op times would be void). Then a sweep of sequence lengths through one bucket
 * (bucket_sweep). Usage: test_graph_cuda ZOO_DIR [MODEL]. Exit 77 where there is no CUDA device. */
#include "graph/model.h"
#include "graph/ops.h"
#include "runtime/executor.h"
#include "tests/gpu/zoo_io.h"
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fails;
#define CHECK(c, ...) \
    do { \
        if (!(c)) { \
            printf("FAIL %s:%d: ", __FILE__, __LINE__); \
            printf(__VA_ARGS__); \
            printf("\n"); \
            fails++; \
        } \
    } while (0)

static void runtime_rules(void) {
    cudaStream_t s;
    unsigned char *d = NULL, *h = NULL;
    CHECK(cudaStreamCreate(&s) == cudaSuccess, "cudaStreamCreate");
    CHECK(cudaMalloc((void **)&d, 64) == cudaSuccess, "cudaMalloc");
    CHECK(cudaHostAlloc((void **)&h, 64, cudaHostAllocDefault) == cudaSuccess, "cudaHostAlloc");
    if (!d || !h) return;
    CHECK(cudaMemset(d, 0, 64) == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess, "cudaMemset");
    memset(h, 0, 64);

    /* a wait inside a capture: refused, and the capture is void */
    cudaGraph_t g = NULL;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess, "begin capture");
    CHECK(cudaMemsetAsync(d, 7, 64, s) == cudaSuccess, "memset while capturing");
    enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    CHECK(cudaStreamIsCapturing(s, &cs) == cudaSuccess && cs == cudaStreamCaptureStatusActive, "capturing");
    cudaError_t e = cudaStreamSynchronize(s);
    CHECK(e != cudaSuccess, "cudaStreamSynchronize during a capture succeeded");
    e = cudaStreamEndCapture(s, &g);
    CHECK(e == cudaErrorStreamCaptureInvalidated && g == NULL, "end of an invalidated capture: %s",
          cudaGetErrorName(e));
    cudaGetLastError();

    /* a synchronous copy on the legacy stream while a blocking stream captures: refused too */
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess, "begin capture");
    e = cudaMemcpy(h, d, 64, cudaMemcpyDeviceToHost);
    CHECK(e != cudaSuccess, "cudaMemcpy during a capture succeeded");
    e = cudaStreamEndCapture(s, &g);
    CHECK(e != cudaSuccess && g == NULL, "capture survived a synchronous copy");
    if (g) cudaGraphDestroy(g);
    g = NULL;
    cudaGetLastError();

    /* a clean capture: nothing runs until launched, and every launch runs it all again */
    memset(h, 0, 64);
    CHECK(cudaMemset(d, 0, 64) == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess, "cudaMemset");
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess, "begin capture");
    CHECK(cudaMemsetAsync(d, 7, 32, s) == cudaSuccess, "memset while capturing");
    CHECK(cudaMemcpyAsync(d + 32, d, 32, cudaMemcpyDeviceToDevice, s) == cudaSuccess, "d2d while capturing");
    CHECK(cudaMemcpyAsync(h, d, 64, cudaMemcpyDeviceToHost, s) == cudaSuccess, "d2h while capturing");
    CHECK(cudaStreamEndCapture(s, &g) == cudaSuccess && g, "end capture");
    CHECK(h[0] == 0 && h[63] == 0, "captured work ran before the launch");
    cudaGraphExec_t x = NULL;
    CHECK(g && cudaGraphInstantiate(&x, g, 0) == cudaSuccess, "instantiate");
    if (g) cudaGraphDestroy(g); /* the executable graph outlives its graph */
    for (int rep = 0; x && rep < 3; rep++) {
        memset(h, 0, 64);
        CHECK(cudaMemset(d, 1, 64) == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess, "cudaMemset");
        CHECK(cudaGraphLaunch(x, s) == cudaSuccess && cudaStreamSynchronize(s) == cudaSuccess, "launch %d", rep);
        int ok = 1;
        for (int i = 0; i < 64; i++) ok &= h[i] == 7;
        CHECK(ok, "launch %d: the graph's memset/copies did not all run (h[0]=%d h[63]=%d)", rep, h[0], h[63]);
    }
    if (x) cudaGraphExecDestroy(x);
    cudaFreeHost(h);
    cudaFree(d);
    cudaStreamDestroy(s);
}

static kn_named_tensor *run(kn_session *s, zoo_io *x) {
    kn_named_tensor *o = zoo_io_outputs(s, x->n_out);
    kn_status *st = kn_session_run(s, x->in, x->n_in, o, x->n_out);
    if (st) {
        printf("FAIL run: %s\n", kn_status_message(st));
        kn_status_free(st);
        fails++;
        free(o);
        return NULL;
    }
    return o;
}

/* worst |a-b| beyond rtol/atol (fp32) or relative L2 (fp16) over the outputs */
static double compare(const kn_named_tensor *a, const kn_named_tensor *b, int n, bool l2) {
    double worst = 0;
    for (int k = 0; k < n; k++) {
        kn_tensor x = {0}, y = {0};
        x.dtype = a[k].dtype;
        y.dtype = b[k].dtype;
        kn_tensor_set_shape(&x, a[k].ndim, a[k].dims);
        kn_tensor_set_shape(&y, b[k].ndim, b[k].dims);
        if (x.dtype != y.dtype || !kn_same_shape(&x, &y)) return INFINITY;
        x.data = a[k].data;
        y.data = b[k].data;
        double num = 0, den = 0;
        for (int64_t i = 0; i < kn_numel(&x); i++) {
            double u = kn_get_f64(&x, i), v = kn_get_f64(&y, i);
            if (l2) {
                num += (u - v) * (u - v);
                den += u * u;
            } else {
                double ex = fabs(u - v) / (1e-4 + 1e-3 * fabs(u));
                if (!(ex <= worst)) worst = ex;
            }
        }
        if (l2) {
            double e = sqrt(num / (den > 0 ? den : 1)) / 1e-2;
            if (!(e <= worst)) worst = e;
        }
    }
    return worst; /* <= 1: within tolerance */
}

static void session_replays(const char *zoo, const char *name, kn_precision prec) {
    const int N = 5;
    char path[1024];
    if (snprintf(path, sizeof path, "%s/%s/model.onnx", zoo, name) >= (int)sizeof path) return;
    kn_model *m = NULL;
    kn_status *st = kn_model_load(path, &m);
    if (st) {
        printf("FAIL %s: %s\n", path, kn_status_message(st));
        kn_status_free(st);
        fails++;
        return;
    }
    kn_session_options oc, og, op;
    kn_session_options_init(&oc);
    kn_session_options_init(&og);
    og.device = KN_DEVICE_CUDA;
    og.precision = prec;
    op = og;
    op.profile = 1;
    kn_session *sc = NULL, *sg = NULL, *sp = NULL;
    if ((st = kn_session_create(m, &oc, &sc)) || (st = kn_session_create(m, &og, &sg)) ||
        (st = kn_session_create(m, &op, &sp))) {
        printf("FAIL %s: %s\n", name, kn_status_message(st));
        kn_status_free(st);
        fails++;
    }
    zoo_io x = {0};
    if (sc && sg && sp && zoo_io_load(sc, zoo, name, &x) == 0) {
        kn_named_tensor *prev = NULL;
        for (int r = 0; r < N; r++) {
            if (r != 2) zoo_io_vary(&x, r); /* run 2 (the first replay) repeats run 1's inputs */
            kn_named_tensor *oc_t = run(sc, &x), *og_t = run(sg, &x);
            if (oc_t && og_t) {
                double w = compare(oc_t, og_t, x.n_out, prec != KN_PRECISION_FP32);
                CHECK(w <= 1, "%s %s run %d: cuda differs from cpu (%.3g x tolerance)", name, kn_precision_name(prec),
                      r, w);
            }
            if (r == 2 && prev && og_t)
                for (int k = 0; k < x.n_out; k++)
                    CHECK(prev[k].capacity == og_t[k].capacity && !memcmp(prev[k].data, og_t[k].data, prev[k].capacity),
                          "%s %s: the replay of run 1's inputs differs from run 1 (output %d)", name,
                          kn_precision_name(prec), k);
            zoo_io_free_outs(prev, x.n_out);
            prev = og_t;
            zoo_io_free_outs(oc_t, x.n_out);
            zoo_io_free_outs(run(sp, &x), x.n_out);
        }
        zoo_io_free_outs(prev, x.n_out);
        int64_t cap = -1, rep = -1, pcap = -1, prep = -1;
        kn_session_graph_counts(sg, &cap, &rep);
        kn_session_graph_counts(sp, &pcap, &prep);
        printf("%-20s %-5s runs %d: recorded %lld, replayed %lld (profiling session: %lld, %lld)\n", name,
               kn_precision_name(prec), N, (long long)cap, (long long)rep, (long long)pcap, (long long)prep);
        CHECK(cap == 1 && rep == N - 2, "%s %s: %lld recordings and %lld replays in %d runs, expected 1 and %d", name,
              kn_precision_name(prec), (long long)cap, (long long)rep, N, N - 2);
        CHECK(pcap == 0 && prep == 0, "a profiling session replayed a graph (its per-op times would be void)");
    }
    zoo_io_free(&x);
    kn_session_free(sc);
    kn_session_free(sg);
    kn_session_free(sp);
    kn_model_free(m);
}

/* Sequence buckets (kn_session_options.seq_bucket = 16): lengths 3..8 of the test inputs (their
 * first L tokens) all run padded to 16 through one plan on the cuda session, which records it once
 * and replays it for the later lengths; each result, cut back to L, matches an unbucketed CPU
 * session on the unpadded inputs. */
static void bucket_sweep(const char *zoo, const char *name) {
    char path[1024];
    if (snprintf(path, sizeof path, "%s/%s/model.onnx", zoo, name) >= (int)sizeof path) return;
    kn_model *m = NULL;
    kn_status *st = kn_model_load(path, &m);
    if (st) {
        printf("FAIL %s: %s\n", path, kn_status_message(st));
        kn_status_free(st);
        fails++;
        return;
    }
    kn_session_options oc, og;
    kn_session_options_init(&oc);
    kn_session_options_init(&og);
    og.device = KN_DEVICE_CUDA;
    og.seq_bucket = 16;
    kn_session *sc = NULL, *sg = NULL;
    if ((st = kn_session_create(m, &oc, &sc)) || (st = kn_session_create(m, &og, &sg))) {
        printf("FAIL %s: %s\n", name, kn_status_message(st));
        kn_status_free(st);
        fails++;
    }
    zoo_io full = {0};
    if (sc && sg && zoo_io_load(sc, zoo, name, &full) == 0) {
        int64_t plans0 = kn_session_plans_built(sg);
        for (int len = 3; len <= 8; len++) {
            zoo_io x = full;
            kn_tensor *cut[8] = {0};
            for (int k = 0; k < x.n_in; k++) {
                const kn_tensor *t = full.held[k];
                if (t->ndim != 2 || t->dims[1] < len) continue;
                int64_t dims[2] = {t->dims[0], len};
                if (kn_tensor_new(t->dtype, 2, dims, &cut[k])) continue;
                size_t es = kn_dtype_size(t->dtype);
                for (int64_t b = 0; b < dims[0]; b++)
                    memcpy((char *)cut[k]->data + (size_t)(b * len) * es,
                           (const char *)t->data + (size_t)(b * t->dims[1]) * es, (size_t)len * es);
                x.in[k].dims[1] = len;
                x.in[k].data = cut[k]->data;
            }
            kn_named_tensor *oc_t = run(sc, &x), *og_t = run(sg, &x);
            if (oc_t && og_t) {
                double w = compare(oc_t, og_t, x.n_out, false);
                CHECK(w <= 1, "%s length %d padded to 16: cuda differs from cpu (%.3g x tolerance)", name, len, w);
            }
            zoo_io_free_outs(oc_t, x.n_out);
            zoo_io_free_outs(og_t, x.n_out);
            for (int k = 0; k < x.n_in; k++) kn_tensor_free(cut[k]);
        }
        int64_t cap = -1, rep = -1, plans = kn_session_plans_built(sg) - plans0;
        kn_session_graph_counts(sg, &cap, &rep);
        printf("%-20s lengths 3..8 in buckets of 16: %lld plan(s), recorded %lld, replayed %lld\n", name,
               (long long)plans, (long long)cap, (long long)rep);
        CHECK(plans == 1 && cap == 1 && rep == 4,
              "%s: %lld plans, %lld recordings, %lld replays for 6 lengths in one "
              "bucket (expected 1, 1, 4)",
              name, (long long)plans, (long long)cap, (long long)rep);
    }
    zoo_io_free(&full);
    kn_session_free(sc);
    kn_session_free(sg);
    kn_model_free(m);
}

int main(int argc, char **argv) {
    if (zoo_io_no_cuda()) return 77;
    const char *zoo = argc > 1 ? argv[1] : "../shared/zoo";
    runtime_rules();
    const char *models[] = {argc > 2 ? argv[2] : "bert_feature", "gpt2_lm"};
    for (int i = 0; i < (argc > 2 ? 1 : 2); i++) {
        session_replays(zoo, models[i], KN_PRECISION_FP32);
        session_replays(zoo, models[i], KN_PRECISION_FP16);
        bucket_sweep(zoo, models[i]);
    }
    printf("%s\n", fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}
