"""`loomgit serve`: the reconciler daemon."""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from loomgit.agekeys import AgeKeys
from loomgit.ages import parse_age
from loomgit.cli import cli, repo_option
from loomgit.cli_credentials import key_option
from loomgit.cli_run import state_option
from loomgit.completion import environment_list
from loomgit.errors import LoomgitError, RepositoryError, UsageError, report_to

if TYPE_CHECKING:
    from loomgit.models import ScheduleTrigger
    from loomgit.reconcile import AppliedRecord, Reconciler
    from loomgit.workspace import Workspace

TOKENS_ENV = "LOOMGIT_API_TOKENS"
GIT_SECRET_ENV = "LOOMGIT_GIT_WEBHOOK_SECRET"
T = TypeVar("T")
STRONG_TOKEN = 16  # characters; `openssl rand -hex 32` gives 64


def _tokens(path: Path | None) -> tuple[str, ...]:
    found = [t.strip() for t in os.environ.get(TOKENS_ENV, "").split(",") if t.strip()]
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read the token file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"the token file {path} is not UTF-8 text") from None
        stripped = (line.strip() for line in lines)
        listed = [t for t in stripped if t and not t.startswith("#")]
        if not listed:  # a mistake, or a rotation caught half-written: never "no tokens"
            raise UsageError(f"the token file {path} holds no tokens")
        found += listed
    short = sum(len(t) < STRONG_TOKEN for t in found)
    if short:  # logged, not refused: a restart must not take the webhooks down over it
        from loomgit import log

        log.event(
            f"API tokens shorter than {STRONG_TOKEN} characters are easy to guess; "
            "make each with `openssl rand -hex 32`",
            logging.WARNING,
            short=short,
            tokens=len(found),
        )
    return tuple(found)


def _git_secret(path: Path | None) -> bytes | None:
    if path is None:
        value = os.environ.get(GIT_SECRET_ENV, "").strip()
        return value.encode() if value else None
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"cannot read the git webhook secret {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"the git webhook secret file {path} is not UTF-8 text") from None
    if not value:
        raise UsageError(f"the git webhook secret file {path} is empty")
    return value.encode()


def _served(ws: Workspace, given: str) -> list[str]:
    """`--environments`: names separated by commas, each once, each of loomgit.yaml."""
    names = [n.strip() for n in given.split(",") if n.strip()]
    if not names:
        raise UsageError(
            f"--environments {given.strip()!r} names no environment",
            hint=f"give some of {', '.join(ws.config.names)}, separated by commas",
        )
    return [ws.check_env(n) for n in dict.fromkeys(names)]


def _against_the_repository(
    repo: Path, applied: AppliedRecord, check: Callable[[Workspace], T]
) -> T:
    """`check` (the options that name environments) against loomgit.yaml as the daemon
    serves it: as committed at HEAD, or, when HEAD cannot be read or no longer lists an
    environment the options name, and this state folder served the repository before,
    as at the commit applied last, which the daemon then serves until HEAD can be. A
    commit must not keep a restarted daemon from serving what it served before."""
    from loomgit import log
    from loomgit.workspace import Workspace

    try:
        with Workspace(repo, rev="HEAD") as ws:
            return check(ws)
    except (RepositoryError, UsageError) as exc:
        newest = max(applied.read(str(repo.resolve())).values(), key=lambda e: e[1], default=None)
        if newest is None:
            raise
        try:
            with Workspace(repo, rev=newest[0]) as ws:
                checked = check(ws)
        except LoomgitError:
            raise exc from None  # what is wrong with HEAD or the options, not an old commit
        log.event("HEAD not served; starting from the commit applied before", logging.WARNING,
                  commit=newest[0], error=exc.message)  # fmt: skip
        return checked


def _retention_age(text: str) -> float:
    """`--prune-older-than`: an age above 0; at 0 the history would keep nothing."""
    age = parse_age(text, "--prune-older-than")
    if age <= 0:
        raise UsageError(
            f"--prune-older-than {text.strip()} would delete each execution as soon as it ends",
            hint="give an age above 0, such as 30d",
        )
    return age


MIN_INTERVAL = 1.0  # each cycle reads git, and with --remote fetches from the host


