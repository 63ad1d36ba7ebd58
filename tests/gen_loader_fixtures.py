#!/usr/bin/env python3
"""Writes the small ONNX models and TensorProto files that tests/unit/test_loader.c loads.

Usage: gen_loader_fixtures.py OUTDIR

Good models exercise each loader feature (typed-field and raw initializers of every dtype,
external data, model-local functions, subgraphs capturing outer values, symbolic dims, sparse
initializers, attributes of every type); the bad_*.onnx models are each broken in one way the
loader must report as an error. The values here are mirrored by the assertions in the C test.
"""
import os
import sys

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto as T, helper, numpy_helper

OUT = sys.argv[1] if len(sys.argv) > 1 else "loader_fixtures"

# (name, dtype, dims, values) -- helper.make_tensor stores them in the typed fields.
DTYPES = [
    ("float", T.FLOAT, [3], [1.5, -2.25, 3.0]),
    ("uint8", T.UINT8, [3], [0, 255, 7]),
    ("int8", T.INT8, [3], [-128, 127, -1]),
    ("uint16", T.UINT16, [3], [0, 65535, 300]),
    ("int16", T.INT16, [3], [-32768, 32767, -2]),
    ("int32", T.INT32, [3], [-2147483648, 2147483647, 5]),
    ("int64", T.INT64, [3], [-(2**63), 2**63 - 1, 6]),
    ("string", T.STRING, [3], [b"a", b"", b"h\xc3\xa9llo"]),
    ("bool", T.BOOL, [3], [True, False, True]),
    ("float16", T.FLOAT16, [3], [1.0, -2.0, 0.5]),
    ("double", T.DOUBLE, [3], [1e300, -0.5, 2.0]),
    ("uint32", T.UINT32, [3], [0, 4294967295, 9]),
    ("uint64", T.UINT64, [3], [0, 2**64 - 1, 10]),
    ("complex64", T.COMPLEX64, [2], [1 + 2j, 3 - 4j]),
    ("complex128", T.COMPLEX128, [1], [1 + 2j]),
    ("bfloat16", T.BFLOAT16, [3], [1.0, -2.0, 0.5]),
    ("float8e4m3fn", T.FLOAT8E4M3FN, [3], [1.0, -2.0, 0.5]),
    ("float8e4m3fnuz", T.FLOAT8E4M3FNUZ, [3], [1.0, -2.0, 0.5]),
    ("float8e5m2", T.FLOAT8E5M2, [3], [1.0, -2.0, 0.5]),
    ("float8e5m2fnuz", T.FLOAT8E5M2FNUZ, [3], [1.0, -2.0, 0.5]),
    ("uint4", T.UINT4, [5], [0, 15, 7, 1, 9]),
    ("int4", T.INT4, [5], [-8, 7, -1, 0, 3]),
    ("float4e2m1", T.FLOAT4E2M1, [5], [1.0, -2.0, 0.5, 6.0, 0.0]),
    ("float8e8m0", T.FLOAT8E8M0, [3], [1.0, 2.0, 0.5]),
    ("uint2", T.UINT2, [5], [0, 1, 2, 3, 3]),
    ("int2", T.INT2, [5], [-2, -1, 0, 1, 1]),
    ("empty", T.FLOAT, [0, 4], []),
    ("scalar", T.INT64, [], [42]),
]


def save(model, name):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(model.SerializeToString())


def model_of(graph, opsets=(("", 17),), ir=8, functions=()):
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], functions=list(functions))
    m.ir_version = ir
    return m


def dtype_models():
    typed, raw = [], []
    for name, dt, dims, vals in DTYPES:
        t = helper.make_tensor("t_" + name, dt, dims, vals)
        typed.append(t)
        if dt == T.STRING:
            raw.append(t)  # strings always use string_data
            continue
        r = numpy_helper.from_array(numpy_helper.to_array(t), "t_" + name)
        assert r.HasField("raw_data") or not vals
        r.data_type = dt
        raw.append(r)
    for kind, inits in (("typed", typed), ("raw", raw)):
        outs = [helper.make_tensor_value_info(t.name, t.data_type, None) for t in inits]
        g = helper.make_graph([], "dtypes_" + kind, [], outs, initializer=inits)
        save(model_of(g, ir=11), kind + ".onnx")


