"""The command line: help on every command, the error handler, init and schema."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from conftest import HELLO, Repo, Result, git

from loomgit import cli as cli_module
from loomgit import schema

PROJECT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    return sorted(cli_module.cli.commands)


@pytest.mark.parametrize("name", _commands())
def test_every_command_has_help_with_an_example(name: str, cli: Callable[..., Result]) -> None:
    command = cli_module.cli.commands[name]
    assert command.help and "Example" in command.help
    result = cli(name, "--help")
    assert result.code == 0 and "Usage: loomgit" in result.out


def test_click_usage_errors_read_as_loomgit_errors(cli: Callable[..., Result]) -> None:
    """An unknown option or command, or a value outside a choice, is one `error:` line
    with a hint, as every other refusal; a group named alone still shows its help."""
    result = cli("validate", "--format", "xml")
    assert result.code == 2 and result.err == (
        "error: invalid value for '--format': 'xml' is not one of 'text', 'json', 'github'\n"
        "hint: `loomgit validate --help` lists its options, with examples\n"
    )
    result = cli("promot")
    assert result.code == 2
    assert result.err.startswith("error: no such command 'promot' (did you mean 'promote'?)\n")
    assert "hint: `loomgit --help`" in result.err
    result = cli("keys")
    assert result.code in (0, 2) and "Usage: loomgit keys" in result.out + result.err


def test_every_command_is_documented_in_the_readme() -> None:
    readme = (PROJECT / "README.md").read_text()
    for name in _commands():
        assert f"loomgit {name}" in readme, name


def test_version_and_unknown_command(cli: Callable[..., Result]) -> None:
    assert cli("--version").out.startswith("loomgit, version")
    result = cli("frobnicate")
    assert result.code == 2 and "error: no such command 'frobnicate'\n" in result.err


def test_unexpected_error_exits_3_with_a_report(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @cli_module.cli.command("explode-for-test")
    def explode() -> None:
        word = "bo" + "om"  # not in the source line the report quotes
        raise RuntimeError(word)

    try:
        result = cli("explode-for-test")
    finally:
        del cli_module.cli.commands["explode-for-test"]
    assert result.code == 3
    assert "unexpected error (RuntimeError)" in result.err
    reports = list(Path(os.environ["LOOMGIT_STATE_DIR"]).glob("crash-*.log"))
    report = reports[0].read_text()  # where, not the message: it might quote a secret
    assert len(reports) == 1 and "RuntimeError" in report and "in explode" in report
    assert "boom" not in report
    assert str(reports[0]) in result.err
    assert stat.S_IMODE(reports[0].stat().st_mode) == 0o600


def test_crash_reports_go_to_the_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--state-dir, else $LOOMGIT_STATE_DIR, else $XDG_STATE_HOME/loomgit: where the
    execution history is, not always the user's own folder."""
    from loomgit import errors

    def report_folder() -> Path:
        where = errors.crash_report(RuntimeError("x"))
        assert where is not None
        return Path(where).parent

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert report_folder() == Path(os.environ["LOOMGIT_STATE_DIR"])
    monkeypatch.delenv("LOOMGIT_STATE_DIR")
    assert report_folder() == tmp_path / "xdg" / "loomgit"
    errors.report_to(tmp_path / "given")
    assert report_folder() == tmp_path / "given"


def test_keyboard_interrupt_exits_130(cli: Callable[..., Result]) -> None:
    @cli_module.cli.command("interrupt-for-test")
    def interrupt() -> None:
        raise KeyboardInterrupt

    try:
        assert cli("interrupt-for-test").code == 130
    finally:
        del cli_module.cli.commands["interrupt-for-test"]


def test_init_directories(tmp_path: Path, cli: Callable[..., Result]) -> None:
    target = tmp_path / "flows"
    result = cli("init", target, "--environments", "test,live")
    assert result.code == 0 and "test -> live" in result.out
    assert (target / "environments/test/workflows").is_dir()
    assert ".loomgit/" in (target / ".gitignore").read_text()
    assert git(target, "status", "--porcelain") == ""
    assert cli("validate", "--repo", target).code == 0


def test_init_reports_as_json(tmp_path: Path, cli: Callable[..., Result]) -> None:
    target = tmp_path / "flows"
    args = ("--layout", "branches", "--environments", "test,live", "--format", "json")
    result = cli("init", target, *args)
    assert result.code == 0, result.err
    assert json.loads(result.out) == {
        "path": str(target),
        "layout": "branches",
        "environments": ["test", "live"],
        "created_repository": True,
        "commits": [
            {"commit": git(target, "rev-parse", branch), "branch": branch}
            for branch in ("env/test", "env/live")
        ],
        "ci_workflow_kept": None,
    }


