#!/usr/bin/env python3
"""Builds the tiny token-classification and question-answering model folders under
tests/pipelines/data/ and the references test_pl_tokqa compares kiln with (tokqa_expected.json).

Not run by CI (needs torch + transformers). The token-classification references come from
transformers' TokenClassificationPipeline (the installed 5.x). transformers 5 no longer ships
QuestionAnsweringPipeline, so the question-answering references come from the last release that
has it (4.57.1), run in a second interpreter given by --tf4-python (a venv with
transformers==4.57.1, tokenizers<=0.23.0, huggingface_hub<1.0 over the system torch):

    python3 -m venv --system-site-packages /tmp/tf4
    /tmp/tf4/bin/pip install transformers==4.57.1 "tokenizers<=0.23.0" "huggingface_hub<1.0"
    python3 tests/pipelines/gen_tokqa_refs.py --tf4-python /tmp/tf4/bin/python
"""
import argparse
import json
import os
import random
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
EXPECTED = os.path.join(DATA, "tokqa_expected.json")
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]

NAMES = ["Anna", "Boris", "Claudette", "Dmitri", "Evangeline", "Farouk", "Gwendolyn", "Hiroshi"]
CITIES = ["Paris", "Berlin", "Montevideo", "Reykjavik", "Ouagadougou", "Kyoto", "Lisbon"]
ORGS = ["Acme Corporation", "the United Nations", "Globex", "Initech Laboratories", "Umbrella"]
VERBS = ["visited", "moved to", "works for", "left", "talked about", "wrote to", "founded"]


def corpus(n=3000, seed=0):
    r = random.Random(seed)
    out = []
    for _ in range(n):
        s = "%s %s %s in %d, then %s %s." % (r.choice(NAMES), r.choice(VERBS), r.choice(CITIES + ORGS),
                                           r.randint(1900, 2030), r.choice(VERBS), r.choice(CITIES + ORGS))
        if r.random() < 0.3:
            s = s.lower()
        out.append(s)
    return out


TC_TEXTS = [
    "Anna visited Paris in 1999, then wrote to Acme Corporation.",
    "Hiroshi founded Initech Laboratories with Claudette and Dmitri.",
    "Evangeline moved to Ouagadougou; Farouk left Reykjavik!",
    "Nobody knows Zyxwvut or Qqqq-Rrrr ☃ here.",
    "gwendolyn talked about the united nations in montevideo",
    "Boris",
]
# longer than the 128-token limit: both sides truncate (transformers: truncation=True)
TC_LONG = [" ".join(TC_TEXTS[:3] * 4)]
TC_WORDS = [
    ["Anna", "visited", "Paris", "in", "1999"],
    ["Hiroshi", "founded", "Initech", "Laboratories", "with", "Claudette."],
    ["Nobody", "knows", "Zyxwvut", "☃", "here"],
]

QA_CONTEXT_LONG = " ".join(
    "%s %s %s in %d, and later %s %s with %s." % (
        NAMES[i % 8], VERBS[i % 7], CITIES[(i * 3) % 7], 1900 + 7 * i, VERBS[(i + 2) % 7], ORGS[i % 5], NAMES[(i + 3) % 8])
    for i in range(40))
QA_CASES = [
    # (options, questions, contexts)
    ({}, ["Who visited Paris?", "Where did Anna move?"],
     ["Anna visited Paris in 1999, then Boris moved to Berlin with Globex.",
      "In 2001 Anna moved to Kyoto. Later she founded Umbrella in Lisbon and wrote to Dmitri."]),
    ({}, ["Who founded Globex?"], [QA_CONTEXT_LONG]),
    ({"top_k": 3, "max_answer_len": 5}, ["Where was Evangeline?"], [QA_CONTEXT_LONG]),
    ({"max_seq_len": 48, "doc_stride": 16, "top_k": 2}, ["When did Hiroshi leave?"], [QA_CONTEXT_LONG]),
    ({"handle_impossible_answer": True, "top_k": 2}, ["What is the capital?", "Who wrote?"],
     ["Boris works for Acme Corporation in Montevideo.", QA_CONTEXT_LONG]),
]
WINDOW_CASES = [(128, 64), (48, 16), (40, 8)]


