#!/usr/bin/env python3
"""`kiln download` and the Hugging Face cache against a local hub (hub_server.py).

Builds a tiny BERT model folder (tools/gen/gen_bert.py, bert-tiny preset) and serves it as two
repos, then checks with HF_ENDPOINT at the server and HF_HOME in a temp folder:
  layout    refs/main, snapshots/<commit>/<path> relative symlinks to blobs/<etag>, blobs named by
            ETag (SHA-256 for LFS files, git SHA-1 otherwise) with the right bytes; only the files a
            pipeline needs; the model loads (kiln info, kiln embed); huggingface_hub finds the files
  offline   a second run with HF_HUB_OFFLINE=1 and one with the server gone use the cache, no requests
  resume    a transfer cut half way: the same run resumes with a Range request; a run that gives up
            keeps blobs/<etag>.incomplete and the next run resumes from its size
  stall     a server that stops sending fails the transfer (HF_HUB_DOWNLOAD_TIMEOUT) and it resumes
  corrupt   an LFS body with the wrong SHA-256 is rejected with a message and deleted
  token     401 without or with a wrong HF_TOKEN when the server demands one; the right one works
  notfound  unknown repo / revision / --onnx-file: 404 messages naming the URL
  one-onnx  repos with several .onnx variants: only the chosen model and its external data
  progress  progress on stderr when it is a terminal, nothing when it is not
  symlinks  links planted in the cache (blobs/<etag>.incomplete, snapshots/<commit>, blobs/, refs/,
            .locks/<repo>) are refused with a message; the files and folders they point at are untouched
  hostile   servers that send more than HEAD announced, a 500 with an endless body, a body dripping
            2 bytes/s, and one slower than the deadline: each fails quickly, bounded, nothing kept

  test_hub.py --kiln build/kiln --gen tools/gen/gen_bert.py
"""
import argparse
import hashlib
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hub_server import HubServer, Repo, git_blob_sha1  # noqa: E402

REPO = "test-org/tiny-bert"
EXT_REPO = "test-org/tiny-bert-ext"
NEEDED = ["config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "modules.json",
          "sentence_bert_config.json", "1_Pooling/config.json"]
CLEAN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "HF_HUB_CACHE",
             "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME", "HF_HUB_DOWNLOAD_TIMEOUT", "HF_ENDPOINT", "HF_HOME",
             "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy",
             "TRANSFORMERS_OFFLINE")


class Ctx:
    pass


def fail(msg):
    raise AssertionError(msg)


def check(cond, msg):
    if not cond:
        fail(msg)


# ---------------------------------------------------------------- the model folders

def make_model(gen, out, seed, external=None):
    subprocess.run([sys.executable, gen, "--preset", "bert-tiny", "--seed", str(seed), "--out", out],
                   check=True, stdout=subprocess.DEVNULL)
    if external:
        import onnx
        m = onnx.load(out)
        os.remove(out)
        onnx.save_model(m, out, save_as_external_data=True, all_tensors_to_one_file=True, location=external,
                        size_threshold=1024)


def build_repos(gen, work):
    src = os.path.join(work, "src")
    os.makedirs(os.path.join(src, "onnx"))
    os.makedirs(os.path.join(src, "1_Pooling"))
    make_model(gen, os.path.join(src, "model.onnx"), 0)
    make_model(gen, os.path.join(src, "onnx", "model.onnx"), 1)
    make_model(gen, os.path.join(src, "onnx", "model_quantized.onnx"), 2)
    make_model(gen, os.path.join(src, "onnx", "model_fp16.onnx"), 3, external="model_fp16.onnx_data")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words += ["hello", "world", "the", "a", "model", "test", "kiln"]
    words += [f"w{i}" for i in range(1000 - len(words))]
    files = {
        "vocab.txt": "\n".join(words) + "\n",
        "config.json": json.dumps({"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 64,
                                   "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256,
                                   "vocab_size": 1000, "max_position_embeddings": 128, "type_vocab_size": 2,
                                   "pad_token_id": 0}, indent=2),
        "tokenizer_config.json": json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                                             "model_max_length": 128, "cls_token": "[CLS]", "sep_token": "[SEP]",
                                             "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"}),
        "special_tokens_map.json": json.dumps({"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                                               "unk_token": "[UNK]", "mask_token": "[MASK]"}),
        "modules.json": json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]),
        "sentence_bert_config.json": json.dumps({"max_seq_length": 128, "do_lower_case": False}),
        "1_Pooling/config.json": json.dumps({"word_embedding_dimension": 64, "pooling_mode_mean_tokens": True}),
        "README.md": "# tiny-bert\nrandom weights, for tests\n",
        ".gitattributes": "*.onnx filter=lfs diff=lfs merge=lfs -text\n",
        "train_script.py": "print('not fetched')\n",
    }
    for p, t in files.items():
        with open(os.path.join(src, p), "w") as f:
            f.write(t)
    from hub_server import folder_files
    main = folder_files(src)
    # the second repo: no root model.onnx; onnx/model.onnx with external data, and a variant with its own
    ext = {p: d for p, d in main.items() if not p.endswith((".onnx", ".onnx_data"))}
    e = os.path.join(work, "ext")
    os.makedirs(os.path.join(e, "onnx"))
    make_model(gen, os.path.join(e, "onnx", "model.onnx"), 4, external="model.onnx_data")
    make_model(gen, os.path.join(e, "onnx", "model_O4.onnx"), 5, external="model_O4.onnx_data")
    make_model(gen, os.path.join(e, "onnx", "model_int8.onnx"), 6)
    ext.update({p: d for p, d in folder_files(e).items()})
    return Repo(REPO, main), Repo(EXT_REPO, ext)


