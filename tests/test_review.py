"""`check-promotion --summary`: what a pull request changes, as Markdown for its reviewers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import HELLO
from pipeline import Pipeline
from test_promotion import V2, V3

from loomgit import review


def _summary(pipe: Pipeline, out: Path, base: str, env: str, *more: str) -> tuple[int, str]:
    args = ["check-promotion", "--base", base, "--head", pipe.ref(env), "--summary", str(out)]
    result = pipe.run(*args, *more)
    return result.code, out.read_text() if out.exists() else ""


def test_the_summary_says_what_each_environment_gets(pipe: Pipeline, tmp_path: Path) -> None:
    out = tmp_path / "summary.md"
    base = pipe.tip("production")
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    notes = "First <b>cut</b> | see #12 & [this](x)"
    promoted = pipe.run("promote", "hello", "--to", "production", "--activate", "-m", notes)
    assert promoted.code == 0, promoted.err
    code, text = _summary(pipe, out, base, "production")
    assert code == 0
    assert text.startswith("## ✅ loomgit check-promotion\n\nok: ")
    production = text.split("### production\n", 1)[1].split("\n\n###", 1)[0]
    assert "| workflow | version | serving | what changes |" in production
    assert (
        "| `hello` | **v1** (new) | inactive → **active** | new workflow, steps: `greet`, `say`"
        "<br>answers webhook POST /hooks/production/hello"
        "<br>answers schedule '0 9 \\* \\* 1-5' (Europe/Berlin)"
        "<br>notes: *First \\<b\\>cut\\</b\\> \\| see \\#12 \\& \\[this\\](x)* |"
    ) in production
    tip = pipe.tip("production")[:12]
    assert "### Commits\n\n" in text and f"- `{tip}` Promote hello v1 to production — " in text
    # The branch layout's pull request targets production's branch only; in the folders
    # layout the range holds staging's promotion too.
    assert ("### staging\n" in text) == (pipe.layout == "directories")

    # The next pull request: v2, with its step's change; appended after the first summary
    # (a GitHub job's summary file is shared by its steps).
    base = pipe.tip("production")
    pipe.edit("hello", V2)
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    assert pipe.run("promote", "hello", "--to", "production").code == 0
    code, text = _summary(pipe, out, base, "production")
    assert code == 0 and text.count("## ✅ loomgit check-promotion") == 2
    second = text.rsplit("### production\n", 1)[1]
    assert "| `hello` | v1 → **v2** | active | step changed: `say` (timeout)<br>" in second
    assert "notes:" not in second.split("\n\n")[0], "v2 was promoted without notes"


def test_the_summary_shows_activations_and_rollbacks(pipe: Pipeline, tmp_path: Path) -> None:
    out = tmp_path / "summary.md"
    for text in (None, V2, V3):
        if text:
            pipe.edit("hello", text)
        assert pipe.run("promote", "hello", "--to", "staging").code == 0
    base = pipe.tip("staging")
    assert pipe.run("activate", "hello", "--env", "staging").code == 0
    assert pipe.run("rollback", "hello", "--env", "staging", "-m", "v3 pages at night").code == 0
    code, text = _summary(pipe, out, base, "staging")
    assert code == 0, text
    row = next(line for line in text.splitlines() if line.startswith("| `hello` |"))
    assert row.startswith("| `hello` | v3 → **v2** (rollback) | inactive → **active** | ")
    assert "notes: *Rollback of hello in staging from v3 to v2. v3 pages at night*" in row
    out.unlink()
    base = pipe.tip("staging")
    assert pipe.run("deactivate", "hello", "--env", "staging").code == 0
    code, text = _summary(pipe, out, base, "staging")
    assert "| `hello` | v2 | active → **inactive** | no change to steps or triggers |" in text


def test_the_summary_of_a_refused_pull_request(pipe: Pipeline, tmp_path: Path) -> None:
    out = tmp_path / "summary.md"
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    base = pipe.tip("staging")
    pipe.commit_on("staging", {"workflows/hello.yaml": V2.encode()}, "quick fix in staging")
    code, text = _summary(pipe, out, base, "staging")
    assert code == 1
    assert text.startswith("## ❌ loomgit check-promotion\n\n2 errors; checked ")
    assert "| `hello` | v1 | inactive | step changed: `say` (timeout) |" in text
    assert f"- `{pipe.tip('staging')[:12]}` quick fix in staging — 1 error" in text
    hello = pipe.rel("staging", "workflows/hello.yaml")
    assert (
        f"### Problems\n\n- `{hello}:20:1` **error** LG600: commit {pipe.tip('staging')[:12]}:"
        " hello in staging was edited by hand"
    ) in text
    # A check that stops before its report says so in the summary too.
    out.unlink()
    code, text = _summary(pipe, out, "no-such-branch", "staging")
    assert code == 2
    assert text == (
        "## ❌ loomgit check-promotion\n\nThe check stopped: unknown revision 'no-such-branch'"
        "; hint: check the branch, tag or commit id\n"
    )
    # A file that cannot be written is refused before anything is checked.
    result = pipe.run("check-promotion", "--base", base, "--summary", str(tmp_path / "no/x.md"))
    assert result.code == 2 and result.out == ""
    assert "--summary " in result.err and "cannot write to it" in result.err


def test_the_summary_of_nothing_and_of_edits(pipe: Pipeline, tmp_path: Path) -> None:
    out = tmp_path / "summary.md"
    base = pipe.tip("development")
    code, text = _summary(pipe, out, base, "development")
    assert code == 0 and "It changes no environment's workflows, variables or credentials." in text
    out.unlink()
    pipe.edit("hello", V2)
    pipe.commit_on("development", {"variables.yaml": b"variables: {}\n"}, "drop the greeting")
    code, text = _summary(pipe, out, base, "development", "--no-validate")
    assert code == 0, text
    assert "HEAD not validated here" in text
    assert "| `hello` | edited | inactive | step changed: `say` (timeout) |" in text
    assert "Also changed: `variables.yaml` (values are not shown)" in text


def test_a_big_pull_request_is_listed_in_part(
    pipe: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A summary stays within what GitHub keeps of a step's summary (1 MiB): the first
    workflows by name, the first changes of each, the first commits and problems."""
    monkeypatch.setattr(review, "MAX_ROWS", 1)
    monkeypatch.setattr(review, "MAX_ITEMS", 1)
    monkeypatch.setattr(review, "MAX_LINES", 1)
    out = tmp_path / "summary.md"
    base = pipe.tip("staging")
    pipe.edit("bye", HELLO.replace("hello", "bye"))
    assert pipe.run("promote", "--all", "--to", "staging").code == 0
    pipe.edit("hello", V2)
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    code, text = _summary(pipe, out, base, "staging")
    assert code == 0, text
    staging = text.split("### staging\n", 1)[1]
    assert "| `bye` | **v1** (new) | inactive | new workflow, steps: `greet`, … and 1 more |" in (
        staging
    )
    assert "`hello`" not in staging.split("### Commits")[0]
    assert "\n… and 1 more (`loomgit status` lists every workflow)\n" in staging
    assert staging.count("\n- `") == 1 and " more commits (see the job's log)\n" in staging


