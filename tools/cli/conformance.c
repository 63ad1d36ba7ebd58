/* `kiln conformance`: runs every ONNX test-layout case (model.onnx + test_data_set_N/) under the
 * given folders, each in a child process with a time limit so a crash or hang in one case is
 * reported as that case's failure. Prints failures, a per-op summary, and a last line
 * "N passed, N failed, N skipped".
 *
 * Holding a suite to its record: --undefined FILE names cases whose expected output the ONNX spec
 * leaves undefined (they run and print UNDEF, counted neither way); --floor N fails the run when
 * fewer pass; --baseline FILE (the cases that passed last time) fails it when one of them no
 * longer passes, naming each, so a regression shows its cause at once; --write-baseline FILE
 * records the cases that pass now. */
#include "autograd/gradient_op.h"
#include "tools/cli/cli.h"
#include "runtime/core/dtype.h"
#include "runtime/executor.h"
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KN_RTOL 1e-3
#define KN_ATOL 1e-5

typedef struct {
    char **v;
    int n, cap;
} kn_strlist;

static void kn_strlist_add(kn_strlist *l, const char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->v = realloc(l->v, sizeof(char *) * (size_t)l->cap);
    }
    l->v[l->n++] = strdup(s);
}

static int kn_strcmp_p(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void kn_strlist_free(kn_strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    *l = (kn_strlist){0};
}

/* Case names from a list file: the first word of each line, '#' comments and blank lines skipped;
 * the rest of the line (a reason) is kept in why when asked for. Sorted for kn_strlist_find. */
static int kn_read_case_list(const char *path, kn_strlist *names, kn_strlist *why) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "kiln conformance: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[4096];
    kn_strlist raw = {0};
    while (fgets(line, sizeof line, f)) {
        char *p = line + strspn(line, " \t");
        if (*p == '#' || *p == '\n' || !*p) continue;
        p[strcspn(p, "\r\n")] = 0;
        kn_strlist_add(&raw, p);
    }
    fclose(f);
    qsort(raw.v, (size_t)raw.n, sizeof(char *), kn_strcmp_p);
    for (int i = 0; i < raw.n; i++) {
        char *rest = raw.v[i] + strcspn(raw.v[i], " \t");
        if (why) kn_strlist_add(why, rest + strspn(rest, " \t"));
        *rest = 0;
        kn_strlist_add(names, raw.v[i]);
    }
    kn_strlist_free(&raw);
    return 0;
}

/* Index of name in a sorted list, or -1. */
static int kn_strlist_find(const kn_strlist *l, const char *name) {
    int lo = 0, hi = l->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(l->v[mid], name);
        if (!c) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static bool kn_is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}
static bool kn_is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void kn_find_cases(const char *dir, kn_strlist *out, int depth) {
    char p[4096];
    snprintf(p, sizeof p, "%s/model.onnx", dir);
    if (kn_is_file(p)) {
        kn_strlist_add(out, dir);
        return;
    }
    if (depth > 6) return;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (kn_is_dir(p)) kn_find_cases(p, out, depth + 1);
    }
    closedir(d);
}

