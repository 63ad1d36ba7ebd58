#!/usr/bin/env python3
"""Writes the textClassification / zeroShotClassification / crossEncoder test models and their
reference answers under tests/pipelines/data/<name>/ (model.onnx, config.json, tokenizer files,
expected.json), for test_pl_text.c.

Models are tiny real architectures (BERT, RoBERTa, DistilBERT) with random weights (seed 0)
exported by torch.onnx; tokenizers are trained with the `tokenizers` package's trainers and saved
through transformers. The references are transformers 5.x's pipelines
(TextClassificationPipeline, ZeroShotClassificationPipeline) and sentence-transformers'
CrossEncoder, run on the saved folders (weights reloaded from disk, so the references see exactly
what was exported). Needs torch, transformers, sentence-transformers, tokenizers, onnxscript; not
run by CI (the outputs are committed).

  python3 tests/pipelines/gen_textcls_refs.py [--out tests/pipelines/data]
"""
import argparse
import json
import os
import shutil
import tempfile

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, BertConfig,
                          BertForSequenceClassification, BertTokenizer, DistilBertConfig,
                          DistilBertForSequenceClassification, RobertaConfig,
                          RobertaForSequenceClassification, RobertaTokenizer, pipeline)

MAX_LEN = 64

WORDS = ("the a an this that movie film book story plot actor music scene ending was is were are "
         "good great bad awful boring fun funny sad slow fast long short really very not quite "
         "loved hated enjoyed watched read liked it i we they you sports politics science weather "
         "cooking travel money health game team vote rain sun recipe trip bank doctor win lose "
         "paris london city river mountain car train phone computer").split()


def corpus(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        k = int(rng.integers(3, 14))
        ws = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), k)]
        lines.append(" ".join(ws).capitalize() + rng.choice([".", "!", "?", ","]))
    return lines


def wordpiece_tokenizer(folder):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tr = trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(corpus(), tr)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    # saved as the model family's own class (tokenizer_class BertTokenizer), which returns
    # token_type_ids as real BERT checkpoints do (a generic backend returns only ids and mask)
    fast = BertTokenizer(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=MAX_LEN)
    fast.save_pretrained(folder)
    return tok.get_vocab_size()


def bpe_tokenizer(folder):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), tr)
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")),
                                                      trim_offsets=True, add_prefix_space=False)
    fast = RobertaTokenizer(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   sep_token="</s>", cls_token="<s>", pad_token="<pad>", mask_token="<mask>",
                                   model_max_length=MAX_LEN)
    fast.save_pretrained(folder)
    return tok.get_vocab_size()


def make_model(kind, vocab, id2label, extra=None):
    torch.manual_seed(0)
    labels = {"id2label": {i: l for i, l in enumerate(id2label)}, "label2id": {l: i for i, l in enumerate(id2label)}}
    # a wide initializer so that the logits spread and label order is really tested
    if kind == "bert":
        cfg = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=MAX_LEN, initializer_range=0.3, **labels)
        m = BertForSequenceClassification(cfg)
    elif kind == "roberta":
        cfg = RobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=MAX_LEN + 2, type_vocab_size=1,
                            pad_token_id=1, bos_token_id=0, eos_token_id=2, initializer_range=0.3, **labels)
        m = RobertaForSequenceClassification(cfg)
    else:
        cfg = DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                               max_position_embeddings=MAX_LEN, initializer_range=0.3, **labels)
        m = DistilBertForSequenceClassification(cfg)
    for k, v in (extra or {}).items():
        setattr(m.config, k, v)
    return m.eval()


class Logits(torch.nn.Module):
    def __init__(self, m, types):
        super().__init__()
        self.m, self.types = m, types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kw = {"token_type_ids": token_type_ids} if self.types else {}
        return self.m(input_ids=input_ids, attention_mask=attention_mask, **kw).logits


