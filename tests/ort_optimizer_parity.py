#!/usr/bin/env python3
"""kiln on models that ONNX Runtime's transformer optimizer rewrote, against ONNX Runtime on the same
files. Small BERT, DistilBERT, RoBERTa, ELECTRA and MPNet models with random weights (transformers
configs built here, nothing downloaded) are exported with torch.onnx.export (TorchScript), in
eager attention (the layout the optimizer's fusions know: EmbedLayerNormalization, Attention,
SkipLayerNormalization, BiasGelu) and in transformers' default SDPA attention (fewer fusions), then
optimised by onnxruntime.transformers.optimizer.optimize_model(model_type="bert") at opt_level 1
and 2 with every fusion option on; the eager exports also with Attention taking the 2-D mask instead
of EmbedLayerNormalization's mask_index, with MultiHeadAttention in place of Attention, and with
FastGelu (the tanh approximation) in place of BiasGelu, and with MatMul + FastGelu fused into
GemmFastGelu (which ONNX Runtime runs only on GPUs: there its reference is the same export without
that fusion). MPNet has
no SDPA attention in transformers, so only its eager export is made. Each optimised model runs in ONNX Runtime (CPU, its own graph
optimisations off, so it runs exactly the file) and in `kiln exec` on one padded batch; outputs
must agree within rtol 1e-4, atol 1e-4. Prints the com.microsoft ops and the max abs diff per model.

Also ONNX Runtime's dynamic quantizer (onnxruntime.quantization.quantize_dynamic), which turns an
LSTM into com.microsoft DynamicQuantizeLSTM: a bidirectional LSTM with sequence lengths, quantised
per tensor and per channel, against ONNX Runtime with one thread (its quantised LSTM splits the
batch across threads and quantises each part separately).

With --device cuda (and kiln-sim as --kiln) the models run through the CUDA backend, so that
EmbedLayerNormalization's CUDA kernel runs inside whole models (gpusim.ort_optimizer).

Usage: python3 tests/ort_optimizer_parity.py --kiln build/kiln [--device cuda] [-k SUBSTRING] [--keep DIR]
Prints "N passed, N failed, 0 skipped" last and exits non-zero on any failure.
"""
import argparse
import collections
import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from contrib_parity import run_kiln  # noqa: E402

RTOL, ATOL = 1e-4, 1e-4
HIDDEN, HEADS, LAYERS, FFN, VOCAB, MAXPOS = 32, 4, 2, 64, 100, 64
ARCHS = ("bert", "distilbert", "roberta", "electra", "mpnet")


def make_config(arch, attn):
    import transformers
    if arch == "distilbert":
        cfg = transformers.DistilBertConfig(vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS,
                                            hidden_dim=FFN, max_position_embeddings=MAXPOS)
    else:
        kw = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  intermediate_size=FFN, max_position_embeddings=MAXPOS)
        if arch == "electra":
            kw["embedding_size"] = HIDDEN
        cls = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
               "electra": transformers.ElectraConfig, "mpnet": transformers.MPNetConfig}[arch]
        cfg = cls(**kw)
    cfg._attn_implementation = attn
    return cfg


def export(arch, attn, path, feeds):
    """The model's last_hidden_state from the named int64 inputs, exported with dynamic batch and
    sequence axes."""
    import torch
    import transformers
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(make_config(arch, attn)).eval()
    names = [n for n, _ in feeds]

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, *xs):  # keyword call: forward's positional order differs between models
            return self.m(**dict(zip(names, xs))).last_hidden_state

    args = tuple(torch.from_numpy(a) for _, a in feeds)
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrap(), args, path, input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=14, dynamo=False)


VARIANTS = [("opt1", 1, {}), ("opt2", 2, {}), ("opt2_mask2d", 2, {"attention_mask_format": 2}),
            ("opt2_mha", 2, {"use_multi_head_attention": True}), ("opt2_fastgelu", 2, {"enable_gelu_approximation": True}),
            ("opt2_gemmfastgelu", 2, {"enable_gelu_approximation": True, "enable_gemm_fast_gelu": True})]
