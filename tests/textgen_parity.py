#!/usr/bin/env python3
"""Text generation (`kiln run --type textGeneration`, `kiln generate`) against transformers' generate.

Builds in a scratch folder: a byte-level BPE tokenizer trained with the `tokenizers` package on a
generated corpus (with accented and CJK words, so byte tokens split characters), a tiny random
GPT2LMHeadModel (2 layers, hidden 64, fixed seed) saved with save_pretrained, and its ONNX export
with past by tools/gen/gen_gpt2.py in two Optimum layouts: A without position_ids in onnx/model.onnx
(kiln then feeds the exact past, one prompt at a time), B with position_ids in model.onnx (kiln's
fixed-size cache, left-padded batches). Checks:
  greedy 24 tokens: kiln's ids == transformers' (do_sample=False) for 5 prompts, A and B at batch 1,
  B at batch 4 (prompts of different lengths, left padding) == transformers' left-padded batch;
  repetition penalty 1.3 greedy == transformers'; sampling with a seed reproducible run to run;
  max-new-tokens, EOS (generation_config.json list), stop strings cut from the text; streamed deltas
  are whole UTF-8 and concatenate to the non-streamed Response; {"messages"} == {"input"};
  `kiln generate` prints the Response; a prompt over the context is an error naming it (or cut with
  --truncate); a folder without tokenizer.json is an error naming that file.

With --extra FLAG (repeatable) every kiln run gets those flags (e.g. --extra=--device --extra=cuda
with kiln-sim: gpusim.textgen_genai); the genai case then also checks the tokens equal kiln's own
without them (the CPU).

Usage: textgen_parity.py --kiln build/kiln [--gen tools/gen] [--case genai] [--extra FLAG ...]
Prints "N passed, N failed" last and exits non-zero on any failure; exits 0 saying why it skipped
when torch / transformers / tokenizers are missing.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
HERE = os.path.dirname(os.path.abspath(__file__))
N_NEW = 24
PROMPTS = ["the quick brown fox", "a café in Zürich serves", "once upon a time there was a small model that",
           "日本 numbers 1 2 3", "hello"]


class Report:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS {name} {detail}")
        else:
            self.failed += 1
            print(f"FAIL {name} {detail}")


def corpus():
    words = ("the quick brown fox jumps over lazy dog café Zürich naïve 日本 語 model small time once upon there was "
             "a an of to in on numbers 1 2 3 hello world serves coffee tea bread").split()
    import random
    r = random.Random(3)
    return [" ".join(r.choice(words) for _ in range(r.randint(4, 14))) for _ in range(3000)]


def build(d, torch, transformers):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=420, special_tokens=["<|endoftext|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), tr)
    eos = tok.token_to_id("<|endoftext|>")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=128, n_embd=64, n_layer=2, n_head=4,
                                  bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, initializer_range=0.2)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    hf = os.path.join(d, "hf")
    model.save_pretrained(hf)
    tok.save(os.path.join(hf, "tokenizer.json"))
    return tok, model, eos


def export(args, d, name, position_ids, sub):
    hf = os.path.join(d, "hf")
    out = os.path.join(d, name)
    os.makedirs(os.path.join(out, sub), exist_ok=True)
    for f in ("config.json", "generation_config.json", "tokenizer.json"):
        shutil.copy(os.path.join(hf, f), out)
    cmd = [sys.executable, os.path.join(args.gen, "gen_gpt2.py"), "--safetensors", os.path.join(hf, "model.safetensors"),
           "--with-past", "--out", os.path.join(out, sub, "model.onnx")] + (["--position-ids"] if position_ids else [])
    subprocess.run(cmd, check=True)
    return out


def byte_fallback_folder(args, d, torch, transformers):
    """A SentencePiece-style tokenizer (Metaspace, BPE with byte_fallback: 256 <0xXX> tokens, few
    merges) and a tiny GPT-2 over its vocab: most generated tokens are single bytes, so characters
    arrive in pieces. Returns (tokenizer, model, eos, folder)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    vocab = {"<unk>": 0, "</s>": 1}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for ch in "\u2581abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(ch, len(vocab))
    merges = [("\u2581", "t"), ("h", "e"), ("\u2581t", "he"), ("a", "n"), ("\u2581", "a")]
    for a_, b_ in merges:
        vocab[a_ + b_] = len(vocab)
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["</s>"])
    eos = 1
    torch.manual_seed(2)
    cfg = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=128, n_embd=64, n_layer=2, n_head=4,
                                  bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, initializer_range=0.2)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    hf = os.path.join(d, "hf_bf")
    model.save_pretrained(hf)
    tok.save(os.path.join(hf, "tokenizer.json"))
    out = os.path.join(d, "BF")
    os.makedirs(out)
    for f in ("config.json", "generation_config.json", "tokenizer.json"):
        shutil.copy(os.path.join(hf, f), out)
    subprocess.run([sys.executable, os.path.join(args.gen, "gen_gpt2.py"), "--safetensors",
                    os.path.join(hf, "model.safetensors"), "--with-past", "--position-ids", "--out",
                    os.path.join(out, "model.onnx")], check=True)
    return tok, model, eos, out