# ---------------------------------------------------------------- running kiln

def env_for(ctx, home, **extra):
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env["HF_HOME"] = home
    env["HF_ENDPOINT"] = ctx.server.url
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def kiln(ctx, args, env, timeout=120):
    t = time.time()
    r = subprocess.run([ctx.kiln] + args, env=env, capture_output=True, text=True, timeout=timeout)
    r.seconds = time.time() - t
    return r


def download(ctx, home, repo=REPO, extra_args=(), expect_ok=True, **env_extra):
    r = kiln(ctx, ["download", repo] + list(extra_args), env_for(ctx, home, **env_extra))
    if expect_ok:
        check(r.returncode == 0, f"kiln download {repo} failed ({r.returncode}): {r.stderr.strip()}")
        check(r.stdout.count("\n") == 1, f"stdout should be the folder alone: {r.stdout!r}")
        check(r.stderr == "", f"stderr should be empty when it is not a terminal: {r.stderr!r}")
        return r.stdout.strip()
    check(r.returncode != 0, f"kiln download {repo} should have failed: {r.stdout!r}")
    check("Traceback" not in r.stderr and r.returncode in (1, 2), f"exit {r.returncode}: {r.stderr}")
    return r.stderr.strip()


def repo_dir(home, repo):
    org, name = repo.split("/")
    return os.path.join(home, "hub", f"models--{org}--{name}")


def etag_of(repo, path):
    d = repo.files[path]
    return hashlib.sha256(d).hexdigest() if repo.is_lfs(path) else git_blob_sha1(d)


def snapshot_files(snap):
    out = []
    for root, dirs, names in os.walk(snap):
        for n in names:
            out.append(os.path.relpath(os.path.join(root, n), snap))
    return sorted(out)


def check_layout(home, repo, snap, expected):
    rd = repo_dir(home, repo.id)
    check(snap == os.path.join(rd, "snapshots", repo.commit), f"folder {snap}, expected {rd}/snapshots/{repo.commit}")
    check(open(os.path.join(rd, "refs", "main")).read() == repo.commit, "refs/main does not hold the commit")
    got = snapshot_files(snap)
    check(got == sorted(expected), f"snapshot files {got}, expected {sorted(expected)}")
    for p in expected:
        lp = os.path.join(snap, p)
        check(os.path.islink(lp), f"{p} is not a symlink")
        etag = etag_of(repo, p)
        want = "../../" + "../" * p.count("/") + "blobs/" + etag
        check(os.readlink(lp) == want, f"{p} -> {os.readlink(lp)}, expected {want}")
        blob = os.path.join(rd, "blobs", etag)
        check(os.path.isfile(blob) and not os.path.islink(blob), f"blob {etag} missing")
        check(open(lp, "rb").read() == repo.files[p], f"{p}: wrong bytes")
    leftovers = [n for n in os.listdir(os.path.join(rd, "blobs")) if n.endswith(".incomplete")]
    check(not leftovers, f"left in blobs/: {leftovers}")


# ---------------------------------------------------------------- the checks

