"""Rollback, restore and the pull-request gate, on both layouts."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from conftest import HELLO, VARIABLES, AgeKey, Result, commit_all, git
from pipeline import ENVS, Pipeline
from test_promotion import V2, V3, refused

from loomgit import schema
from loomgit.problems import first_changed_line
from loomgit.vcs import Git


def _three_versions_in_staging(pipe: Pipeline) -> None:
    for text in (None, V2, V3):
        if text:
            pipe.edit("hello", text)
        assert pipe.run("promote", "hello", "--to", "staging").code == 0
    assert pipe.run("activate", "hello", "--env", "staging").code == 0


def test_rollback_to_the_previous_version(pipe: Pipeline) -> None:
    _three_versions_in_staging(pipe)
    result = pipe.run("rollback", "hello", "--env", "staging", "-m", "v3 pages at night")
    assert result.code == 0 and "from v3 to v2" in result.out
    rec = pipe.record("staging", "hello")
    assert rec and rec.version == 2 and rec.rolled_back_from == 3 and rec.active is True
    assert pipe.file("staging", "hello") == V2.encode()
    assert "Loomgit-Rollback: staging hello v3 -> v2" in pipe.message("staging")
    assert "rolled back from v3" in pipe.run("status").out
    assert pipe.run("validate").code == 0


def test_rollback_to_a_version_and_it_sticks(pipe: Pipeline) -> None:
    _three_versions_in_staging(pipe)
    # A version as status prints it (v1) or as a number.
    assert pipe.run("rollback", "hello", "--env", "staging", "--to-version", "v1").code == 0
    assert pipe.file("staging", "hello") == HELLO.encode()
    refused(pipe, "rollback", "hello", "--env", "staging", "--to-version", "9", says="never ran v9")
    refused(
        pipe, "rollback", "hello", "--env", "staging", "--to-version", "1", says="already runs v1"
    )
    # --all leaves a rolled-back workflow alone; naming it promotes it again, as v4.
    result = pipe.run("promote", "--all", "--to", "staging")
    assert result.code != 0 and "rolled back from v3" in result.err
    pipe.edit("hello", V3.replace("5s", "6s"))
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    rec = pipe.record("staging", "hello")
    assert rec and rec.version == 4 and rec.rolled_back_from is None


def test_activation_as_a_pull_request(pipe: Pipeline) -> None:
    """Production branches are protected: an activation is reviewed like a promotion."""
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    target = pipe.tip("staging")
    result = pipe.run(
        "activate", "hello", "--env", "staging", "--branch", "activate/hello", "-m", "soaked"
    )
    assert result.code == 0, result.err
    assert pipe.tip("staging") == target  # the target itself is untouched
    assert git(pipe.path, "rev-parse", "activate/hello^") == target
    assert "Activate hello in staging (commit " in result.out
    assert result.err == (
        "next: push it (`git push -u origin activate/hello`) and open a pull request into "
        f"{pipe.ref('staging')} with this title and body\n"
    )
    assert "Pull request title:\nActivate hello in staging\n" in result.out
    body = result.out.split("Pull request body:\n", 1)[1]
    assert body.startswith("soaked\n\n### `hello` v1: active in staging\n")
    assert "once the commit is merged and applied" in body
    assert "- webhook POST /hooks/staging/hello\n" in body
    assert re.search(r"- schedule '0 9 \* \* 1-5' \(Europe/Berlin\), next: \S+, \S+, \S+\n", body)
    message = git(pipe.path, "log", "-1", "--format=%B", "activate/hello")
    assert message.splitlines()[2] == "soaked"
    assert message.endswith("Loomgit-Activation: staging hello active")
    check = pipe.run("check-promotion", "--base", pipe.ref("staging"), "--head", "activate/hello")
    assert check.code == 0, check.out + check.err
    tip = git(pipe.path, "rev-parse", "--short=12", "activate/hello")
    assert f"  {tip} Activate hello in staging — hello activated in staging\n" in check.out
    refused(
        pipe,
        "activate",
        "hello",
        "--env",
        "staging",
        "--branch",
        "activate/hello",
        says="activate/hello already exists",
    )
    refused(pipe, "deactivate", "hello", "--env", "staging", "--branch", "-x", says="not a valid")


def test_activation_dry_run_and_json(pipe: Pipeline) -> None:
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    before = pipe.snapshot()
    result = pipe.run("activate", "hello", "--env", "staging", "--dry-run")
    assert result.code == 0, result.err
    assert result.out.startswith(f"would commit on {pipe.ref('staging')}: Activate hello in")
    assert "    webhook POST /hooks/staging/hello\n" in result.out
    report = json.loads(
        pipe.run("activate", "hello", "--env", "staging", "--dry-run", "--format", "json").out
    )
    assert pipe.snapshot() == before, "a dry run writes nothing"
    assert report["dry_run"] is True and report["changed"] is True and report["version"] == 1
    assert "Loomgit-Activation: staging hello active" in report["message"]
    webhook, schedule = report["triggers"]
    assert webhook == {"type": "webhook", "method": "POST", "url": "/hooks/staging/hello"}
    assert schedule["timezone"] == "Europe/Berlin" and len(schedule["next_fires"]) == 3
    report = json.loads(pipe.run("activate", "hello", "--env", "staging", "--format", "json").out)
    assert report["commit"] == pipe.tip("staging") and report["branch"] == pipe.ref("staging")
    again = json.loads(pipe.run("activate", "hello", "--env", "staging", "--format", "json").out)
    assert again == {
        "changed": False,
        "workflow": "hello",
        "environment": "staging",
        "active": True,
    }
    result = pipe.run(
        "deactivate", "hello", "--env", "staging", "-m", "Loomgit-Rollback: x\noutage"
    )
    assert result.code == 0, result.err
    assert "it stops answering in staging once the commit is applied (v1 stays deployed)" in (
        result.out
    )
    message = pipe.message("staging")
    assert "\nLoomgit-Rollback" not in message and "> Loomgit-Rollback: x" in message
    events = pipe.run("history", "hello", "--env", "staging").out
    assert "Deactivate hello in staging" in events and "outage" in events
    check = pipe.run("check-promotion", "--base", f"{pipe.ref('staging')}~2")
    assert check.code == 0, check.out + check.err
    if pipe.layout == "directories":  # in the branch layout, HEAD is development's branch
        assert "Deactivate hello in staging — hello deactivated in staging\n" in check.out


def test_activation_refuses_what_the_daemon_could_not_serve(pipe: Pipeline) -> None:
    """A definition that does not validate, or that needs a variable or a credential the
    environment lacks, is refused with nothing written: the daemon would refuse the commit.
    Turning a broken workflow off never is, and listing what stops must not be in its way."""
    activate = ("activate", "hello", "--env", "development")
    assert pipe.run(*activate).code == 0
    pipe.edit("hello", "apiVersion: loomgit/v1\nkind: Workflow\nmetadata: {name: hello}\n")
    result = pipe.run("deactivate", "hello", "--env", "development")
    assert result.code == 0, result.err
    assert "(its definition does not validate: see `loomgit validate`)" in result.out
    assert pipe.record("development", "hello").active is False  # type: ignore[union-attr]
    for args in ((), ("--dry-run",), ("--branch", "on/hello"), ("--format", "json")):
        result = refused(pipe, *activate, *args, says="error[LG202]")
        first, hint = result.err.splitlines()
        path = pipe.rel("development", "workflows/hello.yaml")
        assert first.startswith(f"error: hello does not validate in development: {path}@")
        assert hint == "hint: fix it in development and commit, then activate it"
    pipe.edit("hello", HELLO.replace("vars.greeting", "vars.farewell"))
    says = "error: hello uses vars.farewell, which is not defined in development's variables"
    refused(pipe, *activate, says=says)
    pipe.edit("hello", HELLO.replace("[greeter]", "[greeter, mailer]"))
    says = "error: hello uses credential mailer, which does not resolve in development\n"
    result = refused(pipe, *activate, says=says)
    assert "hint: set it first: `loomgit credentials set mailer --env development`" in result.err
    # A later environment: a promoted definition whose variable its variables.yaml lost.
    pipe.edit("hello", HELLO)
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    pipe.commit_on("staging", {"variables.yaml": VARIABLES.replace("greeting", "g").encode()}, "x")
    says = "hello uses vars.greeting, which is not defined in staging's variables.yaml"
    refused(pipe, "activate", "hello", "--env", "staging", says=says)
    assert pipe.run(*activate).code == 0


def test_rollback_as_a_pull_request_and_dry_run(pipe: Pipeline) -> None:
    _three_versions_in_staging(pipe)
    before = pipe.snapshot()
    result = pipe.run("rollback", "hello", "--env", "staging", "--dry-run")
    assert result.code == 0, result.err
    assert pipe.snapshot() == before, "a dry run writes nothing"
    assert result.out.startswith(f"would commit on {pipe.ref('staging')}: Roll back hello in")
    assert "stays active in staging: it serves v2 once the commit is applied" in result.out
    report = json.loads(
        pipe.run("rollback", "hello", "--env", "staging", "--dry-run", "--format", "json").out
    )
    assert (report["from_version"], report["to_version"], report["dry_run"]) == (3, 2, True)
    assert report["workflow"]["version_before"] == 3
    target = pipe.tip("staging")
    result = pipe.run(
        "rollback", "hello", "--env", "staging", "--branch", "rollback/hello", "-m", "pages"
    )
    assert result.code == 0, result.err
    assert pipe.tip("staging") == target
    first = result.out.splitlines()[0]
    assert first.startswith("Roll back hello in staging") and "on rollback/hello)" in first
    assert "rolled back" not in first, "nothing is rolled back before the merge"
    body = result.out.split("Pull request body:\n", 1)[1]
    assert body.startswith("pages\n\n### `hello` v3 -> v2\n")
    check = pipe.run("check-promotion", "--base", pipe.ref("staging"), "--head", "rollback/hello")
    assert check.code == 0, check.out + check.err
    assert " — hello rolled back to v2 in staging\n" in check.out
    assert pipe.record("staging", "hello").version == 3  # type: ignore[union-attr]


def test_a_rollback_must_run_where_it_is_put_back(pipe: Pipeline) -> None:
    """An active workflow serves the version put back at once, so that version must run
    in the environment as it is now (its variables, its credentials); before, the commit
    was made and the daemon refused it."""
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    pipe.edit("hello", V2.replace("{{ vars.greeting }}", "Hi"))
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    assert pipe.run("activate", "hello", "--env", "staging").code == 0
    dry = pipe.run("rollback", "hello", "--env", "staging", "--dry-run")
    assert dry.code == 0 and "credential greeter: resolves in staging" in dry.out, dry.out
    no_greeting = VARIABLES.replace("  greeting: Hello\n", "  other: x\n").encode()
    pipe.commit_on("staging", {"variables.yaml": no_greeting}, "greeting no longer used")
    before = pipe.snapshot()
    result = pipe.run("rollback", "hello", "--env", "staging")
    assert (result.code, result.err) == (
        1,
        "error: v1 of hello cannot run in staging as it is now: hello uses vars.greeting, "
        "which is not defined in staging's variables.yaml\n"
        "hint: add it there first (variables are per environment)\n",
    )
    assert pipe.snapshot() == before
    # Inactive, it serves nothing: it is put back, and `activate` checks it when turned on.
    assert pipe.run("deactivate", "hello", "--env", "staging").code == 0
    assert pipe.run("rollback", "hello", "--env", "staging").code == 0
    assert "uses vars.greeting" in pipe.run("activate", "hello", "--env", "staging").err


def test_rollback_refusals(pipe: Pipeline) -> None:
    refused(pipe, "rollback", "hello", "--env", "development", says="revisions, not versions")
    refused(pipe, "rollback", "hello", "--env", "staging", says="not deployed to staging")
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    refused(pipe, "rollback", "hello", "--env", "staging", says="only ever run v1")


def test_revisions_and_restore_with_backup(pipe: Pipeline) -> None:
    first = pipe.tip("development")
    pipe.edit("hello", V2)
    revs = pipe.run("revisions", "hello").out.splitlines()
    assert len(revs) == 2 and revs[1].startswith(first[:12])
    if pipe.layout == "branches":
        assert git(pipe.path, "branch", "--show-current") == "env/development"
    wip = pipe.path / pipe.rel("development", "workflows/hello.yaml")
    wip.write_text(V3 + "# unfinished\n")
    result = pipe.run("restore", "hello", first[:12])
    assert result.code == 0, result.err
    assert "refs/loomgit/backups/hello/" in result.out
    backup = re.search(r"(refs/loomgit/backups/\S+)", result.out).group(1)  # type: ignore[union-attr]
    saved = git(pipe.path, "show", f"{backup}:{pipe.rel('development', 'workflows/hello.yaml')}")
    assert saved == (V3 + "# unfinished").strip()
    assert wip.read_text() == HELLO
    assert pipe.file("development", "hello") == HELLO.encode()
    assert git(pipe.path, "status", "--porcelain") == ""
    assert "Loomgit-Restore: hello" in pipe.message("development")
    assert "warning" not in result.err


def test_restore_as_a_pull_request_leaves_the_work_tree_alone(pipe: Pipeline) -> None:
    first = pipe.tip("development")
    edited = pipe.edit("hello", V2)
    wip = pipe.path / pipe.rel("development", "workflows/hello.yaml")
    wip.write_text(V3 + "# unfinished\n")
    result = pipe.run("restore", "hello", first[:12], "--branch", "restore/hello")
    assert result.code == 0, result.err
    assert result.out.startswith(f"Restore hello to revision {first[:12]} (commit ")
    assert "on restore/hello)" in result.out.splitlines()[0]
    assert "Pull request body:\nPuts back `hello` as of " + first in result.out
    assert f"a pull request into {pipe.ref('development')} with this title" in result.err
    assert pipe.tip("development") == edited, "the environment's branch does not move"
    assert wip.read_text() == V3 + "# unfinished\n", "nothing uncommitted is touched"
    assert not git(pipe.path, "for-each-ref", "refs/loomgit/backups/"), "nothing to back up"
    path = pipe.rel("development", "workflows/hello.yaml")
    assert git(pipe.path, "show", f"restore/hello:{path}") == HELLO.strip()
    assert git(pipe.path, "rev-parse", "restore/hello^") == edited
    refused = pipe.run("restore", "hello", first[:12], "--branch", "restore/hello")
    assert refused.code != 0 and "restore/hello" in refused.err, "an existing branch stays"
    bad = pipe.run("restore", "hello", first[:12], "--branch", "-x")
    assert bad.code == 2 and "'-x' is not a valid branch name" in bad.err


def test_restore_reports_as_json(pipe: Pipeline) -> None:
    first = pipe.tip("development")
    pipe.edit("hello", V2)
    wip = pipe.path / pipe.rel("development", "workflows/hello.yaml")
    wip.write_text(V3)
    report = json.loads(pipe.run("restore", "hello", first[:12], "--format", "json").out)
    backup = report.pop("backup")
    assert backup.startswith("refs/loomgit/backups/hello/")
    subject = f"Restore hello to revision {first[:12]}"
    assert report == {
        "changed": True,
        "workflow": "hello",
        "revision": first,
        "subject": subject,
        "problem": None,
        "commit": pipe.tip("development"),
        "branch": pipe.ref("development"),
        "created_from": None,
    }
    again = json.loads(pipe.run("restore", "hello", first[:12], "--format", "json").out)
    assert again == {
        "changed": False,
        "workflow": "hello",
        "revision": first,
        "subject": subject,
        "backup": None,
        "problem": None,
    }
    pipe.edit("hello", V2)
    tip = pipe.tip("development")
    args = ("restore", "hello", first[:12], "--branch", "restore/hello", "--format", "json")
    proposed = json.loads(pipe.run(*args).out)
    assert (proposed["commit"], proposed["branch"]) == (
        git(pipe.path, "rev-parse", "restore/hello"),
        "restore/hello",
    )
    assert proposed["pull_request"] == {
        "title": subject,
        "body": f"Puts back `hello` as of {first}.\n",
    }
    assert pipe.tip("development") == tip


def test_restoring_a_revision_that_does_not_validate_says_so(pipe: Pipeline) -> None:
    text = HELLO.replace("      type: log\n", "      type: logg\n", 1)
    broken = pipe.edit("hello", text)
    pipe.edit("hello", V2)
    result = pipe.run("restore", "hello", broken[:12])
    assert result.code == 0, result.err
    assert pipe.file("development", "hello") == text.encode()
    assert "warning: this revision does not validate: " in result.err
    assert "workflows/hello.yaml:" in result.err and "error[LG321]" in result.err


def _check(pipe: Pipeline, base: str, env: str = "production") -> Result:
    return pipe.run("check-promotion", "--base", base, "--head", pipe.ref(env))


def _promoted_to_production(pipe: Pipeline) -> str:
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    assert pipe.run("promote", "hello", "--to", "production").code == 0
    return pipe.tip("production")


def test_check_promotion_accepts_loomgit_commits(pipe: Pipeline) -> None:
    base = pipe.tip("production")
    _promoted_to_production(pipe)
    assert pipe.run("activate", "hello", "--env", "production").code == 0
    result = _check(pipe, base)
    assert result.code == 0, result.out


def test_check_promotion_refuses_a_removal_and_says_what_to_do(pipe: Pipeline) -> None:
    """What was promoted to a later environment stays there: removing it in a pull request
    is refused, and the error names the command that stops it instead."""
    base = _promoted_to_production(pipe)
    pipe.commit_on("production", {"workflows/hello.yaml": None}, "retire hello")
    result = _check(pipe, base)
    assert result.code == 1
    assert (
        f"error[LG600]: commit {pipe.tip('production')[:12]}: hello was removed from"
        " production; environments after the first change only through loomgit:"
        " `loomgit deactivate hello --env production` stops it instead"
    ) in result.out


def test_check_promotion_catches_a_hand_edit(pipe: Pipeline) -> None:
    base = _promoted_to_production(pipe)
    pipe.commit_on("production", {"workflows/hello.yaml": V2.encode()}, "quick fix in prod")
    result = _check(pipe, base)
    assert result.code == 1
    assert "error[LG600]" in result.out and "edited by hand" in result.out
    # Pointed at the first line the commit changed, so the annotation sits on the diff.
    hello = pipe.rel("production", "workflows/hello.yaml")
    assert f"{hello}:20:1: error[LG600]" in result.out
    github = pipe.run(
        "check-promotion", "--base", base, "--head", pipe.ref("production"), "--format", "github"
    ).out
    assert f"::error file={hello},line=20,col=1,title=LG600::" in github
    # validate finds the same line: what was promoted is read back from its source commit.
    shown = hello if pipe.layout == "directories" else f"{pipe.ref('production')}:{hello}"
    assert f"{shown}:20:1: error[LG401]" in pipe.run("validate").out


def test_check_promotion_lets_the_schemas_be_refreshed(pipe: Pipeline) -> None:
    # In the branch layout `loomgit init` commits schemas/ on every environment's branch.
    base = _promoted_to_production(pipe)
    schemas = {
        f"schemas/{name}": schema.dumps(s).encode() + b"\n" for name, s in schema.generate().items()
    }
    if pipe.layout == "branches":
        pipe.commit_on("production", schemas, "Refresh the JSON Schemas")
    else:
        for rel, data in schemas.items():
            (pipe.path / rel).write_bytes(data)
        commit_all(pipe.path, "Refresh the JSON Schemas")
    assert _check(pipe, base).code == 0, _check(pipe, base).out
    pipe.commit_on("production", {"schemas/extra.json": b"{}"}, "not a schema loomgit writes")
    result = _check(pipe, base)
    assert result.code == 1 and "error[LG600]" in result.out
    assert "schemas/extra.json in production is not a file loomgit manages" in result.out


@pytest.mark.parametrize("pipe", ["branches"], indirect=True)
def test_check_promotion_lets_shared_files_go_down_the_pipeline(pipe: Pipeline) -> None:
    # loomgit.yaml is the same on every branch: a change to it (here, a comment) is made
    # on the first branch, then brought to each next one as it is on the one before.
    base = {env: pipe.tip(env) for env in ENVS}
    config = git(pipe.path, "show", "env/development:loomgit.yaml") + "\n# reviewed by ops\n"
    shared = {"loomgit.yaml": config.encode(), ".gitignore": b".venv/\n"}
    pipe.commit_on("development", shared, "Note the pipeline's review")
    pipe.commit_on("production", shared, "The same, straight to production")
    result = _check(pipe, base["production"])
    assert result.code == 1
    assert "loomgit.yaml in production is not as on env/staging" in result.out
    assert ".gitignore in production is not as on env/staging" in result.out
    git(pipe.path, "branch", "-f", "env/production", base["production"])
    pipe.commit_on("staging", shared, "The pipeline's review, in staging")
    assert _check(pipe, base["staging"], "staging").code == 0
    pipe.commit_on("production", shared, "The pipeline's review, in production")
    assert _check(pipe, base["production"]).code == 0
    # A file the branch before does not have is still not production's to add.
    pipe.commit_on("production", {"notes.txt": b"hello\n"}, "a note")
    result = _check(pipe, base["production"])
    assert result.code == 1
    assert "notes.txt in production is not a file loomgit manages" in result.out


def _forge(pipe: Pipeline, env: str, content: str, message: str, **record: object) -> None:
    """Writes a workflow and a matching-looking record by hand, as an attacker would."""
    with Git(pipe.path) as g:
        tip = g.resolve(pipe.ref(env))
        state = g.blob_at(tip, pipe.rel(env, "environment.yaml")) or b""
    text = state.decode()
    digest = "sha256:" + hashlib.sha256(content.encode()).hexdigest()
    text = text.replace(
        text[text.index("    digest:") :].split("\n", 1)[0], f"    digest: {digest}"
    )
    for key, value in record.items():
        old = next(ln for ln in text.splitlines() if ln.startswith(f"    {key}:"))
        text = text.replace(old, f"    {key}: {value}")
    pipe.commit_on(
        env, {"workflows/hello.yaml": content.encode(), "environment.yaml": text.encode()}, message
    )


def test_check_promotion_catches_content_that_differs_from_its_source(pipe: Pipeline) -> None:
    base = _promoted_to_production(pipe)
    _forge(
        pipe,
        "production",
        V2,
        "Promote hello v1 to production\n\n"
        "Loomgit-Promotion: staging -> production\nLoomgit-Workflow: hello v1",
    )
    result = _check(pipe, base)
    assert result.code == 1 and "error[LG601]" in result.out
    hello = pipe.rel("production", "workflows/hello.yaml")
    assert f"{hello}:20:1: error[LG601]" in result.out  # where it departs from staging's


def test_check_promotion_catches_a_forged_trailer(pipe: Pipeline) -> None:
    base = pipe.tip("production")
    message = (
        "Promote hello v1 to production\n\n"
        "Loomgit-Promotion: staging -> production\nLoomgit-Workflow: hello v1\n"
    )
    pipe.commit_on("production", {"README.md": b"hi\n"}, message)
    result = _check(pipe, base)
    assert result.code == 1 and "error[LG604]" in result.out
    assert "claim a promotion of hello" in result.out


def test_check_promotion_catches_a_skip(pipe: Pipeline) -> None:
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    base = pipe.tip("production")
    with Git(pipe.path) as g:
        staging_state = g.blob_at(
            g.resolve(pipe.ref("staging")), pipe.rel("staging", "environment.yaml")
        )
    assert staging_state is not None
    text = staging_state.decode().replace("environment: staging", "environment: production")
    pipe.commit_on(
        "production",
        {"workflows/hello.yaml": HELLO.encode(), "environment.yaml": text.encode()},
        "Promote hello v1 to production\n\nLoomgit-Promotion: development -> "
        "production\nLoomgit-Workflow: hello v1",
    )
    result = _check(pipe, base)
    assert result.code == 1 and "error[LG602]" in result.out
    assert "promotions to production come from staging" in result.out


def test_check_promotion_catches_a_record_edit(pipe: Pipeline) -> None:
    base = _promoted_to_production(pipe)
    with Git(pipe.path) as g:
        state = g.blob_at(
            g.resolve(pipe.ref("production")), pipe.rel("production", "environment.yaml")
        )
    assert state is not None
    pipe.commit_on(
        "production", {"environment.yaml": state.replace(b"version: 1", b"version: 7")}, "bump"
    )
    result = _check(pipe, base)
    assert result.code == 1 and "changed by hand (version)" in result.out


def test_check_promotion_github_format(pipe: Pipeline) -> None:
    base = _promoted_to_production(pipe)
    pipe.commit_on("production", {"workflows/hello.yaml": V2.encode()}, "hand edit")
    out = pipe.run(
        "check-promotion", "--base", base, "--head", pipe.ref("production"), "--format", "github"
    ).out
    assert "::error " in out and "title=LG600" in out


def test_check_promotion_refuses_a_shallow_clone(pipe: Pipeline, tmp_path: Path) -> None:
    """A shallow clone lacks the commits promotions copied from; checked anyway, every
    promotion looked forged ("the source commit does not exist")."""
    base = pipe.tip("production")
    _promoted_to_production(pipe)
    clone = tmp_path / "ci"
    url = pipe.path.as_uri()
    git(tmp_path, "clone", "--quiet", "--depth", "1", "--no-single-branch", url, str(clone))
    git(clone, "checkout", "--quiet", pipe.ref("production"))
    args = ("check-promotion", "--base", base, "--repo", clone)
    result = pipe.cli(*args, "--format", "github")
    assert result.code == 2, result.out + result.err
    assert "is a shallow clone" in result.err and "git fetch --unshallow" in result.err
    assert result.out.startswith("::error title=loomgit::") and "fetch-depth: 0" in result.out
    assert "the whole history; hint: run `git fetch --unshallow`" in result.out
    git(clone, "fetch", "--quiet", "--unshallow")
    result = pipe.cli(*args)
    assert result.code == 0, result.out + result.err


def test_rollback_and_history_in_a_shallow_clone(pipe: Pipeline, tmp_path: Path) -> None:
    """A shallow clone holds no earlier version: rollback said staging "has only ever run
    v3", and history listed the last commit as if it were all there was."""
    _three_versions_in_staging(pipe)
    clone = tmp_path / "shallow"
    url = pipe.path.as_uri()
    git(tmp_path, "clone", "--quiet", "--depth", "1", "--no-single-branch", url, str(clone))
    git(clone, "checkout", "--quiet", pipe.ref("staging"))
    result = pipe.cli("rollback", "hello", "--env", "staging", "--repo", clone)
    assert result.code == 1 and result.err.splitlines() == [
        "error: no version of hello before v3 in this shallow clone's history",
        "hint: run `git fetch --unshallow`; in GitHub Actions, give actions/checkout "
        "`fetch-depth: 0`",
    ]
    result = pipe.cli("rollback", "hello", "--env", "staging", "--to-version", "1", "--repo", clone)
    assert "v1 of hello is not in this shallow clone's history" in result.err
    for command in (("history",), ("revisions", "hello"), ("history", "--format", "json")):
        result = pipe.cli(*command, "--repo", clone)
        assert result.code == 0 and "note: this is a shallow clone" in result.err, command
        assert "note:" not in pipe.run(*command).err
    git(clone, "fetch", "--quiet", "--unshallow")
    result = pipe.cli("rollback", "hello", "--env", "staging", "--repo", clone)
    assert result.code == 0 and "from v3 to v2" in result.out, result.err
    assert "shallow" not in pipe.cli("history", "--repo", clone).err


