"""Shared builders for the model generators in tools/gen (gen_bert.py, gen_distilbert.py, gen_gpt2.py,
gen_resnet.py, gen_vit.py): a small ONNX graph builder, the layer patterns PyTorch's TorchScript
exporter writes for transformers models (nn.Linear as MatMul + Add on 3-D inputs and Gemm on 2-D
ones, LayerNormalization, erf and tanh GELU, dynamic Shape -> Gather -> Concat reshape targets,
scaled-dot-product attention with a boolean mask), the command line they all share, and input
sets in the ONNX test layout.

Weights are kept under their Hugging Face state-dict names, so a random model and a real checkpoint
(--safetensors) go through the same code. Needs only numpy and onnx (and safetensors for a checkpoint).
"""
import argparse
import json
import math
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Builder:
    """Appends nodes and initializers; every tensor gets a fresh name."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, arr, base="c"):
        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def i64(self, v):
        return self.const(np.array(v, np.int64), "i64")

    def f32(self, v):
        return self.const(np.array(v, np.float32), "f32")

    def op(self, op, inputs, base=None, n_out=1, **attrs):
        outs = [self.name(base or op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs[0] if n_out == 1 else outs

    def output(self, x, name):
        self.nodes.append(helper.make_node("Identity", [x], [name], name=self.name("output")))

    # ---- shapes: the exporter computes reshape targets from Shape at run time, so do the same ----
    def dim(self, x, axis):
        """Scalar int64 size of x along axis."""
        return self.op("Gather", [self.op("Shape", [x]), self.i64(axis)], axis=0)

    def shape_of(self, parts):
        """1-D int64 shape from scalars (tensor names) and ints, Unsqueeze + Concat like the exporter."""
        pieces = [self.i64([p]) if isinstance(p, int) else self.op("Unsqueeze", [p, self.i64([0])]) for p in parts]
        return self.op("Concat", pieces, axis=0)

    # ---- layers ----
    def linear(self, x, w, bias=None):
        """nn.Linear on a 3-D input: MatMul by the transposed weight, then Add(bias, y)."""
        y = self.op("MatMul", [x, self.const(np.ascontiguousarray(w.T), "w")])
        return y if bias is None else self.op("Add", [self.const(bias, "b"), y])

    def gemm(self, x, w, bias, trans_b=1):
        """nn.Linear (trans_b=1) or GPT-2's Conv1D (trans_b=0) on a 2-D input."""
        attrs = dict(alpha=1.0, beta=1.0)
        if trans_b:
            attrs["transB"] = 1
        return self.op("Gemm", [x, self.const(w, "w"), self.const(bias, "b")], **attrs)

    def layer_norm(self, x, w, bias, eps):
        return self.op("LayerNormalization", [x, self.const(w, "ln_w"), self.const(bias, "ln_b")], axis=-1, epsilon=eps)

    def gelu_erf(self, x):
        """x * (1 + erf(x / sqrt 2)) * 0.5, the order nn.functional.gelu exports in."""
        g = self.op("Erf", [self.op("Div", [x, self.f32(math.sqrt(2.0))])])
        return self.op("Mul", [self.op("Mul", [x, self.op("Add", [g, self.f32(1.0)])]), self.f32(0.5)])

    def gelu_tanh(self, x):
        """GPT-2's gelu_new: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))."""
        cube = self.op("Mul", [self.op("Pow", [x, self.f32(3.0)]), self.f32(0.044715)])
        t = self.op("Tanh", [self.op("Mul", [self.op("Add", [x, cube]), self.f32(math.sqrt(2.0 / math.pi))])])
        return self.op("Mul", [self.op("Mul", [x, self.f32(0.5)]), self.op("Add", [t, self.f32(1.0)])])

    def split_heads(self, x, batch, seq, head_dim, perm):
        """[B, S, H] -> Reshape [B, S, heads, D] -> Transpose(perm)."""
        r = self.op("Reshape", [x, self.shape_of([batch, seq, -1, head_dim])])
        return self.op("Transpose", [r], perm=perm)

    def merge_heads(self, c, batch, seq):
        """[B, heads, S, D] -> [B, S, heads * D]."""
        t = self.op("Transpose", [c], perm=[0, 2, 1, 3])
        return self.op("Reshape", [t, self.shape_of([batch, seq, -1])])

    def attention(self, q, kt, v, mask, head_dim, style):
        """q [B,h,S,D], kt [B,h,D,T], v [B,h,T,D]; mask is what attention_bias() returned (or None).
        sdpa: what F.scaled_dot_product_attention exports as (q and k^T each scaled by D^-1/4, a
        boolean mask turned into 0 / -inf per layer, NaN rows of fully masked queries set to 0);
        eager: transformers 4's eager attention (scores / sqrt D + additive mask)."""
        if style == "sdpa":
            s = self.f32(math.sqrt(1.0 / math.sqrt(head_dim)))
            sc = self.op("MatMul", [self.op("Mul", [q, s]), self.op("Mul", [kt, s])])
            if mask is None:  # the exporter writes no mask and no NaN guard then
                p = self.op("Softmax", [sc], axis=-1)
            else:
                sc = self.op("Add", [sc, self.op("Where", [mask, self.f32([0.0]), self.f32([-np.inf])])])
                p = self.op("Softmax", [sc], axis=-1)
                p = self.op("Where", [self.op("IsNaN", [p]), self.f32([0.0]), p])
        else:
            sc = self.op("Div", [self.op("MatMul", [q, kt]), self.f32(math.sqrt(head_dim))])
            if mask is not None:
                sc = self.op("Add", [sc, mask])
            p = self.op("Softmax", [sc], axis=-1)
        return self.op("MatMul", [p, v])

    def attention_bias(self, bool_mask, style):
        """The per-model part of the mask: sdpa keeps the boolean [B,1,S,T] mask (each layer turns it
        into 0 / -inf); eager turns it into one additive float mask with finfo.min."""
        if style == "sdpa":
            return bool_mask
        return self.op("Where", [bool_mask, self.f32(0.0), self.f32(np.finfo(np.float32).min)])

    def padding_mask(self, attention_mask, batch, q_len, kv_len):
        """attention_mask [B, T] (int64) -> bool [B, 1, S, T], keys masked, every query row alike."""
        m = self.op("Unsqueeze", [self.op("Cast", [attention_mask], to=TensorProto.BOOL), self.i64([1, 2])])
        return self.op("Expand", [m, self.shape_of([batch, 1, q_len, kv_len])])

    def model(self, name, inputs, outputs, producer):
        g = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer)
        m.ir_version = 8
        return m


