#!/usr/bin/env python3
"""Write DistilBERT as ONNX the way PyTorch's exporter writes DistilBertModel (word + position
embeddings, six post-LayerNorm encoder layers with erf GELU; see genlib.post_ln_layer), optionally
with DistilBertForSequenceClassification's head (--labels N: first token -> pre_classifier Gemm ->
Relu -> classifier Gemm), with random weights or a Hugging Face safetensors checkpoint.

  gen_distilbert.py --preset distilbert-base --out model.onnx --inputs-dir data --batch 8 --seq 128
  gen_distilbert.py --safetensors model.safetensors --out model.onnx   # config.json beside it

Inputs input_ids, attention_mask [batch, sequence]; output last_hidden_state, or logits with --labels
(a checkpoint with classifier weights gets the head and its label count from config.json).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import genlib  # noqa: E402

PRESETS = {
    "distilbert-base": dict(layers=6, hidden=768, heads=12, ffn=3072, vocab=30522, max_pos=512, labels=0),
    "distilbert-tiny": dict(layers=2, hidden=64, heads=4, ffn=256, vocab=1000, max_pos=128, labels=0),
}
EPS = 1e-12  # DistilBERT's LayerNorm eps is fixed in its code, not in config.json


def hf_config(c):
    labels = len(c.get("id2label", {})) if any(a.endswith("ForSequenceClassification") for a in c.get("architectures", [])) else 0
    return dict(layers=c["n_layers"], hidden=c["dim"], heads=c["n_heads"], ffn=c["hidden_dim"], vocab=c["vocab_size"],
                max_pos=c["max_position_embeddings"], labels=labels)


def layer_names(l):
    pre = f"transformer.layer.{l}."
    return dict(q=pre + "attention.q_lin", k=pre + "attention.k_lin", v=pre + "attention.v_lin", o=pre + "attention.out_lin",
                ln1=pre + "sa_layer_norm", fc1=pre + "ffn.lin1", fc2=pre + "ffn.lin2", ln2=pre + "output_layer_norm")


def weights_random(cfg, seed):
    r, p, H = genlib.Rand(seed), {}, cfg["hidden"]
    p["embeddings.word_embeddings.weight"] = r.w(cfg["vocab"], H)
    p["embeddings.position_embeddings.weight"] = r.w(cfg["max_pos"], H)
    r.ln(p, "embeddings.LayerNorm", H)
    for l in range(cfg["layers"]):
        r.encoder_layer(p, layer_names(l), H, cfg["ffn"])
    if cfg["labels"]:
        r.lin(p, "pre_classifier", H, H)
        r.lin(p, "classifier", cfg["labels"], H)
    return p


def build(cfg, p, args):
    if getattr(args, "labels", None) is not None:
        cfg["labels"] = args.labels
    b = genlib.Builder()
    ids, mask = "input_ids", "attention_mask"
    batch, seq = b.dim(ids, 0), b.dim(ids, 1)
    e = b.op("Gather", [b.const(p["embeddings.word_embeddings.weight"], "word_emb"), ids])
    pos = genlib.positions(b, seq)
    e = b.op("Add", [e, b.op("Gather", [b.const(p["embeddings.position_embeddings.weight"], "pos_emb"), pos])])
    h = b.layer_norm(e, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], EPS)
    bias = b.attention_bias(b.padding_mask(mask, batch, seq, seq), args.attention)
    for l in range(cfg["layers"]):
        h = genlib.post_ln_layer(b, h, bias, batch, seq, p, layer_names(l), cfg, EPS, args.attention)
    if cfg["labels"]:
        if "classifier.weight" not in p:  # a base checkpoint asked for a head: give it random weights
            r = genlib.Rand(args.seed + 7)
            r.lin(p, "pre_classifier", cfg["hidden"], cfg["hidden"])
            r.lin(p, "classifier", cfg["labels"], cfg["hidden"])
        cls = b.op("Gather", [h, b.i64(0)], axis=1)
        x = b.op("Relu", [b.gemm(cls, p["pre_classifier.weight"], p["pre_classifier.bias"])])
        b.output(b.gemm(x, p["classifier.weight"], p["classifier.bias"]), "logits")
        out = genlib.float_io("logits", ["batch", cfg["labels"]])
    else:
        b.output(h, "last_hidden_state")
        out = genlib.float_io("last_hidden_state", ["batch", "sequence", cfg["hidden"]])
    return b.model("distilbert", genlib.text_io([ids, mask]), [out], "kiln gen_distilbert.py")


def make_inputs(cfg, args):
    ids, mask = genlib.text_batch(cfg["vocab"], args.batch, args.seq, args.seed + 1)
    return [("input_ids", ids), ("attention_mask", mask)]


def extra(ap):
    ap.add_argument("--labels", type=int, help="add the sequence-classification head with this many labels (0: none)")


if __name__ == "__main__":
    genlib.main(__doc__, PRESETS, weights_random, build, make_inputs, hf_config, strip=("distilbert.",), extra_args=extra)
