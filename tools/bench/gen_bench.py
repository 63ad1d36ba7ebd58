#!/usr/bin/env python3
"""Text-generation benchmark: kiln's decode loop (`kiln run --type textGeneration --stats`) against
ONNX Runtime on the CPU, same threads, interleaved in one run (kiln, ORT, kiln, ORT, ...).

The model is built here with random weights in ONNX Runtime GenAI's layout (genai_config.json, a
decoder of SimplifiedLayerNormalization, GroupQueryAttention with rotary inside, SiLU-gated MLP),
its projections MatMulNBits (int4, block 32, as GenAI's builder quantises; accuracy_level 0, float32
products, unless --accuracy-level 4, the builder's CPU default: int8 activations) or MatMul (fp32), the
embedding a float32 Gather. --shape qwen05 is Qwen2.5-0.5B's (24 layers, hidden 896, 14 heads over
2 key/value heads, ffn 4864, vocab 151936); --shape small is a labelled smaller one. The tokenizer
is a WordLevel one whose token "wN" is id N, so prompts are exact id lists.

The reference (--reference): onnxruntime-genai's own og.Generator on the CPU provider (genai; the
threads set in the folder's genai_config.json), and/or ONNX Runtime running a hand-written greedy
loop the way GenAI drives such a model with past_present_share_buffer (ort, the default): one [B, kv_heads, capacity,
head] OrtValue per layer bound (IOBinding) as both past and present, the mask at the current
length. Reported per system and batch: time to first token (the prefill, argmax included) and
decode tokens/s (tokens after the first, per sequence times batch, over the decode time); kiln
times come from its own clock around its steps (FirstTokenMs, DecodeMsPerToken), ORT's from
Python around each run. Both sides warm up first (kiln: the same batch once, untimed, in the same
process; ORT: a prefill and a step on the same session) unless --no-warmup.

--device cuda (the GPU decode benchmark, a capped step of tools/gpu_check.sh): kiln generating on
cuda (the KV cache on the device, decode steps replayed as CUDA graphs, the greedy choice on the
device so only the ids come back; --precision is tried and kiln runs fp32 where its generator
refuses it, as it does today: its caches are float32) against ONNX Runtime GenAI's CUDA provider
when onnxruntime_genai imports, else transformers' generate on cuda with the same weights loaded
into a Qwen2ForCausalLM (zero q/k/v biases, rope_theta 10000 as the ONNX cos/sin caches, untied
head), at kiln's precision (the ratio's side) and in fp16; time to first token and decode
tokens/s, batch 1 and 4. Without
a reference (no CUDA torch, e.g. kiln-sim on a machine without a GPU) kiln's rows alone, and the
reason. --smoke: a tiny shape and few tokens, to check the script itself (`--device cpu --smoke`
here, `--device cuda --smoke --kiln build/kiln-sim` against the interpreter).

--case kvcache measures the KV-cache change alone: kiln with the shared past/present buffer against
kiln copying the past every step (--no-share-buffer), on a long context (--prompt 512).

  python3 tools/bench/gen_bench.py --kiln build/kiln --shape small --quant int4 --batch 1,4 --out DIR
  python3 tools/bench/gen_bench.py --kiln build/kiln --device cuda --quant fp32 --batch 1,4 --out DIR
  python3 tools/bench/gen_bench.py --kiln build/kiln --case kvcache --shape small --quant fp32 --prompt 512 --new 32
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SHAPES = {
    "qwen05": dict(L=24, H=896, NH=14, KV=2, FFN=4864, V=151936),
    "small": dict(L=4, H=256, NH=8, KV=2, FFN=1024, V=8192),
    "tiny": dict(L=2, H=64, NH=4, KV=2, FFN=128, V=512),
}


def build(d, L, H, NH, KV, FFN, V, ctx, quant, seed=0, accuracy_level=0):
    from onnx import TensorProto, helper, numpy_helper, save
    r = np.random.default_rng(seed)
    D = H // NH
    inits, nodes = [], []

    def arr(name, a):
        inits.append(numpy_helper.from_array(a, name))
        return name

    def linear(x, name, K, N, out):
        if quant == "fp32":
            w = (r.standard_normal((K, N), dtype=np.float32) / np.sqrt(K)).astype(np.float32)
            nodes.append(helper.make_node("MatMul", [x, arr(name, w)], [out]))
            return
        bs, nb = 32, (K + 31) // 32
        q = r.integers(0, 16, (N, nb, bs), dtype=np.uint8)
        packed = q[:, :, 0::2] | (q[:, :, 1::2] << 4)
        sc = (r.uniform(0.8, 1.2, (N * nb,)) / (4.6 * np.sqrt(K))).astype(np.float32)
        nodes.append(helper.make_node("MatMulNBits", [x, arr(name + "_q", packed), arr(name + "_s", sc)], [out],
                                      domain="com.microsoft", K=K, N=N, bits=4, block_size=bs,
                                      accuracy_level=accuracy_level))

    inv = 1.0 / (10000 ** (np.arange(0, D, 2) / D))
    ang = np.outer(np.arange(ctx), inv).astype(np.float32)
    arr("cos_cache", np.cos(ang))
    arr("sin_cache", np.sin(ang))
    arr("one", np.array([1], np.int64))
    arr("axis1", np.array([1], np.int64))
    nodes += [helper.make_node("Gather", [arr("emb", r.standard_normal((V, H), dtype=np.float32)), "input_ids"], ["h0"]),
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
        ln1 = arr(f"ln1_{l}", np.ones(H, np.float32))
        ln2 = arr(f"ln2_{l}", np.ones(H, np.float32))
        nodes.append(helper.make_node("SimplifiedLayerNormalization", [h, ln1], [f"x{l}"], axis=-1, epsilon=1e-6))
        linear(f"x{l}", f"wq{l}", H, NH * D, f"q{l}")
        linear(f"x{l}", f"wk{l}", H, KV * D, f"k{l}")
        linear(f"x{l}", f"wv{l}", H, KV * D, f"v{l}")
        nodes.append(helper.make_node(
            "GroupQueryAttention", [f"q{l}", f"k{l}", f"v{l}", f"past_key_values.{l}.key", f"past_key_values.{l}.value",
                                    "seqlens_k", "total_len", "cos_cache", "sin_cache"],
            [f"a{l}", f"present.{l}.key", f"present.{l}.value"], domain="com.microsoft", num_heads=NH, kv_num_heads=KV,
            do_rotary=1))
        linear(f"a{l}", f"wo{l}", NH * D, H, f"o{l}")
        nodes += [helper.make_node("Add", [h, f"o{l}"], [f"r{l}"]),
                  helper.make_node("SimplifiedLayerNormalization", [f"r{l}", ln2], [f"y{l}"], axis=-1, epsilon=1e-6)]
        linear(f"y{l}", f"wg{l}", H, FFN, f"g{l}")
        linear(f"y{l}", f"wu{l}", H, FFN, f"u{l}")
        nodes += [helper.make_node("Sigmoid", [f"g{l}"], [f"gs{l}"]), helper.make_node("Mul", [f"g{l}", f"gs{l}"], [f"ga{l}"]),
                  helper.make_node("Mul", [f"ga{l}", f"u{l}"], [f"m{l}"])]
        linear(f"m{l}", f"wd{l}", FFN, H, f"d{l}")
        nodes.append(helper.make_node("Add", [f"r{l}", f"d{l}"], [f"h{l + 1}"]))
        h = f"h{l + 1}"
    nodes.append(helper.make_node("SimplifiedLayerNormalization", [h, arr("lnf", np.ones(H, np.float32))], ["hf"],
                                  axis=-1, epsilon=1e-6))
    linear("hf", "lm", H, V, "logits")
    outs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", V]))
    g = helper.make_graph(nodes, "decoder", ins, outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    os.makedirs(d, exist_ok=True)
    save(m, os.path.join(d, "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
         location="model.onnx.data", size_threshold=1024)
    vocab = {f"w{i}": i for i in range(V)}
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
           "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None, "decoder": None,
           "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"}}
    json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w"))
    eos = V - 1  # a random model seldom picks it: runs go the full length
    genai = {"model": {"type": "qwen2", "context_length": ctx, "eos_token_id": eos, "pad_token_id": 0, "vocab_size": V,
                       "decoder": {"filename": "model.onnx", "head_size": D, "hidden_size": H, "num_attention_heads": NH,
                                   "num_key_value_heads": KV, "num_hidden_layers": L,
                                   "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                                              "past_key_names": "past_key_values.%d.key",
                                              "past_value_names": "past_key_values.%d.value"},
                                   "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                                               "present_value_names": "present.%d.value"}}},
             "search": {"max_length": ctx, "past_present_share_buffer": True, "do_sample": False}}
    json.dump(genai, open(os.path.join(d, "genai_config.json"), "w"))
    return dict(L=L, KV=KV, D=D, eos=eos)


def prompts(n, length, V, seed=1):
    r = np.random.default_rng(seed)
    return [r.integers(1, V - 1, length).tolist() for _ in range(n)]


def kiln_gen(args, d, ps, n_new, extra=(), warmup=False):
    """One `kiln run` of the prompts as one batch; warmup: the same batch runs first, untimed, so the
    timed one finds its plans built and its weights prepared (as ORT's session creation does)."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for p in ps * (2 if warmup else 1):
            f.write(json.dumps({"input": " ".join(f"w{t}" for t in p)}) + "\n")
        path = f.name
    cmd = [args.kiln, "run", "--model", d, "--type", "textGeneration", "--input", path, "--max-new-tokens", str(n_new),
           "--batch-size", str(len(ps)), "--threads", str(args.threads), "--stats", "--no-chat-template", *extra]
    p = subprocess.run(cmd, capture_output=True)
    os.unlink(path)
    if p.returncode:
        sys.exit(f"{' '.join(cmd)}: {p.stderr.decode(errors='replace')}")
    rows = [json.loads(ln)["output"] for ln in p.stdout.splitlines() if ln.strip()][-len(ps):]
    ttft = max(r["FirstTokenMs"] for r in rows)
    n_dec = min(len(r["TokenIds"]) for r in rows) - 1
    dec_ms = statistics.mean(r["DecodeMsPerToken"] for r in rows)
    return dict(ttft_ms=ttft, decode_ms_per_step=dec_ms, tok_s=len(ps) * 1e3 / dec_ms if dec_ms else 0.0,
                ids=[r["TokenIds"] for r in rows], n_decode=n_dec)


def ort_gen(args, d, info, ps, n_new, ctx, warmup=False):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    s = getattr(args, "session", None) or ort.InferenceSession(os.path.join(d, "model.onnx"), so,
                                                               providers=["CPUExecutionProvider"])
    B, P = len(ps), len(ps[0])
    L, KV, D = info["L"], info["KV"], info["D"]
    cap = min(ctx, (P + n_new + 63) // 64 * 64)
    if warmup:  # a prefill and a decode step, untimed
        ort_gen(argparse.Namespace(threads=args.threads, session=s), d, info, ps, 2, ctx)
    caches = {f"{l}.{t}": ort.OrtValue.ortvalue_from_numpy(np.zeros((B, KV, cap, D), np.float32))
              for l in range(L) for t in ("key", "value")}
    ids = np.array(ps, np.int64)
    got = [[] for _ in range(B)]
    t0 = time.perf_counter()
    ttft = None
    step_times = []
    total = 0
    for step in range(n_new):
        ts = time.perf_counter()
        total += ids.shape[1]
        io = s.io_binding()
        io.bind_cpu_input("input_ids", ids)
        io.bind_cpu_input("attention_mask", np.ones((B, total), np.int64))
        io.bind_output("logits")  # first: get_outputs() lists the outputs in binding order
        for k, v in caches.items():
            io.bind_ortvalue_input(f"past_key_values.{k}", v)
            io.bind_ortvalue_output(f"present.{k}", v)
        s.run_with_iobinding(io)
        logits = io.get_outputs()[0].numpy()
        nxt = logits[:, -1].argmax(-1)
        for b in range(B):
            got[b].append(int(nxt[b]))
        ids = nxt.reshape(B, 1).astype(np.int64)
        if ttft is None:
            ttft = (time.perf_counter() - t0) * 1e3
        else:
            step_times.append(time.perf_counter() - ts)
    dec_ms = 1e3 * statistics.mean(step_times) if step_times else 0.0
    return dict(ttft_ms=ttft, decode_ms_per_step=dec_ms, tok_s=B * 1e3 / dec_ms if dec_ms else 0.0, ids=got,
                n_decode=len(step_times))


def torch_ref(d, sh, ctx, device="cuda", dtype="float16"):
    """transformers' Qwen2ForCausalLM on cuda in fp16 holding the ONNX model's own weights (MatMul
    [K, N] is Linear's weight transposed), or (None, why)."""
    try:
        import torch
        import transformers
    except ImportError as e:
        return None, f"no torch/transformers ({e})"
    if device == "cuda" and not torch.cuda.is_available():
        return None, "torch sees no CUDA device"
    import onnx
    from onnx import numpy_helper
    m = onnx.load(os.path.join(d, "model.onnx"))
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    if "lm" not in w:
        return None, "the model is not the fp32 (MatMul) build: --quant fp32"
    cfg = transformers.Qwen2Config(vocab_size=sh["V"], hidden_size=sh["H"], intermediate_size=sh["FFN"],
                                   num_hidden_layers=sh["L"], num_attention_heads=sh["NH"],
                                   num_key_value_heads=sh["KV"], max_position_embeddings=ctx, rms_norm_eps=1e-6,
                                   rope_theta=10000.0, tie_word_embeddings=False, use_cache=True)
    with torch.device(device):  # random init on the device is quick; the weights are replaced below
        model = transformers.Qwen2ForCausalLM(cfg).to(getattr(torch, dtype)).eval()
    sd = {"model.embed_tokens.weight": w["emb"], "model.norm.weight": w["lnf"], "lm_head.weight": w["lm"].T}
    for l in range(sh["L"]):
        p = f"model.layers.{l}."
        sd[p + "input_layernorm.weight"] = w[f"ln1_{l}"]
        sd[p + "post_attention_layernorm.weight"] = w[f"ln2_{l}"]
        for a, b in (("q", "wq"), ("k", "wk"), ("v", "wv"), ("o", "wo")):
            sd[p + f"self_attn.{a}_proj.weight"] = w[f"{b}{l}"].T
            if a != "o":
                sd[p + f"self_attn.{a}_proj.bias"] = np.zeros(w[f"{b}{l}"].shape[1], np.float32)
        for a, b in (("gate", "wg"), ("up", "wu"), ("down", "wd")):
            sd[p + f"mlp.{a}_proj.weight"] = w[f"{b}{l}"].T
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.require(v, requirements=["C", "W"]))
                                                 for k, v in sd.items()},
                                                strict=False)
    if [k for k in missing if "rotary" not in k] or unexpected:
        return None, f"weights do not map onto Qwen2: missing {missing[:3]}, unexpected {unexpected[:3]}"
    return model, f"transformers generate, {device} {dtype}"


