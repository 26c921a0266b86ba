"""Promotion scenarios on real repositories, identical for both layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import HELLO, AgeKey, Result, git, make_key
from pipeline import Pipeline

from loomgit import promotion, yamlio
from loomgit.errors import GitError
from loomgit.workspace import Workspace

V2 = HELLO.replace("      type: log\n", "      type: log\n      timeout: 5s\n")
V3 = V2.replace("Europe/Berlin", "Europe/Paris")


def refused(pipe: Pipeline, *args: str, says: str) -> Result:
    before = pipe.snapshot()
    result = pipe.run(*args)
    assert result.code != 0, result.out
    assert says in result.err, result.err
    assert pipe.snapshot() == before, "a refusal must leave the repository unchanged"
    return result


def test_development_to_production_with_notes_and_versions(pipe: Pipeline) -> None:
    source = pipe.tip("development")
    result = pipe.run("promote", "hello", "--to", "staging", "-m", "First cut")
    assert result.code == 0, result.err
    assert "Promote hello v1 to staging" in result.out
    assert pipe.file("staging", "hello") == HELLO.encode()
    rec = pipe.record("staging", "hello")
    assert rec and rec.version == 1 and rec.active is False and rec.notes == "First cut"
    assert rec.promoted_from == "development" and rec.source_commit == source
    message = pipe.message("staging")
    assert message.startswith("Promote hello v1 to staging\n\nFirst cut\n\n")
    assert "Loomgit-Promotion: development -> staging" in message
    assert "Loomgit-Workflow: hello v1" in message
    assert f"Loomgit-Source-Commit: {source}" in message

    pipe.edit("hello", V2)
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    assert pipe.record("staging", "hello").version == 2  # type: ignore[union-attr]
    assert pipe.run("promote", "hello", "--to", "production", "--notes", "ship").code == 0
    prod = pipe.record("production", "hello")
    assert prod and prod.version == 2 and prod.promoted_from == "staging"
    assert pipe.file("production", "hello") == V2.encode()
    assert pipe.run("validate").code == 0


def test_promotion_copies_the_committed_definition(pipe: Pipeline) -> None:
    if pipe.layout == "directories":
        (pipe.path / pipe.rel("development", "workflows/hello.yaml")).write_text(V3)
    result = pipe.run("promote", "hello", "--to", "staging")
    assert result.code == 0
    assert pipe.file("staging", "hello") == HELLO.encode()  # not the uncommitted edit
    if pipe.layout == "directories":
        assert "uncommitted changes" in result.err


def test_skip_and_backward_are_refused(pipe: Pipeline) -> None:
    refused(
        pipe,
        "promote",
        "hello",
        "--to",
        "production",
        says="promote it to staging first: loomgit promote hello --to staging",
    )
    refused(pipe, "promote", "hello", "--to", "development", says="first environment")
    refused(
        pipe,
        "promote",
        "hello",
        "--from",
        "development",
        "--to",
        "production",
        says="the next step from development is loomgit promote WORKFLOW --to staging",
    )
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    refused(
        pipe,
        "promote",
        "hello",
        "--from",
        "production",
        "--to",
        "staging",
        says="promotions go one step forward",
    )


def test_same_definition_and_invalid_source_are_refused(pipe: Pipeline) -> None:
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    refused(pipe, "promote", "hello", "--to", "staging", says="already holds this definition")
    pipe.edit("hello", HELLO.replace("0 9 * * 1-5", "0 0 30 2 *"))
    refused(pipe, "promote", "hello", "--to", "staging", says="does not validate in development")
    refused(pipe, "promote", "ghost", "--to", "staging", says="ghost is not in development")


def test_repromotion_keeps_activation(pipe: Pipeline) -> None:
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    assert pipe.run("activate", "hello", "--env", "staging").code == 0
    assert "Loomgit-Activation: staging hello active" in pipe.message("staging")
    pipe.edit("hello", V2)
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    rec = pipe.record("staging", "hello")
    assert rec and rec.active is True and rec.version == 2
    assert "already active" in pipe.run("activate", "hello", "--env", "staging").out


def test_activate_flag_and_deactivate(pipe: Pipeline) -> None:
    assert pipe.run("promote", "hello", "--to", "staging", "--activate").code == 0
    assert pipe.record("staging", "hello").active is True  # type: ignore[union-attr]
    before = pipe.file("staging", "hello")
    assert pipe.run("deactivate", "hello", "--env", "staging").code == 0
    rec = pipe.record("staging", "hello")
    assert rec and rec.active is False and rec.version == 1
    assert pipe.file("staging", "hello") == before
    says = "hint: promote it to production first: loomgit promote hello --to production"
    refused(pipe, "activate", "hello", "--env", "production", says=says)


def test_concurrent_promotion_loses_the_compare_and_swap(pipe: Pipeline) -> None:
    pipe.edit(
        "other", HELLO.replace("name: hello", "name: other").replace("path: hello", "path: other")
    )
    with Workspace(pipe.path) as ws:
        mine = promotion.plan(ws, ["hello"], "staging")
        assert pipe.run("promote", "other", "--to", "staging").code == 0  # someone else
        winner = pipe.tip("staging")
        with pytest.raises(GitError, match="moved while this commit was being written"):
            promotion.apply(ws, mine)
    assert pipe.tip("staging") == winner
    assert pipe.file("staging", "hello") is None


def test_dry_run_writes_nothing_and_reports(pipe: Pipeline) -> None:
    before = pipe.snapshot()
    result = pipe.run("promote", "hello", "--to", "staging", "--dry-run", "--format", "json")
    assert result.code == 0 and pipe.snapshot() == before
    report = json.loads(result.out)["workflows"][0]
    assert report["new"] and report["steps_added"] == ["greet", "say"]
    assert report["webhooks"] == ["POST /hooks/staging/hello"]
    assert report["active_before"] is False and report["active_after"] is False
    text = pipe.run("promote", "hello", "--to", "staging", "--dry-run").out
    assert "lands inactive in staging: `loomgit activate hello --env staging`" in text
    assert "webhook in staging once active: POST /hooks/staging/hello" in text
    text = pipe.run("promote", "hello", "--to", "staging", "--dry-run", "--activate").out
    assert "activated in staging by this commit" in text
    assert "webhook in staging: POST /hooks/staging/hello" in text
    assert len(report["schedules"][0]["next_fires"]) == 3
    assert report["schedules"][0]["next_fires"][0].endswith(("+01:00", "+02:00"))
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    pipe.edit("hello", V3)
    text = pipe.run("promote", "hello", "--to", "staging", "--dry-run").out
    assert "step changed: say (timeout)" in text
    assert "trigger added: schedule '0 9 * * 1-5' (Europe/Paris)" in text
    assert "trigger removed: schedule '0 9 * * 1-5' (Europe/Berlin)" in text
    assert "stays inactive in staging" in text
    assert pipe.run("activate", "hello", "--env", "staging").code == 0
    text = pipe.run("promote", "hello", "--to", "staging", "--dry-run").out
    assert "stays active in staging: it serves v2 once the commit is applied" in text


def test_a_changed_trigger_setting_is_shown_for_review(pipe: Pipeline) -> None:
    """Turning a webhook synchronous or a schedule's overlap policy changes how it serves:
    the review says so, where it once said 'no change to steps or triggers'."""
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    changed = HELLO.replace("      path: hello\n", "      path: hello\n      respond: sync\n")
    changed = changed.replace("Europe/Berlin\n", "Europe/Berlin\n      overlap: allow\n")
    pipe.edit("hello", changed)
    text = pipe.run("promote", "hello", "--to", "staging", "--dry-run").out
    assert "  trigger changed: webhook POST /hooks/staging/hello (respond)\n" in text
    assert "  trigger changed: schedule '0 9 * * 1-5' (Europe/Berlin) (overlap)\n" in text
    assert "no change to steps or triggers" not in text and "trigger added" not in text
    result = pipe.run("promote", "hello", "--to", "staging", "--dry-run", "--format", "json")
    report = json.loads(result.out)["workflows"][0]
    assert report["triggers_changed"] == [
        {"trigger": "webhook POST /hooks/staging/hello", "fields": ["respond"]},
        {"trigger": "schedule '0 9 * * 1-5' (Europe/Berlin)", "fields": ["overlap"]},
    ]
    assert (report["triggers_added"], report["triggers_removed"]) == ([], [])
    body = pipe.run("promote", "hello", "--to", "staging", "--branch", "review/hello").out
    assert "- trigger changed: webhook POST /hooks/staging/hello (respond)" in body


def test_the_same_steps_in_another_order_are_a_change() -> None:
    """Steps run in order, so a review must show a reordering even if no step changed."""
    from datetime import UTC, datetime

    from loomgit import yamlio
    from loomgit.diff import compare, render_text
    from loomgit.models import Workflow

    before = Workflow.model_validate(
        yamlio.load(HELLO.replace("{{ steps.greet.output.text }}", "hi").encode())
    )
    after = before.model_copy(deep=True)
    after.spec.steps.reverse()
    kw = {"source_env": "staging", "target_env": "production", "now": datetime.now(UTC)}
    d = compare("hello", after, before, version_before=1, version_after=2, **kw)
    assert d.other_changes == ["step order (say, greet)"]
    assert "  changed: step order (say, greet)" in render_text([d]).splitlines()
    assert (
        compare("hello", before, before, version_before=1, version_after=2, **kw).other_changes
        == []
    )
    metadata = before.metadata.model_copy(update={"description": "says hello"})
    described = before.model_copy(update={"metadata": metadata})
    d = compare("hello", described, before, version_before=1, version_after=2, **kw)
    assert d.other_changes == ["metadata (description)"]


def test_branch_option_writes_a_pull_request_branch(pipe: Pipeline) -> None:
    target = pipe.tip("staging")
    result = pipe.run(
        "promote", "hello", "--to", "staging", "--branch", "promote/hello", "--notes", "for review"
    )
    assert result.code == 0, result.err
    assert pipe.tip("staging") == target  # the target itself is untouched
    assert git(pipe.path, "rev-parse", "promote/hello^") == target
    assert "Pull request title:\nPromote hello v1 to staging" in result.out
    assert "for review" in result.out and "### `hello`" in result.out
    assert "- lands inactive in staging" in result.out  # the reviewer sees it will not serve
    refused(
        pipe,
        "promote",
        "hello",
        "--to",
        "staging",
        "--branch",
        "promote/hello",
        says="promote/hello already exists",
    )


def test_notes_cannot_forge_trailers(pipe: Pipeline) -> None:
    notes = "ok\nLoomgit-Workflow: evil v99\nloomgit-promotion: x -> y"
    assert pipe.run("promote", "hello", "--to", "staging", "--notes", notes).code == 0
    message = pipe.message("staging")
    assert "\nLoomgit-Workflow: evil" not in message
    assert "> Loomgit-Workflow: evil v99" in message
    assert (
        pipe.run(
            "check-promotion", "--base", f"{pipe.ref('staging')}~1", "--head", pipe.ref("staging")
        ).code
        == 0
    )


def test_all_promotes_what_differs(pipe: Pipeline) -> None:
    pipe.edit(
        "other", HELLO.replace("name: hello", "name: other").replace("path: hello", "path: other")
    )
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    result = pipe.run("promote", "--all", "--to", "staging")
    assert result.code == 0 and "Promote other v1 to staging" in result.out
    refused(pipe, "promote", "--all", "--to", "staging", says="nothing to promote")


def test_uncommitted_target_files_are_refused(pipe: Pipeline) -> None:
    if pipe.layout == "branches":
        git(pipe.path, "checkout", "-q", "env/staging")
        (pipe.path / "environment.yaml").write_text("# my edit\n")
    else:
        (pipe.path / "environments/staging/environment.yaml").write_text("# my edit\n")
    refused(pipe, "promote", "hello", "--to", "staging", says="uncommitted changes")


def test_history_reads_promotions_back(pipe: Pipeline, age_key: AgeKey, tmp_path: Path) -> None:
    assert pipe.run("promote", "hello", "--to", "staging", "--notes", "n1").code == 0
    assert pipe.run("activate", "hello", "--env", "staging").code == 0
    fields = tmp_path / "token.json"
    fields.write_text('{"token": "a-throwaway-test-token"}')
    key = f"staging={age_key.path}"
    assert (
        pipe.run(
            "credentials", "set", "tok", "--env", "staging", "--from-json", str(fields),
            "--age-key-file", key,
        ).code
        == 0
    )  # fmt: skip
    # The file is named as git names it: with its branch where each branch has one.
    where = pipe.rel("staging", "credentials.sops.yaml")
    shown = where if pipe.layout == "directories" else f"{pipe.ref('staging')}:{where}"
    gone = pipe.run("credentials", "rm", "nope", "--env", "staging", "--age-key-file", key)
    assert gone.code == 1 and f"there is no credential nope in {shown}\n" in gone.err
    stranger = f"staging={make_key(tmp_path, 'stranger').path}"
    refused = pipe.run("credentials", "rm", "tok", "--env", "staging", "--age-key-file", stranger)
    assert f"the age key given for staging cannot decrypt {shown}\n" in refused.err
    staging = json.loads(pipe.run("history", "--env", "staging", "--format", "json").out)
    assert [(e["kind"], e["details"]) for e in staging][:2] == [
        ("credential", ["Credential: staging tok set"]),
        ("activation", ["Activation: staging hello active"]),
    ]
    assert "credential" not in pipe.run("history", "--env", "production").out
    events = json.loads(pipe.run("history", "hello", "--format", "json").out)
    assert [e["kind"] for e in events[:2]] == ["activation", "promotion"]
    assert events[1]["notes"] == "n1"
    assert "promotion" in pipe.run("history", "--env", "staging").out
    said = pipe.run("history", "hello", "--env", "production").out  # says what it looked for
    assert said == "no promotions, activations or rollbacks of hello in production yet\n"


def test_status_and_show(pipe: Pipeline) -> None:
    assert pipe.run("promote", "hello", "--to", "staging", "--activate").code == 0
    pipe.edit("hello", V2)
    view = json.loads(pipe.run("status", "--format", "json").out)
    row = view["workflows"][0]
    assert row["name"] == "hello" and row["pending"] == "changed"
    assert row["cells"]["staging"] == {"version": 1, "active": True, "rolled_back_from": None}
    assert row["cells"]["production"] is None
    assert "v1 ● active" in pipe.run("status").out
    assert pipe.run("show", "hello", "--env", "staging").out == HELLO
    assert pipe.run("show", "hello").out == V2
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    assert pipe.run("show", "hello", "--env", "staging", "--version", "1").out == HELLO
    assert pipe.run("show", "hello", "--env", "staging", "--version", "v1").out == HELLO
    # For scripts: the commit it was read at, version, activation, record, and definition.
    shown = json.loads(pipe.run("show", "hello", "--env", "staging", "--format", "json").out)
    assert (shown["version"], shown["active"]) == (2, True)
    assert shown["commit"] == pipe.tip("staging")
    assert shown["path"] == pipe.rel("staging", "workflows/hello.yaml")
    assert shown["yaml"] == V2 and shown["definition"] == yamlio.load(V2.encode())
    assert shown["record"]["promoted_from"] == "development"
    assert shown["record"]["digest"].startswith("sha256:")
    ran = json.loads(
        pipe.run("show", "hello", "--env", "staging", "--version", "1", "--format", "json").out
    )
    assert (ran["version"], ran["yaml"], ran["definition"]) == (
        1,
        HELLO,
        yamlio.load(HELLO.encode()),
    )
    assert git(pipe.path, "merge-base", "--is-ancestor", ran["commit"], shown["commit"]) == ""
    assert ran["commit"] != shown["commit"]
    pipe.edit("hello", "spec: [\n")  # a definition that does not parse is still shown
    broken = json.loads(pipe.run("show", "hello", "--format", "json").out)
    assert (broken["environment"], broken["version"]) == ("development", None)
    assert (broken["definition"], broken["yaml"]) == (None, "spec: [\n")
    odd = "? [a, b]\n: c\nwhen: 2026-01-01\n"  # a key JSON cannot have; a YAML date
    pipe.edit("hello", odd)
    shown = pipe.run("show", "hello", "--format", "json")
    assert shown.code == 0, shown.err
    assert (json.loads(shown.out)["definition"], json.loads(shown.out)["yaml"]) == (None, odd)
    pipe.edit("hello", "when: 2026-01-01\n")
    dated = json.loads(pipe.run("show", "hello", "--format", "json").out)
    assert dated["definition"] == {"when": "2026-01-01"}
    never = pipe.run("show", "hello", "--env", "staging", "--version", "7")
    assert (never.code, never.err) == (
        1,
        "error: staging never ran v7 of hello\nhint: versions it ran: v1, v2\n",
    )
    # Not yet in production: how it gets there, with --version or without.
    for extra in ([], ["--version", "1"]):
        missing = pipe.run("show", "hello", "--env", "production", *extra)
        assert (missing.code, missing.err) == (
            1,
            "error: hello is not in production\n"
            "hint: promote it to production first: loomgit promote hello --to production\n",
        )


def test_diff_between_environments(pipe: Pipeline) -> None:
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    pipe.edit("hello", V2)
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    out = pipe.run("diff", "hello", "--from", "staging", "--to", "production").out
    assert "not deployed -> v2" in out
    assert "lands inactive in production" in out
    # Without --from, from the environment a promotion to --to comes from.
    assert pipe.run("diff", "hello", "--to", "production").out == out
    assert "staging -> production" in out
    out = pipe.run("diff", "hello", "--from", "development", "--to", "staging").out
    assert "v2 -> v2" in out and "no change to steps or triggers" in out
    assert pipe.run("promote", "hello", "--to", "production").code == 0
    out = pipe.run("diff", "hello", "--from", "development", "--to", "production").out
    assert "no change to steps or triggers" in out
    pipe.edit("hello", V3)
    out = pipe.run("diff", "hello", "--from", "development", "--to", "staging").out
    assert "v2 -> v3" in out  # the version a promotion would give it


def test_a_fresh_clone_promotes_and_pushes(pipe: Pipeline, tmp_path: Path) -> None:
    """A clone has only its checked-out branch of its own. On the branch layout, `status`
    and `history` said "env/staging has no commits, run `loomgit init`", and nothing could
    be promoted; the other branches are now read from origin, and a commit onto one of
    them creates it, tracking origin's, as `git switch` would."""
    assert pipe.run("promote", "hello", "--to", "staging", "--notes", "from origin").code == 0
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", pipe.path.as_uri(), str(clone))

    def run(*args: str) -> Result:
        return pipe.cli(*args, "--repo", clone)

    branches = pipe.layout == "branches"
    shown = {
        e["name"]: e["branch"]
        for e in json.loads(run("status", "--format", "json").out)["environments"]
    }
    assert shown["production"] == ("origin/env/production" if branches else "main")
    assert "from origin" in run("history", "--env", "staging").out
    result = run("promote", "hello", "--to", "production", "-m", "from a clone")
    assert result.code == 0, result.err
    created = ", a new branch from origin/env/production" if branches else ""
    assert result.out.splitlines()[0].endswith(f" on {pipe.ref('production')}{created})")
    if branches:
        upstream = git(clone, "rev-parse", "--abbrev-ref", "env/production@{upstream}")
        assert upstream.strip() == "origin/env/production"
    result = run("activate", "hello", "--env", "production")
    assert result.code == 0 and "a new branch" not in result.out
    git(pipe.path, "config", "receive.denyCurrentBranch", "updateInstead")  # main is out
    git(clone, "push", "--quiet", "origin", pipe.ref("production"))
    rec = pipe.record("production", "hello")
    assert rec and rec.version == 1 and rec.active and rec.notes == "from a clone"


