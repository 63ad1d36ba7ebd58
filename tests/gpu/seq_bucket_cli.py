#!/usr/bin/env python3
"""`--seq-bucket N` of kiln bench/exec/run (kn_session_options.seq_bucket) on a small encoder-like
model written here (token embedding, masked by attention_mask, a per-position MLP and a masked mean
pool; input_ids/attention_mask [batch, sequence]): a bench sweep of 7 sequence lengths builds one
plan per bucket (3 with --seq-bucket 8; 7 without), on the given device; `kiln exec --seq-bucket 8`
on length 5 gives the unbucketed results (shape cut back to 5, values within 1e-5); a bad value
(0, -3, x) is a usage error (exit 2) naming the flag in exec, bench and run.

Usage: seq_bucket_cli.py --kiln build/kiln-sim [--device cuda]"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

V, H = 50, 16
LENGTHS = [3, 5, 7, 8, 9, 12, 17]  # buckets of 8: 8, 16, 24


def make_model(path):
    rng = np.random.default_rng(0)
    f = TensorProto.FLOAT
    inits = [numpy_helper.from_array(rng.standard_normal((V, H)).astype(np.float32), "E"),
             numpy_helper.from_array(rng.standard_normal((H, H)).astype(np.float32) * 0.3, "W"),
             numpy_helper.from_array(rng.standard_normal(H).astype(np.float32) * 0.1, "b"),
             numpy_helper.from_array(np.array([-1], np.int64), "axm1"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    nodes = [helper.make_node("Gather", ["E", "input_ids"], ["emb"]),
             helper.make_node("Cast", ["attention_mask"], ["mf"], to=f),
             helper.make_node("Unsqueeze", ["mf", "axm1"], ["m3"]),
             helper.make_node("MatMul", ["emb", "W"], ["h0"]),
             helper.make_node("Add", ["h0", "b"], ["h1"]),
             helper.make_node("Tanh", ["h1"], ["h2"]),
             helper.make_node("Mul", ["h2", "m3"], ["hidden"]),
             helper.make_node("ReduceSum", ["hidden", "ax1"], ["s"], keepdims=0),
             helper.make_node("ReduceSum", ["m3", "ax1"], ["n"], keepdims=0),
             helper.make_node("Div", ["s", "n"], ["pooled"])]
    g = helper.make_graph(nodes, "enc", [helper.make_tensor_value_info("input_ids", TensorProto.INT64,
                                                                       ["batch", "sequence"]),
                                         helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                                                       ["batch", "sequence"])],
                          [helper.make_tensor_value_info("hidden", f, ["batch", "sequence", H]),
                           helper.make_tensor_value_info("pooled", f, ["batch", H])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def bench_plans(kiln, model, device, bucket):
    cmd = [kiln, "bench", model, "--device", device, "--batch", "2", "--seq", ",".join(map(str, LENGTHS)), "--iters",
           "2", "--warmup", "0", "--json"]
    if bucket:
        cmd += ["--seq-bucket", str(bucket)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: rc {r.returncode}: {r.stderr[-600:]}")
    pts = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    return [p["seq"] for p in pts], [p["plans_built"] for p in pts], [p["seq_bucket"] for p in pts]


def exec_outs(kiln, model, device, feeds, tmp, extra):
    idir, odir = os.path.join(tmp, "in"), os.path.join(tmp, "out" + "".join(extra))
    os.makedirs(idir, exist_ok=True)
    os.makedirs(odir, exist_ok=True)
    for i, (name, arr) in enumerate(feeds):
        with open(os.path.join(idir, f"input_{i}.pb"), "wb") as fh:
            fh.write(numpy_helper.from_array(arr, name).SerializeToString())
    subprocess.run([kiln, "exec", model, "--inputs", idir, "--outputs", odir, "--device", device, *extra], check=True,
                   capture_output=True, timeout=600)
    outs = []
    for k in range(2):
        t = TensorProto()
        with open(os.path.join(odir, f"output_{k}.pb"), "rb") as fh:
            t.ParseFromString(fh.read())
        outs.append(numpy_helper.to_array(t))
    return outs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    bad = 0

    def check(ok, msg):
        nonlocal bad
        print(("ok   " if ok else "FAIL ") + msg)
        bad += not ok

    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "enc.onnx")
        make_model(model)
        for bucket, want in ((8, 3), (0, len(LENGTHS))):
            seqs, plans, sb = bench_plans(a.kiln, model, a.device, bucket)
            check(seqs == LENGTHS, f"bucket {bucket}: bench ran lengths {seqs}")
            check(sb == [bucket] * len(seqs), f"bucket {bucket}: bench reports seq_bucket {sb[:1]}")
            check(bool(plans) and plans[-1] == want,
                  f"bucket {bucket}: plans built over the sweep {plans} (want {want} at the end)")
            if bucket:
                # a new bucket's first length adds a plan; the others in it do not
                check(plans == [1, 1, 1, 1, 2, 2, 3], f"bucket 8: one new plan at lengths 3, 9 and 17: {plans}")
        rng = np.random.default_rng(1)
        ids = rng.integers(0, V, (2, 5)).astype(np.int64)
        mask = np.ones((2, 5), np.int64)
        mask[1, 3:] = 0
        feeds = [("input_ids", ids), ("attention_mask", mask)]
        ref = exec_outs(a.kiln, model, a.device, feeds, tmp, [])
        got = exec_outs(a.kiln, model, a.device, feeds, tmp, ["--seq-bucket", "8"])
        for k, (r_, g_) in enumerate(zip(ref, got)):
            d = float(np.abs(r_ - g_).max()) if r_.shape == g_.shape else float("inf")
            check(r_.shape == g_.shape and d <= 1e-5,
                  f"exec --seq-bucket 8, output {k}: shape {list(g_.shape)} vs {list(r_.shape)}, max diff {d:.3g}")
        r = subprocess.run([a.kiln, "exec", model, "--inputs", tmp, "--outputs", tmp, "--seq-bucket", "0"],
                           capture_output=True, text=True)
        check(r.returncode == 2 and "--seq-bucket" in r.stderr, f"exec --seq-bucket 0 refused (rc {r.returncode})")
        r = subprocess.run([a.kiln, "bench", model, "--seq-bucket", "x"], capture_output=True, text=True)
        check(r.returncode == 2 and "--seq-bucket" in r.stderr, f"bench --seq-bucket x refused (rc {r.returncode})")
        r = subprocess.run([a.kiln, "run", "--model", model, "--type", "featureExtraction", "--seq-bucket", "-3"],
                           capture_output=True, text=True)
        check(r.returncode == 2 and "--seq-bucket" in r.stderr, f"run --seq-bucket -3 refused (rc {r.returncode})")
    print("FAILED" if bad else "all ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