def export_llama(d, torch, transformers, tok, eos):
    """A tiny random LlamaForCausalLM (2 layers, hidden 64, 4 heads over 2 key/value heads) exported by
    torch.onnx.export (TorchScript, opset 17) of a wrapper that takes and returns the past as explicit
    tensors, Optimum's names; traced with a past of 4 and 3 new tokens, every length dynamic."""
    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=128, initializer_range=0.2, bos_token_id=eos,
                                   eos_token_id=eos, pad_token_id=eos)
    model = transformers.LlamaForCausalLM(cfg).eval()
    L, KV, D = 2, 2, 16

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, position_ids, *past):
            c = transformers.DynamicCache(config=cfg)
            for l in range(L):
                c.update(past[2 * l], past[2 * l + 1], l)
            o = self.m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, past_key_values=c,
                       use_cache=True)
            outs = [o.logits]
            for l in range(L):
                outs += [o.past_key_values.layers[l].keys, o.past_key_values.layers[l].values]
            return tuple(outs)

    out = os.path.join(d, "L")
    model.save_pretrained(out)
    os.unlink(os.path.join(out, "model.safetensors"))
    tok.save(os.path.join(out, "tokenizer.json"))
    B, S, P = 2, 3, 4
    ids = torch.randint(0, cfg.vocab_size, (B, S))
    am = torch.ones(B, P + S, dtype=torch.long)
    pos = torch.arange(P, P + S).expand(B, S)
    past = [torch.randn(B, KV, P, D) for _ in range(2 * L)]
    names = [f"past_key_values.{l}.{t}" for l in range(L) for t in ("key", "value")]
    onames = ["logits"] + [f"present.{l}.{t}" for l in range(L) for t in ("key", "value")]
    dyn = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"},
           "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    dyn.update({n: {0: "batch", 2: "past"} for n in names})
    dyn.update({n: {0: "batch", 2: "total"} for n in onames[1:]})
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrap(model), (ids, am, pos, *past), os.path.join(out, "model.onnx"),
                          input_names=["input_ids", "attention_mask", "position_ids"] + names, output_names=onames,
                          dynamic_axes=dyn, opset_version=17, dynamo=False)
    return model, out


