#!/usr/bin/env python3
"""Write a BERT encoder as ONNX, laid out the way PyTorch's exporter writes BertModel (Gather
embeddings, LayerNormalization, MatMul + Add projections, Reshape/Transpose heads, scaled
MatMul + additive mask + Softmax attention, erf GELU), with random weights or with the weights of
a Hugging Face safetensors checkpoint. Optionally writes an input set in the ONNX test layout.

  gen_bert.py --preset minilm-l6 --out model.onnx --inputs-dir data --batch 32 --seq 128
  gen_bert.py --safetensors model.safetensors --config config.json --out model.onnx

Needs only numpy and onnx (and safetensors to read a checkpoint).
"""
import argparse
import json
import math
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PRESETS = {
    "minilm-l6": dict(layers=6, hidden=384, heads=12, ffn=1536, vocab=30522, max_pos=512, type_vocab=2),
    "bert-base": dict(layers=12, hidden=768, heads=12, ffn=3072, vocab=30522, max_pos=512, type_vocab=2),
    "bert-tiny": dict(layers=2, hidden=64, heads=4, ffn=256, vocab=1000, max_pos=128, type_vocab=2),
}


class Builder:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, arr, base="c"):
        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def op(self, op, inputs, base=None, **attrs):
        out = self.name(base or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out


def weights_random(cfg, seed):
    rng = np.random.default_rng(seed)
    H, F = cfg["hidden"], cfg["ffn"]

    def w(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    p = {
        "embeddings.word_embeddings.weight": w(cfg["vocab"], H),
        "embeddings.position_embeddings.weight": w(cfg["max_pos"], H),
        "embeddings.token_type_embeddings.weight": w(cfg["type_vocab"], H),
        "embeddings.LayerNorm.weight": np.ones(H, np.float32) + w(H),
        "embeddings.LayerNorm.bias": w(H),
    }
    for l in range(cfg["layers"]):
        pre = f"encoder.layer.{l}."
        for part in ("query", "key", "value"):
            p[pre + f"attention.self.{part}.weight"] = w(H, H)
            p[pre + f"attention.self.{part}.bias"] = w(H)
        p[pre + "attention.output.dense.weight"] = w(H, H)
        p[pre + "attention.output.dense.bias"] = w(H)
        p[pre + "attention.output.LayerNorm.weight"] = np.ones(H, np.float32) + w(H)
        p[pre + "attention.output.LayerNorm.bias"] = w(H)
        p[pre + "intermediate.dense.weight"] = w(F, H)
        p[pre + "intermediate.dense.bias"] = w(F)
        p[pre + "output.dense.weight"] = w(H, F)
        p[pre + "output.dense.bias"] = w(H)
        p[pre + "output.LayerNorm.weight"] = np.ones(H, np.float32) + w(H)
        p[pre + "output.LayerNorm.bias"] = w(H)
    return p


def build(cfg, p, eps):
    b = Builder()
    H, heads = cfg["hidden"], cfg["heads"]
    D = H // heads
    get = lambda k: p.get(k, p.get("bert." + k))
    ids, mask, tt = "input_ids", "attention_mask", "token_type_ids"
    # position ids: Range(0, seq) like the exporter's Shape -> Gather -> Range chain
    shape = b.op("Shape", [ids])
    seq = b.op("Gather", [shape, b.const(np.array(1, np.int64))], axis=0)
    pos = b.op("Range", [b.const(np.array(0, np.int64)), seq, b.const(np.array(1, np.int64))])
    pos = b.op("Unsqueeze", [pos, b.const(np.array([0], np.int64))])
    e = b.op("Gather", [b.const(get("embeddings.word_embeddings.weight"), "word_emb"), ids])
    e = b.op("Add", [e, b.op("Gather", [b.const(get("embeddings.token_type_embeddings.weight"), "type_emb"), tt])])
    e = b.op("Add", [e, b.op("Gather", [b.const(get("embeddings.position_embeddings.weight"), "pos_emb"), pos])])
    h = b.op("LayerNormalization", [e, b.const(get("embeddings.LayerNorm.weight")), b.const(get("embeddings.LayerNorm.bias"))],
             axis=-1, epsilon=eps)
    # additive mask [B,1,1,S]: (1 - mask) * finfo.min
    m = b.op("Unsqueeze", [mask, b.const(np.array([1, 2], np.int64))])
    m = b.op("Cast", [m], to=TensorProto.FLOAT)
    m = b.op("Sub", [b.const(np.array(1.0, np.float32)), m])
    m = b.op("Mul", [m, b.const(np.array(np.finfo(np.float32).min, np.float32))])
    heads_shape = b.const(np.array([0, 0, heads, D], np.int64), "heads_shape")
    merge_shape = b.const(np.array([0, 0, H], np.int64), "merge_shape")
    scale = b.const(np.array(math.sqrt(D), np.float32), "scale")

    def linear(x, wname, bname):
        y = b.op("MatMul", [x, b.const(np.ascontiguousarray(get(wname).T), "w")])
        return b.op("Add", [b.const(get(bname), "b"), y])

    def layer_norm(x, pre):
        return b.op("LayerNormalization", [x, b.const(get(pre + ".weight")), b.const(get(pre + ".bias"))], axis=-1, epsilon=eps)

    for l in range(cfg["layers"]):
        pre = f"encoder.layer.{l}."
        q = linear(h, pre + "attention.self.query.weight", pre + "attention.self.query.bias")
        k = linear(h, pre + "attention.self.key.weight", pre + "attention.self.key.bias")
        v = linear(h, pre + "attention.self.value.weight", pre + "attention.self.value.bias")
        q = b.op("Transpose", [b.op("Reshape", [q, heads_shape])], perm=[0, 2, 1, 3])
        k = b.op("Transpose", [b.op("Reshape", [k, heads_shape])], perm=[0, 2, 3, 1])
        v = b.op("Transpose", [b.op("Reshape", [v, heads_shape])], perm=[0, 2, 1, 3])
        s = b.op("Div", [b.op("MatMul", [q, k]), scale])
        s = b.op("Add", [s, m])
        s = b.op("Softmax", [s], axis=-1)
        c = b.op("MatMul", [s, v])
        c = b.op("Reshape", [b.op("Transpose", [c], perm=[0, 2, 1, 3]), merge_shape])
        a = linear(c, pre + "attention.output.dense.weight", pre + "attention.output.dense.bias")
        h = layer_norm(b.op("Add", [a, h]), pre + "attention.output.LayerNorm")
        f = linear(h, pre + "intermediate.dense.weight", pre + "intermediate.dense.bias")
        # erf GELU: x * 0.5 * (1 + erf(x / sqrt(2)))
        g = b.op("Erf", [b.op("Div", [f, b.const(np.array(math.sqrt(2.0), np.float32))])])
        g = b.op("Mul", [b.op("Mul", [f, b.op("Add", [g, b.const(np.array(1.0, np.float32))])]), b.const(np.array(0.5, np.float32))])
        o = linear(g, pre + "output.dense.weight", pre + "output.dense.bias")
        h = layer_norm(b.op("Add", [o, h]), pre + "output.LayerNorm")
    b.nodes.append(helper.make_node("Identity", [h], ["last_hidden_state"], name="output"))
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in (ids, mask, tt)]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", H])]
    g = helper.make_graph(b.nodes, "bert", inputs, outputs, b.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln gen_bert.py")
    model.ir_version = 8
    return model


def write_inputs(d, cfg, batch, seq, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(d, exist_ok=True)
    ids = rng.integers(1, cfg["vocab"], size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), np.int64)
    # later rows padded, like a real batch of uneven sentences
    for r in range(1, batch):
        n = max(1, seq - (r * 7) % max(seq // 2, 1))
        mask[r, n:] = 0
        ids[r, n:] = 0
    tt = np.zeros((batch, seq), np.int64)
    for k, (n, a) in enumerate((("input_ids", ids), ("attention_mask", mask), ("token_type_ids", tt))):
        with open(os.path.join(d, f"input_{k}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(a, n).SerializeToString())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="minilm-l6")
    ap.add_argument("--safetensors", help="Hugging Face BertModel checkpoint")
    ap.add_argument("--config", help="its config.json (default: beside the checkpoint)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inputs-dir", help="also write input_K.pb files here")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    a = ap.parse_args()
    cfg = dict(PRESETS[a.preset])
    eps = 1e-12
    if a.safetensors:
        from safetensors.numpy import load_file
        conf = json.load(open(a.config or os.path.join(os.path.dirname(a.safetensors), "config.json")))
        cfg = dict(layers=conf["num_hidden_layers"], hidden=conf["hidden_size"], heads=conf["num_attention_heads"],
                   ffn=conf["intermediate_size"], vocab=conf["vocab_size"], max_pos=conf["max_position_embeddings"],
                   type_vocab=conf.get("type_vocab_size", 2))
        eps = conf.get("layer_norm_eps", 1e-12)
        params = {k: v.astype(np.float32) if v.dtype != np.int64 else v for k, v in load_file(a.safetensors).items()}
    else:
        params = weights_random(cfg, a.seed)
    model = build(cfg, params, eps)
    onnx.save(model, a.out)
    if a.inputs_dir:
        write_inputs(a.inputs_dir, cfg, a.batch, a.seq, a.seed + 1)
    print(f"wrote {a.out}: {cfg['layers']} layers, hidden {cfg['hidden']}, {cfg['heads']} heads, ffn {cfg['ffn']}")


if __name__ == "__main__":
    main()
