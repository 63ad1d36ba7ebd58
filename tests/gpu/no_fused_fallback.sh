#!/usr/bin/env bash
# Fusion is chosen per backend: a --device cuda session of each zoo model must not place a fused
# op (kiln:KnSdpa, com.microsoft Gelu/FastGelu/BiasGelu/GemmFastGelu/SkipLayerNormalization/FusedGemm) on the
# CPU for want of a CUDA kernel; a fusion whose op has no CUDA kernel is not made, and the unfused
# ops run instead. kiln:KnSdpa has one (kernels/cuda/attention.cu): cuda sessions fuse attention,
# and gpusim.session checks that they hold as many KnSdpa nodes as the CPU's graph. Runs each model
# through kiln-sim exec and reads the backend's fallback notices (neither KnSdpa nor the MatMul and
# Softmax it replaces may appear); also checks a CPU session still gets the fusions, and that a cuda
# session does get the GELU and skip-LayerNorm fusions now that CUDA has their kernels (with those
# kernels switched off by KILN_CUDA_DISABLE, the fused ops are reported as falling back, which they
# can only be if the cuda session's graph holds them).
#   no_fused_fallback.sh KILN_SIM ZOO_DIR
set -euo pipefail
KILN=$1 ZOO=$2
fused='KnSdpa|Gelu|FastGelu|BiasGelu|GemmFastGelu|SkipLayerNormalization|FusedGemm'
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
for m in "$ZOO"/*/; do
  name=$(basename "$m")
  [ -f "$m/model.onnx" ] || continue
  if ! "$KILN" exec "$m/model.onnx" --inputs "$m/test_data_set_0" --outputs "$tmp/$name" --device cuda 2>"$tmp/$name.log"; then
    echo "FAIL $name: kiln exec --device cuda failed"; cat "$tmp/$name.log"; fail=$((fail + 1)); continue
  fi
  if grep -E "has no kernel for ($fused|MatMul|Softmax) " "$tmp/$name.log"; then
    echo "FAIL $name: a fused op runs on the CPU in a cuda session"; fail=$((fail + 1))
  else
    others=$( (grep -oE "has no kernel for [A-Za-z]+" "$tmp/$name.log" || true) | sed 's/has no kernel for //' | sort -u | tr '\n' ' ')
    echo "ok   $name: no fused op on the CPU (unfused ops without a CUDA kernel yet: ${others:-none})"
    pass=$((pass + 1))
  fi
done
# the same models on the CPU keep their fusions (kiln info --optimized shows the CPU's graph)
if "$KILN" info --optimized "$ZOO/bert_feature/model.onnx" | grep -q KnSdpa; then
  echo "ok   bert_feature: the CPU graph has kiln:KnSdpa"; pass=$((pass + 1))
else
  echo "FAIL bert_feature: the CPU graph lost its attention fusion"; fail=$((fail + 1))
fi
# the cuda session's graph has them: BERT's BiasGelu and SkipLayerNormalization, GPT-2's FastGelu
for pair in "bert_feature:BiasGelu SkipLayerNormalization" "gpt2_lm:FastGelu SkipLayerNormalization"; do
  name=${pair%%:*} ops=${pair#*:}
  [ -f "$ZOO/$name/model.onnx" ] || continue
  KILN_CUDA_DISABLE=$(echo "$ops" | tr ' ' ',') "$KILN" exec "$ZOO/$name/model.onnx" --inputs "$ZOO/$name/test_data_set_0" \
    --outputs "$tmp/$name.dis" --device cuda 2>"$tmp/$name.dis.log" || true
  for op in $ops; do
    if grep -q "has no kernel for $op " "$tmp/$name.dis.log"; then
      echo "ok   $name: the cuda session's graph has $op"; pass=$((pass + 1))
    else
      echo "FAIL $name: the cuda session's graph has no $op (fusion not chosen for cuda)"; fail=$((fail + 1))
    fi
  done
done
# fusedgemm: BERT's pooler (Tanh of the first token's MatMul + bias) is a FusedGemm in the cuda
# session's graph, and on the CPU it is not (that fusion is for device backends only)
if [ -f "$ZOO/bert_seqcls/model.onnx" ]; then
  KILN_CUDA_DISABLE=FusedGemm "$KILN" exec "$ZOO/bert_seqcls/model.onnx" --inputs "$ZOO/bert_seqcls/test_data_set_0" \
    --outputs "$tmp/bert_seqcls.fg" --device cuda 2>"$tmp/bert_seqcls.fg.log" || true
  if grep -q "has no kernel for FusedGemm " "$tmp/bert_seqcls.fg.log"; then
    echo "ok   bert_seqcls: the cuda session's graph has FusedGemm"; pass=$((pass + 1))
  else
    echo "FAIL bert_seqcls: the cuda session's graph has no FusedGemm"; fail=$((fail + 1))
  fi
  if "$KILN" info --optimized "$ZOO/bert_seqcls/model.onnx" | grep -q FusedGemm; then
    echo "FAIL bert_seqcls: the CPU graph has FusedGemm"; fail=$((fail + 1))
  else
    echo "ok   bert_seqcls: the CPU graph keeps MatMul + Add + Tanh"; pass=$((pass + 1))
  fi
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
