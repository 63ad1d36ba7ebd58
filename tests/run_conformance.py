#!/usr/bin/env python3
"""Run `kiln conformance` on one suite and hold it to its recorded floor.

The floor file has lines "suite min_passed"; the test fails if fewer cases pass than the floor,
so a change that breaks a passing case shows up. The full kiln output is kept in --report.
"""
import argparse
import re
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--floors", required=True)
    ap.add_argument("--report", required=True)
    a = ap.parse_args()
    floors = {}
    for line in open(a.floors):
        parts = line.split("#")[0].split()
        if len(parts) == 2:
            floors[parts[0]] = int(parts[1])
    p = subprocess.run([a.kiln, "conformance", a.dir, "--timeout", "60"], capture_output=True, text=True)
    with open(a.report, "w") as f:
        f.write(p.stdout)
        f.write(p.stderr)
    tail = p.stdout.strip().splitlines()
    m = re.match(r"(\d+) passed, (\d+) failed, (\d+) skipped", tail[-1] if tail else "")
    if not m:
        print(p.stdout[-3000:], p.stderr[-3000:])
        print(f"conformance {a.suite}: no summary line from kiln (exit {p.returncode})")
        return 1
    passed, failed, skipped = map(int, m.groups())
    total = passed + failed + skipped
    floor = floors.get(a.suite, 0)
    summary = [l for l in tail if l.startswith("  ")][-40:]
    print("\n".join(summary))
    print(f"conformance {a.suite}: {passed}/{total} passed ({100.0 * passed / max(total, 1):.1f}%), floor {floor}; report in {a.report}")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    if passed < floor:
        print(f"REGRESSION: {a.suite} passed {passed} < floor {floor}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
