#!/usr/bin/env python3
"""Smoke test of the benchmark tooling (tools/bench/compare.py and kiln bench): on bert-tiny,
batch 1,2, seq 16, it must print the table, write the CSV, JSON and (with matplotlib) PNG, and
find the outputs of every system in agreement. Nothing here judges a timing.

Also: without PyTorch (hidden by a stand-in module that fails to import) the PyTorch columns are
skipped with a visible note, and an impossible tolerance (--atol 0) stops the run before timing.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
COMPARE = os.path.join(ROOT, "tools", "bench", "compare.py")
failures = []


def check(cond, msg):
    print(("ok    " if cond else "FAIL  ") + msg, flush=True)
    if not cond:
        failures.append(msg)


def compare(kiln, out, extra, env=None):
    cmd = [sys.executable, COMPARE, "--kiln", kiln, "--models", "bert-tiny", "--batch", "1,2", "--seq", "16", "--iters", "3",
           "--rounds", "1", "--warmup", "1", "--gap", "0", "--threads", "2", "--out", out] + extra
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    print(f"$ {' '.join(cmd[1:])}\n{p.stdout}{p.stderr[-3000:]}", flush=True)
    return p


def has_module(name):
    try:
        __import__(name)
        return True
    except Exception:
        return False


def check_outputs(p, out, want_systems, label):
    check(p.returncode == 0, f"{label}: compare.py exits 0 (got {p.returncode})")
    check("max|diff|" in p.stdout and "vs kiln" in p.stdout, f"{label}: the table is printed")
    for b in (1, 2):
        for s in want_systems:
            name = {"kiln": "kiln", "ort": "ONNX Runtime", "torch": "PyTorch eager", "torch-compile": "torch.compile"}[s]
            check(any(l.split()[:3] == ["bert-tiny", str(b), "16"] and name in l for l in p.stdout.splitlines()),
                  f"{label}: table row for {name} at batch {b}")
    csv_path, json_path = os.path.join(out, "compare.csv"), os.path.join(out, "compare.json")
    check(os.path.exists(csv_path), f"{label}: compare.csv written")
    check(os.path.exists(json_path), f"{label}: compare.json written")
    check(os.path.exists(os.path.join(out, "table.md")), f"{label}: table.md written")
    if os.path.exists(csv_path):
        rows = list(csv.DictReader(open(csv_path)))
        got = sorted((r["system"], r["batch"]) for r in rows)
        check(got == sorted((s, str(b)) for s in want_systems for b in (1, 2)), f"{label}: CSV has one row per system and batch: {got}")
        check(all(float(r["p50_ms"]) > 0 and float(r["items_per_s"]) > 0 for r in rows), f"{label}: CSV latencies and throughputs are positive")
    if os.path.exists(json_path):
        j = json.load(open(json_path))
        par = j.get("parity", [])
        check(len(par) == (len(want_systems) - 1) * 2, f"{label}: parity checked for every other system at each point ({len(par)})")
        check(all(x["ok"] and x["max_abs_diff"] <= x["atol"] for x in par), f"{label}: every system's outputs agree with kiln's")
        k = [r for r in j.get("rows", []) if r["system"] == "kiln"]
        check(bool(k) and all(r["peak_arena_bytes"] and r["peak_host_rss_bytes"] for r in k), f"{label}: kiln rows carry peak arena and RSS bytes")
        check(all(r["n_runs"] == 3 for r in j.get("rows", [])), f"{label}: every system timed --rounds x --iters runs")
    png = os.path.join(out, "compare.png")
    if has_module("matplotlib"):
        ok = os.path.exists(png) and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        check(ok, f"{label}: compare.png written (matplotlib installed)")
    else:
        check("matplotlib not installed" in p.stdout, f"{label}: a note says there is no plot without matplotlib")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--out", help="keep the results here (default: a temporary folder)")
    a = ap.parse_args()
    base = a.out or tempfile.mkdtemp(prefix="kiln-bench-smoke-")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)

    # 1. every system this machine has
    torch_ok = has_module("torch") and has_module("transformers")
    want = ["kiln", "ort"] + (["torch", "torch-compile"] if torch_ok else [])
    p = compare(a.kiln, os.path.join(base, "all"), [])
    check_outputs(p, os.path.join(base, "all"), want, "all systems")
    if not torch_ok:
        check("PyTorch/transformers not installed" in p.stdout, "all systems: a note says the PyTorch columns are skipped")

    # 2. as on a machine without PyTorch: a stand-in 'torch' package that fails to import
    hide = os.path.join(base, "no_torch")
    os.makedirs(os.path.join(hide, "torch"))
    with open(os.path.join(hide, "torch", "__init__.py"), "w") as f:
        f.write("raise ImportError('hidden by tests/bench_smoke.py')\n")
    env = dict(os.environ, PYTHONPATH=hide + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = compare(a.kiln, os.path.join(base, "without_torch"), [], env=env)
    check_outputs(p, os.path.join(base, "without_torch"), ["kiln", "ort"], "without torch")
    check("PyTorch/transformers not installed" in p.stdout, "without torch: a note says the PyTorch columns are skipped")

    # 3. outputs that disagree (no tolerance at all) stop the run loudly, before any timing
    out3 = os.path.join(base, "strict")
    p = compare(a.kiln, out3, ["--systems", "kiln,ort", "--atol", "0"])
    par = json.load(open(os.path.join(out3, "compare.json"))).get("parity", []) if os.path.exists(os.path.join(out3, "compare.json")) else []
    if par and all(x["max_abs_diff"] == 0 for x in par):
        print("note: kiln and ONNX Runtime agree bit for bit here, so --atol 0 cannot fail")
    else:
        check(p.returncode == 1 and "OUTPUTS DISAGREE" in p.stderr, "--atol 0: the run stops with OUTPUTS DISAGREE")
        check(not os.path.exists(os.path.join(out3, "compare.csv")), "--atol 0: no timings written")

    n_fail = len(failures)
    print(f"bench smoke: {n_fail} check(s) failed" if n_fail else "bench smoke: all checks passed")
    if not a.out:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
