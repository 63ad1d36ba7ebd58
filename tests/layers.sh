#!/usr/bin/env bash
# The layers read top to bottom: each file includes only project headers from its own layer or
# below, so there is no include cycle between runtime/core, graph/, kernels/ and the executor.
#   0 runtime/core/ and the public types (kiln.h)    tensor, dtype, status, threadpool
#   1 graph/                                          IR, op table, params, shape rules, passes
#   2 kernels/                                        CPU and CUDA backends
#   3 runtime/ (the rest)                             executor, plans, folding, sessions
#   4 autograd/   5 pipelines/   6 tools/, tests/
# kernels/cuda/simt/ (the CUDA stand-ins) is layer 2; protobuf-c's onnx/ headers are layer 1.
#   layers.sh SOURCE_DIR
set -euo pipefail
cd "$1"
layer() {
  case "$1" in
    kiln.h | runtime/kiln.h | runtime/core/*) echo 0 ;;
    graph/* | onnx/*) echo 1 ;;
    kernels/*) echo 2 ;;
    runtime/*) echo 3 ;;
    autograd/*) echo 4 ;;
    pipelines/*) echo 5 ;;
    *) echo 6 ;;
  esac
}
bad=0 n=0
while IFS= read -r f; do
  lf=$(layer "$f")
  while IFS= read -r inc; do
    # project paths only (the CUDA stand-ins include each other relatively)
    case "$inc" in runtime/* | graph/* | kernels/* | autograd/* | pipelines/* | tools/* | tests/* | kiln.h) ;; *) continue ;; esac
    n=$((n + 1))
    li=$(layer "$inc")
    if [ "$li" -gt "$lf" ]; then
      echo "$f (layer $lf) includes \"$inc\" (layer $li): a lower layer may not depend on a higher one"
      bad=$((bad + 1))
    fi
  done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f")
done < <(git ls-files '*.c' '*.h' '*.cu' '*.cpp' '*.def' | grep -E '^(runtime|graph|kernels|autograd|pipelines)/')
echo "$((n - bad)) includes within their layers, $bad across upwards"
[ "$bad" = 0 ]
