"""Running workflows by hand (`run`, always in the first environment) and reading the
execution history (`executions`, `executions show`, `executions prune`)."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from loomgit import jsontext
from loomgit.agekeys import AgeKeys
from loomgit.ages import parse_since
from loomgit.cli import cli, format_option, repo_option, version_number, workflow_arguments
from loomgit.cli_credentials import key_option
from loomgit.completion import environments, workflows
from loomgit.errors import LoomgitError, UsageError, report_to

if TYPE_CHECKING:
    from loomgit.follow import Follower

# The history module is imported only by the commands; the names are repeated here so that
# `--help` stays fast. A test keeps the two lists equal.
STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "timed_out", "interrupted"]
STATUS_MARK = {
    "succeeded": "✓",
    "failed": "✗",
    "skipped": "-",
    "timed_out": "⏱",
    "cancelled": "■",
    "interrupted": "■",
    "running": "…",
    "queued": "…",
}


def state_option(func: Any) -> Any:
    return click.option(
        "--state-dir",
        type=click.Path(path_type=Path, file_okay=False),
        envvar="LOOMGIT_STATE_DIR",
        help="Folder of loomgit's local state (the execution history); default: "
        "$LOOMGIT_STATE_DIR, else the user's state folder.",
    )(func)


TOKEN_FILE_HELP = (
    "a file holding one of the daemon's API tokens (its first line that is not blank or a "
    "# comment); default: $LOOMGIT_API_TOKEN."
)


def server_options(func: Any, *, server_help: str | None = None) -> Any:
    func = click.option(
        "--token-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help=f"With --server: {TOKEN_FILE_HELP}",
    )(func)
    return click.option(
        "--server",
        metavar="URL",
        help=server_help
        or "Read the history of a running `loomgit serve` through its HTTP API instead "
        "of the local one (it needs an API token).",
    )(func)


def version_option(func: Any) -> Any:
    return click.option(
        "--version",
        "version",
        metavar="N",
        callback=version_number,
        help="Only this version of --workflow (3 or v3).",
    )(func)


def filter_options(func: Any) -> Any:
    """`--env`, `--workflow` and `--version`: which executions a listing or a summary
    reads."""
    func = version_option(func)
    func = click.option(
        "--workflow",
        metavar="NAME",
        shell_complete=workflows,
        help="Only this workflow's executions.",
    )(func)
    return click.option(
        "--env",
        "env",
        metavar="ENV",
        shell_complete=environments,
        help="Only this environment's executions.",
    )(func)


def _versioned(workflow: str | None, version: int | None) -> None:
    if version is not None and workflow is None:
        raise UsageError(
            "--version goes with --workflow: each workflow numbers its own versions",
            hint="name the workflow, as --workflow order-sync --version 3",
        )


# The listing's options, by parameter name.
_LISTING = {
    "env": "--env",
    "workflow": "--workflow",
    "version": "--version",
    "status": "--status",
    "since": "--since",
    "limit": "--limit",
    "before": "--before",
    "follow": "--follow",
    "fmt": "--format",
}


@dataclass(frozen=True)
class _Source:
    """Where `executions` reads: the local history (state_dir) or a daemon (server)."""

    state_dir: Path | None
    server: str | None
    token_file: Path | None
    # The listing's options given before a subcommand (`executions --env x prune`): each
    # subcommand takes those it has, and refuses the others rather than ignore them.
    given: dict[str, Any] = field(default_factory=dict)

    def take(self, command: str, own: dict[str, Any]) -> dict[str, Any]:
        """`own` (the subcommand's values of the listing's options it has), with those
        given before `command` instead where it was not given one itself."""
        ctx = click.get_current_context()
        for name, value in self.given.items():
            flag = _LISTING[name]
            if name not in own:
                raise UsageError(
                    f"`executions {command}` has no {flag}: given before `{command}`, "
                    "it would be ignored",
                    hint=f"see `loomgit executions {command} --help`",
                )
            if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
                own[name] = value
            elif own[name] != value:
                raise UsageError(
                    f"{flag} is given twice: {value} before `{command}`, {own[name]} after it"
                )
        return own

    def remote(self) -> tuple[str, str | None] | None:
        if self.server is None:
            if self.token_file is not None:
                raise UsageError("--token-file goes with --server")
            return None
        given = click.get_current_context().get_parameter_source("state_dir")
        if given is ParameterSource.COMMANDLINE:  # $LOOMGIT_STATE_DIR may well be set
            raise UsageError("give --server or --state-dir, not both")
        from loomgit.live import read_token

        return self.server, read_token(self.token_file)


def _history(
    state_dir: Path | None, record_limit: int | None = None, *, reading: bool = False
) -> Any:
    """The execution history in `state_dir` (default: the user's), made if missing; when
    only `reading` it, a missing one is read as empty and not made, so a mistyped
    --state-dir leaves no folder behind."""
    from loomgit.history import DB_NAME, DEFAULT_MAX_FIELD_BYTES, History, default_path

    if state_dir:
        report_to(state_dir)
    path = state_dir / DB_NAME if state_dir else default_path()
    if reading and not path.exists():
        return _NoHistory(path)
    return History(path, max_field_bytes=record_limit or DEFAULT_MAX_FIELD_BYTES)


class _NoHistory:
    """A history file that is not there, read as an empty one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _NoHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def query(self, query: Any) -> list[Any]:
        return []

    def recorded(self, column: str) -> list[str]:
        return []

    def tally(self, *filters: Any) -> list[Any]:
        return []

    def prune_each(self, **how: Any) -> dict[str, int]:
        return {}

    def get(self, ident: str) -> Any:
        raise UsageError(f"no execution {ident}", hint=_missing(self.path))


def _missing(path: Path) -> str:
    return (
        f"there is no execution history in {path.parent} (no {path.name}): nothing has "
        "recorded an execution there"
    )


def _duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _input(raw: str | None, path: Path | None) -> Any:
    if raw is not None and path is not None:
        raise UsageError("give --input or --input-file, not both")
    if path is not None:
        try:
            raw = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{path} is not UTF-8 text") from None
    if raw is None:
        return {}
    where = path or "--input"
    try:
        return jsontext.loads(raw)
    except jsontext.TooDeep as exc:
        raise UsageError(f"{where} is refused: {exc}") from None
    except ValueError as exc:
        raise UsageError(f"{where} is not valid JSON: {exc}") from None


class _Printer:
    """Prints each step as it finishes, and log lines as they are written."""

    def execution_started(self, ex: Any) -> None:
        click.echo(f"running {ex.workflow} in {ex.environment} (execution {ex.id})")

    def step_finished(self, step: Any) -> None:
        mark = STATUS_MARK.get(step.status, "?")
        tries = f" ({step.attempts} attempts)" if step.attempts > 1 else ""
        line = f"  {mark} {step.step_id:<20} {step.type:<10} {step.status:<10} "
        line += _duration(step.duration_ms) + tries
        click.echo(line)
        if step.error:
            click.echo(f"      {step.error}")

    def log(self, step_id: str, level: str, message: str) -> None:
        click.echo(f"    [{level}] {message}")


@cli.command()
@click.argument("workflow", callback=workflow_arguments, shell_complete=workflows)
@click.option("--input", "raw_input", metavar="JSON", help="The trigger body, as JSON.")
@click.option(
    "--input-file",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    help="Read the trigger body (JSON) from a file, or - for standard input.",
)
@click.option(
    "--env",
    "env",
    metavar="ENV",
    shell_complete=environments,
    help="Only the first environment is accepted: manual runs never touch later ones.",
)
@click.option(
    "--timeout",
    "limit",
    metavar="DURATION",
    help="Time limit of the whole execution, e.g. 30s or 5m (default: the workflow's "
    "spec.timeout, else 5m).",
)
@click.option(
    "--record-limit",
    type=click.IntRange(min=1024),
    default=64 * 1024,
    show_default=True,
    metavar="BYTES",
    help="Largest input or output of a step kept in the history; larger ones are kept as "
    "a marked preview.",
)
@format_option
@key_option
@state_option
@repo_option
def run(
    workflow: str,
    raw_input: str | None,
    input_file: Path | None,
    env: str | None,
    limit: str | None,
    record_limit: int,
    fmt: str,
    age_keys: AgeKeys,
    state_dir: Path | None,
    repo: Path,
) -> None:
    """Run WORKFLOW once, by hand, in the first environment.

    Runs the definition in the work tree (uncommitted edits included) with the first
    environment's variables and credentials; only that environment's key is needed.
    Prints each step as it finishes, the output and the execution id. Exits 0 when the
    execution succeeded, 1 when it failed or timed out.

    \b
    Examples:
      loomgit run order-sync --input '{"order": {"number": 1001}}'
      loomgit run order-sync --input-file order.json --age-key-file development=dev.agekey
      loomgit run nightly-sales-report --format json
    """
    from loomgit import runner

    body = _input(raw_input, input_file)
    seconds = runner.parse_duration(limit, "--timeout") if limit else None
    printer = None if fmt == "json" else _Printer()
    with _history(state_dir, record_limit) as history:
        result = runner.run_manual(
            repo, workflow, body, age_keys, history, env=env, time_limit=seconds, listener=printer
        )
    ex = result.execution
    if fmt == "json":
        click.echo(jsontext.dumps(ex.to_json(), indent=2, ensure_ascii=False))
    else:
        click.echo(
            f"{ex.status} in {_duration(ex.duration_ms)} "
            f"({ex.workflow} in {ex.environment}, execution {ex.id})"
        )
        if ex.error:
            click.echo(f"error: {ex.error}", err=True)
        if ex.output is not None:
            click.echo("output:")
            click.echo(jsontext.dumps(ex.output, indent=2, ensure_ascii=False, default=str))
        click.echo(f"details: loomgit executions show {ex.id}")
    sys.exit(0 if ex.status == "succeeded" else 1)


def _why_none(
    history: Any, filters: dict[str, str | None], version: int | None = None
) -> list[str]:
    """Why a local listing filtered by environment or workflow found nothing, when the
    history never saw the value: the closest value recorded, or those there are; and,
    unless it was a near typo, which history that is, since a daemon keeping its own
    elsewhere (`serve --state-dir`) is the other likely cause. With a `version` of a
    workflow it saw, the versions it saw, when that one is not among them. Empty when
    each value was seen."""
    from loomgit.wording import closest

    elsewhere = "a daemon's is read with --server URL, or with --state-dir set to its state folder"
    if isinstance(history, _NoHistory):
        return [f"{_missing(history.path)}; {elsewhere}"]
    if not history.recorded("environment"):
        return [f"the execution history in {history.path} is empty; {elsewhere}"]
    hints: list[str] = []
    unknown = False
    for column, value in filters.items():
        known = history.recorded(column)
        if value is None or value in known:
            continue
        said = f"no execution was ever recorded for {_FILTERS[column]} {value}"
        close = closest(value, known)
        if close:
            hints.append(f"{said}; did you mean {close}?")
        else:
            hints.append(f"{said}; the history has {_some(known)}")
            unknown = True
    if unknown:
        hints.append(f"this is the history in {history.path}; {elsewhere}")
    workflow, env = filters.get("workflow"), filters.get("environment")
    if version is not None and workflow is not None and not hints:
        seen = history.versions(workflow, env)
        if version not in seen:
            where = f" in {env}" if env else ""
            said = f"no execution of {workflow} v{version} was ever recorded{where}"
            if seen:
                hints.append(f"{said}; it has {_some([f'v{n}' for n in seen])}")
            else:
                hints.append(f"{said}; none of {workflow} was")
    return hints


_FILTERS = {"environment": "--env", "workflow": "--workflow"}


def _unserved(server: str, workflow: str, version: int | None = None) -> str | None:
    """Why a daemon's history had nothing for `workflow` when none of its environments
    serves it (a typo, most often): the closest it serves, or those it does; or, for a
    `version` none serves, the versions they do. None when one does, or when the daemon
    does not say."""
    from loomgit.live import fetch_environments
    from loomgit.wording import closest

    try:
        envs = fetch_environments(server)
    except LoomgitError:
        return None
    workflows = [ws for env in envs if isinstance(ws := env.get("workflows"), dict)]
    served = sorted({wf for ws in workflows for wf in ws})
    if workflow in served:
        return None if version is None else _versions_served(server, workflow, version, envs)
    said = f"no environment of the daemon at {server} serves --workflow {workflow}"
    close = closest(workflow, served)
    if close:
        return f"{said}; did you mean {close}?"
    return f"{said}; it serves {_some(served) if served else 'none'}"


def _versions_served(
    server: str, workflow: str, version: int, envs: list[dict[str, Any]]
) -> str | None:
    """`the daemon at … serves order-sync v4 in production, v5 in staging`, when none of
    its environments serves `version`."""
    where = []
    for env in envs:
        cell = env["workflows"].get(workflow) if isinstance(env.get("workflows"), dict) else None
        if isinstance(cell, dict) and isinstance(cell.get("version"), int):
            if cell["version"] == version:
                return None
            where.append(f"v{cell['version']} in {env.get('name')}")
    if not where:
        return None
    return f"the daemon at {server} serves {workflow} {', '.join(where)}"


def _some(names: list[str]) -> str:
    return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def _short_time(iso: str | None) -> str:
    return "-" if iso is None else iso[:19].replace("T", " ")


@cli.group(invoke_without_command=True)
@filter_options
@click.option("--status", type=click.Choice(STATUSES), help="Only executions with this status.")
@click.option("--since", metavar="AGE|DATE", help="Started within 30m, 2h, 7d… or since a date.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option(
    "--before",
    metavar="ID",
    help="Only those listed after this execution: the next page, from the last id shown.",
)
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep listing, oldest first: the last --limit (10 unless given), then each "
    "execution as it starts and as it ends, read every second, until Ctrl-C; JSON lines "
    "with --format json.",
)
@format_option
@state_option
@server_options
@click.pass_context
def executions(
    ctx: click.Context,
    env: str | None,
    workflow: str | None,
    version: int | None,
    status: str | None,
    since: str | None,
    limit: int,
    before: str | None,
    follow: bool,
    fmt: str,
    state_dir: Path | None,
    server: str | None,
    token_file: Path | None,
) -> None:
    """The execution history, newest first, filtered by environment, workflow, version,
    status; or followed as it is recorded (--follow).

    \b
    Examples:
      loomgit executions --env production --status failed --since 1d
      loomgit executions --workflow order-sync --limit 10 --format json
      loomgit executions --env production --workflow order-sync --version 4 --status failed
      loomgit executions --limit 10 --before 01JD3N5Q8W   # the next ten
      loomgit executions --follow --env production --server http://127.0.0.1:8080
      loomgit executions show 01JD3N5Q8W
      loomgit executions summary --env production --since 2h
      loomgit executions prune --older-than 30d --keep 100000
      LOOMGIT_API_TOKEN=… loomgit executions --server https://loomgit.internal --env production
    """
    if ctx.invoked_subcommand is not None:
        given = {
            name: ctx.params[name]
            for name in _LISTING
            if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
        }
        ctx.obj = _Source(state_dir, server, token_file, given)
        return
    _versioned(workflow, version)
    source = _Source(state_dir, server, token_file)
    from loomgit import records

    remote = source.remote()
    filters = {"environment": env, "workflow": workflow, "status": status}
    filters |= {"version": None if version is None else str(version)}
    if follow:
        if before is not None:
            raise UsageError("--before lists a page of the past; --follow lists what comes")
        shown = limit if ctx.get_parameter_source("limit") is ParameterSource.COMMANDLINE else 10
        moment = parse_since(since) if since else None
        _follow(filters, moment, shown, fmt, state_dir, remote)
        return
    hints: list[str | None] = []
    if remote is not None:
        from loomgit.live import as_executions, fetch_executions

        rows = fetch_executions(*remote, {**filters, "since": since, "before": before}, limit)
        found = as_executions(remote[0], rows)
        if workflow is not None and not found and fmt != "json":
            hints = [_unserved(remote[0], workflow, version)]
    else:
        moment = parse_since(since) if since else None
        query = records.Query(env, workflow, status, moment, limit, before, version)
        with _history(state_dir, reading=True) as history:
            found = history.query(query)
            # An environment or workflow the history never saw is most often a typo, or
            # another history: said so.
            if not found:
                named = {"environment": env, "workflow": workflow}
                hints = list(_why_none(history, named, version))
        rows = [ex.to_json(steps=False) for ex in found]
    if fmt == "json":
        click.echo(jsontext.dumps(rows, indent=2))
        return
    if not found:
        click.echo("no executions match", err=True)
        for hint in dict.fromkeys(filter(None, hints)):
            click.echo(f"hint: {hint}", err=True)
        return
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=240)
    header = ("id", "started (UTC)", "env", "workflow", "ver", "trigger", "status", "took")
    cells: list[tuple[str, ...]] = [
        (
            ex.id,
            _short_time(data["started_at"]),
            ex.environment,
            ex.workflow,
            f"v{ex.version}" if ex.version else "-",
            ex.trigger_label,
            f"{STATUS_MARK.get(ex.status, '?')} {ex.status}",
            _duration(ex.duration_ms),
        )
        for ex, data in zip(found, rows, strict=True)
    ]
    table = Table(box=None, pad_edge=False)
    for column in header:
        table.add_column(column, no_wrap=True)
    # Why each one failed, in what width the other columns leave (`show ID` has the rest).
    widths = [max(cell_len(text) for text in column) for column in zip(header, *cells, strict=True)]
    room = console.width - sum(widths) - 2 * len(widths)
    errors = [" ".join((ex.error or "").split()) for ex in found]
    if room >= _ERROR_ROOM and any(errors):
        table.add_column("error", no_wrap=True, overflow="ellipsis", max_width=room)
        cells = [(*row, error) for row, error in zip(cells, errors, strict=True)]
    for row in cells:
        table.add_row(*row)
    console.print(table)


