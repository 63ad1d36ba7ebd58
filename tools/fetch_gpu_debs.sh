#!/usr/bin/env bash
# For the GPU host, which has CUDA, gcc and cmake but no package registry: downloads here the
# .deb files of kiln's other build dependencies into .debs/ (git-ignored), to be carried to the
# host and unpacked there with `tools/fetch_gpu_debs.sh --unpack PREFIX` (dpkg -x, never into /).
# tools/gpu_check.sh then finds them through KILN_DEPS_PREFIX=PREFIX (it also repoints their .pc files).
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(libprotobuf-c1 libprotobuf-c-dev protobuf-c-compiler libprotoc32 libprotobuf32 check libsubunit0 libsubunit-dev
      libutf8proc2 libutf8proc-dev libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
      libjson-c5 libjson-c-dev libcurl4-openssl-dev libcurl4 libssl-dev libjpeg-dev libjpeg62-turbo-dev
      libjpeg62-turbo libpng-dev libpng16-16 zlib1g-dev)
if [ "${1:-}" = "--unpack" ]; then
  prefix=${2:?usage: fetch_gpu_debs.sh --unpack PREFIX}
  mkdir -p "$prefix"
  for d in .debs/*.deb; do dpkg -x "$d" "$prefix"; done
  echo "unpacked $(ls .debs/*.deb | wc -l) packages into $prefix; run: KILN_DEPS_PREFIX=$prefix bash tools/gpu_check.sh"
  exit 0
fi
mkdir -p .debs
cd .debs
apt-get download "${pkgs[@]}" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true
echo "$(ls *.deb | wc -l) .deb files in .debs/ ($(du -sh . | cut -f1))"
