#!/usr/bin/env python3
"""kiln against ONNX Runtime, PyTorch eager and torch.compile on the same model, inputs, precision
and thread count, interleaved in one run (A B C D A B C D ...).

For each model of the table below (or an ONNX file given with --model) and each (batch, seq) point:
  1. `kiln bench --save-inputs` writes the inputs, generated from the model's declared inputs;
     every system is fed those same files.
  2. Parity first: kiln exec, ONNX Runtime and PyTorch (eager and compiled) each run them once and
     their outputs are compared (max abs diff). Any disagreement beyond --atol stops the run
     with exit status 1: timings of different answers are not worth comparing.
  3. --rounds rounds, each timing --iters runs of every system in turn (kiln through
     `kiln bench --inputs DIR --json`, whose per-run times come back in times_ms). The runs of all
     rounds are pooled per system for p50/p90/p99.
Then it prints a table (p50 latency and ratio to kiln per system), and writes compare.csv,
compare.json, table.md and compare.png (throughput against batch size, when matplotlib is installed)
into --out.

  python3 tools/bench/compare.py --models minilm-l6,bert-base --batch 1,8,32 --seq 128 \\
      --threads $(nproc) --out tools/bench/results_cpu
  python3 tools/bench/compare.py --models bert-base --device cuda --precision fp16 --batch 1,8,32,128 --seq 128 \\
      --out tools/bench/results_gpu

The models come from the generators in tools/gen. When PyTorch and transformers are installed, the
weights are those of a randomly initialised transformers model saved as safetensors, which the
generator turns into ONNX, so PyTorch and the ONNX systems run the same weights; without PyTorch
the generator's own random weights are used and the PyTorch columns are skipped with a note.
Adding a model is one entry in MODELS.

Threads: kiln --threads T, ONNX Runtime intra_op_num_threads=T (inter_op 1), torch.set_num_threads(T)
(interop 1). Thread pools of the other systems are left to go idle (--gap seconds) before each
system's turn. On the CPU every system runs fp32 (--precision other than fp32 is noted and ignored).
"""
import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
GEN = os.path.join(ROOT, "tools", "gen")

# name -> how to make it. gen: the tools/gen script, which takes --preset P --out F (random weights)
# and --safetensors F --config C --out F (a transformers checkpoint). hf: the transformers class
# and config that PyTorch runs (the checkpoint it saves is what the generator converts).
# torch_output: the attribute of the transformers output that matches the ONNX graph's first output.
BERT = dict(model_type="bert", hidden_act="gelu", layer_norm_eps=1e-12, type_vocab_size=2)
MODELS = {
    "bert-tiny": dict(gen="gen_bert.py", preset="bert-tiny", hf="BertModel", hf_kwargs=dict(add_pooling_layer=False),
                      config=dict(BERT, vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=256, max_position_embeddings=128),
                      torch_output="last_hidden_state"),
    "minilm-l6": dict(gen="gen_bert.py", preset="minilm-l6", hf="BertModel", hf_kwargs=dict(add_pooling_layer=False),
                      config=dict(BERT, vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                  intermediate_size=1536, max_position_embeddings=512),
                      torch_output="last_hidden_state"),
    "bert-base": dict(gen="gen_bert.py", preset="bert-base", hf="BertModel", hf_kwargs=dict(add_pooling_layer=False),
                      config=dict(BERT, vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                  intermediate_size=3072, max_position_embeddings=512),
                      torch_output="last_hidden_state"),
}

SYSTEMS = ["kiln", "ort", "torch", "torch-compile"]
LABELS = {"kiln": "kiln", "ort": "ONNX Runtime", "torch": "PyTorch eager", "torch-compile": "torch.compile"}
# default parity tolerance per precision, on max abs diff of the outputs
ATOL = {"fp32": 1e-3, "tf32": 2e-2, "fp16": 5e-2, "bf16": 1e-1}


def note(notes, msg):
    notes.append(msg)
    print(f"note: {msg}", flush=True)


def try_import_torch():
    try:
        import torch
        import transformers
        return torch, transformers
    except Exception:  # any failure to import means: no PyTorch columns
        return None, None


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"compare.py: command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    return p


def read_pb_dir(d, prefix):
    out, k = [], 0
    while os.path.exists(os.path.join(d, f"{prefix}{k}.pb")):
        t = onnx.TensorProto()
        with open(os.path.join(d, f"{prefix}{k}.pb"), "rb") as f:
            t.ParseFromString(f.read())
        out.append((t.name, numpy_helper.to_array(t)))
        k += 1
    return out


