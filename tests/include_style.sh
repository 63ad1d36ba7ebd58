#!/usr/bin/env bash
# One include style: every project header is included by its path from the repository root
# ("graph/ops.h", "kernels/cpu/rows.h"). Exceptions: the public API header as users write it
# ("kiln.h"), protobuf-c's generated "onnx/..." headers, and the SIMT interpreter's stand-ins for
# the CUDA headers (kernels/cuda/simt/), which must keep the CUDA names.
#   include_style.sh SOURCE_DIR
set -euo pipefail
cd "$1"
bad=0 n=0
while IFS= read -r f; do
  case "$f" in kernels/cuda/simt/*) continue ;; esac
  while IFS= read -r inc; do
    n=$((n + 1))
    case "$inc" in kiln.h | onnx/*) continue ;; esac
    if [ ! -f "$inc" ]; then echo "$f: #include \"$inc\" is not a path from the repository root"; bad=$((bad + 1)); fi
  done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f")
done < <(git ls-files '*.c' '*.h' '*.cu' '*.cpp' '*.def')
echo "$((n - bad)) passed, $bad failed"
[ "$bad" = 0 ]
