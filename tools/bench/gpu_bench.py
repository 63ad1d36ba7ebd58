#!/usr/bin/env python3
"""GPU inference benchmark: kiln's CUDA backend against PyTorch eager, torch.compile and ONNX
Runtime's CUDA provider (when the installed onnxruntime has it), same weights, same inputs, same
precision, timed in one run with the systems interleaved round by round.

Models are made here from their configurations with random weights (a GPU host reaches no model
hub): BERT-base and MiniLM-L6 (the all-MiniLM-L6-v2 shape) at sequence 128, and ResNet-50 as the
vision model. Each is exported once to ONNX (float32; kiln converts it to the requested precision at
upload, PyTorch runs the module cast to it). kiln is timed in process by `kiln bench --json` (CUDA
events around each run, inputs already on the host as a server would hold them); PyTorch with CUDA
events around the module call on device-resident inputs, which favours PyTorch by the host-to-device
copy kiln's figure includes.

Writes gpu_bench.json, gpu_bench.md and gpu_bench.png (latency and throughput per batch) into --out
and prints the table, with the issue's targets checked against the measured figures.

  python3 tools/bench/gpu_bench.py --kiln build-gpu/kiln --out /tmp/gpu_bench            # on the GPU
  python3 tools/bench/gpu_bench.py --kiln build/kiln --device cpu --smoke --out /tmp/gb  # plumbing
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODELS = {
    # name: (kind, config) -- transformers BertConfig fields for the text models
    "bert-base": ("bert", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                               intermediate_size=3072, vocab_size=30522, max_position_embeddings=512)),
    "minilm-l6": ("bert", dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                               intermediate_size=1536, vocab_size=30522, max_position_embeddings=512)),
    "resnet-50": ("resnet50", {}),
}
SMOKE = {
    "bert-base": ("bert", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=128, vocab_size=1000, max_position_embeddings=128)),
    "resnet-50": ("resnet18", {}),
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build_module(kind, cfg, seed):
    import torch
    torch.manual_seed(seed)
    if kind == "bert":
        from transformers import BertConfig, BertModel
        c = BertConfig(hidden_act="gelu", attn_implementation="eager", **cfg)
        return BertModel(c, add_pooling_layer=False).eval()
    import torchvision
    return getattr(torchvision.models, kind)(weights=None).eval()


class TextWrap:
    """BertModel returns a ModelOutput; the export and the timings take last_hidden_state."""

    def __init__(self, m):
        import torch

        class W(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state

        self.module = W(m).eval()


def export(module, kind, path, seq, vocab):
    import torch
    if kind == "bert":
        ids = torch.randint(0, vocab, (2, seq))
        args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
        names = ["input_ids", "attention_mask", "token_type_ids"]
        axes = {n: {0: "batch", 1: "seq"} for n in names}
        axes["last_hidden_state"] = {0: "batch", 1: "seq"}
        outs = ["last_hidden_state"]
    else:
        args = (torch.randn(2, 3, 224, 224),)
        names, outs = ["pixel_values"], ["logits"]
        axes = {"pixel_values": {0: "batch"}, "logits": {0: "batch"}}
    torch.onnx.export(module, args, path, input_names=names, output_names=outs, dynamic_axes=axes,
                      opset_version=17, dynamo=False)


def torch_inputs(kind, batch, seq, vocab, dev, seed):
    import torch
    g = torch.Generator().manual_seed(seed)
    if kind == "bert":
        ids = torch.randint(0, vocab, (batch, seq), generator=g)
        return (ids.to(dev), torch.ones_like(ids).to(dev), torch.zeros_like(ids).to(dev))
    return (torch.randn(batch, 3, 224, 224, generator=g).to(dev),)


def time_torch(fn, args, dev, warmup, iters):
    import torch
    with torch.inference_mode():
        for _ in range(warmup):
            fn(*args)
        times = []
        for _ in range(iters):
            if dev == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn(*args)
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                fn(*args)
                times.append((time.perf_counter() - t0) * 1e3)
    return times


def time_kiln(kiln, onnx_path, kind, batch, seq, dev, precision, warmup, iters):
    cmd = [kiln, "bench", onnx_path, "--batch", str(batch), "--iters", str(iters), "--warmup", str(warmup),
           "--device", dev, "--precision", precision, "--json"]
    if kind == "bert":
        cmd += ["--seq", str(seq)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"kiln bench failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1]
    j = json.loads(line)
    return j["times_ms"], j.get("peak_device_bytes")


def ort_session(onnx_path, dev):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    want = "CUDAExecutionProvider" if dev == "cuda" else "CPUExecutionProvider"
    if want not in ort.get_available_providers():
        return None
    return ort.InferenceSession(onnx_path, providers=[want])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--models", default="bert-base,minilm-l6,resnet-50")
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--vision-batches", default="1,32")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (its compile time)")
    ap.add_argument("--smoke", action="store_true", help="tiny models, one round: checks the plumbing")
    ap.add_argument("--budget-s", type=float, default=330, help="stop starting new points after this")
    a = ap.parse_args()

    import torch
    os.makedirs(a.out, exist_ok=True)
    t_start = time.time()
    models = SMOKE if a.smoke else MODELS
    if a.smoke:
        a.batches, a.vision_batches, a.seq, a.rounds, a.iters, a.warmup = "1,4", "1", 32, 1, 3, 1
    dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[a.precision]
    rows = []
    work = tempfile.mkdtemp(prefix="kiln_gpu_bench_")
    for name in a.models.split(","):
        if name not in models:
            continue
        kind, cfg = models[name]
        vocab = cfg.get("vocab_size", 0)
        try:
            m = build_module(kind, cfg, seed=0)
        except ImportError as e:
            log(f"{name}: skipped, {e}")
            continue
        mod = TextWrap(m).module if kind == "bert" else m
        path = os.path.join(work, f"{name}.onnx")
        t0 = time.time()
        export(mod, "bert" if kind == "bert" else "vision", path, a.seq, vocab)
        log(f"{name}: exported in {time.time() - t0:.1f} s")
        tk = "bert" if kind == "bert" else "vision"
        mod_dev = mod.to(a.device).to(dt)
        compiled = None
        if not a.no_compile and a.device == "cuda":
            compiled = torch.compile(mod_dev)
        ort_s = ort_session(path, a.device) if a.precision == "fp32" else None
        batches = a.batches if tk == "bert" else a.vision_batches
        for b in [int(x) for x in batches.split(",")]:
            if time.time() - t_start > a.budget_s:
                log(f"budget of {a.budget_s} s spent: {name} batch {b} and later points not run")
                break
            args = torch_inputs(tk, b, a.seq, vocab, a.device, seed=b)
            if tk == "vision":
                args = tuple(x.to(dt) for x in args)
            res = {"eager": [], "compile": [], "kiln": [], "ort": []}
            peaks = {}
            if a.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            for _ in range(a.rounds):
                try:
                    ts, pk = time_kiln(a.kiln, path, tk, b, a.seq, a.device, a.precision, a.warmup, a.iters)
                    res["kiln"] += ts
                    peaks["kiln"] = pk
                except Exception as e:  # noqa: BLE001 -- the row records why kiln has no figure
                    res["kiln_error"] = str(e)
                res["eager"] += time_torch(mod_dev, args, a.device, a.warmup, a.iters)
                if a.device == "cuda":
                    peaks["eager"] = torch.cuda.max_memory_allocated()
                if compiled is not None:
                    res["compile"] += time_torch(compiled, args, a.device, a.warmup, a.iters)
                if ort_s is not None:
                    feeds = {i.name: x.cpu().numpy() for i, x in zip(ort_s.get_inputs(), args)}
                    res["ort"] += time_torch(lambda **kw: ort_s.run(None, feeds), (), "cpu", a.warmup, a.iters)
            row = {"model": name, "batch": b, "seq": a.seq if tk == "bert" else None, "precision": a.precision,
                   "device": a.device, "peak_device_bytes": peaks}
            for k in ("kiln", "eager", "compile", "ort"):
                if res[k]:
                    p50 = statistics.median(res[k])
                    row[f"{k}_p50_ms"] = round(p50, 4)
                    row[f"{k}_items_per_s"] = round(b / p50 * 1e3, 1)
            if "kiln_error" in res:
                row["kiln_error"] = res["kiln_error"]
            for k in ("eager", "compile", "ort"):
                if f"kiln_p50_ms" in row and f"{k}_p50_ms" in row:
                    row[f"kiln_over_{k}"] = round(row["kiln_p50_ms"] / row[f"{k}_p50_ms"], 3)
            rows.append(row)
            log(json.dumps(row))

    targets = check_targets(rows)
    out = {"rows": rows, "targets": targets, "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu"}
    with open(os.path.join(a.out, "gpu_bench.json"), "w") as f:
        json.dump(out, f, indent=1)
    md = table(rows, targets)
    with open(os.path.join(a.out, "gpu_bench.md"), "w") as f:
        f.write(md)
    plot(rows, os.path.join(a.out, "gpu_bench.png"))
    print(md)
    return 0 if rows else 1


def check_targets(rows):
    """The issue's targets, each with the figure it was judged on (None: that point was not run)."""
    def get(model, batch, key):
        for r in rows:
            if r["model"] == model and r["batch"] == batch and key in r:
                return r[key]
        return None
    t = []
    v = get("bert-base", 256, "kiln_over_compile")
    t.append({"target": "BERT-base fp16 b256: >= 1.3x torch.compile throughput",
              "figure": None if v is None else round(1 / v, 3), "met": None if v is None else 1 / v >= 1.3})
    for b, lim in ((32, 0.5), (256, 2.0)):
        v = get("minilm-l6", b, "kiln_p50_ms")
        t.append({"target": f"MiniLM-L6 fp16 b{b}: under {lim} ms", "figure": v,
                  "met": None if v is None else v < lim})
    for r in rows:
        if r["batch"] == 1 and "kiln_over_eager" in r:
            t.append({"target": f"{r['model']} b1: latency below PyTorch eager", "figure": r["kiln_over_eager"],
                      "met": r["kiln_over_eager"] < 1.0})
    return t