def genai_gqa(d, tok, eos):
    """An ONNX Runtime GenAI folder whose decoder uses com.microsoft GroupQueryAttention (rotary
    inside, past_present_share_buffer false): 2 layers, hidden 64, 4 heads over 2 key/value heads,
    random weights. genai_config.json as the GenAI model builder writes it."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save
    r = np.random.default_rng(5)
    V, H, NH, KV, D, L, MAXS = tok.get_vocab_size(), 64, 4, 2, 16, 2, 128
    inits, nodes = [], []

    def w(name, *shape, std=0.3):
        inits.append(numpy_helper.from_array((r.standard_normal(shape) * std).astype(np.float32), name))
        return name

    inv = 1.0 / (10000 ** (np.arange(0, D, 2) / D))
    ang = np.outer(np.arange(MAXS), inv).astype(np.float32)
    inits += [numpy_helper.from_array(np.cos(ang), "cos_cache"), numpy_helper.from_array(np.sin(ang), "sin_cache"),
              numpy_helper.from_array(np.array([1], np.int64), "one"), numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes += [helper.make_node("Gather", [w("emb", V, H, std=1.0), "input_ids"], ["h0"]),
              helper.make_node("ReduceSum", ["attention_mask", "axis1"], ["msum"], keepdims=0),
              helper.make_node("Sub", ["msum", "one"], ["msum1"]),
              helper.make_node("Cast", ["msum1"], ["seqlens_k"], to=TensorProto.INT32),
              helper.make_node("Shape", ["attention_mask"], ["mshape"], start=1, end=2),
              helper.make_node("Squeeze", ["mshape"], ["mlen"]),
              helper.make_node("Cast", ["mlen"], ["total_len"], to=TensorProto.INT32)]
    ins = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
           helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"])]
    outs = []
    h = "h0"
    for l in range(L):
        for t in ("key", "value"):
            ins.append(helper.make_tensor_value_info(f"past_key_values.{l}.{t}", TensorProto.FLOAT, ["batch", KV, "past", D]))
            outs.append(helper.make_tensor_value_info(f"present.{l}.{t}", TensorProto.FLOAT, ["batch", KV, "total", D]))
        nodes += [helper.make_node("SimplifiedLayerNormalization", [h, w(f"ln{l}", H, std=0.1)], [f"x{l}"], axis=-1,
                                   epsilon=1e-6),
                  helper.make_node("MatMul", [f"x{l}", w(f"wq{l}", H, NH * D)], [f"q{l}"]),
                  helper.make_node("MatMul", [f"x{l}", w(f"wk{l}", H, KV * D)], [f"k{l}"]),
                  helper.make_node("MatMul", [f"x{l}", w(f"wv{l}", H, KV * D)], [f"v{l}"]),
                  helper.make_node("GroupQueryAttention",
                                   [f"q{l}", f"k{l}", f"v{l}", f"past_key_values.{l}.key", f"past_key_values.{l}.value",
                                    "seqlens_k", "total_len", "cos_cache", "sin_cache"],
                                   [f"a{l}", f"present.{l}.key", f"present.{l}.value"], domain="com.microsoft",
                                   num_heads=NH, kv_num_heads=KV, do_rotary=1),
                  helper.make_node("MatMul", [f"a{l}", w(f"wo{l}", NH * D, H, std=0.1)], [f"o{l}"]),
                  helper.make_node("Add", [h, f"o{l}"], [f"h{l + 1}"])]
        h = f"h{l + 1}"
    nodes.append(helper.make_node("MatMul", [h, w("lm", H, V, std=0.2)], ["logits"]))
    outs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", V]))
    g = helper.make_graph(nodes, "gqa_decoder", ins, outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    out = os.path.join(d, "GQA")
    os.makedirs(out, exist_ok=True)
    save(m, os.path.join(out, "model.onnx"))
    tok.save(os.path.join(out, "tokenizer.json"))
    genai = {"model": {"type": "llama", "context_length": MAXS, "eos_token_id": eos, "pad_token_id": eos, "vocab_size": V,
                       "decoder": {"filename": "model.onnx", "head_size": D, "hidden_size": H, "num_attention_heads": NH,
                                   "num_key_value_heads": KV, "num_hidden_layers": L,
                                   "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                                              "past_key_names": "past_key_values.%d.key",
                                              "past_value_names": "past_key_values.%d.value"},
                                   "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                                               "present_value_names": "present.%d.value"}}},
             "search": {"max_length": MAXS, "past_present_share_buffer": False, "do_sample": False}}
    json.dump(genai, open(os.path.join(out, "genai_config.json"), "w"))
    return out, (L, KV, D)


def ort_greedy(path, ids, n_new, dims, eos):
    """Greedy decoding through ONNX Runtime with the exact past, as GenAI runs a share_buffer=false model."""
    import numpy as np
    import onnxruntime as ort
    L, KV, D = dims
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    past = {f"past_key_values.{l}.{t}": np.zeros((1, KV, 0, D), np.float32) for l in range(L) for t in ("key", "value")}
    cur, total, got = list(ids), 0, []
    for _ in range(n_new):
        feed = {"input_ids": np.array([cur], np.int64), "attention_mask": np.ones((1, total + len(cur)), np.int64), **past}
        out = s.run(None, feed)
        total += len(cur)
        t = int(out[0][0, -1].argmax())
        got.append(t)
        names = [o.name for o in s.get_outputs()]
        past = {n.replace("present.", "past_key_values."): v for n, v in zip(names[1:], out[1:])}
        cur = [t]
        if t == eos:
            break
    return got


def run_genai(args):
    """textgen.genai: the GenAI layout with GroupQueryAttention (kiln appends to one buffer per layer
    bound as both past and present, or copies the past with --no-share-buffer); exit 77 (skipped)
    when kiln lacks the op."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: F401
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        print(f"SKIP: {e}")
        return 77
    d = args.keep or tempfile.mkdtemp(prefix="kiln_textgen_genai_")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    rep = Report()
    try:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=420, special_tokens=["<|endoftext|>"],
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                              show_progress=False))
        eos = tok.token_to_id("<|endoftext|>")
        folder, dims = genai_gqa(d, tok, eos)
        p = subprocess.run([args.kiln, "run", "--model", folder, "--type", "textGeneration", "--max-new-tokens", "1",
                            *(args.extra or [])],
                           input=b'{"input": "x"}\n', capture_output=True)
        err = (p.stderr + p.stdout).decode(errors="replace")
        if p.returncode and "GroupQueryAttention" in err:
            print(f"SKIP: kiln cannot run com.microsoft GroupQueryAttention yet: {err.strip()[:300]}")
            return 77
        for i, prompt in enumerate(PROMPTS):
            want = ort_greedy(os.path.join(folder, "model.onnx"), tok.encode(prompt).ids, N_NEW, dims, eos)
            got = results(kiln_run(args, folder, [{"input": prompt}], "--max-new-tokens", N_NEW))[0]
            ids = got.get("output", {}).get("TokenIds")
            rep.check(f"genai GQA greedy prompt {i} == ORT", ids == want,
                      got.get("error", "") if ids is None else ("" if ids == want else f"kiln {ids} ort {want}"))
            if args.extra:
                cpu = results(kiln_run(args, folder, [{"input": prompt}], "--max-new-tokens", N_NEW, plain=True))[0]
                cids = cpu.get("output", {}).get("TokenIds")
                rep.check(f"genai GQA greedy prompt {i} with {' '.join(args.extra)} == kiln without", ids == cids,
                          "" if ids == cids else f"with {ids} without {cids}")
        # batch 4: rows right-padded, each with its own length (seqlens_k), == ORT one prompt at a time
        wants = [ort_greedy(os.path.join(folder, "model.onnx"), tok.encode(p).ids, N_NEW, dims, eos) for p in PROMPTS[:4]]
        got4 = results(kiln_run(args, folder, [{"input": p} for p in PROMPTS[:4]], "--max-new-tokens", N_NEW,
                                "--batch-size", 4))
        ids4 = [g.get("output", {}).get("TokenIds") for g in got4]
        rep.check("genai GQA batch 4 (prompts of 4 lengths) == ORT", ids4 == wants,
                  "" if ids4 == wants else f"kiln {ids4} ort {wants}")
        # past_present_share_buffer: kiln binds each present to its past buffer, GroupQueryAttention
        # appends the new positions in place; 100 tokens cross the mask's 64-position buckets (one plan
        # each, plus the prefill's), and copying the past every step instead gives the same ids
        want = ort_greedy(os.path.join(folder, "model.onnx"), tok.encode(PROMPTS[2]).ids, 100, dims, eos)
        for extra, plans in (([], "3 plans built"), (["--no-share-buffer"], f"{len(want)} plans built")):
            got = results(kiln_run(args, folder, [{"input": PROMPTS[2]}], "--max-new-tokens", 100, *extra))[0]
            ids = got.get("output", {}).get("TokenIds")
            p = subprocess.run([args.kiln, "generate", "--model", folder, "--max-new-tokens", "100", "--stats", *extra,
                                PROMPTS[2]], capture_output=True)
            line = p.stderr.decode(errors="replace").strip()
            rep.check(f"genai GQA 100 tokens{' ' + extra[0] if extra else ' (shared buffer)'} == ORT, {plans}",
                      ids == want and len(want) > 64 and plans in line, line if ids == want else f"kiln {ids} ort {want}")
        if "cuda" in " ".join(args.extra or []):
            # the cache in device memory at fixed addresses: a decode plan's first run is plain, its
            # second recorded as a CUDA graph, every later step a replay (a replay is only taken
            # when the run binds the same device buffers the recording did, so this also says the
            # cache never moved nor went through the host); the ids equal kiln's on the CPU
            p = subprocess.run([args.kiln, "generate", "--model", folder, "--max-new-tokens", "100", "--stats",
                                *args.extra, PROMPTS[2]], capture_output=True)
            line = p.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            m = re.search(r"(\d+) tokens, (\d+) plans built.*?(\d+) graphs recorded, (\d+) replays", line[0])
            if m:
                n, plans, rec, rep_n = map(int, m.groups())
                ok = n == len(want) and rec == plans - 1 and rep_n == (n - 1) - 2 * rec and rep_n > 0
                rep.check(f"genai cuda decode steps replayed: {rep_n} of {n - 1} ({rec} recorded, {plans} plans)", ok,
                          line[0])
            else:
                rep.check("genai cuda generate --stats reports graph replays", False, line[0])
            cpu = results(kiln_run(args, folder, [{"input": p} for p in PROMPTS[:4]], "--max-new-tokens", N_NEW,
                                   "--batch-size", 4, plain=True))
            cids4 = [g.get("output", {}).get("TokenIds") for g in cpu]
            rep.check("genai GQA batch 4 on cuda == kiln on the CPU", ids4 == cids4,
                      "" if ids4 == cids4 else f"cuda {ids4} cpu {cids4}")
        # int4: MatMulNBits projections (block 32) in the same layout, built as tools/bench/gen_bench.py
        # builds its benchmark model (tiny here); greedy == ORT driven as GenAI drives it (one buffer
        # per layer bound as past and present), batch 1 and batch 4
        sys.path.insert(0, os.path.join(HERE, "..", "tools", "bench"))
        import gen_bench
        for quant in ("int4", "fp32"):
            q = os.path.join(d, "Q" + quant)
            info = gen_bench.build(q, L=2, H=64, NH=4, KV=2, FFN=128, V=512, ctx=128, quant=quant, seed=3)
            bargs = argparse.Namespace(kiln=args.kiln, threads=2)
            ps = gen_bench.prompts(4, 9, 512, seed=4)
            ps[1], ps[3] = ps[1][:5], ps[3][:7]
            for b, rows in ((1, [[p] for p in ps]), (4, [ps])):
                want, got = [], []
                for r in rows:
                    if len({len(p) for p in r}) == 1:
                        want += gen_bench.ort_gen(bargs, q, info, r, N_NEW, 128)["ids"]
                    else:
                        want += [gen_bench.ort_gen(bargs, q, info, [p], N_NEW, 128)["ids"][0] for p in r]
                    got += gen_bench.kiln_gen(bargs, q, r, N_NEW, extra=tuple(args.extra or ()))["ids"]
                rep.check(f"genai {quant} (MatMulNBits)" if quant == "int4" else "genai fp32 (gen_bench model)",
                          got == want, f"batch {b}: " + ("" if got == want else f"kiln {got} ort {want}"))
    except Exception as e:
        rep.check("run", False, repr(e)[:2000])
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    print(f"{rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


def kiln_run(args, model, lines, *opts, stream=False, plain=False):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
        path = f.name
    cmd = [args.kiln, "run", "--model", model, "--type", "textGeneration", "--input", path] + [str(o) for o in opts]
    if not plain:
        cmd += list(getattr(args, "extra", None) or [])
    if stream:
        cmd.append("--stream")
    p = subprocess.run(cmd, capture_output=True)
    os.unlink(path)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.decode(errors='replace')}")
    return [ln for ln in p.stdout.split(b"\n") if ln]