def torch_gen(model, ps, n_new, warmup=False):
    """Greedy generate on cuda: time to first token from a 1-token run, decode per step from the full
    run's remaining time (EOS suppressed: min_new_tokens)."""
    import torch
    ids = torch.tensor(ps, dtype=torch.long, device=model.device)
    mask = torch.ones_like(ids)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    def run(n):
        sync()
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                                 min_new_tokens=n, pad_token_id=0)
        sync()
        return time.perf_counter() - t, out[:, ids.shape[1]:].tolist()

    if warmup:
        run(2)
    t1, _ = run(1)
    tn, got = run(n_new)
    dec_ms = 1e3 * max(tn - t1, 0.0) / max(n_new - 1, 1)
    return dict(ttft_ms=1e3 * t1, decode_ms_per_step=dec_ms, tok_s=len(ps) * 1e3 / dec_ms if dec_ms else 0.0, ids=got,
                n_decode=n_new - 1)


def genai_ref(d):
    """ONNX Runtime GenAI with its CUDA provider, or (None, why): a one-token trial run on the folder
    decides (an older API or a build without CUDA falls back to the next reference)."""
    try:
        import onnxruntime_genai as og
    except ImportError as e:
        return None, f"no onnxruntime_genai ({e})"
    try:
        genai_gen(og, d, [[1, 2, 3]], 2)
    except Exception as e:  # noqa: BLE001 - any failure means no usable GenAI reference
        return None, f"onnxruntime_genai on cuda failed: {repr(e)[:200]}"
    return og, "onnxruntime-genai cuda"


