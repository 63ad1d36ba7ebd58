#!/usr/bin/env bash
# The whole tree follows .clang-format: every tracked C, C++ and CUDA source is compared with what
# clang-format makes of it, and each file that differs is named with the first lines of the diff.
# clang-format 14 (Debian's clang-format-14) is the pinned formatter: other versions lay some code
# out differently, so the check refuses them rather than report false differences.
#   check_format.sh          check (exit 1 naming the files)
#   check_format.sh --fix    rewrite the files in place
set -euo pipefail
cd "$(dirname "$0")/.."
CF=${CLANG_FORMAT:-$(command -v clang-format-14 || true)}
[ -n "$CF" ] || { echo "check_format: clang-format-14 not found (tools/install_deps.sh installs it)" >&2; exit 1; }
"$CF" --version | grep -q 'version 14\.' || { echo "check_format: $CF is not clang-format 14: $("$CF" --version)" >&2; exit 1; }
mapfile -t files < <(git ls-files '*.c' '*.h' '*.cu' '*.cuh' '*.cpp')
if [ "${1:-}" = --fix ]; then
  "$CF" -i --style=file "${files[@]}"
  echo "formatted ${#files[@]} files"
  exit 0
fi
bad=0
for f in "${files[@]}"; do
  if ! "$CF" --style=file "$f" | cmp -s - "$f"; then
    echo "not formatted: $f (tools/check_format.sh --fix)"
    { "$CF" --style=file "$f" | diff -u "$f" - || true; } | sed -n "3,12p"
    bad=$((bad + 1))
  fi
done
echo "format: $((${#files[@]} - bad)) files follow .clang-format, $bad do not"
[ "$bad" = 0 ]