def t_layout(ctx):
    home = os.path.join(ctx.tmp, "layout")
    snap = download(ctx, home)
    check_layout(home, ctx.repo, snap, NEEDED + ["model.onnx"])
    fetched = {e[1].split("/resolve/main/")[-1].split("/resolve/" + ctx.repo.commit + "/")[-1]
               for e in ctx.server.requests(contains="/resolve/")}
    check(not any(f.startswith("onnx/") or f in ("README.md", "train_script.py") for f in fetched),
          f"fetched files a pipeline does not need: {sorted(fetched)}")
    r = kiln(ctx, ["info", os.path.join(snap, "model.onnx")], os.environ.copy())
    check(r.returncode == 0, f"kiln info on the downloaded model failed: {r.stderr}")
    r = kiln(ctx, ["embed", "--model", snap, "hello world"], os.environ.copy())
    check(r.returncode == 0, f"kiln embed on the downloaded folder failed: {r.stderr}")
    emb = json.loads(r.stdout.splitlines()[0])
    vec = emb if isinstance(emb, list) else next(v for v in emb.values() if isinstance(v, list))
    check(len(vec) == 64, f"embedding of width {len(vec)}, expected 64")
    # huggingface_hub (when installed) reads kiln's cache as its own
    code = ("import huggingface_hub, sys\n"
            f"p = huggingface_hub.hf_hub_download({REPO!r}, '1_Pooling/config.json', local_files_only=True)\n"
            "print(p)")
    r = subprocess.run([sys.executable, "-c", code], env=env_for(ctx, home), capture_output=True, text=True)
    if "No module named" in r.stderr:
        return "huggingface_hub not installed: interop not checked"
    check(r.returncode == 0, f"huggingface_hub cannot read the cache: {r.stderr.strip()[-400:]}")
    check(r.stdout.strip() == os.path.join(snap, "1_Pooling", "config.json"), f"huggingface_hub found {r.stdout!r}")
    return "layout, symlinks, blobs, kiln info/embed, huggingface_hub interop"


def t_offline(ctx):
    home = os.path.join(ctx.tmp, "layout")   # filled by t_layout
    snap = os.path.join(repo_dir(home, REPO), "snapshots", ctx.repo.commit)
    ctx.server.clear_log()
    check(download(ctx, home, HF_HUB_OFFLINE="1") == snap, "offline run gave another folder")
    check(download(ctx, home, repo=f"{REPO}@{ctx.repo.commit}", HF_HUB_OFFLINE="1") == snap, "offline by commit")
    check(download(ctx, home) == snap, "online run with a cached snapshot")
    check(not ctx.server.requests(), f"the cache was there, yet kiln asked the server: {ctx.server.requests()[:3]}")
    dead = HubServer([]).start()
    dead.stop()
    r = kiln(ctx, ["download", REPO], env_for(ctx, home, HF_ENDPOINT=dead.url))
    check(r.returncode == 0 and r.stdout.strip() == snap, f"server gone: {r.stderr}")
    msg = download(ctx, home, repo=EXT_REPO, expect_ok=False, HF_HUB_OFFLINE="1")
    check(EXT_REPO in msg and repo_dir(home, EXT_REPO) in msg and "HF_HUB_OFFLINE" in msg, f"offline miss: {msg}")
    msg = download(ctx, home, repo=EXT_REPO, expect_ok=False, HF_ENDPOINT=dead.url)
    check("network error" in msg and dead.url in msg, f"server gone, repo not cached: {msg}")
    # a different --onnx-file is not in the snapshot: offline says so
    msg = download(ctx, home, extra_args=["--onnx-file", "onnx/model_quantized.onnx"], expect_ok=False, HF_HUB_OFFLINE="1")
    check("onnx/model_quantized.onnx" in msg, f"offline, other model: {msg}")
    return "HF_HUB_OFFLINE=1, by commit, server stopped, no requests; clear misses"


def range_gets(ctx, path_part="/cdn/"):
    return [e[2].get("range") for e in ctx.server.requests("GET", path_part) if e[2].get("range")]