# ONNX Runtime's CPU has no GemmFastGelu kernel: the reference for that variant is ONNX Runtime on the
# same export optimised without it (MatMul + FastGelu, the same arithmetic)
REF_WITHOUT = {"enable_gemm_fast_gelu": False}


def optimise(src, dst, level, extra):
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model
    opts = FusionOptions("bert")
    # every fusion the bert model type has, on (most are on by default)
    for k, v in list(vars(opts).items()):
        # (the GELU approximation and GemmFastGelu change the graph's math or need a GPU kernel in ONNX
        # Runtime: variants below turn them on)
        if k.startswith("enable_") and isinstance(v, bool) and k not in ("enable_gelu_approximation",
                                                                          "enable_gemm_fast_gelu"):
            setattr(opts, k, True)
    for k, v in extra.items():
        setattr(opts, k, v)
    with contextlib.redirect_stdout(io.StringIO()):
        m = optimize_model(src, model_type="bert", num_heads=HEADS, hidden_size=HIDDEN, optimization_options=opts,
                           opt_level=level)
    m.save_model_to_file(dst)
    return collections.Counter(n.op_type for n in m.model.graph.node if n.domain == "com.microsoft")


def make_feeds(arch, rng):
    B, S = 3, 9
    ids = rng.integers(3, VOCAB, (B, S)).astype(np.int64)
    mask = np.ones((B, S), np.int64)
    mask[0, 6:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 1  # a pad id, as a tokenizer would write
    feeds = [("input_ids", ids), ("attention_mask", mask)]
    if arch in ("bert", "electra", "roberta"):
        tt = np.zeros((B, S), np.int64)
        tt[:, 5:] = 1
        feeds.append(("token_type_ids", tt))
    return feeds


def quantized_lstm(work, per_channel):
    """An LSTM model (X [S,B,I], sequence_lens) through quantize_dynamic; its path and feeds."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import quantize_dynamic
    rng = np.random.default_rng(11)
    S, B, I, H = 7, 3, 10, 8
    inits = [numpy_helper.from_array((rng.standard_normal(sh) * s).astype(np.float32), n)
             for n, sh, s in (("W", (2, 4 * H, I), 0.3), ("R", (2, 4 * H, H), 0.3), ("B", (2, 8 * H), 0.1))]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "seq"], ["Y", "Y_h", "Y_c"], hidden_size=H,
                            direction="bidirectional")
    g = helper.make_graph([node], "lstm", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [S, B, I]),
                                           helper.make_tensor_value_info("seq", TensorProto.INT32, [B])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    src, dst = os.path.join(work, "lstm.onnx"), os.path.join(work, f"lstm_quant_{'pc' if per_channel else 'pt'}.onnx")
    onnx.save(m, src)
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_dynamic(src, dst, per_channel=per_channel)
    feeds = [("X", (rng.standard_normal((S, B, I)) * 1.5).astype(np.float32)), ("seq", np.array([7, 3, 5], np.int32))]
    return dst, feeds


def compare(ref, got):
    if ref.shape != got.shape:
        return float("inf"), f"shape {list(got.shape)} != ORT {list(ref.shape)}"
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    worst = float(err.max()) if err.size else 0.0
    if not np.allclose(got, ref, rtol=RTOL, atol=ATOL):
        return worst, f"max abs diff {worst:.3g} beyond rtol {RTOL} atol {ATOL}"
    return worst, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=os.environ.get("KILN", os.path.join(os.path.dirname(__file__), "..", "build", "kiln")))
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    ap.add_argument("--keep", help="write the exported and optimised models here")
    ap.add_argument("--device", default="cpu", help="kiln exec --device (cpu, or cuda with kiln-sim)")
    args = ap.parse_args()
    if not os.access(args.kiln, os.X_OK):
        print(f"kiln binary not found: {args.kiln}")
        print("0 passed, 1 failed, 0 skipped")
        return 1
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice to pre-process goes to the root logger
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or tmp
        os.makedirs(work, exist_ok=True)
        for arch in ARCHS:
            for attn in ("eager", "sdpa") if arch != "mpnet" else ("eager",):
                variants = VARIANTS if attn == "eager" else VARIANTS[:2]
                names = [f"{arch}_{attn}_{v[0]}" for v in variants]
                if not any(args.k in n for n in names):
                    continue
                feeds = make_feeds(arch, np.random.default_rng(7))
                src = os.path.join(work, f"{arch}_{attn}.onnx")
                try:
                    export(arch, attn, src, feeds)
                except Exception as e:
                    failed += len(names)
                    print(f"FAIL {arch}_{attn}: export: {type(e).__name__}: {e}")
                    continue
                for (_, lvl, extra), name in zip(variants, names):
                    if args.k not in name:
                        continue
                    dst = os.path.join(work, name + ".onnx")
                    try:
                        ms_ops = optimise(src, dst, lvl, extra)
                        model = onnx.load(dst)
                        order = [i.name for i in model.graph.input]
                        fd = dict(feeds)
                        ordered = [(n, fd[n]) for n in order]
                        ref_path = dst
                        if extra.get("enable_gemm_fast_gelu"):
                            ref_path = os.path.join(work, name + "_ref.onnx")
                            optimise(src, ref_path, lvl, {**extra, **REF_WITHOUT})
                        sess = ort.InferenceSession(ref_path, so, providers=["CPUExecutionProvider"])
                        ref = sess.run(None, fd)
                        with tempfile.TemporaryDirectory() as t2:
                            got = run_kiln(args.kiln, model, ordered, len(ref), t2, ("--device", args.device))
                        worst, err = max((compare(r, g) for r, g in zip(ref, got)), key=lambda x: x[0])
                    except Exception as e:
                        ms_ops, worst, err = {}, float("inf"), f"{type(e).__name__}: {str(e)[-600:]}"
                    ops = ", ".join(f"{k} x{v}" for k, v in sorted(ms_ops.items())) or "none"
                    if err:
                        failed += 1
                        print(f"FAIL {name}: {err} [com.microsoft: {ops}]")
                    else:
                        passed += 1
                        print(f"ok   {name}: max abs diff {worst:.3g} [com.microsoft: {ops}]")
                    sys.stdout.flush()
        so1 = ort.SessionOptions()
        so1.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so1.log_severity_level = 3
        so1.intra_op_num_threads = 1
        for pc in (False, True):
            name = f"lstm_quantize_dynamic_{'per_channel' if pc else 'per_tensor'}"
            if args.k not in name:
                continue
            try:
                dst, feeds = quantized_lstm(work, pc)
                model = onnx.load(dst)
                ops = collections.Counter(n.op_type for n in model.graph.node if n.domain == "com.microsoft")
                ref = ort.InferenceSession(dst, so1, providers=["CPUExecutionProvider"]).run(None, dict(feeds))
                with tempfile.TemporaryDirectory() as t2:
                    got = run_kiln(args.kiln, model, feeds, len(ref), t2, ("--device", args.device))
                worst, err = max((compare(r, g) for r, g in zip(ref, got)), key=lambda x: x[0])
            except Exception as e:
                ops, worst, err = {}, float("inf"), f"{type(e).__name__}: {str(e)[-600:]}"
            desc = ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())) or "none"
            if err:
                failed += 1
                print(f"FAIL {name}: {err} [com.microsoft: {desc}]")
            else:
                passed += 1
                print(f"ok   {name}: max abs diff {worst:.3g} [com.microsoft: {desc}]")
    print(f"{passed} passed, {failed} failed, 0 skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
