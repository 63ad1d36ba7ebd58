#!/usr/bin/env python3
"""Chat-template parity: kiln's Jinja subset (kiln_chat --batch) against Jinja2 configured exactly as
transformers' apply_chat_template configures it (transformers.utils.chat_template_utils
._compile_jinja_template: ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
its tojson / raise_exception / strftime_now / namespace), over

  * the published templates of Llama-3.1, Llama-3.2, Qwen2.5, Phi-3.5 and Gemma-3 (templates/, see
    templates/README.md for where each came from) and the conversations of conversations.py,
    with add_generation_prompt false and true, and eleven more published templates (templates/extra);
  * `kiln chat-template --messages` against transformers' render_jinja_template (the context
    apply_chat_template builds);
  * the edge-case templates of edge_cases.py (every construct of the subset, whitespace control
    around every tag kind, errors).

A rendering must be byte-identical; where Jinja2 raises, kiln must fail too, with the same message
for raise_exception. edge_cases.UNSUPPORTED lists templates kiln must refuse with a message naming
the construct and its line:column. Prints the counts; exits 1 on any difference.
  parity.py --driver build/kiln_chat [--verbose]"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ["TZ"] = "UTC"
time.tzset()

NOW = 1721995200 + 3600 * 13 + 61  # 2024-07-26 13:01:01 UTC: strftime_now is fixed on both sides


def reference_env():
    from datetime import datetime
    from transformers.utils.chat_template_utils import _compile_jinja_template

    def compile_(src):
        t = _compile_jinja_template(src)
        t.environment.globals["strftime_now"] = lambda fmt: datetime.fromtimestamp(NOW).strftime(fmt)
        return t

    return compile_


def render_ref(compile_, src, ctx):
    import jinja2

    try:
        t = compile_(src)
    except Exception as e:  # noqa: BLE001 - any compile error is an expected failure
        return ("error", type(e).__name__, str(e))
    try:
        return ("ok", t.render(**ctx))
    except jinja2.exceptions.TemplateError as e:
        # raise_exception raises TemplateError itself; the subclasses are Jinja's own errors
        if type(e) is jinja2.exceptions.TemplateError:
            return ("raise", e.message)
        return ("error", type(e).__name__, str(e))
    except Exception as e:  # noqa: BLE001
        return ("error", type(e).__name__, str(e))


def cli_checks(args, compile_, stats):
    """kiln chat-template --template --messages: the context it builds (tools, documents, special
    tokens, reasoning aliases) against transformers' render_jinja_template, the body of
    apply_chat_template(tokenize=False)."""
    import conversations
    from transformers.utils.chat_template_utils import render_jinja_template

    st = stats.setdefault("cli", {"identical": 0, "errors_matched": 0, "refused": 0, "bad": 0})
    bad = 0
    picks = ["system_user", "multi_turn", "unicode", "whitespace", "tool_call_content"]
    convs = dict(conversations.conversations())
    convs["reasoning"] = [conversations.U, {"role": "assistant", "content": "Paris.", "reasoning": "The capital is Paris."},
                          {"role": "user", "content": "Sure?", "thinking": "t", "reasoning_content": None}]
    picks.append("reasoning")
    with tempfile.TemporaryDirectory() as tmp:
        # a template that prints the context itself: keys, their order, the reasoning aliases
        dump = os.path.join(tmp, "dump.jinja")
        with open(dump, "w", encoding="utf-8") as f:
            f.write("{% for m in messages %}{{ m }}\n{% endfor %}{{ tools }} {{ documents }} {{ bos_token }} {{ eos_token }}"
                    " {{ add_generation_prompt }} {{ unk_token }}")
        models = dict(conversations.TEMPLATES, dump={"bos_token": "<s>", "eos_token": "</s>"})
        for name, meta in models.items():
            path = dump if name == "dump" else os.path.join(HERE, "templates", name + ".jinja")
            with open(path, encoding="utf-8") as f:
                src = f.read()
            compile_(src)  # the cached environment now has the fixed strftime_now
            for label in picks:
                for gen in (False, True):
                    mp = os.path.join(tmp, "m.json")
                    with open(mp, "w", encoding="utf-8") as f:
                        json.dump(convs[label], f, ensure_ascii=False)
                    cmd = [args.driver, "--template", path, "--messages", mp, "--now", str(NOW)]
                    kw = {}
                    for tok in ("bos_token", "eos_token"):
                        if meta[tok] is not None:
                            cmd += ["--" + tok[:3], meta[tok]]
                            kw[tok] = meta[tok]
                    if gen:
                        cmd.append("--add-generation-prompt")
                    out = subprocess.run(cmd, capture_output=True, timeout=60)
                    try:
                        want = render_jinja_template([convs[label]], chat_template=src, add_generation_prompt=gen, **kw)[0][0]
                    except Exception as e:  # noqa: BLE001
                        want = e
                    if isinstance(want, Exception):
                        ok = out.returncode != 0
                        st["errors_matched" if ok else "bad"] += 1
                    else:
                        ok = out.returncode == 0 and out.stdout.decode("utf-8") == want
                        st["identical" if ok else "bad"] += 1
                    if not ok:
                        bad += 1
                        print(f"FAIL cli {name}/{label}/gen={int(gen)}\n  transformers: {want!r}\n  kiln: {out.stdout!r} {out.stderr!r}")
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    try:
        compile_ = reference_env()
    except ImportError as e:
        if os.environ.get("KILN_REQUIRE_PARITY") == "1":
            raise
        print(f"skipped: {e}")
        return 0
    import conversations
    import edge_cases

    cases = []  # (group, label, template source, context)
    for name, meta in conversations.TEMPLATES.items():
        with open(os.path.join(HERE, "templates", name + ".jinja"), encoding="utf-8") as f:
            src = f.read()
        for label, ctx in conversations.contexts(name, meta):
            cases.append(("model", f"{name}/{label}", src, ctx))
    # more published templates (llama.cpp's verbatim copies): macros, tool formats, other layouts
    extra_dir = os.path.join(HERE, "templates", "extra")
    for fn in sorted(os.listdir(extra_dir)):
        if not fn.endswith(".jinja"):
            continue
        with open(os.path.join(extra_dir, fn), encoding="utf-8") as f:
            src = f.read()
        for label, ctx in conversations.contexts(fn[:-6], {"bos_token": "<s>", "eos_token": "</s>"}):
            cases.append(("extra", f"{fn[:-6]}/{label}", src, ctx))
            # the tool-use templates iterate tools (and FireFunction prints `functions` and `datetime`)
            tools = [conversations.WEATHER, conversations.CALC]
            cases.append(("extra", f"{fn[:-6]}/{label}+tools", src,
                          dict(ctx, tools=ctx.get("tools") or tools, functions=json.dumps(tools, indent=2, ensure_ascii=False),
                               datetime="2024-07-26 13:01")))
    for i, (src, ctx) in enumerate(edge_cases.CASES):
        cases.append(("edge", f"edge#{i}", src, ctx))
    for i, (src, ctx, _) in enumerate(edge_cases.UNSUPPORTED):
        cases.append(("unsupported", f"unsupported#{i}", src, ctx))

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
        for _, _, src, ctx in cases:
            f.write(json.dumps({"template": src, "context": ctx, "now": NOW}, ensure_ascii=False) + "\n")
        batch = f.name
    try:
        out = subprocess.run([args.driver, "--batch", batch], capture_output=True, timeout=600)
    finally:
        os.unlink(batch)
    if out.returncode != 0 or out.stderr:
        # the driver writes nothing to stderr unless it fails (or a sanitizer reports)
        print(out.stderr.decode(errors="replace")[-4000:])
        return 1
    results = [json.loads(l) for l in out.stdout.decode("utf-8").splitlines() if l.strip()]
    if len(results) != len(cases):
        print(f"driver gave {len(results)} results for {len(cases)} cases")
        return 1

    stats = {}
    bad = 0
    bad += cli_checks(args, compile_, stats)
    unsupported_expect = {f"unsupported#{i}": want for i, (_, _, want) in enumerate(edge_cases.UNSUPPORTED)}
    for (group, label, src, ctx), got in zip(cases, results):
        st = stats.setdefault(group, {"identical": 0, "errors_matched": 0, "refused": 0, "bad": 0})
        if group == "unsupported":
            want = unsupported_expect[label]
            msg = got.get("error", "")
            if not got["ok"] and all(w in msg for w in want):
                st["refused"] += 1
                continue
            st["bad"] += 1
            bad += 1
            print(f"FAIL {label}: expected an error naming {want}, got {got}")
            continue
        ref = render_ref(compile_, src, ctx)
        if group == "edge" and not got["ok"] and "outside the supported subset" in got["error"]:
            # kiln refuses a construct it does not render exactly (never an approximation)
            st["refused"] += 1
            if args.verbose:
                print(f"refused {label}: {got['error']}")
            continue
        if ref[0] == "ok":
            if got["ok"] and got["text"] == ref[1]:
                st["identical"] += 1
                continue
            why = f"jinja2: {ref[1]!r}\n  kiln:   {got.get('text', got.get('error'))!r}"
        elif ref[0] == "raise":
            if not got["ok"] and got["error"] == ref[1]:
                st["errors_matched"] += 1
                continue
            why = f"jinja2 raise_exception({ref[1]!r})\n  kiln:   {got}"
        else:
            if not got["ok"]:
                st["errors_matched"] += 1
                if args.verbose:
                    print(f"ok   {label}: both fail: jinja2 {ref[1]}: {ref[2]} | kiln: {got['error']}")
                continue
            why = f"jinja2 {ref[1]}: {ref[2]}\n  kiln:   {got['text']!r}"
        st["bad"] += 1
        bad += 1
        print(f"FAIL {label}\n  template: {src[:300]!r}\n  context: {json.dumps(ctx, ensure_ascii=False)[:300]}\n  {why}")
    for g, st in stats.items():
        print(f"{g}: {st['identical']} byte-identical, {st['errors_matched']} failing on both sides"
              + (f", {st['refused']} refused as outside the subset" if g not in ("model", "extra") else "") + f", {st['bad']} different")
    total = sum(s["identical"] for s in stats.values())
    print(f"total: {total} byte-identical renderings, {bad} differences")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