def test_init_keeps_a_gitignore_that_is_not_utf8(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    git(tmp_path, "init", "--quiet")
    (tmp_path / ".gitignore").write_bytes(b"caf\xe9/\n")  # Latin-1, as git allows
    result = cli("init", tmp_path)
    assert result.code == 0, result.err
    assert (tmp_path / ".gitignore").read_bytes().startswith(b"caf\xe9/\n# loomgit")


@pytest.mark.parametrize("layout", ["directories", "branches"])
def test_init_commits_the_schemas_its_files_point_at(
    tmp_path: Path, cli: Callable[..., Result], layout: str
) -> None:
    target = tmp_path / "flows"
    result = cli("init", target, "--layout", layout, "--environments", "test,live")
    assert result.code == 0 and "workflow.schema.json" in result.out
    for name, generated in schema.generate().items():
        assert (target / "schemas" / name).read_text() == schema.dumps(generated)
    pointed = {}
    for path in target.rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        if first.startswith("# yaml-language-server: $schema="):
            pointed[path.name] = (path.parent / first.split("=", 1)[1]).resolve()
    assert set(pointed) == {"loomgit.yaml", "variables.yaml"}
    assert all(found.is_file() for found in pointed.values()), pointed
    # The hint's workflow line resolves from the first environment's workflow folder.
    hinted = result.out.split("$schema=")[1].split("`")[0]
    workflows = target / ("environments/test/workflows" if layout == "directories" else "workflows")
    assert (workflows / hinted).resolve() == (target / "schemas/workflow.schema.json").resolve()
    assert git(target, "status", "--porcelain") == ""
    assert cli("validate", "--repo", target).code == 0


def test_init_refuses_to_overwrite(repo: Repo, cli: Callable[..., Result]) -> None:
    before = git(repo.path, "rev-parse", "HEAD")
    result = cli("init", repo.path)
    assert result.code == 1 and "already exists" in result.err
    assert git(repo.path, "rev-parse", "HEAD") == before
    assert git(repo.path, "status", "--porcelain") == ""


def test_init_inside_a_larger_repository(tmp_path: Path, cli: Callable[..., Result]) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "app.py").write_text("print('hi')\n")
    git(tmp_path, "add", "app.py")  # staged work of the user's: must not be committed by init
    assert cli("init", tmp_path / "ops" / "flows").code == 0
    assert "app.py" not in git(tmp_path, "show", "--name-only", "--format=", "HEAD")
    assert git(tmp_path, "diff", "--cached", "--name-only") == "app.py"
    assert cli("validate", "--repo", tmp_path / "ops" / "flows").code == 0
    gate = tmp_path / ".github" / "workflows" / "loomgit.yml"
    assert "--repo ops/flows" in gate.read_text()
    # A second one beside it: the gate there is left as it is, and said not to cover it.
    before = gate.read_bytes()
    result = cli("init", tmp_path / "more")
    assert result.code == 0 and gate.read_bytes() == before
    assert result.err == (
        f"note: {gate} was already there and is left as it is; make sure it gates this "
        "repository too: `loomgit validate --repo more` and "
        "`loomgit check-promotion --repo more --base origin/BASE`\n"
    )
    report = json.loads(cli("init", tmp_path / "third", "--format", "json").out)
    assert report["ci_workflow_kept"] == str(gate)


@pytest.mark.parametrize("envs", ["", "Dev,prod", "a,a", "x y"])
def test_init_rejects_bad_environment_lists(
    tmp_path: Path, cli: Callable[..., Result], envs: str
) -> None:
    result = cli("init", tmp_path / "f", "--environments", envs)
    assert result.code == 2 and result.err.startswith("error: ")
    assert not (tmp_path / "f").exists()


def test_init_branches_refuses_a_subfolder(tmp_path: Path, cli: Callable[..., Result]) -> None:
    git(tmp_path, "init", "-q")
    assert cli("init", tmp_path / "sub", "--layout", "branches").code == 2


def test_committed_schemas_match_the_models() -> None:
    for name, generated in schema.generate().items():
        committed = (PROJECT / "schemas" / name).read_text()
        assert committed == schema.dumps(generated), (
            f"schemas/{name} is stale: run `loomgit schema --write schemas/`"
        )


def test_schema_command(tmp_path: Path, cli: Callable[..., Result]) -> None:
    printed = json.loads(cli("schema", "workflow").out)
    assert printed["title"] == "Workflow"
    # Editors show a pattern's words, as validate says them, not the regular expression.
    name = printed["$defs"]["Metadata"]["properties"]["name"]
    assert name["patternErrorMessage"].startswith("must be lowercase letters, digits")
    assert cli("schema", "--write", tmp_path).code == 0
    assert len(list(tmp_path.glob("*.schema.json"))) == 4
    assert cli("schema").code == 2
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli("schema", "--write", blocker / "schemas")
    assert result.code == 2 and "cannot write the schemas into" in result.err, result.err


def test_the_schema_lets_a_parameter_be_a_template() -> None:
    """An editor must not flag what validate accepts: a step parameter given as a
    template is checked once rendered (`status: "{{ trigger.body.code }}"`)."""
    from jsonschema import Draft202012Validator

    from loomgit import schema, yamlio

    validator = Draft202012Validator(schema.generate()["workflow.schema.json"])

    def errors(params: str) -> list[str]:
        doc = HELLO + f"    - id: extra\n      {params}\n"
        return [e.message for e in validator.iter_errors(yamlio.load(doc.encode()))]

    assert errors('type: respond\n      with: {status: "{{ trigger.body.code }}"}') == []
    assert errors('type: log\n      with: {message: x, level: "{{ vars.level }}"}') == []
    assert (
        errors('type: http\n      with: {url: x, expect_status: "{% if 1 %}[200]{% endif %}"}')
        == []
    )
    assert errors('type: http\n      with: {url: x, expect_status: [200, "{{ vars.s }}"]}') == []
    assert errors("type: respond\n      with: {status: abc}")
    assert errors("type: http\n      with: {url: x, expect_status: [200, abc]}")
    assert errors("type: http\n      with: {url: x, expect_status: [99]}")
    assert errors("type: log\n      with: {message: x, level: loud}")
    assert errors("type: respond\n      with: {status: 99}")


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys; from loomgit.cli import cli; "
        "print(sorted(m for m in ('pydantic','git','ruamel.yaml','jinja2','croniter') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_click_group_is_the_only_entry() -> None:
    assert isinstance(cli_module.cli, click.Group)


def test_every_code_is_documented() -> None:
    from loomgit.problems import rules_markdown

    assert (PROJECT / "docs" / "rules.md").read_text() == rules_markdown(), (
        "docs/rules.md is stale: python -c 'from loomgit.problems import rules_markdown; "
        'print(rules_markdown(), end="")\' > docs/rules.md'
    )