/* Compare one output; writes a reason into msg on mismatch. */
static bool kn_compare(const kn_tensor *want, const kn_named_tensor *got, char *msg, size_t len) {
    char a[KN_DESC_LEN], b[KN_DESC_LEN];
    kn_tensor g = {.dtype = got->dtype, .ndim = got->ndim, .data = got->data};
    for (int d = 0; d < got->ndim; d++) g.dims[d] = got->dims[d];
    if (want->dtype != g.dtype || !kn_same_shape(want, &g)) {
        snprintf(msg, len, "expected %s, got %s", kn_tensor_desc(want, a, sizeof a), kn_tensor_desc(&g, b, sizeof b));
        return false;
    }
    int64_t n = kn_numel(want);
    for (int64_t i = 0; i < n; i++) {
        if (want->dtype == KN_STRING) {
            const char *x = ((char **)want->data)[i], *y = ((char **)g.data)[i];
            if (strcmp(x ? x : "", y ? y : "")) {
                snprintf(msg, len, "element %lld: expected \"%s\", got \"%s\"", (long long)i, x, y);
                return false;
            }
        } else if (kn_dtype_is_float(want->dtype)) {
            double x = kn_get_f64(want, i), y = kn_get_f64(&g, i);
            if (isnan(x) && isnan(y)) continue;
            if (isinf(x) || isinf(y)) {
                if (x == y) continue;
            } else if (fabs(x - y) <= KN_ATOL + KN_RTOL * fabs(x)) continue;
            snprintf(msg, len, "element %lld of %s: expected %.9g, got %.9g", (long long)i,
                     kn_tensor_desc(want, a, sizeof a), x, y);
            return false;
        } else if (want->dtype == KN_C64 || want->dtype == KN_C128) {
            double x = want->dtype == KN_C64 ? ((float *)want->data)[i * 2] : ((double *)want->data)[i * 2];
            double y = want->dtype == KN_C64 ? ((float *)g.data)[i * 2] : ((double *)g.data)[i * 2];
            double xi = want->dtype == KN_C64 ? ((float *)want->data)[i * 2 + 1] : ((double *)want->data)[i * 2 + 1];
            double yi = want->dtype == KN_C64 ? ((float *)g.data)[i * 2 + 1] : ((double *)g.data)[i * 2 + 1];
            if (fabs(x - y) > KN_ATOL + KN_RTOL * fabs(x) || fabs(xi - yi) > KN_ATOL + KN_RTOL * fabs(xi)) {
                snprintf(msg, len, "element %lld: expected %g%+gi, got %g%+gi", (long long)i, x, xi, y, yi);
                return false;
            }
        } else {
            if (want->dtype == KN_U64 ? ((uint64_t *)want->data)[i] != ((uint64_t *)g.data)[i]
                                      : kn_get_i64(want, i) != kn_get_i64(&g, i)) {
                snprintf(msg, len, "element %lld of %s: expected %lld, got %lld", (long long)i,
                         kn_tensor_desc(want, a, sizeof a), (long long)kn_get_i64(want, i),
                         (long long)kn_get_i64(&g, i));
                return false;
            }
        }
    }
    return true;
}

static bool kn_compare_value(const kn_tensor *want, const kn_tensor *got, char *msg, size_t len) {
    char a[KN_DESC_LEN], b[KN_DESC_LEN];
    if (want->kind != got->kind) {
        snprintf(msg, len, "expected %s, got %s", kn_tensor_desc(want, a, sizeof a), kn_tensor_desc(got, b, sizeof b));
        return false;
    }
    if (want->kind == KN_KIND_NONE) return true;
    if (want->kind == KN_KIND_SEQUENCE) {
        const kn_seq *x = want->data, *y = got->data;
        if (x->n != y->n) {
            snprintf(msg, len, "expected a sequence of %lld, got %lld", (long long)x->n, (long long)y->n);
            return false;
        }
        for (int64_t i = 0; i < x->n; i++)
            if (!kn_compare_value(x->items[i], y->items[i], msg, len)) return false;
        return true;
    }
    if (want->kind == KN_KIND_MAP) { /* entries by key, in any order */
        const kn_map *x = want->data, *y = got->data;
        if (x->keys.dtype != y->keys.dtype || x->keys.dims[0] != y->keys.dims[0]) {
            snprintf(msg, len, "expected %s, got %s", kn_tensor_desc(want, a, sizeof a),
                     kn_tensor_desc(got, b, sizeof b));
            return false;
        }
        bool str = x->keys.dtype == KN_STRING;
        size_t ve = kn_dtype_size(want->dtype), vg = kn_dtype_size(got->dtype);
        for (int64_t i = 0; i < x->keys.dims[0]; i++) {
            int64_t j = 0;
            const char *ks = str ? ((char *const *)x->keys.data)[i] : NULL;
            while (j < y->keys.dims[0] &&
                   (str ? strcmp(ks, ((char *const *)y->keys.data)[j]) != 0
                        : kn_get_i64(&x->keys, i) != kn_get_i64(&y->keys, j)))
                j++;
            if (j == y->keys.dims[0]) {
                if (str) snprintf(msg, len, "the expected map's key '%s' is missing", ks);
                else snprintf(msg, len, "the expected map's key %lld is missing", (long long)kn_get_i64(&x->keys, i));
                return false;
            }
            kn_tensor vw = {.dtype = want->dtype, .data = (char *)x->values.data + (size_t)i * ve};
            kn_tensor vh = {.dtype = got->dtype, .data = (char *)y->values.data + (size_t)j * vg};
            if (!kn_compare_value(&vw, &vh, msg, len)) return false;
        }
        return true;
    }
    kn_named_tensor g = {.dtype = got->dtype, .ndim = got->ndim, .data = got->data};
    for (int d = 0; d < got->ndim; d++) g.dims[d] = got->dims[d];
    return kn_compare(want, &g, msg, len);
}