def t_resume(ctx):
    size = len(ctx.repo.files["model.onnx"])
    sha = hashlib.sha256(ctx.repo.files["model.onnx"]).hexdigest()
    # cut once: the same run resumes
    home = os.path.join(ctx.tmp, "resume1")
    ctx.server.clear_log()
    ctx.server.cut = {"model.onnx": 1}
    snap = download(ctx, home)
    check_layout(home, ctx.repo, snap, NEEDED + ["model.onnx"])
    rg = range_gets(ctx)
    check(rg == [f"bytes={size // 2}-"], f"expected one resume from {size // 2}, saw {rg}")
    # cut every time: the run gives up, keeps the partial file; the next run resumes from it
    home = os.path.join(ctx.tmp, "resume2")
    ctx.server.cut = {"model.onnx": 99}
    msg = download(ctx, home, expect_ok=False)
    ctx.server.cut = {}
    inc = os.path.join(repo_dir(home, REPO), "blobs", sha + ".incomplete")
    check(os.path.isfile(inc), f"no {inc} after a cut transfer; message: {msg}")
    have = os.path.getsize(inc)
    check(0 < have < size, f"partial file of {have} bytes (full {size})")
    check("kept in" in msg and inc in msg and "model.onnx" in msg, f"message: {msg}")
    check(not os.path.exists(os.path.join(repo_dir(home, REPO), "refs", "main")), "refs/main written by a failed run")
    check(not os.path.exists(os.path.join(repo_dir(home, REPO), "snapshots", ctx.repo.commit, "config.json")),
          "a failed run left a snapshot")
    ctx.server.clear_log()
    snap = download(ctx, home)
    check_layout(home, ctx.repo, snap, NEEDED + ["model.onnx"])
    rg = range_gets(ctx)
    check(rg == [f"bytes={have}-"], f"expected a resume from {have}, saw {rg}")
    check(not ctx.server.requests("GET", "/resolve/main/config.json") and
          not ctx.server.requests("GET", f"/resolve/{ctx.repo.commit}/config.json"),
          "blobs fetched by the failed run were fetched again")
    return f"in-run resume at {size // 2} of {size}; cross-run resume at {have}"


def t_stall(ctx):
    home = os.path.join(ctx.tmp, "stall")
    ctx.server.clear_log()
    ctx.server.stall = {"model.onnx": 1}
    r = kiln(ctx, ["download", REPO], env_for(ctx, home, HF_HUB_DOWNLOAD_TIMEOUT="2"), timeout=60)
    ctx.server.stall = {}
    check(r.returncode == 0, f"stalled transfer not recovered: {r.stderr}")
    check(r.seconds < 20, f"took {r.seconds:.1f} s")
    check_layout(home, ctx.repo, r.stdout.strip(), NEEDED + ["model.onnx"])
    check(len(range_gets(ctx)) == 1, f"no resume after the stall: {range_gets(ctx)}")
    return f"stall detected and resumed in {r.seconds:.1f} s"


def t_corrupt(ctx):
    home = os.path.join(ctx.tmp, "corrupt")
    sha = hashlib.sha256(ctx.repo.files["model.onnx"]).hexdigest()
    ctx.server.corrupt = {"model.onnx"}
    msg = download(ctx, home, expect_ok=False)
    ctx.server.corrupt = set()
    check("SHA-256 mismatch" in msg and sha in msg and "model.onnx" in msg, f"message: {msg}")
    blobs = os.path.join(repo_dir(home, REPO), "blobs")
    check(not os.path.exists(os.path.join(blobs, sha)) and not os.path.exists(os.path.join(blobs, sha + ".incomplete")),
          "the corrupted body was kept")
    snap = download(ctx, home)
    check_layout(home, ctx.repo, snap, NEEDED + ["model.onnx"])
    return "rejected: ..." + msg[msg.index("SHA-256 mismatch"):][:60] + "..."


def t_token(ctx):
    secret = "hf_test_secret_token"
    srv = HubServer([ctx.repo], token=secret).start()
    try:
        home = os.path.join(ctx.tmp, "token")
        msg = download(ctx, home, expect_ok=False, HF_ENDPOINT=srv.url)
        check("401" in msg and "HF_TOKEN" in msg and srv.url in msg, f"no token: {msg}")
        msg = download(ctx, home, expect_ok=False, HF_ENDPOINT=srv.url, HF_TOKEN="hf_wrong")
        check("401" in msg and "rejected" in msg, f"wrong token: {msg}")
        check("hf_wrong" not in msg, "the token is echoed in the message")
        # the token file huggingface-cli login writes is used too
        os.makedirs(home, exist_ok=True)
        srv.clear_log()
        with open(os.path.join(home, "token"), "w") as f:
            f.write(secret + "\n")
        snap = download(ctx, home, HF_ENDPOINT=srv.url)
        check_layout(home, ctx.repo, snap, NEEDED + ["model.onnx"])
        hub_reqs = [e for e in srv.requests() if not e[1].startswith("/cdn/")]
        check(all(e[2].get("authorization") == f"Bearer {secret}" for e in hub_reqs), "a request without the token")
        shutil.rmtree(home)
        snap = download(ctx, home, HF_ENDPOINT=srv.url, HF_TOKEN=secret)
        check_layout(home, ctx.repo, snap, NEEDED + ["model.onnx"])
    finally:
        srv.stop()
    return "401 without / with a wrong token, success with HF_TOKEN and with $HF_HOME/token"


