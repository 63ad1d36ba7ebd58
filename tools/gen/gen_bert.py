#!/usr/bin/env python3
"""Write a BERT encoder as ONNX, laid out the way PyTorch's exporter writes BertModel (Gather
embeddings, LayerNormalization, MatMul + Add projections, Reshape/Transpose heads, scaled-dot-product
attention with a boolean mask, erf GELU), with random weights or with the weights of a Hugging Face
safetensors checkpoint. Optionally writes an input set in the ONNX test layout.

  gen_bert.py --preset minilm-l6 --out model.onnx --inputs-dir data --batch 32 --seq 128
  gen_bert.py --safetensors model.safetensors --config config.json --out model.onnx

Inputs input_ids, attention_mask, token_type_ids [batch, sequence]; output last_hidden_state.
Needs only numpy and onnx (and safetensors to read a checkpoint); shared builders in genlib.py.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import genlib  # noqa: E402

PRESETS = {
    "minilm-l6": dict(layers=6, hidden=384, heads=12, ffn=1536, vocab=30522, max_pos=512, type_vocab=2, eps=1e-12),
    "bert-base": dict(layers=12, hidden=768, heads=12, ffn=3072, vocab=30522, max_pos=512, type_vocab=2, eps=1e-12),
    "bert-tiny": dict(layers=2, hidden=64, heads=4, ffn=256, vocab=1000, max_pos=128, type_vocab=2, eps=1e-12),
}


def hf_config(c):
    return dict(layers=c["num_hidden_layers"], hidden=c["hidden_size"], heads=c["num_attention_heads"],
                ffn=c["intermediate_size"], vocab=c["vocab_size"], max_pos=c["max_position_embeddings"],
                type_vocab=c.get("type_vocab_size", 2), eps=c.get("layer_norm_eps", 1e-12))


def layer_names(l):
    pre = f"encoder.layer.{l}."
    return dict(q=pre + "attention.self.query", k=pre + "attention.self.key", v=pre + "attention.self.value",
                o=pre + "attention.output.dense", ln1=pre + "attention.output.LayerNorm",
                fc1=pre + "intermediate.dense", fc2=pre + "output.dense", ln2=pre + "output.LayerNorm")


def weights_random(cfg, seed):
    r, p, H = genlib.Rand(seed), {}, cfg["hidden"]
    p["embeddings.word_embeddings.weight"] = r.w(cfg["vocab"], H)
    p["embeddings.position_embeddings.weight"] = r.w(cfg["max_pos"], H)
    p["embeddings.token_type_embeddings.weight"] = r.w(cfg["type_vocab"], H)
    r.ln(p, "embeddings.LayerNorm", H)
    for l in range(cfg["layers"]):
        r.encoder_layer(p, layer_names(l), H, cfg["ffn"])
    return p


def build(cfg, p, args):
    b = genlib.Builder()
    ids, mask, tt = "input_ids", "attention_mask", "token_type_ids"
    batch, seq = b.dim(ids, 0), b.dim(ids, 1)
    e = b.op("Gather", [b.const(p["embeddings.word_embeddings.weight"], "word_emb"), ids])
    e = b.op("Add", [e, b.op("Gather", [b.const(p["embeddings.token_type_embeddings.weight"], "type_emb"), tt])])
    pos = genlib.positions(b, seq)
    e = b.op("Add", [e, b.op("Gather", [b.const(p["embeddings.position_embeddings.weight"], "pos_emb"), pos])])
    h = b.layer_norm(e, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], cfg["eps"])
    bias = b.attention_bias(b.padding_mask(mask, batch, seq, seq), args.attention)
    for l in range(cfg["layers"]):
        h = genlib.post_ln_layer(b, h, bias, batch, seq, p, layer_names(l), cfg, cfg["eps"], args.attention)
    b.output(h, "last_hidden_state")
    return b.model("bert", genlib.text_io([ids, mask, tt]),
                   [genlib.float_io("last_hidden_state", ["batch", "sequence", cfg["hidden"]])], "kiln gen_bert.py")


def make_inputs(cfg, args):
    ids, mask = genlib.text_batch(cfg["vocab"], args.batch, args.seq, args.seed + 1)
    return [("input_ids", ids), ("attention_mask", mask), ("token_type_ids", np.zeros_like(ids))]


if __name__ == "__main__":
    genlib.main(__doc__, PRESETS, weights_random, build, make_inputs, hf_config, strip=("bert.",))
