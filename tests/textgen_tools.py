#!/usr/bin/env python3
"""Text-generation fixtures made by the real export tools, and kiln's greedy tokens on them.

Per family (tiny random-weight Llama, Qwen2, Phi-3 and Gemma-3: transformers configs, 2 layers,
hidden 64, 4 heads over 2 key/value heads, a byte-level BPE tokenizer with the family's special
tokens and published chat template, built as tests/textgen_models.py builds them), four exports:
  opt_fp32  `optimum-cli export onnx --task text-generation-with-past` (optimum-onnx, run from the
            second venv, build/venv-optimum, since it needs transformers 4);
  opt_q4    that model through onnxruntime's MatMulNBitsQuantizer (4 bits, block 32, symmetric),
            as onnx-community makes its model_q4.onnx;
  og_fp32   `python -m onnxruntime_genai.models.builder -e cpu -p fp32` (the GenAI layout:
  og_int4   GroupQueryAttention, genai_config.json) and `-p int4 --extra_options accuracy_level=1`
            (float32 products in ONNX Runtime too; og_int4_acc4 is the same file with the builder's
            default CPU level 4, where ONNX Runtime and kiln both quantise activations to int8 per
            block, kernels/cpu/nbits.h).
The exports are cached under --cache in a folder named after the tool versions (and FIXTURE_REV),
so a second run only generates; older folders are removed.
Checks, greedy 24 new tokens from the chat-templated prompts of 4 conversations, batch 1 each and
batch 4 (left-padded, prompts of 4 lengths):
  kiln's prompt ids == apply_chat_template on every folder;
  opt_fp32 and og_fp32: kiln's ids == transformers' generate (the family's EOS list);
  og_fp32 (batch 1) and og_int4: kiln's ids == onnxruntime-genai's og.Generator, which runs each
  prompt alone (its left-padded batch is not transformers' batch: counted on an INFO line);
  opt_q4: kiln's ids == onnxruntime driving the same file (exact past, left padding, position ids);
  og_int4_acc4: kiln's ids == onnxruntime-genai's og.Generator, prompt by prompt (INFO: how many
  of them kiln shares with its own ids on og_int4, the float32 level);
  opt_fp32 and opt_q4: `kiln generate --stats` reads the past in place in both layers, except
  Gemma-3's export (no position_ids: positions from the past's length), where it says why not.
Workarounds for the tools, each where it is needed: gemma3_builder (the builder and a transformers-5
Gemma-3 config), the tokenizer class written for transformers 4 (Optimum saves no tokenizer
otherwise), Phi-3 with its original context equal to its context, Gemma-3 with a 1024 context.

Usage: textgen_tools.py --kiln build/kiln --optimum-python build/venv-optimum/bin/python
         [--cache build/textgen-tools] [--family llama,qwen2,phi3,gemma3]
Prints "N passed, N failed" last; exits 1 on any failure, 77 (ctest's skip) when the optimum venv
or onnxruntime-genai is missing, saying which.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ["HF_HUB_OFFLINE"] = "1"  # every tool reads the local folders only
os.environ["TRANSFORMERS_OFFLINE"] = "1"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from textgen_models import CONVS, FAMILIES, make_tokenizer  # noqa: E402
from textgen_parity import Report, results  # noqa: E402

N_NEW = 24
FIXTURE_REV = 2  # bump when the fixtures' recipe changes (the tool versions key the rest)
SKIP = 77
# Llama-3.1's template (3.2's asks strftime_now for today's date) and Llama-3 special tokens
LLAMA = ("llama-3.1.jinja", ["<|end_of_text|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                             "<|eot_id|>"], "<|begin_of_text|>", "<|eot_id|>", ["<|eot_id|>", "<|end_of_text|>"])


def family_spec(family):
    return LLAMA if family == "llama" else FAMILIES[family]


def hf_model(torch, transformers, family, vocab, ids):
    torch.manual_seed(11)
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2, **ids)
    if family == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common)).eval()
    if family == "qwen2":
        return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common)).eval()
    if family == "phi3":  # the original context equal to the context: Phi-3-mini-4k's plain RoPE, not LongRoPE
        cfg = transformers.Phi3Config(**common, original_max_position_embeddings=256)
        return transformers.Phi3ForCausalLM(cfg).eval()
    # the sliding window over the whole context: Gemma-3's local layers see every position here
    # (onnxruntime-genai wants a context of at least the window)
    common["max_position_embeddings"] = 1024
    cfg = transformers.Gemma3TextConfig(**common, head_dim=16, sliding_window=512)
    return transformers.Gemma3ForCausalLM(cfg).eval()


def build_hf(torch, transformers, family, out):
    """The transformers folder every tool exports from: safetensors, tokenizer, template, EOS list."""
    tmpl, specials, bos, eos, eos_list = family_spec(family)
    tok = make_tokenizer(specials, bos)
    os.makedirs(out)
    eos_ids = [tok.token_to_id(t) for t in eos_list]
    ids = dict(pad_token_id=tok.token_to_id(specials[0]), eos_token_id=eos_ids,
               bos_token_id=tok.token_to_id(bos) if bos else None)
    model = hf_model(torch, transformers, family, tok.get_vocab_size(), ids)
    model.save_pretrained(out)
    tok.save(os.path.join(out, "tokenizer.json"))
    tc = {"chat_template": open(os.path.join(HERE, "chat_template", "templates", tmpl)).read(), "bos_token": bos,
          "eos_token": eos, "pad_token": specials[0], "tokenizer_class": "PreTrainedTokenizerFast"}
    json.dump(tc, open(os.path.join(out, "tokenizer_config.json"), "w"))
    json.dump({"eos_token_id": eos_ids, "pad_token_id": ids["pad_token_id"], "bos_token_id": ids["bos_token_id"]},
              open(os.path.join(out, "generation_config.json"), "w"))
    transformers.AutoTokenizer.from_pretrained(out).save_pretrained(out)
    # transformers 5 names its own class (TokenizersBackend), which Optimum's transformers 4 does not
    # know, and then saves no tokenizer beside its export: the class both read
    tc = json.load(open(os.path.join(out, "tokenizer_config.json")))
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    json.dump(tc, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)


def run_logged(cmd, log, env=None):
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if p.returncode:
        tail = open(log, errors="replace").read()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}\n{tail}")


def quantize_q4(src, dst):
    """onnx-community's q4: every MatMul with a constant weight as MatMulNBits (4 bits, block 32)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    shutil.copytree(src, dst)
    m = onnx.load(os.path.join(src, "model.onnx"))
    q = MatMulNBitsQuantizer(m, block_size=32, is_symmetric=True, bits=4)
    q.process()
    for f in os.listdir(dst):
        if f.startswith("model.onnx"):
            os.unlink(os.path.join(dst, f))
    onnx.save(q.model.model, os.path.join(dst, "model.onnx"))


