/* The kiln command-line tool: version, info, exec, conformance, bench (and tokenize when the
 * pipelines are built). Each command returns non-zero with a message on any error. */
#include "tools/cli/cli.h"
#include "runtime/core/dtype.h"
#include "graph/ops.h"
#include "graph/passes.h"
#include "runtime/fold.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int kn_fail(kn_status *st) {
    fprintf(stderr, "kiln: error: %s\n", kn_status_message(st));
    kn_status_free(st);
    return 1;
}

static void kn_print_value(const kn_value *v) {
    printf("  %-24s ", v->name);
    if (v->kind == KN_VAL_SEQUENCE) printf("sequence<");
    if (v->kind == KN_VAL_OPTIONAL) printf("optional<");
    printf("%s", kn_dtype_name(v->type.dtype));
    if (v->type.ndim >= 0) {
        printf("[");
        for (int d = 0; d < v->type.ndim; d++) {
            if (v->dim_names[d]) printf("%s%s", d ? "," : "", v->dim_names[d]);
            else if (v->type.dims[d] < 0) printf("%s?", d ? "," : "");
            else printf("%s%lld", d ? "," : "", (long long)v->type.dims[d]);
        }
        printf("]");
    } else {
        printf("[?]");
    }
    if (v->kind != KN_VAL_TENSOR) printf(">");
    printf("\n");
}

typedef struct {
    const char *op;
    const char *domain;
    int count;
    bool supported;
} kn_op_count;

static void kn_count_ops(const kn_graph *g, kn_op_count *c, int *n, int cap) {
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *nd = &g->nodes[i];
        int k = 0;
        while (k < *n && !(strcmp(c[k].op, nd->op_type) == 0 && strcmp(c[k].domain, nd->domain) == 0)) k++;
        if (k == *n && *n < cap) {
            c[k] =
                (kn_op_count){nd->op_type, nd->domain, 0,
                              nd->op >= 0 && kn_op_infer(nd->op) && kn_cpu_backend()->kernel(kn_cpu_backend(), nd->op)};
            (*n)++;
        }
        if (k < *n) c[k].count++;
        for (int a = 0; a < nd->n_attrs; a++)
            if (nd->attrs[a].g) kn_count_ops(nd->attrs[a].g, c, n, cap);
    }
}

int kn_cmd_info(int argc, char **argv) {
    const char *path = NULL;
    bool optimized = false, fuse = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
            i++;
            continue;
        }
        if (strcmp(argv[i], "--optimized") == 0) {
            optimized = true;
            continue;
        }
        if (strcmp(argv[i], "--no-fuse") == 0) {
            fuse = false;
            continue;
        }
        if (!path) path = argv[i];
    }
    if (!path) {
        fprintf(stderr, "usage: kiln info MODEL.onnx [--device D] [--optimized [--no-fuse]]\n");
        return 2;
    }
    kn_model *m = NULL;
    kn_status *st = kn_onnx_load_file(path, &m);
    if (st) return kn_fail(st);
    kn_graph *g = m->graph;
    /* info describes even a graph whose attributes do not decode: that error shows when it runs */
    kn_status_free(kn_graph_resolve_ops(g));
    /* --optimized: the graph a session runs (folded, fused unless --no-fuse, pruned) instead of the file's */
    if (optimized && (st = kn_graph_optimize(g, fuse))) {
        kn_model_free(m);
        return kn_fail(st);
    }
    printf("model:     %s\n", path);
    printf("ir:        %lld\n", (long long)m->ir_version);
    printf("producer:  %s %s\n", m->producer_name ? m->producer_name : "",
           m->producer_version ? m->producer_version : "");
    printf("opsets:   ");
    for (int i = 0; i < g->n_opsets; i++)
        printf(" %s:%d", g->opset_domains[i] && g->opset_domains[i][0] ? g->opset_domains[i] : "ai.onnx", g->opsets[i]);
    printf("\ninputs:\n");
    for (int i = 0; i < g->n_inputs; i++) kn_print_value(&g->values[g->inputs[i]]);
    printf("outputs:\n");
    for (int i = 0; i < g->n_outputs; i++) kn_print_value(&g->values[g->outputs[i]]);
    int64_t params = 0;
    size_t bytes = 0;
    int n_init = 0;
    for (int v = 0; v < g->n_values; v++)
        if (g->values[v].constant) {
            n_init++;
            params += kn_numel(g->values[v].constant);
            bytes += kn_nbytes(g->values[v].constant);
        }
    printf("parameters: %lld in %d initializers, %.2f MB\n", (long long)params, n_init, bytes / 1e6);
    kn_op_count counts[512];
    int n = 0;
    kn_count_ops(g, counts, &n, 512);
    printf("nodes: %d\nops:\n", g->n_nodes);
    int unsupported = 0;
    for (int i = 0; i < n; i++) {
        printf("  %-28s %6d%s\n", counts[i].op, counts[i].count, counts[i].supported ? "" : "   (unsupported)");
        unsupported += !counts[i].supported;
    }
    if (unsupported) {
        printf("unsupported ops:");
        for (int i = 0; i < n; i++)
            if (!counts[i].supported)
                printf(" %s%s%s", counts[i].domain[0] ? counts[i].domain : "", counts[i].domain[0] ? ":" : "",
                       counts[i].op);
        printf("\n");
    } else {
        printf("unsupported ops: none\n");
    }
    kn_model_free(m);
    return 0;
}