def t_notfound(ctx):
    home = os.path.join(ctx.tmp, "notfound")
    msg = download(ctx, home, repo="test-org/no-such-model", expect_ok=False)
    check("404" in msg and f"{ctx.server.url}/api/models/test-org/no-such-model/revision/main" in msg
          and "Repository not found" in msg, f"unknown repo: {msg}")
    msg = download(ctx, home, repo=f"{REPO}@no-such-branch", expect_ok=False)
    check("404" in msg and "no-such-branch" in msg, f"unknown revision: {msg}")
    msg = download(ctx, home, extra_args=["--onnx-file", "onnx/nope.onnx"], expect_ok=False)
    check("onnx/nope.onnx" in msg and "onnx/model_fp16.onnx" in msg, f"unknown --onnx-file: {msg}")
    msg = download(ctx, home, repo="not a repo", expect_ok=False)
    check("repo id" in msg, f"bad repo id: {msg}")
    check(not os.path.exists(repo_dir(home, "test-org/no-such-model")) or
          not os.listdir(os.path.join(repo_dir(home, "test-org/no-such-model"))), "a 404 left files")
    return "404 for repo, revision; missing --onnx-file lists the repo's ONNX files"


def t_one_onnx(ctx):
    home = os.path.join(ctx.tmp, "ext")
    ext = ctx.ext
    ctx.server.clear_log()
    snap = download(ctx, home, repo=EXT_REPO)
    check_layout(home, ext, snap, NEEDED + ["onnx/model.onnx", "onnx/model.onnx_data"])
    onnx_reqs = sorted({e[1].rsplit("/", 2)[-2] + "/" + e[1].rsplit("/", 1)[-1]
                        for e in ctx.server.requests(contains="/resolve/") if "/onnx/" in e[1]})
    check(onnx_reqs == ["onnx/model.onnx", "onnx/model.onnx_data"], f"fetched {onnx_reqs}")
    r = kiln(ctx, ["info", os.path.join(snap, "onnx", "model.onnx")], os.environ.copy())
    check(r.returncode == 0, f"kiln info with external data through the cache failed: {r.stderr}")
    ctx.server.clear_log()
    snap2 = download(ctx, home, repo=EXT_REPO, extra_args=["--onnx-file", "onnx/model_O4.onnx"])
    check(snap2 == snap, "another folder for the same commit")
    check_layout(home, ext, snap, NEEDED + ["onnx/model.onnx", "onnx/model.onnx_data", "onnx/model_O4.onnx",
                                            "onnx/model_O4.onnx_data"])
    got = sorted({e[1].split("/resolve/")[1].split("/", 1)[1] for e in ctx.server.requests("HEAD", "/resolve/")
                  if "/onnx/" in e[1]})
    check(got == ["onnx/model_O4.onnx", "onnx/model_O4.onnx_data"], f"second run fetched {got}")
    r = kiln(ctx, ["info", os.path.join(snap, "onnx", "model_O4.onnx")], os.environ.copy())
    check(r.returncode == 0, f"kiln info on model_O4 failed: {r.stderr}")
    check(download(ctx, home, repo=EXT_REPO, extra_args=["--onnx-file", "onnx/model_O4.onnx"], HF_HUB_OFFLINE="1") == snap,
          "offline with --onnx-file")
    return "root model.onnx only; onnx/model.onnx + .onnx_data only; --onnx-file adds its own data"


