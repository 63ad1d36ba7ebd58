#!/usr/bin/env python3
"""Run `kiln conformance` on one suite and hold it to its record in tests/conformance/.

  floors.txt          lines "suite min_passed": fewer passing cases is a regression;
  passing/SUITE.txt   the cases that passed when the floor was last raised: any of them failing
                      is a regression, and kiln names each one;
  undefined.txt       cases whose expected output the ONNX spec leaves undefined, each with the
                      spec's sentence: run and shown as UNDEF, counted neither way.
The full kiln output is kept in --report. --update rewrites passing/SUITE.txt and the suite's
floor from this run (a deliberate step, after a change that makes more cases pass).
"""
import argparse
import os
import re
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--record", required=True, help="tests/conformance")
    ap.add_argument("--report", required=True)
    ap.add_argument("--update", action="store_true")
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    floors_path = os.path.join(a.record, "floors.txt")
    passing = os.path.join(a.record, "passing", f"{a.suite}.txt")
    floors = {}
    for line in open(floors_path):
        parts = line.split("#")[0].split()
        if len(parts) == 2:
            floors[parts[0]] = int(parts[1])
    floor = floors.get(a.suite, 0)
    cmd = [a.kiln, "conformance", a.dir, "--timeout", "60", "--undefined", os.path.join(a.record, "undefined.txt")]
    if a.device:
        cmd += ["--device", a.device]
    if a.update:
        os.makedirs(os.path.dirname(passing), exist_ok=True)
        cmd += ["--write-baseline", passing]
    else:
        cmd += ["--floor", str(floor)]
        if os.path.exists(passing):
            cmd += ["--baseline", passing]
    p = subprocess.run(cmd, capture_output=True, text=True)
    with open(a.report, "w") as f:
        f.write(p.stdout)
        f.write(p.stderr)
    lines = p.stdout.strip().splitlines()
    m = re.match(r"(\d+) passed, (\d+) failed, (\d+) skipped", lines[-1] if lines else "")
    if not m:
        print(p.stdout[-3000:], p.stderr[-3000:])
        print(f"conformance {a.suite}: no summary line from kiln (exit {p.returncode})")
        return 1
    passed, failed, skipped = map(int, m.groups())
    total = passed + failed + skipped
    print("\n".join([l for l in lines if l.startswith("  ")][-40:]))
    for l in lines:
        if l.startswith(("UNDEF ", "REGRESSION")) or "undefined (the spec" in l or "raise the floor" in l:
            print(l)
    print(f"conformance {a.suite}: {passed}/{total} counted cases passed ({100.0 * passed / max(total, 1):.1f}%), "
          f"floor {floor}; report in {a.report}")
    if a.update:
        if p.returncode == 2 or not os.path.exists(passing):
            print(p.stderr)
            return 1
        text = open(floors_path).read()
        text = re.sub(rf"^{re.escape(a.suite)}\s+\d+", f"{a.suite} {passed}", text, flags=re.M)
        open(floors_path, "w").write(text)
        print(f"recorded: floor {a.suite} {passed}, {passing}")
        return 0
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if "REGRESSION" in p.stdout else 0


if __name__ == "__main__":
    sys.exit(main())
