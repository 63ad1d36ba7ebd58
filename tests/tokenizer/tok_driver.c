/* Stand-alone driver for the tokenizer commands (kiln_tok tokenize|detokenize ...), so the
 * parity tests and the benchmark do not depend on the full kiln CLI being built. */
#include <stdio.h>
#include <string.h>

int kn_cmd_tokenize(int argc, char **argv);
int kn_cmd_detokenize(int argc, char **argv);

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "tokenize")) return kn_cmd_tokenize(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "detokenize")) return kn_cmd_detokenize(argc - 1, argv + 1);
    fprintf(stderr, "usage: %s tokenize|detokenize --tokenizer PATH ...\n", argv[0]);
    return 2;
}
