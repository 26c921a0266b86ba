"""The CLI as a client of a running daemon's HTTP API: `loomgit status --server` (the
live view, and `--wait` for a commit to be applied) and `loomgit executions --server`
(its execution history)."""

from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from loomgit.errors import NO_API_TOKENS, UsageError
from loomgit.records import Execution, from_json

TIMEOUT = 10


TOKEN_ENV = "LOOMGIT_API_TOKEN"
# The daemon answers at most this many executions per request; more are read page by page.
PAGE = 1000
# How long `status --wait --reconcile` asks what runs once its cycle outlasted --timeout.
LATE_TIMEOUT = 2.0
POLL = 1.0  # seconds between two questions of `status --wait`
# Not Ready for these reasons, an environment has not judged the commit yet: it retries.
RETRIED = frozenset({"FetchFailed"})
# The events `status --server` shows below the bar; the daemon keeps 20 per environment.
SHOWN_EVENTS = 5


def _base(server: str) -> str:
    base = server.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"--server {server}: give an http:// or https:// URL")
    if any(c.isspace() or not c.isprintable() for c in base):
        raise UsageError(
            f"--server {server!r}: not a valid URL (it holds a space or a control character)"
        )
    try:
        urllib.parse.urlsplit(base).port  # noqa: B018 - reading it checks the host and port
    except ValueError as exc:
        raise UsageError(f"--server {server}: not a valid URL ({exc})") from None
    return base


def _refusal(exc: urllib.error.HTTPError) -> str:
    """The daemon's own words for a refusal (`{"error": …}`), else the HTTP reason."""
    try:
        said = json.loads(exc.read()).get("error")
    except (ValueError, AttributeError, OSError, http.client.HTTPException):
        said = None
    return said if isinstance(said, str) and said else str(exc.reason)


