"""Shell completion: the values a TAB offers, read from a real repository of either
layout, and the bash script `loomgit completion bash` prints, run by a real bash."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.shell_completion import BashComplete
from conftest import HELLO, Result

from loomgit.cli import cli as loomgit_cli


def offered(args: list[str | Path], incomplete: str = "") -> list[str]:
    """What completing the word after `loomgit ARGS…` offers, as the shell would ask it."""
    complete = BashComplete(loomgit_cli, {}, "loomgit", "_LOOMGIT_COMPLETE")
    return [item.value for item in complete.get_completions([str(a) for a in args], incomplete)]


def test_environments_workflows_refs_and_credentials_come_from_the_repository(
    pipe: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    p: object = pipe
    path = p.path  # type: ignore[attr-defined]
    assert p.run("promote", "hello", "--to", "staging").code == 0  # type: ignore[attr-defined]
    p.edit("bye", HELLO.replace("hello", "bye"))  # type: ignore[attr-defined]
    repo = ["--repo", path]

    # Environments in pipeline order; a promotion's target is never the first.
    assert offered(["validate", *repo, "--env"]) == ["development", "staging", "production"]
    assert offered(["activate", *repo, "--env"], "st") == ["staging"]
    assert offered(["promote", *repo, "--to"]) == ["staging", "production"]
    assert offered(["diff", "hello", *repo, "--to"]) == ["staging", "production"]
    assert offered(["serve", *repo, "--environments"], "development,") == [
        "development,staging",
        "development,production",
    ]

    # Workflows of the environment the command reads.
    assert offered(["promote", *repo, "--to", "staging"]) == ["bye", "hello"]
    assert offered(["promote", *repo, "--to", "production"]) == ["hello"]
    assert offered(["promote", *repo, "--to", "staging", "hello"]) == ["bye"]  # not twice
    assert offered(["activate", *repo, "--env", "staging"]) == ["hello"]
    assert offered(["activate", *repo, "--env", "production"]) == []
    assert offered(["run", *repo], "b") == ["bye"]  # always the first environment
    monkeypatch.chdir(path / "environments" if p.layout == "directories" else path)  # type: ignore[attr-defined]
    # The history's commands have no --repo: the repository around the current folder.
    assert offered(["executions", "--workflow"]) == ["bye", "hello"]
    assert offered(["executions", "summary", "--env"], "p") == ["production"]

    # Git refs, and credential names read without a key.
    refs = offered(["changes", *repo, "--base"])
    assert refs[0] == "HEAD"
    branch = "main" if p.layout == "directories" else "env/production"  # type: ignore[attr-defined]
    assert branch in refs
    assert offered(["check-promotion", *repo, "--base"], "nope") == []
    assert offered(["credentials", "rm", *repo]) == ["greeter"]
    assert offered(["credentials", "copy", *repo, "--from", "staging"], "g") == ["greeter"]

    # An option given an empty value is refused when the command runs, not while the
    # shell completes the line.
    assert offered(["activate", *repo, "--branch", "", "--env", "staging"]) == ["hello"]


def test_outside_a_repository_nothing_is_offered_and_nothing_printed(
    tmp_path: Path, capsys: object
) -> None:
    nowhere = tmp_path / "not-a-repository"
    nowhere.mkdir()
    assert offered(["promote", "--repo", nowhere]) == []
    assert offered(["promote", "--repo", nowhere, "--to"]) == []
    assert offered(["changes", "--repo", nowhere, "--base"]) == []
    assert offered(["credentials", "rm", "--repo", tmp_path / "missing"]) == []
    out, err = capsys.readouterr()  # type: ignore[attr-defined]
    assert out == err == ""


def test_bash_completes_through_the_printed_script(repo: object) -> None:
    """`eval "$(loomgit completion bash)"`, then a TAB after `--env staging`: the
    installed command answers the script with the repository's workflows."""
    path = repo.path  # type: ignore[attr-defined]
    scripts = Path(sys.executable).parent  # where `loomgit` is installed beside python
    line = f"loomgit activate --repo {path} --env staging "
    program = (
        'eval "$(loomgit completion bash)"\n'
        f"COMP_WORDS=({line} ''); COMP_CWORD=6\n"
        "_loomgit_completion loomgit\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "hello\n", "")


def test_the_completion_command_prints_each_shells_script(cli: Callable[..., Result]) -> None:
    for shell, asks in (("bash", "bash_complete"), ("zsh", "zsh_complete"), ("fish", "fish")):
        result = cli("completion", shell)
        assert result.code == 0 and f"_LOOMGIT_COMPLETE={asks}" in result.out
    result = cli("completion", "tcsh")
    assert result.code == 2
    assert result.err.startswith("error: invalid value for 'SHELL': 'tcsh' is not one of")
    assert result.out == ""