def export(model, folder, types):
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if types else [])
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 14, 3, 0]])
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))[:len(names)]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    torch.onnx.export(Logits(model, types), args, os.path.join(folder, "model.onnx"), input_names=names,
                      output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False)


def build(out, name, kind, id2label, extra=None):
    """Saves tokenizer + weights to a scratch folder (for the references) and copies everything
    but the weights, plus the ONNX export, to out/name."""
    scratch = tempfile.mkdtemp()
    vocab = (bpe_tokenizer if kind == "roberta" else wordpiece_tokenizer)(scratch)
    m = make_model(kind, vocab, id2label, extra)
    m.save_pretrained(scratch)
    dst = os.path.join(out, name)
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    for f in os.listdir(scratch):
        if not f.endswith(".safetensors") and not f.endswith(".bin"):
            shutil.copy(os.path.join(scratch, f), dst)
    reloaded = AutoModelForSequenceClassification.from_pretrained(scratch).eval()
    export(reloaded, dst, kind != "distilbert")
    return scratch, dst


LONG = " ".join(["the movie was really very good and the music was great but the ending was slow"] * 6)
TEXTS = ["I loved this movie!", "The plot was boring and the actor was awful.", "", "Fast trip to Paris by train.",
         "not quite", LONG, "Rain, rain and more rain in London?"]


def f(x):
    return float(x)


def text_cases(folder):
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    clf = pipeline("text-classification", model=model, tokenizer=tok, device="cpu")
    cases = []

    def run(top_k, activation, pairs=None):
        inputs = [t if not pairs or pairs[i] is None else {"text": t, "text_pair": pairs[i]} for i, t in enumerate(TEXTS)]
        kw = {"truncation": True}
        if activation != "default":
            kw["function_to_apply"] = activation
        if top_k == 1:   # the default: one dict per input (legacy form)
            res = [[r] for r in clf(inputs, **kw)]
        else:
            res = clf(inputs, top_k=None if top_k == 0 else top_k, **kw)
        cases.append({"task": "text", "texts": TEXTS, "pairs": pairs, "top_k": top_k, "activation": activation,
                      "expected": [[{"label": d["label"], "score": f(d["score"])} for d in r] for r in res]})

    run(1, "default")
    run(0, "default")
    run(2, "default")
    run(0, "sigmoid")
    run(0, "none")
    run(0, "softmax")
    pairs = ["Great fun.", None, "An empty first text.", "Sun and rain.", None, LONG, "Weather report?"]
    run(0, "default", pairs)
    return cases


def zero_shot_cases(folder):
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    zs = pipeline("zero-shot-classification", model=model, tokenizer=tok, device="cpu")
    cases = []
    texts = TEXTS[:2] + TEXTS[3:]

    def run(labels, multi, template=None):
        kw = {"candidate_labels": labels, "multi_label": multi}
        if template:
            kw["hypothesis_template"] = template
        res = zs(texts, **kw)
        cases.append({"task": "zeroshot", "texts": texts, "labels": labels, "multi_label": multi, "template": template,
                      "expected": [[{"label": l, "score": f(s)} for l, s in zip(r["labels"], r["scores"])] for r in res]})

    run(["sports", "politics", "science", "cooking", "travel"], False)
    run(["sports", "politics", "science", "cooking", "travel"], True)
    run(["weather"], False)
    run(["good", "bad", "boring"], False, "The review says {}!")
    return cases


