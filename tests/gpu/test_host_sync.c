/* No host synchronisation inside a run (issue 14). The SIMT interpreter's runtime counts, per thread, every
 * call that makes the host wait for the device on a GPU (stream, event and device synchronisations,
 * cudaFree/cudaFreeHost, cudaMemcpy, async copies between the device and pageable host memory):
 * kn_sim_host_syncs, a test-only accessor. Each zoo model on a cuda session, run 4 times with new
 * inputs each time (run 1 plain, run 2 recorded as a CUDA graph, runs 3 and 4 replayed), and again
 * with KILN_CUDA_GRAPHS=0 (every run plain), makes exactly 1 host synchronisation per run (the
 * run's end, after its last copy to the host), and its outputs match a CPU session's (rtol 1e-3,
 * atol 1e-4). Then a bidirectional LSTM written here with ragged sequence_lens given as an input
 * (lengths change every run, a zero and a full length among them): 1 synchronisation per run,
 * replayed or not, outputs == CPU (rtol 1e-4, atol 1e-5) and Y exactly zero past each row's end.
 * A run whose sequence length is out of range fails, naming the LSTM. First, the counter itself: each
 * kind of wait counts one, and stream-ordered work (async copies with pinned memory, device to
 * device, memsets, events recorded and waited on by a stream) counts none. Usage: test_host_sync
 * ZOO_DIR [MODEL]. Exit 77 where there is no CUDA device. */
#include "graph/model.h"
#include "graph/ops.h"
#include "runtime/executor.h"
#include "tests/gpu/zoo_io.h"
#include <cuda_runtime.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* kernels/cuda/simt/runtime.cpp: the host synchronisations this thread made so far */
long long kn_sim_host_syncs(void);

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

static kn_named_tensor *run(kn_session *s, const zoo_io *x, long long *syncs) {
    kn_named_tensor *o = zoo_io_outputs(s, x->n_out);
    long long before = kn_sim_host_syncs();
    kn_status *st = kn_session_run(s, x->in, x->n_in, o, x->n_out);
    if (syncs) *syncs = kn_sim_host_syncs() - before;
    if (st) {
        printf("FAIL run: %s\n", kn_status_message(st));
        kn_status_free(st);
        fails++;
        free(o);
        return NULL;
    }
    return o;
}

/* worst |a-b| / (atol + rtol |a|) over the outputs: <= 1 is within tolerance */
static double compare(const kn_named_tensor *a, const kn_named_tensor *b, int n, double rtol, double atol) {
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
        for (int64_t i = 0; i < kn_numel(&x); i++) {
            double u = kn_get_f64(&x, i), v = kn_get_f64(&y, i);
            double ex = fabs(u - v) / (atol + rtol * fabs(u));
            if (!(ex <= worst)) worst = ex;
        }
    }
    return worst;
}

static kn_model *load(const char *path) {
    kn_model *m = NULL;
    kn_status *st = kn_model_load(path, &m);
    if (st) {
        printf("FAIL %s: %s\n", path, kn_status_message(st));
        kn_status_free(st);
        fails++;
    }
    return m;
}

static void sessions(kn_model *m, bool graphs, kn_session **sc, kn_session **sg) {
    kn_session_options oc, og;
    kn_session_options_init(&oc);
    kn_session_options_init(&og);
    og.device = KN_DEVICE_CUDA;
    if (graphs) unsetenv("KILN_CUDA_GRAPHS");
    else setenv("KILN_CUDA_GRAPHS", "0", 1);
    kn_status *st = NULL;
    *sc = *sg = NULL;
    if ((st = kn_session_create(m, &oc, sc)) || (st = kn_session_create(m, &og, sg))) {
        printf("FAIL session: %s\n", kn_status_message(st));
        kn_status_free(st);
        fails++;
    }
    unsetenv("KILN_CUDA_GRAPHS");
}

/* ---- the counter ---- */

static void counter_rules(void) {
    cudaStream_t s = NULL;
    cudaEvent_t ev = NULL;
    unsigned char *d = NULL, *pin = NULL, host[64];
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess && cudaEventCreate(&ev) == cudaSuccess,
          "stream, event");
    CHECK(cudaMalloc((void **)&d, 64) == cudaSuccess && cudaHostAlloc((void **)&pin, 64, 0) == cudaSuccess, "memory");
    if (!s || !ev || !d || !pin) return;
    memset(host, 1, sizeof host);
    struct {
        const char *what;
        long long want;
        cudaError_t e;
        long long got;
    } c[12];
    int n = 0;
