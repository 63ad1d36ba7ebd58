#!/usr/bin/env python3
"""Activation recomputation (kn_trainer_options.recompute, autograd/recompute.h): a random-init
2-layer BERT (tests/train_ort_attention.py's export: torch.onnx.export, node names with
/encoder/layer.N/) trained by tests/train/train_driver.c for STEPS steps of AdamW with and without
`recompute layers`, and with a pattern (only the feed-forward blocks), on batches of 8 x 64 tokens. Checks: every step's loss
and every trained weight bitwise equal to the run without recomputation, and the planner's peak
bytes of a step lower with it (printed: bytes and ratio).

With --minilm PATH instead (the all-MiniLM-L6-v2 file train.parity_minilm writes: tools/gen/gen_bert.py, whose
node names mark no layers, so "layers" segments at the LayerNormalization outputs): 3 AdamW steps of
CosineSimilarityLoss on 8 sequences of 128 tokens, the word embeddings frozen, with and without
`recompute layers`: losses and weights bitwise equal, the peak lower.

Usage: python3 tests/train_recompute.py --driver build/tests/train_driver --work DIR [--minilm PATH]
Prints PASS or FAIL last; exits non-zero on a failure."""
import argparse
import os
import re
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_ort_attention  # noqa: E402
from train_ort_attention import batches, export, trainable  # noqa: E402

# batches of 8 sequences of 64 tokens, so the activations (attention probabilities [8,4,64,64])
# outweigh the weights
train_ort_attention.B, train_ort_attention.S = 8, 64

CASES = [("none", None), ("layers", "layers"), ("ffn", "*/intermediate/*,*/output/dense/*")]


def train(driver, work, model, data, recompute, names=None, loss="ce last_hidden_state -100 2"):
    os.makedirs(work, exist_ok=True)
    plan = (f"model {model}\ntrainable {','.join(names or trainable(model))}\noptim adamw 1e-2 0.01\nclip 1.0\n"
            f"loss {loss}\nout {work}\n")
    if recompute:
        plan += f"recompute {recompute}\n"
    for s, feeds in enumerate(data):
        for k, v in feeds.items():
            path = os.path.join(work, f"s{s}_{k}.bin")
            np.ascontiguousarray(v).tofile(path)
            dt = "i64" if v.dtype == np.int64 else "f32"
            plan += f"batch {k} {dt} {v.ndim} {' '.join(str(d) for d in v.shape)} {path}\n"
        plan += "step\n"
    with open(os.path.join(work, "plan.txt"), "w") as f:
        f.write(plan)
    r = subprocess.run([driver, os.path.join(work, "plan.txt")], capture_output=True, text=True)
    if r.returncode != 0:
        return None, None, None, r.stderr.strip()
    peak = re.search(r"train_driver: peak (\d+) bytes", r.stderr)
    losses = open(os.path.join(work, "losses.txt")).read().split()
    params = {}
    for line in open(os.path.join(work, "params.txt")):
        name, n, file = line.split()
        params[name] = np.fromfile(os.path.join(work, file), dtype=np.float32)
    return losses, params, int(peak.group(1)) if peak else None, None


def minilm(driver, work, path):
    import onnx
    m = onnx.load(path, load_external_data=False)
    names = [t.name for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT
             and int(np.prod(t.dims)) > 1 and not (len(t.dims) == 2 and t.dims[0] == 30522)]
    rng = np.random.default_rng(3)
    B, S = 8, 128
    data = []
    for _ in range(3):
        ids = rng.integers(1000, 30000, (B, S)).astype(np.int64)
        ids[:, 0] = 101
        mask = np.ones((B, S), np.int64)
        mask[1, 100:] = 0
        mask[5, 64:] = 0
        data.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros((B, S), np.int64),
                     "scores": rng.random(B // 2).astype(np.float32)})
    runs = [train(driver, os.path.join(work, f"minilm_{n}"), path, data, spec, names,
                  "cosine last_hidden_state attention_mask") for n, spec in (("none", None), ("layers", "layers"))]
    for r in runs:
        if r[3]:
            print(f"minilm: {r[3]}")
            return False
    (l0, p0, k0, _), (l1, p1, k1, _) = runs
    diff = [n for n in p0 if n not in p1 or not np.array_equal(p0[n], p1[n])]
    good = l0 == l1 and not diff and k1 < k0
    print(f"minilm (recompute layers, 8 x 128 tokens, {len(p0)} trained tensors): losses "
          f"{'bitwise equal' if l0 == l1 else 'DIFFER'}, {len(p0) - len(diff)}/{len(p0)} weights bitwise equal, "
          f"peak {k1} bytes ({k1 / k0:.3f} of {k0}): {'ok' if good else 'FAIL'}")
    return good


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--driver", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--minilm", help="the MiniLM ONNX file train.parity_minilm writes")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    if args.minilm:
        ok = minilm(args.driver, args.work, args.minilm)
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    src = os.path.join(args.work, "bert_eager.onnx")
    export(src)
    data = batches()
    ok = True
    ref = None
    for name, spec in CASES:
        losses, params, peak, err = train(args.driver, os.path.join(args.work, name), src, data, spec)
        if err:
            print(f"{name}: {err}")
            ok = False
            continue
        if ref is None:
            ref = (losses, params, peak)
            print(f"{name}: {len(params)} trained tensors, losses {' '.join(losses)}, peak {peak} bytes")
            continue
        same_losses = losses == ref[0]
        diff = [n for n in ref[1] if n not in params or not np.array_equal(params[n], ref[1][n])]
        lower = peak is not None and ref[2] is not None and peak < ref[2]
        good = same_losses and not diff and lower
        print(f"{name} (recompute {spec}): losses {'bitwise equal' if same_losses else 'DIFFER: ' + ' '.join(losses)}, "
              f"{len(ref[1]) - len(diff)}/{len(ref[1])} weights bitwise equal, peak {peak} bytes "
              f"({peak / ref[2]:.3f} of {ref[2]}): {'ok' if good else 'FAIL'}")
        ok &= good
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
