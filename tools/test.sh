#!/usr/bin/env bash
# The whole kiln test suite: installs dependencies, builds (Release, CUDA compiled when nvcc is
# found), then runs every test under ctest: Check unit tests, the ONNX conformance suites, the
# model zoo parity and the bad-input checks. GPU tests skip with "skipped: no CUDA device".
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
BUILD=${KILN_BUILD_DIR:-build}
JOBS=${KILN_JOBS:-$(nproc)}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$JOBS"
ctest --test-dir "$BUILD" --output-on-failure -j"$JOBS" "$@"
