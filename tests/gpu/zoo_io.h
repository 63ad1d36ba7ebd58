/* The zoo-model plumbing the whole-model CUDA tests share (test_graph_cuda.c, test_host_sync.c,
 * test_precision_cuda.c, test_session_cuda.c): the skip without a device,
 * a model's test_data_set_0 inputs read into named tensors, varied run to run with the same shapes,
 * and a session's outputs fetched by name. Header-only: each test is one program. */
#pragma once

#include "graph/model.h"
#include "graph/ops.h"
#include "runtime/core/tensor.h"
#include "runtime/kiln.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct zoo_io {
    kn_named_tensor in[8];
    kn_tensor *held[8];
    int n_in, n_out;
} zoo_io;

/* True (after printing the skip line ctest's SKIP_RETURN_CODE 77 goes with) when this build has no
 * usable CUDA device: the real build on a machine without a GPU. */
static inline bool zoo_io_no_cuda(void) {
    const kn_backend *cu = NULL;
    kn_status *st = kn_backend_get(KN_DEVICE_CUDA, 0, &cu);
    if (!st) return false;
    printf("skipped: no CUDA device (%s)\n", kn_status_message(st));
    kn_status_free(st);
    return true;
}

/* The inputs of ZOO/NAME/test_data_set_0 for session sc; -1 (after printing FAIL) when one is
 * unreadable. */
static inline int zoo_io_load(kn_session *sc, const char *zoo, const char *name, zoo_io *x) {
    x->n_in = kn_session_input_count(sc);
    x->n_out = kn_session_output_count(sc);
    for (int k = 0; k < x->n_in && k < 8; k++) {
        char f[1200];
        snprintf(f, sizeof f, "%s/%s/test_data_set_0/input_%d.pb", zoo, name, k);
        char *nm = NULL;
        kn_status *st = kn_tensor_proto_read_file(f, &x->held[k], &nm);
        free(nm);
        if (st) {
            printf("FAIL %s: %s\n", f, kn_status_message(st));
            kn_status_free(st);
            return -1;
        }
        kn_value_info vi;
        kn_session_input_info(sc, k, &vi);
        x->in[k].name = vi.name;
        x->in[k].dtype = x->held[k]->dtype;
        x->in[k].ndim = x->held[k]->ndim;
        memcpy(x->in[k].dims, x->held[k]->dims, sizeof(int64_t) * (size_t)x->held[k]->ndim);
        x->in[k].data = x->held[k]->data;
    }
    return 0;
}

static inline void zoo_io_free(zoo_io *x) {
    for (int k = 0; k < x->n_in && k < 8; k++) kn_tensor_free(x->held[k]);
}

/* A different input for run r, same shapes: token ids moved within [5, 900) (inside every
 * vocabulary of the zoo), float inputs (pixels) scaled; masks and token types kept. */
static inline void zoo_io_vary(zoo_io *x, int r) {
    for (int k = 0; k < x->n_in; k++) {
        kn_tensor *t = x->held[k];
        int64_t n = kn_numel(t);
        if (t->dtype == KN_I64 && strstr(x->in[k].name, "input_ids")) {
            int64_t *p = t->data;
            for (int64_t i = 1; i + 1 < n; i++) p[i] = 5 + (p[i] + 37 * r + i) % 895;
        } else if (t->dtype == KN_F32) {
            float *p = t->data;
            for (int64_t i = 0; i < n; i++) p[i] = p[i] * 0.9f + 0.01f * (float)((i + r) % 7);
        }
    }
}

/* An array of n_out outputs named as the session's, to be filled by kn_session_run. */
static inline kn_named_tensor *zoo_io_outputs(kn_session *s, int n_out) {
    kn_named_tensor *o = calloc((size_t)n_out, sizeof *o);
    for (int k = 0; o && k < n_out; k++) {
        kn_value_info vi;
        kn_session_output_info(s, k, &vi);
        o[k].name = vi.name;
    }
    return o;
}

static inline void zoo_io_free_outs(kn_named_tensor *o, int n) {
    for (int k = 0; o && k < n; k++) kn_free(o[k].data);
    free(o);
}
