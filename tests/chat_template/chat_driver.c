/* The chat-template command alone (no engine), so the parity test runs without the whole kiln
 * CLI: `kiln_chat ARGS` is `kiln chat-template ARGS`. */
#include <stdio.h>

int kn_cmd_chat_template(int argc, char **argv);

int main(int argc, char **argv) { return kn_cmd_chat_template(argc, argv); }
