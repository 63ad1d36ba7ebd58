#!/usr/bin/env python3
"""textgen.fp16: float16 exports generate, their caches and logits in float16.

Optimum / onnx-community publish fp16 variants of their exports: every float in the graph, the past
inputs, the presents and the logits included, is float16. The fixtures are the fp32 tests' own
exports (textgen_models.py's tiny Qwen2, textgen_parity.py's tiny Llama, both torch.onnx.export
with the past as explicit tensors under Optimum's names) converted by ONNX Runtime's
convert_float_to_float16 (keep_io_types=False, so the past and logits are float16 on the graph's
interface). The reference is ONNX Runtime running that same fp16 file in a greedy loop written
here: a left-padded batch, positions counting the real tokens, each step fed the previous step's
presents as its past (the exact past, as ONNX Runtime's own generate loops do).
Checks, per model:
  the fp16 file declares float16 past inputs and logits (the conversion did what the test needs);
  `kiln generate --stats` runs and says the past is read in place in both layers (the CPU fuses a
  float16 attention, its scale a float16 constant, and KnSdpa reads the float16 past apart);
  kiln's greedy ids == ONNX Runtime's for 4 prompts at batch 1 and as one left-padded batch of 4
  (N_NEW tokens each, cut after EOS), and 100 tokens for one prompt (the cache widening), the ids varied enough that the cache decides them; the one
  allowance is a float16 near tie (compare(): at most one row per check, its first difference a
  pick ONNX Runtime scores within TIE_ULPS float16 steps of its own; the tiny Llama's
  "日本 numbers 1 2 3" meets one at its 6th token, 72 vs 169, 4.4009 vs 4.3997 in float32).
Prints "N passed, N failed" last; exits 0 saying why it skipped when torch / transformers /
onnxruntime / onnx are missing.

Usage: textgen_fp16.py --kiln build/kiln [--keep DIR]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import textgen_models as tm  # noqa: E402
import textgen_parity as tp  # noqa: E402

N_NEW = 24
TIE_ULPS = 2


def to_fp16(src, dst):
    """A copy of the model folder src whose model.onnx is converted to float16, interface included."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    shutil.copytree(src, dst)
    m = convert_float_to_float16(onnx.load(os.path.join(src, "model.onnx")), keep_io_types=False)
    onnx.save(m, os.path.join(dst, "model.onnx"))
    elem = {v.name: v.type.tensor_type.elem_type for v in list(m.graph.input) + list(m.graph.output)}
    return dst, elem


def ort_greedy(path, prompts, pad, eos_ids, n_new):
    """ONNX Runtime's greedy ids for a left-padded batch of id lists, each row cut after EOS. Rows
    that finished keep running (their ids are dropped): rows do not see each other."""
    import numpy as np
    import onnxruntime as ort
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    past_in = [i for i in s.get_inputs() if i.name.startswith("past_key_values.")]
    B, P = len(prompts), max(len(p) for p in prompts)
    ids = np.array([[pad] * (P - len(p)) + p for p in prompts], np.int64)
    mask = np.array([[0] * (P - len(p)) + [1] * len(p) for p in prompts], np.int64)
    pos = np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 1).astype(np.int64)
    past = {i.name: np.zeros((B, i.shape[1], 0, i.shape[3]), np.float16) for i in past_in}
    got = [[] for _ in range(B)]
    for _ in range(n_new):
        out = s.run(None, {"input_ids": ids, "attention_mask": mask, "position_ids": pos, **past})
        assert out[0].dtype == np.float16, out[0].dtype
        nxt = out[0][:, -1].astype(np.float32).argmax(axis=1)
        for r in range(B):
            got[r].append(int(nxt[r]))
        past = {n.replace("present.", "past_key_values."): v for n, v in zip(names[1:], out[1:])}
        ids = nxt.reshape(B, 1).astype(np.int64)
        pos = pos[:, -1:] + 1
        mask = np.concatenate([mask, np.ones((B, 1), np.int64)], axis=1)
    rows = []
    for r in got:
        cut = next((i + 1 for i, t in enumerate(r) if t in eos_ids), len(r))
        rows.append(r[:cut])
    return rows


def ort_step_logits(path, ids):
    """ONNX Runtime's float16 logits (as float32) for the token after ids, fed whole with an empty past."""
    import numpy as np
    import onnxruntime as ort
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),
            "position_ids": np.arange(len(ids), dtype=np.int64)[None]}
    for i in s.get_inputs():
        if i.name.startswith("past_key_values."):
            feed[i.name] = np.zeros((1, i.shape[1], 0, i.shape[3]), np.float16)
    return s.run(None, feed)[0][0, -1].astype(np.float32)