def test_first_environment_is_free_to_change(pipe: Pipeline) -> None:
    base = pipe.tip(ENVS[0])
    pipe.edit("hello", V2)
    assert pipe.run("check-promotion", "--base", base, "--head", pipe.ref(ENVS[0])).code == 0


def test_init_writes_the_pull_request_workflow(pipe: Pipeline) -> None:
    if pipe.layout == "directories":
        text = (pipe.path / ".github/workflows/loomgit.yml").read_text()
    else:
        text = git(pipe.path, "show", "env/production:.github/workflows/loomgit.yml")
    assert "loomgit validate --format github" in text
    assert 'loomgit check-promotion --base "origin/${{ github.base_ref }}" --no-validate' in text
    # It runs when validate failed too, and writes what the pull request changes.
    assert "- if: ${{ !cancelled() }}\n        run: >-\n          loomgit check-promotion" in text
    assert '--format github\n          --summary "$GITHUB_STEP_SUMMARY"' in text


def test_credential_commits_pass_the_gate(pipe: Pipeline, tmp_path: Path) -> None:
    base = pipe.tip("production")
    fields = tmp_path / "f.json"
    fields.write_text('{"token": "scoped"}')
    result = pipe.run(
        "credentials", "set", "greeter", "--env", "production", "--from-json", str(fields)
    )
    assert result.code == 0, result.err
    assert "Loomgit-Credential: production greeter set" in pipe.message("production")
    check = _check(pipe, base)
    assert check.code == 0
    assert "— credentials.sops.yaml changed in production\n" in check.out, check.out
    listed = pipe.run("credentials", "list", "--env", "production").out
    assert "greeter" in listed and "production" in listed


