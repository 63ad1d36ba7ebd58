/* Test-layout folders (input_K.pb / output_K.pb) and input binding for the CLI commands. */
#include "tools/cli/cli.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kn_cli_pb_set_free(kn_pb_set *s) {
    for (int i = 0; i < s->n; i++) {
        kn_tensor_free(s->t[i]);
        free(s->names[i]);
    }
    free(s->t);
    free(s->names);
    memset(s, 0, sizeof *s);
}

kn_status *kn_cli_read_pb_set(const char *dir, const char *prefix, kn_pb_set *out) {
    memset(out, 0, sizeof *out);
    DIR *d = opendir(dir);
    if (!d) return kn_error(KN_ERR_IO, "cannot open folder %s", dir);
    int max_k = -1;
    struct dirent *e;
    size_t pl = strlen(prefix);
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, pl) != 0) continue;
        char *end;
        long k = strtol(e->d_name + pl, &end, 10);
        if (end == e->d_name + pl || strcmp(end, ".pb") != 0 || k < 0 || k > 100000) continue;
        if (k > max_k) max_k = (int)k;
    }
    closedir(d);
    if (max_k < 0) return NULL;
    out->t = calloc((size_t)max_k + 1, sizeof(kn_tensor *));
    out->names = calloc((size_t)max_k + 1, sizeof(char *));
    if (!out->t || !out->names) {
        kn_cli_pb_set_free(out);
        return KN_OOM(0);
    }
    out->n = max_k + 1;
    for (int k = 0; k <= max_k; k++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s%d.pb", dir, prefix, k);
        kn_status *st = kn_tensor_proto_read_file(path, &out->t[k], &out->names[k]);
        if (st) {
            kn_cli_pb_set_free(out);
            return kn_error_wrap(st, "%s: ", path);
        }
    }
    return NULL;
}

kn_status *kn_cli_bind(const kn_session *s, const kn_pb_set *in, kn_named_tensor *named, bool strict) {
    int n = kn_session_input_count(s);
    if (in->n != n)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "the model has %d inputs but %d input files were given", n, in->n);
    bool by_name = true;
    for (int i = 0; i < in->n && by_name; i++) {
        bool found = false;
        for (int k = 0; k < n && !found; k++) {
            kn_value_info vi;
            kn_session_input_info(s, k, &vi);
            found = in->names[i] && strcmp(in->names[i], vi.name) == 0;
        }
        by_name = found;
        if (!found && strict && in->names[i] && in->names[i][0]) {
            char names[512];
            size_t off = 0;
            names[0] = 0;
            for (int k = 0; k < n && off < sizeof names; k++) {
                kn_value_info vi;
                kn_session_input_info(s, k, &vi);
                off += (size_t)snprintf(names + off, sizeof names - off, "%s'%s'", k ? ", " : "", vi.name);
            }
            return kn_error(KN_ERR_INVALID_ARGUMENT,
                            "input file %d names '%s', which is not a model input (the model's inputs are %s)", i,
                            in->names[i], names);
        }
    }
    for (int i = 0; i < in->n; i++) {
        kn_value_info vi;
        kn_status *st = kn_session_input_info(s, i, &vi);
        if (st) return st;
        kn_named_tensor *t = &named[i];
        memset(t, 0, sizeof *t);
        t->name = by_name ? in->names[i] : vi.name;
        t->dtype = in->t[i]->dtype;
        t->ndim = in->t[i]->ndim;
        for (int d = 0; d < t->ndim; d++) t->dims[d] = in->t[i]->dims[d];
        t->data = in->t[i]->data;
    }
    return NULL;
}

int kn_cli_parse_device(const char *s, kn_session_options *o) {
    if (strcmp(s, "cpu") == 0) {
        o->device = KN_DEVICE_CPU;
        return 0;
    }
    if (strncmp(s, "cuda", 4) == 0) {
        o->device = KN_DEVICE_CUDA;
        o->device_index = s[4] == ':' ? atoi(s + 5) : 0;
        return 0;
    }
    fprintf(stderr, "kiln: unknown device '%s' (use cpu or cuda[:N])\n", s);
    return -1;
}

static const char *const kn_cli_precisions[] = {"fp32", "tf32", "fp16", "bf16"};

const char *kn_cli_precision_name(kn_precision p) { return (unsigned)p < 4 ? kn_cli_precisions[p] : "?"; }

int kn_cli_parse_precision(const char *s, kn_session_options *o, const char *cmd) {
    int k = -1;
    for (int p = 0; p < 4; p++)
        if (strcmp(s, kn_cli_precisions[p]) == 0) k = p;
    if (k < 0) {
        fprintf(stderr, "%s: unknown --precision '%s' (fp32, tf32, fp16, bf16)\n", cmd, s);
        return -1;
    }
    o->precision = (kn_precision)k;
    /* the CPU backend computes in the model's own dtypes; reduced precision is a GPU feature, and
     * reporting what actually ran keeps benchmark records honest */
    if (o->device == KN_DEVICE_CPU && k != KN_PRECISION_FP32) {
        fprintf(stderr, "%s: warning: --precision %s applies to CUDA devices; the CPU runs the model in fp32\n", cmd,
                s);
        o->precision = KN_PRECISION_FP32;
    }
    return 0;
}

int kn_cli_parse_seq_bucket(const char *s, kn_session_options *o, const char *cmd) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!end || end == s || *end || v < 1 || v > (1 << 20)) {
        fprintf(stderr, "%s: --seq-bucket wants a whole number in [1, %d], got '%s'\n", cmd, 1 << 20, s);
        return -1;
    }
    o->seq_bucket = (int)v;
    return 0;
}
