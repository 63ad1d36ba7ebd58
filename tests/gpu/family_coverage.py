#!/usr/bin/env python3
"""Issue 14's coverage claim, checked on the model families it names: tiny random-weight models
(2 layers, small hidden; transformers configs built here, nothing downloaded) of BERT, DistilBERT,
RoBERTa, XLM-R, DeBERTa-v2, ALBERT, ELECTRA, MPNet, ModernBERT, GPT-2, Llama, Qwen2, Phi-3, Gemma-3,
the T5 encoder, Whisper and ViT, exported with torch.onnx.export (TorchScript); ResNet, MobileNet-v2,
ConvNeXt and a YOLO-style detector written here in torch (torchvision is not in the lock); ONNX
Runtime's transformer optimizer's fused forms of BERT and GPT-2; and a dynamic-int8 BERT
(onnxruntime.quantization.quantize_dynamic). For each model:
  - `kiln info MODEL --device cuda --json` lists no fallback, except the nodes named in EXCEPTIONS
    (each with its reason);
  - `kiln exec --device cuda` matches `kiln exec --device cpu` within rtol 1e-3, atol 1e-4.
Generated models are cached in --cache (the build dir) keyed by this file's hash, so reruns only
run kiln. Prints a table (model, nodes, nodes on cuda, fallbacks, max diff) and exits 1 on any
failure.

Usage: family_coverage.py --kiln build/kiln-sim --cache DIR [-k SUBSTRING]
"""
import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

RTOL, ATOL = 1e-3, 1e-4
H, HEADS, LAYERS, FFN, VOCAB, MAXPOS = 32, 4, 2, 64, 100, 64
B, S = 2, 7

# model name -> {op type: reason} of nodes that may stay on the CPU. Empty: none.
EXCEPTIONS = {}


def text_cfg(name):
    import transformers as T
    common = dict(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  intermediate_size=FFN, max_position_embeddings=MAXPOS)
    dec = dict(common, num_key_value_heads=2)
    if name == "bert":
        return T.BertConfig(**common)
    if name == "distilbert":
        return T.DistilBertConfig(vocab_size=VOCAB, dim=H, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
                                  max_position_embeddings=MAXPOS)
    if name == "roberta":
        return T.RobertaConfig(**common)
    if name == "xlm-roberta":
        return T.XLMRobertaConfig(**common)
    if name == "deberta-v2":
        return T.DebertaV2Config(**common, relative_attention=True, position_buckets=16, pos_att_type=["p2c", "c2p"],
                                 max_relative_positions=32)
    if name == "albert":
        return T.AlbertConfig(**common, embedding_size=16)
    if name == "electra":
        return T.ElectraConfig(**common, embedding_size=H)
    if name == "mpnet":
        return T.MPNetConfig(**common)
    if name == "modernbert":
        return T.ModernBertConfig(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS,
                                  num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=MAXPOS,
                                  global_attn_every_n_layers=2, local_attention=8, pad_token_id=0, bos_token_id=1,
                                  eos_token_id=2, cls_token_id=1, sep_token_id=2)
    if name == "gpt2":
        return T.GPT2Config(vocab_size=VOCAB, n_embd=H, n_layer=LAYERS, n_head=HEADS, n_positions=MAXPOS)
    if name == "llama":
        return T.LlamaConfig(**dec)
    if name == "qwen2":
        return T.Qwen2Config(**dec)
    if name == "phi3":
        return T.Phi3Config(**dec, pad_token_id=0)
    if name == "gemma3":
        return T.Gemma3TextConfig(**dec, head_dim=8, sliding_window=4, query_pre_attn_scalar=8)
    if name == "t5-encoder":
        return T.T5Config(vocab_size=VOCAB, d_model=H, d_kv=8, d_ff=FFN, num_layers=LAYERS, num_heads=HEADS)
    raise KeyError(name)


TEXT = ["bert", "distilbert", "roberta", "xlm-roberta", "deberta-v2", "albert", "electra", "mpnet", "modernbert",
        "gpt2", "llama", "qwen2", "phi3", "gemma3", "t5-encoder"]
DECODERS = {"gpt2", "llama", "qwen2", "phi3", "gemma3"}


def export(module, args, names, out_names, path, axes):
    import torch
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, path, input_names=names, output_names=out_names, dynamic_axes=axes,
                          opset_version=17, dynamo=False)


