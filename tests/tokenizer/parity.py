#!/usr/bin/env python3
"""Parity of kiln's C tokenizer with the `tokenizers` package.

Generates the multilingual corpus (gen_corpus.py), trains tokenizers with the package's own
trainers into a temporary folder (WordPiece BERT-style, byte-level BPE with GPT-2, RoBERTa,
Llama-2 and Llama-3 styles, Unigram with Metaspace T5-style, Unigram behind UnicodeScripts, a
SentencePiece-trained Unigram converted with its Precompiled charsmap, WordLevel; and two Unigram
vocabularies built so that segmentations tie), then encodes
every line (and pairs of lines, with and without special tokens, with truncation and overflow
windows) both ways and compares ids, type ids and offsets. Prints mismatch counts per tokenizer; exits 1 on any mismatch.

Without the package installed it prints "skipped: tokenizers not installed" and exits 0, unless
KILN_REQUIRE_PARITY=1. Extra real tokenizer.json files can be checked with --real PATH.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_corpus  # noqa: E402

try:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
except ImportError:
    if os.environ.get("KILN_REQUIRE_PARITY") == "1":
        print("error: tokenizers not installed and KILN_REQUIRE_PARITY=1", file=sys.stderr)
        sys.exit(1)
    print("skipped: tokenizers not installed")
    sys.exit(0)

VOCAB = 8000
TRAIN_LINES = 3000
T0 = time.time()


def elapsed():
    return f"{time.time() - T0:6.1f}s"


def train_all(lines, tmp):
    """Returns {name: path} of freshly trained tokenizer.json files. Trains on a slice of the
    corpus (the trainers, Unigram's above all, are the slow part of this test)."""
    out = {}
    t0 = time.time()
    lines = lines[:TRAIN_LINES]

    def save(name, tok):
        p = os.path.join(tmp, name + ".json")
        tok.save(p)
        out[name] = p
        print(f"  trained {name} ({tok.get_vocab_size()} tokens) at {time.time() - t0:.1f}s", flush=True)

    bert_special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    for name, lower in (("wordpiece-bert-uncased", True), ("wordpiece-bert-cased", False)):
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lower)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        tok.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=bert_special, show_progress=False))
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        if lower:
            tok.post_processor = processors.TemplateProcessing(
                single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        else:
            tok.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
        save(name, tok)

    for name in ("bpe-gpt2", "bpe-roberta"):
        tok = Tokenizer(models.BPE())
        roberta = name == "bpe-roberta"
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=roberta)
        tok.decoder = decoders.ByteLevel()
        special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] if roberta else ["<|endoftext|>"]
        tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=special, show_progress=False,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        if roberta:
            tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")),
                                                              trim_offsets=True, add_prefix_space=True)
        else:
            tok.post_processor = processors.ByteLevel(trim_offsets=True)
        save(name, tok)

    # Llama-3 style: a Split regex in front of a regex-free ByteLevel, template with BOS
    tok = Tokenizer(models.BPE(ignore_merges=True))
    llama3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(llama3), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                                      show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1", special_tokens=[("<|begin_of_text|>", bos)])])
    save("bpe-llama3", tok)

    # Llama-2 style: no pre-tokenizer, Prepend + Replace normalizer, byte fallback, decoder chain
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator(lines[:1000], trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens,
                                                             show_progress=False, limit_alphabet=300))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    save("bpe-llama2", tok)

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(lines, trainers.UnigramTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "</s>", "<unk>"],
                                                          unk_token="<unk>", show_progress=False))
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", eos)])
    save("unigram-t5", tok)

    # UnicodeScripts in front of Metaspace: pieces break where the script changes
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.UnicodeScripts(), pre_tokenizers.Metaspace()])
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(lines[:1500], trainers.UnigramTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "</s>"], unk_token="<unk>",
                                                                 show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B:1 </s>:1",
                                                       special_tokens=[("</s>", tok.token_to_id("</s>"))])
    save("unigram-unicode-scripts", tok)

    # Unigram where segmentations tie: a piece scores its length times a constant, so every split of
    # a run has the same total (exactly with -1, up to the rounding of the sums with -0.1), and the
    # package's tie rule alone picks one (the first candidate at the earliest start stays)
    for name, unit in (("unigram-ties", -1.0), ("unigram-ties-rounded", -0.1)):
        pieces = {"<unk>": 0.0, "</s>": 0.0}
        for ch in ("=", "-", ".", "!", "_", "*", "a", "b", "ab", "\u2581", "\u2581=", "漢", "😀", "ー"):
            for n in range(1, 9):
                pieces.setdefault(ch * n, unit * len(ch * n))
        for w in ("=\u2581", "a=", "=a", "ba", "aba", "\u2581a", "\u2581ab", "-=", "=-", ".!", "!."):
            pieces.setdefault(w, unit * len(w))
        tok = Tokenizer(models.Unigram(list(pieces.items()), unk_id=0))
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", 1)])
        save(name, tok)

    train_sentencepiece(lines, tmp, save)

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok.train_from_iterator(lines, trainers.WordLevelTrainer(vocab_size=VOCAB, special_tokens=["[UNK]"], show_progress=False))
    save("wordlevel", tok)
    return out