def external_model():
    os.makedirs(os.path.join(OUT, "data"), exist_ok=True)
    blob = bytearray(160)
    w1 = np.arange(6, dtype=np.float32).reshape(2, 3) + 0.5
    w2 = np.array([10, -20, 30, -40], dtype=np.int64)
    w3 = np.array([1.0, -2.0, 0.5], dtype=np.float16)
    w4 = bytes([0x78, 0x0F])  # int4 [-8, 7, -1]
    blob[0:24] = w1.tobytes()
    blob[64:96] = w2.tobytes()
    blob[97:103] = w3.tobytes()  # odd offset: the loader copies instead of pointing
    blob[120:122] = w4
    with open(os.path.join(OUT, "data", "weights.bin"), "wb") as f:
        f.write(bytes(blob))

    def ext(name, dt, dims, off, length):
        t = T()
        t.name, t.data_type = name, dt
        t.dims.extend(dims)
        t.data_location = T.EXTERNAL
        for k, v in (("location", "data/weights.bin"), ("offset", str(off)), ("length", str(length))):
            e = t.external_data.add()
            e.key, e.value = k, v
        return t

    inits = [ext("W1", T.FLOAT, [2, 3], 0, 24), ext("W2", T.INT64, [4], 64, 32), ext("W3", T.FLOAT16, [3], 97, 6),
             ext("W4", T.INT4, [3], 120, 2)]
    x = helper.make_tensor_value_info("X", T.FLOAT, [2, 3])
    nodes = [helper.make_node("Add", ["X", "W1"], ["Y"], name="add_w1")]
    outs = [helper.make_tensor_value_info("Y", T.FLOAT, [2, 3])] + [
        helper.make_tensor_value_info(n, t.data_type, None) for n, t in (("W2", inits[1]), ("W3", inits[2]), ("W4", inits[3]))]
    save(model_of(helper.make_graph(nodes, "external", [x], outs, initializer=inits)), "external.onnx")
    return ext


