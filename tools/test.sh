#!/usr/bin/env bash
# The whole kiln test suite: installs dependencies, builds (Release, CUDA compiled when nvcc is
# found), then runs every test under ctest: Check unit tests, the ONNX conformance suites, the
# model zoo parity and the bad-input checks. GPU tests skip with "skipped: no CUDA device".
# Python runs from the project venv made from tests/requirements.lock (tools/install_deps.sh),
# which is checked against the lock first, so a drifted environment stops here, not in a test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
BUILD=${KILN_BUILD_DIR:-build}
JOBS=${KILN_JOBS:-$(nproc)}
PY="$PWD/$BUILD/venv/bin/python"
case "$BUILD" in /*) PY="$BUILD/venv/bin/python" ;; esac
export PATH="$(dirname "$PY"):$PATH"   # a bare `python3` in any test is the venv's too
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$PY" >/dev/null
cmake --build "$BUILD" -j"$JOBS"
ctest --test-dir "$BUILD" --output-on-failure -j"$JOBS" "$@"
# ctest only says "Skipped" for the GPU tests; show why, so a CPU-only run says it plainly
if [ -x "$BUILD/tests/cuda_smoke" ] || ls "$BUILD"/tests/test_backend_ops >/dev/null 2>&1; then
  ctest --test-dir "$BUILD" -R '^gpu\.' -V 2>&1 | grep -E "^[0-9]+: .*skipped: " | sed 's/^[0-9]*: /gpu test: /' | sort -u || true
fi
