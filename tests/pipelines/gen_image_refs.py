#!/usr/bin/env python3
"""Generates the image pipeline test data under tests/pipelines/data/ (run by hand, not by CI;
needs torch, transformers, pillow, onnx):

  images/               small generated JPEG and PNG files (RGB, grayscale, palette, alpha,
                        16-bit, 1-bit, CMYK, progressive, EXIF-rotated, up- and downscaling sizes)
  vit_cls/, resnet_cls/ tiny ViTForImageClassification / ResNetForImageClassification folders
  vit_feat/             a tiny ViTModel folder (last_hidden_state, pooler_output)
  image_refs.json       what transformers gives: decoded RGB (hash), pixel_values per image
                        processor configuration (hash, sum, sampled values), image-classification
                        and image-feature-extraction pipeline answers

The references come from transformers' PIL image-processor backend, the one a pipeline loads when
torchvision is not installed (AutoImageProcessor picks torchvision when it is).

--measure BIN  instead compares the C preprocessing (test_pl_image --dump) with the Python
               processor over every image and configuration and prints the max abs difference.
"""
import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
IMAGES = os.path.join(DATA, "images")


def crc(a):
    return "%08x" % (zlib.crc32(np.ascontiguousarray(a).tobytes()) & 0xFFFFFFFF)


