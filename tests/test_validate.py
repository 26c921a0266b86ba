"""validate beyond the corpus: paths git itself cannot hold as plain files, arguments,
both layouts, the monorepo sample, and the blob cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import HELLO, VARIABLES, AgeKey, Repo, Result, commit_all, git, sops_config

from loomgit import scaffold
from loomgit.documents import DocumentCache
from loomgit.problems import Problem, headline
from loomgit.validate import validate

PROJECT = Path(__file__).resolve().parents[1]


def test_valid_repository(repo: Repo, cli: Callable[..., Result]) -> None:
    result = cli("validate", "--repo", repo.path)
    assert result.code == 0
    assert "ok: 3 workflow files in 3 environments (work tree) valid" in result.out
    assert json.loads(cli("validate", "--repo", repo.path, "--format", "json").out) == []


def test_one_workflow_may_serve_a_path_for_two_methods(
    repo: Repo, cli: Callable[..., Result]
) -> None:
    both = "    - type: webhook\n      path: hello\n      method: GET\n    - type: schedule\n"
    repo.write(repo.wf("development"), HELLO.replace("    - type: schedule\n", both))
    result = cli("validate", "--repo", repo.path)
    assert result.code == 0, result.out + result.err


def test_searches_upward_for_loomgit_yaml(
    repo: Repo, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo.path / "environments" / "staging" / "workflows")
    assert cli("validate").code == 0


def test_env_option_limits_the_report(repo: Repo, cli: Callable[..., Result]) -> None:
    repo.write(repo.wf("development"), HELLO.replace("0 9 * * 1-5", "bad"))
    assert cli("validate", "--repo", repo.path, "--env", "staging").code == 0
    assert cli("validate", "--repo", repo.path, "--env", "development").code == 1


def test_numbers_json_cannot_hold_are_refused_at_their_line(
    repo: Repo, cli: Callable[..., Result]
) -> None:
    """Executions are recorded and served as JSON: `.nan` or `.inf` in a workflow or in
    an environment's variables is refused where it stands, before anything runs it."""
    repo.write("environments/staging/variables.yaml", VARIABLES + "  limit: .inf\n")
    repo.write(repo.wf("development"), HELLO.replace("path: hello", "path: hello\n      x: .nan"))
    result = cli("validate", "--repo", repo.path)
    assert result.code == 1
    assert "environments/staging/variables.yaml:5:10: error[LG109]" in result.out
    assert "environments/development/workflows/hello.yaml:9:10: error[LG109]" in result.out
    # the count is of the files checked, not of the files with an error
    assert result.out.splitlines()[-1] == (
        "2 errors; checked 3 workflow files in 3 environments (work tree)"
    )


def test_workflows_folder_that_is_a_file(repo: Repo, cli: Callable[..., Result]) -> None:
    folder = repo.path / "environments" / "development" / "workflows"
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    folder.write_text("oops\n")
    result = cli("validate", "--repo", repo.path)
    assert result.code == 1
    assert "environments/development/workflows: error[LG111]" in result.out
    commit_all(repo.path)
    assert "error[LG111]" in cli("validate", "--repo", repo.path, "--rev", "HEAD").out


def test_symlink_pointing_outside(repo: Repo, cli: Callable[..., Result], tmp_path: Path) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text(HELLO.replace("name: hello", "name: evil"))
    os.symlink(outside, repo.path / "environments/development/workflows/evil.yaml")
    result = cli("validate", "--repo", repo.path)
    assert result.code == 1
    assert "evil.yaml: error[LG110]" in result.out and str(outside) in result.out
    commit_all(repo.path)
    assert "evil.yaml: error[LG110]" in cli("validate", "--repo", repo.path, "--rev", "HEAD").out


def test_symlinked_workflows_folder(repo: Repo, cli: Callable[..., Result], tmp_path: Path) -> None:
    staging = repo.path / "environments" / "staging"
    shutil.rmtree(staging / "workflows")
    os.symlink(tmp_path, staging / "workflows")
    result = cli("validate", "--repo", repo.path)
    assert result.code == 1 and "error[LG110]" in result.out


def test_not_a_git_repository(tmp_path: Path, cli: Callable[..., Result]) -> None:
    (tmp_path / "loomgit.yaml").write_text("apiVersion: loomgit/v1\n")
    result = cli("validate", "--repo", tmp_path)
    assert result.code == 2
    assert (
        "is not inside a git repository" in result.err and "hint: run `loomgit init`" in result.err
    )


def test_a_name_that_breaks_a_rule_is_told_in_words(repo: Repo, cli: Callable[..., Result]) -> None:
    """A value that does not fit its pattern says what the name may hold, not the
    regular expression the model checks it with."""
    conf = repo.path / "loomgit.yaml"
    conf.write_text(conf.read_text().replace("name: staging", "name: Staging"))
    result = cli("validate", "--repo", repo.path)
    assert result.code == 2, result.err
    told = "environments[1].name: 'Staging' must be lowercase letters, digits and '-'"
    assert "loomgit.yaml:" in result.err and told in result.err and "^[" not in result.err


