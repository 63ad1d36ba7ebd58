#!/usr/bin/env bash
# Prepares, on a machine without a GPU, everything tools/gpu_check.sh needs on a lent GPU host, so
# that the device's minutes go to running, not building: a Release build with the CUDA backend for
# sm_90a (+ compute_90a PTX), then a lean folder gpu-carry/ (ignored by git, under the device tool's
# 64 MiB carry limit) holding
#   bin/    kiln and the gpu.* test programs,
#   debs/   the Debian packages of every shared library they load that is not part of the C/C++
#           runtime or the CUDA toolkit (the host unpacks only those it lacks, never into /),
#   zoo/    a copy of ../shared/zoo (the sibling folder does not travel with the working tree),
#   sim/    the SIMT interpreter's answers to the same harnesses, made here, which the device's
#           answers are diffed against,
#   manifest.txt  the commit, the build flags and each file's size.
# Then, on the GPU host:  bash tools/gpu_check.sh --prebuilt gpu-carry   (carry: gpu-carry).
#
#   bash tools/gpu_prepare.sh [--no-sim]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${KILN_GPU_BUILD_DIR:-build-gpu}
CARRY=${KILN_GPU_CARRY:-gpu-carry}
JOBS=${KILN_JOBS:-$(nproc)}
ZOO=${KILN_ZOO:-$ROOT/../shared/zoo}
SIM=1
[ "${1:-}" = "--no-sim" ] && SIM=0
LIMIT=$((60 * 1024 * 1024)) # leave room under the tool's 64 MiB for the working tree itself

command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
command -v nvcc >/dev/null || { echo "gpu_prepare: nvcc not found (install the CUDA toolkit)" >&2; exit 1; }

LAUNCH=()
if command -v ccache >/dev/null; then
  LAUNCH=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
GPU_TARGETS=(kiln_cli cuda_smoke test_backend_ops test_session_cuda test_simt_gpu test_train_cuda test_optim_cuda
  test_train_device test_precision_cuda test_graph_cuda)
echo "== build $BUILD (Release, CUDA sm_90a + PTX)"
SIMFLAG=()
# a build folder made before keeps its own choice; a new one builds the interpreter only if asked
[ -f "$BUILD/CMakeCache.txt" ] || SIMFLAG=(-DKILN_CUDA_SIM=$([ $SIM = 1 ] && echo ON || echo OFF))
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA=ON "${SIMFLAG[@]}" \
  -DKILN_WERROR=ON "${LAUNCH[@]}" >"$BUILD.configure.log" 2>&1 || { tail -30 "$BUILD.configure.log"; exit 1; }
HELP=$(cmake --build "$BUILD" --target help 2>/dev/null || true)
TARGETS=()
for t in "${GPU_TARGETS[@]}"; do
  if grep -qE "^\.\.\. $t( |\$)" <<<"$HELP"; then TARGETS+=("$t"); fi
done
[ ${#TARGETS[@]} -gt 1 ] || { echo "gpu_prepare: $BUILD has no CUDA targets (is the CUDA toolkit found?)" >&2; exit 1; }
cmake --build "$BUILD" -j"$JOBS" --target "${TARGETS[@]}"

rm -rf "$CARRY"
mkdir -p "$CARRY/bin" "$CARRY/debs" "$CARRY/sim"
cp "$BUILD/kiln" "$CARRY/bin/"
for t in cuda_smoke test_backend_ops test_session_cuda test_simt_gpu test_train_cuda test_optim_cuda test_train_device \
  test_precision_cuda test_graph_cuda; do
  [ -x "$BUILD/tests/$t" ] && cp "$BUILD/tests/$t" "$CARRY/bin/"
done
strip --strip-unneeded "$CARRY"/bin/* 2>/dev/null || true
[ -d "$ZOO" ] && cp -r "$ZOO" "$CARRY/zoo"

echo "== Debian packages of the shared libraries (not libc/libstdc++/CUDA)"
# the C/C++ runtime is the host's own; the CUDA libraries come with the host's toolkit, whose
# version the probe in gpu_check.sh checks against the build's
SKIP='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libstdc\+\+|libgcc_s|libcuda\.so|libcudart|libcublas|libcudnn|libnccl|libnvrtc|libnvJitLink)'
declare -A PKGS=()
for b in "$CARRY"/bin/*; do
  while read -r name _ path _; do
    [[ $name =~ $SKIP ]] && continue
    [ -n "${path:-}" ] && [ -e "$path" ] || continue
    real=$(readlink -f "$path")
    pkg=$(dpkg -S "$real" 2>/dev/null | head -1 | cut -d: -f1-2 | sed 's/: .*//') || true
    [ -z "$pkg" ] && pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | sed 's/: .*//') || true
    [ -n "$pkg" ] && PKGS[$pkg]=1
  done < <(ldd "$b" 2>/dev/null | awk '/=>/ {print $1, $2, $3, $4}')
done
(cd "$CARRY/debs" && for p in "${!PKGS[@]}"; do apt-get download "$p" >/dev/null 2>&1 || echo "could not download $p" >&2; done)
ls "$CARRY/debs" | sed 's/^/  /'

if [ $SIM = 1 ]; then
  echo "== the interpreter's answers (SIMT) to the device harnesses"
  cmake --build "$BUILD" -j"$JOBS" --target test_backend_ops_sim test_session_cuda_sim test_simt
  KILN_SIM_RACECHECK=1 "$BUILD/tests/test_backend_ops_sim" >"$CARRY/sim/backend_ops_sim.txt" 2>&1 || true
  "$BUILD/tests/test_session_cuda_sim" "$ZOO" >"$CARRY/sim/session_sim.txt" 2>/dev/null || true
  "$BUILD/tests/test_simt" >"$CARRY/sim/simt_sim.txt" 2>&1 || true
fi

{
  echo "commit $(git rev-parse HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
  echo "built $(date -u +%FT%TZ) on $(uname -m), nvcc $(nvcc --version | tail -1)"
  echo "host_root $ROOT"
  (cd "$CARRY" && find . -type f -printf '%s %p\n' | sort -k2)
} >"$CARRY/manifest.txt"
SIZE=$(du -sb "$CARRY" | cut -f1)
echo "== $CARRY: $((SIZE / 1024 / 1024)) MiB"
if [ "$SIZE" -gt "$LIMIT" ]; then
  echo "gpu_prepare: $CARRY is over $((LIMIT / 1024 / 1024)) MiB; the device tool would refuse it" >&2
  exit 1
fi
echo "next, on the GPU host (carry $CARRY): bash tools/gpu_check.sh --prebuilt $CARRY"