/* Reads <dir>/<prefix>K.pb for each value id in ids, by the kind each declares. */
static kn_status *kn_read_values(const char *dir, const char *prefix, const kn_graph *g, const int *ids, int n,
                                 kn_tensor **out, int *n_found) {
    *n_found = 0;
    for (int k = 0; k < n; k++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s%d.pb", dir, prefix, k);
        struct stat st;
        if (stat(p, &st) != 0) break;
        char *name = NULL;
        kn_status *s = kn_value_proto_read_file(p, kn_value_file_kind(&g->values[ids[k]]), &out[k], &name);
        free(name);
        if (s) return kn_error_wrap(s, "%s: ", p);
        (*n_found)++;
    }
    return NULL;
}

/* Runs one case in this process; returns 0 pass, 1 fail, 2 skip; msg explains. */
static int kn_run_case(const char *dir, const kn_session_options *o, char *msg, size_t len) {
    char p[4096];
    snprintf(p, sizeof p, "%s/model.onnx", dir);
    kn_model *m = NULL;
    kn_session *s = NULL;
    kn_status *st = kn_model_load(p, &m);
    if (!st) st = kn_expand_gradient_ops(m->graph, NULL); /* training-preview Gradient nodes */
    if (!st) st = kn_session_create(m, o, &s);
    if (st) {
        snprintf(msg, len, "%s", kn_status_message(st));
        kn_status_free(st);
        kn_model_free(m);
        return 1;
    }
    const kn_graph *g = m->graph;
    int sets = 0, rc = 0;
    kn_tensor **ins = calloc((size_t)g->n_inputs + 1, sizeof(kn_tensor *));
    kn_tensor **want = calloc((size_t)g->n_outputs + 1, sizeof(kn_tensor *));
    kn_tensor *bound = calloc((size_t)g->n_inputs + 1, sizeof(kn_tensor));
    kn_tensor *got = calloc((size_t)g->n_outputs + 1, sizeof(kn_tensor));
    for (int k = 0; rc == 0; k++) {
        snprintf(p, sizeof p, "%s/test_data_set_%d", dir, k);
        if (!kn_is_dir(p)) break;
        sets++;
        int n_in = 0, n_want = 0;
        st = kn_read_values(p, "input_", g, g->inputs, g->n_inputs, ins, &n_in);
        if (!st) st = kn_read_values(p, "output_", g, g->outputs, g->n_outputs, want, &n_want);
        if (!st && n_in != g->n_inputs)
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "%d input files for %d graph inputs", n_in, g->n_inputs);
        if (!st && n_want != g->n_outputs)
            st = kn_error(KN_ERR_INVALID_ARGUMENT, "%d reference outputs for %d graph outputs", n_want, g->n_outputs);
        for (int i = 0; !st && i < n_in; i++) bound[i] = *ins[i];
        if (!st) st = kn_session_run_values(s, bound, got);
        if (st) {
            snprintf(msg, len, "data set %d: %s", k, kn_status_message(st));
            kn_status_free(st);
            rc = 1;
        }
        for (int i = 0; rc == 0 && i < g->n_outputs; i++) {
            char why[512];
            if (!kn_compare_value(want[i], &got[i], why, sizeof why)) {
                snprintf(msg, len, "data set %d, output %d ('%s'): %s", k, i, g->values[g->outputs[i]].name, why);
                rc = 1;
            }
        }
        for (int i = 0; i < g->n_inputs; i++) {
            kn_tensor_free(ins[i]);
            ins[i] = NULL;
        }
        for (int i = 0; i < g->n_outputs; i++) {
            kn_tensor_free(want[i]);
            want[i] = NULL;
            kn_tensor_release(&got[i]);
        }
    }
    free(ins);
    free(want);
    free(bound);
    free(got);
    kn_session_free(s);
    kn_model_free(m);
    if (rc == 0 && sets == 0) {
        snprintf(msg, len, "no test_data_set_N folders");
        return 2;
    }
    return rc;
}

