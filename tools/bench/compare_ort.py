#!/usr/bin/env python3
"""kiln against ONNX Runtime on the same model, inputs and thread count, interleaved in one run.

Generates a BERT-shaped model with tools/gen/gen_bert.py (MiniLM-L6 by default), then alternates
rounds of `kiln bench` and ONNX Runtime (A B A B ...), checks that both give the same output, and
prints a table of median latencies with the ratio kiln/ORT (below 1.0 means kiln is faster).

  python3 tools/bench/compare_ort.py --kiln build/kiln --preset minilm-l6 --batch 32 --seq 128 --threads 2
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
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def load_inputs(d):
    ins, k = [], 0
    while os.path.exists(os.path.join(d, f"input_{k}.pb")):
        t = onnx.TensorProto()
        t.ParseFromString(open(os.path.join(d, f"input_{k}.pb"), "rb").read())
        ins.append((t.name, numpy_helper.to_array(t)))
        k += 1
    return ins


def kiln_round(kiln, model, inputs, iters, threads):
    p = subprocess.run([kiln, "bench", model, "--inputs", inputs, "--iters", str(iters), "--warmup", "1",
                        "--threads", str(threads), "--json"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"kiln bench failed: {p.stderr}")
    r = json.loads(p.stdout)
    return r["median_ms"], r["peak_arena_bytes"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", default="build/kiln")
    ap.add_argument("--preset", default="minilm-l6")
    ap.add_argument("--model", help="use this ONNX model instead of generating one (needs --inputs)")
    ap.add_argument("--inputs", help="input_K.pb folder for --model")
    ap.add_argument("--batch", type=int, nargs="+", default=[32])
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in a.batch:
            if a.model:
                model, inputs = a.model, a.inputs
            else:
                model = os.path.join(tmp, f"{a.preset}.onnx")
                inputs = os.path.join(tmp, f"in_{batch}")
                subprocess.run([sys.executable, os.path.join(HERE, "..", "gen", "gen_bert.py"), "--preset", a.preset, "--out", model,
                                "--inputs-dir", inputs, "--batch", str(batch), "--seq", str(a.seq)], check=True, capture_output=True)
            so = ort.SessionOptions()
            so.intra_op_num_threads = a.threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
            feed = dict(load_inputs(inputs))
            ref = sess.run(None, feed)[0]
            # parity first: the numbers below are only worth comparing if the answers agree
            with tempfile.TemporaryDirectory() as out:
                subprocess.run([a.kiln, "exec", model, "--inputs", inputs, "--outputs", out, "--threads", str(a.threads)], check=True)
                t = onnx.TensorProto()
                t.ParseFromString(open(os.path.join(out, "output_0.pb"), "rb").read())
                got = numpy_helper.to_array(t)
            max_diff = float(np.abs(got - ref).max())
            k_times, o_times, peak = [], [], 0
            for _ in range(a.rounds):
                kt, peak = kiln_round(a.kiln, model, inputs, a.iters, a.threads)
                k_times.append(kt)
                ts = []
                for _ in range(a.iters):
                    t0 = time.perf_counter()
                    sess.run(None, feed)
                    ts.append((time.perf_counter() - t0) * 1e3)
                o_times.append(statistics.median(ts))
            k, o = statistics.median(k_times), statistics.median(o_times)
            rows.append(dict(model=a.model or a.preset, batch=batch, seq=a.seq, threads=a.threads, kiln_ms=k, ort_ms=o,
                             ratio=k / o, max_abs_diff=max_diff, kiln_peak_arena_bytes=peak, ort_version=ort.__version__))
    print(f"{'model':<12} {'batch':>5} {'seq':>4} {'thr':>3} {'kiln ms':>9} {'ORT ms':>9} {'kiln/ORT':>9} {'max|diff|':>10}")
    for r in rows:
        print(f"{r['model']:<12} {r['batch']:>5} {r['seq']:>4} {r['threads']:>3} {r['kiln_ms']:>9.2f} {r['ort_ms']:>9.2f} "
              f"{r['ratio']:>9.3f} {r['max_abs_diff']:>10.2e}")
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
