#!/usr/bin/env bash
# The one script for a GPU host: builds kiln (Release, CUDA sm_90a), then runs every GPU check
# and prints a summary table last:
#   - ctest's gpu.* tests (smoke, every CUDA kernel against the CPU op by op, zoo sessions,
#     training graphs and the device optimisers),
#   - the ONNX node conformance suite with --device cuda against the CPU's pass count,
#   - the zoo models through `kiln exec --device cuda` against ONNX Runtime (rtol 1e-3, atol 1e-4),
#   - compute-sanitizer memcheck and racecheck on the kernel harness and on one zoo model,
#   - the same harnesses under the SIMT interpreter (ctest gpusim.*, built by default beside the
#     nvcc build) with their results diffed against the device's: the per-op table of
#     test_backend_ops, the per-model results of test_session_cuda, and the interpreter's primitive
#     tests (tests/gpu/test_simt.cpp) run on the GPU (gpu.interpreter_primitives) and emulated.
# Libraries unpacked from .deb files into a prefix (protobuf-c, Check, utf8proc, PCRE2, json-c):
# set KILN_DEPS_PREFIX=/that/prefix (its usr/ is searched too). Exit status: 0 when every row passed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${KILN_BUILD_DIR:-build-gpu}
JOBS=${KILN_JOBS:-$(nproc)}
ZOO=${KILN_ZOO:-$ROOT/../shared/zoo}
SAN_MODEL=${KILN_SANITIZE_MODEL:-bert_feature}