_ERROR_ROOM = 20  # the narrowest error column worth showing


def _follow(
    filters: dict[str, str | None],
    since: float | None,
    limit: int,
    fmt: str,
    state_dir: Path | None,
    remote: tuple[str, str | None] | None,
) -> None:
    """`executions --follow`: from the daemon at `remote`, else the local history."""
    from loomgit import records
    from loomgit.follow import Follower, One, Recent

    recent: Recent
    one: One
    if remote is not None:
        from loomgit import live

        server, token = remote

        def recent(begin: float | None, count: int) -> list[records.Execution]:
            moment = None if begin is None else f"{begin:.6f}"
            rows = live.fetch_executions(server, token, {**filters, "since": moment}, count)
            return live.as_executions(server, rows)

        def one(ident: str) -> records.Execution | None:
            try:
                return live.as_executions(server, [live.fetch_execution(server, token, ident)])[0]
            except live.NotFound:
                return None

        _following(Follower(recent, one, since, filters["status"]), limit, fmt)
        return
    with _history(state_dir, reading=True) as history:
        if isinstance(history, _NoHistory):
            raise UsageError(
                f"no execution history at {history.path} to follow",
                hint="`loomgit serve` and `loomgit run` record one there; "
                "is the daemon's --state-dir another?",
            )
        version = filters["version"]

        def recent(begin: float | None, count: int) -> list[records.Execution]:
            query = records.Query(
                filters["environment"],
                filters["workflow"],
                filters["status"],
                begin,
                count,
                None,
                None if version is None else int(version),
            )
            found: list[records.Execution] = history.query(query)
            return found

        def one(ident: str) -> records.Execution | None:
            try:
                found: records.Execution = history.get(ident)
            except UsageError:
                return None
            return found

        _following(Follower(recent, one, since, filters["status"]), limit, fmt)