def post_ln_layer(b, h, bias, batch, seq, p, n, cfg, eps, style):
    """One BERT / DistilBERT encoder layer (post-LayerNorm); n maps the roles to state-dict prefixes:
    q, k, v, o (attention projections), ln1, fc1, fc2, ln2."""
    D = cfg["hidden"] // cfg["heads"]
    lin = lambda x, k: b.linear(x, p[n[k] + ".weight"], p[n[k] + ".bias"])
    q = b.split_heads(lin(h, "q"), batch, seq, D, [0, 2, 1, 3])
    k = b.split_heads(lin(h, "k"), batch, seq, D, [0, 2, 3, 1])
    v = b.split_heads(lin(h, "v"), batch, seq, D, [0, 2, 1, 3])
    c = b.merge_heads(b.attention(q, k, v, bias, D, style), batch, seq)
    h = b.layer_norm(b.op("Add", [lin(c, "o"), h]), p[n["ln1"] + ".weight"], p[n["ln1"] + ".bias"], eps)
    f = b.gelu_erf(lin(h, "fc1"))
    return b.layer_norm(b.op("Add", [lin(f, "fc2"), h]), p[n["ln2"] + ".weight"], p[n["ln2"] + ".bias"], eps)


def positions(b, seq, start=None):
    """Position ids [1, S]: Range(start or 0, start + S) then Unsqueeze, as the exporter writes them."""
    lo = start if start is not None else b.i64(0)
    hi = seq if start is None else b.op("Add", [start, seq])
    return b.op("Unsqueeze", [b.op("Range", [lo, hi, b.i64(1)]), b.i64([0])])