def compare(path, prompts, got, want):
    """(ok, detail): kiln's rows == ONNX Runtime's, but for float16 near ties. Two float16 runtimes
    round different intermediates (kiln's fused kernels keep float32 inside; ONNX Runtime rounds
    between its ops), so two logits within TIE_ULPS float16 steps of each other may swap. At a row's
    first difference, ONNX Runtime's logit for kiln's pick must be within TIE_ULPS steps of its own
    top one (the rest of the row then follows another prefix and is not compared); at most one row
    of a check may differ that way."""
    import math
    ties, bad = [], []
    for r, (g, w) in enumerate(zip(got, want)):
        if g == w:
            continue
        i = next((k for k in range(min(len(g), len(w))) if g[k] != w[k]), None)
        if i is None:
            bad.append(f"row {r}: lengths {len(g)} / {len(w)}")
            continue
        lg = ort_step_logits(path, prompts[r] + w[:i])
        top = float(lg[w[i]])
        ulp = 2.0 ** (math.floor(math.log2(max(abs(top), 2 ** -14))) - 10)
        gap = top - float(lg[g[i]])
        (ties if gap <= TIE_ULPS * ulp else bad).append(
            f"row {r} step {i}: kiln {g[i]} ort {w[i]}, ort logits {float(lg[g[i]]):.6g} / {top:.6g} "
            f"({gap / ulp:.1f} float16 steps)")
    ok = not bad and len(ties) <= 1
    return ok, "; ".join(["near tie " + t for t in ties] + bad) + ("" if ok or bad else " (more than one row)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--keep", help="build in this folder and keep it")
    args = ap.parse_args()
    try:
        import numpy  # noqa: F401
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxruntime.transformers.float16  # noqa: F401
        import tokenizers  # noqa: F401
        import torch
        import transformers
    except ImportError as e:
        print(f"SKIP: {e} (torch, transformers, onnx and onnxruntime are needed to build the reference)")
        print("0 passed, 0 failed, 1 skipped")
        return 0
    torch.set_num_threads(1)
    d = args.keep or tempfile.mkdtemp(prefix="kiln_textgen_fp16_")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d, exist_ok=True)
    rep = tp.Report()
    prompts = tp.PROMPTS[:4]
    inputs = [{"input": p} for p in prompts]
    try:
        Q, _, q_eos, q_pad = tm.build(torch, transformers, d, "qwen2")
        qtok = transformers.AutoTokenizer.from_pretrained(Q)
        tok, _, eos = tp.build(d, torch, transformers)
        _, LL = tp.export_llama(d, torch, transformers, tok, eos)
        cases = (("qwen2", Q, [qtok(p)["input_ids"] for p in prompts], q_pad, q_eos),
                 ("llama", LL, [tok.encode(p).ids for p in prompts], eos, [eos]))
        for name, folder, ids, pad, eos_ids in cases:
            F, elem = to_fp16(folder, folder + "_fp16")
            onnx_f16 = 10
            rep.check(f"{name} fp16: past, presents and logits are float16 in the file",
                      elem.get("past_key_values.0.key") == onnx_f16 and elem.get("present.0.value") == onnx_f16
                      and elem.get("logits") == onnx_f16, str({k: elem.get(k) for k in ("past_key_values.0.key",
                                                                                        "logits")}))
            p = subprocess.run([args.kiln, "generate", "--model", F, "--max-new-tokens", "8", "--stats",
                                "--no-chat-template", prompts[2]], capture_output=True)
            err = p.stderr.decode(errors="replace")
            m = re.search(r"past read in place in (\d+) layers( \(past copied: [^)]*\))?", err)
            rep.check(f"{name} fp16: generates, past read in place in both layers (CPU: fused float16 attention)",
                      p.returncode == 0 and m is not None and m.group(1) == "2",
                      m.group(0) if m else err.strip()[-300:])
            want1 = [ort_greedy(os.path.join(F, "model.onnx"), [q], pad, eos_ids, N_NEW)[0] for q in ids]
            raw = tp.results(tp.kiln_run(args, F, inputs, "--max-new-tokens", N_NEW, "--no-chat-template",
                                         "--prompt-ids"))
            rep.check(f"{name} fp16: prompt ids == the tokenizer's", [g["output"].get("PromptTokenIds")
                                                                      for g in raw] == ids)
            got1 = [g["output"]["TokenIds"] for g in raw]
            distinct = len(set(t for r in want1 for t in r))
            ok, why = compare(os.path.join(F, "model.onnx"), ids, got1, want1)
            rep.check(f"{name} fp16: greedy batch 1 == ONNX Runtime ({len(prompts)} prompts)", ok and distinct > 8,
                      f"{distinct} distinct ids {why}" + ("" if ok else f" kiln {got1} ort {want1}"))
            # 100 tokens: the cache widens from 64 positions to 128 on the way (gen_relayout in float16)
            w100 = ort_greedy(os.path.join(F, "model.onnx"), [ids[2]], pad, eos_ids, 100)
            g100 = [g["output"]["TokenIds"] for g in tp.results(tp.kiln_run(
                args, F, inputs[2:3], "--max-new-tokens", 100, "--no-chat-template"))]
            ok, why = compare(os.path.join(F, "model.onnx"), [ids[2]], g100, w100)
            rep.check(f"{name} fp16: 100 tokens == ONNX Runtime", ok and len(w100[0]) > 64,
                      f"{len(w100[0])} ids {why}" + ("" if ok else f" kiln {g100} ort {w100}"))
            want4 = ort_greedy(os.path.join(F, "model.onnx"), ids, pad, eos_ids, N_NEW)
            got4 = [g["output"]["TokenIds"] for g in tp.results(tp.kiln_run(
                args, F, inputs, "--max-new-tokens", N_NEW, "--batch-size", 4, "--no-chat-template"))]
            ok, why = compare(os.path.join(F, "model.onnx"), ids, got4, want4)
            rep.check(f"{name} fp16: greedy batch 4 (left padded) == ONNX Runtime", ok,
                      why + ("" if ok else f" kiln {got4} ort {want4}"))
    except Exception as e:
        rep.check("run", False, repr(e)[:2000])
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    print(f"{rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
