#!/usr/bin/env bash
# The one script for a lent GPU host. Two ways to run it:
#   bash tools/gpu_check.sh --prebuilt gpu-carry   what tools/gpu_prepare.sh made on a machine
#                                                  without a GPU (carry gpu-carry): nothing is built
#                                                  here, so the device's minutes go to the checks;
#   bash tools/gpu_check.sh                        builds first (Release, CUDA sm_90a) on this host.
# It probes the host first (GPU, driver, toolkit, every shared library the programs load; a missing
# one is taken from the carried Debian packages, unpacked into a private prefix, never into /), then
# runs every GPU check with a time cap each, and prints a summary table last, also written as JSON:
#   - the gpu.* programs (smoke, every CUDA kernel against the CPU op by op, zoo sessions, the
#     interpreter's primitives on the device, training graphs, device optimisers, device trainer),
#   - the device's answers diffed against the SIMT interpreter's (made beside the build),
#   - the ONNX node conformance suite with --device cuda against the CPU's pass count,
#   - the zoo models through `kiln exec --device cuda` against ONNX Runtime, in fp32 and in fp16/bf16
#     (relative L2 error against the fp32 CPU result, the issue's bound 1e-2),
#   - compute-sanitizer memcheck and racecheck on the kernel harness and on one zoo model,
#   - the decode benchmark (tools/bench/gen_bench.py --device cuda): kiln generating on cuda against
#     ONNX Runtime GenAI cuda or transformers fp16, a Qwen2.5-0.5B-shaped model, batch 1 and 4,
#   - the inference benchmark against PyTorch eager / torch.compile (tools/bench/gpu_bench.py).
# Environment: KILN_GPU_BUDGET_S (default 470: the whole run stays within 8 minutes), KILN_DEPS_PREFIX
# (build mode: libraries unpacked from .deb files), OUT (where the device tool collects files).
# Exit status: 0 when every row passed or was skipped for a stated reason.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
T0=$(date +%s)
BUDGET=${KILN_GPU_BUDGET_S:-470}
PREBUILT=""
if [ "${1:-}" = "--prebuilt" ]; then PREBUILT=$(cd "${2:?--prebuilt DIR}" && pwd); fi
SAN_MODEL=${KILN_SANITIZE_MODEL:-bert_feature}
RESULTS=${OUT:-}

declare -a ROWS=()
FAILED=0
row() { ROWS+=("$1"$'\t'"$2"$'\t'"$3"); [ "$2" = PASS ] || [ "$2" = SKIP ] || FAILED=1; }
left() { echo $((BUDGET - ($(date +%s) - T0))); }
# capped RUN: run a command with at most CAP seconds, never past the overall budget
capped() {
  local cap=$1 l
  shift
  l=$(left)
  [ "$l" -lt "$cap" ] && cap=$l
  if [ "$cap" -le 5 ]; then return 124; fi
  timeout --kill-after=5 "$cap" "$@"
}

if [ -n "$PREBUILT" ]; then
  BIN=$PREBUILT/bin
  KILN=$BIN/kiln
  TESTS=$BIN
  ZOO=${KILN_ZOO:-$PREBUILT/zoo}
  LOG=/tmp/kiln_gpu_check
  mkdir -p "$LOG"
  echo "== prebuilt: $(head -2 "$PREBUILT/manifest.txt" | tr '\n' ';')"
else
  BUILD=${KILN_BUILD_DIR:-build-gpu}
  JOBS=${KILN_JOBS:-$(nproc)}
  ZOO=${KILN_ZOO:-$ROOT/../shared/zoo}
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
  echo "== build ($BUILD)"
  if ! cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA=ON >"$LOG/configure.log" 2>&1; then
    tail -30 "$LOG/configure.log"; row "configure" FAIL "$LOG/configure.log"
  elif ! cmake --build "$BUILD" -j"$JOBS" >"$LOG/build.log" 2>&1; then
    grep -E "error|Error" "$LOG/build.log" | head -30; row "build" FAIL "$LOG/build.log"
  else
    row "build (Release, sm_90a)" PASS "$(grep -c "warning" "$LOG/build.log" || true) warnings"
  fi
  KILN=$BUILD/kiln
  TESTS=$BUILD/tests
