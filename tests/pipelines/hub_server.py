#!/usr/bin/env python3
"""A local stand-in for the Hugging Face hub, enough for `kiln download`: it serves model folders
the way huggingface.co does (standard library only).

  GET  /api/models/{org}/{name}/revision/{rev}   {"id", "sha", "siblings": [{"rfilename": ...}]}
  HEAD/GET /{org}/{name}/resolve/{rev}/{path}    small files: 200 with ETag = the git blob SHA-1,
                                                 X-Repo-Commit, Content-Length;
                                                 LFS files: 302 to /cdn/... (as the hub redirects to
                                                 its CDN) with X-Linked-Etag = SHA-256 and X-Linked-Size
  HEAD/GET /cdn/{sha256}                         the LFS content, with Range requests (206)

Errors as the hub answers them: 404 with X-Error-Code RepoNotFound / RevisionNotFound /
EntryNotFound and a JSON {"error": ...} body; 401 when a token is demanded and missing or wrong.
Faults for tests: cut a body half way (Content-Length announces all of it), stall, or serve a
corrupted LFS body; hostile servers: a GET body that never ends after HEAD announced the real size,
a 500 whose body never ends, a body that drips at a set rate. Every hostile body stops by itself
(after HOSTILE_LIMIT_S seconds or HOSTILE_LIMIT_BYTES bytes, or when the client hangs up) and counts
what it sent in `sent["MODE:PATH"]`. Every request is logged (method, path, Range, Authorization).

Run alone: hub_server.py FOLDER [--repo org/name] [--port N] [--token T] serves FOLDER as one repo.
"""
import argparse
import hashlib
import json
import os
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_SUFFIXES = (".onnx", ".onnx_data", ".data", "_data", ".bin", ".safetensors")
HOSTILE_LIMIT_S = 60
HOSTILE_LIMIT_BYTES = 1 << 30


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    """One repo at one commit: {path: bytes}; LFS files are those with a binary suffix or > 10 kB."""

    def __init__(self, repo_id, files, commit=None, branches=("main",)):
        self.id = repo_id
        self.files = dict(files)
        h = hashlib.sha1(repo_id.encode())
        for p in sorted(self.files):
            h.update(p.encode() + hashlib.sha1(self.files[p]).digest())
        self.commit = commit or h.hexdigest()
        self.refs = {b: self.commit for b in branches}

    def is_lfs(self, path):
        return path.endswith(LFS_SUFFIXES) or len(self.files[path]) > 10_000