def function_model():
    # AddScale(a, b; alpha=0.5) = (a + b) * alpha, alpha reaching a Constant through ref_attr_name.
    alpha_ref = helper.make_attribute_ref("value_float", AttributeProto.FLOAT)
    alpha_ref.ref_attr_name = "alpha"
    const = helper.make_node("Constant", [], ["s"])
    const.attribute.append(alpha_ref)
    add_scale = helper.make_function(
        "local", "AddScale", ["a", "b"], ["c"],
        [helper.make_node("Add", ["a", "b"], ["t"], name="sum"), const, helper.make_node("Mul", ["t", "s"], ["c"], name="scale")],
        [helper.make_opsetid("", 14)], attributes=[], attribute_protos=[helper.make_attribute("alpha", 0.5)])
    # Twice(x; beta) = AddScale(x, x; alpha=beta): a call inside a function, attribute passed on.
    call = helper.make_node("AddScale", ["x", "x"], ["y"], domain="local", name="inner")
    beta_ref = helper.make_attribute_ref("alpha", AttributeProto.FLOAT)
    beta_ref.ref_attr_name = "beta"
    call.attribute.append(beta_ref)
    twice = helper.make_function("local", "Twice", ["x"], ["y"], [call],
                                 [helper.make_opsetid("", 14), helper.make_opsetid("local", 1)], attributes=["beta"])
    X = helper.make_tensor_value_info("X", T.FLOAT, [2])
    Y = helper.make_tensor_value_info("Y", T.FLOAT, [2])
    nodes = [
        helper.make_node("AddScale", ["X", "Y"], ["Z1"], domain="local", name="call1", alpha=2.0),
        helper.make_node("AddScale", ["X", "Y"], ["Z2"], domain="local", name="call2"),
        helper.make_node("Twice", ["X"], ["Z3"], domain="local", name="call3", beta=3.0),
    ]
    outs = [helper.make_tensor_value_info(n, T.FLOAT, [2]) for n in ("Z1", "Z2", "Z3")]
    g = helper.make_graph(nodes, "functions", [X, Y], outs)
    save(model_of(g, opsets=(("", 17), ("local", 1)), functions=[add_scale, twice]), "function.onnx")

    # CondScale(c, a; alpha) = If(c, then: a * alpha, else: -a): the branches use the function's formal
    # input (renamed to the caller's name when captured) and its attribute (inside a subgraph).
    ref = helper.make_attribute_ref("value_float", AttributeProto.FLOAT)
    ref.ref_attr_name = "alpha"
    k = helper.make_node("Constant", [], ["k"], name="k")
    k.attribute.append(ref)
    then_g = helper.make_graph([k, helper.make_node("Mul", ["a", "k"], ["ta"], name="tmul")], "then", [],
                               [helper.make_tensor_value_info("ta", T.FLOAT, [2])])
    else_g = helper.make_graph([helper.make_node("Neg", ["a"], ["ea"], name="eneg")], "else", [],
                               [helper.make_tensor_value_info("ea", T.FLOAT, [2])])
    cond_scale = helper.make_function(
        "local", "CondScale", ["c", "a"], ["r"],
        [helper.make_node("If", ["c"], ["r"], name="pick", then_branch=then_g, else_branch=else_g)],
        [helper.make_opsetid("", 17)], attributes=["alpha"])
    C = helper.make_tensor_value_info("C", T.BOOL, [])
    g = helper.make_graph([helper.make_node("CondScale", ["C", "X"], ["Z"], domain="local", name="cs", alpha=4.0)], "fsub",
                          [C, X], [helper.make_tensor_value_info("Z", T.FLOAT, [2])])
    save(model_of(g, opsets=(("", 17), ("local", 1)), functions=[cond_scale]), "function_subgraph.onnx")

    # A function that calls itself must be refused, not expanded forever.
    rec = helper.make_function("local", "Rec", ["a"], ["b"], [helper.make_node("Rec", ["a"], ["b"], domain="local")],
                               [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    g = helper.make_graph([helper.make_node("Rec", ["X"], ["Z"], domain="local", name="rec_call")], "rec", [X],
                          [helper.make_tensor_value_info("Z", T.FLOAT, [2])])
    save(model_of(g, opsets=(("", 17), ("local", 1)), functions=[rec]), "bad_recursive_function.onnx")


def if_model():
    cond = helper.make_tensor_value_info("cond", T.BOOL, [])
    X = helper.make_tensor_value_info("X", T.FLOAT, [2])
    o = lambda n: helper.make_tensor_value_info(n, T.FLOAT, [2])
    inner_then = helper.make_graph([helper.make_node("Identity", ["V"], ["iv"])], "inner_then", [], [o("iv")])
    inner_else = helper.make_graph([helper.make_node("Neg", ["V"], ["iv2"])], "inner_else", [], [o("iv2")])
    then_g = helper.make_graph([
        helper.make_node("Mul", ["W", "X"], ["m"], name="then_mul"),
        helper.make_node("If", ["cond"], ["inner_out"], name="inner_if", then_branch=inner_then, else_branch=inner_else),
        helper.make_node("Add", ["m", "inner_out"], ["r_then"], name="then_add"),
    ], "then", [], [o("r_then")])
    else_g = helper.make_graph([], "else", [], [o("X")])  # returns an outer value directly
    nodes = [
        helper.make_node("Add", ["X", "X"], ["W"], name="mk_w"),
        helper.make_node("Neg", ["X"], ["V"], name="mk_v"),
        helper.make_node("If", ["cond"], ["R"], name="branch", then_branch=then_g, else_branch=else_g),
    ]
    save(model_of(helper.make_graph(nodes, "if_capture", [cond, X], [o("R")])), "if.onnx")


def symbolic_model():
    x = helper.make_tensor_value_info("x", T.FLOAT, ["batch", 3, "seq"])
    w = helper.make_tensor_value_info("w", T.FLOAT, [3, 1])
    winit = numpy_helper.from_array(np.array([[1.0], [2.0], [3.0]], dtype=np.float32), "w")
    y = helper.make_tensor_value_info("y", T.FLOAT, ["batch", 3, None])
    seq = helper.make_tensor_sequence_value_info("seq_out", T.FLOAT, None)
    opt = helper.make_value_info("opt_out", helper.make_optional_type_proto(helper.make_tensor_type_proto(T.FLOAT, ["batch", 3, "seq"])))
    custom = helper.make_node(
        "Foo", ["x"], ["foo_out", ""], domain="com.microsoft", name="custom",
        f=0.25, i=-3, s=b"text", t=numpy_helper.from_array(np.array([7, 8], dtype=np.int32), "tt"),
        floats=[1.0, 2.0], ints=[4, 5, 6], strings=[b"p", b"qq"],
        tensors=[numpy_helper.from_array(np.array([1.0], dtype=np.float64), "t0")],
        tp=helper.make_tensor_type_proto(T.INT64, [2]))
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["xw"], domain="ai.onnx", name="mul"),
        helper.make_node("Relu", ["xw"], ["y"], name="relu"),
        helper.make_node("Constant", [], ["shape_c"], name="const", value_ints=[1, 2, 3]),
        helper.make_node("SequenceConstruct", ["x"], ["seq_out"], name="seqc"),
        helper.make_node("Optional", ["x"], ["opt_out"], name="optn"),
        custom,
        helper.make_node("Reshape", ["x", "shape_c"], ["reshaped"], name="reshape"),
    ]
    sp = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([5.0, 6.0], dtype=np.float32), "sp"),
        numpy_helper.from_array(np.array([1, 4], dtype=np.int64), "sp_idx"), [2, 3])
    g = helper.make_graph(nodes, "symbolic", [x, w], [y, seq, opt,
                          helper.make_tensor_value_info("foo_out", T.FLOAT, None),
                          helper.make_tensor_value_info("reshaped", T.FLOAT, None)],
                          initializer=[winit], value_info=[helper.make_tensor_value_info("xw", T.FLOAT, ["batch", 3, "seq"])],
                          sparse_initializer=[sp])
    m = model_of(g, opsets=(("ai.onnx", 17), ("com.microsoft", 1)), ir=9)
    m.producer_name, m.producer_version, m.domain, m.model_version, m.doc_string = "kiln-tests", "1.2", "org.kiln", 7, "symbolic dims"
    save(m, "symbolic.onnx")