#define COUNT(call, w) \
    do { \
        long long b0 = kn_sim_host_syncs(); \
        c[n].e = (call); \
        c[n].got = kn_sim_host_syncs() - b0; \
        c[n].what = #call; \
        c[n++].want = (w); \
    } while (0)
    COUNT(cudaMemcpyAsync(d, pin, 64, cudaMemcpyHostToDevice, s), 0);
    COUNT(cudaMemcpyAsync(pin, d, 64, cudaMemcpyDeviceToHost, s), 0);
    COUNT(cudaMemcpyAsync(d + 32, d, 32, cudaMemcpyDeviceToDevice, s), 0);
    COUNT(cudaMemsetAsync(d, 0, 64, s), 0);
    COUNT(cudaEventRecord(ev, s), 0);
    COUNT(cudaStreamWaitEvent(s, ev, 0), 0);
    COUNT(cudaMemcpyAsync(host, d, 64, cudaMemcpyDeviceToHost, s), 1); /* pageable: returns once done */
    COUNT(cudaMemcpyAsync(d, host, 64, cudaMemcpyHostToDevice, s), 1);
    COUNT(cudaStreamSynchronize(s), 1);
    COUNT(cudaMemcpy(pin, d, 64, cudaMemcpyDeviceToHost), 1); /* after the wait: stream order holds */
    COUNT(cudaEventSynchronize(ev), 1);
    COUNT(cudaDeviceSynchronize(), 1);
#undef COUNT
    for (int i = 0; i < n; i++)
        CHECK(c[i].e == cudaSuccess && c[i].got == c[i].want,
              "%s: %s, counted %lld host synchronisations, expected %lld", c[i].what, cudaGetErrorName(c[i].e),
              c[i].got, c[i].want);
    long long b0 = kn_sim_host_syncs();
    cudaFreeHost(pin);
    cudaFree(d);
    CHECK(kn_sim_host_syncs() - b0 == 2, "cudaFreeHost + cudaFree counted %lld, expected 2", kn_sim_host_syncs() - b0);
    cudaEventDestroy(ev);
    cudaStreamDestroy(s);
    cudaGetLastError(); /* a failure above must not fail the sessions' first launch */
    printf("counter: %d calls checked\n", n + 2);
}

/* ---- the zoo ---- */

static void zoo_model(const char *zoo, const char *name, bool graphs) {
    const int N = graphs ? 4 : 2;
    char path[1024];
    if (snprintf(path, sizeof path, "%s/%s/model.onnx", zoo, name) >= (int)sizeof path) return;
    kn_model *m = load(path);
    if (!m) return;
    kn_session *sc, *sg;
    sessions(m, graphs, &sc, &sg);
    zoo_io x = {0};
    long long per_run[8] = {0};
    if (sc && sg && zoo_io_load(sc, zoo, name, &x) == 0) {
        for (int r = 0; r < N; r++) {
            zoo_io_vary(&x, r);
            kn_named_tensor *oc = run(sc, &x, NULL), *og = run(sg, &x, &per_run[r]);
            if (oc && og) {
                double w = compare(oc, og, x.n_out, 1e-3, 1e-4);
                CHECK(w <= 1, "%s run %d: cuda differs from cpu (%.3g x tolerance)", name, r + 1, w);
            }
            CHECK(per_run[r] == 1, "%s%s run %d: %lld host synchronisations, expected 1", name,
                  graphs ? "" : " (no graphs)", r + 1, per_run[r]);
            zoo_io_free_outs(oc, x.n_out);
            zoo_io_free_outs(og, x.n_out);
        }
        int64_t cap = -1, rep = -1;
        kn_session_graph_counts(sg, &cap, &rep);
        printf("%-18s %-9s syncs per run:", name, graphs ? "graphs" : "no graphs");
        for (int r = 0; r < N; r++) printf(" %lld", per_run[r]);
        printf("  (recorded %lld, replayed %lld)\n", (long long)cap, (long long)rep);
        if (graphs)
            CHECK(cap == 1 && rep == N - 2, "%s: %lld recordings, %lld replays", name, (long long)cap, (long long)rep);
    } else {
        fails++;
    }
    zoo_io_free(&x);
    kn_session_free(sc);
    kn_session_free(sg);
    kn_model_free(m);
}

/* ---- an LSTM with ragged sequence_lens, as ONNX protobuf written here ---- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} pb;

static void pb_raw(pb *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void pb_varint(pb *b, uint64_t v) {
    unsigned char c[10];
    int n = 0;
    do {
        c[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    pb_raw(b, c, (size_t)n);
}
static void pb_int(pb *b, int field, uint64_t v) {
    pb_varint(b, (uint64_t)field << 3);
    pb_varint(b, v);
}
static void pb_bytes(pb *b, int field, const void *d, size_t n) {
    pb_varint(b, (uint64_t)field << 3 | 2);
    pb_varint(b, n);
    pb_raw(b, d, n);
}
static void pb_str(pb *b, int field, const char *s) { pb_bytes(b, field, s, strlen(s)); }
static void pb_msg(pb *b, int field, pb *sub) { /* appends sub, then frees it */
    pb_bytes(b, field, sub->p, sub->n);
    free(sub->p);
    memset(sub, 0, sizeof *sub);
}

