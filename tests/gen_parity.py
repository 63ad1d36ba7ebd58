#!/usr/bin/env python3
"""Parity of the model generators in tools/gen (BERT, DistilBERT, GPT-2 with and without past, ResNet,
ViT) at their tiny presets.

Always (numpy + onnx + onnxruntime): every generated model runs in ONNX Runtime and in `kiln exec`
(ONNX test layout folders, batch 2 with a right-padded attention mask), outputs within rtol 1e-3,
atol 1e-4; GPT-2 with past also with an empty past (the first generation step).

With torch + transformers: each architecture is built by transformers with a tiny config and
perturbed random weights, saved with save_pretrained, and converted by the generator's --safetensors;
the generated model's ORT and kiln outputs must match transformers' within 1e-4 (max abs), GPT-2
with past over two steps against the full-sequence logits. The generated graph's op histogram is
printed beside that of torch.onnx.export (TorchScript exporter, opset 17) of the same model, and
the compute ops (MatMul, Gemm, Conv, LayerNormalization, Softmax, Erf, ...) must occur as often.

Usage: gen_parity.py --kiln build/kiln [--gen tools/gen] [-v]
Prints "N passed, N failed, N skipped" last and exits non-zero on any failure.
"""
import argparse
import collections
import glob
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore")

HERE = os.path.dirname(os.path.abspath(__file__))
RTOL, ATOL = 1e-3, 1e-4
TORCH_ATOL = 1e-4
# ops that carry the computation; shape plumbing (Shape, Gather of shapes, Unsqueeze, Concat,
# Constant, Cast, Range, Where on shapes...) differs with how the exporter traces Python code
COMPUTE = ("MatMul", "Gemm", "Conv", "LayerNormalization", "Softmax", "Erf", "Tanh", "Pow", "Relu", "MaxPool",
           "GlobalAveragePool", "Split", "IsNaN")

# name, generator, arguments (tiny preset), kind
CASES = [
    ("bert", "gen_bert.py", ["--preset", "bert-tiny"], "text"),
    ("bert-eager", "gen_bert.py", ["--preset", "bert-tiny", "--attention", "eager"], "text"),
    ("distilbert", "gen_distilbert.py", ["--preset", "distilbert-tiny"], "text"),
    ("distilbert-seqcls", "gen_distilbert.py", ["--preset", "distilbert-tiny", "--labels", "3"], "text"),
    ("gpt2", "gen_gpt2.py", ["--preset", "gpt2-tiny"], "text"),
    ("gpt2-eager", "gen_gpt2.py", ["--preset", "gpt2-tiny", "--attention", "eager"], "text"),
    ("gpt2-past", "gen_gpt2.py", ["--preset", "gpt2-tiny", "--with-past", "--past-len", "5"], "text"),
    ("gpt2-past-empty", "gen_gpt2.py", ["--preset", "gpt2-tiny", "--with-past", "--past-len", "0"], "text"),
    ("resnet", "gen_resnet.py", ["--preset", "resnet-tiny"], "image"),
    ("vit", "gen_vit.py", ["--preset", "vit-tiny"], "image"),
]


class Report:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def check(self, name, ok, detail):
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok


def load_pb(path):
    import onnx
    from onnx import numpy_helper
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return t.name, numpy_helper.to_array(t)


def load_dir(d):
    return dict(load_pb(p) for p in sorted(glob.glob(os.path.join(d, "input_*.pb")), key=lambda s: int(s.rsplit("_", 1)[1][:-3])))


def generate(gen_dir, script, args, out, inputs_dir=None, batch=2, seq=9):
    cmd = [sys.executable, os.path.join(gen_dir, script), "--out", out] + args
    if inputs_dir:
        cmd += ["--inputs-dir", inputs_dir, "--batch", str(batch), "--seq", str(seq)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def ort_run(model, feeds):
    import onnxruntime as ort
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, feeds))), names