# ---- building the model ----

def build_model(name, entry, work, torch, transformers, seed, notes):
    """ONNX path, and the PyTorch module running the same weights (None without PyTorch)."""
    onnx_path = os.path.join(work, f"{name}.onnx")
    gen = os.path.join(GEN, entry["gen"])
    if torch is not None:
        transformers.utils.logging.disable_progress_bar()
        torch.manual_seed(seed)
        cfg = transformers.AutoConfig.for_model(**entry["config"])
        cls = getattr(transformers, entry["hf"])
        m = cls(cfg, **entry.get("hf_kwargs", {})).eval()
        ckpt = os.path.join(work, "hf")
        m.save_pretrained(ckpt, safe_serialization=True)
        run([sys.executable, gen, "--safetensors", os.path.join(ckpt, "model.safetensors"), "--config",
             os.path.join(ckpt, "config.json"), "--out", onnx_path])
        return onnx_path, m
    run([sys.executable, gen, "--preset", entry["preset"], "--seed", str(seed), "--out", onnx_path])
    return onnx_path, None


# ---- the systems: each has prepare (once per model), run_once(feed) -> outputs, and timing ----

class Kiln:
    name = "kiln"

    def __init__(self, a, model):
        self.a, self.model = a, model
        self.common = ["--threads", str(a.threads), "--device", a.device, "--precision", a.kiln_precision]
        self.last = {}

    def outputs(self, in_dir, tmp):
        out = os.path.join(tmp, "kiln_out")
        shutil.rmtree(out, ignore_errors=True)
        run([self.a.kiln, "exec", self.model, "--inputs", in_dir, "--outputs", out] + self.common)
        return [v for _, v in read_pb_dir(out, "output_")]

    def time(self, in_dir, iters, warmup):
        p = run([self.a.kiln, "bench", self.model, "--inputs", in_dir, "--iters", str(iters), "--warmup", str(warmup), "--json"] + self.common)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        self.last = r
        return r["times_ms"]


class Ort:
    name = "ort"

    def __init__(self, a, model, ort, notes):
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        self.cuda = a.device.startswith("cuda")
        path = model
        if self.cuda:
            dev = int(a.device.split(":")[1]) if ":" in a.device else 0
            opts = {"device_id": dev, "use_tf32": 1 if a.precision == "tf32" else 0}
            if a.precision == "fp16":
                # ONNX Runtime runs the precision the graph has: convert the weights, keep fp32 inputs/outputs
                from onnxruntime.transformers.float16 import convert_float_to_float16
                path = os.path.join(os.path.dirname(model), "ort_fp16.onnx")
                onnx.save(convert_float_to_float16(onnx.load(model), keep_io_types=True), path)
            providers = [("CUDAExecutionProvider", opts)]
        else:
            providers = ["CPUExecutionProvider"]
        self.sess = ort.InferenceSession(path, so, providers=providers)
        self.out_names = [o.name for o in self.sess.get_outputs()]
        self.ort = ort

    def outputs(self, feed):
        return self.sess.run(None, feed)

    def time(self, feed, iters, warmup):
        if self.cuda:
            # outputs stay on the device, as kiln's and PyTorch's do; inputs are copied in each run
            b = self.sess.io_binding()
            for n in self.out_names:
                b.bind_output(n, "cuda")

            def once():
                for k, v in feed.items():
                    b.bind_cpu_input(k, v)
                self.sess.run_with_iobinding(b)
                b.synchronize_outputs()
        else:
            def once():
                self.sess.run(None, feed)
        for _ in range(warmup):
            once()
        ts = []
        for _ in range(iters):
            t0 = time.perf_counter()
            once()
            ts.append((time.perf_counter() - t0) * 1e3)
        return ts