def _following(follower: Follower, limit: int, fmt: str) -> None:
    """Reads every second and prints what is new, until Ctrl-C (exit 0). A read that fails
    after the first is said once on stderr and tried again: a daemon restarting, say."""
    import shutil

    from loomgit.follow import HEADER, POLL, READ, line

    tty = sys.stdout.isatty()
    width = shutil.get_terminal_size().columns if tty else None
    failing: str | None = None
    first = True
    try:
        while True:
            try:
                fresh, full = follower.read(limit if first else READ)
            except LoomgitError as exc:
                if first:
                    raise
                if failing is None:
                    click.echo(f"warning: {exc}; reading again every {POLL:g} s", err=True)
                failing = str(exc)
                time.sleep(POLL)
                continue
            if failing is not None:
                click.echo("following again", err=True)
                failing = None
            if first and fmt != "json":
                click.echo(HEADER)
            if full and not first:
                click.echo(
                    f"warning: more than {READ:,} executions in one read; some are not shown"
                    " (--env, --workflow or --status narrow what is followed)",
                    err=True,
                )
            for ex in fresh:
                if fmt == "json":
                    click.echo(jsontext.dumps(ex.to_json(steps=False)))
                else:
                    click.echo(line(ex, width))
            sys.stdout.flush()
            first = False
            time.sleep(POLL)
    except KeyboardInterrupt:
        return


