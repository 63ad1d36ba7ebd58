#!/usr/bin/env python3
"""Training a model that ONNX Runtime's transformer optimizer fused: a random-init 2-layer BERT
(hidden 32, 4 heads, eager attention, every weight perturbed so the exporter ties no two equal
initializers) exported by torch.onnx.export, then optimised by optimize_model(model_type="bert") at
opt_level 2 into com.microsoft Attention (with EmbedLayerNormalization's [B] mask_index), Attention
with the 2-D mask (attention_mask_format 2) and MultiHeadAttention; SkipLayerNormalization and
BiasGelu as well. Each file is trained by kiln (tests/train/train_driver.c) for STEPS steps of AdamW
with clipping on a token-classification cross-entropy over last_hidden_state (labels -100 on
padding), the embeddings frozen (EmbedLayerNormalization has no gradient rule), on the same
batches as the unoptimised export. The fusions only regroup parameters (Q, K and V weights
concatenated), and AdamW with a global-norm clip is elementwise in them, so every step's loss must
agree with the unoptimised model's within 1e-4 relative, and the weights both files keep under
the same name (the feed-forward MatMuls; with MultiHeadAttention also Q, K, V) within 1e-4.

Usage: python3 tests/train_ort_attention.py --driver build/tests/train_driver --work DIR
Prints PASS or FAIL last; exits non-zero on a failure."""
import argparse
import contextlib
import io
import os
import subprocess
import sys
import warnings

import numpy as np
import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ort_optimizer_parity import HIDDEN, VARIANTS, make_config, optimise  # noqa: E402

STEPS = 6
LOSS_RTOL = 1e-4
# AdamW divides by the root of the second moment, so a weight whose gradient is near 0 turns float32
# rounding of a different summation order into update noise: tests/train_parity.py allows 1e-4 too
WEIGHT_ATOL = 1e-4
B, S = 3, 9


def export(path):
    import torch
    import transformers
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(make_config("bert", "eager")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    names = ["input_ids", "attention_mask", "token_type_ids"]

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, *xs):
            return self.m(**dict(zip(names, xs))).last_hidden_state

    ids = np.ones((B, S), np.int64)
    args = tuple(torch.from_numpy(a) for a in (ids, ids, ids * 0))
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrap(), args, path, input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=14, dynamo=False)


def batches():
    rng = np.random.default_rng(5)
    out = []
    for _ in range(2):
        lens = rng.integers(3, S + 1, B)
        lens[0] = S
        mask = (np.arange(S)[None, :] < lens[:, None]).astype(np.int64)
        ids = rng.integers(3, 100, (B, S)).astype(np.int64)
        ids[mask == 0] = 1
        tt = (np.arange(S)[None, :] >= 5).astype(np.int64) * mask
        labels = rng.integers(0, HIDDEN, (B, S)).astype(np.int64)
        labels[mask == 0] = -100
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": tt, "labels": labels})
    return [out[s % 2] for s in range(STEPS)]  # two batches in turn, so learning shows


def trainable(path):
    """Patterns for every float initializer of more than one element outside the embeddings (a
    pattern per name prefix: the driver's plan lines are short)."""
    m = onnx.load(path)
    names = [t.name for t in m.graph.initializer
             if t.data_type == onnx.TensorProto.FLOAT and int(np.prod(t.dims)) > 1
             and not t.name.startswith("m.embeddings.")]
    pats = set()
    for n in names:
        for prefix in ("m.encoder.", "onnx::MatMul_", "Attention_"):
            if n.startswith(prefix):
                pats.add(prefix + "*")
                break
        else:
            pats.add(n)
    return sorted(pats)


def train(driver, work, model, data):
    os.makedirs(work, exist_ok=True)
    plan = (f"model {model}\ntrainable {','.join(trainable(model))}\noptim adamw 1e-2 0.01\nclip 1.0\n"
            f"loss ce last_hidden_state -100 2\nout {work}\n")
    for s, feeds in enumerate(data):
        for k, v in feeds.items():
            path = os.path.join(work, f"s{s}_{k}.bin")
            np.ascontiguousarray(v).tofile(path)
            plan += f"batch {k} i64 {v.ndim} {' '.join(str(d) for d in v.shape)} {path}\n"
        plan += "step\n"
    with open(os.path.join(work, "plan.txt"), "w") as f:
        f.write(plan)
    r = subprocess.run([driver, os.path.join(work, "plan.txt")], capture_output=True, text=True)
    if r.returncode != 0:
        return None, None, r.stderr.strip()
    losses = [float(x) for x in open(os.path.join(work, "losses.txt"))]
    params = {}
    for line in open(os.path.join(work, "params.txt")):
        name, n, file = line.split()
        params[name] = np.fromfile(os.path.join(work, file), dtype=np.float32)
    return losses, params, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--driver", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    src = os.path.join(args.work, "bert_eager.onnx")
    export(src)
    data = batches()
    ref_losses, ref_params, err = train(args.driver, os.path.join(args.work, "ref"), src, data)
    if err:
        print(f"unoptimised model: {err}\nFAIL")
        return 1
    print(f"unoptimised: {len(ref_params)} trained tensors, losses {' '.join(f'{x:.6f}' for x in ref_losses)}")
    if not ref_losses[STEPS - 2] < ref_losses[0]:
        print("the unoptimised model did not learn\nFAIL")
        return 1
    ok = True
    for name, level, extra in VARIANTS:
        if name not in ("opt2", "opt2_mask2d", "opt2_mha"):
            continue
        dst = os.path.join(args.work, f"bert_{name}.onnx")
        ops = optimise(src, dst, level, extra)
        want = "MultiHeadAttention" if name == "opt2_mha" else "Attention"
        if ops.get(want, 0) != 2:
            print(f"{name}: the optimizer made {dict(ops)}, not 2 {want}")
            ok = False
            continue
        losses, params, err = train(args.driver, os.path.join(args.work, name), dst, data)
        if err:
            print(f"{name}: {err}")
            ok = False
            continue
        rel = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses))
        shared = sorted(set(params) & set(ref_params))
        werr = max((float(np.abs(params[n] - ref_params[n]).max()) for n in shared), default=float("inf"))
        good = len(losses) == STEPS and rel <= LOSS_RTOL and len(shared) > 0 and werr <= WEIGHT_ATOL
        print(f"{name} ({dict(ops)}): {len(params)} trained tensors, losses max rel diff {rel:.3g}, "
              f"{len(shared)} shared weights max abs diff {werr:.3g}: {'ok' if good else 'FAIL'}")
        ok &= good
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
