#!/usr/bin/env bash
# The one script for a GPU host: builds kiln (Release, CUDA sm_90a), then runs every GPU check
# and prints a summary table last:
#   - ctest's gpu.* tests (smoke, every CUDA kernel against the CPU op by op, zoo sessions),
#   - the ONNX node conformance suite with --device cuda against the CPU's pass count,
#   - the zoo models through `kiln exec --device cuda` against ONNX Runtime (rtol 1e-3, atol 1e-4),
#   - compute-sanitizer memcheck and racecheck on the kernel harness and on one zoo model.
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

echo "== ctest gpu.*"
ctest --test-dir "$BUILD" -R '^gpu\.' --output-on-failure >"$LOG/ctest_gpu.log" 2>&1
for t in cuda_smoke backend_ops session; do
  line=$(grep -E "gpu\.$t .*(Passed|Failed|Skipped|Not Run|\*\*\*)" "$LOG/ctest_gpu.log" | tail -1)
  case "$line" in
    *Passed*) row "gpu.$t" PASS "" ;;
    *Skipped*|*"Not Run"*) row "gpu.$t" SKIP "skipped (no device?)" ;;
    *) row "gpu.$t" FAIL "$LOG/ctest_gpu.log" ;;
  esac
done
grep -A200 "^op  " "$LOG/ctest_gpu.log" >/dev/null 2>&1 || true
"$BUILD/tests/test_backend_ops" >"$LOG/backend_ops.txt" 2>&1 || true

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
