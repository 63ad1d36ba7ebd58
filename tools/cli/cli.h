/* Shared pieces of the kiln CLI: reading ONNX test-layout folders and binding tensors. */
#ifndef KN_CLI_H
#define KN_CLI_H
#include "graph/model.h"
#include "kiln.h"

/* input_0.pb, input_1.pb, ... in numeric order (prefix "input_" or "output_"). */
typedef struct kn_pb_set {
    int n;
    kn_tensor **t;
    char **names; /* name stored in the TensorProto, may be NULL */
} kn_pb_set;
kn_status *kn_cli_read_pb_set(const char *dir, const char *prefix, kn_pb_set *out);
void kn_cli_pb_set_free(kn_pb_set *s);
/* Bind a set of input tensors to the session's inputs: by TensorProto name when every name
 * matches, else in order. strict: a file naming a tensor the model lacks is an error (exec);
 * otherwise such names are ignored and the order decides (old test suites). */
kn_status *kn_cli_bind(const kn_session *s, const kn_pb_set *in, kn_named_tensor *named, bool strict);
int kn_cli_parse_device(const char *s, kn_session_options *o);
/* fp32|tf32|fp16|bf16 into o->precision; on a CPU device the session runs fp32, so a reduced
 * precision there is set back to fp32 with a warning naming cmd. Returns -1 on an unknown name. */
int kn_cli_parse_precision(const char *s, kn_session_options *o, const char *cmd);
const char *kn_cli_precision_name(kn_precision p);
/* --seq-bucket N into o->seq_bucket (kn_session_options: lengths padded to multiples of N, one plan
 * per bucket); -1 with a message naming cmd unless N is a whole number >= 1. */
int kn_cli_parse_seq_bucket(const char *s, kn_session_options *o, const char *cmd);

int kn_cmd_info(int argc, char **argv);
int kn_cmd_exec(int argc, char **argv);
int kn_cmd_conformance(int argc, char **argv);
int kn_cmd_bench(int argc, char **argv);
/* kiln info --device D: the nodes a session on D leaves to the CPU (cmd_info_device.c) */
int kn_cmd_info_device(const char *path, const char *device, bool fuse, bool json, int n_dims, char **dims);
/* provided by pipelines when built */
int kn_cmd_tokenize(int argc, char **argv) __attribute__((weak));
int kn_cmd_embed(int argc, char **argv) __attribute__((weak));
int kn_cmd_detokenize(int argc, char **argv) __attribute__((weak));
int kn_cmd_run(int argc, char **argv) __attribute__((weak));
int kn_cmd_download(int argc, char **argv) __attribute__((weak));
int kn_cmd_train(int argc, char **argv) __attribute__((weak));
int kn_cmd_chat_template(int argc, char **argv) __attribute__((weak));
/* text generation (cmd_generate.c) */
int kn_cmd_generate(int argc, char **argv) __attribute__((weak));
int kn_cmd_run_textgen(int argc, char **argv) __attribute__((weak));

#endif
