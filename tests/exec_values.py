#!/usr/bin/env python3
"""`kiln exec` on the node conformance cases whose inputs or outputs are sequences or optionals:
every such case that `kiln conformance` passes in-process (tests/conformance/passing/node.txt)
must pass through the files too. kiln exec reads SequenceProto / OptionalProto inputs, writes
its outputs in the declared form, and this script compares them with the expected files using
onnx's own readers (the same tolerance as the conformance runner: rtol 1e-3, atol 1e-7, NaN =
NaN).

  exec_values.py --kiln build/kiln --dir build/conformance/node --passing tests/conformance/passing/node.txt
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper


def kind_of(tp):
    """'tensor', 'sequence' or 'optional' for a graph input/output type."""
    f = tp.WhichOneof("value")
    return {"tensor_type": "tensor", "sequence_type": "sequence", "optional_type": "optional"}.get(f, "other")


def read_value(path, kind):
    data = open(path, "rb").read()
    if kind == "sequence":
        sp = onnx.SequenceProto()
        sp.ParseFromString(data)
        return numpy_helper.to_list(sp)
    if kind == "optional":
        op = onnx.OptionalProto()
        op.ParseFromString(data)
        return numpy_helper.to_optional(op)
    tp = onnx.TensorProto()
    tp.ParseFromString(data)
    return numpy_helper.to_array(tp)


def same(a, b):
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.allclose(a, b, rtol=1e-3, atol=1e-7, equal_nan=True))
    return bool(np.array_equal(a, b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--passing", required=True)
    a = ap.parse_args()
    passing = {l.strip() for l in open(a.passing) if l.strip() and not l.startswith("#")}
    cases, failed = 0, []
    for name in sorted(os.listdir(a.dir)):
        model_path = os.path.join(a.dir, name, "model.onnx")
        if name not in passing or not os.path.exists(model_path):
            continue
        g = onnx.load(model_path, load_external_data=False).graph
        kinds_in = [kind_of(v.type) for v in g.input]
        kinds_out = [kind_of(v.type) for v in g.output]
        if all(k == "tensor" for k in kinds_in + kinds_out):
            continue
        for ds in sorted(d for d in os.listdir(os.path.join(a.dir, name)) if d.startswith("test_data_set")):
            cases += 1
            ds_path = os.path.join(a.dir, name, ds)
            with tempfile.TemporaryDirectory() as out:
                r = subprocess.run([a.kiln, "exec", model_path, "--inputs", ds_path, "--outputs", out],
                                   capture_output=True, text=True, timeout=120)
                ok = r.returncode == 0
                why = r.stderr.strip()
                for k, kind in enumerate(kinds_out):
                    want_path = os.path.join(ds_path, f"output_{k}.pb")
                    if not ok or not os.path.exists(want_path):
                        continue
                    got_path = os.path.join(out, f"output_{k}.pb")
                    if not os.path.exists(got_path):
                        ok, why = False, f"output_{k}.pb not written"
                    elif not same(read_value(got_path, kind), read_value(want_path, kind)):
                        ok, why = False, f"output {k} ({kind}) differs"
            print(f"{'PASS' if ok else 'FAIL'} {name}/{ds}" + ("" if ok else f": {why}"))
            if not ok:
                failed.append(f"{name}/{ds}")
    print(f"kiln exec on sequence/optional cases: {cases - len(failed)}/{cases} passed")
    if cases == 0:
        print("no sequence/optional case found: the suite was not generated?")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
