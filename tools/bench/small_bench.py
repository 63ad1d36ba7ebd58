#!/usr/bin/env python3
"""Small and vision models, kiln against ONNX Runtime on the CPU, same threads, interleaved in one
run (kiln, ORT, kiln, ORT, ...; the times of all rounds pooled per system), for the cases where a
fixed per-run cost or a convolution path decides: a one-node model, a ~1 ms MLP, an LSTM voice-
activity cell inside an If, ResNet-50, MobileNetV2 (shapes as torchvision's, random weights,
BatchNorm folded as exporters do), a YOLOv8n-shaped detector at 640x640 (C2f, SPPF, nearest
upsampling, the three-scale head), MiniLM-L6 and BERT-base, at batch 1 and 32 (the sequence models
at 128 tokens). Prints a table of p50 latencies and kiln/ORT ratios (below 1: kiln faster) and
writes small_bench.json and small_bench.md into --out.

ONNX Runtime is timed through its Python API, whose call overhead (measured here on an Identity
model and printed) is part of its figures; kiln through `kiln bench --inputs`, in process.

  python3 tools/bench/small_bench.py --threads 2 --out tools/bench/results_small [--only mlp,vad] [--batch 1]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RNG = np.random.default_rng(0)


def model(nodes, inputs, outputs, inits, opset=17):
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                             opset_imports=[helper.make_opsetid("", opset)])


def one_node(batch):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 16])
    return model([helper.make_node("Relu", ["x"], ["y"])], [x], [y], []), {"x": RNG.standard_normal((batch, 16), np.float32)}


def mlp(batch, d=1024, layers=4):
    inits, nodes, prev = [], [], "x"
    for i in range(layers):
        inits += [numpy_helper.from_array((RNG.standard_normal((d, d)) * 0.03).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(d, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]), helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}" if i < layers - 1 else "y"])]
        prev = f"r{i}"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", d])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", d])
    return model(nodes, [x], [y], inits), {"x": RNG.standard_normal((batch, d)).astype(np.float32)}


def vad(batch, H=64, I=64, T=4):
    def branch(tag):
        inits = [numpy_helper.from_array((RNG.standard_normal((1, 4 * H, I)) * 0.1).astype(np.float32), f"W{tag}"),
                 numpy_helper.from_array((RNG.standard_normal((1, 4 * H, H)) * 0.1).astype(np.float32), f"R{tag}"),
                 numpy_helper.from_array(np.zeros((1, 8 * H), np.float32), f"B{tag}"),
                 numpy_helper.from_array((RNG.standard_normal((H, 1)) * 0.1).astype(np.float32), f"Wo{tag}")]
        nodes = [helper.make_node("LSTM", ["x", f"W{tag}", f"R{tag}", f"B{tag}", "", "h0", "c0"], ["", f"yh{tag}", ""],
                                  hidden_size=H),
                 helper.make_node("Squeeze", [f"yh{tag}", "ax0"], [f"r{tag}"]),
                 helper.make_node("MatMul", [f"r{tag}", f"Wo{tag}"], [f"m{tag}"]), helper.make_node("Sigmoid", [f"m{tag}"], [f"p{tag}"])]
        return helper.make_graph(nodes, f"b{tag}", [], [helper.make_tensor_value_info(f"p{tag}", TensorProto.FLOAT, ["b", 1])], inits)
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, "b", I]), helper.make_tensor_value_info("sr", TensorProto.INT64, [1]),
           helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "b", H]), helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, "b", H])]
    inits = [numpy_helper.from_array(np.array([16000], np.int64), "k16"), numpy_helper.from_array(np.array([0], np.int64), "ax0")]
    nodes = [helper.make_node("Equal", ["sr", "k16"], ["c1"]), helper.make_node("Squeeze", ["c1"], ["cond"]),
             helper.make_node("If", ["cond"], ["p"], then_branch=branch("a"), else_branch=branch("b"))]
    m = model(nodes, ins, [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["b", 1])], inits)
    return m, {"x": RNG.standard_normal((T, batch, I)).astype(np.float32), "sr": np.array([16000], np.int64),
               "h0": np.zeros((1, batch, H), np.float32), "c0": np.zeros((1, batch, H), np.float32)}


def mobilenet_v2(batch):
    """torchvision's MobileNetV2 layout (width 1.0, 224x224): Conv+BN folded, ReLU6 as Clip."""
    inits, nodes = [], []
    cnt = [0]

    def conv(x, cin, cout, k, s, groups=1, act=True):
        i = cnt[0] = cnt[0] + 1
        w = (RNG.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / (cin // groups * k * k))).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")])
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[k, k], strides=[s, s],
                                      pads=[k // 2] * 4, group=groups))
        if not act:
            return f"c{i}"
        nodes.append(helper.make_node("Clip", [f"c{i}", "zero", "six"], [f"a{i}"]))
        return f"a{i}"
    inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"), numpy_helper.from_array(np.array(6, np.float32), "six")]
    x, c = conv("x", 3, 32, 3, 2), 32
    for t, cout, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for r in range(n):
            stride = s if r == 0 else 1
            h = conv(x, c, c * t, 1, 1) if t != 1 else x
            h = conv(h, c * t, c * t, 3, stride, groups=c * t)
            h = conv(h, c * t, cout, 1, 1, act=False)
            if stride == 1 and c == cout:
                nodes.append(helper.make_node("Add", [x, h], [h + "_res"]))
                h += "_res"
            x, c = h, cout
    x = conv(x, c, 1280, 1, 1)
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fcw", "fcb"], ["logits"], transB=1)]
    inits += [numpy_helper.from_array((RNG.standard_normal((1000, 1280)) * 0.01).astype(np.float32), "fcw"),
              numpy_helper.from_array(np.zeros(1000, np.float32), "fcb")]
    m = model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 224, 224])],
              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 1000])], inits)
    return m, {"x": RNG.standard_normal((batch, 3, 224, 224)).astype(np.float32)}