def test_promoting_onto_a_branch_behind_origin_warns(pipe: Pipeline, tmp_path: Path) -> None:
    """A promotion onto a branch that origin has moved on from cannot be pushed as it is:
    said before it is written, with the fix."""
    assert pipe.run("promote", "hello", "--to", "staging").code == 0
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", pipe.path.as_uri(), str(clone))
    git(pipe.path, "config", "receive.denyCurrentBranch", "updateInstead")
    assert pipe.cli("activate", "hello", "--env", "staging", "--repo", clone).code == 0
    git(clone, "push", "--quiet", "origin", pipe.ref("staging"))
    assert pipe.run("deactivate", "hello", "--env", "staging").code == 0  # origin moves on
    git(clone, "fetch", "--quiet")
    result = pipe.cli("promote", "hello", "--to", "production", "--dry-run", "--repo", clone)
    said = (  # on the branch layout, production is read from origin: only staging is behind
        "warning: env/staging is 1 commit behind origin/env/staging: the promotion copies "
        "staging as this clone has it"
        if pipe.layout == "branches"
        else "warning: main is 1 commit behind origin/main: this commit will not push as it "
        "is; `git pull` first"
    )
    assert result.code == 0 and result.err.splitlines() == [said], result.err
    (clone / pipe.rel("development", "workflows/hello.yaml")).write_text(V2)
    git(clone, "commit", "--quiet", "-am", "v2")
    result = pipe.cli("promote", "hello", "--to", "staging", "--dry-run", "--repo", clone)
    assert "behind" not in pipe.run("promote", "hello", "--to", "production", "--dry-run").err
    behind = f"{pipe.ref('staging')} is 1 commit behind origin/{pipe.ref('staging')}"
    assert result.code == 0 and result.err.splitlines()[0] == (
        f"warning: {behind}: this commit will not push as it is; `git pull` first"
    ), result.err
    # Every command that commits says so, not only promote: a credential, then a toggle.
    fields = tmp_path / "fields.json"
    fields.write_text('{"token": "scoped"}')
    result = pipe.cli(
        "credentials", "set", "greeter", "--env", "staging", "--from-json", fields, "--repo", clone
    )
    warned = f"warning: {behind}: this commit will not push as it is; `git pull` first\n"
    assert result.code == 0 and result.err == warned, result.err
    assert f"on {pipe.ref('staging')})" in result.out
    result = pipe.cli("deactivate", "hello", "--env", "staging", "--repo", clone)  # stale: on
    assert result.code == 0 and result.err == warned, result.err
    # restore writes in the first environment: on the directory layout that is main, behind.
    revisions = json.loads(pipe.cli("revisions", "hello", "--format", "json", "--repo", clone).out)
    result = pipe.cli("restore", "hello", revisions[1]["commit"], "--repo", clone)
    assert result.code == 0 and "restored hello" in result.out, result.err
    assert ("behind origin/main" in result.err) == (pipe.layout == "directories"), result.err
