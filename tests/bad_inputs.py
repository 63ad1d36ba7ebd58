#!/usr/bin/env python3
"""Bad models and inputs must give a non-zero exit and a message, promptly, never a crash, hang or
huge allocation. Each case runs the kiln CLI under a time limit; a signal death is a failure."""
import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TIME_LIMIT = 30
MEM_LIMIT = 4 << 30  # a run must never need more than this for these tiny cases


def limit():
    resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))


def sanitized(kiln):
    """AddressSanitizer reserves terabytes of address space, so its builds run without the cap
    (ASan then reports any oversized allocation itself)."""
    with open(kiln, "rb") as f:
        return b"__asan_init" in f.read()


def run(kiln, args):
    try:
        p = subprocess.run([kiln] + args, capture_output=True, text=True, timeout=TIME_LIMIT,
                           preexec_fn=None if sanitized(kiln) else limit)
    except subprocess.TimeoutExpired:
        return None, "timed out"
    return p.returncode, (p.stderr or p.stdout).strip()


def save_inputs(d, arrays):
    os.makedirs(d, exist_ok=True)
    for k, (name, arr) in enumerate(arrays):
        with open(os.path.join(d, f"input_{k}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(arr, name).SerializeToString())


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--zoo", required=True)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="kiln-bad-")
    cases = []  # (name, argv, text the error must contain or None)

    def add_model(name, m, inputs=None, raw=None, expect=None):
        d = os.path.join(tmp, name)
        os.makedirs(d, exist_ok=True)
        mp = os.path.join(d, "model.onnx")
        with open(mp, "wb") as f:
            f.write(raw if raw is not None else m.SerializeToString())
        save_inputs(os.path.join(d, "in"), inputs or [])
        cases.append((name, ["exec", mp, "--inputs", os.path.join(d, "in"), "--outputs", os.path.join(d, "out")], expect))
        cases.append((name + " (info)", ["info", mp], None))

    rng = random.Random(1)
    add_model("empty file", None, raw=b"")
    add_model("random bytes", None, raw=bytes(rng.randrange(256) for _ in range(5000)))
    zoo_model = os.path.join(a.zoo, "bert_feature", "model.onnx")
    if os.path.exists(zoo_model):
        data = open(zoo_model, "rb").read()
        add_model("truncated zoo model", None, raw=data[: len(data) // 3])
        for i in range(8):
            b = bytearray(data)
            for _ in range(20):
                pos = rng.randrange(len(b))
                b[pos] ^= 1 << rng.randrange(8)
            add_model(f"bit-flipped zoo model {i}", None, raw=bytes(b),
                      inputs=[("input_ids", np.zeros((1, 4), np.int64)), ("attention_mask", np.ones((1, 4), np.int64)),
                              ("token_type_ids", np.zeros((1, 4), np.int64))])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    # a tensor claiming 10^12 elements with 4 bytes of data
    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1000000, 1000000], raw_data=b"\0\0\0\0")
    add_model("10^12-element initializer", model([helper.make_node("Add", ["x", "w"], ["y"])], [x], [y], [huge]),
              [("x", np.zeros((2, 3), np.float32))])
    bad_len = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 3], raw_data=b"\0" * 7)
    add_model("dims disagree with data", model([helper.make_node("Add", ["x", "w"], ["y"])], [x], [y], [bad_len]),
              [("x", np.zeros((2, 3), np.float32))])
    cyc = model([helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Add", ["a", "x"], ["b"]),
                 helper.make_node("Identity", ["b"], ["y"])], [x], [y])
    add_model("cyclic graph", cyc, [("x", np.zeros((2, 3), np.float32))])
    add_model("unknown op", model([helper.make_node("FrobnicateOp", ["x"], ["y"])], [x], [y]), [("x", np.zeros((2, 3), np.float32))])
    add_model("unknown domain", model([helper.make_node("Relu", ["x"], ["y"], domain="com.example")], [x], [y]),
              [("x", np.zeros((2, 3), np.float32))])
    relu = model([helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    add_model("wrong input name", relu, [("nope", np.zeros((2, 3), np.float32))])
    add_model("wrong input dtype", relu, [("x", np.zeros((2, 3), np.int64))])
    add_model("wrong input rank", relu, [("x", np.zeros((2, 3, 1), np.float32))])
    add_model("wrong input batch", relu, [("x", np.zeros((5, 3), np.float32))])
    emb = numpy_helper.from_array(np.ones((10, 4), np.float32), "emb")
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [2])
    e = helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 4])
    add_model("token id outside the embedding table",
              model([helper.make_node("Gather", ["emb", "ids"], ["e"])], [ids], [e], [emb]), [("ids", np.array([3, 12], np.int64))])
    shp = numpy_helper.from_array(np.array([4, 4], np.int64), "shp")
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    add_model("reshape to an impossible size", model([helper.make_node("Reshape", ["x", "shp"], ["z"])], [x], [z], [shp]),
              [("x", np.zeros((2, 3), np.float32))])
    img = helper.make_tensor_value_info("img", TensorProto.UINT8, [None])
    pix = helper.make_tensor_value_info("pix", TensorProto.UINT8, None)
    dec = model([helper.make_node("ImageDecoder", ["img"], ["pix"])], [img], [pix], opset=20)
    add_model("corrupt JPEG", dec, [("img", np.frombuffer(b"\xff\xd8\xff\xe0" + bytes(rng.randrange(256) for _ in range(300)), np.uint8))])
    add_model("corrupt PNG", dec, [("img", np.frombuffer(b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(300)), np.uint8))])
    # one symbolic name is one size (ONNX IR): batch 2 in one input and 3 in the other is refused
    xs = helper.make_tensor_value_info("xs", TensorProto.FLOAT, ["batch", "seq"])
    ms = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "seq"])
    ys = helper.make_tensor_value_info("ys", TensorProto.FLOAT, None)
    add_model("symbolic dimension disagrees", model([helper.make_node("Mul", ["xs", "mask"], ["ys"])], [xs, ms], [ys]),
              [("xs", np.zeros((2, 4), np.float32)), ("mask", np.zeros((3, 4), np.float32))],
              expect="inputs 'xs' and 'mask' disagree on dimension 'batch': 2")
    add_model("symbolic dimension disagrees (broadcastable)",
              model([helper.make_node("Mul", ["xs", "mask"], ["ys"])], [xs, ms], [ys]),
              [("xs", np.zeros((2, 4), np.float32)), ("mask", np.zeros((2, 1), np.float32))],
              expect="disagree on dimension 'seq': 4")
    add_model("missing input value", model([helper.make_node("Add", ["x", "ghost"], ["y"])], [x], [y]),
              [("x", np.zeros((2, 3), np.float32))])

    ok = bad = 0
    for name, argv, expect in cases:
        rc, msg = run(a.kiln, argv)
        first = msg.splitlines()[0][:200] if msg else ""
        if rc is None:
            print(f"FAIL {name}: timed out after {TIME_LIMIT}s")
            bad += 1
        elif rc < 0:
            print(f"FAIL {name}: killed by signal {-rc}: {first}")
            bad += 1
        elif argv[0] == "info" and rc == 0:
            # info may legitimately describe a loadable model with bad inputs or ops
            print(f"PASS {name}: loads, described")
            ok += 1
        elif rc == 0:
            print(f"FAIL {name}: exit 0, expected an error")
            bad += 1
        elif not msg:
            print(f"FAIL {name}: exit {rc} with no message")
            bad += 1
        elif expect and expect not in msg:
            print(f"FAIL {name}: the error does not say '{expect}': {first}")
            bad += 1
        else:
            print(f"PASS {name}: exit {rc}: {first}")
            ok += 1
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"{ok} passed, {bad} failed, 0 skipped")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
