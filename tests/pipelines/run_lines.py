#!/usr/bin/env python3
"""`kiln run` and hostile input lines: every non-blank input line gets exactly one output line, and
the output is always valid UTF-8 and strict JSON.

  nul       a line starting with (or holding) a NUL byte is an error line; lines stay aligned
  utf8      invalid UTF-8 is replaced by U+FFFD (as the tokenizer does) and a "warning" says so;
            the result equals that of the repaired text
  strict    NaN, Infinity, trailing commas, single quotes, raw control characters, "1." and
            unquoted names are error lines naming the column (RFC 8259)
  u0000     "\\u0000" inside a text is a character of it, not its end: with a BERT tokenizer (which
            drops U+0000, as the package does) "a\\u0000b" embeds as "ab"; token classification,
            question answering, zero-shot and cross-encoder lines holding it give valid JSON
  limit     a line over --max-line-bytes is an error line (and the next line is answered)
  qa        questionAnswering with a question that fills --max-length: an error that says so
  pair      textClassification on one pair of 2 x 60 kB texts: peak RSS stays small (no
            overflow-window combinations), and the result is truncated with a warning

  run_lines.py --kiln build/kiln --fixtures tests/pipelines/fixtures
"""
import argparse
import json
import os
import subprocess
import sys

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}")
    passed += bool(ok)
    failed += not ok


def no_constants(x):
    raise ValueError(f"non-standard JSON constant {x}")


def strict_lines(raw):
    """The output as strict JSON lines: UTF-8 decoding and json.loads without NaN/Infinity."""
    text = raw.decode("utf-8")   # raises on invalid UTF-8
    return [json.loads(l, parse_constant=no_constants) for l in text.splitlines()]