/* Fork, run the case in the child, report through a pipe; a timeout or a signal is a failure. */
static int kn_run_case_isolated(const char *dir, const kn_session_options *o, int timeout_s, char *msg, size_t len) {
    int fd[2];
    if (pipe(fd) != 0) return kn_run_case(dir, o, msg, len);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return kn_run_case(dir, o, msg, len);
    }
    if (pid == 0) {
        close(fd[0]);
        char m[2048] = "";
        int rc = kn_run_case(dir, o, m, sizeof m);
        char out[2100];
        int n = snprintf(out, sizeof out, "%d %s", rc, m);
        if (write(fd[1], out, (size_t)(n < (int)sizeof out ? n : (int)sizeof out - 1)) < 0) _exit(3);
        _exit(0);
    }
    close(fd[1]);
    char buf[2100];
    size_t got = 0;
    double deadline = time(NULL) + timeout_s;
    bool timed_out = false;
    for (;;) {
        struct pollfd pf = {.fd = fd[0], .events = POLLIN};
        int left = (int)(deadline - time(NULL));
        if (left <= 0) {
            timed_out = true;
            break;
        }
        int r = poll(&pf, 1, left * 1000);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            timed_out = true;
            break;
        }
        ssize_t k = read(fd[0], buf + got, sizeof buf - 1 - got);
        if (k <= 0) break;
        got += (size_t)k;
        if (got >= sizeof buf - 1) break;
    }
    buf[got] = 0;
    close(fd[0]);
    if (timed_out) kill(pid, SIGKILL);
    int wst = 0;
    waitpid(pid, &wst, 0);
    if (timed_out) {
        snprintf(msg, len, "timed out after %d s", timeout_s);
        return 1;
    }
    if (WIFSIGNALED(wst)) {
        snprintf(msg, len, "crashed with signal %d (%s)", WTERMSIG(wst), strsignal(WTERMSIG(wst)));
        return 1;
    }
    if (got == 0) {
        snprintf(msg, len, "child exited with status %d and no report", WEXITSTATUS(wst));
        return 1;
    }
    int rc = atoi(buf);
    const char *sp = strchr(buf, ' ');
    snprintf(msg, len, "%s", sp ? sp + 1 : "");
    return rc;
}

/* The op a case tests: from the folder name test_<op>_..., matched later against the summary. */
static void kn_case_op(const char *dir, char *op, size_t len) {
    char p[4096];
    snprintf(p, sizeof p, "%s/model.onnx", dir);
    kn_model *m = NULL;
    kn_status *st = kn_onnx_load_file(p, &m);
    if (st || !m->graph->n_nodes) {
        kn_status_free(st);
        snprintf(op, len, "(unreadable)");
        kn_model_free(m);
        return;
    }
    /* single-node cases name their op; expanded function graphs are grouped by their last node */
    const kn_graph *g = m->graph;
    const char *name = g->n_nodes == 1 ? g->nodes[0].op_type : NULL;
    const char *base = strrchr(dir, '/');
    base = base ? base + 1 : dir;
    if (name) snprintf(op, len, "%s", name);
    else snprintf(op, len, "%s", strstr(base, "expanded") ? "(expanded function)" : "(multi-node)");
    kn_model_free(m);
}

