#!/usr/bin/env bash
# Installs what kiln needs to build and test on a fresh Debian/Ubuntu machine: compilers and
# libraries from apt, and the Python test packages into two project venvs made from their locks
# alone (exact versions, sha256-checked, no resolving): $KILN_BUILD_DIR/venv (default build/venv)
# from tests/requirements.lock, and $KILN_BUILD_DIR/venv-optimum from
# tests/requirements-optimum.lock (Optimum's exporter, which needs transformers 4 while the main
# lock has 5; only tests/textgen_tools.py uses it; KILN_NO_OPTIMUM_VENV=1 skips it). The second
# venv installs only the pins its lock does not share with the main one (transformers,
# tokenizers, optimum, ...: about ten small wheels) and reads the shared ones (torch and its CUDA
# libraries, numpy, onnx, onnxruntime: gigabytes) from the main venv through a .pth file placed
# after its own site-packages, so its own versions win. A venv is rebuilt only when its lock
# changes, so a second run installs nothing; either way each is then held to its lock by
# tools/check_python_env.py, which stops with the package's name when anything differs (its last
# line names the venv).
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(build-essential cmake pkg-config protobuf-c-compiler libprotobuf-c-dev check libsubunit-dev
      libutf8proc-dev libpcre2-dev libjson-c-dev libjpeg-dev libpng-dev libcurl4-openssl-dev libssl-dev
      python3 python3-venv python3-pip clang-format-14 libopenmpi-dev openmpi-bin)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

BUILD=${KILN_BUILD_DIR:-build}
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "kiln's Python tests need Python >= 3.11 (the lock is resolved for it); python3 is $(python3 -V)" >&2; exit 1; }
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$HOME/.cache/pip}

# install_venv VENV LOCK IN [BASE_VENV BASE_LOCK]: VENV made from LOCK (unless it already was from
# this very lock), then held to LOCK and to IN's direct pins. With BASE_VENV, the packages LOCK pins
# at the same version as BASE_LOCK are read from BASE_VENV's site-packages instead of installed.
install_venv() {
  local venv=$1 lock=$2 in=$3 base=${4:-} base_lock=${5:-}
  # a lock edited by hand is refused before the venv is touched
  local checker_py=python3; [ -x "$venv/bin/python" ] && checker_py="$venv/bin/python"
  "$checker_py" tools/check_python_env.py --lock "$lock" --lock-only
  local want have
  want=$(sha256sum "$lock" | cut -d' ' -f1)
  have=$(cat "$venv/.lock-sha256" 2>/dev/null || true)
  if [ ! -x "$venv/bin/python" ] || [ "$have" != "$want" ]; then
    [ -n "$have" ] && echo "$lock changed: making $venv anew" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    local req=$lock
    if [ -n "$base" ]; then
      local own shared
      own=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
      shared=$("$base/bin/python" -c 'import site; print(site.getsitepackages()[0])')
      # "zz": .pth files are read in name order and append, so the shared folder comes last; the
      # setuptools the venv was born with would shadow the base's locked one
      "$venv/bin/python" -m pip uninstall -q -y setuptools >&2 2>/dev/null || true
      echo "$shared" > "$own/zz_kiln_shared_base.pth"
      req="$venv/own-requirements.txt"
      "$venv/bin/python" tools/check_python_env.py --lock "$lock" --not-in "$base_lock" \
        --write-subset "$req"
      echo "installing $(grep -cE '^[a-zA-Z0-9]' "$req") of $(grep -cE '^[a-zA-Z0-9]' "$lock") locked Python" \
        "packages into $venv (the others are $base's)" >&2
    else
      echo "installing $(grep -cE '^[a-zA-Z0-9]' "$lock") locked Python packages into $venv" >&2
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --require-hashes -r "$req" >&2
    echo "$want" > "$venv/.lock-sha256"
  fi
  "$venv/bin/python" tools/check_python_env.py --lock "$lock" --direct "$in" >&2
}

install_venv "$BUILD/venv" tests/requirements.lock tests/requirements.in
# made anew with the main venv too: its .pth points into that venv's site-packages
if [ "${KILN_NO_OPTIMUM_VENV:-0}" != 1 ]; then
  [ "$BUILD/venv/.lock-sha256" -nt "$BUILD/venv-optimum/.lock-sha256" ] 2>/dev/null && rm -rf "$BUILD/venv-optimum"
  install_venv "$BUILD/venv-optimum" tests/requirements-optimum.lock tests/requirements-optimum.in \
    "$BUILD/venv" tests/requirements.lock
fi