def genai_gen(og, d, ps, n_new, warmup=False, device="cuda"):
    """onnxruntime-genai's greedy loop over the same folder (genai_config.json), on cuda or on the CPU
    (the threads are the config's session_options: set_genai_threads)."""
    cfg = og.Config(d)
    cfg.clear_providers()
    if device == "cuda":
        cfg.append_provider("cuda")
    model = og.Model(cfg)

    def run(n):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ps[0]) + n, min_length=len(ps[0]) + n, do_sample=False,
                                  batch_size=len(ps))
        gen = og.Generator(model, params)
        t = time.perf_counter()
        gen.append_tokens(np.array(ps, np.int32))
        ttft, k = None, 0
        while not gen.is_done() and k < n:
            gen.generate_next_token()
            k += 1
            if ttft is None:
                ttft = time.perf_counter() - t
        total = time.perf_counter() - t
        return ttft, total, [list(gen.get_sequence(b))[len(ps[0]):] for b in range(len(ps))], k

    if warmup:
        run(2)
    ttft, total, got, k = run(n_new)
    dec_ms = 1e3 * (total - ttft) / max(k - 1, 1)
    return dict(ttft_ms=1e3 * ttft, decode_ms_per_step=dec_ms, tok_s=len(ps) * 1e3 / dec_ms if dec_ms else 0.0,
                ids=got, n_decode=k - 1)


