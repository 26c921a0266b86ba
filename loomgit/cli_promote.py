"""Commands that change environments: promote, activate, deactivate, rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import click

from loomgit.agekeys import AgeKeys
from loomgit.cli import (
    cli,
    format_option,
    repo_option,
    version_number,
    warn_if_unpushable,
    workflow_arguments,
    written_json,
)
from loomgit.cli_credentials import key_options
from loomgit.completion import credential_names, environments, targets, workflows
from loomgit.errors import UsageError


def dry_run_option(func: Any) -> Any:
    return click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")(
        func
    )


def branch_option(func: Any) -> Any:
    return click.option(
        "--branch",
        metavar="NAME",
        help="Commit on a new branch based on the target, for a pull request.",
    )(func)


def _notes(notes: str | None, notes_file: IO[str] | None) -> str:
    from loomgit.promotion import sanitise_notes

    if notes is not None and notes_file is not None:
        raise UsageError("give --notes or --notes-file, not both")
    try:
        text = notes_file.read() if notes_file is not None else (notes or "")
    except UnicodeDecodeError:
        name = getattr(notes_file, "name", "-")
        raise UsageError(f"--notes-file {name} is not UTF-8 text") from None
    return sanitise_notes(text)


@cli.command()
@click.argument(
    "workflows",
    nargs=-1,
    metavar="WORKFLOW...",
    callback=workflow_arguments,
    shell_complete=workflows,
)
@click.option(
    "--to",
    "to_env",
    required=True,
    metavar="ENV",
    shell_complete=targets,
    help="Target environment.",
)
@click.option(
    "--from",
    "from_env",
    metavar="ENV",
    shell_complete=environments,
    help="Source environment (optional: it is always the one before --to).",
)
@click.option(
    "--all",
    "all_workflows",
    is_flag=True,
    help="Every workflow whose definition differs from the target.",
)
@click.option(
    "-m", "--notes", metavar="TEXT", help="Promotion notes for the commit and the record."
)
@click.option(
    "--notes-file",
    type=click.File("r", encoding="utf-8"),
    help="Read the notes from a file (- stdin).",
)
@dry_run_option
@branch_option
@click.option("--activate", is_flag=True, help="Activate in the target in the same commit.")
@click.option(
    "--copy-credential",
    "copy_credentials",
    multiple=True,
    metavar="NAME",
    shell_complete=credential_names,
    help="Copy this credential from the source into the target's scoped file in the "
    "same commit (needs the source's key; repeatable).",
)
@key_options("Age identity of an environment (for --copy-credential).")
@format_option
@repo_option
def promote(
    workflows: tuple[str, ...],
    to_env: str,
    from_env: str | None,
    all_workflows: bool,
    notes: str | None,
    notes_file: IO[str] | None,
    dry_run: bool,
    branch: str | None,
    activate: bool,
    copy_credentials: tuple[str, ...],
    age_keys: AgeKeys,
    fmt: str,
    repo: Path,
) -> None:
    """Promote workflows to ENV from the environment just before it.

    The definition is copied as committed at the source's commit, gets its version (a new
    one when it leaves the first environment), and lands inactive unless it was already
    active in the target or --activate is given.

    \b
    Examples:
      loomgit promote order-sync --to staging --notes "Add email step"
      loomgit promote order-sync --to production --dry-run
      loomgit promote --all --to staging --branch promote/staging
    """
    from loomgit import diff, promotion
    from loomgit.workspace import Workspace

    text = _notes(notes, notes_file)
    with Workspace(repo) as ws:
        plan = promotion.plan(
            ws,
            list(workflows),
            to_env,
            all_workflows=all_workflows,
            notes=text,
            activate=activate,
            from_env=from_env,
            fire_times=dry_run or branch is not None,  # only reviews need them
            copy_credentials=copy_credentials,
            keys=_keys(ws, age_keys) if copy_credentials else {},
            review=dry_run,
        )
        for warning in plan.warnings:
            click.echo(f"warning: {warning}", err=True)
        for name, why in plan.skipped:
            click.echo(f"skipped {name}: {why}", err=True)
        diffs = [i.diff for i in plan.items]
        if dry_run:
            if fmt == "json":
                click.echo(
                    json.dumps(
                        {
                            "dry_run": True,
                            "subject": plan.subject,
                            "message": plan.message,
                            "workflows": [d.to_json() for d in diffs],
                            "credentials_copied": list(plan.copied),
                        },
                        indent=2,
                    )
                )
            else:
                click.echo(f"would commit on {plan.target.branch}: {plan.subject}")
                click.echo(diff.render_text(diffs))
            if plan.unresolved:
                raise promotion.Refused(
                    f"credentials do not resolve in {to_env}: {', '.join(plan.unresolved)}",
                    hint="copy them with --copy-credential NAME, or set them first",
                )
            return
        written = promotion.apply(ws, plan, branch=branch)
    body = ((f"{text}\n\n" if text else "") + diff.render_markdown(diffs)).rstrip() + "\n"
    if fmt == "json":
        out: dict[str, object] = {
            **written_json(written),
            "subject": plan.subject,
            "workflows": [d.to_json() for d in diffs],
            "credentials_copied": list(plan.copied),
        }
        if branch:
            out["pull_request"] = {"title": plan.subject, "body": body}
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{plan.subject} ({written.where()})")
    click.echo(diff.render_text(diffs))
    if branch:
        print_pull_request(plan.subject, body, written.branch, plan.target.branch)


def _keys(ws: Any, age_keys: AgeKeys) -> Any:
    from loomgit import credops  # only when credentials are copied: it loads sops support

    return credops.key_files(ws, age_keys)


def print_pull_request(title: str, body: str, branch: str, into: str) -> None:
    """The pull request to open for a commit written on a new branch, and how (the hint
    goes to standard error, with the notes and warnings)."""
    click.echo(f"\nPull request title:\n{title}\n\nPull request body:\n{body}")
    target = f" into {into}" if into != "HEAD" else ""  # from a detached HEAD: unknown
    click.echo(
        f"next: push it (`git push -u origin {branch}`) and open a pull request{target} "
        "with this title and body",
        err=True,
    )


def _report(report: dict[str, object], change: Any, written: Any, body: str | None) -> None:
    """Prints a writer's JSON report with where its commit went (or, for a dry run, where
    it would go and its message), and the pull request when it went on a new branch."""
    if written is None:
        report.update(dry_run=True, branch=change.target.branch, message=change.message)
    else:
        report.update(written_json(written))
        if body is not None:
            report["pull_request"] = {"title": change.subject, "body": body}
    click.echo(json.dumps(report, indent=2))


def _toggle(
    name: str,
    active: bool,
    *,
    env: str,
    repo: Path,
    notes: str | None,
    dry_run: bool,
    branch: str | None,
    fmt: str,
) -> None:
    from loomgit import diff, lifecycle, promotion
    from loomgit.workspace import Workspace

    state = "active" if active else "inactive"
    with Workspace(repo) as ws:
        if branch is not None:
            promotion.check_branch_name(ws, branch)  # refused even when nothing is to do
        toggle = lifecycle.plan_active(ws, name, env, active, notes or "")
        if toggle is None:
            if fmt == "json":
                out = {"changed": False, "workflow": name, "environment": env, "active": active}
                click.echo(json.dumps(out, indent=2))
            else:
                click.echo(f"{name} is already {state} in {env}; nothing to do")
            return
        change = toggle.change
        now = promotion.now_utc() if active else None  # fire times only for what starts
        triggers: list[dict[str, Any]] | None = None  # unknown: the definition is not valid
        try:
            workflow = promotion.load_workflow(toggle.definition, change.target.workflow(name))
            triggers = diff.answers(name, workflow, env, now)
        except promotion.Refused:  # never in the way of turning it off
            pass
        written = None if dry_run else change.write(ws, branch)
    version = f"v{toggle.version}" if toggle.version else "the committed definition"
    once = "once the commit is merged and applied" if branch else "once the commit is applied"
    said = (
        f"it serves {version} in {env} {once}, answering:"
        if active
        else f"it stops answering in {env} {once} ({version} stays deployed):"
    )
    lines = (
        [diff.answer_text(t) for t in triggers]
        if triggers is not None
        else ["(its definition does not validate: see `loomgit validate`)"]
    )
    text = notes and promotion.sanitise_notes(notes)
    body = (
        (f"{text}\n\n" if text else "")
        + f"### `{name}` {version}: {state} in {env}\n\n{said[0].upper()}{said[1:]}\n\n"
        + "".join(f"- {line}\n" for line in lines)
    )
    if fmt == "json":
        report: dict[str, object] = {
            "changed": True,
            "workflow": name,
            "environment": env,
            "active": active,
            "version": toggle.version,
            "subject": change.subject,
            "triggers": triggers,
        }
        _report(report, change, written, body if branch else None)
    else:
        if written is None:
            click.echo(f"would commit on {change.target.branch}: {change.subject}")
        elif branch:
            click.echo(f"{change.subject} ({written.where()})")
        else:
            click.echo(f"{name} is now {state} in {env} ({written.where()})")
        click.echo(f"  {said}")
        click.echo("".join(f"    {line}\n" for line in lines), nl=False)
        if branch and written is not None:
            print_pull_request(change.subject, body, written.branch, change.target.branch)
    warn_if_unpushable(written)


_ACTIVATION_NOTES = "Why; goes into the commit message and `loomgit history`."


def _toggle_options(func: Any) -> Any:
    """WORKFLOW, --env, --notes, --dry-run, --branch, --format and --repo."""
    for option in (
        repo_option,
        format_option,
        branch_option,
        dry_run_option,
        click.option("-m", "--notes", metavar="TEXT", help=_ACTIVATION_NOTES),
        click.option("--env", "env", required=True, metavar="ENV", shell_complete=environments),
        click.argument("workflow", callback=workflow_arguments, shell_complete=workflows),
    ):
        func = option(func)
    return func


@cli.command()
@_toggle_options
def activate(workflow: str, **options: Any) -> None:
    """Activate WORKFLOW in ENV: it starts answering its triggers there.

    One commit that changes only the `active` flag; the definition and version stay.
    It lists the webhooks, API call and schedules (with their next fire times) that
    start answering. It refuses, writing nothing, what the daemon could not serve: a
    definition that does not validate, or that uses a variable or a credential ENV lacks.

    \b
    Examples:
      loomgit activate order-sync --env production
      loomgit activate order-sync --env production --branch activate/order-sync \\
        --notes "Go live after the staging soak"
    """
    _toggle(workflow, True, **options)


@cli.command()
@_toggle_options
def deactivate(workflow: str, **options: Any) -> None:
    """Deactivate WORKFLOW in ENV, keeping its definition and version.

    \b
    Examples:
      loomgit deactivate order-sync --env production --notes "CRM outage"
      loomgit deactivate order-sync --env production --dry-run
    """
    _toggle(workflow, False, **options)


@cli.command()
@click.argument("workflow", callback=workflow_arguments, shell_complete=workflows)
@click.option("--env", "env", required=True, metavar="ENV", shell_complete=environments)
@click.option(
    "--to-version",
    callback=version_number,
    metavar="N",
    help="A version ENV ran before, as 3 or v3 (default: the one before the current).",
)
@click.option("-m", "--notes", metavar="TEXT", help="Why; goes into the commit and the record.")
@dry_run_option
@branch_option
@format_option
@repo_option
def rollback(
    workflow: str,
    env: str,
    to_version: int | None,
    notes: str | None,
    dry_run: bool,
    branch: str | None,
    fmt: str,
    repo: Path,
) -> None:
    """Put back, as a new commit, a version of WORKFLOW that ENV ran before.

    The record says it was rolled back, `loomgit status` shows it, and `promote --all`
    leaves it alone until it is promoted by name. It shows what the rollback changes:
    steps and triggers, as `promote --dry-run` does.

    \b
    Examples:
      loomgit rollback order-sync --env production
      loomgit rollback order-sync --env production --to-version 2 --notes "500s on v3"
      loomgit rollback order-sync --env production --branch rollback/order-sync
    """
    from loomgit import diff, lifecycle, promotion
    from loomgit.workspace import Workspace

    with Workspace(repo) as ws:
        if branch is not None:
            promotion.check_branch_name(ws, branch)
        plan = lifecycle.plan_rollback(ws, workflow, env, to_version, notes or "")
        change = plan.change
        where = change.target.workflow(workflow)
        restored = promotion.load_workflow(plan.restored, where)
        d = diff.compare(
            workflow,
            restored,
            promotion.load_workflow(plan.current, where) if plan.current else None,
            source_env=env,
            target_env=env,
            version_before=plan.old,
            version_after=plan.new,
            now=promotion.now_utc(),
            fire_times=dry_run or branch is not None,  # only reviews need them
            resolves=promotion.resolving(ws, change.target, restored),
            active_before=plan.active,
            active_after=plan.active,
        )
        written = None if dry_run else change.write(ws, branch)
    text = notes and promotion.sanitise_notes(notes)
    body = ((f"{text}\n\n" if text else "") + diff.render_markdown([d])).rstrip() + "\n"
    if fmt == "json":
        report: dict[str, object] = {
            "subject": change.subject,
            "from_version": plan.old,
            "to_version": plan.new,
            "workflow": d.to_json(),
        }
        _report(report, change, written, body if branch else None)
    else:
        if written is None:
            click.echo(f"would commit on {change.target.branch}: {change.subject}")
        elif branch:  # nothing is rolled back until the pull request is merged
            click.echo(f"{change.subject} ({written.where()})")
        else:
            click.echo(
                f"rolled back {workflow} in {env} from v{plan.old} to v{plan.new} "
                f"({written.where()})"
            )
        click.echo("\n".join(diff.render_text([d]).splitlines()[1:]))
        if branch and written is not None:
            print_pull_request(change.subject, body, written.branch, change.target.branch)
    warn_if_unpushable(written)