def cross_encoder_cases(folder, multi=False):
    from sentence_transformers import CrossEncoder
    ce = CrossEncoder(folder, device="cpu")
    query = "good movie with great music"
    docs = ["The music was great.", "Rain in London.", LONG, "", "A good movie!", "The bank vote was slow.",
            "great music great music great music"]
    cases = []
    if multi:
        # several logits: the score is the last class after a softmax (see pl_crossenc.c)
        scores = ce.predict([[query, d] for d in docs], apply_softmax=True)[:, -1]
        rank = sorted(({"index": i, "score": f(s)} for i, s in enumerate(scores)), key=lambda x: x["score"], reverse=True)
        cases.append({"task": "crossenc", "query": query, "docs": docs, "top_k": 0, "threshold": None,
                      "activation_fn": type(ce.activation_fn).__name__, "expected": rank})
        return cases
    full = [{"index": r["corpus_id"], "score": f(r["score"])} for r in ce.rank(query, docs)]
    cases.append({"task": "crossenc", "query": query, "docs": docs, "top_k": 0, "threshold": None,
                  "activation_fn": type(ce.activation_fn).__name__, "expected": full})
    top3 = [{"index": r["corpus_id"], "score": f(r["score"])} for r in ce.rank(query, docs, top_k=3)]
    cases.append({"task": "crossenc", "query": query, "docs": docs, "top_k": 3, "threshold": None,
                  "activation_fn": type(ce.activation_fn).__name__, "expected": top3})
    # the threshold is kiln's own option: rank()'s list without the entries scoring below it
    # halfway between two neighbours, so that float rounding cannot move an entry across it
    thr = (full[2]["score"] + full[3]["score"]) / 2
    cases.append({"task": "crossenc", "query": query, "docs": docs, "top_k": 0, "threshold": thr,
                  "activation_fn": type(ce.activation_fn).__name__, "expected": [r for r in full if r["score"] >= thr]})
    return cases


def write(dst, cases):
    with open(os.path.join(dst, "expected.json"), "w") as fp:
        json.dump({"cases": cases}, fp, indent=1)
        fp.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)

    # BERT, 3 sentiment labels: text classification (single texts and pairs) and a cross-encoder
    # with several logits
    s, d = build(a.out, "bert_sentiment3", "bert", ["NEGATIVE", "NEUTRAL", "POSITIVE"])
    # (and zero-shot without an entailment label: transformers warns and takes the last logit)
    write(d, text_cases(s) + cross_encoder_cases(s, multi=True) + zero_shot_cases(s)[:2])
    # RoBERTa NLI (entailment last): zero-shot, and text classification of pairs in RoBERTa's template
    s, d = build(a.out, "roberta_nli", "roberta", ["contradiction", "neutral", "entailment"])
    write(d, zero_shot_cases(s) + text_cases(s))
    # DistilBERT NLI with entailment first: contradiction is then the last column
    s, d = build(a.out, "distilbert_nli_e0", "distilbert", ["ENTAILMENT", "neutral", "contradiction"])
    write(d, zero_shot_cases(s))
    # BERT cross-encoder with one logit: CrossEncoder's default sigmoid; one-label text classification
    s, d = build(a.out, "bert_ce1", "bert", ["LABEL_0"])
    write(d, cross_encoder_cases(s) + text_cases(s))
    # DistilBERT cross-encoder whose config.json names Identity (raw logits)
    s, d = build(a.out, "distilbert_ce_identity", "distilbert", ["LABEL_0"],
                 {"sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}})
    write(d, cross_encoder_cases(s))
    # the same model saved by CrossEncoder with Tanh: a sentence-transformers folder (modules.json)
    # whose config_sentence_transformers.json overrides config.json's Identity
    from sentence_transformers import CrossEncoder
    ce = CrossEncoder(s, device="cpu")
    ce.activation_fn = torch.nn.Tanh()
    s2 = tempfile.mkdtemp()
    ce.save_pretrained(s2)
    d2 = os.path.join(a.out, "distilbert_ce_st_tanh")
    shutil.rmtree(d2, ignore_errors=True)
    os.makedirs(d2)
    for f in os.listdir(s2):
        if f.endswith(".json"):
            shutil.copy(os.path.join(s2, f), d2)
    shutil.copy(os.path.join(d, "model.onnx"), d2)
    write(d2, cross_encoder_cases(s2))


if __name__ == "__main__":
    main()