def test_keys_add_updates_every_branch_that_needs_it(
    pipe: Pipeline, tmp_path: Path, age_key: AgeKey
) -> None:
    from conftest import make_key

    from loomgit import sops

    new = make_key(tmp_path, "staging-2")
    result = pipe.run(
        "keys",
        "add",
        "--env",
        "staging",
        "--recipient",
        new.recipient,
        "--age-key-file",
        f"staging={age_key.path}",
    )
    assert result.code == 0, result.err
    for env in ENVS:
        with Git(pipe.path) as g:
            name = (
                "credentials.sops.yaml"
                if pipe.layout == "directories"
                else "global-credentials.sops.yaml"
            )
            shared = g.blob_at(g.resolve(pipe.ref(env)), name)
        assert shared is not None
        token = sops.decrypt(shared, new.path, what="g", env=env)["greeter"]["token"]
        assert token.get_secret_value().startswith("LOOMGIT-CANARY")
        if pipe.layout == "directories":
            break  # one global file
    assert pipe.run("validate").code == 0
    bad = pipe.run("keys", "add", "--env", "staging", "--recipient", "age1nope")
    assert bad.code == 2 and "not an age public key" in bad.err


def test_keys_rm_takes_a_recipient_out_of_one_environment(
    pipe: Pipeline, tmp_path: Path, age_key: AgeKey
) -> None:
    from conftest import make_key

    from loomgit import sops

    new = make_key(tmp_path, "staging-2")
    old = f"staging={age_key.path}"
    fields = tmp_path / "f.json"
    fields.write_text('{"token": "LOOMGIT-CANARY-scoped"}')
    for args in (
        ("keys", "add", "--env", "staging", "--recipient", new.recipient),
        ("credentials", "set", "shop", "--env", "staging", "--from-json", str(fields)),
    ):
        assert pipe.run(*args, "--age-key-file", old).code == 0
    tips = {env: pipe.tip(env) for env in ENVS}
    # Adding a key the environment already has changes nothing, and needs no key.
    again = pipe.run("keys", "add", "--env", "staging", "--recipient", new.recipient)
    assert again.code == 0, again.err
    assert again.out == f"{new.recipient} already decrypts staging's credentials: nothing written\n"
    assert {env: pipe.tip(env) for env in ENVS} == tips
    result = pipe.run(
        "keys", "rm", "--env", "staging", "--recipient", age_key.recipient,
        "--age-key-file", f"staging={new.path}",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "earlier commits" in result.out
    assert f"Loomgit-Keys: staging rm {age_key.recipient}" in pipe.message("staging")
    if pipe.layout == "branches":  # the other environments still have the key: untouched
        assert {e: pipe.tip(e) for e in ENVS if e != "staging"} == {
            e: t for e, t in tips.items() if e != "staging"
        }
    with Git(pipe.path) as g:
        at = g.resolve(pipe.ref("staging"))
        scoped = g.blob_at(at, pipe.rel("staging", "credentials.sops.yaml"))
        shared = g.blob_at(
            at,
            "credentials.sops.yaml"
            if pipe.layout == "directories"
            else "global-credentials.sops.yaml",
        )
    assert scoped is not None and shared is not None
    token = sops.decrypt(scoped, new.path, what="s", env="staging")["shop"]["token"]
    assert token.get_secret_value() == "LOOMGIT-CANARY-scoped"
    with pytest.raises(sops.KeyMissing):
        sops.decrypt(scoped, age_key.path, what="s", env="staging")
    # The global file keeps the key: development and production still use it.
    assert sops.decrypt(shared, age_key.path, what="g", env="development")["greeter"]
    listed = json.loads(pipe.run("keys", "list", "--format", "json").out)
    assert {r["environment"]: r["recipients"] for r in listed} == {
        "development": [age_key.recipient],
        "staging": [new.recipient],
        "production": [age_key.recipient],
    }
    assert pipe.run("validate").code == 0
    before = pipe.tip("staging")
    again = pipe.run("keys", "rm", "--env", "staging", "--recipient", age_key.recipient)
    assert again.code == 1 and "is not an age recipient of staging" in again.err
    last = pipe.run("keys", "rm", "--env", "staging", "--recipient", new.recipient)
    assert last.code == 1 and "staging's only age recipient" in last.err
    assert pipe.tip("staging") == before


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        (None, b"a\n", 1),  # a new file
        (b"a\nb\nc\n", b"a\nB\nc\n", 2),
        (b"a\nb\n", b"a\nb\nc\n", 3),  # a line added at the end
        (b"a\nb\nc\n", b"a\nb\n", 2),  # lines removed at the end: the last that is left
        (b"a\n", b"", 1),
        (b"a\nb", b"a\nb\n", 2),  # only the final newline
    ],
)
def test_first_changed_line(old: bytes | None, new: bytes, line: int) -> None:
    assert first_changed_line(old, new) == line