def _changes(pipe: Pipeline, base: str, env: str, *more: str) -> tuple[int, str, str]:
    result = pipe.run("changes", "--base", base, "--head", pipe.ref(env), *more)
    return result.code, result.out, result.err


def test_changes_says_what_a_branch_changes(pipe: Pipeline) -> None:
    """`loomgit changes`: the summary's review, on a terminal, as Markdown and as JSON,
    checking nothing."""
    base = pipe.tip("production")
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    notes = "First <b>cut</b> | see #12"
    assert pipe.run("promote", "hello", "--to", "production", "-m", notes).code == 0
    head = pipe.tip("production")
    code, out, err = _changes(pipe, base, "production", "--env", "production")
    assert (code, err) == (0, "")
    assert out == (
        f"What {pipe.ref('production')} ({head[:12]}) changes, since {base[:12]}, "
        f"where {pipe.ref('production')} forks from {base}:\n"
        "\n"
        "production\n"
        "  hello: v1 (new), inactive\n"
        "    new workflow, steps: greet, say\n"
        f"    notes: {notes}\n"
    )
    code, out, _ = _changes(pipe, base, "production", "--format", "markdown")
    assert code == 0 and out.startswith("## What changes in each environment\n\n")
    assert (
        "| `hello` | **v1** (new) | inactive | new workflow, steps: `greet`, `say`"
        "<br>notes: *First \\<b\\>cut\\</b\\> \\| see \\#12* |"
    ) in out
    assert ("### staging\n" in out) == (pipe.layout == "directories")

    base = pipe.tip("staging")
    pipe.edit("hello", V2)
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    assert pipe.run("activate", "hello", "--env", "staging").code == 0
    code, out, _ = _changes(pipe, base, "staging", "--format", "json")
    assert code == 0
    found = json.loads(out)
    assert (found["base"], found["head"]) == (base, pipe.tip("staging"))
    assert found["merge_base"] == base
    staging = next(e for e in found["environments"] if e["name"] == "staging")
    assert staging["settings"] == []
    (hello,) = staging["workflows"]
    assert hello["name"] == "hello" and hello["file"] == "changed"
    assert (hello["before"]["version"], hello["before"]["active"]) == (1, False)
    assert (hello["after"]["version"], hello["after"]["active"]) == (2, True)
    assert hello["after"]["promoted_from"] == "development"
    assert hello["changes"]["steps_changed"] == [{"id": "say", "fields": ["timeout"]}]
    assert hello["changes"]["steps_added"] == [] and hello["changes"]["other_changes"] == []
    assert "webhook POST /hooks/staging/hello" in hello["answers"]


def test_changes_refuses_what_it_cannot_read(pipe: Pipeline) -> None:
    base = pipe.tip("staging")
    code, out, _ = _changes(pipe, base, "staging")
    assert code == 0
    assert out.startswith(f"{pipe.ref('staging')} changes no environment's workflows, ")
    for args, said in (
        (("--base", "no-such-branch"), "error: unknown revision 'no-such-branch'"),
        (("--base", base, "--env", "stagin"), "error: unknown environment 'stagin'"),
        (("--base", base, "--env", ""), "error: --env was given an empty value"),
        (("--base", base, "--format", "yaml"), "error: invalid value for '--format'"),
    ):
        result = pipe.run("changes", *args)
        assert result.code == 2 and result.out == "", args
        assert result.err.splitlines()[0].startswith(said), result.err
        assert "Traceback" not in result.err