def _block(label: str, value: Any, indent: str = "      ") -> None:
    if value is None or value == [] or value == {}:
        return
    text = jsontext.dumps(value, indent=2, ensure_ascii=False, default=str)
    click.echo(f"{indent}{label}: " + text.replace("\n", "\n" + indent))


@executions.command("show")
@click.argument("ident", metavar="ID")
@format_option
@state_option
@server_options
@click.pass_obj
def show_execution(
    group: _Source,
    ident: str,
    fmt: str,
    state_dir: Path | None,
    server: str | None,
    token_file: Path | None,
) -> None:
    """One execution step by step: status, timing, input, output, logs and errors.

    ID may be the first characters of the id (6 or more), when they match only one
    execution.

    \b
    Examples:
      loomgit executions show 01JD3N5Q8WZ4T0ZJ5J7Q5X9Y1M
      loomgit executions show 01JD3N5Q --format json --state-dir /var/lib/loomgit
      loomgit executions show 01JD3N5Q --server http://127.0.0.1:8080 --token-file api.token
    """
    from loomgit.records import FINISHED

    fmt = group.take("show", {"fmt": fmt})["fmt"]
    source = _Source(
        state_dir or group.state_dir, server or group.server, token_file or group.token_file
    )
    remote = source.remote()
    if remote is not None:
        from loomgit.live import as_executions, fetch_execution

        data = fetch_execution(*remote, ident)
        (ex,) = as_executions(remote[0], [data])
    else:
        with _history(source.state_dir, reading=True) as history:
            ex = history.get(ident)
        data = ex.to_json()
    if fmt == "json":
        click.echo(jsontext.dumps(data, indent=2, ensure_ascii=False))
        return
    version = f"v{ex.version}" if ex.version else "unversioned"
    click.echo(f"execution {ex.id}")
    click.echo(f"  workflow:    {ex.workflow} {version} in {ex.environment}")
    retried, resumed = ex.trigger.get("retry_of"), ex.trigger.get("resumed_from")
    start = f", from step {resumed}" if resumed else ""
    click.echo(
        f"  trigger:     {ex.trigger_type}" + (f" (a retry of {retried}{start})" if retried else "")
    )
    click.echo(f"  status:      {STATUS_MARK.get(ex.status, '?')} {ex.status}")
    click.echo(f"  started:     {data['started_at']}")
    click.echo(f"  ended:       {data['ended_at'] or '-'}  ({_duration(ex.duration_ms)})")
    if ex.stopped_at:
        click.echo(f"  stopped at:  {ex.stopped_at}")
    if ex.error:
        click.echo(f"  error:       {ex.error}")
    _block("trigger", ex.trigger, indent="  ")
    click.echo("steps:")
    if not ex.steps:  # the steps are recorded with the execution's end
        click.echo("  (none recorded)" if ex.status in FINISHED else "  (recorded when it ends)")
    for step in ex.steps:
        tries = f", {step.attempts} attempts" if step.attempts > 1 else ""
        click.echo(
            f"  {STATUS_MARK.get(step.status, '?')} {step.step_id} ({step.type}) "
            f"{step.status}, {_duration(step.duration_ms)}{tries}"
        )
        if step.error:
            click.echo(f"      error: {step.error}")
        for line in step.logs:
            click.echo(f"      [{line.get('level')}] {line.get('message')}")
        _block("input", step.input)
        _block("output", step.output)
    if ex.output is not None:
        click.echo("output:")
        click.echo(jsontext.dumps(ex.output, indent=2, ensure_ascii=False, default=str))


