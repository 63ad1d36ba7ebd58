#!/usr/bin/env bash
# A row of graph/ops.def whose facets are missing must fail the build, naming them: compiles the
# two files that turn rows into tables (graph/ops.c, kernels/cpu/backend.c) with one extra row,
# KnMissing, for which no shape rule, CPU kernel, params decoder or gradient rule exists (its grad
# column says RULE), links them against the kiln shared library, and expects the link to fail
# naming kn_infer_KnMissing, kn_cpu_KnMissing, kn_params_decode_missing and kn_grad_KnMissing. The
# same build without the row must link.
#   optable_facets.sh CC SOURCE_DIR LIBKILN
set -euo pipefail
CC=$1 SRC=$2 LIB=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/extra.def" <<'ROW'
KN_OP(KnMissing, "KnMissing", "kiln", KN_INPLACE_NONE, missing, RULE)
ROW
cat > "$tmp/params_extra.h" <<'H'
typedef struct kn_params_missing { int x; } kn_params_missing;
H
cat > "$tmp/main.c" <<'C'
#include "graph/ops.h"
#include <stdio.h>
int main(void) { printf("%d ops\n", KN_OP_COUNT); return kn_op_table[0].name == NULL; }
C
build() { # $1: extra cflags
  for f in graph/ops.c kernels/cpu/backend.c; do
    "$CC" -std=c11 -D_GNU_SOURCE -c $1 -I"$SRC" -I"$SRC/runtime" "$SRC/$f" -o "$tmp/$(basename "$f" .c).o"
  done
  "$CC" -std=c11 -D_GNU_SOURCE -c $1 -I"$SRC" -I"$SRC/runtime" "$tmp/main.c" -o "$tmp/main.o"
  "$CC" "$tmp/main.o" "$tmp/ops.o" "$tmp/backend.o" "$LIB" -Wl,-rpath,"$(dirname "$LIB")" -lm -o "$tmp/prog"
}
if ! build "" > "$tmp/plain.log" 2>&1; then
  cat "$tmp/plain.log"; echo "FAIL: the table without the extra row does not link"; exit 1
fi
echo "ok: the op table as it is links ($("$tmp/prog"))"
if build "-DKN_OPS_EXTRA=\"$tmp/extra.def\" -include $tmp/params_extra.h" > "$tmp/extra.log" 2>&1; then
  echo "FAIL: a row with no shape rule, kernel, decoder or gradient rule linked"; exit 1
fi
fail=0
for sym in kn_infer_KnMissing kn_cpu_KnMissing kn_params_decode_missing kn_grad_KnMissing; do
  if grep -q "$sym" "$tmp/extra.log"; then echo "ok: the link fails naming $sym"
  else echo "FAIL: the link error does not name $sym"; fail=1; fi
done
[ $fail = 0 ] || { cat "$tmp/extra.log"; exit 1; }
echo "2 passed, 0 failed"
