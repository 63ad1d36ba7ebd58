#!/usr/bin/env python3
"""kiln info --device cuda --json on the shared zoo and on small generated models: every zoo model
lists no fallback (the convolutions and pools once left to other work have CUDA kernels now), and the generated models show each reason kiln gives (no kernel, dtype,
attribute or shape, data-dependent shape) on the node that causes it. The text form must agree with
the JSON. Exit status 1 on any mismatch."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import onnx
from onnx import TensorProto, helper

# ops whose CUDA kernels are other work: allowed, and must be reported. None now: the conv family,
# pools, BatchNormalization and Resize have CUDA kernels (kernels/cuda/conv.cu, pool.cu).
OTHERS = set()
REASONS = {"no kernel", "dtype", "attribute or shape", "data-dependent shape"}


def info(kiln, path, *extra):
    r = subprocess.run([kiln, "info", path, "--device", "cuda", "--json", *extra], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{path}: kiln info failed: {r.stderr}")
    return json.loads(r.stdout)


def text_count(kiln, path):
    out = subprocess.run([kiln, "info", path, "--device", "cuda"], capture_output=True, text=True, check=True).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("device cuda:")][0]
    return int(line.split()[2])


def gen_models(d):
    """name -> (path, {node name: expected reason})"""
    f = TensorProto.FLOAT
    models = {}
    # an op with no CUDA kernel, a float64 Add (dtype), a Gemm with K = 0 (shape), a Reshape to a
    # shape given as data (output shape from data) and a Relu (placed) in one graph
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Det", ["r"], ["det"], name="det"),
             helper.make_node("Add", ["a", "a"], ["a2"], name="add64"),
             helper.make_node("Gemm", ["k0a", "k0b", "k0c"], ["gk"], name="gemm_k0"),
             helper.make_node("Reshape", ["r", "shape"], ["rs"], name="reshape_data")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, ["n", 3, 3]),
                                       helper.make_tensor_value_info("a", TensorProto.DOUBLE, [5]),
                                       helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
                                       helper.make_tensor_value_info("k0a", f, [2, 0])],
                          [helper.make_tensor_value_info("det", f, None),
                           helper.make_tensor_value_info("a2", TensorProto.DOUBLE, None),
                           helper.make_tensor_value_info("gk", f, None),
                           helper.make_tensor_value_info("rs", f, None)],
                          [helper.make_tensor("k0b", f, [0, 3], []),
                           helper.make_tensor("k0c", f, [3], [1, 2, 3])])
    p = os.path.join(d, "mixed.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), p)
    models["mixed"] = (p, {"det": "no kernel", "add64": "dtype", "gemm_k0": "attribute or shape",
                           "reshape_data": "data-dependent shape"})
    return models


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--zoo", required=True)
    a = ap.parse_args()
    bad = 0
    for name in sorted(os.listdir(a.zoo)):
        path = os.path.join(a.zoo, name, "model.onnx")
        if not os.path.exists(path):
            continue
        j = info(a.kiln, path)
        model_ops = {n.op_type for n in onnx.load(path, load_external_data=False).graph.node}
        listed = {fb["op"] for fb in j["fallbacks"]}
        for fb in j["fallbacks"]:
            if fb["reason"] not in REASONS or not fb["node"] or not fb["inputs"]:
                print(f"FAIL {name}: malformed fallback {fb}")
                bad += 1
            elif fb["op"] not in OTHERS:
                print(f"FAIL {name}: {fb['op']} ({fb['node']}) falls back: {fb['reason']}, inputs {fb['inputs']}")
                bad += 1
        for op in (model_ops & OTHERS) - listed:
            print(f"FAIL {name}: {op} has no CUDA kernel yet but is not listed")
            bad += 1
        if text_count(a.kiln, path) != len(j["fallbacks"]):
            print(f"FAIL {name}: text and JSON disagree")
            bad += 1
        print(f"{name}: {len(j['fallbacks'])} of {j['nodes']} nodes fall back "
              f"({', '.join(sorted(listed)) or 'none'})")
    with tempfile.TemporaryDirectory() as d:
        for name, (path, want) in gen_models(d).items():
            j = info(a.kiln, path, "--dim", "n=2")
            got = {fb["node"]: fb["reason"] for fb in j["fallbacks"]}
            if got != want:
                print(f"FAIL {name}: fallbacks {got}, expected {want}")
                bad += 1
            if "float32[2,3,3]" not in j["inputs"]:
                print(f"FAIL {name}: --dim n=2 not applied: {j['inputs']}")
                bad += 1
            print(f"{name}: {got}")
    print("FAILED" if bad else "ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
