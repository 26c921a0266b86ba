"""Benchmark of `loomgit validate` on a generated repository (see bench/generate.py).

Prints, against the foundation targets:
  * end-to-end `loomgit validate --rev HEAD` time and distinct workflow files per second
  * the time the C YAML loader alone takes to parse the same distinct files, and the ratio
  * peak resident memory of the validate run
  * the same validate on a commit that breaks every workflow in development (its
    variables removed), each problem with its line
  * validate again, reusing what the runs before kept in .git/loomgit/: of the same
    commit, and of a commit that edits one workflow
  * `loomgit --help` start-up time

    python bench/bench_validate.py [--workflows 10000] [--history 300] [--repo DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from generate import prepare
from ruamel.yaml import YAML

# Run loomgit as an installed program runs: with Python's bytecode cache (some sandboxes
# set PYTHONDONTWRITEBYTECODE, which recompiles every module on every start).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _run(args: list[str], cwd: Path) -> tuple[float, int, int]:
    """Wall seconds, peak RSS in KiB, exit code of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    return elapsed, usage.ru_maxrss, os.waitstatus_to_exitcode(status)


def _distinct_workflow_blobs(repo: Path) -> list[bytes]:
    listing = subprocess.run(
        ["git", "ls-tree", "-r", "HEAD", "--", "environments/"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shas = sorted({line.split()[2] for line in listing.splitlines() if "/workflows/" in line})
    out = subprocess.run(
        ["git", "cat-file", "--batch"],
        cwd=repo,
        capture_output=True,
        input=("\n".join(shas) + "\n").encode(),
        check=True,
    ).stdout
    blobs, pos = [], 0
    for _ in shas:
        end = out.index(b"\n", pos)
        size = int(out[pos:end].split()[2])
        blobs.append(out[end + 1 : end + 1 + size])
        pos = end + 2 + size
    return blobs


def _broken_run(repo: Path, loomgit: list[str]) -> tuple[float, int, int]:
    """Seconds, problems reported and exit code of `validate --rev HEAD` on a clone with
    development's variables emptied: every workflow there that uses one fails."""
    with tempfile.TemporaryDirectory(prefix="loomgit-bench-broken-") as tmp:
        clone = Path(tmp) / "broken"
        subprocess.run(["git", "clone", "-q", "--shared", str(repo), str(clone)], check=True)
        variables = clone / "environments/development/variables.yaml"
        variables.write_text("apiVersion: loomgit/v1\nkind: Variables\nvariables: {}\n")
        identity = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
        commit = ["git", *identity, "-C", str(clone), "commit", "-qam", "no variables"]
        subprocess.run(commit, check=True)
        start = time.perf_counter()
        proc = subprocess.run(
            [*loomgit, "validate", "--rev", "HEAD"], cwd=clone, capture_output=True, env=ENV
        )
        elapsed = time.perf_counter() - start
        problems = sum(1 for line in proc.stdout.splitlines() if b": error[" in line)
        return elapsed, problems, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=300)
    parser.add_argument("--repo", type=Path, help="reuse a generated repository (adds a commit)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    repo, scratch = prepare(args.repo, args.workflows, args.history)
    loomgit = [sys.executable, "-m", "loomgit"]
    try:
        blobs = _distinct_workflow_blobs(repo)
        _run([*loomgit, "--help"], repo)  # warm the bytecode cache once
        shutil.rmtree(repo / ".git" / "loomgit", ignore_errors=True)
        fresh = [*loomgit, "validate", "--rev", "HEAD", "--no-cache"]  # parses every file
        runs = [_run(fresh, repo) for _ in range(args.runs)]
        codes = {code for _, _, code in runs}
        if codes != {0}:
            sys.exit(f"validate exited with {codes}: the generated repository should be valid")
        best = min(r[0] for r in runs)
        peak = max(r[1] for r in runs) / 1024

        loader = YAML(typ="safe")
        texts = [b.decode() for b in blobs]
        timings = []
        for _ in range(args.runs):
            t = time.perf_counter()
            for text in texts:
                loader.load(text)
            timings.append(time.perf_counter() - t)
        yaml_only = min(timings)

        reusing = [*loomgit, "validate", "--rev", "HEAD"]
        _run(reusing, repo)  # keeps what it found
        again = min(_run(reusing, repo)[0] for _ in range(args.runs))
        edited = repo / "environments/development/workflows/wf-00007.yaml"
        edited.write_bytes(edited.read_bytes().replace(b"\n  steps:", b"\n  # edited\n  steps:"))
        identity = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
        subprocess.run(["git", *identity, "commit", "-qam", "edit wf-00007"], cwd=repo, check=True)
        one_edit, _, code = _run(reusing, repo)
        if code != 0:
            sys.exit(f"validate after one edit exited {code}")

        broken, problems, code = _broken_run(repo, loomgit)
        if code != 1 or not problems:
            sys.exit(f"validate of the broken commit exited {code} with {problems} problems")

        helps = []
        for _ in range(10):
            elapsed, _, _ = _run([*loomgit, "--help"], repo)
            helps.append(elapsed)
        console = shutil.which("loomgit")
        script_helps = [_run([console, "--help"], repo)[0] for _ in range(10)] if console else []

        n = len(blobs)
        print(f"distinct workflow files:              {n}")
        print(
            f"validate --rev HEAD --no-cache (best of {args.runs}): {best:.2f} s "
            f"= {n / best:,.0f} files/s   (target >= 1,000/s)"
        )
        print(
            f"C YAML loader alone, same files:      {yaml_only:.2f} s "
            f"= {n / yaml_only:,.0f} files/s"
        )
        print(f"ratio validate / loader:              {best / yaml_only:.2f}x   (target <= 1.5x)")
        print(f"peak memory of validate:              {peak:.0f} MiB   (target <= 300 MiB)")
        print(
            f"validate --rev HEAD again, reusing what was kept (best of {args.runs}): {again:.2f} s"
        )
        print(f"validate after a commit editing one workflow, reusing: {one_edit:.2f} s")
        print(f"validate, development's variables gone: {broken:.2f} s for {problems:,} problems")
        print(
            f"python -m loomgit --help (median):    {statistics.median(helps) * 1000:.0f} ms"
            f"   (target <= 300 ms)"
        )
        if script_helps:
            print(
                f"loomgit --help (median):              "
                f"{statistics.median(script_helps) * 1000:.0f} ms"
            )
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