def bad_models(ext):
    X = helper.make_tensor_value_info("X", T.FLOAT, [2])
    Z = helper.make_tensor_value_info("Z", T.FLOAT, [2])

    def with_init(name, t):
        g = helper.make_graph([helper.make_node("Identity", [t.name], ["Z"], name="use")], name, [], [Z], initializer=[t])
        save(model_of(g), name + ".onnx")

    t = numpy_helper.from_array(np.zeros(3, dtype=np.float32), "short_w")
    t.ClearField("dims")
    t.dims.extend([2, 3])  # 12 bytes of raw_data for 6 floats
    with_init("bad_dims", t)
    t = helper.make_tensor("count_w", T.INT64, [4], [1, 2, 3, 4])
    del t.int64_data[-1]
    with_init("bad_typed_count", t)
    t = T()
    t.name, t.data_type = "huge_w", T.FLOAT
    t.dims.extend([1000000, 1000000])
    with_init("bad_huge", t)
    t = T()  # 4 GB claimed by dims, no data: must fail before allocating
    t.name, t.data_type = "claim_w", T.FLOAT
    t.dims.extend([1000000000])
    with_init("bad_claimed_typed", t)
    t = helper.make_tensor("neg_w", T.FLOAT, [2, 1], [1.0, 2.0])
    t.dims[0] = -2
    with_init("bad_negative_dim", t)
    t = helper.make_tensor("rank9_w", T.FLOAT, [1] * 9, [1.0])
    with_init("bad_rank9", t)
    t = helper.make_tensor("odd_w", T.FLOAT, [1], [1.0])
    t.data_type = 99
    with_init("bad_unknown_dtype", t)
    for name, loc in (("bad_ext_escape", "../escape.bin"), ("bad_ext_absolute", "/etc/hostname"),
                      ("bad_ext_escape2", "data/../../escape.bin")):
        t = ext("esc_w", T.FLOAT, [2], 0, 8)
        t.external_data[0].value = loc
        with_init(name, t)
    with_init("bad_ext_past_end", ext("far_w", T.FLOAT, [2], 4096, 8))
    t = ext("gone_w", T.FLOAT, [2], 0, 8)
    t.external_data[0].value = "data/not_there.bin"
    with_init("bad_ext_missing", t)
    open(os.path.join(OUT, "escape.bin"), "wb").write(bytes(8))

    g = helper.make_graph([helper.make_node("Add", ["X", "nope"], ["Z"], name="adder")], "missing", [X], [Z])
    save(model_of(g), "bad_missing_input.onnx")
    g = helper.make_graph([helper.make_node("Relu", ["X"], ["Z"], name="first"), helper.make_node("Neg", ["X"], ["Z"], name="second")],
                          "dup", [X], [Z])
    save(model_of(g), "bad_duplicate_output.onnx")
    g = helper.make_graph([helper.make_node("Relu", ["X"], ["Z"], name="r")], "new", [X], [Z])
    m = model_of(g)
    m.ir_version = 99
    save(m, "bad_ir_version.onnx")
    m = model_of(g, opsets=(("", 0),))
    save(m, "bad_opset.onnx")
    m = onnx.ModelProto()
    m.ir_version = 8
    save(m, "bad_no_graph.onnx")
    g = helper.make_graph([helper.make_node("Relu", ["X"], ["Z"], name="r")], "noout", [X], [helper.make_tensor_value_info("ghost", T.FLOAT, [2])])
    save(model_of(g), "bad_undefined_output.onnx")