class HubServer:
    def __init__(self, repos=(), token=None, host="127.0.0.1", port=0):
        self.repos = {r.id: r for r in repos}
        self.token = token              # demand "Authorization: Bearer <token>" when set
        self.log = []                   # (method, path, headers dict)
        self.lock = threading.Lock()
        self.cut = {}                   # path -> how many more transfers to cut half way
        self.stall = {}                 # path -> how many more transfers to stall half way
        self.corrupt = set()            # paths whose LFS body is served with a flipped byte
        self.endless = set()            # paths whose GET body goes on past the announced size
        self.error_endless = set()      # paths whose GET is a 500 with a body that never ends
        self.drip = {}                  # path -> bytes per second the GET body is sent at
        self.sent = {}                  # path -> body bytes sent by the hostile modes
        self.stop_event = threading.Event()
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = None

    # -- lifecycle
    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- test helpers
    def requests(self, method=None, contains=None):
        with self.lock:
            return [e for e in self.log if (method is None or e[0] == method) and (contains is None or contains in e[1])]

    def clear_log(self):
        with self.lock:
            self.log.clear()

    def _take(self, table, path):
        with self.lock:
            n = table.get(path, 0)
            if n > 0:
                table[path] = n - 1
                return True
            return False

    def _lfs_by_sha(self, sha):
        for r in self.repos.values():
            for p, d in r.files.items():
                if r.is_lfs(p) and hashlib.sha256(d).hexdigest() == sha:
                    return p, d
        return None, None

    def _handler(self):
        hub = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _log(self):
                with hub.lock:
                    hub.log.append((self.command, urllib.parse.unquote(self.path), {k.lower(): v for k, v in self.headers.items()}))

            def _send(self, code, body=b"", headers=None, head=False):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head and body:
                    self.wfile.write(body)

            def _error(self, code, err_code, msg, head=False):
                body = json.dumps({"error": msg}).encode()
                self._send(code, body, {"Content-Type": "application/json", "X-Error-Code": err_code, "X-Error-Message": msg}, head)

            def _authorized(self, head):
                if not hub.token:
                    return True
                auth = self.headers.get("Authorization")
                if auth == f"Bearer {hub.token}":
                    return True
                msg = "Invalid credentials in Authorization header" if auth else "Access to this repo is restricted: a token is required"
                self._error(401, "RepoNotFound" if not auth else "InvalidCredentials", msg, head)
                return False

            def _hostile(self, tag, path, chunk, rate=None, data=None):
                """Writes chunk again and again (or data, chunk by chunk, once) until the client hangs
                up or a limit is reached; rate: bytes per second (None: as fast as the client reads)."""
                t0, n = time.time(), 0
                try:
                    while n < HOSTILE_LIMIT_BYTES and time.time() - t0 < HOSTILE_LIMIT_S and not hub.stop_event.is_set():
                        if data is not None:
                            chunk = data[n:n + len(chunk)]
                            if not chunk:
                                break
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        n += len(chunk)
                        with hub.lock:
                            # keyed by mode too: a handler of an earlier test may still be finishing
                            hub.sent[f"{tag}:{path}"] = hub.sent.get(f"{tag}:{path}", 0) + len(chunk)
                        if rate:
                            hub.stop_event.wait(len(chunk) / rate)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass
                self.close_connection = True

            def _body(self, data, path, head, extra=None):
                """Sends data with Range support and the configured faults."""
                if not head and path in hub.error_endless:
                    self.send_response(500)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    return self._hostile("error_endless", path, b"Internal Server Error " * 3000)
                if not head and path in hub.endless:
                    # the right bytes first, then more of them, with no length announced
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    try:
                        self.wfile.write(data)
                    except OSError:
                        return
                    return self._hostile("endless", path, data[:65536] or b"x")
                if not head and path in hub.drip:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    rate = hub.drip[path]
                    # the right bytes, slowly: what arrives is a valid start of the file
                    return self._hostile("drip", path, b"x" * max(1, min(len(data), rate // 4)), rate, data)
                headers = dict(extra or {})
                headers["Accept-Ranges"] = "bytes"
                start, code = 0, 200
                rng = self.headers.get("Range")
                if rng:
                    m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
                    if m:
                        start = int(m.group(1))
                        if start >= len(data):
                            headers["Content-Range"] = f"bytes */{len(data)}"
                            self._send(416, b"", headers, head)
                            return
                        code = 206
                        headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                part = data[start:]
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if head:
                    return
                if path in hub.corrupt:
                    b = bytearray(part)
                    b[len(b) // 2] ^= 0xFF
                    part = bytes(b)
                half = len(part) // 2
                if hub._take(hub.cut, path):
                    self.wfile.write(part[:half])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if hub._take(hub.stall, path):
                    self.wfile.write(part[:half])
                    self.wfile.flush()
                    hub.stop_event.wait(30)   # the client must give up first
                    self.close_connection = True
                    return
                self.wfile.write(part)

            def do_HEAD(self):
                self._route(head=True)

            def do_GET(self):
                self._route(head=False)

            def _route(self, head):
                self._log()
                path = urllib.parse.urlsplit(self.path).path
                m = re.fullmatch(r"/api/models/([^/]+)/([^/]+)/revision/([^/]+)", path)
                if m:
                    if not self._authorized(head):
                        return
                    repo_id = f"{m.group(1)}/{m.group(2)}"
                    rev = urllib.parse.unquote(m.group(3))
                    r = hub.repos.get(repo_id)
                    if not r:
                        return self._error(404, "RepoNotFound", f"Repository not found: {repo_id}", head)
                    commit = r.refs.get(rev, r.commit if rev == r.commit else None)
                    if not commit:
                        return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
                    body = json.dumps({"id": r.id, "modelId": r.id, "sha": commit, "private": bool(hub.token),
                                       "siblings": [{"rfilename": p} for p in sorted(r.files)]}).encode()
                    return self._send(200, body, {"Content-Type": "application/json"}, head)
                m = re.fullmatch(r"/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)", path)
                if m:
                    if not self._authorized(head):
                        return
                    repo_id = f"{m.group(1)}/{m.group(2)}"
                    rev, fpath = urllib.parse.unquote(m.group(3)), urllib.parse.unquote(m.group(4))
                    r = hub.repos.get(repo_id)
                    if not r:
                        return self._error(404, "RepoNotFound", f"Repository not found: {repo_id}", head)
                    commit = r.refs.get(rev, r.commit if rev == r.commit else None)
                    if not commit:
                        return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
                    if fpath not in r.files:
                        return self._error(404, "EntryNotFound", f"Entry not found: {fpath}", head)
                    data = r.files[fpath]
                    if r.is_lfs(fpath):
                        sha = hashlib.sha256(data).hexdigest()
                        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
                        body = b"Found. Redirecting"
                        return self._send(302, body, {
                            "Location": f"/cdn/{sha}?X-Amz-Signature=abc&path={urllib.parse.quote(fpath)}",
                            "ETag": f'"{git_blob_sha1(pointer)}"', "X-Linked-Etag": f'"{sha}"',
                            "X-Linked-Size": str(len(data)), "X-Repo-Commit": commit}, head)
                    return self._body(data, fpath, head, {"ETag": f'"{git_blob_sha1(data)}"', "X-Repo-Commit": commit})
                m = re.fullmatch(r"/cdn/([0-9a-f]{64})", path)
                if m:
                    fpath, data = hub._lfs_by_sha(m.group(1))
                    if data is None:
                        return self._send(404, b"NoSuchKey", {}, head)
                    return self._body(data, fpath, head, {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})
                self._send(404, b"Not Found", {}, head)

        return H


def folder_files(folder):
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            out[os.path.relpath(p, folder).replace(os.sep, "/")] = open(p, "rb").read()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--repo", default="test-org/test-model")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token")
    a = ap.parse_args()
    s = HubServer([Repo(a.repo, folder_files(a.folder))], token=a.token, port=a.port).start()
    print(f"HF_ENDPOINT={s.url}  repo {a.repo}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        s.stop()


if __name__ == "__main__":
    main()
