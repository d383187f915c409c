#!/usr/bin/env python3
"""Runs the commands of a markdown guide (docs/guide.md) so that it cannot rot.

    scripts/check_guide.py docs/guide.md BIN_DIR [--list] [--only LINE]

Every ```sh block of the guide must be preceded by one of these markers (blank lines may
sit between the marker and the block):

    <!-- check -->             run it; it must exit 0
    <!-- check exit=N -->      run it; it must exit N (the error messages users see)
    <!-- not checked: why -->  show it only (a cluster, Slurm, ssh: what cannot run here)

A ```text block right after a checked block (only blank lines between) is what the block
must print: each of its non-empty lines must appear in some line of the output (stdout
and stderr together), so a pasted message cannot drift from the real one.

The checked blocks run in order, each with `bash -eo pipefail`, in one scratch directory
(a later block may use what an earlier one wrote, as a reader following the guide would),
with BIN_DIR first on PATH and $PORT set to a free TCP port of 127.0.0.1. Each block has
10 minutes; a block that runs past that is killed with its whole process group.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

MARKER = re.compile(r"^<!--\s*(check(?:\s+exit=(\d+))?|not checked:.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")
BLOCK_TIMEOUT_S = 600


class Block:
    def __init__(self, line, code, checked, exit_code, expected):
        self.line = line  # 1-based line of the ```sh fence
        self.code = code
        self.checked = checked
        self.exit_code = exit_code
        self.expected = expected  # lines the output must contain


def parse(path):
    """The guide's ```sh blocks; errors for a block without a marker."""
    lines = open(path, encoding="utf-8").read().split("\n")
    blocks, errors = [], []
    marker = None  # (checked, exit code) of the last marker not yet used
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if m:
            marker = (m.group(1).startswith("check"), int(m.group(2) or 0))
            i += 1
            continue
        f = FENCE.match(lines[i])
        if not f or not f.group(1):
            if lines[i].strip():
                marker = None  # a marker applies only to the block right after it
            i += 1
            continue
        start, lang = i, f.group(1)
        i += 1
        body = []
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        if lang != "sh":
            marker = None
            continue
        if marker is None:
            errors.append(f"{path}:{start + 1}: a ```sh block needs <!-- check -->, "
                          "<!-- check exit=N --> or <!-- not checked: why --> before it")
            continue
        checked, exit_code = marker
        marker = None
        expected = []
        j = i
        while j < len(lines) and not lines[j].strip():
            j += 1
        if checked and j < len(lines) and lines[j].strip() == "```text":
            j += 1
            while j < len(lines) and not FENCE.match(lines[j]):
                if lines[j].strip():
                    expected.append(lines[j].strip())
                j += 1
        blocks.append(Block(start + 1, "\n".join(body), checked, exit_code, expected))
    return blocks, errors


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(block, cwd, env):
    """(exit code or None on timeout, output)."""
    proc = subprocess.Popen(["bash", "-eo", "pipefail", "-c", block.code], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=BLOCK_TIMEOUT_S)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the block's own process group
        out, _ = proc.communicate()
        code = None
    finally:
        # Whatever the block left running in its group (a job it started with &).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return code, out.decode("utf-8", "replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("guide")
    ap.add_argument("bin_dir")
    ap.add_argument("--list", action="store_true", help="print the checked blocks, run none")
    ap.add_argument("--only", type=int, default=0, help="run only the block at this line")
    args = ap.parse_args()

    blocks, errors = parse(args.guide)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        return 1
    checked = [b for b in blocks if b.checked and (not args.only or b.line == args.only)]
    if args.list:
        for b in checked:
            print(f"{args.guide}:{b.line}: exit {b.exit_code}: {b.code.splitlines()[0]}")
        return 0
    if not checked:
        print(f"{args.guide}: no checked block", file=sys.stderr)
        return 1

    env = dict(os.environ)
    env["PATH"] = os.path.abspath(args.bin_dir) + os.pathsep + env.get("PATH", "")
    for k in [k for k in env if k.startswith("PSZERO_")]:
        del env[k]  # the guide's reader starts from a clean shell
    failures = 0
    with tempfile.TemporaryDirectory(prefix="pszero-guide-") as scratch:
        for b in checked:
            env["PORT"] = str(free_port())
            began = time.monotonic()
            code, out = run(b, scratch, env)
            took = time.monotonic() - began
            problems = []
            if code is None:
                problems.append(f"ran past {BLOCK_TIMEOUT_S} s")
            elif code != b.exit_code:
                problems.append(f"exit code {code}, the guide says {b.exit_code}")
            out_lines = out.split("\n")
            for want in b.expected:
                if not any(want in line for line in out_lines):
                    problems.append(f"no output line contains: {want}")
            where = f"{args.guide}:{b.line}"
            if not problems:
                print(f"ok   {where} ({took:.1f} s): {b.code.splitlines()[0]}")
                continue
            failures += 1
            print(f"FAIL {where} ({took:.1f} s):", file=sys.stderr)
            for line in b.code.splitlines():
                print(f"  $ {line}", file=sys.stderr)
            for p in problems:
                print(f"  {p}", file=sys.stderr)
            print("  last lines of its output:", file=sys.stderr)
            for line in out.rstrip("\n").split("\n")[-30:]:
                print(f"  | {line}", file=sys.stderr)
    print(f"{len(checked) - failures} of {len(checked)} checked blocks of {args.guide} passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
