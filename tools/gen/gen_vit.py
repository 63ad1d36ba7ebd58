#!/usr/bin/env python3
"""Write ViT (Hugging Face ViTForImageClassification, e.g. google/vit-base-patch16-224) as ONNX the
way PyTorch's exporter writes it: patch Conv -> Reshape [B, H, patches] -> Transpose, the class
token Expanded to the batch and Concatenated in front, position embeddings added, pre-LayerNorm
encoder layers (scaled-dot-product attention without a mask, erf GELU), final LayerNorm and a Gemm
classifier on the class token. Random weights or a safetensors checkpoint.

  gen_vit.py --preset vit-b16 --out model.onnx --inputs-dir data --batch 8
  gen_vit.py --safetensors model.safetensors --out model.onnx          # config.json beside it

Input pixel_values [batch, 3, image, image]; output logits [batch, labels].
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import genlib  # noqa: E402

PRESETS = {
    "vit-b16": dict(layers=12, hidden=768, heads=12, ffn=3072, patch=16, image=224, labels=1000, eps=1e-12),
    "vit-tiny": dict(layers=2, hidden=64, heads=4, ffn=128, patch=8, image=32, labels=10, eps=1e-12),
}


def hf_config(c):
    return dict(layers=c["num_hidden_layers"], hidden=c["hidden_size"], heads=c["num_attention_heads"],
                ffn=c["intermediate_size"], patch=c["patch_size"], image=c["image_size"],
                labels=len(c.get("id2label", {})) or 1000, eps=c.get("layer_norm_eps", 1e-12))


def layer_names(l):
    pre = f"vit.encoder.layer.{l}."
    return dict(q=pre + "attention.attention.query", k=pre + "attention.attention.key", v=pre + "attention.attention.value",
                o=pre + "attention.output.dense", ln1=pre + "layernorm_before", fc1=pre + "intermediate.dense",
                fc2=pre + "output.dense", ln2=pre + "layernorm_after")


def weights_random(cfg, seed):
    r, p, H, P = genlib.Rand(seed), {}, cfg["hidden"], cfg["patch"]
    n_patches = (cfg["image"] // P) ** 2
    p["vit.embeddings.cls_token"] = r.w(1, 1, H)
    p["vit.embeddings.position_embeddings"] = r.w(1, n_patches + 1, H)
    p["vit.embeddings.patch_embeddings.projection.weight"] = r.w(H, 3, P, P)
    p["vit.embeddings.patch_embeddings.projection.bias"] = r.w(H)
    for l in range(cfg["layers"]):
        r.encoder_layer(p, layer_names(l), H, cfg["ffn"])
    r.ln(p, "vit.layernorm", H)
    r.lin(p, "classifier", cfg["labels"], H)
    return p


def build(cfg, p, args):
    b = genlib.Builder()
    H, P, eps, style = cfg["hidden"], cfg["patch"], cfg["eps"], args.attention
    D = H // cfg["heads"]
    x = b.op("Conv", ["pixel_values", b.const(p["vit.embeddings.patch_embeddings.projection.weight"], "patch_w"),
                      b.const(p["vit.embeddings.patch_embeddings.projection.bias"], "patch_b")],
             dilations=[1, 1], group=1, kernel_shape=[P, P], pads=[0, 0, 0, 0], strides=[P, P])
    batch = b.dim("pixel_values", 0)
    x = b.op("Transpose", [b.op("Reshape", [x, b.shape_of([batch, H, -1])])], perm=[0, 2, 1])
    # Expand takes 1 (not -1) for a kept axis; the exporter rewrites cls_token.expand(B, -1, -1) so too
    cls = b.op("Expand", [b.const(p["vit.embeddings.cls_token"], "cls"), b.shape_of([batch, 1, 1])])
    h = b.op("Add", [b.op("Concat", [cls, x], axis=1), b.const(p["vit.embeddings.position_embeddings"], "pos_emb")])
    seq = b.dim(h, 1)
    ln = lambda x, n: b.layer_norm(x, p[n + ".weight"], p[n + ".bias"], eps)
    for l in range(cfg["layers"]):
        n = layer_names(l)
        lin = lambda x, k: b.linear(x, p[n[k] + ".weight"], p[n[k] + ".bias"])
        a = ln(h, n["ln1"])
        q = b.split_heads(lin(a, "q"), batch, seq, D, [0, 2, 1, 3])
        k = b.split_heads(lin(a, "k"), batch, seq, D, [0, 2, 3, 1])
        v = b.split_heads(lin(a, "v"), batch, seq, D, [0, 2, 1, 3])
        c = b.merge_heads(b.attention(q, k, v, None, D, style), batch, seq)
        h = b.op("Add", [lin(c, "o"), h])
        f = lin(b.gelu_erf(lin(ln(h, n["ln2"]), "fc1")), "fc2")
        h = b.op("Add", [f, h])
    h = ln(h, "vit.layernorm")
    b.output(b.gemm(b.op("Gather", [h, b.i64(0)], axis=1), p["classifier.weight"], p["classifier.bias"]), "logits")
    S = cfg["image"]
    return b.model("vit", [genlib.float_io("pixel_values", ["batch", 3, S, S])],
                   [genlib.float_io("logits", ["batch", cfg["labels"]])], "kiln gen_vit.py")


def make_inputs(cfg, args):
    S = cfg["image"]
    return [("pixel_values", np.random.default_rng(args.seed + 1).standard_normal((args.batch, 3, S, S)).astype(np.float32))]


if __name__ == "__main__":
    genlib.main(__doc__, PRESETS, weights_random, build, make_inputs, hf_config)