def results(raw):
    return [json.loads(ln) for ln in raw if b'"delta"' not in ln]


def hf_generate(torch, model, tok, eos, prompts, **kw):
    """transformers' generate over a left-padded batch; returns each row's new ids, cut after EOS."""
    enc = [tok.encode(p).ids for p in prompts]
    P = max(len(e) for e in enc)
    ids = torch.tensor([[eos] * (P - len(e)) + e for e in enc])
    mask = torch.tensor([[0] * (P - len(e)) + [1] * len(e) for e in enc])
    eos_ids = kw.pop("eos_ids", [eos])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=eos,
                             eos_token_id=eos_ids, **kw)
    rows = []
    for r in out[:, P:].tolist():
        cut = next((i + 1 for i, t in enumerate(r) if t in eos_ids), len(r))
        rows.append(r[:cut])
    return rows


def replay_stats(text):
    """(tokens or None, plans, graphs recorded, replays) from a `kiln generate|run --stats` line."""
    m = re.search(r"(?:(\d+) tokens, )?(\d+) plans built.*?(\d+) graphs recorded, (\d+) replays", text)
    return tuple(None if v is None else int(v) for v in m.groups()) if m else None


def d2h_per_step(args, folder, prompts, bs, *opts):
    """Bytes copied device to host per decode step by kiln-sim (KILN_SIM_COPYSTATS=1 counts every
    copy of the process): the difference between a run of 24 new tokens and one of 12 over the
    difference in decode steps, so the prefill, plan builds and recordings cancel out; None when
    the two runs took as many steps (EOS before 12)."""
    got = []
    for n in (12, 24):
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            for p in prompts:
                f.write(json.dumps({"input": p}, ensure_ascii=False) + "\n")
        p = subprocess.run([args.kiln, "run", "--model", folder, "--type", "textGeneration", "--input", f.name,
                            "--max-new-tokens", str(n), "--batch-size", str(bs), *map(str, opts), *args.extra],
                           capture_output=True, env={**os.environ, "KILN_SIM_COPYSTATS": "1"})
        os.unlink(f.name)
        err = p.stderr.decode(errors="replace")
        m = re.search(r"kiln SIMT: (\d+) bytes in (\d+) copies device to host", err)
        if p.returncode or not m:
            raise RuntimeError(f"kiln run {folder} ({n} tokens): exit {p.returncode}: {err[-800:]}")
        ids = [g.get("output", {}).get("TokenIds") or [] for g in results([ln for ln in p.stdout.split(b"\n") if ln])]
        got.append((int(m.group(1)), max(len(i) for i in ids) - 1))
    (b1, s1), (b2, s2) = got
    return (b2 - b1) / (s2 - s1) if s2 > s1 else None