class Torch:
    def __init__(self, a, module, entry, torch, compiled):
        self.name = "torch-compile" if compiled else "torch"
        self.torch, self.a, self.entry = torch, a, entry
        self.dev = torch.device(a.device if a.device.startswith("cuda") else "cpu")
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(a.precision) if self.dev.type == "cuda" else None
        self.dtype = dtype
        m = module.to(self.dev)
        if dtype is not None:
            m = m.to(dtype)
        if self.dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = a.precision == "tf32"
            torch.backends.cudnn.allow_tf32 = a.precision == "tf32"
        # one compiled graph per shape, as a benchmark wants; the cache must hold every sweep point
        if compiled:
            torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
            m = torch.compile(m, dynamic=False)
        self.m = m

    def _call(self, feed):
        t = self.torch
        kw = {k: t.from_numpy(v).to(self.dev) for k, v in feed.items()}
        if self.dtype is not None:  # float inputs (pixel values, past key/values) in the model's precision
            kw = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in kw.items()}
        out = getattr(self.m(**kw), self.entry["torch_output"])
        if self.dev.type == "cuda":
            t.cuda.synchronize()
        return out

    def outputs(self, feed):
        with self.torch.inference_mode():
            return [self._call(feed).float().cpu().numpy()]

    def time(self, feed, iters, warmup):
        ts = []
        with self.torch.inference_mode():
            for _ in range(warmup):
                self._call(feed)
            for _ in range(iters):
                t0 = time.perf_counter()
                self._call(feed)
                ts.append((time.perf_counter() - t0) * 1e3)
        return ts


# ---- results ----

def pct(ts, q):
    return float(np.percentile(np.asarray(ts), q))


