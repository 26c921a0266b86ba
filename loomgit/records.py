"""What the history records: executions and their steps, as immutable values, and their
ids. The store that keeps them is `history`."""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "timed_out", "interrupted")
FINISHED = ("succeeded", "failed", "cancelled", "timed_out", "interrupted")
STEP_STATUSES = ("succeeded", "failed", "skipped", "timed_out", "cancelled", "interrupted")
# interrupted: the process running it stopped first (SIGTERM past the grace period, or a
# crash found when the next daemon starts).


@dataclass(frozen=True)
class StepRecord:
    position: int
    step_id: str
    type: str
    status: str
    started_at: float | None = None
    ended_at: float | None = None
    attempts: int = 0
    input: Any = None
    output: Any = None
    error: str | None = None
    logs: tuple[dict[str, Any], ...] = ()

    @property
    def duration_ms(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return round((self.ended_at - self.started_at) * 1000, 3)

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "id": self.step_id,
            "type": self.type,
            "status": self.status,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration_ms": self.duration_ms,
            "attempts": self.attempts,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "logs": list(self.logs),
        }


@dataclass(frozen=True)
class Execution:
    id: str
    environment: str
    workflow: str
    trigger_type: str
    status: str
    started_at: float
    version: int | None = None
    digest: str | None = None
    trigger: dict[str, Any] = field(default_factory=dict)
    dedupe_key: str | None = None
    ended_at: float | None = None
    stopped_at: str | None = None  # the step it was at when it failed, was cancelled or timed out
    error: str | None = None
    output: Any = None
    steps: tuple[StepRecord, ...] = ()
    owner: str | None = None  # the process running it: see `owner_id`

    @property
    def trigger_label(self) -> str:
        """The trigger's type as listings show it, marked ↻ for a retry."""
        return f"{self.trigger_type} ↻" if self.trigger.get("retry_of") else self.trigger_type

    @property
    def duration_ms(self) -> float | None:
        if self.ended_at is None:
            return None
        return round((self.ended_at - self.started_at) * 1000, 3)

    def to_json(self, steps: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "environment": self.environment,
            "workflow": self.workflow,
            "version": self.version,
            "digest": self.digest,
            "trigger": {"type": self.trigger_type, **self.trigger},
            "status": self.status,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration_ms": self.duration_ms,
            "stopped_at": self.stopped_at,
            "error": self.error,
            "output": self.output,
        }
        if steps:
            out["steps"] = [s.to_json() for s in self.steps]
        return out


def _end(began: float | None, data: dict[str, Any]) -> float | None:
    """The end from the start and `duration_ms`, which the API gives to the microsecond
    where its times have milliseconds."""
    took = data.get("duration_ms")
    if began is None or not isinstance(took, int | float):
        return unix(data.get("ended_at"))
    return began + took / 1000


def step_from_json(data: dict[str, Any]) -> StepRecord:
    """The inverse of `StepRecord.to_json`, as the daemon's API answers it."""
    return StepRecord(
        position=data.get("position", 0),
        step_id=data.get("id", "?"),
        type=data.get("type", "?"),
        status=data.get("status", "?"),
        started_at=(began := unix(data.get("started_at"))),
        ended_at=_end(began, data),
        attempts=data.get("attempts") or 0,
        input=data.get("input"),
        output=data.get("output"),
        error=data.get("error"),
        logs=tuple(data.get("logs") or ()),
    )


def from_json(data: dict[str, Any]) -> Execution:
    """The inverse of `Execution.to_json`, as the daemon's API answers it (times to the
    millisecond)."""
    trigger = dict(data.get("trigger") or {})
    return Execution(
        id=data["id"],
        environment=data.get("environment", "?"),
        workflow=data.get("workflow", "?"),
        trigger_type=trigger.pop("type", "?"),
        status=data.get("status", "?"),
        started_at=(began := unix(data.get("started_at")) or 0.0),
        version=data.get("version"),
        digest=data.get("digest"),
        trigger=trigger,
        ended_at=_end(began, data),
        stopped_at=data.get("stopped_at"),
        error=data.get("error"),
        output=data.get("output"),
        steps=tuple(step_from_json(s) for s in data.get("steps") or ()),
    )