def lstm_model():
    """An LSTM (attributes its shape rule reads: hidden_size, direction) for the raw-load test."""
    x = helper.make_tensor_value_info("X", T.FLOAT, [5, 2, 3])
    y = helper.make_tensor_value_info("Y", T.FLOAT, None)
    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.standard_normal((1, 16, 3)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.standard_normal((1, 16, 4)).astype(np.float32), "R")
    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], name="lstm0", hidden_size=4)
    save(model_of(helper.make_graph([node], "lstm", [x], [y], initializer=[w, r])), "lstm.onnx")


def tensor_files():
    t = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "input_x")
    open(os.path.join(OUT, "tensor_f32.pb"), "wb").write(t.SerializeToString())
    t = helper.make_tensor("words", T.STRING, [2], [b"kiln", b"onnx"])
    open(os.path.join(OUT, "tensor_str.pb"), "wb").write(t.SerializeToString())
    t = helper.make_tensor("nibbles", T.INT4, [5], [-8, 7, -1, 0, 3])
    open(os.path.join(OUT, "tensor_i4.pb"), "wb").write(t.SerializeToString())


def main():
    os.makedirs(OUT, exist_ok=True)
    dtype_models()
    ext = external_model()
    function_model()
    if_model()
    symbolic_model()
    bad_models(ext)
    lstm_model()
    tensor_files()


if __name__ == "__main__":
    main()