def plot(rows, path, meta):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = sorted({(r["model"], r["seq"]) for r in rows}, key=lambda p: (p[0], p[1] or 0))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (model, seq) in zip(axes[0], panels):
        for sysname in SYSTEMS:
            pts = sorted((r["batch"], r["items_per_s"]) for r in rows if r["model"] == model and r["seq"] == seq and r["system"] == sysname)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=LABELS[sysname])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        batches = sorted({r["batch"] for r in rows if r["model"] == model})
        ax.set_xticks(batches)
        ax.set_xticklabels([str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel("throughput (items/s, higher is better)")
        ax.set_title(f"{model}" + (f", seq {seq}" if seq else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"{meta['device']} ({meta['device_name']}), {meta['precision']}, {meta['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--models", default="minilm-l6", help=f"comma-separated, from: {', '.join(MODELS)}")
    ap.add_argument("--model", help="an ONNX file instead (kiln and ONNX Runtime only)")
    ap.add_argument("--inputs", help="with --model: this input_K.pb folder instead of generated inputs (one point)")
    ap.add_argument("--batch", default="1,8,32")
    ap.add_argument("--seq", default="128")
    ap.add_argument("--pad-fraction", type=float, default=0.0, help="padding at the end of every row (kiln bench --pad-fraction)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--precision", default="fp32", choices=sorted(ATOL))
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10, help="timed runs per system per round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--gap", type=float, default=0.2, help="seconds of idle before each system's turn")
    ap.add_argument("--atol", type=float, help="parity tolerance on max abs diff (default by precision)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="folder for compare.csv, compare.json, table.md, compare.png")
    a = ap.parse_args()
    notes = []
    cuda = a.device.startswith("cuda")
    atol = a.atol if a.atol is not None else ATOL[a.precision]
    systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad or "kiln" not in systems:
        sys.exit(f"compare.py: --systems must include kiln and name only {', '.join(SYSTEMS)} (got {a.systems})")
    if not os.access(a.kiln, os.X_OK):
        sys.exit(f"compare.py: no kiln binary at {a.kiln} (build it, or pass --kiln)")
    if a.inputs and not a.model:
        sys.exit("compare.py: --inputs goes with --model")
    batches = [int(x) for x in a.batch.split(",")]
    seqs = [int(x) for x in a.seq.split(",")]
    a.kiln_precision = a.precision
    if not cuda and a.precision != "fp32":
        note(notes, f"--precision {a.precision} on the CPU: every system runs fp32")
        a.precision = "fp32"

    import onnxruntime as ort
    if "ort" in systems and cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
        note(notes, "ONNX Runtime has no CUDAExecutionProvider here (install onnxruntime-gpu): ONNX Runtime skipped")
        systems.remove("ort")
    if "ort" in systems and cuda and a.precision == "bf16":
        note(notes, "ONNX Runtime's CUDA EP does not run a bf16 graph: ONNX Runtime skipped")
        systems.remove("ort")
    torch = transformers = None
    if any(s.startswith("torch") for s in systems):
        torch, transformers = try_import_torch()
        if torch is None:
            note(notes, "PyTorch/transformers not installed: PyTorch eager and torch.compile columns skipped")
        elif a.model:
            note(notes, "--model is an ONNX file with no PyTorch definition: PyTorch columns skipped")
        elif cuda and not torch.cuda.is_available():
            note(notes, "this PyTorch has no CUDA device: PyTorch columns skipped")
        else:
            torch.set_num_threads(a.threads)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass
        if torch is None or a.model or (cuda and not torch.cuda.is_available()):
            systems = [s for s in systems if not s.startswith("torch")]
            torch = None

    kiln_version = run([a.kiln, "--version"]).stdout.strip().replace("\n", "; ")
    versions = {"kiln": kiln_version, "ort": f"onnxruntime {ort.__version__}"}
    if torch is not None:
        versions["torch"] = versions["torch-compile"] = f"torch {torch.__version__}, transformers {transformers.__version__}"
    device_name = cpu_name()
    if cuda and torch is not None and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(int(a.device.split(":")[1]) if ":" in a.device else 0)
    meta = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), host=platform.node(), device=a.device, device_name=device_name,
                cpus=os.cpu_count(), threads=a.threads, precision=a.precision, rounds=a.rounds, iters=a.iters, warmup=a.warmup,
                pad_fraction=a.pad_fraction, atol=atol, systems=systems, versions=versions, numpy=np.__version__,
                python=platform.python_version(), notes=notes,
                ratio="system p50 / kiln p50: above 1 means kiln is faster")

    stem = os.path.splitext(os.path.basename(a.model or ""))[0]
    if stem == "model":  # model zoo folders hold model.onnx: the folder names it
        stem = os.path.basename(os.path.dirname(os.path.abspath(a.model)))
    models = [(stem, dict(onnx=a.model))] if a.model else []
    for nm in ([] if a.model else a.models.split(",")):
        if nm not in MODELS:
            sys.exit(f"compare.py: unknown model '{nm}' (known: {', '.join(MODELS)})")
        models.append((nm, MODELS[nm]))

    rows, parity = [], []
    os.makedirs(a.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kiln-compare-") as work:
        for name, entry in models:
            mwork = os.path.join(work, name)
            os.makedirs(mwork)
            module = None
            if a.model:
                onnx_path = a.model
            else:
                print(f"== {name}: generating the model", flush=True)
                onnx_path, module = build_model(name, entry, mwork, torch, transformers, a.seed, notes)
            sysobjs = [Kiln(a, onnx_path)]
            if "ort" in systems:
                sysobjs.append(Ort(a, onnx_path, ort, notes))
            for s in ("torch", "torch-compile"):
                if s in systems and module is not None:
                    sysobjs.append(Torch(a, module, entry, torch, s == "torch-compile"))
            # inputs for every point, generated once by kiln from the model's declared inputs
            points = []
            if a.inputs:
                given = read_pb_dir(a.inputs, "input_")
                ids = [v for n, v in given if "input_ids" in n and v.ndim >= 2]
                points.append((given[0][1].shape[0] if given and given[0][1].ndim else 1, ids[0].shape[-1] if ids else None, a.inputs))
            else:
                in_root = os.path.join(mwork, "inputs")
                run([a.kiln, "bench", onnx_path, "--batch", a.batch, "--seq", a.seq, "--iters", "0", "--seed", str(a.seed + 1),
                     "--pad-fraction", str(a.pad_fraction), "--save-inputs", in_root])
                for b in batches:
                    for s in seqs:
                        if os.path.isdir(os.path.join(in_root, f"b{b}_s{s}")):
                            points.append((b, s, os.path.join(in_root, f"b{b}_s{s}")))
                        elif s == seqs[0]:  # no sequence axis (an image model): one point per batch
                            points.append((b, None, os.path.join(in_root, f"b{b}")))
            for b, seq, in_dir in points:
                feed = {k: np.array(v) for k, v in read_pb_dir(in_dir, "input_")}  # writable copies, for torch.from_numpy
                print(f"== {name} batch {b}" + (f" seq {seq}" if seq else "") + ": parity", flush=True)
                ref = sysobjs[0].outputs(in_dir, mwork)
                diffs = {"kiln": 0.0}
                for so in sysobjs[1:]:
                    got = so.outputs(feed)
                    pairs = list(zip(ref, got)) if so.name == "ort" else [(ref[0], got[0])]
                    d = 0.0
                    for r, g in pairs:
                        if r.shape != g.shape:
                            sys.exit(f"compare.py: OUTPUTS DISAGREE: {name} batch {b} seq {seq}: {so.name} gives shape {g.shape}, kiln {r.shape}")
                        d = max(d, float(np.abs(r.astype(np.float64) - g.astype(np.float64)).max()) if r.size else 0.0)
                    diffs[so.name] = d
                    parity.append(dict(model=name, batch=b, seq=seq, system=so.name, max_abs_diff=d, atol=atol, ok=bool(d <= atol)))
                    print(f"   {LABELS[so.name]:<14} max|diff| vs kiln {d:.3e}", flush=True)
                    if not d <= atol:
                        json.dump(dict(meta=meta, parity=parity), open(os.path.join(a.out, "compare.json"), "w"), indent=1)
                        sys.exit(f"compare.py: OUTPUTS DISAGREE: {name} batch {b} seq {seq}: {LABELS[so.name]} differs from kiln "
                                 f"by {d:.3e} (max abs), above --atol {atol:g}; no timings taken")
                # torch.compile compiles on its first call per shape: done above, outside the timings
                times = {so.name: [] for so in sysobjs}
                for r in range(a.rounds):
                    for so in sysobjs:
                        time.sleep(a.gap)
                        w = a.warmup if r == 0 or so.name == "kiln" else 0
                        times[so.name] += so.time(in_dir, a.iters, w) if so.name == "kiln" else so.time(feed, a.iters, w)
                k50 = pct(times["kiln"], 50)
                for so in sysobjs:
                    ts = times[so.name]
                    p50 = pct(ts, 50)
                    row = dict(model=name, device=a.device, precision=a.precision, threads=a.threads, batch=b, seq=seq, system=so.name,
                               version=versions[so.name], n_runs=len(ts), p50_ms=p50, p90_ms=pct(ts, 90), p99_ms=pct(ts, 99),
                               mean_ms=statistics.fmean(ts), min_ms=min(ts), items_per_s=b / p50 * 1e3,
                               tokens_per_s=(b * seq / p50 * 1e3) if seq else None, ratio_to_kiln=p50 / k50,
                               max_abs_diff=diffs[so.name], peak_arena_bytes=None, peak_host_rss_bytes=None, peak_device_bytes=None)
                    if so.name == "kiln":
                        for k in ("peak_arena_bytes", "peak_host_rss_bytes", "peak_device_bytes"):
                            row[k] = so.last.get(k)
                    rows.append(row)

    # ---- report ----
    hdr = f"{'model':<11} {'batch':>5} {'seq':>5} {'system':<14} {'p50 ms':>10} {'p90 ms':>10} {'items/s':>10} {'vs kiln':>8} {'max|diff|':>10}"
    lines = [hdr, "-" * len(hdr)]
    md = ["| model | batch | seq | system | p50 ms | p90 ms | items/s | tokens/s | p50 / kiln p50 | max abs diff |",
          "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        seq = r["seq"] if r["seq"] else "-"
        lines.append(f"{r['model']:<11} {r['batch']:>5} {seq:>5} {LABELS[r['system']]:<14} {r['p50_ms']:>10.3f} {r['p90_ms']:>10.3f} "
                     f"{r['items_per_s']:>10.1f} {r['ratio_to_kiln']:>8.2f} {r['max_abs_diff']:>10.2e}")
        tok = f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] else "-"
        md.append(f"| {r['model']} | {r['batch']} | {seq} | {LABELS[r['system']]} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | "
                  f"{r['items_per_s']:.1f} | {tok} | {r['ratio_to_kiln']:.2f} | {r['max_abs_diff']:.1e} |")
    print()
    print(f"{meta['device']} ({device_name}), {a.precision}, {a.threads} threads, {a.rounds} rounds x {a.iters} runs per system, interleaved")
    print("vs kiln = system p50 / kiln p50 (above 1: kiln is faster); max|diff| = max abs diff of the outputs against kiln's")
    print("\n".join(lines))
    for n in notes:
        print(f"note: {n}")
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(f"{meta['device']} ({device_name}), {a.precision}, {a.threads} threads, {meta['date']}. "
                f"Ratio: {meta['ratio']}.\n\n" + "\n".join(md) + "\n" + "".join(f"\nNote: {n}\n" for n in notes))
    fields = list(rows[0].keys()) if rows else []
    with open(os.path.join(a.out, "compare.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(a.out, "compare.json"), "w") as f:
        json.dump(dict(meta=meta, parity=parity, rows=rows), f, indent=1)
    try:
        plot(rows, os.path.join(a.out, "compare.png"), meta)
        print(f"wrote {a.out}/compare.csv, compare.json, table.md, compare.png")
    except ImportError:
        note(notes, "matplotlib not installed (pip install matplotlib): no plot")
        with open(os.path.join(a.out, "compare.json"), "w") as f:
            json.dump(dict(meta=meta, parity=parity, rows=rows), f, indent=1)
        print(f"wrote {a.out}/compare.csv, compare.json, table.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
