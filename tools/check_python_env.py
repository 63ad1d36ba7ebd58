#!/usr/bin/env python3
"""Holds a Python environment to its lock (by default tests/requirements.lock), before any test runs.

Four checks, each naming the package at fault:
  0. the lock is as tools/lock_python.sh wrote it (its body matches the digest in its header), so
     a version changed by hand, without the hashes that go with it, is refused before anything
     is installed; with --lock-only this is all that runs;
  1. every direct pin of tests/requirements.in is the version the lock has (a hand edit of one
     file and not the other, or a lock not regenerated after an upgrade);
  2. every package the lock lists for this Python and platform is installed at exactly the
     locked version;
  3. nothing else is installed (pip itself, the installer, excepted), but for what a venv reads
     from a shared base venv (a .pth file naming that venv's site-packages, as tools/install_deps.sh
     gives build/venv-optimum): the base's packages the lock does not list are not this venv's.
With --not-in BASE_LOCK --write-subset FILE it writes the entries of the lock (pins and hashes)
that BASE_LOCK does not pin at the same version, the ones a venv on that base must install itself.
Run with the environment's own interpreter: build/venv/bin/python tools/check_python_env.py.
With --all BUILD it runs itself in each project venv against that venv's lock: BUILD/venv with
tests/requirements.lock and BUILD/venv-optimum with tests/requirements-optimum.lock (the second
environment, for Optimum's exporter, which needs transformers 4); a missing venv is a failure.
Standard library only (packaging's marker parser is taken from the environment or from pip).
"""
import argparse
import hashlib
import importlib.metadata as md
import os
import re
import subprocess
import sys

try:
    from packaging.markers import Marker
except ImportError:  # a broken venv still has pip
    from pip._vendor.packaging.markers import Marker


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path):
    """name -> [(version, marker or None)] from a requirements file's 'name==version [; marker]' lines."""
    pins = {}
    for line in open(path):
        line = line.split("#")[0].rstrip().rstrip("\\").strip()
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)\s*(?:;\s*(.+))?$", line)
        if m:
            pins.setdefault(norm(m.group(1)), []).append((m.group(2), m.group(3)))
    return pins


def lock_edited(path):
    """None if the lock's body matches its header's digest, else a message."""
    text = open(path, "rb").read().decode()
    m = re.search(r"^# body-sha256: ([0-9a-f]{64})\n", text, re.M)
    if not m:
        return f"{path} has no '# body-sha256:' line: it was not written by tools/lock_python.sh"
    # the header is the leading '# ' lines; the body is what uv wrote
    header_end = 0
    lines = text.splitlines(keepends=True)
    while header_end < len(lines) and lines[header_end].startswith("# "):
        header_end += 1
    body = "".join(lines[header_end:])
    if hashlib.sha256(body.encode()).hexdigest() != m.group(1):
        return f"{path} was edited by hand (its body no longer matches its digest)"
    return None


# the project venvs: folder under the build dir, lock, direct pins
VENVS = [("venv", "tests/requirements.lock", "tests/requirements.in"),
         ("venv-optimum", "tests/requirements-optimum.lock", "tests/requirements-optimum.in")]


def lock_entries(path):
    """[(name, version, text)] of a lock: each entry's pin line with its hash and comment lines."""
    entries, cur = [], None
    for line in open(path):
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if m:
            cur = [norm(m.group(1)), m.group(2), line]
            entries.append(cur)
        elif cur and line.startswith((" ", "\t")):
            cur[2] += line
        else:
            cur = None
    return entries


def write_subset(lock, base_lock, out):
    base = {(n, v) for n, v, _ in lock_entries(base_lock)}
    own = [t for n, v, t in lock_entries(lock) if (n, v) not in base]
    with open(out, "w") as f:
        f.write(f"# the entries of {lock} that {base_lock} does not pin at the same version\n")
        f.write("".join(own))
    return 0