@dataclass(frozen=True)
class Query:
    environment: str | None = None
    workflow: str | None = None
    status: str | None = None
    since: float | None = None
    limit: int = 50
    before: str | None = None  # an execution's id: only those listed after it
    version: int | None = None  # with a workflow: only that version's executions


def version_of(text: str) -> int | None:
    """A workflow's version as given on the command line or in a query, a number (`3`)
    or as `status` and `history` print it (`v3`); None when `text` is neither."""
    match = re.fullmatch(r"[vV]?([0-9]{1,18})", text.strip())
    return None if match is None or int(match[1]) < 1 else int(match[1])


# What a failure rate counts: executions that ended on their own, one way or the other
# (cancelled and interrupted ones were stopped from outside; queued and running ones have
# not ended).
FAILED = ("failed", "timed_out")
ENDED = ("succeeded", *FAILED)


@dataclass(frozen=True)
class Tally:
    """The executions of one workflow version in one environment since a time: how many
    of each status, how long they took, and the errors most of the failed ones had."""

    environment: str
    workflow: str
    version: int | None
    counts: dict[str, int]  # by status; statuses with none are left out
    last_started: float
    p50_ms: float | None = None  # of those that ended, nearest rank
    p95_ms: float | None = None
    errors: tuple[tuple[str, int], ...] = ()  # the most frequent first

    @property
    def failed(self) -> int:
        return sum(self.counts.get(status, 0) for status in FAILED)

    @property
    def failure_rate(self) -> float | None:
        """Failed or timed out, of those that succeeded, failed or timed out."""
        ended = sum(self.counts.get(status, 0) for status in ENDED)
        return self.failed / ended if ended else None

    def to_json(self) -> dict[str, Any]:
        rate = self.failure_rate
        return {
            "environment": self.environment,
            "workflow": self.workflow,
            "version": self.version,
            "executions": sum(self.counts.values()),
            "statuses": {
                status: self.counts[status] for status in STATUSES if status in self.counts
            },
            "failure_rate": None if rate is None else round(rate, 4),
            "duration_ms": {"p50": self.p50_ms, "p95": self.p95_ms},
            "last_started_at": iso(self.last_started),
            "errors": [{"error": error, "count": count} for error, count in self.errors],
        }


def iso(ts: float | None) -> str | None:
    """A Unix time as the API and the history show times: UTC, milliseconds, `Z`."""
    return None if ts is None else stamp(ts)


def stamp(ts: float) -> str:
    """`iso` of a time there is: the API's, the history's and the logs' times."""
    # To the nearest millisecond: cut short, 0.008 (a float just under it) would read .007,
    # and a time read back by `unix` would come out a millisecond earlier each time.
    seconds, ms = divmod(round(ts * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def unix(text: str | None) -> float | None:
    """An `iso` time back as a Unix time."""
    if not text:
        return None
    return datetime.fromisoformat(text).timestamp()


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # every 10-bit value, two digits


def new_id(now: float | None = None) -> str:
    """A 26-character id that sorts by time (the ULID layout: 48 bits of milliseconds,
    80 random bits, Crockford base32)."""
    ms = int((time.time() if now is None else now) * 1000)
    n = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join([_PAIRS[(n >> shift) & 1023] for shift in range(120, -1, -10)])


_INSTANCE = f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"


def owner_id() -> str:
    """This process, as recorded on the executions it runs: host, pid and a random part
    (a restarted container often gets the same pid)."""
    return _INSTANCE


def owner_gone(owner: str | None) -> bool:
    """Whether the process that recorded `owner` has certainly stopped: it ran on this
    host and its pid is gone, or the pid is ours but the run is an earlier one. Executions
    of other hosts are never judged here."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    if owner == _INSTANCE:
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by another user
    return False