def table(rows, targets):
    h = ("| model | batch | kiln p50 ms | eager p50 ms | compile p50 ms | ORT p50 ms | kiln items/s | "
         "kiln/eager | kiln/compile | kiln peak MB | eager peak MB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    f = lambda r, k: "" if r.get(k) is None else f"{r[k]}"  # noqa: E731
    mb = lambda v: "" if not v else f"{v / 2**20:.0f}"  # noqa: E731
    for r in rows:
        pk = r.get("peak_device_bytes", {})
        h += (f"| {r['model']} | {r['batch']} | {f(r, 'kiln_p50_ms')} | {f(r, 'eager_p50_ms')} | {f(r, 'compile_p50_ms')} | "
              f"{f(r, 'ort_p50_ms')} | {f(r, 'kiln_items_per_s')} | {f(r, 'kiln_over_eager')} | "
              f"{f(r, 'kiln_over_compile')} | {mb(pk.get('kiln'))} | {mb(pk.get('eager'))} |\n")
        if r.get("kiln_error"):
            h += f"| {r['model']} | {r['batch']} | kiln failed: {r['kiln_error'][:120]} |\n"
    h += "\n| target | figure | met |\n|---|---:|---|\n"
    for t in targets:
        h += f"| {t['target']} | {t['figure']} | {t['met']} |\n"
    return h


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(5 * max(1, len(models)), 4), squeeze=False)
    for ax, m in zip(axes[0], models):
        rs = [r for r in rows if r["model"] == m]
        for k in ("kiln", "eager", "compile", "ort"):
            pts = [(r["batch"], r[f"{k}_items_per_s"]) for r in rs if f"{k}_items_per_s" in r]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(m)
        ax.set_xlabel("batch")
        ax.set_ylabel("items/s")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())