/* ValueInfoProto: a tensor of ONNX element type et and the given shape */
static void pb_value_info(pb *graph, int field, const char *name, int et, int nd, const int64_t *dims) {
    pb vi = {0}, ty = {0}, tt = {0}, sh = {0};
    for (int d = 0; d < nd; d++) {
        pb dim = {0};
        pb_int(&dim, 1, (uint64_t)dims[d]);
        pb_msg(&sh, 1, &dim);
    }
    pb_int(&tt, 1, (uint64_t)et);
    pb_msg(&tt, 2, &sh);
    pb_msg(&ty, 1, &tt);
    pb_str(&vi, 1, name);
    pb_msg(&vi, 2, &ty);
    pb_msg(graph, field, &vi);
}

static float lcg(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 65536.0f - 0.5f;
}

enum { L_S = 6, L_B = 4, L_I = 5, L_H = 7 };

/* LSTM(X [S, B, I], W, R, B, sequence_lens [B] int32), bidirectional, hidden_size H: Y, Y_h, Y_c */
static pb lstm_model(void) {
    pb graph = {0}, model = {0}, node = {0}, at = {0}, op = {0};
    const char *ins[] = {"X", "W", "R", "B", "sequence_lens"}, *outs[] = {"Y", "Y_h", "Y_c"};
    for (int k = 0; k < 5; k++) pb_str(&node, 1, ins[k]);
    for (int k = 0; k < 3; k++) pb_str(&node, 2, outs[k]);
    pb_str(&node, 3, "lstm");
    pb_str(&node, 4, "LSTM");
    pb_str(&at, 1, "hidden_size");
    pb_int(&at, 3, L_H);
    pb_int(&at, 20, 2); /* INT */
    pb_msg(&node, 5, &at);
    pb_str(&at, 1, "direction");
    pb_str(&at, 4, "bidirectional");
    pb_int(&at, 20, 3); /* STRING */
    pb_msg(&node, 5, &at);
    pb_msg(&graph, 1, &node);
    pb_str(&graph, 2, "lstm_ragged");
    uint32_t seed = 12345;
    const int64_t wd[3] = {2, 4 * L_H, L_I}, rd[3] = {2, 4 * L_H, L_H}, bd[2] = {2, 8 * L_H};
    const int64_t *shapes[3] = {wd, rd, bd};
    const int nds[3] = {3, 3, 2};
    for (int w = 0; w < 3; w++) {
        pb t = {0};
        int64_t n = 1;
        for (int d = 0; d < nds[w]; d++) {
            pb_int(&t, 1, (uint64_t)shapes[w][d]);
            n *= shapes[w][d];
        }
        pb_int(&t, 2, 1); /* FLOAT */
        pb_str(&t, 8, ins[1 + w]);
        float *v = malloc(sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++) v[i] = lcg(&seed);
        pb_bytes(&t, 9, v, sizeof(float) * (size_t)n);
        free(v);
        pb_msg(&graph, 5, &t);
    }
    const int64_t xd[3] = {L_S, L_B, L_I}, ld[1] = {L_B};
    pb_value_info(&graph, 11, "X", 1, 3, xd);
    pb_value_info(&graph, 11, "sequence_lens", 6, 1, ld); /* INT32 */
    const int64_t yd[4] = {L_S, 2, L_B, L_H}, hd[3] = {2, L_B, L_H};
    pb_value_info(&graph, 12, "Y", 1, 4, yd);
    pb_value_info(&graph, 12, "Y_h", 1, 3, hd);
    pb_value_info(&graph, 12, "Y_c", 1, 3, hd);
    pb_int(&model, 1, 8); /* ir_version */
    pb_str(&op, 1, "");
    pb_int(&op, 2, 14);
    pb_msg(&model, 8, &op);
    pb_msg(&model, 7, &graph);
    return model;
}

