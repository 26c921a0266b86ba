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
A retry that fails too is retried by its own id.

A retry runs every step again, unless it is asked to start at the step that failed (as
n8n's does): the steps before that one are then taken as the execution recorded them,
not run again, so an order created before a later step failed is not created twice.
That is refused, with why, unless the record holds each of them whole (no output
redacted or truncated) and the version served now would have run them just so: the same
steps in the same places, each `when` deciding as it did and each `with` rendering the
parameters recorded (compared redacted, so a credential rotated since compares equal)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from loomgit import jsontext
from loomgit import steps as step_kinds
from loomgit.records import Execution, StepRecord
from loomgit.redact import MASK, SENSITIVE_HEADERS
from loomgit.render import RenderError
from loomgit.runtime import Deployment, TriggerEvent, context, step_fields, when
from loomgit.steps import StepError

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


def trigger(ex: Execution, resume: tuple[StepRecord, ...] = ()) -> TriggerEvent:
    """The trigger to run `ex` again with: the recorded one, its redacted headers left
    out, and `retry_of` among its details (so the record says what it retries); with
    `resume` (see `reused`), `resumed_from` names the step the retry starts at."""
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
    record.pop("resumed_from", None)
    details = {**record, "retry_of": ex.id}
    if resume:
        details["resumed_from"] = _stopped_at(ex)[1] or ex.stopped_at
    return TriggerEvent(
        ex.trigger_type,
        body=body,
        headers=headers,
        query=query,
        params=params,
        scheduled_time=scheduled,
        details=details,
        resume=resume,
    )


def _stopped_at(ex: Execution) -> tuple[int, str | None]:
    """Where `ex` stopped: the position and id of the step that failed (or was cut short);
    past its last recorded step when it ended between steps."""
    for record in ex.steps:
        if record.step_id == ex.stopped_at:
            return record.position, record.step_id
    return len(ex.steps), None


def reused(ex: Execution, dep: Deployment) -> tuple[tuple[StepRecord, ...], str | None]:
    """The steps a retry of `ex` starting at the step that failed takes as `ex` recorded
    them (each marked as not run again), run as `dep`; or why it cannot start there."""
    at, failed = _stopped_at(ex)
    named = failed or ex.stopped_at
    where = f"at step {named}" if named else "where it stopped"
    steps = dep.workflow.spec.steps
    outputs: dict[str, dict[str, Any]] = {}
    ctx = context(dep, trigger(ex), outputs)
    taken: list[StepRecord] = []
    for record in ex.steps[:at]:
        why = _differs(record, steps, dep, ctx)
        if why is not None:
            return (), f"{why}, so the retry cannot start {where}; retry it from the start"
        outputs[record.step_id] = step_fields(record, record.output)
        note = {
            "at": record.ended_at,
            "level": "info",
            "message": f"not run again: taken as {ex.id} recorded it",
        }
        taken.append(replace(record, attempts=0, logs=(*record.logs, note)))
    return tuple(taken), None


def _differs(
    record: StepRecord, steps: list[Any], dep: Deployment, ctx: dict[str, Any]
) -> str | None:
    """Why the step `record` recorded cannot be taken as it is for a retry run as `dep`
    (`ctx` holding the steps before it): None when it can."""
    name = f"step {record.step_id}"
    served = f"{dep.name} v{dep.version}" if dep.version is not None else dep.name
    step = steps[record.position] if record.position < len(steps) else None
    if step is None or step.id != record.step_id or step.type != record.type:
        return f"{served}, served now, has no {record.type} step {record.step_id} in its place"
    if record.status not in ("succeeded", "skipped") and step.on_error != "continue":
        return f"{name} {record.status.replace('_', ' ')}, and {served} stops there"
    for part, value in (("output", record.output), ("error", record.error)):
        if _truncated(value):
            return f"{name}'s {part} was recorded truncated"
        if _masked_in(value, part) is not None:
            return f"{name}'s {part} was recorded redacted (it held a credential's value)"
    try:
        runs = step.when is None or bool(when(step.when, ctx))
    except RenderError as exc:  # `when: …`
        return f"{name}'s condition does not render in {served}: {dep.redactor.text(str(exc))}"
    if runs != (record.status != "skipped"):
        now = "run" if runs else "be skipped"
        return f"{name} would {now} in {served}: its `when` decides otherwise now"
    if not runs:
        return None
    try:
        rendered = step_kinds.kind(step.type).render(step.with_, ctx)
    except (RenderError, StepError) as exc:  # `with.url: …`, or a plugin not installed
        return f"{name}'s parameters do not render in {served}: {dep.redactor.text(str(exc))}"
    if _truncated(record.input):
        return f"{name}'s parameters were recorded truncated"
    if _as_recorded(dep.redactor.value(rendered)) != record.input:
        return f"{name} would be sent other parameters in {served} (its `with` renders otherwise)"
    return None


def _truncated(value: Any) -> bool:
    """Whether the history kept only a preview of `value` (see `history._dump`)."""
    return isinstance(value, dict) and value.get("truncated") is True and "preview" in value


def _as_recorded(value: Any) -> Any:
    """`value` as the history gives it back: through JSON (see `history._dump`)."""
    return json.loads(jsontext.dumps(value, ensure_ascii=False, default=str))


def key(ex: Execution) -> str:
    return RETRY_KEY + ex.id


def answer(
    ex: Execution, ident: str | None, version: int | None, replayed: bool, resumed_from: Any = None
) -> dict[str, Any]:
    """The daemon's answer to a retry of `ex`: the retry `ident` (None: what a retry
    would do, none made), whether it was made before (`replayed`), and the step it
    started at when not the first."""
    return {
        "execution": ident,
        "environment": ex.environment,
        "workflow": ex.workflow,
        "version": version,
        "retry_of": ex.id,
        "replayed": replayed,
        "resumed_from": resumed_from if isinstance(resumed_from, str) else None,
    }
