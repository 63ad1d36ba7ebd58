#!/usr/bin/env python3
"""Single-thread encode throughput (MB/s of UTF-8 input) of kiln's C tokenizer against the
`tokenizers` package, on the parity corpus (tests/tokenizer/gen_corpus.py), in one run.

Trains the same tokenizers as the parity test (WordPiece BERT, byte-level BPE GPT-2/RoBERTa,
Unigram T5), then for each: kiln (`kiln_tok tokenize --bench`, encoding timed inside the process,
one line at a time on one thread) and the package (encode_batch with RAYON_NUM_THREADS=1, and a
plain encode() loop). Usage: tokenizer_bench.py --driver build/pipelines/kiln_tok [--lines N]
[--repeat R] [--tokenizer PATH ...]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# one thread for the package; must be set before tokenizers starts its pool
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "tokenizer"))
import gen_corpus  # noqa: E402
import parity  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def bench_kiln(driver, path, blob, repeat):
    best = None
    for _ in range(repeat):
        r = subprocess.run([driver, "tokenize", "--tokenizer", path, "--bench", "--threads", "1"], input=blob, capture_output=True, check=True)
        res = json.loads(r.stdout)
        if best is None or res["seconds"] < best["seconds"]:
            best = res
    return best


def bench_package(path, lines, nbytes, repeat):
    tok = Tokenizer.from_file(path)
    best_batch = best_loop = None
    for _ in range(repeat):
        t = time.perf_counter()
        enc = tok.encode_batch(lines)
        dt = time.perf_counter() - t
        best_batch = dt if best_batch is None else min(best_batch, dt)
        t = time.perf_counter()
        for l in lines:
            tok.encode(l)
        dt = time.perf_counter() - t
        best_loop = dt if best_loop is None else min(best_loop, dt)
    ntok = sum(len(e.ids) for e in enc)
    return nbytes / 1e6 / best_batch, nbytes / 1e6 / best_loop, ntok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--driver", required=True)
    ap.add_argument("--lines", type=int, default=12000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tokenizer", nargs="*", default=[], help="extra tokenizer.json files")
    a = ap.parse_args()
    lines = gen_corpus.generate(a.lines)
    blob = ("\n".join(lines) + "\n").encode("utf-8")
    nbytes = len(blob)
    print(f"corpus: {len(lines)} lines, {nbytes / 1e6:.2f} MB; single thread, best of {a.repeat}")
    print(f"{'tokenizer':26s} {'kiln MB/s':>10s} {'pkg batch':>10s} {'pkg loop':>10s} {'kiln/batch':>10s} {'tokens':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = parity.train_all(lines, tmp)
        paths.pop("wordlevel", None)
        for p in a.tokenizer:
            paths[os.path.basename(os.path.dirname(p)) or p] = p
        for name, path in paths.items():
            k = bench_kiln(a.driver, path, blob, a.repeat)
            pb, pl, ntok = bench_package(path, lines, nbytes, a.repeat)
            ok = "" if ntok == k["tokens"] else f"  (token counts differ: {k['tokens']} vs {ntok})"
            print(f"{name:26s} {k['mb_per_s']:10.2f} {pb:10.2f} {pl:10.2f} {k['mb_per_s'] / pb:9.2f}x {k['tokens']:9d}{ok}", flush=True)


if __name__ == "__main__":
    main()
