"""Commands that change environments: promote, activate, deactivate, rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import click

from loomgit.cli import cli, format_option, repo_option, warn_if_unpushable, workflow_arguments
from loomgit.errors import UsageError


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
@click.argument("workflows", nargs=-1, metavar="WORKFLOW...", callback=workflow_arguments)
@click.option("--to", "to_env", required=True, metavar="ENV", help="Target environment.")
@click.option(
    "--from",
    "from_env",
    metavar="ENV",
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
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option(
    "--branch",
    metavar="NAME",
    help="Commit on a new branch based on the target, for a pull request.",
)
@click.option("--activate", is_flag=True, help="Activate in the target in the same commit.")
@click.option(
    "--copy-credential",
    "copy_credentials",
    multiple=True,
    metavar="NAME",
    help="Copy this credential from the source into the target's scoped file in the "
    "same commit (needs the source's key; repeatable).",
)
@click.option(
    "--age-key-file",
    "age_keys",
    multiple=True,
    metavar="ENV=PATH",
    help="Age identity of an environment (for --copy-credential).",
)
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
    age_keys: tuple[str, ...],
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
            "commit": written.commit,
            "branch": written.branch,
            "created_from": written.from_remote,
            "subject": plan.subject,
            "workflows": [d.to_json() for d in diffs],
        }
        if branch:
            out["pull_request"] = {"title": plan.subject, "body": body}
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{plan.subject} ({written.where()})")
    click.echo(diff.render_text(diffs))
    if branch:
        click.echo(f"\nPull request title:\n{plan.subject}\n\nPull request body:\n{body}")


def _keys(ws: Any, age_keys: tuple[str, ...]) -> Any:
    from loomgit import credops  # only when credentials are copied: it loads sops support

    return credops.key_files(ws, age_keys)


def _toggle(name: str, env: str, repo: Path, active: bool) -> None:
    from loomgit import lifecycle
    from loomgit.workspace import Workspace

    with Workspace(repo) as ws:
        written = lifecycle.set_active(ws, name, env, active)
    warn_if_unpushable(written)
    state = "active" if active else "inactive"
    if written is None:
        click.echo(f"{name} is already {state} in {env}; nothing to do")
    else:
        click.echo(f"{name} is now {state} in {env} ({written.where()})")


@cli.command()
@click.argument("workflow", callback=workflow_arguments)
@click.option("--env", "env", required=True, metavar="ENV")
@repo_option
def activate(workflow: str, env: str, repo: Path) -> None:
    """Activate WORKFLOW in ENV: it starts answering its triggers there.

    One commit that changes only the `active` flag; the definition and version stay.

    \b
    Example:
      loomgit activate order-sync --env production
    """
    _toggle(workflow, env, repo, True)


@cli.command()
@click.argument("workflow", callback=workflow_arguments)
@click.option("--env", "env", required=True, metavar="ENV")
@repo_option
def deactivate(workflow: str, env: str, repo: Path) -> None:
    """Deactivate WORKFLOW in ENV, keeping its definition and version.

    \b
    Example:
      loomgit deactivate order-sync --env production
    """
    _toggle(workflow, env, repo, False)


@cli.command()
@click.argument("workflow", callback=workflow_arguments)
@click.option("--env", "env", required=True, metavar="ENV")
@click.option(
    "--to-version",
    type=click.IntRange(min=1),
    metavar="N",
    help="A version ENV ran before (default: the one before the current).",
)
@click.option("-m", "--notes", metavar="TEXT", help="Why; goes into the commit and the record.")
@repo_option
def rollback(
    workflow: str, env: str, to_version: int | None, notes: str | None, repo: Path
) -> None:
    """Put back, as a new commit, a version of WORKFLOW that ENV ran before.

    The record says it was rolled back, `loomgit status` shows it, and `promote --all`
    leaves it alone until it is promoted by name.

    \b
    Examples:
      loomgit rollback order-sync --env production
      loomgit rollback order-sync --env production --to-version 2 --notes "500s on v3"
    """
    from loomgit import lifecycle
    from loomgit.workspace import Workspace

    with Workspace(repo) as ws:
        written, old, new = lifecycle.rollback(ws, workflow, env, to_version, notes or "")
    warn_if_unpushable(written)
    click.echo(f"rolled back {workflow} in {env} from v{old} to v{new} ({written.where()})")
