#!/usr/bin/env python3
"""Channels-last image models: the imagecls_vit fixture's model is rewritten to take
pixel_values as [batch, H, W, 3] (a Transpose in front of the original graph, as TensorFlow
exports look), and `kiln run --type imageClassification` must still give transformers' answers
(the fixture's expected.jsonl) within 1e-4.

    nhwc_check.py --kiln build/kiln
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures", "imagecls_vit")


def close(a, b, atol=1e-4):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= atol
    return a == b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    args = ap.parse_args()
    try:
        import onnx
        from onnx import helper
    except ImportError:
        print("skipped: the onnx package is not installed")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        shutil.copytree(os.path.join(FIX, "model"), model_dir)
        m = onnx.load(os.path.join(model_dir, "model.onnx"))
        inp = m.graph.input[0]
        dims = inp.type.tensor_type.shape.dim
        c, h, w = dims[1].dim_value, dims[2].dim_value, dims[3].dim_value
        for n in m.graph.node:
            n.input[:] = ["pixel_values_nchw" if x == inp.name else x for x in n.input]
        m.graph.node.insert(0, helper.make_node("Transpose", [inp.name], ["pixel_values_nchw"], perm=[0, 3, 1, 2]))
        new_in = helper.make_tensor_value_info(inp.name, inp.type.tensor_type.elem_type, ["batch", h, w, c])
        m.graph.input.remove(inp)
        m.graph.input.insert(0, new_in)
        onnx.save(m, os.path.join(model_dir, "model.onnx"))
        extra = json.load(open(os.path.join(FIX, "args.json"))).get("args", [])
        r = subprocess.run([args.kiln, "run", "--model", model_dir, "--type", "imageClassification",
                            "--input", os.path.join(FIX, "input.jsonl"), *extra], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"FAIL: kiln run exited {r.returncode}: {r.stderr.strip()}")
            return 1
        got = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
        want = [json.loads(l) for l in open(os.path.join(FIX, "expected.jsonl")) if l.strip()]
        if len(got) != len(want):
            print(f"FAIL: {len(got)} output lines, expected {len(want)}")
            return 1
        bad = [i for i, (g, e) in enumerate(zip(got, want)) if not close(e.get("output"), g.get("output"))]
        for i in bad:
            print(f"FAIL line {i + 1}: got {got[i].get('output')}, expected {want[i].get('output')}")
        print(f"{len(want) - len(bad)} of {len(want)} images match transformers with a channels-last model")
        return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
