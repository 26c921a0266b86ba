"""Listings kept across the daemon's cycles read the same as fresh ones."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import commit_all, git

from loomgit.gitcache import CachingGit, GitCache
from loomgit.vcs import Git


def _write(repo: Path, rel: str, text: str) -> None:
    target = repo / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def _fresh(repo: Path, commit: str, path: str) -> list[tuple[str, str, str, str]]:
    entries = Git(repo).ls_tree(commit, path)
    return [(e.mode, e.kind, e.sha, e.path) for e in entries if e.kind != "tree"]


def _cached(git: CachingGit, commit: str, path: str) -> list[tuple[str, str, str, str]]:
    return [(e.mode, e.kind, e.sha, e.path) for e in git.ls_tree(commit, path)]


def test_a_listing_patched_commit_after_commit_equals_a_fresh_one(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    cache = GitCache()
    edits = [
        lambda: _write(repo, "environments/a/workflows/one.yaml", "one: 1\n"),
        lambda: _write(repo, "environments/a/workflows/two.yaml", "two: 2\n"),
        lambda: _write(repo, "environments/a/workflows/one.yaml", "one: 2\n"),
        lambda: _write(repo, "environments/a.b/x.yaml", "sorts before a/\n"),
        lambda: _write(repo, "environments/a/wörkflows/ü.yaml", "not ascii\n"),
        lambda: (repo / "environments/a/workflows/two.yaml").unlink(),
        lambda: os.symlink("one.yaml", repo / "environments/a/workflows/link.yaml"),
        lambda: (repo / "environments/a/workflows/one.yaml").chmod(0o755),
        lambda: _write(repo, "outside.yaml", "not listed\n"),
        lambda: _write(repo, "environments/a-/z.yaml", "a dash sorts before a slash\n"),
        lambda: (repo / "environments/a/workflows/one.yaml").rename(
            repo / "environments/a/workflows/uno.yaml"
        ),
    ]
    for i, edit in enumerate(edits):
        edit()
        commit = commit_all(repo, f"edit {i}")
        with CachingGit(repo, cache) as cached:
            assert _cached(cached, commit, "environments/") == _fresh(repo, commit, "environments/")
    assert cache.listed == 1  # the first; every later one was a diff
    assert cache.patched == len(edits) - 1


def test_a_listing_whose_commit_is_gone_is_read_again_in_full(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q", "--initial-branch=main")
    _write(repo, "f/a.yaml", "a\n")
    first = commit_all(repo, "first")
    cache = GitCache()
    with CachingGit(repo, cache) as cached:
        cached.ls_tree(first, "f/")
    _write(repo, "f/b.yaml", "b\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--amend", "-m", "rewritten")
    git(repo, "reflog", "expire", "--expire=now", "--all")
    git(repo, "gc", "-q", "--prune=now")
    rewritten = git(repo, "rev-parse", "HEAD")
    with CachingGit(repo, cache) as cached:
        assert _cached(cached, rewritten, "f/") == _fresh(repo, rewritten, "f/")
    assert (cache.listed, cache.patched) == (2, 0)