fi

# ---- probe the host: the GPU, the toolkit, and every library the programs load
echo "== probe"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | head -2
  (command -v nvcc >/dev/null && nvcc --version | tail -1) || echo "nvcc: not on PATH"
  python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.is_available())" 2>&1 | tail -1
} | tee "$LOG/probe.txt"
GPU=$(head -1 "$LOG/probe.txt")
# CUDA libraries: the toolkit's folders, then the ones pip's nvidia-* wheels bring
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
for d in $(python3 -c "import glob, site; [print(p) for s in site.getsitepackages() for p in glob.glob(s + '/nvidia/*/lib')]" 2>/dev/null); do
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
missing() { for b in "$KILN" "$TESTS"/test_backend_ops; do [ -x "$b" ] && ldd "$b" 2>/dev/null; done | awk '/not found/ {print $1}' | sort -u; }
if [ -n "$PREBUILT" ] && [ -n "$(missing)" ]; then
  # unpack the carried packages into a private prefix; expose only the libraries the host lacks
  DEPS=/tmp/kiln_deps
  mkdir -p "$DEPS/root" "$DEPS/need"
  for deb in "$PREBUILT"/debs/*.deb; do [ -f "$deb" ] && dpkg -x "$deb" "$DEPS/root"; done
  export LD_LIBRARY_PATH="$DEPS/need${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  for _ in 1 2 3 4 5; do # a library taken from the prefix can need another one
    m=$(missing)
    [ -z "$m" ] && break
    for lib in $m; do
      f=$(find "$DEPS/root" -name "$lib" \( -type f -o -type l \) | head -1)
      [ -n "$f" ] && ln -sf "$(readlink -f "$f")" "$DEPS/need/$lib"
    done
    for f in "$DEPS"/need/*; do ldd "$f" 2>/dev/null | awk '/not found/ {print $1}'; done | sort -u | while read -r lib; do
      g=$(find "$DEPS/root" -name "$lib" \( -type f -o -type l \) | head -1)
      [ -n "$g" ] && ln -sf "$(readlink -f "$g")" "$DEPS/need/$lib"
    done
  done
  echo "libraries taken from the carried packages: $(ls "$DEPS/need" | tr '\n' ' ')" | tee -a "$LOG/probe.txt"
fi
M=$(missing | tr '\n' ' ')
if [ -n "$M" ]; then row "probe: shared libraries" FAIL "missing: $M"; else row "probe: shared libraries" PASS "all found"; fi
if ! nvidia-smi -L >/dev/null 2>&1; then row "probe: GPU" FAIL "nvidia-smi sees no GPU"; else row "probe: GPU" PASS "$GPU"; fi
if [ ! -x "$KILN" ]; then
  printf '%s\n' "${ROWS[@]}"
  exit 1
fi
echo "== $("$KILN" --version | tail -1)"

# ---- the gpu.* programs; exit 77 means no device
prog() { # prog NAME CAP PROGRAM ARGS...
  local name=$1 cap=$2 r
  shift 2
  if [ ! -x "$1" ] && ! command -v "$1" >/dev/null; then row "gpu.$name" SKIP "not built"; return; fi
  capped "$cap" "$@" >"$LOG/$name.txt" 2>&1
  r=$?
  case $r in
    0) row "gpu.$name" PASS "$(grep -E '[0-9]+ *(passed|/)' "$LOG/$name.txt" | tail -1 | cut -c1-70)" ;;
    77) row "gpu.$name" FAIL "no CUDA device seen" ;;
    124 | 137) row "gpu.$name" FAIL "time cap reached ($LOG/$name.txt)" ;;
    *) row "gpu.$name" FAIL "exit $r: $(grep -iE 'fail|error' "$LOG/$name.txt" | head -1 | cut -c1-80)" ;;
  esac
}
echo "== gpu programs"
prog cuda_smoke 30 "$TESTS/cuda_smoke"
prog backend_ops 90 "$TESTS/test_backend_ops"
prog session 60 "$TESTS/test_session_cuda" "$ZOO"
prog interpreter_primitives 30 "$TESTS/test_simt_gpu"
prog train 60 "$TESTS/test_train_cuda"
prog train_optim 30 "$TESTS/test_optim_cuda"
prog train_device 60 "$TESTS/test_train_device"
prog train_device_amp 30 "$TESTS/test_train_device" amp
prog train_device_cnn 30 "$TESTS/test_train_device" cnn
prog graphs 40 "$TESTS/test_graph_cuda" "$ZOO"
# fp16/bf16/tf32 on every zoo model against the CPU's float32 (relative L2 < 1e-2 each)
prog precision 60 "$TESTS/test_precision_cuda" "$ZOO"
# data-parallel training through NCCL: one process with --comm nccl against the CPU run
if [ -f tests/gpu/train_nccl.py ]; then
  prog train_nccl 60 python3 tests/gpu/train_nccl.py --kiln "$KILN" --work "$LOG/train_nccl"
fi

# ---- the device's answers against the interpreter's: the same cases and seeds give the same
# per-op case/pass/fail counts and the same per-model verdicts (max |diff| may differ)
SIMDIR=""
[ -n "$PREBUILT" ] && [ -s "$PREBUILT/sim/backend_ops_sim.txt" ] && SIMDIR=$PREBUILT/sim
if [ -z "$SIMDIR" ] && [ -x "${TESTS}/test_backend_ops_sim" ]; then
  SIMDIR=$LOG/sim
  mkdir -p "$SIMDIR"
  KILN_SIM_RACECHECK=1 capped 120 "$TESTS/test_backend_ops_sim" >"$SIMDIR/backend_ops_sim.txt" 2>&1
  capped 60 "$TESTS/test_session_cuda_sim" "$ZOO" >"$SIMDIR/session_sim.txt" 2>/dev/null
fi
if [ -n "$SIMDIR" ]; then
  for f in "$LOG/backend_ops.txt" "$SIMDIR/backend_ops_sim.txt"; do
    sed -n '/^op  /,/^$/p' "$f" | awk '{print $1, $2, $3, $4}' >"$f.table"
  done
  if [ -s "$LOG/backend_ops.txt.table" ] && diff "$LOG/backend_ops.txt.table" "$SIMDIR/backend_ops_sim.txt.table" >"$LOG/backend_ops.diff"; then
    row "backend_ops: device table = interpreter's" PASS "$(wc -l <"$LOG/backend_ops.txt.table") rows"
  else row "backend_ops: device table = interpreter's" FAIL "$LOG/backend_ops.diff"; fi
  for f in "$LOG/session.txt" "$SIMDIR/session_sim.txt"; do
    awk 'NF == 3 && ($2 == "ok" || $2 == "FAIL") {print $1, $2}' "$f" | sort >"$f.models"
  done
  if [ -s "$LOG/session.txt.models" ] && diff "$LOG/session.txt.models" "$SIMDIR/session_sim.txt.models" >"$LOG/session.diff"; then
    row "session: device models = interpreter's" PASS ""
  else row "session: device models = interpreter's" FAIL "$LOG/session.diff"; fi
else
  row "device vs interpreter tables" SKIP "no interpreter answers (gpu_prepare.sh --no-sim)"
fi

# ---- zoo parity in fp32 (against ONNX Runtime's stored outputs) and in reduced precision
echo "== zoo parity --device cuda"
capped 60 python3 tests/zoo_parity.py --kiln "$KILN" --zoo "$ZOO" --rtol 1e-3 --atol 1e-4 --device cuda >"$LOG/zoo_cuda.txt" 2>&1
zres=$?
zl=$(tail -1 "$LOG/zoo_cuda.txt")
if [ $zres -eq 0 ]; then row "zoo fp32 --device cuda" PASS "$zl"; else row "zoo fp32 --device cuda" FAIL "$zl"; fi
grep -h "has no kernel for\|falls back" "$LOG"/*.txt 2>/dev/null | sort -u | head -40 >"$LOG/fallbacks.txt" || true

# ---- compute-sanitizer on a subset: the harness and one zoo model
echo "== compute-sanitizer"
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ -x "$SAN" ]; then
  for tool in memcheck racecheck; do
    capped 60 "$SAN" --tool $tool --error-exitcode 99 "$TESTS/test_backend_ops" >"$LOG/san_${tool}_ops.txt" 2>&1
    r=$?
    case $r in
      0) row "compute-sanitizer $tool: kernel harness" PASS "" ;;
      124 | 137) row "compute-sanitizer $tool: kernel harness" SKIP "time cap reached: partial ($LOG/san_${tool}_ops.txt)" ;;
      *) row "compute-sanitizer $tool: kernel harness" FAIL "exit $r: $(grep -m1 -E 'ERROR|Invalid|hazard' "$LOG/san_${tool}_ops.txt" | cut -c1-80)" ;;
    esac
    out=$(mktemp -d)
    capped 45 "$SAN" --tool $tool --error-exitcode 99 "$KILN" exec "$ZOO/$SAN_MODEL/model.onnx" --inputs "$ZOO/$SAN_MODEL/test_data_set_0" \
      --outputs "$out" --device cuda >"$LOG/san_${tool}_model.txt" 2>&1
    r=$?
    rm -rf "$out"
    if [ $r -eq 0 ]; then row "compute-sanitizer $tool: $SAN_MODEL" PASS ""; else row "compute-sanitizer $tool: $SAN_MODEL" FAIL "exit $r ($LOG/san_${tool}_model.txt)"; fi
  done
else
  row "compute-sanitizer" SKIP "not found on this host"
fi

# ---- text generation on cuda (tools/bench/gen_bench.py --device cuda): kiln's decode loop (cache on
# the device, replayed steps, the greedy choice on the device) against ONNX Runtime GenAI cuda or
# transformers' generate in fp16 with the same random Qwen2.5-0.5B-shaped weights; decode tokens/s
# and time to first token at batch 1 and 4, one row each. Capped (KILN_GEN_BENCH_CAP_S, default
# 120 s, the model built on the host included) so the PyTorch benchmark keeps its share. kiln runs
# fp32 (its generator keeps float32 caches), so the ratio is against transformers in fp32; the fp16
# reference is reported beside it.
echo "== generation benchmark (tools/bench/gen_bench.py --device cuda)"
GEN_CAP=${KILN_GEN_BENCH_CAP_S:-120}
if [ "$(left)" -gt $((GEN_CAP + 120)) ]; then
  capped "$GEN_CAP" python3 tools/bench/gen_bench.py --kiln "$KILN" --device cuda --quant fp32 --precision fp32 --batch 1,4 \
    --prompt 64 --new 64 --rounds 1 --model-dir "$LOG/gen_model" --out "$LOG/gen" >"$LOG/gen_bench.txt" 2>&1
  r=$?
  if [ $r -eq 0 ] && [ -s "$LOG/gen/gen_bench.json" ]; then
    # gen_bench.py writes one "check<TAB>detail" line per batch
    while IFS=$'\t' read -r c d; do row "$c" PASS "$d"; done <"$LOG/gen/gen_rows.tsv"
  elif [ $r -eq 124 ] || [ $r -eq 137 ]; then
    row "generate cuda (gen_bench)" SKIP "time cap reached: partial, $(grep -c '^batch' "$LOG/gen_bench.txt") batches ($LOG/gen_bench.txt)"
  else row "generate cuda (gen_bench)" FAIL "exit $r: $(tail -1 "$LOG/gen_bench.txt" | cut -c1-80)"; fi
  rm -rf "$LOG/gen_model"
else
  row "generate cuda (gen_bench)" SKIP "no time left in the budget"
fi

# ---- the benchmark against PyTorch (its own budget inside what is left)
echo "== benchmark (tools/bench/gpu_bench.py)"
BL=$(($(left) - 60))
if [ "$BL" -gt 60 ]; then
  capped $((BL + 30)) python3 tools/bench/gpu_bench.py --kiln "$KILN" --out "$LOG/bench" --budget-s "$BL" >"$LOG/bench.txt" 2>"$LOG/bench.err"
  r=$?
  if [ $r -eq 0 ]; then row "benchmark vs PyTorch (fp16)" PASS "$LOG/bench/gpu_bench.md"; else row "benchmark vs PyTorch (fp16)" FAIL "exit $r: $(tail -1 "$LOG/bench.err" | cut -c1-80)"; fi
else
  row "benchmark vs PyTorch" SKIP "no time left in the budget"
fi

# ---- conformance last: the longest, and it only confirms what the interpreter already showed
echo "== conformance (node suite) cpu vs cuda"
CONF=$LOG/conformance
if [ "$(left)" -gt 60 ]; then
  [ -d "$CONF/node" ] || capped 40 python3 tests/gen_node_cases.py --out "$CONF" >"$LOG/gen_cases.log" 2>&1
  if [ -d "$CONF/node" ]; then
    half=$((($(left) - 10) / 2))
    capped $half "$KILN" conformance "$CONF/node" >"$LOG/conf_cpu.txt" 2>&1
    capped $half "$KILN" conformance "$CONF/node" --device cuda >"$LOG/conf_cuda.txt" 2>&1
    cpu=$(tail -1 "$LOG/conf_cpu.txt" | grep -oE '^[0-9]+' || echo 0)
    gpu=$(tail -1 "$LOG/conf_cuda.txt" | grep -oE '^[0-9]+' || echo 0)
    if [ "$gpu" -ge "$cpu" ] && [ "$cpu" -gt 0 ]; then row "conformance node --device cuda" PASS "$gpu passed (cpu $cpu)"
    else row "conformance node --device cuda" FAIL "$gpu passed vs cpu $cpu"; fi
  else
    row "conformance node --device cuda" FAIL "could not generate cases ($LOG/gen_cases.log)"
  fi
else
  row "conformance node --device cuda" SKIP "no time left in the budget"
fi

# ---- the table, last; also as JSON, and the logs where the device tool collects files
echo
echo "kernel harness: $LOG/backend_ops.txt; CPU fallbacks seen: $LOG/fallbacks.txt"
[ -s "$LOG/bench/gpu_bench.md" ] && cat "$LOG/bench/gpu_bench.md"
printf '%s\n' "${ROWS[@]}" | python3 -c '
import json, sys
rows = [dict(zip(("check", "result", "detail"), l.rstrip("\n").split("\t", 2))) for l in sys.stdin if l.strip()]
json.dump({"rows": rows, "gpu": sys.argv[1], "seconds": int(sys.argv[2])}, open(sys.argv[3], "w"), indent=1)
' "$GPU" $(($(date +%s) - T0)) "$LOG/gpu_check.json"
if [ -n "$RESULTS" ] && [ -d "$RESULTS" ]; then
  cp "$LOG/gpu_check.json" "$RESULTS/" 2>/dev/null
  [ -d "$LOG/bench" ] && cp "$LOG"/bench/gpu_bench.* "$RESULTS/" 2>/dev/null
  [ -s "$LOG/gen/gen_bench.json" ] && cp "$LOG/gen/gen_bench.json" "$RESULTS/" 2>/dev/null
  tar czf "$RESULTS/gpu_check_logs.tgz" -C "$LOG" --exclude conformance . 2>/dev/null
fi
printf '%-48s %-6s %s\n' "check" "result" "detail"
printf '%s\n' "${ROWS[@]}" | awk -F'\t' '{printf "%-48s %-6s %s\n", $1, $2, $3}'
echo "total $(($(date +%s) - T0)) s"
exit $FAILED