typedef struct {
    char op[64];
    int pass, fail, skip;
} kn_op_row;

int kn_cmd_conformance(int argc, char **argv) {
    kn_session_options o;
    kn_session_options_init(&o);
    o.num_threads = 1;
    const char *filter = NULL, *undefined_path = NULL, *baseline_path = NULL, *write_baseline = NULL;
    int timeout_s = 60, floor = -1;
    bool verbose = false;
    kn_strlist roots = {0}, cases = {0}, undef = {0}, undef_why = {0}, baseline = {0}, passed = {0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc) filter = argv[++i];
        else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
            if (kn_cli_parse_device(argv[++i], &o)) return 2;
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) timeout_s = atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) o.num_threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--undefined") == 0 && i + 1 < argc) undefined_path = argv[++i];
        else if (strcmp(argv[i], "--floor") == 0 && i + 1 < argc) floor = atoi(argv[++i]);
        else if (strcmp(argv[i], "--baseline") == 0 && i + 1 < argc) baseline_path = argv[++i];
        else if (strcmp(argv[i], "--write-baseline") == 0 && i + 1 < argc) write_baseline = argv[++i];
        else if (strcmp(argv[i], "--verbose") == 0) verbose = true;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "kiln conformance: unknown option %s\n", argv[i]);
            return 2;
        } else kn_strlist_add(&roots, argv[i]);
    }
    if (!roots.n) {
        fprintf(stderr,
                "usage: kiln conformance DIR... [--device D] [--filter REGEX] [--timeout S] [--verbose]\n"
                "       [--undefined FILE] [--floor N] [--baseline FILE] [--write-baseline FILE]\n");
        return 2;
    }
    if (undefined_path && kn_read_case_list(undefined_path, &undef, &undef_why)) return 2;
    if (baseline_path && kn_read_case_list(baseline_path, &baseline, NULL)) return 2;
    regex_t re;
    if (filter && regcomp(&re, filter, REG_EXTENDED | REG_NOSUB)) {
        fprintf(stderr, "kiln conformance: bad --filter regex '%s'\n", filter);
        return 2;
    }
    for (int i = 0; i < roots.n; i++) {
        if (!kn_is_dir(roots.v[i])) {
            fprintf(stderr, "kiln conformance: %s is not a folder\n", roots.v[i]);
            return 2;
        }
        kn_find_cases(roots.v[i], &cases, 0);
    }
    qsort(cases.v, (size_t)cases.n, sizeof(char *), kn_strcmp_p);
    int pass = 0, fail = 0, skip = 0, n_undef = 0;
    kn_op_row *rows = calloc(512, sizeof *rows);
    int n_rows = 0;
    /* which baseline cases were run (a --filter leaves the others out of the comparison) */
    bool *ran_base = calloc((size_t)baseline.n + 1, 1), *pass_base = calloc((size_t)baseline.n + 1, 1);
    for (int i = 0; i < cases.n; i++) {
        const char *base = strrchr(cases.v[i], '/');
        base = base ? base + 1 : cases.v[i];
        if (filter && regexec(&re, base, 0, NULL, 0) != 0 && regexec(&re, cases.v[i], 0, NULL, 0) != 0) continue;
        char msg[2048] = "", op[64];
        int rc = kn_run_case_isolated(cases.v[i], &o, timeout_s, msg, sizeof msg);
        int u = kn_strlist_find(&undef, base), b = kn_strlist_find(&baseline, base);
        if (b >= 0) {
            ran_base[b] = true;
            pass_base[b] = rc == 0;
        }
        if (u >= 0) {
            /* run and shown, but the spec does not define the expected values: no verdict */
            n_undef++;
            printf("UNDEF %s (%s): %s%s\n", base, undef_why.v[u],
                   rc == 0 ? "matches the reference" : "differs: ", rc == 0 ? "" : msg);
            fflush(stdout);
            continue;
        }
        kn_case_op(cases.v[i], op, sizeof op);
        int r = 0;
        while (r < n_rows && strcmp(rows[r].op, op)) r++;
        if (r == n_rows && n_rows < 512) {
            snprintf(rows[r].op, sizeof rows[r].op, "%s", op);
            n_rows++;
        }
        if (rc == 0) {
            pass++;
            if (r < 512) rows[r].pass++;
            kn_strlist_add(&passed, base);
            if (verbose) printf("PASS %s\n", base);
        } else if (rc == 2) {
            skip++;
            if (r < 512) rows[r].skip++;
            printf("SKIP %s: %s\n", base, msg);
        } else {
            fail++;
            if (r < 512) rows[r].fail++;
            printf("FAIL %s [%s]: %s\n", base, op, msg);
        }
        fflush(stdout);
    }
    printf("\nper-op summary (op: passed/total):\n");
    for (int r = 0; r < n_rows; r++)
        if (rows[r].fail || rows[r].skip)
            printf("  %-32s %d/%d%s\n", rows[r].op, rows[r].pass, rows[r].pass + rows[r].fail + rows[r].skip,
                   rows[r].fail ? "  <- failing" : "");
    int full = 0;
    for (int r = 0; r < n_rows; r++) full += !rows[r].fail && !rows[r].skip;
    printf("  (%d more ops pass every case)\n", full);

    int rc = fail ? 1 : 0;
    if (floor >= 0 || baseline_path) {
        int lost = 0;
        for (int b = 0; b < baseline.n; b++)
            lost += ran_base[b] && !pass_base[b] && kn_strlist_find(&undef, baseline.v[b]) < 0;
        if (lost) {
            printf("\nREGRESSION: %d case%s listed in %s passed before and do%s not now:\n", lost, lost == 1 ? "" : "s",
                   baseline_path, lost == 1 ? "es" : "");
            for (int b = 0; b < baseline.n; b++)
                if (ran_base[b] && !pass_base[b] && kn_strlist_find(&undef, baseline.v[b]) < 0)
                    printf("  %s\n", baseline.v[b]);
        }
        if (floor >= 0 && pass < floor) printf("\nREGRESSION: %d passed < floor %d\n", pass, floor);
        rc = lost || (floor >= 0 && pass < floor) ? 1 : 0;
        if (!rc && floor >= 0 && pass > floor)
            printf("\n%d passed > floor %d: raise the floor and record the passing cases (--write-baseline)\n", pass,
                   floor);
    }
    if (write_baseline) {
        FILE *f = fopen(write_baseline, "w");
        if (!f) {
            fprintf(stderr, "kiln conformance: cannot write %s: %s\n", write_baseline, strerror(errno));
            rc = 2;
        } else {
            fprintf(
                f, "# cases that passed (kiln conformance --write-baseline); a case here that fails is a regression\n");
            for (int i = 0; i < passed.n; i++) fprintf(f, "%s\n", passed.v[i]);
            fclose(f);
        }
    }
    if (n_undef)
        printf("\n%d undefined (the spec leaves their expected output undefined; run, not counted)\n", n_undef);
    printf("\n%d passed, %d failed, %d skipped\n", pass, fail, skip);
    if (filter) regfree(&re);
    kn_strlist_free(&roots);
    kn_strlist_free(&cases);
    kn_strlist_free(&undef);
    kn_strlist_free(&undef_why);
    kn_strlist_free(&baseline);
    kn_strlist_free(&passed);
    free(rows);
    free(ran_base);
    free(pass_base);
    return rc;
}