def acc4(src, dst):
    """The builder's default int4 for the CPU: the same file with accuracy_level=4 (ONNX Runtime then
    quantises the activations to int8 per block; kiln computes every level in float32)."""
    import onnx
    shutil.copytree(src, dst)
    m = onnx.load(os.path.join(src, "model.onnx"), load_external_data=False)
    n4 = 0
    for n in m.graph.node:
        for a in n.attribute:
            if n.op_type == "MatMulNBits" and a.name == "accuracy_level":
                a.i, n4 = 4, n4 + 1
    assert n4, "no MatMulNBits with accuracy_level in the builder's int4 export"
    onnx.save(m, os.path.join(dst, "model.onnx"))


def gemma3_builder(argv):
    """The GenAI builder on a Gemma-3 folder saved by transformers 5, whose config nests the rotary
    parameters per layer type ({full_attention: {rope_theta}, sliding_attention: {rope_theta}});
    onnxruntime-genai 0.18 reads rope_parameters["rope_type"] and rope_local_base_freq, as
    transformers 4 had them, and stops with KeyError 'rope_type'. The config it loads is given the
    transformers-4 form (global theta in rope_parameters, local theta in rope_local_base_freq);
    weights and everything else are the builder's own."""
    import runpy
    import transformers
    load = transformers.AutoConfig.from_pretrained

    def v4_form(*a, **k):
        c = load(*a, **k)
        rp = getattr(c, "rope_parameters", None)
        if isinstance(rp, dict) and "full_attention" in rp and "sliding_attention" in rp:
            c.rope_local_base_freq = rp["sliding_attention"]["rope_theta"]
            c.rope_parameters = dict(rp["full_attention"])
        return c

    transformers.AutoConfig.from_pretrained = v4_form
    sys.argv = ["onnxruntime_genai.models.builder"] + argv
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__")


