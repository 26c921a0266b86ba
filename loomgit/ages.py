"""Ages and moments given by people: `--since 2h`, `--older-than 30d`, `?since=7d`."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

from loomgit.errors import UsageError

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_AGO_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str, option: str) -> float:
    """The seconds of an age given as `option`: `30m`, `2h`, `7d`, `1w`."""
    ago = _AGO.match(text)
    if not ago:
        raise UsageError(f"{option} takes an age such as 30m, 2h, 7d or 4w; not '{text}'")
    return float(ago.group(1)) * _AGO_UNIT[ago.group(2)]


def parse_since(text: str, now: float | None = None, option: str = "--since") -> float:
    """`30m`, `2h`, `7d`, `1w` ago, or an ISO date or time (UTC unless it says otherwise)."""
    if _AGO.match(text):
        return (now or time.time()) - parse_age(text, option)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option} takes an age such as 30m, 2h or 7d, or an ISO date; not '{text}'"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_moment(text: str, option: str, now: float | None = None) -> float:
    """As `parse_since`, and a Unix time in seconds too (the HTTP API's `since`)."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
    try:
        return parse_since(text, now, option)
    except UsageError:
        raise UsageError(
            f"{option} takes a Unix time, an age such as 30m, 2h or 7d, or an ISO date;"
            f" not '{text}'"
        ) from None
