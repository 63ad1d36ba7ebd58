#!/usr/bin/env python3
"""Parity of kiln's text-generation ops against ONNX Runtime's CPU implementation:
SimplifiedLayerNormalization, com.microsoft SkipSimplifiedLayerNormalization, RotaryEmbedding,
GroupQueryAttention, MatMulNBits and GatherBlockQuantized.

Each case is a one-node (or small) model built with onnx.helper over random inputs; ONNX Runtime
runs it in-process and kiln runs it via `kiln exec` on the same inputs (tests/contrib_parity.py's
run_kiln). Every output must satisfy |kiln - ORT| <= atol + rtol * |ORT| elementwise. float32
paths use rtol 1e-5 with atol 1e-5 scaled by the output's largest magnitude (sums of hundreds to
thousands of products round differently in any two orders). float16 outputs are one float16
rounding of float32 values that already differ in their last bits, so one float16 step (2^-10
relative) is allowed. MatMulNBits at accuracy_level 4 quantises A to int8 per block in both (ONNX
Runtime's CompInt8, kernels/cpu/nbits.h): the same quantised values and integer block products,
float32 sums over the blocks in another order, so the float32 tolerance holds; -v prints the share
of bit-identical outputs. Some outputs are compared only where ONNX Runtime defines them (a mask per case): the
present cache beyond a batch entry's sequence length and the output rows of padding in a first
prompt are left unwritten or computed from unwritten memory by ONNX Runtime.

--bench adds MatMulNBits timings against ONNX Runtime (M=1 and M=64, K=N in 896..4864), each
side timed in turns within one process run, as ratios.

With --device cuda (and kiln-sim as --kiln) the cases run through the CUDA backend: its
GroupQueryAttention, RotaryEmbedding (kernels/cuda/attention.cu), SimplifiedLayerNormalization,
SkipSimplifiedLayerNormalization, MatMulNBits and GatherBlockQuantized kernels against ONNX Runtime
(gpusim.genops_parity, gpusim.genops_on_device); --require-device OPS fails a case that reports one
of those ops on the CPU.

Usage: python3 tests/genops_parity.py --kiln PATH [-k SUBSTRING] [-v] [--bench] [--device cpu|cuda [--require-device OPS]]
Prints per-op maximum errors and "N passed, N failed, 0 skipped" last; exits non-zero on any failure.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from contrib_parity import device_fallback, run_kiln  # noqa: E402

NP2ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
           np.dtype(np.int32): TensorProto.INT32, np.dtype(np.int64): TensorProto.INT64,
           np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}


def make_model(nodes, inputs, outputs, inits=()):
    """nodes: NodeProtos; inputs: (name, array) fed at run time; outputs: (name, elem_type);
    inits: TensorProtos stored in the model."""
    g_in = [helper.make_tensor_value_info(n, NP2ONNX[a.dtype], list(a.shape)) for n, a in inputs]
    g_out = [helper.make_tensor_value_info(n, t, None) for n, t in outputs]
    graph = helper.make_graph(nodes, "genops", g_in, g_out, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    return model


class Case:
    def __init__(self, name, op, model, feeds, tol="f32", masks=None):
        self.name, self.op, self.model, self.feeds, self.tol = name, op, model, feeds, tol
        self.masks = masks or {}  # output index -> boolean array of the elements ORT defines


def compare(ref, got, tol, mask):
    """(error message or None, max abs err, max rel err)."""
    if ref.shape != got.shape or ref.dtype != got.dtype:
        return f"{got.dtype}{list(got.shape)} != ORT {ref.dtype}{list(ref.shape)}", np.inf, np.inf
    r, g = ref.astype(np.float64), got.astype(np.float64)
    if mask is not None:
        r, g = r[mask], g[mask]
    if r.size == 0:
        return None, 0.0, 0.0
    scale = float(np.max(np.abs(r))) if np.all(np.isfinite(r)) else 1.0
    if tol == "f32":
        rtol, atol = 1e-5, 1e-5 * max(scale, 1e-30)
    elif tol == "f16":
        rtol, atol = 2 ** -10, 2 ** -10 * max(scale, 1e-30)
    elif tol == "int8":
        # accuracy_level 4: the same int8 quantisation of A and integer block products as ONNX
        # Runtime; only the float32 sums over the blocks run in another order
        rtol, atol = 1e-5, 1e-5 * max(scale, 1e-30)
    else:
        raise ValueError(tol)
    err = np.abs(g - r)
    rel = err / np.maximum(np.abs(r), 1e-30)
    bad = ~(err <= atol + rtol * np.abs(r))
    bad &= ~(np.isnan(r) & np.isnan(g))
    big = np.abs(r) >= 1e-3 * scale  # relative errors of values near zero say nothing
    mabs, mrel = float(np.nanmax(err)), float(np.nanmax(np.where(big, rel, 0.0)))
    if bad.any():
        i = int(np.argmax(np.where(bad, err, -1)))
        return f"max abs err {mabs:.3g} (flat {i}: kiln {g.ravel()[i]!r}, ORT {r.ravel()[i]!r}, atol {atol:.2g})", mabs, mrel
    return None, mabs, mrel


# ---------------------------------------------------------------- cases

def cases(rng):
    out = []

    def f32(*shape, s=1.0):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    def one(name, op, ins, outs, domain="com.microsoft", tol="f32", masks=None, out_types=None, **attrs):
        """A one-node model: ins (name, array or None), outs names ('' omitted)."""
        node = helper.make_node(op, [n if a is not None else "" for n, a in ins], outs, domain=domain, **attrs)
        feeds = [(n, a) for n, a in ins if a is not None]
        t0 = next(NP2ONNX[a.dtype] for _, a in feeds if a.dtype.kind == "f")
        types = out_types or {}
        model = make_model([node], feeds, [(o, types.get(o, t0)) for o in outs if o])
        out.append(Case(name, op, model, feeds, tol, masks))

    # -- SimplifiedLayerNormalization (default domain): axis, epsilon, inv_std_var, float16
    for shape, axis in [((2, 3, 64), -1), ((4, 896), -1), ((2, 5, 16), 1), ((3, 7, 33), 2), ((1, 1, 4096), -1)]:
        x = f32(*shape, s=2.0)
        sc = f32(*shape[axis if axis >= 0 else len(shape) + axis:])
        tag = "x".join(map(str, shape)) + f"_ax{axis}"
        one(f"sln_simpl_{tag}", "SimplifiedLayerNormalization", [("X", x), ("scale", sc)], ["Y", "inv_std_var"],
            domain="", axis=axis, epsilon=1e-6, out_types={"inv_std_var": TensorProto.FLOAT})
    one("sln_simpl_y_only_default_eps", "SimplifiedLayerNormalization", [("X", f32(3, 128)), ("scale", f32(128))],
        ["Y"], domain="")
    x16 = f32(2, 4, 64, s=2.0).astype(np.float16)
    one("sln_simpl_fp16", "SimplifiedLayerNormalization", [("X", x16), ("scale", f32(64).astype(np.float16))],
        ["Y"], domain="", tol="f16")

    # -- SkipSimplifiedLayerNormalization: optional bias and outputs, skip broadcast, float16
    for (B, S, H) in [(2, 3, 64), (1, 7, 896), (3, 1, 40)]:
        x, sk, g, b = f32(B, S, H, s=2.0), f32(B, S, H), f32(H), f32(H)
        tag = f"{B}x{S}x{H}"
        one(f"skip_sln_{tag}", "SkipSimplifiedLayerNormalization", [("input", x), ("skip", sk), ("gamma", g)],
            ["out"], epsilon=1e-6)
        one(f"skip_sln_bias_all_outputs_{tag}", "SkipSimplifiedLayerNormalization",
            [("input", x), ("skip", sk), ("gamma", g), ("bias", b)], ["out", "mean", "inv_std_var", "sum"],
            epsilon=1e-5, out_types={"mean": TensorProto.FLOAT, "inv_std_var": TensorProto.FLOAT})
    one("skip_sln_sum_only", "SkipSimplifiedLayerNormalization",
        [("input", f32(2, 4, 32)), ("skip", f32(2, 4, 32)), ("gamma", f32(32))], ["out", "", "", "sum"])
    one("skip_sln_2d", "SkipSimplifiedLayerNormalization",
        [("input", f32(6, 48)), ("skip", f32(6, 48)), ("gamma", f32(48)), ("bias", f32(48))], ["out"])
    one("skip_sln_fp16", "SkipSimplifiedLayerNormalization",
        [("input", x16), ("skip", f32(2, 4, 64).astype(np.float16)), ("gamma", f32(64).astype(np.float16)),
         ("bias", f32(64).astype(np.float16))], ["out", "", "", "sum"], tol="f16")

    # -- RotaryEmbedding (com.microsoft): input, position_ids, cos_cache, sin_cache
    def caches(maxpos, half, dt=np.float32):
        inv = 1.0 / (10000 ** (np.arange(half) / half))
        ang = np.arange(maxpos)[:, None] * inv[None, :]
        return np.cos(ang).astype(dt), np.sin(ang).astype(dt)

    for (B, S, N, H, rd, inter, fourd, pos_kind) in [
            (2, 5, 4, 16, 0, 0, False, "tensor"), (2, 5, 4, 16, 0, 1, False, "tensor"),
            (1, 7, 2, 32, 0, 0, False, "scalar"), (3, 1, 8, 64, 0, 1, False, "scalar"),
            (2, 4, 3, 32, 16, 0, False, "tensor"), (2, 4, 3, 32, 16, 1, False, "scalar"),
            (2, 6, 4, 16, 0, 0, True, "tensor"), (2, 3, 2, 64, 32, 1, True, "scalar")]:
        half = (rd or H) // 2
        cs, sn = caches(64, half)
        x = f32(B, N, S, H) if fourd else f32(B, S, N * H)
        pos = (rng.integers(0, 64 - 1, (B, S)).astype(np.int64) if pos_kind == "tensor"
               else np.array([11], np.int64))
        attrs = {"interleaved": inter}
        if not fourd or rd:
            attrs["num_heads"] = N
        if rd:
            attrs["rotary_embedding_dim"] = rd
        tag = f"{B}x{S}x{N}x{H}_rd{rd}_i{inter}_{'bnsh' if fourd else 'bsd'}_{pos_kind}"
        one(f"rope_{tag}", "RotaryEmbedding", [("input", x), ("position_ids", pos), ("cos_cache", cs),
                                               ("sin_cache", sn)], ["output"], **attrs)
    cs, sn = caches(16, 8)
    # ONNX Runtime's CPU kernel does not apply `scale`; neither does kiln
    one("rope_scale_attr", "RotaryEmbedding", [("input", f32(1, 3, 32)), ("position_ids", np.array([2], np.int64)),
                                               ("cos_cache", cs), ("sin_cache", sn)], ["output"], num_heads=2, scale=2.0)
    cs, sn = caches(32, 8, np.float16)
    one("rope_fp16", "RotaryEmbedding", [("input", f32(2, 3, 32).astype(np.float16)),
                                         ("position_ids", np.array([[0, 1, 2], [5, 6, 7]], np.int64)),
                                         ("cos_cache", cs), ("sin_cache", sn)], ["output"], num_heads=2, tol="f16")

    # -- GroupQueryAttention: KV cache [B, kv_heads, capacity, H]; seqlens_k[b] + 1 valid positions
    def gqa(name, B, S, N, KV, H, seqlens, total, P=None, packed=False, rotary=None, dt=np.float32, bias=None,
            sink=False, **attrs):
        """P: past capacity (None: no past); rotary: (rotary_dim, interleaved) or None."""
        ins = []
        if packed:
            ins += [("query", f32(B, S, (N + 2 * KV) * H).astype(dt)), ("key", None), ("value", None)]
        else:
            ins += [("query", f32(B, S, N * H).astype(dt)), ("key", f32(B, S, KV * H).astype(dt)),
                    ("value", f32(B, S, KV * H).astype(dt))]
        ins += [("past_key", None if P is None else f32(B, KV, P, H).astype(dt)),
                ("past_value", None if P is None else f32(B, KV, P, H).astype(dt)),
                ("seqlens_k", np.array(seqlens, np.int32)), ("total_sequence_length", np.array([total], np.int32))]
        if rotary:
            rd, inter = rotary
            cs, sn = caches(max(total, P or 0) + 4, rd // 2, dt)
            ins += [("cos_cache", cs), ("sin_cache", sn)]
            attrs.update(do_rotary=1, rotary_interleaved=inter)
        else:
            ins += [("cos_cache", None), ("sin_cache", None)]
        ins += [("position_ids", None), ("attention_bias", bias), ("head_sink", f32(N).astype(dt) if sink else None)]
        while ins[-1][1] is None:
            ins.pop()
        T = max(total, P or 0)
        first = S > 1 and S == total
        tot = np.array(seqlens) + 1
        omask = np.ones((B, S, N * H), bool)
        pmask = np.zeros((B, KV, T, H), bool)
        for b in range(B):
            if first:
                omask[b, tot[b]:] = False  # padding rows of a first prompt
            pmask[b, :, :tot[b]] = True
        one(f"gqa_{name}", "GroupQueryAttention", ins, ["output", "present_key", "present_value"],
            tol="f16" if dt == np.float16 else "f32", masks={0: omask, 1: pmask, 2: pmask}, num_heads=N,
            kv_num_heads=KV, **attrs)

    gqa("prompt", 2, 5, 4, 2, 16, [4, 4], 5)
    gqa("prompt_padded", 2, 5, 4, 2, 16, [4, 2], 5)
    gqa("prompt_shared_buffer", 2, 6, 4, 2, 16, [5, 3], 6, P=12)
    gqa("decode_shared_buffer_lengths", 3, 1, 4, 2, 16, [3, 7, 5], 8, P=8)
    gqa("decode_no_share", 2, 1, 8, 2, 32, [6, 6], 7, P=6)
    gqa("decode_mqa", 2, 1, 8, 1, 16, [9, 4], 10, P=10)
    gqa("decode_mha", 2, 1, 4, 4, 16, [2, 5], 6, P=6)
    # ONNX Runtime takes a later chunk of a prompt (several new tokens after a past) for batch 1 only
    gqa("chunked_prompt", 1, 3, 4, 2, 16, [7], 10, P=10)
    gqa("prompt_rotary", 2, 5, 4, 2, 16, [4, 4], 5, rotary=(16, 0))
    gqa("prompt_rotary_interleaved_packed", 2, 5, 4, 2, 16, [4, 4], 5, packed=True, rotary=(16, 1))
    gqa("decode_rotary_partial", 3, 1, 4, 2, 32, [3, 7, 5], 8, P=8, rotary=(16, 0))
    gqa("decode_rotary_interleaved_packed", 2, 1, 8, 2, 16, [4, 6], 7, P=7, packed=True, rotary=(16, 1))
    gqa("chunked_rotary", 1, 4, 4, 2, 16, [9], 12, P=12, rotary=(16, 0))
    gqa("prompt_local_window", 2, 9, 4, 2, 16, [8, 8], 9, local_window_size=3)
    gqa("decode_local_window", 2, 1, 4, 2, 16, [7, 3], 8, P=8, local_window_size=4)
    gqa("prompt_softcap", 2, 5, 4, 2, 16, [4, 4], 5, softcap=1.5)
    gqa("decode_softcap_scale", 2, 1, 4, 2, 16, [5, 2], 6, P=6, softcap=2.0, scale=0.4)
    gqa("prompt_smooth_softmax", 2, 5, 4, 2, 16, [4, 4], 5, smooth_softmax=1)
    gqa("decode_head_sink", 2, 1, 4, 2, 16, [5, 2], 6, P=6, sink=True)
    gqa("prompt_attention_bias", 2, 4, 4, 2, 16, [3, 3], 4, bias=f32(2, 1, 4, 4))
    gqa("prompt_long", 1, 70, 8, 2, 64, [69], 70, rotary=(64, 0))
    gqa("decode_batch4_long_cache", 4, 1, 14, 2, 64, [100, 37, 0, 127], 128, P=128, rotary=(64, 0))
    gqa("prompt_fp16", 2, 5, 4, 2, 16, [4, 4], 5, dt=np.float16, rotary=(16, 0))
    gqa("decode_fp16", 2, 1, 4, 2, 16, [5, 2], 6, P=6, dt=np.float16)

    # -- MatMulNBits: B, scales, zero points and bias as initializers, as exports store them
    for c in nbits_cases(rng):
        out.append(c)
    return out


def nbits_weights(rng, N, K, bits, bs, zp_kind, dt=np.float32):
    """Random quantised B [N, blocks, bs*bits/8], scales [N*blocks], zero points (None, packed
    uint8 or float) as MatMulNBits takes them, and the float weights [N, K] they stand for."""
    nb = (K + bs - 1) // bs
    q = rng.integers(0, 2 ** bits, (N, nb, bs)).astype(np.uint8)
    sc = rng.uniform(0.01, 0.1, (N, nb)).astype(dt)
    if zp_kind is None:
        z = np.full((N, nb), 2 ** (bits - 1), np.float32)
        zp = None
    elif zp_kind == "u8":
        zq = rng.integers(0, 2 ** bits, (N, nb)).astype(np.uint8)
        z = zq.astype(np.float32)
        if bits == 4:
            zpad = np.zeros((N, (nb + 1) // 2 * 2), np.uint8)
            zpad[:, :nb] = zq
            zp = (zpad[:, 0::2] | (zpad[:, 1::2] << 4)).reshape(-1)
        else:
            zp = zq.reshape(-1)
    else:
        zf = rng.uniform(0, 2 ** bits - 1, (N, nb)).astype(dt)
        z, zp = zf.astype(np.float32), zf.reshape(-1)
    w = ((q.astype(np.float32) - z[:, :, None]) * sc.astype(np.float32)[:, :, None]).reshape(N, nb * bs)[:, :K]
    packed = (q[:, :, 0::2] | (q[:, :, 1::2] << 4)) if bits == 4 else q
    return packed, sc.reshape(-1), zp, w


def nbits_model(rng, M_shape, N, K, bits, bs, zp_kind, bias=False, dt=np.float32, **attrs):
    packed, sc, zp, w = nbits_weights(rng, N, K, bits, bs, zp_kind, dt)
    inits = [numpy_helper.from_array(packed, "B"), numpy_helper.from_array(sc, "scales")]
    names = ["A", "B", "scales"]
    if zp is not None:
        inits.append(numpy_helper.from_array(zp, "zero_points"))
        names.append("zero_points")
    if bias:
        names += [""] * (5 - len(names)) + ["bias"]
        inits.append(numpy_helper.from_array((rng.standard_normal(N)).astype(dt), "bias"))
    node = helper.make_node("MatMulNBits", names, ["Y"], domain="com.microsoft", K=K, N=N, bits=bits, block_size=bs,
                            **attrs)
    a = rng.standard_normal(M_shape + (K,)).astype(dt)
    model = make_model([node], [("A", a)], [("Y", NP2ONNX[np.dtype(dt)])], inits)
    return model, [("A", a)]


def nbits_cases(rng):
    out = []
    combos = [(4, 32, None), (4, 32, "u8"), (4, 32, "float"), (4, 16, "u8"), (4, 64, None), (4, 128, "u8"),
              (4, 256, "u8"), (8, 16, "u8"), (8, 32, None), (8, 64, "u8"), (8, 128, "u8"), (8, 256, None)]
    # (ONNX Runtime's CPU refuses 8-bit weights with float zero points, which kiln takes)
    shapes = [((1,), 64, 48), ((3,), 100, 40), ((8,), 256, 72), ((2, 17), 96, 130), ((1,), 896, 160), ((64,), 512, 96)]
    for i, (bits, bs, zk) in enumerate(combos):
        for j, (ms, K, N) in enumerate(shapes):
            if (i + j) % 2:  # half the grid, every combination and shape seen more than once
                continue
            tag = f"b{bits}_bs{bs}_zp{zk}_M{'x'.join(map(str, ms))}_K{K}_N{N}"
            m, feeds = nbits_model(rng, ms, N, K, bits, bs, zk, bias=(j % 3 == 0))
            out.append(Case(f"nbits_{tag}", "MatMulNBits", m, feeds))
    for lvl in (0, 1, 2, 3):
        m, feeds = nbits_model(rng, (5,), 80, 128, 4, 32, "u8", accuracy_level=lvl)
        out.append(Case(f"nbits_accuracy_level{lvl}", "MatMulNBits", m, feeds))
    # level 4: A quantised to int8 per block as ONNX Runtime's CPU does (MLAS CompInt8), for 4 and 8
    # bits, block sizes 16..256, zero points absent or uint8, one row and several, K not a multiple of
    # the block, N not a multiple of 8; float zero points stay on the float32 product in both
    acc4 = [((1,), 256, 96, 4, 32, "u8"), ((16,), 256, 96, 4, 32, None), ((1,), 896, 136, 4, 32, None),
            ((3,), 200, 40, 4, 16, "u8"), ((1,), 128, 64, 4, 16, None), ((1,), 512, 72, 4, 64, None),
            ((2, 5), 300, 48, 4, 64, "u8"), ((1,), 1024, 64, 4, 128, "u8"), ((7,), 640, 33, 4, 128, None),
            ((1,), 768, 24, 4, 256, "u8"), ((1,), 256, 64, 8, 32, None), ((4,), 300, 40, 8, 16, "u8"),
            ((1,), 512, 56, 8, 128, "u8"), ((64,), 896, 96, 4, 32, "u8")]
    for i, (ms, K, N, bits, bs, zk) in enumerate(acc4):
        tag = f"b{bits}_bs{bs}_zp{zk}_M{'x'.join(map(str, ms))}_K{K}_N{N}"
        m, feeds = nbits_model(rng, ms, N, K, bits, bs, zk, bias=(i % 2 == 0), accuracy_level=4)
        out.append(Case(f"nbits_accuracy_level4_{tag}", "MatMulNBits", m, feeds, tol="int8"))
    m, feeds = nbits_model(rng, (3,), 64, 128, 4, 32, "float", accuracy_level=4)
    out.append(Case("nbits_accuracy_level4_float_zp", "MatMulNBits", m, feeds))
    m, feeds = nbits_model(rng, (3,), 64, 128, 4, 32, "u8", bias=True, dt=np.float16, accuracy_level=4)
    out.append(Case("nbits_accuracy_level4_fp16", "MatMulNBits", m, feeds, tol="f16"))
    m, feeds = nbits_model(rng, (3,), 64, 128, 4, 32, "u8", bias=True, dt=np.float16)
    out.append(Case("nbits_fp16", "MatMulNBits", m, feeds, tol="f16"))

    # -- GatherBlockQuantized: the quantised table, scales and zero points as initializers
    def gbq(name, shape, kind, bs, qa, ga, zp, idx, dt=np.float32, bits=4):
        """shape: logical data shape; kind: 'u8' (bits 4: two values a byte along the last dim, or
        bits 8), 'int4' or 'uint4'."""
        hi = 2 ** bits
        lo = -8 if kind == "int4" else 0
        q = rng.integers(lo, lo + hi, shape)
        sshape = list(shape)
        sshape[qa] = (shape[qa] + bs - 1) // bs
        sc = rng.uniform(0.01, 0.1, sshape).astype(dt)
        zq = rng.integers(lo, lo + hi, sshape) if zp else None
        def tensor(nm, v):
            if kind == "u8" and bits == 4:
                v = v.astype(np.uint8)
                if v.shape[-1] % 2:
                    v = np.concatenate([v, np.zeros(v.shape[:-1] + (1,), np.uint8)], -1)
                return numpy_helper.from_array(v[..., 0::2] | (v[..., 1::2] << 4), nm)
            if kind == "u8":
                return numpy_helper.from_array(v.astype(np.uint8), nm)
            t = TensorProto.INT4 if kind == "int4" else TensorProto.UINT4
            return helper.make_tensor(nm, t, list(v.shape), v.ravel().tolist())
        inits = [tensor("data", q), numpy_helper.from_array(sc, "scales")]
        names = ["data", "indices", "scales"]
        if zp:
            inits.append(tensor("zero_points", zq))
            names.append("zero_points")
        node = helper.make_node("GatherBlockQuantized", names, ["y"], domain="com.microsoft", block_size=bs,
                                quantize_axis=qa, gather_axis=ga, bits=bits)
        model = make_model([node], [("indices", idx)], [("y", NP2ONNX[np.dtype(dt)])], inits)
        out.append(Case(f"gbq_{name}", "GatherBlockQuantized", model, [("indices", idx)], "f16" if dt == np.float16 else "f32"))

    ids = rng.integers(0, 50, (2, 3)).astype(np.int64)
    gbq("u8_4bit_bs16_zp", (50, 64), "u8", 16, 1, 0, True, ids)
    gbq("u8_4bit_bs32_nozp", (50, 64), "u8", 32, 1, 0, False, ids.astype(np.int32))
    gbq("u8_4bit_bs64_zp_odd_blocks", (50, 192), "u8", 64, 1, 0, True, np.array([49, 0, -1, 7], np.int64))
    gbq("u8_8bit_bs32_zp", (50, 64), "u8", 32, 1, 0, True, ids, bits=8)
    gbq("u8_8bit_bs16_nozp", (50, 48), "u8", 16, -1, 0, False, ids, bits=8)
    gbq("int4_bs16_zp", (50, 64), "int4", 16, 1, 0, True, ids)
    gbq("int4_bs32_nozp", (50, 64), "int4", 32, 1, 0, False, ids)
    gbq("uint4_bs16_zp", (50, 64), "uint4", 16, 1, 0, True, ids)
    gbq("uint4_bs32_nozp", (50, 64), "uint4", 32, 1, 0, False, ids)
    gbq("int4_3d_bs16", (4, 20, 32), "int4", 16, 2, 1, True, np.array([[3, 19], [0, 7]], np.int64))
    gbq("int4_quantize_axis0", (64, 24), "int4", 16, 0, 0, True, np.array([5, 63, 16], np.int64))
    gbq("u8_4bit_fp16_scales", (50, 64), "u8", 32, 1, 0, True, ids, dt=np.float16)

    # -- a small decoder layer as GenAI int4 exports build it: quantised embedding, RMS norm, packed
    # QKV projection, GroupQueryAttention with rotary and a KV cache, output projection, skip RMS norm
    for name, B, S, P, seqlens, total in [("prompt", 2, 6, 16, [5, 5], 6), ("decode", 3, 1, 16, [9, 4, 15], 16)]:
        out.append(decoder_layer_case(rng, name, B, S, P, seqlens, total))
    return out


def decoder_layer_case(rng, name, B, S, P, seqlens, total, V=40, D=64, N=4, KV=2, H=16):
    inits, nodes = [], []

    def nbits(tag, src, dst, K, Nout):
        packed, sc, zp, _ = nbits_weights(rng, Nout, K, 4, 32, "u8")
        inits.extend([numpy_helper.from_array(packed, f"{tag}_B"), numpy_helper.from_array(sc, f"{tag}_s"),
                      numpy_helper.from_array(zp, f"{tag}_z")])
        nodes.append(helper.make_node("MatMulNBits", [src, f"{tag}_B", f"{tag}_s", f"{tag}_z"], [dst], domain="com.microsoft",
                                      K=K, N=Nout, bits=4, block_size=32))

    q = rng.integers(0, 16, (V, D)).astype(np.uint8)
    inits += [numpy_helper.from_array(q[:, 0::2] | (q[:, 1::2] << 4), "emb_q"),
              numpy_helper.from_array(rng.uniform(0.05, 0.2, (V, D // 32)).astype(np.float32), "emb_s"),
              numpy_helper.from_array((1 + 0.1 * rng.standard_normal(D)).astype(np.float32), "g1"),
              numpy_helper.from_array((1 + 0.1 * rng.standard_normal(D)).astype(np.float32), "g2")]
    inv = 1.0 / (10000 ** (np.arange(H // 2) / (H // 2)))
    ang = np.arange(64)[:, None] * inv[None, :]
    inits += [numpy_helper.from_array(np.cos(ang).astype(np.float32), "cos"),
              numpy_helper.from_array(np.sin(ang).astype(np.float32), "sin")]
    nodes.append(helper.make_node("GatherBlockQuantized", ["emb_q", "ids", "emb_s"], ["x"], domain="com.microsoft",
                                  block_size=32, quantize_axis=1, gather_axis=0, bits=4))
    nodes.append(helper.make_node("SimplifiedLayerNormalization", ["x", "g1"], ["n1"], epsilon=1e-6))
    nbits("qkv", "n1", "qkv", D, (N + 2 * KV) * H)
    nodes.append(helper.make_node("GroupQueryAttention", ["qkv", "", "", "past_key", "past_value", "seqlens_k",
                                                          "total_sequence_length", "cos", "sin"],
                                  ["attn", "present_key", "present_value"], domain="com.microsoft", num_heads=N,
                                  kv_num_heads=KV, do_rotary=1))
    nbits("o", "attn", "o", N * H, D)
    nodes.append(helper.make_node("SkipSimplifiedLayerNormalization", ["o", "x", "g2"], ["y", "", "", "resid"],
                                  domain="com.microsoft", epsilon=1e-6))
    feeds = [("ids", rng.integers(0, V, (B, S)).astype(np.int64)),
             ("past_key", rng.standard_normal((B, KV, P, H)).astype(np.float32)),
             ("past_value", rng.standard_normal((B, KV, P, H)).astype(np.float32)),
             ("seqlens_k", np.array(seqlens, np.int32)), ("total_sequence_length", np.array([total], np.int32))]
    F = TensorProto.FLOAT
    model = make_model(nodes, feeds, [("y", F), ("resid", F), ("present_key", F), ("present_value", F)], inits)
    T = max(total, P)
    tot = np.array(seqlens) + 1
    first = S > 1 and S == total
    rmask = np.ones((B, S, D), bool)
    pmask = np.zeros((B, KV, T, H), bool)
    for b in range(B):
        if first:
            rmask[b, tot[b]:] = False
        pmask[b, :, :tot[b]] = True
    return Case(f"decoder_layer_{name}", "decoder layer graph", model, feeds, masks={0: rmask, 1: rmask, 2: pmask, 3: pmask})


# ---------------------------------------------------------------- running

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    ap.add_argument("-v", action="store_true")
    ap.add_argument("--bench", action="store_true", help="MatMulNBits speed against ONNX Runtime")
    ap.add_argument("--bench-threads", type=int, default=1, help="threads of both sides in --bench")
    ap.add_argument("--kiln", default=os.environ.get("KILN", os.path.join(os.path.dirname(__file__), "..", "build", "kiln")))
    ap.add_argument("--device", default="cpu",
                    help="kiln exec --device (cuda with kiln-sim: the CUDA kernels on the SIMT interpreter)")
    ap.add_argument("--require-device", default="",
                    help="comma-separated ops that must run on --device (a case reporting one on the CPU fails)")
    args = ap.parse_args()
    extra = ("--device", args.device) if args.device != "cpu" else ()
    required = [o for o in args.require_device.split(",") if o]
    if not os.access(args.kiln, os.X_OK):
        print(f"kiln binary not found: {args.kiln}")
        print("0 passed, 1 failed, 0 skipped")
        return 1
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    rng = np.random.default_rng(20261203)
    passed = failed = 0
    worst = {}
    for c in cases(rng):
        if args.k not in c.name:
            continue
        try:
            ref_model, tol = c.model, c.tol
            level4 = any(a.name == "accuracy_level" and a.i == 4 for n in c.model.graph.node for a in n.attribute)
            if args.device != "cpu" and c.op == "MatMulNBits" and level4:
                # kiln's CUDA kernel, like ONNX Runtime's CUDA provider, computes in float at every
                # accuracy_level: its reference is ONNX Runtime's float product (level 0)
                ref_model = onnx.ModelProto()
                ref_model.CopyFrom(c.model)
                for n in ref_model.graph.node:
                    for a in n.attribute:
                        if a.name == "accuracy_level":
                            a.i = 0
                tol = "f16" if c.tol == "f16" else "f32"
            sess = ort.InferenceSession(ref_model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            ref = sess.run(None, dict(c.feeds))
            logs = []
            with tempfile.TemporaryDirectory() as tmp:
                got = run_kiln(args.kiln, c.model, c.feeds, len(ref), tmp, extra, logs)
            errs, stats = [f"{op} ran on the CPU, not on {args.device}" for op in device_fallback(logs, required)], []
            for i, (r, g) in enumerate(zip(ref, got)):
                e, mabs, mrel = compare(r, g, tol, c.masks.get(i))
                if tol == "int8" and args.v and r.shape == g.shape:
                    print(f"     {c.name} output {i}: {int(np.sum(r == g))} of {r.size} bit-identical")
                stats.append((mabs, mrel))
                if e:
                    errs.append(f"output {i}: {e}")
        except Exception as e:  # a kiln failure or a harness error both count as failures
            errs, stats = [f"{type(e).__name__}: {e}"], []
        key = (c.op, c.tol)
        w = worst.setdefault(key, [0.0, 0.0, 0])
        for mabs, mrel in stats:
            w[0], w[1] = max(w[0], mabs), max(w[1], mrel)
        w[2] += 1
        if errs:
            failed += 1
            print(f"FAIL {c.name}: " + "; ".join(errs))
        else:
            passed += 1
            if args.v:
                print(f"ok   {c.name} " + " ".join(f"[abs {a:.2g} rel {r:.2g}]" for a, r in stats))
    # models kiln must refuse at load, naming the node: MatMulNBits weights that disagree with K/N/bits/block_size
    for name, K, bshape, scount in [("blocks", 64, (8, 3, 16), 16), ("blob", 64, (8, 2, 8), 16), ("scales", 64, (8, 2, 16), 15)]:
        if args.k not in "nbits_refused_" + name:
            continue
        inits = [numpy_helper.from_array(np.zeros(bshape, np.uint8), "B"),
                 numpy_helper.from_array(np.ones(scount, np.float32), "scales")]
        node = helper.make_node("MatMulNBits", ["A", "B", "scales"], ["Y"], name="proj_" + name, domain="com.microsoft",
                                K=K, N=8, bits=4, block_size=32)
        feeds = [("A", np.ones((2, K), np.float32))]
        model = make_model([node], feeds, [("Y", TensorProto.FLOAT)], inits)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                run_kiln(args.kiln, model, feeds, 1, tmp, ("--device", args.device))
                msg = "kiln ran it"
            except RuntimeError as e:
                # refused at load: no run-time context ("node ... with inputs (...)") in the message
                ok = "proj_" + name in str(e) and "MatMulNBits" in str(e) and "with inputs" not in str(e)
                msg = None if ok else f"not refused at load naming the node: {e}"
        if msg:
            failed += 1
            print(f"FAIL nbits_refused_{name}: {msg}")
        else:
            passed += 1
            if args.v:
                print(f"ok   nbits_refused_{name}")
    for (op, tol), (a, r, n) in sorted(worst.items()):
        print(f"  {op:34s} {tol:8s} {n:3d} cases  max abs err {a:.3g}  max rel err (|ORT| >= 1e-3 max) {r:.3g}")
    if args.bench:
        bench(args.kiln, rng, threads=args.bench_threads)
    print(f"{passed} passed, {failed} failed, 0 skipped")
    return 1 if failed else 0


def bench(kiln, rng, threads=1, rounds=5):
    """MatMulNBits (4-bit, block 32, uint8 zero points) at M=1 and M=64 for K=N in 896..4864: kiln
    (`kiln bench`, in process) and ONNX Runtime (Python API, its per-call overhead included) take
    turns, and the medians of all their rounds are compared."""
    import json
    import statistics
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    print(f"MatMulNBits 4-bit bs32, {threads} thread(s), medians in ms (ratio < 1: kiln faster)")
    with tempfile.TemporaryDirectory() as tmp:
        for KN in (896, 2048, 3072, 4864):
            for M in (1, 64):
                model, feeds = nbits_model(rng, (M,), KN, KN, 4, 32, "u8")
                path = os.path.join(tmp, "m.onnx")
                onnx.save(model, path)
                idir = os.path.join(tmp, "in")
                os.makedirs(idir, exist_ok=True)
                with open(os.path.join(idir, "input_0.pb"), "wb") as f:
                    f.write(numpy_helper.from_array(feeds[0][1], "A").SerializeToString())
                sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
                iters = 200 if M == 1 else 20
                for _ in range(5):
                    sess.run(None, dict(feeds))
                tk, to = [], []
                for _ in range(rounds):
                    r = subprocess.run([kiln, "bench", path, "--inputs", idir, "--iters", str(iters), "--warmup", "3",
                                        "--threads", str(threads), "--json"], check=True, capture_output=True, text=True)
                    tk += json.loads(r.stdout.strip().splitlines()[-1])["times_ms"]
                    for _ in range(iters):
                        t0 = time.perf_counter()
                        sess.run(None, dict(feeds))
                        to.append((time.perf_counter() - t0) * 1e3)
                mk, mo = statistics.median(tk), statistics.median(to)
                print(f"  K=N={KN:5d} M={M:3d}  kiln {mk:8.3f}  ORT {mo:8.3f}  kiln/ORT {mk / mo:5.2f}")


if __name__ == "__main__":
    sys.exit(main())