def yolov8n(batch, size=640):
    """A YOLOv8n-shaped detector (width 0.25, depth 0.33, 640x640): Conv+BN folded + SiLU (Sigmoid,
    Mul) blocks, C2f with Split/Concat, SPPF with MaxPool 5x5, nearest Resize upsampling, the
    three-scale detect head (box 64 + class 80 channels), outputs concatenated to (b, 144, 8400)."""
    inits, nodes = [], []
    cnt = [0]

    def name(tag):
        cnt[0] += 1
        return f"{tag}{cnt[0]}"

    def conv(x, cin, cout, k=1, s=1, act=True):
        n = name("c")
        w = (RNG.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, n + "_w"), numpy_helper.from_array((RNG.standard_normal(cout) * 0.1).astype(np.float32), n + "_b")])
        nodes.append(helper.make_node("Conv", [x, n + "_w", n + "_b"], [n], kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4))
        if not act:
            return n
        nodes.extend([helper.make_node("Sigmoid", [n], [n + "_sg"]), helper.make_node("Mul", [n, n + "_sg"], [n + "_a"])])
        return n + "_a"

    def c2f(x, cin, cout, nb, shortcut):
        c = cout // 2
        h = conv(x, cin, 2 * c)
        n = name("s")
        nodes.append(helper.make_node("Split", [h, "split_cc" + str(c)], [n + "_0", n + "_1"], axis=1))
        if "split_cc" + str(c) not in [i.name for i in inits]:
            inits.append(numpy_helper.from_array(np.array([c, c], np.int64), "split_cc" + str(c)))
        ys = [n + "_0", n + "_1"]
        for _ in range(nb):
            b = conv(conv(ys[-1], c, c, 3), c, c, 3)
            if shortcut:
                nodes.append(helper.make_node("Add", [ys[-1], b], [b + "_r"]))
                b += "_r"
            ys.append(b)
        nodes.append(helper.make_node("Concat", ys, [n + "_cat"], axis=1))
        return conv(n + "_cat", (2 + nb) * c, cout)

    def sppf(x, cin, cout):
        c = cin // 2
        h, ys = conv(x, cin, c), []
        ys.append(h)
        for _ in range(3):
            n = name("mp")
            nodes.append(helper.make_node("MaxPool", [ys[-1]], [n], kernel_shape=[5, 5], strides=[1, 1], pads=[2] * 4))
            ys.append(n)
        n = name("sp")
        nodes.append(helper.make_node("Concat", ys, [n], axis=1))
        return conv(n, 4 * c, cout)

    def up(x):
        n = name("up")
        nodes.append(helper.make_node("Resize", [x, "", "up_scales"], [n], mode="nearest"))
        return n

    def cat(xs):
        n = name("cat")
        nodes.append(helper.make_node("Concat", xs, [n], axis=1))
        return n

    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up_scales"))
    x = conv(conv("x", 3, 16, 3, 2), 16, 32, 3, 2)
    x = c2f(x, 32, 32, 1, True)
    p3 = c2f(conv(x, 32, 64, 3, 2), 64, 64, 2, True)
    p4 = c2f(conv(p3, 64, 128, 3, 2), 128, 128, 2, True)
    p5 = sppf(c2f(conv(p4, 128, 256, 3, 2), 256, 256, 1, True), 256, 256)
    h4 = c2f(cat([up(p5), p4]), 384, 128, 1, False)
    o3 = c2f(cat([up(h4), p3]), 192, 64, 1, False)
    o4 = c2f(cat([conv(o3, 64, 64, 3, 2), h4]), 192, 128, 1, False)
    o5 = c2f(cat([conv(o4, 128, 128, 3, 2), p5]), 384, 256, 1, False)
    inits.append(numpy_helper.from_array(np.array([0, 144, -1], np.int64), "det_shape"))
    outs = []
    for o, ch in [(o3, 64), (o4, 128), (o5, 256)]:
        box = conv(conv(conv(o, ch, 64, 3), 64, 64, 3), 64, 64, 1, act=False)
        cls = conv(conv(conv(o, ch, 80, 3), 80, 80, 3), 80, 80, 1, act=False)
        n = name("det")
        nodes.extend([helper.make_node("Concat", [box, cls], [n], axis=1), helper.make_node("Reshape", [n, "det_shape"], [n + "_r"])])
        outs.append(n + "_r")
    nodes.append(helper.make_node("Concat", outs, ["y"], axis=2))
    m = model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, size, size])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 144, (size // 8) ** 2 + (size // 16) ** 2 + (size // 32) ** 2])],
              inits)
    return m, {"x": RNG.standard_normal((batch, 3, size, size)).astype(np.float32)}