def train_sentencepiece(lines, tmp, save):
    """A Unigram model trained by SentencePiece itself (its nmt_nfkc charsmap), converted by the
    package's own converter into Precompiled + Replace normalizers and Metaspace."""
    try:
        import sentencepiece as spm
    except ImportError:
        print("  skipped: sentencepiece not installed (sentencepiece-unigram configuration)")
        return
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        print("  skipped: protobuf not installed (sentencepiece-unigram configuration)")
        return
    from tokenizers.implementations import SentencePieceUnigramTokenizer
    # from_spm imports the protobuf module by its bare name; sentencepiece ships it
    sys.modules.setdefault("sentencepiece_model_pb2", sentencepiece_model_pb2)
    corpus = os.path.join(tmp, "spm-corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    prefix = os.path.join(tmp, "spm")
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=prefix, vocab_size=4000, model_type="unigram", hard_vocab_limit=False,
                                   character_coverage=0.9995, num_threads=2, minloglevel=2)
    conv = SentencePieceUnigramTokenizer.from_spm(prefix + ".model")
    tok = Tokenizer.from_str(conv.to_str())
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B:1 </s>:1",
                                                       special_tokens=[("</s>", tok.token_to_id("</s>"))])
    save("sentencepiece-unigram", tok)


def check_scripts_exhaustive(driver, tmp):
    """UnicodeScripts on every assigned code point: for each one a line puts it after Latin,
    Cyrillic, Han and a digit and before the next code point, so any difference in its script
    (or in the package's Unicode 9.0 view of it) moves a piece boundary."""
    import unicodedata
    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.UnicodeScripts()
    path = os.path.join(tmp, "unicode-scripts-unk.json")
    tok.save(path)
    cps = [c for c in range(0x110000) if c not in (9, 10, 13) and unicodedata.category(chr(c)) not in ("Cn", "Cs", "Co")]
    texts = []
    for i, c in enumerate(cps):
        ch = chr(c)
        texts.append("a" + ch + "\u0431" + ch + "\u4eac" + ch + "1" + ch + chr(cps[(i + 1) % len(cps)]))
    got = run_kiln(driver, path, ("\n".join(texts) + "\n").encode("utf-8"), [])
    return compare("unicode-scripts", "every code point", tok.encode_batch(texts), got, texts)