def _interval(text: str) -> float:
    """`--interval`: from 1s to 24h; a push webhook, not a short interval, is the fast path."""
    from loomgit.runner import parse_duration

    seconds = parse_duration(text, "--interval")
    if seconds < MIN_INTERVAL:
        raise UsageError(
            f"--interval {text.strip()}: give at least 1s; each cycle reads git (with --remote,"
            " fetches)",
            hint="for changes to apply at once, send the git host's push webhook to "
            "POST /api/v1/git-webhook",
        )
    return seconds


@cli.command()
@click.option(
    "--remote",
    metavar="URL",
    help="Keep a clone of this https://, ssh:// or local repository and fetch it each cycle "
    "(over ssh with the user's ssh setup or $GIT_SSH_COMMAND, 'ssh -i DEPLOY_KEY', say).",
)
@click.option("--branch", metavar="NAME", help="With --remote: the branch to follow.")
@click.option(
    "--environments",
    metavar="A,B",
    shell_complete=environment_list,
    help="Serve only these, separated by commas (default: all); another daemon can serve the rest.",
)
@click.option(
    "--interval",
    default="60s",
    show_default=True,
    metavar="DURATION",
    help="How often to fetch and reconcile when no push webhook comes (1s to 24h).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 for every interface.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="0 picks a free port, printed at start-up.",
)
@click.option(
    "--api-token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"Bearer tokens for the API, one per line (also: ${TOKENS_ENV}, comma-separated).",
)
@click.option(
    "--grace",
    default="30s",
    show_default=True,
    metavar="DURATION",
    help="How long running executions may go on after SIGTERM.",
)
@click.option(
    "--git-webhook-secret-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"HMAC secret of POST /api/v1/git-webhook (also: ${GIT_SECRET_ENV}).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line, for log collectors.",
)
@click.option(
    "--runners",
    type=click.IntRange(0, 64),
    metavar="N",
    help="Processes that run executions (default: one per core but one, at least one); "
    "0 runs them in the daemon's own process.",
)
@click.option(
    "--max-backlog",
    type=click.IntRange(1),
    default=50_000,
    show_default=True,
    metavar="N",
    help="Accepted executions waiting to run or running, past which webhooks and API "
    "triggers are answered 503 with Retry-After.",
)
@click.option(
    "--metrics-by-workflow",
    is_flag=True,
    help="Count executions finished (loomgit_executions_total) by workflow too: one "
    "series per workflow, environment and status seen.",
)
@click.option(
    "--prune-older-than",
    metavar="AGE",
    help="Delete finished executions older than this (30d, 2w…), as `loomgit executions "
    "prune` does, every minute. Default: keep them.",
)
@click.option(
    "--prune-keep",
    type=click.IntRange(min=1),
    metavar="N",
    help="Keep at most the newest N executions of each environment (with "
    "--prune-older-than: whichever deletes more).",
)
@key_option
@state_option
@repo_option
def serve(
    remote: str | None,
    branch: str | None,
    environments: str | None,
    interval: str,
    host: str,
    port: int,
    api_token_file: Path | None,
    grace: str,
    git_webhook_secret_file: Path | None,
    log_format: str,
    runners: int | None,
    max_backlog: int,
    metrics_by_workflow: bool,
    prune_older_than: str | None,
    prune_keep: int | None,
    age_keys: AgeKeys,
    state_dir: Path | None,
    repo: Path,
) -> None:
    """Run the reconciler daemon: serve each environment's active workflows from git.

    Reads the committed state of the repository, validates and decrypts each
    environment's credentials with its own key, and serves the webhooks of active
    workflows at /hooks/ENV/PATH, their schedules, and API triggers at
    POST /api/v1/workflows/NAME/executions. A commit that does not validate or decrypt
    changes nothing that runs; GET /api/v1/environments says why. A restart onto such a
    commit serves the one applied before it (kept in the state folder); with --remote, a
    restart while the source cannot be reached serves the commit fetched last. A push webhook at
    POST /api/v1/git-webhook starts a cycle at once; --interval is the fallback.
    Executions are recorded before they are acknowledged, then run in --runners
    processes, so running them does not slow down accepting webhooks. SIGTERM lets
    running executions finish within --grace and records the rest as interrupted; SIGHUP
    reads the API tokens and the git webhook secret again and starts a cycle. The
    history keeps every execution unless --prune-older-than or --prune-keep is given;
    then the daemon deletes old ones in small batches between its writes. The API is
    described at /openapi.json; metrics are at /metrics.

    \b
    Examples:
      loomgit serve --repo sample-repo --age-key-dir sample-repo/demo-keys
      loomgit serve --age-key-file production=/run/secrets/production.agekey
      loomgit serve --environments staging,production --port 9000 --interval 30s
      loomgit serve --prune-older-than 30d --prune-keep 100000
      loomgit serve --remote https://git.example.com/ops/flows.git --branch main \\
          --git-webhook-secret-file hook.secret --log-format json
    """
    from loomgit import eventloop, log
    from loomgit.credops import key_files
    from loomgit.daemon import Daemon, Settings
    from loomgit.history import DB_NAME, History, default_path
    from loomgit.reconcile import AppliedRecord, Reconciler
    from loomgit.runner import parse_duration
    from loomgit.server import open_files_limit
    from loomgit.server import serve as run_server
    from loomgit.source import RemoteSource, check_branch, check_url, shown_url

    log.configure(log_format)
    open_files_limit()  # before any child process, which inherits it, is started
    if state_dir is not None:
        report_to(state_dir)
    # Every option is checked before anything is fetched or read.
    settings = Settings(
        interval=_interval(interval),
        grace=parse_duration(grace, "--grace"),
        tokens=_tokens(api_token_file),
        git_webhook_secret=_git_secret(git_webhook_secret_file),
        reread=lambda: (_tokens(api_token_file), _git_secret(git_webhook_secret_file)),
        runners=default_runners() if runners is None else runners,
        max_backlog=max_backlog,
        metrics_by_workflow=metrics_by_workflow,
        log_format=log_format,
        prune_older_than=_retention_age(prune_older_than) if prune_older_than else None,
        prune_keep=prune_keep,
    )
    source = None
    state = state_dir or default_path().parent
    if remote is not None or branch is not None:
        if branch is None:
            raise UsageError(
                "--remote needs --branch, the branch of that repository to follow",
                hint="--branch main, say: the branch that holds loomgit.yaml",
            )
        if remote is None:
            raise UsageError(
                "--branch goes with --remote",
                hint="without --remote the daemon serves the repository --repo names "
                "(default: the current folder) as it is committed there",
            )
        source = RemoteSource(check_url(remote), check_branch(branch), state / "source")
        try:
            source.sync()
        except LoomgitError as exc:
            last = source.checked_out()
            if last is None:
                raise UsageError(
                    f"cannot fetch {shown_url(remote)}: {exc.message}", hint=exc.hint
                ) from None
            # Git being down must not stop a restart: serve what was fetched last.
            log.event("source not fetched; starting from the commit fetched before",
                      logging.WARNING, commit=last, error=exc.message)  # fmt: skip
        repo = source.path

    def options(ws: Workspace) -> tuple[dict[str, Path], list[str] | None]:
        keys = key_files(ws, age_keys)
        return keys, _served(ws, environments) if environments is not None else None

    applied = AppliedRecord(state / "applied.json")
    keys, names = _against_the_repository(repo, applied, options)
    pool = parse_pool()
    reconciler = Reconciler(repo, keys, names, source=source, pool=pool, applied=applied)

    def ready(urls: list[str]) -> None:
        if log_format == "json":  # one object per line, the banner's as well
            for name, fields in serving(reconciler):
                log.event("serving", environment=name, **fields)
        else:
            click.echo("\n".join(banner(reconciler, urls[0])), err=True)

    try:
        with History(state_dir / DB_NAME if state_dir else None) as history:
            daemon = Daemon(reconciler, history, settings, on_ready=ready)
            eventloop.run(run_server(daemon, host, port))
    finally:
        pool.shutdown(cancel_futures=True)


