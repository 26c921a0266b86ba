"""`loomgit status --server`: the live view of a running daemon, from its HTTP API."""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from loomgit.errors import UsageError

TIMEOUT = 10


def fetch_environments(server: str) -> list[dict[str, Any]]:
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
    url = base + "/api/v1/environments"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise UsageError(f"{url} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(
            f"cannot reach the daemon at {base}: {reason}",
            hint="is `loomgit serve` running there? it prints its URL when it starts",
        ) from None
    except (ValueError, http.client.HTTPException):
        raise UsageError(f"{url} did not answer JSON; is it a loomgit daemon?") from None
    if not isinstance(body, list):
        raise UsageError(f"{url} did not answer a list of environments")
    return body


def live_table(envs: list[dict[str, Any]], server: str) -> Group:
    """The environment bar, then why each environment that is not Ready is not, one
    line each below it (in a cell, a message such as a validation problem with its path
    made its column as wide as itself)."""
    table = Table(title=f"loomgit serve at {server}", title_justify="left")
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
    return Group(table, *(Text.assemble(*parts) for parts in why if parts))


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
    # 2026-11-22T08:04:42.123Z; an older daemon gave a Unix time, shown as nothing.
    since = re.match(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)", str(cond.get("last_transition")))
    if since:
        at += f" since {since[1]} {since[2]} UTC"
    return (
        (f"{env['name']}: ", "bold"),
        (str(cond.get("reason")), "red"),
        f"{at}: {cond.get('message')}",
    )