def wordpiece_tokenizer(folder, max_len):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tr = trainers.WordPieceTrainer(vocab_size=420, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(corpus(), tr)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=max_len)
    fast.save_pretrained(folder)
    # name the class real BERT checkpoints name, so transformers 4 and 5 alike return (and feed)
    # token_type_ids; the generic class returns none in transformers 5
    cfg_path = os.path.join(folder, "tokenizer_config.json")
    cfg = json.load(open(cfg_path))
    cfg["tokenizer_class"] = "BertTokenizer"
    json.dump(cfg, open(cfg_path, "w"), indent=2)
    return fast


def bytelevel_tokenizer(folder, max_len):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=500, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), tr)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
                                   model_max_length=max_len)
    fast.save_pretrained(folder)
    return fast


def export(model, folder, outputs, types):
    import torch
    model.eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]], dtype=torch.long)
    args, names = [ids, torch.ones_like(ids)], ["input_ids", "attention_mask"]
    if types:
        args.append(torch.zeros_like(ids))
        names.append("token_type_ids")
    dyn = {n: {0: "batch", 1: "seq"} for n in names + outputs}

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *a):
            o = self.m(**dict(zip(names, a)))
            return tuple(o[k] for k in outputs)

    torch.onnx.export(Wrap(model), tuple(args), os.path.join(folder, "model.onnx"), input_names=names,
                      output_names=outputs, dynamic_axes=dyn, opset_version=17, dynamo=False)
    for f in os.listdir(folder):   # keep only what the C side reads (no torch weights)
        if f.endswith(".safetensors") or f == "generation_config.json":
            os.remove(os.path.join(folder, f))


def scale_head(lin, factor):
    import torch
    with torch.no_grad():
        lin.weight.mul_(factor)
        lin.bias.normal_(0, 0.5)


def keep_torch(m, t, work, name):
    """The torch copy the reference pipelines load (the committed folders hold only ONNX)."""
    m.save_pretrained(os.path.join(work, name))
    t.save_pretrained(os.path.join(work, name))


def build_models(work):
    import torch
    from transformers import BertConfig, BertForQuestionAnswering, BertForTokenClassification, RobertaConfig, RobertaForTokenClassification
    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    id2label = {i: l for i, l in enumerate(LABELS)}
    label2id = {l: i for i, l in enumerate(LABELS)}

    d = os.path.join(DATA, "tc_bert")
    os.makedirs(d, exist_ok=True)
    t = wordpiece_tokenizer(d, 128)
    m = BertForTokenClassification(BertConfig(vocab_size=len(t), max_position_embeddings=128, id2label=id2label,
                                              label2id=label2id, **small))
    scale_head(m.classifier, 12.0)
    keep_torch(m, t, work, "tc_bert")
    m.save_pretrained(d)
    export(m, d, ["logits"], True)

    d = os.path.join(DATA, "tc_roberta")
    os.makedirs(d, exist_ok=True)
    t = bytelevel_tokenizer(d, 128)
    m = RobertaForTokenClassification(RobertaConfig(vocab_size=len(t), max_position_embeddings=130, pad_token_id=1,
                                                    bos_token_id=0, eos_token_id=2, type_vocab_size=1,
                                                    id2label=id2label, label2id=label2id, **small))
    scale_head(m.classifier, 12.0)
    keep_torch(m, t, work, "tc_roberta")
    m.save_pretrained(d)
    export(m, d, ["logits"], False)

    d = os.path.join(DATA, "qa_bert")
    os.makedirs(d, exist_ok=True)
    t = wordpiece_tokenizer(d, 128)
    m = BertForQuestionAnswering(BertConfig(vocab_size=len(t), max_position_embeddings=128, **small))
    scale_head(m.qa_outputs, 6.0)
    m.save_pretrained(d)
    keep_torch(m, t, work, "qa_bert")
    export(m, d, ["start_logits", "end_logits"], True)


def f(x):
    return float(x)


