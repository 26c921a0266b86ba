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
