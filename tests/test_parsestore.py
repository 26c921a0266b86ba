"""What validate keeps between runs in .git/loomgit/: reused only for the same blob and the
same code, never for a workflow that did not validate or uses a plugin's step type, and
ignored when it cannot be read or written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import HELLO, Repo, Result, commit_all, git, install_steps, promoted, state_yaml

from loomgit import parsestore, yamlio
from loomgit.documents import DocumentCache, parse_model
from loomgit.models import EnvironmentState
from loomgit.parsestore import ParseStore, open_store
from loomgit.validate import Report, validate
from loomgit.vcs import Git

# Valid as a document, wrong in its templates (LG331 from the file alone, LG340 against
# the environment's variables): what is kept holds problems, not only facts.
WRONG_TEMPLATES = HELLO.replace("steps.greet.output.text", "steps.nope.output.text").replace(
    "vars.greeting", "vars.missing"
)
BROKEN = "apiVersion: loomgit/v1\nkind: Workflow\nmetadata: {name: broken}\nspec: {steps: 3}\n"


def _store(repo: Repo) -> Path:
    return Path(git(repo.path, "rev-parse", "--absolute-git-dir")) / "loomgit"


def _validate_reusing(repo: Repo, rev: str | None = None) -> tuple[Report, DocumentCache]:
    with Git(repo.path) as g:
        cache = DocumentCache(open_store(g))
    return validate(repo.path, rev=rev, cache=cache), cache


def _found(report: Report) -> list[tuple[str, str, int | None, int | None, str]]:
    return [(p.code, p.path, p.line, p.col, p.message) for p in report.problems]


def test_a_second_run_parses_only_what_it_has_not_seen(repo: Repo) -> None:
    repo.write(repo.wf("development", "wrong"), WRONG_TEMPLATES.replace("hello", "wrong"))
    repo.write(repo.wf("development", "broken"), BROKEN)
    commit_all(repo.path, "two bad workflows")
    fresh = validate(repo.path, reuse=False)
    assert not _store(repo).exists()
    first, cache = _validate_reusing(repo)
    assert cache.store is not None and cache.store.hits == 0
    assert (_store(repo) / "workflows.json").is_file()
    second, cache = _validate_reusing(repo)
    assert _found(first) == _found(second) == _found(fresh)
    codes = {p.code for p in fresh.problems}
    assert {"LG331", "LG340"} <= codes and "LG200" in codes, codes
    # hello, wrong and the three environment.yaml files came from the store; what is
    # parsed again: loomgit.yaml, variables.yaml and the workflow that did not validate.
    assert cache.store is not None and cache.store.hits == 5
    assert cache.misses == 3
    # A commit read from the store gives what the work tree gave.
    assert _found(validate(repo.path, rev="HEAD")) == _found(fresh)


def test_an_edited_workflow_is_checked_again(repo: Repo, cli: Callable[..., Result]) -> None:
    assert cli("validate", "--repo", repo.path).code == 0
    repo.write(repo.wf("development"), WRONG_TEMPLATES)
    result = cli("validate", "--repo", repo.path)
    assert result.code == 1
    assert "hello.yaml:43" not in result.out  # lines are the new file's
    assert "error[LG331]: there is no step 'nope'" in result.out
    assert "error[LG340]: vars.missing is not defined" in result.out
    repo.write(repo.wf("development"), HELLO)
    assert cli("validate", "--repo", repo.path).code == 0


def test_results_of_other_code_are_not_used(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    validate(repo.path)
    monkeypatch.setattr(parsestore, "fingerprint", lambda: "another loomgit")
    _, cache = _validate_reusing(repo)
    assert cache.store is not None and cache.store.hits == 0
    assert json.loads((_store(repo) / "workflows.json").read_text())["key"] == "another loomgit"


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"key": "%s", "workflows": {"%s": [1, 2]}}',
        b'{"key": "%s", "workflows": {"%s": ["d", ["name"], [[]]]}}',
        b'{"key": "%s", "workflows": {"%s": ["d", ["hello", [], [], [], [], []], [[1, 2]]]}}',
    ],
)
def test_a_store_that_cannot_be_read_is_parsed_past(
    repo: Repo, cli: Callable[..., Result], content: bytes
) -> None:
    repo.write(repo.wf("development"), WRONG_TEMPLATES)
    expected = cli("validate", "--repo", repo.path)
    blob = git(repo.path, "hash-object", repo.wf("development"))
    saved = _store(repo) / "workflows.json"
    if b"%s" in content:
        content = content % (parsestore.fingerprint().encode(), blob.encode())
    saved.write_bytes(content)
    assert cli("validate", "--repo", repo.path) == expected
    assert blob in json.loads(saved.read_text())["workflows"]  # written afresh


def test_a_store_that_cannot_be_written_is_done_without(
    repo: Repo, cli: Callable[..., Result]
) -> None:
    _store(repo).write_text("a file where the folder would be\n")
    result = cli("validate", "--repo", repo.path)
    assert result.code == 0 and result.err == "", result
    assert cli("validate", "--repo", repo.path, "--rev", "HEAD").code == 0


def test_no_cache_writes_nothing(
    repo: Repo, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("validate", "--repo", repo.path, "--no-cache").code == 0
    base = git(repo.path, "rev-parse", "HEAD")
    assert cli("check-promotion", "--repo", repo.path, "--base", base, "--no-validate").code == 0
    monkeypatch.setenv("LOOMGIT_NO_CACHE", "1")
    assert cli("validate", "--repo", repo.path).code == 0
    assert cli("check-promotion", "--repo", repo.path, "--base", base).code == 0
    assert not _store(repo).exists()
    monkeypatch.setenv("LOOMGIT_NO_CACHE", "0")
    assert cli("check-promotion", "--repo", repo.path, "--base", base).code == 0
    assert (_store(repo) / "workflows.json").is_file()


def test_check_promotion_reuses_what_validate_found(repo: Repo, cli: Callable[..., Result]) -> None:
    base = git(repo.path, "rev-parse", "HEAD")
    repo.write(repo.wf("development"), HELLO.replace("Europe/Berlin", "Europe/Paris"))
    commit_all(repo.path, "edit hello")
    assert cli("promote", "hello", "--to", "staging", "--repo", repo.path).code == 0
    assert cli("validate", "--repo", repo.path, "--rev", "HEAD").code == 0
    result = cli("check-promotion", "--repo", repo.path, "--base", base)
    assert result.code == 0, result.out
    assert "ok: 3 workflow files in 3 environments (2 commits" in result.out
    # A hand edit in staging after it is still caught, though staging's environment.yaml
    # (unchanged by the edit) comes from the store.
    repo.write(repo.wf("staging"), HELLO)
    commit_all(repo.path, "hand edit")
    result = cli("check-promotion", "--repo", repo.path, "--base", base)
    assert result.code == 1
    assert "error[LG401]: hello differs from v2 as promoted to staging" in result.out


def test_a_linked_work_tree_shares_the_store(repo: Repo, tmp_path: Path) -> None:
    linked = tmp_path / "linked"
    git(repo.path, "worktree", "add", "-q", str(linked), "HEAD")
    assert validate(linked).ok
    assert (_store(repo) / "workflows.json").is_file()
    assert not (linked / ".git").is_dir()  # a file pointing at the main git folder


def test_an_environment_record_reads_back_as_it_was_written(tmp_path: Path) -> None:
    entry = {
        "version": 3,
        "active": "true",
        "digest": "sha256:" + "a" * 64,
        "promoted_from": "staging",
        "source_commit": "b" * 40,
        "promoted_by": "'Ada <ada@example.com>'",
        "promoted_at": "2026-11-23T08:15:30.123456+01:00",
        "notes": "'multi\\nline: notes'",
        "rolled_back_from": 4,
    }
    data = state_yaml("production", {"hello": entry, "other": {"active": "false"}}).encode()
    parsed = parse_model(EnvironmentState, data)
    assert parsed.model is not None
    store = ParseStore(tmp_path)
    store.add_state("c" * 40, parsed)
    again = ParseStore(tmp_path).state("c" * 40)
    assert again is not None and again.model == parsed.model
    assert again.model.workflows["other"].model_fields_set == {"active"}


def test_a_plugin_step_type_is_checked_every_time(repo: Repo, tmp_path: Path) -> None:
    """A workflow using a type a package registers is valid while the package is installed
    and must say so once it is not: it is never kept."""
    site = tmp_path / "site"
    install_steps(site, "loomgit_echo_test", ECHO_STEP, {"echo": "loomgit_echo_test:echo"})
    repo.write(repo.wf("development", "echoing"), ECHOING)
    commit_all(repo.path, "echoing")

    def run(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "loomgit", "validate", "--repo", str(repo.path)],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            check=False,
        )

    with_package = run(PYTHONPATH=str(site))
    assert with_package.returncode == 0, with_package.stdout + with_package.stderr
    without = run()
    assert without.returncode == 1
    assert "unknown step type 'echo'" in without.stdout


ECHO_STEP = """
from pydantic import BaseModel