def test_an_output_key_is_checked_only_where_a_step_type_fixes_it(
    repo: Repo, cli: Callable[..., Result]
) -> None:
    """A `set` step's output is the keys it sets, an http step's its status, headers and
    body: other keys are LG331 (the corpus). A method of the mapping called, a key of a
    key, a transform's or a plugin's output, are not checked."""
    steps = (
        "    - id: fetch\n      type: http\n      with: {url: 'https://example.com/x'}\n"
        "    - id: pick\n      type: transform\n      with: {expression: 'trigger.body'}\n"
        "    - id: use\n      type: log\n      with:\n        message: >-\n"
        "          {{ steps.greet.output.get('text') }} {{ steps.greet.output.text.upper() }}\n"
        "          {{ steps.greet.output.items() | list }} {{ steps.pick.output.anything }}\n"
        "          {{ steps.fetch.output.json.body }} {{ steps.fetch.output.headers['x-a'] }}\n"
        "          {{ steps.say.output.level }}\n"
        "      when: steps.fetch.output.text is not defined\n"
    )
    repo.write(repo.wf("development"), HELLO + steps)
    result = cli("validate", "--repo", repo.path)
    assert result.code == 0, result.out + result.err
    repo.write(repo.wf("development"), HELLO + steps.replace("output.level", "output.lvl"))
    result = cli("validate", "--repo", repo.path)
    assert result.code == 1
    assert "the output of step 'say' (log) has no 'lvl' (did you mean 'level'?)" in result.out


def test_a_parameter_given_as_a_template_is_checked_when_rendered(
    repo: Repo, cli: Callable[..., Result]
) -> None:
    """`status: "{{ trigger.body.code }}"` may well be an integer once rendered: the step
    checks it then. A plain value of the wrong type is still refused here."""
    answer = (
        "    - id: answer\n      type: respond\n"
        '      with: {status: "{{ trigger.body.code | int }}", headers: "{{ trigger.body.h }}"}\n'
    )
    repo.write(repo.wf("development"), HELLO + answer)
    result = cli("validate", "--repo", repo.path)
    assert result.code == 0, result.out + result.err
    repo.write(
        repo.wf("development"), HELLO + answer.replace('"{{ trigger.body.code | int }}"', "abc")
    )
    result = cli("validate", "--repo", repo.path)
    assert result.code == 1
    assert "spec.steps[2].with.status: 'abc' must be an integer" in result.out
    broken = answer.replace("{{ trigger.body.code | int }}", "{{ trigger.body.code")
    repo.write(repo.wf("development"), HELLO + broken)
    result = cli("validate", "--repo", repo.path)
    assert result.code == 1 and "error[LG3" in result.out and "must be an integer" not in result.out


def test_no_loomgit_yaml(tmp_path: Path, cli: Callable[..., Result]) -> None:
    git(tmp_path, "init", "-q")
    result = cli("validate", "--repo", tmp_path)
    assert result.code == 2 and "no loomgit.yaml" in result.err


def test_missing_path(tmp_path: Path, cli: Callable[..., Result]) -> None:
    result = cli("validate", "--repo", tmp_path / "nope")
    assert result.code == 2 and "does not exist" in result.err


@pytest.mark.parametrize("rev", ["no-such-branch", "HEAD~99", "--output=/tmp/x", ""])
def test_bad_revisions(repo: Repo, cli: Callable[..., Result], rev: str) -> None:
    result = cli("validate", "--repo", repo.path, "--rev", rev)
    assert result.code == 2
    assert result.err.startswith("error: ")
    assert not Path("/tmp/x").exists() or rev != "--output=/tmp/x"


def test_unknown_environment(repo: Repo, cli: Callable[..., Result]) -> None:
    result = cli("validate", "--repo", repo.path, "--env", "qa")
    assert result.code == 2 and "unknown environment 'qa'" in result.err


def test_bad_format_is_a_usage_error(repo: Repo, cli: Callable[..., Result]) -> None:
    assert cli("validate", "--repo", repo.path, "--format", "xml").code == 2


def test_old_commit_is_read_without_checkout(repo: Repo, cli: Callable[..., Result]) -> None:
    repo.write(repo.wf("development"), HELLO.replace("0 9 * * 1-5", "bad cron"))
    commit_all(repo.path, "break it")
    assert cli("validate", "--repo", repo.path, "--rev", "HEAD").code == 1
    assert cli("validate", "--repo", repo.path, "--rev", "HEAD~1").code == 0
    assert git(repo.path, "status", "--porcelain") == ""


def test_a_commit_is_read_where_the_work_tree_has_lost_loomgit_yaml(
    repo: Repo, cli: Callable[..., Result]
) -> None:
    """`--rev` reads loomgit.yaml as committed: a commit after it that deleted the file
    does not keep an earlier one from being validated (nor the daemon from restarting on it)."""
    (repo.path / "loomgit.yaml").unlink()
    commit_all(repo.path, "loomgit.yaml goes")
    assert cli("validate", "--repo", repo.path, "--rev", "HEAD~1").code == 0
    gone = cli("validate", "--repo", repo.path, "--rev", "HEAD")
    assert gone.code == 2 and "no loomgit.yaml in" in gone.err
    assert cli("validate", "--repo", repo.path).code == 2