def run_device(args, torch, transformers):
    """gpusim.textgen_device: the Optimum layout (GPT-2 with position_ids, the Llama export) generating
    with args.extra (--device cuda): the fixed-size cache and the presents in device memory, the step's
    positions copied device to device; greedy ids equal kiln's on the CPU for batch 1 and batch 4 of
    prompts of different lengths, and after each decode plan's first two runs every step is a replay
    of its recorded CUDA graph (taken only when the run binds the same device buffers). A GenAI
    fixture (GroupQueryAttention, shared buffer) too. On cuda the greedy token is picked on the
    device: a decode step copies B int32 ids device to host (+ 64 bytes at most), never the logits,
    and the repetition penalty applied there gives kiln's CPU ids; top-k sampling brings back the
    k + 32 best per row and draws the CPU's seeded tokens; sampling without top-k stays on the host
    and copies at least a logits row (the counter's contrast)."""
    d = args.keep or tempfile.mkdtemp(prefix="kiln_textgen_device_")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d, exist_ok=True)
    rep = Report()
    try:
        tok, _, eos = build(d, torch, transformers)
        B = export(args, d, "B", True, ".")
        _, LL = export_llama(d, torch, transformers, tok, eos)
        G, _ = genai_gqa(os.path.join(d, "genai"), tok, eos)
        inputs = [{"input": p} for p in PROMPTS[:4]]
        for name, folder in (("gpt2 (position_ids)", B), ("llama", LL), ("genai GQA", G)):
            for bs in (1, 4):
                got = [g.get("output", {}).get("TokenIds") for g in
                       results(kiln_run(args, folder, inputs, "--max-new-tokens", N_NEW, "--batch-size", bs))]
                cpu = [g.get("output", {}).get("TokenIds") for g in
                       results(kiln_run(args, folder, inputs, "--max-new-tokens", N_NEW, "--batch-size", bs,
                                        plain=True))]
                rep.check(f"{name} batch {bs} with {' '.join(args.extra)} == kiln on the CPU", got == cpu and None not in got,
                          "" if got == cpu else f"device {got} cpu {cpu}")
            p = subprocess.run([args.kiln, "generate", "--model", folder, "--max-new-tokens", "100", "--stats",
                                "--no-chat-template", *args.extra, PROMPTS[2]], capture_output=True)
            c = subprocess.run([args.kiln, "generate", "--model", folder, "--max-new-tokens", "100",
                                "--no-chat-template", PROMPTS[2]], capture_output=True)
            line = (p.stderr.decode(errors="replace").strip().splitlines() or [""])[-1]
            st = replay_stats(line)
            ok = st is not None and p.returncode == 0 and p.stdout == c.stdout
            if ok:
                n, plans, rec, rp = st
                ok = n > 64 and rec == plans - 1 and rp == (n - 1) - 2 * rec
            rep.check(f"{name} 100 tokens == CPU, every decode step after a plan's first two replayed", ok, line)
            if "cuda" in " ".join(args.extra) and folder != G:
                # cudasplit: the Optimum layout's presents swapped for their new rows on cuda too, the
                # CUDA KnSdpa reading the device cache in place; --profile (no graphs) counts the
                # Concat calls: only those off the sequence axis, none over the past
                import textgen_kvsplit as kv
                m = re.search(r"past read in place in (\d+) layers", line)
                rep.check(f"{name} on cuda: past read in place in all {kv.LAYERS} layers",
                          m is not None and int(m.group(1)) == kv.LAYERS, line)
                q = subprocess.run([args.kiln, "generate", "--model", folder, "--max-new-tokens", "40", "--stats",
                                    "--profile", "--no-chat-template", *args.extra, PROMPTS[2]], capture_output=True)
                err = q.stderr.decode(errors="replace")
                m = re.search(r"(\d+) tokens, ", err)
                runs = int(m.group(1)) if m and q.returncode == 0 else 0
                sdpa, concat = kv.profile_calls(err, "KnSdpa"), kv.profile_calls(err, "Concat")
                want_concat = runs * kv.concat_nodes_off_sequence(os.path.join(folder, "model.onnx"))
                rep.check(f"{name} on cuda: one KnSdpa per layer and step, no Concat over the past",
                          runs > 8 and sdpa == runs * kv.LAYERS and concat == want_concat,
                          f"{runs} runs, {sdpa} KnSdpa, {concat} Concat calls, {want_concat} off the sequence axis "
                          f"(copying the past would add {2 * kv.LAYERS * runs})" + ("" if runs else err[-600:]))
        if "cuda" in " ".join(args.extra):
            # devgreedy: the greedy choice on the device, so a decode step brings back B int32 ids (and
            # at most a few bytes more), never the [B, vocab] logits; the repetition penalty is applied
            # there too; sampling keeps the host path, whose steps bring the logits back
            V = tok.get_vocab_size()
            for name, folder in (("gpt2 (position_ids)", B), ("llama", LL), ("genai GQA", G)):
                for bs in (1, 4):
                    per = d2h_per_step(args, folder, PROMPTS[:bs], bs)
                    rep.check(f"{name} batch {bs}: bytes device to host per decode step <= {4 * bs} + 64",
                              per is not None and per <= 4 * bs + 64, f"{per} (the logits: {4 * bs * V})")
            # top-k sampling: the k + 32 best (value, id) per row come back, the draw is the CPU's;
            # without top-k (--top-k 0) the host path, whose steps copy at least a logits row
            samp = ("--temperature", "0.8", "--seed", "3", "--top-k", "20")
            per = d2h_per_step(args, B, PROMPTS[:4], 4, *samp)
            rep.check(f"top-k 20 sampling batch 4: bytes device to host per decode step <= 4 * 52 * 8 + 16 + 64",
                      per is not None and per <= 4 * 52 * 8 + 16 + 64, f"{per} (the logits: {16 * V})")
            per = d2h_per_step(args, B, PROMPTS[:1], 1, "--temperature", "0.8", "--seed", "3", "--top-k", "0")
            rep.check("sampling without top-k (host path): bytes device to host per decode step >= the logits row",
                      per is not None and per >= 4 * V, f"{per} (the logits: {4 * V})")
            for name, folder in (("gpt2 (position_ids)", B), ("genai GQA", G)):
                got = [g.get("output", {}).get("TokenIds") for g in
                       results(kiln_run(args, folder, inputs, "--max-new-tokens", N_NEW, "--batch-size", 4, *samp,
                                        "--repetition-penalty", "1.2"))]
                cpu = [g.get("output", {}).get("TokenIds") for g in
                       results(kiln_run(args, folder, inputs, "--max-new-tokens", N_NEW, "--batch-size", 4, *samp,
                                        "--repetition-penalty", "1.2", plain=True))]
                rep.check(f"{name} batch 4 top-k 20 sampling (seeded, penalty 1.2) on the device == kiln on the CPU",
                          got == cpu and None not in got, "" if got == cpu else f"device {got} cpu {cpu}")
            for name, folder in (("gpt2 (position_ids)", B), ("genai GQA", G)):
                got = [g.get("output", {}).get("TokenIds") for g in
                       results(kiln_run(args, folder, inputs, "--max-new-tokens", N_NEW, "--batch-size", 4,
                                        "--repetition-penalty", "1.3"))]
                cpu = [g.get("output", {}).get("TokenIds") for g in
                       results(kiln_run(args, folder, inputs, "--max-new-tokens", N_NEW, "--batch-size", 4,
                                        "--repetition-penalty", "1.3", plain=True))]
                rep.check(f"{name} batch 4 repetition penalty 1.3 on the device == kiln on the CPU",
                          got == cpu and None not in got, "" if got == cpu else f"device {got} cpu {cpu}")
    except Exception as e:
        rep.check("run", False, repr(e)[:2000])
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    print(f"{rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--gen", default=os.path.join(HERE, "..", "tools", "gen"))
    ap.add_argument("--keep", help="build in this folder and keep it")
    ap.add_argument("--case", choices=("hf", "genai", "device"), default="hf",
                    help="hf: GPT-2 / Llama against transformers (default); genai: a GroupQueryAttention decoder in "
                         "the GenAI layout against ONNX Runtime (exit 77 = skipped while kiln lacks the op); device: "
                         "the Optimum layout with --extra flags (--device cuda) against kiln on the CPU")
    ap.add_argument("--extra", action="append", default=[], help="a flag added to every kiln run (repeatable)")
    args = ap.parse_args()
    if args.case == "genai":
        return run_genai(args)
    try:
        import torch
        import transformers
        import tokenizers  # noqa: F401
    except ImportError as e:
        print(f"SKIP: {e} (torch, transformers and tokenizers are needed to build the reference)")
        print("0 passed, 0 failed, 1 skipped")
        return 0
    if args.case == "device":
        return run_device(args, torch, transformers)
    torch.set_num_threads(1)
    d = args.keep or tempfile.mkdtemp(prefix="kiln_textgen_")
    if args.keep:
        shutil.rmtree(d, ignore_errors=True)  # a fresh build every run
    os.makedirs(d, exist_ok=True)
    rep = Report()
    try:
        tok, model, eos = build(d, torch, transformers)
        A = export(args, d, "A", False, "onnx")
        B = export(args, d, "B", True, ".")
        inputs = [{"input": p} for p in PROMPTS]

        # greedy, batch 1, both layouts
        want1 = [hf_generate(torch, model, tok, eos, [p], max_new_tokens=N_NEW)[0] for p in PROMPTS]
        for name, folder in (("A(exact past)", A), ("B(fixed cache)", B)):
            got = results(kiln_run(args, folder, inputs, "--max-new-tokens", N_NEW))
            for i, (g, w) in enumerate(zip(got, want1)):
                ids = g["output"]["TokenIds"]
                rep.check(f"greedy batch1 {name} prompt {i}", ids == w, f"{len(ids)} ids, finish {g['output']['FinishReason']}"
                          + ("" if ids == w else f" kiln {ids} hf {w}"))
        # greedy, batch 4, left padding
        want4 = hf_generate(torch, model, tok, eos, PROMPTS[:4], max_new_tokens=N_NEW)
        got4 = results(kiln_run(args, B, inputs[:4], "--max-new-tokens", N_NEW, "--batch-size", 4))
        lens = [len(tok.encode(p).ids) for p in PROMPTS[:4]]
        for i, (g, w) in enumerate(zip(got4, want4)):
            ids = g["output"]["TokenIds"]
            rep.check(f"greedy batch4 prompt {i} (len {lens[i]})", ids == w, "" if ids == w else f"kiln {ids} hf {w}")
        # repetition penalty, greedy
        wantr = hf_generate(torch, model, tok, eos, PROMPTS[:4], max_new_tokens=N_NEW, repetition_penalty=1.3)
        gotr = results(kiln_run(args, B, inputs[:4], "--max-new-tokens", N_NEW, "--batch-size", 4,
                                "--repetition-penalty", 1.3))
        rep.check("repetition penalty 1.3 batch4", [g["output"]["TokenIds"] for g in gotr] == wantr)
        # sampling with a seed
        sam = ["--max-new-tokens", N_NEW, "--temperature", 0.9, "--top-k", 50, "--top-p", 0.95, "--min-p", 0.01,
               "--seed", 7, "--batch-size", 2]
        s1 = [g["output"]["TokenIds"] for g in results(kiln_run(args, B, inputs, *sam))]
        s2 = [g["output"]["TokenIds"] for g in results(kiln_run(args, B, inputs, *sam))]
        rep.check("sampling seed 7 reproducible", s1 == s2 and all(s1))
        s3 = [g["output"]["TokenIds"] for g in results(kiln_run(args, B, inputs, *sam[:-4], "--seed", 8, "--batch-size", 2))]
        rep.check("sampling seed 8 differs from seed 7", s3 != s1)
        rep.check("sampling differs from greedy", s1 != want1)
        # each filter alone narrowed to one token is greedy, whatever the seed
        for name, extra in (("top-k 1", ["--top-k", 1]), ("top-p 1e-6", ["--top-p", 1e-6]), ("min-p 1", ["--min-p", 1])):
            gf = results(kiln_run(args, B, inputs, "--max-new-tokens", N_NEW, "--temperature", 1.5, "--seed", 3, *extra))
            rep.check(f"sampling with {name} == greedy", [g["output"]["TokenIds"] for g in gf] == want1)
        # the folder's generation_config.json sets the defaults, the command line wins over them
        S_ = os.path.join(d, "S")
        shutil.copytree(B, S_)
        gcs = json.load(open(os.path.join(S_, "generation_config.json")))
        gcs.update(do_sample=True, temperature=1.2, top_k=40, max_new_tokens=7)
        json.dump(gcs, open(os.path.join(S_, "generation_config.json"), "w"))
        d1 = [g["output"]["TokenIds"] for g in results(kiln_run(args, S_, inputs, "--seed", 5))]
        d2 = [g["output"]["TokenIds"] for g in results(kiln_run(args, S_, inputs, "--seed", 5))]
        dg = [g["output"]["TokenIds"] for g in results(kiln_run(args, S_, inputs, "--temperature", 0))]
        rep.check("generation_config.json defaults (sampling, 7 tokens); --temperature 0 is greedy",
                  d1 == d2 and all(len(x) == 7 for x in d1) and d1 != [w[:7] for w in want1] and dg == [w[:7] for w in want1])
        # max new tokens
        g5 = results(kiln_run(args, B, inputs, "--max-new-tokens", 5))
        rep.check("max-new-tokens 5", all(len(g["output"]["TokenIds"]) == 5 and g["output"]["FinishReason"] == "length"
                                          for g in g5 if g["output"]["TokenIds"][-1] != eos))
        # EOS from generation_config.json (a list): the token greedy makes 6th for prompt 0
        stop_tok = want1[0][5]
        first = want1[0].index(stop_tok)
        E = os.path.join(d, "E")
        shutil.copytree(B, E)
        gc = json.load(open(os.path.join(E, "generation_config.json")))
        gc["eos_token_id"] = [eos, stop_tok]
        json.dump(gc, open(os.path.join(E, "generation_config.json"), "w"))
        ge = results(kiln_run(args, E, inputs[:1], "--max-new-tokens", N_NEW))[0]["output"]
        rep.check("eos list", ge["TokenIds"] == want1[0][:first + 1] and ge["FinishReason"] == "eos",
                  f"stopped after {len(ge['TokenIds'])} ids on id {stop_tok}")
        # stop strings
        full = results(kiln_run(args, B, inputs, "--max-new-tokens", N_NEW))
        text0 = full[0]["output"]["Response"]
        stop = text0[len(text0) // 2:len(text0) // 2 + 3]
        gs = results(kiln_run(args, B, inputs[:1], "--max-new-tokens", N_NEW, "--stop", stop))[0]["output"]
        rep.check("stop string", gs["Response"] == text0[:text0.find(stop)] and gs["FinishReason"] == "stop",
                  f"stop {stop!r}: {gs['Response']!r}")
        # streaming: whole UTF-8 pieces that add up to the Response, also with a stop string
        for extra in ([], ["--stop", stop]):
            raw = kiln_run(args, B, inputs, "--max-new-tokens", N_NEW, "--batch-size", 2, *extra, stream=True)
            ok_utf8, pieces = True, {}
            for ln in raw:
                try:
                    ln.decode("utf-8")
                except UnicodeDecodeError:
                    ok_utf8 = False
                o = json.loads(ln)
                if "delta" in o:
                    pieces[o["index"]] = pieces.get(o["index"], "") + o["delta"]
            fin = results(raw)
            ref = full if not extra else results(kiln_run(args, B, inputs, "--max-new-tokens", N_NEW, *extra))
            same = all(pieces.get(i, "") == f["output"]["Response"] == r["output"]["Response"]
                       for i, (f, r) in enumerate(zip(fin, ref)))
            n_delta = sum(1 for ln in raw if b'"delta"' in ln)
            rep.check(f"stream{' with stop' if extra else ''}", ok_utf8 and same and len(fin) == len(PROMPTS),
                      f"{n_delta} deltas")
        # byte-fallback tokens: characters in pieces; the stream never splits one, the text is the
        # package's decode of the ids
        btok, bmodel, beos, BF = byte_fallback_folder(args, d, torch, transformers)
        bprompts = ["日本語 the cat", "é an", "the"]
        wb = hf_generate(torch, bmodel, btok, beos, bprompts, max_new_tokens=40)
        raw = kiln_run(args, BF, [{"input": p} for p in bprompts], "--max-new-tokens", 40, "--batch-size", 3, stream=True)
        ok_utf8, pieces = True, {}
        for ln in raw:
            try:
                ln.decode("utf-8")
            except UnicodeDecodeError:
                ok_utf8 = False
            o = json.loads(ln)
            if "delta" in o:
                pieces[o["index"]] = pieces.get(o["index"], "") + o["delta"]
        fb = results(raw)
        n_bytes = sum(1 for g in fb for t in g["output"]["TokenIds"] if 2 <= t < 258)
        rep.check("byte fallback: greedy ids == transformers", [g["output"]["TokenIds"] for g in fb] == wb,
                  f"{n_bytes} of {sum(len(g['output']['TokenIds']) for g in fb)} generated ids are byte tokens")
        rep.check("byte fallback: Response == tokenizers' decode, stream == Response, whole UTF-8 pieces",
                  ok_utf8 and all(g["output"]["Response"] == btok.decode(g["output"]["TokenIds"], skip_special_tokens=True)
                                  == pieces.get(i, "") for i, g in enumerate(fb)),
                  f"{sum(1 for ln in raw if b'delta' in ln)} deltas")
        # messages
        gm = results(kiln_run(args, B, [{"messages": [{"role": "user", "content": p}]} for p in PROMPTS],
                              "--max-new-tokens", N_NEW))
        rep.check("messages == input", [g["output"] for g in gm] == [g["output"] for g in full])
        # kiln generate
        p = subprocess.run([args.kiln, "generate", "--model", B, "--max-new-tokens", str(N_NEW), PROMPTS[0]],
                           capture_output=True)
        rep.check("kiln generate", p.returncode == 0 and p.stdout.decode() == text0 + "\n", repr(p.stdout[:60]))
        # ONNX Runtime GenAI layout: genai_config.json names the decoder file, its inputs/outputs and the EOS ids
        G = os.path.join(d, "G")
        os.makedirs(G, exist_ok=True)
        shutil.copy(os.path.join(B, "model.onnx"), os.path.join(G, "decoder.onnx"))
        shutil.copy(os.path.join(B, "tokenizer.json"), G)
        genai = {"model": {"type": "gpt2", "context_length": 128, "eos_token_id": [eos, stop_tok], "pad_token_id": eos,
                           "vocab_size": tok.get_vocab_size(),
                           "decoder": {"filename": "decoder.onnx", "head_size": 16, "hidden_size": 64, "num_attention_heads": 4,
                                       "num_key_value_heads": 4, "num_hidden_layers": 2,
                                       "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                                                  "position_ids": "position_ids",
                                                  "past_key_names": "past_key_values.%d.key",
                                                  "past_value_names": "past_key_values.%d.value"},
                                       "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                                                   "present_value_names": "present.%d.value"}}},
                 "search": {"max_length": 128, "past_present_share_buffer": False}}
        json.dump(genai, open(os.path.join(G, "genai_config.json"), "w"))
        gg = results(kiln_run(args, G, inputs, "--max-new-tokens", N_NEW, "--batch-size", 2))
        want_g = [w[:w.index(stop_tok) + 1] if stop_tok in w else w for w in want1]
        rep.check("genai_config.json layout (standard-op decoder, eos list)",
                  [g["output"]["TokenIds"] for g in gg] == want_g)
        genai["model"]["decoder"]["filename"] = "missing.onnx"
        json.dump(genai, open(os.path.join(G, "genai_config.json"), "w"))
        p = subprocess.run([args.kiln, "run", "--model", G, "--type", "textGeneration"], input=b'{"input": "x"}\n',
                           capture_output=True)
        rep.check("genai_config.json decoder file missing named", p.returncode != 0 and b"missing.onnx" in p.stderr,
                  p.stderr.decode(errors="replace").strip()[:120])
        # Llama (rotary positions, grouped key/value heads) exported by torch.onnx.export
        lmodel, LL = export_llama(d, torch, transformers, tok, eos)
        wl1 = [hf_generate(torch, lmodel, tok, eos, [p], max_new_tokens=N_NEW)[0] for p in PROMPTS]
        gl1 = results(kiln_run(args, LL, inputs, "--max-new-tokens", N_NEW))
        for i, (g, w) in enumerate(zip(gl1, wl1)):
            ids = g["output"]["TokenIds"]
            rep.check(f"llama greedy batch1 prompt {i}", ids == w, f"{len(ids)} ids" + ("" if ids == w else f" kiln {ids} hf {w}"))
        wl4 = hf_generate(torch, lmodel, tok, eos, PROMPTS[:4], max_new_tokens=N_NEW)
        gl4 = results(kiln_run(args, LL, inputs[:4], "--max-new-tokens", N_NEW, "--batch-size", 4))
        for i, (g, w) in enumerate(zip(gl4, wl4)):
            ids = g["output"]["TokenIds"]
            rep.check(f"llama greedy batch4 prompt {i}", ids == w, "" if ids == w else f"kiln {ids} hf {w}")
        # plans: the fixed-size cache keeps one input-shape signature for every decode step
        for name, folder, want in (("gpt2 B", B, 2), ("llama", LL, 2), ("gpt2 A (exact past)", A, N_NEW)):
            p = subprocess.run([args.kiln, "generate", "--model", folder, "--max-new-tokens", str(N_NEW), "--stats",
                                PROMPTS[2]], capture_output=True)
            line = p.stderr.decode(errors="replace").strip()
            rep.check(f"plans built {name} == {want}", p.returncode == 0 and f"{N_NEW} tokens, {want} plans built" in line, line)
        # 100 tokens: the cache widens from a 64-position bucket to 128 in place; batch 4 with EOS ids
        # that end some rows early (they drop out of the batch while the others go on)
        for name, folder, mdl in (("gpt2", B, model), ("llama", LL, lmodel)):
            wl = hf_generate(torch, mdl, tok, eos, [PROMPTS[2]], max_new_tokens=100)[0]
            p = subprocess.run([args.kiln, "generate", "--model", folder, "--max-new-tokens", "100", "--stats", PROMPTS[2]],
                               capture_output=True)
            gl = results(kiln_run(args, folder, inputs[2:3], "--max-new-tokens", 100))[0]["output"]["TokenIds"]
            rep.check(f"{name} up to 100 tokens == transformers, 3 plans (prefill, buckets 64 and 128)",
                      gl == wl and len(wl) > 51 and f"{len(wl)} tokens, 3 plans built".encode() in p.stderr,
                      p.stderr.decode(errors="replace").strip())
        E2 = os.path.join(d, "E2")
        shutil.copytree(B, E2)
        w100 = hf_generate(torch, model, tok, eos, PROMPTS[:4], max_new_tokens=100)
        early = [w100[0][30], w100[1][70]]
        gc["eos_token_id"] = [eos] + early
        json.dump(gc, open(os.path.join(E2, "generation_config.json"), "w"))
        wd = hf_generate(torch, model, tok, eos, PROMPTS[:4], max_new_tokens=100, eos_ids=[eos] + early)
        gd = results(kiln_run(args, E2, inputs[:4], "--max-new-tokens", 100, "--batch-size", 4))
        rep.check("batch 4, rows finishing early drop out", [g["output"]["TokenIds"] for g in gd] == wd,
                  f"lengths {[len(g['output']['TokenIds']) for g in gd]}, finish {[g['output']['FinishReason'] for g in gd]}")
        # bad input
        long_prompt = " ".join(["the quick brown fox"] * 60)
        gl = results(kiln_run(args, B, [{"input": long_prompt}], "--max-new-tokens", 8))[0]
        rep.check("prompt over context is an error", "error" in gl and "context" in gl["error"], gl.get("error", "")[:120])
        gt = results(kiln_run(args, B, [{"input": long_prompt}], "--max-new-tokens", 8, "--truncate"))[0]
        rep.check("--truncate keeps the prompt's end", "output" in gt and len(gt["output"]["TokenIds"]) >= 1)
        bad = [{"input": 5}, {"messages": [{"role": "user"}]}, ["not", "an", "object"], {"input": ""}, {"input": "ok"},
               {"input": long_prompt}, {"input": "fine"}]
        gb = results(kiln_run(args, B, bad, "--max-new-tokens", 4, "--batch-size", 3))
        rep.check("bad lines get error lines, the rest goes on",
                  len(gb) == 7 and all("error" in gb[i] for i in (0, 1, 2, 3, 5)) and "output" in gb[4] and "output" in gb[6],
                  "; ".join(g.get("error", "ok")[:50] for g in gb))
        N = os.path.join(d, "N")
        shutil.copytree(B, N)
        os.unlink(os.path.join(N, "tokenizer.json"))
        p = subprocess.run([args.kiln, "run", "--model", N, "--type", "textGeneration"], input=b'{"input": "x"}\n',
                           capture_output=True)
        rep.check("missing tokenizer.json named", p.returncode != 0 and b"tokenizer.json" in p.stderr,
                  p.stderr.decode(errors="replace").strip()[:120])
    except Exception as e:  # a crash of kiln or of the reference is a failure, with its message
        rep.check("run", False, repr(e)[:2000])
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    print(f"{rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