def check_unicode_exhaustive(driver, tmp):
    """Normalizers and pre-tokenizers that classify characters, on every code point of planes
    0-3 and 14 and a sample of the others, assigned or lastingly unassigned (the corpus's
    gen_corpus.known_code_point: kiln's Unicode data cannot know what versions after it assign,
    which the package's Rust lowercases): the package looks some of them up
    in old Unicode tables (BERT and Punctuation in 8.0, normalization in 9.0) while kiln has
    newer data, so each code point goes between letters, next to a combining mark (canonical
    order) and doubled. The vocabulary is every piece the package makes, so a piece kiln
    normalizes or splits differently shows as a different id or offset."""
    cps = [c for c in list(range(0x40000)) + list(range(0xE0000, 0xE1000)) + list(range(0x40000, 0x110000, 97))
           if not 0xD800 <= c <= 0xDFFF and c != 10 and gen_corpus.known_code_point(c)]
    texts = []
    for i in range(0, len(cps), 8):
        texts.append("".join("x" + chr(c) + "Y" + chr(c) + chr(c) + " o" + chr(c) + "\u0316\u0301" + chr(c) + "\u0323 "
                             for c in cps[i:i + 8]))
    configs = {
        "bert-uncased": (normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True),
                         pre_tokenizers.BertPreTokenizer()),
        "bert-cased": (normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False),
                       pre_tokenizers.BertPreTokenizer()),
        "nfkc-punct": (normalizers.NFKC(), pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])),
        "nfc": (normalizers.NFC(), pre_tokenizers.WhitespaceSplit()),
        "nfkd-strip": (normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents()]), pre_tokenizers.WhitespaceSplit()),
        "nfd-strip-lower": (normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()]),
                            pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
                                                     pre_tokenizers.Digits(individual_digits=True)])),
    }
    total = 0
    blob = ("\n".join(texts) + "\n").encode("utf-8")
    for name, (norm, pre) in configs.items():
        vocab = {"[UNK]": 0}
        for t in texts:
            for piece, _ in pre.pre_tokenize_str(norm.normalize_str(t)):
                vocab.setdefault(piece, len(vocab))
        tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tok.normalizer, tok.pre_tokenizer = norm, pre
        path = os.path.join(tmp, f"unicode-{name}.json")
        tok.save(path)
        total += compare(f"unicode-{name}", "every code point", tok.encode_batch(texts), run_kiln(driver, path, blob, []), texts)
    return total


class _Enc:
    """The fields compare() reads, from a transformers BatchEncoding row."""

    def __init__(self, ids, type_ids, offsets, tokens):
        self.ids, self.type_ids, self.offsets, self.tokens = ids, type_ids, offsets, tokens


def check_transformers_folder(driver, tmp, base_json, lines, pairs):
    """A folder with tokenizer.json, tokenizer_config.json and special_tokens_map.json, read by
    transformers' AutoTokenizer and by kiln: special tokens named only in the config files (one
    already in the vocabulary, new ones past it, one with lstrip) become added tokens, and
    model_max_length must not truncate."""
    try:
        import transformers
    except ImportError:
        print("  skipped: transformers not installed (tokenizer folder configuration)")
        return 0
    transformers.logging.set_verbosity_error()
    folder = os.path.join(tmp, "hf-folder")
    os.makedirs(folder, exist_ok=True)
    with open(base_json, encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(folder, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump({"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
                   "mask_token": {"content": "<mask>", "lstrip": True, "rstrip": False, "normalized": False, "single_word": False},
                   "additional_special_tokens": ["[MASK]", "<|endoftext|>", "\u2581the"]}, f)
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"model_max_length": 16, "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>"}, f)
    hf = transformers.AutoTokenizer.from_pretrained(folder)

    def rows(batch):
        out = []
        for k in range(len(batch["input_ids"])):
            ids = batch["input_ids"][k]
            out.append(_Enc(ids, batch["token_type_ids"][k] if "token_type_ids" in batch else [0] * len(ids),
                            [tuple(o) for o in batch["offset_mapping"][k]], hf.convert_ids_to_tokens(ids)))
        return out

    total = 0
    blob = ("\n".join(lines) + "\n").encode("utf-8")
    ref = rows(hf(lines, return_offsets_mapping=True, return_token_type_ids=True))
    # the config files must matter, or this proves nothing
    changed = sum(r.ids != e.ids for r, e in zip(ref, Tokenizer.from_file(base_json).encode_batch(lines)))
    print(f"  transformers-folder: the config files change {changed} of {len(lines)} lines against tokenizer.json alone")
    if changed == 0:
        total += 1
    total += compare("transformers-folder", "single", ref, run_kiln(driver, folder, blob, []), lines)
    few = pairs[:1000]
    pblob = ("\n".join(a + "\t" + b for a, b in few) + "\n").encode("utf-8")
    total += compare("transformers-folder", "pair",
                     rows(hf([a for a, _ in few], [b for _, b in few], return_offsets_mapping=True, return_token_type_ids=True)),
                     run_kiln(driver, folder, pblob, ["--pair"]), [a + " | " + b for a, b in few])
    return total


