#!/usr/bin/env bash
# Installs what kiln needs to build and test on a fresh Debian/Ubuntu machine: compilers and
# libraries from apt, and the Python test packages into a project venv ($KILN_BUILD_DIR/venv,
# default build/venv) made from tests/requirements.lock alone (exact versions, sha256-checked,
# no resolving). The venv is rebuilt only when the lock changes, so a second run installs
# nothing; either way it is then held to the lock by tools/check_python_env.py, which stops with
# the package's name when anything differs. Prints the venv's python last.
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
VENV="$BUILD/venv"
LOCK=tests/requirements.lock
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "kiln's Python tests need Python >= 3.11 (the lock is resolved for it); python3 is $(python3 -V)" >&2; exit 1; }
# a lock edited by hand is refused before the venv is touched
checker_py=python3; [ -x "$VENV/bin/python" ] && checker_py="$VENV/bin/python"
"$checker_py" tools/check_python_env.py --lock "$LOCK" --lock-only
want=$(sha256sum "$LOCK" | cut -d' ' -f1)
have=$(cat "$VENV/.lock-sha256" 2>/dev/null || true)
if [ ! -x "$VENV/bin/python" ] || [ "$have" != "$want" ]; then
  [ -n "$have" ] && echo "$LOCK changed: making $VENV anew" >&2
  rm -rf "$VENV"
  mkdir -p "$BUILD"
  python3 -m venv "$VENV"
  echo "installing $(grep -cE '^[a-zA-Z0-9]' "$LOCK") locked Python packages into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --require-hashes -r "$LOCK" >&2
  echo "$want" > "$VENV/.lock-sha256"
fi
"$VENV/bin/python" tools/check_python_env.py --lock "$LOCK" --direct tests/requirements.in >&2