class Answered(UsageError):
    """The daemon answered with an error status; `said` is its own words."""

    def __init__(self, message: str, *, status: int, said: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status, self.said = status, said


class NotFound(Answered):
    """The daemon answered 404."""


class TimedOut(UsageError):
    """The daemon did not answer `url` within the timeout."""

    def __init__(self, message: str, *, url: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.url = url


def ask_json(
    server: str,
    path: str,
    token: str | None = None,
    method: str = "GET",
    timeout: float = TIMEOUT,
    *,
    missing: str | None = None,
    body: Any = None,
) -> Any:
    """The daemon at `server`'s answer to `method` `path` (sent `body` as JSON, if any),
    parsed; every failure a UsageError (a 404's hinted with `missing`)."""
    base = _base(server)
    url = base + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        said = _refusal(exc)
        if exc.code == 401:
            raise UsageError(
                f"{url} answered 401: {said}", hint=_unauthorized(said, token)
            ) from None
        if exc.code == 404:
            message = f"{url} answered 404: {said}"
            raise NotFound(message, status=404, said=said, hint=missing) from None
        raise Answered(f"{url} answered {exc.code}: {said}", status=exc.code, said=said) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        said = f"cannot reach the daemon at {base}: {reason}"
        hint = "is `loomgit serve` running there? it prints its URL when it starts"
        if isinstance(reason, TimeoutError):
            raise TimedOut(said, url=url, hint=hint) from None
        raise UsageError(said, hint=hint) from None
    except (ValueError, http.client.HTTPException):
        raise UsageError(f"{url} did not answer JSON; is it a loomgit daemon?") from None


def _unauthorized(said: str, token: str | None) -> str:
    """What to do about a 401: start the daemon with tokens, send one, or send another."""
    if said == NO_API_TOKENS:
        return "no token is accepted until the daemon is restarted with API tokens"
    if token is None:
        return f"pass --token-file with one of the daemon's API tokens, or set {TOKEN_ENV}"
    return (
        f"the token sent (from --token-file, else ${TOKEN_ENV}) is not one of the daemon's "
        "(its --api-token-file, else $LOOMGIT_API_TOKENS)"
    )


def fetch_environments(server: str, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    path = "/api/v1/environments"
    return _environments(server, path, ask_json(server, path, timeout=timeout))


def reconcile(server: str, token: str | None, timeout: float) -> list[dict[str, Any]]:
    """Has the daemon run a cycle at once (fetch, then apply what validates), waiting up
    to `timeout` for it to end (else TimedOut); the environments as it left them."""
    path = "/api/v1/reconcile"
    return _environments(server, path, ask_json(server, path, token, "POST", timeout))


def _environments(server: str, path: str, body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, list) or not all(
        isinstance(env, dict) and isinstance(env.get("name"), str) for env in body
    ):
        raise UsageError(f"{_base(server)}{path} did not answer a list of environments")
    return body


def read_token(token_file: Path | None) -> str | None:
    """The API token: the first line of `token_file` that is not blank or a `#` comment
    (the daemon's --api-token-file format), else $LOOMGIT_API_TOKEN."""
    if token_file is None:
        return os.environ.get(TOKEN_ENV, "").strip() or None
    try:
        text = token_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--token-file {token_file}: cannot read it ({exc})") from None
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()
    raise UsageError(f"--token-file {token_file}: holds no token (only blank or # lines)")


def fetch_executions(
    server: str, token: str | None, filters: dict[str, str | None], limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` executions, newest first, read a page of at most PAGE at a time."""
    found: list[dict[str, Any]] = []
    given = {k: v for k, v in filters.items() if v is not None}
    while len(found) < limit:
        want = min(limit - len(found), PAGE)
        query = urllib.parse.urlencode({**given, "limit": str(want)})
        page = ask_json(server, f"/api/v1/executions?{query}", token)
        if not isinstance(page, list) or not all(
            isinstance(row, dict) and isinstance(row.get("id"), str) for row in page
        ):
            raise UsageError(f"{_base(server)}/api/v1/executions did not answer executions")
        _one_version(server, "/api/v1/executions", [row.get("version") for row in page], given)
        found += page
        if len(page) < want:
            break
        given["before"] = page[-1]["id"]
    return found


def retry(
    server: str,
    token: str | None,
    ident: str,
    from_failed_step: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Has the daemon retry execution `ident` (see `loomgit.retry`), from its first step
    or from the one that failed: its answer, with the retry's id (`execution`), whether
    it was asked for before (`replayed`) and the step it started at (`resumed_from`).
    With `dry_run`, what it would do: `execution` is None unless retried before."""
    path = f"/api/v1/executions/{urllib.parse.quote(ident, safe='')}/retry"
    where = "failed_step" if from_failed_step else "start"
    try:
        if dry_run:
            found = ask_json(server, f"{path}?from={where}", token)
        else:
            found = ask_json(server, path, token, "POST", body={"from": where})
    except NotFound as exc:  # an unknown id, or a daemon that has no such route
        if "/retry here" not in exc.message:
            raise
        older = "a daemon older than this loomgit does not retry executions: upgrade it"
        raise NotFound(exc.message, status=404, said=exc.said, hint=older) from None
    except Answered as exc:
        if exc.status != 405:
            raise
        raise UsageError(
            f"{exc.message} (a daemon older than this loomgit cannot tell what a retry would do)",
            hint="upgrade it, or leave out --dry-run",
        ) from None
    if not isinstance(found, dict) or "replayed" not in found:
        raise UsageError(f"{_base(server)}{path} did not answer a retry; is it a loomgit daemon?")
    if "resumed_from" not in found:  # it read no body: every retry from the start
        found["resumed_from"] = None
        if from_failed_step and not found["replayed"]:
            raise UsageError(
                f"the daemon at {_base(server)} is older than this loomgit: it retried "
                f"{ident} as {found.get('execution')} from its first step, not from the one "
                "that failed",
                hint="upgrade it before retrying others from the step that failed",
            )
    if dry_run or isinstance(found.get("execution"), str):
        return found
    raise UsageError(f"{_base(server)}{path} did not answer a retry; is it a loomgit daemon?")


def fetch_summary(server: str, token: str | None, filters: dict[str, str | None]) -> dict[str, Any]:
    """`/api/v1/executions/summary`: each workflow version's executions since a time."""
    query = urllib.parse.urlencode({k: v for k, v in filters.items() if v is not None})
    older = "a daemon older than this loomgit has no summary: upgrade it"
    found = ask_json(server, f"/api/v1/executions/summary?{query}", token, missing=older)
    if (
        isinstance(found, dict)
        and isinstance(found.get("since"), str)
        and isinstance(versions := found.get("versions"), list)
        and all(_is_tally(v) for v in versions)
    ):
        path = "/api/v1/executions/summary"
        _one_version(server, path, [v["version"] for v in versions], filters)
        return found
    raise UsageError(
        f"{_base(server)}/api/v1/executions/summary did not answer a summary; is it a "
        "loomgit daemon?"
    )


def _one_version(server: str, path: str, versions: list[Any], filters: dict[str, Any]) -> None:
    """A daemon older than `version` ignores it, as it does any parameter it does not
    know: an answer holding other versions is refused, not shown (or judged) as that
    version's."""
    wanted = filters.get("version")
    if wanted is not None and any(v != int(wanted) for v in versions):
        raise UsageError(
            f"{_base(server)}{path} answered other versions than v{wanted}",
            hint="a daemon older than this loomgit does not filter by version: upgrade it",
        )


def _is_tally(v: Any) -> bool:
    """Whether `v` has every field the summary's table and gate read, of their types."""
    return (
        isinstance(v, dict)
        and all(isinstance(v.get(k), str) for k in ("environment", "workflow"))
        and isinstance(v.get("executions"), int)
        and isinstance(v.get("statuses"), dict)
        and all(isinstance(n, int) for n in v["statuses"].values())
        and isinstance(v.get("failure_rate"), int | float | None)
        and "version" in v
        and isinstance(took := v.get("duration_ms"), dict)
        and all(isinstance(took.get(p), int | float | None) for p in ("p50", "p95"))
        and isinstance(v.get("last_started_at"), str | None)
        and isinstance(v.get("errors"), list)
        and all(
            isinstance(e, dict)
            and isinstance(e.get("error"), str)
            and isinstance(e.get("count"), int)
            for e in v["errors"]
        )
    )


def fetch_execution(server: str, token: str | None, ident: str) -> dict[str, Any]:
    found = ask_json(server, f"/api/v1/executions/{urllib.parse.quote(ident, safe='')}", token)
    if not isinstance(found, dict) or not isinstance(found.get("id"), str):
        raise UsageError(f"{_base(server)}/api/v1/executions/{ident} did not answer an execution")
    return found


def as_executions(server: str, rows: list[dict[str, Any]]) -> list[Execution]:
    """The daemon's answers as records, for printing; one of another shape is an error."""
    try:
        return [from_json(row) for row in rows]
    except (KeyError, ValueError, TypeError, AttributeError):
        raise UsageError(
            f"{_base(server)} answered an execution loomgit cannot read; is it a loomgit daemon?"
        ) from None


def live_table(envs: list[dict[str, Any]], server: str) -> Group:
    """The environment bar, then why each environment that is not Ready is not, one
    line each below it (in a cell, a message such as a validation problem with its path
    made its column as wide as itself)."""
    title = f"loomgit serve at {server}"
    table = Table(title=title, title_justify="left", min_width=len(title))  # title on one line
    table.add_column("workflow", style="bold", no_wrap=True)
    for env in envs:
        table.add_column(env["name"])
    names = sorted({wf for env in envs for wf in env.get("workflows", {})})
    for name in names:
        cells = []
        for env in envs:
            wf = env.get("workflows", {}).get(name)
            if wf is None:
                cells.append("-")
                continue
            dot = "[green]● active[/]" if wf.get("active") else "[dim]○ inactive[/]"
            version = wf.get("version")
            cells.append(f"v{version} {dot}" if version else dot)
        table.add_row(name, *cells)
    table.add_section()
    table.add_row("serving", *[(e.get("commit") or "-")[:12] for e in envs])
    table.add_row("condition", *[_condition(e) for e in envs])
    why = [_why(env) for env in envs]
    lines = [Text.assemble(*parts) for parts in why if parts]
    return Group(table, *lines, *_events(envs, server))


def _at(when: Any) -> str:
    """` at 2026-11-22 08:04:42 UTC` from the daemon's ISO time; an older daemon gave a
    Unix time, shown as nothing."""
    found = re.match(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)", str(when))
    return f" at {found[1]} {found[2]} UTC" if found else ""


def _events(envs: list[dict[str, Any]], server: str) -> list[Text]:
    """The daemon's events (a history rewritten, an environment's removal waiting or
    cancelled, the last applied commit restored at start-up), newest first, below the
    bar: a Ready environment may have one worth knowing. The same event in several
    environments (a force-push reaches them all in one cycle, which may cross a second)
    is one line, at its newest time; its message names the commits, so two are never
    taken for one."""
    seen: dict[tuple[str, str], tuple[str, list[str]]] = {}
    for env in envs:
        for event in env.get("events") or []:
            if isinstance(event, dict):
                key = (str(event.get("reason")), str(event.get("message")))
                at, names = seen.get(key, ("", []))
                if env["name"] not in names:
                    names.append(env["name"])
                seen[key] = (max(at, _at(event.get("last_transition"))), names)
    if not seen:
        return []
    newest = sorted(seen, key=lambda k: seen[k][0], reverse=True)
    lines = [Text("events, newest first:", style="bold")]
    for reason, message in newest[:SHOWN_EVENTS]:
        at, names = seen[(reason, message)]
        lines.append(
            Text.assemble(f"  {', '.join(names)}: ", (reason, "yellow"), f"{at}: {message}")
        )
    if len(newest) > SHOWN_EVENTS:
        more = len(newest) - SHOWN_EVENTS
        lines.append(
            Text(f"  … {more} earlier: `loomgit status --server {server} --format json` has them")
        )
    return lines


def _condition(env: dict[str, Any]) -> str:
    conds = env.get("conditions") or []
    if not conds:
        return "[yellow]not reconciled[/]"
    if conds[0].get("status") == "True":
        return "[green]Ready[/]"
    return f"[red]{conds[0].get('reason')}[/]"


def _why(env: dict[str, Any]) -> tuple[tuple[str, str] | str, ...]:
    """`ENV: REASON at COMMIT since TIME: MESSAGE` for an environment that is not Ready."""
    conds = env.get("conditions") or []
    if not conds or conds[0].get("status") == "True":
        return ()
    cond = conds[0]
    attempted = (env.get("last_attempted_commit") or "")[:12]
    at = f" at {attempted}" if attempted else ""
    at += _at(cond.get("last_transition")).replace(" at ", " since ", 1)
    return (
        (f"{env['name']}: ", "bold"),
        (str(cond.get("reason")), "red"),
        f"{at}: {cond.get('message')}",
    )


@dataclass
class Awaited:
    """An environment that `status --wait` waits on, and how far it has got."""

    name: str
    target: str  # the commit it is to serve (or serve a descendant of)
    state: str = "waiting"  # then "applied" or "refused"
    serving: str | None = None
    why: str = ""  # the daemon's reason and message while the environment is not Ready

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "commit": self.target,
            "state": self.state,
            "serving": self.serving,
            "why": self.why or None,
        }


@dataclass
class Waited:
    """How `status --wait` ended: every environment applied, one refused, or time ran out."""

    result: str  # "applied", "refused" or "timed_out"
    seconds: float
    environments: list[Awaited]
    answer: list[dict[str, Any]]  # the daemon's last answer, for the live view
    unreachable: str | None = None  # why the last question failed, if it did

    def to_json(self) -> dict[str, object]:
        return {
            "result": self.result,
            "seconds": round(self.seconds, 3),
            "environments": [w.to_json() for w in self.environments],
            "unreachable": self.unreachable,
        }


Reached = Callable[[str, str], bool]  # (target, commit): commit is target or descends from it


def judge(env: dict[str, Any], want: Awaited, reached: Reached) -> None:
    """Updates `want` from the daemon's view of its environment: applied once it serves
    the target or a later commit; refused once it tried the target (or a later commit)
    and is not Ready for a reason that retrying does not mend."""
    conds = env.get("conditions") or []
    cond = conds[0] if conds and isinstance(conds[0], dict) else {}
    failing = cond.get("status") == "False"
    want.serving = env.get("commit") or None
    want.why = f"{cond.get('reason')}: {cond.get('message')}" if failing else ""
    attempted = env.get("last_attempted_commit") or ""
    if want.serving and reached(want.target, want.serving):
        want.state = "applied"
    elif (
        failing
        and cond.get("reason") not in RETRIED
        and attempted
        and reached(want.target, attempted)
    ):
        want.state = "refused"
    else:
        want.state = "waiting"


def wait(
    server: str,
    awaited: list[Awaited],
    reached: Reached,
    timeout: float,
    first: list[dict[str, Any]],
    progress: Callable[[Awaited], None],
    lost: Callable[[str | None], None],
) -> Waited:
    """Asks the daemon every POLL seconds until each of `awaited` is applied, one is
    refused or `timeout` passes (`first`: its answer already read). A daemon that stops
    answering meanwhile (a restart) is asked again until then; `lost` is told why when it
    stops, and None when it answers again."""
    began = time.monotonic()
    answer, unreachable = first, None
    seen: dict[str, tuple[str, str | None, str]] = {}
    while True:
        by_name = {e.get("name"): e for e in answer}
        for want in awaited:
            env = by_name.get(want.name)
            if env is None:
                want.state, want.why = "refused", "no longer served by this daemon"
            else:
                judge(env, want, reached)
            now = (want.state, want.serving, want.why)
            if seen.get(want.name) != now:
                seen[want.name] = now
                progress(want)
        took = time.monotonic() - began
        if any(w.state == "refused" for w in awaited):
            return Waited("refused", took, awaited, answer)
        if all(w.state == "applied" for w in awaited):
            return Waited("applied", took, awaited, answer)
        if took >= timeout:
            return Waited("timed_out", took, awaited, answer, unreachable)
        time.sleep(min(POLL, timeout - took))
        try:
            answer, failed = fetch_environments(server), None
        except UsageError as exc:
            failed = exc.message
        if (failed is None) != (unreachable is None):
            lost(failed)
        unreachable = failed
