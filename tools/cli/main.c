/* The kiln command-line tool: version, info, exec, conformance, bench (and tokenize when the
 * pipelines are built). Each command returns non-zero with a message on any error. */
#include "tools/cli/cli.h"
#include "runtime/core/dtype.h"
#include "graph/ops.h"
#include "graph/passes.h"
#include "runtime/fold.h"
#include "runtime/executor.h"
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
    if (v->kind == KN_VAL_MAP || v->elem_kind == KN_VAL_MAP) printf("map<%s,", kn_dtype_name(v->key_dtype));
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
    if (v->kind != KN_VAL_MAP && v->elem_kind == KN_VAL_MAP) printf(">");
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
    const char *path = NULL, *device = NULL;
    bool optimized = false, fuse = true, json = false;
    char **dims = calloc((size_t)argc + 1, sizeof(char *));
    int n_dims = 0;
    if (!dims) return kn_fail(KN_OOM(0));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
            device = argv[++i];
            continue;
        }
        if (strcmp(argv[i], "--dim") == 0 && i + 1 < argc) {
            dims[n_dims++] = argv[++i];
            continue;
        }
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
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
        fprintf(stderr,
                "usage: kiln info MODEL.onnx [--device D [--dim NAME=N]... [--json]] [--optimized [--no-fuse]]\n");
        free(dims);
        return 2;
    }
    /* --device cuda: the nodes that would fall back to the CPU (cmd_info_device.c); --json: only that */
    if (device && json) {
        int rc = kn_cmd_info_device(path, device, fuse, true, n_dims, dims);
        free(dims);
        return rc;
    }
    kn_model *m = NULL;
    kn_status *st = kn_onnx_load_file(path, &m);
    if (st) {
        free(dims);
        return kn_fail(st);
    }
    kn_graph *g = m->graph;
    /* info describes even a graph whose attributes do not decode: that error shows when it runs */
    kn_status_free(kn_graph_resolve_ops(g));
    /* --optimized: the graph a session runs (folded, fused unless --no-fuse, pruned) instead of the file's */
    if (optimized && (st = kn_graph_optimize(g, fuse))) {
        kn_model_free(m);
        free(dims);
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
    int rc = device && strcmp(device, "cpu") != 0 ? kn_cmd_info_device(path, device, fuse, false, n_dims, dims) : 0;
    free(dims);
    return rc;
}

/* input_K.pb for each graph input K, read as the kind the input declares; files that name the
 * model's inputs may come in any order (strict: a name the model lacks is an error). */
static kn_status *kn_exec_read_inputs(const kn_graph *g, const char *dir, kn_tensor **vals) {
    int n_files = 0;
    for (;; n_files++) {
        char p[4096];
        struct stat sb;
        snprintf(p, sizeof p, "%s/input_%d.pb", dir, n_files);
        if (stat(p, &sb) != 0) break;
    }
    KN_CHECK(n_files == g->n_inputs, KN_ERR_INVALID_ARGUMENT, "the model has %d inputs but %d input files were given",
             g->n_inputs, n_files);
    char **names = calloc((size_t)(n_files ? n_files : 1), sizeof(char *));
    kn_tensor **read = calloc((size_t)(n_files ? n_files : 1), sizeof(kn_tensor *));
    kn_status *st = names && read ? NULL : KN_OOM(0);
    for (int k = 0; !st && k < n_files; k++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/input_%d.pb", dir, k);
        st = kn_value_proto_read_file(p, kn_value_file_kind(&g->values[g->inputs[k]]), &read[k], &names[k]);
        if (st) st = kn_error_wrap(st, "%s: ", p);
    }
    /* by name when every file names a model input, else in order */
    bool by_name = !st;
    for (int k = 0; by_name && k < n_files; k++) {
        bool found = false;
        for (int i = 0; i < g->n_inputs && !found; i++)
            found = names[k] && strcmp(names[k], g->values[g->inputs[i]].name) == 0;
        if (!found && names[k] && names[k][0])
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "input file %d names '%s', which is not a model input", k, names[k]);
        by_name = found;
    }
    for (int k = 0; !st && k < n_files; k++) {
        int at = k;
        if (by_name)
            for (int i = 0; i < g->n_inputs; i++)
                if (strcmp(names[k], g->values[g->inputs[i]].name) == 0) at = i;
        if (vals[at]) st = kn_error(KN_ERR_INVALID_ARGUMENT, "two input files name input '%s'", names[k]);
        else {
            vals[at] = read[k];
            read[k] = NULL;
        }
    }
    for (int k = 0; k < n_files; k++) {
        if (read) kn_tensor_free(read[k]);
        if (names) free(names[k]);
    }
    free(read);
    free(names);
    return st;
}

