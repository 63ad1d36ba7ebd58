#!/usr/bin/env python3
"""Runs `kiln run` on every pipeline fixture (or the ones named) and compares its JSON lines with the
transformers references in fixtures/<name>/expected.jsonl: the same structure, equal strings,
integers and booleans, numbers within --atol (1e-4). Prints the largest difference per fixture, a
readable diff of the first mismatches, a summary table, and exits non-zero on any failure.
Standard library only, so it runs on CI machines without torch.

    check_parity.py --kiln build/kiln [NAME ...]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures")


class Cmp:
    """Walks two JSON values side by side, collecting mismatches (path, expected, got) and the
    largest absolute difference between numbers."""

    def __init__(self, atol):
        self.atol, self.max_diff, self.errors = atol, 0.0, []

    def fail(self, path, want, got, why):
        self.errors.append((path, why, want, got))

    def __call__(self, want, got, path):
        if isinstance(want, bool) or isinstance(got, bool):
            if want is not got:
                self.fail(path, want, got, "differs")
        elif isinstance(want, int) and isinstance(got, int):
            if want != got:
                self.fail(path, want, got, "differs")
        elif isinstance(want, (int, float)) and isinstance(got, (int, float)):
            d = abs(float(want) - float(got))
            if math.isnan(d):
                d = math.inf
            self.max_diff = max(self.max_diff, d)
            if not d <= self.atol:
                self.fail(path, want, got, f"|diff| {d:.3g} > {self.atol:g}")
        elif isinstance(want, str) or want is None:
            if want != got:
                self.fail(path, want, got, "differs")
        elif isinstance(want, list):
            if not isinstance(got, list):
                self.fail(path, short(want), short(got), "not a list")
            elif len(want) != len(got):
                self.fail(path, f"{len(want)} items", f"{len(got)} items", "length differs")
                for i in range(min(len(want), len(got))):
                    self(want[i], got[i], f"{path}[{i}]")
            else:
                for i, (w, g) in enumerate(zip(want, got)):
                    self(w, g, f"{path}[{i}]")
        elif isinstance(want, dict):
            if not isinstance(got, dict):
                self.fail(path, short(want), short(got), "not an object")
                return
            if set(want) != set(got):
                self.fail(path, sorted(want), sorted(got), "keys differ")
            for k in want:
                if k in got:
                    self(want[k], got[k], f"{path}.{k}")
        else:
            self.fail(path, want, got, f"unexpected type {type(want).__name__}")


def short(v, n=120):
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= n else s[:n] + "..."


def load_jsonl(text, what):
    out = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{what} line {i + 1} is not JSON ({e}): {line[:200]!r}")
    return out


def check(kiln, name, atol, timeout, extra, verbose):
    d = os.path.join(FIX, name)
    with open(os.path.join(d, "args.json")) as f:
        meta = json.load(f)
    model = os.path.normpath(os.path.join(d, meta.get("model", "model")))
    cmd = [kiln, "run", "--model", model, "--type", meta["type"], "--input", os.path.join(d, "input.jsonl")]
    cmd += meta.get("args", []) + extra
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, math.nan, time.time() - t0, [f"timed out after {timeout}s: {' '.join(cmd)}"]
    secs = time.time() - t0
    msgs = []
    if p.returncode != 0:
        msgs.append(f"exit status {p.returncode}: {' '.join(cmd)}")
        msgs += ["  stderr: " + l for l in p.stderr.strip().splitlines()[-15:]]
        return False, math.nan, secs, msgs
    with open(os.path.join(d, "expected.jsonl"), encoding="utf-8") as f:
        want = load_jsonl(f.read(), "expected.jsonl")
    try:
        got = load_jsonl(p.stdout, "kiln output")
    except ValueError as e:
        return False, math.nan, secs, [str(e)]
    if len(got) != len(want):
        msgs.append(f"{len(got)} output lines, expected {len(want)}")
    c = Cmp(atol)
    for i, (w, g) in enumerate(zip(want, got)):
        if "error" in g:
            c.fail(f"line {i + 1}", short(w.get("output")), g["error"], "kiln reported an error")
            continue
        c(w["input"], g.get("input"), f"line {i + 1}.input")
        if "output" not in g:
            c.fail(f"line {i + 1}", "output", sorted(g), "no output field")
            continue
        c(w["output"], g["output"], f"line {i + 1}.output")
    for path, why, w, g in c.errors[: (10**9 if verbose else 12)]:
        msgs.append(f"{path}: {why}\n      expected {short(w)}\n      got      {short(g)}")
    if len(c.errors) > 12 and not verbose:
        msgs.append(f"... {len(c.errors) - 12} more mismatches (--verbose shows all)")
    if p.stderr.strip() and verbose:
        msgs += ["  stderr: " + l for l in p.stderr.strip().splitlines()[-5:]]
    return not msgs, c.max_diff, secs, msgs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", required=True, help="the kiln binary")
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--timeout", type=float, default=280)
    ap.add_argument("--extra", action="append", default=[], help="extra argument for kiln run (repeatable)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("names", nargs="*", help="fixture names (default: all)")
    a = ap.parse_args()
    names = a.names or sorted(n for n in os.listdir(FIX) if os.path.isfile(os.path.join(FIX, n, "args.json")))
    unknown = [n for n in names if not os.path.isfile(os.path.join(FIX, n, "args.json"))]
    if unknown:
        print(f"no such fixture: {', '.join(unknown)} (in {FIX})")
        return 2
    rows, failed = [], 0
    for n in names:
        ok, diff, secs, msgs = check(a.kiln, n, a.atol, a.timeout, a.extra, a.verbose)
        failed += not ok
        rows.append((n, "PASS" if ok else "FAIL", diff, secs))
        print(f"{'PASS' if ok else 'FAIL'} {n}: max |diff| {diff:.2e} ({secs:.1f}s)")
        for m in msgs:
            print("    " + m)
    w = max(len(r[0]) for r in rows)
    print(f"\n{'fixture'.ljust(w)}  result  max |diff|   time")
    for n, res, diff, secs in rows:
        print(f"{n.ljust(w)}  {res}    {diff:9.2e}  {secs:5.1f}s")
    print(f"\n{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