def default_runners() -> int:
    """One runner process per core but the one the daemon accepts requests on."""
    return max(1, (os.cpu_count() or 1) - 1)


BANNER_LINES = 20  # per kind of trigger and environment; the API lists them all


def banner(reconciler: Reconciler, base: str) -> list[str]:
    """What the daemon serves, per environment: its status, then the URL of each webhook,
    each schedule and each API trigger (the first BANNER_LINES of each kind)."""
    lines = [f"listening on {base}"]
    now = datetime.now(UTC)
    for name in reconciler.names:
        st = reconciler.status[name]
        cond = st.conditions[0] if st.conditions else None
        lines.append(f"{name}: {f'{cond.reason}: {cond.message}' if cond else 'not reconciled'}")
        served = reconciler.served.get(name)
        if served is None:
            continue
        hooks = [(wf, f"  {m} {base}/hooks/{name}/{p}") for (m, p), wf in served.hooks.items()]
        calls = [(wf, f"  POST {base}/api/v1/workflows/{wf}/executions") for wf in served.api]
        kinds: list[list[tuple[str, Any]]] = [hooks, list(served.schedules), calls]
        for kind in kinds:
            shown = heapq.nsmallest(BANNER_LINES, kind, key=lambda entry: entry[0])
            # Next fire times are worked out only for the schedules shown.
            lines += [f"{_served_line(what, now)}  -> {wf}" for wf, what in shown]
            if len(kind) > len(shown):
                lines.append(
                    f"  … and {len(kind) - len(shown):,} more: GET {base}/api/v1/environments"
                )
    return lines