def tool_versions(opt_py):
    import importlib.metadata as md
    mine = {p: md.version(p) for p in ("onnxruntime-genai", "onnxruntime", "transformers", "torch")}
    out = subprocess.run([opt_py, "-c", "import importlib.metadata as m; print(' '.join(m.version(p) for p in "
                          "('optimum-onnx', 'optimum', 'transformers', 'torch')))"],
                         capture_output=True, text=True, check=True).stdout.split()
    mine.update({"optimum-onnx": out[0], "optimum": out[1], "opt-transformers": out[2], "opt-torch": out[3]})
    return mine


def fixtures(args, families, opt_py):
    """The cached export folder for these tool versions (made if missing): DIR/<family>/<form>."""
    v = tool_versions(opt_py)
    key = (f"og{v['onnxruntime-genai']}_optimum-onnx{v['optimum-onnx']}_optimum{v['optimum']}_tf{v['transformers']}"
           f"_tf{v['opt-transformers']}_torch{v['torch']}_ort{v['onnxruntime']}_r{FIXTURE_REV}")
    root = os.path.join(args.cache, key)
    os.makedirs(args.cache, exist_ok=True)
    for old in os.listdir(args.cache):
        if old != key:
            shutil.rmtree(os.path.join(args.cache, old), ignore_errors=True)
    todo = [f for f in families if not os.path.exists(os.path.join(root, f, ".done"))]
    if not todo:
        return root, v
    import torch
    import transformers
    t0 = time.time()
    procs = []
    for f in todo:
        d = os.path.join(root, f)
        shutil.rmtree(d, ignore_errors=True)
        build_hf(torch, transformers, f, os.path.join(d, "hf"))
        hf = os.path.join(d, "hf")
        optimum_cli = os.path.join(os.path.dirname(opt_py), "optimum-cli")
        procs.append(([optimum_cli, "export", "onnx", "--model", hf, "--task", "text-generation-with-past",
                       os.path.join(d, "opt_fp32")], os.path.join(d, "opt_fp32.log")))
        # the builder 0.18 needs transformers 5 (it imports its new classes) but reads Gemma-3's config as
        # transformers 4 wrote it: Gemma-3 goes through gemma3_builder
        run = [sys.executable, os.path.abspath(__file__), "--gemma3-builder"] if f == "gemma3" else \
            [sys.executable, "-m", "onnxruntime_genai.models.builder"]
        for prec, extra in (("fp32", []), ("int4", ["--extra_options", "accuracy_level=1"])):
            procs.append((run + ["-i", hf, "-o", os.path.join(d, f"og_{prec}"),
                           "-p", prec, "-e", "cpu", "-c", os.path.join(d, f"og_cache_{prec}")] + extra,
                          os.path.join(d, f"og_{prec}.log")))
    # two at a time: the tools spend most of their time importing torch
    running = []
    while procs or running:
        while procs and len(running) < 2:
            cmd, log = procs.pop(0)
            # the optimum venv's tools see their own packages only
            env = dict(os.environ)
            if cmd[0].startswith(os.path.dirname(opt_py)):
                env.pop("PYTHONPATH", None)
            running.append((subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env), cmd, log))
        p, cmd, log = running.pop(0)
        if p.wait():
            raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}\n{open(log, errors='replace').read()[-3000:]}")
    for f in todo:
        d = os.path.join(root, f)
        for prec in ("fp32", "int4"):
            shutil.rmtree(os.path.join(d, f"og_cache_{prec}"), ignore_errors=True)
        acc4(os.path.join(d, "og_int4"), os.path.join(d, "og_int4_acc4"))
        quantize_q4(os.path.join(d, "opt_fp32"), os.path.join(d, "opt_q4"))
        open(os.path.join(d, ".done"), "w").write(json.dumps(v))
    print(f"exported {len(todo)} families in {time.time() - t0:.0f} s into {root}")
    return root, v