int kn_cmd_exec(int argc, char **argv) {
    const char *path = NULL, *in_dir = NULL, *out_dir = NULL, *prec = NULL;
    kn_session_options o;
    kn_session_options_init(&o);
    kn_model_options mo;
    kn_model_options_init(&mo);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--inputs") == 0 && i + 1 < argc) in_dir = argv[++i];
        else if (strcmp(argv[i], "--outputs") == 0 && i + 1 < argc) out_dir = argv[++i];
        else if (strcmp(argv[i], "--no-fuse") == 0) mo.fuse = 0;
        else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
            if (kn_cli_parse_device(argv[++i], &o)) return 2;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) o.num_threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--precision") == 0 && i + 1 < argc) prec = argv[++i];
        else if (!path) path = argv[i];
        else {
            fprintf(stderr, "kiln exec: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!path || !in_dir || !out_dir) {
        fprintf(stderr,
                "usage: kiln exec MODEL.onnx --inputs DIR --outputs DIR [--device cpu|cuda[:N]] [--threads T] "
                "[--precision fp32|tf32|fp16|bf16] [--no-fuse]\n");
        return 2;
    }
    if (prec && kn_cli_parse_precision(prec, &o, "kiln exec")) return 2;
    kn_model *m = NULL;
    kn_session *s = NULL;
    kn_pb_set in = {0};
    kn_named_tensor *named = NULL, *outs = NULL;
    int n_out = 0, rc = 1;
    kn_status *st = kn_model_load_ex(path, &mo, &m);
    if (!st) st = kn_session_create(m, &o, &s);
    if (!st) st = kn_cli_read_pb_set(in_dir, "input_", &in);
    if (!st) {
        named = calloc((size_t)(in.n ? in.n : 1), sizeof *named);
        n_out = kn_session_output_count(s);
        outs = calloc((size_t)(n_out ? n_out : 1), sizeof *outs);
        if (!named || !outs) st = KN_OOM(0);
    }
    if (!st) st = kn_cli_bind(s, &in, named, true);
    for (int i = 0; !st && i < n_out; i++) {
        kn_value_info vi;
        st = kn_session_output_info(s, i, &vi);
        outs[i].name = vi.name;
    }
    if (!st) st = kn_session_run(s, named, in.n, outs, n_out);
    if (!st) {
        mkdir(out_dir, 0755);
        for (int i = 0; !st && i < n_out; i++) {
            char p[4096];
            snprintf(p, sizeof p, "%s/output_%d.pb", out_dir, i);
            kn_tensor t = {.dtype = outs[i].dtype, .ndim = outs[i].ndim, .data = outs[i].data};
            for (int d = 0; d < outs[i].ndim; d++) t.dims[d] = outs[i].dims[d];
            st = kn_tensor_proto_write_file(p, &t, outs[i].name);
        }
    }
    if (st) rc = kn_fail(st);
    else rc = 0;
    for (int i = 0; outs && i < n_out; i++) {
        if (outs[i].dtype == KN_STRING && outs[i].data) {
            int64_t ne = 1;
            for (int d = 0; d < outs[i].ndim; d++) ne *= outs[i].dims[d];
            for (int64_t k = 0; k < ne; k++) free(((char **)outs[i].data)[k]);
        }
        free(outs[i].data);
    }
    free(outs);
    free(named);
    kn_cli_pb_set_free(&in);
    kn_session_free(s);
    kn_model_free(m);
    return rc;
}

