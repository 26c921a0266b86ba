"""Commands that read the pipeline (status, show, diff, history, revisions), restore a
revision, and the pull-request gate (check-promotion)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from loomgit.cli import (
    FORMATS,
    cli,
    echo_json,
    format_option,
    repo_option,
    warn_if_unpushable,
    workflow_arguments,
    written_json,
)
from loomgit.cli_promote import branch_option, print_pull_request

if TYPE_CHECKING:
    from loomgit.workspace import Workspace


@cli.command()
@format_option
@click.option(
    "--server",
    metavar="URL",
    help="Show what a running `loomgit serve` applied instead: commits, conditions, "
    "versions and activation as it serves them.",
)
@repo_option
def status(fmt: str, server: str | None, repo: Path) -> None:
    """The environment bar: each workflow's version and activation per environment.

    The first column says whether the first environment holds committed changes that are
    not promoted yet ("changed") or a workflow never promoted ("new"). With --server, the
    live view of a daemon: what each environment serves and whether its last reconcile
    succeeded.

    \b
    Examples:
      loomgit status
      loomgit status --format json
      loomgit status --server http://127.0.0.1:8080
    """
    from rich.table import Table

    from loomgit import views
    from loomgit.workspace import Workspace

    if server is not None:
        from loomgit.live import fetch_environments, live_table

        envs = fetch_environments(server)
        if fmt == "json":
            click.echo(json.dumps(envs, indent=2))
        else:
            _print(live_table(envs, server))
        return
    with Workspace(repo) as ws:
        view = views.status(ws)
    if fmt == "json":
        click.echo(json.dumps(view.to_json(), indent=2))
        return
    first = view.environments[0]["name"]
    table = Table(title="loomgit status", title_justify="left")
    table.add_column("workflow", style="bold", no_wrap=True)
    for env in view.environments:
        table.add_column(env["name"])
    for row in view.rows:
        cells = []
        for env in view.environments:
            cell = row.cells.get(env["name"])
            if cell is None:
                cells.append("-")
                continue
            dot = "[green]● active[/]" if cell.active else "[dim]○ inactive[/]"
            text = dot if env["name"] == first else f"v{cell.version} {dot}"
            if env["name"] == first and row.pending:
                text += f" [yellow]{row.pending}[/]"
            if cell.rolled_back_from:
                text += f" [red](rolled back from v{cell.rolled_back_from})[/]"
            cells.append(text)
        table.add_row(row.name, *cells)
    table.add_section()
    table.add_row("commit", *[f"{e['commit'][:12]} ({e['branch']})" for e in view.environments])
    _print(table)


def _print(renderable: object) -> None:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=240)  # piped or in CI: never cut names to 80 columns
    console.print(renderable)


@cli.command()
@click.argument("workflow", callback=workflow_arguments)
@click.option("--env", "env", metavar="ENV", help="Environment (default: the first).")
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    metavar="N",
    help="A version ENV ran, instead of the current one.",
)
@format_option
@repo_option
def show(workflow: str, env: str | None, version: int | None, fmt: str, repo: Path) -> None:
    """Print WORKFLOW as ENV runs it: the read-only snapshot as promoted.

    With --format json: the commit it was read at, its version and activation there,
    its promotion record, and the definition both parsed and as committed.

    \b
    Examples:
      loomgit show order-sync --env production
      loomgit show order-sync --env production --version 2
      loomgit show order-sync --env production --format json | jq .version
    """
    from loomgit import views
    from loomgit.workspace import Workspace

    with Workspace(repo) as ws:
        snapshot = views.show(ws, workflow, env, version)
    if fmt == "json":
        echo_json(snapshot.to_json())
        return
    sys.stdout.write(snapshot.data.decode("utf-8", "replace"))


@cli.command()
@click.argument("workflow", callback=workflow_arguments)
@click.option(
    "--from",
    "from_env",
    metavar="ENV",
    help="The workflow as this environment has it… [default: the one before --to]",
)
@click.option(
    "--to", "to_env", required=True, metavar="ENV", help="…compared with what runs in this one."
)
@format_option
@repo_option
def diff(workflow: str, from_env: str | None, to_env: str, fmt: str, repo: Path) -> None:
    """What would change in --to if WORKFLOW as it is in --from replaced it: what
    `loomgit promote WORKFLOW --to ENV` would bring, when --from is left out.

    \b
    Examples:
      loomgit diff order-sync --to production
      loomgit diff order-sync --from development --to production
    """
    from loomgit import diff as semantic
    from loomgit import views
    from loomgit.workspace import Workspace

    with Workspace(repo) as ws:
        result = views.compare_envs(ws, workflow, from_env, to_env)
    if fmt == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(semantic.render_text([result]))


def _note_if_shallow(ws: Workspace) -> None:
    """A history read from a shallow clone ends at its cut-off: said on stderr, so that
    what is listed (or that nothing is) is not taken for all there was."""
    from loomgit.vcs import UNSHALLOW_HINT

    if ws.git.is_shallow():
        note = "note: this is a shallow clone; what came before its oldest commits is not listed"
        click.echo(note, err=True)
        click.echo(f"hint: {UNSHALLOW_HINT}", err=True)


@cli.command()
@click.argument("workflow", required=False, callback=workflow_arguments)
@click.option("--env", "env", metavar="ENV", help="Only this environment.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Newest first."
)
@format_option
@repo_option
def history(workflow: str | None, env: str | None, limit: int, fmt: str, repo: Path) -> None:
    """Promotions, activations and rollbacks read back from git, newest first; without
    WORKFLOW, credential and key changes too (with --env, that environment's and the
    global file's).

    \b
    Examples:
      loomgit history
      loomgit history order-sync --env production
      loomgit history --env production --format json
    """
    from loomgit import views
    from loomgit.workspace import Workspace

    with Workspace(repo) as ws:
        events = views.history(ws, workflow, env, limit)
        _note_if_shallow(ws)
    if fmt == "json":
        click.echo(json.dumps([asdict(e) for e in events], indent=2))
        return
    for e in events:
        click.echo(
            f"{e.date[:16].replace('T', ' ')}  {e.commit[:10]}  {e.kind:<10}  "
            f"{e.subject}  ({e.author})"
        )
        if e.notes:
            click.echo("".join(f"    {ln}\n" for ln in e.notes.splitlines()), nl=False)
    if not events:
        of = f" of {workflow}" if workflow else ""
        what = "promotions, activations or rollbacks" if workflow else "loomgit changes"
        click.echo(f"no {what}{of}{f' in {env}' if env else ''} yet")


@cli.command()
@click.argument("workflow", callback=workflow_arguments)
@format_option
@repo_option
def revisions(workflow: str, fmt: str, repo: Path) -> None:
    """The edit history of WORKFLOW in the first environment, newest first.

    \b
    Example:
      loomgit revisions order-sync
    """
    from loomgit import views
    from loomgit.workspace import Workspace

    with Workspace(repo) as ws:
        revs = views.revisions(ws, workflow)
        _note_if_shallow(ws)
    if fmt == "json":
        click.echo(json.dumps([asdict(r) for r in revs], indent=2))
        return
    for r in revs:
        click.echo(f"{r.commit[:12]}  {r.date[:16].replace('T', ' ')}  {r.subject}  ({r.author})")


@cli.command()
@click.argument("workflow", callback=workflow_arguments)
@click.argument("revision")
@branch_option
@format_option
@repo_option
def restore(workflow: str, revision: str, branch: str | None, fmt: str, repo: Path) -> None:
    """Write REVISION of WORKFLOW back as a new commit in the first environment.

    Uncommitted edits of that workflow are saved first under refs/loomgit/backups/.
    With --branch the commit goes on a new branch for a pull request, and the work tree
    is left as it is.

    \b
    Examples:
      loomgit restore order-sync 4f1c2e7
      loomgit restore order-sync 4f1c2e7 --branch restore/order-sync
    """
    from loomgit import views
    from loomgit.workspace import Workspace

    with Workspace(repo) as ws:
        done = views.restore(ws, workflow, revision, branch)
    body = f"Puts back `{workflow}` as of {done.revision}.\n"
    if fmt == "json":
        report: dict[str, object] = {
            "changed": done.written is not None,
            "workflow": workflow,
            "revision": done.revision,
            "subject": done.subject,
            "backup": done.backup,
            "problem": done.problem,
        }
        if done.written:
            report.update(written_json(done.written))
            if branch:
                report["pull_request"] = {"title": done.subject, "body": body}
        echo_json(report)
        warn_if_unpushable(done.written)
        return
    if done.backup:
        click.echo(
            f"saved your uncommitted {workflow} as {done.backup} "
            f"(see it with: git show {done.backup})"
        )
    if done.written:
        if branch:
            click.echo(f"{done.subject} ({done.written.where()})")
        else:
            click.echo(f"restored {workflow} to {revision} ({done.written.where()})")
        warn_if_unpushable(done.written)
    else:
        click.echo(f"{workflow} is already at {revision}; nothing to commit")
    if done.problem:
        click.echo(f"warning: this revision does not validate: {done.problem}", err=True)
        click.echo("hint: fix it and commit before promoting it (`loomgit validate`)", err=True)
    if branch and done.written:
        print_pull_request(done.subject, body)


@cli.command("check-promotion")
@click.option("--base", required=True, metavar="REF", help="The pull request's target.")
@click.option(
    "--head", default="HEAD", show_default=True, metavar="REF", help="The pull request's head."
)
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.option(
    "--no-validate",
    "skip_validate",
    is_flag=True,
    help="Only check the commits; for CI jobs that run `loomgit validate` already.",
)
@repo_option
def check_promotion(base: str, head: str, fmt: str, skip_validate: bool, repo: Path) -> None:
    """The CI gate for pull requests: every change in BASE..HEAD to an environment after
    the first must be a legal promotion, activation or rollback; then HEAD is validated.

    Exits 0 when the range is legal and HEAD valid, 1 otherwise, 2 on bad arguments.

    \b
    Examples:
      loomgit check-promotion --base origin/main
      loomgit check-promotion --base origin/main --format github
    """
    from loomgit import report
    from loomgit.check import check_promotion as run

    with report.annotated(fmt):
        result = run(repo, base, head, validate_head=not skip_validate)
    click.echo(report.render(result, fmt))
    sys.exit(0 if result.ok else 1)