# ---- weights ----
class Rand:
    """Random initial weights like transformers' _init_weights: N(0, 0.02) matrices, LayerNorm near 1."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def w(self, *shape, std=0.02):
        return (self.rng.standard_normal(shape) * std).astype(np.float32)

    def ln(self, p, prefix, n):
        p[prefix + ".weight"] = np.ones(n, np.float32) + self.w(n)
        p[prefix + ".bias"] = self.w(n)

    def lin(self, p, prefix, n_out, n_in, bias=True):
        p[prefix + ".weight"] = self.w(n_out, n_in)
        if bias:
            p[prefix + ".bias"] = self.w(n_out)

    def encoder_layer(self, p, names, hidden, ffn):
        """One BERT-style encoder layer's weights (q, k, v, o, ln1, fc1, fc2, ln2), named by the
        model's layer_names(l) map, drawn in that order."""
        for role in ("q", "k", "v", "o"):
            self.lin(p, names[role], hidden, hidden)
        self.ln(p, names["ln1"], hidden)
        self.lin(p, names["fc1"], ffn, hidden)
        self.lin(p, names["fc2"], hidden, ffn)
        self.ln(p, names["ln2"], hidden)


def load_checkpoint(path, strip=()):
    """A safetensors file as float32 numpy arrays, with the given model prefixes removed from the names."""
    from safetensors.numpy import load_file
    out = {}
    for k, v in load_file(path).items():
        for s in strip:
            if k.startswith(s):
                k = k[len(s):]
                break
        out[k] = v.astype(np.float32) if v.dtype.kind == "f" else v
    return out


# ---- inputs in the ONNX test layout ----
def write_inputs(d, named_arrays):
    os.makedirs(d, exist_ok=True)
    for k, (n, a) in enumerate(named_arrays):
        with open(os.path.join(d, f"input_{k}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(a, n).SerializeToString())


def text_batch(vocab, batch, seq, seed):
    """input_ids and attention_mask with later rows right-padded (id 0, mask 0), like a real batch
    of uneven sentences."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), np.int64)
    for r in range(1, batch):
        n = max(1, seq - (r * 7) % max(seq // 2, 1))
        mask[r, n:] = 0
        ids[r, n:] = 0
    return ids, mask


def text_io(names, dims=("batch", "sequence")):
    return [helper.make_tensor_value_info(n, TensorProto.INT64, list(dims)) for n in names]


def float_io(name, dims):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))


# ---- the command line every generator shares ----
def main(doc, presets, random_weights, build, make_inputs, hf_config, strip=(), extra_args=None, default_seq=128):
    """presets: name -> cfg dict; random_weights(cfg, seed) -> state dict; build(cfg, params, args) ->
    ModelProto; make_inputs(cfg, args) -> [(name, array)]; hf_config(config.json dict) -> cfg (used with
    --safetensors); strip: model prefixes to drop from checkpoint names; extra_args(parser) adds options."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(presets), default=next(iter(presets)))
    ap.add_argument("--safetensors", help="a Hugging Face checkpoint to take the weights (and, with its config.json, the sizes) from")
    ap.add_argument("--config", help="its config.json (default: beside the checkpoint)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attention", choices=("sdpa", "eager"), default="sdpa",
                    help="attention as transformers 5's SDPA path exports it (default) or transformers 4's eager path")
    ap.add_argument("--inputs-dir", help="also write input_K.pb files here")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=default_seq)
    if extra_args:
        extra_args(ap)
    a = ap.parse_args()
    cfg = dict(presets[a.preset])
    if a.safetensors:
        conf = json.load(open(a.config or os.path.join(os.path.dirname(os.path.abspath(a.safetensors)), "config.json")))
        cfg = hf_config(conf)
        params = load_checkpoint(a.safetensors, strip)
    else:
        params = random_weights(cfg, a.seed)
    model = build(cfg, params, a)
    onnx.save(model, a.out)
    if a.inputs_dir:
        write_inputs(a.inputs_dir, make_inputs(cfg, a))
    print(f"wrote {a.out}: " + ", ".join(f"{k} {v}" for k, v in cfg.items() if not isinstance(v, (list, tuple))))
    return model
