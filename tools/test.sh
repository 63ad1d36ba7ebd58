#!/usr/bin/env bash
# The whole kiln test suite: installs dependencies, builds (Release, CUDA compiled when nvcc is
# found), then runs every test under ctest: Check unit tests, the ONNX conformance suites, the
# model zoo parity and the bad-input checks. GPU tests skip with "skipped: no CUDA device".
# Python runs from the project venv made from tests/requirements.lock (tools/install_deps.sh),
# which is checked against the lock first, so a drifted environment stops here, not in a test.
# The format is checked first; the main build treats warnings as errors; the concurrency tests
# also run under ThreadSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
# the tree follows .clang-format (first, as it takes seconds)
bash tools/check_format.sh
BUILD=${KILN_BUILD_DIR:-build}
JOBS=${KILN_JOBS:-$(nproc)}
PY="$PWD/$BUILD/venv/bin/python"
case "$BUILD" in /*) PY="$BUILD/venv/bin/python" ;; esac
export PATH="$(dirname "$PY"):$PATH"   # a bare `python3` in any test is the venv's too
# warnings are errors here, so the count stays at zero
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DKILN_WERROR=ON -DPython3_EXECUTABLE="$PY" >/dev/null
cmake --build "$BUILD" -j"$JOBS"
# the concurrency tests again under ThreadSanitizer, in a CPU-only build of their own
cmake -S . -B "$BUILD-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_TSAN=ON -DKILN_WERROR=ON -DKILN_CUDA=OFF \
  -DKILN_CUDA_SIM=OFF -DPython3_EXECUTABLE="$PY" >/dev/null
cmake --build "$BUILD-tsan" -j"$JOBS" --target test_session test_pl_threads
TSAN_OPTIONS="halt_on_error=1 exitcode=66" \
  ctest --test-dir "$BUILD-tsan" -R '^(unit\.test_session|pipelines\.threads)$' --output-on-failure
# everything, last, so its summary closes the output
ctest --test-dir "$BUILD" --output-on-failure -j"$JOBS" "$@"
# ctest only says "Skipped" for the GPU tests; show why, so a CPU-only run says it plainly
if [ -x "$BUILD/tests/cuda_smoke" ] || ls "$BUILD"/tests/test_backend_ops >/dev/null 2>&1; then
  ctest --test-dir "$BUILD" -R '^gpu\.' -V 2>&1 | grep -E "^[0-9]+: .*skipped: " | sed 's/^[0-9]*: /gpu test: /' | sort -u || true
fi