@executions.command("prune")
@click.option("--older-than", metavar="AGE", help="Delete executions started before this age.")
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    metavar="N",
    help="Keep only the newest N executions of each environment.",
)
@click.option(
    "--env",
    "env",
    metavar="ENV",
    shell_complete=environments,
    help="Only this environment's executions.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@format_option
@state_option
@click.pass_obj
def prune(
    group: _Source,
    older_than: str | None,
    keep: int | None,
    env: str | None,
    dry_run: bool,
    fmt: str,
    state_dir: Path | None,
) -> None:
    """Delete old executions (retention by age and by count per environment), of every
    environment or of --env's.

    Executions still queued or running are never deleted. Safe while `loomgit serve`
    records into the same folder: executions are deleted a few hundred at a time, and
    the daemon's writes go in between.

    \b
    Examples:
      loomgit executions prune --older-than 30d
      loomgit executions prune --keep 100000
      loomgit executions prune --older-than 7d --dry-run --format json
      loomgit executions prune --env development --keep 1000
    """
    taken = group.take("prune", {"env": env, "fmt": fmt})
    env, fmt = taken["env"], taken["fmt"]
    if group.server is not None:
        raise UsageError(
            "prune deletes from the local history only, not through --server",
            hint="run it where the daemon keeps its history, with its --state-dir",
        )
    if older_than is None and keep is None:
        raise UsageError("give --older-than, --keep or both")
    age = time.time() - parse_since(older_than, option="--older-than") if older_than else None
    with _history(state_dir or group.state_dir, reading=True) as history:
        each = history.prune_each(older_than=age, keep=keep, dry_run=dry_run, environment=env)
        # A mistyped --env deletes nothing; said why, as the listing does.
        hints = _why_none(history, {"environment": env}) if env and not each else []
    deleted = sum(each.values())
    if fmt == "json":
        report = {
            "dry_run": dry_run,
            "deleted": deleted,
            "environments": dict(sorted(each.items())),
        }
        click.echo(jsontext.dumps(report, indent=2))
    else:
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{verb} {deleted} execution{'s' if deleted != 1 else ''}")
        for hint in hints:
            click.echo(f"hint: {hint}", err=True)


def _rate(text: str | None) -> float | None:
    """--max-failure-rate: a percentage, `5` or `5%`, as a fraction."""
    if text is None:
        return None
    try:
        percent = float(text.strip().removesuffix("%"))
    except ValueError:
        percent = math.nan
    if not 0 <= percent <= 100:
        raise UsageError(
            f"--max-failure-rate takes a percentage from 0 to 100, such as 5%; not '{text}'"
        )
    return percent / 100


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


@executions.command("summary")
@filter_options
@click.option(
    "--since",
    metavar="AGE|DATE",
    default="24h",
    show_default=True,
    help="Executions started within 30m, 2h, 7d… or since a date.",
)
@click.option(
    "--max-failure-rate",
    "max_rate",
    metavar="PERCENT",
    help="Exit 1 when a workflow version failed more often than this (5 or 5%), of those "
    "that ended: a gate after a promotion.",
)
@click.option(
    "--min-executions",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="With --max-failure-rate: judge only versions with at least N ended executions.",
)
@format_option
@state_option
@server_options
@click.pass_obj
def summary(
    group: _Source,
    env: str | None,
    workflow: str | None,
    version: int | None,
    since: str,
    max_rate: str | None,
    min_executions: int,
    fmt: str,
    state_dir: Path | None,
    server: str | None,
    token_file: Path | None,
) -> None:
    """How each workflow version fared in each environment: executions by status, the
    failure rate, p50 and p95 of how long they took, and the most frequent error (errors
    that differ only in a time, an id or a number of 4 digits or more count as one, with
    … where they differ).

    The failure rate counts failed and timed-out executions among those that succeeded,
    failed or timed out (cancelled and interrupted ones were stopped from outside; queued
    and running ones have not ended). With --max-failure-rate it is a gate: after a
    promotion, a CI job can wait a while, then fail if the new version fails too often.

    \b
    Examples:
      loomgit executions summary
      loomgit executions summary --env production --since 2h
      loomgit executions summary --workflow order-sync --format json
      LOOMGIT_API_TOKEN=… loomgit executions summary --server https://loomgit.internal \\
          --env production --workflow order-sync --version 4 --since 30m \\
          --max-failure-rate 5%
    """
    own = {"env": env, "workflow": workflow, "version": version, "since": since, "fmt": fmt}
    taken = group.take("summary", own)
    env, workflow, version = taken["env"], taken["workflow"], taken["version"]
    since, fmt = taken["since"], taken["fmt"]
    _versioned(workflow, version)
    limit = _rate(max_rate)
    source = _Source(
        state_dir or group.state_dir, server or group.server, token_file or group.token_file
    )
    remote = source.remote()
    hints: list[str | None] = []
    if remote is not None:
        from loomgit.live import fetch_summary

        filters = {"environment": env, "workflow": workflow, "since": since}
        filters |= {"version": None if version is None else str(version)}
        report = fetch_summary(*remote, filters)
        if workflow is not None and not report["versions"] and fmt != "json":
            hints = [_unserved(remote[0], workflow, version)]
    else:
        from loomgit.records import stamp

        moment = parse_since(since)
        with _history(source.state_dir, reading=True) as history:
            tallies = history.tally(moment, env, workflow, version)
            if not tallies:
                named = {"environment": env, "workflow": workflow}
                hints = list(_why_none(history, named, version))
        report = {"since": stamp(moment), "versions": [t.to_json() for t in tallies]}
    versions: list[dict[str, Any]] = report["versions"]
    if fmt == "json":
        click.echo(jsontext.dumps(report, indent=2, ensure_ascii=False))
    elif not versions:
        click.echo(f"no executions started since {_short_time(report['since'])} UTC", err=True)
        for hint in dict.fromkeys(filter(None, hints)):
            click.echo(f"hint: {hint}", err=True)
    else:
        _print_summary(report)
    if limit is not None:
        _judge(versions, limit, max_rate or "", min_executions)


def _print_summary(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=240)
    versions: list[dict[str, Any]] = report["versions"]
    console.print(f"executions started since {_short_time(report['since'])} UTC", highlight=False)
    header = ["env", "workflow", "ver", "executions", "succeeded", "failed", "failure rate"]
    header += ["p50 took", "p95 took", "last started (UTC)"]
    other = any(_others(v["statuses"]) for v in versions)
    if other:
        header.insert(6, "other")
    table = Table(box=None, pad_edge=False)
    for column in header:
        table.add_column(column, no_wrap=True)
    for v in versions:
        statuses = v["statuses"]
        row = [
            v["environment"],
            v["workflow"],
            f"v{v['version']}" if v["version"] else "-",
            str(v["executions"]),
            str(statuses.get("succeeded", 0)),
            str(_ended(statuses)[0]),
            _percent(v["failure_rate"]),
            _duration(v["duration_ms"]["p50"]),
            _duration(v["duration_ms"]["p95"]),
            _short_time(v["last_started_at"]),
        ]
        if other:
            row.insert(6, _others(statuses) or "-")
        table.add_row(*row)
    console.print(table)
    failing = [v for v in versions if v["errors"]]
    if not failing:
        return
    console.print("\nthe most frequent error of each that failed:", highlight=False)
    for v in failing:
        top = v["errors"][0]
        version = f"v{v['version']}" if v["version"] else "unversioned"
        text = " ".join(top["error"].split())
        console.print(
            f"  {v['workflow']} {version} in {v['environment']}, {_times(top['count'])}: {text}",
            no_wrap=True,
            overflow="ellipsis",
            highlight=False,
            markup=False,
        )


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def _others(statuses: dict[str, int]) -> str:
    """Executions neither succeeded nor failed: `2 running, 1 interrupted`."""
    from loomgit.records import ENDED

    return ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in statuses.items() if s not in ENDED)