if [ -n "${KILN_DEPS_PREFIX:-}" ]; then
  for p in "$KILN_DEPS_PREFIX" "$KILN_DEPS_PREFIX/usr"; do
    [ -d "$p" ] || continue
    export CMAKE_PREFIX_PATH="$p${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
    for l in lib lib64 lib/x86_64-linux-gnu lib/aarch64-linux-gnu; do
      [ -d "$p/$l" ] || continue
      export LD_LIBRARY_PATH="$p/$l${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      export LIBRARY_PATH="$p/$l${LIBRARY_PATH:+:$LIBRARY_PATH}"
      [ -d "$p/$l/pkgconfig" ] && export PKG_CONFIG_PATH="$p/$l/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    done
    [ -d "$p/share/pkgconfig" ] && export PKG_CONFIG_PATH="$p/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    [ -d "$p/include" ] && export CPATH="$p/include${CPATH:+:$CPATH}"
    [ -d "$p/bin" ] && export PATH="$p/bin:$PATH"
  done
  # .pc files from .deb packages say prefix=/usr: copies pointing at the unpacked tree go first
  PCDIR=$(mktemp -d)
  for pc in "$KILN_DEPS_PREFIX"/usr/lib/*/pkgconfig/*.pc "$KILN_DEPS_PREFIX"/usr/lib/pkgconfig/*.pc "$KILN_DEPS_PREFIX"/usr/share/pkgconfig/*.pc; do
    [ -f "$pc" ] && sed -E "s#=/usr(/|\$)#=$KILN_DEPS_PREFIX/usr\1#" "$pc" >"$PCDIR/$(basename "$pc")"
  done
  export PKG_CONFIG_PATH="$PCDIR${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
fi

LOG=$BUILD/gpu_check
mkdir -p "$LOG"
declare -a ROWS=()
FAILED=0
row() { ROWS+=("$(printf '%-44s %-6s %s' "$1" "$2" "$3")"); [ "$2" = PASS ] || [ "$2" = SKIP ] || FAILED=1; }

echo "== build ($BUILD)"
if ! cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA=ON >"$LOG/configure.log" 2>&1; then
  tail -30 "$LOG/configure.log"; row "configure" FAIL "$LOG/configure.log"
elif ! cmake --build "$BUILD" -j"$JOBS" >"$LOG/build.log" 2>&1; then
  grep -E "error|Error" "$LOG/build.log" | head -30; row "build" FAIL "$LOG/build.log"
else
  W=$(grep -c "warning" "$LOG/build.log" || true)
  row "build (Release, sm_90a)" PASS "$W warnings"
fi
KILN=$BUILD/kiln
if [ ! -x "$KILN" ]; then printf '%s\n' "${ROWS[@]}"; exit 1; fi
echo "== $("$KILN" --version | tail -1)"
nvidia-smi -L 2>/dev/null | head -4

# One table row per ctest entry of a group: ctest_rows GROUP SKIP_OK TEST...; SKIP_OK=1 lets a
# skip (exit 77: no device) count as a skip rather than a failure.
ctest_rows() {
  local group=$1 skip_ok=$2 t line
  shift 2
  ctest --test-dir "$BUILD" -R "^$group\\." --output-on-failure >"$LOG/ctest_$group.log" 2>&1
  for t in "$@"; do
    line=$(grep -E "$group\\.$t .*(Passed|Failed|Skipped|Not Run|\\*\\*\\*)" "$LOG/ctest_$group.log" | tail -1)
    case "$line" in
      *Passed*) row "$group.$t" PASS "" ;;
      *Skipped* | *"Not Run"*) if [ "$skip_ok" = 1 ]; then row "$group.$t" SKIP "skipped (no device?)"
                               else row "$group.$t" FAIL "$LOG/ctest_$group.log"; fi ;;
      *) row "$group.$t" FAIL "$LOG/ctest_$group.log" ;;
    esac
  done
}

echo "== ctest gpu.*"
ctest_rows gpu 1 cuda_smoke backend_ops session interpreter_primitives train train_optim
"$BUILD/tests/test_backend_ops" >"$LOG/backend_ops.txt" 2>&1 || true

echo "== the SIMT interpreter: ctest gpusim.*, and its answers against the device's"
ctest_rows gpusim 0 interpreter backend_ops session conformance_node no_fused_fallback pipelines ort_optimizer train train_optim
# same cases, same seeds: the per-op case/pass/fail counts must agree (max |diff| may not)
if [ -x "$BUILD/tests/test_backend_ops_sim" ]; then
  KILN_SIM_RACECHECK=1 "$BUILD/tests/test_backend_ops_sim" >"$LOG/backend_ops_sim.txt" 2>&1 || true
  for f in backend_ops backend_ops_sim; do
    sed -n '/^op  /,/^$/p' "$LOG/$f.txt" | awk '{print $1, $2, $3, $4}' >"$LOG/$f.table"
  done
  if [ -s "$LOG/backend_ops.table" ] && diff "$LOG/backend_ops.table" "$LOG/backend_ops_sim.table" >"$LOG/backend_ops.diff"; then
    row "backend_ops: device table = interpreter's" PASS ""
  else row "backend_ops: device table = interpreter's" FAIL "$LOG/backend_ops.diff"; fi
fi
if [ -x "$BUILD/tests/test_session_cuda_sim" ]; then
  "$BUILD/tests/test_session_cuda" "$ZOO" >"$LOG/session.txt" 2>/dev/null || true
  "$BUILD/tests/test_session_cuda_sim" "$ZOO" >"$LOG/session_sim.txt" 2>/dev/null || true
  for f in session session_sim; do awk 'NF == 3 && ($2 == "ok" || $2 == "FAIL") {print $1, $2}' "$LOG/$f.txt" | sort >"$LOG/$f.models"; done
  if [ -s "$LOG/session.models" ] && diff "$LOG/session.models" "$LOG/session_sim.models" >"$LOG/session.diff"; then
    row "session: device models = interpreter's" PASS ""
  else row "session: device models = interpreter's" FAIL "$LOG/session.diff"; fi
fi
if [ -x "$BUILD/tests/test_simt_gpu" ]; then
  "$BUILD/tests/test_simt_gpu" >"$LOG/simt_gpu.txt" 2>&1 || true
  "$BUILD/tests/test_simt" >"$LOG/simt_sim.txt" 2>&1 || true
  # the same expected answers hold on both: all ok on the device = the emulation agrees with it
  grep -E '^(ok|FAIL) ' "$LOG/simt_gpu.txt" | sort >"$LOG/simt_gpu.verdicts"
  if [ -s "$LOG/simt_gpu.verdicts" ] && ! grep -q '^FAIL' "$LOG/simt_gpu.verdicts"; then
    row "interpreter primitives on the device" PASS "$(wc -l <"$LOG/simt_gpu.verdicts") tests"
  else row "interpreter primitives on the device" FAIL "$LOG/simt_gpu.txt"; fi
fi

echo "== conformance (node suite) cpu vs cuda"
CONF=$BUILD/conformance
if [ ! -d "$CONF/node" ]; then python3 tests/gen_node_cases.py --out "$CONF" >"$LOG/gen_cases.log" 2>&1; fi
if [ -d "$CONF/node" ]; then
  "$KILN" conformance "$CONF/node" >"$LOG/conf_cpu.txt" 2>&1
  "$KILN" conformance "$CONF/node" --device cuda >"$LOG/conf_cuda.txt" 2>&1
  cpu=$(tail -1 "$LOG/conf_cpu.txt" | grep -oE '^[0-9]+' || echo 0)
  gpu=$(tail -1 "$LOG/conf_cuda.txt" | grep -oE '^[0-9]+' || echo 0)
  if [ "$gpu" -ge "$cpu" ] && [ "$cpu" -gt 0 ]; then row "conformance node --device cuda" PASS "$gpu passed (cpu $cpu)"
  else row "conformance node --device cuda" FAIL "$gpu passed vs cpu $cpu ($LOG/conf_cuda.txt)"; fi
else
  row "conformance node --device cuda" FAIL "could not generate cases ($LOG/gen_cases.log)"
fi

echo "== zoo parity --device cuda"
python3 tests/zoo_parity.py --kiln "$KILN" --zoo "$ZOO" --rtol 1e-3 --atol 1e-4 --device cuda >"$LOG/zoo_cuda.txt" 2>&1
zres=$?
zl=$(tail -1 "$LOG/zoo_cuda.txt")
if [ $zres -eq 0 ]; then row "zoo parity --device cuda (8 models)" PASS "$zl"; else row "zoo parity --device cuda (8 models)" FAIL "$zl ($LOG/zoo_cuda.txt)"; fi
grep -h "has no kernel for" "$LOG"/*.txt 2>/dev/null | sort -u | head -40 >"$LOG/fallbacks.txt" || true

echo "== compute-sanitizer"
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ -x "$SAN" ]; then
  for tool in memcheck racecheck; do
    "$SAN" --tool $tool --error-exitcode 99 "$BUILD/tests/test_backend_ops" >"$LOG/san_${tool}_ops.txt" 2>&1
    r=$?
    if [ $r -eq 0 ]; then row "compute-sanitizer $tool: kernel harness" PASS ""; else row "compute-sanitizer $tool: kernel harness" FAIL "exit $r ($LOG/san_${tool}_ops.txt)"; fi
    out=$(mktemp -d)
    "$SAN" --tool $tool --error-exitcode 99 "$KILN" exec "$ZOO/$SAN_MODEL/model.onnx" --inputs "$ZOO/$SAN_MODEL/test_data_set_0" \
      --outputs "$out" --device cuda >"$LOG/san_${tool}_model.txt" 2>&1
    r=$?
    rm -rf "$out"
    if [ $r -eq 0 ]; then row "compute-sanitizer $tool: $SAN_MODEL" PASS ""; else row "compute-sanitizer $tool: $SAN_MODEL" FAIL "exit $r ($LOG/san_${tool}_model.txt)"; fi
  done
else
  row "compute-sanitizer" FAIL "not found"
fi

echo
echo "kernel harness table: $LOG/backend_ops.txt; CPU fallbacks seen: $LOG/fallbacks.txt"
sed -n '/^op /,$p' "$LOG/backend_ops.txt" | tail -80
echo
printf '%-44s %-6s %s\n' "check" "result" "detail"
printf '%s\n' "${ROWS[@]}"
exit $FAILED
