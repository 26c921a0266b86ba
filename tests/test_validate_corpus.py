"""Every broken repository in the corpus gives its one-line error with code, file and line,
from the work tree and from a commit alike, and never a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable

import pytest
from conftest import Repo, Result, commit_all
from corpus import CASES, Case


def _apply(repo: Repo, case: Case) -> None:
    for rel in case.remove:
        shutil.rmtree(repo.path / rel)
    for rel, content in case.files.items():
        repo.write(rel, content)


def _check(result: Result, case: Case) -> None:
    assert result.code == case.exit_code, result.out + result.err
    text = result.out + result.err
    for code, path, line in case.expect:
        wanted = [ln for ln in result.out.splitlines() if f"error[{code}]" in ln and path in ln]
        assert wanted, f"{code} at {path} not in:\n{text}"
        if line is not None:
            assert any(ln.startswith(f"{path}:{line}:") for ln in wanted), text
    if case.contains:
        assert case.contains in text, text


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_work_tree(case: Case, repo: Repo, cli: Callable[..., Result]) -> None:
    _apply(repo, case)
    _check(cli("validate", "--repo", repo.path), case)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_commit(case: Case, repo: Repo, cli: Callable[..., Result]) -> None:
    _apply(repo, case)
    commit_all(repo.path, f"break: {case.name}")
    (repo.path / "loomgit.yaml").write_text(
        "apiVersion: loomgit/v1\nkind: Repository\nenvironments: [development, staging, "
        "production]\n"
    )  # the work tree may be broken differently: --rev must not read it
    _check(cli("validate", "--repo", repo.path, "--rev", "HEAD"), case)


@pytest.mark.parametrize("case", [c for c in CASES if c.exit_code == 1][:5], ids=lambda c: c.name)
def test_json_and_github_formats(case: Case, repo: Repo, cli: Callable[..., Result]) -> None:
    _apply(repo, case)
    result = cli("validate", "--repo", repo.path, "--format", "json")
    assert result.code == 1
    problems = json.loads(result.out)
    code, path, _line = case.expect[0]
    assert any(p["code"] == code and p["path"] == path for p in problems)
    gh = cli("validate", "--repo", repo.path, "--format", "github")
    assert any(
        ln.startswith("::error file=") and f"title={code}" in ln for ln in gh.out.splitlines()
    )
