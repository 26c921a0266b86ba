"""The event loop the daemon and its runner processes run on: uvloop's where it is
installed (a dependency on Linux and macOS), else asyncio's own.

Measured (docs/benchmarks.md, the daemon with its runner paused): 100 to 133 µs of the
daemon's CPU per accepted webhook on uvloop, against 140 to 159 µs on asyncio's own loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, on uvloop's event loop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Waits at most `timeout` seconds for `event`; whether it was set. Cancelling the
    waiting task always stops it: Python 3.11's `asyncio.wait_for` drops a cancel that
    arrives as the event is set, and the daemon's timer then waited out its whole timeout
    before it could stop."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