static void kn_usage(void) {
    fprintf(
        stderr,
        "kiln %s: a GPU-first runtime for ONNX models\n"
        "usage: kiln COMMAND [ARGS]\n"
        "  --version                          version and compiled backends\n"
        "  info MODEL.onnx [--optimized]      metadata, inputs/outputs, op histogram (--optimized: after folding and "
        "fusions), unsupported ops\n"
        "  exec MODEL.onnx --inputs DIR --outputs DIR [--device D]\n"
        "  conformance DIR... [--device D] [--filter REGEX] [--timeout S] [--undefined F] [--floor N] [--baseline F]\n"
        "  bench MODEL.onnx [--inputs DIR | --batch B,.. --seq S,..] [--iters N] [--precision P] [--json]  (kiln bench "
        "--help)\n"
        "  embed --model DIR [--pooling mean|cls|max] [--normalize] [TEXT...]\n"
        "  tokenize --tokenizer PATH [--pair] [--no-special-tokens] [--max-length N]\n"
        "  detokenize --tokenizer PATH\n"
        "  run --model PATH --type TYPE [--input FILE|DIR] [--output DIR] [...]   Hugging Face tasks (kiln run "
        "--help)\n"
        "  download REPO[@REV] [--onnx-file F] fetch a model folder into the Hugging Face cache\n",
        kn_version());
}

int main(int argc, char **argv) {
    if (argc < 2) {
        kn_usage();
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("kiln %s\nbackends: %s\n", kn_version(), kn_build_info());
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        kn_usage();
        return 0;
    }
    if (strcmp(cmd, "info") == 0) return kn_cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "exec") == 0) return kn_cmd_exec(argc - 1, argv + 1);
    if (strcmp(cmd, "conformance") == 0) return kn_cmd_conformance(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0) return kn_cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "embed") == 0) {
        if (!kn_cmd_embed) {
            fprintf(stderr, "kiln: this build has no pipelines (pipelines/ was not built)\n");
            return 2;
        }
        return kn_cmd_embed(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "run") == 0 || strcmp(cmd, "download") == 0) {
        int (*fn)(int, char **) = strcmp(cmd, "run") == 0 ? kn_cmd_run : kn_cmd_download;
        if (!fn) {
            fprintf(stderr, "kiln: this build has no pipelines (pipelines/ was not built)\n");
            return 2;
        }
        return fn(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "tokenize") == 0 || strcmp(cmd, "detokenize") == 0) {
        int (*fn)(int, char **) = strcmp(cmd, "tokenize") == 0 ? kn_cmd_tokenize : kn_cmd_detokenize;
        if (!fn) {
            fprintf(stderr, "kiln: this build has no tokenizers (pipelines/ was not built)\n");
            return 2;
        }
        return fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "kiln: unknown command '%s'\n", cmd);
    kn_usage();
    return 2;
}