def t_progress(ctx):
    home = os.path.join(ctx.tmp, "progress")
    master, slave = pty.openpty()
    p = subprocess.Popen([ctx.kiln, "download", REPO], env=env_for(ctx, home), stdout=subprocess.PIPE,
                         stderr=slave, text=False)
    os.close(slave)
    err = b""
    while True:
        r, _, _ = select.select([master], [], [], 30)
        if not r:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        err += chunk
    out, _ = p.communicate(timeout=60)
    os.close(master)
    check(p.returncode == 0, f"failed: {err!r}")
    check(out.decode().strip().endswith(ctx.repo.commit), f"stdout {out!r}")
    text = err.decode(errors="replace")
    check("MB/s" in text and "model.onnx" in text, f"no progress on a terminal: {text!r}")
    return "progress shown on a terminal"


def plant(path, target):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(target, path)


def tree(folder):
    """{relative path: bytes} of everything under folder, to show it was not touched."""
    out = {}
    for root, dirs, names in os.walk(folder):
        for n in dirs + names:
            p = os.path.join(root, n)
            out[os.path.relpath(p, folder)] = None if os.path.isdir(p) else open(p, "rb").read()
    return out


def t_symlinks(ctx):
    sha = hashlib.sha256(ctx.repo.files["model.onnx"]).hexdigest()
    cases = [
        ("incomplete", lambda rd: os.path.join(rd, "blobs", sha + ".incomplete"), "file"),
        ("snapshot", lambda rd: os.path.join(rd, "snapshots", ctx.repo.commit), "dir"),
        ("blobs", lambda rd: os.path.join(rd, "blobs"), "dir"),
        ("refs", lambda rd: os.path.join(rd, "refs"), "dir"),
        ("locks", lambda rd: os.path.join(os.path.dirname(rd), ".locks", os.path.basename(rd)), "dir"),
    ]
    for name, where, kind in cases:
        home = os.path.join(ctx.tmp, "symlink-" + name)
        victim = os.path.join(ctx.tmp, "victim-" + name)
        if kind == "file":
            with open(victim, "wb") as f:
                f.write(b"precious bytes\n")
        else:
            os.makedirs(victim)
            with open(os.path.join(victim, "config.json"), "wb") as f:
                f.write(b"precious bytes\n")
        before = open(victim, "rb").read() if kind == "file" else tree(victim)
        plant(where(repo_dir(home, REPO)), victim)
        msg = download(ctx, home, expect_ok=False)
        check("symbolic link" in msg, f"{name}: a planted link was not refused: {msg}")
        after = open(victim, "rb").read() if kind == "file" else tree(victim)
        check(after == before, f"{name}: the link's target was modified: {before} -> {after}")
    # a snapshot folder reached through a link is not used from the cache either
    home = os.path.join(ctx.tmp, "symlink-cached")
    victim = os.path.join(ctx.tmp, "victim-cached")
    shutil.copytree(download(ctx, os.path.join(ctx.tmp, "symlink-src")), victim, symlinks=False)
    rd = repo_dir(home, REPO)
    os.makedirs(os.path.join(rd, "refs"))
    with open(os.path.join(rd, "refs", "main"), "w") as f:
        f.write(ctx.repo.commit)
    plant(os.path.join(rd, "snapshots", ctx.repo.commit), victim)
    msg = download(ctx, home, expect_ok=False, HF_HUB_OFFLINE="1")
    check("symbolic link" in msg, f"a linked snapshot was used: {msg}")
    return "refused at " + ", ".join(c[0] for c in cases) + ", cached snapshot; targets untouched"


def hostile_run(ctx, home, **env):
    r = kiln(ctx, ["download", REPO], env_for(ctx, home, **env), timeout=90)
    check(r.returncode == 1 and "Traceback" not in r.stderr, f"exit {r.returncode}: {r.stderr}")
    return r