int kn_cmd_exec(int argc, char **argv) {
    const char *path = NULL, *in_dir = NULL, *out_dir = NULL, *prec = NULL;
    const char **want = calloc((size_t)argc + 1, sizeof(char *));
    int n_want = 0;
    kn_session_options o;
    kn_session_options_init(&o);
    kn_model_options mo;
    kn_model_options_init(&mo);
    if (!want) return kn_fail(KN_OOM(0));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--inputs") == 0 && i + 1 < argc) in_dir = argv[++i];
        else if (strcmp(argv[i], "--outputs") == 0 && i + 1 < argc) out_dir = argv[++i];
        else if (strcmp(argv[i], "--output") == 0 && i + 1 < argc) want[n_want++] = argv[++i];
        else if (strcmp(argv[i], "--no-fuse") == 0) mo.fuse = 0;
        else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
            if (kn_cli_parse_device(argv[++i], &o)) return free(want), 2;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) o.num_threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--precision") == 0 && i + 1 < argc) prec = argv[++i];
        else if (strcmp(argv[i], "--seq-bucket") == 0 && i + 1 < argc) {
            if (kn_cli_parse_seq_bucket(argv[++i], &o, "kiln exec")) return free(want), 2;
        } else if (!path) path = argv[i];
        else {
            fprintf(stderr, "kiln exec: unexpected argument '%s'\n", argv[i]);
            free(want);
            return 2;
        }
    }
    if (!path || !in_dir || !out_dir) {
        fprintf(stderr,
                "usage: kiln exec MODEL.onnx --inputs DIR --outputs DIR [--output NAME]... [--device cpu|cuda[:N]] "
                "[--threads T] [--precision fp32|tf32|fp16|bf16] [--seq-bucket N] [--no-fuse]\n"
                "Inputs and outputs are TensorProto, SequenceProto or OptionalProto files as each value is "
                "declared.\n--output NAME (repeatable) writes those values instead of the graph outputs, "
                "output_K.pb for the K-th; any value of the file's graph may be named (fusion is then off).\n");
        free(want);
        return 2;
    }
    if (prec && kn_cli_parse_precision(prec, &o, "kiln exec")) return free(want), 2;
    /* values asked for by name are those of the file's graph, which fusion would rename or remove */
    if (n_want) mo.fuse = 0;
    kn_model *m = NULL;
    kn_session *s = NULL;
    kn_tensor **ins = NULL, *bound = NULL, *outs = NULL;
    const kn_graph *g = NULL;
    int rc = 1;
    kn_status *st = kn_model_load_ex(path, &mo, &m);
    if (!st) st = kn_session_create(m, &o, &s);
    if (!st) {
        g = m->graph;
        if (!n_want)
            for (int k = 0; k < g->n_outputs; k++) want[n_want++] = g->values[g->outputs[k]].name;
        ins = calloc((size_t)(g->n_inputs ? g->n_inputs : 1), sizeof *ins);
        bound = calloc((size_t)(g->n_inputs ? g->n_inputs : 1), sizeof *bound);
        outs = calloc((size_t)(n_want ? n_want : 1), sizeof *outs);
        if (!ins || !bound || !outs) st = KN_OOM(0);
    }
    if (!st) st = kn_exec_read_inputs(g, in_dir, ins);
    for (int k = 0; !st && k < g->n_inputs; k++) bound[k] = *ins[k];
    if (!st) st = kn_session_run_values_named(s, bound, want, n_want, outs);
    if (!st) {
        mkdir(out_dir, 0755);
        for (int i = 0; !st && i < n_want; i++) {
            char p[4096];
            snprintf(p, sizeof p, "%s/output_%d.pb", out_dir, i);
            bool optional = false;
            for (int v = 0; v < g->n_values; v++)
                if (g->values[v].name && strcmp(g->values[v].name, want[i]) == 0)
                    optional = g->values[v].kind == KN_VAL_OPTIONAL;
            st = kn_value_proto_write_file(p, &outs[i], optional, want[i]);
        }
        for (int i = 0; i < n_want; i++) kn_tensor_release(&outs[i]);
    }
    rc = st ? kn_fail(st) : 0;
    for (int k = 0; ins && g && k < g->n_inputs; k++) kn_tensor_free(ins[k]);
    free(ins);
    free(bound);
    free(outs);
    free(want);
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
        "  info MODEL.onnx --device cuda [--dim NAME=N] [--json]  the nodes that would fall back to the CPU, and why\n"
        "  info MODEL.onnx [--optimized]      metadata, inputs/outputs, op histogram (--optimized: after folding and "
        "fusions), unsupported ops\n"
        "  exec MODEL.onnx --inputs DIR --outputs DIR [--output NAME]... [--device D]\n"
        "  conformance DIR... [--device D] [--filter REGEX] [--timeout S] [--undefined F] [--floor N] [--baseline F]\n"
        "  bench MODEL.onnx [--inputs DIR | --batch B,.. --seq S,..] [--iters N] [--precision P] [--json]  (kiln bench "
        "--help)\n"
        "  embed --model DIR [--pooling mean|cls|max] [--normalize] [TEXT...]\n"
        "  tokenize --tokenizer PATH [--pair] [--no-special-tokens] [--max-length N]\n"
        "  detokenize --tokenizer PATH\n"
        "  run --model PATH --type TYPE [--input FILE|DIR] [--output DIR] [...]   Hugging Face tasks (kiln run "
        "--help)\n"
        "  download REPO[@REV] [--onnx-file F] fetch a model folder into the Hugging Face cache\n"
        "  train --model DIR --type TYPE --train FILE.jsonl --output DIR [...]   fine-tune (kiln train --help)\n"
        "  chat-template (--model DIR | --template F) --messages F.json [--add-generation-prompt]  render a chat "
        "template\n"
        "  generate --model DIR \"prompt\"     stream generated text (kiln generate --help)\n",
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
    if (strcmp(cmd, "train") == 0) {
        if (!kn_cmd_train) {
            fprintf(stderr, "kiln: this build has no pipelines (pipelines/ was not built)\n");
            return 2;
        }
        return kn_cmd_train(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "chat-template") == 0) {
        if (!kn_cmd_chat_template) {
            fprintf(stderr, "kiln: this build has no pipelines (pipelines/ was not built)\n");
            return 2;
        }
        return kn_cmd_chat_template(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "generate") == 0) {
        if (!kn_cmd_generate) {
            fprintf(stderr, "kiln: this build has no pipelines (pipelines/ was not built)\n");
            return 2;
        }
        return kn_cmd_generate(argc - 1, argv + 1);
    }
    fprintf(stderr, "kiln: unknown command '%s'\n", cmd);
    kn_usage();
    return 2;
}