def run_kiln(driver, path, inp, extra):
    r = subprocess.run([driver, "tokenize", "--tokenizer", path, "--threads", "2"] + extra, input=inp, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"kiln tokenize failed ({r.returncode}): {r.stderr.decode(errors='replace')[:2000]}")
    return [json.loads(l) for l in r.stdout.decode("utf-8").split("\n") if l]


def compare(name, mode, ref, got, texts, show=3):
    bad = {"ids": 0, "type_ids": 0, "offsets": 0}
    shown = 0
    if len(ref) != len(got):
        print(f"  {name} [{mode}]: line count differs: package {len(ref)}, kiln {len(got)}")
        return len(ref) + 1
    n_bad = 0
    for i, (r, g) in enumerate(zip(ref, got)):
        o = [list(x) for x in r.offsets]
        line_bad = False
        if r.ids != g["ids"]:
            bad["ids"] += 1; line_bad = True
        if r.type_ids != g["type_ids"]:
            bad["type_ids"] += 1; line_bad = True
        if o != g["offsets"]:
            bad["offsets"] += 1; line_bad = True
        if line_bad:
            n_bad += 1
            if shown < show:
                shown += 1
                print(f"    line {i}: {texts[i][:120]!r}")
                for k in range(max(len(r.ids), len(g["ids"]))):
                    a = (r.ids[k], r.tokens[k], tuple(r.offsets[k]), r.type_ids[k]) if k < len(r.ids) else None
                    b = (g["ids"][k], g["tokens"][k], tuple(g["offsets"][k]), g["type_ids"][k]) if k < len(g["ids"]) else None
                    if a != b:
                        print(f"      first difference at token {k}: package {a} kiln {b}")
                        break
    print(f"  {name:24s} [{mode:18s}] lines {len(ref):6d}  mismatching lines {n_bad:5d}  (ids {bad['ids']}, type_ids {bad['type_ids']}, offsets {bad['offsets']})  {elapsed()}")
    return n_bad


def check_decode(driver, name, path, tok, lines):
    """`kiln detokenize` on the package's ids against the package's decode (special tokens skipped)."""
    ids = [e.ids for e in tok.encode_batch(lines)]
    r = subprocess.run([driver, "detokenize", "--tokenizer", path, "--skip-special-tokens", "--json"],
                       input=("\n".join(json.dumps(i) for i in ids) + "\n").encode(), capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"kiln detokenize failed ({r.returncode}): {r.stderr.decode(errors='replace')[:2000]}")
    got = [json.loads(l) for l in r.stdout.decode("utf-8").split("\n") if l]
    ref = tok.decode_batch(ids)
    bad = [i for i in range(len(ref)) if i >= len(got) or got[i] != ref[i]]
    for i in bad[:3]:
        print(f"    line {i}: package {ref[i][:100]!r} kiln {got[i][:100] if i < len(got) else None!r}")
    print(f"  {name:24s} [{'decode':18s}] lines {len(ref):6d}  mismatching lines {len(bad):5d}  {elapsed()}")
    return len(bad)