def kiln_gen(args, folder, convs, batch):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for c in convs:
            f.write(json.dumps({"messages": c}, ensure_ascii=False) + "\n")
        path = f.name
    cmd = [args.kiln, "run", "--model", folder, "--type", "textGeneration", "--input", path, "--max-new-tokens",
           str(N_NEW), "--batch-size", str(batch), "--prompt-ids"]
    p = subprocess.run(cmd, capture_output=True)
    os.unlink(path)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.decode(errors='replace')[-2000:]}")
    out = results([ln for ln in p.stdout.split(b"\n") if ln])
    return [(r.get("output", {}).get("PromptTokenIds"), r.get("output", {}).get("TokenIds"), r.get("error", ""))
            for r in out]


def cut_eos(rows, eos_ids):
    return [r[:next((i + 1 for i, t in enumerate(r) if t in eos_ids), len(r))] for r in rows]


def hf_generate(torch, model, prompts, pad, eos_ids):
    P = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=pad,
                             eos_token_id=eos_ids, max_new_tokens=N_NEW)
    return cut_eos(out[:, P:].tolist(), eos_ids)


def og_generate(og, folder, prompts, pad, eos_ids):
    """onnxruntime-genai's greedy search over a left-padded batch (its pad id marks the padding). Its
    sequences leave out the EOS token that ended them: a row shorter than N_NEW gets a trailing
    "EOS" marker, which same() takes as any id of the EOS list."""
    import numpy as np
    model = og.Model(folder)
    P = max(len(p) for p in prompts)
    params = og.GeneratorParams(model)
    # the whole context as max_length (Gemma-3's sliding-window cache must hold the window), N_NEW steps
    ctx = json.load(open(os.path.join(folder, "genai_config.json")))["model"]["context_length"]
    params.set_search_options(do_sample=False, max_length=ctx, batch_size=len(prompts))
    gen = og.Generator(model, params)
    gen.append_tokens(np.array([[pad] * (P - len(p)) + p for p in prompts], dtype=np.int32))
    for _ in range(N_NEW):
        if gen.is_done():
            break
        gen.generate_next_token()
    rows = cut_eos([[int(t) for t in gen.get_sequence(i)][P:P + N_NEW] for i in range(len(prompts))], eos_ids)
    return [r + ["EOS"] if len(r) < N_NEW and (not r or r[-1] not in eos_ids) else r for r in rows]


def same(got, want, eos_ids):
    """got == want, where want's "EOS" marker (og_generate) stands for any id of the EOS list."""
    return got is not None and len(got) == len(want) and all(
        g == w or (w == "EOS" and g in eos_ids) for g, w in zip(got, want))


def ort_generate(ort, np, path, prompts, pad, eos_ids):
    """onnxruntime on an Optimum export: left padding, exact past, position ids from the mask."""
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ins = {i.name: i for i in s.get_inputs()}
    pasts = [n for n in ins if n.startswith("past_key_values.")]
    B, P = len(prompts), max(len(p) for p in prompts)
    ids = np.array([[pad] * (P - len(p)) + p for p in prompts], dtype=np.int64)
    mask = np.array([[0] * (P - len(p)) + [1] * len(p) for p in prompts], dtype=np.int64)
    feed_past = {}
    for n in pasts:
        shp = ins[n].shape  # [batch, kv heads, past, head size]
        feed_past[n] = np.zeros((B, shp[1], 0, shp[3]), dtype=np.float32)
    outs = [[] for _ in range(B)]
    done = [False] * B
    step_ids = ids
    for _ in range(N_NEW):
        pos = np.cumsum(mask, axis=1) - 1
        pos[mask == 0] = 1  # what transformers' generate gives padding
        feed = {"input_ids": step_ids, "attention_mask": mask}
        if "position_ids" in ins:
            feed["position_ids"] = pos[:, -step_ids.shape[1]:].astype(np.int64)
        feed.update(feed_past)
        res = s.run(None, feed)
        names = [o.name for o in s.get_outputs()]
        nxt = res[0][:, -1, :].argmax(-1)
        for b in range(B):
            if not done[b]:
                outs[b].append(int(nxt[b]))
                done[b] = int(nxt[b]) in eos_ids
        if all(done):
            break
        # a finished row goes on with the pad token, as transformers' generate does
        step_ids = np.array([[pad if d else int(t)] for t, d in zip(nxt.tolist(), done)], dtype=np.int64)
        mask = np.concatenate([mask, np.ones((B, 1), dtype=np.int64)], axis=1)
        feed_past = {n: res[names.index(n.replace("past_key_values", "present"))] for n in pasts}
    return outs


