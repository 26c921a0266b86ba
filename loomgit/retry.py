"""Retrying an execution that did not succeed: the same workflow, in the same environment,
with the trigger it recorded, as that environment serves the workflow now (the version a
fix was promoted in). n8n's "retry with the currently saved workflow".

The trigger is the recorded one, which was redacted: a credential's value and the
`Authorization`, `Cookie` and API-key headers read `[redacted]` there. The headers were
the sender's proof to the daemon, checked when it came in; the retry is asked for with
an API token instead, so they are left out. A redacted value anywhere else (the body,
the query, the path's parameters) cannot be sent again as it came, so such an execution
is not retried: its sender has to send it again.

Each execution is retried at most once: its retry is recorded with the key
`retry:<id>`, so asking again (a bulk retry run twice, a timeout) gets the first retry.
A retry that fails too is retried by its own id."""

from __future__ import annotations

from typing import Any

from loomgit.records import Execution
from loomgit.redact import MASK, SENSITIVE_HEADERS
from loomgit.runtime import TriggerEvent

RETRY_KEY = "retry:"  # the dedupe key's prefix: never a caller's (key:) or a schedule's
RETRIED_BY = ("webhook", "schedule", "api")  # a manual run is run again with `loomgit run`
NOT_RETRIED = ("succeeded", "queued", "running")
_PARTS = ("body", "query", "params")  # what the trigger's sender sent, besides headers


def why_not(ex: Execution) -> str | None:
    """Why `ex` cannot be retried, whatever the daemon serves now; None if it can."""
    if ex.status == "succeeded":
        return "it succeeded; only an execution that did not is retried"
    if ex.status in NOT_RETRIED:
        return f"it is still {ex.status}; retry it once it has ended"
    if ex.trigger_type not in RETRIED_BY:
        return (
            f"it was a {ex.trigger_type} run; run it again with `loomgit run "
            f"{ex.workflow}` (its input is in `loomgit executions show {ex.id}`)"
        )
    redacted = masked(ex.trigger)
    if redacted is not None:
        return (
            f"its trigger.{redacted} was recorded redacted (it held a credential's "
            "value), so it cannot be sent again as it came; have its sender send it again"
        )
    return None


def masked(record: dict[str, Any]) -> str | None:
    """The path of the first value in the recorded trigger's body, query or parameters
    that redaction changed (`body.card.token`), else None."""
    for part in _PARTS:
        if part in record:
            found = _masked_in(record[part], part)
            if found is not None:
                return found
    return None


def _masked_in(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if MASK in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}"
            if MASK in str(key):
                return where
            found = _masked_in(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for number, item in enumerate(value):
            found = _masked_in(item, f"{path}[{number}]")
            if found is not None:
                return found
    return None


def trigger(ex: Execution) -> TriggerEvent:
    """The trigger to run `ex` again with: the recorded one, its redacted headers left
    out, and `retry_of` among its details (so the record says what it retries)."""
    record = dict(ex.trigger)
    headers = {
        k: v
        for k, v in (record.pop("headers", None) or {}).items()
        if not (k.lower() in SENSITIVE_HEADERS or MASK in str(v))
    }
    body = record.pop("body", None)
    query = record.pop("query", None) or {}
    params = record.pop("params", None) or {}
    scheduled = record.pop("scheduled_time", None)
    record.pop("retry_of", None)
    return TriggerEvent(
        ex.trigger_type,
        body=body,
        headers=headers,
        query=query,
        params=params,
        scheduled_time=scheduled,
        details={**record, "retry_of": ex.id},
    )


def key(ex: Execution) -> str:
    return RETRY_KEY + ex.id


def answer(ex: Execution, ident: str, version: int | None, replayed: bool) -> dict[str, Any]:
    """The daemon's answer to a retry of `ex`: the retry `ident`, and whether it was made
    before (`replayed`)."""
    return {
        "execution": ident,
        "environment": ex.environment,
        "workflow": ex.workflow,
        "version": version,
        "retry_of": ex.id,
        "replayed": replayed,
    }
