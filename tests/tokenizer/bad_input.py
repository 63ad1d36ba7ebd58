#!/usr/bin/env python3
"""Bad input for `kiln tokenize`: invalid UTF-8 (replaced by U+FFFD like Python/Rust lossy
decoding), a 10 MB line, empty lines, and malformed or truncated tokenizer.json files, whose
errors must name the offending field; tokenizer.json with invalid UTF-8 (a Split pattern, a vocab
key, an added token) is refused on load with the field named. Needs only the kiln_tok driver; where the `tokenizers`
package is installed the 10 MB line and the repaired text are also compared with it."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

BPE = {
    "version": "1.0", "truncation": None, "padding": None, "added_tokens": [
        {"id": 8, "content": "<s>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}],
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [8], "tokens": ["<s>"]}}},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
              "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
              "vocab": {"a": 0, "b": 1, "\u0120": 2, "ab": 3, "\u0120ab": 4, "\u00ef": 5, "\u00bf": 6, "\u00bd": 7, "<s>": 8},
              "merges": [["a", "b"], ["\u0120", "ab"]]},
}

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def run(driver, path, data, extra=(), timeout=120):
    t = time.time()
    r = subprocess.run([driver, "tokenize", "--tokenizer", path] + list(extra), input=data, capture_output=True, timeout=timeout)
    return r, time.time() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    driver = ap.parse_args().driver
    try:
        import tokenizers
    except ImportError:
        tokenizers = None
    with tempfile.TemporaryDirectory() as tmp:
        good = os.path.join(tmp, "tokenizer.json")
        with open(good, "w") as f:
            json.dump(BPE, f)

        r, _ = run(driver, good, b"ab\xffab \xe2\x82\n")
        out = json.loads(r.stdout)
        r2, _ = run(driver, good, "ab\ufffdab \ufffd\n".encode())
        check(r.returncode == 0 and out == json.loads(r2.stdout), "invalid UTF-8 is replaced by U+FFFD (one per maximal subpart)")
        check(out["ids"][:3] == [8, 3, 5], "ids after the replacement character are intact")

        r, _ = run(driver, good, b"\n\n")
        lines = [json.loads(l) for l in r.stdout.decode().splitlines()]
        check(r.returncode == 0 and len(lines) == 2 and lines[0]["ids"] == [8] and lines[0]["offsets"] == [[0, 0]],
              "empty lines give only the special tokens")

        big = b"ab " * (10 * 1024 * 1024 // 3)
        r, dt = run(driver, good, big + b"\n")
        out = json.loads(r.stdout) if r.returncode == 0 else {"ids": [], "offsets": []}
        # <s>, "ab", then " ab" repeated, and the trailing space alone
        check(r.returncode == 0 and len(out["ids"]) == 2 + len(big) // 3 and out["offsets"][-1][1] == len(big),
              f"10 MB line: {len(out['ids'])} tokens in {dt:.1f}s")
        if tokenizers is not None:
            ref = tokenizers.Tokenizer.from_file(good).encode(big.decode())
            check(ref.ids == out["ids"] and [list(o) for o in ref.offsets] == out["offsets"], "10 MB line matches the package")
        r, dt = run(driver, good, b"a" * (10 * 1024 * 1024) + b"\n")
        check(r.returncode == 0, f"10 MB line without spaces: one word, {dt:.1f}s")

        def bad(mutate, expect, label):
            d = json.loads(json.dumps(BPE))
            text = mutate(d)
            p = os.path.join(tmp, "bad.json")
            with open(p, "w") as f:
                f.write(text if isinstance(text, str) else json.dumps(d))
            r, _ = run(driver, p, b"ab\n")
            msg = r.stderr.decode()
            check(r.returncode != 0 and expect in msg and not r.stdout, f"{label}: {msg.strip()}")

        bad(lambda d: json.dumps(d)[: len(json.dumps(d)) // 2], "truncated", "truncated file")
        bad(lambda d: json.dumps(d).replace('"merges":', '"merges" ', 1), "malformed", "missing colon")
        bad(lambda d: d["model"].pop("vocab"), "model.vocab", "missing vocab")
        bad(lambda d: d["model"].__setitem__("merges", {"a": 1}), "model.merges", "merges not an array")
        bad(lambda d: d["model"]["merges"].append(["a", "zz"]), "model.merges[2]", "merge with unknown token")
        bad(lambda d: d["pre_tokenizer"].__setitem__("use_regex", "yes"), "pre_tokenizer.use_regex", "wrong field type")
        bad(lambda d: d["added_tokens"][0].pop("content") and None, "added_tokens[0].content", "added token without content")
        bad(lambda d: d["post_processor"]["single"][0]["SpecialToken"].__setitem__("id", "<x>"), "post_processor.single[0]",
            "template naming an unknown special token")
        bad(lambda d: d.__setitem__("model", 3), "model", "model not an object")
        def bad_bytes(raw, expect, label):
            p = os.path.join(tmp, "bad.json")
            with open(p, "wb") as f:
                f.write(raw)
            r, _ = run(driver, p, b"ab\n")
            msg = r.stderr.decode(errors="replace")
            check(r.returncode != 0 and expect in msg and "invalid UTF-8" in msg and not r.stdout, f"{label}: {msg.strip()}")

        split = json.loads(json.dumps(BPE))
        split["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "@@PAT@@"}, "behavior": "Isolated", "invert": False}
        raw = json.dumps(split).encode()
        bad_bytes(raw.replace(b"@@PAT@@", b"x\xfc"), "pre_tokenizer.pattern.Regex", "Regex pattern with a truncated sequence")
        bad_bytes(raw.replace(b"@@PAT@@", b"\xed\xa0\x80"), "pre_tokenizer.pattern.Regex", "Regex pattern with a surrogate")
        bad_bytes(json.dumps(BPE).encode().replace(b'"ab": 3', b'"a\xc0\xafb": 3'), "model.vocab", "vocab key overlong")
        bad_bytes(json.dumps(BPE).encode().replace(b'"content": "<s>"', b'"content": "<s\xff>"'), "added_tokens[0].content",
                  "added token with a stray byte")
        r, _ = run(driver, os.path.join(tmp, "missing.json"), b"ab\n")
        check(r.returncode != 0 and "missing.json" in r.stderr.decode(), "missing file is reported with its path")
    print("bad input:", "OK" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