def tokcls_refs(work):
    import warnings
    from transformers import pipeline
    out = []
    for name in ["tc_bert", "tc_roberta"]:
        d = os.path.join(work, name)
        for agg in ["none", "simple", "first", "average", "max"]:
            pipe = pipeline("token-classification", model=d, tokenizer=d, aggregation_strategy=agg)
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                res = pipe(TC_TEXTS)
            exp = [[{"entity": e.get("entity", e.get("entity_group")), "score": f(e["score"]),
                     "index": int(e.get("index", -1)), "word": e["word"], "start": int(e["start"]), "end": int(e["end"])}
                    for e in r] for r in res]
            out.append({"model": name, "aggregation": agg, "texts": TC_TEXTS, "expected": exp})
            if agg in ("none", "simple"):
                res = pipe(TC_LONG)
                exp = [[{"entity": e.get("entity", e.get("entity_group")), "score": f(e["score"]),
                         "index": int(e.get("index", -1)), "word": e["word"], "start": int(e["start"]), "end": int(e["end"])}
                        for e in r] for r in res]
                out.append({"model": name, "aggregation": agg, "texts": TC_LONG, "expected": exp})
            if name == "tc_bert":   # byte-level BPE needs add_prefix_space=True for pre-split words
                res = [pipe(w, is_split_into_words=True) for w in TC_WORDS]
                res = [r[0] if r and isinstance(r[0], list) else r for r in res]
                exp = [[{"entity": e.get("entity", e.get("entity_group")), "score": f(e["score"]),
                         "index": int(e.get("index", -1)), "word": e["word"], "start": int(e["start"]), "end": int(e["end"])}
                        for e in r] for r in res]
                out.append({"model": name, "aggregation": agg, "words": TC_WORDS, "expected": exp})
    return out


def qa_refs(model_dir):
    """Runs inside transformers 4.57.1 (the last with QuestionAnsweringPipeline)."""
    import transformers
    from transformers import PreTrainedTokenizerFast, pipeline
    assert transformers.__version__.startswith("4."), transformers.__version__
    # transformers 4 does not know the 5.x "TokenizersBackend" class name: open the same files
    # through PreTrainedTokenizerFast (what that class is in 4.x)
    tc = json.load(open(os.path.join(model_dir, "tokenizer_config.json")))
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"),
                                  **{k: v for k, v in tc.items() if k.endswith("_token") or k == "model_max_length"})
    pipe = pipeline("question-answering", model=model_dir, tokenizer=tok)
    cases = []
    for opts, qs, cs in QA_CASES:
        exp = []
        for q, c in zip(qs, cs):
            r = pipe(question=q, context=c, **opts)
            r = r if isinstance(r, list) else [r]
            exp.append([{"answer": a["answer"], "score": f(a["score"]), "start": int(a["start"]), "end": int(a["end"])} for a in r])
        cases.append({"model": "qa_bert", "options": opts, "questions": qs, "contexts": cs, "expected": exp})
    windows = []
    for ml, stride in WINDOW_CASES:
        for q in ["Who founded Globex?", "When did Hiroshi leave Paris with Anna and the United Nations?"]:
            enc = tok(q, QA_CONTEXT_LONG, truncation="only_second", max_length=ml, stride=stride,
                      return_overflowing_tokens=True, return_offsets_mapping=True, return_token_type_ids=True)
            windows.append({"model": "qa_bert", "question": q, "context": QA_CONTEXT_LONG, "max_length": ml, "stride": stride,
                            "windows": [{"ids": enc["input_ids"][k], "type_ids": enc["token_type_ids"][k],
                                         "offsets": [list(o) for o in enc["offset_mapping"][k]]}
                                        for k in range(len(enc["input_ids"]))]})
    return {"qa": cases, "qa_windows": windows, "qa_transformers": transformers.__version__}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tf4-python", help="python with transformers 4.57.1 for the QA references")
    ap.add_argument("--work", default="/tmp/gen_tokqa_work")
    ap.add_argument("--qa-only", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.qa_only:
        json.dump(qa_refs(a.qa_only), sys.stdout)
        return
    if not a.tf4_python:
        sys.exit("--tf4-python is required (see the docstring)")
    import transformers
    os.makedirs(a.work, exist_ok=True)
    build_models(a.work)
    refs = {"tokcls": tokcls_refs(a.work), "tokcls_transformers": transformers.__version__}
    qa = subprocess.run([a.tf4_python, os.path.abspath(__file__), "--qa-only", os.path.join(a.work, "qa_bert")],
                        check=True, capture_output=True, text=True)
    refs.update(json.loads(qa.stdout))
    with open(EXPECTED, "w", encoding="utf-8") as fp:
        json.dump(refs, fp, ensure_ascii=False, separators=(",", ":"))
    print("wrote", EXPECTED)


if __name__ == "__main__":
    main()
