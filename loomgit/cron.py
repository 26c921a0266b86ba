"""Cron expressions and time zones: checked without searching the calendar."""

from __future__ import annotations

import functools
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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


@functools.lru_cache(maxsize=1024)
def check_timezone(name: str) -> None:
    """Raises ValueError unless `name` is a known IANA time zone."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone '{name}'; use an IANA name such as Europe/Berlin"
        ) from None