class Params(BaseModel):
    text: str

class echo:
    params = Params

    @staticmethod
    def run(params, ctx):
        return {"text": params.text}
"""

ECHOING = """\
apiVersion: loomgit/v1
kind: Workflow
metadata: {name: echoing}
spec:
  triggers: [{type: webhook, path: echoing}]
  steps:
    - {id: s, type: echo, with: {text: hi}}
"""


def test_a_changed_environment_record_is_the_only_one_parsed_again(
    repo: Repo, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A promotion or an activation changes one record of an environment.yaml holding
    many: the next validate parses that record, not the file."""
    names = [f"flow-{i}" for i in range(12)]
    for env in ("development", "staging"):
        for name in names:
            repo.write(repo.wf(env, name), HELLO.replace("hello", name))
    entries = {
        n: promoted(HELLO.replace("hello", n), 1, "development", repo.source_commit) for n in names
    }
    repo.write("environments/staging/environment.yaml", state_yaml("staging", entries))
    repo.write(repo.wf("staging"), "")
    (repo.path / repo.wf("staging")).unlink()
    commit_all(repo.path, "twelve flows")
    assert cli("validate", "--repo", repo.path, "--env", "staging").code == 0
    assert cli("activate", "flow-3", "--env", "staging", "--repo", repo.path).code == 0
    loads: list[str] = []
    real = yamlio._safe_load

    def counting(text: str) -> object:
        loads.append(text)
        return real(text)

    monkeypatch.setattr(yamlio, "_safe_load", counting)
    reused = validate(repo.path, env="staging")
    records = [t for t in loads if "flow-" in t and "kind: Workflow" not in t]
    assert len(records) == 1, records  # of the twelve, only the activated one
    assert records[0].startswith("  flow-3:\n    active: true\n")
    assert _found(reused) == _found(validate(repo.path, env="staging", reuse=False)) == []
