"""Commands that read the pipeline (status, show, diff, history, revisions), restore a
revision, and the pull-request gate (check-promotion)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click
from click.core import ParameterSource

from loomgit.cli import (
    FORMATS,
    cli,
    echo_json,
    format_option,
    no_cache_option,
    printable,
    repo_option,
    version_number,
    warn_if_unpushable,
    workflow_arguments,
    written_json,
)
from loomgit.cli_promote import branch_option, print_pull_request
from loomgit.cli_run import TOKEN_FILE_HELP
from loomgit.completion import environments, refs, targets, workflows
from loomgit.errors import LoomgitError, UsageError

if TYPE_CHECKING:
    from loomgit.live import Awaited, TimedOut, Waited
    from loomgit.workspace import Workspace


@cli.command()
@format_option
@click.option(
    "--server",
    metavar="URL",
    help="Show what a running `loomgit serve` applied instead: commits, conditions, "
    "versions and activation as it serves them.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="With --server: wait until the daemon serves this repository's commit in each "
    "environment it serves (or those of --env); exit 1 if it refuses it or --timeout passes.",
)
@click.option(
    "--env",
    "envs",
    multiple=True,
    metavar="ENV",
    shell_complete=environments,
    help="With --wait: wait on this environment only (repeat for more).",
)
@click.option(
    "--commit",
    metavar="REV",
    shell_complete=refs,
    help="With --wait: the commit to wait for (default: HEAD; on the branch layout, each "
    "environment's branch). A later commit that descends from it will do.",
)
@click.option(
    "--timeout",
    default="5m",
    show_default=True,
    metavar="DURATION",
    help="With --wait: how long to wait (at most 24h).",
)
@click.option(
    "--reconcile",
    is_flag=True,
    help="With --wait: first have the daemon reconcile at once (POST /api/v1/reconcile, "
    "which needs an API token), rather than wait for its --interval or a push webhook.",
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"With --reconcile: {TOKEN_FILE_HELP}",
)
@repo_option
def status(
    fmt: str,
    server: str | None,
    wait: bool,
    envs: tuple[str, ...],
    commit: str | None,
    timeout: str,
    reconcile: bool,
    token_file: Path | None,
    repo: Path,
) -> None:
    """The environment bar: each workflow's version and activation per environment.

    The first column says whether the first environment holds committed changes that are
    not promoted yet ("changed") or a workflow never promoted ("new"). With --server, the
    live view of a daemon: what each environment serves and whether its last reconcile
    succeeded. With --wait as well, it first waits until the daemon has applied the
    repository's commit (a merged promotion, say), as a deploy step in CI: exit 0 once
    every environment waited on serves it, 1 when one refuses it (its reason is printed)
    or the time runs out. With --reconcile, the daemon first runs a cycle at once, for a
    job that cannot count on the git host's push webhook.

    \b
    Examples:
      loomgit status
      loomgit status --format json
      loomgit status --server http://127.0.0.1:8080
      loomgit status --server https://loomgit.internal --wait --env production --timeout 10m
      loomgit status --server https://loomgit.internal --wait --reconcile --token-file api.token
    """
    from rich.table import Table

    from loomgit import views
    from loomgit.workspace import Workspace

    given = click.get_current_context().get_parameter_source
    waiting_only = [
        f"--{option}"
        for option, name in (
            ("env", "envs"),
            ("commit", "commit"),
            ("timeout", "timeout"),
            ("reconcile", "reconcile"),
        )
        if given(name) is ParameterSource.COMMANDLINE
    ]
    if wait and server is None:
        raise UsageError("--wait goes with --server", hint="loomgit status --server URL --wait")
    if waiting_only and not wait:
        raise UsageError(f"{waiting_only[0]} goes with --wait")
    if token_file is not None and not reconcile:
        raise UsageError("--token-file goes with --reconcile (the live view needs no token)")
    if server is not None:
        from loomgit import live
        from loomgit.runner import parse_duration

        seconds = parse_duration(timeout, "--timeout")
        began = time.monotonic()
        if reconcile:  # the cycle's answer is the environments as it left them
            try:
                answer = live.reconcile(server, live.read_token(token_file), seconds)
            except live.TimedOut as exc:
                late = _late_cycle(exc, timeout)
                if fmt == "json":  # a script reads how it ended, as after a wait
                    spent = time.monotonic() - began
                    report = _late_report(server, envs, commit, spent, repo, late.message)
                    click.echo(json.dumps(report, indent=2))
                raise late from None
        else:
            answer = live.fetch_environments(server)
        spent = time.monotonic() - began
        waited = None
        if wait:
            waited = _wait(server, answer, envs, commit, max(seconds - spent, 0), repo, fmt)
            waited.seconds += spent
            answer = waited.answer
        if fmt == "json":
            click.echo(json.dumps(answer if waited is None else waited.to_json(), indent=2))
        else:
            _print(live.live_table(answer, server))
        if waited is not None:
            _waited(waited, timeout, fmt)
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


def _late_cycle(exc: TimedOut, timeout: str) -> LoomgitError:
    """`--reconcile`: a cycle that outlasts --timeout is a wait that timed out (exit 1)."""
    return LoomgitError(
        f"--timeout {timeout.strip()} passed before the daemon's reconcile cycle ended "
        f"({exc.url} did not answer)",
        hint="it goes on in the daemon; `loomgit status --server URL` shows what it applied",
    )


def _late_report(
    server: str, names: tuple[str, ...], commit: str | None, spent: float, repo: Path, why: str
) -> dict[str, object]:
    """The JSON report of a wait whose reconcile cycle outlasted --timeout: each awaited
    environment as the daemon serves it now (one more question, which may fail too)."""
    from loomgit import live
    from loomgit.live import Waited

    try:
        answer = live.fetch_environments(server, timeout=live.LATE_TIMEOUT)
        waited = _wait(server, answer, names, commit, 0, repo, "json")
    except UsageError:  # what each serves is unknown; the wait's report, with none
        waited = Waited("timed_out", spent, [], [])
    waited.result, waited.seconds, waited.unreachable = "timed_out", spent, why
    return waited.to_json()


def _wait(
    server: str,
    answer: list[dict[str, Any]],
    names: tuple[str, ...],
    commit: str | None,
    seconds: float,
    repo: Path,
    fmt: str,
) -> Waited:
    """`status --server --wait`: the commit each environment is to serve, read in the
    local repository, then the wait itself."""
    from loomgit.live import Awaited, wait
    from loomgit.workspace import Workspace

    served = [str(env.get("name")) for env in answer]
    for name in names:
        if name not in served:
            raise UsageError(
                f"--env {name}: the daemon at {server} does not serve it",
                hint=f"it serves {', '.join(served) or 'nothing yet'}",
            )
    wanted = list(dict.fromkeys(names)) or served
    with Workspace(repo) as ws:
        if commit is not None or ws.config.layout == "directories":
            target = ws.git.resolve(commit or "HEAD")
            awaited = [Awaited(name, target) for name in wanted]
        else:
            awaited = [Awaited(name, ws.location(name).commit) for name in wanted]
        known: dict[tuple[str, str], bool] = {}

        def reached(target: str, at: str) -> bool:
            if (target, at) not in known:
                known[target, at] = at == target or ws.git.is_ancestor(target, at)
            return known[target, at]

        if fmt == "json":
            waited = wait(server, awaited, reached, seconds, answer, _quiet, _quiet)
        else:
            waited = wait(server, awaited, reached, seconds, answer, _progress, _lost)
        for want in waited.environments:
            if want.state == "waiting" and want.serving and ws.git.ref(want.serving) is None:
                # A later commit this clone lacks (fetched before the daemon's next one)?
                unknown = f"{want.serving[:12]} is not in {ws.root.toplevel}; fetch it to tell"
                want.why = f"{want.why}; {unknown}" if want.why else unknown
        return waited


def _quiet(_: object) -> None:
    pass


def _progress(want: Awaited) -> None:
    """One line on stderr each time an environment waited on changes."""
    target = want.target[:12]
    serving = (want.serving or "nothing")[:12]
    if want.state == "applied":
        later = "" if want.serving == want.target else f" (a later commit than {target})"
        line = f"{want.name}: serves {serving}{later}"
    elif want.state == "refused":
        line = f"{want.name}: refused {target}: {want.why}"
    else:
        line = f"{want.name}: serves {serving}, waiting for {target}"
        if want.why:
            line += f" ({want.why})"
    click.echo(printable(line), err=True)


def _lost(why: str | None) -> None:
    """A line on stderr when the daemon stops answering mid-wait, and when it answers again."""
    if why is None:
        click.echo("the daemon answers again", err=True)
    else:
        click.echo(printable(f"{why}; asking again until --timeout passes"), err=True)


def _waited(waited: Waited, timeout: str, fmt: str) -> None:
    """How the wait ended, after the live view (or the JSON report): a line once every
    environment applied the commit, else an error (exit 1)."""
    if waited.result == "applied":
        if fmt == "text":
            names = ", ".join(w.name for w in waited.environments)
            click.echo(f"applied in {names} after {waited.seconds:.1f} s", err=True)
        return
    if waited.result == "refused":
        bad = next(w for w in waited.environments if w.state == "refused")
        # Credentials that cannot be decrypted may be the daemon's keys as well as the commit.
        mend = (
            f"fix the credentials in a new commit, or the daemon's age key for {bad.name} "
            "(a restart)"
            if bad.why.startswith("DecryptionFailed:")
            else "fix it in a new commit"
        )
        raise LoomgitError(
            f"{bad.name} refused {bad.target[:12]}: {bad.why}",
            hint=f"{mend}; {bad.name} keeps serving {(bad.serving or 'nothing')[:12]} meanwhile",
        )
    behind = [w for w in waited.environments if w.state != "applied"]
    said = "; ".join(
        f"{w.name} serves {(w.serving or 'nothing')[:12]}, not {w.target[:12]}"
        + (f" ({w.why})" if w.why else "")
        for w in behind
    )
    if waited.unreachable:
        said += f"; the daemon stopped answering: {waited.unreachable}"
    raise LoomgitError(
        f"--timeout {timeout.strip()} passed: {said}",
        hint="is the commit pushed to the branch the daemon follows? It reconciles every "
        "--interval, at once on the git host's push webhook or POST /api/v1/reconcile",
    )


def _print(renderable: object) -> None:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=240)  # piped or in CI: never cut names to 80 columns
    console.print(renderable)


@cli.command()
@click.argument("workflow", callback=workflow_arguments, shell_complete=workflows)
@click.option(
    "--env",
    "env",
    metavar="ENV",
    shell_complete=environments,
    help="Environment (default: the first).",
)
@click.option(
    "--version",
    "version",
    callback=version_number,
    metavar="N",
    help="A version ENV ran (3 or v3), instead of the current one.",
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
@click.argument("workflow", callback=workflow_arguments, shell_complete=workflows)
@click.option(
    "--from",
    "from_env",
    metavar="ENV",
    shell_complete=environments,
    help="The workflow as this environment has it… [default: the one before --to]",
)
@click.option(
    "--to",
    "to_env",
    required=True,
    metavar="ENV",
    shell_complete=targets,
    help="…compared with what runs in this one.",
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
@click.argument("workflow", required=False, callback=workflow_arguments, shell_complete=workflows)
@click.option(
    "--env", "env", metavar="ENV", shell_complete=environments, help="Only this environment."
)
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
@click.argument("workflow", callback=workflow_arguments, shell_complete=workflows)
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
@click.argument("workflow", callback=workflow_arguments, shell_complete=workflows)
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
        into = ws.location(ws.config.first).branch
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
        print_pull_request(done.subject, body, done.written.branch, into)


@cli.command("check-promotion")
@click.option(
    "--base", required=True, metavar="REF", shell_complete=refs, help="The pull request's target."
)
@click.option(
    "--head",
    default="HEAD",
    show_default=True,
    metavar="REF",
    shell_complete=refs,
    help="The pull request's head.",
)
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.option(
    "--no-validate",
    "skip_validate",
    is_flag=True,
    help="Only check the commits; for CI jobs that run `loomgit validate` already.",
)
@click.option(
    "--summary",
    "summary_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Also append a Markdown summary to FILE: what the pull request changes in each "
    "environment (versions, activation, steps and triggers, the promotion notes), its "
    'commits and its problems. In GitHub Actions: --summary "$GITHUB_STEP_SUMMARY".',
)
@no_cache_option
@repo_option
def check_promotion(
    base: str,
    head: str,
    fmt: str,
    skip_validate: bool,
    summary_file: Path | None,
    no_cache: bool,
    repo: Path,
) -> None:
    """The CI gate for pull requests: every change in BASE..HEAD to an environment after
    the first must be a legal promotion, activation or rollback; then HEAD is validated.

    Exits 0 when the range is legal and HEAD valid, 1 otherwise, 2 on bad arguments.

    \b
    Examples:
      loomgit check-promotion --base origin/main
      loomgit check-promotion --base origin/main --format github
      loomgit check-promotion --base origin/main --summary "$GITHUB_STEP_SUMMARY"
    """
    from loomgit import report, review
    from loomgit.check import check_promotion as run

    out = _appending(summary_file) if summary_file else None
    try:
        with report.annotated(fmt):
            result = run(repo, base, head, validate_head=not skip_validate, reuse=not no_cache)
    except LoomgitError as exc:
        if out is not None:
            _append(out, review.failed(exc))
        raise
    click.echo(report.render(result, fmt))
    if out is not None:
        found: review.Review | LoomgitError
        try:
            found = review.review(repo, base, head)
        except LoomgitError as exc:
            found = exc
        _append(out, review.markdown(result, found))
    sys.exit(0 if result.ok else 1)


@cli.command()
@click.option(
    "--base",
    required=True,
    metavar="REF",
    shell_complete=refs,
    help="Compare with where HEAD forks from this.",
)
@click.option(
    "--head",
    default="HEAD",
    show_default=True,
    metavar="REF",
    shell_complete=refs,
    help="The commit to review.",
)
@click.option("--env", metavar="ENV", shell_complete=environments, help="Only this environment.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
)
@repo_option
def changes(base: str, head: str, env: str | None, fmt: str, repo: Path) -> None:
    """What HEAD changes in each environment since it forked from BASE, as a pull
    request's reviewers see it: each workflow whose definition, version or activation
    changes (the version before and after, whether it serves, the steps and triggers
    added, removed or changed, what it answers once active, its promotion notes), and
    the variables and credential files changed (by name only). It checks nothing:
    `loomgit check-promotion` is the gate.

    Read before pushing a branch, in a pull request's description (--format markdown),
    or by a script (--format json: each environment's workflows with their records
    before and after).

    \b
    Examples:
      loomgit changes --base origin/main
      loomgit changes --base origin/main --env production --format json
      loomgit changes --base HEAD~1 --format markdown
    """
    from loomgit import review

    found = review.review(repo, base, head, env=env, whole=True)
    if fmt == "json":
        echo_json(found.to_json())
    elif fmt == "markdown":
        click.echo(review.changes_markdown(found, base))
    else:
        for line in review.text(found, base, head).splitlines():
            click.echo(printable(line))


def _appending(path: Path) -> TextIO:
    """`path` opened to append to (GitHub's job summary file is shared by a job's steps);
    opened before the check, so a path that cannot be written is refused at once."""
    try:
        return path.open("a", encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"--summary {path}: cannot write to it ({exc.strerror})",
            hint="give a file in a folder that exists and that you can write to",
        ) from exc


def _append(out: TextIO, text: str) -> None:
    try:
        with out:
            out.write(text)
    except OSError as exc:
        raise LoomgitError(
            f"the summary could not be written to {out.name}: {exc.strerror}"
        ) from exc
