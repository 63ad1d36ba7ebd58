#!/usr/bin/env python3
"""Chat models through `kiln run --type textGeneration`: tiny random-weight Qwen2, Phi-3 and Gemma-3
(transformers configs: 2 layers, hidden 64, 4 heads over 2 key/value heads) with their published
chat templates (tests/chat_template/templates), against transformers.

Per family, in a scratch folder: a byte-level BPE tokenizer trained on textgen_parity's corpus with
the family's special tokens (Phi-3 and Gemma-3 with a post-processor that prepends BOS, as their
tokenizers do, so that a templated prompt encoded with special tokens would show a second BOS),
tokenizer_config.json holding the template, bos/eos tokens and the family's EOS id list in
generation_config.json, then the tokenizer saved back by transformers (which rebuilds some families'
pre-tokenizers); the model exported by torch.onnx.export (TorchScript, opset 17) of a
wrapper taking and returning the past as explicit tensors under Optimum's names, position_ids
included (kiln's fixed-size cache). Checks:
  prompt ids: kiln's PromptTokenIds for three conversations (one user turn; system + user; user /
  assistant / user) == apply_chat_template(add_generation_prompt=True, tokenize=True); --system-prompt
  with an "input" == the template over [system, user]; --no-chat-template == the tokenizer's ids of
  the text with special tokens;
  greedy 24 tokens from templated prompts == transformers' generate (the family's EOS list), batch 1
  for 4 conversations and batch 4 left-padded;
  a copy without a template falls back to the plain join (system prompt, newline, turn), encoded with
  special tokens, and says so on stderr; one whose template kiln cannot parse gets error lines
  naming the construct (--no-chat-template still runs).

Usage: textgen_models.py --kiln build/kiln [--family qwen2,phi3,gemma3] [--keep DIR]
Prints "N passed, N failed" last; exits non-zero on any failure.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from textgen_parity import Report, corpus, results  # noqa: E402

N_NEW = 24
CONVS = [
    [{"role": "user", "content": "the quick brown fox"}],
    [{"role": "system", "content": "you are a small model"}, {"role": "user", "content": "a café in Zürich serves"}],
    [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hello world"},
     {"role": "user", "content": "once upon a time there was"}],
    [{"role": "user", "content": "日本 numbers 1 2 3"}],
]

# family: template file, special tokens (the first is the pad), bos, eos token, EOS id list (tokens)
FAMILIES = {
    "qwen2": ("qwen-2.5.jinja", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>",
              ["<|im_end|>", "<|endoftext|>"]),
    "phi3": ("phi-3.5.jinja", ["<unk>", "<s>", "</s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>",
                               "<|end|>"], "<s>", "<|endoftext|>", ["<|end|>", "<|endoftext|>"]),
    "gemma3": ("gemma-3.jinja", ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"], "<bos>",
               "<eos>", ["<eos>", "<end_of_turn>"]),
}


def make_tokenizer(specials, bos):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=420, special_tokens=specials,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                          show_progress=False))
    if bos:
        b = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, b)])
    return tok


def make_model(torch, transformers, family, vocab, ids, window=512, tie=True):
    torch.manual_seed(11)
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2, **ids)
    if family == "qwen2":
        cfg = transformers.Qwen2Config(**common)
        model = transformers.Qwen2ForCausalLM(cfg)
    elif family == "phi3":
        cfg = transformers.Phi3Config(**common)
        model = transformers.Phi3ForCausalLM(cfg)
    else:  # the sliding window over the whole context: Gemma-3's local layers see every position here
        # (unless a caller asks for a short one, textgen_kvsplit.py's window check). Tied embeddings,
        # scaled by sqrt(hidden) on the way in, make this random model repeat the prompt's last token
        # whatever attention does: textgen_kvsplit.py asks for untied ones (tie=False)
        cfg = transformers.Gemma3TextConfig(**common, head_dim=16, sliding_window=window, tie_word_embeddings=tie)
        model = transformers.Gemma3ForCausalLM(cfg)
    return cfg, model.eval()


def export(torch, transformers, cfg, model, path):
    L, KV = cfg.num_hidden_layers, cfg.num_key_value_heads
    D = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrap(model), (ids, am, pos, *past), path,
                          input_names=["input_ids", "attention_mask", "position_ids"] + names, output_names=onames,
                          dynamic_axes=dyn, opset_version=17, dynamo=False)


def build(torch, transformers, d, family, window=512, tie=True):
    tmpl, specials, bos, eos, eos_list = FAMILIES[family]
    tok = make_tokenizer(specials, bos)
    out = os.path.join(d, family)
    os.makedirs(out)
    eos_ids = [tok.token_to_id(t) for t in eos_list]
    ids = dict(pad_token_id=tok.token_to_id(specials[0]), eos_token_id=eos_ids,
               bos_token_id=tok.token_to_id(bos) if bos else None)
    cfg, model = make_model(torch, transformers, family, tok.get_vocab_size(), ids, window, tie)
    model.save_pretrained(out)
    for f in os.listdir(out):
        if f.endswith(".safetensors"):
            os.unlink(os.path.join(out, f))
    tok.save(os.path.join(out, "tokenizer.json"))
    tc = {"chat_template": open(os.path.join(HERE, "chat_template", "templates", tmpl)).read(), "bos_token": bos,
          "eos_token": eos, "pad_token": specials[0], "tokenizer_class": "PreTrainedTokenizerFast"}
    json.dump(tc, open(os.path.join(out, "tokenizer_config.json"), "w"))
    json.dump({"eos_token_id": eos_ids, "pad_token_id": ids["pad_token_id"], "bos_token_id": ids["bos_token_id"]},
              open(os.path.join(out, "generation_config.json"), "w"))
    # transformers rebuilds a family's tokenizer its own way (Qwen2's digit-splitting pre-tokenizer
    # and NFC, ...): the folder gets the tokenizer transformers uses, as a published folder has it
    htok = transformers.AutoTokenizer.from_pretrained(out)
    htok.save_pretrained(out)
    assert len(htok) <= cfg.vocab_size, (len(htok), cfg.vocab_size)
    export(torch, transformers, cfg, model, os.path.join(out, "model.onnx"))
    return out, model, eos_ids, ids["pad_token_id"]


def kiln_run(args, model, lines, *opts):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
        path = f.name
    cmd = [args.kiln, "run", "--model", model, "--type", "textGeneration", "--input", path] + [str(o) for o in opts]
    p = subprocess.run(cmd, capture_output=True)
    os.unlink(path)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.decode(errors='replace')}")
    return results([ln for ln in p.stdout.split(b"\n") if ln]), p.stderr.decode(errors="replace")


def template_ids(htok, conv):
    r = htok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True)
    return list(r["input_ids"] if hasattr(r, "keys") else r)


def hf_generate(torch, model, prompts, pad, eos_ids, n_new):
    """transformers' greedy generate over a left-padded batch of id lists; each row cut after EOS."""
    P = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=pad,
                             eos_token_id=eos_ids, max_new_tokens=n_new)
    rows = []
    for r in out[:, P:].tolist():
        cut = next((i + 1 for i, t in enumerate(r) if t in eos_ids), len(r))
        rows.append(r[:cut])
    return rows


