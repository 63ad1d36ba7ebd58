"""kiln train --device cuda --precision fp32|fp16|bf16 through kiln-sim (the CUDA backend on the SIMT
interpreter): the small random BERT text classifier of train.cli_textcls trained on the CPU and on the
device. fp32: every logged loss within 1e-5 relative of the CPU run's and the written model.onnx's
weights within 1e-4 (AdamW from the same gradients up to summation order); fp16/bf16 (fp32 master
weights, dynamic loss scaling): bf16's losses within 1% of fp32's step by step, fp16's (one step
behind: its first step overflows and is skipped) epoch means within 3%; tf32 is refused. --autocast
(per-op autocast: only MatMul/Gemm/attention in bf16) within 2e-3 of fp32's losses step by step, closer
than the whole graph in bf16; on the CPU, --recompute layers logs the same losses and writes the same
weights as the run without."""
import argparse
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "pipelines"))
import train_cli  # noqa: E402
from train_cli import check, failures, make_classifier, read_log, run, text_rows, write_jsonl  # noqa: E402


def weights(path):
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    return {i.name: numpy_helper.to_array(i).astype(np.float64) for i in m.graph.initializer}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    folder = os.path.join(args.work, "textcls_base")
    make_classifier(folder, "textcls")
    train = os.path.join(args.work, "device_train.jsonl")
    write_jsonl(train, text_rows(16, 1))

    def train_on(dev, prec, *extra):
        tag = f"dev_{dev}_{prec}" + "".join(x.strip("-") for x in extra)
        out, log = os.path.join(args.work, tag), os.path.join(args.work, f"{tag}.jsonl")
        shutil.rmtree(out, ignore_errors=True)
        run([args.kiln, "train", "--model", folder, "--type", "textClassification", "--train", train, "--output", out,
             "--epochs", "2", "--batch-size", "4", "--lr", "1e-3", "--no-shuffle", "--log", log, "--threads", "2",
             "--device", dev, "--precision", prec, *extra])
        return [e["loss"] for e in read_log(log)], weights(os.path.join(out, "model.onnx"))

    cpu_l, cpu_w = train_on("cpu", "fp32")
    dev_l, dev_w = train_on("cuda", "fp32")
    rel = max(abs(a - b) / abs(a) for a, b in zip(cpu_l, dev_l))
    check(len(cpu_l) == len(dev_l) == 8, f"fp32: 8 steps logged on both ({len(cpu_l)}, {len(dev_l)})")
    check(rel <= 1e-5, f"fp32: cuda losses within 1e-5 of the CPU's (max rel {rel:.2e})")
    wd = max(float(np.max(np.abs(cpu_w[k] - dev_w[k]))) for k in cpu_w)
    check(set(cpu_w) == set(dev_w) and wd <= 1e-4, f"fp32: written weights within 1e-4 (max {wd:.2e})")
    for prec in ("fp16", "bf16"):
        lp_l, _ = train_on("cuda", prec)
        check(len(lp_l) == 8, f"{prec}: {len(lp_l)} steps logged")
        if prec == "bf16":  # no overflow at the default scale: step k is fp32's step k, rounded
            r = bf16_whole = max(abs(a - b) / abs(b) for a, b in zip(lp_l, dev_l))
            check(r <= 1e-2, f"{prec}: losses within 1% of fp32's (max rel {r:.2e})")
        else:  # fp16 skips its first step (65536 overflows the loss gradient): the curve is a step behind
            e = [abs(np.mean(lp_l[k:k + 4]) - np.mean(dev_l[k:k + 4])) / np.mean(dev_l[k:k + 4]) for k in (0, 4)]
            check(max(e) <= 3e-2, f"{prec}: epoch mean losses within 3% of fp32's ({e[0]:.2e}, {e[1]:.2e})")
        print(f"  {prec}: " + " ".join(f"{x:.5f}" for x in lp_l) + "\n  fp32: " + " ".join(f"{x:.5f}" for x in dev_l))
    rc_l, rc_w = train_on("cpu", "fp32", "--recompute", "layers")
    check(rc_l == cpu_l and all(np.array_equal(rc_w[k], cpu_w[k]) for k in cpu_w),
          "--recompute layers: the CPU run's losses and weights exactly")
    ac_l, _ = train_on("cuda", "bf16", "--autocast")
    r = max(abs(a - b) / abs(b) for a, b in zip(ac_l, dev_l))
    check(r <= 2e-3 and r < bf16_whole,
          f"bf16 --autocast: losses within 2e-3 of fp32's (max rel {r:.2e}; whole graph in bf16 {bf16_whole:.2e})")
    bad = run([args.kiln, "train", "--model", folder, "--type", "textClassification", "--train", train, "--output",
               os.path.join(args.work, "dev_bad"), "--device", "cuda", "--precision", "tf32"], expect_ok=False)
    check(bad.returncode != 0 and "precision" in bad.stderr, "tf32 is refused with a message naming --precision")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
