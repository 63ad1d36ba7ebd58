#!/usr/bin/env python3
"""Write the ONNX backend conformance suites in the ONNX test layout for `kiln conformance`.

node:   every case from onnx.backend.test.case.node.collect_testcases() (1,884 in onnx 1.23),
        as <out>/node/<case>/model.onnx + test_data_set_N/{input,output}_K.pb
simple, pytorch-converted, pytorch-operator, light: copied from the onnx package's
        onnx/backend/test/data folders.
The onnx version is pinned by the caller (README, .ci/run); the script records it in <out>/VERSION.
"""
import argparse
import os
import shutil
import sys
import warnings

import numpy as np
import onnx
from onnx import numpy_helper


def to_proto(value, name, type_proto):
    """A data-set value as the proto its graph input/output declares (tensor, sequence, optional)."""
    if isinstance(value, onnx.TensorProto):
        t = onnx.TensorProto()
        t.CopyFrom(value)
        t.name = name
        return t
    if type_proto is not None and type_proto.HasField("optional_type"):
        return numpy_helper.from_optional(value, name=name, dtype=None) if hasattr(numpy_helper, "from_optional") else None
    if isinstance(value, list) or (type_proto is not None and type_proto.HasField("sequence_type")):
        return numpy_helper.from_list(list(value), name=name)
    if isinstance(value, dict):
        return numpy_helper.from_dict(value, name=name)
    arr = np.asarray(value)
    elem = None
    if type_proto is not None and type_proto.HasField("tensor_type"):
        elem = type_proto.tensor_type.elem_type
    # custom low-precision element types are stored by numpy as raw integer views
    if elem in (onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ,
                onnx.TensorProto.FLOAT8E5M2, onnx.TensorProto.FLOAT8E5M2FNUZ, onnx.TensorProto.UINT4,
                onnx.TensorProto.INT4, onnx.TensorProto.FLOAT4E2M1) or getattr(onnx.TensorProto, "FLOAT8E8M0", -1) == elem:
        try:
            return numpy_helper.from_array(arr, name=name)
        except Exception:
            return onnx.helper.make_tensor(name, elem, arr.shape, arr.flatten().tolist())
    return numpy_helper.from_array(arr, name=name)


def write_node_cases(out_dir):
    from onnx.backend.test.case import node
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node.collect_testcases()
    n_written = 0
    for case in cases:
        d = os.path.join(out_dir, case.name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        g = case.model.graph
        init_names = {t.name for t in g.initializer}
        inputs = [i for i in g.input if i.name not in init_names]
        for k, (ins, outs) in enumerate(case.data_sets):
            ds = os.path.join(d, f"test_data_set_{k}")
            os.makedirs(ds, exist_ok=True)
            for j, v in enumerate(ins):
                tp = inputs[j].type if j < len(inputs) else None
                name = inputs[j].name if j < len(inputs) else f"input_{j}"
                p = to_proto(v, name, tp)
                if p is not None:
                    with open(os.path.join(ds, f"input_{j}.pb"), "wb") as f:
                        f.write(p.SerializeToString())
            for j, v in enumerate(outs):
                tp = g.output[j].type if j < len(g.output) else None
                name = g.output[j].name if j < len(g.output) else f"output_{j}"
                p = to_proto(v, name, tp)
                if p is not None:
                    with open(os.path.join(ds, f"output_{j}.pb"), "wb") as f:
                        f.write(p.SerializeToString())
        n_written += 1
    return n_written


def write_light_cases(src, out_dir):
    """The 'light' models ship only model + expected output; their input is the deterministic
    arange(n)/n tensor that onnx's own runner feeds them (float inputs, unknown dims as 1)."""
    n = 0
    for f in sorted(os.listdir(src)):
        if not f.endswith(".onnx"):
            continue
        stem = f[:-5]
        model = onnx.load(os.path.join(src, f))
        d = os.path.join(out_dir, stem)
        ds = os.path.join(d, "test_data_set_0")
        os.makedirs(ds, exist_ok=True)
        shutil.copy(os.path.join(src, f), os.path.join(d, "model.onnx"))
        inits = {i.name for i in model.graph.initializer}
        k = 0
        for x in model.graph.input:
            if x.name in inits:
                continue
            shape = tuple(dd.dim_value if dd.HasField("dim_value") else 1 for dd in x.type.tensor_type.shape.dim)
            cnt = int(np.prod(shape))
            arr = (np.arange(cnt).reshape(shape) / cnt).astype(np.float32)
            with open(os.path.join(ds, f"input_{k}.pb"), "wb") as fh:
                fh.write(numpy_helper.from_array(arr, x.name).SerializeToString())
            k += 1
        for i in range(len(model.graph.output)):
            o = os.path.join(src, f"{stem}_output_{i}.pb")
            if os.path.exists(o):
                shutil.copy(o, os.path.join(ds, f"output_{i}.pb"))
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "generated"))
    args = ap.parse_args()
    stamp = os.path.join(args.out, "VERSION")
    want = f"onnx {onnx.__version__}\n"
    if os.path.exists(stamp) and open(stamp).read() == want:
        print(f"conformance cases for {want.strip()} already in {args.out}")
        return 0
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    n = write_node_cases(os.path.join(args.out, "node"))
    data_root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    for suite in ("simple", "pytorch-converted", "pytorch-operator"):
        src = os.path.join(data_root, suite)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(args.out, suite))
    if os.path.isdir(os.path.join(data_root, "light")):
        write_light_cases(os.path.join(data_root, "light"), os.path.join(args.out, "light"))
    with open(stamp, "w") as f:
        f.write(want)
    print(f"wrote {n} node cases and the data suites to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
