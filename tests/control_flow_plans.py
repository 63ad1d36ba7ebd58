#!/usr/bin/env python3
"""Control-flow bodies are planned once per shape signature, like the main graph, not once per
iteration or run: `kiln bench --json` reports body_plans_built for a session, which must not grow
with iterations and runs. Three models:
  - an LSTM voice-activity cell inside an If (the shape of real VAD models): one plan, for the
    branch taken;
  - a Loop of 16 iterations whose body does MatMul + Tanh on a carried state and reads an outer
    weight: one plan for all iterations of all runs;
  - a Loop whose carried value grows each iteration (Concat): one plan per length, bounded.
Outputs are also checked against ONNX Runtime through `kiln exec` (rtol 1e-4, atol 1e-5).

  control_flow_plans.py --kiln build/kiln
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)


def vad_model(H=32, I=16, T=4):
    def branch(tag):
        W = numpy_helper.from_array(RNG.standard_normal((1, 4 * H, I)).astype(np.float32) * 0.2, f"W{tag}")
        R = numpy_helper.from_array(RNG.standard_normal((1, 4 * H, H)).astype(np.float32) * 0.2, f"R{tag}")
        B = numpy_helper.from_array(RNG.standard_normal((1, 8 * H)).astype(np.float32) * 0.1, f"B{tag}")
        Wo = numpy_helper.from_array(RNG.standard_normal((H, 1)).astype(np.float32) * 0.2, f"Wo{tag}")
        sh = numpy_helper.from_array(np.array([1, H], np.int64), f"sh{tag}")
        nodes = [helper.make_node("LSTM", ["x", f"W{tag}", f"R{tag}", f"B{tag}", "", "h0", "c0"],
                                  ["", f"yh{tag}", f"yc{tag}"], hidden_size=H),
                 helper.make_node("Reshape", [f"yh{tag}", f"sh{tag}"], [f"r{tag}"]),
                 helper.make_node("MatMul", [f"r{tag}", f"Wo{tag}"], [f"m{tag}"]),
                 helper.make_node("Sigmoid", [f"m{tag}"], [f"p{tag}"])]
        outs = [helper.make_tensor_value_info(f"p{tag}", TensorProto.FLOAT, [1, 1])]
        return helper.make_graph(nodes, f"b{tag}", [], outs, [W, R, B, Wo, sh])
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, 1, I]),
           helper.make_tensor_value_info("sr", TensorProto.INT64, [1]),
           helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 1, H]),
           helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, 1, H])]
    k = numpy_helper.from_array(np.array([16000], np.int64), "k16")
    nodes = [helper.make_node("Equal", ["sr", "k16"], ["c1"]), helper.make_node("Squeeze", ["c1"], ["cond"]),
             helper.make_node("If", ["cond"], ["p"], then_branch=branch("a"), else_branch=branch("b"))]
    g = helper.make_graph(nodes, "vad", ins, [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 1])], [k])
    feeds = {"x": RNG.standard_normal((T, 1, I)).astype(np.float32), "sr": np.array([16000], np.int64),
             "h0": np.zeros((1, 1, H), np.float32), "c0": np.zeros((1, 1, H), np.float32)}
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), feeds


def loop_model(D=24, N=16):
    Wt = numpy_helper.from_array(RNG.standard_normal((D, D)).astype(np.float32) * 0.3, "W")
    body = helper.make_graph(
        [helper.make_node("MatMul", ["s_in", "W"], ["m"]), helper.make_node("Tanh", ["m"], ["s_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("ReduceSum", ["s_out"], ["scan"],
                                                                                   keepdims=0)],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [2, D])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [2, D]),
         helper.make_tensor_value_info("scan", TensorProto.FLOAT, [])])
    trip = numpy_helper.from_array(np.array(N, np.int64), "trip")
    cond = numpy_helper.from_array(np.array(True), "cond")
    g = helper.make_graph([helper.make_node("Loop", ["trip", "cond", "s0"], ["s", "sums"], body=body)], "loop",
                          [helper.make_tensor_value_info("s0", TensorProto.FLOAT, [2, D])],
                          [helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, D]),
                           helper.make_tensor_value_info("sums", TensorProto.FLOAT, [N])], [Wt, trip, cond])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), {
        "s0": RNG.standard_normal((2, D)).astype(np.float32)}


def growing_model(N=6):
    body = helper.make_graph(
        [helper.make_node("Concat", ["acc_in", "one"], ["acc_out"], axis=0),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "grow",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [None])],
        [numpy_helper.from_array(np.array([1.5], np.float32), "one")])
    trip = numpy_helper.from_array(np.array(N, np.int64), "trip")
    cond = numpy_helper.from_array(np.array(True), "cond")
    g = helper.make_graph([helper.make_node("Loop", ["trip", "cond", "a0"], ["acc"], body=body)], "growing",
                          [helper.make_tensor_value_info("a0", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("acc", TensorProto.FLOAT, [None])], [trip, cond])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), {"a0": np.array([2.0], np.float32)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    a = ap.parse_args()
    # (name, model, most plans allowed after 40 runs)
    cases = [("vad (LSTM inside If)", *vad_model(), 1), ("loop of 16 iterations", *loop_model(), 1),
             ("loop with a growing carried value", *growing_model(), 6)]
    bad = 0
    with tempfile.TemporaryDirectory() as d:
        for k, (name, m, feeds, most) in enumerate(cases):
            mp = os.path.join(d, f"m{k}.onnx")
            onnx.save(m, mp)
            ins = os.path.join(d, f"in{k}")
            os.makedirs(ins)
            for j, vi in enumerate(m.graph.input):
                with open(os.path.join(ins, f"input_{j}.pb"), "wb") as f:
                    f.write(numpy_helper.from_array(feeds[vi.name], vi.name).SerializeToString())
            out = os.path.join(d, f"out{k}")
            r = subprocess.run([a.kiln, "exec", mp, "--inputs", ins, "--outputs", out], capture_output=True, text=True)
            want = ort.InferenceSession(mp, providers=["CPUExecutionProvider"]).run(None, feeds)
            ok = r.returncode == 0
            why = r.stderr.strip()
            for j, w in enumerate(want):
                if not ok:
                    break
                t = onnx.TensorProto()
                t.ParseFromString(open(os.path.join(out, f"output_{j}.pb"), "rb").read())
                got = numpy_helper.to_array(t)
                if got.shape != w.shape or not np.allclose(got, w, rtol=1e-4, atol=1e-5):
                    ok, why = False, f"output {j} differs from ONNX Runtime: {got.ravel()[:4]} vs {w.ravel()[:4]}"
            r = subprocess.run([a.kiln, "bench", mp, "--inputs", ins, "--iters", "40", "--warmup", "0", "--json"],
                               capture_output=True, text=True)
            built = json.loads(r.stdout.strip().splitlines()[-1])["body_plans_built"] if r.returncode == 0 else -1
            if ok and not (1 <= built <= most):
                ok, why = False, f"{built} body plans built over 41 runs (at most {most} expected)"
            print(f"{'PASS' if ok else 'FAIL'} {name}: {built} body plan(s) built over 41 runs" +
                  ("" if ok else f": {why}"))
            bad += not ok
    print(f"{len(cases) - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
