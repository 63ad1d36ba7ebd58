/* `kiln download REPO[@REV] [--revision R] [--onnx-file F]`: fetches what a pipeline needs from a
 * Hugging Face repo (configs, tokenizer files, the pooling config, one ONNX model and its external
 * data) into the huggingface_hub cache, or finds it there, and prints the snapshot folder on stdout.
 * HF_ENDPOINT, HF_TOKEN, HF_HOME / HF_HUB_CACHE and HF_HUB_OFFLINE are honoured as huggingface_hub
 * does; progress goes to stderr when it is a terminal. */
#ifdef KILN_HAVE_PIPELINES
#include "tools/cli/cli.h"
#include "pipelines/pl_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void kn_download_usage(FILE *f) {
    fprintf(f,
            "usage: kiln download REPO[@REVISION] [--revision R] [--onnx-file PATH]\n"
            "  REPO          a Hugging Face repo id, org/name (revision: a branch, tag or commit; default main)\n"
            "  --onnx-file   the model file inside the repo (default model.onnx, else onnx/model.onnx)\n"
            "Prints the local snapshot folder. Environment: HF_ENDPOINT, HF_TOKEN, HF_HOME, HF_HUB_CACHE,\n"
            "HF_HUB_OFFLINE=1 (cache only), HF_HUB_DOWNLOAD_TIMEOUT (seconds without data before giving up).\n");
}

int kn_cmd_download(int argc, char **argv) {
    const char *repo = NULL, *rev = NULL, *onnx = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            kn_download_usage(stdout);
            return 0;
        }
        if ((!strcmp(a, "--revision") || !strcmp(a, "--onnx-file")) && i + 1 < argc) {
            if (!strcmp(a, "--revision")) rev = argv[++i];
            else onnx = argv[++i];
        } else if (a[0] == '-') {
            fprintf(stderr, "kiln download: unknown option %s\n", a);
            kn_download_usage(stderr);
            return 2;
        } else if (!repo) repo = a;
        else {
            fprintf(stderr, "kiln download: one repo at a time (got '%s' and '%s')\n", repo, a);
            return 2;
        }
    }
    if (!repo) {
        kn_download_usage(stderr);
        return 2;
    }
    char *arg = NULL;
    if (rev) {
        if (strchr(repo, '@')) {
            fprintf(stderr, "kiln download: give the revision as REPO@REV or --revision, not both\n");
            return 2;
        }
        size_t n = strlen(repo) + strlen(rev) + 2;
        arg = malloc(n);
        if (!arg) {
            fprintf(stderr, "kiln download: out of memory\n");
            return 1;
        }
        snprintf(arg, n, "%s@%s", repo, rev);
    }
    char *dir = NULL;
    kn_status *st = pl_hub_fetch(arg ? arg : repo, onnx, &dir);
    free(arg);
    if (st) {
        fprintf(stderr, "kiln download: error: %s\n", kn_status_message(st));
        kn_status_free(st);
        return 1;
    }
    printf("%s\n", dir);
    free(dir);
    return 0;
}
#endif