def check_overflow(driver, name, tmp, tok, lines, pairs):
    """Truncation with a stride read from the file: the kept part and every overflowing window,
    for single texts and for pairs (longest_first, windows of both texts combined)."""
    bad = 0
    # every window of one text meets every window of the other (and the package nests them
    # again), so pairs use short lines and a longer max_length to stay small
    pairs = [(a, b) for a, b in pairs if len(a) + len(b) < 240][:600]
    for direction in ("right", "left"):
        for mode in ("single", "pair"):
            tok.enable_truncation(max_length=20 if mode == "single" else 32, stride=5, direction=direction)
            p = os.path.join(tmp, f"{name}.overflow-{direction}-{mode}.json")
            tok.save(p)
            if mode == "single":
                texts, blob, ref = lines, "\n".join(lines), tok.encode_batch(lines)
            else:
                texts, blob, ref = [a + " | " + b for a, b in pairs], "\n".join(a + "\t" + b for a, b in pairs), tok.encode_batch(pairs)
            got = run_kiln(driver, p, (blob + "\n").encode(), ["--overflow"] + (["--pair"] if mode == "pair" else []))
            n = windows = 0
            for i, (r, g) in enumerate(zip(ref, got)):
                windows += len(r.overflowing)
                parts_r = [r] + list(r.overflowing)
                parts_g = [g] + g["overflowing"]
                same = len(parts_r) == len(parts_g) and all(
                    x.ids == y["ids"] and x.type_ids == y["type_ids"] and [list(o) for o in x.offsets] == y["offsets"]
                    for x, y in zip(parts_r, parts_g))
                if not same:
                    n += 1
                    if n <= 2:
                        print(f"    line {i}: {texts[i][:100]!r}: package {len(parts_r)} parts, kiln {len(parts_g)}")
                        for k, (x, y) in enumerate(zip(parts_r, parts_g)):
                            if x.ids != y["ids"] or x.type_ids != y["type_ids"] or [list(o) for o in x.offsets] != y["offsets"]:
                                print(f"      part {k}: package {x.ids} {x.type_ids} {x.offsets}")
                                print(f"      part {k}: kiln    {y['ids']} {y['type_ids']} {y['offsets']}")
                                break
            n += abs(len(ref) - len(got))
            label = f"stride 5, {direction}" + (", pair" if mode == "pair" else "")
            print(f"  {name:24s} [{label:18s}] lines {len(ref):6d}  mismatching lines {n:5d}  (overflowing windows {windows})  {elapsed()}")
            bad += n
    tok.no_truncation()
    return bad


def check(driver, name, path, tmp, lines, pairs, n_other):
    """Every line single; the first n_other lines decoded, in pairs, without special tokens and
    truncated, to keep the whole test within about three minutes on two cores."""
    tok = Tokenizer.from_file(path)
    blob = ("\n".join(lines) + "\n").encode("utf-8")
    few = lines[:n_other]
    fblob = ("\n".join(few) + "\n").encode("utf-8")
    pairs = pairs[:n_other // 2]
    pblob = ("\n".join(a + "\t" + b for a, b in pairs) + "\n").encode("utf-8")
    total = 0
    total += compare(name, "single", tok.encode_batch(lines), run_kiln(driver, path, blob, []), lines)
    total += check_decode(driver, name, path, tok, few)
    total += compare(name, "pair", tok.encode_batch(pairs), run_kiln(driver, path, pblob, ["--pair"]), [a + " | " + b for a, b in pairs])
    total += compare(name, "no special tokens", tok.encode_batch(few, add_special_tokens=False),
                     run_kiln(driver, path, fblob, ["--no-special-tokens"]), few)
    total += check_overflow(driver, name, tmp, tok, few, pairs)
    tok.no_truncation()
    tok.enable_truncation(max_length=24)
    total += compare(name, "pair, max_length 24", tok.encode_batch(pairs), run_kiln(driver, path, pblob, ["--pair", "--max-length", "24"]),
                     [a + " | " + b for a, b in pairs])
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--driver", required=True, help="kiln_tok (or kiln) executable")
    ap.add_argument("--lines", type=int, default=10000)
    ap.add_argument("--other-lines", type=int, default=2500, help="lines used for the decode/pair/no-special/truncation runs")
    ap.add_argument("--real", nargs="*", default=[], help="extra tokenizer.json files to check")
    ap.add_argument("--only", default="", help="check only the configurations whose name matches this regex")
    a = ap.parse_args()
    driver = a.driver
    lines = gen_corpus.generate(a.lines, hard=True)
    # pairs: neighbouring lines, without the tab the CLI uses as separator
    clean = [l.replace("\t", " ") for l in lines]
    pairs = list(zip(clean[0::2], clean[1::2]))
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        paths = train_all(lines, tmp)
        for p in a.real:
            paths[os.path.basename(os.path.dirname(p)) or p] = p
        for name, path in paths.items():
            if re.search(a.only, name):
                total += check(driver, name, path, tmp, lines, pairs, a.other_lines)
        if re.search(a.only, "unicode-scripts"):
            total += check_scripts_exhaustive(driver, tmp)
        if re.search(a.only, "unicode-classes"):
            total += check_unicode_exhaustive(driver, tmp)
        if re.search(a.only, "transformers-folder"):
            total += check_transformers_folder(driver, tmp, paths["unigram-t5"], lines, pairs)
    print("parity:", "OK" if total == 0 else f"{total} mismatching lines")
    return 0 if total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
