"""`loomgit executions --follow`: executions as they start and end, read again every
second from the local history or a daemon's API, one line each, until Ctrl-C."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from loomgit.records import Execution

POLL = 1.0  # seconds between two reads
# A read starts this long before the newest start seen (by the daemon's clock, not
# ours): an execution recorded a little after a later one started is still found. Each
# read returns again what started within it, so it is short: an execution is recorded
# before its webhook is answered, within milliseconds of its start.
MARGIN = 3.0
READ = 10_000  # at most this many executions per read after the first

Recent = Callable[[float | None, int], list[Execution]]  # since, limit -> newest first
One = Callable[[str], Execution | None]  # None: no longer recorded (pruned)


@dataclass
class Follower:
    """What has been shown, so that each read yields only what is new: an execution not
    shown yet, or one shown running that has since ended."""

    recent: Recent
    one: One
    since: float | None = None  # --since: where the first read starts
    status: str | None = None  # --status: an ended execution of another status is not shown
    shown: dict[str, tuple[str, float]] = field(default_factory=dict)  # id: status, start
    newest: float | None = None
    # The oldest the first read showed, when it showed only the last `limit`: those before
    # it are past, though later reads (MARGIN before the newest) may return them.
    floor: tuple[float, str] | None = None

    def read(self, limit: int = READ) -> tuple[list[Execution], bool]:
        """What is new since the last read, oldest first, and whether the read was full
        (`limit` executions: older ones within the margin may have been left out)."""
        begin = self.since
        if self.newest is not None:
            edge = self.newest - MARGIN
            begin = edge if self.since is None else max(self.since, edge)
        rows = self.recent(begin, limit)
        if self.newest is None and rows and len(rows) >= limit:
            self.floor = (rows[-1].started_at, rows[-1].id)
        read = {ex.id for ex in rows}
        fresh = {
            ex.id: ex
            for ex in rows
            if self.shown.get(ex.id, ("",))[0] != ex.status
            and (self.floor is None or (ex.started_at, ex.id) >= self.floor)
        }
        for ident, (status, _) in list(self.shown.items()):
            if status != "running" or ident in read:
                continue
            ex = self.one(ident)  # a long run that started before what a read covers
            if ex is None or (self.status is not None and ex.status != self.status):
                del self.shown[ident]
            elif ex.status != status:
                fresh[ident] = ex
        for ex in fresh.values():
            self.shown[ex.id] = (ex.status, ex.started_at)
        if rows:
            self.newest = max(self.newest or rows[0].started_at, rows[0].started_at)
        if self.newest is not None:  # what no read returns again, but the running ones
            edge = self.newest - MARGIN
            self.shown = {
                i: (status, start)
                for i, (status, start) in self.shown.items()
                if start >= edge or status == "running"
            }
        ordered = sorted(fresh.values(), key=lambda ex: (ex.started_at, ex.id))
        return ordered, len(rows) >= limit


def line(ex: Execution, width: int | None) -> str:
    """One execution as a line of text; on a terminal `width` wide, its error cut to what
    the line leaves of it, or left out under 20 columns (`executions show ID` has it)."""
    from datetime import UTC, datetime

    from loomgit.cli_run import STATUS_MARK, _duration

    started = datetime.fromtimestamp(ex.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    version = f"v{ex.version}" if ex.version else "-"
    status = f"{STATUS_MARK.get(ex.status, '?')} {ex.status}"
    text = (
        f"{started}  {ex.id}  {ex.environment:<11}  {ex.workflow:<20}  {version:<4}  "
        f"{ex.trigger_label:<9}  {status:<13}  {_duration(ex.duration_ms):>9}"
    )
    error = " ".join((ex.error or "").split())
    if width is not None and len(error) > width - len(text) - 2:
        room = width - len(text) - 2
        error = error[: room - 1] + "…" if room >= ERROR_ROOM else ""
    return f"{text}  {error}" if error else text


ERROR_ROOM = 20  # the narrowest error worth showing


HEADER = (
    f"{'started (UTC)':<19}  {'id':<26}  {'env':<11}  {'workflow':<20}  {'ver':<4}  "
    f"{'trigger':<9}  {'status':<13}  {'took':>9}  error"
)
