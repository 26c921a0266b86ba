"""`loomgit executions retry`: has the daemon run again executions that did not succeed,
by id or every one a window finds (see `loomgit.retry` for what a retry is)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from loomgit import jsontext
from loomgit.cli import format_option
from loomgit.cli_run import (
    _LISTING,
    _Source,
    _versioned,
    executions,
    server_options,
    version_option,
)
from loomgit.completion import environments, workflows
from loomgit.errors import LoomgitError, UsageError

if TYPE_CHECKING:
    from loomgit.records import Execution

# The statuses `loomgit.retry` retries, repeated here so that `--help` need not import the
# engine; a test keeps the two equal.
RETRIED = ["failed", "cancelled", "timed_out", "interrupted"]
MOST = 10_000  # executions read from a window at most


@executions.command("retry")
@click.argument("idents", metavar="[ID]...", nargs=-1)
@click.option(
    "--since",
    metavar="AGE|DATE",
    help="Retry each one started within 30m, 2h… or "
    "since a date that did not succeed and was not retried yet.",
)
@click.option(
    "--env",
    "env",
    metavar="ENV",
    shell_complete=environments,
    help="With --since: only this environment's.",
)
@click.option(
    "--workflow",
    metavar="NAME",
    shell_complete=workflows,
    help="With --since: only this workflow's.",
)
@version_option
@click.option(
    "--status",
    type=click.Choice(RETRIED),
    help="With --since: only those with this status (default: all four).",
)
@click.option(
    "--from-failed-step",
    is_flag=True,
    help="Start each retry at the step that failed, taking the steps before it as they "
    "were recorded (refused where they cannot be: each says why).",
)
@click.option(
    "--dry-run", is_flag=True, help="Ask the daemon what it would retry, and how; retry nothing."
)
@format_option
@functools.partial(
    server_options,
    server_help="The running `loomgit serve` that recorded them, which runs the retries "
    "(it needs an API token).",
)
@click.pass_obj
def retry(
    group: _Source,
    idents: tuple[str, ...],
    since: str | None,
    env: str | None,
    workflow: str | None,
    version: int | None,
    status: str | None,
    from_failed_step: bool,
    dry_run: bool,
    fmt: str,
    server: str | None,
    token_file: Path | None,
) -> None:
    """Run again executions that failed, timed out, were interrupted or cancelled: in the
    daemon that recorded them (--server), in their environment, with the trigger they
    recorded, as the environment serves the workflow now (the version a fix was promoted
    in). Give their ids, or --since to retry each one of a window.

    Each execution is retried once: asking again (the command run twice) names the
    first retry. A retry that fails too is retried by its own id. The trigger's redacted
    headers (Authorization, Cookie, API keys) are left out, as the daemon checked them
    when it came in; an execution whose body, query or path held a credential's value
    (recorded as [redacted]) is not retried: its sender has to send it again.

    A retry runs every step again, unless --from-failed-step: it then starts at the step
    that failed and takes the steps before it as they were recorded (an order created
    before a payment failed is not created again). The daemon refuses that, saying why,
    where a step before it was recorded redacted or truncated, or the version served now
    would not have run it just so (another step in its place, its `when` or its
    parameters rendering otherwise).

    Exit status: 0 when every one was retried (or had been), 1 when one or more were
    not (each says why), 2 for a usage error or a daemon that cannot be reached.

    \b
    Examples:
      loomgit executions retry 01JD3N5Q8W --server http://127.0.0.1:8080
      loomgit executions retry --since 2h --env production --workflow order-sync --dry-run \\
          --server https://loomgit.internal
      loomgit executions retry --since 45m --env production --format json --server URL
      loomgit executions retry 01JD3N5Q8W --from-failed-step --server URL
    """
    taken = group.take(
        "retry",
        {
            "env": env,
            "workflow": workflow,
            "version": version,
            "status": status,
            "since": since,
            "fmt": fmt,
        },
    )
    env, workflow, version = taken["env"], taken["workflow"], taken["version"]
    status, since, fmt = taken["status"], taken["since"], taken["fmt"]
    source = _Source(None, server or group.server, token_file or group.token_file)
    remote = source.remote()
    if remote is None:
        raise UsageError(
            "retry runs in the daemon that recorded the executions: give --server URL",
            hint="a run of `loomgit run` is run again with `loomgit run NAME --input …`",
        )
    narrowed = [
        _LISTING[name]
        for name, value in (("env", env), ("workflow", workflow), ("status", status))
        if value is not None
    ] + (["--version"] if version is not None else [])
    if idents and (since is not None or narrowed):
        raise UsageError("give the ids to retry, or --since and its filters, not both")
    if not idents and since is None:
        if narrowed:
            verb = "goes" if len(narrowed) == 1 else "go"
            raise UsageError(f"{' and '.join(narrowed)} {verb} with --since: the window to retry")
        raise UsageError(
            "give the ids to retry, or --since to retry each execution of a window that did "
            "not succeed",
            hint="loomgit executions retry --since 2h --env production --dry-run --server URL",
        )
    _versioned(workflow, version)
    if since is not None:
        filters = {"environment": env, "workflow": workflow, "status": None}
        filters |= {"version": None if version is None else str(version), "since": since}
        plan = _window(remote, filters, status)
        if not plan and fmt != "json":
            click.echo(f"nothing to retry: every execution since {since} succeeded or was retried")
    else:
        plan = [{"execution": ident} for ident in dict.fromkeys(idents)]
    results = _retried(remote, plan, fmt, from_failed_step, dry_run)
    if fmt == "json":
        click.echo(jsontext.dumps(results, indent=2))
    if fmt != "json" and len(results) > 1:
        click.echo(_totals(results, dry_run))
    started = [item for item in results if item["result"] == "retried"]
    if started and fmt != "json":
        envs = {item["environment"] for item in started}
        where = f" --env {next(iter(envs))}" if len(envs) == 1 else ""
        click.echo(f"hint: follow them: loomgit executions -f --server {remote[0]}{where}")
    if any(item["result"] == "not_retried" for item in results):
        raise SystemExit(1)


def _window(
    remote: tuple[str, str | None], filters: dict[str, str | None], status: str | None
) -> list[dict[str, Any]]:
    """What a retry of the window would do to each execution in it that did not succeed,
    oldest first: those that cannot be retried say why, those a retry in the window
    retried already name it."""
    from loomgit.live import as_executions, fetch_executions

    rows = fetch_executions(*remote, filters, MOST)
    if len(rows) >= MOST:
        click.echo(
            f"warning: the window holds {MOST:,} executions or more; the oldest are left "
            "out: give a later --since, or run it again once these are retried",
            err=True,
        )
    found = as_executions(remote[0], rows)
    retried = {of: ex.id for ex in found if isinstance(of := ex.trigger.get("retry_of"), str)}
    wanted = [status] if status else RETRIED
    return [_judged(ex, retried) for ex in reversed(found) if ex.status in wanted]


def _judged(ex: Execution, retried: dict[str, str]) -> dict[str, Any]:
    """What a retry would do to `ex`, given the retries (by what they retry) known."""
    from loomgit import retry as retries

    item: dict[str, Any] = {
        "execution": ex.id,
        "workflow": ex.workflow,
        "environment": ex.environment,
        "status": ex.status,
    }
    why = retries.why_not(ex)
    if why is not None:
        return item | {"result": "not_retried", "error": why}
    if ex.id in retried:
        return item | {"result": "already_retried", "retry": retried[ex.id]}
    return item | {"result": "would_retry"}


def _retried(
    remote: tuple[str, str | None],
    plan: list[dict[str, Any]],
    fmt: str,
    from_failed_step: bool,
    dry_run: bool,
) -> list[dict[str, Any]]:
    """Each of `plan` retried by the daemon, or with `dry_run` what it would do, each said
    as it is done (those the window found already retried or not retriable are not
    asked about again)."""
    from loomgit.live import Answered, retry

    done: list[dict[str, Any]] = []
    for item in plan:
        if item.get("result") not in ("not_retried", "already_retried"):
            try:
                answer = retry(*remote, item["execution"], from_failed_step, dry_run)
            except Answered as exc:
                if exc.status not in (404, 409):  # 503 and the like: the rest would get it too
                    _stopped(done, exc, dry_run)
                item = {**item, "result": "not_retried", "error": exc.said}
            else:
                if answer.get("replayed"):
                    result = "already_retried"
                else:
                    result = "would_retry" if dry_run else "retried"
                item = {
                    **item,
                    "execution": answer.get("retry_of", item["execution"]),
                    "workflow": answer.get("workflow"),
                    "environment": answer.get("environment"),
                    "result": result,
                    "retry": answer.get("execution"),
                    "version": answer.get("version"),
                    "resumed_from": answer.get("resumed_from"),
                }
        done.append(item)
        if fmt != "json":
            _say(item, dry_run)
    return done


def _stopped(done: list[dict[str, Any]], exc: LoomgitError, dry_run: bool) -> None:
    if dry_run:
        raise UsageError(exc.message, hint=exc.hint) from None
    retried = sum(item["result"] == "retried" for item in done)
    raise UsageError(
        f"{exc.message}; stopped after {retried} retried",
        hint="running the same command again retries only those not retried yet",
    ) from None


def _say(item: dict[str, Any], dry_run: bool) -> None:
    ident, result = item["execution"], item["result"]
    what = _what(item, dry_run)
    if result == "not_retried":
        if dry_run:
            click.echo(f"would not retry {ident}{what}: {item['error']}")
        else:
            click.echo(f"not retried {ident}: {item['error']}", err=True)
    elif result == "already_retried":
        click.echo(f"already retried {ident} as {item['retry']}{_start(item)}{what}")
    else:
        verb = "would retry" if dry_run else f"retried {ident} as {item['retry']}"
        if dry_run:
            verb += f" {ident}"
        click.echo(f"{verb}{_start(item)}{what}")


def _start(item: dict[str, Any]) -> str:
    """Where a retry starts, when not at the first step."""
    step = item.get("resumed_from")
    return f" from step {step}" if step else ""


def _what(item: dict[str, Any], dry_run: bool) -> str:
    """What was (or would be) retried: the workflow, the version that runs the retry,
    the environment, and in a dry run the status it ended with (where it was listed)."""
    if item.get("workflow") is None:
        return ""
    version = f" v{item['version']}" if item.get("version") else ""
    status = f", {item['status']}" if dry_run and item.get("status") else ""
    return f" ({item['workflow']}{version} in {item['environment']}{status})"


def _totals(results: list[dict[str, Any]], dry_run: bool) -> str:
    counts: dict[str, int] = {}
    for item in results:
        counts[item["result"]] = counts.get(item["result"], 0) + 1
    words = {
        "retried": "retried",
        "would_retry": "would be retried",
        "already_retried": "already retried",
        "not_retried": "would not be retried" if dry_run else "not retried",
    }
    return ", ".join(f"{counts[key]} {word}" for key, word in words.items() if key in counts)
