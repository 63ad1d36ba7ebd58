/* kiln info --device D: which nodes of a model a session on device D would leave to the CPU, and
 * why, after that backend's fusions and for concrete input shapes (free dimensions are 4 unless
 * --dim NAME=N says otherwise; a dimension written as a sum of names is their sum). Text for people; --json prints one object for scripts. */
#include "tools/cli/cli.h"
#include "runtime/executor.h"
#include "runtime/core/dtype.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void info_json_str(const char *s) {
    putchar('"');
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* The size of one named dimension: --dim NAME=N, else 4. */
static int64_t info_dim_term(const char *name, size_t l, int n_dims, char **dims) {
    if (l && name[0] >= '0' && name[0] <= '9') return atoll(name);
    for (int i = 0; i < n_dims; i++)
        if (strncmp(dims[i], name, l) == 0 && dims[i][l] == '=') return atoll(dims[i] + l + 1);
    return 4;
}

/* The size of a free dimension: a name, or a sum of names and numbers as exporters write a
 * decoder's total length ("past_sequence_length + sequence_length"), so that inputs agree. */
static int64_t info_dim(const char *name, int n_dims, char **dims) {
    if (!name) return 4;
    int64_t total = 0;
    for (const char *p = name; *p;) {
        while (*p == ' ' || *p == '+') p++;
        size_t l = 0;
        while (p[l] && p[l] != ' ' && p[l] != '+') l++;
        if (l) total += info_dim_term(p, l, n_dims, dims);
        p += l;
    }
    return total;
}

int kn_cmd_info_device(const char *path, const char *device, bool fuse, bool json, int n_dims, char **dims) {
    kn_session_options so;
    kn_session_options_init(&so);
    if (kn_cli_parse_device(device, &so)) return 2;
    kn_model_options mo;
    kn_model_options_init(&mo);
    mo.fuse = fuse;
    kn_model *m = NULL;
    kn_session *s = NULL;
    kn_fallback *f = NULL;
    int n = 0;
    kn_tensor *in = NULL;
    kn_status *st = kn_model_load_ex(path, &mo, &m);
    if (!st) st = kn_session_create(m, &so, &s);
    const kn_graph *g = s ? kn_session_graph(s) : NULL;
    if (!st) {
        in = calloc((size_t)(g->n_inputs ? g->n_inputs : 1), sizeof *in);
        if (!in) st = KN_OOM(0);
    }
    for (int k = 0; !st && k < g->n_inputs; k++) {
        const kn_value *v = &g->values[g->inputs[k]];
        if (v->kind != KN_VAL_TENSOR || v->type.ndim < 0 || v->type.dtype == KN_UNDEFINED) {
            st = kn_error(KN_ERR_UNSUPPORTED, "input '%s' is not a tensor of known type and rank", v->name);
            break;
        }
        int64_t d[KN_MAX_DIMS];
        for (int a = 0; a < v->type.ndim; a++)
            d[a] = v->type.dims[a] >= 0 ? v->type.dims[a] : info_dim(v->dim_names[a], n_dims, dims);
        in[k].dtype = v->type.dtype;
        in[k].kind = KN_KIND_TENSOR;
        kn_tensor_set_shape(&in[k], v->type.ndim, d);
    }
    if (!st) st = kn_session_fallbacks(s, in, &f, &n);
    if (st) {
        fprintf(stderr, "kiln: error: %s\n", kn_status_message(st));
        kn_status_free(st);
        free(in);
        kn_session_free(s);
        kn_model_free(m);
        return 1;
    }
    if (json) {
        printf("{\"model\": ");
        info_json_str(path);
        printf(", \"device\": ");
        info_json_str(device);
        printf(", \"nodes\": %d, \"inputs\": [", g->n_nodes);
        for (int k = 0; k < g->n_inputs; k++) {
            char b[KN_DESC_LEN];
            printf("%s", k ? ", " : "");
            info_json_str(kn_tensor_desc(&in[k], b, sizeof b));
        }
        printf("], \"fallbacks\": [");
        for (int i = 0; i < n; i++) {
            const kn_node *nd = &g->nodes[f[i].node];
            printf("%s\n  {\"node\": ", i ? "," : "");
            info_json_str(nd->name);
            printf(", \"op\": ");
            info_json_str(nd->op_type);
            printf(", \"domain\": ");
            info_json_str(nd->domain);
            printf(", \"reason\": ");
            info_json_str(f[i].reason);
            printf(", \"inputs\": ");
            info_json_str(f[i].types);
            printf("}");
        }
        printf("]}\n");
    } else {
        printf("device %s: %d of %d nodes fall back to the CPU (inputs:", device, n, g->n_nodes);
        for (int k = 0; k < g->n_inputs; k++) {
            char b[KN_DESC_LEN];
            printf(" %s", kn_tensor_desc(&in[k], b, sizeof b));
        }
        printf(")\n");
        for (int i = 0; i < n; i++) {
            const kn_node *nd = &g->nodes[f[i].node];
            printf("  %-24s %-32s %-22s %s\n", nd->op_type, nd->name && nd->name[0] ? nd->name : "(unnamed)",
                   f[i].reason, f[i].types);
        }
        if (!n) printf("  none\n");
    }
    free(f);
    free(in);
    kn_session_free(s);
    kn_model_free(m);
    return 0;
}
