#!/usr/bin/env python3
"""Optimum-layout decode at a long context: kiln reading its past in place against a kiln that
copies it every step, interleaved in one run (new, base, new, base, ...).

The model is a random GPT2LMHeadModel (transformers, fixed seed; --layers, --hidden, --heads,
1024 positions) exported with past and position_ids by tools/gen/gen_gpt2.py: present =
Concat(past, new) per layer, as optimum writes it. A WordLevel tokenizer whose token "wN" is id N
makes prompts exact id lists. --kiln is the build under test (on the CPU its decode step reads the
cache and the new rows apart: `--stats` says "past read in place in N layers"); --kiln-base is a
build without that (e.g. main before the change), whose steps concatenate the whole past into each
present and copy the new rows back. Each side runs `kiln run --type textGeneration --stats` with
the same batch twice in one process (the first untimed) and reports DecodeMsPerToken; the script
prints the median per side, the ratio base/new, and whether both produced the same ids.

  python3 tools/bench/gen_kv_bench.py --kiln build/kiln --kiln-base ../main/build/kiln --prompt 512 --new 32
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def build(d, layers, hidden, heads, vocab, seed=0):
    import torch
    import transformers
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=1024, n_embd=hidden, n_layer=layers, n_head=heads,
                                  bos_token_id=vocab - 1, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    hf = os.path.join(d, "hf")
    model.save_pretrained(hf)
    out = os.path.join(d, "model")
    os.makedirs(out, exist_ok=True)
    subprocess.run([sys.executable, os.path.join(HERE, "..", "gen", "gen_gpt2.py"), "--safetensors",
                    os.path.join(hf, "model.safetensors"), "--with-past", "--position-ids", "--out",
                    os.path.join(out, "model.onnx")], check=True, stdout=subprocess.DEVNULL)
    for f in ("config.json", "generation_config.json"):
        with open(os.path.join(hf, f)) as src, open(os.path.join(out, f), "w") as dst:
            dst.write(src.read())
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
           "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None, "decoder": None,
           "model": {"type": "WordLevel", "vocab": {f"w{i}": i for i in range(vocab)}, "unk_token": "w0"}}
    json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w"))
    return out


def run(kiln, d, prompts, n_new, threads):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for p in prompts * 2:  # the first batch warms up: plans built, weights packed
            f.write(json.dumps({"input": " ".join(f"w{t}" for t in p)}) + "\n")
        path = f.name
    cmd = [kiln, "run", "--model", d, "--type", "textGeneration", "--input", path, "--max-new-tokens", str(n_new),
           "--batch-size", str(len(prompts)), "--threads", str(threads), "--stats", "--no-chat-template"]
    p = subprocess.run(cmd, capture_output=True)
    os.unlink(path)
    if p.returncode:
        sys.exit(f"{' '.join(cmd)}: {p.stderr.decode(errors='replace')}")
    rows = [json.loads(ln)["output"] for ln in p.stdout.splitlines() if ln.strip()][-len(prompts):]
    return statistics.mean(r["DecodeMsPerToken"] for r in rows), [r["TokenIds"] for r in rows], p.stderr.decode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--kiln-base", required=True, help="the copying build to compare with")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens (positions before decoding)")
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--batch", default="1,4")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", help="build the model here and keep it")
    args = ap.parse_args()
    d = args.keep or tempfile.mkdtemp(prefix="kiln_kv_bench_")
    folder = os.path.join(d, "model")
    if not os.path.exists(os.path.join(folder, "model.onnx")):
        folder = build(d, args.layers, args.hidden, args.heads, args.vocab)
    import random
    r = random.Random(1)
    print(f"GPT-2 {args.layers} layers, hidden {args.hidden}, {args.heads} heads; prompt {args.prompt}, "
          f"{args.new} new tokens, {args.threads} thread(s), {args.rounds} rounds interleaved")
    print(f"{'batch':>5} {'in place ms/token':>18} {'copying ms/token':>17} {'copying/in place':>17} ids equal")
    for b in (int(x) for x in args.batch.split(",")):
        prompts = [[r.randrange(1, args.vocab - 1) for _ in range(args.prompt)] for _ in range(b)]
        new, base, same = [], [], True
        for _ in range(args.rounds):
            ms, ids_n, err = run(args.kiln, folder, prompts, args.new, args.threads)
            new.append(ms)
            ms, ids_b, _ = run(args.kiln_base, folder, prompts, args.new, args.threads)
            base.append(ms)
            same = same and ids_n == ids_b
        mn, mb = statistics.median(new), statistics.median(base)
        print(f"{b:>5} {mn:>18.3f} {mb:>17.3f} {mb / mn:>17.2f} {same}")
        if "past read in place" in err:
            print("      " + err.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