def run(kiln, args, stdin):
    p = subprocess.Popen([kiln, "run", "--no-progress"] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    out, err = p.communicate(stdin, timeout=300)
    return p.returncode, out, err.decode("utf-8", "replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--fixtures", required=True)
    a = ap.parse_args()
    feat = ["--model", os.path.join(a.fixtures, "feature_st_mean_norm", "model"), "--type", "featureExtraction"]

    good = json.dumps({"input": "a good line"}).encode()
    src = [
        (b"\x00" + good, "error", "a NUL byte"),                       # 1
        (good, "output", None),                                        # 2
        (b'{"input": "caf\xc3\xa9 \xff bad \xe2\x82 end"}', "output", None),  # 3: repaired
        (b'{"input": NaN}', "error", "column 11"),                     # 4
        (b'{"input": -Infinity}', "error", "Infinity are not JSON"),  # 5
        (b'{"input": "x",}', "error", "trailing comma"),               # 6
        (b"{'input': 'x'}", "error", "column 2"),                      # 7
        (b'{"input": "a\tb"}', "error", "control character"),          # 8
        (b'{"input": 1.}', "error", "column 13"),                      # 9
        (b'{input: "x"}', "error", "column 2"),                        # 10
        (b'{"input": "a\\u0000b"}', "output", None),                    # 11
        (b"", "error", "empty line"),                                  # 12: blank, answered
        (b'{"input": "x"} {"input": "y"}', "error", "text after the value"),  # 13
        (good[:-1] + b"\x00}", "error", "NUL"),                        # 14
        (b'{"input": "' + b"w " * 400 + b'"}', "error", "--max-line-bytes"),  # 15
        (good, "output", None),                                        # 16
    ]
    stdin = b"\n".join(s for s, _, _ in src) + b"\n"
    rc, out, err = run(a.kiln, feat + ["--max-line-bytes", "512"], stdin)
    try:
        lines = strict_lines(out)
        valid = True
    except (UnicodeDecodeError, ValueError) as e:
        lines, valid = [], False
        print(f"  output not strict JSON / UTF-8: {e}")
    check("the output is valid UTF-8 and strict JSON", valid)
    answered = [(k + 1, kind, what) for k, (s, kind, what) in enumerate(src) if kind]
    check("one output line per input line (blank ones included)", len(lines) == len(answered), f"{len(lines)} for {len(answered)}")
    ok = True
    for (k, kind, what), o in zip(answered, lines):
        if kind == "output":
            ok &= "output" in o and "error" not in o
        else:
            ok &= "error" in o and o["error"].startswith(f"line {k}: ") and (what is None or what in o["error"])
            if not ok:
                print(f"  line {k}: {o}")
                break
    check("each line answered in order: good lines output, bad lines an error naming line and cause", ok)
    byline = dict(zip([k for k, _, _ in answered], lines))
    rep = byline.get(3, {})
    check("invalid UTF-8: replaced by U+FFFD, a warning field says so",
          rep.get("input") == "caf\u00e9 \ufffd bad \ufffd end" and "U+FFFD" in rep.get("warning", "") and "output" in rep,
          json.dumps(rep)[:300])
    rc2, out2, _ = run(a.kiln, feat, json.dumps({"input": "caf\u00e9 \ufffd bad \ufffd end"}).encode() + b"\n")
    same = rc2 == 0 and strict_lines(out2)[0]["output"] == rep.get("output")
    check("invalid UTF-8: the result equals that of the repaired text", same)
    check("a NUL line echoes its text, escaped", byline.get(1, {}).get("input") == "\x00" + good.decode())
    rc3, out3, _ = run(a.kiln, feat, b'{"input": "ab"}\n')
    check("\\u0000 is a character: \"a\\u0000b\" embeds as \"ab\" (BERT drops U+0000)",
          byline.get(11, {}).get("input") == "a\x00b" and rc3 == 0 and strict_lines(out3)[0]["output"] == byline[11].get("output"))
    nul_runs = [
        ("tokcls_none", "tokenClassification", {"input": "Paris\u0000 and Berlin"}),
        ("tokcls_none", "tokenClassification", {"input": ["Paris", "and\u0000", "Berlin"]}),
        ("qa_bert_top1", "questionAnswering", {"input": {"question": "where?", "context": "kiln\u0000 runs in Paris\u0000 today"}}),
        ("zeroshot_single", "zeroShotClassification", {"input": "a\u0000b about sports"}),
        ("crossencoder_pairs", "crossEncoder", {"input": {"query": "q\u0000", "documents": ["d\u0000one", "two"]}}),
    ]
    for fx, typ, obj in nul_runs:
        args = json.load(open(os.path.join(a.fixtures, fx, "args.json")))["args"]
        line = json.dumps(obj).encode() + b"\n"   # the NUL characters as \\u0000 escapes
        rcx, outx, errx = run(a.kiln, ["--model", os.path.join(a.fixtures, fx, "model"), "--type", typ] + args, line)
        try:
            lx = strict_lines(outx)
            okx = rcx == 0 and len(lx) == 1 and "output" in lx[0]
        except (UnicodeDecodeError, ValueError) as e:
            okx, lx = False, str(e)
        check(f"\\u0000 in a {typ} line: one valid JSON result", okx, f"{errx[-200:]} {str(lx)[:200]}")
    n_bad = sum(1 for _, kind, _ in answered if kind == "error")
    check("exit 1 and the failure count", rc == 1 and f"{n_bad} of {len(answered)} lines failed" in err, err[-300:])

    # questionAnswering: a question that fills --max-length
    qa = ["--model", os.path.join(a.fixtures, "qa_bert_top1", "model"), "--type", "questionAnswering", "--max-length", "64"]
    long_q = " ".join(["what is the name of it"] * 20)
    stdin = (json.dumps({"input": {"question": long_q, "context": "kiln is a runtime written in C"}}) + "\n" +
             json.dumps({"input": {"question": "what is kiln?", "context": "kiln is a runtime written in C"}}) + "\n").encode()
    rc, out, err = run(a.kiln, qa, stdin)
    lines = strict_lines(out)
    check("questionAnswering: a question filling --max-length is an error line that says so",
          len(lines) == 2 and "no room is left for the context" in lines[0].get("error", "") and "--max-length" in lines[0]["error"]
          and "output" in lines[1] and "SkipLayerNormalization" not in err, json.dumps(lines)[:400])

    # a pair of two 60 kB texts: memory linear in the input, not in the product of the windows
    tc = ["--model", os.path.join(a.fixtures, "textcls_roberta_pairs", "model"), "--type", "textClassification"]
    words = "the kiln runs models on every core while memory stays flat ".split()
    t1 = " ".join(words[i % len(words)] for i in range(10000))[:60000]
    t2 = " ".join(words[(i * 7) % len(words)] for i in range(10000))[:60000]
    rc, out, err = run(a.kiln, tc, (json.dumps({"input": [t1, t2]}) + "\n").encode())
    # the largest of the children waited for so far: every earlier run here is small
    import resource
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    lines = strict_lines(out)
    check("pair of 2 x 60 kB: one result, truncated with a warning", len(lines) == 1 and "output" in lines[0] and "truncated" in err,
          err[-300:])
    check(f"pair of 2 x 60 kB: peak RSS {peak_mb:.0f} MB (under 300 MB)", peak_mb is not None and peak_mb < 300)

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