def check_family(args, rep, root, family, og):
    import numpy as np
    import onnxruntime as ort
    import torch
    import transformers
    d = os.path.join(root, family)
    hf = os.path.join(d, "hf")
    htok = transformers.AutoTokenizer.from_pretrained(hf)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf).eval()
    gc = json.load(open(os.path.join(hf, "generation_config.json")))
    eos_ids, pad = gc["eos_token_id"], gc["pad_token_id"]
    prompts = []
    for c in CONVS:
        r = htok.apply_chat_template(c, add_generation_prompt=True, tokenize=True)
        prompts.append(list(r["input_ids"] if hasattr(r, "keys") else r))
    hf1 = [hf_generate(torch, model, [p], pad, eos_ids)[0] for p in prompts]
    hf4 = hf_generate(torch, model, prompts, pad, eos_ids)
    og_dir = os.path.join(d, "og_fp32")
    g1 = [og_generate(og, og_dir, [p], pad, eos_ids)[0] for p in prompts]
    # how onnxruntime-genai itself does on its fp32 file: said, not checked (kiln is checked against
    # transformers there); its left-padded batch is not transformers' batch
    g4 = og_generate(og, og_dir, prompts, pad, eos_ids)
    print(f"INFO {family} og_fp32: og.Generator == transformers in {sum(same(b, a, eos_ids) for a, b in zip(g1, hf1))}"
          f" of 4 prompts alone, {sum(same(b, a, eos_ids) for a, b in zip(g4, hf4))} of 4 rows of the left-padded batch")
    i1 = [og_generate(og, os.path.join(d, "og_int4"), [p], pad, eos_ids)[0] for p in prompts]
    q4 = os.path.join(d, "opt_q4", "model.onnx")
    r1 = [ort_generate(ort, np, q4, [p], pad, eos_ids)[0] for p in prompts]
    r4 = ort_generate(ort, np, q4, prompts, pad, eos_ids)
    # form: reference name, batch-1 rows, batch-4 rows (og's batch 4 from its batch 1, see above)
    refs = {"opt_fp32": ("transformers", hf1, hf4), "og_fp32": ("transformers", hf1, hf4),
            "og_int4": ("og.Generator", i1, i1), "opt_q4": ("onnxruntime", r1, r4)}
    kiln = {}
    for form, (who, w1, w4) in refs.items():
        folder = os.path.join(d, form)
        for batch, want in ((1, w1), (4, w4)):
            try:
                got = kiln_gen(args, folder, CONVS, batch)
            except RuntimeError as e:
                rep.check(f"{family} {form} batch {batch}: kiln runs", False, str(e))
                continue
            kiln[form, batch] = [ids for _, ids, _ in got]
            for i, ((pids, ids, err), w) in enumerate(zip(got, want)):
                if batch == 1:
                    rep.check(f"{family} {form} conversation {i} prompt ids == apply_chat_template",
                              pids == prompts[i], err if pids is None else f"kiln {pids} hf {prompts[i]}"
                              if pids != prompts[i] else f"{len(pids)} ids")
                rep.check(f"{family} {form} batch {batch} conversation {i} (prompt {len(prompts[i])}): kiln == {who}",
                          same(ids, w, eos_ids), err if ids is None else f"{len(ids)} ids" + ("" if same(ids, w, eos_ids) else f" kiln {ids} {who} {w}"))
    # the Optimum files' decode reads its past in place (textgen_kvsplit.py's counter, `--stats`), except
    # Gemma-3's, which has no position_ids (positions from the past's length): --stats says so
    for form in ("opt_fp32", "opt_q4"):
        p = subprocess.run([args.kiln, "generate", "--model", os.path.join(d, form), "--max-new-tokens", "8", "--stats",
                            "--no-chat-template", "hello world"], capture_output=True)
        line = (p.stderr.decode(errors="replace").strip().splitlines() or [""])[-1]
        m = re.search(r"past read in place in (\d+) layers(.*)", line)
        if family == "gemma3":
            ok = m is not None and int(m.group(1)) == 0 and "no position_ids input" in m.group(2)
            what = "the past copied, --stats naming the missing position_ids"
        else:
            ok = m is not None and int(m.group(1)) == 2 and not m.group(2)
            what = "past read in place in both layers"
        rep.check(f"{family} {form}: {what}", p.returncode == 0 and ok, line)
    # the fp32 GenAI file against its own runtime too, prompt by prompt (og's padded batch is its own)
    k1 = kiln.get(("og_fp32", 1), [None] * len(prompts))
    for i, (k, g) in enumerate(zip(k1, g1)):
        rep.check(f"{family} og_fp32 batch 1 conversation {i}: kiln == og.Generator", same(k, g, eos_ids),
                  "" if same(k, g, eos_ids) else f"kiln {k} og.Generator {g}")
    # the builder's default int4 (accuracy_level 4): ONNX Runtime and kiln both quantise the activations
    # to int8 per block (ONNX Runtime's CompInt8), so og.Generator's tokens are required, prompt by prompt
    acc = os.path.join(d, "og_int4_acc4")
    got = [ids for _, ids, _ in kiln_gen(args, acc, CONVS, 1)]
    a1 = [og_generate(og, acc, [p], pad, eos_ids)[0] for p in prompts]
    for i, (k, g) in enumerate(zip(got, a1)):
        rep.check(f"{family} og_int4_acc4 batch 1 conversation {i}: kiln == og.Generator", same(k, g, eos_ids),
                  "" if same(k, g, eos_ids) else f"kiln {k} og.Generator {g}")
    l1 = kiln.get(("og_int4", 1)) or [None] * len(got)
    print(f"INFO {family} og_int4 accuracy_level 4: kiln's ids == its own on level 1 in "
          f"{sum(same(a, b, eos_ids) for a, b in zip(got, l1))} of 4 prompts")