def test_identical_blobs_are_parsed_once(repo: Repo) -> None:
    cache = DocumentCache()
    report = validate(repo.path, rev="HEAD", cache=cache)
    assert report.ok and report.workflows == 3
    # hello is the same blob in three environments; variables.yaml too.
    assert cache.misses == 1 + 1 + 1 + 3  # config, hello, variables, three environment.yaml


def test_sample_repo_is_valid_in_a_monorepo(cli: Callable[..., Result]) -> None:
    sample = PROJECT / "sample-repo"
    result = cli("validate", "--repo", sample, "--no-cache")  # nothing kept in the project
    assert result.code == 0, result.out
    if (PROJECT / ".git").exists():
        assert cli("validate", "--repo", sample, "--rev", "HEAD", "--no-cache").code == 0


def test_no_git_processes_left_behind(repo: Repo) -> None:
    before = _children()
    for _ in range(5):
        validate(repo.path, rev="HEAD")
    assert _children() <= before


def _children() -> set[str]:
    out = subprocess.run(
        ["ps", "-o", "pid=,comm=", "--ppid", str(os.getpid())],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {line for line in out.splitlines() if "git" in line}


def test_subprocess_exit_codes(repo: Repo) -> None:
    run = [sys.executable, "-m", "loomgit", "validate", "--repo", str(repo.path)]
    ok = subprocess.run(run, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    repo.write(repo.wf("development"), "a: [\n")
    bad = subprocess.run(run, capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "error[LG102]" in bad.stdout and "Traceback" not in bad.stderr


# -- branch layout ---------------------------------------------------------------------


@pytest.fixture
def branch_repo(tmp_path: Path, age_key: AgeKey, greeter_file: bytes) -> Path:
    path = tmp_path / "flows"
    scaffold.init(path, "branches", ["test", "live"])
    (path / "workflows" / "hello.yaml").write_text(HELLO)
    (path / "variables.yaml").write_text(VARIABLES)
    (path / ".sops.yaml").write_text(sops_config(age_key.recipient, ["test", "live"], "branches"))
    (path / "global-credentials.sops.yaml").write_bytes(greeter_file)
    commit_all(path, "add hello")
    return path


def test_branch_layout_init(branch_repo: Path) -> None:
    assert git(branch_repo, "branch", "--show-current") == "env/test"
    assert set(git(branch_repo, "branch", "--format=%(refname:short)").split()) == {
        "env/test",
        "env/live",
    }


def test_branch_layout_validates_every_branch(
    branch_repo: Path, cli: Callable[..., Result]
) -> None:
    assert cli("validate", "--repo", branch_repo).code == 0
    # A hand-added workflow on env/live, with no promotion record, is caught from env/test.
    git(branch_repo, "checkout", "-q", "env/live")
    (branch_repo / "workflows" / "hello.yaml").write_text(HELLO)
    commit_all(branch_repo, "hand edit live")
    git(branch_repo, "checkout", "-q", "env/test")
    result = cli("validate", "--repo", branch_repo)
    assert result.code == 1
    assert "env/live:workflows/hello.yaml:1:1: error[LG403]" in result.out
    assert (
        "env/live:workflows/hello.yaml"
        in cli("validate", "--repo", branch_repo, "--rev", "env/test").out
    )


def test_branch_layout_rev_names_its_environment(
    branch_repo: Path, cli: Callable[..., Result]
) -> None:
    sha = git(branch_repo, "rev-parse", "env/live")
    assert cli("validate", "--repo", branch_repo, "--rev", sha).code == 0
    git(branch_repo, "checkout", "-q", "env/live")
    (branch_repo / "workflows" / "hello.yaml").write_text("a: [\n")
    bad = commit_all(branch_repo, "broken")
    git(branch_repo, "checkout", "-q", "env/test")
    result = cli("validate", "--repo", branch_repo, "--rev", bad)
    assert result.code == 1 and "workflows/hello.yaml:2:1: error[LG102]" in result.out


def test_a_one_line_summary_leads_with_the_problem_that_explains_the_others() -> None:
    found = [
        Problem("LG401", "differs from v1", "env/staging:workflows/a.yaml", 1, 1),
        Problem("LG202", "missing required key 'spec'", "workflows/b.yaml", 1, 1),
        Problem("LG201", "unknown key 'spce'", "workflows/b.yaml", 5, 1),
        Problem("LG102", "YAML syntax error", "workflows/c.yaml", 14, 1),
    ]
    assert headline(found) == (found[3], " (and 3 more)")
    assert headline(found[:3]) == (found[2], " (and 2 more)")
    assert headline(found[:2]) == (found[0], " (and 1 more)")
    assert headline(found[1:2]) == (found[1], "")