def text_model(name, path, attn="eager"):
    import torch
    import transformers as T
    torch.manual_seed(0)
    cfg = text_cfg(name)
    cfg._attn_implementation = attn
    if name == "t5-encoder":
        model = T.T5EncoderModel(cfg).eval()
    elif name == "gemma3":
        model = T.Gemma3TextModel(cfg).eval()
    else:
        model = T.AutoModel.from_config(cfg).eval()
    rng = np.random.default_rng(1)
    ids = rng.integers(3, VOCAB, (B, S)).astype(np.int64)
    mask = np.ones((B, S), np.int64)
    mask[1, 5:] = 0
    feeds = [("input_ids", ids), ("attention_mask", mask)]
    names = [n for n, _ in feeds]

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, *xs):
            kw = dict(zip(names, xs))
            if name in DECODERS:
                kw["use_cache"] = False
            return self.m(**kw).last_hidden_state

    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["out"]}
    export(Wrap(), tuple(torch.from_numpy(a) for _, a in feeds), names, ["out"], path, axes)
    return feeds


def decoder_past(name, path, P=3, S=4):
    """The decoder in the form generation runs it: input_ids for S new tokens, the mask over past and
    new positions, position ids, and per layer the past keys and values (length P) in, presents out."""
    import torch
    import transformers as T
    torch.manual_seed(0)
    cfg = text_cfg(name)
    cfg._attn_implementation = "eager"
    model = (T.Gemma3TextModel(cfg) if name == "gemma3" else T.AutoModel.from_config(cfg)).eval()
    L = cfg.num_hidden_layers
    kvh = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rng = np.random.default_rng(5)
    mask = np.ones((B, P + S), np.int64)
    mask[1, :2] = 0  # a left-padded row
    feeds = [("input_ids", rng.integers(3, VOCAB, (B, S)).astype(np.int64)), ("attention_mask", mask),
             ("position_ids", np.tile(np.arange(P, P + S, dtype=np.int64), (B, 1)))]
    feeds += [(f"past_key_values.{i}.{k}", rng.standard_normal((B, kvh, P, hd)).astype(np.float32)) for i in range(L)
              for k in ("key", "value")]

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, ids, am, pos, *kv):
            cache = T.DynamicCache()
            for i in range(L):
                cache.update(kv[2 * i], kv[2 * i + 1], i)
            o = self.m(input_ids=ids, attention_mask=am, position_ids=pos, past_key_values=cache, use_cache=True)
            outs = [o.last_hidden_state]
            for lay in o.past_key_values.layers[:L]:
                outs += [lay.keys, lay.values]
            return tuple(outs)

    names = [n for n, _ in feeds]
    outs = ["out"] + [f"present.{i}.{k}" for i in range(L) for k in ("key", "value")]
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
            "position_ids": {0: "batch", 1: "seq"}, "out": {0: "batch", 1: "seq"}}
    axes.update({n: {0: "batch", 2: "past"} for n in names[3:]})
    axes.update({n: {0: "batch", 2: "total"} for n in outs[1:]})
    export(Wrap(), tuple(torch.from_numpy(a) for _, a in feeds), names, outs, path, axes)
    return feeds


def whisper_model(path):
    import torch
    import transformers as T
    torch.manual_seed(0)
    cfg = T.WhisperConfig(vocab_size=VOCAB, num_mel_bins=8, d_model=H, encoder_layers=LAYERS, decoder_layers=LAYERS,
                          encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN,
                          decoder_ffn_dim=FFN, max_source_positions=16, max_target_positions=MAXPOS,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    cfg._attn_implementation = "eager"
    model = T.WhisperModel(cfg).eval()
    rng = np.random.default_rng(2)
    feeds = [("input_features", rng.standard_normal((B, 8, 32)).astype(np.float32)),
             ("decoder_input_ids", rng.integers(3, VOCAB, (B, 5)).astype(np.int64)),
             ("decoder_attention_mask", np.ones((B, 5), np.int64))]

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x, d, dm):  # (with a decoder mask, transformers skips packed-sequence detection)
            return self.m(input_features=x, decoder_input_ids=d, decoder_attention_mask=dm,
                          use_cache=False).last_hidden_state

    export(Wrap(), tuple(torch.from_numpy(a) for _, a in feeds), [n for n, _ in feeds], ["out"], path,
           {"input_features": {0: "batch"}, "decoder_input_ids": {0: "batch", 1: "dec"},
            "decoder_attention_mask": {0: "batch", 1: "dec"}})
    return feeds


