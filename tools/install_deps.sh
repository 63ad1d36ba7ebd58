#!/usr/bin/env bash
# Installs what kiln needs to build and test on a fresh Debian/Ubuntu machine: compilers and
# libraries from apt, the pinned Python test packages from pip. Skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(build-essential cmake pkg-config protobuf-c-compiler libprotobuf-c-dev check libsubunit-dev
      libutf8proc-dev libpcre2-dev libjson-c-dev libjpeg-dev libpng-dev libcurl4-openssl-dev libssl-dev python3 python3-pip)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! python3 - <<'PY' 2>/dev/null
import importlib.metadata as m, sys
want = [l.split("#")[0].strip() for l in open("tests/requirements.txt")]
for w in filter(None, want):
    name, ver = w.split("==")
    ver = ver.split()[0]
    if m.version(name) != ver: sys.exit(1)
PY
then
  python3 -m pip install -q -r tests/requirements.txt 2>&1 | grep -v "Running pip as the 'root' user" || true
fi
