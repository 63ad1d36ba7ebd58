#!/usr/bin/env python3
"""Memory soak of `kiln run`: a long stream must not make it grow.

Streams N x FACTOR JSON lines of mixed lengths (empty, short, long, over the model's limit, non-ASCII)
through `kiln run --type featureExtraction` on stdin and reads its output as it comes. The child's
peak RSS (VmHWM) is read when the first N output lines have arrived, and again when the stream
ends; the second may exceed the first by a small margin only (allocator noise, not one arena or
plan per batch). Every input line must get exactly one output line with an embedding.

  soak.py --kiln build/kiln --model tests/pipelines/fixtures/feature_st_mean_norm/model [--lines N]
          [--factor F] [--margin-mb M] [--report-every K]

Long run by hand (all-MiniLM-L6-v2 converted as tools/quickstart.sh does):
  soak.py --kiln build/kiln --model build/minilm --lines 20000 --factor 10 --report-every 10000 --short
"""
import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time

WORDS = ("the quick brown fox jumps over a lazy dog while kiln runs models on every core and "
         "memory stays flat across long streams of text café naïve 東京 日本 emoji 🙂 données").split()


def make_line(rng, i, short=False):
    """One input line; the lengths cover every batch shape the pipeline makes.
    short: sentence-like lines of 1 to 30 words (the long hand run on a real model)."""
    r = rng.random()
    if short:
        n = 0 if r < 0.02 else rng.randint(1, 30)
    elif i % 97 == 0:
        n = 600          # over the model's limit: truncated
    else:
        # uniform lengths keep every batch shape coming back in any order: an arena pool that
        # mislabels arenas (issue 19) misses again and again and grows to its slot limit
        n = rng.randint(0, 160)
    return json.dumps({"input": " ".join(rng.choice(WORDS) for _ in range(n))}, ensure_ascii=False) + "\n"


def status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--lines", type=int, default=2000, help="N: the first pass, after which the peak is taken")
    ap.add_argument("--factor", type=int, default=10, help="the whole stream is N x FACTOR lines")
    ap.add_argument("--margin-mb", type=float, default=4.0, help="allowed growth of the peak RSS (also 5%% of it)")
    ap.add_argument("--report-every", type=int, default=0, help="print RSS every K output lines")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--short", action="store_true", help="sentence-length lines only (1 to 30 words)")
    a = ap.parse_args()
    total = a.lines * a.factor
    cmd = [a.kiln, "run", "--model", a.model, "--type", "featureExtraction", "--no-progress"]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def feed():
        rng = random.Random(1234)
        try:
            for i in range(total):
                p.stdin.write(make_line(rng, i, a.short).encode())
            p.stdin.close()
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    t0 = time.time()
    got, bad = 0, 0
    peak_first = peak_last = -1
    for raw in p.stdout:
        got += 1
        try:
            obj = json.loads(raw)
            out = obj.get("output") if isinstance(obj, dict) else None
            if not isinstance(out, dict) or not isinstance(out.get("Embeddings"), list) or not out["Embeddings"]:
                bad += 1
        except ValueError:
            bad += 1
        if got == a.lines:
            peak_first = status_kb(p.pid, "VmHWM")
        if got == total:  # the last answer: the process is still alive, its peak readable
            peak_last = status_kb(p.pid, "VmHWM")
        if a.report_every and got % a.report_every == 0:
            print(f"  {got:8d} lines  {time.time() - t0:7.1f} s  RSS {status_kb(p.pid, 'VmRSS') / 1024:7.1f} MB  "
                  f"peak {status_kb(p.pid, 'VmHWM') / 1024:7.1f} MB", flush=True)
    peak_last = max(peak_last if got >= total else -1, status_kb(p.pid, "VmHWM"))
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    writer.join(5)
    secs = time.time() - t0
    # Not ru_maxrss: in a build with CUDA, the CUDA runtime's teardown at process exit (fat binaries
    # unregistered, the driver probed) briefly maps ~45 MB whatever the stream's length; `kiln
    # --version` alone peaks there. The soak is about growth with the lines, read while running.
    print(f"{total} lines in {secs:.1f} s; peak RSS after {a.lines} lines: {peak_first / 1024:.1f} MB, "
          f"after {total}: {peak_last / 1024:.1f} MB")
    ok = True
    if p.returncode != 0:
        print(f"FAIL: kiln run exited {p.returncode}")
        ok = False
    if got != total or bad:
        print(f"FAIL: {got} output lines for {total} input lines, {bad} without an embedding")
        ok = False
    if peak_first <= 0:
        print("FAIL: the peak after the first pass could not be read")
        ok = False
    else:
        allowed = peak_first + max(a.margin_mb * 1024, 0.05 * peak_first)
        if peak_last > allowed:
            print(f"FAIL: peak RSS grew from {peak_first} kB to {peak_last} kB (allowed {int(allowed)} kB)")
            ok = False
    print("PASS" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
