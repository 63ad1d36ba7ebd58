#!/usr/bin/env python3
"""textgen.kv_in_place: the Optimum layout's decode step reads its past where the generator keeps it.

The fixtures are textgen_parity.py's: a tiny random GPT-2 exported with past and position_ids by
tools/gen/gen_gpt2.py, and a tiny Llama (rotary positions, 4 query heads over 2 key/value heads,
repeat_kv in the graph) exported by torch.onnx.export, both with present = Concat(past, new) along
the sequence axis; and textgen_models.py's tiny Gemma-3 (per-head q/k RMS norms before rotary,
query_pre_attn_scalar, both layers sliding-window ones; untied embeddings, as the tied ones make a
random Gemma-3 repeat its prompt's last token), whose traced cache keeps the last W-1 rows:
present = Slice(Concat(Slice(past, -(W-1)), new), -(W-1)). On a CPU session the generator returns
each present's new rows instead (the window's Slices dropped while its cache fits the window) and
the fused attention (KnSdpa) reads the cache and the new rows apart, so no step copies its past.
Checks, for each model:
  `kiln generate --stats` says the past is read in place in every layer;
  `kiln generate --profile` over 100 tokens (the cache widening from bucket 64 to 128 on the way):
  KnSdpa runs once per layer and step, and the Concat calls are exactly those of the Concat nodes
  that are not along the sequence axis (rotary's rotate_half, axis -1) once per step: no Concat
  over the past runs (the copying path runs 2 per layer per step more);
  greedy ids == transformers' generate at batch 1 (4 prompts) and batch 4 (left padding), and for
  100 tokens (Gemma-3: the prompts as text with the tokenizer's BOS, --no-chat-template).
And a Gemma-3 with a window of 48: 24 new tokens (within the window) read in place and == transformers
at batch 1 and 4; 100 tokens refused with the window named (kiln's fixed cache does not roll over).
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
import textgen_models as tm  # noqa: E402
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
        G, gmodel, g_eos, g_pad = tm.build(torch, transformers, d, "gemma3", tie=False)
        gtok = transformers.AutoTokenizer.from_pretrained(G)
        prompts = tp.PROMPTS[:4]
        inputs = [{"input": p} for p in prompts]

        def ref(mdl):  # transformers' greedy ids for text prompts, batch left-padded
            return lambda ps, n: tp.hf_generate(torch, mdl, tok, eos, ps, max_new_tokens=n)

        def gemma_ref(ps, n):  # the text with the tokenizer's special tokens, as --no-chat-template feeds it
            return tm.hf_generate(torch, gmodel, [gtok(p)["input_ids"] for p in ps], g_pad, g_eos, n)

        for name, folder, hf in (("gpt2", B, ref(model)), ("llama", LL, ref(lmodel)), ("gemma3", G, gemma_ref)):
            nct = ["--no-chat-template"] if name == "gemma3" else []
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
            w100 = hf([prompts[2]], 100)[0]
            g100 = tp.results(tp.kiln_run(args, folder, inputs[2:3], "--max-new-tokens", 100,
                                          *nct))[0]["output"]["TokenIds"]
            # many distinct ids: the attention, and so the past it reads, decides the tokens
            rep.check(f"{name}: 100 tokens == transformers", g100 == w100 and len(w100) > 64 and len(set(w100)) > 8,
                      f"{len(g100)} ids, {len(set(w100))} distinct"
                      + ("" if g100 == w100 else f" kiln {g100} hf {w100}"))
            want1 = [hf([q], N_NEW)[0] for q in prompts]
            got1 = [g["output"]["TokenIds"] for g in tp.results(tp.kiln_run(args, folder, inputs, "--max-new-tokens",
                                                                             N_NEW, *nct))]
            rep.check(f"{name}: greedy batch 1 == transformers ({len(prompts)} prompts)", got1 == want1,
                      "" if got1 == want1 else f"kiln {got1} hf {want1}")
            want4 = hf(prompts, N_NEW)
            got4 = [g["output"]["TokenIds"] for g in tp.results(tp.kiln_run(args, folder, inputs, "--max-new-tokens",
                                                                             N_NEW, "--batch-size", 4, *nct))]
            rep.check(f"{name}: greedy batch 4 (left padded) == transformers", got4 == want4,
                      "" if got4 == want4 else f"kiln {got4} hf {want4}")
        # a sliding window shorter than the context (48: the traced cache keeps the last 47 rows): while
        # prompt + new tokens fit in it the local layers are plain causal and the past is read in place;
        # a call that would outgrow it is refused, as kiln's fixed cache does not roll over
        wd = os.path.join(d, "window48")
        os.makedirs(wd)
        WF, wmodel, w_eos, w_pad = tm.build(torch, transformers, wd, "gemma3", window=48, tie=False)
        wtok = transformers.AutoTokenizer.from_pretrained(WF)
        wids = [wtok(p)["input_ids"] for p in prompts]
        raw, werr = tm.kiln_run(args, WF, inputs, "--max-new-tokens", N_NEW, "--no-chat-template", "--stats")
        m = re.search(r"past read in place in (\d+) layers", werr)
        rep.check(f"gemma3 window 48: past read in place in all {LAYERS} layers", m is not None and
                  int(m.group(1)) == LAYERS, m.group(0) if m else werr.strip()[-300:])
        got1 = [g["output"]["TokenIds"] for g in raw]
        want1 = [tm.hf_generate(torch, wmodel, [q], w_pad, w_eos, N_NEW)[0] for q in wids]
        rep.check(f"gemma3 window 48: greedy batch 1 == transformers (prompts {[len(q) for q in wids]} + {N_NEW})",
                  got1 == want1, "" if got1 == want1 else f"kiln {got1} hf {want1}")
        raw, _ = tm.kiln_run(args, WF, inputs, "--max-new-tokens", N_NEW, "--no-chat-template", "--batch-size", 4)
        got4 = [g["output"]["TokenIds"] for g in raw]
        want4 = tm.hf_generate(torch, wmodel, wids, w_pad, w_eos, N_NEW)
        rep.check("gemma3 window 48: greedy batch 4 == transformers", got4 == want4,
                  "" if got4 == want4 else f"kiln {got4} hf {want4}")
        p = subprocess.run([args.kiln, "generate", "--model", WF, "--max-new-tokens", "100", "--no-chat-template",
                            prompts[2]], capture_output=True)
        err = p.stderr.decode(errors="replace")
        rep.check("gemma3 window 48: 100 tokens refused (the window's cache of 47 would roll over)",
                  p.returncode != 0 and "sliding-window cache of 47" in err, err.strip()[-300:])
    except Exception as e:
        rep.check("run", False, repr(e)[:2000])
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    print(f"{rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
