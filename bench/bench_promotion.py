"""Benchmark of promotion commands on a generated repository (see bench/generate.py).

Prints, against the promotion targets:
  * `loomgit promote ONE --to staging`, end to end (target <= 500 ms)
  * `loomgit status` (target <= 2 s)
  * `loomgit check-promotion` over a 20-commit range (target <= 2 s), with and without
    its final `validate` of HEAD, and with `--summary FILE` (the reviewers' Markdown);
    with validate: from scratch (`--no-cache`), then reusing what a `validate` of the
    range's base kept in .git/loomgit/ (as a run on the target branch leaves it)
  * `check-promotion --summary` of one `promote --all --to staging` (2,000 workflows),
    and `loomgit changes --format json` of it (every workflow, no limit)
  * shell completion: a TAB after `activate --env staging ` (8,000 workflow names)

    python bench/bench_promotion.py [--workflows 10000] [--history 3000] [--repo DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from generate import prepare, workflow

LOOMGIT = [sys.executable, "-m", "loomgit"]
# Run loomgit as an installed program runs: with Python's bytecode cache (some sandboxes
# set PYTHONDONTWRITEBYTECODE, which recompiles every module on every start).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _time(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, env=ENV)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args[2:])} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return elapsed


def _complete(line: str, repo: Path) -> tuple[float, int]:
    """Best of 5 of what a TAB after `line` costs (as bash asks), and how many values."""
    env = {**ENV, "_LOOMGIT_COMPLETE": "bash_complete", "COMP_WORDS": line}
    env["COMP_CWORD"] = str(len(line.split()))
    times, offered = [], 0
    for _ in range(5):
        start = time.perf_counter()
        proc = subprocess.run(LOOMGIT, cwd=repo, capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - start)
        offered = proc.stdout.count(b"plain,")
    return min(times), offered


def _head(repo: Path, *args: str) -> str:
    args = args or ("rev-parse", "HEAD")
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def _edit(repo: Path, i: int, revision: int) -> None:
    path = repo / f"environments/development/workflows/wf-{i:05d}.yaml"
    path.write_bytes(workflow(i, revision))
    subprocess.run(["git", "commit", "-qam", f"edit wf-{i:05d}"], cwd=repo, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=3_000)
    parser.add_argument("--repo", type=Path, help="reuse a generated repository (modified!)")
    args = parser.parse_args()
    repo, scratch = prepare(args.repo, args.workflows, args.history)
    for key, value in (("user.name", "Bench"), ("user.email", "bench@example.com")):
        subprocess.run(["git", "config", key, value], cwd=repo, check=True)
    try:
        _time([*LOOMGIT, "--help"], repo)  # warm the bytecode cache once
        promotes = []
        for n in range(5):
            _edit(repo, n, 1000 + n)
            promotes.append(
                _time(
                    [*LOOMGIT, "promote", f"wf-{n:05d}", "--to", "staging", "--notes", "bench"],
                    repo,
                )
            )
        base = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        for n in range(10):
            _edit(repo, 100 + n, 2000 + n)
            _time([*LOOMGIT, "promote", f"wf-{100 + n:05d}", "--to", "staging"], repo)
        commits = int(
            subprocess.run(
                ["git", "rev-list", "--count", f"{base}..HEAD"],
                cwd=repo,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        statuses = [_time([*LOOMGIT, "status", "--format", "json"], repo) for _ in range(3)]
        tab, offered = _complete("loomgit activate --env staging ", repo)
        checks = [
            _time([*LOOMGIT, "check-promotion", "--base", base, "--no-validate"], repo)
            for _ in range(3)
        ]
        full = _time([*LOOMGIT, "check-promotion", "--base", base, "--no-cache"], repo)
        shutil.rmtree(repo / ".git" / "loomgit", ignore_errors=True)
        warm_base = _time([*LOOMGIT, "validate", "--rev", base], repo)
        reusing = _time([*LOOMGIT, "check-promotion", "--base", base], repo)
        out = Path(tempfile.mkdtemp(prefix="loomgit-summary-")) / "summary.md"
        check = [*LOOMGIT, "check-promotion", "--base", base, "--no-validate"]
        summaries = []
        for _ in range(3):
            out.unlink(missing_ok=True)
            summaries.append(_time([*check, "--summary", str(out)], repo))
        small = out.stat().st_size
        base = _head(repo)
        promote_all = _time([*LOOMGIT, "promote", "--all", "--to", "staging"], repo)
        promoted = _head(repo, "show", "-s", "--format=%(trailers:key=Loomgit-Workflow)")
        out.unlink()
        check = [*LOOMGIT, "check-promotion", "--base", base, "--no-validate"]
        big_plain = _time(check, repo)
        big = _time([*check, "--summary", str(out)], repo)
        big_size = out.stat().st_size
        shutil.rmtree(out.parent)
        review = [*LOOMGIT, "changes", "--base", base, "--format", "json"]
        changes = _time(review, repo)
        listed = subprocess.run(review, cwd=repo, capture_output=True, check=True, env=ENV).stdout
        print(
            f"promote ONE --to staging (best of 5):        {min(promotes) * 1000:.0f} ms "
            f"(median {sorted(promotes)[2] * 1000:.0f} ms)   (target <= 500 ms)"
        )
        print(
            f"status (best of 3):                         {min(statuses):.2f} s   (target <= 2 s)"
        )
        print(f"completion, TAB after `activate --env staging `: {tab * 1000:.0f} ms ({offered:,})")
        print(
            f"check-promotion, {commits} commits, --no-validate: {min(checks):.2f} s"
            "   (target <= 2 s)"
        )
        print(f"check-promotion, {commits} commits, with validate, --no-cache: {full:.2f} s")
        print(
            f"check-promotion, {commits} commits, with validate, reusing what `validate --rev "
            f"BASE` ({warm_base:.2f} s) kept: {reusing:.2f} s   (target <= 2 s)"
        )
        print(
            f"check-promotion, {commits} commits, --no-validate --summary: "
            f"{min(summaries):.2f} s best of 3 ({small:,} bytes of Markdown)"
        )
        print(
            f"promote --all --to staging ({promoted.count('wf-'):,} workflows): {promote_all:.2f} s"
        )
        print(
            f"check-promotion of that commit, --no-validate: {big_plain:.2f} s; "
            f"with --summary: {big:.2f} s ({big_size:,} bytes)"
        )
        print(f"changes of that commit, --format json: {changes:.2f} s ({len(listed):,} bytes)")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