def serving(reconciler: Reconciler) -> Iterator[tuple[str, dict[str, Any]]]:
    """The banner as `--log-format json` logs it: per environment, its condition and how
    many triggers of each kind it serves (GET /api/v1/environments lists them)."""
    for name in reconciler.names:
        st = reconciler.status[name]
        cond = st.conditions[0] if st.conditions else None
        fields: dict[str, Any] = {
            "reason": cond.reason if cond else "NotReconciled",
            "message": cond.message if cond else "not reconciled",
        }
        served = reconciler.served.get(name)
        if served is not None:
            fields.update(
                commit=served.commit,
                webhooks=len(served.hooks),
                schedules=len(served.schedules),
                api=len(served.api),
            )
        yield name, fields


def _served_line(what: str | ScheduleTrigger, now: datetime) -> str:
    if isinstance(what, str):
        return what
    from loomgit.diff import next_fires

    nxt = next_fires(what.cron, what.timezone, now, count=1)[0]
    return f"  schedule '{what.cron}' ({what.timezone}), next {nxt}"


# The parse workers' CPU priority, below the daemon's (nice 0): the event loop serving
# webhooks and schedules comes first. Measured with bench_daemon.py's reparse part
# (10,000 workflows changed, webhooks at 1,000/s on 2 cores): during the cycle, webhook
# p50 went from 4.7-9.1 ms to 1.7 ms, the cycle itself took no longer.
PARSE_NICE = 10


def parse_pool() -> ParsePool:
    """Worker processes that parse large changes, so a big commit does not hold the CPU
    the event loop needs for webhooks and schedules."""
    return ParsePool(max(1, min(4, os.cpu_count() or 1)))


class ParsePool:
    """Worker processes started for one large parse and stopped after it, so an idle
    daemon holds none (each holds tens of MiB). They start from a fork server that has
    loomgit's parser loaded (forking the daemon itself, with its threads, is unsafe), so
    starting them takes a fraction of a second, against seconds of parsing."""

    def __init__(self, workers: int) -> None:
        import multiprocessing

        self.workers = workers
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["loomgit.documents"])

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], /) -> Iterator[Any]:
        from concurrent.futures import ProcessPoolExecutor  # imported here: 15 ms per CLI run

        chunks = list(items)
        workers = min(self.workers, len(chunks)) or 1
        try:
            with ProcessPoolExecutor(
                max_workers=workers,
                mp_context=self._context,
                initializer=os.nice,
                initargs=(PARSE_NICE,),
            ) as pool:
                return iter(list(pool.map(fn, chunks)))
        finally:
            _stop_helpers()

    def shutdown(self, cancel_futures: bool = False) -> None:
        """Nothing runs between parses; kept so the pool reads like an executor."""


def _stop_helpers() -> None:
    """Stops the fork server and the resource tracker multiprocessing leaves running after
    a pool (48 MiB together, measured on the 10,000-workflow benchmark): the next large
    parse starts them again, in about the time a worker takes to start. Python has no
    public way to stop them; the private `_stop` both have since 3.8 is used where it
    exists, and where it does not they keep running, as before."""
    from multiprocessing import forkserver, resource_tracker

    for helper in (forkserver._forkserver, resource_tracker._resource_tracker):
        stop = getattr(helper, "_stop", None)
        if stop is not None:
            stop()
