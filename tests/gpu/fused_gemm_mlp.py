#!/usr/bin/env python3
"""The GEMM + activation fusion on a cuda session (kiln-sim, the SIMT interpreter): an MLP written
the two ways exporters write a linear layer (Gemm with a bias; MatMul by a constant weight + Add of
a constant bias row) followed by Relu, Tanh and LeakyRelu, and a near miss (a Relu whose input is
also a graph output). Checks, running `kiln-sim exec --device cuda` with KILN_SIM_LT_TRACE=1 (the
interpreter's cuBLASLt names each epilogue it computes):
  - every Gemm/MatMul + Relu layer ran as one product with cuBLASLt's RELU_BIAS epilogue, the near
    miss did not (its product has the plain BIAS epilogue of Gemm's bias row);
  - the cuda session's graph holds the FusedGemm nodes (with the kernel switched off by
    KILN_CUDA_DISABLE=FusedGemm, they are reported as falling back to the CPU) and none of them
    falls back otherwise;
  - the outputs equal kiln on the CPU (unfused there) within 1e-5, also when the interpreter's
    cuBLASLt offers no algorithm with an epilogue (KILN_SIM_LT_NO_EPILOGUE=1: the plain GEMM and
    kiln's activation pass).
Usage: fused_gemm_mlp.py KILN_SIM
Prints "N passed, N failed" last; exits non-zero on any failure.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build_mlp(path, batch=6, dims=(24, 40, 32, 16, 12, 8), seed=5):
    """x -> [Gemm+Relu] -> [MatMul+Add+Relu] -> [Gemm(transB)+Tanh] -> [MatMul+Add+LeakyRelu]
    -> [Gemm+Relu whose pre-activation is also an output: the near miss]; returns the number of
    layers that must take RELU_BIAS (2)."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    cur = "x"
    for i in range(len(dims) - 1):
        k, n = dims[i], dims[i + 1]
        w = rng.standard_normal((k, n)) / np.sqrt(k)
        b = rng.standard_normal(n) * 0.5
        pre, out = f"pre{i}", f"h{i}"
        if i in (0, 4):
            nodes.append(helper.make_node("Gemm", [cur, const(f"w{i}", w), const(f"b{i}", b)], [pre]))
        elif i == 2:
            nodes.append(helper.make_node("Gemm", [cur, const(f"w{i}", w.T), const(f"b{i}", b)], [pre], transB=1))
        else:
            nodes.append(helper.make_node("MatMul", [cur, const(f"w{i}", w)], [f"mm{i}"]))
            nodes.append(helper.make_node("Add", [f"mm{i}", const(f"b{i}", b)], [pre]))
        act = {0: "Relu", 1: "Relu", 2: "Tanh", 3: "LeakyRelu", 4: "Relu"}[i]
        attrs = {"alpha": 0.1} if act == "LeakyRelu" else {}
        nodes.append(helper.make_node(act, [pre], [out], **attrs))
        cur = out
    outs = [helper.make_tensor_value_info(cur, TensorProto.FLOAT, None),
            helper.make_tensor_value_info("pre4", TensorProto.FLOAT, None)]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, dims[0]])],
                          outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    x = rng.standard_normal((batch, dims[0])).astype(np.float32)
    return x


def run(kiln, model, idir, odir, device, env_extra):
    env = dict(os.environ, **env_extra)
    args = [kiln, "exec", model, "--inputs", idir, "--outputs", odir] + (["--device", device] if device else [])
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    outs = []
    if r.returncode == 0:
        for i in range(2):
            t = onnx.TensorProto()
            with open(os.path.join(odir, f"output_{i}.pb"), "rb") as f:
                t.ParseFromString(f.read())
            outs.append(numpy_helper.to_array(t))
    return r, outs


def main():
    kiln = sys.argv[1]
    passed = failed = 0

    def check(ok, what):
        nonlocal passed, failed
        print(("ok   " if ok else "FAIL ") + what)
        passed += ok
        failed += not ok

    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "mlp.onnx")
        x = build_mlp(model)
        idir = os.path.join(tmp, "in")
        os.makedirs(idir)
        with open(os.path.join(idir, "input_0.pb"), "wb") as f:
            f.write(numpy_helper.from_array(x, "x").SerializeToString())

        def out(tag):
            d = os.path.join(tmp, tag)
            os.makedirs(d, exist_ok=True)
            return d

        rc, ref = run(kiln, model, idir, out("cpu"), None, {})
        check(rc.returncode == 0, f"kiln exec on the CPU (rc {rc.returncode})" + (rc.stderr[-300:] if rc.returncode else ""))
        if rc.returncode:
            print(f"{passed} passed, {failed} failed")
            return 1
        r, got = run(kiln, model, idir, out("cuda"), "cuda", {"KILN_SIM_LT_TRACE": "1"})
        check(r.returncode == 0, f"kiln-sim exec --device cuda (rc {r.returncode})" + (r.stderr[-300:] if r.returncode else ""))
        if r.returncode == 0:
            lines = r.stderr.splitlines()
            relu_bias = sum("matmul epilogue RELU_BIAS" in ln for ln in lines)
            bias = sum("matmul epilogue BIAS " in ln for ln in lines)
            check(relu_bias == 2, f"Gemm + Relu and MatMul + Add + Relu ran with the RELU_BIAS epilogue "
                                  f"({relu_bias} products, want 2)")
            check(bias == 3, f"Tanh, LeakyRelu and the near miss: the BIAS epilogue ({bias} products, want 3)")
            check("has no kernel for FusedGemm" not in r.stderr, "no FusedGemm fell back to the CPU")
            for i, (a, b) in enumerate(zip(ref, got)):
                err = float(np.max(np.abs(a - b))) if a.size else 0.0
                check(a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-5),
                      f"output {i} == the CPU's (max abs diff {err:.3g})")
        r, _ = run(kiln, model, idir, out("dis"), "cuda", {"KILN_CUDA_DISABLE": "FusedGemm"})
        check("has no kernel for FusedGemm" in r.stderr,
              "the cuda session's graph holds FusedGemm (reported falling back when its kernel is off)")
        r, got = run(kiln, model, idir, out("noepi"), "cuda", {"KILN_SIM_LT_NO_EPILOGUE": "1", "KILN_SIM_LT_TRACE": "1"})
        check(r.returncode == 0 and "matmul epilogue" not in r.stderr,
              f"no epilogue offered: none used (rc {r.returncode})")
        if r.returncode == 0:
            for i, (a, b) in enumerate(zip(ref, got)):
                err = float(np.max(np.abs(a - b))) if a.size else 0.0
                check(a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-5),
                      f"no epilogue: output {i} == the CPU's (max abs diff {err:.3g})")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
