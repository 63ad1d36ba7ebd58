#!/usr/bin/env python3
"""Parity of kiln's com.microsoft contrib ops (Gelu, FastGelu, BiasGelu, GemmFastGelu, FusedGemm, SkipLayerNormalization,
EmbedLayerNormalization, DynamicQuantizeLSTM, Attention, MultiHeadAttention) against ONNX Runtime's CPU implementation.

Each case is a one-node model built with onnx.helper; ORT runs it in-process and kiln runs it via
`kiln exec MODEL --inputs DIR --outputs DIR` on the same inputs (written as input_K.pb in an ONNX
test-data folder). Every output is compared with rtol 1e-4, atol 1e-5. ONNX Runtime's CPU has no
GemmFastGelu kernel, so its reference is the MatMul + FastGelu pair it fuses, run by ONNX Runtime.

Usage: KILN=path/to/kiln python3 tests/contrib_parity.py [--kiln PATH] [-k SUBSTRING] [-v] [--device cuda --require-device OPS]
Prints "N passed, N failed, 0 skipped" last and exits non-zero on any failure.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

RTOL, ATOL = 1e-4, 1e-5
NP2ONNX = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16, np.int32: TensorProto.INT32,
           np.int64: TensorProto.INT64, np.int8: TensorProto.INT8, np.uint8: TensorProto.UINT8}


def make_model(op, inputs, outputs, attrs):
    """inputs: list of (name, array) or None for an omitted optional input; outputs: list of
    output names ("" for an omitted optional output)."""
    node = helper.make_node(op, [n if a is not None else "" for n, a in inputs] if inputs else [],
                            outputs, domain="com.microsoft", **attrs)
    g_in = [helper.make_tensor_value_info(n, NP2ONNX[a.dtype.type], list(a.shape)) for n, a in inputs if a is not None]
    # outputs carry the first input's float type (mean / inv_std_var of SkipLayerNormalization are
    # always float32)
    # (EmbedLayerNormalization's first input is int32 ids: its outputs follow the first float input, and
    # mask_index is int32)
    t0 = next(NP2ONNX[a.dtype.type] for _, a in inputs if a is not None and a.dtype.kind == "f")
    fixed = {"mean": TensorProto.FLOAT, "inv_std_var": TensorProto.FLOAT, "mask_index": TensorProto.INT32}
    g_out = [helper.make_tensor_value_info(o, fixed.get(o, t0), None) for o in outputs if o]
    graph = helper.make_graph([node], "contrib_" + op, g_in, g_out)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model


def ort_model(op, inputs, outputs, attrs):
    """The model ONNX Runtime runs as the reference: the node itself, or for GemmFastGelu (no CPU
    kernel in ONNX Runtime) the MatMul + FastGelu it stands for."""
    model = make_model(op, inputs, outputs, attrs)
    if op != "GemmFastGelu":
        return model
    g = model.graph
    node = g.node[0]
    mm = helper.make_node("MatMul", list(node.input[:2]), ["mm_out"])
    fg = helper.make_node("FastGelu", ["mm_out"] + list(node.input[2:3]), list(node.output), domain="com.microsoft")
    del g.node[:]
    g.node.extend([mm, fg])
    return model


def run_kiln(kiln, model, feeds, n_out, tmp, extra_args=(), log=None):
    """`kiln exec` on the model and feeds; its outputs as arrays. log: a list kiln's stderr is
    appended to (the device backend's fallback notices)."""
    mpath = os.path.join(tmp, "model.onnx")
    onnx.save(model, mpath)
    idir, odir = os.path.join(tmp, "in"), os.path.join(tmp, "out")
    os.makedirs(idir, exist_ok=True)
    os.makedirs(odir, exist_ok=True)
    for i, (name, arr) in enumerate(feeds):
        with open(os.path.join(idir, f"input_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(arr, name).SerializeToString())
    r = subprocess.run([kiln, "exec", mpath, "--inputs", idir, "--outputs", odir, *extra_args], capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"kiln exec failed (rc {r.returncode}): {r.stderr.strip()[-800:]}")
    if log is not None:
        log.append(r.stderr)
    outs = []
    for i in range(n_out):
        t = TensorProto()
        with open(os.path.join(odir, f"output_{i}.pb"), "rb") as f:
            t.ParseFromString(f.read())
        outs.append(numpy_helper.to_array(t))
    return outs


def device_fallback(logs, ops):
    """The ops of `ops` that a device backend reported running on the CPU ("has no kernel for OP ")."""
    return sorted({op for op in ops for text in logs if f"has no kernel for {op} " in text})


def compare(ref, got):
    if ref.shape != got.shape or ref.dtype != got.dtype:
        return f"{got.dtype}{list(got.shape)} != ORT {ref.dtype}{list(ref.shape)}"
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    # float16 results are one rounding of a float32 value on both sides, but the float32 values
    # differ in the last bits, so allow one float16 step (2^-10 relative) there
    rtol, atol = (RTOL, ATOL) if ref.dtype != np.float16 else (2e-3, 1e-3)
    if not np.allclose(got64, ref64, rtol=rtol, atol=atol, equal_nan=True):
        err = np.abs(got64 - ref64)
        i = np.unravel_index(np.argmax(err - rtol * np.abs(ref64)), err.shape)
        return f"max abs err {err.max():.3g} (at {i}: kiln {got64[i]!r}, ORT {ref64[i]!r})"
    return None


# ---------------------------------------------------------------- cases

def cases():
    rng = np.random.default_rng(1234)

    def f32(*shape, s=1.0):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    out = []

    def add(name, op, inputs, outputs, **attrs):
        out.append((name, op, inputs, outputs, attrs))

    # -- Gelu family: wide range so both tails and the middle are exercised
    for shape in [(2, 3, 8), (17,), (4, 33)]:
        add(f"gelu_{'x'.join(map(str, shape))}", "Gelu", [("X", f32(*shape, s=3.0))], ["Y"])
    for shape in [(2, 3, 8), (5, 16)]:
        x = f32(*shape, s=3.0)
        add(f"fastgelu_{'x'.join(map(str, shape))}", "FastGelu", [("X", x)], ["Y"])
        add(f"fastgelu_bias_{'x'.join(map(str, shape))}", "FastGelu", [("X", x), ("bias", f32(shape[-1]))], ["Y"])
        add(f"biasgelu_{'x'.join(map(str, shape))}", "BiasGelu", [("A", x), ("B", f32(shape[-1]))], ["C"])

    for op, ins in [("Gelu", [("X", f32(3, 16, s=3.0).astype(np.float16))]),
                    ("FastGelu", [("X", f32(3, 16, s=3.0).astype(np.float16)), ("bias", f32(16).astype(np.float16))]),
                    ("BiasGelu", [("A", f32(3, 16, s=3.0).astype(np.float16)), ("B", f32(16).astype(np.float16))])]:
        add(f"{op.lower()}_fp16", op, ins, ["Y"])
    add("gelu_big", "Gelu", [("X", f32(64, 257, s=4.0))], ["Y"])
    # GemmFastGelu: X [.., K] x W [K, N] (+ bias [N])
    for xs, (K, N) in [((2, 5, 16), (16, 24)), ((7, 8), (8, 3)), ((2, 2, 3, 12), (12, 40))]:
        tag = "x".join(map(str, xs)) + f"_{N}"
        add(f"gemmfastgelu_bias_{tag}", "GemmFastGelu", [("X", f32(*xs)), ("W", f32(K, N, s=0.5)), ("bias", f32(N))],
            ["Y"])
        add(f"gemmfastgelu_{tag}", "GemmFastGelu", [("X", f32(*xs)), ("W", f32(K, N, s=0.5))], ["Y"])

    # FusedGemm: act(alpha op(A) op(B) + beta C), every activation ONNX Runtime's CPU kernel takes,
    # transA/transB, alpha/beta, and C as [N], [1, N], [M, 1], [M, N], a scalar, or absent
    fg_acts = [("Relu", {}), ("LeakyRelu", {"activation_alpha": 0.2}), ("Sigmoid", {}), ("Tanh", {}),
               ("HardSigmoid", {"activation_alpha": 0.3, "activation_beta": 0.4}), ("Elu", {"activation_alpha": 0.7}),
               ("Selu", {"activation_alpha": 1.5, "activation_gamma": 2.0}), ("Celu", {"activation_alpha": 0.6}),
               ("Softplus", {}), ("Softsign", {}), ("ThresholdedRelu", {"activation_alpha": 0.3}),
               ("ParametricSoftplus", {"activation_alpha": 0.5, "activation_beta": 1.5}),
               ("ScaledTanh", {"activation_alpha": 0.8, "activation_beta": 1.3})]
    c_forms = [("row", lambda M, N: (N,)), ("row2", lambda M, N: (1, N)), ("col", lambda M, N: (M, 1)),
               ("full", lambda M, N: (M, N)), ("scalar", lambda M, N: ()), ("none", None)]
    for i, (act, extra) in enumerate(fg_acts):
        M, K, N = [(4, 8, 6), (7, 16, 3), (1, 5, 9), (12, 33, 17)][i % 4]
        ta, tb = i % 2, (i // 2) % 2
        cname, cshape = c_forms[i % len(c_forms)]
        ins = [("A", f32(*((K, M) if ta else (M, K)))), ("B", f32(*((N, K) if tb else (K, N)), s=0.5))]
        if cshape:
            ins.append(("C", np.asarray(f32(*cshape(M, N)), dtype=np.float32)))
        attrs = dict(activation=act, transA=ta, transB=tb, **extra)
        if i % 3 == 1:
            attrs.update(alpha=0.5, beta=2.0)
        add(f"fusedgemm_{act.lower()}_t{ta}{tb}_{cname}", "FusedGemm", ins, ["Y"], **attrs)
    add("fusedgemm_relu_big", "FusedGemm", [("A", f32(64, 96)), ("B", f32(96, 130, s=0.2)), ("C", f32(130))], ["Y"],
        activation="Relu")

    # -- SkipLayerNormalization
    for (B, S, H) in [(2, 3, 8), (1, 5, 32), (3, 1, 7)]:
        x, sk = f32(B, S, H, s=2.0), f32(B, S, H)
        g, b, bias = f32(H), f32(H), f32(H)
        tag = f"{B}x{S}x{H}"
        add(f"sln_plain_{tag}", "SkipLayerNormalization", [("input", x), ("skip", sk), ("gamma", g)], ["out"])
        add(f"sln_beta_{tag}", "SkipLayerNormalization", [("input", x), ("skip", sk), ("gamma", g), ("beta", b)],
            ["out"], epsilon=1e-5)
        add(f"sln_bias_sum_{tag}", "SkipLayerNormalization",
            [("input", x), ("skip", sk), ("gamma", g), ("beta", b), ("bias", bias)], ["out", "", "", "sum"],
            epsilon=1e-6)
        add(f"sln_nobeta_bias_{tag}", "SkipLayerNormalization",
            [("input", x), ("skip", sk), ("gamma", g), ("beta", None), ("bias", bias)], ["out"])
    x, g, b = f32(2, 4, 16), f32(16), f32(16)
    add("sln_skip_broadcast_1SH", "SkipLayerNormalization",
        [("input", x), ("skip", f32(1, 4, 16)), ("gamma", g), ("beta", b)], ["out"])
    add("sln_skip_broadcast_SH", "SkipLayerNormalization",
        [("input", x), ("skip", f32(4, 16)), ("gamma", g), ("beta", b)], ["out"])
    add("sln_all_outputs", "SkipLayerNormalization",
        [("input", x), ("skip", f32(2, 4, 16)), ("gamma", g), ("beta", b), ("bias", f32(16))],
        ["out", "mean", "inv_std_var", "sum"], epsilon=1e-5)
    add("sln_fp16", "SkipLayerNormalization",
        [("input", x.astype(np.float16)), ("skip", f32(2, 4, 16).astype(np.float16)), ("gamma", g.astype(np.float16)),
         ("beta", b.astype(np.float16))], ["out", "", "", "sum"])
    add("sln_large_rows", "SkipLayerNormalization", [("input", f32(4, 64, 96, s=3.0) + 5.0), ("skip", f32(4, 64, 96)),
                                                      ("gamma", f32(96)), ("beta", f32(96))], ["out"], epsilon=1e-5)
    add("sln_2d_input", "SkipLayerNormalization", [("input", f32(6, 16)), ("skip", f32(6, 16)), ("gamma", g), ("beta", b)],
        ["out"])

    # -- EmbedLayerNormalization: every optional input and output present and absent
    def eln(name, B, S, H, V=30, P=16, G=2, seg=True, segemb=True, mask=None, pos=None, outs=("out",),
            dt=np.float32, **attrs):
        i32 = lambda hi, *sh: rng.integers(0, hi, sh).astype(np.int32)
        ins = [("input_ids", i32(V, B, S)), ("segment_ids", i32(G, B, S) if seg else None),
               ("word_embedding", f32(V, H).astype(dt)), ("position_embedding", f32(P, H).astype(dt)),
               ("segment_embedding", f32(G, H).astype(dt) if segemb else None), ("gamma", f32(H).astype(dt)),
               ("beta", f32(H).astype(dt)), ("mask", mask), ("position_ids", pos)]
        while ins[-1][1] is None:
            ins.pop()
        add(name, "EmbedLayerNormalization", ins, list(outs), **attrs)

    m = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], np.int32)
    eln("eln_bert", 3, 5, 16, mask=m, outs=("out", "mask_index"))
    eln("eln_all_outputs", 3, 5, 16, mask=m, outs=("out", "mask_index", "sum"), epsilon=1e-5)
    eln("eln_no_mask_index_zero", 2, 4, 8, outs=("out", "mask_index"))
    eln("eln_distilbert_no_segment", 2, 7, 32, seg=False, segemb=False, mask=np.ones((2, 7), np.int32),
        outs=("out", "mask_index"))
    eln("eln_sum_only", 2, 3, 8, seg=False, segemb=False, outs=("out", "", "sum"))
    eln("eln_mask_not_01", 2, 4, 8, mask=np.array([[1, 2, 1, 0], [3, 1, 1, 1]], np.int32), outs=("out", "mask_index"))
    eln("eln_mask_index_type0", 2, 4, 8, mask=np.array([[1, 1, 0, 0], [1, 1, 1, 1]], np.int32),
        outs=("out", "mask_index"), mask_index_type=0)
    eln("eln_position_ids_batch", 2, 6, 16, P=10, mask=np.ones((2, 6), np.int32),
        pos=rng.integers(0, 10, (2, 6)).astype(np.int32), outs=("out", "mask_index", "sum"))
    eln("eln_position_ids_bcast", 3, 6, 16, P=8, mask=np.ones((3, 6), np.int32),
        pos=(np.arange(6)[None, :] + 2).astype(np.int32), outs=("out", "mask_index"))
    eln("eln_roberta_pos_no_mask", 2, 5, 8, P=12, seg=False, segemb=False,
        pos=np.array([[2, 3, 4, 5, 6], [2, 3, 4, 1, 1]], np.int32), outs=("out", "mask_index"))
    eln("eln_segtable_no_ids", 2, 4, 8, seg=False, segemb=True, outs=("out", "mask_index"))
    eln("eln_wide_rows", 2, 9, 96, V=50, P=9, mask=np.ones((2, 9), np.int32), outs=("out", "mask_index"),
        epsilon=1e-12)
    eln("eln_fp16", 2, 4, 16, dt=np.float16, mask=m[:2, :4], outs=("out", "mask_index", "sum"))

    # -- DynamicQuantizeLSTM: int8 / uint8 weights [dirs, K, 4H], per-tensor or per-column scales (ORT
    # reads one zero point per matrix, so per-column zero points are equal here)
    def dqlstm(name, S, B, I, H, direction="forward", wdt=np.int8, per_col=False, zp=0, bias=True, lens=None,
               init=False, peep=False, outs=("Y", "Y_h", "Y_c"), **attrs):
        D = 2 if direction == "bidirectional" else 1

        def quant(K):
            w = f32(D, K, 4 * H, s=0.4)
            amax = np.abs(w).max(axis=1) if per_col else np.abs(w).max(axis=(1, 2))  # [D, 4H] or [D]
            scale = (amax / 127.0).astype(np.float32)
            sc = scale[:, None, :] if per_col else scale[:, None, None]
            q = np.clip(np.round(w / sc) + zp, -128 if wdt == np.int8 else 0, 127 if wdt == np.int8 else 255)
            return q.astype(wdt), scale, np.full(scale.shape, zp, wdt)

        W, ws, wz = quant(I)
        R, rs, rz = quant(H)
        ins = [("X", f32(S, B, I, s=1.5)), ("W", W), ("R", R), ("B", f32(D, 8 * H, s=0.2) if bias else None),
               ("sequence_lens", None if lens is None else np.array(lens, np.int32)),
               ("initial_h", f32(D, B, H) if init else None), ("initial_c", f32(D, B, H) if init else None),
               ("P", f32(D, 3 * H, s=0.3) if peep else None), ("W_scale", ws), ("W_zero_point", wz),
               ("R_scale", rs), ("R_zero_point", rz)]
        add(name, "DynamicQuantizeLSTM", ins, list(outs), hidden_size=H, direction=direction, **attrs)

    dqlstm("dqlstm_basic", 5, 2, 6, 4)
    dqlstm("dqlstm_per_channel", 5, 3, 8, 6, per_col=True)
    dqlstm("dqlstm_uint8_zp", 4, 2, 6, 5, wdt=np.uint8, zp=128)
    dqlstm("dqlstm_uint8_per_channel", 4, 2, 6, 5, wdt=np.uint8, zp=120, per_col=True)
    dqlstm("dqlstm_no_bias_init", 3, 2, 5, 4, bias=False, init=True)
    dqlstm("dqlstm_reverse_lens", 6, 3, 4, 5, direction="reverse", lens=[6, 3, 1], init=True)
    dqlstm("dqlstm_bidir_lens", 6, 3, 4, 5, direction="bidirectional", lens=[2, 6, 4], init=True, per_col=True)
    dqlstm("dqlstm_lens_no_Y", 5, 3, 4, 4, lens=[5, 2, 3], init=True, outs=("", "Y_h", "Y_c"))
    dqlstm("dqlstm_bidir_lens_no_Y", 5, 3, 4, 4, direction="bidirectional", lens=[1, 5, 3], init=True,
           outs=("", "Y_h", "Y_c"))
    dqlstm("dqlstm_peephole_clip", 5, 2, 4, 4, peep=True, clip=1.5, init=True)
    dqlstm("dqlstm_input_forget", 4, 2, 4, 4, input_forget=1)
    dqlstm("dqlstm_activations", 4, 2, 4, 4, activations=["HardSigmoid", "Tanh", "Tanh"])
    dqlstm("dqlstm_larger", 12, 4, 40, 32, direction="bidirectional", per_col=True)

    # -- Attention (fused QKV projection)
    def attn(name, B, S, D, N, hidden=None, qkv=None, bias=True, mask=None, past=None, abias=None, present=False, **attrs):
        hidden = hidden or D
        tot = sum(qkv) if qkv else 3 * hidden
        ins = [("input", f32(B, S, D)), ("weights", f32(D, tot, s=0.3)), ("bias", f32(tot, s=0.1) if bias else None)]
        ins.append(("mask_index", mask))
        ins.append(("past", past))
        ins.append(("attention_bias", abias))
        while ins and ins[-1][1] is None:
            ins.pop()
        if qkv:
            attrs["qkv_hidden_sizes"] = list(qkv)
        add(name, "Attention", ins, ["output", "present"] if present else ["output"], num_heads=N, **attrs)

    attn("attn_basic", 2, 4, 8, 2)
    attn("attn_one_head_nobias", 1, 3, 6, 1, bias=False)
    attn("attn_heads4_seq7", 2, 7, 16, 4)
    attn("attn_scale", 2, 4, 8, 2, scale=0.3)
    attn("attn_unidirectional", 2, 5, 8, 2, unidirectional=1)
    m2 = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)
    attn("attn_mask2d", 2, 5, 8, 2, mask=m2)
    attn("attn_mask2d_filter", 2, 5, 8, 2, mask=m2, mask_filter_value=-1e4 * 3)
    attn("attn_mask2d_causal", 2, 5, 8, 2, mask=m2, unidirectional=1)
    attn("attn_mask1d_end", 2, 5, 8, 2, mask=np.array([3, 5], np.int32))
    attn("attn_mask1d_end_start", 2, 5, 8, 2, mask=np.array([4, 5, 1, 2], np.int32))
    m3 = (rng.random((2, 4, 4)) > 0.3).astype(np.int32)
    m3[:, :, 0] = 1
    attn("attn_mask3d", 2, 4, 8, 2, mask=m3)
    m_full = np.array([[0, 0, 0, 0], [1, 0, 1, 1]], np.int32)  # batch 0 has every key masked
    attn("attn_mask2d_fully_masked", 2, 4, 8, 2, mask=m_full)
    attn("attn_bert_size", 2, 32, 64, 4, mask=(np.arange(32)[None, :] < np.array([[20], [32]])).astype(np.int32))
    h16 = lambda *sh, s=1.0: f32(*sh, s=s).astype(np.float16)
    add("attn_fp16", "Attention", [("input", h16(2, 4, 8)), ("weights", h16(8, 24, s=0.3)), ("bias", h16(24, s=0.1)),
                                   ("mask_index", m_full)], ["output"], num_heads=2, unidirectional=1)
    add("mha_fp16", "MultiHeadAttention", [("query", h16(2, 3, 8)), ("key", h16(2, 4, 8)), ("value", h16(2, 4, 8)),
                                           ("bias", h16(24, s=0.2)), ("key_padding_mask", np.array([[1, 1, 0, 0], [1] * 4], np.int32))],
        ["output"], num_heads=2)
    attn("attn_qkv_sizes", 2, 4, 8, 2, qkv=(8, 8, 12))
    attn("attn_bias_input", 2, 4, 8, 2, abias=f32(2, 2, 4, 4))
    attn("attn_bias_bcast", 2, 4, 8, 2, abias=f32(1, 1, 4, 4))
    attn("attn_present_nopast", 2, 3, 8, 2, unidirectional=1, present=True)
    attn("attn_past_present", 2, 1, 8, 2, past=f32(2, 2, 2, 3, 4), unidirectional=1, present=True)
    attn("attn_past_present_mask", 2, 2, 8, 2, past=f32(2, 2, 2, 3, 4), mask=np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], np.int32),
         unidirectional=1, present=True)

    # -- MultiHeadAttention (separate Q, K, V in BSNH/BSD layout)
    def mha(name, B, S, L, D, N, Dv=None, bias=False, kpm=None, abias=None, past=None, present=False, bnsh=False, **attrs):
        Dv = Dv or D
        if bnsh:
            k, v = f32(B, N, L, D // N), f32(B, N, L, Dv // N)
        else:
            k, v = f32(B, L, D), f32(B, L, Dv)
        ins = [("query", f32(B, S, D)), ("key", k), ("value", v), ("bias", f32(2 * D + Dv, s=0.2) if bias else None),
               ("key_padding_mask", kpm), ("attention_bias", abias)]
        if past:
            ins += [("past_key", f32(B, N, past, D // N)), ("past_value", f32(B, N, past, Dv // N))]
        while ins and ins[-1][1] is None:
            ins.pop()
        outs = ["output", "present_key", "present_value"] if present else ["output"]
        add(name, "MultiHeadAttention", ins, outs, num_heads=N, **attrs)

    mha("mha_self", 2, 4, 4, 8, 2)
    mha("mha_cross", 2, 3, 6, 8, 2)
    mha("mha_cross_bias", 2, 3, 6, 16, 4, bias=True)
    mha("mha_dv_differs", 2, 3, 5, 8, 2, Dv=12)
    mha("mha_scale", 1, 4, 4, 8, 1, scale=0.5)
    mha("mha_causal", 2, 5, 5, 8, 2, unidirectional=1)
    kp = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], np.int32)
    mha("mha_kpm2d", 2, 3, 6, 8, 2, kpm=kp)
    mha("mha_kpm2d_bias_filter", 2, 3, 6, 8, 2, kpm=kp, bias=True, mask_filter_value=-5000.0)
    mha("mha_kpm1d", 2, 3, 6, 8, 2, kpm=np.array([2, 6], np.int32))
    kp3 = (rng.random((2, 3, 6)) > 0.4).astype(np.int32)
    kp3[:, :, 1] = 1
    mha("mha_kpm3d", 2, 3, 6, 8, 2, kpm=kp3)
    mha("mha_bnsh_kv_kpm", 2, 3, 6, 8, 2, bnsh=True, kpm=kp)
    mha("mha_attn_bias", 2, 3, 6, 8, 2, abias=f32(2, 2, 3, 6))
    mha("mha_attn_bias_bcast_heads", 2, 3, 6, 8, 2, abias=f32(2, 1, 3, 6))
    mha("mha_kpm_and_bias", 2, 3, 6, 8, 2, kpm=kp, abias=f32(1, 2, 3, 6))
    mha("mha_bnsh_kv", 2, 3, 5, 8, 2, bnsh=True)
    mha("mha_past_present", 2, 1, 1, 8, 2, past=3, present=True, unidirectional=1)
    mha("mha_bert_size", 2, 32, 32, 64, 4, bias=True, kpm=(np.arange(32)[None, :] < np.array([[11], [32]])).astype(np.int32))
    add("mha_qk_output", "MultiHeadAttention", [("query", f32(2, 3, 8)), ("key", f32(2, 5, 8)), ("value", f32(2, 5, 8)),
                                                 ("bias", None), ("key_padding_mask", np.array([[1, 1, 1, 0, 0], [1] * 5], np.int32)),
                                                 ("attention_bias", f32(2, 2, 3, 5))], ["output", "", "", "qk"], num_heads=2)
    mha("mha_past_present_bias", 2, 2, 2, 8, 2, past=2, present=True, bias=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    ap.add_argument("-v", action="store_true")
    ap.add_argument("--kiln", default=os.environ.get("KILN", os.path.join(os.path.dirname(__file__), "..", "build", "kiln")),
                    help="kiln binary (default: $KILN, else build/kiln)")
    ap.add_argument("--device", default="cpu",
                    help="kiln exec --device (cuda with kiln-sim: the CUDA kernels on the SIMT interpreter)")
    ap.add_argument("--require-device", default="",
                    help="comma-separated ops that must run on --device (a case whose kiln run reports one of "
                         "them falling back to the CPU fails)")
    args = ap.parse_args()
    extra = ("--device", args.device) if args.device != "cpu" else ()
    required = [o for o in args.require_device.split(",") if o]
    kiln = args.kiln
    if not os.access(kiln, os.X_OK):
        print(f"kiln binary not found: {kiln} (set KILN)")
        print("0 passed, 1 failed, 0 skipped")
        return 1
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    # ORT's quantised LSTM splits the batch across its threads and quantises each chunk's hidden
    # state separately, so its result depends on the thread count; one thread is its plain
    # semantics (one quantisation per product), which kiln implements
    so1 = ort.SessionOptions()
    so1.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so1.log_severity_level = 3
    so1.intra_op_num_threads = 1
    passed = failed = 0
    for name, op, inputs, outputs, attrs in cases():
        if args.k not in name:
            continue
        model = make_model(op, inputs, outputs, attrs)
        feeds = [(n, a) for n, a in inputs if a is not None]
        try:
            sess = ort.InferenceSession(ort_model(op, inputs, outputs, attrs).SerializeToString(),
                                       so1 if op == "DynamicQuantizeLSTM" else so,
                                       providers=["CPUExecutionProvider"])
            ref = sess.run(None, dict(feeds))
            logs = []
            with tempfile.TemporaryDirectory() as tmp:
                got = run_kiln(kiln, model, feeds, len(ref), tmp, extra, logs)
            errs = [f"output {i}: {e}" for i, (r, g) in enumerate(zip(ref, got)) if (e := compare(r, g))]
            errs += [f"{op} ran on the CPU, not on {args.device}" for op in device_fallback(logs, required)]
        except Exception as e:  # a kiln failure or a test-harness error both count as failures
            errs = [f"{type(e).__name__}: {e}"]
        if errs:
            failed += 1
            print(f"FAIL {name}: " + "; ".join(errs))
        else:
            passed += 1
            if args.v:
                diff = max((float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64)))) if r.size else 0.0)
                           for r, g in zip(ref, got))
                print(f"ok   {name} (max abs diff {diff:.3g})")
    print(f"{passed} passed, {failed} failed, 0 skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