static void lstm_ragged(bool graphs) {
    pb bytes = lstm_model();
    kn_model *m = NULL;
    kn_status *st = kn_model_load_buffer(bytes.p, bytes.n, NULL, &m);
    free(bytes.p);
    if (st) {
        printf("FAIL the LSTM model: %s\n", kn_status_message(st));
        kn_status_free(st);
        fails++;
        return;
    }
    kn_session *sc, *sg;
    sessions(m, graphs, &sc, &sg);
    float xv[L_S * L_B * L_I];
    int32_t lens[L_B];
    zoo_io x = {.n_in = 2, .n_out = 3};
    x.in[0] = (kn_named_tensor){.name = "X", .dtype = KN_F32, .ndim = 3, .dims = {L_S, L_B, L_I}, .data = xv};
    x.in[1] = (kn_named_tensor){.name = "sequence_lens", .dtype = KN_I32, .ndim = 1, .dims = {L_B}, .data = lens};
    static const int32_t patterns[5][L_B] = {{6, 3, 0, 1}, {2, 6, 5, 0}, {0, 1, 6, 4}, {3, 3, 3, 3}, {6, 6, 2, 5}};
    const int N = graphs ? 5 : 2;
    long long per_run[5] = {0};
    uint32_t seed = 777;
    for (int r = 0; sc && sg && r < N; r++) {
        for (int i = 0; i < L_S * L_B * L_I; i++) xv[i] = 2.0f * lcg(&seed);
        memcpy(lens, patterns[r], sizeof lens);
        kn_named_tensor *oc = run(sc, &x, NULL), *og = run(sg, &x, &per_run[r]);
        CHECK(per_run[r] == 1, "LSTM%s run %d: %lld host synchronisations, expected 1", graphs ? "" : " (no graphs)",
              r + 1, per_run[r]);
        if (oc && og) {
            double w = compare(oc, og, 3, 1e-4, 1e-5);
            CHECK(w <= 1, "LSTM run %d (lengths %d %d %d %d): cuda differs from cpu (%.3g x tolerance)", r + 1, lens[0],
                  lens[1], lens[2], lens[3], w);
            const float *y = og[0].data;
            int nonzero = 0;
            for (int t = 0; t < L_S; t++)
                for (int d = 0; d < 2; d++)
                    for (int b = 0; b < L_B; b++)
                        for (int h = 0; h < L_H; h++)
                            if (t >= lens[b] && y[((t * 2 + d) * L_B + b) * L_H + h] != 0.0f) nonzero++;
            CHECK(nonzero == 0, "LSTM run %d: %d values of Y past their row's length are not zero", r + 1, nonzero);
            int live = 0; /* the rows that ran produced something */
            for (int i = 0; i < L_S * 2 * L_B * L_H; i++) live += y[i] != 0.0f;
            CHECK(live > 0, "LSTM run %d: Y is all zero", r + 1);
        }
        zoo_io_free_outs(oc, 3);
        zoo_io_free_outs(og, 3);
    }
    int64_t cap = -1, rep = -1;
    kn_session_graph_counts(sg, &cap, &rep);
    printf("%-18s %-9s syncs per run:", "lstm_ragged", graphs ? "graphs" : "no graphs");
    for (int r = 0; r < N; r++) printf(" %lld", per_run[r]);
    printf("  (recorded %lld, replayed %lld)\n", (long long)cap, (long long)rep);
    if (graphs) CHECK(cap == 1 && rep == N - 2, "LSTM: %lld recordings, %lld replays", (long long)cap, (long long)rep);
    if (graphs && sg) {
        /* a length outside [0, S]: found on the device, reported by the run's end */
        lens[1] = L_S + 1;
        kn_named_tensor o[3] = {{.name = "Y"}, {.name = "Y_h"}, {.name = "Y_c"}};
        st = kn_session_run(sg, x.in, 2, o, 3);
        CHECK(st && strstr(kn_status_message(st), "lstm") && strstr(kn_status_message(st), "out of range"),
              "a sequence length of %d (S = %d) gave: %s", L_S + 1, L_S, st ? kn_status_message(st) : "success");
        if (st) printf("sequence length %d of %d: %s\n", L_S + 1, L_S, kn_status_message(st));
        kn_status_free(st);
        for (int k = 0; k < 3; k++) kn_free(o[k].data);
    }
    kn_session_free(sc);
    kn_session_free(sg);
    kn_model_free(m);
}

int main(int argc, char **argv) {
    if (zoo_io_no_cuda()) return 77;
    const char *zoo = argc > 1 ? argv[1] : "../shared/zoo";
    counter_rules();
    lstm_ragged(true);
    lstm_ragged(false);
    int models = 0;
    if (argc > 2) {
        zoo_model(zoo, argv[2], true);
        zoo_model(zoo, argv[2], false);
        models = 1;
    } else {
        struct dirent **ents = NULL;
        int n = scandir(zoo, &ents, NULL, alphasort);
        for (int i = 0; i < n; i++) {
            char p[1200];
            snprintf(p, sizeof p, "%s/%s/model.onnx", zoo, ents[i]->d_name);
            FILE *f = ents[i]->d_name[0] != '.' ? fopen(p, "rb") : NULL;
            if (f) {
                fclose(f);
                zoo_model(zoo, ents[i]->d_name, true);
                zoo_model(zoo, ents[i]->d_name, false);
                models++;
            }
            free(ents[i]);
        }
        free(ents);
    }
    CHECK(models > 0, "no zoo model under %s", zoo);
    printf("%d zoo model(s)\n%s\n", models, fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}