def _ended(statuses: dict[str, int]) -> tuple[int, int]:
    """(failed or timed out, ended on their own) of a version's counts by status."""
    from loomgit.records import ENDED, FAILED

    return sum(statuses.get(s, 0) for s in FAILED), sum(statuses.get(s, 0) for s in ENDED)


def _judge(versions: list[dict[str, Any]], limit: float, given: str, least: int) -> None:
    """--max-failure-rate: exit 1 naming each version above it."""
    above, judged = [], 0
    for v in versions:
        statuses, rate = v["statuses"], v["failure_rate"]
        failed, ended = _ended(statuses)
        if ended < least:  # `least` is 1 or more: a version judged has a rate
            continue
        judged += 1
        if rate > limit:
            version = f"v{v['version']}" if v["version"] else "unversioned"
            above.append(
                f"{v['workflow']} {version} in {v['environment']} "
                f"({_percent(rate)}: {failed} of {ended})"
            )
    if above:
        shown = given if given.strip().endswith("%") else f"{given.strip()}%"
        raise LoomgitError(
            f"failed more often than --max-failure-rate {shown}: " + ", ".join(above)
        )
    if not judged:  # a gate that passed without looking: said so, not hidden
        enough = "an execution that ended" if least == 1 else f"{least} that ended"
        click.echo(f"note: --max-failure-rate judged nothing: no version had {enough}", err=True)