def check_family(args, rep, torch, transformers, d, family):
    folder, model, eos_ids, pad = build(torch, transformers, d, family)
    htok = transformers.AutoTokenizer.from_pretrained(folder)
    f = family
    # prompt ids
    got, _ = kiln_run(args, folder, [{"messages": c} for c in CONVS], "--max-new-tokens", 1, "--prompt-ids")
    for i, (g, c) in enumerate(zip(got, CONVS)):
        want = template_ids(htok, c)
        ids = g.get("output", {}).get("PromptTokenIds")
        rep.check(f"{f} conversation {i} prompt ids == apply_chat_template", ids == want,
                  g.get("error", "") if ids is None else f"{len(want)} ids" + ("" if ids == want else f" kiln {ids} hf {want}"))
    sysp = "answer in one line"
    got, _ = kiln_run(args, folder, [{"input": "hello"}], "--max-new-tokens", 1, "--prompt-ids", "--system-prompt", sysp)
    want = template_ids(htok, [{"role": "system", "content": sysp}, {"role": "user", "content": "hello"}])
    ids = got[0].get("output", {}).get("PromptTokenIds")
    rep.check(f"{f} --system-prompt + input == apply_chat_template([system, user])", ids == want,
              "" if ids == want else f"kiln {ids} hf {want}")
    got, _ = kiln_run(args, folder, [{"input": "hello world"}], "--max-new-tokens", 1, "--prompt-ids",
                      "--no-chat-template")
    want = htok("hello world")["input_ids"]
    ids = got[0].get("output", {}).get("PromptTokenIds")
    rep.check(f"{f} --no-chat-template == tokenizer(text)", ids == want, "" if ids == want else f"kiln {ids} hf {want}")
    # greedy generation from templated prompts
    prompts = [template_ids(htok, c) for c in CONVS]
    want1 = [hf_generate(torch, model, [p], pad, eos_ids, N_NEW)[0] for p in prompts]
    got1, _ = kiln_run(args, folder, [{"messages": c} for c in CONVS], "--max-new-tokens", N_NEW)
    for i, (g, w) in enumerate(zip(got1, want1)):
        ids = g.get("output", {}).get("TokenIds")
        rep.check(f"{f} greedy batch1 conversation {i}", ids == w,
                  g.get("error", "") if ids is None else f"{len(ids)} ids" + ("" if ids == w else f" kiln {ids} hf {w}"))
    want4 = hf_generate(torch, model, prompts, pad, eos_ids, N_NEW)
    got4, _ = kiln_run(args, folder, [{"messages": c} for c in CONVS], "--max-new-tokens", N_NEW, "--batch-size", 4)
    for i, (g, w) in enumerate(zip(got4, want4)):
        ids = g.get("output", {}).get("TokenIds")
        rep.check(f"{f} greedy batch4 conversation {i} (prompt {len(prompts[i])})", ids == w,
                  g.get("error", "") if ids is None else ("" if ids == w else f"kiln {ids} hf {w}"))
    # without a template: the plain join, with the tokenizer's special tokens, and a note
    plain = os.path.join(d, family + "_plain")
    shutil.copytree(folder, plain)
    tc = json.load(open(os.path.join(plain, "tokenizer_config.json")))
    tc.pop("chat_template", None)
    json.dump(tc, open(os.path.join(plain, "tokenizer_config.json"), "w"))
    if os.path.exists(os.path.join(plain, "chat_template.jinja")):
        os.unlink(os.path.join(plain, "chat_template.jinja"))
    got, err = kiln_run(args, plain, [{"messages": CONVS[1]}], "--max-new-tokens", 1, "--prompt-ids")
    want = htok(CONVS[1][0]["content"] + "\n" + CONVS[1][1]["content"])["input_ids"]
    ids = got[0].get("output", {}).get("PromptTokenIds")
    rep.check(f"{f} no template: plain join with special tokens, said on stderr",
              ids == want and "no chat template" in err, err.strip()[:160] if ids == want else f"kiln {ids} want {want}")
    if family != "qwen2":
        return
    # a template kiln cannot read: each templated line is an error saying why, --no-chat-template still runs
    with open(os.path.join(plain, "chat_template.jinja"), "w") as t:
        t.write("{% for m in messages %}{{ m.content }}{% frobnicate %}{% endfor %}")
    got, _ = kiln_run(args, plain, [{"messages": CONVS[0]}], "--max-new-tokens", 1)
    raw, _ = kiln_run(args, plain, [{"messages": CONVS[0]}], "--max-new-tokens", 1, "--no-chat-template")
    err = got[0].get("error", "")
    rep.check(f"{f} unreadable template: an error line naming it; --no-chat-template runs",
              "chat template" in err and "frobnicate" in err and "output" in raw[0], err[:200])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--family", default="qwen2,phi3,gemma3")
    ap.add_argument("--keep", help="build in this folder and keep it")
    args = ap.parse_args()
    import torch
    import transformers
    torch.set_num_threads(1)
    d = args.keep or tempfile.mkdtemp(prefix="kiln_textgen_models_")
    if args.keep:
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d, exist_ok=True)
    rep = Report()
    for family in args.family.split(","):
        try:
            check_family(args, rep, torch, transformers, d, family)
        except Exception as e:  # a crash of kiln or of the reference is a failure, with its message
            rep.check(f"{family} run", False, repr(e)[:2000])
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)
    print(f"{rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
