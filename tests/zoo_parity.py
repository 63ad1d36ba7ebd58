#!/usr/bin/env python3
"""Run every model of the shared zoo through `kiln exec` and compare with the stored ONNX Runtime
outputs (rtol/atol as given). Prints one line per (model, data set) and a final count line."""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper


def load(p):
    t = onnx.TensorProto()
    with open(p, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--zoo", required=True)
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--device", default="cpu", help="passed to kiln exec (cpu, cuda, cuda:N)")
    a = ap.parse_args()
    if not os.path.isdir(a.zoo):
        print(f"skipped: model zoo not found at {a.zoo}")
        print("0 passed, 0 failed, 1 skipped")
        return 0
    passed = failed = 0
    for model in sorted(os.listdir(a.zoo)):
        mdir = os.path.join(a.zoo, model)
        if not os.path.isfile(os.path.join(mdir, "model.onnx")):
            continue
        for ds in sorted(d for d in os.listdir(mdir) if d.startswith("test_data_set_")):
            ddir = os.path.join(mdir, ds)
            with tempfile.TemporaryDirectory() as out:
                p = subprocess.run([a.kiln, "exec", os.path.join(mdir, "model.onnx"), "--inputs", ddir, "--outputs", out, "--device", a.device],
                                   capture_output=True, text=True, timeout=600)
                if p.returncode != 0:
                    print(f"FAIL {model}/{ds}: kiln exec exit {p.returncode}: {p.stderr.strip()[:400]}")
                    failed += 1
                    continue
                ok, worst = True, 0.0
                k = 0
                while os.path.exists(os.path.join(ddir, f"output_{k}.pb")):
                    want = load(os.path.join(ddir, f"output_{k}.pb"))
                    gp = os.path.join(out, f"output_{k}.pb")
                    if not os.path.exists(gp):
                        ok = False
                        print(f"FAIL {model}/{ds}: output {k} missing")
                        break
                    got = load(gp)
                    if got.shape != want.shape or got.dtype != want.dtype:
                        ok = False
                        print(f"FAIL {model}/{ds}: output {k} is {got.dtype}{list(got.shape)}, expected {want.dtype}{list(want.shape)}")
                        break
                    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
                    worst = max(worst, float(diff.max()) if diff.size else 0.0)
                    if not np.allclose(got, want, rtol=a.rtol, atol=a.atol):
                        ok = False
                        print(f"FAIL {model}/{ds}: output {k} max abs diff {diff.max():.3g}")
                        break
                    k += 1
                if ok:
                    passed += 1
                    print(f"PASS {model}/{ds}: {k} outputs, max abs diff {worst:.3g}")
                else:
                    failed += 1
    print(f"{passed} passed, {failed} failed, 0 skipped")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