def kiln_run(kiln, model, feeds, tmp):
    """feeds: ordered (name, array) pairs; returns the outputs in graph order."""
    from onnx import numpy_helper
    idir, odir = os.path.join(tmp, "kin"), os.path.join(tmp, "kout")
    for d in (idir, odir):
        os.makedirs(d, exist_ok=True)
        for f in glob.glob(os.path.join(d, "*.pb")):
            os.remove(f)
    for i, (n, a) in enumerate(feeds):
        with open(os.path.join(idir, f"input_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(a, n).SerializeToString())
    p = subprocess.run([kiln, "exec", model, "--inputs", idir, "--outputs", odir], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"kiln exec exit {p.returncode}: {p.stderr.strip()[-600:]}")
    outs, k = [], 0
    while os.path.exists(os.path.join(odir, f"output_{k}.pb")):
        outs.append(load_pb(os.path.join(odir, f"output_{k}.pb"))[1])
        k += 1
    return outs


def maxdiff(a, b):
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def histogram(path):
    import onnx
    return collections.Counter(n.op_type for n in onnx.load(path).graph.node)


# ---------------------------------------------------------------- kiln vs ORT, no torch needed
def kiln_vs_ort(a, rep, tmp):
    for name, script, args, _ in CASES:
        d = os.path.join(tmp, name)
        os.makedirs(d, exist_ok=True)
        model, idir = os.path.join(d, "model.onnx"), os.path.join(d, "in")
        generate(a.gen, script, args, model, idir)
        feeds = load_dir(idir)
        want, names = ort_run(model, feeds)
        try:
            got = kiln_run(a.kiln, model, list(feeds.items()), d)
        except RuntimeError as e:
            rep.check(f"kiln-vs-ort {name}", False, str(e))
            continue
        bad = [f"{n}: {maxdiff(g, want[n]):.3g}" for n, g in zip(names, got)
               if g.shape != want[n].shape or not np.allclose(g, want[n], rtol=RTOL, atol=ATOL)]
        if len(got) != len(names):
            bad.append(f"{len(got)} outputs, expected {len(names)}")
        worst = max(maxdiff(g, want[n]) for n, g in zip(names, got)) if got else float("nan")
        rep.check(f"kiln-vs-ort {name}", not bad,
                  f"{len(names)} outputs {', '.join(f'{n}{list(want[n].shape)}' for n in names[:2])}{' ...' if len(names) > 2 else ''}, "
                  f"max abs diff {worst:.3g}" + (f"; bad: {bad}" if bad else ""))


# ---------------------------------------------------------------- against transformers
def perturb(model, torch):
    """transformers initialises biases to 0 and LayerNorm to 1; move everything so every weight matters."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
        for n, b in model.named_buffers():
            if n.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif n.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model.eval()


def hf_models(transformers):
    t = transformers
    text = dict(vocab_size=1000, max_position_embeddings=128)
    return [
        ("bert", "gen_bert.py", lambda: t.BertModel(t.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                                 intermediate_size=256, **text)),
         ["input_ids", "attention_mask", "token_type_ids"], "last_hidden_state"),
        ("distilbert", "gen_distilbert.py", lambda: t.DistilBertModel(t.DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=256, **text)),
         ["input_ids", "attention_mask"], "last_hidden_state"),
        ("distilbert-seqcls", "gen_distilbert.py",
         lambda: t.DistilBertForSequenceClassification(t.DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=256, num_labels=3, **text)),
         ["input_ids", "attention_mask"], "logits"),
        ("gpt2", "gen_gpt2.py", lambda: t.GPT2LMHeadModel(t.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=128)),
         ["input_ids", "attention_mask"], "logits"),
        ("resnet", "gen_resnet.py", lambda: t.ResNetForImageClassification(t.ResNetConfig(
            embedding_size=8, hidden_sizes=[16, 32, 48, 64], depths=[1, 2, 1, 1], num_labels=10, layer_type="bottleneck")),
         ["pixel_values"], "logits"),
        ("vit", "gen_vit.py", lambda: t.ViTForImageClassification(t.ViTConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8, num_labels=10)),
         ["pixel_values"], "logits"),
    ]


def text_feeds(names, seed):
    """Batch 2 x 9 tokens, the second row right-padded after 6."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 1000, size=(2, 9), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {n: feeds[n] for n in names}


def against_torch(a, rep, tmp, torch, transformers):
    for name, script, make, in_names, out_name in hf_models(transformers):
        torch.manual_seed(0)
        m = perturb(make(), torch)
        d = os.path.join(tmp, "hf_" + name)
        m.save_pretrained(d)
        gen_path = os.path.join(d, "gen.onnx")
        generate(a.gen, script, ["--safetensors", os.path.join(d, "model.safetensors")], gen_path)
        if in_names == ["pixel_values"]:
            side = m.config.image_size if name == "vit" else 64
            feeds = {"pixel_values": np.random.default_rng(3).standard_normal((2, 3, side, side)).astype(np.float32)}
        else:
            feeds = text_feeds(in_names, 2)
        with torch.no_grad():
            want = getattr(m(**{k: torch.from_numpy(v) for k, v in feeds.items()}), out_name).numpy()
        got_ort = ort_run(gen_path, feeds)[0][out_name]
        got_kiln = kiln_run(a.kiln, gen_path, list(feeds.items()), d)[0]
        d_ort, d_kiln = maxdiff(got_ort, want), maxdiff(got_kiln, want)
        rep.check(f"torch {name}", d_ort < TORCH_ATOL and d_kiln < TORCH_ATOL,
                  f"{out_name}{list(want.shape)}: max abs diff vs transformers: ORT {d_ort:.3g}, kiln {d_kiln:.3g}")
        # the exporter's graph for the same model
        exp_path = os.path.join(d, "export.onnx")
        wrapper = Wrap(m, in_names, out_name, torch)
        dyn = {n: {0: "batch"} if n == "pixel_values" else {0: "batch", 1: "sequence"} for n in in_names}
        torch.onnx.export(wrapper, tuple(torch.from_numpy(feeds[n]) for n in in_names), exp_path, dynamo=False, opset_version=17,
                          input_names=in_names, output_names=[out_name], dynamic_axes=dyn)
        d_exp = maxdiff(ort_run(exp_path, feeds)[0][out_name], want)
        hg, he = histogram(gen_path), histogram(exp_path)
        print(f"  histogram {name} generated: {dict(sorted(hg.items()))}")
        print(f"  histogram {name} torch.onnx.export: {dict(sorted(he.items()))}")
        diff = {op: (hg[op], he[op]) for op in COMPUTE if hg[op] != he[op]}
        rep.check(f"ops {name}", not diff,
                  ("compute ops (generated, export) equal" if not diff else f"compute ops differ (generated, export): {diff}")
                  + f"; the export's ORT output vs transformers {d_exp:.3g}")
        if name == "gpt2":
            gpt2_past(a, rep, d, m, feeds, want, torch)


class Wrap:
    """A module returning one tensor, so the exporter sees a plain function of the inputs."""

    def __new__(cls, m, names, out, torch):
        class W(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = m

            def forward(self, *xs):
                return getattr(self.m(**dict(zip(names, xs))), out)
        return W().eval()


def gpt2_past(a, rep, d, m, feeds, full, torch):
    """Two generation steps through the with-past model (5 tokens from an empty past, then 4 more)
    against the full-sequence logits of transformers."""
    path = os.path.join(d, "gen_past.onnx")
    generate(a.gen, "gen_gpt2.py", ["--safetensors", os.path.join(d, "model.safetensors"), "--with-past"], path)
    L, heads, D = m.config.n_layer, m.config.n_head, m.config.n_embd // m.config.n_head
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    past = {f"past_key_values.{l}.{t}": np.zeros((2, heads, 0, D), np.float32) for l in range(L) for t in ("key", "value")}
    logits = {"ORT": [], "kiln": []}
    for who in ("ORT", "kiln"):
        pk = dict(past)
        for lo, hi in ((0, 5), (5, 9)):
            f = {"input_ids": ids[:, lo:hi], "attention_mask": mask[:, :hi], **pk}
            if who == "ORT":
                out, names = ort_run(path, f)
            else:
                outs = kiln_run(a.kiln, path, list(f.items()), d)
                names = ["logits"] + [f"present.{l}.{t}" for l in range(L) for t in ("key", "value")]
                out = dict(zip(names, outs))
            logits[who].append(out["logits"])
            pk = {f"past_key_values.{l}.{t}": out[f"present.{l}.{t}"] for l in range(L) for t in ("key", "value")}
    for who, parts in logits.items():
        got = np.concatenate(parts, axis=1)
        dd = maxdiff(got, full)
        rep.check(f"torch gpt2-past {who}", dd < TORCH_ATOL, f"2 steps (5 + 4 tokens) vs full-sequence logits {list(full.shape)}: max abs diff {dd:.3g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--gen", default=os.path.join(HERE, "..", "tools", "gen"))
    a = ap.parse_args()
    rep = Report()
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        print(f"skipped: {e.name} not installed")
        print("0 passed, 0 failed, 1 skipped")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        kiln_vs_ort(a, rep, tmp)
        try:
            import torch
            import transformers
        except ImportError as e:
            print(f"skipped: {e.name} not installed, so no comparison with transformers")
            rep.skipped += 1
        else:
            against_torch(a, rep, tmp, torch, transformers)
    print(f"{rep.passed} passed, {rep.failed} failed, {rep.skipped} skipped")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
