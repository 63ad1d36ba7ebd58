#!/usr/bin/env python3
"""`kiln run --type featureExtraction` against an independent reference on a tiny BERT (random
weights, WordPiece tokenizer trained here): the same ONNX file on ONNX Runtime, one text at a time
(no padding), token ids from the `tokenizers` package, and numpy pooling as sentence-transformers
computes it (mean / CLS / max / last token over the attention mask, token embeddings for none,
L2 normalisation with max(norm, 1e-12)). kiln batches and pads, so this also checks the mask.
Also checks the folder's own pooling (1_Pooling/config.json + a Normalize module) and
sentence_bert_config.json max_seq_length as the truncation length.
Skips (exit 0) when numpy, onnx, onnxruntime or tokenizers is missing."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TEXTS = ["the kiln runs models on graphs", "Paris", "a small red cat and a large blue dog read every morning",
         "Anna and Marco build a computer network! 42", "",
         " ".join(["music art science history"] * 40),   # longer than the 128-token limit: truncated
         "Ünïcödé words the tokenizer never saw: ∑ 🔥", "day night", "question answer question answer question"]
TOL = 1e-4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--gen", required=True, help="tools/gen/gen_bert.py")
    a = ap.parse_args()
    try:
        import numpy as np
        import onnx  # noqa: F401  (gen_bert.py needs it)
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as e:
        print(f"skipped: {e.name} not installed")
        print("0 passed, 0 failed, 1 skipped")
        return 0
    import tiny_models

    passed = failed = 0

    def check(name, ok, detail=""):
        nonlocal passed, failed
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        passed += bool(ok)
        failed += not ok

    def kiln_run(model, args, texts=TEXTS):
        inp = "".join(json.dumps({"input": t}) + "\n" for t in texts)
        p = subprocess.run([a.kiln, "run", "--model", model, "--type", "featureExtraction", "--batch-size", "4"] + args,
                           input=inp, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            return None, f"exit {p.returncode}: {p.stderr[-400:]}"
        return [json.loads(l) for l in p.stdout.splitlines()], p.stderr

    def reference(model, max_len):
        tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
        tok.enable_truncation(max_len)
        sess = ort.InferenceSession(os.path.join(model, "model.onnx"), providers=["CPUExecutionProvider"])
        hs = []
        for t in TEXTS:
            enc = tok.encode(t)
            ids = np.array([enc.ids], np.int64)
            h = sess.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                                 "token_type_ids": np.zeros_like(ids)})[0][0]
            hs.append(h.astype(np.float64))
        return hs

    def pool(h, mode):
        return {"mean": h.mean(0), "cls": h[0], "max": h.max(0), "last": h[-1], "none": h}[mode]

    def l2(x):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    def compare(name, got, want):
        worst, ok = 0.0, got is not None and len(got) == len(TEXTS)
        for i in range(len(TEXTS) if ok else 0):
            e = got[i].get("output", {}).get("Embeddings")
            ok = ok and got[i]["input"] == TEXTS[i] and e is not None
            if not ok:
                break
            k = np.array(e, np.float64)
            if k.shape != want[i].shape:
                ok = False
                worst = float("inf")
                print(f"   text {i}: shape {k.shape}, want {want[i].shape}")
                break
            worst = max(worst, float(np.abs(k - want[i]).max()))
        check(name, ok and worst < TOL, f"max |diff| {worst:.2e} over {len(TEXTS)} texts" if ok else "wrong or missing lines")

    with tempfile.TemporaryDirectory() as d:
        plain = tiny_models.make_bert(os.path.join(d, "plain"), a.gen)
        hs = reference(plain, 128)
        check("reference tokens: the long text is truncated to 128", hs[5].shape[0] == 128, f"{hs[5].shape[0]} tokens")
        for mode in ("mean", "cls", "max", "last", "none"):
            got, err = kiln_run(plain, ["--pooling", mode])
            if got is None:
                check(f"pooling {mode}", False, err)
                continue
            compare(f"pooling {mode}", got, [pool(h, mode) for h in hs])
            if mode == "mean":
                check("a truncation warning names the line", "<stdin>:6:" in err and "truncated" in err, err.strip()[:200])
        for mode in ("mean", "max", "none"):
            got, err = kiln_run(plain, ["--pooling", mode, "--normalize"])
            compare(f"pooling {mode} + --normalize", got if got is not None else None, [l2(pool(h, mode)) for h in hs])
        got, err = kiln_run(plain, [])
        compare("default pooling without 1_Pooling: mean, not normalized", got, [pool(h, "mean") for h in hs])

        # the folder's own pooling and Normalize module, and sentence-transformers' max_seq_length
        st = tiny_models.make_bert(os.path.join(d, "st"), a.gen, pooling="cls", normalize=True, st_max_seq=12)
        hs12 = reference(st, 12)
        got, err = kiln_run(st, [])
        compare("folder pooling (cls) + Normalize + max_seq_length 12", got, [l2(pool(h, "cls")) for h in hs12])
        got, err = kiln_run(st, ["--pooling", "last"])
        compare("--pooling last overrides the folder (normalize kept), max_seq_length 12", got, [l2(pool(h, "last")) for h in hs12])
        got, err = kiln_run(st, ["--max-length", "20"])
        compare("--max-length 20 overrides max_seq_length", got, [l2(pool(h, "cls")) for h in reference(st, 20)])

        # a model that pools itself (a sentence_embedding output): used as is unless a pooling is asked for
        se = tiny_models.make_bert(os.path.join(d, "se"), a.gen)
        tiny_models.add_sentence_embedding(os.path.join(se, "model.onnx"), scale=2.0)
        hs_se = reference(se, 128)   # its own tokenizer (the trainer need not give the same vocabulary twice)
        got, err = kiln_run(se, [])
        compare("sentence_embedding output used as is (2 x masked mean in the graph)", got, [2 * pool(h, "mean") for h in hs_se])
        got, err = kiln_run(se, ["--pooling", "cls"])
        compare("--pooling cls pools last_hidden_state instead", got, [pool(h, "cls") for h in hs_se])
        got, err = kiln_run(se, ["--pooling", "none"])
        compare("--pooling none gives last_hidden_state rows", got, [pool(h, "none") for h in hs_se])

        # kiln embed is a front end over the same pipeline: same numbers, its own line format
        p = subprocess.run([a.kiln, "embed", "--model", plain, "--pooling", "max", "--normalize"], input="\n".join(TEXTS[:4]) + "\n",
                           capture_output=True, text=True, timeout=300)
        lines = [json.loads(l) for l in p.stdout.splitlines()] if p.returncode == 0 else []
        worst = max((float(np.abs(np.array(l["embedding"]) - l2(pool(hs[i], "max"))).max()) for i, l in enumerate(lines)), default=1.0)
        check("kiln embed --pooling max --normalize", p.returncode == 0 and len(lines) == 4 and worst < TOL,
              f"max |diff| {worst:.2e}" if lines else p.stderr[-300:])

    print(f"{passed} passed, {failed} failed, 0 skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
