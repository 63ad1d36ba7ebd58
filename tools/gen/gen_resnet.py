#!/usr/bin/env python3
"""Write ResNet (Hugging Face ResNetForImageClassification, bottleneck layers, e.g. microsoft/resnet-50)
as ONNX the way PyTorch's exporter writes it in eval mode: every BatchNorm folded into the bias-free
convolution before it (Conv with bias), Relu, MaxPool stem, bottleneck blocks (1x1, 3x3 with the
stride, 1x1; a 1x1 strided shortcut where the shape changes) ending in Add + Relu, GlobalAveragePool,
Flatten and a Gemm classifier. Random weights (with random BatchNorm statistics) or a checkpoint.

  gen_resnet.py --preset resnet-50 --out model.onnx --inputs-dir data --batch 8
  gen_resnet.py --safetensors model.safetensors --out model.onnx       # config.json beside it

Input pixel_values [batch, 3, height, width] (--image: the side of the --inputs-dir images);
output logits [batch, labels].
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import genlib  # noqa: E402

PRESETS = {
    "resnet-50": dict(embed=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3], labels=1000, image=224,
                      downsample_first=False, downsample_in_bottleneck=False),
    "resnet-tiny": dict(embed=8, hidden_sizes=[16, 32, 48, 64], depths=[1, 2, 1, 1], labels=10, image=64,
                        downsample_first=False, downsample_in_bottleneck=False),
}
BN_EPS = 1e-5


def hf_config(c):
    if c.get("layer_type", "bottleneck") != "bottleneck":
        sys.exit(f"gen_resnet.py: layer_type {c['layer_type']!r} is not supported (bottleneck only)")
    return dict(embed=c["embedding_size"], hidden_sizes=c["hidden_sizes"], depths=c["depths"],
                labels=len(c.get("id2label", {})) or 1000, image=c.get("image_size", 224),
                downsample_first=c.get("downsample_in_first_stage", False),
                downsample_in_bottleneck=c.get("downsample_in_bottleneck", False))


def blocks(cfg):
    """(state-dict prefix, in channels, out channels, stride) of every bottleneck layer."""
    out, c_in = [], cfg["embed"]
    for s, (c_out, depth) in enumerate(zip(cfg["hidden_sizes"], cfg["depths"])):
        for i in range(depth):
            stride = (2 if s > 0 or cfg["downsample_first"] else 1) if i == 0 else 1
            out.append((f"resnet.encoder.stages.{s}.layers.{i}.", c_in, c_out, stride))
            c_in = c_out
    return out


def weights_random(cfg, seed):
    r, p = genlib.Rand(seed), {}

    def conv_bn(prefix, c_in, c_out, k, gamma=1.0):
        p[prefix + "convolution.weight"] = r.w(c_out, c_in, k, k, std=float(np.sqrt(2.0 / (c_in * k * k))))
        n = prefix + "normalization."
        p[n + "weight"] = np.full(c_out, gamma, np.float32) + r.w(c_out, std=0.1 * gamma)
        p[n + "bias"] = r.w(c_out, std=0.1)
        p[n + "running_mean"] = r.w(c_out, std=0.1)
        p[n + "running_var"] = (0.5 + r.rng.random(c_out)).astype(np.float32)

    conv_bn("resnet.embedder.embedder.", 3, cfg["embed"], 7)
    for pre, c_in, c_out, stride in blocks(cfg):
        red = c_out // 4
        if c_in != c_out or stride != 1:
            conv_bn(pre + "shortcut.", c_in, c_out, 1)
        conv_bn(pre + "layer.0.", c_in, red, 1)
        conv_bn(pre + "layer.1.", red, red, 3)
        # a small last BatchNorm scale in each residual branch (trained ResNets end up so, and
        # zero-init-residual starts so) keeps the sum from growing block after block
        conv_bn(pre + "layer.2.", red, c_out, 1, gamma=0.2)
    r.lin(p, "classifier.1", cfg["labels"], cfg["hidden_sizes"][-1])
    return p


def build(cfg, p, args):
    b = genlib.Builder()

    def conv_bn(x, prefix, stride, relu=True):
        w = p[prefix + "convolution.weight"]
        n = prefix + "normalization."
        s = p[n + "weight"] / np.sqrt(p[n + "running_var"] + BN_EPS)
        wf = (w * s[:, None, None, None]).astype(np.float32)
        bf = (p[n + "bias"] - p[n + "running_mean"] * s).astype(np.float32)
        k = w.shape[2]
        y = b.op("Conv", [x, b.const(wf, "conv_w"), b.const(bf, "conv_b")], dilations=[1, 1], group=1,
                 kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride, stride])
        return b.op("Relu", [y]) if relu else y

    x = conv_bn("pixel_values", "resnet.embedder.embedder.", 2)
    x = b.op("MaxPool", [x], ceil_mode=0, dilations=[1, 1], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])
    for pre, c_in, c_out, stride in blocks(cfg):
        s0, s1 = (stride, 1) if cfg["downsample_in_bottleneck"] else (1, stride)
        y = conv_bn(conv_bn(conv_bn(x, pre + "layer.0.", s0), pre + "layer.1.", s1), pre + "layer.2.", 1, relu=False)
        short = conv_bn(x, pre + "shortcut.", stride, relu=False) if (c_in != c_out or stride != 1) else x
        x = b.op("Relu", [b.op("Add", [y, short])])
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    b.output(b.gemm(x, p["classifier.1.weight"], p["classifier.1.bias"]), "logits")
    # convolutions take any image size, so height and width stay dynamic as optimum exports them
    return b.model("resnet", [genlib.float_io("pixel_values", ["batch", 3, "height", "width"])],
                   [genlib.float_io("logits", ["batch", cfg["labels"]])], "kiln gen_resnet.py")


def make_inputs(cfg, args):
    S = args.image or cfg["image"]
    return [("pixel_values", np.random.default_rng(args.seed + 1).standard_normal((args.batch, 3, S, S)).astype(np.float32))]


def extra(ap):
    ap.add_argument("--image", type=int, help="image side of the --inputs-dir set (default: the preset's or config's)")


if __name__ == "__main__":
    genlib.main(__doc__, PRESETS, weights_random, build, make_inputs, hf_config, extra_args=extra)