def t_hostile(ctx):
    size = len(ctx.repo.files["model.onnx"])
    sha = hashlib.sha256(ctx.repo.files["model.onnx"]).hexdigest()
    notes = []
    # more bytes than HEAD announced: cut off at the announced size, nothing kept
    home = os.path.join(ctx.tmp, "endless")
    ctx.server.endless, ctx.server.sent = {"model.onnx"}, {}
    r = hostile_run(ctx, home)
    ctx.server.endless = set()
    check("more than the %d bytes" % size in r.stderr, f"endless body: {r.stderr}")
    blobs = os.path.join(repo_dir(home, REPO), "blobs")
    check(not os.path.exists(os.path.join(blobs, sha + ".incomplete")) and not os.path.exists(os.path.join(blobs, sha)),
          "the oversized body was kept")
    check(r.seconds < 20, f"endless body took {r.seconds:.1f} s")
    notes.append(f"endless body stopped in {r.seconds:.1f} s")
    # a 500 whose body never ends: a bounded read of it, the usual retries, then the error
    home = os.path.join(ctx.tmp, "error-endless")
    ctx.server.error_endless, ctx.server.sent = {"model.onnx"}, {}
    r = hostile_run(ctx, home)
    ctx.server.error_endless = set()
    check("HTTP 500" in r.stderr, f"endless 500: {r.stderr}")
    check(r.seconds < 20, f"endless 500 took {r.seconds:.1f} s")
    check(len(r.stderr) < 4096, f"the error body was echoed at length ({len(r.stderr)} chars)")
    notes.append(f"endless 500 failed in {r.seconds:.1f} s")
    # 2 bytes/s: below the low-speed limit, fails after HF_HUB_DOWNLOAD_TIMEOUT per try
    home = os.path.join(ctx.tmp, "drip")
    ctx.server.drip, ctx.server.sent = {"model.onnx": 2}, {}
    r = hostile_run(ctx, home, HF_HUB_DOWNLOAD_TIMEOUT="2")
    ctx.server.drip = {}
    check("model.onnx" in r.stderr or "/cdn/" in r.stderr, f"drip: {r.stderr}")
    check(r.seconds < 30, f"a 2 bytes/s body took {r.seconds:.1f} s")
    check(ctx.server.sent.get("drip:model.onnx", 0) < 1000, f"drip: {ctx.server.sent}")
    notes.append(f"2 B/s drip failed in {r.seconds:.1f} s")
    # fast enough for the low-speed limit but slower than the deadline
    home = os.path.join(ctx.tmp, "deadline")
    ctx.server.drip, ctx.server.sent = {"model.onnx": 8192}, {}
    r = hostile_run(ctx, home, KILN_HUB_DEADLINE="3")
    ctx.server.drip = {}
    check("deadline" in r.stderr and "KILN_HUB_DEADLINE" in r.stderr, f"deadline: {r.stderr}")
    check(r.seconds < 10, f"a 3 s deadline took {r.seconds:.1f} s")
    notes.append(f"3 s deadline held ({r.seconds:.1f} s)")
    # and the same cache then downloads normally
    snap = download(ctx, home)
    check_layout(home, ctx.repo, snap, NEEDED + ["model.onnx"])
    return "; ".join(notes)


TESTS = [("layout", t_layout), ("offline", t_offline), ("resume", t_resume), ("stall", t_stall),
         ("corrupt", t_corrupt), ("token", t_token), ("notfound", t_notfound), ("one-onnx", t_one_onnx),
         ("progress", t_progress), ("symlinks", t_symlinks), ("hostile", t_hostile)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--gen", required=True, help="tools/gen/gen_bert.py")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    ap.add_argument("--only", help="comma-separated test names")
    a = ap.parse_args()
    ctx = Ctx()
    ctx.kiln = os.path.abspath(a.kiln)
    ctx.tmp = tempfile.mkdtemp(prefix="kiln_hub_")
    ctx.repo, ctx.ext = build_repos(os.path.abspath(a.gen), os.path.join(ctx.tmp, "repos"))
    ctx.server = HubServer([ctx.repo, ctx.ext]).start()
    print(f"hub at {ctx.server.url}; {REPO} commit {ctx.repo.commit}, model.onnx {len(ctx.repo.files['model.onnx'])} bytes")
    failed = 0
    only = set(a.only.split(",")) if a.only else None
    for name, fn in TESTS:
        if only and name not in only:
            continue
        t = time.time()
        try:
            note = fn(ctx)
            print(f"PASS {name:9s} {time.time() - t:5.1f}s  {note or ''}")
        except Exception as e:   # noqa: BLE001
            failed += 1
            print(f"FAIL {name:9s} {time.time() - t:5.1f}s  {e}")
            if not isinstance(e, AssertionError):
                traceback.print_exc()
        finally:
            ctx.server.cut, ctx.server.stall, ctx.server.corrupt = {}, {}, set()
            ctx.server.endless, ctx.server.error_endless, ctx.server.drip = set(), set(), {}
    ctx.server.stop()
    if a.keep:
        print(f"kept {ctx.tmp}")
    else:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    print(f"{len(TESTS) - failed if not only else len(only) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