def shared_bases():
    """The site-packages folders this environment reads through a .pth file (a shared base venv)."""
    import site
    dirs = []
    for sp in site.getsitepackages():
        if not os.path.isdir(sp):
            continue
        for f in sorted(os.listdir(sp)):
            if f.endswith(".pth") and f.startswith("zz_kiln_shared"):
                dirs += [os.path.realpath(line.strip()) for line in open(os.path.join(sp, f)) if line.strip()]
    return dirs


def check_all(build):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bad = 0
    for folder, lock, direct in VENVS:
        py = os.path.join(build, folder, "bin", "python")
        if not os.path.exists(py):
            print(f"{py}: missing (tools/install_deps.sh makes it from {lock})", file=sys.stderr)
            bad += 1
            continue
        bad += subprocess.run([py, os.path.abspath(__file__), "--lock", os.path.join(root, lock), "--direct",
                               os.path.join(root, direct)]).returncode != 0
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lock", default="tests/requirements.lock")
    ap.add_argument("--direct", default="tests/requirements.in")
    ap.add_argument("--lock-only", action="store_true", help="only check the lock file itself")
    ap.add_argument("--all", metavar="BUILD", help="check every project venv under BUILD against its own lock")
    ap.add_argument("--not-in", metavar="BASE_LOCK", help="with --write-subset: the lock of the shared base")
    ap.add_argument("--write-subset", metavar="FILE", help="write the lock's entries BASE_LOCK lacks to FILE")
    a = ap.parse_args()
    if a.all:
        return check_all(a.all)
    if a.write_subset:
        return write_subset(a.lock, a.not_in, a.write_subset)
    lock, direct = read_pins(a.lock), read_pins(a.direct)
    problems = []
    edited = lock_edited(a.lock)
    if edited:
        # name the pins that moved, against what the environment holds (made from the last good lock)
        have = {norm(d.metadata["Name"]): d.version for d in md.distributions()}
        moved = [f"{n} {have[n]} -> {vs[0][0]}" for n, vs in sorted(lock.items())
                 if n in have and have[n] not in {v for v, _ in vs}]
        print(f"{edited}{': ' + ', '.join(moved) if moved else ''}.\n"
              "Pins change only through tests/requirements.in and tools/lock_python.sh, which writes "
              "the hashes that go with them; undo the edit (git checkout tests/requirements.lock).",
              file=sys.stderr)
        return 1
    if a.lock_only:
        return 0
    for name, vs in sorted(direct.items()):
        locked = {v for v, _ in lock.get(name, [])}
        if vs[0][0] not in locked:
            problems.append(f"{name}: {a.direct} pins {vs[0][0]}, {a.lock} has "
                            f"{', '.join(sorted(locked)) or 'nothing'} (rerun tools/lock_python.sh)")
    want = {}
    for name, vs in lock.items():
        for v, marker in vs:
            if marker is None or Marker(marker).evaluate():
                want[name] = v
    # the first of a name on sys.path is the one imported (a venv's own before its shared base's)
    have, from_base = {}, set()
    bases = shared_bases()
    for d in md.distributions():
        name = norm(d.metadata["Name"])
        if name in have:
            continue
        have[name] = d.version
        where = os.path.realpath(str(d.locate_file("")))
        if any(where == b or where.startswith(b + os.sep) for b in bases):
            from_base.add(name)
    for name, v in sorted(want.items()):
        if name not in have:
            problems.append(f"{name}: {a.lock} pins {v}, not installed")
        elif have[name] != v:
            problems.append(f"{name}: installed {have[name]}, {a.lock} pins {v}")
    for name in sorted(set(have) - set(want) - {"pip"} - from_base):
        problems.append(f"{name}: installed {have[name]}, not in {a.lock}")
    if problems:
        print(f"Python packages of {sys.prefix} differ from {a.lock}:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        print("Fix: undo the change, or delete the venv to have tools/install_deps.sh make it anew "
              "from the lock; to upgrade, edit tests/requirements.in and run tools/lock_python.sh.",
              file=sys.stderr)
        return 1
    print(f"python env: {len(want)} packages exactly as {a.lock} ({sys.prefix})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
