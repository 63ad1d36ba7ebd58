#!/usr/bin/env python3
"""`kiln run` on bad models and bad input: a folder without a model, a tokenizer larger than the
model's vocabulary, malformed / incomplete lines among good ones, an empty file, a folder of input
files, an unreadable image among good ones (imageClassification, when the build has it), Ctrl-C
during a long stdin run, and the progress bar. Good lines must come out complete and equal to a
clean run; bad lines must become error lines naming their line number.
Skips (exit 0) when numpy, onnx or tokenizers is missing (the models are made here)."""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}")
    passed += bool(ok)
    failed += not ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--gen", required=True, help="tools/gen/gen_bert.py")
    a = ap.parse_args()
    try:
        import numpy  # noqa: F401
        import onnx  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as e:
        print(f"skipped: {e.name} not installed")
        print("0 passed, 0 failed, 1 skipped")
        return 0
    import tiny_models

    def run(args, stdin=None, timeout=300):
        return subprocess.run([a.kiln, "run"] + args, input=stdin, capture_output=True, text=True, timeout=timeout)

    def lines_of(text):
        return [json.loads(l) for l in text.splitlines()]

    with tempfile.TemporaryDirectory() as d:
        bert = tiny_models.make_bert(os.path.join(d, "bert"), a.gen)
        feat = ["--model", bert, "--type", "featureExtraction", "--batch-size", "3"]

        # a folder without a model
        empty = os.path.join(d, "nomodel")
        os.makedirs(empty)
        p = run(["--model", empty, "--type", "featureExtraction"], stdin='{"input": "x"}\n')
        err = p.stderr.strip().splitlines()
        check("no model: exit 1, one error line naming the folder", p.returncode == 1 and len(err) == 1 and "no model" in err[0]
              and empty in err[0] and p.stdout == "", f"exit {p.returncode}, stderr {p.stderr!r}")
        p = run(["--model", os.path.join(d, "missing"), "--type", "featureExtraction"], stdin='{"input": "x"}\n')
        check("missing folder: exit 1, one error line", p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1,
              f"exit {p.returncode}, stderr {p.stderr!r}")

        # a tokenizer that does not fit the model: config.json vocab_size below the tokenizer's
        small = tiny_models.make_bert(os.path.join(d, "smallvocab"), a.gen, config_vocab=100)
        p = run(["--model", small, "--type", "featureExtraction"], stdin='{"input": "x"}\n')
        check("tokenizer larger than vocab_size: exit 1, says they do not match",
              p.returncode == 1 and "do not match" in p.stderr and "vocab_size" in p.stderr and len(p.stderr.strip().splitlines()) == 1,
              f"exit {p.returncode}, stderr {p.stderr!r}")

        # unknown type, unknown option: usage errors
        p = run(["--model", bert, "--type", "summarization"], stdin="")
        check("unknown --type: exit 2", p.returncode == 2 and "summarization" in p.stderr, p.stderr[:200])

        # malformed lines among good ones
        good = ["the kiln runs models", "Paris and Berlin", "a cat", "every morning the river is bright", "x y z", "old new"]
        bad = {2: "not json at all", 4: '{"input": "unterminated', 5: '{"text": "no input field"}', 7: '{"input": 42}',
               9: '["input", "a list"]', 10: '{"input": "trailing"} garbage'}
        src, want_good, ln, gi = [], {}, 0, 0
        for k in range(1, 13):
            if k in bad:
                src.append(bad[k])
            elif gi < len(good):
                src.append(json.dumps({"input": good[gi]}))
                want_good[k] = good[gi]
                gi += 1
            else:
                src.append("")       # blank lines are answered with an error line
        path = os.path.join(d, "mixed.jsonl")
        open(path, "w").write("\n".join(src) + "\n")
        clean = run(feat, stdin="".join(json.dumps({"input": t}) + "\n" for t in good))
        ref = {l["input"]: l["output"]["Embeddings"] for l in lines_of(clean.stdout)}
        p = run(feat + ["--input", path])
        out = lines_of(p.stdout)
        n_lines = len(src)
        n_blank = sum(1 for s in src if not s.strip())
        check("mixed: one output line per input line, blank ones included", len(out) == n_lines, f"{len(out)} lines for {n_lines}")
        check("mixed: exit 1 and the failure count on stderr",
              p.returncode == 1 and f"{len(bad) + n_blank} of {n_lines} lines failed" in p.stderr, f"exit {p.returncode}, {p.stderr[-300:]!r}")
        check("mixed: a blank line's answer is an error line naming it",
              all("empty line" in out[k - 1].get("error", "") for k in range(1, 13) if not src[k - 1].strip()))
        nonblank_lines = [k for k in range(1, 13) if src[k - 1].strip()]
        out = [out[k - 1] for k in nonblank_lines]
        ok_good = ok_bad = True
        for k, o in zip(nonblank_lines, out):
            if k in want_good:
                ok_good &= o.get("input") == want_good[k] and o.get("output", {}).get("Embeddings") == ref[want_good[k]]
            else:
                ok_bad &= "error" in o and o["error"].startswith(f"line {k}: ") and f"{path}:{k}:" in p.stderr and "output" not in o
        check("mixed: every good line present and equal to a clean run", ok_good)
        check("mixed: every bad line is an error line with its line number (output and stderr)", ok_bad, json.dumps(out)[:600])
        byline = dict(zip(nonblank_lines, out))
        check("mixed: a malformed line echoes its raw text", byline.get(2, {}).get("input") == bad[2])
        check("mixed: a line without input echoes null", byline.get(5, {}).get("input", 0) is None)
        check("mixed: a wrong input shape echoes the input", byline.get(7, {}).get("input") == 42 and "expects" in byline[7].get("error", ""))

        # an empty input file
        emp = os.path.join(d, "empty.jsonl")
        open(emp, "w").close()
        p = run(feat + ["--input", emp])
        check("empty file: exit 0, no output, a note on stderr", p.returncode == 0 and p.stdout == "" and "no input lines" in p.stderr,
              f"exit {p.returncode}, {p.stderr!r}")

        # a folder of inputs: one result file per *.jsonl, in name order
        ind, outd = os.path.join(d, "in"), os.path.join(d, "out", "nested")
        os.makedirs(ind)
        open(os.path.join(ind, "b.jsonl"), "w").write(json.dumps({"input": good[1]}) + "\n")
        open(os.path.join(ind, "a.jsonl"), "w").write("".join(json.dumps({"input": t}) + "\n" for t in good[2:5]))
        open(os.path.join(ind, "notes.txt"), "w").write("not an input\n")
        p = run(feat + ["--input", ind, "--output", os.path.join(d, "out")])
        r0 = os.path.join(d, "out", "result_0.jsonl")
        r1 = os.path.join(d, "out", "result_1.jsonl")
        ok = p.returncode == 0 and os.path.exists(r0) and os.path.exists(r1) and not os.path.exists(os.path.join(d, "out", "result_2.jsonl"))
        if ok:
            l0, l1 = lines_of(open(r0).read()), lines_of(open(r1).read())
            ok = [l["input"] for l in l0] == good[2:5] and [l["input"] for l in l1] == [good[1]] \
                and all(l["output"]["Embeddings"] == ref[l["input"]] for l in l0 + l1) and p.stdout == ""
        check("input folder with two files: result_0 (a.jsonl) and result_1 (b.jsonl)", ok, f"exit {p.returncode}, {p.stderr[-300:]!r}")
        del outd

        # an unreadable image among good ones: only that line fails
        img = tiny_models.make_image_classifier(os.path.join(d, "image"))
        imgs = os.path.join(d, "imgs")
        os.makedirs(imgs)
        tiny_models.write_png(os.path.join(imgs, "red.png"), 20, 20, lambda x, y: (200, 10 + x, 30))
        tiny_models.write_png(os.path.join(imgs, "blue.png"), 24, 18, lambda x, y: (10, 20 + y, 220))
        open(os.path.join(imgs, "broken.png"), "wb").write(b"\x89PNG\r\n\x1a\nthis is not an image")
        lst = os.path.join(imgs, "list.jsonl")
        open(lst, "w").write("".join(json.dumps({"input": f}) + "\n" for f in ["red.png", "broken.png", "blue.png", "missing.png"]))
        p = run(["--model", img, "--type", "imageClassification", "--input", lst, "--batch-size", "4"])
        out = lines_of(p.stdout) if p.stdout else []
        ok = len(out) == 4 and p.returncode == 1
        ok = ok and "output" in out[0] and "output" in out[2] and out[1].get("error", "").startswith("line 2: ") \
            and out[3].get("error", "").startswith("line 4: ")
        ok = ok and [o["Label"] for o in out[0]["output"]] != [] and all(set(o) == {"Label", "Score"} for o in out[0]["output"])
        check("unreadable and missing images: only their lines fail (paths relative to the input file)", ok,
              f"exit {p.returncode}, {p.stdout[:400]!r} {p.stderr[-300:]!r}")
        p1 = run(["--model", img, "--type", "imageClassification", "--input", lst, "--batch-size", "1"])
        check("image results do not depend on the batch (good lines equal with --batch-size 1)",
              [l.get("output") for l in lines_of(p1.stdout)] == [l.get("output") for l in out], p1.stderr[-200:])

        # Ctrl-C during a long stdin run: the chunk under way is finished and flushed, exit 130
        proc = subprocess.Popen([a.kiln, "run"] + feat, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        stop = threading.Event()

        def feed():
            i = 0
            try:
                while not stop.is_set():
                    proc.stdin.write(json.dumps({"input": f"{good[i % len(good)]} {i}"}) + "\n")
                    i += 1
                    if i % 50 == 0:
                        proc.stdin.flush()
                        time.sleep(0.005)
            except (BrokenPipeError, OSError, ValueError):
                pass
        collected = []

        def drain():
            collected.append(proc.stdout.read())
        tf, td = threading.Thread(target=feed), threading.Thread(target=drain)
        tf.start()
        td.start()
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "hung"
        stop.set()
        tf.join()
        td.join()
        err = proc.stderr.read()
        text = collected[0] if collected else ""
        ok_json, n = True, 0
        for l in text.split("\n")[:-1]:
            try:
                o = json.loads(l)
                ok_json &= "output" in o and len(o["output"]["Embeddings"]) == 64
                n += 1
            except ValueError:
                ok_json = False
        check("SIGINT: exit 130", rc == 130, f"exit {rc}, {err[-300:]!r}")
        check("SIGINT: every written line is complete JSON and the output ends with a newline",
              ok_json and n > 0 and text.endswith("\n"), f"{n} lines, tail {text[-80:]!r}")
        check("SIGINT: stderr says how many items were done, matching the lines written",
              f"interrupted after {n} items" in err, err[-300:])

        # the progress bar: only with --progress (stderr is not a terminal here)
        inp = "".join(json.dumps({"input": t}) + "\n" for t in good)
        p = run(feat, stdin=inp)
        check("no progress bar when stderr is not a terminal", "items/s" not in p.stderr and p.returncode == 0, p.stderr[-200:])
        p = run(feat + ["--progress", "--input", path])
        check("--progress draws items, items/s and the total", "items/s" in p.stderr and "/12 items" in p.stderr, p.stderr[-300:])

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
