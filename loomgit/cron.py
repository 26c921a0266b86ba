"""Cron expressions and time zones: checked without searching the calendar, and the
instants a schedule fires at.

Daylight-saving rule: a cron expression names wall-clock times in its time zone.
- Spring (the clock skips an hour): a time inside the gap fires once, when the clock
  resumes (in Europe/Berlin, 02:30 on the last Sunday of March fires at 03:00 CEST).
  Times that land on the same instant fire once.
- Autumn (the clock shows an hour twice): a time inside the repeated hour fires once, at
  its first occurrence (02:30 CEST, not again at 02:30 CET).
So a daily schedule fires exactly once every day, and no instant fires twice.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

MACROS = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_DAYS_IN_MONTH = {
    1: 31,
    2: 29,
    3: 31,
    4: 30,
    5: 31,
    6: 30,
    7: 31,
    8: 31,
    9: 30,
    10: 31,
    11: 30,
    12: 31,
}


class CronError(ValueError):
    """An invalid or never-firing cron expression; `never` tells which."""

    def __init__(self, message: str, *, never: bool = False) -> None:
        super().__init__(message)
        self.never = never


@functools.lru_cache(maxsize=4096)
def check_cron(expr: str) -> None:
    """Raises CronError unless `expr` is a valid five-field expression that can fire.

    Whether it can fire is decided from the expanded fields, so an impossible date such as
    `0 0 30 2 *` fails at once instead of searching years of calendar.
    """
    text = expr.strip()
    if text.lower() in MACROS:
        return
    fields = text.split()
    if len(fields) != 5:
        raise CronError(
            f"'{expr}' has {len(fields)} fields; write five (minute hour day month weekday) "
            "or a macro such as @daily"
        )
    from croniter import croniter  # imported here: commands that never check cron skip it

    try:
        expanded, _ = croniter.expand(text)
    except Exception as exc:  # croniter raises several unrelated types for bad input
        raise CronError(f"'{expr}' is not a valid cron expression: {exc}") from None
    days, months, weekdays = expanded[2], expanded[3], expanded[4]
    if days == ["*"] or weekdays != ["*"]:
        return  # any day fires; a weekday restriction is OR-ed with the day of month
    fits = any(d <= _DAYS_IN_MONTH[int(m)] for m in _months(months) for d in days if d != "l")
    if not fits and "l" not in days:
        raise CronError(f"'{expr}' never fires: no month has that day", never=True)


def _months(months: list[object]) -> list[int]:
    return list(range(1, 13)) if months == ["*"] else [int(str(m)) for m in months]


@functools.cache
def _zones() -> frozenset[str]:
    """The IANA names known here: the tzdata package's (a dependency, so the same on every
    machine) and the system's. Read once: about 20 ms."""
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())


@functools.lru_cache(maxsize=1024)
def check_timezone(name: str) -> None:
    """Raises ValueError unless `name` is a known IANA time zone, spelt exactly: on a
    case-insensitive file system `ZoneInfo("europe/berlin")` loads, and the daemon on
    Linux would then refuse what validated on a laptop."""
    zones = _zones()
    if name in zones:
        return
    folded = {zone.casefold(): zone for zone in zones}.get(name.casefold())
    if folded is not None:
        raise ValueError(f"unknown time zone '{name}'; names are case-sensitive: {folded}")
    import difflib

    close = difflib.get_close_matches(name, zones, n=1, cutoff=0.8)
    if close:
        raise ValueError(f"unknown time zone '{name}' (did you mean '{close[0]}'?)")
    raise ValueError(f"unknown time zone '{name}'; use an IANA name such as Europe/Berlin")


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant the naive wall-clock time `wall` names in `zone`, by the rule above."""
    probe = wall
    for _ in range(2 * 24 * 60):  # the longest gap on record is a day
        at = probe.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if at.astimezone(zone).replace(tzinfo=None) == probe:
            return at
        probe = probe.replace(second=0, microsecond=0) + timedelta(minutes=1)
    raise CronError(f"no wall-clock time near {wall} exists in {zone.key}")


class Schedule:
    """The instants one cron expression fires at in one time zone."""

    def __init__(self, expr: str, timezone: str) -> None:
        from croniter import croniter

        self.expr = expr
        self.zone = ZoneInfo(timezone)
        self._croniter: Any = croniter
        self._resume: tuple[datetime, Iterator[datetime]] | None = None

    def _walls(self, start: datetime, forward: bool) -> Iterator[datetime]:
        it = self._croniter(self.expr, start)
        step = it.get_next if forward else it.get_prev
        while True:
            yield step(datetime)

    def next_after(self, after: datetime) -> datetime:
        """The first fire instant strictly after `after` (an aware datetime), in UTC.
        Asked again from the instant it returned, it goes on from where it was."""
        if self._resume is not None and self._resume[0] == after:
            walls = self._resume[1]
        else:
            walls = self._walls(after.astimezone(self.zone).replace(tzinfo=None), forward=True)
        for candidate in walls:
            at = _instant(candidate, self.zone)
            if at > after:
                self._resume = (at, walls)
                return at
        raise AssertionError("unreachable")

    def latest_until(self, until: datetime) -> datetime:
        """The last fire instant at or before `until`, in UTC."""
        wall = until.astimezone(self.zone).replace(tzinfo=None)
        # Start an hour late: in a repeated hour, later wall times may already have passed.
        for candidate in self._walls(wall + timedelta(hours=1, seconds=1), forward=False):
            at = _instant(candidate, self.zone)
            if at <= until:
                return at
        raise AssertionError("unreachable")