def cpu_sides(args, d, info, ps, ctx, w):
    """kiln and the CPU reference(s) of --reference, in the order their ratio reads."""
    sides = {"kiln": lambda: kiln_gen(args, d, ps, args.new, warmup=w)}
    if args.reference in ("genai", "both"):
        import onnxruntime_genai as og
        set_genai_threads(d, args.threads)
        sides["ort-genai"] = lambda: genai_gen(og, d, ps, args.new, warmup=w, device="cpu")
    if args.reference in ("ort", "both"):
        sides["ort"] = lambda: ort_gen(args, d, info, ps, args.new, ctx, warmup=w)
    return sides


def set_genai_threads(d, threads):
    """ONNX Runtime GenAI's CPU threads, as its builder writes them: the decoder's session options."""
    p = os.path.join(d, "genai_config.json")
    cfg = json.load(open(p))
    cfg["model"]["decoder"]["session_options"] = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    json.dump(cfg, open(p, "w"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--case", choices=("decode", "kvcache"), default="decode")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen05")
    ap.add_argument("--quant", choices=("int4", "fp32"), default="int4")
    ap.add_argument("--accuracy-level", type=int, default=0, choices=(0, 1, 4),
                    help="the MatMulNBits nodes' accuracy_level (4: the GenAI builder's CPU default, int8 "
                         "activations in both kiln and ONNX Runtime; 0: float32 products)")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--batch", default="1,4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-warmup", action="store_true",
                    help="time the first batch of each process (kiln then pays its plans and weight packing)")
    ap.add_argument("--model-dir", help="build the model here (kept; reused when it exists)")
    ap.add_argument("--out", help="write gen_bench.json here")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: kiln --device cuda --precision fp16 against ORT GenAI cuda, else transformers fp16")
    ap.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "bf16"), help="kiln's, with --device cuda")
    ap.add_argument("--reference", choices=("ort", "genai", "both"), default="ort",
                    help="on the CPU: ONNX Runtime driven by this script (ort), onnxruntime-genai's own "
                         "og.Generator (genai), or both; kiln/first reference is the ratio")
    ap.add_argument("--smoke", action="store_true", help="tiny shape, 8 new tokens, 1 round: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.shape, args.prompt, args.new, args.rounds = "tiny", 9, 8, 1
    sh = SHAPES[args.shape]
    ctx = (args.prompt + args.new + 63) // 64 * 64
    d = args.model_dir or tempfile.mkdtemp(prefix="kiln_gen_bench_")
    t = time.perf_counter()
    if os.path.exists(os.path.join(d, "info.json")):
        info = json.load(open(os.path.join(d, "info.json")))
    else:
        info = build(d, ctx=ctx, quant=args.quant, accuracy_level=args.accuracy_level, **sh)
        json.dump(info, open(os.path.join(d, "info.json"), "w"))
    label = f"{args.shape} ({', '.join(f'{k}={v}' for k, v in sh.items())}) {args.quant}" + \
        (f" accuracy_level {args.accuracy_level}" if args.quant == "int4" else "")
    print(f"model: {label}, context {ctx}, built/loaded in {time.perf_counter() - t:.1f} s; prompt {args.prompt}, "
          f"{args.new} new tokens, {args.threads} threads, {args.rounds} rounds interleaved")
    res = []
    ref, why = None, None
    kx = ("--device", "cuda") if args.device == "cuda" else ()
    if args.device == "cuda":
        if args.precision != "fp32":
            probe = subprocess.run([args.kiln, "run", "--model", d, "--type", "textGeneration", "--max-new-tokens", "1",
                                    "--no-chat-template", *kx, "--precision", args.precision],
                                   input=b'{"input": "w1 w2"}\n', capture_output=True)
            if probe.returncode:
                print(f"kiln --precision {args.precision} refused ({probe.stderr.decode(errors='replace').strip()[:200]}); "
                      "kiln runs fp32", flush=True)
                args.precision = "fp32"
            else:
                kx = kx + ("--precision", args.precision)
        ref, why = genai_ref(d)
        ref_kind, refs = "genai", {}
        if ref is None:
            # the reference at kiln's precision first (the ratio's), then in fp16 if that differs
            why0 = why
            for dt in dict.fromkeys(({"fp32": "float32", "bf16": "bfloat16"}.get(args.precision, "float16"), "float16")):
                try:
                    m, why = torch_ref(d, sh, ctx, dtype=dt)
                except Exception as e:  # noqa: BLE001 - kiln's rows still come, with the reason
                    m, why = None, f"transformers reference failed: {repr(e)[:200]}"
                if m is None:
                    break
                refs[dt] = m
            ref_kind, ref = "torch", refs or None
            why = ", ".join(f"transformers generate, cuda {dt}" for dt in refs) if refs else f"{why0}; {why}"
        print(f"reference: {why}" if ref is not None else f"no reference on cuda: {why}", flush=True)
    for b in [int(x) for x in args.batch.split(",")]:
        ps = prompts(b, args.prompt, sh["V"])
        w = not args.no_warmup
        if args.device == "cuda":
            sides = {f"kiln cuda {args.precision}": lambda: kiln_gen(args, d, ps, args.new, kx, warmup=w)}
            if ref is not None and ref_kind == "genai":
                sides["ort-genai cuda"] = lambda: genai_gen(ref, d, ps, args.new, warmup=w)
            elif ref is not None:
                for dt, m in ref.items():
                    sides[f"torch cuda {dt}"] = lambda m=m: torch_gen(m, ps, args.new, warmup=w)
        else:
            sides = None
        sides = sides or ({"kiln shared": lambda: kiln_gen(args, d, ps, args.new, warmup=w),
                  "kiln copy": lambda: kiln_gen(args, d, ps, args.new, ["--no-share-buffer"], warmup=w)}
                 if args.case == "kvcache" else
                 cpu_sides(args, d, info, ps, ctx, w))
        runs = {k: [] for k in sides}
        for _ in range(args.rounds):
            for k, f in sides.items():
                runs[k].append(f())
        names = list(sides)
        row = {"batch": b}
        for k in names:
            row[k] = {m: statistics.median(r[m] for r in runs[k]) for m in ("ttft_ms", "decode_ms_per_step", "tok_s")}
        if len(names) < 2:  # no reference here: kiln's row alone
            row["reference"] = why
            res.append(row)
            k = names[0]
            print(f"batch {b}: {k}: first token {row[k]['ttft_ms']:.1f} ms, decode {row[k]['decode_ms_per_step']:.2f} "
                  f"ms/step = {row[k]['tok_s']:.1f} tok/s; no reference ({why})", flush=True)
            continue
        a, c = runs[names[0]][0]["ids"], runs[names[1]][0]["ids"]
        same = sum(x == y for ra, rc in zip(a, c) for x, y in zip(ra, rc))
        row["same_tokens"] = f"{same}/{sum(min(len(ra), len(rc)) for ra, rc in zip(a, c))}"
        row["decode_ratio"] = row[names[0]]["decode_ms_per_step"] / row[names[1]]["decode_ms_per_step"]
        row["ttft_ratio"] = row[names[0]]["ttft_ms"] / row[names[1]]["ttft_ms"]
        res.append(row)
        print(f"batch {b}: " + "; ".join(f"{k}: first token {row[k]['ttft_ms']:.1f} ms, decode "
                                         f"{row[k]['decode_ms_per_step']:.2f} ms/step = {row[k]['tok_s']:.1f} tok/s"
                                         for k in names) +
              f"; {names[0]}/{names[1]} decode time {row['decode_ratio']:.3f}, first token {row['ttft_ratio']:.3f}; "
              f"greedy tokens equal {row['same_tokens']}", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        json.dump({"model": label, "context": ctx, "prompt": args.prompt, "new": args.new, "threads": args.threads,
                   "case": args.case, "device": args.device, "reference": why, "results": res}, open(os.path.join(args.out, "gen_bench.json"), "w"), indent=1)
        # the rows tools/gpu_check.sh puts in its table: "check<TAB>detail" per batch
        with open(os.path.join(args.out, "gen_rows.tsv"), "w") as f:
            for r in res:
                sides = [k for k in r if isinstance(r[k], dict)]
                det = "; ".join(f"{k}: {r[k]['tok_s']:.1f} tok/s, first token {r[k]['ttft_ms']:.1f} ms" for k in sides)
                det += (f"; decode time ratio {r['decode_ratio']:.2f}, first token {r['ttft_ratio']:.2f}"
                        if len(sides) > 1 else f"; no reference: {r.get('reference')}")
                f.write(f"generate {args.device} batch {r['batch']} ({args.shape} {args.quant})\t{det}\n")


if __name__ == "__main__":
    main()