def pattern(w, h, seed, channels=3):
    """Smooth colour fields with some texture, so resampling filters matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((h, w, channels))
    for c in range(channels):
        f = rng.uniform(0.02, 0.3, size=4)
        p = rng.uniform(0, 6.28, size=4)
        v = (np.sin(x * f[0] + p[0]) + np.cos(y * f[1] + p[1]) + np.sin((x + y) * f[2] + p[2]) * np.cos(x * f[3] - y * f[3] + p[3]))
        out[..., c] = v
    out += rng.normal(0, 0.15, size=out.shape)
    out = (out - out.min()) / (out.max() - out.min() + 1e-9)
    return out


def png_raw(path, arr, bitdepth, colortype):
    """A PNG writer for what PIL does not write (16-bit RGB)."""
    h, w = arr.shape[:2]
    rows = b""
    for r in range(h):
        rows += b"\x00" + arr[r].astype(">u2" if bitdepth == 16 else "u1").tobytes()

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bitdepth, colortype, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def make_images():
    from PIL import Image
    os.makedirs(IMAGES, exist_ok=True)
    made = []

    def rgb(w, h, seed):
        return Image.fromarray((pattern(w, h, seed) * 255).round().astype(np.uint8), "RGB")

    def save(name, im, **kw):
        im.save(os.path.join(IMAGES, name), **kw)
        made.append(name)

    save("rgb_64x48.jpg", rgb(64, 48, 1), quality=90)
    save("rgb_300x200.jpg", rgb(300, 200, 2), quality=80)
    save("rgb_37x53.png", rgb(37, 53, 3))
    a = (pattern(80, 60, 4, 4) * 255).round().astype(np.uint8)
    save("rgba_80x60.png", Image.fromarray(a, "RGBA"))
    save("gray_50x70.png", Image.fromarray((pattern(50, 70, 5, 1)[..., 0] * 255).round().astype(np.uint8), "L"))
    save("gray_45x33.jpg", Image.fromarray((pattern(45, 33, 6, 1)[..., 0] * 255).round().astype(np.uint8), "L"), quality=92)
    p = rgb(40, 40, 7).quantize(colors=16)
    p.info["transparency"] = 3
    save("palette_40x40.png", p, transparency=3)
    la = (pattern(30, 90, 8, 2) * 255).round().astype(np.uint8)
    save("la_30x90.png", Image.fromarray(la, "LA"))
    png_raw(os.path.join(IMAGES, "rgb16_41x29.png"), (pattern(41, 29, 9) * 65535).round(), 16, 2)
    made.append("rgb16_41x29.png")
    png_raw(os.path.join(IMAGES, "gray16_33x21.png"), (pattern(33, 21, 10, 1)[..., 0] * 600).round(), 16, 0)
    made.append("gray16_33x21.png")
    save("bit1_25x25.png", Image.fromarray(pattern(25, 25, 11, 1)[..., 0] > 0.5))
    save("tiny_7x5.png", rgb(7, 5, 12))
    save("wide_400x30.jpg", rgb(400, 30, 13), quality=85)
    save("tall_20x260.png", rgb(20, 260, 14))
    for o, name, (w, h) in ((6, "exif6_60x40.jpg", (60, 40)), (3, "exif3_50x30.jpg", (50, 30)), (8, "exif8_30x44.png", (30, 44))):
        ex = Image.Exif()
        ex[0x0112] = o
        im = rgb(w, h, 20 + o)
        save(name, im, exif=ex, **({"quality": 88} if name.endswith(".jpg") else {}))
    save("rgb_224x224.jpg", rgb(224, 224, 15), quality=75)
    save("progressive_120x90.jpg", rgb(120, 90, 16), quality=85, progressive=True)
    save("jpeg444_70x50.jpg", rgb(70, 50, 17), quality=95, subsampling=0)
    save("cmyk_40x30.jpg", rgb(40, 30, 18).convert("CMYK"), quality=90)
    save("rgb_130x97.png", rgb(130, 97, 19))
    # single transparent colours (tRNS on gray and RGB): PIL keeps them through convert("RGB")
    g = (np.floor(pattern(30, 30, 30, 1)[..., 0] * 7.99) * 32).astype(np.uint8)
    save("gray_trns_30x30.png", Image.fromarray(g, "L"), transparency=64)
    q = rgb(33, 27, 31).quantize(colors=8).convert("RGB")
    save("rgb_trns_33x27.png", q, transparency=q.getpixel((0, 0)))
    return made


# preprocessor configurations: (name, class, kwargs for the PIL processor class); written with
# save_pretrained so the files are the real format
CONFIGS = [
    ("vit32", "ViTImageProcessorPil", dict(size={"height": 32, "width": 32})),
    ("vit224", "ViTImageProcessorPil", dict()),
    ("vit_nearest", "ViTImageProcessorPil", dict(size={"height": 30, "width": 50}, resample=0)),
    ("vit_lanczos", "ViTImageProcessorPil", dict(size={"height": 41, "width": 23}, resample=1)),
    ("vit_box", "ViTImageProcessorPil", dict(size={"height": 17, "width": 90}, resample=4)),
    ("vit_hamming", "ViTImageProcessorPil", dict(size={"height": 64, "width": 64}, resample=5)),
    ("vit_shortlong", "ViTImageProcessorPil", dict(size={"shortest_edge": 30, "longest_edge": 50})),
    ("convnext40", "ConvNextImageProcessorPil", dict(size={"shortest_edge": 40}, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])),
    ("convnext224", "ConvNextImageProcessorPil", dict(size={"shortest_edge": 224}, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])),
    ("convnext384", "ConvNextImageProcessorPil", dict(size={"shortest_edge": 384})),
    ("clip", "CLIPImageProcessorPil", dict(size={"shortest_edge": 48}, crop_size={"height": 40, "width": 40})),
    ("bit_pad", "BitImageProcessorPil", dict(size={"shortest_edge": 20}, crop_size={"height": 32, "width": 35})),
    ("deit", "DeiTImageProcessorPil", dict(size={"height": 64, "width": 64}, crop_size={"height": 56, "width": 56})),
]
# a file in the older format, as microsoft/resnet-50 ships it
LEGACY = {"resnet50_legacy": {"crop_pct": 0.875, "do_normalize": True, "do_resize": True,
                              "feature_extractor_type": "ConvNextFeatureExtractor", "image_mean": [0.485, 0.456, 0.406],
                              "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": 224}}


def config_dirs(tmp):
    import transformers
    out = {}
    for name, cls, kw in CONFIGS:
        d = os.path.join(tmp, name)
        getattr(transformers, cls)(**kw).save_pretrained(d)
        out[name] = d
    for name, cfg in LEGACY.items():
        d = os.path.join(tmp, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "preprocessor_config.json"), "w") as f:
            json.dump(cfg, f)
        out[name] = d
    return out


def processor(d):
    from transformers import AutoImageProcessor
    return AutoImageProcessor.from_pretrained(d, backend="pil")


def load(path):
    from transformers.image_utils import load_image
    return load_image(path)


def samples(a, k, seed):
    flat = a.reshape(-1)
    idx = np.random.default_rng(seed).choice(flat.size, size=min(k, flat.size), replace=False)
    idx.sort()
    return [[int(i), float(flat[i])] for i in idx]


def export(model, path, outputs):
    import torch
    model.eval()
    x = torch.zeros(2, 3, model.config.image_size if hasattr(model.config, "image_size") else 40,
                    model.config.image_size if hasattr(model.config, "image_size") else 40)
    dyn = {"pixel_values": {0: "batch"}}
    for o in outputs:
        dyn[o] = {0: "batch"}
    torch.onnx.export(model, (x,), path, input_names=["pixel_values"], output_names=outputs,
                      dynamic_axes=dyn, opset_version=17, dynamo=False)


def make_models(img_names):
    import torch
    from transformers import (ConvNextImageProcessorPil, ResNetConfig, ResNetForImageClassification, ViTConfig,
                              ViTForImageClassification, ViTImageProcessorPil, ViTModel, pipeline)
    torch.manual_seed(0)
    refs = {}
    vit_cfg = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64)
    labels7 = ["tabby", "tiger", "goldfish", "great white shark", "hen", "ostrich", "junco"]
    d = os.path.join(DATA, "vit_cls")
    m = ViTForImageClassification(ViTConfig(**vit_cfg, num_labels=7, id2label=dict(enumerate(labels7)),
                                            label2id={l: i for i, l in enumerate(labels7)}))
    with torch.no_grad():
        m.classifier.weight.mul_(8.0)
    proc = ViTImageProcessorPil(size={"height": 32, "width": 32})
    m.save_pretrained(d, safe_serialization=True)
    proc.save_pretrained(d)
    export(m, os.path.join(d, "model.onnx"), ["logits"])
    os.remove(os.path.join(d, "model.safetensors"))
    cls_models = {"vit_cls": (m, proc)}

    d = os.path.join(DATA, "resnet_cls")
    r = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                  layer_type="basic", num_labels=4))
    with torch.no_grad():
        r.classifier[1].weight.mul_(3.0)
    rproc = ConvNextImageProcessorPil(size={"shortest_edge": 40}, image_mean=[0.485, 0.456, 0.406],
                                      image_std=[0.229, 0.224, 0.225])
    r.save_pretrained(d)
    rproc.save_pretrained(d)
    r.config.image_size = 40
    export(r, os.path.join(d, "model.onnx"), ["logits"])
    os.remove(os.path.join(d, "model.safetensors"))
    cls_models["resnet_cls"] = (r, rproc)

    paths = [os.path.join(IMAGES, n) for n in img_names]
    cls = []
    for name, (model, pr) in cls_models.items():
        pipe = pipeline("image-classification", model=model, image_processor=pr)
        for opts in ({}, {"top_k": 2}, {"top_k": 0}, {"function_to_apply": "sigmoid", "top_k": 3},
                     {"function_to_apply": "none"}):
            kw = dict(opts)
            if kw.get("top_k") == 0:
                kw["top_k"] = model.config.num_labels   # kiln's 0 = every label
            res = [pipe(p, **kw) for p in paths]
            cls.append({"model": name, "options": opts, "images": img_names,
                        "expected": [[{"label": e["label"], "score": e["score"]} for e in rr] for rr in res]})
    refs["classification"] = cls

    d = os.path.join(DATA, "vit_feat")
    f = ViTModel(ViTConfig(**vit_cfg))
    f.save_pretrained(d)
    proc.save_pretrained(d)
    export(f, os.path.join(d, "model.onnx"), ["last_hidden_state", "pooler_output"])
    os.remove(os.path.join(d, "model.safetensors"))
    pipe = pipeline("image-feature-extraction", model=f, image_processor=proc)
    feat_imgs = img_names[:3]
    tokens = [np.array(pipe(os.path.join(IMAGES, n)))[0] for n in feat_imgs]
    pooled = [np.array(pipe(os.path.join(IMAGES, n), pool=True))[0] for n in feat_imgs]
    refs["features"] = {"model": "vit_feat", "images": feat_imgs,
                        "tokens": [t.round(7).tolist() for t in tokens],
                        "cls": [t[0].round(7).tolist() for t in tokens],
                        "mean": [t.mean(0).round(7).tolist() for t in tokens],
                        "pooler_output": [p.round(7).tolist() for p in pooled]}
    return refs


def pixel_refs(img_names, tmp):
    dirs = config_dirs(tmp)
    configs, pixels = {}, {}
    for name, d in dirs.items():
        with open(os.path.join(d, "preprocessor_config.json")) as fh:
            configs[name] = json.load(fh)
        pr = processor(d)
        pixels[name] = {}
        for i, n in enumerate(img_names):
            pv = pr(load(os.path.join(IMAGES, n)), return_tensors="np")["pixel_values"][0].astype(np.float32)
            pixels[name][n] = {"shape": list(pv.shape), "crc": crc(pv), "sum": float(pv.astype(np.float64).sum()),
                               "samples": samples(pv, 12, i)}
    return configs, pixels


def decode_refs(img_names):
    out = {}
    for n in img_names:
        a = np.array(load(os.path.join(IMAGES, n)))
        out[n] = {"w": a.shape[1], "h": a.shape[0], "crc": crc(a)}
    return out


def measure(binary):
    """Full-array comparison of the C preprocessing with the Python processor."""
    img_names = sorted(os.listdir(IMAGES))
    with tempfile.TemporaryDirectory() as tmp:
        dirs = config_dirs(tmp)
        worst_all = 0.0
        for name, d in dirs.items():
            pr = processor(d)
            worst, exact = 0.0, 0
            for n in img_names:
                ref = pr(load(os.path.join(IMAGES, n)), return_tensors="np")["pixel_values"][0].astype(np.float32)
                raw = os.path.join(tmp, "out.raw")
                subprocess.run([binary, "--dump", os.path.join(d, "preprocessor_config.json"), os.path.join(IMAGES, n), raw], check=True)
                got = np.fromfile(raw, dtype=np.float32)
                if got.size != ref.size:
                    print(f"{name} {n}: size {got.size} != {ref.size}")
                    worst = float("inf")
                    continue
                diff = float(np.abs(got - ref.reshape(-1)).max())
                exact += int(np.array_equal(got, ref.reshape(-1)))
                worst = max(worst, diff)
            worst_all = max(worst_all, worst)
            print(f"{name:16s} images {len(img_names)}  bit-identical {exact}  max abs diff {worst:.3g}")
        # decoding: C RGB vs load_image
        bad = 0
        for n in img_names:
            raw = os.path.join(tmp, "rgb.raw")
            subprocess.run([binary, "--decode", os.path.join(IMAGES, n), raw], check=True)
            got = np.fromfile(raw, dtype=np.uint8)
            ref = np.array(load(os.path.join(IMAGES, n))).reshape(-1)
            if got.size != ref.size or not np.array_equal(got, ref):
                bad += 1
                print(f"decode {n}: differs" + (f" (max {np.abs(got.astype(int) - ref.astype(int)).max()})" if got.size == ref.size else " (size)"))
        print(f"decode: {len(img_names) - bad}/{len(img_names)} images identical to load_image")
        print(f"overall max abs diff {worst_all:.3g}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--measure", metavar="TEST_PL_IMAGE")
    args = ap.parse_args()
    if args.measure:
        measure(args.measure)
        return
    img_names = make_images()
    refs = {"decode": decode_refs(img_names)}
    with tempfile.TemporaryDirectory() as tmp:
        refs["configs"], refs["pixels"] = pixel_refs(img_names, tmp)
    refs.update(make_models(img_names))
    with open(os.path.join(DATA, "image_refs.json"), "w") as f:
        json.dump(refs, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", os.path.join(DATA, "image_refs.json"), "and", len(img_names), "images")


if __name__ == "__main__":
    main()
