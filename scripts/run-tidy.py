#!/usr/bin/env python3
"""Run clang-tidy over translation units in parallel, with a cache of clean results.

Used by scripts/lint.sh:
  run-tidy.py --build-dir build --tidy clang-tidy-19 --jobs 2 [--cache DIR] [--analyzer shallow] FILE...

A file whose inputs have not changed since it last passed clean is not checked again. The cache key
is a SHA-256 over: the clang-tidy version, .clang-tidy, the analyzer mode, the compile command, and the contents of
every file the translation unit includes (listed by `clang++-NN -M` with the same flags, so headers
reached only under clang's macros count too). Only clean results are cached; findings are always
recomputed. Exit status: 0 if every file is clean, 1 otherwise.
"""
import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading

NOISE = re.compile(r"^(\d+ warnings?( and \d+ errors?)? generated\.|Suppressed \d+ warnings.*|"
                   r"Use -header-filter=.*|)$")


def compile_args(entry):
    if "arguments" in entry:
        return list(entry["arguments"])
    return shlex.split(entry["command"])


def deps_command(args, source, clangxx):
    """The compile command turned into `clang++ -M` (list every included file)."""
    out = [clangxx]
    skip = False
    for a in args[1:]:
        if skip:
            skip = False
            continue
        if a in ("-o", "-MF", "-MT", "-MQ"):
            skip = True
            continue
        if a in ("-c", "-MD", "-MMD") or a.startswith("-o"):
            continue
        out.append(a)
    return out + ["-M", "-MF", "-", "-Wno-unknown-warning-option"]


def cache_key(entry, source, clangxx, salt):
    args = compile_args(entry)
    h = hashlib.sha256(salt)
    h.update("\0".join(args).encode())
    try:
        r = subprocess.run(deps_command(args, source, clangxx), cwd=entry.get("directory", "."),
                           capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    deps = r.stdout.replace("\\\n", " ").split(":", 1)[-1].split()
    for d in sorted(set(deps)):
        p = os.path.join(entry.get("directory", "."), d)
        try:
            with open(p, "rb") as f:
                h.update(p.encode() + b"\0" + hashlib.sha256(f.read()).digest())
        except OSError:
            return None
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--tidy", required=True)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cache", default="")
    ap.add_argument("--config-file", default="")
    # The static analyzer (clang-analyzer-*) is most of the run: mirror_volume.cpp takes 112 s, 30 s
    # without it. "shallow" keeps it path-sensitive inside each function but inlines few callees
    # (41 s); "deep" is clang's default.
    ap.add_argument("--analyzer", choices=("deep", "shallow"), default="deep")
    ap.add_argument("files", nargs="+")
    o = ap.parse_args()

    db = {}
    with open(os.path.join(o.build_dir, "compile_commands.json")) as f:
        for e in json.load(f):
            db[os.path.normpath(os.path.join(e.get("directory", ""), e["file"]))] = e

    version = subprocess.run([o.tidy, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"-(\d+)$", os.path.basename(o.tidy))
    clangxx = shutil.which(f"clang++-{m.group(1)}") if m else None
    # Any recent clang lists a file's includes (-M) the same way; clang-tidy-22 comes without
    # clang++-22. The unversioned clang++ (14 on bookworm) cannot parse libstdc++-12's <ranges>.
    for v in (22, 21, 20, 19):
        clangxx = clangxx or shutil.which(f"clang++-{v}")
    clangxx = clangxx or shutil.which("clang++")
    config = b""
    if o.config_file and os.path.exists(o.config_file):
        with open(o.config_file, "rb") as f:
            config = f.read()
    salt = version.encode() + b"\0" + config + b"\0" + o.analyzer.encode() + b"\0"
    extra = []
    if o.analyzer == "shallow":
        extra = ["--extra-arg=-Xclang", "--extra-arg=-analyzer-config",
                 "--extra-arg=-Xclang", "--extra-arg=mode=shallow"]
    cache = o.cache if (o.cache and clangxx) else ""
    if cache:
        os.makedirs(cache, exist_ok=True)

    lock = threading.Lock()
    done = [0]
    results = {"clean": 0, "cached": 0, "findings": 0}

    def one(path):
        entry = db.get(path)
        key = cache_key(entry, path, clangxx, salt) if (cache and entry) else None
        if key and os.path.exists(os.path.join(cache, key)):
            with lock:
                done[0] += 1
                results["cached"] += 1
            return
        r = subprocess.run([o.tidy, "-p", o.build_dir, "--quiet", *extra, path], capture_output=True, text=True)
        lines = [l for l in (r.stdout + r.stderr).splitlines() if not NOISE.match(l)]
        with lock:
            done[0] += 1
            print(f"[{done[0]}/{len(o.files)}] {os.path.relpath(path)}"
                  f"{'' if r.returncode == 0 else ': FINDINGS'}", flush=True)
            if lines:
                print("\n".join(lines), flush=True)
            if r.returncode == 0:
                results["clean"] += 1
            else:
                results["findings"] += 1
        if r.returncode == 0 and key:
            with open(os.path.join(cache, key), "w") as f:
                f.write(path + "\n")

    # Largest files first: the longest checks (mirror_volume.cpp, about 90 s) start early instead
    # of running alone at the end while the other workers idle.
    def size(path):
        try:
            return os.path.getsize(path)
        except OSError:
            return 0
    with cf.ThreadPoolExecutor(max_workers=max(1, o.jobs)) as ex:
        list(ex.map(one, sorted(o.files, key=size, reverse=True)))
    print(f"run-tidy: {len(o.files)} files: {results['clean']} clean, {results['cached']} unchanged since "
          f"clean (cached), {results['findings']} with findings", flush=True)
    return 1 if results["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
