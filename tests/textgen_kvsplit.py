#!/usr/bin/env python3
"""textgen.kv_in_place: the Optimum layout's decode step reads its past where the generator keeps it.

The fixtures are textgen_parity.py's: a tiny random GPT-2 exported with past and position_ids by
tools/gen/gen_gpt2.py, and a tiny Llama (rotary positions, 4 query heads over 2 key/value heads,
repeat_kv in the graph) exported by torch.onnx.export, both with present = Concat(past, new) along
the sequence axis. On a CPU session the generator returns each present's new rows instead and the
fused attention (KnSdpa) reads the cache and the new rows apart, so no step copies its past.
Checks, for each model:
  `kiln generate --stats` says the past is read in place in every layer;
  `kiln generate --profile` over 100 tokens (the cache widening from bucket 64 to 128 on the way):
  KnSdpa runs once per layer and step, and the Concat calls are exactly those of the Concat nodes
  that are not along the sequence axis (rotary's rotate_half, axis -1) once per step: no Concat
  over the past runs (the copying path runs 2 per layer per step more);
  greedy ids == transformers' generate at batch 1 (4 prompts) and batch 4 (left padding), and for
  100 tokens.
Prints "N passed, N failed" last; exits 0 saying why it skipped when torch / transformers /
tokenizers are missing.

Usage: textgen_kvsplit.py --kiln build/kiln [--gen tools/gen] [--keep DIR]
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
import textgen_parity as tp  # noqa: E402

N_NEW = 24
LAYERS = 2


def concat_nodes_off_sequence(path):
    """Concat nodes of the ONNX file whose axis is not the 4-D caches' sequence axis (2 / -2) nor
    0 (shape arithmetic, which a plan computes ahead)."""
    import onnx
    n = 0
    for node in onnx.load(path).graph.node:
        if node.op_type != "Concat":
            continue
        axis = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), None)
        if axis not in (0, 2, -2):
            n += 1
    return n


def profile_calls(text, op):
    m = re.search(rf"^{op}\s+(\d+)\s", text, re.M)
    return int(m.group(1)) if m else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--gen", default=os.path.join(HERE, "..", "tools", "gen"))
    ap.add_argument("--keep", help="build in this folder and keep it")
    args = ap.parse_args()
    try:
        import torch
        import transformers
        import tokenizers  # noqa: F401
    except ImportError as e:
        print(f"SKIP: {e} (torch, transformers and tokenizers are needed to build the reference)")
        print("0 passed, 0 failed, 1 skipped")
        return 0
    torch.set_num_threads(1)
    d = args.keep or tempfile.mkdtemp(prefix="kiln_textgen_kv_")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d, exist_ok=True)
    rep = tp.Report()
    try:
        tok, model, eos = tp.build(d, torch, transformers)
        B = tp.export(args, d, "B", True, ".")
        lmodel, LL = tp.export_llama(d, torch, transformers, tok, eos)
        prompts = tp.PROMPTS[:4]
        inputs = [{"input": p} for p in prompts]
        for name, folder, mdl in (("gpt2", B, model), ("llama", LL, lmodel)):
            p = subprocess.run([args.kiln, "generate", "--model", folder, "--max-new-tokens", "100", "--stats",
                                "--profile", "--no-chat-template", prompts[2]], capture_output=True)
            err = p.stderr.decode(errors="replace")
            m = re.search(r"(\d+) tokens, .*past read in place in (\d+) layers", err)
            rep.check(f"{name}: past read in place in all {LAYERS} layers", p.returncode == 0 and m is not None
                      and int(m.group(2)) == LAYERS, (m.group(0) if m else err.strip()[-300:]))
            runs = int(m.group(1)) if m else 0
            sdpa, concat = profile_calls(err, "KnSdpa"), profile_calls(err, "Concat")
            want_concat = runs * concat_nodes_off_sequence(os.path.join(folder, "model.onnx"))
            rep.check(f"{name}: attention fused, one KnSdpa per layer and step", runs > 64 and sdpa == runs * LAYERS,
                      f"{runs} runs, {sdpa} KnSdpa calls")
            rep.check(f"{name}: no Concat over the past runs", runs > 0 and concat == want_concat,
                      f"{concat} Concat calls, {want_concat} off the sequence axis "
                      f"(copying the past would add {2 * LAYERS * runs})")
            w100 = tp.hf_generate(torch, mdl, tok, eos, [prompts[2]], max_new_tokens=100)[0]
            g100 = tp.results(tp.kiln_run(args, folder, inputs[2:3], "--max-new-tokens", 100))[0]["output"]["TokenIds"]
            rep.check(f"{name}: 100 tokens == transformers", g100 == w100 and len(w100) > 64,
                      f"{len(g100)} ids" + ("" if g100 == w100 else f" kiln {g100} hf {w100}"))
            want1 = [tp.hf_generate(torch, mdl, tok, eos, [q], max_new_tokens=N_NEW)[0] for q in prompts]
            got1 = [g["output"]["TokenIds"] for g in tp.results(tp.kiln_run(args, folder, inputs, "--max-new-tokens",
                                                                             N_NEW))]
            rep.check(f"{name}: greedy batch 1 == transformers ({len(prompts)} prompts)", got1 == want1,
                      "" if got1 == want1 else f"kiln {got1} hf {want1}")
            want4 = tp.hf_generate(torch, mdl, tok, eos, prompts, max_new_tokens=N_NEW)
            got4 = [g["output"]["TokenIds"] for g in tp.results(tp.kiln_run(args, folder, inputs, "--max-new-tokens",
                                                                             N_NEW, "--batch-size", 4))]
            rep.check(f"{name}: greedy batch 4 (left padded) == transformers", got4 == want4,
                      "" if got4 == want4 else f"kiln {got4} hf {want4}")
    except Exception as e:
        rep.check("run", False, repr(e)[:2000])
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    print(f"{rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