def vit_model(path):
    import torch
    import transformers as T
    torch.manual_seed(0)
    cfg = T.ViTConfig(hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
                      image_size=16, patch_size=4, num_channels=3)
    cfg._attn_implementation = "eager"
    model = T.ViTModel(cfg, add_pooling_layer=False).eval()
    feeds = [("pixel_values", np.random.default_rng(3).standard_normal((B, 3, 16, 16)).astype(np.float32))]

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return self.m(pixel_values=x).last_hidden_state

    export(Wrap(), (torch.from_numpy(feeds[0][1]),), ["pixel_values"], ["out"], path, {"pixel_values": {0: "batch"}})
    return feeds


def vision_net(name):
    """Small stand-ins for the vision families, written here: the same layer kinds in the same order."""
    import torch
    from torch import nn

    def cbr(ci, co, k=3, s=1, g=1, act=nn.ReLU):
        return nn.Sequential(nn.Conv2d(ci, co, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(co), act())

    class Basic(nn.Module):  # ResNet basic block
        def __init__(self, ci, co, s):
            super().__init__()
            self.a, self.b = cbr(ci, co, s=s), nn.Sequential(nn.Conv2d(co, co, 3, 1, 1, bias=False), nn.BatchNorm2d(co))
            self.sc = nn.Sequential() if s == 1 and ci == co else nn.Sequential(nn.Conv2d(ci, co, 1, s, bias=False),
                                                                                nn.BatchNorm2d(co))

        def forward(self, x):
            return torch.relu(self.b(self.a(x)) + self.sc(x))

    class InvRes(nn.Module):  # MobileNet-v2 inverted residual
        def __init__(self, ci, co, s, e=4):
            super().__init__()
            m = ci * e
            self.f = nn.Sequential(cbr(ci, m, 1, act=nn.ReLU6), cbr(m, m, 3, s, g=m, act=nn.ReLU6),
                                   nn.Conv2d(m, co, 1, bias=False), nn.BatchNorm2d(co))
            self.res = s == 1 and ci == co

        def forward(self, x):
            return x + self.f(x) if self.res else self.f(x)

    class CNBlock(nn.Module):  # ConvNeXt block: depthwise 7x7, LayerNorm over channels, MLP, layer scale
        def __init__(self, c):
            super().__init__()
            self.dw = nn.Conv2d(c, c, 7, 1, 3, groups=c)
            self.ln = nn.LayerNorm(c)
            self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
            self.gamma = nn.Parameter(torch.full((c,), 0.5))

        def forward(self, x):
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.fc2(nn.functional.gelu(self.fc1(self.ln(y)))) * self.gamma
            return x + y.permute(0, 3, 1, 2)

    class Yolo(nn.Module):  # conv+SiLU backbone, SPPF, upsample + concat neck, two heads
        def __init__(self):
            super().__init__()
            s = nn.SiLU
            self.c1, self.c2, self.c3 = cbr(3, 8, s=2, act=s), cbr(8, 16, s=2, act=s), cbr(16, 32, s=2, act=s)
            self.sppf_a, self.pool = cbr(32, 16, 1, act=s), nn.MaxPool2d(5, 1, 2)
            self.sppf_b = cbr(64, 32, 1, act=s)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.n1 = cbr(48, 16, act=s)
            self.h1, self.h2 = nn.Conv2d(16, 3 * 7, 1), nn.Conv2d(32, 3 * 7, 1)

        def forward(self, x):
            p3 = self.c2(self.c1(x))
            p4 = self.c3(p3)
            a = self.sppf_a(p4)
            b = self.pool(a)
            c = self.pool(b)
            p4 = self.sppf_b(torch.cat([a, b, c, self.pool(c)], 1))
            n = self.n1(torch.cat([self.up(p4), p3], 1))
            o1 = self.h1(n).flatten(2)
            o2 = self.h2(p4).flatten(2)
            return torch.sigmoid(torch.cat([o1, o2], 2).transpose(1, 2))

    if name == "resnet":
        return nn.Sequential(cbr(3, 8, 7, 2), nn.MaxPool2d(3, 2, 1), Basic(8, 8, 1), Basic(8, 16, 2),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    if name == "mobilenet":
        return nn.Sequential(cbr(3, 8, s=2, act=nn.ReLU6), InvRes(8, 8, 1), InvRes(8, 16, 2), InvRes(16, 16, 1),
                             cbr(16, 32, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    if name == "convnext":
        class Stem(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv, self.ln = nn.Conv2d(3, 16, 4, 4), nn.LayerNorm(16)

            def forward(self, x):
                return self.ln(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

        class Head(nn.Module):
            def __init__(self):
                super().__init__()
                self.ln, self.fc = nn.LayerNorm(16), nn.Linear(16, 10)

            def forward(self, x):
                return self.fc(self.ln(x.mean((2, 3))))

        return nn.Sequential(Stem(), CNBlock(16), CNBlock(16), Head())
    if name == "yolo":
        return Yolo()
    raise KeyError(name)


VISION = ["resnet", "mobilenet", "convnext", "yolo"]


def vision_model(name, path):
    import torch
    torch.manual_seed(0)
    net = vision_net(name).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so the folded scale and shift matter
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    feeds = [("x", np.random.default_rng(4).standard_normal((B, 3, 32, 32)).astype(np.float32))]
    export(net, (torch.from_numpy(feeds[0][1]),), ["x"], ["out"], path, {"x": {0: "batch"}})
    return feeds


def ort_optimized(kind, src, dst, level=1):
    from onnxruntime.transformers.optimizer import optimize_model
    with contextlib.redirect_stdout(io.StringIO()):
        m = optimize_model(src, model_type=kind, num_heads=HEADS, hidden_size=H, opt_level=level)
    m.save_model_to_file(dst)


def fp16(src, dst):
    """The float16 form ONNX Runtime's converter writes (inputs and outputs kept float32, Casts at the
    edges)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(convert_float_to_float16(onnx.load(src), keep_io_types=True), dst)


def nbits(src, dst, block=16):
    """4-bit block-quantised weights (com.microsoft MatMulNBits, symmetric: zero point 8) in place of
    every MatMul by a constant [K, N] weight, written here in the layout ONNX Runtime's quantizer
    writes (its MatMulNBitsQuantizer needs onnx_ir, which is not in the lock)."""
    from onnx import helper
    m = onnx.load(src)
    inits = {t.name: t for t in m.graph.initializer}
    nodes, used = [], set()
    for n in m.graph.node:
        w = inits.get(n.input[1]) if n.op_type == "MatMul" and len(n.input) == 2 else None
        if w is None or len(w.dims) != 2 or w.dims[0] % block:
            nodes.append(n)
            continue
        W = numpy_helper.to_array(w).astype(np.float32)
        K, N = W.shape
        blocks = W.T.reshape(N, K // block, block)
        scale = np.maximum(np.abs(blocks).max(-1), 1e-8) / 7.0
        q = np.clip(np.rint(blocks / scale[..., None]) + 8, 0, 15).astype(np.uint8)
        packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
        pre = n.input[1] + "_q4"
        m.graph.initializer.extend([numpy_helper.from_array(packed, pre), numpy_helper.from_array(
            scale.reshape(-1).astype(np.float32), pre + "_scales")])
        used.add(w.name)
        nodes.append(helper.make_node("MatMulNBits", [n.input[0], pre, pre + "_scales"], list(n.output),
                                      name=(n.name or pre) + "_nbits", domain="com.microsoft", K=K, N=N, bits=4,
                                      block_size=block))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    keep = [t for t in m.graph.initializer if t.name not in used or any(t.name in x.input for x in nodes)]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    if not any(o.domain == "com.microsoft" for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(m, dst)


def rms23(src, dst):
    """The decoder with each exported RMSNorm (Pow, ReduceMean, Add eps, Sqrt, Div, Mul, Cast, Mul by
    the weight) as one ONNX RMSNormalization node (opset 23), the form the torch exporter writes at
    that opset."""
    from onnx import helper
    m = onnx.load(src)
    nodes = list(m.graph.node)
    consumers = {}
    for n in nodes:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in nodes if n.op_type == "Constant"}
    drop, add = set(), {}
    for n in nodes:
        if n.op_type != "Pow":
            continue
        chain, cur = [n], n
        for want in ("ReduceMean", "Add", "Sqrt", "Div", "Mul", "Cast", "Mul"):
            nxt = [c for c in consumers.get(cur.output[0], []) if c.op_type == want]
            if len(nxt) != 1:
                break
            cur = nxt[0]
            chain.append(cur)
        if len(chain) != 8:
            continue
        x, last = n.input[0], chain[-1]
        weight = [i for i in last.input if i != chain[-2].output[0]][0]
        eps = float(np.asarray(consts[[i for i in chain[2].input if i in consts][0]]).reshape(-1)[0])
        drop.update(id(c) for c in chain)
        add[id(last)] = helper.make_node("RMSNormalization", [x, weight], [last.output[0]], axis=-1, epsilon=eps,
                                         name=(last.name or "rms") + "_rms")
    out = [add.get(id(n), n) for n in nodes if id(n) not in drop or id(n) in add]
    del m.graph.node[:]
    m.graph.node.extend(out)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 23
    m.ir_version = max(m.ir_version, 10)
    if not add:
        raise RuntimeError("no RMSNorm pattern found")
    onnx.save(m, dst)


def quantized(src, dst):
    from onnxruntime.quantization import quantize_dynamic
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_dynamic(src, dst)


def build(cache, name):
    """The model's path and feeds, generated once into cache."""
    path = os.path.join(cache, name + ".onnx")
    fpath = os.path.join(cache, name + ".feeds.npz")
    if os.path.exists(path) and os.path.exists(fpath):
        z = np.load(fpath)
        return path, [(k, z[k]) for k in z.files]
    if name in TEXT:
        feeds = text_model(name, path)
    elif name == "whisper":
        feeds = whisper_model(path)
    elif name == "vit":
        feeds = vit_model(path)
    elif name in VISION:
        feeds = vision_model(name, path)
    elif name.endswith("-past"):
        feeds = decoder_past(name[:-5], path)
    elif name.endswith("-sdpa"):
        feeds = text_model(name[:-5], path, "sdpa")
    elif name.endswith("-ort-fused"):
        base, feeds = build(cache, name[:-10])
        kind = name.split("-")[0]
        ort_optimized({"distilbert": "bert", "roberta": "bert"}.get(kind, kind), base, path)
    elif name == "bert-ort-fused2":
        base, feeds = build(cache, "bert")
        ort_optimized("bert", base, path, 2)
    elif name.endswith("-fp16"):
        base, feeds = build(cache, name[:-5])
        fp16(base, path)
    elif name.endswith("-rms23"):
        base, feeds = build(cache, name[:-6])
        rms23(base, path)
    elif name.endswith("-int4"):
        base, feeds = build(cache, name[:-5])
        nbits(base, path)
    elif name == "bert-int8":
        base, feeds = build(cache, "bert")
        quantized(base, path)
    else:
        raise KeyError(name)
    np.savez(fpath, **dict(feeds))
    return path, feeds


ALL = TEXT + ["whisper", "vit"] + VISION + ["bert-ort-fused", "gpt2-ort-fused", "bert-int8"]
# transformers' default attention (SDPA) exports, the ORT optimizer at level 2, float16 and 4-bit forms
ALL += ["bert-sdpa", "llama-sdpa", "gpt2-sdpa", "gemma3-sdpa", "bert-ort-fused2", "bert-fp16", "llama-fp16",
        "resnet-fp16", "llama-int4"]
# decoders with past keys and values in, presents out (the form text generation runs)
ALL += [d + "-past" for d in ("gpt2", "llama", "qwen2", "phi3", "gemma3")]
# more of the optimizer's model types and float16 forms of the other families
ALL += ["vit-ort-fused", "distilbert-ort-fused", "roberta-ort-fused", "whisper-fp16", "gemma3-fp16", "vit-fp16",
        "mobilenet-fp16", "deberta-v2-fp16", "gpt2-past-fp16", "bert-sdpa-ort-fused"]
# the RMS-norm decoders with ONNX RMSNormalization (opset 23)
ALL += ["llama-rms23", "qwen2-rms23", "llama-past-rms23"]
# the ops that make each special form what it is: a converter or optimizer that stopped writing them
# would leave the test checking plain models
FORM_OPS = {"bert-ort-fused": {"EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu"},
            "bert-ort-fused2": {"EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu"},
            "gpt2-ort-fused": {"SkipLayerNormalization", "FastGelu"},
            "bert-int8": {"DynamicQuantizeLinear", "MatMulInteger"}, "llama-int4": {"MatMulNBits"}}
FORM_OPS.update({k: {"RMSNormalization"} for k in ("llama-rms23", "qwen2-rms23", "llama-past-rms23")})
# float16 models: CPU and CUDA round differently
TOL = {"-fp16": (1e-2, 1e-2)}


def kiln_info(kiln, path):
    r = subprocess.run([kiln, "info", path, "--device", "cuda", "--json"], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"kiln info failed: {r.stderr.strip()[-600:]}")
    return json.loads(r.stdout)


def kiln_exec(kiln, path, feeds, device, tmp):
    idir, odir = os.path.join(tmp, "in"), os.path.join(tmp, "out-" + device)
    os.makedirs(idir, exist_ok=True)
    os.makedirs(odir, exist_ok=True)
    for i, (name, arr) in enumerate(feeds):
        with open(os.path.join(idir, f"input_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(arr, name).SerializeToString())
    r = subprocess.run([kiln, "exec", path, "--inputs", idir, "--outputs", odir, "--device", device],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"kiln exec --device {device} failed: {r.stderr.strip()[-600:]}")
    outs = []
    for fn in sorted(os.listdir(odir)):
        t = TensorProto()
        with open(os.path.join(odir, fn), "rb") as f:
            t.ParseFromString(f.read())
        outs.append(numpy_helper.to_array(t))
    return outs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--cache", required=True, help="generated models are kept here")
    ap.add_argument("-k", default="", help="only models whose name contains this")
    a = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    import transformers
    transformers.logging.set_verbosity_error()  # (tiny vocabularies: its token-id notes)
    with open(__file__, "rb") as f:
        cache = os.path.join(a.cache, hashlib.sha1(f.read()).hexdigest()[:12])
    os.makedirs(cache, exist_ok=True)
    for old in os.listdir(a.cache):  # models made by earlier versions of this file
        if os.path.join(a.cache, old) != cache:
            shutil.rmtree(os.path.join(a.cache, old), ignore_errors=True)
    bad = 0
    rows = []
    for name in ALL:
        if a.k not in name:
            continue
        try:
            path, feeds = build(cache, name)
        except Exception as e:
            print(f"FAIL {name}: could not generate: {type(e).__name__}: {str(e)[:300]}")
            bad += 1
            continue
        try:
            j = kiln_info(a.kiln, path)
        except Exception as e:
            print(f"FAIL {name}: {e}")
            bad += 1
            continue
        ops = {n.op_type for n in onnx.load(path, load_external_data=False).graph.node}
        if not FORM_OPS.get(name, set()) <= ops:
            print(f"FAIL {name}: lacks {sorted(FORM_OPS[name] - ops)}")
            bad += 1
        allowed = EXCEPTIONS.get(name, {})
        falls = j["fallbacks"]
        for fb in falls:
            if allowed.get(fb["op"]) != fb["reason"]:
                print(f"FAIL {name}: {fb['op']} ({fb['node']}) falls back: {fb['reason']}, inputs {fb['inputs']}")
                bad += 1
        diff = float("nan")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                ref = kiln_exec(a.kiln, path, feeds, "cpu", tmp)
                got = kiln_exec(a.kiln, path, feeds, "cuda", tmp)
            diff = 0.0
            for r_, g_ in zip(ref, got):
                if r_.shape != g_.shape or r_.dtype != g_.dtype:
                    raise RuntimeError(f"cuda {g_.dtype}{list(g_.shape)} != cpu {r_.dtype}{list(r_.shape)}")
                d = np.abs(g_.astype(np.float64) - r_.astype(np.float64))
                d = d[~np.isnan(d)]  # (NaN in the same places passes; elsewhere allclose fails)
                diff = max(diff, float(d.max()) if d.size else 0.0)
                rtol, atol = next((t for k, t in TOL.items() if name.endswith(k)), (RTOL, ATOL))
                if not np.allclose(g_, r_, rtol=rtol, atol=atol, equal_nan=True):
                    raise RuntimeError(f"max abs diff {float(d.max()):.3g} beyond rtol {rtol} atol {atol}")
            if len(ref) != len(got) or not ref:
                raise RuntimeError(f"{len(got)} outputs on cuda, {len(ref)} on cpu")
        except Exception as e:
            print(f"FAIL {name}: {e}")
            bad += 1
        fb_ops = sorted({fb["op"] for fb in falls})
        rows.append((name, j["nodes"], j["nodes"] - len(falls), ",".join(fb_ops) or "-", diff))
    print(f"{'model':<20} {'nodes':>6} {'on cuda':>8} {'fallbacks':<30} max diff")
    for r in rows:
        print(f"{r[0]:<20} {r[1]:>6} {r[2]:>8} {r[3]:<30} {r[4]:.3g}")
    print("FAILED" if bad else "ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