def main():
    if sys.argv[1:2] == ["--gemma3-builder"]:
        return gemma3_builder(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--optimum-python", required=True, help="the python of build/venv-optimum")
    ap.add_argument("--cache", default=os.path.join(ROOT, "build", "textgen-tools"))
    ap.add_argument("--family", default="llama,qwen2,phi3,gemma3")
    args = ap.parse_args()
    if not os.path.exists(args.optimum_python):
        print(f"skipped: no {args.optimum_python} (tools/install_deps.sh makes the optimum venv)")
        return SKIP
    try:
        import onnxruntime_genai as og
    except ImportError as e:
        print(f"skipped: {e} (tests/requirements.lock has onnxruntime-genai; rerun tools/install_deps.sh)")
        return SKIP
    # the optimum venv held to its lock before it makes anything
    chk = subprocess.run([args.optimum_python, os.path.join(ROOT, "tools", "check_python_env.py"), "--lock",
                          os.path.join(HERE, "requirements-optimum.lock"), "--direct",
                          os.path.join(HERE, "requirements-optimum.in")], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    if chk.returncode:
        print(chk.stderr)
        return 1
    import torch
    torch.set_num_threads(1)
    families = args.family.split(",")
    root, versions = fixtures(args, families, args.optimum_python)
    print("tools: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    rep = Report()
    for family in families:
        try:
            check_family(args, rep, root, family, og)
        except Exception as e:  # a crash of a tool, of kiln or of a reference is a failure, with its message
            rep.check(f"{family} run", False, repr(e)[:3000])
    print(f"{rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