def generated(gen, args, batch, work, name):
    """A model written by tools/gen (random weights), its inputs generated by kiln bench."""
    path = os.path.join(work, f"{name}.onnx")
    if not os.path.exists(path):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen", gen), "--out", path] + args, check=True,
                       capture_output=True)
    return path


def feeds_from_kiln(kiln, path, batch, seq, work, tag):
    d = os.path.join(work, f"in_{tag}")
    subprocess.run([kiln, "bench", path, "--batch", str(batch), "--seq", str(seq), "--iters", "0", "--save-inputs", d],
                   check=True, capture_output=True)
    sub = os.path.join(d, f"b{batch}_s{seq}")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {}
    for k, vi in enumerate(sess.get_inputs()):
        t = onnx.TensorProto()
        t.ParseFromString(open(os.path.join(sub, f"input_{k}.pb"), "rb").read())
        feeds[vi.name] = numpy_helper.to_array(t)
    return sub, feeds


def save_feeds(feeds, sess, d):
    os.makedirs(d, exist_ok=True)
    for k, vi in enumerate(sess.get_inputs()):
        with open(os.path.join(d, f"input_{k}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(feeds[vi.name], vi.name).SerializeToString())


def time_ort(sess, feeds, iters):
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        ts.append((time.perf_counter() - t0) * 1e3)
    return ts


def time_kiln(kiln, path, in_dir, iters, threads):
    p = subprocess.run([kiln, "bench", path, "--inputs", in_dir, "--iters", str(iters), "--warmup", "1", "--threads",
                        str(threads), "--json"], check=True, capture_output=True, text=True)
    return json.loads(p.stdout.strip().splitlines()[-1])["times_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--only", default="", help="comma-separated subset of: one-node,mlp,vad,mobilenet-v2,yolov8n,resnet-50,minilm-l6,bert-base")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "tools", "bench", "results_small"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    # ORT's per-call floor through Python, on a model that does nothing
    m, f = one_node(1)
    m.graph.node[0].op_type = "Identity"
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    time_ort(s, f, 200)
    floor_us = statistics.median(time_ort(s, f, 2000)) * 1e3
    print(f"ONNX Runtime's Python call overhead (Identity model): {floor_us:.1f} us, included in its times below")
    cases = [("one-node", one_node, 2000), ("mlp", mlp, 200), ("vad", vad, 1000), ("mobilenet-v2", mobilenet_v2, 10),
             ("yolov8n", yolov8n, 4),
             ("resnet-50", None, 6), ("minilm-l6", None, 10), ("bert-base", None, 4)]
    only = set(x for x in a.only.split(",") if x)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, make, iters in cases:
            if only and name not in only:
                continue
            for batch in [int(b) for b in a.batch.split(",")]:
                it = max(2, iters // batch) if batch > 1 else iters
                if make:
                    m, feeds = make(batch)
                    path = os.path.join(work, f"{name}_b{batch}.onnx")
                    onnx.save(m, path)
                    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
                    in_dir = os.path.join(work, f"in_{name}_b{batch}")
                    save_feeds(feeds, sess, in_dir)
                else:
                    if name == "resnet-50":
                        path = generated("gen_resnet.py", ["--preset", "resnet-50"], batch, work, name)
                        x = RNG.standard_normal((batch, 3, 224, 224)).astype(np.float32)
                        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
                        feeds = {sess.get_inputs()[0].name: x}
                        in_dir = os.path.join(work, f"in_{name}_b{batch}")
                        save_feeds(feeds, sess, in_dir)
                    else:
                        path = generated("gen_bert.py", ["--preset", name], batch, work, name)
                        in_dir, feeds = feeds_from_kiln(a.kiln, path, batch, 128, work, f"{name}_b{batch}")
                        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
                time_ort(sess, feeds, 2)
                tk, to = [], []
                for _ in range(a.rounds):
                    tk += time_kiln(a.kiln, path, in_dir, it, a.threads)
                    to += time_ort(sess, feeds, it)
                pk, po = statistics.median(tk), statistics.median(to)
                rows.append(dict(model=name, batch=batch, kiln_p50_ms=pk, ort_p50_ms=po, ratio=pk / po))
                print(f"{name:14s} batch {batch:3d}: kiln {pk:9.3f} ms  ONNX Runtime {po:9.3f} ms  kiln/ORT {pk / po:5.2f}",
                      flush=True)
    meta = dict(threads=a.threads, rounds=a.rounds, ort=ort.__version__, ort_python_overhead_us=floor_us)
    with open(os.path.join(a.out, "small_bench.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    with open(os.path.join(a.out, "small_bench.md"), "w") as f:
        f.write(f"threads {a.threads}, ONNX Runtime {ort.__version__} (its Python call overhead, {floor_us:.1f} us, is in its times)\n\n")
        f.write("| model | batch | kiln p50 ms | ONNX Runtime p50 ms | kiln/ORT |\n|---|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['model']} | {r['batch']} | {r['kiln_p50_ms']:.3f} | {r['ort_p50_ms']:.3f} | {r['ratio']:.2f} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
