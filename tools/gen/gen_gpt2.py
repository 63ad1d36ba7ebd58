#!/usr/bin/env python3
"""Write GPT-2 (GPT2LMHeadModel) as ONNX the way PyTorch's exporter writes it: token + position
embeddings, pre-LayerNorm blocks whose Conv1D projections are Reshape -> Gemm -> Reshape, fused
QKV split with Split, causal + padding boolean mask, scaled-dot-product attention, tanh GELU
(gelu_new: Pow / Tanh), final LayerNorm and the tied lm_head as a MatMul. With --with-past it takes
and returns the key/value cache the way optimum exports text-generation-with-past:
past_key_values.N.key / .value inputs [batch, heads, past_sequence_length, head_dim] and
present.N.key / .value outputs (past followed by this step's keys / values); attention_mask then
covers past + new tokens and positions start at the past length.

  gen_gpt2.py --preset gpt2 --out model.onnx --inputs-dir data --batch 1 --seq 128
  gen_gpt2.py --preset gpt2 --with-past --out decoder_with_past.onnx --inputs-dir data --seq 1 --past-len 127
  gen_gpt2.py --safetensors model.safetensors --out model.onnx          # config.json beside it

Inputs input_ids, attention_mask (and position_ids with --position-ids); output logits [batch, sequence, vocab].
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import genlib  # noqa: E402

PRESETS = {
    "gpt2": dict(layers=12, hidden=768, heads=12, ffn=3072, vocab=50257, max_pos=1024, eps=1e-5),
    "gpt2-tiny": dict(layers=2, hidden=64, heads=4, ffn=256, vocab=1000, max_pos=128, eps=1e-5),
}


def hf_config(c):
    H = c["n_embd"]
    return dict(layers=c["n_layer"], hidden=H, heads=c["n_head"], ffn=c.get("n_inner") or 4 * H, vocab=c["vocab_size"],
                max_pos=c["n_positions"], eps=c.get("layer_norm_epsilon", 1e-5))


def weights_random(cfg, seed):
    r, p, H, F = genlib.Rand(seed), {}, cfg["hidden"], cfg["ffn"]
    p["wte.weight"] = r.w(cfg["vocab"], H)
    p["wpe.weight"] = r.w(cfg["max_pos"], H, std=0.01)
    for l in range(cfg["layers"]):
        pre = f"h.{l}."
        r.ln(p, pre + "ln_1", H)
        r.ln(p, pre + "ln_2", H)
        # Conv1D keeps its weight as [in, out]
        for name, n_in, n_out in (("attn.c_attn", H, 3 * H), ("attn.c_proj", H, H), ("mlp.c_fc", H, F), ("mlp.c_proj", F, H)):
            p[pre + name + ".weight"] = r.w(n_in, n_out)
            p[pre + name + ".bias"] = r.w(n_out)
    r.ln(p, "ln_f", H)
    return p


def build(cfg, p, args):
    b = genlib.Builder()
    H, heads, eps, style = cfg["hidden"], cfg["heads"], cfg["eps"], args.attention
    D = H // heads
    past = args.with_past
    ids, mask = "input_ids", "attention_mask"
    batch, seq = b.dim(ids, 0), b.dim(ids, 1)
    past_len = b.dim("past_key_values.0.key", 2) if past else None
    e = b.op("Gather", [b.const(p["wte.weight"], "wte"), ids])
    pos = "position_ids" if args.position_ids else genlib.positions(b, seq, past_len)
    e = b.op("Add", [e, b.op("Gather", [b.const(p["wpe.weight"], "wpe"), pos])])
    # key j is visible from query i when j <= past + i and attention_mask[j] is set
    q_pos = b.op("Unsqueeze", [b.op("Range", [past_len or b.i64(0), b.op("Add", [past_len, seq]) if past else seq, b.i64(1)]), b.i64([1])])
    k_pos = b.op("Unsqueeze", [b.op("Range", [b.i64(0), b.dim(mask, 1), b.i64(1)]), b.i64([0])])
    causal = b.op("LessOrEqual", [k_pos, q_pos])
    pad = b.op("Unsqueeze", [b.op("Cast", [mask], to=genlib.TensorProto.BOOL), b.i64([1, 2])])
    bias = b.attention_bias(b.op("And", [causal, pad]), style)

    def conv1d(x, name):
        w = p[name + ".weight"]
        y = b.gemm(b.op("Reshape", [x, b.i64([-1, w.shape[0]])]), w, p[name + ".bias"], trans_b=0)
        return b.op("Reshape", [y, b.shape_of([batch, seq, w.shape[1]])])

    h, presents = e, []
    for l in range(cfg["layers"]):
        pre = f"h.{l}."
        x = b.layer_norm(h, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], eps)
        q, k, v = b.op("Split", [conv1d(x, pre + "attn.c_attn"), b.i64([H, H, H])], n_out=3, axis=2)
        q = b.split_heads(q, batch, seq, D, [0, 2, 1, 3])
        v = b.split_heads(v, batch, seq, D, [0, 2, 1, 3])
        if past:
            k = b.split_heads(k, batch, seq, D, [0, 2, 1, 3])
            k = b.op("Concat", [f"past_key_values.{l}.key", k], axis=2)
            v = b.op("Concat", [f"past_key_values.{l}.value", v], axis=2)
            presents += [(k, f"present.{l}.key"), (v, f"present.{l}.value")]
            kt = b.op("Transpose", [k], perm=[0, 1, 3, 2])
        else:
            kt = b.split_heads(k, batch, seq, D, [0, 2, 3, 1])
        c = b.merge_heads(b.attention(q, kt, v, bias, D, style), batch, seq)
        h = b.op("Add", [conv1d(c, pre + "attn.c_proj"), h])
        x = b.layer_norm(h, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], eps)
        f = conv1d(b.gelu_tanh(conv1d(x, pre + "mlp.c_fc")), pre + "mlp.c_proj")
        h = b.op("Add", [f, h])
    h = b.layer_norm(h, p["ln_f.weight"], p["ln_f.bias"], eps)
    b.output(b.linear(h, p.get("lm_head.weight", p["wte.weight"])), "logits")
    inputs = genlib.text_io([ids]) + genlib.text_io([mask], ["batch", "past_sequence_length + sequence_length" if past else "sequence"])
    if args.position_ids:
        inputs += genlib.text_io(["position_ids"])
    outputs = [genlib.float_io("logits", ["batch", "sequence", cfg["vocab"]])]
    kv_dims = ["batch", heads, "past_sequence_length", D]
    for l in range(cfg["layers"] if past else 0):
        inputs += [genlib.float_io(f"past_key_values.{l}.{t}", kv_dims) for t in ("key", "value")]
    for x, name in presents:
        b.output(x, name)
        outputs.append(genlib.float_io(name, ["batch", heads, "past_sequence_length + sequence_length", D]))
    return b.model("gpt2", inputs, outputs, "kiln gen_gpt2.py")


def make_inputs(cfg, args):
    P = args.past_len if args.with_past else 0
    ids, mask = genlib.text_batch(cfg["vocab"], args.batch, args.seq, args.seed + 1)
    feeds = [("input_ids", ids), ("attention_mask", np.concatenate([np.ones((args.batch, P), np.int64), mask], axis=1))]
    if args.position_ids:
        feeds.append(("position_ids", np.broadcast_to(np.arange(P, P + args.seq, dtype=np.int64), ids.shape).copy()))
    rng = np.random.default_rng(args.seed + 2)
    D = cfg["hidden"] // cfg["heads"]
    for l in range(cfg["layers"] if args.with_past else 0):
        for t in ("key", "value"):
            feeds.append((f"past_key_values.{l}.{t}", rng.standard_normal((args.batch, cfg["heads"], P, D)).astype(np.float32)))
    return feeds


def extra(ap):
    ap.add_argument("--with-past", action="store_true", help="take past_key_values.N.* and return present.N.* (optimum's layout)")
    ap.add_argument("--past-len", type=int, default=4, help="past length of the --inputs-dir set with --with-past")
    ap.add_argument("--position-ids", action="store_true",
                    help="take position_ids [batch, sequence] as an input (optimum's layout; left-padded batches need it)")


if __name__ == "__main__":
    genlib.main(__doc__, PRESETS, weights_random, build, make_inputs, hf_config, strip=("transformer.",), extra_args=extra)
